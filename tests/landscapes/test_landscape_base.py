"""The Landscape base: autograd defaults, mini-batches, and constant-matrix diffusion."""
import math
import re
import sys
import warnings

import numpy as np
import pytest
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes import PSpinGlass, Quadratic, TwoBasin
from sgdlab.landscapes.base import AnalyticLoss, Landscape, check_positive
from sgdlab.landscapes.sde import SDE, simulate

f64 = torch.float64


class _Cubic(Landscape):
    """ℓ_i(θ) = Σ_j a_ij θ_j³ / 3: known per-sample gradients a_ij θ_j², Hessian diag."""

    def __init__(self, a: torch.Tensor) -> None:
        self.a = a
        self.num_samples, self.dim = a.shape

    def per_sample_loss(self, theta):
        return (theta[..., None, :] ** 3 * self.a).sum(-1) / 3


@pytest.mark.usefixtures("forward_mode_unloaded")
def test_the_first_autograd_hessian_passes_on_no_torchscript_deprecation():
    """torch.func.hessian is forward over reverse mode: its first pass compiles torch's
    decompositions with the deprecated torch.jit.script, torch's warning, not the caller's."""
    th = torch.tensor([0.5, -1.0, 2.0], dtype=f64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = _Cubic(torch.ones(2, 3, dtype=f64)).hessian(th)
    assert torch.equal(h, torch.diag(2 * th))
    assert "torch._decomp.decompositions_for_jvp" in sys.modules      # loaded in the call
    assert [str(w.message) for w in caught] == []


def test_autograd_defaults_match_closed_forms():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, generator=gen, dtype=f64)
    land = _Cubic(a)
    th = torch.randn(4, 2, 3, generator=gen, dtype=f64)            # two batch dims
    g_ps = a * th[..., None, :] ** 2
    assert torch.allclose(land.per_sample_grad(th), g_ps)
    assert torch.allclose(land.grad(th), g_ps.mean(-2))
    assert torch.allclose(land.hessian(th), torch.diag_embed(2 * a.mean(0) * th))
    c = g_ps - g_ps.mean(-2, keepdim=True)
    assert torch.allclose(land.gradient_covariance(th), c.transpose(-1, -2) @ c / 6)
    idx = land.sample_batches((4, 2), 3, replacement=False, generator=gen)
    assert idx.shape == (4, 2, 3) and all(len(set(r.tolist())) == 3 for r in idx.reshape(-1, 3))
    manual = torch.stack([g_ps[i, j, idx[i, j]].mean(0) for i in range(4) for j in range(2)])
    assert torch.allclose(land.grad(th, idx).reshape(-1, 3), manual)
    with pytest.raises(UserError):
        land.sample_batches((2,), 7, replacement=False)
    quad = AnalyticLoss(lambda t: (t ** 2).sum(-1), 3)
    assert torch.allclose(quad.grad(th), 2 * th)
    with pytest.raises(UserError):
        quad.per_sample_grad(th)


