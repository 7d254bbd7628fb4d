"""The experiment framework: spec validation, run keys, sweep resume, report outputs, CLI."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from sgdlab.cli.main import main as cli
from sgdlab.errors import ConfigError, UserError
from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.procedures import (Procedure, RunOutput, register_analysis,
                                           register_procedure)
from sgdlab.experiments.runner import rebuild, run_experiment
from sgdlab.experiments.spec import load_experiment, resolve
from sgdlab.experiments.sweep import artifacts_root, load_runs, run_sweep
from sgdlab.store import RunStore
from sgdlab.report.tables import Table
from sgdlab.testing import strict_loads

CALLS: list[str] = []


pytestmark = pytest.mark.usefixtures("one_thread_runs")


@register_procedure("_test_square")
class _Square(Procedure):
    """x -> x**2 + seed; fails when the marker file named in params exists."""
    allowed = {"x", "fail_if", "factor"}
    required = {"x"}

    def run(self, run, ctx):
        CALLS.append(run.label)
        marker = run.params.get("fail_if")
        if marker and Path(marker).exists() and run.params["x"] == 2:
            raise RuntimeError("simulated crash halfway through the sweep")
        for step in range(3):
            ctx.store.log_metric(ctx.run_id, "value", step, run.params["x"] * step)
        v = run.params["x"] ** 2 * run.params.get("factor", 1) + run.seed
        return RunOutput(summary={"y": v}, data={"curve": [v, v + 1]})


@register_procedure("_test_slow")
class _Slow(Procedure):
    """Six steps of a quarter second each (a module-level class: spawned workers import it)."""
    allowed = {"x"}

    def planned_steps(self, params):
        return 6

    def run(self, run, ctx):
        import time

        for step in range(6):
            ctx.store.log_metric(ctx.run_id, "value", step, float(step))
            time.sleep(0.25)
        return RunOutput(summary={"y": 1.0})


@register_analysis("_test_square")
def _analysis(spec, runs):
    rows = [[r.label, r.seed, r.summary["y"], r.data["curve"][1]] for r in runs]
    ys = [r.summary["y"] for r in runs]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot(ys)
    ax.set_title("y of each run\nby seed")
    return Analysis(tables=[Table("squares", ["run", "seed", "y", "curve1"], rows)],
                    figures=[("ys", fig)],
                    conclusions=[Conclusion(f"max y = {max(ys)}", agrees_with_paper=max(ys) > 0,
                                            claim="squares are positive")])


def _raw(**over):
    raw = {"name": "t-square", "version": 1, "description": "toy", "analysis": "_test_square",
           "procedure": "_test_square",
           "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"},
           "base": {"x": 1}, "runs": [{"label": "sq"}], "grid": {"x": [1, 2, 3]},
           "seeds": [0, 1], "outputs": {"tables": ["squares"], "figures": ["ys"]},
           "scales": {"smoke": {"seeds": [0]}}}
    raw.update(over)
    return raw


def _write(tmp_path, raw, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def test_an_experiment_file_s_unknown_keys_are_named_together_as_a_run_config_s():
    """Each by its path, with the key meant (one level down where it belongs there), else
    the valid keys: the words of a run config's unknown keys (sgdlab.errors.check_keys). The
    file's check stopped at the first."""
    from sgdlab.experiments.spec import validate_raw

    with pytest.raises(ConfigError) as e:
        validate_raw(_raw(seed=[0], author="Nobody", cpus_per_run=2), "x.yaml")
    assert str(e.value) == ("3 problems in the config:\n"
                            "  x.yaml.seed: unknown key (did you mean seeds?)\n"
                            "  x.yaml.author: unknown key (did you mean x.yaml.paper.author?)\n"
                            "  x.yaml.cpus_per_run: unknown key (did you mean "
                            "x.yaml.resources.cpus_per_run?)")
    with pytest.raises(ConfigError, match=r"^x.yaml.runs\[0\].lable: unknown key \(did you "
                                          r"mean label\?\)$"):
        validate_raw(_raw(runs=[{"label": "x", "lable": "y"}]), "x.yaml")
    with pytest.raises(ConfigError, match=r"^x.yaml.paper.colour: unknown key \(valid keys: "
                                          r"author, claim, figure, quote, quotes, title, where, "
                                          r"year\)$"):
        validate_raw(_raw(paper={"author": "A", "year": 1, "figure": "F", "colour": 1}),
                     "x.yaml")
    with pytest.raises(ConfigError, match=r"^x.yaml.outputs: expected a mapping, got list$"):
        validate_raw(_raw(outputs=[]), "x.yaml")


def test_expand_keys_and_scale_override(tmp_path):
    spec = resolve(_raw(), "smoke")
    runs = spec.expand()
    assert [r.label for r in runs] == ["sq|x=1", "sq|x=2", "sq|x=3"]
    assert [r.params["x"] for r in runs] == [1, 2, 3]
    keys = {r.key for r in runs}
    assert len(keys) == 3
    assert {r.key for r in resolve(_raw(), "smoke").expand()} == keys     # deterministic
    cpu = resolve(_raw(), "cpu").expand()
    assert len(cpu) == 6 and not ({r.key for r in cpu} & keys)            # scale is in the key
    v2 = resolve(_raw(version=2), "smoke").expand()
    assert not ({r.key for r in v2} & keys)                               # version is in the key


@pytest.mark.parametrize("mutate,needle", [
    (lambda r: r.update(colour="red"), "'colour'"),
    (lambda r: r["base"].update(y=3), "'y'"),
    (lambda r: r["paper"].update(page=3), "'page'"),
    (lambda r: r["scales"].update(huge={}), "'huge'"),
    (lambda r: r["scales"]["smoke"].update(epochs=1), "'epochs'"),
    (lambda r: r.pop("analysis"), "'analysis'"),
    # a run config's key: the experiment's plugins are the command's
    (lambda r: r.update(plugins=["my_models.py"]),
     "plugins: an experiment file names no plugins; give them to the command: sgdlab run "
     "--config FILE --plugin MODULE"),
    # an experiment of one's own has no paper's figure: the message says what to write
    (lambda r: r.pop("paper"),
     "paper: {author: Me, year: 2026, figure: ''}: left out of titles"),
    (lambda r: r.update(procedure="nope"), "'nope'"),
    (lambda r: r.update(seeds=[0, "a"]), "seeds"),
    # "a non-empty list of integers" for a list of them, quoted
    (lambda r: r.update(seeds=["0", "1"]), "0]: expected an integer, got '0'"),
    # a description or title other than text failed with an AttributeError's traceback
    (lambda r: r.update(description=5), "description: expected a string, got 5"),
    (lambda r: r.update(title=7), "title: expected a string, got 7"),
    (lambda r: r.update(seeds=0), "seeds: expected a non-empty list of integers, got 0"),
    # each run failed on numpy's 32-bit seed, and the same command failed them again
    (lambda r: r.update(seeds=[2**40]), "seeds: 1099511627776 is outside 0"),
    # said as "duplicate run label"
    (lambda r: r.update(seeds=[0, 1, 0]), "seeds: seed 0 is given twice"),
    (lambda r: r.update(runs=[{"label": "a", "parms": {}}]), "'parms'"),
    # the run's message named a parameter the file spells nowhere but as a grid axis
    (lambda r: r.update(grid={"xx": [1, 2]}), "(the grid's axis 'xx' sets it)"),
    (lambda r: r.update(runs=[{"label": "a", "depends": ["zz"]}]), "'zz'"),
    (lambda r: r.update(name="Bad Name"), "name"),
    # (each below: a check that no other entry made fail)
    (lambda r: r.update(grid={"x": [1, 1]}), "duplicate run label 'sq|x=1'"),
    (lambda r: r.update(runs=[{"label": "a"}, {"label": "a"}]), "duplicate label 'a'"),
    (lambda r: r.update(grid={"x": []}), "grid.x: expected a non-empty list of values"),
    (lambda r: r.update(seeds=[2**32]), "seeds: 4294967296 is outside 0"),
    (lambda r: r.update(version=0), "version must be a positive integer, got 0"),
    (lambda r: r.update(version=True), "version must be a positive integer, not a bool"),
    (lambda r: r["paper"].pop("figure"), "paper: missing required key 'figure'"),
    (lambda r: r["paper"].update(quote="a passage"), "'quote' and 'where' go together"),
    (lambda r: r["scales"].update(cpu={"outside_regime": "  "}),
     "scales.cpu.outside_regime: expected one sentence"),
])
def test_bad_configs_name_the_problem(mutate, needle):
    raw = _raw()
    mutate(raw)
    with pytest.raises(ConfigError, match=needle.replace("'", "'?")) as e:
        resolve(raw, "smoke")
    assert needle.strip("'") in str(e.value)


@pytest.mark.parametrize("over, message", [
    ({"procedure": "_test_squar"},
     "<config>.procedure: unknown procedure '_test_squar' (did you mean _test_square?)"),
    ({"analysis": "_test_squar"},
     "<config>.analysis: unknown analysis '_test_squar' (did you mean _test_square?)"),
    ({"base": {"x": 1, "factr": 2}},
     "unknown parameter 'factr' for procedure '_test_square' (did you mean factor?); allowed:"),
])
def test_a_misspelled_procedure_analysis_or_parameter_gets_the_closest_name(over, message):
    with pytest.raises(ConfigError) as e:
        resolve(_raw(**over), "smoke").expand()
    assert message in str(e.value)

def test_unknown_experiment_and_missing_file():
    with pytest.raises(ConfigError, match="unknown experiment"):
        load_experiment("no-such-experiment")
    with pytest.raises(ConfigError, match="no experiment config"):
        load_experiment("/nonexistent/x.yaml")


def test_sweep_resume_runs_only_missing(tmp_path):
    marker = tmp_path / "crash"
    marker.touch()
    raw = _raw(base={"x": 1, "fail_if": str(marker)})
    runs = resolve(raw, "smoke").expand()
    store = str(tmp_path / "runs.sqlite")
    CALLS.clear()
    rep = run_sweep(runs, store_path=store, progress=None)
    assert CALLS == ["sq|x=1", "sq|x=2", "sq|x=3"]
    assert len(rep.failed) == 1 and "simulated crash" in rep.failed[0][1]
    stored, missing = load_runs(runs, store_path=store)
    assert [m.label for m in missing] == ["sq|x=2"]
    # a run killed mid-way leaves status "running": it must count as missing too
    from sgdlab.store import RunStore
    st = RunStore(store)
    rid = st.list_runs(experiment="t-square", status="finished")[-1]["id"]
    st.set_status(rid, "running")
    marker.unlink()
    CALLS.clear()
    rep = run_sweep(runs, store_path=store, progress=None)
    assert sorted(CALLS) == ["sq|x=2", "sq|x=3"]
    assert len(rep.skipped) == 1 and not rep.failed
    CALLS.clear()
    rep = run_sweep(runs, store_path=store, progress=None)
    assert CALLS == [] and len(rep.skipped) == 3
    stored, missing = load_runs(runs, store_path=store)
    assert not missing and [r.summary["y"] for r in stored] == [1, 4, 9]
    assert stored[0].metrics["value"] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert stored[2].data == {"curve": [9, 10]}


def test_a_key_finished_by_another_sweep_after_this_one_looked_is_not_run_again(
        tmp_path, monkeypatch):
    # the race of two sweeps on one store: the other finishes a key (and frees its lease)
    # between this sweep's read of the finished runs and its claim of the key
    runs = resolve(_raw(), "smoke").expand()
    store = str(tmp_path / "runs.sqlite")
    run_sweep(runs, store_path=store, progress=None)
    import sgdlab.experiments.sweep as sweep
    monkeypatch.setattr(sweep, "finished_runs", lambda store, experiment: {})  # a stale view
    CALLS.clear()
    said: list[str] = []
    rep = run_sweep(runs, store_path=store, progress=said.append)
    assert CALLS == [] and not rep.executed and rep.skipped == [r.key for r in runs]
    assert sum("finished by another sweep" in s for s in said) == 3
    from sgdlab.store import RunStore
    assert len(RunStore(store).list_runs()) == 3


def test_run_writes_contract_and_report_rebuilds(tmp_path):
    cfg = _write(tmp_path, _raw())
    out = tmp_path / "out"
    store = str(tmp_path / "runs.sqlite")
    res = run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store, progress=None)
    r = json.loads((out / "results.json").read_text())
    assert res.ok and r["experiment"]["name"] == "t-square" and r["scale"] == "smoke"
    assert r["tables"][0]["rows"][2][2] == 9
    assert r["conclusions"] == [{"text": "max y = 9", "agrees_with_paper": True,
                                 "claim": "squares are positive", "evidence": {}}]
    assert r["config"]["file"]["name"] == "t-square" and "torch" in r["environment"]
    # each run's point of the grid, for a table of one's own without parsing labels
    assert [(x["label"], x["grid"], x["summary"]["y"]) for x in r["runs"]] == [
        (f"sq|x={x}", {"x": x}, x * x) for x in (1, 2, 3)]
    # each run records the experiment file it came from (not a catalogue entry)
    from sgdlab.store import RunStore
    assert {x["config"]["source"] for x in RunStore(store).list_runs()} == {
        str(Path(cfg).resolve())}
    assert r["missing_outputs"] == []
    for f in ["figures/ys.png", "figures/ys.svg", "tables/squares.csv", "tables/squares.md",
              "report.html"]:
        assert (out / f).stat().st_size > 0, f
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "max y = 9" in html and "torch" in html
    assert (out / "tables/squares.csv").read_text().splitlines()[0] == "run,seed,y,curve1"
    # rebuild from the store only: delete the outputs, no procedure call happens
    CALLS.clear()
    for p in (out / "figures").iterdir():
        p.unlink()
    (out / "report.html").unlink()
    assert cli(["report", str(out)]) == 0
    assert CALLS == [] and (out / "report.html").is_file() and (out / "figures/ys.png").is_file()
    # a store without this experiment's runs: an error, and the report is left as it was
    before = (out / "results.json").read_bytes()
    empty = tmp_path / "empty.sqlite"
    run_experiment(str(cfg), scale="cpu", out_dir=tmp_path / "other", store_path=str(empty),
                   progress=None)
    with pytest.raises(UserError, match=r"none of the 3 runs of 't-square' at scale smoke"):
        rebuild(out, store_path=str(empty))
    assert (out / "results.json").read_bytes() == before
    # a second experiment (other scale) and a side-by-side comparison
    out2 = tmp_path / "out2"
    run_experiment(str(cfg), scale="cpu", out_dir=out2, store_path=store, progress=None)
    page = tmp_path / "cmp.html"
    assert cli(["report", str(out), "--compare", str(out2), "--out", str(page)]) == 0
    text = page.read_text()
    assert "squares: B − A" in text and text.count("data:image/png;base64,") == 2
    # y = x² + seed does not depend on the scale: seed 0 of both outputs differs by nothing
    from sgdlab.report.compare import load_results, table_differences
    (diff,) = table_differences(load_results(out), load_results(out2))
    assert diff.rows == [[f"sq|x={x}", 0, 0, 0] for x in (1, 2, 3)]


