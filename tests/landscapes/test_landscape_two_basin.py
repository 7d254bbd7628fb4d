"""Two-basin landscape (Zhu et al. Suppl. B, as printed, and its named variants) and the escape
experiment."""
import math
import re

import pytest
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes.escape import (
    METHODS, EscapeConfig, EscapeResult, escape_experiment, expected_sharpness_batched,
    expected_sharpness_quadrature, gauss_hermite_normal, method_noise_covariance, method_seed,
    run_methods, sample_method_noise, top_eigenpairs, wilson_interval,
)
from sgdlab.landscapes.two_basin import LANDSCAPES, TwoBasin, printed_sharp_hessian, two_basin
from sgdlab.testing import covariance_reference

f64 = torch.float64


# tiny tensors: one thread is faster, and the CI box is shared
pytestmark = pytest.mark.usefixtures("one_thread")


def _direct_per_sample(land: TwoBasin, w: torch.Tensor) -> torch.Tensor:
    """ℓ(w − x_k) written out from the definition, one sample at a time."""
    out = []
    for x in land.data:
        u = w - x
        ds, df = u - land.sharp_center, u - land.flat_center
        vs = 0.5 * ds @ land.sharp_hessian @ ds
        vf = 0.5 * df @ land.flat_hessian @ df
        out.append(torch.minimum(vs, vf))
    return torch.stack(out)


def test_definition_matches_direct_formula_and_rotation():
    land = TwoBasin.rescaled(num_samples=20, seed=3)
    w = torch.tensor([0.3, -0.4], dtype=f64)
    assert torch.allclose(land.per_sample_loss(w), _direct_per_sample(land, w), atol=1e-12)
    evals, evecs = torch.linalg.eigh(land.sharp_hessian)
    assert torch.allclose(evals, torch.tensor([1.0, 10.0], dtype=f64))
    stiff = evecs[:, 1]
    theta = 5 * math.pi / 6
    assert abs(abs(stiff @ torch.tensor([math.cos(theta), math.sin(theta)], dtype=f64)) - 1) < 1e-12
    assert land.data.shape == (20, 2)


def test_default_is_the_printed_suppl_b_loss():
    """ℓ = min{10(s₁cos θ − s₂sin θ)² + 100(s₁cos θ + s₂sin θ)², (w₁−x₁+1)² + (w₂−x₂+1)²},
    s = w − 1 − x, θ = 5π/6, N = 100, x ~ N(0, 0.01 I): evaluated literally."""
    land = TwoBasin(seed=4)
    assert land.num_samples == 100 and land.name == "paper"
    x = land.data
    assert float(x.var()) == pytest.approx(0.01, rel=0.2)
    th = 5 * math.pi / 6
    gen = torch.Generator().manual_seed(1)
    for w in torch.randn(6, 2, generator=gen, dtype=f64) * 1.3:
        s1, s2 = w[0] - 1 - x[:, 0], w[1] - 1 - x[:, 1]
        sharp = 10 * (s1 * math.cos(th) - s2 * math.sin(th)) ** 2 \
            + 100 * (s1 * math.cos(th) + s2 * math.sin(th)) ** 2
        flat = (w[0] - x[:, 0] + 1) ** 2 + (w[1] - x[:, 1] + 1) ** 2
        ref = torch.minimum(sharp, flat)
        assert torch.allclose(land.per_sample_loss(w), ref, atol=1e-11)
        assert torch.allclose(land.loss(w), ref.mean(), atol=1e-11)


def test_printed_hessian_and_gd_stability_threshold():
    """H_s = 20 a aᵀ + 200 b bᵀ = [[165, −45√3], [−45√3, 55]] (a·b = cos 2θ = ½: the printed
    directions are not orthogonal), eigenvalues 110 ± √9100; H_f = 2 I; 2/λ_max = 0.00974."""
    land = TwoBasin()
    ref = torch.tensor([[165.0, -45 * math.sqrt(3)], [-45 * math.sqrt(3), 55.0]], dtype=f64)
    assert torch.allclose(land.sharp_hessian, ref, atol=1e-12)
    assert torch.allclose(printed_sharp_hessian(), ref, atol=1e-12)
    lam = torch.linalg.eigvalsh(land.sharp_hessian)
    r = math.sqrt(9100)
    assert torch.allclose(lam, torch.tensor([110 - r, 110 + r], dtype=f64), atol=1e-10)
    assert torch.equal(land.flat_hessian, 2 * torch.eye(2, dtype=f64))
    assert land.gd_stable_lr() == pytest.approx(2 / (110 + r), rel=1e-12)
    assert 0.1 * (110 + r) == pytest.approx(20.54, abs=0.01)      # the printed η: unstable
    # Hessian of the loss at the sharp minimum = H_s (all samples on the sharp branch)
    assert torch.allclose(land.hessian(land.sharp_minimum), ref, atol=1e-12)


def test_gd_below_the_threshold_stays_and_at_the_printed_lr_leaves():
    """GD from (1, 1) converges to the sharp minimum for η < 2/λ_max and is thrown into the flat
    basin at the printed η = 0.1 (η λ_max = 20.5)."""
    land = TwoBasin()
    cfg = EscapeConfig(lr=0.95 * land.gd_stable_lr(), repetitions=1, sharpness_every=0,
                       record_trajectory=False)
    res = escape_experiment(land, cfg, methods=("gd",))
    assert torch.allclose(res.final["gd"][0], land.sharp_minimum, atol=1e-9)
    assert res.success_rate["gd"] == 0.0
    cfg.lr = 0.1
    res = escape_experiment(land, cfg, methods=("gd",))
    assert res.success_rate["gd"] == 1.0
    assert torch.allclose(res.final["gd"][0], land.flat_minimum, atol=1e-9)


def test_named_variants():
    assert LANDSCAPES == ("paper", "rescaled", "authors-code")
    for name in LANDSCAPES:
        assert two_basin(name, seed=2).name == name
    assert torch.equal(two_basin("paper", seed=2).data, TwoBasin(seed=2).data)
    with pytest.raises(UserError, match="unknown two-basin landscape"):
        two_basin("sharp")


@pytest.mark.parametrize("option, value", [("data_var", 1e-4), ("theta", 1.0)])
def test_a_printed_loss_option_is_refused_for_the_authors_code_saying_why(option, value):
    # Python's "unexpected keyword argument" said nothing of why (a config setting both)
    with pytest.raises(UserError, match=(
            f"^{option} is an option of the printed loss \\(landscapes 'paper' and "
            "'rescaled'\\); 'authors-code' is the authors' code's loss at θ = π/4 with its own "
            "data .*, whose options are num_samples, seed, data_scale$")):
        two_basin("authors-code", **{option: value})
    assert two_basin("authors-code", num_samples=5).num_samples == 5


def test_gradients_and_hessian_match_autograd():
    land = TwoBasin(num_samples=30, seed=1)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(7, 2, generator=gen, dtype=f64) * 1.2
    auto = torch.func.vmap(torch.func.grad(lambda t: land.per_sample_loss(t).mean()))(w)
    assert torch.allclose(land.grad(w), auto, atol=1e-10)
    ps_auto = torch.func.vmap(torch.func.jacrev(land.per_sample_loss))(w)
    assert torch.allclose(land.per_sample_grad(w), ps_auto, atol=1e-10)
    hess_auto = torch.func.vmap(torch.func.hessian(lambda t: land.per_sample_loss(t).mean()))(w)
    assert torch.allclose(land.hessian(w), hess_auto, atol=1e-10)
    idx = torch.randint(30, (7, 4), generator=gen)
    batch_auto = torch.stack([torch.func.grad(lambda t: land.per_sample_loss(t)[i].mean())(wi)
                              for wi, i in zip(w, idx)])
    assert torch.allclose(land.grad(w, idx), batch_auto, atol=1e-10)


