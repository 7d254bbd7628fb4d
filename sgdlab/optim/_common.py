"""Small pieces shared by several optimizers of :mod:`sgdlab.optim` (private)."""
from __future__ import annotations

import functools
import inspect
import math
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from ..errors import (ConfigError, checked_float, finite_number, plain_float,
                      registered_spelling)
from .registry import OPTIMIZERS


def closure_loss(closure: Callable[[], Tensor] | None) -> Tensor | None:
    """``closure()`` with gradients enabled (inside an optimizer's ``no_grad`` step), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def inner_closure_loss(closure: Callable[[], Tensor]) -> Tensor:
    """One of the closure calls of a step that calls it several times (``needs_closure``),
    with gradients enabled. torch.autocast keeps its low-precision casts of the parameters
    until its outermost region ends: in a region around ``step`` the forward passes would
    read the casts of the point where the step began, not the parameters the inner steps
    have moved in place since, so the cache is emptied before each call."""
    torch.clear_autocast_cache()
    with torch.enable_grad():
        return closure()


class NonFiniteLoss(Exception):
    """Raised inside the step of an optimizer that calls its closure several times when one
    call's loss is not finite (:func:`check_finite_loss`); the step puts the parameters back
    where it began and returns ``loss``, untaken (private: it never leaves ``step``)."""

    def __init__(self, loss):
        super().__init__(f"non-finite loss {loss}")
        self.loss = loss


def check_finite_loss(loss) -> None:
    """:class:`NonFiniteLoss` unless ``loss`` (a closure's return) is finite. Used by the
    ``step`` of the optimizers that call their closure several times a step: the caller sees
    only the first call's loss (torch.optim.LBFGS's convention), so a NaN at a later call would
    reach the parameters and the persistent state (momentum, Adam moments) behind a finite
    returned loss; a step that stops there returns the non-finite loss instead. One device
    sync per call, left out for a closure that checks itself (:func:`closure_checks_finite`)."""
    if isinstance(loss, Tensor):
        if loss.device.type == "meta":      # no values (a dry run on meta parameters)
            return
        finite = bool(torch.isfinite(loss.detach()).all())
    else:
        try:
            finite = math.isfinite(float(loss))
        except (TypeError, ValueError):     # not a number: nothing to check
            return
    if not finite:
        raise NonFiniteLoss(loss)


def closure_checks_finite(closure) -> bool:
    """Whether ``closure`` raises on a non-finite loss itself, which it says with a true
    ``checks_finite_loss`` attribute (sgdlab's training loop's closure reads each loss on the
    host before its backward pass and raises). :func:`check_finite_loss` is then left out: on
    a GPU it is one more sync per call, one that waits for the queued backward pass."""
    return bool(getattr(closure, "checks_finite_loss", False))


def dense(t: Tensor) -> Tensor:
    """``t``, densified if sparse: ``nn.Embedding(sparse=True)`` gives sparse gradients, which
    meet dense noise, decay, momentum and statistics in the optimizers' steps."""
    return t.to_dense() if t.is_sparse else t


def require_closure(optimizer, closure: Callable[[], Tensor] | None) -> None:
    """The check that opens the step of an optimizer that calls its closure several times a
    step (``needs_closure``): a ValueError naming it and what the closure must do when there
    is none, or when ``torch.amp.GradScaler.step`` calls it (the scaler marks the optimizer
    with ``grad_scale`` because such optimizers declare ``_step_supports_amp_scaling``): the
    scaler unscales the gradients present before the step, not those of the closure's later
    calls, which would be stepped multiplied by the scale."""
    name = type(optimizer).__name__
    if "grad_scale" in vars(optimizer):
        # the scaler deletes its marks only after a step that returns
        vars(optimizer).pop("grad_scale")
        vars(optimizer).pop("found_inf", None)
        raise ValueError(
            f"{name} takes no torch.amp.GradScaler: its step calls the closure for new "
            "gradients, which the scaler cannot unscale; train in float32, or under "
            "torch.autocast(dtype=torch.bfloat16), which needs no scaler")
    if closure is None:
        raise ValueError(f"{name} needs a closure that draws a new mini-batch and recomputes "
                         "the loss and gradients: step(closure)")


def refuse_meta(optimizer, devices, why: str) -> None:
    """A ValueError naming ``optimizer`` and ``why`` if one of ``devices`` (the parameters')
    is the meta device (shapes without values): torch.optim.SGD steps such parameters (a
    dry run), but a torch.Generator or a measured statistic needs numbers, and torch's own
    errors there ("META device type not an accelerator", "unsupported scalarType") do not
    say so."""
    if any(torch.device(d).type == "meta" for d in devices):
        raise ValueError(f"{type(optimizer).__name__} cannot step parameters on the meta "
                         f"device ({why}); materialize them first, e.g. "
                         "model.to_empty(device=...) and an initialization")


