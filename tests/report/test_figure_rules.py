"""Rules every figure follows: where a log axis goes, how its ticks read, what a spectrum on a
log axis does with exact zeros, how a curve or bar without a finite value shows, that a long
title stays inside the figure, and how list cells of a table are rounded."""
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from sgdlab.report.figures.charts import curves
from sgdlab.report.figures.curvature import eigenspectrum_figure, signed_log_histogram_figure
from sgdlab.report.figures.training import learning_curves
from sgdlab.report.tables import Table
from sgdlab.testing import drawn_inside_width_and_top


def _tick_texts(ax, axis="y"):
    """The non-empty tick labels inside the view."""
    ax.figure.canvas.draw()
    a = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = sorted(a.get_view_interval())
    ticks = a.get_major_ticks() + a.get_minor_ticks()
    return [t.label1.get_text() for t in ticks
            if lo <= t.get_loc() <= hi and t.label1.get_text()]


def test_log_axis_only_when_every_finite_value_is_positive():
    fig = curves({"a": ([1, 2, 3], [1.0, 0.0, 1e-3], None)}, xlabel="x", ylabel="y", logy=True,
                 logx=True)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"          # the 0 would vanish from a log axis
    assert ax.get_xscale() == "log"
    plt.close(fig)
    fig = curves({"a": ([0, 1, 2], [1.0, np.nan, 1e-3], None)}, xlabel="x", ylabel="y",
                 logy=True, logx=True)
    assert fig.axes[0].get_yscale() == "log"    # NaN is not data a log axis hides
    assert fig.axes[0].get_xscale() == "linear"  # step 0
    plt.close(fig)
    fig = learning_curves({"train_loss": [(0, 2.0), (1, 0.0)], "test_loss": [(0, 2.0)]})
    assert fig.axes[0].get_yscale() == "linear"
    plt.close(fig)


def test_a_log_axis_over_less_than_a_decade_reads_plain_numbers():
    fig = curves({"a": ([0, 1, 2], [2.3041, 2.3037, 2.3034], None)}, xlabel="x",
                 ylabel="loss", logy=True)
    ax = fig.axes[0]
    labels = _tick_texts(ax)
    assert ax.get_yscale() == "log" and 2 <= len(labels) <= 6 and "2.3036" in labels, labels
    assert not any("times" in t or "^" in t for t in labels), labels
    plt.close(fig)
    # many ticks over a decade in view: labels only at 1, 2, 5 times a power of ten
    fig = curves({"a": ([0, 1, 2], [2.3, 0.9, 0.25], None)}, xlabel="x", ylabel="loss",
                 logy=True)
    assert _tick_texts(fig.axes[0]) == ["1", "0.5", "2"]
    plt.close(fig)
    # under a decade, 2 to 9.5 (chaudhari-sgld's loss): the top of the axis labelled too
    fig = curves({"a": ([0, 1, 2], [2.0, 3.5, 9.5], None)}, xlabel="x", ylabel="loss",
                 logy=True)
    assert sorted(map(float, _tick_texts(fig.axes[0]))) == [2, 3, 5, 7, 10]
    plt.close(fig)
    fig = curves({"a": ([0, 1, 2], [10.0, 1.0, 0.01], None)}, xlabel="x", ylabel="y",
                 logy=True)
    assert any("10^{-1}" in t for t in _tick_texts(fig.axes[0]))   # decades keep powers
    plt.close(fig)


def test_a_log_axis_over_a_few_millionths_gives_each_tick_its_own_label():
    """musso-protocols-model2's smoke loss, 2.308497 to 2.308501: six digits read 2.3085 at
    every tick, and seven or more (2.30849525) are hard to tell apart: each label is the
    tick's difference from an offset the axis states once."""
    for lo, hi in [(2.3084965, 2.3085010), (2.30849525, 2.30849535)]:
        fig = curves({"a": ([0, 1], [hi, lo], None)}, xlabel="x", ylabel="loss", logy=True)
        ax = fig.axes[0]
        labels = _tick_texts(ax)
        assert ax.get_yscale() == "log" and len(labels) >= 2, labels
        assert len(set(labels)) == len(labels), labels
        digits = [len(re.sub(r"\D", "", t)) for t in labels]
        assert max(digits) <= 3, labels
        offset = ax.yaxis.offsetText.get_text()
        assert re.search(r"10\^\{.*\}.*\+2\.308", offset), offset
        # the labels read back as the ticks: offset + label × 10^k
        k = int(re.search(r"10\^\{(.*?)\}", offset).group(1).replace("\u2212", "-"))
        base = float(re.search(r"\+([0-9.]+)", offset).group(1))
        view = sorted(ax.get_ylim())
        ticks = [t.get_loc() for t in ax.yaxis.get_minor_ticks()
                 if t.label1.get_text() and view[0] <= t.get_loc() <= view[1]]
        values = [base + float(re.sub(r"[^0-9.\u2212-]", "", t).replace("\u2212", "-"))
                  * 10.0 ** k for t in labels]
        assert values == pytest.approx(sorted(ticks), rel=0, abs=1e-12)
        plt.close(fig)
    # a few thousandths need no offset: plain labels, none on the axis
    fig = curves({"a": ([0, 1], [2.3041, 2.3034], None)}, xlabel="x", ylabel="loss",
                 logy=True)
    assert "2.3036" in _tick_texts(fig.axes[0])
    assert fig.axes[0].yaxis.offsetText.get_text() == ""
    plt.close(fig)


def test_spectrum_leaves_exact_zeros_out_of_the_log_axis_and_counts_them():
    fig = eigenspectrum_figure({"H": [2.0, 0.5, -0.1, 0.0, 0.0]})
    ax = fig.axes[0]
    ys = np.concatenate([ln.get_ydata() for ln in ax.get_lines()])
    assert sorted(ys) == [0.1, 0.5, 2.0]
    assert ax.get_ylim()[0] > 1e-3
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["H (2 exact zeros not shown)", "H (negative, |λ|)"]
    plt.close(fig)


