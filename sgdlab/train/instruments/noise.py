"""Gradient noise during training (:mod:`sgdlab.measure.noise`, :mod:`sgdlab.measure.alignment`).

Instruments:

- ``noise``: ``noise/trace`` (Tr Σ), ``noise/mean_eig`` (Tr Σ / d), ``noise/top_i``,
  ``noise/rank`` and ``noise/rank_fraction`` (numpy threshold λ_max·d·eps), where Σ is the
  population covariance of per-sample gradients on the evaluation set (the thesis' D(x));
- ``alignment``: Σ–H alignment (Zhu et al.): ``align/cos_i``, ``align/residual``,
  ``align/hess_norm_eig_i``, ``align/sigma_norm_eig_i`` (+ ``align/trace_ratio``);
  ``centred: false`` compares H with the uncentred second moment Σ + ḡḡᵀ instead of Σ;
  both take ``check_copies`` (the ``hessian`` instrument's): Lanczos' deflated check for the
  copies of a repeated eigenvalue one start vector misses, for their top-k where Lanczos
  finds them (H's; Σ's past :meth:`~sgdlab.measure.noise.GradientCovariance.eigenpairs`'
  dense sizes);
- ``noise_magnitude``: ``noise/grad_norm`` ‖∇L‖ and ``noise/noise_norm`` sqrt(η Tr Σ / m)
  (Zhu Fig. 2), with η the optimizer's current step along mini-batch gradients (first param
  group, :func:`sgdlab.optim.gradient_step_size`: its lr, Entropy-SGD's and the smoothers'
  inner η_y, and for ``random-lr-sgd``, whose step α·l is drawn anew each step, the constant
  step with the same drift and diffusion, l⟨α²⟩/⟨α⟩: 2l/3, or 4l/3 under ``mean-lr``; so
  too under the loop's ``random`` schedule stepped each step, whose draw η·α, α ~ U[1 − w,
  1 + w], the group's lr holds: η(1 + w²/3), refused with momentum; another schedule's
  current lr is the step) and m the batch size of the current step (at step 0 the one the
  loop will step with; or ``batch_size`` when given); ``replacement: false`` takes the noise
  of batches of m distinct samples of the N training samples, sqrt(η Tr Σ (N − m)/(m (N −
  1))), as the loop's epochs draw them. Adam, AdamW and RMSprop, whose step is no η times
  the gradient, are refused before step 0 (``switch`` between two of them too); under
  ``switch`` from or to SGD the optimizer that takes the next step is judged at each
  measurement: while it is such a one nothing is logged (one warning a run), after the
  switch to SGD its η is taken.

- ``batch_statistics``: a mini-batch's gradient tests and ratios
  (:mod:`sgdlab.measure.batch_statistics`): ``batch/norm_test``, ``batch/inner_product_test``,
  ``batch/orthogonality_test``, ``batch/mean_gsnr``, ``batch/eb_criterion``,
  ``batch/cabs_batch_size`` (η: the same step as ``noise_magnitude``'s; left out, with one
  warning a run, at the steps of Adam, AdamW or RMSprop, ``switch``'s phase of one included,
  whose step has no η: the other statistics need none), ``batch/noise_scale``
  and its parts ``batch/trace_cov`` and ``batch/grad_sq_unbiased``, ``batch/grad_sq``,
  ``batch/loss``;
  with ``tic`` also ``batch/tic_diagonal`` and ``batch/tic_trace``, with ``curvature``
  (``hessian`` | ``ggn``) McCandlish et al.'s ``batch/noise_scale_curvature`` and its parts
  ``batch/trace_h_cov``, ``batch/grad_h_grad_unbiased``. The mini-batch is drawn
  afresh from the training set with the instrument's generator (``source="fresh"``, the
  size of the step's batch unless ``batch_size`` is given; at step 0 the loop's), or is the
  batch the step just used (``source="step"``; none at step 0), in both cases at the
  parameters after the step (nothing is logged for a batch of one sample, e.g. an epoch's
  last); ``prefix`` renames the series (two such instruments in one run).

Evaluation set, eval mode and seeding as in :mod:`sgdlab.train.instruments.curvature`.
"""
from __future__ import annotations

