"""An embedded SQLite run store: runs, their metric time series and artifacts.

One file holds every run of a project. Several processes (the runs of a sweep) may write to it
at once: the database runs in WAL mode with a busy timeout, every write is its own short
transaction, and a row is durable as soon as the call that wrote it returns, so a process
killed mid-run loses only what it had not yet handed to the store (see :class:`MetricWriter`,
which the training loop uses to batch its writes and flushes at least every few seconds and at
every epoch end).

SQLite's locking needs a local file system: do not put the store on NFS.

This module imports no torch, so short-lived tools (``sgdlab runs``) start fast.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError

STATUSES = ("running", "finished", "diverged", "failed", "interrupted")
DEFAULT_PATH = Path("sgdlab-runs") / "runs.sqlite"
ENV_VAR = "SGDLAB_STORE"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT,
    experiment TEXT,
    config TEXT NOT NULL,
    env TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT,
    summary TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    step INTEGER NOT NULL,
    value REAL,
    wall REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id, name, step);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_by_run ON artifacts (run_id);
"""


def default_store_path() -> Path:
    """``$SGDLAB_STORE`` if set, else ``./sgdlab-runs/runs.sqlite`` (relative to the cwd)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_run_id() -> str:
    """A short id that sorts by creation time: ``YYYYMMDD-HHMMSS-xxxx`` (UTC, 4 random hex)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{os.urandom(2).hex()}"


def _to_json(obj: Any) -> str:
    # default=str: configs may carry paths or tuples; the store keeps a readable record.
    return json.dumps(obj, sort_keys=True, default=str, allow_nan=True)


def _float_or_nan(v: Any) -> float:
    # SQLite stores NaN as NULL.
    return math.nan if v is None else float(v)


class RunStore:
    """SQLite store of runs (config, environment, status, summary), metrics and artifacts.

    ``RunStore(path=None)`` opens (creating if needed) ``path``, ``$SGDLAB_STORE`` or
    ``./sgdlab-runs/runs.sqlite``. A connection is opened lazily per process, so a store object
    may be passed to worker processes.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = 60.0):
        self.path = Path(path) if path is not None else default_store_path()
        self.timeout = float(timeout)
        self._conn_obj: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._connect()

    # --- connection -----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn_obj is not None and self._pid == os.getpid():
            return self._conn_obj
        if self.path.exists() and self.path.is_dir():
            raise UserError(f"run store path {str(self.path)!r} is a directory, expected a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise UserError(f"cannot open run store {str(self.path)!r}: {e}") from None
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            with _transaction(conn):
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise UserError(f"{str(self.path)!r} is not a usable sgdlab run store: {e}") from None
        self._conn_obj, self._pid = conn, os.getpid()
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        return self._connect()

    def close(self) -> None:
        if self._conn_obj is not None and self._pid == os.getpid():
            self._conn_obj.close()
        self._conn_obj = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # --- runs -----------------------------------------------------------------------------
    def create_run(self, config: dict[str, Any], *, name: str | None = None,
                   experiment: str | None = None, env: dict[str, Any] | None = None,
                   status: str = "running", run_id: str | None = None) -> str:
        """Insert a run and return its id. ``env`` defaults to :func:`environment`."""
        if env is None:
            from .env import environment
            seed = None
            if isinstance(config, dict):
                seed = (config.get("train") or {}).get("seed") if isinstance(
                    config.get("train"), dict) else config.get("seed")
            env = environment(seed=seed)
        _check_status(status)
        now = _now_iso()
        for attempt in range(20):
            rid = run_id or new_run_id()
            try:
                with _transaction(self._conn) as c:
                    c.execute(
                        "INSERT INTO runs (id, name, experiment, config, env, status, message, "
                        "summary, created, updated) VALUES (?, ?, ?, ?, ?, ?, NULL, '{}', ?, ?)",
                        (rid, name, experiment, _to_json(config), _to_json(env), status, now,
                         now))
                return rid
            except sqlite3.IntegrityError:
                if run_id is not None:
                    raise UserError(f"run id {run_id!r} already exists in {self.path}") from None
        raise RuntimeError("could not draw a fresh run id")  # pragma: no cover

    def set_status(self, run_id: str, status: str, message: str | None = None) -> None:
        _check_status(status)
        self._update(run_id, "status = ?, message = ?", (status, message))

    def set_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        self._update(run_id, "summary = ?", (_to_json(summary),))

    def _update(self, run_id: str, assignments: str, values: tuple) -> None:
        with _transaction(self._conn) as c:
            cur = c.execute(f"UPDATE runs SET {assignments}, updated = ? WHERE id = ?",
                            (*values, _now_iso(), run_id))
            if cur.rowcount == 0:
                raise UserError(f"no run {run_id!r} in {self.path}")

    def resolve(self, run_id: str) -> str:
        """The full id of the run whose id is or starts with ``run_id`` (must be unique)."""
        rows = self._conn.execute("SELECT id FROM runs WHERE id = ? OR id LIKE ? ORDER BY id",
                                  (run_id, run_id.replace("%", "") + "%")).fetchall()
        ids = [r[0] for r in rows]
        if run_id in ids:
            return run_id
        if not ids:
            raise UserError(f"no run {run_id!r} in {self.path}")
        if len(ids) > 1:
            raise UserError(f"run id prefix {run_id!r} is ambiguous: {', '.join(ids[:5])}"
                            + (" ..." if len(ids) > 5 else ""))
        return ids[0]

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run as a dict: id, name, experiment, config, env, status, message, summary,
        created, updated, artifacts (list of {kind, path, created})."""
        rid = self.resolve(run_id)
        row = self._conn.execute(
            "SELECT id, name, experiment, config, env, status, message, summary, created, "
            "updated FROM runs WHERE id = ?", (rid,)).fetchone()
        run = _run_row(row)
        run["artifacts"] = [
            {"kind": k, "path": p, "created": c} for k, p, c in self._conn.execute(
                "SELECT kind, path, created FROM artifacts WHERE run_id = ? ORDER BY rowid",
                (rid,))]
        return run

    def list_runs(self, experiment: str | None = None,
                  status: str | None = None) -> list[dict[str, Any]]:
        """Runs (oldest first), optionally filtered by experiment and status."""
        where, args = [], []
        if experiment is not None:
            where.append("experiment = ?")
            args.append(experiment)
        if status is not None:
            _check_status(status)
            where.append("status = ?")
            args.append(status)
        sql = ("SELECT id, name, experiment, config, env, status, message, summary, created, "
               "updated FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY created, id")
        return [_run_row(r) for r in self._conn.execute(sql, args)]

    # --- metrics --------------------------------------------------------------------------
    def log_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        """Record several scalars at one step (one transaction)."""
        wall = time.time()
        self.log_many(run_id, [(name, step, value, wall) for name, value in values.items()])

    def log_metric(self, run_id: str, name: str, step: int, value: float) -> None:
        self.log_many(run_id, [(name, step, value, time.time())])

    def log_many(self, run_id: str, rows: Iterable[Sequence[Any]]) -> None:
        """Insert ``(name, step, value[, wall])`` rows in one transaction (durable on return)."""
        now = time.time()
        data = [(run_id, str(r[0]), int(r[1]), float(r[2]), float(r[3]) if len(r) > 3 else now)
                for r in rows]
        if not data:
            return
        with _transaction(self._conn) as c:
            c.executemany("INSERT INTO metrics (run_id, name, step, value, wall) "
                          "VALUES (?, ?, ?, ?, ?)", data)

    def delete_metrics_after(self, run_id: str, step: int) -> int:
        """Drop metrics logged after ``step`` (used on resume: those steps are redone)."""
        with _transaction(self._conn) as c:
            return c.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?",
                             (run_id, int(step))).rowcount

    def metrics(self, run_id: str, name: str | None = None) -> dict[str, list[tuple[int, float]]]:
        """``{metric: [(step, value), ...]}`` sorted by step (insertion order within a step)."""
        rid = self.resolve(run_id)
        sql = "SELECT name, step, value FROM metrics WHERE run_id = ?"
        args: list[Any] = [rid]
        if name is not None:
            sql += " AND name = ?"
            args.append(name)
        out: dict[str, list[tuple[int, float]]] = {}
        for n, s, v in self._conn.execute(sql + " ORDER BY name, step, rowid", args):
            out.setdefault(n, []).append((int(s), _float_or_nan(v)))
        return out

    def count_metrics(self, run_id: str | None = None) -> int:
        if run_id is None:
            return self._conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM metrics WHERE run_id = ?",
                                  (run_id,)).fetchone()[0]

    def writer(self, run_id: str, *, flush_every: float = 2.0,
               max_buffer: int = 2000) -> "MetricWriter":
        return MetricWriter(self, run_id, flush_every=flush_every, max_buffer=max_buffer)

    # --- artifacts ------------------------------------------------------------------------
    def add_artifact(self, run_id: str, kind: str, path: str | os.PathLike) -> None:
        """Record a file the run produced (``kind``: "checkpoint", "figure", "out_dir", ...);
        recording the same (kind, path) twice keeps one row."""
        with _transaction(self._conn) as c:
            if c.execute("SELECT 1 FROM artifacts WHERE run_id = ? AND kind = ? AND path = ?",
                         (run_id, kind, str(path))).fetchone() is None:
                c.execute("INSERT INTO artifacts (run_id, kind, path, created) "
                          "VALUES (?, ?, ?, ?)", (run_id, kind, str(path), _now_iso()))

    def artifacts(self, run_id: str, kind: str | None = None) -> list[str]:
        rows = self._conn.execute(
            "SELECT kind, path FROM artifacts WHERE run_id = ? ORDER BY rowid", (run_id,))
        return [p for k, p in rows if kind is None or k == kind]

    # --- export ---------------------------------------------------------------------------
    def export(self, path: str | os.PathLike, run_ids: Sequence[str] | None = None,
               fmt: str = "csv") -> Path:
        """Write runs and metrics to ``path``.

        ``csv``: one long table, a row per metric record, with columns
        ``run_id, run_name, experiment, status, metric, step, value, wall``.
        ``json``: a list of runs, each with config, env, status, summary, artifacts and
        ``metrics: {name: [[step, value], ...]}``.
        """
        fmt = fmt.lower()
        if fmt not in ("csv", "json"):
            raise UserError(f"unknown export format {fmt!r}; use 'csv' or 'json'")
        ids = [self.resolve(r) for r in run_ids] if run_ids else [
            r["id"] for r in self.list_runs()]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        if fmt == "json":
            runs = []
            for rid in ids:
                run = self.get_run(rid)
                run["metrics"] = {k: [list(p) for p in v]
                                  for k, v in self.metrics(rid).items()}
                runs.append(run)
            tmp.write_text(json.dumps(runs, indent=1, default=str))
        else:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["run_id", "run_name", "experiment", "status", "metric", "step",
                            "value", "wall"])
                for rid in ids:
                    run = self.get_run(rid)
                    for n, s, v, t in self._conn.execute(
                            "SELECT name, step, value, wall FROM metrics WHERE run_id = ? "
                            "ORDER BY name, step, rowid", (rid,)):
                        w.writerow([rid, run["name"] or "", run["experiment"] or "",
                                    run["status"], n, s, repr(_float_or_nan(v)), t])
        os.replace(tmp, path)
        return path


class MetricWriter:
    """Buffers ``(name, step, value)`` records and writes them in batches.

    ``log`` is cheap (a list append); the buffer is written when it holds ``max_buffer`` rows,
    when ``flush_every`` seconds have passed since the last write, and on ``flush()`` (the loop
    calls it at each epoch end and at the end of training). Every write commits, so a killed
    process loses at most the last ``flush_every`` seconds of records.
    """

    def __init__(self, store: RunStore, run_id: str, *, flush_every: float = 2.0,
                 max_buffer: int = 2000):
        self.store, self.run_id = store, run_id
        self.flush_every, self.max_buffer = float(flush_every), int(max_buffer)
        self._rows: list[tuple[str, int, float, float]] = []
        self._last = time.monotonic()

    def log(self, name: str, value: float, step: int) -> None:
        self._rows.append((name, step, value, time.time()))
        if len(self._rows) >= self.max_buffer or time.monotonic() - self._last >= self.flush_every:
            self.flush()

    __call__ = log  # usable directly as TrainContext.logger

    def flush(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self.store.log_many(self.run_id, rows)
        self._last = time.monotonic()


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error) on an autocommit connection.

    IMMEDIATE takes the write lock up front, so concurrent writers queue on the busy timeout
    instead of failing with a lock upgrade deadlock.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"Invalid run status {status!r}; one of {', '.join(STATUSES)}")


def _run_row(row: tuple) -> dict[str, Any]:
    rid, name, experiment, config, env, status, message, summary, created, updated = row
    return {"id": rid, "name": name, "experiment": experiment, "config": json.loads(config),
            "env": json.loads(env), "status": status, "message": message,
            "summary": json.loads(summary or "{}"), "created": created, "updated": updated}
