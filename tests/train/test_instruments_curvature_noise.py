"""The curvature / noise / alignment / sharpness instruments inside the training loop."""
import copy
import math
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.data.base import Dataset
from sgdlab.measure.noise import noise_magnitude
from sgdlab.errors import UserError
from sgdlab.testing import (Quadratic, check_copies_recorder, covariance_reference,
                            dense_hessian_reference, per_sample_gradients_loop,
                            tiny_classification, tiny_mlp, toy_dataset)
from sgdlab.train.callbacks import MeasurementCallback, Schedule, train_subset
from sgdlab.train.instruments import build_instrument, instruments
from sgdlab.train.loop import train


def test_an_instrument_takes_the_schedule_as_a_run_config_spells_it():
    # build_instrument("hessian", every=8) was a TypeError (missing 'schedule') although a
    # config's measure entry reads {name: hessian, every: 8}
    def steps(**kw) -> list[int]:
        cb = build_instrument("noise", k=1, **kw)
        return [s for s in range(12) if cb.should_run(s)]

    assert steps(every=4) == steps(schedule=Schedule.every(4)) == [0, 4, 8]
    assert steps(every=4, start=2) == [2, 6, 10]
    assert steps(at=[1, 5]) == [1, 5]
    for bad, says in (({}, "got none"), ({"every": 2, "at": [1]}, "got every and at"),
                      ({"schedule": 5}, "schedule must be a Schedule")):
        with pytest.raises(ValueError, match=says):
            build_instrument("noise", **bad)


def test_an_instrument_class_takes_its_schedule_as_measurement_callback_does():
    # MeasurementCallback(fn, every=K) was accepted, HessianCallback(every=K) was a TypeError
    # (missing 'schedule'), and HessianCallback(5) called 5 ("'int' object is not callable")
    # before the schedule was checked
    from sgdlab.train.instruments.curvature import HessianCallback
    from sgdlab.train.instruments.noise import NoiseCallback

    def steps(cb) -> list[int]:
        return [s for s in range(12) if cb.should_run(s)]

    assert steps(HessianCallback(every=4)) == steps(HessianCallback(Schedule.every(4))) == [
        0, 4, 8]
    assert steps(NoiseCallback(every=4, start=2, k=1)) == [2, 6, 10]
    assert steps(NoiseCallback(at=[1, 5], k=1)) == [1, 5]
    assert steps(NoiseCallback(lambda s: s == 3, k=1)) == [3]
    assert not HessianCallback(every=4, start=2).at_train_begin
    for bad, says in (({}, "got none"), ({"schedule": 5}, "schedule must be a Schedule")):
        with pytest.raises(ValueError, match=f"HessianCallback.*{says}"):
            HessianCallback(**bad)


def test_a_misspelt_instrument_is_named_before_its_schedule_is_asked_for():
    # build_instrument("StepLength") said it "needs one step schedule", not that no instrument
    # has that name
    for name, meant in (("StepLength", "step_length"), ("hessian_trace", "hessian")):
        with pytest.raises(ValueError, match=f"Unknown instrument '{name}' "
                                             fr"\(did you mean {meant}\?\)"):
            build_instrument(name)
    # hessian_trace's num_probes is the instrument's trace_probes (frobenius_probes was offered)
    with pytest.raises(ValueError, match=r"no option 'num_probes' \(did you mean trace_probes"):
        build_instrument("hessian", every=2, num_probes=10)
    # a misspelt every= was told that no schedule was given
    with pytest.raises(ValueError, match=r"no option 'evry' \(did you mean every\?\); its "
                                         r"options: .*; its schedule: every, start, at"):
        build_instrument("hessian", evry=5, k=1)
    # a run config's log_points was "no option 'log_points'", with no word of Schedule
    with pytest.raises(ValueError, match=r"log_points is a run config's key; from Python give "
                                         r"schedule=Schedule\.log_spaced\(log_points, "):
        build_instrument("hessian", log_points=5, k=1)


def test_a_required_option_left_out_is_named_with_the_instrument():
    # it was Python's TypeError about the factory: "entropy_angle_instrument() missing 1
    # required keyword-only argument: 'gamma'", and trajectory's 'path' likewise
    for name, needs in (("entropy_angle", "gamma"), ("trajectory", "path")):
        schedule = {} if name == "trajectory" else {"every": 2}
        with pytest.raises(ValueError, match=f"instrument '{name}' requires {needs}=; its "
                                             "options: "):
            build_instrument(name, **schedule)


def test_instruments_registered_and_log():
    names = {"hessian", "sharpness", "noise", "alignment", "noise_magnitude"}
    assert names <= set(instruments())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    init = copy.deepcopy(model).double()          # the model the step-0 measurements see
    data = toy_dataset()
    every = Schedule.every(3)
    cbs = [
        build_instrument("hessian", schedule=every, k=2, bottom=1, trace_probes=5,
                         frobenius_probes=5, eval_subset=None),
        build_instrument("sharpness", schedule=every, sigma=0.01, num_samples=4, epsilon=1e-3,
                         gamma=1e-3),
        build_instrument("noise", schedule=every, k=3),
        build_instrument("alignment", schedule=Schedule.at([5]), k=2, num_probes=4),
        build_instrument("noise_magnitude", schedule=every),
    ]
    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=1, batch_size=8, callbacks=cbs, progress=False)
    h = res.history
    for key in ["hess/top_1", "hess/top_2", "hess/bottom_1", "hess/trace", "hess/frobenius",
                "sharpness/expected", "sharpness/epsilon", "sharpness/local_entropy",
                "noise/trace", "noise/top_3", "noise/rank", "align/cos_1", "align/residual",
                "noise/grad_norm", "noise/noise_norm"]:
        assert key in h, key
    assert [s for s, _ in h["hess/top_1"]] == [0, 3]
    # step 0 too: before any batch the loop's batch size (8) is the step's (it logged none)
    assert [s for s, _ in h["noise/grad_norm"]] == [0, 3]
    assert [s for s, _ in h["align/cos_1"]] == [5]              # no step 0 unless scheduled
    # the step-0 values are those of the initial model on the whole training set (float32
    # runs against float64 dense references)
    full = (data.x_train.double(), data.y_train)
    hess = torch.linalg.eigvalsh(dense_hessian_reference(init, nn.CrossEntropyLoss(), full))
    sigma = covariance_reference(per_sample_gradients_loop(init, nn.CrossEntropyLoss(), full))
    at0 = {key: dict(h[key])[0] for key in ("hess/top_1", "hess/top_2", "hess/bottom_1",
                                            "noise/trace", "noise/top_1", "noise/top_3",
                                            "noise/rank")}
    assert [at0["hess/top_1"], at0["hess/top_2"]] == pytest.approx(hess.flip(0)[:2].tolist(),
                                                                   rel=1e-3)
    assert at0["hess/bottom_1"] == pytest.approx(float(hess[0]), rel=1e-3)
    sig = torch.linalg.eigvalsh(sigma).flip(0)
    assert at0["noise/trace"] == pytest.approx(float(torch.trace(sigma)), rel=1e-5)
    assert [at0["noise/top_1"], at0["noise/top_3"]] == pytest.approx(
        [float(sig[0]), float(sig[2])], rel=1e-4)
    # numpy's rank threshold λ_max · d · eps at the run's precision (float32); two exact
    # eigenvalues lie within 30% of it, so the float32 count is bracketed
    tol = float(sig[0]) * len(sig) * torch.finfo(torch.float32).eps
    assert int((sig > 2 * tol).sum()) <= at0["noise/rank"] <= int((sig > tol / 2).sum())
    nm = noise_magnitude(init.eval(), nn.CrossEntropyLoss(), full, 0.1, 8)
    assert dict(h["noise/noise_norm"])[0] == pytest.approx(nm.noise_norm, rel=1e-5)
    assert dict(h["noise/grad_norm"])[0] == pytest.approx(nm.grad_norm, rel=1e-5)
    # measuring does not perturb training: same final parameters as a run without instruments
    torch.manual_seed(0)
    bare = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    train(bare, nn.CrossEntropyLoss(), data, torch.optim.SGD(bare.parameters(), lr=0.1),
          epochs=1, batch_size=8, progress=False)
    for p, q in zip(model.parameters(), bare.parameters()):
        assert torch.equal(p, q)


def test_every_curvature_operator_has_a_series_prefix_with_labels():
    from sgdlab.operators.factory import OPERATORS
    from sgdlab.report.figures.axes import CURVATURE_SERIES
    from sgdlab.train.instruments.curvature import SERIES_PREFIXES

    assert set(SERIES_PREFIXES) == set(OPERATORS)
    assert sorted(SERIES_PREFIXES.values()) == sorted(CURVATURE_SERIES)
    assert SERIES_PREFIXES["hessian"] == "hess"          # the name stored runs hold


@pytest.mark.parametrize("operator, prefix, matrix", [
    ("ggn", "ggn", "GGN"), ("empirical_fisher", "fisher", "empirical Fisher")])
def test_a_ggn_or_fisher_instrument_writes_and_labels_its_own_series(operator, prefix, matrix):
    """``operator: ggn`` (``empirical_fisher``) logs ``ggn/...`` (``fisher/...``), the
    eigenvalues of that matrix, labelled as its own, not as the Hessian's; the default
    operator keeps ``hess/...``."""
    import matplotlib.pyplot as plt

    from sgdlab.report.figures.training import instrument_panels
    from sgdlab.testing import empirical_fisher_reference, ggn_reference

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    init = copy.deepcopy(model).double()
    data = toy_dataset()
    at0 = Schedule.at([0])
    cbs = [build_instrument("hessian", schedule=at0, k=2, trace_probes=3, frobenius_probes=3,
                            eval_subset=None, operator=operator),
           build_instrument("hessian", schedule=at0, k=1, eval_subset=None)]
    assert cbs[0].prefix == prefix and cbs[1].prefix == "hess"
    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=1, batch_size=8, callbacks=cbs, progress=False)
    h = res.history
    assert {k for k in h if k.startswith(f"{prefix}/")} == {
        f"{prefix}/{n}" for n in ("top_1", "top_2", "trace", "trace_se", "frobenius")}
    assert {k for k in h if k.startswith("hess/")} == {"hess/top_1"}
    full = (data.x_train.double(), data.y_train)
    loss = nn.CrossEntropyLoss()
    dense = (ggn_reference(init, loss, full) if operator == "ggn" else
             empirical_fisher_reference(per_sample_gradients_loop(init, loss, full)))
    exact = torch.linalg.eigvalsh(dense).flip(0)[:2].tolist()
    assert [dict(h[f"{prefix}/top_{i}"])[0] for i in (1, 2)] == pytest.approx(exact, rel=1e-3)
    hess = torch.linalg.eigvalsh(dense_hessian_reference(init, loss, full))
    assert dict(h["hess/top_1"])[0] == pytest.approx(float(hess[-1]), rel=1e-3)
    fig = instrument_panels(h)
    labels = {ax.get_title(): ax.get_ylabel().replace("\n", " ") for ax in fig.axes
              if ax.get_visible()}
    plt.close(fig)
    sym = "G" if operator == "ggn" else "F"
    assert labels[prefix] == (rf"{matrix} $\|{sym}\|_F$, {matrix} $\lambda_{{max}}$, "
                              rf"{matrix} $\lambda_{{2}}$, {matrix} trace Tr {sym}")
    assert labels["hess"] == r"Hessian $\lambda_{max}$"


def test_noise_magnitude_at_a_zero_learning_rate_is_zero_noise():
    """Cosine-cyclic (Musso eq. 20) reaches η = 0 at τ = P: the instrument logs no noise there
    (sqrt(η Tr Σ / m) = 0) instead of ending the run."""
    from sgdlab.optim.registry import build_schedule

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = build_schedule("cosine-cyclic", opt, steps_per_epoch=5, total_steps=15, period=2)
    res = train(model, nn.CrossEntropyLoss(), toy_dataset(), opt, schedule=sched, epochs=3,
                batch_size=8, callbacks=[build_instrument("noise_magnitude",
                                                          schedule=Schedule.every(5))],
                progress=False)
    assert res.status == "finished"
    noise = dict(res.history["noise/noise_norm"])
    assert noise[10] == 0.0 and noise[5] > 0 and noise[15] > 0       # τ = 2 = P at step 10
    with pytest.raises(ValueError, match="lr=-0.1"):
        noise_magnitude(model, nn.CrossEntropyLoss(), toy_dataset().train, -0.1, 8)


