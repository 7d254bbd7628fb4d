"""Curvature and gradient-noise figures, from recorded data only.

Inputs are what :mod:`sgdlab.measure` returns and ``sgdlab measure`` writes to
``measurements.json`` (arrays as lists), or a run history ``{name: [(step, value), ...]}``
with the names the instruments log (:mod:`sgdlab.train.instruments.curvature` / ``noise``):

- :func:`spectral_density_figure` — SLQ density of the Hessian (Ghorbani et al. Fig. 1 style),
  log density axis, optionally with exact eigenvalues as a rug;
- :func:`eigenspectrum_figure` — sorted eigenvalues (|λ| on a log axis) of several matrices,
  e.g. D(x) = Σ (Gram-trick spectrum) and the Hessian top-k (Chaudhari Ch. 6 style);
- :func:`signed_log_histogram_figure` — negative and positive values (the diagonal of a
  Fisher information, Chaudhari Fig. 3.4c) in log-spaced bins of |λ|, the peak at zero clipped;
- :func:`alignment_figure` — Σ–H alignment: |cos| of the i-th eigenvectors and normalised
  eigenvalues (Zhu et al. Figs. 1(b)-(c), 8 and 9 style), from a single measurement;
- :func:`curvature_history_figure` — ``hess/*`` (``ggn/*``, ``fisher/*``), ``noise/*``,
  ``align/residual`` against steps;
- :func:`noise_magnitude_figure` — ‖∇L‖ vs sqrt(η Tr Σ / m) against steps (Zhu Fig. 2);
- :func:`batch_statistics_figure` — the ``batch_statistics`` instrument's tests, GSNR / EB
  criterion and noise scale against steps.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from sgdlab.report.figures.axes import (CURVATURE_SERIES, natural_order,  # noqa: E402
                                        quantity_label)
from sgdlab.report.figures.charts import curves, separate_coincident, wrapped  # noqa: E402

__all__ = ["alignment_figure", "batch_statistics_figure", "curvature_history_figure",
           "eigenspectrum_figure", "noise_magnitude_figure", "round_off_level",
           "signed_log_histogram_figure", "spectral_density_figure"]

History = Mapping[str, Sequence[tuple[int, float]]]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def spectral_density_figure(grid: Sequence[float], density: Sequence[float], *,
                            eigenvalues: Sequence[float] | None = None,
                            eigenvalues_label: str = "Lanczos top-k", log: bool = True,
                            title: str | None = None) -> plt.Figure:
    """The broadened spectral density φ(t) (integrates to 1) against t; ``eigenvalues`` (e.g.
    the Lanczos top-k, or an exact spectrum) are drawn as a rug at the foot of the axes. On
    the log axis a density below 1e-12 of its peak (0 far from every eigenvalue) lies on the
    axis' foot: the axis starts there."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    g, dens = np.asarray(grid, float), np.asarray(density, float)
    if len(g) == 0:
        _empty(ax, "no spectral density recorded")
        return fig
    if log:
        # of the finite values: a NaN peak made the floor NaN and every point with it
        peak = np.max(dens[np.isfinite(dens)], initial=0.0)
        floor = max(peak * 1e-12, 1e-300)
        ax.semilogy(g, np.maximum(dens, floor), lw=1.5)
        if (dens < floor).any():
            # clipped stretches drawn above the axis' foot read as a measured density of
            # 1e-11, flat between the peaks
            ax.set_ylim(bottom=floor)
    else:
        ax.plot(g, dens, lw=1.5)
    if eigenvalues is not None and len(eigenvalues):
        ax.plot(np.asarray(eigenvalues, float), np.full(len(eigenvalues), 0.04), "|", ms=10,
                color="C3", label=eigenvalues_label, transform=ax.get_xaxis_transform())
        ax.legend(fontsize=8)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (SLQ, Gaussian-broadened)")
    ax.set_title(title or "Hessian spectral density")
    return fig


