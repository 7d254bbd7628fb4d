"""Entropy-SGD and Entropy-Adam (Chaudhari's thesis, Algorithm 2, §3.2.3 and §4.6.1.1).

Entropy-SGD descends the *local entropy* (thesis Definition 3.3 with inverse temperature β)

    f_γ(x) = −β⁻¹ log ∫ exp(−β[f(y) + |x − y|²/(2γ)]) dy,     ∇f_γ(x) = γ⁻¹ (x − ⟨y⟩)   (3.10)

where ⟨y⟩ is the mean of the Gibbs measure ρ_γ(y; x) ∝ exp(−β[f(y) + |x − y|²/(2γ)]) (3.8).
**γ is the thesis' scope**: the variance of the Gaussian in (3.8) ("bandwidth of the
Gaussian smoothing", §1.2.1) — the coupling of y to x is γ⁻¹. The Entropy-SGD paper (ICLR
2017) and the authors' code use the inverse convention (their γ multiplies |x − y|²/2);
convert with γ_thesis = 1/γ_code. The thesis' experiments state their values in its own
convention: MNIST (§3.3.2) "the initial value of the scope is set to γ = 10^4 and this
decreases by a factor of 1 + 10^-3 after each parameter update" (the code's γ = 10⁻⁴ growing
by 1 + 10⁻³), CIFAR-10 (§3.3.3) γ₀ = 30 decreasing by 1.001 (the code's 0.03: 1/0.03 ≈ 33),
PTB γ = 10³ and char-LSTM (Entropy-Adam) γ = 100, both fixed.

⟨y⟩ is estimated by L steps of stochastic-gradient Langevin dynamics (SGLD) started at y = x
(Algorithm 2, lines 1–5):

    y ← y − η_y (∇f_B(y) + γ⁻¹(y − x)) + √(2 η_y β⁻¹) ε,   ε ~ N(0, I)
    z ← α z + (1 − α) y                                    (exponential average, z₀ = x)

with α = 0.25 ("so as to put more weight on the later samples"; the authors' code keeps 0.75
of the old average, i.e. α = 0.75 here). ``noise`` is the thermal noise β⁻¹ (Alg. 2: 10⁻⁸ to
10⁻⁶; 0 leaves only the mini-batch noise, as §4.6.1 and Ch. 5 do). Eqs. (4.39)–(4.40) write
the noise as √(η_y β⁻¹) ε: that is ``noise = β⁻¹/2`` here.

Outer step (line 6): x ← x − η′ γ⁻¹(x − z) with ``normalize=False``. §3.2.3: "In practice, we
therefore scale down the Local Entropy gradient by γ before the weight update [...] We can
further set [η′ = 1] which simply gives [x ← z] as the update": ``normalize=True`` (default,
also the authors' code) is x ← x − η′(x − z). (The thesis prints the modified line with the
γ⁻¹ still in it; only the γ-scaled reading gives x ← z for η′ = 1.)

Each inner step draws a *new* mini-batch through the closure, so one outer step costs L
gradient evaluations; the training loop counts closure calls, which gives the "effective
epochs" (×L) accounting of §3.3.2. Nesterov momentum can be used on the inner loop (on ∇f_B
only, the coupling pull and the noise are added unaccelerated; the buffer is reset at every
outer step; both as in the authors' Entropy-SGD code, python/optim.py and entropyoptim.lua)
and on the outer loop (persistent); the thesis' CNN experiments use 0.9 on both loops. The
authors' Parle code (parle_mpi.py) instead adds the pull to the gradient before its momentum
(``inner_momentum_on="step"``) and never resets that buffer (``inner_momentum_buffer="kept"``).
ℓ2 weight decay λ (``weight_decay``) is added to ∇f_B(y) in the inner loop; the thesis does not
say where it acts. ``weight_decay_on="inner"`` (default) stops there: λ|y|²/2 is part of the f
whose local entropy is descended, and reaches x only through x − z. ``"both"`` also adds λx to
the outer gradient before the outer momentum, G = (x − z) + λx (γ⁻¹(x − z) + λx without
``normalize``), as the authors' PyTorch code does (python/optim.py: the outer ``dw`` is
``w.grad = x − μ`` plus ``wd·w``, then Nesterov); their Lua code zeroes that decayed gradient
before the outer step, i.e. ``"inner"``.
Scoping (§3.2.3): γ(t) = γ₀ (1 − γ₁)^t clipped to [gamma_min, gamma_max], t = number of outer
steps (``gamma_decay`` = γ₁; "decreases by a factor of 1 + 10⁻³" is γ₁ = 1 − 1/1.001).

All buffers live in ``self.state``; the Langevin noise generator's state and the outer step
count are saved by ``state_dict()``, so a resumed run reproduces the original trajectory.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from sgdlab.errors import int_at_least, plain_int
from sgdlab.measure.entropy_gradient import langevin_step_

from ._common import (NonFiniteLoss, PicklesWhole, check_finite_loss, check_real_parameters,
                      closure_checks_finite, dense, group_number, inner_closure_loss,
                      momentum_direction, refuse_meta, require_closure, runs_state_dict_hooks)
from .registry import register_optimizer
from .scoping import scope_of
from .settings import split_own_state

__all__ = ["EntropySGD", "EntropyAdam", "SeededNoise", "INNER_MOMENTUM_ON",
           "INNER_MOMENTUM_BUFFER", "WEIGHT_DECAY_ON"]

# what the inner loop's momentum carries: ∇f_B alone (the authors' Entropy-SGD code) or the
# whole drift, coupling pull included (the authors' Parle code)
INNER_MOMENTUM_ON = ("gradient", "step")
# the inner momentum buffer at each outer step: zeroed (the authors' Entropy-SGD code) or kept
# from the last inner step on (the authors' Parle code)
INNER_MOMENTUM_BUFFER = ("reset", "kept")
# where ℓ2 acts: the inner gradients only, or the outer gradient as well (the authors' PyTorch
# Entropy-SGD code)
WEIGHT_DECAY_ON = ("inner", "both")


def check_choice(name: str, value: Any, choices) -> None:
    """A ValueError naming option ``name`` unless ``value`` is one of ``choices``."""
    _check(value in choices,
           f"Invalid {name}: {value!r} (choose {' or '.join(map(repr, choices))})")


class SeededNoise(PicklesWhole):
    """Mixin for optimizers that draw noise: a private ``torch.Generator`` seeded once,
    whose state (and the subclass' step counters, ``_counters()``) ``state_dict()`` saves
    under the key ``"noise"`` so that a resumed run draws the same noise.

    ``_options_added_later`` names the group options a subclass gained after its states were
    first saved: name -> (the value such a state stepped with, the choices, what that value
    did). A group added later is checked against the choices; a state saved without the
    option loads as that value, and is refused, before anything is loaded, by an optimizer
    built with another."""

    _generator: torch.Generator | None
    _pending_rng: Tensor | None
    _options_added_later: dict[str, tuple[str, Any, str]] = {}
    #: group keys this class writes and the classes it derives from do not, present since
    #: its first states: a state saved before ``saved_by`` existed is told apart by them
    _own_group_keys: tuple[str, ...] = ()

    def _init_rng(self, seed: int | None) -> None:
        self._given_seed = None if seed is None else int(seed)
        if seed is None:  # reproducible under torch.manual_seed
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self._seed = int(seed)
        self._generator = None
        self._pending_rng = None

    def _rng(self, device: torch.device) -> torch.Generator:
        if self._generator is None:
            refuse_meta(self, [device],
                        "its noise is drawn by a torch.Generator, which has no meta device")
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self._seed)
            if self._pending_rng is not None:
                self._generator.set_state(self._pending_rng)
                self._pending_rng = None
        return self._generator

    def _counters(self) -> dict[str, int]:
        return {}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # a group added later with a misspelt value would step as another (or fail) later on
        for name, (_, choices, _) in self._options_added_later.items():
            check_choice(name, param_group.get(name, self.defaults[name]), choices)
        super().add_param_group(param_group)  # type: ignore[misc]
        check_real_parameters(self, "its noise is drawn on real coordinates")

    def settings(self) -> dict[str, Any]:
        """Its generator's seed as given, None for the default (:mod:`sgdlab.optim.settings`):
        loading a state restores the seed and the generator, so another seed would be
        ignored."""
        return {"seed": self._given_seed}

    def _load_counters(self, c: dict[str, Any]) -> None: ...

    def _refuse_another_seeded_noise_state(self, state_dict: dict[str, Any],
                                           extra: dict[str, Any]) -> None:
        """A ValueError for the state of another optimizer of this mixin: Entropy-SGD,
        Entropy-Adam, HJ, Parle and HEAT all keep their entry under ``"noise"``, and one's
        state loaded into another replaced its groups, then stepped with the other's
        hyper-parameters (Entropy-SGD took HJ's, Parle's and Entropy-Adam's) or failed on a
        KeyError. The entry names the class that saved it; a state saved before it did must
        hold this optimizer's counters and, in each group, every key of its defaults (less
        ``_options_added_later``), and no group key of another class' own (HJ's ``form``,
        Parle's ``rho``, Entropy-Adam's ``betas``: their groups hold all of Entropy-SGD's)."""
        name = type(self).__name__
        saved_by = extra.get("saved_by")
        if saved_by is not None:
            if saved_by != name:
                raise ValueError(f"state_dict was saved by {saved_by}, not {name}")
            return
        groups = state_dict.get("param_groups", [])
        for other in _subclasses(SeededNoise):
            held = [k for k in other._own_group_keys
                    if k not in self.defaults and any(k in g for g in groups)]
            if held:
                raise ValueError(f"state_dict was saved by {other.__name__} (its groups hold "
                                 f"{held[0]!r}), not {name}")
        wanted = [k for k in self.defaults if k not in self._options_added_later]
        missing = [k for k in self._counters() if k not in extra]
        for saved in groups:
            missing += [k for k in wanted if k not in saved and k not in missing]
        if missing:
            raise ValueError(f"state_dict has no {', '.join(map(repr, missing))} (not saved "
                             f"by {name})")

    @runs_state_dict_hooks
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()  # type: ignore[misc]
        rng = self._generator.get_state() if self._generator is not None else self._pending_rng
        sd["noise"] = {"seed": self._seed, "rng_state": rng, **self._counters(),
                       "saved_by": type(self).__name__}
        return sd

    @runs_state_dict_hooks
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # another optimizer's state (torch.optim.SGD's) was loaded without a word: its groups
        # replaced these, and the next step failed on a KeyError ('inner_momentum', 'L')
        added = self._options_added_later
        state_dict, extra = split_own_state(state_dict, "noise", type(self).__name__)
        # first: a key another optimizer's groups lack is not this one's older state
        self._refuse_another_seeded_noise_state(state_dict, extra)
        for saved, built in zip(state_dict.get("param_groups", []), self.param_groups):
            for name, (old, _, did) in added.items():
                if name not in saved and built[name] != old:
                    raise ValueError(f"{type(self).__name__} state saved before {name} "
                                     f"existed ({did}); this optimizer was built with "
                                     f"{built[name]!r}")
        super().load_state_dict(state_dict)  # type: ignore[misc]
        for group in self.param_groups:
            for name, (old, _, _) in added.items():
                group.setdefault(name, old)
        self._seed = int(extra["seed"])
        self._load_counters(extra)
        self._generator = None
        rng = extra["rng_state"]
        self._pending_rng = None if rng is None else rng.clone()



def _subclasses(cls: type) -> list[type]:
    """Every class derived from ``cls``, at any depth."""
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _check_shared_L(optimizer: Optimizer, keys: tuple[str, ...] = ("L",)) -> None:
    """After ``add_param_group``: every group must have the same L, and the same value of
    each other option of ``keys`` (one closure call serves all groups); a group that differs
    is removed again and named."""
    for key in keys:
        values = sorted({g[key] for g in optimizer.param_groups})
        if len(values) > 1:
            optimizer.param_groups.pop()
            raise ValueError(f"All parameter groups must share {key}, got {values}")


class EntropySGD(SeededNoise, Optimizer):
    """Entropy-SGD (thesis Algorithm 2). ``step(closure)`` = ``inner_loop`` + ``outer_step``.

    Args:
        params: parameters (or param groups).
        lr: outer step size η′ (γ-scaled units when ``normalize``; η′ = 1 ⇒ x ← z).
        inner_lr: Langevin step size η_y.
        L: inner steps (gradient evaluations) per outer step.
        gamma: γ₀, the scope (thesis convention: the coupling is |x − y|²/(2γ)); ``inf`` =
            no coupling. Default 10⁴, the thesis' MNIST value (§3.3.2).
        gamma_decay: γ₁ in γ(t) = γ₀(1 − γ₁)^t (0: no scoping; negative: γ grows).
        gamma_min, gamma_max: clipping of the scoped γ.
        alpha: weight of the old average in z ← αz + (1 − α)y (thesis default 0.25).
        noise: thermal noise β⁻¹ of the Langevin steps (0 allowed).
        momentum, nesterov: outer-loop (heavy-ball / Nesterov) momentum.
        inner_momentum, inner_nesterov: inner-loop momentum.
        inner_momentum_on: what the inner momentum carries: ``"gradient"`` (default, the
            authors' Entropy-SGD code) ∇f_B + wd·y only, the coupling pull γ⁻¹(y − x) added
            unaccelerated; ``"step"`` the whole drift ∇f_B + wd·y + γ⁻¹(y − x) (Remark 5.3's
            "Nesterov's momentum [...] for updating the variables y_k^a" read literally, and
            the authors' Parle code).
        inner_momentum_buffer: ``"reset"`` (default, the authors' Entropy-SGD code) zeroes
            the inner momentum buffer at every outer step; ``"kept"`` carries it from one
            outer step's last inner step into the next one's first (the authors' Parle code,
            whose ``muy`` is never reset).
        weight_decay: L2 coefficient λ added to ∇f in the inner loop.
        weight_decay_on: ``"inner"`` (default) λy in the inner loop only; ``"both"`` also λx
            in the outer gradient, (x − z) + λx, as the authors' PyTorch code.
        normalize: use the γ-scaled outer gradient (x − z) instead of γ⁻¹(x − z).
        seed: seed of the Langevin noise generator (default: drawn from torch's global RNG).
    """

    needs_closure = True
    _step_supports_amp_scaling = True   # torch.amp.GradScaler.step marks it: refused
    # what the inner momentum carries and whether its buffer is kept: nothing to act on
    # without an inner momentum (registry.without_idle_options)
    idle_options = {"inner_momentum_on": "inner_momentum",
                    "inner_momentum_buffer": "inner_momentum"}
    _options_added_later = {
        "inner_momentum_on": ("gradient", INNER_MOMENTUM_ON,
                              "its inner momentum carried the gradient alone"),
        "inner_momentum_buffer": ("reset", INNER_MOMENTUM_BUFFER,
                                  "its inner momentum was reset every outer step"),
        "weight_decay_on": ("inner", WEIGHT_DECAY_ON,
                            "its weight decay acted in the inner loop only")}

    def __init__(self, params, lr: float = 1.0, *, inner_lr: float = 0.1, L: int = 20,
                 gamma: float = 1e4, gamma_decay: float = 0.0, gamma_min: float | None = None,
                 gamma_max: float | None = None, alpha: float = 0.25, noise: float = 0.0,
                 momentum: float = 0.0, nesterov: bool = False, inner_momentum: float = 0.0,
                 inner_nesterov: bool = False, inner_momentum_on: str = "gradient",
                 inner_momentum_buffer: str = "reset", weight_decay: float = 0.0,
                 weight_decay_on: str = "inner",
                 normalize: bool = True, seed: int | None = None,
                 _extra_defaults: dict[str, Any] | None = None):
        _check(lr >= 0, f"Invalid learning rate: {lr}")
        _check(inner_lr > 0, f"Invalid inner learning rate: {inner_lr}")
        L = plain_int(L)      # numpy's ints are counts; True is not (it was one step)
        _check(int_at_least(L, 1), f"Invalid number of inner steps L: {L!r} (int >= 1)")
        _check(gamma > 0, f"Invalid gamma: {gamma} (must be > 0; inf means no coupling)")
        _check(0 <= alpha < 1, f"Invalid alpha: {alpha} (must be in [0, 1))")
        _check(noise >= 0 and math.isfinite(noise), f"Invalid thermal noise: {noise}")
        _check(0 <= momentum < 1, f"Invalid momentum value: {momentum}")
        _check(0 <= inner_momentum < 1, f"Invalid inner momentum value: {inner_momentum}")
        _check(not nesterov or momentum > 0, "Nesterov momentum requires a momentum")
        _check(not inner_nesterov or inner_momentum > 0,
               "Inner Nesterov momentum requires an inner momentum")
        _check(weight_decay >= 0, f"Invalid weight_decay value: {weight_decay}")
        check_choice("inner_momentum_on", inner_momentum_on, INNER_MOMENTUM_ON)
        check_choice("inner_momentum_buffer", inner_momentum_buffer, INNER_MOMENTUM_BUFFER)
        check_choice("weight_decay_on", weight_decay_on, WEIGHT_DECAY_ON)
        defaults = dict(lr=lr, inner_lr=inner_lr, L=L, gamma=gamma, gamma_decay=gamma_decay,
                        gamma_min=gamma_min, gamma_max=gamma_max, alpha=alpha, noise=noise,
                        momentum=momentum, nesterov=nesterov, inner_momentum=inner_momentum,
                        inner_nesterov=inner_nesterov, inner_momentum_on=inner_momentum_on,
                        inner_momentum_buffer=inner_momentum_buffer, weight_decay=weight_decay,
                        weight_decay_on=weight_decay_on,
                        normalize=normalize, **(_extra_defaults or {}))
        scope_of("gamma", defaults)     # validates the scoping arguments (raises ValueError)
        super().__init__(params, defaults)
        self._init_rng(seed)
        self.outer_steps = 0
        self.inner_steps = 0
        # positions (param_groups order) of the parameters the inner loop moved: no id(),
        # which a deep copy or a pickle would not carry over to its parameters
        self._stepped: set[int] | None = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _check_shared_L(self)

    # --- bookkeeping -------------------------------------------------------------------
    @property
    def L(self) -> int:
        return int(self.param_groups[0]["L"])

    def _params(self, group: dict) -> list[Tensor]:
        return list(group["params"])

    def current_gamma(self, group: dict | None = None) -> float:
        """γ(t) for the next outer step (scoped and clipped)."""
        g = self.param_groups[0] if group is None else group
        return scope_of("gamma", g)(self.outer_steps)

    def _counters(self) -> dict[str, int]:
        return {"outer_steps": self.outer_steps, "inner_steps": self.inner_steps}

    def _load_counters(self, c: dict[str, Any]) -> None:
        self.outer_steps, self.inner_steps = int(c["outer_steps"]), int(c["inner_steps"])

    # --- the algorithm -----------------------------------------------------------------
    def _begin_outer(self) -> None:
        """y, z ← x; inner momentum reset (unless ``inner_momentum_buffer="kept"``)."""
        for group in self.param_groups:
            for p in self._params(group):
                st = self.state[p]
                if "x" not in st:
                    st["x"] = p.detach().clone()
                    st["z"] = p.detach().clone()
                else:
                    st["x"].copy_(p)
                    st["z"].copy_(p)
                if group["inner_momentum"] > 0:
                    if "inner_buf" not in st:
                        st["inner_buf"] = torch.zeros_like(p)
                    elif group["inner_momentum_buffer"] == "reset":
                        st["inner_buf"].zero_()

    def _inner_direction(self, group: dict, ys: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        """∇f_B(y) + wd·y through the inner momentum (SGD's convention). Overwrites ``grads``.

        As in the authors' Entropy-SGD code, momentum acts on the gradient of f only; the
        coupling pull and the thermal noise are added to the step unaccelerated (with
        ``inner_momentum_on="step"`` the caller has put the pull into ``grads``)."""
        if group["weight_decay"] > 0:
            torch._foreach_add_(grads, ys, alpha=group["weight_decay"])
        mu = group["inner_momentum"]
        if mu > 0:
            bufs = [self.state[p]["inner_buf"] for p in ys]
            torch._foreach_mul_(bufs, mu)
            torch._foreach_add_(bufs, grads)
            if group["inner_nesterov"]:
                torch._foreach_add_(grads, bufs, alpha=mu)
            else:
                grads = bufs
        return grads

    @torch.no_grad()
    def inner_loop(self, closure: Callable[[], Tensor], *, check_finite: bool = False) -> Tensor:
        """L Langevin steps from y = x; leaves x in ``state[p]["x"]``, z in ``state[p]["z"]``
        and y in the parameters. Returns the loss of the first closure call (at x).
        ``check_finite`` (``step``'s): a non-finite loss of any call, before its gradient is
        used, puts x back and raises :class:`~sgdlab.optim._common.NonFiniteLoss`."""
        require_closure(self, closure)
        check_finite = check_finite and not closure_checks_finite(closure)
        for g in self.param_groups:
            # a group's own (add_param_group takes it unchecked): a ConfigError naming it
            # here, not a "math domain error" from the noise √(2 η_y T) inside the loop
            for key in ("inner_lr", "noise"):
                group_number(g, key)
        self._begin_outer()
        gammas = [self.current_gamma(g) for g in self.param_groups]
        first = None
        stepped: set[int] = set()
        try:
            for _ in range(self.L):
                loss = inner_closure_loss(closure)
                if first is None:
                    first = loss
                if check_finite:
                    check_finite_loss(loss)
                stepped.update(k for k, p in enumerate(
                    p for g in self.param_groups for p in self._params(g)) if p.grad is not None)
                for group, gamma in zip(self.param_groups, gammas):
                    self._inner_group_step(group, gamma)
                self.inner_steps += 1
        except BaseException:
            # a closure that raises (non-finite loss, interrupt) ends the step untaken: the
            # parameters go back to x, not the Langevin iterate y they hold
            self.restore_x()
            raise
        self._stepped = stepped
        return first

    @torch.no_grad()
    def restore_x(self) -> None:
        """The parameters back to x (``state[p]["x"]``, where the step began) from the inner
        loop's y: a step left untaken (a closure that raised, a non-finite loss, a Parle round
        that diverged)."""
        for group in self.param_groups:
            for p in self._params(group):
                if "x" in self.state[p]:
                    p.copy_(self.state[p]["x"])

    def _inner_group_step(self, group: dict, gamma: float) -> None:
        """One inner step on ``group``'s parameters that have a gradient: the Langevin step of
        y and the average z (subclasses with another inner rule override this), by
        :func:`sgdlab.measure.entropy_gradient.langevin_step_`, the step the local-entropy
        gradient measurement takes."""
        ys = [p for p in self._params(group) if p.grad is not None]
        if not ys:
            return
        # nn.Embedding(sparse=True): a sparse gradient meets dense decay, pulls and moments
        grads = [dense(p.grad) for p in ys]
        xs = [self.state[p]["x"] for p in ys]
        if (group["inner_momentum_on"] == "step" and group["inner_momentum"] > 0
                and gamma < math.inf):
            # the pull γ⁻¹(y − x) joins the drift the momentum carries, so no separate pull
            # (a new list: the closure's .grad stays the mini-batch gradient)
            grads = torch._foreach_add(grads, torch._foreach_sub(ys, xs), alpha=1.0 / gamma)
            gamma = math.inf
        d = self._inner_direction(group, ys, grads)
        noise = group["noise"]
        # the generator is made on first use only: a noiseless run saves no generator state
        langevin_step_(ys, xs, [self.state[p]["z"] for p in ys],
                       d, lr=group["inner_lr"], gamma=gamma, alpha=group["alpha"],
                       temperature=noise, generator=self._rng(ys[0].device) if noise > 0 else None)

    def _outer_gradient(self, group: dict, p: Tensor, gamma: float,
                        master: Tensor | None) -> Tensor:
        """G = c (x − z), c = 1 (normalize) or γ⁻¹. Subclasses add coupling terms."""
        st = self.state[p]
        c = 1.0 if group["normalize"] else (0.0 if gamma == math.inf else 1.0 / gamma)
        return (st["x"] - st["z"]).mul_(c)

    @torch.no_grad()
    def outer_step(self, master: Sequence[Tensor] | None = None) -> None:
        """x ← x − η′ G (with outer momentum); writes x into the parameters.

        ``master`` (one tensor per parameter, in param_groups order) is only used by
        replica-coupled subclasses (Parle / Elastic-SGD). A parameter that had no gradient in
        the inner loop (frozen, or outside the loss) is skipped, as torch.optim.SGD skips a
        ``.grad`` of None: its momentum does not carry it on."""
        stepped, self._stepped = self._stepped, None
        k = 0
        for group in self.param_groups:
            gamma = self.current_gamma(group)
            for p in self._params(group):
                m = None if master is None else master[k]
                k += 1
                st = self.state[p]
                if "x" not in st or (stepped is not None and k - 1 not in stepped):
                    continue        # no gradient this step: p still holds x
                G = self._outer_gradient(group, p, gamma, m)
                if group["weight_decay_on"] == "both" and group["weight_decay"] > 0:
                    G.add_(st["x"], alpha=group["weight_decay"])    # λx, before the momentum
                G = self._outer_direction(group, p, G)
                base = self._outer_base(group, p)
                if base is not st["x"]:
                    st["x"].copy_(base)
                st["x"].add_(G, alpha=-group["lr"])
                p.copy_(st["x"])
        self.outer_steps += 1

    def _outer_direction(self, group: dict, p: Tensor, G: Tensor) -> Tensor:
        """The outer gradient through the outer momentum (subclasses: other rules)."""
        return momentum_direction(self.state[p], G, group)

    def _outer_base(self, group: dict, p: Tensor) -> Tensor:
        """Where the outer step starts: x (subclasses may start elsewhere)."""
        return self.state[p]["x"]

    def anchors(self) -> list[Tensor]:
        """The current x (one tensor per parameter, param_groups order); after
        ``outer_step`` this equals the parameters."""
        out = []
        for group in self.param_groups:
            for p in self._params(group):
                out.append(self.state[p]["x"] if "x" in self.state[p] else p.detach())
        return out

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """``inner_loop`` + ``outer_step``; the first closure call's loss, or the first
        non-finite one, whose step is not taken (the parameters stay at x)."""
        try:
            loss = self.inner_loop(closure, check_finite=True)
        except NonFiniteLoss as e:
            return e.loss
        self.outer_step()
        return loss


register_optimizer("entropy_sgd")(EntropySGD)


class EntropyAdam(EntropySGD):
    """Entropy-Adam (thesis §3.3.5): Adam on the local-entropy gradient.

    ``adam="outer"`` (default): "Entropy-Adam which is equivalent to Adam with the Local
    Entropy gradient (which is computed via SGLD)" — the inner loop is Entropy-SGD's SGLD
    loop and the outer step is Adam on G = (x − z) (``normalize``) or γ⁻¹(x − z):

        m ← β₁m + (1 − β₁)G;  v ← β₂v + (1 − β₂)G²;  x ← x − η′ m̂ / (√v̂ + eps)

    with bias-corrected m̂, v̂ (t = the outer steps that moved the parameter, as
    ``torch.optim.Adam`` counts them). The char-LSTM experiment uses η′ = 0.01
    (halved every epoch), γ = 100 fixed, L = 5 and β₁ = 0.5.

    ``adam="inner"``: §3.2.2 also mentions Adam in the inner loop ("we have used SGD with
    Nesterov's momentum and Adam for outer and inner loops"): the Langevin steps become
    y ← y − η_y γ⁻¹(y − x) − η_y m̂ / (√v̂ + eps) + √(2 η_y β⁻¹) ε with Adam moments of
    ∇f_B(y) + wd·y (the coupling pull and the noise are not preconditioned; the moments persist
    across outer steps, t = inner steps); the outer step is Entropy-SGD's.
    """

    _own_group_keys = ("betas",)  # a state saved before saved_by is told by it

    def __init__(self, params, lr: float = 0.01, *, adam: str = "outer",
                 inner_lr: float | None = None, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, **kw: Any):
        b1, b2 = betas
        _check(adam in ("outer", "inner"), f"Invalid adam: {adam!r} ('outer' or 'inner')")
        _check(0 <= b1 < 1 and 0 <= b2 < 1, f"Invalid betas: {betas}")
        _check(eps > 0, f"Invalid epsilon value: {eps}")
        if adam == "inner" and kw.get("inner_momentum", 0):
            raise ValueError("Entropy-Adam with adam='inner' has no inner_momentum (Adam's β₁ "
                             "plays that role)")
        if adam == "outer" and kw.get("momentum", 0):
            raise ValueError("Entropy-Adam with adam='outer' has no (outer) momentum (Adam's β₁ "
                             "plays that role)")
        if inner_lr is None:
            inner_lr = 0.1 if adam == "outer" else 1e-3
        super().__init__(params, lr, inner_lr=inner_lr,
                         _extra_defaults={"betas": tuple(betas), "eps": eps, "adam": adam},
                         **kw)

    @staticmethod
    def _adam(st: dict, d: Tensor, group: dict, t: int) -> Tensor:
        """Adam's step direction m̂ / (√v̂ + eps) for gradient ``d``. The bias correction
        counts this tensor's own updates (``st["step"]``), as ``torch.optim.Adam`` does, so a
        parameter that skipped steps (frozen for a while) starts from t = 1; ``t``, the
        optimizer's step (1-based), only seeds the count of a state saved without one."""
        b1, b2 = group["betas"]
        if "exp_avg" not in st:
            st["exp_avg"] = torch.zeros_like(d)
            st["exp_avg_sq"] = torch.zeros_like(d)
            st["step"] = 0
        st["step"] = t = int(st.get("step", t - 1)) + 1
        m, v = st["exp_avg"], st["exp_avg_sq"]
        m.mul_(b1).add_(d, alpha=1 - b1)
        v.mul_(b2).addcmul_(d, d, value=1 - b2)
        denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
        return (m / (1 - b1**t)).div_(denom)

    def _inner_direction(self, group: dict, ys: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        d = super()._inner_direction(group, ys, grads)
        if group["adam"] != "inner":
            return d
        t = self.inner_steps + 1
        return [self._adam(self.state[y], di, group, t) for y, di in zip(ys, d)]

    def _outer_direction(self, group: dict, p: Tensor, G: Tensor) -> Tensor:
        if group["adam"] != "outer":
            return super()._outer_direction(group, p, G)
        return self._adam(self.state[p], G, group, self.outer_steps + 1)


register_optimizer("entropy_adam")(EntropyAdam)
