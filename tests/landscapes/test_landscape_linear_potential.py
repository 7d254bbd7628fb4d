"""Lemma 6.44's potential of the linearised SDE (sgdlab/landscapes/linear_potential.py),
against the Lyapunov equation of its steady state, in float64."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes import Quadratic
from sgdlab.landscapes.linear_potential import linear_potential

f64 = torch.float64


def _spd(rng, d, spread=1.0):
    a = rng.standard_normal((d, d))
    return torch.as_tensor(a @ a.T + spread * np.eye(d))


@pytest.mark.parametrize("seed", [0, 1])
def test_split_of_lemma_6_44_and_its_steady_state_is_exp_minus_beta_phi(seed):
    """F = (D + Q)U with U symmetric, Q anti-symmetric; for a stable F the steady covariance of
    dX = −FX dt + √(2β⁻¹D) dB (F Σ + Σ Fᵀ = 2β⁻¹D) is β⁻¹U⁻¹, whatever β (Theorem 6.48: Φ does
    not depend on β); a non-isotropic D that does not commute with F gives Q ≠ 0."""
    rng = np.random.default_rng(seed)
    F, D = _spd(rng, 4), _spd(rng, 4, spread=0.3)
    U, Q = linear_potential(F, D)
    assert torch.allclose(U, U.T, rtol=0, atol=1e-13)
    assert torch.allclose(Q, -Q.T, rtol=0, atol=0)
    assert torch.allclose((D + Q) @ U, F, rtol=0, atol=1e-11)
    assert float(Q.abs().max()) > 1e-2
    for beta in (1.0, 7.0):
        sigma = scipy.linalg.solve_continuous_lyapunov(F.numpy(), 2 / beta * D.numpy())
        assert np.allclose(sigma, np.linalg.inv(U.numpy()) / beta, rtol=1e-10, atol=0)


def test_isotropic_or_commuting_noise_leaves_no_rotation():
    """D = cI: Q = 0 and U = F/c, Φ is f up to scale (equilibrium). D commuting with F: Q = 0 and
    ∇Φ = D⁻¹∇f. A D that does not commute with F: D⁻¹F is not symmetric, so no Φ has
    ∇Φ = D⁻¹∇f (Remark 6.51), and U differs from it."""
    rng = np.random.default_rng(2)
    F = _spd(rng, 3)
    U, Q = linear_potential(F, 2.5 * torch.eye(3, dtype=f64))
    assert float(Q.abs().max()) < 1e-13 and torch.allclose(U, F / 2.5, rtol=1e-12, atol=0)
    w, v = np.linalg.eigh(F.numpy())
    D = torch.as_tensor(v @ np.diag([0.5, 1.0, 4.0]) @ v.T)
    U, Q = linear_potential(F, D)
    assert float(Q.abs().max()) < 1e-12
    assert torch.allclose(U, torch.linalg.solve(D, F), rtol=1e-10, atol=1e-12)
    D = torch.diag(torch.tensor([0.5, 1.0, 4.0], dtype=f64))
    U, Q = linear_potential(F, D)
    nonsym = torch.linalg.solve(D, F)
    assert float((nonsym - nonsym.T).abs().max()) > 1e-2
    assert float((U - nonsym).abs().max()) > 1e-2


def test_a_saddle_point_splits_too():
    """Lemma 6.44 holds at any critical point: an indefinite F (index 1) still splits."""
    rng = np.random.default_rng(3)
    rot = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    F = torch.as_tensor(rot @ np.diag([2.0, 0.7, -1.3]) @ rot.T)
    D = _spd(rng, 3, spread=0.5)
    U, Q = linear_potential(F, D)
    assert torch.allclose((D + Q) @ U, F, rtol=0, atol=1e-11)
    assert torch.allclose(U, U.T, rtol=0, atol=1e-12)
    with pytest.raises(UserError, match="sum to 0"):
        linear_potential(torch.diag(torch.tensor([1.0, -1.0], dtype=f64)), torch.eye(2))
    with pytest.raises(UserError, match="positive definite"):
        linear_potential(F, -torch.eye(3, dtype=f64))


def test_quadratic_with_noise_shaped_like_the_hessian_has_an_isotropic_potential():
    """On the quadratic whose gradient covariance is C = H (Jastrzebski et al.'s assumption),
    F = H and D = C give U = I: Φ = ½|θ − θ*|², not f, and the SDE's steady covariance is
    β⁻¹ I = (η/2S) I (eq. 6.6), the landscape's own Lyapunov solution."""
    H = torch.diag(torch.tensor([3.0, 1.0, 0.2], dtype=f64))
    q = Quadratic(H, num_samples=64, seed=0, dtype=f64)
    U, Q = q.potential()
    assert torch.allclose(U, torch.eye(3, dtype=f64), rtol=0, atol=1e-12)
    lr, s = 0.1, 8
    assert torch.allclose(q.sde_stationary_covariance(lr, s),
                          torch.linalg.inv(U) * lr / (2 * s), rtol=1e-12, atol=0)
