"""Spherical 3-spin glass: energy/gradient against the raw definition and autograd."""
import math

import pytest
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes.pspin import (PSpinGlass, cluster_minima, embed_tsne, overlaps,
                                    mean_angular_distance, mean_cosine_distance, regime_field)

f64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _raw_energy(p: PSpinGlass, s: torch.Tensor) -> torch.Tensor:
    return -torch.einsum("ijk,i,j,k->", p.J, s, s, s) / p.n - p.h @ s


def test_energy_and_gradient_match_definition_and_autograd():
    p = PSpinGlass(9, nu=0.7, seed=1)
    gen = torch.Generator().manual_seed(0)
    s = p.random_starts(5, generator=gen)
    for i in range(5):
        assert torch.isclose(p.loss(s[i]), _raw_energy(p, s[i]), atol=1e-12)
        auto = torch.func.grad(lambda x: _raw_energy(p, x))(s[i])
        assert torch.allclose(p.grad(s[i]), auto, atol=1e-12)
    e, g = p.energy_and_grad(s)
    assert torch.allclose(e, p.loss(s)) and torch.allclose(g, p.grad(s))


def test_disorder_is_standard_normal_couplings_and_a_field_of_variance_nu_squared():
    """J_ijk ~ N(0, 1) i.i.d. and h ~ N(0, ν² I), the normalisation that puts ν_c at √3: over
    200 glasses of N = 10 (200,000 couplings, 2,000 field entries) the sample means and
    variances are within 5 standard errors (the variance of a coupling or field drawn at half
    the scale, or of ν² h for ν h, is 0.25: 47 and 4.7 times the tolerance)."""
    nu = 0.5
    glasses = [PSpinGlass(10, nu=nu, seed=s) for s in range(200)]
    j = torch.stack([g.J for g in glasses]).reshape(-1)
    h = torch.stack([g.h for g in glasses]).reshape(-1) / nu
    for x in (j, h):
        n = len(x)
        assert abs(float(x.mean())) < 5 / math.sqrt(n)
        assert abs(float(x.var()) - 1) < 5 * math.sqrt(2 / n)


