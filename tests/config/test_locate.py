"""``locate_run``: what ``sgdlab measure`` says of a target that is no trained model."""
from __future__ import annotations

import json

import pytest

from sgdlab.config.locate import locate_run
from sgdlab.errors import UserError


@pytest.mark.parametrize("name", ["my-run.yaml", "my-run.toml", "results.json"])
def test_a_config_file_given_as_the_model_is_named_as_one(tmp_path, name):
    # "cannot rebuild the model of 'my-run.yaml': no config.yaml in its run folder" before
    (tmp_path / name).write_text("name: my-run\n")
    with pytest.raises(UserError) as e:
        locate_run(str(tmp_path / name), rebuild=True)
    assert str(e.value) == (
        f"{str(tmp_path / name)!r} is a config or results file, not a trained model: give a "
        "run id, a run folder or a checkpoint (`sgdlab train CONFIG` prints its run's id and "
        "folder; `sgdlab runs list` names the runs)")


def test_a_file_of_a_run_folder_names_the_folder_to_measure(tmp_path, monkeypatch):
    # the run's own config.yaml was loaded as a checkpoint: "not a checkpoint file (corrupt)",
    # after the default store (in the working folder) was opened
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "first"
    run.mkdir()
    (run / "config.yaml").write_text("name: digits-mlp\n")
    (run / "run.json").write_text(json.dumps({"run_id": "x", "store": None}))
    with pytest.raises(UserError, match=rf"; this one is in the folder of a run: measure "
                                        rf"'{run}'$"):
        locate_run(str(run / "config.yaml"), rebuild=True)
    assert not (tmp_path / "sgdlab-runs").exists()


@pytest.mark.parametrize("status", ["finished", "interrupted"])
def test_an_in_process_replicas_run_is_refused_as_keeping_no_master(tmp_path, status):
    """The ``replicas`` procedure's in-process mode keeps no master, finished or stopped: the
    refusal says so and names the mode that keeps one (a stopped run was told only a finished
    run keeps final weights, which a finished one does not either)."""
    from sgdlab.experiments.spec import RunSpec
    from sgdlab.store import RunStore
    from sgdlab.testing import SWEEP_REPLICA_PARAMS

    store = RunStore(tmp_path / "runs.sqlite")
    params = {k: v for k, v in SWEEP_REPLICA_PARAMS.items() if k != "mode"}   # the default
    spec = RunSpec("e", 1, "smoke", "parle", params, 3, "replicas")
    run_id = store.create_run(spec.config(), name=spec.run_name, experiment="e")
    store.set_status(run_id, status)
    for rebuild in (True, False):
        with pytest.raises(UserError, match=r"in-process mode .*keeps no master.* set `mode: "
                                            r"distributed` in the experiment's params"):
            locate_run(run_id, store.path, rebuild=rebuild)
