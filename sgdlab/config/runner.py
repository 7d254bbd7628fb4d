"""Run a config end to end: record it in the store, train, write results and the plot.

``run_config(cfg)`` is what ``sgdlab train`` and ``sgdlab resume`` call. A run's folder
(default ``<store folder>/<run_id>/``) holds ``config.yaml`` (the validated config),
``run.json`` (run id and store, so tools find the run from its folder),
``checkpoints/last.pt``, ``results.json`` (status, final metrics, config, environment,
history) and ``learning_curves.png`` (and ``instruments.png`` when the run's instruments
recorded series); the store records the folder and files as artifacts.

A run is ``finished`` (or ``diverged``) only once ``results.json``, the plot and the final
checkpoint are written: the status, summary and those artifacts are committed together
(:meth:`sgdlab.store.RunStore.complete_run`). A process killed before that leaves a run the
store shows as ``interrupted``; ``sgdlab resume`` finishes it from its last checkpoint.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_whole
from ..claims import claim_file
from ..errors import (ResumableError, RunInterrupted, UserError, file_problem,
                      make_output_dir)
from ..store.folders import RUN_FILE, is_replica_run, store_option
from ..store.runstore import is_locked, locked_message
from ..strict_json import dumps as strict_dumps, write_atomic
from .io import dump_yaml
from .run import build_from_config, resolve_device, validate_config

# "running" here means its owner is unknown (a store written before liveness was recorded);
# a run whose owner is alive is refused by RunStore.claim.
RESUMABLE = ("running", "interrupted", "stale", "failed")
def resume_command(run_id: str, store_path: str | os.PathLike) -> str:
    """The exact command that continues ``run_id``, from any folder."""
    return f"sgdlab resume {run_id} {store_option(store_path)}"


@dataclass
class RunOutcome:
    run_id: str
    result: Any                    # sgdlab.train.RunResult
    out_dir: Path
    results_path: Path
    figure_path: Path | None
    store_path: Path
    resumed_from_step: int | None = None
    instruments_path: Path | None = None       # instruments.png, when instruments recorded
    tensorboard_path: Path | None = None       # DIR/<name>-<run id>, with train.tensorboard


def batch_size_note(batch_size: Any, n: int) -> str | None:
    """The note ``sgdlab train`` prints when an int ``train.batch_size`` exceeds the training
    set's ``n`` examples: the loop then draws all of them each step, full-batch GD, which
    the config does not say (``batch_size: full``, or B = N exactly, says so: no note)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= n:
        return None
    return (f"sgdlab: note: train.batch_size {batch_size} is larger than the training set "
            f"({n} examples): each step is full-batch GD, B={n}, the full training set")


