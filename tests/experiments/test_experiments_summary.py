"""docs/RESULTS.md's generator: the quoted claim, the verdicts and the departures per entry."""
from __future__ import annotations

import json

import pytest

from sgdlab.experiments.summary import load_all, parse_page, results_markdown


def _result(name: str, conclusions: list[dict], deviations: list[str]) -> dict:
    return {"experiment": {"name": name, "title": "t", "deviations": deviations,
                           "paper": {"author": "Xing, Arpit", "year": 2018, "figure": "Fig. 5",
                                     "claim": "GD with noise is worse",
                                     "quote": "isotropic noise\n does not help", "where": "§4"}},
            "scale": "cpu", "conclusions": conclusions}


def test_markdown_counts_quotes_and_departures(tmp_path):
    cs = [{"text": "a | b", "agrees_with_paper": True, "claim": "c1"},
          {"text": "x", "agrees_with_paper": False, "claim": "c2"},
          {"text": "y", "agrees_with_paper": None, "claim": "c3"},
          {"text": "z", "agrees_with_paper": None, "claim": None}]
    for name, devs in (("e1", ["digits instead of CIFAR-10"]), ("e2", [])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_result(name, cs, devs)))
    (tmp_path / "train-run").mkdir()
    (tmp_path / "train-run" / "results.json").write_text(json.dumps({"status": "finished"}))
    md = results_markdown(load_all(tmp_path), command="cmd")
    assert "2 experiments, 2 findings agree with the paper's claim, 2 disagree, 2 are " \
           "inconclusive" in md
    assert md.count("“isotropic noise does not help” (§4)") == 2      # overview rows
    assert "| 1 / 1 / 1 |" in md
    assert "| a \\| b | c1 | agrees |" in md and "| x | c2 | **disagrees** |" in md
    assert "| y | c3 | inconclusive |" in md and "| z |  | descriptive |" in md
    assert "Departures from the paper at `cpu` scale:\n- digits instead of CIFAR-10" in md
    assert "No departures from the paper listed at `cpu` scale." in md


def test_an_experiment_citing_no_paper_has_its_claims_hold_or_fail(tmp_path):
    cs = [{"text": "a", "agrees_with_paper": True, "claim": "c1"},
          {"text": "b", "agrees_with_paper": False, "claim": "c2"}]
    r = _result("mine", cs, [])
    r["experiment"]["paper"] = {"author": "Me", "year": 2026, "figure": ""}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "results.json").write_text(json.dumps(r))
    md = results_markdown(load_all(tmp_path), command=None)
    assert "| a | c1 | holds |" in md and "| b | c2 | **fails** |" in md
    assert "| 1 / 1 / 0 |" in md        # counted as the catalogue's are


def test_a_cell_escapes_its_bars_once_and_writes_latex_s_norm_as_the_norm(tmp_path):
    # `\|` came out `\\|`, which GitHub's table hands its `$...$` as `\|`: a single bar
    r = _result("e1", [{"text": r"a | b and $\|g\|$", "agrees_with_paper": True,
                        "claim": r"line break \\| bar"}], [])
    r["experiment"]["paper"] |= {"quote": r"a large $\|j(x)\|$, SGD", "where": "l. 1 | 2"}
    (tmp_path / "e1").mkdir()
    (tmp_path / "e1" / "results.json").write_text(json.dumps(r))
    md = results_markdown(load_all(tmp_path), command=None)
    assert "| “a large $‖j(x)‖$, SGD” (l. 1 \\| 2) |" in md
    assert r"| a \| b and $‖g‖$ | line break \\\| bar | agrees |" in md
    assert r"> “a large $\|j(x)\|$, SGD” — l. 1 | 2" in md         # not a table: verbatim
    finding = parse_page(md, "page")["e1"].findings[0]
    assert finding[:2] == ("a | b and $‖g‖$", r"line break \\| bar")


def test_the_usage_in_the_module_docstring_runs(tmp_path, capsys):
    from sgdlab.experiments import summary

    (tmp_path / "e1").mkdir()
    (tmp_path / "e1" / "results.json").write_text(json.dumps(_result("e1", [], [])))
    (usage,) = [ln.split("summary", 1)[1] for ln in summary.__doc__.splitlines()
                if "python -m sgdlab.experiments.summary" in ln]
    argv = usage.split(">")[0].replace("OUT_ROOT", str(tmp_path)).replace("[", "").replace(
        "]", "").replace("CMD", "cmd").split()
    assert summary.main(argv) == 0
    assert capsys.readouterr().out.startswith("Regenerate: `cmd`")


def test_an_unreadable_results_file_is_named_not_a_traceback(tmp_path, capsys):
    from sgdlab.experiments import summary

    (tmp_path / "e1").mkdir()
    (tmp_path / "e1" / "results.json").write_text(json.dumps(_result("e1", [], []))[:40])
    assert summary.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"cannot read {tmp_path / 'e1' / 'results.json'}: " in err
    assert f"sgdlab report {tmp_path / 'e1'}" in err


def test_report_page_quotes_the_paper_and_lists_departures(tmp_path):
    from sgdlab.report.html import render

    r = _result("e1", [{"text": "x", "agrees_with_paper": False, "claim": "c"}],
                ["digits instead of CIFAR-10"])
    page = render(r | {"experiment": r["experiment"] | {"version": 1}}, tmp_path)
    assert "<blockquote>“isotropic noise does not help”" in page and "— §4" in page
    assert "Departures from the paper at scale cpu" in page
    assert "<li>digits instead of CIFAR-10</li>" in page


def test_markdown_names_the_readings_taken(tmp_path):
    r = _result("e1", [{"text": "x", "agrees_with_paper": None, "claim": None}], [])
    r["experiment"]["readings"] = {
        "max-variance": {"choice": "batch-100", "default": "per-example",
                         "description": "of batch-100 gradients"},
        "lr": {"choice": "caption", "default": "caption", "description": "eta | 0.1"}}
    (tmp_path / "e1").mkdir()
    (tmp_path / "e1" / "results.json").write_text(json.dumps(r))
    md = results_markdown(load_all(tmp_path), command="cmd")
    assert ("Readings of the paper's text: `max-variance=batch-100` — of batch-100 gradients; "
            "`lr=caption` (default) — eta \\| 0.1.") in md
    del r["experiment"]["readings"]
    (tmp_path / "e1" / "results.json").write_text(json.dumps(r))
    assert "Readings" not in results_markdown(load_all(tmp_path), command="cmd")


