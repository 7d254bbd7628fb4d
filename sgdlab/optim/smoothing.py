"""PDE smoothing of the loss: HJ (non-viscous Hamilton–Jacobi) and HEAT (Gaussian smoothing).

Chaudhari's thesis §4.6.1. Both descend a smoothed loss u(x, γ) instead of f (γ is the time
of the PDE, the thesis' scope):

* **HJ** (§4.6.1.2) — the viscosity-free limit of local entropy: u solves u_t = −½|∇u|²
  (4.15) with u(·, 0) = f, given by the Hopf–Lax formula u(x, γ) = min_y f(y) + |x − y|²/(2γ)
  (4.16), so ∇u(x, γ) = γ⁻¹(x − y*) = ∇f(y*), y* = prox_{γf}(x) (4.18). "For the other
  algorithm which we denote as HJ, we set L = 5 and β_ex⁻¹ = 0, and set ⟨y⟩^k = y^k in (4.40)
  and (4.41), i.e., no averaging is performed and we simply take the last iterate of the y^k
  updates and take α = 0." Two forms:

  - ``form="prox"`` — (4.40)–(4.41): L steps y ← y − η_y(∇f_B(y) + γ⁻¹(y − x)) from y = x
    (Entropy-SGD's inner loop without noise and with z = y), then x ← x − η c (x − y_L) with
    c = 1 (``normalize=True``, the γ-scaled gradient of §3.2.3 that §4.6.1 calls "standard")
    or c = γ⁻¹ (``normalize=False``, (4.41) as printed).
  - ``form="implicit"`` — "an equivalent system of updates" (4.42) in the displacement
    y = x − (prox iterate):  y ← (1 − η_y/γ) y + η_y ∇f_B(x − y) from y = 0, and
    x ← x − η ∇f_B(x − y) with the gradient of the last inner step. (4.42) says y is
    re-initialised to 0 "if k/L is an integer", the step at which x is also updated; read
    literally x would then move along ∇f(x) alone, so the x step uses the last inner
    gradient, before the reset.) Its iterates x − y are those of the prox form; with
    η_y = γ it is the fixed-point iteration p ← ∇f(x − γp) of (4.35) and the two forms take
    the same outer step when ``normalize=False``. There is no γ⁻¹ to scale in (4.42), so this
    form has no ``normalize``.

  The inner step η_y is not restated for HJ; Entropy-SGD's "step-size for the y^k dynamics is
  fixed to η_y = 0.1" (§4.6.1.1) is the default.

* **HEAT** (§4.6.1.3) — smoothing by the heat equation, (4.43):

      x ← x − (η/L) Σ_{i≤L} ∇f_B(x + ε_i),   ε_i ~ N(0, γI),   "We again set L = 20",

  an unbiased Monte-Carlo estimate of ∇(f * G_γ); for a quadratic f it is ∇f(x) in
  expectation, for f = Σ x⁴/4 it is x³ + 3γx. (4.28) gives the homogenised heat dynamics the
  variance β⁻¹γ; (4.43), implemented here, writes γ. The fast variable of (4.27) that (4.28)
  homogenises, dY = −(εγ)⁻¹Y ds + (εβ)^−½ dB, is an Ornstein–Uhlenbeck process whose
  stationary variance is γ/(2β), half of β⁻¹γ: ``variance_convention="eq-4.28"`` (default)
  perturbs with variance ``gamma`` (β⁻¹γ), ``"ou-4.27"`` with ``gamma``/2 (γ/(2β)).

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

from sgdlab.errors import int_at_least, plain_int

from ._common import (NonFiniteLoss, check_finite_loss, closure_checks_finite,
                      dense, inner_closure_loss, momentum_direction, require_closure)
from .entropy_sgd import EntropySGD, SeededNoise, _check, _check_shared_L, check_choice
from .registry import register_optimizer
from .scoping import scope_of

__all__ = ["HJ", "HEAT", "HEAT_BATCHES", "HEAT_VARIANCE_CONVENTIONS"]

# the perturbation variance per unit of ``gamma`` (= β⁻¹γ): (4.28)'s text, (4.27)'s OU process
HEAT_VARIANCE_CONVENTIONS = {"eq-4.28": 1.0, "ou-4.27": 0.5}
# whose mini-batch each of a step's L gradients evaluates (docs/FIDELITY.md, HEAT's mini-batches)
HEAT_BATCHES = ("per-perturbation", "shared")


class HJ(EntropySGD):
    """Non-viscous Hamilton–Jacobi smoothing (thesis §4.6.1.2); see the module docstring.

    Args:
        lr: outer step size η.
        gamma: γ (the time of the HJ PDE, scoped like Entropy-SGD's).
        L: inner steps (gradient evaluations) per outer step (thesis: 5).
        inner_lr: η_y (default 0.1); the inner descent is stable for
            η_y < 2/(λ_max(∇²f) + 1/γ).
        form: ``"prox"`` (4.40–4.41) or ``"implicit"`` (4.42).
        normalize: prox form only — γ-scaled outer gradient (x − y_L) (default) or
            γ⁻¹(x − y_L).
        momentum, nesterov: outer momentum; inner_momentum, inner_nesterov: inner momentum
            (prox form); weight_decay: L2 added to ∇f.
        inner_momentum_on: prox form only — what the inner momentum carries, ``"gradient"``
            (default) ∇f_B alone, the pull γ⁻¹(y − x) added unaccelerated, or ``"step"`` the
            whole drift of (4.40) (as Entropy-SGD's; §4.6.1 leaves momentum "standard").
        weight_decay_on: prox form only — ``"inner"`` (default) the L2 term in the inner
            steps only, ``"both"`` also λx in the outer gradient (as Entropy-SGD's).
        gamma_decay, gamma_min, gamma_max: scoping of γ as in Entropy-SGD.
    """

    _own_group_keys = ("form",)  # a state saved before saved_by is told by it

    def __init__(self, params, lr: float = 0.1, *, gamma: float = 0.1, L: int = 5,
                 inner_lr: float = 0.1, form: str = "prox", normalize: bool | None = None,
                 momentum: float = 0.0, nesterov: bool = False, inner_momentum: float = 0.0,
                 inner_nesterov: bool = False, inner_momentum_on: str = "gradient",
                 weight_decay: float = 0.0,
                 weight_decay_on: str = "inner", gamma_decay: float = 0.0,
                 gamma_min: float | None = None, gamma_max: float | None = None):
        _check(form in ("prox", "implicit"), f"Invalid HJ form: {form!r} ('prox' or 'implicit')")
        _check(0 < gamma < math.inf, f"Invalid gamma: {gamma} (HJ needs a finite gamma > 0)")
        _check(form == "prox" or not normalize,
               "HJ form 'implicit' (4.42) has no γ⁻¹ to normalise: leave normalize unset")
        _check(form == "prox" or not inner_momentum,
               "HJ form 'implicit' (4.42) has no inner momentum")
        # (4.42)'s x step is the last inner gradient, already decayed at its point x − y
        _check(form == "prox" or weight_decay_on == "inner",
               "HJ form 'implicit' (4.42) has no outer gradient to decay: weight_decay_on "
               "must be 'inner'")
        super().__init__(params, lr, inner_lr=inner_lr, L=L, gamma=gamma,
                         gamma_decay=gamma_decay, gamma_min=gamma_min, gamma_max=gamma_max,
                         alpha=0.0, noise=0.0, momentum=momentum, nesterov=nesterov,
                         inner_momentum=inner_momentum, inner_nesterov=inner_nesterov,
                         inner_momentum_on=inner_momentum_on,
                         weight_decay=weight_decay, weight_decay_on=weight_decay_on,
                         normalize=(form == "prox") if normalize is None else bool(normalize),
                         seed=0, _extra_defaults={"form": form})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # Entropy-SGD's thermal noise and average, which HJ holds at 0: a group's own would
        # step it as Entropy-SGD, silently
        for key in ("noise", "alpha"):
            if param_group.get(key, 0.0) != 0.0:
                raise ValueError(f"HJ has no {key!r} (its inner loop is a noiseless descent "
                                 f"whose last iterate is y_L): a group's {key} would make it "
                                 "Entropy-SGD; use entropy_sgd")
        super().add_param_group(param_group)

    def _inner_group_step(self, group: dict, gamma: float) -> None:
        if group["form"] == "prox":
            super()._inner_group_step(group, gamma)
            return
        # implicit form (4.42) in the displacement d = x − y_param: d ← (1 − η_y/γ)d + η_y g,
        # g = ∇f(x − d); we keep the evaluation point x − d in the parameter and the last g
        eta = group["inner_lr"]
        for y in self._params(group):
            if y.grad is None:
                continue
            st = self.state[y]
            # nn.Embedding(sparse=True): the dense step, as the prox form's inner loop
            g = dense(y.grad)
            if group["weight_decay"] > 0:
                g = g.add(y, alpha=group["weight_decay"])
            st["p"] = g.clone()
            d = (st["x"] - y).mul_(1.0 - eta / gamma).add_(g, alpha=eta)
            y.copy_(st["x"]).sub_(d)

    def _outer_gradient(self, group: dict, p: Tensor, gamma: float, master) -> Tensor:
        st = self.state[p]
        if group["form"] == "implicit":
            return st["p"].clone()
        return super()._outer_gradient(group, p, gamma, master)


register_optimizer("hj")(HJ)


class HEAT(SeededNoise, Optimizer):
    """Gaussian (heat-equation) smoothing, eq. 4.43: x ← x − η (1/L) Σ_i ∇f_{B_i}(x + ε_i).

    Args:
        lr: step size η.
        gamma: the time of the heat equation, β⁻¹γ of (4.28) (γ of (4.43)): the variance of
            the perturbations ε_i ~ N(0, γI) under the default ``variance_convention``.
        variance_convention: ``"eq-4.28"`` (default): ε_i ~ N(0, gamma·I), the variance
            β⁻¹γ of (4.28) and (4.43); ``"ou-4.27"``: ε_i ~ N(0, gamma/2·I), the stationary
            variance γ/(2β) of (4.27)'s Ornstein–Uhlenbeck fast variable.
        L: perturbations (gradient evaluations) per step (thesis: 20).
        batches: ``"per-perturbation"`` (default): each closure call draws a new mini-batch,
            as Entropy-SGD's inner loop; ``"shared"``: (4.43) read literally, one θ̃ under the
            sum, so the L gradients evaluate one mini-batch. The optimizer says which through
            :attr:`closure_repeats_batch`; sgdlab's training loop then hands every call of a
            step the step's batch, and a closure of one's own must do the same.
        momentum, nesterov, weight_decay: as torch.optim.SGD (weight decay at x).
        gamma_decay, gamma_min, gamma_max: scoping γ(t) = γ₀(1 − γ₁)^t per step, clipped
            ("scoping of the parameter γ [is] standard", §4.6.1).
        seed: seed of the perturbation generator (default: from torch's global RNG).
    """

    needs_closure = True
    _step_supports_amp_scaling = True   # torch.amp.GradScaler.step marks it: refused
    _options_added_later = {
        "variance_convention": ("eq-4.28", HEAT_VARIANCE_CONVENTIONS,
                                "its perturbations had (4.28)'s variance"),
        "batches": ("per-perturbation", HEAT_BATCHES,
                    "each of its perturbations drew a new mini-batch")}

    def __init__(self, params, lr: float = 0.1, *, gamma: float = 0.01, L: int = 20,
                 momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 gamma_decay: float = 0.0, gamma_min: float | None = None,
                 gamma_max: float | None = None, variance_convention: str = "eq-4.28",
                 batches: str = "per-perturbation", seed: int | None = None):
        _check(lr >= 0, f"Invalid learning rate: {lr}")
        _check(0 <= gamma < math.inf, f"Invalid gamma: {gamma} (variance, must be finite >= 0)")
        check_choice("variance_convention", variance_convention, HEAT_VARIANCE_CONVENTIONS)
        check_choice("batches", batches, HEAT_BATCHES)
        L = plain_int(L)      # numpy's ints are counts; True is not (it was one perturbation)
        _check(int_at_least(L, 1), f"Invalid number of samples L: {L!r} (int >= 1)")
        _check(0 <= momentum < 1, f"Invalid momentum value: {momentum}")
        _check(not nesterov or momentum > 0, "Nesterov momentum requires a momentum")
        _check(weight_decay >= 0, f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, gamma=gamma, L=L, momentum=momentum, nesterov=nesterov,
                        weight_decay=weight_decay, gamma_decay=gamma_decay,
                        gamma_min=gamma_min, gamma_max=gamma_max,
                        variance_convention=variance_convention, batches=batches)
        scope_of("gamma", {**defaults, "gamma": max(gamma, 1e-300)})
        super().__init__(params, defaults)
        self._init_rng(seed)
        self.steps = 0

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _check_shared_L(self, ("L", "batches"))

    @property
    def closure_repeats_batch(self) -> bool:
        """Whether every closure call of a step must evaluate the same mini-batch
        (``batches="shared"``)."""
        return self.param_groups[0]["batches"] == "shared"

    def current_gamma(self, group: dict | None = None) -> float:
        """γ(t) for the next step (scoped and clipped)."""
        g = self.param_groups[0] if group is None else group
        if g["gamma"] == 0:
            return 0.0
        return scope_of("gamma", g)(self.steps)

    def current_variance(self, group: dict | None = None) -> float:
        """The variance of the next step's perturbations: γ(t) under ``"eq-4.28"``, γ(t)/2
        under ``"ou-4.27"``."""
        g = self.param_groups[0] if group is None else group
        return HEAT_VARIANCE_CONVENTIONS[g["variance_convention"]] * self.current_gamma(g)

    def _counters(self) -> dict[str, int]:
        return {"steps": self.steps}

    def _load_counters(self, c: dict[str, Any]) -> None:
        self.steps = int(c["steps"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """L perturbed gradients, then the step at x; the first closure call's loss, or the
        first non-finite one, whose step is not taken (the parameters stay at x)."""
        require_closure(self, closure)
        params = [p for g in self.param_groups for p in g["params"]]
        x = [p.detach().clone() for p in params]
        acc: list[Tensor | None] = [None] * len(params)
        L = int(self.param_groups[0]["L"])
        first = None
        check_finite = not closure_checks_finite(closure)
        try:
            for _ in range(L):
                i = 0
                for group in self.param_groups:
                    s = math.sqrt(self.current_variance(group))
                    for p in group["params"]:
                        if p.requires_grad:   # frozen parameters are constants of f
                            eps = torch.randn(p.shape, generator=self._rng(p.device),
                                              device=p.device, dtype=p.dtype)
                            p.copy_(x[i]).add_(eps, alpha=s)
                        i += 1
                loss = inner_closure_loss(closure)
                first = loss if first is None else first
                if check_finite:
                    check_finite_loss(loss)
                for i, p in enumerate(params):
                    if p.grad is not None:
                        # a sparse gradient (nn.Embedding(sparse=True)) meets dense decay
                        g = dense(p.grad)
                        acc[i] = g.clone() if acc[i] is None else acc[i].add_(g)
        except BaseException as e:
            # a closure that raises ends the step untaken: x back, not the perturbed x + ε;
            # so does a non-finite loss, which the step returns (EntropySGD.step's rule)
            for p, x0 in zip(params, x):
                p.copy_(x0)
            if isinstance(e, NonFiniteLoss):
                return e.loss
            raise
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
