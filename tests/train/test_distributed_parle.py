"""Distributed Parle on localhost with gloo: equals the in-process mode; a killed worker
makes the survivors fail with a clear error within a bounded time (no hang)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import time

import pytest
import torch

from sgdlab.errors import ConfigError, UserError
from sgdlab.testing import forked_torchrun, strict_loads
# imports sgdlab.data and sgdlab.models (registering the models) before forking: the workers
# start warm
from sgdlab.train.distributed import run_from_config

# `sgdlab parle` records every run in the run store: the default one in the test's folder
pytestmark = pytest.mark.usefixtures("tmp_store")

torch.set_num_threads(1)


def write_problem(tmp_path, replicas, rounds):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 3, generator=g, dtype=torch.float64)
    X = torch.randn(48, 4, generator=g, dtype=torch.float64)
    Xt = torch.randn(16, 4, generator=g, dtype=torch.float64)
    torch.save({"x_train": X, "y_train": (X @ W).argmax(1), "x_test": Xt,
                "y_test": (Xt @ W).argmax(1),
                "meta": {"name": "toy", "task": "classification", "input_shape": (4,),
                         "num_outputs": 3}}, tmp_path / "toy.pt")
    cfg = {"data": {"file": str(tmp_path / "toy.pt")},
           "model": {"name": "mlp", "widths": [6], "activation": "tanh"},
           "parle": {"replicas": replicas, "L": 3, "lr": 0.1, "gamma": 1.0, "rho": 0.5,
                     "noise": 1e-4, "momentum": 0.5, "batch_size": 8, "seed": 2},
           "rounds": rounds, "dtype": "float64", "seed": 1}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return cfg, path


STORES: list = []         # the rendezvous stores of this test's launches


@pytest.fixture(autouse=True)
def _close_stores():
    yield
    STORES.clear()


def launch(tmp_path, world, argv):
    """``world`` workers, as torchrun starts them (:func:`sgdlab.testing.forked_torchrun`)."""
    logs = [str(tmp_path / f"rank{rank}.log") for rank in range(world)]
    procs, store = forked_torchrun(world, argv, logs)
    STORES.append(store)
    return procs, logs


def read(log):
    return open(log).read() if os.path.exists(log) else ""


def wait_connected(procs, logs) -> None:
    """Until rank 0 logs that the process group is up (30 s at most, rank 0 alive)."""
    t0 = time.monotonic()
    while "connected" not in read(logs[0]):
        assert time.monotonic() - t0 < 30 and procs[0].is_alive(), read(logs[0])
        time.sleep(0.05)


def signal_peer_and_time_exit(procs, sig) -> float:
    """Send ``sig`` to rank 1; seconds until rank 0 exits (waits 30 s at most)."""
    os.kill(procs[1].pid, sig)
    t0 = time.monotonic()
    procs[0].join(30)
    return time.monotonic() - t0


def reap(procs, resume: bool = False) -> None:
    """Kill the workers still alive (``resume``: SIGCONT first, for a stopped one)."""
    for p in procs:
        if p.is_alive():
            if resume:
                os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.join()


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_gloo_processes_equal_inprocess(tmp_path, world, tmp_store):
    cfg, path = write_problem(tmp_path, replicas=world, rounds=4)
    res = run_from_config(cfg, mode="inprocess")   # first: the forked workers start warm
    procs, logs = launch(tmp_path, world, [str(path), "--out", str(tmp_path / "dist"),
                                           "--timeout", "30"])
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * world, [read(l)[-2000:] for l in logs]
    assert f"{world} replica processes connected (gloo" in read(logs[0])
    # reported as in-process mode reports: a status line, the final metrics as JSON, the
    # weights, the run store that holds the run
    out = read(logs[0]).split(f"parle (distributed, {world} processes, 4 rounds, 12 gradient "
                              "evaluations per replica): finished\n")[1]
    final, weights, stored = out.rsplit("\n", 3)[:3]
    assert json.loads(final)["grad_evals"] == 12
    assert weights == f"master weights: {tmp_path / 'dist' / 'master.pt'}"
    # with no store in the config and no --store: the default one, as sgdlab train's runs;
    # rank 0 alone records the run
    from sgdlab.store import RunStore

    (run,) = RunStore(tmp_store).list_runs()
    assert run["status"] == "finished" and run["config"]["mode"] == "distributed"
    assert stored.startswith(f"run {run['id']} in the run store {tmp_store} ")
    dist_master = torch.load(tmp_path / "dist" / "master.pt", weights_only=True)
    ref = res.master.state_dict()
    assert dist_master.keys() == ref.keys()
    for k in ref:
        if world == 2:  # a sum of two floats does not depend on the order: bit-exact
            assert torch.equal(dist_master[k], ref[k]), k
        else:           # same iterates; only the all-reduce's summation order may differ
            assert torch.allclose(dist_master[k], ref[k], atol=1e-12, rtol=0), k
    summary = json.loads((tmp_path / "dist" / "results.json").read_text())
    assert summary["final"]["grad_evals"] == 12 == res.grad_evals
    got = [v for _, v in summary["history"]["replica_loss"]]
    assert got == pytest.approx([v for _, v in res.history["replica_loss"]], rel=1e-12)
    # each replica's loss too, from its own process (through the round's one all-reduce)
    for a in range(world):
        got = summary["history"][f"replica_loss/{a}"]
        assert got == [[s, pytest.approx(v, rel=1e-12)]
                       for s, v in res.history[f"replica_loss/{a}"]], a


def inprocess_and_distributed(tmp_path, cfg, path):
    """``cfg`` (written to ``path``) run in-process, and by 2 gloo processes into
    ``tmp_path/dist``: the in-process result and the processes' results.json history."""
    path.write_text(json.dumps(cfg))
    res = run_from_config(cfg, mode="inprocess")
    procs, logs = launch(tmp_path, 2, [str(path), "--out", str(tmp_path / "dist"),
                                       "--timeout", "30"])
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0], [read(l)[-2000:] for l in logs]
    return res, json.loads((tmp_path / "dist" / "results.json").read_text())["history"]