@register_analysis("_test_output_per_run")
def _output_per_run(spec, runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tables, figures = [], []
    for r in runs:
        name = f"x{r.params['x']}"
        tables.append(Table(name, ["y"], [[r.summary["y"]]]))
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.plot([r.summary["y"]])
        figures.append((name, fig))
    return Analysis(tables=tables, figures=figures)


def test_a_report_of_stored_runs_checks_the_analysis_options_before_analysing(tmp_path,
                                                                             capsys):
    # `sgdlab report FILE` analysed without the check a run makes before training: a
    # misspelt option or claim key was ignored or failed the analysis with Python's error
    store = str(tmp_path / "runs.sqlite")
    run_experiment(str(_write(tmp_path, _raw())), scale="smoke", out_dir=tmp_path / "out",
                   store_path=store, progress=None)
    for analysis, options, problem in (
            ("compare_groups", {"tabel_name": "t"}, "options.tabel_name: analysis "
             "'compare_groups' has no option 'tabel_name' (did you mean table_name?)"),
            ("compare_groups", {"claims": [{"grater": ["sq", "sq"], "metric": "y"}]},
             "options.claims[0]: a claim has no key 'grater' (did you mean greater?)"),
            ("xing_cosine_grid", {"fixed_batch": 1}, "options.fixed_lr: analysis "
             "'xing_cosine_grid' needs this option, a finite number > 0")):
        cfg = _write(tmp_path, _raw(analysis=analysis, options=options, outputs={}), "mine.yaml")
        assert cli(["report", str(cfg), "--scale", "smoke", "--store", store,
                    "--out", str(tmp_path / "rep")]) == 2
        assert f"sgdlab: error: {cfg}: {problem}" in capsys.readouterr().err
        assert not (tmp_path / "rep").exists()


def test_a_rewritten_report_leaves_no_outputs_of_the_report_it_replaces(tmp_path):
    # the same experiment's folder is rewritten; files the old report wrote and the new one
    # does not (a grid point dropped, runs missing) would sit beside it as if they were its own
    out, store = tmp_path / "out", str(tmp_path / "runs.sqlite")
    first = _write(tmp_path, _raw(analysis="_test_output_per_run", outputs={}), "a.yaml")
    run_experiment(str(first), scale="smoke", out_dir=out, store_path=store, progress=None)
    assert (out / "tables/x3.csv").is_file() and (out / "figures/x3.svg").is_file()
    (out / "tables/notes.txt").write_text("mine")
    second = _write(tmp_path, _raw(analysis="_test_output_per_run", outputs={},
                                   grid={"x": [1, 2]}), "b.yaml")
    run_experiment(str(second), scale="smoke", out_dir=out, store_path=store, progress=None)
    assert sorted(p.name for p in (out / "tables").iterdir()) == [
        "notes.txt", "x1.csv", "x1.md", "x2.csv", "x2.md"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "x1.png", "x1.svg", "x2.png", "x2.svg"]


def test_report_of_an_unfinished_experiment_says_it_is_partial(tmp_path, capsys):
    marker = tmp_path / "crash"
    marker.touch()
    cfg = _write(tmp_path, _raw(base={"x": 1, "fail_if": str(marker)}))
    out, store = tmp_path / "out", str(tmp_path / "runs.sqlite")
    res = run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store, progress=None)
    assert not res.ok
    capsys.readouterr()
    assert cli(["report", str(out)]) == 0
    said = capsys.readouterr().out
    assert "incomplete: 1 of 3 runs missing (sq|x=2|seed=0)" in said and "sgdlab run" in said
    marker.unlink()
    run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store, progress=None)
    capsys.readouterr()
    assert cli(["report", str(out)]) == 0
    assert "incomplete" not in capsys.readouterr().out


def test_an_interrupt_while_the_report_is_written_says_the_runs_are_stored(
        tmp_path, capsys, monkeypatch):
    import sgdlab.experiments.runner as runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "build_report", interrupted)
    cfg = _write(tmp_path, _raw())
    store = str(tmp_path / "runs.sqlite")
    assert cli(["run", "--config", str(cfg), "--scale", "smoke", "--out", str(tmp_path / "o"),
                "--store", store]) == 130
    said = capsys.readouterr().err
    # not "any runs in progress are recorded as interrupted": every run had ended
    assert "the report was interrupted" in said and "in progress" not in said
    assert f"--store {store}" in said
    assert not load_runs(resolve(_raw(), "smoke").expand(), store_path=store)[1]


def test_report_of_the_empty_folder_of_a_stopped_run_says_how_to_report(tmp_path):
    # `sgdlab run` makes its --out folder before the sweep; stopped there, it holds nothing
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match=r"holds no report yet.*sgdlab report NAME --scale"):
        rebuild(tmp_path / "out")
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an experiment output directory"):
        rebuild(tmp_path / "out")


def test_report_of_a_folder_refuses_a_scale_other_than_its_own(tmp_path, capsys):
    # `sgdlab report OUT --scale cpu` of a smoke report rebuilt the smoke one, saying nothing
    cfg = _write(tmp_path, _raw())
    store, out = str(tmp_path / "runs.sqlite"), tmp_path / "out"
    run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store, progress=None)
    capsys.readouterr()
    assert cli(["report", str(out), "--scale", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"sgdlab: error: --scale cpu chooses for an experiment name; {out} holds a report at "
        f"scale smoke (`sgdlab report {cfg} --scale cpu` rebuilds the cpu one)")
    assert cli(["report", str(out), "--scale", "smoke"]) == 0
    assert cli(["report", str(out)]) == 0

def test_a_data_dir_given_relative_names_the_same_runs_from_anywhere(tmp_path, monkeypatch):
    # the runs' keys hold the data folder: spelled relative, they were other runs for the
    # report (which records it absolute) and for a sweep continued from another folder
    (tmp_path / "work" / "data").mkdir(parents=True)
    cfg = _write(tmp_path, _raw(base={"x": 1, "fail_if": "${data_dir}/no-such-marker"}))
    store, out = str(tmp_path / "runs.sqlite"), tmp_path / "out"
    monkeypatch.chdir(tmp_path / "work")
    run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store, data_dir="data",
                   progress=None)
    monkeypatch.chdir(tmp_path)
    _, results = rebuild(out)
    assert not results["incomplete"] and len(results["runs"]) == 3
    CALLS.clear()
    rep = run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store,
                         data_dir="work/data", progress=None).sweep
    assert CALLS == [] and len(rep.skipped) == 3


def test_a_data_dir_given_from_python_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    # the CLI expanded ~ in --data-dir; run_experiment(data_dir="~/data") refused it as "not a
    # directory", and the runs' keys would have held CWD/~/data
    from sgdlab.experiments.plan import plan_experiment

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "data").mkdir(parents=True)
    cfg = _write(tmp_path, _raw(base={"x": 1, "fail_if": "${data_dir}/no-such-marker"}))
    store, out = str(tmp_path / "runs.sqlite"), tmp_path / "out"
    assert plan_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store,
                           data_dir="~/data").runs
    res = run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store,
                         data_dir="~/data", progress=None)
    assert res.results["data_dir"] == str(tmp_path / "home" / "data")
    CALLS.clear()
    rep = run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store,
                         data_dir=tmp_path / "home" / "data", progress=None).sweep
    assert CALLS == [] and len(rep.skipped) == 3


def _killed_halfway_writing(monkeypatch, name):
    """Every write of a file named ``name`` (or of a temporary file of its own, named
    ``name.…``) writes half its text, then is interrupted."""
    write_text = Path.write_text

    def killed_halfway(self, text, *args, **kwargs):
        if self.name == name or self.name.startswith(name + "."):
            write_text(self, text[:len(text) // 2], *args, **kwargs)
            raise KeyboardInterrupt
        return write_text(self, text, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", killed_halfway)


@pytest.mark.parametrize("name", ["results.json", "squares.csv", "squares.md", "report.html"])
def test_a_report_stopped_while_a_file_is_written_keeps_the_previous_one(
        tmp_path, monkeypatch, name):
    cfg = _write(tmp_path, _raw())
    out, store = tmp_path / "out", str(tmp_path / "runs.sqlite")
    run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store, progress=None)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    (stopped,) = [p for p in files if p.name == name]
    before = stopped.read_bytes()
    _killed_halfway_writing(monkeypatch, name)
    with pytest.raises(KeyboardInterrupt):
        rebuild(out)
    # the previous file, whole, and no temporary file left beside it
    assert stopped.read_bytes() == before
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files


def test_environment_records_the_threads_the_runs_used(tmp_path):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # this process' count; the runs use SGDLAB_THREADS=1
    try:
        run_experiment(str(_write(tmp_path, _raw())), scale="smoke", out_dir=tmp_path / "o",
                       store_path=str(tmp_path / "s.sqlite"), progress=None)
    finally:
        torch.set_num_threads(before)
    assert json.loads((tmp_path / "o" / "results.json").read_text())[
        "environment"]["torch_threads"] == 1


def test_environment_is_where_the_runs_ran_not_the_process_that_writes_the_report(
        tmp_path, monkeypatch):
    import itertools

    import sgdlab.store as store_pkg

    real, hosts = store_pkg.environment, itertools.cycle(["node-b", "node-a"])

    def on_gpu_nodes(seed=None, device=None):
        # the runs' workers: GPU nodes of a cluster, 4 threads each (this process: cpu)
        return {**real(seed=seed, device=device), "device": "cuda", "gpu": "Fake GPU 80GB",
                "hostname": next(hosts), "torch_threads": 4}

    monkeypatch.setattr(store_pkg, "environment", on_gpu_nodes)
    out = tmp_path / "o"
    r = run_experiment(str(_write(tmp_path, _raw())), scale="smoke", out_dir=out,
                       store_path=str(tmp_path / "s.sqlite"), progress=None, device="cpu")
    monkeypatch.undo()
    env = r.results["environment"]
    assert (env["device"], env["gpu"], env["torch_threads"]) == ("cuda", "Fake GPU 80GB", 4)
    assert env["hostname"] == ["node-a", "node-b"] and env["from_runs"] == 3
    assert env["torch"] == real()["torch"]
    # a rebuild elsewhere reads the same from the store, and keeps how many workers ran the
    # runs (it recorded its own 1); rebuilt from the name alone, that is not known
    results = json.loads((out / "results.json").read_text())
    results["environment"]["workers"] = 2
    (out / "results.json").write_text(json.dumps(results))
    assert rebuild(out)[1]["environment"] == {**env, "workers": 2}
    by_name = rebuild(str(_write(tmp_path, _raw())), scale="smoke",
                      store_path=str(tmp_path / "s.sqlite"), out_dir=tmp_path / "again")[1]
    assert by_name["environment"] == {**env, "workers": None}


def test_the_ray_backend_without_ray_is_refused_before_the_folder_and_the_store_are_made(
        tmp_path, monkeypatch, capsys):
    import sys

    cfg = _write(tmp_path, _raw())
    out, store = tmp_path / "o", tmp_path / "st" / "runs.sqlite"
    argv = ["run", "--config", str(cfg), "--scale", "smoke", "--backend", "ray",
            "--out", str(out), "--store", str(store)]
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", None)          # `import ray` raises ImportError
        assert cli(argv) == 2
        assert "the Ray backend needs Ray" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]
        with pytest.raises(UserError, match="needs Ray"):
            run_sweep(resolve(_raw(), "smoke").expand(), store_path=str(store),
                      backend="ray", progress=None)
        assert not store.parent.exists()
    # with every run stored nothing starts Ray: the report is written (as the dry run says)
    run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=str(store), progress=None)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", None)
        assert cli(argv) == 0


