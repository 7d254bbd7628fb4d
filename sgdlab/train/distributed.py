"""Distributed Parle: one replica per process with ``torch.distributed``.

Launch (one machine, 3 replicas; ``--standalone``: the rendezvous on a free port, so runs
started at the same time do not collide on a fixed one, ``$PET_MASTER_PORT`` or 29500)::

    torchrun --standalone --nproc-per-node 3 -m sgdlab.train.distributed run.yaml --out runs/parle

or on several machines (same command on each, ``--node-rank`` 0..N-1)::

    torchrun --nnodes 2 --nproc-per-node 4 --node-rank 0 \\
        --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m sgdlab.train.distributed run.yaml

``config.parle.replicas`` must equal the world size. Backend: the config's ``device``'s, gloo
for ``cpu`` (the default), nccl for ``cuda`` (``--backend`` overrides; nccl with ``cpu`` is
refused: :func:`choose_backend`). The processes communicate only once every L inner
steps: one all-reduce (sum) of the flattened replica weights x^a (plus the replica loss, in
the same buffer) from which every process forms the master x̄ = Σ_a x^a / n. Rank 0
evaluates the master, logs to the run store and writes ``OUT/master.pt`` (the master's
``state_dict``, load with ``torch.load(..., weights_only=True)``), ``OUT/results.json`` and
the learning curves of the master, ``OUT/learning_curves.png`` (and ``OUT/instruments.png``
when the config's ``measure`` instruments logged any), as ``sgdlab train`` names its own.
The run store is ``--store``, else the config's ``store``, else the one ``sgdlab train``
takes, ``$SGDLAB_STORE`` or ``./sgdlab-runs/runs.sqlite`` (:func:`run_store_path`).

**Checkpoints.** With ``--out``, every rank writes its replica's state to
``OUT/checkpoints/rank{r}.pt`` and rank 0 the master to ``OUT/checkpoints/master.pt`` every
``checkpoint_every`` rounds (config key or ``--checkpoint-every``; default 10) and at the end.
``--resume`` continues an interrupted run bit for bit from there (same config and number of
processes; a different world size is refused, and so is a config whose ``parle``, ``data``,
``model``, ``loss``, ``dtype``, ``seed`` or ``eval_subset`` differs from the run's, each
difference named; ``rounds``/``epochs``/``grad_evals``, ``eval_every``, ``checkpoint_every``,
``name`` and ``store`` may change). ``OUT`` must be visible to every rank (a shared
filesystem across machines).

**The output folder.** A new run takes ``OUT`` before it writes anything: rank 0 (or
``sgdlab parle``, which passes ``--claimed``) creates ``OUT/parle.json`` where none is
(:func:`sgdlab.claims.claim_file`), so of two starts into one folder at once one proceeds and
every rank of the other stops with the reason. A start that fails before its first
checkpoint removes the file again (the same command starts it again); ``--resume`` takes no
folder, it continues the run there. While it trains, rank 0 (or the in-process run) holds a
lock on ``OUT/parle.lock`` (:func:`sgdlab.claims.hold_lock`), new run or resume alike, so a
``--resume`` while the run (or another resume of it) is still going is refused, naming that
process; the lock ends with the process, a killed one included.

**Failure handling.** The process group is created with a timeout (``--timeout``, seconds):
a collective that cannot complete (a peer died or hangs) raises after at most that long;
gloo usually notices a dead peer at once (its socket closes). Every collective is wrapped so
that the failure surfaces as :class:`ReplicaCommunicationError` naming the rank and round,
and the process exits with status 1; ``torchrun`` then stops the other workers (its default
fail-fast behaviour, no restarts unless ``--max-restarts`` is given). Work one rank does
alone or fails at alone (building the run, rank 0 opening the store and taking ``OUT``,
evaluating, measuring, checkpointing, writing the outputs and the report) ends in a status
all-reduce (:func:`sgdlab.train.communicator.status_all_reduce`): when it fails, every rank
stops at once, the others naming the failing rank and its error (exit 1, or 2 for a
refusal), even where the failing process is slow to exit. With NCCL,
``TORCH_NCCL_ASYNC_ERROR_HANDLING=1`` is set so a timed-out collective aborts the process
instead of hanging. Start-up uses a monitored barrier (gloo), which names ranks that never
arrived. A replica dies with the process that started it (torchrun; on Linux the kernel
sends it SIGKILL, :func:`die_with_parent`): a killed launcher leaves no replica training on
its own into ``OUT``, holding its lock against the ``--resume``.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import math
import os
import secrets
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from ..atomic import replaced_whole
from ..claims import FolderBusy, claim_file, hold_lock
from ..distributed_options import (BACKENDS, DEFAULT_BACKEND, DEFAULT_TIMEOUT,
                                   add_process_group_options)
from ..errors import (ConfigError, DataError, UserError, check_config_kind, check_not_empty,
                      config_error, did_you_mean, file_problem, is_seed, make_output_dir,
                      not_a_config_file, read_config_text, refuse_results_of_others,
                      unknown_keys)
from ..losses import build_loss
from ..plugins import import_recorded_plugins, recorded_plugins
from ..store.folders import REPLICA_MASTER, REPLICA_RESULT, store_option
from ..strict_json import dumps as strict_dumps, write_atomic
from .communicator import (ReplicaCommunicationError, ReplicaFailed,
                           TorchDistributedCommunicator, told_all)
from .replicas import (MASTER_CHECKPOINT, ParleConfig, check_checkpoint_dir,
                       train_replicas)

__all__ = ["ReplicaCommunicationError", "TorchDistributedCommunicator", "init_distributed",
           "build_run", "checkpoint_folder", "claim_out", "load_config", "read_config",
           "release_out", "run_from_config", "main"]

CLAIM_FILE = "parle.json"
LOCK_FILE = "parle.lock"


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent ends (Linux ``PR_SET_PDEATHSIG``;
    nothing elsewhere). Also safe between fork and exec (``preexec_fn``): the signal is kept
    across exec, so torchrun started with it dies with ``sgdlab parle``."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 9)     # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


# a file rank 0 writes the run's status to ("finished", "diverged"): torchrun turns a worker's
# exit status other than 0 into a failure of its own, so a diverged run exits 0 and its
# launcher (sgdlab parle) reads how it ended from here
STATUS_ENV = "SGDLAB_PARLE_STATUS"
LAUNCHER_ENV = "SGDLAB_PARLE_LAUNCHER"     # the pid of the ``sgdlab parle`` that started torchrun


def launcher_gone() -> bool:
    """Whether the ``sgdlab parle`` that started this replica's torchrun (its pid in
    ``$SGDLAB_PARLE_LAUNCHER``) has ended: this process's parent is no longer a torchrun
    whose parent is that launcher. :func:`die_with_parent` only covers deaths after it is
    called; a launcher killed while the replica was still starting (importing torch) left it
    waiting, orphaned, for a rendezvous that never comes. Linux (/proc) only."""
    launcher = os.environ.get(LAUNCHER_ENV)
    if not launcher or not Path("/proc/self/stat").exists():
        return False
    try:
        stat = Path(f"/proc/{os.getppid()}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1]) != int(launcher)
    except (OSError, ValueError, IndexError):
        return True                   # the parent is gone meanwhile


def failed(rank: str, message: str) -> None:
    """Print this replica's error, and leave its message where torchrun reads a worker's
    error (``$TORCHELASTIC_ERROR_FILE``, torchrun's JSON): the failure summary of the launch
    (:mod:`sgdlab.train.launch`) names it beside the rank and its exit code."""
    print(f"sgdlab.train.distributed: rank {rank}: error: {message}", file=sys.stderr,
          flush=True)
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        try:
            Path(path).write_text(json.dumps({"message": message,
                                              "timestamp": int(time.time())}))
        except OSError:     # the summary goes without it; the message is printed above
            pass


def timeout_delta(timeout: float, name: str = "timeout") -> datetime.timedelta:
    """``timeout`` seconds as the process group's timedelta; a ConfigError unless it is > 0 and
    finite (``inf`` or 1e15 overflowed in every replica, after all of them had started)."""
    try:
        td = datetime.timedelta(seconds=timeout) if timeout > 0 else None
    except (OverflowError, ValueError):
        td = None
    if td is None:
        raise ConfigError(f"{name} must be a finite number of seconds > 0, got {timeout:g}")
    return td


def choose_backend(backend: str, device: str = "cpu") -> str:
    """The process group's backend for a run whose replicas live on ``device`` (the config's
    ``device``: cpu | cuda). ``auto`` follows the device, not the machine: gloo for CPU
    tensors, nccl for CUDA ones (with CUDA present but ``device: cpu``, nccl failed at the
    first collective, the initial broadcast of CPU weights). ``gloo`` with ``cuda`` is
    kept (gloo reduces CUDA tensors too, through the host); ``nccl`` with ``cpu`` is refused
    here, before any process group exists, naming both."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be auto, gloo or nccl, got {backend!r}")
    if device not in DEVICES:
        raise ConfigError(f"device must be cpu or cuda, got {device!r}"
                          f"{did_you_mean(device, DEVICES)}")
    if backend == "auto":
        return "nccl" if device == "cuda" else "gloo"
    if backend == "nccl" and device != "cuda":
        raise ConfigError(f"--backend nccl with device: {device}: nccl reduces CUDA tensors "
                          "only, and this run's replicas live on the CPU; give the config "
                          "device: cuda (--set device=cuda), or --backend gloo (or auto)")
    return backend