def test_alignment_where_every_example_has_the_same_gradient_logs_no_normalised_sigma():
    """Σ = 0 (every per-sample gradient the same: identical examples here; a diverging ReLU
    net whose dead units leave one output far from every target, in float32) has no
    normalised eigenvalues λ_i/‖Σ‖_F = 0/0: the instrument logs the rest instead of ending a
    finite run with a ValueError (the run was recorded failed, its resume failed again)."""
    torch.manual_seed(0)
    x, y = torch.ones(12, 2), torch.zeros(12, 1)
    data = Dataset(x, y, x[:4], y[:4], meta={"name": "same", "task": "regression",
                                              "input_shape": (2,), "num_outputs": 1})
    model = nn.Linear(2, 1)
    res = train(model, nn.MSELoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=1, batch_size=4, progress=False,
                callbacks=[build_instrument("alignment", schedule=Schedule.every(1), k=1,
                                            num_probes=2)])
    assert res.status == "finished" and res.steps == 3, res.message
    h = res.history
    assert [s for s, _ in h["align/hess_norm_eig_1"]] == [0, 1, 2, 3]
    assert "align/sigma_norm_eig_1" not in h


class _Weighted(nn.Module):
    """x ↦ x w without nn.Linear: the noise instrument's covariance is Σ itself (N > d)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2, 1))

    def forward(self, x):
        return x @ self.w


def test_noise_eigenvalues_that_overflow_float32_end_the_run_as_diverged():
    """A float32 model far out (inputs ~1e10: gradients ~1e20, loss ~1e20, finite) whose
    covariance eigenvalues (~1e40) exceed float32's range: the run ends diverged at that
    measurement, saying what overflowed, instead of logging ``noise/top_1`` = inf."""
    x, y = torch.randn(12, 2, generator=torch.Generator().manual_seed(0)) * 1e10, torch.zeros(12, 1)
    data = Dataset(x, y, x[:4], y[:4], meta={"name": "far", "task": "regression",
                                              "input_shape": (2,), "num_outputs": 1})
    model = _Weighted()
    res = train(model, nn.MSELoss(), data, torch.optim.SGD(model.parameters(), lr=1e-30),
                epochs=1, batch_size=4, progress=False, eval_subset=None,
                callbacks=[build_instrument("noise", schedule=Schedule.every(1), k=1,
                                            eval_subset=None)])
    assert res.status == "diverged" and res.steps == 0, res.message
    assert "eigenvalue of the gradient covariance overflows torch.float32" in res.message
    assert "noise/top_1" not in res.history


def test_hessian_instrument_blocks_do_not_depend_on_timing(monkeypatch):
    """The trace and Frobenius estimates go through a fixed block (the operator's memory bound,
    or ``block_size``), never the timing tuner: a run's stored series then do not depend on
    the machine's load."""
    from sgdlab.operators.linear import LinearOperator

    asked = []
    tuner = LinearOperator.block_tuner

    def spy(self, kind="matmat", *, block_size=None, cap=None):
        asked.append(block_size)
        return tuner(self, kind, block_size=block_size, cap=cap)

    monkeypatch.setattr(LinearOperator, "block_tuner", spy)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    for block, expect in ((None, 16), (3, 3)):
        asked.clear()
        cb = build_instrument("hessian", schedule=Schedule.at([0]), k=0, trace_probes=5,
                              frobenius_probes=5, eval_subset=None, block_size=block)
        res = train(model, nn.CrossEntropyLoss(), toy_dataset(),
                    torch.optim.SGD(model.parameters(), lr=0.0), epochs=1, batch_size=40,
                    callbacks=[cb], progress=False)
        assert asked == [expect, expect] and "hess/trace" in res.history


def test_step_0_draws_batches_of_the_loops_size_when_it_says_one_and_no_size_is_given():
    """In a loop of one's own, before any ``ctx.batch``: ``ctx.batch_size`` is the size the
    instruments draw with at step 0, an explicit ``batch_size`` wins over it, and without
    either they log nothing (there is no size to draw)."""
    from sgdlab.train.callbacks import TrainContext

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    data = toy_dataset()
    data = Dataset(data.x_train.double(), data.y_train, meta=data.meta)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def at_step_0(loop_b, **options):
        ctx = TrainContext(model=model, optimizer=opt, loss_fn=nn.CrossEntropyLoss(), data=data,
                           batch_size=loop_b)
        build_instrument("noise_magnitude", schedule=Schedule.every(5),
                         **options).on_train_begin(ctx)
        return ctx.history.get("noise/noise_norm")

    assert at_step_0(None) is None
    for loop_b, own_b, m in ((8, None, 8), (8, 20, 20), (None, 20, 20)):
        ref = noise_magnitude(model, nn.CrossEntropyLoss(), data.train, 0.1, m).noise_norm
        assert at_step_0(loop_b, batch_size=own_b) == [(0, pytest.approx(ref, rel=1e-12))]


def _train_toy(callbacks):
    """A seeded 4-6-3 tanh net trained one epoch on ``toy_dataset()`` by SGD (lr 0.1, batches
    of 8) with ``callbacks``: (model, result)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    res = train(model, nn.CrossEntropyLoss(), toy_dataset(),
                torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=8,
                callbacks=callbacks, progress=False)
    return model, res


def test_batch_statistics_instrument_draws_its_own_batch():
    """Fresh batches come from the instrument's generator (seed + step): the logged values are
    those of :func:`batch_statistics` on that batch, and training is not perturbed."""
    from sgdlab.measure import batch_statistics

    data = toy_dataset()
    fresh = build_instrument("batch_statistics", schedule=Schedule.at([0, 5]), batch_size=12,
                             seed=3, tic="ggn", curvature="hessian")
    step = build_instrument("batch_statistics", schedule=Schedule.at([0, 5]), source="step",
                            epsilon=1e-5, prefix="step_batch")
    model, res = _train_toy([fresh, step])
    bare, _ = _train_toy([])
    for p, q in zip(model.parameters(), bare.parameters()):
        assert torch.equal(p, q)
    h = res.history
    assert [s for s, _ in h["batch/norm_test"]] == [0, 5]
    assert [s for s, _ in h["step_batch/norm_test"]] == [5]    # no batch before a step
    assert [s for s, _ in h["batch/tic_trace"]] == [0, 5]
    # step 0: the initial model on 12 samples drawn by randperm with seed 3 + 0
    torch.manual_seed(0)
    init = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).eval()
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:12]
    ref = batch_statistics(init, nn.CrossEntropyLoss(), (data.x_train[idx], data.y_train[idx]),
                           lr=0.1, curvature="hessian")
    assert h["batch/noise_scale_curvature"][0][1] == pytest.approx(ref.noise_scale_curvature,
                                                                   rel=1e-4)
    assert "step_batch/trace_h_cov" not in h            # only where asked for
    assert h["batch/norm_test"][0][1] == pytest.approx(ref.norm_test, rel=1e-6)
    assert h["batch/noise_scale"][0][1] == pytest.approx(ref.noise_scale, rel=1e-5)
    assert h["batch/cabs_batch_size"][0][1] == pytest.approx(ref.cabs_batch_size, rel=1e-6)
    for bad in ({"source": "epoch"}, {"batch_size": 1}, {"tic": "fisher"}, {"curvature": "x"},
                {"source": "step", "batch_size": 8}):
        with pytest.raises(ValueError):
            build_instrument("batch_statistics", schedule=Schedule.every(1), **bad)


def test_the_instrument_s_tic_hessian_divides_by_the_hessian_diagonal_on_a_tanh_net():
    """``tic: hessian`` is Σ_j C_jj / H_jj with the Hessian's diagonal, which on a tanh net
    differs from the GGN's (on ReLU nets they agree, so only a smooth net tells them apart):
    checked against the dense float64 Hessian of the instrument's batch at step 0."""
    from sgdlab.testing import ggn_reference

    data = toy_dataset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    init = copy.deepcopy(model).double()
    tics = {kind: build_instrument("batch_statistics", schedule=Schedule.at([0]),
                                   batch_size=12, seed=3, tic=kind, prefix=kind)
            for kind in ("hessian", "ggn")}
    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=1, max_steps=1, batch_size=8, callbacks=list(tics.values()),
                progress=False)
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:12]
    batch = (data.x_train[idx].double(), data.y_train[idx])
    g = per_sample_gradients_loop(init, nn.CrossEntropyLoss(), batch)
    c = torch.diagonal(g.T @ g) / len(g)                    # diag of the uncentred moment
    for kind, reference in (("hessian", dense_hessian_reference), ("ggn", ggn_reference)):
        h = torch.diagonal(reference(init, nn.CrossEntropyLoss(), batch))
        keep = h > 0
        want = (float((c[keep] / h[keep]).sum()), float(c.sum() / h.sum()))
        got = (res.history[f"{kind}/tic_diagonal"][0][1], res.history[f"{kind}/tic_trace"][0][1])
        assert got == pytest.approx(want, rel=1e-4), kind
    # the two curvatures differ here by far more than the tolerance
    assert res.history["hessian/tic_diagonal"][0][1] != pytest.approx(
        res.history["ggn/tic_diagonal"][0][1], rel=1e-2)


def test_step_scaled_noise_measures_take_the_inner_step_of_entropy_sgd():
    """CABS (η Tr Σ / L) and the noise magnitude scale with the step along mini-batch
    gradients: Entropy-SGD's inner η_y, not its outer η′ = 1 (10x the values at η_y = 0.1)."""
    from sgdlab.measure import batch_statistics
    from sgdlab.measure.noise import noise_magnitude
    from sgdlab.optim.entropy_sgd import EntropySGD

    data = toy_dataset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    init = copy.deepcopy(model).eval()
    batch = build_instrument("batch_statistics", schedule=Schedule.at([0]), batch_size=12,
                             seed=3)
    noise = build_instrument("noise_magnitude", schedule=Schedule.at([0]), batch_size=8)
    res = train(model, nn.CrossEntropyLoss(), data,
                EntropySGD(model.parameters(), lr=1.0, inner_lr=0.1, L=2), epochs=1,
                batch_size=8, callbacks=[batch, noise], progress=False, max_steps=1)
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:12]
    ref = batch_statistics(init, nn.CrossEntropyLoss(), (data.x_train[idx], data.y_train[idx]),
                           lr=0.1)
    h = res.history
    assert h["batch/cabs_batch_size"][0][1] == pytest.approx(ref.cabs_batch_size, rel=1e-6)
    nm = noise_magnitude(init, nn.CrossEntropyLoss(), data.train, 0.1, 8)
    assert h["noise/noise_norm"][0][1] == pytest.approx(nm.noise_norm, rel=1e-6)


def test_batch_statistics_instrument_skips_a_last_batch_of_one_sample():
    """40 examples in batches of 13: the epoch's last step sees a single sample, whose batch
    statistics are undefined; the run goes on (it ended with a ValueError) and logs the steps
    with a batch of at least 2, their values those of the step's batch after the step."""
    from sgdlab.measure import batch_statistics
    from sgdlab.train.callbacks import Callback

    class Record(Callback):
        def __init__(self):
            self.seen = {}

        def on_step_end(self, ctx):
            self.seen[ctx.step] = (copy.deepcopy(ctx.model).eval(), ctx.batch)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    data = toy_dataset()
    data = Dataset(data.x_train.double(), data.y_train, data.x_test.double(), data.y_test,
                   meta=data.meta)
    rec = Record()
    cbs = [rec, build_instrument("batch_statistics", schedule=Schedule.every(1), source="step"),
           build_instrument("batch_statistics", schedule=Schedule.every(1), prefix="fresh")]
    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=2, batch_size=13, callbacks=cbs, progress=False)
    assert res.status == "finished" and res.steps == 8
    h = res.history
    assert [s for s, _ in h["batch/norm_test"]] == [1, 2, 3, 5, 6, 7]
    # a fresh batch of the loop's size (13) at step 0 too; none at step 0 of the step's own
    assert [s for s, _ in h["fresh/norm_test"]] == [0, 1, 2, 3, 5, 6, 7]
    for step, value in h["batch/eb_criterion"]:
        at, batch = rec.seen[step]
        ref = batch_statistics(at, nn.CrossEntropyLoss(), batch, lr=0.1)
        assert value == pytest.approx(ref.eb_criterion, rel=1e-10)
    with pytest.raises(ValueError, match="eval_subset"):
        build_instrument("batch_statistics", schedule=Schedule.every(1), eval_subset=1)


