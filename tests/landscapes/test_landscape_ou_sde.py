"""Quadratic/OU landscape (Jastrzebski eq. 6-7) and the SDE lab (Euler–Maruyama, SGD-SDE)."""
import math

import numpy as np
import pytest
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes.quadratic import Quadratic
from sgdlab.landscapes.sde import (
    SDE, EulerMaruyama, LeimkuhlerMatthews, brownian_increments, coarsen, path_mean_se,
    sgd_chains, sgd_sde, simulate,
)

f64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


H3 = torch.diag(torch.tensor([1.0, 0.5, 0.25], dtype=f64))


def test_quadratic_structure_exact():
    q = Quadratic(H3 + 0.1, num_samples=40, seed=1)
    th = torch.randn(5, 3, dtype=f64)
    assert torch.allclose(q.gradient_covariance(th[:1])[0], q.C, atol=1e-12)  # C = H exactly
    auto = torch.func.vmap(torch.func.grad(lambda t: q.per_sample_loss(t).mean()))(th)
    assert torch.allclose(q.grad(th), auto, atol=1e-12)
    assert torch.allclose(q.loss(th), q.per_sample_loss(th).mean(-1), atol=1e-12)
    idx = torch.randint(40, (5, 3))
    auto_b = torch.stack([torch.func.grad(lambda t: q.per_sample_loss(t)[i].mean())(x)
                          for x, i in zip(th, idx)])
    assert torch.allclose(q.grad(th, idx), auto_b, atol=1e-12)
    # closed forms: the OU limit is (η/2S) I and (η/4S) Tr H for C = H
    assert torch.allclose(q.sde_stationary_covariance(0.1, 2), 0.025 * torch.eye(3, dtype=f64))
    assert q.stationary_excess_loss(0.1, 2) == pytest.approx(0.1 / 8 * float(torch.trace(q.H)))


