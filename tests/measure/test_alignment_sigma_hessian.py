"""Σ–H alignment metrics on constructed matrices with known answers, and on a tiny model."""
import functools
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.measure.alignment import (
    eigenvector_cosines, normalised_eigenvalues, projection_residual, sigma_hessian_alignment,
)
from sgdlab.testing import (
    check_copies_recorder, covariance_reference, dense_hessian_reference, per_sample_gradients_loop,
    tiny_classification, tiny_mlp,
)


def _e(i, d=5):
    v = torch.zeros(d, dtype=torch.float64)
    v[i] = 1.0
    return v


@pytest.mark.parametrize("phi", [0.0, 0.3, math.pi / 2])
def test_rotated_basis_known_answers(phi):
    u = torch.stack([_e(0), _e(1)], 1)
    v = torch.stack([math.cos(phi) * _e(0) + math.sin(phi) * _e(2), -_e(1)], 1)  # sign flip
    torch.testing.assert_close(eigenvector_cosines(u, v),
                               torch.tensor([abs(math.cos(phi)), 1.0], dtype=torch.float64))
    assert projection_residual(u, v) == pytest.approx(math.sin(phi) ** 2, abs=1e-12)


def test_residual_extremes_and_errors():
    u = torch.stack([_e(0), _e(1)], 1)
    w = torch.stack([_e(2), _e(3)], 1)
    assert projection_residual(u, w) == pytest.approx(2.0)       # orthogonal spans: k
    swapped = torch.stack([_e(1), _e(0)], 1)
    assert projection_residual(u, swapped) == pytest.approx(0.0)  # same span, other order
    torch.testing.assert_close(eigenvector_cosines(u, swapped), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(normalised_eigenvalues(torch.tensor([3.0, 4.0]), 5.0),
                               torch.tensor([0.6, 0.8]))
    for bad in (0.0, -1.0, math.nan):       # 0: Σ or H vanishing is no normalisation
        with pytest.raises(ValueError, match="Frobenius norm must be > 0"):
            normalised_eigenvalues(torch.tensor([3.0, 4.0]), bad)
    with pytest.raises(ValueError, match="shape"):
        projection_residual(u, w[:, :1])


def test_sigma_hessian_alignment_vs_dense():
    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    h = dense_hessian_reference(model, loss_fn, data)
    s = covariance_reference(per_sample_gradients_loop(model, loss_fn, data))
    hl, hv = torch.linalg.eigh(h)
    sl, sv = torch.linalg.eigh(s)
    k = 2
    hv, sv = hv.flip(1)[:, :k], sv.flip(1)[:, :k]
    res = sigma_hessian_alignment(model, loss_fn, data, k, tol=1e-12, num_probes=400,
                                  generator=torch.Generator().manual_seed(0),
                                  trace_alignment=True, exact_frobenius=False)
    torch.testing.assert_close(res.hessian_eigvals, hl.flip(0)[:k])
    torch.testing.assert_close(res.sigma_eigvals, sl.flip(0)[:k])
    torch.testing.assert_close(res.cosines, (hv * sv).sum(0).abs(), atol=1e-7, rtol=0)
    assert res.residual == pytest.approx(projection_residual(hv, sv), abs=1e-7)
    assert 0.0 <= res.residual <= k
    assert res.sigma_frobenius == pytest.approx(float(torch.linalg.matrix_norm(s)))
    # the Monte-Carlo parts within 4 exact standard errors (400 probes): ‖H‖_F from Gaussian
    # ‖Hv‖² (variance 2 Tr H⁴, delta method), Tr H from Rademacher vᵀHv (2 Σ_{i≠j} H_ij²)
    fro = float(torch.linalg.matrix_norm(h))
    se_fro = math.sqrt(2 * float(torch.trace(torch.linalg.matrix_power(h, 4))) / 400) / (2 * fro)
    assert abs(res.hessian_frobenius - fro) < 4 * se_fro
    se_tr = math.sqrt(2 * float((h ** 2).sum() - (h.diagonal() ** 2).sum()) / 400)
    assert abs(res.trace_h - float(torch.trace(h))) < 4 * se_tr
    assert res.trace_sigma == pytest.approx(float(torch.trace(s)), rel=1e-10)
    assert res.trace_h_sigma == pytest.approx(float(torch.trace(h @ s)), rel=1e-9)
    d = h.shape[0]
    assert res.dim == d
    # Zhu's indicator Tr(HΣ) / (Tr H · Tr Σ / d), with the estimated Tr H it reports
    ratio = float(torch.trace(h @ s)) / (res.trace_h * float(torch.trace(s)) / d)
    assert res.trace_ratio == pytest.approx(ratio, rel=1e-9)
    m = res.as_metrics()
    assert m["align/cos_1"] == pytest.approx(float(res.cosines[0]))
    assert m["align/trace_ratio"] == pytest.approx(ratio, rel=1e-9)
    assert m["align/trace_h_sigma"] == pytest.approx(float(torch.trace(h @ s)), rel=1e-9)
    assert m["align/residual"] == res.residual
    for i in range(k):
        assert m[f"align/hess_norm_eig_{i + 1}"] == pytest.approx(
            float(hl.flip(0)[i]) / res.hessian_frobenius, rel=1e-9)
        assert m[f"align/sigma_norm_eig_{i + 1}"] == pytest.approx(
            float(sl.flip(0)[i]) / float(torch.linalg.matrix_norm(s)), rel=1e-9)


def test_small_models_get_the_exact_hessian_frobenius_norm():
    # d = 22 <= 1,000: ‖H‖_F from the unit columns, so λ_i / ‖H‖_F is exact even with the
    # few probes of a smoke run (4 probes of a near rank-one H can put λ_1 / ‖H‖_F above 1)
    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    h = dense_hessian_reference(model, loss_fn, data)
    res = sigma_hessian_alignment(model, loss_fn, data, 2, tol=1e-12, num_probes=4,
                                  generator=torch.Generator().manual_seed(0))
    assert res.hessian_frobenius == pytest.approx(float(torch.linalg.matrix_norm(h)), rel=1e-12)
    top = torch.linalg.eigvalsh(h).abs().max()
    assert float(res.hessian_normalised.abs().max()) <= float(top / torch.linalg.matrix_norm(h))


def test_small_models_get_the_exact_hessian_trace():
    """Tr H of the trace ratio: with few Rademacher probes an indefinite H, whose trace is
    small next to ‖H‖_F, read off by more than the trace itself; small models take the exact
    trace from the unit columns, as they do ‖H‖_F."""
    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    h = dense_hessian_reference(model, loss_fn, data)
    s = covariance_reference(per_sample_gradients_loop(model, loss_fn, data))
    res = sigma_hessian_alignment(model, loss_fn, data, 2, tol=1e-12, num_probes=4,
                                  generator=torch.Generator().manual_seed(0),
                                  trace_alignment=True)
    assert res.trace_h == pytest.approx(float(torch.trace(h)), rel=1e-10)
    d = h.shape[0]
    exact = float(torch.trace(h @ s)) / (float(torch.trace(h)) * float(torch.trace(s)) / d)
    assert res.trace_ratio == pytest.approx(exact, rel=1e-8)


def test_trace_h_sigma_takes_every_sample_across_its_blocks():
    """Tr(HΣ) = Σ_i f_iᵀ H f_i over the rows of Σ's factor, taken in blocks of 64: with
    N = 150 samples (three blocks, the last partial) it equals the dense Tr(HΣ)."""
    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(150, 3, 2), nn.CrossEntropyLoss()
    h = dense_hessian_reference(model, loss_fn, data)
    s = covariance_reference(per_sample_gradients_loop(model, loss_fn, data))
    res = sigma_hessian_alignment(model, loss_fn, data, 2, tol=1e-10,
                                  generator=torch.Generator().manual_seed(0),
                                  trace_alignment=True)
    assert res.trace_h_sigma == pytest.approx(float(torch.trace(h @ s)), rel=1e-10)
    assert res.trace_sigma == pytest.approx(float(torch.trace(s)), rel=1e-10)


@pytest.mark.parametrize("bad", [True, 2.5, "3", 0])
def test_num_probes_must_be_a_count_even_where_the_exact_norm_reads_none(bad):
    """A small model's exact Frobenius norm reads no probes: True, 2.5 and "3" were taken."""
    model = tiny_mlp(3, 4, 2).double()
    x, y = tiny_classification(8, 3, 2)
    with pytest.raises(ValueError, match=re.escape(f"Invalid num_probes={bad!r} (an int >= 1: "
                                                   "the Frobenius and trace probes)")):
        sigma_hessian_alignment(model, nn.CrossEntropyLoss(), (x.double(), y), k=2,
                                num_probes=bad)


def test_a_loss_that_is_no_mean_of_the_samples_losses_is_refused():
    # class weights cancel in one sample's loss: Σ was that of the unweighted losses (its mean
    # gradient is not the loss's), set against H of the weighted loss
    from sgdlab.errors import UserError
    from sgdlab.measure import full_batch_grad_norm, gradient_covariance

    model = tiny_mlp(3, 4, 2)
    x, y = tiny_classification(10, 3, 2)
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert float(gradient_covariance(model, weighted, (x, y)).mean.norm()) != pytest.approx(
        full_batch_grad_norm(model, weighted, (x, y)), rel=0.05)
    with pytest.raises(UserError, match=r"sigma_hessian_alignment .*class weights"):
        sigma_hessian_alignment(model, weighted, (x, y), 1)
    with pytest.raises(UserError, match=r"sigma_hessian_alignment .*cross_entropy\(weight="):
        sigma_hessian_alignment(model, functools.partial(F.cross_entropy, weight=weighted.weight),
                                (x, y), 1)
    ignored = y.clone()
    ignored[0] = -100
    with pytest.raises(UserError, match=r"sigma_hessian_alignment .*ignore_index=-100"):
        sigma_hessian_alignment(model, nn.CrossEntropyLoss(), (x, ignored), 1)
    # a sum on one batch scales H alone: the directions are the mean loss's
    summed = sigma_hessian_alignment(model, nn.CrossEntropyLoss(reduction="sum"), (x, y), 1,
                                     generator=torch.Generator().manual_seed(0))
    mean = sigma_hessian_alignment(model, nn.CrossEntropyLoss(), (x, y), 1,
                                   generator=torch.Generator().manual_seed(0))
    assert summed.residual == pytest.approx(mean.residual, abs=1e-6)
    # and so does a partial of F.cross_entropy summed: the module's numbers
    partial = sigma_hessian_alignment(model, functools.partial(F.cross_entropy, reduction="sum"),
                                      (x, y), 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(partial.hessian_eigvals, summed.hessian_eigvals)
    assert partial.residual == pytest.approx(summed.residual, abs=1e-12)


def test_a_bfloat16_model_s_alignment_is_that_of_its_float64_copy():
    """Σ's eigenvectors come in the model's bfloat16, H's from Lanczos' float32 basis: the
    projection residual takes both (a matmul of the two dtypes failed), and the alignment is
    the float64 copy's up to bfloat16's rounding."""
    import copy
    import warnings

    model, (x, y) = tiny_mlp(3, 4, 2, seed=0), tiny_classification(8, 3, 2, seed=1)
    loss_fn = nn.CrossEntropyLoss()
    ref = sigma_hessian_alignment(model, loss_fn, (x, y), k=1, tol=1e-8,
                                  generator=torch.Generator().manual_seed(0)).as_metrics()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*parameters are torch.bfloat16")
        half = sigma_hessian_alignment(copy.deepcopy(model).bfloat16(), loss_fn,
                                       (x.bfloat16(), y), k=1,
                                       generator=torch.Generator().manual_seed(0)).as_metrics()
    for key in ("align/cos_1", "align/residual"):
        assert abs(half[key] - ref[key]) < 0.02, (key, half[key], ref[key])


def _least_squares():
    """ℓ_i = (x_iᵀθ − y_i)², N = 6, d = 3, away from its minimum: the model, its data, the
    per-sample gradients g_i = 2 r_i x_i and H = (2/N) XᵀX in closed form (float64)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64) * torch.tensor(
        [2.0, 1.0, 0.3], dtype=torch.float64)
    y = torch.randn(6, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.2, -0.4, 1.0]], dtype=torch.float64))
    r = x @ model.weight.detach()[0] - y[:, 0]
    return model, (x, y), 2 * r[:, None] * x, 2 * x.T @ x / len(x)


def test_zhu_alignment_quantities_of_least_squares_in_closed_form():
    """Every Σ–H quantity on ℓ_i = (x_iᵀθ − y_i)², N = 6, d = 3, from closed forms: H =
    (2/N) XᵀX, g_i = 2 r_i x_i, Σ by eq. (3) (1/N). Eq. (9)'s cosine of the i-th eigenvectors
    of eq. (8)'s non-increasing orders (as |cos|: an eigenvector's sign is arbitrary), Fig.
    1(c)'s λ_i / ‖H‖_F and γ_i / ‖Σ‖_F, eq. (20)'s e(U_k, V_k), and Tr(HΣ) against the
    isotropic noise of the same trace, (Tr Σ / d) I, whose indicator is Tr H · Tr Σ / d."""
    model, (x, y), grads, h = _least_squares()
    d, k = 3, 2
    sigma = covariance_reference(grads)         # eq. (3), 1/N
    hl, hv = torch.linalg.eigh(h)
    sl, sv = torch.linalg.eigh(sigma)
    hl, hv, sl, sv = hl.flip(0), hv.flip(1), sl.flip(0), sv.flip(1)      # non-increasing
    res = sigma_hessian_alignment(model, nn.MSELoss(), (x, y), k, tol=1e-12,
                                  generator=torch.Generator().manual_seed(0),
                                  trace_alignment=True)
    torch.testing.assert_close(res.hessian_eigvals, hl[:k], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.sigma_eigvals, sl[:k], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.cosines, (hv[:, :k] * sv[:, :k]).sum(0).abs(),
                               rtol=0, atol=1e-8)
    u, v = hv[:, :k], sv[:, :k]
    e = float(torch.linalg.matrix_norm(u - v @ v.T @ u) ** 2)
    assert res.residual == pytest.approx(e, abs=1e-9)
    torch.testing.assert_close(res.hessian_normalised, hl[:k] / torch.linalg.matrix_norm(h),
                               rtol=1e-9, atol=0)
    torch.testing.assert_close(res.sigma_normalised,
                               sl[:k] / torch.linalg.matrix_norm(sigma), rtol=1e-9, atol=0)
    ths, trh, trs = (float(torch.trace(h @ sigma)), float(torch.trace(h)),
                     float(torch.trace(sigma)))
    assert res.trace_h_sigma == pytest.approx(ths, rel=1e-10)
    # against Tr(H (Tr Σ / d) I) = Tr H · Tr Σ / d, the isotropic noise of the same E‖ε‖²
    assert res.trace_ratio == pytest.approx(ths / (trh * trs / d), rel=1e-10)
    assert res.trace_ratio != pytest.approx(1.0, abs=0.05)      # Σ is not isotropic here


def test_uncentred_alignment_compares_h_with_eq_6s_second_moment_in_closed_form():
    """``centred=False`` sets H against eq. (6)'s E[g gᵀ] = (1/N) Σ_i g_i g_iᵀ in place of eq.
    (3)'s Σ, on ℓ_i = (x_iᵀθ − y_i)² away from the minimum (ḡ ≠ 0, so the two differ): every
    quantity from the closed forms g_i = 2 r_i x_i, H = (2/N) XᵀX, in float64."""
    model, (x, y), grads, h = _least_squares()
    d, k = 3, 2
    second = grads.T @ grads / len(grads)                           # eq. (6), uncentred
    hl, hv = (t.flip(-1) for t in torch.linalg.eigh(h))
    ml, mv = (t.flip(-1) for t in torch.linalg.eigh(second))
    kw = dict(tol=1e-12, generator=torch.Generator().manual_seed(0), trace_alignment=True)
    res = sigma_hessian_alignment(model, nn.MSELoss(), (x, y), k, centred=False, **kw)
    torch.testing.assert_close(res.sigma_eigvals, ml[:k], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.cosines, (hv[:, :k] * mv[:, :k]).sum(0).abs(),
                               rtol=0, atol=1e-8)
    u, v = hv[:, :k], mv[:, :k]
    assert res.residual == pytest.approx(float(torch.linalg.matrix_norm(u - v @ v.T @ u) ** 2),
                                         abs=1e-9)
    torch.testing.assert_close(res.sigma_normalised, ml[:k] / torch.linalg.matrix_norm(second),
                               rtol=1e-9, atol=0)
    assert res.trace_h_sigma == pytest.approx(float(torch.trace(h @ second)), rel=1e-10)
    assert res.trace_sigma == pytest.approx(float(torch.trace(second)), rel=1e-10)
    assert res.trace_ratio == pytest.approx(
        float(torch.trace(h @ second)) / (float(torch.trace(h)) * float(torch.trace(second)) / d),
        rel=1e-10)
    # the default is eq. (3)'s Σ, which differs by ḡḡᵀ here
    centred = sigma_hessian_alignment(model, nn.MSELoss(), (x, y), k, **kw)
    torch.testing.assert_close(centred.sigma_eigvals,
                               torch.linalg.eigvalsh(covariance_reference(grads)).flip(0)[:k])
    assert abs(centred.residual - res.residual) > 1e-3


class _Bilinear(nn.Module):
    """f(x) = a b x₁ + w x₂: at a = b = 0 the Hessian of the mean of (f − y)² is
    [[0, c, 0], [c, 0, 0], [0, 0, 2 mean(x₂²)]], c = 2 mean(r x₁), r = w x₂ − y."""

    def __init__(self, w: float):
        super().__init__()
        self.a, self.b = (nn.Parameter(torch.zeros((), dtype=torch.float64)) for _ in "ab")
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x):
        return (self.a * self.b * x[:, 0] + self.w * x[:, 1])[:, None]


def test_the_hessians_top_k_are_its_largest_eigenvalues_not_its_largest_in_magnitude():
    """Eq. (8): Λ holds H's eigenvalues "in a non-increasing order", so near a saddle the top
    k are the algebraically largest: here H's eigenvalues are ±|c| = ±6 and 2, and k = 2 takes
    6 and 2, not 6 and −6 (the two largest in magnitude)."""
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([[-3.0], [-3.0], [3.0], [3.0]], dtype=torch.float64)
    model = _Bilinear(0.0)          # r = −y, c = 2 mean(−y x₁) = 6, 2 mean(x₂²) = 2
    h = dense_hessian_reference(model, nn.MSELoss(), (x, y))
    torch.testing.assert_close(torch.linalg.eigvalsh(h), torch.tensor(
        [-6.0, 2.0, 6.0], dtype=torch.float64))
    res = sigma_hessian_alignment(model, nn.MSELoss(), (x, y), 2, tol=1e-12,
                                  generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.hessian_eigvals, torch.tensor([6.0, 2.0],
                                                                 dtype=torch.float64))


def test_the_trace_ratio_of_a_noiseless_point_is_nan_not_an_error():
    """N copies of one example: every g_i is ḡ, so Σ = 0 (eq. 3) and Tr(HΣ) = Tr Σ = 0; the
    indicator against isotropic noise of the same (zero) trace is 0/0, NaN (the instrument
    then leaves it out), while Tr H = (2/N) Σ‖x_i‖² = 2‖x‖² is still measured exactly."""
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64).repeat(4, 1)
    y = torch.full((4, 1), 0.3, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.2, -0.4, 1.0]], dtype=torch.float64))
    res = sigma_hessian_alignment(model, nn.MSELoss(), (x, y), 1, tol=1e-12,
                                  generator=torch.Generator().manual_seed(0),
                                  trace_alignment=True)
    assert res.trace_sigma == 0 and res.trace_h_sigma == 0
    assert res.trace_h == pytest.approx(2 * float((x[0] ** 2).sum()), rel=1e-12)
    assert math.isnan(res.trace_ratio)
    assert math.isnan(res.as_metrics()["align/trace_ratio"])


def test_check_copies_reaches_both_top_k(monkeypatch):
    """``check_copies`` goes to the Lanczos of H's top-k and to Σ's top-k (the bilinear saddle
    above: H's 6 and 2 as without it)."""
    import sgdlab.measure.alignment as alignment
    from sgdlab.measure.noise import GradientCovariance

    asked = []
    spy = check_copies_recorder(asked)
    monkeypatch.setattr(alignment, "lanczos", spy("hessian", alignment.lanczos))
    monkeypatch.setattr(GradientCovariance, "eigenpairs",
                        spy("sigma", GradientCovariance.eigenpairs))
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([[-3.0], [-3.0], [3.0], [3.0]], dtype=torch.float64)
    res = sigma_hessian_alignment(_Bilinear(0.0), nn.MSELoss(), (x, y), 2, tol=1e-12,
                                  generator=torch.Generator().manual_seed(0), check_copies=True)
    assert asked == [("sigma", True), ("hessian", True)]
    torch.testing.assert_close(res.hessian_eigvals, torch.tensor([6.0, 2.0],
                                                                 dtype=torch.float64))


def _alignment_values(res) -> dict[str, float]:
    return {**res.as_metrics(), "trace_h": res.trace_h, "trace_sigma": res.trace_sigma,
            "sigma_frobenius": res.sigma_frobenius}


@pytest.mark.parametrize("centred", [True, False])
def test_a_covariance_computed_before_gives_the_same_alignment(centred, monkeypatch):
    """``covariance=``: Σ (or the second moment) of the same examples, computed once and
    passed in, gives the values computed without it; no per-sample gradients are taken."""
    from sgdlab.measure.noise import gradient_covariance

    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    kw = dict(tol=1e-12, num_probes=5, trace_alignment=True, centred=centred)
    alone = sigma_hessian_alignment(model, loss_fn, data, 2,
                                    generator=torch.Generator().manual_seed(0), **kw)
    cov = gradient_covariance(model, loss_fn, data, centred=centred)
    cov.spectrum()      # as sgdlab measure's noise leaves it: its full eigh cached
    import sgdlab.measure.alignment as alignment

    monkeypatch.setattr(alignment, "gradient_covariance", None)     # Σ is not built again
    shared = sigma_hessian_alignment(model, loss_fn, data, 2, covariance=cov,
                                     generator=torch.Generator().manual_seed(0), **kw)
    a, b = _alignment_values(alone), _alignment_values(shared)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-12, abs=1e-12), key


def test_a_covariance_other_than_the_one_it_would_compute_is_refused():
    from sgdlab.measure.noise import gradient_covariance

    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    cov = gradient_covariance(model, loss_fn, data)
    for bad, says in (
            (gradient_covariance(model, loss_fn, data, centred=False),
             "covariance is the uncentred second moment Σ + ḡḡᵀ, centred=True asks for Σ"),
            (cov.minibatch(2), "covariance must be Σ itself, not a scaled covariance"),
            (gradient_covariance(model, loss_fn, (data[0][:6], data[1][:6])),
             "covariance is over 6 samples, data holds 10: it must be Σ of the same examples"),
            (gradient_covariance(tiny_mlp(3, 5, 2), loss_fn, data),
             "covariance is over 32 parameters, the model has 26: it must be this model's Σ"),
            (cov.dense(), "covariance must be a GradientCovariance")):
        with pytest.raises(ValueError, match=re.escape(says)):
            sigma_hessian_alignment(model, loss_fn, data, 2, covariance=bad)
    with pytest.raises(ValueError, match=re.escape("covariance is Σ (centred), centred=False "
                                                   "asks for the uncentred second moment")):
        sigma_hessian_alignment(model, loss_fn, data, 2, covariance=cov, centred=False)


@pytest.mark.parametrize("check_copies", [False, True])
def test_hessian_eigenpairs_computed_before_give_the_same_alignment(check_copies, monkeypatch):
    """``hessian_eigenpairs=``: H's top-k of the same examples, computed by Lanczos once and
    passed in with the generator as that run left it, gives the values computed without them
    (‖H‖_F and Tr H by probes, drawn where the alignment's own Lanczos run leaves the
    generator); no Lanczos is run."""
    from sgdlab.measure.curvature import lanczos
    from sgdlab.operators import HessianOperator

    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    kw = dict(tol=1e-10, num_probes=5, trace_alignment=True, exact_frobenius=False,
              check_copies=check_copies)
    alone = sigma_hessian_alignment(model, loss_fn, data, 2,
                                    generator=torch.Generator().manual_seed(0), **kw)
    g = torch.Generator().manual_seed(0)
    pairs = lanczos(HessianOperator(model, loss_fn, data), 2, tol=1e-10, generator=g,
                    check_copies=check_copies)
    import sgdlab.measure.alignment as alignment

    monkeypatch.setattr(alignment, "lanczos", None)     # H's top-k are not computed again
    shared = sigma_hessian_alignment(model, loss_fn, data, 2, hessian_eigenpairs=pairs,
                                     generator=g, **kw)
    a, b = _alignment_values(alone), _alignment_values(shared)
    assert a["trace_h"] is not None and a == b
    assert shared.hessian_frobenius == alone.hessian_frobenius
    torch.testing.assert_close(shared.hessian_eigvals, alone.hessian_eigvals, rtol=0, atol=0)


def test_hessian_eigenpairs_other_than_lanczos_would_return_are_refused(monkeypatch):
    from sgdlab.measure.curvature import lanczos
    from sgdlab.operators import HessianOperator

    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    vals, vecs = lanczos(HessianOperator(model, loss_fn, data), 3)
    import sgdlab.measure.alignment as alignment

    # refused before Σ is computed
    monkeypatch.setattr(alignment, "gradient_covariance", None)
    nan = vecs.clone()
    nan[0, 0] = math.nan
    who = "sigma_hessian_alignment: hessian_eigenpairs"
    for bad, says in (
            ([vals[:2], vecs[:, :2]], f"{who} must be the pair (eigvals, eigvecs) of tensors "
                                      "that lanczos returns, got list"),
            ((vals, vecs), f"{who} have shapes (3,) and (26, 3); k = 2 of the model's d = 26 "
                           "parameters asks for (2,) and (26, 2): they must be this model's "
                           "top-k"),
            ((vals[:2], vecs[:20, :2]), "have shapes (2,) and (20, 2); k = 2"),
            ((vals[:2].flip(0), vecs[:, :2]), f"{who}: eigvals [{float(vals[1])}, "
                                              f"{float(vals[0])}] are not descending"),
            ((vals[:2].float(), vecs[:, :2]), f"{who}: eigvals are torch.float32 on cpu, "
                                              "Lanczos of the model's Hessian gives "
                                              "torch.float64 on cpu"),
            ((vals[:2], nan[:, :2]), f"{who}: eigvecs hold non-finite values")):
        with pytest.raises(ValueError, match=re.escape(says)):
            sigma_hessian_alignment(model, loss_fn, data, 2, hessian_eigenpairs=bad)
