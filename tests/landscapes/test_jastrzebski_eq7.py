"""Jastrzebski et al. (2018) eq. (7), E(l) = (η/4S) Tr H, with H the Hessian of the loss: the
paper prints the quadratic without its ½, which eqs. (6)-(7) need; the trace is that of ∇²L."""
import pytest
import torch

from sgdlab.landscapes.quadratic import Quadratic


def test_eq7_trace_is_the_trace_of_the_loss_hessian():
    h = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    q = Quadratic(h, num_samples=30, seed=2)
    theta = torch.tensor([0.4, -1.0], dtype=torch.float64)
    hess = torch.autograd.functional.hessian(lambda t: q.loss(t), theta)
    torch.testing.assert_close(hess, h)                     # L = ½ (θ−θ*)ᵀ H (θ−θ*) + const
    for lr, s in ((0.1, 2), (0.05, 8)):
        assert q.stationary_excess_loss(lr, s) == pytest.approx(lr / (4 * s) * float(
            torch.trace(hess)), rel=1e-10)
        # the OU covariance of eq. (6)-(7) is (η/2S) I when C = H
        torch.testing.assert_close(q.sde_stationary_covariance(lr, s),
                                   lr / (2 * s) * torch.eye(2, dtype=torch.float64))


def test_eq7_reads_the_loss_above_the_minimum():
    """Assumption 1 puts the minimum "at zero loss" (line 142), Assumption 2 takes C = H
    (line 146): with C = H the per-sample gradients do not vanish at θ*, so non-negative
    per-sample losses cannot all be zero there. With C = H, L(θ*) = ½ Tr(C H⁻¹) = d/2
    exactly, and eq. (7)'s E(l) is the loss above it."""
    h = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    q = Quadratic(h, num_samples=30, seed=2)
    assert bool((q.per_sample_loss(q.minimum) >= 0).all())
    assert float(q.per_sample_grad(q.minimum).abs().max()) > 0.1
    assert q.min_loss == pytest.approx(1.0, rel=1e-12)                 # d/2, d = 2
    assert float(q.loss(q.minimum)) == pytest.approx(q.min_loss, rel=1e-12)
    # a stationary θ ~ N(θ*, Σ): E[L] = L(θ*) + ½ Tr(HΣ), the second term eq. (7)'s
    cov = q.sde_stationary_covariance(0.1, 4)
    assert q.stationary_excess_loss(0.1, 4) == pytest.approx(
        0.5 * float(torch.trace(h @ cov)), rel=1e-12)


def test_bad_quadratics_and_arguments_are_named_errors():
    from sgdlab.errors import UserError

    h = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))
    with pytest.raises(UserError, match="noise_cov must be symmetric"):
        Quadratic(h, noise_cov=torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(UserError, match=r"minimum must have shape \(2,\)"):
        Quadratic(h, minimum=torch.zeros(3, dtype=torch.float64))
    q = Quadratic(h)
    for lr, b, what in ((-0.1, 4, "lr"), (0.1, 0, "batch_size")):
        for method in (q.sde_stationary_covariance, q.sgd_stationary_covariance):
            with pytest.raises(UserError, match=what):
                method(lr, b)