def local_device(device: str = "cpu") -> torch.device:
    """Where this rank's replica lives: the CPU, or for ``device: cuda`` GPU ``LOCAL_RANK``
    of its machine (one GPU per replica; not cuda:0 for every rank), ``RANK`` where a
    launcher sets no ``LOCAL_RANK`` (its ranks all on one machine)."""
    if device != "cuda":
        return torch.device("cpu")
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', os.environ.get('RANK', 0)))}")


def visible_gpus() -> tuple[int, str]:
    """(the CUDA devices this process sees, how a message names them): a batch system's or
    Ray's ``CUDA_VISIBLE_DEVICES`` hides the machine's others."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = f" visible (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    return count, f"this machine has {count} CUDA device(s){seen}"


def check_replica_gpus(replicas: int, device: str, remedy: str,
                       gpus: tuple[int, str] | None = None) -> None:
    """Refuse (``UserError``) a distributed run on ``device`` whose ``replicas`` replicas,
    one GPU each (replica r on ``cuda:r`` of the GPUs it sees, :func:`local_device`), have
    fewer GPUs: ``gpus`` (their count, how a message names them; by default
    :func:`visible_gpus`). ``remedy``: what the caller's user can change. The one check and
    message of ``sgdlab parle``, an experiment's ``replicas`` runs and each rank's start-up."""
    count, said = visible_gpus() if gpus is None else gpus
    if replicas > count:
        # (the run puts the replicas on GPUs; the device names one, or all those it sees)
        raise UserError(f"a distributed run on device {device} puts each of its {replicas} "
                        f"replicas on a GPU of its own, but {said}: {remedy}")


def init_distributed(backend: str = DEFAULT_BACKEND, timeout: float = DEFAULT_TIMEOUT,
                     device: str = "cpu") -> str:
    """Initialise the default process group from torchrun's environment (``env://``) for a
    run whose replicas live on ``device`` (cpu | cuda; :func:`choose_backend`).

    Returns the backend used. A monitored barrier (gloo) checks that all ranks arrived.
    """
    backend = choose_backend(backend, device)
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise UserError(f"environment variable {var} is not set: launch with torchrun, "
                            "e.g. `torchrun --standalone --nproc-per-node 3 -m "
                            "sgdlab.train.distributed CONFIG`")
    check_launch_env()
    td = timeout_delta(timeout)
    if device == "cuda":
        gpu = local_device(device)
        # torchrun says how many replicas share this machine: each refuses, not only those
        # past its GPUs while the others wait for them at the barrier
        local = max(int(os.environ.get("LOCAL_WORLD_SIZE", 0)), gpu.index + 1)
        count, said = visible_gpus()
        check_replica_gpus(local, "cuda", f"at most {count} replicas on this machine "
                           f"(this replica, local rank {gpu.index}, on {gpu})", (count, said))
        torch.cuda.set_device(gpu)
    if backend == "nccl":
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    dist.init_process_group(backend, timeout=td)
    if backend == "gloo":
        try:
            dist.monitored_barrier(timeout=td, wait_all_ranks=True)
        except Exception as e:
            raise ReplicaCommunicationError(f"start-up barrier failed: {e}") from e
    return backend


def check_launch_env() -> None:
    """RANK, WORLD_SIZE and MASTER_PORT that no launcher sets are a ``UserError`` before any
    process group work: a RANK at or past WORLD_SIZE waited the whole ``--timeout`` for a
    rank 0, saying nothing, then failed on a socket; a word ended in a ``ValueError``."""
    env = {var: os.environ[var] for var in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    bad = [f"{var}={value!r}" for var, value in env.items() if not value.strip().isdigit()]
    if bad:
        raise UserError(f"{', '.join(bad)}: expected a whole number >= 0 (torchrun sets "
                        "RANK, WORLD_SIZE, MASTER_PORT for each process it starts)")
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    if not rank < world:
        raise UserError(f"RANK={rank} with WORLD_SIZE={world}: the ranks of a run are 0 to "
                        "WORLD_SIZE - 1, one process each (torchrun --nproc-per-node N "
                        "numbers them)")


def load_config(path: str | Path) -> dict[str, Any]:
    """A replica run config from YAML or JSON (data only: YAML tags are refused)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(not_a_config_file(p, "replica run config", (".yaml", ".yml")))
    text = read_config_text(p)
    if p.suffix in (".yaml", ".yml"):
        import yaml

        from ..yaml_loaders import config_loader, yaml_problem   # as run configs: 1e-3 a number
        try:
            cfg = yaml.load(text, Loader=config_loader())  # noqa: S506 (a SafeLoader)
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: {yaml_problem(e, text)}") from None
    else:
        try:
            cfg = json.loads(text)
        except json.JSONDecodeError as e:
            # a .toml or suffix-less YAML file was told only "not valid JSON"
            why = "" if p.suffix == ".json" else (
                " (a replica config is read as YAML when named .yaml or .yml, else as JSON; "
                + (f"this one is named {p.suffix})" if p.suffix else "this one has no suffix)"))
            raise ConfigError(f"{p}: not valid JSON: {e}{why}") from None
    check_not_empty(cfg, "replica", p)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{p}: a replica run config must be a mapping")
    check_config_kind(cfg, "replica", p)
    return cfg