def test_batch_statistics_and_step_length_log_the_same_values_after_a_resume(tmp_path):
    """Interrupted mid-epoch and resumed from its checkpoint, a run logs exactly the values of
    an uninterrupted one (fresh batches from seed + step, α from the step's own batch)."""
    data = toy_dataset()

    def go(**kw):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
        cbs = [build_instrument("batch_statistics", schedule=Schedule.every(2), seed=1),
               build_instrument("batch_statistics", schedule=Schedule.every(3), source="step",
                                prefix="sb"),
               build_instrument("step_length", schedule=Schedule.every(2))]
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        d = Dataset(data.x_train.double(), data.y_train, data.x_test.double(), data.y_test,
                    meta=data.meta)
        return train(model, nn.CrossEntropyLoss(), d, opt, epochs=2, batch_size=8, seed=2,
                     callbacks=cbs, progress=False, **kw)

    ref = go()
    assert go(checkpoint_dir=tmp_path, max_steps=7).steps == 7
    res = go(checkpoint_dir=tmp_path, resume=True)
    names = [k for k in ref.history if k.split("/")[0] in ("batch", "sb", "step")]
    assert len(names) >= 3 * 7 and all(len(ref.history[k]) >= 2 for k in names)
    for k in names:
        assert res.history[k] == ref.history[k], k


def test_build_instrument_names_a_misspelled_instrument_or_option():
    with pytest.raises(ValueError, match=r"'batch_statistic' \(did you mean batch_statistics\?\)"):
        build_instrument("batch_statistic", schedule=Schedule.every(1))
    with pytest.raises(ValueError, match=r"no option 'wieghts' \(did you mean weights\?\)"):
        build_instrument("step_length", schedule=Schedule.every(1), wieghts="equal")


@pytest.mark.parametrize("name,options,says", [
    # dropout draws its masks under vmap: the points go one by one
    ("sharpness", {"num_samples": 3, "epsilon": 1e-3, "gamma": 1e-3},
     (RuntimeWarning, "vmap failed .* evaluating the points one by one")),
    ("hessian", {"k": 1, "trace_probes": 2},
     (UserWarning, "dropout in train mode, so the curvature is that of the loss under one "
                   "fixed draw"))])
def test_instruments_in_train_mode_leave_the_run_as_it_was(name, options, says):
    """eval_mode=False measures the model as it trains (dropout in train mode; a batch norm
    in train mode is refused, a frozen one stays frozen): the run's weights and buffers must
    end as they would without the instrument, which says what dropout does to it."""
    import contextlib

    ends = []
    for cbs in ([], [build_instrument(name, schedule=Schedule.every(1), eval_mode=False,
                                      **options)]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.5),
                              nn.Linear(6, 3))
        model[1].eval()                      # frozen: its running statistics are fixed
        with pytest.warns(says[0], match=says[1]) if cbs else contextlib.nullcontext():
            train(model, nn.CrossEntropyLoss(), toy_dataset(),
                  torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=10,
                  callbacks=cbs, progress=False)
        ends.append(copy.deepcopy(model.state_dict()))
    assert all(torch.equal(ends[0][k], ends[1][k]) for k in ends[0])


@pytest.mark.parametrize("name", ["hessian", "sharpness", "noise", "alignment",
                                  "noise_magnitude", "batch_statistics"])
def test_eval_mode_false_on_a_training_batch_norm_is_refused_before_step_0(name):
    """Measured in train mode, a batch norm normalises by the evaluation batch (the values
    depend on which examples share it; per-sample gradients are undefined): noise failed the
    run at its first measurement, the Hessian logged such values without a word."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))
    cb = build_instrument(name, schedule=Schedule.every(5), eval_mode=False)
    steps = []
    probe = MeasurementCallback(lambda ctx: steps.append(ctx.step) or {}, Schedule.every(1))
    with pytest.raises(UserError, match=r"callbacks\[1\] \(" + name + r"\): Invalid "
                       r"eval_mode=False \(the model's layer '1' \(BatchNorm1d\) is in "
                       r"train mode"):
        train(model, nn.CrossEntropyLoss(), toy_dataset(), torch.optim.SGD(model.parameters(),
              lr=0.1), epochs=1, batch_size=8, callbacks=[probe, cb], progress=False)
    assert steps == []                       # refused before step 0
    model[1].eval()                          # a frozen batch norm is measured as it is
    res = train(model, nn.CrossEntropyLoss(), toy_dataset(), torch.optim.SGD(model.parameters(),
                lr=0.1), epochs=1, batch_size=8, callbacks=[cb], progress=False)
    assert res.status == "finished"


def test_eigenpair_counts_the_model_cannot_give_are_refused_before_step_0():
    """k > d (Lanczos) or k > min(N, d) (alignment's Σ) failed the run at the instrument's
    first measurement, after the steps before it."""
    model = nn.Sequential(nn.Linear(4, 2), nn.Tanh(), nn.Linear(2, 3))      # d = 19
    cases = [("hessian", {"k": 20}, "Invalid k=20 (more eigenvalues than the model's 19 "),
             ("hessian", {"bottom": 20}, "Invalid bottom=20 (more eigenvalues"),
             ("alignment", {"k": 12, "eval_subset": 11}, "Invalid k=12 (at most min(N, d) = 11"),
             ("alignment", {"k": 19}, "Invalid k=19 (at most min(N, d) = 19")]
    for name, options, needle in cases[:3]:
        cb = build_instrument(name, schedule=Schedule.every(5), **options)
        with pytest.raises(UserError) as e:
            train(model, nn.CrossEntropyLoss(), toy_dataset(), torch.optim.SGD(model.parameters(),
                  lr=0.1), epochs=1, batch_size=8, callbacks=[cb], progress=False)
        assert needle in str(e.value), str(e.value)
    name, options, _ = cases[3]                  # k = min(N, d) is measured
    cb = build_instrument(name, schedule=Schedule.at([5]), **options)
    res = train(model, nn.CrossEntropyLoss(), toy_dataset(), torch.optim.SGD(model.parameters(),
                lr=0.1), epochs=1, batch_size=8, callbacks=[cb], progress=False)
    assert "align/cos_19" in res.history


class _TwoHeads(nn.Module):
    """Logits and an auxiliary output, as a tuple: a loss takes the logits apart."""

    def __init__(self):
        super().__init__()
        self.body, self.aux = nn.Linear(4, 3), nn.Linear(4, 1)

    def forward(self, x):
        return self.body(x), self.aux(x)


@pytest.mark.parametrize("name, option", [("hessian", "operator"), ("batch_statistics", "tic"),
                                          ("batch_statistics", "curvature")])
def test_a_gauss_newton_option_on_a_tuple_output_is_refused_before_step_0(name, option):
    """The Gauss-Newton matrix needs one output tensor: a model returning a tuple failed the
    run at the instrument's first measurement, after every step before it."""
    torch.manual_seed(0)
    model = _TwoHeads()
    steps = []
    probe = MeasurementCallback(lambda ctx: steps.append(ctx.step) or {}, Schedule.every(1))
    cb = build_instrument(name, schedule=Schedule.at([5]), **{option: "ggn"})
    with pytest.raises(UserError, match=rf"callbacks\[1\] \({name}\): {option}='ggn' needs "
                       rf"the model's output as one tensor.* returned a tuple.* Hessian "
                       rf"\({option}='hessian'\)"):
        train(model, lambda out, y: nn.functional.cross_entropy(out[0], y), toy_dataset(),
              torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=8,
              callbacks=[probe, cb], progress=False)
    assert steps == []                       # refused before step 0


def _steps_before_refusal(cb, model, loss_fn, data) -> tuple[list[int], str]:
    """The steps a run took before ``cb`` refused it (UserError), by a probe measuring
    after every step, and the refusal's message."""
    steps = []
    probe = MeasurementCallback(lambda ctx: steps.append(ctx.step) or {}, Schedule.every(1),
                                at_train_begin=False)
    with pytest.raises(UserError) as e:
        train(model, loss_fn, data, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
              batch_size=8, callbacks=[probe, cb], progress=False)
    return steps, str(e.value)


@pytest.mark.parametrize("name", ["noise", "alignment", "noise_magnitude", "batch_statistics",
                                  "hessian"])
def test_what_the_per_sample_measurements_refuse_is_refused_before_step_0(name):
    """A batch norm without running statistics (no per-sample gradients), a cross-entropy
    with class weights and, for the instruments that measure the whole evaluation set, ignored
    targets in it (no plain mean of the samples' losses) failed the run at the instrument's
    first measurement, after every step before it."""
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, track_running_stats=False),
                       nn.Tanh(), nn.Linear(6, 3))
    options = {"operator": "empirical_fisher"} if name == "hessian" else {}
    steps, says = _steps_before_refusal(build_instrument(name, schedule=Schedule.at([4]),
                                                         **options),
                                        bn, nn.CrossEntropyLoss(), toy_dataset())
    assert steps == [] and f"({name}): per-sample gradients are undefined for layer '1'" in says
    if name == "noise":         # Σ, the spread of the samples' own gradients, takes any loss
        return
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0]))
    # the empirical Fisher stands beside the Hessian of the batch loss: a plain mean's only
    steps, says = _steps_before_refusal(build_instrument(name, schedule=Schedule.at([4]),
                                                         **options),
                                        model, weighted, toy_dataset())
    assert steps == [] and f"the {name} instrument sets per-sample gradients" in says
    assert "(weight=...) is a mean weighted by the class weights" in says
    data = toy_dataset()
    data.y_train[::5] = -100
    if name == "batch_statistics":      # batches drawn from the set may hold none
        return
    steps, says = _steps_before_refusal(build_instrument(name, schedule=Schedule.at([4]),
                                                         **options),
                                        model, nn.CrossEntropyLoss(), data)
    assert steps == [] and "(ignore_index=-100) averages over the targets not ignored" in says