def test_a_spectrum_of_known_dtype_marks_its_round_off_and_cuts_the_axis_below_it():
    import torch

    v = [1.0, 0.5, 1e-3, 1e-20, -1e-30, 1e-40]
    level = 1.0 * 6 * np.finfo(np.float32).eps         # numpy's rank threshold λ_max·d·eps
    fig = eigenspectrum_figure({"H": v}, dtype="float32")
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("round-off")]
    assert line.get_label() == "round-off (float32)" and line.get_linestyle() == ":"
    assert list(line.get_ydata()) == pytest.approx([level, level])
    assert ax.get_ylim()[0] == pytest.approx(1e-2 * level)     # not down to 1e-40
    assert "round-off (float32)" in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)
    # several spectra, the dtype of one known, a top-k of a d = 1000 matrix
    fig = eigenspectrum_figure({"Σ": v, "H (top-k)": [2.0, 1.0]}, dtype={"H (top-k)":
                               torch.float64}, dims={"H (top-k)": 1000})
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("round-off")]
    assert line.get_label() == "round-off (H (top-k), float64)"
    # 4.4e-13 lies below approx's default abs 1e-12: relative only
    assert line.get_ydata()[0] == pytest.approx(2.0 * 1000 * np.finfo(np.float64).eps, rel=1e-6,
                                                abs=0)
    assert fig.axes[0].get_ylim()[0] < 1e-39            # Σ's dtype unknown: all of it shown
    plt.close(fig)
    fig = eigenspectrum_figure({"H": v})                       # dtype unknown: no line, no cut
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("round")]
    assert fig.axes[0].get_ylim()[0] < 1e-39
    plt.close(fig)


def test_the_spectrum_legend_lies_below_the_axes_and_hides_no_point():
    """chaudhari-hessian-spectrum's six entries: inside the axes the legend covered the small
    eigenvalues of the spectra running from the top left to the bottom right."""
    names = ["small-mnistfc", "char-lstm", "allcnn (Fisher diagonal, adam-moments)"]
    v = -np.geomspace(1.0, 1e-30, 600) * np.where(np.arange(600) % 7, -1, 1)
    fig = eigenspectrum_figure({n: v for n in names}, title="Hessian eigenvalues")
    fig.canvas.draw()
    assert fig.axes[0].get_legend() is None and len(fig.legends[0].get_texts()) == 6
    legend = fig.legends[0].get_window_extent(fig.canvas.get_renderer())
    axes = fig.axes[0].get_tightbbox(fig.canvas.get_renderer())
    assert legend.y1 <= axes.y0 and 0 <= legend.y0     # under the axis labels, in the figure
    plt.close(fig)


def test_two_equal_spectra_are_drawn_distinguishably():
    """A Lanczos top-k beside the exact spectrum it matches, drawn in one marker: the later
    hid the earlier, whose legend entry named no visible point (the curves' rule)."""
    v = np.geomspace(10.0, 1e-3, 30)
    fig = eigenspectrum_figure({"exact": v, "Lanczos": v, "other": v[::-1] * 2})
    looks = [(ln.get_linestyle(), ln.get_marker()) for ln in fig.axes[0].get_lines()]
    handles = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(),
                                                fig.legends[0].legend_handles)}
    plt.close(fig)
    assert looks[0] == looks[2] == ("None", ".") and looks[1] != looks[0]
    assert (handles["Lanczos"].get_linestyle(), handles["Lanczos"].get_marker()) == looks[1]


def test_a_spectrum_titled_at_length_keeps_its_title_inside_the_figure():
    # the title chaudhari-hessian-spectrum gives it, at every scale
    title = ("Chaudhari 2018, Figs. 3.1, 3.4: Hessian eigenvalues (and Fisher diagonals) at "
             "the end of training")
    fig = eigenspectrum_figure({"H": [2.0, 0.5, -0.1]}, title=title)
    fig.canvas.draw()
    assert drawn_inside_width_and_top(fig, fig.axes[0].title)
    assert fig.axes[0].get_title().replace("\n", " ") == title
    plt.close(fig)


def test_a_spectrum_of_millions_draws_a_few_hundred_points_of_each_sign():
    """All-CNN-C's Fisher diagonal has 1.7M entries: drawn whole, the SVG was 177 MB. Each
    sign keeps its first and last rank and at most max_points between, spread in log rank and
    in log |λ|, so a drop over the last 1% of the ranks is still drawn."""
    v = np.linspace(2.0, 1.0, 1_000_000)
    v[-10_000:] *= np.geomspace(1.0, 1e-12, 10_000)     # the last 1%: 12 decades down
    v[::1000] *= -1                                     # 1,000 negative entries
    fig = eigenspectrum_figure({"F": v}, max_points=200)
    pos, neg = fig.axes[0].get_lines()
    for line in (pos, neg):
        assert len(line.get_xdata()) <= 200 and np.all(np.diff(line.get_xdata()) > 0)
    assert (pos.get_xdata()[[0, -1]] == [2, 1_000_000]).all()      # each sign's ends
    assert (neg.get_xdata()[[0, -1]] == [1, 999_001]).all()
    assert np.sum(pos.get_ydata() < 1e-3) > 50          # the drop, not a few dots
    plt.close(fig)


