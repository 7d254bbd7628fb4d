"""Curvature and sharpness during training (:mod:`sgdlab.measure.curvature`,
:mod:`sgdlab.measure.sharpness`).

Instruments (names in :data:`~sgdlab.train.instruments.INSTRUMENTS`):

- ``hessian``: ``hess/top_i`` (Lanczos), ``hess/bottom_i`` (most negative), ``hess/trace`` and
  ``hess/trace_se`` (Hutchinson), ``hess/frobenius`` (E‖Hv‖²); of ``operator: ggn`` or
  ``empirical_fisher``, ``ggn/...`` or ``fisher/...`` (:data:`SERIES_PREFIXES`);
- ``sharpness``: ``sharpness/expected`` (+ ``_se``), optionally ``sharpness/epsilon``
  (Keskar) and ``sharpness/local_entropy`` (−f_γ, thesis Def. 4.20).

All are measured on the training set or a fixed random subset of ``eval_subset`` examples
(drawn once with ``seed``), with the model in eval mode by default (``eval_mode=False``: as
is) and restored afterwards, its buffers (batch norm's running statistics) too. Randomness
(start vectors, probes, perturbations) comes from a generator seeded with ``seed + step``,
never from the global RNG, so measuring does not change the training trajectory and a resumed
run logs the same values.
"""
from __future__ import annotations

from typing import Any

import torch

from sgdlab.errors import (RUN_SEED_RULE, ConfigError, check_flag, checked_int_argument,
                           finite_number, int_at_least, is_seed, plain_float, plain_int)
from sgdlab.measure.curvature import frobenius_norm, hutchinson_trace, lanczos
from sgdlab.measure.curvature.lanczos import check_tol, convergence_warnings_named
from sgdlab.measure.passes import memory_budget_bytes
from sgdlab.measure.sharpness import epsilon_sharpness, expected_sharpness, local_entropy
from sgdlab.models.modes import first_batch_norm
from sgdlab.operators import curvature_operator
from sgdlab.operators.factory import OPERATORS
from sgdlab.operators.ggn import check_output_is_tensor
from sgdlab.operators.params import num_params
from sgdlab.operators.per_sample import check_running_statistics

from ..callbacks import (FixedEvalSet, MeasurementCallback, Schedule, TrainContext,
                         step_generator)
from . import register_instrument

__all__ = ["HessianCallback", "SERIES_PREFIXES", "SharpnessCallback", "MeasuredCallback"]

# the series prefix of each curvature matrix (the ``hessian`` instrument's ``operator``): a GGN
# or an empirical Fisher eigenvalue is not logged, nor labelled (sgdlab.report.figures.axes.
# CURVATURE_SERIES), as a Hessian one; the Hessian keeps ``hess``, the name stored runs read
SERIES_PREFIXES = {"hessian": "hess", "ggn": "ggn", "empirical_fisher": "fisher"}


def check_options(**rules: tuple[Any, bool, str]) -> None:
    """``name=(value, ok, rule)``: a ValueError "Invalid name=value (rule)" for the first
    option not ``ok``, raised when the instrument is built (a run config reports it under its
    key path before training), not at its first measurement."""
    for name, (value, ok, rule) in rules.items():
        if not ok:
            raise ValueError(f"Invalid {name}={value!r} ({rule})")


# a measurement at step s seeds its generator with seed + s (callbacks.step_generator), which
# torch takes below 2**64: a seed past that was taken, then failed the first measurement
# ("Overflow when unpacking long long"); 32 bits as a run config's seeds leave any step count
SEED_RULE = (f"{RUN_SEED_RULE}: the measurement at step s seeds its generator with seed + s")


def eval_set_size(data: Any, eval_subset: int | None) -> int:
    """The number of examples a measurement on ``eval_subset`` of ``data``'s training set
    sees (:func:`~sgdlab.train.callbacks.train_subset`)."""
    n = len(data.x_train)
    return n if eval_subset is None else min(n, eval_subset)


