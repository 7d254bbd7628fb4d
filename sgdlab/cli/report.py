"""``sgdlab report TARGET [--compare OTHER]``: rebuild an experiment's report
from the run store (no training), and optionally compare it with another side by side."""
from __future__ import annotations

import argparse
from pathlib import Path

from sgdlab.cli.run import add_reading_option, readings_of


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="rebuild an experiment report from the store; compare two",
        description="Rebuild results.json, figures, tables and report.html from the runs in the "
                    "store. TARGET is an output directory (its results.json says which "
                    "experiment, scale and store) or an experiment name.")
    p.add_argument("target", metavar="TARGET",
                   help="an experiment's output directory, or a catalogue name")
    p.add_argument("--compare", metavar="OTHER",
                   help="another output directory or experiment: write a side-by-side page")
    p.add_argument("--scale", default="cpu", choices=["smoke", "cpu", "paper"],
                   help="scale when TARGET/OTHER is an experiment name (default cpu)")
    add_reading_option(p, " when TARGET/OTHER is an experiment name")
    p.add_argument("--store", metavar="PATH", help="run store path (default: as recorded)")
    p.add_argument("--out", metavar="PATH",
                   help="output directory for a rebuilt report (default: TARGET itself, or "
                        "sgdlab-out/NAME-SCALE for a name), or the compare page's path "
                        "(default: compare-<OTHER's folder name>.html in TARGET's folder)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="directory with the paper's dataset files, for an experiment run at "
                        "scale paper (default: as recorded in results.json)")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from sgdlab.experiments.runner import rebuild
    from sgdlab.report.compare import write_compare

    readings = readings_of(args)
    out_a, _ = rebuild(args.target, scale=args.scale, store_path=args.store,
                       out_dir=None if args.compare else args.out, data_dir=args.data_dir,
                       readings=readings)
    if not args.compare:
        print(f"report: {out_a / 'report.html'}")
        return 0
    out_b, _ = rebuild(args.compare, scale=args.scale, store_path=args.store,
                       data_dir=args.data_dir, readings=readings)
    page = write_compare(out_a, out_b, Path(args.out) if args.out else None)
    print(f"report A: {out_a / 'report.html'}\nreport B: {out_b / 'report.html'}")
    print(f"comparison: {page}")
    return 0
