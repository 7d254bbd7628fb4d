"""Trajectory spectra: white noise / Brownian motion vs a noisy periodic drift, Fisher's g null
distribution, and the on-disk recorder (write, reopen, subset, resume)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.data.base import Dataset
from sgdlab.measure.trajectory import (
    CONFIDENCE_Z_99,
    _fisher_p_value,
    brownian_reference,
    discard_burnin,
    fisher_g_test,
    increment_autocorrelation,
    increment_spectrum,
    increments,
    low_frequency_test,
    periodicity_test,
)
from sgdlab.store.trajectory import TrajectoryWriter, open_trajectory
from sgdlab.train.instruments.trajectory import TrajectoryRecorder
from sgdlab.train.loop import train

T, D, F0 = 257, 40, 0.125  # 256 increments; the drift has period 8 snapshots


def _brownian(seed=0):
    return np.cumsum(np.random.default_rng(seed).standard_normal((T, D)), axis=0)


def _periodic(seed=1, amp=2.0):
    rng = np.random.default_rng(seed)
    k = np.arange(T)[:, None]
    phases = rng.uniform(0, 2 * np.pi, D)
    return np.cumsum(rng.standard_normal((T, D)), 0) + amp * np.sin(2 * np.pi * F0 * k + phases)


def test_brownian_increments_look_white():
    x = _brownian()
    torch.testing.assert_close(increments(x), np.diff(x, axis=0))
    s = increment_spectrum(x)
    assert s.freqs[1] == pytest.approx(1 / 256) and s.freqs[-1] == 0.5
    # flat: E|FFT|/√n of unit white noise is √π/2 at every nonzero frequency (Rayleigh mean)
    assert s.mean[1:-1].mean() == pytest.approx(math.sqrt(math.pi) / 2, rel=0.03)
    assert s.mean[1:].max() < 1.5
    a = increment_autocorrelation(x, max_lag=20)
    assert a.band == pytest.approx(CONFIDENCE_Z_99 / math.sqrt(256))
    assert a.mean[0] == pytest.approx(1.0) and len(a.outside) == 0
    assert a.fraction_outside < 0.03  # ≈ 1% expected under the null
    t = periodicity_test(x)
    assert not t.periodic and t.combined_p_value > 0.01


def test_increment_spectrum_is_the_dft_of_the_centred_and_scaled_increments():
    """Against the definition written out: per coordinate |Σ_k c_k e^{−2πi j k/n}| / √n at
    j = 0..⌊n/2⌋ for the centred increments c (divided by their standard deviation with
    ``standardize``, as given without), then mean and std over coordinates of scales 1, 3
    and 0.5."""
    rng = np.random.default_rng(5)
    x = np.cumsum(rng.standard_normal((34, 3)) * [1.0, 3.0, 0.5] + [0.2, 0.0, -1.0], axis=0)
    d = np.diff(x, axis=0)
    n = len(d)
    arg = 2 * np.pi * np.outer(np.arange(n // 2 + 1), np.arange(n)) / n
    for standardize in (True, False):
        c = d - d.mean(0)
        if standardize:
            c = c / c.std(0)
        amp = np.hypot(np.cos(arg) @ c, np.sin(arg) @ c) / math.sqrt(n)
        s = increment_spectrum(x, standardize=standardize)
        np.testing.assert_allclose(s.freqs, np.arange(n // 2 + 1) / n)
        np.testing.assert_allclose(s.mean, amp.mean(1), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(s.std, amp.std(1), rtol=1e-10, atol=1e-12)


def test_periodic_drift_is_detected_at_its_frequency():
    x = _periodic()
    s = increment_spectrum(x)
    assert s.freqs[np.argmax(s.mean)] == pytest.approx(F0)
    assert s.mean.max() > 3 * np.median(s.mean)
    a = increment_autocorrelation(x, max_lag=16)
    # a period-8 oscillation: correlated at lag 8, anti-correlated at lag 4, outside the band
    assert a.mean[8] > a.band and a.mean[4] < -a.band
    assert a.fraction_outside > 0.5
    t = periodicity_test(x)
    assert t.periodic and t.dominant_frequency == pytest.approx(F0)
    assert t.fraction_significant > 0.9 and t.combined_p_value < 1e-10


def test_fisher_p_value_past_max_terms_is_the_bonferroni_bound_of_the_exact_sum():
    """Small g (more than max_terms terms): the first term m (1 − g)^(m−1) of Fisher's
    alternating sum, an upper bound within 2e-5 of the exact sum here (evaluated in
    rationals)."""
    from fractions import Fraction

    m, g = 200, Fraction(7, 100)                     # ⌊1/g⌋ = 14 > 12 terms
    exact = sum((-1) ** (j - 1) * math.comb(m, j) * (1 - j * g) ** (m - 1)
                for j in range(1, int(1 / g) + 1))
    p = _fisher_p_value(float(g), m)
    assert p == pytest.approx(m * 0.93 ** (m - 1), rel=1e-12)
    assert float(exact) <= p <= float(exact) * (1 + 2e-5)
    assert _fisher_p_value(0.01, 50) == 1.0          # the bound clipped at 1


def test_fisher_g_null_distribution():
    # m = 2 ordinates: P(g > x) = 2 (1 − x) for x ≥ 1/2 (g ~ max of a uniform split)
    assert _fisher_p_value(0.75, 2) == pytest.approx(0.5)
    assert _fisher_p_value(0.3, 5) == pytest.approx(5 * 0.7**4 - 10 * 0.4**4 + 10 * 0.1**4)
    # calibration on Gaussian white noise: the rejection rate at 5% is ≈ 5%
    rng = np.random.default_rng(0)
    _, p, _ = fisher_g_test(rng.standard_normal((64, 2000)))
    assert np.mean(p < 0.05) == pytest.approx(0.05, abs=0.015)
    with pytest.raises(ValueError, match="too short"):
        fisher_g_test(np.zeros((4, 2)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        increments(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        increment_spectrum(np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="moves"):
        periodicity_test(np.ones((20, 3)))
    with pytest.raises(ValueError, match="max_lag"):
        increment_autocorrelation(_brownian()[:10], max_lag=9)
    # a float lag was a TypeError as a slice bound; np.int64 is a lag
    with pytest.raises(ValueError, match=re.escape("Invalid max_lag=2.5 (an int >= 1, or None)")):
        increment_autocorrelation(_brownian()[:10], max_lag=2.5)
    assert increment_autocorrelation(_brownian()[:10], max_lag=np.int64(3)).lags.tolist() == [
        0, 1, 2, 3]
    with pytest.raises(ValueError, match=re.escape("Invalid fraction='0.1' (must be in")):
        low_frequency_test(_brownian(), fraction="0.1")
    # numpy's float32 is a level, as before the check (np.float64 is a Python float anyway)
    assert periodicity_test(_brownian(), level=np.float32(0.05)).combined_p_value == \
        pytest.approx(periodicity_test(_brownian(), level=0.05).combined_p_value, rel=1e-6)


def test_counts_and_seeds_take_numpy_ints_and_refuse_bools():
    """np.int64 counts and seeds are ints; True is no count (it was 1 snapshot discarded, 1
    coordinate, or numpy's "an integer is required"), -1 no seed."""
    ref = brownian_reference(6, 2, seed=1)
    np.testing.assert_array_equal(brownian_reference(np.int64(6), np.int64(2),
                                                     seed=np.int64(1)), ref)
    np.testing.assert_array_equal(discard_burnin(ref, np.int64(2)), ref[2:])
    for bad in ({"num_coords": True}, {"n": 6.0}):
        args = {"n": 6, "num_coords": 2, **bad}
        with pytest.raises(ValueError, match=re.escape(
                f"need ints n >= 2 and num_coords >= 1, got {args['n']!r}, "
                f"{args['num_coords']!r}")):
            brownian_reference(args["n"], args["num_coords"])
    with pytest.raises(ValueError, match=re.escape("Invalid seed=-1 (an int in 0..2**32 - 1")):
        brownian_reference(6, 2, seed=-1)
    with pytest.raises(ValueError, match=re.escape("Invalid burnin=True (a number of snaps")):
        discard_burnin(ref, True)


def test_writer_reader_round_trip_subset_and_partial_row(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((5, 100))
    w = TrajectoryWriter(tmp_path / "tr", 100, num_coords=10, seed=3)
    for i, r in enumerate(rows):
        w.append(torch.from_numpy(r), step=10 * i, epoch=i // 2)
    rd = open_trajectory(tmp_path / "tr")
    assert len(rd) == 5 and rd.snapshots.shape == (5, 10) and rd.snapshots.dtype == np.float32
    assert list(rd.steps) == [0, 10, 20, 30, 40] and list(rd.epochs) == [0, 0, 1, 1, 2]
    np.testing.assert_array_equal(rd.snapshots, rows[:, rd.coords].astype(np.float32))
    np.testing.assert_array_equal(rd.select(rd.coords[[4, 1]]),
                                  rows[:, rd.coords[[4, 1]]].astype(np.float32))
    with pytest.raises(Exception, match="not recorded"):
        rd.select([int(np.setdiff1d(np.arange(100), rd.coords)[0])])
    # a killed writer leaves a partial row: it is dropped on reopening, appends continue
    with open(tmp_path / "tr" / "snapshots.bin", "ab") as f:
        f.write(b"\x00" * 7)
    w2 = TrajectoryWriter(tmp_path / "tr", 100, num_coords=10, seed=3)
    assert w2.rows == 5
    w2.append(rows[0], 50, 3)
    rd = open_trajectory(tmp_path / "tr")
    assert len(rd) == 6 and (rd.steps[-1], rd.epochs[-1]) == (50, 3)
    np.testing.assert_array_equal(rd.snapshots[-1], rows[0, rd.coords].astype(np.float32))
    with pytest.raises(Exception, match="num_coords"):
        TrajectoryWriter(tmp_path / "tr", 100, num_coords=20, seed=3)
    # float16, all coordinates
    w3 = TrajectoryWriter(tmp_path / "h", 100, dtype="float16")
    w3.append(rows[0], 0)
    np.testing.assert_allclose(open_trajectory(tmp_path / "h").snapshots[0], rows[0],
                               rtol=1e-3, atol=1e-3)


def test_recorder_in_training_resumes_without_duplicates(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 2, (40,), generator=g)
    data = Dataset(x, y, x[:5], y[:5], {"name": "toy", "task": "classification",
                                        "num_outputs": 2})

    def run(path, ckpt, **kw):
        torch.manual_seed(0)
        model = nn.Linear(5, 2)
        rec = TrajectoryRecorder(path, every_steps=3, every_epochs=1, num_coords=7)
        train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=3, batch_size=8, callbacks=[rec], checkpoint_dir=ckpt, progress=False, **kw)
        return model

    model = run(tmp_path / "full", tmp_path / "c1")
    full = open_trajectory(tmp_path / "full")
    # step 0, every 3rd step, and the epoch ends (steps 5, 10; step 15 is a multiple of 3)
    assert list(full.steps) == [0, 3, 5, 6, 9, 10, 12, 15]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    np.testing.assert_allclose(full.snapshots[-1], flat[full.coords], rtol=1e-6)
    run(tmp_path / "part", tmp_path / "c2", max_steps=7)
    assert list(open_trajectory(tmp_path / "part").steps) == [0, 3, 5, 6]
    # a row a killed process recorded after the checkpoint: the resume drops it (redone)
    TrajectoryWriter(tmp_path / "part", len(flat), num_coords=7).append(
        torch.zeros(len(flat)), 9, 1)
    assert len(open_trajectory(tmp_path / "part")) == 5
    run(tmp_path / "part", tmp_path / "c2", resume=True)
    part = open_trajectory(tmp_path / "part")
    assert list(part.steps) == list(full.steps)
    np.testing.assert_array_equal(part.snapshots, full.snapshots)


def _train_recording(recorder, *, n, epochs):
    """nn.Linear(5, 2) trained by SGD (lr 0.1, batches of 5) on ``n`` seeded examples for
    ``epochs`` epochs, ``recorder`` its callback."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 5, generator=g), torch.randint(0, 2, (n,), generator=g)
    model = nn.Linear(5, 2)
    train(model, nn.CrossEntropyLoss(), Dataset(x, y), torch.optim.SGD(model.parameters(),
          lr=0.1), epochs=epochs, batch_size=5, callbacks=[recorder], progress=False)


def test_the_trajectory_instrument_is_built_by_its_own_cadence_alone(tmp_path):
    # build_instrument("trajectory", ...) demanded a step schedule (every=, at= or
    # schedule=) that the recorder then ignored; a run config refuses one
    from sgdlab.train.instruments import build_instrument

    rec = build_instrument("trajectory", path=tmp_path / "t", every_steps=2, every_epochs=None)
    _train_recording(rec, n=20, epochs=2)
    assert list(open_trajectory(tmp_path / "t").steps) == [0, 2, 4, 6, 8]
    for given, key in ((dict(every=2), "every"), (dict(at=[1]), "at")):
        with pytest.raises(ValueError, match=rf"keeps its own cadence \(every_steps / "
                                             rf"every_epochs\); {key} would be ignored"):
            build_instrument("trajectory", path=tmp_path / "u", every_steps=2, **given)


def test_which_coordinates_move_does_not_depend_on_their_units():
    """Three random walks at any scale, or at scales 1e7 and 1e-6 side by side, all count; a
    coordinate at rest and one moving by a constant step (a drift, no fluctuation) do not."""
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((200, 3)), axis=0)
    for scaled in (x * 1e-13, x * 1e-12, x * 1e7, x * [1e7, 1e-6, 1.0]):
        assert increment_spectrum(scaled).num_coords == 3
    rest, drift = np.full((200, 1), 0.3), 0.1 * np.arange(200.0)[:, None]
    assert increment_spectrum(np.hstack([x, rest, drift])).num_coords == 3


def test_fisher_g_refuses_non_finite_values():
    s = np.sin(2 * np.pi * 0.25 * np.arange(64))
    g, p, f = fisher_g_test(s)
    assert g[0] == pytest.approx(1.0) and p[0] < 1e-10 and f[0] == 0.25
    s[5] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        fisher_g_test(s)


def test_the_recorder_snapshots_every_k_epochs_at_the_end_of_the_kth(tmp_path):
    # 2 steps per epoch, every_epochs=2 over 4 epochs: step 0, then the ends of epochs 2 and 4
    # (labelled by the epochs completed); a fresh run at the same path starts the file again
    for _ in range(2):
        _train_recording(TrajectoryRecorder(tmp_path / "t", every_epochs=2), n=10, epochs=4)
        traj = open_trajectory(tmp_path / "t")
        assert list(traj.steps) == [0, 4, 8] and list(traj.epochs) == [0, 2, 4]


@pytest.mark.parametrize("options, says", [
    ({"every_steps": None, "every_epochs": None}, "needs every_steps or every_epochs"),
    ({"every_epochs": 0}, "Invalid every_epochs=0 (an int >= 1, or None)"),
    ({"every_steps": 0}, "Invalid every_steps=0 (an int >= 1, or None)"),
    ({"every_steps": True}, "Invalid every_steps=True (an int >= 1, or None)"),
    ({"num_coords": 0}, "Invalid num_coords=0 (an int >= 1"),
    ({"num_coords": 2.0}, "Invalid num_coords=2.0 (an int >= 1"),
    ({"num_coords": True}, "Invalid num_coords=True (an int >= 1"),
    ({"seed": -1}, "Invalid seed=-1 (an int in 0..2**32 - 1, as a run config's seed)"),
    ({"seed": 2**32}, "Invalid seed=4294967296 (an int in 0..2**32 - 1"),
    ({"seed": True}, "Invalid seed=True (an int in 0..2**32 - 1"),
    ({"dtype": "int8"}, "Invalid dtype='int8' (one of ")])
def test_the_recorder_refuses_a_cadence_or_subset_it_cannot_record(tmp_path, options, says):
    """Refused when built, each naming the option (every_epochs = 0 would divide by zero at
    the first epoch's end, a float num_coords or a negative seed fail the draw of the subset,
    True would be read as 1)."""
    with pytest.raises(ValueError, match=re.escape(says)):
        TrajectoryRecorder(tmp_path / "t", **options)


def test_the_recorder_takes_numpy_and_torch_ints_as_ints(tmp_path):
    """np.int64 / torch ints (a grid's values) are counts and seeds, as for the other
    instruments; the seed is stored in meta.json as a plain int."""
    rec = TrajectoryRecorder(tmp_path / "t", every_steps=np.int64(2), every_epochs=None,
                             num_coords=np.int64(4), seed=torch.tensor(3))
    assert (rec.every_steps, rec.num_coords, rec.seed) == (2, 4, 3)
    assert type(rec.seed) is int and type(rec.num_coords) is int
    _train_recording(rec, n=10, epochs=2)
    traj = open_trajectory(tmp_path / "t")
    assert list(traj.steps) == [0, 2, 4] and traj.snapshots.shape == (3, 4)
    assert traj.meta["subset_seed"] == 3
