"""sgdlab.store.folders: which stored runs were trained by sgdlab.train.replicas."""
from __future__ import annotations

import pytest

from sgdlab.store import RunStore
from sgdlab.store.folders import is_replica_run


@pytest.mark.parametrize("config, replica", [
    ({"method": "parle", "mode": "distributed", "parle": {"L": 2}}, True),   # sgdlab parle
    ({"procedure": "replicas", "params": {"parle": {"L": 2}}, "run_key": "k"}, True),
    # a run whose settings merely hold a key named parle: trained by a training loop
    ({"procedure": "train", "params": {"parle": {"L": 2}}, "run_key": "k"}, False),
    ({"method": "sgd", "parle": {"L": 2}}, False),
    ({"procedure": "train_or_interpolate", "params": {}}, False),
    (None, False), ("parle", False)])
def test_a_replica_run_is_named_by_its_method_or_procedure_not_a_parle_key(config, replica):
    assert is_replica_run(config) is replica


def test_recorded_run_reads_run_json_first_and_skips_files_without_a_run_id(tmp_path):
    import json

    from sgdlab.store.folders import recorded_run

    assert recorded_run(tmp_path) == (None, None)
    (tmp_path / "results.json").write_text(json.dumps({"run_id": "r2", "store": "b"}))
    (tmp_path / "run.json").write_text(json.dumps({"store": "a"}))     # no run id: skipped
    assert recorded_run(tmp_path) == ("r2", "b")
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "r1", "store": "a"}))
    assert recorded_run(tmp_path) == ("r1", "a")
    (tmp_path / "run.json").write_text("{not json")                      # unreadable: skipped
    assert recorded_run(tmp_path) == ("r2", "b")


def test_replica_result_prefers_results_json_to_the_old_name(tmp_path):
    from sgdlab.store.folders import replica_result

    assert replica_result(tmp_path) is None
    (tmp_path / "result.json").write_text("{}")
    assert replica_result(tmp_path) == tmp_path / "result.json"
    (tmp_path / "results.json").write_text("{}")
    assert replica_result(tmp_path) == tmp_path / "results.json"


def test_store_option_is_absolute_and_quoted_for_the_shell(tmp_path, monkeypatch):
    import shlex

    from sgdlab.store.folders import store_option

    monkeypatch.chdir(tmp_path)
    opt = store_option("my runs/runs.sqlite")
    assert shlex.split(opt) == ["--store", str(tmp_path / "my runs" / "runs.sqlite")]


def test_a_store_made_for_a_run_that_did_not_start_goes_with_its_folder(tmp_path):
    from sgdlab.store.folders import drop_if_unused, open_new_store

    path = tmp_path / "new" / "runs.sqlite"
    store, made = open_new_store(path)
    assert made == [path.parent, path]
    store.close()
    drop_if_unused(made)
    assert not path.parent.exists()
    # a store that holds a run stays, and so does its folder
    store, made = open_new_store(path)
    store.create_run({}, env={}, status="finished")
    store.close()
    drop_if_unused(made)
    assert path.is_file() and len(RunStore(path).list_runs()) == 1
    # an existing folder is not the call's to remove
    other = tmp_path / "new" / "other.sqlite"
    store, made = open_new_store(other)
    assert made == [other]


def test_a_report_folder_s_note_lists_the_runs_of_its_scale(tmp_path):
    # `runs list --experiment NAME` listed the runs of every scale beside the report's own
    import json

    from sgdlab.store.folders import experiment_report_note

    (tmp_path / "results.json").write_text(json.dumps(
        {"experiment": {"name": "xing-walk"}, "scale": "cpu", "runs": [{}] * 4,
         "store": str(tmp_path / "runs.sqlite")}))
    note = experiment_report_note(tmp_path)
    store = f"--store {tmp_path / 'runs.sqlite'}"
    assert f"`sgdlab runs list --experiment xing-walk --scale cpu {store}` lists its runs" in note
    assert f"`sgdlab runs export runs.csv --experiment xing-walk --scale cpu {store}`" in note
