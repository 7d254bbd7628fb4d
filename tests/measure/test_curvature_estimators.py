"""Trace, Frobenius norm, SLQ density, dense spectra and the harmonic mean vs exact values."""
import copy
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.measure.curvature import (
    SpectralDensity, dense_hessian, frobenius_norm, harmonic_mean_eigenvalue,
    hessian_bottom_eigenvalues, hessian_frobenius_norm, hessian_spectrum, hessian_trace,
    hutchinson_trace, lanczos, power_iteration, spectral_density,
)
from sgdlab.testing import (dense_hessian_reference, empirical_fisher_reference, ggn_reference,
                            per_sample_gradients_loop, tiny_classification, tiny_mlp)


def _spd_like(d=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.linspace(-1.0, 4.0, d, dtype=torch.float64)
    return q @ torch.diag(lam) @ q.T


def test_hutchinson_trace_within_three_standard_errors():
    a = _spd_like()
    est = hutchinson_trace(a, 200, generator=torch.Generator().manual_seed(1))
    assert est.num_samples == 200 and est.stderr > 0
    assert abs(est.value - float(torch.trace(a))) < 3 * est.stderr
    # Rademacher probes on a diagonal matrix are exact (zero variance)
    diag = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    exact = hutchinson_trace(diag, 5, generator=torch.Generator().manual_seed(0))
    assert exact.value == pytest.approx(15.0) and exact.stderr == pytest.approx(0.0, abs=1e-12)


def test_frobenius_norm_estimate():
    a = _spd_like(seed=3)
    est = frobenius_norm(a, 400, generator=torch.Generator().manual_seed(2))
    exact = float(torch.linalg.matrix_norm(a))
    assert abs(est.value - exact) < 3.5 * est.stderr
    est_r = frobenius_norm(a, 400, generator=torch.Generator().manual_seed(2),
                           distribution="rademacher")
    assert abs(est_r.value - exact) < 3.5 * est_r.stderr
    for block in (1, 7, None):          # unit columns in any blocking: the exact norm
        ex = frobenius_norm(a, 1, exact=True, block_size=block)
        assert ex.value == pytest.approx(exact, rel=1e-13)
        assert (ex.stderr, ex.num_samples) == (0.0, a.shape[0])


def test_slq_density_integrates_to_one_and_matches_moments():
    d = 60
    g = torch.Generator().manual_seed(4)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.tensor([-1.0] * 20 + [2.0] * 40, dtype=torch.float64)
    a = q @ torch.diag(lam) @ q.T
    dens = spectral_density(a, num_probes=30, num_iter=10, sigma=0.05, grid=2000,
                            generator=torch.Generator().manual_seed(5))
    assert float(torch.trapezoid(dens.density, dens.grid)) == pytest.approx(1.0, abs=1e-6)
    # moments: per-probe Rayleigh quotients are unbiased for Tr(A^p)/d
    for p, exact in [(1, float(lam.mean())), (2, float((lam ** 2).mean()))]:
        per_probe = (dens.weights * dens.nodes ** p).sum(1)
        se = float(per_probe.std() / math.sqrt(len(per_probe)))
        assert abs(dens.moment(p) - exact) < 4 * se + 1e-12
    # mass near -1 is one third
    mass_neg = float(torch.trapezoid(dens.density * (dens.grid < 0.5), dens.grid))
    per_probe_neg = (dens.weights * (dens.nodes < 0.5)).sum(1)
    assert abs(mass_neg - 1 / 3) < 4 * float(per_probe_neg.std() / math.sqrt(30)) + 1e-6


def test_model_conveniences_vs_dense_reference():
    model = tiny_mlp(3, 4, 3)
    data, loss_fn = tiny_classification(12, 3, 3), nn.CrossEntropyLoss()
    ref = dense_hessian_reference(model, loss_fn, data)
    torch.testing.assert_close(dense_hessian(model, loss_fn, data, chunk_size=7), ref)
    spec = hessian_spectrum(model, loss_fn, data)
    torch.testing.assert_close(spec, torch.linalg.eigvalsh(ref))
    bottom = hessian_bottom_eigenvalues(model, loss_fn, data, 2, tol=0, num_iter=ref.shape[0])
    torch.testing.assert_close(bottom, spec[:2], atol=1e-9, rtol=1e-8)
    tr = hessian_trace(model, loss_fn, data, 300, generator=torch.Generator().manual_seed(0))
    assert abs(tr.value - float(torch.trace(ref))) < 3 * tr.stderr
    fro = hessian_frobenius_norm(model, loss_fn, data, 300,
                                 generator=torch.Generator().manual_seed(1))
    assert abs(fro.value - float(torch.linalg.matrix_norm(ref))) < 3.5 * fro.stderr
    with pytest.raises(ValueError, match="max_params"):
        dense_hessian(model, loss_fn, data, max_params=10)


def test_the_dense_hessian_is_symmetrised_in_place_tile_by_tile():
    """(H + Hᵀ)/2 without a second d x d matrix: tiles that do not divide d, in place."""
    from sgdlab.measure.curvature.dense import symmetrise_

    h = torch.randn(7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    want = (h + h.T) / 2
    out = symmetrise_(h, block=3)
    assert out.data_ptr() == h.data_ptr()
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_harmonic_mean_of_positive_part():
    lam = torch.tensor([-0.5, 0.0, 1e-20, 1.0, 2.0, 4.0], dtype=torch.float64)
    hm, used = harmonic_mean_eigenvalue(lam)
    assert used == 3
    assert hm == pytest.approx(3 / (1 + 0.5 + 0.25))
    # an explicit threshold replaces the rank threshold: only 2 and 4 are above 1.5
    assert harmonic_mean_eigenvalue(lam, threshold=1.5) == (pytest.approx(2 / 0.75), 2)
    assert harmonic_mean_eigenvalue(torch.tensor([-1.0, 0.0]))[1] == 0
    assert math.isnan(harmonic_mean_eigenvalue(torch.tensor([-1.0, 0.0]))[0])
    # the default threshold is numpy's λ_max · d · eps = 4 · 6 · eps here: 10 eps is below it,
    # 100 eps above (λ_max · eps alone would keep 10 eps, and it would dominate the mean)
    eps = torch.finfo(torch.float64).eps
    lam = torch.tensor([-1.0, 10 * eps, 100 * eps, 1.0, 2.0, 4.0], dtype=torch.float64)
    hm, used = harmonic_mean_eigenvalue(lam)
    assert used == 4
    # abs=0: approx's default abs=1e-12 is ten times the ~400 eps compared here
    assert hm == pytest.approx(4 / (1 / (100 * eps) + 1 + 0.5 + 0.25), rel=1e-12, abs=0)


def test_hutchpp_unbiased_and_lower_variance_with_outliers():
    from sgdlab.measure.curvature import hutchpp_trace

    g = torch.Generator().manual_seed(9)
    d = 80
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([50.0, 30.0, 20.0], dtype=torch.float64),
                     0.1 * torch.randn(d - 3, generator=g, dtype=torch.float64)])
    a = q @ torch.diag(lam) @ q.T
    exact = float(lam.sum())
    gen = torch.Generator().manual_seed(3)
    pp = [hutchpp_trace(a, 30, generator=gen) for _ in range(40)]
    hu = [hutchinson_trace(a, 30, generator=gen).value for _ in range(40)]
    pp_t, hu_t = torch.tensor([e.value for e in pp]), torch.tensor(hu)
    assert abs(float(pp_t.mean()) - exact) < 4 * float(pp_t.std()) / 40 ** 0.5 + 1e-9
    assert float(pp_t.std()) < 0.2 * float(hu_t.std())
    # the reported standard error is the spread of the estimates (the sd of 40 is within ~11%)
    assert 0.6 < float(pp_t.std()) / (sum(e.stderr for e in pp) / len(pp)) < 1.6
    with pytest.raises(ValueError, match="num_matvecs"):
        hutchpp_trace(a, 2)


