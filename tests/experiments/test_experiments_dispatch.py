"""Parallel sweeps: spawned worker processes (the Ray backend: test_sweep_ray.py)."""
from __future__ import annotations

from sgdlab.experiments.runner import run_experiment


def test_workers_run_in_parallel_processes_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_THREADS", "1")
    store = str(tmp_path / "s.sqlite")
    res = run_experiment("chaudhari-pde-smoothing", scale="smoke", out_dir=tmp_path / "o",
                         store_path=store, workers=2, progress=None)
    assert res.ok and len(res.sweep.executed) == 1 and not res.sweep.failed
    again = run_experiment("chaudhari-pde-smoothing", scale="smoke", out_dir=tmp_path / "o",
                           store_path=store, workers=2, progress=None)
    assert again.sweep.executed == [] and len(again.sweep.skipped) == 1
