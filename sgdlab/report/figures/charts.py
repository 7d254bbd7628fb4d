"""The charts every figure is drawn with: curves (:func:`curves`), points with error bars
against a setting (:func:`error_bars`), bars side by side (:func:`grouped_bars`), histograms
(:func:`histogram`) and a grid of panels (:func:`panels`)
(Agg backend; each reads only the numbers it is given and returns the Figure, or draws into a
given ``ax``). The catalogue's analyses, the CLI's figures and the paper-specific figures of
``sgdlab.report.figures.<area>`` (walk plots, spectra panels, ...) draw their curves and bars
with these, so that a rule (a curve that turns NaN ends in a cross, a bar or point without a
value says so, a log axis only for positive values) holds in every figure."""
from __future__ import annotations

from collections.abc import Sequence

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.transforms import ScaledTranslation  # noqa: E402

# SVG text stays text (editable, several times smaller than glyphs converted to paths)
matplotlib.rcParams["svg.fonttype"] = "none"
import numpy as np  # noqa: E402

from sgdlab.report.figures.axes import isolated, log_scale, log_steps  # noqa: E402

Series = dict[str, tuple[Sequence[float], Sequence[float], Sequence[float] | None]]


def curves(series: Series, *, xlabel: str, ylabel: str, title: str = "", logx: bool = False,
           logy: bool = False, figsize=(5.2, 3.6), markers: bool = False, ax=None,
           steps: bool = False, marks: Sequence[float] = (), log_steps_x: bool = False,
           styles: dict[str, dict] | None = None, legend_outside: bool = False,
           legend: bool = True):
    """One line per label; the optional third element is a ±band (e.g. std over seeds).
    ``marks``: x positions drawn as dashed vertical lines (where a run continues another,
    an optimizer switch).
    ``logx`` / ``logy`` apply only when every finite value on that axis is positive (a log
    axis would drop the others without a word). ``steps``: each value holds until the next x
    (``drawstyle="steps-post"``), for quantities set at x and kept, such as a learning rate
    sampled once per epoch, which a line would draw as ramps. ``log_steps_x``: x counts
    steps from 0, drawn on a log axis that keeps the 0 (:func:`~sgdlab.report.figures.axes.
    log_steps`) when it spans decades, for quantities measured at log-spaced steps.
    ``styles``: matplotlib keywords per label (``{"color": "C0", "ls": ":"}``), so that one
    method keeps one colour across figures, or one network across the instants it was
    measured at. ``legend_outside``: the legend right of the axes, for curves that fill every
    corner of them (a legend inside would hide some); so is a legend of more than
    :data:`MAX_LEGEND_INSIDE` entries, the figure (when made here) widened by it. A curve
    that coincides with an earlier one is restyled (:func:`separate_coincident`).
    ``legend=False``: none, where one legend of the figure names the curves of all its
    panels."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    ended = False
    for label, (x, y, err) in series.items():
        x, y = np.asarray(x, float), np.asarray(y, float)
        ok = np.isfinite(y)
        line, = ax.plot(x, y, label=label if ok.any() else f"{label} (no finite value)",
                        **{"marker": "o" if markers or isolated(y) else None, "ms": 3,
                           "drawstyle": "steps-post" if steps else "default",
                           **(styles or {}).get(label, {})})
        if ok.any() and not ok[-1]:
            # a curve that turns NaN / inf (a run that diverged) ends in a cross, not silently
            last = np.flatnonzero(ok)[-1]
            ax.plot(x[last], y[last], "x", color=line.get_color(), ms=7, mew=2)
            ended = True
        if err is not None:
            e = np.asarray(err, float)
            ax.fill_between(x, y - e, y + e, alpha=0.2, color=line.get_color(),
                            step="post" if steps else None)
    for x in marks:
        ax.axvline(x, color="0.4", ls="--", lw=0.8)
    if log_steps_x and not logx:
        log_steps(ax, [v for x, _, _ in series.values() for v in x])
    _scales_and_labels(ax, series, logx=logx, logy=logy, xlabel=xlabel, ylabel=ylabel,
                       title=title)
    separate_coincident(ax)
    if series and legend:
        handles, labels = ax.get_legend_handles_labels()
        if ended:
            handles.append(Line2D([], [], color="0.3", marker="x", ls="none", ms=7, mew=2))
            labels.append("last finite value (NaN / inf after)")
        outside = legend_outside or len(labels) > MAX_LEGEND_INSIDE
        leg = ax.legend(handles, labels, fontsize=7,
                        **({"loc": "upper left", "bbox_to_anchor": (1.02, 1)} if outside
                           else {}))
        if outside and fig is not None:
            # the figure widened by the legend: the axes keep their width, nothing is cut off
            w = leg.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi
            fig.set_figwidth(fig.get_figwidth() + w + 0.1)
    ax.grid(alpha=0.3)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure


# legend entries of a curves() axes beyond which the legend goes right of the axes: seven
# curves' legend covered the data it names (zhu-gld-const-tuning's sharpness)
MAX_LEGEND_INSIDE = 5
# (line style, marker) of a curve that coincides with k earlier curves of its axes, by k - 1
COINCIDENT_STYLES = (("--", "s"), (":", "^"), ("-.", "v"), ((0, (5, 1, 1, 1)), "D"))
# markers at most this many per coinciding curve, each curve's at its own offset
COINCIDENT_MARKS = 8
# curves closer than this fraction of the axes' height coincide: about a line's width on a
# figure's axes (gld-const's σ = 1e-2 and 1e-3, 0.9 % apart, read as one line)
COINCIDENT_HEIGHT = 0.01


def separate_coincident(ax) -> None:
    """Restyle each labelled line of ``ax`` that coincides with an earlier labelled line (one
    lies on the other, :func:`_coincident`, within :data:`COINCIDENT_HEIGHT` of the axes'
    height, on their scale and limits) and which is drawn alike: dashed, dotted, ...
    (:data:`COINCIDENT_STYLES`, by how many earlier lines it coincides with), with markers of
    its own shape at positions offset from the other coinciding lines' (on a curve of a few
    points, which they must share, each smaller than the last). Drawn over one another in one
    style, the later line hid the earlier, whose legend entry then named no visible line
    (both methods' min |∇f| at 0, two cyclic periods of one loss); the labels, colours and
    data stay. Lines without a label ("_..."), such as marks and crosses, are left alone.
    Call before the legend is made: it copies the styles."""
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    if len(lines) < 2:
        return
    # y as a fraction of the axes' height (a log axis' too): what the eye tells apart; the
    # limits brought up to date first (autoscaling is lazy: transLimits held the default 0-1)
    ax.get_ylim()
    to_axes = ax.transScale + ax.transLimits
    data = []
    for ln in lines:
        x, y = np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
        with np.errstate(all="ignore"):
            height = to_axes.transform(np.column_stack([np.zeros_like(y), y]))[:, 1]
        data.append((x, height))
    for i, line in enumerate(lines):
        same = [j for j in range(i) if _coincident(data[i], data[j])]
        looks = (line.get_linestyle(), line.get_marker())
        if not same or all((lines[j].get_linestyle(), lines[j].get_marker()) != looks
                           for j in same):
            continue
        ls, marker = COINCIDENT_STYLES[(len(same) - 1) % len(COINCIDENT_STYLES)]
        every = max(1, -(-len(data[i][0]) // COINCIDENT_MARKS))
        # each coinciding line's markers between the others', and where they must share points
        # (a curve of a few), smaller than the earlier ones': nested, none hides another
        line.set(linestyle=ls, marker=marker, markersize=max(2.5, 6.0 - 1.2 * (len(same) - 1)),
                 markevery=(len(same) * every // (len(COINCIDENT_STYLES) + 1), every))


def _coincident(a, b) -> bool:
    """Whether one of the curves ``a`` and ``b`` ((x, y) arrays) lies on the other: each of
    its finite points (one at least) at an x of the other's, their ys within
    :data:`COINCIDENT_HEIGHT`. A run continued by another (xing-stuck-continuation's
    isotropic-noise run under its lower-rate continuation) lies on it over the steps it has."""
    finite = [(x[ok], y[ok]) for x, y in (a, b) for ok in [np.isfinite(x) & np.isfinite(y)]]
    (xs, ys), (xl, yl) = sorted(finite, key=lambda c: len(c[0]))
    if not len(xs):
        return False
    order = np.argsort(xl, kind="stable")
    xl, yl = xl[order], yl[order]
    at = np.clip(np.searchsorted(xl, xs), 0, len(xl) - 1)
    # the closer of the two neighbours in x: searchsorted finds the one at or above
    below = np.clip(at - 1, 0, len(xl) - 1)
    at = np.where(np.abs(xl[below] - xs) < np.abs(xl[at] - xs), below, at)
    return bool(np.allclose(xl[at], xs, rtol=1e-9, atol=0)
                and np.all(np.abs(yl[at] - ys) <= COINCIDENT_HEIGHT))


def _scales_and_labels(ax, series: dict, *, logx: bool, logy: bool, xlabel: str, ylabel: str,
                       title: str) -> None:
    """Log axes over the series' values (x, y, ...), the axis labels and the title: the part
    every chart of series against a setting ends with."""
    if logx:
        log_scale(ax, [v for x, *_ in series.values() for v in x], axis="x")
    if logy:
        log_scale(ax, [v for _, y, *_ in series.values() for v in y], axis="y")
    # wrapped to the axes: a catalogue title ("§3.3.4-3.3.5, Fig. 3.7, Table 3.1 (PTB-LSTM,
    # char-LSTM): angle between ...") ran past both edges of the figure, its label past both
    # ends of the axis
    width, height = _room(ax)
    ax.set_xlabel(wrapped(xlabel, width))
    ax.set_ylabel(wrapped(ylabel, height))
    if title:
        ax.set_title(wrapped(title, width), fontsize=10)


def _room(ax) -> tuple[float, float]:
    """The inches a title or x label (centred on ``ax``) and a y label may take: a fifth more
    than the axes' width, a quarter more than their height (into the margins, not into the
    next panel), and no more than fits the figure either side of the axes' centre."""
    pos = ax.get_position()
    w, h = ax.figure.get_size_inches()
    cx, cy = (pos.x0 + pos.x1) / 2, (pos.y0 + pos.y1) / 2
    return (min(1.2 * pos.width * w, 1.8 * min(cx, 1 - cx) * w),
            min(1.25 * pos.height * h, 1.8 * min(cy, 1 - cy) * h))