def run_config(cfg: dict[str, Any], *, out_dir: str | os.PathLike | None = None,
               store: Any = None, progress: bool | None = None,
               announce: Any = None) -> RunOutcome:
    """Validate ``cfg``, create a run in ``store`` (a ``RunStore`` or its path; default:
    ``cfg['store']['path']`` or the default store), train it and write its folder.
    ``announce(run_id)`` is called once the run exists (the CLI prints the id and the resume
    command)."""
    from ..store import RunStore, environment, new_run_id

    cfg = validate_config(cfg)
    if cfg["model"].get("init_from"):
        # recorded with the source as a full run id or an absolute path, as data_dir: a
        # restart from step 0 loads (and checks, by its SHA-256) the same weights from any
        # folder; run ids are looked up in the store the run goes to
        from .warm_start import warm_start_record

        record = warm_start_record(cfg["model"], store if store is not None
                                   else cfg["store"]["path"])
        cfg = {**cfg, "model": {**cfg["model"], "init_from": record["init_from"],
                                "warm_start": record}}
    if cfg["data"].get("file") is not None and "sha256" not in cfg["data"] \
            and Path(cfg["data"]["file"]).is_file():      # (a missing one: the build says so)
        from ..data.files import data_file_sha256

        # its content beside its path: the run's record names these bytes, and a resume or
        # measurement refuses another file at that path
        cfg = {**cfg, "data": {**cfg["data"], "sha256": data_file_sha256(cfg["data"]["file"])}}
    # Build before recording: input that only fails when built (a bad data option value, a
    # missing file) is reported without leaving a failed run behind.
    try:
        built = build_from_config(cfg, validated=True, store=store)
    except KeyboardInterrupt as e:     # minutes for a large dataset: say what stands
        how = "terminated" if str(e) else "interrupted"
        raise RunInterrupted(f"{how} while the data and model were built, before the run was "
                             "recorded: nothing was saved; the same command starts it again"
                             ) from None
    # a data file's regression targets (N,) for (N, 1) outputs, labels kept as a column
    from ..operators.batches import check_run_data

    check_run_data(built.model, built.loss_fn, built.data)
    note = batch_size_note(cfg["train"]["batch_size"], len(built.data.x_train))
    if note is not None:
        print(note, file=sys.stderr, flush=True)
    if cfg["data"]["data_dir"] is not None:
        # recorded absolute, as the run's folder is: `sgdlab resume` and `sgdlab measure` from
        # another folder read the same files
        data_dir = str(Path(cfg["data"]["data_dir"]).expanduser().resolve())
        cfg = {**cfg, "data": {**cfg["data"], "data_dir": data_dir}}
    if cfg["train"].get("tensorboard"):
        from ..train.tensorboard import writer_class

        # before the run is recorded (it was recorded failed at its first logged metric), and
        # the package (the run was recorded failed at its start)
        make_output_dir(cfg["train"]["tensorboard"], "train.tensorboard (--tensorboard)")
        writer_class()
    if out_dir is not None:
        _refuse_held(out_dir)   # before a store is opened (or made) for a run that cannot start
        make_output_dir(out_dir)    # before the run is recorded: a folder it cannot write to
    if store is None or isinstance(store, (str, os.PathLike)):
        store = RunStore(store if store is not None else cfg["store"]["path"])
    env = environment(seed=cfg["train"]["seed"], device=resolve_device(cfg["train"]["device"]))
    if out_dir is None:     # a folder of the run's own id: no other run can want it
        run_id = store.create_run(cfg, name=cfg["name"], experiment=cfg["experiment"], env=env)
        out = store.path.parent / run_id
        out.mkdir(parents=True, exist_ok=True)
        _write_run_file(out, run_id, store)
    else:
        # two starts at once can both pass the check above: the folder is the run's once its
        # run.json is created, which succeeds for one of them; the other is refused as there
        out = Path(out_dir)
        run_id = new_run_id()
        _claim_folder(out, out_dir, run_id, store)
        try:
            store.create_run(cfg, name=cfg["name"], experiment=cfg["experiment"], env=env,
                             run_id=run_id)
        except BaseException:
            (out / RUN_FILE).unlink(missing_ok=True)    # ours: the folder is free again
            raise
    try:       # recorded from here on: an interrupt says how it goes on
        store.add_artifact(run_id, "out_dir", out.resolve())
        write_whole(out / "config.yaml", dump_yaml(cfg))
        if announce is not None:
            announce(run_id)
    except KeyboardInterrupt as e:
        _interrupted(store, run_id, resume_command(run_id, store.path), e)
    return _execute(cfg, store, run_id, out, env, resume=False, progress=progress, built=built)


