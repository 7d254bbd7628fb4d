"""Learning curves of one run, from its recorded history.

A *history* is ``{name: [(step, value), ...]}`` as in ``RunResult.history`` or
``RunStore.metrics(run_id)``. The curves use the names the training loop logs
(:mod:`sgdlab.train.loop`): ``train_loss``/``test_loss`` (mean loss, eval mode),
``batch_loss`` (epoch mean of mini-batch losses, train mode), ``train_acc``/``test_acc``
(fraction correct). Missing series are skipped; a panel with none says so.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["learning_curves"]

History = Mapping[str, Sequence[tuple[int, float]]]


def _plot(ax, history: History, names: Sequence[str], styles: Sequence[str]) -> int:
    drawn = 0
    for name, style in zip(names, styles):
        pts = history.get(name) or []
        if not pts:
            continue
        s, v = np.asarray(pts, dtype=float).T
        ax.plot(s, v, style, label=name, lw=1.5, ms=3)
        drawn += 1
    return drawn


def _panel(ax, history: History, names: Sequence[str], styles: Sequence[str], *,
           ylabel: str, empty: str) -> bool:
    """The series ``names`` with a legend, or the text ``empty`` if none is recorded; axis
    labels. Whether anything was drawn."""
    drawn = _plot(ax, history, names, styles) > 0
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    return drawn


def learning_curves(history: History, *, title: str | None = None,
                    log_loss: bool = True) -> plt.Figure:
    """Loss (left, log scale by default) and accuracy (right) against optimizer steps."""
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    losses = ("batch_loss", "train_loss", "test_loss")
    if _panel(ax_l, history, losses, (":", "-", "--"), ylabel="loss (mean over examples)",
              empty="no loss recorded") and log_loss:
        finite_pos = [v for n in losses for _, v in history.get(n, [])
                      if np.isfinite(v) and v > 0]
        if finite_pos:
            ax_l.set_yscale("log")
    if _panel(ax_a, history, ("train_acc", "test_acc"), ("-", "--"), ylabel="accuracy",
              empty="no accuracy recorded (regression?)"):
        ax_a.set_ylim(0, 1.02)
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig
