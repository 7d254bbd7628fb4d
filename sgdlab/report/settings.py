"""What differs between configs: ``sgdlab runs compare`` (run configs) and the comparison of
two experiment reports (their resolved grids, seeds and base configs).

Values are compared whole and cut to :data:`WIDTH` characters only to be shown (two lists that
differ in their last item are different settings, however long)."""
from __future__ import annotations

import json
import re

WIDTH = 40   # characters of a value shown in a table


def flat_config(cfg: object, prefix: str = "") -> dict[str, str]:
    """A config as ``{dotted.key: value}`` (lists of sections by index, ``measure[1].every``),
    other values as compact JSON, whole."""
    if isinstance(cfg, dict) and cfg:
        out: dict[str, str] = {}
        for k, v in cfg.items():
            out.update(flat_config(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(cfg, list) and cfg and all(isinstance(v, dict) for v in cfg):
        out = {prefix: f"{len(cfg)} items"}
        for i, v in enumerate(cfg):
            out.update(flat_config(v, f"{prefix}[{i}]"))
        return out
    text = cfg if isinstance(cfg, str) else json.dumps(cfg, default=str, separators=(", ", ": "))
    return {prefix: text}


def key_order(key: str) -> list:
    """Sort key reading list indices as numbers: ``measure[2]`` before ``measure[10]``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def differing_keys(flats: list[dict[str, str]]) -> list[str]:
    """The keys whose values differ between flattened configs (:func:`flat_config`), sorted;
    a list item (``measure[3]``) that some config lacks is one key, set in ``flats`` to the
    item's ``name`` where it is present, instead of one key per option."""
    differ = [k for k in sorted(set().union(*flats), key=key_order)
              if len({f.get(k, "—") for f in flats}) > 1]
    for root in dict.fromkeys(k.split("]")[0] + "]" for k in differ if "]" in k):
        if all(any(k.startswith(root + ".") for k in f) for f in flats):
            continue   # in every config: its differing options stay rows of their own
        for f in flats:
            if any(k.startswith(root + ".") for k in f):
                f[root] = f.get(root + ".name", "(set)")
        differ = sorted([k for k in differ if not k.startswith(root + ".")] + [root],
                        key=key_order)
    return differ


def shown(values: list[str], width: int = WIDTH) -> list[str]:
    """``values`` (one setting in several configs) cut to ``width`` characters for a table:
    their starts, or their ends where different values start alike."""
    heads = [v if len(v) <= width else v[:width - 1] + "…" for v in values]
    if len(set(heads)) == len(set(values)):
        return heads
    return [v if len(v) <= width else "…" + v[1 - width:] for v in values]