class MeasuredCallback(FixedEvalSet, MeasurementCallback):
    """A :class:`MeasurementCallback` on a fixed evaluation set, with a per-step generator;
    its schedule given as :class:`MeasurementCallback` takes it (``schedule=``, ``every=`` from
    ``start=``, or ``at=``), as are its subclasses' (``HessianCallback(every=10)``).

    A subclass whose measurement takes per-sample gradients sets :attr:`per_sample`; one that
    also sets them against the batch's loss (a plain mean of the samples' losses, refused
    otherwise), :attr:`mean_of_samples` (:class:`~sgdlab.train.callbacks.FixedEvalSet`)."""

    #: per-sample gradients: a batch norm without running statistics is refused by check()
    per_sample = False

    def __init__(self, schedule: Schedule | None = None, *, every: int | None = None,
                 start: int = 0, at: Any = None, eval_subset: int | None = 1000,
                 eval_mode: bool = True, seed: int = 0, at_train_begin: bool | None = None):
        # a fraction or a bool was taken, then failed the first measurement ("slice indices
        # must be integers", "manual_seed expected a long"); numpy's and torch's ints are ints
        eval_subset = checked_int_argument("eval_subset", eval_subset, 1,
                                           ", or None: the whole training set", optional=True)
        seed = plain_int(seed)
        check_options(seed=(seed, is_seed(seed), SEED_RULE))
        # an on/off option read by truth: "no" and 0.5 were on
        eval_mode = check_flag("eval_mode", eval_mode, error=ConfigError)
        super().__init__(self._measure, schedule, every=every, start=start, at=at,
                         at_train_begin=at_train_begin)
        self.eval_subset, self.eval_mode, self.seed = eval_subset, eval_mode, seed

    def check(self, model, data) -> None:
        bn = None if self.eval_mode else first_batch_norm(model, training=True, of_model=True)
        if bn is not None:
            raise ValueError(
                f"Invalid eval_mode=False ({bn} is in train mode: measured so, its "
                "output would depend on which examples share the evaluation batch, and "
                "per-sample quantities are undefined; measure in eval mode, the default)")
        if self.per_sample:
            check_running_statistics(model)

    def generator(self, ctx: TrainContext) -> torch.Generator:
        return step_generator(ctx, self.seed)

    def _measure(self, ctx: TrainContext) -> dict[str, float]:
        # MeasurementCallback._record puts every flag, buffer (batch norm's running statistics
        # a train-mode pass moves) and plain attribute back after this call
        if self.eval_mode:
            ctx.model.eval()
        return self.compute(ctx, self.eval_data(ctx), self.generator(ctx))

    def compute(self, ctx: TrainContext, data, generator: torch.Generator) -> dict[str, float]:
        raise NotImplementedError


