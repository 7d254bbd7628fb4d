"""Which learning rate each step of a run took (sgdlab.report.rates): one rule for the
figures that draw a run's rate and ``runs compare``'s last-step and mean lr."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from sgdlab.report.figures.training import compare_runs_figure, used_rates
from sgdlab.report.rates import last_step, lr_over_steps, rate_stretches

# cosine-cyclic (Musso eq. (20), period 3 epochs, η = 0.1) over 4 epochs of 5 steps: the
# loop logs the lr at step 0 and after each epoch; the sample at step 20 is the next cycle's
CYCLIC = [(0, 0.1), (5, 0.075), (10, 0.025), (15, 0.0), (20, 0.025)]
# `sgdlab parle` logs round r's lr at its end, step r·L (L = 5 here; an lr_factor of 0.1 from
# round 3 on)
PARLE = {"config": {"method": "parle"}, "summary": {"steps": 15}}
PARLE_LR = [(5, 0.1), (10, 0.1), (15, 0.01)]


def test_lr_over_steps_weighs_each_sample_by_the_steps_it_held():
    assert lr_over_steps(CYCLIC, {"summary": {"steps": 20}}) == pytest.approx((0.0, 0.05))
    # a run still going (no summary): its steps so far, up to its last sample's step
    assert lr_over_steps(CYCLIC[:3], {"summary": None}) == pytest.approx((0.075, 0.0875))
    # uneven epochs (a last, shorter one) and a step count between samples
    pts = [(0, 1.0), (4, 0.5), (6, 0.25)]
    assert lr_over_steps(pts, {"summary": {"steps": 6}}) == pytest.approx((0.5, 5.0 / 6))
    assert lr_over_steps(pts, {"summary": {"steps": 5}}) == pytest.approx((0.5, 4.5 / 5))
    assert lr_over_steps([], {"summary": {"steps": 5}}) is None
    assert lr_over_steps([(0, 1.0)], {"summary": {"steps": 0}}) is None


def test_lr_over_steps_of_a_parle_run_reads_each_round_s_lr_at_its_end():
    # the sample at the final step is the lr of the last round taken, and each sample held
    # over the L steps before it
    assert lr_over_steps(PARLE_LR, PARLE) == pytest.approx((0.01, 0.07))
    # one round: its lr, not nothing
    assert lr_over_steps(PARLE_LR[:1], {**PARLE, "summary": {"steps": 5}}) == pytest.approx(
        (0.1, 0.1))
    # still going: up to its last sample's step
    assert lr_over_steps(PARLE_LR[:2], {**PARLE, "summary": None}) == pytest.approx(
        (0.1, 0.1))


def test_an_experiment_s_replica_run_reads_each_round_s_lr_at_its_end_too():
    # the `replicas` procedure (chaudhari-parle) trains through sgdlab.train.replicas into
    # the sweep's record, whose config names the procedure, not `method: parle`
    sweep = {"config": {"procedure": "replicas", "params": {"parle": {"L": 5}}},
             "summary": {"steps": 15}}
    assert lr_over_steps(PARLE_LR, sweep) == pytest.approx((0.01, 0.07))
    assert rate_stretches(PARLE_LR, sweep) == rate_stretches(PARLE_LR, PARLE)
    assert used_rates({"lr": PARLE_LR}, sweep)["lr"] == [(0, 0.1), (5, 0.1), (10, 0.01),
                                                         (15, 0.01)]
    # a `train` procedure's run is the loop's: a sample holds from its step
    train = {"config": {"procedure": "train"}, "summary": {"steps": 20}}
    assert lr_over_steps(CYCLIC, train) == pytest.approx((0.0, 0.05))


def test_lr_over_steps_of_a_stopped_run_reads_its_steps_from_its_other_series():
    # interrupted in its third epoch (no summary), at step 13 by its per-step instrument: the
    # sample at step 10 is the lr its last steps took, not one no step used
    stopped = {"summary": None}
    assert lr_over_steps(CYCLIC[:3], stopped, last_step=13) == pytest.approx(
        (0.025, (0.1 * 5 + 0.075 * 5 + 0.025 * 3) / 13))
    # its other series ending at the last sample: as without them
    assert lr_over_steps(CYCLIC[:3], stopped, last_step=10) == pytest.approx((0.075, 0.0875))
    # a finished run's summary steps stand
    assert lr_over_steps(CYCLIC, {"summary": {"steps": 20}}, last_step=20) == pytest.approx(
        (0.0, 0.05))


def test_rate_stretches_cover_the_steps_taken_once():
    assert rate_stretches(CYCLIC, {"summary": {"steps": 20}}) == [
        (0, 5, 0.1), (5, 10, 0.075), (10, 15, 0.025), (15, 20, 0.0)]
    assert rate_stretches(PARLE_LR, PARLE) == [(0, 5, 0.1), (5, 10, 0.1), (10, 15, 0.01)]
    assert last_step({"lr": CYCLIC[:3], "grad_norm": [(1, 1.0), (13, 1.0)], "x": []}) == 13
    assert last_step({"x": []}) is None


def _drawn(fig, label):
    (line,) = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == label]
    return list(zip(line.get_xdata(), line.get_ydata()))


@pytest.mark.parametrize("run, lr, drawn", [
    ({"config": {}, "summary": {"steps": 20}}, CYCLIC,
     [(0, 0.1), (5, 0.075), (10, 0.025), (15, 0.0), (20, 0.0)]),
    # each round's lr from the round's start, not from its end (where it was logged)
    (PARLE, PARLE_LR, [(0, 0.1), (5, 0.1), (10, 0.01), (15, 0.01)]),
    # a plain run stopped at step 13 (no summary): its other series say how far it went
    ({"config": {}, "summary": None}, CYCLIC[:3], [(0, 0.1), (5, 0.075), (10, 0.025),
                                                   (13, 0.025)]),
])
def test_the_drawn_rate_and_runs_compare_s_last_step_and_mean_lr_agree(run, lr, drawn):
    history = {"lr": lr, "train_loss": [(0, 2.0), (13, 1.0)]}
    fig = compare_runs_figure({"a": history}, ["lr"], runs={"a": run})
    got = _drawn(fig, "a")
    plt.close(fig)
    assert got == drawn          # (the samples themselves, no arithmetic: exact)
    assert used_rates(history, run)["lr"] == drawn
    last, mean = lr_over_steps(lr, run, last_step=last_step(history))
    # the table's last-step lr is the curve's last value, its mean the curve's mean over steps
    assert last == got[-1][1]
    steps = [b[0] - a[0] for a, b in zip(got, got[1:])]
    assert mean == pytest.approx(sum(v * n for (_, v), n in zip(got, steps)) / sum(steps))


def test_a_replica_run_s_sample_at_step_0_holds_over_no_step():
    # each round's rate is logged at its end: a sample at step 0 closed no round
    pts = [(0, 9.0)] + PARLE_LR
    assert rate_stretches(pts, PARLE) == [(0, 5, 0.1), (5, 10, 0.1), (10, 15, 0.01)]
    assert lr_over_steps([(0, 9.0)], {**PARLE, "summary": {"steps": 0}}) is None
