from __future__ import annotations

import pytest
import yaml
from yaml.constructor import ConstructorError

from sgdlab.yaml_loaders import MAX_EXPANDED_VALUES, strict_yaml_loader

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
