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
