"""Footnote 6 of Xing et al. (2018): the xing_stuck analysis on synthetic stored runs with known
answers, and the xing-stuck-continuation entry's runs (which run continues which, from which
step, for how long)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib
import pytest

from sgdlab.errors import ConfigError
from sgdlab.experiments.procedures import analysis_option_problems
from sgdlab.experiments.procedures.xing import (relative_drop, stuck_continuation,
                                               window_mean, xing_stuck)
from sgdlab.experiments.spec import SCALES, load_experiment
from sgdlab.testing import stored_run

matplotlib.use("Agg")
NAME = "xing-stuck-continuation"


def run(label, seed, loss, acc=None, params=None, status="finished"):
    """A stored run whose train loss (accuracy) is ``loss`` (``acc``) at steps 0, 10, 20, ..."""
    acc = acc if acc is not None else [0.5] * len(loss)
    metrics = {"train_loss": [(10 * i, v) for i, v in enumerate(loss)],
               "train_acc": [(10 * i, v) for i, v in enumerate(acc)]}
    return stored_run(label, seed, params=params, metrics=metrics, status=status)


def test_window_mean_takes_the_steps_after_stop_minus_window_up_to_stop():
    pts = [(0, 4.0), (10, 3.0), (20, 2.0), (30, float("nan")), (40, 1.0)]
    assert window_mean(pts, 40, 20) == 1.0                # (20, 40]: 30 is NaN, 40
    assert window_mean(pts, 20, 20) == 2.5                # (0, 20]: 10 and 20
    assert window_mean(pts, 20, 25) == 3.0                # (-5, 20]: 0, 10, 20
    assert math.isnan(window_mean(pts, 35, 5))            # (30, 35]: nothing logged
    assert relative_drop(2.0, 1.5) == 0.25
    assert relative_drop(2.0, 3.0) == -0.5
    for before, after in ((0.0, 1.0), (-1.0, 1.0), (float("nan"), 1.0), (1.0, float("inf"))):
        assert math.isnan(relative_drop(before, after))


def test_stuck_continuation_of_the_same_run_and_of_a_warm_started_one():
    # steps 0..100: phase one to step 60, the continuation after it
    same = run("lower-lr", 0, [8, 7, 6, 4, 4, 4, 4, 3, 3, 2, 2],
               acc=[0, 0, 0, 0.5, 0.5, 0.6, 0.6, 0.7, 0.7, 0.8, 0.9])
    v = stuck_continuation(same, 60, same, window=20, lag=30)
    # stuck: (40, 60] holds 4, 4; the window lag = 30 updates earlier, (10, 30], holds 6, 4
    assert v["loss_stuck"] == 4.0 and v["stuck_drop"] == pytest.approx(1 - 4 / 5)
    assert v["loss_end"] == 2.0 and v["loss_drop"] == pytest.approx(0.5)
    assert v["acc_stuck"] == pytest.approx(0.6) and v["acc_end"] == pytest.approx(0.85)
    assert v["acc_gain"] == pytest.approx(0.25)
    # a warm start counts its own steps from 0: its end is its own last window
    source = run("gd-iso", 0, [8, 7, 6, 4, 4, 4, 4])
    cont = run("gd", 0, [4, 3, 3, 3.5], acc=[0.6, 0.7, 0.7, 0.8])
    v = stuck_continuation(source, 60, cont, window=20, lag=30)
    assert v["loss_stuck"] == 4.0 and v["loss_end"] == 3.25
    assert v["loss_drop"] == pytest.approx(1 - 3.25 / 4)
    # the stuck run is its own continuation: nothing gained
    v = stuck_continuation(source, 60, source, window=20, lag=30)
    assert v["loss_drop"] == 0.0 and v["acc_gain"] == 0.0


def _spec(**options):
    o = {"stuck_run": "gd-iso", "switch_step": 40, "window": 20, "lag": 20,
         "curves": ["train_loss"], "references": {"10%": {"loss_drop": 0.1}}, **options}
    return SimpleNamespace(paper={"author": "X", "figure": "fn. 6"}, options=o)


def _claims():
    spec = load_experiment(NAME, "cpu")
    ref = next(iter(spec.options["references"]))
    return [{**c, kind: [c[kind][0], "10%" if c[kind][1] == ref else c[kind][1]]}
            for c in spec.options["claims"] for kind in ("less", "greater") if kind in c]


def _runs(phase_one, lower, gd, sgd):
    """Two seeds: phase one (steps 0..40) and the continuations (20 updates), with small
    seed-to-seed differences so that the seeds give a spread."""
    out = []
    for s in (0, 1):
        d = 0.01 * s
        p1 = [x + d for x in phase_one]
        out += [run("gd-iso", s, p1),
                run("lower-lr", s, p1 + [x + d for x in lower]),
                run("gd", s, [p1[-1]] + [x + d for x in gd], params={"init_from": "gd-iso"}),
                run("sgd", s, [p1[-1]] + [x + d for x in sgd], params={"init_from": "gd-iso"})]
    return out


def test_the_footnote_agrees_where_only_sgd_lowers_the_stuck_loss():
    stuck = [2.0, 1.2, 1.0, 1.0, 1.0]              # (0, 20] = 1.1, (20, 40] = 1.0: drop 9%
    runs = _runs(stuck, [1.0, 0.98], [1.0, 0.99], [0.7, 0.5])
    res = xing_stuck(_spec(claims=_claims()), runs)
    assert [c.agrees_with_paper for c in res.conclusions if c.claim] == [True, True, True]
    # first, the precondition's number, no verdict: the mean over the seeds' drops
    assert res.conclusions[0].claim is None and res.conclusions[0].agrees_with_paper is None
    assert res.conclusions[0].evidence["stuck_drop"] == pytest.approx(
        1 - (1.0 / 1.1 + 1.01 / 1.11) / 2)
    rows = {r[0]: r for r in res.tables[0].rows}
    assert set(rows) == {"gd-iso", "lower-lr", "gd", "sgd"}
    by = {r.label: r.summary for r in runs if r.seed == 0}
    assert by["gd-iso"]["stuck_drop"] == pytest.approx(1 - 1.0 / 1.1)
    assert by["gd"]["stuck_drop"] == by["sgd"]["stuck_drop"] == by["gd-iso"]["stuck_drop"]
    assert by["lower-lr"]["loss_drop"] == pytest.approx(0.01)
    assert by["sgd"]["loss_drop"] == pytest.approx(0.4)
    assert [name for name, _ in res.figures] == ["curve_train_loss"]


def test_the_footnote_disagrees_where_gd_and_a_lower_rate_lower_it_too():
    runs = _runs([2.0, 1.2, 1.0, 1.0, 1.0], [0.6, 0.5], [0.3, 0.2], [0.7, 0.5])
    res = xing_stuck(_spec(claims=_claims()), runs)
    assert [c.agrees_with_paper for c in res.conclusions if c.claim] == [False, False, True]


def test_a_noisy_run_still_descending_leaves_every_claim_inconclusive():
    falling = [2.0, 1.6, 1.4, 1.2, 1.0]            # (0, 20] = 1.5, (20, 40] = 1.1: drop 27%
    runs = _runs(falling, [1.1, 1.1], [1.1, 1.1], [0.7, 0.5])
    res = xing_stuck(_spec(claims=_claims()), runs)
    claims = [c for c in res.conclusions if c.claim]
    assert [c.agrees_with_paper for c in claims] == [None, None, None]
    assert all("stuck_drop" in c.text and "is not below 0.1" in c.text for c in claims)
    assert "10%" not in claims[0].text.split("untestable here")[1]


def test_a_continuation_without_its_source_seed_has_no_values():
    runs = _runs([2.0, 1.2, 1.0, 1.0, 1.0], [1.0, 0.98], [1.0, 0.99], [0.7, 0.5])
    runs = [r for r in runs if not (r.label == "gd-iso" and r.seed == 1)]
    xing_stuck(_spec(claims=_claims()), runs)
    gd1 = next(r for r in runs if r.label == "gd" and r.seed == 1)
    assert math.isnan(gd1.summary["loss_drop"]) and math.isnan(gd1.summary["stuck_drop"])


def test_the_analysis_needs_its_options():
    runs = _runs([2.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0])
    # refused before training and before a report: each required option, each length
    assert analysis_option_problems("xing_stuck", {"stuck_run": "gd-iso"}) == [
        f"options.{k}: analysis 'xing_stuck' needs this option, a finite number > 0"
        for k in ("window", "lag")]
    for window, lag in ((20, 0), (0, 20), (20, -10)):
        assert analysis_option_problems("xing_stuck", _spec(window=window, lag=lag).options)
    with pytest.raises(ConfigError, match="options.stuck_run: no group 'noisy'"):
        xing_stuck(_spec(stuck_run="noisy"), runs)
    with pytest.raises(ConfigError, match="options.switch_step: run group 'lower-lr'"):
        o = _spec()
        del o.options["switch_step"]
        xing_stuck(o, runs)


def _by_label(scale, readings=None):
    return {r.label: r for r in load_experiment(NAME, scale, readings=readings).expand(
        data_dir="/d") if r.seed == 0}


@pytest.mark.parametrize("scale", SCALES)
def test_the_continuations_start_at_the_switch_and_run_lag_updates(scale):
    o = load_experiment(NAME, scale).options
    runs = _by_label(scale)
    p1, lower, gd, sgd = (runs[g].params for g in ("gd-iso", "lower-lr", "gd", "sgd"))
    switch, lag = o["switch_step"], o["lag"]
    # phase one: the noisy full-batch run, saved for the warm starts, ends at the switch
    assert p1["optimizer"]["name"] == "gd-isotropic" and p1["batch_size"] == "full"
    assert p1["epochs"] == switch and p1["save_model"] and o["stuck_run"] == "gd-iso"
    # the lower rate: the same run and noise, its rate divided at the switch
    assert {k: v for k, v in lower.items() if k not in ("epochs", "schedule")} == \
        {k: v for k, v in p1.items() if k not in ("epochs", "save_model")}
    assert lower["schedule"] == {"name": "step", "milestones": [switch], "gamma": 0.1}
    assert lower["epochs"] - switch == lag
    # GD and SGD start from phase one's final weights, at its learning rate
    for p, label in ((gd, "gd"), (sgd, "sgd")):
        assert p["init_from"] == "gd-iso" and runs[label].depends == ("gd-iso",)
        assert p["optimizer"] == {"name": label, "lr": p1["optimizer"]["lr"]}
    assert gd["epochs"] == lag and gd["batch_size"] == "full"
    assert sgd["max_steps"] == lag
    # the windows fit: stuck_drop reads phase one's last window and the one lag earlier
    assert 0 < o["window"] <= lag <= switch - o["window"]
    assert o["window"] % p1["eval_every_steps"] == 0


def test_paper_scale_sgd_has_batch_100_and_the_cpu_scale_fills_its_batches():
    assert _by_label("paper")["sgd"].params["batch_size"] == 100
    p = _by_label("cpu")["sgd"].params
    from sgdlab.experiments.procedures.train import train_examples

    assert train_examples(p["dataset"]) == 1400 and p["batch_size"] == 100
    assert load_experiment(NAME, "cpu").options["switch_step"] == 5000


def test_readings_change_the_lower_rate_and_phase_ones_noise():
    half = _by_label("cpu", {"lower-lr": "half"})
    assert half["lower-lr"].params["schedule"]["gamma"] == 0.5
    default = _by_label("cpu")
    assert half["gd-iso"].key == default["gd-iso"].key       # phase one is unchanged
    quiet = _by_label("cpu", {"noise-factor": "0.05"})
    assert quiet["gd-iso"].params["optimizer"]["variance_factor"] == 0.05
    assert quiet["lower-lr"].params["optimizer"]["variance_factor"] == 0.05
    # the warm starts take the new phase one's weights: other runs than the default's
    assert quiet["gd"].params == default["gd"].params
    assert quiet["gd"].key != default["gd"].key


def test_phase_ones_noise_takes_the_readings_of_line_148s_maximum_gradient_variance():
    """Phase one's noise is §4's: "variance calculated by multiplying the maximum gradient
    variance of the model at the initialization with a factor" (line 148), which leaves open
    per-example or batch-100 gradients and, on this batch-normalised MLP, which batch-norm
    statistics; xing-isotropic-noise names both readings, and so does footnote 6's entry. The
    defaults keep the runs (and their keys) as they were."""
    for scale in ("cpu", "paper"):
        default = _by_label(scale)
        opt = default["gd-iso"].params["optimizer"]
        assert opt.get("noise_batch_size", 1) == 1 and opt["variance_bn"] == "data"
        same = _by_label(scale, {"max-variance": "per-example", "max-variance-bn": "data"})
        assert {k: r.key for k, r in same.items()} == {k: r.key for k, r in default.items()}
        batch = _by_label(scale, {"max-variance": "batch-100"})
        running = _by_label(scale, {"max-variance-bn": "running"})
        for label in ("gd-iso", "lower-lr"):      # the noisy runs: phase one, and its rerun
            assert batch[label].params["optimizer"]["noise_batch_size"] == 100
            assert running[label].params["optimizer"]["variance_bn"] == "running"
        for label in ("gd", "sgd"):               # noiseless, warm-started from the new phase one
            assert batch[label].params == default[label].params
            assert batch[label].key != default[label].key


@pytest.mark.usefixtures("one_thread_runs")
def test_at_smoke_scale_the_lower_rate_repeats_phase_one_up_to_the_switch(tmp_path):
    """The lower-lr run is phase one again up to the switch (same seed, same noise): its
    records there equal gd-iso's, so both continue the same stuck state."""
    from sgdlab.experiments.runner import run_experiment
    from sgdlab.experiments.sweep import load_runs

    store = str(tmp_path / "s.sqlite")
    res = run_experiment(NAME, scale="smoke", out_dir=tmp_path / "out", store_path=store,
                         progress=None)
    assert res.ok
    stored, missing = load_runs(load_experiment(NAME, "smoke").expand(), store_path=store)
    assert not missing
    runs = {r.group: r for r in stored}
    switch = load_experiment(NAME, "smoke").options["switch_step"]
    first = [(s, v) for s, v in runs["lower-lr"].metrics["train_loss"] if s <= switch]
    assert first == runs["gd-iso"].metrics["train_loss"]
    later = [v for s, v in runs["lower-lr"].metrics["lr"] if s > switch]
    assert later and all(v == pytest.approx(0.01) for v in later)


