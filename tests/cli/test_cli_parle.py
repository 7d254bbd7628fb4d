"""``sgdlab parle --mode distributed``: what the launcher checks before starting processes, and
how an interrupt stops torchrun and the replicas it started."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sgdlab.cli.main import main
from sgdlab.cli.parle import _alive, _children, _stop

# `sgdlab parle` records every run in the run store: the default one in the test's folder
pytestmark = pytest.mark.usefixtures("tmp_store")

CONFIG = {"data": {"name": "digits", "flatten": True, "n_train": 64},
          "model": {"name": "mlp", "widths": [8]}, "parle": {"replicas": 2, "L": 2},
          "rounds": 2}


def fake_torchrun(monkeypatch, code: str = "pass") -> list[dict]:
    """Stands in ``python -c code`` for the torchrun that `sgdlab parle --mode distributed`
    launches: the keyword arguments of each launch command it asked for, in a list."""
    import sgdlab.cli.parle as parle

    launched = []

    def command(*a, **k):
        launched.append(k)
        return [sys.executable, "-c", code]

    monkeypatch.setattr(parle, "torchrun_command", command)
    return launched


def test_bad_launches_are_refused_before_any_process_starts(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    out = tmp_path / "out"
    base = ["parle", str(cfg), "--mode", "distributed", "--out", str(out)]
    # inf and 1e15 started the replicas, which all failed on an OverflowError traceback
    for bad in ("0", "nan", "inf", "1e15"):
        assert main(base + ["--timeout", bad]) == 2
        assert "--timeout must be a finite number of seconds > 0" in capsys.readouterr().err
    assert main(base + ["--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "master.pt").write_bytes(b"")
    assert main(base) == 2
    assert "already holds a run's checkpoints" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--print-command"]])
def test_nccl_for_a_cpu_run_is_refused_before_any_process_starts(tmp_path, capsys, monkeypatch,
                                                                  extra):
    """The config names no device (the CPU): nccl, which reduces CUDA tensors only, failed in
    every replica at its first collective; refused here, naming both."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    launched = fake_torchrun(monkeypatch)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    assert main(["parle", str(cfg), "--mode", "distributed", "--backend", "nccl",
                 "--out", str(tmp_path / "out")] + extra) == 2
    captured = capsys.readouterr()
    assert "--backend nccl with device: cpu: nccl reduces CUDA tensors only" in captured.err
    assert launched == [] and not (tmp_path / "out").exists() and "torchrun" not in captured.out


def test_more_cuda_replicas_than_gpus_are_refused_before_any_process_starts(
        tmp_path, capsys, monkeypatch):
    """Each replica of a `device: cuda` run takes GPU LOCAL_RANK: the ranks past the machine's
    GPUs refused themselves, once torchrun had started them all."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    launched = fake_torchrun(monkeypatch)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**CONFIG, "device": "cuda"}))
    assert main(["parle", str(cfg), "--mode", "distributed", "--out", str(tmp_path / "out"),
                 "--store", str(tmp_path / "runs.sqlite")]) == 2
    err = capsys.readouterr().err
    assert ("a distributed run on device cuda puts each of its 2 replicas on a GPU of its "
            "own, but this machine has 1 CUDA device(s) visible (CUDA_VISIBLE_DEVICES=3): "
            "give at most 1 replicas (--replicas) or device: cpu") in err, err
    assert launched == [] and not (tmp_path / "out").exists()
    assert not (tmp_path / "runs.sqlite").exists()


@pytest.mark.parametrize("mode", ["inprocess", "distributed"])
def test_checkpoint_every_below_one_is_refused_by_its_flag_before_a_folder_is_made(
        tmp_path, capsys, mode):
    """It was refused as the config key ``checkpoint_every``, after the output folder and its
    lock file were made."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    out = tmp_path / "out"
    for bad in ("0", "-3"):
        assert main(["parle", str(cfg), "--mode", mode, "--out", str(out),
                     "--checkpoint-every", bad]) == 2
        assert f"--checkpoint-every must be >= 1, got {bad}" in capsys.readouterr().err
    assert not out.exists()


def test_a_folder_another_start_took_is_refused_before_any_process_starts(tmp_path, capsys,
                                                                          monkeypatch):
    """A start that has written no checkpoint yet holds its folder (OUT/parle.json): a
    second start into it launches nothing; the launcher takes a free folder for its
    processes (``--claimed``: they do not take it again)."""
    import sgdlab.cli.parle as parle

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    out = tmp_path / "out"
    launched = fake_torchrun(monkeypatch)
    base = ["parle", str(cfg), "--mode", "distributed", "--out", str(out)]
    assert main(base) == 0 and launched[-1]["claimed"] is True
    assert json.loads((out / "parle.json").read_text())["pid"] == os.getpid()
    assert main(base) == 2 and len(launched) == 1
    assert f"{out} already holds a parle run started " in capsys.readouterr().err
    monkeypatch.undo()
    assert "--claimed" in parle.torchrun_command(str(cfg), 2, out=str(out), claimed=True)


