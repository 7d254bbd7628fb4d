"""``compare_groups``' derived values: the reductions and transforms of a stored series."""
from __future__ import annotations

import math

import pytest

from sgdlab.errors import ConfigError
from sgdlab.experiments.procedures import StoredRun
from sgdlab.experiments.procedures.generic import add_derived, mean_abs_change


def _run(series: dict[str, list[tuple[float, float]]]) -> StoredRun:
    return StoredRun("k", "r", "a", 0, {}, "finished", {}, series, {})


def test_mean_abs_change_is_the_change_per_step_between_consecutive_records():
    # |20 − 10| / 2 = 5, |5 − 20| / 4 = 3.75, |5 − 5| / 1 = 0: mean 2.9166...
    assert mean_abs_change([(0, 10.0), (2, 20.0), (6, 5.0), (7, 5.0)]) == \
        pytest.approx((5 + 3.75 + 0) / 3)
    # a NaN record is skipped: the change spans it (|40 − 10| / 4)
    assert mean_abs_change([(0, 10.0), (2, math.nan), (4, 40.0)]) == pytest.approx(7.5)
    assert math.isnan(mean_abs_change([(0, 1.0)]))
    assert math.isnan(mean_abs_change([]))


def test_mean_and_mean_abs_reduce_every_finite_record():
    r = _run({"cos": [(0, 0.5), (1, -0.25), (2, math.nan), (3, -0.75)]})
    add_derived([r], [{"name": "m", "metric": "cos", "reduce": "mean"},
                      {"name": "ma", "metric": "cos", "reduce": "mean_abs"},
                      {"name": "ch", "metric": "cos", "reduce": "mean_abs_change"}])
    assert r.summary["m"] == pytest.approx(-0.5 / 3)
    assert r.summary["ma"] == pytest.approx(0.5)
    assert r.summary["ch"] == pytest.approx((0.75 + 0.25) / 2)    # 0.75/1, 0.5/2


def test_transforms_exp_and_log():
    r = _run({"test_loss": [(0, 2.0), (10, math.log(80.0))], "rate": [(0, 0.0), (1, 4.0)]})
    add_derived([r], [{"name": "ppl", "metric": "test_loss", "reduce": "last",
                       "transform": "exp"},
                      {"name": "lr", "metric": "rate", "reduce": "mean_abs_change",
                       "transform": "log"},
                      {"name": "neg", "metric": "rate", "reduce": "min", "transform": "log"},
                      {"name": "big", "metric": "test_loss", "reduce": "max",
                       "transform": "exp"}])
    assert r.summary["ppl"] == pytest.approx(80.0)
    assert r.summary["lr"] == pytest.approx(math.log(4.0))
    assert math.isnan(r.summary["neg"])          # log of 0: no value, not an error
    assert r.summary["big"] == pytest.approx(80.0)
    huge = _run({"test_loss": [(0, 800.0)]})
    add_derived([huge], [{"name": "ppl", "metric": "test_loss", "reduce": "last",
                          "transform": "exp"}])
    assert huge.summary["ppl"] == math.inf
    with pytest.raises(ConfigError, match="unknown transform 'sqrt'"):
        add_derived([r], [{"name": "x", "metric": "rate", "transform": "sqrt"}])
    with pytest.raises(ConfigError, match="unknown reduce 'median'"):
        add_derived([r], [{"name": "x", "metric": "rate", "reduce": "median"}])
