"""1-D Fokker–Planck solver (thesis Fig. 4.1, the density equation of (4.33)): closed forms
for Ornstein–Uhlenbeck and pure diffusion, the orders of convergence, mass and sign."""
import math
import re

import numpy as np
import pytest
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes.fokker_planck import (
    downhill_drift, fokker_planck, gaussian_density, mass, mass_within, stable_step,
)

f64 = torch.float64


def _start(x, mean, var):
    r = gaussian_density(x, mean, var)
    return r / mass(r, x)


def _l1(r, exact, x):
    return float((r - exact).abs().sum()) * float(x[1] - x[0])


def _orders(errors):
    return [math.log2(a / b) for a, b in zip(errors, errors[1:])]


def test_ou_transient_gaussian_converges_at_first_order():
    """u = k x²/2, drift −kx: from N(x0, σ0²) the law at t is N(x0 e^{−kt}, D/k (1 − e^{−2kt})
    + σ0² e^{−2kt}); the upwind drift makes the L1 error first order in dx."""
    k, d, x0, var0, t = 2.0, 0.5, 1.0, 0.09, 0.5
    mean = x0 * math.exp(-k * t)
    var = d / k * (1 - math.exp(-2 * k * t)) + var0 * math.exp(-2 * k * t)
    errors = []
    for n in (101, 201, 401):
        x = torch.linspace(-4, 4, n, dtype=f64)
        u = k * x ** 2 / 2
        r = fokker_planck(_start(x, x0, var0), x, downhill_drift(u, x), d, t)
        errors.append(_l1(r, gaussian_density(x, mean, var), x))
        assert abs(mass(r, x) - 1) < 1e-12 and float(r.min()) >= 0
    assert errors[-1] < 0.015
    assert all(0.85 < p < 1.15 for p in _orders(errors)), (errors, _orders(errors))
    # the drift given at the grid points (faces take the mean) is the same scheme for a linear b
    x = torch.linspace(-4, 4, 101, dtype=f64)
    a = fokker_planck(_start(x, x0, var0), x, -k * x, d, t)
    b = fokker_planck(_start(x, x0, var0), x, downhill_drift(k * x ** 2 / 2, x), d, t)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_ou_converges_to_the_gaussian_stationary_law_with_variance_d_over_k():
    k, d = 2.0, 0.5
    gaps = []
    for n in (101, 201, 401):
        x = torch.linspace(-4, 4, n, dtype=f64)
        dx = float(x[1] - x[0])
        r = fokker_planck(_start(x, 1.0, 0.09), x, -k * x, d, 6.0)
        m = float((r * x).sum()) * dx
        v = float((r * x ** 2).sum()) * dx - m ** 2
        assert abs(m) < 1e-4 and abs(mass(r, x) - 1) < 1e-12
        gaps.append(v - d / k)
    # upwinding adds the numerical diffusion |b| dx/2: the variance is high by O(dx)
    assert 0 < gaps[-1] < 0.01
    assert all(0.85 < p < 1.15 for p in _orders(gaps)), gaps


def test_pure_diffusion_matches_the_heat_kernel_at_second_order():
    d, var0, t = 0.5, 0.04, 1.0
    errors = []
    for n in (101, 201, 401):
        x = torch.linspace(-8, 8, n, dtype=f64)
        r = fokker_planck(_start(x, 0.5, var0), x, torch.zeros_like(x), d, t)
        errors.append(_l1(r, gaussian_density(x, 0.5, var0 + 2 * d * t), x))
    assert errors[-1] < 1e-3
    assert all(1.85 < p < 2.15 for p in _orders(errors)), errors


def test_mass_and_sign_at_the_walls_and_snapshots():
    """Zero flux: a drift pushing everything into a wall keeps all the mass in the domain;
    pure diffusion between walls tends to the uniform density; snapshots land on their times."""
    x = torch.linspace(-1, 1, 81, dtype=f64)
    r0 = _start(x, 0.0, 0.01)
    pushed = fokker_planck(r0, x, torch.full_like(x, 3.0), 0.01, 5.0)
    assert abs(mass(pushed, x) - 1) < 1e-12 and float(pushed.min()) >= 0
    assert float(pushed[-5:].sum()) * float(x[1] - x[0]) > 0.9
    flat, snaps = fokker_planck(r0, x, torch.zeros_like(x), 1.0, 4.0, times=[0.0, 0.1, 4.0])
    assert (flat - 1 / (mass(torch.ones_like(x), x))).abs().max() < 1e-6
    torch.testing.assert_close(snaps[0], r0, rtol=0, atol=0)
    torch.testing.assert_close(snaps[2], flat, rtol=0, atol=0)
    torch.testing.assert_close(snaps[1], fokker_planck(r0, x, torch.zeros_like(x), 1.0, 0.1),
                               rtol=0, atol=1e-15)
    # pure transport (D = 0) at the bound itself (cfl = 1) stays nonnegative
    moved = fokker_planck(r0, x, torch.sin(3 * x), 0.0, 1.0, cfl=1.0)
    assert float(moved.min()) >= 0 and abs(mass(moved, x) - 1) < 1e-12
    # the cells whose centres lie in the closed interval: both end cells count
    dx = float(x[1] - x[0])
    assert mass_within(torch.ones_like(x), x, float(x[10]), float(x[20])) == pytest.approx(
        11 * dx, rel=1e-12)
    assert mass_within(r0, x, -2.0, 2.0) == pytest.approx(mass(r0, x), rel=1e-12)