def test_eigenvalue_conveniences_take_every_curvature_operator():
    """hessian_top_eigenvalue / hessian_eigenpairs / hessian_bottom_eigenvalues with
    ``operator=``: the extreme eigenvalues of the dense GGN and empirical Fisher."""
    from sgdlab.measure.curvature import hessian_eigenpairs, hessian_top_eigenvalue
    from sgdlab.operators import per_sample_gradients

    model, loss_fn = tiny_mlp(3, 4, 2), nn.CrossEntropyLoss()
    data = tiny_classification(9, 3, 2)
    ggn = torch.linalg.eigvalsh(ggn_reference(model, loss_fn, data))
    fisher = torch.linalg.eigvalsh(empirical_fisher_reference(
        per_sample_gradients(model, loss_fn, data)))
    kw = dict(tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert hessian_top_eigenvalue(model, loss_fn, data, operator="ggn", **kw) == \
        pytest.approx(float(ggn[-1]), rel=1e-8)
    vals, _ = hessian_eigenpairs(model, loss_fn, data, 2, operator="empirical_fisher", **kw)
    torch.testing.assert_close(vals, fisher.flip(0)[:2])
    low = hessian_bottom_eigenvalues(model, loss_fn, data, 1, operator="ggn", **kw)
    # the GGN's null space (ReLU, scale symmetries) makes its bottom eigenvalue 0 up to round-off
    # (ggn[0] ~ 2e-16): abs=1e-8 passed any Lanczos residue below 1e-8, tol=1e-10 gives ~1e-16
    assert float(low[0]) == pytest.approx(0.0, abs=1e-12) and abs(float(ggn[0])) < 1e-12


def test_top_eigenvalue_points_to_eigenpairs_when_asked_for_several():
    """``hessian_top_eigenvalue(..., k=3)`` names the function that gives several, instead of
    Python's "got multiple values for argument 'k'" from inside the call."""
    from sgdlab.measure.curvature import hessian_top_eigenvalue

    model, data = tiny_mlp(3, 4, 2), tiny_classification(9, 3, 2)
    for kw in ({"k": 3}, {"which": "smallest"}):
        with pytest.raises(TypeError, match=r"takes no \w+=.*hessian_eigenpairs\(model"):
            hessian_top_eigenvalue(model, nn.CrossEntropyLoss(), data, **kw)



def test_the_frobenius_norm_of_a_zero_matrix_is_zero_with_no_standard_error():
    """A = 0 (a model at a point of zero curvature): every ‖A v‖² is 0, so ‖A‖_F = 0; the
    delta-method error se / (2‖A‖_F) is 0 / 0 there, read as NaN rather than raised."""
    est = frobenius_norm(torch.zeros(4, 4, dtype=torch.float64), 5,
                         generator=torch.Generator().manual_seed(0))
    assert est.value == 0.0 and est.num_samples == 5
    assert math.isnan(est.stderr)

def test_standard_errors_equal_the_exact_probe_variances():
    """The reported standard errors are those of the probes' distributions, not merely some
    positive number (a wrong stderr would make every "within k standard errors" check
    meaningless): Rademacher vᵀAv has variance 2 Σ_{i≠j} A_ij²; Gaussian ‖Av‖² has variance
    2 Tr A⁴, Rademacher ‖Av‖² = vᵀA²v has 2 Σ_{i≠j} (A²)_ij², propagated to ‖A‖_F by the
    delta method (÷ 2‖A‖_F). At 1,000 probes the sample standard deviation is within a few
    percent of the exact one."""
    a = _spd_like(40, seed=6)
    m = 1000
    a2 = a @ a
    off = lambda b: float((b ** 2).sum() - (b.diagonal() ** 2).sum())  # noqa: E731
    fro = float(torch.linalg.matrix_norm(a))
    tr = hutchinson_trace(a, m, generator=torch.Generator().manual_seed(0))
    se = math.sqrt(2 * off(a) / m)
    assert tr.stderr == pytest.approx(se, rel=0.12)
    assert abs(tr.value - float(torch.trace(a))) < 4 * se
    for dist, var in (("gaussian", 2 * float(torch.trace(a2 @ a2))), ("rademacher", 2 * off(a2))):
        est = frobenius_norm(a, m, generator=torch.Generator().manual_seed(1), distribution=dist)
        se = math.sqrt(var / m) / (2 * fro)
        assert est.stderr == pytest.approx(se, rel=0.12), dist
        assert abs(est.value - fro) < 4 * se, dist


def test_estimates_are_the_probes_mean_and_its_standard_error_by_hand():
    """With the probes drawn by hand from the same generator stream, the estimate is their
    samples' mean and the standard error their sample standard deviation (Bessel's n − 1) over
    √M, exactly: at M = 5 the population std would be √(4/5) of it, inside the 12% the
    statistical check above allows."""
    a, m = _spd_like(8, seed=4), 5
    v = torch.randint(0, 2, (m, 8), generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64) * 2 - 1
    samples = ((v @ a) * v).sum(1)                                  # vᵀAv per probe
    for block in (1, 2, 5):
        tr = hutchinson_trace(a, m, generator=torch.Generator().manual_seed(0),
                              block_size=block)
        assert tr.value == pytest.approx(float(samples.mean()), rel=1e-13)
        assert tr.stderr == pytest.approx(float(samples.std(correction=1)) / math.sqrt(m),
                                          rel=1e-12)
    g = torch.Generator().manual_seed(1)
    v = torch.stack([torch.randn(8, generator=g, dtype=torch.float64) for _ in range(m)])
    sq = (v @ a).square().sum(1)                                    # ‖Av‖² per probe
    fro = frobenius_norm(a, m, generator=torch.Generator().manual_seed(1))
    assert fro.value == pytest.approx(math.sqrt(float(sq.mean())), rel=1e-13)
    assert fro.stderr == pytest.approx(
        float(sq.std(correction=1)) / math.sqrt(m) / (2 * fro.value), rel=1e-12)


def test_hutchpp_is_exact_when_the_sketch_spans_the_range():
    """Hutch++ (Meyer et al. 2021, Alg. 1): with rank A ≤ m/3 the sketch Q spans range(A), the
    deflated remainder is zero and the estimate is Tr A exactly, with zero standard error."""
    from sgdlab.measure.curvature import hutchpp_trace

    g = torch.Generator().manual_seed(2)
    f = torch.randn(30, 3, generator=g, dtype=torch.float64)
    a = f @ torch.diag(torch.tensor([4.0, -1.5, 0.7], dtype=torch.float64)) @ f.T   # rank 3
    est = hutchpp_trace(a, 12, generator=torch.Generator().manual_seed(0))          # k = 4
    assert est.value == pytest.approx(float(torch.trace(a)), rel=1e-11)
    assert est.stderr == pytest.approx(0.0, abs=1e-9 * abs(float(torch.trace(a))))


def test_hutchpp_splits_the_products_as_algorithm_1_by_hand():
    """Meyer et al. (2021), Alg. 1 with m = 14 products on a full-rank A, the draws made by
    hand from the same generator stream: S with k = ⌊m/3⌋ = 4 Rademacher columns,
    Q = orth(A S), Tr(Qᵀ A Q) exact, then m − 2k = 6 Rademacher probes G of the deflated
    (I − QQᵀ) A (I − QQᵀ), their sample mean added and their standard error reported."""
    from sgdlab.measure.curvature import hutchpp_trace

    a, d, m, k = _spd_like(30, seed=5), 30, 14, 4
    g = torch.Generator().manual_seed(0)
    s = (torch.randint(0, 2, (k, d), generator=g, dtype=torch.float64) * 2 - 1).T
    q, _ = torch.linalg.qr(a @ s)
    probes = (torch.randint(0, 2, (m - 2 * k, d), generator=g, dtype=torch.float64) * 2 - 1).T
    probes = probes - q @ (q.T @ probes)
    samples = (probes * (a @ probes)).sum(0)
    est = hutchpp_trace(a, m, generator=torch.Generator().manual_seed(0))
    assert est.num_samples == m
    assert est.value == pytest.approx(float(torch.trace(q.T @ a @ q) + samples.mean()),
                                      rel=1e-12)
    assert est.stderr == pytest.approx(float(samples.std()) / math.sqrt(m - 2 * k), rel=1e-12)


def test_slq_quadrature_is_exact_gauss_quadrature_per_probe():
    """SLQ with m Lanczos steps is the m-node Gauss quadrature of each probe's spectral
    measure μ_v = Σ_i (u_iᵀv)²/‖v‖² δ_{λ_i}: its moments Σ_j w_j θ_jᵖ equal vᵀAᵖv / vᵀv for
    p ≤ 2m − 1 (not only on average over probes), and the density is the stated mixture of
    Gaussians. The probes are the Gaussian vectors the generator draws one at a time."""
    d, m, probes = 14, 4, 3
    a = _spd_like(d, seed=8)
    dens = spectral_density(a, num_probes=probes, num_iter=m, sigma=0.1, grid=50,
                            generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    vs = [torch.randn(d, generator=g, dtype=torch.float64) for _ in range(probes)]
    for i, v in enumerate(vs):
        for p in range(2 * m):
            exact = float(v @ torch.linalg.matrix_power(a, p) @ v / (v @ v))
            quad = float((dens.weights[i] * dens.nodes[i] ** p).sum())
            assert quad == pytest.approx(exact, rel=1e-9, abs=1e-11), (i, p)
        # degree 2m is not integrated exactly (the test can tell m steps from more)
        exact = float(v @ torch.linalg.matrix_power(a, 2 * m) @ v / (v @ v))
        assert abs(float((dens.weights[i] * dens.nodes[i] ** (2 * m)).sum()) - exact) > 1e-6
    t = dens.grid[:, None, None]
    kern = torch.exp(-0.5 * ((t - dens.nodes[None]) / 0.1) ** 2) / (0.1 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(dens.density, (kern * dens.weights[None]).sum(-1).mean(-1))
    # two distinct eigenvalues: the Krylov space is exhausted after two steps, the nodes are
    # exactly the eigenvalues and the weights the probe's squared projections
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(9),
                                       dtype=torch.float64))
    lam = torch.tensor([-1.0] * 5 + [2.0] * (d - 5), dtype=torch.float64)
    two = q @ torch.diag(lam) @ q.T
    dens = spectral_density(two, num_probes=probes, num_iter=6,
                            generator=torch.Generator().manual_seed(4))
    for i, v in enumerate(vs):
        keep = dens.weights[i] > 0
        torch.testing.assert_close(dens.nodes[i][keep], torch.tensor([-1.0, 2.0],
                                                                      dtype=torch.float64))
        neg = float((q[:, :5].T @ v).square().sum() / (v @ v))
        torch.testing.assert_close(dens.weights[i][keep],
                                   torch.tensor([neg, 1 - neg], dtype=torch.float64))


@pytest.mark.parametrize("name, kw, message", [
    # the internal estimator's name ("lanczos() got an unexpected keyword argument") named
    # nothing the user called
    ("hessian_top_eigenvalue", {"max_iters": 5},
     r"^hessian_top_eigenvalue\(\) got an unexpected keyword argument 'max_iters' \(did you "
     r"mean num_iter\?\); it takes model, loss_fn, data, operator, num_iter, tol, generator, "
     r"v0, criterion, dtype, check_copies$"),
    ("hessian_spectral_density", {"n_v": 3},
     r"^hessian_spectral_density\(\) got an unexpected keyword argument 'n_v' \(PyHessian's "
     r"n_v is num_probes here\); it takes .*num_probes, num_iter, sigma, grid, margin"),
    ("hessian_spectral_density", {"iter": 3}, r"\(PyHessian's iter is num_iter here\)"),
    ("hessian_eigenpairs", {"top_n": 2}, r"^hessian_eigenpairs\(\) .*'top_n' \(PyHessian's "
                                         r"top_n is k here\)"),
    ("hessian_bottom_eigenvalues", {"tl": 1e-3}, r"'tl' \(did you mean tol\?\)"),
    # PyHessian's top_n is k, which hessian_top_eigenvalue refuses with its own advice
    ("hessian_top_eigenvalue", {"top_n": 3}, r"^hessian_top_eigenvalue\(\) takes no top_n= "
                                             r"\(PyHessian's top_n is k\): .*hessian_eigenpairs"),
    # the measurements without options of an estimator behind them said only "unexpected
    # keyword argument", without the closest option or the list
    ("hessian_trace", {"probes": 3}, r"^hessian_trace\(\) got an unexpected keyword argument "
                                     r"'probes' \(did you mean num_probes\?\); it takes model,"),
    ("hessian_frobenius_norm", {"n_v": 3}, r"\(PyHessian's n_v is num_probes here\)"),
    ("hessian_spectrum", {"chunk": 3}, r"^hessian_spectrum\(\) .*'chunk' \(did you mean "
                                       r"chunk_size\?\); it takes .*max_params"),
    ("hessian_directions", {"maxIter": 3}, r"^hessian_directions\(\) .*PyHessian's maxIter is "
                                           r"num_iter here"),
    ("hessian_spectral_norm", {"which": "largest"}, r"^hessian_spectral_norm\(\) takes no "
                                                    r"which=: .*hessian_eigenpairs\("),
])
def test_an_unknown_keyword_names_the_public_function_and_its_valid_keys(name, kw, message):
    import sgdlab.measure as measure

    model, data = tiny_mlp(3, 4, 2), tiny_classification(9, 3, 2)
    with pytest.raises(TypeError, match=message):
        getattr(measure, name)(model, nn.CrossEntropyLoss(), data, **kw)


def test_the_public_keywords_are_the_estimators_with_their_defaults():
    """help() shows the options (no **kw), with the defaults of the estimators they call."""
    import inspect

    import pydoc

    from sgdlab.measure import hessian_directions, hessian_spectral_norm
    from sgdlab.measure.curvature import (hessian_eigenpairs, hessian_spectral_density,
                                          hessian_top_eigenvalue, lanczos)

    def options(fn, skip=()):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.kind is p.KEYWORD_ONLY and k not in skip}

    assert options(hessian_eigenpairs, ("operator",)) == options(lanczos, ("which",))
    assert options(hessian_top_eigenvalue) == options(hessian_eigenpairs)
    assert options(hessian_bottom_eigenvalues) == options(hessian_eigenpairs)
    assert options(hessian_spectral_norm, ("bn_mode",)) == options(hessian_eigenpairs)
    assert options(hessian_directions) == options(hessian_eigenpairs)
    assert options(hessian_spectral_density, ("operator",)) == options(spectral_density)
    assert options(hessian_spectrum) == options(dense_hessian)
    conveniences = (hessian_eigenpairs, hessian_top_eigenvalue, hessian_bottom_eigenvalues,
                    hessian_spectral_density, hessian_spectral_norm, hessian_directions)
    for fn in conveniences:
        assert not any(p.kind is p.VAR_KEYWORD
                       for p in inspect.signature(fn).parameters.values())
    assert "tol: 'float' = 1e-06" in pydoc.render_doc(hessian_top_eigenvalue)
    assert "grid: 'Tensor | int' = 1000" in pydoc.render_doc(hessian_spectral_density)
    # the defaults are written once, in the estimators: a convenience's own code names none of
    # their options (a copy would drift)
    for fn, estimator in zip(conveniences, [lanczos] * 3 + [spectral_density] + [lanczos] * 2):
        source = inspect.signature(fn.__wrapped__).parameters
        assert not set(source) & set(options(estimator)) - {"which"}, fn.__name__