def test_explicit_hessians_and_centres_define_the_loss():
    """Given H_s, H_f, c_s, c_f (none of the printed ones) and three samples, the loss, its
    gradient and Hessian are those of min{½(u − c_s)ᵀH_s(u − c_s), ½(u − c_f)ᵀH_f(u − c_f)},
    u = w − x_k, written out here from the given constants (not the landscape's attributes);
    the minima are c + x̄, each with its basin's Hessian."""
    hs = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=f64)
    hf = torch.tensor([[0.5, 0.1], [0.1, 0.2]], dtype=f64)
    cs, cf = torch.tensor([2.0, 0.5], dtype=f64), torch.tensor([-1.0, 1.5], dtype=f64)
    x = torch.tensor([[0.1, -0.2], [0.0, 0.3], [-0.1, -0.1]], dtype=f64)
    land = TwoBasin(sharp_hessian=hs, flat_hessian=hf, sharp_center=(2.0, 0.5),
                    flat_center=(-1.0, 1.5), data=x)
    # all three samples in the sharp branch, one, two, none
    points = torch.tensor([[1.9, 0.4], [1.2, 0.5], [1.3, 1.0], [-0.8, 1.2]], dtype=f64)
    assert land.sharp_fraction(points).tolist() == [1.0, 1 / 3, 2 / 3, 0.0]
    for w in points:
        vs = torch.stack([0.5 * (w - xk - cs) @ hs @ (w - xk - cs) for xk in x])
        vf = torch.stack([0.5 * (w - xk - cf) @ hf @ (w - xk - cf) for xk in x])
        sharp = vs <= vf
        grads = torch.stack([hs @ (w - xk - cs) if s else hf @ (w - xk - cf)
                             for xk, s in zip(x, sharp)])
        torch.testing.assert_close(land.per_sample_loss(w), torch.minimum(vs, vf),
                                   rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(land.loss(w), torch.minimum(vs, vf).mean(),
                                   rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(land.grad(w), grads.mean(0), rtol=1e-14, atol=1e-15)
        p = sharp.to(f64).mean()
        torch.testing.assert_close(land.hessian(w), p * hs + (1 - p) * hf, rtol=1e-15, atol=0)
    xbar = x.mean(0)
    torch.testing.assert_close(land.sharp_minimum, cs + xbar, rtol=0, atol=1e-16)
    torch.testing.assert_close(land.flat_minimum, cf + xbar, rtol=0, atol=1e-16)
    for m, h in ((cs + xbar, hs), (cf + xbar, hf)):
        torch.testing.assert_close(land.grad(m), torch.zeros(2, dtype=f64), rtol=0, atol=1e-15)
        torch.testing.assert_close(land.hessian(m), h, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["paper", "rescaled"])
def test_minima_where_stated(name):
    land = two_basin(name)
    for m, flat in ((land.sharp_minimum, False), (land.flat_minimum, True)):
        assert torch.allclose(land.grad(m), torch.zeros(2, dtype=f64), atol=1e-12)
        assert torch.linalg.eigvalsh(land.hessian(m)).min() > 0
        assert bool(land.in_flat_basin(m)) is flat
    assert torch.allclose(land.sharp_minimum, torch.tensor([1.0, 1.0], dtype=f64), atol=0.05)
    # the flat minimum is flat: its Hessian is ~100x smaller than the sharp one's top eigenvalue
    flat = torch.linalg.eigvalsh(land.hessian(land.flat_minimum)).max()
    assert flat < 0.02 * torch.linalg.eigvalsh(land.sharp_hessian).max()


def test_expected_sharpness_batched_is_the_quadratic_form_at_a_minimum():
    """At the sharp minimum every sample stays on the sharp branch under small perturbations
    (|ξ| ~ 0.005 changes a sample's loss by < 0.1, its branches are ≥ 2.2 apart there), L
    is a quadratic with zero gradient there, so L(w + ξ) − L(w) = ½ ξᵀ H_s ξ exactly: the
    estimate with given ξ is the mean of those forms, chain by chain; drawn ξ ~ N(0, σ²I) give
    σ² Tr H_s / 2 within the exact standard error (Var ½ξᵀHξ = σ⁴ Tr H² / 2)."""
    land = TwoBasin()
    h = land.sharp_hessian
    gen = torch.Generator().manual_seed(3)
    w = land.sharp_minimum.expand(3, 2)
    xi = 0.005 * torch.randn(3, 7, 2, generator=gen, dtype=f64)        # 3 chains, 7 draws
    forms = 0.5 * torch.einsum("cmi,ij,cmj->cm", xi, h, xi)
    torch.testing.assert_close(expected_sharpness_batched(land, w, xi=xi), forms.mean(-1),
                               rtol=1e-9, atol=1e-13)
    sigma, m = 0.005, 4000
    est = expected_sharpness_batched(land, w, sigma=sigma, samples=m, generator=gen)
    assert est.shape == (3,)
    se = math.sqrt(sigma ** 4 * float(torch.trace(h @ h)) / 2 / m)
    exact = sigma ** 2 * float(torch.trace(h)) / 2
    assert ((est - exact).abs() < 4 * se).all(), (est, exact, se)
    assert exact > 20 * se                       # informative: not satisfied by 0


def test_gauss_hermite_grid_integrates_normal_moments_exactly():
    """E z₁² z₂⁴ = 1 · 3 over z ~ N(0, I₂); the weights sum to 1."""
    z, p = gauss_hermite_normal(2, 5)
    assert z.shape == (25, 2) and p.shape == (25,)
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=f64), rtol=0, atol=1e-14)
    torch.testing.assert_close((p * z[:, 0] ** 2 * z[:, 1] ** 4).sum(),
                               torch.tensor(3.0, dtype=f64), rtol=1e-12, atol=0)


def _sharpness_points(land: TwoBasin) -> torch.Tensor:
    """The sharp and flat minima and (0.55, 0.55), on the ridge between the basins."""
    return torch.stack([land.sharp_minimum, land.flat_minimum,
                        torch.tensor([0.55, 0.55], dtype=f64)])


def test_expected_sharpness_quadrature_converges_and_is_exact_on_a_quadratic_basin():
    """Doubling the grid (40 → 80 nodes) moves the value by < 5·10⁻⁴ even across the ridge's
    kinks; at the flat minimum every perturbation stays on the flat branch, L is the
    quadratic |w − c_f − x̄|² + const there and the value is σ² Tr H_f / 2 = 0.02 exactly. On
    the ridge L is locally concave (the min of the two branches): the expectation is below
    L(w), −0.163; at the sharp minimum, 0.941, below the quadratic form's σ² Tr H_s / 2 = 1.1,
    as the flat branch caps some samples' losses within σ = 0.1."""
    land = TwoBasin()
    w = _sharpness_points(land)
    q40 = expected_sharpness_quadrature(land, w, sigma=0.1, nodes=40)
    q80 = expected_sharpness_quadrature(land, w, sigma=0.1, nodes=80)
    assert (q40 - q80).abs().max() < 5e-4, (q40, q80)
    assert abs(float(q80[1]) - 0.01 * float(torch.trace(land.flat_hessian)) / 2) < 1e-12
    assert 0.93 < float(q80[0]) < 0.95 and -0.17 < float(q80[2]) < -0.15, q80
    # chains batched in blocks: the same values one point at a time
    one = torch.stack([expected_sharpness_quadrature(land, p, sigma=0.1, nodes=40) for p in w])
    torch.testing.assert_close(one, q40, rtol=0, atol=1e-12)


def test_monte_carlo_expected_sharpness_is_unbiased_against_the_quadrature():
    """Suppl. B's estimator (M = 100 draws of σ = 0.1) over 200 seeds: its mean lies within 4
    standard errors (the seeds' spread / √200) of the 80-node quadrature, at the sharp
    minimum, the flat minimum and on the ridge, where the exact value is negative; and the
    estimator's own standard error matches that spread. A wrong factor of σ, a bias or a
    missing mean would fail here."""
    land = TwoBasin()
    w = _sharpness_points(land)
    exact = expected_sharpness_quadrature(land, w, sigma=0.1, nodes=80)
    runs = [expected_sharpness_batched(land, w, sigma=0.1, samples=100, with_stderr=True,
                                       generator=torch.Generator().manual_seed(seed))
            for seed in range(200)]
    est = torch.stack([r[0] for r in runs])                            # (200, 3)
    se_of_mean = est.std(0) / math.sqrt(len(runs))
    assert ((est.mean(0) - exact).abs() < 4 * se_of_mean + 5e-4).all(), (est.mean(0), exact)
    # each estimate's own s.e. (std over its M draws / √M) is the seeds' spread of estimates
    own = torch.stack([r[1] for r in runs]).square().mean(0).sqrt()
    torch.testing.assert_close(own, est.std(0), rtol=0.15, atol=0)


def test_escape_reports_the_sharpness_standard_error_or_the_quadrature():
    """The Monte Carlo curve carries the s.e. of its mean over the R chains, sqrt(Σ se_r²)/R,
    drawn from the same ξ; ``sharpness_estimator="quadrature"`` records the quadrature at the
    same iterates (the chains' noise does not depend on the estimator) and no s.e."""
    land = TwoBasin(num_samples=20, seed=1)
    cfg = dict(iterations=4, repetitions=6, sharpness_every=2, sharpness_samples=10,
               record_trajectory=True)
    mc = escape_experiment(land, EscapeConfig(**cfg), methods=["gld_const"])
    quad = escape_experiment(land, EscapeConfig(sharpness_estimator="quadrature", **cfg),
                             methods=["gld_const"])
    traj = mc.trajectory["gld_const"][::2]                              # (3, R, 2)
    torch.testing.assert_close(quad.trajectory["gld_const"], mc.trajectory["gld_const"])
    ses = mc.sharpness_stderr["gld_const"]
    assert len(ses) == 3 and all(0 < se < float("inf") for se in ses)
    exact = expected_sharpness_quadrature(land, traj, sigma=0.1).mean(-1)
    torch.testing.assert_close(torch.tensor(quad.sharpness["gld_const"], dtype=f64), exact,
                               rtol=0, atol=1e-12)
    assert quad.sharpness_stderr == {}
    assert "±" in mc.table() and f"{ses[-1]:.4f}" in mc.table()
    with pytest.raises(UserError, match="sharpness_estimator"):
        EscapeConfig(sharpness_estimator="exact").validate()


def test_top_eigenpairs_closed_form_matches_eigh():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(50, 2, 2, generator=gen, dtype=f64)
    sym = a + a.transpose(-1, -2)
    for absolute in (False, True):
        vals, vecs = top_eigenpairs(sym, 2, absolute=absolute)
        ref = torch.linalg.eigvalsh(sym)
        ref = ref.abs().sort(-1, descending=True).values if absolute else ref.flip(-1)
        assert torch.allclose(vals, ref, atol=1e-12)
        signed = torch.linalg.eigvalsh(sym)  # vectors still diagonalise sym
        diag = (vecs.transpose(-1, -2) @ sym @ vecs).diagonal(dim1=-2, dim2=-1)
        rec = (vecs * diag[..., None, :]) @ vecs.transpose(-1, -2)
        assert torch.allclose(rec, sym, atol=1e-10), signed


@pytest.mark.parametrize("method", ["gld_const", "gld_dynamic", "gld_diag", "gld_leading",
                                    "gld_hessian"])
def test_injected_noise_has_claimed_covariance(method):
    land = TwoBasin.rescaled()
    cfg = EscapeConfig()
    # a state near the basin boundary so that Σ and H are not trivially aligned
    w = torch.tensor([0.55, 0.62], dtype=f64).expand(40000, 2)
    gen = torch.Generator().manual_seed(5)
    eps = sample_method_noise(method, land, w, cfg, generator=gen)
    target = method_noise_covariance(method, land, w[:1], cfg)[0]
    emp = eps.T @ eps / eps.shape[0]
    scale = target.diagonal().max()
    assert torch.allclose(emp, target, atol=0.04 * float(scale)), (emp, target)


@pytest.mark.parametrize("name", ["paper", "rescaled"])
def test_noise_magnitudes_follow_the_paper_definitions(name):
    land = two_basin(name)
    cfg = EscapeConfig(batch_size=1)
    w = land.sharp_minimum[None]
    sgd = method_noise_covariance("sgd", land, w, cfg)[0]
    for m in ("gld_dynamic", "gld_diag", "gld_leading"):  # same expected norm as SGD
        assert torch.isclose(torch.trace(method_noise_covariance(m, land, w, cfg)[0]),
                             torch.trace(sgd))
    assert torch.allclose(method_noise_covariance("gld_leading", land, w, cfg)[0], sgd)  # k=d
    # near the sharp minimum SGD's noise is H Cov(x) H: aligned with the Hessian
    hs = land.sharp_hessian
    cov_x = torch.cov(land.data.T, correction=0)
    assert torch.allclose(sgd, hs @ cov_x @ hs, atol=1e-10)


def test_escape_experiment_mechanics_on_the_rescaled_landscape():
    """The rescaled variant (η λ_max = 1 at η = 0.1), started at c_s + x̄ as first recorded."""
    cfg = EscapeConfig(iterations=600, repetitions=100, sharpness_every=100,
                       sharpness_samples=20, record_trajectory=False, start="sharp_minimum")
    res = escape_experiment(TwoBasin.rescaled(dtype=torch.float32), cfg,
                            methods=("gd", "gld_dynamic", "gld_leading", "gld_hessian"))
    rate = res.success_rate
    assert rate["gd"] == 0.0                       # no noise, no escape
    # Hessian-shaped noise escapes far more often than isotropic noise of SGD's magnitude
    assert rate["gld_hessian"] >= 0.9 and rate["gld_dynamic"] <= 0.1
    # SGD-covariance Gaussian noise beats isotropic noise of the same expected norm
    assert rate["gld_leading"] > rate["gld_dynamic"]
    # sharpness drops for methods that escape (flat basin), not for GD
    assert res.sharpness["gld_hessian"][-1] < 0.2 * res.sharpness["gld_hessian"][0]
    assert res.sharpness["gd"][-1] == pytest.approx(res.sharpness["gd"][0], rel=0.3)
    # a chain that ends in the flat basin has reached it
    for m in rate:
        assert res.reached_rate[m] >= rate[m]


def test_at_the_printed_lr_every_method_escapes():
    """Printed landscape, printed η = 0.1: the sharp minimum is unstable for GD itself, so all
    seven methods end in the flat basin and the paper's ordering cannot appear."""
    cfg = EscapeConfig(repetitions=20, sharpness_every=0, record_trajectory=False)
    res = escape_experiment(TwoBasin(dtype=torch.float32), cfg)
    assert res.success_rate == {m: 1.0 for m in res.success_rate} and len(res.success_rate) == 7


