"""``sgdlab report TARGET [--compare OTHER]``: rebuild an experiment's report
from the run store (no training), and optionally compare it with another side by side."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from sgdlab.cli.run import add_reading_option, readings_of


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="rebuild an experiment report from the store; compare two",
        description="Rebuild results.json, figures, tables and report.html from the runs in the "
                    "store. TARGET is an output directory (its results.json says which "
                    "experiment, scale and store), an experiment name or an experiment "
                    "file.")
    p.add_argument("target", metavar="TARGET",
                   help="an experiment's output directory, a catalogue name, or an "
                        "experiment file of your own (FILE.yaml)")
    p.add_argument("--compare", metavar="OTHER",
                   help="another report of the same experiment (an output directory or the "
                        "experiment's name): write a side-by-side page")
    # an experiment file is resolved at a scale and readings as a name is
    named = " when TARGET/OTHER is an experiment name or FILE.yaml"
    p.add_argument("--scale", default=None, choices=["smoke", "cpu", "paper"],
                   help=f"scale{named} (default cpu; an output directory keeps its own)")
    add_reading_option(p, named)
    p.add_argument("--store", metavar="PATH", help="run store path (default: as recorded)")
    p.add_argument("--out", metavar="PATH",
                   help="output directory for a rebuilt report (default: TARGET itself, or "
                        "sgdlab-out/NAME-SCALE for a name), or the compare page's path "
                        "(default: compare-<OTHER's folder name>.html in TARGET's folder)")
    p.add_argument("--data-dir", metavar="DIR", type=os.path.expanduser,
                   help="directory with the paper's dataset files, for an experiment run at "
                        "scale paper (default: as recorded in results.json)")
    from sgdlab.cli._plugins import add_plugin_option

    # an experiment of one's own names models and datasets only its plugins register
    add_plugin_option(p, "; as given to sgdlab run")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from sgdlab.experiments.runner import rebuild
    from sgdlab.report.compare import write_compare

    readings = readings_of(args)

    def is_report(target: str) -> bool:
        """Whether ``target``, compared, is a report folder: it keeps its own settings."""
        return bool(args.compare) and (Path(target) / "results.json").is_file()

    def scale_for(target: str) -> str | None:
        # with --compare, --scale may be meant for the other one, an experiment name
        return None if is_report(target) else args.scale

    def readings_for(target: str) -> dict:
        # so may --reading: a report folder keeps the readings it recorded
        return {} if is_report(target) else readings

    if args.compare and args.out:      # checked before the reports are rebuilt
        from sgdlab.report.compare import check_page_path
        check_page_path(args.out)
    if (args.scale is not None or readings) and is_report(args.target) \
            and is_report(args.compare):
        # neither is an experiment name for --scale and --reading to choose for: refused as
        # for one folder alone (they were ignored)
        from sgdlab.experiments.runner import check_recorded_choices
        for target in (args.target, args.compare):
            check_recorded_choices(target, scale=args.scale, readings=readings)
    if args.compare:                   # so is what they are reports of
        from sgdlab.report.compare import check_same_experiment
        check_same_experiment(
            _experiment_of(args.target, scale_for(args.target), readings_for(args.target)),
            _experiment_of(args.compare, scale_for(args.compare), readings_for(args.compare)),
            args.target, args.compare)
    out_a, results_a = rebuild(args.target, scale=scale_for(args.target), store_path=args.store,
                               out_dir=None if args.compare else args.out,
                               data_dir=args.data_dir, readings=readings_for(args.target))
    _say_if_partial(out_a, results_a)
    if not args.compare:
        print(f"report: {out_a / 'report.html'}")
        return 0
    out_b, results_b = rebuild(args.compare, scale=scale_for(args.compare), store_path=args.store,
                               data_dir=args.data_dir, readings=readings_for(args.compare))
    _say_if_partial(out_b, results_b)
    page = write_compare(out_a, out_b, Path(args.out) if args.out else None)
    print(f"report A: {out_a / 'report.html'}\nreport B: {out_b / 'report.html'}")
    from sgdlab.report.compare import compare_lines
    print("\n".join(compare_lines(out_a, out_b)))
    print(f"comparison (tables side by side, B − A, figures): {page}")
    return 0


def _experiment_of(target: str, scale: str | None, readings: dict) -> str | None:
    """The experiment ``target`` holds a report of (an output directory) or names; None when
    that is not known here (the rebuild then says what is wrong with ``target``)."""
    from sgdlab.errors import UserError
    from sgdlab.experiments.spec import load_experiment
    from sgdlab.report.compare import load_results

    try:
        if (Path(target) / "results.json").is_file():
            experiment = load_results(target).get("experiment")
            # not a mapping (a hand-edited file): the rebuild says what is wrong with it
            return experiment.get("name") if isinstance(experiment, dict) else None
        return load_experiment(target, scale or "cpu", readings).name
    except (UserError, ValueError):    # not JSON, not an experiment: the rebuild's to say
        return None


def _say_if_partial(out: Path, results: dict) -> None:
    """A report over part of the runs says so here too, not only on its page: its tables and
    conclusions cover the stored runs alone."""
    if not results.get("incomplete"):
        return
    missing = results.get("missing_runs", [])
    total = len(missing) + len(results.get("runs", []))
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    print(f"{out}: incomplete: {len(missing)} of {total} runs missing ({shown}); its tables "
          "and conclusions cover the stored runs only. `sgdlab run` of the experiment (same "
          "scale, readings and store) runs the missing ones.")