def test_cli_run_errors_are_clear(tmp_path, capsys):
    assert cli(["run", "no-such-exp", "--scale", "smoke"]) == 2
    assert "unknown experiment" in capsys.readouterr().err
    bad = _write(tmp_path, _raw(extra=1))
    assert cli(["run", "--config", str(bad), "--scale", "smoke"]) == 2
    assert "exp.yaml.extra: unknown key" in capsys.readouterr().err
    assert cli(["run", "--config", str(_write(tmp_path, _raw(), "ok.yaml")), "--scale", "smoke",
                "--workers", "0", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "--workers" in capsys.readouterr().err
    # `sgdlab run` alone said "give exactly one of NAME or --config FILE", naming neither
    # where the names are nor what was wrong
    assert cli(["run"]) == 2
    assert "which experiment? give its NAME (`sgdlab list` shows the catalogue" in \
        capsys.readouterr().err
    assert cli(["run", "xing-walk", "--config", str(bad)]) == 2
    assert "give NAME (xing-walk) or --config FILE" in capsys.readouterr().err


def register_dependency_recorder(name: str, seen: dict) -> None:
    """A procedure ``name`` that writes its ``v`` to a file and records in ``seen[label]`` the
    ``v`` files of the runs it depends on."""
    @register_procedure(name)
    class _Dep(Procedure):
        allowed = {"v"}

        def run(self, run, ctx):
            (ctx.artifact_dir / "v.txt").write_text(str(run.params.get("v", 0)))
            seen[run.label] = {k: (p / "v.txt").read_text() for k, p in ctx.dependencies.items()}
            return RunOutput(summary={})


def test_dependencies_get_artifact_dirs(tmp_path):
    seen = {}
    register_dependency_recorder("_test_dep", seen)
    raw = _raw(procedure="_test_dep", base={}, grid={},
               runs=[{"label": "child", "depends": ["parent"], "params": {"v": 2}},
                     {"label": "parent", "params": {"v": 1}}])
    runs = resolve(raw, "smoke").expand()
    run_sweep(runs, store_path=str(tmp_path / "s.sqlite"), progress=None)
    assert seen == {"parent": {}, "child": {"parent": "1"}}


def test_a_run_is_redone_when_a_run_it_depends_on_changed(tmp_path):
    # the child's own params are unchanged, but it was computed from the old parent's files:
    # reusing it would pair the new parent with a child of the old one
    seen = {}
    register_dependency_recorder("_test_dep_changed", seen)
    def runs(parent_v):
        return resolve(_raw(procedure="_test_dep_changed", base={}, grid={},
                            runs=[{"label": "parent", "params": {"v": parent_v}},
                                  {"label": "child", "depends": ["parent"]},
                                  {"label": "grandchild", "depends": ["child"]}]),
                       "smoke").expand()

    store = str(tmp_path / "s.sqlite")
    run_sweep(runs(1), store_path=store, progress=None)
    seen.clear()
    run_sweep(runs(5), store_path=store, progress=None)
    assert seen == {"parent": {}, "child": {"parent": "5"}, "grandchild": {"child": "0"}}
    stored, missing = load_runs(runs(5), store_path=store)
    assert not missing and len({r.key for r in stored}) == 3
    seen.clear()
    # each setting keeps its own children: going back to the first runs nothing
    rep = run_sweep(runs(1), store_path=store, progress=None)
    assert seen == {} and len(rep.skipped) == 3
    # a run without dependencies keeps the key it had
    from sgdlab.experiments.spec import run_key
    parent = runs(1)[0]
    assert parent.key == run_key(parent.experiment, parent.version, parent.scale, "parent",
                                 {"v": 1}, 0, "_test_dep_changed")


def test_bad_input_stops_the_sweep_with_its_message(tmp_path):
    from sgdlab.errors import DataError, UserError

    calls = []

    @register_procedure("_test_missing_data")
    class _Missing(Procedure):
        allowed = {"x"}

        def run(self, run, ctx):
            calls.append(run.label)
            raise DataError("mnist: missing file /data/train-images-idx3-ubyte")

    raw = _raw(procedure="_test_missing_data")
    runs = resolve(raw, "smoke").expand()
    lines: list[str] = []
    with pytest.raises(UserError, match=r"(?s)missing file .*The sweep stopped") as e:
        run_sweep(runs, store_path=str(tmp_path / "s.sqlite"), progress=lines.append)
    assert calls == ["sq|x=1"]                      # the other two runs were not attempted
    # the (long) message once, in the error, not also in the run's progress line
    assert str(e.value).count("missing file") == 1
    # in its own words: "failed on its input: DataError: mnist: ..." named a class
    assert "failed on its input: mnist: missing file" in str(e.value)
    assert not any("missing file" in ln for ln in lines)
    assert any(ln.startswith("[1/3] sq|x=1|seed=0 failed") and "bad input" in ln for ln in lines)
    stored, missing = load_runs(runs, store_path=str(tmp_path / "s.sqlite"))
    assert not stored and len(missing) == 3


@pytest.mark.parametrize("change,needle", [
    ({"measure": [{"name": "dynamics", "every": 0}]}, "measure[0].every: must be >= 1"),
    ({"measure": [{"name": "dynamcs", "every": 1}]}, "unknown instrument 'dynamcs'"),
    ({"measure": [{"name": "dynamics", "every": 1, "at": [3]}]}, "at most one of"),
    # refused when the experiment is read, not when its run builds the instrument
    ({"measure": [{"name": "sharpness", "every": 1, "memory_budget": 0}]},
     "x: measure[0].memory_budget: Invalid memory_budget=0 (must be >= 1; bytes: "),
    ({"optimizer": {"name": "sgd", "lr": -1}}, "x: optimizer.lr: must be >= 0, got -1"),
    ({"optimizer": {"name": "sgd", "lr": 0.1, "momentun": 0.9}}, "optimizer.momentun"),
    # an optimizer switch is the optimizer `switch`, not a run parameter
    ({"switch": {"at_step": 5, "optimizer": {"name": "sgd"}}}, "'switch'"),
])
def test_train_procedure_checks_measure_and_optimizer_like_run_configs(change, needle):
    from sgdlab.experiments.procedures import get_procedure

    params = {"dataset": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
              "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1, "batch_size": 5}
    get_procedure("train").validate(params, "x")
    with pytest.raises(ConfigError) as e:
        get_procedure("train").validate({**params, **change}, "x")
    assert needle in str(e.value)


@pytest.mark.parametrize("change,needle", [
    # true is an int to isinstance: validated, then refused by the loop once the run started
    ({"epochs": True}, "x: epochs must be an int >= 1, not a bool (True)"),
    ({"epochs": 0}, "x: epochs must be an int >= 1, got 0"),
    ({"eval_every": "two"}, "x: eval_every must be an int >= 0, got 'two'"),
    ({"eval_every": -2}, "x: eval_every must be an int >= 0, got -2"),
    ({"eval_every_steps": 0}, "x: eval_every_steps must be an int >= 1, got 0"),
    ({"max_steps": 2.5}, "x: max_steps must be an int >= 0, got 2.5"),
    ({"eval_subset": 0}, "x: eval_subset must be an int >= 1, got 0"),
    ({"data_seed": True}, "x: data_seed must be an int >= 0, not a bool (True)"),
    ({"batch_size": True}, "x: batch_size must be a positive integer, 'full' or a schedule "
                           "mapping, not a bool (True)"),
    ({"batch_size": 0}, "x: batch_size must be a positive integer, 'full' or a schedule "
                        "mapping, got 0"),
    ({"replacement": "false"}, "x: replacement must be True or False, got 'false'"),
    ({"save_model": 1}, "x: save_model must be True or False, got 1"),
    ({"loss": "ce"}, "x: loss must be one of auto, cross_entropy, mse, got 'ce'"),
])
def test_train_procedure_checks_its_own_values_before_any_run(change, needle):
    # a value the training loop would refuse only when a run reaches it (and a string
    # "false" that bool() reads as true) is refused by validate, so --dry-run names it
    from sgdlab.experiments.procedures import get_procedure

    params = {"dataset": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
              "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1, "batch_size": 5}
    get_procedure("train").validate({**params, "eval_every": 0, "max_steps": 0,
                                     "eval_subset": None, "replacement": True,
                                     "loss": "auto"}, "x")
    with pytest.raises(ConfigError) as e:
        get_procedure("train").validate({**params, **change}, "x")
    assert needle in str(e.value)


def test_strict_claims_met_inside_the_seed_spread_are_inconclusive():
    from sgdlab.experiments.procedures.common import check_claims

    claim = [{"less": ["a", "b"], "metric": "loss", "claim": "a is lower"}]
    noisy = {"a": {"loss": 1.0, "loss__std": 0.5}, "b": {"loss": 1.1, "loss__std": 0.5}}
    clear = {"a": {"loss": 1.0, "loss__std": 0.01}, "b": {"loss": 1.1, "loss__std": 0.01}}
    wrong = {"a": {"loss": 1.2, "loss__std": 0.01}, "b": {"loss": 1.1, "loss__std": 0.01}}
    missed = {"a": {"loss": 1.2, "loss__std": 0.5}, "b": {"loss": 1.1, "loss__std": 0.5}}
    (c_noisy,), (c_clear,), (c_wrong,), (c_missed,) = (
        check_claims(claim, v) for v in (noisy, clear, wrong, missed))
    assert c_noisy.agrees_with_paper is None and "inconclusive" in c_noisy.text
    assert c_clear.agrees_with_paper is True
    assert c_wrong.agrees_with_paper is False
    # missing a strict claim inside the noise is no more evidence than meeting it there
    assert c_missed.agrees_with_paper is None and "inconclusive" in c_missed.text
    # a tolerance ("not worse by more than 0.05") is judged at its own boundary
    tol = [{"less": ["a", "b"], "metric": "loss", "margin": -0.05}]
    (c_tol,) = check_claims(tol, {"a": {"loss": 1.2, "loss__std": 0.01},
                                  "b": {"loss": 1.1, "loss__std": 0.01}})
    assert c_tol.agrees_with_paper is False
    (c_tol,) = check_claims(tol, {"a": {"loss": 1.16, "loss__std": 0.02},
                                  "b": {"loss": 1.1, "loss__std": 0.02}})
    assert c_tol.agrees_with_paper is None


def test_a_claim_prints_enough_digits_to_tell_its_two_values_apart():
    from sgdlab.experiments.procedures.common import check_claims

    claim = [{"less": ["sgd", "gd"], "metric": "norm", "metric_name": "parameter norm"}]
    (c,) = check_claims(claim, {"sgd": {"norm": 8.40612}, "gd": {"norm": 8.40638}})
    assert c.text == "parameter norm of sgd (8.4061) is lower than that of gd (8.4064)"
    (c,) = check_claims(claim, {"sgd": {"norm": 8.4}, "gd": {"norm": 8.4}})
    assert c.text == "parameter norm of sgd (8.4) is not lower than that of gd (8.4)"
    above = [{"above": [["sgd"], ["gd"]], "metric": "norm"}]
    (c,) = check_claims(above, {"sgd": {"norm": 0.123456}, "gd": {"norm": 0.123449}})
    assert "= 0.1235 > max over {gd} = 0.1234" in c.text
    (c,) = check_claims(above, {"sgd": {"norm": 0.123476}, "gd": {"norm": 0.123461}})
    assert "= 0.12348 > max over {gd} = 0.12346" in c.text


def test_a_trend_needs_a_clear_rank_correlation():
    """A clear trend the claimed way agrees, a clear one the other way disagrees; a rank
    correlation too weak to show a trend either way (|ρ| < 0.5: six settings give that by
    chance, and float rounding alone moved the η/B grid's accuracy trend from +0.79 to +0.26)
    neither confirms nor refutes the claim, and no correlation at all gives no verdict."""
    from sgdlab.experiments.procedures.jastrzebski import trend_verdict

    assert trend_verdict(-0.9, "negative") is True and trend_verdict(0.6, "positive") is True
    assert trend_verdict(0.7, "negative") is False and trend_verdict(-0.5, "positive") is False
    for rho, sign in ((0.12, "positive"), (-0.3, "negative"), (0.26, "positive"),
                      (0.49, "negative"), (float("nan"), "negative")):
        assert trend_verdict(rho, sign) is None


def test_equivalence_claims_are_tested_as_equivalence():
    from scipy import stats

    from sgdlab.experiments.procedures.common import check_claims

    claim = [{"equivalent": ["a", "b"], "metric": "acc", "margin": 0.01}]

    def vals(ma, mb, s, n=3):
        return {g: {"acc": m, "acc__std": s, "acc__n": n} for g, m in (("a", ma), ("b", mb))}

    (tight,), (noisy,), (apart,) = (check_claims(claim, v) for v in (
        vals(0.970, 0.972, 0.001), vals(0.970, 0.972, 0.02), vals(0.90, 0.97, 0.001)))
    assert tight.agrees_with_paper is True and "equivalent" in tight.text
    assert noisy.agrees_with_paper is None and "inconclusive" in noisy.text
    assert apart.agrees_with_paper is False
    # the interval is the Welch one: half-width t_{0.95, df} * sqrt(s²/n + s²/n), df = 4 here
    half = stats.t.ppf(0.95, 4) * (2 * 0.001 ** 2 / 3) ** 0.5
    assert f"[{-0.002 - half:.4g}, {-0.002 + half:.4g}]" in tight.text
    (one,) = check_claims(claim, vals(0.970, 0.975, 0.0, n=1))
    assert one.agrees_with_paper is True and "one seed" in one.text
    with pytest.raises(ConfigError, match="needs a 'margin' or an 'rtol'"):
        check_claims([{"equivalent": ["a", "b"], "metric": "acc"}], vals(1, 1, 0))


def test_equivalence_over_several_groups_needs_every_pair():
    from sgdlab.experiments.procedures.common import check_claims

    claim = [{"equivalent": ["a", "b", "c"], "metric": "acc", "margin": 0.01,
              "claim": "all equivalent"}]

    def vals(*means, s=0.001, n=4):
        return {g: {"acc": m, "acc__std": s, "acc__n": n} for g, m in zip("abc", means)}

    (same,), (one_off,), (unsure,) = (check_claims(claim, v) for v in (
        vals(0.970, 0.972, 0.971), vals(0.970, 0.972, 0.90), vals(0.970, 0.972, 0.962)))
    assert same.agrees_with_paper is True and "all 3 pairs" in same.text
    assert "a (0.97) vs b (0.972)" in same.text          # the farthest pair is shown
    assert set(same.evidence) == {"a vs b", "a vs c", "b vs c"}
    # one group apart refutes "all equivalent", and the text names the pairs that are not
    assert one_off.agrees_with_paper is False and "2 of the 3 pairs" in one_off.text
    assert "a (0.97) vs c (0.9)" in one_off.text and "b (0.972) vs c (0.9)" in one_off.text
    # b vs c: a 0.010 gap whose interval straddles the margin decides nothing
    assert unsure.agrees_with_paper is None and "undecided" in unsure.text
    # many undecided pairs: two are shown, the rest counted
    noisy = {g: {"acc": 0.97, "acc__std": 0.05, "acc__n": 3} for g in "abcde"}
    (many,) = check_claims([dict(claim[0], equivalent=list("abcde"))], noisy)
    assert many.agrees_with_paper is None and "10 of the 10 pairs" in many.text
    assert many.text.count("straddles") == 2 and many.text.endswith("and 8 more")
    with pytest.raises(ConfigError, match="compares two groups"):
        check_claims([{"less": ["a", "b", "c"], "metric": "acc"}], vals(1, 1, 1))


def test_close_and_far_are_inconclusive_within_the_seed_spread_of_the_tolerance():
    from sgdlab.experiments.procedures.common import check_claims

    close = [{"close": ["a", "b"], "metric": "loss", "rtol": 0.1}]
    far = [{"far": ["a", "b"], "metric": "loss", "rtol": 0.1}]

    def vals(ma, mb, s):
        return {g: {"loss": m, "loss__std": s, "loss__n": 3} for g, m in (("a", ma), ("b", mb))}

    # |a - b| = 0.09 against a tolerance of 0.1: 0.01 inside it
    (sure,), (unsure,) = (check_claims(close, vals(1.09, 1.0, s)) for s in (0.001, 0.05))
    assert sure.agrees_with_paper is True
    assert unsure.agrees_with_paper is None and "seed-to-seed spread" in unsure.text
    # |a - b| = 0.5: far beyond the tolerance whatever the spread below 0.4
    (apart,) = check_claims(far, vals(1.5, 1.0, 0.05))
    assert apart.agrees_with_paper is True
    (near,) = check_claims(far, vals(1.12, 1.0, 0.05))
    assert near.agrees_with_paper is None
    # one seed: no spread, the point values decide
    (one,) = check_claims(far, {g: {"loss": m} for g, m in (("a", 1.12), ("b", 1.0))})
    assert one.agrees_with_paper is True


def test_an_equivalence_margin_may_be_relative_to_the_second_group():
    from sgdlab.experiments.procedures.common import check_claims

    # a loss has no unit of its own: rtol sets the margin to rtol * |mean_B|, as for close
    claim = [{"equivalent": ["a", "b"], "metric": "loss", "rtol": 0.1}]

    def vals(ma, mb, s=0.001, n=4):
        return {g: {"loss": m, "loss__std": s, "loss__n": n} for g, m in (("a", ma), ("b", mb))}

    (near,), (far,), (small,) = (check_claims(claim, v) for v in (
        vals(0.26, 0.25), vals(0.30, 0.25), vals(0.026, 0.025)))
    assert near.agrees_with_paper is True and "inside ±0.025" in near.text
    assert "0.1 × |mean of b|" in near.text
    assert far.agrees_with_paper is False and "outside ±0.025" in far.text
    # the same relative gap at a tenth of the loss is judged the same way
    assert small.agrees_with_paper is True and "inside ±0.0025" in small.text
    # an absolute margin adds to the relative one
    (both,) = check_claims([dict(claim[0], margin=0.05)], vals(0.30, 0.25))
    assert both.agrees_with_paper is True and "inside ±0.075" in both.text


def test_a_claim_on_missing_values_is_inconclusive_not_a_disagreement():
    from sgdlab.experiments.procedures.common import check_claims

    (c,) = check_claims([{"less": ["a", "b"], "metric": "loss", "claim": "a is lower"}],
                        {"a": {"loss": float("nan")}, "b": {"loss": 1.0}})
    assert c.agrees_with_paper is None and "cannot be checked" in c.text


@pytest.mark.parametrize("claim", [
    {"less": ["a", "b"]}, {"greater": ["a", "b"], "margin": 0.1},
    {"less": ["a", "b"], "margin": -1}, {"above": [["a", "c"], ["b"]]}, {"close": ["a", "b"]},
    {"far": ["a", "b"]},
    {"equivalent": ["a", "b"], "margin": 0.1}], ids=str)
def test_a_claim_on_a_missing_value_says_it_is_missing_instead_of_comparing_it(claim):
    """"loss of a (nan) is not lower than that of b (1)" stated a comparison no value made, and
    an equivalence read "a (nan) vs b (1):  (missing ...": which value is missing, the others'."""
    from sgdlab.experiments.procedures.common import check_claims

    (c,) = check_claims([dict(claim, metric="loss")],
                        {"a": {"loss": float("nan")}, "b": {"loss": 1.0}, "c": {"loss": 2.0}})
    known = "c: 2, b: 1" if "above" in claim else "b: 1"
    assert c.text == (f"loss: missing or non-finite value for a ({known}), so the claim cannot "
                      "be checked")
    assert c.agrees_with_paper is None


def test_a_claim_whose_precondition_fails_is_inconclusive():
    from sgdlab.experiments.procedures.common import check_claims, claim_metrics

    claim = [{"equivalent": ["a", "b"], "metric": "acc", "margin": 0.01,
              "requires": [{"metric": "train_acc", "above": 0.5}],
              "requires_why": "the nets did not train"}]
    assert claim_metrics(claim) == ["acc", "train_acc"]
    untrained = {g: {"acc": 0.1, "acc__std": 0.0, "acc__n": 3, "train_acc": 0.11}
                 for g in ("a", "b")}
    (c,) = check_claims(claim, untrained)
    assert c.agrees_with_paper is None
    assert "train_acc of a = 0.11 is not above 0.5" in c.text and "did not train" in c.text
    trained = {g: dict(v, train_acc=0.9) for g, v in untrained.items()}
    (c,) = check_claims(claim, trained)
    assert c.agrees_with_paper is True
    with pytest.raises(ConfigError, match=r"requires\[0\]: give a 'metric' and one of"):
        check_claims([dict(claim[0], requires=[{"metric": "train_acc"}])], trained)


def test_a_precondition_applies_to_run_groups_not_to_a_reference():
    """A claim against a constant (``options.references``) with a precondition: the
    constant has no value of the precondition's metric, and none is asked of it."""
    from sgdlab.experiments.procedures.common import add_references, check_claims

    claim = [{"less": ["gd", "10%"], "metric": "loss_drop",
              "requires": [{"metric": "stuck_drop", "below": 0.1}]}]
    values = {"gd": {"loss_drop": 0.02, "stuck_drop": 0.05}}
    add_references(values, {"references": {"10%": {"loss_drop": 0.1}}})
    (c,) = check_claims(claim, values)
    assert c.agrees_with_paper is True and "untestable" not in c.text
    values["gd"]["stuck_drop"] = 0.3
    (c,) = check_claims(claim, values)
    assert c.agrees_with_paper is None
    assert "stuck_drop of gd = 0.3 is not below 0.1" in c.text and "of 10%" not in c.text


def test_a_precondition_on_a_derived_group_applies_to_the_groups_it_is_computed_from():
    """A gap between two groups' curves has no training accuracy of its own: the groups it
    compares must meet the precondition, each named once, and no other group is asked."""
    from sgdlab.experiments.procedures.common import Derived, add_references, check_claims

    claim = [{"less": ["gap-ab", "gap-ac"], "metric": "gap",
              "requires": [{"metric": "train_acc", "above": 0.5}]}]
    values = {"a": {"train_acc": 0.9}, "b": {"train_acc": 0.9}, "c": {"train_acc": 0.9},
              "d": {"train_acc": 0.1},
              "gap-ab": Derived({"gap": 0.0}, of=("a", "b")),
              "gap-ac": Derived({"gap": 0.2}, of=("a", "c"))}
    (c,) = check_claims(claim, values)
    assert c.agrees_with_paper is True and "untestable" not in c.text
    values["a"]["train_acc"] = values["c"]["train_acc"] = 0.1
    (c,) = check_claims(claim, values)
    assert c.agrees_with_paper is None
    assert c.text.count("train_acc of a = 0.1") == 1 and "train_acc of c = 0.1" in c.text
    assert not any(f"train_acc of {g}" in c.text for g in ("b", "d", "gap-"))
    # against a constant: only the derived group's run groups are asked
    add_references(values, {"references": {"one point": {"gap": 0.01}}})
    (c,) = check_claims([dict(claim[0], less=["gap-ab", "one point"])], values)
    assert c.agrees_with_paper is None and "train_acc of a = 0.1" in c.text
    assert not any(f"train_acc of {g}" in c.text for g in ("b", "one point"))


def test_a_claim_over_many_groups_that_did_not_train_says_so_once():
    """Five untrained groups: the ten pair texts each repeated the failed precondition (a
    ~1,000-character conclusion); the claim now says once that it is untestable."""
    from sgdlab.experiments.procedures.common import check_claims

    claim = [{"equivalent": list("abcde"), "metric": "acc", "margin": 0.01,
              "metric_name": "best accuracy",
              "requires": [{"metric": "train_acc", "above": 0.5}],
              "requires_why": "the nets did not train"}]
    untrained = {g: {"acc": 0.1, "train_acc": 0.11} for g in "abcde"}
    (c,) = check_claims(claim, untrained)
    assert c.agrees_with_paper is None
    assert c.text == ("best accuracy, the 10 pairs of {a, b, c, d, e}: untestable here: "
                      "train_acc of every group is not above 0.5 (a 0.11, b 0.11, c 0.11, "
                      "d 0.11, e 0.11) (the nets did not train), so inconclusive")
    assert len(c.evidence) == 10          # each pair's values are still kept
    # two groups trained: their pair is decided, and the undecided pairs are shown as before
    partly = dict(untrained, a={"acc": 0.9, "train_acc": 0.9}, b={"acc": 0.9, "train_acc": 0.9})
    (c,) = check_claims(claim, partly)
    assert c.agrees_with_paper is None and "9 of the 10 pairs" in c.text
    # all untrained but one: that one trained group leaves every pair untestable still
    one = dict(untrained, a={"acc": 0.9, "train_acc": 0.9})
    (c,) = check_claims(claim, one)
    assert c.text.startswith("best accuracy, the 10 pairs of {a, b, c, d, e}: untestable "
                             "here: train_acc of b = 0.11 is not above 0.5; train_acc of c")


def test_a_diverged_run_leaves_strict_json_that_reads_back_to_the_same_report(tmp_path):
    """One setting diverges, so its final measurement is missing (NaN in the analysis):
    results.json is strict JSON (null there), and what is built from
    results.json — report tables and verdicts, the comparison, RESULTS.md, a report rebuilt
    from the folder — says what the in-memory results say: "—" cells, "runs diverged in",
    a claim that cannot be checked."""
    import math

    from sgdlab.experiments.summary import load_all, results_markdown
    from sgdlab.report.compare import load_results, table_differences
    from sgdlab.report.html import conclusions_html, tables_html

    raw = {"name": "t-diverge", "version": 1, "description": "one setting diverges",
           "analysis": "compare_groups", "procedure": "train",
           "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"},
           "base": {"dataset": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
                    "optimizer": {"name": "sgd", "lr": 0.01}, "batch_size": 20, "epochs": 3,
                    "final": [{"kind": "grad_norm"}]},
           "runs": [{"label": "calm"}, {"label": "wild", "params": {"optimizer": {"lr": 1e12}}}],
           "seeds": [0],
           "options": {"table": [["train_loss", "final train loss"],
                                 ["grad_norm", "final gradient norm"]],
                       "curves": ["train_loss"],
                       "claims": [{"less": ["wild", "calm"], "metric": "grad_norm",
                                   "claim": "the wild run ends flatter"}]}}
    out, store = tmp_path / "outs" / "t-diverge", str(tmp_path / "runs.sqlite")
    res = run_experiment(str(_write(tmp_path, raw)), scale="cpu", out_dir=out,
                         store_path=store, progress=None)
    assert [r["status"] for r in res.results["runs"]] == ["finished", "diverged"]
    assert [r["message"] for r in res.results["runs"]] == ["", (
        "non-finite mini-batch loss (inf) at step 1 (epoch 1, the weights after 1 step); "
        "stopped before the next step")]
    r = strict_loads((out / "results.json").read_text())
    claim, diverged = r["conclusions"]
    assert claim["text"].startswith("grad_norm: missing or non-finite value for wild (calm: ")
    assert claim["text"].endswith("), so the claim cannot be checked")
    assert claim["agrees_with_paper"] is None and claim["evidence"]["wild"] is None
    assert diverged["text"] == "runs diverged in: wild"
    assert r["tables"][0]["rows"][1][4:6] == [None, None]       # no gradient norm measured
    # the readers of results.json: the same cells and verdicts as from memory
    assert tables_html(r) == tables_html(res.results)
    assert "<td>wild</td><td>1</td>" in tables_html(r)
    assert "<td>—</td><td>—</td>" in tables_html(r)
    assert conclusions_html(r) == conclusions_html(res.results)
    assert "cannot be checked" in conclusions_html(r) and "inconclusive" in conclusions_html(r)
    md = results_markdown(load_all(tmp_path / "outs"), command="cmd")
    assert md == results_markdown([res.results], command="cmd")
    assert "runs diverged in: wild" in md and "| 0 / 0 / 1 |" in md
    (diff,) = table_differences(load_results(out), load_results(out))
    assert r["tables"][0]["columns"][6] == "final gradient norm: seeds in the mean"
    assert [row[6] for row in r["tables"][0]["rows"]] == [1, 0]
    assert diff.rows[1][:3] + diff.rows[1][6:] == ["wild", 0, 0.0, 0, 0]
    # nothing to subtract: one seed has no std, and no gradient norm was measured
    assert all(math.isnan(v) for v in diff.rows[1][3:6])
    # rebuilt from the folder: the same tables and conclusions, still strict
    assert cli(["report", str(out)]) == 0
    again = strict_loads((out / "results.json").read_text())
    assert (again["tables"], again["conclusions"]) == (r["tables"], r["conclusions"])


def test_a_non_finite_number_in_the_experiment_file_survives_the_rebuild(tmp_path):
    """JSON has no infinity: results.json writes the experiment file's ``.inf`` as null, and
    keeps the file as YAML too, so `sgdlab report DIR` finds the runs under their keys (made
    with the infinity) instead of reporting them missing. A run's data file writes its
    non-finite values as null too, which the analysis reads back as NaN."""
    import math

    from sgdlab.experiments.sweep import artifacts_root, open_store

    raw = _raw(base={"x": 1, "factor": float("inf")})
    out, store = tmp_path / "out", str(tmp_path / "runs.sqlite")
    res = run_experiment(str(_write(tmp_path, raw)), scale="smoke", out_dir=out,
                         store_path=store, progress=None)
    r = strict_loads((out / "results.json").read_text())
    assert r["config"]["file"]["base"]["factor"] is None
    assert r["tables"][0]["rows"][0][2:] == ["inf", None]    # summary inf, data curve null
    assert res.results["tables"] == r["tables"] and r["conclusions"][0]["text"] == "max y = inf"
    datas = sorted(artifacts_root(open_store(store)).rglob("data.json"))
    assert len(datas) == 3
    assert all(strict_loads(p.read_text()) == {"curve": [None, None]} for p in datas)
    stored, _ = load_runs(resolve(raw, "smoke").expand(), store_path=store)
    assert all(math.isnan(v) for s in stored for v in s.data["curve"])
    CALLS.clear()
    assert cli(["report", str(out)]) == 0
    again = strict_loads((out / "results.json").read_text())
    assert CALLS == [] and not again["incomplete"] and again["missing_runs"] == []
    assert (again["tables"], again["conclusions"]) == (r["tables"], r["conclusions"])


def test_two_reports_into_one_folder_take_turns(tmp_path):
    """A report rebuilt into a folder another report is being written into waits for it:
    nothing ordered them, so one's stale-file removal could take the other's figures, and
    its results.json could name figures of the other's analysis."""
    import threading
    import time

    from sgdlab.claims import folder_lock

    out = tmp_path / "o"
    run_experiment(str(_write(tmp_path, _raw())), scale="smoke", out_dir=out,
                   store_path=str(tmp_path / "s.sqlite"), progress=None)
    before = (out / "results.json").stat().st_mtime_ns
    done = threading.Event()
    thread = threading.Thread(target=lambda: (rebuild(out), done.set()))
    with folder_lock(out):          # another report is writing the folder
        thread.start()
        time.sleep(1.5)
        assert not done.is_set() and (out / "results.json").stat().st_mtime_ns == before
    thread.join(60)
    assert done.is_set() and (out / "results.json").stat().st_mtime_ns > before
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.html", "results.json",
                                                     "tables"]


def test_a_procedure_that_changes_its_params_changes_no_other_run(tmp_path):
    # the seeds of a run group shared one params dict, and a run in this process got the
    # driver's own: a procedure that popped a key changed the next seed's params and the key
    # of its own run (its files went to another folder, the sweep redid it on every rerun)
    seen = []

    @register_procedure("_test_mutating")
    class _Mutating(Procedure):
        allowed = {"x", "opts"}

        def run(self, run, ctx):
            seen.append((run.seed, run.params.pop("x", None), dict(run.params["opts"])))
            run.params["opts"]["extra"] = run.seed      # a nested change, too
            (ctx.artifact_dir / "out.txt").write_text("done")
            return RunOutput(summary={"y": 1})

    raw = _raw(procedure="_test_mutating", base={"x": 1, "opts": {"a": 1}}, grid={},
               seeds=[0, 1, 2], scales={"smoke": {}})
    runs = resolve(raw, "smoke").expand()
    keys = [r.key for r in runs]
    store = str(tmp_path / "s.sqlite")
    run_sweep(runs, store_path=store, workers=1, progress=None)
    assert seen == [(0, 1, {"a": 1}), (1, 1, {"a": 1}), (2, 1, {"a": 1})]
    assert [r.key for r in runs] == keys and all(r.params == {"x": 1, "opts": {"a": 1}}
                                                 for r in runs)
    assert sorted(p.name for p in artifacts_root(RunStore(store)).iterdir()) == sorted(keys)
    stored, missing = load_runs(resolve(raw, "smoke").expand(), store_path=store)
    assert missing == [] and len(stored) == 3
    # the expanded runs hold their own params, too
    fresh = resolve(raw, "smoke").expand()
    fresh[0].params["opts"]["a"] = 2
    assert [r.key for r in fresh[1:]] == keys[1:] and fresh[0].key != keys[0]


def test_runs_list_says_how_a_stopped_sweep_run_continues_and_when_it_needs_nothing(
        tmp_path, capsys):
    # the footer counted a stopped run whose sweep entry had finished since among the runs
    # to continue, with no command for it
    marker = tmp_path / "stop"

    @register_procedure("_test_stopped_once")
    class _StoppedOnce(Procedure):
        allowed = {"x"}

        def run(self, run, ctx):
            if marker.exists():
                raise KeyboardInterrupt
            return RunOutput(summary={"y": 1}, data={"curve": [1, 2]})

    cfg = _write(tmp_path, _raw(procedure="_test_stopped_once", grid={}, seeds=[0],
                                scales={"smoke": {}}))
    store = str(tmp_path / "runs.sqlite")
    command = ["run", "--config", str(cfg), "--scale", "smoke", "--store", store,
               "--out", str(tmp_path / "o")]
    marker.touch()
    assert cli(command) == 130
    capsys.readouterr()
    assert cli(["runs", "list", "--store", store]) == 0
    listing = capsys.readouterr().out
    assert "1 run(s) stopped before they ended" in listing
    assert "(its sweep reruns it from step 0)" in listing
    marker.unlink()
    assert cli(command) == 0
    capsys.readouterr()
    assert cli(["runs", "list", "--store", store]) == 0
    listing = capsys.readouterr().out
    assert "stopped before they ended" not in listing
    assert "1 other stopped run(s) need nothing: a later run of the same sweep entry" in listing


def test_a_final_measurement_of_a_model_that_diverged_in_its_last_step_records_diverged(
        tmp_path):
    # one full-batch step at lr 1e30 leaves weights no finite loss was computed from: the
    # final Hessian met non-finite numbers and the run was recorded failed, which every
    # rerun of the sweep redid, to fail again
    raw = {"name": "t-late-diverge", "version": 1, "description": "diverges in its last step",
           "analysis": "compare_groups", "procedure": "train",
           "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"},
           "base": {"dataset": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
                    "optimizer": {"name": "sgd", "lr": 0.01}, "batch_size": "full",
                    "epochs": 1, "final": [{"kind": "hessian_top", "num_iter": 40}]},
           "runs": [{"label": "calm"}, {"label": "wild", "params": {"optimizer": {"lr": 1e30}}}],
           "seeds": [0], "options": {"table": [["train_loss", "final train loss"]],
                                     "curves": ["train_loss"]}}
    cfg, store = _write(tmp_path, raw), str(tmp_path / "runs.sqlite")
    res = run_experiment(str(cfg), scale="cpu", out_dir=tmp_path / "o", store_path=store,
                         progress=None)
    calm, wild = res.results["runs"]
    assert (calm["status"], wild["status"]) == ("finished", "diverged")
    (row,) = [r for r in RunStore(store).list_runs() if r["status"] == "diverged"]
    message = RunStore(store).get_run(row["id"])["message"]
    assert message.startswith("the final measurement 'hessian_top' met non-finite numbers")
    assert "lambda_max" not in wild["summary"] and wild["summary"]["steps"] == 1
    rerun = run_experiment(str(cfg), scale="cpu", out_dir=tmp_path / "o", store_path=store,
                           progress=None)
    assert rerun.sweep.executed == []                # nothing redone


def test_a_finished_run_is_said_with_its_own_time_not_its_workers_start(tmp_path,
                                                                         monkeypatch):
    # the driver's clock ran from the submission: a new worker's first run also waited for
    # the process to start and import torch (9.8 s said for a 0.9 s run)
    import sgdlab.experiments.backends as backends
    from sgdlab.experiments import worker

    def slow_start(task, send=None):
        time.sleep(0.6)                     # stands for a worker's start-up
        record = worker.execute_run(task, send)
        record.seconds = 0.04
        return record

    monkeypatch.setattr(backends, "execute_run", slow_start)
    lines: list[str] = []
    run_sweep(resolve(_raw(grid={"x": [1]}), "smoke").expand(),
              store_path=str(tmp_path / "s.sqlite"), progress=lines.append, workers=1)
    assert lines[-1] == "[1/1] sq|x=1|seed=0 finished (0.0 s)"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_long_run_is_reported_while_it_runs(tmp_path, monkeypatch, workers):
    # a run lasts minutes and a line comes only when one ends: silence says which run is
    # running, for how long and at which step; with one worker the run is in this process
    import sgdlab.experiments.sweep as sweep

    monkeypatch.setattr(sweep, "HEARTBEAT", 0.5, raising=False)
    raw = _raw(procedure="_test_slow", grid={"x": [1]})
    lines: list[str] = []
    run_sweep(resolve(raw, "smoke").expand(), store_path=str(tmp_path / "s.sqlite"),
              progress=lines.append, workers=workers)
    beats = [ln for ln in lines if "running:" in ln]
    assert beats, lines
    assert all(ln.startswith("  ... 0 of 1 done; running: sq|x=1|seed=0 for ") for ln in beats)
    assert any("(step " in ln and ln.endswith(" of 6)") for ln in beats)   # as planned
    assert lines[-1].startswith("[1/1] sq|x=1|seed=0 finished")


def test_a_claim_against_a_reference_names_the_value_not_that_of_a_group():
    from sgdlab.experiments.procedures.common import add_references, check_claims

    values = {"gd": {"cos": -0.95}}
    add_references(values, {"references": {"cosine −0.9": {"cos": -0.9}}})
    (c,) = check_claims([{"less": ["gd", "cosine −0.9"], "metric": "cos"}], values)
    assert c.text == "cos of gd (-0.95) is lower than cosine −0.9 (-0.9)"
    (c,) = check_claims([{"greater": ["gd", "cosine −0.9"], "metric": "cos",
                          "margin": -0.1}], values)
    assert c.text == "cos of gd (-0.95) is not below cosine −0.9 (-0.9) by more than 0.1"
    # a run group keeps its "that of"
    values["sgd"] = {"cos": -0.5}
    (c,) = check_claims([{"less": ["gd", "sgd"], "metric": "cos"}], values)
    assert c.text == "cos of gd (-0.95) is lower than that of sgd (-0.5)"


def test_threads_per_run_are_capped_by_omp_num_threads_and_set_by_sgdlab_threads(monkeypatch):
    """A user's OMP_NUM_THREADS caps cores // workers (torch read it at import; setting the
    threads would override it); SGDLAB_THREADS sets the count outright; both must be ints."""
    from sgdlab.errors import UserError
    from sgdlab.experiments.sweep import threads_per_worker

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.delenv("SGDLAB_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [threads_per_worker(w) for w in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert [threads_per_worker(w) for w in (1, 2, 3, 16)] == [3, 3, 2, 1]
    monkeypatch.setenv("SGDLAB_THREADS", "6")
    assert threads_per_worker(4) == 6
    monkeypatch.setenv("OMP_NUM_THREADS", "two")
    monkeypatch.delenv("SGDLAB_THREADS")
    with pytest.raises(UserError, match="OMP_NUM_THREADS must be an integer, got 'two'"):
        threads_per_worker(1)


def test_a_claim_outside_the_papers_regime_words_its_numbers_verdict_as_the_reports_do():
    # it said "undecided" where report.html, RESULTS.md and the CLI say "inconclusive"
    from sgdlab.experiments.analysis import Conclusion, outside_regime

    scored = outside_regime([Conclusion("x", a, claim="c") for a in (True, False, None)]
                            + [Conclusion("a description")], "why")
    assert [c.text.partition("numbers alone: ")[2] for c in scored] == [
        "agrees)", "disagrees)", "inconclusive)", ""]
    assert [c.measured for c in scored] == [True, False, None, None]


def test_a_scale_outside_the_papers_regime_scores_no_verdict_and_keeps_the_numbers(tmp_path):
    from html import escape

    from sgdlab.experiments.summary import parse_page, results_markdown, verdict_counts
    from sgdlab.report.verdicts import OUTSIDE

    why = "l is ten times the paper's, where it expects no equivalence (line 190)"
    raw = _raw(scales={"smoke": {"seeds": [0]},
                       "cpu": {"seeds": [0], "outside_regime": why}})
    cfg, store, out = _write(tmp_path, raw), str(tmp_path / "runs.sqlite"), tmp_path / "out"
    inside = resolve(_raw(scales={"cpu": {"seeds": [0]}}), "cpu")
    spec = resolve(raw, "cpu")
    # a reason, not a setting of the runs: the same runs, found in the store
    assert [r.key for r in spec.expand()] == [r.key for r in inside.expand()]
    assert spec.outside_regime == why and spec.describe()["outside_regime"] == why
    assert "outside_regime" not in inside.describe()
    assert resolve(raw, "smoke").outside_regime is None
    run_experiment(str(cfg), scale="cpu", out_dir=out, store_path=store, progress=None)
    r = json.loads((out / "results.json").read_text())
    assert r["conclusions"] == [{
        "text": f"max y = 9 — outside the paper's regime: {why}; not scored (the numbers "
                "alone: agrees)", "agrees_with_paper": None, "claim": "squares are positive",
        "evidence": {}, "outside_regime": why, "measured": True}]
    assert verdict_counts(r) == (0, 0, 1)
    html = (out / "report.html").read_text()
    assert f"<span class='neutral'>{escape(OUTSIDE)}</span>" in html
    assert "agrees with the paper" not in html
    page = results_markdown([r], command=None)
    assert f"| {OUTSIDE} |" in page and "0 findings agree" in page and "1 are inconclusive" in page
    assert parse_page(page, "page")["t-square"].counts == (0, 0, 1)
    # rebuilt from the store (no run), the report reads the reason from the file again
    CALLS.clear()
    rebuild(out, store_path=store)
    again = json.loads((out / "results.json").read_text())
    assert CALLS == [] and again["conclusions"] == r["conclusions"]
    raw["scales"]["cpu"]["outside_regime"] = ["a list"]
    with pytest.raises(ConfigError, match="cpu.outside_regime: expected one sentence"):
        resolve(raw, "cpu")


@pytest.mark.parametrize("runs, workers, said", [
    (3, 1, None), (3, 2, "starting 2 worker processes ..."),
    (3, 5, "starting 3 worker processes ..."),
    # --workers 2 with one run to run spawns one worker, and said nothing while it started
    (1, 2, "starting 1 worker process ...")])
def test_a_sweep_says_it_starts_its_worker_processes(tmp_path, monkeypatch, runs, workers,
                                                     said):
    """`sgdlab run --workers K` printed its header, then nothing for seconds while each
    spawned worker imported torch; one line now says they start (as many as there are runs
    to run, at most K; none for the in-process run of one worker)."""
    import sgdlab.experiments.sweep as sweep
    from sgdlab.experiments.backends import InProcessBackend

    # the runs in this process: the line is said before any worker would be spawned
    monkeypatch.setattr(sweep, "make_backend", lambda name, on_rows, **kw:
                        InProcessBackend(on_rows))
    lines: list[str] = []
    run_sweep(resolve(_raw(grid={"x": list(range(1, runs + 1))}), "smoke").expand(),
              store_path=str(tmp_path / "s.sqlite"), progress=lines.append, workers=workers)
    assert [ln for ln in lines if "worker" in ln] == ([said] if said else [])
    if said:
        assert lines[0] == said and lines[1].startswith(f"[1/{runs}] ")


def _train_raw(optimizer: str, schedule: str):
    base = {"dataset": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
            "optimizer": {"name": optimizer, "lr": 1.0, "L": 2, "gamma": 1.0},
            "schedule": {"name": schedule, "period": 2}, "epochs": 1, "batch_size": 4}
    return _raw(procedure="train", base=base, grid={})


def test_an_optimizer_of_either_spelling_makes_the_same_run_key():
    # entropy-sgd for entropy_sgd (and cosine_cyclic for cosine-cyclic) is the same optimizer
    # and schedule: the same run, resumed and found done under one key
    from sgdlab.experiments.spec import run_key

    (written,) = resolve(_train_raw("entropy_sgd", "cosine-cyclic"), "smoke").expand()
    (other,) = resolve(_train_raw("Entropy-SGD", "cosine_cyclic"), "smoke").expand()
    assert other.key == written.key
    assert other.params["optimizer"]["name"] == "entropy_sgd"
    assert other.params["schedule"]["name"] == "cosine-cyclic"
    # a spec in the registered spelling keeps the key its params always made
    params = _train_raw("entropy_sgd", "cosine-cyclic")["base"]
    assert written.key == run_key("t-square", 1, "smoke", "sq", params, 0, "train")


@register_analysis("_test_draws_then_fails")
def _draws_then_fails(spec, runs):
    from sgdlab.report.figures.charts import plt

    plt.subplots()
    raise KeyError("sq|x=2")


def test_a_report_closes_its_figures_also_when_it_fails_part_way(tmp_path, monkeypatch):
    # pyplot holds a figure until it is closed: `run --paper all` reports entry after entry in
    # one process, and a report stopped while its first figure was saved kept them all
    import sgdlab.experiments.runner as runner
    from sgdlab.report.figures.charts import plt

    before = set(plt.get_fignums())
    cfg = _write(tmp_path, _raw(outputs={"figures": ["ys", "zs"]}))
    out, store = tmp_path / "out", str(tmp_path / "runs.sqlite")
    run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store, progress=None)
    assert set(plt.get_fignums()) == before

    def second_figure(spec, runs):
        a = _analysis(spec, runs)
        a.figures.append(("zs", plt.subplots()[0]))
        return a
    monkeypatch.setattr(runner, "get_analysis", lambda name: second_figure)

    def interrupted(fig, path, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "save_figure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rebuild(out)
    assert set(plt.get_fignums()) == before


def test_figures_drawn_by_an_analysis_that_fails_on_missing_runs_are_closed(tmp_path):
    from sgdlab.report.figures.charts import plt

    before = set(plt.get_fignums())
    marker = tmp_path / "crash"
    marker.touch()
    cfg = _write(tmp_path, _raw(analysis="_test_draws_then_fails",
                                base={"x": 1, "fail_if": str(marker)}))
    res = run_experiment(str(cfg), scale="smoke", out_dir=tmp_path / "out",
                         store_path=str(tmp_path / "runs.sqlite"), progress=None)
    assert res.results["missing_runs"]
    assert "analysis needs the missing runs: KeyError" in " ".join(res.results["notes"])
    assert set(plt.get_fignums()) == before


def test_a_scales_wall_time_is_a_positive_number_and_leaves_the_runs_alone():
    timed = resolve(_raw(scales={"cpu": {"seeds": [0], "wall_minutes": 6.7}}), "cpu")
    plain = resolve(_raw(scales={"cpu": {"seeds": [0]}}), "cpu")
    assert [r.key for r in timed.expand()] == [r.key for r in plain.expand()]
    for bad in (0, -1, "6 min", True):
        with pytest.raises(ConfigError, match="cpu.wall_minutes: expected the measured wall "
                                              "time in minutes, a number > 0"):
            resolve(_raw(scales={"cpu": {"wall_minutes": bad}}), "cpu")
    # a bool is named as one: "a number > 0, got True" read as if True were no number
    with pytest.raises(ConfigError, match=r"a number > 0, not a bool \(True\)$"):
        resolve(_raw(scales={"cpu": {"wall_minutes": True}}), "cpu")


@pytest.mark.parametrize("key, bad, says", [
    ("cpus_per_run", True, "expected a number > 0, not a bool (True)"),
    ("gpus_per_run", False, "expected a number >= 0, not a bool (False)"),
    ("cpus_per_run", "2", "expected a number > 0, got '2'")])
def test_a_resource_that_is_no_number_is_named(key, bad, says):
    with pytest.raises(ConfigError, match=re.escape(f"resources.{key}: {says}")):
        resolve(_raw(resources={key: bad}), "smoke")


def test_a_reports_environment_lists_the_runs_differing_values_numbers_by_size(tmp_path):
    """Where the runs disagree, their values sorted (numbers by size: 9 before 10); a GPU is
    named only for the runs that ran on one."""
    from types import SimpleNamespace

    from sgdlab.experiments.runner import _report_environment

    store = RunStore(tmp_path / "s.sqlite")
    envs = [{"device": "cuda:0", "gpu": "G1", "torch_threads": 10, "python": "3.11"},
            {"device": "cpu", "gpu": "G2", "torch_threads": 9, "python": "3.11"},
            {"device": "cpu", "torch_threads": 9, "python": "3.11"}]
    stored = [SimpleNamespace(run_id=store.create_run({"x": i}, env=e, status="finished"))
              for i, e in enumerate(envs)]
    env = _report_environment(str(tmp_path / "s.sqlite"), stored, "cpu", 2)
    store.close()
    assert env == {"device": ["cpu", "cuda:0"], "gpu": "G1", "torch_threads": [9, 10],
                   "python": "3.11", "workers": 2, "from_runs": 3}


def test_resources_per_run_are_the_flags_then_the_variables_and_for_ray_only(monkeypatch):
    """``--cpus-per-run`` over ``$SGDLAB_CPUS_PER_RUN``; the local backend, which gives each
    run cores // --workers threads, takes neither (a variable set for Ray is not an error)."""
    from sgdlab.experiments.resources import FLAG, VARIABLE, PerRun
    from sgdlab.experiments.runner import prepare

    monkeypatch.setenv("SGDLAB_CPUS_PER_RUN", "2")
    monkeypatch.setenv("SGDLAB_GPUS_PER_RUN", "0.5")
    kw = dict(scale="smoke", device="cpu", data_dir=None, readings=None, workers=None,
              address=None, gpus_per_run=None)
    assert prepare("chaudhari-pde-smoothing", backend="local", cpus_per_run=None,
                   **kw)[2:] == ("local", None, None)
    # each with where it came from, which the Ray backend's refusals name
    assert prepare("chaudhari-pde-smoothing", backend="ray", cpus_per_run=3.0,
                   **kw)[2:] == ("ray", PerRun("cpus", 3.0, FLAG), PerRun("gpus", 0.5, VARIABLE))
    monkeypatch.setenv("SGDLAB_CPUS_PER_RUN", "two")
    with pytest.raises(UserError, match=r"\$SGDLAB_CPUS_PER_RUN must be a number, got 'two'"):
        prepare("chaudhari-pde-smoothing", backend="ray", cpus_per_run=None, **kw)


def test_the_stored_run_of_a_key_is_its_latest_finished_or_diverged_one(tmp_path):
    """A store written by hand: two finished runs of one key (the later is the one reused), a
    later failed and a later running one (neither replaces it), a diverged run (reused: its
    divergence is the result), another experiment's run of the same key (not this one's)."""
    from sgdlab.experiments.sweep import finished_runs

    st = RunStore(tmp_path / "s.sqlite")

    def run(key: str, status: str, experiment: str = "e") -> str:
        rid = st.create_run({"run_key": key}, experiment=experiment)
        if status != "running":
            st.complete_run(rid, status)
        return rid

    run("a", "finished")
    second = run("a", "finished")
    run("a", "failed")
    run("a", "running")
    diverged = run("b", "diverged")
    run("c", "failed")
    run("d", "finished", experiment="other")
    done = finished_runs(st, "e")
    assert {k: r["id"] for k, r in done.items()} == {"a": second, "b": diverged}


def _sgld_copy(tmp_path, **entropy_sgd_params):
    """chaudhari-sgld's file at smoke scale, its Entropy-SGD group's params updated."""
    from sgdlab.experiments.spec import catalogue_files

    raw = yaml.safe_load(catalogue_files()["chaudhari-sgld"].read_text(encoding="utf-8"))
    group = next(g for g in raw["scales"]["smoke"]["runs"] if g["label"] == "entropy-sgd")
    group["params"].update(entropy_sgd_params)
    return _write(tmp_path, raw, name="chaudhari-sgld.yaml")


def test_a_run_same_as_another_entry_takes_its_key_only_where_it_trains_the_same(tmp_path):
    """``same_as: ENTRY``: a run keyed as ENTRY's run of its label and seed where the two
    train alike; one whose params differ (here an edited copy) keeps its own key, and an
    entry that is not in the catalogue is refused, named."""
    theirs = load_experiment("chaudhari-entropy-sgd", "smoke").expand()[1]
    same = load_experiment(_sgld_copy(tmp_path), "smoke").expand()
    assert [r.key for r in same if r.label == "entropy-sgd"] == [theirs.key]
    edited = load_experiment(_sgld_copy(tmp_path, epochs=2), "smoke").expand()
    mine = next(r for r in edited if r.label == "entropy-sgd")
    assert mine.experiment == "chaudhari-sgld" and mine.key != theirs.key
    raw = yaml.safe_load(_sgld_copy(tmp_path).read_text(encoding="utf-8"))
    raw["runs"][1]["same_as"] = "chaudhari-entropy-sdg"
    with pytest.raises(ConfigError, match=r"runs\[1\]\.same_as: 'chaudhari-entropy-sdg' is "
                       r"not a catalogue entry \(did you mean chaudhari-entropy-sgd\?\)"):
        load_experiment(_write(tmp_path, raw), "smoke")


def test_a_run_stored_by_the_entry_it_is_the_same_as_is_read_back_not_run_again(tmp_path):
    """A run keyed as another entry's (``same_as``) is found in the store under that entry:
    what the sweep skips, the plan counts as stored and the analysis reads back."""
    from sgdlab.experiments.sweep import finished_runs, stored_under

    runs = load_experiment("chaudhari-sgld", "smoke").expand()
    shared = next(r for r in runs if r.label == "entropy-sgd")
    store = str(tmp_path / "s.sqlite")
    st = RunStore(store)
    rid = st.create_run({"run_key": shared.key}, experiment="chaudhari-entropy-sgd")
    st.complete_run(rid, "finished", summary={"test_acc": 0.5})
    st.close()
    assert stored_under(runs) == {"chaudhari-sgld", "chaudhari-entropy-sgd"}
    stored, missing = load_runs(runs, store_path=store)
    assert [(r.label, r.run_id) for r in stored] == [("entropy-sgd", rid)]
    assert [r.label for r in missing] == ["sgld"]
    st = RunStore(store)
    assert set(finished_runs(st, stored_under(runs))) == {shared.key}
    assert finished_runs(st, "chaudhari-sgld") == {}
    # with chaudhari-sgld's own run stored too, a sweep of both trains nothing
    own = next(r for r in runs if r.label == "sgld")
    st.complete_run(st.create_run({"run_key": own.key}, experiment="chaudhari-sgld"),
                    "finished")
    st.close()
    rep = run_sweep(runs, store_path=store, progress=None)
    assert rep.executed == [] and sorted(rep.skipped) == sorted([own.key, shared.key])


def test_a_shared_run_recorded_by_the_other_entry_names_no_reading_this_entry_lacks(tmp_path):
    """The scales and readings a report says the store also holds runs under: a run shared
    with chaudhari-sgld (``same_as``), recorded by its command with a reading of its own, is
    one of chaudhari-entropy-sgd's runs at its default readings."""
    from sgdlab.experiments.runner import _other_settings

    spec = load_experiment("chaudhari-entropy-sgd", "cpu")
    st = RunStore(tmp_path / "s.sqlite")
    cfg = {"run_key": spec.expand()[-1].key, "scale": "cpu",
           "command": "sgdlab run chaudhari-sgld --reading sgld-dropout=entropy-sgd"}
    st.complete_run(st.create_run(cfg, experiment="chaudhari-entropy-sgd"), "finished")
    st.close()
    assert _other_settings(spec, str(tmp_path / "s.sqlite")) == []


def test_the_threads_and_device_of_a_run_by_backend(monkeypatch):
    """Local: cores // workers, at least 1 also when $SGDLAB_THREADS says 0 (torch takes no
    0 threads); Ray: the run's whole CPUs (at least 1), on the GPU it is given unless the
    user named a device."""
    from sgdlab.experiments.sweep import run_device, run_threads, threads_per_worker

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SGDLAB_THREADS", "0")
    assert threads_per_worker(2) == 1
    monkeypatch.delenv("SGDLAB_THREADS")
    assert [run_threads("local", w, None) for w in (None, 1, 3)] == [8, 8, 2]
    assert [run_threads("ray", 4, c) for c in (None, 0.5, 2.5, 3)] == [1, 1, 2, 3]
    monkeypatch.setenv("SGDLAB_THREADS", "5")         # on either backend
    assert run_threads("ray", 1, 2) == run_threads("local", 4, None) == 5
    monkeypatch.delenv("SGDLAB_THREADS")
    assert run_device("ray", "cpu", 1) == "cuda" and run_device("ray", "cuda:1", 0.5) == "cuda:1"
    assert run_device("ray", "cpu", 0) == "cpu" and run_device("ray", "cpu", None) == "cpu"
    assert run_device("local", "cpu", 1) == "cpu"


def test_one_worker_runs_in_this_process_and_more_in_a_pool_of_that_many():
    from sgdlab.experiments.backends import InProcessBackend, ProcessPoolBackend
    from sgdlab.experiments.sweep import make_backend

    assert [type(make_backend("local", None, workers=w)) for w in (None, 1)] == [
        InProcessBackend] * 2
    pool = make_backend("local", None, workers=2)
    assert type(pool) is ProcessPoolBackend and pool.capacity == 2


def test_a_duration_is_said_in_seconds_minutes_or_hours():
    from sgdlab.experiments.sweep import _duration

    assert [_duration(s) for s in (0, 59.9, 60, 3599, 3600, 3725)] == [
        "0 s", "59 s", "1 min 00 s", "59 min 59 s", "1 h 00 min", "1 h 02 min"]


def test_ray_is_needed_while_any_run_is_not_stored(tmp_path, monkeypatch):
    """One run of three stored: the other two would start Ray, so its absence is said before
    the report's folder is made (only a store holding every run needs no Ray)."""
    import sys

    cfg, out, store = _write(tmp_path, _raw()), tmp_path / "o", str(tmp_path / "s.sqlite")
    run_sweep(resolve(_raw(), "smoke").expand()[:1], store_path=store, progress=None)
    monkeypatch.setitem(sys.modules, "ray", None)          # `import ray` raises ImportError
    with pytest.raises(UserError, match="needs Ray"):
        run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store,
                       backend="ray", progress=None)
    assert not out.exists() and len(RunStore(store).list_runs()) == 1


def test_a_resumed_sweep_counts_only_the_runs_it_executes(tmp_path):
    """Four runs, the first stored: the sweep says so, runs the other three in grid order
    (seeds within a grid point) and numbers them out of three; each gets its own seed's
    result (y = x**2 + seed)."""
    runs = resolve(_raw(grid={"x": [1, 2]}, seeds=[0, 1], scales={}), "cpu").expand()
    store = str(tmp_path / "s.sqlite")
    run_sweep(runs[:1], store_path=store, progress=None)
    CALLS.clear()
    lines: list[str] = []
    rep = run_sweep(runs, store_path=store, progress=lines.append)
    assert rep.skipped == [runs[0].key] and rep.executed == [r.key for r in runs[1:]]
    assert lines[0] == (f"1 of 4 runs already in the store ({store}); running the 3 missing")
    assert [ln.split(" ")[0] for ln in lines[1:]] == ["[1/3]", "[2/3]", "[3/3]"]
    assert CALLS == ["sq|x=1", "sq|x=2", "sq|x=2"]
    stored, missing = load_runs(runs, store_path=store)
    assert not missing
    assert [(r.label, r.seed, r.summary["y"]) for r in stored] == [
        ("sq|x=1", 0, 1), ("sq|x=1", 1, 2), ("sq|x=2", 0, 4), ("sq|x=2", 1, 5)]


def test_a_sweep_records_the_file_of_an_experiment_outside_the_catalogue(tmp_path,
                                                                         monkeypatch):
    """The command that continues a stopped run names an experiment file by its absolute
    path; a catalogue entry by its name (no file recorded)."""
    from sgdlab.experiments.spec import CATALOGUE_DIR

    runs = resolve(_raw(), "smoke").expand()
    store = str(tmp_path / "s.sqlite")
    _write(tmp_path, _raw())
    monkeypatch.chdir(tmp_path)
    run_sweep(runs[:1], store_path=store, progress=None, source="exp.yaml", command="c")
    run_sweep(runs[1:2], store_path=store, progress=None,
              source=str(CATALOGUE_DIR / "t-square.yaml"))
    first, second = (r["config"] for r in RunStore(store).list_runs())
    assert first["source"] == str(tmp_path.resolve() / "exp.yaml") and first["command"] == "c"
    assert "source" not in second and "command" not in second


@register_procedure("_test_fails_once")
class _FailsOnce(Procedure):
    """Records the files its folder holds when it starts, writes one, and fails while the
    marker file ``fail_if`` exists (an attempt that leaves a file half written)."""
    allowed = {"v", "fail_if"}

    def run(self, run, ctx):
        CALLS.append(f"{run.label}: {sorted(p.name for p in ctx.artifact_dir.iterdir())}")
        (ctx.artifact_dir / "partial.txt").write_text("x")
        if run.params.get("fail_if") and Path(run.params["fail_if"]).exists():
            raise RuntimeError("lost half-way")
        return RunOutput(summary={})


def test_a_failed_run_fails_what_depends_on_it_and_its_next_attempt_starts_afresh(tmp_path):
    """parent fails: child and grandchild (through child) are failed without running; the
    sweep re-run after the cause is gone runs all three, parent in an empty folder (no
    checkpoint to resume: the failed attempt's files go)."""
    marker = tmp_path / "fail"
    marker.touch()
    runs = resolve(_raw(procedure="_test_fails_once", base={}, grid={}, runs=[
        {"label": "grandchild", "depends": ["child"]}, {"label": "child", "depends": ["parent"]},
        {"label": "parent", "params": {"fail_if": str(marker)}}]), "smoke").expand()
    store = str(tmp_path / "s.sqlite")
    CALLS.clear()
    rep = run_sweep(runs, store_path=store, progress=None)
    assert CALLS == ["parent: []"]
    assert sorted(rep.failed) == [
        ("child|seed=0", "dependency 'parent' failed"),
        ("grandchild|seed=0", "dependency 'child' failed"),
        ("parent|seed=0", "RuntimeError: lost half-way")]
    [failed] = RunStore(store).list_runs(status="failed")
    assert failed["name"] == "parent|seed=0" and "lost half-way" in failed["message"]
    # with where it was raised (the traceback's tail), for `sgdlab runs show`
    assert 'raise RuntimeError("lost half-way")' in failed["message"]
    marker.unlink()
    CALLS.clear()
    rep = run_sweep(runs, store_path=store, progress=None)
    assert CALLS == ["parent: []", "child: []", "grandchild: []"] and not rep.failed


class _TwoSlots:
    """A backend of two slots that runs a task here when waited on, or loses its worker for
    ``lose`` of its first submissions (the reason a lost worker's run is recorded with)."""

    def __init__(self, on_rows, lose: int = 0):
        from sgdlab.experiments.backends import InProcessBackend

        self.inner, self.lose, self.submitted = InProcessBackend(on_rows), lose, 0

    def has_capacity(self) -> bool:
        return len(self.inner.queue) < 2

    def submit(self, task) -> int:
        self.submitted += 1
        assert self.submitted <= 10, "the sweep retries without end"
        return self.inner.submit(task)

    def wait(self, timeout: float):
        if self.lose and self.inner.queue:
            self.lose -= 1
            return [(self.inner.queue.popleft()[0], "lost", "its worker died (SIGKILL)")]
        return self.inner.wait(timeout)

    def cancel_all(self) -> None:
        self.inner.cancel_all()

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("retries,lose", [(1, 1), (1, 2), (0, 1), (2, 3)])
def test_a_run_whose_worker_is_lost_is_tried_again_retries_times(tmp_path, monkeypatch,
                                                                 retries, lose):
    """Each attempt is a run of its own in the store, failed with the reason; the run is
    reported failed only when its ``1 + retries`` attempts were all lost."""
    import sgdlab.experiments.sweep as sweep

    backend = {}
    monkeypatch.setattr(sweep, "make_backend", lambda name, on_rows, **kw: backend.setdefault(
        "b", _TwoSlots(on_rows, lose)))
    runs = resolve(_raw(grid={}), "smoke").expand()
    store = str(tmp_path / "s.sqlite")
    lines: list[str] = []
    rep = run_sweep(runs, store_path=store, progress=lines.append, retries=retries)
    attempts = min(lose, retries) + 1
    assert backend["b"].submitted == attempts
    statuses = [(r["status"], r["message"]) for r in RunStore(store).list_runs()]
    lost = ("failed", "its worker died (SIGKILL)")
    if lose > retries:
        assert statuses == [lost] * attempts
        assert rep.failed == [("sq|seed=0", "its worker died (SIGKILL)")]
    else:
        assert statuses == [lost] * lose + [("finished", None)] and not rep.failed
    assert sum("trying it again on a fresh worker" in ln for ln in lines) == attempts - 1


def test_no_run_starts_after_one_failed_on_its_input(tmp_path, monkeypatch):
    """Two slots: the first run fails on its input while the second runs; the third is not
    started (it would fail the same way), the second ends and is kept."""
    import sgdlab.experiments.sweep as sweep
    from sgdlab.errors import DataError

    @register_procedure("_test_bad_first")
    class _BadFirst(Procedure):
        allowed = {"x"}

        def run(self, run, ctx):
            CALLS.append(run.label)
            if run.params["x"] == 1:
                raise DataError("mnist: missing file")
            return RunOutput(summary={"y": 1.0})

    monkeypatch.setattr(sweep, "make_backend", lambda name, on_rows, **kw: _TwoSlots(on_rows))
    runs = resolve(_raw(procedure="_test_bad_first"), "smoke").expand()
    store = str(tmp_path / "s.sqlite")
    CALLS.clear()
    lines: list[str] = []
    with pytest.raises(UserError, match="failed on its input: mnist: missing file"):
        run_sweep(runs, store_path=store, progress=lines.append, workers=2)
    assert CALLS == ["sq|x=1", "sq|x=2"]
    # said failed, as any failed run (its input named in the error that follows)
    assert lines[1].startswith("[1/3] sq|x=1|seed=0 failed (") and "bad input" in lines[1]
    assert [r["status"] for r in RunStore(store).list_runs()] == ["failed", "finished"]


def test_a_run_stored_with_a_relative_data_path_is_read_from_beside_its_store(tmp_path,
                                                                             monkeypatch):
    """A store written before artifact paths were absolute holds them relative to the folder
    `sgdlab run` was started in: read from another folder, its data is found under the
    store's ``artifacts/``."""
    runs = resolve(_raw(grid={}), "smoke").expand()
    (tmp_path / "st" / "artifacts" / "k").mkdir(parents=True)
    (tmp_path / "st" / "artifacts" / "k" / "data.json").write_text('{"curve": [1, null]}')
    st = RunStore(tmp_path / "st" / "s.sqlite")
    rid = st.create_run({"run_key": runs[0].key}, experiment=runs[0].experiment)
    st.complete_run(rid, "finished", summary={"y": 1.0},
                    artifacts=[("data", "st/artifacts/k/data.json")])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    [run], missing = load_runs(runs, store_path=str(tmp_path / "st" / "s.sqlite"))
    assert not missing and run.summary == {"y": 1.0} and run.data["curve"][0] == 1
    assert np.isnan(run.data["curve"][1])         # strict JSON's null: a non-finite number


def test_a_sweep_of_no_runs_runs_nothing(tmp_path):
    from sgdlab.experiments.sweep import SweepReport

    rep = run_sweep([], store_path=str(tmp_path / "s.sqlite"), progress=None)
    assert (rep.executed, rep.skipped, rep.failed) == ([], [], [])
    assert isinstance(rep, SweepReport)


def test_the_sweep_options_that_cannot_go_together_are_named():
    """The local backend refuses Ray's options (all of those given, named together) but not
    --gpus-per-run 0, which asks for nothing it lacks."""
    from sgdlab.experiments.sweep import check_options

    check_options(workers=2, backend="local", address=None, gpus_per_run=0)
    check_options(workers=1, backend="ray", address="a:1", gpus_per_run=1, cpus_per_run=2)
    for kw, says in (
            ({"address": "a:1", "cpus_per_run": 1}, "--address and --cpus-per-run are options "
             "of --backend ray; the local backend gives each run cores // --workers"),
            ({"gpus_per_run": 0.5}, "--gpus-per-run is an option of --backend ray"),
            ({"workers": 0}, "--workers must be >= 1, got 0"),
            ({"backend": "slurm"}, "--backend must be one of local, ray, got 'slurm'")):
        args = {"workers": None, "backend": "local", "address": None, "gpus_per_run": None,
                **kw}
        with pytest.raises(UserError) as e:
            check_options(**args)
        assert str(e.value).startswith(says)


def test_a_run_key_is_the_sha256_of_its_documented_fields():
    """The key a store finds finished runs by: SHA-256 of experiment, version, scale, label,
    params, seed and procedure (deps only when there are some), computed here by hand from
    the JSON of those fields; a run without dependencies has no ``deps`` field."""
    import hashlib

    from sgdlab.experiments.spec import run_key

    def by_hand(fields):
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    plain = {"e": "t-square", "v": 1, "s": "smoke", "l": "sq|x=2", "p": {"x": 2}, "seed": 0,
             "proc": "_test_square"}
    (run,) = [r for r in resolve(_raw(), "smoke").expand() if r.label == "sq|x=2"]
    assert run.key == by_hand(plain)
    assert run_key("t-square", 1, "smoke", "sq|x=2", {"x": 2}, 0, "_test_square",
                   ("k1",)) == by_hand({**plain, "deps": ["k1"]})


def test_a_run_depends_on_the_run_of_its_own_seed():
    """With seeds [0, 1] the child of seed 1 is computed from the parent of seed 1: its
    dependency key is that run's key, not seed 0's."""
    register_dependency_recorder("_test_dep_seeds", {})
    runs = resolve(_raw(procedure="_test_dep_seeds", base={}, grid={}, seeds=[0, 1], scales={},
                        runs=[{"label": "parent"}, {"label": "child", "depends": ["parent"]}]),
                   "cpu").expand()
    key = {(r.label, r.seed): r.key for r in runs}
    deps = {r.seed: r.dependency_keys for r in runs if r.label == "child"}
    assert key[("parent", 0)] != key[("parent", 1)]
    assert deps == {0: (key[("parent", 0)],), 1: (key[("parent", 1)],)}


def test_a_dependency_cycle_is_named_not_a_recursion_error():
    register_dependency_recorder("_test_dep_cycle", {})
    raw = _raw(procedure="_test_dep_cycle", base={}, grid={}, scales={}, seeds=[0],
               runs=[{"label": "a", "depends": ["b"]}, {"label": "b", "depends": ["a"]}])
    with pytest.raises(ConfigError, match=r"^t-square: dependency cycle through 'a'$"):
        resolve(raw, "cpu")


def test_a_scale_replaces_runs_grid_and_seeds_and_merges_base_and_resources():
    """The documented override rules of ``scales.<scale>``: its runs, grid and seeds replace
    the file's; its base and resources merge over the file's; requires_data_dir is the
    scale's own. An unknown scale is named with the valid ones."""
    raw = _raw(base={"x": 1, "factor": 2}, resources={"cpus_per_run": 2, "gpus_per_run": 0},
               scales={"cpu": {"runs": [{"label": "c"}], "grid": {"factor": [5]},
                               "seeds": [7], "base": {"x": 4},
                               "resources": {"gpus_per_run": 0.5}},
                       "paper": {"requires_data_dir": True}})
    from sgdlab.experiments.spec import needs_data_dir

    assert resolve(raw, "paper").requires_data_dir and needs_data_dir(resolve(raw, "paper"))
    cpu = resolve(raw, "cpu")
    assert [(r.label, r.seed, r.params) for r in cpu.expand()] == [
        ("c|factor=5", 7, {"x": 4, "factor": 5})]
    assert cpu.resources == {"cpus_per_run": 2, "gpus_per_run": 0.5}
    assert not cpu.requires_data_dir and not needs_data_dir(cpu)
    smoke = resolve(raw, "smoke")       # (no overrides: the file's own)
    assert [(r.label, r.seed) for r in smoke.expand()] == [
        (f"sq|x={x}", s) for x in (1, 2, 3) for s in (0, 1)]
    assert smoke.resources == {"cpus_per_run": 2, "gpus_per_run": 0}
    with pytest.raises(ConfigError, match=r"^unknown scale 'huge'; choose one of smoke, cpu, "
                                          r"paper$"):
        resolve(raw, "huge")


def test_an_outside_regime_reason_is_said_on_one_line():
    """A reason folded over lines in the YAML is said with single spaces, in the finding's
    text and in its ``outside_regime``."""
    from sgdlab.experiments.analysis import outside_regime

    (c,) = outside_regime([Conclusion("y = 1", True, claim="c")], "l is ten times\n  the paper's")
    assert c.outside_regime == "l is ten times the paper's"
    assert c.text == ("y = 1 — outside the paper's regime: l is ten times the paper's; not "
                      "scored (the numbers alone: agrees)")


def test_an_analysis_table_is_found_by_name_and_a_missing_one_is_a_key_error():
    t = Table("squares", ["a"], [[1]])
    assert Analysis(tables=[Table("other", ["b"], []), t]).table("squares") is t
    with pytest.raises(KeyError, match="nope"):
        Analysis(tables=[t]).table("nope")


def test_deep_merge_reaches_dotted_keys_and_starts_a_renamed_section_afresh():
    from sgdlab.experiments.spec import deep_merge

    base = {"optimizer": {"name": "sgd", "lr": 1, "momentum": 0.9}, "x": 1}
    assert deep_merge(base, {"optimizer.lr": 2}) == {
        "optimizer": {"name": "sgd", "lr": 2, "momentum": 0.9}, "x": 1}
    assert deep_merge(base, {"optimizer": {"lr": 3}}) == {
        "optimizer": {"name": "sgd", "lr": 3, "momentum": 0.9}, "x": 1}
    assert deep_merge(base, {"optimizer": {"name": "adam", "lr": 3}}) == {
        "optimizer": {"name": "adam", "lr": 3}, "x": 1}
    assert base == {"optimizer": {"name": "sgd", "lr": 1, "momentum": 0.9}, "x": 1}


def test_data_dir_is_put_into_strings_inside_lists_too(tmp_path):
    """``${data_dir}`` anywhere in run parameters, a list's items included, becomes the
    absolute --data-dir."""
    from sgdlab.experiments.spec import _substitute

    got = _substitute({"a": ["${data_dir}/x", 1, {"b": ["${data_dir}"]}]}, str(tmp_path))
    assert got == {"a": [f"{tmp_path}/x", 1, {"b": [str(tmp_path)]}]}


def test_a_title_cites_the_paper_only_where_its_block_names_one():
    from sgdlab.experiments.spec import cited

    assert cited({"author": "Musso", "year": 2020, "figure": "Fig. 4"}) == "Musso 2020, Fig. 4: "
    assert cited({"claim": "x"}) == ""            # not ": " before the title's own words


def test_paper_ref_is_first_author_year_and_figure():
    from sgdlab.experiments.spec import paper_ref

    assert paper_ref({"author": "Xing, Arpit, Tsirigotis", "year": 2018,
                      "figure": "Fig. 5"}) == "Xing 2018, Fig. 5"
    assert paper_ref({"author": "Zhu", "year": 2019}) == "Zhu 2019"


def test_a_wall_time_under_a_minute_is_said_in_seconds_from_one_minute_in_minutes():
    from sgdlab.experiments.spec import wall_time_text

    assert [wall_time_text(m) for m in (0.66, 1, 19.4)] == ["~40 s", "~1 min", "~19 min"]


def test_a_catalogue_file_whose_name_is_not_its_file_name_is_refused(tmp_path, monkeypatch):
    from sgdlab.experiments import spec as spec_module

    monkeypatch.setattr(spec_module, "CATALOGUE_DIR", tmp_path)
    (tmp_path / "t-other.yaml").write_text(yaml.safe_dump(_raw()))
    with pytest.raises(ConfigError, match=r"t-other.yaml: name 't-square' differs from the "
                                          r"file name$"):
        load_experiment("t-other")


@register_analysis("_test_always_fails")
def _always_fails(spec, runs):
    raise ValueError("the analysis is broken")


def test_an_analysis_that_fails_on_a_complete_sweep_raises_its_error(tmp_path):
    # with runs missing, the report notes the failure (the analysis may need them); with none
    # missing, nothing explains it: the error is the analysis's own and must surface
    cfg = _write(tmp_path, _raw(analysis="_test_always_fails", grid={"x": [1]}))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="the analysis is broken"):
        run_experiment(str(cfg), scale="smoke", out_dir=out,
                       store_path=str(tmp_path / "runs.sqlite"), progress=None)
    assert not (out / "results.json").exists()