def test_success_rules():
    land = TwoBasin(dtype=torch.float32)
    base = dict(lr=0.005, iterations=200, repetitions=64, sharpness_every=0,
                record_trajectory=True)
    final = escape_experiment(land, EscapeConfig(**base), methods=("sgd",))
    reached = escape_experiment(land, EscapeConfig(**base, success_rule="reached"),
                                methods=("sgd",))
    # same seed, same chains: only the rule differs
    assert torch.equal(final.final["sgd"], reached.final["sgd"])
    traj = final.trajectory["sgd"]                                  # (T+1, R, 2)
    ever = land.in_flat_basin(traj).any(0).double().mean()
    assert reached.success_rate["sgd"] == pytest.approx(float(ever))
    assert final.reached_rate["sgd"] == reached.success_rate["sgd"]
    assert final.success_rate["sgd"] == pytest.approx(
        float(land.in_flat_basin(traj[-1]).double().mean()))


def test_bad_input():
    with pytest.raises(UserError):
        TwoBasin().loss(torch.zeros(3, dtype=f64))
    with pytest.raises(UserError):
        escape_experiment(config=EscapeConfig(iterations=2, repetitions=2), methods=("adam",))
    with pytest.raises(UserError):
        EscapeConfig(lr=-1).validate()
    for lr in (math.nan, math.inf):
        with pytest.raises(UserError, match="lr must be a finite number > 0"):
            EscapeConfig(lr=lr).validate()


def test_a_diverged_chain_is_a_failure_not_an_escape():
    """A NaN iterate is on no branch (every comparison is False), so in_flat_basin called it
    flat: at η = 20 every chain overflows and all seven methods "escaped" 100%."""
    land = TwoBasin(dtype=f64)
    nan = torch.full((2,), math.nan, dtype=f64)
    assert bool(land.in_flat_basin(nan))             # why the experiment must check
    for rule in ("flat_basin", "reached", "corner"):
        cfg = EscapeConfig(lr=20.0, iterations=200, repetitions=4, sharpness_every=0,
                           record_trajectory=False, success_rule=rule)
        res = escape_experiment(land, cfg, methods=("gd", "sgd"))
        for m in ("gd", "sgd"):
            assert not torch.isfinite(res.final[m]).any()
            assert res.diverged_rate[m] == 1.0
            if rule != "reached":                    # some iterate may have crossed it
                assert res.success_rate[m] == 0.0, (rule, m)
        assert "diverged (a non-finite iterate; counted as failures): GD 100.0%" in res.table()
    # stable steps: nothing diverges and the table has no such line
    res = escape_experiment(land, EscapeConfig(lr=0.1, iterations=50, repetitions=4,
                                               sharpness_every=0), methods=("gd",))
    assert res.diverged_rate["gd"] == 0.0 and res.success_rate["gd"] == 1.0
    assert "diverged" not in res.table() and res.to_dict()["diverged_rate"] == {"gd": 0.0}


# ------------------------------------------------ the authors' public-code protocol
def test_authors_landscape_minima_and_formula():
    k1 = k2 = math.cos(math.pi / 4)
    land = TwoBasin.authors_code(seed=3)
    x = land.data
    for w in torch.tensor([[0.3, 0.9], [1.0, 1.0], [-0.8, -1.2], [0.1, -0.2]], dtype=f64):
        x1, y1 = w[0] - x[:, 0] - 1, w[1] - x[:, 1] - 1
        x2, y2 = w[0] - x[:, 0] + 1, w[1] - x[:, 1] + 1
        ref = torch.minimum(10 * (k1 * x1 - k2 * y1) ** 2 + 100 * (k1 * x1 + k2 * y1) ** 2,
                            x2 ** 2 + y2 ** 2)          # the authors' Basin.forward
        assert torch.allclose(land.per_sample_loss(w), ref, atol=1e-12)
    # data-free: minima exactly at (1, 1) and (−1, −1), loss 0, curvatures 200/20 and 2
    bare = TwoBasin.authors_code(data_scale=0.0)
    for c in ([1.0, 1.0], [-1.0, -1.0]):
        w = torch.tensor(c, dtype=f64)
        assert float(bare.loss(w)) == 0.0 and torch.equal(bare.grad(w), torch.zeros(2, dtype=f64))
    assert torch.equal(bare.sharp_minimum, torch.tensor([1.0, 1.0], dtype=f64))
    assert torch.equal(bare.flat_minimum, torch.tensor([-1.0, -1.0], dtype=f64))
    assert torch.allclose(torch.linalg.eigvalsh(bare.sharp_hessian),
                          torch.tensor([20.0, 200.0], dtype=f64))
    assert torch.allclose(bare.flat_hessian, 2 * torch.eye(2, dtype=f64))
    # with data the minima are (±1, ±1) + x̄, x̄ small
    assert torch.allclose(land.grad(land.sharp_minimum), torch.zeros(2, dtype=f64), atol=1e-12)
    assert torch.allclose(land.sharp_minimum, torch.ones(2, dtype=f64), atol=0.02)


def test_authors_data_spread_lies_along_the_soft_sharp_axis():
    """X = (randn(N, 2) · [√10, 1]) K · 10⁻²: Cov X = 10⁻⁴ (10 u uᵀ + v vᵀ), u = (1, −1)/√2 the
    sharp Hessian's soft (eigenvalue 20) axis, v = (1, 1)/√2 its stiff one; at N = 20,000 each
    entry is within 5 Gaussian standard errors of it (the spread put on the stiff axis turns
    the off-diagonal −4.5·10⁻⁴ into +4.5·10⁻⁴)."""
    n = 20000
    x = TwoBasin.authors_code(num_samples=n, seed=1).data
    u = torch.tensor([1.0, -1.0], dtype=f64) / math.sqrt(2)
    v = torch.tensor([1.0, 1.0], dtype=f64) / math.sqrt(2)
    target = 1e-4 * (10 * torch.outer(u, u) + torch.outer(v, v))
    h = TwoBasin.authors_code(data_scale=0.0).sharp_hessian
    torch.testing.assert_close(h @ u, 20 * u)
    emp = torch.cov(x.T, correction=0)
    d = torch.diagonal(target)
    sd = ((torch.outer(d, d) + target ** 2) / n).sqrt()
    assert bool(((emp - target).abs() < 5 * sd).all()), (emp, target)
    assert float(x.mean(0).abs().max()) < 5 * math.sqrt(float(d.max()) / n)


@pytest.mark.parametrize("which", ["authors-code", "rescaled", "paper"])
def test_equal_trace_noise_has_the_target_trace(which):
    if which == "authors-code":
        land, cfg = TwoBasin.authors_code(), EscapeConfig.authors_code(noise_trace=0.013)
    else:
        land, cfg = two_basin(which), EscapeConfig(protocol="authors-code", noise_trace=0.013)
    # sharp minimum, off it, near the basin boundary (mixed branches), in the flat basin
    w = land.sharp_minimum + torch.tensor([[0.0, 0.0], [0.05, -0.03], [-0.45, -0.38],
                                           [-2.0, -1.9]], dtype=f64)
    sgd = method_noise_covariance("sgd", land, w, cfg)
    hess = land.hessian(w)
    for m in ("gld_const", "gld_dynamic", "gld_diag", "gld_leading", "gld_hessian"):
        cov = method_noise_covariance(m, land, w, cfg)
        tr = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
        assert torch.allclose(tr, torch.full_like(tr, 0.013), rtol=1e-12, atol=0), (m, tr)
        # the shape is the variant's own, only rescaled
        ref = {"gld_const": torch.eye(2, dtype=f64).expand_as(sgd),
               "gld_dynamic": torch.eye(2, dtype=f64).expand_as(sgd),
               "gld_diag": torch.diag_embed(sgd.diagonal(dim1=-2, dim2=-1)),
               "gld_leading": sgd, "gld_hessian": hess}[m]
        ref = ref / ref.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] * 0.013
        assert torch.allclose(cov, ref, rtol=1e-10, atol=1e-15), m
    # and the samplers draw from exactly those covariances (same parameters)
    ww = w[2:3].expand(20000, 2)
    for m in ("gld_diag", "gld_leading", "gld_hessian"):
        eps = sample_method_noise(m, land, ww, cfg, generator=torch.Generator().manual_seed(2))
        target = method_noise_covariance(m, land, w[2:3], cfg)[0]
        assert torch.allclose(eps.T @ eps / eps.shape[0], target, atol=0.06 * 0.013), m


