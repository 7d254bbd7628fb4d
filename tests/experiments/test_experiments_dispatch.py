"""Parallel sweeps: spawn worker processes, and torchrun dispatch (one shard per rank)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from sgdlab.experiments.runner import run_experiment
from sgdlab.experiments.spec import load_experiment
from sgdlab.experiments.sweep import load_runs


def test_workers_run_in_parallel_processes_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_THREADS", "1")
    store = str(tmp_path / "s.sqlite")
    res = run_experiment("chaudhari-pde-smoothing", scale="smoke", out_dir=tmp_path / "o",
                         store_path=store, workers=2, progress=None)
    assert res.ok and len(res.sweep.executed) == 1 and not res.sweep.failed
    again = run_experiment("chaudhari-pde-smoothing", scale="smoke", out_dir=tmp_path / "o",
                           store_path=store, workers=2, progress=None)
    assert again.sweep.executed == [] and len(again.sweep.skipped) == 1


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
@pytest.mark.skipif(os.environ.get("SGDLAB_TEST_TORCHRUN") != "1",
                    reason="launches 3 processes (~30 s on 2 busy cores); set SGDLAB_TEST_TORCHRUN=1")
def test_torchrun_dispatch_shards_runs_over_ranks(tmp_path):
    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    env = dict(os.environ, SGDLAB_THREADS="1", OMP_NUM_THREADS="1")
    cmd = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "sgdlab.cli.main",
           "run", "zhu-escape-2d", "--scale", "smoke", "--store", str(store), "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    text = p.stdout + p.stderr
    r0 = [ln for ln in text.splitlines() if ln.startswith("[rank 0/2] [")]
    r1 = [ln for ln in text.splitlines() if ln.startswith("[rank 1/2] [")]
    assert len(r0) == 4 and len(r1) == 3, text[-3000:]       # 7 runs, split 4 + 3
    runs = load_experiment("zhu-escape-2d", "smoke").expand()
    stored, missing = load_runs(runs, store_path=str(store))
    assert not missing and len(stored) == 7
    r = json.loads((out / "results.json").read_text())     # rank 0 wrote the report
    assert len(r["runs"]) == 7 and (out / "report.html").is_file()
