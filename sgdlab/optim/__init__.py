"""Optimizers (torch.optim contract) and step-size protocols, buildable by name."""
import importlib as _importlib
import pkgutil as _pkgutil

from ._common import gradient_step_size
from .registry import (
    OPTIMIZERS,
    SCHEDULES,
    build_optimizer,
    build_optimizer_for,
    build_schedule,
    optimizer_name,
    register_optimizer,
    register_schedule,
    schedule_name,
)

# Every module in this package registers its optimizers/schedules on import.
for _m in _pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_") and _m.name != "registry":
        _importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_optimizer_for",
           "build_schedule", "gradient_step_size", "optimizer_name", "register_optimizer",
           "register_schedule", "schedule_name"]
