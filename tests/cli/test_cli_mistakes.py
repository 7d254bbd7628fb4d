"""A researcher's slips on the command line, each named in one line: a mistyped path or run
id, a section's name under another key, a run started again instead of resumed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgdlab.cli.main import main
from sgdlab.store import RunStore
from test_cli_bad_inputs import TINY, one_error_line


def test_measure_of_a_mistyped_folder_says_there_is_no_such_file_or_folder(tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    RunStore(store).create_run({"lr": 0.1}, name="r")
    missing = str(tmp_path / "runs" / "t9")
    assert main(["measure", missing, "--store", str(store)]) == 2
    err = one_error_line(capsys)
    assert f"'{missing}' is no file or folder, and no run" in err


def test_a_mistyped_run_id_names_the_closest_id_of_the_store(tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    with RunStore(store) as s:
        rid = s.create_run({"lr": 0.1}, name="r")
    typo = rid[:-1] + ("0" if rid[-1] != "0" else "1")
    for argv in (["runs", "show", typo], ["resume", typo], ["runs", "compare", rid, typo]):
        assert main([*argv, "--store", str(store)]) == 2
        assert f"no run '{typo}' in {store} (did you mean {rid}?)" in one_error_line(capsys)
    # an id far from every run's gets no hint rather than another run's
    assert main(["runs", "show", "19990101-000000-zzzz", "--store", str(store)]) == 2
    assert "did you mean" not in one_error_line(capsys)


def test_a_sections_name_given_under_another_key_is_named(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    for override, says in (("optimizer={type: sgd, lr: 0.1}",
                            "optimizer.name: required key is missing (write name: sgd, not "
                            "type: sgd)"),
                           ("measure=[{instrument: hessian, every: 5}]",
                            "measure[0].name: required key is missing (write name: hessian, "
                            "not instrument: hessian)")):
        assert main(["train", str(cfg), "--print-config", "--set", override]) == 2
        assert says in one_error_line(capsys)
    assert main(["train", str(cfg), "--print-config", "--set", "measure=[{every: 5}]"]) == 2
    assert one_error_line(capsys).endswith("measure[0].name: required key is missing\n")
    # an option with a word for its value is no name given under another key: the hint
    # said "write name: test, not split: test"
    for override, where in (("measure=[{split: test, every: 5}]", "measure[0]"),
                            ("optimizer={lr: 0.1, sigma_h2_rule: fixed}", "optimizer")):
        assert main(["train", str(cfg), "--print-config", "--set", override]) == 2
        assert one_error_line(capsys).endswith(f"{where}.name: required key is missing\n")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_the_same_train_command_after_a_ctrl_c_names_the_run_it_could_resume(
        tmp_path, capsys, monkeypatch):
    """Without --out, `sgdlab train CONFIG` again after a Ctrl-C started a new run from step 0
    and said nothing of the stopped run, whose checkpoint `sgdlab resume` continues."""
    import sgdlab.report.figures.training as figures

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store = tmp_path / "runs.sqlite"
    argv = ["train", str(cfg), "--store", str(store)]
    drawn = figures.learning_curves
    monkeypatch.setattr(figures, "learning_curves", _interrupt)   # after its last checkpoint
    assert main(argv) == 130
    (stopped,) = RunStore(store).list_runs()
    capsys.readouterr()
    monkeypatch.setattr(figures, "learning_curves", drawn)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (f"note: run {stopped['id']} of this store has this config and is interrupted (its "
            f"last checkpoint is at step 5); this is a new run from step 0: to continue that "
            f"one instead, stop this and run: sgdlab resume {stopped['id']} --store {store}"
            ) in out
    assert main([*argv, "--set", "optimizer.lr=0.01"]) == 0    # another config: no note
    assert main(argv) == 0              # the latest run of this config finished: no note
    assert "note:" not in capsys.readouterr().out


def test_the_stopped_run_note_never_stops_a_run_nor_waits_on_a_locked_store(tmp_path):
    """The note is only a note: a store row whose config is no JSON raised JSONDecodeError out
    of `sgdlab train`, and a store locked by another process held the start for the store's
    60 s lock wait before the run's own."""
    import sqlite3
    import time

    from sgdlab.cli.train import _stopped_twin

    store = tmp_path / "runs.sqlite"
    with RunStore(store) as s:
        s.create_run({"a": 1}, status="interrupted")
        s.create_run({"a": 2}, status="finished")
    con = sqlite3.connect(store, isolation_level=None)
    try:
        con.execute("UPDATE runs SET config = '{damaged' WHERE config = '{\"a\": 1}'")
        assert _stopped_twin({"a": 2}, store) is None
        con.execute("UPDATE runs SET summary = '{damaged' WHERE config = '{\"a\": 2}'")
        assert _stopped_twin({"a": 2}, store) is None
        con.execute("PRAGMA journal_mode = DELETE")     # (a WAL store's readers never wait)
        con.execute("BEGIN EXCLUSIVE")
        start = time.perf_counter()
        assert _stopped_twin({"a": 2}, store) is None
        assert time.perf_counter() - start < 10
    finally:
        con.close()


