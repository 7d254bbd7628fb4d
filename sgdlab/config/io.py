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

from ..errors import (ConfigError, check_config_kind, check_not_empty,
                      not_a_config_file, read_config_text)
from ..yaml_loaders import config_loader, yaml_problem

CONFIG_SUFFIXES = (".yaml", ".yml", ".toml")


def parse_yaml(text: str, source: str = "<string>") -> Any:
    try:
        return yaml.load(text, Loader=config_loader())  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {yaml_problem(e, text)}") from None


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
    if p.is_dir():    # a run folder (its config.yaml), a folder of configs
        raise ConfigError(not_a_config_file(p, suffixes=CONFIG_SUFFIXES))
    # a misspelt name is most likely one of the files beside it or a packaged config
    raise ConfigError(f"{not_a_config_file(name_or_path, suffixes=CONFIG_SUFFIXES, also=packaged)}"
                      " and no packaged config of that name; packaged configs: "
                      f"{', '.join(packaged) or '(none)'}")


def _other_format(text: str, fmt: str) -> str:
    """``"; it reads as FMT: ..."`` when ``text``, refused in its file's format, is a mapping
    in format ``fmt`` (TOML in a .yaml file reads as one YAML string), else ``""``."""
    try:
        other = tomllib.loads(text) if fmt == "TOML" else yaml.load(text, Loader=config_loader())
    except (tomllib.TOMLDecodeError, yaml.YAMLError):
        return ""
    if not isinstance(other, dict) or not other:
        return ""
    suffix = ".toml" if fmt == "TOML" else ".yaml"
    return f"; it reads as {fmt}: give the file the suffix {suffix}"


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """The raw (unvalidated) config in a YAML/TOML file or packaged config. ``name`` defaults
    to the file's stem."""
    path = find_config(name_or_path)
    text = read_config_text(path)
    if path.suffix == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}{_other_format(text, 'YAML')}") \
                from None
    elif path.suffix in (".yaml", ".yml"):
        try:
            raw = parse_yaml(text, str(path))
        except ConfigError as e:      # "[data]" of a TOML table starts a YAML list
            raise ConfigError(f"{e}{_other_format(text, 'TOML')}") from None
    else:
        raise ConfigError(f"{path}: unknown config format {path.suffix!r}; use .yaml or .toml")
    check_not_empty(raw, "run", path)
    if not isinstance(raw, dict):
        hint = _other_format(text, "TOML") if path.suffix != ".toml" else ""
        raise ConfigError(f"{path}: the config must be a mapping at top level{hint}")
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
                                      f"[{k}]; {_whole_list(where)}")
            elif isinstance(k, int):
                raise ConfigError(f"--set {item!r}: {where or 'the config'} is not a list")
            last = i == len(steps) - 1
            if last:
                node[k] = value
            else:
                if isinstance(node, dict) and node.get(k) is None:
                    nxt = steps[i + 1]
                    if isinstance(nxt, int) or nxt.isdigit():
                        listed = _override_path(steps[:i + 1])
                        raise ConfigError(f"--set {item!r}: the config has no {listed} list; "
                                          f"[{nxt}] picks an entry of a list the config "
                                          f"gives; {_whole_list(listed)}")
                    node[k] = {}
                if not isinstance(node[k], (dict, list)):
                    raise ConfigError(f"--set {item!r}: {_override_path(steps[:i + 1])} is not "
                                      "a section")
                node = node[k]
    return out


def _whole_list(path: str) -> str:
    """How ``--set`` gives a list entries of its own (a packaged config has no file to add
    them to)."""
    example = "{name: hessian, every: 5}" if path == "measure" else "..."
    return f"--set '{path}=[{example}]' sets the whole list"


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


def dump_yaml_with_defaults(cfg: dict[str, Any], defaults: dict[str, dict[str, Any]]) -> str:
    """:func:`dump_yaml` of ``cfg`` with the entries of ``defaults`` (by the dotted path of a
    mapping in ``cfg``: ``optimizer``, ``model.options``) written under that mapping as
    comment lines ``# key: value  # default``: what it does not give and its callable takes
    by default. The YAML's data stays ``cfg`` (a run of it is the same run, stored with the
    same config); a line uncommented sets the value. A section that holds such a mapping is
    written a key per line, so that the comments can stand inside it; the others as
    :func:`dump_yaml` writes them."""
    out = []
    for key, value in cfg.items():
        if isinstance(value, dict) and _holds(key, defaults):
            out += _block(key, value, defaults, key, 0)
        else:
            out.append(dump_yaml({key: value}) if isinstance(value, (dict, list))
                       else _entry(key, value, 0)[0] + "\n")
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def _holds(path: str, defaults: dict[str, dict[str, Any]]) -> bool:
    return any(p == path or p.startswith(path + ".") for p in defaults)


def _entry(key: str, value: Any, indent: int) -> list[str]:
    """``key: value`` on one line (the value in flow style, unwrapped), indented."""
    if not isinstance(value, (dict, list)):       # a scalar as a mapping's: quoted as needed
        return [" " * indent + yaml.safe_dump({key: value}, default_flow_style=False,
                                              allow_unicode=True, width=1 << 20).rstrip("\n")]
    flow = yaml.safe_dump([value], default_flow_style=True, allow_unicode=True,
                          width=1 << 20).strip()[1:-1]    # (a list of one, unwrapped)
    return [" " * indent + f"{key}: {flow}"]


def _block(key: str, value: dict[str, Any], defaults: dict[str, dict[str, Any]], path: str,
           indent: int) -> list[str]:
    extra = defaults.get(path) or {}
    # an empty mapping stays {}: a bare "key:" would read as null
    lines = [" " * indent + (f"{key}:" if value else
                             f"{key}: {{}}" + ("  # none given; the defaults:" if extra else ""))]
    for k, v in value.items():
        sub = f"{path}.{k}"
        lines += (_block(k, v, defaults, sub, indent + 2) if isinstance(v, dict) and _holds(
            sub, defaults) else _entry(k, v, indent + 2))
    pad = " " * (indent + 2)
    lines += [f"{pad}# {line.strip()}  # default" for k, v in extra.items()
              for line in _entry(k, v, 0)]
    return lines
