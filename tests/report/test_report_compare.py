"""The side-by-side page of two experiment reports says how their settings differ."""
from __future__ import annotations

import html
import json
import re

from sgdlab.report.compare import compare_html, table_differences


def _results(tmp_path, name, *, scale="cpu", grid, seeds, run_ids, columns=("lr", "acc")):
    out = tmp_path / name
    out.mkdir()
    results = {
        "experiment": {"name": "grid", "version": 1}, "scale": scale,
        "config": {"resolved": {"base": {"epochs": 2}, "grid": grid, "seeds": seeds}},
        "tables": [{"name": "t", "columns": list(columns), "rows": []}],
        "runs": [{"key": r, "run_id": r, "label": r, "seed": 0, "status": "finished"}
                 for r in run_ids]}
    (out / "results.json").write_text(json.dumps(results))
    return out


def _text(page: str, start: str, end: str) -> str:
    part = page[page.index(start):page.index(end)]
    return html.unescape(re.sub(r"<[^>]+>", " ", part))


def test_compare_page_lists_the_settings_and_runs_that_differ(tmp_path):
    a = _results(tmp_path, "a", grid={"optimizer.lr": [0.05, 0.2]}, seeds=[0],
                 run_ids=["r1", "r2"])
    b = _results(tmp_path, "b", scale="paper", grid={"optimizer.lr": [0.1, 0.2]},
                 seeds=[0, 1], run_ids=["r2", "r3", "r4"], columns=("lr", "loss"))
    page = compare_html(a, b)
    settings = " ".join(_text(page, "<h2>Settings", "<h2>Tables").split())
    assert "scale cpu paper" in settings
    assert "grid.optimizer.lr [0.05, 0.2] [0.1, 0.2]" in settings
    assert "seeds [0] [0, 1]" in settings
    assert "epochs" not in settings                          # the same in both
    assert "stored runs 2 (1 also in B) 3 (1 also in A)" in settings
    # same-named tables whose columns differ: said, not silently left out of the differences
    diffs = " ".join(_text(page, "<h2>Differences", "<h2>Figures").split())
    assert "t: not subtracted, its columns differ (A: lr, acc; B: lr, loss)" in diffs


def test_compare_page_of_reports_with_the_same_settings_says_so(tmp_path):
    a = _results(tmp_path, "a", grid={"optimizer.lr": [0.1]}, seeds=[0], run_ids=["r1"])
    b = _results(tmp_path, "b", grid={"optimizer.lr": [0.1]}, seeds=[0], run_ids=["r1"])
    settings = " ".join(_text(compare_html(a, b), "<h2>Settings", "<h2>Tables").split())
    assert "the same settings" in settings and "stored runs" not in settings


def test_the_page_replaces_neither_a_report_file_nor_a_report_page(tmp_path):
    # `--out B/results.json` wrote the page over B's results.json, and the next
    # `sgdlab report B` could not read it
    import pytest

    from sgdlab.errors import UserError
    from sgdlab.report.compare import write_compare

    a = _results(tmp_path, "a", grid={}, seeds=[0], run_ids=["r1"])
    b = _results(tmp_path, "b", grid={}, seeds=[0], run_ids=["r1"])
    (b / "report.html").write_text("B's page")
    before = (b / "results.json").read_text()
    for wrong, says in ((b / "results.json", "ending in .html"), (tmp_path / "cmp", ".html"),
                        (b / "report.html", "is the report page of B")):
        with pytest.raises(UserError, match=says):
            write_compare(a, b, wrong)
    assert (b / "results.json").read_text() == before
    assert (b / "report.html").read_text() == "B's page" and not (tmp_path / "cmp").exists()
    assert write_compare(a, b, tmp_path / "cmp.HTML").read_text().startswith("<!DOCTYPE html>")


