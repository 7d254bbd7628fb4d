"""A quadratic loss with real per-sample structure: SGD on it is an Ornstein–Uhlenbeck process.

L(θ) = (1/N) Σ_i ℓ_i(θ),  ℓ_i(θ) = ½ (θ − θ* − x_i)ᵀ H (θ − θ* − x_i),

with the x_i exactly centred and exactly whitened to empirical covariance S = H⁻¹ C H⁻¹
(1/N normalisation). Then ∇L(θ) = H(θ − θ*) and the per-sample gradient covariance is exactly
C (default C = H, Jastrzebski et al.'s assumption). SGD with step η and batch size S (drawn
with replacement) follows, to weak order 1, the OU process (Jastrzebski et al. eq. 3–5)

    dθ = −H(θ − θ*) dt + √(η/S) C^{1/2} dB,

whose stationary law is N(θ*, Σ_z) with H Σ_z + Σ_z H = (η/S) C. For C = H (eq. 6–7):

    Σ_z = (η/2S) I,      E[L(θ) − L(θ*)] = ½ Tr(H Σ_z) = (η/4S) Tr H.

The discrete SGD chain itself is stationary at the solution of the discrete Lyapunov equation
Σ = (I − ηH) Σ (I − ηH) + (η²/S) C, equal to the above up to O(η) (per eigen-direction of
H = C: var_i = η / (S (2 − η λ_i))).

Convention: H here is the Hessian ∇²L. The paper (§2.2) prints the quadratic approximation as
l(θ) ≈ (θ − θ*)ᵀ H (θ − θ*), without the ½, yet its OU process (6) has drift −Λz and its
eq. (7) writes E(l) = ½ Σ λ_i E(z_i²): both need l = ½ (θ − θ*)ᵀ H (θ − θ*), i.e. H = ∇²l.
Taken literally (H = ½ ∇²l, Assumption 2 then reading C = ∇²l) the same steps give
E(l) = (η/2S) Tr H = (η/4S) Tr ∇²l, so eq. (7) holds in terms of the Hessian either way;
sgdlab states and tests it with H = ∇²L.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sgdlab.errors import UserError

from .base import (
    Landscape, check_count, check_floating_dtype, check_positive, check_psd_matrix,
    seeded_generator,
)
from .linear_potential import LinearPotential, linear_potential
from .sde.base import psd_sqrt
from .sde.sgd import checked_noise_factor


def _sym_power(mat: Tensor, power: float) -> Tensor:
    evals, evecs = torch.linalg.eigh(mat)
    return (evecs * evals.pow(power)[None, :]) @ evecs.T


class Quadratic(Landscape):
    """Per-sample quadratics whose mean is ½(θ−θ*)ᵀH(θ−θ*) + const and whose gradient noise
    covariance is exactly ``noise_cov`` (default H).

    Args:
        hessian: H, symmetric positive definite (d, d).
        num_samples: N (> d, so the samples can be whitened exactly).
        noise_cov: C, PSD (d, d); default H.
        minimum: θ*; default 0.
        seed: seed of the sample draw.
    """

    def __init__(self, hessian: Tensor, *, num_samples: int = 100,
                 noise_cov: Tensor | None = None, minimum: Tensor | None = None,
                 seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        check_floating_dtype("Quadratic", dtype)   # int64 failed in randn ("normal_kernel")
        h = torch.as_tensor(hessian, dtype=dtype)
        if h.ndim != 2 or h.shape[0] != h.shape[1]:
            raise UserError(f"hessian must be square (d, d), got {tuple(h.shape)}")
        d = h.shape[0]
        # tolerances relative to the matrix's scale, at the round-off of the dtype it came in
        # (base.psd_tolerances): the absolute ones refused C = 10⁶ v vᵀ for a −1e−10 round-off
        # eigenvalue and took a non-symmetric H or an indefinite C of scale 10⁻⁹
        check_psd_matrix("hessian", h, d, definite=True, round_off=_given_dtype(hessian, dtype))
        num_samples = check_count("num_samples", num_samples, 1)   # 10.5 failed in randn
        if num_samples <= d:
            raise UserError(f"num_samples must exceed the dimension {d}, got {num_samples}")
        c = h.clone() if noise_cov is None else torch.as_tensor(noise_cov, dtype=dtype)
        check_psd_matrix("noise_cov", c, d, round_off=_given_dtype(noise_cov, dtype))
        self.dim, self.num_samples = d, num_samples
        self.H, self.C = h, c
        self.minimum = torch.zeros(d, dtype=dtype) if minimum is None else \
            torch.as_tensor(minimum, dtype=dtype)
        if self.minimum.shape != (d,):
            raise UserError(f"minimum must have shape ({d},), got {tuple(self.minimum.shape)}")
        if not bool(torch.isfinite(self.minimum).all()):
            raise UserError(f"minimum has non-finite entries: {self.minimum.tolist()}")
        gen = seeded_generator(seed)
        z = torch.randn(num_samples, d, generator=gen, dtype=dtype)
        z = z - z.mean(0)
        emp = z.T @ z / num_samples
        h_inv = torch.linalg.inv(h)
        target = h_inv @ c @ h_inv                            # Cov(x) = H⁻¹ C H⁻¹
        # psd_sqrt clips round-off below 0: a rank-deficient C (low-rank, like a network's Σ)
        # has zero eigenvalues that eigh returns as ±1e−17, and a negative one's root is NaN
        self.samples = z @ _sym_power(emp, -0.5) @ psd_sqrt(target)
        self._offset = 0.5 * ((self.samples @ h) * self.samples).sum(-1).mean()

    def per_sample_loss(self, theta: Tensor) -> Tensor:
        self._check(theta)
        u = theta[..., None, :] - self.minimum - self.samples
        return 0.5 * ((u @ self.H) * u).sum(-1)

    def loss(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        if idx is not None:
            return super().loss(theta, idx)
        self._check(theta)
        a = theta - self.minimum
        return 0.5 * ((a @ self.H) * a).sum(-1) + self._offset

    @property
    def min_loss(self) -> float:
        """L(θ*) = ½ mean_i x_iᵀ H x_i (the samples' irreducible loss)."""
        return float(self._offset)

    def grad(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        self._check(theta)
        a = theta - self.minimum
        if idx is None:
            return a @ self.H
        # (m, d) or (..., m, d) -> mean sample of the batch
        xb = self.samples[idx.to(theta.device)].mean(-2)
        return (a - xb) @ self.H

    def per_sample_grad(self, theta: Tensor) -> Tensor:
        self._check(theta)
        return (theta[..., None, :] - self.minimum - self.samples) @ self.H

    def hessian(self, theta: Tensor) -> Tensor:
        self._check(theta)
        return self.H.expand(*theta.shape[:-1], self.dim, self.dim)

    # ------------------------------------------------------------- closed forms
    def sde_stationary_covariance(self, lr: float, batch_size: int, *,
                                  replacement: bool = True) -> Tensor:
        """Σ_z solving H Σ + Σ H = η c C (the OU limit; (η/2S) I when C = H), c = 1/S for
        with-replacement batches, (N − S)/(S (N − 1)) without (as :func:`~.sde.sgd_sde`)."""
        c = self._noise_factor(lr, batch_size, replacement)
        import scipy.linalg   # here: ~0.3 s that importing the landscapes need not pay

        q = (lr * c) * self.C.cpu().double().numpy()
        sol = scipy.linalg.solve_continuous_lyapunov(self.H.cpu().double().numpy(), q)
        return torch.as_tensor((sol + sol.T) / 2).to(self.H)

    def potential(self) -> LinearPotential:
        """Lemma 6.44's (U, Q) for F = H and D = C (:func:`.linear_potential.linear_potential`):
        the steady state is ∝ e^{−βΦ}, Φ = ½ (θ − θ*)ᵀ U (θ − θ*), with β⁻¹ = η/(2S) (eq. 6.6);
        U = I when C = H, U = H when C = I. C must be positive definite here."""
        return linear_potential(self.H, self.C)

    def sgd_stationary_covariance(self, lr: float, batch_size: int, *,
                                  replacement: bool = True) -> Tensor:
        """The discrete chain's Σ = (I − ηH) Σ (I − ηH) + η² c C, c = 1/S for with-replacement
        batches, (N − S)/(S (N − 1)) without (``sgd_chains(..., replacement=False)``)."""
        import scipy.linalg

        c = self._noise_factor(lr, batch_size, replacement)
        # solved in float64 on the CPU (scipy), returned on the landscape's device and dtype
        a = np.eye(self.dim) - lr * self.H.cpu().double().numpy()
        if np.abs(np.linalg.eigvals(a)).max() >= 1:
            raise UserError(f"SGD is unstable at lr={lr}: need lr < 2 / λ_max(H)")
        q = (lr ** 2 * c) * self.C.cpu().double().numpy()
        sol = scipy.linalg.solve_discrete_lyapunov(a, q)
        return torch.as_tensor((sol + sol.T) / 2).to(self.H)

    def stationary_excess_loss(self, lr: float, batch_size: int, *,
                               discrete: bool = False, replacement: bool = True) -> float:
        """E[L] − L(θ*) = ½ Tr(H Σ); for C = H and the SDE this is (η/4S) Tr H (eq. 7)."""
        cov = (self.sgd_stationary_covariance if discrete else
               self.sde_stationary_covariance)(lr, batch_size, replacement=replacement)
        return float(0.5 * torch.trace(self.H @ cov))

    def _noise_factor(self, lr: float, batch_size: int, replacement: bool) -> float:
        """c of Cov[mini-batch gradient] = c C, as sgd_chains and sgd_sde draw the batches."""
        _check_lr_batch(lr, batch_size)
        return checked_noise_factor(batch_size, self.num_samples, replacement)


__all__ = ["Quadratic"]


def _given_dtype(value, default: torch.dtype) -> torch.dtype:
    """The dtype a matrix was given in (its round-off), ``default`` for non-tensors."""
    return value.dtype if isinstance(value, Tensor) and value.is_floating_point() else default


def _check_lr_batch(lr: float, batch_size: int) -> None:
    check_positive("lr", lr)
    check_count("batch_size", batch_size, 1)
