"""Record the weight trajectory to disk (:mod:`sgdlab.store.trajectory`) during training.

:class:`TrajectoryRecorder` appends a snapshot of the flat trainable parameters (or a fixed
random subset of ``num_coords`` coordinates) at step 0, then every ``every_steps`` optimizer
steps and/or every ``every_epochs`` epochs. Its ``state_dict`` holds the number of rows written,
so a run resumed from a checkpoint first truncates the file to that many rows: snapshots written
after the checkpoint are not duplicated. Spectra: :mod:`sgdlab.measure.trajectory`; they take
the rows as a series at equal time steps, so record by one cadence for them (``every_steps``
with ``every_epochs=None``, or ``every_epochs`` alone): the rows of both are not evenly spaced.
"""
from __future__ import annotations

import os
from typing import Any

from sgdlab.errors import RUN_SEED_RULE, checked_int_argument, is_seed, plain_int
from sgdlab.operators.params import num_params, params_vector
from sgdlab.store.trajectory import _DTYPES, TrajectoryWriter

from ..callbacks import Callback, Schedule, TrainContext
from . import register_instrument
from .curvature import check_options

__all__ = ["TrajectoryRecorder", "trajectory_instrument"]


class TrajectoryRecorder(Callback):
    """Snapshot the weights to ``path`` (a directory) every k steps and/or every epoch.

    Args:
        path: trajectory directory (created; an existing one is resumed).
        every_steps: snapshot when the step count is a multiple of this (None: not by steps).
        every_epochs: snapshot at the end of every this many epochs (None: not by epochs).
        num_coords: record only a fixed random subset of this many coordinates (seeded).
        dtype: "float32" (default), "float16" or "float64" on disk.
    """

    def __init__(self, path: str | os.PathLike, *, every_steps: int | None = None,
                 every_epochs: int | None = 1, num_coords: int | None = None, seed: int = 0,
                 dtype: str = "float32"):
        if every_steps is None and every_epochs is None:
            raise ValueError("TrajectoryRecorder needs every_steps or every_epochs")
        # numpy's and torch's ints are counts and seeds (np.int64(3) from a grid), kept as
        # Python ints: the seed is written to the trajectory's meta.json
        every_steps, every_epochs = (
            checked_int_argument(name, v, 1, ", or None", optional=True)
            for name, v in (("every_steps", every_steps), ("every_epochs", every_epochs)))
        num_coords = checked_int_argument("num_coords", num_coords, 1, ", or None: all",
                                          optional=True)
        seed = plain_int(seed)
        check_options(dtype=(dtype, dtype in _DTYPES, f"one of {', '.join(_DTYPES)}"),
                      # a negative seed was taken, then failed the subset's draw in training
                      seed=(seed, is_seed(seed), RUN_SEED_RULE))
        self.path, self.every_steps, self.every_epochs = path, every_steps, every_epochs
        self.num_coords, self.seed, self.dtype = num_coords, seed, dtype
        self.schedule = Schedule.every(every_steps) if every_steps else Schedule.never()
        self.writer: TrajectoryWriter | None = None
        self._resume_rows: int | None = None

    def on_train_begin(self, ctx: TrainContext) -> None:
        self.writer = TrajectoryWriter(self.path, num_params(ctx.model),
                                       num_coords=self.num_coords, seed=self.seed,
                                       dtype=self.dtype)
        if self._resume_rows is not None:
            self.writer.truncate(min(self._resume_rows, self.writer.rows))
        elif ctx.step == 0:
            self.writer.truncate(0)  # a fresh run overwrites an old trajectory at this path
        if ctx.step == 0 and self.writer.rows == 0:
            self.writer.append(params_vector(ctx.model), 0, 0)

    def on_step_end(self, ctx: TrainContext) -> None:
        if self.every_steps and ctx.step % self.every_steps == 0:
            self.writer.append(params_vector(ctx.model), ctx.step, ctx.epoch)

    def on_epoch_end(self, ctx: TrainContext) -> None:
        done = ctx.epoch + 1
        if self.every_epochs and done % self.every_epochs == 0:
            # skip a duplicate when the epoch's last step was just recorded by steps
            if not (self.every_steps and ctx.step % self.every_steps == 0):
                self.writer.append(params_vector(ctx.model), ctx.step, done)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.writer.rows if self.writer is not None else 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_rows = int(state.get("rows", 0))


@register_instrument("trajectory")
def trajectory_instrument(*, schedule: Schedule, path: str, every_steps: int | None = None,
                          every_epochs: int | None = 1, num_coords: int | None = None,
                          seed: int = 0, dtype: str = "float32") -> Callback:
    """Weight snapshots to ``path`` (``schedule`` is unused: the recorder has its own cadence,
    so a run config refuses ``every`` / ``at`` / ``log_points`` / ``start`` for it)."""
    return TrajectoryRecorder(path, every_steps=every_steps, every_epochs=every_epochs,
                              num_coords=num_coords, seed=seed, dtype=dtype)


# what a run config's schedule keys would be ignored for (``_check_measure_item``)
trajectory_instrument.own_cadence = "every_steps / every_epochs"
