"""Bad input from the command line: one line naming the file or key, nothing recorded or lost."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sgdlab.cli.main import main
from sgdlab.errors import ConfigError
from sgdlab.store import RunStore

TINY = """
name: tiny
data: {name: cubic, seed: 0}
model: {name: zhu-mlp-1-6-6-6-1}
optimizer: {name: sgd, lr: 0.05}
train: {epochs: 1, batch_size: 4, threads: 1, progress: false}
"""


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_an_infinite_learning_rate_is_refused(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    assert main(["train", str(cfg), "--store", str(tmp_path / "s.sqlite"),
                 "--set", "optimizer.lr=.inf"]) == 2
    assert "optimizer.lr: a learning rate must be finite, got inf" in one_error_line(capsys)
    assert main(["train", str(cfg), "--store", str(tmp_path / "s.sqlite"),
                 "--set", "optimizer.lr=-.inf"]) == 2
    assert "optimizer.lr: must be >= 0, got -inf" in one_error_line(capsys)
    assert main(["train", str(cfg), "--store", str(tmp_path / "s.sqlite"),
                 "--set", "optimizer.momentum=.inf"]) == 2
    assert "optimizer.momentum: must be a finite number, got inf" in one_error_line(capsys)
    assert not (tmp_path / "s.sqlite").exists()


def test_a_yaml_tag_in_a_parle_config_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "parle.yaml"
    cfg.write_text("data: !!python/object/apply:os.system ['touch pwned']\n"
                   "model: {name: mlp}\nparle: {replicas: 2}\nepochs: 1\n")
    assert main(["parle", str(cfg)]) == 2
    err = one_error_line(capsys)
    assert "parle.yaml: line 1, column 7: YAML tag" in err and "is not allowed" in err
    assert not (tmp_path / "pwned").exists()


def test_a_yaml_error_is_one_line_naming_the_file_and_line_in_every_config_reader(
        tmp_path, capsys):
    # run and experiment configs printed PyYAML's message: several lines, the place given as
    # `in "<unicode string>", line 2`, a tag by its full URI
    unclosed = tmp_path / "unclosed.yaml"
    unclosed.write_text("name: x\ndata: {name: digits\n")
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("name: x\ndata: !!python/object/apply:os.system ['true']\n")
    for command in (["train"], ["run", "--config"], ["parle"]):
        assert main([*command, str(unclosed)]) == 2, command
        err = one_error_line(capsys)
        assert f"{unclosed}: line 3, column 1: not valid YAML: " in err
        assert "expected ',' or '}'" in err
        assert "(while parsing a flow mapping, from line 2, column 7)" in err
        assert "<unicode string>" not in err
        assert main([*command, str(tagged)]) == 2, command
        assert (f"{tagged}: line 2, column 7: YAML tag 'tag:yaml.org,2002:python/object/apply:"
                "os.system' is not allowed" in one_error_line(capsys))
    valid = tmp_path / "tiny.yaml"
    valid.write_text(TINY)
    assert main(["train", str(valid), "--set", "optimizer.lr=[1"]) == 2
    assert ("--set optimizer.lr: line 1, column 3: not valid YAML: expected ',' or ']'"
            in one_error_line(capsys))


def test_measure_finds_the_runs_store_and_names_a_checkpoint_without_weights(
        tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store, run_dir = tmp_path / "lab" / "runs.sqlite", tmp_path / "lab" / "run"
    assert main(["train", str(cfg), "--store", str(store), "--out", str(run_dir)]) == 0
    capsys.readouterr()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["measure", str(run_dir), "--what", "hessian", "--probes", "2", "--k", "1"]) == 0
    assert not (elsewhere / "sgdlab-runs").exists()        # not a new store here
    (run,) = RunStore(store).list_runs()                     # the run's own store got it
    assert "measure/hess/top_1" in RunStore(store).metrics(run["id"])
    assert json.loads((run_dir / "run.json").read_text())["run_id"] == run["id"]

    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    del state["model"]
    torch.save(state, run_dir / "checkpoints" / "last.pt")
    assert main(["measure", str(run_dir), "--what", "hessian"]) == 2
    assert "has no 'model' entry" in one_error_line(capsys)

    # an experiment's run (of `sgdlab run`) records metrics, no weights
    sweep_run = RunStore(store).create_run({"lr": 0.1}, name="lr=0.1", experiment="sweep")
    assert main(["measure", sweep_run, "--store", str(store)]) == 2
    assert "keeps no model to measure" in one_error_line(capsys)


def test_print_config_checks_option_values_as_training_does(tmp_path, capsys):
    # --print-config checked option names only: a negative width or a one-point data grid
    # printed as valid and failed only once training started
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    bad = {"model={name: mlp, options: {widths: [-3]}}":
           "model.options: option 'widths[0]' must be an int >= 1, got -3",
           "data.options.n_train=1": "data.options: option 'n_train' must be an int >= 2",
           "data.name=mnist": "dataset 'mnist' reads files: pass data_dir="}
    for override, message in bad.items():
        assert main(["train", str(cfg), "--print-config", "--set", override]) == 2
        assert message in one_error_line(capsys)
    # the device is not checked here: the run may be meant for another machine
    assert main(["train", str(cfg), "--print-config", "--set", "train.device=cuda:7"]) == 0
    assert "device: 'cuda:7'" in capsys.readouterr().out


def test_a_config_that_is_not_utf8_text_is_named(tmp_path, capsys):
    cfg = tmp_path / "weights.yaml"
    cfg.write_bytes(b"\x80\x02}q\x00(X\x04\x00\x00\x00data")   # e.g. a pickle given by mistake
    assert main(["train", str(cfg)]) == 2
    assert f"{cfg}: not a UTF-8 text file" in one_error_line(capsys)
    assert main(["run", "--config", str(cfg)]) == 2
    assert f"{cfg}: not a UTF-8 text file" in one_error_line(capsys)
    assert main(["parle", str(cfg)]) == 2
    assert f"{cfg}: not a UTF-8 text file" in one_error_line(capsys)


def test_an_output_path_with_a_file_in_the_way_is_named_before_any_work(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store, blocker = tmp_path / "s.sqlite", tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        assert main(["train", str(cfg), "--store", str(store), "--out", str(out)]) == 2
        assert f"--out {out}: cannot create the folder: {blocker} is a file, not a folder" in \
            one_error_line(capsys)
    assert not store.exists() or RunStore(store).list_runs() == []   # no run left "running"
    # an experiment checks its report folder before its runs, not after them
    assert main(["run", "zhu-escape-2d", "--scale", "smoke", "--store", str(store),
                 "--out", str(blocker / "report")]) == 2
    assert f"{blocker} is a file, not a folder" in one_error_line(capsys)
    assert not store.exists() or RunStore(store).list_runs() == []
    # any other command writing under it: the path, no traceback
    assert main(["train", str(cfg), "--store", str(store), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["runs", "export", str(blocker / "runs.csv"), "--store", str(store)]) == 2
    assert (f"PATH's folder {blocker}: cannot create the folder: {blocker} is a file, not a "
            "folder") in one_error_line(capsys)
    # a folder where the file goes: that path, not the temporary file written beside it
    (tmp_path / "runs.csv").mkdir()
    assert main(["runs", "export", str(tmp_path / "runs.csv"), "--store", str(store)]) == 2
    said = one_error_line(capsys)
    assert said.endswith(f"cannot write {tmp_path / 'runs.csv'}: Is a directory\n"), said


def test_report_names_a_results_file_that_is_not_an_experiments(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--store", str(tmp_path / "s.sqlite"), "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    assert "is a training run's (sgdlab train" in one_error_line(capsys)
    (run / "results.json").write_text('{"experiment": ')           # truncated
    assert main(["report", str(run)]) == 2
    assert f"cannot read {run / 'results.json'}: Expecting value" in one_error_line(capsys)


def test_report_of_a_missing_folder_and_an_empty_filter_say_what_is_missing(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}': no such directory" in one_error_line(capsys)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store = str(tmp_path / "s.sqlite")
    assert main(["train", str(cfg), "--store", store, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["runs", "list", "--store", store, "--experiment", "nope"]) == 0
    assert capsys.readouterr().out == f"no runs with experiment 'nope' in {store}\n"
    # a mistyped experiment name is pointed to the closest one the store holds
    RunStore(store).create_run({}, name="gd", experiment="zhu-escape-2d", status="finished")
    assert main(["runs", "list", "--store", store, "--experiment", "zhu-escape2d"]) == 0
    assert capsys.readouterr().out == (f"no runs with experiment 'zhu-escape2d' in {store} "
                                       "(did you mean zhu-escape-2d?)\n")


def test_a_negative_label_noise_is_named_by_its_own_key(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("{name: cubic, seed: 0}",
                                "{name: cubic, seed: 0, options: {label_noise: -1}}"))
    assert main(["train", str(cfg), "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "option 'label_noise' is a number of training examples" in one_error_line(capsys)


def test_a_key_given_twice_or_a_recursive_alias_is_refused_by_every_config_reader(
        tmp_path, capsys):
    # YAML keeps the last of two equal keys: a second `optimizer:` silently replaced the first
    twice = TINY + "optimizer: {name: sgd, lr: 5.0}\n"
    for command in (["train"], ["run", "--config"], ["parle"]):
        cfg = tmp_path / "twice.yaml"
        cfg.write_text(twice)
        assert main([*command, str(cfg)]) == 2, command
        err = capsys.readouterr().err
        assert "Traceback" not in err and "key 'optimizer' is given twice (first on line 5)" in err
        cfg.write_text("a: &a [1, *a]\n")
        assert main([*command, str(cfg)]) == 2, command
        err = capsys.readouterr().err
        assert "Traceback" not in err and "recursive alias" in err and "line 1" in err
    # equal keys in different mappings, aliases and merge keys are still read as before
    from sgdlab.config import parse_yaml

    assert parse_yaml("a: {lr: 1}\nb: {lr: 1}\nc: &c [1]\nd: *c\n"
                      "e: &e {lr: 1, m: 2}\nf: {<<: *e, lr: 3}\n") == {
        "a": {"lr": 1}, "b": {"lr": 1}, "c": [1], "d": [1], "e": {"lr": 1, "m": 2},
        "f": {"lr": 3, "m": 2}}


def test_a_yaml_alias_bomb_is_refused_by_every_config_reader_at_once(tmp_path, capsys):
    # nine levels of nine aliases: `sgdlab train` walked its 4.9e8 values (the mapping, its
    # keys, the lists and their strings) until killed
    levels = "abcdefghi"
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]" for p, x in zip(levels, levels[1:])]
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    for command in (["train"], ["run", "--config"], ["parle"]):
        assert main([*command, str(cfg)]) == 2, command
        assert (f"{cfg}: line 1, column 1: not valid YAML: aliases expand this document to "
                "490,329,064 values, more than the 100,000") in one_error_line(capsys)


def test_a_config_of_another_kind_names_the_command_that_reads_it(tmp_path, capsys):
    # each command listed every top-level key of another kind of config as unknown
    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text(TINY)
    replica = tmp_path / "replica.yaml"
    replica.write_text("data: {name: digits}\nmodel: {name: mlp}\nparle: {replicas: 2}\n"
                       "epochs: 1\n")
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("name: e\nversion: 1\ndescription: d\nanalysis: a\n"
                          "paper: {author: A}\nscales: {smoke: {}}\n")
    cases = [(["parle", str(run_cfg)], run_cfg, "a run config, not a replica config "
              "(it has optimizer, train)", f"sgdlab train {run_cfg}"),
             (["run", "--config", str(run_cfg)], run_cfg, "a run config, not an experiment "
              "config", f"sgdlab train {run_cfg}"),
             (["train", str(replica)], replica, "a replica config, not a run config (it has "
              "parle)", f"sgdlab parle {replica}"),
             (["train", str(experiment)], experiment, "an experiment config, not a run config "
              "(it has paper, scales, analysis)", f"sgdlab run --config {experiment}")]
    for argv, path, kind, command in cases:
        assert main(argv) == 2, argv
        assert f"{path} is {kind}" in (err := one_error_line(capsys)) and f"`{command}`" in err
    from sgdlab.config import validate_config          # the Python API says it too
    with pytest.raises(ConfigError, match="the config is a replica config, not a run config"):
        validate_config({"data": {"name": "digits"}, "model": {"name": "mlp"},
                         "parle": {"replicas": 2}})


def test_every_config_reader_reads_an_exponent_without_a_dot_as_a_number(tmp_path):
    # YAML 1.1 reads `1e-1` as text; run, replica and experiment files all read it as 0.1
    from sgdlab.config import parse_yaml
    from sgdlab.experiments.spec import read_file

    assert parse_yaml("lr: 1e-1\nname: 1e3x\n") == {"lr": 0.1, "name": "1e3x"}
    exp = tmp_path / "exp.yaml"
    exp.write_text("base: {optimizer: {name: sgd, lr: 1e-1, weight_decay: 5e-4}}\n")
    assert read_file(exp)["base"]["optimizer"] == {"name": "sgd", "lr": 0.1,
                                                   "weight_decay": 0.0005}


def test_an_interrupted_sweep_run_completed_by_a_later_one_asks_for_nothing(tmp_path, capsys):
    """A sweep entry interrupted, then finished by a re-run sweep under a new run id: the old
    record shows which run finished it, and no command to continue it."""
    store = RunStore(tmp_path / "s.sqlite")
    cfg = {"run_key": "k1", "scale": "smoke"}
    old = store.create_run(cfg, name="gd|seed=0", experiment="zhu-escape-2d")
    store.complete_run(old, "interrupted")
    new, _ = store.claim_key("k1", cfg, name="gd|seed=0", experiment="zhu-escape-2d")
    store.complete_run(new, "finished")
    other = store.create_run({"run_key": "k2", "scale": "smoke"}, name="sgd|seed=0",
                             experiment="zhu-escape-2d")
    store.complete_run(other, "interrupted")
    path = str(store.path)
    store.close()
    assert main(["runs", "show", old, "--store", path]) == 0
    out = capsys.readouterr().out
    assert f"nothing to continue: run {new} of the same sweep entry finished since" in out
    assert "continue it with" not in out
    assert main(["runs", "show", other, "--store", path]) == 0
    assert "continue it with: sgdlab run zhu-escape-2d --scale smoke" in capsys.readouterr().out
    # a sweep of an experiment file (not a catalogue entry) is continued from that file
    store = RunStore(path)
    edited = store.create_run({"run_key": "k3", "scale": "smoke", "source": "/x/my.yaml"},
                              name="gd|seed=1", experiment="zhu-escape-2d")
    store.complete_run(edited, "interrupted")
    store.close()
    assert main(["runs", "show", edited, "--store", path]) == 0
    assert ("continue it with: sgdlab run --config /x/my.yaml --scale smoke"
            in capsys.readouterr().out)


@pytest.mark.parametrize("given", [True, False])
def test_measure_of_a_mistyped_run_creates_no_store(tmp_path, monkeypatch, capsys, given):
    """An id or folder that names nothing, with no store where one is looked for: one line
    that says so, and no empty store left behind (as `runs show` and `resume`)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SGDLAB_STORE", raising=False)
    store = tmp_path / "given.sqlite" if given else Path("sgdlab-runs/runs.sqlite")
    argv = ["measure", "2026-no-such-run"] + (["--store", str(store)] if given else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'2026-no-such-run' is no run folder or checkpoint" in err
    assert f"no run store at {store} to look it up in" in err
    assert list(tmp_path.iterdir()) == []


def test_a_remote_run_that_never_reported_is_not_said_to_be_silent_for_a_minute(tmp_path,
                                                                                 capsys):
    """A running run recorded on another host without any heartbeat shows as stale at once;
    `runs show` says it never reported, and one silent past the threshold says since when."""
    import re
    import sqlite3
    import time

    from sgdlab.store import runstore

    store = RunStore(tmp_path / "s.sqlite")
    rid = store.create_run({}, name="far", env={})
    path = str(store.path)
    store.close()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE runs SET host = 'node-7', heartbeat = NULL WHERE id = ?", (rid,))
    assert main(["runs", "show", rid, "--store", path]) == 0
    out = capsys.readouterr().out
    assert "has never reported" in out and "over a minute" not in out
    with conn:
        conn.execute("UPDATE runs SET heartbeat = ? WHERE id = ?",
                     (time.time() - 3 * runstore.STALE_AFTER, rid))
    conn.close()
    assert main(["runs", "show", rid, "--store", path]) == 0
    assert re.search(r"last reported 9\d s ago", capsys.readouterr().out)


def test_a_store_another_process_keeps_locked_is_named_as_locked(tmp_path, monkeypatch,
                                                                  capsys):
    """A write transaction held open on the store (an sqlite3 shell, a database browser)
    longer than the busy timeout: at the opening it was called "not a usable sgdlab run
    store", met later (here by the run's creation) it was a traceback."""
    import sqlite3

    path = tmp_path / "runs.sqlite"
    RunStore(path).close()
    monkeypatch.setitem(RunStore.__init__.__kwdefaults__, "timeout", 0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(Exception, match="is locked by another process") as opened:
        RunStore(path)
    assert "not a usable" not in str(opened.value)
    holder.execute("ROLLBACK")

    create = RunStore.create_run

    def create_while_locked(self, *args, **kwargs):
        holder.execute("BEGIN EXCLUSIVE")      # taken after the command opened the store
        return create(self, *args, **kwargs)

    monkeypatch.setattr(RunStore, "create_run", create_while_locked)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    try:
        assert main(["train", str(cfg), "--store", str(path), "--out",
                     str(tmp_path / "run"), "--no-progress"]) == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert f"run store {path} is locked by another process" in one_error_line(capsys)


def test_report_of_a_name_without_a_store_makes_none(tmp_path, monkeypatch, capsys):
    # it opened the default store to find its path, which made an empty ./sgdlab-runs/
    # runs.sqlite, then said that none of the experiment's runs was in it
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SGDLAB_STORE", raising=False)
    assert main(["report", "xing-cosine-grid", "--scale", "smoke"]) == 2
    assert "no run store at sgdlab-runs/runs.sqlite" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag, value", [("--sigma", "-1"), ("--sigma", "nan"),
                                         ("--epsilon", "0"), ("--epsilon", "inf"),
                                         ("--gamma", "-0.5")])
