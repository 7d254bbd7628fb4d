"""Two outputs of one experiment side by side: what their settings change, conclusions, same-named
tables and figures in columns, plus a table of numeric differences for tables that share a name
and columns (rows matched on their settings; the rows only one report has are named)."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from sgdlab.atomic import write_whole
from sgdlab.errors import UserError
from sgdlab.report.html import (conclusions_html, figures_html, header_html, page,
                                status_html)
from sgdlab.report.settings import differing_keys, flat_config, shown
from sgdlab.report.tables import INFINITIES, Table
from sgdlab.report.verdicts import cites_paper, verdict


def load_results(out_dir: str | Path) -> dict[str, Any]:
    p = Path(out_dir) / "results.json"
    if not p.is_file():
        raise UserError(f"{str(out_dir)!r} has no results.json: not an experiment output directory")
    return json.loads(p.read_text())


def _number(v: Any) -> Any:
    """A cell as a number to subtract, as results.json writes one: null (a value not
    measured, or not finite) is NaN, "inf" / "-inf" an infinity; None for any other cell
    (text, a boolean, a list)."""
    if v is None:
        return math.nan
    if isinstance(v, str):
        return float(v) if v in INFINITIES else None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _row_keys(ta: dict[str, Any], tb: dict[str, Any]) -> list[int] | None:
    """The indices of the columns a row is matched on: the tables' declared key columns
    (:attr:`Table.keys`; a results.json written before them declares none), else None (the
    first column and the text cells)."""
    keys = ta.get("keys") or tb.get("keys") or []
    if keys and all(k in ta["columns"] for k in keys):
        return [ta["columns"].index(k) for k in keys]
    return None


def _settings(row: list[Any], keys: list[int] | None) -> list[int]:
    """The indices of ``row``'s settings: ``keys``, else the first column and the text cells."""
    if keys is not None:
        return keys
    return [0] + [i for i, v in enumerate(row)
                  if i and isinstance(v, str) and v not in INFINITIES]


def _same(v: Any) -> Any:
    """A setting as a dict key: a number as a float (a batch size written 128 by one report
    and 128.0 by another is one setting), a list as a tuple."""
    if isinstance(v, (list, tuple)):
        return tuple(_same(x) for x in v)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def table_differences(a: dict[str, Any], b: dict[str, Any]) -> list[Table]:
    """For tables with the same name and columns: B − A for numeric cells of rows matched on
    their settings: the tables' key columns (:attr:`Table.keys`), or where none are declared
    the first column and the text cells (the row labels). Rows sharing their settings (one per
    seed, say) are matched in order, the k-th of A with the k-th of B. A missing value (null)
    differs by NaN. The rows only one report has are named in the table's notes."""
    tb = {t["name"]: t for t in b.get("tables", [])}
    out = []
    for ta in a.get("tables", []):
        t2 = tb.get(ta["name"])
        if t2 is None or t2["columns"] != ta["columns"]:
            continue
        keys = _row_keys(ta, t2)
        kept = set(keys) if keys is not None else {0}     # settings: shown, not subtracted
        fmt = Table(ta["name"], ta["columns"], [])

        def keyed(rows: list[list[Any]]) -> list[tuple[tuple, list[Any]]]:
            seen: dict[tuple, int] = {}
            out = []
            for r in rows:
                label = tuple(_same(r[i]) for i in _settings(r, keys))
                seen[label] = seen.get(label, -1) + 1
                out.append(((label, seen[label]), r))
            return out
        rows_a, rows_b = keyed(ta["rows"]), dict(keyed(t2["rows"]))
        rows = []
        for k, r in rows_a:
            rb = rows_b.get(k)
            if rb is None:
                continue
            diff = []
            for i, (va, vb) in enumerate(zip(r, rb)):
                if i in kept:
                    diff.append(va)
                    continue
                na, nb = _number(va), _number(vb)
                num = na is not None and nb is not None
                diff.append(nb - na if num else (None if va == vb else f"{va} → {vb}"))
            rows.append(diff)
        matched = {k for k, _ in rows_a} & set(rows_b)
        notes = [] if rows else ["no row of A has a row of B with the same settings"]
        for tag, side in (("A", rows_a), ("B", list(rows_b.items()))):
            only = [", ".join(f"{ta['columns'][i]}={fmt._fmt(r[i])}" for i in _settings(r, keys))
                    for k, r in side if k not in matched]
            if only:
                notes.append(f"rows only in {tag}: " + "; ".join(only))
        if rows or notes:
            # a difference of two percentages in (percentage) points, as the tables show
            out.append(Table(f"{ta['name']}_diff", ta["columns"], rows, notes=notes,
                             caption=f"{ta['name']}: B − A (rows matched on their settings)",
                             percent=list(ta.get("percent", []))))
    return out


