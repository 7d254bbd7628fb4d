"""The potential Φ of SGD's SDE linearised at a critical point (thesis §6.4.1, Lemma 6.44).

Near a critical point x = 0 with ∇f(x) = F x and a constant diffusion matrix D, SGD's SDE is
eq. (6.46), dX = −F X dt + √(2β⁻¹D) dB. Lemma 6.44 splits

    F = (D + Q) U,    U symmetric, Q anti-symmetric,    Φ(x) = ½ xᵀ U x,

with D and Q the symmetric and anti-symmetric parts of G = D + Q, G Fᵀ − F Gᵀ = 0. Written
out with Gᵀ = D − Q, that condition is the Sylvester equation

    F Q + Q Fᵀ = F D − D Fᵀ,

solved for Q (unique when no two eigenvalues of F sum to 0, so saddle points are included),
and U = (D + Q)⁻¹ F. Neither depends on β: the potential is the loss' and the noise's, not the
temperature's (Theorem 6.48). Where F is stable the steady state of (6.46) is N(0, Σ) with
F Σ + Σ Fᵀ = 2β⁻¹ D, and Σ = β⁻¹ U⁻¹, i.e. ρ_ss ∝ e^{−βΦ}.

- D ∝ I (isotropic noise): Q = 0 and U = F / c, Φ is f up to a scale (equilibrium);
- D commuting with F: Q = 0 and ∇Φ = D⁻¹ ∇f;
- otherwise Q ≠ 0 (Remark 6.51: a non-isotropic D, constant or not, leaves no Φ with
  ∇Φ = D⁻¹ ∇f; the gradient is rotated, Remark 6.45).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from sgdlab.errors import UserError

from .base import check_psd_matrix


class LinearPotential(NamedTuple):
    """Lemma 6.44's split F = (D + Q) U: ``U`` (Φ(x) = ½ xᵀ U x) and ``Q``, float64."""

    U: Tensor
    Q: Tensor


def _square(name: str, m) -> np.ndarray:
    a = np.asarray(torch.as_tensor(m).detach().cpu().double())
    if a.ndim != 2 or a.shape[0] != a.shape[1] or not np.isfinite(a).all():
        raise UserError(f"{name} must be a finite square matrix, got shape {a.shape}")
    return a


def linear_potential(F: Tensor, D: Tensor) -> LinearPotential:
    """U and Q of Lemma 6.44 for the linearised gradient ∇f(x) = F x and the diffusion matrix
    D (symmetric positive definite), in float64 (module docstring)."""
    import scipy.linalg   # here: ~0.3 s that importing the landscapes need not pay

    f = _square("F", F)
    d = check_psd_matrix("D", torch.as_tensor(D).detach().cpu(), len(f), definite=True).numpy()
    ev = np.linalg.eigvals(f)
    scale = max(1.0, np.abs(ev).max())
    if np.abs(ev[:, None] + ev[None, :]).min() <= 1e-10 * scale:
        raise UserError("F has two eigenvalues that sum to 0: Q is not unique")
    q = scipy.linalg.solve_sylvester(f, f.T, f @ d - d @ f.T)
    q = (q - q.T) / 2                   # anti-symmetric up to round-off; keep it exactly so
    u = np.linalg.solve(d + q, f)
    return LinearPotential(torch.as_tensor((u + u.T) / 2), torch.as_tensor(q))
