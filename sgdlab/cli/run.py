"""``sgdlab run NAME [--scale smoke|cpu|paper] [--config FILE] ...``: run a catalogue experiment
(or a user's experiment file), skipping runs already finished in the store, and write its
report. ``--backend ray`` runs the sweep on Ray: a local instance, or a cluster (``--address``).
``--reading KEY=CHOICE`` reads an ambiguous passage of the paper another way (``sgdlab list
NAME`` shows the entry's readings). ``--dry-run`` shows what the run would do, running nothing.
``--paper PAPER`` runs every entry of one paper (:mod:`sgdlab.cli.run_paper`)."""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any


def add_reading_option(p: argparse.ArgumentParser, when: str = "", *,
                       what: str = "read an ambiguity of the paper as CHOICE") -> None:
    """``--reading KEY=CHOICE`` (repeatable); ``what`` it does, ``when`` it applies. The
    parser's ``check_arguments`` is :func:`check_readings`, which refuses a malformed one."""
    p.add_argument("--reading", action="append", type=_reading, default=[],
                   metavar="KEY=CHOICE",
                   help=f"{what}{when} (repeatable; `sgdlab list NAME` shows the entry's "
                        "readings, the others keep their defaults)")
    p.check_arguments = check_readings


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def check_device(device: str, *, here: bool = True) -> None:
    """A :class:`~sgdlab.errors.UserError` unless ``--device`` names cpu, cuda or cuda:N; with
    ``here`` (the command computes in this process), also unless that device is on this
    machine (:func:`~sgdlab.experiments.runner.require_device`)."""
    from sgdlab.errors import UserError, did_you_mean

    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise UserError(f"--device must be cpu or cuda, got {device!r}"
                        f"{did_you_mean(device, ('cpu', 'cuda'))}")
    if here:
        from sgdlab.experiments.runner import require_device

        require_device(device)


class _Malformed(str):
    """A ``--reading`` that is no KEY=CHOICE: refused by :func:`check_readings`, once the entry
    its example is drawn from is known (NAME may come after the option)."""


def _reading(text: str) -> tuple[str, str] | _Malformed:
    key, eq, choice = (w.strip() for w in text.partition("="))
    return (key, choice) if eq and key and choice else _Malformed(text)


def check_readings(args: argparse.Namespace) -> str | None:
    """The problem with a ``--reading`` that is no KEY=CHOICE, with an example of the entry
    the command names (NAME, ``--config FILE``, report's TARGET); None when each is one.
    With ``--paper`` none: ``--reading`` is refused there, with an example of the paper's."""
    bad = next((r for r in args.reading if isinstance(r, _Malformed)), None)
    if bad is None or getattr(args, "paper", None) is not None:
        return None
    entry = _entry_readings(args)
    if entry is None:
        what = "a reading and one of its choices: `sgdlab list NAME` shows an entry's readings"
    elif not entry[1]:
        what = f"{entry[0]} has no readings to choose from: it names no ambiguity of its paper"
    else:
        name, table = entry
        key = bad.partition("=")[0].strip()
        what = f"a reading of {name} and one of its choices, e.g. {reading_example(table, key)}"
        what += (f"; {key}'s choices: {', '.join(table[key]['choices'])} (default "
                 f"{table[key]['default']})" if key in table
                 else f"; `sgdlab list {name}` shows its readings")
    return f"argument --reading: expected KEY=CHOICE ({what}), got {str(bad)!r}"


def reading_example(table: dict[str, Any], key: str | None = None) -> str:
    """KEY=CHOICE of an entry's (validated) ``readings`` table: ``key``'s reading when it is
    one, else the first, with its first choice other than the default."""
    k = key if key in table else next(iter(table))
    choice = next((c for c in table[k]["choices"] if c != table[k]["default"]),
                  table[k]["default"])
    return f"{k}={choice}"


def _entry_readings(args: argparse.Namespace) -> tuple[str, dict[str, Any]] | None:
    """(the entry's name, its readings table) for the entry the command names; None for none,
    or for one it cannot read (its own error comes when it is run)."""
    from sgdlab.errors import UserError
    from sgdlab.experiments.readings import entry_data
    from sgdlab.experiments.spec import read_file, validate_raw

    name = (getattr(args, "name", None) or getattr(args, "target", None)
            or getattr(args, "experiment", None))      # (`sgdlab runs list --experiment`)
    config = getattr(args, "config", None)
    try:
        if config:
            raw = validate_raw(read_file(config), config)
        elif name:
            raw = validate_raw(entry_data(name), name)
        else:
            return None
    except (UserError, OSError):
        return None
    return raw["name"], raw.get("readings") or {}