def test_authors_protocol_mechanics():
    cfg = EscapeConfig.authors_code(iterations=30, repetitions=16, sharpness_every=0,
                                    record_trajectory=False)
    land = TwoBasin.authors_code(dtype=torch.float32)
    res = escape_experiment(land, cfg, methods=("gd", "gld_const"))
    # GD starts at (1, 1) (the authors' initialize) and heads to the sharp minimum (1, 1) + x̄
    assert torch.allclose(res.final["gd"], land.sharp_minimum.expand(16, 2), atol=1e-3)
    # noise enters without the factor η: 30 steps of Tr = 0.01 move w by ~ O(0.1), not O(η)
    spread = (res.final["gld_const"] - res.final["gd"]).norm(dim=-1).mean()
    assert 0.02 < float(spread) < 0.5
    assert res.success_rate == {"gd": 0.0, "gld_const": 0.0}
    with pytest.raises(UserError):
        EscapeConfig(protocol="other").validate()
    with pytest.raises(UserError):
        EscapeConfig(success_rule="other").validate()


@pytest.mark.parametrize("name", ["paper", "rescaled", "authors-code"])
def test_closed_form_covariance_matches_per_sample_definition(name):
    """TwoBasin.gradient_covariance (masked sums) = eq. (3) from the per-sample gradients, at
    points on each branch and across the ridge (mixed branches)."""
    land = two_basin(name, seed=5)
    gen = torch.Generator().manual_seed(0)
    pts = torch.cat([torch.randn(40, 2, generator=gen, dtype=f64) * 1.5,
                     land.sharp_minimum + 0.3 * torch.randn(20, 2, generator=gen, dtype=f64)])
    frac = land.sharp_fraction(pts)
    assert ((frac > 0) & (frac < 1)).any()               # some points straddle the ridge
    g = land.per_sample_grad(pts)
    c = g - g.mean(-2, keepdim=True)
    ref = c.transpose(-1, -2) @ c / g.shape[-2]
    assert torch.allclose(land.gradient_covariance(pts), ref, atol=1e-10, rtol=1e-10)
    # float32 keeps a few digits even where the mean gradient is large and the spread small
    land32 = two_basin(name, seed=5, dtype=torch.float32)
    cov32 = land32.gradient_covariance(pts.float()).double()
    assert torch.allclose(cov32, ref, atol=1e-4 * float(ref.abs().max()), rtol=1e-3)


# Newcombe (1998), Stat. Med. 17: Table I of "Two-sided confidence intervals for the single
# proportion" (score method) and Table II of "Interval estimation for the difference between
# independent proportions" (method 10), 95% (z = 1.959964)
Z95 = 1.959964


@pytest.mark.parametrize("k, n, lo, hi", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                                          (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)])
def test_wilson_interval_matches_newcombe(k, n, lo, hi):
    from sgdlab.landscapes.escape import wilson_interval

    assert wilson_interval(k, n, Z95) == (pytest.approx(lo, abs=5e-5), pytest.approx(hi, abs=5e-5))


def test_wilson_interval_keeps_its_width_at_zero_and_one():
    """sqrt(p(1 − p)/n) is 0 at p = 0 or 1; the score interval is [0, z²/(n + z²)] there."""
    from sgdlab.landscapes.escape import wilson_interval

    assert wilson_interval(0, 1000, 2.0) == (0.0, pytest.approx(4 / 1004))
    assert wilson_interval(1000, 1000, 2.0) == (pytest.approx(1000 / 1004), 1.0)
    lo, hi = wilson_interval(30, 100, 2.0)
    assert (1 - hi, 1 - lo) == pytest.approx(wilson_interval(70, 100, 2.0))   # symmetric
    assert all(math.isnan(v) for v in wilson_interval(0, 0, 2.0))


def test_binomial_se_is_the_population_standard_error_of_the_rate():
    """sqrt(p(1 − p)/R) of the escape table: R repetitions, not R − 1; 0 at a rate of 0 or 1,
    NaN without repetitions."""
    from sgdlab.landscapes.escape import binomial_se

    assert binomial_se(0.3, 10) == pytest.approx(math.sqrt(0.3 * 0.7 / 10), rel=1e-15)
    assert binomial_se(0.25, 4) == pytest.approx(math.sqrt(3) / 8, rel=1e-15)
    assert binomial_se(0.0, 7) == 0.0 and binomial_se(1.0, 7) == 0.0
    assert math.isnan(binomial_se(0.5, 0))


def test_an_escape_result_gives_each_method_the_wilson_interval_of_its_repetitions():
    """The table, results.json and figure of ``sgdlab landscape escape`` carry it: the
    binomial s.e. beside it is 0 at a rate of 0% (GD's, as a rule)."""
    from sgdlab.landscapes.escape import EscapeConfig, EscapeResult

    res = EscapeResult(EscapeConfig(repetitions=50),
                       success_rate={"gd": 0.0, "sgd": 0.3, "gld_const": 1.0})
    got = res.success_interval()
    assert got["gd"] == (0.0, pytest.approx(4 / 54))            # [0, z²/(n + z²)]
    assert got["gld_const"] == (pytest.approx(50 / 54), 1.0)
    p, n = 0.3, 50                                               # the score interval by hand
    half = 2 * math.sqrt(p * (1 - p) / n + 4 / (4 * n * n)) / (1 + 4 / n)
    assert got["sgd"] == pytest.approx(((p + 2 / n) / (1 + 4 / n) - half,
                                        (p + 2 / n) / (1 + 4 / n) + half))
    assert res.to_dict()["success_interval"] == {m: list(ci) for m, ci in got.items()}
    row = next(ln for ln in res.table().splitlines() if ln.startswith("GD "))
    assert row.split()[1:5] == ["0.0%", "0.0%", "[0.0%,", "7.4%]"]       # rate, s.e., Wilson


@pytest.mark.parametrize("counts, lo, hi", [((56, 70, 48, 80), 0.0524, 0.3339),
                                            ((9, 10, 3, 10), 0.1705, 0.8090),
                                            ((5, 56, 0, 29), -0.0381, 0.1926),
                                            ((0, 10, 0, 20), -0.1611, 0.2775),
                                            ((10, 10, 0, 20), 0.6791, 1.0)])
def test_rate_difference_interval_matches_newcombe(counts, lo, hi):
    from sgdlab.landscapes.escape import rate_difference_interval

    got = rate_difference_interval(*counts, z=Z95)
    assert got == (pytest.approx(lo, abs=5e-5), pytest.approx(hi, abs=5e-5))


