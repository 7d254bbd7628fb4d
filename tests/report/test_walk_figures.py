"""Walk / interpolation / trajectory figures read recorded data only; tables count barriers."""
from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest

from sgdlab.measure.interpolation import InterpolationCurve
from sgdlab.measure.trajectory import (
    increment_autocorrelation,
    increment_spectrum,
    periodicity_test,
)
from sgdlab.report.figures.interpolation import interpolation_figure
from sgdlab.report.figures.surface import loss_surface_figure
from sgdlab.report.figures.trajectory import trajectory_figure
from sgdlab.report.figures.walk import walk_epoch_table, walk_figure, walk_segments
from sgdlab.testing import drawn_inside_width_and_top


def _history():
    h = {f"walk_loss_k{k:02d}": [] for k in range(3)}
    for t, row in enumerate([(1.0, 0.5, 0.8), (0.8, 1.2, 0.6), (0.6, 0.3, 0.4)]):
        for k, v in enumerate(row):
            h[f"walk_loss_k{k:02d}"].append((t, v))
    h["walk_valley_alpha"] = [(0, 0.5), (1, 1.0), (2, 0.5)]
    h["walk_valley_loss"] = [(0, 0.5), (1, 0.6), (2, 0.3)]
    h["walk_barrier"] = [(0, 0.0), (1, 1.0), (2, 0.0)]
    h["walk_epoch"] = [(2, 1.0), (3, 2.0)]
    h["walk_epoch_steps"] = [(2, 2.0), (3, 1.0)]
    h["walk_epoch_barriers"] = [(2, 1.0), (3, 0.0)]
    h["walk_epoch_mean_barrier_height"] = [(2, 0.4)]
    h["walk_epoch_mean_height"] = [(2, 0.3), (3, 0.2)]
    h["grad_cosine"] = [(2, -0.5), (3, -0.9)]
    h["dist_from_init"] = [(0, 0.0), (1, 0.1), (2, 0.15), (3, 0.2)]
    return h


def test_walk_segments_figure_and_table():
    h = _history()
    steps, alphas, losses = walk_segments(h)
    assert list(steps) == [0, 1, 2] and list(alphas) == [0.0, 0.5, 1.0]
    assert losses[1].tolist() == [0.8, 1.2, 0.6]
    fig = walk_figure({"SGD": h, "empty": {}}, floor="segment")
    walk_ax = fig.axes[0]
    x, y = walk_ax.lines[0].get_data()
    assert list(x) == [0, 0.5, 1, 1, 1.5, 2, 2, 2.5, 3] and y[4] == 1.2
    fx, fy = walk_ax.lines[1].get_data()  # valley floor through (t + α*, L*)
    assert list(fx) == [0.5, 2.0, 2.5] and list(fy) == [0.5, 0.6, 0.3]
    # Xing et al.'s floor (the default): segment 1's lowest point is its end, so it has none
    fx, fy = walk_figure(h).axes[0].lines[1].get_data()
    assert list(fx) == [0.5, 2.5] and list(fy) == [0.5, 0.3]
    with pytest.raises(ValueError, match="floor='lowest'"):
        walk_figure(h, floor="lowest")
    assert len(walk_ax.patches) == 1  # one shaded barrier step
    assert "1 barrier(s) in 3 steps" in walk_ax.get_legend().get_title().get_text()
    assert list(fig.axes[2].lines[0].get_ydata()) == [-0.5, -0.9]
    t = walk_epoch_table(h)
    assert t.column("epoch") == [1, 2] and t.column("barriers") == [1, 0]
    assert t.column("mean barrier height") == [0.4, None]
    assert "| 1 | 2 | 1 |" in t.to_markdown() and t.to_csv().count("\n") == 3


