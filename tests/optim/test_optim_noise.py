"""The pure noise samplers of sgdlab.optim.noise: each draws N(0, C) for the C it states.

Empirical covariances over S draws are compared with the dense target entry by entry, scaled
by the Gaussian sampling error sd(Ĉ_ij) = sqrt((C_ii C_jj + C_ij²)/S) (float64)."""
import math

import pytest
import torch

from sgdlab.optim import noise as N

S = 20000


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_cov(samples: torch.Tensor, target: torch.Tensor, z_max: float = 5.5):
    x = samples.reshape(-1, samples.shape[-1]).double()
    emp = x.T @ x / len(x)                       # zero-mean noise: no centring
    d = torch.diagonal(target)
    sd = ((torch.outer(d, d) + target ** 2) / len(x)).sqrt().clamp_min(1e-300)
    z = ((emp - target).abs() / sd)
    z[sd <= 1e-200] = 0
    assert float(z.max()) < z_max, f"max z-score {float(z.max()):.2f}"
    # and it is not trivially satisfied: the mean is ~0 as well
    assert float(x.mean(0).abs().max()) < 6 * float(d.max().sqrt()) / math.sqrt(len(x)) + 1e-12


def _spd(d, rank, seed=0):
    g = _gen(seed)
    f = torch.randn(rank, d, generator=g, dtype=torch.float64)
    return f, f.T @ f


def test_isotropic_and_dynamic():
    eps = N.isotropic_noise(7, 0.3, sample_shape=(S,), generator=_gen(), dtype=torch.float64)
    assert eps.shape == (S, 7)
    assert_cov(eps, 0.09 * torch.eye(7, dtype=torch.float64))
    tr = 2.1
    eps = N.dynamic_noise(tr, 7, sample_shape=(S,), generator=_gen(1), dtype=torch.float64)
    assert_cov(eps, tr / 7 * torch.eye(7, dtype=torch.float64))
    # E||eps||^2 = Tr Sigma
    sq = (eps ** 2).sum(-1)
    assert abs(float(sq.mean()) - tr) < 5 * float(sq.std()) / math.sqrt(S)


def test_dynamic_noise_of_per_chain_traces_is_the_same_draws_times_root_trace_over_d():
    """Tr Σ per chain (a tensor, as the escape experiment passes it) gives ε = √(Tr Σ / d) z
    per chain with z the generator's standard normals: a standard deviation, not the variance
    Tr Σ / d."""
    traces = torch.tensor([4.0, 0.36], dtype=torch.float64)
    eps = N.dynamic_noise(traces, 2, sample_shape=(3,), generator=_gen(4))
    z = torch.randn((3, 2, 2), generator=_gen(4), dtype=torch.float64)
    want = z * torch.tensor([[math.sqrt(2.0)], [math.sqrt(0.18)]], dtype=torch.float64)
    torch.testing.assert_close(eps, want, rtol=1e-15, atol=0)


def test_diagonal_and_batched_chains():
    v = torch.tensor([[0.5, 2.0, 0.1], [1.0, 1.0, 3.0]], dtype=torch.float64)   # 2 chains
    eps = N.diagonal_noise(v, sample_shape=(S,), generator=_gen())
    assert eps.shape == (S, 2, 3)
    for c in range(2):
        assert_cov(eps[:, c], torch.diag(v[c]))
    # chains are independent
    cross = (eps[:, 0].T @ eps[:, 1]) / S
    assert float(cross.abs().max()) < 5 * math.sqrt(3.0 * 2.0 / S)
    sig = torch.tensor([0.1, 1.0], dtype=torch.float64)
    iso = N.isotropic_noise(4, sig, sample_shape=(S,), generator=_gen(2))
    assert iso.shape == (S, 2, 4)
    assert_cov(iso[:, 1], torch.eye(4, dtype=torch.float64))
    assert_cov(iso[:, 0], 0.01 * torch.eye(4, dtype=torch.float64))


