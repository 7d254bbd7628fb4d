"""docs/RESULTS.md's generator: the quoted claim, the verdicts and the departures per entry."""
from __future__ import annotations

import json

import pytest

from sgdlab.experiments.summary import load_all, results_markdown


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

    heads = list(re.finditer(r"^### ([a-z0-9-]+)$", md, re.M))
    out = {}
    for m, nxt in zip(heads, heads[1:] + [None]):
        end = nxt.start() if nxt is not None else len(md)
        part = md.find("\n## ", m.start())
        out[m[1]] = md[m.start():part if 0 <= part < end else end].rstrip("\n")
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
