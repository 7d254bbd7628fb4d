"""The measurement procedures (sgdlab.experiments.procedures.measures): that each passes its
options to the estimator it names; the estimators are checked by hand in tests/measure."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.experiments.procedures.measures import (compute_final, compute_scalar,
                                                    trajectory_spectrum)


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """60 snapshots of a 3-d random walk, one every 10 steps, as the trajectory instrument
    records them."""
    from sgdlab.store.trajectory import TrajectoryWriter

    x = np.cumsum(np.random.default_rng(3).standard_normal((60, 3)), axis=0)
    path = tmp_path_factory.mktemp("walk") / "t"
    w = TrajectoryWriter(path, 3, dtype="float64")
    for k, s in enumerate(x):
        w.append(s, step=10 * k, epoch=k // 10)
    return path, x


def test_the_trajectory_spectrum_passes_its_lag_level_and_fraction(walk):
    from sgdlab.measure.trajectory import (increment_autocorrelation, low_frequency_test,
                                           periodicity_test)

    path, x = walk
    s, d = trajectory_spectrum(path, max_lag=7, level=0.3, low_fraction=0.4)
    assert s["snapshots"] == 60 and s["burnin"] == 0          # no burn-in unless asked
    assert list(d["acf_lags"]) == list(range(8))
    assert s["acf_fraction_outside"] == increment_autocorrelation(x, 7).fraction_outside
    pt, lf = periodicity_test(x, level=0.3), low_frequency_test(x, fraction=0.4, level=0.3)
    assert s["periodicity_p_value"] == pt.combined_p_value
    assert s["low_frequency_ratio"] == lf.mean_ratio
    assert s["low_frequency_p_value"] == lf.combined_p_value
    # each option changes what it is passed to (else the checks above could not fail)
    assert pt.combined_p_value != periodicity_test(x, level=0.01).combined_p_value
    assert lf.mean_ratio != low_frequency_test(x, fraction=0.1, level=0.3).mean_ratio
    assert lf.combined_p_value != low_frequency_test(x, fraction=0.4).combined_p_value


def _linear(w, dtype=torch.float64):
    model = nn.Linear(len(w), 1, bias=False).to(dtype)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w], dtype=dtype))
    return model


def test_the_fisher_of_per_sample_gradients_counts_a_zero_entry_as_not_negative():
    """MSE of a bias-free linear model at w = 0 on the inputs (1, 0) with targets 1 and 3: the
    per-sample gradients −2 y x are (−2, 0) and (−6, 0), variances 4 and exactly 0."""
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    s, d = compute_final({"kind": "fisher_diagonal"}, _linear([0.0, 0.0]), nn.MSELoss(), (x, y))
    assert d["fisher_diagonal"] == [4.0, 0.0]
    assert (s["fisher_max"], s["fisher_min"], s["fisher_negative_fraction"]) == (4.0, 0.0, 0.0)


def test_the_adam_moments_fisher_is_bias_corrected_by_default():
    """Adam's state after one step on the gradient g = (1, 4): m = 0.1 g, v = 0.001 g²;
    corrected, m̂² = v̂ = g², so v̂ − m̂² = 0 (uncorrected: −0.009 g²). An optimizer holding
    the state and groups an Adam's step leaves (constructing torch's Adam takes seconds)."""
    from types import SimpleNamespace

    model = _linear([1.0, 2.0])
    g = torch.tensor([[1.0, 4.0]], dtype=torch.float64)
    opt = SimpleNamespace(
        param_groups=[{"params": [model.weight], "betas": (0.9, 0.999)}],
        state={model.weight: {"step": torch.tensor(1.0), "exp_avg": 0.1 * g,
                              "exp_avg_sq": 0.001 * g ** 2}})
    m = {"kind": "fisher_diagonal", "reading": "adam-moments"}
    _, d = compute_final(m, model, None, None, optimizer=opt)
    assert d["fisher_diagonal"] == pytest.approx([0.0, 0.0], abs=1e-12)
    _, d = compute_final({**m, "bias_correction": False}, model, None, None, optimizer=opt)
    assert d["fisher_diagonal"] == pytest.approx([-0.009, -0.009 * 16], rel=1e-12)


def _saddle(out, _y):
    """0.5 (−3 w0² + w1²) of a bias-free linear model on the inputs I: Hessian diag(−3, 1)."""
    return 0.5 * (-3 * out[0, 0] ** 2 + out[1, 0] ** 2)


def test_the_top_eigenvalue_is_the_spectral_norm_by_default():
    """Hessian diag(−3, 1): the spectral norm 3, not the largest eigenvalue 1."""
    x, y = torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    s = compute_scalar({"kind": "hessian_top", "every": 1}, _linear([0.5, 0.5]), _saddle, (x, y))
    assert s["hessian_top"] == pytest.approx(3.0, rel=1e-6)


def test_the_diffusion_rank_fraction_is_the_rank_over_the_dimension():
    """Two samples of a 3-parameter linear model: the per-sample gradients span at most one
    direction around their mean, rank 1 of 3."""
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    s, _ = compute_final({"kind": "diffusion_spectrum"}, _linear([0.0, 0.0, 0.0]),
                         nn.MSELoss(), (x, y))
    assert (s["diffusion_rank"], s["diffusion_dim"]) == (1, 3)
    assert s["diffusion_rank_fraction"] == pytest.approx(1 / 3, rel=1e-15)


def _batch_norm_mlp():
    """A float64 2-3-1 MLP with batch norm whose running statistics differ from the batch's,
    its MSE loss and 8 samples: its Hessian has off-diagonal terms, so each probe counts."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)).double()
    model[1].running_mean.fill_(0.5)
    model[1].running_var.fill_(2.0)
    x, y = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    return model, nn.MSELoss(), (x, y)


