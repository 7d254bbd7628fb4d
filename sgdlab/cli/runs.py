"""``sgdlab runs list|show|compare|export|delete`` and ``sgdlab resume RUN_ID``: the run store
from the shell.

``list``, ``show`` and ``export`` only read the store (a store on a read-only file system
works); ``delete`` removes runs and the store's folders of them (:mod:`sgdlab.store.deletion`).
A ``running`` run whose process is gone is shown as ``interrupted`` (or ``stale`` when it ran
on another host and its heartbeat stopped), with the command that continues it."""
from __future__ import annotations

import argparse
import math
import os
import shlex
from pathlib import Path
from typing import Any

from sgdlab.strict_json import dumps

from .columns import aligned
from .train import EXIT_STATUSES


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="PATH",
                   help="run store (default: $SGDLAB_STORE or ./sgdlab-runs/runs.sqlite)")


def _selection_args(p: argparse.ArgumentParser, which: str, status_note: str) -> None:
    """--experiment, --status, --scale and --reading: the runs ``which`` ("only" or "the") the
    command takes, as ``runs list`` selects them; ``status_note`` ends the --status help."""
    from .run import add_reading_option

    p.add_argument("--experiment", help=f"{which} runs of this experiment, a catalogue entry "
                                        "run by `sgdlab run` (a run of `sgdlab train` is of "
                                        "none)")
    p.add_argument("--status", choices=("running", "finished", "diverged", "failed",
                                        "interrupted", "stale"),
                   help=f"{which} runs with this status{status_note}")
    p.add_argument("--scale", choices=("smoke", "cpu", "paper"),
                   help=f"{which} runs of an experiment run at this scale by `sgdlab run` "
                        "(runs of one experiment at two scales share their names)")
    add_reading_option(p, what="only the runs of --experiment that its sweep (at each run's "
                               "scale) takes when it reads an ambiguity of the paper as "
                               "CHOICE, as `sgdlab run NAME --reading KEY=CHOICE` does")


def _filters(args) -> list[str]:
    """The selection by --experiment, --status, --scale and --reading, in words."""
    return [f"{k} {v!r}" for k, v in (("experiment", args.experiment), ("status", args.status),
                                      ("scale", args.scale)) if v] + [
        f"reading {k}={c}" for k, c in args.reading or []]


def _readings(args) -> dict[str, str]:
    """--reading as ``{KEY: CHOICE}`` ({} for none), refused unless --experiment names a
    catalogue entry that has that reading and choice."""
    if not args.reading:
        return {}
    from sgdlab.errors import UserError
    from sgdlab.experiments.readings import check_choices

    from .run import readings_of

    if not args.experiment:
        raise UserError("--reading selects the runs of an experiment's sweep under a reading: "
                        "give --experiment NAME with it")
    readings = readings_of(args)
    check_choices(args.experiment, readings)
    return readings


def _selected_runs(args, store) -> list[dict]:
    """The runs of the store that --experiment, --status, --scale and --reading select,
    oldest first."""
    readings = _readings(args)
    runs = store.list_runs(experiment=args.experiment, status=args.status, scale=args.scale)
    if not readings:
        return runs
    from sgdlab.experiments.readings import runs_of_readings

    return runs_of_readings(args.experiment, readings, runs)


def _selected_ids(args, store, refs: list[str]) -> tuple[list[str], list[str]]:
    """The ids of the runs a command takes, and of those named but left out: the runs
    ``refs`` name (each once, however often named), narrowed to the selection by
    --experiment, --status, --scale and --reading (:func:`_filters`) when one is given; every
    run of the selection, as ``runs list`` selects them, when ``refs`` is empty."""
    ids = list(dict.fromkeys(store.resolve(r) for r in refs))
    if not _filters(args):
        return ids, []
    matching = [r["id"] for r in _selected_runs(args, store)]
    if not refs:
        return matching, []
    return [i for i in ids if i in matching], [i for i in ids if i not in matching]


