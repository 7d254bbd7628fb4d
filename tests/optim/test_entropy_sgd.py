"""Entropy-SGD / Entropy-Adam: the local-entropy gradient against its closed form on a
quadratic (thesis Lemma 4.4), exact reductions to SGD/Adam, state_dict resume, validation."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.optim import build_optimizer
from sgdlab.optim.entropy_sgd import EntropyAdam, EntropySGD
from sgdlab.optim.scoping import ExponentialScope

torch.set_num_threads(1)


def quadratic(d: int = 3, seed: int = 0):
    """f(y) = ½ yᵀQy + pᵀy with Q SPD (eigenvalues 0.5 .. 2), float64."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    Q = U @ torch.diag(torch.linspace(0.5, 2.0, d, dtype=torch.float64)) @ U.T
    p = torch.randn(d, generator=g, dtype=torch.float64)
    x0 = torch.randn(d, generator=g, dtype=torch.float64)
    return Q, p, x0


def quad_closure(y: nn.Parameter, Q, p):
    def closure():
        y.grad = None
        loss = 0.5 * y @ Q @ y + p @ y
        loss.backward()
        return loss
    return closure


def gibbs_mean(Q, p, x, gamma):
    """⟨y⟩ of exp(−β[f(y) + |x − y|²/(2γ)]) for the quadratic: (Q + γ⁻¹I)⁻¹(γ⁻¹x − p)."""
    d = Q.shape[0]
    return torch.linalg.solve(Q + torch.eye(d, dtype=Q.dtype) / gamma, x / gamma - p)


def test_sgld_local_entropy_gradient_matches_closed_form():
    Q, p, x0 = quadratic()
    gamma, noise, L, R = 0.5, 0.2, 60, 80
    y = nn.Parameter(x0.clone())
    # lr = 0 keeps x fixed: every outer step is an independent estimate of ∇F(x)
    opt = EntropySGD([y], lr=0.0, inner_lr=0.15, L=L, gamma=gamma, noise=noise, alpha=0.8,
                     seed=1)
    closure = quad_closure(y, Q, p)
    est = []
    for _ in range(R):
        opt.step(closure)
        st = opt.state[y]
        est.append((st["x"] - st["z"]) / gamma)
    est = torch.stack(est)
    assert torch.equal(y.detach(), x0)
    exact = (x0 - gibbs_mean(Q, p, x0, gamma)) / gamma          # Lemma 4.4
    mc_err = est.std(0) / math.sqrt(R)
    # η_y(Q + I/γ) ∈ [0.375, 0.6]: burn-in bias of z < 1e-5 (ULA's stationary mean is exact
    # for a Gaussian)
    assert (est.mean(0) - exact).abs().max() < 4.5 * mc_err.max() + 1e-4, (est.mean(0), exact)
    # the estimate is noisy, not degenerate, and distinguishable from the plain gradient
    assert mc_err.min() > 1e-3
    assert (exact - (Q @ x0 + p)).abs().max() > 8 * mc_err.max()


def test_langevin_noise_has_the_stated_temperature():
    """The inner loop is the unadjusted Langevin algorithm y ← y − η_y ∇Φ(y) + √(2η_y β⁻¹) ε on
    Φ(y) = f(y) + |x − y|²/(2γ) (``noise`` = β⁻¹; the module's reading of Alg. 2 / (4.39)):
    for the quadratic, A = Q + γ⁻¹I, its stationary law is Gaussian with mean A⁻¹(γ⁻¹x − p)
    (the Gibbs mean) and covariance β⁻¹ (A (I − η_y A / 2))⁻¹ exactly. One outer step of
    L = 3,030 inner steps; the closure sees every iterate y_k: after 30 steps of burn-in
    (error |1 − η_y A|³⁰ < 1e-6) every 5th one is kept (correlation |1 − η_y A|⁵ < 0.1), and
    the empirical covariance of the 600 draws is compared entry by entry with that law
    (Gaussian sampling error sd(Ĉ_ij) = √((C_ii C_jj + C_ij²)/R)). The mean test above cannot
    see the noise scale: the Gibbs mean does not depend on β."""
    Q, p, x0 = quadratic()
    gamma, eta, temp, R = 0.5, 0.15, 0.05, 600
    y = nn.Parameter(x0.clone())
    opt = EntropySGD([y], lr=0.0, inner_lr=eta, L=30 + 5 * R, gamma=gamma, noise=temp,
                     alpha=0.0, seed=2)
    seen = []

    def closure():                     # the quadratic's gradient written out (no autograd)
        v = y.detach()
        seen.append(v.clone())
        y.grad = Q @ v + p
        return 0.5 * v @ Q @ v + p @ v
    opt.step(closure)
    draws = torch.stack(seen[30::5])
    assert len(draws) == R
    a = Q + torch.eye(3, dtype=Q.dtype) / gamma
    cov = temp * torch.linalg.inv(a @ (torch.eye(3, dtype=Q.dtype) - eta * a / 2))
    c = draws - gibbs_mean(Q, p, x0, gamma)
    emp = c.T @ c / R
    d = torch.diagonal(cov)
    z = (emp - cov).abs() / ((torch.outer(d, d) + cov ** 2) / R).sqrt()
    assert float(z.max()) < 5, (emp, cov)
    assert (c.mean(0).abs() / (3 * d / R).sqrt()).max() < 5      # thinned chain: ~3x variance


def test_the_outer_step_descends_3_9s_local_entropy_differentiated_by_quadrature():
    """f_γ(x) = −log ∫ exp(−f(y) − |x − y|²/(2γ)) dy (3.9) by quadrature on a 1-D grid and
    central differences in x: the noiseless step (its chain's limit ⟨y⟩ for a quadratic f) is
    x − η′∇f_γ(x), the sign of (4.12) and line 1447, not (3.10)'s and line 1423's opposite."""
    q, p, x0, gamma, lr = 1.5, -0.4, 0.8, 0.5, 0.3
    ys = torch.linspace(-30.0, 30.0, 60001, dtype=torch.float64)

    def f_gamma(x):
        return -torch.logsumexp(-(0.5 * q * ys ** 2 + p * ys) - (x - ys) ** 2 / (2 * gamma), 0)

    h = 1e-4
    grad = float(f_gamma(x0 + h) - f_gamma(x0 - h)) / (2 * h)
    assert abs(grad) > 0.3                                  # the two signs are far apart
    y = nn.Parameter(torch.tensor([x0], dtype=torch.float64))
    opt = EntropySGD([y], lr=lr, inner_lr=0.1, L=400, gamma=gamma, noise=0.0, alpha=0.0,
                     normalize=False)
    opt.step(quad_closure(y, torch.tensor([[q]], dtype=torch.float64),
                          torch.tensor([p], dtype=torch.float64)))
    assert float(y.detach()) == pytest.approx(x0 - lr * grad, abs=1e-8)