import torch

from sgdlab.errors import (ConfigError, check_flag, checked_int_argument, int_at_least, plain_int,
                           warn)
from sgdlab.measure.alignment import sigma_hessian_alignment
from sgdlab.measure.batch_statistics import (batch_statistics, checked_epsilon,
                                             takeuchi_information)
from sgdlab.measure.curvature.lanczos import check_tol, convergence_warnings_named
from sgdlab.measure.noise import gradient_covariance, noise_magnitude
from sgdlab.operators.ggn import check_output_is_tensor
from sgdlab.operators.params import num_params
from sgdlab.optim import SwitchOptimizer, gradient_step_size, preconditioned_optimizer

from ..callbacks import Schedule, callback_name, step_batch_size
from . import register_instrument
from .curvature import MeasuredCallback, _common, check_options, eval_set_size

__all__ = ["AlignmentCallback", "BatchStatisticsCallback", "NoiseCallback",
           "NoiseMagnitudeCallback"]


class NoiseCallback(MeasuredCallback):
    """Tr Σ, top-k eigenvalues and numerical rank of the per-sample gradient covariance."""

    per_sample = True

    def __init__(self, schedule: Schedule | None = None, *, k: int = 5, rank: bool = True,
                 check_copies: bool = False, **kw):
        super().__init__(schedule, **kw)
        k = plain_int(k)
        check_options(k=(k, int_at_least(k, 0), "an int >= 0; 0: no eigenvalues"))
        self.k, self.rank = k, check_flag("rank", rank, error=ConfigError)
        self.check_copies = check_flag("check_copies", check_copies, error=ConfigError)

    def compute(self, ctx, data, generator):
        cov = gradient_covariance(ctx.model, ctx.loss_fn, data)
        out = {"noise/trace": cov.trace(), "noise/mean_eig": cov.trace() / cov.dim}
        if self.k:
            vals, _ = cov.eigenpairs(min(self.k, cov.num_samples, cov.dim),
                                     check_copies=self.check_copies)
            out.update({f"noise/top_{i + 1}": float(v) for i, v in enumerate(vals)})
        if self.rank:
            r = cov.rank()
            out["noise/rank"], out["noise/rank_fraction"] = float(r), r / cov.dim
        return out


class AlignmentCallback(MeasuredCallback):
    per_sample = mean_of_samples = True

    def __init__(self, schedule: Schedule | None = None, *, k: int = 5, num_probes: int = 20,
                 tol: float = 1e-3, trace_alignment: bool = False,
                 num_iter: int | None = None, centred: bool = True,
                 check_copies: bool = False, **kw):
        super().__init__(schedule, **kw)
        k, num_probes, num_iter = map(plain_int, (k, num_probes, num_iter))
        check_options(k=(k, int_at_least(k, 1), "an int >= 1"),
                      num_probes=(num_probes, int_at_least(num_probes, 1), "an int >= 1"),
                      num_iter=(num_iter, num_iter is None or int_at_least(num_iter, k),
                                f"an int >= k ({k})"))
        self.trace_alignment = check_flag("trace_alignment", trace_alignment, error=ConfigError)
        self.centred = check_flag("centred", centred, error=ConfigError)
        self.check_copies = check_flag("check_copies", check_copies, error=ConfigError)
        tol = check_tol(tol)        # 0: num_iter steps, unwarned (Lanczos' own rule)
        self.k, self.num_probes, self.tol = k, num_probes, tol
        self.num_iter = num_iter

    def check(self, model, data) -> None:
        super().check(model, data)
        n, d = eval_set_size(data, self.eval_subset), num_params(model)
        check_options(k=(self.k, self.k <= min(n, d), f"at most min(N, d) = {min(n, d)}: Σ of "
                         f"N = {n} examples and d = {d} parameters has at most that many "
                         "eigenpairs"))

    def compute(self, ctx, data, generator):
        with convergence_warnings_named("align (the Hessian's top-k)",
                                        "raise the alignment instrument's num_iter"):
            res = sigma_hessian_alignment(ctx.model, ctx.loss_fn, data, self.k,
                                          num_probes=self.num_probes, tol=self.tol,
                                          num_iter=self.num_iter, generator=generator,
                                          trace_alignment=self.trace_alignment,
                                          centred=self.centred,
                                          check_copies=self.check_copies)
        return res.as_metrics("align")