def register(subparsers) -> None:
    runs = subparsers.add_parser("runs", help="list, show, compare, export and delete recorded "
                                              "runs",
                                 description="Inspect the run store, and delete runs from it.")
    sub = runs.add_subparsers(dest="runs_command", metavar="ACTION")
    runs.set_defaults(func=lambda a: (runs.print_help(), 2)[1])

    ls = sub.add_parser("list", help="one line per run",
                        description="One line per run of the store, oldest first: id, name, "
                                    "experiment, status, steps (of a replica run of sgdlab parle: "
                                    "rounds x L, the inner steps of each replica), final test "
                                    "accuracy and loss. "
                                    "A run whose process died shows as interrupted (stale: on "
                                    "another host), with the command that continues it. With "
                                    "--experiment NAME, once a run of a reading other than "
                                    "the default is listed, a READINGS column names the "
                                    "readings whose sweep takes each run (default; KEY=CHOICE; "
                                    "all: every one), as a run no reading changes is one "
                                    "stored run for each.")
    _store_arg(ls)
    _selection_args(ls, "only", " (interrupted: also runs whose process died; stale: on "
                                "another host, silent)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_list)

    show = sub.add_parser("show", help="config, environment, status, final metrics, files",
                          description="One run: its status (with the command that continues "
                                      "a stopped run), environment, summary, each metric "
                                      "series' length and last value, files and config.")
    _store_arg(show)
    show.add_argument("run_id", metavar="RUN_ID",
                      help="a run id, a unique prefix or the run's folder")
    show.add_argument("--json", action="store_true",
                      help="print the run and its metric series as JSON (a sweep run "
                           "of an entry with readings: readings, the names of those whose "
                           "sweeps take it)")
    show.set_defaults(func=_show)

    cmp = sub.add_parser("compare", help="runs side by side: what their configs change, "
                                         "final values, curves",
                         description="Print what differs between the runs' configs (a run "
                                     "of `sgdlab train` beside a sweep run: their training "
                                     "settings, named as in a run config) and their "
                                     "final values of each metric (the last point of each "
                                     "series, and the values a run keeps in its summary "
                                     "alone, as a sweep's final Hessian), and with --plot draw "
                                     "the metrics' curves of all runs in one figure.")
    _store_arg(cmp)
    cmp.add_argument("run_ids", metavar="RUN", nargs="+",
                     help="two or more run ids (or unique prefixes) or run folders")
    cmp.add_argument("--metric", action="append", dest="metrics", metavar="NAME",
                     help="a recorded series or final value to compare (repeatable; "
                          "default: train_loss, test_loss, test_acc, test_perplexity, the "
                          "headline series of the first 12 instruments' groups every run "
                          "recorded, a test split's beside its train split's, the rest named "
                          "after the table, and the final values every run has)")
    cmp.add_argument("--plot", metavar="FILE.png", help="draw the metrics' curves there")
    cmp.set_defaults(func=_compare)

    ex = sub.add_parser("export", help="write runs and metrics to CSV, JSON or TensorBoard",
                        description="Write the runs' metric series to PATH: CSV with one row "
                                    "per run, metric and step, or JSON with each run's record "
                                    "and series; with --tensorboard DIR, TensorBoard event "
                                    "files.")
    _store_arg(ex)
    ex.add_argument("path", metavar="PATH", nargs="?",
                    help="the CSV or JSON file to write")
    # every other command that writes takes --out: here it was "did you mean --format?"
    ex.add_argument("--out", metavar="PATH", dest="out_path",
                    help="the file to write, as PATH")
    ex.add_argument("--tensorboard", metavar="DIR",
                    help="write each run's metrics as TensorBoard event files in "
                         "DIR/<name>-<run id> (needs the tensorboard package)")
    ex.add_argument("--format", choices=("csv", "json"),
                    help="default: from PATH's suffix (.csv or .json; csv without one)")
    ex.add_argument("--run", action="append", dest="runs", metavar="RUN",
                    help="only this run: a run id, a unique prefix or the run's folder "
                         "(repeatable; default all)")
    _selection_args(ex, "only", ", as `runs list` shows it (given with --run, they narrow "
                                "it)")
    ex.add_argument("--summary", action="store_true",
                    help="CSV with one row per run instead: its id, name, experiment, "
                         "status, the config keys that differ between the runs written "
                         "(config.KEY) and its final values (its summary's numbers)")
    ex.set_defaults(func=_export)

    rm = sub.add_parser("delete", help="remove runs: their records and the files the store "
                                       "keeps for them",
                        description="Delete the runs named (ids, unique prefixes or run "
                                    "folders) or selected by --experiment, --status, --scale "
                                    "and --reading (given with RUNs, they narrow them): their "
                                    "rows in the store and the folders the store keeps for them "
                                    "(a run folder beside the store, a sweep run's artifact "
                                    "folder), then compacts the store's file. Lists what goes, "
                                    "with sizes (and, as `runs list` does, the readings whose "
                                    "sweeps take each run), and asks first. Files outside the "
                                    "store's folders stay. A run a live process holds is "
                                    "refused. With --orphans, also (or alone: only) the "
                                    "store's folders that no run names, which a delete "
                                    "interrupted after its records went leaves behind. Exit "
                                    "status 1 when the answer is no or a folder could not be "
                                    "removed.")
    _store_arg(rm)
    rm.add_argument("run_ids", metavar="RUN", nargs="*",
                    help="a run id, a unique prefix or the run's folder (any number)")
    _selection_args(rm, "the", ", as `runs list` shows it")
    rm.add_argument("--dry-run", action="store_true",
                    help="list what would be deleted, delete nothing")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rm.add_argument("--orphans", action="store_true",
                    help="also (or, without RUNs and filters, only) remove the store's "
                         "folders that no run names: run folders and sweep artifact folders "
                         "a delete interrupted after its records went left behind (a folder "
                         "a live sweep leases stays)")
    rm.add_argument("--force", action="store_true",
                    help="delete runs that a live process holds (running, or leased by a "
                         "sweep) too; their process fails when it records their end")
    rm.set_defaults(func=_delete)

    res = subparsers.add_parser("resume", help="continue a killed or interrupted run",
                                description="Continue RUN_ID from its last checkpoint with the "
                                            "config stored for it; the result is bit-for-bit "
                                            "that of an uninterrupted run.",
                                epilog=EXIT_STATUSES)
    _store_arg(res)
    res.add_argument("run_id", metavar="RUN_ID",
                     help="a run id, a unique prefix or the run's folder")
    res.add_argument("--no-progress", action="store_true",
                     help="no progress bar (default: one on a terminal, a line per epoch "
                          "into a log file or pipe, as the run was configured)")
    from ._plugins import add_plugin_option

    add_plugin_option(res, "; the run imports those its config names itself, a file given in "
                           "place of a recorded file that is gone")
    res.set_defaults(func=_resume)


def _open(args, readonly: bool = True):
    from sgdlab.errors import UserError
    from sgdlab.store import RunStore, default_store_path, first_run_hint, folder_hint
    path = Path(args.store) if args.store else default_store_path()
    if not path.is_file():  # do not create an empty store just to look into it
        raise UserError(f"no run store at {path} (use --store PATH or $SGDLAB_STORE"
                        f"{folder_hint(path)}{first_run_hint(path)})")
    return RunStore(path, readonly=readonly)


def _run_ref(args, ref: str, doing: str = "compared") -> tuple[str, tuple[str, str] | None]:
    """A run id, unique prefix or run folder: the id or prefix to look up, and (the folder,
    the store it records) when a folder records its run in another store than ``--store``
    (else None). A folder stands for the run (and the store) its run.json or results.json
    records; without ``--store`` that store is used. ``doing``: what is done to several
    runs, which must share one store."""
    from sgdlab.store.folders import recorded_run
    from sgdlab.errors import UserError

    if not ref.strip() or not Path(ref).is_dir():     # Path("") is the current folder
        if os.sep in ref or (os.altsep and os.altsep in ref):   # no run id holds one
            what = "is a file, not a folder" if Path(ref).exists() else "no such folder"
            raise UserError(f"{ref}: {what} (give a run id, a unique prefix or the "
                            "folder a run wrote, e.g. what `sgdlab train --out` made)")
        return ref, None
    rid, recorded = recorded_run(Path(ref))
    if rid is None:
        from sgdlab.store.folders import experiment_report_note

        raise UserError(experiment_report_note(Path(ref), compare=doing == "compared")
                        or f"{ref} is a folder but not a run's (no readable run.json or "
                        "results.json naming its run)")
    if recorded is None:
        return rid, None
    first = getattr(args, "store_from", None)     # the folder an earlier ref took it from
    if args.store is None:
        args.store, args.store_from = recorded, ref
    elif first is not None and Path(recorded).resolve() != Path(args.store).resolve():
        raise UserError(f"{ref} records its run in {recorded}, {first} in {args.store}: "
                        f"runs are {doing} within one store")
    elif Path(recorded).resolve() != Path(args.store).resolve():
        # named if the run is not in --store: "no run X in OTHER" alone hid where it is
        return rid, (ref, recorded)
    return rid, None


def _get_run(store, ref: str, elsewhere: tuple[str, str] | None) -> dict:
    """``store.get_run(ref)``; when it has no such run and ``ref`` came from a run folder whose
    run.json names another store than ``--store`` (``elsewhere``: the folder and that store,
    from :func:`_run_ref`), the error names that store too."""
    from sgdlab.errors import UserError

    try:
        return store.get_run(ref)
    except UserError as e:
        if elsewhere is None:
            raise
        folder, recorded = elsewhere
        raise UserError(f"{e}; {folder} records its run in the store {recorded} (leave out "
                        "--store to use it)") from None


def finished_since(run: dict, store) -> str | None:
    """The id of a finished run of the same sweep entry (run key) as ``run``, if any: a
    re-run sweep completed the entry with a new run, so ``run`` needs no continuing."""
    cfg = run.get("config") or {}
    if isinstance(cfg, dict) and cfg.get("run_key") and run.get("experiment"):
        done = store.done_run(cfg["run_key"], run["experiment"])
        return None if done is None else done["run_id"]
    return None


def _sweep_entry(run: dict) -> tuple[str, str] | None:
    """``(experiment, run key)`` of a run of a sweep, which its sweep reruns; None for a run
    of ``sgdlab train`` or ``sgdlab parle``, which is continued by itself."""
    from sgdlab.config.runner import run_folder

    cfg = run.get("config") or {}
    if (isinstance(cfg, dict) and cfg.get("run_key") and run.get("experiment")
            and run_folder(run) is None):
        return run["experiment"], cfg["run_key"]
    return None


def continue_hint(run: dict, store) -> str | None:
    """The command that continues a stopped run: ``sgdlab resume`` for a run of ``sgdlab
    train``; re-running its sweep for a run of an experiment, with the options of the
    ``sgdlab run`` that recorded it (None once a later run of its sweep entry finished:
    :func:`finished_since`)."""
    from sgdlab.config.runner import resume_command, run_folder
    from sgdlab.store.folders import is_replica_run, store_option

    if run_folder(run) is not None:
        return resume_command(run["id"], store.path)
    cfg = run.get("config") or {}
    ckpts = [a["path"] for a in run.get("artifacts", []) if a["kind"] == "checkpoints"]
    # (a sweep's replicas run is continued by its sweep, below)
    if is_replica_run(cfg) and _sweep_entry(run) is None and ckpts:
        mode = " --mode distributed" if cfg.get("mode") == "distributed" else ""
        n = (cfg.get("parle") or {}).get("replicas")
        return (f"sgdlab parle CONFIG{mode}{f' --replicas {n}' if n else ''} --out "
                f"{shlex.quote(str(Path(ckpts[-1]).parent))} --resume  (CONFIG: the replica "
                "config it ran with)")
    if isinstance(cfg, dict) and cfg.get("run_key") and run.get("experiment"):
        if finished_since(run, store) is not None:
            return None
        if cfg.get("command"):   # the sweep's own command line, as its interrupt gives it
            return (f"{cfg['command']} {store_option(store.path)}  (a sweep reruns what the "
                    "store lacks)")
        what = (f"--config {shlex.quote(cfg['source'])}" if cfg.get("source")
                else run["experiment"])
        return (f"sgdlab run {what} --scale {cfg.get('scale', 'cpu')} "
                f"{store_option(store.path)}  (or the same `sgdlab run` command that started "
                "it: a sweep reruns what the store lacks)")
    return None


def _checkpoint_file(run: dict, store_path: str | Path | None = None) -> Path | None:
    """The checkpoint a resume of ``run`` reads: its folder's checkpoints/last.pt for a run of
    ``sgdlab train``, master.pt for one of ``sgdlab parle``, ``checkpoint/last.pt`` in its run
    key's artifact folder beside the store at ``store_path`` for one of a sweep (of the
    ``replicas`` procedure: its distributed run's checkpoint set's master.pt there, which its
    sweep continues); None when neither is recorded (or no store is named)."""
    from sgdlab.config.runner import run_folder
    from sgdlab.store.folders import is_replica_run, sweep_replica_checkpoints, sweep_run_folder

    folder = run_folder(run)
    ckpts = [a["path"] for a in run.get("artifacts", []) if a["kind"] == "checkpoints"]
    if folder is not None:
        from sgdlab.train.checkpoint import checkpoint_path
        return checkpoint_path(folder / "checkpoints")
    if ckpts:
        from sgdlab.train.replicas import MASTER_CHECKPOINT
        return Path(ckpts[-1]) / MASTER_CHECKPOINT
    entry = _sweep_entry(run)
    if entry is not None and store_path is not None and is_replica_run(run.get("config")):
        from sgdlab.train.replicas import MASTER_CHECKPOINT
        return sweep_replica_checkpoints(store_path, entry[1]) / MASTER_CHECKPOINT
    if entry is not None and store_path is not None:
        from sgdlab.experiments.worker import CHECKPOINT_DIR
        from sgdlab.train.checkpoint import checkpoint_path
        return checkpoint_path(sweep_run_folder(store_path, entry[1]) / CHECKPOINT_DIR)
    return None


def checkpoint_step(run: dict, store_path: str | Path | None = None) -> int | None:
    """The step of the last checkpoint of a run of ``sgdlab train`` or ``sgdlab parle``
    (``run`` as :meth:`RunStore.get_run` gives it, with its artifacts), or of a sweep run (the
    ``train`` procedure's, or the ``replicas`` procedure's checkpoint set, at round · L, in
    its run key's artifact folder beside the store at ``store_path``): where its resume
    continues it. None when its folder holds no checkpoint
    or it cannot be read (``sgdlab resume`` names why); -1 for a run of an experiment without
    a checkpoint (its sweep reruns it from step 0)."""
    path = _checkpoint_file(run, store_path)
    cfg = run.get("config") or {}
    sweep_run = _sweep_entry(run) is not None
    if path is None:
        return -1 if isinstance(cfg, dict) and cfg.get("run_key") else None
    if not path.is_file():
        return -1 if sweep_run else None
    from sgdlab.train.checkpoint import load_checkpoint
    from sgdlab.train.replicas import MASTER_CHECKPOINT

    try:   # resume's checks (CRC-32, format); mapped, not read: the weights are not needed
        state = load_checkpoint(path, mmap=True)
        if path.name != MASTER_CHECKPOINT:
            return int(state["loop"]["step"])
        # of `sgdlab parle`: master.pt, whose round r ends at step r·L
        return int(state["round"]) * int(state["parle"]["L"])
    except Exception:  # noqa: BLE001 - a damaged checkpoint: resume says what is wrong
        return -1 if sweep_run else None     # (a sweep reruns the run from step 0, saying why)


def checkpoint_state(run: dict, step: int | None) -> str:
    """What continuing a stopped run finds, given its :func:`checkpoint_step`: ``"ok"``, its
    last checkpoint (at ``step``); ``"unreadable"``, a checkpoint file resume refuses to read;
    ``"none"``, no checkpoint (or a sweep run's that its sweep cannot use): it restarts from
    step 0."""
    if step is not None and step != -1:
        return "ok"
    path = _checkpoint_file(run)
    return "unreadable" if path is not None and path.exists() else "none"


def _resume_point(run: dict, step: int | None) -> str:
    """Where continuing a stopped run starts, in words."""
    if step == -1:
        return "its sweep reruns it from step 0"
    if step is not None and _sweep_entry(run) is not None:
        return f"its sweep resumes it from its last checkpoint, step {step}"
    if step is not None:
        return f"resume continues from its last checkpoint, step {step}"
    path = _checkpoint_file(run)
    if checkpoint_state(run, step) == "unreadable":   # resume refuses it, not to lose its steps
        return (f"its checkpoint {path} cannot be read: resume stops and says why; remove "
                "the file to restart the run from step 0")
    from sgdlab.train.replicas import MASTER_CHECKPOINT

    if path is not None and path.name == MASTER_CHECKPOINT:
        return ("no checkpoint yet: --resume finds nothing to continue; the same command "
                "without --resume restarts it from step 0")
    return "no checkpoint yet: resume restarts it from step 0"


def _stopped_note(run: dict) -> str:
    if run["status"] == "stale":
        return (f"process {run['pid']} on {run['host']} has never reported (no heartbeat "
                "recorded)" if run.get("heartbeat") is None else
                f"process {run['pid']} on {run['host']} last reported "
                f"{_ago(run['heartbeat'])} ago")
    return f"its process ({run['pid']} on {run['host']}) ended before the run did"


def _ago(t: float) -> str:
    import time
    s = max(0.0, time.time() - t)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def summary_steps(summary: dict):
    """The steps a run's ``summary`` says it took: its ``steps``; for a replica run (``sgdlab
    parle``, the ``replicas`` procedure) stored before its summary had them, its gradient
    evaluations per replica, one per inner step: rounds · L, the step of its last metrics."""
    if summary.get("steps") is not None:
        return summary["steps"]
    if "rounds" in summary and "grad_evals" in summary:
        return summary["grad_evals"]
    return None


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def _fmt_row(values) -> list[str]:
    """A table row's numbers in one precision: four significant digits, trailing zeros kept
    where some other number of the row needs that digit (2.310 beside 2.312, not 2.31) and
    dropped where none does (0.05 beside 0.1). Zeros, non-finite floats, ints and None as
    :func:`_fmt` writes them."""
    def zeros(t: str) -> int:       # trailing zeros of the mantissa's fraction
        frac = t.partition("e")[0].partition(".")[2]
        return len(frac) - len(frac.rstrip("0"))

    full = {i: f"{v:#.4g}" for i, v in enumerate(values)
            if isinstance(v, float) and math.isfinite(v) and v != 0}
    drop = min(map(zeros, full.values()), default=0)
    out = []
    for i, v in enumerate(values):
        if i not in full:
            out.append(_fmt(v))
            continue
        mant, e, exp = full[i].partition("e")
        mant = mant[:len(mant) - drop] if drop else mant
        out.append(mant.rstrip(".") + e + exp)
    return out


# what `runs list` shows of each run's evaluation
_TEST_COLUMNS = ("test_acc", "test_loss", "test_perplexity")


def _experiment_hint(store, experiment: str | None) -> str:
    """`` (did you mean X?)`` for a mistyped --experiment: the closest experiment the store
    holds runs of, or that runs of that name belong to no experiment (``sgdlab train
    digits-mlp``'s); "" when none is close, no --experiment was given or the store holds runs
    of it (another filter left them out)."""
    if not experiment:
        return ""
    from sgdlab.errors import did_you_mean

    runs = store.list_runs()
    held = {r["experiment"] for r in runs if r["experiment"]}
    if experiment in held:
        return ""
    # `sgdlab train digits-mlp` records a run named digits-mlp, of no experiment
    named = sum(1 for r in runs if not r["experiment"] and r["name"] == experiment)
    if named:
        runs_are = "run is" if named == 1 else "runs are"
        return (f" ({named} {runs_are} named {experiment!r}, of no experiment: `sgdlab train` "
                "and the commands other than `sgdlab run` record none; `sgdlab runs list` "
                "without --experiment shows them)")
    return did_you_mean(experiment, held)


def _list(args) -> int:
    from sgdlab.store.runstore import run_scale

    store = _open(args)
    runs = _selected_runs(args, store)
    # which readings' sweeps take each run: one stored run serves every reading it is alike in
    readings, every = _listed_readings(args.experiment, runs)
    # how far each stopped run got: its last checkpoint is where a resume continues
    stopped = {r["id"]: store.get_run(r["id"]) for r in runs
               if r["status"] in ("interrupted", "stale")}
    ckpt = {rid: checkpoint_step(run, store.path) for rid, run in stopped.items()}
    if args.json:
        keys = ("id", "name", "experiment", "status", "recorded_status", "host", "pid",
                "created", "summary")
        print(dumps([{**{k: r[k] for k in keys},
                      "scale": run_scale(r),
                      "checkpoint_step": ckpt[r["id"]] if ckpt.get(r["id"], -1) != -1 else None,
                      "checkpoint": (checkpoint_state(stopped[r["id"]], ckpt[r["id"]])
                                     if r["id"] in stopped else None),
                      **({"readings": readings[r["id"]]} if readings else {})}
                     for r in runs], indent=1, nonfinite="string"))
        return 0
    if not runs:
        wanted = _filters(args)
        print(f"no runs {'with ' + ' and '.join(wanted) + ' ' if wanted else ''}in "
              f"{store.path}{_experiment_hint(store, args.experiment)}")
        return 0
    # the test columns: the summary's value, else (a run not finished) its last evaluation,
    # at its step; token data's runs show their test perplexity too
    cells = {r["id"]: {m: _fmt(r["summary"].get(m)) for m in _TEST_COLUMNS} for r in runs}
    for r in runs:
        for m in _TEST_COLUMNS:
            last = (None if r["summary"].get(m) is not None or r["status"] == "finished"
                    else store.last_metric(r["id"], m))
            if last is not None:
                cells[r["id"]][m] = f"{_fmt(last[1])} @{last[0]}"
    ppl = any(c["test_perplexity"] for c in cells.values())
    shown = _TEST_COLUMNS if ppl else _TEST_COLUMNS[:2]
    # an experiment's runs at two scales have the same names: the scale tells them apart
    scales = [run_scale(r) for r in runs]
    scaled = any(scales)
    # runs of two readings have the same names too: only a listing that holds runs of a
    # reading off its default needs the column
    read = _readings_cells(readings, every)
    rows = [("RUN_ID", "NAME", "EXPERIMENT", *(("SCALE",) if scaled else ()),
             *(("READINGS",) if read else ()), "STATUS",
             "STEPS", "TEST_ACC", "TEST_LOSS", *(("TEST_PPL",) if ppl else ()), "CREATED")]
    for r, scale in zip(runs, scales):
        s = r["summary"]
        steps = _fmt(summary_steps(s))
        if not steps and ckpt.get(r["id"]) not in (None, -1):
            steps = f"{ckpt[r['id']]} (ckpt)"     # a stopped run: its last checkpoint
        rows.append((r["id"], r["name"] or "", r["experiment"] or "",
                     *((str(scale or ""),) if scaled else ()),
                     *((read[r["id"]],) if read else ()), r["status"],
                     steps, *(cells[r["id"]][m] for m in shown),
                     r["created"][:19].replace("T", " ")))
    print("\n".join(aligned(rows)))
    first = rows[0].index("TEST_ACC")
    if any("@" in c for row in rows[1:] for c in row[first:first + len(shown)]):
        print("(VALUE @STEP: the last evaluation of a run that has not finished)")
    narrowing = _narrowing_note(args, runs, scales, readings)
    if narrowing:
        print(narrowing)
    # the command that continues each and where it starts: one per sweep entry, that of its
    # latest stopped run (runs come oldest first). Either invocation that stopped an entry
    # reruns it, and once one has, the other's run needs nothing (finished_since)
    latest: dict = {}
    covered = redone = 0
    for rid, run in stopped.items():
        hint = continue_hint(run, store)
        if hint:
            covered += 1
            latest[_sweep_entry(run) or rid] = hint, rid, _resume_point(run, ckpt[rid])
        elif finished_since(run, store) is not None:
            redone += 1
    # one sweep command continues all its stopped entries, each from its own point: the
    # first entry's alone would misstate the others'
    hints: dict[str, dict[str, str]] = {}
    for hint, rid, where in latest.values():
        hints.setdefault(hint, {})[rid] = where
    if hints:
        print(f"\n{covered} run(s) stopped before they ended; continue with:")
        for h, points in hints.items():
            print(f"  {h}")
            if len(set(points.values())) == 1:
                print(f"    ({next(iter(points.values()))})")
                continue
            for rid, where in points.items():
                print(f"    (run {rid}: {where})")
    if redone:
        print(f"{'' if hints else chr(10)}{redone} other stopped run(s) need nothing: a later "
              "run of the same sweep entry finished")
    return 0


def _narrowing_note(args, runs: list[dict], scales: list[str | None],
                    readings: dict[str, list[str]]) -> str | None:
    """A footnote for a listing that holds runs of one name at several scales or readings
    (the SCALE and READINGS columns alone tell them apart): the options that list one's,
    ``--scale`` with a listed scale, ``--reading`` with a listed KEY=CHOICE; None for none."""
    from sgdlab.experiments.readings import DEFAULT

    by_name: dict[tuple, list[tuple[str | None, tuple[str, ...]]]] = {}
    for r, scale in zip(runs, scales):
        by_name.setdefault((r["experiment"], r["name"]), []).append(
            (scale, tuple(readings.get(r["id"], ()))))
    mixed = [kinds for kinds in by_name.values() if len(set(kinds)) > 1]
    differ = {}
    if not args.scale and any(len({s for s, _ in kinds}) > 1 for kinds in mixed):
        differ["scales"] = next(f"--scale {s}" for kinds in mixed for s, _ in kinds if s)
    choices = [n for kinds in mixed if len({names for _, names in kinds}) > 1
               for _, names in kinds for n in names if n != DEFAULT]
    if not args.reading and choices:
        differ["readings"] = f"--reading {choices[0]}"
    if not differ:
        return None
    return (f"(runs of one name at several {' or '.join(differ)}: "
            f"{' or '.join(f'`{o}`' for o in differ.values())} lists those of one)")


def _listed_readings(experiment: str | None, runs: list[dict]
                     ) -> tuple[dict[str, list[str]], int]:
    """Run id -> the readings of catalogue entry ``experiment`` whose sweeps take it
    (:func:`~sgdlab.experiments.readings.runs_readings`), and how many readings it has; ({}, 0)
    without an experiment, or for one with no readings."""
    if not experiment or not runs:
        return {}, 0
    from sgdlab.experiments.readings import entry_readings, reading_names, runs_readings

    of = runs_readings(experiment, runs)
    return (of, len(reading_names(entry_readings(experiment)))) if of else ({}, 0)


def _run_readings(run: dict) -> list[str] | None:
    """The readings whose sweeps take a sweep run of an entry with readings (none: [], a run
    key no sweep of its scale takes); None for any other run."""
    cfg = run.get("config")
    if not (run.get("experiment") and isinstance(cfg, dict) and cfg.get("run_key")):
        return None
    from sgdlab.experiments.readings import runs_readings

    return runs_readings(run["experiment"], [run]).get(run["id"])


def _readings_line(run: dict) -> str | None:
    """``readings: ...``: those whose sweeps take a sweep run of an entry with readings."""
    names = _run_readings(run)
    if names is None:
        return None
    cfg = run["config"]
    if not names:
        return (f"readings: none (no sweep of {run['experiment']} at scale {cfg.get('scale')} "
                "takes its run key: another version of the entry, or an edited copy, ran it)")
    return (f"readings: {', '.join(names)} (the sweeps that take this run, at scale "
            f"{cfg.get('scale')})")


def _show(args) -> int:
    from sgdlab.config.runner import FailedRunAdvice
    from sgdlab.store.runstore import run_scale

    ref, elsewhere = _run_ref(args, args.run_id, "shown")
    store = _open(args)
    run = _get_run(store, ref, elsewhere)
    metrics = store.metrics(run["id"])
    if args.json:
        # the names of the text output's readings: line, where it has one
        readings = _run_readings(run)
        print(dumps({**run, **({"readings": readings} if readings is not None else {}),
                     "metrics": {k: v for k, v in metrics.items()}}, indent=1,
                    default=str, nonfinite="string"))
        return 0
    scale = run_scale(run)
    print("  ".join([f"run {run['id']}"] + [f"{k} {run[k]}" for k in ("name", "experiment")
                                             if run[k]]
                    + ([f"scale {scale}"] if scale else [])))
    readings = _readings_line(run)
    if readings:
        print(readings)
    print(f"status: {run['status']}" + (f" ({run['message']})" if run["message"] else ""))
    if run["status"] in ("interrupted", "stale") and run["recorded_status"] == "running":
        print(f"  recorded as running, but {_stopped_note(run)}")
    if run["status"] in ("interrupted", "stale", "failed"):
        hint, since = continue_hint(run, store), finished_since(run, store)
        if hint:
            step = checkpoint_step(run, store.path)
            print(f"  continue it with: {hint}")
            print(f"  ({_resume_point(run, step)})")
            # a failed run of `sgdlab train`: a resume reruns its stored config, which helps
            # once what stopped it outside its config is fixed; a corrected config is a new run
            advice = FailedRunAdvice.of(run, store.path,
                                        checkpoint=checkpoint_state(run, step) == "ok")
            if advice is not None:
                print(f"  ({advice.beside_resume()})")
        elif since is not None:
            print(f"  nothing to continue: run {since} of the same sweep entry finished since")
    print(f"created {run['created']}  updated {run['updated']}")
    if run["summary"]:
        print("summary: " + "  ".join(f"{k} {_fmt(v)}" for k, v in run["summary"].items()))
    env = run["env"]
    if env:
        print("environment: " + ", ".join(f"{k} {env[k]}" for k in
                                          ("python", "torch", "numpy", "device", "torch_threads",
                                           "git_commit", "hostname", "seed") if k in env))
    warm = ((run["config"] or {}).get("model") or {}).get("warm_start")
    if isinstance(warm, dict):
        source = f"run {warm['run_id']}" if warm.get("run_id") else "checkpoint"
        print(f"warm start: from {source} at step {warm.get('step')} ({warm.get('checkpoint')}; "
              f"weights sha256 {str(warm.get('sha256'))[:16]}...; optimizer started afresh)")
    data = (run["config"] or {}).get("data")
    if isinstance(data, dict) and data.get("file"):
        # the path alone does not say which bytes: another file may stand there since
        print(f"data file: {data['file']} (" + (f"sha256 {data['sha256']})" if data.get("sha256")
                                               else "its content not recorded)"))
    if metrics:
        print("metrics (points, last step: value):")
        width = max(24, *(len(name) for name in metrics))
        for name, pts in metrics.items():
            print(f"  {name:<{width}} {len(pts):>6}  {pts[-1][0]}: {_fmt(pts[-1][1])}")
    if run["artifacts"]:
        print("files:")
        for a in run["artifacts"]:
            print(f"  {a['kind']:<11} {a['path']}")
    from sgdlab.config import dump_yaml
    print("config:")
    print("  " + dump_yaml(run["config"]).rstrip().replace("\n", "\n  "))
    return 0


def _compare(args) -> int:
    from sgdlab.errors import UserError, did_you_mean
    from sgdlab.report.rates import last_step, lr_over_steps
    from sgdlab.store.runstore import summary_numbers

    plot = _plot_path(args.plot) if args.plot else None
    wanted = [_run_ref(args, r)[0] for r in args.run_ids]
    store = _open(args)
    ids = list(dict.fromkeys(store.resolve(r) for r in wanted))
    if len(ids) < 2:
        if len(args.run_ids) == 1:
            raise UserError(f"compare needs at least two runs, got one ({ids[0]})")
        raise UserError(f"compare needs at least two different runs; "
                        f"{', '.join(args.run_ids)} all name run {ids[0]}")
    runs = [store.get_run(r) for r in ids]
    histories = [store.metrics(r) for r in ids]
    recorded = [set(h) for h in histories]
    # the final scalars a run keeps in its summary alone (a sweep's final Hessian, an escape
    # rate) are results as much as its curves' last points
    finals = [summary_numbers(r["summary"] or {}) for r in runs]
    left_out: dict[str, list[str]] = {}      # groups beyond the default rows' MAX_PANELS
    if args.metrics:
        missing = [m for m in args.metrics
                   if not any(m in rec or m in f for rec, f in zip(recorded, finals))]
        if missing:
            known = sorted(set().union(*recorded, *finals))
            hint = did_you_mean(missing[0], known) if len(missing) == 1 else ""
            raise UserError(f"no run recorded {', '.join(missing)}{hint}; recorded: "
                            f"{', '.join(known)}")
        asked = list(dict.fromkeys(args.metrics))
        metrics = [m for m in asked if any(m in rec for rec in recorded)]
        summary_only = [m for m in asked if m not in metrics]
    else:
        from sgdlab.report.figures.training import (MAX_PANELS, groups_left_out,
                                                    headline_series, recorded_groups)

        common = set.intersection(*recorded)
        metrics = [m for m in ("train_loss", "test_loss", "test_acc", "test_perplexity")
                   if m in common]
        groups = recorded_groups({m: [(0, 0.0)] for m in common if m != "lr"})
        # the rows and the plot of the first MAX_PANELS groups; the rest named after the table
        left_out = {g: groups.pop(g) for g in list(groups)[MAX_PANELS:]}
        metrics += [m for g, names in groups.items() for m in headline_series(g, names)]
        summary_only = sorted(set.intersection(*map(set, finals)) - set(metrics))
    from sgdlab.report.settings import differing_keys, shown

    flats, note = compared_configs(runs)
    differ = differing_keys(flats)
    cut = {k: shown([f.get(k, "—") for f in flats]) for k in differ}
    # a curve is named by its run and its name where the names tell the runs apart (a sweep's
    # label|seed), else by the config values that set it apart (runs of one config file
    # share their name); what is measured is named last, and a sweep's bookkeeping (its
    # command line, the key and label made of its parameters) after all the rest
    names = [r["name"] for r in runs]
    by_name = all(names) and len(set(names)) == len(names)
    # what each run is (its sections' names) first, then the sections in the order a
    # comparison of training runs is usually about (the data file's SHA-256 only restates
    # its path)
    rank = {s: i for i, s in enumerate(("optimizer", "schedule", "model", "loss", "train",
                                        "data"))}
    named = sorted(differ, key=lambda k: (k in ("command", "run_key", "label", "data.sha256"),
                                          k.startswith("measure"),
                                          k.count(".") != 1 or not k.endswith(".name"),
                                          rank.get(k.split(".")[0], len(rank))))
    labels = []
    for i, (r, f) in enumerate(zip(runs, flats)):
        own = [f"{k}={cut[k][i]}" for k in named if k in f]   # a key this run lacks: not "—"
        labels.append(r["id"] + (f" ({r['name']})" if by_name else
                                 f" ({', '.join(own[:3])}{', …' if len(own) > 3 else ''})"
                                 if own else f" ({r['name']})" if r["name"] else ""))
    rows = [["", *(r["id"] for r in runs)], ["name", *(r["name"] or "" for r in runs)],
            ["status", *(r["status"] for r in runs)]]
    # the config's own name is the run's name: one "name" row, not two
    differing = [k for k in differ if not (k == "name" and all(
        f.get("name") == (r["name"] or "") for f, r in zip(flats, runs)))]
    rows += [[k, *cut[k]] for k in differing]
    def last(h: dict, m: str, run: dict) -> tuple[Any, str]:
        # a run that has not ended has no final value yet: its last one, at its step (as
        # `runs list` shows it); (the value, what follows it)
        if not h.get(m):
            return None, "—"
        step, value = h[m][-1]
        return value, "" if run["status"] in ("finished", "diverged") else f" @{step}"

    def row(cells: list[tuple[Any, str]]) -> list[str]:
        # the run's numbers of one row in one precision (2.310 beside 2.312), a missing one "—"
        return [t + after for t, (_, after) in zip(_fmt_row([v for v, _ in cells]), cells)]

    for m in asked if args.metrics else [*metrics, *summary_only]:
        if m == "lr":    # its last sample need not be the last step's lr: see lr_over_steps
            held = [lr_over_steps(h.get("lr", []), r, last_step=last_step(h))
                    for h, r in zip(histories, runs)]
            rows.append(["last-step lr", *row([(v[0], "") if v else (None, "—")
                                               for v in held])])
            rows.append(["mean lr", *row([(v[1], "") if v else (None, "—") for v in held])])
            continue
        rows.append([f"final {m}", *row([
            last(h, m, r) if m in metrics else ((f[m], "") if m in f else (None, "—"))
            for h, f, r in zip(histories, finals, runs)])])
    if note:
        print(note)
    if not differ:
        print("(the training settings are identical)" if note == TRAINING_NOTE
              else "(the configs are identical)")
    print("\n".join(aligned(rows)))
    if any(r["status"] not in ("finished", "diverged") for r in runs) and len(rows) > 3:
        print("(VALUE @STEP: the last value of a run that has not finished)")
    if left_out:
        g, names = next(iter(left_out.items()))
        words = groups_left_out(list(left_out), recorded_by="every run",
                                out_of=f"the rows and the plot (at most {MAX_PANELS} by default)")
        print(f"({words}; --metric names any series, e.g. --metric "
              f"{headline_series(g, names)[0]})")
    if plot is not None:
        from sgdlab.report.figures import save_and_close
        from sgdlab.report.figures.training import compare_runs_figure

        if not metrics and args.metrics:
            are = "is a final value" if len(summary_only) == 1 else "are final values"
            raise UserError(f"nothing to plot: {', '.join(summary_only)} {are} of the runs' "
                            "summaries, not a recorded series")
        if not metrics:
            raise UserError("no series recorded by every run to plot; name them with --metric")
        # each run's record: its steps and kind say which lr its steps took, as in the table
        fig = compare_runs_figure(dict(zip(labels, histories)), metrics,
                                  runs=dict(zip(labels, runs)))
        save_and_close(fig, plot, dpi=110)
        print(f"wrote {plot}")
    return 0


TRAINING_NOTE = ("(compared on their training settings, named as in a run config of `sgdlab "
                 "train`; `runs show` has the rest of each config)")


def compared_configs(runs: list[dict]) -> tuple[list[dict[str, str]], str | None]:
    """The runs' configs as ``runs compare`` and ``runs export --summary`` set them side by
    side, flattened (:func:`~sgdlab.report.settings.flat_config`), and a note on what they
    are, or None. Runs of ``sgdlab train`` beside runs of a sweep's ``train`` procedure are
    compared on their training settings alone (:func:`sgdlab.config.run.training_settings`),
    which both record in the names of a run config, so that only a setting that differs
    makes a row (their other keys are one kind's only: a sweep's run key and final
    measurements, a run config's device and store). A sweep run stored before sweeps
    recorded them, or of another procedure, keeps its params: every key is then one side's
    only, which the note says. A sweep run's recorded settings and grid point repeat its
    params, and are left out of a comparison by its config."""
    from sgdlab.report.settings import flat_config

    swept = [_sweep_entry(r) is not None for r in runs]
    if any(swept) and not all(swept):
        from sgdlab.config.run import stored_training_settings

        settings = [(r["config"] or {}).get("training") if s
                    else stored_training_settings(r["config"]) for r, s in zip(runs, swept)]
        if all(isinstance(t, dict) for t in settings):
            return [flat_config(_instrument_defaults(t)) for t in settings], TRAINING_NOTE
    flats = [flat_config({k: v for k, v in (r["config"] or {}).items()
                          if k not in ("training", "grid")}
                         if s and isinstance(r["config"], dict)
                         else _instrument_defaults(r["config"] or {}))
             for r, s in zip(runs, swept)]
    if any(swept) and not all(swept):
        # every key is then one side's only: the table says "—" for each, with no hint why
        return flats, ("(a sweep run's config holds its procedure's params.*, a run of "
                       "`sgdlab train`'s a run config: their keys do not line up, their "
                       "final values do)")
    return flats, None


def _instrument_defaults(cfg: object) -> object:
    """A run config (or training settings) with its ``measure`` items' instrument defaults
    filled in (:func:`~sgdlab.config.run.with_instrument_defaults`): ``train --print-config``
    writes them out, so a run of the printed config stores them and the run of the config it
    printed does not, with the same instruments."""
    if not (isinstance(cfg, dict) and isinstance(cfg.get("measure"), list) and cfg["measure"]):
        return cfg
    from sgdlab.config.run import with_instrument_defaults

    return with_instrument_defaults(cfg)


def _plot_path(given: str) -> Path:
    """Where ``--plot`` writes, checked before any work: a suffix matplotlib writes (none:
    ``.png`` added, as matplotlib itself would, so the path printed is the file's) in a
    folder that exists or can be made."""
    from matplotlib.backend_bases import FigureCanvasBase

    from sgdlab.errors import UserError, make_output_dir

    path = Path(given)
    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        path = path.with_name(path.name + ".png")
    elif suffix not in kinds:
        raise UserError(f"--plot {given}: matplotlib cannot write .{suffix} files; use "
                        f"{', '.join('.' + k for k in sorted(kinds))}")
    make_output_dir(path.parent, "--plot")
    return path


def _export(args) -> int:
    from sgdlab.errors import UserError, make_output_dir

    if args.out_path is not None:
        if args.path is not None and args.path != args.out_path:
            raise UserError(f"give the file to write once: PATH {args.path} or --out "
                            f"{args.out_path}")
        args.path = args.out_path
    if args.runs:   # run folders stand for their runs (and, without --store, their store)
        args.runs = [_run_ref(args, r, "exported")[0] for r in args.runs]
    store = _open(args)
    filters = _filters(args)
    if args.runs or filters:
        # a run named twice (by its id and a prefix, say) is written once; one not of the
        # selection is not written, and not said: the selection narrows --run
        args.runs, _ = _selected_ids(args, store, args.runs or [])
    if filters and not args.runs:
        raise UserError(f"no runs with {' and '.join(filters)} to export in {store.path}"
                        f"{_experiment_hint(store, args.experiment)}")
    if args.summary and (args.format == "json" or (
            args.format is None and args.path and Path(args.path).suffix.lower() == ".json")):
        raise UserError("--summary writes a CSV table; the JSON export holds each run's "
                        "config and summary already")
    for given, what in ((args.summary, "--summary"), (args.format, f"--format {args.format}")):
        if given and args.path is None:    # else it would be taken and do nothing
            raise UserError(f"{what} says how PATH is written; give PATH, the file to write")
    if args.tensorboard:
        from sgdlab.config.run import training_hparams
        from sgdlab.train.tensorboard import export_runs

        make_output_dir(args.tensorboard, "--tensorboard")
        folders = export_runs(store, args.tensorboard, args.runs, hparams=training_hparams)
        print(f"wrote {len(folders)} runs to {args.tensorboard} "
              f"(tensorboard --logdir {args.tensorboard})")
    if args.path is None:
        if not args.tensorboard:
            raise UserError("give PATH (a .csv or .json file) or --tensorboard DIR")
        return 0
    suffix = Path(args.path).suffix.lower()
    if args.format is None and suffix not in ("", ".csv", ".json"):
        # x.xlsx or x.parquet received CSV text under a name that promised another format
        store.check_export_target(Path(args.path))   # the store itself is named as such
        raise UserError(f"{args.path}: no export format for the suffix {suffix!r}; name a "
                        ".csv or .json file, or say which with --format csv|json")
    fmt = args.format or ("json" if suffix == ".json" else "csv")
    make_output_dir(Path(args.path).parent, "PATH's folder")
    if args.summary:
        path = _export_summary(store, Path(args.path), args.runs)
        print(f"wrote {path} (csv, one row per run)")
        return 0
    path = store.export(args.path, run_ids=args.runs, fmt=fmt)
    print(f"wrote {path} ({fmt})")
    return 0


def _export_summary(store, path: Path, run_ids: list[str] | None) -> Path:
    """The runs as one CSV table, a row each: id, name, experiment, status, created, the
    config keys that differ between them (``config.KEY``, flattened as ``runs compare``
    shows them; every key of a lone run) and the numbers of its summary (its final values:
    a sweep's final measurements, a training run's last evaluation), a non-finite one as
    ``nan``, ``inf`` or ``-inf``."""
    import csv

    from sgdlab.atomic import replaced_whole
    from sgdlab.report.settings import differing_keys, key_order
    from sgdlab.store.runstore import summary_numbers

    store.check_export_target(path)
    runs = [store.get_run(r) for r in run_ids] if run_ids is not None else store.list_runs()
    flats, _ = compared_configs(runs)
    keys = (differing_keys(flats) if len(runs) > 1 else
            sorted(flats[0], key=key_order) if flats else [])
    finals = [summary_numbers(r["summary"] or {}) for r in runs]
    head = ["run_id", "run_name", "experiment", "status", "created"]
    names = sorted(set().union(*finals) - set(head))
    with replaced_whole(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*head, *(f"config.{k}" for k in keys), *names])
        for r, flat, final in zip(runs, flats, finals):
            w.writerow([r["id"], r["name"] or "", r["experiment"] or "", r["status"],
                        r["created"], *(flat.get(k, "") for k in keys),
                        *(repr(float(final[n])) if isinstance(final.get(n), float)
                          else final.get(n, "") for n in names)])
    return path


