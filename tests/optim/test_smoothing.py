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
    """With inner_lr = γ and the raw (4.41) outer step both forms take the same steps (weight
    decay λ included: both descend f + λ|·|²/2)."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(20, 3, generator=g, dtype=torch.float64)
    Y = torch.randn(20, 1, generator=g, dtype=torch.float64)
    out = {}
    for form in ("prox", "implicit"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
        opt = HJ(model.parameters(), lr=0.5, gamma=0.05, L=5, form=form, momentum=0.5,
                 inner_lr=0.05, weight_decay=0.1,
                 **({"normalize": False} if form == "prox" else {}))

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


@pytest.mark.parametrize("inner_lr, wd", [(0.2, 0.0), (0.1, 0.0), (0.1, 0.5)])
def test_hj_implicit_fixed_point_converges_to_hopf_lax(inner_lr, wd):
    """(4.42): y ← (1 − η_y/γ)y + η_y∇f(x − y) from 0 converges to γ∇u(x, γ), and the outer
    step uses ∇f(x − y) → ∇f(prox) = ∇u (4.18). Weight decay λ: f + λ|·|²/2, Q + λI."""
    Q, p, x0 = quadratic(seed=2)
    gamma = 0.2  # γ·λ_max(Q + λI) <= 0.5 < 1: the fixed-point iteration contracts
    y = nn.Parameter(x0.clone())
    opt = HJ([y], lr=1.0, gamma=gamma, L=80, form="implicit", inner_lr=inner_lr,
             weight_decay=wd)
    opt.step(closure_for(y, lambda v: 0.5 * v @ Q @ v + p @ v))
    eye = torch.eye(3, dtype=Q.dtype)
    prox = torch.linalg.solve(Q + wd * eye + eye / gamma, x0 / gamma - p)
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
    # weight decay at x, before the momentum, as torch.optim.SGD adds it
    opt = HEAT([y], lr=0.1, gamma=0.0, L=3, momentum=0.9, nesterov=True, weight_decay=0.05)
    sgd_y = nn.Parameter(y0.clone())
    sgd = torch.optim.SGD([sgd_y], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05)
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
                                    (HEAT, dict(L=0)), (HEAT, dict(L=True)),
                                    (HEAT, dict(nesterov=True)), (HJ, dict(L=True)),
                                    (HJ, dict(form="implicit", normalize=True)),
                                    (HJ, dict(form="implicit", inner_momentum=0.9))])
def test_invalid_hyper_parameters(cls, kw):
    with pytest.raises(ValueError):
        cls([nn.Parameter(torch.zeros(2))], **kw)


@pytest.mark.parametrize("key,value", [("noise", 1e-3), ("alpha", 0.25)])
def test_an_hj_group_given_entropy_sgd_s_noise_or_average_is_refused(key, value):
    # HJ holds Entropy-SGD's thermal noise and average at 0; a group's own was kept and the
    # inner loop drew noise or averaged, silently
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=rf"^HJ has no '{key}'"):
        HJ([{"params": [a]}, {"params": [b], key: value}])
    opt = HJ([a])
    with pytest.raises(ValueError, match=rf"^HJ has no '{key}'"):
        opt.add_param_group({"params": [b], key: value})
    opt.add_param_group({"params": [b], key: 0.0})
    assert len(opt.param_groups) == 2


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


def _heat_perturbations(gamma, convention, n=4000, steps=5, L=4):
    """The ε_i HEAT adds to x (lr 0: x stays put), n coordinates × L × steps samples."""
    x0 = torch.linspace(-1, 1, n, dtype=torch.float64)
    y = nn.Parameter(x0.clone())
    opt = HEAT([y], lr=0.0, gamma=gamma, L=L, seed=5, variance_convention=convention)
    seen = []

    def closure():
        seen.append(y.detach() - x0)
        y.grad = torch.zeros_like(y)
        return torch.zeros((), dtype=torch.float64)

    for _ in range(steps):
        opt.step(closure)
    return torch.cat(seen), opt


def _ou_stationary_variance(eps, gamma, beta, chains=20000, seed=0):
    """Euler–Maruyama on (4.27)'s fast variable dY = −(εγ)⁻¹Y ds + (εβ)^−½ dB from Y = 0,
    run for 10 relaxation times εγ (step εγ/100: the scheme's variance is 0.5% high)."""
    g = torch.Generator().manual_seed(seed)
    h = eps * gamma / 100
    y = torch.zeros(chains, dtype=torch.float64)
    for _ in range(1000):
        y = y - h / (eps * gamma) * y + math.sqrt(h / (eps * beta)) * torch.randn(
            chains, generator=g, dtype=torch.float64)
    return float(y.var())


def test_heat_variance_conventions_match_eq_4_28_and_the_ou_process_of_eq_4_27():
    """(4.28) gives the perturbations the variance β⁻¹γ ("eq-4.28", HEAT's ``gamma``); the
    Ornstein–Uhlenbeck fast variable of (4.27) it homogenises settles at γ/(2β) ("ou-4.27").
    Each sample variance over 20,000 draws has a relative standard error of 1%."""
    eps, gamma, beta = 0.1, 0.5, 4.0
    ou = _ou_stationary_variance(eps, gamma, beta)
    assert ou == pytest.approx(gamma / (2 * beta), rel=0.05)     # the audit's closed form
    text, opt28 = _heat_perturbations(gamma / beta, "eq-4.28")
    half, opt27 = _heat_perturbations(gamma / beta, "ou-4.27")
    assert float(text.mean()) == pytest.approx(0.0, abs=5 * math.sqrt(gamma / beta / text.numel()))
    assert float(text.var()) == pytest.approx(gamma / beta, rel=0.05)
    assert float(half.var()) == pytest.approx(ou, rel=0.06)
    assert (opt28.current_variance(), opt27.current_variance()) == pytest.approx(
        (gamma / beta, gamma / beta / 2))
    # the convention halves the scoped γ(t), clipping included
    y = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = HEAT([y], lr=0.0, gamma=1e-2, gamma_decay=0.5, gamma_min=3e-3, L=1, seed=0,
               variance_convention="ou-4.27")
    seen = []
    for _ in range(3):
        seen.append(opt.current_variance())
        opt.step(closure_for(y, lambda v: (v ** 2).sum()))
    assert seen == pytest.approx([5e-3, 2.5e-3, 1.5e-3])


def test_heat_variance_convention_is_checked_and_survives_a_checkpoint():
    with pytest.raises(ValueError, match=r"variance_convention: 'ou'.*'eq-4.28' or 'ou-4.27'"):
        HEAT([nn.Parameter(torch.zeros(2))], variance_convention="ou")
    y = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = build_optimizer("heat", [y], gamma=0.2, L=2, variance_convention="ou-4.27", seed=1)
    sd = opt.state_dict()
    again = HEAT([y], gamma=0.2, L=2, variance_convention="ou-4.27")
    again.load_state_dict(sd)
    assert again.current_variance() == pytest.approx(0.1)
    # a state saved before the option existed was drawn with (4.28)'s variance
    for g in sd["param_groups"]:
        del g["variance_convention"]
    old = HEAT([y], gamma=0.2, L=2)
    old.load_state_dict(sd)
    assert old.param_groups[0]["variance_convention"] == "eq-4.28"
    with pytest.raises(ValueError, match="saved before variance_convention.*'ou-4.27'"):
        HEAT([y], gamma=0.2, L=2, variance_convention="ou-4.27").load_state_dict(sd)
    # a group added later is checked too (a misspelt value was a KeyError at its next step)
    z = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"variance_convention: 'OU'"):
        old.add_param_group({"params": [z], "variance_convention": "OU"})
    assert len(old.param_groups) == 1
    old.add_param_group({"params": [z], "variance_convention": "ou-4.27"})
    assert old.current_variance(old.param_groups[1]) == pytest.approx(0.1)


