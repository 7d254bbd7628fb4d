"""The instrument panels drawn next to a run's learning curves: grouping and selection."""
import matplotlib.pyplot as plt

from sgdlab.report.figures.training import (compare_runs_figure, instrument_panels,
                                           learning_curves, recorded_groups, thinned,
                                           used_rates)


def test_instrument_series_are_grouped_by_prefix_and_loop_series_left_out():
    h = {"train_loss": [(0, 1.0)], "batch_loss": [(1, 1.0)], "epoch": [(1, 1)],
         "train_perplexity": [(0, 2.7)], "test_perplexity": [(0, 2.8)],   # token data's
         "lr": [(0, 0.1), (5, 0.1)],                               # constant: no panel
         "hess/top_1": [(0, 2.0), (5, 3.0)], "hess/trace": [(0, 9.0)],
         "walk_loss_k03": [(0, 1.0)], "walk_height": [(0, 0.1)], "walk_seconds": [(0, 2.0)],
         "grad_cosine": [(1, 0.5)], "batch/batch_size": [(0, 32)], "batch/norm_test": [(0, 1)],
         "empty/series": []}
    groups = recorded_groups(h)
    assert groups == {"batch": ["batch/norm_test"], "dynamics": ["grad_cosine"],
                      "hess": ["hess/top_1", "hess/trace"], "walk": ["walk_height"]}
    assert "learning rate" in recorded_groups({**h, "lr": [(0, 0.1), (5, 0.05)]})
    fig = instrument_panels(h, title="t")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["batch", "dynamics", "hess", "walk"]
    plt.close(fig)
    assert instrument_panels({"train_loss": [(0, 1.0)]}) is None


def test_a_panel_shows_its_headline_series_and_counts_the_rest():
    h = {f"batch/{n}": [(0, 1.0), (5, 0.5)] for n in (
        "cabs_batch_size", "eb_criterion", "grad_sq", "inner_product_test", "loss",
        "mean_gsnr", "norm_test", "orthogonality_test")}
    fig = instrument_panels(h)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == [
        "batch/inner_product_test", "batch/norm_test", "batch/orthogonality_test"]
    assert ax.get_title() == "batch (+5 more)"
    plt.close(fig)


def test_the_entropy_angle_panel_shows_the_angle_not_the_norms_and_cosine_beside_it():
    h = {f"entropy_angle/{n}": [(0, v), (5, v)] for n, v in (
        ("cosine", 0.5), ("degrees", 60.0), ("grad_norm", 3.0), ("sgd_grad_norm", 2.0))}
    fig = instrument_panels(h)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["entropy_angle/degrees"]
    assert ax.get_title() == "entropy_angle (+3 more)"
    plt.close(fig)


def test_long_series_are_thinned_keeping_both_ends():
    pts = [(i, float(i % 7)) for i in range(10_001)]
    s, v = thinned(pts)
    assert len(s) <= 2001 and s[0] == 0 and s[-1] == 10_000 and v[-1] == 10_000 % 7
    assert len(thinned(pts[:50])[0]) == 50                     # short series untouched
    fig = instrument_panels({"hess/top_1": pts})
    (line,) = fig.axes[0].get_lines()
    assert len(line.get_xdata()) <= 2001
    plt.close(fig)


def test_a_standard_error_is_a_band_around_its_estimate_not_a_curve():
    h = {"hess/trace": [(0, 10.0), (8, 12.0), (16, 11.0)], "hess/trace_se": [(0, 1.0), (8, 2.0)],
         "hess/top_1": [(0, 3.0), (8, 4.0)], "lonely_se": [(0, 1.0)]}
    assert recorded_groups(h) == {"dynamics": ["lonely_se"],
                                  "hess": ["hess/top_1", "hess/trace"]}
    fig = instrument_panels(h)
    ax = next(a for a in fig.axes if a.get_title() == "hess")
    assert [ln.get_label() for ln in ax.get_lines()] == ["hess/top_1", "hess/trace"]
    (band,) = ax.collections
    (path,) = band.get_paths()
    ys = path.vertices[:, 1]
    assert min(ys) == 9.0 and max(ys) == 14.0          # trace ± its s.e.
    assert max(path.vertices[:, 0]) == 8.0             # none at a step without an s.e.
    plt.close(fig)


