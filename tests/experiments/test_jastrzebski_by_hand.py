"""The Jastrzebski analyses on stored runs with answers worked by hand: the η/B grid's table,
trend and equal-ratio equivalence (Fig. 3), the equal-ratio curves' means (Figs. 1-2) and
the basin widths at the ends of an interpolation (Fig. 4), the breakdown's best accuracy
(Fig. 5)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest

from sgdlab.experiments.procedures.jastrzebski import (breakdown, equal_ratio,
                                                      interpolation, ratio_grid)
from sgdlab.testing import stored_run

PAPER = {"author": "Jastrzebski", "year": 2018, "figure": "Fig. 3"}


def _grid() -> list:
    """(η, B) = (0.03, 300) and (0.07, 700) share η/B = 1e-4 (two floats 1 ulp apart: 0.03/300
    is 9.999999999999999e-05), 0.015 apart in accuracy; (0.06, 300) has a diverged seed at
    chance, (0.12, 300) the highest η/B and accuracy."""
    def run(lr, b, seed, acc, status="finished"):
        return stored_run(f"lr={lr},B={b}", seed, status=status, summary={"test_acc": acc},
                          params={"optimizer": {"name": "sgd", "lr": lr}, "batch_size": b})
    runs = [run(0.03, 300, s, 0.5 + 1e-4 * s) for s in range(3)]
    runs += [run(0.07, 700, s, 0.515 + 1e-4 * s) for s in range(3)]
    runs += [run(0.06, 300, s, 0.6) for s in range(2)] + [run(0.06, 300, 2, 0.1, "diverged")]
    runs += [run(0.12, 300, s, 0.7) for s in range(3)]
    return runs


def _analysis(**options):
    spec = SimpleNamespace(paper=PAPER, options={"metrics": ["test_acc"],
                                                 "expect": {"test_acc": "positive"}, **options})
    res = ratio_grid(spec, _grid())
    plt.close("all")
    return res


def test_the_grid_table_holds_eta_over_b_and_means_without_the_diverged_seeds():
    (t,) = _analysis().tables
    assert t.columns == ["lr", "batch size", "lr / B", "validation accuracy", "diverged",
                         "seeds"]
    want = [[0.03, 300, 0.03 / 300, 0.5001, 0, 3], [0.07, 700, 0.07 / 700, 0.5151, 0, 3],
            [0.06, 300, 0.06 / 300, 0.6, 1, 3], [0.12, 300, 0.12 / 300, 0.7, 0, 3]]
    assert [row[:3] for row in t.rows] == [row[:3] for row in want]
    assert [row[3] for row in t.rows] == pytest.approx([row[3] for row in want])
    assert [row[4:] for row in t.rows] == [row[4:] for row in want]


def test_the_trend_and_the_equal_ratio_equivalence_by_hand():
    # η/B ranks 1, 2, 3, 4 (the two 1e-4 floats are 1 ulp apart) against accuracy ranks
    # 1, 2, 3, 4: ρ = 1, a clear increase
    trend, equal, diverged = _analysis().conclusions
    assert trend.evidence["spearman"] == pytest.approx(1.0) and trend.agrees_with_paper is True
    # the settings sharing η/B (up to rounding) are tested; 0.015 apart with a spread of
    # 1e-4, they lie outside the default margin of 0.01 and inside one of 0.02
    assert "lr=0.03,B=300" in equal.text and "lr=0.07,B=700" in equal.text
    assert equal.agrees_with_paper is False
    (_, wide, _) = _analysis(equal_ratio_margin=0.02).conclusions
    assert wide.agrees_with_paper is True
    assert diverged.text == "diverged: lr=0.06, B=300"


def test_the_equal_ratio_curve_means_leave_out_the_evaluation_before_training():
    # accuracy 0.1 at step 0 (before training), then 0.5, 0.7, 0.9, 1.0 at the epoch ends:
    # the curve's mean is (0.5 + 0.7 + 0.9 + 1.0) / 4, its last 3 (0.7 + 0.9 + 1.0) / 3
    acc = [(0, 0.1), (10, 0.5), (20, 0.7), (30, 0.9), (40, 1.0)]
    r = stored_run("a", params={"optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 10},
                   metrics={"test_acc": acc, "train_loss": [(s, 1.0) for s, _ in acc],
                            "epoch": [(s, s / 10) for s, _ in acc]})
    (t,) = equal_ratio(SimpleNamespace(paper=PAPER, options={"curves": []}), [r]).tables
    plt.close("all")
    assert r.summary["curve_mean"] == pytest.approx(3.1 / 4)
    assert r.summary["late"] == pytest.approx(2.6 / 3)
    assert t.rows[0][3] == pytest.approx(3.1 / 4) and t.rows[0][5] == pytest.approx(2.6 / 3)
    assert t.columns[4] == "std" and math.isnan(t.rows[0][4])   # one seed: no spread, not 0


def test_an_end_next_to_an_overflowed_loss_has_no_width_and_the_default_rise_is_half():
    # α = −1, 0, 1, 2; the loss overflowed at α = −1 next to A: A's basin has width 0, no
    # width (not a log of 0). B's level 1 + 0.5 is crossed at 1 + 0.5 / (3 − 1) = 1.25
    r = stored_run("pair", params={"between": ["A", "B"]}, summary={"distance": 2.0},
                   data={"alphas": [-1.0, 0.0, 1.0, 2.0],
                         "train_loss": [float("inf"), 1.0, 1.0, 3.0], "train_acc": [1.0] * 4,
                         "test_loss": [], "test_acc": [], "bn_stats": "none"})
    interpolation(SimpleNamespace(paper=PAPER, options={}), [r])
    plt.close("all")
    s = r.summary
    assert s["width_A"] != s["width_A"] and s["width_A__censored"] is False    # NaN
    assert s["width_B"] == pytest.approx(0.25) and s["log_width_B"] == pytest.approx(
        math.log(0.25))
    assert s["width_B__censored"] is False


def test_the_breakdown_reads_the_best_accuracy_over_training_not_the_last():
    # footnote 10's "maximum validation accuracy": 0.8 at step 10, not the last finite 0.6
    r = stored_run("b", params={"dataset": {"name": "d", "n_train": 100},
                                "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 10},
                   metrics={"test_acc": [(0, 0.1), (10, 0.8), (20, 0.6), (30, math.nan)]})
    (t,) = breakdown(SimpleNamespace(paper=PAPER, options={}), [r]).tables
    plt.close("all")
    assert r.summary["best_acc"] == 0.8 and t.rows[0][4] == 0.8
    assert t.columns[5] == "std" and math.isnan(t.rows[0][5])   # one seed: no spread, not 0


def test_the_grid_by_default_expects_flatter_minima_and_better_accuracy_at_larger_ratios():
    # Fig. 3's caption (line 191): "Higher η/S correlates with lower Hessian maximum
    # eigenvalue and lower Hessian Frobenius norm, i.e. wider minima, and better
    # generalization": with no options.expect, a grid that does so agrees on all three
    def run(lr, b, top, frob, acc):
        return stored_run(f"lr={lr},B={b}", 0, summary={
            "hessian_top": top, "hessian_frobenius": frob, "test_acc": acc},
            params={"optimizer": {"name": "sgd", "lr": lr}, "batch_size": b})
    # η/B = 1e-4, 2e-4, 4e-4, 8e-4: λ_max and ‖H‖_F fall, accuracy rises (ρ = ∓1)
    runs = [run(0.01, 100, 40.0, 90.0, 0.80), run(0.02, 100, 30.0, 70.0, 0.82),
            run(0.04, 100, 20.0, 50.0, 0.84), run(0.08, 100, 10.0, 30.0, 0.86)]
    res = ratio_grid(SimpleNamespace(paper=PAPER, options={}), runs)
    plt.close("all")
    top, frob, acc = res.conclusions[:3]
    assert [c.evidence["spearman"] for c in (top, frob, acc)] == pytest.approx([-1, -1, 1])
    assert [c.agrees_with_paper for c in (top, frob, acc)] == [True, True, True]
    assert "λ_max decreases as η/B grows" in top.claim
    assert "‖H‖_F decreases" in frob.claim and "accuracy increases" in acc.claim


def test_spearman_of_a_constant_side_is_undefined_quietly():
    import warnings

    from sgdlab.experiments.procedures.jastrzebski import _spearman

    # one η/B for every point (or one value): no ranking, NaN without scipy's warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(_spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
        assert math.isnan(_spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))


def test_the_entrys_grid_reports_the_training_loss_and_accuracy_without_a_claim():
    # §2.2 compares "minima with the same loss value" (line 160) and footnote 8 (line 197)
    # has most models at almost 100% training accuracy: the table shows both, no verdict
    from sgdlab.experiments.spec import load_experiment

    def run(lr, b, loss):
        return stored_run(f"lr={lr},B={b}", 0, params={"optimizer": {"name": "sgd", "lr": lr},
                                                     "batch_size": b},
                          summary={"hessian_top": 1 / lr, "hessian_frobenius": 2 / lr,
                                   "test_acc": lr, "train_loss": loss, "train_acc": 1 - loss})
    runs = [run(0.01, 100, 0.3), run(0.02, 100, 0.2), run(0.04, 100, 0.1)]
    spec = load_experiment("jastrzebski-ratio-grid", "cpu")
    res = ratio_grid(SimpleNamespace(paper=PAPER, options=spec.options), runs)
    title = dict(res.figures)["curve_test_acc"].axes[0].get_title()
    # whose Fig. 3; "(η, B)" kept on one line
    assert title.replace("\n", " ").startswith(
        "Jastrzebski 2018, Fig. 3: validation accuracy per (η,\u00a0B) ")
    plt.close("all")
    (t,) = res.tables
    assert t.columns[3:8] == ["Hessian λ_max", "Hessian ‖H‖_F", "validation accuracy",
                              "train loss", "train accuracy"]
    assert [row[6] for row in t.rows] == pytest.approx([0.3, 0.2, 0.1])
    assert [row[7] for row in t.rows] == pytest.approx([0.7, 0.8, 0.9])
    assert not [c for c in res.conclusions if "train" in (c.claim or "")]


def test_the_breakdown_draws_fig_5s_curves_of_every_beta_at_each_size():
    # Fig. 5 plots validation-accuracy curves, β = 1 in blue and the others "diverging from
    # the blue" (line 215): options.curves draws each (size, β) group's mean curve by epoch
    def run(n, lr, b, seed, accs):
        steps = [0, 10, 20]
        return stored_run(f"beta{lr / 0.1:g}", seed,
                          params={"dataset": {"name": "d", "n_train": n},
                                  "optimizer": {"name": "sgd", "lr": lr}, "batch_size": b},
                          metrics={"test_acc": list(zip(steps, accs)),
                                   "epoch": [(s, s / 10) for s in steps]})
    runs = [run(n, lr, b, s, [0.1, 0.5 + lr, 0.6 + lr]) for n in (100, 50)
            for lr, b in ((0.1, 10), (0.2, 20)) for s in (0, 1)]
    spec = SimpleNamespace(paper={**PAPER, "figure": "Fig. 5"}, options={"curves": ["test_acc"]})
    res = breakdown(spec, runs)
    figs = dict(res.figures)
    (ax,) = figs["curve_test_acc"].axes
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {f"n={n},beta={b}" for n in (100, 50) for b in (1, 2)}
    x, y = lines["n=50,beta=2"].get_data()
    assert list(x) == [0.0, 1.0, 2.0] and list(y) == pytest.approx([0.1, 0.7, 0.8])
    # whose Fig. 5: the paper named in both titles
    assert ax.get_title().startswith("Jastrzebski 2018, Fig. 5: ")
    assert figs["breakdown"].axes[0].get_title() == "Jastrzebski 2018, Fig. 5: constant η/S"
    assert set(dict(breakdown(SimpleNamespace(paper=spec.paper, options={}), runs).figures)) \
        == {"breakdown"}
    plt.close("all")