# --- §4.6.1 written out step by step in float64 ---------------------------------------------
def _grad_f(Q, p, v):
    """∇f of f(v) = ½vᵀQv + pᵀv + Σ v⁴/4 (the quartic makes HEAT's step depend on each ε)."""
    return Q @ v + p + v ** 3


def _f(Q, p):
    return lambda v: 0.5 * v @ Q @ v + p @ v + (v ** 4).sum() / 4


def _nesterov(buf, g, mu):
    """torch's Nesterov direction and the new buffer (the buffer starts at the first g)."""
    buf = g.clone() if buf is None else mu * buf + g
    return g + mu * buf, buf


@pytest.mark.parametrize("carried", ["gradient", "step"])
@pytest.mark.parametrize("normalize", [True, False])
def test_hj_prox_is_eqs_4_40_4_41_by_hand_with_scoping_and_momentum(normalize, carried):
    """§4.6.1.2, three outer steps of L = 3: (4.40) with β_ex⁻¹ = 0, y^{k+1} = y^k −
    η_y[∇f(y^k) + (y^k − x)/γ] from y = x (Nesterov on ∇f, the pull unaccelerated, as
    Entropy-SGD's inner loop; or on the whole drift, ``inner_momentum_on="step"``, the
    reading inner-momentum=whole-step), ⟨y⟩ = y_L (α = 0: the last iterate, no average), then
    (4.41) x ← x − ηγ⁻¹(x − y_L) (``normalize=False``) or §3.2.3's x ← x − η(x − y_L), through
    Nesterov momentum; γ scoped per outer step, γ(t) = γ₀(1 − γ₁)^t (§3.2.3, line 958)."""
    Q, p, x0 = quadratic(seed=3)
    eta, eta_y, L, g0, g1, mu, imu = 0.4, 0.1, 3, 0.6, 0.3, 0.9, 0.5
    x, obuf = x0.clone(), None
    averaged = x0.clone()          # the same loop with Entropy-SGD's α = 0.25 average
    for t in range(3):
        gamma = g0 * (1 - g1) ** t
        c = 1.0 if normalize else 1 / gamma
        y, ibuf, z = x.clone(), None, x.clone()
        for _ in range(L):
            if carried == "gradient":
                d, ibuf = _nesterov(ibuf, _grad_f(Q, p, y), imu)
                y = y - eta_y * (d + (y - x) / gamma)                   # (4.40)
            else:
                d, ibuf = _nesterov(ibuf, _grad_f(Q, p, y) + (y - x) / gamma, imu)
                y = y - eta_y * d
            z = 0.25 * z + 0.75 * y
        if t == 0:
            averaged = x - eta * c * (x - z)
        d, obuf = _nesterov(obuf, c * (x - y), mu)                      # (4.41), ⟨y⟩ = y_L
        x = x - eta * d
    w = nn.Parameter(x0.clone())
    opt = HJ([w], lr=eta, gamma=g0, gamma_decay=g1, L=L, inner_lr=eta_y, momentum=mu,
             nesterov=True, inner_momentum=imu, inner_nesterov=True, normalize=normalize,
             inner_momentum_on=carried)
    seen = []
    for _ in range(3):
        seen.append(opt.current_gamma())
        opt.step(closure_for(w, _f(Q, p)))
        if len(seen) == 1:
            first = w.detach().clone()
    assert seen == pytest.approx([g0, g0 * (1 - g1), g0 * (1 - g1) ** 2], rel=1e-15)
    assert torch.allclose(w.detach(), x, atol=1e-13, rtol=0), (w.detach(), x)
    assert (x - x0).abs().max() > 0.05                                  # the steps moved x
    # α = 0 matters: the averaged ⟨y⟩ of Entropy-SGD would have taken another first step
    assert (first - averaged).abs().max() > 1e-3


