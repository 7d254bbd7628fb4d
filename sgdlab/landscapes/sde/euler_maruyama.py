"""Euler–Maruyama: X_{n+1} = X_n + b(X_n) h + G(X_n) ΔB_n (Itô: G at the left point)."""
from __future__ import annotations

from torch import Tensor

from .base import SDE, Integrator


class EulerMaruyama(Integrator):
    """Weak order 1; strong order 1/2 (1 for additive noise, where it equals Milstein)."""

    weak_order = 1.0
    strong_order = 0.5
    strong_order_additive = 1.0

    def step(self, sde: SDE, x: Tensor, t: float, dt: float, dw: Tensor) -> Tensor:
        out = x + dt * sde.drift(x)
        if sde.scalar_noise is not None:
            out = out + sde.scalar_noise * dw
        elif sde.factor is not None:
            out = out + (sde.factor(x) @ dw[..., None])[..., 0]
        return out


__all__ = ["EulerMaruyama"]
