"""Training: the loop, callbacks, checkpoints, and instruments buildable by name."""
from .callbacks import Callback, MeasurementCallback, Schedule, TrainContext
from .checkpoint import load_checkpoint, save_checkpoint
from .loop import RunResult, evaluate, steps_per_epoch, train

__all__ = ["Callback", "MeasurementCallback", "RunResult", "Schedule", "TrainContext",
           "ParleConfig", "build_instrument", "evaluate", "load_checkpoint", "save_checkpoint",
           "steps_per_epoch", "train", "train_replicas"]


def __getattr__(name: str):
    # `from sgdlab.train import train, build_instrument`: the instruments' package (and the
    # measurements it registers) is imported when first asked for, not with the loop
    if name == "build_instrument":
        from .instruments import build_instrument

        return build_instrument
    # Elastic-SGD and Parle in one process (or distributed), beside train(); imported when
    # asked for, so that a plain training run loads no replica machinery
    if name in ("train_replicas", "ParleConfig"):
        from . import replicas

        return getattr(replicas, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
