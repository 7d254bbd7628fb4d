"""An embedded SQLite run store: runs, their metric time series and artifacts.

One file holds every run of a project. Several processes (the runs of a sweep) may write to it
at once: the database runs in WAL mode with a busy timeout, every write is its own short
transaction, and a row is durable as soon as the call that wrote it returns, so a process
killed mid-run loses only what it had not yet handed to the store (see :class:`MetricWriter`,
which the training loop uses to batch its writes and flushes at least every few seconds, at
every epoch end and before every checkpoint).

**Completion is one transaction.** :meth:`RunStore.complete_run` writes a run's last metric
rows, its artifacts, its summary and its end status (and releases its lease) at once: a run is
``finished`` only with everything it owes recorded, and a process killed before that commit
leaves a run that is still ``running`` — and is redone by a rerun or resume.

**Liveness.** A running run records the host, pid (and the process' start time, so a reused
pid is not mistaken for it) of the process that owns it; that process refreshes a heartbeat
every few seconds from a background thread. :func:`shown_status` turns a ``running`` run whose
owner is gone into ``interrupted`` (same host: the pid is dead) or ``stale`` (another host: no
heartbeat for :data:`STALE_AFTER` seconds); :meth:`RunStore.list_runs` and ``get_run`` report
that status and keep the stored one as ``recorded_status``.

**Leases.** A sweep claims a run key (:meth:`RunStore.claim_key`) before running it: two
sweeps on one store never run the same key at once, and a key whose holder died is taken
over.

**Deletion.** :meth:`RunStore.delete_runs` deletes runs and every row keyed by them in one
transaction, refusing (inside it) a run a live process holds; their files are removed after
the commit (:mod:`sgdlab.store.deletion`).

SQLite's locking needs a local file system: do not put the store on NFS. A store on a
read-only file system (or a read-only file) opens with ``RunStore(path, readonly=True)`` for
listing and export.

This module imports no torch, so short-lived tools (``sgdlab runs``) start fast.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import replaced_whole
from ..errors import UserError, file_problem
from ..strict_json import nonfinite_from_strings, write_atomic

STATUSES = ("running", "finished", "diverged", "failed", "interrupted")
SHOWN_STATUSES = STATUSES + ("stale",)   # "stale": running on another host, heartbeat too old
DEFAULT_PATH = Path("sgdlab-runs") / "runs.sqlite"
ENV_VAR = "SGDLAB_STORE"
HEARTBEAT_EVERY = 5.0    # seconds between heartbeats of a process that owns running runs
STALE_AFTER = 30.0       # a run on another host without a heartbeat for this long is stale
# the prefix of the rows `sgdlab measure` adds to a run: they belong to no training step, so a
# resume, which drops the rows logged after its checkpoint, keeps them
MEASURED = "measure/"
# of the test split (`sgdlab measure --data test`): beside the train split's ``measure/...``,
# which keep their names (stored before the split was named)
MEASURED_TEST = f"{MEASURED}test/"
_TRAINING_ROW = f"substr(name, 1, {len(MEASURED)}) != '{MEASURED}'"

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
    updated TEXT NOT NULL,
    host TEXT,
    pid INTEGER,
    pid_start TEXT,
    heartbeat REAL
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
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    run_id TEXT,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_start TEXT,
    heartbeat REAL NOT NULL,
    acquired TEXT NOT NULL
);
"""
# columns added to `runs` after the first release: stores created before get them on open
_OWNER_COLUMNS = (("host", "TEXT"), ("pid", "INTEGER"), ("pid_start", "TEXT"),
                  ("heartbeat", "REAL"))
_RUN_COLUMNS = ("id, name, experiment, config, env, status, message, summary, created, "
                "updated, host, pid, pid_start, heartbeat")
# the store's layout, kept in SQLite's user_version: a store a later sgdlab changed in a way
# this one cannot read or write correctly carries a higher number and is refused (0: a store
# from before the number, the layout of 1, stamped when opened for writing)
SCHEMA_VERSION = 1
# the tables and columns every sgdlab store has had since the first release: a database
# without them is another program's, which the store must neither write into nor misread
_CORE_COLUMNS = {
    "runs": ("id", "name", "experiment", "config", "env", "status", "message", "summary",
             "created", "updated"),
    "metrics": ("run_id", "name", "step", "value", "wall"),
    "artifacts": ("run_id", "kind", "path", "created"),
}


# the stores this process connected to, in order: SQLite reports a damaged page (met by a
# query long after the store opened) without the file's name, and the CLI names it from here
_OPENED: list[str] = []


def store_connections() -> int:
    """How many connections to run stores this process has made (the ``since`` of
    :func:`opened_stores`)."""
    return len(_OPENED)


def opened_stores(since: int = 0) -> list[str]:
    """The paths of the run stores this process connected to after its first ``since``
    connections (:func:`store_connections` taken earlier), each once."""
    return list(dict.fromkeys(_OPENED[since:]))


def folder_hint(path: str | os.PathLike, *, said: bool = False) -> str:
    """What to append to a message refusing the store path ``path`` when it is a directory
    (``--store sgdlab-runs``, the folder rather than the store's file in it): the store file
    in it, if any, else that it is a folder (unless the message ``said`` so); else ``""``."""
    path = Path(path)
    if not path.is_dir():
        return ""
    inside = path / DEFAULT_PATH.name
    if inside.is_file():
        return f"; the store in that folder is {inside}"
    return "" if said else "; it is a folder, not a store's file"


def first_run_hint(path: str | os.PathLike, record: str | None = None) -> str:
    """What to append to a message that finds no store at ``path`` when that is the default
    store of the current folder and nothing is there: most often no run was recorded from this
    folder yet (a store named by ``--store`` or ``$SGDLAB_STORE`` is a path to check). Names
    the folder and ``record``, the sentence naming the command that records a first run
    (default: a training or an experiment); else ``""``."""
    path = Path(path)
    if path != DEFAULT_PATH or path.exists():
        return ""
    record = record or "`sgdlab train digits-mlp` or `sgdlab run NAME` records runs there"
    return f"; no run has been recorded from this folder ({os.getcwd()}) yet: {record}"


def default_store_path() -> Path:
    """``$SGDLAB_STORE`` if set, else ``./sgdlab-runs/runs.sqlite`` (relative to the cwd)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def _not_a_store(conn: sqlite3.Connection, empty_ok: bool) -> str | None:
    """Why the database behind ``conn`` is not an sgdlab run store, or None (it is one; or it
    holds no table and ``empty_ok``: a new store)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None if empty_ok else "it holds no tables"
    for table, needed in _CORE_COLUMNS.items():
        if table not in tables:
            return (f"it has no {table} table (its tables: "
                    f"{', '.join(sorted(tables)[:6])}{', ...' if len(tables) > 6 else ''})")
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        missing = [c for c in needed if c not in have]
        if missing:
            return f"its {table} table lacks the column(s) {', '.join(missing)}"
    return None


