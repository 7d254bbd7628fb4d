"""``sgdlab list [--json]``: the experiment catalogue with the paper figure each reproduces, and
the readings (``sgdlab run NAME --reading KEY=CHOICE``) of the passages its paper leaves open."""
from __future__ import annotations

import argparse

from sgdlab.strict_json import dumps


def register(subparsers) -> None:
    p = subparsers.add_parser("list", help="list the experiment catalogue",
                              description="List the catalogue: name, description, and the "
                                          "paper figure/table each experiment reproduces.")
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
                    "scales": sorted(set(raw.get("scales", {})) | {"smoke", "cpu", "paper"}),
                    "file": str(path)})
    return out


def _squash(text: str | None) -> str | None:
    return None if text is None else " ".join(text.split())


def _list(args: argparse.Namespace) -> int:
    items = catalogue()
    if args.json:
        print(dumps(items, indent=1))
        return 0
    w = max((len(i["name"]) for i in items), default=10)
    for i in items:
        p = i["paper"]
        print(f"{i['name']:<{w}}  {p['author']} {p['year']}, {p['figure']}: {i['title']}")
        for k, r in i["readings"].items():
            for c, desc in r["choices"].items():
                tag = " (default)" if c == r["default"] else ""
                print(f"{'':<{w}}    --reading {k}={c}{tag}: {desc}")
    print(f"\n{len(items)} experiments. Run one: sgdlab run NAME --scale smoke|cpu|paper")
    return 0
