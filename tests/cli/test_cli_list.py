"""`sgdlab list`: finding the entry that reproduces a figure."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sgdlab.cli.list import CPU_UNRECORDED_AT_MOST, catalogue, cpu_time
from sgdlab.cli.main import main


def _listed_names(capsys) -> list[str]:
    """The entries `sgdlab list` printed, in order: the first word of each unindented line."""
    return [line.split()[0] for line in capsys.readouterr().out.splitlines()
            if line and not line.startswith(" ")]


def test_a_paper_or_a_figure_finds_its_entries(capsys):
    """`sgdlab list zhu` and `sgdlab list 'zhu fig. 4'` were errors ("unknown experiment"):
    a reader looking for a figure had to read the whole catalogue."""
    assert main(["list", "zhu fig. 4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("zhu-projection-residual ") and "Fig. 4(b)" in out
    assert "run: sgdlab run zhu-projection-residual --scale cpu" in out
    assert main(["list", "ZHU"]) == 0
    names = _listed_names(capsys)
    assert len(names) == 9 and all(n.startswith("zhu-") for n in names)


def test_a_word_of_the_descriptions_or_measures_finds_entries_after_those_it_names(capsys):
    """`sgdlab list sharpness` found nothing: the search read the entries' lines alone. Their
    descriptions, claims and measured quantities are searched too (for the query as a
    phrase), their hits listed after those of the lines."""
    items = {e["name"]: e for e in catalogue()}
    assert "expected_sharpness" in items["zhu-large-network"]["measures"]
    assert "expected sharpness" in items["zhu-large-network"]["measures"]   # a claim's metric
    assert main(["list", "sharpness"]) == 0
    names = _listed_names(capsys)
    assert "zhu-large-network" in names and "zhu-rmsprop-sgd" in names
    assert all("sharpness" not in e["title"].lower() for e in items.values())
    # a title hit first: "Hessian" is in xing-hessian-norm's title, in zhu-escape-2d's
    # description only
    assert main(["list", "hessian"]) == 0
    names = _listed_names(capsys)
    assert "hessian" not in items["zhu-escape-2d"]["title"].lower()
    assert names.index("xing-hessian-norm") < names.index("zhu-escape-2d")
    # an instrument's name, as written or with spaces for its underscores; beyond the lines a
    # phrase, not words scattered over the prose
    for query in ("step_interpolation", "Step Interpolation"):
        assert main(["list", query]) == 0
        names = _listed_names(capsys)
        assert names == [n for n, e in items.items() if "step_interpolation" in e["measures"]]
    assert main(["list", "interpolation step"]) == 2


def test_an_exact_name_shows_that_entry_alone(capsys):
    assert main(["list", "xing-walk"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("xing-walk ") and "xing-walk-" not in out
    assert "run: sgdlab run xing-walk --scale cpu" in out


def test_an_entry_both_named_and_found_is_shown_once(capsys):
    assert main(["list", "xing-walk", "xing", "xing-walk"]) == 0
    names = _listed_names(capsys)
    assert names[0] == "xing-walk" and sorted(names) == sorted(set(names))
    assert set(names) == {e["name"] for e in catalogue() if e["name"].startswith("xing-")}


def test_an_entry_shown_in_full_lists_its_readings_and_marks_each_default(capsys):
    (entry,) = [e for e in catalogue() if e["name"] == "xing-walk"]
    assert main(["list"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("xing-walk ")]
    assert line.endswith(f"  [{len(entry['readings'])} readings]")
    assert main(["list", "xing-walk"]) == 0
    out = capsys.readouterr().out
    assert "readings]" not in out.splitlines()[0]     # listed in full below it instead
    shown = re.findall(r"--reading ([\w-]+)=([\w.-]+)( \(default\))?: ", out)
    assert shown == [(k, c, " (default)" if c == r["default"] else "")
                     for k, r in entry["readings"].items() for c in r["choices"]]


def test_nothing_found_is_still_an_error(capsys):
    assert main(["list", "fig. 99"]) == 2
    assert "unknown experiment 'fig. 99'" in capsys.readouterr().err


def test_a_blank_name_finds_nothing(capsys):
    # a query of no words matches every entry's text vacuously: not a search for everything
    assert main(["list", "  "]) == 2
    said = capsys.readouterr()
    assert "unknown experiment '  '" in said.err and said.out == ""


def test_a_misspelt_name_still_names_the_closest(capsys):
    assert main(["list", "zhu-escape2d"]) == 2
    assert "did you mean zhu-escape-2d" in capsys.readouterr().err


def test_the_catalogue_is_listed_by_name(capsys):
    # in the files' order chaudhari-entropy-sgd-rnn came before chaudhari-entropy-sgd
    assert main(["list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()
             if line.split() and "-" in line.split()[0] and line[0].isalpha()]
    assert len(names) >= 40 and names == sorted(names)
    assert names.index("chaudhari-entropy-sgd") < names.index("chaudhari-entropy-sgd-rnn")


RESULTS = Path(__file__).resolve().parents[2] / "docs" / "RESULTS.md"


def _page_times() -> tuple[dict[str, float], dict[str, float]]:
    """The cpu wall times, in minutes, that docs/RESULTS.md's opening names: ``({entry:
    minutes} of "The longest entries: ...", {entry: minutes} of the entries run after them)``."""
    text = " ".join(RESULTS.read_text().split("<!--")[0].split())
    longest = re.search(r"The longest entries: (.*?)\. A run's", text)
    assert longest, "docs/RESULTS.md no longer names its longest entries' times"
    found = re.findall(r"`([a-z0-9-]+)` (?:about )?(\d+)", longest.group(1))
    after = re.findall(r"`([a-z0-9-]+)`, ran after them on the same machine \(\d+ runs in "
                       r"(\d+) minutes (\d+) s", text)
    return ({n: float(m) for n, m in found},
            {n: int(m) + int(s) / 60 for n, m, s in after})


def test_the_cpu_times_listed_are_those_of_the_results_page():
    """`sgdlab list` reads the times from the catalogue files (docs/ is not shipped): they
    must stay those of the run docs/RESULTS.md reports."""
    longest, after = _page_times()
    assert len(longest) == 6 and len(after) == 1
    recorded = {i["name"]: i["wall_minutes"]["cpu"] for i in catalogue()
                if "cpu" in i["wall_minutes"]}
    assert set(recorded) == set(longest) | set(after)
    for name, minutes in {**longest, **after}.items():
        assert recorded[name] == pytest.approx(minutes, abs=0.05), name
    # the others are not among the longest: at most the shortest of them
    assert CPU_UNRECORDED_AT_MOST == min(longest.values())


def test_list_shows_each_entrys_cpu_time(capsys):
    """A newcomer could not tell an entry of seconds from one of twenty minutes before
    `sgdlab run NAME`."""
    assert main(["list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
            if line.split() and line[0].isalpha() and "-" in line.split()[0]}
    assert rows["chaudhari-hessian-spectrum"].split()[1:3] == ["~19", "min"]
    assert rows["zhu-gld-const-tuning"].split()[1:3] == ["~7", "min"]
    assert rows["xing-walk"].split()[1:3] == [f"≤{CPU_UNRECORDED_AT_MOST}", "min"]
    assert main(["list", "zhu-large-network"]) == 0
    assert "run: sgdlab run zhu-large-network --scale cpu --workers 2  (~9 min on 2 cores" \
        in capsys.readouterr().out
    assert main(["list", "--json", "zhu-large-network"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["wall_minutes"] == {"cpu": 9}


def test_a_time_under_a_minute_reads_in_seconds():
    assert cpu_time({"wall_minutes": {"cpu": 0.66}}) == "~40 s"
    assert cpu_time({"wall_minutes": {"cpu": 11.4}}) == "~11 min"
    assert cpu_time({"wall_minutes": {}}) == f"≤{CPU_UNRECORDED_AT_MOST} min"


def test_an_entry_shown_in_full_gives_its_description(capsys):
    # what the entry runs and checks was only in --json and the report: a reader choosing an
    # entry from `sgdlab list NAME` did not see it
    (entry,) = [e for e in catalogue() if e["name"] == "xing-walk"]
    assert main(["list", "xing-walk"]) == 0
    out = capsys.readouterr().out
    assert f"\n             description: {entry['description']}\n" in out
    assert entry["description"].startswith("Full-batch GD and SGD (batch 100)")


def test_json_gives_the_departures_derived_for_a_scale_that_lists_none(capsys):
    """A scale whose file lists no departures (xing-walk's smoke) has them derived from the
    config, as its report shows them; --json gave only the listed ones. A scale that lists its
    own (Musso's smoke, every cpu scale) has none derived. The one-line listing stays one line
    per entry."""
    from sgdlab.experiments.spec import load_experiment

    assert main(["list", "--json", "xing-walk", "musso-protocols"]) == 0
    walk, musso = json.loads(capsys.readouterr().out)
    derived = load_experiment("xing-walk", "smoke").derived_deviations()
    assert "dataset.name digits (paper: cifar10)" in derived
    assert walk["derived_deviations"] == {"smoke": derived}
    assert set(walk["deviations"]) == {"cpu", "paper"}
    assert musso["derived_deviations"] == {} and "smoke" in musso["deviations"]
    assert main(["list"]) == 0
    assert "(paper: " not in capsys.readouterr().out
