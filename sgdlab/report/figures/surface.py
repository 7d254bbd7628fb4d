"""Loss lines and planes around a model (Li et al. 2018 Figs. 1-2 style).

Reads a :class:`~sgdlab.measure.surface.LossSurface` (or its ``to_dict()``); recomputes nothing.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sgdlab.report.figures.axes import log_scale  # noqa: E402

__all__ = ["loss_surface_figure"]


def _get(surface: Any, key: str):
    return surface[key] if isinstance(surface, Mapping) else getattr(surface, key)


def loss_surface_figure(surface: Any, *, path: Any = None, labels: tuple[str, str] = ("d₁", "d₂"),
                        title: str | None = None):
    """A line: train (solid) and test (dashed) loss against the coordinate, on a log scale when
    every finite loss is positive (:func:`~sgdlab.report.figures.axes.log_scale`). A plane:
    contours of the training loss (log-spaced levels) with the model at the origin and, given
    ``path`` ((T, 2) coordinates, e.g. :class:`~sgdlab.measure.surface.TrajectoryPCA`'s
    ``coords``), the trajectory drawn over it."""
    coords = _get(surface, "coords")
    loss = np.asarray(_get(surface, "train_loss"), dtype=float)
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    if len(coords) == 1:
        ax.plot(coords[0], loss, "-", color="tab:blue", label="train loss")
        test = _get(surface, "test_loss")
        if len(test):
            ax.plot(coords[0], test, "--", color="tab:blue", label="test loss")
        # a log axis would drop a loss of exactly 0 (a fitted MSE, a saturated softmax) unseen
        log_scale(ax, [*loss, *np.asarray(test, dtype=float)])
        ax.set_xlabel(f"α along {labels[0]}")
        ax.set_ylabel("loss")
        ax.axvline(0.0, color="k", lw=0.5, ls=":")
        ax.legend(fontsize=7)
    else:
        a, b = np.meshgrid(np.asarray(coords[0]), np.asarray(coords[1]), indexing="ij")
        finite = loss[np.isfinite(loss)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (1.0, 1.0)
        if lo > 0 and hi > lo:
            levels = np.geomspace(lo, hi, 25)
        else:
            levels = np.linspace(lo, hi if hi > lo else lo + 1.0, 25)
        cs = ax.contour(a, b, loss, levels=levels, cmap="viridis", linewidths=0.8)
        fig.colorbar(cs, ax=ax, label="train loss")
        ax.plot([0.0], [0.0], "k*", ms=8, label="model")
        if path is not None:
            p = np.asarray(path, dtype=float)
            ax.plot(p[:, 0], p[:, 1], ".-", color="tab:red", ms=3, lw=1, label="trajectory")
        ax.set_xlabel(f"α along {labels[0]}")
        ax.set_ylabel(f"β along {labels[1]}")
        ax.set_aspect("equal", adjustable="box")
        ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title or f"loss around the model (batch-norm statistics: "
                 f"{_get(surface, 'bn_stats')})", fontsize=9)
    fig.tight_layout()
    return fig