def readings_of(args: argparse.Namespace) -> dict[str, str]:
    """``--reading`` as ``{reading: choice}``; one reading chosen twice is an error."""
    from sgdlab.errors import UserError

    problem = check_readings(args)
    if problem:     # (a caller that built ``args`` without the parser's check)
        raise UserError(problem)
    out: dict[str, str] = {}
    for key, choice in args.reading:
        if out.get(key, choice) != choice:
            raise UserError(f"--reading {key} given twice ({out[key]}, {choice}): choose one")
        out[key] = choice
    return out


# what `sgdlab run X --set ...` (as `sgdlab train` takes) or `--epochs 2` is told
_NO_OVERRIDES = ("sgdlab run takes no overrides: change an experiment's parameters in a copy "
                 "of its file (`sgdlab list NAME` names it) and run that with --config FILE; "
                 "--scale smoke is its shortest version")


def _override_hint(flag: str, value: str | None, option_hint: str = "") -> str | None:
    """:data:`_NO_OVERRIDES` for ``--set`` and a run config's key given as an option (``--seed
    3`` was "did you mean --store?"), and for an option close to none of run's; None for a
    misspelt option of run's (``--scael``), which ``option_hint`` names."""
    from sgdlab.cli.train import config_key_hint

    if flag == "--set" or not option_hint or config_key_hint(flag, value, option_hint):
        return _NO_OVERRIDES
    return None


def _second_name_hint(word: str) -> str | None:
    """What ``sgdlab run xing-walk zhu-escape-2d`` is told: one entry a command."""
    from sgdlab.experiments.spec import catalogue_papers, list_names

    if word not in list_names():
        return None
    papers = ", ".join(catalogue_papers())
    return (f"sgdlab run takes one entry: run {word} with a command of its own, or every "
            f"entry of one paper with --paper PAPER ({papers}, or all)")


