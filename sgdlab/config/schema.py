"""A small declarative schema engine for configs (plain data: dicts, lists, scalars).

A :class:`Section` maps keys to :class:`Field` s or nested sections; :func:`validate` returns a
new dict with defaults filled in, or raises :class:`~sgdlab.errors.ConfigError` listing every
problem, each prefixed by the full key path::

    train.batch_size: must be >= 1, got 0
    optimizer.lrr: unknown key (did you mean lr?)
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               list: "a list", dict: "a mapping"}


@dataclass
class Field:
    """One value: ``type`` (int, float, str, bool, list, dict, or a tuple of them), a default
    (``REQUIRED`` if none), optional ``min``/``max`` (inclusive), ``choices``, ``nullable``
    (accepts null/None), and ``item`` (a Field or Section every list element must match)."""

    type: type | tuple[type, ...]
    default: Any = REQUIRED
    min: float | None = None
    max: float | None = None
    choices: Sequence[Any] | None = None
    nullable: bool = False
    item: "Field | Section | None" = None
    doc: str = ""


@dataclass
class Section:
    """A mapping with known keys. ``extra`` (optional) validates the keys not in ``fields``:
    ``extra(path, values, errors) -> dict`` returns the accepted extra entries and appends
    messages to ``errors``; without it unknown keys are errors. ``check`` runs last on the
    validated mapping (cross-field rules) and appends to ``errors``."""

    fields: dict[str, "Field | Section"]
    extra: Callable[[str, dict[str, Any], list[str]], dict[str, Any]] | None = None
    check: Callable[[str, dict[str, Any], list[str]], None] | None = None
    optional: bool = True   # may be absent (then built from defaults)
    doc: str = ""


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def unknown_key(path: str, key: str, known: Sequence[str]) -> str:
    """``path.key: unknown key (did you mean x?)`` or listing the valid keys."""
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else (
        f"valid keys: {', '.join(sorted(known))}" if known else "no keys allowed here")
    return f"{join(path, key)}: unknown key ({hint})"


def describe_value(v: Any) -> str:
    return "null" if v is None else repr(v)


def check_value(path: str, spec: Field, value: Any, errors: list[str]) -> Any:
    """Validate one value against ``spec``; returns the (possibly converted) value."""
    if value is None:
        if spec.nullable or (spec.default is None):
            return None
        errors.append(f"{path}: must not be null")
        return None
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    converted = _convert(value, types)
    if converted is _BAD:
        want = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        errors.append(f"{path}: must be {want}, got {describe_value(value)}")
        return value
    value = converted
    if spec.choices is not None and value not in spec.choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in spec.choices], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        errors.append(f"{path}: must be one of {', '.join(map(str, spec.choices))}, got "
                      f"{describe_value(value)}{hint}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            errors.append(f"{path}: must be a number, got nan")
        if spec.min is not None and value < spec.min:
            errors.append(f"{path}: must be >= {spec.min}, got {value}")
        if spec.max is not None and value > spec.max:
            errors.append(f"{path}: must be <= {spec.max}, got {value}")
    if isinstance(value, list) and spec.item is not None:
        value = [_validate_any(join(path, i), spec.item, v, errors) for i, v in enumerate(value)]
    return value


_BAD = object()


def _convert(value: Any, types: tuple[type, ...]) -> Any:
    for t in types:
        if t is bool:
            if isinstance(value, bool):
                return value
        elif t is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif t is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif t is list:
            if isinstance(value, (list, tuple)):
                return list(value)
        elif t is dict:
            if isinstance(value, dict):
                return dict(value)
        elif isinstance(value, t):
            return value
    return _BAD


def _validate_any(path: str, spec: Field | Section, value: Any, errors: list[str]) -> Any:
    if isinstance(spec, Section):
        return validate(value, spec, path=path, errors=errors)
    return check_value(path, spec, value, errors)


def validate(value: Any, section: Section, *, path: str = "",
             errors: list[str] | None = None) -> dict[str, Any]:
    """Validate mapping ``value`` against ``section``. With ``errors`` given, messages are
    appended there; otherwise a :class:`ConfigError` with all of them is raised."""
    top = errors is None
    errs: list[str] = [] if errors is None else errors
    if value is None:
        value = {}
    if not isinstance(value, dict):
        errs.append(f"{path or 'config'}: must be a mapping, got {describe_value(value)}")
        value = {}
    out: dict[str, Any] = {}
    for key, spec in section.fields.items():
        p = join(path, key)
        if key in value:
            out[key] = _validate_any(p, spec, value[key], errs)
        elif isinstance(spec, Section):
            if spec.optional:
                out[key] = validate({}, spec, path=p, errors=errs)
            else:
                errs.append(f"{p}: required section is missing")
                out[key] = {}
        elif spec.default is REQUIRED:
            errs.append(f"{p}: required key is missing")
        else:
            d = spec.default
            out[key] = d.copy() if isinstance(d, (list, dict)) else d
    extra = {k: v for k, v in value.items() if k not in section.fields}
    if extra:
        if section.extra is None:
            for k in extra:
                errs.append(unknown_key(path, k, list(section.fields)))
        else:
            out.update(section.extra(path, extra, errs))
    if section.check is not None:
        section.check(path, out, errs)
    if top and errs:
        raise config_error(errs)
    return out


def config_error(errors: list[str]) -> ConfigError:
    if len(errors) == 1:
        return ConfigError(errors[0])
    return ConfigError(f"{len(errors)} problems in the config:\n  " + "\n  ".join(errors))


def plain_data(path: str, value: Any, errors: list[str]) -> None:
    """Configs are data: only null, bools, numbers, strings, lists and mappings."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            plain_data(join(path, i), v, errors)
    elif isinstance(value, dict):
        for k, v in value.items():
            plain_data(join(path, str(k)), v, errors)
    else:
        errors.append(f"{path}: must be plain data, got {type(value).__name__}")


__all__ = ["REQUIRED", "Field", "Section", "check_value", "config_error", "join",
           "plain_data", "unknown_key", "validate"]
