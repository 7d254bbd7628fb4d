"""``locate_run``: what ``sgdlab measure`` says of a target that is no trained model."""
from __future__ import annotations

import json
from pathlib import Path

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


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    """A finished run of ``sgdlab train`` (one epoch of a tiny model), its folder and store."""
    from sgdlab.config.runner import run_config
    from sgdlab.store import RunStore
    from sgdlab.testing import TINY_RUN

    root = tmp_path_factory.mktemp("located")
    raw = {**TINY_RUN, "train": {**TINY_RUN["train"], "epochs": 1, "progress": False}}
    store = RunStore(root / "runs.sqlite")
    outcome = run_config(raw, out_dir=root / "run", store=store, progress=False)
    store.close()
    return outcome.run_id, root / "run", root / "runs.sqlite"


def test_a_run_is_the_same_model_by_its_id_folder_checkpoints_folder_or_file(one_run):
    run_id, folder, store = one_run
    ckpt = folder / "checkpoints" / "last.pt"

    def where(found):
        return found.run_id, found.checkpoint.resolve(), found.folder.resolve()
    for target in (run_id, run_id[:-2], folder, folder / "checkpoints", ckpt):
        found = locate_run(str(target), store)
        assert where(found) == (run_id, ckpt.resolve(), folder.resolve()), target
        assert found.config["model"] == {"name": "zhu-mlp-1-6-6-6-1", "options": {}}
        assert Path(found.store.path).resolve() == store.resolve()
        if target != run_id[:-2]:      # a warm start reads the file, the config not
            bare = locate_run(str(target), store if target == run_id else None,
                              rebuild=False)
            assert where(bare) == (run_id, ckpt.resolve(), folder.resolve()), target


def test_a_store_given_wins_over_the_one_a_folder_records_and_a_gone_one_is_named(
        one_run, tmp_path):
    import shutil

    run_id, folder, store = one_run
    shutil.copy(store, tmp_path / "copy.sqlite")
    found = locate_run(str(folder), tmp_path / "copy.sqlite")
    assert Path(found.store.path) == tmp_path / "copy.sqlite" and found.run_id == run_id
    (tmp_path / "run.json").write_text(json.dumps({"run_id": run_id,
                                                   "store": str(tmp_path / "gone.sqlite")}))
    shutil.copytree(folder / "checkpoints", tmp_path / "checkpoints")
    shutil.copy(folder / "config.yaml", tmp_path / "config.yaml")
    with pytest.raises(UserError, match=rf"the run store of {str(tmp_path)!r} "
                                        rf"\({tmp_path / 'gone.sqlite'}\) is gone"):
        locate_run(str(tmp_path))
    assert not (tmp_path / "gone.sqlite").exists()       # no empty store made in its place
    with pytest.raises(UserError, match="there is no run store at"):
        locate_run(run_id, tmp_path / "none.sqlite")
    assert not (tmp_path / "none.sqlite").exists()


def test_a_run_stopped_before_its_first_checkpoint_is_named_as_having_none(tmp_path,
                                                                            monkeypatch):
    import sgdlab.config.runner as runner
    from sgdlab.store import RunStore
    from sgdlab.testing import TINY_RUN

    # recorded and its folder written, then stopped: no training, no checkpoint
    monkeypatch.setattr(runner, "_execute", lambda cfg, store, run_id, *a, **k: run_id)
    store = RunStore(tmp_path / "runs.sqlite")
    run_id = runner.run_config(TINY_RUN, out_dir=tmp_path / "run", store=store)
    for rebuild in (True, False):
        with pytest.raises(UserError, match=rf"run {run_id} has no checkpoint on disk \(.*"
                                            "it stopped before its first one"):
            locate_run(run_id, store.path, rebuild=rebuild)


def test_a_parle_run_s_master_is_at_step_rounds_times_l(tmp_path):
    """A run of ``sgdlab parle`` keeps a bare state dict, no loop: its step is the one its last
    round logged at, rounds · L (each round is L inner steps of every replica), and the rounds
    are those it ended with (its summary's, which a ``--resume`` with more rounds extends)."""
    from sgdlab.store import RunStore

    store = RunStore(tmp_path / "runs.sqlite")
    (tmp_path / "master.pt").write_bytes(b"")       # located, not loaded
    config = {"method": "parle", "data": {"name": "digits"}, "model": {"name": "mlp"},
              "parle": {"replicas": 2, "L": 5}, "rounds": 3}
    run_id = store.create_run(config, name="parle")
    store.complete_run(run_id, "finished", summary={"rounds": 4},
                       artifacts=[("model", tmp_path / "master.pt")])
    for rebuild in (True, False):
        found = locate_run(run_id, store.path, rebuild=rebuild)
        assert (found.checkpoint, found.step) == (tmp_path / "master.pt", 4 * 5)
        assert found.config["rounds"] == 4


def test_weights_saved_by_a_script_of_one_s_own_are_told_where_they_are_measured(tmp_path):
    # "no config.yaml in its run folder" said nothing of a bare state dict's way
    import torch

    torch.save({"w": torch.zeros(2)}, tmp_path / "mine.pt")
    with pytest.raises(UserError, match=r"no config.yaml in its run folder .*: the command line "
                                        r"reads the checkpoints of `sgdlab train`.*loaded into "
                                        r"the model in Python.*Your own model and data"):
        locate_run(str(tmp_path / "mine.pt"))
