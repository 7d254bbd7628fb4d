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

from sgdlab.report.figures import label_colours  # noqa: E402
from sgdlab.report.figures.charts import curves  # noqa: E402

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
        # each value holds until the next step's: drawn as steps
        drawn = {run_label: next((h[k] for k in keys if h.get(k)), None)
                 for run_label, h in histories.items()}
        curves({run_label: (*np.asarray(pts, dtype=float).T, None)
                for run_label, pts in drawn.items() if pts},
               xlabel="step", ylabel=label, ax=ax, steps=True,
               logy=name == "lr_step" and log_lr, legend=len(histories) > 1,
               styles={run_label: {"color": c}     # a run's colour in every panel
                       for run_label, c in label_colours(histories).items()})
    if title:
        fig.suptitle(title)
    return fig