@pytest.mark.parametrize("master_buffers", ["average", "recompute"])
def test_distributed_batch_norm_master_is_evaluated_as_in_process(tmp_path, master_buffers):
    """A batch-norm model, evaluated every round: rank 0's evaluations of the master (the
    replicas' statistics averaged across the processes, or recomputed at x̄) are the
    in-process run's."""
    cfg, path = write_problem(tmp_path, replicas=2, rounds=3)
    cfg["model"]["batchnorm"] = True
    cfg["parle"]["master_buffers"] = master_buffers
    cfg["eval_every"] = 1
    res, history = inprocess_and_distributed(tmp_path, cfg, path)
    assert [s for s, _ in history["test_loss"]] == [0, 3, 6, 9]
    for k in ("test_loss", "train_loss"):
        assert [v for _, v in history[k]] == pytest.approx([v for _, v in res.history[k]],
                                                           rel=1e-12, abs=0)
    dist_master = torch.load(tmp_path / "dist" / "master.pt", weights_only=True)
    for k, v in res.master.state_dict().items():
        assert torch.equal(dist_master[k], v), k


def test_killed_worker_fails_fast_with_clear_error(tmp_path):
    _, path = write_problem(tmp_path, replicas=2, rounds=10**7)
    procs, logs = launch(tmp_path, 2, [str(path), "--timeout", "20"])
    try:
        wait_connected(procs, logs)
        time.sleep(0.5)                         # let them train a few rounds
        assert procs[0].is_alive() and procs[1].is_alive(), read(logs[0]) + read(logs[1])
        elapsed = signal_peer_and_time_exit(procs, signal.SIGKILL)
    finally:
        reap(procs)
    err = read(logs[0])
    assert procs[0].exitcode == 1, err[-2000:]
    assert elapsed < 25
    assert "rank 0: error: replica 0/2:" in err, err[-2000:]
    assert "another replica process probably died" in err


def test_hung_worker_times_out_with_clear_error(tmp_path):
    """A peer that stops responding (SIGSTOP) makes the all-reduce fail after --timeout."""
    _, path = write_problem(tmp_path, replicas=2, rounds=10**7)
    procs, logs = launch(tmp_path, 2, [str(path), "--timeout", "3"])
    try:
        wait_connected(procs, logs)
        time.sleep(1.0)                         # past start-up: in the training rounds
        elapsed = signal_peer_and_time_exit(procs, signal.SIGSTOP)
    finally:
        reap(procs, resume=True)
    err = read(logs[0])
    assert procs[0].exitcode == 1, err[-2000:]
    assert 2.5 < elapsed < 20
    assert "another replica process probably died or hung" in err, err[-2000:]


def test_distributed_checkpoint_resume_equals_uninterrupted(tmp_path):
    """2 gloo processes run 2 rounds (checkpoints every round), then `--resume` extends the
    run to 4: the master is bit-identical to an uninterrupted in-process run of 4 rounds.
    Resuming that 2-process checkpoint set in one process is refused."""
    from sgdlab.errors import ConfigError
    cfg, path = write_problem(tmp_path, replicas=2, rounds=4)
    res = run_from_config(cfg, mode="inprocess")
    short = tmp_path / "short.json"
    short.write_text(json.dumps({**cfg, "rounds": 2}))
    out = tmp_path / "dist"
    for argv in ([str(short), "--out", str(out), "--checkpoint-every", "1"],
                 [str(path), "--out", str(out), "--checkpoint-every", "1", "--resume"]):
        procs, logs = launch(tmp_path, 2, argv + ["--timeout", "30"])
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0], [read(l)[-2000:] for l in logs]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "master.pt", "rank0.pt", "rank1.pt"]
    dist_master = torch.load(out / "master.pt", weights_only=True)
    ref = res.master.state_dict()
    for k in ref:
        assert torch.equal(dist_master[k], ref[k]), k
    summary = json.loads((out / "results.json").read_text())
    assert summary["final"]["grad_evals"] == res.grad_evals
    got = [v for _, v in summary["history"]["replica_loss"]]
    assert got == pytest.approx([v for _, v in res.history["replica_loss"]], rel=1e-12)
    for a in range(2):      # each replica's, its rounds before the resume kept
        got = summary["history"][f"replica_loss/{a}"]
        assert got == [[s, pytest.approx(v, rel=1e-12)]
                       for s, v in res.history[f"replica_loss/{a}"]], a
    with pytest.raises(ConfigError, match="written by 2 process"):
        run_from_config(cfg, mode="inprocess", out=out, resume=True)


def test_a_diverged_run_prints_and_writes_strict_json(tmp_path, capsys):
    """A NaN in the data makes the run diverge with a NaN training loss: the printed final
    metrics and results.json hold null there (and the text says which values are not finite);
    an infinite gamma (Elastic-SGD's coupling) is written as "inf", which reads back."""
    from sgdlab.cli.main import main
    from sgdlab.cli.train import EXIT_DIVERGED
    from sgdlab.train.replicas import ParleConfig

    cfg, path = write_problem(tmp_path, replicas=2, rounds=3)
    d = torch.load(tmp_path / "toy.pt", weights_only=True)
    d["x_train"][0, 0] = float("nan")
    torch.save(d, tmp_path / "toy.pt")
    cfg["parle"]["gamma"] = "inf"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "out"
    assert main(["parle", str(path), "--out", str(out)]) == EXIT_DIVERGED
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("diverged (non-finite replica loss (nan) in round 1; stopped "
                             "with the weights of round 0)")
    end = lines.index("}")
    final = strict_loads("\n".join(lines[1:end + 1]))
    assert final["train_loss"] is None and isinstance(final["test_loss"], float)
    assert lines[end + 1] == "not finite (null in the JSON): train_loss"
    result = strict_loads((out / "results.json").read_text())
    assert result["status"] == "diverged" and result["final"] == final
    # the initial weights, the run's final master too, evaluated once
    assert result["history"]["train_loss"] == [[0, None]]
    assert ParleConfig.from_dict(result["parle"]) == ParleConfig.from_dict(cfg["parle"])
    assert result["parle"]["gamma"] == "inf"