def resume_run(run_id: str, *, store: Any = None, progress: bool | None = None,
               announce: Any = None) -> RunOutcome:
    """Continue run ``run_id`` (a unique prefix is enough) from its last checkpoint, with the
    config stored for it. A run killed before its first checkpoint restarts from step 0. A run
    whose process is still alive is refused."""
    from ..store import RunStore, environment
    from ..train.checkpoint import checkpoint_path
    from ..train.loop import python_trained

    store = store if store is not None else RunStore()
    run = store.get_run(run_id)
    run_id = run["id"]
    if run["status"] not in RESUMABLE:
        # "train it longer" is what a finished run given to resume most likely asks for
        further = (f"; to train it further, start a run from its weights: "
                   f"{warm_start_command(run_id, store.path)} (a warm start: CONFIG's "
                   "train.epochs more, the optimizer afresh)"
                   if run["status"] in ("finished", "diverged") else "")
        raise UserError(f"run {run_id} is {run['status']}; only interrupted, stale, failed "
                        f"(or killed) runs can be resumed{further}")
    out = run_folder(run)
    if out is None and is_replica_run(run["config"]) and not run["config"].get("run_key"):
        raise UserError(f"run {run_id} is a run of `sgdlab parle`: continue it with `sgdlab "
                        "parle CONFIG --out DIR --resume`, DIR the folder that holds its "
                        "checkpoints")
    if out is None and python_trained(run["config"]):
        raise UserError(f"run {run_id} was {python_trained(run['config'])}: continue it from "
                        f"Python with train(..., store=RunStore({str(store.path)!r}), "
                        f"run_id={run_id!r}, checkpoint_dir=<its checkpoint folder>, "
                        "resume=True)")
    if out is None:
        raise UserError(f"run {run_id} has no run folder recorded (was it started by "
                        "`sgdlab train`?)")
    cfg = validate_config(run["config"])
    env = environment(seed=cfg["train"]["seed"], device=resolve_device(cfg["train"]["device"]))
    resume = checkpoint_path(out / "checkpoints").exists()
    # asked before the folder is written: a run another process still runs, its folder
    # removed, was given a new empty one, then refused (the claim below still decides a race)
    store.refuse_live_owner(run_id)
    # a removed folder is made again with the files that say which run it holds
    make_output_dir(out, "the run folder")
    if not (out / "config.yaml").is_file():
        write_whole(out / "config.yaml", dump_yaml(cfg))
    if not (out / RUN_FILE).is_file():
        _write_run_file(out, run_id, store)
    store.claim(run_id)          # refuses a run whose process is alive
    try:       # claimed from here on: an interrupt records it and says how it goes on
        if not resume:
            # it had made progress: say why it is redone
            if store.count_metrics(run_id, measured=False):
                print(f"sgdlab: note: no checkpoint at {checkpoint_path(out / 'checkpoints')} "
                      f"(killed before its first one, or removed): run {run_id} "
                      "restarts from step 0", file=sys.stderr, flush=True)
            store.truncate_metrics(run_id, 0)
            if cfg["train"].get("tensorboard"):   # its events, as its rows: redone from step 0
                from ..train import tensorboard

                tensorboard.clear_events(tensorboard.run_folder(cfg["train"]["tensorboard"],
                                                                run_id, cfg["name"]))
        if announce is not None:
            announce(run_id)
    except KeyboardInterrupt as e:
        _interrupted(store, run_id, resume_command(run_id, store.path), e)
    return _execute(cfg, store, run_id, out, env, resume=resume, progress=progress)


def _run_file_text(run_id: str, store: Any) -> str:
    return strict_dumps({"run_id": run_id, "store": str(Path(store.path).resolve())})


def _write_run_file(out: Path, run_id: str, store: Any) -> None:
    write_whole(out / RUN_FILE, _run_file_text(run_id, store))


def _refuse_held(out_dir: str | os.PathLike) -> None:
    """A :class:`UserError` when folder ``out_dir`` holds a run (its run.json) or another
    command's results.json."""
    if (Path(out_dir) / RUN_FILE).is_file():
        try:
            record = json.loads((Path(out_dir) / RUN_FILE).read_text())
            held, where = record.get("run_id", "?"), record.get("store")
        except (OSError, ValueError, AttributeError):
            held, where = "?", None
        raise UserError(f"{out_dir} already holds run {held} (its results and checkpoint would "
                        "be overwritten): choose another folder, or remove that one first"
                        f"{_stopped_run_note(held, where, out_dir)}")
    if (Path(out_dir) / "results.json").is_file():   # an experiment's report, a demo's output
        raise UserError(f"{out_dir} holds a results.json (of `sgdlab run`, `walk` or "
                        "`landscape`) that this run would overwrite: choose another folder")


def _stopped_run_note(run_id: str, store_path: str | None,
                      folder: str | os.PathLike) -> str:
    """For a folder's run that stopped before its end (the same command given again after a
    Ctrl-C), the command that continues it; "" for any other, or when its store cannot say."""
    import sqlite3

    from ..store import RunStore
    from ..store.runstore import shown_status

    if not (isinstance(store_path, str) and Path(store_path).is_file()):
        return ""
    try:
        with RunStore(store_path, readonly=True) as store:
            status = shown_status(store.get_run(run_id))
    except (UserError, OSError, sqlite3.Error):
        return ""
    if status not in ("interrupted", "stale", "failed"):
        return ""
    advice = FailedRunAdvice.of({"id": run_id, "status": status}, store_path, folder=folder)
    if advice is not None:    # a resume reruns its stored config: a corrected one is a new run
        return f"; {advice.held_folder()}"
    return f"; that run is {status}: continue it with {resume_command(run_id, store_path)}"


