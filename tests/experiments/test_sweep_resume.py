"""A sweep run of the ``train`` procedure stopped during training (Ctrl-C, a lost worker)
continues from its last checkpoint when the sweep is re-run or the run retried, and ends with
the rows, summary and files of an uninterrupted run."""
from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest
import torch

import sweep_kill_helpers  # noqa: F401  (registers the procedures; workers import it too)
from sweep_kill_helpers import DIR_ENV, KILL_ENV, cancel_once_sent
from sgdlab.cli.main import main as cli
from sgdlab.experiments.spec import resolve
from sgdlab.experiments.sweep import artifacts_root, load_runs, run_sweep
from sgdlab.experiments.worker import CHECKPOINT_DIR
from sgdlab.store import RunStore
from sgdlab.store.runstore import summary_numbers

pytestmark = pytest.mark.usefixtures("one_thread_runs", "every_epoch")
SGD_STEP = torch.optim.SGD.step


def tiny(procedure: str = "train", batch_size=40, epochs: int = 5) -> dict:
    """One run of a small MLP on 160 digits: 4 steps an epoch at batch size 40, SGD with
    momentum (a state to resume), a schedule, an instrument and a final measurement."""
    return {"name": "t-resume", "version": 1, "description": "resumable", "analysis":
            "compare_groups", "procedure": procedure,
            "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"},
            "base": {"dataset": {"name": "digits", "n_train": 160, "n_test": 64},
                     "model": {"name": "mlp", "widths": [12]},
                     "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                     "schedule": {"name": "step", "milestones": [2.5], "gamma": 0.5},
                     "batch_size": batch_size,
                     "epochs": epochs, "save_model": True,
                     "measure": [{"name": "trajectory", "every_steps": 3}],
                     "final": [{"kind": "hessian_top", "samples": 64, "num_iter": 20,
                                "tol": 0.01}]},
            "runs": [{"label": "a"}], "seeds": [0],
            "options": {"table": [["train_loss", "final train loss"]]}}


def outcome(store: Path, spec) -> tuple:
    """The run's status, summary, rows (name, step, value in the order stored) and files."""
    (run,), missing = load_runs(spec.expand(), store_path=str(store))
    assert not missing
    with sqlite3.connect(store) as c:
        rows = c.execute("SELECT name, step, value FROM metrics WHERE run_id = ? ORDER BY rowid",
                         (run.run_id,)).fetchall()
    art = artifacts_root(RunStore(store)) / run.key
    # a .pt archive names the temporary file it was written to: its tensors are compared
    files = {str(p.relative_to(art)): _tensors(p) if p.suffix == ".pt" else p.read_bytes()
             for p in sorted(art.rglob("*")) if p.is_file()}
    return run.status, run.summary, rows, files


def _tensors(path: Path) -> dict:
    """A .pt file's tensors as lists; of the final weights (a checkpoint), its model's and its
    step."""
    state = torch.load(path)
    if "model" in state:
        state = {**state["model"], "step": torch.tensor(state["loop"]["step"])}
    return {k: v.tolist() for k, v in state.items()}


@pytest.fixture
def every_epoch(monkeypatch):
    """Checkpoints at each epoch end (in a sweep, at most one a minute)."""
    import sgdlab.experiments.procedures.train as proc

    monkeypatch.setattr(proc, "CHECKPOINT_SECONDS", 0)


def stop_with_a_refused_checkpoint(monkeypatch, spec, store: Path) -> Path:
    """Stop the sweep of ``spec`` at step 11 (Ctrl-C; checkpoints at each epoch end, so its
    last is at step 8) and make its first run's checkpoint one its training refuses: its
    settings say another momentum (an older default, the run key the same). Returns the
    checkpoint's path."""
    import sgdlab.experiments.procedures.train as proc
    from sgdlab.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint

    monkeypatch.setattr(proc, "CHECKPOINT_SECONDS", 0)
    counted_steps(monkeypatch, stop_at=11)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec.expand(), store_path=str(store), progress=None)
    ckpt = checkpoint_path(artifacts_root(RunStore(store)) / spec.expand()[0].key
                           / CHECKPOINT_DIR)
    state = load_checkpoint(ckpt)
    state["settings"]["param_groups"][0]["momentum"] = 0.5     # another default then
    save_checkpoint(ckpt, state)
    return ckpt


