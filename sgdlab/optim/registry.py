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


def register_optimizer(name: str):
    def deco(cls):
        if name in OPTIMIZERS and OPTIMIZERS[name] is not cls:
            raise ValueError(f"optimizer name {name!r} registered twice")
        OPTIMIZERS[name] = cls
        return cls
    return deco


def build_optimizer(name: str, params, **hyper: Any) -> torch.optim.Optimizer:
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}"
        ) from None
    return cls(params, **hyper)


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
    def deco(factory):
        if name in SCHEDULES and SCHEDULES[name] is not factory:
            raise ValueError(f"schedule name {name!r} registered twice")
        SCHEDULES[name] = factory
        return factory
    return deco


@register_schedule("constant")
def _constant(optimizer, *, steps_per_epoch: int = 1, total_steps: int = 1):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def build_schedule(name: str, optimizer, *, steps_per_epoch: int, total_steps: int, **hyper: Any):
    try:
        factory = SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"Unknown schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}"
        ) from None
    return factory(optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps, **hyper)