def _claim_folder(out: Path, out_dir: str | os.PathLike, run_id: str, store: Any) -> None:
    """Create ``out/run.json`` naming ``run_id`` unless it exists (then the
    :class:`UserError` of :func:`_refuse_held`): of two starts at once into ``out``, exactly
    one creates it."""
    try:
        claim_file(out / RUN_FILE, _run_file_text(run_id, store))
    except FileExistsError:
        _refuse_held(out_dir)
        raise UserError(f"{out_dir}: another run started in this folder meanwhile: choose "
                        "another folder") from None
    except OSError as e:
        raise UserError(f"--out {out_dir}: cannot write {RUN_FILE}: {file_problem(e)}") from None


def _execute(cfg: dict[str, Any], store: Any, run_id: str, out: Path, env: dict[str, Any], *,
             resume: bool, progress: bool | None, built: Any = None) -> RunOutcome:
    from ..train.checkpoint import load_checkpoint
    from ..train.loop import train

    hint = resume_command(run_id, store.path)
    training = False    # until train() is called: a resume's own set-up failing (its data
    try:                # file moved, no CUDA here, an unreadable checkpoint) is resumed again
        if built is None:
            # resumed from its own checkpoint, a warm-started run does not read its source
            built = build_from_config(cfg, validated=True, store=store, init=not resume)
        kwargs = dict(built.train_kwargs)
        from ..train.tensorboard import TensorBoardLogger, run_folder

        for cb in built.callbacks:  # one TensorBoard folder per run: DIR/<name>-<run id>
            if isinstance(cb, TensorBoardLogger) and cb.run is None:
                cb.run = run_folder("", run_id, cfg["name"]).name
        kwargs["progress"] = progress_mode(progress, kwargs.get("progress", True))
        ckpt_dir = out / "checkpoints"
        try:
            resumed_from = int(load_checkpoint(ckpt_dir)["loop"]["step"]) if resume else None
        except UserError as e:     # not restarted: that would silently lose its trained steps
            raise UserError(f"{e}; to restart the run from step 0 instead, remove that "
                            "file") from None
        training = True
        result = train(built.model, built.loss_fn, built.data, built.optimizer,
                       schedule=built.schedule, callbacks=built.callbacks, store=store,
                       run_id=run_id, checkpoint_dir=ckpt_dir, resume=resume, complete=False,
                       **kwargs)
    except KeyboardInterrupt as e:
        _interrupted(store, run_id, hint, e)
    except UserError as e:
        _record_end(store, run_id, "failed", str(e))
        if isinstance(e, ResumableError) or not training:
            raise UserError(f"{e}\n{FailedRunAdvice(run_id, store.path).resumable()}"
                            ) from None
        from ..train.checkpoint import checkpoint_path

        advice = FailedRunAdvice(run_id, store.path, checkpoint_path(ckpt_dir).is_file())
        raise UserError(f"{e}\n{advice.corrected()}") from None
    except sqlite3.OperationalError as e:
        _record_end(store, run_id, "failed", f"{type(e).__name__}: {e}")
        if not is_locked(e):
            raise
        # the store locked mid-run: its checkpoint is kept, so it continues, not starts again
        raise UserError(locked_message(str(store.path), getattr(store, "timeout", None),
                                       then=f"continue run {run_id} with: {hint}")) from None
    except BaseException as e:
        _record_end(store, run_id, "failed", f"{type(e).__name__}: {e}")
        raise
    try:
        return _finish(cfg, store, run_id, out, env, result, resumed_from)
    except KeyboardInterrupt as e:    # trained, not finished: the resume writes what it owes
        _interrupted(store, run_id, hint, e)


def warm_start_command(run_id: str, store_path: str | os.PathLike) -> str:
    """The command that starts a new run from the weights of run ``run_id``'s last checkpoint
    (``--init-from``: :mod:`sgdlab.config.warm_start`), from any folder."""
    return f"sgdlab train CONFIG --init-from {run_id} {store_option(store_path)}"


def run_folder(run: dict[str, Any]) -> Path | None:
    """The folder of a run of ``sgdlab train`` (its last ``out_dir`` artifact; ``run`` as
    :meth:`~sgdlab.store.RunStore.get_run` gives it); None for a run of another command."""
    dirs = [a["path"] for a in run.get("artifacts", []) if a["kind"] == "out_dir"]
    return Path(dirs[-1]) if dirs else None


