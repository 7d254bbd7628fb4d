"""``checkpoint.changed_settings``: what a resume may not change, named key by key."""
from __future__ import annotations

import torch

from sgdlab.train.checkpoint import changed_settings, snapshot


def test_changed_settings_names_each_difference_written_by_hand():
    """Values compare as numbers whatever holds them (a tensor, a tuple read back as a list),
    a NaN equals a NaN; a top-level key only one side has is not compared (a newer torch adds
    keys to a group), one inside a mapping is; lists of mappings of equal length are compared
    by index, others whole; a value over 40 characters is cut to 37 and '...'."""
    nan = float("nan")
    saved = {"lr": 0.1, "betas": (0.9, 0.999), "only_saved": 1, "nan": nan, "nan2": nan,
             "model": {"act": "tanh", "width": 4, "extra": 1},
             "scheds": [{"g": 0.5}, {"g": 0.1}], "runs": [{"g": 0.5}],
             "shape": [1, 2], "mixed": [{"a": 1}, 2], "tensors": [{"t": [1.0, 2.0]}, 2],
             "long": "a" * 38, "longer": "a" * 38}
    now = {"lr": torch.tensor(0.1, dtype=torch.float64), "betas": [0.9, 0.999], "nan": nan,
           "nan2": None, "model": {"act": "relu", "width": 4, "depth": 2},
           "scheds": [{"g": 0.5}, {"g": 0.2}], "runs": [{"g": 0.5}, {"g": 0.2}],
           "shape": [1, 2, 3], "mixed": [{"a": 1, "b": 2}, 2],
           "tensors": [{"t": torch.tensor([1.0, 2.0])}, 2],
           "long": "b" * 38, "longer": "b" * 39, "only_now": 2}
    assert changed_settings(saved, now, of=" x") == [
        "nan2 x (nan -> None)",
        "model.act x ('tanh' -> 'relu')",
        "model.depth x (not set -> 2)",
        "model.extra x (1 -> not set)",
        "scheds.1.g x (0.1 -> 0.2)",
        "runs x ([{'g': 0.5}] -> [{'g': 0.5}, {'g': 0.2}])",
        "shape x ([1, 2] -> [1, 2, 3])",
        "mixed x ([{'a': 1}, 2] -> [{'a': 1, 'b': 2}, 2])",
        f"long x ('{'a' * 38}' -> '{'b' * 38}')",
        f"longer x ('{'a' * 38}' -> '{'b' * 36}...)",
    ]
    assert changed_settings(saved, saved) == []


def test_nan_lists_of_another_length_and_keys_of_a_mapping_are_compared():
    nan = float("nan")
    assert changed_settings({"a": nan, "b": [nan, 1]}, {"a": nan, "b": [nan, 1]}) == []
    assert changed_settings({"b": [1, 2]}, {"b": [1, 2, 3]}) == ["b ([1, 2] -> [1, 2, 3])"]
    assert changed_settings({"b": [1, 2, 3]}, {"b": [1, 2]}) == ["b ([1, 2, 3] -> [1, 2])"]
    assert changed_settings({"m": {"x": 1}}, {"m": {}}) == ["m.x (1 -> not set)"]
    assert changed_settings({"only_saved": 1}, {"only_now": 2}) == []


def test_snapshot_is_a_copy_a_later_in_place_change_does_not_reach():
    lr = torch.tensor(0.1)
    held = snapshot({"groups": [{"lr": lr, "betas": (0.9, 0.99)}]})
    lr.mul_(0.5)                        # a schedule moving a tensor lr in place
    assert held == {"groups": [{"lr": torch.tensor(0.1), "betas": (0.9, 0.99)}]}
    assert isinstance(held["groups"][0]["betas"], tuple)