def test_a_learning_rate_sampled_per_epoch_is_drawn_as_steps_not_ramps():
    h = {"lr": [(10, 0.1), (20, 0.05), (30, 0.0)], "hess/top_1": [(10, 1.0), (30, 2.0)]}
    fig = instrument_panels(h)
    styles = {ln.get_label(): ln.get_drawstyle() for ax in fig.axes for ln in ax.get_lines()}
    assert styles == {"lr": "steps-post", "hess/top_1": "default"}
    plt.close(fig)
    fig = compare_runs_figure({"a": h, "b": h}, ["lr", "hess/top_1"])
    lr_ax, hess_ax = fig.axes[:2]
    assert {ln.get_drawstyle() for ln in lr_ax.get_lines()} == {"steps-post"}
    assert {ln.get_drawstyle() for ln in hess_ax.get_lines()} == {"default"}
    plt.close(fig)


def test_compared_runs_keep_their_colour_in_a_panel_only_some_recorded():
    full = {"train_loss": [(0, 1.0), (5, 0.5)], "grad_cosine": [(0, 0.1), (5, 0.2)]}
    fig = compare_runs_figure({"a": {"train_loss": full["train_loss"]}, "b": full},
                              ["train_loss", "grad_cosine"])
    loss_ax, cos_ax = fig.axes[:2]
    colours = {ln.get_label(): ln.get_color() for ln in loss_ax.get_lines()}
    assert colours["a"] != colours["b"]
    assert [(ln.get_label(), ln.get_color()) for ln in cos_ax.get_lines()] == [
        ("b", colours["b"])]   # only b recorded it: drawn in b's colour, not a's
    legend = {t.get_text(): h.get_color()
              for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert legend == colours
    plt.close(fig)


def test_compared_runs_label_each_panel_with_its_metric_and_the_unit_its_name_gives():
    h = {"train_loss": [(0, 1.0), (5, 0.5)], "test_acc": [(5, 0.5)],
         "entropy_angle/degrees": [(5, 30.0)], "hess/top_1": [(5, 2.0)]}
    fig = compare_runs_figure({"a": h, "b": h}, list(h))
    assert [ax.get_ylabel() for ax in fig.axes[:4]] == [
        "train loss", "test accuracy", "entropy_angle (degrees)", r"Hessian $\lambda_{max}$"]
    assert {ax.get_xlabel() for ax in fig.axes[:4]} == {"step"}
    plt.close(fig)


def test_a_compared_run_that_diverged_ends_in_a_cross_and_is_named_once():
    nan = float("nan")
    fig = compare_runs_figure({"a": {"train_loss": [(0, 1.0), (5, 0.5), (10, nan)]},
                               "b": {"train_loss": [(0, 1.0), (5, 0.4), (10, 0.3)]},
                               "c": {"train_loss": [(0, nan), (5, nan)]}}, ["train_loss"])
    ax = fig.axes[0]
    (cross,) = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    (a,) = [ln for ln in ax.get_lines() if ln.get_label() == "a"]
    assert list(cross.get_xdata()) == [5.0] and cross.get_color() == a.get_color()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b", "c"]
    plt.close(fig)

def test_learning_curves_show_a_lone_point():
    # a run that diverged after its first evaluation: one point per series, and a series
    # whose only finite value sits between non-finite ones
    h = {"train_loss": [(0, 2.3)], "test_acc": [(0, 0.1)],
         "test_loss": [(0, float("nan")), (5, 2.2), (10, float("inf"))],
         "train_acc": [(0, 0.1), (5, 0.2)]}
    fig = learning_curves(h)
    markers = {ln.get_label(): ln.get_marker() for ax in fig.axes for ln in ax.get_lines()}
    assert markers["train loss"] == markers["test accuracy"] == markers["test loss"] == "o"
    assert markers["train accuracy"] in ("None", "", None)     # a line shows it: no markers
    plt.close(fig)


def test_learning_curves_name_the_series_in_words_as_the_catalogue_figures_do():
    h = {n: [(0, 1.0), (5, 0.5)] for n in ("batch_loss", "train_loss", "test_loss",
                                           "train_acc", "test_acc")}
    fig = learning_curves(h)
    loss_ax, acc_ax = fig.axes
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == [
        "mini-batch loss", "train loss", "test loss"]
    assert [t.get_text() for t in acc_ax.get_legend().get_texts()] == [
        "train accuracy", "test accuracy"]
    plt.close(fig)


def test_compared_runs_show_a_lone_point_of_a_long_series():
    # 60 records (drawn without markers), of which one finite between non-finite ones
    lone = [(i, 0.5 if i == 30 else float("nan")) for i in range(60)]
    line = [(i, 1.0 / (i + 1)) for i in range(60)]
    fig = compare_runs_figure({"a": {"m": lone}, "b": {"m": line}}, ["m"])
    markers = {ln.get_label(): ln.get_marker() for ln in fig.axes[0].get_lines()}
    assert markers["a"] == "o" and markers["b"] in ("None", "", None)
    plt.close(fig)


def test_series_measured_at_log_spaced_steps_get_a_log_step_axis_that_keeps_step_0():
    # an instrument's log_points (1, 2, 5, ..., 10000) were drawn on a linear step axis, their
    # first nine points crowded at step 0 in `sgdlab runs compare --plot` and instruments.png
    from sgdlab.train.callbacks import Schedule

    sched = Schedule.log_spaced(12, 10_000)
    log_steps = [s for s in range(10_001) if sched(s)]
    even = list(range(0, 10_001, 1000))
    h = {"train_loss": [(s, 1.0 / (1 + s)) for s in even],
         "align/cos_1": [(s, 0.5) for s in log_steps]}
    fig = compare_runs_figure({"a": h, "b": h}, ["train_loss", "align/cos_1"])
    loss_ax, cos_ax = fig.axes[:2]
    assert (loss_ax.get_xscale(), cos_ax.get_xscale()) == ("linear", "symlog")
    assert cos_ax.get_xlim()[0] == 0
    plt.close(fig)
    fig = instrument_panels(h)
    assert fig.axes[0].get_title() == "align" and fig.axes[0].get_xscale() == "symlog"
    plt.close(fig)
    fig = learning_curves(h)
    assert {ax.get_xscale() for ax in fig.axes} == {"linear"}
    plt.close(fig)


def test_a_short_and_a_long_run_at_even_steps_keep_a_linear_step_axis():
    # pooled, steps 1..50 and 100..2000 looked log-spaced (most below a tenth of the last)
    short = {"train_loss": [(s, 1.0) for s in range(51)]}
    long = {"train_loss": [(s, 1.0) for s in range(0, 2001, 100)]}
    fig = compare_runs_figure({"short": short, "long": long}, ["train_loss"])
    assert fig.axes[0].get_xscale() == "linear"
    plt.close(fig)
    fig = learning_curves({"train_loss": short["train_loss"], "test_loss": long["train_loss"]})
    assert fig.axes[0].get_xscale() == "linear"
    plt.close(fig)


def test_sharpness_series_of_other_scales_get_panels_of_their_own():
    # the local entropy (about minus the loss) and Keskar's ε-sharpness shared the expected
    # sharpness' panel and flattened it (1e-3) to a line at 0
    h = {"sharpness/expected": [(0, 1e-3), (5, 2e-3)], "sharpness/expected_se": [(0, 1e-4),
                                                                                 (5, 1e-4)],
         "sharpness/local_entropy": [(0, -1.1), (5, -0.4)], "sharpness/epsilon": [(0, 1.2)]}
    assert recorded_groups(h) == {"sharpness: Keskar ε": ["sharpness/epsilon"],
                                  "sharpness": ["sharpness/expected"],
                                  "local entropy −f_γ": ["sharpness/local_entropy"]}
    fig = instrument_panels(h)
    ax = next(a for a in fig.axes if a.get_title() == "sharpness")
    assert ax.get_ylim()[1] < 0.01
    plt.close(fig)


def test_the_learning_rate_is_drawn_as_the_steps_used_it_not_the_rate_after_the_end():
    """The loop samples the rate after each epoch's schedule step: the last sample, at the
    run's last step, is the rate of an epoch after the end (a cosine-cyclic schedule's 0),
    drawn as a drop to 0. The plot holds the last used rate to the end instead; a run stopped
    inside an epoch (max_steps) has its rate held to its last step."""
    h = {"lr": [(0, 0.1), (5, 0.085), (10, 0.05), (15, 0.015), (20, 0.0)],
         "epoch": [(5, 1.0), (10, 2.0), (15, 3.0), (20, 4.0)],
         "hess/top_1": [(0, 1.0), (20, 2.0)]}
    assert used_rates(h)["lr"] == [(0, 0.1), (5, 0.085), (10, 0.05), (15, 0.015), (20, 0.015)]
    assert used_rates(h)["epoch"] is h["epoch"] and h["lr"][-1] == (20, 0.0)   # (not changed)
    stopped = {"lr": [(0, 0.1), (5, 0.05)], "train_loss": [(0, 1.0), (7, 0.5)]}
    assert used_rates(stopped)["lr"] == [(0, 0.1), (5, 0.05), (7, 0.05)]
    # a lone sample (no step taken) stays; a history of the rate alone ends at its last
    # sample, as `runs compare` reads a run without a summary (sgdlab.report.rates)
    assert used_rates({"lr": [(0, 0.1)], "epoch": [(0, 0.0)]})["lr"] == [(0, 0.1)]
    assert used_rates({"lr": h["lr"]})["lr"] == used_rates(h)["lr"]
    fig = instrument_panels(h)
    (line,) = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == "lr"]
    assert list(line.get_ydata()) == [0.1, 0.085, 0.05, 0.015, 0.015]
    plt.close(fig)
    fig = compare_runs_figure({"a": h}, ["lr"])
    assert min(fig.axes[0].get_lines()[0].get_ydata()) == 0.015
    plt.close(fig)
    # a schedule whose only change is after the end has no panel (a constant rate)
    assert "learning rate" not in recorded_groups(used_rates(
        {"lr": [(0, 0.1), (5, 0.1), (10, 0.01)], "epoch": [(5, 1.0), (10, 2.0)]}))


