"""Analytic landscapes on a device (run THERE, on a GPU; DEVICE=cpu for a dry run here).

1. exact: SGD chains on a float64 Quadratic moved with ``.to(device)``, batches from a CPU
   generator, against the same run on the CPU: the same indices, so the paths agree to
   round-off (max |Δ| printed, must be < 1e-10);
2. statistical: the same chains with a generator *on the device* (other draws): the stationary
   excess loss E[L] − L(θ*) over 4096 chains against the discrete Lyapunov closed form, within
   4 standard errors, and the time of a step on the device and on the CPU;
3. the escape experiment (all seven methods, float64 rescaled TwoBasin) on the device
   against the CPU with the same seed: equal success rates, final iterates equal to round-off.
Prints one line per check; exits non-zero on a failure.

    DEVICE=cuda python benchmarks/cuda/landscape_check.py
"""
from __future__ import annotations

import os
import sys
import time

import torch

from sgdlab.landscapes import EscapeConfig, Quadratic, TwoBasin, escape_experiment
from sgdlab.landscapes.sde import path_mean_se, sgd_chains

DEVICE = os.environ.get("DEVICE", "cuda")
LR, BATCH, CHAINS = 0.1, 2, 4096


def _quadratic() -> Quadratic:
    return Quadratic(torch.diag(torch.tensor([2.0, 1.0, 0.5, 0.25], dtype=torch.float64)),
                     num_samples=64, seed=0)


def _chains(land: Quadratic, device: str, gen: torch.Generator, steps: int, **kw):
    x0 = torch.zeros(CHAINS, land.dim, dtype=torch.float64, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    path = sgd_chains(land, x0, lr=LR, batch_size=BATCH, steps=steps, generator=gen, **kw)
    if device == "cuda":
        torch.cuda.synchronize()
    return path, (time.perf_counter() - t0) / steps


def main() -> int:
    failures = 0
    land_cpu, land_dev = _quadratic(), _quadratic().to(DEVICE)

    ref, t_cpu = _chains(land_cpu, "cpu", torch.Generator().manual_seed(1), 200)
    got, t_dev = _chains(land_dev, DEVICE, torch.Generator().manual_seed(1), 200)
    diff = float((got.final.cpu() - ref.final).abs().max())
    ok = diff < 1e-10
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} exact: sgd_chains on {DEVICE} vs cpu, CPU generator, "
          f"max |Δθ| = {diff:.2e} (step {t_dev * 1e3:.2f} ms on {DEVICE}, "
          f"{t_cpu * 1e3:.2f} ms on cpu)")

    gen = torch.Generator(device=DEVICE).manual_seed(2)
    path, _ = _chains(land_dev, DEVICE, gen, 600, record_every=100)
    excess = land_dev.loss(path.states[2:]) - land_dev.min_loss        # records t = 20..60
    mean, se = path_mean_se(excess.cpu())
    want = land_cpu.stationary_excess_loss(LR, BATCH, discrete=True)
    ok = abs(mean - want) < 4 * se
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} statistical: E[L] - L* on {DEVICE} with a {DEVICE} "
          f"generator = {mean:.5f} ± {se:.5f}, closed form {want:.5f}")

    cfg = EscapeConfig(iterations=100, repetitions=200, sharpness_every=50, seed=3)
    ref = escape_experiment(TwoBasin.rescaled(), cfg)
    t0 = time.perf_counter()
    got = escape_experiment(TwoBasin.rescaled().to(DEVICE), cfg)
    wall = time.perf_counter() - t0
    # a diverged chain (GD at η = 0.1 on the printed loss) must diverge on both
    same_lost = all(torch.equal(torch.isfinite(got.final[m]), torch.isfinite(ref.final[m]))
                    for m in ref.final)
    diff = max(float((got.final[m] - ref.final[m]).nan_to_num(0.0, 0.0, 0.0).abs().max())
               for m in ref.final)
    ok = got.success_rate == ref.success_rate and same_lost and diff < 1e-8
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} escape on {DEVICE} vs cpu: rates "
          f"{got.success_rate} vs {ref.success_rate}, max |Δw| = {diff:.2e} ({wall:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
