"""Deleting runs (``RunStore.delete_runs``, ``sgdlab.store.deletion``): every row keyed by the
runs in one transaction, then the store's own folders of them; live runs refused."""
from __future__ import annotations

import shutil
import sqlite3

import pytest

from sgdlab.errors import UserError, human_size
from sgdlab.store import RunStore
from sgdlab.store.deletion import (
    ARTIFACTS, delete_orphans, delete_planned, find_orphans, folder_size, plan_deletion,
)


def _rows(path, run_id: str) -> dict[str, int]:
    """The rows of every table that name ``run_id``."""
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t} WHERE {c} = ?", (run_id,)).fetchone()[0]
                for t, c in (("runs", "id"), ("metrics", "run_id"), ("artifacts", "run_id"),
                             ("leases", "run_id"))}
    finally:
        conn.close()


def _train_run(store: RunStore, values: list[float], size: int = 1000) -> str:
    """A finished run as `sgdlab train` leaves it: rows, and a folder beside the store named
    by its id holding a checkpoint of ``size`` bytes, recorded as its artifacts."""
    rid = store.create_run({"name": "t"}, name="t", env={})
    folder = store.path.parent / rid
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.pt").write_bytes(b"x" * size)
    store.add_artifact(rid, "out_dir", folder.resolve())
    store.log_many(rid, [("loss", i, v) for i, v in enumerate(values)])
    store.complete_run(rid, "finished", artifacts=[
        ("checkpoint", (folder / "checkpoints" / "last.pt").resolve())])
    return rid


def _sweep_run(store: RunStore, key: str, status: str = "finished", size: int = 100) -> str:
    """A run of key ``key`` as a sweep leaves it: its lease released, ``weights.pt`` in the
    key's artifact folder (shared by every attempt of the key)."""
    rid, _ = store.claim_key(key, {"run_key": key}, name=key, experiment="e", env={})
    folder = store.path.parent / ARTIFACTS / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.pt").write_bytes(b"w" * size)
    store.log_many(rid, [("loss", 0, 1.0)])
    store.complete_run(rid, status, artifacts=[("model", folder / "weights.pt")], release=key)
    return rid