LOCKER = """
import sys, time
from sgdlab.train.distributed import lock_out
fd = lock_out(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_a_resume_while_the_run_is_still_trained_is_refused_naming_its_process(tmp_path,
                                                                              capsys):
    """The process training a run holds OUT/parle.lock (new run or resume): a resume
    meanwhile is refused, in process and by the launcher before it starts any; once that
    process is gone (killed, its lock with it) the resume continues the run."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**CONFIG, "rounds": 1, "checkpoint_every": 1}))
    out = tmp_path / "out"
    inproc = ["parle", str(cfg), "--out", str(out)]
    assert main(inproc) == 0
    assert (out / "checkpoints" / "master.pt").exists()
    cfg.write_text(json.dumps({**CONFIG, "rounds": 2, "checkpoint_every": 1}))
    capsys.readouterr()
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv in (inproc, ["parle", str(cfg), "--mode", "distributed", "--out", str(out)]):
            assert main(argv + ["--resume"]) == 2
            err = capsys.readouterr().err
            assert (f"{out}: its parle run is being trained by another process "
                    f"(pid {holder.pid} on ") in err, err
    finally:
        holder.kill()
        holder.wait()
    assert main(inproc + ["--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["final"]["rounds"] == 2


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_stop_ends_the_launcher_and_the_processes_it_started():
    """A launcher whose child runs in a session of its own (as torchrun starts replicas):
    both are gone after _stop, the child by SIGTERM."""
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
            " start_new_session=True)\n"
            "time.sleep(60)\n")
    launcher = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 20
    while not (kids := _children(launcher.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(kids) == 1
    _stop(launcher, grace=10)
    assert launcher.returncode == -signal.SIGKILL     # stopped, not its own 60 s run out
    assert not _alive(kids[0])


def test_a_failed_replica_ends_with_one_line_saying_how_to_go_on(tmp_path, capsys, monkeypatch):
    """torchrun's exit code is passed on, with one line after its report: ``--resume`` when
    checkpoints were written, else the same command again."""
    import sgdlab.cli.parle as parle

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    out = tmp_path / "out"
    # stands for torchrun after a replica died: the first rounds checkpointed, then exit 1
    code = ("import pathlib, sys; p = pathlib.Path(sys.argv[1]) / 'checkpoints'; "
            "p.mkdir(parents=True) if sys.argv[2] == 'saved' else None; "
            "(p / 'master.pt').write_bytes(b'') if sys.argv[2] == 'saved' else None; "
            "raise SystemExit(1)")
    command = ["parle", str(cfg), "--mode", "distributed", "--out", str(out)]
    for saved, hint in (("none", "no checkpoint was written yet: start it again with "),
                        ("saved", "continue with: ")):
        monkeypatch.setattr(parle, "torchrun_command",
                            lambda *a, **k: [sys.executable, "-c", code, str(out), saved])
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "sgdlab: error: the distributed run failed (torchrun exit code 1)" in err
        again = f"sgdlab parle {cfg} --mode distributed --replicas 2 --out {out}"
        assert f"{hint}{again}" + (" --resume" if saved == "saved" else "\n") in err + "\n"
        # without a checkpoint the folder is free again for that command; with one it
        # stays the run's
        assert (out / "parle.json").exists() == (saved == "saved")
    # the options the run was started with go on with it
    assert main(command + ["--resume", "--timeout", "5", "--checkpoint-every", "3"]) == 1
    again = (f"sgdlab parle {cfg} --mode distributed --replicas 2 --out {out} --timeout 5 "
             "--checkpoint-every 3 --resume")
    assert f"continue with: {again}" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_sigkilled_launcher_leaves_no_torchrun_or_replica_training(tmp_path):
    """``sgdlab parle --mode distributed`` SIGKILLed while its replicas train: torchrun and the
    replicas end with it (they used to train on, orphaned, holding OUT's lock against the
    ``--resume`` that continues the run)."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**CONFIG, "rounds": 10**6, "checkpoint_every": 10**6}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    launcher = subprocess.Popen([sys.executable, "-m", "sgdlab.cli", "parle", str(cfg),
                                 "--mode", "distributed", "--out", str(tmp_path / "out")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    started: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:        # torchrun, then its two replicas
            torchrun = _children(launcher.pid) or []
            replicas = [r for t in torchrun for r in _children(t)]
            started = torchrun + replicas
            if len(replicas) == 2 and (tmp_path / "out" / "parle.lock").exists():
                break
            assert launcher.poll() is None, "the launcher ended early"
            time.sleep(0.2)
        assert len(started) == 3
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in started if _alive(p)]
    finally:
        for pid in [launcher.pid] + started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_the_launched_torchrun_takes_a_free_port_of_its_own(tmp_path, monkeypatch):
    """Two `sgdlab parle --mode distributed` on one machine at once: torchrun without a
    rendezvous of its own listens on a fixed port ($PET_MASTER_PORT; 29500 before torch
    2.11), which the first run holds, and the second failed at its start ("address already
    in use", exit 1). The launcher passes --standalone (a port the system picks free); the
    printed command, for several machines whose nodes add --rdzv-endpoint, does not."""
    import sgdlab.cli.parle as parle

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    launched = []

    class Launched:                       # torchrun, started and finished at once
        def __init__(self, cmd, **kw):
            launched.append(cmd)

        def wait(self):
            return 0

    monkeypatch.setattr(parle.subprocess, "Popen", Launched)
    assert main(["parle", str(cfg), "--mode", "distributed", "--out", str(tmp_path / "o")]) == 0
    (cmd,) = launched
    assert cmd[cmd.index("--standalone") + 1:][:2] == ["-m", "sgdlab.train.distributed"]
    assert "--standalone" not in parle_print_command(cfg)


def parle_print_command(cfg: Path) -> str:
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["parle", str(cfg), "--mode", "distributed", "--print-command"]) == 0
    return printed.getvalue()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_replica_whose_launcher_died_while_it_started_ends_at_once(tmp_path, monkeypatch):
    """A launcher SIGKILLed while its replicas still import torch: their parent death signal
    is not set yet, so they check that their torchrun still has the launcher as its parent
    (they used to wait, orphaned, for a rendezvous that never comes, then print a traceback)."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    # started by this process, not by a torchrun that this process started
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "SGDLAB_PARLE_LAUNCHER": str(os.getpid()), "RANK": "1", "WORLD_SIZE": "2",
           "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "sgdlab.train.distributed", str(cfg),
                           "--timeout", "30"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert "rank 1: error: the sgdlab parle that launched this replica has ended" in done.stderr
    assert time.monotonic() - t0 < 25           # not after the rendezvous timed out

    from sgdlab.train.distributed import LAUNCHER_ENV, launcher_gone

    grandparent = int(Path(f"/proc/{os.getppid()}/stat").read_text().rsplit(")", 1)[1]
                      .split()[1])
    monkeypatch.setenv(LAUNCHER_ENV, str(grandparent))
    assert not launcher_gone()
    monkeypatch.setenv(LAUNCHER_ENV, str(os.getpid()))
    assert launcher_gone()


def test_measure_rebuilds_the_master_of_a_replica_run_from_its_record(tmp_path, capsys):
    """`sgdlab measure` of a `sgdlab parle` run (by run id, by its --out folder, which names
    the run and its store as a run folder of `sgdlab train` does, by its master.pt) measures
    the master x̄: its top Hessian eigenvalue on all the training examples
    is the dense Hessian's, computed here on master.pt with the data and model built directly;
    --what batch takes the replicas' batch size."""
    import torch

    from sgdlab.cli.measure import _locate, _rebuild
    from sgdlab.data import load_dataset
    from sgdlab.models import build_model
    from sgdlab.testing import dense_hessian_reference

    store, out = tmp_path / "runs.sqlite", tmp_path / "out"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**CONFIG, "parle": {**CONFIG["parle"], "batch_size": 16},
                               "dtype": "float64", "seed": 3, "store": str(store)}))
    assert main(["parle", str(cfg), "--out", str(out)]) == 0
    run_id = json.loads((out / "results.json").read_text())["run_id"]
    for target in (run_id[:12], str(out / "master.pt")):       # what the folder finds
        assert _locate(target, str(store))[1:3] == (out / "master.pt", run_id)
    capsys.readouterr()
    assert main(["runs", "show", str(out)]) == 0          # the folder names run and store
    assert capsys.readouterr().out.startswith(f"run {run_id}")
    assert main(["measure", str(out), "--what", "hessian,batch",
                 "--subset", "0", "--k", "1", "--probes", "2", "--batches", "2",
                 "--out", str(tmp_path / "m")]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "m" / "measurements.json").read_text())
    assert res["run_id"] == run_id and res["step"] == 2 * 2     # rounds · L
    assert res["scalars"]["batch/batch_size"] == 16

    data = load_dataset("digits", flatten=True, n_train=64).to(dtype=torch.float64)
    model = build_model("mlp", data.input_shape, data.num_outputs, widths=[8]).double()
    model.load_state_dict(torch.load(out / "master.pt", weights_only=True))
    hessian = dense_hessian_reference(model, torch.nn.functional.cross_entropy, data.train)
    top = float(torch.linalg.eigvalsh(hessian)[-1])
    assert res["scalars"]["hess/top_1"] == pytest.approx(top, rel=1e-6)
    # a finished run extended by a --resume with more rounds is measured at its new end
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "rounds": 3}))
    assert main(["parle", str(cfg), "--out", str(out), "--resume"]) == 0
    assert _rebuild(*_locate(run_id, str(store))[:2])[3] == 3 * 2


