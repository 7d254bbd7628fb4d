"""``sgdlab train / runs / resume`` end to end, including a run killed by SIGKILL and resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import torch

from sgdlab.cli.main import main
from sgdlab.store import RunStore

# An instrument that SIGKILLs its own process at the scheduled steps, armed only when
# SGDLAB_TEST_KILL=1 (so the resumed run, in this process, is not killed again).
KILL_INSTRUMENT = textwrap.dedent("""
    import os, signal
    from sgdlab.train.callbacks import Callback
    from sgdlab.train.instruments import INSTRUMENTS, register_instrument

    class _Kill(Callback):
        def __init__(self, schedule):
            self.schedule = schedule
        def on_step_end(self, ctx):
            if os.environ.get("SGDLAB_TEST_KILL") == "1" and self.should_run(ctx.step):
                os.kill(os.getpid(), signal.SIGKILL)

    if "_test_kill" not in INSTRUMENTS:
        register_instrument("_test_kill")(lambda *, schedule: _Kill(schedule))
""")
exec(KILL_INSTRUMENT)

TINY = """
name: tiny
data: {name: cubic, seed: 0}
model: {name: zhu-mlp-1-6-6-6-1}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
train: {epochs: 6, batch_size: 4, checkpoint_every: 7, threads: 1, progress: false}
"""


def test_train_kill_resume_is_bit_for_bit(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + "measure: [{name: _test_kill, at: [17]}]\n")
    store_path = tmp_path / "runs.sqlite"
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "killed"
    assert main(["train", str(cfg), "--store", str(store_path), "--out", str(ref_dir)]) == 0
    out = capsys.readouterr().out
    assert "finished after 30 steps" in out and "learning_curves.png" in out

    code = (KILL_INSTRUMENT + "\nimport sys\nfrom sgdlab.cli.main import main\n"
            f"main(['train', {str(cfg)!r}, '--store', {str(store_path)!r}, "
            f"'--out', {str(kill_dir)!r}])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "SGDLAB_TEST_KILL": "1"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    store = RunStore(store_path)
    ref_run, killed = store.list_runs()
    assert killed["status"] == "running"  # killed: never got to record an end
    # everything flushed before the kill survives: metrics through the epoch end at step 15
    assert max(s for s, _ in store.metrics(killed["id"])["train_loss"]) == 15
    assert torch.load(kill_dir / "checkpoints" / "last.pt",
                      weights_only=True)["loop"]["step"] == 14

    assert main(["resume", killed["id"][:-1], "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "resumed from step 14" in out and "finished after 30 steps" in out

    ref = torch.load(ref_dir / "checkpoints" / "last.pt", weights_only=True)
    res = torch.load(kill_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ref["model"].keys() == res["model"].keys()
    for k in ref["model"]:
        assert torch.equal(ref["model"][k], res["model"][k]), k
    assert store.get_run(killed["id"])["status"] == "finished"
    assert store.metrics(killed["id"]) == store.metrics(ref_run["id"])  # no duplicates either
    assert json.loads((kill_dir / "results.json").read_text())["final"] == \
        json.loads((ref_dir / "results.json").read_text())["final"]

    assert main(["runs", "list", "--store", str(store_path)]) == 0
    listing = capsys.readouterr().out
    assert ref_run["id"] in listing and killed["id"] in listing and "finished" in listing
    assert main(["runs", "show", ref_run["id"], "--store", str(store_path)]) == 0
    shown = capsys.readouterr().out
    assert "status: finished" in shown and "test_loss" in shown and "zhu-mlp-1-6-6-6-1" in shown
    assert main(["runs", "export", str(tmp_path / "e.json"), "--store", str(store_path)]) == 0
    exported = json.loads((tmp_path / "e.json").read_text())
    assert {r["id"] for r in exported} == {ref_run["id"], killed["id"]}
    assert main(["resume", ref_run["id"], "--store", str(store_path)]) == 2
    assert "is finished" in capsys.readouterr().err


def test_diverging_config_is_recorded_as_diverged(tmp_path, capsys):
    cfg = tmp_path / "nan.yaml"
    cfg.write_text(TINY)
    store_path = tmp_path / "runs.sqlite"
    assert main(["train", str(cfg), "--store", str(store_path), "--out", str(tmp_path / "o"),
                 "--set", "optimizer.lr=1e6"]) == 0
    assert "diverged" in capsys.readouterr().out
    (run,) = RunStore(store_path).list_runs()
    assert run["status"] == "diverged" and "non-finite" in run["message"]
    assert run["config"]["optimizer"]["lr"] == 1e6
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["status"] == "diverged"


def test_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(TINY)
    assert main(["train", str(cfg), "--store", str(tmp_path / "s.sqlite"),
                 "--set", "train.batch_size=0", "--set", "optimizer.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size: must be >= 1, got 0" in err
    assert "optimizer.lrr: unknown key (did you mean lr?)" in err
    assert not (tmp_path / "s.sqlite").exists()  # nothing recorded for an invalid config
    assert main(["train", "no-such-config"]) == 2
    assert "packaged configs: digits-mlp" in capsys.readouterr().err
    assert main(["runs", "list", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "no run store at" in capsys.readouterr().err
    assert not (tmp_path / "s.sqlite").exists()


def test_packaged_default_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "digits-mlp", "--set", "train.epochs=1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "finished after 45 steps" in out
    (run,) = RunStore(tmp_path / "sgdlab-runs" / "runs.sqlite").list_runs()
    assert (tmp_path / "sgdlab-runs" / run["id"] / "learning_curves.png").stat().st_size > 0
    assert run["summary"]["test_acc"] > 0.5
