"""A Markdown summary of several experiment outputs (the table in ``docs/RESULTS.md``).

    python -m sgdlab.experiments.summary OUT_ROOT [--command CMD] > summary.md

prints, from every ``OUT_ROOT/*/results.json``, per experiment, the paper figure it
reproduces, what it found (its conclusions, computed from the numbers) and whether each
finding agrees with the paper's qualitative claim. Nothing is recomputed.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sgdlab.errors import UserError
from sgdlab.report.verdicts import verdict as report_verdict

MARKDOWN = {"agree": "agrees", "disagree": "**disagrees**"}


def verdict(agrees: bool | None, conclusion: dict[str, Any], scale: str | None = None) -> str:
    """The report's verdict (:func:`sgdlab.report.verdicts.verdict`) in the table's words: a
    checked claim with no decision is inconclusive, a finding with no claim a description,
    nothing at smoke scale a verdict."""
    words, kind = report_verdict({**conclusion, "agrees_with_paper": agrees}, scale)
    return MARKDOWN.get(kind, words)


def load_all(root: str | Path) -> list[dict[str, Any]]:
    return load_results(p.parent for p in sorted(Path(root).glob("*/results.json")))


def load_results(folders: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The experiments' results.json of ``folders`` (output folders of ``sgdlab run``), in
    order; a folder without one, or holding another command's, is left out."""
    out = []
    for folder in folders:
        p = Path(folder) / "results.json"
        if not p.is_file():
            continue
        try:
            r = json.loads(p.read_text())
        except (OSError, ValueError) as e:   # a summary without it would be silently short
            raise UserError(f"cannot read {p}: {e}; rebuild it with `sgdlab report "
                            f"{p.parent}` or remove that folder") from None
        if not isinstance(r, dict) or "experiment" not in r:
            continue  # a training run's or a demo's results.json, not an experiment's
        r["_dir"] = str(p.parent)
        out.append(r)
    return out


def write_summary(folders: Iterable[str | Path], path: str | Path, *, command: str) -> Path:
    """Write :func:`results_markdown` of the experiments in ``folders`` to ``path`` (whole or
    not at all) and return it."""
    from sgdlab.atomic import write_whole

    return write_whole(path, results_markdown(load_results(folders), command=command))


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def verdict_counts(result: dict[str, Any]) -> tuple[int, int, int]:
    """(agree, disagree, inconclusive) over an experiment's conclusions (its results.json);
    none at smoke scale, whose conclusions decide nothing."""
    if result.get("scale") == "smoke":
        return 0, 0, 0
    cs = result.get("conclusions") or []
    agree = sum(c.get("agrees_with_paper") is True for c in cs)
    dis = sum(c.get("agrees_with_paper") is False for c in cs)
    open_ = sum(c.get("agrees_with_paper") is None and bool(c.get("claim")) for c in cs)
    return agree, dis, open_


def results_markdown(results: list[dict[str, Any]], *, command: str) -> str:
    """An overview table (one row per experiment, with the paper's quoted claim), then one
    section per experiment: its findings with verdicts and the scale's departures from the
    paper's setting."""
    overview = ["| experiment | reproduces | the paper says | agree / disagree / inconclusive |",
                "|---|---|---|---|"]
    sections: list[str] = []
    totals = [0, 0, 0]
    for r in results:
        e, p = r["experiment"], r["experiment"]["paper"]
        ref = f"{p['author'].split(',')[0]} {p['year']}, {p['figure']}"
        cs = r.get("conclusions") or []
        a, d, o = verdict_counts(r)
        totals = [totals[0] + a, totals[1] + d, totals[2] + o]
        quote = (f"“{_cell(p['quote'])}” ({_cell(p.get('where', ''))})" if p.get("quote")
                 else _cell(p.get("claim", "")))
        overview.append(f"| [{e['name']}](#{e['name']}) | {ref} | {quote} | {a} / {d} / {o} |")
        sec = [f"### {e['name']}", "", f"{ref} — {_cell(e.get('title', ''))}", ""]
        for q in ([p] if p.get("quote") else []) + list(p.get("quotes", [])):
            sec += [f"> “{' '.join(str(q['quote']).split())}” — {q.get('where', '')}", ""]
        sec += ["| finding (computed from the stored runs) | claim tested | vs paper |",
                "|---|---|---|"]
        for c in cs or [{"text": "no conclusion", "agrees_with_paper": None}]:
            sec.append(f"| {_cell(c['text'])} | {_cell(c.get('claim') or '')} | "
                       f"{verdict(c.get('agrees_with_paper'), c, r.get('scale'))} |")
        if r.get("incomplete"):
            sec.append(f"| incomplete: {len(r.get('missing_runs', []))} runs missing | | |")
        devs = e.get("deviations") or []
        sec += ["", f"Departures from the paper at `{r.get('scale', '?')}` scale:"
                if devs else f"No departures from the paper listed at `{r.get('scale', '?')}` "
                "scale."]
        sec += [f"- {' '.join(x.split())}" for x in devs]
        rs = e.get("readings") or {}
        if rs:
            sec += ["", "Readings of the paper's text: " + "; ".join(
                f"`{k}={v['choice']}`" + (" (default)" if v["choice"] == v["default"] else "")
                + f" — {_cell(v['description'])}" for k, v in rs.items()) + "."]
        sections.append("\n".join(sec))
    head = [f"Regenerate: `{command}`", "",
            f"{len(results)} experiments, {totals[0]} findings agree with the paper's claim, "
            f"{totals[1]} disagree, {totals[2]} are inconclusive (inside the seed-to-seed "
            "spread or not decidable from the numbers).", ""]
    return "\n".join(head + overview + [""]) + "\n" + "\n\n".join(sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sgdlab.experiments.summary",
                                 description=__doc__.splitlines()[0].replace("``", ""))
    ap.add_argument("root", help="directory holding one output directory per experiment")
    ap.add_argument("--command", default="sgdlab run NAME --scale cpu --workers 2",
                    help="the command the page says regenerates the outputs (default: "
                         "%(default)s)")
    args = ap.parse_args(argv)
    try:
        results = load_all(args.root)
        if not results:      # a mistyped folder: an empty table would look like a summary
            raise UserError(f"no experiment output in {args.root}: it holds the output "
                            "folders of `sgdlab run` (each with its results.json)")
    except UserError as e:
        print(f"summary: error: {e}", file=sys.stderr)
        return 2
    print(results_markdown(results, command=args.command), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
