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
                   "run gives SGD 0% and GLD const ~97% (docs/notes/issue-7.md)")
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
