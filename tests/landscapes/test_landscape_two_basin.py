"""Two-basin landscape (Zhu et al. App. B) and the escape experiment."""
import math

import pytest
import torch

from sgdlab.errors import UserError
from sgdlab.landscapes.escape import (
    EscapeConfig, escape_experiment, method_noise_covariance, sample_method_noise,
    top_eigenpairs,
)
from sgdlab.landscapes.two_basin import TwoBasin

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
    land = TwoBasin(num_samples=20, seed=3)
    w = torch.tensor([0.3, -0.4], dtype=f64)
    assert torch.allclose(land.per_sample_loss(w), _direct_per_sample(land, w), atol=1e-12)
    evals, evecs = torch.linalg.eigh(land.sharp_hessian)
    assert torch.allclose(evals, torch.tensor([1.0, 10.0], dtype=f64))
    stiff = evecs[:, 1]
    theta = 5 * math.pi / 6
    assert abs(abs(stiff @ torch.tensor([math.cos(theta), math.sin(theta)], dtype=f64)) - 1) < 1e-12
    assert land.data.shape == (20, 2)


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


def test_minima_where_stated():
    land = TwoBasin()
    for m, flat in ((land.sharp_minimum, False), (land.flat_minimum, True)):
        assert torch.allclose(land.grad(m), torch.zeros(2, dtype=f64), atol=1e-12)
        assert torch.linalg.eigvalsh(land.hessian(m)).min() > 0
        assert bool(land.in_flat_basin(m)) is flat
    assert torch.allclose(land.sharp_minimum, torch.tensor([1.0, 1.0], dtype=f64), atol=0.05)
    # the flat minimum is flat: its Hessian is 100x smaller than the sharp one's top eigenvalue
    assert torch.linalg.eigvalsh(land.hessian(land.flat_minimum)).max() < 0.2


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
        rec = (vecs * (vecs.transpose(-1, -2) @ sym @ vecs).diagonal(dim1=-2, dim2=-1)[..., None, :]) \
            @ vecs.transpose(-1, -2)
        assert torch.allclose(rec, sym, atol=1e-10), signed


@pytest.mark.parametrize("method", ["gld_const", "gld_dynamic", "gld_diag", "gld_leading",
                                    "gld_hessian"])
def test_injected_noise_has_claimed_covariance(method):
    land = TwoBasin()
    cfg = EscapeConfig()
    # a state near the basin boundary so that Σ and H are not trivially aligned
    w = torch.tensor([0.55, 0.62], dtype=f64).expand(40000, 2)
    gen = torch.Generator().manual_seed(5)
    eps = sample_method_noise(method, land, w, cfg, generator=gen)
    target = method_noise_covariance(method, land, w[:1], cfg)[0]
    emp = eps.T @ eps / eps.shape[0]
    scale = target.diagonal().max()
    assert torch.allclose(emp, target, atol=0.04 * float(scale)), (emp, target)


def test_noise_magnitudes_follow_the_paper_definitions():
    land = TwoBasin()
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


def test_escape_experiment_mechanics_and_relative_outcome():
    cfg = EscapeConfig(iterations=600, repetitions=100, sharpness_every=100,
                       sharpness_samples=20, record_trajectory=False)
    res = escape_experiment(config=cfg, methods=("gd", "gld_dynamic", "gld_leading",
                                                 "gld_hessian"))
    rate = res.success_rate
    assert rate["gd"] == 0.0                       # no noise, no escape
    # Hessian-shaped noise escapes far more often than isotropic noise of SGD's magnitude
    assert rate["gld_hessian"] >= 0.9 and rate["gld_dynamic"] <= 0.1
    # SGD-covariance Gaussian noise beats isotropic noise of the same expected norm
    assert rate["gld_leading"] > rate["gld_dynamic"]
    # sharpness drops for methods that escape (flat basin), not for GD
    assert res.sharpness["gld_hessian"][-1] < 0.2 * res.sharpness["gld_hessian"][0]
    assert res.sharpness["gd"][-1] == pytest.approx(res.sharpness["gd"][0], rel=0.3)


@pytest.mark.xfail(strict=True, reason="Zhu et al. report SGD (m=1) escaping far more often "
                   "than GLD const/dynamic/diag; with the reconstructed curvatures and σ=2 our "
                   "run gives SGD 0% and GLD const ~97% (docs/design/landscapes.md)")
def test_paper_claim_sgd_beats_isotropic():
    cfg = EscapeConfig(sharpness_every=0, record_trajectory=False)
    rate = escape_experiment(config=cfg, methods=("gld_const", "sgd")).success_rate
    assert rate["sgd"] > rate["gld_const"] + 0.3


def test_bad_input():
    with pytest.raises(UserError):
        TwoBasin().loss(torch.zeros(3, dtype=f64))
    with pytest.raises(UserError):
        escape_experiment(config=EscapeConfig(iterations=2, repetitions=2), methods=("adam",))
    with pytest.raises(UserError):
        EscapeConfig(lr=-1).validate()


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


@pytest.mark.parametrize("which", ["authors", "issue"])
def test_equal_trace_noise_has_the_target_trace(which):
    if which == "authors":
        land, cfg = TwoBasin.authors_code(), EscapeConfig.authors_code(noise_trace=0.013)
    else:
        land, cfg = TwoBasin(), EscapeConfig(protocol="equal-trace", noise_trace=0.013)
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