def test_a_rewritten_report_removes_no_file_named_by_a_path_in_its_results_json(tmp_path):
    # the names of the outputs to replace are read from results.json, which may have been
    # edited by hand: a name that is a path does not name a file the report wrote
    cfg = _write(tmp_path, _raw(grid={"x": [1]}, outputs={}))
    out, store = tmp_path / "out", str(tmp_path / "runs.sqlite")
    run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store, progress=None)
    keep = [tmp_path / "up.csv", tmp_path / "far.svg", out / "tables" / ".csv"]
    for p in keep:
        p.write_text("not the report's")
    old = json.loads((out / "results.json").read_text())
    old["tables"] += [{"name": "../../up"}, {"name": ""}]
    old["figures"] += [{"name": str(tmp_path / "far")}]
    (out / "results.json").write_text(json.dumps(old))
    run_experiment(str(cfg), scale="smoke", out_dir=out, store_path=store, progress=None)
    assert all(p.read_text() == "not the report's" for p in keep)
    assert (out / "tables/squares.csv").is_file() and (out / "figures/ys.png").is_file()


@register_procedure("_test_step_17")
class _Step17(Procedure):
    """Logs step 17 of a planned 40, then waits, twice (one worker: the driver hears the run
    only through its rows, and says it is running on the second)."""
    allowed = {"x"}

    def planned_steps(self, params):
        return 40

    def run(self, run, ctx):
        for name in ("a", "b"):
            ctx.store.log_metric(ctx.run_id, name, 17, 1.0)
            time.sleep(0.3)
        return RunOutput(summary={"y": 1.0})