@pytest.mark.parametrize("call, match", [
    (lambda: TwoBasin(data_var=float("nan")), "data_var"),
    (lambda: TwoBasin(data=torch.full((4, 2), float("inf"), dtype=f64)), "data has non-finite"),
    (lambda: EscapeConfig(const_sigma=float("nan")).validate(), "const_sigma"),
    (lambda: EscapeConfig(hessian_scale=float("inf")).validate(), "hessian_scale"),
    (lambda: EscapeConfig(noise_trace=float("nan")).validate(), "noise_trace"),
    (lambda: TwoBasin(sharp_weights=(float("nan"), 100.0)), "sharp_weights"),
    (lambda: TwoBasin(flat_weight=float("inf")), "flat_weight"),
    (lambda: TwoBasin.rescaled(sharp_eigs=(float("nan"), 1.0)), "sharp_eigs"),
], ids=["data-var-nan", "data-inf", "const-sigma-nan", "hessian-scale-inf", "trace-nan",
        "sharp-weights-nan", "flat-weight-inf", "sharp-eigs-nan"])
def test_non_finite_constants_are_named_errors(call, match):
    # a NaN data variance gave a NaN loss; a NaN noise scale passed validation and every
    # chain of that method diverged
    with pytest.raises(UserError, match=match):
        call()


@pytest.mark.parametrize("field, value, least", [
    ("seed", 1.5, 0), ("seed", -1, 0), ("seed", float("nan"), 0), ("seed", True, 0),
    ("iterations", 100.5, 1), ("repetitions", 10.5, 1), ("batch_size", 1.5, 1),
    ("leading_k", 1.5, 1), ("hessian_k", 1.5, 1), ("sharpness_samples", 10.5, 1),
    ("sharpness_every", 2.5, 0), ("iterations", True, 1), ("iterations", float("nan"), 1),
    ("iterations", "5", 1),
])
def test_escape_config_refuses_a_non_integer_count_by_name(field, value, least):
    # these were a TypeError deep in the run ('float' object cannot be interpreted as an
    # integer; seed=1.5: torch's "manual_seed expected a long"), or ran: True iterations as 1
    with pytest.raises(UserError, match=f"{field} must be an integer >= {least}"):
        EscapeConfig(**{field: value}).validate()


def test_a_fractional_batch_size_does_not_rescale_gld_dynamic():
    # without SGD among the methods no mini-batch is drawn: batch_size = 1.5 ran and divided
    # Σ by 1.5, a GLD dynamic noise no batch size gives
    cfg = EscapeConfig(iterations=3, repetitions=4, batch_size=1.5, sharpness_every=0,
                       record_trajectory=False)
    with pytest.raises(UserError, match="batch_size must be an integer"):
        escape_experiment(TwoBasin(dtype=f64), cfg, methods=["gld_dynamic"])


def test_escape_config_takes_whole_float_counts_as_ints():
    cfg = EscapeConfig(iterations=6.0, repetitions=4.0, sharpness_every=3.0,
                       sharpness_samples=5.0, record_trajectory=False)
    res = escape_experiment(TwoBasin(dtype=f64), cfg, methods=["gd", "gld_leading"])
    assert cfg.iterations == 6 and type(cfg.iterations) is int
    assert res.sharpness_steps == [0, 3, 6] and res.final["gd"].shape == (4, 2)


@pytest.mark.parametrize("field, value, match", [
    ("lr", "0.1", "lr must be a finite number > 0, got '0.1'"),
    ("lr", True, "lr must be a finite number > 0, not a bool (True)"),
    ("const_sigma", "2", "const_sigma must be a finite number >= 0, got '2'"),
    ("sharpness_sigma", None, "sharpness_sigma must be a finite number >= 0, got None"),
    ("noise_trace", False, "noise_trace must be a finite number >= 0, not a bool (False)"),
    ("record_trajectory", "no", "record_trajectory must be True or False, got 'no'"),
    ("record_trajectory", 1, "record_trajectory must be True or False, got 1"),
])
def test_escape_config_refuses_a_non_number_by_name(field, value, match):
    # a str was a TypeError from '<' in validate; True ran as lr = 1; "no" recorded trajectories
    with pytest.raises(UserError, match=re.escape(match)):
        EscapeConfig(**{field: value}).validate()


def test_gd_sharpness_probe_is_not_the_data_draw_at_seed_0():
    # GD's generator was seeded seed * 1000 + 0: at seed 0 its sharpness probe drew the very
    # normals the landscape's data shifts were drawn from (TwoBasin(seed=0))
    land = TwoBasin(num_samples=50, seed=0, dtype=f64)
    cfg = EscapeConfig(seed=0, iterations=1, repetitions=1, sharpness_samples=50,
                       sharpness_every=1, record_trajectory=False)
    res = escape_experiment(land, cfg, methods=["gd"])
    unit = land.data / math.sqrt(0.01)                        # the draw's standard normals
    same = expected_sharpness_batched(land, land.sharp_center[None],
                                      xi=(unit * cfg.sharpness_sigma)[None])
    assert res.sharpness["gd"][0] != pytest.approx(float(same[0]), rel=1e-9)


def test_method_streams_differ_from_every_data_draw_and_each_other():
    # seed * 1000 + index also gave GLD const at seed 0 the data stream of seed 1
    firsts = {s: torch.randn(4, generator=torch.Generator().manual_seed(s), dtype=f64)
              for s in range(3000)}
    seeds = [method_seed(s, m) for s in range(4) for m in METHODS]
    assert len(set(seeds)) == len(seeds) and min(seeds) >= 2 ** 62
    for seed in seeds:
        draw = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=f64)
        assert not any(torch.equal(draw, d) for d in firsts.values())
    # reproducible: the same (seed, method), the same chains
    cfg = EscapeConfig(iterations=5, repetitions=3, sharpness_every=0, record_trajectory=False)
    a = escape_experiment(TwoBasin(dtype=f64), cfg, methods=["sgd", "gld_const"])
    b = escape_experiment(TwoBasin(dtype=f64), cfg, methods=["gld_const"])
    assert torch.equal(a.final["gld_const"], b.final["gld_const"])


@pytest.mark.parametrize("call", [
    lambda: TwoBasin(num_samples=2.5),
    lambda: TwoBasin.authors_code(num_samples=2.5),
])
def test_a_fractional_number_of_samples_is_a_named_error(call):
    # a TypeError from inside torch.randn before
    with pytest.raises(UserError, match="num_samples must be an integer >= 1"):
        call()


@pytest.mark.parametrize("kw", [{"sharp_center": (math.nan, 1.0)},
                                {"flat_center": (-1.0, math.inf)}])
def test_non_finite_centres_are_named_errors(kw):
    # a NaN centre gave a landscape whose every loss and gradient was NaN
    with pytest.raises(UserError, match="must be finite"):
        TwoBasin(**kw)


def test_the_escape_experiment_names_a_landscape_without_two_basins():
    from sgdlab.landscapes.quadratic import Quadratic

    q = Quadratic(torch.eye(2, dtype=torch.float64), num_samples=5)
    with pytest.raises(UserError, match="runs on a TwoBasin landscape.*got Quadratic"):
        escape_experiment(q, EscapeConfig(iterations=2, repetitions=2, sharpness_every=0))


@pytest.mark.parametrize("method", ["gd", "gld_const", "gld_dynamic", "gld_diag", "gld_leading",
                                    "gld_hessian"])
