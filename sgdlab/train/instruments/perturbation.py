"""Trivialized-SGD's gradient floor and field alignment during training (Chaudhari's thesis
§2.4.3, Figs. 2.3b and 2.4; :mod:`sgdlab.measure.perturbation`).

Instrument ``min_abs_grad`` logs, at the steps s of its schedule, for the mini-batch gradient
of the step that took the count to s (read in ``on_after_backward``, in the optimizer's
parameter order; parameters without a gradient are left out):

- ``min_abs_grad/loss``: min_j |∇f_j|, the loss gradient alone (what ``p.grad`` holds:
  Trivialized-SGD restores it after its step);
- ``min_abs_grad/step``: min_j |∇f_j + s_i h_j|, the gradient the optimizer stepped with: the
  field term is the one the optimizer reports it added (:meth:`TrivializedSGD.
  last_perturbation`, read after the step, so a resampled draw is the step's own). For an
  optimizer without a field (Adam, SGD) it is ``min_abs_grad/loss``;
- ``min_abs_grad/loss_nonzero``, ``min_abs_grad/step_nonzero``: the same over the coordinates
  where ∇f is not exactly 0 (a ReLU unit inactive on the whole batch, an input pixel 0 in all
  its images: exact zeros that make the minimum over all weights 0 in every run), and
  ``min_abs_grad/zero_fraction``, the share of such coordinates;
- for each parameter tensor named in ``layers`` (``"all"``: every one; NAME as
  ``model.named_parameters`` gives it) the four minima within it: ``min_abs_grad/loss/NAME``,
  ``min_abs_grad/step/NAME``, ``min_abs_grad/loss_nonzero/NAME``,
  ``min_abs_grad/step_nonzero/NAME``.

With ``over="weights"`` every one of these is taken over the weight tensors only (those of
two or more dimensions, where Trivialized-SGD's ``field_on="weights"`` puts its field,
:func:`~sgdlab.optim.trivialized.field_covers`), in every run, with a field or without: a
ReLU unit inactive on the whole batch gives its bias ∇f = 0 exactly and no field term, so
over every parameter the minimum of ∇f + s_i h would be 0 there (default ``"all"``: every
parameter with a gradient).

Both are minima over the weights of one step; the running minimum over training is the
minimum of the logged series (the experiments' ``reduce: min``).

Instrument ``field_alignment`` logs after the steps of its schedule, with x the weights after
the step and h the field the step added (fixed, or that step's draw), both over the
coordinates the field covers (all parameters, or the weight tensors under Trivialized-SGD's
``field_on="weights"``):

- ``field_alignment``: |hᵀx| / (‖h‖ ‖x‖), normalised (why: :mod:`sgdlab.measure.perturbation`);
- ``field_alignment/raw``: |hᵀx|, h as drawn, J√(p(p−2)) ξ, without the annealed strength s_i
  (the thesis' |hᵀσ| writes h, Algorithm 1's line 4, not h_curr).

It needs an optimizer with a field (``trivialized``, ``annealed-noise``, or one that ``switch``
is stepping with); with another it refuses to start. Neither instrument draws
random numbers or changes the model, its gradients or the optimizer.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from sgdlab.measure.perturbation import (min_abs_coordinates, overall_minimum,
                                         perturbation_alignment, zero_fraction)
from sgdlab.optim.trivialized import FIELD_ON, field_covers

from ..callbacks import Callback, Schedule, TrainContext
from . import register_instrument

__all__ = ["MinAbsGradientCallback", "FieldAlignmentCallback", "field_optimizer"]


def field_optimizer(optimizer: Any) -> Any:
    """The optimizer adding a field this step (has ``last_perturbation``): ``optimizer``
    itself or the one ``switch`` steps with (``active``); None when there is none."""
    opt = optimizer
    while opt is not None and not hasattr(opt, "last_perturbation"):
        opt = getattr(opt, "active", None)
    return opt


def _ordered_params(optimizer: Any) -> list[Tensor]:
    """The parameters in the optimizer's group order: the order of its flat field."""
    return [q for g in optimizer.param_groups for q in g["params"]]


def _field_slices(params: list[Tensor], keep: list[bool], h: Tensor) -> Tensor:
    """h restricted to the coordinates of the kept parameters (h flat over all of them)."""
    if h.numel() != sum(q.numel() for q in params):
        raise ValueError(f"the field has {h.numel()} coordinates, the optimizer's parameters "
                         f"{sum(q.numel() for q in params)}")
    parts, a = [], 0
    for q, k in zip(params, keep):
        if k:
            parts.append(h[a:a + q.numel()])
        a += q.numel()
    return torch.cat(parts)


