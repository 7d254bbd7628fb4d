"""What the store knows about running runs: atomic completion, owners and heartbeats, leases,
row truncation on resume, old and read-only stores."""
from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import sgdlab.store.runstore as rs
from sgdlab.errors import UserError
from sgdlab.store import RunStore


def test_complete_run_is_one_transaction(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    rid, _ = store.claim_key("key", {}, env={})
    with pytest.raises(UserError, match="no run"):      # fails after inserting rows: rolled back
        store.complete_run("nope", "finished", rows=[("loss", 1, 0.5)], release="key")
    assert store.count_metrics() == 0 and store.lease_holder("key") is not None
    store.complete_run(rid, "finished", summary={"acc": 1.0}, message="ok",
                       rows=[("loss", 1, 0.5), ("loss", 2, 0.25)],
                       artifacts=[("data", tmp_path / "d.json")], release="key")
    run = store.get_run(rid)
    assert (run["status"], run["message"], run["summary"]) == ("finished", "ok", {"acc": 1.0})
    assert store.metrics(rid) == {"loss": [(1, 0.5), (2, 0.25)]}
    assert store.artifacts(rid) == [str(tmp_path / "d.json")]
    assert store.lease_holder("key") is None


def test_truncate_keeps_the_first_rows_of_one_run(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    a, b = store.create_run({}, env={}), store.create_run({}, env={})
    for i in range(5):      # interleaved writers; steps out of order on purpose
        store.log_many(a, [("x", 10 - i, float(i))])
        store.log_many(b, [("x", i, float(i))])
    assert store.truncate_metrics(a, 3) == 2
    assert store.metrics(a)["x"] == [(8, 2.0), (9, 1.0), (10, 0.0)]
    assert store.count_metrics(b) == 5


def test_a_dead_owner_shows_as_interrupted_a_silent_remote_one_as_stale(tmp_path, owner):
    path, rid, proc = owner
    store = RunStore(path)
    assert store.get_run(rid)["status"] == "running"            # its process is alive
    proc.kill()
    proc.wait()
    run = store.get_run(rid)
    assert (run["recorded_status"], run["status"]) == ("running", "interrupted")
    assert run["host"] == socket.gethostname() and run["pid"] == proc.pid

    mine = store.create_run({}, env={})
    assert store.get_run(mine)["status"] == "running"
    conn = sqlite3.connect(path)
    with conn:                                    # a reused pid: this process, another start
        conn.execute("UPDATE runs SET pid_start = '1' WHERE id = ?", (mine,))
    assert store.get_run(mine)["status"] == "interrupted"
    with conn:                                    # another host: only the heartbeat counts
        conn.execute("UPDATE runs SET host = 'node-7', heartbeat = ? WHERE id = ?",
                     (time.time() - 2 * rs.STALE_AFTER, mine))
    assert store.get_run(mine)["status"] == "stale"
    with conn:
        conn.execute("UPDATE runs SET heartbeat = ? WHERE id = ?", (time.time(), mine))
    assert store.get_run(mine)["status"] == "running"
    assert [r["id"] for r in store.list_runs(status="interrupted")] == [rid]


def test_the_heartbeat_thread_beats_while_the_process_owns_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(rs, "HEARTBEAT_EVERY", 0.05)
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.create_run({}, env={})
    conn = sqlite3.connect(store.path)
    with conn:
        conn.execute("UPDATE runs SET heartbeat = 0 WHERE id = ?", (rid,))
    deadline = time.monotonic() + 10
    while store.get_run(rid)["heartbeat"] == 0:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.02)
    key = str(store.path.resolve())
    assert rs._BEATS[key].is_alive()
    store.complete_run(rid, "finished")
    while key in rs._BEATS:                        # nothing left to own: the thread ends
        assert time.monotonic() < deadline, "heartbeat thread did not end"
        time.sleep(0.02)


def test_a_lease_held_by_a_live_process_is_refused_then_taken_over(owner):
    path, rid, proc = owner
    store = RunStore(path)
    run_id, holder = store.claim_key("k", {}, env={})
    assert run_id is None and holder == {"run_id": rid, "host": socket.gethostname(),
                                         "pid": proc.pid}
    with pytest.raises(UserError, match=f"run {rid} is still running \\(process {proc.pid}"):
        store.claim(rid)                          # `sgdlab resume` of a live run
    proc.kill()
    proc.wait()
    run_id, holder = store.claim_key("k", {}, env={})
    assert holder is None and run_id != rid
    old = store.get_run(rid)
    assert old["recorded_status"] == "interrupted" and "ended before the run did" in old["message"]
    assert store.claim_key("k", {}, env={})[0] is not None    # the holder may claim again


def test_a_key_already_done_is_not_claimed_again(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    cfg = {"run_key": "sq|x=1", "x": float("nan")}     # NaN: SQLite's JSON functions refuse it
    rid, _ = store.claim_key("sq|x=1", cfg, experiment="e", env={})
    store.complete_run(rid, "finished", release="sq|x=1")
    other = {"run_key": "sq|x=10"}                       # spells "sq|x=1" inside its own key
    oid, _ = store.claim_key("sq|x=10", other, experiment="e", env={})
    store.complete_run(oid, "finished", release="sq|x=10")
    n = len(store.list_runs())
    # the lease is free; the finished run says the key is done, for this experiment only
    assert store.claim_key("sq|x=1", cfg, experiment="e", env={}, unless=("finished",)) == (
        None, {"run_id": rid, "status": "finished"})
    assert len(store.list_runs()) == n and store.lease_holder("sq|x=1") is None
    assert store.claim_key("sq|x=1", cfg, experiment="e", env={}, unless=("diverged",))[0]
    assert store.claim_key("sq|x=1", cfg, experiment="f", env={}, unless=("finished",))[0]
    assert store.claim_key("sq|x=", {"run_key": "sq|x="}, experiment="e", env={},
                           unless=("finished",))[0]


def test_a_store_from_before_liveness_is_read_and_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT, experiment TEXT, config TEXT NOT NULL,
            env TEXT NOT NULL, status TEXT NOT NULL, message TEXT,
            summary TEXT NOT NULL DEFAULT '{}', created TEXT NOT NULL, updated TEXT NOT NULL);
        CREATE TABLE metrics (run_id TEXT NOT NULL, name TEXT NOT NULL, step INTEGER NOT NULL,
            value REAL, wall REAL NOT NULL);
        CREATE TABLE artifacts (run_id TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL,
            created TEXT NOT NULL);
        INSERT INTO runs VALUES ('20250101-000000-0000', 'old', NULL, '{}', '{}', 'running', NULL,
            '{}', '2025', '2025');
    """)
    conn.close()
    (run,) = RunStore(path, readonly=True).list_runs()
    assert run["status"] == "running" and run["pid"] is None     # no owner: nothing to judge
    store = RunStore(path)
    store.claim(run["id"])
    assert store.get_run(run["id"])["pid"] == os.getpid()


# a writer killed after committing: its last runs are in the store's -wal file only
KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from sgdlab.store import RunStore
    store = RunStore(sys.argv[1])
    for i in range(2):
        rid = store.create_run({"i": i}, env={}, status="finished")
        store.log_many(rid, [("loss", k, 1.0) for k in range(5)])
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_read_only_store_whose_log_cannot_be_read_is_refused_not_read_in_part(tmp_path):
    # without its -shm index, SQLite cannot read the -wal file on a read-only file system;
    # the store, read as an immutable file, listed 1 of its 3 runs and exported 0 of 10 rows
    src = tmp_path / "src"
    store = RunStore(src / "runs.sqlite")
    store.create_run({}, env={}, status="finished")
    store.close()
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(src / "runs.sqlite")])
    (src / "runs.sqlite-shm").unlink()
    assert (src / "runs.sqlite-wal").stat().st_size > 0
    sgdlab = f"{sys.executable} -m sgdlab.cli.main"
    p = _read_only(src, tmp_path / "ro",
                   f'{sgdlab} runs list --store "$M/runs.sqlite"; echo "rc=$?"; '
                   f'{sgdlab} runs export {tmp_path}/e.csv --store "$M/runs.sqlite"; echo "rc=$?"')
    if p is None:
        pytest.skip("no way to make a read-only file system here (not root, no unshare)")
    assert p.stdout.split() == ["rc=2", "rc=2"], p.stdout
    assert "its write-ahead log runs.sqlite-wal" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "e.csv").exists()
    # where the -shm index can be made, every run is read
    readable = RunStore(src / "runs.sqlite", readonly=True)
    assert len(readable.list_runs()) == 3 and readable.count_metrics() == 10


def _read_only(store_dir, mount, command: str) -> subprocess.CompletedProcess | None:
    """Run ``command`` with ``store_dir`` seen read-only at ``mount`` (a read-only bind
    mount in a private mount namespace as root; file modes otherwise). None if impossible."""
    env = {**os.environ, "M": str(mount)}
    if os.geteuid() != 0:
        shutil.copytree(store_dir, mount)
        for f in [mount, *mount.iterdir()]:
            f.chmod(0o555 if f.is_dir() else 0o444)
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env)
    if shutil.which("unshare") is None:
        return None
    mount.mkdir()
    p = subprocess.run(["unshare", "-m", "sh", "-c",
                        f'mount --bind "{store_dir}" "$M" && mount -o remount,bind,ro "$M" '
                        f'&& {command}'], capture_output=True, text=True, env=env)
    return None if "mount:" in p.stderr or "unshare:" in p.stderr else p


def test_a_store_on_a_read_only_file_system_can_be_listed_and_exported(tmp_path):
    src = tmp_path / "src"
    store = RunStore(src / "runs.sqlite")
    rid = store.create_run({"a": 1}, name="r", env={})
    store.complete_run(rid, "finished", rows=[("loss", 0, 1.0)])
    store.close()
    sgdlab = f"{sys.executable} -m sgdlab.cli.main"
    p = _read_only(src, tmp_path / "ro",
                   f'{sgdlab} runs list --store "$M/runs.sqlite" && '
                   f'{sgdlab} runs export {tmp_path}/e.csv --store "$M/runs.sqlite" && '
                   f'touch "$M/x" 2>/dev/null || {sgdlab} runs show {rid} --store "$M/runs.sqlite"'
                   f' && {sgdlab} train digits-mlp --store "$M/runs.sqlite"; echo "rc=$?"')
    if p is None:
        pytest.skip("no way to make a read-only file system here (not root, no unshare)")
    assert "Traceback" not in p.stderr, p.stderr
    assert rid in p.stdout and "finished" in p.stdout and "status: finished" in p.stdout
    assert "loss,0,1.0" in (tmp_path / "e.csv").read_text()
    assert "is read-only" in p.stderr and p.stdout.strip().endswith("rc=2")


def test_stop_heartbeats_ends_this_process_heartbeat_threads_and_the_next_run_restarts_them(
        tmp_path):
    import threading

    def beating() -> list[str]:
        return [t.name for t in threading.enumerate()
                if t.name.startswith("sgdlab-heartbeat:") and t.is_alive()]

    store = RunStore(tmp_path / "s.sqlite")
    store.create_run({"a": 1})
    assert beating()
    rs.stop_heartbeats()   # returns once they have ended: a fork after it copies none
    assert beating() == []
    store.create_run({"a": 2})
    assert beating()
    rs.stop_heartbeats()


def test_an_owner_on_another_host_lives_only_by_a_recent_heartbeat():
    now = 1000.0
    other = socket.gethostname() + "-elsewhere"
    assert rs.owner_alive(other, 1, None, now - 10.0, now) is True
    assert rs.owner_alive(other, 1, None, now - rs.STALE_AFTER - 1.0, now) is False
    assert rs.owner_alive(other, 1, None, None, now) is False        # never beat
    assert rs.owner_alive(None, 1, None, now, now) is None           # nothing recorded
