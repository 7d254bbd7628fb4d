"""Elastic-SGD (thesis eq. 5.4) and Parle (eq. 5.8): replicas coupled to a master.

n replicas x^a, a = 1..n, each coupled elastically to the master x̄ = (1/n) Σ_a x^a (the
minimiser of the coupling Σ_a |x^a − x̄|²/(2ρ) in x̄):

* **Elastic-SGD** (5.4):  x^a ← x^a − η (∇f_B(x^a) + ρ⁻¹ (x^a − x̄)).
* **Parle** (5.8): every replica runs Entropy-SGD's inner loop (L Langevin steps on
  f(y) + |y − x^a|²/(2γ) from y = x^a, average z^a), then, with x̄ computed from the x^a,

      x^a ← x^a − η′ [c_γ (x^a − z^a) + c_ρ (x^a − x̄)].

  Communication is needed only for x̄, i.e. once every L gradient evaluations.

**Hyper-parameter normalisation (§5.3.2).** With ``normalize=False`` the coefficients are the
raw ones of (5.8), c_γ = γ⁻¹ and c_ρ = ρ⁻¹. With ``normalize=True`` (default) the local-entropy
gradient is γ-scaled, c_γ = 1 (η′ = 1 ⇒ x^a ← z^a, the thesis' experiments and reference code),
and the elastic force that Elastic-SGD would apply over the L inner steps, L·η·ρ⁻¹(x^a − x̄),
is applied at once: c_ρ = L·η/(η′ρ). In these units the thesis' degenerate cases are exact:

* n = 1, ρ = ∞: Entropy-SGD;
* L = 1, γ = ∞, α = 0, η′ = 1: Elastic-SGD with step η and coupling ρ (y = x^a − η∇f(x^a) = z^a);
* L = 1, n = 1, γ = ρ = ∞, α = 0, η′ = 1: SGD with step η.

γ and ρ are scoped per outer step, γ(t) = γ₀(1 − γ₁)^t and ρ(t) = ρ₀(1 − ρ₁)^t (5.10),
clipped to [gamma_min, gamma_max] and [rho_min, rho_max].

The reference code of the thesis additionally multiplies its coupling constant by n; we
do not (c_ρ does not depend on the number of replicas), so ρ means the same for any n.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from torch import Tensor

from .entropy_sgd import EntropySGD, _check
from .registry import register_optimizer
from .scoping import ExponentialScope

__all__ = [
    "elastic_sgd_update",
    "parle_coefficients",
    "master_average",
    "Communicator",
    "Parle",
]


def elastic_sgd_update(x: Tensor, grad: Tensor, master: Tensor, *, lr: float,
                       rho: float) -> Tensor:
    """One Elastic-SGD step (5.4) for one replica: x − η(∇f_B(x) + ρ⁻¹(x − x̄)) (new tensor)."""
    c = 0.0 if rho == math.inf else 1.0 / rho
    return x - lr * (grad + c * (x - master))


def parle_coefficients(*, lr: float, outer_lr: float, L: int, gamma: float, rho: float,
                       normalize: bool) -> tuple[float, float]:
    """(c_γ, c_ρ) of the Parle outer gradient c_γ(x^a − z^a) + c_ρ(x^a − x̄); see module doc."""
    inv_rho = 0.0 if rho == math.inf else 1.0 / rho
    if not normalize:
        return (0.0 if gamma == math.inf else 1.0 / gamma), inv_rho
    c_rho = 0.0 if inv_rho == 0.0 or outer_lr == 0 else L * lr * inv_rho / outer_lr
    return 1.0, c_rho


def master_average(anchors: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """x̄ = (1/n) Σ_a x^a, summed in replica order (per parameter)."""
    n = len(anchors)
    if n == 0:
        raise ValueError("master_average needs at least one replica")
    out = [t.detach().clone() for t in anchors[0]]
    for other in anchors[1:]:
        for o, t in zip(out, other):
            o.add_(t)
    for o in out:
        o.div_(n)
    return out


class Communicator(Protocol):
    """Averages the replicas' anchors across processes (see ``sgdlab.train.distributed``)."""

    def average(self, tensors: Sequence[Tensor]) -> list[Tensor]: ...


class Parle(EntropySGD):
    """One Parle replica: Entropy-SGD whose outer step is also pulled towards the master.

    Used by :mod:`sgdlab.train.replicas` (which computes x̄ from all replicas between
    ``inner_loop`` and ``outer_step(master)``). ``step(closure)`` on its own computes x̄
    with ``communicator.average`` (one replica per process, e.g.
    ``sgdlab.train.communicator.TorchDistributedCommunicator``), or uses x̄ = x^a when there
    is no communicator (n = 1: plain Entropy-SGD).

    Args (beyond :class:`EntropySGD`, whose ``inner_lr`` is η and ``lr`` is η′):
        rho, rho_decay, rho_min, rho_max: elastic coupling ρ₀, its scoping ρ₁ and clipping.
        communicator: object with ``average(list[Tensor]) -> list[Tensor]``.
    """

    def __init__(self, params, lr: float = 1.0, *, rho: float = 1.0, rho_decay: float = 0.0,
                 rho_min: float | None = None, rho_max: float | None = None,
                 communicator: Communicator | None = None, **kw: Any):
        _check(rho > 0, f"Invalid rho: {rho} (must be > 0; inf means no coupling)")
        ExponentialScope(rho, rho_decay, lower=rho_min, upper=rho_max)  # validates
        extra = dict(rho=rho, rho_decay=rho_decay, rho_min=rho_min, rho_max=rho_max)
        super().__init__(params, lr, _extra_defaults=extra, **kw)
        self.communicator = communicator

    def current_rho(self, group: dict | None = None) -> float:
        g = self.param_groups[0] if group is None else group
        return ExponentialScope(g["rho"], g["rho_decay"], lower=g["rho_min"],
                                upper=g["rho_max"])(self.outer_steps)

    def _outer_gradient(self, group: dict, p: Tensor, gamma: float,
                        master: Tensor | None) -> Tensor:
        st = self.state[p]
        c_g, c_r = parle_coefficients(lr=group["inner_lr"], outer_lr=group["lr"], L=group["L"],
                                      gamma=gamma, rho=self.current_rho(group),
                                      normalize=group["normalize"])
        G = (st["x"] - st["z"]).mul_(c_g)
        if master is not None and c_r != 0.0:
            G.add_(st["x"] - master, alpha=c_r)
        return G

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        loss = self.inner_loop(closure)
        master = None
        if self.communicator is not None:
            master = self.communicator.average(self.anchors())
        self.outer_step(master)
        return loss


register_optimizer("parle")(Parle)
