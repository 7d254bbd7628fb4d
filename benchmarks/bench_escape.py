"""Analytic landscapes: the escape experiment's wall time and p-spin descents/s.

- ``escape_experiment_seconds``: Zhu et al.'s two-basin escape experiment at the paper's
  settings — 7 methods (GD, GLD const/dynamic/diagonal/leading/Hessian, SGD m=1) × 100
  repetitions × 600 iterations, η = 0.1, noise statistics from all N = 100 samples every step,
  plus the expected-sharpness probe (σ = 0.1, M = 100 draws per repetition) every 10
  iterations — float32, CPU, one torch thread. Absolute seconds, because the goal is an
  absolute budget (< 5 s on 2 cores). Measured as the calling thread's CPU time (with one torch
  thread all work runs there), so other jobs on a shared box do not inflate it; the wall time
  is printed beside it. Median of 3 runs.
- ``escape_dynamics_seconds``: the same without the sharpness probe (report only).
- ``pspin_descents_per_second``: projected GD (η = 0.1, stop at ‖∇_S H‖ ≤ 1e-4) on the
  spherical 3-spin glass, N = 100, critical field ν = √3(1 − 1/N)^{1/2}, 32 random starts
  descended together, float64; completed descents per second of thread CPU time (median of 3).
"""
from __future__ import annotations

import statistics
import time

import torch

from _timing import median_timed, one_thread

GOALS = {
    "escape_experiment_seconds": "< 5",
    "escape_dynamics_seconds": "report",
    "pspin_descents_per_second": "report",
}


def _median_time(what: str, fn, repeats: int = 3) -> float:
    """Median thread CPU seconds of ``fn()``; prints them with the median wall seconds, named
    ``what``."""
    cpu, wall = median_timed(fn, repeats)
    print(f"  {what}: cpu {cpu:.3f} s, wall {wall:.3f} s (median of {repeats})")
    return cpu


def run() -> dict[str, float | None]:
    from sgdlab.landscapes.escape import EscapeConfig, escape_experiment
    from sgdlab.landscapes.pspin import PSpinGlass
    from sgdlab.landscapes.two_basin import TwoBasin

    with one_thread():
        land = TwoBasin(dtype=torch.float32)
        cfg = EscapeConfig(record_trajectory=False)
        print(f"escape: TwoBasin N={land.num_samples}, float32, cpu, threads=1; "
              f"7 methods x {cfg.repetitions} reps x {cfg.iterations} iterations, "
              f"sharpness M={cfg.sharpness_samples} every {cfg.sharpness_every}")
        escape_experiment(land, EscapeConfig(iterations=20, record_trajectory=False))  # warm-up
        full = _median_time("with the sharpness probe (escape_experiment_seconds)",
                            lambda: escape_experiment(land, cfg))
        dyn_cfg = EscapeConfig(record_trajectory=False, sharpness_every=0)
        dyn = _median_time("dynamics alone (escape_dynamics_seconds)",
                           lambda: escape_experiment(land, dyn_cfg))

        p = PSpinGlass(100, regime="critical", seed=0)
        gen = torch.Generator().manual_seed(0)
        starts = [p.random_starts(32, generator=gen) for _ in range(3)]
        print("pspin: N=100, critical regime, 32 starts, float64, cpu, threads=1, "
              "lr=0.1, tol=1e-4")
        rates = []
        for s in starts:
            t0 = time.thread_time()
            res = p.descend(s, lr=0.1, tol=1e-4, max_steps=5000)
            rates.append(int(res.converged.sum()) / (time.thread_time() - t0))
        return {"escape_experiment_seconds": full, "escape_dynamics_seconds": dyn,
                "pspin_descents_per_second": statistics.median(rates)}


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
