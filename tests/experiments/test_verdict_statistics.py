"""The verdict statistics of the analyses against hand-computed cases: the Welch TOST
equivalence interval, every claim kind, Spearman trends over the η/B grid, the escape-rate
ordering and the generic group comparison (table values, seed counts, mean curves)."""
from __future__ import annotations

import io
import math
import warnings
from collections import OrderedDict
from types import SimpleNamespace

import matplotlib
import pytest

from sgdlab.experiments.procedures.common import (check_claims, equivalence, mean_curve,
                                                  values_by_group)
from sgdlab.testing import stored_run as run

matplotlib.use("Agg")
PAPER = {"author": "X", "figure": "Fig. 0"}
T95_DF4 = 2.131847        # Student t 0.95 quantile, 4 degrees of freedom (printed tables)
T95_DF8 = 1.859548



def test_welch_interval_uses_the_satterthwaite_degrees_of_freedom():
    from scipy import stats

    # s_a = 0.02 over 4 seeds, s_b = 0.01 over 6: s²/n = 1e-4 and 1e-4/6, so
    # df = (7e-4/6)² / ((1e-4)²/3 + (1e-4/6)²/5) = 245/61 ≈ 4.016 (not the pooled 8)
    se = math.sqrt(1e-4 + 1e-4 / 6)
    t_welch = stats.t.ppf(0.95, 245 / 61)
    assert t_welch == pytest.approx(T95_DF4, abs=5e-3)           # df ≈ 4, not 8
    half = t_welch * se                                           # ≈ 0.0230
    # a margin between the pooled-df half-width (≈ 0.0201) and Welch's: only Welch straddles
    margin = 0.0215
    assert T95_DF8 * se < margin < half
    ok, text = equivalence(0.5, 0.5, 0.02, 0.01, 4, 6, margin)
    assert ok is None and "straddles" in text
    assert f"[{-half:.4g}, {half:.4g}]" in text
    ok, text = equivalence(0.5, 0.5, 0.02, 0.01, 4, 6, half + 1e-4)
    assert ok is True and "inside" in text
    # wholly outside: lo = d − half > margin
    ok, text = equivalence(0.5 + half + 0.011, 0.5, 0.02, 0.01, 4, 6, 0.01)
    assert ok is False and "outside" in text
    # the interval is symmetric in the order of the groups (d changes sign only)
    assert equivalence(0.5, 0.53, 0.02, 0.01, 4, 6, 0.01)[0] is None
    # no spread at all: the interval is the point difference
    assert equivalence(0.5, 0.505, 0.0, 0.0, 3, 3, 0.01)[0] is True
    assert equivalence(0.5, 0.52, 0.0, 0.0, 3, 3, 0.01)[0] is False
    # one seed on both sides: the point difference decides, and the text says why
    ok, text = equivalence(0.5, 0.52, 0.0, 0.0, 1, 1, 0.01)
    assert ok is False and "one seed" in text
    # one seed on one side: the other side's std still bounds the point difference
    ok, text = equivalence(0.5, 0.52, 0.1, 0.0, 5, 1, 0.01)
    assert ok is None and "within the seed-to-seed spread (std 0.1)" in text
    ok, text = equivalence(0.805, 0.8, 0.1, 0.0, 3, 1, 0.01)
    assert ok is None                                  # |d| = 0.005: agreement not shown either
    ok, text = equivalence(0.5, 0.9, 0.1, 0.0, 5, 1, 0.01)
    assert ok is False and "the other's std 0.1" in text


def _vals(**groups):
    """``a=(mean, std, n)`` -> the value table check_claims reads."""
    return {g: {"m": m, "m__std": s, "m__n": n} for g, (m, s, n) in groups.items()}


def _agrees(claim, values):
    """check_claims' verdict on one claim."""
    return check_claims([claim], values)[0].agrees_with_paper


def test_every_claim_kind_on_hand_made_values():
    v = _vals(a=(1.0, 0.0, 3), b=(2.0, 0.0, 3), c=(1.05, 0.0, 3), d=(0.5, 0.0, 3))
    assert _agrees({"less": ["a", "b"], "metric": "m"}, v) is True
    assert _agrees({"less": ["b", "a"], "metric": "m"}, v) is False
    assert _agrees({"greater": ["b", "a"], "metric": "m"}, v) is True
    assert _agrees({"greater": ["a", "b"], "metric": "m"}, v) is False
    # a positive margin makes the claim stricter: 1 + 0.9 < 2 holds, 1 + 1.1 < 2 does not
    assert _agrees({"less": ["a", "b"], "metric": "m", "margin": 0.9}, v) is True
    assert _agrees({"less": ["a", "b"], "metric": "m", "margin": 1.1}, v) is False
    assert _agrees({"greater": ["b", "a"], "metric": "m", "margin": 1.1}, v) is False
    # close: |a − c| = 0.05 <= atol + rtol·|c|
    assert _agrees({"close": ["a", "c"], "metric": "m"}, v) is True                 # 0.105 default
    assert _agrees({"close": ["a", "c"], "metric": "m", "rtol": 0.04}, v) is False  # 0.042
    assert _agrees({"close": ["a", "c"], "metric": "m", "rtol": 0.0, "atol": 0.06}, v) is True
    assert _agrees({"far": ["a", "c"], "metric": "m", "rtol": 0.04}, v) is True
    assert _agrees({"far": ["a", "c"], "metric": "m"}, v) is False
    # above: min over the first set > max over the second
    assert _agrees({"above": [["b", "a"], ["d"]], "metric": "m"}, v) is True
    assert _agrees({"above": [["b", "d"], ["a"]], "metric": "m"}, v) is False
    (c,) = check_claims([{"above": [["b", "a"], ["d", "c"]], "metric": "m"}], v)
    assert c.agrees_with_paper is False
    assert c.text == "m: min over {b, a} = 1 is not above max over {d, c} = 1.05"
    assert c.evidence == {"a": {"b": 2.0, "a": 1.0}, "b": {"d": 0.5, "c": 1.05}}
    # a margin: stricter when positive, a tolerance when negative (1 > 1.05 − 0.1)
    assert _agrees({"above": [["b", "a"], ["d"]], "metric": "m", "margin": 0.4}, v) is True
    assert _agrees({"above": [["b", "a"], ["d"]], "metric": "m", "margin": 0.6}, v) is False
    (c,) = check_claims([{"above": [["a"], ["c"]], "metric": "m", "margin": -0.1}], v)
    assert c.agrees_with_paper is True
    assert c.text == "m: min over {a} = 1 is not below max over {c} = 1.05 by more than 0.1"
    assert _agrees({"above": [["a"], ["c"]], "metric": "m", "margin": -0.04}, v) is False
    # min over A − max over B inside the seed-to-seed spread of any compared group: no verdict
    sv = _vals(a=(1.0, 0.0, 3), b=(2.0, 0.02, 3), c=(1.05, 0.1, 3), d=(0.5, 0.0, 3))
    (c,) = check_claims([{"above": [["b", "a"], ["c"]], "metric": "m"}], sv)
    assert c.agrees_with_paper is None and "seed-to-seed spread (std 0.1)" in c.text
    # 1 − 0.5 > 0.1: decided
    assert _agrees({"above": [["b", "a"], ["d"]], "metric": "m"}, sv) is True
    # metric_b: A's metric against B's other metric (e.g. end against start of one run)
    vv = {"x": {"end": 0.2, "start": 0.9}}
    (c,) = check_claims([{"less": ["x", "x"], "metric": "end", "metric_b": "start"}], vv)
    assert c.agrees_with_paper is True and c.evidence == {"x [end]": 0.2, "x [start]": 0.9}
    # an unknown group is a configuration error naming it
    from sgdlab.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown group 'zz'"):
        check_claims([{"less": ["a", "zz"], "metric": "m"}], v)
    # a grid point's label misspelt: the closest is named before the list of all
    grid = {"lr=0.025,batch_size=80": {"m": 1.0}, "lr=0.1,batch_size=80": {"m": 2.0}}
    with pytest.raises(ConfigError, match=r"unknown group 'lr=0.025,bs=80' \(did you mean "
                                          r"lr=0.025,batch_size=80\?\); known: "):
        check_claims([{"less": ["lr=0.025,bs=80", "lr=0.1,batch_size=80"], "metric": "m"}],
                     grid)
    with pytest.raises(ConfigError, match="exactly one of"):
        check_claims([{"less": ["a", "b"], "greater": ["a", "b"], "metric": "m"}], v)


def test_above_claim_with_a_missing_value_is_inconclusive():
    v = {"a": {"m": 2.0}, "b": {"m": float("nan")}, "c": {"m": 1.0}}
    (c,) = check_claims([{"above": [["a"], ["b", "c"]], "metric": "m"}], v)
    assert c.agrees_with_paper is None and "cannot be checked" in c.text


def test_paired_claims_take_the_spread_of_the_per_seed_differences():
    # three seeds whose levels differ a lot (the init) while B sits 0.01 above A in each
    a = {0: 0.80, 1: 0.90, 2: 0.85}
    groups = OrderedDict(
        (g, [run(g, s, summary={"m": v + off}) for s, v in a.items()])
        for g, off in (("a", 0.0), ("b", 0.01), ("c", 0.012)))
    v = values_by_group(groups, ["m"])
    unpaired = {"less": ["a", "b"], "metric": "m"}
    (c,) = check_claims([unpaired], v)
    assert c.agrees_with_paper is None and "(std 0.05)" in c.text
    (c,) = check_claims([{**unpaired, "paired": True}], v)
    assert c.agrees_with_paper is True              # every seed's difference is 0.01 > 0
    # above, paired: per seed min over {b, c} − max over {a} = 0.01
    (c,) = check_claims([{"above": [["b", "c"], ["a"]], "metric": "m", "paired": True}], v)
    assert c.agrees_with_paper is True
    # a noisy pairing: differences 0.03, −0.01, 0.01 have std 0.02 > their mean 0.01
    groups["d"] = [run("d", s, summary={"m": a[s] + o}) for s, o in zip(a, (0.03, -0.01, 0.01))]
    v = values_by_group(groups, ["m"])
    (c,) = check_claims([{"greater": ["d", "a"], "metric": "m", "paired": True}], v)
    assert c.agrees_with_paper is None and "paired seed-to-seed spread (std 0.02)" in c.text
    from sgdlab.errors import ConfigError
    with pytest.raises(ConfigError, match="per-seed values"):
        check_claims([{"greater": ["d", "a"], "metric": "m", "paired": True}],
                     {"d": {"m": 1.0, "m__std": 0.1}, "a": {"m": 0.5, "m__std": 0.1}})


def test_values_by_group_and_mean_curve_by_hand():
    groups = OrderedDict(a=[run("a", 0, summary={"m": 1.0}), run("a", 1, summary={"m": 3.0}),
                            run("a", 2, summary={"m": float("nan")})],
                         b=[run("b", 0, summary={"m": 5.0})])
    v = values_by_group(groups, ["m"])
    # the NaN seed is left out of the mean, the std and the count, and counted as missing
    assert v["a"] == {"m": 2.0, "m__n": 2, "m__std": pytest.approx(math.sqrt(2.0)),
                      "m__by_seed": {0: 1.0, 1: 3.0}, "m__missing": 1}
    assert v["b"] == {"m": 5.0, "m__n": 1, "m__by_seed": {0: 5.0}}     # one seed: no std
    rs = [run("a", 0, metrics={"acc": [(0, 0.1), (10, 0.5), (20, 0.9)]}),
          run("a", 1, metrics={"acc": [(0, 0.3), (10, 0.7)]}),
          run("a", 2, metrics={})]
    steps, mean, std, n = mean_curve(rs, "acc", counts=True)
    assert steps == [0.0, 10.0, 20.0]               # the steps any run recorded
    assert mean == pytest.approx([0.2, 0.6, 0.9]) and n == [2, 2, 1]
    assert std[:2] == pytest.approx([math.sqrt(0.02)] * 2)   # sample std of {x, x + 0.2}
    assert math.isnan(std[2])                       # one run: no spread to show
    # a single run measures no spread: NaN (no band), not 0 (a band of width 0) ...
    assert all(map(math.isnan, mean_curve(rs[:1], "acc")[2]))
    assert all(map(math.isnan, mean_curve([rs[0], rs[2]], "acc")[2]))  # beside one without it
    # ... while two runs with equal values measure a spread of 0
    twins = [run("a", s, metrics={"acc": [(0, 0.5), (10, 0.75)]}) for s in (0, 1)]
    assert mean_curve(twins, "acc")[2] == [0.0, 0.0]


def test_a_one_seed_group_shows_no_std_and_two_equal_seeds_show_0():
    """The std over one seed is undefined: the summary table shows ``—`` (JSON null), not a
    0 that reads as seeds that agree; two seeds with one value show their spread, 0."""
    import json

    from sgdlab.experiments.procedures.common import summary_table
    from sgdlab.strict_json import dumps

    groups = OrderedDict(one=[run("one", 0, summary={"m": 0.5})],
                         twins=[run("twins", s, summary={"m": 0.25}) for s in (0, 1)],
                         pair=[run("pair", s, summary={"m": v}) for s, v in ((0, 1.0),
                                                                             (1, 3.0))])
    t = summary_table("s", groups, [("m", "m")])
    assert t.columns == ["run", "seeds", "m", "m std", "diverged"]
    one, twins, pair = t.rows
    assert one[:3] == ["one", 1, 0.5] and math.isnan(one[3])
    assert twins[:4] == ["twins", 2, 0.25, 0.0]
    assert pair[2:4] == [2.0, math.sqrt(2.0)]
    md = t.to_markdown().splitlines()
    assert md[2] == "| one | 1 | 0.5 | — | 0 |" and md[3] == "| twins | 2 | 0.25 | 0 | 0 |"
    rows = json.loads(dumps(t.to_json()))["rows"]
    assert rows[0][3] is None and rows[1][3] == 0.0


def test_a_group_without_a_spread_leaves_the_others_to_bound_a_claim():
    """A one-seed group's std, absent or NaN, adds nothing to the seed-to-seed spread: the
    other group's std still makes a gap inside it inconclusive, and with no spread at all
    the point difference decides (a std of 0 never makes a claim "within the spread")."""
    claim = [{"less": ["a", "b"], "metric": "m"}]
    nan = float("nan")
    for one in ({"m": 1.0, "m__n": 1}, {"m": 1.0, "m__n": 1, "m__std": nan}):
        (c,) = check_claims(claim, {"a": one, "b": {"m": 1.05, "m__n": 3, "m__std": 0.1}})
        assert c.agrees_with_paper is None and "(std 0.1)" in c.text
        (c,) = check_claims(claim, {"a": one, "b": {"m": 1.05, "m__n": 1, "m__std": nan}})
        assert c.agrees_with_paper is True and "within" not in c.text
    # two seeds each, equal values: a measured spread of 0, the difference decides
    v = values_by_group(OrderedDict(a=[run("a", s, summary={"m": 1.0}) for s in (0, 1)],
                                    b=[run("b", s, summary={"m": 1.05}) for s in (0, 1)]),
                        ["m"])
    assert v["a"]["m__std"] == 0.0 and v["b"]["m__std"] == 0.0
    (c,) = check_claims(claim, v)
    assert c.agrees_with_paper is True and "within" not in c.text


def test_the_cosine_grid_draws_no_error_bar_for_a_setting_of_one_seed():
    """One seed at a setting: its std cell is ``—`` and its point has no error bar (a bar
    of length 0 would read as seeds that agree); two seeds with equal cosines: std 0, a bar
    of length 0 drawn."""
    from sgdlab.experiments.procedures.xing import xing_cosine_grid

    def r(b, seed, cos):
        return run(f"B{b}", seed, params={"optimizer": {"lr": 0.1}, "batch_size": b},
                   metrics={"grad_cosine": [(1, cos), (2, cos)],
                            "dist_from_init": [(2, 1.0 / b)]})
    spec = SimpleNamespace(paper=PAPER, options={"fixed_lr": 0.1, "fixed_batch": 50})
    an = xing_cosine_grid(spec, [r(25, 0, 0.25), r(50, 0, 0.5), r(50, 1, 0.5),
                                 r(100, 0, 0.125)])
    table = an.table("cosine_grid")
    assert [row[0:3] for row in table.rows] == [[0.1, 25, 0.25], [0.1, 50, 0.5],
                                               [0.1, 100, 0.125]]
    stds = table.column("std")
    assert math.isnan(stds[0]) and stds[1] == 0.0 and math.isnan(stds[2])
    ax_b = next(f for _, f in an.figures).axes[0]     # against the batch size at lr 0.1
    (bars,) = ax_b.containers
    drawn = [seg for seg in bars.lines[2][0].get_segments() if len(seg)]
    assert len(drawn) == 1 and drawn[0].tolist() == [[50.0, 0.5], [50.0, 0.5]]


def test_mean_curve_keeps_the_healthy_seeds_after_one_diverged():
    """A seed that diverged at step 2 cut every seed's curve to steps 0-2 (the steps all
    runs recorded) and ended it at inf; the mean goes on over the seeds still finite."""
    def r(seed, pts, status="finished"):
        return run("a", seed, metrics={"loss": pts}, status=status)
    rs = [r(0, [(t, 1.0 / (t + 1)) for t in range(10)]),
          r(1, [(t, 2.0 / (t + 1)) for t in range(10)]),
          r(2, [(0, 1.0), (1, 5.0), (2, math.inf)], "diverged")]
    steps, mean, std, n = mean_curve(rs, "loss", counts=True)
    assert steps == [float(t) for t in range(10)]
    assert n == [3, 3] + [2] * 8
    assert mean[:2] == pytest.approx([4.0 / 3, 13.0 / 6])
    assert mean[2:] == pytest.approx([1.5 / (t + 1) for t in range(2, 10)])
    assert std[2:] == pytest.approx([math.sqrt(0.5) / (t + 1) for t in range(2, 10)])