def test_the_step_length_instrument_refuses_a_weighted_loss_before_step_0():
    """Its losses and slopes are means of the samples' own: class weights failed the run at
    its first measured step; ignored targets in the evaluation set it reads (source eval)
    too, while the steps' batches (source step) may hold none."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0]))
    steps, says = _steps_before_refusal(build_instrument("step_length", at=[3]), model,
                                        weighted, toy_dataset())
    assert steps == [] and "the step_length instrument sets per-sample gradients" in says
    data = toy_dataset()
    data.y_train[::5] = -100
    steps, says = _steps_before_refusal(build_instrument("step_length", at=[3], source="eval"),
                                        model, nn.CrossEntropyLoss(), data)
    assert steps == [] and "(ignore_index=-100) averages over the targets" in says


def test_sharpness_instrument_passes_its_memory_budget_to_every_measurement(monkeypatch):
    import sgdlab.train.instruments.curvature as inst

    seen: dict[str, object] = {}

    def spy(name):
        real = getattr(inst, name)

        def call(*args, **kwargs):
            seen[name] = kwargs.get("memory_budget", "not passed")
            return real(*args, **kwargs)
        monkeypatch.setattr(inst, name, call)

    for name in ("expected_sharpness", "epsilon_sharpness", "local_entropy"):
        spy(name)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    cb = build_instrument("sharpness", schedule=Schedule.at([1]), num_samples=3, epsilon=1e-3,
                          gamma=1e-3, eval_subset=None, memory_budget="4KiB")
    res = train(model, nn.CrossEntropyLoss(), toy_dataset(), torch.optim.SGD(model.parameters(),
                lr=0.1), epochs=1, batch_size=8, callbacks=[cb], progress=False)
    assert "sharpness/epsilon" in res.history
    assert seen == {"expected_sharpness": 4096, "epsilon_sharpness": 4096,
                    "local_entropy": 4096}
    for bad in (0, 1.5, "1XB", True):
        with pytest.raises(ValueError, match=r"Invalid memory_budget=.*; bytes: a whole number"):
            build_instrument("sharpness", schedule=Schedule.at([1]), memory_budget=bad)


def test_a_hessian_instrument_that_would_measure_nothing_is_refused():
    # k: 0 without bottom or probes ran at every scheduled step and logged nothing, silently
    with pytest.raises(ValueError, match="Invalid k=0 with bottom, trace_probes and "
                                         "frobenius_probes 0: the instrument would measure"):
        build_instrument("hessian", every=1, k=0)
    assert build_instrument("hessian", every=1, k=0, trace_probes=2).trace_probes == 2


@pytest.mark.parametrize("model, label", [
    (nn.BatchNorm1d(4), "the model (BatchNorm1d)"),
    (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), "the model's layer '1' (BatchNorm1d)")])
def test_eval_mode_false_names_the_model_itself_as_the_training_batch_norm(model, label):
    """A bare batch-norm model read "the model's the model (BatchNorm1d)"."""
    cb = build_instrument("hessian", schedule=Schedule.every(5), eval_mode=False)
    with pytest.raises(ValueError) as e:
        cb.check(model, toy_dataset())
    assert f"Invalid eval_mode=False ({label} is in train mode" in str(e.value), str(e.value)
    assert "the model's the model" not in str(e.value)


def test_a_hessian_instrument_that_did_not_converge_names_its_series_and_num_iter():
    # the warning said "lanczos: ...; raise num_iter" (an option the instrument did not have),
    # not whether hess/top_k or hess/bottom_1 was off
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))   # d = 51

    def run(num_iter):
        cb = build_instrument("hessian", schedule=Schedule.at([0]), k=2, bottom=1, tol=1e-6,
                              num_iter=num_iter, eval_subset=None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = train(model, nn.CrossEntropyLoss(), toy_dataset(),
                        torch.optim.SGD(model.parameters(), lr=0.0), epochs=1, batch_size=40,
                        callbacks=[cb], progress=False)
        return res, [str(w.message) for w in caught if "converged" in str(w.message)]

    res, said = run(3)
    assert [m.split(":")[0] for m in said] == ["hess/top_1..2", "hess/bottom_1"]
    assert all(m.endswith("; raise the hessian instrument's num_iter") for m in said)
    assert all("not converged after 3 iterations" in m for m in said)
    exact, said = run(51)     # the whole space: exact, nothing to say
    assert said == []
    ds = toy_dataset()
    H = torch.linalg.eigvalsh(dense_hessian_reference(
        copy.deepcopy(model).double(), nn.CrossEntropyLoss(),
        (ds.x_train.double(), ds.y_train)))
    assert exact.history["hess/top_1"][0][1] == pytest.approx(H[-1].item(), rel=1e-4)
    assert exact.history["hess/bottom_1"][0][1] == pytest.approx(H[0].item(), abs=1e-5)
    with pytest.raises(ValueError, match=r"num_iter=1 \(an int >= k and bottom \(2\)\)"):
        build_instrument("hessian", every=1, k=2, num_iter=1)


def _loss_that_warns(out, y):
    warnings.warn("the loss's own", UserWarning)
    return nn.functional.cross_entropy(out, y)


def test_a_warning_of_a_run_with_a_hessian_instrument_shows_once_per_location():
    # the instrument's Lanczos calls ran in a catch_warnings block, and leaving it cleared
    # every module's record of the warnings shown: the loss's came again at each measurement
    def said(action):
        model = nn.Sequential(nn.Linear(4, 3))
        cb = build_instrument("hessian", schedule=Schedule.every(1), k=1, eval_subset=None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter(action)
            res = train(model, _loss_that_warns, toy_dataset(), torch.optim.SGD(
                model.parameters(), lr=0.1), epochs=4, batch_size=40, callbacks=[cb],
                progress=False)
        assert len(res.history["hess/top_1"]) >= 4
        return [str(w.message) for w in caught]

    torch.manual_seed(0)
    said("ignore")      # a module's first import (scipy.linalg's) may set filters: done here
    assert said("default") == ["the loss's own"]
    assert said("always").count("the loss's own") >= 8     # a step's and a measurement's


def test_an_alignment_instrument_that_did_not_converge_names_itself_and_num_iter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    cb = build_instrument("alignment", schedule=Schedule.at([0]), k=2, tol=1e-6, num_iter=3,
                          num_probes=2, eval_subset=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, nn.CrossEntropyLoss(), toy_dataset(),
              torch.optim.SGD(model.parameters(), lr=0.0), epochs=1, batch_size=40,
              callbacks=[cb], progress=False)
    said = [str(w.message) for w in caught if "converged" in str(w.message)]
    assert len(said) == 1 and said[0].startswith(
        "align (the Hessian's top-k): 2 eigenpair(s) not converged after 3 iterations")
    assert said[0].endswith("; raise the alignment instrument's num_iter")


def test_noise_magnitude_without_replacement_counts_the_whole_training_set():
    """``replacement: false``: sqrt(η Tr Σ (N − m)/(m (N − 1))) with N the training set the
    loop's epochs draw from (40), not the subset Σ is estimated on (16)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    data = toy_dataset()
    data = Dataset(data.x_train.double(), data.y_train, meta=data.meta)
    logged = {}
    for replacement in (True, False):
        m = copy.deepcopy(model)
        res = train(m, nn.CrossEntropyLoss(), data, torch.optim.SGD(m.parameters(), lr=0.1),
                    epochs=1, batch_size=8, progress=False, callbacks=[build_instrument(
                        "noise_magnitude", at=[0], eval_subset=16, replacement=replacement)])
        logged[replacement] = dict(res.history["noise/noise_norm"])[0]
    sub = train_subset(data, 16, 0)
    tr = float(torch.trace(covariance_reference(
        per_sample_gradients_loop(model.eval(), nn.CrossEntropyLoss(), sub))))
    assert logged[True] == pytest.approx(math.sqrt(0.1 * tr / 8), rel=1e-10)
    assert logged[False] == pytest.approx(math.sqrt(0.1 * tr * 32 / (8 * 39)), rel=1e-10)
    with pytest.raises(ValueError, match="replacement"):
        build_instrument("noise_magnitude", every=1, replacement="no")


def test_the_sharpness_curve_is_zhus_expected_sharpness_with_sigma_a_standard_deviation():
    """Zhu et al. §4.2 (and Figs. 5(b), 6(b), 7(c)): E_{ν~N(0, σ²I)}[L(θ+ν)] − L(θ), σ "the
    noise std" (Fig. 5 caption). For least squares, L(θ) = (1/N) Σ (x_iᵀθ − y_i)², it is
    σ² Tr H / 2 exactly, H = (2/N) XᵀX; the instrument's value at step 0 lies within
    4 of its standard errors of it, and far from σ Tr H / 2 (σ read as a variance)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.randn(12, 1, generator=g, dtype=torch.float64)
    data = Dataset(x, y, x[:4], y[:4], meta={"name": "toy", "task": "regression",
                                             "input_shape": (3,), "num_outputs": 1})
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():       # at the minimum: no gradient term to swamp the estimate
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    sigma = 0.05
    res = train(model, nn.MSELoss(), data, torch.optim.SGD(model.parameters(), lr=0.01),
                epochs=1, batch_size=12, progress=False, callbacks=[build_instrument(
                    "sharpness", at=[0], sigma=sigma, num_samples=200)])
    value = dict(res.history["sharpness/expected"])[0]
    se = dict(res.history["sharpness/expected_se"])[0]
    tr_h = float(torch.trace(2 * x.T @ x / len(x)))
    assert abs(value - sigma ** 2 * tr_h / 2) < 4 * se
    assert 4 * se < sigma ** 2 * tr_h / 2 < sigma * tr_h / 2 - 4 * se


def test_curvature_and_sharpness_instruments_log_the_closed_forms_of_a_quadratic():
    """On L(θ) = ½ θᵀHθ with H = diag(3, 1, 0.5, 0.2, 0.1), measured at θ = 0:
    ``hess/top_1..2`` and ``hess/bottom_1`` are the extreme eigenvalues; Rademacher probes of a
    diagonal matrix give its trace with zero spread (``hess/trace`` = 4.8, ``hess/trace_se``
    = 0); ``hess/frobenius`` estimates ‖H‖_F = √10.3 from E‖Hv‖² (within its spread for 400
    probes: its own probe count, not the trace's two); ``sharpness/expected`` is
    σ²/2 · Tr H (Zhu et al.), ``sharpness/local_entropy`` the width −f_γ with
    f_γ = Σ log(1 + γλ)/(2β) at the minimum (the thesis' local entropy, β = 4)."""
    from sgdlab.train.instruments.curvature import HessianCallback, SharpnessCallback

    lam = torch.tensor([3.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)
    ctx = SimpleNamespace(model=Quadratic(torch.diag(lam), torch.zeros(5, dtype=torch.float64)),
                          loss_fn=lambda out, y: out.mean())
    data = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    hess = HessianCallback(every=1, k=2, bottom=1, trace_probes=2, frobenius_probes=400,
                           tol=1e-10).compute(ctx, data, torch.Generator().manual_seed(0))
    assert [hess["hess/top_1"], hess["hess/top_2"]] == pytest.approx([3.0, 1.0], rel=1e-9)
    assert hess["hess/bottom_1"] == pytest.approx(0.1, rel=1e-9)
    assert (hess["hess/trace"], hess["hess/trace_se"]) == (pytest.approx(4.8, rel=1e-14), 0.0)
    # ‖Hv‖² = Σ λ_i² v_i² has variance 2 Σ λ_i⁴ = 164.6; √ by the delta method: se 0.0998
    assert abs(hess["hess/frobenius"] - math.sqrt(10.3)) < 4 * math.sqrt(164.6 / 400) / (
        2 * math.sqrt(10.3))
    sigma, gamma, beta = 0.1, 0.05, 4.0
    sharp = SharpnessCallback(every=1, sigma=sigma, num_samples=2000, gamma=gamma,
                              beta=beta).compute(ctx, data, torch.Generator().manual_seed(1))
    assert abs(sharp["sharpness/expected"] - sigma ** 2 / 2 * 4.8) < 4 * sharp[
        "sharpness/expected_se"]
    assert sharp["sharpness/expected_se"] < 0.05 * sigma ** 2 / 2 * 4.8
    width = -float(torch.log1p(gamma * lam).sum()) / (2 * beta)
    assert sharp["sharpness/local_entropy"] == pytest.approx(width, rel=0.05)


def test_curvature_instrument_options_are_checked_where_they_are_built():
    """Options no measurement can take are refused when the instrument is built (a config's
    key path names them before training): num_iter below k or below bottom (fewer Krylov
    vectors than pairs), no evaluation
    examples, a zero ε box; the largest counts a model can give, k = bottom = d, pass its
    check."""
    from sgdlab.train.instruments.curvature import HessianCallback

    every = Schedule.every(5)
    for name, options, needle in [
            ("hessian", {"k": 2, "num_iter": 1}, "Invalid num_iter=1"),
            ("hessian", {"k": 1, "bottom": 4, "num_iter": 3}, "Invalid num_iter=3"),
            ("hessian", {"eval_subset": 0}, "Invalid eval_subset=0"),
            ("sharpness", {"epsilon": 0}, "Invalid epsilon=0 (must be > 0)"),
            ("sharpness", {"sigma": -0.1}, "Invalid sigma=-0.1")]:
        with pytest.raises(ValueError, match=re.escape(needle)):
            build_instrument(name, schedule=every, **options)
    model = nn.Sequential(nn.Linear(4, 2), nn.Tanh(), nn.Linear(2, 3))      # d = 19
    HessianCallback(every=5, k=19, bottom=19, num_iter=19).check(model, None)


def test_hessian_instrument_passes_its_lanczos_options_and_a_step_seeded_generator(monkeypatch):
    """Each Lanczos call gets the instrument's tol and num_iter (the top-k with
    ``which="largest"``, the bottom ones ``"smallest"``), drawing its start vector from the
    generator seeded ``seed + step`` (a resumed run logs the same values); and an evaluation
    subset larger than the training set is the whole set (the noise instruments' k ≤ min(N, d)
    check counts N so)."""
    import sgdlab.train.instruments.curvature as inst

    calls = []
    real = inst.lanczos

    def spy(op, k, **kw):
        g = kw["generator"]
        calls.append((k, kw.get("which", "largest"), kw["tol"], kw["num_iter"],
                      g.initial_seed()))
        return real(op, k, **kw)

    monkeypatch.setattr(inst, "lanczos", spy)
    model = nn.Sequential(nn.Linear(4, 2), nn.Tanh(), nn.Linear(2, 3))
    data = toy_dataset()
    ctx = SimpleNamespace(model=model, loss_fn=nn.CrossEntropyLoss(), data=data, step=7)
    cb = inst.HessianCallback(every=1, k=2, bottom=1, tol=0.25, num_iter=9, seed=3,
                              eval_subset=None)
    cb._measure(ctx)
    assert calls == [(2, "largest", 0.25, 9, 10), (1, "smallest", 0.25, 9, 10)]
    assert inst.eval_set_size(data, 10_000) == len(data.x_train) == inst.eval_set_size(data, None)
    assert inst.eval_set_size(data, 7) == 7


def _noise_problem():
    """The noise tests' model (d = 26, float64) and evaluation set (N = 6)."""
    return tiny_mlp(3, 4, 2, seed=0), tiny_classification(n=6, seed=1)


def _measuring_context(model, **kw):
    """What a noise instrument's ``compute`` reads of the loop's context."""
    return SimpleNamespace(**{"model": model, "loss_fn": nn.CrossEntropyLoss(), "batch": None,
                              "batch_size": None, **kw})


def test_the_noise_instrument_divides_by_d_and_logs_at_most_n_eigenvalues():
    """``noise/mean_eig`` = Tr Σ / d and ``noise/rank_fraction`` = rank / d (d parameters, not
    N samples); k = 20 > N = 6 logs the N eigenvalues Σ has pairs for, against Σ by outer
    products in float64."""
    from sgdlab.train.instruments.noise import NoiseCallback

    model, data = _noise_problem()                      # d = 26, float64
    sigma = covariance_reference(per_sample_gradients_loop(model, nn.CrossEntropyLoss(), data))
    d = sigma.shape[0]
    out = NoiseCallback(Schedule.every(1), k=20).compute(_measuring_context(model), data,
                                                         torch.Generator())
    assert out["noise/mean_eig"] == pytest.approx(float(torch.trace(sigma)) / d, rel=1e-10)
    rank = int(torch.linalg.matrix_rank(sigma))
    assert rank == 5                                    # N − 1: centring removes one direction
    assert out["noise/rank"] == rank and out["noise/rank_fraction"] == pytest.approx(rank / d)
    assert sorted(k for k in out if k.startswith("noise/top_")) == sorted(
        f"noise/top_{i}" for i in range(1, 7))
    assert out["noise/top_1"] == pytest.approx(float(torch.linalg.eigvalsh(sigma)[-1]),
                                               rel=1e-10)


def test_the_noise_magnitude_instrument_takes_its_batch_size_and_the_groups_current_lr():
    """sqrt(η Tr Σ / m) with η the first parameter group's lr (module docstring; not another
    group's) as a schedule has set it (not the optimizer's initial lr) and m the instrument's
    ``batch_size`` (not the loop's); Σ by outer products in float64."""
    from sgdlab.train.instruments.noise import NoiseMagnitudeCallback

    model, data = _noise_problem()
    sigma = covariance_reference(per_sample_gradients_loop(model, nn.CrossEntropyLoss(), data))
    params = list(model.parameters())
    opt = torch.optim.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.3}], lr=0.1)
    opt.param_groups[0]["lr"] = 0.05                    # as a schedule leaves it
    ctx = _measuring_context(model, optimizer=opt, batch_size=16,
                             data=SimpleNamespace(x_train=data[0]))
    out = NoiseMagnitudeCallback(Schedule.every(1), batch_size=4).compute(ctx, data,
                                                                          torch.Generator())
    assert out["noise/noise_norm"] == pytest.approx(
        math.sqrt(0.05 * float(torch.trace(sigma)) / 4), rel=1e-10)


