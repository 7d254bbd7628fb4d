"""Instruments: callbacks buildable by name, so run configs can ask for them.

An instrument module ``sgdlab/train/instruments/<area>.py`` registers a factory::

    @register_instrument("grad_norm")
    def grad_norm(*, schedule: Schedule, every_sample: bool = False) -> Callback: ...

The factory takes the keyword ``schedule`` (a :class:`~sgdlab.train.callbacks.Schedule` on
steps) plus its own keyword-only parameters, and returns a
:class:`~sgdlab.train.callbacks.Callback`, checking its options' values (``check_options``)
and doing nothing else: an experiment builds each run's instruments once when it is loaded,
so that a bad value stops it before any run trains (files are opened in ``on_train_begin``).
A config's ``measure`` list then names it::

    measure:
      - {name: grad_norm, every: 10}            # or at: [0, 100], or log_points: 20

Every module in this package is imported on first use of :data:`INSTRUMENTS` through
:func:`instruments` / :func:`build_instrument`.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

from ..callbacks import Callback, Schedule

InstrumentFactory = Callable[..., Callback]

#: name -> factory ``(*, schedule, **params) -> Callback``.
INSTRUMENTS: dict[str, InstrumentFactory] = {}
_loaded = False


def register_instrument(name: str) -> Callable[[InstrumentFactory], InstrumentFactory]:
    def deco(factory: InstrumentFactory) -> InstrumentFactory:
        if name in INSTRUMENTS and INSTRUMENTS[name] is not factory:
            raise ValueError(f"instrument name {name!r} registered twice")
        INSTRUMENTS[name] = factory
        return factory
    return deco


def instruments() -> dict[str, InstrumentFactory]:
    """The registry, after importing every instrument module of this package."""
    global _loaded
    if not _loaded:
        for m in pkgutil.iter_modules(__path__):
            if not m.name.startswith("_"):
                importlib.import_module(f"{__name__}.{m.name}")
        _loaded = True
    return INSTRUMENTS


def instrument_params(name: str) -> dict[str, Any] | None:
    """``{param: default}`` a factory accepts besides ``schedule`` (``inspect.Parameter.empty``
    when required); None when it takes ``**kwargs``."""
    sig = inspect.signature(instruments()[name])
    params: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if p.name != "schedule" and p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                               inspect.Parameter.POSITIONAL_OR_KEYWORD):
            params[p.name] = p.default
    return params


def build_instrument(name: str, *, schedule: Schedule | None = None, every: int | None = None,
                     start: int = 0, at: Any = None, **params: Any) -> Callback:
    """The instrument ``name`` with its options ``params``, run on ``schedule`` or, as a run
    config's ``measure`` entry spells it, every ``every`` steps from ``start`` or at the steps
    ``at``: ``build_instrument("hessian", every=8, k=2)``. ``instrument_params(name)`` lists
    the options with their defaults (``help(instruments()[name])`` says what each logs)."""
    from sgdlab.errors import did_you_mean

    # the name first: a misspelt name without a schedule was told only of the schedule
    registry = instruments()
    if name not in registry:
        raise ValueError(f"Unknown instrument {name!r}{did_you_mean(name, registry)}; known: "
                         f"{', '.join(sorted(registry))}")
    # the options before the schedule: a misspelt every= (evry=5) was told of no schedule
    known = instrument_params(name)
    if "log_points" in params and (known is None or "log_points" not in known):
        # a run config's key (README: "each takes every, start, at or log_points")
        raise ValueError(f"instrument {name!r}: log_points is a run config's key; from Python "
                         "give schedule=Schedule.log_spaced(log_points, total_steps) "
                         "(sgdlab.train.Schedule)")
    unknown = [k for k in params if known is not None and k not in known]
    cadence = getattr(registry[name], "own_cadence", None)
    if unknown:
        cadence_keys = () if cadence else ("schedule", "every", "start", "at")
        raise ValueError(f"instrument {name!r} has no option {unknown[0]!r}"
                         f"{did_you_mean(unknown[0], [*known, *cadence_keys])}; its options: "
                         f"{', '.join(sorted(known))}"
                         + ("; its schedule: every, start, at or schedule" if cadence_keys
                            else ""))
    # a required option left out was Python's TypeError, naming the factory
    # ("entropy_angle_instrument() missing ... 'gamma'") rather than the instrument
    missing = [k for k, v in (known or {}).items()
               if v is inspect.Parameter.empty and k not in params]
    if missing:
        raise ValueError(f"instrument {name!r} requires {', '.join(f'{k}=' for k in missing)}; "
                         f"its options: {', '.join(sorted(known))} "
                         f"(help(instruments()[{name!r}]) says what each is)")
    if cadence and (every is not None or at is not None):
        raise ValueError(f"instrument {name!r} keeps its own cadence ({cadence}); "
                         f"{'every' if every is not None else 'at'} would be ignored")
    if cadence and schedule is None:
        # "trajectory" records by every_steps / every_epochs: a step schedule was demanded
        # and then ignored
        schedule = Schedule.never()
    schedule = Schedule.given(f"instrument {name!r}", schedule, every, start, at)
    cb = registry[name](schedule=schedule, **params)
    cb.instrument = name  # named in its errors
    return cb


__all__ = ["INSTRUMENTS", "build_instrument", "instrument_params", "instruments",
           "register_instrument"]
