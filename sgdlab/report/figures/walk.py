"""The walk plot of Xing et al. (2018), Fig. 1, and the barrier / height tables (Tables 1–2).

Everything here reads recorded metrics only: a *history* is ``{name: [(step, value), ...]}``
as in ``RunResult.history``, ``TrainContext.history`` or ``RunStore.metrics(run_id)``, with the
names logged by :mod:`sgdlab.train.instruments.walk` (``walk_loss_kXX``, ``walk_valley_*``,
``walk_barrier*``, ``walk_epoch*``) and :mod:`sgdlab.train.instruments.dynamics`
(``grad_cosine``, ``dist_from_init``). Missing quantities leave their panel empty with a note.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sgdlab.measure.walk import VALLEY_FLOORS, has_valley_floor  # noqa: E402
from sgdlab.report.figures.charts import wrapped  # noqa: E402
from sgdlab.report.tables import Table  # noqa: E402

__all__ = ["epoch_rows", "walk_epoch_table", "walk_figure", "walk_segments"]

History = Mapping[str, Sequence[tuple[int, float]]]
_LOSS_KEY = re.compile(r"^walk_loss_k(\d+)$")


def walk_segments(history: History) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps (S,), alphas (K,), losses (S, K)) of the recorded step interpolations."""
    keys = sorted((int(m.group(1)), k) for k in history if (m := _LOSS_KEY.match(k)))
    if not keys:
        return np.zeros(0, int), np.zeros(0), np.zeros((0, 0))
    cols = [dict(history[k]) for _, k in keys]
    steps = np.array(sorted(set(cols[0])), dtype=int)
    losses = np.array([[c.get(s, np.nan) for c in cols] for s in steps], dtype=float)
    return steps, np.linspace(0.0, 1.0, len(keys)), losses


def _series(history: History, name: str) -> tuple[np.ndarray, np.ndarray]:
    pts = history.get(name, [])
    return (np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float))


def _draw_walk(ax, history: History, max_steps: int | None, floor: str) -> None:
    steps, alphas, losses = walk_segments(history)
    if max_steps is not None:
        keep = steps < max_steps
        steps, losses = steps[keep], losses[keep]
    if len(steps) == 0:
        ax.text(0.5, 0.5, "no step interpolation recorded", ha="center", transform=ax.transAxes)
        return
    x = (steps[:, None] + alphas[None, :]).ravel()
    ax.plot(x, losses.ravel(), lw=0.9, color="tab:blue", label="interpolated loss")
    va = dict(history.get("walk_valley_alpha", []))
    vl = dict(history.get("walk_valley_loss", []))
    vs = [s for s in steps if s in va and s in vl and has_valley_floor(va[s], floor)]
    if vs:
        ax.plot([s + va[s] for s in vs], [vl[s] for s in vs], color="tab:orange", lw=1.2,
                ls="--", marker=".", ms=3, label="valley floor")
    bar = dict(history.get("walk_barrier", []))
    crossed = [s for s in steps if bar.get(s, 0.0) > 0.5]
    for s in crossed:
        ax.axvspan(s, s + 1, color="tab:red", alpha=0.15, lw=0)
    ax.set_ylabel("train loss")
    ax.legend(loc="upper right", fontsize=7,
              title=f"{len(crossed)} barrier(s) in {len(steps)} steps", title_fontsize=7)


