"""``sgdlab run NAME [--scale smoke|cpu|paper] [--config FILE] ...``: run a catalogue experiment
(or a user's experiment file), skipping runs already finished in the store, and write its
report. Under ``torchrun`` the runs are sharded over the launched processes."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run an experiment from the catalogue (see `sgdlab list`)",
        description="Run an experiment: its sweep (only the runs missing from the store), then "
                    "tables, figures, conclusions and an HTML report in --out.")
    p.add_argument("name", nargs="?", help="catalogue name (see `sgdlab list`)")
    p.add_argument("--config", metavar="FILE",
                   help="an experiment YAML file (e.g. a copy of a catalogue entry) instead of NAME")
    p.add_argument("--scale", default="cpu", choices=["smoke", "cpu", "paper"],
                   help="smoke: seconds; cpu: minutes on 2 cores, embedded data (default); "
                        "paper: the paper's model, data (--data-dir) and grid")
    p.add_argument("--data-dir", metavar="DIR", help="directory with the paper's dataset files")
    p.add_argument("--workers", type=int, default=1, metavar="K",
                   help="parallel worker processes for the sweep (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--out", metavar="DIR", help="output directory (default sgdlab-out/NAME-SCALE)")
    p.add_argument("--store", metavar="PATH",
                   help="run store (SQLite) path; default ./sgdlab-runs/runs.sqlite or $SGDLAB_STORE")
    p.add_argument("--progress", action="store_true", help="show per-run training progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sgdlab.errors import UserError
    from sgdlab.experiments.runner import run_experiment

    if bool(args.name) == bool(args.config):
        raise UserError("give exactly one of NAME or --config FILE")
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        raise UserError(f"--device must be cpu or cuda, got {args.device!r}")
    res = run_experiment(args.config or args.name, scale=args.scale, out_dir=args.out,
                         store_path=args.store, workers=args.workers, device=args.device,
                         data_dir=args.data_dir, train_progress=args.progress)
    if not res.results:        # non-zero rank under torchrun
        return 0
    from sgdlab.report.verdicts import SMOKE, verdict

    smoke = res.results.get("scale") == "smoke"
    if smoke and res.results.get("conclusions"):
        print(f"conclusions ({SMOKE}):")
    for c in res.results.get("conclusions", []):
        words, kind = verdict(c, res.results.get("scale"))
        label = {"agree": "agrees", "disagree": "DISAGREES"}.get(kind, words)
        tag = "" if smoke else f"[{label}] "
        print(f"  - {tag}{c['text']}")
    if res.sweep.failed:
        print(f"{len(res.sweep.failed)} runs failed (first: {res.sweep.failed[0][0]}: "
              f"{res.sweep.failed[0][1]}); re-run the same command to complete them.")
    print(f"results: {res.out_dir / 'results.json'}")
    print(f"report:  {res.report_path}")
    return 0 if res.ok else 1
