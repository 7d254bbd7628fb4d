"""``compare_groups``' derived values: the reductions and transforms of a stored series."""
from __future__ import annotations

import math

import pytest

from sgdlab.errors import ConfigError
from sgdlab.experiments.procedures import StoredRun
from sgdlab.experiments.procedures.generic import add_derived, mean_abs_change
from sgdlab.testing import stored_run


def _run(series: dict[str, list[tuple[float, float]]]) -> StoredRun:
    return stored_run(metrics=series)


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
    # a flat series has the same mean over any window, exactly (a float sum of three 0.1s
    # over 3 is 0.10000000000000002, which a strict claim would read as above 0.1)
    r = _run({"acc": [(s, 0.1) for s in range(4)]})
    add_derived([r], [{"name": "m1", "metric": "acc", "reduce": "mean_first_k", "k": 1},
                      {"name": "m3", "metric": "acc", "reduce": "mean_first_k", "k": 3},
                      {"name": "l3", "metric": "acc", "reduce": "mean_last_k", "k": 3},
                      {"name": "m", "metric": "acc", "reduce": "mean"}])
    assert r.summary["m1"] == r.summary["m3"] == r.summary["l3"] == r.summary["m"] == 0.1


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


def _acc_run(label: str, seed: int, acc: list[tuple[int, float]], eff_per_step: float
             ) -> StoredRun:
    """A run whose accuracy is recorded at ``acc``'s steps and whose effective epochs grow by
    ``eff_per_step`` per step, logged at the end (as a run that stops inside its first epoch)."""
    last = acc[-1][0]
    return stored_run(label, seed, metrics={"test_acc": acc,
                                            "effective_epochs": [(last, last * eff_per_step)]})


def test_time_to_error_reaches_a_group_mean_final_error_within_the_slack():
    # sgd ends at errors 0.10 and 0.20: mean 0.15, target 0.15 × 1.2 = 0.18 (every record's
    # error is at least 0.01 from it, far beyond rounding)
    sgd0 = _acc_run("sgd", 0, [(0, 0.1), (10, 0.85), (20, 0.9)], 0.5)
    sgd1 = _acc_run("sgd", 1, [(0, 0.1), (10, 0.81), (20, 0.8)], 0.5)
    # 20 gradient evaluations per step: step 1 is 10 effective epochs
    ent = _acc_run("ent", 0, [(0, 0.1), (1, 0.7), (2, math.nan), (3, 0.83), (4, 0.95)], 10.0)
    slow = _acc_run("slow", 0, [(0, 0.1), (4, 0.5), (8, 0.81)], 1.0)
    runs = [sgd0, sgd1, ent, slow]
    add_derived(runs, [{"name": "t", "metric": "test_acc", "reduce": "time_to_error",
                        "error_of": "sgd", "slack": 0.2}])
    assert sgd0.summary["t"] == 5.0 and sgd0.summary["t__censored"] is False   # 0.15 ≤ 0.18
    # errors 0.19 and 0.20 both miss 0.18: a baseline seed ending above the target is censored
    assert sgd1.summary["t"] == 10.0 and sgd1.summary["t__censored"] is True
    assert ent.summary["t"] == 30.0 and ent.summary["t__censored"] is False    # NaN skipped
    # never within 0.18 (0.19 at the end): its last time, a lower bound
    assert slow.summary["t"] == 8.0 and slow.summary["t__censored"] is True


def test_time_to_error_to_the_runs_own_final_error():
    r = _acc_run("a", 0, [(0, 0.1), (2, 0.9), (4, 0.88), (6, 0.9)], 1.0)
    add_derived([r], [{"name": "own", "metric": "test_acc", "reduce": "time_to_error",
                       "error_of": "own"},
                      {"name": "own_step", "metric": "test_acc", "reduce": "time_to_error",
                       "error_of": "own", "x": "step"}])
    # the first record at its final 0.9 is step 2, not the end
    assert r.summary["own"] == 2.0 and r.summary["own__censored"] is False
    assert r.summary["own_step"] == 2.0
    with pytest.raises(ConfigError, match="needs 'error_of'"):
        add_derived([r], [{"name": "x", "metric": "test_acc", "reduce": "time_to_error"}])
    with pytest.raises(ConfigError, match="error_of 'sgd' is not a run group"):
        add_derived([r], [{"name": "x", "metric": "test_acc", "reduce": "time_to_error",
                           "error_of": "sgd"}])


