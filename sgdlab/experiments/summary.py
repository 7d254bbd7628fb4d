"""A Markdown summary of several experiment outputs (the table in ``docs/RESULTS.md``).

    python -m sgdlab.experiments.summary OUT_ROOT [--command CMD] > summary.md

prints, from every ``OUT_ROOT/*/results.json``, per experiment, the paper figure it
reproduces, what it found (its conclusions, computed from the numbers) and whether each
finding agrees with the paper's qualitative claim. Nothing is recomputed. With
``--compare PAGE`` (an earlier page, e.g. docs/RESULTS.md) it prints instead which entries'
verdicts moved against that page (:func:`compare_pages`).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from sgdlab.errors import UserError
from sgdlab.report.verdicts import SMOKE
from sgdlab.report.verdicts import verdict as report_verdict

MARKDOWN = {"agree": "agrees", "disagree": "**disagrees**"}
OVERVIEW_HEAD = ("| experiment | reproduces | the paper says | agree / disagree / inconclusive |",
                 "|---|---|---|---|")
FINDINGS_HEAD = ("| finding (computed from the stored runs) | claim tested | vs paper |",
                 "|---|---|---|")


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
    overview = list(OVERVIEW_HEAD)
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
        sec += list(FINDINGS_HEAD)
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


class PageEntry(NamedTuple):
    """One entry of a parsed page: its overview counts (agree, disagree, inconclusive) and its
    findings table's rows as (finding, claim, verdict), the verdict without its markup."""
    counts: tuple[int, int, int]
    findings: list[tuple[str, str, str]]


_ROW = re.compile(r"\| \[([a-z0-9][a-z0-9-]*)\]\(#\1\) \| .* \| (\d+) / (\d+) / (\d+) \|")
_BAR = re.compile(r"(?<!\\)\|")       # a cell boundary: _cell escapes a text's own bars
_VERDICTS = {"agrees", "**disagrees**", "inconclusive", "descriptive", SMOKE, ""}


def parse_page(text: str, source: str) -> dict[str, PageEntry]:
    """The overview rows and findings tables of a page :func:`results_markdown` wrote (or
    docs/RESULTS.md, which holds one), by entry name in page order. Strict: a table line it
    cannot read, an entry without both its row and its findings table, is a
    :class:`UserError` naming ``source`` and the line."""
    counts: dict[str, tuple[int, int, int]] = {}
    found: dict[str, list[tuple[str, str, str]] | None] = {}
    where: dict[str, tuple[int, str]] = {}          # entry -> its first line, for errors
    section, table = None, False

    def fail(n: int, line: str, why: str) -> UserError:
        return UserError(f"cannot parse {source}: line {n} {line[:100]!r}: {why}")

    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            section, table = None, False
            if line.startswith("### "):
                section = line[4:]
                if section not in counts or section in found:
                    raise fail(n, line, "a section without an overview row, or a second one")
                found[section] = None
        elif not line.startswith("|"):
            table = table and line != ""
        elif section is None and line in OVERVIEW_HEAD:
            continue
        elif section is None:
            m = _ROW.fullmatch(line)
            if m is None or m[1] in counts:
                raise fail(n, line, "not an overview row `| [name](#name) | ... | A / D / I |` "
                           "(nor in a `### name` section)")
            counts[m[1]] = (int(m[2]), int(m[3]), int(m[4]))
            where[m[1]] = (n, line)
        elif line == FINDINGS_HEAD[0] and found[section] is None:
            found[section], table = [], True
        elif table and line == FINDINGS_HEAD[1]:
            continue
        else:
            cells = [c.strip().replace("\\|", "|") for c in _BAR.split(line)]
            if not table or len(cells) != 5 or cells[0] or cells[4] or cells[3] not in _VERDICTS:
                raise fail(n, line, "not a findings row `| finding | claim | verdict |`")
            found[section].append((cells[1], cells[2], cells[3].strip("*")))  # type: ignore
    if not counts:
        raise UserError(f"cannot parse {source}: no overview row `| [name](#name) | ... | "
                        "A / D / I |` in it")
    for name in counts:
        if found.get(name) is None:
            raise fail(*where[name], "no section with a findings table for this entry")
    return {name: PageEntry(counts[name], found[name]) for name in counts}  # type: ignore


