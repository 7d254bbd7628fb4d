"""``sgdlab list [NAME ...] [--json]``: the experiment catalogue, one line per entry with its
wall time at ``cpu`` scale and the paper figure it reproduces; with names, those entries' claim,
description, file and the readings (``sgdlab run NAME --reading KEY=CHOICE``) of the passages
their paper leaves open."""
from __future__ import annotations

import argparse

from sgdlab.strict_json import dumps

# docs/RESULTS.md names the cpu times of the longest entries of its run (the catalogue files'
# ``scales.cpu.wall_minutes``), the shortest of them 8 minutes: every other entry took at most
# that. tests/cli/test_cli_list.py reads the page for both.
CPU_UNRECORDED_AT_MOST = 8


def register(subparsers) -> None:
    p = subparsers.add_parser("list", help="list the experiment catalogue",
                              description="List the catalogue: one line per experiment with "
                                          "its wall time at --scale cpu (~N min: the "
                                          "whole entry on 2 cores with --workers 2 in the "
                                          "run of docs/RESULTS.md; "
                                          f"≤{CPU_UNRECORDED_AT_MOST} min: no time "
                                          "recorded, not among the longest) and the paper "
                                          "figure/table it reproduces. With NAMEs: "
                                          "their claim, description, file and readings (the "
                                          "passages the paper leaves open, for --reading "
                                          "KEY=CHOICE). A "
                                          "NAME that is no entry searches the names, papers, "
                                          "figures and titles (`sgdlab list zhu`, "
                                          "`sgdlab list 'fig. 4'`).")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="show these entries in full (default: one line per entry); a "
                        "word or phrase that is no entry's name shows every entry whose "
                        "name, paper, figure and title hold all its words")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)


def catalogue() -> list[dict]:
    from sgdlab.experiments.spec import (catalogue_files, read_file, scale_deviations,
                                         validate_raw)

    out = []
    for name, path in catalogue_files().items():
        raw = validate_raw(read_file(path), str(path))
        p = raw["paper"]
        out.append({"name": raw["name"], "version": raw["version"],
                    "title": raw.get("title", raw["name"]),
                    "description": " ".join(raw["description"].split()),
                    "paper": {"author": p["author"], "year": p["year"], "figure": p["figure"],
                              "title": p.get("title"), "claim": p.get("claim"),
                              "quote": _squash(p.get("quote")), "where": p.get("where"),
                              "quotes": [{"quote": _squash(q["quote"]), "where": q["where"]}
                                         for q in p.get("quotes", [])]},
                    "deviations": scale_deviations(raw),
                    "readings": {k: {"default": r["default"],
                                     "choices": {c: v["description"].strip()
                                                 for c, v in r["choices"].items()}}
                                 for k, r in (raw.get("readings") or {}).items()},
                    "wall_minutes": {s: ov["wall_minutes"]
                                     for s, ov in (raw.get("scales") or {}).items()
                                     if ov and "wall_minutes" in ov},
                    "scales": sorted(set(raw.get("scales", {})) | {"smoke", "cpu", "paper"}),
                    "file": str(path)})
    return out


def _squash(text: str | None) -> str | None:
    return None if text is None else " ".join(text.split())


def _list(args: argparse.Namespace) -> int:
    items = catalogue()
    if args.names:
        from sgdlab.errors import ConfigError
        from sgdlab.experiments.spec import catalogue_name

        wanted = []
        for n in args.names:
            try:
                wanted.append(catalogue_name(n))
            except ConfigError:
                # a paper, a figure, a word of a title: what a reader looking for a figure
                # types; nothing found keeps the error that names the closest entries
                found = [i["name"] for i in items if _matches(n, i)]
                if not found:
                    raise
                wanted += found
        items = [next(i for i in items if i["name"] == n) for n in dict.fromkeys(wanted)]
    if args.json:
        print(dumps(items, indent=1))
        return 0
    w = max((len(i["name"]) for i in items), default=10)
    for i in items:
        p = i["paper"]
        n = sum(len(r["choices"]) > 1 for r in i["readings"].values())
        many = f"  [{n} reading{'s' if n > 1 else ''}]" if n and not args.names else ""
        print(f"{i['name']:<{w}}  {cpu_time(i):<7}  {p['author']} {p['year']}, "
              f"{p['figure']}: {i['title']}{many}")
        if args.names:
            _details(i, w)
    if args.names:
        return 0
    print(f"\n{len(items)} experiments. Run one: sgdlab run NAME --scale smoke|cpu|paper "
          "(--dry-run: its runs).\nTimes: the whole entry at --scale cpu, 2 cores, "
          "--workers 2, in the run of docs/RESULTS.md\n"
          f"(≤{CPU_UNRECORDED_AT_MOST} min: no time recorded, not among the longest); "
          "--scale smoke: seconds.\n`sgdlab list NAME` shows an "
          "entry's claim, description, file and readings (--reading KEY=CHOICE);\n--json adds "
          "the quotes and each scale's departures.")
    return 0


def cpu_time(item: dict) -> str:
    """The entry's wall time at ``cpu`` scale as ``sgdlab list`` shows it: ``~40 s``,
    ``~19 min``, or ``≤8 min`` where none is recorded."""
    from sgdlab.experiments.spec import wall_time_text

    minutes = item["wall_minutes"].get("cpu")
    return f"≤{CPU_UNRECORDED_AT_MOST} min" if minutes is None else wall_time_text(minutes)


def _matches(query: str, item: dict) -> bool:
    """Every word of ``query`` occurs, in any case, in the entry's one-line description."""
    p = item["paper"]
    text = f"{item['name']} {p['author']} {p['year']}, {p['figure']}: {item['title']}".lower()
    words = query.lower().split()
    return bool(words) and all(w in text for w in words)


def _details(item: dict, w: int) -> None:
    pad = " " * (w + 4)
    if item["paper"].get("claim"):
        print(f"{pad}claim: {item['paper']['claim']}")
    # what is run and how the claim is checked: read before choosing a scale or a reading
    print(f"{pad}description: {item['description']}")
    print(f"{pad}run: sgdlab run {item['name']} --scale cpu --workers 2  ({cpu_time(item)} "
          "on 2 cores; smoke: seconds, only checks "
          "that it runs; paper: the paper's grid, --data-dir for data files; --dry-run: its "
          "runs)")
    print(f"{pad}file: {item['file']}")
    for k, r in item["readings"].items():
        for c, desc in r["choices"].items():
            tag = " (default)" if c == r["default"] else ""
            print(f"{pad}--reading {k}={c}{tag}: {desc}")