def seeded_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed``, by default with ``torch.initial_seed()`` (the run's
    seed, so runs seeded differently draw differently)."""
    return torch.Generator().manual_seed(int(torch.initial_seed() if seed is None else seed))


def is_whole(value) -> bool:
    """``value`` is a whole number (``3``, or ``3.0`` as a config may write it): False for
    nan, inf, 2.5, a string or None, so the caller's ValueError names the argument."""
    try:
        return int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False


def check_plain_optimizer(role: str, name: str, exclude: tuple[str, ...]) -> None:
    """``name`` must be registered, not in ``exclude`` and a plain optimizer (no model, no
    closure), as the inner optimizer of a wrapper; ValueError naming ``role`` otherwise.
    ``name`` is matched in either spelling (``-`` or ``_``), as build_optimizer matches it."""
    key = registered_spelling(name, OPTIMIZERS)
    if key is None or key in exclude:
        raise ValueError(f"Invalid {role} optimizer {name!r}; known: "
                         f"{', '.join(sorted(OPTIMIZERS))}")
    cls = OPTIMIZERS[key]
    if getattr(cls, "needs_model", False) or getattr(cls, "needs_closure", False):
        raise ValueError(f"Invalid {role} optimizer {name!r}: must be a plain optimizer")


def check_real_parameters(optimizer, why: str) -> None:
    """After ``add_param_group``: a ValueError naming a complex parameter of the group just
    added, which is removed again. ``why``: what of the optimizer is defined on real
    coordinates (its noise, its statistics). torch.optim's optimizers read a complex
    parameter as the pairs of its real and imaginary parts; a noise drawn in its complex
    dtype has half the variance in each, and the statistics of sgdlab's per-sample gradients
    and curvature are real."""
    for p in optimizer.param_groups[-1]["params"]:
        if p.is_complex():
            optimizer.param_groups.pop()
            raise ValueError(
                f"{type(optimizer).__name__} takes real parameters: one of shape "
                f"{tuple(p.shape)} is {p.dtype} ({why}); hold its real and imaginary parts as "
                "one real parameter (torch.view_as_real)")


def momentum_direction(state: dict, g: Tensor, group: dict) -> Tensor:
    """``g`` through heavy-ball / Nesterov momentum (torch.optim.SGD's convention, no
    dampening; the buffer ``state["momentum_buffer"]`` starts at g); ``g`` if momentum is 0."""
    mu = group["momentum"]
    if mu > 0:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = g.clone()
        else:
            buf.mul_(mu).add_(g)
        g = g.add(buf, alpha=mu) if group["nesterov"] else buf
    return g


#: the registered optimizers whose step divides the gradient by a running root mean square
PRECONDITIONED = ("adam", "adamw", "rmsprop", "rmsprop-eq15", "entropy_adam")


def preconditioned_optimizer(group: dict) -> str | None:
    """The registered name of the optimizer whose parameter group (also of a state dict) or
    config ``group`` is, where its step along mini-batch gradients is not lr times the
    gradient (or a momentum buffer of them) but divides each coordinate by a running root
    mean square (:data:`PRECONDITIONED`; Entropy-Adam only with Adam in its inner loop,
    ``adam="inner"``); None otherwise. Told by the group's keys, as torch writes them."""
    name = registered_spelling(group.get("name"), OPTIMIZERS)
    if name is None:
        if "adam" in group:                         # Entropy-Adam's own key
            name = "entropy_adam"
        elif "betas" in group:
            name = "adamw" if group.get("decoupled_weight_decay") else "adam"
        elif {"alpha", "centered"} <= group.keys():
            name = "rmsprop"
        elif {"rho", "delta"} <= group.keys():
            name = "rmsprop-eq15"
    if name == "entropy_adam" and group.get("adam", "outer") == "outer":
        return None                     # its steps along gradients: the SGLD loop's η_y
    return name if name in PRECONDITIONED else None


def _schedule_width(schedule: Any) -> float | None:
    """The width w of the ``random`` schedule, given as the schedule or its ``state_dict``
    (a checkpoint's); None for another schedule or none."""
    # imported here: protocols builds on this module
    from .protocols import RandomLR
    if isinstance(schedule, RandomLR):
        return schedule.width
    if isinstance(schedule, dict) and schedule.get("name") == RandomLR.name:
        width = plain_float(schedule.get("width"))
        if not (finite_number(width) and 0 <= width <= 1):
            raise ConfigError(f"the random schedule's width must be a number in [0, 1] (its "
                              f"state_dict's, as RandomLR takes it), got {width!r}")
        return float(width)
    return None


