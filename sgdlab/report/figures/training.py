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


def learning_curves(history: History, *, title: str | None = None,
                    log_loss: bool = True) -> plt.Figure:
    """Loss (left, log scale by default) and accuracy (right) against optimizer steps."""
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    if _plot(ax_l, history, ("batch_loss", "train_loss", "test_loss"), (":", "-", "--")):
        if log_loss:
            finite_pos = [v for n in ("batch_loss", "train_loss", "test_loss")
                          for _, v in history.get(n, []) if np.isfinite(v) and v > 0]
            if finite_pos:
                ax_l.set_yscale("log")
        ax_l.legend(fontsize=8)
    else:
        ax_l.text(0.5, 0.5, "no loss recorded", ha="center", va="center",
                  transform=ax_l.transAxes)
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("loss (mean over examples)")
    if _plot(ax_a, history, ("train_acc", "test_acc"), ("-", "--")):
        ax_a.set_ylim(0, 1.02)
        ax_a.legend(fontsize=8)
    else:
        ax_a.text(0.5, 0.5, "no accuracy recorded (regression?)", ha="center", va="center",
                  transform=ax_a.transAxes)
    ax_a.set_xlabel("step")
    ax_a.set_ylabel("accuracy")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig
