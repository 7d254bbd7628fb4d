"""Gradient noise during training (:mod:`sgdlab.measure.noise`, :mod:`sgdlab.measure.alignment`).

Instruments:

- ``noise``: ``noise/trace`` (Tr Σ), ``noise/mean_eig`` (Tr Σ / d), ``noise/top_i``,
  ``noise/rank`` and ``noise/rank_fraction`` (numpy threshold λ_max·d·eps), where Σ is the
  population covariance of per-sample gradients on the evaluation set (the thesis' D(x));
- ``alignment``: Σ–H alignment (Zhu et al.): ``align/cos_i``, ``align/residual``,
  ``align/hess_norm_eig_i``, ``align/sigma_norm_eig_i`` (+ ``align/trace_ratio``);
- ``noise_magnitude``: ``noise/grad_norm`` ‖∇L‖ and ``noise/noise_norm`` sqrt(η Tr Σ / m)
  (Zhu Fig. 2), with η the optimizer's current lr (first param group) and m the batch size of
  the current step (or ``batch_size`` when given).

Evaluation set, eval mode and seeding as in :mod:`sgdlab.train.instruments.curvature`.
"""
from __future__ import annotations

from sgdlab.measure.alignment import sigma_hessian_alignment
from sgdlab.measure.noise import gradient_covariance, noise_magnitude

from ..callbacks import Schedule
from . import register_instrument
from .curvature import MeasuredCallback, _common

__all__ = ["AlignmentCallback", "NoiseCallback", "NoiseMagnitudeCallback"]


class NoiseCallback(MeasuredCallback):
    """Tr Σ, top-k eigenvalues and numerical rank of the per-sample gradient covariance."""

    def __init__(self, schedule: Schedule, *, k: int = 5, rank: bool = True, **kw):
        super().__init__(schedule, **kw)
        self.k, self.rank = k, rank

    def compute(self, ctx, data, generator):
        cov = gradient_covariance(ctx.model, ctx.loss_fn, data)
        out = {"noise/trace": cov.trace(), "noise/mean_eig": cov.trace() / cov.dim}
        if self.k:
            vals, _ = cov.eigenpairs(min(self.k, cov.num_samples, cov.dim))
            out.update({f"noise/top_{i + 1}": float(v) for i, v in enumerate(vals)})
        if self.rank:
            r = cov.rank()
            out["noise/rank"], out["noise/rank_fraction"] = float(r), r / cov.dim
        return out


class AlignmentCallback(MeasuredCallback):
    def __init__(self, schedule: Schedule, *, k: int = 5, num_probes: int = 20,
                 tol: float = 1e-3, trace_alignment: bool = False, **kw):
        super().__init__(schedule, **kw)
        self.k, self.num_probes, self.tol, self.trace_alignment = (k, num_probes, tol,
                                                                   trace_alignment)

    def compute(self, ctx, data, generator):
        res = sigma_hessian_alignment(ctx.model, ctx.loss_fn, data, self.k,
                                      num_probes=self.num_probes, tol=self.tol,
                                      generator=generator, trace_alignment=self.trace_alignment)
        return res.as_metrics("align")


class NoiseMagnitudeCallback(MeasuredCallback):
    def __init__(self, schedule: Schedule, *, batch_size: int | None = None, **kw):
        super().__init__(schedule, **kw)
        self.batch_size = batch_size

    def compute(self, ctx, data, generator):
        lr = float(ctx.optimizer.param_groups[0]["lr"])
        m = self.batch_size or (len(ctx.batch[0]) if ctx.batch is not None else None)
        if m is None:
            return {}   # before the first step the batch size is unknown
        nm = noise_magnitude(ctx.model, ctx.loss_fn, data, lr, m)
        return {"noise/grad_norm": nm.grad_norm, "noise/noise_norm": nm.noise_norm}


@register_instrument("noise")
def noise_instrument(*, schedule: Schedule, k: int = 5, rank: bool = True,
                     eval_subset: int | None = 1000, eval_mode: bool = True,
                     seed: int = 0) -> NoiseCallback:
    """Diffusion matrix D(x) = Σ: trace, top-k eigenvalues, numerical rank."""
    return NoiseCallback(schedule, k=k, rank=rank, **_common(eval_subset, eval_mode, seed))


@register_instrument("alignment")
def alignment_instrument(*, schedule: Schedule, k: int = 5, num_probes: int = 20,
                         tol: float = 1e-3, trace_alignment: bool = False,
                         eval_subset: int | None = 1000, eval_mode: bool = True,
                         seed: int = 0) -> AlignmentCallback:
    """Σ–H alignment (Zhu et al. 2019)."""
    return AlignmentCallback(schedule, k=k, num_probes=num_probes, tol=tol,
                             trace_alignment=trace_alignment,
                             **_common(eval_subset, eval_mode, seed))


@register_instrument("noise_magnitude")
def noise_magnitude_instrument(*, schedule: Schedule, batch_size: int | None = None,
                               eval_subset: int | None = 1000, eval_mode: bool = True,
                               seed: int = 0) -> NoiseMagnitudeCallback:
    """‖∇L‖ vs sqrt(η Tr Σ / m) (Zhu et al. 2019, Fig. 2)."""
    return NoiseMagnitudeCallback(schedule, batch_size=batch_size,
                                  **_common(eval_subset, eval_mode, seed))
