"""The analytic-landscape figures label what they plot."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer

from sgdlab.testing import drawn_inside_width_and_top


def test_escape_run_figure_names_the_success_rule_it_was_given():
    from sgdlab.report.figures.landscapes import escape_run_figure

    g = np.linspace(-2.0, 2.0, 5)
    gx, gy = np.meshgrid(g, g)
    traj = {"gd": np.zeros((3, 2))}
    args = (gx, gy, gx ** 2 + gy ** 2, traj, {"gd": 0.5}, [0, 10], {"gd": [1.0, 0.5]})
    # the rate is the final iterate's by default (EscapeConfig.success_rule): not "reached"
    fig = escape_run_figure(*args)
    assert "reached" not in fig.axes[1].get_ylabel()
    plt.close(fig)
    fig = escape_run_figure(*args, success_rule="w1, w2 < -0.5 at the end")
    assert fig.axes[1].get_ylabel() == "w1, w2 < -0.5 at the end (%)"
    plt.close(fig)


def test_escape_run_figure_writes_expected_sharpness_as_every_sharpness_axis():
    from sgdlab.report.figures.axes import METRIC_LABELS
    from sgdlab.report.figures.landscapes import escape_run_figure

    g = np.linspace(-2.0, 2.0, 5)
    gx, gy = np.meshgrid(g, g)
    fig = escape_run_figure(gx, gy, gx ** 2 + gy ** 2, {"gd": np.zeros((3, 2))}, {"gd": 0.5},
                            [0, 10], {"gd": [1.0, 0.5]}, paper="Zhu et al. 2019, Fig. 3")
    # Zhu et al.'s E_ν[L(θ+ν)] − L(θ) (§4.2), one notation in every figure
    assert fig.axes[2].get_ylabel() == METRIC_LABELS["sharpness/expected"] \
        == "expected sharpness E[L(θ+ν)] − L(θ)"
    assert fig.axes[2].get_title() == "ν ~ N(0, σ²I)"
    # the panels name their parts; the figure says which paper's figure it is
    assert fig.get_suptitle().startswith("Zhu et al. 2019, Fig. 3: ")
    plt.close(fig)


def test_escape_run_figure_draws_the_intervals_it_is_given_around_each_rate():
    from sgdlab.report.figures.landscapes import escape_run_figure

    g = np.linspace(-2.0, 2.0, 5)
    gx, gy = np.meshgrid(g, g)
    names = ("gd", "sgd")
    args = (gx, gy, gx ** 2 + gy ** 2, {n: np.zeros((3, 2)) for n in names},
            {"gd": 0.0, "sgd": 0.3}, [0, 10], {n: [1.0, 0.5] for n in names})
    fig = escape_run_figure(*args, intervals={"gd": (0.0, 0.074), "sgd": (0.19, 0.44)})
    bars = fig.axes[1]
    (container,) = [c for c in bars.containers if isinstance(c, ErrorbarContainer)]
    (segments,) = container.lines[2]
    assert [tuple(s[:, 1]) for s in segments.get_segments()] == [
        pytest.approx((0.0, 7.4)), pytest.approx((19.0, 44.0))]
    assert bars.get_title() == "success rate (Wilson interval)"
    plt.close(fig)
    fig = escape_run_figure(*args)                      # none given: none drawn
    assert not [c for c in fig.axes[1].containers if isinstance(c, ErrorbarContainer)]
    plt.close(fig)


def test_the_smoothing_pdes_keep_their_colours_in_both_fig_4_1_figures():
    """Viscous HJ red and non-viscous HJ blue, as the thesis' Fig. 4.1, whatever the order or
    the wording of the names (the CLI's and the catalogue entry's differ)."""
    from sgdlab.report.figures.landscapes import fokker_planck_figure, pde_figure

    x = np.linspace(-1.0, 1.0, 5)
    names = ["heat equation", "non-viscous HJ (Hopf-Lax)", "viscous HJ (local entropy)"]
    fig = pde_figure(x, x ** 2, {n: x for n in names}, 0.5)
    colours = {ln.get_label(): ln.get_color() for ln in fig.axes[0].get_lines()}
    plt.close(fig)
    fig = fokker_planck_figure(x, x ** 2, {n: x for n in reversed(names[1:])},
                               {"initial": x, "SGD (u = f)": x, names[2]: x, names[1]: x},
                               0.5, 2.0)
    top, bottom = fig.axes
    again = {ln.get_label().split(", t = ")[0]: ln.get_color() for ln in top.get_lines()}
    dens = {ln.get_label().split(", τ = ")[0]: ln.get_color() for ln in bottom.get_lines()}
    plt.close(fig)
    assert colours[names[2]] == again[names[2]] == dens[names[2]] == "tab:red"
    assert colours[names[1]] == again[names[1]] == dens[names[1]] == "tab:blue"
    assert colours[names[0]] == "tab:green" and dens["SGD (u = f)"] == "0.3"


def test_the_double_well_figure_names_its_marks_and_the_error_of_the_velocity():
    from sgdlab.report.figures.landscapes import double_well_figure

    e = np.linspace(-2.0, 2.0, 5)
    hist = {"λ=0": np.ones((4, 4)), "λ=1.5": np.ones((4, 4))}
    fig = double_well_figure(e, e, hist, np.ones((4, 4)), {"λ=0": [(1.0, 0.0)]},
                             {"λ=0": (0.0, 0.0, 0.01), "λ=1.5": (1.05, 1.1, 0.02)},
                             title="seeds 0, 1 pooled")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "contours of e^(−Φ)", "zeros of the drift −∇Φ + j"]
    bars_ax = fig.axes[-1]
    (bars_err,) = [c for c in bars_ax.containers if isinstance(c, ErrorbarContainer)]
    (errs,) = bars_err.lines[2]
    assert [s[1, 1] - s[0, 1] for s in errs.get_segments()] == pytest.approx([0.04, 0.08])
    assert fig.get_suptitle() == "seeds 0, 1 pooled"
    plt.close(fig)


def test_a_method_keeps_its_colour_across_the_escape_panels_and_one_legend_names_it():
    from sgdlab.report.figures.landscapes import escape_run_figure

    g = np.linspace(-2.0, 2.0, 5)
    gx, gy = np.meshgrid(g, g)
    names = ("gd", "sgd")
    fig = escape_run_figure(gx, gy, gx ** 2 + gy ** 2, {n: np.zeros((3, 2)) for n in names},
                        {n: 0.5 for n in names}, [0, 10], {n: [1.0, 0.5] for n in names},
                        {"gd": "GD", "sgd": "SGD"})
    traj, bars, sharp = fig.axes
    dots = [to_hex(ln.get_color()) for ln in traj.get_lines()]
    assert [to_hex(ln.get_color()) for ln in sharp.get_lines()] == dots
    assert [to_hex(p.get_facecolor()) for p in bars.patches] == dots
    assert len(set(dots)) == 2
    assert traj.get_legend() is None and sharp.get_legend() is None
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["GD", "SGD"]
    plt.close(fig)


def test_settings_of_one_ratio_are_told_apart_by_their_batch_size_not_overlapping_text():
    from sgdlab.report.figures.landscapes import ou_figure

    fig = ou_figure([0.05, 0.05, 0.1], [0.02, 0.021, 0.04], [1e-3] * 3, [0.02, 0.02, 0.04],
                    [1, 2, 2])
    ax = fig.axes[0]
    assert not ax.texts
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "(η/4S) Tr H (eq. 7)", "SGD chains, S = 1 (±2 s.e.)", "SGD chains, S = 2 (±2 s.e.)"]
    plt.close(fig)


def test_the_escape_chains_figure_says_what_its_panels_show():
    from sgdlab.report.figures.landscapes import escape_chains_figure

    chains = {"GD": ([[(1.0, 1.0), (-1.0, -1.0)]], [1.0, 1.0], [-1.0, -1.0])}
    # the panels name only the method: without a figure title nothing said what was drawn
    fig = escape_chains_figure(chains)
    assert fig.get_suptitle() == "escape paths from the sharp minimum"
    plt.close(fig)
    fig = escape_chains_figure(chains, title="Fig. 3(a): the first 5 of 100 repetitions")
    assert fig.get_suptitle() == "Fig. 3(a): the first 5 of 100 repetitions"
    plt.close(fig)
    # the catalogue's title over one method's panel: inside the figure, broken at spaces
    title = ("Zhu et al. Fig. 3(a): escape paths from the sharp minimum, the first 5 of 100 "
             "repetitions")
    fig = escape_chains_figure(chains, title=title)
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.x1
    assert fig.get_suptitle().replace("\n", " ") == title
    plt.close(fig)


def test_the_pspin_figure_says_what_its_points_are_and_that_its_scales_differ():
    from sgdlab.report.figures.landscapes import pspin_figure

    emb = {"glassy": np.array([[0.0, 1.0], [1.0, 0.0]]), "trivial": np.zeros((1, 2))}
    en = {"glassy": np.array([-1.4, -1.3]), "trivial": np.array([-3.5])}
    fig = pspin_figure(emb, en, {"glassy": 2, "trivial": 1})
    title = fig.get_suptitle()
    assert "projected GD" in title and "own scale" in title
    fig.canvas.draw()
    assert drawn_inside_width_and_top(fig, fig._suptitle)
    plt.close(fig)
    # one regime's panel, 5 inches: the title inside it too
    fig = pspin_figure({"glassy": emb["glassy"]}, {"glassy": en["glassy"]}, {"glassy": 2})
    fig.canvas.draw()
    assert drawn_inside_width_and_top(fig, fig._suptitle)
    assert fig.get_suptitle().replace("\n", " ") == title.replace("\n", " ")
    plt.close(fig)


def test_the_ou_figure_draws_eq_7_in_order_and_each_batch_size_s_chains_with_2_se():
    from sgdlab.report.figures.landscapes import ou_figure

    # settings given out of order of η/S; chains of S = 1 at 0.1, of S = 2 at 0.05 and 0.2
    fig = ou_figure([0.1, 0.05, 0.2], [0.03, 0.02, 0.09], [1e-3, 2e-3, 3e-3],
                    [0.025, 0.0125, 0.05], [1, 2, 2])
    ax = fig.axes[0]
    # whose eq. 7
    assert ax.get_title().replace("\n", " ").endswith("(Jastrzebski et al. 2018, eq. 7)")
    (eq7,) = [ln for ln in ax.get_lines() if ln.get_label() == "(η/4S) Tr H (eq. 7)"]
    assert list(eq7.get_xdata()) == [0.05, 0.1, 0.2]
    assert list(eq7.get_ydata()) == [0.0125, 0.025, 0.05]
    chains = {}
    for c in ax.containers:
        line, _, (bars,) = c.lines
        chains[c.get_label()] = (list(line.get_xdata()), list(line.get_ydata()),
                                 [seg[:, 1].tolist() for seg in bars.get_segments()])
    plt.close(fig)
    assert chains == {
        "SGD chains, S = 1 (±2 s.e.)": ([0.1], [0.03], [[pytest.approx(0.028),
                                                         pytest.approx(0.032)]]),
        "SGD chains, S = 2 (±2 s.e.)": ([0.05, 0.2], [0.02, 0.09],
                                       [[pytest.approx(0.016), pytest.approx(0.024)],
                                        [pytest.approx(0.084), pytest.approx(0.096)]])}


def test_the_pde_figures_draw_f_and_each_smoothing_against_x():
    from sgdlab.report.figures.landscapes import fokker_planck_figure, pde_figure

    x = np.linspace(-1.0, 1.0, 5)
    f, u1, u2 = x ** 2, x ** 2 / 2, x ** 2 / 4
    names = ["viscous HJ", "non-viscous HJ"]
    fig = pde_figure(x, f, dict(zip(names, (u1, u2))), 0.5)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["f", *names]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["f", *names]
    for ln, y in zip(lines, (f, u1, u2)):
        np.testing.assert_array_equal(ln.get_xydata(), np.column_stack([x, y]))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "u(x, t)")
    assert ax.get_title() == "PDE smoothing at t = 0.5"
    plt.close(fig)
    fig = pde_figure(x, f, dict(zip(names, (u1, u2))), 0.5, paper="Chaudhari 2018, Fig. 4.1")
    assert fig.axes[0].get_title() == "Chaudhari 2018, Fig. 4.1: PDE smoothing at t = 0.5"
    plt.close(fig)
    r0, r1, r2, r3 = (np.exp(-x ** 2 * k) for k in (1, 2, 3, 4))
    fig = fokker_planck_figure(x, f, dict(zip(names, (u1, u2))),
                               {"initial": r0, "SGD (u = f)": r1, names[0]: r2, names[1]: r3},
                               0.5, 2.0)
    top, bottom = fig.axes
    for ln, y in zip(top.get_lines(), (f, u1, u2)):
        np.testing.assert_array_equal(ln.get_xydata(), np.column_stack([x, y]))
    # the initial density filled, every terminal one a line: none left out
    (fill,) = bottom.collections
    assert fill.get_paths()[0].vertices[:, 1].max() == pytest.approx(r0.max())
    assert [ln.get_label() for ln in bottom.get_lines()] == [
        "SGD (u = f), τ = 2", f"{names[0]}, τ = 2", f"{names[1]}, τ = 2"]
    for ln, y in zip(bottom.get_lines(), (r1, r2, r3)):
        np.testing.assert_array_equal(ln.get_xydata(), np.column_stack([x, y]))
    plt.close(fig)


def test_the_double_well_figure_draws_each_histogram_with_x1_across_and_its_velocities():
    from sgdlab.report.figures.landscapes import double_well_figure

    e1, e2 = np.linspace(-2.0, 2.0, 5), np.linspace(-1.0, 1.0, 4)
    h = np.arange(12.0).reshape(4, 3)      # (x1 bins, x2 bins)
    fig = double_well_figure(e1, e2, {"λ=1": h}, np.ones((4, 3)), {"λ=1": [(1.5, -0.5), None]},
                             {"λ=1": (0.9, 1.0, 0.01), "λ=2": (1.9, 2.0, 0.02)})
    hist_ax, bars_ax = fig.axes[:2]
    (mesh,) = [c for c in hist_ax.collections if hasattr(c, "get_coordinates")]
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(3, 4), h.T)
    np.testing.assert_allclose(mesh.get_coordinates()[0, :, 0], e1)
    (star,) = [ln for ln in hist_ax.get_lines() if ln.get_marker() == "*"]
    np.testing.assert_array_equal(star.get_xydata(), [[1.5, -0.5]])
    measured, exact = bars_ax.containers[1], bars_ax.containers[-1]
    assert [b.get_height() for b in measured] == [0.9, 1.9]
    assert [b.get_height() for b in exact] == [1.0, 2.0]
    plt.close(fig)


def test_the_pspin_figure_places_colours_and_sizes_each_minimum_as_recorded():
    from sgdlab.report.figures.landscapes import pspin_figure

    emb = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, -5.0]])
    e = np.array([-0.5, -0.6, -0.7])
    fig = pspin_figure({"a": emb}, {"a": e}, {"a": 3}, {"a": np.array([1, 4, 9])})
    ax = fig.axes[0]
    (sc,) = ax.collections
    np.testing.assert_array_equal(sc.get_offsets(), emb)
    np.testing.assert_array_equal(sc.get_array(), e)
    assert sc.get_sizes() == pytest.approx(24.0 * np.sqrt([1, 4, 9]))
    # only minima reached from more than one start are labelled
    assert [t.get_text() for t in ax.texts] == ["×4", "×9"]
    assert "from 14 starts" in ax.get_title()
    plt.close(fig)


def test_the_perceptron_figure_draws_each_method_s_errors_with_their_bars():
    from sgdlab.report.figures.landscapes import perceptron_figure

    alphas = [0.5, 1.0, 2.0]
    fig = perceptron_figure(alphas, {"sgd": [0.4, 0.3, 0.2], "entropy": [0.35, 0.2, 0.1]},
                            {"sgd": [0.01, 0.02, 0.03]}, paper="Chaudhari 2018, §3.1.1")
    (ax,) = fig.axes
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["entropy", "sgd"]
    ys = sorted(tuple(c.lines[0].get_ydata()) for c in ax.containers)
    assert ys == [(0.35, 0.2, 0.1), (0.4, 0.3, 0.2)]
    sgd = [c for c in ax.containers if tuple(c.lines[0].get_ydata()) == (0.4, 0.3, 0.2)][0]
    (seg,) = sgd.lines[2]
    assert [s[1, 1] - s[0, 1] for s in seg.get_segments()] == pytest.approx([0.02, 0.04, 0.06])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("α = N / d", "generalisation error ε")
    # whose perceptron, and what the bars are
    assert ax.get_title().replace("\n", " ") == (
        "Chaudhari 2018, §3.1.1: binary perceptron, teacher–student (error bars ± 1 s.e.)")
    plt.close(fig)
    fig = perceptron_figure(alphas, {"sgd": [0.4, 0.3, 0.2]})
    assert not fig.axes[0].get_title().endswith("s.e.)")
    plt.close(fig)


def test_the_escape_figures_draw_paths_rates_and_sharpness_from_the_data():
    from sgdlab.report.figures.landscapes import escape_chains_figure, escape_run_figure

    g = np.linspace(-2.0, 2.0, 5)
    gx, gy = np.meshgrid(g, g)
    t = np.array([[0.0, 1.0], [0.5, 1.5], [1.0, -1.0]])
    fig = escape_run_figure(gx, gy, gx ** 2 + gy ** 2, {"gd": t}, {"gd": 0.25, "sgd": 0.5},
                            [0, 10, 20], {"gd": [1.0, 0.5, 0.1]})
    traj, bars, sharp = fig.axes[:3]
    np.testing.assert_array_equal(traj.get_lines()[0].get_xydata(), t)
    assert [p.get_height() for p in bars.patches] == [25.0, 50.0]
    assert bars.get_ylim() == (0, 105)          # the whole 0-100 % scale, whatever the rates
    (curve,) = [ln for ln in sharp.get_lines() if len(ln.get_xydata()) == 3]
    np.testing.assert_array_equal(curve.get_xydata(), [[0, 1.0], [10, 0.5], [20, 0.1]])
    assert sharp.get_yscale() == "log"
    plt.close(fig)
    paths = [np.array([[0.0, 0.0], [1.0, 2.0]]), np.array([[3.0, 4.0], [5.0, 6.0]])]
    fig = escape_chains_figure({"SGD": (paths, (1.0, -1.0), (-2.0, 2.0))})
    ax = fig.axes[0]
    lines = ax.get_lines()
    for ln, p in zip(lines, paths):
        np.testing.assert_array_equal(ln.get_xydata(), p)
    marks = {ln.get_label(): ln.get_xydata().tolist() for ln in lines[2:]}
    assert marks == {"sharp min": [[1.0, -1.0]], "flat min": [[-2.0, 2.0]]}
    plt.close(fig)


def test_the_escape_chains_figure_draws_coinciding_repetitions_once_and_counts_them():
    """Plain GD's repetitions are one path: drawn one on another they read as one repetition
    under a legend of one line per repetition."""
    from sgdlab.report.figures.landscapes import escape_chains_figure

    gd = [(1.0, 1.0), (2.4, 0.0), (-1.0, -1.0)]
    noisy = [(1.0, 1.0), (0.5, 1.5), (-1.0, -0.9)]
    # within a line's width (1 % of the panel's span) of GD's path: on the page, the same
    near = [(1.0, 1.0), (2.4, 0.001), (-1.0, -1.0)]
    fig = escape_chains_figure({"GD": ([gd] * 5, (1.0, 1.0), (-1.0, -1.0)),
                                "mixed": ([gd, noisy, near, gd], (1.0, 1.0), (-1.0, -1.0)),
                                "GLD": ([gd, noisy], (1.0, 1.0), (-1.0, -1.0))})
    paths = {ax.get_title(): [ln for ln in ax.get_lines() if len(ln.get_xydata()) > 1]
             for ax in fig.axes if ax.get_visible()}
    assert [ln.get_xydata().tolist() for ln in paths["GD"]] == [[list(p) for p in gd]]
    assert paths["GD"][0].get_label() == "5 coinciding repetitions (one line)"
    assert [ln.get_label() for ln in paths["mixed"]][0] == "3 coinciding repetitions (one line)"
    np.testing.assert_array_equal(paths["mixed"][1].get_xydata(), noisy)
    assert len(paths["GLD"]) == 2
    legends = {ax.get_title(): ax.get_legend() for ax in fig.axes if ax.get_visible()}
    assert legends["GD"].get_title().get_text() == "one line per repetition"
    assert [t.get_text() for t in legends["mixed"].get_texts()] == [
        "3 coinciding repetitions (one line)", "sharp min", "flat min"]
    assert legends["GLD"] is None              # no line there stands for several
    plt.close(fig)


def _paper_figures():
    """{figure function's name: (a function of ``paper`` that draws it, where its title
    is)} of every landscape figure that cites the paper it reproduces."""
    from sgdlab.report.figures import landscapes as lf

    x = np.linspace(-1.0, 1.0, 5)
    g = np.meshgrid(x, x)
    emb = np.array([[0.0, 1.0], [2.0, 3.0]])
    suptitle, first_title = (lambda fig: fig.get_suptitle()), (lambda fig: fig.axes[0].get_title())
    return {
        "escape_run_figure": (lambda paper: lf.escape_run_figure(
            *g, g[0] ** 2, {"gd": np.zeros((3, 2))}, {"gd": 0.5}, [0, 10], {"gd": [1.0, 0.5]},
            paper=paper), suptitle),
        "pspin_figure": (lambda paper: lf.pspin_figure(
            {"a": emb}, {"a": np.array([-0.5, -0.6])}, {"a": 2}, paper=paper), suptitle),
        "pde_figure": (lambda paper: lf.pde_figure(x, x ** 2, {"heat equation": x}, 0.5,
                                                   paper=paper), first_title),
        "fokker_planck_figure": (lambda paper: lf.fokker_planck_figure(
            x, x ** 2, {"viscous HJ": x}, {"initial": x, "SGD (u = f)": x}, 0.5, 2.0,
            paper=paper), first_title),
        "perceptron_figure": (lambda paper: lf.perceptron_figure(
            [0.5, 1.0], {"sgd": [0.4, 0.3]}, paper=paper), first_title),
    }


@pytest.mark.parametrize("name", ["escape_run_figure", "pspin_figure", "pde_figure",
                                  "fokker_planck_figure", "perceptron_figure"])
def test_a_figure_cites_the_paper_only_where_its_caller_names_one(name):
    """One convention in every figure: the caller passes the citation (the CLI and the
    catalogue's entry each theirs), "" by default; a title built without one had begun
    "Fig. 4.1: " (the Fokker–Planck figure's own default) or cited a paper it was not given."""
    import inspect

    from sgdlab.report.figures import landscapes

    assert inspect.signature(getattr(landscapes, name)).parameters["paper"].default == ""
    draw, title_of = _paper_figures()[name]
    fig = draw("")
    assert ": " not in title_of(fig)
    plt.close(fig)
    fig = draw("Chaudhari 2018, Fig. 9.9")
    assert title_of(fig).replace("\n", " ").startswith("Chaudhari 2018, Fig. 9.9: ")
    plt.close(fig)


def test_coinciding_smoothings_and_densities_of_fig_4_1_are_drawn_distinguishably():
    """A smoothing that leaves f as it was, or two densities that stayed in one basin, drawn
    alike: the later line hid the earlier (the charts' rule for coinciding curves)."""
    from sgdlab.report.figures.landscapes import fokker_planck_figure, pde_figure

    x = np.linspace(-1.0, 1.0, 9)
    names = ["viscous HJ", "non-viscous HJ", "heat equation"]
    fig = pde_figure(x, x ** 2, {names[0]: x ** 2 / 2, names[1]: x ** 2 / 2, names[2]: x}, 0.5)
    looks = {ln.get_label(): (ln.get_linestyle(), ln.get_marker())
             for ln in fig.axes[0].get_lines()}
    plt.close(fig)
    assert looks[names[0]] != looks[names[1]]
    assert looks[names[0]] == looks[names[2]] == looks["f"] == ("-", "None")
    fig = fokker_planck_figure(x, x ** 2, {names[0]: x ** 2, names[1]: x},
                               {"initial": x, "SGD (u = f)": x ** 2, names[0]: x ** 2,
                                names[1]: x}, 0.5, 2.0)
    top, bottom = ([(ln.get_linestyle(), ln.get_marker()) for ln in ax.get_lines()]
                   for ax in fig.axes)
    plt.close(fig)
    assert top[0] != top[1] and top[2] == ("-", "None")        # f, u = f, u = x
    assert bottom[0] != bottom[1] and bottom[2] == ("-", "None")
