from __future__ import annotations

import pytest
import yaml
from yaml.constructor import ConstructorError

from sgdlab.yaml_loaders import MAX_EXPANDED_VALUES, config_loader, strict_yaml_loader

# the C composer where there is one: a 100,000-item document composes in a fraction of a second
LOADER = strict_yaml_loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def test_a_long_list_written_out_is_read_though_it_passes_the_alias_limit():
    # it was refused as an alias bomb: the limit counted every value, aliases or none
    n = MAX_EXPANDED_VALUES + 1
    assert yaml.load("x: [" + ", ".join(["0"] * n) + "]\n", Loader=LOADER) == {"x": [0] * n}


def test_aliases_that_add_more_values_than_the_limit_are_refused():
    # a list of 10 items repeated 10,000 times: 110,015 values from 15 written out
    text = "a: &a [" + ", ".join(["0"] * 10) + "]\nb: [" + ", ".join(["*a"] * 10_000) + "]\n"
    with pytest.raises(ConstructorError, match=r"aliases expand this document to 110,015 "
                       r"values, more than the 100,000 a config may add to the 15 it writes"):
        yaml.load(text, Loader=LOADER)


def _config(text: str):
    return yaml.load(text, Loader=config_loader())


def test_exponent_floats_of_either_sign_are_numbers():
    # YAML 1.1 reads 1e-3 as a string; a config's lr: 1e-3 is a number
    assert _config("a: 1e-3\nb: -1e-3\nc: +2E4\nd: .5e-1\ne: 1.5e2\nf: 3\ng: -.inf\n") == {
        "a": 0.001, "b": -0.001, "c": 20000.0, "d": 0.05, "e": 150.0, "f": 3,
        "g": float("-inf")}
    assert isinstance(_config("x: 2e3")["x"], float)
    assert _config("x: e3\ny: 1e\n") == {"x": "e3", "y": "1e"}


def test_a_key_given_twice_is_refused_naming_both_lines():
    with pytest.raises(ConstructorError, match=r"key 'lr' is given twice \(first on line 2\)"):
        _config("optimizer:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.2\n")
    assert _config("a: {lr: 1}\nb: {lr: 2}\n") == {"a": {"lr": 1}, "b": {"lr": 2}}


def test_a_recursive_alias_is_refused_and_a_shared_one_read():
    with pytest.raises(ConstructorError, match="recursive alias"):
        _config("a: &x [1, *x]\n")
    assert _config("a: &x [1, 2]\nb: [*x, *x]\n") == {"a": [1, 2], "b": [[1, 2], [1, 2]]}


def test_aliases_adding_exactly_the_limit_are_read_and_one_more_value_refused():
    # written: the document, key a, a's list and its 9 items, key b, b's list: 14 values; each
    # alias of a adds its 10 again: 10,000 aliases add 100,000, the limit, which is allowed
    def doc(n: int) -> str:
        return "a: &a [" + ", ".join(["0"] * 9) + "]\nb: [" + ", ".join(["*a"] * n) + "]\n"

    assert len(yaml.load(doc(10_000), Loader=LOADER)["b"]) == 10_000
    with pytest.raises(ConstructorError, match="expand this document to 100,024 values"):
        yaml.load(doc(10_001), Loader=LOADER)


def test_a_signed_fraction_without_a_leading_digit_is_a_number():
    # YAML 1.1 reads .5 as 0.5 but -.5 as the string '-.5' (YAML 1.2 reads both as numbers):
    # a landscape's start [-.5, 1] or a gamma of -.5e-1 was text where a number was meant
    assert _config("a: -.5\nb: +.5e-1\nc: [-.5, .5]\n") == {"a": -0.5, "b": 0.05,
                                                            "c": [-0.5, 0.5]}
    assert _config("x: -.\ny: -.e3\n") == {"x": "-.", "y": "-.e3"}


@pytest.mark.parametrize("text, where", [
    ("name: x\nbase:\n\tepochs: 2\n", "line 3, column 1"),
    ("seeds: [0,\t1]\n", "line 1, column 11"),
    ("base:\n  epochs:\t2\n", "line 2, column 10"),
])
def test_a_tab_is_named_as_one_where_the_scanner_stops(text, where):
    # libyaml said "found character that cannot start any token", the tab left out
    from sgdlab.yaml_loaders import yaml_problem

    with pytest.raises(yaml.YAMLError) as e:
        _config(text)
    assert yaml_problem(e.value, text) == (
        f"{where}: not valid YAML: a tab character, which YAML does not take for "
        "indentation or between items: write spaces instead")
    # without the text, the scanner's own words
    assert "a tab" not in yaml_problem(e.value)