def test_a_time_dependent_drift_is_followed():
    """A drift that switches from −k(x − 1) to −k(x + 1) at s = 1 (a snapshot time, so that a
    step ends there) is the same as two runs."""
    x = torch.linspace(-4, 4, 161, dtype=f64)
    r0 = _start(x, 0.0, 0.1)
    one, two = -2.0 * (x - 1), -2.0 * (x + 1)
    joined, _ = fokker_planck(r0, x, lambda s: one if s < 1 else two, 0.3, 2.0, times=[1.0])
    apart = fokker_planck(fokker_planck(r0, x, one, 0.3, 1.0), x, two, 0.3, 1.0)
    torch.testing.assert_close(joined, apart, rtol=0, atol=1e-12)


def test_bad_input_is_refused_with_the_problem_named():
    x = torch.linspace(-1, 1, 41, dtype=f64)
    r0 = _start(x, 0.0, 0.05)
    b = -x
    with pytest.raises(UserError, match="uniform"):
        fokker_planck(r0, x ** 3, b, 0.1, 1.0)
    with pytest.raises(UserError, match="diffusion must be a finite number >= 0"):
        fokker_planck(r0, x, b, -0.1, 1.0)
    with pytest.raises(UserError, match="drift has NaN"):
        fokker_planck(r0, x, torch.where(x > 0, b, float("nan")), 0.1, 1.0)
    with pytest.raises(UserError, match="drift must be a 1-D tensor with 41 values"):
        fokker_planck(r0, x, b[:10], 0.1, 1.0)
    with pytest.raises(UserError, match="rho0 must be >= 0"):
        fokker_planck(r0 - 1, x, b, 0.1, 1.0)
    with pytest.raises(UserError, match="t must be a finite number >= 0"):
        fokker_planck(r0, x, b, 0.1, -1.0)
    with pytest.raises(UserError, match="times must be increasing"):
        fokker_planck(r0, x, b, 0.1, 1.0, times=[0.5, 0.2])
    # a bool and a string are no diffusion or time (float() read True as 1 and "2" as 2)
    for d, t, says in ((True, 1.0, "diffusion must be a finite number >= 0, not a bool (True)"),
                       (0.1, "2", "t must be a finite number >= 0, got '2'")):
        with pytest.raises(UserError, match=re.escape(says)):
            fokker_planck(r0, x, b, d, t)
    same = fokker_planck(r0, x, b, np.float32(0.125), np.float32(0.5))
    torch.testing.assert_close(same, fokker_planck(r0, x, b, 0.125, 0.5), rtol=0, atol=0)
    faces = downhill_drift(x ** 2 / 2, x)
    bound = stable_step(faces, float(x[1] - x[0]), 0.1)
    with pytest.raises(UserError, match="above the stability bound"):
        fokker_planck(r0, x, faces, 0.1, 1.0, dt=1.01 * bound)
    ok = fokker_planck(r0, x, faces, 0.1, 1.0, dt=bound)
    assert float(ok.min()) >= 0


def test_the_step_is_cfl_times_the_stability_bound():
    """Pure diffusion D = 1 on x = 0, …, 4 (dx = 1): each cell sends D/dx² = 1 per unit time
    each way, the bound is 1/2, and cfl = 1/2 steps by 1/4. Two such steps from a unit mass
    in the middle cell, each ρᵢ ← ρᵢ − 2kρᵢ + k(ρᵢ₋₁ + ρᵢ₊₁), by hand: [0, 1/4, 1/2, 1/4, 0],
    then [1/16, 1/4, 3/8, 1/4, 1/16] (one step of the full bound would give [0, ½, 0, ½, 0])."""
    x = torch.arange(5, dtype=f64)
    rho0 = torch.tensor([0.0, 0, 1, 0, 0], dtype=f64)
    rho = fokker_planck(rho0, x, torch.zeros(5, dtype=f64), 1.0, 0.5, cfl=0.5)
    expect = torch.tensor([1 / 16, 1 / 4, 3 / 8, 1 / 4, 1 / 16], dtype=f64)
    torch.testing.assert_close(rho, expect, atol=1e-15, rtol=0)


def test_gaussian_density_needs_a_positive_variance_and_fp_names_a_numpy_density():
    """var = 0 gave NaN at every point and var < 0 a bare math domain error; a numpy rho0
    failed inside torch.isfinite."""
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    for var in (0.0, -1.0, float("nan")):
        with pytest.raises(UserError, match="var must be a finite number > 0"):
            gaussian_density(x, 0.0, var)
    with pytest.raises(UserError, match="rho0 must be a torch.Tensor"):
        fokker_planck(np.ones(11), x, -x, 0.5, 0.1)
