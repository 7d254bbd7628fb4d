"""Optimizers by name, so configs and the CLI can build any of them.

Each optimizer module registers its class with ``@register_optimizer("name")``;
``build_optimizer(name, params, **hyper)`` then builds it. torch.optim's own SGD, Adam and
RMSprop are registered here.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

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
        table[name] = obj
        return obj
    return deco


def _lookup(table: dict[str, Any], what: str, name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise ValueError(
            f"Unknown {what} {name!r}; known: {', '.join(sorted(table))}"
        ) from None


def register_optimizer(name: str):
    return _registrar(OPTIMIZERS, "optimizer", name)


def build_optimizer(name: str, params, **hyper: Any) -> torch.optim.Optimizer:
    return _lookup(OPTIMIZERS, "optimizer", name)(params, **hyper)


def needs_model(cls) -> bool:
    """Optimizers that draw their own statistics (GLD noise, ...) declare ``needs_model = True``
    and accept ``model=``, ``loss_fn=``, ``data=`` keyword arguments."""
    return bool(getattr(cls, "needs_model", False))


def build_optimizer_for(name: str, model, *, loss_fn=None, data=None, **hyper: Any):
    """Build optimizer ``name`` over ``model``'s trainable parameters, passing the model,
    loss and estimation data to optimizers that need them."""
    cls = OPTIMIZERS.get(name)
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
    factory = _lookup(SCHEDULES, "schedule", name)
    return factory(optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps, **hyper)