def test_a_spectral_density_with_no_weighted_or_a_nan_node_prints_no_support():
    # the repr raised (min() of no nodes) when every probe broke down at once, and printed
    # support=[nan, nan] for a NaN node
    grid = torch.linspace(0.0, 1.0, 5)
    for nodes, weights in ((torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)),
                           (torch.tensor([[math.nan, 2.0]]), torch.tensor([[0.5, 0.5]]))):
        text = repr(SpectralDensity(grid, torch.ones(5), nodes, weights, 0.1, 2))
        assert "support=n/a, sigma=0.1, grid=5 points on [0, 1]" in text, text


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_result_holding_a_low_precision_tensor_prints(dtype):
    # .numpy() raised for bfloat16: a result of a bfloat16 model could not be printed
    from sgdlab.measure._repr import summary

    assert summary(torch.tensor([0.5, -1.0], dtype=dtype)) == "Tensor([ 0.5, -1. ])"
    name = str(dtype).removeprefix("torch.")
    assert summary(torch.arange(8, dtype=dtype).requires_grad_()) == (
        f"Tensor(shape=(8,), {name}, range [0, 7])")


def test_a_spectral_density_prints_in_one_line_of_its_sizes_and_ranges():
    # print() showed the grid, density, nodes and weights: ~200 lines
    from sgdlab.measure import hessian_diagonal, hessian_spectral_density

    model, data = tiny_mlp(3, 4, 2), tiny_classification(9, 3, 2)
    dens = hessian_spectral_density(model, nn.CrossEntropyLoss(), data, num_probes=3,
                                    num_iter=5, sigma=0.01,
                                    generator=torch.Generator().manual_seed(0))
    text = repr(dens)
    lo, hi = float(dens.nodes.min()), float(dens.nodes.max())
    assert "\n" not in text and len(text) < 250, text
    assert text.startswith(f"SpectralDensity(dim={dens.dim}, probes=3, lanczos_steps=5, "
                           f"support=[{lo:.4g}, {hi:.4g}], sigma=0.01, grid=1000 points on ")
    assert f"trace≈{dens.trace():.4g})" in text
    diag = hessian_diagonal(model, nn.CrossEntropyLoss(), data, exact=True)
    value = diag.value
    assert repr(diag) == (f"DiagonalEstimate(value=Tensor(shape=({len(value)},), float64, "
                          f"range [{float(value.min()):.4g}, {float(value.max()):.4g}]), "
                          f"stderr=Tensor(shape=({len(value)},), float64, range [0, 0]), "
                          f"num_samples={len(value)}, exact=True)")