def test_each_instrument_panel_labels_its_y_axis_with_what_its_series_measure():
    h = {"sharpness/expected": [(0, 0.02), (5, 0.01)], "hess/top_1": [(0, 2.0), (5, 3.0)],
         "hess/top_2": [(0, 1.0), (5, 1.5)], "hess/trace": [(0, 9.0), (5, 8.0)],
         "lr": [(0, 0.1), (3, 0.05)], "walk_height": [(0, 0.1), (5, 0.2)]}
    fig = instrument_panels(h)
    labels = {ax.get_title(): ax.get_ylabel().replace("\n", " ") for ax in fig.axes
              if ax.get_visible()}
    assert labels == {
        "sharpness": "expected sharpness E[L(θ+ν)] − L(θ)",
        "hess": r"Hessian $\lambda_{max}$, Hessian $\lambda_{2}$, Hessian trace Tr H",
        "learning rate": "learning rate", "walk": "walk_height"}
    fig.canvas.draw()                   # mathtext that parses
    plt.close(fig)


def test_each_curvature_history_panel_labels_its_y_axis_with_what_its_series_measure():
    from sgdlab.report.figures.curvature import curvature_history_figure

    h = {"hess/top_1": [(0, 2.0), (5, 3.0)], "hess/trace": [(0, 9.0), (5, 8.0)],
         "noise/trace": [(0, 1.0), (5, 0.5)], "noise/rank": [(0, 3.0), (5, 3.0)],
         "align/residual": [(0, 0.4), (5, 0.3)]}
    fig = curvature_history_figure(h)
    assert [ax.get_ylabel().replace("\n", " ") for ax in fig.axes] == [
        r"Hessian $\lambda_{max}$, Hessian trace Tr H", "noise trace Tr Σ, noise rank",
        "Σ–H alignment residual"]
    fig.canvas.draw()
    plt.close(fig)
    # a GGN measured beside the Hessian (the hessian instrument's operator: ggn) is drawn
    # in the curvature panel as the GGN's, not as a Hessian's
    fig = curvature_history_figure({"hess/top_1": h["hess/top_1"],
                                    "ggn/top_1": [(0, 1.0), (5, 2.0)],
                                    "ggn/trace": [(0, 7.0), (5, 6.0)]})
    assert fig.axes[0].get_ylabel().replace("\n", " ") == (
        r"Hessian $\lambda_{max}$, GGN $\lambda_{max}$, GGN trace Tr G")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "hess/top_1", "ggn/top_1", "ggn/trace"]
    fig.canvas.draw()
    plt.close(fig)


