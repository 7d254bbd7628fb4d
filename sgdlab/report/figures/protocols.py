"""Learning-rate and batch-size protocols over optimizer steps, from recorded data.

Reads ``lr_step``, ``batch_size`` and ``lr_over_batch`` as logged by
:class:`sgdlab.train.instruments.noise_protocols.ProtocolCallback` (falls back to the loop's
per-epoch ``lr``). Input: ``{label: history}`` with ``history = {name: [(step, value), ...]}``
(``RunResult.history`` or ``RunStore.metrics(run_id)``), one curve per label, so protocols
(constant / random / cosine-cyclic / CLR / trapezoid / cyclic batch size) can be compared.
For a schedule's formula without a run, record ``sgdlab.optim.protocols.lr_trace`` /
``sgdlab.train.batch_schedules.batch_size_trace`` as ``{"lr_step": list(enumerate(trace))}``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sgdlab.report.figures.axes import log_scale  # noqa: E402

__all__ = ["protocol_curves"]

History = Mapping[str, Sequence[tuple[int, float]]]

_PANELS = (("lr_step", "learning rate η"), ("batch_size", "batch size B"),
           ("lr_over_batch", "η / B"))


def protocol_curves(histories: Mapping[str, History], *, title: str | None = None,
                    log_lr: bool = False) -> plt.Figure:
    """One panel per recorded quantity (η, B, η/B) against optimizer steps; panels with no
    data are left out (a single panel says so if nothing was recorded)."""
    present = []
    for name, label in _PANELS:
        keys = (name, "lr") if name == "lr_step" else (name,)
        if any(h.get(k) for h in histories.values() for k in keys):
            present.append((name, label, keys))
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(4.2 * max(1, len(present)), 3.4),
                             constrained_layout=True, squeeze=False)
    axes = axes[0]
    if not present:
        axes[0].text(0.5, 0.5, "no lr / batch size recorded", ha="center", va="center",
                     transform=axes[0].transAxes)
    for ax, (name, label, keys) in zip(axes, present):
        for run_label, h in histories.items():
            pts = next((h[k] for k in keys if h.get(k)), None)
            if not pts:
                continue
            s, v = np.asarray(pts, dtype=float).T
            ax.step(s, v, where="post", lw=1.2, label=run_label)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if name == "lr_step" and log_lr:
            log_scale(ax, [v for ln in ax.get_lines() for v in ln.get_ydata()])
        if len(histories) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