@pytest.mark.parametrize("m", [1, 5])
def test_one_escape_step_is_zhus_section_4_2_update_by_hand(method, m):
    """The first step of each dynamics at Fig. 3's constants (η = 0.1, m = 1, σ = 2, k = 2,
    σ_H² = 1; the printed loss, float64; also m = 5, where 1/√m shows) written out in §4.2's
    own terms (lines 159-183) with the method's standard-normal draws z: Σ of eq. (3) from
    per-sample gradients by autograd of the loss' definition, H the Hessian of their mean;
    GD θ − ηg₀; GLD const + ησz; GLD dynamic + (η/√m)(Tr Σ/D)^{1/2} z; GLD diagonal
    + (η/√m)Σ_ii^{1/2} z_i; GLD leading + (η/√m)V_kΓ_k^{1/2} z (eq. (12)); GLD Hessian
    + ησ_H U_k|Λ_k|^{1/2} z."""
    from sgdlab.landscapes.escape import run_methods

    land = TwoBasin.paper()
    cfg = EscapeConfig(iterations=1, repetitions=3, sharpness_every=0, record_trajectory=False,
                       batch_size=m)
    final, *_ = run_methods([method], land, cfg, generators=[torch.Generator().manual_seed(7)])
    w0 = land.sharp_center.to(f64).clone().requires_grad_(True)
    losses = _direct_per_sample(land, w0)
    g = torch.stack([torch.autograd.grad(li, w0, retain_graph=True)[0] for li in losses])
    g0 = g.mean(0)
    sigma = covariance_reference(g)                                          # eq. (3)
    hess = torch.autograd.functional.hessian(
        lambda v: _direct_per_sample(land, v).mean(), w0.detach())
    eta, d = cfg.lr, 2
    z = torch.randn((3, 2), generator=torch.Generator().manual_seed(7), dtype=f64)
    base = w0.detach() - eta * g0

    def aligned(mat, code_cov, by_abs):
        vals, vecs = torch.linalg.eigh(mat)
        order = (vals.abs() if by_abs else vals).argsort(descending=True)
        vals, vecs = vals[order], vecs[:, order]
        _, code = top_eigenpairs(code_cov, 2, absolute=by_abs)
        return vals, vecs * torch.sign(torch.diagonal(vecs.T @ code))    # signs of the draw

    if method == "gd":
        want = base.expand(3, 2)
    elif method == "gld_const":
        want = base + eta * cfg.const_sigma * z
    elif method == "gld_dynamic":
        want = base + eta / math.sqrt(m) * math.sqrt(float(torch.trace(sigma)) / d) * z
    elif method == "gld_diag":
        want = base + eta / math.sqrt(m) * torch.diagonal(sigma).sqrt() * z
    elif method == "gld_leading":
        vals, vecs = aligned(sigma, land.gradient_covariance(land.sharp_center) / m, False)
        want = base + eta / math.sqrt(m) * (z * vals.sqrt()) @ vecs.T
    else:
        vals, vecs = aligned(hess, land.hessian(land.sharp_center), True)
        want = base + eta * math.sqrt(cfg.hessian_scale) * (z * vals.abs().sqrt()) @ vecs.T
    torch.testing.assert_close(final[0], want, rtol=0, atol=1e-10)


def test_escape_rate_intervals_by_hand():
    """z = 2, n = 4 (z² = n): Wilson's centre (p + z²/2n)/(1 + z²/n) and half-width
    z √(p(1 − p)/n + z²/4n²)/(1 + z²/n) are (0.25, 0.25) at k = 0, i.e. [0, z²/(n + z²)] =
    [0, 1/2], and (1/2, √2/4) at k = 2. Newcombe's difference 2/4 − 0/4 then spans
    1/2 − √((√2/4)² + (1/2)²) to 1/2 + √((√2/4)² + 0²). The standard error of 1/4 over 3 runs
    is √(3/16/3) = 1/4."""
    from sgdlab.landscapes.escape import binomial_se, rate_difference_interval, wilson_interval

    assert wilson_interval(0, 4) == (0.0, pytest.approx(0.5, abs=1e-15))
    assert wilson_interval(2, 4) == pytest.approx((0.5 - 2 ** 0.5 / 4, 0.5 + 2 ** 0.5 / 4),
                                                  abs=1e-15)
    assert rate_difference_interval(2, 4, 0, 4) == pytest.approx(
        (0.5 - 0.375 ** 0.5, 0.5 + 2 ** 0.5 / 4), abs=1e-15)
    assert binomial_se(0.25, 3) == pytest.approx(0.25, abs=1e-15)


def _ar1_stationary_cov(a, c):
    """S = A S Aᵀ + C solved exactly: vec S = (I − A⊗A)⁻¹ vec C (float64, 2×2)."""
    eye = torch.eye(4, dtype=f64)
    return torch.linalg.solve(eye - torch.kron(a, a), c.reshape(4)).reshape(2, 2)


@pytest.mark.parametrize("method, protocol", [("gld_const", "paper"),
                                              ("gld_const", "authors-code"), ("sgd", "paper")])
def test_chains_in_the_sharp_basin_reach_the_ar1_stationary_law(method, protocol):
    """Inside the sharp basin every sample is on the sharp branch, so the update is linear:
    w − w* ← (I − ηH_s)(w − w*) + noise, with noise η σ z (GLD const, paper), √(τ/d) z
    (authors-code: ε after the step, no η), or −η H_s (x̄_B − x̄) (SGD, B a size-m
    with-replacement batch: covariance η² H_s Cov(x) H_s / m). The chains' covariance after
    the transient is the discrete OU (AR(1)) law S = A S Aᵀ + C, A = I − ηH_s; solved here by
    the Kronecker formula, compared within 6 standard errors of a covariance of R chains."""
    # λ = 10, 1 (A's eigenvalues 0, 0.9); data std 0.05 keeps every sample's sharp branch
    # active over the chains' spread (the printed 0.1 puts one of these 20 near the ridge)
    land = TwoBasin.rescaled(num_samples=20, seed=1, data_var=0.0025)
    eta, sigma, tau, m, reps = 0.1, 0.05, 0.0005, 3, 2000
    cfg = EscapeConfig(lr=eta, iterations=60, repetitions=reps, batch_size=m,
                       const_sigma=sigma, sharpness_every=0, record_trajectory=False,
                       start="sharp_minimum", protocol=protocol, noise_trace=tau)
    final, *_ = run_methods([method], land, cfg, generators=[torch.Generator().manual_seed(3)])
    h = land.sharp_hessian
    a = torch.eye(2, dtype=f64) - eta * h
    if method == "sgd":
        c = eta ** 2 * h @ torch.cov(land.data.T, correction=0) @ h / m
    elif protocol == "paper":
        c = eta ** 2 * sigma ** 2 * torch.eye(2, dtype=f64)
    else:
        c = tau / 2 * torch.eye(2, dtype=f64)
    s = _ar1_stationary_cov(a, c)
    dev = final[0] - land.sharp_minimum
    assert torch.equal(land.sharp_fraction(final[0]), torch.ones(reps, dtype=f64))
    emp = dev.T @ dev / reps
    se = ((torch.outer(s.diagonal(), s.diagonal()) + s ** 2) / reps).sqrt()
    assert bool(((emp - s).abs() < 6 * se).all()), (emp, s)
    assert float(dev.mean(0).abs().max()) < 6 * math.sqrt(float(s.diagonal().max()) / reps)


def test_a_singular_sharp_hessian_is_refused():
    """The basins are quadratics with positive definite Hessians; a singular one (a valley
    with no minimum along one axis) is refused by name, as a negative definite one is."""
    for h in ([[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]]):
        with pytest.raises(UserError, match="sharp_hessian must be a symmetric positive definite"):
            TwoBasin(sharp_hessian=torch.tensor(h, dtype=f64))