def test_the_stored_run_records_the_data_model_and_seed_so_compare_tells_runs_apart(
        tmp_path, capsys):
    """A replica run's record holds the whole config but the store's path: two runs that
    differ only in the model's width are not "identical" to ``sgdlab runs compare``."""
    from sgdlab.cli.main import main
    from sgdlab.store import RunStore

    cfg, _ = write_problem(tmp_path, replicas=2, rounds=1)
    store = tmp_path / "runs.sqlite"
    ids = []
    for width in (6, 7):
        run = {**cfg, "model": {**cfg["model"], "widths": [width]}, "store": str(store)}
        ids.append(run_from_config(run, mode="inprocess").run_id)
    recorded = RunStore(store).get_run(ids[0])["config"]
    assert {k: recorded[k] for k in ("model", "dtype", "seed")} == {
        k: cfg[k] for k in ("model", "dtype", "seed")}
    assert recorded["data"] == {**cfg["data"], "sha256": recorded["data"]["sha256"]}
    assert "store" not in recorded and recorded["method"] == "parle"
    capsys.readouterr()
    assert main(["runs", "compare", *ids, "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "identical" not in out and "model.widths" in out


def test_the_stored_run_records_its_data_file_by_an_absolute_path(tmp_path, monkeypatch):
    """A data file named relative to the folder the run started in is recorded absolute:
    the run's record rebuilds its data from any folder."""
    from sgdlab.store import RunStore

    cfg, _ = write_problem(tmp_path, replicas=1, rounds=1)
    monkeypatch.chdir(tmp_path)
    run = {**cfg, "data": {"file": "toy.pt"}, "store": "runs.sqlite"}
    run_id = run_from_config(run, mode="inprocess").run_id
    recorded = RunStore(tmp_path / "runs.sqlite").get_run(run_id)["config"]["data"]
    assert recorded == {"file": str((tmp_path / "toy.pt").resolve()),
                        "sha256": hashlib.sha256((tmp_path / "toy.pt").read_bytes()).hexdigest()}


def test_a_resume_or_measure_on_another_file_at_the_data_file_s_path_is_refused(tmp_path):
    """The run recorded its data file by path alone: a resume after another file was put at
    that path went on training on it, and `sgdlab measure` measured the master on it. The
    record and the checkpoints hold the file's SHA-256: both are refused, naming it."""
    from sgdlab.store import RunStore
    from sgdlab.train.distributed import build_model_and_data

    cfg, _ = write_problem(tmp_path, replicas=1, rounds=1)
    cfg["store"] = str(tmp_path / "runs.sqlite")
    out = tmp_path / "out"
    run_id = run_from_config(cfg, mode="inprocess", out=out).run_id
    recorded = RunStore(tmp_path / "runs.sqlite").get_run(run_id)["config"]
    d = torch.load(tmp_path / "toy.pt", weights_only=True)
    d["y_train"] = d["y_train"].flip(0)            # same size and shapes, other labels
    torch.save(d, tmp_path / "toy.pt")
    with pytest.raises(ConfigError, match="differs from the saved run's in data.sha256"):
        run_from_config({**cfg, "rounds": 2}, mode="inprocess", out=out, resume=True)
    with pytest.raises(UserError, match="has changed since the run recorded it"):
        build_model_and_data(recorded)
    # checkpoints saved before runs recorded the content: their path is what is compared
    from sgdlab.train.replicas import _setting_changes

    now = {"built": {"data": recorded["data"], "seed": 1}}
    assert _setting_changes({"built": {"data": {"file": recorded["data"]["file"]},
                                       "seed": 1}}, now) == []


def test_a_run_extended_by_a_resume_records_its_new_length(tmp_path):
    from sgdlab.store import RunStore

    cfg, _ = write_problem(tmp_path, replicas=1, rounds=1)
    cfg["store"] = str(tmp_path / "runs.sqlite")
    run_id = run_from_config(cfg, mode="inprocess", out=tmp_path / "out").run_id
    run_from_config({**cfg, "rounds": 2}, mode="inprocess", out=tmp_path / "out", resume=True)
    recorded = RunStore(tmp_path / "runs.sqlite").get_run(run_id)
    assert recorded["summary"]["rounds"] == recorded["config"]["rounds"] == 2


def test_a_resume_with_another_data_model_or_seed_in_its_config_is_refused(tmp_path):
    """`sgdlab parle CONFIG --resume` takes the config again: a model of the same shapes with
    another activation, another data spec of the same size or another initial-weight seed
    went on from the checkpoint without a word (and the run's record said the new config).
    Now each is named; the length and eval_every may change."""
    cfg, _ = write_problem(tmp_path, replicas=1, rounds=1)
    out = tmp_path / "out"
    run_from_config(cfg, mode="inprocess", out=out)
    other = tmp_path / "other.pt"
    other.write_bytes((tmp_path / "toy.pt").read_bytes())
    for change, needle in [({"model": {**cfg["model"], "activation": "relu"}},
                            "model.activation ('tanh' -> 'relu')"),
                           ({"data": {"file": str(other)}}, "data.file ("),
                           ({"seed": 3}, "seed (1 -> 3)")]:
        with pytest.raises(ConfigError) as e:
            run_from_config({**cfg, "rounds": 2, **change}, mode="inprocess", out=out,
                            resume=True)
        assert "differs from the saved run's in " + needle in str(e.value), (needle, e.value)
    res = run_from_config({**cfg, "rounds": 2, "eval_every": 1}, mode="inprocess", out=out,
                          resume=True)
    assert res.rounds == 2


@pytest.mark.parametrize("hard_links", [True, False])
def test_of_two_starts_into_one_free_folder_at_once_exactly_one_proceeds(tmp_path, monkeypatch,
                                                                       hard_links):
    """Both starts find OUT without checkpoints, and only then (a barrier holds the first
    until the second has checked too) go on: one trains into OUT, the other is refused
    naming the folder and writes nothing there. Also on a file system without hard links.
    The one that trains waits until the other is refused: a refused start that finds the
    winner's checkpoints already saved says so instead (a loaded machine, where the other
    thread waited past the winner's 2 rounds, failed the message check)."""
    import threading

    import sgdlab.train.distributed as distributed
    import sgdlab.train.replicas as replicas
    from sgdlab.errors import UserError
    from sgdlab.testing import start_twice_at_once, without_hard_links

    cfg, _ = write_problem(tmp_path, replicas=2, rounds=2)
    both_checked = threading.Barrier(2, timeout=60)
    first = threading.local()
    check = replicas.check_checkpoint_dir

    def check_then_wait(*a, **k):
        check(*a, **k)
        if not getattr(first, "passed", False):     # each start's first check
            first.passed = True
            both_checked.wait()

    monkeypatch.setattr(replicas, "check_checkpoint_dir", check_then_wait)
    monkeypatch.setattr(distributed, "check_checkpoint_dir", check_then_wait, raising=False)
    other_refused = threading.Event()
    claim, train = distributed.claim_out, distributed.train_replicas

    def claim_or_say_refused(*a, **k):
        try:
            return claim(*a, **k)
        except UserError:
            other_refused.set()
            raise

    def train_once_the_other_is_refused(*a, **k):
        other_refused.wait(60)
        return train(*a, **k)

    monkeypatch.setattr(distributed, "claim_out", claim_or_say_refused)
    monkeypatch.setattr(distributed, "train_replicas", train_once_the_other_is_refused)
    if not hard_links:
        without_hard_links(monkeypatch)
    out = tmp_path / "out"
    started, refused = start_twice_at_once(lambda: run_from_config(cfg, mode="inprocess",
                                                                   out=out))
    assert len(started) == 1 and len(refused) == 1, (len(started), refused)
    assert refused[0].startswith(f"{out} already holds a parle run"), refused[0]
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints", "learning_curves.png", "master.pt", "parle.json", "parle.lock",
        "results.json"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["master.pt", "rank0.pt"]


def test_a_claim_left_by_a_killed_start_says_that_its_run_is_gone(tmp_path):
    """SIGKILL leaves parle.json behind; the next start says the holder no longer runs."""
    import platform
    import subprocess

    from sgdlab.errors import UserError
    from sgdlab.train.distributed import claim_out

    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    claim_out(out)
    path = out / "parle.json"
    held = json.loads(path.read_text())
    path.write_text(json.dumps({**held, "pid": int(dead.stdout)}))   # that process has exited
    with pytest.raises(UserError, match=f"pid {int(dead.stdout)} on {platform.node()}\\) that "
                                        "is no longer running and wrote no checkpoint"):
        claim_out(out)
    path.write_text(json.dumps(held))                                # this process: alive
    with pytest.raises(UserError, match="already holds a parle run started"):
        claim_out(out)


def test_a_start_that_fails_before_its_first_checkpoint_leaves_its_folder_free(tmp_path,
                                                                               monkeypatch):
    """The folder is a run's from its start: a second start is refused while the first has
    no checkpoint yet, and once it has one (then --resume continues it). A start that fails
    before its first checkpoint frees the folder, so the same command can start again."""
    import sgdlab.train.distributed as distributed
    from sgdlab.errors import UserError

    cfg, _ = write_problem(tmp_path, replicas=2, rounds=2)
    out = tmp_path / "out"
    train_replicas = distributed.train_replicas
    seen = []

    def refused_meanwhile(*a, **k):
        with pytest.raises(UserError, match="already holds a parle run .* no checkpoint"):
            run_from_config(cfg, mode="inprocess", out=out)
        seen.append("refused")
        raise KeyboardInterrupt("stopped before the first checkpoint")

    monkeypatch.setattr(distributed, "train_replicas", refused_meanwhile)
    with pytest.raises(KeyboardInterrupt):
        run_from_config(cfg, mode="inprocess", out=out)
    assert seen == ["refused"] and not (out / "parle.json").exists()
    monkeypatch.setattr(distributed, "train_replicas", train_replicas)
    run_from_config(cfg, mode="inprocess", out=out)          # the same start again
    with pytest.raises(UserError, match="already holds a run's checkpoints"):
        run_from_config(cfg, mode="inprocess", out=out)
    res = run_from_config({**cfg, "rounds": 3}, mode="inprocess", out=out, resume=True)
    assert res.rounds == 3 and (out / "parle.json").exists()


def test_replica_processes_started_into_a_taken_folder_all_stop_with_its_reason(tmp_path):
    """Launched by torchrun without `sgdlab parle`, rank 0 claims OUT; when another start
    holds it, every rank stops at once (exit 2) with a message, none writes a file."""
    _, path = write_problem(tmp_path, replicas=2, rounds=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "parle.json").write_text(json.dumps({"started": "2026-01-01T00:00:00+00:00",
                                                "host": "elsewhere", "pid": 1}))
    procs, logs = launch(tmp_path, 2, [str(path), "--out", str(out), "--timeout", "20"])
    for p in procs:
        p.join(60)
    reap(procs)
    assert [p.exitcode for p in procs] == [2, 2], [read(log)[-2000:] for log in logs]
    assert (f"rank 0: error: {out} already holds a parle run started "
            "2026-01-01T00:00:00+00:00 (pid 1 on elsewhere)") in read(logs[0])
    # rank 1 names rank 0, what it did and its error (one status all-reduce)
    assert (f"rank 1: error: replica 1/2: rank 0 failed opening the run store and taking {out} "
            f"for this run (UserError: {out} already holds a parle run started") in read(logs[1])
    assert sorted(p.name for p in out.iterdir()) == ["parle.json"]


def test_the_torchrun_entry_point_helps_with_every_option(capsys):
    # `python -m sgdlab.train.distributed --help`, the command the README's torchrun line
    # runs, listed --backend without a word on what it chooses
    from sgdlab.train.distributed import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert ("--backend {auto,gloo,nccl} distributed backend (default: auto, the config's "
            "device's: nccl for device: cuda, else gloo)") in out


def test_rank_0_writes_a_diverged_run_s_status_for_its_launcher(tmp_path, monkeypatch):
    """Under torchrun a worker exits 0 after a diverged run (torchrun turns any other status
    into a failure of its own) and rank 0 writes "diverged" to $SGDLAB_PARLE_STATUS, from which
    `sgdlab parle` takes its exit status."""
    from sgdlab.train.distributed import STATUS_ENV

    write_problem(tmp_path, replicas=2, rounds=3)
    d = torch.load(tmp_path / "toy.pt", weights_only=True)
    d["x_train"][0, 0] = float("nan")      # a NaN training loss in round 1
    torch.save(d, tmp_path / "toy.pt")
    status = tmp_path / "status"        # rank 0 creates it
    monkeypatch.setenv(STATUS_ENV, str(status))
    procs, logs = launch(tmp_path, 2, [str(tmp_path / "cfg.json"), "--backend", "gloo"])
    try:
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0], [read(log) for log in logs]
    finally:
        reap(procs)
    assert status.read_text() == "diverged"
    # rank 0 names the NaN as its own or another rank's, by which rank drew the example
    assert re.search(r"diverged \((non-finite replica loss|another replica's loss was "
                     r"non-finite)", read(logs[0]))


def test_a_data_file_that_is_no_dict_of_tensors_is_named(tmp_path):
    # another format was an UnpicklingError traceback, a dict without y_train a KeyError
    from sgdlab.errors import DataError, UserError
    from sgdlab.train.distributed import build_model_and_data

    cfg = {"data": {"file": str(tmp_path / "d.pt")}, "model": {"name": "mlp", "widths": [4]}}
    (tmp_path / "d.pt").write_text("x_train,y_train\n1,2\n")
    with pytest.raises(UserError, match=r"cannot read data file '.*d.pt': not a data file"):
        build_model_and_data(cfg)
    torch.save({"x_train": torch.randn(8, 3)}, tmp_path / "d.pt")
    with pytest.raises(DataError, match=r"d.pt' needs the tensors x_train and y_train, and "
                                        r"x_test with y_test or neither \(meta optional\); it "
                                        r"holds x_train: Tensor$"):
        build_model_and_data(cfg)
    # the test split may be left out, as for sgdlab.data.Dataset
    torch.save({"x_train": torch.randn(8, 3), "y_train": torch.arange(8) % 2}, tmp_path / "d.pt")
    _, _, data = build_model_and_data(cfg)
    assert len(data.x_train) == 8 and len(data.x_test) == 0


def test_a_device_other_than_cpu_or_cuda_is_refused(tmp_path):
    from sgdlab.train.distributed import build_run

    cfg, _ = write_problem(tmp_path, replicas=2, rounds=1)
    # worded as `sgdlab run --device gpu` and a run config's train.device are
    with pytest.raises(ConfigError, match=r"^device must be cpu or cuda, got 'gpu' \(did you "
                                          r"mean cuda\?\)$"):
        build_run({**cfg, "device": "gpu"})
    assert build_run({**cfg, "device": "cpu"})[3].replicas == 2


def test_a_replica_config_not_named_yaml_says_it_was_read_as_json(tmp_path):
    # a TOML or suffix-less YAML file was told "not valid JSON" alone
    from sgdlab.train.distributed import load_config

    for name, told in (("parle.toml", "this one is named .toml)"),
                       ("parle", "this one has no suffix)")):
        (tmp_path / name).write_text("data: {name: digits}\n")
        with pytest.raises(ConfigError, match="not valid JSON: .*read as YAML when named .yaml "
                                              "or .yml, else as JSON; " + told.replace(")", r"\)")):
            load_config(tmp_path / name)
    (tmp_path / "parle.json").write_text('{"a": ')
    with pytest.raises(ConfigError, match=r"not valid JSON: Expecting value: line 1 column 7 "
                                          r"\(char 6\)$"):
        load_config(tmp_path / "parle.json")


@pytest.mark.parametrize("seed", ["abc", 1.5, -1, True, 2**64])
def test_a_replica_config_seed_that_is_no_32_bit_int_is_refused(seed):
    # int() of it was a ValueError traceback ('abc', 2**64 in torch.manual_seed) or it
    # dropped a fraction
    from sgdlab.train.distributed import build_model_and_data

    cfg = {"data": {"name": "cubic"}, "model": {"name": "mlp", "widths": [4]}, "seed": seed}
    with pytest.raises(ConfigError, match=r"^seed must be an int in 0..2\*\*32 - 1, got "):
        build_model_and_data(cfg)


def test_a_bad_model_or_data_option_of_a_replica_config_names_its_section():
    # "option 'n_train' must be ..." named no section; a run config's {name, options: {...}}
    # layout was called an unknown option 'options' without saying where options go
    from sgdlab.train.distributed import build_model_and_data

    with pytest.raises(ConfigError, match=r"^data: option 'n_train' must be an int >= 2"):
        build_model_and_data({"data": {"name": "cubic", "n_train": -1},
                              "model": {"name": "mlp"}})
    with pytest.raises(ConfigError, match=r"^model: model 'mlp' has no option\(s\) 'options'.*; "
                                          r"a replica config gives them beside the name"):
        build_model_and_data({"data": {"name": "cubic"},
                              "model": {"name": "mlp", "options": {"widths": [4]}}})


def test_a_loss_that_fails_on_the_outputs_is_refused_when_built(tmp_path, request):
    """A model of 2 outputs for 3 classes under loss: mse: refused by build_run, as `sgdlab
    train` refuses it, before the run is recorded failed at its first step."""
    from torch import nn

    from sgdlab.models import MODELS, register_model
    from sgdlab.train.distributed import build_run

    def two(input_shape, num_outputs):
        return nn.Linear(input_shape[0], 2)

    request.addfinalizer(lambda: MODELS.pop("two-outputs", None))
    register_model("two-outputs")(two)
    cfg, _ = write_problem(tmp_path, replicas=2, rounds=1)
    with pytest.raises(UserError, match=r"OneHotMSELoss fails on the model's outputs of shape "
                       r"\(2, 2\) with targets of shape \(2,\)"):
        build_run({**cfg, "model": {"name": "two-outputs"}, "loss": "mse"})


def test_distributed_instruments_measure_the_master_on_rank_0_as_in_process(tmp_path):
    """A config's ``measure`` instruments: rank 0 measures the master at the same round ends
    (every counts rounds) and logs the in-process run's values into results.json; the
    figures are drawn."""
    cfg, path = write_problem(tmp_path, replicas=2, rounds=5)
    cfg["model"]["batchnorm"] = True
    cfg["measure"] = [{"name": "hessian", "every": 2, "k": 1, "tol": 1e-10}]
    res, history = inprocess_and_distributed(tmp_path, cfg, path)
    assert [s for s, _ in history["hess/top_1"]] == [0, 6, 12]
    assert [v for _, v in history["hess/top_1"]] == pytest.approx(
        [v for _, v in res.history["hess/top_1"]], rel=1e-9)
    assert (tmp_path / "dist" / "instruments.png").is_file()
    assert (tmp_path / "dist" / "learning_curves.png").is_file()


FAILING_INSTRUMENT = '''
from sgdlab.train.callbacks import MeasurementCallback
from sgdlab.train.instruments import register_instrument


def _fail(ctx):
    if ctx.step:
        raise RuntimeError("boom: this instrument fails")
    return {"boom": 0.0}


@register_instrument("boom")
def boom(*, schedule):
    return MeasurementCallback(_fail, schedule)
'''


def test_an_instrument_failing_on_rank_0_stops_every_rank_at_once(tmp_path):
    """Rank 0 alone measures: its instrument's error stops it and, told in the same
    round, every other rank, well before the collective's timeout (30 s)."""
    plugin = tmp_path / "boom_instrument.py"
    plugin.write_text(FAILING_INSTRUMENT)
    cfg, path = write_problem(tmp_path, replicas=2, rounds=10**6)
    cfg.update(plugins=[str(plugin)], measure=[{"name": "boom", "every": 3}])
    path.write_text(json.dumps(cfg))
    procs, logs = launch(tmp_path, 2, [str(path), "--timeout", "30"])
    t0 = time.monotonic()
    try:
        for p in procs:
            p.join(60)
    finally:
        reap(procs)
    assert time.monotonic() - t0 < 20
    # (rank 0: the exit status of an unexpected error, its traceback printed)
    assert procs[0].exitcode not in (0, None) and procs[1].exitcode == 1, [
        read(l)[-2000:] for l in logs]
    assert "boom: this instrument fails" in read(logs[0]), read(logs[0])[-2000:]
    assert ("rank 0 failed measuring the master after round 3 with boom (RuntimeError: boom: "
            "this instrument fails); stopped with it") in read(logs[1]), read(logs[1])[-2000:]


def test_a_replica_config_without_a_length_is_refused_naming_the_three(tmp_path):
    # with none, the run was built and recorded, then refused by the trainer in other words
    from sgdlab.train.distributed import build_run

    cfg, _ = write_problem(tmp_path, replicas=2, rounds=1)
    del cfg["rounds"]
    with pytest.raises(ConfigError, match=r"^give exactly one of 'rounds', 'epochs' or "
                                          r"'grad_evals' \(the run's length\); it gives none$"):
        build_run(cfg)


def test_build_run_hands_the_config_s_run_options_to_the_trainer(tmp_path):
    from sgdlab.train.distributed import build_run

    cfg, _ = write_problem(tmp_path, replicas=2, rounds=3)
    extra = {"eval_every": 2, "eval_subset": 5, "name": "mine"}
    assert build_run({**cfg, **extra})[4] == {"rounds": 3, **extra}
    del cfg["rounds"]
    for length in ({"epochs": 1.5}, {"grad_evals": 30}):
        assert build_run({**cfg, **length})[4] == length


def test_plugin_options_are_added_to_the_config_s_plugins_once_each():
    from sgdlab.train.distributed import add_plugins

    cfg = {"plugins": ["mine", "theirs.py"]}
    add_plugins(cfg, ["theirs.py", "new", "new"])
    assert cfg["plugins"] == ["mine", "theirs.py", "new"]
    cfg = {}
    add_plugins(cfg, [])
    assert cfg == {}                 # no empty list recorded for a run without plugins
    add_plugins(cfg, ["a"])
    assert cfg == {"plugins": ["a"]}
    cfg = {"plugins": "mine"}        # no list: left for build_run to refuse, by its value
    add_plugins(cfg, ["a"])
    assert cfg == {"plugins": "mine"}


def test_the_replica_config_s_seed_and_dtype_make_the_initial_model_and_data(tmp_path):
    """``seed`` seeds the weight init (0 when not given, as a run config's); ``dtype``
    (float32 by default) is that of the weights and the data: float64 keeps the data file's
    float64 values exactly."""
    from sgdlab.models import build_model
    from sgdlab.train.distributed import build_model_and_data

    cfg, _ = write_problem(tmp_path, replicas=2, rounds=1)
    base = {"data": cfg["data"], "model": cfg["model"]}
    x = torch.load(tmp_path / "toy.pt", weights_only=True)["x_train"]
    torch.manual_seed(0)
    ref = build_model("mlp", (4,), 3, widths=[6], activation="tanh")
    for given, dtype in (({}, torch.float32), ({"seed": 0, "dtype": "float64"}, torch.float64)):
        model, _, data = build_model_and_data({**base, **given})
        assert data.x_train.dtype == dtype and torch.equal(data.x_train, x.to(dtype))
        for p, q in zip(model.parameters(), ref.parameters(), strict=True):
            assert p.dtype == dtype and torch.equal(p, q.to(dtype))
    other = build_model_and_data({**base, "seed": 1})[0]
    assert not torch.equal(next(other.parameters()), next(ref.parameters()))


def test_a_start_frees_only_its_own_claim_and_never_a_folder_with_a_checkpoint(tmp_path):
    from sgdlab.train.distributed import claim_out, release_out

    out = tmp_path / "o"
    mine = claim_out(out)
    claim = out / "parle.json"
    release_out(out, json.dumps({"claim": "another start's"}))     # the file is not its
    assert claim.read_text() == mine
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "master.pt").write_bytes(b"")
    release_out(out, mine)           # the run has a checkpoint: the folder stays its (--resume)
    assert claim.read_text() == mine
    (out / "checkpoints" / "master.pt").unlink()
    release_out(out, mine)
    assert not claim.exists()
    release_out(out, mine)           # nothing left to free: no error


