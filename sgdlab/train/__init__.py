"""Training: the loop, callbacks, checkpoints, and instruments buildable by name."""
from .callbacks import Callback, MeasurementCallback, Schedule, TrainContext
from .checkpoint import load_checkpoint, save_checkpoint
from .loop import RunResult, evaluate, steps_per_epoch, train

__all__ = ["Callback", "MeasurementCallback", "RunResult", "Schedule", "TrainContext",
           "evaluate", "load_checkpoint", "save_checkpoint", "steps_per_epoch", "train"]