def test_time_to_error_of_a_run_stopped_inside_its_first_epoch_reads_its_summary():
    # 16 steps of L = 20 on 32 batches an epoch: no epoch end, so no effective_epochs series;
    # the summary's 10 effective epochs at step 16 give the time (5 at step 8)
    r = stored_run("ent", summary={"steps": 16, "effective_epochs": 10.0},
                   metrics={"test_acc": [(0, 0.1), (8, 0.9), (16, 0.9)]})
    add_derived([r], [{"name": "t", "metric": "test_acc", "reduce": "time_to_error",
                       "error_of": "own"}])
    assert r.summary["t"] == 5.0 and r.summary["t__censored"] is False


def test_each_reduce_of_a_series_out_of_order_by_hand():
    # max, min, first and last differ from the series' ends; NaN records are left out
    r = _run({"acc": [(0, 0.3), (1, math.nan), (2, 0.9), (3, 0.1), (4, 0.5), (5, 0.4)]})
    add_derived([r], [{"name": n, "metric": "acc", "reduce": n}
                      for n in ("max", "min", "first", "last")]
                + [{"name": "f2", "metric": "acc", "reduce": "mean_first_k", "k": 2},
                   {"name": "l2", "metric": "acc", "reduce": "mean_last_k", "k": 2},
                   {"name": "l_default", "metric": "acc", "reduce": "mean_last_k"},
                   {"name": "default", "metric": "acc"}])
    s = r.summary
    assert (s["max"], s["min"], s["first"], s["last"]) == (0.9, 0.1, 0.3, 0.4)
    assert s["f2"] == pytest.approx(0.6) and s["l2"] == pytest.approx(0.45)
    assert s["l_default"] == pytest.approx(1.0 / 3)       # k = 3: 0.1, 0.5, 0.4
    assert s["default"] == 0.9                            # reduce defaults to max
    assert math.isnan(_reduce_one(_run({"acc": [(0, math.nan)]}), "max"))
    assert math.isnan(_reduce_one(_run({}), "last"))


def _reduce_one(r: StoredRun, red: str, **kw) -> float:
    """The value ``red`` derives from ``r``'s "acc" (another series: ``metric=``)."""
    add_derived([r], [{"name": "v", "metric": "acc", "reduce": red, **kw}])
    return r.summary["v"]


def test_minus_takes_the_difference_of_the_two_reductions():
    r = _run({"train_acc": [(0, 0.5), (9, 0.99)], "test_acc": [(0, 0.4), (9, 0.9)]})
    gap = _reduce_one(r, "last", metric="train_acc", minus="test_acc")
    assert gap == pytest.approx(0.09)


def test_at_step_reads_the_last_record_at_or_before_the_step():
    series = {"acc": [(0, 0.1), (10, 0.5), (20, 0.7)]}
    assert _reduce_one(_run(series), "at_step", step=10) == 0.5       # a record at the step
    assert _reduce_one(_run(series), "at_step", step=15) == 0.5
    assert math.isnan(_reduce_one(_run({"acc": [(5, 0.1)]}), "at_step", step=4))
    # a run that stopped exactly at the step has a state there; one that stopped before not
    stopped = stored_run(summary={"steps": 20}, metrics=series)
    assert _reduce_one(stopped, "at_step", step=20) == 0.7
    early = stored_run(summary={"steps": 19}, metrics=series)
    assert math.isnan(_reduce_one(early, "at_step", step=20))
    with pytest.raises(ConfigError, match="reduce at_step needs a 'step'"):
        _reduce_one(_run(series), "at_step")


def test_two_records_at_one_step_give_no_change_rate():
    # a series logged twice at a step (a resumed run) has no rate between those two records:
    # |3 − 1| / 2 and |5 − 5| / 2
    assert mean_abs_change([(0, 1.0), (2, 3.0), (2, 5.0), (4, 5.0)]) == pytest.approx(0.5)


def test_exp_of_a_loss_just_below_the_overflow_is_finite():
    ppl = _reduce_one(_run({"test_loss": [(0, 705.0)]}), "last", metric="test_loss",
                      transform="exp")
    assert ppl == math.exp(705.0) < math.inf


