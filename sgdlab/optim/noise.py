"""Gaussian noise samplers for GD + structured noise (Zhu et al. 2019, §4.2), written once.

Pure functions of tensors (a scale, a diagonal, eigenpairs, a per-sample factor) and a
``torch.Generator``: no model, no optimizer. :mod:`sgdlab.optim.gld` draws one vector per step
from them; analytic-landscape code with many chains draws one per chain.

Shapes follow ``torch.distributions``: statistics may carry leading *batch* dimensions (one set
of statistics per chain, e.g. ``variances`` of shape (C, d)); ``sample_shape`` adds independent
draws in front. The result has shape ``sample_shape + batch_shape + (d,)``.

Every sampler draws N(0, C) for a stated covariance C, with no d x d matrix formed:

==========================  =====================================  ===========================
sampler                     covariance C                           cost per draw
==========================  =====================================  ===========================
:func:`isotropic_noise`     σ² I                                    O(d)
:func:`dynamic_noise`       (Tr Σ / d) I   (E‖ε‖² = Tr Σ)          O(d)
:func:`diagonal_noise`      diag(v)                                 O(d)
:func:`low_rank_noise`      s · V diag(λ) Vᵀ  (λ ≥ 0)               O(d k)
:func:`leading_noise`       Σ̃_k = Σ_{i≤k} λ_i v_i v_iᵀ              O(d k)
:func:`hessian_noise`       σ_H² H₊,  H₊ = Σ_{i≤k} |λ_i| u_i u_iᵀ     O(d k)
:func:`factor_noise`        s · Fᵀ F  (F the (N, d) factor)         O(N d)  (Gram trick)
:func:`sgd_like_noise`      Fᵀ F / m = Σ / m                        O(N d)
==========================  =====================================  ===========================

With F = (G − ḡ)/√N (:class:`sgdlab.measure.GradientCovariance.factor`), Fᵀ F is the population
covariance Σ of the per-sample gradients, and Σ / m is the covariance of a mini-batch gradient
of size m drawn *with replacement* (thesis eq. 6.4). ``ε = Fᵀ z, z ~ N(0, I_N)`` has covariance
Fᵀ F exactly: this is the "Gram trick" sampling that never builds Σ.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "standard_normal",
    "isotropic_noise",
    "dynamic_variance",
    "dynamic_noise",
    "diagonal_noise",
    "low_rank_noise",
    "leading_noise",
    "hessian_noise",
    "hessian_noise_variance",
    "factor_noise",
    "sgd_like_noise",
    "dense_noise",
    "psd_sqrt",
]

Shape = tuple[int, ...]


def standard_normal(shape: Shape, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """z ~ N(0, I) of ``shape``, drawn on the generator's device (so a CPU generator gives the
    same numbers whatever ``device`` is) and moved to ``device``."""
    gdev = generator.device if generator is not None else device
    z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=gdev)
    return z if device is None else z.to(device)


def _check_nonneg(name: str, value: Tensor | float) -> None:
    bad = (value < 0).any() if isinstance(value, Tensor) else value < 0
    if bad:
        raise ValueError(f"Invalid {name}: must be >= 0")


def isotropic_noise(dim: int, sigma: float | Tensor, *, sample_shape: Shape = (),
                    batch_shape: Shape | None = None, generator: torch.Generator | None = None,
                    dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> Tensor:
    """ε ~ N(0, σ² I_d). ``sigma`` is a float or a tensor of per-chain scales (its shape is the
    batch shape unless ``batch_shape`` is given)."""
    if dim < 1:
        raise ValueError(f"Invalid dim={dim} (must be >= 1)")
    _check_nonneg("sigma", sigma)
    if isinstance(sigma, Tensor):
        dtype = dtype or sigma.dtype
        device = device or sigma.device
        batch_shape = tuple(sigma.shape) if batch_shape is None else tuple(batch_shape)
        scale = sigma.to(dtype=dtype, device=device).unsqueeze(-1)
    else:
        batch_shape = () if batch_shape is None else tuple(batch_shape)
        scale = float(sigma)
    dtype = dtype or torch.get_default_dtype()
    z = standard_normal(tuple(sample_shape) + batch_shape + (dim,), generator=generator,
                        dtype=dtype, device=device)
    return z * scale


def dynamic_variance(trace_sigma: float | Tensor, dim: int) -> float | Tensor:
    """σ² = Tr Σ / d: the isotropic variance whose expected squared norm d σ² equals Tr Σ
    (GLD dynamic, Zhu et al. §4.2)."""
    if dim < 1:
        raise ValueError(f"Invalid dim={dim} (must be >= 1)")
    _check_nonneg("trace_sigma", trace_sigma)
    return trace_sigma / dim


def dynamic_noise(trace_sigma: float | Tensor, dim: int, **kw) -> Tensor:
    """ε ~ N(0, (Tr Σ / d) I): isotropic with E‖ε‖² = Tr Σ (GLD dynamic)."""
    var = dynamic_variance(trace_sigma, dim)
    sigma = var.sqrt() if isinstance(var, Tensor) else math.sqrt(var)
    return isotropic_noise(dim, sigma, **kw)


def diagonal_noise(variances: Tensor, *, sample_shape: Shape = (),
                   generator: torch.Generator | None = None) -> Tensor:
    """ε ~ N(0, diag(v)) for ``variances`` v of shape (..., d) (GLD diagonal: v = diag Σ)."""
    _check_nonneg("variances", variances)
    z = standard_normal(tuple(sample_shape) + tuple(variances.shape), generator=generator,
                        dtype=variances.dtype, device=variances.device)
    return z * variances.sqrt()


def low_rank_noise(eigvals: Tensor, eigvecs: Tensor, *, scale: float | Tensor = 1.0,
                   sample_shape: Shape = (), generator: torch.Generator | None = None) -> Tensor:
    """ε = V (√(s λ) ⊙ z), z ~ N(0, I_k): covariance s · V diag(λ) Vᵀ.

    Args:
        eigvals: λ, shape (..., k), all >= 0.
        eigvecs: V, shape (..., d, k), orthonormal columns (not checked; for orthonormal V the
            covariance is exactly s Σ λ_i v_i v_iᵀ).
        scale: s >= 0, a float or a tensor of batch shape.
    """
    if eigvecs.shape[-1] != eigvals.shape[-1] or eigvecs.shape[:-2] != eigvals.shape[:-1]:
        raise ValueError(f"eigvals {tuple(eigvals.shape)} and eigvecs {tuple(eigvecs.shape)} "
                         "do not match: expected (..., k) and (..., d, k)")
    _check_nonneg("eigvals", eigvals)
    _check_nonneg("scale", scale)
    if isinstance(scale, Tensor):
        scale = scale.to(eigvals).unsqueeze(-1)
    z = standard_normal(tuple(sample_shape) + tuple(eigvals.shape), generator=generator,
                        dtype=eigvals.dtype, device=eigvals.device)
    coef = z * (eigvals * scale).sqrt()                      # (..., k)
    return (eigvecs @ coef.unsqueeze(-1)).squeeze(-1)        # (..., d)


def leading_noise(eigvals: Tensor, eigvecs: Tensor, *, scale: float | Tensor = 1.0,
                  **kw) -> Tensor:
    """ε ~ N(0, s Σ̃_k), Σ̃_k = Σ_{i≤k} λ_i v_i v_iᵀ the top-k part of Σ (GLD leading).

    Eigenvalues of a covariance are >= 0; tiny negative round-off is clipped to zero."""
    return low_rank_noise(eigvals.clamp_min(0), eigvecs, scale=scale, **kw)


def hessian_noise_variance(trace_sigma: float | Tensor, trace_h_plus: float | Tensor,
                           batch_size: int = 1) -> float | Tensor:
    """σ_H² = Tr Σ / (m Tr H₊): the scale for which E‖ε‖² = σ_H² Tr H₊ = Tr Σ / m, the expected
    squared norm of the SGD noise of batch size m (Zhu et al. §5.1, which prints it with Tr H,
    "to guarantee that it has the same expected noise norm as that of SGD"; §4.2 tunes σ_H²)."""
    if batch_size < 1:
        raise ValueError(f"Invalid batch_size={batch_size} (must be >= 1)")
    _check_nonneg("trace_sigma", trace_sigma)
    bad = (trace_h_plus <= 0).any() if isinstance(trace_h_plus, Tensor) else trace_h_plus <= 0
    if bad:
        raise ValueError("Invalid trace_h_plus: must be > 0 (all top-k Hessian eigenvalues zero)")
    return trace_sigma / (batch_size * trace_h_plus)


def hessian_noise(eigvals: Tensor, eigvecs: Tensor, sigma_h2: float | Tensor, **kw) -> Tensor:
    """ε ~ N(0, σ_H² H₊) with H₊ = Σ_{i≤k} |λ_i| u_i u_iᵀ from Hessian eigenpairs (GLD Hessian).
    Negative curvature directions enter with |λ|: Zhu et al.'s H₊ "reverses the negative
    eigenvalue of H" (§4.2 item 6), it does not drop it as the positive part max(λ, 0) would."""
    return low_rank_noise(eigvals.abs(), eigvecs, scale=sigma_h2, **kw)