def test_noiseless_inner_loop_converges_to_proximal_point():
    Q, p, x0 = quadratic(d=4, seed=3)
    gamma = 0.3
    y = nn.Parameter(x0.clone())
    opt = EntropySGD([y], lr=0.0, inner_lr=0.1, L=300, gamma=gamma, noise=0.0, alpha=0.0)
    opt.step(quad_closure(y, Q, p))
    assert torch.allclose(opt.state[y]["z"], gibbs_mean(Q, p, x0, gamma), atol=1e-12, rtol=0)


def test_outer_update_normalized_and_raw():
    Q, p, x0 = quadratic()
    gamma = 0.5
    res = {}
    for normalize in (True, False):
        y = nn.Parameter(x0.clone())
        opt = EntropySGD([y], lr=0.3, inner_lr=0.1, L=400, gamma=gamma, alpha=0.0,
                         normalize=normalize)
        opt.step(quad_closure(y, Q, p))
        res[normalize] = y.detach().clone()
    ystar = gibbs_mean(Q, p, x0, gamma)
    assert torch.allclose(res[True], x0 - 0.3 * (x0 - ystar), atol=1e-12)
    assert torch.allclose(res[False], x0 - 0.3 * (x0 - ystar) / gamma, atol=1e-12)


def _mlp_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    Y = torch.randint(0, 2, (40,), generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    return model, X, Y


def _batch_closure(model, X, Y, gen, B=8):
    lf = nn.CrossEntropyLoss()

    def closure():
        idx = torch.randint(0, X.shape[0], (B,), generator=gen)
        model.zero_grad()
        loss = lf(model(X[idx]), Y[idx])
        loss.backward()
        return loss
    return closure


def _steps(model, X, Y, opt, seed, n):
    """``n`` steps of ``opt`` on a fresh seeded batch stream; the parameters after them."""
    cl = _batch_closure(model, X, Y, torch.Generator().manual_seed(seed))
    for _ in range(n):
        opt.step(cl)
    return [p.detach().clone() for p in model.parameters()]


def _restore(model, ref):
    with torch.no_grad():
        for p, r in zip(model.parameters(), ref):
            p.copy_(r)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_L1_gamma_inf_is_sgd(momentum):
    """L = 1, γ = ∞, α = 0, η′ = 1: x ← z = x − η∇f_B(x), i.e. SGD (outer momentum = SGD's)."""
    model, X, Y = _mlp_problem()
    ref = [p.detach().clone() for p in model.parameters()]
    opt = EntropySGD(model.parameters(), lr=1.0, inner_lr=0.05, L=1, gamma=math.inf, alpha=0.0,
                     momentum=momentum, nesterov=momentum > 0)
    got = _steps(model, X, Y, opt, 5, 6)
    _restore(model, ref)
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=momentum, nesterov=momentum > 0)
    for a, b in zip(got, _steps(model, X, Y, sgd, 5, 6)):
        assert torch.allclose(a, b, atol=1e-14, rtol=1e-12)


@pytest.mark.parametrize("mode", ["outer", "inner"])
def test_entropy_adam_L1_gamma_inf_is_adam(mode):
    """adam="outer" (§3.3.5: Adam on the local-entropy gradient): with L = 1, γ = ∞, α = 0 and
    η_y = 1, G = x − z = ∇f_B(x) and the step is Adam's. adam="inner": the single inner step is
    Adam's and η′ = 1 copies it."""
    model, X, Y = _mlp_problem(1)
    ref = [p.detach().clone() for p in model.parameters()]
    hyper = (dict(lr=0.01, inner_lr=1.0) if mode == "outer" else dict(lr=1.0, inner_lr=0.01))
    opt = EntropyAdam(model.parameters(), adam=mode, L=1, gamma=math.inf, alpha=0.0, **hyper)
    got = _steps(model, X, Y, opt, 2, 5)
    _restore(model, ref)
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    for a, b in zip(got, _steps(model, X, Y, adam, 2, 5)):
        assert torch.allclose(a, b, atol=1e-13, rtol=1e-11)


def test_entropy_adam_counts_each_parameters_own_steps_as_adam_does():
    """A layer frozen for the first steps and then trained: torch.optim.Adam corrects its
    moments' bias by its own step count (t = 1 at its first step), not by the optimizer's;
    Entropy-Adam at L = 1, γ = ∞ is Adam there too."""
    model, X, Y = _mlp_problem(1)
    ref = [p.detach().clone() for p in model.parameters()]
    last = list(model.parameters())[-1]

    def train(opt):
        cl = _batch_closure(model, X, Y, torch.Generator().manual_seed(2))
        for k in range(6):
            last.requires_grad_(k >= 3)
            opt.step(cl)
        return [p.detach().clone() for p in model.parameters()]

    got = train(EntropyAdam(model.parameters(), lr=0.01, inner_lr=1.0, L=1, gamma=math.inf,
                            alpha=0.0))
    _restore(model, ref)
    want = train(torch.optim.Adam(model.parameters(), lr=0.01))
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-13, rtol=1e-11)


