"""Start-up time of the command line: `sgdlab --help` and `sgdlab list`.

Each command runs as a child process (``python -m sgdlab.cli.main ...``, this interpreter, the
sgdlab on ``sys.path``), REPEATS times after one warm-up run that fills the OS file cache. The
figure is the slower command's median CPU seconds of the child (user + system, from
``resource.getrusage(RUSAGE_CHILDREN)``): on a shared machine wall time mostly measures the
other tenants, while the CPU time is what the start-up itself costs. Wall-time medians and a
bare ``python -c pass`` are printed for comparison. No torch is involved (CPU, no threads).
"""
from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOALS = {"cli_startup_seconds": "<= 1.0"}

REPEATS = 7
COMMANDS = {"sgdlab --help": ["-m", "sgdlab.cli.main", "--help"],
            "sgdlab list": ["-m", "sgdlab.cli.main", "list"],
            "python -c pass": ["-c", "pass"]}
ROOT = Path(__file__).resolve().parents[1]


def _child(args: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child ``python ARGS``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, env=env,
                   cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def run() -> dict[str, float | None]:
    print(f"child processes of {sys.executable}, {REPEATS} repeats after a warm-up, medians")
    cpu: dict[str, float] = {}
    for name, args in COMMANDS.items():
        _child(args)
        times = [_child(args) for _ in range(REPEATS)]
        cpu[name] = statistics.median(t for t, _ in times)
        wall = statistics.median(w for _, w in times)
        print(f"{name:<16} CPU {cpu[name]:.3f} s, wall {wall:.3f} s")
    return {"cli_startup_seconds": max(cpu["sgdlab --help"], cpu["sgdlab list"])}


if __name__ == "__main__":
    print(run())
