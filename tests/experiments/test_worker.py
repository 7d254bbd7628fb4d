"""The experiment worker's measurements: untimed probe blocks (``reproducible_blocks``), so
a run's numbers do not depend on how busy the machine was."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.errors import UserError
from sgdlab.experiments.procedures import Procedure, RunOutput, register_procedure
from sgdlab.experiments.procedures.measures import compute_final
from sgdlab.experiments.spec import RunSpec, resolve
from sgdlab.experiments.sweep import load_runs, run_sweep
from sgdlab.experiments.worker import (CHECKPOINT_DIR, DATA_FILE, CheckpointShipper, RunRecorder,
                                       RunTask, apply_checkpoint, execute_run, read_files,
                                       task_for, write_files)
from sgdlab.testing import fake_block_timing

pytestmark = pytest.mark.usefixtures("one_thread_runs")


@register_procedure("_test_frobenius")
class _Frobenius(Procedure):
    """An MLP's ‖H‖_F as the catalogue's ``hessian_frobenius`` final measurement gives it."""
    allowed = {"x"}

    def run(self, run, ctx):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                              nn.Linear(32, 5))
        data = torch.randn(64, 20), torch.randint(0, 5, (64,))
        summary, _ = compute_final({"kind": "hessian_frobenius", "probes": 40}, model,
                                   nn.CrossEntropyLoss(), data)
        return RunOutput(summary=summary)


def test_a_runs_curvature_estimate_does_not_depend_on_the_block_timing(tmp_path,
                                                                        monkeypatch):
    raw = {"name": "t-frob", "version": 1, "description": "toy", "analysis": "compare_groups",
           "procedure": "_test_frobenius", "base": {"x": 1}, "runs": [{"label": "f"}],
           "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"}, "seeds": [0],
           "options": {"table": [["hessian_frobenius", "Frobenius norm"]]}}
    runs = resolve(raw, "cpu").expand()
    values = []
    # larger blocks cheaper per column (the tuner settles on 16) / dearer (it settles on 1)
    for i, per_block in enumerate((lambda b: 1.0, lambda b: float(b * b))):
        fake_block_timing(monkeypatch, per_block)
        store = str(tmp_path / f"s{i}.sqlite")
        run_sweep(runs, store_path=store, progress=None, workers=1)
        (done,), missing = load_runs(runs, store_path=store)
        assert not missing
        values.append(done.summary["hessian_frobenius"])
    assert values[0] == values[1]                # bitwise


# --- the worker's contract, run by run: what a procedure's outcome becomes in its RunRecord


class _Scripted:
    """A procedure doing what ``run.params["do"]`` says (picklable by reference)."""

    def run(self, run, ctx):
        do = run.params["do"]
        ctx.store.log_many(ctx.run_id, [("loss", 0, 1.5), ("loss", 1, 0.5, 123.0)])
        if do == "crash":
            raise RuntimeError("boom " + "x" * 5000)
        if do == "bad-input":
            raise UserError("lr must be > 0, got -1")
        if do == "not-an-output":
            return {"loss": 0.5}
        if do == "threads":
            return RunOutput(summary={"threads": torch.get_num_threads()})
        if do == "files":
            (ctx.artifact_dir / "sub").mkdir()
            (ctx.artifact_dir / "sub" / "w.bin").write_bytes(b"\x00\x01")
            ctx.store.add_artifact(ctx.run_id, "weights", "sub/w.bin")
            ctx.store.add_artifact(ctx.run_id, "weights", "sub/w.bin")   # said twice
            return RunOutput(summary={"ckpt": str(ctx.checkpoint_dir),
                                      "ships": ctx.on_checkpoint is not None})
        return RunOutput(summary={"a": np.float64(0.25)},
                         data={"spectrum": (np.array([1.0, 2.0]), 3), 7: np.int64(4),
                               ("lr", 0.1): 1.0})


def _task(do: str, tmp_path, **kw):
    run = {"experiment": "t", "version": 1, "scale": "cpu", "label": do,
           "params": {"do": do}, "seed": 0, "procedure": "_scripted", "depends": [],
           "dependency_keys": ["k0"], "grid": []}
    return RunTask(run, _Scripted(), "r1", "cpu", str(tmp_path / "art"), **kw)


def test_a_crash_is_a_failed_record_named_by_its_exception_with_the_rows_before_it(tmp_path):
    rec = execute_run(_task("crash", tmp_path))
    assert rec.status == "failed" and rec.message.startswith("RuntimeError: boom xx")
    # the tail of the traceback: where it ended, the exception's last words
    assert rec.detail.endswith("x" * 100 + "\n") and len(rec.detail) == 4000
    assert [r[:3] for r in rec.rows] == [("loss", 0, 1.5), ("loss", 1, 0.5)]
    assert rec.rows[1][3] == 123.0 and rec.rows[0][3] > 1e9     # given time, or now
    assert rec.seconds > 0 and rec.env["seed"] == 0


def test_bad_input_is_failed_input_in_its_own_words_and_a_wrong_return_is_named(tmp_path):
    rec = execute_run(_task("bad-input", tmp_path))
    assert (rec.status, rec.message) == ("failed-input", "lr must be > 0, got -1")
    rec = execute_run(_task("not-an-output", tmp_path))
    assert rec.status == "failed"
    assert rec.message == "TypeError: procedure '_scripted' returned dict, expected RunOutput"


def test_a_runs_data_is_written_as_json_and_listed_once(tmp_path):
    rec = execute_run(_task("data", tmp_path))
    assert rec.status == "finished" and rec.summary == {"a": 0.25}
    path = tmp_path / "art" / DATA_FILE
    assert rec.artifacts == [("data", str(path))]
    # keys as text: JSON has no tuple key (a grid point's)
    assert json.loads(path.read_text()) == {"spectrum": [[1.0, 2.0], 3], "7": 4,
                                            "('lr', 0.1)": 1.0}


def test_a_runs_threads_are_set_for_it_and_given_back(tmp_path):
    before = torch.get_num_threads()
    want = 2 if before != 2 else 3
    rec = execute_run(_task("threads", tmp_path, threads=want))
    assert rec.summary == {"threads": want} and torch.get_num_threads() == before


def test_rows_sent_while_a_run_runs_are_not_sent_again_with_its_record(tmp_path):
    sent = []
    rec = execute_run(_task("data", tmp_path), send=sent.append)
    assert [[r[:3] for r in b] for b in sent] == [[("loss", 0, 1.5), ("loss", 1, 0.5)]]
    assert rec.rows == []


def test_a_shipped_run_returns_its_files_but_no_checkpoint_and_leaves_no_folder(tmp_path):
    rec = execute_run(_task("files", tmp_path, ship=True))
    # no one to send a checkpoint to, none to resume from: it keeps none
    assert rec.summary == {"ckpt": "None", "ships": False}
    assert rec.files == {"sub/w.bin": b"\x00\x01"}
    assert rec.artifacts == [("weights", "sub/w.bin")]
    assert not Path(rec.artifact_dir).exists() and not (tmp_path / "art").exists()
    rec = execute_run(_task("files", tmp_path, ship=True,
                            resume_files={f"{CHECKPOINT_DIR}/last.pt": b"c", "a.txt": b"a"}),
                      send_checkpoint=lambda shipped: None)
    assert rec.summary["ships"] and Path(rec.summary["ckpt"]).name == CHECKPOINT_DIR
    assert rec.files == {"a.txt": b"a", "sub/w.bin": b"\x00\x01"}     # the checkpoint apart
    # nobody to send new ones to, but one to resume from: it is kept where the run reads it
    rec = execute_run(_task("files", tmp_path, ship=True,
                            resume_files={f"{CHECKPOINT_DIR}/last.pt": b"c"}))
    assert not rec.summary["ships"] and Path(rec.summary["ckpt"]).name == CHECKPOINT_DIR


def test_task_for_copies_the_params_and_ships_the_folder_it_resumes(tmp_path):
    run = RunSpec("t", 1, "cpu", "a", {"opt": {"lr": 0.1}}, 0, "_scripted",
                  dependency_keys=("k0",))
    art = tmp_path / "art"
    (art / "d").mkdir(parents=True)
    (art / "d" / "f.bin").write_bytes(b"abc")
    task = task_for(run, _Scripted(), "r1", device="cpu", artifact_dir=art, dependencies={},
                    threads=None, ship=True, resume=True)
    assert task.resume_files == {"d/f.bin": b"abc"} and task.spec.key == run.key
    assert task.spec.dependency_keys == ("k0",)
    task.run["params"]["opt"]["lr"] = 9.0
    assert run.params == {"opt": {"lr": 0.1}}
    assert task_for(run, None, "r1", device="cpu", artifact_dir=art, dependencies={},
                    threads=None, ship=True).resume_files == {}


def test_the_recorder_counts_the_rows_given_sent_and_kept_and_records_only_its_run():
    sent = []
    rec = RunRecorder("r1", sent.append, stored=3)
    rec.log_many("r1", [("a", 0, 1.0), ("a", 1, 2.0)])
    rec.log_many("r1", [])
    assert rec.count_metrics() == 5 and sent == [[("a", 0, 1.0, sent[0][0][3]),
                                                  ("a", 1, 2.0, sent[0][1][3])]]
    with pytest.raises(UserError, match=r"records only itself \(r1\), not r2"):
        rec.log_metric("r2", "a", 0, 1.0)
    kept = RunRecorder("r1", stored=2)
    assert kept.truncate_metrics("r1", 2) == 0
    with pytest.raises(UserError, match="counts 1 metric rows, but the sweep gave the run 2"):
        kept.truncate_metrics("r1", 1)
    kept.complete_run("r1", "finished", rows=[("b", 0, 1.0, 5.0)],
                      artifacts=[("data", "x"), ("data", "x")])
    assert kept.take_rows() == [("b", 0, 1.0, 5.0)] and kept.take_rows() == []
    assert kept.artifacts == [("data", "x")] and kept.count_metrics() == 2


def test_files_are_never_written_outside_their_folder(tmp_path):
    write_files(tmp_path / "f", {"a/b.bin": b"1"})
    assert read_files(tmp_path / "f") == {"a/b.bin": b"1"}
    with pytest.raises(UserError, match=r"refusing to write '../x' outside"):
        write_files(tmp_path / "f", {"../x": b"2"})
    assert not (tmp_path / "x").exists()


def test_a_checkpoint_ships_what_changed_by_size_time_and_content(tmp_path):
    """A file rewritten at its size is shipped whole; one touched only, as an empty tail;
    one grown twice, as its two tails (the CRC-32 of what was shipped runs on)."""
    task, driver, sent = tmp_path / "task", tmp_path / "driver", []
    task.mkdir()
    driver.mkdir()
    f = task / "a.bin"
    f.write_bytes(b"12")
    (driver / "a.bin").write_bytes(b"12")
    ns = f.stat().st_mtime_ns
    ship, ckpt = CheckpointShipper(task, sent.append), tmp_path / "last.pt"
    ckpt.write_bytes(b"c")

    def shipped(data: bytes | None, at: int) -> tuple:
        if data is not None:
            f.write_bytes(data)
        os.utime(f, ns=(ns + at * 10**9, ns + at * 10**9))
        ship(ckpt)
        return sent[-1]["files"], sent[-1]["tails"]

    assert shipped(None, 1) == ({}, {"a.bin": (2, b"")})
    assert shipped(b"123", 2) == ({}, {"a.bin": (2, b"3")})
    assert shipped(b"1234", 3) == ({}, {"a.bin": (3, b"4")})
    assert shipped(b"9234", 4) == ({"a.bin": b"9234"}, {})
    # a driver's copy longer than where the tail starts is not the worker's either
    (driver / "a.bin").write_bytes(b"123456")
    assert shipped(b"92345", 5) == ({}, {"a.bin": (4, b"5")})
    assert apply_checkpoint(driver, sent[-1]) == \
        "its file a.bin has 6 bytes here, its tail starts at 4"
