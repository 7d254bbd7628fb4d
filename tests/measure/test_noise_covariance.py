"""Gradient covariance / diffusion matrix against explicit sums and mini-batch enumeration."""
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.measure.noise import (diffusion_matrix, gradient_covariance, minibatch_noise_factor,
                                  noise_magnitude)
from sgdlab.testing import (
    AffineByHand, covariance_reference, minibatch_covariance_enumerated, per_sample_gradients_loop,
    tiny_classification, tiny_mlp,
)


@pytest.fixture(params=["factored", "vmap"])
def problem(request):
    """Both engines: per-layer factors (MLP) and torch.func per-sample gradients."""
    model = tiny_mlp(3, 4, 2)
    data = tiny_classification(10, 3, 2)
    return model, nn.CrossEntropyLoss(), data, request.param


def test_covariance_matches_explicit_sum(problem):
    model, loss_fn, data, method = problem
    cov = gradient_covariance(model, loss_fn, data, chunk_size=3, method=method)
    g = per_sample_gradients_loop(model, loss_fn, data)
    ref = covariance_reference(g)
    torch.testing.assert_close(cov.dense(), ref)
    torch.testing.assert_close(cov.mean, g.mean(0))
    assert abs(cov.trace() - float(torch.trace(ref))) < 1e-12
    torch.testing.assert_close(cov.diagonal(), torch.diagonal(ref))
    assert abs(cov.frobenius_norm() - float(torch.linalg.matrix_norm(ref))) < 1e-12


@pytest.mark.parametrize("batch", [None, 4])
def test_mean_projections_are_the_centred_gradients_along_the_mean(problem, batch):
    """F ḡ = (g_i − ḡ)ᵀ ḡ / √N per sample (times √c for a mini-batch covariance c Σ), so that
    ‖F ḡ‖² = ḡᵀ Σ ḡ; the factored engine reads it from the uncentred Gram matrix."""
    model, loss_fn, data, method = problem
    cov = gradient_covariance(model, loss_fn, data, method=method)
    if batch is not None:
        cov = cov.minibatch(batch)
    g = per_sample_gradients_loop(model, loss_fn, data)
    n, mean = len(g), g.mean(0)
    c = 1.0 if batch is None else minibatch_noise_factor(batch, n)
    ref = (g - mean) @ mean * math.sqrt(c / n)
    torch.testing.assert_close(cov.mean_projections(), ref, rtol=1e-10, atol=1e-14)
    quad = float(mean @ covariance_reference(g) @ mean) * c
    assert float(cov.mean_projections().square().sum()) == pytest.approx(quad, rel=1e-10)


def test_gram_spectrum_equals_dense_spectrum(problem):
    model, loss_fn, data, method = problem
    cov = gradient_covariance(model, loss_fn, data, method=method)   # d = 26 > N = 10: Gram path
    assert cov.dim > cov.num_samples
    ref = torch.linalg.eigvalsh(cov.dense()).flip(0)
    spec = cov.spectrum()
    assert len(spec) == cov.num_samples - 1          # centring removes one direction
    torch.testing.assert_close(spec, ref[: len(spec)], rtol=1e-9, atol=1e-12)
    assert cov.rank() == int(torch.linalg.matrix_rank(cov.dense()))
    assert math.isclose(cov.rank_fraction(), cov.rank() / cov.dim)
    vals, vecs = cov.eigenpairs(3)
    torch.testing.assert_close(vals, ref[:3], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(cov.dense() @ vecs, vecs * vals, rtol=1e-7, atol=1e-10)


def test_eigenpairs_beyond_the_rank_are_orthonormal_null_vectors(problem):
    """k = N through the Gram matrix: centring makes λ_N = 0, where Fᵀu/√λ is rounding noise;
    the returned column must still be a unit eigenvector of 0 orthogonal to the others."""
    model, loss_fn, data, method = problem
    cov = gradient_covariance(model, loss_fn, data, method=method)
    n = cov.num_samples
    dense = covariance_reference(per_sample_gradients_loop(model, loss_fn, data))
    vals, vecs = cov.eigenpairs(n, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(n, dtype=vecs.dtype), atol=1e-10,
                               rtol=0)
    torch.testing.assert_close(dense @ vecs, vecs * vals, rtol=1e-7, atol=1e-10)
    assert abs(float(vals[-1])) < 1e-12


def test_numerical_rank_uses_numpy_threshold():
    import numpy as np

    from sgdlab.measure.noise import GradientCovariance

    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 40, generator=g,
                                                                           dtype=torch.float64)
    cov = GradientCovariance(f, torch.zeros(40, dtype=torch.float64), 6)
    assert cov.rank() == 3 == np.linalg.matrix_rank(cov.dense().numpy(), hermitian=True)
    # eigenvalues placed on both sides of the threshold λ_max · d · eps = 40 eps (d = 40): one
    # at 8 eps is round-off to numpy, one at 400 eps is not (λ_max · eps alone would keep both)
    eps = torch.finfo(torch.float64).eps
    u, _ = torch.linalg.qr(torch.randn(6, 4, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(40, 4, generator=g, dtype=torch.float64))
    lam = torch.tensor([1.0, 0.5, 400 * eps, 8 * eps], dtype=torch.float64)
    cov = GradientCovariance(u @ torch.diag(lam.sqrt()) @ v.T, torch.zeros(40, dtype=lam.dtype),
                             6)
    # abs=0: approx's default abs=1e-12 would take any threshold below 100 times 40 eps
    assert cov.rank_threshold() == pytest.approx(40 * eps, rel=1e-12, abs=0)
    assert cov.rank() == 3 == np.linalg.matrix_rank(cov.dense().numpy(), hermitian=True)
    torch.testing.assert_close(cov.spectrum(), lam[:3], rtol=0, atol=4 * eps)



def test_a_zero_covariance_has_orthonormal_eigenvectors_of_zero():
    """N equal per-sample gradients: Σ = 0 exactly, λ_max = 0 and so a rank threshold of 0.
    Through the Gram matrix (d > N) every Fᵀu is the zero vector: each eigenvalue of 0 (at the
    threshold itself) still gets a unit eigenvector, the columns orthonormal."""
    from sgdlab.measure.noise import GradientCovariance

    g = torch.full((3, 5), 0.25, dtype=torch.float64)      # three equal per-sample gradients
    mean = g.mean(0)
    cov = GradientCovariance((g - mean) / math.sqrt(3), mean, 3)
    assert float(cov.factor.abs().max()) == 0.0 and cov.rank_threshold(0.0) == 0.0
    vals, vecs = cov.eigenpairs(3, generator=torch.Generator().manual_seed(0))
    assert vals.tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(3, dtype=torch.float64), rtol=0,
                               atol=1e-12)

