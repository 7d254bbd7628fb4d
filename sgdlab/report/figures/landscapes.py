"""Figures of the analytic-landscape demonstrations (``sgdlab landscape ...``).

Every function reads recorded arrays (what the demonstration computed and saved in its
``results.json`` / ``.npz``), never a landscape object, and returns the matplotlib Figure.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from sgdlab.report.figures import cited, label_colours  # noqa: E402
from sgdlab.report.figures.axes import metric_label  # noqa: E402
from sgdlab.report.figures.charts import (COINCIDENT_HEIGHT, curves, error_bars,  # noqa: E402
                                          grouped_bars, interval_errors, panels,
                                          separate_coincident, wrapped)

__all__ = ["double_well_figure", "escape_chains_figure", "escape_run_figure",
           "fokker_planck_figure", "ou_figure", "pde_figure", "perceptron_figure",
           "pspin_figure", "smoothing_colour"]

Array = np.ndarray


def escape_run_figure(
    grid_x: Array, grid_y: Array, loss_grid: Array, trajectories: Mapping[str, Array],
    success_rate: Mapping[str, float], sharpness_steps: Sequence[int],
    sharpness: Mapping[str, Sequence[float]], labels: Mapping[str, str] | None = None,
    success_rule: str = "success",
    intervals: Mapping[str, tuple[float, float]] | None = None, *, paper: str = "",
) -> plt.Figure:
    """Zhu et al. Fig. 3 of one ``sgdlab landscape escape`` run of every method, in one figure:
    one repetition per method on the contours of L; success rates (``success_rule`` says what
    counted as one: the rate is not always that of having reached the flat basin); expected
    sharpness vs iteration (mean over repetitions). The catalogue's runs, one per method and
    seed, are drawn as separate figures instead (:func:`escape_chains_figure`, and bars with
    Wilson intervals and curves pooled over the seeds), since their store holds no loss grid.
    ``intervals``: each method's interval (lo, hi) of its success rate, drawn as error bars
    (:meth:`~sgdlab.landscapes.escape.EscapeResult.success_interval`). ``paper``: the
    figure reproduced ("Zhu et al. 2019, Fig. 3"), the title's first words."""
    labels = labels or {}
    # one colour per method in all three panels, and one legend for them below the panels
    # (inside the trajectories' panel it hid some of the iterates)
    names = list(dict.fromkeys([*trajectories, *success_rate, *sharpness]))
    colour = label_colours(names)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), layout="constrained")
    ax = axes[0]
    cs = ax.contour(grid_x, grid_y, loss_grid, levels=12, cmap="Greys", linewidths=0.7)
    ax.clabel(cs, inline=True, fontsize=7)
    for name, traj in trajectories.items():
        t = np.asarray(traj)
        ax.plot(t[:, 0], t[:, 1], ".", ms=2, alpha=0.7, color=colour[name])
    ax.set(xlabel="w₁", ylabel="w₂", xlim=(grid_x.min(), grid_x.max()),
           ylim=(grid_y.min(), grid_y.max()))
    ax.set_title("one repetition per method", fontsize=10)     # as the charts' titles
    rates = list(success_rate)
    errs = None if intervals is None else interval_errors(
        [100 * success_rate[n] for n in rates],
        [(100 * intervals[n][0], 100 * intervals[n][1]) for n in rates])
    grouped_bars([labels.get(n, n) for n in rates],
                 {"success rate": ([100 * success_rate[n] for n in rates], errs)},
                 ylabel=f"{success_rule} (%)", ax=axes[1],
                 title="success rate" + ("" if intervals is None else " (Wilson interval)"),
                 colors=[colour[n] for n in rates])
    axes[1].set_ylim(0, 105)
    curves({name: (list(sharpness_steps), list(vals), None) for name, vals in sharpness.items()},
           xlabel="iteration", ylabel=metric_label("sharpness/expected"), logy=True,
           ax=axes[2], title="ν ~ N(0, σ²I)", legend=False,
           styles={name: {"color": colour[name]} for name in sharpness})
    handles = [Line2D([], [], color=colour[n], marker="o", ms=5, label=labels.get(n, n))
               for n in names]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(names), fontsize=8,
               frameon=False)
    # the panels name their parts only: which figure of which paper, and of what
    fig.suptitle(f"{cited(paper)}escaping the sharp minimum of the two-basin loss", fontsize=11)
    return fig