@pytest.mark.parametrize("convention, factor", [("paper", 2 / 3), ("mean-lr", 4 / 3)])
def test_the_noise_magnitude_and_cabs_of_random_lr_sgd_are_constant_sgds_at_its_noise_step(
        convention, factor):
    """Under random-lr-sgd (α·l, α ~ U[0, 1] or U[0, 2]) both instruments take η = l⟨α²⟩/⟨α⟩
    (2l/3, 4l/3), the constant step with the same drift and diffusion: their values are plain
    SGD's at that η, sqrt(η Tr Σ / m) against Σ by outer products in float64, and so through
    the optimizer trivialized steps with."""
    from sgdlab.optim import build_optimizer
    from sgdlab.optim.random_lr import RandomLRSGD

    model, (x, y) = _noise_problem()
    sigma = covariance_reference(per_sample_gradients_loop(model, nn.CrossEntropyLoss(),
                                                           (x, y)))
    params = list(model.parameters())
    constant = _noise_and_cabs(model, torch.optim.SGD(params, lr=0.3 * factor))
    assert constant[0] == pytest.approx(
        math.sqrt(0.3 * factor * float(torch.trace(sigma)) / 4), rel=1e-10)
    for opt in (RandomLRSGD(params, lr=0.3, convention=convention),
                build_optimizer("trivialized", params, base="random-lr-sgd", lr=0.3, p=3,
                                seed=0, convention=convention)):
        assert _noise_and_cabs(model, opt) == pytest.approx(constant, rel=1e-12)


def _noise_and_cabs(model, opt, **context):
    """``noise/noise_norm`` (m = 4) and ``batch/cabs_batch_size`` (the step's batch: the whole
    evaluation set) of the noise tests' problem under ``opt`` and the loop's ``context``."""
    from sgdlab.train.instruments.noise import BatchStatisticsCallback, NoiseMagnitudeCallback

    x, y = _noise_problem()[1]
    ctx = _measuring_context(model, optimizer=opt, batch=(x, y),
                             data=SimpleNamespace(x_train=x), **context)
    noise = NoiseMagnitudeCallback(Schedule.every(1), batch_size=4)
    cabs = BatchStatisticsCallback(Schedule.every(1), source="step")
    return (noise.compute(ctx, (x, y), torch.Generator())["noise/noise_norm"],
            cabs.compute(ctx, (x, y), torch.Generator())["batch/cabs_batch_size"])


@pytest.mark.parametrize("width", [0.5, 1.0])
def test_under_the_random_schedule_noise_magnitude_and_cabs_are_constant_sgds_at_its_noise_step(
        width):
    """The ``random`` schedule writes η·α, α ~ U[1 − w, 1 + w], into lr each step: both
    instruments take η⟨α²⟩/⟨α⟩ = η(1 + w²/3), not the draw the group holds, and their values
    are plain SGD's at that step (on random-lr-sgd times its own l⟨α²⟩/⟨α⟩, 2l/3: the draws are
    independent); a deterministic schedule, and the random one stepped at epoch ends (its
    draw holds for the epoch), leave the current lr the step. Float64."""
    from sgdlab.optim.protocols import CosineCyclicLR, RandomLR
    from sgdlab.optim.random_lr import RandomLRSGD

    model = _noise_problem()[0]
    params = list(model.parameters())
    noise_step = 0.3 * (1 + width**2 / 3)
    for opt, ratio in ((torch.optim.SGD(params, lr=0.3), 1.0),
                       (RandomLRSGD(params, lr=0.3), 2 / 3)):
        schedule = RandomLR(opt, width=width, seed=0)
        draw = opt.param_groups[0]["lr"]
        assert draw != pytest.approx(0.3 * (1 + width**2 / 3))    # the draw is not the step
        assert _noise_and_cabs(model, opt, schedule=schedule) == pytest.approx(
            _noise_and_cabs(model, torch.optim.SGD(params, lr=ratio * noise_step)), rel=1e-12)
        assert _noise_and_cabs(model, opt, schedule=schedule,
                               schedule_every="epoch") == pytest.approx(
            _noise_and_cabs(model, torch.optim.SGD(params, lr=ratio * draw)), rel=1e-12)
    opt = torch.optim.SGD(params, lr=0.3)
    cyclic = CosineCyclicLR(opt, period=3, steps_per_epoch=3)
    for _ in range(4):
        cyclic.step()
    current = opt.param_groups[0]["lr"]
    assert current == pytest.approx(0.45)                      # η [1 + cos(π/3)], τ = 1
    assert _noise_and_cabs(model, opt, schedule=cyclic) == pytest.approx(
        _noise_and_cabs(model, torch.optim.SGD(params, lr=current)), rel=1e-12)


def test_the_loop_gives_the_instruments_the_random_schedules_noise_step_from_step_0():
    """In a run under the ``random`` schedule (w = 1, SGD at η = 0.1) the instruments log at
    step 0 the values of direct calls at η(1 + w²/3) = 4η/3, whatever the draw of step 0."""
    from sgdlab.measure import batch_statistics
    from sgdlab.optim.protocols import RandomLR

    data = toy_dataset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    init = copy.deepcopy(model).eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = RandomLR(opt, width=1.0, seed=0)
    batch = build_instrument("batch_statistics", schedule=Schedule.at([0]), batch_size=12,
                             seed=3)
    noise = build_instrument("noise_magnitude", schedule=Schedule.at([0]), batch_size=8)
    res = train(model, nn.CrossEntropyLoss(), data, opt, schedule=schedule, epochs=1,
                batch_size=8, callbacks=[batch, noise], progress=False, max_steps=1)
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:12]
    ref = batch_statistics(init, nn.CrossEntropyLoss(), (data.x_train[idx], data.y_train[idx]),
                           lr=0.4 / 3)
    h = res.history
    assert h["batch/cabs_batch_size"][0][1] == pytest.approx(ref.cabs_batch_size, rel=1e-6)
    nm = noise_magnitude(init, nn.CrossEntropyLoss(), data.train, 0.4 / 3, 8)
    assert h["noise/noise_norm"][0][1] == pytest.approx(nm.noise_norm, rel=1e-6)


@pytest.mark.parametrize("name", ["noise_magnitude", "batch_statistics"])
def test_the_random_schedule_on_a_momentum_buffer_is_refused_before_step_0(name):
    """The ``random`` schedule's draw scales torch SGD's whole update, momentum buffer
    included (random-lr-sgd's multiply="step"): no constant step of the same noise here, so an
    instrument measuring at step 3 refuses it before the first step, naming the momentum."""
    from sgdlab.errors import ConfigError
    from sgdlab.optim.protocols import RandomLR

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    init = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ConfigError, match="random schedule with momentum 0.9"):
        train(model, nn.CrossEntropyLoss(), toy_dataset(), opt,
              schedule=RandomLR(opt, width=0.5, seed=0), epochs=1, batch_size=8,
              callbacks=[build_instrument(name, schedule=Schedule.at([3]))], progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), init.parameters()))


@pytest.mark.parametrize("name", ["noise_magnitude", "batch_statistics"])
def test_a_random_step_on_a_whole_momentum_buffer_is_refused_before_step_0(name):
    """random-lr-sgd with multiply="step" and μ > 0 has no constant step of the same noise
    here: an instrument measuring at step 3 refuses it before the first step, naming it."""
    from sgdlab.errors import ConfigError
    from sgdlab.optim.random_lr import RandomLRSGD

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    init = copy.deepcopy(model)
    opt = RandomLRSGD(model.parameters(), lr=0.1, momentum=0.9, multiply="step")
    with pytest.raises(ConfigError, match="multiply='step' and momentum 0.9"):
        train(model, nn.CrossEntropyLoss(), toy_dataset(), opt, epochs=1, batch_size=8,
              callbacks=[build_instrument(name, schedule=Schedule.at([3]))], progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), init.parameters()))


@pytest.mark.parametrize("optimizer, named", [("rmsprop", "rmsprop"), ("adam", "adam"),
                                              ("switch", "adam")])
def test_the_noise_magnitude_of_an_adaptive_optimizer_is_refused_and_its_batch_statistics_run(
        optimizer, named):
    """RMSprop's and Adam's step divides the gradient by a running root mean square: the
    noise magnitude sqrt(η Tr Σ / m) has no η for it, and the instrument measuring at step 3
    refuses it before the first step, naming it (a switch from Adam to RMSprop too: no step
    has an η); batch_statistics, most of whose statistics need no step, runs."""
    from sgdlab.errors import ConfigError
    from sgdlab.optim import build_optimizer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    init = copy.deepcopy(model)

    def run(name):
        opt = (build_optimizer("switch", model.parameters(), first="adam", second="rmsprop",
                               switch_step=2, first_hyper={"lr": 0.01},
                               second_hyper={"lr": 0.01}) if optimizer == "switch"
               else build_optimizer(optimizer, model.parameters(), lr=0.01))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return train(model, nn.CrossEntropyLoss(), toy_dataset(), opt, epochs=1,
                         batch_size=8, max_steps=3, progress=False,
                         callbacks=[build_instrument(name, schedule=Schedule.at([3]))])

    with pytest.raises(ConfigError, match=f"^optimizer {named}: its step divides"):
        run("noise_magnitude")
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), init.parameters()))
    assert [s for s, _ in run("batch_statistics").history["batch/norm_test"]] == [3]


def _float64_run(opt_of, callbacks, *, max_steps):
    """train() of a float64 4-6-3 tanh MLP on the toy data (batches of 8) with the optimizer
    ``opt_of(params)``: the result, the initial model, the trained one and the warnings."""
    data = toy_dataset().to(dtype=torch.float64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    init = copy.deepcopy(model).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = train(model, nn.CrossEntropyLoss(), data, opt_of(model.parameters()), epochs=1,
                    batch_size=8, callbacks=callbacks, progress=False, max_steps=max_steps)
    return res, data, init, model.eval(), [str(w.message) for w in caught
                                           if issubclass(w.category, RuntimeWarning)]


def test_under_adam_batch_statistics_logs_the_statistics_that_need_no_step_and_no_cabs():
    """Adam's step is no η times the gradient: the instrument logs every statistic that
    needs no step, equal to a direct call without lr (its fresh batch of step 0, float64),
    and no CABS, with one warning in a run of two measurements, naming the optimizer."""
    from sgdlab.measure import batch_statistics

    cb = build_instrument("batch_statistics", schedule=Schedule.at([0, 1]), batch_size=12,
                          seed=3)
    res, data, init, _, warned = _float64_run(
        lambda p: torch.optim.Adam(p, lr=0.01), [cb], max_steps=1)
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:12]
    ref = batch_statistics(init, nn.CrossEntropyLoss(), (data.x_train[idx], data.y_train[idx]),
                           lr=None).as_metrics()
    del ref["batch/cabs_batch_size"]            # NaN without lr
    h = res.history
    assert "batch/cabs_batch_size" not in h
    assert {k: h[k][0][1] for k in ref} == pytest.approx(ref, rel=1e-12)
    assert [s for s, _ in h["batch/norm_test"]] == [0, 1]
    assert len(warned) == 1
    assert "optimizer adam takes the steps from step 0" in warned[0]
    assert "batch/cabs_batch_size is left out" in warned[0]


