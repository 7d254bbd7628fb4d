"""Σ–H alignment (Zhu, Wu, Yu, Wu & Ma 2019, "The Regularization Effects of Anisotropic Noise in
Stochastic Gradient Descent", arXiv): how well the gradient-noise covariance Σ lines up with
the Hessian H.

Metrics on leading eigenpairs (U_k: top-k eigenvectors of H, V_k: of Σ, orthonormal columns):

- ``eigenvector_cosines``: |⟨u_i, v_i⟩| for i = 1..k (signs of eigenvectors are arbitrary);
- ``normalised_eigenvalues``: λ_i / ‖M‖_F, the leading eigenvalues of each matrix divided by its
  own Frobenius norm (how dominant the top directions are);
- ``projection_residual``: e(U_k, V_k) = ‖U_k − V_k V_kᵀ U_k‖²_F = k − ‖V_kᵀ U_k‖²_F ∈ [0, k];
  0 when span U_k = span V_k, k when they are orthogonal;
- ``trace_alignment``: the indicator Tr(HΣ) of the paper's ICML 2019 version (arXiv
  1803.00195 v5; the earlier text docs/FIDELITY.md#zhu reads has none) compared with the
  isotropic noise of the same trace, Tr(H)·Tr(Σ)/d (ratio > 1: noise concentrated in sharp
  directions). Tr(HΣ) = Σ_i f_iᵀ H f_i over the N rows of Σ's factor (N Hessian-vector
  products); Tr H exact from the d unit columns on small models (as ‖H‖_F), else by
  Hutchinson probes.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sgdlab.errors import checked_int_argument, checked_keywords
from sgdlab.loss_settings import loss_reduction
from sgdlab.operators import HessianOperator
from sgdlab.operators.batches import Data, check_mean_of_samples

from .curvature import frobenius_norm, hutchinson_trace, lanczos
from .curvature._common import unit_column_blocks, working_operator
from .noise import GradientCovariance, check_given_covariance, gradient_covariance


def _check_bases(u: Tensor, v: Tensor) -> None:
    if u.dim() != 2 or v.dim() != 2 or u.shape != v.shape:
        raise ValueError(f"need two (d, k) bases of the same shape, got {tuple(u.shape)} and "
                         f"{tuple(v.shape)}")


@checked_keywords()
def eigenvector_cosines(u: Tensor, v: Tensor) -> Tensor:
    """|cos| between the i-th columns of U and V (unit columns assumed), shape (k,)."""
    _check_bases(u, v)
    return (u * v).sum(0).abs()


@checked_keywords()
def projection_residual(u: Tensor, v: Tensor) -> float:
    """e(U, V) = ‖U − V Vᵀ U‖²_F for orthonormal (d, k) U, V; in [0, k]."""
    _check_bases(u, v)
    # in float64: the two bases may come in two dtypes (a bfloat16 model's Σ eigenvectors, its
    # H eigenvectors from a float32 Lanczos basis)
    u, v = u.double(), v.double()
    r = u - v @ (v.T @ u)
    return float((r ** 2).sum())


@checked_keywords()
def normalised_eigenvalues(eigvals: Tensor, frobenius: float) -> Tensor:
    """λ_i / ‖M‖_F."""
    if not frobenius > 0:
        raise ValueError(f"Frobenius norm must be > 0, got {frobenius}")
    return eigvals / frobenius


def _normalised_or_nan(eigvals: Tensor, frobenius: float) -> Tensor:
    """λ_i / ‖M‖_F, NaN for M = 0 (0/0: Σ vanishes where every example has the same gradient),
    which a training run's instrument then leaves out instead of failing the run."""
    if frobenius == 0:
        return torch.full_like(eigvals, float("nan"))
    return normalised_eigenvalues(eigvals, frobenius)


