"""What differs between configs, as the compare tables show it."""
from __future__ import annotations

from sgdlab.report.settings import WIDTH, differing_keys, flat_config, shown


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
