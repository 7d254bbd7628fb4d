"""1-D PDE smoothing (thesis Fig. 4.1): Cole–Hopf, Hopf–Lax, heat, semi-concavity."""
import math

import pytest
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes.pde import (
    derivatives, finite_difference_viscous_hj, heat_smoothing, hopf_lax, hopf_lax_newton,
    local_entropy, periodic_cole_hopf,
    proximal_point, second_difference, semiconcavity_bound, viscous_hj,
)

f64 = torch.float64


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_cole_hopf_matches_direct_finite_differences(beta):
    n, period = 256, 2 * math.pi
    x = torch.arange(n, dtype=f64) * period / n
    f = torch.sin(x) + 0.5 * torch.cos(3 * x)
    exact = periodic_cole_hopf(f, period, 0.5, beta=beta)
    direct = finite_difference_viscous_hj(f, period, 0.5, beta=beta)
    assert (exact - direct).abs().max() < 2e-3
    # and the quadrature (non-periodic) Cole–Hopf agrees away from the edges: periodise f
    xx = torch.arange(-n, 2 * n, dtype=f64) * period / n
    ff = torch.sin(xx) + 0.5 * torch.cos(3 * xx)
    quad = viscous_hj(ff, xx, 0.5, beta=beta)[n:2 * n]
    assert (quad - exact).abs().max() < 1e-5
    assert (exact - f).abs().max() > 0.05  # the smoothing did something


def test_hopf_lax_is_the_proximal_formula():
    x = torch.linspace(-4, 4, 801, dtype=f64)
    t = 0.7
    # f = |x|: prox is soft-thresholding, the envelope is the Huber function
    f = x.abs()
    huber = torch.where(x.abs() <= t, x ** 2 / (2 * t), x.abs() - t / 2)
    assert torch.allclose(hopf_lax(f, x, t), huber, atol=1e-12)
    soft = torch.sign(x) * (x.abs() - t).clamp_min(0)
    assert torch.allclose(proximal_point(f, x, t), soft, atol=1e-12)
    # f = a x²/2: u = a x² / (2(1 + a t)); grid minimisation error is O(dx²)
    a = 3.0
    q = a * x ** 2 / 2
    inner = x.abs() < 2
    assert torch.allclose(hopf_lax(q, x, t)[inner], (a * x ** 2 / (2 * (1 + a * t)))[inner],
                          atol=1e-4)
    # a nonconvex f: u(x) = f(p) + |x − p|²/(2t) with p = prox_{tf}(x)
    g = torch.sin(3 * x) + 0.1 * x ** 2
    p = proximal_point(g, x, t)
    idx = ((p - x[0]) / (x[1] - x[0])).round().long()
    assert torch.allclose(hopf_lax(g, x, t), g[idx] + (x - p) ** 2 / (2 * t), atol=1e-12)


def test_semiconcavity_bound_and_heat_comparison():
    x = torch.linspace(-4, 4, 401, dtype=f64)
    dx = float(x[1] - x[0])

    def fn(z):
        return 0.1 * z ** 2 + 0.5 * torch.sin(3 * z) - 0.3 * torch.cos(5 * z)
    f = fn(x)
    c = float(second_difference(f, dx).max())
    y = torch.linspace(-6, 6, 12001, dtype=f64)
    inner = slice(50, -50)
    for t in (0.1, 0.5, 2.0):
        bound = semiconcavity_bound(c, t)
        u = hopf_lax(f, x, t, y=y, fy=fn(y))
        v = viscous_hj(f, x, t, beta=10.0)
        assert second_difference(u, dx)[inner].max() <= bound * 1.01
        assert second_difference(v, dx)[inner].max() <= bound * 1.01
    # the bound is tight for f = C x²/2 (Hopf–Lax gives exactly C/(1+Ct))
    q = 2.0 * x ** 2 / 2
    assert second_difference(hopf_lax(q, x, 0.5, y=y, fy=y ** 2), dx)[inner].max() == \
        pytest.approx(semiconcavity_bound(2.0, 0.5), rel=0.01)
    # heat smoothing only keeps u_xx ≤ C (maximum principle for u_xx), with no 1/(C⁻¹+t) gain
    # at short times (t = 0.01) its top curvature stays close to C, above the HJ bound
    h = heat_smoothing(f, x, 0.01)
    top = second_difference(h, dx)[inner].max()
    assert top <= c * 1.01 and top > semiconcavity_bound(c, 0.01) * 1.0


