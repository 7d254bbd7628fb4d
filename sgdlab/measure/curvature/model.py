"""Model conveniences: the estimators applied to the curvature of a model's mean loss.

Each builds a :class:`~sgdlab.operators.HessianOperator` (or, with ``operator=``, the GGN or
empirical Fisher) of L(θ) = (1/N) Σ_i ℓ_i over ``data``, model in its current train/eval mode.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sgdlab.errors import checked_keywords
from sgdlab.operators import curvature_operator
from sgdlab.operators.batches import Data
from sgdlab.operators.params import flat_dtype, trainable_named_params

from ._common import Estimate
from .diagonal import DiagonalEstimate, SamplesInteract, diagonal, ggn_diagonal
from .frobenius import frobenius_norm
from .hutchinson import hutchinson_trace
from .lanczos import lanczos
from .slq import SpectralDensity, spectral_density

LossFn = Callable[[Tensor, Tensor], Tensor]


# The conveniences take the estimators' options as **kw: checked_keywords shows them (and
# their defaults, the estimators' own) in help() and names a misspelt one.
@checked_keywords(lanczos)
def hessian_eigenpairs(model: nn.Module, loss_fn: LossFn, data: Data, k: int = 1,
                       which: str = "largest", *, operator: str = "hessian",
                       **kw) -> tuple[Tensor, Tensor]:
    """k extreme eigenpairs of the Hessian (or ``operator="ggn"`` / ``"empirical_fisher"``)
    of the mean loss over ``data``, by Lanczos: ``which`` (largest | smallest | both |
    magnitude), ``num_iter`` (the Krylov dimension, default ``min(d, max(2k + 60, 4k))``),
    ``tol`` (relative residual), ``generator`` / ``v0`` (the start vector), ``criterion``
    (residual | error_bound | ritz_change), ``dtype`` (working precision) and
    ``check_copies`` (a deflated check for the copies of a repeated eigenvalue one start
    vector misses, about twice the products) as in
    :func:`~sgdlab.measure.curvature.lanczos.lanczos`."""
    return lanczos(curvature_operator(operator, model, loss_fn, data), k, which=which, **kw)


@checked_keywords(hessian_eigenpairs, advice={
    name: "it gives the largest eigenvalue only; for several use "
          "hessian_eigenpairs(model, loss_fn, data, k, which)" for name in ("k", "which")})
def hessian_top_eigenvalue(model: nn.Module, loss_fn: LossFn, data: Data, **kw) -> float:
    """λ_max of the Hessian (or ``operator=``) of the mean loss over ``data`` (Lanczos,
    ``tol`` relative; the options as in :func:`hessian_eigenpairs`): the algebraically largest
    eigenvalue, of the model in the mode it is in. :func:`sgdlab.measure.
    hessian_largest_eigenvalue` is the same eigenvalue with dropout off and batch norm per
    its ``bn_mode`` (eval by default); :func:`sgdlab.measure.hessian_spectral_norm` is
    max |λ_i| (the magnitude of PyHessian's top eigenvalue)."""
    vals, _ = hessian_eigenpairs(model, loss_fn, data, 1, "largest", **kw)
    return float(vals[0])


@checked_keywords(hessian_eigenpairs, advice={
    "which": "they are the smallest; for others use "
             "hessian_eigenpairs(model, loss_fn, data, k, which)"})
def hessian_bottom_eigenvalues(model: nn.Module, loss_fn: LossFn, data: Data, k: int = 1,
                               **kw) -> Tensor:
    """The k most negative (algebraically smallest) eigenvalues, ascending (the options as
    in :func:`hessian_eigenpairs`)."""
    vals, _ = hessian_eigenpairs(model, loss_fn, data, k, "smallest", **kw)
    return vals


@checked_keywords()
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


@checked_keywords()
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


@checked_keywords(spectral_density)
def hessian_spectral_density(model: nn.Module, loss_fn: LossFn, data: Data, *,
                             operator: str = "hessian", **kw) -> SpectralDensity:
    """SLQ spectral density of the Hessian (or ``operator=``) of the mean loss over ``data``:
    ``num_probes`` Gaussian probes (PyHessian's ``n_v``) of ``num_iter`` Lanczos steps each
    (its ``iter``), Gaussian kernel width ``sigma`` (default 1% of the spectral range), on
    ``grid`` points (or an explicit grid) with ``margin``; ``generator``, ``block_size`` and
    ``dtype`` as in :func:`~sgdlab.measure.curvature.slq.spectral_density`."""
    return spectral_density(curvature_operator(operator, model, loss_fn, data), **kw)


@checked_keywords()
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
    passes, not d products) unless a ``dtype`` other than the trainable parameters' is asked
    for, or the model's samples interact in its forward pass (a batch statistic: no
    per-sample factors)."""
    # the operator's own dtype is its trainable parameters' (a frozen one's may differ);
    # none: the operator below names the problem
    trainable = trainable_named_params(model).values()
    if exact and operator == "ggn" and trainable and dtype in (None, flat_dtype(trainable)):
        try:
            value = ggn_diagonal(model, loss_fn, data)
            return DiagonalEstimate(value, torch.zeros_like(value), value.numel(), True)
        except SamplesInteract:
            pass                  # d products of the GGN operator below
    return diagonal(curvature_operator(operator, model, loss_fn, data), num_probes,
                    exact=exact, generator=generator, dtype=dtype)