def test_a_folder_or_a_misspelt_file_given_as_a_config_is_named_by_each_reader(
        tmp_path, capsys, monkeypatch):
    """A run folder given to `sgdlab train` was "no config file" (it exists); `sgdlab parle`
    and `sgdlab run --config` named a misspelt file without the one meant."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(TINY)
    (tmp_path / "parle.yaml").write_text("parle: {}\n")
    cases = ((["train", "run"], "'run' is a folder, not a config file; the config files in "
                                "it: run/config.yaml"),
             (["parle", "run"], "'run' is a folder, not a replica run config; the config files "
                                "in it: run/config.yaml"),
             (["parle", "parel.yaml"], "no replica run config 'parel.yaml' (did you mean "
                                       "parle.yaml?)"),
             (["run", "--config", "run", "--dry-run"],
              "'run' is a folder, not an experiment config; the config files in it: "
              "run/config.yaml"),
             (["run", "--config", "parl.yaml", "--dry-run"],
              "no experiment config 'parl.yaml' (did you mean parle.yaml?)"))
    for argv, says in cases:
        assert main(argv) == 2
        assert f"sgdlab: error: {says}\n" == one_error_line(capsys)


def test_a_replica_run_of_two_lengths_names_both(tmp_path, capsys):
    """`--set epochs=2` on a config with rounds: "give exactly one of ..." did not say that the
    file gives the other."""
    cfg = tmp_path / "parle.yaml"
    cfg.write_text("data: {name: cubic, seed: 0}\nmodel: {name: zhu-mlp-1-6-6-6-1}\n"
                   "parle: {replicas: 2}\nrounds: 4\n")
    assert main(["parle", str(cfg), "--set", "epochs=2", "--store",
                 str(tmp_path / "runs.sqlite")]) == 2
    assert one_error_line(capsys).endswith("it gives rounds: 4 and epochs: 2\n")
    assert not (tmp_path / "runs.sqlite").exists()


def test_a_misspelt_device_names_the_one_meant(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    for given, meant in (("cdua", "cuda"), ("gpu", "cuda"), ("cppu", "cpu")):
        assert main(["train", str(cfg), "--print-config", "--set", f"train.device={given}"]) == 2
        assert one_error_line(capsys).endswith(f"got '{given}' (did you mean {meant}?)\n")


def test_a_plugin_that_raises_on_import_is_named_with_its_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    plugin = tmp_path / "mine.py"
    plugin.write_text("import math\n\n\ndef f():\n    return math.sqrt(-1)\n\n\nf()\n")
    assert main(["train", str(cfg), "--print-config", "--plugin", str(plugin)]) == 2
    assert one_error_line(capsys).endswith(
        f"importing plugin '{plugin}' failed: ValueError: math domain error ({plugin}, "
        "line 5)\n")


def test_a_name_cut_short_names_the_one_choice_it_begins(tmp_path, capsys):
    # 'cosin' was "did you mean scoping?", a name of its length, not cosine-cyclic
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY)
    assert main(["train", str(cfg), "--print-config", "--set", "schedule.name=cosin"]) == 2
    assert "unknown schedule 'cosin' (did you mean cosine-cyclic?)" in one_error_line(capsys)


def _usage_error(argv, capsys) -> str:
    """The last line argparse prints for ``argv``, a usage error (exit status 2)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize("word, says", [
    # an action of `sgdlab runs` given as a command: compare was "did you mean parle?"
    ("compare", "did you mean `sgdlab runs compare`?"),
    ("export", "did you mean `sgdlab runs export`?"),
    ("delete", "did you mean `sgdlab runs delete`?"),
    # words of other tools: argparse listed the commands and said nothing more
    ("show", "`sgdlab list NAME` shows an experiment, `sgdlab runs show RUN_ID` a run"),
    ("help", "`sgdlab --help` lists the commands, `sgdlab COMMAND --help` explains one"),
    ("version", "`sgdlab --version` prints it"),
    ("status", "`sgdlab runs list` shows each run's status"),
])
def test_a_command_sgdlab_has_under_another_name_is_named(word, says, capsys):
    assert _usage_error([word, "x"], capsys).startswith(
        f"sgdlab: error: argument COMMAND: invalid choice: '{word}' ({says}); choose from ")