def test_measure_refuses_a_bad_sharpness_option_before_measuring(tmp_path, capsys, flag,
                                                                 value):
    # it was a ValueError traceback from the sharpness function after the Hessian had been
    # measured (NaN and inf ran, and stored NaN)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    store, run_dir = tmp_path / "runs.sqlite", tmp_path / "run"
    assert main(["train", str(cfg), "--store", str(store), "--out", str(run_dir)]) == 0
    capsys.readouterr()
    out = tmp_path / "measured"
    assert main(["measure", str(run_dir), "--what", "hessian,sharpness", "--k", "1",
                 "--probes", "2", "--samples", "2", flag, value, "--out", str(out)]) == 2
    assert f"{flag} must be finite and" in one_error_line(capsys)
    assert not out.exists()
    assert not any(m.startswith("measure/") for m in RunStore(store).metrics(
        RunStore(store).list_runs()[0]["id"]))


def test_measure_names_each_bad_count_option(tmp_path, capsys):
    # checked before the checkpoint is read: the target need not exist
    assert main(["measure", str(tmp_path), "--k", "0", "--subset", "-3"]) == 2
    err = one_error_line(capsys)
    assert "--subset must be >= 0, got -3" in err and "--k must be >= 1, got 0" in err


def test_report_of_a_name_at_a_scale_not_run_names_the_scale_that_was(tmp_path, capsys):
    # `sgdlab report NAME` reads the cpu scale: after a smoke run it said only that none of
    # the runs was in the store
    store = str(tmp_path / "runs.sqlite")
    assert main(["run", "zhu-escape-2d", "--scale", "smoke", "--store", store,
                 "--out", str(tmp_path / "smoke")]) == 0
    capsys.readouterr()
    assert main(["report", "zhu-escape-2d", "--store", store,
                 "--out", str(tmp_path / "cpu")]) == 2
    err = one_error_line(capsys)
    assert ("at scale cpu" in err
            and "holds runs of it under --scale smoke: give those options" in err)
    assert not (tmp_path / "cpu").exists()