def test_a_long_run_is_reported_at_the_last_step_it_logged(tmp_path, monkeypatch):
    import sgdlab.experiments.sweep as sweep

    monkeypatch.setattr(sweep, "HEARTBEAT", 0.2, raising=False)
    lines: list[str] = []
    run_sweep(resolve(_raw(procedure="_test_step_17", grid={"x": [1]}), "smoke").expand(),
              store_path=str(tmp_path / "s.sqlite"), progress=lines.append, workers=1)
    beats = [ln for ln in lines if "running:" in ln]
    assert beats and all(ln.endswith(" (step 17 of 40)") for ln in beats), lines


@register_procedure("_test_interrupts")
class _Interrupts(Procedure):
    """Ctrl-C while it runs."""
    allowed = {"x"}

    def run(self, run, ctx):
        raise KeyboardInterrupt


def test_a_run_stopped_before_it_ended_records_its_seed(tmp_path):
    # the worker records where it ran (its seed too) only at the end: a run that is still
    # running, or was interrupted, shows the environment the driver recorded when it claimed it
    store = tmp_path / "s.sqlite"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(resolve(_raw(procedure="_test_interrupts", grid={"x": [1]}, seeds=[3],
                               scales={}), "cpu").expand(),
                  store_path=str(store), progress=None)
    (run,) = RunStore(store).list_runs()
    assert run["status"] == "interrupted"
    assert RunStore(store).get_run(run["id"])["env"]["seed"] == 3


