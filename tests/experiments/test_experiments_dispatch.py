"""Parallel sweeps: spawned worker processes (the Ray backend: test_sweep_ray.py)."""
from __future__ import annotations

import sys
import time

import pytest

from sgdlab.experiments.runner import run_experiment


def test_workers_run_in_parallel_processes_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_THREADS", "1")
    store = str(tmp_path / "s.sqlite")
    res = run_experiment("chaudhari-pde-smoothing", scale="smoke", out_dir=tmp_path / "o",
                         store_path=store, workers=2, progress=None)
    assert res.ok and len(res.sweep.executed) == 1 and not res.sweep.failed
    again = run_experiment("chaudhari-pde-smoothing", scale="smoke", out_dir=tmp_path / "o",
                           store_path=store, workers=2, progress=None)
    assert again.sweep.executed == [] and len(again.sweep.skipped) == 1


def test_an_interrupt_while_the_workers_are_stopped_after_the_sweep_says_the_runs_are_stored(
        tmp_path, monkeypatch, capsys):
    import multiprocessing as mp

    from sgdlab.cli.main import main
    from sgdlab.experiments import backends

    monkeypatch.setenv("SGDLAB_THREADS", "1")
    stop, stopped = backends._Worker.stop, []

    def interrupted_once(worker, kill):
        if not stopped:          # a SIGTERM while the first worker is stopped
            stopped.append(worker)
            raise KeyboardInterrupt("terminated (SIGTERM)")
        stop(worker, kill)

    monkeypatch.setattr(backends._Worker, "stop", interrupted_once)
    store = str(tmp_path / "s.sqlite")
    try:
        assert main(["run", "chaudhari-pde-smoothing", "--scale", "smoke", "--workers", "2",
                     "--out", str(tmp_path / "o"), "--store", store]) == 130
        left = [p for p in mp.active_children() if p.name.startswith("sgdlab-worker")]
    finally:
        for p in mp.active_children():   # else the exit of the test process waits on them
            p.kill()
    said = capsys.readouterr().err
    assert "the report was terminated after the sweep had ended (its runs are stored)" in said
    assert "in progress" not in said and stopped and not left
    from sgdlab.store import RunStore

    assert [r["status"] for r in RunStore(store).list_runs()] == ["finished"]


# --- the pool's bookkeeping, with forked stand-in workers (a spawned one imports torch: ~3 s)


def _stand_in_worker(conn, parent_pid):
    """A worker that acts out its task's run id: ``rows`` sends rows then its record;
    ``die`` sends rows then is SIGKILLed; ``garble`` sends bytes that are no message;
    ``hang`` waits to be stopped."""
    import os
    import signal

    from sgdlab.experiments.worker import RunRecord

    while True:
        task = conn.recv()
        if task is None:
            return
        if task.run_id.startswith(("rows", "die")):
            conn.send(("rows", [(task.run_id, 0, 1.0, 0.0)]))
        if task.run_id.startswith("rows"):
            conn.send(("done", RunRecord("finished", summary={"run": task.run_id})))
        elif task.run_id.startswith("die"):
            time.sleep(0.2)            # the rows are in the pipe before it dies
            os.kill(os.getpid(), signal.SIGKILL)
        elif task.run_id.startswith("garble"):
            conn.send_bytes(b"\x80\x04 not a pickle")
            time.sleep(60)
        else:
            time.sleep(60)


@pytest.fixture
def pool(monkeypatch):
    """A ProcessPoolBackend(2) of stand-in workers; the rows it hands on, in ``pool.got``."""
    import multiprocessing as mp

    from sgdlab.experiments import backends

    monkeypatch.setattr(backends, "_worker_main", _stand_in_worker)
    got = []
    pool = backends.ProcessPoolBackend(2, lambda run_id, rows: got.append((run_id, rows)))
    pool.ctx, pool.got = mp.get_context("fork"), got
    yield pool
    pool.cancel_all()


def _task(run_id: str):
    from sgdlab.experiments.worker import RunTask

    return RunTask({}, None, run_id, "cpu", "unused")