def test_a_start_whose_lock_fails_after_its_claim_frees_the_folder(tmp_path, monkeypatch):
    import sgdlab.train.distributed as distributed

    def busy(out):
        raise UserError(f"{out}: its parle run is being trained by another process")

    monkeypatch.setattr(distributed, "lock_out", busy)
    with pytest.raises(UserError, match="being trained by another process"):
        distributed._take_out(tmp_path / "o", claim=True)
    assert not (tmp_path / "o" / "parle.json").exists()    # the same command starts it again


def test_the_run_store_is_the_option_s_then_the_config_s_then_the_resumed_run_s(tmp_path,
                                                                                 monkeypatch):
    """As ``sgdlab train`` picks it: ``--store``, the config's ``store``, on a resume the
    store the run's checkpoints name, else ``$SGDLAB_STORE``."""
    from sgdlab.train.checkpoint import save_checkpoint
    from sgdlab.train.distributed import run_store_path

    monkeypatch.setenv("SGDLAB_STORE", str(tmp_path / "env.sqlite"))
    out = tmp_path / "o"
    (out / "checkpoints").mkdir(parents=True)
    save_checkpoint(out / "checkpoints" / "master.pt",
                    {"format": 1, "store": str(tmp_path / "recorded.sqlite")})
    mine = {"store": str(tmp_path / "cfg.sqlite")}
    assert run_store_path(mine, tmp_path / "opt.sqlite", out, True) == tmp_path / "opt.sqlite"
    assert run_store_path(mine, None, out, True) == tmp_path / "cfg.sqlite"
    assert run_store_path({}, None, out, True) == tmp_path / "recorded.sqlite"
    assert run_store_path({}, None, out, False) == tmp_path / "env.sqlite"   # a new run
    assert run_store_path({}, None, tmp_path / "none", True) == tmp_path / "env.sqlite"