def test_the_command_after_a_failed_run_names_its_paths_absolute(tmp_path, capsys, monkeypatch):
    """The config and --out given relative were printed as given: the command to go on worked
    only from the folder they were given in. Both are absolute (and quoted for the shell)."""
    import shlex

    here = tmp_path / "my runs"
    here.mkdir()
    monkeypatch.chdir(here)
    (here / "c.json").write_text(json.dumps(CONFIG))
    fake_torchrun(monkeypatch, "raise SystemExit(1)")
    assert main(["parle", "c.json", "--mode", "distributed", "--out", "out"]) == 1
    again = (f"sgdlab parle {shlex.quote(str(here / 'c.json'))} --mode distributed "
             f"--replicas 2 --out {shlex.quote(str(here / 'out'))}")
    assert f"start it again with {again}\n" in capsys.readouterr().err


def test_resume_of_a_replica_run_says_how_it_continues(tmp_path, capsys):
    from sgdlab.store import RunStore

    store = RunStore(tmp_path / "runs.sqlite")
    run_id = store.create_run({"method": "parle", "rounds": 2})
    store.set_status(run_id, "interrupted")
    assert main(["resume", run_id, "--store", str(store.path)]) == 2
    assert "sgdlab parle CONFIG --out DIR --resume" in capsys.readouterr().err


