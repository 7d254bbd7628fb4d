"""Sharpness measures on a quadratic loss with closed forms."""
import pytest
import torch
from torch import nn

from sgdlab.measure.sharpness import (
    epsilon_sharpness, expected_sharpness, local_entropy, mean_loss,
)
from sgdlab.operators import params_vector


class Quadratic(nn.Module):
    """L(θ) = ½ θᵀ H θ, returned for every sample of the batch."""

    def __init__(self, h, theta):
        super().__init__()
        self.register_buffer("h", h)
        self.theta = nn.Parameter(theta.clone())

    def forward(self, x):
        return (0.5 * self.theta @ self.h @ self.theta).expand(len(x))


def _loss(out, y):
    return out.mean()


DATA = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
H = torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64))


@pytest.mark.parametrize("vectorize", [True, False])
def test_expected_sharpness_of_quadratic(vectorize):
    model = Quadratic(H, torch.tensor([0.3, -0.2, 0.1, 0.0, 0.5], dtype=torch.float64))
    sigma = 0.1
    est = expected_sharpness(model, _loss, DATA, sigma, 400,
                             generator=torch.Generator().manual_seed(0), vectorize=vectorize)
    exact = sigma ** 2 * float(torch.trace(H)) / 2
    assert abs(est.value - exact) < 3 * est.stderr
    assert est.stderr < exact            # the test can fail: the estimate is informative
    torch.testing.assert_close(params_vector(model)[0], torch.tensor(0.3, dtype=torch.float64))


def test_epsilon_sharpness_reaches_the_box_corner():
    model = Quadratic(H, torch.zeros(5, dtype=torch.float64))
    eps = 1e-2
    res = epsilon_sharpness(model, _loss, DATA, eps, num_steps=10,
                            generator=torch.Generator().manual_seed(0))
    exact_max = 0.5 * eps ** 2 * float(torch.trace(H))   # corners |ζ_i| = ε(|0| + 1)
    assert res.max_loss == pytest.approx(exact_max, rel=1e-9)
    assert res.sharpness == pytest.approx(100 * exact_max)
    assert mean_loss(model, _loss, DATA) == 0.0          # parameters restored


def test_local_entropy_of_quadratic_at_minimum():
    model = Quadratic(H, torch.zeros(5, dtype=torch.float64))
    gamma, beta = 0.05, 2.0
    le = local_entropy(model, _loss, DATA, gamma, beta=beta, num_samples=4000,
                       generator=torch.Generator().manual_seed(1))
    lam = torch.diagonal(H)
    # ξ ~ N(0, γ/β): E exp(−β λ ξ²/2) = (1 + γλ)^(−1/2), so f_γ = Σ log(1 + γλ) / (2β), the
    # viscous HJ solution of the thesis at the minimum (landscapes.pde.local_entropy)
    exact = float(torch.log1p(gamma * lam).sum()) / (2 * beta)
    assert abs(le.f_gamma - exact) < 4 * le.stderr + 1e-4
    assert le.width == -le.f_gamma
    with pytest.raises(ValueError, match="beta"):
        local_entropy(model, _loss, DATA, gamma, beta=0.0)
