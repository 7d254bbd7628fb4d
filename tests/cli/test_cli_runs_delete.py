"""``sgdlab runs delete``: which runs it selects, what it lists, asks and refuses, and what is
left afterwards (the store's own folders go, other files and runs stay)."""
from __future__ import annotations

import io
import re
import sqlite3
from pathlib import Path

import pytest

from sgdlab.cli.main import main
from sgdlab.config.runner import run_config
from sgdlab.store import RunStore
from sgdlab.store.deletion import ARTIFACTS
from sgdlab.testing import TINY_RUN

TINY = {**TINY_RUN, "train": {**TINY_RUN["train"], "threads": 1, "progress": False}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store of three TINY_RUN runs of `sgdlab train`, copied per test: a run in its folder
    beside the store, one warm-started from it, one with its folder given by ``--out``
    outside the store's folder. Returns (folder, {name: run id})."""
    tmp = tmp_path_factory.mktemp("trained")
    store = tmp / "runs" / "runs.sqlite"
    source = run_config(TINY, store=store, progress=False).run_id
    warm = run_config({**TINY, "model": {**TINY["model"], "init_from": source}}, store=store,
                      progress=False).run_id
    out = run_config(TINY, out_dir=tmp / "results" / "run1", store=store,
                     progress=False).run_id
    RunStore(store).close()
    return tmp, {"source": source, "warm": warm, "out": out}


@pytest.fixture
def runs(trained, tmp_path):
    """A copy of :func:`trained` in ``tmp_path`` (the stored paths are absolute: the copy's
    own are rewritten): (store path, {name: run id})."""
    import shutil

    src, ids = trained
    shutil.copytree(src, tmp_path, dirs_exist_ok=True)
    store = tmp_path / "runs" / "runs.sqlite"
    conn = sqlite3.connect(store)
    with conn:
        for table, column in (("artifacts", "path"), ("runs", "config")):
            conn.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)",
                         (str(src), str(tmp_path)))
    conn.close()
    for record in tmp_path.rglob("run.json"):     # the store each run folder names
        record.write_text(record.read_text().replace(str(src), str(tmp_path)))
    return store, ids


def _delete(store, *argv: str, answer: str | None = None, monkeypatch=None) -> int:
    if answer is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    return main(["runs", "delete", "--store", str(store), *argv])


def _state(store: Path) -> tuple:
    """Every run's record and rows, and every file under the test's folder (path, bytes)."""
    s = RunStore(store, readonly=True)
    records = [(r["id"], r["status"], s.metrics(r["id"]), s.artifacts(r["id"]))
               for r in s.list_runs()]
    s.close()
    root = store.parent.parent
    files = sorted((str(p), p.read_bytes()) for p in root.rglob("*")
                   if p.is_file() and not p.name.startswith("runs.sqlite"))
    return records, files


def test_a_run_by_id_goes_with_its_folder_and_the_others_are_untouched(runs, capsys):
    store, ids = runs
    before = RunStore(store).metrics(ids["out"])
    assert _delete(store, ids["source"], "--yes") == 0
    out = capsys.readouterr().out
    assert f"removes {store.parent / ids['source']}" in out
    assert f"deleted 1 run (17 metric rows) from {store}; removed 1 folder" in out
    assert re.search(r"^store file [\d.]+ [KM]?B -> [\d.]+ [KM]?B$", out, re.M), out
    assert not (store.parent / ids["source"]).exists()
    s = RunStore(store)
    assert [r["id"] for r in s.list_runs()] == [ids["warm"], ids["out"]]
    assert s.metrics(ids["out"]) == before and (store.parent / ids["warm"]).is_dir()
    conn = sqlite3.connect(store)
    assert [conn.execute(f"SELECT COUNT(*) FROM {t} WHERE run_id = ?", (ids["source"],)
                         ).fetchone()[0] for t in ("metrics", "artifacts", "leases")] == [0, 0, 0]
    conn.close()