def _delete(args) -> int:
    from sgdlab.errors import UserError, human_size
    from sgdlab.store.deletion import delete_orphans, delete_planned, find_orphans, plan_deletion
    from sgdlab.store.folders import store_option

    selected = bool(args.run_ids or _filters(args))
    if not (selected or args.orphans):
        raise UserError("name the runs to delete: RUN ids (unique prefixes, run folders), "
                        "--experiment NAME or --status STATUS (`sgdlab runs list` shows them); "
                        "or --orphans for the store's folders that no run names")
    wanted = [_run_ref(args, r, "deleted")[0] for r in args.run_ids]
    store = _open(args, readonly=args.dry_run)
    plan = None
    if selected:
        ids, left = _selected_ids(args, store, wanted)
        filters = _filters(args)
        if left:
            print(f"left out (not of {' and '.join(filters)}): {', '.join(left)}")
        if not ids:
            print(f"no runs {'with ' + ' and '.join(filters) + ' ' if filters else ''}to "
                  f"delete in {store.path}{_experiment_hint(store, args.experiment)}")
            if not args.orphans:
                return 0
        else:
            plan = plan_deletion(store, ids)
            chosen = _readings(args)
            cells, shared = _plan_readings(args.experiment, chosen, [r.run for r in plan.runs])
            _print_plan(plan, force=args.force, cells=cells, shared=shared,
                        rerun_options="".join(f" --reading {k}={c}" for k, c in chosen.items()))
    # folders an interrupted delete left: listed with --orphans, else pointed to
    orphans = find_orphans(store)
    if args.orphans:
        _print_orphans(store, orphans)
    else:
        if orphans.folders:
            k = len(orphans.folders)
            print(f"note: {k} folder{'s' if k != 1 else ''} beside the store that no run "
                  f"names ({human_size(orphans.size)}, left by an interrupted delete): "
                  f"`sgdlab runs delete --orphans {store_option(store.path)}` removes them")
        orphans.folders = []            # removed only when asked for
    if plan is None and not orphans.folders:
        return 0
    if plan is not None and plan.live and not args.force:
        why = (f"{len(plan.live)} of them {'is' if len(plan.live) == 1 else 'are'} held by a "
               "live process (above): stop it first, leave it out (a RUN list or --status), or "
               "--force")
        if args.dry_run:
            print(f"(dry run: nothing deleted; the delete would be refused: {why})")
            return 0
        raise UserError(f"nothing deleted: {why}")
    if args.dry_run:
        print("(dry run: nothing deleted)")
        return 0
    n, k = len(plan.runs) if plan is not None else 0, len(orphans.folders)
    size = human_size((plan.size if plan is not None else 0) + orphans.size)
    folders = f"{k} folder{'s' if k != 1 else ''} that no run names"
    question = (f"Delete {n} run{'s' if n != 1 else ''} and {size} of files"
                f"{f' ({folders} among them)' if k else ''}? [y/N] " if n else
                f"Remove {folders} ({size})? [y/N] ")
    if not args.yes and not _confirm(question):
        print("nothing deleted")
        return 1
    failed = []
    if plan is not None:
        result = delete_planned(store, plan, force=args.force)
        _print_deleted(store, result)
        failed += result.failed
    if orphans.folders:
        result = delete_orphans(store, orphans)
        print(f"removed {len(result.removed)} folder{'s' if len(result.removed) != 1 else ''} "
              f"that no run names, {human_size(result.freed)}")
        for folder, why in result.kept:
            print(f"kept {folder}: {why}")
        for folder, why in result.failed:
            print(f"could not remove {folder} ({why}): remove it by hand")
        failed += result.failed
    return 1 if failed else 0