@pytest.mark.parametrize("mode", ["outer", "inner"])
def test_entropy_adam_state_saved_without_step_counts_resume_at_the_optimizers_step(mode):
    """A state saved before the moments kept their own step count resumes with t taken from
    the optimizer's count (outer steps for adam="outer", inner steps for "inner"): where every
    parameter stepped each time, the trajectory is the one never interrupted."""
    model, X, Y = _mlp_problem(3)
    ref = [p.detach().clone() for p in model.parameters()]
    hyper = dict(adam=mode, L=2, gamma=0.5, alpha=0.25)
    opt = EntropyAdam(model.parameters(), **hyper)
    straight = _steps(model, X, Y, opt, 3, 3)
    _restore(model, ref)
    opt = EntropyAdam(model.parameters(), **hyper)
    cl = _batch_closure(model, X, Y, torch.Generator().manual_seed(3))
    for _ in range(2):
        opt.step(cl)
    sd = opt.state_dict()
    for st in sd["state"].values():
        del st["step"]
    opt = EntropyAdam(model.parameters(), **hyper)
    opt.load_state_dict(sd)
    opt.step(cl)
    for a, b in zip(straight, model.parameters()):
        assert torch.allclose(a, b, atol=1e-14, rtol=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_algorithm_2_as_printed_by_hand_with_noise_and_scoping(normalize):
    """Algorithm 2 (lines 942-948) written out in float64, three outer steps of L = 4 with the
    thermal noise and §3.2.3's scoping γ(t) = γ₀(1 − γ₁)^t: y, z ← x; dy ← ∇f(y) − γ⁻¹(x − y);
    y ← y − η dy + √(2ηβ⁻¹) N(0, I); z ← αz + (1 − α)y (α = 0.25, the weight of the old
    average); then x ← x − η′γ⁻¹(x − z) as printed (``normalize=False``) or §3.2.3's
    x ← x − η′(x − z). The noise is drawn from a generator seeded as the optimizer's."""
    Q, p, x0 = quadratic(d=3, seed=5)
    g0, g1, eta, eta_out, L, temp, alpha, seed = 0.8, 0.2, 0.1, 0.6, 4, 1e-2, 0.25, 7
    gen = torch.Generator().manual_seed(seed)
    x = x0.clone()
    for t in range(3):
        gamma = g0 * (1 - g1) ** t
        y, z = x.clone(), x.clone()
        for _ in range(L):
            dy = (Q @ y + p) - (x - y) / gamma
            y = y - eta * dy + math.sqrt(2 * eta * temp) * torch.randn(
                3, generator=gen, dtype=torch.float64)
            z = alpha * z + (1 - alpha) * y
        x = x - eta_out * (x - z) / (1.0 if normalize else gamma)
    w = nn.Parameter(x0.clone())
    opt = EntropySGD([w], lr=eta_out, inner_lr=eta, L=L, gamma=g0, gamma_decay=g1,
                     alpha=alpha, noise=temp, normalize=normalize, seed=seed)
    for _ in range(3):
        opt.step(quad_closure(w, Q, p))
    assert opt.outer_steps == 3 and opt.inner_steps == 3 * L
    assert torch.allclose(w.detach(), x, atol=1e-13, rtol=0), (w.detach(), x)
    assert (x - x0).abs().max() > 0.05             # the steps moved x: the test can fail


def test_thesis_gamma_is_the_inverse_of_the_authors_code_gamma():
    """The thesis' scope γ and the authors' code's coupling g: γ = 1/g. Two outer steps of the
    code's update (python/optim.py: dw = ∇f(w) + g(w − w_c); w ← w − η_y dw;
    μ ← 0.75μ + 0.25w; then w ← w_c − η′(w_c − μ)) by hand in float64 equal EntropySGD with
    gamma = 1/g, alpha = 0.75 and the γ-scaled outer step, scoped as the code scopes g."""
    Q, p, x0 = quadratic(d=3, seed=4)
    g0, g1, eta_y, eta, L = 2.0, 0.5, 0.1, 0.7, 4
    w = x0.clone()
    for t in range(2):
        g = g0 * (1 + g1) ** t
        wc, y, mu = w.clone(), w.clone(), w.clone()
        for _ in range(L):
            dw = Q @ y + p + g * (y - wc)
            y = y - eta_y * dw
            mu = 0.75 * mu + 0.25 * y
        w = wc - eta * (wc - mu)
    y = nn.Parameter(x0.clone())
    opt = EntropySGD([y], lr=eta, inner_lr=eta_y, L=L, gamma=1 / g0,
                     gamma_decay=1 - 1 / (1 + g1), alpha=0.75, normalize=True)
    for _ in range(2):
        opt.step(quad_closure(y, Q, p))
    assert torch.allclose(y.detach(), w, atol=1e-14, rtol=0)


def test_mnist_scoping_of_section_3_3_2():
    """"the initial value of the scope is set to γ = 10^4 and this decreases by a factor of
    1 + 10^-3 after each parameter update": γ₁ = 1 − 1/1.001 per outer step."""
    y = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = EntropySGD([y], gamma=1e4, gamma_decay=1 - 1 / 1.001, L=1)
    assert opt.param_groups[0]["gamma"] == 1e4 == EntropySGD([nn.Parameter(y.detach())]
                                                             ).param_groups[0]["gamma"]
    for t in (0, 1, 1000):
        opt.outer_steps = t
        assert opt.current_gamma() == pytest.approx(1e4 / 1.001 ** t, rel=1e-12)


@pytest.mark.parametrize("name,hyper", [
    ("entropy_sgd", dict(lr=0.5, inner_lr=0.05, L=3, gamma=0.1, gamma_decay=0.1, noise=1e-3,
                         momentum=0.9, nesterov=True, inner_momentum=0.5, inner_nesterov=True,
                         weight_decay=1e-3)),
    ("entropy_sgd", dict(lr=0.5, inner_lr=0.05, L=3, gamma=0.1, noise=1e-3, momentum=0.9,
                         nesterov=True, weight_decay=1e-3, weight_decay_on="both")),
    ("parle", dict(lr=0.5, inner_lr=0.05, L=3, gamma=0.1, noise=1e-3, momentum=0.9,
                   nesterov=True, inner_momentum=0.9, inner_nesterov=True,
                   inner_momentum_on="step", inner_momentum_buffer="kept")),
    ("entropy_adam", dict(lr=0.5, inner_lr=0.01, L=3, gamma=0.1, noise=1e-4)),
    ("entropy_adam", dict(lr=0.5, adam="inner", inner_lr=0.01, L=3, gamma=0.1, noise=1e-4)),
])
def test_state_dict_roundtrip_resumes_identical_trajectory(name, hyper):
    model, X, Y = _mlp_problem(2)
    torch.manual_seed(0)
    opt = build_optimizer(name, model.parameters(), **hyper)
    gen = torch.Generator().manual_seed(9)
    cl = _batch_closure(model, X, Y, gen)
    for _ in range(3):
        opt.step(cl)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "model": model.state_dict(), "gen": gen.get_state()}, buf)
    for _ in range(3):
        opt.step(cl)
    expected = [p.detach().clone() for p in model.parameters()]

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model2, _, _ = _mlp_problem(2)
    model2.load_state_dict(saved["model"])
    torch.manual_seed(123)  # a different global seed must not matter after loading
    opt2 = build_optimizer(name, model2.parameters(), **hyper)
    opt2.load_state_dict(saved["opt"])
    gen2 = torch.Generator()
    gen2.set_state(saved["gen"])
    cl2 = _batch_closure(model2, X, Y, gen2)
    for _ in range(3):
        opt2.step(cl2)
    assert opt2.outer_steps == 6 and opt2.inner_steps == 18
    for a, b in zip(expected, model2.parameters()):
        assert torch.equal(a, b)