@dataclass
class Alignment:
    """Σ–H alignment at one point (all eigen-quantities descending)."""

    hessian_eigvals: Tensor        # (k,)
    sigma_eigvals: Tensor          # (k,)
    hessian_frobenius: float       # Hutchinson-type estimate (see sigma_hessian_alignment)
    sigma_frobenius: float         # exact (Gram matrix)
    cosines: Tensor                # (k,) |⟨u_i, v_i⟩|
    residual: float                # e(U_k, V_k) ∈ [0, k]
    trace_h_sigma: float | None = None      # Tr(HΣ)
    trace_h: float | None = None            # Tr(H) (exact or Hutchinson, as ‖H‖_F)
    trace_sigma: float | None = None        # Tr(Σ) (exact)

    @property
    def hessian_normalised(self) -> Tensor:
        return _normalised_or_nan(self.hessian_eigvals, self.hessian_frobenius)

    @property
    def sigma_normalised(self) -> Tensor:
        return _normalised_or_nan(self.sigma_eigvals, self.sigma_frobenius)

    @property
    def trace_ratio(self) -> float | None:
        """Tr(HΣ) / (Tr H · Tr Σ / d): Zhu's anisotropy indicator relative to isotropic noise."""
        if None in (self.trace_h_sigma, self.trace_h, self.trace_sigma):
            return None
        d = self.dim
        base = self.trace_h * self.trace_sigma / d
        return self.trace_h_sigma / base if base != 0 else float("nan")

    dim: int = 0

    def as_metrics(self, prefix: str = "align") -> dict[str, float]:
        """Flat scalar dict for ``ctx.log`` / the run store."""
        out = {f"{prefix}/residual": self.residual}
        for i in range(len(self.cosines)):
            out[f"{prefix}/cos_{i + 1}"] = float(self.cosines[i])
            out[f"{prefix}/hess_norm_eig_{i + 1}"] = float(self.hessian_normalised[i])
            out[f"{prefix}/sigma_norm_eig_{i + 1}"] = float(self.sigma_normalised[i])
        if self.trace_ratio is not None:
            out[f"{prefix}/trace_h_sigma"] = float(self.trace_h_sigma)
            out[f"{prefix}/trace_ratio"] = float(self.trace_ratio)
        return out


def _check_given_eigenpairs(pairs: object, op: HessianOperator, k: int) -> None:
    """A ValueError where ``hessian_eigenpairs`` given to :func:`sigma_hessian_alignment` are
    not of the form its Lanczos run on ``op`` returns: no pair of tensors (eigvals, eigvecs),
    shapes other than (k,) and (d, k), eigenvalues not descending, another dtype than
    Lanczos' working one (the operator's, float32 for half precision) or another device,
    values that are not finite."""
    who = "sigma_hessian_alignment: hessian_eigenpairs"
    if not (isinstance(pairs, tuple) and len(pairs) == 2
            and all(isinstance(t, Tensor) for t in pairs)):
        raise ValueError(f"{who} must be the pair (eigvals, eigvecs) of tensors that lanczos "
                         f"returns, got {type(pairs).__name__}")
    vals, vecs = pairs
    d = op.shape[0]
    if tuple(vals.shape) != (k,) or tuple(vecs.shape) != (d, k):
        raise ValueError(f"{who} have shapes {tuple(vals.shape)} and {tuple(vecs.shape)}; "
                         f"k = {k} of the model's d = {d} parameters asks for ({k},) and "
                         f"({d}, {k}): they must be this model's top-k")
    if bool((vals[1:] > vals[:-1]).any()):
        raise ValueError(f"{who}: eigvals {vals.tolist()} are not descending: they must be "
                         "the top-k (lanczos' which='largest'), largest first")
    dtype = working_operator(op, None).dtype
    for name, t in (("eigvals", vals), ("eigvecs", vecs)):
        if t.dtype != dtype or t.device != op.device:
            raise ValueError(f"{who}: {name} are {t.dtype} on {t.device}, Lanczos of the "
                             f"model's Hessian gives {dtype} on {op.device}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{who}: {name} hold non-finite values")


EXACT_FROBENIUS_MAX_DIM = 1000     # d products of a model this small cost next to nothing


