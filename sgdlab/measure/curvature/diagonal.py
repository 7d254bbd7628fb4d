"""diag A: exactly from the d unit columns, or by the stochastic estimator of Bekas, Kokiopoulou
and Saad (2007): the mean of v ⊙ A v over Rademacher probes v.

For Rademacher v (independent ±1 entries), (v ⊙ A v)_i = A_ii + Σ_{j≠i} A_ij v_i v_j, so the
mean over probes is unbiased for diag A and each entry's variance is Σ_{j≠i} A_ij² per probe:
the estimate is exact for a diagonal A and worst where A is far from diagonal. The exact
diagonal costs d products (in blocks of unit columns): for small models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ._common import Operand, probe_block, working_operator

__all__ = ["DiagonalEstimate", "diagonal"]


@dataclass
class DiagonalEstimate:
    """diag A as a flat (d,) float64 ``value`` with each entry's standard error ``stderr``
    (zeros when exact; NaN with one probe) from ``num_samples`` probes (d unit columns when
    exact)."""

    value: Tensor
    stderr: Tensor
    num_samples: int
    exact: bool


def diagonal(
    A: Operand,
    num_probes: int = 100,
    *,
    exact: bool = False,
    generator: torch.Generator | None = None,
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> DiagonalEstimate:
    """The diagonal of a symmetric ``A`` (a dense tensor or a
    :class:`~sgdlab.operators.LinearOperator`: Hessian, GGN, empirical Fisher).

    ``exact=True`` applies A to the d unit vectors (``num_probes`` ignored); otherwise
    ``num_probes`` Rademacher probes give the mean of v ⊙ A v (module docstring). Blocks of
    probes or columns go through ``matmat`` (``block_size`` as in
    :func:`~sgdlab.measure.curvature.hutchinson.hutchinson_trace`); ``dtype`` as there.
    """
    op = working_operator(A, dtype, exact_products=True)
    d = op.shape[0]
    total = torch.zeros(d, dtype=torch.float64, device=op.device)
    tuner = op.block_tuner("matmat", block_size=block_size)
    if exact:
        start = 0
        for _, b in tuner.blocks(d):
            cols = torch.zeros(d, b, dtype=op.dtype, device=op.device)
            idx = torch.arange(start, start + b, device=op.device)
            cols[idx, torch.arange(b, device=op.device)] = 1
            total[idx] = op.matmat(cols)[idx, torch.arange(b, device=op.device)].double()
            start += b
        _check_finite(total)
        return DiagonalEstimate(total, torch.zeros_like(total), d, True)
    if num_probes < 1:
        raise ValueError(f"Invalid num_probes={num_probes} (must be >= 1)")
    squares = torch.zeros_like(total)
    for _, b in tuner.blocks(num_probes):
        v = probe_block(op, b, generator, "rademacher")
        s = (v * op.matmat(v)).double()                 # (d, b): one sample per column
        total += s.sum(1)
        squares += s.square().sum(1)
    _check_finite(total)
    mean = total / num_probes
    if num_probes > 1:
        var = (squares - num_probes * mean.square()).clamp_min(0) / (num_probes - 1)
        se = var.sqrt() / math.sqrt(num_probes)
    else:
        se = torch.full_like(mean, float("nan"))
    return DiagonalEstimate(mean, se, num_probes, False)


def _check_finite(t: Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise FloatingPointError(
            "operator returned non-finite values (diverged model or bad data?)")