def test_signed_histogram_clips_the_peak_at_zero_and_splits_the_signs():
    import pytest

    # 7 values: 3 with |λ| ≤ 1e-5 (clipped, counted in the legend), one negative, 3 positive
    fig = signed_log_histogram_figure({"F": [0.0, 1e-7, -1e-7, 1e-3, 2e-3, -5e-4, 0.1]},
                                      clip=1e-5)
    neg, pos = fig.axes
    assert sum(p.get_height() for p in neg.patches) == 1
    assert sum(p.get_height() for p in pos.patches) == 3
    assert neg.get_xscale() == pos.get_xscale() == neg.get_yscale() == "log"
    assert neg.get_xlim() == pytest.approx(pos.get_xlim()[::-1])    # mirrored about the origin
    assert pos.get_xlim()[0] == pytest.approx(1e-5)
    (text,) = [t.get_text() for t in fig.legends[0].get_texts()]
    assert text == "F (42.9% with |λ| ≤ 1e-05, clipped)"
    plt.close(fig)
    # a side without values (a Fisher diagonal is ≥ 0) says so instead of staying blank
    fig = signed_log_histogram_figure({"F": [0.0, 1e-3, 2e-3]}, clip=1e-5)
    assert [t.get_text() for t in fig.axes[0].texts] == ["no negative value with |λ| > 1e-05"]
    assert not fig.axes[1].texts
    plt.close(fig)
    fig = signed_log_histogram_figure({"F": [0.0, 1e-7]}, clip=1e-5)
    assert [t.get_text() for t in fig.axes[0].texts] == ["no value above the clip"]
    plt.close(fig)
    with pytest.raises(ValueError, match="clip must be positive"):
        signed_log_histogram_figure({"F": [1.0]}, clip=0.0)


def test_the_histogram_alignment_and_noise_titles_citing_the_paper_stay_inside_the_figure():
    """chaudhari-hessian-spectrum's and zhu-noise-vs-gradient's titles, once they cite the
    paper, ran past the edges of their figures; zhu-projection-residual's broke its [0, 4]."""
    from sgdlab.report.figures.curvature import alignment_figure, noise_magnitude_figure

    title = ("Chaudhari 2018, Figs. 3.1, 3.4: Fisher diagonal at the end of training, "
             "negative and positive entries (runs pooled)")
    fig = signed_log_histogram_figure({"F": [0.0, 1e-3, 2e-3]}, clip=1e-5, title=title)
    fig.canvas.draw()
    assert drawn_inside_width_and_top(fig, fig._suptitle)
    assert fig.get_suptitle().replace("\n", " ") == title
    plt.close(fig)
    title = "Zhu 2019, Fig. 4(b): Σ–H alignment of noisy-label-sgd at the end of training"
    fig = alignment_figure([0.9, 0.5, 0.4, 0.3], [0.8, 0.2, 0.1, 0.1], [0.7, 0.3, 0.2, 0.1],
                           residual=1.54, title=title)
    fig.canvas.draw()
    assert drawn_inside_width_and_top(fig, fig._suptitle)
    assert fig.get_suptitle().replace("\n", " ").startswith(title + " ($e(U_k, V_k)$ = 1.54")
    assert "[0,\u00a04])" in fig.get_suptitle()          # the range kept whole
    plt.close(fig)
    # the noise magnitude of one run of zhu-noise-vs-gradient, titled as its analysis does
    title = "Zhu 2019, Figs. 2, 11: ‖∇L‖ vs sqrt(η Tr Σ / m) (noisy-label-sgd)"
    fig = noise_magnitude_figure({"noise/grad_norm": [(0, 1.0), (1, 0.5)],
                                  "noise/noise_norm": [(0, 0.2), (1, 0.1)]}, title=title)
    fig.canvas.draw()
    assert drawn_inside_width_and_top(fig, fig.axes[0].title)
    assert fig.axes[0].get_title().replace("\n", " ") == title
    plt.close(fig)


def test_list_cells_are_rounded_like_numbers_in_markdown_and_html():
    t = Table("t", ["point"], [[[[0.9024283211774303, -1.0339757656912846e-25], None]]])
    assert "| [[0.9024, -1.034e-25], —] |" in t.to_markdown()
    assert "<td>[[0.9024, -1.034e-25], —]</td>" in t.to_html()
    assert "0.9024283211774303" in t.to_csv()                  # CSV keeps full precision


def test_a_value_without_finite_neighbours_is_drawn_with_a_marker():
    fig = curves({"one": ([0], [0.5], None), "between": ([0, 1, 2], [np.nan, 0.4, np.inf], None),
                  "line": ([0, 1], [0.1, 0.2], None)}, xlabel="x", ylabel="y")
    markers = {ln.get_label(): ln.get_marker() for ln in fig.axes[0].get_lines()}
    assert markers["one"] == markers["between"] == "o"
    assert markers["line"] in ("None", "", None)
    plt.close(fig)


def test_a_curve_that_turns_non_finite_ends_in_a_cross_and_an_empty_one_says_so():
    fig = curves({"diverged": ([0, 1, 2, 3], [1.0, 0.5, np.inf, np.nan], None),
                  "empty": ([0, 1], [np.nan, np.nan], None),
                  "fine": ([0, 1], [1.0, 0.9], None)}, xlabel="step", ylabel="loss")
    ax = fig.axes[0]
    (cross,) = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    assert list(cross.get_xdata()) == [1.0] and list(cross.get_ydata()) == [0.5]
    diverged = next(ln for ln in ax.get_lines() if ln.get_label() == "diverged")
    assert cross.get_color() == diverged.get_color()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["diverged", "empty (no finite value)", "fine",
                      "last finite value (NaN / inf after)"]
    plt.close(fig)
    fig = curves({"fine": ([0, 1], [1.0, 0.9], None)}, xlabel="step", ylabel="loss")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["fine"]
    plt.close(fig)


def test_a_bar_without_a_value_says_so_instead_of_reading_as_zero():
    from sgdlab.report.figures.charts import grouped_bars

    fig = grouped_bars(["g1", "g2"], {"A": ([0.9, np.nan], [0.01, np.nan]),
                                      "B": ([0.8, 0.7], None)}, ylabel="accuracy")
    (note,) = [t for t in fig.axes[0].texts if t.get_text() == "no value"]
    assert note.xy[0] == pytest.approx(1 - 0.2)      # A's bar of g2, left of its centre
    plt.close(fig)
    fig = grouped_bars(["a", "b"], {"y": ([0.5, 0.4], None)}, ylabel="y")
    assert not fig.axes[0].texts
    plt.close(fig)