def test_quadratic_takes_a_rank_deficient_noise_covariance():
    # Σ of a real network is low-rank (Zhu et al. §3): C = v vᵀ is PSD and accepted, but
    # H⁻¹CH⁻¹ then has a zero eigenvalue that eigh returns as −5e−18, whose square root was NaN
    h = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=f64)
    v = torch.tensor([0.3, 0.7], dtype=f64)
    q = Quadratic(h, num_samples=20, noise_cov=torch.outer(v, v), seed=1)
    assert torch.isfinite(q.samples).all()
    theta = torch.tensor([[0.2, -0.4]], dtype=f64)
    torch.testing.assert_close(q.gradient_covariance(theta)[0], torch.outer(v, v),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(q.grad(theta), (theta - q.minimum) @ h)


def _stationary_sgd_stats(q, lr, batch, chains, gen):
    """SGD chains started from the exact discrete stationary law, sampled at unit times."""
    cov = q.sgd_stationary_covariance(lr, batch)
    th0 = torch.randn(chains, 3, generator=gen, dtype=f64) @ torch.linalg.cholesky(cov).T
    steps = int(round(8 / lr))
    path = sgd_chains(q, th0, lr=lr, batch_size=batch, steps=steps, generator=gen,
                      record_every=int(round(2 / lr)))
    # (5, chains, 3), 2 time units apart: the slowest mode's z² still correlates by e^{−1}
    # there, so the s.e. comes from per-chain averages (std / √(5·chains) was 4–5% small)
    states = path.states
    mean, se = path_mean_se(q.loss(states) - q.min_loss)
    return states, mean, se


def test_ou_stationary_moments_and_eta_over_s_scaling():
    q = Quadratic(H3, num_samples=50, seed=0)
    gen = torch.Generator().manual_seed(0)
    res = {}
    for lr, s in ((0.05, 1), (0.1, 2), (0.1, 1)):
        states, mean, se = _stationary_sgd_stats(q, lr, s, 3000, gen)
        res[(lr, s)] = float(mean)
        # eq. 7: E[L] − L* = (η/4S) Tr H, up to the discrete O(η) correction and sampling error
        exact = q.stationary_excess_loss(lr, s, discrete=True)
        assert abs(mean - exact) < 4 * se
        assert exact == pytest.approx(lr / (4 * s) * float(torch.trace(q.H)), rel=0.07)
        # after eq. 6: cov(θ) = (η/2S) I (the discrete chain's O(η) correction is resolved too)
        emp = torch.cov(states.reshape(-1, 3).T, correction=0)
        assert torch.allclose(emp, q.sgd_stationary_covariance(lr, s), atol=0.1 * lr / (2 * s))
        assert torch.allclose(emp, lr / (2 * s) * torch.eye(3, dtype=f64), atol=0.15 * lr / (2 * s))
    # equal η/S agree, different η/S differ (here by a factor 2)
    assert res[(0.05, 1)] == pytest.approx(res[(0.1, 2)], rel=0.08)
    assert res[(0.1, 1)] / res[(0.05, 1)] == pytest.approx(2.0, rel=0.1)


def _slope(hs, errs):
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def test_euler_maruyama_weak_order_one_on_ou():
    a, s, T, x0 = 2.0, 1.0, 1.0, 1.0
    sde = SDE.langevin(lambda x: a * x, 1, beta=2.0 / s ** 2)  # dX = −aX dt + s dB
    exact = math.exp(-2 * a * T) * x0 ** 2 + s ** 2 * (1 - math.exp(-2 * a * T)) / (2 * a)
    gen = torch.Generator().manual_seed(1)
    chains, hs, errs = 200_000, [0.2, 0.1, 0.05], []
    fine = brownian_increments((chains, 1), hs[-1], int(T / hs[-1]), generator=gen)
    for h in hs:
        dw = coarsen(fine, int(round(h / hs[-1])))  # same Brownian paths for every h
        x = simulate(sde, torch.full((chains, 1), x0, dtype=f64), dt=h, steps=int(T / h),
                     increments=dw).final
        errs.append(abs(float((x ** 2).mean()) - exact))
    assert EulerMaruyama.weak_order == 1.0
    assert 0.8 < _slope(hs, errs) < 1.25, errs


def test_stationary_variance_euler_maruyama_vs_leimkuhler_matthews():
    # OU dX = −X dt + √2 dB: exact stationary variance 1; EM gives 1/(1 − h/2), LM is exact
    sde = SDE.langevin(lambda x: x, 1)
    h, chains = 0.4, 100_000
    gen = torch.Generator().manual_seed(7)
    x0 = torch.zeros(chains, 1, dtype=f64)
    em = simulate(sde, x0, dt=h, steps=60, generator=gen).final
    lm = simulate(sde, x0, dt=h, steps=60, generator=gen, integrator=LeimkuhlerMatthews()).final
    assert float(em.var()) == pytest.approx(1 / (1 - h / 2), rel=0.02)
    assert float(lm.var()) == pytest.approx(1.0, rel=0.02)
    assert LeimkuhlerMatthews.stationary_order == 2.0
    with pytest.raises(UserError):  # needs additive noise
        simulate(SDE.langevin(lambda x: x, 1, diffusion=lambda x: (1 + x ** 2)[..., None]),
                 x0[:4], dt=h, steps=2, integrator=LeimkuhlerMatthews())


def test_sgd_is_weak_order_one_approximation_of_its_sde():
    q = Quadratic(torch.tensor([[1.0]], dtype=f64), num_samples=50, seed=2)
    T, x0, chains = 1.0, 1.0, 200_000
    gen = torch.Generator().manual_seed(3)
    lrs, errs = [0.1, 0.05, 0.025], []
    for lr in lrs:
        path = sgd_chains(q, torch.full((chains, 1), x0, dtype=f64), lr=lr, batch_size=1,
                          steps=int(round(T / lr)), generator=gen)
        # the SGD-SDE here is OU: dX = −X dt + √η dB, with E X_T² in closed form
        sde_m2 = math.exp(-2 * T) * x0 ** 2 + lr * (1 - math.exp(-2 * T)) / 2
        errs.append(abs(float((path.final ** 2).mean()) - sde_m2))
    assert 0.7 < _slope(lrs, errs) < 1.3, errs


def test_sgd_sde_diffusion_is_eta_sigma_over_s():
    q = Quadratic(H3 + 0.05, num_samples=30, seed=4)
    sde = sgd_sde(q, lr=0.2, batch_size=4)
    x = torch.randn(6, 3, dtype=f64)
    g = sde.factor(x)
    assert g.shape == (6, 3, 30)
    assert torch.allclose(g @ g.transpose(-1, -2), 0.05 * q.gradient_covariance(x), atol=1e-12)
    assert torch.allclose(sde.drift(x), -q.grad(x))


def test_state_dependent_diffusion_is_ito():
    # dX = X dB (geometric BM, Itô): E X_T = X_0 exactly for Itô, e^{T/2} X_0 for Stratonovich
    sde = SDE.langevin(lambda x: torch.zeros_like(x), 1, beta=2.0,
                       diffusion=lambda x: (x ** 2)[..., None])
    gen = torch.Generator().manual_seed(4)
    x = simulate(sde, torch.ones(100_000, 1, dtype=f64), dt=0.05, steps=20,
                 generator=gen).final
    assert float(x.mean()) == pytest.approx(1.0, abs=0.015)


def test_bad_input():
    with pytest.raises(UserError):
        Quadratic(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=f64))
    with pytest.raises(UserError):
        Quadratic(-torch.eye(2, dtype=f64))
    with pytest.raises(UserError):
        Quadratic(torch.eye(2, dtype=f64)).sgd_stationary_covariance(2.5, 1)
    with pytest.raises(UserError):
        SDE.langevin(lambda x: x, 2, beta=0.0)


@pytest.mark.parametrize("integrator", [EulerMaruyama, LeimkuhlerMatthews])
def test_scalar_noise_without_a_factor_is_the_factor_c_identity(integrator):
    """SDE(drift, None, d, d, scalar_noise=c) is dX = drift dt + c dB: the same path as
    Langevin's √2 I on the same increments. Euler–Maruyama added c·ΔB of width 0 (no factor,
    no noise drawn), broadcasting the chains to shape (chains, 0); Leimkuhler–Matthews ran
    the ODE."""
    own = SDE(lambda x: -x, None, 2, 2, scalar_noise=math.sqrt(2))
    ref = SDE.langevin(lambda x: x, 2)
    x0 = torch.zeros(5, 2, dtype=f64)
    a, b = (simulate(sde, x0, dt=0.1, steps=4, integrator=integrator(),
                     generator=torch.Generator().manual_seed(3)).final for sde in (own, ref))
    assert a.shape == (5, 2) and own.additive
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(own.factor(x0)[0], math.sqrt(2) * torch.eye(2, dtype=f64),
                               rtol=0, atol=1e-15)
    with pytest.raises(UserError, match=r"noise_dim must be dim = 2, got 3"):
        SDE(lambda x: -x, None, 2, 3, scalar_noise=1.0)
    with pytest.raises(UserError, match=r"scalar_noise must be a finite number >= 0, got -1"):
        SDE(lambda x: -x, None, 2, 2, scalar_noise=-1.0)