def counted_steps(monkeypatch, stop_at: int | None = None) -> list[int]:
    """Counts SGD steps taken in this process; Ctrl-C at step ``stop_at``."""
    taken: list[int] = []

    def counting(self, *a, **kw):
        if stop_at is not None and len(taken) + 1 == stop_at:
            raise KeyboardInterrupt
        taken.append(1)
        return SGD_STEP(self, *a, **kw)

    monkeypatch.setattr(torch.optim.SGD, "step", counting)
    return taken


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    spec = resolve(tiny(), "cpu")
    store = tmp_path_factory.mktemp("reference") / "s.sqlite"
    before = os.environ.get("SGDLAB_THREADS")
    os.environ["SGDLAB_THREADS"] = "1"
    try:
        run_sweep(spec.expand(), store_path=str(store), progress=None)
    finally:
        os.environ.pop("SGDLAB_THREADS") if before is None else os.environ.update(
            SGDLAB_THREADS=before)
    return outcome(store, spec)


def test_an_interrupted_sweep_run_resumes_from_its_last_checkpoint(reference, tmp_path,
                                                                   monkeypatch, capsys):
    spec, store = resolve(tiny(), "cpu"), tmp_path / "s.sqlite"
    counted_steps(monkeypatch, stop_at=11)    # in epoch 3: the last checkpoint is at step 8
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec.expand(), store_path=str(store), progress=None)
    (stopped,) = RunStore(store).list_runs()
    assert stopped["status"] == "interrupted"
    art = artifacts_root(RunStore(store)) / spec.expand()[0].key
    assert (art / CHECKPOINT_DIR / "last.pt").is_file()
    capsys.readouterr()
    assert cli(["runs", "list", "--store", str(store)]) == 0
    listing = capsys.readouterr().out
    assert "8 (ckpt)" in listing and "(its sweep resumes it from its last checkpoint, step 8)" \
        in listing

    said: list[str] = []
    taken = counted_steps(monkeypatch)
    rep = run_sweep(spec.expand(), store_path=str(store), progress=said.append,
                    tensorboard=tmp_path / "tb")
    assert not rep.failed
    assert "resuming a|seed=0 from step 8 of 20 (its last checkpoint)" in said
    assert len(taken) == 12                   # steps 9 to 20: none before the checkpoint again
    assert outcome(store, spec) == reference
    assert {"weights.pt", "trajectory/snapshots.bin"} <= set(reference[3])
    # finished: no optimizer state left behind; the interrupted attempt is kept as it was
    assert not (art / CHECKPOINT_DIR).exists()
    assert sorted(r["status"] for r in RunStore(store).list_runs()) == ["finished",
                                                                        "interrupted"]
    # its live curves start with the rows copied from the interrupted attempt
    from tensorboard.backend.event_processing import event_accumulator

    (done,) = [r for r in RunStore(store).list_runs() if r["status"] == "finished"]
    (folder,) = (tmp_path / "tb").glob(f"*-{done['id']}")
    events = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    stored = RunStore(store).metrics(done["id"])
    # beside them, its summary's numbers as the HParams dashboard's final values
    finals = {t for t in events.Tags()["scalars"] if t.startswith("final/")}
    assert set(events.Tags()["scalars"]) - finals == set(stored)
    assert {t: events.Scalars(t)[0].value for t in finals} == pytest.approx(
        {f"final/{k}": v for k, v in summary_numbers(done["summary"]).items()}, rel=1e-6)
    for name, points in stored.items():
        got = events.Scalars(name)          # TensorBoard keeps float32 values
        assert [e.step for e in got] == [st for st, _ in points], name
        assert [e.value for e in got] == pytest.approx([v for _, v in points], rel=1e-6), name


def test_a_checkpoint_its_training_refuses_is_removed_and_the_run_started_again(
        reference, tmp_path, monkeypatch):
    """A checkpoint whose settings differ from the run's (written by an sgdlab whose defaults
    changed since; the run's key the same): its training refuses it, naming the file. That
    stopped the whole sweep as bad input (the checkpoint had to be deleted by hand); the run
    now starts again from step 0 and the sweep goes on."""
    spec, store = resolve(tiny(), "cpu"), tmp_path / "s.sqlite"
    ckpt = stop_with_a_refused_checkpoint(monkeypatch, spec, store)
    said: list[str] = []
    taken = counted_steps(monkeypatch)
    rep = run_sweep(spec.expand(), store_path=str(store), progress=said.append)
    assert not rep.failed
    assert "resuming a|seed=0 from step 8 of 20 (its last checkpoint)" in said
    assert any(x.startswith(f"a|seed=0: its checkpoint cannot be resumed (cannot resume from "
                            f"{str(ckpt)!r}") and x.endswith("; starting it from step 0")
               for x in said), said
    assert len(taken) == 20
    assert outcome(store, spec) == reference


