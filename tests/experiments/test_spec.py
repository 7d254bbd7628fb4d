"""An experiment's runs on a data file of its own (``dataset: {file: PATH}``, as a run config's
``data: {file: PATH}``): the file's SHA-256, not its path, is part of each run's key. A run
parameter the file gets wrong is named with the file and where the file gives it."""
from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from sgdlab.errors import ConfigError, DataError
from sgdlab.experiments.spec import load_experiment, resolve


def data_file(path, n: int = 24) -> str:
    """A torch.save'd dict of ``n`` examples of 2 features, 2 classes, at ``path``."""
    g = torch.Generator().manual_seed(0)
    torch.save({"x_train": torch.randn(n, 2, generator=g),
                "y_train": torch.randint(0, 2, (n,), generator=g)}, path)
    return str(path)


def experiment(dataset: dict) -> dict:
    """Two groups of a small MLP trained for one epoch of three steps on ``dataset``."""
    return {"name": "own-data", "version": 1, "description": "a file of one's own",
            "analysis": "compare_groups", "procedure": "train",
            "paper": {"author": "Nobody", "year": 2020, "figure": ""},
            "base": {"dataset": dataset, "model": {"name": "mlp", "widths": [4]},
                     "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 8, "epochs": 1},
            "runs": [{"label": "a"}, {"label": "b", "params": {"optimizer": {"lr": 0.2}}}],
            "seeds": [0], "options": {"table": [["train_loss", "final train loss"]]}}


def keys(dataset: dict) -> list[str]:
    return [r.key for r in resolve(experiment(dataset), "cpu").expand()]


def test_the_run_key_reads_the_files_content_not_its_path(tmp_path):
    first = keys({"file": data_file(tmp_path / "d.pt")})
    moved = shutil.move(tmp_path / "d.pt", tmp_path / "moved.pt")
    assert keys({"file": str(moved)}) == first
    data_file(moved, n=25)          # edited in place
    edited = keys({"file": str(moved)})
    assert len(set(edited)) == 2 and not set(edited) & set(first)
    [run] = [r for r in resolve(experiment({"file": str(moved)}), "cpu").expand()
             if r.label == "a"]
    # the run keeps the absolute path and the content it is keyed by, as a run config's record
    from sgdlab.data.files import data_file_sha256

    assert run.params["dataset"] == {"file": str(moved), "sha256": data_file_sha256(moved)}
    assert run.config()["training"]["data"]["sha256"] == data_file_sha256(moved)


def test_a_file_given_relative_to_the_working_folder_is_keyed_as_its_absolute_path(
        tmp_path, monkeypatch):
    key = keys({"file": data_file(tmp_path / "d.pt")})
    monkeypatch.chdir(tmp_path)
    [run, _] = resolve(experiment({"file": "d.pt"}), "cpu").expand()
    assert run.params["dataset"]["file"] == str(tmp_path / "d.pt")
    assert keys({"file": "d.pt"}) == key


def test_a_missing_data_file_is_one_error_naming_it_when_the_runs_are_planned(tmp_path,
                                                                             capsys):
    import yaml

    from sgdlab.cli.main import main

    spec = resolve(experiment({"file": str(tmp_path / "gone.pt")}), "cpu")   # (not read)
    said = (f"own-data[cpu] run 'a': dataset.file: data file not found: {tmp_path / 'gone.pt'} "
            "(`file:` names")
    with pytest.raises(DataError) as e:
        spec.expand()
    assert str(e.value).startswith(said)
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(experiment({"file": str(tmp_path / "gone.pt")})))
    for dry in (["--dry-run"], []):
        assert main(["run", "--config", str(cfg), "--scale", "cpu", "--store",
                     str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out"), *dry]) == 2
        err = capsys.readouterr().err
        # the file and the key, as a refused run parameter's
        assert err.startswith(f"sgdlab: error: {cfg}: {said}") and err.count("\n") == 1
    assert not any(p.name in ("s.sqlite", "out") for p in tmp_path.iterdir())


def test_a_checksum_the_experiment_gives_is_checked_against_the_file(tmp_path):
    f = data_file(tmp_path / "d.pt")
    with pytest.raises(DataError, match=r"is not the one dataset.sha256 names \(sha256 "
                                        r"0000000000000000\.\.\. given"):
        keys({"file": f, "sha256": "0" * 64})


def test_a_data_file_replaces_the_named_dataset_it_overrides(tmp_path):
    raw = experiment({"name": "digits", "n_train": 64})
    raw["scales"] = {"smoke": {"base": {"dataset": {"file": data_file(tmp_path / "d.pt")}}}}
    [run, _] = resolve(raw, "smoke").expand()
    assert set(run.params["dataset"]) == {"file", "sha256"}


def test_an_experiment_trains_on_the_file_and_resumes_its_runs_after_a_move(tmp_path):
    import yaml

    from sgdlab.experiments.runner import run_experiment
    from sgdlab.store import RunStore

    def run(where: str) -> list[str]:
        said: list[str] = []
        cfg = tmp_path / "e.yaml"
        cfg.write_text(yaml.safe_dump(experiment({"file": where})))
        run_experiment(str(cfg), scale="cpu", store_path=str(tmp_path / "s.sqlite"),
                       out_dir=tmp_path / "out", progress=said.append)
        return said

    said = run(data_file(tmp_path / "d.pt"))
    assert sum("finished" in line for line in said) == 2
    store = RunStore(tmp_path / "s.sqlite", readonly=True)
    try:
        [stored, _] = [store.get_run(r["id"]) for r in store.list_runs()]
    finally:
        store.close()
    assert stored["config"]["params"]["dataset"]["file"] == str(tmp_path / "d.pt")
    moved = shutil.move(tmp_path / "d.pt", tmp_path / "moved.pt")
    assert not any("finished" in line for line in run(str(moved)))    # both stored
    assert load_experiment(str(tmp_path / "e.yaml"), "cpu").expand()[0].key == \
        stored["config"]["run_key"]


def test_a_report_reads_its_stored_runs_after_their_data_file_is_moved_away(tmp_path, capsys):
    """The report reads stored runs only: the runs' keys hold the file's SHA-256, which the
    store's runs recorded, so the file need not stand where the experiment names it."""
    import json

    from sgdlab.cli.main import main
    from sgdlab.testing import run_experiment_config

    run_experiment_config(experiment({"file": data_file(tmp_path / "d.pt")}), tmp_path)
    cfg, store, out = tmp_path / "exp.yaml", str(tmp_path / "runs.sqlite"), tmp_path / "o"
    shutil.move(tmp_path / "d.pt", tmp_path / "away.pt")
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0, capsys.readouterr().err
    assert (out / "report.html").is_file()
    results = json.loads((out / "results.json").read_text())
    assert not results["incomplete"] and len(results["runs"]) == 2
    # a run still needs the file: it would train what the store lacks on it
    assert main(["run", "--config", str(cfg), "--scale", "cpu", "--store", store, "--out",
                 str(out), "--dry-run"]) == 2
    assert "data file not found" in capsys.readouterr().err


@pytest.mark.parametrize("edit, problem", [
    (lambda raw: raw["base"].update(batchsize=8),
     "own-data[cpu] run 'a': unknown parameter 'batchsize' for procedure 'train' (did you "
     "mean batch_size?); allowed: "),
    (lambda raw: raw["runs"][1]["params"]["optimizer"].update(lr="fast"),
     "own-data[cpu] run 'b': optimizer.lr: must be a number, got 'fast' (given at "
     "base.optimizer, runs[1].params.optimizer)"),
    (lambda raw: raw["base"].update(epochs="two"),
     "own-data[cpu] run 'a': epochs must be an int >= 1, got 'two' (given at base.epochs)"),
    (lambda raw: raw.update(scales={"cpu": {"base": {"epochs": 0}}}),
     "own-data[cpu] run 'a': epochs must be an int >= 1, got 0 (given at "
     "scales.cpu.base.epochs)"),
    (lambda raw: raw.update(grid={"optimizer.lr": [0.1]},
                            runs=[{"label": "", "params": {"epochs": "two"}}]),
     "own-data[cpu] run 'lr=0.1': epochs must be an int >= 1, got 'two' (given at "
     "runs[0].params.epochs)"),
    (lambda raw: raw["base"].pop("optimizer"),
     "own-data[cpu] run 'a': missing parameter 'optimizer' for procedure 'train' (give it in "
     "base, for every run, or in the run group's params)"),
])
def test_a_wrong_run_parameter_names_the_file_and_where_it_gives_it(tmp_path, edit, problem):
    # the message named the run and the parameter, not the file, nor whether the value came
    # from base or from the group's params
    raw = experiment({"name": "digits"})
    edit(raw)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        load_experiment(str(path), "cpu")
    assert str(e.value).startswith(f"{path}: {problem}")


@pytest.mark.parametrize("year, refused", [("twenty", "got 'twenty'"), ("2018", "got '2018'"),
                                           (2018.5, "got 2018.5"), (-5, "got -5"),
                                           (9999, "got 9999"), (True, "not a bool (True)")])
def test_a_paper_year_that_is_no_year_is_refused_naming_the_file_and_the_key(tmp_path, year,
                                                                            refused):
    # a year of "twenty" was taken, and printed in every title citing the paper
    import datetime

    raw = experiment({"name": "digits"})
    raw["paper"]["year"] = year
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    latest = datetime.date.today().year + 1
    with pytest.raises(ConfigError) as e:
        load_experiment(str(path), "cpu")
    assert str(e.value) == (f"{path}.paper.year: expected the year as an integer from 1 to "
                            f"{latest}, {refused}")


def test_a_run_refused_under_a_reading_names_the_file_and_where_the_key_is_given(tmp_path):
    # the message named the readings taken, neither the file nor where it gives the key
    raw = experiment({"name": "digits"})
    raw["readings"] = {"step": {"default": "small", "choices": {
        "small": {"description": "the step as printed"},
        "big": {"description": "a misprint's step", "labels": ["b"],
                "params": {"optimizer.lr": "fast"}}}}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_experiment(str(path), "cpu").readings == {"step": "small"}
    with pytest.raises(ConfigError) as e:
        load_experiment(str(path), "cpu", readings={"step": "big"})
    assert str(e.value) == (
        f"{path}: own-data[cpu] run 'b': optimizer.lr: must be a number, got 'fast' (given at "
        "base.optimizer, runs[1].params.optimizer, readings.step.choices.big.params.optimizer.lr;"
        " with the readings step=big)")
