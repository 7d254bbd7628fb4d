"""What differs between configs: ``sgdlab runs compare`` (run configs), the comparison of
two experiment reports (their resolved grids, seeds and base configs) and a scale's departures
from the paper scale (:func:`departures`).

Values are compared whole and cut to :data:`WIDTH` characters only to be shown (two lists that
differ in their last item are different settings, however long), and cut where they differ
(:func:`shown`), so that two different values never read the same."""
from __future__ import annotations

import json
import re

WIDTH = 40   # characters of a value shown in a table
ITEMS = re.compile(r"\d+ items?")


def items(n: int) -> str:
    """How a list of sections reads in a flattened config: ``1 item``, ``3 items``."""
    return f"{n} item" if n == 1 else f"{n} items"


def flat_config(cfg: object, prefix: str = "") -> dict[str, str]:
    """A config as ``{dotted.key: value}`` (lists of sections by index, ``measure[1].every``),
    other values as compact JSON, whole."""
    if isinstance(cfg, dict) and cfg:
        out: dict[str, str] = {}
        for k, v in cfg.items():
            out.update(flat_config(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(cfg, list) and cfg and all(isinstance(v, dict) for v in cfg):
        out = {prefix: items(len(cfg))}
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
    """``values`` (one setting in several configs) cut to ``width`` characters for a table,
    so that different values still read differently: their starts, else their ends, else
    each from where it departs from the value closest to it (two paths that differ only in a
    middle folder); values that no cut tells apart are shown whole."""
    if all(len(v) <= width for v in values):
        return list(values)
    distinct = len(set(values))
    tails = [v if len(v) <= width else "…" + v[1 - width:] for v in values]
    # where each value departs from the one sharing the longest start with it
    departs = {v: max((_first_difference(v, w) for w in set(values) if w != v), default=0)
               for v in set(values)}
    # a little of what comes before the difference, then the difference
    windows = [_window(v, departs[v] - width // 4, width) for v in values]
    tries = [[_window(v, 0, width) for v in values], tails, windows]
    for cut in tries:
        if len(set(cut)) == distinct:
            return cut
    return list(values)


def _first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _window(v: str, start: int, width: int) -> str:
    """``width`` characters of ``v`` from about ``start``, "…" marking what is cut."""
    if len(v) <= width:
        return v
    if start <= 0:
        return v[:width - 1] + "…"
    if start + width - 1 >= len(v):
        return "…" + v[1 - width:]
    return "…" + v[start:start + width - 2] + "…"


# a setting one config lacks: the procedure's default applies
NOT_SET = "not set"
# where a scale reads its data from ``--data-dir`` (spec.py's placeholder)
DATA_DIR = "${data_dir}"


def departures(mine: dict, reference: dict, name: str) -> list[str]:
    """Each setting of the resolved experiment config ``mine`` (``{base, runs, grid, seeds,
    options}``, as results.json records it) that differs from ``reference``'s, as "KEY VALUE
    (NAME: VALUE)": the base config's keys bare (``epochs 1 (paper: 200)``), a run group's
    ``run LABEL: KEY``, then ``grid.KEY``, ``seeds`` and ``options.KEY``. Run groups that only
    one config has are named once, not key by key."""
    out: list[str] = []

    def compare(prefix: str, a: dict[str, str], b: dict[str, str]) -> None:
        flats = [a, b]
        differ = differing_keys(flats)
        # lists of different lengths (``options.claims``): their counts, not index by index
        resized = [k for k in differ if all(ITEMS.fullmatch(f.get(k, "")) for f in flats)]
        for k in differ:
            values = [f.get(k, NOT_SET) for f in flats]
            if any(k.startswith(r + "[") for r in resized) or (
                    values[0] == NOT_SET and DATA_DIR in values[1]):
                continue    # the data's name says what differs, not where it is read from
            ours, theirs = shown(values)
            out.append(f"{prefix}{k} {ours} ({name}: {theirs})")

    def flat(value: object, prefix: str = "") -> dict[str, str]:
        return flat_config(value, prefix) if value not in (None, {}, []) else {}

    compare("", flat(mine.get("base")), flat(reference.get("base")))
    groups = [{g.get("label", ""): g.get("params") for g in c.get("runs") or []}
              for c in (mine, reference)]
    if set(groups[0]) != set(groups[1]):
        ours, theirs = (", ".join(repr(label) for label in g) or "none" for g in groups)
        out.append(f"run groups {ours} ({name}: {theirs})")
    for label in (lb for lb in groups[0] if lb in groups[1]):
        compare(f"run {label!r}: ", flat(groups[0][label]), flat(groups[1][label]))
    for key in ("grid", "seeds", "options"):
        compare("", flat(mine.get(key), key), flat(reference.get(key), key))
    return out