def settings_differences(a: dict[str, Any], b: dict[str, Any]) -> Table | None:
    """What differs between the settings of two reports (experiment, version, scale,
    readings, the resolved base config, runs, grid, seeds and options) and between the
    stored runs they read; None when nothing does."""
    def settings(res: dict[str, Any]) -> dict[str, str]:
        e = res.get("experiment") or {}
        readings = {k: r.get("choice") for k, r in (e.get("readings") or {}).items()}
        return flat_config({"experiment": e.get("name"), "version": e.get("version"),
                            "scale": res.get("scale"), "readings": readings,
                            **((res.get("config") or {}).get("resolved") or {})})

    flats = [settings(a), settings(b)]
    rows = [[k, *shown([f.get(k, "—") for f in flats])] for k in differing_keys(flats)]
    ids_a, ids_b = ({r["run_id"] for r in res.get("runs", [])} for res in (a, b))
    if ids_a != ids_b:
        rows.append(["stored runs", f"{len(ids_a)} ({len(ids_a & ids_b)} also in B)",
                     f"{len(ids_b)} ({len(ids_a & ids_b)} also in A)"])
    if not rows:
        return None
    return Table("settings", ["setting", "A", "B"], rows,
                 caption="what the two reports ran differently (a run is in both when both "
                         "read it from the store)")


def compare_lines(dir_a: str | Path, dir_b: str | Path) -> list[str]:
    """The page's gist for a terminal: the settings that differ (A → B), then each
    conclusion whose verdict differs, matched by the claim it tests (the k-th of a claim in A
    with the k-th in B, numbered where a claim is tested more than once), and those only one
    report draws, with their verdict. A verdict is worded as the report
    pages word it at each report's own scale (:func:`~sgdlab.report.verdicts.verdict`: none
    at smoke scale), so two smoke-scale reports show no verdict moved."""
    a, b = load_results(dir_a), load_results(dir_b)
    settings = settings_differences(a, b)
    lines = (["settings: the same settings and runs"] if settings is None else
             ["settings that differ (A → B):"]
             + [f"  {k}: {va} → {vb}" for k, va, vb in settings.rows])

    def by_claim(res: dict[str, Any]) -> dict[tuple[str, int], str]:
        out: dict[tuple[str, int], str] = {}
        for c in res.get("conclusions", []):
            claim = c.get("claim") or c.get("text", "")
            n = sum(1 for k in out if k[0] == claim)
            out[(claim, n)] = verdict(c, res.get("scale"), cited=cites_paper(res))[0]
        return out

    va, vb = by_claim(a), by_claim(b)
    # a claim tested more than once (one test per pair of settings) is numbered: two lines
    # of one claim's words read as one conclusion printed twice
    repeated = {c for c, n in (*va, *vb) if n > 0}

    def name(claim: str, n: int) -> str:
        return f"{claim} (#{n + 1})" if claim in repeated else claim

    moved = [f"  {name(claim, n)}: A {va[(claim, n)]} → B {vb[(claim, n)]}"
             for claim, n in va if (claim, n) in vb and va[(claim, n)] != vb[(claim, n)]]
    moved += [f"  {name(claim, n)}: only in {tag} ({mine[(claim, n)]})"
              for tag, mine, theirs in (("A", va, vb), ("B", vb, va))
              for claim, n in mine if (claim, n) not in theirs]
    lines.append(f"conclusions: {len(moved)} of {len(set(va) | set(vb))} differ"
                 + (":" if moved else " (the same verdicts)"))
    return lines + moved