@dataclass(frozen=True)
class FailedRunAdvice:
    """What to do about failed run ``run_id`` of ``sgdlab train``, worded once for its own
    error, ``sgdlab runs show`` and a new run given its folder. ``sgdlab resume`` reruns the
    stored config (and refuses a changed data file): it continues the run once what stopped it
    lay outside its config (a full disk); a corrected config or data is a new run, which may
    start from the weights of the failed run's last checkpoint (``checkpoint``: one is there)."""
    run_id: str
    store_path: str | os.PathLike
    checkpoint: bool = False

    @classmethod
    def of(cls, run: dict[str, Any], store_path: str | os.PathLike, *,
           folder: str | os.PathLike | None = None,
           checkpoint: bool | None = None) -> FailedRunAdvice | None:
        """The advice for ``run`` when it is a failed run of ``sgdlab train`` (its folder
        recorded, or given as ``folder``); None for any other. ``checkpoint``: whether a
        warm start can load its last checkpoint; by default, whether the file is there."""
        folder = run_folder(run) if folder is None else Path(folder)
        if run.get("status") != "failed" or folder is None:
            return None
        if checkpoint is None:
            from ..train.checkpoint import checkpoint_path

            checkpoint = checkpoint_path(folder / "checkpoints").is_file()
        return cls(run["id"], store_path, checkpoint)

    @property
    def resume(self) -> str:
        return resume_command(self.run_id, self.store_path)

    @property
    def new_run(self) -> str:
        return f"sgdlab train CONFIG {store_option(self.store_path)}"

    @property
    def warm_start(self) -> str | None:
        """The warm start from the run's last checkpoint; None without one."""
        return warm_start_command(self.run_id, self.store_path) if self.checkpoint else None

    def _warm(self, lead: str) -> str:
        return (f"{lead}{self.warm_start} (a warm start: the weights only, the optimizer and "
                "step count afresh)" if self.checkpoint else "")

    def resumable(self) -> str:
        """For a failure outside the run's config (a full disk, a moved data file)."""
        return f"run {self.run_id} failed; once that is fixed, continue it with: {self.resume}"

    def corrected(self) -> str:
        """For a failure in the run's config or data: a resume would fail the same way."""
        return (f"run {self.run_id} failed; `sgdlab resume` would run its stored config again, "
                f"so fix the config (or the data) and start a new run: {self.new_run}"
                + self._warm("; or, to keep its training so far, start it from the failed "
                             "run's last checkpoint: "))

    def beside_resume(self) -> str:
        """After the resume command, where the cause is not known (``sgdlab runs show``)."""
        return ("resume reruns its stored config: if what failed lies in the config or the "
                f"data, start a new run with the corrected config: {self.new_run}"
                + self._warm("; or from its last checkpoint: "))

    def held_folder(self) -> str:
        """For a new run given the failed run's folder (``--out``)."""
        warm = (f" (to keep its training so far, start it from that run's last checkpoint: "
                f"{self.warm_start})" if self.checkpoint else "")
        return (f"that run is failed: if what stopped it lay outside its config (a full disk), "
                f"continue it with {self.resume}; to run a corrected config, choose another "
                f"folder{warm}")


def progress_mode(given: bool | None, configured: bool) -> bool | str:
    """``train()``'s ``progress`` for a run of ``sgdlab train`` / ``resume``: ``given`` by the
    command (``--no-progress``: False), else as ``configured`` (``train.progress``), where a
    log file or a pipe, which draws no bar, gets a line per epoch (``"epochs"``) to show the
    run is alive."""
    from ..train.loop import progress_watched

    if given is not None:
        return given
    return "epochs" if configured and not progress_watched() else configured


def _interrupted(store: Any, run_id: str, hint: str, e: KeyboardInterrupt) -> None:
    _record_end(store, run_id, "interrupted", f"{type(e).__name__}: {e}".rstrip(": "))
    raise RunInterrupted(f"run {run_id} interrupted{_kept(e)}; continue it with: {hint}"
                         ) from None


def _kept(e: KeyboardInterrupt) -> str:
    """What an interrupt during training kept, as the loop attached it to ``e``: where the
    resume starts. Empty for one before or after training."""
    if not hasattr(e, "stopped_step"):
        return ""
    stopped, saved = e.stopped_step, e.checkpoint_step
    if saved is None:
        return f" at step {stopped} (no checkpoint yet: it restarts from step 0)"
    if saved == stopped:
        return f" at step {stopped}, saved in its checkpoint there"
    return (f" at step {stopped} (its last checkpoint is at step {saved}: the steps after "
            "it are trained again)")