def test_a_prefix_a_folder_and_filters_select_runs(runs, capsys):
    store, ids = runs
    assert _delete(store, ids["source"][:8], "--dry-run") == 2     # a prefix must be unique
    assert "ambiguous" in capsys.readouterr().err
    assert _delete(store, ids["warm"][:-1], str(store.parent.parent / "results" / "run1"),
                   "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"2 runs to delete from {store}")
    assert ids["warm"] in out and ids["out"] in out and ids["source"] + " " not in out
    # a filter alone selects what `runs list` shows with it; with RUNs it narrows them
    RunStore(store).set_status(ids["warm"], "diverged")
    assert _delete(store, "--status", "diverged", "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("1 run to delete") and ids["warm"] in out
    assert _delete(store, ids["source"], ids["warm"], "--status", "finished", "--yes") == 0
    out = capsys.readouterr().out
    assert f"left out (not of status 'finished'): {ids['warm']}" in out
    assert [r["id"] for r in RunStore(store).list_runs()] == [ids["warm"], ids["out"]]
    assert _delete(store, "--experiment", "nope", "--yes") == 0
    assert "no runs with experiment 'nope' to delete" in capsys.readouterr().out
    assert _delete(store) == 2                   # nothing named: nothing selected
    assert "name the runs to delete" in capsys.readouterr().err


def test_a_mistyped_experiment_names_the_closest_one_held(runs, capsys):
    # `runs list --experiment` suggested it, `runs delete --experiment` did not
    store, ids = runs
    conn = sqlite3.connect(store)
    with conn:
        conn.execute("UPDATE runs SET experiment = 'xing-walk' WHERE id = ?", (ids["out"],))
    conn.close()
    assert _delete(store, "--experiment", "xing-wlak", "--dry-run") == 0
    assert capsys.readouterr().out.strip() == (
        f"no runs with experiment 'xing-wlak' to delete in {store} (did you mean xing-walk?)")


def test_a_dry_run_or_a_refused_confirmation_deletes_nothing(runs, capsys, monkeypatch):
    store, ids = runs
    before = _state(store)
    assert _delete(store, ids["source"], ids["out"], "--dry-run") == 0
    assert capsys.readouterr().out.rstrip().endswith("(dry run: nothing deleted)")
    for answer in ("n\n", "\n", "yes please\n", ""):        # "" : stdin closed, no answer
        assert _delete(store, ids["source"], answer=answer, monkeypatch=monkeypatch) == 1
        out = capsys.readouterr().out
        # a piped answer is not echoed: the prompt's line is ended before what follows
        assert "Delete 1 run and " in out and out.splitlines()[-1] == "nothing deleted"
    assert _state(store) == before
    assert _delete(store, ids["source"], answer="y\n", monkeypatch=monkeypatch) == 0
    lines = capsys.readouterr().out.splitlines()
    asked = next(i for i, ln in enumerate(lines) if ln.startswith("Delete 1 run and "))
    assert lines[asked].endswith("[y/N] ") and lines[asked + 1].startswith("deleted 1 run ")
    assert [r["id"] for r in RunStore(store).list_runs()] == [ids["warm"], ids["out"]]


def test_warm_start_dependants_are_warned_of(runs, capsys):
    store, ids = runs
    assert _delete(store, ids["source"], "--dry-run") == 0
    out = capsys.readouterr().out
    assert (f"warning: run {ids['warm']} (tiny) stays; it was warm-started from run "
            f"{ids['source']}, deleted here") in out
    assert _delete(store, ids["source"], ids["warm"], "--dry-run") == 0   # both go: no warning
    assert "warning" not in capsys.readouterr().out


def test_a_folder_outside_the_store_s_folder_stays(runs, capsys):
    store, ids = runs
    out_dir = store.parent.parent / "results" / "run1"
    files = sorted(p.name for p in out_dir.rglob("*"))
    assert _delete(store, ids["out"], "--yes") == 0
    out = capsys.readouterr().out
    assert f"keeps {out_dir}: outside the store's folders (only its record goes)" in out
    assert "removed 0 folders, 0 B" in out
    assert sorted(p.name for p in out_dir.rglob("*")) == files
    assert ids["out"] not in [r["id"] for r in RunStore(store).list_runs()]


def test_a_running_run_is_refused_saying_why_unless_forced(runs, capsys):
    store, ids = runs
    s = RunStore(store)
    running = s.create_run(TINY, name="live", env={})    # owned by this (live) process
    before = _state(store)
    assert _delete(store, ids["source"], running, "--yes") == 2
    captured = capsys.readouterr()
    assert "refused: it is running (process " in captured.out
    assert "nothing deleted: 1 of them is held by a live process" in captured.err
    assert _state(store) == before
    assert _delete(store, "--status", "running", "--dry-run") == 0
    assert "the delete would be refused" in capsys.readouterr().out
    # another run goes while this one runs: the store is not compacted under its writes
    assert _delete(store, ids["source"], "--yes") == 0
    out = capsys.readouterr().out
    assert "store file keeps its size for now (a live process writes to it)" in out
    assert "store file " not in out.replace("store file keeps", "")
    assert _delete(store, running, "--yes", "--force") == 0
    out = capsys.readouterr().out
    assert "deleted all the same (--force)" in out and "\nstore file " in out
    assert running not in [r["id"] for r in RunStore(store).list_runs()]


def test_orphans_lists_asks_and_removes_the_folders_an_interrupted_delete_left(
        runs, capsys, monkeypatch):
    """A delete stopped after its transaction committed leaves the run's folder beside the
    store with no row naming it: the next delete points to it, and ``--orphans`` lists it,
    asks, and removes it alone (the other runs' folders and the --out folder stay)."""
    store, ids = runs
    RunStore(store).delete_runs([ids["source"]])         # the rows went, the folder stays
    orphan = store.parent / ids["source"]
    assert (orphan / "run.json").is_file()
    before = _state(store)
    assert _delete(store, "--orphans", "--dry-run") == 0
    out = capsys.readouterr().out
    assert re.search(rf"^1 folder in {store.parent} that no run of {store} names, [\d.]+ KB "
                     "of files:$", out, re.M), out
    assert f"  removes {orphan} (" in out and out.rstrip().endswith("(dry run: nothing deleted)")
    assert _delete(store, "--orphans", answer="n\n", monkeypatch=monkeypatch) == 1
    out = capsys.readouterr().out
    assert "Remove 1 folder that no run names (" in out and out.endswith("nothing deleted\n")
    assert _state(store) == before
    # a delete of other runs says the folder is there, and leaves it
    assert _delete(store, ids["out"], "--yes") == 0
    out = capsys.readouterr().out
    assert ("note: 1 folder beside the store that no run names" in out
            and f"`sgdlab runs delete --orphans --store {store}` removes them" in out)
    assert orphan.is_dir()
    assert _delete(store, "--orphans", answer="y\n", monkeypatch=monkeypatch) == 0
    assert "removed 1 folder that no run names, " in capsys.readouterr().out
    assert not orphan.exists() and (store.parent / ids["warm"] / "run.json").is_file()
    assert (store.parent.parent / "results" / "run1" / "run.json").is_file()
    assert [r["id"] for r in RunStore(store).list_runs()] == [ids["warm"]]
    assert _delete(store, "--orphans", "--yes") == 0
    assert capsys.readouterr().out == (f"no folders in {store.parent} that no run of {store} "
                                       "names\n")


def _sweep_run(store: RunStore, status: str, size: int) -> tuple[str, Path]:
    """A run of experiment "e"'s sweep under run key "k", ended with ``status``, its weights of
    ``size`` bytes in the key's folder beside the store: (run id, that folder)."""
    folder = store.path.parent / ARTIFACTS / "k"
    rid, _ = store.claim_key("k", {"run_key": "k"}, name="ok", experiment="e", env={})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.pt").write_bytes(b"w" * size)
    store.complete_run(rid, status, artifacts=[("model", folder / "weights.pt")], release="k")
    return rid, folder


def test_a_sweep_run_s_folder_goes_with_the_last_run_of_its_key(tmp_path, capsys):
    store = RunStore(tmp_path / "runs.sqlite")
    attempts = []
    for status in ("interrupted", "finished"):
        rid, folder = _sweep_run(store, status, 2000)
        attempts.append(rid)
    assert _delete(store.path, attempts[0], "--yes") == 0
    out = capsys.readouterr().out
    assert f"keeps {folder}: its run key's folder, still used by run {attempts[1]}" in out
    assert (folder / "weights.pt").is_file()
    assert _delete(store.path, "--experiment", "e", "--yes") == 0
    out = capsys.readouterr().out
    assert "2.0 KB" in out and f"removes {folder}" in out
    assert "`sgdlab run` of its experiment runs it again" in out
    assert not folder.exists() and RunStore(store.path).list_runs() == []


def test_a_catalogue_sweep_s_runs_go_with_their_artifact_folders(tmp_path, capsys, monkeypatch):
    """TINY_RUN as a sweep of the ``train`` procedure: each run keeps ``weights.pt`` in its
    key's folder under the store's ``artifacts/``, which deleting the run removes."""
    from sgdlab.experiments.spec import resolve
    from sgdlab.experiments.sweep import artifacts_root, load_runs, run_sweep

    spec = resolve({"name": "t-delete", "version": 1, "description": "runs to delete",
                    "analysis": "compare_groups", "procedure": "train",
                    "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"},
                    "base": {"dataset": {"name": TINY["data"]["name"]},
                             "data_seed": TINY["data"]["seed"], "model": TINY["model"],
                             "optimizer": TINY["optimizer"],
                             "batch_size": TINY["train"]["batch_size"], "epochs": 1},
                    "runs": [{"label": "a"},
                             {"label": "b", "params": {"optimizer": {"lr": 0.01}}}],
                    "seeds": [0], "options": {"table": [["train_loss", "final loss"]]}}, "cpu")
    store = tmp_path / "runs.sqlite"
    monkeypatch.setenv("SGDLAB_THREADS", "1")
    run_sweep(spec.expand(), store_path=str(store), workers=1, progress=None)
    done, _ = load_runs(spec.expand(), store_path=str(store))
    assert artifacts_root(RunStore(store)) == tmp_path / ARTIFACTS      # the same convention
    a, b = sorted(done, key=lambda r: r.label)
    weights = {r.label: tmp_path / ARTIFACTS / r.key / "weights.pt" for r in done}
    assert all(w.is_file() for w in weights.values())
    before = RunStore(store).metrics(b.run_id)
    assert _delete(store, a.run_id, "--yes") == 0
    out = capsys.readouterr().out
    assert f"removes {weights['a'].parent}" in out and "runs it again" in out
    assert not weights["a"].parent.exists() and weights["b"].is_file()
    assert RunStore(store).metrics(b.run_id) == before
    assert [r["id"] for r in RunStore(store).list_runs()] == [b.run_id]


def test_a_folder_that_cannot_be_removed_exits_1_naming_it(tmp_path, capsys, monkeypatch):
    import sgdlab.store.deletion as deletion

    store = RunStore(tmp_path / "runs.sqlite")
    rid, folder = _sweep_run(store, "finished", 100)

    def refuse(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(deletion.shutil, "rmtree", refuse)
    assert _delete(store.path, rid, "--yes") == 1
    out = capsys.readouterr().out
    assert (f"could not remove {folder} (Permission denied); its runs' rows are deleted: "
            "remove it by hand") in out
    assert RunStore(store.path).list_runs() == [] and (folder / "weights.pt").is_file()


def test_orphans_are_removed_when_the_runs_named_beside_them_match_none(tmp_path, capsys):
    store = RunStore(tmp_path / "runs.sqlite")
    kept = store.create_run({"run_key": "k"}, name="kept", experiment="e", env={},
                            status="finished")
    orphan = tmp_path / ARTIFACTS / "gone"        # no run has run key "gone"
    orphan.mkdir(parents=True)
    (orphan / "weights.pt").write_bytes(b"w" * 10)
    assert _delete(store.path, "--experiment", "nope", "--orphans", "--yes") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"no runs with experiment 'nope' to delete in {store.path}\n")
    assert f"  removes {orphan} (" in out and "removed 1 folder that no run names" in out
    assert not orphan.exists() and [r["id"] for r in store.list_runs()] == [kept]