def test_leimkuhler_matthews_without_noise_is_euler():
    """An SDE without noise (an ODE): no lookahead increment to draw, Euler's explicit steps."""
    ode = SDE(lambda x: -x * x, None, 1, 0)
    x0 = torch.tensor([[1.0], [0.5]], dtype=f64)
    path = simulate(ode, x0, dt=0.1, steps=3, integrator=LeimkuhlerMatthews())
    x = x0.clone()
    for _ in range(3):
        x = x - 0.1 * x * x
    torch.testing.assert_close(path.final, x, rtol=0, atol=0)


def test_simulate_records_what_observe_returns_at_each_record():
    """dX = −X dt by Euler steps is X₀ (1 − dt)ⁿ; observe = |X|² is recorded (S, chains) at
    steps 0, 2, 4: |X₀|² (1 − dt)²ⁿ, and the final state stays the state."""
    ode = SDE(lambda x: -x, None, 2, 0)
    x0 = torch.tensor([[3.0, 4.0], [1.0, -2.0]], dtype=f64)
    path = simulate(ode, x0, dt=0.1, steps=4, record_every=2,
                    observe=lambda x: (x * x).sum(-1))
    want = torch.tensor([[25.0, 5.0]], dtype=f64) * torch.tensor(
        [[1.0], [0.9 ** 4], [0.9 ** 8]], dtype=f64)
    assert path.times == pytest.approx([0.0, 0.2, 0.4], rel=1e-15)
    torch.testing.assert_close(path.states, want, rtol=1e-14, atol=0)
    torch.testing.assert_close(path.final, x0 * 0.9 ** 4, rtol=1e-14, atol=0)


def test_sgd_chains_records_the_state_after_k_steps_at_sde_time_k_lr():
    """A full batch drawn without replacement is the full gradient (the samples are centred),
    so each chain is GD, θ_k = θ* + (I − ηH)^k (θ₀ − θ*), recorded at steps 0, 2, 4 with times
    t = k η: 0, 0.2, 0.4 (the state after k steps at t = kη, not (k − 1)η)."""
    q = Quadratic(H3, num_samples=4, minimum=torch.tensor([0.5, -1.0, 2.0], dtype=f64), seed=3)
    th0 = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]], dtype=f64)
    path = sgd_chains(q, th0, lr=0.1, batch_size=4, steps=4, replacement=False,
                      generator=torch.Generator().manual_seed(0), record_every=2)
    assert path.times == pytest.approx([0.0, 0.2, 0.4], rel=1e-15)
    contraction = 1 - 0.1 * torch.diagonal(H3)
    want = torch.stack([q.minimum + contraction ** k * (th0 - q.minimum) for k in (0, 2, 4)])
    torch.testing.assert_close(path.states, want, rtol=0, atol=1e-14)
    torch.testing.assert_close(path.final, want[-1], rtol=0, atol=1e-14)


def test_langevin_adds_the_extra_drift_to_minus_the_gradient():
    """dX = (−∇f + j) dt + ...: at x = (1, 2), ∇f = 2x and j = (−x₂, x₁) give the drift
    (−2 − 2, −4 + 1) = (−4, −3) (a rotation reversed by a sign leaves the steady state alone)."""
    sde = SDE.langevin(lambda x: 2 * x, 2,
                       extra_drift=lambda x: torch.stack([-x[..., 1], x[..., 0]], -1))
    x = torch.tensor([[1.0, 2.0]], dtype=f64)
    torch.testing.assert_close(sde.drift(x), torch.tensor([[-4.0, -3.0]], dtype=f64),
                               rtol=0, atol=0)


def test_scalar_diffusion_factor_is_exact_in_float64():
    sde = SDE.langevin(lambda x: x, 3, diffusion=0.7)
    g = sde.factor(torch.zeros(2, 3, dtype=f64))
    assert g.dtype == f64
    torch.testing.assert_close(g[0], math.sqrt(1.4) * torch.eye(3, dtype=f64), rtol=0,
                               atol=1e-15)


@pytest.mark.parametrize("diffusion", [torch.tensor([0.5, 2.0, 0.3]),
                                       torch.tensor([[0.5, 0.1, 0.0], [0.1, 2.0, 0.2],
                                                     [0.0, 0.2, 0.3]])], ids=["diag", "dense"])
def test_float32_diffusion_tensor_factor_is_exact_in_float64(diffusion):
    # torch.tensor([...]) is float32: its root taken in float32 put ~1e-7 errors into G Gᵀ
    sde = SDE.langevin(lambda x: x, 3, diffusion=diffusion)
    g = sde.factor(torch.zeros(2, 3, dtype=f64))[0]
    d = diffusion.double()
    d = torch.diag(d) if d.ndim == 1 else d
    assert g.dtype == f64
    torch.testing.assert_close(g @ g.T, 2 * d, rtol=0, atol=1e-14)


@pytest.mark.parametrize("integrator", [EulerMaruyama(), LeimkuhlerMatthews()],
                         ids=["em", "lm"])
@pytest.mark.parametrize("seeded", [False, True])
def test_simulate_draws_the_increments_on_the_chains_device(integrator, seeded):
    # the "meta" device stands in for CUDA: a draw left on the CPU is refused beside it
    gen = torch.Generator().manual_seed(0) if seeded else None
    x0 = torch.zeros(3, 2, dtype=f64, device="meta")
    path = simulate(SDE.langevin(lambda x: x, 2), x0, dt=0.1, steps=2, integrator=integrator,
                    generator=gen)
    assert path.final.device.type == "meta" and path.final.dtype == f64


