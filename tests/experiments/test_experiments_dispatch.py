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


def test_an_interrupt_while_the_workers_are_stopped_after_the_sweep_says_the_runs_are_stored(
        tmp_path, monkeypatch, capsys):
    import multiprocessing as mp

    from sgdlab.cli.main import main
    from sgdlab.experiments import backends

    monkeypatch.setenv("SGDLAB_THREADS", "1")
    stop, stopped = backends._Worker.stop, []

    def interrupted_once(worker, kill):
        if not stopped:          # a SIGTERM while the first worker is stopped
            stopped.append(worker)
            raise KeyboardInterrupt("terminated (SIGTERM)")
        stop(worker, kill)

    monkeypatch.setattr(backends._Worker, "stop", interrupted_once)
    store = str(tmp_path / "s.sqlite")
    try:
        assert main(["run", "chaudhari-pde-smoothing", "--scale", "smoke", "--workers", "2",
                     "--out", str(tmp_path / "o"), "--store", store]) == 130
        left = [p for p in mp.active_children() if p.name.startswith("sgdlab-worker")]
    finally:
        for p in mp.active_children():   # else the exit of the test process waits on them
            p.kill()
    said = capsys.readouterr().err
    assert "the report was terminated after the sweep had ended (its runs are stored)" in said
    assert "in progress" not in said and stopped and not left
    from sgdlab.store import RunStore

    assert [r["status"] for r in RunStore(store).list_runs()] == ["finished"]