def _print_deleted(store, result) -> None:
    """What :func:`~sgdlab.store.deletion.delete_planned` did: the rows and folders gone, the
    store file compacted, the folders kept or that could not be removed."""
    from sgdlab.errors import human_size

    rows = result.rows
    print(f"deleted {rows['runs']} run{'s' if rows['runs'] != 1 else ''} ({rows['metrics']} "
          f"metric rows) from {store.path}; removed {len(result.removed)} folder"
          f"{'s' if len(result.removed) != 1 else ''}, {human_size(result.freed)}")
    if rows["runs"]:
        # VACUUM holds the write lock while it rewrites the file (~10 ms per MB): not under a
        # live run's writes, which would wait on it
        live = store.live_runs([r["id"] for r in store.list_runs()])
        sizes = None if live else store.compact()
        if sizes is not None:
            print(f"store file {human_size(sizes[0])} -> {human_size(sizes[1])}")
        else:
            print("the store file keeps its size for now (a live process writes to it): its "
                  "freed pages take later rows first, and the next delete compacts it")
    for folder, why in result.kept:
        print(f"kept {folder}: {why}")
    for folder, why in result.failed:
        print(f"could not remove {folder} ({why}); its runs' rows are deleted: remove it by "
              "hand")


def _print_orphans(store, orphans) -> None:
    """The store's folders that no run names (``--orphans``), a line each with its size."""
    from sgdlab.errors import human_size

    k = len(orphans.folders)
    where = Path(store.path).parent
    if k:
        print(f"{k} folder{'s' if k != 1 else ''} in {where} that no run of {store.path} "
              f"names, {human_size(orphans.size)} of files:")
        for folder, size in orphans.folders:
            print(f"  removes {folder} ({human_size(size)})")
    else:
        print(f"no folders in {where} that no run of {store.path} names")
    if orphans.unscanned:
        print(f"note: {orphans.unscanned}")