def read_config(path: str | Path, overrides: list[str], plugins: list[str]) -> dict[str, Any]:
    """The replica run config at ``path`` (:func:`load_config`) as a command's options change
    it: ``--set KEY=VALUE`` ``overrides`` applied, ``--plugin`` modules added to its
    ``plugins`` (:func:`add_plugins`); ``sgdlab parle`` and :func:`main` alike."""
    cfg = load_config(path)
    if overrides:
        from ..config.io import apply_overrides

        cfg = apply_overrides(cfg, overrides)
    add_plugins(cfg, plugins)
    return cfg


RUN_KEYS = {"data", "model", "loss", "parle", "rounds", "epochs", "grad_evals", "eval_every",
            "eval_subset", "seed", "store", "name", "dtype", "checkpoint_every", "device",
            "plugins", "measure"}
DEVICES = ("cpu", "cuda")
DEFAULT_CHECKPOINT_EVERY = 10


def build_run(cfg: dict[str, Any]):
    """(model, loss_fn, data, parle_config, run kwargs) from a replica run config (data).

    Keys: ``data`` ({name, **options} for :func:`sgdlab.data.load_dataset`, or {file: PATH}
    a ``torch.save``d dict with x_train, y_train and optionally x_test, y_test, meta),
    ``model`` ({name, **options} for :func:`sgdlab.models.build_model`), ``loss``
    (cross_entropy | mse; default by task), ``parle`` (:class:`ParleConfig` fields), ``rounds``,
    ``epochs`` or ``grad_evals``,
    ``eval_every``, ``eval_subset``, ``seed`` (weight init), ``dtype`` (float32 | float64),
    ``store`` (run store path), ``name``, ``checkpoint_every`` (rounds between checkpoints
    under ``OUT/checkpoints`` when an output directory is given; default 10), ``device``
    (cpu | cuda: in-process the replicas on the current GPU, distributed replica r on GPU r of
    its machine, its local rank; default: where the data is, the CPU), ``plugins`` (modules
    imported first, whose ``register_model`` / ``register_dataset`` / ... calls name the data
    and model: :mod:`sgdlab.plugins`), ``measure`` (instruments measured on the master x̄ at
    round ends, items as a run config's ``measure``: ``{name: hessian, every: 10}`` every 10
    rounds; ``at`` names rounds, ``log_points`` needs ``rounds``; in kw as ``callbacks``).
    """
    check_config_kind(cfg, "replica")
    # a Parle key given at the top (--set lr=0.1) is pointed to its place, parle.lr; the
    # parle mapping's own unknown keys in the same message, before the data is loaded
    problems = unknown_keys("", cfg, sorted(RUN_KEYS), {"parle": ParleConfig.field_names()})
    if isinstance(cfg.get("parle"), dict):
        problems += unknown_keys("parle", cfg["parle"], ParleConfig.field_names())
    if problems:
        raise config_error(problems)
    for k in ("data", "model", "parle"):
        if not isinstance(cfg.get(k), dict):
            raise ConfigError(f"replica run config needs a mapping {k!r}")
    if cfg.get("device", "cpu") not in DEVICES:
        raise ConfigError(f"device must be cpu or cuda, got {cfg['device']!r}"
                          f"{did_you_mean(cfg['device'], DEVICES)}")
    model, loss_fn, data = build_model_and_data(cfg)
    # as `sgdlab train` does: refused here, before the run is recorded failed at its first step
    from ..operators.batches import check_run_data

    check_run_data(model, loss_fn, data)
    parle = ParleConfig.from_dict(dict(cfg["parle"]))
    lengths = [k for k in ("rounds", "epochs", "grad_evals") if k in cfg]
    if len(lengths) != 1:
        # which two, when a --set adds a length to the file's own
        given = (f"; it gives {' and '.join(f'{k}: {cfg[k]}' for k in lengths)}" if lengths
                 else "; it gives none")
        raise ConfigError(f"give exactly one of 'rounds', 'epochs' or 'grad_evals' (the run's "
                          f"length){given}")
    kw = {k: cfg[k] for k in ("rounds", "epochs", "grad_evals", "eval_every", "eval_subset",
                              "name") if k in cfg}
    if cfg.get("measure"):
        kw["callbacks"] = build_master_instruments(cfg["measure"], cfg.get("rounds"), model,
                                                   data)
    return model, loss_fn, data, parle, kw


