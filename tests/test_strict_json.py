"""Strict JSON: non-finite floats are written as null (or as strings), nothing a strict reader
refuses."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sgdlab.strict_json import dumps, finite_or_none
from sgdlab.testing import strict_loads


def test_non_finite_floats_become_null_at_any_depth():
    obj = {"loss": math.nan, "hist": [(0, 1.5), (1, math.inf)], "g": {"x": -math.inf},
           "n": 3, "ok": True, "s": "nan", "f64": np.float64("nan")}
    assert strict_loads(dumps(obj, indent=1)) == {
        "loss": None, "hist": [[0, 1.5], [1, None]], "g": {"x": None}, "n": 3, "ok": True,
        "s": "nan", "f64": None}
    assert finite_or_none((1.0, math.nan)) == [1.0, None]


def test_what_default_makes_of_an_object_is_converted_too():
    obj = {"a": np.float32("nan"), "b": np.float32(0.5)}
    assert strict_loads(dumps(obj, default=float)) == {"a": None, "b": 0.5}
    with pytest.raises(TypeError):       # without a default an unknown type still fails
        dumps({"a": object()})


def test_nan_that_slips_past_the_conversion_raises():
    # a float dict key is not converted: allow_nan=False refuses it instead of writing NaN
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({math.nan: 1})


def test_arrays_read_back_with_nan_where_a_non_finite_number_was():
    from sgdlab.strict_json import nan_in_arrays

    written = {"curve": [1.0, math.nan, math.inf], "grid": [[0, -math.inf], [math.nan, 2]],
               "label": None, "runs": [{"loss": [math.nan]}, "text", None], "flags": [True, None]}
    back = nan_in_arrays(strict_loads(dumps(written)))
    assert back["curve"][0] == 1.0 and all(map(math.isnan, back["curve"][1:]))
    assert back["grid"][0][0] == 0 and math.isnan(back["grid"][0][1])
    assert math.isnan(back["grid"][1][0]) and back["grid"][1][1] == 2
    assert math.isnan(back["runs"][0]["loss"][0])
    # None outside an array of numbers was not a number: kept
    assert back["label"] is None and back["runs"][1:] == ["text", None]
    assert back["flags"] == [True, None]


def test_two_writers_of_one_file_each_write_it_whole(tmp_path, monkeypatch):
    """Two sweeps sharing a store end with the same report: another writer's whole write of
    results.json between this one's write and rename neither takes this one's temporary
    file nor moves away a half-written one."""
    import os

    import sgdlab.strict_json as strict_json

    path = tmp_path / "results.json"
    rename = os.replace

    def the_other_writer_first(src, dst):
        monkeypatch.setattr(strict_json.os, "replace", rename)
        strict_json.write_atomic(path, {"by": "other"})
        rename(src, dst)

    monkeypatch.setattr(strict_json.os, "replace", the_other_writer_first)
    strict_json.write_atomic(path, {"by": "this", "x": [1.0] * 100})
    assert json.loads(path.read_text()) == {"by": "this", "x": [1.0] * 100}
    assert list(tmp_path.iterdir()) == [path]            # no temporary file left


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    import os

    import sgdlab.strict_json as strict_json

    path = tmp_path / "results.json"
    strict_json.write_atomic(path, {"v": 1})

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(strict_json.os, "replace", full_disk)
    with pytest.raises(OSError):
        strict_json.write_atomic(path, {"v": 2})
    monkeypatch.setattr(strict_json.os, "replace", os.replace)
    assert json.loads(path.read_text()) == {"v": 1} and list(tmp_path.iterdir()) == [path]


def test_non_finite_floats_as_strings_and_back():
    from sgdlab.strict_json import nonfinite_from_strings

    obj = {"loss": math.inf, "hist": [(0, 1.5), (1, -math.inf)], "acc": np.float64("nan"),
           "missing": None, "n": 3}
    text = dumps(obj, nonfinite="string")
    assert strict_loads(text) == {"loss": "inf", "hist": [[0, 1.5], [1, "-inf"]],
                                  "acc": "nan", "missing": None, "n": 3}
    back = nonfinite_from_strings(strict_loads(text))
    assert back["loss"] == math.inf and back["hist"] == [[0, 1.5], [1, -math.inf]]
    assert math.isnan(back["acc"]) and back["missing"] is None
    assert strict_loads(dumps({"a": np.float32("inf")}, default=float,
                              nonfinite="string")) == {"a": "inf"}
    with pytest.raises(ValueError, match="nonfinite='zero'"):
        dumps(obj, nonfinite="zero")


def test_the_tests_strict_reader_refuses_what_jq_refuses():
    # the strict-JSON checks across the tests read through it: one that took NaN would pass
    # them all
    for text in ("NaN", "[1, Infinity]", '{"a": -Infinity}'):
        with pytest.raises(ValueError, match="not JSON"):
            strict_loads(text)
    assert strict_loads('{"a": [1.5, null]}') == {"a": [1.5, None]}