def test_in_flat_basin_needs_more_than_half_of_the_samples():
    """x = (0, 0) and (2, 2) at w = (1, 1): w − x₁ = c_s is sharp-branch, w − x₂ = c_f is
    flat-branch, so exactly half the samples are flat and w is not "in the flat basin" (most
    samples' active branch is the flat quadratic); a third sample at (2, 2) tips it."""
    w = torch.tensor([1.0, 1.0], dtype=f64)
    half = TwoBasin(data=torch.tensor([[0.0, 0.0], [2.0, 2.0]], dtype=f64))
    assert float(half.sharp_fraction(w)) == 0.5
    assert not bool(half.in_flat_basin(w))
    most = TwoBasin(data=torch.tensor([[0.0, 0.0], [2.0, 2.0], [2.0, 2.0]], dtype=f64))
    assert bool(most.in_flat_basin(w))


def test_escape_config_defaults_are_the_constants_of_fig3_and_suppl_b():
    """Fig. 3 caption / Suppl. B: η = 0.1, m = 1, σ = 2 (GLD const), k = 2 (GLD leading),
    σ_H² = 1, 600 iterations, 100 runs, sharpness σ = 0.1 with M = 100; every optimizer starts
    at the sharp minimum (w₁, w₂) = (1, 1) (§4.2, line 187)."""
    cfg = EscapeConfig()
    assert (cfg.lr, cfg.batch_size, cfg.const_sigma, cfg.leading_k, cfg.hessian_scale) == \
        (0.1, 1, 2.0, 2, 1.0)
    assert (cfg.iterations, cfg.repetitions) == (600, 100)
    assert (cfg.sharpness_sigma, cfg.sharpness_samples) == (0.1, 100)
    assert (cfg.start, cfg.protocol, cfg.success_rule) == ("sharp_center", "paper", "flat_basin")
    land = TwoBasin(dtype=f64)
    final, *_ = run_methods(["gd"], land, EscapeConfig(iterations=1, repetitions=1,
                                                         sharpness_every=0, lr=1e-300),
                            generators=[torch.Generator()])
    torch.testing.assert_close(final[0, 0], torch.tensor([1.0, 1.0], dtype=f64))


def test_the_count_of_successes_is_the_rate_times_the_runs_rounded():
    """29/100 · 100 is 28.999999999999996 in floating point: the count is 29, not 28."""
    res = EscapeResult(config=EscapeConfig(repetitions=100), success_rate={"sgd": 29 / 100})
    assert res.successes("sgd") == 29


@pytest.mark.parametrize("method", ["gld_dynamic", "gld_diag", "gld_leading"])
def test_drawn_noise_divides_sigma_by_the_batch_size(method):
    """Called on its own (no Σ passed in), the sampler draws from Σ/m (§4.2: (η/√m) ε with
    ε ~ N(0, ·Σ)): at m = 4 the draws' covariance is a quarter of eq. (3)'s Σ, computed here
    from per-sample gradients by autograd, in the method's form (Tr Σ/d I, diag Σ, Σ)."""
    land = TwoBasin.rescaled()
    w0 = torch.tensor([0.55, 0.62], dtype=f64)           # near the ridge: Σ not ∝ H
    g = torch.func.jacrev(land.per_sample_loss)(w0)       # (N, 2)
    sigma = covariance_reference(g) / 4
    target = {"gld_dynamic": torch.trace(sigma) / 2 * torch.eye(2, dtype=f64),
              "gld_diag": torch.diag(sigma.diagonal()), "gld_leading": sigma}[method]
    eps = sample_method_noise(method, land, w0.expand(20000, 2), EscapeConfig(batch_size=4),
                              generator=torch.Generator().manual_seed(5))
    emp = eps.T @ eps / eps.shape[0]
    assert torch.allclose(emp, target, atol=0.04 * float(target.diagonal().max())), (emp, target)


def test_a_chain_that_overflows_without_reaching_the_flat_basin_never_reached_it():
    """H_s = I, H_f = 2 I, x̄ = (2, −2): both samples are on the sharp branch at c_s = (1, 1)
    (½|(−4, 4)|² = 16 < |(−2, 6)|² = 40 and 0 < 4), where ∇L = −x̄;
    GD at η = 10³⁰⁸ steps to (+inf, −inf) and then to NaN. Neither iterate lies in the flat
    basin (a non-finite point is on no branch, though its all-False branch mask reads
    "flat"), so the chain never reached it: first passage −1, reached rate 0."""
    land = TwoBasin(sharp_hessian=torch.eye(2, dtype=f64), flat_hessian=2 * torch.eye(
        2, dtype=f64), data=torch.tensor([[4.0, -4.0], [0.0, 0.0]], dtype=f64))
    assert float(land.sharp_fraction(land.sharp_center)) == 1.0
    cfg = EscapeConfig(lr=1e308, iterations=3, repetitions=2, sharpness_every=0,
                       record_trajectory=True, success_rule="reached")
    res = escape_experiment(land, cfg, methods=("gd",))
    traj = res.trajectory["gd"][:, 0]
    assert traj[1].tolist() == [math.inf, -math.inf] and bool(traj[2:].isnan().all())
    assert res.diverged_rate["gd"] == 1.0
    assert res.first_passage["gd"].tolist() == [-1, -1]
    assert res.reached_rate["gd"] == 0.0 and res.success_rate["gd"] == 0.0


@pytest.mark.parametrize("centre, corner", [((1.0, -1.0), False), ((-1.0, 1.0), False),
                                            ((-1.0, -1.0), True)])
def test_the_corner_rule_needs_both_coordinates_below_minus_a_half(centre, corner):
    """No data and the start at c_s: GD's gradient is 0 there, so the final iterate is c_s;
    the authors' success test is both coordinates < −0.5, not either."""
    flat = (3.0, 3.0)
    land = TwoBasin(data=torch.zeros(1, 2, dtype=f64), sharp_center=centre, flat_center=flat)
    cfg = EscapeConfig(iterations=3, repetitions=2, sharpness_every=0,
                       record_trajectory=False, success_rule="corner")
    res = escape_experiment(land, cfg, methods=("gd",))
    assert res.final["gd"].tolist() == [list(centre)] * 2
    assert res.success_rate["gd"] == float(corner)


@pytest.mark.parametrize("n", [5, 65, 77, 146])
def test_wilson_interval_ends_at_exactly_zero_and_one_for_rates_zero_and_one(n):
    """At k = 0 the Wilson score interval is [0, z²/(n + z²)] and at k = n it is
    [n/(n + z²), 1] (centre ± half-width cancel exactly); the computed ends are exactly 0 and
    1 at these n, where the floating-point sums miss them by an ulp."""
    z2 = 4.0
    lo, hi = wilson_interval(0, n)
    assert lo == 0.0 and hi == pytest.approx(z2 / (n + z2), rel=1e-14)
    lo, hi = wilson_interval(n, n)
    assert hi == 1.0 and lo == pytest.approx(n / (n + z2), rel=1e-14)


def test_escape_methods_one_name_none_or_repeated():
    """methods="gd" was read as ['g', 'd'], () failed in torch.stack, ("gd", "gd") ran GD
    twice into one entry of the result."""
    land = TwoBasin(num_samples=5, dtype=torch.float64)
    cfg = EscapeConfig(lr=0.005, repetitions=2, iterations=2, sharpness_every=0,
                       record_trajectory=False)
    one = escape_experiment(land, cfg, methods="gd")
    assert list(one.success_rate) == ["gd"]
    again = escape_experiment(land, cfg, methods=("gd",))
    assert torch.equal(one.final["gd"], again.final["gd"])
    with pytest.raises(UserError, match="at least one"):
        escape_experiment(land, cfg, methods=())
    with pytest.raises(UserError, match="methods repeat gd"):
        escape_experiment(land, cfg, methods=("gd", "sgd", "gd"))