def test_scoping_applies_per_outer_step():
    y = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = EntropySGD([y], gamma=1.0, gamma_decay=0.5, gamma_min=0.2, L=2)
    cl = quad_closure(y, torch.eye(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    seen = []
    for _ in range(4):
        seen.append(opt.current_gamma())
        opt.step(cl)
    assert seen == [1.0, 0.5, 0.25, 0.2]
    assert ExponentialScope(1.0, 0.5, lower=0.2)(3) == 0.2


@pytest.mark.parametrize("kw", [dict(lr=-1), dict(inner_lr=0), dict(L=0), dict(L=2.5),
                                dict(gamma=0), dict(alpha=1.0), dict(noise=-1),
                                dict(momentum=1.0), dict(nesterov=True),
                                dict(inner_nesterov=True), dict(weight_decay=-1),
                                dict(gamma_decay=1.0), dict(gamma_min=2, gamma_max=1)])
def test_invalid_hyper_parameters_raise(kw):
    with pytest.raises(ValueError):
        EntropySGD([nn.Parameter(torch.zeros(2))], **kw)


def test_the_inner_steps_are_an_int_not_a_bool_numpy_s_ints_taken():
    """L=True was one inner step; np.int64(3), a grid's count, was refused."""
    with pytest.raises(ValueError, match=r"Invalid number of inner steps L: True \(int >= 1\)"):
        EntropySGD([nn.Parameter(torch.zeros(2))], L=True)
    opt = EntropySGD([nn.Parameter(torch.zeros(2))], L=np.int64(3))
    assert type(opt.param_groups[0]["L"]) is int and opt.param_groups[0]["L"] == 3


def test_step_without_closure_raises():
    opt = EntropySGD([nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="closure"):
        opt.step()
    assert EntropySGD.needs_closure and EntropyAdam.needs_closure


@pytest.mark.parametrize("name,kw", [
    ("entropy_sgd", dict(lr=1.0, inner_lr=0.1, L=4, gamma=1.0, noise=1e-2, inner_momentum=0.5)),
    ("entropy_adam", dict(adam="inner", L=4, gamma=1.0)),
    ("parle", dict(lr=0.1, L=4, gamma=1.0)),
    ("hj", dict(L=4, form="prox")),
    ("hj", dict(L=4, form="implicit")),
    ("heat", dict(L=4, gamma=0.5)),
])
def test_a_closure_that_raises_leaves_the_parameters_untouched(name, kw):
    """Every closure optimizer moves the parameters to inner iterates (y, or x + ε for HEAT)
    while it calls the closure; one that raises on a later call (the training loop's
    non-finite-loss stop, an interrupt) must leave the step untaken: the parameters are x."""
    Q, p, x0 = quadratic()
    y = nn.Parameter(x0.clone())
    opt = build_optimizer(name, [y], **kw)
    calls, inner = [0], quad_closure(y, Q, p)

    def closure():
        calls[0] += 1
        if calls[0] == 3:
            raise FloatingPointError("non-finite loss")
        return inner()
    with pytest.raises(FloatingPointError):
        opt.step(closure)
    assert calls[0] == 3 and torch.equal(y.detach(), x0)


@pytest.mark.parametrize("name", ["entropy_sgd", "heat"])
def test_add_param_group_must_share_L(name):
    """One closure call serves every group, so a group added with another L is refused (and
    not kept); one with the same L is trained."""
    Q, p, x0 = quadratic()
    y = nn.Parameter(x0.clone())
    w = nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = build_optimizer(name, [y], L=3)
    with pytest.raises(ValueError, match=r"share L, got \[3, 5\]"):
        opt.add_param_group({"params": [w], "L": 5})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [w]})
    inner = quad_closure(y, Q, p)

    def closure():
        w.grad = None
        loss = inner() + (w ** 2).sum()
        w.grad = 2 * w.detach()
        return loss
    opt.step(closure)
    assert not torch.equal(w.detach(), torch.ones(2, dtype=torch.float64))


def test_step_schedule_drops_the_outer_rate_and_leaves_the_sgld_step_fixed():
    """§3.3.2 (line 1052): "The learning rate of the SGLD updates is fixed to η = 0.1 while the
    outer loop's learning rate is set to η′ = 1 and drops by a factor of 10 after the second
    epoch": the schedule scales ``lr`` (η′) only, never ``inner_lr``."""
    from sgdlab.optim.protocols import StepLR

    Q, p, x0 = quadratic()
    y = nn.Parameter(x0.clone())
    opt = EntropySGD([y], lr=1.0, inner_lr=0.1, L=2, gamma=10.0)
    sched = StepLR(opt, milestones=[2], gamma=0.1, steps_per_epoch=3)
    seen = []
    for _ in range(9):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["inner_lr"]))
        opt.step(quad_closure(y, Q, p))
        sched.step()
    assert [lr for lr, _ in seen] == pytest.approx([1.0] * 6 + [0.1] * 3)
    assert all(inner == 0.1 for _, inner in seen)


def test_inner_momentum_on_the_step_leaves_the_closures_gradient_as_computed():
    # the whole-drift reading once added the pull γ⁻¹(y − x) into p.grad itself
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = EntropySGD([p], lr=1.0, inner_lr=0.1, L=3, gamma=0.5, inner_momentum=0.9,
                     inner_momentum_on="step")
    seen = []

    def closure():
        opt.zero_grad()
        loss = 0.5 * (p ** 2).sum()
        loss.backward()
        seen.append(p.grad.clone())
        return loss

    opt.step(closure)
    assert len(seen) == 3
    assert torch.equal(p.grad, seen[-1])


