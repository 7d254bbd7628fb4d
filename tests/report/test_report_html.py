"""report.html: wide figures get the page width, Unicode stays readable, smoke scale gives no
verdict (in the page, RESULTS.md and the CLI)."""
from __future__ import annotations

import re
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sgdlab.experiments.summary import results_markdown  # noqa: E402
from sgdlab.report.html import png_size, render  # noqa: E402
from sgdlab.report.verdicts import SMOKE, SMOKE_SCALE  # noqa: E402

CONCLUSIONS = [{"text": "λ_max falls with η/B", "claim": "sharper at small η/B",
                "agrees_with_paper": False},
               {"text": "accuracy rises", "claim": "flatter generalises",
                "agrees_with_paper": True}]


def _figure(path, size):
    fig = plt.figure(figsize=size, dpi=40)
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(path, dpi=40)
    plt.close(fig)


def _results(tmp_path, scale):
    (tmp_path / "figures").mkdir(exist_ok=True)
    _figure(tmp_path / "figures" / "panels.png", (15, 4))
    _figure(tmp_path / "figures" / "square.png", (5, 4))
    # a catalogue-like entry: its paper cited, its verdicts worded against it
    paper = {"author": "J", "year": 2017, "figure": "F1"}
    return {"experiment": {"name": "grid", "version": 1, "title": "η/B grid", "paper": paper},
            "scale": scale, "conclusions": CONCLUSIONS,
            "figures": [{"name": n, "png": f"figures/{n}.png", "svg": f"figures/{n}.svg"}
                        for n in ("panels", "square")],
            "config": {"file": {"x_label": "η/B", "y": "‖H‖_F"}, "resolved": {"lr": "η"}},
            "environment": {"host": "θ-box"}}


def _fig_divs(page):
    return dict((name, cls) for cls, name in
                re.findall(r"<div class='(fig(?: wide)?)'><img alt='([^']+)'", page))


def test_wide_figures_get_the_page_width_and_enlarge_on_click(tmp_path):
    page = render(_results(tmp_path, "cpu"), tmp_path)
    assert png_size((tmp_path / "figures" / "panels.png").read_bytes()) == (600, 160)
    assert _fig_divs(page) == {"panels": "fig wide", "square": "fig"}
    assert ".fig.wide img{width:100%;max-width:100%}" in page
    assert page.count("onclick=\"this.classList.toggle('zoom')\"") == 2
    assert ".fig img.zoom{position:fixed" in page
    assert png_size(b"GIF89a" + bytes(30)) is None


def test_config_and_environment_show_unicode_unescaped(tmp_path):
    page = render(_results(tmp_path, "cpu"), tmp_path)
    assert "x_label: η/B" in page and "y: ‖H‖_F" in page and "lr: η" in page
    assert "θ-box" in page
    assert "\\u03B7" not in page and "\\u2016" not in page and "\\u03b8" not in page


def test_smoke_scale_shows_no_verdict(tmp_path):
    cpu = render(_results(tmp_path, "cpu"), tmp_path)
    assert "<span class='disagree'>disagrees with the paper</span>" in cpu
    assert "<span class='agree'>agrees with the paper</span>" in cpu
    smoke = render(_results(tmp_path, "smoke"), tmp_path)
    assert "disagree" not in smoke.replace(".disagree{", "") and "agrees with" not in smoke
    assert smoke.count(f"<span class='neutral'>{SMOKE}</span>") == 2

    r = _results(tmp_path, "smoke") | {"experiment": {
        "name": "grid", "title": "t", "paper": {"author": "J", "year": 2017, "figure": "F1"}}}
    md = results_markdown([r], command="cmd")
    assert "0 disagree" in md and f"| {SMOKE} |" in md and "disagrees**" not in md


