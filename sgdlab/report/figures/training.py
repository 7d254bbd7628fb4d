"""Learning curves of one run, from its recorded history.

A *history* is ``{name: [(step, value), ...]}`` as in ``RunResult.history`` or
``RunStore.metrics(run_id)``. The curves use the names the training loop logs
(:mod:`sgdlab.train.loop`): ``train_loss``/``test_loss`` (mean loss, eval mode),
``batch_loss`` (epoch mean of mini-batch losses, train mode), ``train_acc``/``test_acc``
(fraction correct). Missing series are skipped; a panel with none says so.

:func:`instrument_panels` draws everything else a run recorded (the instruments' series,
grouped by the prefix before ``/`` or ``_``; a varying learning rate, drawn as steps since the
loop samples it at step 0 and once per epoch) one small panel per group, so every instrument
of a config has a plot next to the learning curves (of the first ``MAX_PANELS`` groups; a line
under the panels names the rest).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sgdlab.report.figures import label_colours  # noqa: E402
from sgdlab.report.figures.axes import (all_log_spaced, log_scale, metric_label,  # noqa: E402
                                        natural_order, quantity_label)
from sgdlab.report.figures.charts import curves, panels, wrapped  # noqa: E402
from sgdlab.report.rates import last_step, used_rate_points  # noqa: E402
from sgdlab.store.runstore import MEASURED, MEASURED_TEST  # noqa: E402

__all__ = ["compare_runs_figure", "groups_left_out", "headline_series", "instrument_panels",
           "learning_curves", "recorded_groups", "thinned"]

History = Mapping[str, Sequence[tuple[int, float]]]


MAX_POINTS = 2000


def thinned(pts: Sequence[tuple[int, float]], max_points: int = MAX_POINTS
            ) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a series, every k-th point and the last when it has more than
    ``max_points`` (drawing 200k points per series took seconds per panel)."""
    arr = np.asarray(pts, dtype=float)
    if len(arr) > max_points:
        k = -(-len(arr) // max_points)
        arr = np.concatenate([arr[::k], arr[-1:]]) if (len(arr) - 1) % k else arr[::k]
    return arr[:, 0], arr[:, 1]


# series the loop sets at a step and keeps until the next sample (the learning rate, logged
# at step 0 and once per epoch): drawn as steps, since a line between samples would show
# ramps that a step or cosine schedule does not have
HELD = {"lr"}


def used_rates(history: History, run: Mapping[str, Any] | None = None) -> History:
    """``history`` with its :data:`HELD` series cut to the values steps were taken with
    (:func:`~sgdlab.report.rates.used_rate_points`, the rule ``runs compare``'s last-step and
    mean lr read too): a run that took S steps (``run``'s summary's ``steps``, else its
    history's last step) took steps 0..S - 1, so a sample at S (the loop samples the rate
    after each epoch's schedule step, the last one the rate of an epoch after the run's end:
    a cosine-cyclic schedule's 0) is left out, and the last used one is held to S; ``run``
    (its record as the run store gives it) of ``sgdlab parle`` or an experiment's ``replicas``
    procedure: each round's rate, logged at its end, drawn from the round's start. The
    stored history keeps what was sampled."""
    end = last_step(history)
    out = dict(history)
    for name in HELD:
        if history.get(name):
            out[name] = used_rate_points(history[name], run, last_step=end)
    return out


def drawstyle(name: str) -> str:
    """The matplotlib ``drawstyle`` of series ``name``: ``steps-post`` for :data:`HELD`."""
    return "steps-post" if name in HELD else "default"


def _standard_errors(history: History, name: str, steps) -> list[float] | None:
    """The recorded ``<name>_se`` at ``steps`` (those ``name`` is drawn at), NaN where it has
    none (no band there); None when it is not recorded."""
    se = dict(history.get(name + "_se") or [])
    return [se.get(st, np.nan) for st in steps] if se else None


def _plot(ax, history: History, names: Sequence[str], styles: Sequence[dict], *,
          ylabel: str = "", labels: Callable[[str], str] = str) -> int:
    """The recorded series ``names`` against steps (thinned), drawn by
    :func:`~sgdlab.report.figures.charts.curves` with matplotlib keywords per name
    (``styles``), a :data:`HELD` series as steps, a recorded ``<name>_se`` as a ±1 s.e. band
    around ``<name>``, with a legend naming each by ``labels(name)``; how many were drawn."""
    drawn = {n: st for n, st in zip(names, styles) if history.get(n)}
    series = {}
    for n in drawn:
        steps, vals = thinned(history[n])
        series[labels(n)] = (steps, vals, _standard_errors(history, n, steps))
    curves(series, xlabel="step", ylabel=ylabel, ax=ax,
           log_steps_x=all_log_spaced(s for s, _, _ in series.values()),
           styles={labels(n): {"lw": 1.5, "drawstyle": drawstyle(n), **st}
                   for n, st in drawn.items()})
    return len(drawn)


def _panel(ax, history: History, names: Sequence[str], styles: Sequence[dict], *,
           ylabel: str, empty: str) -> bool:
    """The series ``names`` with a legend naming them in words (:func:`~sgdlab.report.
    figures.axes.metric_label`, as the catalogue's curves do), or the text ``empty`` if none
    is recorded; axis labels. Whether anything was drawn."""
    drawn = _plot(ax, history, names, styles, ylabel=ylabel, labels=metric_label) > 0
    if not drawn:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
    return drawn


def learning_curves(history: History, *, title: str | None = None,
                    log_loss: bool = True) -> plt.Figure:
    """Loss (left, log scale by default) and accuracy (right) against optimizer steps."""
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    losses = ("batch_loss", "train_loss", "test_loss")
    if _panel(ax_l, history, losses, ({"ls": ":"}, {"ls": "-"}, {"ls": "--"}),
              ylabel="loss (mean over examples)", empty="no loss recorded") and log_loss:
        log_scale(ax_l, [v for n in losses for _, v in history.get(n) or []])
    if _panel(ax_a, history, ("train_acc", "test_acc"), ({"ls": "-"}, {"ls": "--"}),
              ylabel="accuracy", empty="no accuracy recorded (regression?)"):
        ax_a.set_ylim(0, 1.02)
    if title:
        fig.suptitle(title)
    return fig


# the training loop's own series (learning_curves draws the losses and accuracies; a
# perplexity is the exponential of the loss drawn on a log scale there)
_LOOP = {"batch_loss", "train_loss", "test_loss", "train_acc", "test_acc", "epoch",
         "grad_evals", "effective_epochs", "samples", "step", "train_perplexity",
         "test_perplexity"}
# per-point and bookkeeping series that would crowd a panel
_SKIP = re.compile(r"(_k\d+|_seconds|_epoch|_epoch_steps|/batch_size)$")
MAX_SERIES, MAX_PANELS = 6, 12
# series of comparable scale that say most about their instrument; a group without an entry
# shows its first MAX_SERIES series in name order
_HEADLINES = {
    "hess": ("top_1", "top_2", "top_3", "trace", "frobenius"),
    "batch": ("norm_test", "inner_product_test", "orthogonality_test"),
    "step": ("alpha",),
    "noise": ("trace", "top_1", "top_2", "top_3"),
    "align": ("residual", "cos_1", "cos_2", "cos_3"),
    "walk": ("walk_height", "walk_barrier_height", "walk_valley_loss"),
    "dynamics": ("grad_cosine",),
    "entropy_angle": ("degrees",),
}

# groups whose panel the rest of their series fill after the headlines, in name order: a
# Hessian's trace and Frobenius norm shown (by name, bottom_1, frobenius, top_1 ... top_4 were),
# and a k = 12 panel still shows top_1 ... top_6
_FILLED = frozenset({"hess"})

# series of one instrument on another scale than its headline: Keskar's ε-sharpness (~1) and
# the local entropy (−f_γ, ~ −loss) flattened the expected sharpness (~1e-3) to a line at 0
_OWN_PANEL = {"sharpness/epsilon": "sharpness: Keskar ε",
              "sharpness/local_entropy": "local entropy −f_γ"}


def recorded_groups(history: History) -> dict[str, list[str]]:
    """{group: series names} of a history's instrument series (module docstring), all of them
    in panel order (:func:`_splits_side_by_side`); ``runs compare`` and
    :func:`instrument_panels` draw the first :data:`MAX_PANELS` and name the others."""
    groups: dict[str, list[str]] = {}
    for name, pts in sorted(history.items()):
        if name in _LOOP or not pts or _SKIP.search(name):
            continue
        if name.endswith("_se") and history.get(name[:-3]):
            continue              # a standard error: drawn as a band around its estimate
        if name == "lr":
            if len({v for _, v in pts}) < 2:
                continue          # a constant learning rate says nothing in a plot
            group = "learning rate"
        elif name in _OWN_PANEL:
            group = _OWN_PANEL[name]
        elif name.startswith(MEASURED):
            # `sgdlab measure`'s scalars (measure/hess/top_1): one group per instrument, as
            # the series recorded during training, not one of all of them; of the test split
            # (measure/test/hess/top_1) one apart from the train split's
            parts = 3 if name.startswith(MEASURED_TEST) else 2
            group = "/".join(name.split("/", parts)[:parts])
        elif "/" in name:
            group = name.split("/", 1)[0]
        elif name.startswith("walk_"):
            group = "walk"
        else:
            group = "dynamics"
        groups.setdefault(group, []).append(name)
    return {g: groups[g] for g in _splits_side_by_side(groups)}


def groups_left_out(left_out: Sequence[str], *, out_of: str, recorded_by: str = "") -> str:
    """The words that say how many groups of instrument series (``left_out``, those past
    :data:`MAX_PANELS` of :func:`recorded_groups`) were left ``out_of`` what ("the panels
    (at most 12)") and which, for every figure and table that cuts at ``MAX_PANELS``
    (``sgdlab runs compare``'s note, a run's instrument panels); ``recorded_by``: whose
    series they are ("every run")."""
    by = f" {recorded_by} recorded" if recorded_by else ""
    return (f"{len(left_out)} more {'group' if len(left_out) == 1 else 'groups'} of series{by}, "
            f"left out of {out_of}: {', '.join(left_out)}")


def _splits_side_by_side(groups: Sequence[str]) -> list[str]:
    """``groups`` with each instrument's test-split group (``measure/test/hess``) right after
    its train split's (``measure/hess``), each pair where the first of the two was: in name
    order every measure/test/... group came after all the train split's, and the cut at
    ``MAX_PANELS`` left out the test split's first, where both splits of the first
    instruments can show."""
    def train_split(g: str) -> str:
        return MEASURED + g.removeprefix(MEASURED_TEST) if g.startswith(MEASURED_TEST) else g

    first: dict[str, int] = {}
    for i, g in enumerate(groups):
        first.setdefault(train_split(g), i)
    return sorted(groups, key=lambda g: (first[train_split(g)], g.startswith(MEASURED_TEST)))


def headline_series(group: str, names: Sequence[str]) -> list[str]:
    """The series of ``group`` a panel shows: its headline series when recorded, else the
    first ``MAX_SERIES`` in name order, a number in a name read as a number (``top_2`` before
    ``top_10``: by characters, a k = 12 panel showed top_1, top_10, ..., top_14); of a group
    in ``_FILLED``, its headline series and then the rest, up to ``MAX_SERIES``."""
    instrument = group.removeprefix(MEASURED_TEST).removeprefix(MEASURED)
    headlines = _HEADLINES.get(instrument, ())
    head = sorted((n for n in names if n.split("/")[-1] in headlines), key=natural_order)
    if instrument in _FILLED:
        head += sorted((n for n in names if n not in head), key=natural_order)
    return sorted((head or sorted(names, key=natural_order))[:MAX_SERIES], key=natural_order)


def _style(num_points: int) -> dict:
    # markers only where they can be told apart
    return {"marker": "."} if num_points < 50 else {}


def _finish_panel(ax, title: str, vals: np.ndarray, *, log: bool = False) -> None:
    """Title, step axis, grid; a log scale when ``log`` or when the finite ``vals`` are
    positive and span over two decades (all of them positive either way)."""
    if len(vals) and vals.min() > 0 and (log or vals.max() > 100 * vals.min()):
        log_scale(ax, vals)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def instrument_panels(history: History, *, title: str | None = None) -> plt.Figure | None:
    """One panel per group of recorded instrument series against steps (at most
    ``MAX_SERIES`` series each, a recorded ``<name>_se`` as a ±1 s.e. band around ``<name>``,
    log scale when all values are positive and span over two decades), the learning rate as
    the steps used it (:func:`used_rates`); None when the run recorded none. Of more than
    ``MAX_PANELS`` groups, the first that many; the rest named under the panels
    (:func:`groups_left_out`)."""
    history = used_rates(history)
    groups = recorded_groups(history)
    if not groups:
        return None
    left_out = list(groups)[MAX_PANELS:]
    groups = {g: groups[g] for g in list(groups)[:MAX_PANELS]}
    fig, axes = panels(len(groups), width=4.2, height=3.0, constrained=True)
    for ax, (group, names) in zip(axes, groups.items()):
        shown = headline_series(group, names)
        _plot(ax, history, shown, [_style(len(history[n])) for n in shown],
              ylabel=quantity_label(shown))
        vals = np.concatenate([thinned(history[n])[1] for n in shown])
        more = f" (+{len(names) - len(shown)} more)" if len(names) > len(shown) else ""
        _finish_panel(ax, group + more, vals[np.isfinite(vals)])
    if title:
        fig.suptitle(title)
    if left_out:
        # under the panels, where constrained layout makes room for it: the figure alone
        # (train, parle, a distributed run's master) says what it cut
        note = groups_left_out(left_out, out_of=f"the panels (at most {MAX_PANELS})")
        fig.supxlabel(wrapped(f"{note}; sgdlab runs show RUN lists every series, sgdlab "
                              "runs compare --metric NAME --plot FILE draws any",
                              0.95 * fig.get_figwidth(), fontsize=9), fontsize=9)
    return fig


def compare_runs_figure(histories: Mapping[str, History], metrics: Sequence[str], *,
                        title: str | None = None,
                        runs: Mapping[str, Mapping[str, Any]] | None = None) -> plt.Figure:
    """One panel per metric with every run's curve (``histories``: {label: history}), titled
    with the recorded name and labelled by :func:`~sgdlab.report.figures.axes.metric_label`,
    drawn by :func:`~sgdlab.report.figures.charts.curves` (a run that diverged ends in a
    cross); log scale for losses and for positive series spanning over two decades; the
    learning rate as the steps used it (:func:`used_rates`, of each run's record in ``runs``,
    {label: run}, where given: its steps and whether it is a Parle run's)."""
    histories = {label: used_rates(h, (runs or {}).get(label)) for label, h in histories.items()}
    # wide enough for the legend's longest label (about 0.07 in per character at 8 pt)
    label_width = 0.07 * max(map(len, histories), default=0) + 0.8
    legend_cols = 2 if 2 * label_width <= 4.4 * min(3, len(metrics)) else 1
    fig, axes = panels(len(metrics), width=4.4, height=3.2, min_width=label_width,
                       constrained=True)
    # a run keeps its colour in every panel (the one legend says which is which), also in a
    # panel of a series that only some runs recorded
    colors = label_colours(histories)
    for ax, metric in zip(axes, metrics):
        drawn = {label: thinned(h[metric]) for label, h in histories.items() if h.get(metric)}
        # a series measured at log-spaced steps (log_points) on a log axis that keeps step 0
        at_log_steps = all_log_spaced(s for s, _ in drawn.values())
        curves({label: (s, v, None) for label, (s, v) in drawn.items()}, xlabel="step",
               ylabel=metric_label(metric), ax=ax, steps=metric in HELD, legend=False,
               log_steps_x=at_log_steps,
               styles={label: {"color": colors[label], "lw": 1.3, **_style(len(h[metric]))}
                       for label, h in histories.items() if label in drawn})
        vals = np.concatenate([v for _, v in drawn.values()]) if drawn else np.zeros(0)
        if not np.isfinite(vals).any():
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        _finish_panel(ax, metric, vals[np.isfinite(vals)], log=metric.endswith("loss"))
    if title:
        fig.suptitle(title)
    # one legend above the panels: inside a panel it would hide curves and be cut when the
    # labels are longer than the panel is wide
    handles = {}
    for ax in axes:
        for line in ax.get_lines():     # the runs' curves, not a diverged curve's cross
            label = line.get_label().removesuffix(" (no finite value)")
            if label in histories:
                handles.setdefault(label, line)
    fig.legend(list(handles.values()), list(handles), loc="outside upper center",
               ncols=legend_cols, fontsize=8, frameon=False)
    return fig
