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
