"""Distributed Parle fails fast: work one rank does alone (rank 0 evaluating the master,
recording the run, writing master.pt and the outputs; a rank building its data or setting up
its replica) that fails stops every rank at once, each naming the failing rank and its error,
even while the failing process is slow to exit (its peers see no closed socket): a status
all-reduce tells them before their next collective, not the collective's timeout (30 s)."""
from __future__ import annotations

import json
import os
import time

import pytest
import torch

import sgdlab.data  # noqa: F401  (imported before forking: the workers start warm)
import sgdlab.models  # noqa: F401
import sgdlab.train.distributed  # noqa: F401
from sgdlab.testing import forked_torchrun
from test_distributed_parle import read, write_problem as parle_problem

pytestmark = pytest.mark.usefixtures("tmp_store")

torch.set_num_threads(1)

# imported by every rank (the config's plugins); $SGDLAB_TEST_FAIL says what fails, where
INJECT = '''
import os

import sgdlab.data.files as files
import sgdlab.store.runstore as runstore
import sgdlab.train.distributed as distributed
import sgdlab.train.replicas as replicas
from sgdlab.errors import DataError, UserError

WHAT = os.environ.get("SGDLAB_TEST_FAIL", "")
RANK = os.environ["RANK"]


def patch(module, name, fails):
    real = getattr(module, name)

    def patched(*a, **k):
        fails(*a, **k)
        return real(*a, **k)
    setattr(module, name, patched)


if RANK == "0" and WHAT == "evaluate":
    calls = []

    def evaluate(*a, **k):   # the master's metrics after round 0 pass, the next ones fail
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("boom: evaluation fails")
    patch(replicas, "evaluation_metrics", evaluate)
if RANK == "0" and WHAT == "rows":
    def rows(self, name, value, step):
        if step >= 9:
            raise OSError("boom: the store cannot take the rows")
    patch(runstore.MetricWriter, "log", rows)
if RANK == "0" and WHAT == "end":
    def end(self, name, value, step):
        if name == "grad_evals":
            raise OSError("boom: the store cannot take the last rows")
    patch(runstore.MetricWriter, "log", end)
if RANK == "0" and WHAT == "record":
    def record(*a, **k):
        raise RuntimeError("boom: the store cannot record the run")
    patch(runstore.RunStore, "create_run", record)
if RANK == "0" and WHAT == "outputs":
    def outputs(*a, **k):
        raise OSError("boom: no space left for the outputs")
    patch(distributed, "_write_outputs", outputs)
if RANK == "0" and WHAT == "report":
    def said(*a, **k):
        raise OSError("boom: stdout is gone")
    patch(distributed, "report", said)
if RANK == "0" and WHAT == "master.pt":
    def save(path, state):
        if path.name == "master.pt" and state["round"] == 4:
            raise OSError("boom: no space left for master.pt")
    patch(replicas, "save_checkpoint", save)
if RANK == "1" and WHAT == "setup":
    def setup(path, resume):
        raise UserError(f"{path}: boom: this rank does not see the output folder")
    patch(replicas, "check_checkpoint_dir", setup)
if RANK == "1" and WHAT == "inner":
    steps = []

    def inner(self):    # the replica's inner steps of round 3 fail on rank 1 alone
        steps.append(1)
        if len(steps) == 3:
            raise RuntimeError("boom: out of memory in an inner step")
    patch(replicas.ReplicaWorker, "inner", inner)
if RANK == "1" and WHAT == "device":
    import torch

    to = torch.Tensor.to

    def onto(self, *a, **k):     # rank 1's device cannot take the training set
        if a and isinstance(a[0], torch.device) and self.shape[:1] == (48,):
            raise RuntimeError("boom: the device is out of memory")
        return to(self, *a, **k)
    torch.Tensor.to = onto
if RANK == "1" and WHAT == "data":
    def data(path, *a, **k):
        raise DataError(f"{path}: boom: this rank cannot read the data file")
    patch(files, "load_data_file", data)
'''


def write_problem(tmp_path, rounds):
    """test_distributed_parle's toy problem on 2 ranks, evaluated every 2 rounds, whose
    ranks import INJECT."""
    cfg, path = parle_problem(tmp_path, 2, rounds)
    (tmp_path / "inject.py").write_text(INJECT)
    cfg.update(eval_every=2, plugins=[str(tmp_path / "inject.py")])
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module", autouse=True)
def _warm(tmp_path_factory):
    """One in-process run first: the forked workers start with its imports done."""
    from sgdlab.train.distributed import run_from_config

    tmp = tmp_path_factory.mktemp("warm")
    cfg = json.loads(write_problem(tmp, rounds=1).read_text())
    cfg.pop("plugins")
    run_from_config(cfg, mode="inprocess")