@pytest.mark.parametrize("kind, seed", [("hessian_trace", 2), ("hessian_frobenius", 1)])
def test_the_hessian_trace_and_norm_take_20_probes_in_evaluation_mode_by_default(kind, seed):
    from sgdlab.measure.curvature import hessian_frobenius_norm, hessian_trace
    from sgdlab.measure.walk import evaluation_mode

    est = {"hessian_trace": hessian_trace, "hessian_frobenius": hessian_frobenius_norm}[kind]
    model, loss, data = _batch_norm_mlp()

    def lib(probes, mode):
        with evaluation_mode(model, mode):
            return est(model, loss, data, probes,
                       generator=torch.Generator().manual_seed(seed)).value
    got = compute_scalar({"kind": kind, "every": 1}, model, loss, data)
    assert got[kind] == pytest.approx(lib(20, "eval"), rel=1e-12)
    assert lib(20, "eval") != pytest.approx(lib(20, "train"), rel=1e-3)
    assert lib(20, "eval") != pytest.approx(lib(2, "eval"), rel=1e-3)


def test_the_expected_sharpness_takes_sigma_0_01_and_20_samples_by_default():
    from sgdlab.measure.sharpness import expected_sharpness

    model, loss, data = _batch_norm_mlp()
    model.eval()

    def lib(sigma, n):
        return expected_sharpness(model, loss, data, sigma, n,
                                  generator=torch.Generator().manual_seed(3))
    got = compute_scalar({"kind": "expected_sharpness", "every": 1}, model, loss, data)
    want = lib(0.01, 20)
    assert (got["expected_sharpness"], got["expected_sharpness_se"]) == pytest.approx(
        (want.value, want.stderr), rel=1e-12)
    assert want.value != pytest.approx(lib(0.02, 20).value, rel=1e-3)
    assert want.value != pytest.approx(lib(0.01, 2).value, rel=1e-3)


@pytest.mark.parametrize("m, max_params, chunk", [
    ({}, 60_000, 256), ({"max_params": 10, "chunk_size": 1}, 10, 1)])
def test_the_hessian_spectrum_passes_its_size_limit_and_chunks(monkeypatch, m, max_params,
                                                               chunk):
    """Dense up to d = 60,000 by default (docs/GUIDE.md), 256 columns per product."""
    from sgdlab.measure import curvature

    seen = {}

    def spectrum(model, loss_fn, data, **kw):
        seen.update(kw)
        return torch.tensor([-1.0, 2.0])
    monkeypatch.setattr(curvature, "hessian_spectrum", spectrum)
    s, _ = compute_final({"kind": "hessian_spectrum", **m}, _linear([0.0]), None, None)
    assert seen == {"max_params": max_params, "chunk_size": chunk}
    assert (s["hessian_lambda_min"], s["hessian_lambda_max"]) == (-1.0, 2.0)