class MinAbsGradientCallback(Callback):
    """min |gradient coordinate| of each scheduled step (module docstring)."""

    def __init__(self, schedule: Schedule, *, layers: str | Sequence[str] | None = None,
                 over: str = "all", prefix: str = "min_abs_grad"):
        if over not in FIELD_ON:
            raise ValueError(f"Invalid over={over!r}; choose one of {', '.join(FIELD_ON)}")
        if not (layers is None or layers == "all" or (
                isinstance(layers, (list, tuple)) and all(isinstance(n, str) for n in layers))):
            raise ValueError(f"Invalid layers={layers!r} (a list of parameter names, 'all', "
                             "or leave it out for none)")
        self.schedule, self.prefix, self.over = schedule, prefix, over
        self.layers = layers if layers in (None, "all") else tuple(layers)
        # the step count, parameters, which have a gradient, and their copied gradients
        self._pending: tuple[int, list[Tensor], list[bool], list[Tensor]] | None = None

    def check(self, model, data) -> None:
        if isinstance(self.layers, tuple):
            names = dict(model.named_parameters())
            bad = [n for n in self.layers if n not in names]
            if bad:
                raise ValueError(f"Invalid layers: no parameter {bad[0]!r} in the model; its "
                                 f"parameters: {', '.join(names)}")
            left_out = [n for n in self.layers if not field_covers(names[n], self.over)]
            if left_out:
                raise ValueError(f"Invalid layers: {left_out[0]!r} is not a weight tensor, and "
                                 f"over={self.over!r} leaves it out")

    def on_after_backward(self, ctx: TrainContext) -> None:
        self._pending = None
        if not self.should_run(ctx.step + 1):
            return
        params = _ordered_params(ctx.optimizer)
        keep = [q.grad is not None and field_covers(q, self.over) for q in params]
        grads = [q.grad.detach().to_dense().clone() for q, k in zip(params, keep) if k]
        if grads:    # copied: a base optimizer may change p.grad in place (Nesterov SGD)
            self._pending = (ctx.step + 1, params, keep, grads)

    def on_step_end(self, ctx: TrainContext) -> None:
        if self._pending is None or self._pending[0] != ctx.step:
            return
        _, params, keep, grads = self._pending
        self._pending = None
        opt = field_optimizer(ctx.optimizer)
        pert = opt.last_perturbation() if opt is not None else None
        added = None
        if pert is not None:
            s, h = pert
            added = s * _field_slices(params, keep, h)
        minima = {"loss": min_abs_coordinates(grads),
                  "loss_nonzero": min_abs_coordinates(grads, nonzero=True)}
        minima["step"] = (minima["loss"] if added is None
                          else min_abs_coordinates(grads, added))
        minima["step_nonzero"] = (minima["loss_nonzero"] if added is None
                                  else min_abs_coordinates(grads, added, nonzero=True))
        p = self.prefix
        out = {f"{p}/{k}": overall_minimum(v) for k, v in minima.items()}
        out[f"{p}/zero_fraction"] = zero_fraction(grads)
        if self.layers is not None:
            names = {id(q): n for n, q in ctx.model.named_parameters()}
            kept = [q for q, k in zip(params, keep) if k]
            for j, q in enumerate(kept):
                name = names.get(id(q))
                if name is None or (self.layers != "all" and name not in self.layers):
                    continue
                for k, v in minima.items():
                    out[f"{p}/{k}/{name}"] = float(v[j])
        ctx.log_dict(out)


class FieldAlignmentCallback(Callback):
    """|hᵀx| (normalised and raw) of the weights after each scheduled step (module docstring)."""

    def __init__(self, schedule: Schedule, *, prefix: str = "field_alignment"):
        self.schedule, self.prefix = schedule, prefix

    def on_train_begin(self, ctx: TrainContext) -> None:
        # refused before the first step, not at the first measurement after it
        if field_optimizer(ctx.optimizer) is None:
            raise ValueError(f"the instrument field_alignment needs an optimizer with a field "
                             f"(trivialized, annealed-noise); this run's is "
                             f"{type(ctx.optimizer).__name__}")

    def on_step_end(self, ctx: TrainContext) -> None:
        if not self.should_run(ctx.step):
            return
        opt = field_optimizer(ctx.optimizer)
        pert = opt.last_perturbation() if opt is not None else None
        if pert is None:
            return
        weights = _ordered_params(opt)
        h = pert[1]
        if getattr(opt, "field_on", "all") == "weights":
            # x is the coordinates h lives on: biases and batch-norm scales (1 at the start)
            # would dilute the cosine, by a share that changes as the weights grow
            keep = [field_covers(q, "weights") for q in weights]
            h = _field_slices(weights, keep, h)
            weights = [q for q, k in zip(weights, keep) if k]
        ctx.log_dict({self.prefix: perturbation_alignment(weights, h),
                      f"{self.prefix}/raw": perturbation_alignment(weights, h,
                                                                   normalise=False)})


@register_instrument("min_abs_grad")
def min_abs_grad_instrument(*, schedule: Schedule, layers: str | list[str] | None = None,
                            over: str = "all",
                            prefix: str = "min_abs_grad") -> MinAbsGradientCallback:
    """Minimum |coordinate| of the loss gradient and of the gradient the optimizer stepped
    with (the loss gradient plus Trivialized-SGD's field term), over all weights, over those
    with a non-zero loss gradient, and within the parameter tensors named in ``layers``
    (thesis Fig. 2.3b); over every parameter (``over="all"``) or the weight tensors only
    (``"weights"``)."""
    return MinAbsGradientCallback(schedule, layers=layers, over=over, prefix=prefix)


@register_instrument("field_alignment")
def field_alignment_instrument(*, schedule: Schedule,
                               prefix: str = "field_alignment") -> FieldAlignmentCallback:
    """Alignment |hᵀx| of the weights with the field of Trivialized-SGD or of the resampled
    annealed noise, normalised and raw, thesis Fig. 2.4."""
    return FieldAlignmentCallback(schedule, prefix=prefix)