def test_low_rank_leading_hessian():
    f, cov = _spd(8, 5)
    vals, vecs = torch.linalg.eigh(cov)
    vals, vecs = vals.flip(0)[:3], vecs.flip(1)[:, :3]
    target = (vecs * vals) @ vecs.T
    eps = N.leading_noise(vals, vecs, sample_shape=(S,), generator=_gen())
    assert eps.shape == (S, 8)
    assert_cov(eps, target)
    # Hessian-shaped: |lambda| of an indefinite matrix, times sigma_H^2
    h = cov - 3 * torch.eye(8, dtype=torch.float64)
    hv, hu = torch.linalg.eigh(h)
    idx = torch.argsort(hv.abs(), descending=True)[:4]
    hv, hu = hv[idx], hu[:, idx]
    assert (hv < 0).any()
    eps = N.hessian_noise(hv, hu, 0.7, sample_shape=(S,), generator=_gen(3))
    assert_cov(eps, 0.7 * (hu * hv.abs()) @ hu.T)
    s2 = N.hessian_noise_variance(2.0, float(hv.abs().sum()), 4)
    assert s2 == pytest.approx(2.0 / (4 * float(hv.abs().sum())))


def test_factor_and_sgd_like_gram_trick():
    f, cov = _spd(30, 6, seed=4)               # d = 30 > N = 6: Gram regime
    eps = N.sgd_like_noise(f, 3, sample_shape=(S,), generator=_gen())
    assert eps.shape == (S, 30)
    assert_cov(eps, cov / 3)
    # batched factors (2 chains)
    fb = torch.stack([f, 2 * f])
    eps = N.factor_noise(fb, scale=torch.tensor([1.0, 0.25], dtype=torch.float64),
                         sample_shape=(S,), generator=_gen(5))
    assert eps.shape == (S, 2, 30)
    assert_cov(eps[:, 1], cov)


def test_dense_baseline_matches():
    _, cov = _spd(6, 6, seed=7)
    eps = N.dense_noise(N.psd_sqrt(cov), sample_shape=(S,), generator=_gen())
    assert_cov(eps, cov)


def test_psd_sqrt_is_exact_and_clips_negative_round_off():
    """V diag(λ) Vᵀ with λ = (4, 1, −1e-3) (a round-off negative) has the clipped root
    V diag(2, 1, 0) Vᵀ; batched matrices are rooted one by one."""
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=_gen(3), dtype=torch.float64))
    cov = q @ torch.diag(torch.tensor([4.0, 1.0, -1e-3], dtype=torch.float64)) @ q.T
    root = q @ torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)) @ q.T
    torch.testing.assert_close(N.psd_sqrt(cov), root, atol=1e-12, rtol=0)
    got = N.psd_sqrt(torch.stack([cov, 9 * torch.eye(3, dtype=torch.float64)]))
    torch.testing.assert_close(got, torch.stack([root, 3 * torch.eye(3, dtype=torch.float64)]),
                               atol=1e-12, rtol=0)


def test_the_check_can_fail():
    f, cov = _spd(8, 8, seed=9)
    eps = N.diagonal_noise(torch.diagonal(cov).clone(), sample_shape=(S,), generator=_gen())
    with pytest.raises(AssertionError):
        assert_cov(eps, cov)


def test_reproducible_and_device_independent_of_generator_seed():
    a = N.isotropic_noise(5, 1.0, generator=_gen(11))
    b = N.isotropic_noise(5, 1.0, generator=_gen(11))
    assert torch.equal(a, b)


