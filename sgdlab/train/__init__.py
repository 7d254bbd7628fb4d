"""Training: the loop, callbacks, checkpoints, and instruments buildable by name."""
from .callbacks import Callback, MeasurementCallback, Schedule, TrainContext
from .checkpoint import load_checkpoint, save_checkpoint
from .loop import RunResult, evaluate, steps_per_epoch, train

__all__ = ["Callback", "MeasurementCallback", "RunResult", "Schedule", "TrainContext",
           "build_instrument", "evaluate", "load_checkpoint", "save_checkpoint",
           "steps_per_epoch", "train"]


def __getattr__(name: str):
    # `from sgdlab.train import train, build_instrument`: the instruments' package (and the
    # measurements it registers) is imported when first asked for, not with the loop
    if name == "build_instrument":
        from .instruments import build_instrument

        return build_instrument
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