def escape_chains_figure(chains: Mapping[str, tuple[Sequence[Array], Sequence[float],
                                                   Sequence[float]]], *,
                         title: str | None = None) -> plt.Figure:
    """The escape chains of the catalogue's runs, one panel per method: ``chains[title]`` is
    (the run's stored trajectories, one line per repetition; its sharp minimum; its flat
    minimum), the minima its own since the seed draws the landscape's data shifts.
    Repetitions that coincide (:func:`_coinciding_paths`: plain GD's, noiseless, are one path)
    are drawn once, labelled with how many they are: drawn one on another, they read as one
    repetition under a legend that promised a line each. ``title``: the figure's (which
    figure of the paper, how many of the repetitions are drawn); the panels name only the
    method."""
    fig, axes = panels(len(chains))
    # wrapped to the figure: one method's panel (4.2 inches) was narrower than the paper's
    # figure and repetitions named
    fig.suptitle(wrapped(title or "escape paths from the sharp minimum",
                         0.95 * fig.get_figwidth()), fontsize=10)
    for ax, (title, (trajectories, sharp, flat)) in zip(axes, chains.items()):
        for path, count in _coinciding_paths(trajectories):
            ax.plot(path[:, 0], path[:, 1], lw=0.7,
                    **({"label": f"{count} coinciding repetitions (one line)"} if count > 1
                       else {}))
        ax.plot(*sharp, "k^", label="sharp min")
        ax.plot(*flat, "ks", label="flat min")
        ax.set_title(title, fontsize=9)
        ax.set(xlabel="w₁", ylabel="w₂")      # the paper's L(w₁, w₂), App. B
        if ax is not axes[0] and len(ax.get_legend_handles_labels()[0]) > 2:
            ax.legend(fontsize=7)             # how many repetitions its one line stands for
    axes[0].legend(fontsize=7, title="one line per repetition", title_fontsize=7)
    fig.tight_layout()
    return fig


def _coinciding_paths(paths: Sequence[Array]) -> list[tuple[Array, int]]:
    """The distinct paths of ``paths`` (each a sequence of points (w₁, w₂)) in the order
    first drawn, each with how many of ``paths`` coincide with it: as many points, each
    within :data:`~sgdlab.report.figures.charts.COINCIDENT_HEIGHT` of the paths' span in
    either coordinate of the first's (a line's width on the panel), or both NaN."""
    arrays = [np.asarray(p, float).reshape(-1, 2) for p in paths]
    finite = np.concatenate([a[np.isfinite(a).all(1)] for a in arrays] or [np.zeros((0, 2))])
    span = np.ptp(finite, axis=0) if len(finite) else np.zeros(2)
    drawn: list[list] = []
    for a in arrays:
        for entry in drawn:
            b = entry[0]
            with np.errstate(invalid="ignore"):
                if b.shape == a.shape and np.all((a == b) | (np.isnan(a) & np.isnan(b))
                                                 | (np.abs(a - b) <= COINCIDENT_HEIGHT * span)):
                    entry[1] += 1
                    break
        else:
            drawn.append([a, 1])
    return [(a, count) for a, count in drawn]


def ou_figure(ratios: Sequence[float], measured: Sequence[float], stderr: Sequence[float],
              predicted: Sequence[float], batch_sizes: Sequence[int]) -> plt.Figure:
    """Stationary excess loss of SGD on the quadratic vs η/S with Jastrzebski's (η/4S) Tr H;
    one marker per batch size S (settings of equal η/S share an abscissa: text labels there
    overlapped)."""
    fig, ax = plt.subplots(figsize=(6, 4.5), layout="constrained")
    order = np.argsort(ratios)
    eq7 = "(η/4S) Tr H (eq. 7)"
    curves({eq7: (np.asarray(ratios)[order], np.asarray(predicted)[order], None)},
           xlabel="η / S", ylabel="E[L] − L*", ax=ax, legend=False, styles={eq7: {"color": "k"}})
    s_all = np.asarray(batch_sizes)
    chains, styles = {}, {}
    for i, s in enumerate(sorted(set(batch_sizes))):
        on = s_all == s
        label = f"SGD chains, S = {s} (±2 s.e.)"
        chains[label] = (np.asarray(ratios)[on], np.asarray(measured)[on],
                         2 * np.asarray(stderr)[on])
        # hollow markers large enough to tell the batch sizes apart where they overlap
        styles[label] = {"marker": "osD^v"[i % 5], "ms": 6, "mfc": "none", "ls": "none",
                         "color": f"C{i % 10}"}
    error_bars(chains, xlabel="η / S", ylabel="E[L] − L*", ax=ax, styles=styles,
               title="SGD on a quadratic with C = H (Jastrzebski et al. 2018, eq. 7)")
    return fig


