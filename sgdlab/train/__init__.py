from .callbacks import Callback, MeasurementCallback, Schedule, TrainContext
