"""Run configs: YAML/TOML data validated against a declarative schema, built into a run.

``load_config(path_or_name) -> dict``, ``apply_overrides(raw, ["train.epochs=3"])``,
``validate_config(raw) -> dict`` (defaults filled; :class:`~sgdlab.errors.ConfigError` naming
each bad key path), ``build_from_config(cfg) -> BuiltRun``. See :mod:`sgdlab.config.run` for the
sections and :mod:`sgdlab.config.schema` for the engine.
"""
from .io import apply_overrides, dump_yaml, find_config, load_config, packaged_configs, parse_yaml
from .run import RUN_SCHEMA, BuiltRun, build_from_config, resolve_device, validate_config
from .schema import REQUIRED, Field, Section, validate

__all__ = ["REQUIRED", "RUN_SCHEMA", "BuiltRun", "Field", "Section", "apply_overrides",
           "build_from_config", "dump_yaml", "find_config", "load_config", "packaged_configs",
           "parse_yaml", "resolve_device", "validate", "validate_config"]
