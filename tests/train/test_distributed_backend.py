"""The process group's backend follows the device the run's replicas live on (the config's
``device``), not whether the machine has CUDA: ``auto`` is gloo for a CPU run on a machine
with a GPU (nccl failed there at the first collective, the broadcast of CPU weights), nccl
for ``device: cuda``, each rank on GPU ``LOCAL_RANK``; ``--backend nccl`` with a CPU run is
refused before any process group work. No GPU here: CUDA's presence is patched, and the
process group's creation recorded instead of done."""
from __future__ import annotations

import datetime
import json
import os

import pytest
import torch
import torch.distributed as dist

import sgdlab.train.distributed as distributed
from sgdlab.errors import ConfigError, UserError
from sgdlab.train.communicator import ReplicaCommunicationError
from sgdlab.train.distributed import choose_backend, local_device

CONFIG = {"data": {"name": "digits", "flatten": True, "n_train": 64},
          "model": {"name": "mlp", "widths": [8]}, "parle": {"replicas": 2, "L": 2},
          "rounds": 2}


class Started(Exception):
    """Raised by the recorded process group creation: nothing past it runs."""


@pytest.fixture
def machine(monkeypatch):
    """A machine with 2 GPUs as torch sees it, rank 1 of 2 on it (LOCAL_RANK 1); returns what
    the rank asked for: the process group's backend, the GPU it selected."""
    asked: dict = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: asked.setdefault("gpu", str(d)))

    def init(backend, **kw):
        asked["backend"] = backend
        raise Started

    monkeypatch.setattr(dist, "init_process_group", init)
    for k, v in dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2",
                     MASTER_ADDR="127.0.0.1", MASTER_PORT="1").items():
        monkeypatch.setenv(k, v)
    return asked


def config(tmp_path, **extra) -> str:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**CONFIG, **extra}))
    return str(path)


@pytest.mark.parametrize("extra", [{}, {"device": "cpu"}])
def test_auto_is_gloo_for_a_cpu_run_on_a_machine_with_cuda(tmp_path, machine, extra):
    with pytest.raises(Started):
        distributed.main([config(tmp_path, **extra)])
    assert machine == {"backend": "gloo"}        # and no GPU selected


def test_auto_is_nccl_for_a_cuda_run_each_rank_on_its_local_gpu(tmp_path, machine):
    with pytest.raises(Started):
        distributed.main([config(tmp_path, device="cuda")])
    assert machine == {"backend": "nccl", "gpu": "cuda:1"}
    assert local_device("cuda") == torch.device("cuda:1")     # the status all-reduces' too
    assert local_device("cpu") == torch.device("cpu")


def test_a_launcher_without_local_rank_puts_each_rank_on_its_own_gpu(monkeypatch):
    # one that sets RANK alone (as the replicas of one machine): every rank took cuda:0,
    # where the launch before local_device took GPU RANK
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("RANK", "2")
    assert local_device("cuda") == torch.device("cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_device("cuda") == torch.device("cuda:1")
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("LOCAL_RANK")
    assert local_device("cuda") == torch.device("cuda:0")


def test_gloo_is_kept_for_a_cuda_run(tmp_path, machine):
    with pytest.raises(Started):
        distributed.main([config(tmp_path, device="cuda"), "--backend", "gloo"])
    assert machine == {"backend": "gloo", "gpu": "cuda:1"}


@pytest.mark.parametrize("extra", [{}, {"device": "cpu"}])
def test_nccl_for_a_cpu_run_is_refused_before_any_process_group_work(tmp_path, machine,
                                                                      capsys, extra):
    assert distributed.main([config(tmp_path, **extra), "--backend", "nccl"]) == 2
    err = capsys.readouterr().err
    assert ("rank 1: error: --backend nccl with device: cpu: nccl reduces CUDA tensors only"
            in err), err
    assert machine == {}
    with pytest.raises(ConfigError, match="--backend nccl with device: cpu"):
        choose_backend("nccl", "cpu")


def test_a_local_rank_past_the_machine_s_gpus_is_refused_before_any_process_group_work(
        tmp_path, machine, monkeypatch, capsys):
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.delenv("LOCAL_WORLD_SIZE")      # a launcher other than torchrun
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert distributed.main([config(tmp_path, device="cuda")]) == 2
    assert ("a distributed run on device cuda puts each of its 3 replicas on a GPU of its "
            "own, but this machine has 2 CUDA device(s): at most 2 replicas on this machine "
            "(this replica, local rank 2, on cuda:2)") in capsys.readouterr().err
    assert machine == {}
    # the GPUs a batch system or Ray left visible are the ones counted, and said to be
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert distributed.main([config(tmp_path, device="cuda")]) == 2
    assert "this machine has 2 CUDA device(s) visible (CUDA_VISIBLE_DEVICES=4,5): at most 2" \
        in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="this machine has 0 CUDA device"):
        distributed.init_distributed("auto", device="cuda")