def test_a_run_with_an_output_folder_is_finished_in_its_store_once_its_files_are_written(
        tmp_path, monkeypatch):
    import sgdlab.train.distributed as distributed
    from sgdlab.store import RunStore

    cfg, _ = write_problem(tmp_path, replicas=2, rounds=2)
    cfg["store"] = str(tmp_path / "runs.sqlite")

    def no_space(*a, **k):
        raise OSError("boom: no space left for the figures")

    monkeypatch.setattr(distributed, "_draw_figures", no_space)
    with pytest.raises(OSError, match="boom"):
        run_from_config(cfg, mode="inprocess", out=tmp_path / "o")
    (run,) = RunStore(tmp_path / "runs.sqlite").list_runs()
    assert run["status"] != "finished"      # its master.pt and results.json are not all there


def test_a_folder_its_launcher_claimed_is_not_claimed_again(tmp_path):
    # sgdlab parle takes OUT and passes --claimed: rank 0 taking it again refused the run
    from sgdlab.train.distributed import claim_out

    cfg, _ = write_problem(tmp_path, replicas=2, rounds=1)
    claim_out(tmp_path / "o")
    res = run_from_config(cfg, mode="inprocess", out=tmp_path / "o", claimed=True)
    assert res.status == "finished" and (tmp_path / "o" / "master.pt").exists()
    with pytest.raises(UserError, match="already holds a run's checkpoints"):
        run_from_config(cfg, mode="inprocess", out=tmp_path / "o", claimed=True)