def test_hj_implicit_is_eq_4_42_by_hand_with_scoping_and_momentum():
    """§4.6.1.2, eq. (4.42) for three outer steps of L = 3, in the displacement y from y = 0:
    y ← (1 − η_y/γ)y + η_y∇f(x − y), and x ← x − η∇f(x − y) with the gradient of the round's
    last inner step (the docs' reading of the reset at k/L integer), through Nesterov
    momentum; γ scoped per outer step. With η_y ≠ γ the step is not the prox form's."""
    Q, p, x0 = quadratic(seed=4)
    eta, eta_y, L, g0, g1, mu = 0.3, 0.1, 3, 0.5, 0.2, 0.8
    x, obuf = x0.clone(), None
    for t in range(3):
        gamma = g0 * (1 - g1) ** t
        y = torch.zeros_like(x)
        for _ in range(L):
            g = _grad_f(Q, p, x - y)
            y = (1 - eta_y / gamma) * y + eta_y * g                      # (4.42), y
        d, obuf = _nesterov(obuf, g, mu)                                 # (4.42), x
        x = x - eta * d
    w = nn.Parameter(x0.clone())
    opt = HJ([w], lr=eta, gamma=g0, gamma_decay=g1, L=L, inner_lr=eta_y, form="implicit",
             momentum=mu, nesterov=True)
    for _ in range(3):
        opt.step(closure_for(w, _f(Q, p)))
    assert torch.allclose(w.detach(), x, atol=1e-13, rtol=0), (w.detach(), x)
    assert (x - x0).abs().max() > 0.05