def test_a_checkpoint_saved_on_another_schedule_horizon_is_not_resumed_on_the_new_one(
        tmp_path, monkeypatch):
    """A trapezoid without ``anneal`` decays over the steps the run takes. A changed epochs
    or max_steps changes the run key (a new run); with the key the same, the steps the
    schedule is built for changed only with an sgdlab that counts them otherwise (as when
    max_steps beyond the epochs' steps stopped counting): its checkpoint, annealing over
    20 − 8 = 12 steps (4 a warm-up, 4 a hold), is refused by the run annealing over 16, and the
    run starts again from step 0 (docs/design/runner.md: settings compared on resume)."""
    import sgdlab.optim.registry as registry

    raw = tiny()      # (no instrument nor final measurement: the schedule is the point)
    raw["base"].update(schedule={"name": "trapezoid", "warmup": 1, "hold": 1}, measure=[],
                       final=[], save_model=False)
    spec, store = resolve(raw, "cpu"), tmp_path / "s.sqlite"
    counted_steps(monkeypatch, stop_at=11)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec.expand(), store_path=str(store), progress=None)
    built = registry.build_schedule

    def longer(name, optimizer, *, steps_per_epoch, total_steps, **hyper):
        return built(name, optimizer, steps_per_epoch=steps_per_epoch,
                     total_steps=total_steps + 4, **hyper)

    monkeypatch.setattr(registry, "build_schedule", longer)
    said: list[str] = []
    taken = counted_steps(monkeypatch)
    assert not run_sweep(spec.expand(), store_path=str(store), progress=said.append).failed
    assert any(x.startswith("a|seed=0: its checkpoint cannot be resumed (cannot resume from ")
               and "anneal_steps of the schedule (12 -> 16)" in x
               and x.endswith("; starting it from step 0") for x in said), said
    assert len(taken) == 20


def test_a_checkpoint_whose_rows_the_store_lacks_is_not_resumed_from(reference, tmp_path,
                                                                      monkeypatch):
    spec, store = resolve(tiny(), "cpu"), tmp_path / "s.sqlite"
    counted_steps(monkeypatch, stop_at=11)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec.expand(), store_path=str(store), progress=None)
    with sqlite3.connect(store) as c:      # rows lost on their way to the driver
        c.execute("DELETE FROM metrics WHERE rowid IN (SELECT max(rowid) - 20 FROM metrics)")
    said: list[str] = []
    taken = counted_steps(monkeypatch)
    run_sweep(spec.expand(), store_path=str(store), progress=said.append)
    assert any(s.startswith("a|seed=0: the store lacks metric rows its checkpoint (step 8)")
               and s.endswith("; starting it from step 0") for s in said), said
    assert len(taken) == 20
    assert outcome(store, spec) == reference


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_lost_worker_retried_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    # full batch: one step an epoch, a checkpoint at each; the worker is SIGKILLed at step 2
    raw = tiny("_test_killing_train", batch_size="full", epochs=4)
    spec = resolve(raw, "cpu")
    ref = tmp_path / "ref.sqlite"
    run_sweep(spec.expand(), store_path=str(ref), progress=None)
    kills = tmp_path / "kills"
    kills.mkdir()
    monkeypatch.setenv(DIR_ENV, str(kills))
    monkeypatch.setenv(KILL_ENV, "train@a")
    store, said = tmp_path / "s.sqlite", []
    rep = run_sweep(spec.expand(), store_path=str(store), workers=2, progress=said.append)
    assert list(kills.glob("train@a"))                        # the kill fired
    assert not rep.failed
    assert any("killed by SIGKILL" in s and "trying it again" in s for s in said), said
    assert "resuming a|seed=0 from step 1 of 4 (its last checkpoint)" in said
    assert outcome(store, spec) == outcome(ref, spec)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_the_rows_a_worker_sent_before_the_sweep_stopped_it_reach_the_store(tmp_path):
    # Ctrl-C killed the pool's workers with rows still in their pipes: a checkpoint counting
    # them could not be resumed from (the rerun started from step 0)
    from sgdlab.experiments.backends import ProcessPoolBackend

    got: list[tuple] = []
    cancel_once_sent(ProcessPoolBackend(1, lambda run_id, rows: got.extend(rows)),
                     "_test_rows_then_wait", tmp_path)
    assert [(r[0], r[1], r[2]) for r in got] == [("value", i, float(i)) for i in range(5)]
