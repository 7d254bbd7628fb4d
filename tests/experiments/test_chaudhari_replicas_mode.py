"""The ``replicas`` procedure's ``mode``: a distributed run is the run config of ``sgdlab parle``
launched as ``sgdlab parle --mode distributed`` launches it, with the in-process run's summary
and rows. Its replicas run here in forked workers (torchrun's entry point, without torchrun's
start-up cost); the launcher itself is ``tests/cli/test_cli_parle.py``'s."""
from __future__ import annotations

import math

import pytest

from sgdlab.errors import ConfigError
from sgdlab.experiments.procedures import chaudhari, get_procedure
from sgdlab.experiments.spec import RunSpec
from sgdlab.experiments.worker import RunContext
from sgdlab.store import RunStore
from sgdlab.store.folders import SWEEP_REPLICA_FOLDER
from sgdlab.testing import InProcessLaunch, forked_torchrun, launch_in_process

# one thread, as each replica process has: the same sums, so the same iterates
pytestmark = pytest.mark.usefixtures("one_thread")

PARAMS = {"dataset": {"name": "mnist_small", "n_train": 48, "n_test": 16},
          "model": {"name": "mlp", "widths": [6]}, "dtype": "float64", "grad_evals": 6,
          "eval_every": 1,
          "parle": {"replicas": 2, "L": 2, "lr": 0.1, "batch_size": 8, "rho": 0.5,
                    "gamma": "inf"}}
TIMINGS = {"wall_time", "comm_time"}


def distributed() -> dict:
    """``PARAMS`` with the replicas launched as ``sgdlab parle --mode distributed``."""
    return {**PARAMS, "mode": "distributed"}


def replicas_spec(params: dict) -> RunSpec:
    """The run of these tests: the ``replicas`` procedure on ``params``, seed 3."""
    return RunSpec("e", 1, "smoke", "parle", params, 3, "replicas")


def untimed(summary: dict) -> dict:
    """``summary`` less its timings, which no two runs share."""
    return {k: v for k, v in summary.items() if k not in TIMINGS}


def run_once(tmp_path, params, name):
    store = RunStore(tmp_path / f"{name}.sqlite")
    spec = replicas_spec(params)
    run_id = store.create_run(spec.config(), name=name)
    ctx = RunContext(store=store, run_id=run_id, device="cpu",
                     artifact_dir=tmp_path / name, dependencies={})
    return get_procedure("replicas").run(spec, ctx), store.metrics(run_id)


def test_mode_is_checked():
    proc = get_procedure("replicas")
    proc.validate(distributed(), "run")
    with pytest.raises(ConfigError, match="mode must be one of inprocess, distributed"):
        proc.validate({**PARAMS, "mode": "processes"}, "run")


def test_the_launch_runs_replica_r_on_gpu_r_with_nccl_and_on_the_cpu_with_gloo(tmp_path):
    cfg = chaudhari.replica_run_config(PARAMS, 3, "cuda")
    assert cfg["device"] == "cuda" and cfg["parle"]["seed"] == cfg["seed"] == 3
    assert cfg["data"] == {"name": "mnist_small", "seed": 0, "n_train": 48, "n_test": 16}
    cmd = chaudhari.distributed_command("c.json", 2, "out", "cuda:0")
    assert cmd[1:] == ["-m", "sgdlab", "parle", "c.json", "--mode", "distributed",
                       "--replicas", "2", "--out", "out", "--backend", "auto"]
    assert chaudhari.distributed_command("c.json", 2, "out", "cpu")[-1] == "gloo"
    assert chaudhari.replica_run_config(PARAMS, 3, "cpu")["device"] == "cpu"


class ForkedLaunch:
    """Stands for the process of ``sgdlab parle --mode distributed``: its replicas
    as forked workers running torchrun's entry point."""

    def __init__(self, cmd, **kw):
        assert cmd[2:6] == ["sgdlab", "parle", cmd[4], "--mode"] and "distributed" in cmd
        world = int(cmd[cmd.index("--replicas") + 1])
        argv = [cmd[4], "--out", cmd[cmd.index("--out") + 1], "--replicas", str(world),
                "--backend", cmd[cmd.index("--backend") + 1], "--timeout", "30"]
        self.procs, self.store = forked_torchrun(
            world, argv, [f"{cmd[4]}.rank{rank}.log" for rank in range(world)])

    def wait(self):
        for p in self.procs:
            p.join(60)
        return max(p.exitcode for p in self.procs)

    def terminate(self):  # pragma: no cover - only on a failed wait
        for p in self.procs:
            p.kill()