def test_walk_epoch_table_shows_an_epoch_logged_twice_once_from_its_complete_row():
    """An epoch cut short by max_steps and completed on resume is logged twice (its steps
    so far at the stop, step 1 here, and all of them at its end): Tables 1-2 count whole
    epochs, so the table shows the epoch once, from its later row."""
    h = _history()
    for k, v in (("walk_epoch", 1.0), ("walk_epoch_steps", 1.0), ("walk_epoch_barriers", 0.0),
                 ("walk_epoch_mean_height", 0.35)):
        h[k].insert(0, (1, v))
    t = walk_epoch_table(h)
    assert t.column("epoch") == [1, 2] and t.column("steps") == [2, 1]
    assert t.column("barriers") == [1, 0] and t.column("mean height above floor") == [0.3, 0.2]


def test_interpolation_and_trajectory_figures():
    curve = InterpolationCurve([-1.0, 0.0, 1.0, 2.0], [2.0, 0.1, 0.2, 3.0],
                               [0.3, 0.9, 0.95, 0.2], [2.1, 0.2, 0.3, 3.2],
                               [0.3, 0.8, 0.9, 0.2], "none")
    fig = interpolation_figure(curve.to_dict(), labels=("GD", "SGD"))
    assert len(fig.axes[0].lines) >= 2 and len(fig.axes[1].lines) == 2
    # one legend for both axes, below them: inside, it hid the accuracy curves of the twin axis
    assert fig.axes[0].get_legend() is None and fig.axes[1].get_legend() is None
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "train loss", "test loss", "train accuracy", "test accuracy"]
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((65, 5)), 0)
    fig = trajectory_figure(increment_spectrum(x), increment_autocorrelation(x),
                            test=periodicity_test(x), title="BM")
    assert "white noise" in fig._suptitle.get_text()
    assert fig._suptitle.get_text().startswith("BM\nFisher g test: ")
    # the autocorrelation at lags 1.. as bars at those lags, ± its std as error bars
    acf = increment_autocorrelation(x)
    a2 = fig.axes[1]
    from matplotlib.container import BarContainer

    # both panels say what they show and in which unit, as the spectrum's does
    assert a2.get_xlabel() == "lag (snapshots)"
    assert a2.get_title() == "increment autocorrelation"
    (bars,) = [c for c in a2.containers if isinstance(c, BarContainer)]
    assert [p.get_x() + p.get_width() / 2 for p in bars.patches] == (
        pytest.approx(list(acf.lags[1:])))
    assert [p.get_height() for p in bars.patches] == pytest.approx(list(acf.mean[1:]))
    tops = [s[1, 1] for s in bars.errorbar.lines[2][0].get_segments()]
    assert tops == pytest.approx(list(acf.mean[1:] + acf.std[1:]))
    # the spectrum's mean with its ± std band, from frequency 1 / n on
    spec = increment_spectrum(x)
    (line,) = fig.axes[0].lines
    assert line.get_ydata() == pytest.approx(list(spec.mean[1:]))
    assert fig.axes[0].collections    # the band
    with pytest.raises(ValueError):
        increment_spectrum(x[:1])