def test_constant_and_state_dependent_matrix_diffusion():
    # dX = −X dt + √(2D) dB has stationary covariance D (β = 1); EM bias is O(dt)
    d = torch.tensor([[1.0, 0.4], [0.4, 0.5]], dtype=f64)
    gen = torch.Generator().manual_seed(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2x2 batched eigh per step: threads only add overhead
    try:
        _check_stationary_cov(d, gen)
    finally:
        torch.set_num_threads(threads)


def _check_stationary_cov(d, gen):
    for diffusion in (d, lambda x: d.expand(*x.shape[:-1], 2, 2)):
        sde = SDE.langevin(lambda x: x, 2, diffusion=diffusion)
        x = simulate(sde, torch.zeros(8000, 2, dtype=f64), dt=0.02, steps=250,
                     generator=gen).final
        assert torch.allclose(torch.cov(x.T), d, atol=0.06)


def test_analytic_loss_refuses_a_function_that_is_not_one_loss_per_chain():
    # f returning (..., d) (a vector of per-coordinate terms) made grad the gradient of their
    # sum and simulate ran on it without a word
    vec = AnalyticLoss(lambda t: t ** 2, 2)
    th = torch.ones(3, 2, dtype=f64)
    for call in (lambda: vec.loss(th), lambda: vec.grad(th), lambda: vec.hessian(th[0])):
        with pytest.raises(UserError, match=r"must return one loss per chain, shape \(3,\)"
                           r"|shape \(\)"):
            call()
    with pytest.raises(UserError, match="must return a torch.Tensor"):
        AnalyticLoss(lambda t: 1.0, 2).loss(th)
    ok = AnalyticLoss(lambda t: (t ** 2).sum(-1), 2)
    torch.testing.assert_close(ok.hessian(th), 2 * torch.eye(2, dtype=f64).expand(3, 2, 2))


@pytest.mark.parametrize("args, match", [
    ((lambda t: t.sum(-1), 0), "dim must be an integer >= 1"),
    ((lambda t: t.sum(-1), 2.5), "dim must be an integer >= 1"),
    ((3.0, 2), "fn must be a callable"),
])
def test_analytic_loss_arguments_are_checked(args, match):
    with pytest.raises(UserError, match=match):
        AnalyticLoss(*args)


def test_a_batch_without_replacement_of_every_sample_is_a_permutation():
    """m = N without replacement is allowed and draws each sample exactly once per chain."""
    land = _Cubic(torch.ones(5, 2, dtype=f64))
    idx = land.sample_batches((6,), 5, replacement=False,
                              generator=torch.Generator().manual_seed(0))
    assert idx.shape == (6, 5)
    assert all(sorted(r.tolist()) == [0, 1, 2, 3, 4] for r in idx)


@pytest.mark.parametrize("value", [0, 0.0, -1e-300, math.nan, math.inf])
def test_check_positive_refuses_zero_and_non_finite_values(value):
    with pytest.raises(UserError, match=re.escape(f"alpha must be a finite number > 0, got "
                                                  f"{value!r}")):
        check_positive("alpha", value)
    assert check_positive("alpha", 1e-300) == 1e-300
    assert check_positive("alpha", np.float32(0.5)) == 0.5


@pytest.mark.parametrize("value", [True, "0.1"])
def test_check_positive_refuses_a_bool_or_a_string(value):
    # float() took them: True was a step of 1, "0.1" a step of 0.1
    said = "not a bool (True)" if value is True else f"got {value!r}"
    with pytest.raises(UserError, match=re.escape(f"dt must be a finite number > 0, {said}")):
        check_positive("dt", value)


def test_check_count_names_a_bool_as_one():
    from sgdlab.landscapes.base import check_count

    # "steps must be an integer >= 1, got True" read as if True were no integer
    with pytest.raises(UserError, match=re.escape(
            "steps must be an integer >= 1, not a bool (True)")):
        check_count("steps", True, 1)
    with pytest.raises(UserError, match=re.escape("steps must be an integer >= 1, got 2.5")):
        check_count("steps", 2.5, 1)


def test_the_psd_check_allows_round_off_of_64_d_eps_relative_to_the_largest_eigenvalue():
    """psd_tolerances: λ_min ≥ −64 d eps max|λ| passes (d = 3: −192 eps), below is refused."""
    from sgdlab.landscapes.base import check_psd_matrix

    eps = torch.finfo(f64).eps
    for lam, ok in ((-100 * eps, True), (-300 * eps, False)):
        mat = torch.diag(torch.tensor([2.0, 1.0, 2 * lam], dtype=f64))
        if ok:
            check_psd_matrix("D", mat, 3)
        else:
            with pytest.raises(UserError, match="D must be positive semi-definite"):
                check_psd_matrix("D", mat, 3)


def test_autograd_grad_is_differentiable_so_a_simulation_has_its_pathwise_derivative():
    """Noiseless Euler on f = a x²/2 by the autograd default: x_n = (1 − h a)ⁿ x_0 exactly, so
    ∂x_n/∂x_0 = (1 − h a)ⁿ (a detached ∇f gave 1); without requires_grad nothing is tracked."""
    a, h, n = 3.0, 0.1, 10
    land = AnalyticLoss(lambda t: a * (t ** 2).sum(-1) / 2, 1)
    sde = SDE(lambda x: -land.grad(x), None, 1, 1)
    x0 = torch.tensor([[0.7], [-2.0]], dtype=f64, requires_grad=True)
    final = simulate(sde, x0, dt=h, steps=n).final
    (dx0,) = torch.autograd.grad(final.sum(), x0)
    assert torch.allclose(dx0, torch.full_like(x0, (1 - h * a) ** n), rtol=1e-12, atol=0)
    # the second derivative of f = x⁴/4 through ∇f: d/dx (x³) = 3x²
    quartic = AnalyticLoss(lambda t: (t ** 4).sum(-1) / 4, 2)
    x = torch.tensor([[0.5, -2.0]], dtype=f64, requires_grad=True)
    (d2,) = torch.autograd.grad(quartic.grad(x).sum(), x)
    assert torch.allclose(d2, 3 * x.detach() ** 2, rtol=1e-12, atol=0)
    assert not quartic.grad(x.detach()).requires_grad
    with torch.no_grad():
        assert not quartic.grad(x).requires_grad


@pytest.mark.parametrize("make", [
    lambda **kw: Quadratic(torch.eye(2, dtype=f64), **kw),
    lambda **kw: TwoBasin(**kw),
    lambda **kw: PSpinGlass(4, nu=0.1, **kw),
], ids=["Quadratic", "TwoBasin", "PSpinGlass"])
def test_a_fractional_seed_or_an_integer_dtype_is_named(make):
    """seed=1.5 failed in manual_seed ("expected a long"), dtype=torch.int64 in randn
    ("normal_kernel_cpu" not implemented); a whole float seed is that integer's draw."""
    for seed, said in ((1.5, "got 1.5"), ("1", "got '1'"), (True, r"not a bool \(True\)")):
        with pytest.raises(UserError, match=f"seed must be an integer, {said}"):
            make(seed=seed)
    with pytest.raises(UserError, match="dtype must be a floating torch.dtype"):
        make(dtype=torch.int64)
    a, b = make(seed=3.0), make(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a._tensors(), b._tensors()))