def _algorithm_2_with_decay(Q, p, x0, *, where, steps, lr, inner_lr, L, g0, g1, alpha, temp,
                            mom, inner_mom, wd, normalize, seed):
    """Algorithm 2 in float64 with ℓ2 λ: dy = ∇f(y) + λy through inner Nesterov momentum (reset
    every outer step), plus γ⁻¹(y − x) unaccelerated, the noise √(2ηβ⁻¹)ε; then
    G = (x − z) or γ⁻¹(x − z), plus λx when ``where == "both"`` (the authors' python/optim.py:
    ``dw.add_(wd, w.data)`` on the outer gradient), through outer Nesterov momentum."""
    gen = torch.Generator().manual_seed(seed)
    x, buf = x0.clone(), None
    for t in range(steps):
        gamma = g0 * (1 - g1) ** t
        y, z, ibuf = x.clone(), x.clone(), torch.zeros_like(x)
        for _ in range(L):
            g = Q @ y + p + wd * y
            ibuf = inner_mom * ibuf + g
            g = g + inner_mom * ibuf
            y = y - inner_lr * (g + (y - x) / gamma) + math.sqrt(2 * inner_lr * temp) * torch.randn(
                x.shape, generator=gen, dtype=torch.float64)
            z = alpha * z + (1 - alpha) * y
        G = (x - z) / (1.0 if normalize else gamma)
        if where == "both":
            G = G + wd * x
        buf = G.clone() if buf is None else mom * buf + G
        x = x - lr * (G + mom * buf)
    return x


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("where", ["inner", "both"])
def test_weight_decay_on_inner_or_both_as_algorithm_2_by_hand(where, normalize):
    """Four outer steps of Algorithm 2 with weight decay, Nesterov momentum on both loops,
    noise and scoping, by hand in float64: ``weight_decay_on="inner"`` (the default) decays the
    inner gradients only; ``"both"`` adds λx to the outer gradient before the outer momentum,
    as the authors' PyTorch code does."""
    Q, p, x0 = quadratic(d=3, seed=6)
    hyper = dict(lr=0.7, inner_lr=0.1, L=3, alpha=0.25, normalize=normalize)
    g0, g1, temp, mom, inner_mom, wd, seed = 0.8, 0.1, 1e-3, 0.9, 0.5, 0.3, 11
    want = _algorithm_2_with_decay(Q, p, x0, where=where, steps=4, g0=g0, g1=g1, temp=temp,
                                   mom=mom, inner_mom=inner_mom, wd=wd, seed=seed, **hyper)
    w = nn.Parameter(x0.clone())
    opt = EntropySGD([w], gamma=g0, gamma_decay=g1, noise=temp, momentum=mom, nesterov=True,
                     inner_momentum=inner_mom, inner_nesterov=True, weight_decay=wd,
                     weight_decay_on=where, seed=seed, **hyper)
    for _ in range(4):
        opt.step(quad_closure(w, Q, p))
    assert torch.allclose(w.detach(), want, atol=1e-13, rtol=0), (w.detach(), want)
    other = _algorithm_2_with_decay(Q, p, x0, where={"inner": "both", "both": "inner"}[where],
                                    steps=4, g0=g0, g1=g1, temp=temp, mom=mom,
                                    inner_mom=inner_mom, wd=wd, seed=seed, **hyper)
    assert (other - want).abs().max() > 1e-3           # the two readings differ here


def test_entropy_adam_decays_the_outer_gradient_before_adam():
    """Entropy-Adam with ``weight_decay_on="both"``: Adam's moments are of (x − z) + λx."""
    Q, p, x0 = quadratic(d=3, seed=2)
    lr, eta, L, gamma, wd, b1, b2, eps = 0.05, 0.1, 3, 0.5, 0.2, 0.9, 0.999, 1e-8
    x, m, v = x0.clone(), torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for t in range(1, 4):
        y, z = x.clone(), x.clone()
        for _ in range(L):
            y = y - eta * (Q @ y + p + wd * y + (y - x) / gamma)
            z = 0.25 * z + 0.75 * y
        G = (x - z) + wd * x
        m, v = b1 * m + (1 - b1) * G, b2 * v + (1 - b2) * G * G
        x = x - lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
    w = nn.Parameter(x0.clone())
    opt = EntropyAdam([w], lr=lr, inner_lr=eta, L=L, gamma=gamma, weight_decay=wd,
                      weight_decay_on="both")
    for _ in range(3):
        opt.step(quad_closure(w, Q, p))
    assert torch.allclose(w.detach(), x, atol=1e-13, rtol=0), (w.detach(), x)


def _trajectory(**kw):
    model, X, Y = _mlp_problem(3)
    opt = EntropySGD(model.parameters(), lr=0.5, inner_lr=0.05, L=3, gamma=0.5, noise=1e-4,
                     momentum=0.9, nesterov=True, inner_momentum=0.9, inner_nesterov=True,
                     seed=4, **kw)
    cl = _batch_closure(model, X, Y, torch.Generator().manual_seed(8))
    for _ in range(4):
        opt.step(cl)
    return [p.detach().clone() for p in model.parameters()]


def test_weight_decay_on_defaults_to_the_inner_loop_bit_for_bit():
    """The default is ``"inner"``, and ``"both"`` without weight decay is the same trajectory
    bit for bit; with weight decay ``"both"`` moves elsewhere."""
    default = _trajectory(weight_decay=1e-2)
    assert all(torch.equal(a, b) for a, b in
               zip(default, _trajectory(weight_decay=1e-2, weight_decay_on="inner")))
    assert all(torch.equal(a, b) for a, b in
               zip(_trajectory(), _trajectory(weight_decay_on="both")))
    both = _trajectory(weight_decay=1e-2, weight_decay_on="both")
    assert max((a - b).abs().max() for a, b in zip(default, both)) > 1e-6
    assert EntropySGD([nn.Parameter(torch.zeros(1))]).defaults["weight_decay_on"] == "inner"


@pytest.mark.parametrize("name,kw", [
    ("entropy_sgd", dict(weight_decay_on="outer")),
    ("entropy_sgd", dict(weight_decay_on=None)),
    ("entropy_adam", dict(weight_decay_on="Both")),
    ("parle", dict(weight_decay_on="x")),
    ("hj", dict(weight_decay_on="inner-only")),
    ("hj", dict(form="implicit", weight_decay_on="both")),
])
def test_weight_decay_on_is_checked(name, kw):
    with pytest.raises(ValueError, match="weight_decay_on"):
        build_optimizer(name, [nn.Parameter(torch.zeros(2))], **kw)


def test_a_group_added_with_an_unknown_weight_decay_on_is_refused():
    opt = EntropySGD([nn.Parameter(torch.zeros(2))], weight_decay=0.1)
    with pytest.raises(ValueError, match="weight_decay_on: 'outer'"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))],
                             "weight_decay_on": "outer"})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [nn.Parameter(torch.zeros(2))], "weight_decay_on": "both"})
    assert [g["weight_decay_on"] for g in opt.param_groups] == ["inner", "both"]