def test_a_device_given_to_scale_names_the_device_option(capsys):
    # --scale gpu was "did you mean cpu?" (--device gpu: tests/cli/test_cli_run.py)
    assert _usage_error(["run", "xing-walk", "--scale", "gpu"], capsys) == (
        "sgdlab run: error: argument --scale: invalid choice: 'gpu' (--scale sets the "
        "experiment's size, --device cuda the device it runs on); choose from smoke, cpu, paper")


def test_a_catalogue_file_by_its_file_name_or_path_names_the_entry(tmp_path, monkeypatch,
                                                                    capsys):
    """`sgdlab run xing-walk.yaml`, or the file's path in the repository from another folder,
    was "no experiment config 'xing-walk.yaml'" and no more."""
    monkeypatch.chdir(tmp_path)
    for argv in (["run", "xing-walk.yaml", "--dry-run"], ["report", "Xing_Walk.yml"],
                 ["run", "--config", "sgdlab/experiments/catalogue/xing-walk.yaml",
                  "--dry-run"]):
        assert main(argv) == 2, argv
        err = one_error_line(capsys)
        assert "the catalogue entry xing-walk is given by its name alone: xing-walk (its " \
               "file: " in err and err.rstrip().endswith("catalogue/xing-walk.yaml)"), argv
    assert main(["run", "--config", "mine.yaml", "--dry-run"]) == 2
    assert "catalogue entry" not in one_error_line(capsys)


def _xing_walk_report(tmp_path, runs: int, store) -> Path:
    """An experiment's output folder as the note reads it: its results.json naming xing-walk's
    smoke report of ``runs`` runs, recorded in ``store``."""
    out = tmp_path / "xing-walk-smoke"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({
        "experiment": {"name": "xing-walk"}, "scale": "smoke", "runs": [{}] * runs,
        "store": str(store)}))
    return out


def test_measure_of_an_experiments_output_folder_says_how_to_reach_its_runs(tmp_path, capsys):
    # it was "no checkpoint in 'OUT' (expected last.pt, ...)", as of a run folder
    out = _xing_walk_report(tmp_path, 2, tmp_path / "runs.sqlite")
    assert main(["measure", str(out)]) == 2
    assert one_error_line(capsys).startswith(
        f"sgdlab: error: {out} holds the report of experiment xing-walk (scale smoke, 2 runs), "
        f"not one run: `sgdlab runs list --experiment xing-walk --scale smoke --store "
        f"{tmp_path}/runs.sqlite` "
        "lists its runs")


