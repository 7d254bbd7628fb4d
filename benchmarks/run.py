#!/usr/bin/env python
"""The one entry point to sgdlab's benchmarks.

    python benchmarks/run.py [--only SUBSTRING] [--json PATH] [--list] [--keep-freed-memory]

Imports every ``benchmarks/bench_*.py`` whose module name or one of whose figure names contains
SUBSTRING (all when omitted), calls its ``run() -> {figure: value or None}``, prints each figure
as ``name: value (goal ...)`` (``skipped`` for None) and, with ``--json``, writes one JSON object
``{figure_name: number or null}``. A module declares ``GOALS = {figure: "<= 1.05", ...}``.
``--keep-freed-memory`` has glibc keep freed memory in the process for every library timed
(``_timing.keep_freed_memory``): steadier ratios on machines with costly page faults.
``--list`` with ``--only`` lists the figures that would be printed. A module may declare
``figures(only) -> [figure names]``, the figures its ``run(only)`` measures (``bench_peers``: a
problem's name selects that problem alone); run.py then lists and prints those. ``python
benchmarks/bench_x.py [SUBSTRING] [--json PATH] ...`` runs that module alone, the same way.
Exit status 1 if a benchmark module raised or measured none of the figures asked for, 2 if
SUBSTRING matches no benchmark.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import math
import re
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[Path]:
    return sorted(HERE.glob("bench_*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"sgdlab_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))  # benchmark modules may share helpers in benchmarks/
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(HERE))
    return module


def goal_met(value: float, goal: str) -> bool | None:
    """Evaluate goals of the form ``<= 1.05``, ``< 2``, ``>= 0.9``; None if not of that form."""
    m = re.fullmatch(r"\s*(<=|>=|<|>|==)\s*([-+0-9.eE]+)\s*(?:\S.*)?", goal)
    if not m:
        return None
    op, bound = m.group(1), float(m.group(2))
    return {"<=": value <= bound, ">=": value >= bound, "<": value < bound,
            ">": value > bound, "==": value == bound}[op]


def format_figure(name: str, value, goal: str | None) -> str:
    g = f" (goal {goal})" if goal else ""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{name}: skipped{g}"
    met = goal_met(float(value), goal) if goal else None
    mark = "" if met is None else ("  [met]" if met else "  [MISSED]")
    return f"{name}: {float(value):.4g}{g}{mark}"


def main(argv: list[str] | None = None, module: str | None = None) -> int:
    """Run the benchmarks as the command line asks; ``module``: the path of one benchmark
    module, run alone (``python benchmarks/bench_x.py [SUBSTRING]``: its figures whose names
    contain SUBSTRING, printed as here)."""
    if module:
        ap = argparse.ArgumentParser(prog=Path(module).name, description=(
            f"{Path(module).stem}'s figures alone, as benchmarks/run.py prints them"))
        ap.add_argument("only", metavar="SUBSTRING", nargs="?", default="",
                        help="run the figures whose names contain this (all when omitted)")
    else:
        ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        ap.add_argument("--only", metavar="SUBSTRING", default="",
                        help="run benchmarks whose module or figure names contain this")
    ap.add_argument("--json", metavar="PATH", help="write {figure: value} here")
    ap.add_argument("--list", action="store_true", help="list modules and figures, run nothing")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="glibc keeps freed memory (every library alike; see _timing.py)")
    args = ap.parse_args(argv)
    if args.keep_freed_memory:
        sys.path.insert(0, str(HERE))
        from _timing import keep_freed_memory

        print("glibc keeps freed memory: "
              + ("yes" if keep_freed_memory() else "no (not glibc): default allocator"))

    figures: dict[str, float | None] = {}
    failed, matched = [], []
    for path in [Path(module).resolve()] if module else discover():
        try:
            bench = load(path)
        except Exception:
            print(f"{path.name}: could not import:\n{traceback.format_exc()}", file=sys.stderr)
            failed.append(path.name)
            continue
        goals: dict[str, str] = dict(getattr(bench, "GOALS", {}))
        every_figure = not args.only or args.only in path.stem
        if not (every_figure or any(args.only in name for name in goals)):
            continue
        matched.append(path.name)
        if hasattr(bench, "figures"):      # the module's own rule, which its run() follows
            wanted = set(bench.figures(args.only)).__contains__
        else:
            def wanted(name: str) -> bool:
                return every_figure or args.only in name
        if args.list:
            print(f"{path.name}: " + ", ".join(n for n in goals if wanted(n)))
            continue
        print(f"== {path.stem}", flush=True)
        t0 = time.perf_counter()
        try:
            # a module whose run() takes ``only`` skips the figures not asked for
            takes_only = "only" in inspect.signature(bench.run).parameters
            results = bench.run(only=args.only) if takes_only else bench.run()
        except Exception:
            print(f"{path.name}: failed:\n{traceback.format_exc()}", file=sys.stderr)
            failed.append(path.name)
            results = {name: None for name in goals}
        if not any(wanted(name) for name in results):
            # selected by a figure's name, yet its run() chose none: a benchmark's own bug
            print(f"{path.name}: measured none of the figures asked for by {args.only!r}",
                  file=sys.stderr)
            failed.append(path.name)
        for name, value in results.items():
            if wanted(name):
                value = None if value is None else float(value)
                figures[name] = value
                print(format_figure(name, value, goals.get(name)), flush=True)
        print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
    if not matched and not failed:
        print(f"no benchmark matches {args.only!r}", file=sys.stderr)
        return 2
    if args.list:
        return 0
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
        print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
