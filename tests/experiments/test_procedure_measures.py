"""The measurements an experiment asks for by name (``procedures.measures``): their option
checks, the examples they read, and each summary value against a closed form on a tiny
float64 problem."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.errors import ConfigError
from sgdlab.experiments.procedures.measures import (ARRAYS, SCALARS, compute_final,
                                                    compute_scalar, final_metrics,
                                                    measurement_data, trajectory_spectrum,
                                                    validate_measure)


@pytest.mark.parametrize("m, final, msg", [
    ("hessian_top", True, r"^f: a measurement is a mapping with a 'kind' key, got 'hessian_top'"),
    ({"every": 5}, False, "a mapping with a 'kind' key"),
    ({"kind": "hessian_tops"}, True, r"unknown measurement kind 'hessian_tops'; known: .*"
                                     r"hessian_spectrum"),
    ({"kind": "hessian_spectrum", "every": 5}, False,
     r"unknown measurement kind 'hessian_spectrum' \(array measurements only in 'final'\); "
     r"known: .*\bgrad_norm\b"),
    ({"kind": "grad_norm", "every": 5, "tol": 1e-3}, False,
     r"measurement 'grad_norm' has no option 'tol'; allowed: .*\bevery\b"),
    ({"kind": "grad_norm"}, False, r"measurement 'grad_norm' during training needs 'every'"),
    ({"kind": "expected_sharpness", "memory_budget": "lots"}, True, "^f: "),
    # counts sgdlab.measure takes as ints alone: refused with the experiment, not by Lanczos
    # or the probes once the run has trained (30.0 and 1e1, as YAML reads them, were)
    ({"kind": "hessian_top", "num_iter": 30.0}, True,
     r"^f: measurement 'hessian_top': num_iter must be an int >= 1 \(or null: the "
     r"default\), got 30.0$"),
    ({"kind": "hessian_frobenius", "every": 5, "probes": 10.0}, False,
     r"^f: measurement 'hessian_frobenius': probes must be an int >= 1, got 10.0$"),
    ({"kind": "hessian_trace", "probes": True}, True,
     r"probes must be an int >= 1, not a bool \(True\)"),
    ({"kind": "expected_sharpness", "num_samples": 0}, True,
     r"num_samples must be an int >= 1, got 0"),
    # trajectory_spectrum is given its item's keys, and failed on these once trained
    ({"kind": "trajectory_spectrum", "samples": 64}, True,
     r"^f: measurement 'trajectory_spectrum' has no option 'samples' \(samples does not "
     r"apply to trajectory_spectrum, which reads the run's recorded trajectory, not "
     r"examples\); allowed: burnin, kind, level, low_fraction, max_lag$"),
    ({"kind": "trajectory_spectrum", "split": "test"}, True,
     r"has no option 'split' \(split does not apply to trajectory_spectrum"),
    ({"kind": "trajectory_spectrum", "sample_seed": 0}, True, r"has no option 'sample_seed' "),
    ({"kind": "trajectory_spectrum", "every": 5}, True, r"has no option 'every' "),
    # at_epochs was taken as an option of every measurement and read by none
    ({"kind": "grad_norm", "at_epochs": [1, 2]}, True,
     r"^f: measurement 'grad_norm' has no option 'at_epochs'; allowed: bn_mode, every, kind, "
     r"sample_seed, samples, split$"),
    ({"kind": "hessian_top", "every": 5, "at_epochs": [1]}, False, r"has no option 'at_epochs'"),
])
def test_a_measurement_is_refused_naming_what_is_wrong(m, final, msg):
    with pytest.raises(ConfigError, match=msg):
        validate_measure(m, "f", final=final)


@pytest.mark.parametrize("m, msg", [
    ({"kind": "hessian_spectrum", "chunk_size": 2.0},
     r"^f: measurement 'hessian_spectrum': Invalid chunk_size=2.0 \(an int >= 1: columns per "
     r"pass\)$"),
    ({"kind": "trajectory_spectrum", "max_lag": 0}, "Invalid max_lag=0 "),
    ({"kind": "trajectory_spectrum", "level": 1.0}, r"Invalid level=1.0 \(must be in"),
    ({"kind": "trajectory_spectrum", "low_fraction": 0}, "Invalid low_fraction=0 "),
    ({"kind": "diffusion_spectrum", "batch_size": 2.5}, "Invalid batch size 2.5 "),
    ({"kind": "diffusion_spectrum", "replacement": "no"},
     r"^f: measurement 'diffusion_spectrum': replacement must be True or False, got 'no'$"),
    ({"kind": "hessian_top", "which": "top"}, "^f: measurement 'hessian_top': Invalid "),
    ({"kind": "hessian_top", "samples": 2.5}, "samples must be an int >= 1"),
    ({"kind": "hessian_top", "samples": 4, "sample_seed": 1.5},
     "sample_seed must be an int >= 0"),
    # bn_mode was checked by evaluation_mode, once the run had trained
    ({"kind": "hessian_top", "bn_mode": "batch"},
     r"^f: measurement 'hessian_top': Invalid bn_mode='batch': expected 'eval' or 'train'$"),
    ({"kind": "hessian_trace", "bn_mode": "running"}, "Invalid bn_mode='running'"),
    ({"kind": "hessian_frobenius", "bn_mode": None}, "Invalid bn_mode=None"),
    ({"kind": "grad_norm", "bn_mode": ["eval"]}, r"Invalid bn_mode=\['eval'\]"),
    # a string failed at Lanczos' comparison, NaN and inf were taken
    ({"kind": "hessian_top", "tol": "1e-3"},
     r"^f: measurement 'hessian_top': Invalid tol='1e-3' \(a finite number >= 0; 0 runs "
     r"num_iter steps\)$"),
    ({"kind": "hessian_top", "tol": -1e-3}, r"Invalid tol=-0.001 "),
    ({"kind": "hessian_top", "tol": math.nan}, r"Invalid tol=nan "),
    ({"kind": "hessian_top", "tol": math.inf}, r"Invalid tol=inf "),
    # a string failed at the comparison with d, 0 refused every model after its training
    ({"kind": "hessian_spectrum", "max_params": "10000"},
     r"^f: measurement 'hessian_spectrum': Invalid max_params='10000' \(the most parameters "
     r"a dense Hessian is built for: an int >= 1\)$"),
    ({"kind": "hessian_spectrum", "max_params": 0}, r"Invalid max_params=0 "),
    ({"kind": "hessian_spectrum", "max_params": 1e4}, r"Invalid max_params=10000.0 "),
    ({"kind": "hessian_spectrum", "max_params": True}, r"Invalid max_params=True "),
])
def test_a_final_measurements_own_argument_checks_run_when_it_is_validated(m, msg):
    # each failed, or was cut short by int(), only once the run had trained
    with pytest.raises(ConfigError, match=msg):
        validate_measure(m, "f", final=True)


def test_a_final_measurement_checks_its_arguments_before_any_model_work(tmp_path):
    # no model, no data, no trajectory: the checks come first, in the function itself
    with pytest.raises(ValueError, match=r"Invalid chunk_size=2.0 \(an int >= 1: columns"):
        compute_final({"kind": "hessian_spectrum", "chunk_size": 2.0}, None, None, None)
    with pytest.raises(ValueError, match="Invalid batch size 0 "):
        compute_final({"kind": "diffusion_spectrum", "batch_size": 0}, None, None, None)
    with pytest.raises(ValueError, match=r"Invalid burnin=1.5 \(a number of snapshots"):
        trajectory_spectrum(tmp_path / "no-trajectory", burnin=1.5)
    with pytest.raises(ValueError, match="Invalid max_lag=2.5 "):
        trajectory_spectrum(tmp_path / "no-trajectory", max_lag=2.5)
    with pytest.raises(ValueError, match="Invalid tol=-1 "):
        compute_final({"kind": "hessian_top", "tol": -1}, None, None, None)
    with pytest.raises(ValueError, match="Invalid max_params='all' "):
        compute_final({"kind": "hessian_spectrum", "max_params": "all"}, None, None, None)
    from types import SimpleNamespace

    ds = SimpleNamespace(x_train=torch.arange(6.0), y_train=torch.arange(6))
    for m in ({"kind": "grad_norm", "samples": 2.5},
              {"kind": "grad_norm", "samples": 2, "sample_seed": 1.5}):
        with pytest.raises(ValueError, match="must be an int >= "):
            measurement_data(ds, m)     # was int()'s 2 examples, or seed 1


def test_the_measurements_that_are_well_formed_pass():
    validate_measure({"kind": "grad_norm", "every": 5, "samples": 10, "bn_mode": "train"}, "f",
                     final=False)
    validate_measure({"kind": "hessian_spectrum", "chunk_size": 4, "split": "test"}, "f",
                     final=True)
    validate_measure({"kind": "grad_norm"}, "f", final=True)       # no 'every' at the end
    validate_measure({"kind": "hessian_top", "num_iter": None, "every": 5}, "f", final=False)
    validate_measure({"kind": "hessian_trace", "probes": 3}, "f", final=True)
    validate_measure({"kind": "fisher_diagonal", "reading": "adam-moments",
                      "bias_correction": False}, "f", final=True)


def test_measurement_data_reads_the_split_and_the_subset_asked_for():
    from types import SimpleNamespace

    ds = SimpleNamespace(x_train=torch.arange(10.0)[:, None], y_train=torch.arange(10),
                         x_test=-torch.arange(4.0)[:, None], y_test=-torch.arange(4))
    x, y = measurement_data(ds, {"kind": "grad_norm"})
    assert torch.equal(y, torch.arange(10))
    x, y = measurement_data(ds, {"kind": "grad_norm", "samples": 3})
    assert y.tolist() == [0, 1, 2]                        # the first n, not any n
    x, y = measurement_data(ds, {"kind": "grad_norm", "split": "test", "samples": 2})
    assert y.tolist() == [0, -1] and x[:, 0].tolist() == [0.0, -1.0]
    # a seeded subset: the first n of the seed's permutation (not the global generator's)
    torch.manual_seed(123)
    want = torch.randperm(10, generator=torch.Generator().manual_seed(4))[:5]
    x, y = measurement_data(ds, {"kind": "grad_norm", "samples": 5, "sample_seed": 4})
    assert torch.equal(y, want)
    x, y = measurement_data(ds, {"kind": "grad_norm"}, device="meta")
    assert x.device.type == y.device.type == "meta"


def _diagonal_quadratic(c: list[float]):
    """A bias-free linear model on the unit vectors with loss ½ Σ cᵢ outᵢ²: its Hessian in the
    weights is diag(c) exactly, its gradient cᵢ wᵢ."""
    d = len(c)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.arange(1.0, d + 1, dtype=torch.float64)[None])
    coef = torch.tensor(c, dtype=torch.float64)

    def loss(out, _y):
        return 0.5 * (coef * out[:, 0] ** 2).sum()
    x = torch.eye(d, dtype=torch.float64)
    return model, loss, (x, torch.zeros(d, dtype=torch.float64))


def test_the_hessian_spectrum_summary_of_a_known_spectrum():
    # eigenvalues −3, 0, 0.01, 1: λ_max 1, λ_min −3, one negative of four (zero is not),
    # one within 10⁻³·max|λ| = 0.003 of zero (0.01 is not)
    model, loss, data = _diagonal_quadratic([1.0, -3.0, 0.0, 0.01])
    s, d = compute_final({"kind": "hessian_spectrum"}, model, loss, data)
    assert d["hessian_eigenvalues"] == pytest.approx([-3.0, 0.0, 0.01, 1.0], abs=1e-12)
    assert s["hessian_lambda_max"] == pytest.approx(1.0, abs=1e-12)
    assert s["hessian_lambda_min"] == pytest.approx(-3.0, abs=1e-12)
    assert s["hessian_negative_fraction"] == 0.25
    assert s["hessian_near_zero_fraction"] == 0.25
    assert s["hessian_dim"] == 4
    with pytest.raises(ValueError, match=r"^Invalid hessian_top which='min': expected "
                                         r"'magnitude' or 'largest' \(Lanczos's which"):
        compute_final({"kind": "hessian_top", "which": "min"}, model, loss, data)
    with pytest.raises(ValueError, match=r"Invalid chunk_size=True \(an int >= 1: columns"):
        compute_final({"kind": "hessian_spectrum", "chunk_size": True}, model, loss, data)


def test_the_scalar_curvatures_of_a_known_hessian():
    # Hessian diag(1, 2, 4): trace 7 exactly with Rademacher probes; gradient (1, 4, 12)
    model, loss, data = _diagonal_quadratic([1.0, 2.0, 4.0])
    common = {"every": 10, "samples": 3, "sample_seed": None}
    s, d = compute_final({"kind": "hessian_trace", "probes": 3, **common}, model, loss, data)
    assert d == {} and s["hessian_trace"] == pytest.approx(7.0, abs=1e-12)
    s, _ = compute_final({"kind": "grad_norm", **common}, model, loss, data)
    assert s["grad_norm"] == pytest.approx(math.sqrt(1 + 16 + 144), abs=1e-12)
    # E[L(w + ν)] − L(w) = σ²/2 · tr H = 3.5e-4 at the default σ = 0.01 (20 samples), for a
    # per-sample loss of the same Hessian: the MSE of 3 samples √(1.5, 3, 6)·eᵢ, H = 2/3 XᵀX
    # at its minimum w = 0, where the gradient's term, whose noise would swamp it, vanishes
    x = torch.diag(torch.tensor([1.5, 3.0, 6.0], dtype=torch.float64).sqrt())
    with torch.no_grad():
        model.weight.zero_()
    s, _ = compute_final({"kind": "expected_sharpness"}, model, nn.MSELoss(),
                         (x, torch.zeros(3, 1, dtype=torch.float64)))
    # each draw ξ gives exactly ½ ξᵀHξ: the 20 draws of the measurement's generator (seed 3)
    xi = 0.01 * torch.randn(20, 3, generator=torch.Generator().manual_seed(3),
                            dtype=torch.float64)
    by_hand = 0.5 * (xi.square() * torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)).sum(1)
    assert s["expected_sharpness"] == pytest.approx(float(by_hand.mean()), rel=1e-10)
    assert s["expected_sharpness_se"] == pytest.approx(float(by_hand.std() / math.sqrt(20)),
                                                       rel=1e-10)


def _linear(w, dtype=torch.float64):
    """A bias-free linear model to one output with the weights ``w``."""
    model = nn.Linear(len(w), 1, bias=False).to(dtype)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w], dtype=dtype))
    return model


def _batch_norm_mlp():
    """A float64 2-3-1 MLP with batch norm whose running statistics (0.5, 2) differ from any
    batch's, its MSE loss and 8 samples."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)).double()
    model[1].running_mean.fill_(0.5)
    model[1].running_var.fill_(2.0)
    x, y = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    return model, nn.MSELoss(), (x, y)