def test_random_starts_are_uniform_on_the_sphere_of_radius_root_n():
    """|σ| = √N exactly, and uniform on that sphere: E σ = 0 and E σσᵀ = I (isotropy with
    |σ|² = N); over 4,000 starts in N = 5 each entry is within 5 standard errors (Var σ_i = 1,
    Var σ_i² = 2(N − 1)/(N + 2), Var σ_iσ_j = N/(N + 2)). Starts in the positive orthant, or
    uniform in the cube, have E σ_i > 0."""
    n, m = 5, 4000
    s = PSpinGlass(n, nu=0.5).random_starts(m, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(s.norm(dim=-1), torch.full((m,), math.sqrt(n), dtype=f64))
    assert float(s.mean(0).abs().max()) < 5 / math.sqrt(m)
    second = s.T @ s / m
    sd = torch.full((n, n), math.sqrt(n / (n + 2) / m), dtype=f64)
    sd.diagonal().fill_(math.sqrt(2 * (n - 1) / (n + 2) / m))
    assert bool(((second - torch.eye(n, dtype=f64)).abs() < 5 * sd).all()), second


def test_riemannian_gradient_is_tangent_and_is_the_sphere_derivative():
    p = PSpinGlass(12, regime="critical", seed=2)
    gen = torch.Generator().manual_seed(1)
    s = p.random_starts(4, generator=gen)
    rg = p.riemannian_grad(s)
    assert torch.allclose((rg * s).sum(-1), torch.zeros(4, dtype=f64), atol=1e-10)
    # directional derivative along a tangent curve on the sphere equals <∇_S H, v>
    v = torch.randn(4, 12, generator=gen, dtype=f64)
    v = v - (v * s).sum(-1, keepdim=True) / p.n * s
    eps = 1e-6
    fd = (p.loss(p.project(s + eps * v)) - p.loss(p.project(s - eps * v))) / (2 * eps)
    assert torch.allclose(fd, (rg * v).sum(-1), rtol=1e-5, atol=1e-7)


def test_descent_reaches_minima_on_the_sphere():
    p = PSpinGlass(20, regime="glassy", seed=3)
    gen = torch.Generator().manual_seed(2)
    res = p.descend(p.random_starts(24, generator=gen), lr=0.1, tol=1e-4, max_steps=4000)
    assert torch.allclose(res.sigma.norm(dim=-1), torch.full((24,), math.sqrt(20), dtype=f64))
    assert res.converged.float().mean() > 0.9
    conv = res.sigma[res.converged]
    # second-order check at each converged point: the sphere Hessian is PSD (a minimum)
    for s in conv[:3]:
        h = torch.func.hessian(lambda x: p.loss(p.project(x)))(s)
        proj = torch.eye(20, dtype=f64) - torch.outer(s, s) / 20
        ev = torch.linalg.eigvalsh(proj @ h @ proj)
        assert ev.min() > -1e-6
    labels, reps = cluster_minima(conv)
    assert len(reps) >= 2  # glassy: several distinct minima from 24 starts
    # trivial regime: every start falls into the same minimum
    q = PSpinGlass(20, regime="trivial", seed=3)
    res_t = q.descend(q.random_starts(12, generator=gen), max_steps=2000)
    assert len(cluster_minima(res_t.sigma)[1]) == 1
    assert res_t.energy_per_spin.std() < 1e-6
    # thesis §2.4.1: cosine distance ≈ 0 between trivial-regime minima, ≈ 1 between glassy ones
    assert mean_cosine_distance(res_t.sigma) < 1e-6
    assert mean_cosine_distance(conv) > 0.3


def test_clustering_and_embedding_on_constructed_points():
    base = torch.eye(4, dtype=f64) * 2  # N=4: four orthogonal points on the sphere radius 2
    pts = torch.cat([base, base + 1e-4]) / (torch.cat([base, base + 1e-4]).norm(dim=-1,
                                                                          keepdim=True)) * 2
    labels, reps = cluster_minima(pts)
    assert len(reps) == 4 and labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    emb = embed_tsne(torch.randn(12, 5, dtype=f64))
    assert emb.shape == (12, 2)
    # pairs of orthogonal points have cosine distance 1, identical ones 0: 4 of the 28 pairs
    # are identical (up to 1e-4) -> mean (28 - 4) / 28
    assert mean_cosine_distance(pts) == pytest.approx(24 / 28, abs=1e-3)
    assert math.isnan(mean_cosine_distance(pts[:1]))


@pytest.mark.parametrize("b", [2, 7, 8, 50])
def test_mean_cosine_distance_cannot_exceed_one_plus_one_over_b_minus_one(b):
    """The bound behind the thesis' "1.16 for Figure 2.2a" (line 678; docs/FIDELITY.md): the
    mean of 1 − q_ab over pairs of B points on the sphere is at most 1 + 1/(B − 1), reached
    by points summing to zero (a regular simplex), so 1.16 needs B ≤ 7; against the pairwise
    mean of the (B, B) overlaps of random points."""
    n = 10
    gen = torch.Generator().manual_seed(b)
    x = torch.randn(b, n, generator=gen, dtype=f64)
    top = 1 + 1 / (b - 1)
    rand = math.sqrt(n) * x / x.norm(dim=-1, keepdim=True)
    q = rand @ rand.T / n
    pairs = torch.triu_indices(b, b, 1)
    assert mean_cosine_distance(rand) == pytest.approx(float((1 - q[pairs[0], pairs[1]]).mean()))
    assert mean_cosine_distance(rand) <= top + 1e-12
    if b <= n:          # e_a − (1/B) Σ e_c: B points of one norm that sum to zero
        simplex = torch.zeros(b, n, dtype=f64)
        simplex[:, :b] = torch.eye(b, dtype=f64) - 1 / b
        simplex = math.sqrt(n) * simplex / simplex.norm(dim=-1, keepdim=True)
        assert mean_cosine_distance(simplex) == pytest.approx(top)
    assert (top > 1.16) is (b <= 7)


@pytest.mark.parametrize("chunk", [1, 3, 1024])
def test_mean_angle_is_the_pairs_arccos_overlap_by_hand(chunk):
    """The reading cosine-distance=angle of §2.4.1's "average cosine distance" (line 678):
    the mean over pairs a < b of arccos q_ab, against a loop over the pairs with math.acos,
    on points of different norms (only directions count), whatever the chunking."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 5, generator=gen, dtype=f64) * torch.arange(1, 8, dtype=f64)[:, None]
    u = x / x.norm(dim=-1, keepdim=True)
    pairs = [math.acos(float(u[a] @ u[b])) for a in range(7) for b in range(a + 1, 7)]
    assert mean_angular_distance(x, chunk=chunk) == pytest.approx(sum(pairs) / len(pairs),
                                                                  rel=1e-12)
    # B points summing to zero: every angle is arccos(−1/(B − 1)), above 1.16 rad; four
    # orthogonal points, each with a near copy: 24 of the 28 pairs at π/2, 4 at ≈ 0
    simplex = torch.eye(4, dtype=f64) - 1 / 4
    assert mean_angular_distance(simplex, chunk=chunk) == pytest.approx(math.acos(-1 / 3))
    base = torch.eye(4, dtype=f64) * 2
    pts = torch.cat([base, base]) * 1.0
    assert mean_angular_distance(pts, chunk=chunk) == pytest.approx(24 / 28 * math.pi / 2)
    assert math.isnan(mean_angular_distance(pts[:1]))


def test_mean_angle_of_copies_is_zero_not_nan():
    """A point and its copy have q = 1 up to rounding; a normalised overlap that rounds to
    1 + 4e-16 (several of these draws) has arccos NaN without the clamp. Copy pair 0, the
    antipodes π each, up to arccos' √ε sensitivity at ±1 (≈ 3e-8)."""
    xs = [torch.randn(50, generator=torch.Generator().manual_seed(s), dtype=f64)
          for s in range(20)]
    assert any(float((x / x.norm()) @ (x / x.norm())) > 1.0 for x in xs)   # the clamp's case
    for x in xs:
        assert mean_angular_distance(torch.stack([x, x, -x])) == pytest.approx(
            2 * math.pi / 3, abs=1e-7)


def test_regimes_and_bad_input():
    assert regime_field("glassy", 100) == 0.01
    assert regime_field("critical", 100) == pytest.approx(math.sqrt(3) * math.sqrt(0.99))
    # eq. (2.15) with J = 1, p = 3: B = (3 − ν²)/(9 + ν²), zero at ν_c = √3; the polynomial
    # regime (eq. (2.19) at τ = −1/2) sits just below it, B = 1/(4N − 1), within O(1/N)
    for n in (20, 100):
        nu2 = regime_field("critical", n) ** 2
        assert (3 - nu2) / (9 + nu2) == pytest.approx(1 / (4 * n - 1))
    with pytest.raises(UserError):
        regime_field("hot", 10)
    with pytest.raises(UserError):
        PSpinGlass(10)
    with pytest.raises(UserError):
        PSpinGlass(10, nu=1.0).loss(torch.zeros(3, dtype=f64))
    with pytest.raises(UserError, match="zero vector"):
        PSpinGlass(10, nu=1.0).descend(torch.zeros(2, 10, dtype=f64))


def test_a_float32_configuration_is_evaluated_in_float64():
    # the contraction's matmul refused float32 σ on the float64 glass (a RuntimeError about
    # mat1 and mat2 dtypes); the other landscapes promote, and so does the glass now
    p = PSpinGlass(6, nu=0.5, seed=2)
    s = p.random_starts(3, generator=torch.Generator().manual_seed(1))
    s32 = s.float()
    assert p.loss(s32).dtype == f64
    torch.testing.assert_close(p.loss(s32), p.loss(s32.double()), rtol=0, atol=1e-12)
    e, g = p.energy_and_grad(s32)
    torch.testing.assert_close(g, p.grad(s32.double()), rtol=0, atol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: PSpinGlass(5, nu=float("nan")), "nu must be"),
    (lambda: PSpinGlass(5, nu=1.0).descend(torch.ones(2, 5, dtype=f64), lr=float("nan")), "lr"),
    (lambda: PSpinGlass(5, nu=1.0).descend(torch.full((2, 5), float("nan"), dtype=f64)),
     "starts has non-finite"),
], ids=["nu-nan", "lr-nan", "starts-nan"])
def test_non_finite_field_step_and_starts_are_named_errors(call, match):
    # ν = NaN and η = NaN descended to NaN energies; a NaN start was called "the zero vector"
    with pytest.raises(UserError, match=match):
        call()


