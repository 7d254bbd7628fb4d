"""Config sections as pydantic v2 models, with messages that name the key path.

A section is a :class:`Section` subclass: a strict pydantic model (no type coercion but int
to float, unknown keys rejected, no nan/inf); :class:`OpenSection` keeps unknown keys for a
later check against a registered callable's signature. :func:`validate` checks plain data
against a section and returns a dict with the defaults filled in, or raises
:class:`~sgdlab.errors.ConfigError` listing every problem, each prefixed by its key path::

    train.batch_size: must be >= 1, got 0
    optimizer.lrr: unknown key (did you mean lr?)

The JSON Schema of a section is pydantic's ``model_json_schema()``.
"""
from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from ..errors import config_error, did_you_mean, join, refused_value, unknown_key


class Section(BaseModel):
    """A config mapping with known keys: strict types, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class OpenSection(Section):
    """A section whose other keys are kept (arguments of the registered callable it names)."""

    model_config = ConfigDict(extra="allow")


def invalid(message: str) -> PydanticCustomError:
    """The error a field validator raises: printed as ``<key path>: <message>``."""
    return PydanticCustomError("sgdlab", "{message}", {"message": message})


def path_of(path: str, loc: Sequence[str | int]) -> str:
    for k in loc:
        path = join(path, k)
    return path


def describe_value(v: Any) -> str:
    return "null" if v is None else repr(v)


def _section_of(annotation: Any) -> type[Section] | None:
    """The Section model an annotation holds (``X``, ``X | None``, ``list[X]``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


def _locate(model: type[Section], loc: Sequence[str | int]):
    """(the model holding the last key of ``loc``, that key's FieldInfo or None)."""
    holder: type[Section] | None = model
    info = None
    for i, key in enumerate(loc):
        if isinstance(key, int) or holder is None:
            continue
        info = holder.model_fields.get(key)
        if info is None:
            return holder, None
        if i < len(loc) - 1:
            holder = _section_of(info.annotation)
    return holder, info


def _literal_choices(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [c for a in typing.get_args(annotation) for c in _literal_choices(a)]


_TYPE_WORDS = {
    "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}
_NUMBER_TYPES = frozenset({"int_type", "int_from_float", "int_parsing", "float_type",
                           "float_parsing"})
_BOUNDS = {"greater_than_equal": ("ge", ">="), "less_than_equal": ("le", "<="),
           "greater_than": ("gt", ">"), "less_than": ("lt", "<")}


def message(err: dict[str, Any], model: type[Section], path: str = "") -> str:
    """One pydantic error as ``<key path>: <problem>`` in the words of the old messages."""
    loc, kind, value = err["loc"], err["type"], err.get("input")
    where = path_of(path, loc) or (path or "config")
    if kind == "missing":
        _, info = _locate(model, loc)
        what = "section" if info is not None and _section_of(info.annotation) else "key"
        return f"{where}: required {what} is missing{_name_elsewhere(loc, value, model)}"
    if kind == "extra_forbidden":
        holder, _ = _locate(model, (*loc[:-1], ""))  # the section holding the unknown key
        known = list(holder.model_fields) if holder is not None else []
        nested = {name: list(sub.model_fields) for name, info in
                  (holder.model_fields.items() if holder is not None else ())
                  if (sub := _section_of(info.annotation)) is not None}
        return unknown_key(path_of(path, loc[:-1]), str(loc[-1]), known, nested)
    if kind in _TYPE_WORDS:
        if isinstance(value, bool) and kind in _NUMBER_TYPES:
            # the number it would be in Python is the value the rule refuses: say which rule
            return f"{where}: must be {_TYPE_WORDS[kind]}, {refused_value(value)}"
        return f"{where}: must be {_TYPE_WORDS[kind]}, got {describe_value(value)}"
    if kind == "finite_number":
        return f"{where}: must be a finite number, got {describe_value(value)}"
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return f"{where}: must be {op} {err['ctx'][key]}, got {describe_value(value)}"
    if kind == "literal_error":
        _, info = _locate(model, loc)
        choices = _literal_choices(info.annotation) if info is not None else []
        hint = did_you_mean(value, choices)
        listed = ", ".join(map(str, choices)) or err["ctx"].get("expected", "?")
        return f"{where}: must be one of {listed}, got {describe_value(value)}{hint}"
    if kind == "sgdlab":
        return f"{where}: {err['ctx']['message']}"
    return f"{where}: {err['msg']}"


_NAME_KEYS = frozenset({"type", "kind", "method", "algorithm", "optimizer", "model", "data",
                        "dataset", "instrument", "measure", "schedule"})


def _name_elsewhere(loc: Sequence[str | int], given: Any, model: type[Section]) -> str:
    """For a missing ``name`` whose section gives one under a key of its own (``instrument:
    hessian``, ``type: sgd``): `` (write name: hessian, not instrument: hessian)``, else
    ``""``. The stray key is otherwise kept as an argument of the callable
    the name would give, so no other message names it."""
    if not loc or loc[-1] != "name" or not isinstance(given, dict):
        return ""
    holder, _ = _locate(model, loc)
    fields = holder.model_fields if holder is not None else {}
    # a key that names the thing (type: sgd), not an option of it with a word for a value
    # (split: test, sigma_h2_rule: fixed): that one is meant, and the name merely forgotten
    stray = [(k, v) for k, v in given.items()
             if k not in fields and k in _NAME_KEYS and isinstance(v, str)]
    if len(stray) != 1:
        return ""
    key, value = stray[0]
    return f" (write name: {value}, not {key}: {value})"


def problems(exc: ValidationError, model: type[Section], path: str = "") -> list[str]:
    return [message(e, model, path) for e in exc.errors(include_url=False)]


def validate(value: Any, model: type[Section], *, path: str = "",
             errors: list[str] | None = None) -> dict[str, Any] | None:
    """``value`` checked against section ``model``, as a dict with defaults filled in.

    With ``errors`` given, messages are appended there (and None returned on failure);
    otherwise a :class:`ConfigError` with all of them is raised."""
    if value is None:
        value = {}
    try:
        return model.model_validate(value).model_dump()
    except ValidationError as e:
        found = problems(e, model, path)
    if errors is None:
        raise config_error(found)
    errors.extend(found)
    return None


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


__all__ = ["OpenSection", "Section", "describe_value", "invalid", "message", "path_of",
           "plain_data", "problems", "validate"]