@pytest.mark.parametrize("case", ["sgd_sde-em", "ou-em", "ou-lm"])
def test_a_float32_start_of_a_float64_sde_runs_in_float64(case):
    # sgd_sde of a float64 landscape: its factor is float64 whatever x's dtype (a matmul
    # refused float32 increments); OU with a float64 H: the first increment was float32
    if case.startswith("sgd_sde"):
        sde = sgd_sde(Quadratic(H3, num_samples=10), lr=0.1, batch_size=2)
    else:
        sde = SDE.langevin(lambda x: x * H3.diagonal(), 3, beta=2.0)
    integrator = LeimkuhlerMatthews() if case.endswith("lm") else EulerMaruyama()
    x0 = torch.tensor([[1.0, -0.5, 0.25], [0.1, 0.2, 0.3]])
    kw = dict(dt=0.1, steps=3, integrator=integrator, record_every=1)
    path = simulate(sde, x0, generator=torch.Generator().manual_seed(0), **kw)
    ref = simulate(sde, x0.double(), generator=torch.Generator().manual_seed(0), **kw)
    assert path.final.dtype == path.states.dtype == f64
    assert torch.equal(path.states, ref.states)


def test_sgd_sde_refuses_a_fractional_batch_size():
    q = Quadratic(torch.eye(2, dtype=f64), num_samples=10)
    with pytest.raises(UserError, match="integer batch_size"):
        sgd_sde(q, lr=0.1, batch_size=1.5)


@pytest.mark.parametrize("diffusion, match", [
    (torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=f64), "positive semi-definite"),
    (torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=f64), "symmetric"),
    (torch.tensor([[float("nan"), 0.0], [0.0, 1.0]], dtype=f64), "non-finite"),
    (torch.tensor([float("inf"), 1.0], dtype=f64), "non-finite"),
    (float("nan"), "finite number"),
    (float("inf"), "finite number"),
], ids=["indefinite", "non-symmetric", "nan-matrix", "inf-diagonal", "nan", "inf"])
def test_langevin_refuses_a_diffusion_it_cannot_simulate(diffusion, match):
    # the square root read the lower triangle only and clipped negative eigenvalues: D = I
    # was simulated for [[1, 2], [0, 1]] and diag(1, 0) for diag(1, −1), without a word
    with pytest.raises(UserError, match=match):
        SDE.langevin(lambda x: x, 2, diffusion=diffusion)


def test_langevin_takes_a_rank_deficient_diffusion_with_round_off():
    v = torch.tensor([0.6, 0.8])
    d = torch.outer(v, v) * 3.0                       # float32, one zero eigenvalue
    sde = SDE.langevin(lambda x: x, 2, diffusion=d)
    g = sde.factor(torch.zeros(1, 2, dtype=f64))[0]
    torch.testing.assert_close(g @ g.T, 2 * d.double(), rtol=0, atol=1e-6)


def test_langevin_refuses_a_nan_beta():
    with pytest.raises(UserError, match="beta"):
        SDE.langevin(lambda x: x, 2, beta=float("nan"))


NAN, INF = float("nan"), float("inf")
_Q2 = Quadratic(torch.eye(2, dtype=f64), num_samples=10)
_OU2 = SDE.langevin(lambda x: x, 2)
_X0 = torch.zeros(3, 2, dtype=f64)


@pytest.mark.parametrize("call, match", [
    (lambda: simulate(_OU2, _X0, dt=NAN, steps=3), "dt"),
    (lambda: simulate(_OU2, _X0, dt=INF, steps=3), "dt"),
    (lambda: simulate(_OU2, _X0 + NAN, dt=0.1, steps=3), "x0 has non-finite"),
    (lambda: simulate(_OU2, torch.tensor(0.0), dt=0.1, steps=3), "x0 must have shape"),
    (lambda: simulate(_OU2, _X0, dt=0.1, steps=2.5), "steps must be an integer"),
    (lambda: simulate(_OU2, _X0, dt=0.1, steps=2, increments=torch.zeros(2, 3, 5, dtype=f64)),
     "increments must have shape"),
    (lambda: sgd_chains(_Q2, _X0, lr=NAN, batch_size=1, steps=3), "lr"),
    (lambda: sgd_chains(_Q2, _X0, lr=INF, batch_size=1, steps=3), "lr"),
    (lambda: sgd_chains(_Q2, _X0 + INF, lr=0.1, batch_size=1, steps=3), "theta0 has non-finite"),
    (lambda: sgd_chains(_Q2, _X0, lr=0.1, batch_size=1, steps=2.5), "steps must be an integer"),
    (lambda: sgd_sde(_Q2, lr=NAN, batch_size=1), "lr"),
    (lambda: sgd_sde(_Q2, lr=0.1, batch_size=NAN), "integer batch_size"),
    (lambda: _Q2.sde_stationary_covariance(0.1, NAN), "batch_size"),
    (lambda: _Q2.sgd_stationary_covariance(INF, 1), "lr"),
    (lambda: Quadratic(torch.tensor([[INF, 0.0], [0.0, 1.0]], dtype=f64)), "non-finite"),
    (lambda: Quadratic(torch.eye(2, dtype=f64), minimum=torch.tensor([NAN, 0.0], dtype=f64)),
     "minimum has non-finite"),
    (lambda: simulate(_OU2, _X0, dt=0.1, steps=4, record_every=-1), "record_every"),
    (lambda: sgd_chains(_Q2, _X0, lr=0.1, batch_size=1, steps=4, record_every=1.5),
     "record_every"),
], ids=["dt-nan", "dt-inf", "x0-nan", "x0-0d", "steps-frac", "increments-shape",
        "sgd-lr-nan", "sgd-lr-inf", "theta0-inf", "sgd-steps-frac", "sde-lr-nan",
        "sde-batch-nan", "sde-cov-batch-nan", "sgd-cov-lr-inf", "hessian-inf", "minimum-nan",
        "record-negative", "record-frac"])