def test_mean_curve_leaves_the_warnings_shown_once_per_location_as_they_were():
    """A step no run is finite at (mean NaN) or one run is (std NaN): numpy's empty-slice
    warnings were ignored in a catch_warnings block, and leaving it voided every module's
    record of the warnings shown, so a warning given between curves came again at each."""
    rs = [run("a", 0, metrics={"loss": [(0, 1.0), (1, 2.0), (2, math.inf)]}),
          run("a", 1, metrics={"loss": [(0, 3.0)]})]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        for _ in range(3):
            steps, mean, std, n = mean_curve(rs, "loss", counts=True)
            warnings.warn("between curves", UserWarning)
    assert [str(w.message) for w in shown] == ["between curves"]
    assert (steps, n, mean[:2], std[0]) == ([0.0, 1.0, 2.0], [2, 1, 0], [2.0, 2.0],
                                            pytest.approx(math.sqrt(2.0)))
    assert math.isnan(mean[2]) and all(map(math.isnan, std[1:]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # nothing of numpy's to raise
        assert mean_curve(rs, "loss")[0] == steps


def _grid_run(lr, b, seed, top, acc, status="finished"):
    return run(f"lr{lr}-B{b}", seed, params={"optimizer": {"lr": lr}, "batch_size": b},
               summary={"hessian_top": top, "test_acc": acc}, status=status)


def test_two_ratio_grids_are_compared_setting_by_setting():
    """Reports over different η grids: the comparison subtracts the settings both ran, not
    the k-th row of one table from the k-th of the other (both sorted by η/B), and names
    the rest."""
    from sgdlab.experiments.procedures.jastrzebski import ratio_grid
    from sgdlab.report.compare import table_differences

    spec = SimpleNamespace(paper=PAPER, options={"metrics": ["hessian_top"],
                                                 "expect": {"hessian_top": "negative"}})

    def report(lrs):
        runs = [_grid_run(lr, b, 0, top=lr * 1000 / b, acc=0.5) for lr in lrs
                for b in (128, 512)]
        return {"tables": [t.to_json() for t in ratio_grid(spec, runs).tables]}

    (d,) = table_differences(report([0.05, 0.2]), report([0.1, 0.2]))
    assert [r[:2] for r in d.rows] == [[0.2, 512], [0.2, 128]]
    assert [r[3] for r in d.rows] == [0.0, 0.0]           # the same λ_max at the same setting
    assert d.notes == ["rows only in A: lr=0.05, batch size=512; lr=0.05, batch size=128",
                       "rows only in B: lr=0.1, batch size=512; lr=0.1, batch size=128"]


def test_ratio_grid_spearman_and_equal_ratio_equivalence_by_hand():
    from sgdlab.experiments.procedures.jastrzebski import ratio_grid

    # five (η, B) settings; η/B = 0.0005, 0.001, 0.002, 0.002, 0.004 (two share 0.002)
    settings = [(0.05, 100), (0.1, 100), (0.1, 50), (0.2, 100), (0.4, 100)]
    accs = {(0.1, 50): [0.90, 0.91, 0.92], (0.2, 100): [0.905, 0.915, 0.925]}

    def runs_for(tops):
        rs = []
        for (lr, b), top in zip(settings, tops):
            for s in range(3):
                rs.append(_grid_run(lr, b, s, top, accs.get((lr, b), [0.5] * 3)[s]))
        # a diverged run with absurd values: left out of the means, reported
        rs.append(_grid_run(0.4, 100, 3, 1e9, 0.0, status="diverged"))
        return rs

    def spec(margin):
        return SimpleNamespace(paper=PAPER, options={
            "metrics": ["hessian_top"], "expect": {"hessian_top": "negative"},
            "equal_ratio_margin": margin})

    # λ_max by η/B-rank: x ranks (1, 2, 3.5, 3.5, 5), y = (5, 3, 4, 2, 1):
    # Σdx·dy = −8, Σdx² = 9.5, Σdy² = 10, so ρ = −8/√95 = −0.821: a clear decrease
    res = ratio_grid(spec(0.01), runs_for([5, 3, 4, 2, 1]))
    trend, *rest = res.conclusions
    assert trend.evidence["spearman"] == pytest.approx(-8 / math.sqrt(95))
    assert trend.agrees_with_paper is True and "ρ = -0.82" in trend.text
    assert "decreases" in trend.text
    table = res.table("ratio_grid")
    assert [r[2] for r in table.rows] == pytest.approx([0.0005, 0.001, 0.002, 0.002, 0.004])
    last = table.rows[-1]
    assert (last[3], last[-2], last[-1]) == (1.0, 1, 4)           # mean of 3, 1 diverged, 4
    # the one equal-ratio pair: means 0.91 and 0.915, std 0.01 each over 3 seeds, df = 4;
    # 90% CI −0.005 ± 2.1318·√(2·1e-4/3) = [−0.0224, 0.0124] straddles ±0.01
    (pair, diverged) = rest
    half = T95_DF4 * math.sqrt(2e-4 / 3)
    assert pair.agrees_with_paper is None and "straddles" in pair.text
    assert f"[{-0.005 - half:.3g}" in pair.text
    assert diverged.text == "diverged: lr=0.4, B=100"
    assert ratio_grid(spec(0.03), runs_for([5, 3, 4, 2, 1])).conclusions[1] \
        .agrees_with_paper is True                                 # inside ±0.03
    # y = (3, 5, 1, 4, 2): Σdx·dy = −4.5, ρ = −4.5/√95 = −0.46: right sign, not clear, so
    # neither shown nor refuted
    (trend, *_) = ratio_grid(spec(0.01), runs_for([3, 5, 1, 4, 2])).conclusions
    assert trend.evidence["spearman"] == pytest.approx(-4.5 / math.sqrt(95))
    assert trend.agrees_with_paper is None and "no clear trend either way" in trend.text
    # the opposite trend disagrees
    (trend, *_) = ratio_grid(spec(0.01), runs_for([1, 2, 3, 4, 5])).conclusions
    assert trend.agrees_with_paper is False and "increases" in trend.text
    # two finite settings give no rank correlation: inconclusive, not a disagreement
    (trend, *_) = ratio_grid(spec(0.01), runs_for([5, 3, float("nan"), float("nan"),
                                                   float("nan")])).conclusions
    assert trend.agrees_with_paper is None and "too few settings" in trend.text


def test_ratio_grid_trend_of_a_metric_constant_over_the_settings_is_undefined_quietly(recwarn):
    """Every setting at one value (a deep net still at chance): no ρ, said as such, and no
    warning from scipy; not "too few settings" when there are enough."""
    from sgdlab.experiments.procedures.jastrzebski import ratio_grid

    runs = [_grid_run(lr, b, 0, 0.3, 0.1016) for lr, b in
            ((0.05, 512), (0.05, 128), (0.2, 512), (0.2, 128))]
    spec = SimpleNamespace(paper=PAPER, options={"metrics": ["test_acc"],
                                                 "expect": {"test_acc": "positive"}})
    trend = ratio_grid(spec, runs).conclusions[0]
    assert math.isnan(trend.evidence["spearman"]) and trend.agrees_with_paper is None
    assert "the same value at every setting" in trend.text
    assert "too few settings" not in trend.text
    assert not [w for w in recwarn if "constant" in str(w.message)]


def test_a_claim_on_a_metric_no_run_records_names_the_metrics_they_do():
    # "missing or non-finite values" read as seeds that failed to reach a value, where the
    # options misspelt the metric
    from sgdlab.experiments.procedures.common import values_by_group

    groups = OrderedDict(a=[run("a", s, summary={"test_acc": 0.5 + s}) for s in (0, 1)],
                         b=[run("b", 0, summary={"test_acc": 0.7})])
    values = values_by_group(groups, ["test_accc", "test_acc"])
    (c,) = check_claims([{"less": ["a", "b"], "metric": "test_accc"}], values)
    assert c.agrees_with_paper is None
    assert ("no run records 'test_accc' (did you mean test_acc?); the runs' final values "
            "are test_acc: the claim cannot be checked") in c.text
    # a seed without the value it records elsewhere is a missing value, as before
    (c,) = check_claims([{"less": ["a", "b"], "metric": "test_acc"}], values_by_group(
        OrderedDict(a=groups["a"], b=[run("b", 0, summary={"test_acc": float("nan")})]),
        ["test_acc"]))
    assert c.text == ("test_acc: missing or non-finite value for b (a: 1), so the claim cannot "
                      "be checked")
    # a diverged run stops before its final measurements: its metric is missing, not unknown
    stopped = OrderedDict(a=[run("a", 0, summary={"train_loss": 1.0}, status="diverged")],
                          b=groups["b"])
    (c,) = check_claims([{"less": ["a", "b"], "metric": "grad_norm"}],
                        values_by_group(stopped, ["grad_norm"]))
    assert c.text == ("grad_norm: missing or non-finite values for a and b, so the claim cannot "
                      "be checked")


def test_ratio_grid_names_a_claimed_metric_it_cannot_test():
    # a trend claimed in options.expect on a metric options.metrics leaves out had vanished
    # from the conclusions; one on a metric no run records read "too few settings to rank"
    from sgdlab.experiments.procedures.jastrzebski import ratio_grid

    runs = [_grid_run(lr, b, 0, lr / b, 0.5 + lr) for lr in (0.05, 0.1, 0.2) for b in (20, 80)]
    spec = SimpleNamespace(paper=PAPER, options={
        "metrics": ["hess_top", "test_acc"],
        "expect": {"hess_top": "negative", "hessian_topp": "negative"}})
    trend, untested = ratio_grid(spec, runs).conclusions[:2]
    assert trend.agrees_with_paper is None
    assert "no run records 'hess_top' (did you mean hessian_top?)" in trend.text
    assert untested.agrees_with_paper is None and untested.claim
    assert untested.text == ("hessian_topp vs η/B: not tested, options.expect names "
                             "'hessian_topp', which options.metrics (hess_top, test_acc) "
                             "does not list")


def test_ratio_grid_figure_draws_each_batch_sizes_finite_means_against_the_ratio():
    """A panel per metric: a line per batch size through its finite means at η/B (a setting
    whose seeds all diverged has none), a red dotted line at each setting with a diverged
    seed, η/B on a log axis."""
    from sgdlab.experiments.procedures.jastrzebski import ratio_grid

    runs = [_grid_run(lr, b, s, top, top / 10) for lr, b, top in
            ((0.05, 100, 3.0), (0.1, 100, 2.0), (0.1, 50, 2.5), (0.4, 100, 1.0))
            for s in range(2)]
    runs += [_grid_run(0.2, 50, s, 1e9, 0.0, status="diverged") for s in range(2)]
    runs.append(_grid_run(0.4, 100, 2, 1e9, 0.0, status="diverged"))
    spec = SimpleNamespace(paper=PAPER, options={"metrics": ["hessian_top", "test_acc"]})
    (name, fig), = ratio_grid(spec, runs).figures
    assert name == "ratio_grid"
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in axes] == [r"Hessian $\lambda_{max}$",
                                                "validation accuracy"]
    ax = axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "η / B"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["B=50", "B=100"]
    dotted = [ln for ln in ax.lines if ln.get_linestyle() == ":"]
    assert sorted(ln.get_xdata()[0] for ln in dotted) == pytest.approx([0.004, 0.004])
    assert all(ln.get_color() == "red" for ln in dotted)
    drawn = sorted((list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.lines
                   if ln.get_linestyle() != ":")
    assert drawn == [([0.0005, 0.001, 0.004], [3.0, 2.0, 1.0]), ([0.002], [2.5])]
    matplotlib.pyplot.close(fig)
    # a metric no run measured: an empty panel, still on a log η/B axis (drawing it on a
    # linear one around 0 and then making it log left no positive limit to draw)
    one_b = [_grid_run(lr, 32, 0, top, top / 10) for lr, top in ((0.05, 4.1), (0.2, 4.4))]
    (_, fig), = ratio_grid(SimpleNamespace(paper=PAPER, options={}), one_b).figures
    low, high = fig.axes[1].get_xlim()
    assert fig.axes[1].get_ylabel() == r"Hessian $\|H\|_F$"     # mathtext subscripts
    assert not any(len(ln.get_xdata()) for ln in fig.axes[1].lines)
    assert fig.axes[1].get_xscale() == "log" and 0 < low < high
    fig.savefig(io.BytesIO(), format="svg")
    matplotlib.pyplot.close(fig)
    # a batch size whose every setting diverged: named in the legend, no line
    (_, fig), = ratio_grid(spec, [r for r in runs if r.label != "lr0.1-B50"]).figures
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "B=50 (no finite value)", "B=100"]
    matplotlib.pyplot.close(fig)


def test_spearman_drops_non_finite_points_and_needs_three():
    from sgdlab.experiments.procedures.jastrzebski import _spearman

    # rank differences (−3, −1, 2, 2): ρ = 1 − 6·18 / (4·(16 − 1)) = −0.8
    assert _spearman([1, 2, 3, 4], [4, 3, 1, 2]) == pytest.approx(1 - 6 * 18 / (4 * 15))
    assert _spearman([1, 2, float("nan"), 3], [1, 3, 0, 2]) == pytest.approx(0.5)
    assert math.isnan(_spearman([1, 2, 3], [1, float("inf"), 2]))
    assert math.isnan(_spearman([1, 2, 3], [0.1, 0.1, 0.1]))       # constant: no ranking


def test_escape_ordering_verdict_by_hand():
    """On (successes, runs), with Newcombe's interval of the difference (published values:
    Stat. Med. 17, 1998, Table II, method 10, at 95%)."""
    from sgdlab.experiments.procedures.landscape_runs import ordering_verdict

    z95 = 1.959964
    a = {"x": (56, 70), "y": (65, 70)}
    # min over a is x (0.8), max over b is p (0.6): 0.2 in [0.0524, 0.3339]
    ok, gap, ci = ordering_verdict(a, {"p": (48, 80), "q": (30, 80)}, z95)
    assert (ok, gap) == (True, pytest.approx(0.2))
    assert ci == (pytest.approx(0.0524, abs=5e-5), pytest.approx(0.3339, abs=5e-5))
    ok, gap, ci = ordering_verdict({"x": (5, 56)}, {"q": (0, 29)}, z95)    # [−0.0381, 0.1926]
    assert ok is None and ci[0] == pytest.approx(-0.0381, abs=5e-5)
    assert ordering_verdict({"x": (5, 56)}, {"q": (0, 29)}, 0.5)[0] is True
    ok, gap, ci = ordering_verdict({"x": (0, 20)}, {"q": (10, 10)}, z95)   # [−1, −0.6791]
    assert (ok, gap) == (False, -1.0) and ci[1] == pytest.approx(-0.6791, abs=5e-5)


def test_escape_ordering_with_both_rates_at_zero_or_one_is_not_a_disagreement():
    """sqrt(p(1 − p)/n) = 0 made 0% vs 0% read as "the ordering does not appear"; both rates at
    the floor (or the ceiling) cannot show an ordering, whatever the methods do."""
    from sgdlab.experiments.procedures.landscape_runs import ordering_verdict

    ok, gap, ci = ordering_verdict({"x": (0, 10)}, {"q": (0, 20)}, 1.959964)
    assert (ok, gap) == (None, 0.0)
    assert ci == (pytest.approx(-0.1611, abs=5e-5), pytest.approx(0.2775, abs=5e-5))
    assert ordering_verdict({"x": (1000, 1000)}, {"q": (1000, 1000), "r": (3, 1000)})[0] is None
    # one rate at a boundary is no reason for doubt: 0% vs 60% of 1,000 is decided
    assert ordering_verdict({"x": (0, 1000)}, {"q": (600, 1000)})[0] is False


def test_compare_groups_table_and_claims_by_hand():
    from sgdlab.experiments.procedures.generic import compare_groups

    def r(label, seed, acc, loss, status="finished"):
        return run(label, seed, summary={"test_acc": acc, "train_loss": loss}, status=status,
                   metrics={"train_loss": [(0, 1.0), (5, loss)]})
    runs = [r("A", 0, 0.90, 0.1), r("A", 1, 0.92, 0.3), r("A", 2, 0.94, 0.2),
            r("B", 0, 0.80, 0.5), r("B", 1, 0.84, 0.7), r("B", 2, float("nan"), 9.0, "diverged")]
    spec = SimpleNamespace(paper=PAPER, options={
        "table": [["test_acc", "acc"], ["train_loss", "loss"]], "curves": ["train_loss"],
        "claims": [{"greater": ["A", "B"], "metric": "test_acc"},
                   {"less": ["A", "B"], "metric": "train_loss", "margin": 0.5}]})
    res = compare_groups(spec, runs)
    t = res.table("summary")
    # B's accuracy is a mean of two of its three seeds: a column says so (the table said
    # "seeds 3" beside a mean over 2); every loss is finite, so the loss has no such column
    assert t.columns == ["run", "seeds", "acc", "acc std", "acc: seeds in the mean", "loss",
                         "loss std", "diverged"]
    a_row, b_row = t.rows
    assert a_row[:2] == ["A", 3] and a_row[2:] == pytest.approx([0.92, 0.02, 3, 0.2, 0.1, 0])
    # B: the NaN accuracy is skipped (mean of two); the diverged run's loss 9 counts:
    # deviations (−2.9, −2.7, 5.6) from 3.4, Σ² = 47.06
    assert b_row[:2] == ["B", 3]
    assert b_row[2:] == pytest.approx([0.82, math.sqrt(2) * 0.02, 2, 3.4,
                                       math.sqrt(47.06 / 2), 1])
    greater, less, div = res.conclusions
    assert greater.agrees_with_paper is True                      # 0.1 apart, spread 0.028
    # 0.2 + 0.5 < 3.4 holds, but by 2.7, inside B's spread (std 4.85): inconclusive
    assert less.agrees_with_paper is None and "spread" in less.text
    assert div.text == "runs diverged in: B"


def test_summary_table_counts_the_seeds_each_mean_is_over():
    """A diverged seed's inf is left out of the mean, but "seeds" counted it: 4 seeds beside
    a mean over 3. The seeds in the mean have a column where some group leaves one out."""
    from sgdlab.experiments.procedures.common import summary_table

    groups = OrderedDict(
        a=[run("a", s, summary={"loss": v, "acc": 0.5}) for s, v in
           enumerate([1.0, 2.0, 3.0, math.inf])],
        b=[run("b", s, summary={"loss": 1.0, "acc": 0.5}) for s in range(2)])
    t = summary_table("t", groups, [("loss", "loss"), ("acc", "acc")])
    assert t.columns == ["run", "seeds", "loss", "loss std", "loss: seeds in the mean", "acc",
                         "acc std", "diverged"]
    assert t.rows[0][:5] == ["a", 4, 2.0, 1.0, 3] and t.rows[1][:5] == ["b", 2, 1.0, 0.0, 2]
    full = OrderedDict(b=groups["b"])       # nothing left out: no count column
    assert summary_table("t", full, [("loss", "loss")]).columns == [
        "run", "seeds", "loss", "loss std", "diverged"]


def test_zhu_alignment_checks_by_hand():
    from sgdlab.experiments.procedures.zhu import zhu_alignment

    def r(label, seed, cos, h, s, res):
        m = {"align/residual": [(0, res[0]), (10, res[1])]}
        for i in (1, 2):
            m[f"align/cos_{i}"] = [(0, 0.1), (10, cos[i - 1])]
            m[f"align/hess_norm_eig_{i}"] = [(10, h[i - 1])]
            m[f"align/sigma_norm_eig_{i}"] = [(10, s[i - 1])]
        return run(label, seed, summary={"num_params": 10}, metrics=m)
    runs = [r("g", 0, (0.95, 0.91), (0.8, 0.3), (0.75, 0.45), (1.8, 0.5)),
            r("g", 1, (0.97, 0.85), (0.8, 0.3), (0.75, 0.43), (1.6, 0.7)),
            r("h", 0, (0.99, 0.93), (0.6, 0.2), (0.6, 0.2), (1.0, 1.5))]
    spec = SimpleNamespace(paper=PAPER, options={"tests": ["cosine", "eigenvalues"]})
    res = zhu_alignment(spec, runs)
    # g: last cosines average to 0.96 and 0.88 (< 0.9); eigenvalue gaps 0.05 and
    # |0.3 − 0.44| = 0.14 (> 0.1)
    g_cos, g_eig, h_cos, h_eig = res.conclusions
    assert g_cos.agrees_with_paper is False
    assert g_cos.evidence["cosines"] == pytest.approx([0.96, 0.88])
    assert g_eig.agrees_with_paper is False
    assert g_eig.evidence["gaps"] == pytest.approx([0.05, 0.14])
    assert (h_cos.agrees_with_paper, h_eig.agrees_with_paper) == (True, True)
    rows = res.table("alignment").rows
    assert rows[1] == ["g", 2, pytest.approx(0.88), pytest.approx(0.03 * math.sqrt(2)),
                       pytest.approx(0.3), pytest.approx(0.44)]
    spec.options["eigenvalue_atol"] = 0.15        # 0.14 <= 0.15, but 0.14/0.44 = 0.32
    assert zhu_alignment(spec, runs).conclusions[1].agrees_with_paper is False
    spec.options["eigenvalue_rtol"] = 0.35
    assert zhu_alignment(spec, runs).conclusions[1].agrees_with_paper is True


def _alignment_run(label, h, s, residual=None, k=2):
    m = {}
    for i in range(1, k + 1):
        m[f"align/cos_{i}"] = [(10, 0.99)]
        m[f"align/hess_norm_eig_{i}"] = [(10, h[i - 1])]
        m[f"align/sigma_norm_eig_{i}"] = [(10, s[i - 1])]
    if residual is not None:
        m["align/residual"] = list(zip(range(len(residual)), residual))
    return run(label, 0, summary={"num_params": 10}, metrics=m)


def test_zhu_alignment_eigenvalues_also_within_a_relative_tolerance():
    """Normalised spectra near rank one put every eigenvalue past the first within 0.1 of any
    other: 0.065 vs 0.034 is "within 0.1" but one is twice the other."""
    from sgdlab.experiments.procedures.zhu import zhu_alignment

    runs = [_alignment_run("rank-one", (0.9, 0.065), (0.93, 0.034)),
            _alignment_run("similar", (0.9, 0.3), (0.85, 0.26)),       # 0.05/0.9, 0.04/0.3
            _alignment_run("negative", (0.9, -0.3), (0.85, -0.26))]    # |λ| for the scale

    def verdicts(**o):
        spec = SimpleNamespace(paper=PAPER, options={"tests": ["eigenvalues"], **o})
        out = [c.agrees_with_paper for c in zhu_alignment(spec, runs).conclusions]
        matplotlib.pyplot.close("all")
        return out

    assert verdicts() == [False, True, True]                   # default rtol 0.25
    assert verdicts(eigenvalue_rtol=0.5) == [True, True, True]  # 0.031/0.065 = 0.48
    assert verdicts(eigenvalue_rtol=0.1) == [False, False, False]
    # both tolerances apply: 0.05 > 0.04 fails "similar" whatever the relative one
    assert verdicts(eigenvalue_atol=0.04, eigenvalue_rtol=0.5) == [True, False, False]
    assert verdicts(eigenvalue_rtol=None) == [True, True, True]      # the absolute test only
    spec = SimpleNamespace(paper=PAPER, options={"tests": ["eigenvalues"]})
    ev = zhu_alignment(spec, runs).conclusions[0].evidence
    assert ev["relative_gaps"] == pytest.approx([0.03 / 0.93, 0.031 / 0.065])
    assert (ev["tolerance"], ev["relative_tolerance"]) == (0.1, 0.25)


def test_zhu_projection_residual_small_relative_to_k_and_stable_late():
    """"Becomes small and stable in the later stage": the mean over the log points in the last
    third of training at most a fraction of k, and its spread there bounded; lower than at
    the start and than random subspaces' k − k²/d alone is not "small"."""
    from sgdlab.experiments.procedures.zhu import zhu_alignment

    # k = 2, d = 10: k/4 = 0.5, random subspaces 2 − 4/10 = 1.6; 9 log points, last 3 read
    runs = [_alignment_run("small-stable", (0.9, 0.1), (0.9, 0.1),
                           [1.8, 1.5, 1.0, 0.8, 0.6, 0.5, 0.42, 0.40, 0.41]),
            _alignment_run("lower-not-small", (0.9, 0.1), (0.9, 0.1),
                           [1.8, 1.6, 1.5, 1.4, 1.3, 1.25, 1.2, 1.1, 1.15]),
            _alignment_run("small-unstable", (0.9, 0.1), (0.9, 0.1),
                           [1.8, 1.5, 1.0, 0.8, 0.6, 0.5, 0.2, 0.45, 0.3]),
            _alignment_run("grew", (0.9, 0.1), (0.9, 0.1),
                           [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.4])]

    def verdicts(**o):
        spec = SimpleNamespace(paper=PAPER, options={"tests": ["residual"], **o})
        cs = zhu_alignment(spec, runs).conclusions
        matplotlib.pyplot.close("all")
        return [(a.agrees_with_paper, b.agrees_with_paper) for a, b in zip(cs[::2], cs[1::2])]

    # (small, stable) per run; "grew" is below k/4 throughout but not lower than at the start
    assert verdicts() == [(True, True), (False, True), (True, False), (False, True)]
    assert verdicts(residual_small_fraction=0.6)[1] == (True, True)       # 1.15 <= 1.2
    assert verdicts(residual_spread=0.8)[2] == (True, True)               # 0.25/0.317 = 0.79
    spec = SimpleNamespace(paper=PAPER, options={"tests": ["residual"]})
    small, stable = zhu_alignment(spec, runs).conclusions[:2]
    ev = dict(small.evidence)
    assert ev.pop("late_steps") == [6, 7, 8]
    assert ev == pytest.approx({"residual_late_mean": 0.41, "residual_start": 1.8,
                                "residual_end": 0.41, "small_bound": 0.5,
                                "random_expectation": 1.6})
    assert stable.evidence["relative_spread"] == pytest.approx(0.02 / 0.41)
    # two log points: one in the last third, so stability cannot be judged
    short = [_alignment_run("short", (0.9, 0.1), (0.9, 0.1), [1.8, 0.3])]
    cs = zhu_alignment(spec, short).conclusions
    assert [c.agrees_with_paper for c in cs] == [True, None]
    # log-spaced points crowd the start: the later stage is the last third of the steps,
    # here only step 3000 (a third of the points would reach back to the descent at 500)
    logged = _alignment_run("log", (0.9, 0.1), (0.9, 0.1))
    logged.metrics["align/residual"] = list(zip([0, 10, 50, 208, 500, 1232, 3000],
                                                [1.8, 1.6, 1.2, 0.9, 0.7, 0.45, 0.44]))
    small, stable = zhu_alignment(spec, [logged]).conclusions[:2]
    assert small.evidence["late_steps"] == [3000] and small.agrees_with_paper is True
    assert stable.agrees_with_paper is None


def test_zhu_noise_magnitude_ratio_by_hand():
    from sgdlab.experiments.procedures.zhu import zhu_noise_magnitude

    def r(label, grad, noise):
        m = {}
        if grad:
            m["noise/grad_norm"] = list(zip((0, 10), grad))
        if noise:
            m["noise/noise_norm"] = list(zip((0, 10), noise))
        return run(label, 0, metrics=m)
    runs = [r("grows", (2.0, 0.5), (1.0, 1.0)),         # ratio 0.5 -> 2: the paper's picture
            r("small", (2.0, 1.25), (1.0, 1.0)),        # 0.5 -> 0.8: noise never dominates
            r("falls", (0.5, 0.8), (2.0, 1.6)),         # 4 -> 2: dominant but not growing
            r("unmeasured", None, (1.0, 1.0))]          # no gradient norm: nothing to judge
    res = zhu_noise_magnitude(SimpleNamespace(paper=PAPER, options={}), runs)
    verdicts = [c.agrees_with_paper for c in res.conclusions]
    assert verdicts == [True, False, False, None]
    assert res.conclusions[0].evidence == pytest.approx({"ratio_first_third": 0.5,
                                                         "ratio_last_third": 2.0,
                                                         "dominance_ratio": 1.0})
    assert res.table("noise_magnitude").rows[2][2:] == pytest.approx([4.0, 2.0, 0.8, 1.6])


def test_zhu_noise_magnitude_uses_medians_over_the_first_and_last_third():
    """One late log point can swing ‖g₀‖ several-fold: the ratio is read as the median over
    the first and over the last third of the log points, not at the two end points."""
    from sgdlab.experiments.procedures.zhu import zhu_noise_magnitude

    def r(label, ratios):
        steps = range(len(ratios))
        return run(label, 0, metrics={"noise/grad_norm": [(t, 1.0) for t in steps],
                                      "noise/noise_norm": list(zip(steps, ratios))})
    runs = [r("last-dips", (0.5, 3.0, 0.6, 1, 1, 1, 2.0, 2.5, 0.3)),    # ends 0.5 -> 0.3
            r("first-spikes", (5.0, 0.4, 0.5, 1, 1, 1, 1.5, 1.6, 1.4)),  # 5 -> 1.4
            r("last-spikes", (0.5, 0.6, 0.4, 1, 1, 1, 0.5, 0.6, 3.0))]   # 0.5 -> 3
    res = zhu_noise_magnitude(SimpleNamespace(paper=PAPER, options={}), runs)
    assert [c.agrees_with_paper for c in res.conclusions] == [True, True, False]
    assert res.conclusions[0].evidence == pytest.approx({"ratio_first_third": 0.6,
                                                         "ratio_last_third": 2.0,
                                                         "dominance_ratio": 1.0})
    assert res.table("noise_magnitude").rows[2][2:4] == pytest.approx([0.5, 0.6])


def test_cosine_grid_with_too_few_batch_sizes_is_inconclusive():
    from sgdlab.experiments.procedures.xing import xing_cosine_grid

    def r(b, cos):
        return run(f"B{b}", 0, params={"optimizer": {"lr": 0.1}, "batch_size": b},
                   metrics={"grad_cosine": [(1, cos), (2, cos)],
                            "dist_from_init": [(2, 1.0 / b)]})
    spec = SimpleNamespace(paper=PAPER, options={"fixed_lr": 0.1, "fixed_batch": 50})
    cos, dist = xing_cosine_grid(spec, [r(25, 0.2), r(50, 0.1)]).conclusions[:2]
    assert (cos.agrees_with_paper, dist.agrees_with_paper) == (None, None)
    # three batch sizes with cosines (0.2, 0.3, 0.1): ρ = −0.5, just clear
    cos, dist = xing_cosine_grid(spec, [r(25, 0.2), r(50, 0.3), r(100, 0.1)]).conclusions[:2]
    assert cos.evidence["spearman"] == pytest.approx(-0.5) and cos.agrees_with_paper is True
    assert dist.evidence["spearman"] == pytest.approx(-1.0) and dist.agrees_with_paper is True


def test_escape_sweep_describes_the_ordering_per_learning_rate_without_verdicts():
    """The paper states its ordering at one η: the sweep describes each η, it judges none."""
    from sgdlab.experiments.procedures.landscape_runs import (ordering_summary,
                                                              zhu_escape_sweep_analysis)
    from sgdlab.landscapes.escape import rate_difference_interval, wilson_interval
    from sgdlab.report.verdicts import verdict

    def r(method, lr, seed, successes):
        return run(f"{method}|lr={lr}", seed, params={"method": method, "lr": lr},
                   summary={"repetitions": 50, "successes": successes,
                            "reached_rate": 0.5, "eta_lambda_max": lr * 10})
    counts = {("a", 0.1): (30, 40), ("b", 0.1): (10, 20),     # 0.7 vs 0.3 over 100 each
              ("a", 0.2): (26, 24), ("b", 0.2): (20, 25),     # 0.5 vs 0.45
              ("a", 0.4): (5, 5), ("b", 0.4): (45, 45),       # 0.1 vs 0.9
              ("a", 0.8): (0, 0), ("b", 0.8): (0, 0)}         # 0 vs 0: nothing to see
    runs = [r(m, lr, s, k[s]) for (m, lr), k in counts.items() for s in (0, 1)]
    spec = SimpleNamespace(paper={**PAPER, "claim": "a escapes more often"},
                           options={"faster": ["a"], "slower": ["b"]})
    res = zhu_escape_sweep_analysis(spec, runs)
    c01, c02, c04, c08, summary = res.conclusions
    for c in res.conclusions:
        assert (c.agrees_with_paper, c.claim) == (None, None)
        assert verdict(c.to_json(), "cpu") == ("descriptive", "neutral")
    assert [c.evidence["ordering"] for c in (c01, c02, c04, c08)] == [
        "appears", "is not decided", "does not appear", "is untestable"]
    assert c01.evidence["gap"] == pytest.approx(0.4)
    assert c01.evidence["interval"] == pytest.approx(rate_difference_interval(70, 100, 30, 100))
    assert c02.evidence["interval"][0] < 0 < c02.evidence["interval"][1]
    assert "both 0%" in c08.text and "untestable" in c08.text
    assert summary.text == ordering_summary({"appears": ["0.1"], "does not appear": ["0.4"],
                                             "is not decided": ["0.2"],
                                             "is untestable": ["0.8"]})
    assert summary.text == (
        "The paper's ordering appears at η ∈ {0.1}, does not appear at η ∈ {0.4}, is not "
        "decided at η ∈ {0.2} and is untestable (both compared rates at 0% or both at 100%) "
        "at η ∈ {0.8}")
    assert ordering_summary({"does not appear": ["0.1", "0.2"]}) == (
        "The paper's ordering appears at no η in the grid, does not appear at η ∈ {0.1, 0.2}, "
        "is not decided at no η in the grid and is untestable (both compared rates at 0% or "
        "both at 100%) at no η in the grid")
    long = res.table("escape_lr_sweep").rows
    assert long[0][3:7] == [100, pytest.approx(0.7), *map(pytest.approx,
                                                         wilson_interval(70, 100))]
    zero = [row for row in long if row[0] == 0.8][0]
    assert zero[4] == 0.0 and zero[6] == pytest.approx(4 / 104)      # not a zero-width bar


def test_escape_analysis_judges_the_ordering_on_pooled_counts():
    """zhu-escape-2d judges the paper's ordering at its η on the repetitions pooled over the
    seeds (Wilson/Newcombe), inconclusive inside the seed-to-seed spread or at a boundary."""
    from sgdlab.errors import ConfigError
    from sgdlab.experiments.procedures.landscape_runs import zhu_escape_analysis

    def runs_of(rates):
        return [run(m, s, params={"method": m, "lr": 0.1},
                    summary={"success_rate": k / 100, "successes": k, "repetitions": 100,
                             "reached_rate": k / 100, "final_sharpness": 0.1})
                for m, ks in rates.items() for s, k in enumerate(ks)]

    def judge(rates, **order):
        spec = SimpleNamespace(paper={**PAPER, "claim": "a escapes more often"}, options={
            "ordering": {"faster": ["a", "c"], "slower": ["b"], **order}})
        return zhu_escape_analysis(spec, runs_of(rates)).conclusions

    (c,) = judge({"a": (90, 92, 88), "c": (95, 97, 99), "b": (20, 25, 15)})
    assert c.agrees_with_paper is True and c.claim == "a escapes more often"
    assert c.evidence["gap"] == pytest.approx(0.7)
    (c,) = judge({"a": (10, 12, 8), "c": (95, 97, 99), "b": (20, 25, 15)})
    assert c.agrees_with_paper is False
    # every method at 100%: the old min-vs-max test said "disagrees"
    (c,) = judge({"a": (100,) * 3, "c": (100,) * 3, "b": (100,) * 3})
    assert c.agrees_with_paper is None and "untestable" in c.text
    # pooled 210/300 vs 180/300 is clear of 0 at z = 2, but one seed of a is at 0.5
    (c,) = judge({"a": (90, 50, 70), "c": (95, 97, 99), "b": (60, 60, 60)})
    assert c.evidence["interval"][0] > 0
    assert c.agrees_with_paper is None and "seed-to-seed spread" in c.text
    (c,) = judge({"a": (90, 50, 70), "c": (95, 97, 99), "b": (60, 60, 60)}, z=4.0)
    assert c.evidence["interval"][0] < 0 and "seed-to-seed" not in c.text
    with pytest.raises(ConfigError, match="'d'"):
        judge({"a": (90,), "c": (90,), "b": (20,)}, slower=["d"])


def test_hessian_spectrum_fractions_and_tails_by_hand():
    from sgdlab.experiments.procedures.chaudhari import hessian_spectrum

    # d = 10; |λ| <= 1e-4 for 7 of them; round-off is λ_max·d·eps32 = 1.19e-5, so −1e-5 is
    # round-off and only −0.5 counts as negative (1 in 10); right tail 10 / 0.5 = 20
    ev = [10.0, 1e-5, -1e-5, 0.0, 2e-5, -0.5, 3.0, 0.0, 0.0, 0.0]
    runs = [run("net", 0, summary={"hessian_dim": 10}, data={"hessian_eigenvalues": ev}),
            run("empty", 0)]

    def verdicts(**options):
        spec = SimpleNamespace(paper=PAPER, options=options)
        return [c.agrees_with_paper for c in hessian_spectrum(spec, runs).conclusions]

    # the group without a spectrum keeps its three claims, undecided
    assert verdicts(near_zero={"net": [1e-4, 0.75]}) == [True, True, True] + [None] * 3
    assert verdicts(near_zero={"net": [1e-4, 0.9]}) == [False, True, True] + [None] * 3
    assert verdicts(tail_ratio=25.0) == [None, False, True] + [None] * 3       # 20 < 25
    assert verdicts(negative_fraction_below=0.05) == [None, True, False] + [None] * 3
    # a non-finite eigenvalue (a null in data.json) leaves the claims undecided, not refuted
    runs[0] = run("net", 0, summary={"hessian_dim": 10},
                  data={"hessian_eigenvalues": ev[:2] + [float("nan")] + ev[3:]})
    spec = SimpleNamespace(paper=PAPER, options={"near_zero": {"net": [1e-4, 0.75]}})
    concl = hessian_spectrum(spec, runs).conclusions
    assert [c.agrees_with_paper for c in concl] == [None] * 6
    assert "non-finite eigenvalues" in concl[0].text and concl[1].claim.startswith("the right")
    runs[0] = run("net", 0, summary={"hessian_dim": 10}, data={"hessian_eigenvalues": ev})
    spec = SimpleNamespace(paper=PAPER, options={})
    (row,) = hessian_spectrum(spec, runs).table("hessian_spectrum").rows
    assert row[:4] == ["net", 10, 1e-4, pytest.approx(0.7)]
    assert row[5:8] == [10.0, -0.5, pytest.approx(0.1)]


def test_a_verdict_resting_on_a_missing_number_is_inconclusive():
    import numpy as np

    from sgdlab.experiments.procedures.common import decided

    assert decided(0.1 < 0.2, 0.1) is True
    assert decided(np.float32(0.3) < 0.2, np.float32(0.3), 0.2) is False
    for missing in (float("nan"), float("inf"), np.float64("nan")):
        # NaN < 0.2 is False: without the check this read "disagrees"
        assert decided(missing < 0.2, missing) is None
    for absent in (None, "n/a"):
        assert decided(False, absent) is None
    assert decided(True, 1.0, float("nan")) is None


def test_a_censored_value_decides_a_claim_only_when_its_bound_settles_it():
    # "w" of u is a lower bound (≥ 1.0); v and x are measured (0.5 and 1.5)
    v = {"u": {"w": 1.0, "w__censored": True}, "v": {"w": 0.5}, "x": {"w": 1.5}}
    one = lambda c: check_claims([c], v)[0]                            # noqa: E731
    assert one({"greater": ["u", "v"], "metric": "w"}).agrees_with_paper is True
    assert one({"less": ["v", "u"], "metric": "w"}).agrees_with_paper is True
    assert one({"less": ["u", "v"], "metric": "w"}).agrees_with_paper is False
    c = one({"greater": ["u", "x"], "metric": "w"})          # ≥ 1 against 1.5: could be either
    assert c.agrees_with_paper is None
    assert c.text == ("w of u (≥ 1) is not higher than that of x (1.5) — a value is a lower "
                      "bound, which does not settle the claim, so inconclusive")
    c = one({"less": ["u", "x"], "metric": "w"})      # observed lower, but only a bound
    assert c.agrees_with_paper is None
    assert c.text == ("w of u (≥ 1) is lower than that of x (1.5) — a value is a lower bound, "
                      "which does not settle the claim, so inconclusive")
    # a bound that settles the comparison still has to clear the seed-to-seed spread
    noisy = {"u": {"w": 1.0, "w__censored": True, "w__std": 0.6}, "v": {"w": 0.5}}
    c = check_claims([{"greater": ["u", "v"], "metric": "w"}], noisy)[0]
    assert c.agrees_with_paper is None and "already settles" not in c.text
    # equivalence: a bound can refute it (≥ 1 is more than 0.1 away from 0.5), never confirm
    eq = {"equivalent": ["u", "v"], "metric": "w", "margin": 0.1}
    assert one(eq).agrees_with_paper is False
    assert one({**eq, "equivalent": ["v", "u"]}).agrees_with_paper is False
    near = {"u": {"w": 1.0, "w__censored": True}, "y": {"w": 1.02}}
    assert check_claims([{**eq, "equivalent": ["u", "y"]}], near)[0].agrees_with_paper is None
    assert one({"close": ["u", "x"], "metric": "w", "rtol": 1.0}).agrees_with_paper is None


def test_a_censored_value_settles_an_above_claim_only_on_the_side_its_bound_cannot_move():
    # u and z are lower bounds (≥ 1.0, ≥ 2.0); v, x, y are measured (0.5, 1.5, 0.8)
    v = {"u": {"w": 1.0, "w__censored": True}, "z": {"w": 2.0, "w__censored": True},
         "v": {"w": 0.5}, "x": {"w": 1.5}, "y": {"w": 0.8}}

    def one(a, b, values=v):
        return check_claims([{"above": [a, b], "metric": "w"}], values)[0]

    # censored in A: min over A can only rise, so a met claim stays met ...
    c = one(["u", "x"], ["v", "y"])
    assert c.agrees_with_paper is True
    assert c.text == ("w: min over {u, x} ≥ 1 > max over {v, y} = 0.8 — a value is a lower "
                      "bound, which already settles the claim")
    # ... and a missed one may not stay missed
    c = one(["u", "x"], ["z"])
    assert c.agrees_with_paper is None
    assert c.text == ("w: min over {u, x} ≥ 1 is not above max over {z} ≥ 2 — 2 values are "
                      "lower bounds, which does not settle the claim, so inconclusive")
    assert one(["u"], ["x"]).agrees_with_paper is None
    # censored in B: max over B can only rise, so a missed claim stays missed ...
    c = one(["x", "y"], ["v", "z"])
    assert c.agrees_with_paper is False
    assert c.text == ("w: min over {x, y} = 0.8 is not above max over {v, z} ≥ 2 — a value is "
                      "a lower bound, which already settles the claim")
    # ... a censored B value that is not the largest observed can still become it
    assert one(["x"], ["u", "y"]).agrees_with_paper is None
    assert one(["x"], ["u"]).agrees_with_paper is None
    # both sides censored: the bounds pull against each other
    assert one(["z"], ["u"]).agrees_with_paper is None
    assert one(["u", "x", "z"], ["v"]).text.endswith(
        "2 values are lower bounds, which already settles the claim")
    # a bound that settles the comparison still has to clear the seed-to-seed spread
    noisy = {**v, "u": {"w": 1.0, "w__censored": True, "w__std": 0.6}}
    c = one(["u"], ["v"], noisy)
    assert c.agrees_with_paper is None and "already settles" not in c.text


def test_a_paired_claim_over_different_seeds_is_inconclusive():
    """b = a + 0.01 on every seed, but b's seed 1 diverged: the means then average different
    seeds (0.835 vs 0.85) while the paired spread comes from the shared ones (std 0). Not a
    disagreement: inconclusive."""
    from sgdlab.experiments.procedures.generic import compare_groups

    a = {0: 0.80, 1: 0.90, 2: 0.85}
    runs = [run("a", s, summary={"test_acc": v}) for s, v in a.items()]
    runs += [run("b", s, summary={"test_acc": v + 0.01 if s != 1 else float("nan")},
                 status="diverged" if s == 1 else "finished") for s, v in a.items()]
    spec = SimpleNamespace(paper=PAPER, options={
        "table": [["test_acc", "acc"]], "curves": [],
        "claims": [{"greater": ["b", "a"], "metric": "test_acc", "paired": True,
                    "claim": "b better"}]})
    c, note = compare_groups(spec, runs).conclusions
    assert c.agrees_with_paper is None and "finite seeds differ" in c.text
    assert note.claim is None and note.text == "runs diverged in: b"


@pytest.mark.parametrize("cos,hess,sigma,tests", [
    ([0.95, float("nan"), 0.97], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], ["cosine"]),
    ([float("nan"), 0.95, 0.97], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2], ["cosine"]),
    ([0.95, 0.96, 0.97], [0.5, float("nan"), 0.2], [0.5, 0.3, 0.2], ["eigenvalues"]),
    ([0.95, 0.96, 0.97], [0.5, 0.3, 0.2], [0.5, float("nan"), 0.2], ["eigenvalues"]),
])
def test_alignment_with_a_missing_pair_is_inconclusive_wherever_it_sits(cos, hess, sigma, tests):
    """Every one of the k pairs must pass: a NaN pair (min/max skip one that is not first)
    leaves the verdict undecided, in any position, for H's or Σ's eigenvalue."""
    from sgdlab.experiments.procedures.zhu import zhu_alignment

    m = {}
    for i, (c, h, s) in enumerate(zip(cos, hess, sigma), 1):
        m[f"align/cos_{i}"] = [(0, 0.1), (100, c)]
        m[f"align/hess_norm_eig_{i}"] = [(0, 0.1), (100, h)]
        m[f"align/sigma_norm_eig_{i}"] = [(0, 0.1), (100, s)]
    spec = SimpleNamespace(paper=PAPER, options={"tests": tests})
    concl = zhu_alignment(spec, [run("sgd", 0, summary={"num_params": 100}, metrics=m)]).conclusions
    assert [c.agrees_with_paper for c in concl if c.claim] == [None]


