"""Find a stored model: a run id (or prefix) in the run store, a run folder, or a checkpoint.

One resolver for every command that reads a trained model: ``sgdlab measure`` (which rebuilds
the run's model from its config) and a run config's ``model.init_from`` (a warm start, which
loads the weights into the model of its own config).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import UserError
from ..store.folders import is_replica_run, sweep_run_folder

_MASTER_IN_CHECKPOINTS = (
    "{what} is a run of `sgdlab parle` without its master.pt (unfinished, or the file "
    "removed): its master is only in its last checkpoint set, which a warm start does not "
    "read (the master's buffers are the mean of every replica's file); `sgdlab measure` reads "
    "it, and a run continued with `sgdlab parle ... --resume` to its end writes master.pt")
# a sweep run's checkpoint folder, in its run key's artifact folder (the name
# sgdlab.experiments.worker.CHECKPOINT_DIR: config sits below experiments)
_SWEEP_CHECKPOINT = "checkpoint"


class Located(NamedTuple):
    """A stored model found by :func:`locate_run`."""

    config: dict[str, Any] | None    # the run's config (None: a path, rebuild=False)
    checkpoint: Path                 # a checkpoint, a run's final weights or a parle master
    run_id: str | None
    folder: Path | None              # the run folder
    store: Any                       # its RunStore (None: a path, rebuild=False)
    # a bare state dict's step (a parle master, a sweep run's model.pt): it holds no loop;
    # None: the file's own
    step: int | None = None


def locate_run(target: str, store_path: str | os.PathLike | None = None, *,
               rebuild: bool = True) -> Located:
    """The model ``target`` names: a run id (or unique prefix) in the run store at
    ``store_path`` (default ``$SGDLAB_STORE`` or ./sgdlab-runs/runs.sqlite), a run folder, or
    a checkpoint file or folder written by the training loop; of a finished or diverged run
    of an experiment's sweep, the final weights it keeps (``weights.pt``, by run id or its
    run key's folder), of one stopped before its end, its last checkpoint (``rebuild`` only,
    by run id or that file or folder); of a run of ``sgdlab parle``, its master (see
    ``sgdlab measure``).

    ``rebuild``: the caller rebuilds the run's model from its config and records in its store
    (``sgdlab measure``): a checkpoint's folder must hold its config.yaml, and the store is
    opened. Without it (a warm start, which builds its own model) a bare checkpoint file will
    do, no store is opened for a path (but for a replica run's folder, whose rounds the store
    holds), and the master of an unfinished replica run, which only its checkpoint set gives,
    is refused. Each failure is one :class:`UserError` naming the problem."""
    from ..store import RunStore, default_store_path
    from ..store.folders import OLD_REPLICA_RESULT, REPLICA_MASTER, replica_result
    from ..train.checkpoint import CHECKPOINT_NAME, OWN_WEIGHTS_HINT, WEIGHTS_NAME
    from ..train.loop import python_trained
    from .io import CONFIG_SUFFIXES, load_config
    from .runner import run_folder
    from ..store.folders import recorded_run

    p = Path(target)
    ckpt_dir = _replica_checkpoints(p)
    replica_folder = p if p.is_dir() else p.parent
    result = replica_result(replica_folder)
    replica_run = p.exists() and result is not None and (
        replica_folder / REPLICA_MASTER).is_file() and p.name in (
        replica_folder.name, REPLICA_MASTER, result.name, OLD_REPLICA_RESULT)
    if not rebuild and ckpt_dir is not None:
        raise UserError(_MASTER_IN_CHECKPOINTS.format(what=repr(target)))
    if ckpt_dir is not None:
        return _locate_replica_checkpoint(ckpt_dir, store_path)
    if replica_run:
        return _locate_replica_run(replica_folder, store_path, rebuild)
    if p.exists():
        if p.is_file():
            ckpt, folder = p, p.parent.parent if p.parent.name == "checkpoints" else p.parent
        elif (p / CHECKPOINT_NAME).exists():
            ckpt, folder = p / CHECKPOINT_NAME, p.parent if p.name == "checkpoints" else p
        elif (p / "checkpoints" / CHECKPOINT_NAME).exists():
            ckpt, folder = p / "checkpoints" / CHECKPOINT_NAME, p
        elif (p / WEIGHTS_NAME).exists():     # a sweep run's folder, its checkpoint removed
            ckpt, folder = p / WEIGHTS_NAME, p
        else:
            from ..store.folders import experiment_report_note

            # an experiment's output folder: its runs are measured one by one, by run id
            raise UserError(experiment_report_note(p) or f"no checkpoint in {target!r} "
                            f"(expected {CHECKPOINT_NAME}, "
                            f"checkpoints/{CHECKPOINT_NAME} or a finished run's "
                            f"{WEIGHTS_NAME})")
        if not rebuild:   # the caller builds its own model: the folder's config is not read
            return Located(None, ckpt, recorded_run(folder)[0], folder, None)
        cfg_file = folder / "config.yaml"
        parts = Path(os.path.abspath(ckpt)).parts    # .../artifacts/<run key>/checkpoint/
        if not cfg_file.exists() and len(parts) > 4 and (parts[-4], parts[-2]) == (
                "artifacts", _SWEEP_CHECKPOINT):
            return _sweep_run_checkpoint(Path(*parts), store_path)
        if not cfg_file.exists() and ckpt.name == WEIGHTS_NAME:
            raise UserError(f"cannot rebuild the model of {str(ckpt)!r}: no config.yaml in "
                            f"{str(folder)!r}; the final weights of a sweep run are measured "
                            "by its run id (`sgdlab runs list` names it), whose run "
                            "parameters the run store holds")
        if not cfg_file.exists() and (folder / "parle.json").is_file():
            raise UserError(f"{str(ckpt)!r} is a checkpoint of a replica run (`sgdlab "
                            "parle`): measure its master by the run's id or its folder "
                            f"{str(folder)!r} (of an interrupted run, the master of its last "
                            "checkpoint)")
        if ckpt.suffix.lower() in (*CONFIG_SUFFIXES, ".json"):
            # a config or results file, which torch.load would call corrupt
            run = (f"; this one is in the folder of a run: measure {str(folder)!r}"
                   if (folder / "run.json").is_file() else "")
            raise UserError(f"{target!r} is a config or results file, not a trained model: "
                            "give a run id, a run folder or a checkpoint (`sgdlab train "
                            "CONFIG` prints its run's id and folder; `sgdlab runs list` names "
                            f"the runs){run}")
        if not cfg_file.exists():
            raise UserError(f"cannot rebuild the model of {str(ckpt)!r}: no config.yaml in its "
                            f"run folder {str(folder)!r}: {OWN_WEIGHTS_HINT}")
        cfg = load_config(cfg_file)
        run_id, recorded = recorded_run(folder)
        if store_path is None and recorded is not None:
            if not Path(recorded).is_file():
                raise UserError(f"the run store of {str(folder)!r} ({recorded}) is gone; "
                                "give the store that holds its run with --store PATH")
            store_path = recorded
        store = RunStore(store_path or (cfg.get("store") or {}).get("path"))
        return Located(cfg, ckpt, run_id, folder, store)
    path = Path(store_path) if store_path else default_store_path()
    if not path.is_file():  # a mistyped id or folder must not create an empty store
        from ..store import first_run_hint, folder_hint
        raise UserError(f"{target!r} is no run folder or checkpoint, and there is no run store "
                        f"at {path} to look it up in (use --store PATH or $SGDLAB_STORE"
                        f"{folder_hint(path)}{first_run_hint(path)})")
    store = RunStore(path)
    try:
        run = store.get_run(target)   # UserError names the run if missing
    except UserError as e:
        if not str(e).startswith("no run "):
            raise
        # a mistyped path (runs/t9) is named as one, as a warm start names it
        raise UserError(f"{target!r} is no file or folder, and {e}") from None
    if is_replica_run(run["config"]) and not run["config"].get("run_key"):
        return _replica_master(run, store, rebuild)     # (a sweep's: _sweep_run_weights)
    folder = run_folder(run)
    if run["config"].get("run_key") and run["experiment"] and folder is None:
        return _sweep_run_weights(run, store, rebuild)
    ckpts = [a["path"] for a in run["artifacts"] if a["kind"] == "checkpoint"]
    ckpt = Path(ckpts[-1]) if ckpts else (folder / "checkpoints" / CHECKPOINT_NAME
                                           if folder else None)
    if ckpt is None and python_trained(run["config"]):
        raise UserError(f"run {run['id']} was {python_trained(run['config'])}: measure the "
                        "model from Python with the functions of sgdlab.measure")
    if ckpt is None and not rebuild:
        raise UserError(f"run {run['id']} has no checkpoint: only the runs of `sgdlab train` "
                        "keep one")
    if ckpt is None:
        raise UserError(f"run {run['id']} keeps no model to measure: the runs of `sgdlab "
                        "train` (a checkpoint) and of `sgdlab parle` (the master) do; "
                        f"{'its experiment' if run['experiment'] else 'this run'} "
                        "recorded metrics only")
    if not ckpt.exists():
        # a run stopped in its first epoch has its folder, but no checkpoints/ folder yet
        there = ckpt.parent.is_dir() or (folder is not None and folder.is_dir())
        why = ("it stopped before its first one, or it was removed" if there
               else "its folder is gone")
        raise UserError(f"run {run['id']} has no checkpoint on disk ({ckpt}: {why})")
    return Located(run["config"], ckpt, run["id"], folder, store)


def _sweep_run_weights(run: dict, store, rebuild: bool = True) -> Located:
    """:func:`locate_run` for a run of an experiment's sweep: the final weights its ``train``
    procedure keeps (``weights.pt`` in its run key's artifact folder; the checkpoint, with
    the optimizer's state, is removed once the run is finished or diverged); of a run
    stopped before its end, with ``rebuild``, its last checkpoint (a warm start takes that
    file as a path: the sweep that resumes the run overwrites it)."""
    from ..train.checkpoint import CHECKPOINT_NAME, WEIGHTS_NAME

    weights = [Path(a["path"]) for a in run["artifacts"] if a["kind"] == "model"]
    what = f"run {run['id']} (of the sweep of {run['experiment']}, {run['status']})"
    params = run["config"].get("params") or {}
    if is_replica_run(run["config"]) and params.get("mode", "inprocess") != "distributed":
        # finished or stopped alike: the replicas live in the worker's memory only
        raise UserError(f"{what} keeps no model: the `replicas` procedure's in-process mode "
                        "(its params' `mode`: inprocess, the default) keeps no master x̄; "
                        "with `mode: distributed` a run keeps it (master.pt), which `sgdlab "
                        "measure` reads: set `mode: distributed` in the experiment's params "
                        "and run its sweep again (another mode, another run)")
    if weights and weights[-1].is_file():
        # model.pt, a bare state dict (what `save_model` kept before weights.pt): its step is
        # the run's
        step = (None if weights[-1].name == WEIGHTS_NAME
                else int((run["summary"] or {}).get("steps", 0)))
        return Located(run["config"], weights[-1], run["id"], weights[-1].parent, store, step)
    if weights:
        raise UserError(f"{what} has no final weights on disk: {weights[-1]} is gone")
    if run["status"] not in ("finished", "diverged") and is_replica_run(run["config"]):
        return _sweep_replica_checkpoint(run, store, rebuild, what)
    if run["status"] not in ("finished", "diverged"):
        ckpt = (sweep_run_folder(store.path, run["config"]["run_key"]) / _SWEEP_CHECKPOINT
                / CHECKPOINT_NAME)
        if rebuild and ckpt.is_file():
            print(f"sgdlab: {what}: measuring its last checkpoint, {ckpt}", flush=True)
            return Located(run["config"], ckpt, run["id"], ckpt.parent.parent, store)
        raise UserError(f"{what} has no final weights: only a finished or diverged run keeps "
                        "them; "
                        + (f"its sweep resumes it from its last checkpoint, {ckpt} (a warm "
                           "start takes that file as a path)" if ckpt.is_file()
                           else "it has no checkpoint either (its sweep runs it again)"))
    procedure = run["config"].get("procedure")
    if procedure not in ("train", "train_or_interpolate") or "between" in (
            run["config"].get("params") or {}):       # (an interpolation's run)
        raise UserError(f"{what} keeps no model: its procedure {procedure!r} records results "
                        "only (the `train` procedure keeps a run's final weights"
                        + (", the `replicas` procedure's with `mode: distributed` its master"
                           if is_replica_run(run["config"]) else "") + ")")
    raise UserError(f"{what} keeps no final weights ({WEIGHTS_NAME}): it was run by an "
                    "sgdlab that removed a finished run's checkpoint without keeping them; "
                    "run its sweep again into a new store to keep them")


def _sweep_replica_checkpoint(run: dict, store, rebuild: bool, what: str) -> Located:
    """:func:`_sweep_run_weights` for a run of the ``replicas`` procedure stopped before its
    end: with ``rebuild``, the master of its last checkpoint set (a distributed run's, which
    its sweep continues: ``round`` · L its step); a warm start is refused, as for an
    unfinished run of ``sgdlab parle`` (the master's buffers are the mean of every replica's
    file)."""
    from ..store.folders import sweep_replica_checkpoints
    from ..train.checkpoint import load_checkpoint
    from ..train.replicas import MASTER_CHECKPOINT

    head = sweep_replica_checkpoints(store.path, run["config"]["run_key"]) / MASTER_CHECKPOINT
    if not head.is_file():
        raise UserError(f"{what} has no final weights: only a finished or diverged run keeps "
                        "them; it has no checkpoint set either (its sweep runs it again)")
    if not rebuild:
        raise UserError(f"{what} has no final weights: only a finished or diverged run keeps "
                        f"them; its master is only in its last checkpoint set, {head.parent}, "
                        "which a warm start does not read (the master's buffers are the mean "
                        "of every replica's file); `sgdlab measure` reads it, and its sweep "
                        "continues it")
    state = load_checkpoint(head, require=("round", "parle"), mmap=True)
    step = int(state["round"]) * int(state["parle"]["L"])
    print(f"sgdlab: {what}: measuring the master of its last checkpoint (round "
          f"{state['round']}), {head}", flush=True)
    return Located(run["config"], head, run["id"], head.parent.parent, store, step)


def _sweep_run_checkpoint(ckpt: Path, store_path: str | os.PathLike | None) -> Located:
    """:func:`locate_run` for the checkpoint of a run of an experiment's sweep named by path
    (``artifacts/<run key>/checkpoint/last.pt``, or its folder): the run it records, looked
    up in the run store at ``store_path`` (default ``$SGDLAB_STORE`` or
    ./sgdlab-runs/runs.sqlite), whose run parameters rebuild its model."""
    from ..store import RunStore, default_store_path
    from ..train.checkpoint import load_checkpoint

    run_id = load_checkpoint(ckpt, require=("loop",), mmap=True).get("run_id")
    path = Path(store_path) if store_path else default_store_path()
    run = store = None
    if run_id is not None and path.is_file():
        store = RunStore(path)
        try:
            run = store.get_run(str(run_id))
        except UserError:
            run = None
    if run is None or (run["config"] or {}).get("run_key") != ckpt.parent.parent.name:
        raise UserError(f"cannot rebuild the model of {str(ckpt)!r}, the checkpoint of a run "
                        "of an experiment's sweep: " + (
                            f"the run store at {path} does not hold its run {run_id} (give "
                            "its sweep's store with --store PATH)" if run_id is not None
                            else "it records no run, whose parameters would rebuild it"))
    return Located(run["config"], ckpt, run["id"], ckpt.parent.parent, store)


# why a replica run has no record, and how a new one gets one
NOT_RECORDED = ("its config had no 'store': run it again with `store: PATH` added to the "
                "replica config, or with `sgdlab parle`, which records every run in a run "
                "store: --store PATH, $SGDLAB_STORE or ./sgdlab-runs/runs.sqlite")


def _locate_replica_run(folder: Path, store_path: str | None, rebuild: bool = True):
    """:func:`locate_run` for the ``--out`` folder of ``sgdlab parle`` (or a file in it): its run,
    named in ``results.json`` (``result.json`` in an older folder), looked up in the run
    store (the one named there, or ``store_path``), which holds the config."""
    from ..store.folders import recorded_run
    from ..store import RunStore, default_store_path

    run_id, recorded = recorded_run(folder)
    path = Path(store_path or recorded or default_store_path())
    if run_id is None or not path.is_file():
        raise UserError(f"cannot rebuild the model of the replica run in {str(folder)!r}: "
                        + (f"it was not recorded in a run store ({NOT_RECORDED})"
                           if run_id is None else f"no run store at {path} holds its run "
                           f"{run_id} (give it with --store PATH)"))
    store = RunStore(path)
    return _replica_master(store.get_run(run_id), store, rebuild)


def _replica_checkpoints(p: Path) -> Path | None:
    """The checkpoints folder of a run of ``sgdlab parle`` that ``p`` names, when the master
    is to come from its last checkpoint: the ``--out`` folder of a run that has not finished
    (no ``results.json``), its ``checkpoints`` folder or the ``master.pt`` in it."""
    from ..store.folders import replica_result
    from ..train.replicas import MASTER_CHECKPOINT

    if p.is_dir() and (p / "checkpoints" / MASTER_CHECKPOINT).is_file() and (
            replica_result(p) is None):
        return p / "checkpoints"
    if p.name == "checkpoints" and (p / MASTER_CHECKPOINT).is_file():
        return p
    if p.is_file() and p.name == MASTER_CHECKPOINT and p.parent.name == "checkpoints" and (
            not (p.parent / "last.pt").exists()):
        return p.parent
    return None


def _locate_replica_checkpoint(ckpt_dir: Path, store_path: str | None, run: dict | None = None,
                               store=None):
    """:func:`locate_run` for the last checkpoint of a run of ``sgdlab parle`` (an interrupted
    one): the master of the round ``master.pt`` names, rebuilt from the config the run store
    holds for the run it records (``run``/``store`` when already looked up)."""
    from ..store import RunStore, default_store_path
    from ..train.checkpoint import load_checkpoint
    from ..train.replicas import MASTER_CHECKPOINT

    head = load_checkpoint(ckpt_dir / MASTER_CHECKPOINT, require=("round",))
    if run is None:
        run_id = head.get("run_id")
        path = Path(store_path or head.get("store") or default_store_path())
        if run_id is None:
            raise UserError(f"cannot rebuild the model of the replica run checkpointed in "
                            f"{str(ckpt_dir)!r}: it was not recorded in a run store, which "
                            f"would hold its data and model ({NOT_RECORDED})")
        store = RunStore(path) if path.is_file() else None
        try:
            run = store.get_run(run_id) if store is not None else None
        except UserError:
            run = None
        if run is None:
            raise UserError(f"the replica run checkpointed in {str(ckpt_dir)!r} ({run_id}) is "
                            f"not in the run store {path}: give the store its config names "
                            "with --store PATH")
    _check_replica_record(run)
    note = (f"run {run['id']} is {run['status']}" if run["status"] != "finished"
            else f"run {run['id']}")
    print(f"sgdlab: {note}: measuring the master of its last checkpoint (round "
          f"{head['round']})", flush=True)
    cfg = {**run["config"], "rounds": int(head["round"])}
    return Located(cfg, ckpt_dir / MASTER_CHECKPOINT, run["id"], ckpt_dir.parent, store)


def _check_replica_record(run: dict) -> None:
    if not all(isinstance(run["config"].get(k), dict) for k in ("data", "model")):
        raise UserError(f"cannot rebuild the model of replica run {run['id']}: its record "
                        "holds no data and model specs (recorded by an older sgdlab)")


def _replica_master(run: dict, store, rebuild: bool = True):
    """:func:`locate_run` for a run of ``sgdlab parle``: the master's weights, ``master.pt``
    (its state dict: x̄ and the replicas' averaged buffers; ``step`` = rounds · L, the step
    its last round logged at); of a run that did not finish, the master of its last
    checkpoint (``rebuild`` only)."""
    from ..train.replicas import MASTER_CHECKPOINT

    cfg = run["config"]
    _check_replica_record(run)
    models = [Path(a["path"]) for a in run["artifacts"] if a["kind"] == "model"]
    if not rebuild and not (models and models[-1].is_file()) and any(
            a["kind"] == "checkpoints" and (Path(a["path"]) / MASTER_CHECKPOINT).is_file()
            for a in run["artifacts"]):
        raise UserError(_MASTER_IN_CHECKPOINTS.format(what=f"run {run['id']}"))
    if not models or not models[-1].is_file():
        ckpts = [Path(a["path"]) for a in run["artifacts"] if a["kind"] == "checkpoints"]
        if ckpts and (ckpts[-1] / MASTER_CHECKPOINT).is_file():
            return _locate_replica_checkpoint(ckpts[-1], None, run, store)
        if models:
            why = f"{models[-1]} is gone"
        elif ckpts:
            why = (f"it is {run['status']} and {ckpts[-1]} holds no checkpoint (removed, "
                   "or stopped before the first one)")
        else:
            why = (f"it is {run['status']} and no checkpoint folder is recorded for it (it "
                   "ran without --out, or with an older sgdlab: give its --out folder)")
        raise UserError(f"replica run {run['id']} has no master weights on disk: {why}")
    # the rounds it ended with: a --resume with more rounds extends the run, not its record
    rounds = (run["summary"] or {}).get("rounds", cfg.get("rounds"))
    return Located({**cfg, "rounds": rounds}, models[-1], run["id"], models[-1].parent, store,
                   int(rounds) * int(cfg["parle"]["L"]))


__all__ = ["Located", "locate_run"]
