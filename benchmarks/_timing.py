"""Timing helpers shared by the benchmark modules (``from _timing import ...``: run.py puts
benchmarks/ on sys.path while it loads a module, and ``python benchmarks/bench_x.py`` does too).
"""
from __future__ import annotations

import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(calling thread's CPU seconds, wall seconds) of one call ``fn()``."""
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.thread_time() - c0, time.perf_counter() - w0


def timed_child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child process ``python ARGS`` (this interpreter, run
    in the repository root with it first on ``PYTHONPATH``, ``env`` added to this process's
    environment, its stdout discarded). CPU is user + system from
    ``resource.getrusage(RUSAGE_CHILDREN)``: on a shared machine wall time mostly measures the
    other tenants."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, env=env,
                   cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def median_timed(fn: Callable[[], Any], repeats: int, *,
                 warmup: bool = False) -> tuple[float, float]:
    """Medians of :func:`timed` (CPU, wall) over ``repeats`` calls, after one untimed call if
    ``warmup``."""
    if warmup:
        fn()
    cpu, wall = zip(*(timed(fn) for _ in range(repeats)))
    return statistics.median(cpu), statistics.median(wall)


def alternating_medians(tasks: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median CPU seconds of each task over ``repeats`` rounds that call every task in turn
    (load changes on a shared machine hit every contender alike)."""
    times: dict[str, list[float]] = {k: [] for k in tasks}
    for _ in range(repeats):
        for k, fn in tasks.items():
            times[k].append(timed(fn)[0])
    return {k: statistics.median(t) for k, t in times.items()}


def relative_difference(got: torch.Tensor, ref: torch.Tensor, what: str,
                        rtol: float = 1e-4) -> float:
    """max |got - ref| / max |ref|; raises if above ``rtol`` (or not finite): a figure is only
    worth timing when both sides computed the same thing."""
    err = float((got.reshape(-1) - ref.reshape(-1)).abs().max() / ref.abs().max())
    if not err <= rtol:
        raise RuntimeError(f"{what}: relative maximum difference {err:.1e} from the reference "
                           f"(tolerance {rtol:g}): not timed")
    return err


def against_reference(tasks: dict[str, Callable[[], Any]], ours: str, ref: torch.Tensor,
                      repeats: int, head: str, rtol: float = 1e-4) -> dict[str, float]:
    """:func:`alternating_medians` of ``tasks`` after checking ``tasks[ours]()`` against
    ``ref`` (a flat tensor; :func:`relative_difference` raises beyond ``rtol``); prints
    ``head``, each task's median and the relative maximum difference."""
    err = relative_difference(tasks[ours](), ref, f"{head}, {ours}", rtol)
    med = alternating_medians(tasks, repeats)
    times = ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in med.items())
    print(f"  {head}: {times} (rel. max difference {err:.1e})", flush=True)
    return med


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread inside the block; the previous count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed memory in the process (no trimming below 1 GiB of free heap;
    blocks under 32 MiB from the heap, not fresh mappings), for every library timed in this
    process alike. On virtual machines whose first-touch page faults are costly, a call that
    allocates ~100 MB otherwise spends half its time re-faulting memory its previous call
    returned (the per-sample CNN pass: 83 vs 34 ms), and the ratios swing with the allocator's
    state. Permanent for the process (glibc then stops adapting its thresholds); False where
    the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3          # glibc's malloc.h
    return bool(mallopt(m_trim_threshold, 2**30)) and bool(mallopt(m_mmap_threshold, 2**25))
