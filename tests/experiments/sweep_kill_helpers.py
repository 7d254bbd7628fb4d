"""A ``train`` procedure that kills its own process (or its sweep's driver) at chosen points,
for the sweep kill tests. Spawned workers import this module when they unpickle the
procedure, so the kills happen inside real worker processes.

``$SGDLAB_TEST_KILL`` lists ``point@label`` items separated by ``;``; each fires once (a
marker file in ``$SGDLAB_TEST_KILL_DIR`` holding the pid of the process that fired it), so
the retry of a killed run goes through. Points: ``start`` (before training), ``train``
(after step 2), ``final`` (training done, before the final measurements), ``end``
(everything done, before the run is handed back); prefixed ``parent-`` the worker SIGKILLs
its driver instead, ``term-`` sends the driver SIGTERM. The runs checkpoint at every epoch end
(``CHECKPOINT_SECONDS = 0``), so a killed run resumes from its last epoch.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from sgdlab.experiments.procedures import Procedure, RunOutput, register_procedure
from sgdlab.experiments.procedures.train import TrainProcedure
from sgdlab.train.callbacks import Callback

KILL_ENV, DIR_ENV = "SGDLAB_TEST_KILL", "SGDLAB_TEST_KILL_DIR"


def note_pid() -> None:
    """Leave ``pid-<pid>`` in the kill folder: the test checks these processes end."""
    if os.environ.get(DIR_ENV):
        Path(os.environ[DIR_ENV], f"pid-{os.getpid()}").touch()


def maybe_kill(point: str, label: str) -> None:
    for item in filter(None, os.environ.get(KILL_ENV, "").split(";")):
        what, _, lab = item.partition("@")
        target = what.split("-")[-1]
        if target != point or lab != label:
            continue
        marker = Path(os.environ[DIR_ENV]) / item.replace("|", "_").replace("=", "_")
        if marker.exists():
            continue
        marker.write_text(str(os.getpid()))
        if what.startswith("parent-"):
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(30)           # the kernel ends this worker with its parent
        elif what.startswith("term-"):
            os.kill(os.getppid(), signal.SIGTERM)
            time.sleep(30)           # the driver stops this worker
        else:
            os.kill(os.getpid(), signal.SIGKILL)


class _KillAt(Callback):
    def __init__(self, label: str):
        self.label = label

    def on_step_end(self, ctx) -> None:
        if ctx.step == 2:
            maybe_kill("train", self.label)


@register_procedure("_test_killing_train")
class KillingTrain(TrainProcedure):
    """The ``train`` procedure with kill points (see the module docstring)."""

    def run(self, run, ctx) -> RunOutput:
        import sgdlab.experiments.procedures.train as proc
        import sgdlab.train.loop as loop

        note_pid()
        maybe_kill("start", run.label)
        train, compute_final = loop.train, proc.compute_final

        def train_with_kill(*args, callbacks=(), **kw):
            return train(*args, callbacks=[*callbacks, _KillAt(run.label)], **kw)

        def final_with_kill(*args, **kw):
            maybe_kill("final", run.label)
            return compute_final(*args, **kw)

        seconds = proc.CHECKPOINT_SECONDS
        loop.train, proc.compute_final = train_with_kill, final_with_kill
        proc.CHECKPOINT_SECONDS = 0
        try:
            out = super().run(run, ctx)
        finally:
            loop.train, proc.compute_final = train, compute_final
            proc.CHECKPOINT_SECONDS = seconds
        maybe_kill("end", run.label)
        return out


@register_procedure("_test_slow_square")
class SlowSquare(Procedure):
    """x -> x**2 after ``sleep`` seconds, logging 3 rows; records each call in ``calls_dir``."""

    allowed = {"x", "sleep", "calls_dir"}
    required = {"x"}

    def run(self, run, ctx) -> RunOutput:
        calls = run.params.get("calls_dir")
        if calls:
            Path(calls, f"{run.label}-{os.getpid()}-{time.time_ns()}").touch()
        time.sleep(float(run.params.get("sleep", 0)))
        for step in range(3):
            ctx.store.log_metric(ctx.run_id, "value", step, run.params["x"] * step)
        return RunOutput(summary={"y": run.params["x"] ** 2})


@register_procedure("_test_rows_then_wait")
class RowsThenWait(Procedure):
    """Logs ``n`` rows, leaves ``marker``, then waits a minute (to be stopped)."""

    allowed = {"n", "marker"}
    required = {"n", "marker"}

    def run(self, run, ctx) -> RunOutput:
        for step in range(run.params["n"]):
            ctx.store.log_metric(ctx.run_id, "value", step, float(step))
        self.after_rows(run, ctx)
        Path(run.params["marker"]).touch()
        time.sleep(60)
        return RunOutput(summary={})

    def after_rows(self, run, ctx) -> None:
        """What is sent after the rows, before the marker: nothing here."""


@register_procedure("_test_checkpoint_then_wait")
class CheckpointThenWait(RowsThenWait):
    """Logs ``n`` rows, writes a checkpoint file (its bytes: ``b"after n rows"``) and hands
    it to ``ctx.on_checkpoint`` (a Ray task sends it, waiting until it has arrived), leaves
    ``marker``, then waits a minute (to be stopped)."""

    def after_rows(self, run, ctx) -> None:
        if ctx.checkpoint_dir is not None and ctx.on_checkpoint is not None:
            path = Path(ctx.checkpoint_dir) / "last.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"after {run.params['n']} rows".encode())
            ctx.on_checkpoint(path)


def cancel_once_sent(backend, procedure: str, folder: Path) -> None:
    """Submit to ``backend`` run ``r1`` of ``procedure`` (one of the ``*_then_wait`` ones,
    ``n`` = 5, its marker and files in ``folder``), wait until it has left its marker (what it
    sent is on its way to the driver), cancel it as the driver does on Ctrl-C, before any
    ``wait()``, and close ``backend``."""
    from sgdlab.experiments.procedures import get_procedure
    from sgdlab.experiments.spec import RunSpec
    from sgdlab.experiments.worker import task_for

    marker = folder / "sent"
    run = RunSpec(experiment="t", version=1, scale="cpu", label="w", seed=0,
                  procedure=procedure, params={"n": 5, "marker": str(marker)})
    try:
        backend.submit(task_for(run, get_procedure(run.procedure), "r1", device="cpu",
                                artifact_dir=folder / "art", dependencies={}, threads=1))
        end = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < end:
            time.sleep(0.05)
        assert marker.exists()
        backend.cancel_all()
    finally:
        backend.close()
