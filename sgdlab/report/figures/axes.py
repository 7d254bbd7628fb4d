"""Axis rules every figure shares: the scales, and the names of the recorded series.

A log axis silently drops values ≤ 0 (and NaN/inf): :func:`log_scale` sets one only when all
the finite values it is given are positive. Over less than two decades matplotlib labels minor
ticks in the form 2.3 × 10⁰ (under one decade, only those); such an axis gets plain-number
labels instead, each its own (six significant digits; where those give two ticks one label, an
offset the axis states once, "×10⁻⁶ + 2.308", and short labels). A finite value with no finite
neighbour is drawn with a marker (:func:`isolated`): a line alone does not show it. A step axis
over several decades that starts at step 0 is a symmetric log axis (:func:`log_steps`), which
keeps the 0. A recorded series is labelled on an axis by :func:`metric_label`, in the CLI's and
the catalogue's figures alike.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np
from matplotlib import ticker

__all__ = ["CURVATURE_SERIES", "METRIC_LABELS", "all_log_spaced", "grid_ticks", "isolated",
           "log_scale", "log_spaced", "log_steps", "metric_label", "natural_order",
           "quantity_label", "setting_labels"]

MAX_LABELS = 6
# significant digits of a plain tick label: beyond them, an offset (PlainLogFormatter)
MAX_DIGITS = 6

# the curvature instrument's series prefix by the matrix it measured
# (sgdlab.train.instruments.curvature.SERIES_PREFIXES): the matrix's name and symbol, so that
# a GGN or an empirical Fisher eigenvalue is not labelled a Hessian one
CURVATURE_SERIES = {"hess": ("Hessian", "H"), "ggn": ("GGN", "G"),
                    "fisher": ("empirical Fisher", "F")}
# axis labels of the series the training loop and the instruments record, by recorded name;
# expected sharpness in Zhu et al.'s notation (§4.2, after Neyshabur et al. 2017 eq. 7),
# ν ~ N(0, σ²I), which every sharpness figure uses
METRIC_LABELS = {"train_loss": "train loss", "test_loss": "test loss",
                 "batch_loss": "mini-batch loss", "train_acc": "train accuracy",
                 "test_acc": "test accuracy", "train_perplexity": "train perplexity",
                 "test_perplexity": "test perplexity", "lr": "learning rate",
                 "sharpness/expected": "expected sharpness E[L(θ+ν)] − L(θ)",
                 "effective_epochs": "effective epochs", "grad_evals": "gradient evaluations",
                 "dist_from_init": r"distance from initialisation $\|\theta_t - \theta_0\|$",
                 "grad_cosine": r"consecutive-gradient cosine $\cos(g_{t-1}, g_t)$",
                 **{f"{p}/trace": f"{name} trace Tr {m}" for p, (name, m) in
                    CURVATURE_SERIES.items()},
                 **{f"{p}/frobenius": rf"{name} $\|{m}\|_F$" for p, (name, m) in
                    CURVATURE_SERIES.items()},
                 "noise/trace": "noise trace Tr Σ", "noise/rank": "noise rank",
                 "align/residual": "Σ–H alignment residual"}
# the curvature and noise instruments' eigenvalues by rank i (hess/top_1 is λ_max), and the
# alignment's cosines of the i-th eigenvectors of H and Σ
RANKED_LABELS = {**{f"{p}/top_": name + r" $\lambda_{{{i}}}$" for p, (name, _) in
                    CURVATURE_SERIES.items()},
                 "noise/top_": r"noise $\lambda_{{{i}}}$ of Σ",
                 "align/cos_": r"$|\cos(u_{{{i}}}(H), v_{{{i}}}(\Sigma))|$"}
# the series whose rank 1 is the largest eigenvalue, λ_max
_RANK_ONE_IS_MAX = {*(f"{p}/top_" for p in CURVATURE_SERIES), "noise/top_"}
# a recorded name's last part that is its unit ("entropy_angle/degrees"), as the axis says it
UNITS = {"degrees": "degrees", "seconds": "s"}


def _ranked(name: str) -> tuple[str, int] | None:
    """(its :data:`RANKED_LABELS` head, its rank) of a ranked eigenvalue's name, else None."""
    for head in RANKED_LABELS:
        # isdecimal, not isdigit: "²" is a digit that int() refuses
        if name.startswith(head) and name[len(head):].isdecimal():
            return head, int(name[len(head):])
    return None


def natural_order(name: str) -> list:
    """A sort key of recorded names with the numbers in them read as numbers: ``top_2``
    before ``top_10`` (by characters, cos_10 came before cos_2)."""
    # digits as numbers, the rest as text; the parts alternate, so like parts are compared
    return [int(p) if p.isdecimal() else p for p in re.split(r"(\d+)", name)]


def _rank_text(head: str, rank: int) -> str:
    return "max" if rank == 1 and head in _RANK_ONE_IS_MAX else str(rank)


