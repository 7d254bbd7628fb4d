"""TensorBoard event files: a run's metrics live while it trains, or stored runs afterwards.

:class:`TensorBoardLogger` is a callback that writes every scalar the run records (losses,
accuracies, the instruments' series), under the name the run store uses (``train_loss``,
``hess/top_1``, ...) and at the same step, through ``torch.utils.tensorboard``.
:func:`export_runs` writes stored runs the same way. One folder per run under a common root, so
``tensorboard --logdir ROOT`` compares them. Needs the ``tensorboard`` package (the
``tensorboard`` extra).

A run that has ended also gets its HParams session, in its own folder: its hyper-parameters
(:func:`run_hparams`: a sweep's grid point, label and seed; a run of ``sgdlab train``, its
training settings) and its summary's numbers as
scalars ``final/<key>`` at its last step, the metrics the HParams dashboard shows
(:func:`write_final`). No experiment summary is written: TensorBoard then builds one from all
the runs' sessions, so a folder holding several sweeps, or runs whose summaries differ, shows
every hyper-parameter and metric.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ResumableError, warn
from ..store.runstore import summary_numbers
from .callbacks import Callback, TrainContext

__all__ = ["LiveRuns", "TensorBoardLogger", "clear_events", "export_runs", "final_metrics",
           "last_step", "logged_times", "run_folder", "run_hparams", "summary_writer",
           "write_final", "writer_class"]


def writer_class():
    """``SummaryWriter``, or a UserError saying what to install (checked before work starts)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:     # outside the config: once installed, a resume continues the run
        raise ResumableError("TensorBoard logging needs the tensorboard package: "
                        "python -m pip install tensorboard (or the sgdlab[tensorboard] "
                        "extra)") from None
    return SummaryWriter


def summary_writer(log_dir: str | Path, **kwargs: Any):
    """``torch.utils.tensorboard.SummaryWriter(log_dir)``, or a UserError saying what to install."""
    return writer_class()(str(log_dir), **kwargs)


def run_folder(root: str | Path, run_id: str, name: str | None = None) -> Path:
    """``root/<name>-<run id>`` (the run's TensorBoard folder; ``root/<run id>`` unnamed)."""
    label = re.sub(r"[^\w.+-]+", "_", name).strip("_") if name else ""
    return Path(root) / (f"{label}-{run_id}" if label else run_id)


def clear_events(folder: str | Path) -> None:
    """Remove the event files in ``folder`` (not its subfolders): a run written there afresh
    would otherwise show each step twice, TensorBoard reading every file of a folder."""
    for f in Path(folder).glob("events.out.tfevents.*"):
        f.unlink()


def _write(writer, history: dict[str, Sequence[Sequence[Any]]], start: dict[str, int]) -> None:
    """``history``'s points ``(step, value[, wall])`` after ``start``'s counts; without a
    wall time, the time of writing."""
    for name, points in history.items():
        for step, value, *wall in points[start.get(name, 0):]:
            writer.add_scalar(name, value, global_step=step, walltime=wall[0] if wall else None)