RELATIONS = {"=", "<", ">", "≤", "≥", "≈", "±", "×", "~", "→"}


def wrapped(text: str, inches: float, fontsize: float = 10.0) -> str:
    """``text`` broken at spaces into lines about ``inches`` wide at ``fontsize`` points
    (DejaVu Sans averages under 0.6 em a character); a mathtext span ``$...$`` is kept whole and
    counted at half its source length. Lines ``text`` already breaks are kept. A line of an
    odd number of unescaped ``$``, which matplotlib draws as plain text, has them escaped
    (``\\$``): a piece of it holding two would be parsed as mathtext."""
    per_line = max(20, int(inches * 72 / (0.6 * fontsize)))
    out = []
    for line in text.split("\n"):
        if (line.count("$") - line.count(r"\$")) % 2:
            line = re.sub(r"(?<!\\)\$", r"\\$", line)
        words, cur, in_math = [], "", False
        for j, ch in enumerate(line):   # split at spaces outside $...$
            if ch == "$" and line[j - 1:j] != "\\":     # \$ is a dollar sign, not math
                in_math = not in_math
            if ch == " " and not in_math:
                words.append(cur)
                cur = ""
            else:
                cur += ch
        words.append(cur)
        # a relation keeps both sides on its line: "steps ≥ 40", not "steps ≥" / "40"
        for i in range(len(words) - 2, 0, -1):
            if words[i] in RELATIONS and i + 1 < len(words):
                words[i - 1:i + 2] = [" ".join(words[i - 1:i + 2])]
        rows, row, size = [], [], 0
        for w in words:
            n = len(w) // 2 if re.search(r"(?<!\\)\$", w) else len(w)
            if row and size + 1 + n > per_line:
                rows.append(" ".join(row))
                row, size = [], 0
            size += (1 if row else 0) + n
            row.append(w)
        rows.append(" ".join(row))
        out += rows
    return "\n".join(out)


