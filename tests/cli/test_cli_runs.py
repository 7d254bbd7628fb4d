"""``sgdlab runs list|show|export`` on small hand-made stores: which runs a filter selects, and
that the tables and files hold the stored values (``runs compare`` and ``runs delete`` have
their own files)."""
from __future__ import annotations

import csv

from sgdlab.cli.main import main
from sgdlab.store import RunStore


def _store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite")


def test_export_summary_writes_a_run_named_twice_once(tmp_path):
    store = _store(tmp_path)
    a = store.create_run({"lr": 0.1}, name="a", env={}, status="finished")
    b = store.create_run({"lr": 0.2}, name="b", env={}, status="finished")
    store.set_summary(a, {"loss": 0.5})
    store.set_summary(b, {"loss": 0.25})
    out = tmp_path / "s.csv"
    # by its id and by a prefix of it: one run, one row
    assert main(["runs", "export", str(out), "--summary", "--run", a, "--run", a[:-1],
                 "--run", b, "--store", str(store.path)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [(r["run_id"], r["config.lr"], r["loss"]) for r in rows] == [
        (a, "0.1", "0.5"), (b, "0.2", "0.25")]


def test_export_summary_writes_each_final_value_as_stored(tmp_path):
    # the CSV is read back by other tools: every digit of a float, not the table's four
    store = _store(tmp_path)
    rid = store.create_run({"lr": 0.1}, name="a", env={}, status="finished")
    store.set_summary(rid, {"hessian_top": 0.123456789012345, "steps": 7,
                            "escape": float("-inf")})
    out = tmp_path / "s.csv"
    assert main(["runs", "export", str(out), "--summary", "--store", str(store.path)]) == 0
    (row,) = csv.DictReader(open(out))
    assert float(row["hessian_top"]) == 0.123456789012345
    assert (row["steps"], row["escape"], row["config.lr"]) == ("7", "-inf", "0.1")


def test_a_run_s_age_reads_in_seconds_minutes_then_hours():
    import time

    from sgdlab.cli.runs import _ago

    now = time.time()
    assert _ago(now - 30) == "30 s"
    assert _ago(now - 3000) == "50 min"          # 2 min to 2 h: minutes
    assert _ago(now - 3 * 3600) == "3.0 h"
    assert _ago(now + 60) == "0 s"               # a clock ahead of this one: not negative


def test_a_replica_run_s_steps_are_its_rounds_times_l():
    from sgdlab.cli.runs import summary_steps

    assert summary_steps({"steps": 12, "rounds": 3, "grad_evals": 60}) == 12
    # stored before its summary had steps: its inner steps per replica, rounds · L
    assert summary_steps({"rounds": 3, "grad_evals": 60}) == 60
    assert summary_steps({"rounds": 3}) is None and summary_steps({}) is None
