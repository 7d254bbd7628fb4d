"""Run configs: YAML/TOML data validated against pydantic models, built into a run.

``load_config(path_or_name) -> dict``, ``apply_overrides(raw, ["train.epochs=3"])``,
``validate_config(raw) -> dict`` (defaults filled; :class:`~sgdlab.errors.ConfigError` naming
each bad key path), ``build_from_config(cfg) -> BuiltRun``, ``json_schema()`` (for editors).
See :mod:`sgdlab.config.run` for the sections and :mod:`sgdlab.config.schema` for the error
messages.
"""
from .io import apply_overrides, dump_yaml, find_config, load_config, packaged_configs, parse_yaml
from .run import (BuiltRun, RunConfig, build_from_config, json_schema, resolve_device,
                  validate_config, validate_section)
from .schema import OpenSection, Section, validate

__all__ = ["BuiltRun", "OpenSection", "RunConfig", "Section", "apply_overrides",
           "build_from_config", "dump_yaml", "find_config", "json_schema", "load_config",
           "packaged_configs", "parse_yaml", "resolve_device", "validate", "validate_config",
           "validate_section"]
