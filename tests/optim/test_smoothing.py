"""HJ (proximal and implicit (4.42) forms) and HEAT (eq. 4.43) against closed forms."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from sgdlab.optim import build_optimizer
from sgdlab.optim.smoothing import HEAT, HJ

from test_entropy_sgd import quadratic

torch.set_num_threads(1)


def closure_for(y, f):
    def closure():
        y.grad = None
        loss = f(y)
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("normalize", [True, False])
def test_hj_prox_is_hopf_lax_gradient_on_quadratic(normalize):
    """∇u(x, γ) = γ⁻¹(x − prox_{γf}(x)) (4.18), prox = (Q + γ⁻¹I)⁻¹(γ⁻¹x − p) for the
    quadratic; the outer step is x − η(x − y_L) (γ-scaled, §3.2.3) or x − ηγ⁻¹(x − y_L) (4.41)."""
    Q, p, x0 = quadratic()
    gamma, lr = 0.4, 0.3
    y = nn.Parameter(x0.clone())
    opt = HJ([y], lr=lr, gamma=gamma, L=200, inner_lr=0.2, normalize=normalize)
    opt.step(closure_for(y, lambda v: 0.5 * v @ Q @ v + p @ v))
    prox = torch.linalg.solve(Q + torch.eye(3, dtype=Q.dtype) / gamma, x0 / gamma - p)
    grad_u = (x0 - prox) / gamma
    step = gamma * grad_u if normalize else grad_u
    assert torch.allclose(y.detach(), x0 - lr * step, atol=1e-12, rtol=0)
    # the smoothed gradient differs from ∇f(x): the test can tell them apart
    assert (grad_u - (Q @ x0 + p)).abs().max() > 0.1


def test_hj_implicit_form_equals_prox_form():
    """With inner_lr = γ and the raw (4.41) outer step both forms take the same steps."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    Y = torch.randn(20, 1, generator=g, dtype=torch.float64)
    out = {}
    for form in ("prox", "implicit"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
        opt = HJ(model.parameters(), lr=0.5, gamma=0.05, L=5, form=form, momentum=0.5,
                 inner_lr=0.05, **({"normalize": False} if form == "prox" else {}))

        def closure():
            model.zero_grad()
            loss = nn.functional.mse_loss(model(X), Y)
            loss.backward()
            return loss
        for _ in range(4):
            opt.step(closure)
        out[form] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(out["prox"], out["implicit"]):
        assert torch.allclose(a, b, atol=1e-13, rtol=1e-11)


@pytest.mark.parametrize("inner_lr", [0.2, 0.1])
def test_hj_implicit_fixed_point_converges_to_hopf_lax(inner_lr):
    """(4.42): y ← (1 − η_y/γ)y + η_y∇f(x − y) from 0 converges to γ∇u(x, γ), and the outer
    step uses ∇f(x − y) → ∇f(prox) = ∇u (4.18)."""
    Q, p, x0 = quadratic(seed=2)
    gamma = 0.2  # γ·λ_max(Q) = 0.4 < 1: the fixed-point iteration contracts
    y = nn.Parameter(x0.clone())
    opt = HJ([y], lr=1.0, gamma=gamma, L=80, form="implicit", inner_lr=inner_lr)
    opt.step(closure_for(y, lambda v: 0.5 * v @ Q @ v + p @ v))
    prox = torch.linalg.solve(Q + torch.eye(3, dtype=Q.dtype) / gamma, x0 / gamma - p)
    assert torch.allclose(y.detach(), x0 - (x0 - prox) / gamma, atol=1e-12, rtol=0)


def _heat_mean_update(f, x0, gamma, L, R, seed=0):
    y = nn.Parameter(x0.clone())
    opt = HEAT([y], lr=1.0, gamma=gamma, L=L, seed=seed)
    ups = []
    for _ in range(R):
        opt.step(closure_for(y, f))
        ups.append(x0 - y.detach())
        with torch.no_grad():
            y.copy_(x0)
    return torch.stack(ups)


def test_heat_on_quadratic_is_gradient_in_expectation():
    """(f * N(0,γI))' = ∇f for a quadratic; the L-sample average has covariance γQ²/L."""
    Q, p, x0 = quadratic()
    gamma, L, R = 0.5, 4, 200
    ups = _heat_mean_update(lambda v: 0.5 * v @ Q @ v + p @ v, x0, gamma, L, R)
    sd = (torch.diag(gamma * Q @ Q) / (L * R)).sqrt()    # exact standard error per coordinate
    assert ((ups.mean(0) - (Q @ x0 + p)).abs() / sd).max() < 4.5
    # and the spread of single updates matches the exact covariance (not a plain gradient)
    emp = torch.cov(ups.T)
    assert torch.allclose(emp, gamma * Q @ Q / L, atol=0.25 * (gamma * Q @ Q / L).abs().max())


def test_heat_on_quartic_matches_gaussian_convolution():
    """f = Σ x⁴/4: E ∇f(x + ε) = x³ + 3γx, ε ~ N(0, γI)."""
    x0 = torch.tensor([0.8, -1.2, 0.3], dtype=torch.float64)
    gamma, L, R = 0.3, 4, 300
    ups = _heat_mean_update(lambda v: (v**4).sum() / 4, x0, gamma, L, R, seed=3)
    exact = x0**3 + 3 * gamma * x0
    # Var (x+ε)³ = 9x⁴γ + 36x²γ² + 15γ³ (Gaussian moments); the update averages L of them
    var = 9 * x0**4 * gamma + 36 * x0**2 * gamma**2 + 15 * gamma**3
    se = (var / (L * R)).sqrt()
    assert ((ups.mean(0) - exact).abs() / se).max() < 4.5
    # distinguishable from the unsmoothed gradient x³
    assert ((exact - x0**3).abs() / se).min() > 5


def test_heat_gamma0_is_sgd_and_state_roundtrip():
    torch.manual_seed(0)
    y = nn.Parameter(torch.randn(4, dtype=torch.float64))
    y0 = y.detach().clone()
    f = lambda v: (v.sin() * v).sum()
    opt = HEAT([y], lr=0.1, gamma=0.0, L=3, momentum=0.9, nesterov=True)
    sgd_y = nn.Parameter(y0.clone())
    sgd = torch.optim.SGD([sgd_y], lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(3):
        opt.step(closure_for(y, f))
        sgd.step(closure_for(sgd_y, f))
    assert torch.allclose(y, sgd_y, atol=1e-14)

    opt = build_optimizer("heat", [y], lr=0.1, gamma=0.2, L=2, momentum=0.5, seed=4)
    opt.step(closure_for(y, f))
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "y": y.detach().clone()}, buf)
    for _ in range(3):
        opt.step(closure_for(y, f))
    expected = y.detach().clone()
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    y2 = nn.Parameter(saved["y"])
    opt2 = build_optimizer("heat", [y2], lr=0.1, gamma=0.2, L=2, momentum=0.5, seed=99)
    opt2.load_state_dict(saved["opt"])
    for _ in range(3):
        opt2.step(closure_for(y2, f))
    assert torch.equal(y2.detach(), expected)


