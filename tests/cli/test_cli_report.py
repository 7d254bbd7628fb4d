"""``sgdlab report --compare``: two reports of one experiment, checked before either is
rebuilt."""
from __future__ import annotations

import json

import pytest

from sgdlab.cli.main import main
from sgdlab.experiments.spec import CATALOGUE_DIR


def _report(folder, name):
    """A folder holding what the check reads of a report: its results.json's experiment."""
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"experiment": {"name": name,
                                                                    "version": 1}}))
    return folder


def test_reports_of_two_experiments_are_not_compared(tmp_path, capsys, monkeypatch):
    # zhu-escape-2d's tables were set beside chaudhari-double-well's and the same-named ones
    # subtracted, rows matched on settings that mean other things in each
    import sgdlab.experiments.runner as runner

    monkeypatch.setattr(runner, "rebuild", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("rebuilt before the check")))
    a, b = _report(tmp_path / "a", "zhu-escape-2d"), _report(tmp_path / "b", "xing-walk")
    page = tmp_path / "cmp.html"
    assert main(["report", str(a), "--compare", str(b), "--out", str(page)]) == 2
    err = capsys.readouterr().err
    assert (f"--compare: the reports are of two experiments, zhu-escape-2d ({a}) and xing-walk "
            f"({b}): a comparison puts two reports of one experiment side by side") in err
    assert err.count("\n") == 1 and not page.exists()
    # OTHER as a catalogue name: named once
    assert main(["report", str(a), "--compare", "chaudhari-double-well", "--scale",
                 "smoke"]) == 2
    assert (f"two experiments, zhu-escape-2d ({a}) and chaudhari-double-well: "
            in capsys.readouterr().err)


def test_a_reading_goes_to_the_report_named_by_its_experiment(tmp_path, monkeypatch, capsys):
    # `report DIR --compare NAME --reading K=C` refused the reading for DIR ("holds a report
    # whose readings are recorded"), though the help gives it to whichever is a name
    import sgdlab.cli.report as cli_report
    import sgdlab.experiments.runner as runner
    import sgdlab.report.compare as compare

    rebuilt, checked = {}, {}
    monkeypatch.setattr(runner, "rebuild", lambda target, **k: rebuilt.setdefault(
        str(target), (k["scale"], k["readings"])) and (tmp_path, {}))
    monkeypatch.setattr(cli_report, "_experiment_of", lambda target, scale, readings: (
        checked.setdefault(str(target), readings), None)[1])
    monkeypatch.setattr(compare, "write_compare", lambda *a: tmp_path / "cmp.html")
    monkeypatch.setattr(compare, "compare_lines", lambda *a: [])
    a = _report(tmp_path / "a", "jastrzebski-ratio-grid")
    assert main(["report", str(a), "--compare", "jastrzebski-ratio-grid", "--scale", "smoke",
                 "--reading", "final-hessian-bn=train"]) == 0
    assert rebuilt == {str(a): (None, {}),
                       "jastrzebski-ratio-grid": ("smoke", {"final-hessian-bn": "train"})}
    assert checked == {str(a): {}, "jastrzebski-ratio-grid": {"final-hessian-bn": "train"}}