def test_the_end_of_a_run_is_its_last_train_loss_evaluation():
    # the training loss logged to step 60, the accuracy only to step 40 (or not at all): the
    # last window of the run is (40, 60], where the loss is 3 and 2
    r = stored_run("gd", 0, metrics={
        "train_loss": [(10 * i, v) for i, v in enumerate([8, 7, 6, 5, 4, 3, 2])],
        "train_acc": [(10 * i, 0.5) for i in range(5)]})
    v = stuck_continuation(r, 30, r, window=20, lag=10)
    assert v["loss_end"] == 2.5 and v["loss_drop"] == pytest.approx(1 - 2.5 / 5.5)
    r.metrics.pop("train_acc")
    v = stuck_continuation(r, 30, r, window=20, lag=10)
    assert v["loss_end"] == 2.5 and math.isnan(v["acc_end"])


def _switch_marks(fig) -> list:
    """The steps the figure marks with a dashed vertical line (a switch)."""
    return sorted({ln.get_xdata()[0] for ln in fig.axes[0].get_lines()
                   if len(set(ln.get_xdata())) == 1 and ln.get_linestyle() == "--"})


def test_a_warm_started_run_continues_from_phase_ones_last_step_not_switch_step():
    # phase one runs to step 60 (its window (40, 60] at 1.0, (20, 40] at 1.1);
    # options.switch_step (40) is the switch of a run that continues itself, not of one
    # started from phase one's weights
    p1 = [2.0, 1.5, 1.2, 1.1, 1.1, 1.0, 1.0]
    runs = [run("gd-iso", 0, p1), run("sgd", 0, [1.0, 0.7, 0.5], params={"init_from": "gd-iso"})]
    res = xing_stuck(_spec(), runs)
    sgd = runs[1].summary
    assert sgd["loss_stuck"] == 1.0 and sgd["loss_end"] == pytest.approx(0.6)
    assert sgd["loss_drop"] == pytest.approx(0.4)
    # (20, 40] at 1.1, 20 updates before the switch: a drop of 1 − 1 / 1.1
    assert sgd["stuck_drop"] == pytest.approx(1 - 1.0 / 1.1)
    (_, fig), = res.figures
    # the end of phase one is marked once, where the continuation starts (step 60)
    assert _switch_marks(fig) == [60]
    matplotlib.pyplot.close("all")


def test_phase_ones_own_end_is_not_a_switch_to_mark():
    # a run that continues itself switches at options.switch_step (40): that step alone is
    # marked, not the end of the stuck run (step 60)
    p1 = [2.0, 1.5, 1.2, 1.0, 1.0, 1.0, 1.0]
    runs = [run("gd-iso", 0, p1), run("lower-lr", 0, p1[:5] + [0.9, 0.8])]
    (_, fig), = xing_stuck(_spec(), runs).figures
    assert _switch_marks(fig) == [40]
    matplotlib.pyplot.close("all")