def test_a_distributed_run_has_the_in_process_run_s_summary_and_rows(tmp_path, monkeypatch):
    ref, ref_rows = run_once(tmp_path, PARAMS, "inprocess")
    monkeypatch.setattr(chaudhari, "_start", ForkedLaunch)
    out, rows = run_once(tmp_path, distributed(), "distributed")
    assert out.status == ref.status == "finished"
    assert out.summary.keys() == ref.summary.keys()
    assert untimed(out.summary) == untimed(ref.summary)
    assert (out.summary["rounds"], out.summary["grad_evals"], out.summary["replicas"]) == (3, 6, 2)
    # every row under its step, γ = ∞ included (strict JSON would have made it null)
    assert rows.keys() == ref_rows.keys() and math.isinf(rows["gamma"][0][1])
    for name in ref_rows:
        assert [s for s, _ in rows[name]] == [s for s, _ in ref_rows[name]], name
        assert [v for _, v in rows[name]] == pytest.approx([v for _, v in ref_rows[name]],
                                                            rel=1e-12, abs=0), name


class CrashedLaunch:
    """``sgdlab parle`` whose replica 1 died: it says so and exits 1, with no results.json
    (the fail-fast itself: ``tests/train/test_distributed_parle.py``)."""

    def __init__(self, cmd, stdout, **kw):
        stdout.write("sgdlab.train.distributed: rank 0: error: rank 1 is gone\n")
        stdout.flush()

    def wait(self):
        return 1


def test_a_crashed_replica_fails_the_run_naming_what_happened(tmp_path, monkeypatch):
    monkeypatch.setattr(chaudhari, "_start", CrashedLaunch)
    with pytest.raises(RuntimeError, match=r"(?s)distributed run of 2 replica processes "
                       r"failed \(sgdlab parle exit status 1\).*rank 1 is gone"):
        run_once(tmp_path, distributed(), "crashed")


def test_an_interrupted_distributed_run_continues_from_its_checkpoint_set(tmp_path,
                                                                         monkeypatch):
    ref, ref_rows = run_once(tmp_path, PARAMS, "inprocess")
    launch_in_process(monkeypatch)
    proc = get_procedure("replicas")
    params = distributed()
    InProcessLaunch.stop_at = 3
    with pytest.raises(RuntimeError, match="exit status 1"):
        run_once(tmp_path, params, "attempt")
    art = tmp_path / "attempt"
    assert proc.resumes_from(art, params) and not proc.resumes_from(art, PARAMS)
    assert not proc.resumes_from(tmp_path / "inprocess", params)
    InProcessLaunch.stop_at = None
    out, rows = run_once(tmp_path, params, "attempt")
    assert "--resume" in InProcessLaunch.commands[-1]
    assert "--resume" not in InProcessLaunch.commands[-2]
    assert untimed(out.summary) == untimed(ref.summary)
    assert rows == ref_rows           # the rows the resume redid are not doubled


def test_a_distributed_run_a_sweep_finished_keeps_its_weights_not_its_checkpoint_set(
        tmp_path, monkeypatch):
    """Only a resume reads the set (each replica's and the master's state, its optimizer's
    too), and the sweep resumes no finished run: it goes, as the training loop's checkpoint
    does; an interrupted attempt's stays for the resume."""
    from sgdlab.experiments.sweep import artifacts_root, run_sweep

    launch_in_process(monkeypatch)
    spec = replicas_spec(distributed())
    store = tmp_path / "s.sqlite"
    parle = artifacts_root(RunStore(store)) / spec.key / SWEEP_REPLICA_FOLDER
    InProcessLaunch.stop_at = 3
    assert run_sweep([spec], store_path=str(store), progress=None, retries=0).failed
    assert (parle / "checkpoints").is_dir()
    InProcessLaunch.stop_at = None
    rep = run_sweep([spec], store_path=str(store), progress=None)
    assert rep.executed == [spec.key] and not rep.failed
    assert "--resume" in InProcessLaunch.commands[-1]
    assert (parle / "master.pt").is_file() and not (parle / "checkpoints").exists()