def test_a_results_json_whose_experiment_is_not_a_mapping_is_named(tmp_path, capsys):
    # a hand-edited `"experiment": "NAME"` ended `report` in an AttributeError traceback
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(
        {"experiment": "zhu-escape-2d", "scale": "smoke", "config": {"file": {}}}))
    for argv in (["report", str(folder)], ["report", str(folder), "--compare", str(folder)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert (f"{folder / 'results.json'}: key 'experiment' is str 'zhu-escape-2d', not a "
                "mapping") in err and err.count("\n") == 1
    (folder / "results.json").write_text(json.dumps(
        {"environment": "cpu", "scale": "smoke", "config": {"file": {}}}))
    assert main(["report", str(folder)]) == 2
    assert "key 'environment' is str 'cpu', not a mapping" in capsys.readouterr().err


def test_a_name_that_is_neither_an_experiment_nor_a_folder_is_said_to_be_neither(
        tmp_path, capsys, monkeypatch):
    """`sgdlab report o99` (a mistyped output folder, as likely as a mistyped name) said
    "unknown experiment", as if only a catalogue name could be meant."""
    monkeypatch.chdir(tmp_path)
    assert main(["report", "o99"]) == 2
    err = capsys.readouterr().err
    assert ("no experiment and no folder 'o99'; `sgdlab list` shows the catalogue, and "
            "`sgdlab report FILE.yaml` takes an experiment file of your own\n") in err
    assert main(["report", "xing-wlak"]) == 2
    assert ("no experiment and no folder 'xing-wlak' (did you mean xing-walk?)"
            in capsys.readouterr().err)
    assert not (tmp_path / "runs.sqlite").exists() and not list(tmp_path.iterdir())
    # the name of an experiment file of one's own, without its extension: the file is named
    (tmp_path / "o99.yml").write_text("name: o99\n")
    assert main(["report", "o99"]) == 2
    assert ("takes an experiment file of your own (`sgdlab report o99.yml` for the o99.yml "
            "here)\n") in capsys.readouterr().err


def test_a_missing_path_with_a_folder_in_it_names_experiment_files_too(tmp_path, capsys,
                                                                       monkeypatch):
    # `sgdlab report sub/x.yaml` said "no such directory (... an output directory or a
    # catalogue name)", as if an experiment file could not be meant
    monkeypatch.chdir(tmp_path)
    assert main(["report", "sub/x.yaml"]) == 2
    assert ("'sub/x.yaml': no such directory or file (a report is rebuilt from an output "
            "directory or a catalogue name, and `sgdlab report FILE.yaml` takes an experiment "
            "file of your own)\n") in capsys.readouterr().err


def test_scale_and_reading_help_name_an_experiment_file_too():
    # the help gave --scale and --reading to an experiment name alone; a FILE.yaml target is
    # resolved at them too
    from sgdlab.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    helps = {a.dest: a.help for a in sub.choices["report"]._actions}
    for dest in ("scale", "reading"):
        assert "when TARGET/OTHER is an experiment name or FILE.yaml" in helps[dest], dest


def test_a_report_folder_alone_refuses_a_scale_or_reading_it_was_not_written_at(
        tmp_path, capsys):
    # without --compare, --scale and --reading reach the folder's rebuild, which refuses
    # them: its recorded scale and readings are what it rebuilds
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({
        "scale": "cpu", "config": {"file": {}}, "experiment": {"name": "xing-walk",
                                                               "version": 1}}))
    assert main(["report", str(folder), "--scale", "paper"]) == 2
    assert (f"--scale paper chooses for an experiment name; {folder} holds a report at scale "
            "cpu" in capsys.readouterr().err)
    assert main(["report", str(folder), "--reading", "spacing=inclusive"]) == 2
    # with the command that does it ("run the other reading to compare" named none, and the
    # runs of that reading may be stored already)
    assert (f"--reading chooses for an experiment name; {folder} holds a report whose readings "
            "are recorded (`sgdlab report xing-walk --scale cpu --reading spacing=inclusive` "
            "rebuilds that reading's report from the runs `sgdlab run` stored for it)"
            in capsys.readouterr().err)
    assert sorted(p.name for p in folder.iterdir()) == ["results.json"]


def test_a_refused_reading_names_the_experiment_file_a_report_came_from(tmp_path, capsys):
    # `sgdlab report mine ...` knows no experiment "mine": the command names its file, as a
    # catalogue entry's names the entry
    folder = tmp_path / "out"
    folder.mkdir()
    own = str(tmp_path / "mine.yaml")
    for source, target in ((own, own), (str(CATALOGUE_DIR / "xing-walk.yaml"), "xing-walk")):
        (folder / "results.json").write_text(json.dumps({
            "scale": "cpu", "config": {"file": {}, "source": source},
            "experiment": {"name": "xing-walk", "version": 1}}))
        assert main(["report", str(folder), "--reading", "spacing=inclusive"]) == 2
        assert (f"(`sgdlab report {target} --scale cpu --reading spacing=inclusive` rebuilds "
                in capsys.readouterr().err)


def test_two_report_folders_compared_refuse_a_scale_or_reading_as_one_does(
        tmp_path, capsys, monkeypatch):
    # with --compare they were ignored (each folder rebuilt at what it records) when neither
    # was an experiment name for them to choose for
    import sgdlab.experiments.runner as runner

    monkeypatch.setattr(runner, "rebuild", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("rebuilt before the check")))
    folders = []
    for name, scale in (("a", "cpu"), ("b", "smoke")):
        folders.append(tmp_path / name)
        folders[-1].mkdir()
        (folders[-1] / "results.json").write_text(json.dumps({
            "scale": scale, "config": {"file": {}}, "experiment": {"name": "xing-walk",
                                                                   "version": 1}}))
    a, b = map(str, folders)
    assert main(["report", a, "--compare", b, "--reading", "spacing=inclusive"]) == 2
    err = capsys.readouterr().err
    assert (f"--reading chooses for an experiment name; {a} holds a report whose readings are "
            "recorded" in err and err.count("\n") == 1)
    assert main(["report", a, "--compare", b, "--scale", "cpu"]) == 2
    assert (f"--scale cpu chooses for an experiment name; {b} holds a report at scale smoke"
            in capsys.readouterr().err)
    assert sorted(p.name for f in folders for p in f.iterdir()) == ["results.json"] * 2