def test_minimisers_of_convex_f_preserved_by_hopf_lax():
    x = torch.linspace(-3, 3, 601, dtype=f64)
    f = torch.exp(x) - 2 * x                        # convex, argmin ln 2, asymmetric
    for t in (0.3, 1.0, 3.0):
        u = hopf_lax(f, x, t)
        assert x[u.argmin()] == x[f.argmin()]
        assert u.min() == pytest.approx(float(f.min()), abs=1e-12)
        assert (u <= f + 1e-12).all()               # inf-convolution lies below f


def test_local_entropy_constant_and_heat_preserves_constants():
    x = torch.linspace(-5, 5, 501, dtype=f64)
    f = torch.cos(2 * x)
    d = viscous_hj(f, x, 0.4, beta=2.0) - local_entropy(f, x, 0.4, beta=2.0)
    assert torch.allclose(d, d[0].expand_as(d))
    assert torch.allclose(heat_smoothing(torch.ones_like(x), x, 0.3), torch.ones_like(x))
    with pytest.raises(UserError):
        hopf_lax(f, x, 0.0)
    with pytest.raises(UserError):
        viscous_hj(f, x ** 3, 0.1)
    for beta in (0.0, -1.0):
        with pytest.raises(UserError, match="beta must be a finite number > 0"):
            heat_smoothing(f, x, 0.3, beta=beta)
    with pytest.raises(UserError, match="build it in float64"):
        heat_smoothing(f.float(), torch.linspace(-5, 5, 501), 0.3)


@pytest.mark.parametrize("beta", [1.0, 5.0])
def test_example_4_12_and_local_entropy_of_a_quadratic_in_closed_form(beta):
    """f = c x²/2. Example 4.12: u(x, t) = x²/(2(t + 1/c)) + (β⁻¹/2) log(t + 1/c) solves (4.1)
    (our Cole–Hopf u carries the extra constant (β⁻¹/2) log c). Local entropy (3.9) with
    inverse temperature β: f_γ(x) = c x²/(2(1 + γc)) − (1/2β) log(2π/(β(c + 1/γ))), whose
    gradient (1 + γc)⁻¹ f'(x) is Lemma 3.5's (γ∇²f + I)⁻¹∇f, exact for a quadratic."""
    x = torch.linspace(-8, 8, 1601, dtype=f64)
    c, t = 3.0, 0.6
    f = c * x ** 2 / 2
    inner = x.abs() < 3
    u = viscous_hj(f, x, t, beta=beta)
    ex = x ** 2 / (2 * (t + 1 / c)) + math.log(t + 1 / c) / (2 * beta) + math.log(c) / (2 * beta)
    assert (u - ex)[inner].abs().max() < 1e-9
    fg = local_entropy(f, x, t, beta=beta)
    closed = c * x ** 2 / (2 * (1 + t * c)) - math.log(2 * math.pi / (beta * (c + 1 / t))) / (
        2 * beta)
    assert (fg - closed)[inner].abs().max() < 1e-9
    dx = float(x[1] - x[0])
    grad = (fg[2:] - fg[:-2]) / (2 * dx)
    assert torch.allclose(grad[inner[1:-1]], (c * x / (1 + t * c))[1:-1][inner[1:-1]],
                          atol=1e-8)
    # the non-viscous limit (Example 4.12): u = x²/(2(t + 1/c)), and the minimum stays put
    hl = hopf_lax(f, x, t)
    # (grid minimisation: the minimiser is off by at most dx/2, an error ≤ ½(c + 1/t)(dx/2)²)
    assert (hl - x ** 2 / (2 * (t + 1 / c)))[inner].abs().max() <= 1.001 * (c + 1 / t) * dx ** 2 / 8


