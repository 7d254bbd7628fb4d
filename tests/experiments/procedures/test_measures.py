"""The measurement procedures (sgdlab.experiments.procedures.measures): that each passes its
options to the estimator it names; the estimators are checked by hand in tests/measure."""
from __future__ import annotations

import numpy as np
import pytest

from sgdlab.experiments.procedures.measures import trajectory_spectrum


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