def test_a_panel_of_many_ranked_eigenvalues_shows_the_top_ranks_not_the_first_names():
    from sgdlab.report.figures.training import headline_series

    # a hessian instrument of k = 12: by name, top_1, top_10, top_11, ... (top_2 unseen)
    names = sorted(f"hess/top_{i}" for i in range(1, 13))
    assert headline_series("hess", names) == [f"hess/top_{i}" for i in range(1, 7)]
    h = {n: [(0, 1.0), (5, 0.5)] for n in names}
    fig = instrument_panels(h)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        f"hess/top_{i}" for i in range(1, 7)]
    assert ax.get_ylabel().replace("\n", " ") == r"Hessian $\lambda_{i}$ (i = 1 … 6)"
    assert ax.get_title() == "hess (+6 more)"
    plt.close(fig)


def test_the_curvature_history_draws_the_alignment_cosines_in_rank_order():
    from sgdlab.report.figures.curvature import curvature_history_figure

    h = {f"align/cos_{i}": [(0, 0.5), (5, 0.4)] for i in range(1, 13)}
    fig = curvature_history_figure(h)
    # by name, cos_10 came second
    assert [t.get_text() for t in fig.axes[2].get_legend().get_texts()] == [
        f"align/cos_{i}" for i in range(1, 13)]
    assert fig.axes[2].get_ylabel().replace("\n", " ") == (
        r"$|\cos(u_{i}(H), v_{i}(\Sigma))|$ (i = 1 … 12)")
    fig.canvas.draw()
    plt.close(fig)