class Stop(Exception):
    """Raised by a recorded call: nothing past it runs."""


def test_every_rank_starts_from_rank_0_s_initial_weights(tmp_path):
    """A rank overwrites the weights it built with rank 0's (a broadcast) before any other
    collective: identical initial replicas whatever the init's determinism (a plugin model
    seeded per process, a GPU's kernels)."""
    from sgdlab.train.distributed import build_run

    cfg, _ = write_problem(tmp_path, replicas=2, rounds=1)
    asked = []

    class Rank1:                     # rank 1 of 2; the other rank's part all OK
        rank, world_size = 1, 2

        def average(self, tensors):
            return [t / 2 for t in tensors]

        def broadcast_(self, tensors, src=0):
            asked.append((src, [t.shape for t in tensors]))
            raise Stop

    with pytest.raises(Stop):
        run_from_config(cfg, mode="distributed", communicator=Rank1())
    assert asked == [(0, [p.shape for p in build_run(cfg)[0].parameters()])]


def test_the_report_names_every_non_finite_final_value(tmp_path):
    from types import SimpleNamespace

    from sgdlab.train.distributed import report

    res = SimpleNamespace(rounds=2, grad_evals=6, status="diverged", message="why",
                          run_id="r1", final={"a": float("nan"), "b": float("inf"),
                                              "c": -float("inf"), "d": 0.5, "rounds": 2})
    lines = report(res, out=tmp_path / "o", processes=2, store="s.sqlite").splitlines()
    assert lines[0] == ("parle (distributed, 2 processes, 2 rounds, 6 gradient evaluations "
                        "per replica): diverged (why)")
    assert strict_loads("\n".join(lines[1:-3])) == {"a": None, "b": None, "c": None,
                                                    "d": 0.5, "rounds": 2}
    assert lines[-3] == "not finite (null in the JSON): a, b, c"
    assert lines[-2] == f"master weights: {tmp_path / 'o' / 'master.pt'}"
    assert lines[-1].startswith("run r1 in the run store s.sqlite (sgdlab runs show r1 ")
    res.final, res.run_id = {"d": 0.5}, None
    assert report(res, out=None).splitlines()[0].startswith("parle (in-process, 2 rounds")
    assert report(res, out=None, store="s.sqlite").splitlines()[-1] == "}"


