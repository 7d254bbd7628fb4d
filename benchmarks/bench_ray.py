"""The Ray backend's overhead per run against the local process pool.

The same sweep — the flagship ``jastrzebski-ratio-grid`` at smoke scale on 512 digits,
8 epochs, 8 runs of about 2 s each (batch-normalised MLP, float32, CPU, one torch thread per
run) — runs on the local pool (``--workers 2``: 2 spawned processes, started by each sweep)
and on a local Ray instance (``ray.init(num_cpus=2)``, started once before the timed sweeps,
as a cluster would be), into fresh stores, alternately, ``REPEATS`` times each. The figure
is the ratio of the median wall seconds per run (Ray / local pool). The local pool's figure
includes starting its 2 workers (each sweep starts its own); Ray's reuses the workers of the
running instance, as a cluster does. The first Ray sweep after ``ray.init`` (its workers
starting and importing torch) is reported apart, as ``ray_first_sweep_per_run_vs_local_pool``.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

GOALS = {"ray_overhead_per_run_vs_local_pool": "<= 1.2",
         "ray_first_sweep_per_run_vs_local_pool": "(informative: Ray workers start cold)"}
REPEATS = 3


def _runs():
    import yaml

    from sgdlab.experiments.spec import catalogue_files, resolve

    raw = yaml.safe_load(catalogue_files()["jastrzebski-ratio-grid"].read_text())
    raw["scales"]["smoke"]["base"].update(dataset={"n_train": 512, "n_test": 128}, epochs=8)
    raw["scales"]["smoke"]["grid"] = {"optimizer.lr": [0.0125, 0.025, 0.05, 0.1],
                                      "batch_size": [64, 128]}
    return resolve(raw, "smoke").expand()


def run() -> dict[str, float | None]:
    try:
        import ray
    except ImportError:
        print("ray is not installed: python -m pip install -c constraints.txt '.[ray]'")
        return {"ray_overhead_per_run_vs_local_pool": None,
                "ray_first_sweep_per_run_vs_local_pool": None}
    from sgdlab.experiments.sweep import run_sweep

    os.environ["SGDLAB_THREADS"] = "1"
    runs = _runs()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        with tempfile.TemporaryDirectory(prefix="sgdlab-bench-ray-") as tmp:
            def sweep(i: int, **kw) -> float:
                t = time.perf_counter()
                rep = run_sweep(runs, store_path=str(Path(tmp) / f"{i}.sqlite"),
                                progress=None, **kw)
                assert not rep.failed and len(rep.executed) == len(runs), rep.failed
                return (time.perf_counter() - t) / len(runs)

            first = sweep(0, backend="ray")
            local, on_ray = [], []
            for i in range(REPEATS):
                local.append(sweep(2 * i + 1, workers=2))
                on_ray.append(sweep(2 * i + 2, backend="ray"))
    finally:
        ray.shutdown()
    lo, ra = statistics.median(local), statistics.median(on_ray)
    print(f"{len(runs)} runs per sweep, 2 at a time, 1 thread each, float32, cpu; seconds per "
          f"run (median of {REPEATS}): local pool {lo:.2f}, ray {ra:.2f}; first ray sweep "
          f"(workers importing torch) {first:.2f}")
    return {"ray_overhead_per_run_vs_local_pool": ra / lo,
            "ray_first_sweep_per_run_vs_local_pool": first / lo}


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