def test_escape_claims_on_the_sharpness_weigh_its_seed_spread():
    """SGD's final sharpness 0.1 / 0.5 / 0.9 (std 0.4) against GD's 0.52: 0.02 apart, well
    inside the spread, so a 'less' claim on it is inconclusive, as on the success rate."""
    from sgdlab.experiments.procedures.landscape_runs import zhu_escape_analysis

    vals = {"sgd": [(0.5, 0.1), (0.9, 0.5), (0.1, 0.9)], "gd": [(0.52, 0.52)] * 3}
    runs = [run(m, s, params={"method": m, "lr": 0.1},
                summary={"success_rate": sr, "successes": int(sr * 100), "repetitions": 100,
                         "reached_rate": sr, "final_sharpness": v})
            for m, vs in vals.items() for s, (sr, v) in enumerate(vs)]
    claims = [{"less": ["sgd", "gd"], "metric": m, "claim": m}
              for m in ("final_sharpness", "success_rate")]
    spec = SimpleNamespace(paper={**PAPER, "claim": "x"}, options={"claims": claims})
    concl = [c for c in zhu_escape_analysis(spec, runs).conclusions
             if c.claim in ("final_sharpness", "success_rate")]
    assert [c.agrees_with_paper for c in concl] == [None, None]
    assert all("within the seed-to-seed spread (std 0.4)" in c.text for c in concl)