def test_an_interrupted_replica_run_is_measured_from_its_last_checkpoint(
        tmp_path, capsys, monkeypatch):
    """An interrupted `sgdlab parle` run had no master.pt, and `sgdlab measure` of its folder
    said there was no checkpoint: it now measures the master of the last checkpoint set (x̄
    of that round, the replicas' mean batch-norm statistics), by folder, checkpoints folder,
    master.pt or run id; the interrupt and `sgdlab runs list` say how it continues."""
    import torch

    from sgdlab.cli.measure import _locate, _rebuild
    from sgdlab.store import RunStore
    from sgdlab.train import replicas

    store, out = tmp_path / "runs.sqlite", tmp_path / "out"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**CONFIG, "parle": {**CONFIG["parle"], "shard": True},
                               "model": {"name": "mlp", "widths": [8],
                                                   "batchnorm": True},
                               "rounds": 5, "checkpoint_every": 2, "dtype": "float64",
                               "store": str(store)}))
    original = replicas._ReplicaTraining._round

    def stop_in_round_3(self, r):
        if r == 3:
            raise KeyboardInterrupt
        return original(self, r)

    monkeypatch.setattr(replicas._ReplicaTraining, "_round", stop_in_round_3)
    assert main(["parle", str(cfg), "--out", str(out)]) == 130
    # where it goes on from (it named the command alone)
    assert (f"its last checkpoint is at round 2; continue with: sgdlab parle {cfg} --out {out} "
            "--resume") in capsys.readouterr().err
    monkeypatch.undo()
    (run,) = RunStore(store).list_runs()
    assert run["status"] == "interrupted" and not (out / "master.pt").exists()
    # (it read "KeyboardInterrupt: ", an empty message)
    assert RunStore(store).get_run(run["id"])["message"] == "KeyboardInterrupt in round 3"
    assert main(["runs", "list", "--store", str(store)]) == 0
    listing = capsys.readouterr().out
    assert "interrupted  4 (ckpt)" in listing                  # round 2 · L
    assert f"--replicas 2 --out {out} --resume" in listing

    ckpt = out / "checkpoints" / "master.pt"
    for target in (str(out), str(out / "checkpoints"), str(ckpt), run["id"]):
        found = _locate(target, str(store))
        assert found[1:4] == (ckpt, run["id"], out), target
    model, _, _, step, _ = _rebuild(found[0], found[1])
    assert step == 2 * 2
    head = torch.load(ckpt, weights_only=True)
    for p, v in zip(model.parameters(), head["master"]):
        assert torch.equal(p, v)
    states = [w["model"] for w in torch.load(out / "checkpoints" / "rank0.pt",
                                             weights_only=True)["workers"].values()]
    assert len(states) == 2
    for name, b in model.named_buffers():
        if b.is_floating_point():
            assert torch.allclose(b, (states[0][name] + states[1][name]) / 2), name
            assert not torch.equal(states[0][name], states[1][name])
    assert main(["measure", str(out), "--what", "hessian", "--k", "1", "--probes", "2",
                 "--out", str(tmp_path / "m")]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "m" / "measurements.json").read_text())
    assert res["run_id"] == run["id"] and res["step"] == 4
    assert "interrupted: measuring the master of its last checkpoint (round 2)" in (
        capsys.readouterr().out)
    # without the checkpoints, by run id: what is missing, in one line
    import shutil
    shutil.rmtree(out / "checkpoints")
    assert main(["measure", run["id"], "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert f"has no master weights on disk: it is interrupted and {out / 'checkpoints'}" in err


def test_a_diverged_run_exits_as_sgdlab_train_s_does(tmp_path, capsys, monkeypatch):
    """A run whose replica loss becomes non-finite (a huge step size) exits EXIT_DIVERGED, as
    `sgdlab train` does, not 1, a failure's status; in-process, and distributed where rank 0
    writes the status to the file the launcher names (torchrun makes a worker's exit status
    other than 0 its own failure). A finished distributed run exits 0."""
    import sgdlab.cli.parle as parle
    from sgdlab.cli.train import EXIT_DIVERGED
    from sgdlab.train.distributed import STATUS_ENV

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**CONFIG, "parle": {**CONFIG["parle"], "lr": 1e30}}))
    assert main(["parle", str(cfg)]) == EXIT_DIVERGED == 3
    assert "): diverged (non-finite replica loss" in capsys.readouterr().out
    assert str(EXIT_DIVERGED) + " it diverged" in parle.EXIT_STATUSES
    # stands for torchrun whose rank 0 wrote the run's status
    for status, code in (("diverged", EXIT_DIVERGED), ("finished", 0)):
        write = (f"import os, pathlib; "
                 f"pathlib.Path(os.environ['{STATUS_ENV}']).write_text('{status}')")
        fake_torchrun(monkeypatch, write)
        assert main(["parle", str(cfg), "--mode", "distributed"]) == code