def test_walk_figure_draws_the_cosine_of_the_turn_at_theta_t_at_iteration_t():
    """Xing et al. plot cos(g_{t-1}, g_t) (line 61; θ_{t+1} = θ_t − η g_t, eq. (1)) at
    iteration t, under the loss at θ_t. A full-batch GD run of a logistic regression with the
    dynamics instrument: the cosine the figure draws at x = t is that of the gradients at
    θ_{t-1} and θ_t, recomputed here from the recorded iterates."""
    import torch
    from torch import nn

    from sgdlab.data.base import Dataset
    from sgdlab.operators.params import params_vector
    from sgdlab.testing import flat_loss
    from sgdlab.train.callbacks import Callback, Schedule
    from sgdlab.train.instruments.dynamics import DynamicsCallback
    from sgdlab.train.loop import train

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (16,), generator=g)
    data = Dataset(x, y, x[:4].clone(), y[:4].clone(),
                   {"name": "tiny", "task": "classification", "num_outputs": 2})

    class Iterates(Callback):
        def __init__(self):
            self.thetas = []

        def on_step_begin(self, ctx):
            self.thetas.append(params_vector(ctx.model))   # θ_t before update t

    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    it = Iterates()
    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=5.0),
                epochs=6, batch_size=16, callbacks=[DynamicsCallback(Schedule.every(1)), it],
                progress=False)
    f = flat_loss(model, nn.CrossEntropyLoss(), (x, y))
    grads = [torch.func.grad(f)(th) for th in it.thetas]
    cosines = [float(torch.dot(a, b) / (a.norm() * b.norm())) for a, b in zip(grads, grads[1:])]
    xs, ys = walk_figure(res.history).axes[1].lines[0].get_data()
    assert list(xs) == [1, 2, 3, 4, 5]           # turns at θ_1 … θ_5 (six updates)
    assert ys == pytest.approx(cosines, abs=1e-12)   # cosines[t - 1] = cos(g_{t-1}, g_t)
    # consecutive cosines differ, so a drawing one iteration off would not pass
    assert min(abs(a - b) for a, b in zip(cosines, cosines[1:])) > 1e-3


def test_walk_figure_crops_to_max_steps_but_not_past_the_data():
    h = _history()          # segments 0-2 (to iteration 3), distances to step 3
    fig = walk_figure(h, max_steps=40)
    # a run shorter than max_steps: the axis ends with its data, not empty up to 40
    assert [ax.get_xlim() for ax in fig.axes] == [(0, 3)] * 3
    assert walk_figure(h, max_steps=2).axes[0].get_xlim() == (0, 2)
    # a run recorded at step 0 only: an iteration wide, not the singular limits (0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = walk_figure({"dist_from_init": [(0, 0.0)]}, max_steps=40)
    assert fig.axes[0].get_xlim() == (0, 1)
    # the title says what the rows are, under the caller's (the paper's figure)
    fig = walk_figure(h, title="Xing 2018, Figs. 1-2")
    title = fig.get_suptitle()
    assert title.startswith("Xing 2018, Figs. 1-2\nwalk plot: the loss between consecutive")
    # inside the figure of one run (5 inches wide), broken only at spaces
    fig.canvas.draw()
    assert drawn_inside_width_and_top(fig, fig._suptitle)
    assert title.replace("\n", " ").endswith("gradients, the distance from initialisation")


def test_walk_figure_counts_only_the_steps_before_max_steps_and_ends_at_the_last_turn():
    fig = walk_figure(_history(), max_steps=2)
    # segments 0 and 1 (step 1 crossed a barrier), not segment 2
    assert fig.axes[0].get_legend().get_title().get_text() == "1 barrier(s) in 2 steps"
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "interpolated loss"]
    assert list(line.get_xdata()) == [0.0, 0.5, 1.0, 1.0, 1.5, 2.0]
    plt.close(fig)
    # a cosine logged at step 7 is the turn at iteration 6: the axis ends there
    fig = walk_figure({"grad_cosine": [(2, 0.1), (7, 0.2)]}, max_steps=40)
    assert fig.axes[0].get_xlim() == (0, 6)
    plt.close(fig)