def run_held(tmp_path, argv, *, within: float = 5.0):
    """2 ranks whose processes stay (:func:`sgdlab.testing.torchrun_rank`'s ``hold``) once
    their entry point has ended. Asserts that both end within ``within`` s of the first, well
    before the collectives' 30 s timeout; then lets them exit. Returns (exit statuses, logs)."""
    logs = [str(tmp_path / f"rank{r}.log") for r in range(2)]
    for log in logs:
        for f in (log, log + ".end"):
            if os.path.exists(f):
                os.remove(f)
    hold = str(tmp_path / "exit-now")
    procs, store = forked_torchrun(2, argv + ["--timeout", "30"], logs, hold=hold)
    try:
        t0 = time.monotonic()
        first = None
        while True:
            ended = [os.path.exists(log + ".end") for log in logs]
            now = time.monotonic()
            if all(ended):
                break
            if first is None and any(ended):
                first = now
            assert now - t0 < 30, [read(log)[-2000:] for log in logs]     # start-up at most
            assert first is None or now - first < within, (
                f"rank {ended.index(False)} still waits {within} s after another rank ended",
                [read(log)[-2000:] for log in logs])
            time.sleep(0.02)
        codes = [int(read(log + ".end")) for log in logs]
    finally:
        open(hold, "w").close()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        del store
        os.remove(hold)
    return codes, [read(log) for log in logs]


@pytest.mark.parametrize("what, failing, said", [
    ("evaluate", 0, "evaluating the master after round 2 (RuntimeError: boom: evaluation "
                    "fails)"),
    ("rows", 0, "recording round 3 (OSError: boom: the store cannot take the rows)"),
    ("end", 0, "recording the end of the run (OSError: boom: the store cannot take the last "
               "rows)"),
    ("record", 0, "recording the run in its store (RuntimeError: boom: the store cannot "
                  "record the run)"),
    ("outputs", 0, "writing the run's outputs to {out} (OSError: boom: no space left for the "
                   "outputs)"),
    # main's final report, after the run: the status all-reduce is the shutdown barrier too
    ("report", 0, "reporting the run (OSError: boom: stdout is gone)"),
    ("data", 1, "building the run from its config (DataError: {data}: boom: this rank cannot "
                "read the data file)"),
    ("setup", 1, "setting up its replicas (UserError: {out}/checkpoints: boom: this rank does "
                 "not see the output folder)"),
    ("device", 1, "setting up its replicas (RuntimeError: boom: the device is out of memory)"),
    ("inner", 1, "training its replica in round 3 (RuntimeError: boom: out of memory in an "
                 "inner step)"),
])
def test_work_failing_on_one_rank_stops_every_rank_at_once(tmp_path, monkeypatch, what,
                                                           failing, said):
    monkeypatch.setenv("SGDLAB_TEST_FAIL", what)
    path = write_problem(tmp_path, rounds=10 if what in ("outputs", "end", "report") else 10**6)
    out = tmp_path / "out"
    codes, logs = run_held(tmp_path, [str(path), "--out", str(out)])
    other = 1 - failing
    # the failing rank raises its own error (a refusal, a UserError: exit 2), the other
    # names that rank, what it did and its error
    refused = what in ("data", "setup")
    assert "boom" in logs[failing] and codes[failing] == (2 if refused else 1), logs
    assert codes[other] == (2 if refused else 1), logs
    if not refused:     # the failing rank's own error, escaping its entry point: its traceback
        assert "Traceback (most recent call last)" in logs[failing], logs[failing]
    said = said.format(out=out, data=tmp_path / "toy.pt")
    assert (f"rank {other}: error: replica {other}/2: rank {failing} failed {said}; "
            "stopped with it") in logs[other], logs[other]