def test_cli_prints_smoke_conclusions_without_verdicts(tmp_path, monkeypatch, capsys):
    import sgdlab.experiments.runner as runner
    from sgdlab.cli.main import main

    def fake(name, *, scale, **kw):
        return SimpleNamespace(results={"scale": scale, "conclusions": CONCLUSIONS},
                               sweep=SimpleNamespace(failed=[]), ok=True, out_dir=tmp_path,
                               report_path=tmp_path / "report.html")

    monkeypatch.setattr(runner, "run_experiment", fake)
    # the fake runner stands for an entry the catalogue lacks: the folder is given
    assert main(["run", "grid", "--scale", "smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"conclusions ({SMOKE}):\n  - λ_max falls with η/B\n  - accuracy rises" in out
    assert "DISAGREES" not in out and "agrees" not in out
    assert main(["run", "grid", "--scale", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # under a header, not running on from the runs' progress lines
    assert ("conclusions:\n  - [DISAGREES] λ_max falls with η/B\n  - [agrees] accuracy rises"
            in out)


def test_a_claim_outside_the_papers_regime_is_neither_agreement_nor_disagreement(tmp_path):
    import json

    from sgdlab.report.compare import compare_lines
    from sgdlab.report.verdicts import OUTSIDE, verdict

    outside = [dict(c, agrees_with_paper=None, outside_regime="l ten times the paper's",
                    measured=c["agrees_with_paper"]) for c in CONCLUSIONS]
    assert [verdict(c, "cpu") for c in outside] == [(OUTSIDE, "neutral")] * 2
    assert verdict(outside[0], "smoke") == (SMOKE, "neutral")
    page = render(_results(tmp_path, "cpu") | {"conclusions": outside}, tmp_path)
    assert page.count("<span class='neutral'>outside the paper&#x27;s regime</span>") == 2
    assert "disagrees with the paper" not in page and "agrees with the paper" not in page
    # a comparison of the two reports names the move, not "inconclusive"
    for d, cs in (("a", CONCLUSIONS), ("b", outside)):
        (tmp_path / d).mkdir()
        (tmp_path / d / "results.json").write_text(json.dumps(
            {"experiment": {"name": "grid"}, "scale": "cpu", "conclusions": cs}))
    lines = compare_lines(tmp_path / "a", tmp_path / "b")
    assert f"  sharper at small η/B: A disagrees with the paper → B {OUTSIDE}" in lines


def test_each_verdict_is_worded_for_its_claim_and_scale():
    from sgdlab.report.verdicts import OUTSIDE, verdict

    claim = {"text": "t", "claim": "c"}
    assert verdict(claim | {"agrees_with_paper": True}, "cpu") == ("agrees with the paper",
                                                                   "agree")
    assert verdict(claim | {"agrees_with_paper": False}, "paper") == (
        "disagrees with the paper", "disagree")
    assert verdict(claim | {"agrees_with_paper": None}, "cpu") == ("inconclusive", "neutral")
    assert verdict(claim | {"agrees_with_paper": True, "outside_regime": "why"}, "cpu") == (
        OUTSIDE, "neutral")
    # a finding without a claim is a description, outside the paper's regime or not
    for extra in ({}, {"outside_regime": "why"}):
        assert verdict({"text": "t", "agrees_with_paper": None} | extra, "cpu") == (
            "descriptive", "neutral")
    assert verdict(claim | {"agrees_with_paper": True}, "smoke") == (SMOKE, "neutral")


def test_the_page_shows_every_table_note_missing_run_and_the_claim_beside_its_verdict(
        tmp_path):
    from sgdlab.report.tables import Table

    r = _results(tmp_path, "cpu") | {
        "tables": [Table("t1", ["a"], [[1]]).to_json(), Table("t2", ["b"], [[2]]).to_json()],
        "incomplete": True, "missing_runs": ["m1", "m2"], "notes": ["one seed failed"],
        "runs": [{"label": "lr=0.1", "seed": 3, "status": "finished", "run_id": "ID7",
                  "key": "KEY9"}]}
    page = render(r, tmp_path)
    assert "<thead><tr><th>a</th></tr></thead>" in page and "<th>b</th>" in page
    assert ("2 of 3 runs missing (m1, m2); the tables, figures and conclusions cover the "
            "stored runs only.") in page
    assert "<p class='note'>one seed failed</p>" in page
    assert "<li>λ_max falls with η/B — <span class='disagree'>disagrees with the paper</span>" \
        "<br><span class='note'>paper: sharper at small η/B</span></li>" in page
    # the runs table: each value under its column
    assert ("<th>run</th><th>seed</th><th>status</th><th>store run id</th><th>run key</th>"
            in page)
    assert "<tr><td>lr=0.1</td><td>3</td><td>finished</td><td>ID7</td><td>KEY9</td></tr>" \
        in page


def test_the_citation_names_the_paper_before_its_figure(tmp_path):
    r = _results(tmp_path, "cpu") | {"experiment": {
        "name": "grid", "version": 1, "paper": {"author": "Smith & Jones", "year": 2019,
                                                "figure": "Fig. 3(c)", "title": "On <noise>"}}}
    page = render(r, tmp_path)
    assert ("<p><b>Reproduces:</b> Smith &amp; Jones (2019), <i>On &lt;noise&gt;</i>, "
            "Fig. 3(c)</p>") in page


def test_each_figure_s_caption_says_what_it_shows_and_links_its_svg(tmp_path):
    r = _results(tmp_path, "cpu")
    r["figures"][0]["title"] = "Fig. 1: loss & η < 1; seed 0"
    page = render(r, tmp_path)
    assert ("<img alt='Fig. 1: loss &amp; η &lt; 1; seed 0' " in page)
    assert ("<p>Fig. 1: loss &amp; η &lt; 1; seed 0<br>panels (<a href='figures/panels.svg'>"
            "<code>figures/panels.svg</code></a>)</p>") in page
    # a figure without a title (a results.json written before titles) keeps its name alone
    assert ("<p>square (<a href='figures/square.svg'><code>figures/square.svg</code></a>)</p>"
            in page)


def test_missing_and_failed_runs_are_counted_named_and_the_command_that_completes_them(
        tmp_path):
    missing = [f"run{i}" for i in range(23)]
    r = _results(tmp_path, "cpu") | {
        "incomplete": True, "missing_runs": missing, "command": "sgdlab run grid --scale cpu",
        "sweep": {"executed": 2, "skipped": 0, "seconds": 1.0,
                  "failed": [{"run": "lr=1|seed=0", "message": "loss <inf> & more"}]}}
    page = render(r, tmp_path)
    assert ("23 of 23 runs missing (run0, run1, run2, run3, run4, run5, run6, run7, run8, run9, "
            "run10, run11, run12, run13, run14, run15, run16, run17, run18, run19, and 3 more)"
            "; the tables, figures and conclusions cover the stored runs only. Running the "
            "experiment again (<code>sgdlab run grid --scale cpu</code>) "
            "completes them.") in page
    assert "`" not in page.split("<h2>Conclusions")[0]
    assert ("1 run failed in this invocation:<ul><li><code>lr=1|seed=0</code>: "
            "loss &lt;inf&gt; &amp; more</li></ul>") in page
    assert ("<h2>Regenerate</h2><p>Rebuild this page from the stored runs, without "
            f"training: <code>sgdlab report {tmp_path.resolve()}</code></p><p>Run the "
            "experiment again (it trains only the runs the store lacks, then writes this "
            "page): <code>sgdlab run grid --scale cpu</code></p>") in page


def test_the_runs_table_says_where_a_diverged_run_stopped(tmp_path):
    run = {"label": "calm", "seed": 0, "status": "finished", "run_id": "A", "key": "K1"}
    page = render(_results(tmp_path, "cpu") | {"runs": [run]}, tmp_path)
    assert "how it ended" not in page
    wild = run | {"label": "wild", "status": "diverged", "run_id": "B", "key": "K2",
                  "message": "non-finite mini-batch loss (inf) at step 1"}
    page = render(_results(tmp_path, "cpu") | {"runs": [run | {"message": ""}, wild]},
                  tmp_path)
    assert "<th>status</th><th>how it ended</th><th>store run id</th>" in page
    assert ("<tr><td>wild</td><td>0</td><td>diverged</td><td>non-finite mini-batch loss "
            "(inf) at step 1</td><td>B</td><td>K2</td></tr>") in page
    assert "<tr><td>calm</td><td>0</td><td>finished</td><td></td><td>A</td>" in page


def test_the_page_title_names_the_scale_and_the_readings_off_their_defaults(tmp_path):
    r = _results(tmp_path, "smoke")
    assert "<title>grid (smoke) — sgdlab</title>" in render(r, tmp_path)
    r["experiment"]["readings"] = {
        "landscape": {"choice": "rescaled", "default": "printed", "description": "d"},
        "success": {"choice": "flat", "default": "flat", "description": "d"}}
    assert "<title>grid (smoke; landscape=rescaled) — sgdlab</title>" in render(r, tmp_path)


def test_smoke_scale_shows_the_departures_derived_from_its_config(tmp_path):
    r = _results(tmp_path, "smoke")
    r["experiment"]["derived_deviations"] = ["epochs 1 (paper: 200)", "seeds [0] (paper: [0, 1])"]
    page = render(r, tmp_path)
    assert "<b>Departures from the paper at scale smoke</b>, derived from the config" in page
    assert "<li>epochs 1 (paper: 200)</li><li>seeds [0] (paper: [0, 1])</li>" in page
    assert SMOKE_SCALE in page and SMOKE_SCALE not in render(_results(tmp_path, "cpu"), tmp_path)
    assert "verdicts with these in mind" not in page     # smoke shows no verdict to read


def test_a_listed_departure_asks_the_verdicts_to_be_read_with_it(tmp_path):
    r = _results(tmp_path, "cpu")
    r["experiment"]["deviations"] = ["2 seeds instead of 5"]
    assert "(read the verdicts with these in mind):</p>" in render(r, tmp_path)
