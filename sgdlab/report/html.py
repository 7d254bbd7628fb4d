"""Self-contained HTML pages for experiment results (images embedded as base64 PNG).

``write_html(results, out_dir)`` renders ``results.json`` (as written by the experiment runner)
plus the PNG files it names into ``out_dir/report.html``. Nothing is recomputed here.
"""
from __future__ import annotations

import base64
import html
import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from sgdlab.atomic import write_whole
from sgdlab.report.inline_math import inline_math_html
from sgdlab.report.tables import Table
from sgdlab.report.verdicts import DERIVED, SMOKE_SCALE, cites_paper, verdict

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.6em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} caption{text-align:left;
font-weight:600;padding:.3em 0} th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.fig{display:inline-block;margin:.5em;vertical-align:top;text-align:center;max-width:100%}
.fig img{max-width:min(560px,100%);border:1px solid #eee;cursor:zoom-in}
.fig.wide{display:block;margin:.5em 0} .fig.wide img{width:100%;max-width:100%}
.fig img.zoom{position:fixed;inset:0;margin:auto;width:auto;max-width:98vw;max-height:98vh;
z-index:10;background:#fff;box-shadow:0 0 0 100vmax rgba(0,0,0,.6);cursor:zoom-out}
.fig p{margin:.2em;color:#555;font-size:.85em}
.agree{color:#0a7a22;font-weight:600} .disagree{color:#b00020;font-weight:600}
.neutral{color:#555} pre{background:#f8f8f8;padding:.8em;overflow:auto;font-size:.8em;
max-height:30em} .warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em}
.note{color:#555;font-size:.85em;margin:.2em 0} .cols{display:flex;gap:1.5em}
.cols>div{flex:1;min-width:0} details{margin:.6em 0}
blockquote{margin:.5em 0 .5em 1em;padding:.3em .8em;border-left:3px solid #bbb;color:#333}
"""


# the missing runs the page names; the rest are counted
MISSING_SHOWN = 20

# A figure this much wider than tall (a row of panels) gets the page's full width.
WIDE_ASPECT = 1.8


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG's IHDR chunk; None if ``data`` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _img(path: Path, alt: str) -> tuple[str, bool]:
    """(the embedded image, whether it is wide); a click toggles a full-window view."""
    if not path.is_file():
        return f"<p class='warn'>missing figure {html.escape(str(path))}</p>", False
    data = path.read_bytes()
    size = png_size(data)
    wide = size is not None and size[0] >= WIDE_ASPECT * size[1]
    b64 = base64.b64encode(data).decode()
    return (f"<img alt='{html.escape(alt)}' title='click to enlarge' "
            f"onclick=\"this.classList.toggle('zoom')\" src='data:image/png;base64,{b64}'>",
            wide)


def conclusions_html(results: dict[str, Any]) -> str:
    items = []
    cited = cites_paper(results)
    whose = "paper" if cited else "claim"
    for c in results.get("conclusions", []):
        claim = (f"<br><span class='note'>{whose}: {html.escape(c['claim'])}</span>"
                 if c.get("claim") else "")
        words, kind = verdict(c, results.get("scale"), cited=cited)
        items.append(f"<li>{html.escape(c['text'])} — <span class='{kind}'>"
                     f"{html.escape(words)}</span>{claim}</li>")
    return "<ul>" + "".join(items) + "</ul>" if items else "<p>No conclusions.</p>"


def figures_html(results: dict[str, Any], base_dir: Path) -> str:
    """Each figure with a caption: what it shows (its title, where the figure has one), its
    name and its SVG file, a link relative to the page (the PNG is embedded)."""
    parts = []
    for f in results.get("figures", []):
        title = f.get("title") or ""
        img, wide = _img(base_dir / f["png"], title or f["name"])
        shows = f"{html.escape(title)}<br>" if title else ""
        svg = html.escape(f["svg"])
        parts.append(f"<div class='fig{' wide' if wide else ''}'>{img}<p>{shows}"
                     f"{html.escape(f['name'])} (<a href='{svg}'><code>{svg}</code></a>)"
                     "</p></div>")
    return "".join(parts) or "<p>No figures.</p>"


def tables_html(results: dict[str, Any]) -> str:
    tables = "".join(Table.from_json(t).to_html() for t in results.get("tables", []))
    return tables or "<p>No tables.</p>"


def header_html(results: dict[str, Any], level: int = 1) -> str:
    """The experiment's name as a heading of ``level`` (the comparison page nests each
    report's under its own <h2>), then what it reproduces, the claim, quotes and readings."""
    e = results["experiment"]
    p = e.get("paper", {})
    # the paper's title before the figure: after it, it read as the figure's caption
    title = f"<i>{html.escape(str(p['title']))}</i>, " if p.get("title") else ""
    ref = (f"{html.escape(str(p.get('author', '?')))} ({html.escape(str(p.get('year', '?')))}), "
           f"{title}{html.escape(str(p.get('figure', '?')))}")
    claim = f"<p><b>Paper's claim:</b> {html.escape(str(p['claim']))}</p>" if p.get("claim") else ""
    return (f"<h{level}>{html.escape(e['name'])} <small>v{e['version']} · scale "
            f"{html.escape(results['scale'])}</small></h{level}>"
            f"<p class='sub'>{html.escape(e.get('title', ''))}</p>"
            f"<p><b>Reproduces:</b> {ref}</p>{claim}{quotes_html(p)}"
            f"<p>{html.escape(e.get('description', ''))}</p>{readings_html(e)}")


def readings_html(experiment: dict[str, Any]) -> str:
    """How the report reads each passage its paper leaves open (``--reading KEY=CHOICE``)."""
    rs = experiment.get("readings") or {}
    if not rs:
        return ""
    items = "".join(
        f"<li><code>{html.escape(k)}={html.escape(r['choice'])}</code>"
        + (" (default)" if r["choice"] == r["default"]
           else f" (default: {html.escape(r['default'])})")
        + f": {html.escape(r['description'])}</li>" for k, r in rs.items())
    return ("<p><b>Readings of the paper's text</b> (<code>sgdlab run --reading "
            f"KEY=CHOICE</code>):</p><ul>{items}</ul>")


def quotes_html(paper: dict[str, Any]) -> str:
    """The paper's own words for what is tested, with their locations; the inline LaTeX of
    both rendered (:func:`sgdlab.report.inline_math.inline_math_html`)."""
    pairs = ([{"quote": paper["quote"], "where": paper.get("where", "")}] if paper.get("quote")
             else []) + list(paper.get("quotes", []))
    return "".join(f"<blockquote>“{inline_math_html(' '.join(str(q['quote']).split()))}”<br>"
                   f"<span class='note'>— {inline_math_html(str(q['where']))}</span></blockquote>"
                   for q in pairs)


def deviations_html(results: dict[str, Any]) -> str:
    """Where this scale departs from the paper's setting, shown beside the verdicts: as the
    entry lists it, else as derived from the config; at smoke scale, what that scale is
    for."""
    e, scale = results["experiment"], html.escape(results["scale"])
    smoke = results["scale"] == "smoke"
    parts = [f"<p class='note'>{SMOKE_SCALE}</p>"] if smoke else []
    mind = "" if smoke else " (read the verdicts with these in mind)"    # smoke tests no claim
    for devs, how in ((e.get("deviations"), ""),
                      (e.get("derived_deviations"), f", {html.escape(DERIVED)}")):
        if devs:
            items = "".join(f"<li>{html.escape(d)}</li>" for d in devs)
            parts.append(f"<p class='note'><b>Departures from the paper at scale {scale}</b>"
                         f"{how}{mind}:</p>"
                         f"<ul class='note'>{items}</ul>")
    return "".join(parts)


def status_html(results: dict[str, Any]) -> str:
    parts = []
    if results.get("incomplete"):
        missing = results.get("missing_runs", [])
        miss = ", ".join(missing[:MISSING_SHOWN]) + (
            f", and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else "")
        again = (f"<code>{html.escape(results['command'])}</code>" if results.get("command")
                 else "<code>sgdlab run</code>, same scale and store")
        total = len(missing) + len(results.get("runs", []))
        parts.append(f"<p class='warn'>Incomplete: {len(missing)} of {total} runs missing "
                     f"({html.escape(miss)}); the tables, figures and conclusions cover the "
                     f"stored runs only. Running the experiment again ({again}) completes "
                     "them.</p>")
    failed = (results.get("sweep") or {}).get("failed") or []
    if failed:
        items = "".join(f"<li><code>{html.escape(str(f['run']))}</code>: "
                        f"{html.escape(str(f['message']))}</li>" for f in failed)
        runs = "run" if len(failed) == 1 else "runs"
        parts.append(f"<div class='warn'>{len(failed)} {runs} failed in this invocation:"
                     f"<ul>{items}</ul></div>")
    if results.get("missing_outputs"):
        parts.append("<p class='warn'>Declared outputs not produced: "
                     + html.escape(", ".join(results["missing_outputs"])) + "</p>")
    for n in results.get("notes", []):
        parts.append(f"<p class='note'>{html.escape(n)}</p>")
    return "".join(parts)


def runs_html(results: dict[str, Any]) -> str:
    runs = results.get("runs", [])
    rows = [[r["label"], r["seed"], r["status"], r["run_id"], r["key"]] for r in runs]
    columns = ["run", "seed", "status", "store run id", "run key"]
    if any(r.get("message") for r in runs):     # where a diverged run stopped, and why
        columns.insert(3, "how it ended")
        for row, r in zip(rows, runs):
            row.insert(3, r.get("message") or "")
    t = Table("runs", columns, rows)
    sw = results.get("sweep")
    sweep = ""
    if sw:
        sweep = (f"<p>This invocation executed {sw['executed']} runs and reused {sw['skipped']} "
                 f"from the store in {sw['seconds']} s; {len(sw['failed'])} failed.</p>")
    store = html.escape(str(results.get('store')))
    return sweep + f"<p>Store: <code>{store}</code></p>" + t.to_html()


def regenerate_html(results: dict[str, Any], base_dir: Path) -> str:
    """The commands that write this page again: ``sgdlab report`` from the stored runs, and
    the ``sgdlab run`` command of the experiment (it trains only the runs the store lacks)."""
    rebuild = shlex.join(["sgdlab", "report", str(base_dir.resolve())])
    run = (f"<p>Run the experiment again (it trains only the runs the store lacks, then "
           f"writes this page): <code>{html.escape(results['command'])}</code></p>"
           if results.get("command") else "")
    return (f"<p>Rebuild this page from the stored runs, without training: "
            f"<code>{html.escape(rebuild)}</code></p>{run}")


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>{body}"
            "</body></html>\n")


def render(results: dict[str, Any], base_dir: Path) -> str:
    cfg = yaml.safe_dump(results.get("config", {}).get("file", {}), sort_keys=False,
                         allow_unicode=True)
    resolved = yaml.safe_dump(results.get("config", {}).get("resolved", {}), sort_keys=False,
                              allow_unicode=True)
    env = json.dumps(results.get("environment", {}), indent=1, ensure_ascii=False)
    source = html.escape(str(results.get('config', {}).get('source')))
    generated = html.escape(str(results.get('generated_at')))
    body = (header_html(results) + status_html(results)
            + "<h2>Conclusions</h2>" + conclusions_html(results) + deviations_html(results)
            + "<h2>Tables</h2>" + tables_html(results)
            + "<h2>Figures</h2>" + figures_html(results, base_dir)
            + "<h2>Runs</h2>" + runs_html(results)
            + "<h2>Regenerate</h2>" + regenerate_html(results, base_dir)
            + "<h2>Config</h2><p>Source: <code>" + source
            + "</code> (copy it and run <code>sgdlab run --config FILE</code>)</p>"
            + f"<pre>{html.escape(cfg)}</pre><details><summary>resolved at scale "
            f"{html.escape(results['scale'])}</summary><pre>{html.escape(resolved)}</pre></details>"
            + f"<h2>Environment</h2><pre>{html.escape(env)}</pre>"
            + f"<p class='note'>Generated {generated} by sgdlab.</p>")
    return page(page_title(results), body)


def page_title(results: dict[str, Any]) -> str:
    """The browser tab's words: the entry, its scale and the readings off their defaults
    (two reports of one entry, open side by side, are told apart)."""
    e = results["experiment"]
    taken = [f"{k}={r['choice']}" for k, r in (e.get("readings") or {}).items()
             if r["choice"] != r["default"]]
    return f"{e['name']} ({'; '.join([str(results['scale']), *taken])}) — sgdlab"


def write_html(results: dict[str, Any], out_dir: str | Path, filename: str = "report.html") -> Path:
    out_dir = Path(out_dir)
    path = out_dir / filename
    return write_whole(path, render(results, out_dir))
