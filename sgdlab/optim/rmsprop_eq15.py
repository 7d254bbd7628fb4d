"""RMSProp as Zhu et al. (2019) print it, eqs. (14)–(15):

    r_{t+1} = ρ r_t + (1 − ρ) g̃(θ_t) ∘ g̃(θ_t),                                  (14)
    θ_{t+1} = θ_t − η_t g̃(θ_t) / √(r_t + δ),                                     (15)

element-wise, with r_0 = 0. Two things set it apart from ``torch.optim.RMSprop`` (the
``rmsprop`` of the registry, which Suppl. F says was run: "α = 0.99, ε = 10⁻⁸, as PyTorch
default setting"): δ is inside the root, and the step divides by r_t, the average *before*
this step's gradient enters it, where torch divides by √r_{t+1} + ε. With r_0 = 0 the first
step is η g / √δ (10⁴ η g at δ = 10⁻⁸): the printed form, taken literally, where torch's
first step is η g / (√(1 − ρ) |g| + ε) ≈ 10 η sign(g) at ρ = 0.99. docs/FIDELITY.md (Zhu)
compares the two.

No momentum, no weight decay, no centring: eqs. (14)–(15) have none. A complex parameter
steps as the pairs of its real and imaginary parts (torch.optim's convention); a sparse
gradient is used densely.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import PicklesWhole, closure_loss, dense, runs_state_dict_hooks
from .registry import register_optimizer
from .settings import split_own_state

__all__ = ["RMSPropEq15", "rmsprop_eq15"]


def rmsprop_eq15(params: list[Tensor], grads: list[Tensor], rs: list[Tensor], *, lr: float,
                 rho: float, delta: float) -> None:
    """One step of eqs. (14)–(15) in place: θ −= η g / √(r + δ) with the r given (r_t), then
    r ← ρ r + (1 − ρ) g ∘ g (r_{t+1})."""
    for p, g, r in zip(params, grads, rs):
        p.addcdiv_(g, r.add(delta).sqrt_(), value=-lr)
        r.mul_(rho).addcmul_(g, g, value=1.0 - rho)


def _check_rho_delta(rho, delta, where: str = "") -> None:
    """A ValueError naming eq. (14)'s ρ outside [0, 1) or eq. (15)'s δ not finite and > 0."""
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"Invalid rho value{where}: {rho} (eq. (14)'s ρ, in [0, 1))")
    if not 0.0 < delta < math.inf:
        raise ValueError(f"Invalid delta value{where}: {delta} (eq. (15)'s δ, finite and > 0: "
                         "r_0 = 0 makes the first step η g / √δ)")


@register_optimizer("rmsprop-eq15")
class RMSPropEq15(PicklesWhole, Optimizer):
    """RMSProp of Zhu et al. 2019, eqs. (14)–(15), as printed (module doc).

    Args:
        params: parameters or parameter groups.
        lr: η (>= 0).
        rho: ρ of eq. (14), in [0, 1) (default 0.99, torch's α default that Suppl. F names).
        delta: δ of eq. (15), inside the square root (> 0; default 10⁻⁸, Suppl. F's ε).

    ``state[p]["square_avg"]`` is r (r_0 = 0), ``state[p]["step"]`` the steps taken.
    """

    def __init__(self, params, lr: float = 1e-3, *, rho: float = 0.99, delta: float = 1e-8):
        if not 0.0 <= lr < math.inf:
            raise ValueError(f"Invalid learning rate: {lr}")
        _check_rho_delta(rho, delta)
        super().__init__(params, dict(lr=lr, rho=rho, delta=delta))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's, and the group's own ρ and δ checked as the constructor checks them
        (a group's δ <= 0 stepped to NaN without a word); a refused group is not added."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            _check_rho_delta(group["rho"], group["delta"], " (of a parameter group)")
        except ValueError:
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = closure_loss(closure)
        for group in self.param_groups:
            ps, gs, rs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = dense(p.grad)
                state = self.state[p]
                if p.is_complex():      # the pairs of real and imaginary parts
                    p, g = torch.view_as_real(p), torch.view_as_real(g)
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                ps.append(p)
                gs.append(g)
                rs.append(state["square_avg"])
            rmsprop_eq15(ps, gs, rs, lr=group["lr"], rho=group["rho"], delta=group["delta"])
        return loss

    @runs_state_dict_hooks
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        # marks the state as this optimizer's: torch's RMSprop keeps `square_avg` too, of
        # r_{t+1} under another update, which must not be taken for eq. (15)'s r
        sd["rmsprop_eq15"] = {"form": "eq15"}
        return sd

    @runs_state_dict_hooks
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict, _ = split_own_state(state_dict, "rmsprop_eq15", "RMSPropEq15")
        super().load_state_dict(state_dict)