def test_a_replica_config_with_a_length_of_the_wrong_type_is_bad_input(tmp_path, capsys):
    # a TypeError traceback (exit 1) before
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**{k: v for k, v in CONFIG.items() if k != "rounds"},
                               "epochs": "two"}))
    assert main(["parle", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        "sgdlab: error: epochs must be a finite number > 0, got 'two'")


def test_a_replica_config_takes_the_master_s_buffer_rule_and_names_a_wrong_one(tmp_path,
                                                                                 capsys,
                                                                                 tmp_store):
    """``parle.master_buffers``: the master's batch-norm statistics at each evaluation; the
    run's result records it, a value other than average | recompute is bad input."""
    cfg = tmp_path / "c.json"
    model = {"name": "mlp", "widths": [8], "batchnorm": True}
    cfg.write_text(json.dumps({**CONFIG, "model": model,
                               "parle": {**CONFIG["parle"], "master_buffers": "recompute"}}))
    assert main(["parle", str(cfg), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["parle"]["master_buffers"] == "recompute"
    cfg.write_text(json.dumps({**CONFIG, "parle": {**CONFIG["parle"], "master_buffers": "x"}}))
    assert main(["parle", str(cfg)]) == 2
    assert "master_buffers must be one of average, recompute, got 'x'" in capsys.readouterr().err


def test_a_run_without_a_store_in_its_config_is_recorded_in_the_default_store(
        tmp_path, capsys, monkeypatch, tmp_store):
    """README's parle.yaml has no `store:`, and `sgdlab parle` recorded no run then: `sgdlab
    measure DIR` and `sgdlab train --init-from DIR` of its --out folder were refused. It is
    recorded where `sgdlab train` records runs ($SGDLAB_STORE or ./sgdlab-runs/runs.sqlite),
    or in --store PATH."""
    import torch

    from sgdlab.store import RunStore

    cfg, out = tmp_path / "c.json", tmp_path / "out"
    cfg.write_text(json.dumps(CONFIG))
    assert main(["parle", str(cfg), "--mode", "inprocess", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    (run,) = RunStore(tmp_store).list_runs()
    assert json.loads((out / "results.json").read_text())["store"] == str(tmp_store.resolve())
    assert f"run {run['id']} in the run store {tmp_store} (sgdlab runs show" in printed
    assert main(["measure", str(out), "--what", "hessian", "--k", "1", "--probes", "2",
                 "--out", str(tmp_path / "m")]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "m" / "measurements.json").read_text())["run_id"] == run["id"]
    train_cfg = tmp_path / "t.yaml"      # (JSON is YAML)
    train_cfg.write_text(json.dumps({
        "data": {"name": "digits", "options": {"flatten": True, "n_train": 64}},
        "model": {"name": "mlp", "options": {"widths": [8]}},
        "optimizer": {"name": "sgd", "lr": 0.0}, "measure": [],
        "train": {"epochs": 1, "batch_size": 16, "threads": 1, "progress": False}}))
    assert main(["train", str(train_cfg), "--init-from", str(out), "--no-progress",
                 "--out", str(tmp_path / "t")]) == 0, capsys.readouterr().err
    master = torch.load(out / "master.pt", weights_only=True)
    trained = torch.load(tmp_path / "t" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(trained[k], master[k]) for k in master)     # lr 0 keeps them

    # --store PATH, as sgdlab train's, and no file in the current folder either way
    monkeypatch.chdir(tmp_path)
    assert main(["parle", str(cfg), "--store", "mine.sqlite"]) == 0
    assert len(RunStore(tmp_path / "mine.sqlite").list_runs()) == 1
    assert len(RunStore(tmp_store).list_runs()) == 2      # + sgdlab train's run
    assert not (tmp_path / "sgdlab-runs").exists()
    # a --resume goes on in the store its checkpoints name, whatever $SGDLAB_STORE says now
    from sgdlab.train.distributed import run_store_path

    monkeypatch.setenv("SGDLAB_STORE", str(tmp_path / "other.sqlite"))
    assert run_store_path(CONFIG, out=out, resume=True) == tmp_store.resolve()
    assert run_store_path(CONFIG, out=out) == tmp_path / "other.sqlite"


def test_the_launcher_makes_the_store_and_hands_it_to_the_replicas(tmp_path, capsys,
                                                                   monkeypatch, tmp_store):
    """Distributed: the launcher opens (makes) the store before any process starts and names
    it to torchrun by its absolute path, where rank 0 alone records the run; a path that is
    no store is refused before any process starts."""
    import sgdlab.cli.parle as parle

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    launched = fake_torchrun(monkeypatch)
    assert main(["parle", str(cfg), "--mode", "distributed"]) == 0
    assert launched[-1]["store"] == str(tmp_store.resolve()) and tmp_store.is_file()
    monkeypatch.chdir(tmp_path)
    assert main(["parle", str(cfg), "--mode", "distributed", "--store", "s.sqlite"]) == 0
    assert launched[-1]["store"] == str(tmp_path / "s.sqlite") and Path("s.sqlite").is_file()
    Path("folder").mkdir()
    assert main(["parle", str(cfg), "--mode", "distributed", "--store", "folder"]) == 2
    assert "is a directory" in capsys.readouterr().err and len(launched) == 2
    monkeypatch.undo()
    cmd = parle.torchrun_command(str(cfg), 2, store="/x/runs.sqlite")
    assert cmd[cmd.index("--store") + 1] == "/x/runs.sqlite"


def test_a_replica_run_recorded_in_no_store_says_how_to_get_one(tmp_path, capsys):
    """A run of an older sgdlab parle (or run_from_config from Python) with no `store` in
    its config: measuring its folder says how a run gets its record."""
    from sgdlab.train.distributed import run_from_config

    out = tmp_path / "out"
    run_from_config(dict(CONFIG), mode="inprocess", out=out)
    assert main(["measure", str(out), "--store", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "it was not recorded in a run store (its config had no 'store': run it again with " \
           "`store: PATH` added to the replica config, or with `sgdlab parle`" in err


@pytest.mark.parametrize("mode", ["inprocess", "distributed"])
def test_a_run_that_does_not_start_leaves_no_empty_store(tmp_path, capsys, monkeypatch, mode,
                                                         tmp_store):
    """A start refused for its busy folder, or whose torchrun fails before rank 0 records the
    run, leaves no store it made behind (nor its folder), as sgdlab train leaves none; a store
    that was there before stays."""
    from sgdlab.store import RunStore
    from sgdlab.train.distributed import claim_out

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    out = tmp_path / "out"
    claim_out(out)                      # another start holds it
    launched = fake_torchrun(monkeypatch, "raise SystemExit(1)")
    assert main(["parle", str(cfg), "--mode", mode, "--out", str(out)]) == 2
    assert "already holds a parle run" in capsys.readouterr().err and not launched
    assert not tmp_store.exists() and not tmp_store.parent.exists()
    if mode == "distributed":           # torchrun fails before any replica records the run
        assert main(["parle", str(cfg), "--mode", mode, "--out", str(tmp_path / "o2")]) == 1
        assert launched and not tmp_store.exists() and not tmp_store.parent.exists()
    RunStore(tmp_store).close()         # the user's (empty) store is not ours to remove
    assert main(["parle", str(cfg), "--mode", mode, "--out", str(out)]) == 2
    assert tmp_store.is_file()


def _toy_data(path: Path) -> None:
    """A 4-feature, 3-class data file (the model of a plugin sized for it)."""
    import torch

    g = torch.Generator().manual_seed(0)
    torch.save({"x_train": torch.randn(24, 4, generator=g),
                "y_train": torch.randint(0, 3, (24,), generator=g),
                "x_test": torch.randn(8, 4, generator=g),
                "y_test": torch.randint(0, 3, (8,), generator=g)}, path)


def _plugin_run(tmp_path: Path, model: str, stem: str) -> tuple[Path, Path]:
    """A replica config of a model only plugin file ``stem``.py registers, and that file."""
    from sgdlab.testing import user_model_plugin

    _toy_data(tmp_path / "toy.pt")
    plugin = tmp_path / f"{stem}.py"
    plugin.write_text(user_model_plugin(model, inputs=4, outputs=3))
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": {"file": str(tmp_path / "toy.pt")},
                               "model": {"name": model},
                               "parle": {"replicas": 2, "L": 2, "batch_size": 8},
                               "rounds": 1}))
    return cfg, plugin


def test_parle_takes_a_plugin_s_model_and_records_the_plugin(tmp_path, capsys, monkeypatch):
    """`sgdlab parle --plugin FILE` (it had no --plugin): the model the plugin registers
    trains, and the stored config names the plugin by its absolute path, so `sgdlab measure`
    imports it again; the command that continues a stopped run names it too."""
    from sgdlab.cli.parle import _continue, register
    from sgdlab.store import RunStore

    cfg, plugin = _plugin_run(tmp_path, "parle-plugin-linear", "parle_plugin_local")
    store = tmp_path / "runs.sqlite"
    assert main(["parle", str(cfg), "--store", str(store)]) == 2
    assert "unknown model 'parle-plugin-linear'" in capsys.readouterr().err.lower()
    monkeypatch.chdir(tmp_path)
    assert main(["parle", str(cfg), "--plugin", plugin.name, "--store", str(store),
                 "--out", "out"]) == 0, capsys.readouterr().err
    (run,) = RunStore(store).list_runs()
    assert run["config"]["plugins"] == [str(plugin.resolve())]
    assert run["config"]["model"] == {"name": "parle-plugin-linear"}
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    args = sub.choices["parle"].parse_args([str(cfg), "--out", "out", "--plugin", plugin.name])
    assert f"--plugin {plugin.resolve()} --resume" in _continue(args, None)


def test_distributed_parle_passes_its_plugins_to_every_replica_process(tmp_path, capsys):
    """--mode distributed: the torchrun command names each plugin (absolute), and each
    replica process, which has not imported it, imports it (`--plugin` of the entry point)
    and rank 0 records it with the run."""
    import sys as _sys

    from sgdlab.store import RunStore
    from sgdlab.testing import forked_torchrun

    cfg, plugin = _plugin_run(tmp_path, "parle-plugin-linear-dist", "parle_plugin_dist")
    assert plugin.stem not in _sys.modules       # the forked replicas import it themselves
    store = tmp_path / "runs.sqlite"
    logs = [str(tmp_path / f"rank{r}.log") for r in range(2)]
    procs, rendezvous = forked_torchrun(2, [str(cfg), "--plugin", str(plugin), "--store",
                                            str(store), "--backend", "gloo"], logs)
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0], [Path(log).read_text() for log in logs]
    (run,) = RunStore(store).list_runs()
    assert run["config"]["plugins"] == [str(plugin.resolve())]
    assert run["config"]["mode"] == "distributed" and run["status"] == "finished"
    del rendezvous
    assert main(["parle", str(cfg), "--mode", "distributed", "--print-command",
                 "--plugin", str(plugin)]) == 0
    assert f" --plugin {plugin.resolve()}" in capsys.readouterr().out


def test_runs_list_shows_a_replica_run_s_steps(tmp_path, capsys):
    """The STEPS column of `sgdlab runs list` was empty for runs of `sgdlab parle` (their
    summary had rounds and grad_evals, no steps): it shows rounds · L, the step of the run's
    last metrics, also for a run stored before its summary had steps."""
    from sgdlab.store import RunStore

    store = tmp_path / "runs.sqlite"
    cfg = tmp_path / "c.json"
    _toy_data(tmp_path / "toy.pt")
    cfg.write_text(json.dumps({"data": {"file": str(tmp_path / "toy.pt")},
                               "model": {"name": "mlp", "widths": [4]},
                               "parle": {"replicas": 2, "L": 3, "batch_size": 8}, "rounds": 2}))
    assert main(["parle", str(cfg), "--store", str(store)]) == 0
    (run,) = RunStore(store).list_runs()
    assert run["summary"]["steps"] == 2 * 3 == max(s for s, _ in
                                                   RunStore(store).metrics(run["id"])["test_acc"])
    old = RunStore(store)
    old.set_summary(run["id"], {k: v for k, v in run["summary"].items() if k != "steps"})
    old.close()
    capsys.readouterr()
    assert main(["runs", "list", "--store", str(store)]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert row[header.index("STEPS"):].split()[0] == "6"


@pytest.mark.parametrize("mode", ["inprocess", "distributed"])
def test_targets_of_the_wrong_shape_in_a_data_file_are_refused_before_the_run_is_recorded(
        tmp_path, capsys, monkeypatch, mode, tmp_store):
    """Regression targets (N,) for one output: refused before any store, folder or process is
    made, as `sgdlab train` refuses them; the run was recorded, then failed at its first
    step."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=g)
    torch.save({"x_train": x, "y_train": x[:, 0]}, tmp_path / "d.pt")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**CONFIG, "data": {"file": str(tmp_path / "d.pt")}}))
    launched = fake_torchrun(monkeypatch, "raise SystemExit(1)")
    out = tmp_path / "out"
    assert main(["parle", str(cfg), "--mode", mode, "--out", str(out)]) == 2
    assert (r"compares on the data's first 2 samples outputs of shape (2, 1) with targets of "
            "shape (2,)") in capsys.readouterr().err
    assert not launched and not out.exists() and not tmp_store.exists()


def test_an_in_process_run_writes_a_line_after_its_first_and_last_rounds(tmp_path, capsys):
    # it said nothing until its report: a run of minutes was silent
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**CONFIG, "rounds": 3}))
    assert main(["parle", str(cfg), "--store", str(tmp_path / "s.sqlite")]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("round ")]
    assert [ln.split("  ")[0] for ln in lines] == ["round 1/3", "round 3/3"]
    assert all(math.isfinite(float(ln.split("replica_loss ")[1])) for ln in lines)


def test_set_overrides_a_key_of_the_replica_config_in_both_modes(tmp_path, capsys):
    # `sgdlab parle parle.yaml --set epochs=400` was "unrecognized arguments", where
    # `sgdlab train` takes --set: a longer run meant an edited copy of the file
    from sgdlab.store import RunStore

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    assert main(["parle", str(cfg), "--set", "rounds=3", "--set", "parle.lr=0.05",
                 "--store", str(tmp_path / "s.sqlite")]) == 0
    err = capsys.readouterr().err
    assert "round 3/3" in err
    run = RunStore(tmp_path / "s.sqlite").list_runs()[-1]
    assert run["config"]["rounds"] == 3 and run["config"]["parle"]["lr"] == 0.05
    # distributed: every replica process reads the same overrides
    assert main(["parle", str(cfg), "--mode", "distributed", "--print-command",
                 "--set", "rounds=3"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(" --set rounds=3")
    assert main(["parle", str(cfg), "--set", "parle.lrr=1"]) == 2
    assert "parle.lrr: unknown key (did you mean lr?)" in capsys.readouterr().err


def test_out_holds_results_json_and_learning_curves_as_sgdlab_train_names_them(tmp_path,
                                                                                capsys):
    """``--out`` gets ``results.json`` and ``learning_curves.png`` (``sgdlab train``'s names
    and plot), and ``instruments.png`` with the config's ``measure`` instruments, whose
    series (every counts rounds) are in results.json; a folder of an older run, whose file
    is ``result.json``, is still read (``sgdlab measure``)."""
    from PIL import Image

    cfg, out = tmp_path / "c.json", tmp_path / "out"
    cfg.write_text(json.dumps({**CONFIG, "rounds": 3, "eval_every": 1,
                               "measure": [{"name": "hessian", "every": 2, "k": 1}]}))
    assert main(["parle", str(cfg), "--out", str(out)]) == 0, capsys.readouterr().err
    assert not (out / "result.json").exists()
    result = json.loads((out / "results.json").read_text())
    assert [s for s, _ in result["history"]["hess/top_1"]] == [0, 4]      # rounds 0 and 2
    for name in ("learning_curves.png", "instruments.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 100
    (out / "results.json").rename(out / "result.json")
    capsys.readouterr()
    assert main(["measure", str(out), "--what", "hessian", "--k", "1", "--probes", "2",
                 "--out", str(tmp_path / "m")]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "m" / "measurements.json").read_text())["run_id"] == (
        result["run_id"])


def test_a_measure_item_parle_cannot_take_is_refused_before_any_process_starts(tmp_path,
                                                                               capsys):
    cfg = tmp_path / "c.json"
    for item, message in (
            ({"name": "noise_magnitude", "every": 1},
             "measure[0] (noise_magnitude) cannot measure a replica run"),
            ({"name": "hessian", "evry": 1}, "measure[0]"),
            ({"name": "hessian", "log_points": 3}, "needs 'rounds'")):
        cfg.write_text(json.dumps({**{k: v for k, v in CONFIG.items() if k != "rounds"},
                                   "epochs": 1, "measure": [item]}))
        for mode in ("inprocess", "distributed"):
            assert main(["parle", str(cfg), "--mode", mode,
                         "--out", str(tmp_path / "out")]) == 2
            err = capsys.readouterr().err
            assert message in err, err
    assert not (tmp_path / "out").exists()


def test_the_torchrun_command_passes_every_option_to_every_replica(tmp_path):
    import sgdlab.cli.parle as parle

    plugin = tmp_path / "mine.py"
    plugin.write_text("")
    cmd = parle.torchrun_command("c.yaml", 3, out="o", backend="gloo", timeout=2.5,
                                 resume=True, checkpoint_every=4, claimed=True,
                                 standalone=True, store="r.sqlite",
                                 plugins=[str(plugin), "pkg.mod"], overrides=["epochs=2"])
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "3",
                   "--standalone", "-m", "sgdlab.train.distributed", "c.yaml",
                   "--replicas", "3", "--backend", "gloo", "--timeout", "2.5",
                   "--out", "o", "--store", "r.sqlite", "--checkpoint-every", "4",
                   "--resume", "--claimed", "--plugin", str(plugin.resolve()),
                   "--plugin", "pkg.mod", "--set", "epochs=2"]
    assert parle.torchrun_command("c.yaml", 2) == [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m",
        "sgdlab.train.distributed", "c.yaml", "--replicas", "2", "--backend", "auto",
        "--timeout", "60"]


@pytest.mark.parametrize("mode", ["inprocess", "distributed"])
def test_replicas_below_one_are_refused_by_the_flag(tmp_path, capsys, mode):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    assert main(["parle", str(cfg), "--mode", mode, "--replicas", "0", "--out",
                 str(tmp_path / "o")]) == 2
    assert "--replicas must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("threads", [None, "3"])
def test_the_replicas_run_one_thread_each_unless_told_and_know_their_launcher(
        tmp_path, monkeypatch, threads):
    """One thread per process (OMP_NUM_THREADS=1) unless the user set it: what makes the
    distributed iterates bit-identical to the in-process ones; the launcher's pid (a replica
    whose launcher died while it started ends) and the file rank 0 writes the status to."""
    import sgdlab.cli.parle as parle
    from sgdlab.train.distributed import LAUNCHER_ENV, STATUS_ENV

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    if threads is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
    envs = []

    class Launched:                       # torchrun, started and finished at once
        def __init__(self, cmd, env, **kw):
            envs.append(env)

        def wait(self):
            return 0

    monkeypatch.setattr(parle.subprocess, "Popen", Launched)
    assert main(["parle", str(cfg), "--mode", "distributed"]) == 0
    (env,) = envs
    assert env["OMP_NUM_THREADS"] == (threads or "1")
    assert env[LAUNCHER_ENV] == str(os.getpid())
    assert Path(env[STATUS_ENV]).parent == Path(tempfile.gettempdir())


def test_a_run_s_exit_status_follows_how_rank_0_says_it_ended():
    from sgdlab.cli.parle import _exit_status
    from sgdlab.cli.train import EXIT_DIVERGED

    assert [_exit_status(s) for s in ("finished", None, "diverged", "failed")] == [
        0, 0, EXIT_DIVERGED, 1]


def test_a_config_without_a_replica_count_launches_parle_s_default_count(tmp_path, capsys):
    # a process count other than the config's replicas is refused by every rank at start-up
    from sgdlab.train.replicas import ParleConfig

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**CONFIG, "parle": {"L": 2}}))
    assert main(["parle", str(cfg), "--mode", "distributed", "--print-command"]) == 0
    n = ParleConfig().replicas
    assert f" --nproc-per-node {n} -m sgdlab.train.distributed" in capsys.readouterr().out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_zombie_replica_counts_as_stopped():
    # a stopped replica nobody has reaped yet (its new parent slow to) is no longer running
    child = subprocess.Popen([sys.executable, "-c", ""])
    deadline = time.monotonic() + 20
    while "Z" not in Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not _alive(child.pid)           # a zombie, not yet waited for
    child.wait()
    assert not _alive(child.pid)
    assert _alive(os.getpid())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_stop_kills_a_replica_that_ignores_sigterm_after_the_grace():
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'],"
            " start_new_session=True)\n"
            "time.sleep(60)\n")
    launcher = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 20

    def ignores_sigterm(pid: int) -> bool:
        status = Path(f"/proc/{pid}/status").read_text()
        mask = int(status.split("SigIgn:")[1].split()[0], 16)
        return bool(mask & (1 << (signal.SIGTERM - 1)))

    while not ((kids := _children(launcher.pid)) and ignores_sigterm(kids[0])):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _stop(launcher, grace=0.5)
    assert not _alive(kids[0])


def test_a_distributed_resume_without_out_is_refused_before_any_process_starts(tmp_path,
                                                                              capsys,
                                                                              monkeypatch):
    launched = fake_torchrun(monkeypatch)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    assert main(["parle", str(cfg), "--mode", "distributed", "--resume"]) == 2
    assert "--resume needs --out DIR (checkpoints are in DIR/checkpoints)" in (
        capsys.readouterr().err)
    assert launched == []


def _parle_args(**given):
    """The parsed options of `sgdlab parle c.json` with the defaults, but those ``given``."""
    import argparse

    return argparse.Namespace(**{"out": None, "config": "c.json", "replicas": None,
                                 "store": None, "plugins": [], "overrides": [],
                                 "backend": "auto", "timeout": 60.0, "checkpoint_every": None,
                                 **given})


def test_a_run_without_out_has_no_command_to_go_on_with():
    from sgdlab.cli.parle import _continue

    args = _parle_args()
    assert _continue(args, None) == "" and _continue(args, 2) == ""


def test_a_distributed_resume_leaves_the_folder_s_lock_to_its_rank_0(tmp_path, capsys,
                                                                    monkeypatch):
    # the launcher checks that no process trains the run, then lets go: rank 0 takes it
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "master.pt").write_bytes(b"")
    fake_torchrun(monkeypatch, "from sgdlab.train.distributed import lock_out; "
                               f"lock_out({str(out)!r})")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG))
    assert main(["parle", str(cfg), "--mode", "distributed", "--out", str(out),
                 "--resume"]) == 0, capsys.readouterr().err


def test_the_command_to_go_on_keeps_an_in_process_run_s_replica_count(tmp_path):
    from sgdlab.cli.parle import _continue

    args = _parle_args(out=str(tmp_path / "o"), replicas=4)
    assert _continue(args, None) == ("; no checkpoint was written yet: start it again with "
                                     f"sgdlab parle c.json --replicas 4 --out {tmp_path / 'o'}")