def test_the_gradient_norm_reads_batch_norm_in_evaluation_mode_by_default():
    model, loss, (x, y) = _batch_norm_mlp()

    def norm(train: bool) -> float:
        model.train(train)
        g = torch.autograd.grad(loss(model(x), y), list(model.parameters()))
        model.train()
        return float(torch.sqrt(sum((gi ** 2).sum() for gi in g)))
    s, _ = compute_final({"kind": "grad_norm"}, model, loss, (x, y))
    assert s["grad_norm"] == pytest.approx(norm(False), rel=1e-12)
    assert norm(False) != pytest.approx(norm(True), rel=1e-3)
    s, _ = compute_final({"kind": "grad_norm", "bn_mode": "train"}, model, loss, (x, y))
    assert s["grad_norm"] == pytest.approx(norm(True), rel=1e-12)


def test_the_noise_trace_is_the_population_variance_of_the_per_sample_gradients():
    # MSE of a linear model: per-sample gradient 2 (w·xᵢ − yᵢ) xᵢ, in closed form
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, dtype=torch.float64, generator=g)
    y = torch.randn(6, 1, dtype=torch.float64, generator=g)
    model = _linear([0.5, -1.0])
    per = 2 * (x @ model.weight.detach().T - y) * x
    want = float(((per - per.mean(0)) ** 2).sum(1).mean())
    s, _ = compute_final({"kind": "noise_trace"}, model, nn.MSELoss(), (x, y))
    assert s["noise_trace"] == pytest.approx(want, rel=1e-10)


