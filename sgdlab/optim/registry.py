"""Optimizers by name, so configs and the CLI can build any of them.

Each optimizer module registers its class with ``@register_optimizer("name")``;
``build_optimizer(name, params, **hyper)`` then builds it. torch.optim's own SGD, Adam and
RMSprop are registered here. A name is matched as models' and datasets' are, case and ``-``
against ``_`` aside (``entropy-sgd`` is ``entropy_sgd``, ``cosine_cyclic`` is
``cosine-cyclic``); :func:`optimizer_name` and :func:`schedule_name` give the registered
spelling, the one run configs store.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from ..errors import did_you_mean, name_spelling, registered_spelling

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}


def _registrar(table: dict[str, Any], what: str, name: str):
    """A decorator that enters its argument in ``table`` under ``name`` (once)."""
    def deco(obj):
        if name in table and table[name] is not obj:
            raise ValueError(f"{what} name {name!r} registered twice")
        # names are looked up spelling-blind (_resolve): two names one spelling apart would
        # make that lookup ambiguous
        twin = [n for n in table if n != name and name_spelling(n) == name_spelling(name)]
        if twin:
            raise ValueError(f"{what} name {name!r} is another spelling of {twin[0]!r}")
        table[name] = obj
        return obj
    return deco


def _resolve(table: dict[str, Any], what: str, name: str) -> str:
    """The registered spelling of ``name`` in ``table``; ValueError for an unknown name."""
    if not isinstance(name, str):           # a list, a dict, None
        raise ValueError(f"{what} name must be a string, got {name!r}")
    key = registered_spelling(name, table)
    if key is None:
        raise ValueError(
            f"Unknown {what} {name!r}{did_you_mean(name, table)}; known: "
            f"{', '.join(sorted(table))}{not_an_optimizer(name) if what == 'optimizer' else ''}")
    return key


def not_an_optimizer(name: str) -> str:
    """Where a method the papers name that is no single optimizer lives, for an unknown
    optimizer ``name`` that names it ("" otherwise): build_optimizer's and a run config's."""
    low = name.lower()
    if "elastic" in low or low == "easgd":
        # thesis eq. (5.4): replicas coupled to their average, not one parameter set's step
        return ("; Elastic-SGD couples replicas: run it with sgdlab.train.train_replicas (or "
                "`sgdlab parle`) and ParleConfig(L=1, gamma=inf, alpha=0, inner_lr=1, "
                "momentum=0, outer_momentum=0)")
    return ""


def optimizer_name(name: str) -> str:
    """The registered spelling of optimizer ``name`` (``entropy_sgd`` for ``entropy-sgd``);
    ValueError naming the closest one for an unknown name."""
    return _resolve(OPTIMIZERS, "optimizer", name)


def schedule_name(name: str) -> str:
    """The registered spelling of schedule ``name`` (``cosine-cyclic`` for ``cosine_cyclic``)."""
    return _resolve(SCHEDULES, "schedule", name)


def _check_options(what: str, name: str, fn: Callable, given: dict[str, Any],
                   skip: tuple[str, ...]) -> None:
    """A misspelled argument of ``fn`` is a ValueError naming it (with the closest one and
    the list), not the bare TypeError of the call. ``fn`` taking ``**kwargs`` is not checked."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params if p.name not in skip and not p.name.startswith("_")
             and p.kind is not p.VAR_POSITIONAL]
    unknown = [k for k in given if k not in known]
    if unknown:
        raise ValueError(f"{what} {name!r} has no option {unknown[0]!r}"
                         f"{did_you_mean(unknown[0], known)}; its options: "
                         f"{', '.join(known) or '(none)'}")
    # a required option left out was the call's TypeError, naming a private factory
    # ("_polynomial_decay() missing 1 required keyword-only argument: 'power'")
    missing = [p.name for p in params if p.name in known and p.name not in given
               and p.default is p.empty]
    if missing:
        raise ValueError(f"{what} {name!r} requires {', '.join(f'{k}=' for k in missing)}; "
                         f"its options: {', '.join(known)}")


def register_optimizer(name: str):
    return _registrar(OPTIMIZERS, "optimizer", name)


def build_optimizer(name: str, params, **hyper: Any) -> torch.optim.Optimizer:
    name = optimizer_name(name)
    cls = OPTIMIZERS[name]
    _check_options("optimizer", name, cls.__init__ if inspect.isclass(cls) else cls, hyper,
                   ("self", "params"))
    return cls(params, **hyper)


def needs_model(cls) -> bool:
    """Optimizers that draw their own statistics (GLD noise, ...) declare ``needs_model = True``
    and accept ``model=``, ``loss_fn=``, ``data=`` keyword arguments."""
    return bool(getattr(cls, "needs_model", False))


def without_idle_options(name: str, hyper: dict[str, Any]) -> dict[str, Any]:
    """``hyper`` (an optimizer's keyword arguments) without the options that act only through
    another one which is off: an optimizer class declares them as ``idle_options = {option:
    through}`` (Entropy-SGD's ``inner_momentum_on`` carries nothing without an
    ``inner_momentum``), ``through`` read from ``hyper`` or else from the default of the
    first ``__init__`` up the class's MRO that names it. The optimizer built from either
    steps the same, bit for bit: an experiment's run key is computed from this form, so that
    one run is not trained twice under two keys (docs/GUIDE.md, readings). An unknown name,
    or an optimizer declaring none, leaves ``hyper`` as it is."""
    cls = OPTIMIZERS.get(registered_spelling(name, OPTIMIZERS) or "")
    idle = getattr(cls, "idle_options", None)
    if not idle:
        return hyper
    out = dict(hyper)
    for option, through in idle.items():
        if option in out and not hyper.get(through, _init_default(cls, through)):
            del out[option]
    return out


def _init_default(cls: type, name: str) -> Any:
    """The default of ``name`` in the first ``__init__`` of ``cls``'s MRO that has it (a
    subclass passing ``**kw`` on, as Entropy-Adam does, takes its parent's); None if none."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            p = inspect.signature(klass.__init__).parameters.get(name)
            if p is not None and p.default is not p.empty:
                return p.default
    return None


def build_optimizer_for(name: str, model, *, loss_fn=None, data=None, **hyper: Any):
    """Build optimizer ``name`` over ``model``'s trainable parameters, passing the model,
    loss and estimation data to optimizers that need them."""
    cls = OPTIMIZERS.get(registered_spelling(name, OPTIMIZERS) or "")
    if cls is not None and needs_model(cls):
        hyper = {"model": model, "loss_fn": loss_fn, "data": data, **hyper}
    params = [p for p in model.parameters() if p.requires_grad]
    return build_optimizer(name, params, **hyper)


# --- step-size / learning-rate schedules -------------------------------------------------
# A schedule is built as ``build_schedule(name, optimizer, steps_per_epoch=..., total_steps=...,
# **hyper)`` and stepped once per optimizer step by the training loop. It must offer
# ``step()``, ``state_dict()`` and ``load_state_dict()`` (any torch LRScheduler does).

SCHEDULES: dict[str, Callable[..., Any]] = {}


def register_schedule(name: str):
    return _registrar(SCHEDULES, "schedule", name)


def build_schedule(name: str, optimizer, *, steps_per_epoch: int, total_steps: int, **hyper: Any):
    name = schedule_name(name)
    factory = SCHEDULES[name]
    _check_options("schedule", name, factory, hyper,
                   ("optimizer", "steps_per_epoch", "total_steps"))
    return factory(optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps, **hyper)