def register(subparsers) -> None:
    from sgdlab.cli._plugins import add_plugin_option

    p = subparsers.add_parser(
        "run", help="run an experiment from the catalogue (see `sgdlab list`)",
        description="Run an experiment: its sweep (only the runs missing from the store), then "
                    "tables, figures, conclusions and an HTML report in --out.")
    p.unknown_option_hint = _override_hint
    p.stray_word_hint = _second_name_hint
    p.add_argument("name", nargs="?", help="catalogue name (see `sgdlab list`)")
    p.add_argument("--paper", metavar="PAPER",
                   help="instead of NAME: every entry of one paper (chaudhari, jastrzebski, "
                        "musso, xing, zhu) or of all, one after another, each into "
                        "OUT/NAME-SCALE (OUT: --out, default sgdlab-out), then one summary "
                        "page OUT/PAPER-SCALE.md")
    p.add_argument("--compare", metavar="PAGE",
                   help="with --paper: after the summary page, print which verdicts moved "
                        "against PAGE (an earlier page, e.g. docs/RESULTS.md)")
    p.add_argument("--config", metavar="FILE",
                   help="an experiment YAML file instead of NAME: an edited copy of a "
                        "catalogue entry, or one of your own (docs/GUIDE.md, 'An experiment "
                        "of your own')")
    scale = p.add_argument("--scale", default="cpu", choices=["smoke", "cpu", "paper"],
                           help="smoke: seconds; cpu: minutes on 2 cores, embedded data "
                                "(default); paper: the paper's model, data (--data-dir) "
                                "and grid")
    # a device for a size: spelling alone took gpu for cpu
    scale.hints = dict.fromkeys(("gpu", "cuda"), "--scale sets the experiment's size, "
                                "--device cuda the device it runs on")
    # the shell leaves ~ in --data-dir=~/data alone; configs and the loaders expand it
    p.add_argument("--data-dir", metavar="DIR", type=os.path.expanduser,
                   help="directory with the paper's dataset files")
    p.add_argument("--workers", type=int, default=None, metavar="K",
                   help="runs at a time: worker processes of the local backend (default 1); "
                        "with --backend ray, at most K runs in flight (default: as many as "
                        "the cluster holds)")
    p.add_argument("--backend", choices=["local", "ray"], default=None,
                   help="where the runs execute: local (this machine's processes; default, "
                        "or $SGDLAB_BACKEND) or ray (Ray tasks; needs the ray extra)")
    p.add_argument("--address", metavar="ADDR",
                   help="with --backend ray: the Ray cluster to join (HOST:PORT or auto; "
                        "default $RAY_ADDRESS, else a Ray instance on this machine)")
    p.add_argument("--cpus-per-run", type=float, default=None, metavar="C",
                   help="with --backend ray: CPUs per run, its torch threads (default "
                        "$SGDLAB_CPUS_PER_RUN, the experiment's resources, else 1)")
    p.add_argument("--gpus-per-run", type=float, default=None, metavar="G",
                   help="with --backend ray: GPUs per run, fractions share a GPU (default "
                        "$SGDLAB_GPUS_PER_RUN, the experiment's resources, else 0)")
    add_reading_option(p)
    add_device_option(p)
    p.add_argument("--out", metavar="DIR",
                   help="output directory (default sgdlab-out/NAME-SCALE, then -KEY=CHOICE for "
                        "each non-default reading; with --paper: the folder of the entries' "
                        "folders, default sgdlab-out)")
    p.add_argument("--store", metavar="PATH",
                   help="run store (SQLite) path; default ./sgdlab-runs/runs.sqlite or "
                        "$SGDLAB_STORE")
    p.add_argument("--progress", action="store_true", help="show per-run training progress bars")
    add_plugin_option(p, "; the sweep's workers import them too")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="write every run's metrics live to TensorBoard event files in "
                        "DIR/<run>-<run id>, and those of the runs already stored (tensorboard "
                        "--logdir DIR; needs the tensorboard package)")
    p.add_argument("--dry-run", action="store_true",
                   help="show what the run would do (its runs, which are already in the store, "
                        "their length, the data files found or missing) without training or "
                        "writing anything; exit status 2 when the run would fail")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sgdlab.plugins import exported_plugins

    # the sweep's workers (spawned, or Ray's: they are given this variable) import them too;
    # for this command only: an in-process caller's environment is left as it was
    with exported_plugins(args.plugins):
        return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    from sgdlab.errors import UserError

    # where the runs execute is checked with the backend (a Ray cluster's GPUs are not here)
    check_device(args.device, here=False)
    if args.json and not args.dry_run:
        raise UserError("--json prints the plan of --dry-run: give both")
    if args.compare is not None and args.paper is None:
        raise UserError("--compare compares the summary page of --paper: give --paper "
                        "(or use python -m sgdlab.experiments.summary OUT --compare PAGE)")
    if args.paper is not None:
        from sgdlab.cli.run_paper import run_paper

        return run_paper(args)
    if not args.name and not args.config:
        raise UserError("which experiment? give its NAME (`sgdlab list` shows the catalogue; e.g. "
                        "sgdlab run zhu-escape-2d --scale smoke) or --config FILE")
    if args.name and args.config:
        raise UserError(f"give NAME ({args.name}) or --config FILE ({args.config}), not both: "
                        "--config runs that file")
    if args.dry_run:
        return _dry_run(args)
    if args.out is None:
        # the default folder, named: the command that continues the sweep (recorded with its
        # runs, printed on an interrupt) then writes the report there from any folder
        from sgdlab.experiments.runner import default_out_dir
        from sgdlab.experiments.spec import load_experiment

        spec = load_experiment(args.config or args.name, args.scale, readings_of(args))
        args.out = str(default_out_dir(spec))
    try:
        res = run_entry(args, args.config or args.name, args.out)
    except KeyboardInterrupt as e:
        from sgdlab.errors import ReportInterrupted, RunInterrupted

        how = "terminated" if str(e) else "interrupted"
        if isinstance(e, ReportInterrupted):
            raise RunInterrupted(f"the report was {how} after the sweep had ended (its "
                                 "runs are stored); write it with: "
                                 f"{same_command(args)} (finished runs are not run again)"
                                 ) from None
        raise RunInterrupted(f"the sweep was {how}; any runs in progress are recorded as "
                             "interrupted, finished runs are kept; continue with: "
                             f"{same_command(args)}") from None
    try:
        return print_results(res)
    except KeyboardInterrupt as e:
        from sgdlab.errors import RunInterrupted

        how = "terminated" if str(e) else "interrupted"
        left = (f"{len(res.sweep.failed)} runs failed: complete them with: "
                f"{same_command(args)}" if res.sweep.failed else "nothing is left to run")
        raise RunInterrupted(f"{how} while the conclusions were printed: the sweep and its "
                             f"report are complete and written (results: "
                             f"{(res.out_dir / 'results.json').resolve()}, report: "
                             f"{Path(res.report_path).resolve()}); {left}") from None


