"""Rules every figure follows: where a log axis goes, how its ticks read, what a spectrum on a
log axis does with exact zeros, and how list cells of a table are rounded."""
import matplotlib.pyplot as plt
import numpy as np

from sgdlab.experiments.plots import curves
from sgdlab.report.figures.curvature import eigenspectrum_figure
from sgdlab.report.figures.training import learning_curves
from sgdlab.report.tables import Table


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
    fig = curves({"a": ([0, 1, 2], [10.0, 1.0, 0.01], None)}, xlabel="x", ylabel="y",
                 logy=True)
    assert any("10^{-1}" in t for t in _tick_texts(fig.axes[0]))   # decades keep powers
    plt.close(fig)


def test_spectrum_leaves_exact_zeros_out_of_the_log_axis_and_counts_them():
    fig = eigenspectrum_figure({"H": [2.0, 0.5, -0.1, 0.0, 0.0]})
    ax = fig.axes[0]
    ys = np.concatenate([ln.get_ydata() for ln in ax.get_lines()])
    assert sorted(ys) == [0.1, 0.5, 2.0]
    assert ax.get_ylim()[0] > 1e-3
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["H (2 exact zeros not shown)", "H (negative, |λ|)"]
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