def group_number(group: dict, key: str) -> float:
    """``group[key]`` (a step size, a momentum) as a float: a finite number >= 0, a
    one-element tensor too (torch's groups may hold one), else a ConfigError naming the key
    and the value (a string was read as its number, NaN and a negative step passed on)."""
    v = group[key]
    if isinstance(v, Tensor) and v.numel() == 1:
        v = v.item()
    return checked_float(key, v, 0.0, " (of the optimizer's parameter group)",
                         error=ConfigError)


def gradient_step_size(group: dict, schedule: Any = None, every: str = "step") -> float:
    """The step size along mini-batch gradients of an optimizer's parameter group: ``lr``,
    except for the optimizers that take those steps in an inner loop (Entropy-SGD, the HJ and
    heat smoothers: ``inner_lr``, η_y), whose ``lr`` is the outer step η′ towards the inner
    average, and for a step α·l drawn anew each step: the constant step with the same drift
    and diffusion, l⟨α²⟩/⟨α⟩. ``random-lr-sgd`` draws α itself
    (:func:`sgdlab.optim.random_lr.noise_equivalent_lr`); the ``random`` schedule
    (:class:`sgdlab.optim.protocols.RandomLR`, given as ``schedule`` where it is stepped after
    each optimizer step, or its ``state_dict``, as a checkpoint holds it) writes η·α, α ~
    U[1 − w, 1 + w], into ``lr``: its step is η(1 + w²/3) from the group's ``initial_lr`` η
    (times random-lr-sgd's own ratio, an independent draw); stepped at epoch ends
    (``every="epoch"``, the loop's ``schedule_every``) its draw holds for the epoch, the
    current ``lr``. With momentum that draw scales
    the whole update: a ConfigError (a ValueError). Another schedule leaves the current
    ``lr`` the step. An optimizer whose step is no multiple of the gradient
    (:func:`preconditioned_optimizer`: Adam, AdamW, RMSprop) has none: a ConfigError naming
    it (the ``batch_statistics`` instrument and ``sgdlab measure --what batch`` ask
    :func:`preconditioned_optimizer` first and leave CABS out; the ``noise_magnitude``
    instrument refuses such a run, and skips such a phase of ``switch``). ``group``: a
    parameter group (also of a state dict; ``switch`` and ``trivialized`` share their inner
    optimizer's: ``switch``'s active one) or an optimizer's config (``name``). SGD-noise
    measurements that scale with the step (CABS, the noise magnitude) take this one. A rate
    or momentum that is no finite number >= 0, a width outside [0, 1] or an ``every`` other
    than ``"step"`` and ``"epoch"`` is a ConfigError naming it."""
    if not isinstance(group, dict):
        raise ConfigError(f"group must be an optimizer's parameter group or config (a dict "
                          f"with 'lr'), got {type(group).__name__}")
    if every not in ("step", "epoch"):        # another word was read as "epoch"
        raise ConfigError(f"every must be 'step' or 'epoch' (the training loop's "
                          f"schedule_every), got {every!r}")
    adaptive = preconditioned_optimizer(group)
    if adaptive is not None:
        raise ConfigError(
            f"optimizer {adaptive}: its step divides each coordinate of the gradient by a "
            "running root mean square, so it is not a step size times the gradient, and CABS "
            "(Balles et al., derived for plain SGD) and the noise magnitude sqrt(η Tr Σ / m) "
            "(the diffusion of SGD's SDE, Zhu et al. eq. 5) have no η for it; measure a run "
            "of sgd (or random-lr-sgd), or take Tr Σ alone (the noise instrument, sgdlab "
            "measure --what noise; batch_statistics measures all but CABS)")
    if "inner_lr" in group:
        return group_number(group, "inner_lr")      # a schedule moves lr, the outer step
    width = _schedule_width(schedule) if every == "step" else None
    if width is not None:
        if "momentum" in group and group_number(group, "momentum") > 0:
            raise ConfigError(
                f"the random schedule with momentum {group['momentum']}: its draw scales the "
                "whole step, momentum buffer included, so no constant SGD step with the same "
                "noise is given here; the noise measurements take one at momentum 0 (or use "
                "the optimizer random-lr-sgd, whose α multiplies each new gradient)")
        # a group the schedule has not written yet holds its base rate
        base = group.get("initial_lr", group["lr"])
        return gradient_step_size({**group, "lr": base}) * (1 + width**2 / 3)
    named = registered_spelling(group.get("name"), OPTIMIZERS) == "random-lr-sgd"
    if named or {"convention", "multiply"} <= group.keys():
        # imported here: random_lr builds on this module
        from .random_lr import noise_equivalent_lr
        return noise_equivalent_lr(group)
    return group_number(group, "lr")


