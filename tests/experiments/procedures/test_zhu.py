"""Zhu et al.'s analyses (sgdlab.experiments.procedures.zhu) by hand: the windows, reductions
and verdict edges the catalogue's tests leave unpinned."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sgdlab.experiments.procedures import zhu
from sgdlab.testing import stored_run as run

PAPER = {"author": "X", "figure": "Fig. 0"}


def test_the_steps_of_a_window_are_named_by_its_first_and_last():
    assert zhu._steps([]) == "no steps"
    assert zhu._steps([300.0]) == "step 300"
    assert zhu._steps([10.0, 20.0, 50.0]) == "steps 10-50"


def _residual_run(seed, residual, k=2, d=10):
    m = {"align/residual": list(zip(range(len(residual)), residual))}
    for i in range(1, k + 1):
        m[f"align/cos_{i}"] = [(len(residual) - 1, 0.99)]
    return run("g", seed, summary={"num_params": d}, metrics=m)


def test_a_seed_that_diverges_within_the_late_window_leaves_the_residual_inconclusive():
    """Seed 1 is finite up to step 6 and NaN at steps 7 and 8 of the window 6-8: the mean
    there is seed 0's alone, so both residual verdicts are inconclusive (seed 0 by itself
    is small and stable)."""
    nan = float("nan")
    good = [1.8, 1.5, 1.0, 0.8, 0.6, 0.5, 0.42, 0.40, 0.41]
    runs = [_residual_run(0, good), _residual_run(1, good[:7] + [nan, nan])]
    spec = SimpleNamespace(paper=PAPER, options={"tests": ["residual"]})
    small, stable = zhu.zhu_alignment(spec, runs).conclusions
    assert small.evidence["late_steps"] == [6, 7, 8]
    assert (small.agrees_with_paper, stable.agrees_with_paper) == (None, None)
    assert "1 of 2 seeds have no finite value there" in small.text
    alone = zhu.zhu_alignment(spec, runs[:1]).conclusions
    assert [c.agrees_with_paper for c in alone] == [True, True]
