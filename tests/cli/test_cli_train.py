"""``sgdlab train / runs / resume`` end to end, including a run killed by SIGKILL and resumed."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from sgdlab.cli.main import main
from sgdlab.cli.train import EXIT_DIVERGED
from sgdlab.store import RunStore
from sgdlab.testing import strict_loads, unique_prefix

# An instrument that stops its own process at a step: SIGKILL at $SGDLAB_TEST_KILL_AT, SIGTERM
# at $SGDLAB_TEST_TERM_AT (at the step's end), or during the step that reaches
# $SGDLAB_TEST_TERM_IN (unset: it does nothing, so the same config runs uninterrupted).
KILL_INSTRUMENT = textwrap.dedent("""
    import os, signal
    from sgdlab.train.callbacks import Callback
    from sgdlab.train.instruments import INSTRUMENTS, register_instrument

    class _Kill(Callback):
        def __init__(self, schedule):
            self.schedule = schedule
        def on_step_end(self, ctx):
            for var, sig in (("SGDLAB_TEST_KILL_AT", signal.SIGKILL),
                             ("SGDLAB_TEST_TERM_AT", signal.SIGTERM)):
                if str(ctx.step) == os.environ.get(var):
                    os.kill(os.getpid(), sig)
        def on_after_backward(self, ctx):
            if str(ctx.step + 1) == os.environ.get("SGDLAB_TEST_TERM_IN"):
                os.kill(os.getpid(), signal.SIGTERM)

    if "_test_kill" not in INSTRUMENTS:
        register_instrument("_test_kill")(lambda *, schedule: _Kill(schedule))
""")
exec(KILL_INSTRUMENT)
# SIGKILL after training, before the run is recorded as finished (results.json is drawn)
KILL_BEFORE_COMPLETION = textwrap.dedent("""
    import os, signal
    import sgdlab.report.figures.training as t
    t.learning_curves = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