class HessianCallback(MeasuredCallback):
    """Top-k / bottom-k eigenvalues, trace and Frobenius norm of a curvature matrix.

    Args:
        k: number of top eigenvalues (0: none); ``bottom``: number of most negative ones.
        trace_probes / frobenius_probes: Rademacher / Gaussian probes (0: skip).
        operator: ``hessian`` | ``ggn`` | ``empirical_fisher``.
        prefix: the series' prefix, ``<prefix>/top_1``, ...; None: the operator's
            (:data:`SERIES_PREFIXES`: ``hess``, ``ggn``, ``fisher``).
        tol: Lanczos relative residual tolerance (0: every one of num_iter steps is run);
            ``num_iter``: its most iterations (None: :func:`sgdlab.measure.curvature.lanczos`'s
            default, min(d, 2k + 60)), which a warning naming the series that did not reach
            ``tol`` says to raise.
        check_copies: Lanczos' deflated check for the copies of a repeated eigenvalue (or a
            cluster narrower than ``tol``) one start vector misses, for the top-k and
            bottom-k (:func:`sgdlab.measure.curvature.lanczos`'s ``check_copies``: about twice
            the products).
        block_size: probes per batched product for the trace and Frobenius estimates; None:
            the operator's memory-bound block. Not timed (``block_tuner``): the float round-off
            of a batched product depends on its block, and a run's series must not depend on
            how busy the machine was (two runs of one config store identical values).
    """

    def __init__(self, schedule: Schedule | None = None, *, k: int = 1, bottom: int = 0,
                 trace_probes: int = 0, frobenius_probes: int = 0, operator: str = "hessian",
                 tol: float = 1e-3, num_iter: int | None = None, prefix: str | None = None,
                 block_size: int | None = None, check_copies: bool = False, **kw):
        super().__init__(schedule, **kw)
        # numpy's and torch's ints are counts (np.int64(5) from a grid); kept as Python ints
        k, bottom, trace_probes, frobenius_probes, num_iter = map(
            plain_int, (k, bottom, trace_probes, frobenius_probes, num_iter))
        check_options(**{key: (v, int_at_least(v, 0), "an int >= 0") for key, v in (
            ("k", k), ("bottom", bottom), ("trace_probes", trace_probes),
            ("frobenius_probes", frobenius_probes))},
            num_iter=(num_iter, num_iter is None or int_at_least(num_iter, max(k, bottom, 1)),
                      f"an int >= k and bottom ({max(k, bottom, 1)})"),
            operator=(operator, operator in OPERATORS, f"one of {', '.join(sorted(OPERATORS))}"))
        check_copies = check_flag("check_copies", check_copies, error=ConfigError)
        block_size = checked_int_argument("block_size", block_size, 1, optional=True)
        tol = check_tol(tol)        # 0: num_iter steps, unwarned (Lanczos' own rule)
        if not (k or bottom or trace_probes or frobenius_probes):
            # it ran every step without logging a value, and said nothing
            raise ValueError("Invalid k=0 with bottom, trace_probes and frobenius_probes 0: "
                             "the instrument would measure nothing (set one of them >= 1)")
        self.k, self.bottom, self.tol, self.operator = k, bottom, tol, operator
        # (1/N) Σ_i g_i g_iᵀ, refused beside a loss that is no plain mean of the samples'
        self.per_sample = self.mean_of_samples = operator == "empirical_fisher"
        self.num_iter = num_iter
        self.trace_probes, self.frobenius_probes = trace_probes, frobenius_probes
        self.prefix = SERIES_PREFIXES.get(operator, operator) if prefix is None else prefix
        self.block_size = block_size
        self.check_copies = check_copies

    def check(self, model, data) -> None:
        super().check(model, data)
        d = num_params(model)
        check_options(**{key: (v, v <= d, f"more eigenvalues than the model's {d} parameters")
                         for key, v in (("k", self.k), ("bottom", self.bottom))})
        if self.operator == "ggn":
            check_output_is_tensor(model, data.x_train[:2], "operator='ggn'",
                                   "operator='hessian'")

    def compute(self, ctx, data, generator):
        op = curvature_operator(self.operator, ctx.model, ctx.loss_fn, data)
        p, out = self.prefix, {}
        advice = "raise the hessian instrument's num_iter"
        if self.k:
            with convergence_warnings_named(_series(p, "top", self.k), advice):
                vals, _ = lanczos(op, self.k, tol=self.tol, num_iter=self.num_iter,
                                  generator=generator, check_copies=self.check_copies)
            out.update({f"{p}/top_{i + 1}": float(v) for i, v in enumerate(vals)})
        if self.bottom:
            with convergence_warnings_named(_series(p, "bottom", self.bottom), advice):
                vals, _ = lanczos(op, self.bottom, which="smallest", tol=self.tol,
                                  num_iter=self.num_iter, generator=generator,
                                  check_copies=self.check_copies)
            out.update({f"{p}/bottom_{i + 1}": float(v) for i, v in enumerate(vals)})
        block = self.block_size or op.probe_block_size()
        if self.trace_probes:
            tr = hutchinson_trace(op, self.trace_probes, generator=generator, block_size=block)
            out[f"{p}/trace"], out[f"{p}/trace_se"] = tr.value, tr.stderr
        if self.frobenius_probes:
            out[f"{p}/frobenius"] = frobenius_norm(op, self.frobenius_probes, generator=generator,
                                                   block_size=block).value
        return out


def _series(prefix: str, end: str, k: int) -> str:
    """``hess/top_1`` or ``hess/top_1..5``: the series a Lanczos call measured."""
    return f"{prefix}/{end}_1" + (f"..{k}" if k > 1 else "")


