"""Which of a catalogue entry's readings take a stored run (``sgdlab runs
list|show|export|delete``).

A run whose config no reading changes is one stored run (one run key) for every reading that
leaves it so, and its record keeps only the ``sgdlab run`` command that first ran it: a run
has no reading of its own. What it has is the set of readings whose sweep, at the run's
scale, includes its key: each choice off its default alone (the others at theirs), as
``sgdlab run NAME --reading KEY=CHOICE`` expands it (:meth:`ExperimentSpec.expand`), and the
defaults.

A run of an entry that reads real data holds its ``--data-dir`` in its key (the absolute
path, :func:`sgdlab.experiments.spec._substitute`); the store keeps no data dir of its own,
so each one is read back from the stored runs' params, where the expanded runs hold
``${data_dir}`` (:func:`_data_dirs`)."""
from __future__ import annotations

from typing import Any

from sgdlab.experiments.spec import (catalogue_files, catalogue_name, choose_readings,
                                     load_experiment, read_file)

DEFAULT = "default"
# stands for --data-dir in the expanded params whose data dirs are read back from the store
_DATA_DIR = "/<data-dir>"


def entry_data(name: str) -> dict[str, Any]:
    """The data of the catalogue entry ``name``'s file; a ConfigError naming the closest
    entries for a name the catalogue lacks."""
    return read_file(catalogue_files()[catalogue_name(name)])


def entry_readings(name: str) -> dict[str, Any]:
    """The ``readings`` table of the catalogue entry ``name`` ({} for none), refused as by
    :func:`entry_data`."""
    return entry_data(name).get("readings") or {}


def check_choices(name: str, readings: dict[str, str]) -> None:
    """A ConfigError naming the entry's readings (or that it has none) for an unknown
    reading or choice of ``readings`` (``{reading: choice}``), as ``sgdlab run`` refuses it."""
    choose_readings(entry_data(name), readings)


def reading_names(table: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``"default"`` -> {}, then ``"KEY=CHOICE"`` -> ``{KEY: CHOICE}`` for each choice other
    than its reading's default, in the file's order."""
    out: dict[str, dict[str, str]] = {DEFAULT: {}}
    for key, r in table.items():
        out.update({f"{key}={c}": {key: c} for c in r["choices"] if c != r["default"]})
    return out


def reading_name(table: dict[str, Any], readings: dict[str, str]) -> str | None:
    """The name (:func:`reading_names`) of ``readings`` (``{reading: choice}``) of an entry's
    readings ``table``: ``"default"`` where every choice is its reading's default, ``KEY=CHOICE``
    for the one that is not; None for two or more off their defaults, which no name has."""
    off = [f"{k}={c}" for k, c in readings.items() if c != table[k]["default"]]
    return DEFAULT if not off else off[0] if len(off) == 1 else None


def sweep_keys(name: str, scale: str, readings: dict[str, str], runs: list[dict]) -> set[str]:
    """The run keys of the sweep of entry ``name`` at ``scale`` under ``readings`` (the
    defaults for the others), with each data dir that ``runs`` (stored runs, their configs
    parsed) were run with."""
    spec = load_experiment(name, scale, readings)
    placeholder = spec.expand(_DATA_DIR)
    expanded = {(r.label, r.seed): r.params for r in placeholder}
    dirs: set[str] = set()
    for run in runs:
        cfg = run.get("config")
        if isinstance(cfg, dict) and (cfg.get("label"), cfg.get("seed")) in expanded:
            dirs |= _data_dirs(expanded[(cfg["label"], cfg["seed"])], cfg.get("params"))
    if not dirs:    # the placeholder's keys, which no stored run has (unless it reads no data)
        return {r.key for r in placeholder}
    return {r.key for d in dirs for r in spec.expand(d)}


def _data_dirs(expanded: Any, stored: Any) -> set[str]:
    """The data dirs ``stored`` params hold where the ``expanded`` ones hold :data:`_DATA_DIR`
    (``/<data-dir>/cifar10`` beside ``/data/cifar10``: ``/data``)."""
    if isinstance(expanded, dict) and isinstance(stored, dict):
        return set().union(*(_data_dirs(expanded[k], stored[k])
                             for k in expanded.keys() & stored.keys()))
    if isinstance(expanded, list) and isinstance(stored, list):
        return set().union(*(_data_dirs(e, s) for e, s in zip(expanded, stored)))
    if isinstance(expanded, str) and isinstance(stored, str) and _DATA_DIR in expanded:
        before, _, after = expanded.partition(_DATA_DIR)
        if (stored.startswith(before) and stored.endswith(after)
                and len(stored) > len(before) + len(after)):
            return {stored[len(before):len(stored) - len(after)]}
    return set()


def _keyed_by_scale(runs: list[dict]) -> dict[str, list[tuple[str, dict]]]:
    """Scale -> (run key, run) of each stored run of a sweep among ``runs``, scales sorted;
    another command's runs are left out."""
    out: dict[str, list[tuple[str, dict]]] = {}
    for run in runs:
        cfg = run.get("config")
        if isinstance(cfg, dict) and cfg.get("run_key") and cfg.get("scale"):
            out.setdefault(str(cfg["scale"]), []).append((str(cfg["run_key"]), run))
    return dict(sorted(out.items()))


def runs_readings(name: str, runs: list[dict]) -> dict[str, list[str]]:
    """Run id -> the names (:func:`reading_names`) of the readings whose sweep at the run's
    scale includes it, for the stored ``runs`` of catalogue entry ``name`` (empty for a run
    that none includes: one of another version of the entry, or of an edited copy); {} when
    ``name`` is no catalogue entry or has no readings."""
    if name not in catalogue_files():
        return {}
    names = reading_names(entry_readings(name))
    if len(names) == 1:
        return {}
    out: dict[str, list[str]] = {r["id"]: [] for r in runs}
    for scale, keyed in _keyed_by_scale(runs).items():
        for shown, readings in names.items():
            keys = sweep_keys(name, scale, readings, [r for _, r in keyed])
            for key, r in keyed:
                if key in keys:
                    out[r["id"]].append(shown)
    return out


def runs_of_readings(name: str, readings: dict[str, str], runs: list[dict]) -> list[dict]:
    """The stored ``runs`` of entry ``name`` that its sweep at their scale under ``readings``
    (``{reading: choice}``, the defaults for the others) includes."""
    taken: set[str] = set()
    for scale, keyed in _keyed_by_scale(runs).items():
        keys = sweep_keys(name, scale, readings, [r for _, r in keyed])
        taken |= {r["id"] for key, r in keyed if key in keys}
    return [r for r in runs if r["id"] in taken]


def readings_text(shown: list[str], every: int) -> str:
    """A run's readings (:func:`runs_readings`) in a word: ``all`` when they are all
    ``every`` readings of its entry (:func:`reading_names`), the names joined with ", "
    otherwise, ``—`` for none."""
    if not shown:
        return "—"
    return "all" if len(shown) == every else ", ".join(shown)
