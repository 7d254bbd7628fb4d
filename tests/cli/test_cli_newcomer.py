"""The command line as a newcomer meets it: --version, help text, start-up, `runs show`,
the Parle launcher's environment."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import sgdlab
from sgdlab.cli.main import build_parser, main
from sgdlab.store import RunStore
from sgdlab.testing import fresh_python

ROOT = Path(__file__).resolve().parents[2]
REST = re.compile(r"``|:(mod|func|class|meth|data|attr):`")


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"sgdlab {version}" == f"sgdlab {sgdlab.__version__}"


def test_python_dash_m_sgdlab_is_the_command():
    """`python -m sgdlab ...` where the console script is not on PATH (a checkout, a batch
    job's bare interpreter): it said "No module named sgdlab.__main__"."""
    p = subprocess.run([sys.executable, "-m", "sgdlab", "--version"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"sgdlab {sgdlab.__version__}", p.stderr


def _parsers(parser, path=("sgdlab",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_command_and_option_has_plain_help():
    seen = set()
    for path, parser in _parsers(build_parser()):
        seen.add(" ".join(path))
        text = parser.format_help()
        assert not REST.search(text), (path, REST.search(text).group(0))
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                                   argparse._SubParsersAction)):
                continue
            assert action.help, (path, action.option_strings or action.dest)
    assert {"sgdlab measure", "sgdlab parle", "sgdlab report", "sgdlab resume",
            "sgdlab config schema", "sgdlab runs export"} <= seen


def test_every_command_says_what_it_does_and_names_its_actions():
    """`sgdlab runs list --help` opened on its usage alone, and `sgdlab --help` listed `runs` as
    "list, show and export", without compare: each command's own help has a description, and
    the one-line help of a command with actions names each of them."""
    quiet, unnamed = [], []
    for path, parser in _parsers(build_parser()):
        if not parser.description:
            quiet.append(" ".join(path))
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                actions = next((a.choices for a in sub._actions
                                if isinstance(a, argparse._SubParsersAction)), {})
                unnamed += [(name, a) for a in actions if a not in helps[name].lower()]
    assert quiet == [] and unnamed == []


@pytest.mark.parametrize("argv, prog, hint", [
    (["train", "digits-mlp", "--sett", "train.epochs=1"], "sgdlab train", " (did you mean --set?)"),
    (["runs", "list", "--satus", "finished"], "sgdlab runs list", " (did you mean --status?)"),
    (["run", "zhu-escape-2d", "--wrokers=2"], "sgdlab run", " (did you mean --workers?)"),
    (["list", "--jsn"], "sgdlab list", " (did you mean --json?)"),
])
def test_a_mistyped_option_is_named_by_its_command_with_the_closest_option(
        argv, prog, hint, capsys):
    # argparse answered with `usage: sgdlab [-h] [--version] COMMAND ...`, the top-level
    # usage that shows none of the command's options, and no suggestion
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {prog} ")
    unknown = " ".join(argv[2:] if argv[0] != "list" else argv[1:])
    assert err.splitlines()[-1] == f"{prog}: error: unrecognized arguments: {unknown}{hint}"


def test_a_space_for_set_s_equals_sign_is_named(capsys):
    # argparse named the value alone: "unrecognized arguments: 5"
    with pytest.raises(SystemExit):
        main(["train", "digits-mlp", "--set", "train.epochs", "5"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sgdlab train: error: unrecognized arguments: 5 (--set takes KEY=VALUE as one word: "
        "--set train.epochs=5)")


@pytest.mark.parametrize("flag", ["--set", "--epochs", "--seed", "--optimizer"])
def test_an_override_given_to_run_says_how_an_experiment_is_changed(flag, capsys):
    # --set and --seed were "did you mean --store?", --epochs had no hint
    with pytest.raises(SystemExit):
        main(["run", "xing-walk", flag, "2"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"sgdlab run: error: unrecognized arguments: {flag} 2 (sgdlab run takes no overrides: "
        "change an experiment's parameters in a copy of its file (`sgdlab list NAME` names it) "
        "and run that with --config FILE; --scale smoke is its shortest version)")


def test_a_misspelt_option_of_run_is_named_as_that_option(capsys):
    with pytest.raises(SystemExit):
        main(["run", "xing-walk", "--scael", "smoke"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sgdlab run: error: unrecognized arguments: --scael smoke (did you mean --scale?)")


@pytest.mark.parametrize("argv, prog, message", [
    (["lst"], "sgdlab", "argument COMMAND: invalid choice: 'lst' (did you mean list?); choose "
     "from config, landscape, list, measure, parle, report, run, runs, resume, temperature, "
     "train, walk"),
    (["runs", "lst"], "sgdlab runs", "argument ACTION: invalid choice: 'lst' (did you mean "
     "list?); choose from list, show, compare, export, delete"),
    (["run", "xing-walk", "--scale", "papr"], "sgdlab run", "argument --scale: invalid "
     "choice: 'papr' (did you mean paper?); choose from smoke, cpu, paper"),
    (["runs", "list", "--status", "finised"], "sgdlab runs list", "argument --status: invalid "
     "choice: 'finised' (did you mean finished?); choose from running, finished, diverged, "
     "failed, interrupted, stale"),
    (["landscape", "escap"], "sgdlab landscape", "argument demo: invalid choice: 'escap' (did "
     "you mean escape?); choose from escape, ou, double-well, pspin, pde, perceptron"),
])
def test_a_misspelt_command_or_choice_names_the_closest(argv, prog, message, capsys):
    # argparse listed every choice, quoted, and suggested none of them
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"{prog}: error: {message}"


def test_a_choice_far_from_every_valid_one_keeps_argparse_s_message(capsys):
    with pytest.raises(SystemExit):
        main(["xyzzy"])
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        "sgdlab: error: argument COMMAND: invalid choice: 'xyzzy' (choose from ")


def test_every_option_with_a_default_says_it():
    """An option that takes a value when not given says which in its help (a seed, a
    timeout, a momentum); switches and options that are simply absent need not."""
    missing = []
    for path, parser in _parsers(build_parser()):
        for a in parser._actions:
            if (a.option_strings and not isinstance(a, argparse._StoreTrueAction)
                    and a.default not in (None, [], argparse.SUPPRESS) and a.default is not False
                    and "default" not in (a.help or "")):
                missing.append((" ".join(path), a.option_strings[0], a.default))
    assert missing == []


def test_report_help_names_its_argument_as_its_text_does():
    """The description and options speak of TARGET (and OTHER): the usage line names the
    positional argument so, and --out says where a report goes when not given."""
    parser = dict(_parsers(build_parser()))[("sgdlab", "report")]
    usage, text = parser.format_usage(), parser.format_help()
    assert usage.split()[-1] == "TARGET" and "--compare OTHER" in usage
    assert "TARGET is an output directory" in text and "sgdlab-out/NAME-SCALE" in text


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["train", "--help"],
                                  ["temperature", "--lr", "0.1", "--batch-size", "10"]])
def test_help_and_list_import_no_numerics(argv):
    """What makes `sgdlab --help` and `sgdlab list` fast (the timing itself is the
    benchmark figure cli_startup_seconds): torch and friends are imported only by the
    commands that compute with them (`sgdlab temperature`'s formulas are arithmetic: the
    package sgdlab.measure imports its measurements when they are used)."""
    code = ("import sys\nfrom sgdlab.cli.main import main\ntry:\n    main(%r)\n"
            "except SystemExit:\n    pass\n"
            "heavy = ('torch', 'numpy', 'scipy', 'matplotlib', 'sklearn', 'pydantic')\n"
            "print('IMPORTED', sorted(m for m in heavy if m in sys.modules))" % argv)
    assert fresh_python(code, timeout=60).strip().splitlines()[-1] == "IMPORTED []"


def test_runs_show_leaves_out_what_a_run_does_not_have(tmp_path, capsys):
    store = RunStore(tmp_path / "runs.sqlite")
    plain = store.create_run({"lr": 0.1}, name="probe", env={"torch_threads": 1})
    part = store.create_run({"lr": 0.1}, name="sq", experiment="t-square", env={})
    assert main(["runs", "show", plain, "--store", str(store.path)]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head == f"run {plain}  name probe"
    assert main(["runs", "show", part, "--store", str(store.path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"run {part}  name sq  experiment t-square"
    # a sweep's run: its scale, which its name does not say
    swept = store.create_run({"scale": "smoke"}, name="sq", experiment="t-square", env={})
    assert main(["runs", "show", swept, "--store", str(store.path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (f"run {swept}  name sq  experiment "
                                                       "t-square  scale smoke")


def test_runs_show_aligns_long_metric_names(tmp_path, capsys):
    store = RunStore(tmp_path / "runs.sqlite")
    run = store.create_run({"lr": 0.1}, name="probe", env={})
    store.log_metrics(run, 3, {"loss": 0.5, "measure/align/hess_norm_eig_1": 2.0})
    assert main(["runs", "show", run, "--store", str(store.path)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = out[out.index("metrics (points, last step: value):") + 1:][:2]
    assert len({row.index(" 3: ") for row in rows}) == 1, rows


def test_parle_launches_torchrun_with_one_thread_per_process(tmp_path, monkeypatch, capsys,
                                                             tmp_store):
    import sgdlab.cli.parle as parle

    cfg = tmp_path / "parle.json"
    cfg.write_text(json.dumps({"data": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
                               "parle": {"replicas": 2, "L": 2, "lr": 0.1, "batch_size": 5},
                               "rounds": 1}))
    calls = []

    class Launched:                       # torchrun, started and finished at once
        def __init__(self, cmd, env, **kw):
            calls.append((cmd, env))

        def wait(self):
            return 0

    monkeypatch.setattr(parle.subprocess, "Popen", Launched)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert main(["parle", str(cfg), "--mode", "distributed"]) == 0
    (cmd, env), = calls
    # torchrun in sgdlab.train.launch: a failure summary in place of torchrun's traceback
    assert env["OMP_NUM_THREADS"] == "1" and cmd[2:4] == ["sgdlab.train.launch",
                                                           "--nproc-per-node"]
    assert main(["parle", str(cfg), "--mode", "distributed", "--print-command"]) == 0
    assert capsys.readouterr().out.startswith("OMP_NUM_THREADS=1 ")


def test_measure_data_shows_its_splits():
    # `--data NAME` read as a dataset's name, as `sgdlab walk --data` takes; it is a split
    measure = dict(_parsers(build_parser()))[("sgdlab", "measure")]
    assert "[--data {train,test}]" in " ".join(measure.format_usage().split())


# `python -m sgdlab ARGV` whose command, once ended, leaves an exit hook or an object freed at
# the interpreter's teardown that sends the process SIGINT (a Ctrl-C as it exits)
LATE_SIGINT = """
import atexit, os, runpy, signal, sys, time
when, times, sys.argv = sys.argv[1], int(sys.argv[2]), ["sgdlab", *sys.argv[3:]]

def interrupt():
    for _ in range(times):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)

class FreedLast:
    def __del__(self):
        interrupt()

import sgdlab.cli.main as cli
command = cli.main

def main(argv=None):
    code = command(argv)
    if when == "hook":
        atexit.register(interrupt)     # as torch's hooks, registered by the command
    else:
        cli.held = FreedLast()
    return code

cli.main = main
runpy.run_module("sgdlab", run_name="__main__")
"""


@pytest.mark.parametrize("when,times,argv,status", [
    ("hook", 1, ["list"], 0), ("teardown", 1, ["list"], 0), ("hook", 2, ["list"], 130),
    ("hook", 1, ["runs", "show", "x", "--store", "/no/such/s.sqlite"], 2)])
def test_a_ctrl_c_as_the_program_exits_leaves_its_exit_status(when, times, argv, status):
    """A SIGINT in an exit hook raised KeyboardInterrupt inside it (a traceback, 'Exception
    ignored in atexit callback'); one at the teardown after them killed the process (status
    -2). The command's status stands, the first in a hook is said in one line, a second one
    exits at once with 130."""
    p = subprocess.run([sys.executable, "-c", LATE_SIGINT, when, str(times), *argv],
                       capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert p.returncode == status, p.stderr
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr
    late = [line for line in p.stderr.splitlines() if "after the command had ended" in line]
    ended = status if times == 1 else 0
    assert late == ([] if when == "teardown" else [
        f"sgdlab: interrupted after the command had ended (exit status {ended}); finishing its "
        "exit (again to stop at once)"])


def test_train_help_names_the_packaged_configs():
    """`sgdlab train --help` named one packaged config by example: the others (char-lstm)
    were found only by reading the source tree."""
    from sgdlab.config import packaged_configs

    text = " ".join(dict(_parsers(build_parser()))[("sgdlab", "train")].format_help().split())
    assert len(packaged_configs()) >= 2
    assert f"packaged config ({', '.join(packaged_configs())};" in text


def test_runs_in_a_fresh_folder_says_nothing_was_recorded_there(tmp_path, monkeypatch, capsys):
    """A first `sgdlab runs list` before any run: the missing default store is explained,
    with the command that records a first run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SGDLAB_STORE", raising=False)
    for argv in (["runs", "list"], ["runs", "show", "abc"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no run store at sgdlab-runs/runs.sqlite" in err
        assert (f"no run has been recorded from this folder ({tmp_path}) yet: `sgdlab train "
                "digits-mlp`") in err
    assert list(tmp_path.iterdir()) == []
    # a store named explicitly, or by $SGDLAB_STORE, is a path to check, not a first visit
    assert main(["runs", "list", "--store", "elsewhere.sqlite"]) == 2
    assert "recorded from this folder" not in capsys.readouterr().err
    monkeypatch.setenv("SGDLAB_STORE", "elsewhere.sqlite")
    assert main(["runs", "list"]) == 2
    assert "recorded from this folder" not in capsys.readouterr().err


def test_every_command_that_looks_up_runs_in_a_fresh_folder_says_none_was_recorded_there(
        tmp_path, monkeypatch, capsys):
    """`sgdlab report NAME`, `sgdlab measure RUN` and `--init-from RUN` said only that the
    store was missing (with --store PATH as the way out): nothing named the folder or the
    command that records a first run, as `sgdlab runs` does."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SGDLAB_STORE", raising=False)
    first = f"no run has been recorded from this folder ({tmp_path}) yet: "
    assert main(["report", "zhu-escape-2d", "--scale", "smoke"]) == 2
    assert first + "`sgdlab run zhu-escape-2d --scale smoke` runs it and writes its report" \
        in capsys.readouterr().err
    assert main(["report", "xing-walk", "--reading", "spacing=inclusive"]) == 2
    assert first + ("`sgdlab run xing-walk --scale cpu --reading spacing=inclusive` runs it "
                    "and writes its report") in capsys.readouterr().err
    for argv in (["measure", "abc"], ["resume", "abc"],
                 ["train", "digits-mlp", "--init-from", "abc"]):
        assert main(argv) == 2, argv
        assert first + "`sgdlab train digits-mlp` or `sgdlab run NAME` records runs there" \
            in capsys.readouterr().err, argv
    assert list(tmp_path.iterdir()) == []
    # a store named explicitly is a path to check, not a first visit
    assert main(["report", "zhu-escape-2d", "--store", "elsewhere.sqlite"]) == 2
    assert "recorded from this folder" not in capsys.readouterr().err