def test_an_equal_ratio_claim_stays_when_one_setting_diverged():
    """(0.1, 50) and (0.2, 100) share η/B; with every seed of (0.1, 50) diverged the claim
    that they reach the same accuracy is still listed, undecided, not dropped."""
    from sgdlab.experiments.procedures.jastrzebski import ratio_grid

    nan = float("nan")
    settings = [(0.05, 100), (0.1, 100), (0.1, 50), (0.2, 100)]
    runs = [_grid_run(lr, b, s, nan, nan, status="diverged") if (lr, b) == (0.1, 50)
            else _grid_run(lr, b, s, 2 - lr, 0.9) for lr, b in settings for s in range(2)]
    spec = SimpleNamespace(paper=PAPER, options={"metrics": ["hessian_top"],
                                                 "expect": {"hessian_top": "negative"}})
    concl = ratio_grid(spec, runs).conclusions
    same = [c for c in concl if c.claim and "same η/B" in c.claim]
    assert [c.agrees_with_paper for c in same] == [None]
    # it read "... (0.9):  (missing ...": a double space where the equivalence's words were
    assert same[0].text == ("validation accuracy: missing or non-finite value for "
                            "lr=0.1,B=50 (lr=0.2,B=100: 0.9), so the claim cannot be checked")
    assert any(c.text.startswith("diverged: lr=0.1, B=50") for c in concl)