""")

TINY = """
name: tiny
data: {name: cubic, seed: 0}
model: {name: zhu-mlp-1-6-6-6-1}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
train: {epochs: 6, batch_size: 4, checkpoint_every: 7, threads: 1, progress: false}
"""


def interrupted(*args, **kwargs):
    """A stand-in for a step of the command: Ctrl-C arrives there."""
    raise KeyboardInterrupt


def _cli(args: list[str], env: dict[str, str], before: str = "") -> subprocess.CompletedProcess:
    code = (KILL_INSTRUMENT + before + "\nimport sys\nfrom sgdlab.cli.main import main\n"
            f"sys.exit(main({args!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def _terminated_at(step: int, args: list[str]) -> int:
    """``main(args)`` in this process, sent SIGTERM at ``step`` by the ``_test_kill``
    instrument: main turns SIGTERM into an interrupt and restores the handler after, so a
    child process (seconds of imports) would check nothing more."""
    os.environ["SGDLAB_TEST_TERM_AT"] = str(step)
    try:
        return main(args)
    finally:
        del os.environ["SGDLAB_TEST_TERM_AT"]


def test_train_killed_at_several_points_resumes_to_the_uninterrupted_run(tmp_path, capsys):
    """5-step epochs, checkpoints every 7 steps, dynamics rows every 3 steps (so rows are
    logged between an epoch-end flush and a mid-epoch checkpoint). SIGTERM at step 17, SIGKILL
    at 23 of the resumed run, SIGKILL after training before the run is recorded finished;
    each resume ends at the weights, metric rows and results of the uninterrupted run."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + "measure: [{name: _test_kill, every: 1}, {name: dynamics, every: 3}]\n")
    store_path = tmp_path / "runs.sqlite"
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "killed"
    assert main(["train", str(cfg), "--store", str(store_path), "--out", str(ref_dir)]) == 0
    out = capsys.readouterr().out
    assert "finished after 30 steps" in out and "learning_curves.png" in out
    assert (ref_dir / "instruments.png").stat().st_size > 0     # the dynamics instrument
    store = RunStore(store_path)

    # SIGTERM: the run records interrupted and says how to continue, no traceback
    code = _terminated_at(17, ["train", str(cfg), "--store", str(store_path), "--out",
                               str(kill_dir)])
    said = capsys.readouterr()
    ref_run, killed = store.list_runs()
    rid, hint = killed["id"], f"sgdlab resume {killed['id']} --store {store_path}"
    assert code == 130 and "Traceback" not in said.err, said.err
    # (in a measurement at a step's end: raised at once, the steps after step 14 redone)
    assert (f"run {rid} interrupted at step 17 (its last checkpoint is at step 14: the steps "
            f"after it are trained again); continue it with: {hint}") in said.err
    assert hint in said.out                                  # announced before training
    assert (killed["recorded_status"], killed["status"]) == ("interrupted", "interrupted")

    # SIGKILL of the resumed run at step 23 (checkpoint at 21, rows at 21 not flushed by an
    # epoch end): the store still says running; the listing shows interrupted + the command
    p = _cli(["resume", rid, "--store", str(store_path)], {"SGDLAB_TEST_KILL_AT": "23"})
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert torch.load(kill_dir / "checkpoints" / "last.pt",
                      weights_only=True)["loop"]["step"] == 21
    run = store.get_run(rid)
    assert (run["recorded_status"], run["status"]) == ("running", "interrupted")
    assert main(["runs", "list", "--store", str(store_path)]) == 0
    listing = capsys.readouterr().out
    (line,) = [ln for ln in listing.splitlines() if ln.startswith(rid)]
    assert line.split()[2] == "interrupted" and hint in listing

    # SIGKILL after training, before completion: not finished, no results.json
    p = _cli(["resume", rid, "--store", str(store_path)], {}, before=KILL_BEFORE_COMPLETION)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert store.get_run(rid)["status"] == "interrupted"
    assert not (kill_dir / "results.json").exists()

    assert main(["resume", unique_prefix(rid, store_path), "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "resumed from step 30" in out and "finished after 30 steps" in out

    ref = torch.load(ref_dir / "checkpoints" / "last.pt", weights_only=True)
    res = torch.load(kill_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ref["model"].keys() == res["model"].keys()
    for k in ref["model"]:
        assert torch.equal(ref["model"][k], res["model"][k]), k
    run = store.get_run(rid)
    assert run["status"] == "finished"
    assert {a["kind"] for a in run["artifacts"]} == {"out_dir", "results", "figure", "checkpoint"}
    assert store.metrics(rid) == store.metrics(ref_run["id"])  # no row lost, none doubled
    assert store.count_metrics(rid) == store.count_metrics(ref_run["id"])
    assert json.loads((kill_dir / "results.json").read_text())["final"] == \
        json.loads((ref_dir / "results.json").read_text())["final"]

    assert main(["runs", "show", ref_run["id"], "--store", str(store_path)]) == 0
    shown = capsys.readouterr().out
    assert "status: finished" in shown and "test_loss" in shown and "zhu-mlp-1-6-6-6-1" in shown
    assert main(["runs", "export", str(tmp_path / "e.json"), "--store", str(store_path)]) == 0
    exported = json.loads((tmp_path / "e.json").read_text())
    assert {r["id"] for r in exported} == {ref_run["id"], rid}
    assert main(["resume", ref_run["id"], "--store", str(store_path)]) == 2
    assert "is finished" in capsys.readouterr().err


def test_diverging_config_is_recorded_as_diverged_and_exits_3(tmp_path, capsys):
    """`sgdlab train` exited 0 for a run that diverged, as for one that finished: a script
    took its NaN results for a result. The console command (`python -m sgdlab`, the entry a
    shell runs) now exits EXIT_DIVERGED, with the run's results kept and the step it diverged
    at printed and stored; `--help` lists the exit statuses."""
    cfg = tmp_path / "nan.yaml"
    cfg.write_text(TINY)
    store_path = tmp_path / "runs.sqlite"
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-m", "sgdlab", "train", str(cfg), "--store",
                        str(store_path), "--out", str(tmp_path / "o"), "--set",
                        "optimizer.lr=1e6"], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    assert p.returncode == EXIT_DIVERGED == 3 and "Traceback" not in p.stderr, p.stderr
    out = p.stdout
    # the step it names is the step count's (the loss of the weights after that many steps)
    assert re.search(r"diverged after (\d+) steps? .*\n  non-finite mini-batch loss \S+ at "
                     r"step \1 \(epoch 0, ", out), out
    # its numbers are the initial evaluation's, and say so (not "final")
    assert "last finite evaluation (step 0): train_loss" in out and "final:" not in out
    (run,) = RunStore(store_path).list_runs()
    assert run["status"] == "diverged" and "non-finite" in run["message"]
    assert run["message"] in out
    assert run["config"]["optimizer"]["lr"] == 1e6
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["status"] == "diverged"
    for command in ("train", "resume"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert f"{EXIT_DIVERGED} it diverged" in capsys.readouterr().out


def test_a_resumed_run_that_diverges_exits_3(tmp_path, capsys):
    """`sgdlab resume` trains as `sgdlab train` does and ends the same way: a run stopped
    before it diverged (lr 100: at step 9) and resumed from its checkpoint diverges and exits
    EXIT_DIVERGED, recorded diverged."""
    cfg = tmp_path / "nan.yaml"
    cfg.write_text(TINY + "measure: [{name: _test_kill, every: 1}]\n")
    store_path = tmp_path / "runs.sqlite"
    p = _cli(["train", str(cfg), "--store", str(store_path), "--out", str(tmp_path / "o"),
              "--set", "optimizer.lr=100", "--set", "train.checkpoint_every=2"],
             {"SGDLAB_TEST_TERM_AT": "5"})
    assert p.returncode == 130, p.stderr
    (run,) = RunStore(store_path).list_runs()
    assert main(["resume", run["id"], "--store", str(store_path)]) == EXIT_DIVERGED
    out = capsys.readouterr().out
    assert re.search(r"diverged after \d+ steps .*, resumed from step [1-9]", out), out
    run = RunStore(store_path).get_run(run["id"])
    assert run["status"] == "diverged" and run["message"] in out


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
    assert "packaged configs: char-lstm, digits-mlp" in capsys.readouterr().err
    assert main(["runs", "list", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "no run store at" in capsys.readouterr().err
    assert not (tmp_path / "s.sqlite").exists()


def test_a_finished_run_whose_loss_exploded_finitely_says_so(tmp_path, capsys):
    # a ReLU MLP at lr 500 ends at loss ~200 and chance accuracy, "finished" with exit 0 and
    # no word that it diverged: only a non-finite loss makes a run diverged
    cfg = tmp_path / "hot.yaml"
    cfg.write_text("name: hot\ndata: {name: digits, options: {n_train: 100, n_test: 50}}\n"
                   "model: {name: mlp, options: {widths: [16]}}\n"
                   "optimizer: {name: sgd, lr: 500}\n"
                   "train: {epochs: 2, batch_size: 20, threads: 1, progress: false}\n")
    store = str(tmp_path / "s.sqlite")
    assert main(["train", str(cfg), "--store", store, "--out", str(tmp_path / "hot")]) == 0
    out = capsys.readouterr().out
    loss = json.loads((tmp_path / "hot" / "results.json").read_text())["history"]["train_loss"]
    assert loss[-1][1] > 10 * loss[0][1]
    assert (f"  note: train_loss rose from {loss[0][1]:.4g} at step 0 to {loss[-1][1]:.4g}: "
            "the steps diverged though the loss stayed finite") in out
    # a run that trained says nothing of the kind
    assert main(["train", str(cfg), "--store", store, "--out", str(tmp_path / "ok"),
                 "--set", "optimizer.lr=0.05"]) == 0
    assert "note:" not in capsys.readouterr().out


def test_another_optimizer_by_name_says_the_sections_other_keys_were_kept(tmp_path, capsys):
    # `--set optimizer.name=adam` on digits-mlp (sgd, momentum 0.9) said only that adam takes
    # no momentum, not where it came from nor how to change the optimizer
    assert main(["train", "digits-mlp", "--set", "optimizer.name=adam",
                 "--store", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "optimizer.momentum: unknown key (optimizer 'adam' accepts:" in err
    assert ("(--set optimizer.name=adam keeps the config's other optimizer keys, lr, momentum; "
            "--set 'optimizer={name: adam}' replaces the whole section)") in err
    assert main(["train", "digits-mlp", "--set", "optimizer={name: adam}", "--print-config",
                 "--store", str(tmp_path / "s.sqlite")]) == 0
    assert "  name: adam\n" in capsys.readouterr().out
    # a problem elsewhere gets no hint about the optimizer
    assert main(["train", "digits-mlp", "--set", "optimizer.name=sgd", "--set",
                 "train.batch_size=0", "--store", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size" in err and "keeps the config's" not in err


def test_set_optimizer_name_takes_either_spelling_and_stores_the_registered_one(tmp_path,
                                                                              capsys):
    # entropy_sgd is spelt with _ among random-lr-sgd and gld-*: --set of entropy-sgd was
    # refused with "did you mean entropy_sgd?"
    assert main(["train", "digits-mlp", "--set", "optimizer={name: entropy-sgd, lr: 0.1}",
                 "--set", "schedule={name: cosine_cyclic, period: 2}", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optimizer"]["name"] == "entropy_sgd"
    assert printed["schedule"] == {"name": "cosine-cyclic", "period": 2}
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("epochs: 6", "epochs: 1"))
    store_path = tmp_path / "s.sqlite"
    assert main(["train", str(cfg), "--store", str(store_path), "--set",
                 "optimizer={name: Random_LR_SGD, lr: 0.05}"]) == 0
    (run,) = RunStore(store_path).list_runs()
    assert run["config"]["optimizer"]["name"] == "random-lr-sgd"
    saved = yaml.safe_load((tmp_path / run["id"] / "config.yaml").read_text())
    assert saved["optimizer"]["name"] == "random-lr-sgd"


def test_train_without_a_config_says_what_config_is(capsys):
    """argparse named CONFIG alone; its message, usage and exit status 2 stay."""
    from sgdlab.config import packaged_configs

    with pytest.raises(SystemExit) as e:
        main(["train", "--out", "somewhere"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("usage: sgdlab train ")
    assert err.endswith("sgdlab train: error: the following arguments are required: CONFIG (a "
                        f"packaged config's name ({', '.join(packaged_configs())}), as in "
                        "`sgdlab train digits-mlp`, or a .yaml/.toml run config file, as "
                        "`sgdlab train digits-mlp --print-config` prints one)\n")


def test_an_experiment_given_to_train_names_the_command_that_runs_it(tmp_path, capsys,
                                                                      monkeypatch):
    # "no config file 'xing-walk' and no packaged config of that name" before
    monkeypatch.chdir(tmp_path)
    assert main(["train", "xing-walk"]) == 2
    assert capsys.readouterr().err.startswith(
        "sgdlab: error: 'xing-walk' is an experiment of the catalogue, not a run config: run "
        "it with `sgdlab run xing-walk --scale smoke|cpu|paper`")
    (tmp_path / "xing-walk").mkdir()       # a folder of that name is no config either
    assert main(["train", "xing-walk"]) == 2
    assert "'xing-walk' is a folder, not a config file" in capsys.readouterr().err
    assert not (tmp_path / "sgdlab-runs").exists()


@pytest.mark.parametrize("status, continued", [("interrupted", True), ("failed", True),
                                               ("finished", False)])
def test_the_same_command_again_on_a_stopped_run_s_folder_says_how_it_continues(
        tmp_path, capsys, status, continued):
    # after a Ctrl-C the same `sgdlab train ... --out DIR` said only "choose another folder"
    store_path = tmp_path / "runs.sqlite"
    with RunStore(store_path) as store:
        run_id = store.create_run({"name": "digits-mlp"}, name="digits-mlp", env={},
                                  status=status)
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"run_id": run_id, "store": str(store_path)}))
    assert main(["train", "digits-mlp", "--out", str(out), "--store", str(store_path),
                 "--set", "train.epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sgdlab: error: {out} already holds run {run_id} ")
    note = (f"; that run is {status}: continue it with sgdlab resume {run_id} --store "
            f"{store_path}")
    if status == "failed":    # a resume reruns the stored config: a corrected one is a new run
        note = (f"; that run is failed: if what stopped it lay outside its config (a full "
                f"disk), continue it with sgdlab resume {run_id} --store {store_path}; to run "
                "a corrected config, choose another folder")
    assert err.endswith(note) == continued
    assert ("continue it with" in err) == continued


@pytest.mark.parametrize("status", ["finished", "diverged"])
def test_resume_of_an_ended_run_says_how_to_train_it_further(tmp_path, capsys, status):
    # "only interrupted, stale, failed (or killed) runs can be resumed", and nothing more
    store_path = tmp_path / "runs.sqlite"
    with RunStore(store_path) as store:
        run_id = store.create_run({"name": "x"}, name="x", env={}, status=status)
    assert main(["resume", run_id, "--store", str(store_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sgdlab: error: run {run_id} is {status}; only interrupted, ")
    assert err.endswith(f"; to train it further, start a run from its weights: sgdlab train "
                        f"CONFIG --init-from {run_id} --store {store_path} (a warm start: "
                        "CONFIG's train.epochs more, the optimizer afresh)")


def test_a_config_that_fails_when_built_leaves_no_store(tmp_path, capsys, monkeypatch):
    """Valid keys, but a run that cannot start here (a data file it does not have, no CUDA):
    one line, nothing printed as if training had begun and no empty store made."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SGDLAB_STORE", raising=False)
    for bad in ("data.name=mnist", "train.device=cuda"):
        if bad.endswith("cuda") and torch.cuda.is_available():
            continue
        assert main(["train", "digits-mlp", "--set", bad, "--no-progress"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and ("data_dir" in err or "CUDA" in err)
    assert list(tmp_path.iterdir()) == []


def test_targets_of_the_wrong_shape_in_a_data_file_are_refused_before_the_run_is_recorded(
        tmp_path, capsys, monkeypatch):
    """Regression targets (N,) for one output, class labels (N, 1): refused before the run is
    recorded, naming both shapes. Once recorded, the run failed at its first step and said to
    resume it, which refuses the fixed file (its SHA-256 is the run's)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SGDLAB_STORE", raising=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=g)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: f\ndata: {file: d.pt}\nmodel: {name: mlp, options: {widths: [4]}}\n"
                   "optimizer: {name: sgd, lr: 0.1}\n"
                   "train: {epochs: 1, batch_size: 4, threads: 1, progress: false}\n")
    for y, says in ((x[:, 0], r"outputs of shape \(2, 1\) with targets of shape \(2,\)"),
                    (torch.randint(0, 3, (12, 1), generator=g),
                     r"class labels of shape \(2, 1\) .*\(y\.squeeze\(1\)\)")):
        torch.save({"x_train": x, "y_train": y}, tmp_path / "d.pt")
        assert main(["train", str(cfg)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and re.search(says, err), err
        assert not (tmp_path / "sgdlab-runs").exists()


def test_train_refuses_a_folder_with_another_commands_results(tmp_path, capsys):
    """The output of `sgdlab walk` (as of `sgdlab run` or `landscape`) is not overwritten by
    a training run's results.json: refused before anything is recorded or written."""
    out = tmp_path / "walk"
    assert main(["walk", "--steps", "2", "--widths", "8", "--eval-subset", "50",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["train", "digits-mlp", "--set", "train.epochs=1", "--no-progress",
                 "--store", str(tmp_path / "s.sqlite"), "--out", str(out)]) == 2
    assert "holds a results.json" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not (tmp_path / "s.sqlite").exists()


def test_packaged_default_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "digits-mlp", "--set", "train.epochs=1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "finished after 45 steps" in out
    (run,) = RunStore(tmp_path / "sgdlab-runs" / "runs.sqlite").list_runs()
    assert (tmp_path / "sgdlab-runs" / run["id"] / "learning_curves.png").stat().st_size > 0
    assert not (tmp_path / "sgdlab-runs" / run["id"] / "instruments.png").exists()
    assert run["summary"]["test_acc"] > 0.5
    assert main(["runs", "list"]) == 0          # no token data: no perplexity column
    assert "TEST_LOSS" in (out := capsys.readouterr().out) and "TEST_PPL" not in out


def test_runs_compare_shows_config_differences_final_values_and_curves(tmp_path, capsys,
                                                                      monkeypatch):
    import matplotlib.pyplot as plt

    from sgdlab.report.figures import training as training_figures

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + "measure: [{name: dynamics, every: 3}]\n")
    store = str(tmp_path / "runs.sqlite")
    for lr in ("0.05", "0.01"):
        assert main(["train", str(cfg), "--store", store, "--out", str(tmp_path / lr),
                     "--set", f"optimizer.lr={lr}", "--set", "train.epochs=2"]) == 0
    a, b = (r["id"] for r in RunStore(store).list_runs())
    a_prefix, b_prefix = unique_prefix(a, store), unique_prefix(b, store)
    finals = {r: json.loads((tmp_path / lr / "results.json").read_text())["final"]
              for r, lr in ((a, "0.05"), (b, "0.01"))}
    capsys.readouterr()
    png = tmp_path / "cmp.png"
    assert main(["runs", "compare", a, b_prefix, "--store", store, "--plot", str(png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    (lr_row,) = [ln for ln in lines if ln.startswith("optimizer.lr")]
    assert lr_row.split()[1:] == ["0.05", "0.01"]
    assert not [ln for ln in lines if ln.startswith("optimizer.momentum")]   # same in both
    (loss_row,) = [ln for ln in lines if ln.startswith("final train_loss")]
    assert [float(v) for v in loss_row.split()[2:]] == pytest.approx(
        [finals[a]["train_loss"], finals[b]["train_loss"]], rel=1e-3)
    assert any(ln.startswith("final grad_cosine") for ln in lines)   # the shared instrument
    assert png.stat().st_size > 0
    assert main(["runs", "compare", a, "--store", store]) == 2          # one run
    assert f"at least two runs, got one ({a})" in capsys.readouterr().err
    assert main(["runs", "compare", a, a_prefix, "--store", store]) == 2  # one run, twice
    assert f"{a}, {a_prefix} all name run {a}" in capsys.readouterr().err
    assert main(["runs", "compare", a, b, "--metric", "hess/top_1", "--store", store]) == 2
    assert "no run recorded hess/top_1;" in capsys.readouterr().err
    assert main(["runs", "compare", a, b, "--metric", "test_los", "--store", store]) == 2
    assert "no run recorded test_los (did you mean test_loss?)" in capsys.readouterr().err
    # runs of one config file share its name: each curve is named by what sets it apart
    drawn = {}
    monkeypatch.setattr(training_figures, "compare_runs_figure",
                        lambda h, m, **runs: drawn.update(h) or plt.figure())
    assert main(["runs", "compare", a, b, "--metric", "test_loss", "--store", store,
                 "--plot", str(png)]) == 0
    assert list(drawn) == [f"{a} (optimizer.lr=0.05)", f"{b} (optimizer.lr=0.01)"]
    # run folders stand for their runs, and say which store holds them
    capsys.readouterr()
    assert main(["runs", "compare", str(tmp_path / "0.05"), str(tmp_path / "0.01")]) == 0
    assert any(ln.startswith("optimizer.lr") for ln in capsys.readouterr().out.splitlines())
    assert main(["runs", "compare", str(tmp_path), a, "--store", store]) == 2
    assert "not a run's" in capsys.readouterr().err
    # an experiment's report folder: what to do with it instead of "no readable results.json"
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "results.json").write_text(json.dumps(
        {"experiment": {"name": "grid"}, "scale": "smoke", "runs": [{}, {}], "store": store}))
    assert main(["runs", "compare", str(tmp_path / "report"), a]) == 2
    assert (f"report holds the report of experiment grid (scale smoke, 2 runs), not one run: "
            f"`sgdlab runs list --experiment grid --scale smoke --store {store}` lists its runs"
            ) in capsys.readouterr().err


def test_a_run_on_characters_prints_lists_and_compares_its_perplexities(tmp_path, capsys):
    cfg = tmp_path / "chars.yaml"
    cfg.write_text("name: chars\n"
                   "data: {name: text_chars, options: {max_chars: 6000, seq_len: 20}}\n"
                   "model: {name: char-lstm, options: {hidden: 8, layers: 1}}\n"
                   "optimizer: {name: adam, lr: 0.01}\n"
                   "train: {epochs: 1, batch_size: 50, threads: 1, progress: false}\n")
    store = str(tmp_path / "runs.sqlite")
    finals = []
    for lr in ("0.01", "0.02"):
        assert main(["train", str(cfg), "--store", store, "--out", str(tmp_path / lr),
                     "--set", f"optimizer.lr={lr}"]) == 0
        (final,) = [ln for ln in capsys.readouterr().out.splitlines()
                    if ln.startswith("  final:")]
        printed = dict(zip(final.split()[1::2], map(float, final.split()[2::2])))
        for split in ("train", "test"):
            assert printed[f"{split}_perplexity"] == pytest.approx(
                math.exp(printed[f"{split}_loss"]), rel=2e-3)
        finals.append(json.loads((tmp_path / lr / "results.json").read_text())["final"])
    assert main(["runs", "list", "--store", store]) == 0
    head, *rows = capsys.readouterr().out.splitlines()[:3]
    col = head.index("TEST_PPL")                # columns padded to their header's place
    assert [float(r[col:].split()[0]) for r in rows] == pytest.approx(
        [f["test_perplexity"] for f in finals], rel=1e-3)
    a, b = (r["id"] for r in RunStore(store).list_runs())
    assert main(["runs", "compare", a, b, "--store", store]) == 0
    (row,) = [ln for ln in capsys.readouterr().out.splitlines()
              if ln.startswith("final test_perplexity")]
    assert [float(v) for v in row.split()[2:]] == pytest.approx(
        [f["test_perplexity"] for f in finals], rel=1e-3)


def test_runs_compare_plot_path_is_checked_first_and_printed_as_written(tmp_path, capsys):
    store = RunStore(tmp_path / "runs.sqlite")
    ids = []
    for lr in (0.1, 0.2):
        rid = store.create_run({"optimizer": {"lr": lr}}, name="r", env={}, status="finished")
        store.log_many(rid, [("train_loss", 0, 1.0), ("train_loss", 5, lr)])
        ids.append(rid)
    base = ["runs", "compare", *ids, "--store", str(store.path), "--plot"]
    assert main([*base, str(tmp_path / "new" / "cmp.png")]) == 0   # its folder is made
    assert (tmp_path / "new" / "cmp.png").stat().st_size > 0
    capsys.readouterr()
    assert main([*base, str(tmp_path / "cmp")]) == 0   # no suffix: matplotlib adds .png
    assert f"wrote {tmp_path / 'cmp.png'}" in capsys.readouterr().out
    assert (tmp_path / "cmp.png").is_file() and not (tmp_path / "cmp").exists()
    assert main([*base, str(tmp_path / "cmp.xyz")]) == 2
    assert "matplotlib cannot write .xyz files; use " in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main([*base, str(tmp_path / "file" / "cmp.png")]) == 2
    assert f"{tmp_path / 'file'} is a file, not a folder" in capsys.readouterr().err


def test_runs_compare_plot_labels_the_axes_with_the_metrics_and_their_units(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    ids = []
    for lr in (0.1, 0.2):
        rid = store.create_run({"optimizer": {"lr": lr}}, name="r", env={}, status="finished")
        store.log_many(rid, [("train_loss", 0, 1.0), ("train_loss", 5, lr),
                             ("test_acc", 5, 0.5), ("entropy_angle/degrees", 5, 30.0)])
        ids.append(rid)
    svg = tmp_path / "cmp.svg"
    assert main(["runs", "compare", *ids, "--store", str(store.path), "--metric", "train_loss",
                 "--metric", "test_acc", "--metric", "entropy_angle/degrees",
                 "--plot", str(svg)]) == 0
    # a text is an SVG <text> element, or glyphs after a comment that holds it
    # (rcParams["svg.fonttype"] "path": <!-- train loss -->)
    texts = {a or b for a, b in re.findall(r"<!-- (.*?) -->|<text[^>]*>([^<]*)</text>",
                                           svg.read_text())}
    assert {"train loss", "test accuracy", "entropy_angle (degrees)", "step"} <= texts


def test_runs_compare_shows_the_final_values_a_run_keeps_in_its_summary(tmp_path, capsys):
    # a sweep's final measurements (the Hessian at the end, an escape rate) are in the
    # summary, not in a series: compare showed identical losses and nothing of what differed
    store = RunStore(tmp_path / "runs.sqlite")
    ids = []
    for mode, top in (("eval", 0.4658), ("train", 8.147)):
        rid = store.create_run({"final": {"bn_mode": mode}}, name="r", env={},
                               status="finished")
        store.log_many(rid, [("test_acc", 0, 0.1), ("test_acc", 2, 0.13)])
        store.set_summary(rid, {"hessian_top": top, "test_acc": 0.13, "status": "finished"})
        ids.append(rid)
    base = ["runs", "compare", *ids, "--store", str(store.path)]
    assert main(base) == 0
    rows = {ln.split("  ")[0].strip(): ln.split()[2:] for ln in
            capsys.readouterr().out.splitlines() if ln.startswith("final ")}
    assert rows == {"final test_acc": ["0.13", "0.13"],
                    "final hessian_top": ["0.4658", "8.147"]}     # the status is no value
    assert main([*base, "--metric", "hessian_top", "--metric", "test_acc"]) == 0
    assert [ln.split()[1] for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("final ")] == ["hessian_top", "test_acc"]    # in the order asked
    assert main([*base, "--metric", "hessian_tp"]) == 2
    assert "(did you mean hessian_top?)" in capsys.readouterr().err
    assert main([*base, "--metric", "hessian_top", "--plot", str(tmp_path / "c.png")]) == 2
    assert ("nothing to plot: hessian_top is a final value of the runs' summaries, not a "
            "recorded series") in capsys.readouterr().err
    sweep = store.create_run({"run_key": "k", "params": {"lr": 0.1}}, name="s|seed=0",
                             experiment="grid", env={}, status="finished")
    assert main(["runs", "compare", ids[0], sweep, "--store", str(store.path)]) == 0
    assert "their keys do not line up, their final values do" in capsys.readouterr().out
    store.set_status(ids[1], "interrupted")     # not ended: its last value, at its step
    assert main([*base, "--metric", "test_acc"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].split()[2:] == ["0.13", "0.13", "@2"]
    assert out[-1] == "(VALUE @STEP: the last value of a run that has not finished)"


def test_runs_compare_lines_a_run_of_train_up_with_a_sweep_run_by_their_settings(tmp_path,
                                                                                 capsys):
    # a sweep run stored its params, a run of `sgdlab train` its run config: compare printed
    # ~50 rows of keys that one side alone has, though the settings were the same
    from sgdlab.experiments.spec import RunSpec
    from sgdlab.experiments.sweep import run_sweep

    store = tmp_path / "runs.sqlite"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("data: {name: cubic}\nmodel: {name: zhu-mlp-1-6-6-6-1}\n"
                   "optimizer: {name: sgd, lr: 0.05}\n"
                   "train: {epochs: 1, batch_size: 5, threads: 1, progress: false}\n")
    assert main(["train", str(cfg), "--store", str(store), "--no-progress"]) == 0
    params = {"dataset": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
              "optimizer": {"name": "sgd", "lr": 0.05}, "batch_size": 5, "epochs": 1}
    runs = [RunSpec("grid", 1, "smoke", f"lr={lr}", {**params, "optimizer": {
        "name": "sgd", "lr": lr}}, 0, "train") for lr in (0.05, 0.1)]
    assert not run_sweep(runs, store_path=str(store), progress=None).failed
    trained, same, other = [r["id"] for r in RunStore(store).list_runs()]
    capsys.readouterr()

    def compared(*ids: str) -> dict[str, list[str]]:
        assert main(["runs", "compare", *ids, "--store", str(store)]) == 0
        out = capsys.readouterr().out
        assert "(compared on their training settings" in out
        return {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", ln.strip())
                                                  for ln in out.splitlines())
                if len(cells) > 1 and cells[0] not in ids}

    rows = compared(trained, same)
    assert [k for k in rows if not k.startswith("final ")] == ["name", "status"]
    # the same settings trained the same run
    assert rows["final train_loss"][0] == rows["final train_loss"][1]
    rows = compared(trained, other)
    assert [k for k in rows if not k.startswith("final ")] == ["name", "status",
                                                               "optimizer.lr"]
    assert rows["optimizer.lr"] == ["0.05", "0.1"]
    # two runs of the sweep: by their params, as before (their settings not repeated)
    assert main(["runs", "compare", same, other, "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "params.optimizer.lr" in out and "training." not in out
    summary = tmp_path / "summary.csv"
    assert main(["runs", "export", str(summary), "--summary", "--run", trained, "--run", other,
                 "--store", str(store)]) == 0
    head = summary.read_text().splitlines()[0].split(",")
    assert [h for h in head if h.startswith("config.")] == ["config.optimizer.lr"]


def test_runs_compare_names_a_sweeps_curves_by_their_runs_names(tmp_path, monkeypatch):
    # the legend read "(label=lr=0.1,batch_size=25, params.batch_size=25, params.optimizer.lr=
    # 0.1, …)" for a sweep's runs, whose names say it, and led with `command=` for two
    # readings of one run
    import matplotlib.pyplot as plt

    from sgdlab.report.figures import training as training_figures

    store = RunStore(tmp_path / "runs.sqlite")

    def sweep_run(name, lr, mode, command):
        rid = store.create_run({"command": command, "label": name, "run_key": f"{lr}{mode}",
                                "params": {"lr": lr, "bn_mode": mode}}, name=f"{name}|seed=0",
                               env={}, status="finished")
        store.log_many(rid, [("train_loss", 0, 1.0), ("train_loss", 5, lr)])
        return rid

    a, b = sweep_run("lr=0.1", 0.1, "eval", "x"), sweep_run("lr=0.2", 0.2, "eval", "x")
    c = sweep_run("lr=0.1", 0.1, "train", "x --reading bn=train")
    drawn = []
    monkeypatch.setattr(training_figures, "compare_runs_figure",
                        lambda h, m, **runs: drawn.append(list(h)) or plt.figure())
    for pair in ((a, b), (a, c)):
        assert main(["runs", "compare", *pair, "--store", str(store.path),
                     "--plot", str(tmp_path / "c.png")]) == 0
    assert drawn == [
        [f"{a} (lr=0.1|seed=0)", f"{b} (lr=0.2|seed=0)"],
        [f"{a} (params.bn_mode=eval, command=x, run_key=0.1eval)",
         f"{c} (params.bn_mode=train, command=x --reading bn=train, run_key=0.1train)"]]


def test_runs_compare_names_curves_by_the_optimizer_and_model_before_the_data(tmp_path,
                                                                              monkeypatch):
    # two runs on other data, model and optimizer were drawn as "(data.file=..., data.options=
    # {}, data.sha256=ba88d12c..., …)": the optimizer and the model cut off; what each run
    # is (its sections' names) comes first
    import matplotlib.pyplot as plt

    from sgdlab.report.figures import training as training_figures

    store = RunStore(tmp_path / "runs.sqlite")
    a = store.create_run({"data": {"file": "/d.pt", "sha256": "ab12", "options": {}},
                          "model": {"name": "lin"}, "optimizer": {"name": "sgd", "lr": 0.1}},
                         name="r", env={}, status="finished")
    b = store.create_run({"data": {"name": "digits", "options": {"test_size": 300}},
                          "model": {"name": "cnn"}, "optimizer": {"name": "entropy_sgd", "lr": 1}},
                         name="r", env={}, status="finished")
    for rid in (a, b):
        store.log_many(rid, [("train_loss", 0, 1.0), ("train_loss", 5, 0.5)])
    drawn = []
    monkeypatch.setattr(training_figures, "compare_runs_figure",
                        lambda h, m, **runs: drawn.append(list(h)) or plt.figure())
    assert main(["runs", "compare", a, b, "--store", str(store.path),
                 "--plot", str(tmp_path / "c.png")]) == 0
    assert drawn == [[f"{a} (optimizer.name=sgd, model.name=lin, optimizer.lr=0.1, …)",
                      f"{b} (optimizer.name=entropy_sgd, model.name=cnn, data.name=digits, …)"]]


def test_runs_compare_tells_configs_apart_past_the_shown_width(tmp_path, capsys):
    # the values are shown cut at 40 characters; they are compared whole
    store = RunStore(tmp_path / "runs.sqlite")
    ids = [store.create_run({"model": {"widths": [16] * 11 + [last]}}, name="r", env={},
                            status="finished") for last in (16, 32)]
    assert main(["runs", "compare", *ids, "--store", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "identical" not in out
    (row,) = [ln for ln in out.splitlines() if ln.startswith("model.widths ")]
    assert row.split("  ")[1:] == ["…16, 16, 16, 16, 16, 16, 16, 16, 16, 16]",
                                   "…16, 16, 16, 16, 16, 16, 16, 16, 16, 32]"]


def test_runs_compare_of_folders_whose_runs_are_in_two_stores_says_so(tmp_path, capsys):
    folders = []
    for name in ("a", "b"):
        store = RunStore(tmp_path / f"{name}.sqlite")
        rid = store.create_run({"k": name}, name=name, env={}, status="finished")
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(
            json.dumps({"run_id": rid, "store": str(store.path)}))
        folders.append(str(tmp_path / name))
    assert main(["runs", "compare", *folders]) == 2
    err = capsys.readouterr().err
    assert (f"{folders[1]} records its run in {tmp_path / 'b.sqlite'}, {folders[0]} in "
            f"{tmp_path / 'a.sqlite'}") in err
    # with --store, the folders name runs of that store
    assert main(["runs", "compare", *folders, "--store", str(tmp_path / "a.sqlite")]) == 2
    assert "no run" in capsys.readouterr().err


def test_runs_export_takes_run_folders_as_show_and_compare_do(tmp_path, capsys, monkeypatch):
    """`runs export --run FOLDER` looked FOLDER up as a run id ("no run 'results/run1'");
    a folder stands for its run and, without --store, its store, as for `runs show`."""
    store = RunStore(tmp_path / "lab" / "runs.sqlite")
    ids = {}
    for name in ("a", "b", "c"):
        ids[name] = store.create_run({"k": name}, name=name, env={}, status="finished")
        store.log_metrics(ids[name], 1, {"loss": 0.5})
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(
            json.dumps({"run_id": ids[name], "store": str(store.path)}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SGDLAB_STORE", raising=False)
    assert main(["runs", "export", "e.csv", "--run", "a", "--run", ids["c"][:-1]]) == 0
    rows = list(csv.DictReader(open(tmp_path / "e.csv")))
    assert [r["run_id"] for r in rows] == [ids["a"], ids["c"]]
    assert not (tmp_path / "sgdlab-runs").exists()
    capsys.readouterr()
    assert main(["runs", "export", "e.csv", "--run", "results/run1"]) == 2
    assert "results/run1: no such folder (give a run id" in capsys.readouterr().err
    (tmp_path / "a" / "metrics.csv").write_text("")     # a file in a run folder, not a run
    assert main(["runs", "export", "e.csv", "--run", "a/metrics.csv"]) == 2
    assert "a/metrics.csv: is a file, not a folder (give a run id" in capsys.readouterr().err
    other = RunStore(tmp_path / "other.sqlite")
    rid = other.create_run({"k": "d"}, name="d", env={}, status="finished")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "run.json").write_text(json.dumps({"run_id": rid,
                                                         "store": str(other.path)}))
    assert main(["runs", "export", "e.json", "--run", "a", "--run", "d"]) == 2
    assert "runs are exported within one store" in capsys.readouterr().err


def test_runs_export_selects_an_experiment_and_writes_a_row_per_run(tmp_path, capsys):
    # the CSV held the series alone: a sweep's final values (its summary) were in no CSV, and
    # an experiment's runs could be exported only by listing every id
    store = RunStore(tmp_path / "runs.sqlite")
    ids = []
    for lr, top in ((0.05, 0.5), (0.2, float("inf"))):
        # a sweep's run: its grid point (for TensorBoard) repeats its params, not a column
        rid = store.create_run({"params": {"lr": lr, "epochs": 1}, "grid": {"lr": lr},
                                "run_key": "k"}, name=f"lr={lr}", experiment="grid", env={},
                               status="finished")
        store.log_metrics(rid, 1, {"test_acc": 0.5})
        store.set_summary(rid, {"hessian_top": top, "steps": 2, "status": "finished"})
        ids.append(rid)
    other = store.create_run({"k": 1}, name="other", env={}, status="failed")
    base = ["runs", "export", "--store", str(store.path)]
    assert main([*base, str(tmp_path / "s.csv"), "--summary", "--experiment", "grid"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [r["run_id"] for r in rows] == ids
    assert list(rows[0])[5:] == ["config.params.lr", "hessian_top", "steps"]
    assert [(r["config.params.lr"], r["hessian_top"], r["steps"]) for r in rows] == [
        ("0.05", "0.5", "2"), ("0.2", "inf", "2")]
    assert main([*base, str(tmp_path / "e.csv"), "--status", "finished", "--run", other,
                 "--run", ids[0]]) == 0
    assert {r["run_id"] for r in csv.DictReader(open(tmp_path / "e.csv"))} == {ids[0]}
    assert main([*base, str(tmp_path / "e.csv"), "--experiment", "gird"]) == 2
    assert ("no runs with experiment 'gird' to export in " in (err := capsys.readouterr().err)
            and "(did you mean grid?)" in err)
    assert main([*base, str(tmp_path / "s.json"), "--summary"]) == 2
    assert "--summary writes a CSV table" in capsys.readouterr().err
    for alone in (["--summary"], ["--format", "json"]):   # with --tensorboard only: no effect
        assert main([*base, "--tensorboard", str(tmp_path / "tb"), *alone]) == 2
        assert "says how PATH is written; give PATH" in capsys.readouterr().err
    assert not (tmp_path / "tb").exists()


def test_runs_of_an_experiment_at_two_scales_are_told_apart_and_selected(tmp_path, capsys):
    # their names are the same: `runs list` showed two identical lines for each grid point
    store = RunStore(tmp_path / "runs.sqlite")
    ids = {scale: store.create_run({"scale": scale, "run_key": scale}, name="lr=0.1|seed=0",
                                   experiment="grid", env={}, status="finished")
           for scale in ("smoke", "cpu")}
    trained = store.create_run({"optimizer": {"lr": 0.1}}, name="mine", env={},
                               status="finished")
    assert [r["id"] for r in store.list_runs(scale="cpu")] == [ids["cpu"]]
    base = ["--store", str(store.path)]
    assert main(["runs", "list", *base]) == 0
    head, *rows, note = capsys.readouterr().out.splitlines()
    col = head.index("SCALE")
    assert [r[col:].split()[0] for r in rows] == ["smoke", "cpu", "finished"]   # none: blank
    assert note == "(runs of one name at several scales: `--scale smoke` lists those of one)"
    assert main(["runs", "list", "--scale", "smoke", *base]) == 0
    assert [r.split()[0] for r in capsys.readouterr().out.splitlines()[1:]] == [ids["smoke"]]
    assert main(["runs", "list", "--json", *base]) == 0
    assert [r["scale"] for r in json.loads(capsys.readouterr().out)] == ["smoke", "cpu", None]
    assert main(["runs", "list", "--scale", "paper", *base]) == 0
    assert capsys.readouterr().out == f"no runs with scale 'paper' in {store.path}\n"
    assert main(["runs", "export", str(tmp_path / "e.csv"), "--scale", "cpu", *base]) == 0
    assert {r["run_id"] for r in csv.DictReader(open(tmp_path / "e.csv"))} == {ids["cpu"]}
    assert main(["runs", "delete", "--scale", "smoke", "--yes", *base]) == 0
    assert [r["id"] for r in store.list_runs()] == [ids["cpu"], trained]


def _one_finished_run(tmp_path) -> tuple[str, list[str]]:
    """A store at ``tmp_path`` holding one finished run with one loss; its id and the
    ``runs export`` arguments that name the store."""
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.create_run({"k": 1}, name="a", env={}, status="finished")
    store.log_metrics(rid, 1, {"loss": 0.5})
    return rid, ["runs", "export", "--store", str(store.path)]


def test_runs_export_to_a_name_of_another_format_is_refused_unless_told(tmp_path, capsys):
    # x.xlsx received CSV text, "wrote x.xlsx (csv)", a file a spreadsheet cannot open
    rid, base = _one_finished_run(tmp_path)
    assert main(base + [str(tmp_path / "x.xlsx")]) == 2
    assert ("x.xlsx: no export format for the suffix '.xlsx'; name a .csv or .json file, or "
            "say which with --format csv|json") in capsys.readouterr().err
    assert not (tmp_path / "x.xlsx").exists()
    assert main(base + [str(tmp_path / "x.xlsx"), "--format", "csv"]) == 0
    assert main(base + [str(tmp_path / "plain")]) == 0          # no suffix: CSV, as before
    for name in ("x.xlsx", "plain"):
        rows = list(csv.DictReader(open(tmp_path / name)))
        assert [(r["run_id"], r["metric"]) for r in rows] == [(rid, "loss")]


def test_runs_compare_names_a_list_item_one_config_lacks_in_one_row():
    from sgdlab.report.settings import differing_keys, flat_config

    flats = [flat_config({"train": {"epochs": 2}, "measure": [{"name": "hessian", "k": 2},
                                                        {"name": "noise", "k": 5}]}),
             flat_config({"train": {"epochs": 3}, "measure": [{"name": "hessian", "k": 3}]})]
    assert differing_keys(flats) == ["measure", "measure[0].k", "measure[1]", "train.epochs"]
    assert [f.get("measure[1]", "—") for f in flats] == ["noise", "—"]
    assert [f["measure"] for f in flats] == ["2 items", "1 item"]


def test_config_diff_orders_list_items_by_number():
    from sgdlab.report.settings import differing_keys, flat_config

    items = [{"name": "dynamics", "every": i} for i in range(12)]
    a = flat_config({"measure": items, "optimizer": {"lr": 0.1}})
    b = flat_config({"measure": [dict(m, every=m["every"] + 1) for m in items],
               "optimizer": {"lr": 0.1}})
    assert differing_keys([a, b]) == [f"measure[{i}].every" for i in range(12)]


def test_runs_compare_prints_the_config_name_once(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store = str(tmp_path / "runs.sqlite")
    for name in ("tiny-a", "tiny-b"):
        assert main(["train", str(cfg), "--store", store, "--out", str(tmp_path / name),
                     "--set", f"name={name}", "--set", "train.epochs=1"]) == 0
    assert " steps (1 epoch, " in capsys.readouterr().out
    assert main(["runs", "compare", str(tmp_path / "tiny-a"), str(tmp_path / "tiny-b")]) == 0
    lines = capsys.readouterr().out.splitlines()
    (row,) = [ln for ln in lines if ln.startswith("name ")]
    assert row.split()[1:] == ["tiny-a", "tiny-b"]


def test_a_run_with_micro_batches_stopped_and_resumed_ends_as_the_uninterrupted_one(
        tmp_path, capsys):
    """``train.micro_batch: 3`` (batches of 4 in chunks of 3 and 1): the stored config keeps
    it, and the resume, which trains that config again from its checkpoint, ends at the
    uninterrupted run's weights."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("epochs: 6", "epochs: 2") + "measure: [{name: _test_kill, "
                                                           "every: 1}]\n")
    store_path = tmp_path / "runs.sqlite"
    args = ["train", str(cfg), "--store", str(store_path), "--set", "train.micro_batch=3"]
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    assert _terminated_at(8, [*args, "--out", str(tmp_path / "stopped")]) == 130
    store = RunStore(store_path)
    ref, stopped = store.list_runs()
    assert stopped["config"]["train"]["micro_batch"] == 3 and stopped["status"] == "interrupted"
    assert main(["resume", stopped["id"], "--store", str(store_path)]) == 0
    assert "resumed from step 7" in capsys.readouterr().out
    a, b = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True)["model"]
            for d in ("ref", "stopped"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_and_show_take_the_run_folder(tmp_path, capsys, monkeypatch):
    """The folder a run was written to stands for the run and its store, as in `runs
    compare`: `sgdlab resume FOLDER` from anywhere, without --store."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + "measure: [{name: _test_kill, every: 1}]\n")
    store_path, out = tmp_path / "lab" / "runs.sqlite", tmp_path / "run"
    p = _cli(["train", str(cfg), "--store", str(store_path), "--out", str(out)],
             {"SGDLAB_TEST_TERM_AT": "8"})
    assert p.returncode == 130, p.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("SGDLAB_STORE", raising=False)
    assert main(["runs", "show", str(out)]) == 0
    assert "status: interrupted" in capsys.readouterr().out
    assert main(["resume", str(out)]) == 0
    assert "finished after 30 steps (6 epochs" in capsys.readouterr().out
    assert not (elsewhere / "sgdlab-runs").exists()            # no new store here
    (run,) = RunStore(store_path).list_runs()
    assert run["status"] == "finished"
    (out / "run.json").write_text("{")                         # unreadable, no results.json...
    (out / "results.json").unlink()
    assert main(["runs", "show", str(out)]) == 2
    assert "is a folder but not a run's" in capsys.readouterr().err


def test_sigterm_mid_step_saves_that_step_and_the_resume_goes_on_from_it(tmp_path, capsys):
    """SIGTERM during step 17 (checkpoints every 7): the run stopped with its last checkpoint
    at 14 and said only how to continue. The step now ends and is saved; the message says so,
    and the resume goes on from step 17 to the uninterrupted run's weights."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + "measure: [{name: _test_kill, every: 1}]\n")
    store_path, ref_dir, out = tmp_path / "runs.sqlite", tmp_path / "ref", tmp_path / "run"
    assert main(["train", str(cfg), "--store", str(store_path), "--out", str(ref_dir)]) == 0
    os.environ["SGDLAB_TEST_TERM_IN"] = "17"
    try:
        code = main(["train", str(cfg), "--store", str(store_path), "--out", str(out)])
    finally:
        del os.environ["SGDLAB_TEST_TERM_IN"]
    err = capsys.readouterr().err
    (rid,) = [r["id"] for r in RunStore(store_path).list_runs() if r["status"] != "finished"]
    assert code == 130 and "Traceback" not in err, err
    assert (f"run {rid} interrupted at step 17, saved in its checkpoint there; continue it "
            f"with: sgdlab resume {rid} --store {store_path}") in err
    assert main(["resume", rid, "--store", str(store_path)]) == 0
    assert "resuming run " + rid + " from its last checkpoint, step 17" in capsys.readouterr().out
    ref = torch.load(ref_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    res = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(ref[k], res[k]) for k in ref)


def test_ctrl_c_after_training_names_the_resume_command_and_records_interrupted(
        tmp_path, capsys, monkeypatch):
    """Ctrl-C while the run's figures or results.json are written (training done, the run
    not yet finished): the same line and status as an interrupt during training (it printed
    a bare "interrupted" and left the run recorded running), and the resume completes it."""
    import sgdlab.report.figures.training as figures

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store_path, out = tmp_path / "runs.sqlite", tmp_path / "run"
    drawn = figures.learning_curves

    monkeypatch.setattr(figures, "learning_curves", interrupted)
    assert main(["train", str(cfg), "--store", str(store_path), "--out", str(out)]) == 130
    (run,) = RunStore(store_path).list_runs()
    assert (f"run {run['id']} interrupted; continue it with: sgdlab resume {run['id']} "
            f"--store {store_path}") in capsys.readouterr().err
    assert run["status"] == "interrupted" and not (out / "results.json").exists()
    monkeypatch.setattr(figures, "learning_curves", drawn)
    assert main(["resume", run["id"], "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    # where it goes on is said as it starts, not only once it has finished
    assert out.startswith(f"sgdlab: resuming run {run['id']} from its last checkpoint, step "
                          "30\n"), out
    assert "finished after 30 steps" in out


def test_ctrl_c_while_a_run_is_announced_or_its_outcome_printed_says_how_it_stands(
        tmp_path, capsys, monkeypatch):
    """Ctrl-C once the run is recorded but before it trains (its id and resume command being
    printed) left it recorded running with a bare "interrupted"; now it is recorded
    interrupted, named with its resume command, and the resume finishes it. Ctrl-C while a
    finished run's outcome is printed said a bare "interrupted" too: now that the run is
    complete and stored, where its results are, and how to show it."""
    import sgdlab.cli.train as train_cli

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store_path = tmp_path / "runs.sqlite"

    monkeypatch.setattr(train_cli, "announce", interrupted)
    argv = ["train", str(cfg), "--store", str(store_path), "--out", str(tmp_path / "a")]
    assert main(argv) == 130
    (run,) = RunStore(store_path).list_runs()
    assert (f"run {run['id']} interrupted; continue it with: sgdlab resume {run['id']} "
            f"--store {store_path}") in capsys.readouterr().err
    assert run["status"] == "interrupted"
    monkeypatch.undo()
    assert main(["resume", run["id"], "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "finished after 30 steps" in out and "resuming" not in out   # no checkpoint: step 0

    monkeypatch.setattr(train_cli, "_rel", interrupted)      # amid the outcome's lines
    argv = ["train", str(cfg), "--store", str(store_path), "--out", str(tmp_path / "b")]
    assert main(argv) == 130
    (run,) = [r for r in RunStore(store_path).list_runs() if r["id"] != run["id"]]
    err = capsys.readouterr().err
    assert (f"sgdlab: interrupted while its outcome was printed: run {run['id']} had ended "
            f"(finished) and is stored, its results in {tmp_path / 'b' / 'results.json'}; "
            f"nothing is left to resume; show it with: sgdlab runs show {run['id']} "
            f"--store {store_path}") in err, err
    assert run["status"] == "finished"


def test_a_measurement_of_a_stopped_run_outlives_its_resume(tmp_path, capsys):
    """`sgdlab measure` of the checkpoint a stopped run left, then `sgdlab resume`: the resume
    keeps the rows its checkpoint had stored, and the measurement, logged after them."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store_path, out = tmp_path / "runs.sqlite", tmp_path / "run"
    assert main(["train", str(cfg), "--store", str(store_path), "--out", str(out)]) == 0
    assert main(["measure", str(out), "--what", "sharpness", "--samples", "2", "--subset",
                 "20", "--out", str(tmp_path / "m")]) == 0
    store = RunStore(store_path)
    (run,) = store.list_runs()
    before = store.metrics(run["id"])
    assert [k for k in before if k.startswith("measure/")]
    store.set_status(run["id"], "interrupted", "stopped after its last checkpoint")
    capsys.readouterr()
    assert main(["resume", str(out)]) == 0
    assert "finished after 30 steps" in capsys.readouterr().out
    assert RunStore(store_path).metrics(run["id"]) == before


def test_a_run_reading_a_relative_data_dir_is_measured_from_another_folder(tmp_path, capsys,
                                                                          monkeypatch):
    """data_dir is recorded absolute: `sgdlab measure` (and `resume`) of the run from another
    folder read the files the run was trained on."""
    from sgdlab.testing import make_idx_dir

    make_idx_dir(tmp_path / "data", n_train=20, n_test=10)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "digits-mlp", "--store", "runs.sqlite", "--out", "run",
                 "--no-progress", "--set", "data.name=mnist", "--set", "data.data_dir=data",
                 "--set", "train.epochs=1"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["measure", str(tmp_path / "run"), "--what", "sharpness", "--samples",
                 "2"]) == 0, capsys.readouterr().err
    (run,) = RunStore(tmp_path / "runs.sqlite").list_runs()
    assert run["config"]["data"]["data_dir"] == str((tmp_path / "data").resolve())


def test_resume_of_a_run_whose_folder_was_removed_says_so_and_rebuilds_it(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + "measure: [{name: _test_kill, every: 1}]\n")
    store_path, out, ref = tmp_path / "runs.sqlite", tmp_path / "run", tmp_path / "ref"
    assert main(["train", str(cfg), "--store", str(store_path), "--out", str(ref)]) == 0
    p = _cli(["train", str(cfg), "--store", str(store_path), "--out", str(out)],
             {"SGDLAB_TEST_TERM_AT": "12"})
    assert p.returncode == 130, p.stderr
    rid = json.loads((out / "run.json").read_text())["run_id"]
    import shutil

    shutil.rmtree(out)
    capsys.readouterr()
    assert main(["resume", rid, "--store", str(store_path)]) == 0
    captured = capsys.readouterr()
    assert f"no checkpoint at {out / 'checkpoints' / 'last.pt'}" in captured.err
    assert f"run {rid} restarts from step 0" in captured.err
    assert "finished after 30 steps" in captured.out
    # the folder again says which run it holds, so tools that start from it work
    assert json.loads((out / "run.json").read_text())["run_id"] == rid
    assert (out / "config.yaml").read_text() == (ref / "config.yaml").read_text()
    store = RunStore(store_path)
    ref_id = json.loads((ref / "run.json").read_text())["run_id"]
    assert store.metrics(rid) == store.metrics(ref_id)


def test_runs_json_of_a_diverged_run_is_strict_and_its_table_unchanged(tmp_path, capsys):
    """`runs list --json` and `runs show --json` write the non-finite values of a diverged
    run as the strings "nan" / "inf" (strict JSON; null would read as a value not there);
    the store keeps them, so the tables still say nan."""
    store_path = tmp_path / "runs.sqlite"
    store = RunStore(store_path)
    rid = store.create_run({"optimizer": {"lr": 1e6}}, name="big-lr", env={})
    store.log_metrics(rid, 0, {"train_loss": 0.5, "param_norm": 3.0})
    store.log_metrics(rid, 1, {"train_loss": float("nan"), "param_norm": float("inf")})
    store.complete_run(rid, "diverged", summary={"steps": 1, "test_loss": float("nan")},
                       message="non-finite training loss")
    capsys.readouterr()
    assert main(["runs", "list", "--json", "--store", str(store_path)]) == 0
    (listed,) = strict_loads(capsys.readouterr().out)
    assert listed["summary"] == {"steps": 1, "test_loss": "nan"}
    assert main(["runs", "show", rid, "--json", "--store", str(store_path)]) == 0
    shown = strict_loads(capsys.readouterr().out)
    assert shown["summary"] == listed["summary"]
    assert shown["metrics"] == {"param_norm": [[0, 3.0], [1, "inf"]],
                                "train_loss": [[0, 0.5], [1, "nan"]]}
    assert main(["runs", "show", rid, "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "summary: steps 1  test_loss nan" in out
    assert ["param_norm", "2", "1:", "inf"] in [ln.split() for ln in out.splitlines()]
    assert main(["runs", "list", "--store", str(store_path)]) == 0
    (row,) = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.startswith(rid)]
    assert row[1:5] == ["big-lr", "diverged", "1", "nan"]     # name, status, steps, test_loss


def test_printed_commands_name_the_store_by_its_absolute_path(tmp_path, capsys, monkeypatch):
    """`--store runs.sqlite` was printed as given in the commands that continue or show a run
    (`sgdlab train`'s announcement and summary, `runs list`'s footer, `runs show`): they
    worked only from the folder it was given in. The store's path is absolute (and quoted
    for the shell: this folder's name holds a space), and the commands work from elsewhere."""
    import shlex

    here = tmp_path / "my runs"
    here.mkdir()
    monkeypatch.chdir(here)
    store_path = here / "runs.sqlite"
    option = f"--store {shlex.quote(str(store_path))}"
    assert main(["train", "digits-mlp", "--store", "runs.sqlite", "--out", "run",
                 "--set", "train.max_steps=2", "--set", "train.epochs=1", "--no-progress"]) == 0
    store = RunStore("runs.sqlite")
    rid = store.list_runs()[0]["id"]
    out = capsys.readouterr().out
    assert f"continue it with: sgdlab resume {rid} {option})" in out          # announced
    assert f"(sgdlab runs show {rid} {option})" in out                         # summary
    store.set_status(rid, "interrupted")
    # runs of a sweep: its own command line, or the experiment's `sgdlab run`
    store.create_run({"run_key": "a", "scale": "smoke"}, experiment="grid",
                     status="interrupted")
    store.create_run({"run_key": "b", "command": "sgdlab run grid2 --out /o"},
                     experiment="grid2", status="interrupted")
    store.close()
    assert main(["runs", "list", "--store", "runs.sqlite"]) == 0
    footer = capsys.readouterr().out.split("continue with:\n")[1]
    hints = [ln.strip() for ln in footer.splitlines() if ln.startswith("  sgdlab")]
    assert hints == [f"sgdlab resume {rid} {option}",
                     f"sgdlab run grid --scale smoke {option}  (or the same `sgdlab run` "
                     "command that started it: a sweep reruns what the store lacks)",
                     f"sgdlab run grid2 --out /o {option}  (a sweep reruns what the store "
                     "lacks)"]
    assert main(["runs", "show", rid, "--store", "runs.sqlite"]) == 0
    assert f"continue it with: sgdlab resume {rid} {option}\n" in capsys.readouterr().out
    # the resume command's store, read from another folder, is the run's
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(hints[0])
    assert main(["runs", "show", rid] + argv[argv.index("--store"):]) == 0
    assert f"run {rid}" in capsys.readouterr().out


def test_runs_list_json_tells_a_damaged_checkpoint_from_none(tmp_path, capsys, monkeypatch):
    """`--json` gave checkpoint_step null both for a stopped run without a checkpoint (resume
    restarts it) and for one whose checkpoint cannot be read (resume stops), which the text
    listing tells apart; its "checkpoint" field says which, as the text does."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "digits-mlp", "--store", "runs.sqlite", "--out", "run",
                 "--set", "train.max_steps=2", "--set", "train.epochs=1", "--no-progress"]) == 0
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.list_runs()[0]["id"]
    store.set_status(rid, "interrupted")
    store.close()
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    step = torch.load(last, weights_only=True)["loop"]["step"]
    capsys.readouterr()

    def listed():
        assert main(["runs", "list", "--json", "--store", "runs.sqlite"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert main(["runs", "list", "--store", "runs.sqlite"]) == 0
        return row["checkpoint"], row["checkpoint_step"], capsys.readouterr().out

    state, at, text = listed()
    assert (state, at) == ("ok", step) and f"from its last checkpoint, step {step}" in text
    last.write_bytes(b"not a checkpoint")
    state, at, text = listed()
    assert (state, at) == ("unreadable", None) and f"checkpoint {last} cannot be read" in text
    last.unlink()
    state, at, text = listed()
    assert (state, at) == ("none", None) and "no checkpoint yet" in text


def test_train_names_its_tensorboard_folder(tmp_path, capsys, monkeypatch):
    # the summary named results, plots, checkpoint and store, not the event files'
    # DIR/<name>-<run id> folder, whose name only the run id tells
    monkeypatch.chdir(tmp_path)
    assert main(["train", "digits-mlp", "--store", "runs.sqlite", "--out", "run",
                 "--set", "train.max_steps=2", "--set", "train.epochs=1", "--no-progress",
                 "--tensorboard", "tb"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if "tensorboard:" in ln]
    folder, hint = line.split("tensorboard: ")[1].split("  ")
    assert (tmp_path / folder).is_dir() and any((tmp_path / folder).iterdir())
    assert (tmp_path / folder).parent == tmp_path / "tb" and hint == "(tensorboard --logdir tb)"


def test_runs_list_and_show_say_where_a_stopped_run_continues(tmp_path, capsys):
    """An interrupted run showed no steps and, once recorded interrupted (Ctrl-C, SIGTERM),
    no command: the listing now shows its last checkpoint's step and where resume starts."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + "measure: [{name: _test_kill, every: 1}]\n")
    store_path = tmp_path / "runs.sqlite"
    for at, out in ((17, "a"), (4, "b")):           # checkpoints every 7 steps: 14, none
        assert _terminated_at(at, ["train", str(cfg), "--store", str(store_path), "--out",
                                   str(tmp_path / out)]) == 130
    a, b = RunStore(store_path).list_runs()
    assert main(["runs", "list", "--store", str(store_path)]) == 0
    listing = capsys.readouterr().out
    (line,) = [ln for ln in listing.splitlines() if ln.startswith(a["id"])]
    assert line.split()[2:5] == ["interrupted", "14", "(ckpt)"]
    # no summary yet: the last evaluation (5-step epochs, one each) and its step
    assert RunStore(store_path).last_metric(a["id"], "test_loss")[0] == 15
    loss = RunStore(store_path).metrics(a["id"], "test_loss")["test_loss"][-1][1]
    assert line.split()[5:7] == [f"{loss:.4g}", "@15"]
    assert "(VALUE @STEP: the last evaluation of a run that has not finished)" in listing
    assert (f"sgdlab resume {a['id']} --store {store_path}\n"
            "    (resume continues from its last checkpoint, step 14)") in listing
    assert (f"sgdlab resume {b['id']} --store {store_path}\n"
            "    (no checkpoint yet: resume restarts it from step 0)") in listing
    assert main(["runs", "list", "--json", "--store", str(store_path)]) == 0
    assert [r["checkpoint_step"] for r in json.loads(capsys.readouterr().out)] == [14, None]
    assert main(["runs", "show", a["id"], "--store", str(store_path)]) == 0
    assert "(resume continues from its last checkpoint, step 14)" in capsys.readouterr().out
    assert main(["resume", a["id"], "--store", str(store_path)]) == 0
    assert "resumed from step 14" in capsys.readouterr().out


def test_a_damaged_checkpoint_is_named_not_silently_restarted_from_step_0(tmp_path, capsys):
    """A truncated checkpoint was listed as "no readable checkpoint: resume restarts it from
    step 0", while resume refuses it (restarting would lose the steps it trained)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + "measure: [{name: _test_kill, every: 1}]\n")
    store_path, out = tmp_path / "runs.sqlite", tmp_path / "a"
    p = _cli(["train", str(cfg), "--store", str(store_path), "--out", str(out)],
             {"SGDLAB_TEST_TERM_AT": "17"})
    assert p.returncode == 130, p.stderr
    ckpt = out / "checkpoints" / "last.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:len(data) // 2])
    (run,) = RunStore(store_path).list_runs()
    rows = RunStore(store_path).count_metrics(run["id"], measured=False)
    assert rows > 0
    assert main(["runs", "list", "--store", str(store_path)]) == 0
    note = (f"(its checkpoint {ckpt} cannot be read: resume stops and says why; remove the "
            "file to restart the run from step 0)")
    assert note in capsys.readouterr().out
    assert main(["runs", "show", run["id"], "--store", str(store_path)]) == 0
    assert note in capsys.readouterr().out
    assert main(["resume", run["id"], "--store", str(store_path)]) == 2
    err = capsys.readouterr().err
    assert f"cannot read checkpoint {str(ckpt)!r}: the file is truncated" in err
    assert "to restart the run from step 0 instead, remove that file" in err
    assert ckpt.read_bytes() == data[:len(data) // 2]              # left as it was
    assert RunStore(store_path).count_metrics(run["id"], measured=False) == rows
    ckpt.unlink()            # as the note says: the run restarts from step 0 and finishes
    assert main(["resume", run["id"], "--store", str(store_path)]) == 0
    assert RunStore(store_path).get_run(run["id"])["status"] == "finished"


def test_a_checkpoint_failing_its_crc_is_not_listed_as_resumable(tmp_path):
    """The listing mapped the checkpoint without resume's checks: a flipped byte in its
    weights (resume refuses the file: CRC-32) read as 'resume continues from ... step 7'."""
    import zipfile

    from sgdlab.cli.runs import _resume_point, checkpoint_step
    from sgdlab.train.checkpoint import FORMAT_VERSION, save_checkpoint

    ckpt = tmp_path / "checkpoints" / "last.pt"
    ckpt.parent.mkdir()
    save_checkpoint(ckpt, {"format": FORMAT_VERSION, "loop": {"step": 7},
                           "model": {"w": torch.arange(1000.0)}})
    run = {"artifacts": [{"kind": "out_dir", "path": str(tmp_path)}], "config": {}}
    assert checkpoint_step(run) == 7
    with zipfile.ZipFile(ckpt) as z:
        (e,) = [i for i in z.infolist() if i.filename.endswith("/data/0")]
    at = e.header_offset + 30 + len(e.filename) + len(e.extra) + 100   # inside the weights
    data = bytearray(ckpt.read_bytes())
    data[at] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    assert checkpoint_step(run) is None
    assert _resume_point(run, None).startswith(f"its checkpoint {ckpt} cannot be read")


def test_zero_epochs_checkpoint_the_initial_weights_for_measure(tmp_path, capsys):
    """train.epochs=0 is no mistake to refuse (its description says so): the run trains
    nothing, evaluates the initial weights and checkpoints them, which measure reads."""
    from sgdlab.config.run import TrainSection

    assert "0: none" in TrainSection.model_fields["epochs"].description
    store, out = str(tmp_path / "s.sqlite"), tmp_path / "init"
    assert main(["train", "digits-mlp", "--set", "train.epochs=0", "--no-progress", "--out",
                 str(out), "--store", store]) == 0
    assert "finished after 0 steps (0 epochs" in capsys.readouterr().out
    [run] = RunStore(store).list_runs()
    assert run["summary"]["steps"] == 0 and math.isfinite(run["summary"]["test_loss"])
    assert main(["measure", str(out), "--what", "sharpness", "--store", store]) == 0
    assert "at step 0" in capsys.readouterr().out


def test_resume_and_measure_of_a_run_of_train_from_python_say_how_to_go_on_from_python(
        tmp_path, capsys):
    # they said "has no run folder recorded (was it started by `sgdlab train`?)" and "this run
    # recorded metrics only", although train() had written checkpoints and can resume them
    from torch import nn

    from sgdlab.data import Dataset
    from sgdlab.train import train

    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    model = nn.Sequential(nn.Linear(3, 2))
    store = RunStore(tmp_path / "runs.sqlite")
    result = train(model, nn.CrossEntropyLoss(), Dataset(x, y, x, y),
                   torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=8,
                   store=store, checkpoint_dir=tmp_path / "ck", progress=False)
    store.set_status(result.run_id, "interrupted")
    assert main(["resume", result.run_id, "--store", str(store.path)]) == 2
    err = capsys.readouterr().err
    assert (f"run {result.run_id} was trained by train() from Python (a Sequential the store "
            "cannot rebuild): continue it from Python with train(..., store=RunStore("
            f"{str(store.path)!r}), run_id={result.run_id!r}, checkpoint_dir=<its checkpoint "
            "folder>, resume=True)") in err
    assert main(["measure", result.run_id, "--store", str(store.path)]) == 2
    err = capsys.readouterr().err
    assert (f"run {result.run_id} was trained by train() from Python (a Sequential the store "
            "cannot rebuild): measure the model from Python with the functions of "
            "sgdlab.measure") in err


def test_ctrl_c_while_the_data_is_built_says_nothing_was_saved(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the data and model are built (minutes for a large dataset), before the
    run is recorded: it said a bare "interrupted"; now that nothing was saved and the same
    command starts again, and no store is left behind."""
    import sgdlab.config.runner as runner

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store_path = tmp_path / "runs.sqlite"

    monkeypatch.setattr(runner, "build_from_config", interrupted)
    assert main(["train", str(cfg), "--store", str(store_path)]) == 130
    err = capsys.readouterr().err
    assert err == ("sgdlab: interrupted while the data and model were built, before the run "
                   "was recorded: nothing was saved; the same command starts it again\n")
    assert not store_path.exists()


def test_init_from_warm_starts_and_its_resume_continues_from_its_own_checkpoint(tmp_path,
                                                                               capsys):
    """`sgdlab train --init-from RUN`: the run starts from RUN's last checkpoint under other
    settings; `runs show` says where from. Interrupted (SIGTERM at step 17) and resumed with
    the source run's folder gone, it continues from its own checkpoint (step 14), not the
    source, and ends bit for bit where the uninterrupted warm-started run did. One interrupted
    before its first checkpoint restarts from the source, and only from the weights it
    recorded."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + "measure: [{name: _test_kill, every: 1}]\n")
    store_path = tmp_path / "runs.sqlite"
    src, moved = tmp_path / "src", tmp_path / "src-moved"
    assert main(["train", str(cfg), "--store", str(store_path), "--out", str(src)]) == 0
    store = RunStore(store_path)
    (source,) = store.list_runs()
    capsys.readouterr()

    def warm():     # the source by a prefix no run recorded so far shares
        return ["--store", str(store_path), "--init-from",
                unique_prefix(source["id"], store_path), "--set", "optimizer.lr=0.01", "--set",
                "optimizer.momentum=0.5"]
    assert main(["train", str(cfg), "--out", str(tmp_path / "ref"), *warm()]) == 0
    ref_run = store.list_runs()[-1]
    assert main(["runs", "show", ref_run["id"], "--store", str(store_path)]) == 0
    shown = capsys.readouterr().out
    assert (f"warm start: from run {source['id']} at step 30 "
            f"({src / 'checkpoints' / 'last.pt'}; weights sha256 ") in shown, shown
    assert ref_run["config"]["model"]["init_from"] == source["id"]

    assert _terminated_at(17, ["train", str(cfg), "--out", str(tmp_path / "killed"),
                               *warm()]) == 130
    rid = store.list_runs()[-1]["id"]
    src.rename(moved)                    # the source is not read again: its folder is gone
    assert main(["resume", rid, "--store", str(store_path)]) == 0
    assert "resumed from step 14" in capsys.readouterr().out
    ref = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)
    res = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    for k in ref["model"]:
        assert torch.equal(ref["model"][k], res["model"][k]), k
    assert store.metrics(rid) == store.metrics(ref_run["id"])
    # measured from its own checkpoint too, the source not read
    assert main(["measure", rid, "--store", str(store_path), "--what", "hessian", "--subset",
                 "16", "--probes", "2", "--k", "1"]) == 0
    first = torch.load(moved / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert not torch.equal(first["net.1.weight"], res["model"]["net.1.weight"])  # it trained

    # stopped before its first checkpoint (step 7): a resume restarts it from the source
    moved.rename(src)
    assert _terminated_at(3, ["train", str(cfg), "--out", str(tmp_path / "early"),
                               *warm()]) == 130
    early = store.list_runs()[-1]["id"]
    kept = src / "checkpoints" / "kept.pt"
    (src / "checkpoints" / "last.pt").rename(kept)
    changed = torch.load(kept, weights_only=True)
    changed["model"]["net.1.bias"] += 1e-3
    torch.save(changed, src / "checkpoints" / "last.pt")
    assert main(["resume", early, "--store", str(store_path)]) == 2
    err = capsys.readouterr().err
    assert "model.init_from: the weights of checkpoint" in err and "not those this run " \
        "started from" in err, err
    kept.replace(src / "checkpoints" / "last.pt")
    assert main(["resume", early, "--store", str(store_path)]) == 0
    res = torch.load(tmp_path / "early" / "checkpoints" / "last.pt", weights_only=True)
    for k in ref["model"]:
        assert torch.equal(ref["model"][k], res["model"][k]), k


def test_init_from_refuses_a_missing_source_before_recording_a_run(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store_path = tmp_path / "runs.sqlite"
    assert main(["train", str(cfg), "--store", str(store_path), "--out", str(tmp_path / "a"),
                 "--init-from", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "model.init_from:" in err and "nowhere" in err and "Traceback" not in err
    assert not store_path.exists() and not (tmp_path / "a").exists()
    assert main(["train", str(cfg), "--print-config", "--init-from", "x"]) == 2
    assert "model.init_from:" in capsys.readouterr().err


def test_a_warm_started_run_s_config_trains_again_and_chains_with_another_source(tmp_path,
                                                                                capsys):
    """The config.yaml of a warm-started run holds its source and record: trained again it
    starts from the same weights (the record checked); with --init-from another run, that
    one's record replaces it (not refused as the old source's changed weights)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store_path = tmp_path / "runs.sqlite"
    s = ["--store", str(store_path)]
    assert main(["train", str(cfg), *s, "--out", str(tmp_path / "src")]) == 0
    assert main(["train", str(cfg), *s, "--out", str(tmp_path / "w"), "--init-from",
                 str(tmp_path / "src")]) == 0
    assert main(["train", str(tmp_path / "w" / "config.yaml"), *s, "--out",
                 str(tmp_path / "again")]) == 0
    assert main(["train", str(tmp_path / "w" / "config.yaml"), *s, "--out",
                 str(tmp_path / "chain"), "--init-from", str(tmp_path / "w")]) == 0
    capsys.readouterr()
    src, w, again, chain = RunStore(store_path).list_runs()
    assert again["config"]["model"]["warm_start"] == w["config"]["model"]["warm_start"]
    assert w["config"]["model"]["warm_start"]["run_id"] == src["id"]
    record = chain["config"]["model"]["warm_start"]
    assert (record["run_id"], record["step"]) == (w["id"], 30)
    assert record["init_from"] == str(tmp_path / "w")
    assert record["sha256"] != w["config"]["model"]["warm_start"]["sha256"]


def test_runs_list_shows_the_last_perplexity_of_a_token_run_not_finished(tmp_path, capsys):
    """The TEST_PPL column appeared only for a finished token run's summary: a stopped one's
    last evaluation, shown in the other test columns, lacked its perplexity."""
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.create_run({}, name="tokens")
    store.log_many(rid, [("test_loss", 30, 2.5), ("test_perplexity", 30, 12.18),
                         ("test_loss", 60, 2.0), ("test_perplexity", 60, 7.389)])
    store.set_status(rid, "interrupted")
    assert main(["runs", "list", "--store", str(tmp_path / "runs.sqlite")]) == 0
    head, line = capsys.readouterr().out.splitlines()[:2]
    assert head.split()[5:8] == ["TEST_ACC", "TEST_LOSS", "TEST_PPL"]
    assert line.split()[1:7] == ["tokens", "interrupted", "2", "@60", "7.389", "@60"]


@pytest.mark.parametrize("schedule,needle", [
    ("{kind: cyclc, low: 2, high: 4, period: 2}",
     "train.batch_size: Unknown batch-size schedule kind 'cyclc' (did you mean cyclic?); "
     "known: constant, cyclic"),
    ("{kind: cyclic, low: 2, high: 4, perod: 2}", "unknown perod (did you mean period?)"),
    ("{kind: cyclic, low: 2, high: 4, period: 2, shape: triangle}",
     "Invalid shape='triangle' (did you mean triangular?)"),
])
def test_a_misspelt_batch_size_schedule_gets_the_did_you_mean_of_other_choices(
        tmp_path, capsys, schedule, needle):
    # `kind: cyclc` was told the kinds, not the one meant, unlike `optimizer: {name: sgdd}`
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("batch_size: 4", f"batch_size: {schedule}"))
    assert main(["train", str(cfg), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


@pytest.mark.parametrize("optimizer,needle", [
    ('{name: random-lr-sgd, lr: "0.1"}', "optimizer.lr: must be a number, got '0.1'"),
    ('{name: entropy_sgd, lr: 0.1, gamma_min: "1e-4"}',
     "optimizer.gamma_min: must be a number, got '1e-4'"),
    ("{name: parle, lr: 0.1, inner_lr: fast}", "optimizer.inner_lr: must be a number, got "
                                               "'fast'"),
])
def test_an_optimizer_number_given_as_text_is_named_by_its_key(tmp_path, capsys, optimizer,
                                                               needle):
    # a number without a default (random-lr-sgd's lr) or with a None one passed the type
    # check: "optimizer (random-lr-sgd): '>=' not supported between instances of 'str' and
    # 'float'" from the optimizer's own range check
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("{name: sgd, lr: 0.05, momentum: 0.9}", optimizer))
    assert main(["train", str(cfg), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err == f"sgdlab: error: {needle}\n", err


def test_an_optimizer_number_that_may_be_none_takes_null(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("{name: sgd, lr: 0.05, momentum: 0.9}",
                                "{name: entropy_sgd, lr: 0.1, gamma_min: null, seed: null}"))
    assert main(["train", str(cfg), "--print-config"]) == 0
    assert "gamma_min: null" in capsys.readouterr().out


def test_print_config_fills_in_the_measure_instruments_defaults(tmp_path, capsys):
    """README calls --print-config "the validated config with every default", but a measure
    item showed only what was given (no eval_subset, trace_probes or tol, whose defaults the
    JSON Schema has). It shows the instruments' defaults now; printed and read back, the
    config prints the same and builds the same instruments."""
    from sgdlab.config import json_schema, load_config, parse_yaml, validate_config
    from sgdlab.config.run import build_measure

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + "measure:\n  - {name: hessian, every: 5, k: 2}\n"
                          "  - {name: trajectory, path: traj.npy}\n")
    assert main(["train", str(cfg), "--print-config"]) == 0
    printed = capsys.readouterr().out
    hessian, trajectory = parse_yaml(printed)["measure"]
    rules = {r["if"]["properties"]["name"]["const"]: r["then"]["properties"]
             for r in json_schema()["$defs"]["MeasureItem"]["allOf"]}
    for item in (hessian, trajectory):
        defaults = {k: v["default"] for k, v in rules[item["name"]].items()
                    if isinstance(v, dict) and "default" in v}
        assert defaults and {k: item[k] for k in defaults if k not in ("k", "path")} == {
            k: v for k, v in defaults.items() if k not in ("k", "path")}
    assert hessian["k"] == 2 and (hessian["eval_subset"], hessian["trace_probes"],
                                  hessian["tol"]) == (1000, 0, 1e-3)
    assert trajectory["path"] == "traj.npy" and trajectory["every_epochs"] == 1
    again = tmp_path / "printed.yaml"
    again.write_text(printed)
    assert main(["train", str(again), "--print-config"]) == 0
    assert capsys.readouterr().out == printed
    # the values written out are ones the instruments take (they are built)
    assert len(build_measure(validate_config(load_config(again))["measure"], 10)) == 2


def test_print_config_shows_the_optimizer_s_and_model_s_own_defaults_as_comments(tmp_path,
                                                                                 capsys):
    """--print-config showed the optimizer and model arguments as given, none of their
    defaults. Those of their signatures it now writes as `# key: value  # default` lines
    inside the section: the printed data is the config that is run (so a run of it stores
    the same config), and the lines uncommented give the same run with each set."""
    import inspect

    from sgdlab.config import parse_yaml
    from sgdlab.models import MODELS
    from sgdlab.optim import OPTIMIZERS

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("{name: zhu-mlp-1-6-6-6-1}", "{name: mlp, options: {widths: "
                                "[4]}}"))
    assert main(["train", str(cfg), "--print-config"]) == 0
    printed = capsys.readouterr().out
    data = parse_yaml(printed)
    assert data["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.9}
    assert data["model"]["options"] == {"widths": [4]}

    def commented(section: str, indent: str) -> dict:
        body = printed.split(f"\n{section}:\n", 1)[1]
        lines = [line[len(indent) + 2:].removesuffix("  # default") for line in
                 body.splitlines() if line.startswith(indent + "# ")]
        return parse_yaml("\n".join(lines))

    def signature_defaults(fn, given, kinds) -> dict:
        return {p.name: list(p.default) if isinstance(p.default, tuple) else p.default
                for p in inspect.signature(fn).parameters.values()
                if p.kind in kinds and p.default is not p.empty and p.name not in given}

    keyword = (inspect.Parameter.KEYWORD_ONLY,)
    assert commented("optimizer", "  ") == signature_defaults(
        OPTIMIZERS["sgd"], {"lr", "momentum"}, keyword + (inspect.Parameter.POSITIONAL_OR_KEYWORD,))
    assert commented("model", "    ") == signature_defaults(MODELS["mlp"].builder, {"widths"},
                                                            keyword)
    assert "  # dampening: 0  # default" in printed and "    # bias: true  # default" in printed
    # uncommented, every default is given: the same values, none left to show
    (tmp_path / "all.yaml").write_text(printed.replace("# ", "").replace("  default\n", "\n"))
    assert main(["train", str(tmp_path / "all.yaml"), "--print-config"]) == 0
    again = capsys.readouterr().out
    assert "# default" not in again
    assert parse_yaml(again)["optimizer"] == {**data["optimizer"],
                                              **commented("optimizer", "  ")}


def test_runs_compare_finds_a_run_of_the_printed_config_identical_to_the_original(tmp_path,
                                                                                  capsys):
    # the printed config's measure items hold the instruments' defaults, the original's not:
    # compare listed each filled-in option as a difference between two identical runs
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("epochs: 6", "epochs: 1")
                   + "measure: [{name: hessian, every: 5, k: 2}, {name: dynamics, every: 3}]\n")
    assert main(["train", str(cfg), "--print-config"]) == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    store = RunStore(tmp_path / "runs.sqlite")
    for c in (cfg, printed):
        assert main(["train", str(c), "--store", str(store.path),
                     "--out", str(tmp_path / c.stem)]) == 0
    a, b = (r["id"] for r in store.list_runs())
    assert store.get_run(a)["config"]["measure"] != store.get_run(b)["config"]["measure"]
    capsys.readouterr()
    assert main(["runs", "compare", a, b, "--store", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "(the configs are identical)" in out and "measure[" not in out


def test_runs_export_takes_the_file_as_out_too(tmp_path, capsys):
    # train, run, measure, walk and landscape write to --out; `runs export --out f.csv` was
    # "unrecognized arguments: --out (did you mean --format?)"
    rid, base = _one_finished_run(tmp_path)
    assert main(base + ["--out", str(tmp_path / "o.json")]) == 0
    assert [r["id"] for r in json.load(open(tmp_path / "o.json"))] == [rid]
    assert main(base + [str(tmp_path / "a.csv"), "--out", str(tmp_path / "b.csv")]) == 2
    assert "give the file to write once" in capsys.readouterr().err
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "b.csv").exists()


def test_a_store_locked_mid_run_says_to_resume_and_the_resume_finishes(tmp_path, capsys,
                                                                       monkeypatch):
    """Another process holding the store's write lock past the busy timeout during training
    said "run the command again", which the run's folder refuses: the run keeps its
    checkpoint, and the message names the resume that continues it."""
    import sqlite3

    from sgdlab.store.runstore import MetricWriter

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store_path, out = tmp_path / "runs.sqlite", tmp_path / "run"
    log = MetricWriter.log

    def locked_at_step_20(self, name, value, step):
        if step >= 20:
            raise sqlite3.OperationalError("database is locked")
        log(self, name, value, step)

    monkeypatch.setattr(MetricWriter, "log", locked_at_step_20)
    assert main(["train", str(cfg), "--store", str(store_path), "--out", str(out)]) == 2
    (run,) = RunStore(store_path).list_runs()
    err = capsys.readouterr().err
    assert "is locked by another process" in err and "run the command again" not in err
    assert (f"end that transaction and continue run {run['id']} with: sgdlab resume "
            f"{run['id']} --store {store_path}") in err
    assert run["status"] == "failed" and (out / "checkpoints" / "last.pt").is_file()
    monkeypatch.setattr(MetricWriter, "log", log)
    assert main(["resume", run["id"], "--store", str(store_path)]) == 0
    assert "finished after 30 steps" in capsys.readouterr().out


def test_a_warm_start_from_the_weights_a_run_diverged_on_is_refused(tmp_path, capsys):
    # finite weights whose loss is not: the warm-started run was recorded as diverged at step 0
    cfg, store = tmp_path / "c.yaml", tmp_path / "s.sqlite"
    cfg.write_text("name: tiny\ndata: {name: cubic, seed: 0}\nmodel: {name: zhu-mlp-1-6-6-6-1}\n"
                   "optimizer: {name: sgd, lr: 1.0e+30}\n"
                   "train: {epochs: 1, batch_size: 4, threads: 1, progress: false}\n")
    assert main(["train", str(cfg), "--store", str(store), "--out",
                 str(tmp_path / "run")]) == EXIT_DIVERGED
    (source,) = RunStore(store).list_runs()
    capsys.readouterr()
    for init_from in (source["id"], str(tmp_path / "run")):
        assert main(["train", str(cfg), "--store", str(store), "--init-from", init_from,
                     "--out", str(tmp_path / "warm")]) == 2
        err = capsys.readouterr().err
        assert (f"(run {source['id']}, step 1) holds the weights its run diverged on "
                "(non-finite mini-batch loss") in err and err.count("\n") == 1, err
    assert [r["id"] for r in RunStore(store).list_runs()] == [source["id"]]
    assert not (tmp_path / "warm").exists()


def test_a_run_stopped_by_its_config_mid_run_says_to_start_a_new_run_not_to_resume(
        tmp_path, capsys, monkeypatch):
    """A problem in what the config names, met mid-run (here an instrument refusing at step
    5), said "once that is fixed, continue it with: sgdlab resume", which reruns the stored
    config and meets it again: the fix takes a new run, which may start from the failed run's
    last checkpoint."""
    from sgdlab.errors import UserError
    from sgdlab.train.callbacks import Callback
    from sgdlab.train.instruments import INSTRUMENTS

    class Refuses(Callback):
        def on_step_end(self, ctx):
            if ctx.step == 5:
                raise UserError("the _test_refuses instrument cannot measure this model")

    # registered for this test only: the registry is shared by every test after it
    monkeypatch.setitem(INSTRUMENTS, "_test_refuses", lambda *, schedule: Refuses())
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("checkpoint_every: 7", "checkpoint_every: 2")
                   + "measure: [{name: _test_refuses, every: 1}]\n")
    store_path = tmp_path / "runs.sqlite"
    assert main(["train", str(cfg), "--store", str(store_path), "--out",
                 str(tmp_path / "run")]) == 2
    (run,) = RunStore(store_path).list_runs()
    err = capsys.readouterr().err
    assert run["status"] == "failed" and "cannot measure this model" in err
    assert "once that is fixed" not in err and "continue it with" not in err
    # why not resume, and the two commands that do run a corrected config
    warm = f"sgdlab train CONFIG --init-from {run['id']} --store {store_path}"
    assert f"run {run['id']} failed; `sgdlab resume` would run its stored config again" in err
    assert f"start a new run: sgdlab train CONFIG --store {store_path};" in err
    assert warm in err
    # `sgdlab runs show` says the same beside its resume command, with both commands
    assert main(["runs", "show", run["id"], "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert (f"  (resume reruns its stored config: if what failed lies in the config or the "
            f"data, start a new run with the corrected config: sgdlab train CONFIG --store "
            f"{store_path}; or from its last checkpoint: {warm} (a warm start: the weights "
            "only, the optimizer and step count afresh))\n") in out
    # the same command given again into its folder says both, and that another folder is due
    assert main(["train", str(cfg), "--store", str(store_path), "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"; that run is failed: if what stopped it lay outside its config (a "
                        f"full disk), continue it with sgdlab resume {run['id']} --store "
                        f"{store_path}; to run a corrected config, choose another folder (to "
                        "keep its training so far, start it from that run's last checkpoint: "
                        f"{warm})"), err
    # that warm start works: the failed run's last checkpoint is found by its id
    tiny = tmp_path / "fixed.yaml"
    tiny.write_text(TINY)
    assert main(["train", str(tiny), "--init-from", run["id"], "--store",
                 str(store_path)]) == 0


def test_a_run_stopped_by_a_checkpoint_it_could_not_write_says_to_resume(
        tmp_path, capsys, monkeypatch):
    """A full disk is outside the run's config: once space is freed, the resume continues it,
    and the message says so."""
    import errno

    import sgdlab.train.checkpoint as checkpoint

    save, calls = checkpoint.torch.save, []

    def full_the_second_time(obj, f, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        save(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", full_the_second_time)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store_path = tmp_path / "runs.sqlite"
    assert main(["train", str(cfg), "--store", str(store_path), "--out",
                 str(tmp_path / "run")]) == 2
    (run,) = RunStore(store_path).list_runs()
    err = capsys.readouterr().err
    assert "no space left on device" in err
    assert (f"run {run['id']} failed; once that is fixed, continue it with: sgdlab resume "
            f"{run['id']} --store {store_path}") in err
    monkeypatch.setattr(checkpoint.torch, "save", save)
    assert main(["resume", run["id"], "--store", str(store_path)]) == 0


def test_a_batch_size_above_the_training_set_says_each_step_is_full_batch_gd(tmp_path, capsys):
    """One line on stderr at the start, naming the batch size and the training set's size;
    none for B = N exactly or ``full`` (the config says full batch there), with or without
    --no-progress (a note, not progress)."""
    from sgdlab.config import build_from_config, validate_config

    raw = yaml.safe_load("name: tiny\ndata: {name: cubic, seed: 0}\n"
                         "model: {name: zhu-mlp-1-6-6-6-1}\noptimizer: {name: sgd, lr: 0.01}\n"
                         "train: {epochs: 1, batch_size: 4, threads: 1, progress: false}\n")
    n = len(build_from_config(validate_config(raw), validated=True).data.x_train)
    note = (f"sgdlab: note: train.batch_size {n + 1} is larger than the training set ({n} "
            f"examples): each step is full-batch GD, B={n}, the full training set")
    cfg = tmp_path / "c.yaml"
    for i, (bs, extra, said) in enumerate([(n + 1, ["--no-progress"], True), (n, [], False)]):
        cfg.write_text(yaml.safe_dump({**raw, "train": {**raw["train"], "batch_size": bs}}))
        assert main(["train", str(cfg), "--store", str(tmp_path / "s.sqlite"), "--out",
                     str(tmp_path / f"run{i}"), *extra]) == 0
        err = capsys.readouterr().err
        assert (note in err.splitlines()) == said and ("full-batch" in err) == said, (bs, err)
    from sgdlab.config.runner import batch_size_note
    assert batch_size_note("full", n) is None and batch_size_note({"name": "cyclic"}, n) is None


@pytest.mark.parametrize("points, rose", [
    ([(0, 2.0), (50, 20.5)], True),        # above 10 × its step-0 value
    ([(0, 2.0), (50, 19.5)], False),       # risen, but less than 10-fold
    ([(0, 2.0), (50, 1.0)], False),        # it trained
    ([(5, 2.0), (50, 200.0)], False),      # no step-0 value to compare with (a resumed run)
    ([(0, 0.0), (50, 2.0)], False),        # a zero loss at step 0: no factor of it
    ([(0, 2.0)], False),
])
def test_the_loss_rose_note_is_for_a_final_loss_ten_times_its_step_0_value(points, rose):
    from sgdlab.cli.train import _loss_rose

    note = _loss_rose(points)
    assert (note is not None) == rose
    if rose:
        assert note.startswith(f"train_loss rose from 2 at step 0 to {points[-1][1]:.4g}:")


def test_an_option_named_as_a_config_key_is_answered_with_its_set_only_when_close():
    """--epochs 2 and --epoch 2 (a close misspelling) point at --set train.epochs=2; a word
    only loosely like a key (--lrate: lr), or a misspelt option of the command itself, not."""
    from sgdlab.cli.train import config_key_hint

    assert "--set train.epochs=2" in config_key_hint("--epochs", "2")
    assert "--set train.epochs=2" in config_key_hint("--epoch", "2")
    assert config_key_hint("--lrate", "0.1") is None
    # --tensorbord misspells the option --tensorboard before the key train.tensorboard
    assert "--set train.tensorboard=x" in config_key_hint("--tensorbord", "x")
    assert config_key_hint("--tensorbord", "x", " (did you mean --tensorboard?)") is None
    assert "--set optimizer.lr=VALUE" in config_key_hint("--lr", None)