def test_a_switch_from_rmsprop_to_sgd_is_measured_after_the_switch_at_sgds_step():
    """Zhu et al.'s RMSProp then SGD (switch at step 2): the instruments judge the optimizer
    that takes the next step. The noise magnitude logs nothing while RMSprop steps and, from
    step 2, plain SGD's sqrt(η Tr Σ / m) at the second optimizer's lr (a direct call on the
    trained model, float64); batch_statistics logs CABS from step 2 only, its other
    statistics at every step; one warning each."""
    from sgdlab.optim import build_optimizer

    steps = Schedule.at([0, 1, 2, 3])
    noise = build_instrument("noise_magnitude", schedule=steps, batch_size=8)
    batch = build_instrument("batch_statistics", schedule=steps, batch_size=12)
    res, data, _, model, warned = _float64_run(
        lambda p: build_optimizer("switch", p, first="rmsprop", second="sgd", switch_step=2,
                                  first_hyper={"lr": 0.01}, second_hyper={"lr": 0.05}),
        [noise, batch], max_steps=3)
    h = res.history
    assert [s for s, _ in h["noise/noise_norm"]] == [2, 3]
    assert [s for s, _ in h["noise/grad_norm"]] == [2, 3]
    ref = noise_magnitude(model, nn.CrossEntropyLoss(), data.train, 0.05, 8)
    assert h["noise/noise_norm"][-1][1] == pytest.approx(ref.noise_norm, rel=1e-10)
    assert h["noise/grad_norm"][-1][1] == pytest.approx(ref.grad_norm, rel=1e-10)
    assert [s for s, _ in h["batch/cabs_batch_size"]] == [2, 3]
    assert [s for s, _ in h["batch/norm_test"]] == [0, 1, 2, 3]
    assert len(warned) == 2
    assert all("optimizer rmsprop takes the steps from step 0" in w for w in warned)


def test_a_switch_under_trivialized_is_judged_by_its_phases_not_refused():
    """trivialized shares its base's groups: with a switch from RMSprop to SGD as its base,
    the noise magnitude is measured from the switch on (SGD's η), not refused before step 0
    as if RMSprop took every step."""
    from sgdlab.optim import build_optimizer

    noise = build_instrument("noise_magnitude", schedule=Schedule.at([0, 1, 2, 3]),
                             batch_size=8)
    res, *_ = _float64_run(
        lambda p: build_optimizer("trivialized", p, base="switch", first="rmsprop",
                                  second="sgd", switch_step=2, first_hyper={"lr": 0.01},
                                  second_hyper={"lr": 0.05}, p=3, num_spins=10),
        [noise], max_steps=3)
    assert [s for s, _ in res.history["noise/noise_norm"]] == [2, 3]


def test_the_alignment_instrument_logs_the_trace_ratio_when_asked():
    from sgdlab.train.instruments.noise import AlignmentCallback

    model, data = _noise_problem()
    out = AlignmentCallback(Schedule.every(1), k=1, trace_alignment=True).compute(
        _measuring_context(model), data, torch.Generator().manual_seed(0))
    assert math.isfinite(out["align/trace_ratio"]) and "align/trace_h_sigma" in out


def test_the_alignment_instrument_refuses_more_eigenpairs_than_sigma_has():
    """Σ of N examples has at most min(N, d) eigenpairs: k = 7 on an evaluation set of 6 is
    refused when the run is checked, before training."""
    from sgdlab.train.instruments.noise import AlignmentCallback

    model, (x, y) = _noise_problem()
    data = SimpleNamespace(x_train=x, y_train=y)
    cb = AlignmentCallback(Schedule.every(1), k=7, eval_subset=None)
    with pytest.raises(ValueError, match=r"Invalid k=7 \(at most min\(N, d\) = 6"):
        cb.check(model, data)
    AlignmentCallback(Schedule.every(1), k=6, eval_subset=None).check(model, data)


def _at_step(model, x, y, step, **kw):
    """A loop's context at ``step`` whose training set is (x, y)."""
    return _measuring_context(model, data=SimpleNamespace(x_train=x, y_train=y), step=step, **kw)


def test_the_hessian_instrument_logs_the_measurements_called_by_hand_at_that_step():
    """Each option reaches its measurement: the logged values are lanczos (top k, bottom),
    hutchinson_trace (trace_probes) and frobenius_norm (frobenius_probes) of the Hessian called
    by hand, in that order, on one generator seeded seed + step, with the instrument's tol,
    num_iter and block_size."""
    from sgdlab.measure.curvature import frobenius_norm, hutchinson_trace, lanczos
    from sgdlab.operators import curvature_operator

    model, (x, y) = _noise_problem()                            # d = 26, float64
    loss = nn.CrossEntropyLoss()
    cb = build_instrument("hessian", every=1, k=2, bottom=1, trace_probes=3,
                          frobenius_probes=5, tol=1e-8, num_iter=26, seed=4, block_size=2,
                          eval_subset=None)
    got = cb._measure(_at_step(model, x, y, 3))
    g = torch.Generator().manual_seed(4 + 3)
    op = curvature_operator("hessian", model, loss, (x, y))
    top, _ = lanczos(op, 2, tol=1e-8, num_iter=26, generator=g)
    bottom, _ = lanczos(op, 1, which="smallest", tol=1e-8, num_iter=26, generator=g)
    tr = hutchinson_trace(op, 3, generator=g, block_size=2)
    fro = frobenius_norm(op, 5, generator=g, block_size=2).value
    assert got == {"hess/top_1": float(top[0]), "hess/top_2": float(top[1]),
                   "hess/bottom_1": float(bottom[0]), "hess/trace": tr.value,
                   "hess/trace_se": tr.stderr, "hess/frobenius": fro}
    # the trace's probe count is its own (3), not the Frobenius norm's (5): the estimates of
    # a non-diagonal H differ
    g = torch.Generator().manual_seed(7)
    lanczos(op, 2, tol=1e-8, num_iter=26, generator=g)
    lanczos(op, 1, which="smallest", tol=1e-8, num_iter=26, generator=g)
    assert hutchinson_trace(op, 5, generator=g, block_size=2).value != got["hess/trace"]


def test_the_hessian_instruments_probe_block_counts_a_conv_nets_activations():
    """With no block_size the trace and Frobenius probes go in blocks of the operator's memory
    bound, which for a convolutional net counts the Taylor pass's activations per probe:
    8 (4d + 4 w N) bytes, d = 119 parameters, w = 2·4·4 + 3 = 35 outputs of the weighted
    layers per example, N = 10 examples (float64). A budget of 3 such probes gives blocks of 3
    (the parameters alone, 4d·8 bytes, would allow 11; CPU's default cap is 16)."""
    import sgdlab.train.instruments.curvature as inst
    from sgdlab.operators.linear import LinearOperator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(),
                          nn.Linear(32, 3)).double()
    x = torch.randn(10, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    per_probe = 8 * (4 * 119 + 4 * 35 * 10)
    assert sum(p.numel() for p in model.parameters()) == 119
    blocks = []

    def spy(name):
        real = getattr(inst, name)

        def call(*args, **kw):
            blocks.append((name, kw["block_size"]))
            return real(*args, **kw)
        return call

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LinearOperator, "probe_memory_budget", 3 * per_probe + per_probe // 2)
        for name in ("hutchinson_trace", "frobenius_norm"):
            mp.setattr(inst, name, spy(name))
        cb = build_instrument("hessian", every=1, k=0, trace_probes=4, frobenius_probes=4,
                              eval_subset=None)
        out = cb._measure(_at_step(model, x, y, 0))
    assert blocks == [("hutchinson_trace", 3), ("frobenius_norm", 3)]
    assert math.isfinite(out["hess/trace"]) and math.isfinite(out["hess/frobenius"])


def test_the_noise_instrument_measures_the_model_in_eval_mode_and_takes_k_0_and_rank_false():
    """By default Σ is that of the model in eval mode (dropout off: per-sample gradients by
    hand on the eval-mode model, float64), whatever mode the loop left it in; ``k: 0`` logs no
    eigenvalue and ``rank: false`` no rank, the trace still."""
    from sgdlab.train.instruments.noise import NoiseCallback

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.5), nn.Linear(4, 2)).double()
    x, y = tiny_classification(n=6, seed=1)
    sigma = covariance_reference(per_sample_gradients_loop(
        model.eval(), nn.CrossEntropyLoss(), (x, y)))
    model.train()
    out = build_instrument("noise", every=1, k=2, eval_subset=None)._measure(
        _at_step(model, x, y, 0))
    assert out["noise/trace"] == pytest.approx(float(torch.trace(sigma)), rel=1e-10)
    assert out["noise/top_1"] == pytest.approx(float(torch.linalg.eigvalsh(sigma)[-1]),
                                               rel=1e-10)
    out = NoiseCallback(every=1, k=0, rank=False).compute(_measuring_context(model.eval()),
                                                          (x, y), torch.Generator())
    assert set(out) == {"noise/trace", "noise/mean_eig"}
    assert build_instrument("noise", every=1, k=0, rank=False).rank is False


def test_the_sharpness_instrument_logs_the_measurements_called_by_hand_at_that_step(
        monkeypatch):
    """sigma, num_samples, epsilon, gamma and beta, given to build_instrument, reach
    expected_sharpness, epsilon_sharpness and local_entropy, called by hand in that order on
    one generator seeded seed + step (float64)."""
    import functools

    import sgdlab.train.instruments.curvature as inst
    from sgdlab.measure.sharpness import expected_sharpness, local_entropy

    # the ascent's steps cut from 20 to 2, in the instrument and by hand: a faster test
    epsilon_sharpness = functools.partial(inst.epsilon_sharpness, num_steps=2)
    monkeypatch.setattr(inst, "epsilon_sharpness", epsilon_sharpness)
    model, (x, y) = _noise_problem()
    loss = nn.CrossEntropyLoss()
    cb = build_instrument("sharpness", every=1, sigma=0.05, num_samples=3, epsilon=0.02,
                          gamma=0.3, beta=2.5, seed=5, eval_subset=None)
    got = cb._measure(_at_step(model, x, y, 2))
    g = torch.Generator().manual_seed(5 + 2)
    est = expected_sharpness(model, loss, (x, y), 0.05, 3, generator=g)
    eps = epsilon_sharpness(model, loss, (x, y), 0.02, generator=g).sharpness
    width = local_entropy(model, loss, (x, y), 0.3, beta=2.5, num_samples=3,
                          generator=g).width
    assert got == {"sharpness/expected": est.value, "sharpness/expected_se": est.stderr,
                   "sharpness/epsilon": eps, "sharpness/local_entropy": width}


def test_the_sharpness_instrument_takes_sigma_0_and_gamma_0_the_unperturbed_loss():
    """sigma = 0 and gamma = 0 are allowed (">= 0"): no perturbation, so the expected
    sharpness E[L(θ + 0)] − L(θ) is 0 and the local-entropy width −f_0 is −L(θ)."""
    model, (x, y) = _noise_problem()
    got = build_instrument("sharpness", every=1, sigma=0, num_samples=2, gamma=0,
                           eval_subset=None)._measure(_at_step(model, x, y, 0))
    with torch.no_grad():
        loss = float(nn.CrossEntropyLoss()(model(x), y))
    assert got["sharpness/expected"] == pytest.approx(0.0, abs=1e-12)
    assert got["sharpness/local_entropy"] == pytest.approx(-loss, rel=1e-12)