def test_sample_has_the_covariance(problem):
    model, loss_fn, data, method = problem
    cov = gradient_covariance(model, loss_fn, data, method=method)
    xs = cov.sample(40000, torch.Generator().manual_seed(0), scale=2.0)
    emp = xs.T @ xs / len(xs)
    err = (emp - 2.0 * cov.dense()).abs().max()
    assert err < 0.05 * float(2.0 * cov.dense().abs().max())


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize("b", [1, 2, 3])
def test_minibatch_covariance_by_enumeration(problem, replacement, b):
    model, loss_fn, data, method = problem
    n = 5
    small = (data[0][:n], data[1][:n])
    d_b = diffusion_matrix(model, loss_fn, small, b, replacement=replacement, method=method)
    g = per_sample_gradients_loop(model, loss_fn, small)
    exact = minibatch_covariance_enumerated(g, b, replacement=replacement)
    torch.testing.assert_close(d_b.dense(), exact, rtol=1e-9, atol=1e-13)


def test_minibatch_factor_values_and_errors():
    assert minibatch_noise_factor(4, 100) == 0.25
    assert math.isclose(minibatch_noise_factor(4, 100, replacement=False),
                        (1 - 4 / 100) / 4 * 100 / 99)
    assert minibatch_noise_factor(10, 10, replacement=False) == 0.0
    with pytest.raises(ValueError, match="batch size"):
        minibatch_noise_factor(0, 10)
    with pytest.raises(ValueError, match="exceeds"):
        minibatch_noise_factor(11, 10, replacement=False)


def test_noise_magnitude(problem):
    from sgdlab.measure.noise import noise_magnitude

    model, loss_fn, data, method = problem
    g = per_sample_gradients_loop(model, loss_fn, data)
    nm = noise_magnitude(model, loss_fn, data, lr=0.1, batch_size=4,
                         covariance=gradient_covariance(model, loss_fn, data, method=method))
    assert nm.grad_norm == pytest.approx(float(g.mean(0).norm()))
    tr = float(torch.trace(covariance_reference(g)))
    assert nm.noise_norm == pytest.approx(math.sqrt(0.1 * tr / 4))
    assert nm.ratio == pytest.approx(nm.noise_norm / nm.grad_norm)
    # at a stationary point of the full loss the noise dominates without bound
    assert type(nm)(0.0, nm.noise_norm, nm.trace_sigma).ratio == math.inf


def test_factored_matches_vmap_without_materialising():
    """The factored engine against the vmap one (not parametrised over the engines: it
    compares the two)."""
    model, loss_fn, data = tiny_mlp(3, 4, 2), nn.CrossEntropyLoss(), tiny_classification(10, 3, 2)
    fac = gradient_covariance(model, loss_fn, data, method="factored").minibatch(3)
    ref = gradient_covariance(model, loss_fn, data, method="vmap").minibatch(3)
    assert fac._factor is None
    torch.testing.assert_close(fac.gram(), ref.gram())
    torch.testing.assert_close(fac.diagonal(), ref.diagonal())
    assert fac.trace() == pytest.approx(ref.trace())
    u = torch.randn(10, 2, dtype=torch.float64)
    torch.testing.assert_close(fac.rmatmul(u), ref.factor.T @ u)
    v1, e1 = fac.eigenpairs(2)
    v2, e2 = ref.eigenpairs(2)
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close((e1 * e2).sum(0).abs(), torch.ones(2, dtype=torch.float64))
    assert fac._factor is None                      # all of the above without the (N, d) matrix
    torch.testing.assert_close(fac.factor, ref.factor)