def test_a_point_without_a_value_is_marked_and_its_axis_spans_it():
    from matplotlib.colors import to_hex

    from sgdlab.report.figures.charts import error_bars

    fig = error_bars({"A": ([1, 2, 3, 4], [0.5, np.nan, 0.7, np.nan], [0.1, 0.2, 0.05, 0.1]),
                      "B": ([1, 2, 3], [0.4, 0.45, 0.6], [[0.1, 0.1, 0.1], [0.2, 0.2, 0.3]])},
                     xlabel="setting", ylabel="y", styles={"A": {"color": "C3"}})
    ax = fig.axes[0]
    marks = [t for t in ax.texts if t.get_text() == "no value"]
    assert sorted(t.xy[0] for t in marks) == [2, 4]
    assert {to_hex(t.get_color()) for t in marks} == {to_hex("C3")}   # A's colour
    assert ax.get_xlim()[1] > 4                  # the setting without a value is in view
    # the error bars are the given ones: ± err, or (below, above) for an interval
    a, b = ax.containers
    segs_a, segs_b = (c.lines[2][0].get_segments() for c in (a, b))
    def spans(segments):
        """(x, bottom, top) of each bar drawn (none where the error is NaN)"""
        return np.array([(s[0, 0], *s[:, 1]) for s in segments if len(s)])

    np.testing.assert_allclose(spans(segs_a), [(1, 0.4, 0.6), (3, 0.65, 0.75)])
    np.testing.assert_allclose(spans(segs_b), [(1, 0.3, 0.6), (2, 0.35, 0.65), (3, 0.5, 0.9)])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B"]
    plt.close(fig)
    fig = error_bars({"A": ([1, 2], [0.5, 0.6], None)}, xlabel="x", ylabel="y")
    assert not fig.axes[0].texts
    plt.close(fig)


def test_one_series_of_bars_has_a_colour_per_label_and_an_interval_below_and_above():
    from matplotlib.colors import to_hex

    from sgdlab.report.figures.charts import grouped_bars

    fig = grouped_bars(["a", "b"], {"rate": ([0.5, 0.9], [[0.1, 0.2], [0.3, 0.05]])},
                       ylabel="rate", zoom=True, colors=["C1", "C2"])
    ax = fig.axes[0]
    assert [to_hex(p.get_facecolor()) for p in ax.patches] == [to_hex("C1"), to_hex("C2")]
    # zoomed to 0.5 − 0.1 .. 0.9 + 0.05, a quarter of that span as the margin each side
    assert ax.get_ylim() == pytest.approx((0.4 - 0.1375, 0.95 + 0.1375))
    assert ax.get_legend() is None
    # bars cut off below: the axis label says where the axis starts
    assert ax.get_ylabel() == "rate (axis from 0.2625, not 0)"
    plt.close(fig)
    # a zoomed axis that still holds 0 cuts no bar and says nothing
    fig = grouped_bars(["a", "b"], {"gap": ([-0.01, 0.02], None)}, ylabel="gap", zoom=True)
    assert fig.axes[0].get_ylabel() == "gap"
    plt.close(fig)


def test_a_bar_of_one_seed_has_no_error_bar_and_one_of_equal_seeds_a_bar_of_0():
    """A NaN std (one seed: no spread measured) draws no error bar for its bar, the others
    keep theirs; a std of 0 (seeds that agree) draws one of length 0, caps at the mean."""
    from matplotlib.container import BarContainer

    from sgdlab.report.figures.charts import grouped_bars

    fig = grouped_bars(["one", "twins", "pair"], {"acc": ([0.5, 0.75, 0.875],
                                                          [np.nan, 0.0, 0.125])},
                       ylabel="acc", zoom=True)
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    segs = bars.errorbar.lines[2][0].get_segments()
    assert [s.tolist() for s in segs] == [[], [[1.0, 0.75], [1.0, 0.75]],
                                          [[2.0, 0.75], [2.0, 1.0]]]
    caps = [c.get_ydata() for c in bars.errorbar.lines[1]]
    assert all(np.isnan(float(y[0])) for y in caps)        # none for the one seed
    assert [float(y[1]) for y in caps] == [0.75, 0.75]
    # the zoomed axis still spans the mean without a bar: 0.5 .. 1.0, a quarter margin
    assert ax.get_ylim() == pytest.approx((0.375, 1.125))
    plt.close(fig)


def test_bars_on_a_numeric_axis_stand_at_their_values():
    from sgdlab.report.figures.charts import grouped_bars

    fig = grouped_bars([2, 4, 10], {"A": ([0.5, np.nan, 0.2], None), "B": ([1, 2, 3], None)},
                       ylabel="y", numeric=True)
    ax = fig.axes[0]
    # two bars a setting, side by side in 0.8 of the closest settings' gap (2)
    centres = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)
    assert centres == pytest.approx([1.6, 2.4, 3.6, 4.4, 9.6, 10.4])
    assert [p.get_width() for p in ax.patches] == pytest.approx([0.8] * 6)
    (note,) = [t for t in ax.texts if t.get_text() == "no value"]
    assert note.xy[0] == pytest.approx(3.6)
    assert [t.get_text() for t in ax.get_xticklabels()] != ["2", "4", "10"]  # matplotlib's
    plt.close(fig)


def test_log_steps_keeps_step_0_and_grid_ticks_label_every_setting():
    from sgdlab.report.figures.axes import grid_ticks, log_steps

    fig, ax = plt.subplots()
    steps = [0, 1, 2, 5, 12, 28, 66, 152, 351, 811, 1874, 4329, 10000]
    ax.plot(steps, np.ones(len(steps)))
    assert log_steps(ax, steps)
    assert ax.get_xscale() == "symlog" and ax.get_xlim()[0] == 0     # no negative steps
    assert not log_steps(ax, [0, 10, 20, 600])      # under two decades above the first step
    ax.set_xscale("log")
    ax.plot([25, 50, 100, 200, 400], [1] * 5)
    ax.set_xlim(20, 500)
    assert grid_ticks(ax, [25, 50, 100, 200, 400])
    assert _tick_texts(ax, "x") == ["25", "50", "100", "200", "400"]
    assert not grid_ticks(ax, range(1, 20))          # not a sweep's few settings
    plt.close(fig)


