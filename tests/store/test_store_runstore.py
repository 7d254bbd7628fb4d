"""The SQLite run store: round trips, concurrent writers, killed writers, export."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import textwrap

import pytest

from sgdlab.errors import UserError
from sgdlab.store import RunStore, default_store_path, new_run_id
from sgdlab.testing import strict_loads


def test_round_trip(tmp_path):
    store = RunStore(tmp_path / "s" / "runs.sqlite")
    rid = store.create_run({"train": {"seed": 3}, "a": [1, 2]}, name="r", experiment="e",
                           env={"python": "3.11"})
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", rid)
    store.log_metrics(rid, 0, {"loss": 2.5, "acc": 0.1})
    store.log_metric(rid, "loss", 10, float("nan"))
    store.log_many(rid, [("loss", 5, 1.5), ("loss", 20, float("inf"))])
    store.set_status(rid, "finished", "ok")
    store.set_summary(rid, {"test_acc": 0.9})
    store.add_artifact(rid, "figure", tmp_path / "f.png")
    store.add_artifact(rid, "figure", tmp_path / "f.png")  # recorded once
    run = store.get_run(rid[:-2])  # a unique prefix resolves
    assert run["id"] == rid and run["name"] == "r" and run["experiment"] == "e"
    assert run["config"] == {"train": {"seed": 3}, "a": [1, 2]}
    assert run["env"] == {"python": "3.11"}
    assert (run["status"], run["message"], run["summary"]) == ("finished", "ok",
                                                               {"test_acc": 0.9})
    assert [a["kind"] for a in run["artifacts"]] == ["figure"]
    m = store.metrics(rid)
    assert m["acc"] == [(0, 0.1)]
    steps, values = zip(*m["loss"])
    assert steps == (0, 5, 10, 20) and values[:2] == (2.5, 1.5)
    assert math.isnan(values[2]) and values[3] == math.inf
    assert store.metrics(rid, "acc") == {"acc": [(0, 0.1)]}
    assert store.delete_metrics_after(rid, 5) == 2
    assert [s for s, _ in store.metrics(rid)["loss"]] == [0, 5]
    assert [r["id"] for r in store.list_runs(status="finished")] == [rid]
    assert store.list_runs(experiment="other") == []
    with pytest.raises(ValueError, match="Invalid run status"):
        store.set_status(rid, "done")
    with pytest.raises(UserError, match="no run"):
        store.get_run("nope")


def test_a_resume_drops_the_rows_logged_after_its_checkpoint_but_not_measurements(tmp_path):
    """The rows of `sgdlab measure` (measure/...) are not part of the training's series: the
    truncations of a resume neither count nor drop them."""
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.create_run({})
    store.log_many(rid, [("loss", 0, 2.0), ("loss", 10, 1.0)])        # checkpoint: 2 rows
    store.log_metrics(rid, 10, {"measure/hess/top_1": 3.0})           # measured there
    store.log_many(rid, [("loss", 20, 0.5), ("loss", 30, 0.4)])       # lost to a kill
    store.log_metrics(rid, 30, {"measure/hess/top_1": 4.0})
    assert store.truncate_metrics(rid, 2) == 2
    assert store.metrics(rid) == {"loss": [(0, 2.0), (10, 1.0)],
                                  "measure/hess/top_1": [(10, 3.0), (30, 4.0)]}
    store.log_many(rid, [("loss", 20, 0.6)])
    assert store.delete_metrics_after(rid, 10) == 1
    assert store.count_metrics(rid) == 4 and store.count_metrics(rid, measured=False) == 2
    assert store.truncate_metrics(rid, 0) == 2
    assert store.metrics(rid) == {"measure/hess/top_1": [(10, 3.0), (30, 4.0)]}


def test_copy_metrics_gives_a_run_the_first_training_rows_of_another_or_nothing(tmp_path):
    """A sweep run resumed from an earlier attempt's checkpoint gets the rows it counted."""
    store = RunStore(tmp_path / "runs.sqlite")
    old, new = store.create_run({}), store.create_run({})
    store.log_many(old, [("loss", 0, 2.0), ("acc", 0, 0.1)])
    store.log_metrics(old, 0, {"measure/hess/top_1": 3.0})          # not the training's
    store.log_many(old, [("loss", 5, 1.0), ("loss", 9, 0.5)])        # after the checkpoint
    assert store.copy_metrics(old, new, 3)
    import sqlite3

    with sqlite3.connect(tmp_path / "runs.sqlite") as c:
        rows = c.execute("SELECT name, step, value FROM metrics WHERE run_id = ? ORDER BY "
                         "rowid", (new,)).fetchall()
    assert rows == [("loss", 0, 2.0), ("acc", 0, 0.1), ("loss", 5, 1.0)]
    third = store.create_run({})
    assert not store.copy_metrics(old, third, 5)                     # it holds 4
    assert store.count_metrics(third) == 0 and store.count_metrics(old) == 5


