"""Parallel sweeps: spawn worker processes, and torchrun dispatch (one shard per rank)."""
from __future__ import annotations

import json
import os
import re
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
def test_torchrun_dispatch_shards_runs_over_ranks(tmp_path):
    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    env = dict(os.environ, SGDLAB_THREADS="1", OMP_NUM_THREADS="1")
    cmd = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "sgdlab.cli.main",
           "run", "zhu-escape-2d", "--scale", "smoke", "--store", str(store), "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    text = p.stdout + p.stderr
    # the two ranks share stdout, so lines may interleave: count the progress records
    done = re.findall(r"\[rank (\d)/2\] \[\d+/\d+\] (\S+)\|seed=0 finished", text)
    by_rank = {r: sorted(lab for rr, lab in done if rr == r) for r in "01"}
    assert len(by_rank["0"]) == 4 and len(by_rank["1"]) == 3, text[-3000:]   # 7 = 4 + 3
    assert not set(by_rank["0"]) & set(by_rank["1"])           # no run executed twice
    runs = load_experiment("zhu-escape-2d", "smoke").expand()
    stored, missing = load_runs(runs, store_path=str(store))
    assert not missing and len(stored) == 7
    r = json.loads((out / "results.json").read_text())     # rank 0 wrote the report
    assert len(r["runs"]) == 7 and (out / "report.html").is_file()