def build_master_instruments(items: Any, rounds: Any, model: torch.nn.Module, data: Any
                             ) -> list:
    """The callbacks of a replica config's ``measure`` list, checked as a run config's items
    are and as instruments of the master (:func:`sgdlab.train.replicas.master_instruments`);
    every bad item at once as a :class:`ConfigError`. Their schedules count rounds."""
    from ..config.run import _check_measure_item, build_measure
    from .replicas import master_instruments

    if not (isinstance(items, list) and all(isinstance(i, dict) for i in items)):
        raise ConfigError(f"measure must be a list of instruments ({{name: hessian, every: "
                          f"10}}, ...), got {items!r}")
    errors: list[str] = []
    for i, item in enumerate(items):
        _check_measure_item(f"measure[{i}]", item, errors, build=False)  # built below
        if item.get("log_points") is not None and not isinstance(rounds, int):
            errors.append(f"measure[{i}].log_points: spaces measurements up to the run's "
                          "last round, which needs 'rounds' (give every or at instead)")
    if errors:
        raise config_error(errors)
    callbacks = build_measure(items, rounds if isinstance(rounds, int) else 1, model, data)
    try:
        return master_instruments(callbacks, model, data)
    except UserError as e:
        raise ConfigError(str(e).replace("callbacks[", "measure[", 1)) from None


def add_plugins(cfg: dict[str, Any], plugins: list[str]) -> None:
    """Add ``plugins`` (``--plugin``) to the config's own ``plugins`` list (a value that is no
    list is left for :func:`build_run` to refuse)."""
    if plugins:
        listed = cfg.setdefault("plugins", [])
        if isinstance(listed, list):
            listed.extend(p for p in plugins if p not in listed)