def _plan_readings(experiment: str | None, chosen: dict[str, str], runs: list[dict]
                   ) -> tuple[dict[str, str], list[str]]:
    """The READINGS cells of the runs a delete removes (run id -> cell; {} where `runs list`
    with the same selection would show no column, unless --reading ``chosen`` them), and the
    ids of those that a sweep under a reading other than the one chosen takes too."""
    readings, every = _listed_readings(experiment, runs)
    cells = _readings_cells(readings, every, chosen=bool(chosen))
    if not chosen:
        return cells, []
    from sgdlab.experiments.readings import entry_readings, reading_name

    own = reading_name(entry_readings(experiment), chosen)
    return cells, [rid for rid, names in readings.items() if set(names) - {own}]


def _readings_cells(readings: dict[str, list[str]], every: int, *,
                    chosen: bool = False) -> dict[str, str]:
    """Run id -> its READINGS cell (:func:`~sgdlab.experiments.readings.readings_text`) for
    the runs' ``readings`` (:func:`_listed_readings`); {} where no run is of a reading off its
    default and none was ``chosen`` by --reading: the runs' names then tell them apart."""
    from sgdlab.experiments.readings import DEFAULT, readings_text

    if not readings or not (chosen or any(DEFAULT not in names
                                          for names in readings.values() if names)):
        return {}
    return {rid: readings_text(names, every) for rid, names in readings.items()}