def test_slq_probe_that_breaks_down_early_keeps_unit_mass(monkeypatch):
    """A probe whose Krylov space is exhausted before the others' (here an eigenvector: one
    step) is padded to the common length with nodes of zero weight, so each probe's weights
    still sum to 1 and its moments are its own vᵀAᵖv / vᵀv; the probes are set by hand."""
    import importlib

    slq = importlib.import_module("sgdlab.measure.curvature.slq")
    lam = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    a = torch.diag(lam)
    probes = iter([torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64),
                   torch.ones(4, dtype=torch.float64)])
    monkeypatch.setattr(slq, "random_vector", lambda op, generator: next(probes))
    dens = spectral_density(a, num_probes=2, num_iter=4, sigma=0.05, grid=4000)
    assert dens.nodes.shape == (2, 4)
    torch.testing.assert_close(dens.weights.sum(1), torch.ones(2, dtype=torch.float64))
    for p in range(4):
        # probe 1 sees λ = 1 only, probe 2 all four with weight 1/4
        exact = (1.0 + float((lam ** p).mean())) / 2
        assert dens.moment(p) == pytest.approx(exact, rel=1e-12)
    assert float(torch.trapezoid(dens.density, dens.grid)) == pytest.approx(1.0, abs=1e-6)


def test_an_estimate_formats_as_its_value_and_standard_error():
    # f"{hessian_trace(...):.3f}" was a TypeError: "unsupported format string passed to
    # Estimate.__format__"
    from sgdlab.measure import Estimate

    est = Estimate(1.23456, 0.0456, 10)
    assert f"{est:.2f}" == "1.23 ± 0.05" and f"{est:.1e}" == "1.2e+00 ± 4.6e-02"
    assert f"{est}" == str(est) and float(est) == 1.23456


