"""``sgdlab runs list|show|export`` and ``sgdlab resume RUN_ID``: the run store from the shell."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="PATH",
                   help="run store (default: $SGDLAB_STORE or ./sgdlab-runs/runs.sqlite)")


def register(subparsers) -> None:
    runs = subparsers.add_parser("runs", help="list, show and export recorded runs",
                                 description="Inspect the run store.")
    sub = runs.add_subparsers(dest="runs_command", metavar="ACTION")
    runs.set_defaults(func=lambda a: (runs.print_help(), 2)[1])

    ls = sub.add_parser("list", help="one line per run")
    _store_arg(ls)
    ls.add_argument("--experiment", help="only runs of this experiment")
    ls.add_argument("--status", choices=("running", "finished", "diverged", "failed",
                                         "interrupted"), help="only runs with this status")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_list)

    show = sub.add_parser("show", help="config, environment, status, final metrics, files")
    _store_arg(show)
    show.add_argument("run_id", metavar="RUN_ID", help="a run id or a unique prefix")
    show.add_argument("--json", action="store_true",
                      help="print the run and its metric series as JSON")
    show.set_defaults(func=_show)

    ex = sub.add_parser("export", help="write runs and metrics to CSV, JSON or TensorBoard")
    _store_arg(ex)
    ex.add_argument("path", metavar="PATH", nargs="?",
                    help="the CSV or JSON file to write")
    ex.add_argument("--tensorboard", metavar="DIR",
                    help="write each run's metrics as TensorBoard event files in "
                         "DIR/<name>-<run id> (needs the tensorboard package)")
    ex.add_argument("--format", choices=("csv", "json"),
                    help="default: from PATH's suffix, else csv")
    ex.add_argument("--run", action="append", dest="runs", metavar="RUN_ID",
                    help="only these runs (repeatable; default all)")
    ex.set_defaults(func=_export)

    res = subparsers.add_parser("resume", help="continue a killed or interrupted run",
                                description="Continue RUN_ID from its last checkpoint with the "
                                            "config stored for it; the result is bit-for-bit "
                                            "that of an uninterrupted run.")
    _store_arg(res)
    res.add_argument("run_id", metavar="RUN_ID", help="a run id or a unique prefix")
    res.add_argument("--no-progress", action="store_true",
                     help="no progress bar (default: one on a terminal, as the run was "
                          "configured)")
    res.set_defaults(func=_resume)


def _open(args):
    from sgdlab.errors import UserError
    from sgdlab.store import RunStore, default_store_path
    path = Path(args.store) if args.store else default_store_path()
    if not path.is_file():  # do not create an empty store just to look into it
        raise UserError(f"no run store at {path} (use --store PATH or $SGDLAB_STORE)")
    return RunStore(path)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def _list(args) -> int:
    store = _open(args)
    runs = store.list_runs(experiment=args.experiment, status=args.status)
    if args.json:
        print(json.dumps([{k: r[k] for k in ("id", "name", "experiment", "status", "created",
                                             "summary")} for r in runs], indent=1))
        return 0
    if not runs:
        print(f"no runs in {store.path}")
        return 0
    rows = [("RUN_ID", "NAME", "EXPERIMENT", "STATUS", "STEPS", "TEST_ACC", "TEST_LOSS",
             "CREATED")]
    for r in runs:
        s = r["summary"]
        rows.append((r["id"], r["name"] or "", r["experiment"] or "", r["status"],
                     _fmt(s.get("steps")), _fmt(s.get("test_acc")), _fmt(s.get("test_loss")),
                     r["created"][:19].replace("T", " ")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def _show(args) -> int:
    store = _open(args)
    run = store.get_run(args.run_id)
    metrics = store.metrics(run["id"])
    if args.json:
        print(json.dumps({**run, "metrics": {k: v for k, v in metrics.items()}}, indent=1,
                         default=str))
        return 0
    print("  ".join([f"run {run['id']}"] + [f"{k} {run[k]}" for k in ("name", "experiment")
                                             if run[k]]))
    print(f"status: {run['status']}" + (f" ({run['message']})" if run["message"] else ""))
    print(f"created {run['created']}  updated {run['updated']}")
    if run["summary"]:
        print("summary: " + "  ".join(f"{k} {_fmt(v)}" for k, v in run["summary"].items()))
    env = run["env"]
    if env:
        print("environment: " + ", ".join(f"{k} {env[k]}" for k in
                                          ("python", "torch", "numpy", "device", "torch_threads",
                                           "git_commit", "hostname", "seed") if k in env))
    if metrics:
        print("metrics (points, last step: value):")
        for name, pts in metrics.items():
            print(f"  {name:<24} {len(pts):>6}  {pts[-1][0]}: {_fmt(pts[-1][1])}")
    if run["artifacts"]:
        print("files:")
        for a in run["artifacts"]:
            print(f"  {a['kind']:<11} {a['path']}")
    from sgdlab.config import dump_yaml
    print("config:")
    print("  " + dump_yaml(run["config"]).rstrip().replace("\n", "\n  "))
    return 0


def _export(args) -> int:
    store = _open(args)
    if args.tensorboard:
        from sgdlab.train.tensorboard import export_runs

        folders = export_runs(store, args.tensorboard, args.runs)
        print(f"wrote {len(folders)} runs to {args.tensorboard} "
              f"(tensorboard --logdir {args.tensorboard})")
    if args.path is None:
        if not args.tensorboard:
            from sgdlab.errors import UserError
            raise UserError("give PATH (a .csv or .json file) or --tensorboard DIR")
        return 0
    fmt = args.format or ("json" if Path(args.path).suffix.lower() == ".json" else "csv")
    path = store.export(args.path, run_ids=args.runs, fmt=fmt)
    print(f"wrote {path} ({fmt})")
    return 0


def _resume(args) -> int:
    from sgdlab.config.runner import resume_run
    from .train import print_outcome
    store = _open(args)
    outcome = resume_run(args.run_id, store=store, progress=False if args.no_progress else None)
    print_outcome(outcome)
    return 0