def _phases(optimizer) -> tuple:
    """The optimizers that take a run's steps: ``switch``'s two, also as the base of
    ``trivialized``, which shares its base's groups; else ``optimizer`` alone."""
    while isinstance(getattr(optimizer, "base", None), torch.optim.Optimizer):
        optimizer = optimizer.base
    if isinstance(optimizer, SwitchOptimizer):
        return optimizer.first, optimizer.second
    return (optimizer,)


class _StepScaled(MeasuredCallback):
    """An instrument that scales with the optimizer's step along mini-batch gradients.

    At a step an adaptive optimizer takes (:func:`~sgdlab.optim.preconditioned_optimizer`:
    Adam, AdamW, RMSprop; ``switch``'s phase of one) there is no such step: what needs it is
    left out (:meth:`left_out`), with one warning a run; an instrument that measures nothing
    else (:attr:`only_step_scaled`) refuses an optimizer that is adaptive at every step,
    before step 0."""

    reads_training_step = True      # the optimizer's step size
    only_step_scaled = False
    per_sample = mean_of_samples = True

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._warned_adaptive = False

    def left_out(self) -> str:
        """What is not measured at an adaptive optimizer's steps, and why (its warning)."""
        raise NotImplementedError

    def on_train_begin(self, ctx) -> None:
        # a step it has no η for (one draw on a whole momentum buffer; for the noise
        # magnitude, Adam's) is refused before step 0, not at the first measurement
        self._warned_adaptive = False
        optimizer = getattr(ctx, "optimizer", None)
        if optimizer is not None:
            groups = [phase.param_groups[0] for phase in _phases(optimizer)]
            stepped = [g for g in groups if preconditioned_optimizer(g) is None]
            for group in stepped:
                self._gradient_step_size(ctx, group)
            if self.only_step_scaled and not stepped:
                gradient_step_size(groups[0])       # its ConfigError naming the optimizer
        super().on_train_begin(ctx)

    @staticmethod
    def _gradient_step_size(ctx, group: dict) -> float:
        return gradient_step_size(group, getattr(ctx, "schedule", None),
                                  getattr(ctx, "schedule_every", "step"))

    def step_size(self, ctx) -> float | None:
        """The first group's :func:`~sgdlab.optim.gradient_step_size` under the loop's
        schedule; None, warned once a run, where the optimizer taking the step (``switch``'s
        active one) is adaptive."""
        group = ctx.optimizer.param_groups[0]
        adaptive = preconditioned_optimizer(group)
        if adaptive is None:
            return self._gradient_step_size(ctx, group)
        if not self._warned_adaptive:
            self._warned_adaptive = True
            name = callback_name(self)
            warn(f"{name}: optimizer {adaptive} takes the steps from step {ctx.step} on, "
                 "dividing each coordinate of the gradient by a running root mean square, so "
                 f"its step is no step size times the gradient: {self.left_out()}",
                 RuntimeWarning)
        return None


class NoiseMagnitudeCallback(_StepScaled):

    only_step_scaled = True     # sqrt(η Tr Σ / m) is its η, so no adaptive run has one

    def __init__(self, schedule: Schedule | None = None, *, batch_size: int | None = None,
                 replacement: bool = True, **kw):
        super().__init__(schedule, **kw)
        batch_size = checked_int_argument("batch_size", batch_size, 1, optional=True)
        self.batch_size = batch_size
        self.replacement = check_flag("replacement", replacement, error=ConfigError)

    def left_out(self) -> str:
        return ("the noise magnitude sqrt(η Tr Σ / m), the diffusion of plain SGD's step η·g "
                "(Zhu et al. eq. 5), is not measured (nothing logged) at its steps")

    def compute(self, ctx, data, generator):
        lr = self.step_size(ctx)
        if lr is None:
            return {}   # an adaptive phase of switch: no η (warned)
        m = self.batch_size or step_batch_size(ctx)
        if m is None:
            return {}   # a loop of one's own that sets no batch, before its first step
        # without replacement the batches are drawn from the whole training set, whatever
        # subset Σ is estimated on
        n = None if self.replacement else len(ctx.data.x_train)
        nm = noise_magnitude(ctx.model, ctx.loss_fn, data, lr, m, replacement=self.replacement,
                             num_samples=n)
        return {"noise/grad_norm": nm.grad_norm, "noise/noise_norm": nm.noise_norm}