def test_the_spin_glass_entry_draws_its_starts_apart_from_the_disorder(monkeypatch):
    # §2.4.1 samples σ¹ "uniformly on S^{N−1}(√N)", independently of J. A starts generator
    # seeded with the glass' seed replayed the disorder's draws: start k was J_0k· rescaled
    from types import SimpleNamespace

    from sgdlab.experiments.procedures.landscape_runs import PSpinProcedure
    from sgdlab.landscapes.pspin import starts_seed

    seen = {}
    descend = PSpinGlass.descend

    def spy(self, starts, **kw):
        seen["glass"], seen["starts"] = self, starts.clone()
        return descend(self, starts, **kw)

    monkeypatch.setattr(PSpinGlass, "descend", spy)
    PSpinProcedure().run(SimpleNamespace(params={"regime": "glassy", "n": 8, "starts": 6,
                                                 "max_steps": 5}, seed=3),
                           SimpleNamespace(device="cpu"))
    glass, starts = seen["glass"], seen["starts"]
    rows = glass.project(glass.J.reshape(-1, 8)[:6])
    q = (starts * rows).sum(-1) / 8              # overlap of each start with its J row
    assert float(q.abs().max()) < 0.99
    # the starts' seed is the run seed's own stream, never a seed a glass is drawn with
    assert starts_seed(3) == starts_seed(3) != starts_seed(4)
    assert all(starts_seed(s) >= 2 ** 62 for s in range(50))
    with pytest.raises(UserError, match="seed"):
        starts_seed(-1)