def logged_times(history: dict[str, Sequence[tuple[int, float]]],
                 stored: dict[str, Sequence[tuple[int, float, float]]]
                 ) -> dict[str, list[tuple[Any, ...]]]:
    """``history``'s points ``(step, value, wall)`` with the Unix time each was logged, read
    from the run's ``stored`` rows (:meth:`RunStore.metrics` with ``wall=True``) of the same
    metric at the same steps; a series the store does not hold as the history does (a run
    recorded anew at its resume) keeps ``(step, value)``: the time of writing."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for name, points in history.items():
        rows = stored.get(name) or []
        same = [int(s) for s, _ in points] == [int(r[0]) for r in rows]
        out[name] = ([(s, v, r[2]) for (s, v), r in zip(points, rows)] if same
                     else [tuple(p) for p in points])
    return out


def run_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters a run shows in TensorBoard's HParams dashboard.

    A sweep's run (its stored config has ``run_key``): its grid point by dotted key (the
    experiment's ``grid``, as results.json's ``runs[].grid``; absent from runs stored before
    it was recorded), its ``label`` (run group and grid point) and ``seed``. Any other
    config: its leaves by dotted key (``optimizer.lr``, ``train.batch_size``); a run of
    ``sgdlab train`` passes its training settings alone
    (:func:`sgdlab.config.run.training_hparams`). Values other than numbers and strings are
    written as JSON (``true``, ``[4, 4]``); ``None`` is left out."""
    if "run_key" in config:
        hp = {**(config.get("grid") or {}), "label": config.get("label"),
              "seed": config.get("seed")}
    else:
        hp = {}

        def leaves(d: dict[str, Any], prefix: str) -> None:
            for k, v in d.items():
                if isinstance(v, dict) and v:
                    leaves(v, f"{prefix}{k}.")
                else:
                    hp[f"{prefix}{k}"] = v
        leaves({k: v for k, v in config.items() if k != "name"}, "")
    # a bool as JSON too: torch's hparams summary would make it the number 0 or 1; keys
    # sorted, as the store writes them, so a run exported shows what it showed live
    return {k: v if isinstance(v, (int, float, str)) and not isinstance(v, bool)
            else json.dumps(v, sort_keys=True, default=str) for k, v in hp.items()
            if v is not None}


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The run's summary as HParams metrics: each number under ``final/<key>`` (the tag
    cleaned as ``add_scalar`` cleans it, so the dashboard finds the scalar)."""
    out: dict[str, float] = {}
    for k, v in summary_numbers(summary).items():
        out.setdefault("final/" + re.sub(r"[^-/\w.]", "_", str(k)), float(v))
    return out


def write_final(writer, hparams: dict[str, Any], summary: dict[str, Any], step: int,
                walltime: float | None = None) -> None:
    """Write a run's HParams session into ``writer``'s folder: ``hparams`` and the scalars
    of :func:`final_metrics` at ``step`` (its last step, beside its curves) and ``walltime``
    (None: now)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    metrics = final_metrics(summary)
    # the experiment summary is left out: TensorBoard picks one run's, columns and all;
    # without one it builds it from every run's session (see the module docstring)
    _, start, end = hparams_summaries(hparams, metrics)
    writer.file_writer.add_summary(start)
    writer.file_writer.add_summary(end)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, global_step=step, walltime=walltime)


def last_step(history: dict[str, Sequence[tuple[int, float]]]) -> int:
    """The last step of any of the series in ``history`` (0 if none)."""
    return max((int(p[-1][0]) for p in history.values() if p), default=0)


