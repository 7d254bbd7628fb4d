"""Elastic-SGD (thesis eq. 5.4) and Parle (eq. 5.8): replicas coupled to a master.

n replicas x^a, a = 1..n, each with its own data Ξ^a, and a master x (Chaudhari's thesis,
Ch. 5):

* **Elastic-SGD** (5.4a):  x^a ← x^a − η [∇f_B(x^a) + ρ_k⁻¹ (x^a − x)].
* **Parle** (5.8): every replica runs Entropy-SGD's inner loop (L steps of (5.8a)
  y ← y − η⁽⁰⁾[∇f_B(y) + γ_k⁻¹(y − x^a)] from y = x^a, with the average (5.8b)
  z ← αz + (1 − α)y, z = x^a at the start), then, once every L steps,

      x^a ← x^a − (η⁽¹⁾/γ_k)(x^a − z^a) − (η⁽²⁾/ρ_k)(x^a − x)                   (5.8c)
      x   ← x − (η⁽³⁾ n/ρ_k)(x − (1/n) Σ_a x^a).                                (5.8d)

  Communication is needed only for the master, once every L gradient evaluations.

**Learning rates (§5.3.2), ``normalization``.** The thesis normalises the four step sizes:
"We set η⁽⁰⁾ to the initial learning rate η₀, η⁽¹⁾ = ηγ_k, η⁽²⁾ = η, and η⁽³⁾ = ρ_k/n."
With η⁽³⁾ = ρ_k/n, (5.8d) makes the master the replicas' average, x = (1/n) Σ_a x^a, and the
replica's outer step is written x^a ← x^a − η·G with (``parle_coefficients``)

* ``"paper"`` (default, §5.3.2):   G = (x^a − z^a) + ρ_k⁻¹ (x^a − x);
  η is the (annealed) learning rate, η⁽⁰⁾ = η₀ the inner step (``inner_lr``, default ``lr``).
* ``"raw"`` (5.8c as printed with η⁽¹⁾ = η⁽²⁾ = η):  G = γ_k⁻¹(x^a − z^a) + ρ_k⁻¹(x^a − x).
* ``"authors-code"`` (the authors' ``parle_mpi.py``): G = (x^a − z^a) + (L·n/ρ_k)(x^a − x) —
  the code multiplies its elastic coupling by L·n —, and the step starts from the last inner
  iterate: x^a ← y^a_L − η·G. (Its other differences are listed in docs/FIDELITY.md.)

The outer step goes through Nesterov / heavy-ball momentum (``momentum``, ``nesterov``;
Remark 5.3: "We use Nesterov's momentum (fixed to 0.9) for updating the variables y_k^a in
Equation (5.8a) and x_k^a in Equation (5.8c)"); the master has none. The inner momentum on y
(``inner_momentum``) carries ∇f_B alone and is zeroed every round by default, as the authors'
Entropy-SGD code (python/optim.py); the authors' ``parle_mpi.py`` adds the pull to the
gradient before its momentum (``inner_momentum_on="step"``, also Remark 5.3 read literally)
and never resets that buffer (``inner_momentum_buffer="kept"``).

**Which master (``master``).** Read literally, (5.8c) and (5.8d) update simultaneously, so the
x_k that pulls the replicas is the average formed at the *previous* communication
(``master="lagged"``). The thesis also speaks of "the reduce operation required in
Equations (5.8c) to (5.8d)", and the authors' code averages the replicas and then pulls them
towards that fresh average: ``master="current"`` (default).

The special cases of §5.3.1 under the ``"paper"`` normalisation: n = 1 and ρ = ∞ is
Entropy-SGD with the γ-scaled outer step x ← x − η(x − z); L = 1, γ = ∞, α = 0 with
η⁽⁰⁾ = 1 gives z = x^a − ∇f_B(x^a) and hence exactly Elastic-SGD (5.4a) with step η when the
outer step has no momentum (with Remark 5.3's Nesterov 0.9 it is Elastic-SGD with momentum;
with η⁽⁰⁾ = η₀ instead, the gradient is scaled by η₀: §5.3.1's "Elastic-SGD for L = 1,
γ = ∞" holds only before the normalisation); adding n = 1, ρ = ∞ gives SGD. In
:class:`sgdlab.train.replicas.ParleConfig`: ``L=1, gamma=inf, alpha=0, inner_lr=1, momentum=0,
outer_momentum=0`` is Elastic-SGD, and with ``replicas=1, rho=inf`` plain SGD.

γ and ρ are scoped per outer step, γ_k = γ₀(1 − γ₁)^⌊k/L⌋ and ρ_k = ρ₀(1 − ρ₁)^⌊k/L⌋, clipped
to [gamma_min, gamma_max] and [rho_min, rho_max]; eq. (5.10) is γ₁ = ρ₁ = 1/(2B) with B the
number of mini-batches in the global dataset, γ₀ = 100, ρ₀ = 1, clipped below at γ = 1 and
ρ = 0.1 (:class:`sgdlab.train.replicas.ParleConfig` resolves ``"1/2B"``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from ._common import NonFiniteLoss, require_closure
from .entropy_sgd import EntropySGD, _check
from .registry import register_optimizer
from .scoping import scope_of

__all__ = [
    "NORMALIZATIONS",
    "MASTERS",
    "elastic_sgd_update",
    "parle_coefficients",
    "master_average",
    "Communicator",
    "Parle",
]

NORMALIZATIONS = ("paper", "raw", "authors-code")
MASTERS = ("current", "lagged")


def elastic_sgd_update(x: Tensor, grad: Tensor, master: Tensor, *, lr: float,
                       rho: float) -> Tensor:
    """One Elastic-SGD step (5.4a) for one replica: x − η(∇f_B(x) + ρ⁻¹(x − x̄)) (new tensor)."""
    c = 0.0 if rho == math.inf else 1.0 / rho
    return x - lr * (grad + c * (x - master))


def parle_coefficients(*, gamma: float, rho: float, normalization: str = "paper",
                       L: int = 1, replicas: int = 1) -> tuple[float, float]:
    """(c_γ, c_ρ) of the Parle outer gradient G = c_γ(x^a − z^a) + c_ρ(x^a − x); the step is
    x^a ← x^a − η·G (see the module docstring for the three normalisations)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"Invalid normalization {normalization!r}; choose one of "
                         f"{', '.join(NORMALIZATIONS)}")
    inv_rho = 0.0 if rho == math.inf else 1.0 / rho
    if normalization == "raw":
        return (0.0 if gamma == math.inf else 1.0 / gamma), inv_rho
    if normalization == "authors-code":
        return 1.0, L * replicas * inv_rho
    return 1.0, inv_rho


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
    """Averages tensors across the replicas' processes: ``average`` returns each tensor's mean
    over the replicas, in order and shape (``Parle.step`` passes its anchors and a one-element
    failure flag; ``sgdlab.train.communicator.TorchDistributedCommunicator``)."""

    def average(self, tensors: Sequence[Tensor]) -> list[Tensor]: ...


