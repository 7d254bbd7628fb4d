"""Tables render the same data to CSV / Markdown / HTML / JSON; comparisons diff matched rows."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from sgdlab.report.compare import table_differences
from sgdlab.report.tables import Table, mean_std


def test_table_formats_round_trip():
    t = Table("t", ["run", "acc", "ok"], [["a|b", 0.123456789, True], ["c", float("nan"), None]],
              caption="cap", notes=["n1"])
    rows = list(csv.reader(io.StringIO(t.to_csv())))
    assert rows[0] == ["run", "acc", "ok"] and float(rows[1][1]) == 0.123456789 and rows[2][2] == ""
    md = t.to_markdown()
    assert "a\\|b" in md and "0.1235" in md and "| yes |" in md and "—" in md and "_n1_" in md
    html = t.to_html()
    assert "<caption>cap</caption>" in html and "<td>—</td><td>—</td>" in html
    assert "nan" not in md and "| c | — | — |" in md    # not measured, not a number "nan"
    assert "\n|---|---:|---|\n" in md        # the number column right-aligned, as in HTML
    assert rows[2][1] == "nan"                           # CSV keeps it
    assert Table("l", ["p"], [[[1.0, float("nan")]]]).to_markdown().endswith("| [1, —] |\n")
    assert "—" in Table("f", ["x"], [[np.float32("nan")]]).to_html()
    j = t.to_json()
    assert j["rows"][1][1] is None                      # NaN is not valid JSON
    assert Table.from_json(j).rows[0] == ["a|b", 0.123456789, True]
    assert t.column("run") == ["a|b", "c"]


def test_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="row 0 has 1 cells, expected 2"):
        Table("t", ["a", "b"], [[1]])


def test_mean_std_matches_sample_formula():
    m, s = mean_std([1.0, 2.0, 4.0, float("nan")])
    squares = (1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2
    assert m == pytest.approx(7 / 3) and s == pytest.approx(math.sqrt(squares / 2))
    assert math.isnan(mean_std([])[0])
    # one value measures no spread: its std is undefined (NaN), not 0 ...
    m, s = mean_std([3.0])
    assert m == 3.0 and math.isnan(s)
    # ... while equal values measure none: 0. The mean is rounded once from its exact value:
    # equal seeds give that value itself
    assert mean_std([0.1, 0.1, 0.1]) == (0.1, 0.0) and mean_std([0.1, 0.3])[0] == 0.2
    assert mean_std([0.1, 0.1]) == (0.1, 0.0)
    assert mean_std([1.0, math.inf])[0] == math.inf
    # an infinite seed: the float mean, of either sign, and NaN for +inf with -inf
    assert mean_std([1.0, -math.inf])[0] == -math.inf
    assert math.isnan(mean_std([math.inf, -math.inf])[0])


def test_table_differences_match_rows_on_labels():
    a = {"tables": [{"name": "s", "columns": ["run", "seed", "acc"],
                     "rows": [["x", 0, 0.5], ["y", 0, 0.7]]}]}
    b = {"tables": [{"name": "s", "columns": ["run", "seed", "acc"],
                     "rows": [["y", 1, 0.9], ["x", 1, 0.25]]}]}
    (d,) = table_differences(a, b)
    assert d.rows == [["x", 1, -0.25], ["y", 1, pytest.approx(0.2)]]
    b["tables"][0]["columns"] = ["run", "seed", "loss"]
    assert table_differences(a, b) == []


def test_table_differences_match_repeated_labels_in_order():
    # one row per seed under the same label: seed k of A against seed k of B, not all of A
    # against B's last row
    cols = ["pair", "seed", "width"]
    a = {"tables": [{"name": "w", "columns": cols,
                     "rows": [["p", 0, 1.0], ["p", 1, 2.0], ["q", 0, 5.0]]}]}
    b = {"tables": [{"name": "w", "columns": cols,
                     "rows": [["p", 0, 1.5], ["q", 0, 4.0], ["p", 1, 2.25], ["p", 2, 9.0]]}]}
    (d,) = table_differences(a, b)
    assert d.rows == [["p", 0, 0.5], ["p", 0, 0.25], ["q", 0, -1.0]]


def test_json_tells_an_infinity_from_a_missing_value_and_a_comparison_reads_both():
    """to_json writes NaN (not measured) as null and ±inf as "inf" / "-inf": the report page
    shows them as "—" and "inf" (a null for both could not tell them apart), and a
    comparison subtracts them as numbers (a null as NaN), not as row labels or text."""
    t = Table("t", ["run", "loss", "ratio"],
              [["x", float("nan"), float("inf")], ["y", 1.0, -math.inf]])
    j = t.to_json()
    assert j["rows"] == [["x", None, "inf"], ["y", 1.0, "-inf"]]
    assert "<td>x</td><td>—</td><td>inf</td>" in Table.from_json(j).to_html()
    b = {"tables": [{"name": "t", "columns": ["run", "loss", "ratio"],
                     "rows": [["x", 0.5, 3.0], ["y", None, "inf"]]}]}
    (d,) = table_differences({"tables": [j]}, b)
    (x, y) = d.rows
    assert x[0] == "x" and math.isnan(x[1]) and x[2] == -math.inf
    assert y[0] == "y" and math.isnan(y[1]) and y[2] == math.inf
    assert "<td>x</td><td>—</td><td>-inf</td>" in d.to_html()


def test_a_list_cells_infinity_reads_back_as_in_the_markdown():
    import json

    from sgdlab.strict_json import dumps

    t = Table("t", ["run", "interval"], [["x", [1.0, math.inf, math.nan]]])
    j = json.loads(dumps(t.to_json()))        # as results.json holds it
    assert j["rows"] == [["x", [1.0, "inf", None]]]
    assert "<td>[1, inf, —]</td>" in Table.from_json(j).to_html()
    assert "| x | [1, inf, —] |" in t.to_markdown()


def test_table_differences_match_grid_rows_on_their_settings_and_name_the_unmatched():
    # two grids sharing one learning rate: rows of different (lr, batch size) are not
    # subtracted from each other (in the tables' order they would be, row by row), and the
    # settings only one report ran are named
    cols = ["lr", "batch size", "lr / B", "acc"]
    a = Table("g", cols, [[0.05, 512, 0.05 / 512, 1.0], [0.05, 128, 0.05 / 128, 2.0],
                          [0.2, 512, 0.2 / 512, 3.0], [0.2, 128, 0.2 / 128, 4.0]],
              keys=["lr", "batch size"]).to_json()
    b = Table("g", cols, [[0.1, 512, 0.1 / 512, 10.0], [0.2, 512, 0.2 / 512, 30.0],
                          [0.1, 128, 0.1 / 128, 20.0], [0.2, 128, 0.2 / 128, 40.0]],
              keys=["lr", "batch size"]).to_json()
    (d,) = table_differences({"tables": [a]}, {"tables": [b]})
    assert d.rows == [[0.2, 512, 0.0, 27.0], [0.2, 128, 0.0, 36.0]]
    assert d.notes == ["rows only in A: lr=0.05, batch size=512; lr=0.05, batch size=128",
                       "rows only in B: lr=0.1, batch size=512; lr=0.1, batch size=128"]


def test_table_differences_without_declared_keys_match_on_the_first_column_too():
    # a results.json written before tables named their key columns: a numeric first column
    # (the row's name, kept as it is in the differences) is part of what a row is matched on
    a = {"tables": [{"name": "w", "columns": ["λ", "tv"], "rows": [[0.5, 1.0], [1.0, 2.0]]}]}
    b = {"tables": [{"name": "w", "columns": ["λ", "tv"], "rows": [[1.0, 2.5], [2.0, 9.0]]}]}
    (d,) = table_differences(a, b)
    assert d.rows == [[1.0, 0.5]]
    assert d.notes == ["rows only in A: λ=0.5", "rows only in B: λ=2"]
    # no row in common: said, not an empty section
    b["tables"][0]["rows"] = [[3.0, 1.0]]
    (d,) = table_differences(a, b)
    assert d.rows == [] and d.notes[0] == "no row of A has a row of B with the same settings"


def test_table_keys_are_columns_and_round_trip():
    with pytest.raises(ValueError, match="key column.*seed"):
        Table("t", ["run", "acc"], [], keys=["seed"])
    t = Table("t", ["run", "seed", "acc"], [["x", 0, 1.0]], keys=["run", "seed"])
    assert Table.from_json(t.to_json()).keys == ["run", "seed"]


def test_table_differences_take_bs_key_columns_where_as_declares_none():
    # A written before tables declared their keys: rows match on B's (lr, batch size), so
    # the two rows of lr 0.1 are told apart by their batch size, not matched in order
    cols = ["lr", "batch size", "acc"]
    a = {"tables": [{"name": "g", "columns": cols, "rows": [[0.1, 64, 0.5], [0.1, 128, 0.6]]}]}
    b = {"tables": [{"name": "g", "columns": cols, "keys": ["lr", "batch size"],
                     "rows": [[0.1, 128, 0.7], [0.1, 64, 0.75]]}]}
    (d,) = table_differences(a, b)
    assert d.rows == [[0.1, 64, 0.25], [0.1, 128, pytest.approx(0.1)]]


def test_table_differences_key_a_list_cell_and_show_a_changed_text_cell_as_a_to_b():
    cols = ["milestones", "optimizer", "acc"]
    a = {"tables": [{"name": "m", "columns": cols, "keys": ["milestones"],
                     "rows": [[[10, 20], "sgd", 0.5]]}]}
    b = {"tables": [{"name": "m", "columns": cols, "keys": ["milestones"],
                     "rows": [[[10, 20], "adam", 0.75]]}]}
    (d,) = table_differences(a, b)
    assert d.rows == [[[10, 20], "sgd → adam", 0.25]]


def test_csv_writes_zero_and_false_and_an_empty_cell_only_for_none():
    t = Table("t", ["run", "n", "x", "ok"], [["a", 0, 0.0, False], ["b", None, 1.5, True]])
    assert list(csv.reader(io.StringIO(t.to_csv())))[1:] == [["a", "0", "0.0", "False"],
                                                            ["b", "", "1.5", "True"]]


def test_markdown_right_aligns_a_column_by_all_its_rows_and_not_one_without_numbers():
    # column "x": a text first row makes it a text column (left), "n": numbers in every row
    # (right), "none": no value at all (left)
    t = Table("t", ["x", "n", "none"], [["a", 1, None], [2.0, 3.5, None]])
    assert "\n|---|---:|---|\n" in t.to_markdown()


def test_table_notes_and_caption_survive_the_json_record_into_the_page():
    t = Table("t", ["run", "acc"], [["a", 0.5]], caption="cap", notes=["seed 1 failed"])
    back = Table.from_json(t.to_json())
    assert (back.caption, back.notes) == ("cap", ["seed 1 failed"])
    assert "<p class='note'>seed 1 failed</p>" in back.to_html()


def test_table_differences_show_a_changed_boolean_cell_as_a_to_b_not_a_number():
    # a boolean is a verdict, not a count: True − False is not a difference of 1
    cols = ["run", "passed", "acc"]
    a = {"tables": [{"name": "v", "columns": cols, "rows": [["x", False, 0.5]]}]}
    b = {"tables": [{"name": "v", "columns": cols, "rows": [["x", True, 0.75]]}]}
    (d,) = table_differences(a, b)
    assert d.rows == [["x", "False → True", 0.25]]


def test_a_percent_column_shows_its_fractions_in_percent_and_stores_them_as_fractions():
    t = Table("rates", ["method", "success rate", "n"], [["sgd", 0.45, 20], ["gd", None, 20]],
              percent=["success rate"])
    assert "| sgd | 45.0% | 20 |" in t.to_markdown() and "| gd | — | 20 |" in t.to_markdown()
    assert "<td>45.0%</td>" in t.to_html()
    assert "sgd,0.45,20" in t.to_csv() and t.to_json()["rows"][0][1] == 0.45
    # the page rebuilt from results.json shows it so too
    assert "<td>45.0%</td>" in Table.from_json(t.to_json()).to_html()
    with pytest.raises(ValueError, match=r"percent column\(s\) rate are not among"):
        Table("rates", ["method"], [], percent=["rate"])


def test_the_difference_of_two_percent_columns_is_shown_in_points_too():
    def report(rate):
        return {"tables": [Table("rates", ["method", "success rate"], [["sgd", rate]],
                                 percent=["success rate"]).to_json()]}
    (diff,) = table_differences(report(0.4), report(0.45))
    assert "| sgd | 5.0% |" in diff.to_markdown()