class TensorBoardLogger(Callback):
    """Write every metric the run logs to TensorBoard event files in ``log_dir`` as it is
    recorded (``ctx.history`` is read after each step, epoch and at the end).

    ``run``: a subfolder of ``log_dir`` for this run (set by ``sgdlab train`` to
    ``<name>-<run id>``). Without it, a second run into ``log_dir`` warns: TensorBoard would
    show the two as one run. A resumed run rewrites its folder's events from the restored history,
    so the steps recorded after the checkpoint by the interrupted process do not appear twice;
    each restored point at the time it was logged, which the run store holds
    (:func:`logged_times`), or, a run recorded in no store, at the resume's time.
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
            clear_events(self.folder)
        elif any(self.folder.glob("events.out.tfevents.*")):
            warn(f"{self.folder} already holds TensorBoard event files (another run's?): "
                 "TensorBoard shows a folder's files as one run, their steps mixed; give each "
                 "run a folder of its own (TensorBoardLogger(log_dir, run=NAME))")
        self._writer = summary_writer(self.folder, flush_secs=self.flush_secs)
        self._written = {}
        if ctx.step > 0 and ctx.stored_metrics is not None:
            # the restored points at the times they were first logged: written at the
            # resume's, the wall axis jumped back over the interrupted process's steps
            _write(self._writer, logged_times(ctx.history, ctx.stored_metrics()), {})
            self._written = {k: len(v) for k, v in ctx.history.items()}
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


class LiveRuns:
    """Event files of runs whose metric rows arrive in batches: an experiment's sweep writes
    each run's rows to ``root/<name>-<run id>`` as its worker sends them (every ~2 s), at
    their steps and wall-clock times, so ``tensorboard --logdir root`` shows the sweep's
    curves live; the runs it skips, already stored, are written from the store
    (:meth:`write_stored`). The package is looked for at once: a sweep without it stops
    before a run."""

    def __init__(self, root: str | Path, *, flush_secs: int = 10):
        self.root, self.flush_secs = Path(root), flush_secs
        self._cls = writer_class()
        self._writers: dict[str, Any] = {}
        self._last: dict[str, int] = {}         # run id -> the last step written

    def _writer(self, run_id: str, name: str):
        writer = self._writers.get(run_id)
        if writer is None:
            folder = run_folder(self.root, run_id, name)
            writer = self._writers[run_id] = self._cls(str(folder), flush_secs=self.flush_secs)
        return writer

    def write(self, run_id: str, name: str, rows: Iterable[Sequence[Any]]) -> None:
        """``rows``: ``(metric, step, value[, unix time])`` of run ``run_id`` (named ``name``)."""
        writer = self._writer(run_id, name)
        for row in rows:
            writer.add_scalar(row[0], row[2], global_step=int(row[1]),
                              walltime=row[3] if len(row) > 3 else None)
            self._last[run_id] = max(self._last.get(run_id, 0), int(row[1]))

    def finish(self, run_id: str, name: str, hparams: dict[str, Any],
               summary: dict[str, Any]) -> None:
        """The ended run's HParams session (:func:`write_final`), at its last step written."""
        write_final(self._writer(run_id, name), hparams, summary, self._last.get(run_id, 0))

    def write_stored(self, store: Any, run_ids: Sequence[str]) -> list[Path]:
        """Write runs the store already holds (a re-run sweep's skipped runs) beside the live
        ones, as :func:`export_runs` does: ``tensorboard --logdir root`` shows the sweep."""
        return export_runs(store, self.root, run_ids)

    def close(self, run_id: str) -> None:
        writer = self._writers.pop(run_id, None)
        self._last.pop(run_id, None)
        if writer is not None:
            writer.close()

    def close_all(self) -> None:
        for run_id in list(self._writers):
            self.close(run_id)


def export_runs(store: Any, root: str | Path, run_ids: Iterable[str] | None = None, *,
                hparams: Callable[[dict[str, Any]], dict[str, Any]] = run_hparams) -> list[Path]:
    """Write the stored metrics of ``run_ids`` (default: every run) to ``root/<name>-<run id>``
    at the wall times they were logged, and the HParams session of each run with a summary
    (:func:`write_final`), its hyper-parameters ``hparams(stored config)`` (``sgdlab runs
    export`` gives :func:`sgdlab.config.run.training_hparams`, as a run of ``sgdlab train``
    writes live); returns the folders written. A folder's earlier event files are replaced."""
    runs = ([store.get_run(r) for r in run_ids] if run_ids is not None
            else store.list_runs())
    out = []
    for run in runs:
        folder = run_folder(root, run["id"], run.get("name"))
        clear_events(folder)
        writer = summary_writer(folder)
        try:
            # at the times they were logged: TensorBoard's wall and relative axes as live
            metrics = store.metrics(run["id"], wall=True)
            _write(writer, metrics, {})
            if run.get("summary"):
                write_final(writer, hparams(run.get("config") or {}), run["summary"],
                            last_step(metrics),
                            max((p[2] for ps in metrics.values() for p in ps), default=None))
        finally:
            writer.close()
        out.append(folder)
    return out