def test_hj_prox_form_with_weight_decay_on_both_is_entropy_sgds_outer_decay():
    """HJ's prox form is Entropy-SGD's loop without noise and average (α = 0): with
    ``weight_decay_on="both"`` both take the same steps."""
    Q, p, x0 = quadratic(d=3, seed=1)
    kw = dict(lr=0.5, inner_lr=0.1, L=4, gamma=0.7, momentum=0.9, nesterov=True,
              weight_decay=0.2, weight_decay_on="both")
    a, b = nn.Parameter(x0.clone()), nn.Parameter(x0.clone())
    hj = build_optimizer("hj", [a], **kw)
    esgd = EntropySGD([b], alpha=0.0, noise=0.0, **kw)
    for _ in range(3):
        hj.step(quad_closure(a, Q, p))
        esgd.step(quad_closure(b, Q, p))
    assert hj.param_groups[0]["weight_decay_on"] == "both"
    assert torch.equal(a.detach(), b.detach())
    plain = nn.Parameter(x0.clone())
    hj_inner = build_optimizer("hj", [plain], **{**kw, "weight_decay_on": "inner"})
    for _ in range(3):
        hj_inner.step(quad_closure(plain, Q, p))
    assert (plain.detach() - a.detach()).abs().max() > 1e-3


def _saved_before_the_option(opt, option: str = "weight_decay_on") -> dict:
    sd = opt.state_dict()
    sd["param_groups"] = [{k: v for k, v in g.items() if k != option}
                          for g in sd["param_groups"]]
    return sd


def test_weight_decay_on_round_trips_and_an_older_state_loads_as_inner():
    """The option is a group hyper-parameter: it round-trips with the state (a resumed run
    continues bit for bit). A state saved before it existed decayed the inner loop only: it
    loads as ``"inner"`` and continues that run, and an optimizer built with ``"both"`` refuses
    it, unchanged."""
    kw = dict(lr=0.5, inner_lr=0.05, L=3, gamma=0.5, momentum=0.9, nesterov=True,
              weight_decay=1e-2, noise=1e-4, seed=3)
    for where in ("inner", "both"):
        model, X, Y = _mlp_problem(4)
        opt = EntropySGD(model.parameters(), weight_decay_on=where, **kw)
        gen = torch.Generator().manual_seed(1)
        cl = _batch_closure(model, X, Y, gen)
        opt.step(cl)
        buf = io.BytesIO()
        sd = opt.state_dict() if where == "both" else _saved_before_the_option(opt)
        torch.save({"opt": sd, "model": model.state_dict(), "gen": gen.get_state()}, buf)
        for _ in range(2):
            opt.step(cl)
        want = [p.detach().clone() for p in model.parameters()]
        buf.seek(0)
        saved = torch.load(buf, weights_only=True)
        model2, _, _ = _mlp_problem(4)
        model2.load_state_dict(saved["model"])
        opt2 = EntropySGD(model2.parameters(), **kw)
        if where == "inner":
            refused = EntropySGD(model2.parameters(), weight_decay_on="both", **kw)
            with pytest.raises(ValueError, match="before weight_decay_on existed"):
                refused.load_state_dict(saved["opt"])
            assert refused.param_groups[0]["weight_decay_on"] == "both"
            assert refused.outer_steps == 0 and not refused.state
        else:
            opt2 = EntropySGD(model2.parameters(), weight_decay_on="inner", **kw)
        opt2.load_state_dict(saved["opt"])
        assert opt2.param_groups[0]["weight_decay_on"] == where
        gen2 = torch.Generator()
        gen2.set_state(saved["gen"])
        cl2 = _batch_closure(model2, X, Y, gen2)
        for _ in range(2):
            opt2.step(cl2)
        assert all(torch.equal(a, b) for a, b in zip(want, model2.parameters())), where


def test_kept_inner_momentum_round_trips_and_an_older_state_loads_as_reset():
    """``inner_momentum_buffer="kept"``: the buffer carried into the next outer step is part
    of the saved state, and a resumed run continues bit for bit (with that buffer zeroed it
    would not). A state saved before the option existed reset its buffer: it loads as
    ``"reset"``, and an optimizer built with ``"kept"`` refuses it, unchanged."""
    kw = dict(lr=0.5, inner_lr=0.05, L=3, gamma=0.5, momentum=0.9, nesterov=True,
              inner_momentum=0.9, inner_nesterov=True, noise=1e-4, seed=3)
    model, X, Y = _mlp_problem(4)
    opt = EntropySGD(model.parameters(), inner_momentum_buffer="kept", **kw)
    gen = torch.Generator().manual_seed(1)
    cl = _batch_closure(model, X, Y, gen)
    for _ in range(2):
        opt.step(cl)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "model": model.state_dict(), "gen": gen.get_state()},
               buf)
    for _ in range(2):
        opt.step(cl)
    want = [p.detach().clone() for p in model.parameters()]

    def resumed(zero_buffer: bool) -> list[torch.Tensor]:
        buf.seek(0)
        saved = torch.load(buf, weights_only=True)
        model2, _, _ = _mlp_problem(4)
        model2.load_state_dict(saved["model"])
        opt2 = EntropySGD(model2.parameters(), **kw)     # the saved groups' option wins
        if zero_buffer:
            for st in saved["opt"]["state"].values():
                st["inner_buf"].zero_()
        opt2.load_state_dict(saved["opt"])
        assert opt2.param_groups[0]["inner_momentum_buffer"] == "kept"
        gen2 = torch.Generator()
        gen2.set_state(saved["gen"])
        cl2 = _batch_closure(model2, X, Y, gen2)
        for _ in range(2):
            opt2.step(cl2)
        return [p.detach().clone() for p in model2.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(want, resumed(False)))
    assert max((a - b).abs().max() for a, b in zip(want, resumed(True))) > 1e-6

    older = EntropySGD(model.parameters(), **kw)
    older.step(cl)
    sd = _saved_before_the_option(older, "inner_momentum_buffer")
    refused = EntropySGD(model.parameters(), inner_momentum_buffer="kept", **kw)
    with pytest.raises(ValueError, match="before inner_momentum_buffer existed"):
        refused.load_state_dict(sd)
    assert refused.param_groups[0]["inner_momentum_buffer"] == "kept" and not refused.state
    loaded = EntropySGD(model.parameters(), **kw)
    loaded.load_state_dict(sd)
    assert loaded.param_groups[0]["inner_momentum_buffer"] == "reset"