@pytest.mark.parametrize("call, match", [
    (lambda: PSpinGlass(4.5, nu=0.1), "n must be an integer >= 2"),
    (lambda: PSpinGlass(1, nu=0.1), "n must be an integer >= 2"),
    (lambda: PSpinGlass(4, nu=0.1).random_starts(2.5), "count must be an integer >= 0"),
])
def test_fractional_sizes_are_named_errors(call, match):
    # each was a TypeError from inside torch.randn
    with pytest.raises(UserError, match=match):
        call()


def test_a_whole_number_size_is_an_int():
    p = PSpinGlass(torch.tensor(4), nu=0.1)         # a 0-d tensor was kept as the dimension
    assert type(p.dim) is int and p.dim == 4
    assert p.random_starts(3.0).shape == (3, 4)


def test_cluster_minima_joins_at_an_overlap_equal_to_the_threshold():
    """Overlaps exact in binary: q(a, b) = (1 + 1 + 1 − 1)/4 = 1/2 and q(a, a) = 1, so b joins
    a at threshold 1/2 and a copy of a joins it at threshold 1 (q ≥ threshold), while c, with
    q(a, c) = 0, starts its own cluster."""
    a = torch.tensor([1.0, 1, 1, 1], dtype=f64)
    b = torch.tensor([1.0, 1, 1, -1], dtype=f64)
    c = torch.tensor([1.0, 1, -1, -1], dtype=f64)
    labels, reps = cluster_minima(torch.stack([a, b, c]), threshold=0.5)
    assert labels.tolist() == [0, 0, 1] and reps == [0, 2]
    labels, reps = cluster_minima(torch.stack([a, b, a]), threshold=1.0)
    assert labels.tolist() == [0, 1, 0] and reps == [0, 1]


def test_overlaps_are_dot_products_over_the_number_of_spins():
    """Three points of N = 4 spins: q = σ_a·σ_b / 4, by hand 1, 1/2, 0 (B = 3 ≠ N)."""
    sigma = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, -1], [1, 1, -1, -1]], dtype=f64)
    expect = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 1.0]], dtype=f64)
    torch.testing.assert_close(overlaps(sigma), expect, atol=0, rtol=0)
