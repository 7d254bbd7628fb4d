"""Record the noise protocol a run actually follows: per-step learning rate and batch size.

The loop logs ``lr`` at step 0 and once per epoch; step-wise protocols (random, triangular,
cyclic batch size) need every step. :class:`ProtocolCallback` logs, for each scheduled step,
the values *used* by that step, at the step's index:

- ``lr_step``: the learning rate of the first parameter group; for ``random-lr-sgd``
  (:class:`sgdlab.optim.random_lr.RandomLRSGD`, also as the optimizer ``switch`` or
  ``trivialized`` steps with) the step actually taken, α·l, with the random factor α of
  Musso (2020), eq. (1), times the group's l. Its α is drawn inside ``optimizer.step``, so
  that step's values are logged after it (a random ``lr`` schedule on another optimizer sets
  the group's lr to α·l beforehand: both read the same);
- ``batch_size``: the number of examples in the step's mini-batch;
- ``lr_over_batch``: η / B, the ratio that sets the SGD temperature (Jastrzebski et al. 2018).

Plotted by :func:`sgdlab.report.figures.protocols.protocol_curves`.
"""
from __future__ import annotations

from typing import Any

from sgdlab.train.callbacks import Callback, Schedule, TrainContext

__all__ = ["ProtocolCallback"]


def _drawing_optimizer(optimizer):
    """The optimizer taking this step that draws its learning-rate factor inside ``step``
    (``last_alphas``, one per group): ``optimizer`` itself or the one a wrapper steps with
    (TrivializedSGD's ``base``, SwitchOptimizer's ``active``, read before the step); None when
    there is none."""
    opt = optimizer
    # not last_alpha: a property that raises where the groups' conventions differ
    while opt is not None and not hasattr(opt, "last_alphas"):
        inner = getattr(opt, "base", None)
        opt = inner if inner is not None else getattr(opt, "active", None)
    return opt


class ProtocolCallback(Callback):
    def __init__(self, schedule: Schedule | None = None):
        self.schedule = schedule if schedule is not None else Schedule.every(1)
        self._pending: tuple[int, float, int | None, Any] | None = None

    def on_step_begin(self, ctx: TrainContext) -> None:
        self._pending = None
        if not self.should_run(ctx.step):
            return
        lr = float(ctx.optimizer.param_groups[0]["lr"])
        b = len(ctx.batch[0]) if ctx.batch is not None else None
        drawing = _drawing_optimizer(ctx.optimizer)
        if drawing is not None:
            self._pending = (ctx.step, lr, b, drawing)      # α is not drawn yet
            return
        self._log(ctx, ctx.step, lr, b)

    def on_step_end(self, ctx: TrainContext) -> None:
        if self._pending is None:
            return
        step, lr, b, drawing = self._pending
        self._pending = None
        # the α of the group whose lr is logged (the first): groups may draw different α
        alphas = drawing.last_alphas
        alpha = alphas[0] if alphas is not None else None
        self._log(ctx, step, lr * float(alpha) if alpha is not None else lr, b)

    @staticmethod
    def _log(ctx: TrainContext, step: int, lr: float, b: int | None) -> None:
        ctx.log("lr_step", lr, step)
        if b is not None:
            ctx.log("batch_size", b, step)
            ctx.log("lr_over_batch", lr / b, step)