def test_the_fisher_summary_of_entries_that_are_all_negative():
    # one uncorrected full-batch Adam step (β = 0.9, 0.999): v − m² = (0.001 − 0.01) g²
    model, loss, data = _diagonal_quadratic([1.0, 2.0, 4.0])
    opt = torch.optim.Adam(model.parameters(), lr=0.0)
    loss(model(data[0]), data[1]).backward()
    g2 = model.weight.grad.detach()[0] ** 2            # (1, 16, 144)
    opt.step()
    m = {"kind": "fisher_diagonal", "reading": "adam-moments", "bias_correction": False}
    s, d = compute_final(m, model, loss, data, optimizer=opt)
    assert d["fisher_diagonal"] == pytest.approx((-0.009 * g2).tolist(), rel=1e-6)
    assert s["fisher_max"] == pytest.approx(-0.009, rel=1e-6)
    assert s["fisher_min"] == pytest.approx(-0.009 * 144, rel=1e-6)
    assert s["fisher_negative_fraction"] == 1.0 and s["fisher_dim"] == 3
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    with pytest.raises(FloatingPointError, match="non-finite entries"):
        compute_final({"kind": "fisher_diagonal"}, model, loss, data)


def test_the_diffusion_summary_reads_its_own_spectrum_and_sample_count():
    from sgdlab.measure.noise import diffusion_matrix

    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, dtype=torch.float64, generator=g)
    y = torch.randn(7, 1, dtype=torch.float64, generator=g)
    model = nn.Linear(3, 1).double()
    s, d = compute_final({"kind": "diffusion_spectrum", "batch_size": 2}, model, nn.MSELoss(),
                         (x, y))
    ev = d["diffusion_eigenvalues"]
    assert s["diffusion_lambda_max"] == max(ev) > min(ev)
    assert s["diffusion_samples"] == 7 and s["diffusion_dim"] == 4
    # the mini-batch covariance with replacement (eq. 6.4) unless asked otherwise
    for repl in (True, False):
        D = diffusion_matrix(model, nn.MSELoss(), (x, y), 2, replacement=repl)
        m = {"kind": "diffusion_spectrum", "batch_size": 2}
        got = compute_final(m if repl else {**m, "replacement": False}, model, nn.MSELoss(),
                            (x, y))[0]["diffusion_trace"]
        assert got == pytest.approx(float(D.trace()), rel=1e-12)
    assert float(diffusion_matrix(model, nn.MSELoss(), (x, y), 2).trace()) != pytest.approx(
        float(diffusion_matrix(model, nn.MSELoss(), (x, y), 2, replacement=False).trace()))