_HOOK_TABLES = ("_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
                "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks")


@contextmanager
def _hooks_held(optimizer):
    """The optimizer's four state-dict hook tables emptied for the body: torch's own
    ``state_dict`` / ``load_state_dict`` that a body calls (and a decorated body of a parent
    class) would run them a second time."""
    held = {name: getattr(optimizer, name) for name in _HOOK_TABLES}
    for name in _HOOK_TABLES:
        setattr(optimizer, name, OrderedDict())
    try:
        yield
    finally:
        for name, table in held.items():
            setattr(optimizer, name, table)


def runs_state_dict_hooks(body: Callable) -> Callable:
    """An optimizer's own ``state_dict`` or ``load_state_dict`` (by the name of ``body``) that
    runs the hooks registered with ``register_state_dict_pre_hook`` and the other three as
    ``torch.optim.Optimizer``'s do, around the whole of ``body``: ``state_dict``: the
    pre-hooks, ``body``, then the post-hooks on its dict (a dict one returns replaces it);
    ``load_state_dict``: the pre-hooks on a shallow copy of the dict given (a dict one returns
    is loaded instead), ``body`` on it, then the post-hooks. Inside ``body`` no hook runs, so
    it may build on torch's methods or on a parent's decorated one."""
    if body.__name__ == "state_dict":
        @functools.wraps(body)
        def state_dict(self):
            for hook in self._optimizer_state_dict_pre_hooks.values():
                hook(self)
            with _hooks_held(self):
                sd = body(self)
            for hook in self._optimizer_state_dict_post_hooks.values():
                out = hook(self, sd)
                sd = sd if out is None else out
            return sd
        return state_dict
    if body.__name__ == "load_state_dict":
        @functools.wraps(body)
        def load_state_dict(self, state_dict):
            state_dict = state_dict.copy()       # torch's: the hooks may edit it in place
            for hook in self._optimizer_load_state_dict_pre_hooks.values():
                out = hook(self, state_dict)
                state_dict = state_dict if out is None else out
            with _hooks_held(self):
                body(self, state_dict)
            for hook in self._optimizer_load_state_dict_post_hooks.values():
                hook(self)
        return load_state_dict
    raise ValueError(f"runs_state_dict_hooks wraps state_dict or load_state_dict, "
                     f"not {body.__name__!r}")


_ALL_HOOK_TABLES = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks", *_HOOK_TABLES)


class PicklesWhole:
    """Mixin (before ``torch.optim.Optimizer`` in the bases) for an optimizer that keeps
    attributes beside ``defaults``, ``state`` and ``param_groups`` (generators, step counts,
    an inner optimizer), the three that ``Optimizer.__getstate__`` keeps: ``copy.deepcopy``
    and ``pickle`` keep them all, and drop the hooks as torch does, and the ``step`` that an
    LR scheduler puts on the instance (it steps the optimizer it was made for, through a
    weak reference: a copy's step would move the original's parameters). A subclass whose
    attributes hold ``id()``s of its parameters maps them in its own ``__getstate__``."""

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items()
                if k not in _ALL_HOOK_TABLES and k not in ("step", "_opt_called")}

    def add_param_group(self, param_group: dict) -> None:
        refuse_optimizer_level_keys(self, param_group)
        super().add_param_group(param_group)  # type: ignore[misc]


def refuse_optimizer_level_keys(optimizer, param_group: dict) -> None:
    """A ValueError for a key of ``param_group`` that is an argument of the optimizer's
    constructor held outside the groups (a seed, GLD's ``sigma``, a switch's ``first``):
    torch keeps any key in a group without a word, so a group given its own ``sigma``
    stepped with the optimizer's."""
    own = optimizer_level_options(type(optimizer)) - set(optimizer.defaults)
    for key in param_group:
        if key in own:
            name = type(optimizer).__name__
            takes = ", ".join(sorted(optimizer.defaults))
            raise ValueError(
                f"{name}'s {key!r} is a setting of the whole optimizer, not of a parameter "
                f"group: give it to {name}(...)" + (f"; a group takes {takes}" if takes else ""))


@functools.lru_cache(maxsize=None)
def optimizer_level_options(cls) -> frozenset:
    """The keyword arguments of ``cls``'s constructor and those of the classes it passes its
    ``**kw`` on to (its bases up to torch's Optimizer), less ``params`` and private ones."""
    names = set()
    for klass in cls.__mro__:
        if klass is torch.optim.Optimizer:
            break
        init = vars(klass).get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and \
                    p.name not in ("self", "params") and not p.name.startswith("_"):
                names.add(p.name)
    return frozenset(names)