def test_thinned_keeps_every_k_th_point_and_the_last_within_max_points():
    pts = [(s, float(s * s)) for s in range(25)]
    steps, vals = thinned(pts, max_points=10)    # k = ceil(25 / 10) = 3: 0, 3, ..., 24
    assert list(steps) == list(range(0, 25, 3)) and list(vals) == [s * s for s in steps]
    steps, _ = thinned(pts[:24], max_points=10)  # 23 is not a multiple of 3: kept at the end
    assert list(steps) == [*range(0, 24, 3), 23]
    assert list(thinned(pts, max_points=25)[0]) == list(range(25))


def test_learning_curves_draw_train_solid_and_test_dashed():
    h = {"batch_loss": [(0, 3.0), (1, 2.0)], "train_loss": [(0, 2.0), (1, 1.0)],
         "test_loss": [(0, 2.5), (1, 1.5)], "train_acc": [(0, 0.5), (1, 0.6)],
         "test_acc": [(0, 0.4), (1, 0.55)]}
    fig = learning_curves(h)
    styles = {ln.get_label(): (ln.get_linestyle(), list(ln.get_ydata()))
              for ax in fig.axes for ln in ax.get_lines()}
    plt.close(fig)
    assert styles["train loss"] == ("-", [2.0, 1.0]) and styles["test loss"] == ("--", [2.5, 1.5])
    assert styles["train accuracy"] == ("-", [0.5, 0.6])
    assert styles["test accuracy"] == ("--", [0.4, 0.55])