@checked_keywords()
def sigma_hessian_alignment(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    k: int = 5,
    *,
    num_probes: int = 50,
    tol: float = 1e-4,
    num_iter: int | None = None,
    generator: torch.Generator | None = None,
    trace_alignment: bool = False,
    chunk_size: int | None = 256,
    exact_frobenius: bool | None = None,
    centred: bool = True,
    check_copies: bool = False,
    covariance: GradientCovariance | None = None,
    hessian_eigenpairs: tuple[Tensor, Tensor] | None = None,
) -> Alignment:
    """Σ–H alignment of the current model over ``data`` (Zhu et al. 2019).

    H: Hessian of the mean loss (top-k by Lanczos, tolerance ``tol``, at most ``num_iter``
    iterations, None for :func:`sgdlab.measure.curvature.lanczos`'s default; ``check_copies``:
    its deflated check for the copies of a repeated eigenvalue one start vector misses, about
    twice the products, for Σ's top-k too where Lanczos finds them); ‖H‖_F exact from the d
    unit columns when ``exact_frobenius`` (default: when d <= 1,000, as for Zhu's 103-251
    parameter regression nets, where a near rank-one H makes the probe estimate off by ~√(2/M)
    and λ_1/‖H‖_F can exceed 1), else estimated from ``num_probes`` Gaussian probes (E‖Hv‖²).
    Σ: population covariance of per-sample gradients (:mod:`sgdlab.measure.noise`), exact top-k
    and ‖Σ‖_F through the Gram matrix; ``centred=False`` puts their uncentred second moment
    Σ + ḡḡᵀ (eq. (6)'s E[g gᵀ]) in its place in every quantity (Tr(HΣ) and Tr Σ included).
    ``trace_alignment=True`` also computes Tr(HΣ) (N HVPs), Tr H and Tr Σ; Tr H like ‖H‖_F:
    exact from the d unit columns with ``exact_frobenius`` (``num_probes`` Rademacher probes of
    an indefinite H, whose trace is small next to ‖H‖_F, were off by more than Tr H itself),
    else by Hutchinson.
    Σ of the samples' own gradients is set against H of the batch's loss: a loss that is
    no mean of the samples' losses (class weights, ignored targets) is refused; a sum, on one
    batch, only scales H. ``covariance``: Σ (or, with ``centred=False``, the second moment)
    of this model over the same ``data``, when already computed (:func:`gradient_covariance`,
    not scaled); its form and its numbers of samples and parameters are checked.
    ``hessian_eigenpairs``: H's top-k ``(eigvals, eigvecs)`` of this model over the same
    ``data``, when already computed (:func:`~sgdlab.measure.curvature.lanczos` of
    :class:`~sgdlab.operators.HessianOperator`, or ``hessian_eigenpairs(model, loss_fn, data,
    k)``, with the ``tol``, ``num_iter`` and ``check_copies`` wanted: ``tol`` and
    ``num_iter`` are then unused, ``check_copies`` applies to Σ's top-k only). No Lanczos runs
    here, so the probes draw first from ``generator``: the generator that run was given,
    passed on in the state it left it, draws the probes of a call without the pairs given
    that generator fresh (the same values). Their shapes, (k,) and (d, k), descending order,
    dtype (Lanczos' working dtype on this model), device and finiteness are checked.
    """
    # before any pass: the exact Frobenius norm (small d), which reads no probes, took anything
    num_probes = checked_int_argument("num_probes", num_probes, 1,
                                      ": the Frobenius and trace probes")
    if loss_reduction(loss_fn) != "sum":
        check_mean_of_samples(loss_fn, data, "sigma_hessian_alignment")
    if covariance is not None:
        check_given_covariance("sigma_hessian_alignment", covariance, model, data,
                               centred=centred)
    op = HessianOperator(model, loss_fn, data)
    if hessian_eigenpairs is not None:      # refused before Σ is computed
        _check_given_eigenpairs(hessian_eigenpairs, op, k)
    cov = covariance if covariance is not None else gradient_covariance(
        model, loss_fn, data, chunk_size=chunk_size, centred=centred)
    s_vals, s_vecs = cov.eigenpairs(k, check_copies=check_copies)
    if hessian_eigenpairs is not None:
        h_vals, h_vecs = hessian_eigenpairs
    else:
        h_vals, h_vecs = lanczos(op, k, tol=tol, num_iter=num_iter, generator=generator,
                                 check_copies=check_copies)
    if exact_frobenius is None:
        exact_frobenius = op.shape[0] <= EXACT_FROBENIUS_MAX_DIM
    h_fro = frobenius_norm(op, num_probes, exact=exact_frobenius, generator=generator).value
    out = Alignment(h_vals.detach(), s_vals.detach(), h_fro, cov.frobenius_norm(),
                    eigenvector_cosines(h_vecs, s_vecs), projection_residual(h_vecs, s_vecs),
                    dim=op.shape[0])
    if trace_alignment:
        f = cov.factor
        ths = 0.0
        for i in range(0, f.shape[0], 64):
            block = f[i : i + 64].T                         # (d, b)
            ths += float((block * op.matmat(block)).sum())
        out.trace_h_sigma = ths
        out.trace_h = (sum(float(cols[idx, torch.arange(len(idx))].double().sum())
                           for idx, cols in unit_column_blocks(op)) if exact_frobenius
                       else hutchinson_trace(op, num_probes, generator=generator).value)
        out.trace_sigma = cov.trace()
    if not math.isfinite(out.residual):
        raise FloatingPointError("non-finite alignment (diverged model?)")
    return out