def test_time_to_error_leaves_out_a_baseline_seed_with_no_finite_final():
    # sgd's second seed diverged (NaN throughout): the target is the first seed's error 0.2
    sgd0 = _acc_run("sgd", 0, [(0, 0.1), (10, 0.8)], 1.0)
    sgd1 = _acc_run("sgd", 1, [(0, math.nan), (10, math.nan)], 1.0)
    other = _acc_run("b", 0, [(0, 0.1), (4, 0.8), (8, 0.9)], 1.0)
    add_derived([sgd0, sgd1, other], [{"name": "t", "metric": "test_acc",
                                       "reduce": "time_to_error", "error_of": "sgd",
                                       "x": "step"}])
    assert other.summary["t"] == 4.0 and other.summary["t__censored"] is False
    assert math.isnan(sgd1.summary["t"])


def test_time_to_error_to_the_runs_own_final_error_within_a_slack():
    # own final error 0.1; slack 0.5 takes the first error at most 0.15: 0.86 at step 4
    r = _acc_run("a", 0, [(0, 0.1), (2, 0.8), (4, 0.86), (6, 0.9)], 1.0)
    add_derived([r], [{"name": "t", "metric": "test_acc", "reduce": "time_to_error",
                       "error_of": "own", "slack": 0.5, "x": "step"}])
    assert r.summary["t"] == 4.0 and r.summary["t__censored"] is False


def test_time_to_error_of_a_baseline_without_a_finite_final_is_nan_for_every_run():
    sgd = _acc_run("sgd", 0, [(0, math.nan), (10, math.nan)], 1.0)
    other = _acc_run("b", 0, [(0, 0.1), (4, 0.8)], 1.0)
    add_derived([sgd, other], [{"name": "t", "metric": "test_acc", "reduce": "time_to_error",
                                "error_of": "sgd", "x": "step"}])
    assert math.isnan(other.summary["t"]) and other.summary["t__censored"] is False


# --- compare_groups: grouping, table, bars, curves and diverged runs -------------------------
def _grouped(label: str, seed: int, lr: float, summary: dict, status: str = "finished"
             ) -> StoredRun:
    return stored_run(label, seed, params={"optimizer": {"name": "sgd", "lr": lr}},
                      summary=summary, status=status,
                      metrics={"train_loss": [(0, 1.0), (10, 0.5)],
                               "test_acc": [(0, 0.1), (10, 0.5)], "epoch": [(10, 1.0)]})


def _spec(**options):
    from types import SimpleNamespace

    return SimpleNamespace(options=options, paper={"figure": "Fig. 9"})


def test_compare_groups_groups_by_a_parameter_and_tabulates_the_keys_asked_for():
    from sgdlab.experiments.procedures.generic import compare_groups

    runs = [_grouped("a", 0, 0.1, {"acc": 0.5}), _grouped("b", 0, 0.1, {"acc": 0.7}),
            _grouped("c", 0, 0.2, {"acc": 0.9}, "diverged"), _grouped("c", 1, 0.2, {"acc": 0.8})]
    res = compare_groups(_spec(group_by="optimizer.lr", table=[["acc", "accuracy"]]), runs)
    (t,) = res.tables
    assert t.columns[:4] == ["run", "seeds", "accuracy", "accuracy std"]
    assert [row[:3] for row in t.rows] == [["lr=0.1", 2, pytest.approx(0.6)],
                                           ["lr=0.2", 2, pytest.approx(0.85)]]
    # a group where one seed of two diverged is named
    assert [c.text for c in res.conclusions] == ["runs diverged in: lr=0.2"]
    # the curves' x axis is the step unless curve_x says otherwise
    fig = dict(res.figures)["curve_train_loss"]
    assert fig.axes[0].get_xlabel() == "step"


