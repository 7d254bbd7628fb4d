"""Optimizers (torch.optim contract) and step-size protocols, buildable by name."""
import importlib as _importlib
import pkgutil as _pkgutil

from ._common import gradient_step_size, preconditioned_optimizer
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

# The classes too, as torch.optim exports its own: `from sgdlab.optim import EntropySGD`.
from .elastic import Parle  # noqa: E402
from .entropy_sgd import EntropyAdam, EntropySGD  # noqa: E402
from .gld import (  # noqa: E402
    GD,
    GLDConst,
    GLDDiagonal,
    GLDDynamic,
    GLDHessian,
    GLDLeading,
    GLDSGDLike,
    IsotropicNoiseGD,
    StructuredNoiseGD,
)
from .random_lr import RandomLRSGD  # noqa: E402
from .rmsprop_eq15 import RMSPropEq15  # noqa: E402
from .sgld import SGLD  # noqa: E402
from .smoothing import HEAT, HJ  # noqa: E402
from .switch import SwitchOptimizer  # noqa: E402
from .trivialized import AnnealedNoiseSGD, TrivializedSGD  # noqa: E402

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_optimizer_for",
           "build_schedule", "gradient_step_size", "optimizer_name",
           "preconditioned_optimizer", "register_optimizer", "register_schedule", "schedule_name",
           "AnnealedNoiseSGD", "EntropyAdam", "EntropySGD", "GD", "GLDConst", "GLDDiagonal",
           "GLDDynamic", "GLDHessian", "GLDLeading", "GLDSGDLike", "HEAT", "HJ",
           "IsotropicNoiseGD", "Parle", "RandomLRSGD", "RMSPropEq15", "SGLD", "StructuredNoiseGD",
           "SwitchOptimizer", "TrivializedSGD"]