class BatchStatisticsCallback(_StepScaled):
    """Batch statistics (module docstring) on a fresh or the step's mini-batch."""

    measures_eval_set = False       # batches drawn from it, or the step's

    def __init__(self, schedule: Schedule | None = None, *, batch_size: int | None = None,
                 source: str = "fresh", epsilon: float = 0.0, tic: str | None = None,
                 curvature: str | None = None, prefix: str = "batch", **kw):
        super().__init__(schedule, **kw)
        if source not in ("fresh", "step"):
            raise ValueError(f"Invalid source={source!r}: expected 'fresh' or 'step'")
        # 2.5 was taken, then failed the first draw ("slice indices must be integers");
        # np.int64(8) is a batch size
        batch_size = checked_int_argument("batch_size", batch_size, 2, optional=True)
        if source == "step" and batch_size is not None:
            raise ValueError("batch_size applies to source='fresh' only (source='step' uses "
                             "the step's own batch)")
        # the measurement's own rule, at build: a NaN passed and failed the first measurement
        epsilon = checked_epsilon(epsilon)
        for key, val in (("tic", tic), ("curvature", curvature)):
            if val not in (None, "ggn", "hessian"):
                raise ValueError(f"Invalid {key}={val!r}: expected 'ggn', 'hessian' or null")
        self.curvature = curvature
        if source == "fresh" and self.eval_subset is not None and self.eval_subset < 2:
            raise ValueError(f"Invalid eval_subset={self.eval_subset}: fresh batches of at "
                             "least 2 samples are drawn from it (must be >= 2)")
        self.batch_size, self.source, self.epsilon, self.tic = batch_size, source, epsilon, tic
        self.prefix = prefix

    def left_out(self) -> str:
        return (f"{self.prefix}/cabs_batch_size is left out at its steps (CABS, Balles et al., "
                "assumes plain SGD's step η·g); the statistics that need no step are measured")

    def check(self, model, data) -> None:
        super().check(model, data)
        for key, val in (("tic", self.tic), ("curvature", self.curvature)):
            if val == "ggn":
                check_output_is_tensor(model, data.x_train[:2], f"{key}='ggn'",
                                       f"{key}='hessian'")
        if self.batch_size is not None:        # min() below would cut it to the pool silently
            n = eval_set_size(data, self.eval_subset)
            check_options(batch_size=(self.batch_size, self.batch_size <= n,
                                      f"fresh batches are drawn from N = {n} examples "
                                      "(eval_subset of the training set): at most N"))

    def compute(self, ctx, data, generator):
        if self.source == "step":
            if ctx.batch is None:
                return {}   # before the first step there is no batch yet
            batch = ctx.batch
        else:
            m = self.batch_size or step_batch_size(ctx)
            if m is None:
                return {}   # a loop of one's own that sets no batch, before its first step
            x, y = data
            m = min(m, len(x))
            idx = torch.randperm(len(x), generator=generator, device=generator.device)[:m]
            batch = (x[idx.to(x.device)], y[idx.to(y.device)])
        if len(batch[0]) < 2:
            return {}   # one sample (an epoch's last batch): no variance, nothing to test
        lr = self.step_size(ctx)
        out = batch_statistics(ctx.model, ctx.loss_fn, batch,
                               lr=lr if lr is not None and lr > 0 else None,
                               epsilon=self.epsilon,
                               curvature=self.curvature).as_metrics(self.prefix)
        if self.tic is not None:
            t = takeuchi_information(ctx.model, ctx.loss_fn, batch, curvature=self.tic)
            out[f"{self.prefix}/tic_diagonal"], out[f"{self.prefix}/tic_trace"] = (t.diagonal,
                                                                               t.trace)
        return out


