"""The advice for a failed run of ``sgdlab train`` (:class:`FailedRunAdvice`): whose it is is
decided by the run's record, not by the wording of another command."""
from __future__ import annotations

import pytest

import sgdlab.config.runner as runner
from sgdlab.config.runner import FailedRunAdvice
from sgdlab.errors import UserError
from sgdlab.store import RunStore
from sgdlab.testing import TINY_RUN


def _run(status: str, artifacts: list[dict]) -> dict:
    return {"id": "r1", "status": status, "artifacts": artifacts}


def test_failed_run_advice_is_for_a_failed_run_of_sgdlab_train_only(tmp_path):
    store = tmp_path / "runs.sqlite"
    folder = {"kind": "out_dir", "path": str(tmp_path / "run")}
    parle = {"kind": "checkpoints", "path": str(tmp_path / "parle" / "checkpoints")}
    assert FailedRunAdvice.of(_run("failed", [parle]), store) is None       # `sgdlab parle`
    assert FailedRunAdvice.of(_run("failed", []), store) is None            # a sweep's run
    for status in ("interrupted", "stale", "running", "finished", "diverged"):
        assert FailedRunAdvice.of(_run(status, [folder]), store) is None, status
    advice = FailedRunAdvice.of(_run("failed", [parle, folder]), store)
    assert advice == FailedRunAdvice("r1", store, checkpoint=False)
    assert advice.warm_start is None and "--init-from" not in advice.corrected()
    # its last checkpoint there: the warm start is offered
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"")
    advice = FailedRunAdvice.of(_run("failed", [folder]), store)
    assert advice.warm_start == f"sgdlab train CONFIG --init-from r1 --store {store}"
    assert advice.corrected().endswith(f"start it from the failed run's last checkpoint: "
                                       f"{advice.warm_start} (a warm start: the weights only, "
                                       "the optimizer and step count afresh)")
    # one the caller found unreadable is not
    assert FailedRunAdvice.of(_run("failed", [folder]), store, checkpoint=False).warm_start \
        is None


def test_the_batch_size_note_is_for_a_batch_larger_than_the_training_set_only():
    from sgdlab.config.runner import batch_size_note

    # B = N is full-batch GD as the config says it: no note; B = N + 1 draws N all the same
    assert batch_size_note(100, 100) is None and batch_size_note("full", 100) is None
    assert batch_size_note(True, 0) is None
    assert "train.batch_size 101 is larger than the training set (100 examples)" in (
        batch_size_note(101, 100))


def test_the_command_s_progress_flag_wins_over_the_config(monkeypatch):
    import sgdlab.train.loop as loop
    from sgdlab.config.runner import progress_mode

    monkeypatch.setattr(loop, "progress_watched", lambda: True)
    assert progress_mode(False, True) is False and progress_mode(True, False) is True
    assert progress_mode(None, True) is True and progress_mode(None, False) is False
    monkeypatch.setattr(loop, "progress_watched", lambda: False)   # a log file: epoch lines
    assert progress_mode(None, True) == "epochs" and progress_mode(False, True) is False


def test_a_run_its_store_fails_to_record_leaves_its_folder_free(tmp_path, monkeypatch):
    """The run.json that claims ``--out`` is removed again when the store cannot record the
    run: the folder is never left claimed by a run no store knows."""
    import sqlite3

    store = RunStore(tmp_path / "runs.sqlite")

    def fails(*a, **k):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "create_run", fails)
    out = tmp_path / "out"
    with pytest.raises(sqlite3.OperationalError):
        runner.run_config(TINY_RUN, out_dir=out, store=store, progress=False)
    assert not (out / "run.json").exists()
    runner._refuse_held(out)          # free: a new run may take it


def _run_left_running_on_another_host(tmp_path, monkeypatch):
    """A run recorded and its folder written, then left running (no training) by process 1
    of another host with a fresh heartbeat: (store path, run folder, run id)."""
    import sqlite3
    import time

    path, out = tmp_path / "runs.sqlite", tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(runner, "_execute", lambda cfg, store, run_id, *a, **k: run_id)
        rid = runner.run_config(TINY_RUN, out_dir=out, store=RunStore(path), progress=False)
    with sqlite3.connect(path) as c:
        c.execute("UPDATE runs SET host = 'another-host', pid = 1, pid_start = NULL, "
                  "heartbeat = ? WHERE id = ?", (time.time(), rid))
    return path, out, rid