def test_measure_prints_each_measurement_as_it_ends(tmp_path, capsys, monkeypatch):
    # every value was printed at the very end: minutes on a CNN without a line after the
    # first, and nothing at all of what was measured when a later measurement failed
    import sgdlab.cli.measure as measure_cli

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run_dir = tmp_path / "run"
    assert main(["train", str(cfg), "--store", str(tmp_path / "runs.sqlite"),
                 "--out", str(run_dir)]) == 0
    capsys.readouterr()

    def stop(m):
        raise KeyboardInterrupt

    monkeypatch.setattr(measure_cli, "_noise", stop)
    assert main(["measure", str(run_dir), "--what", "hessian,noise", "--k", "1",
                 "--probes", "2"]) == 130
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "  hessian ..." and lines[2].startswith("  (hess/: ")
    first = next(i for i, line in enumerate(lines) if line.startswith("  hess/"))
    assert all(line.startswith("   ") for line in lines[3:first])   # the head's wrapped rest
    assert lines[first] == f"  {'hess/top_1':28s} " + lines[first].split()[-1]
    # the interrupted one said it started; the one finished before it is written
    assert lines[-2] == "  noise ..." and lines[-1].startswith("  wrote ")


def test_a_store_folder_given_as_the_store_names_the_store_in_it(tmp_path, capsys):
    # `--store sgdlab-runs` (the folder, not its runs.sqlite) said only that there was no
    # store there, or that the path was a directory
    folder = tmp_path / "sgdlab-runs"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    assert main(["train", str(cfg), "--store", str(folder / "runs.sqlite"),
                 "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    hint = f"the store in that folder is {folder / 'runs.sqlite'}"
    for argv in (["runs", "list"], ["resume", "x"], ["measure", "x"],
                 ["report", "zhu-escape-2d"], ["train", str(cfg)],
                 ["run", "zhu-escape-2d", "--scale", "smoke", "--dry-run"]):
        assert main([*argv, "--store", str(folder)]) == 2, argv
        assert hint in one_error_line(capsys), argv
    assert main(["runs", "list", "--store", str(tmp_path / "run")]) == 2
    assert "it is a folder, not a store's file" in one_error_line(capsys)


def test_an_empty_config_file_is_named_as_empty_by_every_config_reader(tmp_path, capsys):
    # an empty run config was reported as three missing sections, as if it had been read
    cases = [(["train"], "empty.yaml", "a run config needs data, model and optimizer"),
             (["train"], "empty.toml", "a run config needs data, model and optimizer"),
             (["run", "--config"], "empty.yaml", "an experiment config needs name"),
             (["parle"], "empty.yaml", "a replica config needs data, model and parle")]
    for command, name, needs in cases:
        for text in ("", "# only a comment\n", "{}\n" if name.endswith(".yaml") else ""):
            cfg = tmp_path / name
            cfg.write_text(text)
            assert main([*command, str(cfg)]) == 2, (command, text)
            err = capsys.readouterr().err
            assert f"{cfg}: the file is empty" in err and needs in err, (command, text, err)
            assert "required section is missing" not in err and err.count("\n") == 1


def test_a_warning_is_the_commands_own_line_without_a_code_location(tmp_path, capsys):
    import warnings

    import yaml

    from sgdlab.config.io import load_config

    cfg = load_config("digits-mlp")
    cfg["data"]["data_dir"] = str(tmp_path)          # digits reads no files: a warning
    cfg["train"]["epochs"] = 1
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    shown = warnings.showwarning
    assert main(["train", str(path), "--store", str(tmp_path / "store")]) == 0
    err = capsys.readouterr().err.splitlines()
    said = [line for line in err if "reads no files" in line]
    # Python's own format named "<frozen runpy>:88: UserWarning:" (or an sgdlab source line)
    assert said == [f"sgdlab: warning: dataset 'digits' reads no files: data_dir "
                    f"'{tmp_path}' is ignored (the datasets read from files: cifar10, "
                    "cifar100, fashion_mnist, mnist, ptb, text_chars, text_lines, text_words)"]
    assert warnings.showwarning is shown


# /proc makes no new entries and answers "no such file" (ENOENT), which was no file-system
# error to the CLI: landscape, walk, measure and runs export ended in a traceback
NO_DIR = "/proc/sgdlab-no-such/out"
needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")


@needs_proc
@pytest.mark.parametrize("argv", [
    ["landscape", "ou", "--quick"],
    ["walk", "--steps", "2", "--widths", "4", "--points", "1"]])
def test_an_out_folder_under_proc_is_named_in_one_line(argv, capsys, monkeypatch):
    # walk's folder is made once its data are loaded: eight examples stand for the digits
    from sgdlab.data import Dataset
    monkeypatch.setattr("sgdlab.data.load_dataset", lambda name, **kw: Dataset(
        torch.randn(8, 3), torch.arange(8) % 2))
    assert main([*argv, "--out", NO_DIR]) == 2
    assert f"--out {NO_DIR}: cannot create the folder: No such file" in one_error_line(capsys)


@needs_proc
def test_a_measure_out_folder_under_proc_is_named_in_one_line(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--store", str(tmp_path / "s.sqlite"), "--out",
                 str(run)]) == 0
    capsys.readouterr()
    assert main(["measure", str(run), "--what", "hessian", "--out", NO_DIR]) == 2
    assert f"--out {NO_DIR}: cannot create the folder: No such file" in one_error_line(capsys)


@needs_proc
def test_an_export_path_under_proc_is_named_in_one_line(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    RunStore(store).close()
    for argv, said in (
            ([f"{NO_DIR}/x.csv"], f"PATH's folder {NO_DIR}: cannot create the folder: No such"),
            (["--tensorboard", NO_DIR], f"--tensorboard {NO_DIR}: cannot create the folder"),
            (["/proc/sgdlab-no-such.csv"],    # the folder is there; the file cannot be made
             "cannot write /proc/sgdlab-no-such.csv: No such file or directory")):
        assert main(["runs", "export", "--store", str(store), *argv]) == 2, argv
        assert said in one_error_line(capsys)


@needs_proc
def test_no_such_file_is_a_path_it_cannot_write_only_when_a_write_met_it(tmp_path):
    # /proc makes no new entries: a write there is "no such file"; a read's "no such file"
    # is no write, and stays an error of the code (a traceback), not "cannot write"
    from sgdlab.atomic import write_whole
    from sgdlab.cli.main import error_message
    from sgdlab.store.runstore import store_connections

    with pytest.raises(FileNotFoundError) as written:
        write_whole("/proc/sgdlab-no-such.txt", "x")
    assert error_message(written.value, store_connections()) == (
        "cannot write /proc/sgdlab-no-such.txt: No such file or directory")
    with pytest.raises(FileNotFoundError) as read:
        open(tmp_path / "missing.txt").read()
    assert error_message(read.value, store_connections()) is None


def test_a_run_folder_not_in_the_given_store_names_the_store_it_records(tmp_path, capsys):
    # `resume FOLDER --store OTHER` said only "no run X in OTHER", not where FOLDER's run is
    folder, kept, other = tmp_path / "run", tmp_path / "kept.sqlite", tmp_path / "other.sqlite"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"run_id": "20260101-000000-abcd",
                                                 "store": str(kept)}))
    RunStore(other).close()
    for command in (["resume"], ["runs", "show"]):
        assert main([*command, str(folder), "--store", str(other)]) == 2
        assert (f"no run '20260101-000000-abcd' in {other}; {folder} records its run in the "
                f"store {kept} (leave out --store to use it)") in one_error_line(capsys)


@needs_proc
def test_a_tensorboard_folder_under_proc_is_refused_before_the_run_is_recorded(tmp_path,
                                                                               capsys):
    # the run was recorded, then failed at its first logged metric with a FileNotFoundError
    cfg, store = tmp_path / "tiny.yaml", tmp_path / "s.sqlite"
    cfg.write_text(TINY)
    assert main(["train", str(cfg), "--store", str(store), "--out", str(tmp_path / "run"),
                 "--tensorboard", NO_DIR]) == 2
    assert (f"train.tensorboard (--tensorboard) {NO_DIR}: cannot create the folder: No such "
            "file or directory") in one_error_line(capsys)
    assert not store.exists() and not (tmp_path / "run").exists()
    # an experiment's: its first run was recorded failed, the sweep stopped
    assert main(["run", "zhu-escape-2d", "--scale", "smoke", "--store", str(store), "--out",
                 str(tmp_path / "report"), "--tensorboard", NO_DIR]) == 2
    assert f"--tensorboard {NO_DIR}: cannot create the folder" in one_error_line(capsys)
    assert not store.exists() and not (tmp_path / "report").exists()