def test_inner_momentum_buffer_defaults_to_reset_bit_for_bit():
    """The default zeroes the inner buffer every outer step, as before the option existed;
    ``"kept"`` moves elsewhere."""
    default = _trajectory()
    assert EntropySGD([nn.Parameter(torch.zeros(1))]).defaults["inner_momentum_buffer"] == "reset"
    assert all(torch.equal(a, b) for a, b in
               zip(default, _trajectory(inner_momentum_buffer="reset")))
    kept = _trajectory(inner_momentum_buffer="kept")
    assert max((a - b).abs().max() for a, b in zip(default, kept)) > 1e-6
    with pytest.raises(ValueError, match="inner_momentum_buffer"):
        EntropySGD([nn.Parameter(torch.zeros(1))], inner_momentum_buffer="never")


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("kept", [True, False])
def test_inner_momentum_on_the_step_as_algorithm_2_by_hand(kept, nesterov):
    """``inner_momentum_on="step"`` written out in float64, three outer steps of L = 3 with
    noise, scoping and weight decay: the whole drift dy = ∇f(y) + λy + γ⁻¹(y − x) goes
    through the inner momentum (b ← μb + dy; Nesterov dy + μb, else b), the noise is added
    unaccelerated, y ← y − η(·) + √(2ηβ⁻¹)ε, z ← αz + (1 − α)y; the buffer is zeroed every
    outer step (``"reset"``) or carried on (``"kept"``, the authors' Parle code); then
    x ← x − η′(x − z). The ``"gradient"`` reading ends elsewhere."""
    Q, p, x0 = quadratic(d=3, seed=8)
    lr, eta, L, alpha, g0, g1, temp, mu, wd, seed = 0.7, 0.1, 3, 0.25, 0.6, 0.2, 1e-3, 0.8, 0.2, 4
    gen = torch.Generator().manual_seed(seed)
    x, b = x0.clone(), torch.zeros(3, dtype=torch.float64)
    for t in range(3):
        gamma = g0 * (1 - g1) ** t
        y, z = x.clone(), x.clone()
        if not kept:
            b = torch.zeros(3, dtype=torch.float64)
        for _ in range(L):
            dy = Q @ y + p + wd * y + (y - x) / gamma
            b = mu * b + dy
            step = dy + mu * b if nesterov else b
            y = y - eta * step + math.sqrt(2 * eta * temp) * torch.randn(
                3, generator=gen, dtype=torch.float64)
            z = alpha * z + (1 - alpha) * y
        x = x - lr * (x - z)
    outs = {}
    for on in ("step", "gradient"):
        w = nn.Parameter(x0.clone())
        opt = EntropySGD([w], lr=lr, inner_lr=eta, L=L, gamma=g0, gamma_decay=g1, alpha=alpha,
                         noise=temp, inner_momentum=mu, inner_nesterov=nesterov,
                         inner_momentum_on=on, weight_decay=wd,
                         inner_momentum_buffer="kept" if kept else "reset", seed=seed)
        for _ in range(3):
            opt.step(quad_closure(w, Q, p))
        outs[on] = w.detach()
    assert torch.allclose(outs["step"], x, atol=1e-13, rtol=0), (outs["step"], x)
    assert (x - x0).abs().max() > 0.05                     # the steps moved x
    assert (outs["gradient"] - x).abs().max() > 1e-3       # the two readings differ here


def test_entropy_adam_inner_as_algorithm_2_with_adam_in_the_inner_loop_by_hand():
    """§3.2.2's "Adam for [the] inner loop(s)" (``adam="inner"``) written out in float64, three
    outer steps of L = 3 with noise, scoping and ℓ2: line 3's ∇f(y) + λy through Adam (moments
    kept across outer steps, bias correction over all inner steps so far), the pull
    γ⁻¹(y − x) and line 4's noise √(2ηβ⁻¹)ε added unpreconditioned, z ← αz + (1 − α)y; then
    x ← x − η′(x − z) through the outer Nesterov momentum."""
    Q, p, x0 = quadratic(d=3, seed=9)
    lr, eta, L, alpha, g0, g1, temp, mu, wd, seed = 0.6, 0.05, 3, 0.25, 0.7, 0.2, 1e-4, 0.5, 0.1, 2
    b1, b2, eps = 0.9, 0.999, 1e-8
    gen = torch.Generator().manual_seed(seed)
    x, obuf = x0.clone(), None
    m, v, t = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for k in range(3):
        gamma = g0 * (1 - g1) ** k
        y, z = x.clone(), x.clone()
        for _ in range(L):
            g = Q @ y + p + wd * y
            t += 1
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            d = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
            y = y - eta * ((y - x) / gamma + d) + math.sqrt(2 * eta * temp) * torch.randn(
                3, generator=gen, dtype=torch.float64)
            z = alpha * z + (1 - alpha) * y
        G = x - z
        obuf = G.clone() if obuf is None else mu * obuf + G
        x = x - lr * (G + mu * obuf)
    w = nn.Parameter(x0.clone())
    opt = EntropyAdam([w], lr=lr, adam="inner", inner_lr=eta, L=L, gamma=g0, gamma_decay=g1,
                      alpha=alpha, noise=temp, momentum=mu, nesterov=True, weight_decay=wd,
                      betas=(b1, b2), eps=eps, seed=seed)
    for _ in range(3):
        opt.step(quad_closure(w, Q, p))
    assert torch.allclose(w.detach(), x, atol=1e-13, rtol=0), (w.detach(), x)
    assert (x - x0).abs().max() > 0.05


def test_step_returns_the_loss_at_x_the_first_closure_calls():
    """Algorithm 2's step evaluates f at y, which moves away from x; ``step`` returns the first
    call's loss, f(x) (torch.optim.LBFGS's convention), not the last inner iterate's."""
    Q, p, x0 = quadratic(d=3, seed=1)
    w = nn.Parameter(x0.clone())
    opt = EntropySGD([w], lr=1.0, inner_lr=0.2, L=4, gamma=0.5, alpha=0.25)
    losses = []
    inner = quad_closure(w, Q, p)

    def closure():
        losses.append(inner())
        return losses[-1]
    got = opt.step(closure)
    assert got.item() == pytest.approx(float(0.5 * x0 @ Q @ x0 + p @ x0), rel=1e-14)
    assert abs(losses[-1].item() - got.item()) > 1e-3        # the later calls saw other y