def test_resume_of_a_run_whose_process_is_alive_is_refused(tmp_path, monkeypatch):
    """A run whose owner is alive (here: another host with a fresh heartbeat) is not resumed
    a second time: the resume is refused naming it, and nothing is trained into its folder."""
    path, out, rid = _run_left_running_on_another_host(tmp_path, monkeypatch)
    with pytest.raises(UserError, match=f"run {rid} is still running"):
        runner.resume_run(rid, store=RunStore(path), progress=False)
    assert not (out / "checkpoints").exists()
    assert RunStore(path).get_run(rid)["host"] == "another-host"


def test_resume_of_a_live_run_whose_folder_was_removed_creates_nothing(tmp_path, monkeypatch):
    """The live owner is asked about before the folder is made again: a removed folder stays
    removed (it was recreated, with its config.yaml and run.json, then the claim refused)."""
    import shutil

    path, out, rid = _run_left_running_on_another_host(tmp_path, monkeypatch)
    shutil.rmtree(out)
    with pytest.raises(UserError, match=rf"^run {rid} is still running \(process 1 on "
                                        r"another-host, heartbeat \d+ s ago\); stop it first$"):
        runner.resume_run(rid, store=RunStore(path), progress=False)
    assert not out.exists()
    assert RunStore(path).get_run(rid)["host"] == "another-host"


def test_a_resume_whose_checkpoint_cannot_be_read_is_recorded_failed_saying_why(tmp_path):
    """A resume stopped in its own set-up (here a truncated checkpoint, before training) is
    recorded failed with the reason, as ``sgdlab runs show`` then tells it; the file is kept."""
    store = RunStore(tmp_path / "runs.sqlite")
    first = runner.run_config(TINY_RUN, out_dir=tmp_path / "out", store=store, progress=False)
    store.set_status(first.run_id, "interrupted")           # as if killed before its end
    ckpt = tmp_path / "out" / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(UserError, match="cannot read checkpoint"):
        runner.resume_run(first.run_id, store=store, progress=False)
    run = store.get_run(first.run_id)
    assert run["recorded_status"] == "failed" and "cannot read checkpoint" in run["message"]
    assert len(ckpt.read_bytes()) == 100


def test_a_resume_that_restarts_from_step_0_rewrites_its_tensorboard_events(tmp_path):
    """A run killed before its first checkpoint is redone from step 0: the events its first
    process wrote are removed with its stored rows, so each step shows once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sgdlab.train.tensorboard import summary_writer

    store = RunStore(tmp_path / "runs.sqlite")
    cfg = {**TINY_RUN, "train": {**TINY_RUN["train"], "epochs": 1,
                                 "tensorboard": str(tmp_path / "tb")}}
    first = runner.run_config(cfg, out_dir=tmp_path / "out", store=store, progress=False)
    store.set_status(first.run_id, "interrupted")           # as if killed before its end
    (tmp_path / "out" / "checkpoints" / "last.pt").unlink()  # ... and its first checkpoint
    stale = summary_writer(first.tensorboard_path)          # what that process wrote
    stale.add_scalar("train_loss", 123.0, global_step=1)
    stale.close()
    runner.resume_run(first.run_id, store=store, progress=False)
    events = EventAccumulator(str(first.tensorboard_path), size_guidance={"scalars": 0})
    events.Reload()
    stored = store.metrics(first.run_id)
    for name in ("train_loss", "test_loss", "lr"):
        points = events.Scalars(name)
        assert [e.step for e in points] == [s for s, _ in stored[name]], name
        assert [e.value for e in points] == pytest.approx([v for _, v in stored[name]]), name


def test_an_interrupted_runs_message_says_where_its_resume_starts():
    """The loop attaches the step it stopped at and that of its last checkpoint to the
    interrupt; the message said only the resume command."""
    _kept = runner._kept

    def stopped(at, saved):
        e = KeyboardInterrupt()
        e.stopped_step, e.checkpoint_step = at, saved
        return e

    assert _kept(stopped(6, 6)) == " at step 6, saved in its checkpoint there"
    assert _kept(stopped(9, 7)) == (" at step 9 (its last checkpoint is at step 7: the steps "
                                    "after it are trained again)")
    assert _kept(stopped(3, None)) == " at step 3 (no checkpoint yet: it restarts from step 0)"
    assert _kept(KeyboardInterrupt()) == ""       # before or after training
