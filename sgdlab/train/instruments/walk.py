"""Step interpolation during training (Xing et al. 2018): the loss on the segment θ_t → θ_{t+1}.

:class:`StepInterpolationCallback` snapshots θ_t in ``on_step_begin`` of a chosen step t (the
step counter *before* the update, so step 0 is the first update) and, in ``on_step_end``,
evaluates :func:`sgdlab.measure.walk.step_interpolation` between the snapshot and θ_{t+1}.
``epochs`` restricts the work to whole epochs (Xing et al.'s Tables 1-2 report epochs 1, 10, 25
and 100). Metrics, logged at step t (the segment's start; the segment spans [t, t+1] in a walk
plot):

- ``walk_loss_k00`` … ``walk_loss_k{M−1}``: the losses at the M evaluated points, uniform in α
  from 0 to 1 (M = K + 2 with the default ``spacing="interior"``: the iterates and the K points
  between them);
- ``walk_valley_alpha``, ``walk_valley_loss``, ``walk_barrier`` (0/1), ``walk_barrier_height``,
  ``walk_height`` (height above the valley floor);

and at each epoch end (logged at the epoch's last step; also for an epoch that training
ends within): ``walk_epoch`` (1-based epoch number), ``walk_epoch_steps``,
``walk_epoch_barriers``, ``walk_epoch_mean_barrier_height`` (NaN-free: omitted if none),
``walk_epoch_mean_height``, ``walk_seconds`` (cumulative time spent in this callback).

:class:`StepLengthCallback` (instrument ``step_length``) fits Cockpit's quadratic to the loss
and slope at both ends of a scheduled step (:mod:`sgdlab.measure.step_length`) and logs at the
step's start t: ``step/alpha`` (0: landed at the fitted valley floor, 1: at the starting height
across it), ``step/length``, ``step/loss_start``, ``step/loss_end``, ``step/slope_start``,
``step/slope_end`` and ``step/concave``; on the step's own mini-batch (``source="step"``,
default, per-sample variances as weights) or on a fixed evaluation subset (``"eval"``), dropout
off and batch norm on its running statistics.
"""
from __future__ import annotations

import numbers
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sgdlab.errors import RUN_SEED_RULE, checked_int_argument, int_at_least, is_seed, plain_int
from sgdlab.measure.passes import memory_budget_bytes
from sgdlab.measure.step_length import WEIGHTS, normalized_step_length
from sgdlab.measure.walk import (
    StepInterpolation,
    analyze_segment,
    check_bn_mode,
    evaluation_mode,
    height_floor_of,
    segment_alphas,
    segment_losses,
    summarize_epochs,
)
from sgdlab.operators.params import params_vector

from ..callbacks import (Callback, FixedEvalSet, Schedule, TrainContext, naming_divergence,
                         train_batches)
from . import register_instrument
from .curvature import check_options

__all__ = ["StepInterpolationCallback", "StepLengthCallback", "WALK_PREFIX",
           "step_interpolation_instrument", "step_length_instrument"]

WALK_PREFIX = "walk_"