@register_procedure("_test_crashes_naming_its_checkpoint")
class _CrashNamingCheckpoint(Procedure):
    """Fails as a full disk would, naming the checkpoint file it was to write."""
    allowed = {"x"}

    def run(self, run, ctx):
        from sgdlab.experiments.worker import CHECKPOINT_DIR
        from sgdlab.train.checkpoint import checkpoint_path

        CALLS.append(run.label)
        raise OSError(f"no space left writing {checkpoint_path(ctx.artifact_dir / CHECKPOINT_DIR)}")


def test_a_resumed_run_that_crashes_naming_its_checkpoint_is_a_crash(tmp_path):
    # only a checkpoint its training refuses as bad input is removed and the run started again:
    # a crash whose message names the file (a full disk) is the run's failure, and the
    # checkpoint stays for the next sweep to resume
    from sgdlab.experiments.worker import CHECKPOINT_DIR
    from sgdlab.train.checkpoint import checkpoint_path, save_checkpoint

    store = tmp_path / "s.sqlite"
    (run,) = resolve(_raw(procedure="_test_crashes_naming_its_checkpoint", grid={"x": [1]}),
                     "smoke").expand()
    ckpt = checkpoint_path(artifacts_root(RunStore(store)) / run.key / CHECKPOINT_DIR)
    ckpt.parent.mkdir(parents=True)
    # an earlier attempt's checkpoint at step 0, which counted no rows
    save_checkpoint(ckpt, {"loop": {"step": 0, "stored_rows": 0}, "run_id": "earlier"})
    said: list[str] = []
    CALLS.clear()
    rep = run_sweep([run], store_path=str(store), progress=said.append)
    assert rep.failed == [(run.run_name, f"OSError: no space left writing {ckpt}")]
    assert CALLS == ["sq|x=1"] and ckpt.is_file()
    assert "resuming sq|x=1|seed=0 from step 0 (its last checkpoint)" in said
    assert not any("cannot be resumed" in x for x in said), said