def test_bad_steps_and_states_are_named_errors(call, match):
    # these ran to NaN paths (a NaN/inf step, a NaN start), or failed deep inside with a
    # TypeError / ValueError / RuntimeError (a fractional step count, int(nan), a matmul)
    with pytest.raises(UserError, match=match):
        call()


def test_leimkuhler_matthews_stationary_covariance_under_anisotropic_noise_is_order_one():
    # OU dX = −HX dt + √(2D) dB with Σ not commuting with H: LM's stationary covariance is
    # X = Y + cξ, Y ← AY + (I + A)cξ (A = I − hH, c = √(2D h)/2), off the Lyapunov Σ by O(h)
    import scipy.linalg

    h_mat = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=f64)
    d_mat = torch.tensor([[1.0, 0.0], [0.0, 0.05]], dtype=f64)
    h, chains = 0.2, 100_000
    a = np.eye(2) - h * h_mat.numpy()
    c = np.sqrt(2 * h * d_mat.numpy()) / 2                  # D diagonal: its root entrywise
    lm = scipy.linalg.solve_discrete_lyapunov(a, (np.eye(2) + a) @ c @ c.T @ (np.eye(2) + a).T)
    lm = lm + c @ c.T
    cont = scipy.linalg.solve_continuous_lyapunov(h_mat.numpy(), 2 * d_mat.numpy())
    assert np.abs(lm - cont).max() > 0.02 * np.abs(cont).max()     # not second order here
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(chains, 2, generator=gen, dtype=f64) @ torch.linalg.cholesky(
        torch.from_numpy(cont)).T
    sde = SDE.langevin(lambda x: x @ h_mat, 2, diffusion=d_mat)
    x = simulate(sde, x0, dt=h, steps=60, generator=gen, integrator=LeimkuhlerMatthews()).final
    emp = torch.cov(x.T).numpy()
    se = np.sqrt((np.outer(np.diag(lm), np.diag(lm)) + lm ** 2) / chains)   # Gaussian MC s.e.
    assert np.abs((emp - lm) / se).max() < 4


def _sign_flip(x):   # D(x) = diag(sign(x₁), 1): indefinite where x₁ < 0
    return torch.diag_embed(torch.stack([torch.sign(x[..., 0]), torch.ones_like(x[..., 0])], -1))


@pytest.mark.parametrize("diffusion, match", [
    (_sign_flip, r"not positive semi-definite \(smallest eigenvalue -1.*x = \[-1.0, 0.5\]"),
    (lambda x: torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=f64).expand(*x.shape[:-1], 2, 2),
     r"not symmetric \(max\|D − Dᵀ\| = 2"),
    (lambda x: torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=f64), "not symmetric"),
    (lambda x: torch.where(x[..., :1, None] < 0, float("nan"), 1.0) * torch.eye(2, dtype=f64),
     r"non-finite entries at x = \[-1.0, 0.5\] \(chain \[1\]\)"),
    (lambda x: 1e-9 * torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=f64), "not symmetric"),
    (lambda x: torch.ones(*x.shape[:-1], 2, 3, dtype=f64), r"must return \(\.\.\., 2, 2\)"),
], ids=["indefinite-at-one-state", "non-symmetric", "non-symmetric-unbatched", "nan-at-one-state",
        "non-symmetric-tiny-scale", "wrong-shape"])
def test_a_state_dependent_diffusion_is_checked_at_every_state(diffusion, match):
    # unchecked, the root read the lower triangle (D = I simulated for [[1, 2], [0, 1]]),
    # clipped negative eigenvalues (diag(0, 1) for diag(−1, 1)) and gave NaN chains for NaN D
    sde = SDE.langevin(lambda x: x, 2, diffusion=diffusion)
    x0 = torch.tensor([[1.0, 0.5], [-1.0, 0.5]], dtype=f64)
    with pytest.raises(UserError, match=match):
        simulate(sde, x0, dt=0.1, steps=2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("scale", [1e-12, 1.0, 1e8])
@pytest.mark.parametrize("dtype", [torch.float32, f64], ids=["f32", "f64"])
def test_a_rank_deficient_state_dependent_diffusion_passes_at_any_scale(scale, dtype):
    # D(x) = s v vᵀ: one zero eigenvalue that round-off makes ±1e−16 s (relative tolerance);
    # a float32 D beside float64 chains failed in the integrator's matmul
    def diffusion(x):
        v = torch.stack([x[..., 0].cos(), x[..., 0].sin(), x[..., 1]], -1).to(dtype)
        return scale * v[..., :, None] * v[..., None, :]
    sde = SDE.langevin(lambda x: x, 3, diffusion=diffusion, beta=2.0)
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(1), dtype=f64)
    g = sde.factor(x)
    assert g.dtype == f64
    want = diffusion(x).double()                      # G Gᵀ = 2β⁻¹ D = D at β = 2
    tol = (1e-6 if dtype == torch.float32 else 1e-13) * scale * float(want.abs().max() / scale)
    torch.testing.assert_close(g @ g.transpose(-1, -2), want, rtol=0, atol=tol)
    assert torch.isfinite(simulate(sde, x, dt=0.01, steps=3).final).all()


