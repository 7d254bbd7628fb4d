"""Zhu et al. (2019)'s 2-D two-basin loss: a sharp and a flat minimum, with real samples.

Definition used here (Zhu, Wu, Yu, Wu, Ma, ICML 2019, §5.1 / Appendix B, and the authors'
``2Dim/model.py``)::

    L(w) = (1/N) Σ_k ℓ(w − x_k),   x_k ~ N(0, s² I) i.i.d.,  N = 100, s² = 0.01
    ℓ(u) = min( v_sharp(u), v_flat(u) )
    v_sharp(u) = ½ (u − c_s)ᵀ H_s (u − c_s),  c_s = (1, 1),   H_s = R(θ) diag(a₁, a₂) R(θ)ᵀ
    v_flat(u)  = ½ (u − c_f)ᵀ H_f (u − c_f),  c_f = (−1, −1), H_f = b I
    R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]],  θ = 5π/6

so the sharp quadratic's stiffest axis is (cos θ, sin θ). "Mixture" is the pointwise ``min`` of
the two quadratics, as in the authors' code; each sample k is the same two-basin loss shifted by
x_k, so a mini-batch of the k's gives genuine SGD noise whose covariance near the sharp minimum
is H_s Cov(x) H_s — aligned with the sharp curvature, which is the point of the experiment.

The paper's curvature constants were not available to us; the defaults (a₁, a₂) = (10, 1), b = 0.1
are the authors' code's shape (sharp eigenvalues 200 and 20, flat 2) divided by 20 so that
η λ_max = 1 at the paper's η = 0.1 (plain GD is stable and critically damped along the stiff
axis). They are constructor arguments; ``docs/design/landscapes.md`` discusses the choice.

Minima: when every sample sits in one branch, L is a quadratic minimised at c + x̄ (x̄ the
sample mean), so the minima are ``sharp_minimum = c_s + x̄`` and ``flat_minimum = c_f + x̄``.
The population Hessian is (1/N) Σ_k H_{branch(k)} (piecewise constant).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from sgdlab.errors import UserError

from .base import Landscape


class TwoBasin(Landscape):
    """Zhu et al.'s two-basin loss over ``num_samples`` shifted copies (see module docstring).

    Args:
        num_samples: N, number of data points x_k.
        data_var: s², variance of each coordinate of x_k.
        theta: rotation angle θ of the sharp quadratic's eigenbasis (radians).
        sharp_eigs: (a₁, a₂), the sharp Hessian's eigenvalues along (cos θ, sin θ) and the
            orthogonal axis.
        flat_curvature: b, the flat basin's (isotropic) curvature.
        sharp_center, flat_center: c_s and c_f.
        seed: seed of the data draw (the data are part of the landscape).
        data: optional explicit (N, 2) data, overriding the draw.
        dtype: float dtype of every tensor the landscape holds.
    """

    dim = 2

    def __init__(
        self,
        *,
        num_samples: int = 100,
        data_var: float = 0.01,
        theta: float = 5 * math.pi / 6,
        sharp_eigs: tuple[float, float] = (10.0, 1.0),
        flat_curvature: float = 0.1,
        sharp_center: tuple[float, float] = (1.0, 1.0),
        flat_center: tuple[float, float] = (-1.0, -1.0),
        seed: int = 0,
        data: Tensor | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if num_samples < 1:
            raise UserError(f"num_samples must be >= 1, got {num_samples}")
        if data_var < 0:
            raise UserError(f"data_var must be >= 0, got {data_var}")
        if min(sharp_eigs) <= 0 or flat_curvature <= 0:
            raise UserError("curvatures (sharp_eigs, flat_curvature) must be positive")
        if data is None:
            gen = torch.Generator().manual_seed(seed)
            data = torch.randn(num_samples, 2, generator=gen, dtype=torch.float64)
            data = data * math.sqrt(data_var)
        data = torch.as_tensor(data, dtype=dtype)
        if data.ndim != 2 or data.shape[1] != 2:
            raise UserError(f"data must have shape (N, 2), got {tuple(data.shape)}")
        self.data = data
        self.num_samples = data.shape[0]
        self.theta = float(theta)
        c, s = math.cos(theta), math.sin(theta)
        rot = torch.tensor([[c, -s], [s, c]], dtype=dtype)
        self.sharp_hessian = rot @ torch.diag(torch.tensor(sharp_eigs, dtype=dtype)) @ rot.T
        self.flat_hessian = flat_curvature * torch.eye(2, dtype=dtype)
        self.sharp_center = torch.tensor(sharp_center, dtype=dtype)
        self.flat_center = torch.tensor(flat_center, dtype=dtype)
        # Sample-only constants of the expanded quadratics (see _quadratics / grad).
        self._x_hs = data @ self.sharp_hessian
        self._x_hf = data @ self.flat_hessian
        self._x_diff = self._x_hs - self._x_hf
        self._xbar_hf = self._x_hf.mean(0)
        self._qx_sharp = 0.5 * (self._x_hs * data).sum(-1)
        self._qx_flat = 0.5 * (self._x_hf * data).sum(-1)
        ones = torch.ones_like(data[:, :1])
        # [x_k, 1, q_s(x_k) − q_f(x_k)]: v_sharp − v_flat for all k is one (…,3)@(3,N) matmul.
        self._aug = torch.cat([data, (self._qx_sharp - self._qx_flat)[:, None], ones], 1).T

    @classmethod
    def authors_code(cls, *, num_samples: int = 100, seed: int = 0, data_scale: float = 1e-2,
                     dtype: torch.dtype = torch.float64) -> "TwoBasin":
        """The landscape and data of the authors' public ``2Dim/model.py`` / ``run.py``.

        Per sample, with (x₁, y₁) = w − x_k − (1, 1), (x₂, y₂) = w − x_k + (1, 1), K₁ = cos θ,
        K₂ = sin θ, θ = π/4::

            ℓ = min( 10 (K₁x₁ − K₂y₁)² + 100 (K₁x₁ + K₂y₁)²,  x₂² + y₂² )

        i.e. (no ½ in their loss) sharp eigenvalues 200 along (cos θ, sin θ) and 20 across
        (at θ = π/4 the two projections are orthogonal), flat curvature 2. Data:
        ``X = (randn(N, 2) * [√10, 1]) @ K * 1e-2`` with K = [[K₁, −K₂], [K₂, K₁]] (rows times K),
        so the large data variance lies along the *soft* sharp axis. ``seed`` seeds the draw;
        ``data_scale=0`` gives the data-free landscape (minima exactly at (1, 1) and (−1, −1)).
        """
        if num_samples < 1:
            raise UserError(f"num_samples must be >= 1, got {num_samples}")
        theta = math.pi / 4
        c, s = math.cos(theta), math.sin(theta)
        k = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(num_samples, 2, generator=gen, dtype=torch.float64)
        data = (z * torch.tensor([math.sqrt(10.0), 1.0], dtype=torch.float64)) @ k * data_scale
        return cls(data=data, theta=theta, sharp_eigs=(200.0, 20.0), flat_curvature=2.0,
                   sharp_center=(1.0, 1.0), flat_center=(-1.0, -1.0), dtype=dtype)

    # ---------------------------------------------------------------- geometry
    @property
    def sharp_minimum(self) -> Tensor:
        """c_s + x̄: the sharp local minimum of L (exact while all samples are sharp-branch)."""
        return self.sharp_center + self.data.mean(0)

    @property
    def flat_minimum(self) -> Tensor:
        """c_f + x̄: the flat minimum of L."""
        return self.flat_center + self.data.mean(0)

    # Everything below is closed-form and expanded so that a (…, N) evaluation is one small
    # matmul plus broadcasts: the escape experiment calls these ~10⁴ times on 10⁴–10⁶ points.
    def _quadratics(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(v_sharp(θ − x_k), v_flat(θ − x_k)), each of shape (..., N)."""
        a_s = theta - self.sharp_center
        a_f = theta - self.flat_center
        ps, pf = a_s @ self.sharp_hessian, a_f @ self.flat_hessian
        vs = (0.5 * (ps * a_s).sum(-1))[..., None] - ps @ self.data.T + self._qx_sharp
        vf = (0.5 * (pf * a_f).sum(-1))[..., None] - pf @ self.data.T + self._qx_flat
        return vs, vf

    def branch_gap(self, theta: Tensor) -> Tensor:
        """v_sharp(θ − x_k) − v_flat(θ − x_k), shape (..., N); ≤ 0 means the sharp branch."""
        a_s = theta - self.sharp_center
        a_f = theta - self.flat_center
        ps, pf = a_s @ self.sharp_hessian, a_f @ self.flat_hessian
        c0 = 0.5 * ((ps * a_s).sum(-1) - (pf * a_f).sum(-1))
        coef = torch.cat([pf - ps, torch.ones_like(c0)[..., None], c0[..., None]], -1)
        return coef @ self._aug

    def sharp_mask(self, theta: Tensor) -> Tensor:
        """True where sample k's active branch is the sharp quadratic, shape (..., N)."""
        self._check(theta)
        return self.branch_gap(theta) <= 0

    def loss(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        """L(θ) = mean_k v_flat + mean_k min(gap_k, 0); the flat mean is closed form."""
        if idx is not None:
            return super().loss(theta, idx)
        self._check(theta)
        a_f = theta - self.flat_center
        pf = a_f @ self.flat_hessian
        flat_mean = 0.5 * (pf * a_f).sum(-1) - pf @ self.data.mean(0) + self._qx_flat.mean()
        return flat_mean + self.branch_gap(theta).clamp_max_(0).mean(-1)

    def per_sample_loss(self, theta: Tensor) -> Tensor:
        self._check(theta)
        return torch.minimum(*self._quadratics(theta))

    def per_sample_grad(self, theta: Tensor, mask: Tensor | None = None) -> Tensor:
        """Closed form: the active branch's gradient, shape (..., N, 2)."""
        self._check(theta)
        if mask is None:
            mask = self.sharp_mask(theta)
        gs = ((theta - self.sharp_center) @ self.sharp_hessian)[..., None, :] - self._x_hs
        gf = ((theta - self.flat_center) @ self.flat_hessian)[..., None, :] - self._x_hf
        return torch.where(mask[..., None], gs, gf)

    def grad(self, theta: Tensor, idx: Tensor | None = None,
             mask: Tensor | None = None) -> Tensor:
        """∇L (``idx=None``) or the mini-batch gradient on ``idx``; ``mask`` may be reused."""
        self._check(theta)
        if mask is None:
            mask = self.sharp_mask(theta)
        gs0 = (theta - self.sharp_center) @ self.sharp_hessian
        gf0 = (theta - self.flat_center) @ self.flat_hessian
        m = mask.to(theta.dtype)
        if idx is None:
            # mean_k [gf0 − H_f x_k + m_k (gs0 − gf0 − (H_s − H_f) x_k)]
            p = m.mean(-1, keepdim=True)
            return gf0 - self._xbar_hf + p * (gs0 - gf0) - m @ self._x_diff / m.shape[-1]
        if idx.ndim == 1:
            idx = idx.expand(*theta.shape[:-1], idx.shape[0])
        mb = torch.gather(m, -1, idx)  # (..., m)
        xb_hf = self._x_hf[idx].mean(-2)
        return gf0 - xb_hf + mb.mean(-1, keepdim=True) * (gs0 - gf0) \
            - (mb[..., None] * self._x_diff[idx]).mean(-2)

    def sharp_fraction(self, theta: Tensor) -> Tensor:
        """Fraction of samples whose active branch is the sharp quadratic, shape (...)."""
        self._check(theta)
        return self.sharp_mask(theta).to(theta.dtype).mean(-1)

    def in_flat_basin(self, theta: Tensor) -> Tensor:
        """True where most samples' active branch is the flat quadratic, shape (...)."""
        return self.sharp_fraction(theta) < 0.5

    def hessian(self, theta: Tensor) -> Tensor:
        """Closed form (1/N) Σ_k H_{branch(k)}, shape (..., 2, 2) (a.e.; kinks have measure 0)."""
        p = self.sharp_fraction(theta)[..., None, None]
        return p * self.sharp_hessian + (1 - p) * self.flat_hessian

    def gradient_covariance(self, theta: Tensor, mask: Tensor | None = None) -> Tensor:
        g = self.per_sample_grad(theta, mask)
        c = g - g.mean(-2, keepdim=True)
        return c.transpose(-1, -2) @ c / g.shape[-2]


__all__ = ["TwoBasin"]