def compare_html(dir_a: str | Path, dir_b: str | Path) -> str:
    a, b = load_results(dir_a), load_results(dir_b)
    da, db = Path(dir_a), Path(dir_b)

    def col(res: dict[str, Any], d: Path, tag: str) -> str:
        # the report's own <h1> one level under this column's <h2>: one <h1> per page
        return (f"<div><h2>{tag}: <code>{html.escape(str(d))}</code></h2>"
                + header_html(res, level=3)
                + status_html(res) + "<h3>Conclusions</h3>" + conclusions_html(res) + "</div>")

    body = ("<h1>Comparison</h1><div class='cols'>" + col(a, da, "A") + col(b, db, "B") + "</div>")
    settings = settings_differences(a, b)
    body += "<h2>Settings</h2>" + (settings.to_html() if settings is not None else
                                   "<p>The two reports have the same settings and runs.</p>")
    tb = {t["name"]: t for t in b.get("tables", [])}
    names = [t["name"] for t in a.get("tables", [])] + [
        n for n in tb if n not in {t["name"] for t in a.get("tables", [])}]
    ta = {t["name"]: t for t in a.get("tables", [])}
    body += "<h2>Tables</h2>"
    for n in names:
        left = Table.from_json(ta[n]).to_html() if n in ta else "<p>—</p>"
        right = Table.from_json(tb[n]).to_html() if n in tb else "<p>—</p>"
        body += (f"<h3>{html.escape(n)}</h3><div class='cols'><div>{left}</div>"
                 f"<div>{right}</div></div>")
    diffs = "".join(t.to_html() for t in table_differences(a, b))
    diffs += "".join(
        f"<p class='note'>{html.escape(n)}: not subtracted, its columns differ (A: "
        f"{html.escape(', '.join(ta[n]['columns']))}; B: "
        f"{html.escape(', '.join(tb[n]['columns']))})</p>"
        for n in names if n in ta and n in tb and ta[n]["columns"] != tb[n]["columns"])
    if diffs:
        body += "<h2>Differences</h2>" + diffs
    fa = {f["name"]: f for f in a.get("figures", [])}
    fb = {f["name"]: f for f in b.get("figures", [])}
    body += "<h2>Figures</h2>"
    for n in list(fa) + [n for n in fb if n not in fa]:
        left = figures_html({"figures": [fa[n]]}, da) if n in fa else "<p>—</p>"
        right = figures_html({"figures": [fb[n]]}, db) if n in fb else "<p>—</p>"
        body += f"<div class='cols'><div>{left}</div><div>{right}</div></div>"
    return page(f"{a['experiment']['name']} vs {b['experiment']['name']}", body)


def check_same_experiment(name_a: str | None, name_b: str | None, where_a: str | Path,
                          where_b: str | Path) -> None:
    """A UserError when the two reports are of two experiments (``name_a`` != ``name_b``; None:
    not known): the page matches their tables by name and rows by their settings, which in
    another experiment's tables are other quantities, and subtracts them."""
    def named(name: str, where: str | Path) -> str:
        return name if str(where) == name else f"{name} ({where})"

    if name_a and name_b and name_a != name_b:
        raise UserError(f"--compare: the reports are of two experiments, "
                        f"{named(name_a, where_a)} and {named(name_b, where_b)}: a comparison "
                        "puts two reports of one experiment side by side (other scales, "
                        "readings, grids or seeds) and subtracts their tables; compare "
                        f"{name_a} with another report of {name_a}")


def check_page_path(out: str | Path) -> Path:
    """``out`` as the comparison page's path: an ``.html`` (``.htm``) file, so that a path
    meant for something else (a report's results.json, a folder not yet made) is not
    replaced by the page."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out}: the comparison is one HTML page; give its path, ending "
                        "in .html (a rebuilt report's folder is --out without --compare)")
    return out


def write_compare(dir_a: str | Path, dir_b: str | Path, out: str | Path | None = None) -> Path:
    """Write the side-by-side page; default ``<dir_a>/compare-<name of dir_b>.html``. Neither
    report's own page is replaced by it."""
    out = (check_page_path(out) if out is not None
           else Path(dir_a) / f"compare-{Path(dir_b).resolve().name}.html")
    for tag, d in (("A", dir_a), ("B", dir_b)):
        if out.resolve() == (Path(d) / "report.html").resolve():
            raise UserError(f"--out {out} is the report page of {tag}; give the comparison "
                            "another path")
    check_same_experiment(*((load_results(d).get("experiment") or {}).get("name")
                            for d in (dir_a, dir_b)), dir_a, dir_b)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_whole(out, compare_html(dir_a, dir_b))