def test_a_verdict_on_part_of_the_seeds_says_which_seeds_it_leaves_out():
    nan = float("nan")
    groups = OrderedDict(a=[run("a", s, summary={"m": v}) for s, v in enumerate([0.5, nan, 0.52])],
                         b=[run("b", s, summary={"m": v}) for s, v in enumerate([0.9, 0.91, 0.92])],
                         c=[run("c", s, summary={"m": 0.9 + 0.01 * s}) for s in range(3)])
    v = values_by_group(groups, ["m"])
    less, eq = check_claims([{"less": ["a", "b"], "metric": "m"},
                             {"equivalent": ["b", "a"], "metric": "m", "margin": 0.5}], v)
    # the mean of a is over seeds 0 and 2 only (0.51): the verdict stands, said to be partial
    assert less.agrees_with_paper is True and "(0.51)" in less.text
    assert eq.agrees_with_paper is True
    for c in (less, eq):
        assert c.text.endswith("partial data: 1 of 3 seeds of a without a finite value, "
                               "left out of the means")
    full, = check_claims([{"less": ["c", "b"], "metric": "m", "margin": -0.1}], v)
    assert "partial" not in full.text
    # no seed left: no mean, said as a missing value, not as partial data
    v["d"] = values_by_group(OrderedDict(d=[run("d", 0, summary={"m": nan})]), ["m"])["d"]
    none, = check_claims([{"less": ["a", "d"], "metric": "m"}], v)
    assert none.agrees_with_paper is None and "non-finite" in none.text
    assert none.text.endswith("partial data: 1 of 3 seeds of a without a finite value, "
                              "left out of the means")
    # over three groups the seeds left out are said once
    three, = check_claims([{"equivalent": ["b", "a", "c"], "metric": "m", "margin": 0.5}], v)
    assert three.text.count("partial data") == 1 and three.text.endswith("left out of the means")


def test_zhu_noise_magnitude_of_a_seed_whose_late_norms_are_nan_is_inconclusive():
    """A diverged seed has no late ratio: its "last third" is not taken from its early log
    points, and the verdict does not rest on the other seeds alone."""
    from sgdlab.experiments.procedures.zhu import zhu_noise_magnitude

    nan = float("nan")

    def r(seed, late):
        return run("g", seed, metrics={
            "noise/grad_norm": [(t, 1.0) for t in range(6)],
            "noise/noise_norm": [(t, 0.5 if t < 3 else late) for t in range(6)]})
    res = zhu_noise_magnitude(SimpleNamespace(paper=PAPER, options={}),
                              [r(0, 2.0), r(1, nan), r(2, 3.0)])
    c, = res.conclusions
    # seed 1's last third (steps 4-5) has no finite ratio: not 0.5 from steps 0-2
    assert res.table("noise_magnitude").rows[0][2:4] == pytest.approx([0.5, 2.5])
    assert c.agrees_with_paper is None and "1 of 3 seeds have no finite ratio" in c.text
    res = zhu_noise_magnitude(SimpleNamespace(paper=PAPER, options={}), [r(0, 2.0), r(2, 3.0)])
    assert res.conclusions[0].agrees_with_paper is True


def test_zhu_alignment_with_a_seed_without_values_is_inconclusive():
    """The means over seeds skip NaN: a seed that measured nothing at the end (diverged)
    must not leave every verdict to the other seeds without a word."""
    from sgdlab.experiments.procedures.zhu import zhu_alignment

    nan = float("nan")
    good = _alignment_run("g", (0.5, 0.2), (0.5, 0.2), [1.8, 1.5, 1.0, 0.4, 0.4, 0.4])
    bad = _alignment_run("g", (nan, nan), (nan, nan), [1.8, 1.5, nan, nan, nan, nan])
    bad.seed = 1
    for i in (1, 2):
        bad.metrics[f"align/cos_{i}"] = [(10, nan)]
    spec = SimpleNamespace(paper=PAPER, options={"tests": ["cosine", "eigenvalues",
                                                           "residual"]})
    assert [c.agrees_with_paper for c in zhu_alignment(spec, [good]).conclusions] == [True] * 4
    cs = zhu_alignment(spec, [good, bad]).conclusions
    assert [c.agrees_with_paper for c in cs] == [None] * 4
    assert all("1 of 2 seeds have no finite value there" in c.text for c in cs)
    # a seed with a late residual but no eigenvalues: only the eigenvalue test is undecided
    bad = _alignment_run("g", (0.5, nan), (0.5, 0.2), [1.8, 1.5, 1.0, 0.4, 0.4, 0.4])
    bad.seed = 1
    cs = zhu_alignment(spec, [good, bad]).conclusions
    assert [c.agrees_with_paper for c in cs] == [True, None, True, True]


def test_a_rank_correlation_says_over_how_many_points_it_is_taken():
    """Spearman ρ drops settings without a finite value: the text counts the ones ranked, not
    every setting of the grid."""
    from sgdlab.experiments.procedures.jastrzebski import ratio_grid
    from sgdlab.experiments.procedures.xing import xing_cosine_grid

    nan = float("nan")
    settings = [(0.05, 100), (0.1, 100), (0.1, 50), (0.2, 100), (0.4, 100)]
    runs = [_grid_run(lr, b, 0, top, 0.5) for (lr, b), top in zip(settings, [5, 4, 3, 2, nan])]
    spec = SimpleNamespace(paper=PAPER, options={"metrics": ["hessian_top"],
                                                 "expect": {"hessian_top": "negative"}})
    trend = ratio_grid(spec, runs).conclusions[0]
    assert "over 4 of the 5 (η, B) settings (1 without a finite value)" in trend.text
    runs[-1].summary["hessian_top"] = 1.0
    assert "over 5 (η, B) settings" in ratio_grid(spec, runs).conclusions[0].text

    def r(b, cos, lr=0.1):
        return run(f"B{b}-lr{lr}", 0, params={"optimizer": {"lr": lr}, "batch_size": b},
                   metrics={"grad_cosine": [(1, cos)], "dist_from_init": [(1, 1.0 / b)]})
    spec = SimpleNamespace(paper=PAPER, options={"fixed_lr": 0.1, "fixed_batch": 50})
    cos, dist = xing_cosine_grid(spec, [r(25, 0.3), r(50, 0.2), r(100, 0.1),
                                        r(200, nan)]).conclusions[:2]
    assert "over 3 of the 4 batch sizes (1 without a finite value)" in cos.text
    assert "over 4 batch sizes" in dist.text
    *_, by_lr = xing_cosine_grid(spec, [r(50, 0.2), r(50, 0.25, 0.2), r(50, nan, 0.4),
                                        r(50, 0.3, 0.8)]).conclusions
    assert "over 3 of the 4 learning rates (1 without a finite value)" in by_lr.text


def test_a_verdict_resting_on_diverged_runs_says_so():
    """A diverged run keeps the values it reached before it stopped: they are in the mean,
    and the claim says that they are."""
    groups = OrderedDict(a=[run("a", 0, summary={"m": 0.5}),
                            run("a", 1, summary={"m": 0.4}, status="diverged"),
                            run("a", 2, summary={"m": float("nan")}, status="diverged")],
                         b=[run("b", s, summary={"m": 0.9}) for s in range(3)])
    v = values_by_group(groups, ["m"])
    assert (v["a"]["m__diverged"], v["a"]["m__missing"]) == (1, 1) and "m__diverged" not in v["b"]
    c, = check_claims([{"less": ["a", "b"], "metric": "m"}], v)
    assert c.agrees_with_paper is True
    assert c.text.endswith("partial data: 1 of 3 seeds of a without a finite value, left out of "
                           "the means; 1 of 3 seeds of a diverged, their values from before it "
                           "in the means")