@pytest.mark.parametrize("call,match", [
    (lambda: N.isotropic_noise(3, -1.0), "sigma"),
    (lambda: N.isotropic_noise(0, 1.0), "dim"),
    (lambda: N.diagonal_noise(torch.tensor([1.0, -1.0])), "variances"),
    (lambda: N.low_rank_noise(torch.ones(2), torch.ones(3, 3)), "eigvals"),
    (lambda: N.sgd_like_noise(torch.ones(2, 3), 0), "batch_size"),
    (lambda: N.hessian_noise_variance(1.0, 0.0), "trace_h_plus"),
    # a negative scale was math's "math domain error" or a NaN draw
    (lambda: N.factor_noise(torch.ones(2, 3), scale=-1.0), "Invalid scale"),
    (lambda: N.factor_noise(torch.ones(2, 3), scale=torch.tensor(-1.0)), "Invalid scale"),
    (lambda: N.low_rank_noise(torch.ones(2), torch.eye(3)[:, :2], scale=-0.5), "Invalid scale"),
    (lambda: N.dynamic_variance(1.0, 0), "dim"),
    (lambda: N.dynamic_variance(-1.0, 3), "trace_sigma"),
])
def test_invalid_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_dense_noise_takes_any_square_root_not_only_the_symmetric_one():
    """ε = R z has covariance R Rᵀ: a Cholesky factor L (lower triangular, L ≠ Lᵀ) of C draws
    N(0, C), not N(0, Lᵀ L)."""
    _, cov = _spd(4, 4, seed=12)
    chol = torch.linalg.cholesky(cov)
    assert not torch.allclose(chol.T @ chol, cov, atol=0.5)      # the other product differs
    eps = N.dense_noise(chol, sample_shape=(S,), generator=_gen())
    assert_cov(eps, cov)


def test_zero_variances_draw_exactly_zero_on_their_coordinates():
    """A zero of diag Σ (a parameter every example's gradient leaves alone) or a zero
    eigenvalue is a valid covariance: no noise there, not an error; zero Tr Σ gives σ_H² = 0."""
    eps = N.diagonal_noise(torch.tensor([0.0, 1.0, 0.25], dtype=torch.float64),
                           sample_shape=(100,), generator=_gen())
    assert torch.equal(eps[:, 0], torch.zeros(100, dtype=torch.float64))
    assert float(eps[:, 1].abs().max()) > 0
    q, _ = torch.linalg.qr(torch.randn(5, 2, generator=_gen(1), dtype=torch.float64))
    eps = N.low_rank_noise(torch.tensor([2.0, 0.0], dtype=torch.float64), q,
                           sample_shape=(50,), generator=_gen(2))
    torch.testing.assert_close(eps @ q[:, 1], torch.zeros(50, dtype=torch.float64),
                               atol=1e-14, rtol=0)
    assert N.hessian_noise_variance(torch.tensor(0.0), torch.tensor(3.0), 2) == 0


def test_leading_noise_clips_a_round_off_negative_eigenvalue_to_zero():
    """The k-th eigenvalue of a rank-deficient Σ can come out as −1e-17: the sampler treats it
    as 0 (no noise along its eigenvector) instead of refusing the covariance."""
    q, _ = torch.linalg.qr(torch.randn(6, 3, generator=_gen(4), dtype=torch.float64))
    vals = torch.tensor([3.0, 0.5, -1e-17], dtype=torch.float64)
    eps = N.leading_noise(vals, q, sample_shape=(S,), generator=_gen(5))
    assert_cov(eps, (q[:, :2] * vals[:2]) @ q[:, :2].T)
    torch.testing.assert_close(eps @ q[:, 2], torch.zeros(S, dtype=torch.float64),
                               atol=1e-12, rtol=0)


def test_low_rank_noise_refuses_eigenpairs_of_different_chains():
    """eigvals (2 chains, k) and eigvecs (3 chains, d, k) do not belong together."""
    with pytest.raises(ValueError, match="do not match"):
        N.low_rank_noise(torch.ones(2, 3), torch.ones(3, 5, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_isotropic_noise_of_a_tensor_sigma_keeps_its_dtype(dtype):
    """Per-chain scales in float64 (a float64 landscape's chains) give float64 noise."""
    eps = N.isotropic_noise(3, torch.tensor([0.5, 2.0], dtype=dtype), generator=_gen())
    assert eps.dtype == dtype and eps.shape == (2, 3)