def panels(n: int, *, width: float = 4.2, height: float = 3.2, min_width: float = 0.0,
           constrained: bool = False):
    """(figure, list of ``n`` axes), at most three a row, the unused axes hidden; the figure
    ``width`` per column (at least ``min_width``) and ``height`` per row. ``constrained``:
    matplotlib's constrained layout (for a legend or colour bar outside the axes), else the
    caller lays the figure out (``fig.tight_layout()``)."""
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(width * cols, min_width), height * rows),
                             squeeze=False, layout="constrained" if constrained else None)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _mark_missing(ax, positions, means, *, color="tab:red", dx: float = 0) -> None:
    """"no value" at the foot of each bar or point whose mean is NaN or infinite (every seed
    diverged or was not measured): matplotlib draws no bar for it, which reads as a value of 0,
    and no point, which reads as a setting never run. ``dx``: a shift in points, so that the
    marks of several series at one setting stand side by side."""
    for x, m in zip(positions, np.asarray(means, float)):
        if not np.isfinite(m):
            ax.annotate("no value", (x, 0), xycoords=("data", "axes fraction"),
                        xytext=(dx, 3), textcoords="offset points", ha="center", va="bottom",
                        rotation=90, fontsize=7, color=color)


def error_bars(series: Series, *, xlabel: str, ylabel: str, title: str = "",
               logx: bool = False, logy: bool = False, figsize=(5.2, 3.6), ax=None,
               styles: dict[str, dict] | None = None, legend: bool = True):
    """Points with error bars against a setting, one series per label (``{label: (x, y,
    err)}``, as :func:`curves` takes them), joined by a line: ``err`` None (no bars), one value
    per point (± it) or a 2 × n array (below and above each point, an interval); a NaN
    error draws no bar (the std of one seed: a bar of length 0 would read as seeds that
    agree), the other points keep theirs. A point whose value is NaN or infinite is marked
    "no value" at the foot of the axes in its series' colour (:func:`_mark_missing`), since
    a missing point reads as a setting never run. ``logx`` / ``logy`` as in :func:`curves`.
    ``styles``: matplotlib keywords per label for ``errorbar`` (``{"color": "C1", "ls":
    "none", "marker": "s"}``), so that a series keeps one colour across panels. ``legend=False``:
    none (a single unnamed series, or one legend for the figure). Where two series have
    the same value at a setting (:func:`_coincide`), each series is drawn ``DODGE`` points
    beside the next, so that none hides another."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    shift = DODGE if _coincide(series) else 0.0
    for i, (label, (x, y, err)) in enumerate(series.items()):
        x, y = np.asarray(x, float), np.asarray(y, float)
        e = None if err is None else np.asarray(err, float)
        kw = {"marker": "o", "ms": 4, "capsize": 3, **(styles or {}).get(label, {})}
        if shift:
            # drawn beside one another, the data unchanged: shifted on the page only
            kw["transform"] = ax.transData + ScaledTranslation(
                shift * (i - (len(series) - 1) / 2) / 72, 0, ax.figure.dpi_scale_trans)
        bars = ax.errorbar(x, y, yerr=e, label=label if np.isfinite(y).any()
                           else f"{label} (no finite value)", **kw)
        # several series' marks at one setting side by side, 9 points apart
        _mark_missing(ax, x, y, color=bars.lines[0].get_color(),
                      dx=9 * (i - (len(series) - 1) / 2))
        # the x axis spans the settings without a value too (their marks out of view else)
        ax.dataLim.update_from_data_x(x[np.isfinite(x)], ignore=False)
        if shift:
            # lines not in transData leave the data limits alone: the axes spanned none of
            # the shifted points
            _span_points(ax, x, y, e)
    ax.autoscale_view(scaley=False)
    _scales_and_labels(ax, series, logx=logx, logy=logy, xlabel=xlabel, ylabel=ylabel,
                       title=title)
    if series and legend:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure


def _span_points(ax, x, y, e) -> None:
    """Widen ``ax``'s data limits to the finite points (x, y) and their error bars."""
    lo, hi = _bar_extents(y, e)
    ok = np.isfinite(x) & np.isfinite(y)
    for ys in (y - lo, y + hi):
        ax.update_datalim(np.column_stack([x[ok], ys[ok]]))