def test_a_partial_report_says_how_many_of_its_runs_are_missing(tmp_path, capsys):
    from sgdlab.cli.report import _say_if_partial

    missing = [f"m{i}" for i in range(7)]
    _say_if_partial(tmp_path, {"incomplete": True, "missing_runs": missing,
                               "runs": [{}, {}, {}]})
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path}: incomplete: 7 of 10 runs missing (m0, m1, m2, m3, m4, "
                          "...); ")
    _say_if_partial(tmp_path, {"incomplete": False, "missing_runs": [], "runs": [{}]})
    assert capsys.readouterr().out == ""


def test_report_of_a_name_names_the_reading_its_stored_runs_were_run_under(tmp_path, capsys):
    # after `run NAME --scale smoke --reading K=C`, `report NAME --scale smoke` said only that
    # the store held runs of it at scale smoke: the option it had given
    from sgdlab.store import RunStore

    store = str(tmp_path / "runs.sqlite")
    with RunStore(store) as s:     # runs as `sgdlab run` records them: scale and command
        s.create_run({"scale": "smoke", "command": "sgdlab run zhu-escape-2d --scale smoke "
                      "--out 'o u t' --reading landscape=rescaled"},
                     name="gd|seed=0", experiment="zhu-escape-2d", status="finished")
    for scale in ("smoke", "cpu"):
        assert main(["report", "zhu-escape-2d", "--scale", scale, "--store", store,
                     "--out", str(tmp_path / scale)]) == 2
        err = capsys.readouterr().err
        assert (f"runs of 'zhu-escape-2d' at scale {scale} is in the run store" in err
                and "holds runs of it under --scale smoke --reading landscape=rescaled: give "
                "those options" in err), err
        assert not (tmp_path / scale).exists()
    # runs of the default readings, asked for under another: said to be the defaults
    with RunStore(store) as s:
        s.create_run({"scale": "smoke", "command": "sgdlab run zhu-escape-2d --scale smoke"},
                     name="gd|seed=0", experiment="zhu-escape-2d", status="finished")
    assert main(["report", "zhu-escape-2d", "--scale", "smoke", "--reading",
                 "landscape=authors-code", "--store", store, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert ("at scale smoke, landscape=authors-code is in the run store" in err
            and "holds runs of it under --scale smoke (the default readings), and under "
            "--scale smoke --reading landscape=rescaled: give those options" in err), err


def test_a_reading_without_its_choice_is_shown_an_example_of_the_target_s_own(capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", "xing-walk", "--reading", "spacing"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert ("argument --reading: expected KEY=CHOICE (a reading of xing-walk and one of its "
            "choices, e.g. spacing=inclusive;") in err


def test_a_report_imports_the_plugins_its_experiment_s_models_need(tmp_path, monkeypatch):
    # `sgdlab report DIR` of a sweep run with --plugin refused the option, and stopped at
    # "Unknown model" without it
    from sgdlab.cli.main import build_parser
    from sgdlab.models import registry

    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))
    plugin = tmp_path / "report_plugin_model.py"
    plugin.write_text("import torch\nfrom sgdlab.models import register_model\n\n"
                      "@register_model('report-plugin-net', paper='-', description='-')\n"
                      "def net(input_shape, num_outputs):\n"
                      "    return torch.nn.Linear(input_shape[0], num_outputs)\n")
    args = build_parser().parse_args(["report", "out", "--plugin", str(plugin)])
    assert args.plugins == [str(plugin)]
    from sgdlab.cli._plugins import import_command_plugins

    import_command_plugins(args)
    assert "report-plugin-net" in registry.MODELS