def test_quadratic_psd_checks_are_relative_to_the_matrix_scale():
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0),
                                       dtype=f64))
    # C = 10⁶-scale rank 2: eigvalsh returns −1.4e−10 for its zero eigenvalue, under the old
    # absolute −1e−12 floor, and C was refused
    c_big = q @ torch.diag(torch.tensor([3e6, 1e6, 0.0], dtype=f64)) @ q.T
    assert float(torch.linalg.eigvalsh(c_big).min()) < -1e-12
    quad = Quadratic(torch.eye(3, dtype=f64), num_samples=20, noise_cov=c_big)
    torch.testing.assert_close(quad.gradient_covariance(torch.zeros(1, 3, dtype=f64))[0], c_big,
                               rtol=0, atol=1e-12 * 3e6)
    # an indefinite C or a non-symmetric H / C of scale 1e−9..1e−13 passed the absolute checks
    with pytest.raises(UserError, match="noise_cov must be positive semi-definite"):
        Quadratic(torch.eye(3, dtype=f64), noise_cov=1e-13 * torch.diag(
            torch.tensor([1.0, -1.0, 1.0], dtype=f64)))
    tiny = 1e-9 * torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=f64)
    with pytest.raises(UserError, match="hessian must be symmetric"):
        Quadratic(tiny)
    with pytest.raises(UserError, match="noise_cov must be symmetric"):
        Quadratic(torch.eye(2, dtype=f64), noise_cov=tiny)
    # H numerically singular at its scale (λ 10⁶, 10⁶, 10⁻⁹: below 64 d eps λ_max) is refused
    with pytest.raises(UserError, match="hessian must be positive definite"):
        Quadratic(q @ torch.diag(torch.tensor([1e6, 1e6, 1e-9], dtype=f64)) @ q.T)
    # a well-conditioned H of scale 10⁶ or 10⁻⁶ is taken, with C = H exact relative to scale
    for s in (1e6, 1e-6):
        h = s * (H3 + 0.1)
        quad = Quadratic(h, num_samples=20)
        torch.testing.assert_close(quad.gradient_covariance(torch.zeros(1, 3, dtype=f64))[0],
                                   h, rtol=0, atol=1e-12 * s)


def test_path_mean_se_of_three_chains_by_hand():
    """Chain averages 2, 3, 5.5: mean 3.5, s.e. std(avg) / √C with Bessel's std, √(3.25 / 3)."""
    values = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 8.0]], dtype=f64)
    mean, se = path_mean_se(values)
    assert mean == pytest.approx(3.5, rel=1e-15)
    assert se == pytest.approx(math.sqrt(3.25 / 3), rel=1e-15)


def test_path_mean_se_is_the_standard_error_of_correlated_records():
    # exact stationary OU x (λ = 1, unit variance) recorded every τ = 0.1: corr(x_j², x_k²) =
    # e^{−2τ|j−k|}, Var x² = 2, so Var(mean of S records) = (2/S²) Σ_jk e^{−2τ|j−k|} exactly
    tau, records, chains = 0.1, 20, 8000
    rho = math.exp(-tau)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(chains, generator=gen, dtype=f64)
    rows = [x]
    for _ in range(records - 1):
        x = rho * x + math.sqrt(1 - rho ** 2) * torch.randn(chains, generator=gen, dtype=f64)
        rows.append(x)
    values = torch.stack(rows) ** 2                                   # (S, C), E = 1
    lag = torch.arange(records, dtype=f64)
    corr = torch.exp(-2 * tau * (lag[:, None] - lag[None, :]).abs())
    exact_se = math.sqrt(2 * float(corr.sum()) / records ** 2 / chains)
    mean, se = path_mean_se(values)
    assert se == pytest.approx(exact_se, rel=0.05)       # std of a std: ~1/√(2C) = 0.8%
    assert abs(mean - 1.0) < 4 * exact_se
    naive = float(values.std() / math.sqrt(values.numel()))
    assert naive < 0.5 * exact_se                        # records as if independent: too small
    with pytest.raises(UserError, match="records, chains"):
        path_mean_se(values[:, :1])


@pytest.mark.parametrize("make_sde", [
    lambda: SDE.langevin(lambda x: x, 2, diffusion=torch.tensor([[1.0, 0.3], [0.3, 0.5]],
                                                                dtype=f64)),
    lambda: sgd_sde(Quadratic(torch.diag(torch.tensor([1.0, 0.5], dtype=f64)), num_samples=5),
                    lr=0.1, batch_size=2),
])
def test_given_increments_of_another_dtype_drive_the_chains_in_theirs(make_sde):
    # torch.randn's float32 increments beside float64 chains failed in the factor's matmul
    sde = make_sde()
    x0 = torch.full((3, 2), 0.5, dtype=f64)
    dw = brownian_increments((3, sde.noise_dim), 0.1, 4, generator=torch.Generator().manual_seed(0))
    want = simulate(sde, x0, dt=0.1, steps=4, increments=dw.float().double()).final
    got = simulate(sde, x0, dt=0.1, steps=4, increments=dw.float()).final
    assert got.dtype == f64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    with pytest.raises(UserError, match="increments must be a floating-point torch.Tensor"):
        simulate(sde, x0, dt=0.1, steps=4, increments=dw.tolist())


@pytest.mark.parametrize("sde, match", [
    # a drift summed over the coordinates: (C,) against (C, d) broadcast or failed in the step
    (SDE(lambda x: -x.sum(-1), None, 2, 2), r"drift\(x\) must return shape \(4, 2\)"),
    (SDE(lambda x: -x, lambda x: torch.ones(*x.shape[:-1], 2, 3, dtype=x.dtype), 2, 2),
     r"factor\(x\) must return shape \(\.\.\., 2, 2\)"),
])
def test_a_drift_or_factor_of_the_wrong_shape_is_named(sde, match):
    with pytest.raises(UserError, match=match):
        simulate(sde, torch.zeros(4, 2), dt=0.1, steps=2)


