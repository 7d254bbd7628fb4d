"""Every catalogue entry runs at smoke scale and writes the output contract (the results.json
keys README.md lists); `sgdlab list`."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sgdlab.cli.main import main as cli
from sgdlab.experiments.runner import run_experiment
from sgdlab.experiments.spec import SCALES, list_names, load_experiment

NAMES = list_names()


pytestmark = pytest.mark.usefixtures("one_thread_runs")


def test_catalogue_is_not_empty_and_resolves_at_every_scale():
    assert len(NAMES) >= 10
    for name in NAMES:
        for scale in SCALES:
            spec = load_experiment(name, scale)      # validates every run's parameters
            assert spec.expand(data_dir="/data"), (name, scale)


def test_every_entry_gives_its_analysis_only_options_it_reads_as_it_reads_them():
    # the file's own options; those its scales and reading choices merge in are checked
    # where they are merged, by test_plan.py::test_every_entry_plans_at_every_scale_under_...
    from sgdlab.experiments.procedures import ANALYSIS_OPTIONS, analysis_option_problems
    from sgdlab.experiments.spec import catalogue_files, read_file

    found, checked = {}, set()
    for name, path in catalogue_files().items():
        raw = read_file(path)
        if problems := analysis_option_problems(raw["analysis"], raw.get("options") or {}):
            found[name] = problems
        checked |= {raw["analysis"]} & ANALYSIS_OPTIONS.keys()
    assert not found
    assert checked == ANALYSIS_OPTIONS.keys()     # each declaration met by an entry


def _readme_result_keys() -> list[str]:
    """The top-level keys README.md lists for an experiment's ``results.json``, in order."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    para = text.split("`results.json` keys:", 1)[1].split(". `python -m", 1)[0]
    depth, top = 0, []
    for part in re.split(r"(\(|\))", para):     # keys outside parentheses are the top level
        if part == "(":
            depth += 1
        elif part == ")":
            depth -= 1
        elif depth == 0:
            top += re.findall(r"`(\w+)`", part)
    return top


README_RESULT_KEYS = _readme_result_keys()


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_writes_outputs(name, tmp_path):
    from sgdlab.report.figures.charts import plt

    out = tmp_path / "out"
    before = set(plt.get_fignums())
    res = run_experiment(name, scale="smoke", out_dir=out, store_path=str(tmp_path / "s.sqlite"),
                         progress=None)
    # every figure closed once saved: `run --paper all` runs entry after entry in one process
    assert set(plt.get_fignums()) == before
    r = json.loads((out / "results.json").read_text())
    assert not r["sweep"]["failed"], r["sweep"]["failed"]
    assert res.ok and not r["missing_runs"] and not r["missing_outputs"], r["missing_outputs"]
    assert r["tables"] and r["figures"] and r["conclusions"]
    for c in r["conclusions"]:
        assert c["text"] and c["agrees_with_paper"] in (True, False, None)
    for f in r["figures"]:
        assert (out / f["png"]).stat().st_size > 0 and (out / f["svg"]).stat().st_size > 0
    for t in r["tables"]:
        assert t["caption"], t["name"]          # what the table shows, as every table says
        assert (out / "tables" / f"{t['name']}.csv").is_file()
        assert (out / "tables" / f"{t['name']}.md").is_file()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(r["figures"])
    assert r["experiment"]["paper"]["figure"] and r["environment"]["torch"]
    assert list(r) == README_RESULT_KEYS



def test_list_json_fields(capsys):
    assert cli(["list", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in items] == NAMES
    for i in items:
        assert i["description"] and i["title"]
        assert {"author", "year", "figure"} <= set(i["paper"])
        assert isinstance(i["paper"]["year"], int)
    assert cli(["list"]) == 0
    assert NAMES[0] in capsys.readouterr().out


def test_experiment_names_spelled_like_model_names_and_typos_suggested():
    # Xing_Walk / xing_walk found nothing (models and datasets accept both spellings) and a
    # transposition (xing-wlak) got no suggestion
    from sgdlab.errors import ConfigError

    assert load_experiment("Xing_Walk").name == "xing-walk"
    with pytest.raises(ConfigError, match=r"unknown experiment 'xing-wlak' \(did you mean "
                                          r"xing-walk\?\)"):
        load_experiment("xing-wlak")
    with pytest.raises(ConfigError, match=r"unknown experiment 'nope'; `sgdlab list`"):
        load_experiment("nope")



def test_a_paper_given_as_an_experiment_names_the_paper_option():
    # `sgdlab run zhu` listed the nine entries as guesses, not --paper, which runs them all
    from sgdlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown experiment 'Zhu': it is a paper, whose 9 "
                                          r"entries `sgdlab run --paper zhu` runs one after "
                                          r"another \(`sgdlab list zhu` lists them\)"):
        load_experiment("Zhu")


def test_a_packaged_run_config_given_as_an_experiment_says_how_to_train_it():
    # `sgdlab run digits-mlp` said only "unknown experiment"
    from sgdlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown experiment 'digits-mlp': it is a packaged "
                                          r"run config, trained with `sgdlab train digits-mlp`"):
        load_experiment("digits-mlp")


def test_an_edited_copy_with_a_word_for_a_number_option_is_refused_before_the_sweep(tmp_path):
    # the analysis read it with float() after every run had trained: a ValueError traceback
    from sgdlab.errors import ConfigError
    from sgdlab.experiments.spec import catalogue_files

    text = catalogue_files()["chaudhari-double-well"].read_text(encoding="utf-8")
    copy = tmp_path / "dw.yaml"
    copy.write_text(text.replace("options: {tv_below: 0.3}",
                                 "options: {tv_below: high, my_note: x}"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"dw.yaml: options.tv_below must be a number \(the "
                                          r"catalogue's chaudhari-double-well has 0.3 at scale "
                                          r"smoke\), got 'high'$"):
        load_experiment(copy, "smoke")
    assert load_experiment(copy, "cpu").options["tv_below"] == 0.05   # smoke's alone changed
    copy.write_text(text.replace("options: {tv_below: 0.3}", "options: {tv_below: 0.2}"),
                    encoding="utf-8")
    assert load_experiment(copy, "smoke").options["tv_below"] == 0.2
