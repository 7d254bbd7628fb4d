"""Per-step dynamics during training (Xing et al. 2018 Fig. 1; :mod:`sgdlab.measure.dynamics`).

:class:`DynamicsCallback` logs, at the steps s of its schedule (s = optimizer steps taken, i.e.
after the update θ_{s−1} → θ_s):

- ``grad_cosine``: cos ∠(g_{s−2}, g_{s−1}) of the two most recent mini-batch gradients, read
  from ``p.grad`` in ``on_after_backward`` (the gradients the optimizer used, before weight
  decay or momentum; :func:`~sgdlab.measure.dynamics.gradient_cosine`'s formula, evaluated in
  the parameters' dtype); the previous gradient is kept only when the next step is scheduled,
  and is part of ``state_dict`` so a resumed run logs the same values;
- ``dist_from_init`` ‖θ_s − θ_0‖, ``param_norm`` ‖θ_s‖, ``update_norm`` ‖θ_s − θ_{s−1}‖;

and on their own (sparser) schedules, on the training set or a fixed subset of it:

- ``full_grad_norm`` ‖∇L(θ_s)‖ (:func:`~sgdlab.measure.dynamics.full_batch_grad_norm`), batch
  norm in eval mode (running statistics) or, with ``full_grad_bn_mode="train"``, each
  evaluation batch normalised with its own statistics (``eval_batch_size``), as SGD sees it;
- ``hess_norm_eval`` / ``hess_norm_train``: ‖∇²L(θ_s)‖₂ by Lanczos with batch norm in eval or
  train mode (:func:`~sgdlab.measure.dynamics.hessian_spectral_norm`). Xing et al. (§3.1,
  footnote 5) track it "in the train mode of batchnorm" because that is what SGD experiences:
  ``eval_batch_size`` splits the evaluation set into batches of SGD's size, so each batch is
  normalised with its own statistics as in training (the Hessian is that of the mean loss
  over those batches). Lanczos starts from a vector drawn with its own generator (``seed`` +
  step), so dropout masks and optimizer noise, which read torch's global RNG, are unchanged.
  ``hessian_which="largest"`` logs the algebraically largest eigenvalue λ_max under the same
  names instead (:func:`~sgdlab.measure.dynamics.hessian_largest_eigenvalue`): Fig. 3's "Max
  eigenvalue (spectral norm)" (line 95) names both, which differ where a negative eigenvalue
  is the larger in magnitude.

θ_0 is the model at ``on_train_begin`` of a fresh run (restored from ``state_dict`` on resume).
An instrument added when a run is resumed has no θ_0 to restore: it logs everything but
``dist_from_init`` (which would otherwise be the distance from the resumed model), and says so.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sgdlab.errors import checked_int_argument, is_seed, plain_float, plain_int, warn
from sgdlab.measure.curvature.lanczos import check_tol
from sgdlab.measure.dynamics import HESSIAN_WHICH, check_hessian_which, full_batch_grad_norm
from sgdlab.measure.walk import BN_MODES, check_bn_mode
from sgdlab.operators.params import grads_vector, params_vector, trainable_named_params

from ..callbacks import Callback, FixedEvalSet, Schedule, TrainContext, step_generator
from . import register_instrument
from .curvature import SEED_RULE, check_options

__all__ = ["DynamicsCallback", "dynamics_instrument"]


class DynamicsCallback(FixedEvalSet, Callback):
    """Cheap per-step dynamics plus optional full-gradient and Hessian norms.

    Args:
        schedule: steps at which to log the cheap quantities (default every step).
        full_grad_schedule: steps for ``full_grad_norm`` (default never).
        hessian_schedule: steps for the Hessian's ``hessian_which`` eigenvalue (default never).
        hessian_bn_mode: "eval", "train" or "both".
        full_grad_bn_mode: batch norm's mode for ``full_grad_norm``: "eval" or "train".
        eval_subset: None: the whole training set; n: a fixed random subset of n examples
            (drawn with ``seed``) for the full-gradient and Hessian norms.
        eval_batch_size: split that set into batches of this size (None: one batch); batch
            norm in train mode then uses each batch's statistics.
        hessian_kw: passed to Lanczos (e.g. ``{"tol": 1e-3, "num_iter": 30}``).
        hessian_which: "magnitude" (the spectral norm max |λ|, default) or "largest" (λ_max).
    """

    def __init__(self, schedule: Schedule | None = None, *,
                 full_grad_schedule: Schedule | None = None,
                 hessian_schedule: Schedule | None = None, hessian_bn_mode: str = "eval",
                 full_grad_bn_mode: str = "eval",
                 eval_subset: int | None = None, eval_batch_size: int | None = None,
                 hessian_kw: dict | None = None, hessian_which: str = "magnitude",
                 seed: int = 0):
        self.hessian_which = check_hessian_which(hessian_which)
        check_bn_mode(hessian_bn_mode, "hessian_bn_mode", also=("both",))
        self.full_grad_bn_mode = check_bn_mode(full_grad_bn_mode, "full_grad_bn_mode")
        # 2.5 and True were taken, '4' failed on a TypeError; numpy's and torch's ints are ints
        eval_subset = checked_int_argument("eval_subset", eval_subset, 1,
                                           ", or None: the whole training set", optional=True)
        eval_batch_size = checked_int_argument("eval_batch_size", eval_batch_size, 1,
                                               ", or None: one batch", optional=True)
        self.eval_batch_size = eval_batch_size
        self.schedule = schedule if schedule is not None else Schedule.every(1)
        self.full_grad_schedule = full_grad_schedule or Schedule.never()
        self.hessian_schedule = hessian_schedule or Schedule.never()
        self.bn_modes = BN_MODES if hessian_bn_mode == "both" else (hessian_bn_mode,)
        self.eval_subset, self.hessian_kw, self.seed = eval_subset, dict(hessian_kw or {}), seed
        self.theta0: Tensor | None = None
        self.knows_start = True     # θ_0 is the run's step-0 model (not a resumed one)
        # Hot-path buffers (see the comment above on_step_begin).
        self._refs: list[Tensor] = []           # two (3, d) buffers: rows θ_0, θ_s, 0; θ_s is
        self._theta_step = -1                   # in _refs[s % 2], valid for s = _theta_step
        self._have_theta_t = False
        self._grads: Tensor | None = None       # (2, d): the gradient of step t is row t % 2
        self._prev_grad_step = -1               # step of the kept previous gradient
        self._prev_sq: Tensor | None = None     # ‖g_prev‖² (0-d), when known
        self._loaded_prev: Tensor | None = None
        self._cos_parts: tuple[Tensor, Tensor, int] | None = None  # (dots, ‖g_prev‖², row)
        self._param_cache: tuple[Any, list[Tensor]] | None = None  # (model, detached params)
        self._orig_cache: tuple[Any, list[Tensor]] | None = None
        self._theta_views: list[list[Tensor]] = []
        self._diff: Tensor | None = None
        self._grad_views: list[list[Tensor]] = []

    def on_train_begin(self, ctx: TrainContext) -> None:
        if self.theta0 is None:
            self.theta0 = params_vector(ctx.model)
            self.knows_start = ctx.step == 0
            if not self.knows_start:
                warn(
                    f"the dynamics instrument starts at step {ctx.step} of a resumed run, "
                    "without the run's step-0 parameters: it logs no dist_from_init (add it "
                    "before the first step to have it)")
        if ctx.step == 0:
            if self.should_run(0):
                ctx.log_dict({"dist_from_init": 0.0,
                              "param_norm": float(torch.linalg.vector_norm(self.theta0))})
            self._expensive(ctx)

    # Hot path. On a small model the per-step cost is the number of torch calls, not the flops,
    # so everything goes through preallocated buffers and precomputed views of them:
    # ``_foreach_copy_`` flattens θ into row 1 of a (3, d) buffer [θ_0; θ_s; 0] (two of them,
    # by step parity) and one ``vector_norm(θ − rows, dim=1)`` against the previous step's
    # buffer gives ‖θ − θ_0‖, ‖θ − θ_t‖ and ‖θ‖; gradients go into a (2, d) buffer (row = step
    # parity) whose ``mv`` with the new row gives g_prev·g and g·g; all scalars are read back
    # with one ``tolist``. Nothing in the loop moves the weights between one step's end and the
    # next step's begin, so θ_t is the θ flattened at the previous step's end.
    def _setup(self, ctx: TrainContext) -> None:
        if self._param_cache is not None and self._param_cache[0] is ctx.model:
            return
        params = [p.detach() for p in trainable_named_params(ctx.model).values()]
        th0 = self.theta0
        sizes = [p.numel() for p in params]
        self._refs = []
        for _ in range(2):
            r = torch.zeros(3, th0.numel(), dtype=th0.dtype, device=th0.device)
            r[0] = th0
            self._refs.append(r)
        self._diff = torch.empty_like(self._refs[0])
        self._grads = torch.zeros(2, th0.numel(), dtype=th0.dtype, device=th0.device)
        if self._loaded_prev is not None:  # resumed: restore the kept gradient's row
            self._grads[self._prev_grad_step % 2] = self._loaded_prev
            self._loaded_prev = None

        def views(row: Tensor) -> list[Tensor]:
            return [v.view_as(p) for v, p in zip(torch.split(row, sizes), params)]

        self._theta_views = [views(r[1]) for r in self._refs]
        self._grad_views = [views(g) for g in self._grads]
        self._param_cache = (ctx.model, params)
        self._theta_step = -1

    def on_step_begin(self, ctx: TrainContext) -> None:
        # θ_t is needed for the update norm of step t → t+1 only when s = t+1 is logged
        self._have_theta_t = self.should_run(ctx.step + 1)
        if self._have_theta_t and self._theta_step != ctx.step:
            self._setup(ctx)
            torch._foreach_copy_(self._theta_views[ctx.step % 2], self._param_cache[1])
            self._theta_step = ctx.step

    def on_after_backward(self, ctx: TrainContext) -> None:
        t = ctx.step
        self._cos_parts = None
        want_cos = self.should_run(t + 1) and self._prev_grad_step == t - 1
        keep = self.should_run(t + 2)
        if not (want_cos or keep):
            self._prev_grad_step, self._prev_sq = -1, None
            return
        self._setup(ctx)
        new, old = t % 2, 1 - t % 2  # rows by step parity: a resumed run is bit for bit equal
        grads = [p.grad for p in self._orig_params(ctx)]
        if any(g is None or g.is_sparse for g in grads):
            self._grads[new] = grads_vector(ctx.model)
        else:
            torch._foreach_copy_(self._grad_views[new], grads)
        dots = torch.mv(self._grads, self._grads[new])  # [g_row0·g, g_row1·g]
        if want_cos:
            pp = self._prev_sq if self._prev_sq is not None else torch.dot(
                self._grads[old], self._grads[old]).view(1)
            self._cos_parts = (dots, pp, new)
        self._prev_grad_step, self._prev_sq = (t, dots[new:new + 1]) if keep else (-1, None)

    def _orig_params(self, ctx: TrainContext) -> list[Tensor]:
        # the Parameters themselves (``.grad`` lives on them, not on the detached views)
        if self._orig_cache is None or self._orig_cache[0] is not ctx.model:
            self._orig_cache = (ctx.model, list(trainable_named_params(ctx.model).values()))
        return self._orig_cache[1]

    def on_step_end(self, ctx: TrainContext) -> None:
        if self.should_run(ctx.step):
            self._setup(ctx)
            k = ctx.step % 2
            torch._foreach_copy_(self._theta_views[k], self._param_cache[1])
            row = self._refs[k][1:2]
            # preallocated difference: a fresh (3, d) temporary per step costs page faults
            torch.sub(row, self._refs[1 - k], out=self._diff)
            dist = torch.linalg.vector_norm(self._diff, dim=1)
            parts = [dist] if self._cos_parts is None else [dist, *self._cos_parts[:2]]
            vals = torch.cat(parts).tolist()
            out = {"dist_from_init": vals[0], "param_norm": vals[2]}
            if not self.knows_start:
                del out["dist_from_init"]
            if self._have_theta_t:
                out["update_norm"] = vals[1]
            if self._cos_parts is not None:
                new = self._cos_parts[2]
                gg, dot, pp = vals[3 + new], vals[3 + (1 - new)], vals[5]
                if gg > 0 and pp > 0:
                    out["grad_cosine"] = max(-1.0, min(1.0, dot / math.sqrt(gg * pp)))
            ctx.log_dict(out)
            self._theta_step = ctx.step
        self._have_theta_t, self._cos_parts = False, None
        self._expensive(ctx)

    def _expensive(self, ctx: TrainContext) -> None:
        if self.full_grad_schedule(ctx.step):
            ctx.log("full_grad_norm", full_batch_grad_norm(
                ctx.model, ctx.loss_fn, self.eval_data(ctx), bn_mode=self.full_grad_bn_mode))
        if self.hessian_schedule(ctx.step):
            for mode in self.bn_modes:
                kw = {"generator": step_generator(ctx, self.seed), **self.hessian_kw}
                ctx.log(f"hess_norm_{mode}", HESSIAN_WHICH[self.hessian_which](
                    ctx.model, ctx.loss_fn, self.eval_data(ctx), bn_mode=mode, **kw))

    def state_dict(self) -> dict[str, Any]:
        prev = None
        if self._prev_grad_step >= 0 and self._grads is not None:
            prev = self._grads[self._prev_grad_step % 2].clone()
        return {"theta0": self.theta0, "knows_start": self.knows_start, "prev_grad": prev,
                "prev_grad_step": self._prev_grad_step,
                "prev_sq": None if prev is None or self._prev_sq is None else self._prev_sq.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.theta0 = state.get("theta0")
        self.knows_start = bool(state.get("knows_start", True))
        self._param_cache = self._orig_cache = None  # buffers rebuilt around the new θ_0
        self._prev_sq = state.get("prev_sq")
        if self._prev_sq is not None:
            self._prev_sq = self._prev_sq.reshape(1)
        self._loaded_prev = state.get("prev_grad")
        self._prev_grad_step = (int(state.get("prev_grad_step", -1))
                                if self._loaded_prev is not None else -1)


@register_instrument("dynamics")
def dynamics_instrument(*, schedule: Schedule, full_grad_every: int | None = None,
                        hessian_every: int | None = None, hessian_bn_mode: str = "eval",
                        full_grad_bn_mode: str = "eval",
                        eval_subset: int | None = None, eval_batch_size: int | None = None,
                        hessian_tol: float | None = None, hessian_iter: int | None = None,
                        hessian_which: str = "magnitude", seed: int = 0) -> Callback:
    """Gradient cosine, distances and norms every scheduled step; full-gradient and Hessian
    norms every ``full_grad_every`` / ``hessian_every`` steps (None: never), the latter by
    Lanczos with relative tolerance ``hessian_tol`` and at most ``hessian_iter`` iterations;
    ``hessian_which``: the spectral norm ("magnitude") or the largest eigenvalue ("largest").
    Logs ``grad_cosine``, ``dist_from_init``, ``param_norm``, ``update_norm`` (no prefix);
    ``full_grad_norm`` and ``hess_norm_eval`` on their own cadences."""
    full_grad_every, hessian_every, hessian_iter, seed = map(
        plain_int, (full_grad_every, hessian_every, hessian_iter, seed))
    hessian_tol = plain_float(hessian_tol)

    # 0 read as "never" (the falsy test below) while the docs say None does: refused, like
    # every other period
    full_grad_every, hessian_every = (
        checked_int_argument(name, v, 1, ", or leave it out for never", optional=True)
        for name, v in (("full_grad_every", full_grad_every), ("hessian_every", hessian_every)))
    if hessian_tol is not None:
        check_tol(hessian_tol, "hessian_tol", "hessian_iter")
    hessian_iter = checked_int_argument("hessian_iter", hessian_iter, 1, optional=True)
    check_options(seed=(seed, is_seed(seed), SEED_RULE))
    kw = {k: v for k, v in (("tol", hessian_tol), ("num_iter", hessian_iter)) if v is not None}
    return DynamicsCallback(
        schedule,
        full_grad_schedule=(Schedule.every(full_grad_every) if full_grad_every is not None
                            else None),
        hessian_schedule=Schedule.every(hessian_every) if hessian_every is not None else None,
        hessian_bn_mode=hessian_bn_mode, full_grad_bn_mode=full_grad_bn_mode,
        eval_subset=eval_subset, eval_batch_size=eval_batch_size, hessian_kw=kw,
        hessian_which=hessian_which, seed=seed)