def test_compare_runs_figure_draws_a_loss_on_a_log_axis_even_within_a_decade():
    h = {"train_loss": [(0, 2.0), (5, 1.0)], "test_acc": [(0, 0.5), (5, 0.9)]}
    fig = compare_runs_figure({"a": h}, ["train_loss", "test_acc"])
    scales = [ax.get_yscale() for ax in fig.axes if ax.get_visible()]
    plt.close(fig)
    assert scales == ["log", "linear"]


def test_the_curvature_history_draws_each_series_against_its_steps_in_its_panel():
    from sgdlab.report.figures.curvature import curvature_history_figure

    h = {"hess/top_10": [(0, 2.0), (5, 1.5)], "hess/top_2": [(0, 4.0), (5, 3.0)],
         "noise/trace": [(0, 1.0), (5, 0.5)], "noise/top_1": [(0, 0.3), (5, 0.2)],
         "align/cos_1": [(0, 0.9), (5, 0.8)], "align/residual": [(0, 0.4), (5, 0.3)]}
    fig = curvature_history_figure(h)
    # ranks in order: by characters, top_10 came before top_2
    for ax, names, scale in zip(fig.axes, (["hess/top_2", "hess/top_10"],
                                           ["noise/trace", "noise/top_1"],
                                           ["align/cos_1", "align/residual"]),
                                ("log", "log", "linear"), strict=True):
        lines = {ln.get_label(): ln.get_xydata() for ln in ax.get_lines()
                 if not ln.get_label().startswith("_")}
        assert list(lines) == names
        for n in names:
            assert lines[n].tolist() == [list(p) for p in h[n]]
        assert ax.get_yscale() == scale and ax.get_xlabel() == "step"
    plt.close(fig)


def test_the_scalars_of_sgdlab_measure_are_grouped_by_their_instrument():
    # every measure/... name was one group "measure" (of no headline), so `runs compare`
    # showed the first six alignment rows and no Hessian, noise or sharpness value
    from sgdlab.report.figures.training import headline_series

    h = {f"measure/{n}": [(24, 1.0)] for n in (
        "align/cos_1", "align/cos_2", "align/cos_3", "align/cos_4", "align/residual",
        "align/hess_norm_eig_1", "hess/top_1", "hess/trace", "noise/trace", "noise/top_1",
        "noise/rank", "sharpness/expected", "sharpness/expected_se")}
    groups = recorded_groups(h)
    assert sorted(groups) == ["measure/align", "measure/hess", "measure/noise",
                              "measure/sharpness"]
    assert groups["measure/sharpness"] == ["measure/sharpness/expected"]
    # the headlines of the instrument's own series
    assert headline_series("measure/noise", groups["measure/noise"]) == [
        "measure/noise/top_1", "measure/noise/trace"]
    assert headline_series("measure/align", groups["measure/align"]) == [
        "measure/align/cos_1", "measure/align/cos_2", "measure/align/cos_3",
        "measure/align/residual"]