def build_model_and_data(cfg: dict[str, Any]):
    """(model with its initial weights, loss_fn, data) from a replica run config's ``data``,
    ``model``, ``loss``, ``seed`` and ``dtype`` (:func:`build_run`): also what rebuilds a
    stored run's model and data to measure its master (``sgdlab measure``)."""
    plugins = cfg.get("plugins", [])
    if not (isinstance(plugins, list) and all(isinstance(p, str) for p in plugins)):
        raise ConfigError(f"plugins must be a list of module names or .py files, got {plugins!r}")
    # before the names are looked up; also where sgdlab measure rebuilds a stored run
    import_recorded_plugins(plugins)
    dspec = dict(cfg["data"])
    if "file" in dspec:
        f = dspec.pop("file")
        sha256 = dspec.pop("sha256", None)     # the content its record names
        if dspec:
            raise ConfigError(f"data.file takes no other keys but sha256, got {sorted(dspec)}")
        from ..data.files import load_data_file
        data = load_data_file(f, sha256=sha256)
    else:
        from ..data import load_dataset
        if "name" not in dspec:
            raise ConfigError("data needs 'name' (a dataset) or 'file'")
        try:
            data = load_dataset(dspec.pop("name"), **dspec)
        except DataError:
            raise       # names its file
        except UserError as e:    # a bad name or option: say which section holds it
            raise ConfigError(f"data: {e}") from None
    dtype = {"float32": torch.float32, "float64": torch.float64}.get(cfg.get("dtype", "float32"))
    if dtype is None:
        raise ConfigError(f"dtype must be float32 or float64, got {cfg.get('dtype')!r}")
    data = data.to(dtype=dtype)
    mspec = dict(cfg["model"])
    if "name" not in mspec:
        raise ConfigError("model needs 'name'")
    from ..models import build_model, check_model_inputs
    check_model_inputs(mspec["name"], data.x_train, data.meta.get("name"))
    seed = cfg.get("seed", 0)
    if not is_seed(seed):
        # int() of it was a ValueError traceback ('abc', and torch's past 64 bits) or dropped
        # a fraction (1.5); 32 bits as a run config's seeds
        raise ConfigError(f"seed must be an int in 0..2**32 - 1, got {seed!r}")
    torch.manual_seed(int(seed))
    try:
        model = build_model(mspec.pop("name"), data.input_shape, data.num_outputs, **mspec)
    except UserError as e:    # a bad name or option: say which section holds it
        # a run config's layout, {name, options: {...}}, read as an option named "options"
        nested = ("; a replica config gives them beside the name, e.g. {name: mlp, widths: "
                  "[64]}, not under options") if "options" in mspec else ""
        raise ConfigError(f"model: {e}{nested}") from None
    model = model.to(dtype)
    loss_fn = build_loss(cfg.get("loss"), data)
    return model, loss_fn, data


def _process_note(when: str, **extra: Any) -> str:
    """What a claim or lock file says of the process holding it: ``when`` (now, UTC), host,
    pid and its start time, and ``extra``."""
    from ..store.runstore import this_process

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return strict_dumps({when: now, **this_process(), **extra})


def claim_out(out: str | Path) -> str:
    """Take folder ``out`` for a new run: create ``out/parle.json`` unless it exists (or the
    folder holds a run's checkpoints), else a :class:`UserError`; of two starts at once,
    exactly one takes it. Returns the file's text, which :func:`release_out` checks."""
    from ..store.runstore import owner_alive, this_process

    check_checkpoint_dir(checkpoint_folder(out), False)
    # its results.json would replace theirs
    refuse_results_of_others(out, "sgdlab parle")
    path = make_output_dir(out) / CLAIM_FILE
    text = _process_note("started", claim=secrets.token_hex(8))
    try:
        claim_file(path, text)
    except FileExistsError:
        check_checkpoint_dir(checkpoint_folder(out), False)    # the holder's, when saved
        try:
            held = json.loads(path.read_text())
            when = f" started {held['started']} (pid {held['pid']} on {held['host']})"
            gone = held["host"] == this_process()["host"] and owner_alive(
                held["host"], held["pid"], held.get("pid_start"), None) is False
        except (OSError, ValueError, TypeError, KeyError):
            when, gone = "", False   # written meanwhile (a file system without hard links)
        if gone:    # killed before its first checkpoint (SIGKILL leaves its claim behind)
            raise UserError(f"{out} holds the claim of a parle run{when} that is no longer "
                            f"running and wrote no checkpoint: remove {path} and start "
                            f"again") from None
        raise UserError(f"{out} already holds a parle run{when} that has written no "
                        f"checkpoint yet: choose another folder, or, if that run has stopped, "
                        f"remove {path} and start again") from None
    except OSError as e:
        raise UserError(f"--out {out}: cannot write {CLAIM_FILE}: {file_problem(e)}") from None
    return text


def checkpoint_folder(out: str | Path) -> Path:
    """Where the run with output folder ``out`` keeps its checkpoint set (each replica's and
    the master's state)."""
    return Path(out) / "checkpoints"


def has_checkpoint(out: str | Path) -> bool:
    """Whether the run in ``out`` has written a checkpoint (``--resume`` continues it)."""
    return (checkpoint_folder(out) / MASTER_CHECKPOINT).exists()


