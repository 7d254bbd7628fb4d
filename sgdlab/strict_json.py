"""Strict JSON for every file the lab writes and every JSON it prints.

Python's ``json`` writes a non-finite float as ``NaN`` / ``Infinity``, which is not JSON:
strict readers (``jq``, ``JSON.parse``, SQLite's ``json_extract``) refuse the whole document.
A diverged run has such values (its last losses, say); :func:`dumps` writes them as ``null``
and keeps ``allow_nan=False``, so a value that slips past the conversion raises instead of
being written. A reader that needs numbers back (an experiment's data files, read by its
analysis) takes :func:`nan_in_arrays`.

Where a reader must tell a non-finite number from a value that is missing (the run records of
``sgdlab runs export`` and ``sgdlab runs list|show --json``: a diverged loss of ``inf`` is not
a loss never measured), ``dumps(..., nonfinite="string")`` writes them as the strings
``"nan"``, ``"inf"`` and ``"-inf"`` instead (:data:`NONFINITE`), still strict JSON, and
:func:`nonfinite_from_strings` reads them back as floats. Light on purpose: it imports nothing
of the numerical stack.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from .atomic import write_whole

__all__ = ["NONFINITE", "dumps", "finite_or_none", "nan_in_arrays", "nonfinite_as_strings",
           "nonfinite_from_strings", "write_atomic"]

# the strings ``dumps(..., nonfinite="string")`` writes for the floats JSON has no number for
NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _replace_nonfinite(obj: Any, replace: Callable[[float], Any]) -> Any:
    if isinstance(obj, float):       # numpy's float64 too (a float subclass)
        return obj if math.isfinite(obj) else replace(obj)
    if isinstance(obj, dict):
        return {k: _replace_nonfinite(v, replace) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_replace_nonfinite(v, replace) for v in obj]
    return obj


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) in it, through dicts, lists and
    tuples, replaced by None (tuples become lists, as JSON writes them)."""
    return _replace_nonfinite(obj, lambda v: None)


def nonfinite_as_strings(obj: Any) -> Any:
    """``obj`` with every non-finite float in it, through dicts, lists and tuples, replaced
    by ``"nan"``, ``"inf"`` or ``"-inf"`` (:data:`NONFINITE`; tuples become lists)."""
    return _replace_nonfinite(obj, lambda v: "nan" if math.isnan(v) else
                              "inf" if v > 0 else "-inf")


def nonfinite_from_strings(obj: Any) -> Any:
    """``obj`` as read back from ``dumps(..., nonfinite="string")``: every string ``"nan"``,
    ``"inf"`` or ``"-inf"`` in it, through dicts and lists, is that float again. Apply it
    to the parts that hold numbers (a string setting spelled ``"inf"`` would become one)."""
    if isinstance(obj, str):
        return NONFINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: nonfinite_from_strings(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nonfinite_from_strings(v) for v in obj]
    return obj


def dumps(obj: Any, *, default: Callable[[Any], Any] | None = None, nonfinite: str = "null",
          **kwargs: Any) -> str:
    """``json.dumps(obj, **kwargs)`` with non-finite floats written as ``null``
    (``nonfinite="string"``: as ``"nan"``, ``"inf"``, ``"-inf"``); what ``default`` makes of
    an object (a numpy float32 through ``float``) is converted alike."""
    convert = {"null": finite_or_none, "string": nonfinite_as_strings}.get(nonfinite)
    if convert is None:
        raise ValueError(f"nonfinite={nonfinite!r}; use 'null' or 'string'")
    hook = None if default is None else (lambda o: convert(default(o)))
    return json.dumps(convert(obj), default=hook, allow_nan=False, **kwargs)


def write_atomic(path: str | os.PathLike, obj: Any, **kwargs: Any) -> Path:
    """``dumps(obj, **kwargs)`` written to ``path`` whole or not at all (a temporary file in
    the same folder, then ``os.replace``): a process killed while writing leaves the previous
    file, not a truncated one its readers cannot parse."""
    return write_whole(path, dumps(obj, **kwargs))


def nan_in_arrays(obj: Any) -> Any:
    """``obj`` as read back from :func:`dumps` with every None in an array (a list of
    numbers, None and such lists, at any depth of dicts and lists) replaced by NaN: there it
    was a non-finite float (an infinity reads back as NaN). Other Nones are kept."""
    if isinstance(obj, dict):
        return {k: nan_in_arrays(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return _filled(obj) if _numeric(obj) else [nan_in_arrays(v) for v in obj]
    return obj


def _numeric(items: list) -> bool:
    return all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
               or (isinstance(v, list) and _numeric(v)) for v in items)


def _filled(items: list) -> list:
    return [math.nan if v is None else _filled(v) if isinstance(v, list) else v for v in items]