def test_reports_of_two_experiments_are_not_written_side_by_side(tmp_path):
    import pytest

    from sgdlab.errors import UserError
    from sgdlab.report.compare import write_compare

    a = _results(tmp_path, "a", grid={}, seeds=[0], run_ids=["r1"])
    b = _results(tmp_path, "b", grid={}, seeds=[0], run_ids=["r1"])
    results = json.loads((b / "results.json").read_text())
    results["experiment"]["name"] = "other"
    (b / "results.json").write_text(json.dumps(results))
    with pytest.raises(UserError, match="the reports are of two experiments, grid "):
        write_compare(a, b, tmp_path / "cmp.html")
    assert not (tmp_path / "cmp.html").exists()


def test_the_terminal_says_what_differs_and_which_verdicts_moved(tmp_path):
    # `sgdlab report A --compare B` printed only the page's path: a verdict that a reading
    # turns around was to be found by opening the HTML
    from sgdlab.report.compare import compare_lines

    a = _results(tmp_path, "a", grid={"optimizer.lr": [0.1]}, seeds=[0], run_ids=["r1"])
    b = _results(tmp_path, "b", grid={"optimizer.lr": [0.2]}, seeds=[0], run_ids=["r1"])
    for d, verdicts in ((a, [False, True, None]), (b, [True, True])):
        res = json.loads((d / "results.json").read_text())
        res["conclusions"] = [{"text": "...", "claim": claim, "agrees_with_paper": v}
                              for claim, v in zip(("flatter", "same acc", "faster"), verdicts)]
        (d / "results.json").write_text(json.dumps(res))
    assert compare_lines(a, b) == [
        "settings that differ (A → B):", "  grid.optimizer.lr: [0.1] → [0.2]",
        "conclusions: 2 of 3 differ:",
        "  flatter: A disagrees with the paper → B agrees with the paper",
        "  faster: only in A (inconclusive)"]
    assert compare_lines(a, a) == ["settings: the same settings and runs",
                                   "conclusions: 0 of 3 differ (the same verdicts)"]


def test_the_terminal_words_a_smoke_scale_verdict_as_the_report_pages_do(tmp_path):
    # compare_lines worded agrees_with_paper itself: two smoke reports whose raw flags differ
    # printed "A disagrees → B agrees" where both pages say a smoke run gives no verdict
    from sgdlab.report.compare import compare_lines
    from sgdlab.report.verdicts import SMOKE

    dirs = {}
    for name, scale, verdicts in (("a", "smoke", [False, None]), ("b", "smoke", [True, True]),
                                  ("c", "cpu", [True, None])):
        d = dirs[name] = _results(tmp_path, name, scale=scale, grid={}, seeds=[0],
                                  run_ids=["r1"])
        res = json.loads((d / "results.json").read_text())
        res["conclusions"] = [{"text": "...", "claim": claim, "agrees_with_paper": v}
                              for claim, v in zip(("flatter", "same acc"), verdicts)]
        (d / "results.json").write_text(json.dumps(res))
    assert compare_lines(dirs["a"], dirs["b"]) == [
        "settings: the same settings and runs", "conclusions: 0 of 2 differ (the same verdicts)"]
    assert compare_lines(dirs["a"], dirs["c"])[-3:] == [
        "conclusions: 2 of 2 differ:", f"  flatter: A {SMOKE} → B agrees with the paper",
        f"  same acc: A {SMOKE} → B inconclusive"]


def _same_claim_results(tmp_path, **verdicts_by_name):
    """One results dir per name, each testing the claim "same acc" once per verdict."""
    dirs = {}
    for name, verdicts in verdicts_by_name.items():
        d = dirs[name] = _results(tmp_path, name, grid={}, seeds=[0], run_ids=["r1"])
        res = json.loads((d / "results.json").read_text())
        res["conclusions"] = [{"text": "...", "claim": "same acc", "agrees_with_paper": v}
                              for v in verdicts]
        (d / "results.json").write_text(json.dumps(res))
    return dirs


