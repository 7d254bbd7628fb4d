"""Spectral density by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani,
Krishnan & Xiao 2019), Gaussian-broadened on a grid."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sgdlab.errors import (checked_float_argument, checked_int_argument, checked_keywords,
                           int_at_least, plain_int)
from sgdlab.operators import LinearOperator

from ._common import Operand, random_vector, working_operator
from .lanczos import LanczosResult, lanczos_step


@dataclass
class SpectralDensity:
    """A Gaussian-broadened spectral density φ(t) = (1/d) Σ_i N(t; λ_i, σ²) estimated by SLQ.

    ``nodes``/``weights`` are the quadrature nodes and weights per probe (weights of a probe sum
    to 1); ``grid``/``density`` the broadened density, which integrates to 1 over the grid when
    the grid covers the spectrum with margin.
    """

    grid: Tensor        # (G,)
    density: Tensor     # (G,)
    nodes: Tensor       # (probes, m)
    weights: Tensor     # (probes, m)
    sigma: float
    dim: int

    def __repr__(self) -> str:
        """The sizes and ranges, not the grid, density, nodes and weights (hundreds of
        numbers)."""
        # padded nodes of a probe that broke down carry no weight; a repr must not raise: no
        # weighted node, or a NaN one (the estimate failed), has no support to show
        nodes = self.nodes[self.weights > 0]
        support = ("n/a" if not nodes.numel() or bool(nodes.isnan().any()) else
                   f"[{float(nodes.min()):.4g}, {float(nodes.max()):.4g}]")
        return (f"SpectralDensity(dim={self.dim}, probes={self.nodes.shape[0]}, "
                f"lanczos_steps={self.nodes.shape[1]}, support={support}, "
                f"sigma={self.sigma:.4g}, grid={len(self.grid)} points on "
                f"[{float(self.grid[0]):.4g}, {float(self.grid[-1]):.4g}], "
                f"trace≈{self.trace():.4g})")

    def moment(self, p: int) -> float:
        """(1/d) Tr A^p by quadrature (exact per probe for p <= 2m − 1; unbiased over probes)."""
        return float((self.weights * self.nodes ** p).sum(1).mean())

    def trace(self) -> float:
        return self.moment(1) * self.dim


def lanczos_lockstep(op: LinearOperator, starts: Tensor, m: int) -> list[LanczosResult]:
    """``lanczos_decomposition(..., restart_on_breakdown=False, keep_basis=False)`` for the p
    columns of ``starts`` (d, p) at once: p independent recurrences whose products go through
    one ``matmat`` per step (one vmapped backward for the Hessian, or per batch of a
    DataLoader). A recurrence that breaks down stops; the others go on."""
    d, p = starts.shape
    nrm = torch.linalg.vector_norm(starts, dim=0)
    if not (torch.isfinite(nrm).all() and (nrm > 0).all()):
        raise ValueError("Lanczos start vector must be finite and nonzero")
    basis = torch.empty(p, m, d, dtype=op.dtype, device=op.device)  # rows read once written
    basis[:, 0] = (starts / nrm).T
    alpha: list[list[float]] = [[] for _ in range(p)]
    beta: list[list[float]] = [[] for _ in range(p)]
    scale, beta_next = [0.0] * p, [0.0] * p
    active = list(range(p))
    for j in range(m):
        w = op.matmat(basis[active, j].T).T.contiguous()     # (active, d), a new tensor
        still = []
        for i, r in enumerate(active):
            a, b, scale[r], breakdown = lanczos_step(w[i], basis[r, : j + 1],
                                                     beta[r][-1] if beta[r] else 0.0, scale[r])
            alpha[r].append(a)
            beta_next[r] = b
            if j == m - 1:
                continue
            if breakdown:                                    # an invariant space: stop
                beta_next[r] = 0.0
                continue
            beta[r].append(b)
            torch.div(w[i], b, out=basis[r, j + 1])
            still.append(r)
        active = still
        if not active:
            break
    return [LanczosResult(alpha=torch.tensor(alpha[r], dtype=torch.float64),
                          beta=torch.tensor(beta[r], dtype=torch.float64), basis=None,
                          residual=beta_next[r]) for r in range(p)]


@checked_keywords()
def spectral_density(
    A: Operand,
    *,
    num_probes: int = 10,
    num_iter: int = 80,
    sigma: float | None = None,
    grid: Tensor | int = 1000,
    margin: float = 0.05,
    generator: torch.Generator | None = None,
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019).

    For each Gaussian probe v (normalised), m Lanczos steps give T = S Θ Sᵀ; the quadrature
    vᵀ f(A) v ≈ Σ_j S[0,j]² f(θ_j) with f a Gaussian kernel of width ``sigma`` gives the
    density φ(t) = (1/d) Tr N(t; A, σ²) averaged over probes. The probes' runs go in lockstep,
    ``block_size`` of them sharing one ``matmat`` per step (default: the group size measured
    cheapest per product, or the ruled one within
    :func:`~sgdlab.operators.blocking.reproducible_blocks`, bounded by the operator's
    ``memory_budget()`` for their bases);
    the nodes and weights equal one run per probe up to round-off.

    Args:
        num_iter: Lanczos steps per probe (m).
        sigma: kernel width; default 1% of the estimated spectral range (at least 1e-12).
        grid: number of grid points spanning [λ_min − margin·range, λ_max + margin·range]
            (plus 5σ on each side), or an explicit 1-D grid.
        dtype: working precision of the Lanczos recurrences (as in
            :func:`~sgdlab.measure.curvature.lanczos.lanczos`).
    """
    # np.int64 is a count; True (1) and 2.5 (int() made it 2) are not
    num_probes = checked_int_argument("num_probes", num_probes, 1, ": the probes")
    num_iter = checked_int_argument("num_iter", num_iter, 1, ": the Lanczos steps per probe")
    if not isinstance(grid, Tensor):
        grid = plain_int(grid)
        # a number other than an int (a float, a bool, numpy's float32) was taken as a
        # one-point grid at that value, not as a count of points
        if np.ndim(grid) == 0 and not int_at_least(grid, 1):
            raise ValueError(f"Invalid grid={grid!r} (an int >= 1: the grid points, or a 1-D "
                             "grid)")
    # before the Lanczos runs: a NaN margin or σ made the grid or the density NaN, said
    # nowhere, and σ <= 0 was refused only after every probe had run
    margin = checked_float_argument("margin", margin, 0)
    sigma = checked_float_argument("sigma", sigma, 0, ", or None", strict=True, optional=True)
    op = working_operator(A, dtype)
    nodes, weights = [], []
    starts = [random_vector(op, generator) for _ in range(num_probes)]   # the sequential draws
    m = max(1, min(num_iter, op.shape[0]))
    basis_bytes = m * op.shape[0] * torch.finfo(op.dtype).bits // 8
    if op.device.type == "cuda":       # blocks are not measured there (the memory cap is the
        basis_bytes += op._probe_bytes()  # block), so the products' scratch counts too
    cap = max(1, op.memory_budget() // max(1, basis_bytes))
    tuner = op.block_tuner("lanczos_lockstep", block_size=block_size, cap=cap)
    for i, b in tuner.blocks(num_probes):
        for res in lanczos_lockstep(op, torch.stack(starts[i:i + b], dim=1), m):
            theta, s = torch.linalg.eigh(res.tridiagonal())
            nodes.append(theta)
            weights.append(s[0] ** 2)
    m = max(len(t) for t in nodes)
    # pad probes that broke down early with zero-weight nodes
    n_t = torch.stack([torch.cat([t, t.new_full((m - len(t),), float(t[-1]))]) for t in nodes])
    w_t = torch.stack([torch.cat([w, w.new_zeros(m - len(w))]) for w in weights])
    lo, hi = float(n_t.min()), float(n_t.max())
    span = max(hi - lo, abs(hi), abs(lo), 1e-12)
    if sigma is None:
        sigma = max(0.01 * span, 1e-12)
    if isinstance(grid, int):
        pad = margin * span + 5 * sigma
        g = torch.linspace(lo - pad, hi + pad, grid, dtype=torch.float64)
    else:
        g = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    diff = g[:, None, None] - n_t[None]
    kern = torch.exp(-0.5 * (diff / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = (kern * w_t[None]).sum(-1).mean(-1)
    return SpectralDensity(g, density, n_t, w_t, float(sigma), op.shape[0])