def test_every_row_keyed_by_the_runs_goes_in_one_transaction_and_nothing_else(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    a, b, c = (_train_run(store, [float(i), 0.5 * i, -i]) for i in range(3))
    conn = sqlite3.connect(store.path)
    with conn:         # a lease of a process that is gone, held for b
        conn.execute("INSERT INTO leases VALUES ('k', ?, 'h', 999999999, NULL, 0, 'now')", (b,))
    conn.close()
    kept = store.metrics(c)
    rows = store.delete_runs([a, b, a])
    assert {k: rows[k] for k in ("runs", "metrics", "artifacts", "leases")} == {
        "runs": 2, "metrics": 6, "artifacts": 4, "leases": 1}
    assert _rows(store.path, a) == _rows(store.path, b) == dict.fromkeys(_rows(store.path, a), 0)
    assert store.metrics(c) == kept and len(store.artifacts(c)) == 2
    assert [r["id"] for r in store.list_runs()] == [c]
    # a run that is not there refuses the whole delete, inside the transaction
    with pytest.raises(UserError, match="no run 'nope'.*nothing deleted"):
        store.delete_runs([c, "nope"])
    assert store.metrics(c) == kept


def test_a_running_or_leased_run_is_refused_unless_forced(owner):
    path, rid, proc = owner
    store = RunStore(path)
    other = _train_run(store, [1.0])
    live = store.live_runs([rid, other])
    assert list(live) == [rid] and f"is running (process {proc.pid}" in live[rid]
    with pytest.raises(UserError, match=f"run {rid} is running .*nothing deleted"):
        store.delete_runs([other, rid])
    assert _rows(path, other)["runs"] == 1 and _rows(path, rid)["leases"] == 1
    conn = sqlite3.connect(path)
    with conn:         # recorded as ended, its key still leased by the live sweep
        conn.execute("UPDATE runs SET status = 'finished' WHERE id = ?", (rid,))
    assert "is leased by a live sweep" in store.live_runs([rid])[rid]
    with conn:         # a running run whose owner was never recorded cannot be judged
        conn.execute("UPDATE runs SET host = NULL, pid = NULL WHERE id = ?", (other,))
        conn.execute("UPDATE runs SET status = 'running' WHERE id = ?", (other,))
    conn.close()
    assert "cannot be checked" in store.live_runs([other])[other]
    rows = store.delete_runs([rid, other], force=True)
    assert rows["runs"] == 2 and rows["leases"] == 0
    assert _rows(path, rid)["leases"] == 1          # the live sweep still runs its key
    assert rows["keys_in_use"] == {"k"}
    proc.kill()
    proc.wait()
    # its holder gone, the key is free: its folder may go with the next delete
    assert RunStore(path).lease_holder("k") is None


def test_a_dead_sweep_s_run_is_deleted_with_its_stale_lease(owner):
    path, rid, proc = owner
    proc.kill()
    proc.wait()
    store = RunStore(path)
    assert store.get_run(rid)["status"] == "interrupted" and store.live_runs([rid]) == {}
    rows = store.delete_runs([rid])
    assert (rows["runs"], rows["leases"], rows["keys_in_use"]) == (1, 1, set())
    assert _rows(path, rid) == dict.fromkeys(_rows(path, rid), 0)


def test_the_folders_go_after_the_rows_and_other_runs_keep_theirs(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    a, b = _train_run(store, [1.0], size=1500), _train_run(store, [2.0], size=700)
    s = _sweep_run(store, "k1", size=300)
    plan = plan_deletion(store, [a, s])
    assert [r.folders for r in plan.runs] == [[tmp_path / a], [tmp_path / ARTIFACTS / "k1"]]
    assert [r.size for r in plan.runs] == [1500, 300] and plan.size == 1800
    assert [r.outside for r in plan.runs] == [[], []] and plan.rerun == [s]
    before = store.metrics(b)
    result = delete_planned(store, plan)
    assert result.removed == [tmp_path / a, tmp_path / ARTIFACTS / "k1"] and result.freed == 1800
    assert not (tmp_path / a).exists() and not (tmp_path / ARTIFACTS / "k1").exists()
    assert (tmp_path / b / "checkpoints" / "last.pt").stat().st_size == 700
    assert store.metrics(b) == before and [r["id"] for r in store.list_runs()] == [b]


def test_a_key_folder_goes_with_the_last_run_of_its_key(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    stopped = _sweep_run(store, "k", status="interrupted")
    done = _sweep_run(store, "k")
    folder = tmp_path / ARTIFACTS / "k"
    plan = plan_deletion(store, [stopped])
    assert plan.runs[0].folders == [] and plan.runs[0].shared == [(folder, [f"run {done}"])]
    assert plan.runs[0].outside == [] and plan.rerun == []     # a finished run of it stays
    delete_planned(store, plan)
    assert (folder / "weights.pt").is_file()
    plan = plan_deletion(store, [done])
    assert plan.runs[0].folders == [folder] and plan.rerun == [done]
    delete_planned(store, plan)
    assert not folder.exists()


def test_a_key_folder_in_use_since_the_plan_is_kept(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    old = _sweep_run(store, "k")
    plan = plan_deletion(store, [old])
    new, _ = store.claim_key("k", {"run_key": "k"}, experiment="e", env={})   # a sweep reruns it
    result = delete_planned(store, plan)
    assert result.removed == [] and result.kept[0][0] == tmp_path / ARTIFACTS / "k"
    assert (tmp_path / ARTIFACTS / "k" / "weights.pt").is_file()
    assert [r["id"] for r in store.list_runs()] == [new]


def test_files_outside_the_store_s_folders_stay_and_are_named(tmp_path):
    store = RunStore(tmp_path / "store" / "runs.sqlite")
    out = tmp_path / "results" / "run1"          # `sgdlab train --out results/run1`
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"c" * 10)
    rid = store.create_run({"name": "t"}, env={})
    store.add_artifact(rid, "out_dir", out)
    store.add_artifact(rid, "checkpoint", out / "checkpoints" / "last.pt")
    store.add_artifact(rid, "figure", tmp_path / "fig.png")
    store.add_artifact(rid, "data", "old/relative/data.json")      # its folder is not known
    # a config naming a key that would reach out of the artifacts folder is no key folder
    evil = store.create_run({"run_key": "../../results"}, env={}, status="finished")
    store.set_status(rid, "finished")
    plan = plan_deletion(store, [rid, evil])
    assert [r.folders for r in plan.runs] == [[], []] and plan.size == 0
    assert plan.runs[0].outside == sorted([str(out), str(tmp_path / "fig.png"),
                                           "old/relative/data.json"])
    result = delete_planned(store, plan)
    assert result.removed == [] and store.list_runs() == []
    assert (out / "checkpoints" / "last.pt").read_bytes() == b"c" * 10


def test_a_missing_or_unremovable_folder_does_not_stop_the_delete(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs.sqlite")
    gone, stuck, fine = (_train_run(store, [1.0]) for _ in range(3))
    plan = plan_deletion(store, [gone, stuck, fine])
    shutil.rmtree(tmp_path / gone)                  # removed by hand after the listing
    remove = shutil.rmtree

    def refusing(path, *a, **kw):
        if str(path).endswith(stuck):
            raise PermissionError(13, "Permission denied", str(path))
        return remove(path, *a, **kw)

    monkeypatch.setattr(shutil, "rmtree", refusing)
    result = delete_planned(store, plan)
    assert result.rows["runs"] == 3 and store.list_runs() == []
    assert result.removed == [tmp_path / fine] and not (tmp_path / fine).exists()
    assert result.failed == [(tmp_path / stuck, "Permission denied")]
    # a run whose folder is a file (not a folder sgdlab made): its rows go, the file stays
    other = _train_run(store, [1.0])
    remove(tmp_path / other)
    (tmp_path / other).write_text("not a folder")
    plan = plan_deletion(RunStore(store.path), [other])
    assert plan.runs[0].folders == [] and plan.runs[0].outside == [
        str((tmp_path / other).resolve())]
    assert delete_planned(store, plan).rows["runs"] == 1
    assert (tmp_path / other).read_text() == "not a folder"


def test_folder_size_counts_each_file_once_and_follows_no_link(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a").write_bytes(b"1" * 10)
    (tmp_path / "d" / "e" / "b").write_bytes(b"2" * 5)
    (tmp_path / "d" / "e" / "hard").hardlink_to(tmp_path / "d" / "a")
    (tmp_path / "big").write_bytes(b"3" * 1000)
    (tmp_path / "d" / "link").symlink_to(tmp_path / "big")
    link = len(str(tmp_path / "big"))               # a link's own size: its target's name
    assert folder_size(tmp_path / "d") == 15 + link
    assert folder_size(tmp_path / "nothing") == 0
    assert [human_size(n) for n in (0, 999, 3_800, 37_000_000, 537_000_000, 1_070_000_000)] == [
        "0 B", "999 B", "3.8 KB", "37.0 MB", "537.0 MB", "1.1 GB"]


def test_compact_gives_the_deleted_rows_pages_back_and_waits_for_no_busy_writer(tmp_path):
    """SQLite keeps a file's size after a delete; ``compact`` (VACUUM, then a truncating
    checkpoint of the log) shrinks it, keeping every row left; a store another process is
    writing to is left as it is (None), with nothing lost."""
    import sqlite3

    store = RunStore(tmp_path / "runs.sqlite")
    gone, kept = store.create_run({}), store.create_run({})
    for rid in (gone, kept):
        store.log_many(rid, [("loss", step, step * 0.5) for step in range(20_000)])
        store.set_status(rid, "finished")
    before = store.metrics(kept)
    store.delete_runs([gone])
    size, small = store.compact()
    assert small < 0.7 * size, (size, small)
    assert store.metrics(kept) == before
    store.delete_runs([kept])
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")            # a writer holding the store's write lock
    try:
        assert store.compact(timeout=0.2) is None
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.list_runs() == [] and store.compact() is not None


def test_ctrl_c_while_the_folders_go_names_the_ones_left(tmp_path, monkeypatch):
    # the rows were deleted and a bare "interrupted" left the other folders unnamed: no later
    # delete finds them
    store = RunStore(tmp_path / "runs.sqlite")
    first, second, third = (_train_run(store, [1.0]) for _ in range(3))
    plan = plan_deletion(store, [first, second, third])
    remove = shutil.rmtree

    def interrupted_at_the_second(path, *a, **kw):
        if str(path).endswith(second):
            raise KeyboardInterrupt
        return remove(path, *a, **kw)

    monkeypatch.setattr(shutil, "rmtree", interrupted_at_the_second)
    with pytest.raises(KeyboardInterrupt) as e:
        delete_planned(store, plan)
    assert store.list_runs() == [] and not (tmp_path / first).exists()
    assert str(e.value) == (
        "interrupted: the 3 runs' records are deleted, but 2 of their folders remain; "
        f"`sgdlab runs delete --orphans --store {store.path}` removes them: "
        f"{tmp_path / second}, {tmp_path / third}")


def test_sigterm_while_the_folders_go_keeps_its_reason_and_says_when_none_remains(
        tmp_path, monkeypatch):
    # it was said "interrupted", and with no folder left "0 of their folders remain ... : "
    store = RunStore(tmp_path / "runs.sqlite")
    run = _train_run(store, [1.0])
    plan = plan_deletion(store, [run])
    remove = shutil.rmtree

    def terminated_after_removing(path, *a, **kw):
        remove(path, *a, **kw)
        raise KeyboardInterrupt("terminated (SIGTERM)")

    monkeypatch.setattr(shutil, "rmtree", terminated_after_removing)
    with pytest.raises(KeyboardInterrupt) as e:
        delete_planned(store, plan)
    assert str(e.value) == ("terminated (SIGTERM): the run's record is deleted, and none of its "
                            "folders remains")


def _run_file(store: RunStore, rid: str, store_path=None) -> None:
    """The ``run.json`` `sgdlab train` writes first in a run's folder beside the store."""
    import json

    (store.path.parent / rid / "run.json").write_text(json.dumps(
        {"run_id": rid, "store": str((store_path or store.path).resolve())}))


def test_folders_an_interrupted_delete_left_are_found_and_removed_and_no_other(tmp_path,
                                                                               monkeypatch):
    """A delete stopped after its transaction leaves folders no row names, which no later
    delete saw: find_orphans lists them (a run's folder by its run.json, a key's folder by
    its key) and delete_orphans removes them; folders a run, a live lease or someone else
    still has stay."""
    store = RunStore(tmp_path / "runs.sqlite")
    gone, kept = _train_run(store, [1.0], size=400), _train_run(store, [2.0], size=50)
    for rid in (gone, kept):
        _run_file(store, rid)
    key_gone, key_kept = _sweep_run(store, "k1", size=300), _sweep_run(store, "k2")
    plan = plan_deletion(store, [gone, key_gone])
    remove = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **kw: (_ for _ in ()).throw(
        KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt, match="--orphans"):
        delete_planned(store, plan)
    monkeypatch.setattr(shutil, "rmtree", remove)
    assert [r["id"] for r in store.list_runs()] == [kept, key_kept]
    # what must stay: a folder of one's own beside the store, a run folder of another store
    # in the same folder, a link to a folder, a live sweep's key without a run yet
    (tmp_path / "notes").mkdir()
    (tmp_path / "20990101-000000-abcd").mkdir()
    _run_file(store, "20990101-000000-abcd", store_path=tmp_path / "other.sqlite")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / ARTIFACTS / "linked").symlink_to(tmp_path / "elsewhere")
    found = find_orphans(store)
    orphans = [tmp_path / gone, tmp_path / ARTIFACTS / "k1"]
    assert [f for f, _ in found.folders] == orphans and found.unscanned is None
    assert found.size == folder_size(tmp_path / gone) + 300 and found.size > 700
    # a sweep that claims k1 again after the listing: its folder is kept
    again, _ = store.claim_key("k1", {"run_key": "k1"}, experiment="e", env={})
    result = delete_orphans(store, found)
    assert result.removed == [tmp_path / gone] and result.kept[0][0] == orphans[1]
    assert not (tmp_path / gone).exists() and (tmp_path / ARTIFACTS / "k1").is_dir()
    for stays in (tmp_path / kept, tmp_path / ARTIFACTS / "k2", tmp_path / "notes",
                  tmp_path / "20990101-000000-abcd", tmp_path / "elsewhere"):
        assert stays.is_dir(), stays
    assert find_orphans(store).folders == []            # k1 is the new run's now
    store.complete_run(again, "failed", release="k1")
    store.delete_runs([again])
    assert [f for f, _ in find_orphans(store).folders] == [orphans[1]]


def test_a_store_sharing_its_folder_leaves_the_artifact_folders_unlooked_at(tmp_path):
    # two stores in one folder share artifacts/: a key of the other is not this one's orphan
    store = RunStore(tmp_path / "runs.sqlite")
    RunStore(tmp_path / "other.sqlite").close()
    (tmp_path / ARTIFACTS / "theirs").mkdir(parents=True)
    found = find_orphans(store)
    assert found.folders == [] and "shared with the store" in found.unscanned
    assert str(tmp_path / "other.sqlite") in found.unscanned


def test_a_key_folder_a_live_sweep_leases_is_no_orphan_until_its_holder_is_gone(owner):
    # its run deleted by --force, the live sweep still holds the key: its folder is in use
    path, rid, proc = owner
    store = RunStore(path)
    folder = path.parent / ARTIFACTS / "k"
    folder.mkdir(parents=True)
    store.delete_runs([rid], force=True)
    assert find_orphans(store).folders == []
    proc.kill()
    proc.wait()
    assert [f for f, _ in find_orphans(store).folders] == [folder]


def test_a_key_folder_two_deleted_runs_share_is_listed_and_removed_once(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    first = _sweep_run(store, "k", status="interrupted", size=40)
    second = _sweep_run(store, "k", size=40)        # writes weights.pt again: 40 bytes
    folder = tmp_path / ARTIFACTS / "k"
    plan = plan_deletion(store, [first, second])
    assert [r.folders for r in plan.runs] == [[folder], []]
    assert [r.shared for r in plan.runs] == [[], []] and plan.size == 40
    result = delete_planned(store, plan)
    assert result.removed == [folder] and result.freed == 40 and not folder.exists()


def test_a_deleted_run_is_rerun_only_when_no_remaining_run_completes_its_key(tmp_path):
    # finished and diverged both complete a key: the sweep runs neither again
    store = RunStore(tmp_path / "runs.sqlite")
    done = _sweep_run(store, "k")
    _sweep_run(store, "k", status="diverged")
    failed = _sweep_run(store, "j", status="failed")
    blew = _sweep_run(store, "j", status="diverged")
    assert plan_deletion(store, [done]).rerun == []
    # a failed run is rerun whatever: it did not complete its key
    assert plan_deletion(store, [blew]).rerun == [blew]
    assert plan_deletion(store, [failed, blew]).rerun == [blew]


def test_a_run_named_artifacts_does_not_take_the_sweeps_artifact_folder(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    _sweep_run(store, "k", size=10)
    odd = store.create_run({}, env={}, status="finished", run_id=ARTIFACTS)
    plan = plan_deletion(store, [odd])
    assert plan.runs[0].folders == [] and plan.size == 0
    delete_planned(store, plan)
    assert (tmp_path / ARTIFACTS / "k" / "weights.pt").stat().st_size == 10


def test_a_key_folder_a_run_finished_since_the_plan_has_is_kept(tmp_path):
    # no lease left (the new run released it): its row alone keeps the folder
    store = RunStore(tmp_path / "runs.sqlite")
    old = _sweep_run(store, "k")
    plan = plan_deletion(store, [old])
    new = _sweep_run(store, "k", size=7)
    assert store.lease_holder("k") is None
    result = delete_planned(store, plan)
    assert result.removed == [] and result.kept[0][0] == tmp_path / ARTIFACTS / "k"
    assert (tmp_path / ARTIFACTS / "k" / "weights.pt").stat().st_size == 7
    assert [r["id"] for r in store.list_runs()] == [new]


def test_a_folder_whose_run_file_names_another_run_is_no_orphan(tmp_path):
    # a copy of a run's folder under another name holds that run's run.json: not its folder
    import json

    store = RunStore(tmp_path / "runs.sqlite")
    for folder in ("20260101-000000-aaaa", "backup"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "run.json").write_text(json.dumps(
            {"run_id": "20260101-000000-aaaa", "store": str(store.path.resolve())}))
    assert [f for f, _ in find_orphans(store).folders] == [tmp_path / "20260101-000000-aaaa"]


def test_a_run_warm_started_from_a_checkpoint_in_a_removed_folder_is_a_dependant(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    a = _train_run(store, [1.0])
    ckpt = str(tmp_path / a / "checkpoints" / "last.pt")
    warm = store.create_run({"model": {"warm_start": {"checkpoint": ckpt}}}, env={},
                            status="finished")
    store.create_run({"model": {"warm_start": {"checkpoint": str(tmp_path / "x.pt")}}},
                     env={}, status="finished")
    plan = plan_deletion(store, [a])
    assert [(r["id"], why) for r, why in plan.dependants] == [(warm, ckpt)]


def test_a_relative_path_under_artifacts_of_an_old_store_is_the_key_folder_s(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    rid = _sweep_run(store, "k")
    store.add_artifact(rid, "data", "old-cwd/sgdlab-runs/artifacts/k/data.json")
    plan = plan_deletion(store, [rid])
    assert plan.runs[0].folders == [tmp_path / ARTIFACTS / "k"] and plan.runs[0].outside == []