def test_the_terminal_numbers_a_claim_tested_more_than_once(tmp_path):
    # one claim tested per pair of settings (equal η/B, two pairs in A, one in B) printed
    # "same acc: A … → B …" and "same acc: only in A": one conclusion twice, to the eye
    from sgdlab.report.compare import compare_lines

    dirs = _same_claim_results(tmp_path, a=[True, None], b=[False])
    assert compare_lines(dirs["a"], dirs["b"])[-3:] == [
        "conclusions: 2 of 2 differ:",
        "  same acc (#1): A agrees with the paper → B disagrees with the paper",
        "  same acc (#2): only in A (inconclusive)"]


def test_the_terminal_numbers_a_claim_that_only_b_tests_more_than_once(tmp_path):
    from sgdlab.report.compare import compare_lines

    dirs = _same_claim_results(tmp_path, a=[True], b=[True, False])
    assert compare_lines(dirs["a"], dirs["b"])[-2:] == [
        "conclusions: 1 of 2 differ:", "  same acc (#2): only in B (disagrees with the paper)"]


def test_reports_that_read_as_many_runs_but_other_ones_say_so(tmp_path):
    a = _results(tmp_path, "a", grid={}, seeds=[0], run_ids=["r1", "r2"])
    b = _results(tmp_path, "b", grid={}, seeds=[0], run_ids=["r2", "r3"])
    settings = " ".join(_text(compare_html(a, b), "<h2>Settings", "<h2>Tables").split())
    assert "stored runs 2 (1 also in B) 2 (1 also in A)" in settings


def test_a_reading_taken_differently_is_a_setting_that_differs(tmp_path):
    from sgdlab.report.compare import settings_differences

    def res(choice):
        return {"experiment": {"name": "e", "version": 1, "readings": {
            "lr": {"choice": choice, "default": "caption", "description": "..."}}},
            "scale": "cpu", "runs": []}

    assert settings_differences(res("caption"), res("caption")) is None
    t = settings_differences(res("caption"), res("text"))
    assert t.rows == [["readings.lr", "caption", "text"]]


def test_a_report_whose_experiment_is_not_known_is_not_refused():
    import pytest

    from sgdlab.errors import UserError
    from sgdlab.report.compare import check_same_experiment

    for names in ((None, "grid"), ("grid", None), (None, None), ("grid", "grid")):
        check_same_experiment(*names, "a", "b")
    with pytest.raises(UserError, match="two experiments"):
        check_same_experiment("grid", "other", "a", "b")


def test_each_report_s_heading_is_nested_under_its_column_s_heading(tmp_path):
    # each report's <h1> sat under its column's <h2>: a page outline with three top levels
    a = _results(tmp_path, "a", grid={"optimizer.lr": [0.1]}, seeds=[0], run_ids=["r1"])
    b = _results(tmp_path, "b", grid={"optimizer.lr": [0.1]}, seeds=[0], run_ids=["r1"])
    page = compare_html(a, b)
    assert re.findall(r"<h1>(.*?)</h1>", page) == ["Comparison"]
    levels = [int(n) for n in re.findall(r"<h(\d)>", page[:page.index("<h2>Settings")])]
    assert levels == [1, 2, 3, 3, 2, 3, 3]      # A, its name, its conclusions; B alike
    assert "<h3>grid <small>v1 · scale cpu</small></h3>" in page


def test_declared_keys_that_are_not_columns_fall_back_to_the_row_labels():
    # a results.json whose table names a key column it lacks (edited by hand): rows
    # are matched on the first column and the text cells, as before tables declared keys, not
    # refused for the missing column; B − A by hand: x 0.75 − 0.5 = 0.25, y 0.5 − 1.0 = −0.5
    cols = ["run", "acc"]
    a = {"tables": [{"name": "t", "columns": cols, "keys": ["run", "seed"],
                     "rows": [["x", 0.5], ["y", 1.0]]}]}
    b = {"tables": [{"name": "t", "columns": cols, "rows": [["y", 0.5], ["x", 0.75]]}]}
    (d,) = table_differences(a, b)
    assert d.rows == [["x", 0.25], ["y", -0.5]] and d.notes == []