def run_entry(args: argparse.Namespace, target: str, out: str | Path):
    """:func:`~sgdlab.experiments.runner.run_experiment` of ``target`` (a name or a file) into
    ``out`` with the options of ``args``."""
    from sgdlab.experiments.runner import run_experiment

    return run_experiment(target, scale=args.scale, out_dir=out, store_path=args.store,
                          workers=args.workers, device=args.device, data_dir=args.data_dir,
                          train_progress=args.progress, backend=args.backend,
                          address=args.address, cpus_per_run=args.cpus_per_run,
                          gpus_per_run=args.gpus_per_run, readings=readings_of(args),
                          command=same_command(args, store=False),
                          tensorboard=args.tensorboard)


def plan_entry(args: argparse.Namespace, target: str, out: str | Path | None):
    """:func:`~sgdlab.experiments.plan.plan_experiment` of ``target`` into ``out`` with the
    options of ``args`` (what :func:`run_entry` would do)."""
    from sgdlab.experiments.plan import plan_experiment

    return plan_experiment(target, scale=args.scale, out_dir=out, store_path=args.store,
                           workers=args.workers, device=args.device, data_dir=args.data_dir,
                           backend=args.backend, address=args.address,
                           cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                           readings=readings_of(args))


def print_results(res) -> int:
    """The conclusions with their verdicts, the failed runs and where the report is."""
    from sgdlab.report.verdicts import SMOKE, cites_paper, claim_word, verdict

    smoke = res.results.get("scale") == "smoke"
    if res.results.get("conclusions"):
        # a header at every scale: the lines would otherwise run on from the runs' progress
        print(f"conclusions ({SMOKE}):" if smoke else "conclusions:")
    cited = cites_paper(res.results)
    # a disagreement in capitals, to stand out among the lines
    loud = {"agree": claim_word(True, cited), "disagree": claim_word(False, cited).upper()}
    for c in res.results.get("conclusions", []):
        words, kind = verdict(c, res.results.get("scale"), cited=cited)
        label = loud.get(kind, words)
        tag = "" if smoke else f"[{label}] "
        print(f"  - {tag}{c['text']}")
    if res.sweep.failed:
        print(f"{len(res.sweep.failed)} runs failed (first: {res.sweep.failed[0][0]}: "
              f"{res.sweep.failed[0][1]}); re-run the same command to complete them.")
    print(f"results: {res.out_dir / 'results.json'}")
    print(f"report:  {res.report_path}")
    return 0 if res.ok else 1


def _dry_run(args: argparse.Namespace) -> int:
    import sys

    plan = plan_entry(args, args.config or args.name, args.out)
    if args.json:
        from sgdlab.strict_json import dumps

        print(dumps(plan.to_json(), indent=1, default=str))
    else:
        print("\n".join(plan.lines()))
    for problem in plan.problems:
        print(f"sgdlab: error: {problem}", file=sys.stderr)
    return 0 if plan.ok else 2


def same_command(args: argparse.Namespace, *, store: bool = True) -> str:
    """The ``sgdlab run`` command line ``args`` came from, its paths absolute (the command that
    continues the sweep, shown when it is interrupted and recorded with each of its runs for
    ``sgdlab runs list``); ``store=False`` leaves out ``--store``: the store a run is read from
    is the one it is in. The store is named also when ``$SGDLAB_STORE`` or the default gave
    it, as ``sgdlab train``'s resume command names it: from another shell or folder the
    command would otherwise run the sweep again into another store. The ``--plugin`` modules
    are named too, a file by its absolute path."""
    import shlex

    from sgdlab.plugins import recorded_plugins
    from sgdlab.store import default_store_path

    def path(p):
        return None if p is None else os.path.abspath(p)

    parts = ["sgdlab", "run"] + (["--paper", args.paper] if args.paper else [args.name]
                                 if args.name else ["--config", path(args.config)])
    for flag, value in (("--scale", args.scale), ("--data-dir", path(args.data_dir)),
                        ("--workers", args.workers), ("--backend", args.backend),
                        ("--address", args.address), ("--cpus-per-run", args.cpus_per_run),
                        ("--gpus-per-run", args.gpus_per_run),
                        ("--device", args.device if args.device != "cpu" else None),
                        ("--out", path(args.out)),
                        ("--store", path(args.store or default_store_path()) if store
                         else None),
                        ("--tensorboard", path(args.tensorboard))):
        if value is not None:
            parts += [flag, str(value)]
    for key, choice in args.reading:
        parts += ["--reading", f"{key}={choice}"]
    # without them the command stops at the first model or dataset the plugins register
    for plugin in recorded_plugins(getattr(args, "plugins", None) or []):
        parts += ["--plugin", plugin]
    return shlex.join(parts)
