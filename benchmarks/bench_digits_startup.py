"""Start-up cost of the bundled digits: a process that loads them, and `sgdlab train digits-mlp`.

The digits used to cost every process that loaded them an ``import sklearn`` (~2 s of CPU: it
imports scipy.stats): ``sklearn.datasets.load_digits`` for the arrays, ``train_test_split`` for
the seeded stratified split. The arrays are now parsed from scikit-learn's shipped CSV without
importing it, and the split is scikit-learn's own answer kept in the on-disk cache
(:mod:`sgdlab.data.cache`), so only the first process for a (seed, test size) imports it.

Each variant runs as a child process (this interpreter, the sgdlab on ``sys.path``), REPEATS
rounds that run every child in turn after one warm-up round that fills the OS file cache; the
figures are ratios of median CPU seconds (user + system of the child): wall time on a shared
machine mostly measures the other tenants. The old path is the same code with the CSV reader
and the split cache switched off in the child (``load_digits`` and ``train_test_split`` as
before), so old and new run side by side. ``cold``: a fresh, empty cache folder each time (the
first process on a machine); ``warm``: a cache that holds the split. One thread, CPU only;
the digits are float32, as `digits-mlp` trains on them.

    python benchmarks/run.py --only digits_startup     # 3-4 minutes (32 child processes)
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

from _timing import timed_child

GOALS = {"digits_load_warm_vs_old": "<= 0.7", "train_digits_mlp_warm_vs_old": "<= 0.85"}

REPEATS = 5
TRAIN_REPEATS = 3
OLD = ("import sgdlab.data._common as c, sgdlab.data.bundled as b\n"
       "b._digits_file = lambda: None\n"          # load_digits' own arrays
       "c._split_cache_key = lambda *a: None\n")  # train_test_split in this process
LOAD = "import torch\nfrom sgdlab.data import load_dataset\nload_dataset('digits')\n"
TRAIN = ("import sys\nfrom sgdlab.cli.main import main\n"
         "sys.exit(main(['train', 'digits-mlp', '--no-progress', '--store', sys.argv[1]]))\n")


def _child(code: str, cache: str | None, *args: str) -> float:
    """CPU seconds of one child running ``code`` with ``$SGDLAB_CACHE`` at ``cache`` (a fresh
    empty folder when None)."""
    with tempfile.TemporaryDirectory() as fresh:
        return timed_child(["-c", code, *args], env={"SGDLAB_CACHE": cache or fresh})[0]


def _rounds(children: dict, repeats: int) -> dict[str, float]:
    for fn in children.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in children}
    for _ in range(repeats):            # in turn: load changes hit every child alike
        for name, fn in children.items():
            times[name].append(fn())
    return {k: statistics.median(t) for k, t in times.items()}


def run() -> dict[str, float | None]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"child processes of {sys.executable}, median CPU seconds after a warm-up round")
    with tempfile.TemporaryDirectory() as warm:
        load = {"import torch": lambda: _child("import torch", None),
                "digits, old path": lambda: _child(OLD + LOAD, None),
                "digits, cold cache": lambda: _child(LOAD, None),
                "digits, warm cache": lambda: _child(LOAD, warm)}
        cpu = _rounds(load, REPEATS)
        for name, s in cpu.items():
            print(f"  {name:<20} {s:.3f} s   beyond torch {s - cpu['import torch']:+.3f} s")
        store = str(Path(warm) / "runs.sqlite")
        train = {"train digits-mlp, old path": lambda: _child(OLD + TRAIN, None, store),
                 "train digits-mlp, warm cache": lambda: _child(TRAIN, warm, store)}
        tcpu = _rounds(train, TRAIN_REPEATS)
        for name, s in tcpu.items():
            print(f"  {name:<30} {s:.3f} s")
    return {"digits_load_warm_vs_old": cpu["digits, warm cache"] / cpu["digits, old path"],
            "digits_load_cold_vs_old": cpu["digits, cold cache"] / cpu["digits, old path"],
            "train_digits_mlp_warm_vs_old": (tcpu["train digits-mlp, warm cache"]
                                             / tcpu["train digits-mlp, old path"])}


if __name__ == "__main__":
    from run import main

    sys.exit(main(module=__file__))
