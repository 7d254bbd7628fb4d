"""Thesis Example 6.43: non-equilibrium double well keeps e^{−Φ} as steady state."""
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes.double_well import DoubleWell, noiseless_orbits, winding_rate
from sgdlab.landscapes.sde import simulate

f64 = torch.float64
E1, E2 = np.linspace(-2.2, 2.2, 12), np.linspace(-2.4, 2.4, 9)


pytestmark = pytest.mark.usefixtures("one_thread")


def _chi2(x: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(p-value, total variation) of the 2-D histogram of x against bin probabilities."""
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[E1, E2])
    n = len(x)
    obs = np.append(counts.ravel(), n - counts.sum())
    exp = np.append(probs.ravel(), 1 - probs.sum()) * n
    keep = exp > 5  # chi-square validity: pool sparse bins into one
    if (~keep).any():
        obs = np.append(obs[keep], obs[~keep].sum())
        exp = np.append(exp[keep], exp[~keep].sum())
    return float(scipy.stats.chisquare(obs, exp).pvalue), 0.5 * float(np.abs(obs - exp).sum() / n)


def _final_states(dw: DoubleWell, seed: int) -> torch.Tensor:
    chains = 10_000
    x0 = torch.zeros(chains, 2, dtype=f64)
    x0[:, 0] = torch.where(torch.arange(chains) % 2 == 0, 1.0, -1.0)
    gen = torch.Generator().manual_seed(seed)
    return simulate(dw.sde(), x0, dt=0.02, steps=300, generator=gen).final


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_steady_state_is_exp_minus_phi(lam):
    dw = DoubleWell(lam)
    x = _final_states(dw, seed=int(lam * 10))
    probs = dw.stationary_bin_probabilities(E1, E2)
    pval, tv = _chi2(x.numpy(), probs)
    assert pval > 1e-4 and tv < 0.04, (pval, tv)
    # power: the same histogram rejects the wrong temperature e^{−Φ/2}
    wrong = DoubleWell(lam, beta=0.5).stationary_bin_probabilities(E1, E2)
    assert _chi2(x.numpy(), wrong)[0] < 1e-8
    # mean angular velocity: E_ρ[(x × b)/|x|²] = λ π^{3/2} / Z
    b = dw.drift(x)
    rate = (x[:, 0] * b[:, 1] - x[:, 1] * b[:, 0]) / (x ** 2).sum(-1)
    if lam == 0:
        assert dw.mean_angular_velocity() == 0.0
    else:
        se = float(rate.std()) / math.sqrt(len(rate))
        assert abs(float(rate.mean()) - dw.mean_angular_velocity()) < 5 * se + 0.02 * lam


def test_rotational_force_is_divergence_free_against_the_steady_state():
    dw = DoubleWell(0.7)
    x = torch.randn(50, 2, dtype=f64)

    def flux(y):  # j e^{−Φ} = λ J_ss
        return dw.rotational_force(y) * torch.exp(-dw.potential(y))[..., None]
    jac = torch.func.vmap(torch.func.jacrev(flux))(x)
    assert torch.allclose(jac.diagonal(dim1=-2, dim2=-1).sum(-1), torch.zeros(50, dtype=f64),
                          atol=1e-12)
    one_d = scipy.integrate.quad(lambda t: math.exp(-(t * t - 1) ** 2 / 4), -np.inf, np.inf)[0]
    assert dw.normaliser() == pytest.approx(math.sqrt(2 * math.pi) * one_d, rel=1e-9)


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_rotational_force_itself_breaks_assumption_6_22_and_lemma_6_23_ii(beta):
    """Example 6.43's j = λ e^{βΦ} J_ss keeps ∇·(j e^{−βΦ}) = 0 (above) but is not the
    divergence-free j of Assumption 6.22, nor orthogonal to ∇Φ as Lemma 6.23 (ii) has it:
    ∇·j = β j·∇Φ = βλ e^{βΦ−|x|⁴/4} x₁x₂(2 − x₁²) (docs/FIDELITY.md)."""
    dw = DoubleWell(0.7, beta=beta)
    x = torch.randn(50, 2, dtype=f64, generator=torch.Generator().manual_seed(3))
    jac = torch.func.vmap(torch.func.jacrev(dw.rotational_force))(x)
    div = jac.diagonal(dim1=-2, dim2=-1).sum(-1)
    along = (dw.rotational_force(x) * dw.grad(x)).sum(-1)
    x1, x2 = x[:, 0], x[:, 1]
    by_hand = 0.7 * torch.exp(beta * dw.potential(x) - (x ** 2).sum(-1) ** 2 / 4) \
        * x1 * x2 * (2 - x1 ** 2)
    assert torch.allclose(along, by_hand, rtol=1e-12, atol=1e-14)
    assert torch.allclose(div, beta * by_hand, rtol=1e-12, atol=1e-14)
    assert float(by_hand.abs().max()) > 0.1


@pytest.mark.parametrize("lam,beta", [(0.5, 1.0), (1.5, 2.0)])
def test_drift_angular_rate_has_the_closed_form_mean_under_the_steady_state(lam, beta):
    """E_ρ[(x × b)/|x|²] = λ π^{3/2} / Z for ρ = e^{−βΦ}/Z (module docstring), by 2-D
    quadrature of drift_angular_rate against the density (no sampling): the gradient part
    integrates to zero, the rotational part to λ ∫ e^{−|x|⁴/4} dx / Z."""
    from sgdlab.landscapes.double_well import drift_angular_rate

    dw = DoubleWell(lam, beta=beta)
    t = torch.linspace(-6, 6, 500, dtype=f64)            # even count: the origin is no node
    x = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1)
    dens = torch.exp(-beta * dw.potential(x))
    cell = float(t[1] - t[0]) ** 2
    rate = drift_angular_rate(dw, x)
    b = dw.drift(x)
    torch.testing.assert_close(rate, (x[..., 0] * b[..., 1] - x[..., 1] * b[..., 0])
                               / (x ** 2).sum(-1))
    z = float(dens.sum()) * cell
    assert z == pytest.approx(dw.normaliser(), rel=1e-8)
    assert float((rate * dens).sum()) * cell / z == pytest.approx(
        lam * math.pi ** 1.5 / z, rel=1e-6)
    assert dw.mean_angular_velocity() == pytest.approx(lam * math.pi ** 1.5 / z, rel=1e-6)


def test_angular_velocity_of_a_uniform_rotation():
    """States on circles turning at ω (several turns, both senses): the unwrapped angle change
    over the elapsed time is ω exactly."""
    from sgdlab.landscapes.double_well import angular_velocity

    dt, steps = 0.05, 400
    omega = torch.tensor([1.3, -2.0, 0.0], dtype=f64)
    t = torch.arange(steps + 1, dtype=f64)[:, None] * dt
    phase = omega * t + torch.tensor([0.2, 3.0, -1.0], dtype=f64)
    radius = torch.tensor([0.5, 2.0, 1.0], dtype=f64)
    states = radius[:, None] * torch.stack([phase.cos(), phase.sin()], -1)    # (S, C, 2)
    torch.testing.assert_close(angular_velocity(states, dt), omega, rtol=0, atol=1e-12)
    # (S, C) states, one record (0/0) and a dt <= 0 gave a number, not an error
    for bad in (states[..., 0], states[:1]):
        with pytest.raises(UserError, match=r"states must be a tensor of shape \(records >= 2"):
            angular_velocity(bad, dt)
    for bad_dt in (0.0, -dt):
        with pytest.raises(UserError, match="dt must be a finite number > 0"):
            angular_velocity(states, bad_dt)


def test_resting_points_move_with_lambda():
    z0 = DoubleWell(0.0).drift_zeros()
    z5 = DoubleWell(0.5).drift_zeros()
    assert z0[0] == pytest.approx((1.0, 0.0), abs=1e-10)
    assert z5[0] is not None and abs(z5[0][1]) > 0.1          # moved off the x₁-axis
    assert DoubleWell(0.5).drift(torch.tensor(z5[0], dtype=f64)).norm() < 1e-10


def test_noiseless_flow_rests_moves_or_spirals_with_lambda():
    """λ = 0: rests at (±1, 0); λ = 0.5: rests at the moved zeros of the drift; λ = 1.5 (the
    authors' 'large' value): circulates around the origin while the radius shrinks (the origin
    is a weakly stable focus, |x| ~ t^(-1/2)), so there is no limit cycle."""
    from sgdlab.landscapes.double_well import noiseless_orbits

    starts = [[1.0, 0.1], [-0.5, 0.5], [2.0, -1.0]]
    r0 = noiseless_orbits(DoubleWell(0.0), starts, t_end=60.0)
    assert np.allclose(np.abs(r0["final"][:, 0]), 1, atol=1e-6) and r0["speed_end"].max() < 1e-6
    z = DoubleWell(0.5).drift_zeros()
    r5 = noiseless_orbits(DoubleWell(0.5), starts, t_end=60.0)
    assert r5["speed_end"].max() < 1e-6
    assert all(min(np.hypot(*(f - np.asarray(q))) for q in z) < 1e-5 for f in r5["final"])
    big = noiseless_orbits(DoubleWell(1.5), starts, t_end=100.0)
    # near the origin b ≈ (x₁ − λ′x₂, −x₂ + λ′x₁), λ′ = λe^{β/4}: θ' = λ′ − sin 2θ turns once
    # every 2π/√(λ′² − 1), so the second half (50 time units) holds 50√(λ′² − 1)/(2π) turns
    for beta, orbits in ((1.0, big),
                         (0.5, noiseless_orbits(DoubleWell(1.5, beta=0.5), starts, t_end=100.0))):
        lam1 = 1.5 * math.exp(beta / 4)
        turns = 50 * math.sqrt(lam1 ** 2 - 1) / (2 * math.pi)
        assert np.allclose(orbits["turns"], turns, rtol=0.02), beta
    ratio = big["radius_end"] / big["radius_half"]
    assert (ratio < 0.85).all() and (ratio > 0.6).all()     # ≈ 2^(-1/2) for r ∝ t^(-1/2)


def test_winding_rate_sums_the_wrapped_angle_increments_of_the_euler_maruyama_path():
    dw = DoubleWell(lam=1.0)
    x0 = torch.tensor([[1.0, 0.0], [-0.5, 0.5], [0.2, -1.0]], dtype=torch.float64)
    final, rate = winding_rate(dw, x0, dt=0.01, steps=50,
                               generator=torch.Generator().manual_seed(4))
    path = simulate(dw.sde(), x0, dt=0.01, steps=50, record_every=1,
                    generator=torch.Generator().manual_seed(4))
    ang = torch.atan2(path.states[..., 1], path.states[..., 0])
    turns = ((ang.diff(dim=0) + math.pi) % (2 * math.pi) - math.pi).sum(0)
    torch.testing.assert_close(final, path.final, rtol=0, atol=1e-14)
    torch.testing.assert_close(rate, turns / 0.5, rtol=1e-12, atol=1e-12)


def test_winding_rate_keeps_its_chains_on_their_device():
    # "meta" stands in for CUDA: the running total and the draws were made on the CPU
    x0 = torch.zeros(3, 2, dtype=torch.float64, device="meta")
    final, rate = winding_rate(DoubleWell(lam=1.0), x0, dt=0.01, steps=2,
                               generator=torch.Generator().manual_seed(0))
    assert final.device.type == rate.device.type == "meta" and rate.dtype == torch.float64


@pytest.mark.parametrize("kw", [dict(beta=float("nan")), dict(beta=float("inf")),
                                dict(lam=float("nan"))], ids=["beta-nan", "beta-inf", "lam-nan"])
def test_non_finite_constants_are_named_errors(kw):
    # they built a well whose Z, ω and drift were NaN (β = inf: j = λ e^{βΦ} J_ss infinite)
    from sgdlab.errors import UserError

    with pytest.raises(UserError, match=next(iter(kw))):
        DoubleWell(**{"lam": 0.5, **kw})


@pytest.mark.parametrize("call, match", [
    (lambda dw: winding_rate(dw, torch.zeros(2, 2, dtype=f64), dt=float("nan"), steps=3), "dt"),
    (lambda dw: winding_rate(dw, torch.zeros(2, 2, dtype=f64), dt=0.01, steps=0), "steps"),
    (lambda dw: winding_rate(dw, torch.full((2, 2), float("nan"), dtype=f64), dt=0.01,
                             steps=3), "x0 has non-finite"),
    (lambda dw: noiseless_orbits(dw, [(1.0, 0.0)], t_end=float("nan")), "t_end"),
], ids=["dt-nan", "steps-0", "x0-nan", "t-end-nan"])
def test_bad_simulation_arguments_are_named_errors(call, match):
    # a NaN dt or start wound at a NaN rate; steps = 0 divided by zero; t_end = NaN went to
    # the ODE solver
    from sgdlab.errors import UserError

    with pytest.raises(UserError, match=match):
        call(DoubleWell(0.5))


@pytest.mark.parametrize("beta", [1e-3, 1e-2, 1.0, 100.0, 1e4])
def test_normaliser_and_bin_probabilities_are_exact_at_any_temperature(beta):
    # ∫ e^{−a(x²−1)²} dx = (π/2) e^{−a/2} [I_{−1/4}(a/2) + I_{1/4}(a/2)], a = β/4. A fixed
    # [−6, 6] grid cut the tails at small β (Z 0.4% low at β = 0.01, 22% at 0.001) and 201
    # points per bin missed the wells at large β (x₁ > 0 had mass 0.61 at β = 100, 5.9 at 1e4)
    from scipy.special import ive                            # ive(ν, z) = e^{−z} I_ν(z)

    a = beta / 4
    one_d = math.pi / 2 * (ive(-0.25, a / 2) + ive(0.25, a / 2))
    dw = DoubleWell(0.5, beta=beta)
    assert dw.normaliser() == pytest.approx(one_d * math.sqrt(2 * math.pi / beta), rel=1e-9)
    s = 1 / math.sqrt(beta)                                  # x₂'s standard deviation
    p = dw.stationary_bin_probabilities(np.array([-np.inf, 0.0, np.inf]),
                                        np.array([-s, 0.0, 2 * s]))
    x2 = [scipy.stats.norm.cdf(0) - scipy.stats.norm.cdf(-1),
          scipy.stats.norm.cdf(2) - scipy.stats.norm.cdf(0)]
    np.testing.assert_allclose(p, 0.5 * np.array([x2, x2]), rtol=1e-9)


def test_the_double_well_entry_counts_every_steps_turn():
    # chaudhari-double-well read the angular velocity off states recorded 0.05 apart, whose
    # wrapped increments drop the turns of chains passing near the origin: 1.050 ± 0.006 for
    # λπ^{3/2}/Z = 1.096 at λ = 1.5 (cpu scale). It is the winding of every step now
    from types import SimpleNamespace

    from sgdlab.experiments.procedures.landscape_runs import DoubleWellProcedure

    p = {"lam": 1.5, "chains": 40, "burn_time": 0.2, "time": 0.4, "orbit_time": 1.0}
    out = DoubleWellProcedure().run(SimpleNamespace(params=p, seed=2),
                                   SimpleNamespace(device="cpu"))
    dw, dt = DoubleWell(1.5), 0.002
    gen = torch.Generator().manual_seed(2)
    x0 = torch.zeros(40, 2, dtype=f64)
    x0[:, 0] = torch.where(torch.arange(40) % 2 == 0, 1.0, -1.0)
    burn = simulate(dw.sde(), x0, dt=dt, steps=100, generator=gen).final
    _, rate = winding_rate(dw, burn, dt=dt, steps=200, generator=gen)
    assert out.summary["angular_velocity"] == pytest.approx(float(rate.mean()), abs=1e-12)
    assert out.summary["angular_velocity_se"] == pytest.approx(
        float(rate.std()) / math.sqrt(40), abs=1e-12)