class StepInterpolationCallback(Callback):
    """Interpolate the training loss between consecutive iterates on a step schedule.

    Args:
        schedule: which steps t to interpolate (on the step counter before the update).
        num_points: K points on each segment (default 10): between the iterates with
            ``spacing="interior"`` (Xing et al.), both iterates among them with "inclusive".
        spacing: see :func:`sgdlab.measure.walk.segment_alphas`.
        epochs: if given, only steps of these (1-based) epochs are interpolated (and the
            schedule still has to select them).
        eval_data: None: the whole training set; an int n: a fixed random subset of n training
            examples (drawn once with ``seed``); or explicit data (a batch or batches).
        eval_batch_size: split the evaluation set into batches of this size (bounds memory).
        height_floor: θ_t^min of the height above the valley floor (Table 2): "segment" (the
            lowest evaluated point, default) or "sampled" (the lowest of the K points, line
            128; :func:`sgdlab.measure.walk.height_floor_of`).
        bn_mode, alpha_chunk, vectorize, memory_budget, rtol, atol, refine: see
            :func:`sgdlab.measure.walk.segment_losses` and
            :func:`~sgdlab.measure.walk.analyze_segment`.
        seed: for the evaluation subset.
    """

    def __init__(self, schedule: Schedule | None = None, *, num_points: int = 10,
                 spacing: str = "interior", epochs: list[int] | None = None,
                 eval_data: Any = None, eval_batch_size: int | None = None, bn_mode: str = "eval",
                 alpha_chunk: int | None = None, vectorize: bool | None = None,
                 memory_budget: int | str | None = None, rtol: float = 1e-4, atol: float = 0.0,
                 refine: bool = False, height_floor: str = "segment", seed: int = 0):
        # True was 1 point, 10.0 a traceback from torch.linspace
        num_points = plain_int(num_points)
        check_options(num_points=(num_points, int_at_least(num_points, 1), "an int >= 1"))
        self.alphas = segment_alphas(num_points, spacing=spacing)   # validates both
        if len(self.alphas) < 3:
            raise ValueError(f"Invalid num_points={num_points}: a barrier needs a point between "
                             "the iterates")
        # numpy's and torch's ints are epochs, subset sizes and seeds (np.int64 from a grid),
        # kept as Python ints; a bool is none of them (True was a subset of 1 example)
        given = epochs
        if isinstance(epochs, (list, tuple)):
            epochs = [plain_int(e) for e in epochs]
        eval_data, seed = plain_int(eval_data), plain_int(seed)
        eval_batch_size = checked_int_argument("eval_batch_size", eval_batch_size, 1, ", or None",
                                               optional=True)
        check_options(
            epochs=(given, epochs is None or (isinstance(epochs, list) and all(
                int_at_least(e, 1) for e in epochs)), "a list of 1-based epoch numbers"),
            eval_data=(eval_data, int_at_least(eval_data, 1) or not isinstance(
                eval_data, (numbers.Number, str, np.bool_)),
                "None, a subset size >= 1, or a batch or batches"),
            seed=(seed, is_seed(seed), RUN_SEED_RULE))
        self.epochs = None if epochs is None else frozenset(epochs)
        check_bn_mode(bn_mode)
        self.schedule = schedule if schedule is not None else Schedule.every(1)
        self.num_points, self.eval_data = num_points, eval_data
        self.eval_batch_size = eval_batch_size
        self.kw = dict(bn_mode=bn_mode, alpha_chunk=alpha_chunk, rtol=rtol, atol=atol,
                       refine=refine, height_floor=height_floor_of(height_floor, spacing))
        self.vectorize, self.seed = vectorize, seed
        self.memory_budget = memory_budget_bytes(memory_budget)
        self.records: list[StepInterpolation] = []
        self.seconds = 0.0
        self._theta_t: Tensor | None = None
        self._data: Any = None

    def _resolve_data(self, ctx: TrainContext) -> Any:
        spec = self.eval_data
        if spec is None or isinstance(spec, int):
            return train_batches(ctx.data, spec, self.seed, self.eval_batch_size)
        return spec

    def on_train_begin(self, ctx: TrainContext) -> None:
        self._data = self._resolve_data(ctx)

    def on_step_begin(self, ctx: TrainContext) -> None:
        wanted = self.should_run(ctx.step) and (self.epochs is None
                                                or ctx.epoch + 1 in self.epochs)
        self._theta_t = params_vector(ctx.model) if wanted else None

    def on_step_end(self, ctx: TrainContext) -> None:
        if self._theta_t is None:
            return
        t0 = time.perf_counter()
        if self._data is None:
            self._data = self._resolve_data(ctx)
        alphas = self.alphas
        kw = dict(self.kw)
        losses = segment_losses(ctx.model, ctx.loss_fn, self._data, self._theta_t,
                                params_vector(ctx.model), alphas, bn_mode=kw.pop("bn_mode"),
                                alpha_chunk=kw.pop("alpha_chunk"), vectorize=self.vectorize,
                                memory_budget=self.memory_budget)
        rec = analyze_segment(alphas, losses, **kw, step=ctx.step - 1, epoch=ctx.epoch + 1)
        self._theta_t = None
        self.records.append(rec)
        t = ctx.step - 1
        for k, v in enumerate(rec.losses):
            ctx.log(f"{WALK_PREFIX}loss_k{k:02d}", v, t)
        ctx.log_dict({f"{WALK_PREFIX}valley_alpha": rec.valley_alpha,
                      f"{WALK_PREFIX}valley_loss": rec.valley_loss,
                      f"{WALK_PREFIX}barrier": float(rec.barrier),
                      f"{WALK_PREFIX}barrier_height": rec.barrier_height,
                      f"{WALK_PREFIX}height": rec.height_above_floor}, t)
        self.seconds += time.perf_counter() - t0

    def on_epoch_end(self, ctx: TrainContext) -> None:
        self._log_epoch(ctx)

    def on_train_end(self, ctx: TrainContext) -> None:
        self._log_epoch(ctx)     # an epoch cut short (max_steps, divergence): its steps so far

    def _log_epoch(self, ctx: TrainContext) -> None:
        """The summary of the epoch in progress (``ctx.epoch`` counts completed ones), once
        per step: the run's history (restored on resume) says whether it is logged already. An
        epoch cut short by ``max_steps`` and completed by a resume is logged twice: its steps so
        far at the stop, all of them at its end."""
        epoch = ctx.epoch + 1
        mine = [r for r in self.records if r.epoch == epoch]
        logged = ctx.history.get(f"{WALK_PREFIX}epoch", [])
        if not mine or any(v == epoch and t == ctx.step for t, v in logged):
            return
        s = summarize_epochs(mine)[0]
        vals = {f"{WALK_PREFIX}epoch": s.epoch, f"{WALK_PREFIX}epoch_steps": s.steps,
                f"{WALK_PREFIX}epoch_barriers": s.barriers,
                f"{WALK_PREFIX}epoch_mean_height": s.mean_height_above_floor,
                f"{WALK_PREFIX}seconds": self.seconds}
        if s.barriers:
            vals[f"{WALK_PREFIX}epoch_mean_barrier_height"] = s.mean_barrier_height
        ctx.log_dict(vals)

    def summary(self):
        """Per-epoch table (:class:`~sgdlab.measure.walk.EpochWalkSummary` list)."""
        return summarize_epochs(self.records)

    def state_dict(self) -> dict[str, Any]:
        return {"records": [r.to_dict() for r in self.records], "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = [StepInterpolation(**r) for r in state.get("records", [])]
        self.seconds = float(state.get("seconds", 0.0))


@register_instrument("step_interpolation")
def step_interpolation_instrument(*, schedule: Schedule, num_points: int = 10,
                                  spacing: str = "interior", epochs: list[int] | None = None,
                                  eval_subset: int | None = None,
                                  eval_batch_size: int | None = None, bn_mode: str = "eval",
                                  rtol: float = 1e-4, refine: bool = False,
                                  height_floor: str = "segment", seed: int = 0,
                                  memory_budget: int | str | None = None) -> Callback:
    """Xing et al.'s step interpolation (K points between θ_t and θ_{t+1}) by name;
    ``memory_budget``: :class:`StepInterpolationCallback`'s (absent or null: the device's
    default). Logs, at each interpolated step t, ``walk_loss_k00`` ... (the segment's losses,
    both iterates included), ``walk_valley_alpha``, ``walk_valley_loss``, ``walk_barrier``
    (1 or 0), ``walk_barrier_height`` and ``walk_height`` (above the valley floor); at each
    epoch's end ``walk_epoch``, ``walk_epoch_steps``, ``walk_epoch_barriers``,
    ``walk_epoch_mean_height``, ``walk_epoch_mean_barrier_height`` (with a barrier) and
    ``walk_seconds``."""
    # named as the instrument's option, not as the callback's eval_data (which takes data too)
    eval_subset = checked_int_argument("eval_subset", eval_subset, 1,
                                       ", or None: the whole training set", optional=True)
    return StepInterpolationCallback(schedule, num_points=num_points, spacing=spacing,
                                     epochs=epochs, eval_data=eval_subset,
                                     eval_batch_size=eval_batch_size, bn_mode=bn_mode,
                                     rtol=rtol, refine=refine, height_floor=height_floor,
                                     seed=seed, memory_budget=memory_budget)


class StepLengthCallback(FixedEvalSet, Callback):
    """Cockpit's normalised step length α of the steps ``schedule`` selects (module
    docstring); ``weights`` as in :func:`~sgdlab.measure.step_length.normalized_step_length`."""

    # its losses and slopes are means of the samples' own (FixedEvalSet.check_run)
    mean_of_samples = True

    def __init__(self, schedule: Schedule, *, source: str = "step",
                 eval_subset: int | None = 1000, weights: str = "noise", seed: int = 0,
                 prefix: str = "step"):
        if source not in ("step", "eval"):
            raise ValueError(f"Invalid source={source!r}: expected 'step' or 'eval'")
        if weights not in WEIGHTS:
            raise ValueError(f"Invalid weights={weights!r}: expected one of {WEIGHTS}")
        # as the step interpolation's: np.int64(3) failed the subset's draw at the first
        # measured step ("an integer is required"), True was a subset size
        eval_subset = checked_int_argument("eval_subset", eval_subset, 2,
                                           ", or None: the whole training set", optional=True)
        seed = plain_int(seed)
        check_options(seed=(seed, is_seed(seed), RUN_SEED_RULE))
        self.schedule, self.source, self.eval_subset = schedule, source, eval_subset
        self.weights, self.seed, self.prefix = weights, seed, prefix
        self._theta_t: Tensor | None = None

    @property
    def measures_eval_set(self) -> bool:
        return self.source == "eval"

    def on_step_begin(self, ctx: TrainContext) -> None:
        self._theta_t = params_vector(ctx.model) if self.should_run(ctx.step) else None

    def on_step_end(self, ctx: TrainContext) -> None:
        if self._theta_t is None:
            return
        theta_t, self._theta_t = self._theta_t, None
        data = ctx.batch if self.source == "step" else self.eval_data(ctx)
        end = params_vector(ctx.model)
        if data is None or bool(torch.equal(end, theta_t)):
            return        # no batch, or a step that did not move (lr 0): no α
        with naming_divergence(self), evaluation_mode(ctx.model, "eval"):
            st = normalized_step_length(ctx.model, ctx.loss_fn, theta_t, end, data,
                                        weights=self.weights)
        ctx.log_dict(st.as_metrics(self.prefix), ctx.step - 1)


@register_instrument("step_length")
def step_length_instrument(*, schedule: Schedule, source: str = "step",
                           eval_subset: int | None = 1000, weights: str = "noise",
                           seed: int = 0, prefix: str = "step") -> Callback:
    """Cockpit's α: where the step lands on a quadratic fitted along it (0: the floor).
    Logs ``step/alpha``, ``step/length``, ``step/concave``, ``step/loss_start``,
    ``step/loss_end``, ``step/slope_start`` and ``step/slope_end``."""
    return StepLengthCallback(schedule, source=source, eval_subset=eval_subset,
                              weights=weights, seed=seed, prefix=prefix)