def test_grid_ticks_label_a_ratio_sweep_in_three_digits_alike():
    # η/B of Jastrzebski's grid (0.05/512, 0.2/512, 0.2/128): %.6g read 9.76563e-05,
    # 0.000390625 and 0.0015625, three widths and two notations on one axis
    from sgdlab.report.figures.axes import grid_ticks

    fig, ax = plt.subplots()
    ratios = [0.05 / 512, 0.2 / 512, 0.2 / 128]
    ax.plot(ratios, [1, 2, 3])
    ax.set_xscale("log")
    assert grid_ticks(ax, ratios)
    assert _tick_texts(ax, "x") == ["9.77e-05", "3.91e-04", "1.56e-03"]
    # settings that differ in the fourth digit keep it: labels tell every setting apart
    ax.set_xlim(0.1, 0.3)
    assert grid_ticks(ax, [0.1234, 0.1235, 0.2])
    assert len(set(_tick_texts(ax, "x"))) == 3
    plt.close(fig)


def test_grid_ticks_label_a_batch_size_sweep_in_all_its_digits():
    from sgdlab.report.figures.axes import setting_labels

    # within 1 % in three digits, 1024 and 2048 read 1020 and 2050: settings never run
    assert setting_labels([128, 256, 512, 1024, 2048]) == ["128", "256", "512", "1024", "2048"]
    assert setting_labels([0.1, 12345]) == ["0.1", "12345"]
    assert setting_labels([0.05, 0.2, 25]) == ["0.05", "0.2", "25"]


def test_a_time_axis_named_by_its_recorded_series_reads_as_words():
    from sgdlab.report.figures.axes import metric_label

    # chaudhari-entropy-sgd's curves against options.curve_x read "effective_epochs"
    assert metric_label("effective_epochs") == "effective epochs"
    assert metric_label("grad_evals") == "gradient evaluations"
    assert metric_label("entropy_angle/degrees") == "entropy_angle (degrees)"
    # the dynamics instrument's series, named as the walk plot names them (Xing et al. Fig. 1)
    assert metric_label("dist_from_init") == (
        r"distance from initialisation $\|\theta_t - \theta_0\|$")
    assert metric_label("grad_cosine").endswith(r"$\cos(g_{t-1}, g_t)$")


def test_series_with_equal_points_are_drawn_side_by_side_not_over_one_another():
    from sgdlab.report.figures.charts import error_bars

    # escape success of several methods: 0 at the small η, 1 at the large one
    same = {m: ([0.005, 0.1], [0.0, 1.0], [[0, 0.2], [0.2, 0]]) for m in ("GD", "GLD", "SGD")}
    fig = error_bars(same, xlabel="η", ylabel="success rate", logx=True)
    ax = fig.axes[0]
    fig.canvas.draw()
    first = [c.lines[0].get_transform().transform([[0.005, 0.0]])[0] for c in ax.containers]
    xs = [p[0] for p in first]
    assert xs[0] < xs[1] < xs[2] and xs[2] - xs[0] > 5           # pixels apart
    assert len({round(p[1], 6) for p in first}) == 1              # the value is unchanged
    # the data are the data: the lines hold the settings themselves
    assert [list(c.lines[0].get_xdata()) for c in ax.containers] == [[0.005, 0.1]] * 3
    # and in view: lines shifted off transData widened no data limits (the y axis read -0.05
    # to 0.05 around none of them)
    lo, hi = ax.get_ylim()
    assert lo <= 0.0 and hi >= 1.0 and hi - lo < 2
    plt.close(fig)
    fig = error_bars({"a": ([5.0], [3.0], [0.5]), "b": ([5.0], [3.0], [0.5])}, xlabel="x",
                     ylabel="y")
    lo, hi = fig.axes[0].get_ylim()
    assert lo <= 2.5 and hi >= 3.5 and hi - lo < 2
    plt.close(fig)
    # different values at one setting: each series where its setting is
    fig = error_bars({"A": ([1, 2], [0.0, 1.0], None), "B": ([1, 2], [0.5, 0.2], None)},
                     xlabel="x", ylabel="y")
    ax = fig.axes[0]
    assert all(c.lines[0].get_transform() == ax.transData for c in ax.containers)
    plt.close(fig)


def _plain_underscores(fig) -> list[str]:
    """The axis labels and titles of ``fig`` with an underscore outside mathtext ($...$),
    which matplotlib draws as an underscore ("λ_i"), not as a subscript."""
    texts = [t for ax in fig.axes for t in (ax.get_xlabel(), ax.get_ylabel(), ax.get_title())]
    return [t for t in texts if "_" in "".join(t.split("$")[::2])]


def test_subscripts_in_the_spectrum_and_alignment_labels_are_subscripts():
    from sgdlab.report.figures.curvature import alignment_figure

    fig = eigenspectrum_figure({"H": [3.0, 1.0, -0.5]})
    assert _plain_underscores(fig) == [] and fig.axes[0].get_ylabel() == r"$|\lambda_i|$"
    plt.close(fig)
    fig = alignment_figure([0.9, 0.5], [0.8, 0.2], [0.7, 0.3], residual=0.4)
    assert _plain_underscores(fig) == []
    # the residual with its range [0, k], its subscripts in mathtext too
    assert fig.get_suptitle() == "Σ–H alignment ($e(U_k, V_k)$ = 0.4 in [0,\u00a02])"
    fig.canvas.draw()                   # mathtext that parses
    plt.close(fig)