@pytest.mark.parametrize("beta", [1.0, 5.0])
def test_smoothing_is_exact_up_to_the_ends_of_the_grid_on_a_padded_quadrature(beta):
    """f = c x²/2 on x ∈ [−2, 2] at t = 0.5: the Gaussian of variance t/β around the end
    points runs off [−2, 2], so a quadrature over x itself cuts it off there; over the padded
    grid both solutions are the closed forms at every point of x (Example 4.12; heat: f + ct/2β),
    so their second differences are c/(1 + ct) and c."""
    import sgdlab.landscapes.pde as pde

    c, t = 3.0, 0.5
    x = torch.linspace(-2, 2, 201, dtype=f64)
    y, where = pde.padded_grid(x, 8 * math.sqrt(t / beta))
    torch.testing.assert_close(y[where], x, atol=1e-12, rtol=0)
    f, fy = c * x ** 2 / 2, c * y ** 2 / 2
    u = viscous_hj(f, x, t, beta=beta, y=y, fy=fy)
    ex = c * x ** 2 / (2 * (1 + c * t)) + math.log(1 + c * t) / (2 * beta)
    assert (u - ex).abs().max() < 1e-9
    heat = heat_smoothing(f, x, t, beta=beta, y=y, fy=fy)
    assert (heat - (f + c * t / (2 * beta))).abs().max() < 1e-9
    dx = float(x[1] - x[0])
    assert second_difference(u, dx).sub(c / (1 + c * t)).abs().max() < 1e-6
    # over x alone the heat kernel's mass beyond the ends is lost: the error padding removes
    assert (heat_smoothing(f, x, t, beta=beta) - (f + c * t / (2 * beta))).abs().max() > 1
    with pytest.raises(UserError, match="fy"):
        viscous_hj(f, x, t, y=y)
    with pytest.raises(UserError, match="width"):
        pde.padded_grid(x, -1.0)


def test_hopf_lax_newton_and_convexity_interval():
    """Newton-refined Hopf–Lax equals the grid formula up to the grid's error and is smooth
    enough for second differences; the convexity interval I(x, t) of Example 4.15 is found
    exactly for f = x⁴ − x² (convex for |x| ≥ 1/√6) and widens under Hopf–Lax for t < t*."""
    from sgdlab.landscapes.pde import convexity_interval, hopf_lax_newton

    x = torch.linspace(-2, 2, 401, dtype=f64)
    y = torch.linspace(-3, 3, 12001, dtype=f64)

    def fn(z):
        return z ** 4 - z ** 2
    f = fn(x)
    u, p = hopf_lax_newton(fn, x, 0.05, y=y)
    # the grid minimum is above the exact one by at most ½ max(f'' + 1/t)(dy/2)² ≈ 2e-6
    d = hopf_lax(f, x, 0.05, y=y, fy=fn(y)) - u
    assert d.min() > -1e-12 and d.max() < 3e-6
    assert torch.allclose(fn(p) + (x - p) ** 2 / 0.1, u)
    i = int(f[200:].argmin()) + 200                      # the minimum at +1/√2
    lo, hi = convexity_interval(f, x, i)
    assert lo == pytest.approx(1 / math.sqrt(6), abs=0.011) and hi == pytest.approx(2.0, abs=0.011)
    # the mirror image around the minimum at −1/√2 reaches the grid's left end the same way
    j = int(f[:200].argmin())
    assert convexity_interval(f, x, j) == (pytest.approx(-hi, abs=1e-12),
                                           pytest.approx(-lo, abs=1e-12))
    t_star = 1 / 2.0                                      # max(−f'') = 2 at x = 0
    u, _ = hopf_lax_newton(fn, x, 0.5 * t_star, y=y)
    lo_u, hi_u = convexity_interval(u, x, i)
    assert lo_u < lo - 0.1 and hi_u >= hi - 0.011
    assert convexity_interval(-f, x, i) == (float(x[i]), float(x[i]))   # concave there