# ---- sgdlab.experiments.spec: names, paths and files (what `sgdlab run NAME` finds) ---------
def _hint(name: str) -> str:
    """What catalogue_name says of ``name``, which no entry has."""
    from sgdlab.experiments.spec import catalogue_name

    with pytest.raises(ConfigError) as e:
        catalogue_name(name)
    return str(e.value)


def test_a_name_not_in_the_catalogue_names_the_entries_it_holds_or_is_close_to():
    """The hint's names, worked out by hand: an entry the name holds or is held in, then
    difflib's ratio 2M/T >= 0.75 (``chaudhari-trivialised``: M = 20 matching characters, so
    40/42, 40/48 and 40/49 for the three trivialized entries, best first), each named once."""
    from sgdlab.experiments.spec import catalogue_name

    assert catalogue_name("Xing_Walk") == "xing-walk" == catalogue_name(" xing-walk ")
    tail = "; `sgdlab list` shows the catalogue"
    assert _hint("walk") == f"unknown experiment 'walk' (did you mean xing-walk?){tail}"
    # held in the name, which is too long for difflib's ratio (18/31)
    assert _hint("xing-walk-at-cpu-scale") == ("unknown experiment 'xing-walk-at-cpu-scale' "
                                               f"(did you mean xing-walk?){tail}")
    # found both ways (held, and 18/19 alike): named once
    assert _hint("xing-walks") == f"unknown experiment 'xing-walks' (did you mean xing-walk?){tail}"
    assert _hint("chaudhari-trivialised") == (
        "unknown experiment 'chaudhari-trivialised' (did you mean chaudhari-trivialized, "
        f"chaudhari-trivialized-lenet, chaudhari-trivialized-allcnn?){tail}")
    # 'walk' of xing-walk alone matches: 8/15, under the cutoff, so no guess
    assert _hint("walker") == f"unknown experiment 'walker'{tail}"
    with pytest.raises(ConfigError) as e:
        catalogue_name("walker", or_folder=True)
    assert str(e.value) == (f"no experiment and no folder 'walker'{tail}, and `sgdlab report "
                            "FILE.yaml` takes an experiment file of your own")


