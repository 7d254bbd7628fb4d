"""Leimkuhler–Matthews: X_{n+1} = X_n + b(X_n) h + G (ΔB_n + ΔB_{n+1}) / 2.

The non-Markovian averaging of consecutive increments (the high-friction limit of BAOAB) makes
the *invariant measure* of overdamped Langevin dynamics dX = −∇f dt + √(2β⁻¹) dB (isotropic
noise, G = cI) second-order accurate in h (exact for Gaussian targets), at the cost of one
increment of lookahead; on finite-time expectations it is weak order 1 like Euler–Maruyama.
Only for additive noise. With a constant *anisotropic* D the dynamics are not reversible and
the gain is lost: on OU dX = −HX dt + G dB the stationary covariance is off by O(h) unless
Σ commutes with H (X = Y + cξ_n, Y_{n+1} = AY_n + (I + A)cξ_n, A = I − hH, c = G√h/2, leaves
a residual h²[H, [H, Σ]]/4 in the Lyapunov equation: 2% at h = 0.2 in the test).
"""
from __future__ import annotations

from torch import Tensor

from sgdlab.errors import UserError

from .base import SDE, Integrator


class LeimkuhlerMatthews(Integrator):
    """Weak order 1 on [0, T], order 2 for stationary averages under isotropic noise (order
    1 under anisotropic D, module docstring); strong order 1/2."""

    weak_order = 1.0
    strong_order = 0.5
    stationary_order = 2.0
    lookahead = 1

    def __init__(self) -> None:
        self._prev: Tensor | None = None

    def start(self, sde: SDE, x: Tensor, dw0: Tensor) -> None:
        if not sde.additive:
            raise UserError("Leimkuhler–Matthews needs additive (state-independent) noise")
        self._prev = dw0

    def step(self, sde: SDE, x: Tensor, t: float, dt: float, dw: Tensor) -> Tensor:
        if sde.factor is None:        # no noise (simulate() then draws no lookahead): Euler
            return x + dt * sde.drift(x)
        if self._prev is None:
            raise UserError("call start() first (simulate() does this)")
        avg = 0.5 * (self._prev + dw)
        self._prev = dw
        out = x + dt * sde.drift(x)
        if sde.scalar_noise is not None:
            return out + sde.scalar_noise * avg
        return out + (sde.factor(x) @ avg[..., None])[..., 0]


__all__ = ["LeimkuhlerMatthews"]