def _newer_schema(conn: sqlite3.Connection, path: Path) -> None:
    """A :class:`UserError` for a store whose layout is newer than :data:`SCHEMA_VERSION`."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise UserError(f"run store {str(path)!r} has layout version {version}, written by a "
                        f"newer sgdlab; this one reads up to version {SCHEMA_VERSION}: "
                        "upgrade sgdlab to read or write it")


def is_locked(e: BaseException) -> bool:
    """Whether ``e`` is SQLite's "database is locked": another connection held the write lock
    longer than the busy timeout."""
    return isinstance(e, sqlite3.OperationalError) and "database is locked" in str(e)


def locked_message(where: str, timeout: float | None = None, *,
                   then: str = "run the command again") -> str:
    """What to say of a run store another process kept locked (:func:`is_locked`); ``then``:
    what to do once it is free."""
    waited = f" for {timeout:.0f} s" if timeout is not None else ""
    return (f"run store {where} is locked by another process (waited{waited} for its write "
            "lock): a program with a write transaction open on it (an sqlite3 shell, a "
            f"database browser with unsaved changes) holds it; end that transaction and {then}")


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_run_id() -> str:
    """A short id that sorts by creation time: ``YYYYMMDD-HHMMSS-xxxx`` (UTC, 4 random hex)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{os.urandom(2).hex()}"


def _to_json(obj: Any) -> str:
    # default=str: configs may carry paths or tuples; the store keeps a readable record.
    # NaN / inf stay (not null): read back they are the same floats, where a null would be
    # None to the analyses; what leaves the store (export, `runs --json`) is strict JSON.
    return json.dumps(obj, sort_keys=True, default=str, allow_nan=True)


def _float_or_nan(v: Any) -> float:
    # SQLite stores NaN as NULL.
    return math.nan if v is None else float(v)