def test_a_density_clipped_on_a_log_axis_lies_on_the_axis_foot():
    from sgdlab.report.figures.curvature import spectral_density_figure

    grid = np.linspace(-1, 3, 401)
    dens = np.exp(-((grid - 1) / 0.05) ** 2 / 2)
    dens[np.abs(grid - 1) > 0.5] = 0.0          # far from every eigenvalue: 0
    fig = spectral_density_figure(grid, dens, eigenvalues=[1.0])
    ax = fig.axes[0]
    # the clipped stretches (at 1e-12 of the peak) on the axis' foot, not a level above it
    # abs=0: pytest.approx's default absolute 1e-12 let any foot below 2e-12 pass
    assert ax.get_ylim()[0] == pytest.approx(dens.max() * 1e-12, rel=1e-6, abs=0)
    (line, rug) = ax.get_lines()
    assert line.get_ydata().min() == pytest.approx(ax.get_ylim()[0], rel=1e-6, abs=0)
    assert rug.get_xdata()[0] == 1.0 and rug.get_ydata()[0] == 0.04   # in axes fraction
    plt.close(fig)
    # a NaN in the density is a gap in the line, not a NaN floor that hid every point
    dens[200] = np.nan
    fig = spectral_density_figure(grid, dens)
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == pytest.approx(np.nanmax(dens) * 1e-12, rel=1e-6, abs=0)
    y = ax.get_lines()[0].get_ydata()
    assert np.isnan(y[200]) and np.isfinite(np.delete(y, 200)).all()
    plt.close(fig)


def test_a_long_title_and_axis_label_are_wrapped_inside_the_figure():
    from sgdlab.report.figures.charts import wrapped

    # chaudhari-entropy-sgd-rnn's curve: both ran past the figure's edges
    title = ("§3.3.4-3.3.5, Fig. 3.7, Table 3.1 (PTB-LSTM, char-LSTM): angle between the "
             "local-entropy and the SGD gradients (degrees)\nseed 0")
    ylabel = "angle between the local-entropy and the SGD gradient (degrees)"
    fig = curves({"a": ([0, 1, 2], [85.0, 42.0, 50.0], None)}, xlabel="effective epochs",
                 ylabel=ylabel, title=title)
    ax = fig.axes[0]
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for text in (ax.title, ax.yaxis.label, ax.xaxis.label):
        box = text.get_window_extent(r)
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1, text.get_text()
        assert 0 <= box.y0 and box.y1 <= fig.bbox.y1, text.get_text()
    # only broken at spaces, the given line break kept
    assert ax.get_title().replace("\n", " ") == title.replace("\n", " ")
    assert ax.get_title().endswith("\nseed 0") and ax.get_ylabel().count("\n") >= 1
    assert ax.get_xlabel() == "effective epochs"
    plt.close(fig)
    # a mathtext span is never broken
    label = r"distance from initialisation $\|\theta_t - \theta_0\|$"
    assert wrapped(label, 1.0) == "distance from\ninitialisation\n" + r"$\|\theta_t - \theta_0\|$"
    # nor a relation from its right-hand side (Xing et al. Fig. 4's label)
    assert wrapped(r"mean $\cos(g_{t-1}, g_t)$ over steps ≥ 40", 1.9) == (
        "mean $\\cos(g_{t-1}, g_t)$ over\nsteps ≥ 40")
    assert wrapped("escape success (Wilson interval, z = 2)", 2.8) == (
        "escape success (Wilson interval,\nz = 2)")


def test_wrapping_keeps_what_a_dollar_sign_means():
    from matplotlib.cbook import is_math_text

    from sgdlab.report.figures.charts import wrapped

    # an escaped dollar opens no mathtext span: the rest of the label is wrapped still
    label = r"cost in \$ per unit of the long runs over many settings $x_1$ beyond the edge"
    lines = wrapped(label, 1.5).split("\n")
    assert len(lines) > 2 and max(map(len, lines)) < 30
    assert " ".join(lines) == label and r"$x_1$" in wrapped(label, 1.5)
    # a line of an odd number of dollars is plain text; no piece of it becomes mathtext
    label = "gain in $ per $ share over the many settings of a long sweep, $ at the end"
    assert not is_math_text(label)
    lines = wrapped(label, 1.5).split("\n")
    assert len(lines) > 2 and not any(is_math_text(line) for line in lines)
    assert " ".join(lines).replace(r"\$", "$") == label


def test_a_zoomed_bar_chart_keeps_its_longer_label_inside_the_figure():
    from sgdlab.report.figures.charts import grouped_bars

    fig = grouped_bars(["a", "b"], {"acc": ([0.9355, 0.9435], None)}, zoom=True,
                       ylabel="best validation accuracy of the last epoch")
    ax = fig.axes[0]
    fig.canvas.draw()
    box = ax.yaxis.label.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= box.y0 and box.y1 <= fig.bbox.y1, ax.get_ylabel()
    assert ax.get_ylabel().replace("\n", " ").endswith("(axis from 0.9335, not 0)")
    plt.close(fig)


def test_histograms_of_several_series_share_their_bins():
    from sgdlab.report.figures.charts import histogram

    # two spectra of different ranges (chaudhari-hessian-spectrum's eigen histogram)
    fig = histogram({"wide": [-0.4, 0.0, 0.0, 1.25], "narrow": [0.0, 0.01, 0.02, 0.7]},
                    xlabel="eigenvalue λ", bins=10)
    widths = {round(p.get_width(), 12) for p in fig.axes[0].patches}
    assert widths == {round(1.65 / 10, 12)}
    plt.close(fig)
    # non-finite values lie in no bin: the legend counts them, the bins span the finite ones
    fig = histogram({"a": [0.0, 1.0, np.nan, np.inf], "b": [0.5]}, xlabel="v", bins=4)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "a (2 non-finite left out)", "b"]
    assert {round(p.get_width(), 12) for p in ax.patches} == {0.25}
    plt.close(fig)


