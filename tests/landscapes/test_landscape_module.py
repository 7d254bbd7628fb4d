"""Landscapes through the shared engine agree with their closed forms."""
import math

import pytest
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes.base import AnalyticLoss
from sgdlab.landscapes.module import as_problem
from sgdlab.landscapes.pspin import PSpinGlass
from sgdlab.landscapes.quadratic import Quadratic
from sgdlab.landscapes.two_basin import TwoBasin
from sgdlab.measure.sharpness import expected_sharpness
from sgdlab.operators.hessian import HessianOperator
from sgdlab.operators.per_sample import full_gradient, per_sample_gradients

f64 = torch.float64


def test_engine_matches_closed_forms():
    for land, theta in ((TwoBasin(num_samples=40), torch.tensor([0.7, 0.9], dtype=f64)),
                        (Quadratic(torch.diag(torch.tensor([2.0, 0.5, 0.1], dtype=f64)),
                                   num_samples=30), torch.tensor([0.3, -0.2, 1.0], dtype=f64))):
        model, loss_fn, data = as_problem(land, theta)
        assert torch.allclose(per_sample_gradients(model, loss_fn, data),
                              land.per_sample_grad(theta), atol=1e-12)
        assert torch.allclose(full_gradient(model, loss_fn, data), land.grad(theta), atol=1e-12)
        assert torch.allclose(HessianOperator(model, loss_fn, data).to_dense(),
                              land.hessian(theta), atol=1e-12)


def test_expected_sharpness_of_quadratic_is_half_sigma2_trace():
    h = torch.diag(torch.tensor([2.0, 0.5, 0.1], dtype=f64))
    q = Quadratic(h, num_samples=30)
    model, loss_fn, data = as_problem(q, torch.zeros(3, dtype=f64))
    est = expected_sharpness(model, loss_fn, data, 0.1, num_samples=400,
                             generator=torch.Generator().manual_seed(0))
    exact = 0.5 * 0.01 * float(torch.trace(h))
    # θ = 0 is the minimum (zero gradient): L(ξ) − L(0) = ½ ξᵀHξ, variance σ⁴ Tr H² / 2
    se = 0.01 * math.sqrt(float(torch.trace(h @ h)) / 2 / 400)
    assert torch.equal(q.grad(torch.zeros(3, dtype=f64)), torch.zeros(3, dtype=f64))
    assert abs(est.value - exact) < 4 * se and exact > 10 * se
    assert est.stderr == pytest.approx(se, rel=0.25)       # the reported error is the real one


@pytest.mark.parametrize("land", [Quadratic(torch.diag(torch.tensor([2.0, 0.5, 0.1], dtype=f64)),
                                            num_samples=30), TwoBasin(num_samples=40),
                                  PSpinGlass(n=4, nu=0.5)],
                         ids=["quadratic", "two_basin", "pspin"])
def test_a_float32_start_on_a_float64_landscape_gives_a_float64_parameter(land):
    # torch.zeros(d) / torch.tensor([...]) are float32: θ was a float32 parameter whose
    # gradients agreed with the closed form only to float32 rounding (p-spin's: an error)
    theta = torch.linspace(-0.3, 0.7, land.dim)
    model, loss_fn, data = as_problem(land, theta)
    assert model.theta.dtype == f64 and data[1].dtype == f64
    torch.testing.assert_close(full_gradient(model, loss_fn, data), land.grad(theta.double()),
                               rtol=1e-13, atol=1e-15)


def test_a_float32_landscape_keeps_a_float32_parameter():
    model, _, _ = as_problem(TwoBasin(num_samples=40, dtype=torch.float32), torch.zeros(2))
    assert model.theta.dtype == torch.float32


def test_a_batch_of_points_as_theta0_is_named():
    # (chains, dim) failed in reshape: "shape '[2]' is invalid for input of size 6"
    from sgdlab.errors import UserError

    q = Quadratic(2 * torch.eye(2, dtype=torch.float64), num_samples=10)
    with pytest.raises(UserError, match=r"theta0 must be one point of the landscape, shape "
                                        r"\(2,\), got \(3, 2\).*sgd_chains and simulate"):
        as_problem(q, torch.zeros(3, 2, dtype=torch.float64))
    model, _, _ = as_problem(q, torch.zeros(1, 2, dtype=torch.float64))   # one point: taken
    assert model.theta.shape == (2,)


def test_an_integer_start_gives_a_floating_parameter():
    # torch.tensor([1, 0]) failed with "Only Tensors of floating point ... can require gradients"
    from sgdlab.landscapes.base import AnalyticLoss
    from sgdlab.landscapes.double_well import DoubleWell

    model, _, _ = as_problem(DoubleWell(), torch.tensor([1, 0]))
    assert model.theta.dtype == torch.get_default_dtype()
    rb = AnalyticLoss(lambda t: (1 - t[..., 0]) ** 2 + 100 * (t[..., 1] - t[..., 0] ** 2) ** 2, 2)
    model, loss_fn, data = as_problem(rb, torch.tensor([1, 1]))
    assert float(loss_fn(model(data[0]), data[1]).detach()) == 0.0


def test_a_non_finite_start_is_named():
    from sgdlab.errors import UserError
    from sgdlab.landscapes.double_well import DoubleWell

    with pytest.raises(UserError, match="theta0 has non-finite entries"):
        as_problem(DoubleWell(), torch.tensor([math.nan, 0.0]))


def test_the_model_returns_the_losses_of_the_samples_it_is_given():
    """forward(idx) is ℓ_idx(θ) of shape (B,), repeated and out-of-order indices included
    (here the min of the two printed quadratics written out per sample); a sample-free
    landscape gives L(θ) once per index."""
    data = torch.tensor([[0.0, 0.0], [0.5, -0.5], [2.0, 2.0]], dtype=f64)
    land = TwoBasin(data=data)
    theta = torch.tensor([0.7, 0.9], dtype=f64)
    model, _, _ = as_problem(land, theta)
    hs, hf = land.sharp_hessian, land.flat_hessian
    ref = []
    for x in data:
        us, uf = theta - x - 1.0, theta - x + 1.0
        ref.append(min(float(0.5 * us @ hs @ us), float(0.5 * uf @ hf @ uf)))
    torch.testing.assert_close(model(torch.tensor([2, 0, 2, 1])),
                               torch.tensor([ref[2], ref[0], ref[2], ref[1]], dtype=f64))
    bowl = AnalyticLoss(lambda t: (t ** 2).sum(-1), 2)
    model, _, _ = as_problem(bowl, theta)
    torch.testing.assert_close(model(torch.tensor([0, 0, 0])),
                               torch.full((3,), 0.49 + 0.81, dtype=f64))


def test_a_float64_start_on_a_float32_landscape_is_named_at_construction():
    """The float64 parameter failed in the landscape's matmul at the first forward, inside
    the engine; the p-spin glass evaluates it in float64."""
    q = Quadratic(torch.eye(2, dtype=f64), num_samples=5).to(dtype=torch.float32)
    with pytest.raises(UserError, match="theta0 is torch.float64 but the landscape is "
                                        "torch.float32"):
        as_problem(q, torch.zeros(2, dtype=f64))
    glass = PSpinGlass(4, nu=0.1).to(dtype=torch.float32)
    model, loss_fn, (x, y) = as_problem(glass, torch.ones(4, dtype=f64))
    assert model.theta.dtype == f64 and loss_fn(model(x), y).dtype == f64