def test_the_alignment_instrument_logs_the_measurement_called_by_hand_at_that_step(
        monkeypatch):
    """k, num_probes, tol, num_iter and trace_alignment reach sigma_hessian_alignment, called
    by hand with the generator seed + step (‖H‖_F and Tr H from probes: exact only above
    d = 0 here, so num_probes counts)."""
    import sgdlab.measure.alignment as alignment
    from sgdlab.measure.alignment import sigma_hessian_alignment

    monkeypatch.setattr(alignment, "EXACT_FROBENIUS_MAX_DIM", 0)
    model, (x, y) = _noise_problem()
    loss = nn.CrossEntropyLoss()
    cb = build_instrument("alignment", every=1, k=2, num_probes=3, tol=1e-6, num_iter=20,
                          trace_alignment=True, seed=1, eval_subset=None)
    got = cb._measure(_at_step(model, x, y, 4))

    def by_hand(num_probes):
        return sigma_hessian_alignment(model, loss, (x, y), 2, num_probes=num_probes, tol=1e-6,
                                       num_iter=20, trace_alignment=True,
                                       generator=torch.Generator().manual_seed(1 + 4))
    assert got == by_hand(3).as_metrics("align")
    assert got["align/trace_ratio"] != by_hand(20).as_metrics("align")["align/trace_ratio"]


def test_the_alignment_instruments_centred_false_measures_eq_6s_second_moment():
    """``centred: false`` reaches sigma_hessian_alignment: H against the uncentred E[g gᵀ]
    (Zhu et al.'s eq. (6)) in place of eq. (3)'s Σ, called by hand at that step."""
    from sgdlab.measure.alignment import sigma_hessian_alignment

    model, (x, y) = _noise_problem()
    loss = nn.CrossEntropyLoss()

    def measured(**options):
        cb = build_instrument("alignment", every=1, k=2, seed=1, eval_subset=None, **options)
        return cb._measure(_at_step(model, x, y, 4))

    def by_hand(centred):
        return sigma_hessian_alignment(model, loss, (x, y), 2, num_probes=20, tol=1e-3,
                                       centred=centred,
                                       generator=torch.Generator().manual_seed(1 + 4))
    got = measured(centred=False)
    assert got == by_hand(False).as_metrics("align")
    assert got["align/sigma_norm_eig_1"] != measured()["align/sigma_norm_eig_1"]


def test_the_batch_statistics_instrument_logs_the_measurements_called_by_hand():
    """On the step's batch: batch_statistics with the instrument's epsilon (and no lr where the
    step's is 0: no CABS size from a zero step) and takeuchi_information with its tic
    curvature, called by hand (float64)."""
    from sgdlab.measure.batch_statistics import batch_statistics, takeuchi_information

    model, (x, y) = _noise_problem()
    loss = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    cb = build_instrument("batch_statistics", every=1, source="step", epsilon=1e-3,
                          tic="ggn", prefix="b")
    got = cb._measure(_at_step(model, x, y, 1, batch=(x, y), optimizer=opt))
    ref = batch_statistics(model, loss, (x, y), lr=None, epsilon=1e-3).as_metrics("b")
    tic = takeuchi_information(model, loss, (x, y), curvature="ggn")
    assert got == {**ref, "b/tic_diagonal": tic.diagonal, "b/tic_trace": tic.trace}
    assert ref != batch_statistics(model, loss, (x, y), lr=None).as_metrics("b")
    assert tic.trace != takeuchi_information(model, loss, (x, y), curvature="hessian").trace


@pytest.mark.parametrize("name, options, says", [
    ("noise", {"eval_subset": 2.5}, "Invalid eval_subset=2.5 (an int >= 1, or None"),
    ("hessian", {"eval_subset": True}, "Invalid eval_subset=True (an int >= 1"),
    ("hessian", {"seed": 1.5}, "Invalid seed=1.5 (an int in 0..2**32 - 1"),
    ("batch_statistics", {"batch_size": 2.5}, "Invalid batch_size=2.5 (an int >= 2)"),
    ("batch_statistics", {"epsilon": math.nan}, "Invalid epsilon=nan (a finite number >= 0)"),
    ("batch_statistics", {"epsilon": "0.1"}, "Invalid epsilon='0.1' (a finite number >= 0)"),
    ("sharpness", {"sigma": math.inf}, "Invalid sigma=inf (must be a finite number)"),
    ("sharpness", {"epsilon": math.inf}, "Invalid epsilon=inf (must be a finite number)"),
    ("sharpness", {"gamma": math.inf}, "Invalid gamma=inf (must be a finite number)"),
    ("sharpness", {"beta": math.inf}, "Invalid beta=inf (must be a finite number)"),
    ("sharpness", {"sigma": True}, "Invalid sigma=True (must be a finite number)"),
    ("hessian", {"k": True}, "Invalid k=True (an int >= 0)"),
    # an on/off option read by truth: "no" and 0.5 were on
    ("noise", {"rank": "no"}, "rank must be True or False, got 'no'"),
    ("noise", {"rank": 1}, "rank must be True or False, got 1"),
    ("alignment", {"trace_alignment": "no"}, "trace_alignment must be True or False, got 'no'"),
    ("alignment", {"centred": "no"}, "centred must be True or False, got 'no'"),
    ("noise", {"check_copies": "no"}, "check_copies must be True or False, got 'no'"),
    ("alignment", {"check_copies": 1}, "check_copies must be True or False, got 1"),
    ("hessian", {"eval_mode": "no"}, "eval_mode must be True or False, got 'no'"),
    ("noise", {"eval_mode": 0.5}, "eval_mode must be True or False, got 0.5"),
    ("entropy_angle", {"gamma": 1.0, "eval_mode": None},
     "eval_mode must be True or False, got None"),
    # inf: Lanczos stops at its first iterate and calls it converged
    ("hessian", {"tol": math.inf},
     "Invalid tol=inf (a finite number >= 0; 0 runs num_iter steps)"),
    ("hessian", {"tol": math.nan},
     "Invalid tol=nan (a finite number >= 0; 0 runs num_iter steps)"),
    ("hessian", {"tol": -1e-3},
     "Invalid tol=-0.001 (a finite number >= 0; 0 runs num_iter steps)"),
    ("alignment", {"tol": math.inf},
     "Invalid tol=inf (a finite number >= 0; 0 runs num_iter steps)"),
    ("dynamics", {"hessian_tol": math.inf},
     "Invalid hessian_tol=inf (a finite number >= 0; 0 runs hessian_iter steps)")])
def test_options_the_measurement_cannot_take_are_refused_when_built(name, options, says):
    """Each was accepted by the instrument and failed its first measurement, after the steps
    before it: a fraction as a count or a seed ("slice indices must be integers",
    "manual_seed expected a long"), inf where the measurement wants a finite number
    (expected_sharpness, epsilon_sharpness, local_entropy refuse it), a bool as a number."""
    with pytest.raises(ValueError, match=re.escape(says)):
        build_instrument(name, every=1, **options)


def test_numpy_bools_are_taken_as_the_flags_they_are():
    """numpy's bool_ (a mask's element, a config built with numpy) is a bool: taken, and
    stored as Python's."""
    noise = build_instrument("noise", every=1, rank=np.bool_(False), eval_mode=np.bool_(True))
    align = build_instrument("alignment", every=1, trace_alignment=np.bool_(True))
    assert (noise.rank, noise.eval_mode, align.trace_alignment) == (False, True, True)
    assert all(type(v) is bool for v in (noise.rank, noise.eval_mode, align.trace_alignment))


# each instrument's options at values other than their defaults (source="step" refuses a
# batch_size: batch_statistics has two rows), with the attribute value where it is converted
OPTION_ROWS = [
    ("hessian", dict(k=3, bottom=2, trace_probes=4, frobenius_probes=5, operator="ggn",
                     tol=0.01, eval_subset=7, eval_mode=False, seed=9, prefix="h2",
                     block_size=3, num_iter=40, check_copies=True), {}),
    ("sharpness", dict(sigma=0.2, num_samples=3, epsilon=0.5, gamma=0.25, beta=3.0,
                       eval_subset=7, eval_mode=False, seed=9, memory_budget="4KiB"),
     {"memory_budget": 4096}),
    ("noise", dict(k=2, rank=False, eval_subset=7, eval_mode=False, seed=9,
                   check_copies=True), {}),
    ("alignment", dict(k=2, num_probes=3, tol=0.01, trace_alignment=True, eval_subset=7,
                       eval_mode=False, seed=9, num_iter=30, centred=False,
                       check_copies=True), {}),
    ("noise_magnitude", dict(batch_size=3, replacement=False, eval_subset=7,
                             eval_mode=False, seed=9), {}),
    ("batch_statistics", dict(batch_size=3, epsilon=0.5, tic="hessian", curvature="ggn",
                              prefix="b2", eval_subset=7, eval_mode=False, seed=9), {}),
    ("batch_statistics", dict(source="step"), {}),
    ("entropy_angle", dict(gamma=0.3, beta=2.0, method="importance", steps=3, inner_lr=0.2,
                           alpha=0.5, batch_size=4, sgd_gradient="full", num_samples=5,
                           memory_budget="4KiB", prefix="ea", eval_subset=7,
                           eval_mode=False, seed=9), {"memory_budget": 4096}),
    ("min_abs_grad", dict(layers=["0.weight"], prefix="m2", over="weights"),
     {"layers": ("0.weight",)}),
    ("field_alignment", dict(prefix="f2"), {}),
    ("trajectory", dict(path="t", every_steps=3, every_epochs=2, num_coords=4, seed=9,
                        dtype="float64"), {})]


def test_the_option_table_lists_every_option_of_every_instrument():
    from sgdlab.train.instruments import instrument_params

    covered = {}
    for name, options, _ in OPTION_ROWS:
        covered.setdefault(name, set()).update(options)
    for name in ("hessian", "sharpness", "noise", "alignment", "noise_magnitude",
                 "batch_statistics", "entropy_angle", "min_abs_grad", "field_alignment",
                 "trajectory"):
        assert name in instruments() and covered[name] == set(instrument_params(name)), name


@pytest.mark.parametrize("name, options, attrs", OPTION_ROWS)
def test_every_option_given_to_build_instrument_reaches_its_callback(name, options, attrs):
    """Each option, at a value other than its default, is the callback's (its factory passed
    it on, by its own name: a factory that dropped one left the default in its place); the
    table lists every option each factory takes."""
    schedule = {} if name == "trajectory" else {"every": 2}
    cb = build_instrument(name, **schedule, **options)
    for key, value in options.items():
        assert getattr(cb, key) == attrs.get(key, value), key


def test_an_instrument_taking_any_keyword_gets_every_option(monkeypatch):
    """A factory with ``**kwargs`` (a plugin's) has no option list: build_instrument passes
    what it is given, refusing nothing as unknown."""
    from sgdlab.train import instruments as registry
    from sgdlab.train.instruments import instrument_params

    seen = {}

    def anything(*, schedule, **kw):
        seen.update(kw)
        return MeasurementCallback(lambda ctx: {}, schedule)

    monkeypatch.setitem(registry.INSTRUMENTS, "anything", anything)
    assert instrument_params("anything") is None
    build_instrument("anything", every=1, depth=3, label="x")
    assert seen == {"depth": 3, "label": "x"}


def test_fresh_batches_may_take_the_whole_evaluation_set_and_no_more():
    """batch_size = N, the whole pool fresh batches are drawn from, passes the run's check;
    N + 1 is refused, naming N."""
    model, (x, y) = _noise_problem()                    # N = 6
    data = SimpleNamespace(x_train=x, y_train=y)
    build_instrument("batch_statistics", every=1, batch_size=6).check(model, data)
    with pytest.raises(ValueError, match=r"Invalid batch_size=7 \(fresh batches are drawn "
                                         r"from N = 6 examples"):
        build_instrument("batch_statistics", every=1, batch_size=7).check(model, data)


def test_the_alignment_instrument_refuses_fewer_lanczos_iterations_than_pairs():
    """num_iter below k would give fewer Krylov vectors than the k eigenpairs asked for:
    refused when built; num_iter = k is taken."""
    with pytest.raises(ValueError, match=re.escape("Invalid num_iter=2 (an int >= k (3))")):
        build_instrument("alignment", every=1, k=3, num_iter=2)
    assert build_instrument("alignment", every=1, k=3, num_iter=3).num_iter == 3


# the integer types a count arrives as from numpy (a grid's values) or torch
_INT_KINDS = pytest.mark.parametrize("make", [np.int64, np.int32, torch.tensor],
                                     ids=["np.int64", "np.int32", "torch"])