def test_a_ranked_series_name_that_is_no_number_is_named_as_it_was_recorded():
    from sgdlab.report.figures.axes import metric_label

    # str.isdigit() holds for "²", which int() refuses: the label raised a ValueError
    assert metric_label("hess/top_²") == "hess/top_²"
    assert metric_label("hess/top_") == "hess/top_"
    assert metric_label("noise/top_3") == r"noise $\lambda_{3}$ of Σ"


def test_a_panel_of_many_eigenvalues_names_their_ranks_as_a_range():
    from sgdlab.report.figures.axes import quantity_label

    # a hessian instrument of k = 20 drew a y label of 20 "Hessian λ_i" over ~10 lines
    names = [f"hess/top_{i}" for i in range(1, 21)] + ["hess/trace"]
    assert quantity_label(names) == r"Hessian $\lambda_{i}$ (i = 1 … 20), Hessian trace Tr H"
    assert quantity_label([f"noise/top_{i}" for i in (2, 3, 4)]) == (
        r"noise $\lambda_{i}$ of Σ (i = 2 … 4)")
    # the alignment's cosines by rank, named as the alignment figure names them
    cos = [f"align/cos_{i}" for i in range(1, 13)] + ["align/residual"]
    assert quantity_label(cos) == (
        r"$|\cos(u_{i}(H), v_{i}(\Sigma))|$ (i = 1 … 12), Σ–H alignment residual")
    assert quantity_label(["align/cos_1"]) == r"$|\cos(u_{1}(H), v_{1}(\Sigma))|$"
    # two ranks, or ranks with a gap, are each named
    assert quantity_label(["hess/top_1", "hess/top_2"]) == (
        r"Hessian $\lambda_{max}$, Hessian $\lambda_{2}$")
    assert quantity_label(["hess/top_1", "hess/top_10", "hess/top_11"]) == (
        r"Hessian $\lambda_{max}$, Hessian $\lambda_{10}$, Hessian $\lambda_{11}$")
    fig, ax = plt.subplots()
    ax.set_ylabel(quantity_label(names))
    fig.canvas.draw()                   # mathtext that parses
    plt.close(fig)


def test_a_spectrum_s_round_off_counts_every_eigenvalue_in_d():
    from sgdlab.report.figures.curvature import round_off_level

    eps = np.finfo(np.float32).eps
    assert round_off_level([2.0, 1.0, 0.5], "float32") == pytest.approx(2.0 * 3 * eps)
    # a non-finite eigenvalue is one of the matrix's d: it read d = 2
    assert round_off_level([2.0, float("nan"), 0.5], "float32") == pytest.approx(2.0 * 3 * eps)
    # (relative only: approx's default absolute 1e-12 passed any level near 1e-15)
    assert round_off_level([-4.0, 1.0], "float64", 10) == pytest.approx(
        4.0 * 10 * np.finfo(np.float64).eps, rel=1e-12, abs=0)   # |λ|_max of a negative one
    assert round_off_level([0.0, 0.0], "float32") == 0.0


def test_series_are_drawn_beside_each_other_only_where_they_share_a_setting_and_a_value():
    from sgdlab.report.figures.charts import _coincide

    # within 1 % of the y span (here 100) at one setting: one would hide the other
    assert _coincide({"a": ([1, 2], [0.0, 100.0], None), "b": ([1, 2], [0.5, 50.0], None)})
    # 5 % apart: both visible; the same value at two settings hides nothing
    assert not _coincide({"a": ([1, 2], [0.0, 100.0], None),
                          "b": ([1, 2], [5.0, 50.0], None)})
    assert not _coincide({"a": ([1, 2], [0.0, 100.0], None), "b": ([3, 4], [0.0, 100.0], None)})


def test_error_bars_beside_each_other_keep_each_interval_in_view():
    from sgdlab.report.figures.charts import error_bars

    # a 2 × n error: below, above each point; the series coincide, so their bars are shifted
    # off the data transform and the axes are widened to the intervals by hand
    fig = error_bars({"a": ([1, 2], [1.0, 1.0], [[0.5, 0.5], [5.0, 5.0]]),
                      "b": ([1, 2], [1.0, 1.0], None)}, xlabel="x", ylabel="y")
    lim = fig.axes[0].dataLim
    plt.close(fig)
    assert lim.y0 == pytest.approx(0.5) and lim.y1 == pytest.approx(6.0)


def test_alignment_figure_draws_each_series_at_its_eigen_index_from_1():
    from sgdlab.report.figures.curvature import alignment_figure

    fig = alignment_figure([0.9, 0.5], [0.8, 0.2], [0.7, 0.3])
    a, b = fig.axes
    bars = [(p.get_x() + p.get_width() / 2, p.get_height()) for p in a.patches]
    lines = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata()))
             for ln in b.get_lines()}
    plt.close(fig)
    assert bars == [(1.0, 0.9), (2.0, 0.5)]
    assert lines == {"H": ([1, 2], [0.8, 0.2]), "Σ": ([1, 2], [0.7, 0.3])}


def test_a_spectral_density_is_drawn_against_the_grid_on_a_log_axis_unless_told_otherwise():
    from sgdlab.report.figures.curvature import spectral_density_figure

    grid, dens = np.array([0.0, 1.0, 2.0]), np.array([0.1, 0.5, 0.2])
    fig = spectral_density_figure(grid, dens, eigenvalues=[0.5, 1.5], eigenvalues_label="exact")
    ax = fig.axes[0]
    line, rug = ax.get_lines()
    np.testing.assert_array_equal(line.get_xydata(), np.column_stack([grid, dens]))
    np.testing.assert_array_equal(rug.get_xdata(), [0.5, 1.5])
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "eigenvalue"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["exact"]
    plt.close(fig)
    fig = spectral_density_figure(grid, dens, log=False)
    assert fig.axes[0].get_yscale() == "linear"
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_ydata(), dens)
    plt.close(fig)


