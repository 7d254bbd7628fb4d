"""Model-to-model interpolation curves (Keskar et al. 2017 Fig. 3; Jastrzebski et al. Fig. 4).

Reads an :class:`~sgdlab.measure.interpolation.InterpolationCurve` (or its ``to_dict()``, e.g.
from a results.json); recomputes nothing.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sgdlab.report.figures.axes import log_scale  # noqa: E402

__all__ = ["interpolation_figure"]


def _get(curve: Any, key: str) -> list[float]:
    return list(curve[key] if isinstance(curve, Mapping) else getattr(curve, key))


def interpolation_figure(curve: Any, *, labels: tuple[str, str] = ("A", "B"),
                         title: str | None = None):
    """Loss (left axis, log scale) and accuracy (right axis) along (1 − α) θ_A + α θ_B;
    solid: train, dashed: test; vertical lines mark the two models (α = 0, 1)."""
    a = np.asarray(_get(curve, "alphas"))
    fig, ax = plt.subplots(figsize=(6.0, 4.3), layout="constrained")
    ax2 = ax.twinx()
    for split, ls in (("train", "-"), ("test", "--")):
        lo, ac = _get(curve, f"{split}_loss"), _get(curve, f"{split}_acc")
        if lo:
            ax.plot(a, lo, ls, color="tab:blue", label=f"{split} loss")
        if ac and np.isfinite(ac).any():
            ax2.plot(a, ac, ls, color="tab:red", label=f"{split} accuracy")
    log_scale(ax, [v for ln in ax.get_lines() for v in ln.get_ydata()])
    ax.set_xlabel("α")
    ax.set_ylabel("loss", color="tab:blue")
    ax2.set_ylabel("accuracy", color="tab:red")
    ax2.set_ylim(-0.02, 1.02)
    for x, lab in zip((0.0, 1.0), labels):
        ax.axvline(x, color="k", lw=0.5, ls=":")
        ax.annotate(lab, (x, 1.0), xycoords=("data", "axes fraction"), ha="center",
                    va="bottom", fontsize=8)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    # below the axes: "best" inside weighs only the loss axis' lines, and the legend would
    # sit over the accuracy curves drawn on the twin axis
    fig.legend(h1 + h2, l1 + l2, fontsize=7, loc="outside lower center", ncols=4,
               frameon=False)
    bn = curve["bn_stats"] if isinstance(curve, Mapping) else getattr(curve, "bn_stats", "none")
    # above the end labels, which sit on the top edge of the axes
    ax.set_title(title or f"linear interpolation (batch-norm statistics: {bn})", fontsize=9,
                 pad=14)
    return fig