def walk_figure(runs: History | Mapping[str, History], *, max_steps: int | None = None,
                title: str | None = None, floor: str = "interior"):
    """Xing et al. Fig. 1: per run (column) the interpolated training loss between consecutive
    iterates concatenated along the iteration axis (segment t spans [t, t+1]) with the
    valley-floor line (barrier-crossing steps shaded red), the cosine of consecutive
    mini-batch gradients cos(g_{t-1}, g_t) at iteration t (the turn at θ_t; ``grad_cosine``
    logs it at step t + 1, after the second of the two updates), and the distance from
    initialisation ‖θ_t − θ_0‖.

    ``runs`` is one history or ``{label: history}``; ``max_steps`` crops the walk panel.
    ``floor="interior"`` draws the floor through the segments whose lowest point lies between
    the two iterates only (Xing et al.'s definition, line 81); ``"segment"`` through every
    segment's lowest point.
    """
    if floor not in VALLEY_FLOORS:
        raise ValueError(f"floor={floor!r}: expected one of {', '.join(VALLEY_FLOORS)}")
    if any(_LOSS_KEY.match(k) or k in ("grad_cosine", "dist_from_init") for k in runs):
        runs = {"": runs}  # a single history
    fig, axes = plt.subplots(3, len(runs), figsize=(5.0 * len(runs), 7.5), squeeze=False,
                             sharex="col")
    for j, (label, h) in enumerate(runs.items()):
        ax = axes[0, j]
        _draw_walk(ax, h, max_steps, floor)
        if label:
            ax.set_title(label)
        s, c = _series(h, "grad_cosine")
        ax = axes[1, j]
        if len(s):
            # logged at step s, after the update θ_{s-1} → θ_s: the cosine of the gradients
            # of the updates into and out of θ_{s-1}, cos(g_{t-1}, g_t) for t = s − 1 (eq.
            # (1)'s indices), drawn at iteration t as Fig. 1 does, under the loss at θ_t
            ax.plot(s - 1, c, lw=0.8, color="tab:green")
            ax.axhline(0, color="k", lw=0.5)
            ax.axhline(-1, color="k", lw=0.5, ls=":")
            ax.set_ylim(-1.05, 1.05)
        else:
            ax.text(0.5, 0.5, "grad_cosine not recorded", ha="center", transform=ax.transAxes)
        ax.set_ylabel(r"$\cos(g_{t-1}, g_t)$")
        s, dist = _series(h, "dist_from_init")
        ax = axes[2, j]
        if len(s):
            ax.plot(s, dist, lw=1.0, color="tab:purple")
        else:
            ax.text(0.5, 0.5, "dist_from_init not recorded", ha="center",
                    transform=ax.transAxes)
        ax.set_ylabel(r"$\|\theta_t - \theta_0\|$")
        ax.set_xlabel("iteration")
        if max_steps is not None:
            # a run shorter than max_steps ends where its data do: an axis drawn on to
            # max_steps read as a walk that stopped recording
            end = _last_iteration(h)
            for a in axes[:, j]:
                # at least one iteration wide: a run recorded at step 0 only set the limits
                # (0, 0), which matplotlib warns of and widens around 0
                a.set_xlim(0, max_steps if end is None else min(max_steps, max(end, 1)))
    # the panels' y labels are symbols: the title says what the three rows are
    rows = ("walk plot: the loss between consecutive iterates, the cosine of consecutive "
            "gradients, the distance from initialisation")
    # wrapped to the figure: on one run's 5 inches the rows' line ran past both edges
    fig.suptitle(wrapped(f"{title}\n{rows}" if title else rows, 0.95 * fig.get_figwidth()),
                 fontsize=10)
    fig.tight_layout()
    return fig


def _last_iteration(history: History) -> float | None:
    """The last iteration a column of :func:`walk_figure` draws anything at: the end of the
    last interpolated segment, the last cosine (drawn one step before it is logged), the
    last distance; None when nothing is recorded."""
    steps, _, _ = walk_segments(history)
    ends = [float(steps[-1]) + 1] if len(steps) else []
    for name, back in (("grad_cosine", 1), ("dist_from_init", 0)):
        s, _ = _series(history, name)
        if len(s):
            ends.append(float(s.max()) - back)
    return max(ends) if ends else None


def epoch_rows(history: History) -> dict[int, float]:
    """{epoch: the step its per-epoch row is logged at}; an epoch logged twice (cut short by
    ``max_steps``, completed on resume) by its later row: the whole epoch's."""
    return {int(e): s for s, e in sorted(history.get("walk_epoch", []))}


def walk_epoch_table(runs: History | Mapping[str, History], *, name: str = "walk_barriers",
                     caption: str = "") -> Table:
    """Xing et al. Tables 1–2 from the per-epoch metrics: steps interpolated, barriers crossed,
    mean barrier height (over crossing steps) and mean height above the valley floor. An
    epoch logged twice is shown once, from its later row (:func:`epoch_rows`)."""
    if any(k.startswith("walk_") for k in runs):
        runs = {"": runs}
    rows = []
    for label, h in runs.items():
        ep = {s: e for e, s in epoch_rows(h).items()}
        cols = {k: dict(h.get(f"walk_epoch_{k}", [])) for k in
                ("steps", "barriers", "mean_barrier_height", "mean_height")}
        for s in sorted(ep):
            rows.append([label, int(ep[s]), int(cols["steps"].get(s, 0)),
                         int(cols["barriers"].get(s, 0)), cols["mean_barrier_height"].get(s),
                         cols["mean_height"].get(s)])
    return Table(name, ["run", "epoch", "steps", "barriers", "mean barrier height",
                        "mean height above floor"], rows,
                 caption=caption or "Step interpolation per epoch (Xing et al. Tables 1-2)")