def _bar_extents(y, e) -> tuple[np.ndarray, np.ndarray]:
    """How far each value's error bar reaches below and above it (``e``: None, one value per
    point or a 2 × n array): 0 where it has none (no ``e``, or a NaN error: a value without
    a bar still bounds the axes)."""
    if e is None:
        return np.zeros_like(y), np.zeros_like(y)
    e = np.nan_to_num(np.broadcast_to(e, y.shape) if e.ndim < 2 else e, nan=0.0)
    return (e, e) if e.ndim < 2 else (e[0], e[1])


# points between the series of error_bars drawn side by side (_coincide)
DODGE = 4.0


def _coincide(series: Series) -> bool:
    """Whether two of the series have a finite point at one setting with values within 1 % of
    the y span of all of them (equal success rates of several methods): the later series'
    marker and error bar would hide the earlier ones', which then read as never run."""
    pts = [{(float(a), float(b)) for a, b in zip(np.asarray(x, float), np.asarray(y, float))
            if np.isfinite(a) and np.isfinite(b)} for x, y, _ in series.values()]
    ys = [b for p in pts for _, b in p]
    if len(pts) < 2 or not ys:
        return False
    tol = 0.01 * (max(ys) - min(ys)) or 1e-12 * max(map(abs, ys)) or 1e-300
    for i, p in enumerate(pts):
        for q in pts[i + 1:]:
            if any(a == c and abs(b - d) <= tol for a, b in p for c, d in q):
                return True
    return False