def factor_noise(factor: Tensor, *, scale: float | Tensor = 1.0, sample_shape: Shape = (),
                 generator: torch.Generator | None = None) -> Tensor:
    """ε = √s Fᵀ z, z ~ N(0, I_N): covariance s Fᵀ F for a factor F of shape (..., N, d).
    O(N d) per draw; no d x d matrix (the Gram trick)."""
    _check_nonneg("scale", scale)
    z = standard_normal(tuple(sample_shape) + tuple(factor.shape[:-1]), generator=generator,
                        dtype=factor.dtype, device=factor.device)        # (..., N)
    eps = (z.unsqueeze(-2) @ factor).squeeze(-2)                         # (..., d)
    if isinstance(scale, Tensor):
        return eps * scale.to(eps).sqrt().unsqueeze(-1)
    return eps * math.sqrt(scale)


def sgd_like_noise(factor: Tensor, batch_size: int, **kw) -> Tensor:
    """ε ~ N(0, Σ / m) with Σ = Fᵀ F: the covariance of a with-replacement mini-batch gradient of
    size m (thesis eq. 6.4), sampled through the exact per-sample factor."""
    if batch_size < 1:
        raise ValueError(f"Invalid batch_size={batch_size} (must be >= 1)")
    return factor_noise(factor, scale=1.0 / batch_size, **kw)


def dense_noise(sqrt_cov: Tensor, *, sample_shape: Shape = (),
                generator: torch.Generator | None = None) -> Tensor:
    """ε = R z for a dense square root R (R Rᵀ = C, shape (..., d, d)): the naive d x d sampler,
    kept as the baseline the Gram-trick samplers are benchmarked against."""
    d = sqrt_cov.shape[-1]
    z = standard_normal(tuple(sample_shape) + tuple(sqrt_cov.shape[:-2]) + (d,),
                        generator=generator, dtype=sqrt_cov.dtype, device=sqrt_cov.device)
    return (sqrt_cov @ z.unsqueeze(-1)).squeeze(-1)


def psd_sqrt(cov: Tensor, eig: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Symmetric square root of a PSD matrix (eigh, negative round-off clipped), for
    :func:`dense_noise`; ``eig``: ``torch.linalg.eigh(cov)`` when the caller has it already."""
    vals, vecs = torch.linalg.eigh(cov) if eig is None else eig
    return (vecs * vals.clamp_min(0).sqrt().unsqueeze(-2)) @ vecs.transpose(-1, -2)