def test_a_zero_scope_is_refused_naming_gamma():
    """γ is the variance of (3.8)'s Gaussian: γ = 0 has no coupling |x − y|²/(2γ); the error
    names Entropy-SGD's own argument, not the scoping schedule's."""
    with pytest.raises(ValueError, match=r"Invalid gamma: 0 \(must be > 0"):
        EntropySGD([nn.Parameter(torch.zeros(2))], gamma=0)


@pytest.mark.parametrize("normalize", [True, False])
def test_each_group_is_coupled_and_scoped_with_its_own_gamma(normalize):
    """Two groups with their own scope γ₀ and scoping γ₁ (one closure serves both): each
    group's Langevin pull γ⁻¹(y − x) and raw outer step γ⁻¹(x − z) use that group's γ(t),
    Algorithm 2 by hand in float64 on f(u, v) = f₁(u) + f₂(v)."""
    Q1, p1, u0 = quadratic(d=3, seed=2)
    Q2, p2, v0 = quadratic(d=2, seed=3)
    eta, eta_out, L, alpha = 0.1, 0.5, 3, 0.25
    scopes = [(0.4, 0.0), (2.0, 0.3)]

    def by_hand(Q, p, x, g0, g1):       # no noise, momentum or weight decay
        return _algorithm_2_with_decay(Q, p, x, where="inner", steps=2, lr=eta_out,
                                       inner_lr=eta, L=L, g0=g0, g1=g1, alpha=alpha, temp=0.0,
                                       mom=0.0, inner_mom=0.0, wd=0.0, normalize=normalize,
                                       seed=0)
    want = [by_hand(Q1, p1, u0, *scopes[0]), by_hand(Q2, p2, v0, *scopes[1])]
    u, v = nn.Parameter(u0.clone()), nn.Parameter(v0.clone())
    opt = EntropySGD([{"params": [u], "gamma": scopes[0][0], "gamma_decay": scopes[0][1]},
                      {"params": [v], "gamma": scopes[1][0], "gamma_decay": scopes[1][1]}],
                     lr=eta_out, inner_lr=eta, L=L, alpha=alpha, normalize=normalize)
    cu, cv = quad_closure(u, Q1, p1), quad_closure(v, Q2, p2)

    def closure():
        return cu() + cv()
    for _ in range(2):
        opt.step(closure)
    assert torch.allclose(u.detach(), want[0], atol=1e-14, rtol=0)
    assert torch.allclose(v.detach(), want[1], atol=1e-14, rtol=0)


def test_defaults_are_the_thesis_settings():
    """Algorithm 2's settings as the thesis states them: L = 20 and η_y = 0.1 (§4.6.1.1),
    α = 0.25 (§3.2.2), η′ = 1 with the γ-scaled step x ← z (§3.2.3), no thermal noise;
    Entropy-Adam's η′ = 0.01 (§3.3.5, char-LSTM) and, with Adam in the inner loop, Adam's own
    step 10⁻³ for η_y."""
    g = EntropySGD([nn.Parameter(torch.zeros(2))]).param_groups[0]
    assert (g["L"], g["inner_lr"], g["alpha"], g["lr"], g["normalize"], g["noise"]) == (
        20, 0.1, 0.25, 1.0, True, 0.0)
    outer = EntropyAdam([nn.Parameter(torch.zeros(2))]).param_groups[0]
    assert (outer["lr"], outer["inner_lr"], outer["alpha"]) == (0.01, 0.1, 0.25)
    assert EntropyAdam([nn.Parameter(torch.zeros(2))], adam="inner").param_groups[0][
        "inner_lr"] == 1e-3


@pytest.mark.parametrize("inner_nesterov", [True, False])
def test_inner_momentum_on_the_step_carries_algorithm_2s_whole_dy_by_hand(inner_nesterov):
    # reading inner-momentum=whole-step: the inner momentum carries dy = ∇f(y) + γ⁻¹(y − x)
    # + λy (Algorithm 2, line 944), two inner steps replayed in float64
    Q, p, w0 = quadratic(d=3, seed=3)
    w = nn.Parameter(w0.clone())
    opt = EntropySGD([w], lr=0.7, inner_lr=0.1, gamma=0.5, L=2, alpha=0.75, noise=0.0,
                     momentum=0.9, nesterov=True, inner_momentum=0.6,
                     inner_nesterov=inner_nesterov, inner_momentum_on="step", weight_decay=0.01)
    opt.step(quad_closure(w, Q, p))
    x, y, z, buf = w0.clone(), w0.clone(), w0.clone(), torch.zeros(3, dtype=torch.float64)
    for _ in range(2):
        dy = Q @ y + p + (y - x) / 0.5 + 0.01 * y
        buf = 0.6 * buf + dy
        y = y - 0.1 * (dy + 0.6 * buf if inner_nesterov else buf)
        z = 0.75 * z + 0.25 * y
    G = x - z                                # normalize: x − z; outer Nesterov from a zero buffer
    torch.testing.assert_close(w.detach(), x - 0.7 * (G + 0.9 * G), rtol=0, atol=1e-15)


@pytest.mark.parametrize("name, key, value", [
    *((name, key, value) for name in ("entropy_sgd", "entropy_adam", "parle")
      for key, value in (("inner_lr", -0.1), ("noise", -1e-4), ("inner_lr", math.nan))),
    ("hj", "inner_lr", -0.1)])      # HJ refuses a group's noise itself
def test_a_groups_own_inner_rate_or_noise_below_zero_is_named_before_the_closure(
        name, key, value):
    # add_param_group takes a group's own inner_lr or noise unchecked, as torch does; with
    # noise on, √(2 η_y T) was a bare "math domain error" at the first inner step (NaN
    # noise for a NaN)
    first, later = (nn.Parameter(torch.ones(2, dtype=torch.float64)) for _ in range(2))
    opt = build_optimizer(name, [first], lr=0.1, L=2, **({} if name == "hj" else
                                                          {"noise": 1e-4}))
    group = {"params": [later], key: value}
    if name != "hj" and key == "inner_lr":
        group["noise"] = 1e-4
    opt.add_param_group(group)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = (first ** 2).sum() + (later ** 2).sum()
        loss.backward()
        return loss

    with pytest.raises(ValueError, match=f"{key} must be a finite number >= 0 .*parameter group"):
        opt.step(closure)
    assert not calls
    for p in (first, later):
        assert torch.equal(p.detach(), torch.ones(2, dtype=torch.float64))