def interval_errors(values: Sequence[float], intervals: Sequence[tuple[float, float]]
                    ) -> list[list[float]]:
    """Asymmetric error bars (a 2 × n list: below, above each value) of values from their
    intervals (lo, hi), as :func:`grouped_bars` and :func:`error_bars` take them."""
    return [[v - lo for v, (lo, _) in zip(values, intervals)],
            [hi - v for v, (_, hi) in zip(values, intervals)]]


def grouped_bars(labels: Sequence[str],
                 series: dict[str, tuple[Sequence[float], Sequence | None]], *,
                 ylabel: str, title: str = "", zoom: bool = False, figsize=(5.2, 3.6),
                 ax=None, colors: Sequence[str] | None = None, numeric: bool = False):
    """Bars per label (x), one bar per series side by side (``{name: (means, errs)}``; a
    single series is a plain bar chart, its name in no legend), errs as error bars (e.g. std
    over seeds; a 2 × n array for an interval below and above each mean); a NaN error draws
    no bar for its mean (the std of one seed: a bar of length 0 would read as seeds that
    agree), the others keep theirs. ``zoom``: the y axis spans the bars' tops and error bars
    with a margin instead of starting at 0, so that differences of a fraction of a point
    between accuracies near 1 can be seen (the axis label says where it starts when that is
    not 0). ``colors``: with a single series, one colour per
    label, where the labels have colours of their own in the report's other figures (a
    group's or a method's curve); several series are told apart by the series' colours
    instead. ``numeric``: the labels are
    numbers (lags, epochs), the bars stand at them on a numeric axis with matplotlib's ticks,
    as wide as the closest two allow, instead of one tick per label."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    if numeric:
        x = np.asarray(labels, float)
        gaps = np.diff(np.unique(x))
        spacing = gaps.min() if gaps.size else 1.0
    else:
        x, spacing = np.arange(len(labels)), 1.0
    width = 0.8 * spacing / max(1, len(series))
    tops = []
    for i, (name, (means, errs)) in enumerate(series.items()):
        m = np.asarray(means, float)
        e = None if errs is None else np.asarray(errs, float)
        one = {"color": list(colors)} if colors and len(series) == 1 else {}
        ax.bar(x + (i - (len(series) - 1) / 2) * width, m, width, yerr=e, capsize=3,
               label=name, **one)
        _mark_missing(ax, x + (i - (len(series) - 1) / 2) * width, m)
        below, above = _bar_extents(m, e)
        tops += list(m - below) + list(m + above)
    if not numeric:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(wrapped(ylabel, _room(ax)[1]))
    tops = [t for t in tops if np.isfinite(t)]
    if zoom and tops:
        lo, hi = min(tops), max(tops)
        pad = 0.25 * (hi - lo) or 0.01 * abs(hi) or 0.01
        ax.set_ylim(lo - pad, hi + pad)
        if lo - pad > 0 or hi + pad < 0:
            # bars cut off read as ratios of their heights: the label says they are not
            start = lo - pad if lo - pad > 0 else hi + pad
            ax.set_ylabel(wrapped(f"{ylabel} (axis from {start:.4g}, not 0)",
                                  _room(ax)[1]))
    if title:
        ax.set_title(wrapped(title, _room(ax)[0]), fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure


def histogram(values: dict[str, Sequence[float]], *, xlabel: str, title: str = "",
              bins: int = 60, logy: bool = True, figsize=(5.2, 3.6), ax=None):
    """Counts of each series' values in ``bins`` bins shared by all of them (over the range
    of their finite values pooled): with bins of its own each, a series of a narrower range
    had narrower bins, and its counts read as lower than another's of the same density. A
    series' NaN and infinite values are counted in its legend entry."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    arrays = {label: np.asarray(v, float) for label, v in values.items()}
    pooled = np.concatenate([a[np.isfinite(a)] for a in arrays.values()] or [np.zeros(0)])
    edges = np.histogram_bin_edges(pooled, bins=bins) if pooled.size else bins
    for label, a in arrays.items():
        ok = np.isfinite(a)
        # left out of the bins, the values are counted in the legend: not drawn, not lost
        ax.hist(a[ok], bins=edges, alpha=0.5,
                label=label if ok.all() else f"{label} ({int((~ok).sum())} non-finite "
                                             "left out)")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    if title:
        ax.set_title(title, fontsize=10)
    if values:
        ax.legend(fontsize=7)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure
