"""A Markdown summary of several experiment outputs (the table in ``docs/RESULTS.md``).

    python -m sgdlab.experiments.summary OUT_ROOT [--write docs/RESULTS.md]

reads every ``OUT_ROOT/*/results.json`` and lists, per experiment, the paper figure it
reproduces, what it found (its conclusions, computed from the numbers) and whether each
finding agrees with the paper's qualitative claim. Nothing is recomputed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

VERDICT = {True: "agrees", False: "**disagrees**", None: "descriptive"}


def verdict(agrees: bool | None, conclusion: dict[str, Any]) -> str:
    """A checked claim with no decision is inconclusive; a finding with no claim is a
    description."""
    if agrees is None and conclusion.get("claim"):
        return "inconclusive"
    return VERDICT[agrees]


def load_all(root: str | Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted(Path(root).glob("*/results.json")):
        r = json.loads(p.read_text())
        if not isinstance(r, dict) or "experiment" not in r:
            continue  # a training run's or a demo's results.json, not an experiment's
        r["_dir"] = str(p.parent)
        out.append(r)
    return out


def results_markdown(results: list[dict[str, Any]], *, command: str) -> str:
    lines = ["| experiment | reproduces | finding (computed from the stored runs) | vs paper |",
             "|---|---|---|---|"]
    n_agree = n_dis = n_open = 0
    for r in results:
        e, p = r["experiment"], r["experiment"]["paper"]
        ref = f"{p['author'].split(',')[0]} {p['year']}, {p['figure']}"
        cs = r.get("conclusions") or [{"text": "no conclusion", "agrees_with_paper": None}]
        for i, c in enumerate(cs):
            v = c.get("agrees_with_paper")
            n_agree += v is True
            n_dis += v is False
            n_open += v is None and bool(c.get("claim"))
            text = c["text"].replace("|", "\\|")
            lines.append(f"| {e['name'] if i == 0 else ''} | {ref if i == 0 else ''} | "
                         f"{text} | {verdict(v, c)} |")
        if r.get("incomplete"):
            lines.append(f"| | | incomplete: {len(r.get('missing_runs', []))} runs missing | |")
    head = [f"Regenerate: `{command}`", "",
            f"{len(results)} experiments, {n_agree} findings agree with the paper's qualitative "
            f"claim, {n_dis} disagree, {n_open} are inconclusive (inside the seed-to-seed "
            "spread).", ""]
    return "\n".join(head + lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="directory holding one output directory per experiment")
    ap.add_argument("--command", default="sgdlab run NAME --scale cpu --workers 2")
    args = ap.parse_args(argv)
    print(results_markdown(load_all(args.root), command=args.command), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