class Parle(EntropySGD):
    """One Parle replica (thesis eq. 5.8): Entropy-SGD whose outer step is also pulled
    towards the master.

    Used by :mod:`sgdlab.train.replicas` (which averages all replicas' x^a between
    ``inner_loop`` and ``outer_step(master)``). ``step(closure)`` on its own averages with
    ``communicator.average`` (one replica per process, e.g.
    ``sgdlab.train.communicator.TorchDistributedCommunicator``), or has no elastic term when
    there is no communicator (n = 1: Entropy-SGD).

    Args (beyond :class:`EntropySGD`):
        lr: η of §5.3.2, the outer step (anneal it with a schedule on ``param_groups``).
        inner_lr: η⁽⁰⁾, the step of the inner loop (5.8a); default ``lr`` (η₀).
        gamma: γ₀ (thesis §5.3.2: 100); L: inner steps (25); alpha: 0.25.
        rho, rho_decay, rho_min, rho_max: elastic scale ρ₀ (1), its scoping ρ₁ and clipping.
        normalization: ``"paper"`` | ``"raw"`` | ``"authors-code"`` (module docstring).
        master: ``"current"`` | ``"lagged"`` (module docstring).
        replicas: n (used by the ``"authors-code"`` coupling L·n/ρ only).
        communicator: object with ``average(list[Tensor]) -> list[Tensor]``.
    """

    _own_group_keys = ("rho",)  # a state saved before saved_by is told by it

    def __init__(self, params, lr: float = 0.1, *, inner_lr: float | None = None,
                 gamma: float = 100.0, L: int = 25, rho: float = 1.0, rho_decay: float = 0.0,
                 rho_min: float | None = None, rho_max: float | None = None,
                 normalization: str = "paper", master: str = "current", replicas: int = 1,
                 communicator: Communicator | None = None, **kw: Any):
        _check("normalize" not in kw, "Parle takes normalization='paper'|'raw'|'authors-code' "
               "instead of normalize")
        _check(normalization in NORMALIZATIONS, f"Invalid normalization {normalization!r}; "
               f"choose one of {', '.join(NORMALIZATIONS)}")
        _check(master in MASTERS, f"Invalid master {master!r}; choose one of {', '.join(MASTERS)}")
        _check(rho > 0, f"Invalid rho: {rho} (must be > 0; inf means no coupling)")
        _check(isinstance(replicas, int) and replicas >= 1, f"Invalid replicas: {replicas}")
        extra = dict(rho=rho, rho_decay=rho_decay, rho_min=rho_min, rho_max=rho_max,
                     normalization=normalization, master=master, replicas=replicas)
        scope_of("rho", extra)  # validates
        super().__init__(params, lr, inner_lr=lr if inner_lr is None else inner_lr, gamma=gamma,
                         L=L, _extra_defaults=extra, **kw)
        self.communicator = communicator

    def current_rho(self, group: dict | None = None) -> float:
        g = self.param_groups[0] if group is None else group
        return scope_of("rho", g)(self.outer_steps)

    def _outer_gradient(self, group: dict, p: Tensor, gamma: float,
                        master: Tensor | None) -> Tensor:
        st = self.state[p]
        c_g, c_r = parle_coefficients(gamma=gamma, rho=self.current_rho(group),
                                      normalization=group["normalization"], L=group["L"],
                                      replicas=group["replicas"])
        G = (st["x"] - st["z"]).mul_(c_g)
        if master is not None and c_r != 0.0:
            G.add_(st["x"] - master, alpha=c_r)
        return G

    @torch.no_grad()
    def outer_step(self, master: Sequence[Tensor] | None = None) -> None:
        """(5.8c) towards ``master``, the replicas' fresh average (one tensor per parameter,
        param_groups order), or for a group with ``master="lagged"`` the average of the
        previous communication (:meth:`_pulling_master`)."""
        super().outer_step(None if master is None else self._pulling_master(master))

    def _pulling_master(self, master: Sequence[Tensor]) -> list[Tensor]:
        """The x_k each parameter's (5.8c) pulls towards. With ``master="lagged"`` it is the
        average formed at the previous communication, kept for every parameter at every
        communication: kept only for the parameters this replica stepped (those with a
        gradient), a replica that left one out of a round pulled it towards an older
        average, or the fresh one, than the others did. At the first communication every
        replica still holds x₀, so the previous average is the current one."""
        out, k = [], 0
        for group in self.param_groups:
            for p in self._params(group):
                m = master[k]
                k += 1
                if group["master"] == "lagged":
                    st = self.state[p]
                    prev = st.get("master_prev")
                    st["master_prev"] = m.detach().clone()
                    m = m if prev is None else prev
                out.append(m)
        return out

    def _outer_base(self, group: dict, p: Tensor) -> Tensor:
        # the authors' code takes the outer step from the last inner iterate y_L (= p here)
        return p.detach() if group["normalization"] == "authors-code" else self.state[p]["x"]

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """``inner_loop``, the average over the replicas, ``outer_step``; the first closure
        call's loss, or the first non-finite one, whose step is not taken (the parameters stay
        at x). With a communicator every replica skips the step when one of them met a
        non-finite loss or its closure raised (a flag averaged with the anchors: one that left
        the average out would leave the others waiting in it); the closure's exception is then
        raised after the average, and the replicas that met neither return NaN."""
        require_closure(self, closure)      # refused here, not as a failure told the others
        try:
            loss, failed = self.inner_loop(closure, check_finite=True), None
        except NonFiniteLoss as e:      # untaken, as EntropySGD.step
            if self.communicator is None:
                return e.loss
            loss, failed = e.loss, e
        except Exception as e:
            # a closure that raises itself (sgdlab's loop's, at a non-finite loss; out of
            # memory): inner_loop put x back; the others are told, then it is raised
            if self.communicator is None:
                raise
            loss, failed = None, e
        master = None
        if self.communicator is not None:
            anchors = self.anchors()
            flag = anchors[0].new_full((1,), float(failed is not None))
            *master, flag = self.communicator.average(anchors + [flag])
            if failed is not None or float(flag) > 0:
                self._stepped = None
                self.restore_x()           # y_L back to x, as inner_loop's stop does
                if isinstance(failed, NonFiniteLoss):
                    return failed.loss
                if failed is not None:
                    raise failed
                return torch.full_like(loss, math.nan) if isinstance(loss, Tensor) else math.nan
        self.outer_step(master)
        return loss


register_optimizer("parle")(Parle)
