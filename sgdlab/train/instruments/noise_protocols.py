"""Record the noise protocol a run actually follows: per-step learning rate and batch size.

The loop logs ``lr`` once per epoch; step-wise protocols (random, triangular, cyclic batch
size) need every step. :class:`ProtocolCallback` logs, at the start of each scheduled step (so
the values are those *used* by that step):

- ``lr_step``: the learning rate of the first parameter group;
- ``batch_size``: the number of examples in the step's mini-batch;
- ``lr_over_batch``: η / B, the ratio that sets the SGD temperature (Jastrzebski et al. 2017).

Plotted by :func:`sgdlab.report.figures.protocols.protocol_curves`.
"""
from __future__ import annotations

from sgdlab.train.callbacks import Callback, Schedule, TrainContext

__all__ = ["ProtocolCallback"]


class ProtocolCallback(Callback):
    def __init__(self, schedule: Schedule | None = None):
        self.schedule = schedule if schedule is not None else Schedule.every(1)

    def on_step_begin(self, ctx: TrainContext) -> None:
        if not self.should_run(ctx.step):
            return
        lr = float(ctx.optimizer.param_groups[0]["lr"])
        ctx.log("lr_step", lr)
        if ctx.batch is not None:
            b = len(ctx.batch[0])
            ctx.log("batch_size", b)
            ctx.log("lr_over_batch", lr / b)
