"""Tr A by Hutchinson's estimator (Hutchinson 1990): the mean of vᵀ A v over Rademacher probes."""
from __future__ import annotations

import torch

from sgdlab.errors import checked_keywords

from ._common import Estimate, Operand, mc_estimate, probe_samples, working_operator


@checked_keywords()
def hutchinson_trace(
    A: Operand,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> Estimate:
    """Tr A ≈ (1/M) Σ_m v_mᵀ A v_m, v_m Rademacher (±1) probes (Hutchinson 1990).

    The standard error is the sample standard deviation of vᵀAv over probes divided by √M.
    Probes go through ``LinearOperator.quadratic_forms`` in blocks (``block_size``, default
    chosen by the operator, :meth:`~sgdlab.operators.LinearOperator.block_tuner`: the size
    measured cheapest per probe within its memory budget, or untimed, ruled by the model's
    layers, within :func:`~sgdlab.operators.blocking.reproducible_blocks`, as in a run);
    for a Hessian or GGN of an ``nn.Sequential`` of linear / convolution / pooling / eval-mode
    batch-norm layers that is one forward Taylor-mode pass per block (no A v formed),
    otherwise ``(V ⊙ A V).sum(0)``. The samples do not depend on the blocks.

    ``dtype=torch.float64`` evaluates the samples in float64 (a float32 model operator is
    rebuilt on a float64 copy of its model and data: the samples' own round-off is then the
    only error left besides the Monte-Carlo one).
    """
    op = working_operator(A, dtype, exact_products=True)
    return mc_estimate(probe_samples(op, num_probes, generator, distribution, block_size,
                                     op.quadratic_forms, product="quadratic_forms"))