def test_zhu_alignment_reads_k_from_every_seed():
    """The first seed measured nothing (it diverged before the first measurement): k is the
    other seeds', and the checks say a seed is missing instead of testing zero pairs."""
    from sgdlab.experiments.procedures.zhu import zhu_alignment

    empty = run("g", 0, summary={"num_params": 10}, metrics={}, status="diverged")
    good = _alignment_run("g", (0.5, 0.2), (0.5, 0.2))
    good.seed = 1
    spec = SimpleNamespace(paper=PAPER, options={"tests": ["cosine", "eigenvalues"]})
    res = zhu_alignment(spec, [empty, good])
    cos, eig = res.conclusions
    assert "of the 2 leading eigenvector pairs" in cos.text
    assert all(c.agrees_with_paper is None and "1 of 2 seeds have no finite value" in c.text
               for c in (cos, eig))
    assert [r[1] for r in res.table("alignment").rows] == [1, 2]


def test_mean_curve_leaves_out_a_step_only_one_of_the_running_seeds_recorded():
    """A record of one seed between the others' steps (13 here) was a point of the mean
    curve over that seed alone: a spike (5.0 among values below 1)."""
    rs = [run("a", 0, metrics={"acc": [(0, 1.0), (10, 0.8), (13, 5.0), (20, 0.6)]}),
          run("a", 1, metrics={"acc": [(0, 1.0), (10, 0.9), (20, 0.6)]}),
          run("a", 2, metrics={"acc": [(0, 1.0), (10, 0.8)]})]      # stopped after 10
    steps, mean, _, n = mean_curve(rs, "acc", counts=True)
    assert steps == [0.0, 10.0, 20.0] and n == [3, 3, 2]
    assert mean == pytest.approx([1.0, 2.5 / 3, 0.6])


def test_claims_at_their_boundaries_by_hand():
    # a tie is not "lower", "higher" nor "above": two nets both at 100% accuracy
    tie = _vals(a=(1.0, 0.0, 1), b=(1.0, 0.0, 1))
    for kind in ("less", "greater"):
        assert _agrees({kind: ["a", "b"], "metric": "m"}, tie) is False
    assert _agrees({"above": [["a"], ["b"]], "metric": "m"}, tie) is False
    # close is |a − b| <= atol + rtol·|b|, the tolerance itself included (0.5 = 0.5 exactly)
    v = _vals(a=(1.0, 0.0, 1), b=(1.5, 0.0, 1), e=(1.15, 0.0, 1))
    assert _agrees({"close": ["a", "b"], "metric": "m", "rtol": 0.0, "atol": 0.5}, v) is True
    assert _agrees({"far": ["a", "b"], "metric": "m", "rtol": 0.0, "atol": 0.5}, v) is False
    # the default rtol is 0.1: |1 − 1.15| = 0.15 > 0.115
    assert _agrees({"close": ["a", "e"], "metric": "m"}, v) is False
    assert _agrees({"far": ["a", "e"], "metric": "m"}, v) is True
    # a gap of exactly one seed-to-seed std from the boundary lies outside the spread:
    # 1.5 − 1 = 0.5, std 0.5
    sv = _vals(a=(1.0, 0.5, 3), b=(1.5, 0.0, 3))
    assert _agrees({"less": ["a", "b"], "metric": "m"}, sv) is True


def test_equivalence_includes_its_margin():
    # 0.75 − 0.5 = 0.25 exactly: on the margin is inside it, with one seed (the point
    # difference) as with several without spread (an interval of one point)
    assert equivalence(0.75, 0.5, 0.0, 0.0, 1, 1, 0.25)[0] is True
    assert equivalence(0.75, 0.5, 0.0, 0.0, 2, 2, 0.25)[0] is True
    assert equivalence(0.5, 0.75, 0.0, 0.0, 2, 2, 0.25)[0] is True


def test_relative_tolerances_are_taken_of_the_claims_b_by_hand():
    # above: rtol·|max over B| = 0.1·1.1 = 0.11, so 1 > 1.1 − 0.11 holds (with |min over B|,
    # 0.01, it would not)
    v = _vals(a=(1.0, 0.0, 1), p=(1.1, 0.0, 1), q=(0.1, 0.0, 1))
    assert _agrees({"above": [["a"], ["p", "q"]], "metric": "m", "rtol": 0.1}, v) is True
    assert _agrees({"above": [["a"], ["p", "q"]], "metric": "m", "rtol": 0.05}, v) is False
    # equivalent: margin rtol·|mean_B| = 0.6·2 = 1.2 >= |1 − 2|; of |mean_A| (0.6) it is not
    v = _vals(a=(1.0, 0.0, 1), b=(2.0, 0.0, 1))
    assert _agrees({"equivalent": ["a", "b"], "metric": "m", "rtol": 0.6}, v) is True
    assert _agrees({"equivalent": ["b", "a"], "metric": "m", "rtol": 0.6}, v) is False


def test_a_paired_above_claim_takes_the_spread_of_min_over_a_by_hand():
    # per seed, min over {b, c} − max over {a} = 0.1, 0.6, 0.1: std sqrt(1/12) ≈ 0.289, below
    # the gap of the means, min(1, 4/3) − 0.4 = 0.6 (max over A would give 0.6, 2.6, 0.6:
    # std 1.15, past it)
    per_seed = {"a": (0.4, 0.4, 0.4), "b": (1.0, 1.0, 1.0), "c": (0.5, 3.0, 0.5)}
    groups = OrderedDict((g, [run(g, s, summary={"m": x}) for s, x in enumerate(xs)])
                         for g, xs in per_seed.items())
    (c,) = check_claims([{"above": [["b", "c"], ["a"]], "metric": "m", "paired": True}],
                        values_by_group(groups, ["m"]))
    assert c.agrees_with_paper is True
    assert f"paired seed-to-seed std {math.sqrt(1 / 12):.3g}" in c.text


def test_a_precondition_on_its_bound_is_not_met():
    # "above 0.5" and "below 0.5" are strict: a group exactly at the bound misses both
    v = _vals(a=(0.5, 0.0, 1), b=(1.0, 0.0, 1))
    for bound in ("above", "below"):
        (c,) = check_claims([{"less": ["a", "b"], "metric": "m",
                              "requires": [{"metric": "m", bound: 0.5}]}], v)
        assert c.agrees_with_paper is None
        assert f"m of a = 0.5 is not {bound} 0.5" in c.text
    (c,) = check_claims([{"less": ["a", "b"], "metric": "m",
                          "requires": [{"metric": "m", "above": 0.25}]}], v)
    assert c.agrees_with_paper is True


def test_an_equivalent_claim_takes_each_groups_own_spread():
    from scipy import stats

    # A without spread, B with std 0.1 over 3 seeds: se = 0.1/√3, Welch df = 2
    half = stats.t.ppf(0.95, 2) * 0.1 / math.sqrt(3)        # ≈ 0.169
    for order in (["a", "b"], ["b", "a"]):
        (c,) = check_claims([{"equivalent": order, "metric": "m", "margin": 0.05}],
                            _vals(a=(0.5, 0.0, 3), b=(0.5, 0.1, 3)))
        assert c.agrees_with_paper is None
        assert f"[{-half:.4g}, {half:.4g}]" in c.text


def _against_reference(mean, std, n, ref, margin, order=("a", "paper")):
    """An equivalent claim of group a (``mean`` ± ``std`` over ``n`` seeds) against the
    reference "paper" = ``ref``, as an analysis builds it (``add_references``)."""
    from sgdlab.experiments.procedures.common import add_references

    values = _vals(a=(mean, std, n))
    add_references(values, {"references": {"paper": {"m": ref}}})
    (c,) = check_claims([{"equivalent": list(order), "metric": "m", "margin": margin}], values)
    return c


def test_an_equivalent_claim_against_a_reference_is_a_one_sample_tost():
    # a = 0.5 ± 0.1 over 3 seeds vs the constant 0.5: se = 0.1/√3 = 0.05774, df = 3 − 1 = 2,
    # half-width t_{0.95, 2}·se = 2.919986 × 0.05774 = 0.1686 > margin 0.15: the interval
    # straddles ±0.15 (read as a one-seed group, the point difference 0 <= 0.15 had agreed)
    half = 2.919986 * 0.1 / math.sqrt(3)
    assert 0.1685 < half < 0.1687
    for order in (("a", "paper"), ("paper", "a")):
        c = _against_reference(0.5, 0.1, 3, 0.5, 0.15, order)
        assert c.agrees_with_paper is None, c.text
        assert f"[{-half:.4g}, {half:.4g}]" in c.text and "straddles" in c.text
        assert "one-sample: the reference is a constant" in c.text
    # margin 0.2 > 0.1686: inside, equivalent
    assert _against_reference(0.5, 0.1, 3, 0.5, 0.2).agrees_with_paper is True
    # a = 0.5 ± 0.1 over 30 seeds vs 0.55, margin 0.1: se = 0.1/√30 = 0.018257, df = 29,
    # t_{0.95, 29} = 1.699127, half-width 0.03102: [−0.0810, −0.0190] inside ±0.1, equivalent
    # (read as a one-seed group, 0.1 − |−0.05| lay within a's std 0.1: inconclusive)
    c = _against_reference(0.5, 0.1, 30, 0.55, 0.1)
    assert c.agrees_with_paper is True, c.text
    half = 1.699127 * 0.1 / math.sqrt(30)
    assert f"[{-0.05 - half:.4g}, {-0.05 + half:.4g}]" in c.text
    # a = 0.9 ± 0.1 over 3 vs 0.5: [0.4 − 0.1686, 0.4 + 0.1686] lies beyond 0.15
    assert _against_reference(0.9, 0.1, 3, 0.5, 0.15).agrees_with_paper is False
    # one seed of a: no spread on either side, the point difference decides
    c = _against_reference(0.5, float("nan"), 1, 0.6, 0.15)
    assert c.agrees_with_paper is True and "one seed: no spread" in c.text


def test_a_paired_claim_against_a_reference_pairs_each_seed_with_the_constant():
    from sgdlab.experiments.procedures.common import add_references

    # a's seeds 0.1, 0.3, 0.2: mean 0.2, std 0.1; the constant is the same at every seed, so
    # the per-seed differences 0.25 − a_s = 0.15, −0.05, 0.05 have std 0.1 (it had been an
    # error: a reference has no per-seed values)
    values = {"a": {"m": 0.2, "m__std": 0.1, "m__n": 3,
                    "m__by_seed": {0: 0.1, 1: 0.3, 2: 0.2}}}
    add_references(values, {"references": {"r": {"m": 0.25}, "low": {"m": 0.05}}})
    # 0.25 − 0.2 = 0.05 lies within the paired std 0.1: inconclusive
    (c,) = check_claims([{"less": ["a", "r"], "metric": "m", "paired": True}], values)
    assert c.agrees_with_paper is None and "paired seed-to-seed spread (std 0.1)" in c.text
    # 0.2 − 0.05 = 0.15 beyond it: agrees, for greater and for above alike
    for claim in ({"greater": ["a", "low"]}, {"above": [["a"], ["low"]]}):
        (c,) = check_claims([{**claim, "metric": "m", "paired": True}], values)
        assert c.agrees_with_paper is True and "paired seed-to-seed std 0.1" in c.text