def test_interpolation_figure_draws_train_solid_test_dashed_and_a_at_alpha_0():
    curve = {"alphas": [0.0, 0.5, 1.0], "train_loss": [1.0, 2.0, 0.5],
             "test_loss": [1.5, 2.5, 0.7], "train_acc": [0.9, 0.5, 0.95],
             "test_acc": [float("nan")] * 3, "bn_stats": "none"}
    fig = interpolation_figure(curve, labels=("SGD", "Adam"))
    lines = {ln.get_label(): (ln.get_linestyle(), list(ln.get_ydata()))
             for ax in fig.axes for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    marks = {t.get_text(): t.xy[0] for t in fig.axes[0].texts}
    plt.close(fig)
    # the test accuracy, never measured, is not a curve
    assert lines == {"train loss": ("-", [1.0, 2.0, 0.5]), "test loss": ("--", [1.5, 2.5, 0.7]),
                     "train accuracy": ("-", [0.9, 0.5, 0.95])}
    assert marks == {"SGD": 0.0, "Adam": 1.0}


def test_loss_surface_figure_draws_the_line_and_the_plane_from_the_surface_s_data():
    a = np.array([-1.0, 0.0, 1.0])
    line = {"coords": [a], "train_loss": [2.0, 0.1, 3.0], "test_loss": [2.5, 0.2, 3.5],
            "bn_stats": "fixed"}
    fig = loss_surface_figure(line)
    ax = fig.axes[0]
    train, test = [ln for ln in ax.get_lines() if ln.get_label() in ("train loss", "test loss")]
    np.testing.assert_array_equal(train.get_xydata(), np.column_stack([a, [2.0, 0.1, 3.0]]))
    np.testing.assert_array_equal(test.get_xydata(), np.column_stack([a, [2.5, 0.2, 3.5]]))
    assert (train.get_linestyle(), test.get_linestyle()) == ("-", "--")
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "α along d₁"
    plt.close(fig)
    b = np.array([-2.0, 0.0, 2.0, 4.0])
    loss = 1.0 + np.add.outer(a ** 2, b ** 2)       # (len(a), len(b)), α across
    path = np.array([[0.5, 1.5], [0.0, 0.5], [0.0, 0.0]])
    fig = loss_surface_figure({"coords": [a, b], "train_loss": loss, "test_loss": [],
                               "bn_stats": "fixed"}, path=path)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln.get_xydata() for ln in ax.get_lines()}
    np.testing.assert_array_equal(lines["trajectory"], path)
    np.testing.assert_array_equal(lines["model"], [[0.0, 0.0]])
    (contours,) = [c for c in ax.collections if hasattr(c, "levels")]
    # log-spaced levels from the lowest to the highest loss
    assert contours.levels == pytest.approx(np.geomspace(loss.min(), loss.max(), 25))
    assert ax.get_xlim()[1] >= 1.0 and ax.get_ylim()[1] >= 4.0 - 1e-9
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("α along d₁", "β along d₂")
    plt.close(fig)


def test_trajectory_figure_draws_the_spectrum_s_band_and_the_white_noise_band_from_the_data():
    from types import SimpleNamespace

    spec = SimpleNamespace(freqs=np.array([0.0, 0.1, 0.2, 0.3]),
                           mean=np.array([9.0, 1.0, 2.0, 3.0]),
                           std=np.array([9.0, 0.1, 0.2, 0.3]), num_coords=2, n=8)
    acf = SimpleNamespace(lags=np.array([0, 1, 2]), mean=np.array([1.0, 0.3, -0.2]),
                          std=np.array([0.0, 0.05, 0.1]), band=0.4)
    fig = trajectory_figure(spec, acf)
    a1, a2 = fig.axes
    (line,) = a1.lines
    np.testing.assert_array_equal(line.get_xydata(), [[0.1, 1.0], [0.2, 2.0], [0.3, 3.0]])
    (band,) = a1.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert (ys.min(), ys.max()) == pytest.approx((0.9, 3.3))
    (span,) = [p for p in a2.patches if p.get_label() == "99% white-noise band"]
    ys = span.get_path().transformed(span.get_patch_transform()).vertices[:, 1]
    assert (min(ys), max(ys)) == pytest.approx((-0.4, 0.4))
    plt.close(fig)


def test_a_loss_line_through_a_zero_loss_keeps_it_on_a_linear_axis():
    # the model fits its batch exactly: a log axis dropped the point at α = 0 unseen
    fig = loss_surface_figure({"coords": [np.array([-1.0, 0.0, 1.0])],
                               "train_loss": [0.5, 0.0, 0.4], "test_loss": [],
                               "bn_stats": "fixed"})
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"
    assert ax.get_ylim()[0] <= 0.0
    plt.close(fig)
