"""The angle between the local-entropy gradient and the SGD gradient during training
(Chaudhari's thesis §3.3.5; :mod:`sgdlab.measure.entropy_gradient`).

Instrument ``entropy_angle`` logs, at the steps of its schedule (after the step's update):

- ``entropy_angle/degrees``: ∠(∇f_γ(x), g) in degrees, g the "vanilla SGD gradient" at x;
- ``entropy_angle/cosine``: its cosine;
- ``entropy_angle/grad_norm`` ‖∇f_γ(x)‖ and ``entropy_angle/sgd_grad_norm`` ‖g‖.

∇f_γ is the instrument's own estimate from the current parameters x, never the running
optimizer's: under Entropy-SGD the optimizer's z is the average of a chain that started from
the previous x and was stepped on the training's batches, and reading it would put the
measurement inside the optimizer. The estimate (``method="langevin"``: Entropy-SGD's chain of
``steps`` Langevin steps with ``inner_lr`` and ``alpha``; ``"importance"``: ``num_samples``
Gaussian samples of variance γ/β) and g (``sgd_gradient="batch"``: a fresh mini-batch,
``"full"``: the evaluation set's gradient) draw their mini-batches of ``batch_size`` samples
(default: the size of the step's batch, at step 0 the one the loop will step with) from
the evaluation set with the instrument's generator. ``gamma`` is the thesis' scope (the
coupling's variance γ/β; Entropy-SGD's ``gamma``), fixed: give the optimizer's value to
measure what it descends. The loss is the run's ``loss_fn`` (an optimizer's weight decay, which
Entropy-SGD adds to its inner gradients, is not in it). ``prefix`` renames the series (two such
instruments in one run).

Evaluation set, eval mode and seeding as in :mod:`sgdlab.train.instruments.curvature`: the
model, its buffers, its ``.grad`` and torch's global generators are left as they were, so a
run with the instrument takes the same steps as one without. A Langevin chain that diverges
while the model is finite (``inner_lr`` too large for the loss's curvature at that point:
early in training, or eval-mode batch norm on running statistics of a few steps) is the
measurement's failure, not the training's: nothing is logged at that step (a warning says
so) and training goes on; a non-finite model still ends the run as diverged.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from sgdlab.errors import checked_int_argument, int_at_least, plain_float, plain_int
from sgdlab.measure.entropy_gradient import METHODS, SGD_GRADIENTS, local_entropy_gradient_angle
from sgdlab.measure.passes import memory_budget_bytes

from ..callbacks import Schedule, step_batch_size
from . import register_instrument
from .curvature import MeasuredCallback, _common, check_options, eval_set_size

__all__ = ["EntropyAngleCallback", "entropy_angle_instrument"]


def _positive(v: Any, *, finite: bool = True) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            and (v < math.inf or not finite))


class EntropyAngleCallback(MeasuredCallback):
    """∠(∇f_γ, SGD gradient) on the evaluation set (module docstring)."""

    def __init__(self, schedule: Schedule | None = None, *, gamma: float, beta: float = 1.0,
                 method: str = "langevin", steps: int = 20, inner_lr: float = 0.1,
                 alpha: float = 0.25, batch_size: int | None = None,
                 sgd_gradient: str = "batch", num_samples: int = 64,
                 memory_budget: int | str | None = None, prefix: str = "entropy_angle",
                 **kw):
        super().__init__(schedule, **kw)
        steps, num_samples = plain_int(steps), plain_int(num_samples)
        gamma, beta, inner_lr, alpha = map(plain_float, (gamma, beta, inner_lr, alpha))
        check_options(
            gamma=(gamma, _positive(gamma), "the scope, finite and > 0"),
            method=(method, method in METHODS, f"one of {', '.join(METHODS)}"),
            beta=(beta, _positive(beta, finite=method != "langevin"),
                  "> 0; inf, no thermal noise, for the langevin method only"),
            steps=(steps, int_at_least(steps, 1), "an int >= 1"),
            inner_lr=(inner_lr, _positive(inner_lr), "finite and > 0"),
            alpha=(alpha, isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
                   and 0 <= alpha < 1, "in [0, 1)"),
            sgd_gradient=(sgd_gradient, sgd_gradient in SGD_GRADIENTS,
                          f"one of {', '.join(SGD_GRADIENTS)}"),
            num_samples=(num_samples, int_at_least(num_samples, 1), "an int >= 1"))
        batch_size = checked_int_argument("batch_size", batch_size, 1,
                                          ", or leave it out for the step's batch size",
                                          optional=True)
        self.memory_budget = memory_budget_bytes(memory_budget)
        self.gamma, self.beta, self.method, self.steps = gamma, beta, method, steps
        self.inner_lr, self.alpha, self.batch_size = inner_lr, alpha, batch_size
        self.sgd_gradient, self.num_samples, self.prefix = sgd_gradient, num_samples, prefix

    def check(self, model, data) -> None:
        super().check(model, data)
        if self.batch_size is not None:
            n = eval_set_size(data, self.eval_subset)
            check_options(batch_size=(self.batch_size, self.batch_size <= n,
                                      f"mini-batches are drawn from N = {n} examples "
                                      "(eval_subset of the training set): at most N"))

    def _uses_batches(self) -> bool:
        return self.method == "langevin" or self.sgd_gradient == "batch"

    def compute(self, ctx, data, generator) -> dict[str, float]:
        b = self.batch_size
        if b is None and self._uses_batches():
            b = step_batch_size(ctx)
            if b is None:
                return {}   # a loop of one's own that sets no batch, before its first step
            b = min(b, len(data[0]))
        p = self.prefix
        try:
            r = local_entropy_gradient_angle(
                ctx.model, ctx.loss_fn, data, self.gamma, sgd_gradient=self.sgd_gradient,
                batch_size=b, beta=self.beta, method=self.method, steps=self.steps,
                inner_lr=self.inner_lr, alpha=self.alpha, num_samples=self.num_samples,
                generator=generator, memory_budget=self.memory_budget)
        except FloatingPointError:
            if not all(bool(torch.isfinite(q).all()) for q in ctx.model.parameters()):
                raise                    # the model diverged: the run's end, as elsewhere
            warnings.warn(f"{p}: the local-entropy estimate diverged at step {ctx.step} "
                          f"(its Langevin chain: inner_lr={self.inner_lr} too large for the "
                          "loss's curvature there); nothing logged, training goes on",
                          RuntimeWarning, stacklevel=2)
            return dict.fromkeys((f"{p}/degrees", f"{p}/cosine", f"{p}/grad_norm",
                                  f"{p}/sgd_grad_norm"), math.nan)
        return {f"{p}/degrees": r.degrees, f"{p}/cosine": r.cosine,
                f"{p}/grad_norm": r.entropy_grad_norm, f"{p}/sgd_grad_norm": r.sgd_grad_norm}


@register_instrument("entropy_angle")
def entropy_angle_instrument(*, schedule: Schedule, gamma: float, beta: float = 1.0,
                             method: str = "langevin", steps: int = 20, inner_lr: float = 0.1,
                             alpha: float = 0.25, batch_size: int | None = None,
                             sgd_gradient: str = "batch", num_samples: int = 64,
                             memory_budget: int | str | None = None,
                             prefix: str = "entropy_angle", eval_subset: int | None = 1000,
                             eval_mode: bool = True, seed: int = 0) -> EntropyAngleCallback:
    """Angle between the local-entropy gradient at scope ``gamma`` (thesis convention) and the
    SGD gradient (thesis §3.3.5), by Entropy-SGD's Langevin chain or importance sampling.
    Logs ``entropy_angle/cosine``, ``/degrees``, ``/grad_norm`` and ``/sgd_grad_norm``."""
    return EntropyAngleCallback(schedule, gamma=gamma, beta=beta, method=method, steps=steps,
                                inner_lr=inner_lr, alpha=alpha, batch_size=batch_size,
                                sgd_gradient=sgd_gradient, num_samples=num_samples,
                                memory_budget=memory_budget, prefix=prefix,
                                **_common(eval_subset, eval_mode, seed))
