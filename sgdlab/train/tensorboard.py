"""TensorBoard event files: a run's metrics live while it trains, or stored runs afterwards.

:class:`TensorBoardLogger` is a callback that writes every scalar the run records (losses,
accuracies, the instruments' series), under the name the run store uses (``train_loss``,
``hess/top_1``, ...) and at the same step, through ``torch.utils.tensorboard``.
:func:`export_runs` writes stored runs the same way. One folder per run under a common root, so
``tensorboard --logdir ROOT`` compares them. Needs the ``tensorboard`` package (the
``tensorboard`` extra).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from .callbacks import Callback, TrainContext

__all__ = ["TensorBoardLogger", "export_runs", "run_folder", "summary_writer"]


def summary_writer(log_dir: str | Path, **kwargs: Any):
    """``torch.utils.tensorboard.SummaryWriter(log_dir)``, or a UserError saying what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("TensorBoard logging needs the tensorboard package: "
                        "python -m pip install tensorboard (or the sgdlab[tensorboard] "
                        "extra)") from None
    return SummaryWriter(str(log_dir), **kwargs)


def run_folder(root: str | Path, run_id: str, name: str | None = None) -> Path:
    """``root/<name>-<run id>`` (the run's TensorBoard folder; ``root/<run id>`` unnamed)."""
    label = re.sub(r"[^\w.+-]+", "_", name).strip("_") if name else ""
    return Path(root) / (f"{label}-{run_id}" if label else run_id)


def _write(writer, history: dict[str, Sequence[tuple[int, float]]],
           start: dict[str, int]) -> None:
    for name, points in history.items():
        for step, value in points[start.get(name, 0):]:
            writer.add_scalar(name, value, global_step=step)


class TensorBoardLogger(Callback):
    """Write every metric the run logs to TensorBoard event files in ``log_dir`` as it is
    recorded (``ctx.history`` is read after each step, epoch and at the end).

    ``run``: a subfolder of ``log_dir`` for this run (set by ``sgdlab train`` to
    ``<name>-<run id>``). A resumed run rewrites its folder's events from the restored history,
    so the steps recorded after the checkpoint by the interrupted process do not appear twice.
    """

    def __init__(self, log_dir: str | Path, *, run: str | None = None, flush_secs: int = 10):
        self.log_dir, self.run, self.flush_secs = Path(log_dir), run, flush_secs
        self._writer = None
        self._written: dict[str, int] = {}

    @property
    def folder(self) -> Path:
        return self.log_dir / self.run if self.run else self.log_dir

    def on_train_begin(self, ctx: TrainContext) -> None:
        if ctx.step > 0:  # resumed: start the event files afresh from the restored history
            for f in self.folder.glob("events.out.tfevents.*"):
                f.unlink()
        self._writer = summary_writer(self.folder, flush_secs=self.flush_secs)
        self._written = {}
        self._drain(ctx)

    def _drain(self, ctx: TrainContext) -> None:
        if self._writer is None:
            return
        _write(self._writer, ctx.history, self._written)
        self._written = {k: len(v) for k, v in ctx.history.items()}

    def on_step_end(self, ctx: TrainContext) -> None:
        self._drain(ctx)

    def on_epoch_end(self, ctx: TrainContext) -> None:
        self._drain(ctx)
        self._writer.flush()

    def on_train_end(self, ctx: TrainContext) -> None:
        self._drain(ctx)
        self._writer.close()
        self._writer = None


def export_runs(store: Any, root: str | Path, run_ids: Iterable[str] | None = None) -> list[Path]:
    """Write the stored metrics of ``run_ids`` (default: every run) to ``root/<name>-<run id>``;
    returns the folders written. A folder's earlier event files are replaced."""
    runs = ([store.get_run(r) for r in run_ids] if run_ids is not None
            else store.list_runs())
    out = []
    for run in runs:
        folder = run_folder(root, run["id"], run.get("name"))
        for f in folder.glob("events.out.tfevents.*"):
            f.unlink()
        writer = summary_writer(folder)
        try:
            _write(writer, store.metrics(run["id"]), {})
        finally:
            writer.close()
        out.append(folder)
    return out
