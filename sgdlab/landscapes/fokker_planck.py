"""1-D Fokker–Planck evolution of a density (thesis Fig. 4.1, the density equation of (4.33)).

    ρ_t = −∂ₓ(b ρ) + D ∂ₓₓρ   on a uniform grid, zero flux through both ends,

with a drift field b(x) (for gradient dynamics dX = −∂ₓu dt + √(2D) dB, b = −∂ₓu: the density
flows downhill on u) and a diffusion coefficient D ≥ 0. (4.2)'s dX = −∇f dt + β^{−1/2} dB has
D = β⁻¹/2; (4.33) as printed, ρ_t = −∇·(∇u ρ) + Δρ, has b = +∇u and D = 1 (see docs/FIDELITY.md:
the caller chooses both).

The scheme is monotone in Oberman's sense (the new density is a nonnegative combination of the
old one) and conservative: the grid points are the centres of cells of width dx, and each step
is the explicit (forward Euler) finite-volume update

    ρᵢ ← ρᵢ − (dt/dx) (F_{i+½} − F_{i−½}),
    F_{i+½} = b⁺_{i+½} ρᵢ − b⁻_{i+½} ρ_{i+1} − D (ρ_{i+1} − ρᵢ)/dx,   F_{−½} = F_{n−½} = 0,

with the upwind flux for the drift (b⁺ = max(b, 0), b⁻ = max(−b, 0)) and the centred flux for
the diffusion. Under the step bound dt ≤ 1 / maxᵢ rᵢ, rᵢ the rate at which cell i sends mass
to its neighbours, every coefficient of the update is ≥ 0, so ρ stays nonnegative, and the
fluxes telescope, so the mass Σ ρᵢ dx is conserved up to round-off (about 1e−16 per step). The
drift term is first order accurate in dx, the diffusion term second order; the time error is
O(dt) = O(dx²) at the bound.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from sgdlab.errors import UserError, checked_float

from .base import check_positive
from .pde import _check_grid, _check_tensors

# the default step is this fraction of the stability bound
DEFAULT_CFL = 0.9


def downhill_drift(u: Tensor, x: Tensor) -> Tensor:
    """b = −∂ₓu at the n − 1 cell faces x_{i+½}: −(u_{i+1} − uᵢ)/dx (second order there), the
    drift of gradient dynamics on u, in the form :func:`fokker_planck` takes it."""
    dx = _check_grid(u, x)
    if not bool(torch.isfinite(u).all()):
        raise UserError("u has NaN or infinite values")
    return -(u[1:] - u[:-1]) / dx


def _face_drift(b: Tensor, n: int, like: Tensor) -> Tensor:
    """The drift at the n − 1 faces: ``b`` itself if it has n − 1 values, the mean of the two
    neighbouring nodes if it has n."""
    b = torch.as_tensor(b, dtype=like.dtype, device=like.device)
    if b.ndim != 1 or b.numel() not in (n, n - 1):
        raise UserError(f"drift must be a 1-D tensor with {n} values (at the grid points) or "
                        f"{n - 1} (at the cell faces), got shape {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise UserError("drift has NaN or infinite values")
    return b if b.numel() == n - 1 else 0.5 * (b[1:] + b[:-1])


def _cell_rates(drift: Tensor, dx: float, diffusion: float) -> tuple[Tensor, Tensor]:
    """(R, L): the rates per unit time at which cell i sends mass to cell i + 1 and to i − 1,
    Rᵢ = (b⁺_{i+½} + D/dx)/dx, Lᵢ = (b⁻_{i−½} + D/dx)/dx, with R_{n−1} = L_0 = 0 (the zero-flux
    ends); ``drift`` at the n − 1 faces. The flux is F_{i+½} = dx (Rᵢρᵢ − L_{i+1}ρ_{i+1})."""
    right, left = drift.new_zeros(drift.numel() + 1), drift.new_zeros(drift.numel() + 1)
    right[:-1] = (drift.clamp_min(0) + diffusion / dx) / dx
    left[1:] = ((-drift).clamp_min(0) + diffusion / dx) / dx
    return right, left


def stable_step(drift: Tensor, dx: float, diffusion: float) -> float:
    """The largest explicit step that keeps :func:`fokker_planck`'s update monotone: 1 / maxᵢ
    (Rᵢ + Lᵢ), the inverse of the fastest rate at which a cell loses mass (``drift`` at the
    n − 1 faces; inf if nothing moves)."""
    right, left = _cell_rates(drift, dx, diffusion)
    top = float((right + left).max())
    return 1 / top if top > 0 else math.inf


def fokker_planck(rho0: Tensor, x: Tensor, drift: Tensor | Callable[[float], Tensor],
                  diffusion: float, t: float, *, dt: float | None = None,
                  cfl: float = DEFAULT_CFL, times: Sequence[float] | None = None
                  ) -> Tensor | tuple[Tensor, Tensor]:
    """The density at time ``t`` of ρ_t = −∂ₓ(b ρ) + D ∂ₓₓρ from ρ(·, 0) = ``rho0`` on the
    uniform grid ``x`` with zero-flux ends (explicit monotone upwind scheme of the module
    docstring: mass Σρᵢ dx conserved to round-off, ρ ≥ 0).

    ``drift``: b at the n grid points (the faces take the mean of their two nodes) or at the
    n − 1 faces (:func:`downhill_drift`), or a function of the time s returning either, for a
    drift that changes in time (evaluated at the start of each step: put the times at which
    it jumps in ``times``, so that a step ends there). ``diffusion``: D ≥ 0.
    ``dt``: the step; by default ``cfl`` (in (0, 1]) times the stability bound
    :func:`stable_step`, recomputed whenever a time-dependent drift changes; a ``dt`` above
    the bound is an error. Steps are shortened to land exactly on ``t`` and on ``times``.

    Returns ρ(·, t); with ``times`` (increasing, in [0, t]) also the densities at those times,
    stacked (len(times), n)."""
    _check_tensors(rho0=rho0, x=x)          # a numpy rho0 failed inside torch.isfinite
    if rho0.ndim != 1:
        raise UserError(f"rho0 must be a 1-D tensor, got shape {tuple(rho0.shape)}")
    if not bool(torch.isfinite(rho0).all()):
        raise UserError("rho0 has NaN or infinite values")
    if bool((rho0 < 0).any()):
        raise UserError(f"rho0 must be >= 0 (a density), its minimum is {float(rho0.min()):.3g}")
    dx = _check_grid(rho0, x)
    d = checked_float("diffusion", diffusion)
    t = checked_float("t", t)
    if not 0 < cfl <= 1:
        raise UserError(f"cfl must be in (0, 1], got {cfl}")
    if dt is not None:
        dt = check_positive("dt", dt)
    targets = [] if times is None else [float(s) for s in times]
    if any(not 0 <= s <= t for s in targets) or any(
            b < a for a, b in zip(targets, targets[1:])):
        raise UserError(f"times must be increasing and within [0, t = {t}], got {targets}")
    n = rho0.numel()
    varying = callable(drift)

    def rates(s: float) -> tuple[Tensor, Tensor, float]:
        """(R, L, the step) under the drift at time s."""
        b = _face_drift(drift(s) if varying else drift, n, rho0)
        right, left = _cell_rates(b, dx, d)
        bound = stable_step(b, dx, d)
        if dt is None:
            return right, left, cfl * bound if bound < math.inf else t
        if dt > bound:
            raise UserError(f"dt = {dt:.4g} is above the stability bound {bound:.4g} of the "
                            f"explicit scheme (dx = {dx:.4g}, D = {d:g}, max |drift| = "
                            f"{float(b.abs().max()):.4g}): pass a smaller dt or none")
        return right, left, dt

    right, left, h = rates(0.0)
    rho = rho0.clone()
    snaps = []
    s = 0.0
    for stop in targets + [t]:
        while s < stop:
            if varying and s > 0:
                right, left, h = rates(s)
            if stop - s <= h * (1 + 1e-9):     # land on the target exactly
                k, s = stop - s, stop
            else:
                k, s = h, s + h
            # ρᵢ ← (ρᵢ − k outᵢ) + k inᵢ, outᵢ = (Rᵢ + Lᵢ)ρᵢ, inᵢ = R_{i−1}ρ_{i−1} + L_{i+1}ρ_{i+1}:
            # both terms ≥ 0 under the bound (the first clamped against a last-bit round-off at
            # k = the bound), and Σ in = Σ out, the fluxes telescoping. (Writing the first term
            # as ρᵢ(1 − k(Rᵢ + Lᵢ)) with the factor rounded once for all steps biased the mass
            # by 1e-12 over 9e4 steps; this rounding changes from step to step.)
            out_r, out_l = right * rho, left * rho
            new = (rho - k * (out_r + out_l)).clamp_min(0)
            new[1:] += k * out_r[:-1]
            new[:-1] += k * out_l[1:]
            rho = new
        if len(snaps) < len(targets):
            snaps.append(rho.clone())
    if times is None:
        return rho
    return rho, torch.stack(snaps) if snaps else rho.new_zeros(0, n)


def gaussian_density(x: Tensor, mean: float, var: float) -> Tensor:
    """N(mean, var) sampled at ``x`` (var > 0: 0 gave NaN everywhere, < 0 a math error)."""
    var = check_positive("var", var)
    mean = checked_float("mean", mean, None)
    return torch.exp(-(x - mean) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)


def mass(rho: Tensor, x: Tensor) -> float:
    """Σ ρᵢ dx, the total mass of a grid density (cells of width dx centred on ``x``)."""
    return float(rho.sum()) * _check_grid(rho, x)


def mass_within(rho: Tensor, x: Tensor, lo: float, hi: float) -> float:
    """The mass of the cells whose centres lie in [lo, hi]."""
    dx = _check_grid(rho, x)
    return float(rho[(x >= lo) & (x <= hi)].sum()) * dx


__all__ = ["fokker_planck", "downhill_drift", "stable_step", "gaussian_density", "mass",
           "mass_within", "DEFAULT_CFL"]