def test_a_folder_without_experiment_outputs_is_an_error_and_the_help_is_complete(
        tmp_path, capsys):
    # a mistyped folder printed an empty table ("0 experiments") with exit status 0, and
    # --help showed `usage: summary.py` and an --command without a word of help
    from sgdlab.experiments import summary

    (tmp_path / "run1").mkdir()                     # a training run's results.json only
    (tmp_path / "run1" / "results.json").write_text(json.dumps({"run_id": "x"}))
    for root in (tmp_path, tmp_path / "sgdlab-ot"):
        assert summary.main([str(root)]) == 2
        err = capsys.readouterr().err
        assert err == (f"summary: error: no experiment output in {root}: it holds the "
                       "output folders of `sgdlab run` (each with its results.json)\n")
    with pytest.raises(SystemExit):
        summary.main(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m sgdlab.experiments.summary ") and "``" not in text
    assert "--command COMMAND  the command the page says regenerates the outputs" in text


def _sections(md: str) -> dict[str, str]:
    """Each entry's section of a RESULTS.md, up to the next section or part."""
    import re

    from sgdlab.experiments.summary import END

    heads = list(re.finditer(r"^### ([a-z0-9-]+)$", md, re.M))
    out = {}
    for m, nxt in zip(heads, heads[1:] + [None]):
        end = nxt.start() if nxt is not None else len(md)
        part = min((i for i in (md.find("\n## ", m.start()), md.find(f"\n{END}", m.start()))
                    if 0 <= i < end), default=end)
        out[m[1]] = md[m.start():part].rstrip("\n")
    return out


def _without_findings(section: str) -> str:
    # the findings come from stored runs; the quotes, departures and readings from the entry
    head, rest = section.split("| finding (computed from the stored runs)", 1)
    return head + rest[rest.index("\n\n"):] if "\n\n" in rest else head


def test_results_md_quotes_departures_and_readings_are_the_catalogues():
    """docs/RESULTS.md prints, per entry, the paper's quotes, the cpu scale's departures and
    its readings: they must be those of the catalogue as it stands (seven entries' had gone
    stale when their deviations and readings were edited after the table was written)."""
    from pathlib import Path

    from sgdlab.experiments.spec import catalogue_files, load_experiment

    md = (Path(__file__).resolve().parents[2] / "docs" / "RESULTS.md").read_text()
    printed = _sections(md)
    assert set(printed) == set(catalogue_files())
    for name, section in printed.items():
        spec = load_experiment(name, "cpu")
        now = results_markdown([{"experiment": spec.describe(), "scale": "cpu",
                                 "conclusions": []}], command="x")
        assert _without_findings(section) == _without_findings(_sections(now)[name]), name


def _write(root, results: dict[str, dict]) -> None:
    for name, r in results.items():
        (root / name).mkdir(exist_ok=True)
        (root / name / "results.json").write_text(json.dumps(r))


def test_compare_names_the_verdicts_that_moved(tmp_path, capsys):
    from sgdlab.experiments import summary

    cs = [{"text": "a 0.91 | b", "agrees_with_paper": True, "claim": "c1 | x"},
          {"text": "x 0.5", "agrees_with_paper": False, "claim": "c2"},
          {"text": "x2 0.6", "agrees_with_paper": False, "claim": "c2"},
          {"text": "y", "agrees_with_paper": None, "claim": "c3"},
          {"text": "z", "agrees_with_paper": None, "claim": None}]
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    _write(old, {n: _result(n, cs, []) for n in ("e1", "e2", "e3")})
    page = results_markdown(load_all(old), command="cmd")
    parsed = summary.parse_page(page, "p")                          # the round trip
    assert list(parsed) == ["e1", "e2", "e3"]
    assert parsed["e1"] == summary.PageEntry((1, 2, 1), [
        ("a 0.91 | b", "c1 | x", "agrees"), ("x 0.5", "c2", "disagrees"),
        ("x2 0.6", "c2", "disagrees"), ("y", "c3", "inconclusive"), ("z", "", "descriptive")])
    (tmp_path / "old.md").write_text(page)
    moved = [dict(c) for c in cs]
    moved[2] |= {"text": "x2 0.7", "agrees_with_paper": True}     # the second c2 finding
    moved[0]["text"] = "a 0.93 | b"                                # numbers only: not listed
    _write(new, {"e1": _result("e1", moved, []),
                 "e2": _result("e2", cs[1:] + [{"text": "w", "agrees_with_paper": None,
                                                "claim": "c4"}], []),
                 "e4": _result("e4", cs, [])})
    assert summary.main([str(new), "--compare", str(tmp_path / "old.md")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "e1: 1 / 2 / 1 -> 2 / 1 / 1",
        "  disagrees -> agrees: c2",
        "    now: x2 0.7",
        "e2: 1 / 2 / 1 -> 0 / 2 / 2",
        "  (none) -> inconclusive: c4",
        "    now: w",
        "  agrees -> (none): c1 | x",
        f"only in {tmp_path / 'old.md'}: e3 (1 / 2 / 1)",
        f"only in {new}: e4 (1 / 2 / 1)",
        "totals (agree / disagree / inconclusive): 3 / 6 / 3 -> 3 / 5 / 4, 3 -> 3 experiments"]
    assert summary.main([str(old), "--compare", str(tmp_path / "old.md")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "no verdict changed",
        "totals (agree / disagree / inconclusive): 3 / 6 / 3 -> 3 / 6 / 3, 3 -> 3 experiments"]


def test_a_page_it_cannot_parse_names_the_file_and_line(tmp_path, capsys):
    from sgdlab.experiments import summary

    _write(tmp_path, {"e1": _result("e1", [{"text": "x", "agrees_with_paper": True,
                                           "claim": "c"}], [])})
    page = results_markdown(load_all(tmp_path), command="cmd")
    bad = tmp_path / "bad.md"
    for broken, marker in ((page.replace("| agrees |", "| agreed |"), "| agreed |"),
                           (page.replace("| 1 / 0 / 0 |", "| 1 / 0 |"), "| 1 / 0 |"),
                           (page.replace("| finding (computed", "| finding ("), "| finding ("),
                           (page.replace("### e1", "### e2"), "### e2"),
                           (page.replace("### e1", "## e1"), "| finding (computed"),
                           ("# Results\n\nno table\n", None)):
        bad.write_text(broken)
        assert summary.main([str(tmp_path), "--compare", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"summary: error: cannot parse {bad}: "), err
        if marker is None:
            assert "no overview row" in err
            continue
        ((n, line),) = [(n, ln) for n, ln in enumerate(broken.splitlines(), 1) if marker in ln]
        assert f"line {n} {line[:100]!r}: " in err, err


def test_results_md_parses_to_the_counts_of_its_totals_line():
    """docs/RESULTS.md is read by `--compare`: its rows must parse and add up to its totals
    line (a drift of the page's format or of the parser fails here)."""
    import re
    from pathlib import Path

    from sgdlab.report.verdicts import OUTSIDE

    md = (Path(__file__).resolve().parents[2] / "docs" / "RESULTS.md").read_text()
    page = parse_page(md, "docs/RESULTS.md")
    m = re.search(r"^(\d+) experiments, (\d+) findings agree with the paper's claim, (\d+) "
                  r"disagree, (\d+) are inconclusive", md, re.M)
    assert m is not None
    assert (len(page), *(sum(e.counts[i] for e in page.values()) for i in range(3))) == tuple(
        map(int, m.groups()))
    for name, entry in page.items():       # each row's counts are its section's verdicts
        words = [w for _, _, w in entry.findings]
        # a claim outside the paper's regime counts with the inconclusive
        assert entry.counts == (words.count("agrees"), words.count("disagrees"),
                                words.count("inconclusive") + words.count(OUTSIDE)), name


def _page(generated: str) -> str:
    # prose around the markers with what a rewrite could lose: CRLF, trailing blanks, no
    # final newline, a marker quoted inside a line
    from sgdlab.experiments.summary import END, START

    return (f"# Results\r\n\r\nSay `{START}` to start.  \n\n{START}\n{generated}{END}\n\n"
            "## Reading the disagreements\n\ntail ✓ without newline")


def _bytes_outside(text: str) -> tuple[str, str]:
    from sgdlab.experiments.summary import END, START

    return text.split(f"\n{START}\n")[0], text.split(f"\n{END}\n")[1]


def test_update_rewrites_between_the_markers_and_keeps_the_rest(tmp_path, capsys):
    from sgdlab.experiments import summary

    out = tmp_path / "out"
    out.mkdir()
    # folders named as `sgdlab run` names them: the entries still come in name order
    cs = [{"text": "x 0.5", "agrees_with_paper": True, "claim": "c"}]
    _write(out, {f"{n}-cpu": _result(n, cs, []) for n in ("e1", "e1-allcnn")})
    assert [r["experiment"]["name"] for r in load_all(out)] == ["e1", "e1-allcnn"]
    page = tmp_path / "RESULTS.md"
    page.write_bytes(_page("1 experiments, 0 findings agree with the paper's claim, 1 "
                           "disagree, 0 are inconclusive\n\n### e1\nold\n").encode())
    before = page.read_bytes().decode()
    assert summary.main([str(out), "--update", str(page)]) == 0
    printed = capsys.readouterr().out
    after = page.read_bytes().decode()
    assert _bytes_outside(after) == _bytes_outside(before)
    generated = results_markdown(load_all(out), command=None)
    assert generated.startswith("2 experiments, 2 findings agree") and "Regenerate" not in generated
    assert after == before.replace("1 experiments, 0 findings agree with the paper's claim, 1 "
                                   "disagree, 0 are inconclusive\n\n### e1\nold\n", generated)
    assert printed.splitlines() == [
        f"summary: wrote the generated part of {page} (2 experiments, 2 agree / 0 disagree / "
        "0 inconclusive; before: 1 experiments, 0 agree / 1 disagree / 0 inconclusive)",
        'summary: README.md must now say "of 2 findings over 2 entries, 2 agree, 0 disagree '
        'and 0 are inconclusive" (tests/test_readme.py checks it; --readme README.md writes it)']
    assert summary.main([str(out), "--update", str(page)]) == 0          # idempotent
    assert page.read_bytes().decode() == after
    assert capsys.readouterr().out == (f"summary: {page} unchanged (2 experiments, 2 agree / 0 "
                                       "disagree / 0 inconclusive)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RESULTS.md", "out"]


def test_update_with_readme_sets_its_totals_sentence_and_with_compare_prints_the_moves(
        tmp_path, capsys):
    from sgdlab.experiments import summary

    _write(tmp_path, {"e1": _result("e1", [{"text": "x", "agrees_with_paper": False,
                                           "claim": "c"}], [])})
    page, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    old = results_markdown(load_all(tmp_path), command=None)
    page.write_bytes(_page(old.replace("| **disagrees** |", "| agrees |").replace(
        "| 0 / 1 / 0 |", "| 1 / 0 / 0 |")).encode())
    readme.write_text("Intro.\n\nThe page: of 7 findings over 3\nentries, 4 agree, 2 disagree "
                      "and 1 are inconclusive; more.\n")
    assert summary.main([str(tmp_path), "--update", str(page), "--readme", str(readme),
                         "--compare", str(page)]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["e1: 1 / 0 / 0 -> 0 / 1 / 0",
                                                        "  agrees -> disagrees: c"]
    assert readme.read_text() == ("Intro.\n\nThe page: of 1 findings over 1\nentries, 0 "
                                  "agree, 1 disagree and 0 are inconclusive; more.\n")
    assert summary.main([str(tmp_path), "--update", str(page), "--readme", str(readme)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"summary: {readme} unchanged"


def test_update_errors_leave_the_page_as_it_was(tmp_path, capsys):
    from sgdlab.experiments import summary
    from sgdlab.experiments.summary import END, START

    out = tmp_path / "out"
    out.mkdir()
    _write(out, {"e1": _result("e1", [], [])})
    page, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    readme.write_text("no such sentence\n")
    good = _page("stale\n")
    cases = [
        (None, [], f"cannot read {page}: "),
        ("# Results\n\nno markers\n", [], f"{page} has no line {START!r}: put the lines"),
        (f"{START}\nx\n", [], f"{page} has no line {END!r}"),
        (f"{END}\nx\n{START}\n", [], f"{page}: its end marker (line 1) comes before its start "
                                     "marker (line 3)"),
        (f"{END}\n{START}\n", [], f"{page}: its end marker (line 1) comes before its start "
                                "marker (line 2)"),
        (f"{START}\n{START}\n{END}\n", [], f"has the line {START!r} 2 times (lines 1, 2): keep "
                                          "one start"),
        (f"{START}\n{END}\nx\n{END}\n", [], f"has the line {END!r} 2 times (lines 2, 4)"),
        (good.replace("stale", "### e0\nstale"), [],
         f"{out} has no output of 1 entries that {page} lists (e0): --update rewrites"),
        (good, ["--readme", str(readme)], f"{readme} has 0 sentences 'of N findings"),
        (good, ["--command", "x"], "--command sets the printed page's `Regenerate:` line"),
    ]
    for text, more, message in cases:
        page.unlink(missing_ok=True)
        if text is not None:
            page.write_bytes(text.encode())
        assert summary.main([str(out), "--update", str(page), *more]) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("summary: error: ") and message in err, (message, err)
        assert (page.read_bytes().decode() if page.exists() else None) == text
        assert readme.read_text() == "no such sentence\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["out", "README.md"] + (["RESULTS.md"] if text is not None else []))
    _write(out, {"e1-cpu": _result("e1", [], [])})                  # one entry, two folders
    page.write_bytes(good.encode())
    assert summary.main([str(out), "--update", str(page)]) == 2
    assert f"{out} holds 2 outputs of e1 ({out / 'e1'}, {out / 'e1-cpu'})" in (
        capsys.readouterr().err)
    assert page.read_bytes().decode() == good
    assert summary.main([str(out), "--readme", str(readme)]) == 2
    assert "give --update PAGE" in capsys.readouterr().err


def test_results_md_has_its_markers_once_around_the_generated_part():
    from pathlib import Path

    from sgdlab.experiments.summary import END, START, generated_span

    md = (Path(__file__).resolve().parents[2] / "docs" / "RESULTS.md").read_text()
    assert md.count(f"\n{START}\n") == 1 and md.count(f"\n{END}\n") == 1
    start, end = generated_span(md, "docs/RESULTS.md")
    assert md[start:end].startswith(f"{md.count(chr(10) + '### ')} experiments, ")
    assert md[end:].startswith(f"{END}\n\n## Reading the disagreements\n")


def test_the_readme_sentence_counts_every_finding_with_a_claim(tmp_path):
    from sgdlab.experiments.summary import update_page

    cs = [{"text": "a", "agrees_with_paper": True, "claim": "c1"},
          {"text": "b", "agrees_with_paper": True, "claim": "c2"},
          {"text": "d", "agrees_with_paper": False, "claim": "c3"},
          {"text": "i", "agrees_with_paper": None, "claim": "c4"},
          {"text": "description", "agrees_with_paper": None, "claim": None}]
    results = [_result("e1", cs, []), _result("e2", cs[3:], [])]
    page, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    page.write_text(_page(""))
    readme.write_text("of 0 findings over 0 entries, 0 agree, 0 disagree and 0 are "
                      "inconclusive.\n")
    update_page(page, results, root="out", readme=readme)
    # 2 + 1 + 2 findings with a claim, over 2 entries; the description is not a finding
    assert readme.read_text() == ("of 5 findings over 2 entries, 2 agree, 1 disagree and 2 are "
                                  "inconclusive.\n")
    assert "2 experiments, 2 findings agree with the paper's claim, 1 disagree, 2 are " \
           "inconclusive" in page.read_text()


def test_smoke_scale_findings_are_not_counted():
    from sgdlab.experiments.summary import verdict_counts

    cs = [{"text": "a", "agrees_with_paper": True, "claim": "c1"},
          {"text": "d", "agrees_with_paper": False, "claim": "c2"},
          {"text": "i", "agrees_with_paper": None, "claim": "c3"}]
    assert verdict_counts({"scale": "cpu", "conclusions": cs}) == (1, 1, 1)
    assert verdict_counts({"scale": "smoke", "conclusions": cs}) == (0, 0, 0)


def test_compare_pairs_a_claim_tested_twice_by_its_order():
    from sgdlab.experiments.summary import PageEntry, compare_pages

    # one claim tested on two models: the first one's verdict moved, the second's did not
    old = {"e": PageEntry((2, 0, 0), [("m1: 0.9", "c", "agrees"), ("m2: 0.8", "c", "agrees")])}
    new = {"e": PageEntry((1, 1, 0), [("m1: 0.5", "c", "disagrees"),
                                      ("m2: 0.8", "c", "agrees")])}
    assert compare_pages(old, new)[:3] == ["e: 2 / 0 / 0 -> 1 / 1 / 0",
                                           "  agrees -> disagrees: c", "    now: m1: 0.5"]


def test_compare_reports_counts_that_moved_without_a_finding_that_moved():
    from sgdlab.experiments.summary import PageEntry, compare_pages

    # a finding without a claim pairs with nothing, yet the counts say the entry changed
    old = {"e": PageEntry((1, 0, 0), [("m: 0.9", "c", "agrees")])}
    new = {"e": PageEntry((1, 1, 0), [("m: 0.9", "c", "agrees"), ("x: 0.1", "", "disagrees")])}
    assert compare_pages(old, new)[0] == "e: 1 / 0 / 0 -> 1 / 1 / 0"
    assert compare_pages(old, old)[0] == "no verdict changed"


ONE_AGREEING = [{"text": "x", "agrees_with_paper": True, "claim": "c"}]


def test_a_page_listing_an_entry_twice_in_its_overview_is_refused():
    from sgdlab.errors import UserError

    page = results_markdown([_result("e1", ONE_AGREEING, [])], command=None)
    parse_page(page, "page.md")                     # once: read
    (row,) = [ln for ln in page.splitlines() if ln.startswith("| [e1](#e1)")]
    twice = page.replace(row, f"{row}\n{row.replace('1 / 0 / 0', '0 / 1 / 0')}")
    n = twice.splitlines().index(row) + 2          # the second row's line number
    with pytest.raises(UserError, match=f"cannot parse page.md: line {n} "):
        parse_page(twice, "page.md")


def test_an_incomplete_experiment_says_how_many_runs_are_missing():
    r = {**_result("e1", ONE_AGREEING, []), "incomplete": True, "missing_runs": ["a", "b"]}
    page = results_markdown([r], command=None)
    assert "| x | c | agrees |\n| incomplete: 2 runs missing | | |\n" in page
    assert parse_page(page, "p")["e1"].findings[1] == ("incomplete: 2 runs missing", "", "")
    assert "incomplete" not in results_markdown([_result("e1", ONE_AGREEING, [])], command=None)


def test_a_readme_with_two_totals_sentences_is_refused_and_left_as_it_was(tmp_path, capsys):
    """--readme sets exactly one sentence: with two, which one the page's totals belong to is
    not known, and neither file is written."""
    from sgdlab.experiments import summary

    _write(tmp_path, {"e1": _result("e1", [], [])})
    page, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    page.write_bytes(_page("stale\n").encode())
    one = "of 7 findings over 3 entries, 4 agree, 2 disagree and 1 are inconclusive"
    readme.write_text(f"{one}.\n{one}.\n")
    assert summary.main([str(tmp_path), "--update", str(page), "--readme", str(readme)]) == 2
    assert f"{readme} has 2 sentences 'of N findings" in capsys.readouterr().err
    assert readme.read_text() == f"{one}.\n{one}.\n"
    assert page.read_bytes().decode() == _page("stale\n")


def test_a_smoke_scale_finding_reads_as_no_verdict_in_the_findings_table():
    from sgdlab.report.verdicts import SMOKE

    smoke = {**_result("e1", [{"text": "x", "agrees_with_paper": True, "claim": "c"}], []),
             "scale": "smoke"}
    assert f"| x | c | {SMOKE} |" in results_markdown([smoke], command=None)
    assert "| x | c | agrees |" in results_markdown([{**smoke, "scale": "cpu"}], command=None)


def test_a_smoke_result_lists_derived_departures_and_says_it_tests_no_claim():
    """Every smoke section said "No departures from the paper listed at `smoke` scale.",
    though smoke shrinks everything."""
    from sgdlab.experiments.spec import load_experiment
    from sgdlab.report.verdicts import SMOKE_SCALE

    spec = load_experiment("chaudhari-double-well", "smoke")
    md = results_markdown([{"experiment": spec.describe(), "scale": "smoke",
                            "conclusions": []}], command="x")
    assert "No departures" not in md
    assert ("Departures from the paper at `smoke` scale, derived from the config" in md
            and "\n- chains 500 (paper: 100000)\n" in md)
    assert SMOKE_SCALE in md
