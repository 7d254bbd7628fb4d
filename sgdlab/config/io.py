"""Reading run configs: YAML or TOML files (data only), packaged configs by name, and
``key=value`` overrides from the command line."""
from __future__ import annotations

import copy
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import (ConfigError, check_config_kind, check_not_empty, did_you_mean,
                      read_config_text)
from ..yaml_loaders import config_loader, yaml_problem

CONFIG_SUFFIXES = (".yaml", ".yml", ".toml")


def parse_yaml(text: str, source: str = "<string>") -> Any:
    try:
        return yaml.load(text, Loader=config_loader())  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {yaml_problem(e)}") from None


def packaged_configs() -> dict[str, Path]:
    """Configs shipped with sgdlab (``sgdlab/configs/*.yaml|toml``), by stem."""
    root = resources.files("sgdlab") / "configs"
    out = {}
    if root.is_dir():
        for f in root.iterdir():
            if f.name.endswith(CONFIG_SUFFIXES):
                out[f.name.rsplit(".", 1)[0]] = Path(str(f))
    return dict(sorted(out.items()))


def find_config(name_or_path: str | Path) -> Path:
    """A config file path, or the packaged config of that name."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    packaged = packaged_configs()
    if str(name_or_path) in packaged:
        return packaged[str(name_or_path)]
    # a misspelt name is most likely one of the files beside it or a packaged config
    try:
        beside = [f.name if str(p.parent) == "." else str(p.parent / f.name)
                  for f in p.parent.iterdir() if f.name.endswith(CONFIG_SUFFIXES)]
    except OSError:
        beside = []
    raise ConfigError(f"no config file {str(name_or_path)!r}"
                      f"{did_you_mean(name_or_path, [*beside, *packaged])} and no packaged "
                      f"config of that name; packaged configs: {', '.join(packaged) or '(none)'}")


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """The raw (unvalidated) config in a YAML/TOML file or packaged config. ``name`` defaults
    to the file's stem."""
    path = find_config(name_or_path)
    text = read_config_text(path)
    if path.suffix == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    elif path.suffix in (".yaml", ".yml"):
        raw = parse_yaml(text, str(path))
    else:
        raise ConfigError(f"{path}: unknown config format {path.suffix!r}; use .yaml or .toml")
    check_not_empty(raw, "run", path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping at top level")
    check_config_kind(raw, "run", path)
    raw.setdefault("name", path.stem)
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``raw`` with ``key.path=value`` overrides applied (values parsed as YAML, so
    ``train.epochs=3``, ``optimizer.lr=1e-2``, ``train.replacement=true``, ``model.options.
    widths=[32,32]`` work); ``[i]`` (or ``.i``) picks an entry of a list already in the config:
    ``measure[0].every=5``."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        steps = _override_steps(key)
        if not sep or not steps:
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. train.epochs=3 "
                              "or measure[0].every=5")
        value = parse_yaml(text, f"--set {key}") if text.strip() else None
        node: Any = out
        for i, k in enumerate(steps):
            where = _override_path(steps[:i])
            if isinstance(node, list):
                if not (isinstance(k, int) or k.isdigit()):
                    raise ConfigError(f"--set {item!r}: {where} is a list: pick an entry, "
                                      f"{where}[0]")
                k = int(k)
                if k >= len(node):
                    raise ConfigError(f"--set {item!r}: {where} has {len(node)} entries, no "
                                      f"[{k}]")
            elif isinstance(k, int):
                raise ConfigError(f"--set {item!r}: {where or 'the config'} is not a list")
            last = i == len(steps) - 1
            if last:
                node[k] = value
            else:
                if isinstance(node, dict) and node.get(k) is None:
                    nxt = steps[i + 1]
                    if isinstance(nxt, int) or nxt.isdigit():
                        raise ConfigError(f"--set {item!r}: the config has no "
                                          f"{_override_path(steps[:i + 1])} list; [{nxt}] "
                                          "picks an entry of a list in the config file, so "
                                          "write the list there")
                    node[k] = {}
                if not isinstance(node[k], (dict, list)):
                    raise ConfigError(f"--set {item!r}: {_override_path(steps[:i + 1])} is not "
                                      "a section")
                node = node[k]
    return out


def _override_steps(key: str) -> list[str | int]:
    """``measure[0].every`` -> ["measure", 0, "every"]; [] when malformed."""
    steps: list[str | int] = []
    for part in key.split("."):
        m = re.fullmatch(r"([^\[\]]+)((?:\[\d+\])*)", part)
        if m is None:
            return []
        steps.append(m[1])
        steps += [int(i) for i in re.findall(r"\[(\d+)\]", m[2])]
    return steps


def _override_path(steps: list[str | int]) -> str:
    out = ""
    for k in steps:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else k)
    return out


def dump_yaml(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, allow_unicode=True)