def test_periodic_solvers_refuse_bad_input_and_lost_precision():
    n, period = 256, 2 * math.pi
    x = torch.arange(n, dtype=f64) * period / n
    f = torch.sin(x) + 0.5 * torch.cos(3 * x)
    for solver in (periodic_cole_hopf, finite_difference_viscous_hj):
        for kw in (dict(beta=0.0), dict(beta=-1.0)):
            with pytest.raises(UserError, match="beta must be a finite number > 0"):
                solver(f, period, 0.1, **kw)             # explicit steps: dt <= 0 never ended
        with pytest.raises(UserError, match="t must be a finite number > 0"):
            solver(f, period, -1.0)
        for bad in (0.0, math.inf):          # an infinite period gave dx = inf
            with pytest.raises(UserError, match="period must be a finite number > 0"):
                solver(f, bad, 0.1)
    with pytest.raises(UserError, match="cfl"):
        finite_difference_viscous_hj(f, period, 0.1, cfl=0.0)
    # e^(-beta (f - min f)) at beta = 10 reaches FFT round-off: an error, not NaN or wrong values
    with pytest.raises(UserError, match="precision"):
        periodic_cole_hopf(f, period, 0.1, beta=10.0)


@pytest.mark.parametrize("call, match", [
    (lambda x, f: viscous_hj(f, x, float("nan")), "t must be a finite number > 0"),
    (lambda x, f: hopf_lax(f, x, float("inf")), "t must be a finite number > 0"),
    (lambda x, f: viscous_hj(f, x, 0.5, beta=float("nan")), "beta must be a finite number > 0"),
    (lambda x, f: viscous_hj(f, x, 0.5, beta=float("inf")), "beta must be finite"),
    (lambda x, f: heat_smoothing(f, x, 0.5, beta=float("inf")), "beta must be finite"),
    (lambda x, f: local_entropy(f, x, 0.5, beta=float("nan")), "beta must be a finite number > 0"),
    (lambda x, f: viscous_hj(f * float("nan"), x, 0.5), "f has NaN"),
    (lambda x, f: semiconcavity_bound(float("nan"), 0.5), "C must be a finite number > 0"),
], ids=["t-nan", "t-inf", "beta-nan", "beta-inf", "heat-beta-inf", "entropy-beta-nan",
        "f-nan", "c-nan"])
def test_non_finite_times_temperatures_and_losses_are_named_errors(call, match):
    # NaN t / β / f gave NaN curves, β = inf a bare "math domain error"
    x = torch.linspace(-2, 2, 41, dtype=f64)
    with pytest.raises(UserError, match=match):
        call(x, x ** 2)


def test_hopf_lax_newton_lands_on_the_exact_prox_of_a_concave_quadratic():
    """f = −z²/2 at t = 1/2: φ(p) = f(p) + (x − p)²/(2t) has φ'' = −1 + 2 = 1 and its zero
    p = x/(1 − t) = 2x, u = f(p) + (x − p)²/(2t) = −x²; Newton on the linear φ' is exact after
    one step, whatever the grid's first guess (a step of the wrong length converges only
    linearly, at rate 1/(f''t + 2) = 2/3 here, still 1e-7 off after 30 steps)."""
    from sgdlab.landscapes.pde import hopf_lax_newton

    x = torch.tensor([-0.73, -0.2, 0.0, 0.41, 0.9], dtype=f64)
    y = torch.linspace(-4, 4, 81, dtype=f64)          # dy = 0.1: the grid's guess is 0.05 off
    u, p = hopf_lax_newton(lambda z: -z ** 2 / 2, x, 0.5, y=y)
    torch.testing.assert_close(p, 2 * x, atol=1e-13, rtol=0)
    torch.testing.assert_close(u, -x ** 2, atol=1e-13, rtol=0)


def test_padded_grid_extends_by_at_least_the_width():
    """x = 0, 0.1, …, 1 and width 0.25: 0.25/0.1 = 2.5 points, so three are added each side."""
    import sgdlab.landscapes.pde as pde

    x = torch.arange(11, dtype=f64) / 10
    y, where = pde.padded_grid(x, 0.25)
    assert len(y) == 17 and where == slice(3, 14)
    assert float(y[0]) == pytest.approx(-0.3, abs=1e-12)
    assert float(y[-1]) == pytest.approx(1.3, abs=1e-12)