def _thinned(ranks: np.ndarray, sizes: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` of the points (rank, |λ|) of one sign — ranks
    increasing, sizes > 0 decreasing — half spread evenly in log rank, half in log |λ| (the
    ends kept): the curve on log-log axes looks the same, its last-decade drop included, while
    a 1.7-million-entry Fisher diagonal (All-CNN-C) stays a figure of kilobytes."""
    n = len(ranks)
    if n <= max_points:
        return np.arange(n)
    half = max(max_points // 2, 2)
    by_rank = np.searchsorted(ranks, np.geomspace(ranks[0], ranks[-1], half))
    depth = -np.log(sizes)              # non-decreasing
    by_size = np.searchsorted(depth, np.linspace(depth[0], depth[-1], half))
    return np.unique(np.clip(np.concatenate([by_rank, by_size, [n - 1]]), 0, n - 1))


def _eps(dtype) -> float:
    """Machine epsilon of a torch or numpy dtype, or of one named ("float32")."""
    import torch

    if isinstance(dtype, torch.dtype):
        return float(torch.finfo(dtype).eps)
    return float(np.finfo(np.dtype(dtype)).eps)


def _dtype_name(dtype) -> str:
    import torch

    return str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) \
        else np.dtype(dtype).name


def round_off_level(values: Sequence[float], dtype, dim: int | None = None) -> float:
    """The round-off level of a spectrum computed in ``dtype``: numpy's ``matrix_rank``
    threshold |λ|_max · d · eps, which the rank and the dense spectra here use
    (:meth:`sgdlab.measure.noise.GradientCovariance.rank_threshold`); ``dim``: the matrix's
    d, default the number of ``values`` (a full spectrum)."""
    v = np.abs(np.asarray(values, float)).reshape(-1)
    # d counts a non-finite eigenvalue too: it is one of the matrix's
    return float(v[np.isfinite(v)].max(initial=0.0)) * (dim or len(v)) * _eps(dtype)


def eigenspectrum_figure(spectra: Mapping[str, Sequence[float]], *,
                         title: str | None = None, max_points: int = 2000,
                         dtype=None, dims: Mapping[str, int] | None = None) -> plt.Figure:
    """Each spectrum sorted by decreasing |λ| against its rank (log-log), negative eigenvalues
    drawn hollow; exact zeros (e.g. weights no input reaches) have no place on a log axis and
    are counted in the legend instead. Each sign draws at most ``max_points`` of its points
    (:func:`_thinned`).

    ``dtype``: the dtype the spectra were computed in (one for all, or ``{name: dtype}`` for
    those whose dtype is known): a dotted line at each one's :func:`round_off_level` (``dims``:
    ``{name: d}`` of a spectrum that is not the whole one, a top-k), the axis cut two decades
    below the lowest when every spectrum has one, since what lies below is round-off, not
    curvature."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    drawn, labels, levels = 0, [], []
    for i, (name, vals) in enumerate(spectra.items()):
        v = np.asarray(vals, float)
        if len(v) == 0:
            continue
        order = np.argsort(-np.abs(v))
        v = v[order]
        r = np.arange(1, len(v) + 1)
        pos, neg = v > 0, v < 0
        zeros = int((v == 0).sum())
        label = name + (f" ({zeros} exact zeros not shown)" if zeros else "")
        rp, vp = r[pos], v[pos]
        keep = _thinned(rp, vp, max_points)
        ax.loglog(rp[keep], vp[keep], ".", color=f"C{i}", label=label, ms=4)
        labels.append(label)
        if neg.any():
            rn, vn = r[neg], -v[neg]
            keep = _thinned(rn, vn, max_points)
            ax.loglog(rn[keep], vn[keep], "o", mfc="none", color=f"C{i}", ms=3,
                      label=f"{name} (negative, |λ|)")
            labels.append(f"{name} (negative, |λ|)")
        kind = dtype.get(name) if isinstance(dtype, Mapping) else dtype
        level = round_off_level(v, kind, (dims or {}).get(name)) if kind is not None else 0.0
        if level > 0:
            what = _dtype_name(kind)
            label = "round-off" + (f" ({name}, {what})" if len(spectra) > 1 else f" ({what})")
            ax.axhline(level, color=f"C{i}", ls=":", lw=1, label=label)
            labels.append(label)
            levels.append(level)
        drawn += 1
    # two equal spectra (a top-k beside the exact one, two seeds at one minimum) drawn in one
    # marker: the later hid the earlier
    separate_coincident(ax)
    if drawn:
        # below the axes: the spectra fill the plot from the top left to the bottom right,
        # and a legend inside hid the small eigenvalues; the figure grows by its rows
        ncol = 1 if max(map(len, labels)) > 35 else 2
        fig.set_figheight(3.6 + 0.17 * -(-len(labels) // ncol))
        fig.legend(fontsize=7, ncol=ncol, loc="outside lower center")
    else:
        _empty(ax, "no spectrum recorded")
    # a spectrum of unknown dtype keeps its small values in view: they may be curvature
    if levels and len(levels) == drawn and ax.get_ylim()[0] < 1e-2 * min(levels):
        ax.set_ylim(1e-2 * min(levels), None)
    ax.set_xlabel("rank i")
    ax.set_ylabel(r"$|\lambda_i|$")
    # a caller's title naming what is drawn runs wider than the 5.5-inch figure: wrapped,
    # about 9 characters of the default 12-point font to the inch
    ax.set_title(textwrap.fill(title or "eigenvalue spectra", int(fig.get_figwidth() * 9)))
    return fig


def signed_log_histogram_figure(values: Mapping[str, Sequence[float]], *, clip: float,
                                bins: int = 40, title: str | None = None) -> plt.Figure:
    """Counts (log axis) of the negative values (left, by |λ|) and the positive ones (right) in
    log-spaced bins of |λ| above ``clip``; the values with |λ| ≤ ``clip`` — the thesis' clipped
    peak at the origin — are counted in the legend, not drawn."""
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip!r}")
    fig, (neg_ax, pos_ax) = plt.subplots(1, 2, figsize=(8, 3.8), sharey=True,
                                         constrained_layout=True)
    arrays = {k: np.asarray(v, float) for k, v in values.items() if len(v)}
    big = [np.abs(v[np.abs(v) > clip]) for v in arrays.values()]
    top = max((float(b.max()) for b in big if b.size), default=0.0)
    if not arrays or top <= clip:
        for ax in (neg_ax, pos_ax):
            _empty(ax, "no value above the clip" if arrays else "no values recorded")
    else:
        edges = np.geomspace(clip, top * (1 + 1e-9), bins + 1)
        for i, (name, v) in enumerate(arrays.items()):
            near = float(np.mean(np.abs(v) <= clip))
            for ax, part in ((neg_ax, -v[v < -clip]), (pos_ax, v[v > clip])):
                if part.size:
                    ax.hist(part, bins=edges, alpha=0.5, color=f"C{i}",
                            label=f"{name} ({near:.1%} with |λ| ≤ {clip:g}, clipped)")
        for ax, side in ((neg_ax, "negative"), (pos_ax, "positive")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            if not ax.patches:
                # empty axes read as a plot that failed; a Fisher diagonal has no negatives
                _empty(ax, f"no {side} value with |λ| > {clip:g}")
        # the same range on both sides; |λ| grows to the left, away from the origin
        pos_ax.set_xlim(clip, edges[-1])
        neg_ax.set_xlim(edges[-1], clip)
        handles = [h for ax in (pos_ax, neg_ax) for h in ax.get_legend_handles_labels()[0]]
        labels = [lab for ax in (pos_ax, neg_ax) for lab in ax.get_legend_handles_labels()[1]]
        seen = dict(zip(labels, handles))
        # below the panels: the bars near the clip reach the top of both
        fig.legend(list(seen.values()), list(seen), fontsize=7, loc="outside lower center")
    neg_ax.set_xlabel("|λ| of the negative values")
    pos_ax.set_xlabel("λ (positive values)")
    neg_ax.set_ylabel("count")
    # wrapped to the figure: a title citing the paper ran past both of its edges
    fig.suptitle(wrapped(title or "negative and positive values, log scale",
                         0.95 * fig.get_figwidth(), fontsize=12))
    return fig


def alignment_figure(cosines: Sequence[float], hessian_normalised: Sequence[float],
                     sigma_normalised: Sequence[float], *, residual: float | None = None,
                     title: str | None = None, uncentred: bool = False,
                     cosine_history: Sequence[tuple] | None = None) -> plt.Figure:
    """Left: |⟨u_i, v_i⟩| per index i; right: λ_i/‖·‖_F of H and Σ (``uncentred``: of the
    uncentred second moment E[g gᵀ] = Σ + ḡḡᵀ, the matrix compared with H instead).
    ``cosine_history``: per index i, its (steps, mean, std) over training, drawn in a third
    panel as Zhu et al.'s Figs. 1(b), 8(b) and 9(b) plot the leading cosines by iteration."""
    matrix, tex = ("E[g gᵀ]", r"E[g\,g^T]") if uncentred else ("Σ", r"\Sigma")
    panels = 2 if cosine_history is None else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.4), constrained_layout=True)
    a, b = axes[:2]
    if cosine_history is not None:
        # log-spaced measurements: on a linear axis most points sit at its origin
        curves({f"i = {i}": c for i, c in enumerate(cosine_history, 1)}, xlabel="step",
               ylabel=rf"$|\cos(u_i(H), v_i({tex}))|$", ax=axes[2], log_steps_x=True)
    k = np.arange(1, len(cosines) + 1)
    if len(k):
        a.bar(k, np.asarray(cosines, float), color="C0")
        a.set_ylim(0, 1.02)
        b.plot(k, np.asarray(hessian_normalised, float), "o-", label="H")
        b.plot(k, np.asarray(sigma_normalised, float), "s--", label=matrix)
        b.legend(fontsize=8)
    else:
        _empty(a, "no alignment recorded")
    a.set_xlabel("eigen-index i")
    # mathtext: an underscore in plain text is drawn as one, not as a subscript
    a.set_ylabel(rf"$|\cos(u_i(H), v_i({tex}))|$")
    b.set_xlabel("eigen-index i")
    for ax in (a, b):       # an index: no ticks between integers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    b.set_ylabel(r"$\lambda_i\ /\ \|M\|_F$")
    sup = title or f"{matrix}–H alignment" + (" (uncentred Σ + ḡḡᵀ)" if uncentred else "")
    if residual is not None:
        # e(U_k, V_k) ∈ [0, k]: "of k" read as a count; the range says what the value means
        # a no-break space: wrapped, "[0," ended one line and "4])" began the next
        sup += f" ($e(U_k, V_k)$ = {residual:.3g} in [0,\u00a0{len(k)}])"
    fig.suptitle(wrapped(sup, 0.95 * fig.get_figwidth(), fontsize=12))
    return fig


def _series(ax, history: History, names: Sequence[str], log: bool = False,
            labels: Mapping[str, str] | None = None) -> int:
    """The recorded ``names`` against steps (:func:`~sgdlab.report.figures.charts.curves`),
    labelled by ``labels`` (default: the names), the y axis by what they measure
    (:func:`~sgdlab.report.figures.axes.quantity_label`); a log y axis where ``log`` allows
    it and a log step axis keeping 0 where the instruments measured at log-spaced steps. How
    many were drawn."""
    drawn = {(labels or {}).get(n, n): (*np.asarray(history[n], float).T, None)
             for n in names if history.get(n)}
    if drawn:
        curves(drawn, xlabel="step", ax=ax,
               ylabel=quantity_label(n for n in names if history.get(n)), logy=log,
               log_steps_x=True, markers=True)
    return len(drawn)


def curvature_history_figure(history: History, *, title: str | None = None) -> plt.Figure:
    """Hessian top eigenvalues / trace (and those of a GGN or an empirical Fisher the run
    measured: ``ggn/*``, ``fisher/*``), noise trace / rank and alignment residual vs step."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    curvature = [n for p in CURVATURE_SERIES
                 for n in sorted((n for n in history if n.startswith(f"{p}/top_")),
                                 key=natural_order)
                 + [n for n in (f"{p}/trace", f"{p}/frobenius") if n in history]]
    panels = [
        (curvature, "curvature", True),
        (["noise/trace", "noise/top_1", "noise/rank"], "gradient noise", True),
        (sorted((n for n in history if n.startswith("align/cos_")), key=natural_order)
         + ["align/residual"],
         "Σ–H alignment", False),
    ]
    for ax, (names, label, log) in zip(axes, panels):
        if not _series(ax, history, names, log):
            _empty(ax, f"no {label} recorded")
        ax.set_xlabel("step")
        ax.set_title(label)
    if title:
        fig.suptitle(title)
    return fig


def noise_magnitude_figure(history: History, *, title: str | None = None,
                           noise: str = "sqrt(η Tr Σ / m)") -> plt.Figure:
    """‖∇L‖ and the noise magnitude (``noise`` names it: sqrt(η Tr Σ / m) by default)
    against steps (log scale)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    if not _series(ax, history, ["noise/grad_norm", "noise/noise_norm"], log=True,
                   labels={"noise/grad_norm": "‖∇L‖ (mean gradient)",
                           "noise/noise_norm": f"{noise} (noise)"}):
        _empty(ax, "no noise magnitude recorded")
    ax.set_xlabel("step")
    ax.set_ylabel("norm")
    # wrapped to the figure: a title citing the paper and naming the run ran past its edge
    ax.set_title(wrapped(title or "gradient vs noise magnitude", 0.95 * fig.get_figwidth(),
                         fontsize=12))
    return fig


def batch_statistics_figure(history: History, *, prefix: str = "batch",
                            title: str | None = None) -> plt.Figure:
    """Norm / inner-product / orthogonality tests (each passes with a tolerance above its
    curve), mean GSNR and EB criterion, and the noise scale against steps; the noise scale
    is McCandlish et al.'s ratio of running means of Tr S and |G|² (a ratio per batch is
    dominated by batches whose |G|² estimate is near zero)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    tests = [f"{prefix}/{n}" for n in ("norm_test", "inner_product_test", "orthogonality_test")]
    if not _series(axes[0], history, tests, log=True):
        _empty(axes[0], "no batch tests recorded")
    axes[0].set_title("batch-size tests (smallest passing θ)")
    if not _series(axes[1], history, [f"{prefix}/mean_gsnr", f"{prefix}/eb_criterion"],
                   log=False):
        _empty(axes[1], "no GSNR recorded")
    axes[1].axhline(0.0, color="k", lw=0.5)
    axes[1].set_title("mean GSNR, EB criterion (> 0: stop)")
    num, den = history.get(f"{prefix}/trace_cov") or [], history.get(
        f"{prefix}/grad_sq_unbiased") or []
    if num and len(num) == len(den):
        steps = np.asarray([s for s, _ in num], float)
        den_sum = np.cumsum([v for _, v in den])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(den_sum != 0, np.cumsum([v for _, v in num]) / den_sum, np.nan)
        axes[2].plot(steps, ratio, ".-", ms=3, label="Tr S / |G|² (running means)")
        axes[2].legend(fontsize=7)
    else:
        _empty(axes[2], "no noise scale recorded")
    axes[2].set_title("noise scale B_simple")
    for ax in axes:
        ax.set_xlabel("step")
    if title:
        fig.suptitle(title)
    return fig