def test_every_rank_of_more_replicas_than_the_machine_s_gpus_refuses_itself(
        tmp_path, machine, monkeypatch, capsys):
    """torchrun's LOCAL_WORLD_SIZE: rank 0 of 3 replicas on 2 GPUs, whose own GPU exists,
    refuses with the rank past the GPUs, as sgdlab parle and an experiment refuse the run
    (:func:`check_replica_gpus`), instead of waiting for it in the process group."""
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert distributed.main([config(tmp_path, device="cuda")]) == 2
    assert ("a distributed run on device cuda puts each of its 3 replicas on a GPU of its "
            "own, but this machine has 2 CUDA device(s): at most 2 replicas on this machine "
            "(this replica, local rank 0, on cuda:0)") in capsys.readouterr().err
    assert machine == {}
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(Started):
        distributed.init_distributed("gloo", device="cuda")
    assert machine == {"backend": "gloo", "gpu": "cuda:0"}


def test_check_replica_gpus_names_the_replicas_the_gpus_and_the_remedy(monkeypatch):
    monkeypatch.setattr(distributed, "visible_gpus", lambda: (2, "this machine has 2"))
    distributed.check_replica_gpus(2, "cuda", "fix it")
    with pytest.raises(UserError, match=r"^a distributed run on device cuda puts each of "
                                        r"its 3 replicas on a GPU of its own, but this "
                                        r"machine has 2: fix it$"):
        distributed.check_replica_gpus(3, "cuda", "fix it")
    with pytest.raises(UserError, match=r"^a distributed run on device cuda:1 puts each of its "
                                        r"2 .*, but one: x$"):
        distributed.check_replica_gpus(2, "cuda:1", "x", (1, "one"))


def test_choose_backend_follows_the_device():
    assert [choose_backend(b, d) for b, d in (("auto", "cpu"), ("auto", "cuda"),
                                              ("gloo", "cpu"), ("gloo", "cuda"),
                                              ("nccl", "cuda"))] == [
        "gloo", "nccl", "gloo", "gloo", "nccl"]
    with pytest.raises(ConfigError, match=r"^device must be cpu or cuda, got 'gpu' \(did you "
                                          r"mean cuda\?\)$"):
        choose_backend("auto", "gpu")


@pytest.mark.parametrize("var", ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"])
def test_a_rank_started_without_torchrun_s_environment_is_told_to_launch_with_torchrun(
        machine, monkeypatch, var):
    monkeypatch.delenv(var)
    with pytest.raises(UserError, match=f"^environment variable {var} is not set: launch "
                                        "with torchrun"):
        distributed.init_distributed("auto", 60.0, "cpu")
    assert machine == {}             # refused before any process group work


@pytest.mark.parametrize("env, said", [
    ({"RANK": "5"}, r"^RANK=5 with WORLD_SIZE=2: the ranks of a run are 0 to WORLD_SIZE - 1"),
    ({"RANK": "2"}, r"^RANK=2 with WORLD_SIZE=2"),
    ({"WORLD_SIZE": "0", "RANK": "0"}, r"^RANK=0 with WORLD_SIZE=0"),
    ({"WORLD_SIZE": "two"}, r"^WORLD_SIZE='two': expected a whole number >= 0 \(torchrun"),
    ({"RANK": "-1", "MASTER_PORT": "http"}, r"^RANK='-1', MASTER_PORT='http': expected")])
def test_a_rank_environment_no_launcher_sets_is_refused_at_once(machine, monkeypatch, env,
                                                                said):
    """A rank past the world waited the whole --timeout for a rank 0, silent, then failed on
    a socket; a word for a number ended in a ValueError's traceback."""
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match=said):
        distributed.init_distributed("auto", 60.0, "cpu")
    assert machine == {}             # refused before any process group work


def test_the_process_group_fails_a_stuck_collective_after_the_timeout(machine, monkeypatch):
    """The fail-fast guarantee: the group is created with ``--timeout`` (a dead or hung peer
    raises after at most that long), and with nccl a timed-out collective aborts the process
    (TORCH_NCCL_ASYNC_ERROR_HANDLING=1) instead of hanging in it."""
    asked: dict = {}

    def init(backend, **kw):
        asked.update(kw, backend=backend)
        raise Started

    monkeypatch.setattr(dist, "init_process_group", init)
    monkeypatch.delenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", raising=False)
    with pytest.raises(Started):
        distributed.init_distributed("auto", 2.5, "cuda")
    assert asked == {"backend": "nccl", "timeout": datetime.timedelta(seconds=2.5)}
    assert os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


def test_the_start_up_barrier_waits_for_every_rank_and_names_a_missing_one(machine,
                                                                            monkeypatch):
    """gloo: a monitored barrier with the run's timeout that reports every rank that never
    arrived (``wait_all_ranks``), its failure a ReplicaCommunicationError (exit 1)."""
    barrier: dict = {}
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: None)

    def monitored_barrier(**kw):
        barrier.update(kw)
        raise RuntimeError("Ranks 1 failed to pass monitoredBarrier in 3000 ms")

    monkeypatch.setattr(dist, "monitored_barrier", monitored_barrier)
    with pytest.raises(ReplicaCommunicationError, match=r"^start-up barrier failed: Ranks 1 "
                                                        r"failed to pass"):
        distributed.init_distributed("auto", 3.0, "cpu")
    assert barrier == {"timeout": datetime.timedelta(seconds=3), "wait_all_ranks": True}
    monkeypatch.setattr(dist, "monitored_barrier", lambda **kw: None)
    assert distributed.init_distributed("auto", 3.0, "cpu") == "gloo"