def test_bars_show_the_seeds_std_and_propagate_a_differences_error(monkeypatch):
    from sgdlab.experiments.procedures import generic
    from sgdlab.report.figures import charts

    drawn = {}

    def spy(labels, series, **kw):
        drawn.update(labels=list(labels), series=series, zoom=kw["zoom"])
        return charts.plt.figure()
    monkeypatch.setattr(charts, "grouped_bars", spy)
    # group a: x = 1, 3 (std √2), y = 0, 2 (std √2), d = x − y; group b: one seed
    runs = [_grouped("a", 0, 0.1, {"x": 1.0, "y": 0.0, "d": 1.0}),
            _grouped("a", 1, 0.1, {"x": 3.0, "y": 2.0, "d": 1.0}),
            _grouped("b", 0, 0.1, {"x": 5.0, "y": 1.0, "d": 4.0})]
    bars = {"name": "b1", "metrics": [["x", "X"], ["d", "X − Y"]], "propagate": {"d": ["x", "y"]}}
    generic.compare_groups(_spec(bars=[bars], curves=[]), runs)
    assert drawn["labels"] == ["a", "b"] and drawn["zoom"] is False
    (mx, ex), (md, ed) = drawn["series"]["X"], drawn["series"]["X − Y"]
    assert mx == [2.0, 5.0] and md == [1.0, 4.0]
    assert ex[0] == pytest.approx(math.sqrt(2)) and math.isnan(ex[1])     # one seed: no bar
    assert ed[0] == pytest.approx(2.0) and math.isnan(ed[1])              # √(2 + 2)
    for bad in ({"name": "b2"}, {"metrics": [["x", "X"]]}):
        with pytest.raises(ConfigError, match="each entry needs a name and metrics"):
            generic.compare_groups(_spec(bars=[bad], curves=[]), runs)


def test_a_transform_of_a_series_without_a_finite_record_is_nan_not_infinite():
    # exp of NaN would read "not below 709" and give inf: a run that logged only NaN losses
    # has no perplexity, not an infinite one
    r = _run({"test_loss": [(0, math.nan), (1, math.nan)]})
    assert math.isnan(_reduce_one(r, "last", metric="test_loss", transform="exp"))
    assert math.isnan(_reduce_one(r, "last", metric="test_loss", transform="log"))


def test_a_propagated_error_needs_two_seeds_of_every_value_it_is_computed_from(monkeypatch):
    from sgdlab.experiments.procedures import generic
    from sgdlab.report.figures import charts

    drawn = {}

    def spy(labels, series, **kw):
        drawn.update(series=series)
        return charts.plt.figure()
    monkeypatch.setattr(charts, "grouped_bars", spy)
    # x has two seeds (std √2), y only one (the other NaN): d = x − y has no propagated
    # error, though √(2 + 0) could be computed from y's std of one value, 0
    runs = [_grouped("a", 0, 0.1, {"x": 1.0, "y": 0.0, "d": 1.0}),
            _grouped("a", 1, 0.1, {"x": 3.0, "y": math.nan, "d": math.nan})]
    bars = {"name": "b1", "metrics": [["d", "X − Y"]], "propagate": {"d": ["x", "y"]}}
    generic.compare_groups(_spec(bars=[bars], curves=[]), runs)
    (md,), (ed,) = drawn["series"]["X − Y"]
    assert md == 1.0 and math.isnan(ed)


def test_log_of_the_smallest_positive_rate_is_its_log():
    # log is NaN only where the value is not positive: 5e-324 (the smallest subnormal) has one
    tiny = _reduce_one(_run({"acc": [(0, 5e-324)]}), "last", transform="log")
    assert tiny == math.log(5e-324) == pytest.approx(-744.44, abs=0.01)


def test_minus_reduces_the_other_series_the_same_way():
    # max(train) − max(test) = 0.9 − 0.75, not minus test's last record (0.7)
    r = _run({"train_acc": [(0, 0.9), (9, 0.8)], "test_acc": [(0, 0.75), (9, 0.7)]})
    assert _reduce_one(r, "max", metric="train_acc", minus="test_acc") == pytest.approx(0.15)


def test_a_claim_reads_a_summary_value_that_is_neither_tabulated_nor_derived():
    from sgdlab.experiments.procedures.generic import compare_groups

    runs = [_grouped(g, s, 0.1, {"v": base + 0.1 * s})
            for g, base in (("a", 1.0), ("b", 2.0)) for s in range(3)]
    claim = {"less": ["a", "b"], "metric": "v", "claim": "a is lower"}
    res = compare_groups(_spec(table=[["acc", "accuracy"]], curves=[], claims=[claim]), runs)
    (c,) = res.conclusions
    assert c.agrees_with_paper is True, c.text


def test_time_to_error_without_a_slack_waits_for_the_error_itself():
    # own final error 0.1; an error of 0.102 at step 2 is not it (no slack by default)
    r = _acc_run("a", 0, [(0, 0.1), (2, 0.898), (4, 0.9)], 1.0)
    add_derived([r], [{"name": "t", "metric": "test_acc", "reduce": "time_to_error",
                       "error_of": "own", "x": "step"}])
    assert r.summary["t"] == 4.0 and r.summary["t__censored"] is False