def test_best_of_is_the_group_of_the_largest_mean_first_listed_on_a_tie():
    from sgdlab.errors import ConfigError
    from sgdlab.experiments.procedures.common import Derived, add_best_of

    values = {"a": {"acc": 0.5, "sharp": 1.0}, "b": {"acc": 0.7, "sharp": 2.0},
              "c": {"acc": 0.7, "sharp": 3.0}, "d": {"acc": float("nan"), "sharp": 4.0}}
    # acc over d, a, c, b: nan (no value to choose by), 0.5, 0.7, 0.7: c, listed before b
    names = add_best_of(values, {"best_of": {"best": {"of": ["d", "a", "c", "b"], "by": "acc"}}})
    assert values["best"] == {"acc": 0.7, "sharp": 3.0} and values["best"].of == ("c",)
    assert isinstance(values["best"], Derived) and names == {"best": "best (= c, by acc)"}
    # a claim reads the chosen group's other metrics (sharp 3 > 1) under the name given ...
    claim = {"greater": ["best", "a"], "metric": "sharp"}
    (c,) = check_claims([claim], values, names)
    assert c.agrees_with_paper is True and "sharp of best (= c, by acc) (3)" in c.text
    # ... and its preconditions on that group: c's acc 0.7 is not above 0.7, a's 0.5 is
    (c,) = check_claims([{**claim, "requires": [{"metric": "acc", "above": 0.6}]}],
                        values, names)
    assert c.agrees_with_paper is None and "acc of a = 0.5 is not above 0.6" in c.text
    (c,) = check_claims([{**claim, "requires": [{"metric": "acc", "above": 0.7}]}],
                        values, names)
    assert "acc of c = 0.7 is not above 0.7" in c.text and "acc of best" not in c.text
    # no group with a value to choose by: an empty pseudo-group, a claim on it undecided
    names = add_best_of(values, {"best_of": {"none": {"of": ["d"], "by": "acc"}}})
    assert values["none"] == {} and values["none"].of == ("d",)
    assert names == {"none": "none (none of d has a acc)"}
    assert check_claims([{**claim, "greater": ["none", "a"]}], values,
                        names)[0].agrees_with_paper is None
    for bad in ({"other": {"of": ["a", "zz"], "by": "acc"}}, {"a": {"of": ["b"], "by": "acc"}},
                {"other": {"of": [], "by": "acc"}}, {"other": {"of": ["a"]}}):
        with pytest.raises(ConfigError, match="options.best_of: .* must be a new name"):
            add_best_of(values, {"best_of": bad})


def test_zhu_noise_dominance_at_the_ratio_itself():
    """"Dominates" with the default ratio 1 is strictly above 1 (noise as large as the gradient
    does not dominate it); with 10, a late ratio of 10 itself counts."""
    from sgdlab.experiments.procedures.zhu import zhu_noise_magnitude

    def verdict(late, dom):
        r = run("g", 0, metrics={"noise/grad_norm": [(0, 4.0), (10, 1.0)],
                                 "noise/noise_norm": [(0, 1.0), (10, late)]})
        (c,) = zhu_noise_magnitude(SimpleNamespace(paper=PAPER, options={
            "dominance_ratio": dom}), [r]).conclusions
        return c.agrees_with_paper
    assert [verdict(late, 1.0) for late in (1.0, 1.5)] == [False, True]
    assert [verdict(late, 10.0) for late in (9.5, 10.0)] == [False, True]


def test_a_rank_correlation_of_one_half_is_a_clear_trend():
    from sgdlab.experiments.procedures.jastrzebski import trend_verdict

    # "a clear trend needs |ρ| ≥ 0.5": 0.5 itself decides, either way
    assert trend_verdict(-0.5, "negative") is True
    assert trend_verdict(0.5, "negative") is False
    assert trend_verdict(0.49, "negative") is None


def test_zhu_thirds_round_up_and_the_late_window_starts_at_two_thirds():
    from sgdlab.experiments.procedures.zhu import _ratio_thirds, _residual_checks

    # 4 log points: thirds of ⌈4/3⌉ = 2 points, medians of (1, 2) and (3, 4)
    r = run("g", 0, metrics={"noise/grad_norm": [(t, 1.0) for t in (0, 1, 2, 3)],
                             "noise/noise_norm": list(zip((0, 1, 2, 3), (1.0, 2.0, 3.0, 4.0)))})
    assert _ratio_thirds(r) == (1.5, 3.5, [0, 1], [2, 3])
    # the last third of steps 0-30 begins at step 20 itself
    small, stable = _residual_checks({}, 2, None, [0, 10, 20, 30], [1.0, 0.8, 0.4, 0.4])
    assert small[3]["late_steps"] == [20, 30] and small[1] is True
    assert stable[1] is True and stable[3]["late_values"] == [0.4, 0.4]


def test_close_and_far_take_their_relative_tolerance_of_the_claims_b_by_hand():
    # |2 − 1| = 1 against rtol·|B|: 0.6·1 = 0.6 (far) in one order, 0.6·2 = 1.2 (close) in the
    # other; a tolerance of |A| would swap the two verdicts
    v = _vals(a=(2.0, 0.0, 1), b=(1.0, 0.0, 1))
    (c,) = check_claims([{"close": ["a", "b"], "metric": "m", "rtol": 0.6}], v)
    assert c.agrees_with_paper is False and "tolerance 0.6" in c.text
    assert _agrees({"far": ["a", "b"], "metric": "m", "rtol": 0.6}, v) is True
    (c,) = check_claims([{"close": ["b", "a"], "metric": "m", "rtol": 0.6}], v)
    assert c.agrees_with_paper is True and "tolerance 1.2" in c.text
    assert _agrees({"far": ["b", "a"], "metric": "m", "rtol": 0.6}, v) is False


def test_zhu_alignment_cosine_at_the_threshold_is_not_above_it():
    """"|cos(u_i, v_i)| > cosine_above": a smallest cosine of exactly 0.9 does not pass."""
    from sgdlab.experiments.procedures.zhu import zhu_alignment

    r = _alignment_run("g", (0.9, 0.1), (0.9, 0.1))
    r.metrics["align/cos_2"] = [(10, 0.9)]
    spec = SimpleNamespace(paper=PAPER, options={"tests": ["cosine"]})
    c = zhu_alignment(spec, [r]).conclusions[0]
    matplotlib.pyplot.close("all")
    assert c.evidence["cosines"] == [0.99, 0.9] and c.agrees_with_paper is False
    spec.options["cosine_above"] = 0.89
    assert zhu_alignment(spec, [r]).conclusions[0].agrees_with_paper is True


def test_zhu_projection_residual_spread_at_its_bound_is_stable():
    """The last third 0.875, 1.125, 1.0: spread (max − min)/mean = 0.25/1.0, exactly the
    default bound 0.25, which "stable" admits (≤)."""
    from sgdlab.experiments.procedures.zhu import zhu_alignment

    r = _alignment_run("g", (0.9, 0.1), (0.9, 0.1),
                       [1.8, 1.6, 1.5, 1.4, 1.3, 1.2, 0.875, 1.125, 1.0])
    spec = SimpleNamespace(paper=PAPER, options={"tests": ["residual"]})
    stable = zhu_alignment(spec, [r]).conclusions[1]
    matplotlib.pyplot.close("all")
    assert stable.evidence["relative_spread"] == 0.25 and stable.agrees_with_paper is True
    spec.options["residual_spread"] = 0.2
    assert zhu_alignment(spec, [r]).conclusions[1].agrees_with_paper is False


def test_a_boolean_summary_value_is_a_flag_not_a_measurement():
    # True is an int to isinstance; as a value it would enter the mean as 1.0
    groups = OrderedDict(a=[run("a", 0, summary={"m": True}), run("a", 1, summary={"m": 3.0})])
    v = values_by_group(groups, ["m"])
    assert v["a"]["m"] == 3.0 and v["a"]["m__n"] == 1 and v["a"]["m__missing"] == 1
    assert v["a"]["m__by_seed"] == {1: 3.0}


def test_seeds_note_and_label_say_how_many_seeds_a_curve_holds():
    from sgdlab.experiments.procedures.common import seeds_label, seeds_note

    def groups(*sizes):
        return OrderedDict((f"g{i}", [run(f"g{i}", s) for s in range(n)])
                           for i, n in enumerate(sizes))
    assert seeds_note(groups(3, 3)) == "mean ± std over 3 seeds"
    assert seeds_note(groups(3, 2)) == "mean ± std over 2-3 seeds"
    assert seeds_note(groups(2, 3), spread=False) == "mean over 2-3 seeds"
    assert seeds_note(OrderedDict(a=[run("a", 7)], b=[run("b", 4)], c=[run("c", 7)])) == \
        "seeds 4, 7"
    assert seeds_note(OrderedDict(a=[run("a", 4)], b=[])) == "seed 4"
    assert seeds_note(OrderedDict(a=[])) == ""
    assert seeds_label("sgd", [3, 3, 2], 3) == "sgd (mean of 2-3 of 3 seeds)"
    assert seeds_label("sgd", [2, 2], 3) == "sgd (mean of 2 of 3 seeds)"
    assert seeds_label("sgd", [3, 3], 3) == "sgd" and seeds_label("sgd", [], 3) == "sgd"


def test_a_summary_table_reads_mean_and_sample_std_over_seeds_as_the_thesis_prints_them():
    # Chaudhari's Table 3.1 prints "1.37 ± 0.03" over runs; seeds at 1.34, 1.37 and 1.40
    # have mean 1.37 and sample std sqrt((0.03² + 0 + 0.03²) / 2) = 0.03 (the population
    # std, sqrt(0.0018 / 3) = 0.02449, would read otherwise); one seed has no spread (—, not
    # 0), and a NaN seed is left out of both
    from sgdlab.experiments.procedures.common import summary_table

    groups = OrderedDict(
        a=[run("a", s, summary={"err": v}) for s, v in enumerate([1.34, 1.37, 1.40])],
        b=[run("b", 0, summary={"err": 0.5})],
        c=[run("c", s, summary={"err": v}) for s, v in enumerate([0.49, math.nan, 0.51])])
    md = summary_table("t", groups, [("err", "test error")]).to_markdown()
    assert "| a | 3 | 1.37 | 0.03 | 3 | 0 |" in md
    assert "| b | 1 | 0.5 | — | 1 | 0 |" in md
    # (0.49, 0.51): mean 0.5, sample std sqrt(2 · 0.01² / 1) = 0.01414
    assert "| c | 3 | 0.5 | 0.01414 | 2 | 0 |" in md


def test_a_claims_two_values_are_printed_with_at_least_four_digits_and_enough_to_differ():
    from sgdlab.experiments.procedures.common import _fmt_pair

    assert _fmt_pair(1.234, 5.678) == ("1.234", "5.678")        # 4 digits though 3 differ
    assert _fmt_pair(8.40612, 8.40648) == ("8.4061", "8.4065")  # not "8.406 < 8.406"
    assert _fmt_pair(0.1, 0.1) == ("0.1", "0.1")                # not 0.10000000000000001
    assert _fmt_pair(math.nan, 1.0) == ("nan", "1")


def test_values_by_group_and_the_table_flag_the_seeds_whose_value_is_a_lower_bound():
    # a run that stopped before it reached its target reports a step count that is only a
    # lower bound (metric + "__censored"): the claims and the table must be told
    from sgdlab.experiments.procedures.common import summary_table

    groups = OrderedDict(a=[run("a", 0, summary={"m": 5.0, "m__censored": True}),
                            run("a", 1, summary={"m": 3.0})],
                         b=[run("b", 0, summary={"m": 1.0})])
    v = values_by_group(groups, ["m"])
    assert v["a"]["m__censored"] is True and "m__censored" not in v["b"]
    t = summary_table("t", groups, [("m", "steps")])
    assert t.columns == ["run", "seeds", "steps", "steps std", "steps: seeds at a lower bound",
                         "diverged"]
    assert t.rows[0] == ["a", 2, 4.0, pytest.approx(math.sqrt(2.0)), 1, 0]
    assert t.rows[1][:3] + t.rows[1][4:] == ["b", 1, 1.0, 0, 0] and math.isnan(t.rows[1][3])


def test_a_claim_on_two_metrics_of_a_group_takes_the_spread_and_seeds_of_metric_b():
    # "the loss at the end is lower than at the start": end 1.0 (std 0.1) against start 2.0
    # (std 2.0); the gap 2.0 − 1.0 = 1.0 lies within the spread, the larger std 2.0 of the
    # two compared values (with the std of end only, 0.1, it would agree)
    g = {"end": 1.0, "end__std": 0.1, "end__n": 3, "start": 2.0, "start__std": 2.0,
         "start__n": 3}
    claim = {"less": ["g", "g"], "metric": "end", "metric_b": "start"}
    assert _agrees(claim, {"g": g}) is None
    # the seeds a mean leaves out are those of the values compared: end of a (all 3 seeds)
    # against start of b (2 of 3), whose end, not compared, misses a seed too; end 1.0 <
    # start 2.0 with no spread agrees
    a = {"end": 1.0, "end__n": 3}
    b = {"end": 5.0, "end__n": 2, "end__missing": 1, "start": 2.0, "start__n": 2,
         "start__missing": 1}
    claim = {"less": ["a", "b"], "metric": "end", "metric_b": "start"}
    (c,) = check_claims([claim], {"a": a, "b": b})
    assert c.agrees_with_paper is True
    assert c.text.endswith(" — partial data: 1 of 3 seeds of b without a finite value, left "
                           "out of the means")
    # b's start complete: no seed is left out of a compared mean, whatever b's end misses
    b.update(start__n=3, start__missing=0)
    assert "partial data" not in check_claims([claim], {"a": a, "b": b})[0].text