def test_a_drift_of_the_chains_shape_by_broadcasting_is_refused():
    # C = d chains: a drift of shape (d,) (one per chain, summed over coordinates) broadcast
    # against (C, d) and ran on as a silently different SDE
    sde = SDE(lambda x: -(x ** 2).sum(-1), None, 2, 2)
    with pytest.raises(UserError, match=r"drift\(x\) must return shape \(2, 2\)"):
        simulate(sde, torch.ones(2, 2), dt=0.1, steps=2)


def test_a_constant_factor_without_chain_dimensions_still_broadcasts():
    g = torch.tensor([[1.0, 0.0, 0.5], [0.0, 2.0, 0.0]], dtype=f64)
    sde = SDE(lambda x: -x, lambda x: g, 2, 3, additive=True)
    dw = brownian_increments((4, 3), 0.1, 2, generator=torch.Generator().manual_seed(0))
    x = simulate(sde, torch.zeros(4, 2, dtype=f64), dt=0.1, steps=1, increments=dw[:1]).final
    torch.testing.assert_close(x, dw[0] @ g.T)


@pytest.mark.parametrize("call, match", [
    (lambda: coarsen(torch.zeros(6, 2), 0), "factor must be an integer >= 1"),
    (lambda: coarsen(torch.zeros(6, 2), -2), "factor must be an integer >= 1"),
    (lambda: coarsen(torch.zeros(6, 2), 1.5), "factor must be an integer >= 1"),
    (lambda: brownian_increments((2,), -0.1, 3), "dt must be a finite number > 0"),
    (lambda: brownian_increments((2,), 0.1, -3), "steps must be an integer >= 0"),
    (lambda: SDE(lambda x: -x, None, 0, 0), "dim must be an integer >= 1"),
    (lambda: SDE(lambda x: -x, None, 2.5, 2), "dim must be an integer >= 1"),
    (lambda: SDE(lambda x: -x, None, 2, -1), "noise_dim must be an integer >= 0"),
    (lambda: sgd_chains(Quadratic(H3, num_samples=10), torch.zeros(2, 3, dtype=f64), lr=0.1,
                        batch_size=2.5, steps=2), "batch_size must be an integer >= 1"),
    (lambda: Quadratic(H3, num_samples=10.5), "num_samples must be an integer"),
])
def test_fractional_counts_and_bad_sizes_are_named_errors(call, match):
    with pytest.raises(UserError, match=match):
        call()


def test_whole_float_counts_are_taken():
    q = Quadratic(H3, num_samples=10.0)
    assert q.num_samples == 10 and isinstance(q.num_samples, int)
    assert q.sample_batches((2,), 3.0).shape == (2, 3)
    assert coarsen(torch.ones(6, 2), 3.0).shape == (2, 2)


@pytest.mark.parametrize("given", [[1.0, 0.5], np.array([[1.0, 0.2], [0.2, 0.5]])],
                         ids=["list-diagonal", "array-matrix"])
def test_langevin_takes_a_diffusion_given_as_a_list_or_array(given):
    # float() of a list or an array was a TypeError
    d = torch.as_tensor(given, dtype=f64)
    d = torch.diag(d) if d.ndim == 1 else d
    sde = SDE.langevin(lambda x: x, 2, diffusion=given)
    g = sde.factor(torch.zeros(1, 2, dtype=f64))[0]
    torch.testing.assert_close(g @ g.T, 2 * d)
    with pytest.raises(UserError, match="diffusion must be None, a number"):
        SDE.langevin(lambda x: x, 2, diffusion="isotropic")


def test_euler_maruyama_strong_orders_half_and_one_for_additive_noise():
    # the stated strong orders, on common Brownian paths: geometric BM (X_T exact from B_T)
    # and a nonlinear drift with additive noise (reference: EM at a step 2⁻¹⁰)
    gen = torch.Generator().manual_seed(0)
    chains, fine_h = 4000, 2.0 ** -10
    fine = brownian_increments((chains, 1), fine_h, 2 ** 10, generator=gen)
    hs = [2.0 ** -k for k in (3, 4, 5, 6)]
    x0 = torch.ones(chains, 1, dtype=f64)

    def errors(sde, ref):
        return [float((simulate(sde, x0, dt=h, steps=round(1 / h),
                                increments=coarsen(fine, round(h / fine_h))).final - ref)
                      .abs().mean()) for h in hs]

    mu, s = 0.5, 1.0
    gbm = SDE(lambda x: mu * x, lambda x: s * x[..., None], 1, 1)
    exact = torch.exp((mu - s * s / 2) + s * fine.sum(0))
    additive = SDE(lambda x: -torch.sin(3 * x), None, 1, 1, scalar_noise=1.0)
    ref = simulate(additive, x0, dt=fine_h, steps=2 ** 10, increments=fine).final
    em = EulerMaruyama()
    assert em.strong_order_for(gbm) == 0.5 and em.strong_order_for(additive) == 1.0
    assert 0.35 < _slope(hs, errors(gbm, exact)) < 0.65
    assert 0.85 < _slope(hs, errors(additive, ref)) < 1.2


def test_quadratic_needs_more_samples_than_dimensions():
    """N centred samples span N − 1 dimensions: N = d cannot be whitened (its empirical
    covariance is singular), so it is refused like N < d."""
    with pytest.raises(UserError, match="num_samples must exceed the dimension 2"):
        Quadratic(torch.eye(2, dtype=f64), num_samples=2)
    assert Quadratic(torch.eye(2, dtype=f64), num_samples=3).num_samples == 3