def _print_plan(plan, *, force: bool, cells: dict[str, str], shared: list[str],
                rerun_options: str) -> None:
    """The runs a delete removes, a line each with its size on disk (and its READINGS cell,
    where ``cells`` has them: :func:`_plan_readings`), then under it the folders that go, the
    files that stay and why, the warnings for the runs that stay, and a note on the ``shared``
    runs that other readings' sweeps take too; ``rerun_options`` (the --reading options the
    delete chose by) go into the command that runs them again."""
    from sgdlab.errors import human_size

    n = len(plan.runs)
    print(f"{n} run{'s' if n != 1 else ''} to delete from {plan.store}, "
          f"{human_size(plan.size)} of files:")
    rows = [("RUN_ID", "NAME", "EXPERIMENT", *(("READINGS",) if cells else ()), "STATUS",
             "SIZE")]
    rows += [(r.run["id"], r.run["name"] or "", r.run["experiment"] or "",
              *((cells[r.run["id"]],) if cells else ()), r.run["status"], human_size(r.size))
             for r in plan.runs]
    for i, line in enumerate(aligned(rows, indent="  ")):
        print(line)
        if i == 0:
            continue
        r = plan.runs[i - 1]
        notes = [f"removes {f}" for f in r.folders]
        notes += [f"keeps {f}: its run key's folder, still used by {', '.join(users)}"
                  for f, users in r.shared]
        notes += [f"keeps {p}: outside the store's folders (only its record goes)"
                  for p in r.outside]
        if r.live is not None:
            notes.append(f"{'deleted all the same (--force)' if force else 'refused'}: it "
                         f"{r.live}")
        for note in notes:
            print(f"      {note}")
    for run, source in plan.dependants:
        named = f" ({run['name']})" if run["name"] else ""
        print(f"warning: run {run['id']}{named} stays; it was warm-started from {source}, "
              "deleted here: it keeps working from its own checkpoint, but a restart from "
              "step 0 (of a run stopped before its first checkpoint) would need that source")
    if shared:
        k = len(shared)
        print(f"note: {k} of {'these runs are' if k != 1 else 'these runs is'} also of the "
              f"sweep of another reading (READINGS), as one stored run serves every reading "
              f"it is alike in: {', '.join(shared)} {'go' if k != 1 else 'goes'} from "
              f"{'their' if k != 1 else 'its'} sweeps too")
    if plan.rerun:
        k = len(plan.rerun)
        print(f"note: {k} finished or diverged sweep run{'s' if k != 1 else ''} "
              f"({', '.join(plan.rerun)}): `sgdlab run` of {'their' if k != 1 else 'its'} "
              f"experiment{f' with{rerun_options}' if rerun_options else ''} runs "
              f"{'them' if k != 1 else 'it'} again (it runs what the store lacks)")