def test_slq_of_a_multiple_of_the_identity_is_one_exact_node_per_probe():
    """A = 2.5·I: every probe is an eigenvector, its Krylov space one-dimensional, its measure
    the single node 2.5 of weight 1; so each moment is 2.5ᵖ and the trace d·2.5 = 20 exactly
    (the density's d, not d − 1). A point spectrum has no range: the default width is 1% of
    its scale |2.5| (not the 1e-12 floor), and the grid spans 2.5 ± (margin·2.5 + 5σ)."""
    dens = spectral_density(2.5 * torch.eye(8, dtype=torch.float64), num_probes=3,
                            num_iter=5, generator=torch.Generator().manual_seed(0))
    assert dens.nodes.shape == (3, 1) and dens.dim == 8
    torch.testing.assert_close(dens.weights, torch.ones(3, 1, dtype=torch.float64))
    assert dens.trace() == pytest.approx(20.0, rel=1e-14)
    for p in range(4):
        assert dens.moment(p) == pytest.approx(2.5 ** p, rel=1e-14)
    assert dens.sigma == pytest.approx(0.025, rel=1e-12)
    pad = 0.05 * 2.5 + 5 * 0.025
    assert (float(dens.grid[0]), float(dens.grid[-1])) == (pytest.approx(2.5 - pad),
                                                           pytest.approx(2.5 + pad))