class SharpnessCallback(MeasuredCallback):
    """Expected sharpness (σ, M samples); ε-sharpness and local entropy when their parameter
    is given. ``memory_budget``: bytes of activations one forward pass may take, passed to
    each measurement (None: the device's default; a batch larger than it goes in chunks of
    samples, :func:`sgdlab.measure.sharpness.perturbed_evaluations`), as
    :func:`~sgdlab.measure.passes.memory_budget_bytes` reads it (``2e9``, ``"2GiB"``)."""

    def __init__(self, schedule: Schedule | None = None, *, sigma: float = 0.01,
                 num_samples: int = 20, epsilon: float | None = None,
                 gamma: float | None = None, beta: float = 1.0,
                 memory_budget: int | str | None = None, **kw):
        super().__init__(schedule, **kw)
        self.memory_budget = memory_budget_bytes(memory_budget)
        # inf was taken here, then refused by the measurement at its first step
        sigma, epsilon, gamma, beta = map(plain_float, (sigma, epsilon, gamma, beta))
        num_samples = plain_int(num_samples)
        check_options(**{key: (v, v is None or finite_number(v), "must be a finite number")
                         for key, v in (("sigma", sigma), ("epsilon", epsilon),
                                        ("gamma", gamma), ("beta", beta))})
        check_options(sigma=(sigma, sigma >= 0, "must be >= 0"),
                      num_samples=(num_samples, int_at_least(num_samples, 1), "an int >= 1"),
                      epsilon=(epsilon, epsilon is None or epsilon > 0, "must be > 0"),
                      gamma=(gamma, gamma is None or gamma >= 0, "must be >= 0"),
                      beta=(beta, beta > 0, "must be > 0"))
        self.sigma, self.num_samples = sigma, num_samples
        self.epsilon, self.gamma, self.beta = epsilon, gamma, beta

    def compute(self, ctx, data, generator):
        budget = self.memory_budget
        est = expected_sharpness(ctx.model, ctx.loss_fn, data, self.sigma, self.num_samples,
                                 generator=generator, memory_budget=budget)
        out = {"sharpness/expected": est.value, "sharpness/expected_se": est.stderr}
        if self.epsilon is not None:
            out["sharpness/epsilon"] = epsilon_sharpness(
                ctx.model, ctx.loss_fn, data, self.epsilon, generator=generator,
                memory_budget=budget).sharpness
        if self.gamma is not None:
            out["sharpness/local_entropy"] = local_entropy(
                ctx.model, ctx.loss_fn, data, self.gamma, beta=self.beta,
                num_samples=self.num_samples, generator=generator, memory_budget=budget).width
        return out


def _common(eval_subset, eval_mode, seed) -> dict[str, Any]:
    return {"eval_subset": eval_subset, "eval_mode": eval_mode, "seed": seed}


@register_instrument("hessian")
def hessian_instrument(*, schedule: Schedule, k: int = 1, bottom: int = 0,
                       trace_probes: int = 0, frobenius_probes: int = 0,
                       operator: str = "hessian", tol: float = 1e-3,
                       eval_subset: int | None = 1000, eval_mode: bool = True,
                       seed: int = 0, prefix: str | None = None,
                       block_size: int | None = None,
                       num_iter: int | None = None,
                       check_copies: bool = False) -> HessianCallback:
    """Hessian (or GGN / empirical Fisher) top-k, bottom-k, trace, Frobenius norm, logged as
    ``<prefix>/top_1``, ...; ``prefix`` absent or null: the operator's, ``hess``, ``ggn`` or
    ``fisher`` (a second instrument of one operator needs its own prefix); ``check_copies``:
    Lanczos' deflated check for missed copies of a repeated eigenvalue (see
    :class:`HessianCallback`)."""
    return HessianCallback(schedule, k=k, bottom=bottom, trace_probes=trace_probes,
                           frobenius_probes=frobenius_probes, operator=operator, tol=tol,
                           num_iter=num_iter, prefix=prefix, block_size=block_size,
                           check_copies=check_copies,
                           **_common(eval_subset, eval_mode, seed))


@register_instrument("sharpness")
def sharpness_instrument(*, schedule: Schedule, sigma: float = 0.01, num_samples: int = 20,
                         epsilon: float | None = None, gamma: float | None = None,
                         beta: float = 1.0, eval_subset: int | None = 1000,
                         eval_mode: bool = True, seed: int = 0,
                         memory_budget: int | str | None = None) -> SharpnessCallback:
    """Expected sharpness; Keskar ε-sharpness with ``epsilon``; local entropy with ``gamma``;
    ``memory_budget``: :class:`SharpnessCallback`'s (absent or null: the device's default).
    Logs ``sharpness/expected`` and ``sharpness/expected_se``; ``sharpness/epsilon`` with
    ``epsilon``, ``sharpness/local_entropy`` with ``gamma``."""
    return SharpnessCallback(schedule, sigma=sigma, num_samples=num_samples, epsilon=epsilon,
                             gamma=gamma, beta=beta, memory_budget=memory_budget,
                             **_common(eval_subset, eval_mode, seed))