def test_the_commands_named_for_an_experiments_output_folder_run_as_written(
        tmp_path, monkeypatch, capsys):
    """The note named `runs export --experiment NAME`, which exits 2 without a PATH to write
    to, and the way to compare two reports to measure and resume as well as to compare."""
    import shlex

    monkeypatch.chdir(tmp_path)
    store = tmp_path / "runs.sqlite"
    with RunStore(store) as s:
        rid = s.create_run({"a": 1, "scale": "smoke"}, name="gd|seed=0",
                           experiment="xing-walk", status="finished")
        s.log_metrics(rid, 1, {"loss": 0.5})
        # of another scale: the report's commands leave it out
        s.create_run({"scale": "cpu"}, name="gd|seed=0", experiment="xing-walk",
                     status="finished")
    out = _xing_walk_report(tmp_path, 1, store)
    for argv, compares in ((["measure", str(out)], False), (["resume", str(out)], False),
                           (["runs", "show", str(out)], False),
                           (["runs", "compare", str(out), rid], True)):
        assert main(argv) == 2, argv
        err = one_error_line(capsys)
        assert ("two reports compare with" in err) is compares, argv
        commands = [c for c in err.split("`")[1::2] if c.startswith("sgdlab runs ")]
        assert len(commands) == 2, err
        for command in commands:
            assert main(shlex.split(command)[1:]) == 0, command
        listed = capsys.readouterr().out
        assert rid in listed and listed.count("gd|seed=0") == 1, listed
    assert (tmp_path / "runs.csv").is_file()


@pytest.mark.parametrize("given, says", [
    (["--epochs", "2"], "--set train.epochs=2"),
    (["--lr=0.1"], "--set optimizer.lr=0.1"),
    (["--batch-size", "64"], "--set train.batch_size=64"),
    (["--seed", "3"], "--set data.seed=3 or --set train.seed=3"),
    (["--devce", "cuda"], "--set train.device=cuda"),
    # a section's callable, and other tools' words (--model was "did you mean --help?")
    (["--optimizer", "adam"], "--set optimizer.name=adam"),
    (["--model", "lenet"], "--set model.name=lenet"),
    (["--schedule=cosine-cyclic"], "--set schedule.name=cosine-cyclic"),
    (["--dataset", "mnist_small"], "--set data.name=mnist_small"),
    (["--steps", "3"], "--set train.max_steps=3"),
    (["--loss", "mse"], "--set loss=mse"),
])
def test_a_config_value_given_to_train_as_an_option_names_its_set(given, says, capsys):
    # "unrecognized arguments: --epochs 2" and no more (--seed: "did you mean --set?")
    assert _usage_error(["train", "digits-mlp", *given], capsys) == (
        f"sgdlab train: error: unrecognized arguments: {' '.join(given)} (a value of the run "
        f"config is set with --set KEY=VALUE: {says}; --print-config shows them)")
    # the named --set takes the value (a callable's name may need keys of its own)
    if ".name=" not in says:
        for kv in says.replace("--set ", "").split(" or "):
            assert main(["train", "digits-mlp", "--print-config", "--set", kv]) == 0, kv
            path, value = kv.split("=")
            key = path.rsplit(".", 1)[-1]
            assert f"{key}: {value}" in capsys.readouterr().out, kv


def test_a_misspelt_option_of_train_is_still_named_as_that_option(capsys):
    # progress is a config key too: the option it misspells comes first
    assert _usage_error(["train", "digits-mlp", "--no-progrss"], capsys).endswith(
        "unrecognized arguments: --no-progrss (did you mean --no-progress?)")
    assert _usage_error(["train", "digits-mlp", "--xyz", "1"], capsys).endswith(
        "unrecognized arguments: --xyz 1")


def test_a_config_key_option_followed_by_another_option_has_no_value_to_name(capsys):
    # the word after --epochs is another option, not its value
    assert _usage_error(["train", "digits-mlp", "--epochs", "--xyz"], capsys).endswith(
        "(a value of the run config is set with --set KEY=VALUE: --set train.epochs=VALUE; "
        "--print-config shows them)")


def test_a_stray_word_after_a_whole_set_pair_gets_no_key_value_hint(capsys):
    # `--set a.b 2` is a pair split by a space; `--set train.epochs=2 5` is not
    assert _usage_error(["train", "digits-mlp", "--set", "train.epochs=2", "5"],
                        capsys).endswith("unrecognized arguments: 5")


def test_sgdlab_without_a_command_prints_the_help_and_exits_2(capsys):
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: sgdlab")