@pytest.mark.parametrize("failed_on", ["local", "ray"])
def test_a_distributed_run_whose_attempt_failed_continues_in_a_shipped_task(
        tmp_path, monkeypatch, failed_on):
    """A Ray task trains in a folder of its own: the checkpoint set of the attempt that
    failed (here, or in a Ray task whose files came back with its failure) travels in it,
    and ``--resume`` continues that set (the Ray backend's transport itself:
    tests/experiments/test_sweep_ray.py; here the shipped task runs in this process)."""
    from sgdlab.experiments import sweep
    from sgdlab.experiments.backends import InProcessBackend

    ref, _ = run_once(tmp_path, PARAMS, "inprocess")
    launch_in_process(monkeypatch)
    spec = replicas_spec(distributed())
    store = tmp_path / "s.sqlite"
    monkeypatch.setattr(sweep, "check_backend", lambda *a: None)
    monkeypatch.setattr(sweep, "make_backend", lambda name, on_rows, **kw:
                        InProcessBackend(on_rows))
    InProcessLaunch.stop_at = 3
    assert sweep.run_sweep([spec], store_path=str(store), progress=None, retries=0,
                           backend=failed_on).failed
    InProcessLaunch.stop_at = None
    said: list[str] = []
    rep = sweep.run_sweep([spec], store_path=str(store), progress=said.append, backend="ray")
    assert rep.executed == [spec.key] and not rep.failed
    assert any("from the checkpoint its last attempt left" in s for s in said)
    cmd = InProcessLaunch.commands[-1]
    assert "--resume" in cmd and not cmd[cmd.index("--out") + 1].startswith(str(tmp_path))
    (run,) = sweep.load_runs([spec], store_path=str(store))[0]
    assert untimed(run.summary) == untimed(ref.summary)
    parle = sweep.artifacts_root(RunStore(store)) / spec.key / SWEEP_REPLICA_FOLDER
    assert (parle / "master.pt").is_file() and not (parle / "checkpoints").exists()


def test_the_run_config_keeps_the_length_and_options_the_params_give():
    p = {k: v for k, v in PARAMS.items() if k not in ("dtype", "grad_evals", "eval_every")}
    cfg = chaudhari.replica_run_config({**p, "epochs": 1.5, "eval_subset": 4, "loss": "mse",
                                        "eval_every": None}, 7)
    assert cfg["epochs"] == 1.5 and "grad_evals" not in cfg
    assert cfg["dtype"] == "float32" and cfg["device"] == "cpu"     # the train defaults
    assert (cfg["eval_subset"], cfg["loss"]) == (4, "mse") and "eval_every" not in cfg
    cfg = chaudhari.replica_run_config({**PARAMS, "data_seed": 5}, 7)
    assert cfg["grad_evals"] == 6 and "epochs" not in cfg and cfg["data"]["seed"] == 5


def test_a_data_file_goes_to_the_replica_config_as_its_record():
    """``dataset: {file, sha256}`` (the expansion's record of the file) is a replica config's
    ``data: {file, sha256}``, whose build checks the content."""
    data = {"file": "/d/blobs.pt", "sha256": "0" * 64}
    get_procedure("replicas").validate({**PARAMS, "dataset": data}, "run")
    assert chaudhari.replica_run_config({**PARAMS, "dataset": data}, 3)["data"] == data


def test_a_replicas_run_gives_its_length_one_way():
    proc = get_procedure("replicas")
    with pytest.raises(ConfigError, match="give exactly one of 'epochs' or 'grad_evals'"):
        proc.validate({k: v for k, v in PARAMS.items() if k != "grad_evals"}, "run")
    with pytest.raises(ConfigError, match="give exactly one of 'epochs' or 'grad_evals'"):
        proc.validate({**PARAMS, "epochs": 1}, "run")
    proc.validate({**{k: v for k, v in PARAMS.items() if k != "grad_evals"}, "epochs": 1}, "run")


# --- the run's GPUs ------------------------------------------------------------------------
class RecordedLaunch:
    """Stands for the launcher: records the command and environment it was given and exits
    1 without training (the run then fails, naming the exit status)."""

    seen: list = []

    def __init__(self, cmd, env, **kw):
        self.seen.append((cmd, env))

    def wait(self):
        return 1