@pytest.mark.parametrize("convention,factor", [("eq-4.28", 1.0), ("ou-4.27", 0.5)])
def test_heat_is_eq_4_43_by_hand_with_scoping_momentum_and_decay(convention, factor):
    """§4.6.1.3, eq. (4.43) for three steps of L = 3: x ← x − (η/L) Σ_i ∇f(x + ε^i),
    ε^i ~ N(0, γ(t)I) (``eq-4.28``; γ(t)/2 I under ``ou-4.27``) drawn from a generator seeded
    as the optimizer's, γ scoped per step, ℓ2 λx added to the average at x and the sum
    through Nesterov momentum ("adding momentum to first order stochastic updates and
    scoping of the parameter γ are standard", line 1831)."""
    Q, p, x0 = quadratic(seed=5)
    eta, L, g0, g1, mu, wd, seed = 0.2, 3, 0.3, 0.25, 0.9, 0.05, 13
    gen = torch.Generator().manual_seed(seed)
    x, obuf = x0.clone(), None
    for t in range(3):
        s = math.sqrt(factor * g0 * (1 - g1) ** t)
        eps = [s * torch.randn(3, generator=gen, dtype=torch.float64) for _ in range(L)]
        g = sum(_grad_f(Q, p, x + e) for e in eps) / L                    # (4.43)
        d, obuf = _nesterov(obuf, g + wd * x, mu)
        x = x - eta * d
    w = nn.Parameter(x0.clone())
    opt = HEAT([w], lr=eta, gamma=g0, gamma_decay=g1, L=L, momentum=mu, nesterov=True,
               weight_decay=wd, variance_convention=convention, seed=seed)
    for _ in range(3):
        opt.step(closure_for(w, _f(Q, p)))
    assert torch.allclose(w.detach(), x, atol=1e-13, rtol=0), (w.detach(), x)
    # the perturbations matter: the unsmoothed gradient's steps end elsewhere
    plain, obuf = x0.clone(), None
    for _ in range(3):
        d, obuf = _nesterov(obuf, _grad_f(Q, p, plain) + wd * plain, mu)
        plain = plain - eta * d
    assert (plain - x).abs().max() > 1e-3