def test_a_histogram_counts_each_series_values_in_the_shared_bins_on_a_log_axis():
    from sgdlab.report.figures.charts import histogram

    fig = histogram({"a": [0.0, 0.1, 0.9, 1.0], "b": [0.6, 0.7, 0.8]}, xlabel="v", bins=2)
    ax = fig.axes[0]
    a, b = ax.containers
    assert [p.get_height() for p in a] == [2, 2] and [p.get_height() for p in b] == [0, 3]
    assert [p.get_x() for p in a] == pytest.approx([0.0, 0.5])
    assert ax.get_yscale() == "log" and (ax.get_xlabel(), ax.get_ylabel()) == ("v", "count")
    plt.close(fig)
    fig = histogram({"a": [0.0, 1.0]}, xlabel="v", bins=2, logy=False)
    assert fig.axes[0].get_yscale() == "linear"
    plt.close(fig)


def test_grouped_bars_stand_each_series_mean_at_its_label_with_its_error():
    from sgdlab.report.figures.charts import grouped_bars

    fig = grouped_bars(["x", "y", "z"], {"A": ([1.0, 2.0, 3.0], [0.1, 0.2, 0.3]),
                                         "B": ([4.0, 5.0, 6.0], None)}, ylabel="v")
    ax = fig.axes[0]
    a, b = [c for c in ax.containers if hasattr(c, "patches")]
    assert [p.get_height() for p in a] == [1.0, 2.0, 3.0]
    assert [p.get_height() for p in b] == [4.0, 5.0, 6.0]
    # A left of B at each label, the labels in the order given
    assert [p.get_x() + p.get_width() / 2 for p in a] == pytest.approx([-0.2, 0.8, 1.8])
    assert [p.get_x() + p.get_width() / 2 for p in b] == pytest.approx([0.2, 1.2, 2.2])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
    assert list(ax.get_xticks()) == [0, 1, 2]
    (seg,) = a.errorbar.lines[2]
    assert [s[1, 1] - s[0, 1] for s in seg.get_segments()] == pytest.approx([0.2, 0.4, 0.6])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B"]
    plt.close(fig)


def test_a_log_axis_under_two_decades_reads_plain_numbers_and_one_over_them_does_not():
    from sgdlab.report.figures.axes import PlainLogFormatter, log_scale

    fig, (a, b) = plt.subplots(1, 2)
    assert log_scale(a, [1.0, 50.0]) and log_scale(b, [1.0, 1000.0])
    assert isinstance(a.yaxis.get_major_formatter(), PlainLogFormatter)
    assert not isinstance(b.yaxis.get_major_formatter(), PlainLogFormatter)
    plt.close(fig)


def test_steps_are_log_spaced_only_when_most_lie_below_a_tenth_of_the_last():
    from sgdlab.report.figures.axes import log_spaced

    assert log_spaced([1, 2, 5, 300])            # three of four below 30
    assert not log_spaced([1, 2, 200, 300])      # half: evenly spaced from a small start


def test_identical_curves_are_drawn_distinguishably():
    """Two methods' min |∇f| both 0 (chaudhari-trivialized), two cyclic periods of one loss
    (musso-protocols): drawn alike, the later curve hid the earlier. The coinciding one is
    dashed, with markers; labels and the other curves stay as they were."""
    x = np.arange(20.0)
    fig = curves({"adam": (x, 0 * x, None), "trivialized": (x, 0 * x, None),
                  "third": (x, 0 * x + 1e-12, None), "other": (x, x, None)},
                 xlabel="epoch", ylabel="min |∇f|")
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    looks = {k: (ln.get_linestyle(), ln.get_marker()) for k, ln in lines.items()}
    assert looks["adam"] == looks["other"] == ("-", "None")
    assert len({looks["adam"], looks["trivialized"], looks["third"]}) == 3, looks
    # their markers at different points: not one over another
    assert lines["trivialized"].get_markevery() != lines["third"].get_markevery()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(lines)
    handles = ax.get_legend().legend_handles
    assert handles[1].get_linestyle() == looks["trivialized"][0]
    plt.close(fig)
    # curves that differ (also a line style given by the caller) keep their styles
    fig = curves({"a": (x, 0 * x, None), "b": (x, 0 * x, None), "c": (x, x, None)},
                 xlabel="x", ylabel="y", styles={"b": {"ls": ":"}})
    assert [ln.get_marker() for ln in fig.axes[0].get_lines()] == ["None"] * 3
    plt.close(fig)
    # a run and its continuation, which repeats the run's steps (xing-stuck-continuation)
    fig = curves({"run": (x[:10], x[:10] ** 2, None), "continued": (x, x ** 2, None)},
                 xlabel="x", ylabel="y")
    assert [ln.get_linestyle() for ln in fig.axes[0].get_lines()] == ["-", "--"]
    plt.close(fig)
    # jastrzebski-breakdown's accuracies 0.172 and 0.180 at epoch 1: within a hundredth of
    # matplotlib's default 0-1 limits, not of the axes' own
    fig = curves({"a": ([0, 1], [0.1015, 0.18], None), "b": ([0, 1], [0.1015, 0.172], None),
                  "c": ([0, 1], [0.1015, 0.125], None)}, xlabel="epoch", ylabel="accuracy")
    assert {ln.get_linestyle() for ln in fig.axes[0].get_lines()} == {"-"}
    plt.close(fig)


@pytest.mark.parametrize("n, outside", [(3, False), (5, False), (7, True)])
def test_a_legend_of_many_curves_goes_right_of_the_axes(n, outside):
    """zhu-gld-const-tuning's seven sharpness curves: the legend inside covered them."""
    x = np.arange(10.0)
    fig = curves({f"gld-const-1e-{i}": (x, i * x, None) for i in range(n)}, xlabel="x",
                 ylabel="y")
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    box = ax.get_window_extent()
    assert (legend.x0 >= box.x1) == outside
    assert ax.contains_point(legend.get_points().mean(0)) == (not outside)
    figure = fig.bbox
    assert figure.x0 <= legend.x0 and legend.x1 <= figure.x1    # not cut off
    plt.close(fig)
