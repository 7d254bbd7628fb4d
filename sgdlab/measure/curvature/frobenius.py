"""‖A‖_F from E_v ‖A v‖² (the Frobenius-norm estimate Jastrzebski et al. use for the Hessian)."""
from __future__ import annotations

import math

import torch

from sgdlab.errors import checked_keywords

from ._common import (Estimate, Operand, mc_estimate, probe_samples, unit_column_blocks,
                      working_operator)


@checked_keywords()
def frobenius_norm(
    A: Operand,
    num_probes: int = 100,
    *,
    exact: bool = False,
    generator: torch.Generator | None = None,
    distribution: str = "gaussian",
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> Estimate:
    """‖A‖_F estimated from E_v ‖A v‖² = ‖A‖²_F (v with E[v vᵀ] = I: Gaussian or Rademacher),
    as Jastrzebski et al. (2018/2020) estimate the Hessian's Frobenius norm.

    Returns the square root of the mean of ‖A v‖²; the standard error is propagated by the delta
    method (se(‖A‖²_F) / (2‖A‖_F)). Blocks of probes as in
    :func:`~sgdlab.measure.curvature.hutchinson.hutchinson_trace` (through ``matmat``);
    ``dtype`` as there. ``exact=True`` sums ‖A e_i‖² over the d unit columns instead (d
    products, standard error 0; ``num_probes`` ignored): for small operators, where a few
    probes of a nearly low-rank A are far off (relative error ≈ √(2/M) for rank one).
    """
    op = working_operator(A, dtype, exact_products=True)
    if exact:
        sq = sum(float(cols.double().square().sum()) for _, cols in unit_column_blocks(
            op, block_size))
        if not math.isfinite(sq):
            raise FloatingPointError("non-finite Frobenius norm (diverged model?)")
        return Estimate(math.sqrt(sq), 0.0, op.shape[0])
    sq = mc_estimate(probe_samples(op, num_probes, generator, distribution, block_size,
                                   lambda v: op.matmat(v).square().sum(0), product="matmat"))
    val = math.sqrt(max(sq.value, 0.0))
    se = sq.stderr / (2 * val) if val > 0 else float("nan")
    return Estimate(val, se, sq.num_samples)
