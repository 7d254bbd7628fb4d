"""The package sgdlab.measure imports its measurements when first used: its names and
submodules are what the eager package gave."""
from __future__ import annotations

import importlib
import types

import sgdlab.measure as measure


def test_every_exported_name_and_submodule_resolves():
    for name in measure.__all__:
        value = getattr(measure, name)
        assert not isinstance(value, types.ModuleType), name
        assert value.__name__ == name and name in dir(measure)
    assert measure.walk.__name__ == "sgdlab.measure.walk"        # a submodule, by attribute
    assert not hasattr(measure, "no_such_measurement")


def test_batch_statistics_stays_the_function_once_its_module_is_imported():
    # the function shares its module's name: the import system sets the module as the
    # package's attribute on its first import (as here), which the eager package then
    # replaced by the function
    module = importlib.import_module("sgdlab.measure.batch_statistics")
    setattr(measure, "batch_statistics", module)
    from sgdlab.measure import batch_statistics

    assert isinstance(batch_statistics, types.FunctionType)
    assert batch_statistics is module.batch_statistics


def test_the_temperature_command_imports_no_torch():
    """What the lazy package is for: ``sgdlab.measure``, its temperature formulas and the
    ``sgdlab temperature`` command, whose arithmetic needs no tensors, run without torch."""
    from sgdlab.testing import fresh_python

    code = ("import sys\n"
            "import sgdlab.measure\n"
            "from sgdlab.measure import musso_temperature, solve_batch_size, solve_lr, "
            "temperatures\n"
            "from sgdlab.cli.main import main\n"
            "assert main(['temperature', '--lr', '0.1', '--batch-size', '32', "
            "'--match-lr', '64']) == 0\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n")
    out = fresh_python(code)
    assert out.splitlines()[-1] == "[]", out


def test_every_measurement_names_an_unknown_keyword_and_its_valid_ones():
    """The README's promise for every function of sgdlab.measure, not only those that pass
    their options on to an estimator: an unknown keyword is refused by the function's name,
    with the closest option and all of them, before anything is computed."""
    import inspect

    import pytest

    functions = [n for n in measure.__all__ if inspect.isfunction(getattr(measure, n))]
    assert len(functions) >= 50
    for name in functions:
        fn = getattr(measure, name)
        params = inspect.signature(fn).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue    # **kwargs of its own (not an estimator's options): any keyword is taken
        option = next(iter(params))
        with pytest.raises(TypeError) as e:
            fn(**{option + "x": 1})
        assert str(e.value).startswith(f"{name}() got an unexpected keyword argument "
                                       f"'{option}x' (did you mean {option}?); it takes "), name