def test_a_run_without_instruments_draws_no_instruments_figure(tmp_path):
    # Parle's own series (the replicas' loss, gamma, rho, lr) are no instruments
    cfg, _ = write_problem(tmp_path, replicas=2, rounds=2)
    run_from_config(cfg, mode="inprocess", out=tmp_path / "o")
    assert (tmp_path / "o" / "learning_curves.png").exists()
    assert not (tmp_path / "o" / "instruments.png").exists()


def test_the_entry_point_s_replicas_and_set_options_change_the_config_it_runs(tmp_path,
                                                                             monkeypatch):
    import sgdlab.train.distributed as distributed

    _, path = write_problem(tmp_path, replicas=2, rounds=1)
    seen = []

    def store_of(cfg, *a):
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(distributed, "run_store_path", store_of)
    with pytest.raises(Stop):
        distributed.main([str(path), "--replicas", "3", "--set", "parle.L=4"])
    assert seen[0]["parle"]["replicas"] == 3 and seen[0]["parle"]["L"] == 4


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_a_replica_knows_its_launcher_gone_unless_its_parent_s_parent_is_it(monkeypatch):
    import subprocess

    import sgdlab.train.distributed as distributed

    monkeypatch.delenv(distributed.LAUNCHER_ENV, raising=False)
    assert distributed.launcher_gone() is False            # not started by sgdlab parle
    parent = os.getppid()
    grandparent = int(open(f"/proc/{parent}/stat").read().rsplit(")", 1)[1].split()[1])
    monkeypatch.setenv(distributed.LAUNCHER_ENV, str(grandparent))
    assert distributed.launcher_gone() is False
    monkeypatch.setenv(distributed.LAUNCHER_ENV, str(parent))
    assert distributed.launcher_gone() is True             # reparented: another grandparent
    done = subprocess.Popen(["true"])
    done.wait()                                            # a pid no process has now
    monkeypatch.setattr(distributed.os, "getppid", lambda: done.pid)
    assert distributed.launcher_gone() is True             # the parent gone meanwhile