def gpus_seen(monkeypatch, count: int, visible: str | None) -> None:
    """This process sees ``count`` GPUs, with ``CUDA_VISIBLE_DEVICES`` ``visible`` (None:
    unset), and its launcher is :class:`RecordedLaunch`."""
    from sgdlab.train import distributed

    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    said = f"this machine has {count} CUDA device(s)" + (
        f" visible (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else "")
    monkeypatch.setattr(distributed, "visible_gpus", lambda: (count, said))
    monkeypatch.setattr(RecordedLaunch, "seen", [])
    monkeypatch.setattr(chaudhari, "_start", RecordedLaunch)


def replicas_of(n: int) -> dict:
    return {**distributed(), "parle": {**PARAMS["parle"], "replicas": n}}


def launched_on(tmp_path, device: str, n: int) -> tuple[list[str], dict, dict]:
    """(command, environment, run config) of the launch of an ``n``-replica run on
    ``device``."""
    import json

    ctx = RunContext(store=None, run_id="r", device=device, artifact_dir=tmp_path / "run",
                     dependencies={})
    with pytest.raises(RuntimeError, match="sgdlab parle exit status 1"):
        chaudhari.run_distributed(replicas_spec(replicas_of(n)), ctx)
    ((cmd, env),) = RecordedLaunch.seen
    return cmd, env, json.loads((tmp_path / "run" / "parle-config.json").read_text())


@pytest.mark.parametrize("visible, child", [(None, "2"), ("4,5,6,7", "6"),
                                            ("GPU-a,GPU-b,GPU-c", "GPU-c"),
                                            ("MIG-a/1/0, MIG-b/1/0, MIG-c/2/0", "MIG-c/2/0")])
def test_a_run_on_cuda_k_launches_its_replica_with_only_gpu_k_visible(
        tmp_path, monkeypatch, visible, child):
    """Its rank 0 takes cuda:0 of what it sees: GPU K of the sweep's process, not GPU 0
    (entries of CUDA_VISIBLE_DEVICES may be indices, UUIDs or MIG ids, spaced or not)."""
    gpus_seen(monkeypatch, 4 if visible is None else len(visible.split(",")), visible)
    cmd, env, cfg = launched_on(tmp_path, "cuda:2", 1)
    assert env["CUDA_VISIBLE_DEVICES"] == child
    assert cfg["device"] == "cuda" and cmd[cmd.index("--backend") + 1] == "auto"
    assert cmd[cmd.index("--replicas") + 1] == "1"


def test_a_run_given_gpus_by_ray_launches_its_replicas_on_those(tmp_path, monkeypatch):
    """A Ray task given 2 GPUs sees those (Ray sets CUDA_VISIBLE_DEVICES, here 2,3) and runs
    on ``cuda``: its launcher sees the same two, local rank r on the r-th of them."""
    gpus_seen(monkeypatch, 2, "2,3")
    cmd, env, cfg = launched_on(tmp_path, "cuda", 2)
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and cfg["device"] == "cuda"
    assert cmd[cmd.index("--replicas") + 1] == "2"


@pytest.mark.parametrize("device, count, visible, said", [
    ("cuda:2", 4, None, r"a distributed run on device cuda:2 puts each of its 2 replicas on a "
                        r"GPU of its own, but it gives the run one GPU, GPU 2 of those this "
                        r"process sees: give it 2 GPUs"),
    ("cuda", 1, "3", r"a distributed run on device cuda puts each of its 2 replicas on a "
                     r"GPU of its own, but this machine has 1 CUDA device\(s\) visible "
                     r"\(CUDA_VISIBLE_DEVICES=3\): give the run 2 GPUs \(--backend ray "
                     r"--gpus-per-run 2\)"),
    ("cuda:4", 4, None, r"device cuda:4 names GPU 4, but this machine has 4 CUDA device"),
    ("cuda:0", 0, "", r"device cuda:0 names GPU 0, but this machine has 0 CUDA device\(s\) "
                      r"visible \(CUDA_VISIBLE_DEVICES=\)"),
    ("cuda", 0, "", r"a distributed run on device cuda puts each of its 2 replicas .* but "
                    r"this machine has 0 CUDA")])
def test_a_run_given_fewer_gpus_than_replicas_is_refused_before_its_launcher_starts(
        tmp_path, monkeypatch, device, count, visible, said):
    from sgdlab.errors import UserError

    gpus_seen(monkeypatch, count, visible)
    art = tmp_path / "run"
    (art / SWEEP_REPLICA_FOLDER).mkdir(parents=True)
    ctx = RunContext(store=None, run_id="r", device=device, artifact_dir=art, dependencies={})
    with pytest.raises(UserError, match=said):
        chaudhari.run_distributed(replicas_spec(replicas_of(2)), ctx)
    assert RecordedLaunch.seen == []
    # nothing of an earlier attempt's folder touched
    assert (art / SWEEP_REPLICA_FOLDER).is_dir() and not (art / "parle-config.json").exists()


def test_a_run_on_the_cpu_launches_with_this_process_s_gpus_untouched(tmp_path, monkeypatch):
    from sgdlab.train import distributed as dist

    gpus_seen(monkeypatch, 0, "0,1")
    monkeypatch.setattr(dist, "visible_gpus", lambda: pytest.fail("GPUs looked at"))
    cmd, env, cfg = launched_on(tmp_path, "cpu", 2)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and cfg["device"] == "cpu"
    assert cmd[cmd.index("--backend") + 1] == "gloo"


@pytest.mark.parametrize("device, current", [("cuda:2", [2]), ("cuda", []), ("cpu", [])])
def test_an_in_process_run_trains_on_its_device_with_it_current(tmp_path, monkeypatch,
                                                                 device, current):
    """On ``cuda:K`` the replicas live on cuda:K, and K is the current GPU while they train
    (torch's current-device choice a stand-in here: no GPU)."""
    import contextlib
    import types

    import torch

    from sgdlab.train import replicas

    selected: list[int] = []
    calls: list = []

    @contextlib.contextmanager
    def select(index):
        selected.append(index)
        yield
        selected.pop()

    def train(*a, device, **kw):
        calls.append((device, list(selected)))
        return types.SimpleNamespace(final={}, status="finished", message=None)

    monkeypatch.setattr(torch.cuda, "device", select)
    monkeypatch.setattr(replicas, "train_replicas", train)
    ctx = RunContext(store=None, run_id="r", device=device, artifact_dir=tmp_path,
                     dependencies={})
    out = get_procedure("replicas").run(replicas_spec(PARAMS), ctx)
    assert out.status == "finished" and calls == [(device, current)] and selected == []


# 48 training examples in batches of 8: an epoch of the whole set is B = 6 rounds
PER_EPOCH = {**PARAMS, "eval_every": None, "eval_every_epochs": 1, "grad_evals": 12,
             "parle": {**PARAMS["parle"], "L": 1}}


def test_eval_every_epochs_counts_epochs_of_the_whole_sets_mini_batches():
    assert chaudhari.eval_rounds(PER_EPOCH, 48) == 6
    assert chaudhari.eval_rounds({**PER_EPOCH, "eval_every_epochs": 2}, 50) == 14   # ⌈50/8⌉
    assert chaudhari.eval_rounds(PARAMS, 48) == 1
    assert chaudhari.eval_rounds({**PARAMS, "eval_every": None}, 48) is None


def test_a_run_with_eval_every_epochs_is_evaluated_at_each_epochs_end(tmp_path):
    out, rows = run_once(tmp_path, PER_EPOCH, "epochs")
    assert out.status == "finished" and out.summary["rounds"] == 12
    assert [s for s, _ in rows["test_acc"]] == [0, 6, 12]
    _, by_rounds = run_once(tmp_path, {**PER_EPOCH, "eval_every": 6,
                                       "eval_every_epochs": None}, "rounds")
    assert by_rounds["test_acc"] == rows["test_acc"]
    # the evaluations leave training alone: the final error of a run evaluated at its end only
    _, at_end = run_once(tmp_path, {**PER_EPOCH, "eval_every_epochs": None}, "end")
    assert at_end["test_acc"][-1] == rows["test_acc"][-1]


def test_eval_every_and_eval_every_epochs_are_one_or_the_other():
    proc = get_procedure("replicas")
    proc.validate(PER_EPOCH, "run")
    with pytest.raises(ConfigError, match="at most one of 'eval_every'"):
        proc.validate({**PER_EPOCH, "eval_every": 6}, "run")
    with pytest.raises(ConfigError, match="eval_every_epochs"):
        proc.validate({**PER_EPOCH, "eval_every_epochs": 0}, "run")
    # the distributed run config takes rounds, counted on the loaded training set first
    with pytest.raises(ConfigError, match="give the rounds it makes"):
        chaudhari.replica_run_config(PER_EPOCH, 3)


def test_a_distributed_run_counts_the_epochs_on_its_training_set(tmp_path, monkeypatch):
    monkeypatch.setattr(chaudhari, "_start", ForkedLaunch)
    out, rows = run_once(tmp_path, {**PER_EPOCH, "mode": "distributed"}, "distributed")
    assert out.status == "finished" and [s for s, _ in rows["test_acc"]] == [0, 6, 12]