@pytest.mark.parametrize("batches", ["per-perturbation", "shared"])
def test_heat_batches_through_the_training_loop_by_hand(batches):
    """(4.43) writes one θ̃ under the sum (line 1827): with ``batches="shared"`` the loop hands
    every closure call of a step the step's mini-batch, and two steps equal
    x ← x − (η/L) Σ_i ∇f_θ̃(x + ε^i) on that batch, by hand in float64; by default each call
    evaluates a new batch, as Entropy-SGD's inner loop."""
    from sgdlab.data import Dataset
    from sgdlab.train import train

    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)
    data = Dataset(x, y, x[:4], y[:4], {"name": "lin", "task": "regression", "num_outputs": 1})
    model = nn.Linear(3, 1, bias=False).double()
    w0 = model.weight.detach().clone()
    seen = []
    model.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].clone()) if torch.is_grad_enabled() else None)
    eta, L, gamma, seed = 0.1, 3, 0.05, 7
    opt = HEAT(model.parameters(), lr=eta, gamma=gamma, L=L, seed=seed, batches=batches)
    assert opt.closure_repeats_batch == (batches == "shared")
    res = train(model, nn.MSELoss(), data, opt, epochs=1, batch_size=4, max_steps=2,
                progress=False, eval_every=10 ** 6)
    assert res.steps == 2 and res.grad_evals == 2 * L
    assert len(seen) == 2 * L                  # the steps' forwards (evaluation runs no_grad)
    steps = [seen[:L], seen[L:]]
    same = [all(torch.equal(b, s[0]) for b in s) for s in steps]
    assert same == [batches == "shared"] * 2
    # by hand: the perturbations from a generator seeded as the optimizer's
    gen = torch.Generator().manual_seed(seed)
    w = w0.clone()
    for s in steps:
        gsum = torch.zeros_like(w)
        for xb in s:
            eps = math.sqrt(gamma) * torch.randn(w.shape, generator=gen, dtype=torch.float64)
            i = [int((x == r).all(1).nonzero()) for r in xb]
            r = xb @ (w + eps).T - y[i]
            gsum += 2 * r.T @ xb / len(xb)                 # ∇ of the mean squared error
        w = w - eta * gsum / L
    assert torch.allclose(model.weight.detach(), w, atol=1e-13, rtol=0)


def test_heat_batches_is_checked_shared_by_groups_and_survives_a_checkpoint():
    with pytest.raises(ValueError, match=r"batches: 'same'.*'per-perturbation' or 'shared'"):
        HEAT([nn.Parameter(torch.zeros(2))], batches="same")
    y = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = build_optimizer("heat", [y], gamma=0.2, L=2, batches="shared", seed=1)
    with pytest.raises(ValueError, match="must share batches"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))],
                             "batches": "per-perturbation"})
    assert len(opt.param_groups) == 1
    sd = opt.state_dict()
    again = HEAT([y], gamma=0.2, L=2, batches="shared")
    again.load_state_dict(sd)
    assert again.closure_repeats_batch
    # a state saved before the option existed drew a batch per perturbation
    for grp in sd["param_groups"]:
        del grp["batches"]
    old = HEAT([y], gamma=0.2, L=2)
    old.load_state_dict(sd)
    assert not old.closure_repeats_batch
    with pytest.raises(ValueError, match="saved before batches.*'shared'"):
        HEAT([y], gamma=0.2, L=2, batches="shared").load_state_dict(sd)


def test_heat_step_returns_the_first_perturbed_loss():
    """(4.43)'s step calls the closure at x + ε¹, ..., x + ε^L; ``step`` returns the first
    call's loss, f(x + ε¹) with ε¹ the first draw of a generator seeded as the optimizer's,
    by hand in float64 (the first call's loss, as Entropy-SGD's step and torch.optim.LBFGS)."""
    Q, p, x0 = quadratic(seed=2)
    f, gamma, seed = _f(Q, p), 0.3, 5
    eps1 = math.sqrt(gamma) * torch.randn(3, generator=torch.Generator().manual_seed(seed),
                                          dtype=torch.float64)
    w = nn.Parameter(x0.clone())
    opt = HEAT([w], lr=0.1, gamma=gamma, L=3, seed=seed)
    losses = []
    inner = closure_for(w, f)

    def closure():
        losses.append(inner().item())
        return torch.tensor(losses[-1], dtype=torch.float64)
    got = opt.step(closure)
    assert got.item() == pytest.approx(float(f(x0 + eps1)), rel=1e-13)
    assert len(losses) == 3 and abs(losses[-1] - losses[0]) > 1e-3