@_INT_KINDS
def test_numpy_and_torch_ints_are_counts_and_seeds_and_measure_as_python_ints(make):
    """A count computed with numpy or torch (``np.int64(12)`` from ``np.geomspace(...)
    .astype(int)``) is an int: the int check of eval_subset and batch_size refused it, though
    the measurement took it, and a numpy seed failed the first measurement (``manual_seed``:
    "an integer is required"). Kept as Python ints, the run logs what the ints give."""
    def run(**options):
        cb = build_instrument("batch_statistics", schedule=Schedule.at([0, 2]), **options)
        return cb, _train_toy([cb])[1].history["batch/norm_test"]

    cb, got = run(batch_size=make(12), eval_subset=make(30), seed=make(3))
    assert (cb.batch_size, cb.eval_subset, cb.seed) == (12, 30, 3)
    assert {type(v) for v in (cb.batch_size, cb.eval_subset, cb.seed)} == {int}
    _, want = run(batch_size=12, eval_subset=30, seed=3)
    assert got == want and len(got) == 2
    hess = build_instrument("hessian", every=1, eval_subset=make(5), seed=make(7))
    assert (hess.eval_subset, hess.seed) == (5, 7)


@pytest.mark.parametrize("value", [np.bool_(True), torch.tensor(True), np.float64(4.0),
                                   torch.tensor(4.0), torch.tensor([4, 5])],
                         ids=["np.bool_", "torch bool", "np.float64", "torch float", "2 ints"])
def test_bools_floats_and_tensors_of_several_ints_stay_refused_as_counts(value):
    for key in ("eval_subset", "seed", "batch_size"):
        with pytest.raises(ValueError, match=f"Invalid {key}="):
            build_instrument("batch_statistics", every=1, **{key: value})


def test_numpy_floats_are_sharpness_parameters():
    """``np.float32(0.01)`` as sigma (epsilon, gamma, beta) is measured as 0.01 is
    (expected_sharpness takes it); the finite-number check refused it as "must be a finite
    number". Kept as a Python float; numpy's inf and a bool stay refused."""
    cb = build_instrument("sharpness", every=1, sigma=np.float32(0.25), epsilon=np.float32(1),
                          gamma=np.float64(0.5), beta=np.float32(2))
    assert (cb.sigma, cb.epsilon, cb.gamma, cb.beta) == (0.25, 1.0, 0.5, 2.0)
    assert {type(v) for v in (cb.sigma, cb.epsilon, cb.beta)} == {float}   # (np.float64 is)
    for bad, says in ((np.float32("inf"), "Invalid sigma=inf (must be a finite number)"),
                      (np.bool_(True), "Invalid sigma=np.True_ (must be a finite number)")):
        with pytest.raises(ValueError, match=re.escape(says)):
            build_instrument("sharpness", every=1, sigma=bad)


def test_tol_0_runs_num_iter_lanczos_steps_in_the_hessian_and_alignment_instruments():
    """tol = 0 is Lanczos' "never stop early" (it runs num_iter steps), which these
    instruments refused as other Lanczos callers (dynamics' hessian_tol, hessian_top) take it:
    on the float64 MLP (d = 26) with num_iter = d, the eigenvalues are those of a small tol
    and of the dense Hessian, to round-off."""
    from sgdlab.train.instruments.curvature import HessianCallback
    from sgdlab.train.instruments.noise import AlignmentCallback

    model, data = _noise_problem()
    ctx = _measuring_context(model)
    exact = torch.linalg.eigvalsh(dense_hessian_reference(model, nn.CrossEntropyLoss(), data))

    def measured(cls, tol, **kw):
        return cls(every=1, tol=tol, num_iter=26, **kw).compute(
            ctx, data, torch.Generator().manual_seed(0))

    hess = {tol: measured(HessianCallback, tol, k=2, bottom=1) for tol in (0, 1e-12)}
    assert hess[0] == pytest.approx(hess[1e-12], rel=1e-9, abs=1e-12)
    assert [hess[0]["hess/top_1"], hess[0]["hess/top_2"], hess[0]["hess/bottom_1"]] == (
        pytest.approx([float(exact[-1]), float(exact[-2]), float(exact[0])], abs=1e-10))
    align = {tol: measured(AlignmentCallback, tol, k=2, num_probes=2) for tol in (0, 1e-12)}
    assert align[0] == pytest.approx(align[1e-12], rel=1e-9, abs=1e-12)
    assert align[0]["align/hess_norm_eig_1"] > 0


def test_a_numpy_float_tolerance_is_a_tolerance():
    """``np.float32(1e-3)`` as the Lanczos tol is a finite number >= 0 (lanczos takes it),
    kept as a Python float; numpy's inf is not."""
    assert build_instrument("hessian", every=1, tol=np.float32(1e-3)).tol == np.float32(1e-3)
    assert type(build_instrument("hessian", every=1, tol=np.float32(1e-3)).tol) is float
    assert build_instrument("alignment", every=1, tol=np.float32(1e-3)).tol == np.float32(1e-3)
    says = "Invalid tol=inf (a finite number >= 0"
    with pytest.raises(ValueError, match=re.escape(says)):
        build_instrument("hessian", every=1, tol=np.float32("inf"))


_INT_OPTIONS = [  # (instrument, option, value, other options, where the built one keeps it)
    ("hessian", "k", 2, {}, "k"), ("hessian", "bottom", 1, {}, "bottom"),
    ("hessian", "trace_probes", 3, {}, "trace_probes"),
    ("hessian", "frobenius_probes", 3, {}, "frobenius_probes"),
    ("hessian", "num_iter", 4, {}, "num_iter"), ("hessian", "block_size", 2, {}, "block_size"),
    ("sharpness", "num_samples", 5, {}, "num_samples"), ("noise", "k", 2, {}, "k"),
    ("alignment", "k", 2, {}, "k"), ("alignment", "num_probes", 3, {}, "num_probes"),
    ("alignment", "num_iter", 6, {}, "num_iter"),
    ("noise_magnitude", "batch_size", 8, {}, "batch_size"),
    ("entropy_angle", "steps", 3, {"gamma": 0.1}, "steps"),
    ("entropy_angle", "batch_size", 4, {"gamma": 0.1}, "batch_size"),
    ("entropy_angle", "num_samples", 6, {"gamma": 0.1}, "num_samples"),
    ("dynamics", "hessian_iter", 7, {}, None), ("dynamics", "full_grad_every", 3, {}, None),
    ("dynamics", "hessian_every", 3, {}, None)]


@_INT_KINDS
@pytest.mark.parametrize("name, option, value, other, attr", _INT_OPTIONS,
                         ids=[f"{n}.{o}" for n, o, *_ in _INT_OPTIONS])
def test_every_int_option_of_the_instruments_takes_numpy_and_torch_ints(
        make, name, option, value, other, attr):
    """The int checks (``int_at_least``) refused ``np.int64(5)`` ("Invalid k=np.int64(5)
    (an int >= 0)") where eval_subset, seed and batch_statistics' batch_size took it: every
    count is taken the same way and kept as a Python int; a float of the same value and a
    bool stay refused."""
    cb = build_instrument(name, every=1, **other, **{option: make(value)})
    if attr is not None:
        got = getattr(cb, attr)
        assert got == value and type(got) is int
    elif option == "hessian_iter":
        assert cb.hessian_kw["num_iter"] == value and type(cb.hessian_kw["num_iter"]) is int
    else:       # a period: the schedule fires every `value` steps
        sched = cb.full_grad_schedule if option == "full_grad_every" else cb.hessian_schedule
        assert [s for s in range(7) if sched(s)] == [0, 3, 6]
    for bad in (np.float64(value), np.bool_(True)):
        with pytest.raises(ValueError, match=f"Invalid {option}="):
            build_instrument(name, every=1, **other, **{option: bad})


@pytest.mark.parametrize("name", ["hessian", "noise", "dynamics"])
def test_an_instrument_seed_is_a_run_configs_seed_checked_at_its_bounds(name):
    """The generator of the measurement at step s is seeded with seed + s, which torch takes
    below 2**64: seed = 2**64 was taken, then failed the first measurement ("Overflow when
    unpacking long long"). Refused when built, with the range a run config's seed has."""
    for ok in (0, 2**32 - 1, np.uint32(2**32 - 1)):
        assert build_instrument(name, every=1, seed=ok).seed == ok
    for bad in (-1, 2**32, 2**64, True):
        with pytest.raises(ValueError, match=re.escape(
                f"Invalid seed={bad!r} (an int in 0..2**32 - 1, as a run config's seed: the "
                "measurement at step s seeds its generator with seed + s)")):
            build_instrument(name, every=1, seed=bad)


def test_the_largest_instrument_seed_measures_late_in_a_run():
    """seed + step of the largest seed is a seed torch takes (the measurement runs)."""
    from sgdlab.train.callbacks import step_generator

    ctx = SimpleNamespace(model=nn.Linear(2, 1), step=10**9)
    g = step_generator(ctx, 2**32 - 1)
    assert g.initial_seed() == 2**32 - 1 + 10**9


def test_numpy_floats_and_bools_are_taken_by_every_instrument_that_takes_floats_and_bools():
    """Like sharpness's scales and the Lanczos tol: entropy_angle's gamma / beta / inner_lr /
    alpha, dynamics' hessian_tol (numpy floats) and noise_magnitude's replacement (numpy's
    bool) are taken, kept as Python values; numpy's inf stays refused where inf is."""
    cb = build_instrument("entropy_angle", every=1, gamma=np.float32(0.5), beta=np.float32(2),
                          inner_lr=np.float32(0.25), alpha=np.float32(0.5))
    assert (cb.gamma, cb.beta, cb.inner_lr, cb.alpha) == (0.5, 2.0, 0.25, 0.5)
    assert {type(v) for v in (cb.gamma, cb.beta, cb.inner_lr, cb.alpha)} == {float}
    with pytest.raises(ValueError, match=re.escape("Invalid gamma=inf")):
        build_instrument("entropy_angle", every=1, gamma=np.float32("inf"))
    build_instrument("dynamics", every=1, hessian_every=1, hessian_tol=np.float32(1e-3))
    with pytest.raises(ValueError, match=re.escape("Invalid hessian_tol=inf")):
        build_instrument("dynamics", every=1, hessian_every=1, hessian_tol=np.float32("inf"))
    nm = build_instrument("noise_magnitude", every=1, replacement=np.bool_(False))
    assert nm.replacement is False
    with pytest.raises(ValueError, match="^replacement must be True or False, got 'no'$"):
        build_instrument("noise_magnitude", every=1, replacement="no")


def test_the_hessian_instrument_passes_check_copies_to_its_top_and_bottom_k(monkeypatch):
    import sgdlab.train.instruments.curvature as inst

    asked = []

    def spy(*args, **kwargs):
        asked.append((kwargs.get("which", "largest"), kwargs.get("check_copies")))
        return real(*args, **kwargs)

    real = inst.lanczos
    monkeypatch.setattr(inst, "lanczos", spy)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    # numpy's bool is an on/off value as for the other flags, passed on as a Python bool
    for check in (True, False, np.bool_(True)):
        asked.clear()
        cb = build_instrument("hessian", schedule=Schedule.at([0]), k=2, bottom=1,
                              eval_subset=None, check_copies=check)
        res = train(model, nn.CrossEntropyLoss(), toy_dataset(),
                    torch.optim.SGD(model.parameters(), lr=0.0), epochs=1, batch_size=40,
                    callbacks=[cb], progress=False)
        assert asked == [("largest", check), ("smallest", check)]
        assert all(type(c) is bool for _, c in asked)
        assert "hess/top_2" in res.history and "hess/bottom_1" in res.history
    with pytest.raises(ValueError, match="check_copies must be True or False, got 'yes'"):
        build_instrument("hessian", every=1, check_copies="yes")


def test_the_noise_and_alignment_instruments_pass_check_copies_to_their_top_k(monkeypatch):
    """``check_copies`` reaches Σ's top-k (noise) and the Lanczos of H's and Σ's top-k
    (alignment), as the hessian instrument's reaches its own; off by default."""
    import sgdlab.measure.alignment as alignment
    from sgdlab.measure.noise import GradientCovariance

    asked = []
    spy = check_copies_recorder(asked)
    monkeypatch.setattr(alignment, "lanczos", spy("hessian", alignment.lanczos))
    monkeypatch.setattr(GradientCovariance, "eigenpairs",
                        spy("sigma", GradientCovariance.eigenpairs))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    for given in ({"check_copies": True}, {"check_copies": False}, {}):
        asked.clear()
        cbs = [build_instrument(name, schedule=Schedule.at([0]), k=2, eval_subset=None,
                                **given) for name in ("noise", "alignment")]
        res = train(model, nn.CrossEntropyLoss(), toy_dataset(),
                    torch.optim.SGD(model.parameters(), lr=0.0), epochs=1, batch_size=40,
                    callbacks=cbs, progress=False)
        check = given.get("check_copies", False)
        assert asked == [("sigma", check), ("sigma", check), ("hessian", check)]
        assert "noise/top_2" in res.history and "align/cos_2" in res.history