def read_page(path: str | Path) -> dict[str, PageEntry]:
    """:func:`parse_page` of the file at ``path``."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e}") from None
    return parse_page(text, str(path))


def _counts(c: Iterable[int]) -> str:
    return " / ".join(map(str, c))


def _by_claim(findings: list[tuple[str, str, str]]) -> dict[tuple[str, int], tuple[str, str]]:
    # the claim has no numbers, so it survives a rerun; a claim tested twice (two models)
    # pairs by its order of appearance
    seen: Counter[str] = Counter()
    out = {}
    for text, claim, word in findings:
        if claim:
            out[(claim, seen[claim])] = (text, word)
            seen[claim] += 1
    return out


def compare_pages(old: dict[str, PageEntry], new: dict[str, PageEntry], *,
                  old_name: str = "old", new_name: str = "new") -> list[str]:
    """The lines of a report of which verdicts moved from page ``old`` to page ``new`` (both
    from :func:`parse_page`): per entry whose counts or verdicts changed, ``old -> new``
    counts, then per finding (matched by its claim) whose verdict changed, the two verdicts
    (``(none)`` where the finding is on one page only) and the new finding's text; the entries
    on one page only; the totals."""
    lines = []
    for name, entry in new.items():
        if name not in old:
            continue
        was, now = _by_claim(old[name].findings), _by_claim(entry.findings)
        moved = []
        for key in list(now) + [k for k in was if k not in now]:
            before = was[key][1] if key in was else "(none)"
            after = now[key][1] if key in now else "(none)"
            if before != after:
                moved.append(f"  {before} -> {after}: {key[0]}")
                if key in now:
                    moved.append(f"    now: {now[key][0]}")
        if moved or old[name].counts != entry.counts:
            lines += [f"{name}: {_counts(old[name].counts)} -> {_counts(entry.counts)}"] + moved
    for page, other, label in ((old, new, old_name), (new, old, new_name)):
        lines += [f"only in {label}: {name} ({_counts(e.counts)})"
                  for name, e in page.items() if name not in other]

    def totals(page: dict[str, PageEntry]) -> str:
        return _counts(sum(e.counts[i] for e in page.values()) for i in range(3))

    return (lines or ["no verdict changed"]) + [
        f"totals (agree / disagree / inconclusive): {totals(old)} -> {totals(new)}, "
        f"{len(old)} -> {len(new)} experiments"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sgdlab.experiments.summary",
                                 description=__doc__.splitlines()[0].replace("``", ""))
    ap.add_argument("root", help="directory holding one output directory per experiment")
    ap.add_argument("--command", default="sgdlab run NAME --scale cpu --workers 2",
                    help="the command the page says regenerates the outputs (default: "
                         "%(default)s)")
    ap.add_argument("--compare", metavar="PAGE",
                    help="instead of the page, print which verdicts moved against PAGE (an "
                         "earlier page, e.g. docs/RESULTS.md): per entry, old -> new counts and "
                         "the findings, matched by their claim, whose verdict changed")
    args = ap.parse_args(argv)
    try:
        results = load_all(args.root)
        if not results:      # a mistyped folder: an empty table would look like a summary
            raise UserError(f"no experiment output in {args.root}: it holds the output "
                            "folders of `sgdlab run` (each with its results.json)")
        out = page = results_markdown(results, command=args.command)
        if args.compare is not None:
            lines = compare_pages(read_page(args.compare),
                                  parse_page(page, f"the page of {args.root}"),
                                  old_name=args.compare, new_name=args.root)
            out = "\n".join(lines) + "\n"
    except UserError as e:
        print(f"summary: error: {e}", file=sys.stderr)
        return 2
    print(out, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