def metric_label(name: str) -> str:
    """The axis label of the recorded series ``name``: its :data:`METRIC_LABELS` entry, else
    the name itself (what ``--metric`` and ``options.curves`` take), a unit its last part
    states (:data:`UNITS`) written in parentheses: ``entropy_angle/degrees`` is
    "entropy_angle (degrees)"."""
    if name in METRIC_LABELS:
        return METRIC_LABELS[name]
    ranked = _ranked(name)
    if ranked:
        return RANKED_LABELS[ranked[0]].format(i=_rank_text(*ranked))
    for sep in "/_":
        head, _, last = name.rpartition(sep)
        if head and last in UNITS:
            return f"{head} ({UNITS[last]})"
    return name


def quantity_label(names: Iterable[str]) -> str:
    """The y label of a panel of the recorded series ``names``: their labels
    (:func:`metric_label`), each once, in order, joined by commas (a legend tells the curves
    apart; the axis says what they measure). Three or more consecutive ranks of one
    eigenvalue (or cosine) series are written as their range, "Hessian λ_i (i = 1 … 20)":
    each named, a hessian instrument of k = 20 labelled its axis over ten lines."""
    names = list(names)
    ranks: dict[str, list[int]] = {}
    for n in names:
        if (r := _ranked(n)) is not None:
            ranks.setdefault(r[0], []).append(r[1])
    spans = {}
    for head, rs in ranks.items():
        rs = sorted(set(rs))
        if len(rs) >= 3 and rs[-1] - rs[0] == len(rs) - 1:
            spans[head] = f"{RANKED_LABELS[head].format(i='i')} (i = {rs[0]} … {rs[-1]})"
    return ", ".join(dict.fromkeys(
        spans[r[0]] if (r := _ranked(n)) is not None and r[0] in spans else metric_label(n)
        for n in names))


class PlainLogFormatter(ticker.Formatter):
    """Tick labels as plain numbers (``%.6g``; where six digits give two ticks one label, as a
    loss of 2.308497 to 2.308501 read 2.3085 at every tick, labels with an offset:
    :meth:`_offset_formatter`); of more than ``MAX_LABELS`` ticks in view only those at 1, 2, 3,
    5 or 7 times a power of ten are labelled (1, 2 or 5 over a decade or more; every k-th one
    when fewer than two qualify), so that labels do not overlap."""

    def __init__(self):
        self._ticks: list[float] = []
        self._offset: ticker.ScalarFormatter | None = None

    def set_locs(self, locs):
        # once per set of ticks: each label and the offset text read it
        self._ticks = list(locs)
        self._offset = self._offset_formatter()

    def __call__(self, x, pos=None):
        lo, hi = sorted(self.axis.get_view_interval())
        locs = [v for v in self._ticks if lo <= v <= hi]
        if len(locs) > MAX_LABELS:
            # under a decade, 7 too: 2, 3, 5 left the top two fifths of a 2-9 axis unlabelled
            mantissas = (1, 2, 5) if lo > 0 and hi >= 10 * lo else (1, 2, 3, 5, 7)
            keep = [v for v in locs if v > 0 and round(v / 10 ** math.floor(math.log10(v)), 6)
                    in mantissas]
            if len(keep) < 2:
                keep = locs[::math.ceil(len(locs) / MAX_LABELS)]
            if not any(math.isclose(x, v, rel_tol=1e-9) for v in keep):
                return ""
        if self._offset is not None:
            return self._offset(x)
        return f"{x:.{MAX_DIGITS}g}"

    def get_offset(self):
        return self._offset.get_offset() if self._offset is not None else ""

    def _offset_formatter(self) -> ticker.ScalarFormatter | None:
        """Where the ticks in view (major and minor: over a few millionths only minor ones
        are) need more than six significant digits to be told apart, a ScalarFormatter over
        them: each label the tick's difference from a common offset, which the axis states
        once ("×10⁻⁶ + 2.308"); else None. Computed from the axis, not from this formatter's
        ticks: the offset text is the major formatter's, whose ticks lie outside the view."""
        lo, hi = sorted(self.axis.get_view_interval())
        locs = sorted(v for v in {*self.axis.get_majorticklocs(),
                                  *self.axis.get_minorticklocs()} if lo <= v <= hi)
        if len({f"{v:.{MAX_DIGITS}g}" for v in locs}) == len(locs):
            return None
        offset = ticker.ScalarFormatter(useOffset=True, useMathText=True)
        offset.set_axis(self.axis)
        offset.set_locs(locs)
        return offset


def log_scale(ax, values: Iterable[float], *, axis: str = "y") -> bool:
    """Log scale on ``axis`` ('x' or 'y') of ``ax`` when every finite value in ``values`` (the
    data plotted on that axis) is positive; plain tick labels when they span less than two
    decades. Whether the scale was set."""
    v = np.asarray(list(values), float).ravel()
    v = v[np.isfinite(v)]
    if not len(v) or v.min() <= 0:
        return False
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    if v.max() < 100 * v.min():
        a.set_major_formatter(PlainLogFormatter())
        a.set_minor_formatter(PlainLogFormatter())
    return True


