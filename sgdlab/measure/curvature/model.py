"""Model conveniences: the estimators applied to the curvature of a model's mean loss.

Each builds a :class:`~sgdlab.operators.HessianOperator` (or, with ``operator=``, the GGN or
empirical Fisher) of L(θ) = (1/N) Σ_i ℓ_i over ``data``, model in its current train/eval mode.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sgdlab.operators import curvature_operator
from sgdlab.operators.batches import Data

from ._common import Estimate
from .diagonal import DiagonalEstimate, SamplesInteract, diagonal, ggn_diagonal
from .frobenius import frobenius_norm
from .hutchinson import hutchinson_trace
from .lanczos import lanczos
from .slq import SpectralDensity, spectral_density

LossFn = Callable[[Tensor, Tensor], Tensor]


def hessian_eigenpairs(
    model: nn.Module, loss_fn: LossFn, data: Data, k: int = 1, which: str = "largest", *,
    operator: str = "hessian", **kw
) -> tuple[Tensor, Tensor]:
    """k extreme eigenpairs of the Hessian (or ``operator="ggn"`` / ``"empirical_fisher"``)
    of the mean loss over ``data`` (see :func:`~sgdlab.measure.curvature.lanczos.lanczos` for
    ``which``, ``tol``, ``num_iter``, ``generator``, ``dtype``)."""
    return lanczos(curvature_operator(operator, model, loss_fn, data), k, which=which, **kw)


def hessian_top_eigenvalue(model: nn.Module, loss_fn: LossFn, data: Data, **kw) -> float:
    """λ_max of the Hessian (or ``operator=``) of the mean loss over ``data`` (Lanczos,
    ``tol`` relative)."""
    for name in ("k", "which"):
        if name in kw:
            raise TypeError(f"hessian_top_eigenvalue() gives the largest eigenvalue only and "
                            f"takes no {name}=; for several use hessian_eigenpairs(model, "
                            f"loss_fn, data, k, which)")
    vals, _ = hessian_eigenpairs(model, loss_fn, data, 1, "largest", **kw)
    return float(vals[0])


def hessian_bottom_eigenvalues(
    model: nn.Module, loss_fn: LossFn, data: Data, k: int = 1, **kw
) -> Tensor:
    """The k most negative (algebraically smallest) eigenvalues, ascending (``operator=`` as
    in :func:`hessian_eigenpairs`)."""
    vals, _ = hessian_eigenpairs(model, loss_fn, data, k, "smallest", **kw)
    return vals


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    operator: str = "hessian",
    dtype: torch.dtype | None = None,
) -> Estimate:
    """Hutchinson estimate of Tr ∇²L (mean loss over ``data``) with its standard error;
    ``operator="ggn"`` / ``"empirical_fisher"`` estimates those traces instead."""
    return hutchinson_trace(curvature_operator(operator, model, loss_fn, data), num_probes,
                            generator=generator, dtype=dtype)


def hessian_frobenius_norm(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    operator: str = "hessian",
    dtype: torch.dtype | None = None,
) -> Estimate:
    """‖∇²L‖_F estimated from E‖H v‖² (Jastrzebski et al.)."""
    return frobenius_norm(curvature_operator(operator, model, loss_fn, data), num_probes,
                          generator=generator, dtype=dtype)


def hessian_spectral_density(
    model: nn.Module, loss_fn: LossFn, data: Data, *, operator: str = "hessian", **kw
) -> SpectralDensity:
    """SLQ spectral density of the Hessian (see
    :func:`~sgdlab.measure.curvature.slq.spectral_density` for options)."""
    return spectral_density(curvature_operator(operator, model, loss_fn, data), **kw)


def hessian_diagonal(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    num_probes: int = 100,
    *,
    exact: bool = False,
    generator: torch.Generator | None = None,
    operator: str = "hessian",
    dtype: torch.dtype | None = None,
) -> DiagonalEstimate:
    """diag ∇²L (mean loss over ``data``; ``operator="ggn"`` / ``"empirical_fisher"`` for
    those) as a flat vector in parameter order: exact from d products, or estimated from
    ``num_probes`` Rademacher probes with per-entry standard errors (see
    :func:`~sgdlab.measure.curvature.diagonal.diagonal`). The exact GGN diagonal comes from
    backpropagated loss-Hessian factors instead (:func:`ggn_diagonal`: C per-sample gradient
    passes, not d products) unless another ``dtype`` is asked for, or the model's samples
    interact in its forward pass (a batch statistic: no per-sample factors)."""
    if exact and operator == "ggn" and dtype in (None, next(model.parameters()).dtype):
        try:
            value = ggn_diagonal(model, loss_fn, data)
            return DiagonalEstimate(value, torch.zeros_like(value), value.numel(), True)
        except SamplesInteract:
            pass                  # d products of the GGN operator below
    return diagonal(curvature_operator(operator, model, loss_fn, data), num_probes,
                    exact=exact, generator=generator, dtype=dtype)

