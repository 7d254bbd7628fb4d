"""A run's CPUs and GPUs, resolved with where each came from (sgdlab.experiments.resources)."""
from __future__ import annotations

import pytest

from sgdlab.errors import UserError
from sgdlab.experiments.resources import (DEFAULT, FILE, FLAG, VARIABLE, PerRun, amount,
                                          per_run, resolve)


def test_the_flag_then_the_variable_then_the_file_and_each_is_named_as_given(monkeypatch):
    monkeypatch.delenv("SGDLAB_GPUS_PER_RUN", raising=False)
    monkeypatch.setenv("SGDLAB_CPUS_PER_RUN", "3")
    file = {"cpus_per_run": 2, "gpus_per_run": 0.5}
    assert resolve("cpus", 6.0, file) == PerRun("cpus", 6.0, FLAG)
    assert resolve("cpus", None, file) == PerRun("cpus", 3.0, VARIABLE)
    assert resolve("gpus", None, file) == PerRun("gpus", 0.5, FILE)
    assert resolve("gpus", None, {}) is None
    assert [str(resolve("cpus", 6.0, file)), str(resolve("cpus", None, file)),
            str(resolve("gpus", None, file)), str(PerRun.default("cpus"))] == [
        "--cpus-per-run 6", "$SGDLAB_CPUS_PER_RUN=3",
        "the experiment's resources: gpus_per_run: 0.5",
        "the default 1; --cpus-per-run sets it"]
    assert PerRun.default("gpus") == PerRun("gpus", 0.0, DEFAULT)
    monkeypatch.setenv("SGDLAB_CPUS_PER_RUN", "two")
    with pytest.raises(UserError, match=r"^\$SGDLAB_CPUS_PER_RUN must be a number, got 'two'$"):
        resolve("cpus", None, file)


def test_a_bare_number_is_the_flags_and_none_stays_none():
    """Python callers of run_sweep and RayBackend give numbers, as the flags do."""
    given = PerRun("cpus", 2.0, FILE)
    assert per_run("cpus", 2) == PerRun("cpus", 2.0, FLAG) and per_run("cpus", given) is given
    assert per_run("gpus", None) is None
    assert [amount(given), amount(1.5), amount(None)] == [2.0, 1.5, None]