def isolated(values) -> bool:
    """Whether a finite value in ``values`` has no finite neighbour: a line alone would not
    show it (a run stopped after its first evaluation, a value between non-finite ones)."""
    ok = np.isfinite(np.asarray(values, float).ravel())
    before = np.concatenate([[False], ok[:-1]])
    after = np.concatenate([ok[1:], [False]])
    return bool((ok & ~before & ~after).any())



def log_steps(ax, steps: Iterable[float], *, axis: str = "x") -> bool:
    """A logarithmic step axis that keeps step 0: symmetric log, linear from 0 to the first
    positive step and logarithmic above it, labelled with plain numbers, when the finite
    ``steps`` are ≥ 0 and span over two decades above that first step (a log axis would drop
    step 0, where every curve starts; a linear one squeezes measurements taken at
    log-spaced steps into its first percent). Whether the scale was set."""
    v = np.asarray(list(steps), float).ravel()
    v = v[np.isfinite(v)]
    pos = v[v > 0]
    if not len(pos) or v.min() < 0 or pos.max() <= 100 * pos.min():
        return False
    (ax.set_xscale if axis == "x" else ax.set_yscale)("symlog", linthresh=float(pos.min()),
                                                      linscale=0.5)
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(ticker.ScalarFormatter())
    # the default margin would open the axis to negative steps: -1, -10, -100 in view
    (ax.set_xlim if axis == "x" else ax.set_ylim)(0, None)
    return True


def log_spaced(steps: Iterable[float]) -> bool:
    """Whether ``steps`` were measured at log-spaced points (an instrument's ``log_points``):
    at least three positive steps over two decades, most of them below a tenth of the last
    (a tenth of evenly spaced ones are). Such series want :func:`log_steps`: on a linear axis
    their early points, where they change most, crowd together at step 0."""
    pos = _positive(steps)
    if len(pos) < 3 or pos.max() <= 100 * pos.min():
        return False
    return bool(np.mean(pos < pos.max() / 10) > 0.5)


def all_log_spaced(series: Iterable[Iterable[float]]) -> bool:
    """Whether the steps of each of an axis' ``series`` are :func:`log_spaced`, those too
    short to tell (under three positive steps) aside, and some series is: pooled, a short
    run's evenly spaced steps and a long run's looked log-spaced."""
    judged = [pos for pos in map(_positive, series) if len(pos) >= 3]
    return bool(judged) and all(log_spaced(pos) for pos in judged)


def _positive(steps: Iterable[float]) -> np.ndarray:
    v = np.asarray(list(steps), float).ravel()
    return v[np.isfinite(v) & (v > 0)]


def grid_ticks(ax, values: Iterable[float], *, axis: str = "x", max_ticks: int = 8) -> bool:
    """Ticks at a sweep's settings themselves (``values``: the positions plotted on ``axis``,
    at most ``max_ticks`` distinct), labelled as plain numbers, the minor ticks unlabelled: on a
    log axis the decade ticks may leave a sweep's end points (25 and 400 between 20 and 500)
    without a label. Whether the ticks were set."""
    v = np.asarray(list(values), float).ravel()
    v = np.unique(v[np.isfinite(v)])
    if not len(v) or len(v) > max_ticks:
        return False
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(ticker.FixedLocator(v))
    a.set_major_formatter(ticker.FixedFormatter(setting_labels(v)))
    a.set_minor_formatter(ticker.NullFormatter())
    return True


def setting_labels(values: Iterable[float]) -> list[str]:
    """Labels of a sweep's settings in the fewest significant digits (two to six) that tell
    them apart and round none by over 1 %, all in one notation: scientific when some nonzero
    setting is below 1e-3 or from 1e5 up (η/B = 0.05/512 reads 9.77e-05, not 9.76563e-05
    beside 0.000390625), else positional (25, 0.05, 1024: its whole digits all)."""
    v = [float(x) for x in values]
    sci = any(x and not 1e-3 <= abs(x) < 1e5 for x in v)

    def fmt(x: float, p: int) -> str:
        if x == 0:
            return "0"
        if sci:
            return np.format_float_scientific(x, precision=p - 1, trim="-")
        # never rounded left of the point: batch sizes 1024 and 2048 read 1020 and 2050
        whole = math.floor(math.log10(abs(x))) + 1 if abs(x) >= 1 else 0
        return np.format_float_positional(x, precision=max(p, whole), fractional=False,
                                          trim="-")

    for p in range(2, 7):
        labels = [fmt(x, p) for x in v]
        if len(set(labels)) == len(labels) and all(
                abs(float(t) - x) <= 0.01 * abs(x) for t, x in zip(labels, v)):
            return labels
    return [f"{x:.6g}" for x in v]