# --- liveness --------------------------------------------------------------------------------
def _start_token(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: /proc/PID/stat field 22), which tells a
    reused pid from the process that recorded it; None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()   # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:   # a zombie (killed, not yet reaped) is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def this_process() -> dict[str, Any]:
    """``{host, pid, pid_start}`` of the calling process (what a run or lease records)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": _start_token(pid)}


def owner_alive(host: str | None, pid: int | None, pid_start: str | None,
                heartbeat: float | None, now: float | None = None) -> bool | None:
    """Whether the process recorded as (host, pid, pid_start, heartbeat) still runs: on this
    host by its pid (and start time); on another by a heartbeat younger than
    :data:`STALE_AFTER`. None when nothing was recorded (stores written before liveness)."""
    if pid is None or host is None:
        return None
    now = time.time() if now is None else now
    if host == socket.gethostname():
        if not _pid_alive(int(pid)):
            return False
        token = _start_token(int(pid)) if pid_start is not None else None
        if token is not None:
            return token == pid_start
        return heartbeat is None or now - heartbeat < STALE_AFTER
    return heartbeat is not None and now - heartbeat < STALE_AFTER


def _refuse_live_owner(conn: Any, run_id: str, me: dict[str, Any], path: Any) -> None:
    """A :class:`UserError` naming ``run_id`` and its owner when another live process runs it
    (:meth:`RunStore.claim`'s refusal)."""
    row = conn.execute("SELECT status, host, pid, pid_start, heartbeat FROM runs WHERE id = ?",
                       (run_id,)).fetchone()
    if row is None:
        raise UserError(f"no run {run_id!r} in {path}")
    status, host, pid, start, beat = row
    # an unknown owner (a store from before liveness) cannot be judged: allowed
    if (status == "running" and (host, pid) != (me["host"], me["pid"])
            and owner_alive(host, pid, start, beat)):
        raise UserError(f"run {run_id} is still running (process {pid} on {host}"
                        + (f", heartbeat {time.time() - beat:.0f} s ago"
                           if beat is not None else "") + "); stop it first")


def shown_status(run: dict[str, Any], now: float | None = None) -> str:
    """A run's status as a user should see it: a ``running`` run whose process is gone is
    ``interrupted`` (same host) or ``stale`` (another host, heartbeat too old)."""
    status = run.get("recorded_status", run.get("status"))
    if status != "running":
        return status
    alive = owner_alive(run.get("host"), run.get("pid"), run.get("pid_start"),
                        run.get("heartbeat"), now)
    if alive is False:
        return "interrupted" if run.get("host") == socket.gethostname() else "stale"
    return status


def run_scale(run: dict[str, Any]) -> str | None:
    """The scale ``sgdlab run`` ran a stored run at (its config's ``scale``); None for a run
    of another command."""
    config = run.get("config")
    return config.get("scale") if isinstance(config, dict) else None


def summary_numbers(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers of a run's summary (its final values), in its order and as stored (an
    int stays an int): what is no number (its status, a word) and bools left out."""
    return {k: v for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


# --- the heartbeat thread ------------------------------------------------------------------------
_BEATS: dict[str, "_Heartbeat"] = {}
_BEATS_LOCK = threading.Lock()


class _Heartbeat(threading.Thread):
    """Refreshes ``heartbeat`` of the running runs and leases this process owns in one store,
    every :data:`HEARTBEAT_EVERY` seconds, on its own connection; ends when it owns nothing."""

    def __init__(self, path: str, timeout: float):
        super().__init__(name=f"sgdlab-heartbeat:{path}", daemon=True)
        self.path, self.timeout, self.generation = path, timeout, 0
        self.me = this_process()
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            conn = sqlite3.connect(f"{Path(self.path).as_uri()}?mode=rw", uri=True,
                                   timeout=self.timeout, isolation_level=None)
        except sqlite3.Error:       # the store is gone: nothing to keep alive
            return self._leave()
        errors = 0
        try:
            while not self.stop_event.wait(HEARTBEAT_EVERY):
                with _BEATS_LOCK:
                    generation = self.generation
                try:
                    owned = _beat(conn, self.me)
                    errors = 0
                except sqlite3.Error:
                    errors += 1     # busy: try again at the next beat; gone: give up
                    if errors >= 3 or not os.path.exists(self.path):
                        return self._leave()
                    continue
                with _BEATS_LOCK:
                    if owned == 0 and generation == self.generation:
                        _BEATS.pop(self.path, None)
                        return
        finally:
            conn.close()

    def _leave(self) -> None:
        with _BEATS_LOCK:
            if _BEATS.get(self.path) is self:
                _BEATS.pop(self.path)


def stop_heartbeats() -> None:
    """Stop this process' heartbeat threads and wait until they have ended; the next running
    run or lease starts its store's again. Call it before a ``fork`` that is not followed by
    ``exec`` (a forked test worker) while this process owns running runs: a heartbeat inside
    SQLite at the fork leaves SQLite's locks held in the child, whose first store then hangs
    for ever."""
    with _BEATS_LOCK:
        beats = list(_BEATS.values())
        _BEATS.clear()
    for beat in beats:
        beat.stop_event.set()
    for beat in beats:
        beat.join()


def _beat(conn: sqlite3.Connection, me: dict[str, Any]) -> int:
    now = time.time()
    with _transaction(conn) as c:
        n = c.execute("UPDATE runs SET heartbeat = ? WHERE host = ? AND pid = ? AND "
                      "status = 'running'", (now, me["host"], me["pid"])).rowcount
        n += c.execute("UPDATE leases SET heartbeat = ? WHERE host = ? AND pid = ?",
                       (now, me["host"], me["pid"])).rowcount
    return n


class RunStore:
    """SQLite store of runs (config, environment, status, summary), metrics and artifacts.

    ``RunStore(path=None)`` opens (creating if needed) ``path``, ``$SGDLAB_STORE`` or
    ``./sgdlab-runs/runs.sqlite``. A connection is opened lazily per process, so a store object
    may be passed to worker processes. ``readonly=True`` opens an existing store without
    writing anything (a store on a read-only file system can still be listed and exported).
    """

    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = 60.0,
                 readonly: bool = False):
        self.path = Path(path) if path is not None else default_store_path()
        self.timeout = float(timeout)
        self.readonly = bool(readonly)
        self._conn_obj: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._columns = ""
        self._connect()

    # --- connection -----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn_obj is not None and self._pid == os.getpid():
            return self._conn_obj
        if self.path.exists() and self.path.is_dir():
            raise UserError(f"run store path {str(self.path)!r} is a directory, expected a "
                            f"file{folder_hint(self.path, said=True)}")
        conn = self._open_readonly() if self.readonly else self._open_writable()
        cols = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
        self._columns = ", ".join(c if c in cols else f"NULL AS {c}"
                                  for c in _RUN_COLUMNS.split(", "))
        self._conn_obj, self._pid = conn, os.getpid()
        _OPENED.append(str(self.path))
        return conn

    def _open_writable(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        except OSError as e:
            raise UserError(f"cannot open run store {str(self.path)!r}: {file_problem(e)}") \
                from None
        except sqlite3.Error as e:
            raise UserError(f"cannot open run store {str(self.path)!r}: {e}") from None
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        try:
            self._initialise(conn)
        except UserError:
            conn.close()
            raise
        except sqlite3.OperationalError as e:
            conn.close()
            if is_locked(e):
                raise UserError(locked_message(str(self.path), self.timeout)) from None
            if "readonly" in str(e) or "read-only" in str(e) or "unable to open" in str(e):
                raise UserError(f"run store {str(self.path)!r} is read-only ({e}); it can "
                                "be listed and exported (`sgdlab runs list|show|export`), "
                                "not written") from None
            raise UserError(f"{str(self.path)!r} is not a usable sgdlab run store: {e}") from None
        except sqlite3.DatabaseError as e:
            conn.close()
            raise UserError(f"{str(self.path)!r} is not a usable sgdlab run store: {e}") from None
        return conn

    def _initialise(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema. Two processes creating one new store at once can get
        "database is locked" at once: SQLite skips the busy handler where waiting could
        deadlock (switching to WAL, upgrading a read lock), so retry until ``timeout``."""
        deadline = time.monotonic() + self.timeout
        pause = 0.005
        while True:
            try:
                # before anything is written (WAL mode changes the file's header)
                problem = _not_a_store(conn, empty_ok=True)
                if problem is not None:
                    raise UserError(f"{str(self.path)!r} is not an sgdlab run store: {problem}")
                _newer_schema(conn, self.path)
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                with _transaction(conn):
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            conn.execute(stmt)
                    have = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
                    for col, kind in _OWNER_COLUMNS:
                        if col not in have:
                            conn.execute(f"ALTER TABLE runs ADD COLUMN {col} {kind}")
                    _newer_schema(conn, self.path)     # stamped by another process meanwhile
                    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) \
                        or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.25)

    def _open_readonly(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise UserError(f"no run store at {self.path}{folder_hint(self.path)}")
        uri = Path(os.path.abspath(self.path)).as_uri()
        last: Exception | None = None
        # mode=ro reads a WAL store when its -wal/-shm files exist or can be created; on a
        # read-only file system they cannot, and immutable=1 reads the file as it stands.
        for query in ("mode=ro", "mode=ro&immutable=1"):
            if "immutable" in query:
                self._check_no_log()
            try:
                conn = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=self.timeout,
                                       isolation_level=None)
                problem = _not_a_store(conn, empty_ok=False)
            except sqlite3.DatabaseError as e:
                last = e
                continue
            if problem is not None:
                conn.close()
                raise UserError(f"{str(self.path)!r} is not an sgdlab run store: {problem}")
            try:
                _newer_schema(conn, self.path)
            except UserError:
                conn.close()
                raise
            return conn
        raise UserError(f"cannot read run store {str(self.path)!r}: {last}")

    def _check_no_log(self) -> None:
        """Before the store is read as an immutable file (``mode=ro`` failed: its ``-shm``
        index can neither be read nor made): a :class:`UserError` when a write-ahead log lies
        beside it, whose transactions such a read would leave out (the runs a killed writer
        committed last; SQLite cannot read a log without its index on a read-only disk)."""
        log = Path(f"{self.path}-wal")
        try:
            size = log.stat().st_size
        except OSError:
            return
        if size:
            raise UserError(
                f"cannot read run store {str(self.path)!r} here: its write-ahead log {log.name} "
                f"({size} bytes, transactions that may not be in the store file yet) cannot be "
                f"read without {self.path.name}-shm on this read-only file system; copy the "
                "store with its -wal file to a writable folder and read it there")

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

    def __getstate__(self) -> dict[str, Any]:
        # a store handed to another process reconnects there
        return {**self.__dict__, "_conn_obj": None, "_pid": None}

    def _keep_alive(self) -> None:
        """Make sure this process' heartbeat thread runs for this store (call after the
        transaction that gave it a running run or a lease)."""
        key = str(self.path.resolve())
        with _BEATS_LOCK:
            beat = _BEATS.get(key)
            if beat is not None and beat.is_alive() and beat.me["pid"] == os.getpid():
                beat.generation += 1
                return
            beat = _BEATS[key] = _Heartbeat(key, self.timeout)
        beat.start()

    # --- runs -----------------------------------------------------------------------------
    def create_run(self, config: dict[str, Any], *, name: str | None = None,
                   experiment: str | None = None, env: dict[str, Any] | None = None,
                   status: str = "running", run_id: str | None = None) -> str:
        """Insert a run and return its id. ``env`` defaults to :func:`environment`. A
        ``running`` run is owned by the calling process (host, pid, heartbeat)."""
        if env is None:
            env = _default_env(config)
        _check_status(status)
        with _transaction(self._conn) as c:
            rid = self._insert_run(c, config, name=name, experiment=experiment, env=env,
                                   status=status, run_id=run_id)
        if status == "running":
            self._keep_alive()
        return rid

    def _insert_run(self, c: sqlite3.Connection, config: dict[str, Any], *, name, experiment,
                    env, status: str, run_id: str | None) -> str:
        now = _now_iso()
        me = this_process() if status == "running" else {"host": None, "pid": None,
                                                          "pid_start": None}
        for _ in range(20):
            rid = run_id or new_run_id()
            try:
                c.execute("SAVEPOINT insert_run")
                c.execute(
                    "INSERT INTO runs (id, name, experiment, config, env, status, message, "
                    "summary, created, updated, host, pid, pid_start, heartbeat) "
                    "VALUES (?, ?, ?, ?, ?, ?, NULL, '{}', ?, ?, ?, ?, ?, ?)",
                    (rid, name, experiment, _to_json(config), _to_json(env), status, now, now,
                     me["host"], me["pid"], me["pid_start"],
                     time.time() if status == "running" else None))
                c.execute("RELEASE insert_run")
                return rid
            except sqlite3.IntegrityError:
                c.execute("ROLLBACK TO insert_run")
                c.execute("RELEASE insert_run")
                if run_id is not None:
                    raise UserError(f"run id {run_id!r} already exists in {self.path}") from None
        raise RuntimeError("could not draw a fresh run id")  # pragma: no cover

    def claim(self, run_id: str) -> None:
        """Make the calling process the owner of ``run_id`` and mark it ``running`` (resume).
        Refuses a run whose owner is still alive."""
        me = this_process()
        with _transaction(self._conn) as c:
            _refuse_live_owner(c, run_id, me, self.path)
            c.execute("UPDATE runs SET status = 'running', message = NULL, host = ?, pid = ?, "
                      "pid_start = ?, heartbeat = ?, updated = ? WHERE id = ?",
                      (me["host"], me["pid"], me["pid_start"], time.time(), _now_iso(), run_id))
        self._keep_alive()

    def refuse_live_owner(self, run_id: str) -> None:
        """The refusal of :meth:`claim` for ``run_id`` whose owner is another live process,
        without claiming it: asked before a resume writes anything for the run (its folder),
        which the claim itself, made after, would refuse only once written."""
        _refuse_live_owner(self._conn, run_id, this_process(), self.path)

    def set_status(self, run_id: str, status: str, message: str | None = None) -> None:
        _check_status(status)
        self._update(run_id, "status = ?, message = ?", (status, message))

    def set_config(self, run_id: str, config: dict[str, Any]) -> None:
        """Replace the run's config (a resumed run that goes on longer than it was started
        for: its length)."""
        self._update(run_id, "config = ?", (_to_json(config),))

    def set_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        self._update(run_id, "summary = ?", (_to_json(summary),))

    def complete_run(self, run_id: str, status: str, *, summary: dict[str, Any] | None = None,
                     message: str | None = None,
                     artifacts: Iterable[tuple[str, str | os.PathLike]] = (),
                     rows: Iterable[Sequence[Any]] = (), release: str | None = None,
                     env: dict[str, Any] | None = None) -> None:
        """Record the end of a run in one transaction: its last metric ``rows``
        (``(name, step, value[, wall])``), ``artifacts`` (``(kind, path)``), ``summary``,
        ``status``, ``message`` and (if given) the ``env`` it ran in, and release the lease on
        key ``release`` held by this process. Either all of it is in the store or none of it
        is."""
        _check_status(status)
        data = _metric_rows(run_id, rows)
        with _transaction(self._conn) as c:
            if data:
                c.executemany("INSERT INTO metrics (run_id, name, step, value, wall) "
                              "VALUES (?, ?, ?, ?, ?)", data)
            for kind, path in artifacts:
                _add_artifact(c, run_id, kind, path)
            sets, values = "status = ?, message = ?", [status, message]
            if summary is not None:
                sets += ", summary = ?"
                values.append(_to_json(summary))
            if env is not None:
                sets += ", env = ?"
                values.append(_to_json(env))
            cur = c.execute(f"UPDATE runs SET {sets}, updated = ? WHERE id = ?",
                            (*values, _now_iso(), run_id))
            if cur.rowcount == 0:
                raise UserError(f"no run {run_id!r} in {self.path}")
            if release is not None:
                me = this_process()
                c.execute("DELETE FROM leases WHERE key = ? AND host = ? AND pid = ?",
                          (release, me["host"], me["pid"]))

    def _update(self, run_id: str, assignments: str, values: tuple) -> None:
        with _transaction(self._conn) as c:
            cur = c.execute(f"UPDATE runs SET {assignments}, updated = ? WHERE id = ?",
                            (*values, _now_iso(), run_id))
            if cur.rowcount == 0:
                raise UserError(f"no run {run_id!r} in {self.path}")

    # --- leases ---------------------------------------------------------------------------
    def claim_key(self, key: str, config: dict[str, Any], *, name: str | None = None,
                  experiment: str | None = None, env: dict[str, Any] | None = None,
                  unless: Sequence[str] = ()) -> tuple[str | None, dict[str, Any] | None]:
        """Take the lease on run key ``key`` and create its ``running`` run, in one
        transaction. Returns ``(run_id, None)``, or ``(None, holder)`` when another live
        process holds the lease (``holder``: run_id, host, pid). A lease whose holder died is
        taken over; the run it was running is marked ``interrupted``.

        With ``unless`` (statuses, e.g. ``("finished",)``), a run of ``experiment`` whose
        config's ``run_key`` is ``key`` and whose status is one of them means the key is done:
        nothing is claimed and the answer is ``(None, {"run_id", "status"})`` of that run. The
        check is in the claim's transaction, so a key another sweep completes between a
        caller's look at the store and its claim is never run twice."""
        if env is None:
            env = _default_env(config)
        me = this_process()
        with _transaction(self._conn) as c:
            done = self._done_run(c, key, experiment, unless) if unless else None
            if done is not None:
                return None, done
            row = c.execute("SELECT run_id, host, pid, pid_start, heartbeat FROM leases "
                            "WHERE key = ?", (key,)).fetchone()
            if row is not None:
                old_run, host, pid, start, beat = row
                if (host, pid) != (me["host"], me["pid"]) and owner_alive(
                        host, pid, start, beat) is not False:
                    return None, {"run_id": old_run, "host": host, "pid": pid}
                if old_run is not None:
                    c.execute("UPDATE runs SET status = 'interrupted', message = ?, updated = ? "
                              "WHERE id = ? AND status = 'running'",
                              (f"its process ({pid} on {host}) ended before the run did",
                               _now_iso(), old_run))
            rid = self._insert_run(c, config, name=name, experiment=experiment, env=env,
                                   status="running", run_id=None)
            c.execute("INSERT OR REPLACE INTO leases (key, run_id, host, pid, pid_start, "
                      "heartbeat, acquired) VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (key, rid, me["host"], me["pid"], me["pid_start"], time.time(),
                       _now_iso()))
        self._keep_alive()
        return rid, None

    @staticmethod
    def _done_run(c, key: str, experiment: str | None, statuses: Sequence[str]
                  ) -> dict[str, Any] | None:
        # instr() narrows to configs spelling the key; json.loads decides (it reads the NaN
        # a config may hold, which SQLite's json_extract refuses as malformed)
        marks = ", ".join("?" * len(statuses))
        rows = c.execute(f"SELECT id, status, config FROM runs WHERE experiment IS ? AND "
                         f"status IN ({marks}) AND instr(config, ?) > 0 ORDER BY created DESC",
                         (experiment, *statuses, json.dumps(key))).fetchall()
        for rid, status, cfg in rows:
            if json.loads(cfg).get("run_key") == key:
                return {"run_id": rid, "status": status}
        return None

    def done_run(self, key: str, experiment: str | None,
                 statuses: Sequence[str] = ("finished",)) -> dict[str, Any] | None:
        """The latest run of ``experiment`` with run key ``key`` and one of ``statuses``
        ({"run_id", "status"}), or None."""
        return self._done_run(self._conn, key, experiment, statuses)

    def lease_holder(self, key: str) -> dict[str, Any] | None:
        """The live holder of the lease on ``key`` (run_id, host, pid), or None."""
        row = self._conn.execute("SELECT run_id, host, pid, pid_start, heartbeat FROM leases "
                                 "WHERE key = ?", (key,)).fetchone()
        if row is None or owner_alive(*row[1:]) is False:
            return None
        return {"run_id": row[0], "host": row[1], "pid": row[2]}

    # --- deletion -------------------------------------------------------------------------
    def folder_in_use(self, name: str) -> bool:
        """Whether a run folder of the store's own named ``name`` belongs to a run: a run has
        id ``name`` (an artifact folder's: :meth:`keys_in_use`)."""
        return self._conn.execute("SELECT 1 FROM runs WHERE id = ?",
                                  (name,)).fetchone() is not None

    def keys_in_use(self) -> set[str]:
        """The run keys whose artifact folders belong to a run: a run's, or a live sweep's
        lease. One read of the runs, where a query per folder read them all each time (2,000
        keys: 11.5 s)."""
        c = self._conn
        keys = {_run_key(cfg) for (cfg,) in c.execute(
            "SELECT config FROM runs WHERE instr(config, '\"run_key\"') > 0")}
        keys |= {key for key, *owner in c.execute(
            "SELECT key, host, pid, pid_start, heartbeat FROM leases")
            if owner_alive(*owner) is not False}
        keys.discard(None)
        return keys

    def live_runs(self, run_ids: Sequence[str]) -> dict[str, str]:
        """``{run id: why}`` for those of ``run_ids`` that a live process holds: ``running``
        with an owner that is alive or cannot be judged (a store from before liveness), or
        leased by a live sweep (:func:`owner_alive`; a dead owner's run or lease is not
        live)."""
        return _live_runs(self._conn, run_ids)

    def delete_runs(self, run_ids: Sequence[str], *, force: bool = False) -> dict[str, Any]:
        """Delete runs and every row keyed by their ids (metrics, artifacts, the leases of
        dead holders) in one transaction; their files are the caller's
        (:mod:`sgdlab.store.deletion`). A run a live process holds (:meth:`live_runs`,
        checked inside the transaction) is refused with a :class:`UserError`, deleting
        nothing, unless ``force``; a live holder's lease stays even then (its sweep still
        runs the key).

        Returns ``{"runs", "metrics", "artifacts", "leases"}`` (rows deleted) and
        ``"keys_in_use"``: the run keys of the deleted runs that a remaining run has, or a
        live lease holds, as the transaction left them (their artifact folders are in use)."""
        ids = list(dict.fromkeys(run_ids))
        counts = {"runs": 0, "metrics": 0, "artifacts": 0, "leases": 0}
        with _transaction(self._conn) as c:
            live = _live_runs(c, ids)
            if live and not force:
                raise UserError("; ".join(f"run {rid} {why}" for rid, why in live.items())
                                + ": nothing deleted")
            keys = set()
            for rid in ids:
                row = c.execute("SELECT config FROM runs WHERE id = ?", (rid,)).fetchone()
                if row is None:
                    raise UserError(f"no run {rid!r} in {self.path}: nothing deleted")
                key = _run_key(row[0])
                if key:
                    keys.add(key)
            for rid in ids:
                for table, column in (("metrics", "run_id"), ("artifacts", "run_id"),
                                      ("runs", "id")):
                    counts[table] += c.execute(f"DELETE FROM {table} WHERE {column} = ?",
                                               (rid,)).rowcount
                for key, *owner in c.execute("SELECT key, host, pid, pid_start, heartbeat "
                                             "FROM leases WHERE run_id = ?", (rid,)).fetchall():
                    if owner_alive(*owner) is False:
                        counts["leases"] += c.execute("DELETE FROM leases WHERE key = ?",
                                                      (key,)).rowcount
            in_use = {k for k in keys if _key_in_use(c, k)}
        return {**counts, "keys_in_use": in_use}

    def compact(self, *, timeout: float = 5.0) -> tuple[int, int] | None:
        """Give the pages of deleted rows back to the file system (``VACUUM``, then a
        checkpoint that truncates the write-ahead log): SQLite keeps a file's size after a
        delete and reuses the free pages only for later rows. Returns the file's size before
        and after (database and log together), or None when another process kept the store
        busy for ``timeout`` seconds (a sweep writing; nothing is lost, the pages stay free)."""
        def size() -> int:
            return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal"))
                       if p.exists())

        before = size()
        c = self._conn
        c.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        try:
            c.execute("VACUUM")
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as e:
            if not is_locked(e):
                raise
            return None
        finally:
            c.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return before, size()

    def resolve(self, run_id: str) -> str:
        """The full id of the run whose id is or starts with ``run_id`` (must be unique)."""
        if not run_id.strip():   # every id starts with "": a store of one run would answer it
            raise UserError(f"empty run id; give a run id or a unique prefix ({self.path})")
        # a plain prefix test: LIKE would read "_" and "%" as wildcards and ignore case
        rows = self._conn.execute("SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id",
                                  (len(run_id), run_id)).fetchall()
        ids = [r[0] for r in rows]
        if run_id in ids:
            return run_id
        if not ids:
            raise UserError(f"no run {run_id!r} in {self.path}{self._closest_id(run_id)}")
        if len(ids) > 1:
            raise UserError(f"run id prefix {run_id!r} is ambiguous: {', '.join(ids[:5])}"
                            + (" ..." if len(ids) > 5 else ""))
        return ids[0]

    def _closest_id(self, run_id: str) -> str:
        """`` (did you mean ID?)`` for a run id of the store one or two characters from a
        mistyped ``run_id``, else ``""``. Strict: ids of one day share most characters, and a
        loose hint would name another run."""
        import difflib

        ids = [r[0] for r in self._conn.execute("SELECT id FROM runs")]
        close = difflib.get_close_matches(run_id, ids, n=1, cutoff=0.85)
        return f" (did you mean {close[0]}?)" if close else ""

    def runs_with_config(self, config: dict[str, Any]) -> list[str]:
        """The ids of the runs stored with ``config`` (oldest first): compared as the stored
        text, so that no row is parsed (a store of 20,000 runs took 2 s to list)."""
        return [r[0] for r in self._conn.execute(
            "SELECT id FROM runs WHERE config = ? ORDER BY created, id", (_to_json(config),))]

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run as a dict: id, name, experiment, config, env, status (as
        :func:`shown_status` sees it), recorded_status, message, summary, created, updated,
        host, pid, heartbeat, artifacts (list of {kind, path, created})."""
        rid = self.resolve(run_id)
        row = self._conn.execute(f"SELECT {self._columns} FROM runs WHERE id = ?",
                                 (rid,)).fetchone()
        run = _run_row(row)
        run["artifacts"] = [
            {"kind": k, "path": p, "created": c} for k, p, c in self._conn.execute(
                "SELECT kind, path, created FROM artifacts WHERE run_id = ? ORDER BY rowid",
                (rid,))]
        return run

    def list_runs(self, experiment: str | None = None, status: str | None = None,
                  scale: str | None = None) -> list[dict[str, Any]]:
        """Runs (oldest first), optionally filtered by experiment, (shown) status and the
        scale ``sgdlab run`` ran them at (its config's ``scale``)."""
        where, args = [], []
        if experiment is not None:
            where.append("experiment = ?")
            args.append(experiment)
        if status is not None and status not in SHOWN_STATUSES:
            _check_status(status)
        sql = (f"SELECT {self._columns} FROM runs"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created, id")
        runs = [_run_row(r) for r in self._conn.execute(sql, args)]
        if scale is not None:
            runs = [r for r in runs
                    if run_scale(r) == scale]
        return runs if status is None else [r for r in runs if r["status"] == status]

    # --- metrics --------------------------------------------------------------------------
    def log_metrics(self, run_id: str, step: int, values: dict[str, float], *,
                    replace: bool = False) -> None:
        """Record several scalars at one step (one transaction); ``replace``: the rows these
        names already have at that step go (a measurement taken again supersedes the last)."""
        wall = time.time()
        self.log_many(run_id, [(name, step, value, wall) for name, value in values.items()],
                      replace=replace)

    def log_metric(self, run_id: str, name: str, step: int, value: float) -> None:
        self.log_many(run_id, [(name, step, value, time.time())])

    def log_many(self, run_id: str, rows: Iterable[Sequence[Any]], *,
                 replace: bool = False) -> None:
        """Insert ``(name, step, value[, wall])`` rows in one transaction (durable on return);
        ``replace``: first drop the rows already stored under the same name and step."""
        data = _metric_rows(run_id, rows)
        if not data:
            return
        with _transaction(self._conn) as c:
            if replace:
                c.executemany("DELETE FROM metrics WHERE run_id = ? AND name = ? AND step = ?",
                              [row[:3] for row in data])
            c.executemany("INSERT INTO metrics (run_id, name, step, value, wall) "
                          "VALUES (?, ?, ?, ?, ?)", data)

    def delete_metrics_after(self, run_id: str, step: int) -> int:
        """Drop metrics logged after ``step`` (resume from checkpoints that do not record how
        many rows they had stored; see :meth:`truncate_metrics`), but not the rows of
        ``sgdlab measure`` (``measure/...``)."""
        with _transaction(self._conn) as c:
            return c.execute("DELETE FROM metrics WHERE run_id = ? AND step > ? AND "
                             + _TRAINING_ROW, (run_id, int(step))).rowcount

    def truncate_metrics(self, run_id: str, keep: int) -> int:
        """Keep the first ``keep`` metric rows of ``run_id`` (in insertion order), drop the
        rest; returns how many were dropped. A resumed run keeps exactly the rows its
        checkpoint had stored, whatever their steps, so nothing is lost or doubled. The rows
        of ``sgdlab measure`` (``measure/...``), which its training did not log, are neither
        counted nor dropped."""
        with _transaction(self._conn) as c:
            return c.execute(
                f"DELETE FROM metrics WHERE run_id = ? AND {_TRAINING_ROW} AND rowid NOT IN "
                f"(SELECT rowid FROM metrics WHERE run_id = ? AND {_TRAINING_ROW} "
                "ORDER BY rowid LIMIT ?)",
                (run_id, run_id, max(0, int(keep)))).rowcount

    def copy_metrics(self, source: str, target: str, count: int) -> bool:
        """Give run ``target`` the first ``count`` training rows of run ``source`` (insertion
        order; ``measure/...`` rows left out, as :meth:`truncate_metrics` counts), in one
        transaction: the rows an interrupted attempt of a sweep run had stored when its
        checkpoint was written, which the next attempt resumes from. False, copying nothing,
        when ``source`` holds fewer."""
        count = max(0, int(count))
        with _transaction(self._conn) as c:
            held = c.execute(f"SELECT COUNT(*) FROM metrics WHERE run_id = ? AND {_TRAINING_ROW}",
                             (source,)).fetchone()[0]
            if held < count:
                return False
            c.execute(f"INSERT INTO metrics (run_id, name, step, value, wall) SELECT ?, name, "
                      f"step, value, wall FROM metrics WHERE run_id = ? AND {_TRAINING_ROW} "
                      "ORDER BY rowid LIMIT ?", (target, source, count))
        return True

    def metrics(self, run_id: str, name: str | None = None, *, wall: bool = False
                ) -> dict[str, list[tuple[Any, ...]]]:
        """``{metric: [(step, value), ...]}`` sorted by step (insertion order within a step);
        ``wall=True``: ``(step, value, wall)``, the Unix time each row was logged."""
        rid = self.resolve(run_id)
        sql = "SELECT name, step, value, wall FROM metrics WHERE run_id = ?"
        args: list[Any] = [rid]
        if name is not None:
            sql += " AND name = ?"
            args.append(name)
        out: dict[str, list[Any]] = {}
        for n, s, v, t in self._conn.execute(sql + " ORDER BY name, step, rowid", args):
            out.setdefault(n, []).append((int(s), _float_or_nan(v), t) if wall
                                         else (int(s), _float_or_nan(v)))
        return out

    def last_metric(self, run_id: str, name: str) -> tuple[int, float] | None:
        """The latest ``(step, value)`` of ``name`` the run logged, or None (one indexed read:
        what ``sgdlab runs list`` shows for a run that has no summary yet)."""
        row = self._conn.execute("SELECT step, value FROM metrics WHERE run_id = ? AND name = ? "
                                 "ORDER BY step DESC, rowid DESC LIMIT 1",
                                 (self.resolve(run_id), name)).fetchone()
        return None if row is None else (int(row[0]), _float_or_nan(row[1]))

    def count_metrics(self, run_id: str | None = None, *, measured: bool = True) -> int:
        """The metric rows (of ``run_id``); ``measured=False``: those its training logged,
        without the rows of ``sgdlab measure`` (what :meth:`truncate_metrics` counts)."""
        where = "" if measured else f" AND {_TRAINING_ROW}"
        if run_id is None:
            return self._conn.execute("SELECT COUNT(*) FROM metrics WHERE 1" + where
                                      ).fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM metrics WHERE run_id = ?" + where,
                                  (run_id,)).fetchone()[0]

    def writer(self, run_id: str, *, flush_every: float = 2.0, max_buffer: int = 2000,
               stored: int = 0) -> "MetricWriter":
        """A :class:`MetricWriter` for ``run_id`` (``stored``: rows the run already has)."""
        return MetricWriter(self, run_id, flush_every=flush_every, max_buffer=max_buffer,
                            stored=stored)

    # --- artifacts ------------------------------------------------------------------------
    def add_artifact(self, run_id: str, kind: str, path: str | os.PathLike) -> None:
        """Record a file the run produced (``kind``: "checkpoint", "figure", "out_dir", ...);
        recording the same (kind, path) twice keeps one row."""
        with _transaction(self._conn) as c:
            _add_artifact(c, run_id, kind, path)

    def artifacts(self, run_id: str, kind: str | None = None) -> list[str]:
        rows = self._conn.execute(
            "SELECT kind, path FROM artifacts WHERE run_id = ? ORDER BY rowid", (run_id,))
        return [p for k, p in rows if kind is None or k == kind]

    # --- export ---------------------------------------------------------------------------
    def export(self, path: str | os.PathLike, run_ids: Sequence[str] | None = None,
               fmt: str = "csv") -> Path:
        """Write runs and metrics to ``path``.

        ``csv``: one long table, a row per metric record, with columns
        ``run_id, run_name, experiment, status, metric, step, value, wall`` (a non-finite
        value as ``nan``, ``inf``, ``-inf``); a run without metric rows (one that stopped
        before its first) has one row with its status and empty ``metric, step, value, wall``.
        ``json``: a list of runs, each with config, env, status, summary, artifacts and
        ``metrics: {name: [[step, value], ...]}``; strict JSON, a non-finite number written as
        the string ``"nan"``, ``"inf"`` or ``"-inf"`` (``null`` stays "no value"), read back
        as floats by :func:`read_export`.
        ``path`` may not be this store or another SQLite database (a :class:`UserError`).
        """
        fmt = fmt.lower()
        if fmt not in ("csv", "json"):
            raise UserError(f"unknown export format {fmt!r}; use 'csv' or 'json'")
        path = Path(path)
        self.check_export_target(path)
        # a run named twice (by its id and a prefix, say) is written once
        ids = list(dict.fromkeys(self.resolve(r) for r in run_ids)) if run_ids else [
            r["id"] for r in self.list_runs()]
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "json":
            runs = []
            for rid in ids:
                run = self.get_run(rid)
                run["metrics"] = {k: [list(p) for p in v] for k, v in self.metrics(rid).items()}
                runs.append(run)
            return write_atomic(path, runs, indent=1, default=str, nonfinite="string")
        with replaced_whole(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["run_id", "run_name", "experiment", "status", "metric", "step",
                        "value", "wall"])
            for rid in ids:
                run = self.get_run(rid)
                head = [rid, run["name"] or "", run["experiment"] or "", run["status"]]
                rows = self._conn.execute(
                    "SELECT name, step, value, wall FROM metrics WHERE run_id = ? "
                    "ORDER BY name, step, rowid", (rid,)).fetchall()
                for n, s, v, t in rows:
                    w.writerow([*head, n, s, repr(_float_or_nan(v)), t])
                if not rows:    # a run that stopped before its first record is still listed
                    w.writerow([*head, "", "", "", ""])
        return path

    def check_export_target(self, path: Path) -> None:
        """Refuse to write an export over this store (or its -wal / -shm file) or over any
        other SQLite database: ``sgdlab runs export runs.sqlite``, the store taken for the
        file to write, would replace every run by its CSV."""
        store = self.path.resolve()
        if path.resolve() in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
            raise UserError(f"export path {str(path)!r} is the run store itself; give the "
                            "CSV or JSON file to write (e.g. runs.csv)")
        if is_sqlite_file(path):    # nothing there (or unreadable): writing says why
            raise UserError(f"export path {str(path)!r} is an SQLite database (a run store?), "
                            "which the export would replace; give a CSV or JSON file to write")


def is_sqlite_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that begins with SQLite's header (a run store, or another
    database); False for one that is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def read_export(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The runs of a JSON export (:meth:`RunStore.export`), with the non-finite numbers of
    their ``metrics`` and ``summary`` (written as ``"nan"``, ``"inf"``, ``"-inf"``) as
    floats again; config and env as written."""
    path = Path(path)
    try:
        runs = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read export {str(path)!r}: {e}") from None
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise UserError(f"{str(path)!r} is not a JSON export of runs (a list of run records)")
    for run in runs:
        for key in ("metrics", "summary"):
            if key in run:
                run[key] = nonfinite_from_strings(run[key])
    return runs


class MetricWriter:
    """Buffers ``(name, step, value)`` records and writes them in batches.

    ``log`` is cheap (a list append); the buffer is written when it holds ``max_buffer`` rows,
    when ``flush_every`` seconds have passed since the last write, and on ``flush()`` (the loop
    calls it at each epoch end, before each checkpoint and at the end of training). Every write
    commits, so a killed process loses at most the last ``flush_every`` seconds of records.
    ``stored`` counts the run's rows in the store (``stored=`` at construction: the rows a
    resumed run already had); ``take()`` hands the unwritten rows to a caller that writes them
    itself (in :meth:`RunStore.complete_run`'s transaction).
    """

    def __init__(self, store: RunStore, run_id: str, *, flush_every: float = 2.0,
                 max_buffer: int = 2000, stored: int = 0):
        self.store, self.run_id = store, run_id
        self.flush_every, self.max_buffer = float(flush_every), int(max_buffer)
        self.stored = int(stored)
        self._rows: list[tuple[str, int, float, float]] = []
        self._last = time.monotonic()

    def log(self, name: str, value: float, step: int) -> None:
        self._rows.append((name, step, value, time.time()))
        if len(self._rows) >= self.max_buffer or time.monotonic() - self._last >= self.flush_every:
            self.flush()

    __call__ = log  # usable directly as TrainContext.logger

    def flush(self) -> None:
        if self._rows:
            self.store.log_many(self.run_id, self._rows)
            self.stored += len(self._rows)
            self._rows = []
        self._last = time.monotonic()

    def take(self) -> list[tuple[str, int, float, float]]:
        """The unwritten rows, which the caller now writes (counted as stored)."""
        rows, self._rows = self._rows, []
        self.stored += len(rows)
        return rows


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error) on an autocommit connection.

    IMMEDIATE takes the write lock up front, so concurrent writers queue on the busy timeout
    instead of failing with a lock upgrade deadlock.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn
        except BaseException:
            # a signal (Ctrl-C, SIGTERM) raised just after BEGIN skips __exit__: the write
            # lock would stay held for the connection's life, every other writer waiting on it
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        end = "COMMIT" if exc_type is None else "ROLLBACK"
        try:
            self.conn.execute(end)
        except sqlite3.Error:
            # the statement itself failed (a COMMIT refused): running it again would fail
            # again; the rollback releases the write lock, and the error is the caller's
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        finally:
            if self.conn.in_transaction:    # a signal before the statement ran: end it anyway
                self.conn.execute(end)


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"Invalid run status {status!r}; one of {', '.join(STATUSES)}")


def _run_row(row: tuple) -> dict[str, Any]:
    (rid, name, experiment, config, env, status, message, summary, created, updated, host, pid,
     pid_start, heartbeat) = row
    run = {"id": rid, "name": name, "experiment": experiment, "config": json.loads(config),
           "env": json.loads(env), "status": status, "recorded_status": status,
           "message": message, "summary": json.loads(summary or "{}"), "created": created,
           "updated": updated, "host": host, "pid": pid, "pid_start": pid_start,
           "heartbeat": heartbeat}
    run["status"] = shown_status(run)
    return run


def _live_runs(c: sqlite3.Connection, run_ids: Sequence[str]) -> dict[str, str]:
    now, live = time.time(), {}
    for rid in dict.fromkeys(run_ids):
        row = c.execute("SELECT status, host, pid, pid_start, heartbeat FROM runs WHERE id = ?",
                        (rid,)).fetchone()
        if row is not None and row[0] == "running":
            status, host, pid, start, beat = row
            alive = owner_alive(host, pid, start, beat, now)
            if alive is None:
                live[rid] = ("is recorded as running by a process that cannot be checked "
                             "(no owner recorded: a store from before liveness)")
            elif alive:
                live[rid] = (f"is running (process {pid} on {host}"
                             + (f", heartbeat {now - beat:.0f} s ago" if beat is not None
                                else "") + ")")
        if rid in live:
            continue
        for key, host, pid, start, beat in c.execute(
                "SELECT key, host, pid, pid_start, heartbeat FROM leases WHERE run_id = ?",
                (rid,)):
            if owner_alive(host, pid, start, beat, now) is not False:
                live[rid] = f"is leased by a live sweep (process {pid} on {host}, key {key})"
                break
    return live


def _run_key(config: str) -> str | None:
    """The ``run_key`` of a stored config (a run of an experiment's sweep), or None."""
    cfg = json.loads(config)
    key = cfg.get("run_key") if isinstance(cfg, dict) else None
    return key if isinstance(key, str) and key else None


def _key_in_use(c: sqlite3.Connection, key: str) -> bool:
    """Whether a run of the store has run key ``key`` or a live process leases it."""
    # instr() narrows to configs spelling the key; json.loads decides (as _done_run)
    for (cfg,) in c.execute("SELECT config FROM runs WHERE instr(config, ?) > 0",
                            (json.dumps(key),)):
        if _run_key(cfg) == key:
            return True
    row = c.execute("SELECT host, pid, pid_start, heartbeat FROM leases WHERE key = ?",
                    (key,)).fetchone()
    return row is not None and owner_alive(*row) is not False


def _metric_rows(run_id: str, rows: Iterable[Sequence[Any]]) -> list[tuple]:
    now = time.time()
    return [(run_id, str(r[0]), int(r[1]), float(r[2]), float(r[3]) if len(r) > 3 else now)
            for r in rows]


def _add_artifact(c: sqlite3.Connection, run_id: str, kind: str, path: Any) -> None:
    if c.execute("SELECT 1 FROM artifacts WHERE run_id = ? AND kind = ? AND path = ?",
                 (run_id, kind, str(path))).fetchone() is None:
        c.execute("INSERT INTO artifacts (run_id, kind, path, created) VALUES (?, ?, ?, ?)",
                  (run_id, kind, str(path), _now_iso()))


def _default_env(config: Any) -> dict[str, Any]:
    from .env import environment

    seed = None
    if isinstance(config, dict):
        seed = (config.get("train") or {}).get("seed") if isinstance(
            config.get("train"), dict) else config.get("seed")
    return environment(seed=seed)