def test_heat_does_not_perturb_frozen_parameters():
    """A requires_grad=False parameter in the groups is a constant of f: the closures see it
    unperturbed, it is not updated, and the trainable one moves as without it."""
    f = lambda w, c: ((w - c) ** 2 * w.cos()).sum()
    runs = []
    for with_frozen in (False, True):
        w = nn.Parameter(torch.linspace(-1, 1, 3, dtype=torch.float64))
        c = nn.Parameter(torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64),
                         requires_grad=False)
        opt = HEAT([w, c] if with_frozen else [w], lr=0.1, gamma=0.3, L=3, seed=1)
        seen = []

        def closure():
            w.grad = None
            seen.append(c.detach().clone())
            loss = f(w, c)
            loss.backward()
            return loss
        for _ in range(2):
            opt.step(closure)
        assert all(torch.equal(v, c) for v in seen) and torch.equal(
            c, torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64))
        runs.append(w.detach().clone())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("cls,kw", [(HJ, dict(form="x")), (HJ, dict(gamma=math.inf)),
                                    (HJ, dict(gamma=0)), (HEAT, dict(gamma=-1)),
                                    (HEAT, dict(L=0)), (HEAT, dict(nesterov=True)),
                                    (HJ, dict(form="implicit", normalize=True)),
                                    (HJ, dict(form="implicit", inner_momentum=0.9))])
def test_invalid_hyper_parameters(cls, kw):
    with pytest.raises(ValueError):
        cls([nn.Parameter(torch.zeros(2))], **kw)


def test_defaults_are_the_thesis_settings():
    """§4.6.1.2: HJ has L = 5, β_ex⁻¹ = 0, α = 0 (last iterate), η_y = 0.1 (§4.6.1.1);
    §4.6.1.3: HEAT "We again set L = 20"."""
    hj = HJ([nn.Parameter(torch.zeros(2))]).param_groups[0]
    assert (hj["L"], hj["noise"], hj["alpha"], hj["inner_lr"], hj["normalize"]) == (5, 0.0, 0.0,
                                                                                      0.1, True)
    assert HJ([nn.Parameter(torch.zeros(2))], form="implicit").param_groups[0]["normalize"] is False
    assert HEAT([nn.Parameter(torch.zeros(2))]).param_groups[0]["L"] == 20


def test_heat_scoping_per_step():
    y = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = HEAT([y], lr=0.0, gamma=1e-2, gamma_decay=0.5, gamma_min=3e-3, L=1, seed=0)
    seen = []
    for _ in range(3):
        seen.append(opt.current_gamma())
        opt.step(closure_for(y, lambda v: (v ** 2).sum()))
    assert seen == pytest.approx([1e-2, 5e-3, 3e-3])