def test_last_metric_is_the_latest_step_then_the_latest_row(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.create_run({})
    assert store.last_metric(rid, "test_loss") is None
    store.log_many(rid, [("test_loss", 10, 0.5), ("test_loss", 20, 0.25), ("test_acc", 30, 0.9),
                         ("test_loss", 5, 2.0), ("test_loss", 20, 0.125)])
    assert store.last_metric(rid, "test_loss") == (20, 0.125)
    assert store.last_metric(rid[:8], "test_acc") == (30, 0.9)      # a prefix resolves


def test_metrics_with_wall_give_each_row_the_time_it_was_logged(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.create_run({})
    store.log_many(rid, [("lr", 4, 0.1, 1004.0), ("lr", 0, float("nan"), 1000.0),
                         ("test_loss", 0, 2.0, 1000.5)])
    walls = store.metrics(rid, wall=True)
    assert walls["lr"][0] == (0, pytest.approx(float("nan"), nan_ok=True), 1000.0)
    assert walls["lr"][1:] == [(4, 0.1, 1004.0)] and walls["test_loss"] == [(0, 2.0, 1000.5)]
    assert store.metrics(rid, "lr", wall=True) == {"lr": walls["lr"]}


def test_ids_sort_by_creation_and_default_path(tmp_path, monkeypatch):
    ids = [new_run_id() for _ in range(3)]
    assert ids[0][:15] <= ids[-1][:15]
    monkeypatch.setenv("SGDLAB_STORE", str(tmp_path / "x.sqlite"))
    assert default_store_path() == tmp_path / "x.sqlite"
    assert RunStore().path == tmp_path / "x.sqlite"
    monkeypatch.delenv("SGDLAB_STORE")
    assert str(default_store_path()) == os.path.join("sgdlab-runs", "runs.sqlite")


def test_ambiguous_prefix_and_bad_file(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    a = store.create_run({}, env={}, run_id="20260101-000000-aaaa")
    store.create_run({}, env={}, run_id="20260101-000000-aaab")
    assert store.resolve(a) == a
    with pytest.raises(UserError, match="ambiguous"):
        store.resolve("20260101")
    for wrong in ("2026010_-000000-aaaa", "20260101-000000-AAAA", "%aaaa", "_"):
        with pytest.raises(UserError, match="no run"):   # a prefix, not a LIKE pattern
            store.resolve(wrong)
    with pytest.raises(UserError, match="already exists"):
        store.create_run({}, env={}, run_id=a)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UserError, match="not a usable sgdlab run store"):
        RunStore(bad)



def test_an_empty_run_id_names_no_run(tmp_path, capsys):
    # every id starts with "": with one run in the store it was taken for that run's prefix
    from sgdlab.cli.main import main

    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    store.create_run({}, env={}, status="finished")
    for empty in ("", " "):
        with pytest.raises(UserError, match="empty run id"):
            store.resolve(empty)
    out = tmp_path / "one.csv"
    assert main(["runs", "export", str(out), "--store", str(path), "--run", ""]) == 2
    assert "empty run id" in capsys.readouterr().err and not out.exists()


def test_a_store_of_a_newer_layout_is_refused_an_older_one_stamped(tmp_path):
    # the layout version lives in SQLite's user_version; before it, a store a later sgdlab
    # changed could only be read and written as if it had this version's layout
    import sqlite3

    from sgdlab.store.runstore import SCHEMA_VERSION

    def version(path):
        conn = sqlite3.connect(path)
        try:
            return conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()

    def stamp(path, v):
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {v}")
        conn.commit()
        conn.close()

    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    rid = store.create_run({}, env={}, status="finished")
    store.close()
    assert version(path) == SCHEMA_VERSION
    stamp(path, 0)                                # a store from before the number: same layout
    assert [r["id"] for r in RunStore(path, readonly=True).list_runs()] == [rid]
    assert version(path) == 0                     # reading writes nothing
    RunStore(path).close()
    assert version(path) == SCHEMA_VERSION        # opened for writing: stamped
    stamp(path, SCHEMA_VERSION + 1)
    for readonly in (False, True):
        with pytest.raises(UserError, match=f"layout version {SCHEMA_VERSION + 1}, written by "
                                            "a newer sgdlab"):
            RunStore(path, readonly=readonly)
    assert version(path) == SCHEMA_VERSION + 1


def test_foreign_database_is_refused_untouched(tmp_path):
    import sqlite3

    other = tmp_path / "other.sqlite"          # another program's database
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE stuff (a INTEGER)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    for readonly in (False, True):
        with pytest.raises(UserError, match="not an sgdlab run store: it has no runs table"):
            RunStore(other, readonly=readonly)
    assert other.read_bytes() == before        # no sgdlab table (nor WAL mode) written into it
    clash = tmp_path / "clash.sqlite"           # a table named runs, but not ours
    conn = sqlite3.connect(clash)
    conn.execute("CREATE TABLE runs (a INTEGER)")
    conn.execute("INSERT INTO runs VALUES (1)")
    conn.commit()
    conn.close()
    for readonly in (False, True):
        with pytest.raises(UserError, match="runs table lacks the column.s. id, name"):
            RunStore(clash, readonly=readonly)
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(UserError, match="holds no tables"):   # nothing to list
        RunStore(empty, readonly=True)
    assert RunStore(empty).list_runs() == []   # opened for writing, an empty file is a new store



def test_a_damaged_page_is_named_with_its_store_not_a_traceback(tmp_path, capsys):
    import sqlite3

    from sgdlab.cli.main import main

    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    rid = store.create_run({}, env={}, status="finished")
    store.log_many(rid, [("loss", i, float(i)) for i in range(2000)])
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'metrics'").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:           # the metrics table's first page: garbage
        f.seek((root - 1) * size)
        f.write(b"\xff" * size)
    for _ in range(2):            # earlier connections of this process, one store twice:
        RunStore(tmp_path / "other.sqlite").close()        # not named for this command
    assert main(["runs", "list", "--store", str(path)]) == 0   # the runs table still reads
    capsys.readouterr()
    assert main(["runs", "export", str(tmp_path / "out.json"), "--store", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"sgdlab: error: {path} is damaged (database disk image is malformed)" in err
    assert "other.sqlite" not in err


WRITER = textwrap.dedent("""
    import sys
    from sgdlab.store import RunStore
    store = RunStore(sys.argv[1])
    rid = store.create_run({"writer": sys.argv[2]}, env={})
    w = store.writer(rid, flush_every=0.0, max_buffer=7)
    for i in range(int(sys.argv[3])):
        store.log_metric(rid, "single", i, float(i))
        w.log("batched", float(i), i)
    w.flush()
    store.set_status(rid, "finished")
    print(rid)
""")


def test_concurrent_writers_lose_no_rows(tmp_path):
    path = tmp_path / "runs.sqlite"
    n = 300
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(k), str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    store = RunStore(path)
    runs = store.list_runs()
    assert len(runs) == 2 and all(r["status"] == "finished" for r in runs)
    for r in runs:
        m = store.metrics(r["id"])
        assert m["single"] == [(i, float(i)) for i in range(n)]
        assert m["batched"] == [(i, float(i)) for i in range(n)]
    assert store.count_metrics() == 2 * 2 * n


KILLED = textwrap.dedent("""
    import os, signal, sys
    from sgdlab.store import RunStore
    store = RunStore(sys.argv[1])
    rid = store.create_run({}, env={}, run_id="20260101-000000-dead")
    w = store.writer(rid, flush_every=3600, max_buffer=10**6)
    for i in range(50):
        w.log("loss", float(i), i)
    w.flush()
    for i in range(50, 60):
        w.log("loss", float(i), i)   # buffered, never flushed
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_writer_keeps_everything_flushed(tmp_path):
    path = tmp_path / "runs.sqlite"
    p = subprocess.run([sys.executable, "-c", KILLED, str(path)], capture_output=True,
                       timeout=120)
    assert p.returncode == -9
    store = RunStore(path)
    assert store.metrics("20260101-000000-dead")["loss"] == [(i, float(i)) for i in range(50)]
    run = store.get_run("20260101-000000-dead")
    # the store still says running; its process is gone, so it is shown as interrupted
    assert (run["recorded_status"], run["status"]) == ("running", "interrupted")
    assert [r["id"] for r in store.list_runs(status="interrupted")] == ["20260101-000000-dead"]
    assert store.list_runs(status="running") == []


def test_export_csv_and_json(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    a = store.create_run({"k": 1}, name="a", env={})
    b = store.create_run({"k": 2}, name="b", experiment="x", env={})
    store.log_metrics(a, 1, {"loss": 0.5})
    store.log_metrics(b, 2, {"loss": float("nan"), "acc": 1.0})
    store.export(tmp_path / "all.csv")
    rows = list(csv.DictReader(open(tmp_path / "all.csv")))
    assert len(rows) == 3
    assert {(r["run_id"], r["metric"], r["step"]) for r in rows} == {
        (a, "loss", "1"), (b, "acc", "2"), (b, "loss", "2")}
    assert [r["value"] for r in rows if r["run_id"] == b and r["metric"] == "loss"] == ["nan"]
    store.export(tmp_path / "b.json", run_ids=[b], fmt="json")
    data = strict_loads((tmp_path / "b.json").read_text())     # NaN is not JSON
    assert [r["id"] for r in data] == [b]
    assert data[0]["config"] == {"k": 2} and data[0]["metrics"]["acc"] == [[2, 1.0]]
    assert data[0]["metrics"]["loss"] == [[2, "nan"]]      # a NaN, not a missing value
    store.export(tmp_path / "twice.csv", run_ids=[b, b[:-2]])   # one run, named twice
    assert len(list(csv.DictReader(open(tmp_path / "twice.csv")))) == 2
    store.export(tmp_path / "twice.json", run_ids=[b, b[:-2]], fmt="json")
    assert [r["id"] for r in json.loads((tmp_path / "twice.json").read_text())] == [b]
    with pytest.raises(UserError, match="unknown export format"):
        store.export(tmp_path / "x.xml", fmt="xml")


def test_a_run_without_metric_rows_is_a_row_of_the_csv_export(tmp_path):
    """A run that diverged (or was killed) before its first record had no row in the CSV:
    it vanished from the export. It has one now, with its status and no metric."""
    store = RunStore(tmp_path / "runs.sqlite")
    a = store.create_run({"lr": 0.1}, name="ok", env={})
    store.log_metrics(a, 1, {"loss": 0.5})
    b = store.create_run({"lr": 1e6}, name="blew-up", experiment="x", env={})
    store.complete_run(b, "diverged", message="non-finite loss at step 0")
    store.export(tmp_path / "all.csv")
    rows = list(csv.DictReader(open(tmp_path / "all.csv")))
    assert [(r["run_id"], r["metric"]) for r in rows] == [(a, "loss"), (b, "")]
    assert rows[1] == {"run_id": b, "run_name": "blew-up", "experiment": "x",
                       "status": "diverged", "metric": "", "step": "", "value": "", "wall": ""}
    store.export(tmp_path / "b.csv", run_ids=[b])
    assert [r["run_id"] for r in csv.DictReader(open(tmp_path / "b.csv"))] == [b]


def test_json_export_tells_infinities_and_nan_from_missing_values(tmp_path):
    """±inf and NaN were written as null, the same as a value that is not there: a
    diverged loss of inf read as missing. They are strings now, read back as floats."""
    from sgdlab.store import read_export

    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.create_run({"lr": 1e6}, name="d", env={})
    store.log_many(rid, [("loss", 0, 0.5), ("loss", 1, math.inf), ("grad", 1, -math.inf),
                         ("acc", 1, math.nan)])
    store.complete_run(rid, "diverged", summary={"loss": math.inf, "acc": math.nan,
                                                 "steps": 1, "note": None})
    out = store.export(tmp_path / "e.json", fmt="json")
    (run,) = strict_loads(out.read_text())          # NaN / Infinity are not JSON
    assert run["metrics"] == {"acc": [[1, "nan"]], "grad": [[1, "-inf"]],
                              "loss": [[0, 0.5], [1, "inf"]]}
    assert run["summary"] == {"acc": "nan", "loss": "inf", "note": None, "steps": 1}
    (back,) = read_export(out)
    assert back["metrics"]["loss"] == [[0, 0.5], [1, math.inf]]
    assert back["metrics"]["grad"] == [[1, -math.inf]]
    assert math.isnan(back["metrics"]["acc"][0][1]) and math.isnan(back["summary"]["acc"])
    assert back["summary"]["loss"] == math.inf and back["summary"]["note"] is None
    (tmp_path / "list.json").write_text('{"a": 1}')
    with pytest.raises(UserError, match="not a JSON export of runs"):
        read_export(tmp_path / "list.json")


def test_a_failed_export_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    """An export stopped half-way (a full disk, an interrupt) leaves the previous export whole
    and no temporary file beside it."""
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.create_run({"k": 1}, name="a", env={})
    store.log_metrics(rid, 1, {"loss": 0.5})
    out = tmp_path / "out" / "runs.csv"
    store.export(out)
    before = out.read_text()

    def interrupted(run_id):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "get_run", interrupted)
    for fmt in ("csv", "json"):
        with pytest.raises(KeyboardInterrupt):
            store.export(out, fmt=fmt)
        assert out.read_text() == before and sorted(out.parent.iterdir()) == [out]


def test_export_refuses_to_write_over_a_store(tmp_path, capsys):
    """`sgdlab runs export runs.sqlite` (the store taken for the file to write) would replace
    the store, every run in it, by their CSV; another database would be lost alike."""
    from sgdlab.cli.main import main

    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    rid = store.create_run({"k": 1}, name="a", env={}, status="finished")
    store.log_metrics(rid, 1, {"loss": 0.5})
    with pytest.raises(UserError, match="is the run store itself"):
        store.export(tmp_path / "." / "runs.sqlite")
    other = RunStore(tmp_path / "other.sqlite")
    other.close()
    with pytest.raises(UserError, match="is an SQLite database"):
        store.export(tmp_path / "other.sqlite", fmt="json")
    assert main(["runs", "export", str(path), "--store", str(path)]) == 2
    assert "is the run store itself" in capsys.readouterr().err
    store.close()
    assert [r["id"] for r in RunStore(path).list_runs()] == [rid]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_environment_names_the_gpu_a_run_used_and_none_for_a_cpu_run(monkeypatch):
    """A CPU run on a machine with GPUs used none (reports listed one), and a run on cuda:1
    used the second (device 0 was named)."""
    import torch

    from sgdlab.store.env import environment

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name",
                        lambda d=None: f"GPU {torch.device(d).index or 0}")
    assert "gpu" not in environment(device="cpu")
    assert environment(device="cuda:1")["gpu"] == "GPU 1"
    assert environment(device="cuda")["gpu"] == "GPU 0"


def test_runs_with_config_are_those_stored_with_it_oldest_first(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    first = store.create_run({"b": (1, 2), "a": 0.1}, status="finished")
    store.create_run({"a": 0.1, "b": [1, 3]}, status="finished")
    last = store.create_run({"a": 0.1, "b": [1, 2]}, status="interrupted")
    # key order and tuples aside, as the store keeps a config
    assert store.runs_with_config({"b": [1, 2], "a": 0.1}) == [first, last]
    assert store.runs_with_config({"a": 0.1}) == []


def test_an_exact_id_wins_over_the_longer_ids_it_is_a_prefix_of(tmp_path):
    # "run1" is both a whole id and a prefix of "run10": the whole id is meant
    store = RunStore(tmp_path / "runs.sqlite")
    short = store.create_run({}, env={}, run_id="run1")
    store.create_run({}, env={}, run_id="run10")
    assert store.resolve("run1") == short
    assert store.get_run("run1")["id"] == short
    with pytest.raises(UserError, match="ambiguous"):
        store.resolve("run")


def test_a_replacing_log_supersedes_only_the_rows_of_its_names_at_its_step(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.create_run({}, env={})
    store.log_many(rid, [("m", 5, 1.0), ("m", 5, 2.0), ("m", 6, 3.0), ("n", 5, 4.0)])
    store.log_metrics(rid, 5, {"m": 9.0}, replace=True)
    assert store.metrics(rid) == {"m": [(5, 9.0), (6, 3.0)], "n": [(5, 4.0)]}
    store.log_metrics(rid, 6, {"m": 7.0})            # without replace: a second row
    assert store.metrics(rid, "m") == {"m": [(5, 9.0), (6, 3.0), (6, 7.0)]}


def test_copy_metrics_copies_a_source_holding_exactly_the_count(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    old, new = store.create_run({}, env={}), store.create_run({}, env={})
    store.log_many(old, [("loss", 0, 2.0), ("loss", 1, 1.0)])
    assert store.copy_metrics(old, new, 2)
    assert store.metrics(new) == {"loss": [(0, 2.0), (1, 1.0)]}


def test_artifacts_of_a_kind_are_only_those_recorded_with_it_in_order(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.create_run({}, env={})
    for kind, name in (("figure", "a.png"), ("checkpoint", "c.pt"), ("figure", "b.png")):
        store.add_artifact(rid, kind, tmp_path / name)
    assert store.artifacts(rid, "figure") == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert store.artifacts(rid, "checkpoint") == [str(tmp_path / "c.pt")]
    assert store.artifacts(rid, "model") == [] and len(store.artifacts(rid)) == 3


def test_done_run_is_the_latest_run_of_the_key_in_a_status_asked_for(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    first = store.create_run({"run_key": "k"}, experiment="e", env={}, status="finished")
    last = store.create_run({"run_key": "k"}, experiment="e", env={}, status="finished")
    store.create_run({"run_key": "k"}, experiment="e", env={}, status="failed")
    # the key spelled as another field's value is not the run's key
    store.create_run({"run_key": "j", "note": "k"}, experiment="e", env={}, status="finished")
    assert store.done_run("k", "e") == {"run_id": last, "status": "finished"}
    assert store.done_run("k", "other") is None
    assert store.done_run("j", "e")["status"] == "finished"
    assert store.done_run("i", "e") is None
    store.delete_runs([last])
    assert store.done_run("k", "e") == {"run_id": first, "status": "finished"}


def test_summary_numbers_keep_the_numbers_as_stored_and_leave_out_bools_and_words():
    from sgdlab.store.runstore import summary_numbers

    got = summary_numbers({"acc": 0.5, "steps": 3, "ok": True, "status": "done",
                           "loss": float("inf"), "none": None, "list": [1.0]})
    assert got == {"acc": 0.5, "steps": 3, "loss": float("inf")}
    assert list(got) == ["acc", "steps", "loss"] and type(got["steps"]) is int


def test_a_row_s_own_wall_time_is_kept_and_exported(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    rid = store.create_run({}, name="w", env={})
    store.log_many(rid, [("loss", 0, 1.0, 123.5)])
    store.export(tmp_path / "w.csv")
    rows = list(csv.DictReader(open(tmp_path / "w.csv")))
    assert [(r["metric"], r["step"], r["value"], r["wall"]) for r in rows] == [
        ("loss", "0", "1.0", "123.5")]


def test_complete_run_records_the_env_given_and_keeps_it_otherwise(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    a, b = store.create_run({}, env={"python": "3.11"}), store.create_run({}, env={"p": 1})
    store.complete_run(a, "finished", env={"python": "3.12", "gpu": "H100"})
    store.complete_run(b, "failed", message="boom")
    assert store.get_run(a)["env"] == {"python": "3.12", "gpu": "H100"}
    assert (store.get_run(b)["env"], store.get_run(b)["message"]) == ({"p": 1}, "boom")


def test_listing_by_a_status_no_run_can_have_is_an_error_not_an_empty_list(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    store.create_run({}, env={}, status="finished")
    with pytest.raises(ValueError, match="Invalid run status 'done'"):
        store.list_runs(status="done")
    assert store.list_runs(status="stale") == []          # a shown status is one to ask for


class _SignalAt:
    """A connection whose ``execute`` of ``sql`` is interrupted as a signal would interrupt
    it: after the statement ran (``after=True``) or before it (``after=False``), once."""

    def __init__(self, conn, sql: str, *, after: bool):
        self.conn, self.sql, self.after, self.fired = conn, sql, after, False

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql: str, *args):
        fire = sql == self.sql and not self.fired
        if fire and not self.after:
            self.fired = True
            raise KeyboardInterrupt
        out = self.conn.execute(sql, *args)
        if fire:
            self.fired = True
            raise KeyboardInterrupt
        return out


@pytest.mark.parametrize("sql, after", [("BEGIN IMMEDIATE", True), ("COMMIT", False),
                                        ("ROLLBACK", False)])
def test_a_signal_inside_a_transactions_edges_leaves_no_write_lock_held(tmp_path, sql, after):
    # Ctrl-C or SIGTERM just after BEGIN (where __exit__ never runs) or just before COMMIT /
    # ROLLBACK left the transaction open: its write lock held for the connection's life, and
    # every other writer of the store waited its busy timeout, then failed as "locked"
    import sqlite3

    from sgdlab.store.runstore import _transaction

    path = tmp_path / "s.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(KeyboardInterrupt):
        with _transaction(_SignalAt(conn, sql, after=after)) as c:
            c.execute("INSERT INTO t VALUES (1)")
            if sql == "ROLLBACK":
                raise ValueError("the block failed")
    assert not conn.in_transaction
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")          # the lock is free: no "database is locked"
    other.execute("ROLLBACK")
    # a COMMIT the signal cut off before it ran is made after all; a rollback stays one
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == (sql == "COMMIT")


class _CommitRefused:
    """A connection whose ``COMMIT`` fails as SQLite refuses one (an I/O error, a full disk),
    every time, leaving the transaction open."""

    def __init__(self, conn):
        self.conn, self.commits = conn, 0

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql: str, *args):
        import sqlite3

        if sql == "COMMIT":
            self.commits += 1
            raise sqlite3.OperationalError("disk I/O error")
        return self.conn.execute(sql, *args)


def test_a_refused_commit_is_rolled_back_once_and_raised_not_tried_again(tmp_path):
    # a COMMIT SQLite refuses was run a second time (as for a signal before it ran), failing
    # again with the transaction, and its write lock, still held
    import sqlite3

    from sgdlab.store.runstore import _transaction

    path = tmp_path / "s.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")
    refused = _CommitRefused(conn)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        with _transaction(refused) as c:
            c.execute("INSERT INTO t VALUES (1)")
    assert refused.commits == 1 and not conn.in_transaction
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")          # the lock is free
    other.execute("ROLLBACK")
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
