"""Start-up cost of a sweep worker: the imports a worker makes before its first run.

A worker process (``sgdlab run --workers N``, a Ray task) unpickles a ``RunTask`` whose
procedure travels by reference, so it imports ``sgdlab.experiments.worker`` and the
procedure's module; the pool backends that start it (``backends``, ``ray_backend``) and the
training loop are on its side too. Each import set runs as a child process (``python -c
"import ..."``, this interpreter, the sgdlab on ``sys.path``), REPEATS times in turn after one
warm-up round that fills the OS file cache. The figure is the median CPU seconds of the child
(user + system, from ``resource.getrusage(RUSAGE_CHILDREN)``) that imports that worker side
and every procedure module, over that of a child that imports torch alone: torch is the part
no worker avoids, so the ratio is what the worker's own imports add (1.0 would be nothing).
Wall-time medians are printed too; on a shared machine they mostly measure the other tenants.
Nothing is computed: no tensors, CPU only, torch's default threads (an import starts none).
"""
from __future__ import annotations

import pkgutil
import statistics
import sys

from _timing import timed_child

import sgdlab.experiments.procedures as procedures

GOALS = {"worker_imports_vs_torch": "<= 1.3"}

REPEATS = 7
# the modules tests/experiments/test_worker_imports.py keeps free of matplotlib
WORKER = ["sgdlab.experiments.worker", "sgdlab.experiments.backends",
          "sgdlab.experiments.ray_backend", "sgdlab.train",
          *(f"sgdlab.experiments.procedures.{m.name}"
            for m in pkgutil.iter_modules(procedures.__path__))]
# a worker of a jastrzebski-* sweep; torch first, as the run's training will import it
CHILDREN = {"import torch": ["torch"],
            "torch + worker + jastrzebski": ["torch", "sgdlab.experiments.worker",
                                             "sgdlab.experiments.procedures.jastrzebski"],
            "worker + every procedure": WORKER}


def _child(modules: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child that imports ``modules``."""
    return timed_child(["-c", "import " + ", ".join(modules)])


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
    from run import main

    sys.exit(main(module=__file__))