def test_a_failed_master_pt_stops_every_rank_and_the_last_set_resumes(tmp_path, monkeypatch):
    """Rank 0 cannot write master.pt of round 4 (checkpoints every 2 rounds): every rank
    stops at once, and the set of round 2 stays whole: a resume continues from it."""
    monkeypatch.setenv("SGDLAB_TEST_FAIL", "master.pt")
    path = write_problem(tmp_path, rounds=6)
    out = tmp_path / "out"
    argv = [str(path), "--out", str(out), "--checkpoint-every", "2"]
    codes, logs = run_held(tmp_path, argv)
    assert codes[0] != 0 and "boom: no space left for master.pt" in logs[0], logs
    assert codes[1] == 1 and ("rank 1: error: replica 1/2: rank 0 failed writing master.pt of "
                              "round 4 (OSError: boom: no space left for master.pt)") in logs[1]
    head = torch.load(out / "checkpoints" / "master.pt", weights_only=True)
    assert head["round"] == 2
    monkeypatch.setenv("SGDLAB_TEST_FAIL", "")
    codes, logs = run_held(tmp_path, argv + ["--resume"], within=30)
    assert codes == [0, 0], logs
    result = json.loads((out / "results.json").read_text())
    assert result["status"] == "finished" and result["final"]["rounds"] == 6


class Exited(Exception):
    """``os._exit`` called, with ``code``."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def test_every_exit_of_the_entry_point_goes_through_os_exit(tmp_path, monkeypatch, capsys):
    """An error that escaped ``main`` (anything but a refusal or a failed collective) skipped
    the ``os._exit`` of ``python -m sgdlab.train.distributed`` and went through the
    interpreter's teardown, where a replica once in 33 died of SIGABRT (gloo's threads). Now
    every path leaves through it: a failure with its traceback and 1, a refusal with its
    message and 2, a bad option with argparse's 2, an interrupt with 130."""
    import sgdlab.train.distributed as distributed

    def exits(code):
        raise Exited(code)

    def fails(*a, **k):
        raise RuntimeError("boom: the process group cannot start")

    monkeypatch.setattr(os, "_exit", exits)
    monkeypatch.setattr(distributed, "init_distributed", fails)
    monkeypatch.setenv("RANK", "1")
    path = str(write_problem(tmp_path, rounds=1))
    with pytest.raises(Exited) as e:
        distributed.entry([path])
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert "Traceback (most recent call last)" in err and ", in main\n" in err
    assert err.rstrip().endswith("sgdlab.train.distributed: rank 1: error: RuntimeError: boom: "
                                 "the process group cannot start"), err
    with pytest.raises(Exited) as e:
        distributed.entry([str(tmp_path / "missing.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert "rank 1: error: no replica run config" in err, err
    with pytest.raises(Exited) as e:
        distributed.entry([path, "--timeout", "soon"])
    assert e.value.code == 2 and "invalid float value: 'soon'" in capsys.readouterr().err

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "init_distributed", interrupted)
    with pytest.raises(Exited) as e:
        distributed.entry([path])
    assert e.value.code == 130 and "rank 1: interrupted" in capsys.readouterr().err


def _entry_rank(port, argv: list[str], log: str) -> None:
    """A forked rank 0 of 1 running ``python -m sgdlab.train.distributed``'s own exit path."""
    import sys

    import sgdlab.train.distributed as distributed

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port.recv()), TORCHELASTIC_USE_AGENT_STORE="True")
    sys.stdout = sys.stderr = open(log, "w", buffering=1)
    distributed.entry(argv)


def test_a_rank_whose_error_escapes_its_entry_point_exits_1_with_its_traceback(tmp_path,
                                                                              monkeypatch):
    """The error comes once the process group (gloo's threads) is up: the rank says it with
    its traceback and leaves with status 1. (That it leaves through ``os._exit`` is the test
    above's: a forked multiprocessing child never runs the interpreter's teardown, so here
    ``sys.exit`` would pass too.)"""
    import multiprocessing as mp

    import torch.distributed as dist

    import sgdlab.train.distributed as distributed
    from sgdlab.store.runstore import stop_heartbeats

    def fails(*a, **k):
        assert dist.is_initialized()
        raise RuntimeError("boom: after the process group started")

    monkeypatch.setattr(distributed, "run_from_config", fails)    # inherited by the fork
    log = tmp_path / "rank0.log"
    stop_heartbeats()
    ctx = mp.get_context("fork")
    port, tell = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_entry_rank, daemon=True,
                    args=(port, [str(write_problem(tmp_path, rounds=1)), "--timeout", "30"],
                          str(log)))
    p.start()
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    try:
        tell.send(store.port)
        p.join(60)
    finally:
        if p.is_alive():
            p.kill()
            p.join()
        del store
    said = read(log)
    assert p.exitcode == 1, (p.exitcode, said)     # (SIGABRT: -6)
    assert "Traceback (most recent call last)" in said and ("rank 0: error: RuntimeError: "
                                                            "boom: after the process group "
                                                            "started") in said, said
