"""What differs between configs, as the compare tables show it."""
from __future__ import annotations

from sgdlab.report.settings import WIDTH, departures, differing_keys, flat_config, shown


def test_values_that_differ_in_the_middle_are_cut_where_they_differ():
    """Two data paths that differ only in a middle folder were cut from the start and then
    from the end, and both read the same; the cut now keeps where they differ."""
    a = "data/" + "x" * 40 + "/A/" + "y" * 40 + ".npz"
    b = "data/" + "x" * 40 + "/B/" + "y" * 40 + ".npz"
    flats = [flat_config({"data": {"path": a}}), flat_config({"data": {"path": b}})]
    (key,) = differing_keys(flats)
    cut = shown([f[key] for f in flats])
    assert cut[0] != cut[1] and all(len(c) <= WIDTH for c in cut)
    assert "/A/" in cut[0] and "/B/" in cut[1]
    # a third value that is short, or lacking ("—"), is shown whole
    assert shown([a, b, "—"])[2] == "—"


def test_every_pair_of_different_values_stays_different():
    start, end = "p" * 30, "r" * 60
    values = [start + "Q" + end, start + "R" + end, "p" * 80 + "S" + "r" * 10,
              "p" * 80 + "T" + "r" * 10, "short"]
    cut = shown(values)
    assert len(set(cut)) == len(values) and all(len(c) <= WIDTH for c in cut)
    assert shown(values + values[:1]) == cut + cut[:1]     # equal values read equal
    # starts and ends suffice where they tell the values apart
    assert shown(["a" * 50 + "1", "b" * 50 + "1"]) == ["a" * 39 + "…", "b" * 39 + "…"]
    assert shown(["a" * 50 + "1", "a" * 50 + "2"]) == ["…" + "a" * 38 + "1", "…" + "a" * 38 + "2"]


def test_an_empty_section_is_a_setting_of_its_own():
    # `optimizer: {}` against a set optimizer: the empty one reads {}, not as if missing
    flats = [flat_config({"optimizer": {}}), flat_config({"optimizer": {"lr": 0.1}})]
    assert flats[0] == {"optimizer": "{}"}
    assert differing_keys(flats) == ["optimizer", "optimizer.lr"]


def test_a_value_that_is_the_start_of_another_is_cut_apart_from_it():
    # b extends a; c departs from a in the middle; starts and ends leave a and c equal, and a
    # window at the middle difference leaves a and b equal: a is cut at its end, where b
    # goes on
    s, t = "s" * 30, "t" * 45
    a, c = s + "A" + t, s + "C" + t
    b = a + "y" * 5
    cut = shown([a, b, c])
    assert len(set(cut)) == 3 and all(len(v) <= WIDTH for v in cut)
    assert cut[0] == "…" + a[1 - WIDTH:] and cut[1] == "…" + b[1 - WIDTH:]
    assert "C" in cut[2]


def test_departures_name_each_changed_setting_with_both_values():
    paper = {"base": {"epochs": 200, "dataset": {"name": "cifar10", "data_dir": "${data_dir}"}},
             "runs": [{"label": "sgd", "params": {"batch_size": 128}}, {"label": "gd"}],
             "grid": {}, "seeds": [0, 1],
             "options": {"claims": [{"less": ["a", "b"]}, {"less": ["c", "d"]}], "tol": 0.05}}
    smoke = {"base": {"epochs": 2, "dataset": {"name": "digits", "n_train": 256}},
             "runs": [{"label": "sgd", "params": {"batch_size": 64}}], "grid": {},
             "seeds": [0], "options": {"claims": [{"less": ["a", "b"]}], "tol": 0.05}}
    assert departures(smoke, paper, "paper") == [
        "dataset.n_train 256 (paper: not set)", "dataset.name digits (paper: cifar10)",
        "epochs 2 (paper: 200)", "run groups 'sgd' (paper: 'sgd', 'gd')",
        "run 'sgd': batch_size 64 (paper: 128)", "seeds [0] (paper: [0, 1])",
        # a list of another length: its count, not its items one by one
        "options.claims 1 item (paper: 2 items)"]
    assert departures(paper, paper, "paper") == []