def test_a_name_held_in_many_entries_guesses_none_of_them():
    """`sgdlab run a` (or a blank name, or `x`) was answered "did you mean" with every entry
    whose name holds it: all forty for a blank. At most three names are a guess, as difflib's;
    the catalogue's names holding 'sgd' are three (two entropy-sgd entries and rmsprop-sgd)."""
    from sgdlab.experiments.spec import catalogue_name

    for name in ("  ", "-", "a", "x"):
        assert _hint(name) == (
            f"unknown experiment {name!r}; `sgdlab list` shows the catalogue")
    with pytest.raises(ConfigError, match=r"'sgd' \(did you mean chaudhari-entropy-sgd, "
                                          r"chaudhari-entropy-sgd-rnn, zhu-rmsprop-sgd\?\)"):
        catalogue_name("sgd")


def test_load_experiment_reads_any_file_or_says_which_path_is_wrong(tmp_path, monkeypatch):
    from sgdlab.experiments.spec import catalogue_files

    with pytest.raises(ConfigError, match=r"^no experiment config '[^']*nope\.yml'"):
        load_experiment(str(tmp_path / "nope.yml"))          # a path, not "unknown experiment"
    other = _write(tmp_path, _raw(), "exp.conf")         # a file is a file, whatever its suffix
    assert load_experiment(str(other)).name == "t-square"
    with pytest.raises(ConfigError, match=r"is a folder, not an experiment config"):
        load_experiment(str(tmp_path))
    # a copy of an entry under the entry's file name, in another folder, is that copy
    text = catalogue_files()["xing-walk"].read_text(encoding="utf-8")
    (tmp_path / "xing-walk.yaml").write_text(re.sub(r"(?m)^version: \d+", "version: 9", text),
                                            encoding="utf-8")
    assert load_experiment(tmp_path / "xing-walk.yaml").version == 9
    # a missing file spelled as an entry's file (Xing_Walk.yaml) names the entry
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^no experiment config 'Xing_Walk.yaml'; the "
                                          r"catalogue entry xing-walk is given by its name"):
        load_experiment("Xing_Walk.yaml")
    # an entry's name, in any spelling, is the entry though a folder here is so named
    (tmp_path / "Xing_Walk").mkdir()
    assert load_experiment("Xing_Walk").name == "xing-walk"


def test_an_experiment_file_rewritten_at_the_same_size_and_time_is_read_again(tmp_path,
                                                                               monkeypatch):
    """An edit that keeps the file's size within one tick of a coarse file clock (1 s, 2 s on
    FAT, a jiffy on older kernels), or a copy that keeps its source's time (``cp -p``), was
    served from the cache: the experiment before the edit ran."""
    from sgdlab.experiments.spec import read_file

    p = tmp_path / "e.yaml"
    p.write_text("name: a\nbase: {lr: 0.1}\n", encoding="utf-8")
    first = read_file(p)
    assert first == {"name": "a", "base": {"lr": 0.1}}
    first["base"]["lr"] = 7                         # the caller's copy, not the cache's
    assert read_file(p) == {"name": "a", "base": {"lr": 0.1}}
    stamp = p.stat().st_mtime_ns
    p.write_text("name: a\nbase: {lr: 0.2}\n", encoding="utf-8")
    os.utime(p, ns=(stamp, stamp))
    assert read_file(p) == {"name": "a", "base": {"lr": 0.2}}
    p.write_text("name: a\nbase: {lr: 0.3}\n", encoding="utf-8")
    os.utime(p, ns=(stamp + 10**9, stamp + 10**9))
    assert read_file(p)["base"]["lr"] == 0.3
    # one relative name in two folders, alike in size and time: each folder's own file
    for d, lr in (("a", 1), ("b", 2)):
        (tmp_path / d).mkdir()
        (tmp_path / d / "e.yaml").write_text(f"base: {{lr: {lr}}}\n", encoding="utf-8")
        os.utime(tmp_path / d / "e.yaml", ns=(stamp, stamp))
    for d, lr in (("a", 1), ("b", 2)):
        monkeypatch.chdir(tmp_path / d)
        assert read_file("e.yaml") == {"base": {"lr": lr}}


# ---- sgdlab.experiments.spec: overrides land where stated ----------------------------------
def test_set_dotted_lands_in_every_matching_item_and_names_what_is_in_the_way():
    from sgdlab.experiments.spec import get_dotted, set_dotted

    items = [{"kind": "a", "o": {"p": 1, "q": 2}}, 3, {"kind": "a"}, {"kind": "b"}]
    d = {"final": items}
    set_dotted(d, "final[kind=a].o", {"p": 5})       # a mapping merges into a mapping
    assert d["final"] == [{"kind": "a", "o": {"p": 5, "q": 2}}, 3, {"kind": "a", "o": {"p": 5}},
                          {"kind": "b"}]
    assert items[0] == {"kind": "a", "o": {"p": 1, "q": 2}} and items[2] == {"kind": "a"}
    assert get_dotted(d, "final[kind=a].o.q") == 2   # the first item so named
    # a value with '-' and '.': the path was cut at that dot, and the value set at keys
    # 'final[name=hessian-top' and 'v2]' made for it, the list's item left as it was
    d = {"final": [{"name": "hessian-top.v2", "tol": 1}]}
    set_dotted(d, "final[name=hessian-top.v2].tol", 0.5)
    assert d == {"final": [{"name": "hessian-top.v2", "tol": 0.5}]}
    assert get_dotted(d, "final[name=hessian-top.v2].tol") == 0.5
    assert get_dotted({"a": {"b": 1}}, "a.b") == 1
    assert get_dotted({"a": 1}, "a.b", "-") == "-" == get_dotted({"a": 1}, "a.l[k=v].x", "-")
    d = {"a": {}}
    set_dotted(d, "a.b.c", 1)                        # sections the path names are made
    assert d == {"a": {"b": {"c": 1}}}
    for d, path, says in (
            ({"a": 0}, "a.b", "cannot set 'a.b': 'a' is not a mapping"),
            ({"a": {}}, "l[k=v]", "cannot set 'l[k=v]': a list selector needs a key after it"),
            ({"l": {"k": "v"}}, "l[k=v].x", "cannot set 'l[k=v].x': 'l' is not a list"),
            ({"l": []}, "l[k=v].x", "no item of 'l' has k = v (its items: none)"),
            ({"l": [{"k": "u"}, 2, {"k": "w"}]}, "l[k=v].x", "(its items: u, w)")):
        with pytest.raises(ConfigError) as e:
            set_dotted(d, path, 1)
        assert says in str(e.value), (path, str(e.value))


def test_deep_merge_names_a_nameless_section_and_shares_nothing_with_its_inputs():
    from sgdlab.experiments.spec import deep_merge

    # a section without a name is not "another one": it takes the name and keeps its options
    assert deep_merge({"o": {"lr": 1}}, {"o": {"name": "sgd"}}) == {"o": {"lr": 1, "name": "sgd"}}
    b = {"l": [1], "s.t": [2], "o": {"name": "adam", "m": [3]}}
    out = deep_merge({"o": {"name": "sgd"}, "s": {}}, b)
    assert out == {"o": {"name": "adam", "m": [3]}, "s": {"t": [2]}, "l": [1]}
    out["l"].append(9), out["s"]["t"].append(9), out["o"]["m"].append(9)
    assert b == {"l": [1], "s.t": [2], "o": {"name": "adam", "m": [3]}}


# ---- sgdlab.experiments.spec: small readers of the file ------------------------------------
def test_scale_deviations_lists_each_scales_own_and_no_other():
    from sgdlab.experiments.spec import scale_deviations

    raw = {"scales": {"smoke": None, "cpu": {"deviations": ["a", "b"]}, "paper": {"seeds": [0]}}}
    got = scale_deviations(raw)
    assert got == {"cpu": ["a", "b"]}
    got["cpu"].append("c")
    assert raw["scales"]["cpu"]["deviations"] == ["a", "b"]
    assert scale_deviations({"name": "x"}) == {}


def test_paper_ref_leaves_out_a_missing_year_or_author():
    from sgdlab.experiments.spec import paper_ref

    assert paper_ref({"author": "Zhu", "figure": "Fig. 1"}) == "Zhu, Fig. 1"
    assert paper_ref({"year": 2019, "figure": "Fig. 2"}) == "2019, Fig. 2"
    assert paper_ref({}) == ""


def test_wall_time_rounds_to_the_nearest_minute_or_second():
    from sgdlab.experiments.spec import wall_time_text

    assert [wall_time_text(m) for m in (19.6, 0.999, 0.5)] == ["~20 min", "~60 s", "~30 s"]


def test_data_dir_fills_every_placeholder_as_an_absolute_folder(tmp_path, monkeypatch):
    from sgdlab.experiments.spec import _substitute, expand_data_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert expand_data_dir(Path("~/d")) == str(tmp_path / "home" / "d")
    assert expand_data_dir(None) is None
    assert _substitute({"p": "${data_dir}/a:${data_dir}/b", "q": "x"}, "data") == {
        "p": f"{tmp_path}/data/a:{tmp_path}/data/b", "q": "x"}
    assert _substitute({"p": ["${data_dir}"]}, "~/d") == {"p": [f"{tmp_path}/home/d"]}
    assert _substitute({"p": "plain"}, None) == {"p": "plain"}
    with pytest.raises(ConfigError, match="this experiment reads real data: pass --data-dir"):
        _substitute({"a": {"b": "${data_dir}"}}, None)
    # --data-dir "$DIR" with DIR unset was the working folder, its files read as the data
    with pytest.raises(ConfigError, match=r"^--data-dir is empty \(an unset variable\?\): "
                                          r"give the directory holding the dataset files "
                                          r"\('\.' for the working folder\)$"):
        _substitute({"a": "${data_dir}"}, "")


def test_a_paper_misspelt_as_all_is_told_so():
    from sgdlab.experiments.spec import catalogue_entries

    with pytest.raises(ConfigError, match=r"unknown paper 'alll' \(did you mean all\?\)"):
        catalogue_entries("alll")


def test_choose_readings_of_a_file_without_readings():
    from sgdlab.experiments.spec import choose_readings

    assert choose_readings(_raw()) == {} == choose_readings(_raw(), {})
    with pytest.raises(ConfigError, match=r"^t-square has no readings to choose from "
                                          r"\(--reading m=two\): it names no ambiguity"):
        choose_readings(_raw(), {"m": "two"})


def test_an_edited_copy_is_compared_with_its_entry_at_the_same_scale_and_reading(tmp_path):
    """_check_option_numbers against a packaged file written here: every option that the
    entry holds as a number (nested ones too, a scale's own, a reading's) is refused as a word
    or a bool in the copy; None (an option left unset) passes, and a copy whose readings the
    entry lacks is not compared."""
    from sgdlab.experiments.spec import _check_option_numbers

    reading = {"r": {"default": "a", "choices": {
        "a": {"description": "as printed"},
        "b": {"description": "as meant", "options": {"thr": 1}}}}}
    packaged = _write(tmp_path, _raw(options={"tv": 0.3, "near": {"tol": 1e-3}, "flag": 1},
                                     scales={"cpu": {"options": {"only_cpu": 2}}},
                                     readings=reading), "packaged.yaml")

    def refused(scale="smoke", readings=None, **options) -> str:
        mine = _raw(options=options, scales={"cpu": {"options": options}}, readings={
            "r": {**reading["r"], "choices": {**reading["r"]["choices"], "b": {
                "description": "mine", "options": options}}}})
        spec = resolve(mine, scale, readings=readings)
        try:
            _check_option_numbers(spec, packaged, scale, readings, "copy.yaml")
        except ConfigError as e:
            return str(e)
        return ""

    said = refused(tv="high", near={"tol": "small"}, flag=True)
    assert said.startswith("copy.yaml: ") and said.count(" must be a number ") == 3
    for part in ("options.tv must be a number (the catalogue's t-square has 0.3 at scale "
                 "smoke), got 'high'", "options.near.tol must be a number (the catalogue's "
                 "t-square has 0.001 at scale smoke), got 'small'",
                 "options.flag must be a number (the catalogue's t-square has 1 at scale "
                 "smoke), got True"):
        assert part in said, said
    assert refused(tv=None, near={"tol": 2}, flag=0.5) == ""
    assert "options.only_cpu must be a number (the catalogue's t-square has 2 at scale cpu)" \
        in refused("cpu", only_cpu="x")
    assert refused("smoke", only_cpu="x") == ""
    assert "options.thr must be a number" in refused(readings={"r": "b"}, thr="x")
    assert refused(thr="x") == ""
    copy_only = _raw(readings={"q": {"default": "y", "choices": {
        "y": {"description": "y"}, "z": {"description": "z", "options": {"tv": "x"}}}}})
    _check_option_numbers(resolve(copy_only, "smoke", readings={"q": "z"}), packaged, "smoke",
                          {"q": "z"}, "copy.yaml")


def test_read_file_names_the_file_whose_text_is_no_mapping_or_no_yaml(tmp_path):
    from sgdlab.experiments.spec import read_file

    (tmp_path / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    (tmp_path / "bad.yaml").write_text("name: [a\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        read_file(tmp_path / "list.yaml")
    assert str(e.value) == f"{tmp_path / 'list.yaml'}: expected a mapping at the top level"
    with pytest.raises(ConfigError) as e:
        read_file(tmp_path / "bad.yaml")
    assert str(e.value).startswith(f"{tmp_path / 'bad.yaml'}: line 2, column 1: not valid YAML")


def test_a_report_records_the_command_that_writes_it_again_and_what_each_figure_shows(
        tmp_path):
    """results.json holds the `sgdlab run` line of the report (a file outside the catalogue
    by --config, paths absolute) and each figure's title; the page shows both."""
    import shlex

    from sgdlab.experiments.runner import run_command

    path = _write(tmp_path, _raw())
    out, store = tmp_path / "out", str(tmp_path / "runs.sqlite")
    res = run_experiment(str(path), scale="smoke", out_dir=out, store_path=store,
                         progress=None)
    assert res.results["command"] == shlex.join(
        ["sgdlab", "run", "--config", str(path), "--scale", "smoke", "--store", store,
         "--out", str(out)])
    assert [f["title"] for f in res.results["figures"]] == ["y of each run; by seed"]
    page = (out / "report.html").read_text()
    assert f"<code>{shlex.join(['sgdlab', 'report', str(out)])}</code>" in page
    assert "<p>y of each run; by seed<br>ys (" in page
    # a catalogue entry by its name, with the readings off their defaults
    spec = load_experiment("zhu-escape-2d", "smoke", {"landscape": "rescaled"})
    assert run_command(spec, Path("o"), store_path="s.sqlite", data_dir="~/d",
                       device="cuda") == (
        "sgdlab run zhu-escape-2d --scale smoke --reading landscape=rescaled --data-dir "
        f"{os.path.expanduser('~/d')} --device cuda --store {os.path.abspath('s.sqlite')} "
        f"--out {os.path.abspath('o')}")