def release_out(out: str | Path, text: str) -> None:
    """Free folder ``out`` taken with ``text`` (:func:`claim_out`) for a run that stopped
    before its first checkpoint; a folder whose run has one stays the run's (``--resume``)."""
    path = Path(out) / CLAIM_FILE
    if has_checkpoint(out):
        return
    try:
        if path.read_text() == text:      # ours (not removed and taken by another start)
            path.unlink()
    except OSError:
        pass


def lock_out(out: str | Path) -> int | None:
    """Hold ``out/parle.lock`` while this process trains the run in ``out``; a
    :class:`UserError` naming the holder when another live process does. Returns the
    descriptor to close at the end (None where file locks are not available)."""
    try:
        return hold_lock(make_output_dir(out) / LOCK_FILE, _process_note("since"))
    except FolderBusy as e:
        try:
            held = json.loads(e.holder)
            who = f" (pid {held['pid']} on {held['host']}, since {held['since']})"
        except (ValueError, TypeError, KeyError):
            who = ""          # caught between its lock and its note
        raise UserError(f"{out}: its parle run is being trained by another process{who}; "
                        f"wait for it to end, or stop it, and run this again") from None
    except OSError as e:
        raise UserError(f"--out {out}: cannot write {LOCK_FILE}: {file_problem(e)}") from None


def _take_out(out: str | Path, *, claim: bool) -> tuple[str | None, int | None]:
    """Rank 0 (or the in-process run) takes a new run's ``out`` (``claim``:
    :func:`claim_out`) and holds its lock (:func:`lock_out`). Returns the claim's text and
    the lock's descriptor."""
    text = None
    try:
        if claim:
            text = claim_out(out)
        return text, lock_out(out)
    except BaseException:
        if text is not None:
            release_out(out, text)
        raise


def run_store_path(cfg: dict[str, Any], store: str | os.PathLike | None = None,
                   out: str | Path | None = None, resume: bool = False) -> Path:
    """The run store a run of ``sgdlab parle`` (or of this module) is recorded in, as
    ``sgdlab train`` picks it: ``store`` (``--store``), else the config's ``store``, else (a
    resume) the store the run's checkpoints in ``out`` name, else ``$SGDLAB_STORE`` or
    ``./sgdlab-runs/runs.sqlite``."""
    from ..store import default_store_path

    if store or cfg.get("store"):
        return Path(store or cfg["store"])
    if resume and out is not None:
        from .checkpoint import load_checkpoint

        try:
            recorded = load_checkpoint(checkpoint_folder(out) / MASTER_CHECKPOINT,
                                       mmap=True).get("store")
        except UserError:    # none, or unreadable: the resume itself says so
            recorded = None
        if recorded:
            return Path(recorded)
    return default_store_path()


def run_from_config(cfg: dict[str, Any], *, mode: str, out: str | Path | None = None,
                    communicator: Any = None, resume: bool = False,
                    checkpoint_every: int | None = None, claimed: bool = False,
                    progress: Callable[[int, int, float], None] | None = None):
    """Build and run a replica config in ``mode``; rank 0 (or the in-process run) writes
    ``out/master.pt``, ``out/results.json`` and its figures. With ``out``, checkpoints go to
    ``out/checkpoints`` every ``checkpoint_every`` rounds (default: the config's
    ``checkpoint_every``, else 10); ``resume`` continues from them. A new run takes ``out``
    first (:func:`claim_out`; ``claimed``: its launcher has) and frees it when it fails before
    its first checkpoint. ``progress``: :func:`train_replicas`' (:func:`round_lines`).
    Returns the :class:`ReplicaResult`."""
    comm, device = None, cfg.get("device")
    if mode == "distributed":
        comm = communicator or TorchDistributedCommunicator()
    # every rank builds its own: one that cannot (a data file it does not see) stops them all
    with told_all(comm, "building the run from its config",
                  device=_status_device(comm, cfg.get("device"))):
        model, loss_fn, data, parle, kw = build_run(cfg)
        if mode == "distributed" and device == "cuda":
            # one GPU per replica on each machine (as nccl's set-up); nccl broadcasts GPU
            # tensors only (and one GPU short of memory fails on its rank alone)
            device = str(local_device(device))
            model.to(device)
    if mode == "distributed":
        # identical initial weights on every rank, whatever the init's determinism
        comm.broadcast_([p.data for p in model.parameters()])
    is_main = comm is None or comm.rank == 0
    if out is not None:
        every = (checkpoint_every if checkpoint_every is not None
                 else cfg.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY))
        kw.update(checkpoint_dir=checkpoint_folder(out), checkpoint_every=every,
                  resume=resume)
    elif resume:
        raise UserError("resume needs an output directory (--out DIR; checkpoints are in "
                        "DIR/checkpoints)")
    from ..store.folders import drop_if_unused, open_new_store

    store, made = None, []
    claim, lock = None, None
    status_device = next(model.parameters()).device
    try:
        # rank 0 alone records the run and takes OUT; the others learn how it went
        with told_all(comm, "opening the run store" if out is None else
                      f"opening the run store and taking {out} for this run",
                      device=status_device):
            if is_main:
                if cfg.get("store"):
                    store, made = open_new_store(cfg["store"])
                if out is not None:
                    claim, lock = _take_out(out, claim=not resume and not claimed)
        res = train_replicas(model, loss_fn, data, parle, mode=mode, communicator=comm,
                             device=device,
                             store=store, complete=out is None,
                             run_config=_recorded_config(cfg), progress=progress, **kw)
        if out is not None:
            with told_all(comm, f"writing the run's outputs to {out}", device=status_device):
                if is_main:
                    _write_outputs(res, Path(out), mode, parle, store)
    except BaseException:
        if claim is not None:
            release_out(out, claim)
        if made:    # a store made for a run that was not recorded (its folder busy) goes too
            store.close()
            drop_if_unused(made)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return res


