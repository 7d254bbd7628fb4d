"""Where a sweep's runs execute: this process, or a pool of spawned worker processes.

A backend takes :class:`~sgdlab.experiments.worker.RunTask` objects (``submit``) and reports
what happened (``wait`` -> events ``(handle, "done", RunRecord)`` or ``(handle, "lost",
reason)``); metric rows a run sends while it runs arrive through the ``on_rows(run_id,
rows)`` callback. The sweep driver writes everything to the store. The Ray backend
(:mod:`sgdlab.experiments.ray_backend`) has the same interface.

The process pool is sgdlab's own (not ``concurrent.futures``): each worker has its own pipe,
so a worker that dies — SIGKILL, out of memory — loses only its own run ("lost", with the
signal), and the pool starts a fresh worker for the next one; the others carry on. Workers
die with their parent: on Linux the kernel kills them when the driver dies
(``PR_SET_PDEATHSIG``), elsewhere a watchdog thread notices within a second; they ignore
Ctrl-C (the driver stops them and records their runs as interrupted).
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait as wait_any
from typing import Any

from sgdlab.experiments.worker import RunRecord, RunTask, execute_run

Event = tuple[int, str, Any]          # (handle, "done" | "lost", RunRecord | reason)
RowsCallback = Callable[[str, list[tuple]], None]


class InProcessBackend:
    """Runs each task here, one at a time, when ``wait`` is called (an interrupt propagates
    to the driver, which records the run as interrupted)."""

    name = "in-process"

    def __init__(self, on_rows: RowsCallback):
        self.on_rows = on_rows
        self.queue: deque[tuple[int, RunTask]] = deque()
        self._ids = itertools.count()
        self.capacity = 1

    def has_capacity(self) -> bool:
        return not self.queue

    def submit(self, task: RunTask) -> int:
        h = next(self._ids)
        self.queue.append((h, task))
        return h

    def wait(self, timeout: float) -> list[Event]:
        if not self.queue:
            return []
        h, task = self.queue.popleft()
        return [(h, "done", execute_run(task, send=lambda rows: self.on_rows(task.run_id,
                                                                               rows)))]

    def cancel_all(self) -> None:
        self.queue.clear()

    def close(self) -> None:
        self.queue.clear()


class _Worker:
    def __init__(self, ctx, index: int):
        parent, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, os.getpid()),
                                   name=f"sgdlab-worker-{index}", daemon=False)
        self.process.start()
        child.close()
        self.conn, self.handle, self.run_id = parent, None, None

    def stop(self, kill: bool) -> None:
        if kill and self.process.is_alive():
            self.process.kill()
        elif self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                self.process.kill()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class ProcessPoolBackend:
    """``workers`` spawned processes, one run each at a time (see the module docstring)."""

    name = "local pool"

    def __init__(self, workers: int, on_rows: RowsCallback):
        self.ctx = mp.get_context("spawn")
        self.capacity = workers
        self.slots: list[_Worker | None] = [None] * workers
        self.on_rows = on_rows
        self._ids = itertools.count()
        self._started = itertools.count()

    def has_capacity(self) -> bool:
        return any(w is None or w.handle is None for w in self.slots)

    def submit(self, task: RunTask) -> int:
        i = next(i for i, w in enumerate(self.slots) if w is None or w.handle is None)
        w = self.slots[i]
        if w is None or not w.process.is_alive():
            if w is not None:
                w.stop(kill=True)
            w = self.slots[i] = _Worker(self.ctx, next(self._started))
        h = next(self._ids)
        try:
            w.conn.send(task)
        except OSError:              # it died while idle: a fresh one takes the task
            w.stop(kill=True)
            w = self.slots[i] = _Worker(self.ctx, next(self._started))
            w.conn.send(task)
        w.handle, w.run_id = h, task.run_id
        return h

    def wait(self, timeout: float) -> list[Event]:
        busy = [(i, w) for i, w in enumerate(self.slots) if w is not None and w.handle is not None]
        if not busy:
            return []
        ready = set(wait_any([w.conn for _, w in busy] + [w.process.sentinel for _, w in busy],
                             timeout))
        events: list[Event] = []
        for i, w in busy:
            if w.conn not in ready and w.process.sentinel not in ready:
                continue
            try:
                while w.handle is not None and w.conn.poll():
                    kind, payload = w.conn.recv()
                    if kind == "rows":
                        self.on_rows(w.run_id, payload)
                    else:
                        events.append((w.handle, "done", payload))
                        w.handle = None
            except (EOFError, OSError):
                pass                 # the pipe closed: the worker died
            except Exception as e:   # noqa: BLE001 - a half-written message from a dying worker
                if w.process.is_alive():
                    events.append((w.handle, "lost", f"unreadable message from its worker "
                                                     f"({type(e).__name__})"))
                    w.handle = None
                    w.stop(kill=True)
                    self.slots[i] = None
                    continue
            if w.handle is not None and not w.process.is_alive():
                w.process.join()
                events.append((w.handle, "lost", "its worker process died ("
                               f"{exit_reason(w.process.exitcode)})"))
                w.handle = None
                w.stop(kill=True)
                self.slots[i] = None
        return events

    def cancel_all(self) -> None:
        for i, w in enumerate(self.slots):
            if w is not None:
                if w.handle is not None:
                    # killed first, then the rows it had sent are read (a resumed run needs
                    # those its checkpoint counted; they had been lost with the pipe)
                    if w.process.is_alive():
                        w.process.kill()
                    w.process.join(timeout=5)
                    self._drain(w)
                w.stop(kill=True)
                self.slots[i] = None

    def _drain(self, w: _Worker) -> None:
        """Hand on the rows a stopped worker's pipe still holds (up to a message cut short)."""
        try:
            while w.conn.poll():
                kind, payload = w.conn.recv()
                if kind == "rows":
                    self.on_rows(w.run_id, payload)
        except Exception:  # noqa: BLE001 - the end of the pipe, or a half-written message
            pass

    def close(self) -> None:
        try:
            for i, w in enumerate(self.slots):
                if w is not None:
                    w.stop(kill=w.handle is not None)
                    self.slots[i] = None
        except BaseException:
            # an interrupt while one is joined: kill the rest, or the exit would wait forever
            # on the workers not yet told to end (multiprocessing joins its children)
            self.cancel_all()
            raise


def exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _worker_main(conn, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the driver; it stops us
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        record: RunRecord = execute_run(task, send=lambda rows: conn.send(("rows", rows)))
        conn.send(("done", record))


def _die_with_parent(parent_pid: int) -> None:
    """End this worker when the driver that started it ends, however it ends."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)       # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:              # it died before we asked
        os._exit(1)

    def watch() -> None:
        while True:
            threading.Event().wait(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="sgdlab-parent-watch", daemon=True).start()
