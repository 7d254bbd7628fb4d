"""Runs and sweeps under SIGKILL at random moments: what survives.

- **Runs**: ``sgdlab train digits-mlp`` (MLP 64-128-10, float32, CPU, one thread; 12 epochs,
  checkpoints every 17 steps, i.i.d. batches, the ``dynamics`` instrument every 7 steps) is
  SIGKILLed at a random moment after its first checkpoint, then ``sgdlab resume``d — itself
  killed again with probability 1/2 — until it finishes; its metric rows are compared with an
  uninterrupted run's, row by row.
- **Sweeps**: ``sgdlab run`` of a small η/B grid (the flagship ``jastrzebski-ratio-grid``
  at smoke scale on 256 digits, 4 runs, ``--workers 2``) has a random worker or its driver
  SIGKILLed at a random moment, then the same command is rerun (killed again with
  probability 1/2) until it completes; its report tables and every run's metric rows are
  compared with an uninterrupted sweep's.

Figures (counts, as the reliability requirement states them; the seed of the kill moments
is fixed): ``reliability_kills_survived`` (kills after which the work completed with the
uninterrupted result), ``reliability_rows_lost`` (metric rows missing or doubled, summed
over all killed runs and sweeps; goal 0), ``reliability_reports_identical`` (fraction of
killed runs and sweeps whose final result equals the uninterrupted one; goal 1).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

GOALS = {"reliability_kills_survived": ">= 6", "reliability_rows_lost": "== 0",
         "reliability_reports_identical": "== 1"}

RUN_TRIALS, SWEEP_TRIALS, SEED = 3, 3, 0
SGDLAB = [sys.executable, "-m", "sgdlab.cli.main"]
ENV = {**os.environ, "SGDLAB_THREADS": "1", "OMP_NUM_THREADS": "1"}
RUN_ARGS = ["digits-mlp", "--set", "train.epochs=12", "--set", "train.checkpoint_every=17",
            "--set", "train.replacement=true", "--set", "measure=[{name: dynamics, every: 7}]",
            "--no-progress"]


def _rows(store: Path, run_id: str) -> Counter:
    from sgdlab.store import RunStore

    s = RunStore(store, readonly=True)
    return Counter((n, step, v) for n, pts in s.metrics(run_id).items() for step, v in pts)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _kill_later(proc: subprocess.Popen, rng: random.Random, ready, lo: float, hi: float,
                target: str = "self") -> bool:
    """SIGKILL ``proc`` (or a random child: ``target="worker"``) a random time after
    ``ready()``; False if it ended first."""
    while not ready():
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    end = time.monotonic() + rng.uniform(lo, hi)
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    pids = _children(proc.pid) if target == "worker" else [proc.pid]
    if not pids or proc.poll() is not None:
        return False
    os.kill(rng.choice(pids), signal.SIGKILL)
    return True


def _run_trials(rng: random.Random, root: Path) -> tuple[int, int, int]:
    from sgdlab.store import RunStore

    ref_store = root / "ref.sqlite"
    subprocess.run(SGDLAB + ["train", *RUN_ARGS, "--store", str(ref_store), "--out",
                             str(root / "ref")], env=ENV, check=True, capture_output=True)
    ref = _rows(ref_store, RunStore(ref_store).list_runs()[0]["id"])
    kills = survived = lost = same = 0
    for t in range(RUN_TRIALS):
        store, out = root / f"run{t}.sqlite", root / f"run{t}"
        before = kills
        proc = subprocess.Popen(SGDLAB + ["train", *RUN_ARGS, "--store", str(store), "--out",
                                          str(out)], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        killed = _kill_later(proc, rng, lambda: (out / "checkpoints" / "last.pt").exists(),
                             0.0, 3.0)
        proc.wait()
        kills += killed
        run_id = RunStore(store).list_runs()[0]["id"]
        while RunStore(store).get_run(run_id)["status"] != "finished":
            proc = subprocess.Popen(SGDLAB + ["resume", run_id, "--store", str(store),
                                              "--no-progress"], env=ENV,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if rng.random() < 0.5:
                kills += _kill_later(proc, rng, lambda: True, 2.0, 6.0)
            proc.wait()
        rows = _rows(store, run_id)
        lost += sum(((ref - rows) + (rows - ref)).values())
        same += rows == ref
        survived += (kills - before) * (rows == ref)
    return kills, survived, lost, same


def _grid(root: Path) -> Path:
    import yaml

    from sgdlab.experiments.spec import catalogue_files

    raw = yaml.safe_load(catalogue_files()["jastrzebski-ratio-grid"].read_text())
    raw["scales"]["smoke"]["base"].update(dataset={"n_train": 256, "n_test": 128}, epochs=3)
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _sweep_result(out: Path, store: Path) -> tuple[list, Counter]:
    from sgdlab.experiments.spec import load_experiment
    from sgdlab.experiments.sweep import load_runs

    tables = json.loads((out / "results.json").read_text())["tables"]
    stored, _ = load_runs(load_experiment(str(out.parent / "grid.yaml"), "smoke").expand(),
                          store_path=str(store))
    return tables, Counter((r.key, n, s, v) for r in stored for n, pts in r.metrics.items()
                           for s, v in pts)


def _sweep_trials(rng: random.Random, root: Path) -> tuple[int, int, int]:
    grid = _grid(root)

    def cmd(store: Path, out: Path) -> list[str]:
        return SGDLAB + ["run", "--config", str(grid), "--scale", "smoke", "--workers", "2",
                         "--store", str(store), "--out", str(out)]

    subprocess.run(cmd(root / "ref-sweep.sqlite", root / "ref-sweep"), env=ENV, check=True,
                   capture_output=True)
    ref_tables, ref_rows = _sweep_result(root / "ref-sweep", root / "ref-sweep.sqlite")
    kills = survived = lost = same = 0
    for t in range(SWEEP_TRIALS):
        store, out = root / f"sweep{t}.sqlite", root / f"sweep{t}"
        first, before = True, kills
        while True:
            proc = subprocess.Popen(cmd(store, out), env=ENV, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            if first or rng.random() < 0.5:
                target = rng.choice(["worker", "self"])
                kills += _kill_later(proc, rng, lambda: len(_children(proc.pid)) >= 2, 2.0,
                                     10.0, target)
            first = False
            if proc.wait() == 0 and (out / "results.json").exists():
                break
        tables, rows = _sweep_result(out, store)
        lost += sum(((ref_rows - rows) + (rows - ref_rows)).values())
        ok = tables == ref_tables and rows == ref_rows
        same += ok
        survived += (kills - before) * ok
    return kills, survived, lost, same


def run() -> dict[str, float]:
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="sgdlab-reliability-") as tmp:
        root = Path(tmp)
        k1, v1, l1, s1 = _run_trials(rng, root)
        k2, v2, l2, s2 = _sweep_trials(rng, root)
    print(f"runs: {RUN_TRIALS} killed runs, {k1} SIGKILLs, {l1} rows lost or doubled, {s1} "
          f"identical; sweeps: {SWEEP_TRIALS} killed sweeps, {k2} SIGKILLs (workers and "
          f"drivers), {l2} rows lost or doubled, {s2} identical (digits, float32, cpu, "
          "1 thread per run)")
    return {"reliability_kills_survived": v1 + v2, "reliability_rows_lost": l1 + l2,
            "reliability_reports_identical": (s1 + s2) / (RUN_TRIALS + SWEEP_TRIALS)}


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