def _status_device(comm: Any, device: str | None) -> torch.device | None:
    """Where a status all-reduce's tensor goes before the model is placed: nccl's on this
    rank's GPU."""
    return local_device(device) if comm is not None and device == "cuda" else None


def round_lines(every_s: float = 5.0) -> Callable[[int, int, float], None]:
    """A ``progress`` for :func:`train_replicas` that writes a line to stderr after the first
    round, the last and one every ``every_s`` seconds between (as ``sgdlab train`` writes a
    line per epoch): a long run said nothing until its report."""
    said_at: list[float] = []

    def say(r: int, rounds: int, loss: float) -> None:
        now = time.monotonic()
        if not said_at or r == rounds or now - said_at[0] >= every_s:
            print(f"round {r}/{rounds}  replica_loss {loss:.4g}", file=sys.stderr, flush=True)
            said_at[:] = [now]
    return say


def _recorded_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a run's record holds of its config: all of it but the store's path (what built
    the data and model too), with a data file's path made absolute, so that the run is
    rebuilt from any folder (``sgdlab measure``), and its SHA-256 (``data.sha256``)."""
    rec = {k: v for k, v in cfg.items() if k != "store"}
    if rec.get("plugins"):      # a plugin file's path absolute, as sgdlab train records it
        rec["plugins"] = recorded_plugins(rec["plugins"])
    if "file" in rec["data"]:
        from ..data.files import data_file_sha256

        path = Path(rec["data"]["file"]).resolve()
        # and its content: a resume refuses another file at that path (_run_settings)
        rec["data"] = {**rec["data"], "file": str(path),
                       "sha256": rec["data"].get("sha256") or data_file_sha256(path)}
    return rec


def _write_outputs(res, o: Path, mode: str, parle: ParleConfig, store: Any) -> None:
    """``master.pt``, ``results.json`` and the figures (:func:`_draw_figures`) in ``o``; then
    the run is complete in ``store``."""
    o.mkdir(parents=True, exist_ok=True)
    with replaced_whole(o / REPLICA_MASTER) as tmp:
        torch.save(res.master.state_dict(), tmp)
    figures = _draw_figures(res, o)
    write_atomic(o / REPLICA_RESULT, {
        "status": res.status, "message": res.message, "mode": mode, "run_id": res.run_id,
        # the store that holds the run: the folder stands for it (sgdlab runs, measure)
        "store": str(Path(store.path).resolve()) if store is not None else None,
        "final": res.final, "parle": parle.to_json(),
        "history": {k: v for k, v in res.history.items()}}, indent=1)
    if store is not None:   # the run is finished once its files are written
        store.complete_run(res.run_id, res.status, summary={**res.final, "status": res.status},
                           message=res.message,
                           artifacts=[("model", (o / REPLICA_MASTER).resolve()),
                                      ("results", (o / REPLICA_RESULT).resolve())]
                           + [("figure", f.resolve()) for f in figures])


def _draw_figures(res, o: Path) -> list[Path]:
    """The master's learning curves (``learning_curves.png``: its train and test loss and
    accuracy against steps, rounds · L) and, when instruments logged series, their panels
    (``instruments.png``), as ``sgdlab train`` draws its own
    (:func:`sgdlab.config.runner.draw_run_figures`); the paths of those drawn."""
    from ..config.runner import draw_run_figures

    title = f"parle ({res.run_id or 'unrecorded'}, {res.status})"
    # Parle's own series (the replicas' loss, mean and each's, γ, ρ, lr) are no instruments
    measured = {k: v for k, v in res.history.items()
                if k not in ("replica_loss", "gamma", "rho", "lr")
                and not k.startswith("replica_loss/")}
    drawn = draw_run_figures(res.history, o, title=title,
                             instruments_title=f"{title}: instruments", instruments=measured)
    return [f for f in drawn if f is not None]


def report(res, *, out: str | Path | None, processes: int | None = None,
           store: str | Path | None = None) -> str:
    """How a replica run is reported, the same in both modes: a status line, the final
    metrics as JSON (``wall_time``: the training rounds of all the run's calls, set-up
    excluded; a non-finite value, as after a divergence, is null and named on the line below),
    the weights' path and the run store that holds the run."""
    mode = "in-process" if processes is None else f"distributed, {processes} processes"
    lines = [f"parle ({mode}, {res.rounds} rounds, {res.grad_evals} gradient evaluations per "
             f"replica): {res.status}" + (f" ({res.message})" if res.message else ""),
             strict_dumps(res.final, indent=1)]
    not_finite = [k for k, v in res.final.items()
                  if isinstance(v, float) and not math.isfinite(v)]
    if not_finite:
        lines.append(f"not finite (null in the JSON): {', '.join(not_finite)}")
    if out:
        lines.append(f"master weights: {Path(out) / 'master.pt'}")
    if store is not None and res.run_id is not None:
        lines.append(f"run {res.run_id} in the run store {store} (sgdlab runs show "
                     f"{res.run_id} {store_option(store)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sgdlab.train.distributed",
        description="One Parle replica per process (launch with torchrun).")
    p.add_argument("config", help="replica run config (YAML or JSON)")
    p.add_argument("--out", default=None,
                   help="directory for master.pt, results.json and learning_curves.png")
    add_process_group_options(p)
    p.add_argument("--replicas", type=int, default=None,
                   help="override parle.replicas (must equal the number of processes)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="rounds between checkpoints in OUT/checkpoints (default: config or 10)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoints in OUT/checkpoints")
    p.add_argument("--store", metavar="PATH", default=None,
                   help="run store rank 0 records the run in (default: the config's store, "
                        "$SGDLAB_STORE, or ./sgdlab-runs/runs.sqlite)")
    p.add_argument("--claimed", action="store_true",
                   help=f"OUT/{CLAIM_FILE} was created for this run by its launcher (sgdlab "
                        "parle): rank 0 does not take the folder again")
    p.add_argument("--plugin", metavar="MODULE", action="append", default=[], dest="plugins",
                   help="import this module (a name on PYTHONPATH, or a .py file) first, as "
                        "the config's plugins (repeatable; added to them, so the stored run "
                        "names it)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a key of the replica config (the value read as YAML), as "
                        "sgdlab parle --set (repeatable)")
    args = p.parse_args(argv)
    die_with_parent()
    rank = os.environ.get("RANK", "?")
    if launcher_gone():       # it died before we asked for its death to end us too
        failed(rank, "the sgdlab parle that launched this replica has ended")
        return 1
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        from ..plugins import given_plugins, import_env_plugins

        import_env_plugins()    # the launcher's $SGDLAB_PLUGINS: the config may name theirs
        # --plugin stands in for a plugin file the config records that is gone, as the
        # launcher's own (sgdlab parle, sgdlab train) does: else only the launcher found it
        with given_plugins(args.plugins):
            return _train_rank(args)
    except (UserError, ReplicaCommunicationError) as e:
        failed(rank, str(e))
        # a refusal (a ReplicaRefused too: another rank refused) 2, a failed collective 1
        return 2 if isinstance(e, UserError) else 1


def _train_rank(args: argparse.Namespace) -> int:
    """This process's replica of the run :func:`main`'s options ``args`` name, from its
    process group's set-up to the report of the run; 0 when it ends."""
    cfg = read_config(args.config, args.overrides, args.plugins)
    if args.replicas is not None:
        cfg.setdefault("parle", {})["replicas"] = args.replicas
    cfg["store"] = str(run_store_path(cfg, args.store, args.out, args.resume))
    backend = init_distributed(args.backend, args.timeout, cfg.get("device", "cpu"))
    if dist.get_rank() == 0:
        print(f"parle: {dist.get_world_size()} replica processes connected ({backend}, "
              f"timeout {args.timeout:g} s)", flush=True)
    res = run_from_config(cfg, mode="distributed", out=args.out, resume=args.resume,
                          checkpoint_every=args.checkpoint_every, claimed=args.claimed,
                          progress=round_lines())
    # on this rank's GPU, as the run's other status all-reduces (nccl's tensors)
    told = told_all(TorchDistributedCommunicator(), "reporting the run",
                    device=local_device(cfg.get("device", "cpu")))
    try:  # also the barrier of a clean shutdown: all ranks tear gloo down together, rank
        # 0's store still up
        with told:
            if dist.get_rank() == 0:
                print(report(res, out=args.out, processes=dist.get_world_size(),
                             store=cfg["store"]), flush=True)
                if os.environ.get(STATUS_ENV):
                    Path(os.environ[STATUS_ENV]).write_text(res.status)
    except ReplicaFailed:
        raise
    except Exception as e:
        if e is told.error:
            raise
        # a peer that already left after a success must not turn it into a failure
    try:
        dist.destroy_process_group()
    except Exception:
        pass
    return 0


def exit_status(argv: list[str] | None = None) -> int:
    """:func:`main`'s exit status, whatever ends it: its own (0; 1 a failed collective; 2 a
    refusal, its message printed), 1 for any other error, printed with its traceback, 130 for
    an interrupt, and argparse's for bad options (2; 0 after ``--help``). Nothing escapes:
    :func:`entry` leaves through ``os._exit`` on every path."""
    rank = os.environ.get("RANK", "?")
    try:
        return main(argv)
    except SystemExit as e:         # argparse: --help, a bad option
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"sgdlab.train.distributed: rank {rank}: interrupted", file=sys.stderr,
              flush=True)
        return 130
    except BaseException as e:
        traceback.print_exc()
        failed(rank, f"{type(e).__name__}: {e}")
        return 1


def entry(argv: list[str] | None = None) -> NoReturn:
    """``python -m sgdlab.train.distributed``: :func:`exit_status`, the output flushed, then
    ``os._exit`` with it, on every path (a failure's too). No interpreter teardown: once in
    33 two-replica runs on a loaded machine a replica that had finished died there with
    SIGABRT (gloo's threads, "terminate called without an active exception"), and torchrun
    reported the run as failed; an error that escaped main still went through it."""
    code = exit_status(argv)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:   # a closed or broken stream must not keep the process alive
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