def test_sgd_stationary_covariance_refuses_the_marginal_step():
    """H = diag(1, 1/2), η = 2: I − ηH = diag(−1, 0) has |eigenvalue| = 1 exactly, the
    chain does not settle along the first axis and the discrete Lyapunov equation has no
    solution; just below, η = 1.9, var₁ = η/(S(2 − η)) = 19 (S = 1)."""
    q = Quadratic(torch.diag(torch.tensor([1.0, 0.5], dtype=f64)), num_samples=10)
    with pytest.raises(UserError, match="unstable at lr=2.0"):
        q.sgd_stationary_covariance(2.0, 1)
    assert float(q.sgd_stationary_covariance(1.9, 1)[0, 0]) == pytest.approx(19, rel=1e-10)


def test_quadratic_potential_with_isotropic_noise_is_the_hessian():
    """C = I: Lemma 6.44 with F = H, D = I gives Q = 0 and U = H, so the OU limit's Σ solving
    HΣ + ΣH = (η/S) I is β⁻¹ U⁻¹ = (η/2S) H⁻¹ (β⁻¹ = η/2S, eq. 6.6)."""
    h = torch.diag(torch.tensor([2.0, 0.5], dtype=f64))
    q = Quadratic(h, num_samples=10, noise_cov=torch.eye(2, dtype=f64))
    pot = q.potential()
    torch.testing.assert_close(pot.U, h, atol=1e-12, rtol=0)
    torch.testing.assert_close(pot.Q, torch.zeros(2, 2, dtype=f64), atol=1e-12, rtol=0)
    cov = q.sde_stationary_covariance(0.1, 4)
    torch.testing.assert_close(cov, 0.1 / 8 * torch.diag(torch.tensor([0.5, 2.0], dtype=f64)),
                               atol=1e-14, rtol=0)


def test_a_seed_for_a_generator_and_a_nan_start_time_are_named():
    """generator=0 failed with "'int' object has no attribute 'device'" (simulate) or inside
    randint (sgd_chains); t0 = NaN made every recorded time NaN."""
    q = Quadratic(torch.eye(2, dtype=f64), num_samples=5)
    sde = SDE.langevin(q.grad, 2)
    x0 = torch.zeros(3, 2, dtype=f64)
    with pytest.raises(UserError, match="generator must be a torch.Generator"):
        simulate(sde, x0, dt=0.1, steps=2, generator=0)
    with pytest.raises(UserError, match="generator must be a torch.Generator"):
        sgd_chains(q, x0, lr=0.1, batch_size=1, steps=2, generator=0)
    with pytest.raises(UserError, match="t0 must be a finite number"):
        simulate(sde, x0, dt=0.1, steps=2, record_every=1, t0=float("nan"))
    path = simulate(sde, x0, dt=0.25, steps=2, record_every=1, t0=1)
    assert path.times == [1.0, 1.25, 1.5]


def test_langevin_beta_must_be_a_positive_number_and_observe_a_tensor():
    """beta="2" failed with a TypeError about '>'; an observe returning a float failed in
    torch.stack after the whole simulation."""
    for beta in ("2", True, None, float("nan"), 0.0):
        with pytest.raises(UserError, match="beta must be a number > 0"):
            SDE.langevin(lambda x: x, 2, beta=beta)
    sde = SDE.langevin(lambda x: x, 2, beta=np.float32(2.0))
    assert sde.scalar_noise == pytest.approx(1.0)               # √(2/β)
    with pytest.raises(UserError, match="observe.state. must return a torch.Tensor"):
        simulate(sde, torch.zeros(3, 2, dtype=f64), dt=0.1, steps=2, record_every=1,
                 observe=lambda s: float(s.sum()))


@pytest.mark.parametrize("replacement", [True, False])
def test_stationary_covariances_of_batches_drawn_without_replacement(replacement):
    """H = C = diag(λ): per direction the chain's variance is η c / (2 − ηλ) and the OU
    limit's η c / 2, c = 1/S with replacement and (N − S)/(S (N − 1)) without (thesis eqs.
    6.4-6.5), the factor sgd_chains and sgd_sde use; only c = 1/S was offered."""
    lam = torch.tensor([1.0, 0.25], dtype=f64)
    q = Quadratic(torch.diag(lam), num_samples=10)
    lr, s, n = 0.2, 4, 10
    c = 1 / s if replacement else (n - s) / (s * (n - 1))
    disc = q.sgd_stationary_covariance(lr, s, replacement=replacement)
    torch.testing.assert_close(disc, torch.diag(lr * c / (2 - lr * lam)), rtol=1e-12, atol=0)
    ou = q.sde_stationary_covariance(lr, s, replacement=replacement)
    torch.testing.assert_close(ou, torch.eye(2, dtype=f64) * lr * c / 2, rtol=1e-12, atol=0)
    assert q.stationary_excess_loss(lr, s, replacement=replacement) == pytest.approx(
        lr * c / 4 * float(lam.sum()), rel=1e-12)
    if not replacement:
        with pytest.raises(UserError, match="exceeds the 10 samples"):
            q.sgd_stationary_covariance(lr, 11, replacement=False)


def test_replacement_must_be_a_flag():
    """replacement="no" is truthy: SGD drew with replacement, the opposite of what it says."""
    q = Quadratic(torch.eye(2, dtype=f64), num_samples=5)
    x0 = torch.zeros(3, 2, dtype=f64)
    for call in (lambda: sgd_chains(q, x0, lr=0.1, batch_size=2, steps=1, replacement="no"),
                 lambda: sgd_sde(q, lr=0.1, batch_size=2, replacement="no"),
                 lambda: q.sgd_stationary_covariance(0.1, 2, replacement="no")):
        with pytest.raises(UserError, match="replacement must be True or False, got 'no'"):
            call()
    assert sgd_chains(q, x0, lr=0.1, batch_size=2, steps=1, replacement=np.False_).final.shape \
        == (3, 2)