def test_the_hessian_trace_takes_the_probes_asked_for():
    # a Hessian with off-diagonal terms: each Rademacher probe's estimate differs
    from sgdlab.measure.curvature import hessian_trace

    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, dtype=torch.float64, generator=g)
    y = torch.randn(5, 1, dtype=torch.float64, generator=g)
    model, loss = nn.Linear(3, 1, bias=False).double(), nn.MSELoss()

    def lib(k):
        return hessian_trace(model, loss, (x, y), k, generator=torch.Generator().manual_seed(2))
    got = compute_final({"kind": "hessian_trace", "probes": 5}, model, loss, (x, y))[0]
    assert got["hessian_trace"] == pytest.approx(lib(5).value, rel=1e-12)
    assert lib(5).value != pytest.approx(lib(1).value, rel=1e-6)
    exact = float(2 * (x ** 2).sum() / 5)
    assert compute_final({"kind": "hessian_trace", "probes": 1000}, model, loss, (x, y))[0][
        "hessian_trace"] == pytest.approx(exact, rel=0.1)


def test_the_trajectory_spectrum_reads_the_snapshots_after_the_burn_in(tmp_path):
    """520 snapshots of a 3-d random walk less a burn-in of 20: the iterate autocorrelation up
    to lag n/2 = 250 (251 lags, all kept: thinned past 400), its share outside the band taken
    at lags n/10 … n/2, the Brownian reference of the same size drawn at seed 0."""
    import numpy as np

    from sgdlab.experiments.procedures.measures import trajectory_spectrum
    from sgdlab.measure.trajectory import brownian_reference, iterate_autocorrelation
    from sgdlab.store.trajectory import TrajectoryWriter

    walk = np.cumsum(np.random.default_rng(0).standard_normal((520, 3)), axis=0)
    w = TrajectoryWriter(tmp_path / "t", 3, dtype="float64")
    for k, x in enumerate(walk):
        w.append(x, step=10 * k, epoch=k // 10)
    s, d = trajectory_spectrum(tmp_path / "t", burnin=20)
    assert (s["burnin"], s["snapshots"]) == (20, 500)
    it = iterate_autocorrelation(walk[20:], max_lag=250, min_lag=50)
    assert list(d["iterate_acf_lags"]) == list(range(251)) == list(it.lags)
    assert s["iterate_acf_fraction_outside"] == it.fraction_outside
    assert it.fraction_outside != iterate_autocorrelation(walk[20:], max_lag=250,
                                                          min_lag=100).fraction_outside
    assert np.allclose(d["iterate_acf_mean"], it.mean, rtol=0, atol=1e-12)
    bm = iterate_autocorrelation(brownian_reference(500, 3, seed=0), max_lag=250, min_lag=50)
    assert np.allclose(d["brownian_acf_mean"], bm.mean, rtol=0, atol=1e-12)


def test_the_hessian_norms_read_batch_norm_in_evaluation_mode_by_default():
    from sgdlab.measure.curvature import hessian_frobenius_norm
    from sgdlab.measure.walk import evaluation_mode

    model, loss, (x, y) = _batch_norm_mlp()

    def lib(mode):
        with evaluation_mode(model, mode):
            return hessian_frobenius_norm(model, loss, (x, y), 3,
                                          generator=torch.Generator().manual_seed(1)).value
    got = compute_final({"kind": "hessian_frobenius", "probes": 3}, model, loss, (x, y))[0]
    assert got["hessian_frobenius"] == pytest.approx(lib("eval"), rel=1e-12)
    assert lib("eval") != pytest.approx(lib("train"), rel=1e-3)


def test_the_top_eigenvalue_stops_at_the_default_relative_residual_of_1e_3():
    """Lanczos from the seed-0 Gaussian start on the Hessian diag(1, 0.97, …, 0.28): the top
    Ritz pair of the Krylov space K_k, computed here by QR of [v, Av, …, A^{k−1}v], first has
    a residual ‖Ay − θy‖ ≤ 10⁻³·max|θ| at k = 13 (1.3e-3 at k = 12); the value read is that
    Ritz value, 8e-6 short of λ_max = 1, not the one of k = 12 or 14."""
    import numpy as np

    c = [1 - 0.03 * i for i in range(25)]
    model, loss, data = _diagonal_quadratic(c)
    a = np.diag(c)
    v = torch.randn(len(c), generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64).numpy()

    def ritz(k):
        krylov = np.stack([np.linalg.matrix_power(a, j) @ v for j in range(k)], 1)
        q, _ = np.linalg.qr(krylov / np.linalg.norm(krylov, axis=0))
        theta, s = np.linalg.eigh(q.T @ a @ q)
        y = q @ s[:, -1]
        return theta[-1], np.linalg.norm(a @ y - theta[-1] * y) / np.abs(theta).max()
    first = next(k for k in range(1, 26) if ritz(k)[1] <= 1e-3)
    assert first == 13 and ritz(12)[1] > 1.2e-3
    got = compute_final({"kind": "hessian_top"}, model, loss, data)[0]["hessian_top"]
    assert got == pytest.approx(ritz(13)[0], rel=1e-9)
    assert 1 - got > 5e-6
    for k in (12, 14):
        assert got != pytest.approx(ritz(k)[0], rel=1e-6)


def test_jastrzebski_curvatures_of_logistic_regression_in_closed_form():
    """Jastrzebski et al.: the width of a minimum as Tr H (§2.2, line 138), measured in Fig. 3
    as "the largest eigenvalue" and "the Frobenius norm of the Hessian" (line 193), the
    Hessian of the mean training loss. On logistic regression (N = 8, d = 3) H = (1/N) Σ_i
    p_i (1 − p_i) x_i x_iᵀ in closed form; λ_max exactly (Lanczos on d = 3), ‖H‖_F and Tr H
    within 4 standard errors of their probe estimators (E‖Hv‖² over Gaussian v: variance
    2 Tr H⁴; vᵀHv over Rademacher v: variance 2 Σ_{i≠j} H_ij²), which separate them from
    one another and from λ_max."""
    g = torch.Generator().manual_seed(7)         # eigenvalues 0.13, 0.21, 0.41
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (8, 1), generator=g).double()
    model = _linear([0.3, -0.6, 0.9])
    p = torch.sigmoid(x @ model.weight.detach()[0])
    h = (x.T * (p * (1 - p))) @ x / len(x)
    lam = torch.linalg.eigvalsh(h)
    loss, data = nn.BCEWithLogitsLoss(), (x, y)
    common = {"every": 10, "samples": 8, "sample_seed": None}
    s, _ = compute_final({"kind": "hessian_top", "which": "largest", "tol": 1e-10,
                          "num_iter": 3, **common}, model, loss, data)
    assert s["hessian_top"] == pytest.approx(float(lam[-1]), rel=1e-9)
    probes = 2000
    s, _ = compute_final({"kind": "hessian_frobenius", "probes": probes, **common}, model, loss,
                         data)
    fro = float(torch.linalg.matrix_norm(h))
    se = math.sqrt(2 * float((lam ** 4).sum()) / probes) / (2 * fro)
    assert abs(s["hessian_frobenius"] - fro) < 4 * se
    assert 4 * se < min(abs(fro - float(lam[-1])), abs(fro - float(lam.sum())))
    s, _ = compute_final({"kind": "hessian_trace", "probes": probes, **common}, model, loss,
                         data)
    se = math.sqrt(2 * float((h ** 2).sum() - (h.diagonal() ** 2).sum()) / probes)
    assert abs(s["hessian_trace"] - float(lam.sum())) < 4 * se
    assert 4 * se < min(abs(fro - float(lam.sum())), abs(float(lam[-1] - lam.sum())))