def double_well_figure(
    edges1: Array, edges2: Array, histograms: Mapping[str, Array], stationary: Array,
    resting_points: Mapping[str, Sequence[Sequence[float] | None]],
    angular: Mapping[str, tuple[float, ...]], *, title: str | None = None,
) -> plt.Figure:
    """Histogram of X per λ against e^{−Φ} (contours) with the drift's resting points, and the
    measured vs exact mean angular velocity (``angular[name]``: (measured, closed form) or
    (measured, closed form, standard error), the error drawn as ±2 s.e.). ``title``: which
    seeds' chains the histograms hold."""
    n = len(histograms)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * (n + 1), 4.3), constrained_layout=True)
    c1 = (edges1[:-1] + edges1[1:]) / 2
    c2 = (edges2[:-1] + edges2[1:]) / 2
    for ax, (name, h) in zip(axes, histograms.items()):
        ax.pcolormesh(edges1, edges2, np.asarray(h).T, cmap="viridis", shading="flat")
        ax.contour(c1, c2, np.asarray(stationary).T, levels=6, colors="w", linewidths=0.7)
        for p in resting_points.get(name, []):
            if p is not None:
                ax.plot(*p, "r*", ms=10)
        ax.set(title=f"{name}: histogram of X vs e^(−Φ)", xlabel="$x_1$", ylabel="$x_2$")
    names = list(angular)
    err = [2 * angular[k][2] if len(angular[k]) > 2 else np.nan for k in names]
    some = not np.isnan(err).all()
    grouped_bars(names, {"measured" + (" (±2 s.e.)" if some else ""):
                         ([angular[k][0] for k in names], err if some else None),
                         r"closed form $\lambda\pi^{3/2}/Z$": ([angular[k][1] for k in names],
                                                                None)},
                 ylabel="rad / unit time", title="mean angular velocity", ax=axes[-1])
    # what the maps' marks are, once for all panels (a legend inside a map hides the histogram)
    handles = [Line2D([], [], color="0.35", lw=0.8, label="contours of e^(−Φ)"),
               Line2D([], [], color="r", marker="*", ms=10, ls="none",
                      label="zeros of the drift −∇Φ + j")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


ANNOTATE_MAX = 30


def pspin_figure(embeddings: Mapping[str, Array], energies: Mapping[str, Array],
                 counts: Mapping[str, int],
                 basin_sizes: Mapping[str, Array] | None = None, *,
                 paper: str = "") -> plt.Figure:
    """Thesis Fig. 2.2 style: 2-D embedding (t-SNE) of the distinct minima found per regime
    (one point each: ``embeddings[name]`` row i, ``energies[name][i]``), coloured by energy
    per spin; with ``basin_sizes`` (the number of starts that descended into each minimum)
    the marker area grows as √size, and when at most ``ANNOTATE_MAX`` minima are shown each
    reached from more than one start is labelled ×size. ``paper``: the figure reproduced
    ("Chaudhari 2018, Fig. 2.2"), the title's first words."""
    n = len(embeddings)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4.4), squeeze=False)
    for ax, name in zip(axes[0], embeddings):
        emb, e = np.asarray(embeddings[name]), np.asarray(energies[name])
        if len(emb) != len(e):
            raise ValueError(f"pspin_figure: {name}: {len(emb)} embedded points but "
                             f"{len(e)} energies")
        k = None if basin_sizes is None else np.asarray(basin_sizes[name], int)
        sizes = 18.0 if k is None else 24.0 * np.sqrt(k.astype(float))
        lo, hi = float(e.min()), float(e.max())
        if hi - lo < 1e-6:  # one energy level: a readable colour scale around it
            lo, hi = lo - 0.01, hi + 0.01
        sc = ax.scatter(emb[:, 0], emb[:, 1], c=e, cmap="coolwarm", s=sizes, vmin=lo, vmax=hi)
        cb = fig.colorbar(sc, ax=ax, label="energy per spin H/N")
        cb.formatter.set_useOffset(False)
        cb.update_ticks()
        starts = "" if k is None else f" from {int(k.sum())} starts"
        if k is not None and len(k) <= ANNOTATE_MAX:
            for (x, y), m in zip(emb, k):
                if m > 1:
                    ax.annotate(f"×{m}", (x, y), xytext=(4, 4), textcoords="offset points",
                                fontsize=8)
        c = counts[name]
        # t-SNE puts two minima at the view's edges: the margin keeps a large marker whole
        ax.margins(0.12)
        ax.set(xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2")
        ax.set_title(f"{name}\n{c} distinct {'minimum' if c == 1 else 'minima'}{starts}",
                     fontsize=10)
    # the panels name the regimes; what the points are, and that each colour bar is its own
    # wrapped to the figure: over one regime's 5 inches it ran past both edges
    fig.suptitle(wrapped(f"{cited(paper)}minima of the spherical p-spin glass found by "
                         "projected GD, one point per distinct minimum (t-SNE); each panel's "
                         "colours on its own scale", 0.95 * fig.get_figwidth()), fontsize=10)
    fig.tight_layout()
    return fig


def smoothing_colour(name: str) -> str | None:
    """The colour of a smoothing PDE, by its name, in every figure: the thesis' Fig. 4.1 draws
    the viscous HJ equation red and the non-viscous one blue; the heat equation green."""
    name = name.lower()
    for key, colour in (("non-viscous", "tab:blue"), ("viscous", "tab:red"),
                        ("heat", "tab:green")):
        if key in name:
            return colour
    return None


def pde_figure(x: Array, f: Array, curves: Mapping[str, Array], t: float, *,
               paper: str = "") -> plt.Figure:
    """Thesis Fig. 4.1 style: f and its smoothings at time t. ``paper``: the figure reproduced
    ("Chaudhari 2018, Fig. 4.1"), the title's first words."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, f, "k", lw=2, label="f")
    for name, u in curves.items():
        ax.plot(x, u, color=smoothing_colour(name), label=name)
    ax.set(xlabel="x", ylabel="u(x, t)", title=f"{cited(paper)}PDE smoothing at t = {t}")
    # a smoothing that has not moved f (or two that agree) would hide the one drawn before it
    separate_coincident(ax)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fokker_planck_figure(x: Array, f: Array, smoothed: Mapping[str, Array],
                         densities: Mapping[str, Array], t: float, horizon: float, *,
                         paper: str = "") -> plt.Figure:
    """Thesis Fig. 4.1: f (black) with its viscous (red) and non-viscous (blue) HJ smoothings
    at t = T (top); the initial density (light gray) and the terminal densities of the
    Fokker–Planck equation under f (SGD, dark gray) and under each smoothing (bottom).
    ``paper``: the figure reproduced ("Chaudhari 2018, Fig. 4.1"), the title's first words."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    top.plot(x, f, "k", lw=2, label="f")
    for name, u in smoothed.items():
        top.plot(x, u, color=smoothing_colour(name), label=f"{name}, t = {t:g}")
    top.set(ylabel="u(x, t)", title=f"{cited(paper)}smoothed losses and Fokker–Planck densities")
    separate_coincident(top)
    top.legend(fontsize=8)
    items = list(densities.items())
    if items:
        name, r = items[0]
        bottom.fill_between(x, r, color="0.85", label=name)
    for i, (name, r) in enumerate(items[1:]):
        # the first terminal density is SGD's, under f itself (dark gray, as in the thesis)
        c = "0.3" if i == 0 else smoothing_colour(name)
        bottom.plot(x, r, color=c, lw=2 if i == 0 else 1.5, label=f"{name}, τ = {horizon:g}")
    bottom.set(xlabel="x", ylabel="density")
    # densities that stayed in one basin alike coincide: SGD's under f and a smoothing's
    separate_coincident(bottom)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    return fig


def perceptron_figure(alphas: Sequence[float], errors: Mapping[str, Sequence[float]],
                      stderr: Mapping[str, Sequence[float]] | None = None, *,
                      paper: str = "") -> plt.Figure:
    """Generalisation error ε = arccos(R)/π vs α = N/d for each search method (``stderr``:
    its error bars, per method, ± one standard error, as the title says) of thesis §3.1.1.
    ``paper``: the part of the paper reproduced ("Chaudhari 2018, §3.1.1"), the title's first
    words."""
    stderr = stderr or {}
    bars = " (error bars ± 1 s.e.)" if any(v is not None for v in stderr.values()) else ""
    return error_bars({name: (alphas, errs, stderr.get(name)) for name, errs in errors.items()},
                      xlabel="α = N / d", ylabel="generalisation error ε",
                      title=f"{cited(paper)}binary perceptron, teacher–student{bars}",
                      figsize=(6, 4.5))