def test_convexity_interval_from_its_last_convex_point():
    """u = 0, 1, 4, 9, 16, 15, 12, 7 on x = 0, …, 7 (dx = 1): the second differences at
    x = 1, …, 6 are 2, 2, 2, −8, −2, −2, so u is convex on [1, 3]; asked at x = 3 (the last
    convex point) or x = 1 (the first) the interval is [1, 3], asked at x = 4 it is a point."""
    from sgdlab.landscapes.pde import convexity_interval

    x = torch.arange(8, dtype=f64)
    u = torch.tensor([0.0, 1, 4, 9, 16, 15, 12, 7], dtype=f64)
    assert convexity_interval(u, x, 3) == (1.0, 3.0)
    assert convexity_interval(u, x, 1) == (1.0, 3.0)
    assert convexity_interval(u, x, 4) == (4.0, 4.0)


def test_derivatives_of_an_affine_function_have_zero_curvature():
    # f' has no graph when f is affine in z; the second backward through it was autograd's
    # "element 0 of tensors does not require grad"
    z = torch.linspace(-1, 1, 5, dtype=torch.float64)
    g, h = derivatives(lambda t: 3 * t - 1, z)
    torch.testing.assert_close(g, torch.full_like(z, 3.0))
    torch.testing.assert_close(h, torch.zeros_like(z))
    g, h = derivatives(lambda t: t ** 3, z)     # the ordinary path, unchanged
    torch.testing.assert_close(h, 6 * z)
    u, p = hopf_lax_newton(lambda t: 2 * t, z, 0.5, y=torch.linspace(-4, 4, 801,
                                                                      dtype=torch.float64))
    # f(p) = 2p at t = ½: the prox is p = x − 2t = x − 1, u = f(p) + (p − x)²/(2t) = 2x − 1
    torch.testing.assert_close(p, z - 1.0)
    torch.testing.assert_close(u, 2 * z - 1.0)


def test_bad_grids_and_arguments_name_the_problem():
    """A NaN in a finer grid's fy made every Hopf–Lax value NaN, and was reported as one in
    f by the quadratures; numpy arrays failed inside torch; a negative Newton count ran no
    step; an index past the grid gave the last point's convexity interval."""
    from sgdlab.landscapes.pde import convexity_interval

    x = torch.linspace(-1, 1, 21, dtype=f64)
    y = torch.linspace(-2, 2, 81, dtype=f64)
    fy = y ** 2
    fy[3] = float("nan")
    with pytest.raises(UserError, match="fy has NaN"):
        hopf_lax(x ** 2, x, 0.5, y=y, fy=fy)
    with pytest.raises(UserError, match="fy has NaN"):
        viscous_hj(x ** 2, x, 0.5, y=y, fy=fy)
    with pytest.raises(UserError, match="y and fy must be 1-D"):
        hopf_lax(x ** 2, x, 0.5, y=y, fy=fy[:-1])
    with pytest.raises(UserError, match="f must be a torch.Tensor"):
        heat_smoothing((x ** 2).numpy(), x, 0.5)
    with pytest.raises(UserError, match="y must be a torch.Tensor"):
        hopf_lax_newton(lambda z: z ** 2, x, 0.5, y=y.numpy())
    with pytest.raises(UserError, match="steps must be an integer >= 0"):
        hopf_lax_newton(lambda z: z ** 2, x, 0.5, y=y, steps=-1)
    for index in (-1, 21):
        with pytest.raises(UserError, match="index must be"):
            convexity_interval(x ** 2, x, index)


def test_heat_smoothing_refuses_an_infinite_f_that_the_hj_solutions_take():
    """+inf (a constraint) met kernel weights that underflow to 0: NaN at most points."""
    x = torch.linspace(-2, 2, 401, dtype=f64)
    f = x ** 2
    f[:50] = float("inf")
    with pytest.raises(UserError, match="heat_smoothing averages f itself and needs finite"):
        heat_smoothing(f, x, 0.001)
    assert torch.isfinite(viscous_hj(f, x, 0.001)[50:]).all()
    assert torch.isfinite(hopf_lax(f, x, 0.001)).all()
