"""The ``memory_budget`` option as every place that takes one reads it
(:func:`sgdlab.measure.passes.memory_budget_bytes`)."""
import re

import numpy as np
import pytest
import torch

from sgdlab.measure.passes import memory_budget_bytes, resolved_budget


@pytest.mark.parametrize("value,expected", [
    (None, None),                       # the device's default
    (1, 1),
    (4096, 4096),
    (np.int64(4096), 4096),
    (2e9, 2_000_000_000),               # YAML reads 2e9 and 1.5e9 as floats
    (1.5e9, 1_500_000_000),
    (np.float64(2e9), 2_000_000_000),
    ("4096", 4096),
    ("2e9", 2_000_000_000),             # a CLI argument, or a YAML string
    ("1.5E9", 1_500_000_000),
    ("512MiB", 512 * 2**20),
    ("2GiB", 2 * 2**30),
    ("1.5GiB", 3 * 2**29),
    ("0.5KiB", 512),
    ("1TiB", 2**40),
    ("100B", 100),
    ("1kB", 1000),
    ("1.1GB", 1_100_000_000),
    ("1.005kB", 1005),                  # exact: 1.005 * 1000 in floats is 1004.9999999999999
    ("2MB", 2_000_000),
    ("3TB", 3 * 10**12),
    (" 1.5 gib ", 3 * 2**29),           # spaces around and between, units in any case
])
def test_memory_budget_bytes_reads_integers_floats_and_sizes(value, expected):
    got = memory_budget_bytes(value)
    assert got == expected and (got is None or type(got) is int)


@pytest.mark.parametrize("value,problem", [
    (0, "must be >= 1"),
    (-1, "must be >= 1"),
    (0.0, "must be >= 1"),
    ("-2GiB", "must be >= 1"),
    ("0MiB", "must be >= 1"),
    (0.5, "not a whole number of bytes"),
    (1.5, "not a whole number of bytes"),
    (2e9 + 0.5, "not a whole number of bytes"),
    ("1.5", "not a whole number of bytes"),
    ("0.3KiB", "not a whole number of bytes"),          # 307.2 bytes
    ("2XB", "unknown unit 'XB'"),
    ("2G", "unknown unit 'G'"),
    ("2 GiBs", "unknown unit 'GiBs'"),
    ("GiB", "not a number of bytes"),
    ("", "not a number of bytes"),
    ("1/2GiB", "not a number of bytes"),
    ("2GiB 3MiB", "not a number of bytes"),
    ("1e1000", "not a number of bytes"),                # no 10**1000 computed to refuse it
    ("inf", "not a number of bytes"),
    (float("inf"), "not finite"),
    (float("nan"), "not finite"),
    (True, "a bool is no size"),
    (False, "a bool is no size"),
    ([1024], "a list is no size"),
    ({"GiB": 1}, "a dict is no size"),
])
def test_memory_budget_bytes_names_the_option_the_value_and_the_problem(value, problem):
    with pytest.raises(ValueError) as e:
        memory_budget_bytes(value, "--memory-budget")
    assert str(e.value).startswith(f"Invalid --memory-budget={value!r} ({problem}; bytes: ")
    assert "512MiB" in str(e.value)                     # the rule says what would do


def test_the_measurements_read_the_budget_as_the_options_do():
    """``resolved_budget``, which every measurement taking ``memory_budget=`` calls, applies
    the same rule (it had its own: an int >= 1)."""
    assert resolved_budget("1MiB", "cpu") == 2**20
    assert resolved_budget(2e9, "cpu") == 2_000_000_000
    assert resolved_budget(None, "cpu") == 2**30
    with pytest.raises(ValueError, match=re.escape("Invalid memory_budget=0 (must be >= 1")):
        resolved_budget(0, torch.device("cpu"))
