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
                                          "figures and titles, then (as a phrase) the "
                                          "descriptions, claims and measured quantities "
                                          "(`sgdlab list zhu`, "
                                          "`sgdlab list 'fig. 4'`, `sgdlab list sharpness`).")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="show these entries in full (default: one line per entry); a "
                        "word or phrase that is no entry's name shows every entry whose "
                        "name, paper, figure and title hold all its words, then those whose "
                        "description, claim or a measured quantity holds it as a phrase")
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
                    "measures": _measures(raw),
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


def with_derived_deviations(item: dict) -> dict:
    """The ``catalogue()`` item with ``derived_deviations`` after its ``deviations``: ``{scale:
    [departure, ...]}`` for each scale whose file lists none, the paper scale aside, derived
    from the config under the default readings (:meth:`ExperimentSpec.derived_deviations`:
    what the report of a run at that scale shows). Out of :func:`catalogue`: each scale is
    resolved, with the imports that takes, which the one-line listing does without."""
    from sgdlab.experiments.spec import load_experiment

    derived = {}
    for scale in item["scales"]:
        if scale != "paper" and scale not in item["deviations"]:
            if found := load_experiment(item["file"], scale).derived_deviations():
                derived[scale] = found
    out = {}
    for k, v in item.items():
        out[k] = v
        if k == "deviations":
            out["derived_deviations"] = derived
    return out


def _measures(raw: dict) -> list[str]:
    """What the entry's runs measure (their instruments and final measurements, as the file
    names them: ``sharpness``, ``expected_sharpness``) and the quantities its claims compare
    (``metric_name``), each once."""
    groups = [raw.get("base") or {}] + [r.get("params") or {} for r in raw.get("runs") or []]
    said = [m.get(key) for g in groups for section, key in (("measure", "name"),
                                                            ("final", "kind"))
            for m in g.get(section) or [] if isinstance(m, dict)]
    said += [c.get("metric_name") for c in (raw.get("options") or {}).get("claims") or []
             if isinstance(c, dict)]
    return list(dict.fromkeys(m for m in said if isinstance(m, str)))


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
                found = _search(n, items)
                if not found:
                    raise
                wanted += found
        items = [next(i for i in items if i["name"] == n) for n in dict.fromkeys(wanted)]
    if args.json:
        print(dumps([with_derived_deviations(i) for i in items], indent=1))
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
          "the quotes and each scale's departures (listed, or derived from the config).")
    return 0


def cpu_time(item: dict) -> str:
    """The entry's wall time at ``cpu`` scale as ``sgdlab list`` shows it: ``~40 s``,
    ``~19 min``, or ``≤8 min`` where none is recorded."""
    from sgdlab.experiments.spec import wall_time_text

    minutes = item["wall_minutes"].get("cpu")
    return f"≤{CPU_UNRECORDED_AT_MOST} min" if minutes is None else wall_time_text(minutes)


def _search(query: str, items: list[dict]) -> list[str]:
    """The entries ``query`` finds (in any case), each in catalogue order: first those whose
    line (name, paper, figure, title) holds every word of it, then those whose description,
    paper's claim or a measured quantity (:func:`_measures`, also with spaces for its
    underscores) holds it as a phrase (its words in order: scattered over a description's
    prose, ``fig. 99``'s words were found in most). A query of no words finds nothing."""
    words = query.lower().split()
    if not words:
        return []
    phrase, named, described = " ".join(words), [], []
    for i in items:
        p = i["paper"]
        line = f"{i['name']} {p['author']} {p['year']}, {p['figure']}: {i['title']}".lower()
        texts = [i["description"], _squash(p.get("claim")) or "", *i["measures"],
                 *(m.replace("_", " ") for m in i["measures"])]
        if all(w in line for w in words):
            named.append(i["name"])
        elif any(phrase in t.lower() for t in texts):
            described.append(i["name"])
    return named + described


def _details(item: dict, w: int) -> None:
    pad = " " * (w + 4)
    if item["paper"].get("claim"):
        print(f"{pad}claim: {item['paper']['claim']}")
    # what is run and how the claim is checked: read before choosing a scale or a reading
    print(f"{pad}description: {item['description']}")
    print(f"{pad}run: sgdlab run {item['name']} --scale cpu --workers 2  ({cpu_time(item)} "
          "on 2 cores; smoke: seconds, only checks "
          "that it runs; paper: the paper's grid, --data-dir for data files; --dry-run: its "
          "runs and the scale's departures from the paper)")
    print(f"{pad}file: {item['file']}")
    for k, r in item["readings"].items():
        for c, desc in r["choices"].items():
            tag = " (default)" if c == r["default"] else ""
            print(f"{pad}--reading {k}={c}{tag}: {desc}")