def test_factored_spectrum_beyond_the_dense_limit_diagonalises_sigma_not_the_gram(monkeypatch):
    """With N > d beyond ``DENSE_EIG_LIMIT`` the d x d Σ is the smaller matrix: the factored
    engine's spectrum, rank, eigenpairs and Frobenius norm come from it without forming the
    N x N Gram (the whole MNIST training set, N = 60,000: 29 GB), and match the dense sum."""
    import sgdlab.measure.noise as noise

    model, loss_fn = tiny_mlp(3, 4, 2), nn.CrossEntropyLoss()
    data = tiny_classification(40, 3, 2)
    monkeypatch.setattr(noise, "DENSE_EIG_LIMIT", 30)
    cov = gradient_covariance(model, loss_fn, data, method="factored")
    assert cov.num_samples > noise.DENSE_EIG_LIMIT >= cov.dim         # N = 40, d = 26

    def no_gram(self):
        raise AssertionError("the N x N Gram matrix was formed")

    monkeypatch.setattr(noise.GradientCovariance, "gram", no_gram)
    ref = covariance_reference(per_sample_gradients_loop(model, loss_fn, data))
    ref_vals = torch.linalg.eigvalsh(ref).flip(0)
    keep = ref_vals > ref_vals[0] * cov.dim * torch.finfo(torch.float64).eps
    spec = cov.spectrum()
    torch.testing.assert_close(spec, ref_vals[keep], rtol=1e-9, atol=1e-15)
    assert cov.rank() == int(keep.sum())
    vals, vecs = cov.eigenpairs(2)
    torch.testing.assert_close(vals, ref_vals[:2], rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(ref @ vecs, vecs * vals, rtol=1e-7, atol=1e-12)
    assert cov.frobenius_norm() == pytest.approx(float(torch.linalg.matrix_norm(ref)), rel=1e-10)


def test_factored_path_declines_unsupported_models():
    from sgdlab.operators.factors import per_sample_factors

    data = tiny_classification(6, 3, 2)
    shared = nn.Linear(3, 3).double()
    weight_tied = nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(3, 2).double())
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    conv_like = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()
    for m in (weight_tied, bn, conv_like):
        assert per_sample_factors(m, nn.CrossEntropyLoss(), data) is None
    with pytest.raises(ValueError, match="factored"):
        gradient_covariance(bn, nn.CrossEntropyLoss(), data, method="factored")
    # the auto path falls back to vmap and stays exact (eval mode for batch norm)
    bn.eval()
    cov = gradient_covariance(bn, nn.CrossEntropyLoss(), data)
    ref = covariance_reference(per_sample_gradients_loop(bn, nn.CrossEntropyLoss(), data))
    torch.testing.assert_close(cov.dense(), ref)