@register_instrument("noise")
def noise_instrument(*, schedule: Schedule, k: int = 5, rank: bool = True,
                     eval_subset: int | None = 1000, eval_mode: bool = True,
                     seed: int = 0, check_copies: bool = False) -> NoiseCallback:
    """Diffusion matrix D(x) = Σ: trace, top-k eigenvalues, numerical rank. Logs
    ``noise/trace``, ``noise/top_1`` ... ``noise/top_k``, ``noise/mean_eig``, ``noise/rank``
    and ``noise/rank_fraction``; ``check_copies``: Lanczos' deflated check for missed copies
    of a repeated eigenvalue among the top-k (module docstring)."""
    return NoiseCallback(schedule, k=k, rank=rank, check_copies=check_copies,
                         **_common(eval_subset, eval_mode, seed))


@register_instrument("alignment")
def alignment_instrument(*, schedule: Schedule, k: int = 5, num_probes: int = 20,
                         tol: float = 1e-3, trace_alignment: bool = False,
                         eval_subset: int | None = 1000, eval_mode: bool = True,
                         seed: int = 0, num_iter: int | None = None,
                         centred: bool = True,
                         check_copies: bool = False) -> AlignmentCallback:
    """Σ–H alignment (Zhu et al. 2019); ``tol`` and ``num_iter`` (None: the default of
    :func:`sgdlab.measure.curvature.lanczos`) are its Hessian Lanczos iteration's (tol = 0
    runs every one of num_iter steps);
    ``centred: false`` takes the uncentred second moment (eq. (6)) for Σ (eq. (3));
    ``check_copies``: Lanczos' deflated check for missed copies of a repeated eigenvalue
    among the top-k of H and Σ (module docstring). Logs
    ``align/residual`` (in [0, k]), ``align/cos_i``, ``align/hess_norm_eig_i`` and
    ``align/sigma_norm_eig_i`` for i = 1..k (:class:`sgdlab.measure.Alignment`)."""
    return AlignmentCallback(schedule, k=k, num_probes=num_probes, tol=tol,
                             trace_alignment=trace_alignment, num_iter=num_iter,
                             centred=centred, check_copies=check_copies,
                             **_common(eval_subset, eval_mode, seed))


@register_instrument("noise_magnitude")
def noise_magnitude_instrument(*, schedule: Schedule, batch_size: int | None = None,
                               replacement: bool = True, eval_subset: int | None = 1000,
                               eval_mode: bool = True, seed: int = 0) -> NoiseMagnitudeCallback:
    """‖∇L‖ vs sqrt(η Tr Σ / m) (Zhu et al. 2019, Fig. 2); ``replacement: false``: the noise
    of batches of m distinct training samples, sqrt(η Tr Σ (N − m)/(m (N − 1))). Logs
    ``noise/grad_norm`` and ``noise/noise_norm``."""
    return NoiseMagnitudeCallback(schedule, batch_size=batch_size, replacement=replacement,
                                  **_common(eval_subset, eval_mode, seed))


@register_instrument("batch_statistics")
def batch_statistics_instrument(*, schedule: Schedule, batch_size: int | None = None,
                                source: str = "fresh", epsilon: float = 0.0,
                                tic: str | None = None, curvature: str | None = None,
                                prefix: str = "batch",
                                eval_subset: int | None = None,
                                eval_mode: bool = True,
                                seed: int = 0) -> BatchStatisticsCallback:
    """Norm / inner-product / orthogonality tests, GSNR, EB criterion, CABS, noise scale (and
    Takeuchi's criterion) of a mini-batch; ``eval_subset``: the pool fresh batches come from
    (default: the whole training set); ``prefix`` names the series (``batch/...``)."""
    return BatchStatisticsCallback(schedule, batch_size=batch_size, source=source,
                                   epsilon=epsilon, tic=tic, curvature=curvature,
                                   prefix=prefix,
                                   **_common(eval_subset, eval_mode, seed))
