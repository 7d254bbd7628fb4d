"""Start-up cost of a sweep worker: the imports a worker makes before its first run.

A worker process (``sgdlab run --workers N``, a Ray task) unpickles a ``RunTask`` whose
procedure travels by reference, so it imports ``sgdlab.experiments.worker`` and the
procedure's module. Each import set runs as a child process (``python -c "import ..."``, this
interpreter, the sgdlab on ``sys.path``), REPEATS times in turn after one warm-up round that
fills the OS file cache. The figure is the median CPU seconds of the child (user + system,
from ``resource.getrusage(RUSAGE_CHILDREN)``) that imports the worker and every procedure
module, over that of a child that imports torch alone: torch is the part no worker avoids, so
the ratio is what the worker's own imports add (1.0 would be nothing). Wall-time medians are
printed too; on a shared machine they mostly measure the other tenants. Nothing is computed:
no tensors, CPU only, torch's default threads (an import starts none).
"""
from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOALS = {"worker_imports_vs_torch": "<= 1.3"}

REPEATS = 7
ROOT = Path(__file__).resolve().parents[1]
PROCEDURES = ["chaudhari", "common", "copies", "generic", "jastrzebski", "landscape_runs",
              "measures", "train", "xing", "zhu"]
WORKER = ["sgdlab.experiments.worker", "sgdlab.train",
          *(f"sgdlab.experiments.procedures.{m}" for m in PROCEDURES)]
# a worker of a jastrzebski-* sweep; torch first, as the run's training will import it
CHILDREN = {"import torch": ["torch"],
            "torch + worker + jastrzebski": ["torch", "sgdlab.experiments.worker",
                                             "sgdlab.experiments.procedures.jastrzebski"],
            "worker + every procedure": WORKER}


def _child(modules: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child that imports ``modules``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import " + ", ".join(modules)], check=True,
                   env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def run() -> dict[str, float | None]:
    print(f"child processes of {sys.executable}, {REPEATS} rounds after a warm-up, medians")
    for modules in CHILDREN.values():
        _child(modules)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in CHILDREN}
    for _ in range(REPEATS):           # in turn: load changes hit every child alike
        for name, modules in CHILDREN.items():
            times[name].append(_child(modules))
    cpu = {k: statistics.median(c for c, _ in t) for k, t in times.items()}
    for name, t in times.items():
        wall = statistics.median(w for _, w in t)
        print(f"{name:<28} CPU {cpu[name]:.3f} s, wall {wall:.3f} s")
    torch_s = cpu["import torch"]
    jas, every = cpu["torch + worker + jastrzebski"], cpu["worker + every procedure"]
    print(f"beyond torch (CPU): jastrzebski worker {jas - torch_s:+.3f} s "
          f"({jas / torch_s:.2f}x), every procedure {every - torch_s:+.3f} s")
    return {"worker_imports_vs_torch": every / torch_s}


if __name__ == "__main__":
    print(run())