def test_slq_default_width_is_one_percent_of_the_spectral_range():
    """With m = d steps each probe's nodes are the eigenvalues, here linspace(−1, 4, 20): the
    estimated range is 5, the default σ = 0.05 (Ghorbani et al.'s choice of a width small
    against the spectrum), the default grid [−1 − (0.05·5 + 5σ), 4 + (0.05·5 + 5σ)]."""
    lam = torch.linspace(-1.0, 4.0, 20, dtype=torch.float64)
    dens = spectral_density(torch.diag(lam), num_probes=2, num_iter=20,
                            generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(dens.nodes[0], lam, rtol=0, atol=1e-12)
    assert dens.sigma == pytest.approx(0.05, rel=1e-10)
    assert float(dens.grid[0]) == pytest.approx(-1.5) and float(dens.grid[-1]) == pytest.approx(4.5)
    assert float(torch.trapezoid(dens.density, dens.grid)) == pytest.approx(1.0, abs=1e-6)


def test_hessian_spectral_density_is_gauss_quadrature_of_the_dense_hessian():
    """SLQ on a tiny model's Hessian (and GGN) against the float64 dense references: each
    probe's quadrature reproduces vᵀHᵖv / vᵀv for p ≤ 2m − 1 with v the Gaussian vectors the
    generator draws, so the moments are those of the dense matrix, probe by probe."""
    from sgdlab.measure.curvature import hessian_spectral_density

    model = tiny_mlp(3, 3, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    m, probes = 3, 2
    for operator, ref in (("hessian", dense_hessian_reference(model, loss_fn, data)),
                          ("ggn", ggn_reference(model, loss_fn, data))):
        dens = hessian_spectral_density(model, loss_fn, data, operator=operator, num_iter=m,
                                        num_probes=probes,
                                        generator=torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)
        for i in range(probes):
            v = torch.randn(ref.shape[0], generator=g, dtype=torch.float64)
            for p in range(2 * m):
                exact = float(v @ torch.linalg.matrix_power(ref, p) @ v / (v @ v))
                quad = float((dens.weights[i] * dens.nodes[i] ** p).sum())
                assert quad == pytest.approx(exact, rel=1e-8, abs=1e-12), (operator, i, p)


def test_probe_estimators_refuse_no_probes_and_a_non_finite_operator():
    """Zero probes is no estimate (a NaN mean of nothing) and is refused by name; an operator
    whose products are not finite (a diverged model) is a FloatingPointError, not an
    estimate of inf or NaN."""
    a = _spd_like(6, seed=1)
    for estimate in (hutchinson_trace, frobenius_norm):
        with pytest.raises(ValueError, match="num_probes=0"):
            estimate(a, 0)
    bad = a.clone()
    bad[2, 3] = bad[3, 2] = float("inf")
    for estimate in (hutchinson_trace, frobenius_norm):
        with pytest.raises(FloatingPointError, match="non-finite"):
            estimate(bad, 4, generator=torch.Generator().manual_seed(0))


def test_hutchpp_and_frobenius_in_float64_on_a_float32_matrix_are_the_float64_matrix_s():
    """``dtype=torch.float64`` computes the products in float64 too (a dense matrix is
    converted, ``working_operator(..., exact_products=True)``), not only the probes: on a
    float32 matrix whose entries are exact (integer factors, dyadic weights: rank 3 in any
    precision) Hutch++ with m = 12 ≥ 3·rank products is Tr A exactly (Meyer et al. 2021: the
    sketch spans the range, nothing is left to the Hutchinson part), and both estimates equal
    those of the float64 matrix from the same probes. Float32 products would leave ~1e-7
    relative errors, and a remainder in the full-rank rounding."""
    from sgdlab.measure.curvature import hutchpp_trace

    g = torch.Generator().manual_seed(2)
    f = torch.randint(-3, 4, (30, 3), generator=g).double()
    a64 = f @ torch.diag(torch.tensor([4.0, -1.5, 0.75], dtype=torch.float64)) @ f.T
    a32 = a64.float()
    assert torch.equal(a32.double(), a64)
    pp = hutchpp_trace(a32, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert pp.value == pytest.approx(float(torch.trace(a64)), rel=1e-12)
    assert pp.stderr < 1e-9 * abs(pp.value)
    for dist in ("gaussian", "rademacher"):
        fro = frobenius_norm(a32, 7, generator=torch.Generator().manual_seed(1),
                             distribution=dist, dtype=torch.float64)
        ref = frobenius_norm(a64, 7, generator=torch.Generator().manual_seed(1),
                             distribution=dist)
        assert fro.value == pytest.approx(ref.value, rel=1e-13), dist
        assert fro.stderr == pytest.approx(ref.stderr, rel=1e-10), dist


def test_a_half_precision_operator_s_products_leave_in_the_working_precision():
    """A bfloat16 A without ``dtype`` is worked on in float32 (``working_operator``): its
    vectors arrive and leave in float32, whichever product is asked for, the values those of
    the bfloat16 products (float32 holds every bfloat16 exactly)."""
    from sgdlab.measure.curvature._common import working_operator
    from sgdlab.operators import as_operator

    a = _spd_like(6, seed=2).to(torch.bfloat16)
    v = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    op, raw = working_operator(a, None), as_operator(a)
    assert op.dtype == torch.float32
    for name, arg in (("matvec", v[:, 0]), ("matmat", v), ("quadratic_forms", v)):
        out = getattr(op, name)(arg)
        assert out.dtype == torch.float32, name
        assert torch.equal(out, getattr(raw, name)(arg.to(torch.bfloat16)).float()), name


def test_dense_hessian_takes_exactly_max_params_parameters():
    """``max_params`` is the largest d allowed (refuses d > max_params): the 21-parameter MLP
    at max_params=21 gives its Hessian, at 20 is refused."""
    model = tiny_mlp(3, 4, 1)
    data, loss_fn = tiny_classification(6, 3, 2), nn.MSELoss()
    data = (data[0], torch.randn(6, 1, generator=torch.Generator().manual_seed(0),
                                 dtype=torch.float64))
    ref = dense_hessian_reference(model, loss_fn, data)
    assert ref.shape == (21, 21)
    torch.testing.assert_close(dense_hessian(model, loss_fn, data, max_params=21), ref)
    with pytest.raises(ValueError, match="max_params"):
        dense_hessian(model, loss_fn, data, max_params=20)
    # the dense eigenvalues take the same limit: d = limit allowed, d = limit + 1 refused
    # with an error naming d, the limit and the way out
    torch.testing.assert_close(hessian_spectrum(model, loss_fn, data, max_params=21),
                               torch.linalg.eigvalsh(ref))
    # its size in a unit that reads right: 21² float64 entries are 3528 bytes, not "0.0 GB"
    with pytest.raises(ValueError, match=r"^dense Hessian of 21 parameters needs 3\.5 KB; "
                                         r"raise max_params \(now 20\) if you mean it, or "
                                         r"use lanczos$"):
        hessian_spectrum(model, loss_fn, data, max_params=20)


@pytest.mark.parametrize("max_params", ["10000", 0, -5, 1e4, True, None])
def test_dense_hessian_refuses_a_size_limit_that_is_not_a_count(max_params):
    # a string or None failed at the comparison with d; 1e4 passed as a limit, True as 1
    model = tiny_mlp(3, 4, 1)
    data = (torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^Invalid max_params=.* \(the most parameters a "
                                         r"dense Hessian is built for: an int >= 1\)$"):
        dense_hessian(model, nn.MSELoss(), data, max_params=max_params)
    ref = dense_hessian_reference(model, nn.MSELoss(), data)
    torch.testing.assert_close(dense_hessian(model, nn.MSELoss(), data,
                                             max_params=np.int64(21)), ref)


@pytest.mark.parametrize("width, size", [(10, "48.4 KB"), (40, "10.8 MB"), (200, "6.5 GB")])
def test_the_dense_hessian_size_limit_names_the_size_at_every_scale(width, size):
    """d = width² + width float32 parameters: d² · 4 bytes (110² · 4 = 48,400, 1640² · 4 =
    10,758,400, 40,200² · 4 = 6.46e9), each in its unit (refused before the Hessian is built)."""
    model = nn.Linear(width, width)
    data = (torch.randn(2, width), torch.randn(2, width))
    d = width * width + width
    with pytest.raises(ValueError, match=rf"^dense Hessian of {d} parameters needs "
                                         rf"{re.escape(size)}; raise max_params \(now 50\)"):
        dense_hessian(model, nn.MSELoss(), data, max_params=50)


def test_model_trace_and_frobenius_of_each_curvature_matrix_by_hand():
    """``hessian_trace`` / ``hessian_frobenius_norm`` of the Hessian, GGN and empirical Fisher
    (1/N) Σ g_i g_iᵀ of a tiny model: with the probes drawn by hand from the same generator
    stream (Rademacher for the trace, one Gaussian vector at a time for ‖·‖_F), each estimate
    is its samples' mean vᵀMv, resp. √mean ‖Mv‖², of the float64 dense matrix M. With
    ``dtype=torch.float64`` a float32 model's estimates are those of its float64 copy."""
    model = tiny_mlp(3, 3, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    refs = {"hessian": dense_hessian_reference(model, loss_fn, data),
            "ggn": ggn_reference(model, loss_fn, data),
            "empirical_fisher": empirical_fisher_reference(
                per_sample_gradients_loop(model, loss_fn, data))}
    d, m = 20, 6
    assert refs["hessian"].shape == (d, d)
    v = torch.randint(0, 2, (m, d), generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64) * 2 - 1
    g = torch.Generator().manual_seed(1)
    w = torch.stack([torch.randn(d, generator=g, dtype=torch.float64) for _ in range(m)])
    for operator, ref in refs.items():
        tr = hessian_trace(model, loss_fn, data, m, operator=operator,
                           generator=torch.Generator().manual_seed(0))
        assert tr.value == pytest.approx(float(((v @ ref) * v).sum(1).mean()), rel=1e-10)
        fro = hessian_frobenius_norm(model, loss_fn, data, m, operator=operator,
                                     generator=torch.Generator().manual_seed(1))
        assert fro.value == pytest.approx(math.sqrt(float((w @ ref).square().sum(1).mean())),
                                          rel=1e-10), operator
    m32 = copy.deepcopy(model).float()
    d32 = (data[0].float(), data[1])
    for measure in (hessian_trace, hessian_frobenius_norm):
        low = measure(m32, loss_fn, d32, m, generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)
        high = measure(copy.deepcopy(m32).double(), loss_fn, (d32[0].double(), d32[1]), m,
                       generator=torch.Generator().manual_seed(0))
        assert low.value == pytest.approx(high.value, rel=1e-12), measure.__name__


def test_dense_hessian_is_exactly_symmetric():
    """The HVP columns of a float32 model differ from its rows by round-off; the documented
    (H + Hᵀ)/2 makes the returned matrix symmetric bit for bit (``eigvalsh`` reads one
    triangle only), within float32 round-off of the float64 reference."""
    model = tiny_mlp(3, 4, 3, dtype=torch.float32)
    x, y = tiny_classification(12, 3, 3, dtype=torch.float32)
    h = dense_hessian(model, nn.CrossEntropyLoss(), (x, y), chunk_size=5)
    assert torch.equal(h, h.T)
    ref = dense_hessian_reference(tiny_mlp(3, 4, 3), nn.CrossEntropyLoss(), (x.double(), y))
    torch.testing.assert_close(h.double(), ref, rtol=1e-4, atol=1e-5)


def test_slq_padding_of_a_probe_that_broke_down_leaves_the_default_grid_alone(monkeypatch):
    """The zero-weight nodes that pad a probe which broke down early repeat its last node:
    they do not widen the estimated range [1, 4] (its scale max(4 − 1, |4|, |1|) = 4 sets the
    default σ = 0.04), and the grid spans [1 − (0.05·4 + 5σ), 4 + (0.05·4 + 5σ)], not down
    to 0 or below."""
    import importlib

    slq = importlib.import_module("sgdlab.measure.curvature.slq")
    probes = iter([torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64),
                   torch.ones(4, dtype=torch.float64)])
    monkeypatch.setattr(slq, "random_vector", lambda op, generator: next(probes))
    dens = spectral_density(torch.diag(torch.arange(1.0, 5.0, dtype=torch.float64)),
                            num_probes=2, num_iter=4)
    assert dens.sigma == pytest.approx(0.04, rel=1e-10)
    assert float(dens.grid[0]) == pytest.approx(0.6) and float(dens.grid[-1]) == pytest.approx(4.4)


def test_a_float32_operator_draws_the_float64_probes_cast():
    """Gaussian start vectors are drawn in float64 and cast to the operator's precision: SLQ of
    a float32 matrix starts from the same probes as of its float64 copy (same generator), so
    the two agree to float32 round-off, node by node and weight by weight (d = 20: from 16
    entries on, torch's float32 and float64 normal streams part)."""
    a64 = _spd_like(20, seed=3)
    dens = [spectral_density(a, num_probes=2, num_iter=4, sigma=0.1, grid=20,
                             generator=torch.Generator().manual_seed(5))
            for a in (a64.float(), a64)]
    torch.testing.assert_close(dens[0].nodes, dens[1].nodes, rtol=0, atol=1e-5)
    torch.testing.assert_close(dens[0].weights, dens[1].weights, rtol=0, atol=1e-5)


def test_probe_and_eigenpair_counts_take_numpy_ints_and_refuse_bools():
    """np.int64 probes and k are the Python ints' (the same estimates, exactly); True is no
    count (it was 1 probe, 1 eigenpair), named with the option and the value."""
    a = _spd_like(d=8)

    def g():
        return torch.Generator().manual_seed(0)

    for estimate in (hutchinson_trace, frobenius_norm):
        assert estimate(a, np.int64(5), generator=g()) == estimate(a, 5, generator=g())
        with pytest.raises(ValueError, match=re.escape("Invalid num_probes=True (an int >= 1)")):
            estimate(a, True, generator=g())
    top = lanczos(a, np.int64(2), generator=g())[0]
    torch.testing.assert_close(top, lanczos(a, 2, generator=g())[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match=re.escape("Invalid k=True: need an int 1 <= k <= d = "
                                                   "8")):
        lanczos(a, True, generator=g())
    # the iteration counts likewise (True was 1 iteration)
    torch.testing.assert_close(lanczos(a, 1, num_iter=np.int64(8), generator=g())[0],
                               lanczos(a, 1, num_iter=8, generator=g())[0], rtol=0, atol=0)
    for bad in (True, 30.0):
        with pytest.raises(ValueError, match=re.escape(f"Invalid num_iter={bad!r} (an int >= 1")):
            lanczos(a, 1, num_iter=bad, generator=g())
        with pytest.raises(ValueError, match=re.escape(f"Invalid num_iter={bad!r} (an int >= 1")):
            power_iteration(a, num_iter=bad, generator=g())


@pytest.mark.parametrize("keyword, bad, rule", [
    ("num_iter", 2.5, "an int >= 1: the Lanczos steps per probe"),
    ("num_iter", True, "an int >= 1: the Lanczos steps per probe"),
    ("num_iter", 0, "an int >= 1: the Lanczos steps per probe"),
    ("num_probes", 2.0, "an int >= 1: the probes"),
    ("num_probes", True, "an int >= 1: the probes"),
    ("grid", 50.0, "an int >= 1: the grid points, or a 1-D grid"),
    ("grid", True, "an int >= 1: the grid points, or a 1-D grid"),
    ("grid", 0, "an int >= 1: the grid points, or a 1-D grid"),
    ("grid", np.float32(50.0), "an int >= 1: the grid points, or a 1-D grid"),
])
def test_slq_counts_refuse_floats_and_bools(keyword, bad, rule):
    # int() made num_iter 2.5 two steps, True one; a float grid was one point at that value
    with pytest.raises(ValueError, match=re.escape(f"Invalid {keyword}={bad!r} ({rule})")):
        spectral_density(_spd_like(d=8), **{keyword: bad})


@pytest.mark.parametrize("keyword, bad, rule", [
    ("margin", float("nan"), "a finite number >= 0"),
    ("margin", -0.5, "a finite number >= 0"),
    ("margin", "0.1", "a finite number >= 0"),
    ("sigma", float("nan"), "a finite number > 0, or None"),
    ("sigma", 0.0, "a finite number > 0, or None"),
    ("sigma", True, "a finite number > 0, or None"),
])
def test_slq_margin_and_sigma_are_refused_before_any_probe(keyword, bad, rule, monkeypatch):
    """A NaN margin or σ gave a NaN grid or density; σ <= 0 was refused after every probe."""
    from sgdlab.measure.curvature import slq

    monkeypatch.setattr(slq, "lanczos_lockstep", lambda *a: pytest.fail("a probe ran"))
    with pytest.raises(ValueError, match=re.escape(f"Invalid {keyword}={bad!r} ({rule})")):
        spectral_density(_spd_like(d=8), **{keyword: bad})


def test_slq_counts_take_numpy_ints():
    """np.int64 probes, steps and grid points are the Python ints' (the same density)."""
    a = _spd_like(d=8)
    dens = [spectral_density(a, num_probes=n(2), num_iter=n(4), grid=n(30),
                             generator=torch.Generator().manual_seed(3)) for n in (int, np.int64)]
    assert len(dens[1].grid) == 30
    torch.testing.assert_close(dens[1].density, dens[0].density, rtol=0, atol=0)


@pytest.mark.parametrize("call, bad, message", [
    ("diagonal", 2.5, "Invalid num_probes=2.5 (an int >= 1)"),
    ("diagonal", True, "Invalid num_probes=True (an int >= 1)"),
    ("hutchpp", 4.5, "Invalid num_matvecs=4.5 (Hutch++ needs an int >= 3)"),
    ("hutchpp", True, "Invalid num_matvecs=True (Hutch++ needs an int >= 3)"),
    ("block_size", 2.5, "Invalid block_size=2.5 (an int >= 1)"),
    ("block_size", True, "Invalid block_size=True (an int >= 1)"),
])
def test_probe_counts_and_block_sizes_refuse_floats_and_bools(call, bad, message):
    # a comparison with 1 (or 3) let them through: range() then failed on 2.5, True was 1
    from sgdlab.measure.curvature import diagonal, hutchpp_trace

    a = _spd_like(d=8)
    run = {"diagonal": lambda: diagonal(a, bad),
           "hutchpp": lambda: hutchpp_trace(a, bad),
           "block_size": lambda: diagonal(a, 4, block_size=bad)}[call]
    with pytest.raises(ValueError, match=re.escape(message)):
        run()


def test_probe_counts_and_block_sizes_take_numpy_ints():
    """np.int64 probes, products and block sizes are the Python ints' (the same estimates)."""
    from sgdlab.measure.curvature import diagonal, hutchpp_trace

    a = _spd_like(d=8)
    plain, numpy = [(diagonal(a, n(4), block_size=n(2),
                              generator=torch.Generator().manual_seed(1)).value,
                     hutchpp_trace(a, n(9), generator=torch.Generator().manual_seed(1)).value)
                    for n in (int, np.int64)]
    torch.testing.assert_close(numpy, plain, rtol=0, atol=0)