def test_few_eigenpairs_without_a_full_decomposition():
    """k ≤ N/10 pairs of a small Gram matrix come from LAPACK's subset eigensolver, no full
    eigh; they equal the explicit covariance's top eigenpairs."""
    model = tiny_mlp(3, 6, 2)
    data = tiny_classification(60, 3, 2, seed=7)
    cov = gradient_covariance(model, nn.CrossEntropyLoss(), data)
    vals, vecs = cov.eigenpairs(3)
    assert cov._eigh is None
    ref = torch.linalg.eigvalsh(cov.dense()).flip(0)
    torch.testing.assert_close(vals, ref[:3], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(cov.dense() @ vecs, vecs * vals, rtol=1e-7, atol=1e-10)


def test_factored_eigenpairs_beyond_a_dense_gram():
    """N = 1,100 > 1,000: the factored covariance takes a few pairs of its N x N Gram by Lanczos
    (below 1,000 samples a full eigh); both equal the explicit covariance's eigenpairs."""
    model = tiny_mlp(3, 4, 2)
    data = tiny_classification(1100, 3, 2, seed=5)
    cov = gradient_covariance(model, nn.CrossEntropyLoss(), data)
    assert cov._factored()
    vals, vecs = cov.eigenpairs(2)
    assert cov._eigh is None                       # no full decomposition was taken
    from sgdlab.operators import per_sample_gradients    # = the loop: tests/operators

    ref_vals, ref_vecs = torch.linalg.eigh(covariance_reference(
        per_sample_gradients(model, nn.CrossEntropyLoss(), data, method="vmap")))
    torch.testing.assert_close(vals, ref_vals.flip(0)[:2], rtol=1e-8, atol=1e-12)
    torch.testing.assert_close((vecs * ref_vecs.flip(1)[:, :2]).sum(0).abs(),
                               torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("factored", [True, False])
def test_gradients_whose_products_overflow_are_reported_as_a_diverged_model(factored):
    """Finite float32 per-sample gradients of a diverging model (~1e20 here) whose Gram
    products overflow: FloatingPointError, which a training run records as its divergence
    (scipy's "array must not contain infs or NaNs" ValueError failed the run instead, and
    its resume failed again at the same step)."""
    torch.manual_seed(0)
    model = nn.Linear(6, 1)                   # d = 7 > N = 4: through the Gram matrix
    with torch.no_grad():
        model.weight.fill_(1e19)
    x, y = torch.randn(4, 6), torch.zeros(4, 1)
    cov = gradient_covariance(model, nn.MSELoss(), (x, y),
                              method="factored" if factored else "vmap")
    assert bool(torch.isfinite(cov.mean).all())
    for quantity in (lambda: cov.eigenpairs(1), cov.frobenius_norm, cov.spectrum):
        with pytest.raises(FloatingPointError, match="diverged"):
            quantity()


@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_a_covariance_whose_values_overflow_float32_is_reported_not_returned_as_inf(method):
    """N = 8 > d = 3 (Σ itself, not the Gram matrix) with inputs ~1e10: finite float32
    gradients ~1e20, loss ~1e20, but Σ's entries and eigenvalues ~1e40 exceed float32's range.
    They were returned as inf or nan (logged as such); a FloatingPointError names what
    overflowed and float64, in which the same model gives Σ's exact values."""
    torch.manual_seed(0)
    model = nn.Linear(2, 1) if method == "auto" else AffineByHand(2)
    x, y = torch.randn(8, 2) * 1e10, torch.zeros(8, 1)
    cov = gradient_covariance(model, nn.MSELoss(), (x, y), method=method)
    assert cov.num_samples > cov.dim and bool(torch.isfinite(cov.mean).all())
    for quantity in (lambda: cov.eigenpairs(1), cov.frobenius_norm, cov.diagonal):
        with pytest.raises(FloatingPointError, match=r"overflows torch.float32.*float64"):
            quantity()
    # the same model and data in float64: finite and exact
    model, x, y = model.double(), x.double(), y.double()
    cov = gradient_covariance(model, nn.MSELoss(), (x, y), method=method)
    ref = covariance_reference(per_sample_gradients_loop(model, nn.MSELoss(), (x, y)))
    assert float(ref.abs().max()) > 1e39
    torch.testing.assert_close(cov.eigenpairs(1)[0], torch.linalg.eigvalsh(ref)[-1:])
    torch.testing.assert_close(cov.diagonal(), torch.diagonal(ref))
    assert math.isclose(cov.frobenius_norm(), float(torch.linalg.matrix_norm(ref)), rel_tol=1e-9)


def test_a_gradient_norm_beyond_float32s_range_is_measured_in_float64():
    """‖ḡ‖ of a finite float32 mean gradient (~1e20 per entry) was inf (its square overflows
    float32); like Tr Σ it is a Python float, so it is computed in float64: the float64
    model's value."""
    torch.manual_seed(0)
    model = AffineByHand(2)
    x, y = torch.randn(8, 2) * 1e10, torch.zeros(8, 1)
    got = noise_magnitude(model, nn.MSELoss(), (x, y), 0.1, 4)
    model, x, y = model.double(), x.double(), y.double()
    ref = per_sample_gradients_loop(model, nn.MSELoss(), (x, y)).mean(0)
    assert float(ref.abs().max()) > 1e19
    assert math.isclose(got.grad_norm, float(torch.linalg.vector_norm(ref)), rel_tol=1e-6)


def test_noise_magnitude_refuses_a_batch_loss_that_is_not_the_mean_of_the_samples():
    """Its ‖∇L‖ is the norm of the per-sample gradients' mean, one sample's loss each: with
    class weights (which cancel in one sample's loss) it read 0.28 for a batch gradient of
    norm 0.88 (a residual tanh network, 24 samples)."""
    from sgdlab.errors import UserError
    from sgdlab.measure.noise import noise_magnitude
    from sgdlab.operators import full_gradient

    model, data = tiny_mlp(), tiny_classification()
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([0.5, 3.0], dtype=torch.float64))
    with pytest.raises(UserError, match=r"noise_magnitude .*weight=\.\.\."):
        noise_magnitude(model, weighted, data, 0.1, 4)
    plain = noise_magnitude(model, nn.CrossEntropyLoss(), data, 0.1, 4)
    assert plain.grad_norm == pytest.approx(
        float(full_gradient(model, nn.CrossEntropyLoss(), data).norm()), rel=1e-12)
    # ignored targets in a DataLoader over a TensorDataset: its targets tensor is read
    from torch.utils.data import DataLoader, TensorDataset

    x, y = data
    y = y.clone()
    y[0] = -100
    with pytest.raises(UserError, match=r"noise_magnitude .*ignore_index=-100"):
        noise_magnitude(model, nn.CrossEntropyLoss(), DataLoader(TensorDataset(x, y),
                                                                 batch_size=len(x)), 0.1, 4)


def _least_squares():
    """ℓ_i(θ) = (x_iᵀθ − y_i)² (nn.MSELoss of a bias-free linear model), N = 5, d = 3: the
    per-sample gradients are 2 r_i x_i, r_i = x_iᵀθ − y_i, in closed form."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = torch.randn(5, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 0.25]], dtype=torch.float64))
    r = x @ model.weight.detach()[0] - y[:, 0]
    return model, (x, y), 2 * r[:, None] * x


def test_zhu_eq3_and_fig2_quantities_of_least_squares_in_closed_form():
    """Zhu et al. eq. (3): Σ = (1/N) Σ_i (g_i − g₀)(g_i − g₀)ᵀ, the 1/N of the population,
    not the unbiased 1/(N − 1); eq. (11): E[εᵀε] = Tr Σ; Fig. 2: ‖g₀‖ against
    sqrt(η E[εᵀε] / m). Per-sample gradients by hand, not by autograd."""
    model, data, grads = _least_squares()
    n = len(grads)
    g0 = grads.mean(0)
    sigma = covariance_reference(grads)     # the explicit sum of eq. (3), 1/N
    cov = gradient_covariance(model, nn.MSELoss(), data)
    torch.testing.assert_close(cov.dense(), sigma, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(cov.dense(), sigma * n / (n - 1))     # the test can fail
    eta, m = 0.05, 2
    nm = noise_magnitude(model, nn.MSELoss(), data, lr=eta, batch_size=m)
    assert nm.grad_norm == pytest.approx(float(g0.norm()), rel=1e-12)
    assert nm.trace_sigma == pytest.approx(float(torch.trace(sigma)), rel=1e-12)
    assert nm.noise_norm == pytest.approx(math.sqrt(eta * float(torch.trace(sigma)) / m),
                                          rel=1e-12)
    # eq. (2): the covariance of a mean of m with-replacement draws is Σ/m
    torch.testing.assert_close(cov.minibatch(m).dense(), sigma / m, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("m", [1, 2, 4, 5])
def test_noise_magnitude_without_replacement_is_that_of_batches_of_distinct_samples(m):
    """The SGD noise of the batches a training loop's epochs draw, m distinct samples of N:
    E‖g_B − g₀‖² by enumerating all C(N, m) batches of the hand-computed per-sample gradients,
    so noise_norm² = η E‖g_B − g₀‖² (zero for m = N, full-batch GD); the default stays Zhu's
    eq. (2), Tr Σ / m."""
    model, data, grads = _least_squares()
    n, eta = len(grads), 0.05
    spread = float(torch.trace(minibatch_covariance_enumerated(grads, m, replacement=False)))
    nm = noise_magnitude(model, nn.MSELoss(), data, lr=eta, batch_size=m, replacement=False)
    assert nm.noise_norm == pytest.approx(math.sqrt(eta * spread), rel=1e-10, abs=1e-12)
    tr = float(torch.trace(covariance_reference(grads)))
    assert noise_magnitude(model, nn.MSELoss(), data, lr=eta, batch_size=m).noise_norm == \
        pytest.approx(math.sqrt(eta * tr / m), rel=1e-12)
    if 1 < m < n:       # the two readings differ: the test can fail
        assert nm.noise_norm < 0.99 * math.sqrt(eta * tr / m)


def test_noise_magnitude_refuses_a_replacement_that_is_not_a_bool_or_a_lone_num_samples():
    """``replacement="false"`` would be truthy and silently give eq. (2)'s Σ/m; num_samples
    only counts without replacement, so passing it with replacement=True is a mistake."""
    model, data, _ = _least_squares()
    for bad in ("false", 0, None):
        with pytest.raises(ValueError, match=r"replacement must be True or False, got"):
            noise_magnitude(model, nn.MSELoss(), data, lr=0.1, batch_size=2, replacement=bad)
    with pytest.raises(ValueError, match=r"num_samples=10 .*replacement=False"):
        noise_magnitude(model, nn.MSELoss(), data, lr=0.1, batch_size=2, num_samples=10)
    with pytest.raises(ValueError, match=r"batch size 6 exceeds the 5 samples"):
        noise_magnitude(model, nn.MSELoss(), data, lr=0.1, batch_size=6, replacement=False)


def test_noise_magnitude_checks_its_replacement_flag_as_the_others_do():
    """The shared ``check_flag``: numpy's bool is a flag, and the refusal reads as
    ``minibatch_noise_factor``'s and the landscapes' do."""
    from sgdlab.errors import UserError

    model, data, _ = _least_squares()
    kw = dict(lr=0.1, batch_size=2)
    assert noise_magnitude(model, nn.MSELoss(), data, replacement=np.False_, **kw) == \
        noise_magnitude(model, nn.MSELoss(), data, replacement=False, **kw)
    with pytest.raises(UserError, match="^replacement must be True or False, got 'no'$"):
        noise_magnitude(model, nn.MSELoss(), data, replacement="no", **kw)


def test_one_sample_drawn_without_replacement_has_no_noise():
    """N = 1, b = 1: the only batch is the whole data, so Cov g_B = 0 — the factor
    (N − b)/(b (N − 1)) is 0/0 there and taken as its value for b = N, 0."""
    assert minibatch_noise_factor(1, 1, replacement=False) == 0.0
    assert minibatch_noise_factor(1, 1) == 1.0          # with replacement: Σ / 1 (Σ = 0 here)


def test_the_noise_magnitude_ratio_is_noise_over_gradient():
    """Zhu et al. Fig. 2 compares sqrt(η Tr Σ / m) with ‖∇L‖: the ratio > 1 where the noise
    dominates the drift, +inf at a stationary point."""
    from sgdlab.measure.noise import NoiseMagnitude

    assert NoiseMagnitude(grad_norm=2.0, noise_norm=6.0, trace_sigma=1.0).ratio == 3.0
    assert NoiseMagnitude(grad_norm=0.0, noise_norm=6.0, trace_sigma=1.0).ratio == math.inf


@pytest.mark.parametrize("n,d", [(6, 26), (10, 3)])
def test_eigenpairs_refuse_more_pairs_than_min_n_d(n, d):
    """Σ = FᵀF of an (N, d) factor has min(N, d) eigenpairs: asking for one more is an error
    that names the bound, not fewer pairs returned without a word."""
    from sgdlab.measure.noise import GradientCovariance

    f = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cov = GradientCovariance(f, torch.zeros(d, dtype=torch.float64), n)
    k = min(n, d)
    vals, vecs = cov.eigenpairs(k)
    assert vals.shape == (k,) and vecs.shape == (d, k)
    torch.testing.assert_close(vals, torch.linalg.eigvalsh(f.T @ f).flip(0)[:k])
    with pytest.raises(ValueError, match=rf"Invalid k={k + 1}: need an int 1 <= k <= min\(N, d\)"):
        cov.eigenpairs(k + 1)


@pytest.mark.parametrize("bad", [True, 2.5, "3", 0])
def test_a_chunk_size_that_is_no_count_is_refused_on_the_factored_path_too(bad):
    """The factored engine reads no chunk_size: True, 2.5 and "3" were taken there (and failed
    inside torch on the vmap route)."""
    from sgdlab.measure.noise import gradient_variance

    model, data = tiny_mlp(3, 4, 2), tiny_classification(10, 3, 2)
    for fn in (gradient_covariance, gradient_variance):
        with pytest.raises(ValueError, match=re.escape(f"Invalid chunk_size={bad!r} (an int >= 1: "
                                                       "samples per vmap call, or None")):
            fn(model, nn.CrossEntropyLoss(), data, chunk_size=bad)


@pytest.mark.parametrize("k", [True, 2.5, "2", 0])
def test_eigenpairs_refuse_a_k_that_is_no_count(k):
    """True was one pair, 2.5 and "2" failed inside the eigensolver with a TypeError; numpy's
    ints are counts."""
    from sgdlab.measure.noise import GradientCovariance

    f = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cov = GradientCovariance(f, torch.zeros(4, dtype=torch.float64), 6)
    with pytest.raises(ValueError, match=re.escape(f"Invalid k={k!r}: need an int 1 <= k <= "
                                                   "min(N, d) = 4")):
        cov.eigenpairs(k)
    assert cov.eigenpairs(np.int64(2))[0].shape == (2,)


def test_minibatch_factor_takes_numpy_and_torch_ints_and_refuses_bools():
    # True was a batch (or a set) of one sample
    for b, n in ((np.int64(4), torch.tensor(10)), (torch.tensor(4), np.int32(10))):
        assert minibatch_noise_factor(b, n, replacement=False) == \
            minibatch_noise_factor(4, 10, replacement=False)
    for b, n in ((True, 10), (np.True_, 10), (4, True), (torch.tensor(True), 10)):
        with pytest.raises(ValueError, match=r"Invalid (batch size|number of samples) "):
            minibatch_noise_factor(b, n)


def test_a_minibatch_covariance_refuses_a_replacement_that_is_no_flag():
    """"no" is truthy: Σ of batches drawn with replacement, the opposite of what it says."""
    from sgdlab.measure.noise import GradientCovariance

    f = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cov = GradientCovariance(f, torch.zeros(4, dtype=torch.float64), 6)
    for call in (lambda: minibatch_noise_factor(2, 6, replacement="no"),
                 lambda: cov.minibatch(2, replacement="no")):
        with pytest.raises(ValueError, match="replacement must be True or False, got 'no'"):
            call()
    assert minibatch_noise_factor(2, 6, replacement=np.False_) == 0.4


def test_noise_magnitude_batch_size_takes_numpy_and_torch_ints_and_refuses_bools():
    # with replacement, True was a batch of one and 2.5 a batch of 2.5 samples
    model, data, loss_fn = tiny_mlp(3, 4, 2), tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    cov = gradient_covariance(model, loss_fn, data)
    ref = noise_magnitude(model, loss_fn, data, 0.1, 4, covariance=cov).noise_norm
    for b in (np.int64(4), torch.tensor(4)):
        assert noise_magnitude(model, loss_fn, data, 0.1, b, covariance=cov).noise_norm == ref
    for b in (True, 2.5):
        with pytest.raises(ValueError, match=r"Invalid batch size "):
            noise_magnitude(model, loss_fn, data, 0.1, b, covariance=cov)


def test_noise_magnitude_checks_its_batch_size_by_minibatch_noise_factors_rule():
    # check_batch_size: a batch of 0 was reported as "Invalid lr=0.1 / batch_size=0"
    model, data, loss_fn = tiny_mlp(3, 4, 2), tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    cov = gradient_covariance(model, loss_fn, data)
    for b in (0, np.int64(-2)):
        with pytest.raises(ValueError, match=rf"^Invalid batch size {b} \(must be >= 1\)$"):
            noise_magnitude(model, loss_fn, data, 0.1, b, covariance=cov)
        with pytest.raises(ValueError, match=rf"^Invalid batch size {b} \(must be >= 1\)$"):
            minibatch_noise_factor(b, 10)
    with pytest.raises(ValueError, match=r"^Invalid lr=-0.1 \(a finite number >= 0\)$"):
        noise_magnitude(model, loss_fn, data, -0.1, 4, covariance=cov)


def test_noise_magnitude_refuses_an_lr_that_is_no_finite_number():
    # only lr < 0 was checked: NaN gave a NaN noise, a string failed on a TypeError
    model, data, loss_fn = tiny_mlp(3, 4, 2), tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    cov = gradient_covariance(model, loss_fn, data)
    for bad in (math.nan, math.inf, "0.1", True, np.bool_(True)):
        with pytest.raises(ValueError, match=rf"^Invalid lr={re.escape(repr(bad))} "
                                             r"\(a finite number >= 0\)$"):
            noise_magnitude(model, loss_fn, data, bad, 4, covariance=cov)
    ref = noise_magnitude(model, loss_fn, data, 0.5, 4, covariance=cov).noise_norm
    for lr in (np.float32(0.5), np.float64(0.5)):
        assert noise_magnitude(model, loss_fn, data, lr, 4, covariance=cov).noise_norm == ref
    assert noise_magnitude(model, loss_fn, data, np.int64(0), 4, covariance=cov).noise_norm == 0


def test_noise_magnitude_refuses_a_covariance_of_other_samples_or_another_model():
    """Tr Σ of 6 of the 10 examples, or of another network, gave a noise of neither."""
    model, data, loss_fn = tiny_mlp(3, 4, 2), tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    cov = gradient_covariance(model, loss_fn, data)
    for bad, says in (
            (gradient_covariance(model, loss_fn, (data[0][:6], data[1][:6])),
             "covariance is over 6 samples, data holds 10: it must be Σ of the same examples"),
            (gradient_covariance(tiny_mlp(3, 5, 2), loss_fn, data),
             "covariance is over 32 parameters, the model has 26: it must be this model's Σ"),
            (cov.dense(), "covariance must be a GradientCovariance")):
        with pytest.raises(ValueError, match="^noise_magnitude: " + re.escape(says)):
            noise_magnitude(model, loss_fn, data, 0.1, 2, covariance=bad)


def test_uncentred_second_moment_matches_explicit_sum(problem):
    """``centred=False``: M = (1/N) Σ_i g_i g_iᵀ (Zhu et al.'s eq. (6), E[g gᵀ]) by an explicit
    sum of outer products in float64, = Σ + ḡḡᵀ; every quantity of Σ reads M, from both
    engines (the factored one without the (N, d) matrix)."""
    model, loss_fn, data, method = problem
    cov = gradient_covariance(model, loss_fn, data, method=method, centred=False)
    g = per_sample_gradients_loop(model, loss_fn, data).double()
    n, mean = len(g), g.mean(0)
    ref = sum(torch.outer(gi, gi) for gi in g) / n
    torch.testing.assert_close(ref, covariance_reference(g) + torch.outer(mean, mean))
    assert cov.centred is False and "uncentred" in repr(cov)
    torch.testing.assert_close(cov.gram(), g @ g.T / n, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(cov.mean_projections(), g @ mean / math.sqrt(n),
                               rtol=1e-10, atol=1e-14)
    u = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(cov.rmatmul(u), g.T @ u / math.sqrt(n), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(cov.diagonal(), torch.diagonal(ref), rtol=1e-10, atol=1e-14)
    assert cov.trace() == pytest.approx(float(torch.trace(ref)), rel=1e-12)
    assert cov.frobenius_norm() == pytest.approx(float(torch.linalg.matrix_norm(ref)), rel=1e-12)
    vals, vecs = cov.eigenpairs(3)
    rl, rv = torch.linalg.eigh(ref)
    torch.testing.assert_close(vals, rl.flip(0)[:3], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close((vecs * rv.flip(1)[:, :3]).sum(0).abs(),
                               torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-8)
    assert len(cov.spectrum()) == n              # d = 26 > N = 10: no direction centred away
    torch.testing.assert_close(cov.scaled(2.0).dense(), 2 * ref, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(cov.dense(), ref, rtol=1e-10, atol=1e-14)
    # Σ and M differ here, away from a minimum (ḡ ≠ 0)
    assert float(mean.norm()) > 1e-3
    with pytest.raises(ValueError, match="scales the centred Σ"):
        cov.minibatch(4)
    with pytest.raises(ValueError, match="centred must be True or False .*, got 'false'"):
        gradient_covariance(model, loss_fn, data, method=method, centred="false")


def test_centred_is_checked_as_every_flag_is():
    """The shared ``check_flag``: numpy's bool is a flag (refused before), and the refusal
    reads as the other flags' do, with what each value measures."""
    from sgdlab.errors import UserError

    model, data, _ = _least_squares()
    cov = gradient_covariance(model, nn.MSELoss(), data, centred=np.False_)
    assert cov.centred is False
    torch.testing.assert_close(
        cov.dense(), gradient_covariance(model, nn.MSELoss(), data, centred=False).dense(),
        rtol=0, atol=0)
    with pytest.raises(UserError, match=re.escape(
            "centred must be True or False (True: Σ, eq. (3); False: the second moment "
            "E[g gᵀ], eq. (6)), got 'no'")):
        gradient_covariance(model, nn.MSELoss(), data, centred="no")


def test_noise_magnitude_refuses_an_uncentred_covariance(problem):
    """sqrt(η Tr Σ / m) is the noise of eq. (2): Tr(Σ + ḡḡᵀ) would add ‖ḡ‖² to it."""
    model, loss_fn, data, method = problem
    cov = gradient_covariance(model, loss_fn, data, method=method, centred=False)
    with pytest.raises(ValueError, match="centred"):
        noise_magnitude(model, loss_fn, data, 0.1, 2, covariance=cov)


def test_noise_magnitude_refuses_a_scaled_covariance(problem):
    """The batch's factor is applied inside: a mini-batch covariance would take it twice
    (sqrt(η Tr Σ / m²)); Σ itself gives sqrt(η Tr Σ / m), as without ``covariance``."""
    model, loss_fn, data, method = problem
    cov = gradient_covariance(model, loss_fn, data, method=method)
    for scaled in (cov.minibatch(2), cov.scaled(3.0)):
        assert scaled.scale != 1.0
        with pytest.raises(ValueError, match="scaled covariance"):
            noise_magnitude(model, loss_fn, data, 0.1, 2, covariance=scaled)
    given = noise_magnitude(model, loss_fn, data, 0.1, 2, covariance=cov)
    assert given.noise_norm == pytest.approx(math.sqrt(0.1 * cov.trace() / 2), rel=1e-12)
    assert given.noise_norm == pytest.approx(
        noise_magnitude(model, loss_fn, data, 0.1, 2).noise_norm, rel=1e-6)


def test_check_copies_finds_a_repeated_eigenvalue_on_the_lanczos_path():
    """N = 1,001 > 1,000 samples, d = 1,010: Lanczos on the explicit Gram matrix, whose
    eigenvalues 25, 16, 16, 15.21 over a bulk below 9 one start vector reads as 25, 16, 15.21;
    ``check_copies`` finds the second 16 (eigh's values, float64)."""
    from sgdlab.measure.noise import GradientCovariance

    n, d = 1001, 1010
    s = torch.cat([torch.tensor([5.0, 4.0, 4.0, 3.9], dtype=torch.float64),
                   torch.linspace(0.1, 2.9, n - 4, dtype=torch.float64)])
    # a Householder reflection for the eigenvectors (a QR of 1,001 x 1,001 took a second)
    u = torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = torch.eye(n, dtype=torch.float64) - 2 * (u @ u.T) / (u.T @ u)
    factor = torch.cat([q * s, torch.zeros(n, d - n, dtype=torch.float64)], dim=1)
    cov = GradientCovariance(factor, torch.zeros(d, dtype=torch.float64), n)
    plain, _ = cov.eigenpairs(3, tol=1e-6, generator=torch.Generator().manual_seed(0))
    assert float(plain[2]) == pytest.approx(3.9 ** 2, rel=1e-6)
    vals, vecs = cov.eigenpairs(3, tol=1e-6, generator=torch.Generator().manual_seed(0),
                                check_copies=True)
    torch.testing.assert_close(vals, torch.tensor([25.0, 16.0, 16.0], dtype=torch.float64),
                               rtol=1e-6, atol=0)
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(3, dtype=torch.float64), rtol=0,
                               atol=1e-8)
