"""Global contrast normalisation and ZCA whitening (Goodfellow et al. 2013's CIFAR-10 pipeline).

Chaudhari's thesis preprocesses CIFAR-10 and CIFAR-100 with "global contrast normalization and
ZCA-whitening (Goodfellow et al., 2013)" (§2.4.2, §3.3.3, §5.4.3, §6.3.1) and SVHN with global
contrast normalisation alone (§5.4.4). Goodfellow et al.'s maxout networks made that data with
pylearn2's ``scripts/datasets/make_cifar10_gcn_whitened.py``: ``CIFAR10(which_set, gcn=55.)``
then ``preprocessing.ZCA()`` fitted on the training set (``can_fit=True``) and applied to the
test set with the same matrix. The constants here are pylearn2's:

- GCN (``pylearn2.expr.preprocessing.global_contrast_normalize`` with ``scale=55.`` and its
  defaults otherwise, as later versions of ``CIFAR10`` call it; the 2013 ``CIFAR10`` did the
  same inline, in float32 and without ``min_divisor``): per image, over all its pixels and
  channels, subtract the mean, divide by ``sqrt(sqrt_bias + Σ x²) / scale``
  (``use_std=False``: the norm, not the standard deviation), ``sqrt_bias = 0``, and leave an
  image whose divisor is below ``min_divisor = 1e-8`` undivided (a constant image stays all
  zeros). The images have norm ``scale`` = 55 afterwards. pylearn2 applied it to the raw
  0..255 pixel values; with ``sqrt_bias = 0`` the result does not depend on the pixel scale
  (except through ``min_divisor``, which only a constant image reaches).
- ZCA (``pylearn2.datasets.preprocessing.ZCA``, whose default ``filter_bias=0.1`` in the
  pylearn2 of 2012-2013 the script relies on): the training mean m and covariance
  C = (1/N) Σ (x − m)(x − m)ᵀ (population, 1/N), the eigendecomposition
  C + b I = U diag(s + b) Uᵀ, and P = U diag((s + b)^−½) Uᵀ; every image becomes (x − m) P.
  The whitened training set has covariance P C P = U diag(s / (s + b)) Uᵀ. ``filter_bias`` b
  is a parameter of :meth:`ZCA.fit`.

sgdlab computes both in float64 (pylearn2 in float32) and returns float32. The authors' own
Entropy-SGD code (``process_cifar.py``, after Cohen & Welling's G-CNN code) differs: it divides
by the per-image standard deviation and adds 10⁻⁵ to the singular values instead of b to the
eigenvalues; the thesis cites Goodfellow et al., so sgdlab follows pylearn2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Goodfellow et al. (2013)'s GCN scale for CIFAR-10 (pylearn2 ``CIFAR10(gcn=55.)``)
GCN_SCALE = 55.0
#: pylearn2's ``global_contrast_normalize`` defaults
GCN_SQRT_BIAS = 0.0
GCN_MIN_DIVISOR = 1e-8
#: pylearn2's ``ZCA(filter_bias=0.1)`` default, used by ``make_cifar10_gcn_whitened.py``
ZCA_FILTER_BIAS = 0.1

_CHUNK = 4096   # images per matrix product: bounds the float64 temporaries


def global_contrast_normalize(x: Tensor, *, scale: float = GCN_SCALE,
                              sqrt_bias: float = GCN_SQRT_BIAS,
                              min_divisor: float = GCN_MIN_DIVISOR) -> Tensor:
    """Per image (first axis), over all its other axes: subtract the mean, divide by
    ``sqrt(sqrt_bias + Σ x²) / scale`` unless that divisor is below ``min_divisor``. Returns
    float64 of ``x``'s shape (see the module docstring for the constants)."""
    flat = x.reshape(len(x), -1).to(torch.float64, copy=True)   # one copy, then in place
    flat -= flat.mean(dim=1, keepdim=True)
    div = torch.sqrt(sqrt_bias + torch.einsum("ij,ij->i", flat, flat)) / float(scale)
    div = torch.where(div < min_divisor, torch.ones_like(div), div)
    return flat.div_(div[:, None]).reshape(x.shape)


@dataclass
class ZCA:
    """A fitted ZCA whitening: ``mean`` (D,) and the symmetric ``matrix`` P (D, D), float64.
    ``zca(x)`` maps images (N, ...) with D values each to (x − mean) P, float32, same shape."""

    mean: Tensor
    matrix: Tensor
    filter_bias: float

    @classmethod
    def fit(cls, x_train: Tensor, filter_bias: float = ZCA_FILTER_BIAS) -> "ZCA":
        """Fit on the training images (N, ...): mean, population covariance C, and
        P = (C + b I)^−½ through ``torch.linalg.eigh`` in float64. With fewer images than
        values per image (N < D) the same P comes from the N x N Gram matrix instead: C has rank
        below N, and P = b^−½ I + Σ_i w_i w_iᵀ ((λ_i + b)^−½ − b^−½) over its nonzero
        eigenpairs (λ_i, w_i), which costs O(N D²) instead of O(D³)."""
        b = float(filter_bias)
        if not b > 0:
            raise ValueError(f"filter_bias must be > 0, got {filter_bias!r}")
        flat = x_train.reshape(len(x_train), -1)
        n, d = flat.shape
        mean = torch.zeros(d, dtype=torch.float64)
        for i in range(0, n, _CHUNK):
            mean += flat[i:i + _CHUNK].to(torch.float64).sum(dim=0)
        mean /= n
        if n < d:
            xc = flat.to(torch.float64) - mean
            lam, v = torch.linalg.eigh(xc @ xc.T / n)
            keep = lam > lam.max().clamp(min=0) * n * torch.finfo(torch.float64).eps
            lam, v = lam[keep], v[:, keep]
            w = xc.T @ (v / torch.sqrt(n * lam))          # unit eigenvectors of C, (D, r)
            coef = torch.rsqrt(lam + b) - b ** -0.5
            matrix = (w * coef) @ w.T
            matrix.diagonal().add_(b ** -0.5)
        else:
            cov = torch.zeros(d, d, dtype=torch.float64)
            for i in range(0, n, _CHUNK):
                xc = flat[i:i + _CHUNK].to(torch.float64) - mean
                cov += xc.T @ xc
            cov /= n
            cov.diagonal().add_(b)
            s, u = torch.linalg.eigh(cov)
            matrix = (u * torch.rsqrt(s)) @ u.T
        return cls(mean, matrix, b)

    def __call__(self, x: Tensor) -> Tensor:
        flat = x.reshape(len(x), -1)
        if flat.shape[1] != len(self.mean):
            raise ValueError(f"ZCA fitted on {len(self.mean)} values per image, got "
                             f"{flat.shape[1]}")
        out = torch.empty(flat.shape, dtype=torch.float32)
        for i in range(0, len(flat), _CHUNK):
            out[i:i + _CHUNK] = (flat[i:i + _CHUNK].to(torch.float64) - self.mean) @ self.matrix
        return out.reshape(x.shape)