# each option reaches the estimator it names, and each default is the documented one

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


# each measurement's options for one quick evaluation on a tiny model (a measurement missing
# here fails its test below: its declared metrics would go unchecked)
_QUICK = {"hessian_top": {}, "hessian_frobenius": {"probes": 2},
          "hessian_trace": {"probes": 2}, "grad_norm": {}, "noise_trace": {},
          "expected_sharpness": {"num_samples": 2}, "hessian_spectrum": {},
          "fisher_diagonal": {}, "diffusion_spectrum": {"batch_size": 2},
          "trajectory_spectrum": {"max_lag": 3}}


@pytest.mark.parametrize("kind", sorted({**SCALARS, **ARRAYS}))
def test_each_measurement_declares_the_metrics_a_run_of_it_writes(kind, walk):
    # the claim check before training reads the declaration, the analysis the summary
    m = {"kind": kind, **_QUICK[kind]}
    validate_measure(m, "f", final=True)
    if kind == "trajectory_spectrum":
        summary, _ = trajectory_spectrum(walk[0], **_QUICK[kind])
    else:
        g = torch.Generator().manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        data = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.arange(6) % 2
        summary, _ = compute_final(m, model, nn.CrossEntropyLoss(), data)
    assert set(summary) == final_metrics(m)


def test_a_measurement_whose_options_name_its_metrics_declares_them_from_its_options(
        monkeypatch):
    from sgdlab.experiments.procedures import measures

    for table in ("SCALARS", "METRICS"):        # the registration is undone after the test
        monkeypatch.setattr(measures, table, dict(getattr(measures, table)))

    @measures.scalar("top_k", {"k"}, metrics=lambda k: [f"top_{i}" for i in range(1, k + 1)])
    def _top_k(model, loss_fn, data, k: int = 2):
        return {f"top_{i}": 0.0 for i in range(1, k + 1)}

    assert final_metrics({"kind": "top_k"}) == {"top_1", "top_2"}       # the default k
    assert final_metrics({"kind": "top_k", "k": 3, "samples": 8}) == {"top_1", "top_2",
                                                                       "top_3"}