def _events(pool, n: int) -> list:
    events, end = [], time.monotonic() + 10
    while len(events) < n and time.monotonic() < end:
        events += pool.wait(0.5)
    return events


def test_the_pool_runs_as_many_runs_at_once_as_it_has_workers(pool):
    h1 = pool.submit(_task("hang-1"))
    assert pool.has_capacity()
    h2 = pool.submit(_task("rows-2"))
    assert not pool.has_capacity() and h1 != h2
    (event,) = _events(pool, 1)
    assert event[:2] == (h2, "done") and event[2].summary == {"run": "rows-2"}
    assert pool.got == [("rows-2", [("rows-2", 0, 1.0, 0.0)])] and pool.has_capacity()


def test_a_killed_worker_loses_only_its_own_run_named_with_its_signal(pool):
    dead = pool.submit(_task("die-1"))
    alive = pool.submit(_task("hang-2"))
    (event,) = _events(pool, 1)
    assert event == (dead, "lost", "its worker process died (killed by SIGKILL)")
    assert pool.got == [("die-1", [("die-1", 0, 1.0, 0.0)])]    # what it sent is kept
    assert pool.slots.count(None) == 1                            # its slot, freed
    assert pool.wait(0.2) == []                                  # the other runs on
    again = pool.submit(_task("rows-3"))                         # a fresh worker in its slot
    assert _events(pool, 1)[0][:2] == (again, "done") and len({dead, alive, again}) == 3


def test_a_message_cut_short_loses_its_run_and_says_so(pool):
    h = pool.submit(_task("garble-1"))
    (event,) = _events(pool, 1)
    assert event == (h, "lost", "unreadable message from its worker (UnpicklingError)")
    assert pool.slots.count(None) == 2


@pytest.mark.parametrize("code, said", [(-9, "killed by SIGKILL"), (-15, "killed by SIGTERM"),
                                        (-200, "killed by signal 200"), (0, "exit status 0"),
                                        (3, "exit status 3"), (None, "still running")])
def test_a_dead_workers_exit_is_said_as_its_signal_or_status(code, said):
    from sgdlab.experiments.backends import exit_reason

    assert exit_reason(code) == said


def test_the_in_process_backend_takes_one_run_at_a_time_and_streams_its_rows(tmp_path):
    from sgdlab.experiments.backends import InProcessBackend
    from test_worker import _task as scripted

    got = []
    backend = InProcessBackend(lambda run_id, rows: got.append((run_id, [r[:3] for r in rows])))
    assert backend.wait(0.1) == [] and backend.has_capacity()
    h = backend.submit(scripted("data", tmp_path))
    assert not backend.has_capacity()
    ((handle, kind, record),) = backend.wait(0.1)
    assert (handle, kind, record.status, record.rows) == (h, "done", "finished", [])
    assert got == [("r1", [("loss", 0, 1.5), ("loss", 1, 0.5)])] and backend.has_capacity()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_ignores_ctrl_c_which_the_driver_handles_and_ends_when_told():
    """Ctrl-C reaches every process of the terminal's group: the workers let the driver stop
    them (and record their runs interrupted) instead of dying each with a traceback."""
    import multiprocessing as mp
    import os
    import signal
    from pathlib import Path

    from sgdlab.experiments.backends import _Worker

    w = _Worker(mp.get_context("fork"), 0)
    try:
        status = Path(f"/proc/{w.process.pid}/status")
        end = time.monotonic() + 10
        while time.monotonic() < end:      # until it has set up its signals
            mask = next(int(line.split()[1], 16) for line in status.read_text().splitlines()
                        if line.startswith("SigIgn:"))
            if mask & (1 << (signal.SIGINT - 1)):
                break
            time.sleep(0.01)
        os.kill(w.process.pid, signal.SIGINT)
        time.sleep(0.2)
        assert w.process.is_alive()
    finally:
        w.stop(kill=False)
    assert w.process.exitcode == 0            # told to end, it ended of itself