def _confirm(prompt: str) -> bool:
    """Whether the user answers yes to ``prompt`` on stdin (no answer, a closed stdin: no)."""
    import sys

    try:
        answer = input(prompt)
    except EOFError:
        print()
        return False
    if not sys.stdin.isatty():   # a piped answer is not echoed: end the prompt's line
        print()
    return answer.strip().lower() in ("y", "yes")


def _resume(args) -> int:
    from sgdlab.config.runner import RESUMABLE, resume_run, run_folder
    from sgdlab.errors import UserError
    from .train import announce, print_outcome
    ref, elsewhere = _run_ref(args, args.run_id, "resumed")
    store = _open(args, readonly=False)
    run = _get_run(store, ref, elsewhere)
    sweep_run = bool((run.get("config") or {}).get("run_key")) and run_folder(run) is None
    if sweep_run and run["status"] == "running":
        # (claim's "stop it first" is never reached: a sweep's run has no folder to resume)
        hint = continue_hint(run, store)
        raise UserError(f"run {run['id']} of the sweep of {run['experiment']} is still running "
                        f"(process {run['pid']} on {run['host']}): its sweep is training it, "
                        "so there is nothing to resume; wait for it to end (`sgdlab runs "
                        f"show {run['id']}` shows how far it got)" + (
                            f", or stop that sweep and continue it with: {hint}" if hint
                            else ""))
    if run["status"] in RESUMABLE and sweep_run:
        # a sweep's run keeps no checkpoints to resume: its sweep reruns what the store lacks
        hint = continue_hint(run, store)
        raise UserError(f"run {run['id']} is a run of the sweep of {run['experiment']}, "
                        "which `sgdlab resume` does not continue; " + (
                            f"continue it with: {hint}" if hint else
                            f"its sweep entry finished since as run {finished_since(run, store)}"))
    step = checkpoint_step(run, store.path)

    def started(run_id: str) -> None:
        if step is not None and step >= 0:     # (else resume_run says it restarts from 0)
            print(f"sgdlab: resuming run {run_id} from its last checkpoint, step {step}",
                  flush=True)
        announce(run_id, store.path)

    outcome = resume_run(ref, store=store, progress=False if args.no_progress else None,
                         announce=started)
    return print_outcome(outcome)
