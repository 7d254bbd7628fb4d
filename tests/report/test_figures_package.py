"""sgdlab.report.figures' helpers for the figures its functions return: saved and closed."""
from __future__ import annotations

import pytest

from sgdlab.report.figures import close_figures, save_and_close
from sgdlab.report.figures.charts import curves, plt


def _figure():
    return curves({"a": ([0, 1], [1.0, 2.0], None)}, xlabel="x", ylabel="y")


def test_save_and_close_saves_then_closes_the_figure(tmp_path):
    fig = _figure()
    assert fig.number in plt.get_fignums()
    path = save_and_close(fig, tmp_path / "a.png", dpi=20)
    assert path == tmp_path / "a.png" and path.read_bytes().startswith(b"\x89PNG")
    assert fig.number not in plt.get_fignums()


def test_a_figure_that_cannot_be_saved_is_closed_all_the_same(tmp_path):
    fig = _figure()
    with pytest.raises(ValueError, match="no suffix that names the figure's format"):
        save_and_close(fig, tmp_path / "a")
    assert fig.number not in plt.get_fignums()


def test_close_figures_takes_an_analysis_pairs_and_figures_closed_already():
    a, b = _figure(), _figure()
    plt.close(b)
    close_figures([("a", a), b])
    assert a.number not in plt.get_fignums()


def test_figure_title_reads_the_suptitle_else_the_panels_titles():
    from sgdlab.report.figures import figure_title

    fig, (a, b, c) = plt.subplots(1, 3)
    a.set_title("loss\nseed 0")
    b.set_title("loss")
    c.set_title("left", loc="left")
    assert figure_title(fig) == "loss; seed 0; left"
    fig.suptitle("Fig. 1: all\n two seeds ")
    assert figure_title(fig) == "Fig. 1: all; two seeds"
    close_figures([fig])
    fig, _ = plt.subplots()
    assert figure_title(fig) == ""
    close_figures([fig])
