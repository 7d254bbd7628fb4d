"""PDE smoothing of the loss: HJ (non-viscous Hamilton–Jacobi) and HEAT (Gaussian smoothing).

Chaudhari's thesis §4.6.1.2. Both descend a smoothed loss u(x, γ) instead of f:

* **HJ** — the viscosity-free limit β → ∞ of local entropy: u solves u_t + ½|∇u|² = 0 with
  u(·, 0) = f, given by the Hopf–Lax formula u(x, γ) = min_y f(y) + |x − y|²/(2γ), so

      ∇u(x, γ) = γ⁻¹ (x − y*),   y* = prox_{γf}(x) = argmin_y f(y) + |x − y|²/(2γ).

  ``form="prox"``: y* is approximated by L gradient steps on f(y) + |y − x|²/(2γ) from y = x
  (Entropy-SGD's inner loop without noise and with z = y, i.e. α = 0).
  ``form="implicit"``: the equivalent fixed-point form (4.42) ∇u = ∇f(x − γ∇u), iterated
  p ← ∇f(x − γp) L times from p = 0. With ``inner_lr = γ`` the two forms produce the same
  iterates y_k (the prox step y ← y − γ(∇f(y) + γ⁻¹(y − x)) = x − γ∇f(y)); the implicit
  iteration converges when γ·Lip(∇f) < 1.
  Outer step: x ← x − η ∇u(x, γ) (with optional momentum).

* **HEAT** — u solves the heat equation u_t = ½Δu, u(·, γ) = f * N(0, γI) (eq. 4.43):

      ∇u(x, γ) ≈ (1/L) Σ_i ∇f(x + ε_i),   ε_i ~ N(0, γI),

  an unbiased Monte-Carlo estimate; x ← x − η ∇u. For a quadratic f, ∇u = ∇f(x) exactly
  in expectation; for f = Σ x⁴/4, ∇u = x³ + 3γx.

Every inner gradient comes from the closure, which draws a new mini-batch, so one outer
step costs L gradient evaluations (the training loop's ``grad_evals``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import momentum_direction
from .entropy_sgd import EntropySGD, SeededNoise, _check
from .registry import register_optimizer

__all__ = ["HJ", "HEAT"]


class HJ(EntropySGD):
    """Non-viscous Hamilton–Jacobi smoothing (thesis §4.6.1.2); see the module docstring.

    Args:
        lr: outer step size η on ∇u(x, γ).
        gamma: smoothing scale γ (a time of the HJ PDE).
        L: inner steps (gradient evaluations) per outer step.
        inner_lr: step size of the proximal gradient descent (default γ, which makes the
            ``prox`` and ``implicit`` forms identical; must be < 2/(λ_max(∇²f) + 1/γ)).
        form: ``"prox"`` or ``"implicit"`` (eq. 4.42).
        momentum, nesterov: outer momentum; weight_decay: L2 added to ∇f.
        gamma_decay, gamma_min, gamma_max: scoping of γ as in Entropy-SGD.
    """

    def __init__(self, params, lr: float = 0.1, *, gamma: float = 0.1, L: int = 10,
                 inner_lr: float | None = None, form: str = "prox", momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, gamma_decay: float = 0.0,
                 gamma_min: float | None = None, gamma_max: float | None = None):
        _check(form in ("prox", "implicit"), f"Invalid HJ form: {form!r} ('prox' or 'implicit')")
        _check(0 < gamma < math.inf, f"Invalid gamma: {gamma} (HJ needs a finite gamma > 0)")
        super().__init__(params, lr, inner_lr=gamma if inner_lr is None else inner_lr, L=L,
                         gamma=gamma, gamma_decay=gamma_decay, gamma_min=gamma_min,
                         gamma_max=gamma_max, alpha=0.0, noise=0.0, momentum=momentum,
                         nesterov=nesterov, weight_decay=weight_decay, normalize=False, seed=0,
                         _extra_defaults={"form": form})

    def _inner_group_step(self, group: dict, gamma: float) -> None:
        if self.param_groups[0]["form"] == "prox":
            super()._inner_group_step(group, gamma)
            return
        # implicit form (4.42): p ← ∇f(x − γp), p₀ = 0; we keep z = x − γp so that the
        # outer gradient γ⁻¹(x − z) is p.
        for y in self._params(group):
            if y.grad is None:
                continue
            st = self.state[y]
            g = y.grad
            if group["weight_decay"] > 0:
                g = g.add(y, alpha=group["weight_decay"])
            st["p"] = g.clone()
            y.copy_(st["x"]).add_(g, alpha=-gamma)   # next evaluation point x − γp

    def _outer_gradient(self, group: dict, p: Tensor, gamma: float, master) -> Tensor:
        st = self.state[p]
        if group["form"] == "implicit":
            return st["p"].clone()
        return (st["x"] - st["z"]).div_(gamma)


register_optimizer("hj")(HJ)


class HEAT(SeededNoise, Optimizer):
    """Gaussian (heat-equation) smoothing, eq. 4.43: x ← x − η (1/L) Σ_i ∇f_{B_i}(x + ε_i).

    Args:
        lr: step size η.
        gamma: variance of the perturbations ε_i ~ N(0, γI) (the time of the heat equation).
        L: perturbations (gradient evaluations, each on a new mini-batch) per step.
        momentum, nesterov, weight_decay: as torch.optim.SGD (weight decay at x).
        seed: seed of the perturbation generator (default: from torch's global RNG).
    """

    needs_closure = True

    def __init__(self, params, lr: float = 0.1, *, gamma: float = 0.01, L: int = 10,
                 momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 seed: int | None = None):
        _check(lr >= 0, f"Invalid learning rate: {lr}")
        _check(0 <= gamma < math.inf, f"Invalid gamma: {gamma} (variance, must be finite >= 0)")
        _check(isinstance(L, int) and L >= 1, f"Invalid number of samples L: {L} (int >= 1)")
        _check(0 <= momentum < 1, f"Invalid momentum value: {momentum}")
        _check(not nesterov or momentum > 0, "Nesterov momentum requires a momentum")
        _check(weight_decay >= 0, f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, gamma=gamma, L=L, momentum=momentum,
                                      nesterov=nesterov, weight_decay=weight_decay))
        _check(len({g["L"] for g in self.param_groups}) == 1, "All parameter groups must share L")
        self._init_rng(seed)
        self.steps = 0

    def _counters(self) -> dict[str, int]:
        return {"steps": self.steps}

    def _load_counters(self, c: dict[str, Any]) -> None:
        self.steps = int(c["steps"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        if closure is None:
            raise ValueError("HEAT needs a closure that draws a new mini-batch and recomputes "
                             "the loss and gradients")
        params = [p for g in self.param_groups for p in g["params"]]
        x = [p.detach().clone() for p in params]
        acc: list[Tensor | None] = [None] * len(params)
        L = int(self.param_groups[0]["L"])
        first = None
        for _ in range(L):
            i = 0
            for group in self.param_groups:
                s = math.sqrt(group["gamma"])
                for p in group["params"]:
                    eps = torch.randn(p.shape, generator=self._rng(p.device), device=p.device,
                                      dtype=p.dtype)
                    p.copy_(x[i]).add_(eps, alpha=s)
                    i += 1
            with torch.enable_grad():
                loss = closure()
            first = loss if first is None else first
            for i, p in enumerate(params):
                if p.grad is not None:
                    acc[i] = p.grad.clone() if acc[i] is None else acc[i].add_(p.grad)
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                p.copy_(x[i])
                if acc[i] is not None:
                    g = acc[i].div_(L)
                    if group["weight_decay"] > 0:
                        g.add_(p, alpha=group["weight_decay"])
                    p.add_(momentum_direction(self.state[p], g, group), alpha=-group["lr"])
                i += 1
        self.steps += 1
        return first


register_optimizer("heat")(HEAT)
