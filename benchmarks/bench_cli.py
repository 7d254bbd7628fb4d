"""Start-up time of the command line: `sgdlab --help` and `sgdlab list`.

Each command runs as a child process (``python -m sgdlab.cli.main ...``, this interpreter, the
sgdlab on ``sys.path``), REPEATS times after one warm-up run that fills the OS file cache. The
figure is the slower command's median CPU seconds of the child (user + system, from
``resource.getrusage(RUSAGE_CHILDREN)``): on a shared machine wall time mostly measures the
other tenants, while the CPU time is what the start-up itself costs. Wall-time medians and a
bare ``python -c pass`` are printed for comparison. No torch is involved (CPU, no threads).
"""
from __future__ import annotations

import statistics
import sys

from _timing import timed_child

GOALS = {"cli_startup_seconds": "<= 1.0"}

REPEATS = 7
COMMANDS = {"sgdlab --help": ["-m", "sgdlab.cli.main", "--help"],
            "sgdlab list": ["-m", "sgdlab.cli.main", "list"],
            "python -c pass": ["-c", "pass"]}


def run() -> dict[str, float | None]:
    print(f"child processes of {sys.executable}, {REPEATS} repeats after a warm-up, medians")
    cpu: dict[str, float] = {}
    for name, args in COMMANDS.items():
        timed_child(args)
        times = [timed_child(args) for _ in range(REPEATS)]
        cpu[name] = statistics.median(t for t, _ in times)
        wall = statistics.median(w for _, w in times)
        print(f"{name:<16} CPU {cpu[name]:.3f} s, wall {wall:.3f} s")
    return {"cli_startup_seconds": max(cpu["sgdlab --help"], cpu["sgdlab list"])}


if __name__ == "__main__":
    from run import main

    sys.exit(main(module=__file__))