def test_a_resume_without_an_output_folder_is_refused_naming_where_checkpoints_are(tmp_path):
    cfg, _ = write_problem(tmp_path, replicas=2, rounds=1)
    with pytest.raises(UserError, match=r"^resume needs an output directory \(--out DIR; "
                                        r"checkpoints are in DIR/checkpoints\)$"):
        run_from_config(cfg, mode="inprocess", resume=True)


def test_results_json_says_how_the_run_ran_and_master_pt_holds_the_master(tmp_path):
    from types import SimpleNamespace

    from sgdlab.train.distributed import _write_outputs
    from sgdlab.train.replicas import ParleConfig

    master = torch.nn.Linear(2, 1).double()
    res = SimpleNamespace(master=master, status="finished", message=None, run_id=None,
                          final={"train_loss": 0.5},
                          history={"train_loss": [[0, 1.0], [3, 0.5]]})
    parle = ParleConfig(replicas=2, L=3)
    _write_outputs(res, tmp_path / "o", "distributed", parle, None)
    assert strict_loads((tmp_path / "o" / "results.json").read_text()) == {
        "status": "finished", "message": None, "mode": "distributed", "run_id": None,
        "store": None, "final": {"train_loss": 0.5}, "parle": parle.to_json(),
        "history": {"train_loss": [[0, 1.0], [3, 0.5]]}}
    saved = torch.load(tmp_path / "o" / "master.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in master.state_dict().items())


def test_a_replica_config_named_yml_is_read_as_yaml(tmp_path):
    from sgdlab.train.distributed import load_config

    for suffix in (".yaml", ".yml"):
        (tmp_path / f"c{suffix}").write_text("data: {name: digits}\nparle: {lr: 1e-2}\n")
        assert load_config(tmp_path / f"c{suffix}") == {"data": {"name": "digits"},
                                                        "parle": {"lr": 0.01}}


def test_an_exit_with_a_message_is_status_1_with_the_message(monkeypatch, capsys):
    import sgdlab.train.distributed as distributed

    def leaves(code):
        def main(argv):
            raise SystemExit(code)
        return main

    for code, status in (("a message", 1), (None, 0), (2, 2), (0, 0)):
        monkeypatch.setattr(distributed, "main", leaves(code))
        assert distributed.exit_status([]) == status
    capsys.readouterr()
    monkeypatch.setattr(distributed, "main", leaves("a message"))
    distributed.exit_status([])
    assert capsys.readouterr().err == "a message\n"


def test_a_claim_whose_holder_cannot_be_told_gone_is_not_called_gone(tmp_path, monkeypatch):
    # owner_alive None (its start time unreadable): the run may still be going, so the
    # message does not tell the user to remove its claim as a dead one's
    import sgdlab.store.runstore as runstore
    from sgdlab.train.distributed import claim_out

    out = tmp_path / "out"
    claim_out(out)
    monkeypatch.setattr(runstore, "owner_alive", lambda *a: None)
    with pytest.raises(UserError, match="already holds a parle run started .* that has "
                                        "written no checkpoint yet"):
        claim_out(out)