def _finish(cfg: dict[str, Any], store: Any, run_id: str, out: Path, env: dict[str, Any],
            result: Any, resumed_from: int | None) -> RunOutcome:
    """The run's figures and results.json, then its end, summary and files in one
    transaction."""
    figure_path, instruments_path = draw_run_figures(
        result.history, out, title=f"{cfg['name'] or 'run'} ({run_id}, {result.status})",
        instruments_title=f"{cfg['name'] or 'run'} ({run_id}): instruments")
    results = {
        "run_id": run_id, "status": result.status, "message": result.message,
        "steps": result.steps, "epochs_completed": result.epochs_completed,
        "wall_time_s": result.wall_time, "final": result.final, "config": cfg,
        "environment": env, "store": str(Path(store.path).resolve()),
        "history": {k: [list(p) for p in v] for k, v in result.history.items()},
    }
    results_path = write_atomic(out / "results.json", results, indent=1, default=str)
    artifacts = [("results", results_path.resolve())]
    for path in (figure_path, instruments_path):
        if path is not None:
            artifacts.append(("figure", path.resolve()))
    if result.checkpoint is not None:
        artifacts.append(("checkpoint", Path(result.checkpoint).resolve()))
    # everything the run owes is on disk: its end, summary and files in one transaction
    summary = result.summary()
    store.complete_run(run_id, result.status, summary=summary, message=result.message,
                       artifacts=artifacts)
    from ..train.tensorboard import run_folder

    tensorboard = (cfg.get("train") or {}).get("tensorboard")
    folder = run_folder(tensorboard, run_id, cfg["name"]) if tensorboard else None
    if folder is not None:
        _tensorboard_final(folder, cfg, summary, result.history)
    return RunOutcome(run_id, result, out, results_path, figure_path, store.path, resumed_from,
                      instruments_path, folder)


def draw_run_figures(history: Any, out: Path, *, title: str, instruments_title: str,
                     instruments: Any = None) -> tuple[Path | None, Path | None]:
    """A run's learning curves (``learning_curves.png``, titled ``title``) and, when
    instruments logged series (those of ``instruments``, default ``history``), their panels
    (``instruments.png``) in folder ``out``, as ``sgdlab train`` and ``sgdlab parle --out``
    draw them; the paths of those saved, else None. A figure that cannot be drawn is a
    warning: it must not lose a finished run."""
    from ..store.folders import REPLICA_FIGURE, REPLICA_INSTRUMENTS

    figure_path = instruments_path = None
    try:
        from ..report.figures import save_and_close
        from ..report.figures.training import instrument_panels, learning_curves

        fig = learning_curves(history, title=title)
        figure_path = save_and_close(fig, out / REPLICA_FIGURE, dpi=120)
        fig = instrument_panels(history if instruments is None else instruments,
                                title=instruments_title)
        if fig is not None:
            instruments_path = save_and_close(fig, out / REPLICA_INSTRUMENTS, dpi=110)
    except Exception as e:
        print(f"sgdlab: warning: could not draw the run's figures: {e}", file=sys.stderr)
    return figure_path, instruments_path


def _tensorboard_final(folder: Path, cfg: dict[str, Any], summary: dict[str, Any],
                       history: Any) -> None:
    """The run's HParams session beside the curves its TensorBoardLogger wrote: its training
    settings (:func:`~sgdlab.config.run.training_hparams`) and its summary (as ``sgdlab runs
    export --tensorboard`` writes them)."""
    from ..train.tensorboard import last_step, summary_writer, write_final
    from .run import training_hparams

    try:
        writer = summary_writer(folder)
        try:
            write_final(writer, training_hparams(cfg), summary, last_step(history))
        finally:
            writer.close()
    except Exception as e:  # the run is stored: its final values can be exported again
        print(f"sgdlab: warning: could not write the run's TensorBoard hparams: {e}")


def _record_end(store: Any, run_id: str, status: str, message: str) -> None:
    """Record why the run stopped, unless the loop already did."""
    try:
        if store.get_run(run_id)["recorded_status"] == "running":
            store.set_status(run_id, status, message)
    except Exception:  # the store itself may be what failed; the exception says so
        pass