def test_the_test_split_s_measurements_are_grouped_apart_by_their_instrument():
    from sgdlab.report.figures.training import headline_series

    h = {f"measure/{split}{n}": [(24, 1.0)] for split in ("", "test/") for n in (
        "align/cos_1", "align/cos_2", "align/cos_3", "align/cos_4", "align/residual",
        "hess/top_1", "hess/trace", "noise/top_1", "noise/rank", "noise/trace")}
    groups = recorded_groups(h)
    assert sorted(groups) == ["measure/align", "measure/hess", "measure/noise",
                              "measure/test/align", "measure/test/hess", "measure/test/noise"]
    assert groups["measure/test/hess"] == ["measure/test/hess/top_1", "measure/test/hess/trace"]
    # the instrument's headlines, as of the train split
    assert headline_series("measure/test/noise", groups["measure/test/noise"]) == [
        "measure/test/noise/top_1", "measure/test/noise/trace"]


# seven instruments: on both splits, 14 groups of series for MAX_PANELS = 12 panels
INSTRUMENTS = ("align", "batch", "fisher", "ggn", "hess", "noise", "sharpness")


def test_each_instrument_s_test_split_group_follows_its_train_split_s_before_the_cut():
    """Seven instruments measured on both splits make 14 groups: in name order the cut at
    MAX_PANELS = 12 left out two of the test split's while every train split's showed."""
    from sgdlab.report.figures.training import MAX_PANELS

    h = {f"measure/{split}{i}/trace": [(9, 1.0)] for split in ("", "test/")
         for i in INSTRUMENTS}
    h["dist_from_init"] = [(0, 0.0), (9, 1.0)]
    both = ["dynamics", *(f"measure/{split}{i}" for i in INSTRUMENTS for split in ("", "test/"))]
    # all of them, in panel order: the panels and `runs compare` draw the first MAX_PANELS
    # and name those beyond the cut
    assert list(recorded_groups(h)) == both and len(both) > MAX_PANELS


def test_a_hessian_panel_shows_its_trace_and_frobenius_norm_and_fills_up_with_the_rest():
    from sgdlab.report.figures.training import headline_series

    # by name alone bottom_1, frobenius, top_1 ... top_4: the trace left out
    names = [f"hess/{n}" for n in ("bottom_1", "frobenius", "top_1", "top_2", "top_3",
                                   "top_4", "top_5", "trace")]
    assert headline_series("hess", names) == [
        "hess/bottom_1", "hess/frobenius", "hess/top_1", "hess/top_2", "hess/top_3",
        "hess/trace"]
    assert headline_series("measure/hess", [f"measure/{n}" for n in names])[-1] == (
        "measure/hess/trace")
    # fewer headlines recorded: the rest fill the panel (top_4, top_5 not dropped)
    assert headline_series("hess", names[2:7]) == names[2:7]


def test_the_instrument_panels_name_the_groups_past_max_panels_they_leave_out():
    """14 groups for 12 panels: the figure names the two it cuts, in the words of `sgdlab runs
    compare` (the test split's noise and sharpness were cut without a word)."""
    from sgdlab.report.figures.training import MAX_PANELS

    h = {f"measure/{split}{i}/trace": [(0, 1.0), (9, 2.0)] for split in ("", "test/")
         for i in INSTRUMENTS}
    fig = instrument_panels(h)
    assert sum(ax.get_visible() for ax in fig.axes) == MAX_PANELS
    note = fig.get_supxlabel().replace("\n", " ")
    assert note.startswith("2 more groups of series, left out of the panels (at most 12): "
                           "measure/sharpness, measure/test/sharpness; sgdlab runs show RUN ")
    plt.close(fig)
    del h["measure/test/sharpness/trace"]
    fig = instrument_panels(h)
    assert fig.get_supxlabel().startswith("1 more group of series, left out of the panels "
                                          "(at most 12): measure/sharpness;")
    plt.close(fig)
    del h["measure/sharpness/trace"]
    fig = instrument_panels(h)
    assert fig.get_supxlabel() == ""           # nothing cut, nothing said
    plt.close(fig)
