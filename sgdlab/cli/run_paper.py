"""``sgdlab run --paper PAPER``: every catalogue entry of one paper (or ``all``) at one scale,
one after another, then one summary page of their results.

Every entry is planned first (:func:`sgdlab.experiments.plan.plan_experiment`, what
``--dry-run`` shows): if any would fail, nothing runs. An entry that fails while it runs does
not stop the others; the exit status is then 1."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sgdlab.cli.columns import aligned
from sgdlab.cli.run import plan_entry, print_results, run_entry, same_command
from sgdlab.errors import UserError
from sgdlab.experiments.summary import compare_pages, read_page, verdict_counts


def run_paper(args: argparse.Namespace) -> int:
    from sgdlab.experiments.spec import catalogue_entries

    if args.name or args.config:
        given = args.name or f"--config {args.config}"
        raise UserError(f"give --paper {args.paper} or {given}, not both: --paper runs every "
                        "entry of the paper")
    if args.reading:
        raise UserError("--reading is refused with --paper: each entry has its own readings "
                        "(`sgdlab list NAME`); run the entry by name: sgdlab run NAME "
                        f"--reading KEY=CHOICE{_paper_reading_example(args.paper)}")
    if args.compare is not None:
        read_page(args.compare)              # a page it cannot read fails before any run
    names = catalogue_entries(args.paper)
    root = Path(args.out) if args.out is not None else Path("sgdlab-out")
    outs = {n: root / f"{n}-{args.scale}" for n in names}
    plans = [(n, *_plan(args, n, outs[n])) for n in names]
    if args.dry_run:
        return _print_plans(args, plans)
    if args.tensorboard is not None:
        from sgdlab.train.tensorboard import writer_class

        writer_class()            # the package: each entry would fail on it
    failing = [(n, problems) for n, _, problems in plans if problems]
    if failing:
        _print_problems(plans)
        raise UserError(f"{len(failing)} of {len(names)} entries would fail (above): nothing "
                        f"was run; `{same_command(args)} --dry-run` shows their plans")
    return _run_all(args, names, outs, root)


def _paper_reading_example(paper: str) -> str:
    """`` (e.g. sgdlab run NAME --reading KEY=CHOICE)`` of the paper's first entry that has
    readings; ``""`` for an unknown paper (refused by name once --reading is dropped)."""
    from sgdlab.cli.run import reading_example
    from sgdlab.experiments.readings import entry_readings
    from sgdlab.experiments.spec import catalogue_entries

    try:
        names = catalogue_entries(paper)
    except UserError:
        return ""
    found = next(((n, table) for n in names if (table := entry_readings(n))), None)
    return ("" if found is None else
            f" (e.g. sgdlab run {found[0]} --reading {reading_example(found[1])})")


def _plan(args: argparse.Namespace, name: str, out: Path):
    """(the plan of entry ``name``, or None when planning it raised; the problems that would
    make its run fail)."""
    try:
        plan = plan_entry(args, name, out)
    except UserError as e:
        return None, [str(e)]
    return plan, list(plan.problems)


def _print_plans(args: argparse.Namespace, plans: list) -> int:
    """Each entry's plan as ``--dry-run`` prints it (its departures counted, not listed),
    then the totals; 2 when one would fail."""
    failing = sum(bool(problems) for _, _, problems in plans)
    if args.json:
        from sgdlab.strict_json import dumps

        print(dumps([plan.to_json() if plan is not None else
                     {"experiment": n, "scale": args.scale, "problems": problems, "ok": False}
                     for n, plan, problems in plans], indent=1, default=str))
    else:
        for n, plan, problems in plans:
            print("\n".join(plan.lines(departures=False)) if plan is not None
                  else f"dry run: {n} [{args.scale}]: cannot be planned (the error below)")
            print()
        found = [p for _, p, _ in plans if p is not None]
        runs, to_run = sum(len(p.runs) for p in found), sum(len(p.to_run) for p in found)
        print(f"total: {len(plans)} entries, {runs} runs, {to_run} to run "
              f"({runs - to_run} already stored); {failing} entries would fail")
    _print_problems(plans)
    return 2 if failing else 0


def _print_problems(plans: list) -> None:
    """Each problem of each entry, named by the entry (once: most messages start with it)."""
    for n, _, problems in plans:
        for problem in problems:
            print(f"sgdlab: error: {'' if problem.startswith(n) else f'{n}: '}{problem}",
                  file=sys.stderr)


def _run_all(args: argparse.Namespace, names: list[str], outs: dict[str, Path],
             root: Path) -> int:
    from sgdlab.cli.main import error_message
    from sgdlab.errors import RunInterrupted
    from sgdlab.store.runstore import store_connections

    rows, reported = [], []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}", flush=True)
        # the command recorded with the entry's runs continues that entry alone
        one = argparse.Namespace(**{**vars(args), "paper": None, "name": name,
                                    "out": str(outs[name])})
        opened = store_connections()
        try:
            res = run_entry(one, name, outs[name])
            print_results(res)
        except KeyboardInterrupt as e:
            how = "terminated" if str(e) else "interrupted"
            raise RunInterrupted(f"the batch was {how} at {name} ({i} of {len(names)}); "
                                 "finished runs are kept, runs in progress are recorded as "
                                 f"interrupted; continue with: {same_command(args)} (finished "
                                 "runs are not run again)") from None
        except Exception as e:  # noqa: BLE001 -- what `sgdlab run NAME` reports as an error
            message = error_message(e, opened)
            if message is None:
                raise
            print(f"sgdlab: error: {name}: {message}", file=sys.stderr)
            rows.append((name, f"failed: {message.splitlines()[0]}", "-", "-"))
            continue
        reported.append(res.out_dir)
        rows.append((name, _status(res), "{} / {} / {}".format(*verdict_counts(res.results)),
                     str(res.report_path)))
    _print_table(rows)
    if reported:
        from sgdlab.experiments.summary import write_summary

        page = write_summary(reported, root / f"{args.paper}-{args.scale}.md",
                             command=same_command(args))
        print(f"summary: {page}")
        if args.compare is not None:
            # the page's entries of this paper (as catalogue_entries reads a name): those of
            # the other papers were not run, and would be listed as lost and counted in the
            # page's totals
            old = {n: e for n, e in read_page(args.compare).items()
                   if args.paper == "all" or n.split("-")[0] == args.paper}
            print("\n".join(compare_pages(old, read_page(page), old_name=args.compare,
                                           new_name=str(page))))
    else:
        print("summary: none written (no entry produced results)")
    return 0 if all(status == "done" for _, status, _, _ in rows) else 1


def _status(res) -> str:
    """``done``, or why the entry's results are incomplete."""
    if res.ok:
        return "done"
    if res.sweep.failed:
        run, message = res.sweep.failed[0]
        return (f"failed: {len(res.sweep.failed)} runs failed (first: {run}: "
                f"{message.splitlines()[0] if message else ''})")
    return f"failed: {len(res.results.get('missing_runs', []))} runs missing"


def _print_table(rows: list[tuple[str, str, str, str]]) -> None:
    head = ("entry", "status", "agree / disagree / inconclusive", "report")
    print()
    print("\n".join(aligned([head, *rows])))
