"""Experiment specifications: named, versioned YAML files describing a sweep and its report.

An experiment file (``sgdlab/experiments/catalogue/<name>.yaml``, or any file a user copies
and edits, run with ``sgdlab run --config FILE``) is *data*: it is parsed with
``yaml.safe_load`` and validated here; nothing in it is executed. Schema::

    name: jastrzebski-ratio-grid        # required, [a-z0-9-]
    version: 1                          # required int; part of every run key
    title: ...                          # one line
    description: ...                    # required
    paper:                              # what the experiment tests, in the paper's words
      author: ...; year: 2017; title: ...
      figure: "Fig. 3"                  # the figure / table reproduced
      claim: ...                        # the tested claim, in one line of our own
      quote: "..."                      # the paper's passage stating it, verbatim
      where: "§3, Fig. 3; line 190"     # its location (section, figure, equation, text line)
      quotes: [{quote: ..., where: ...}]   # further passages the analysis tests (optional)
    procedure: train                    # how one run executes (registry in procedures/)
    analysis: jastrzebski_ratio_grid    # how stored runs become tables/figures/conclusions
    base: {...}                         # run parameters shared by every run
    runs:                               # run groups: a label + parameter overrides
      - {label: sgd, params: {...}}
      - {label: b, same_as: other-entry, params: {...}}   # other-entry's runs "b" (below)
    grid: {optimizer.lr: [0.01, 0.1]}   # cartesian product applied to every run group
    seeds: [0, 1]
    options: {...}                      # analysis options (thresholds, which metric, ...)
    outputs: {tables: [...], figures: [...]}   # what the analysis must produce
    scales:                             # per-scale overrides of base/runs/grid/seeds/options
      smoke: {...}
      cpu: {...}
      paper: {..., requires_data_dir: true}
    readings:                           # the paper's ambiguities: --reading KEY=CHOICE
      lr:                               # KEY and CHOICE: [a-z0-9._-], at least two choices
        default: caption
        choices:
          caption: {description: "Fig. 6 caption: eta = 0.1", params: {optimizer.lr: 0.1}}
          suppl-d:
            description: "Suppl. D: eta = 0.05, tuned for GD"   # required, one line
            params: {optimizer.lr: 0.05}    # set (dotted paths) on every expanded run ...
            labels: [gld]                   # ... or on the run groups whose label starts so
            exact_labels: [gd]              # ... or is exactly so (not gd-start)
            # or, where groups need different params: pieces, each {params, labels,
            # exact_labels}, in place of the three keys above
            options: {...}                  # deep-merged into the analysis options
            deviations: ["..."]             # appended to the scale's deviations
            title: "..."                    # the entry's title under this choice (one line)
    options: {claims: [{less: [a, b], ..., reading: {lr: suppl-d}}]}   # only under that choice

Each scale may list its ``deviations``: every place where that scale departs from the paper's
stated setting (model, data, optimizer constants, epochs, grid), one sentence each. Reports
show them next to the verdicts. A scale that lists none (most entries' ``smoke``) has them
derived from its config against the ``paper`` scale's (:meth:`ExperimentSpec.derived_deviations`),
and reports say so. A scale whose settings lie outside the regime in which the
paper makes its claims (a learning rate the paper says its claim does not hold at) states so in
``outside_regime: "..."``, one sentence with the paper's words: every claim's verdict at that
scale is then reported as neither agreeing nor disagreeing, with that reason, and counted with
the inconclusive ones; the measured numbers stay in the findings
(:func:`sgdlab.experiments.analysis.outside_regime`).

A scale may record ``wall_minutes``: the whole entry's measured wall time at that scale, for a
reader choosing what to run (``sgdlab list`` shows it). The ``cpu`` scale's come from the run
that docs/RESULTS.md reports, which names the longest entries' times; a test holds the two equal.

Overrides are deep-merged into dicts (lists are replaced); a mapping whose ``name`` differs
from the one it overrides (another model, optimizer, dataset) replaces it whole. Grid keys and
override keys may be dotted paths (``optimizer.lr``); a part ``list[key=value]`` reaches the
list's items whose key reads so (``final[kind=hessian_top].bn_mode``). The string
``${data_dir}`` anywhere in run parameters is replaced by ``--data-dir``.

A **reading** is one way of taking a passage the paper leaves ambiguous or states
inconsistently; each ambiguity is a named option with a default. The chosen choice's ``params``
are set on each run after the group and grid merge, at every scale (and so enter the run keys:
runs of two readings never mix, runs that no reading changes are shared), its ``options`` and
``deviations`` join the scale's. A choice that changes what the entry's title names (the matrix
measured) gives the title the entry takes under it, ``title``; the choices of one reading at
most may give titles, so that two readings taken together never compete for it. A default
choice without ``params`` leaves the runs and their keys as they were before the file had
readings. ``labels`` reach the groups whose label begins with one of them, ``exact_labels``
those whose label is one of them (a prefix ``gd`` reaches ``gd-start`` too); given both, a
choice reaches the groups either names. A choice's labels need not name a run group at every
scale: a scale without such groups is left as it is. A choice whose groups need different
``params`` (one reading of an optimizer set at ``optimizer`` on one group and at
``optimizer.first`` on another) lists ``pieces``, each ``{params, labels,
exact_labels}`` read as a choice's own, applied in order, in place of those three keys. Where the
paper's readings make different claims, a claim of ``options.claims`` may carry ``reading: {KEY:
CHOICE}`` (or a list of choices): it is tested only when that reading is taken. Reports name
every reading taken.

Each expanded run has a deterministic **run key**: the SHA-256 of (experiment, version, scale,
label, parameters, seed), so a re-run finds finished runs in the store and skips them. The key
reads the parameters without the optimizer options that are idle (:func:`key_params`), so two
readings whose runs differ only there share those runs. A run group ``same_as: ENTRY`` takes
the keys (and the experiment name the store files them under) of the catalogue entry ENTRY's
runs of the same label and seeds, at the same scale, where they train the same: two entries
that compare with the same runs have them trained once.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sgdlab.errors import (SEED_LIMIT, ConfigError, DataError, check_config_kind, check_keys,
                           check_not_empty, did_you_mean, int_at_least, name_spelling,
                           not_a_config_file, read_config_text, refused_value,
                           registered_spelling)
from sgdlab.report.settings import departures
from sgdlab.yaml_loaders import exponent_floats, strict_yaml_loader, yaml_problem

SCALES = ("smoke", "cpu", "paper")
CATALOGUE_DIR = Path(__file__).parent / "catalogue"

_TOP_KEYS = {
    "name", "version", "title", "description", "paper", "procedure", "analysis", "base",
    "runs", "grid", "seeds", "options", "outputs", "scales", "resources", "readings",
}
_REQUIRED = ("name", "version", "description", "paper", "analysis")
_PAPER_KEYS = {"author", "year", "figure", "title", "claim", "quote", "where", "quotes"}
_QUOTE_KEYS = {"quote", "where"}
_SCALE_KEYS = {"base", "runs", "grid", "seeds", "options", "requires_data_dir", "description",
               "deviations", "resources", "outside_regime", "wall_minutes"}
# what one run asks of a Ray cluster (`sgdlab run --backend ray`); not part of the run keys
_RESOURCE_KEYS = {"cpus_per_run", "gpus_per_run"}
_RUN_KEYS = {"label", "params", "depends", "same_as"}
_OUTPUT_KEYS = {"tables", "figures"}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_READING_KEYS = {"default", "choices"}
_CHOICE_KEYS = {"description", "params", "labels", "exact_labels", "pieces", "options",
                "deviations", "title"}
# one piece of a choice whose groups take different params
_PIECE_KEYS = {"params", "labels", "exact_labels"}
# a reading and its choice are typed on the command line and name the output folder
_READING_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: a label, fully-resolved parameters and a seed."""

    experiment: str
    version: int
    scale: str
    label: str
    params: dict[str, Any]
    seed: int
    procedure: str
    depends: tuple[str, ...] = ()
    # the keys of the runs named in ``depends``: a run computed from other runs' files is
    # another run when one of them changes, though its own params do not
    dependency_keys: tuple[str, ...] = ()
    # the experiment's grid keys (dotted): which of ``params`` make this run's grid point
    grid: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return run_key(self.experiment, self.version, self.scale, self.label,
                       key_params(self.params), self.seed, self.procedure,
                       self.dependency_keys)

    @property
    def run_name(self) -> str:
        return f"{self.label}|seed={self.seed}"

    def config(self) -> dict[str, Any]:
        """The config recorded in the run store (the key makes resume possible); ``grid``, the
        run's values of the grid's keys (results.json's ``runs[].grid``); with ``training``,
        the run's settings in the words of a run config of ``sgdlab train`` when its procedure
        gives them (:meth:`Procedure.training_settings`: ``sgdlab runs compare`` lines the run
        up with runs of ``sgdlab train`` by them)."""
        from sgdlab.experiments.procedures import get_procedure

        cfg = {"experiment": self.experiment, "version": self.version, "scale": self.scale,
               "label": self.label, "seed": self.seed, "procedure": self.procedure,
               "params": self.params, "depends": list(self.depends), "run_key": self.key,
               "grid": self.grid_point}
        try:
            proc = get_procedure(self.procedure)
        except ConfigError:      # (a spec names one, checked when it is loaded)
            return cfg
        training = proc.training_settings(self.params, self.seed)
        if training is not None:
            cfg["training"] = training
        return cfg

    @property
    def grid_point(self) -> dict[str, Any]:
        """The run's values of the grid's keys (dotted), as results.json's ``runs[].grid``."""
        return grid_point(self.params, self.grid)


def _registered_spellings(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the name of its ``optimizer`` and ``schedule`` in the registered
    spelling (``entropy_sgd`` for ``entropy-sgd``), as a run config stores it: either spelling
    makes the same run key. A name no optimizer spells is left for the procedure to refuse;
    so are the names inside an optimizer's own options (switch's ``first``), which its
    builder matches in either spelling but the key takes as written."""
    from sgdlab.optim import OPTIMIZERS, SCHEDULES

    if not isinstance(params, dict):      # (the procedure refuses it)
        return params
    for key, table in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        sec = params.get(key)
        if isinstance(sec, dict) and isinstance(sec.get("name"), str):
            name = registered_spelling(sec["name"], table)
            if name is not None:
                params[key] = {**sec, "name": name}
    return params


def with_data_file(params: dict[str, Any],
                   stored_files: dict[str, str] | None = None) -> dict[str, Any]:
    """``params`` whose ``dataset`` names a data file (``{file: PATH}``, a run config's ``data:
    {file: PATH}``) with the file as a run records it (:func:`~sgdlab.data.files.
    recorded_data_file`): its absolute path and its bytes' ``sha256``, which the run key reads
    in place of the path. A ``sha256`` the file gives is checked against the file; a missing
    file is the loader's :class:`~sgdlab.errors.DataError`, unless ``stored_files`` (absolute
    path -> the ``sha256`` stored runs recorded of it: a report, which reads no data) is given
    and names it or the dataset gives its ``sha256``. Other params are returned as they are."""
    ds = params.get("dataset") if isinstance(params, dict) else None
    if not (isinstance(ds, dict) and isinstance(ds.get("file"), str) and ds["file"]):
        return params      # (no file, or not a path: the procedure refuses it)
    from sgdlab.data.files import recorded_data_file

    try:
        record = recorded_data_file(ds["file"])
    except DataError:
        if stored_files is None:
            raise
        path = str(Path(ds["file"]).expanduser().resolve())     # as a run records it
        sha256 = ds.get("sha256") or stored_files.get(path)
        if not sha256:
            raise
        return {**params, "dataset": {**ds, "file": path, "sha256": sha256}}
    if ds.get("sha256") not in (None, record["sha256"]):
        raise DataError(f"data file {record['file']!r} is not the one dataset.sha256 names "
                        f"(sha256 {str(ds['sha256'])[:16]}... given, {record['sha256'][:16]}"
                        "... now): put that file back, or remove dataset.sha256 to run on "
                        "the file as it is now")
    return {**params, "dataset": {**ds, **record}}


def key_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the run key reads them: the ``optimizer`` section without the options
    that act only through one that is off (Entropy-SGD's ``inner_momentum_on`` without an
    inner momentum: :func:`sgdlab.optim.registry.without_idle_options`), so that runs that
    train the same, bit for bit, share one key, whichever readings set them (``--reading
    momentum=outer`` with ``--reading inner-momentum=whole-step``); a data file's ``dataset``
    without its path, its content named by its ``sha256`` (:func:`with_data_file`: the file
    moved keeps the runs, the file edited makes new ones). The run keeps its params as
    given: they are validated and trained as written."""
    ds = params.get("dataset") if isinstance(params, dict) else None
    if isinstance(ds, dict) and "file" in ds:
        params = {**params, "dataset": {k: v for k, v in ds.items() if k != "file"}}
    sec = params.get("optimizer") if isinstance(params, dict) else None
    if not (isinstance(sec, dict) and isinstance(sec.get("name"), str)):
        return params
    from sgdlab.optim.registry import without_idle_options

    kept = without_idle_options(sec["name"], sec)
    return params if len(kept) == len(sec) else {**params, "optimizer": kept}


def grid_point(params: dict[str, Any], keys) -> dict[str, Any]:
    """A run's values of grid keys ``keys`` (dotted) in its ``params``."""
    return {k: get_dotted(params, k) for k in keys}


def run_key(experiment: str, version: int, scale: str, label: str, params: dict[str, Any],
            seed: int, procedure: str, dependency_keys: tuple[str, ...] = ()) -> str:
    fields = {"e": experiment, "v": version, "s": scale, "l": label, "p": params,
              "seed": seed, "proc": procedure}
    if dependency_keys:          # absent otherwise: a run without dependencies keeps its key
        fields["deps"] = list(dependency_keys)
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def dependency_run(by_label: dict[str, list[RunSpec]], label: str, seed: int) -> RunSpec:
    """The run labelled ``label`` that a run of ``seed`` depends on: the one of the same seed;
    a dependency run with a single seed serves every seed."""
    cands = by_label[label]
    for c in cands:
        if c.seed == seed:
            return c
    return cands[0]


def _with_dependency_keys(runs: list[RunSpec], experiment: str) -> list[RunSpec]:
    """``runs`` with each one's ``dependency_keys`` (dependencies first, so theirs are known)."""
    by_label: dict[str, list[RunSpec]] = {}
    for r in runs:
        by_label.setdefault(r.label, []).append(r)
    done: dict[tuple[str, int], RunSpec] = {}

    def keyed(r: RunSpec, stack: tuple[str, ...] = ()) -> RunSpec:
        if (r.label, r.seed) in done:
            return done[(r.label, r.seed)]
        if r.label in stack:
            raise ConfigError(f"{experiment}: dependency cycle through {r.label!r}")
        deps = tuple(keyed(dependency_run(by_label, d, r.seed), stack + (r.label,)).key
                     for d in r.depends)
        done[(r.label, r.seed)] = out = replace(r, dependency_keys=deps)
        return out

    return [keyed(r) for r in runs]


@dataclass
class ExperimentSpec:
    """A validated experiment at one scale (overrides applied, runs expanded)."""

    name: str
    version: int
    title: str
    description: str
    paper: dict[str, Any]
    procedure: str
    analysis: str
    scale: str
    base: dict[str, Any]
    runs: list[dict[str, Any]]
    grid: dict[str, list[Any]]
    seeds: list[int]
    options: dict[str, Any]
    outputs: dict[str, list[str]]
    requires_data_dir: bool
    deviations: list[str]            # where this scale departs from the paper's setting
    source: str                      # file the spec was read from
    resources: dict[str, float] = field(default_factory=dict)   # per run, for --backend ray
    raw: dict[str, Any] = field(repr=False, default_factory=dict)   # the file, as data
    readings: dict[str, str] = field(default_factory=dict)   # reading -> choice, every reading
    # why this scale lies outside the regime of the paper's claims; None where it does not
    outside_regime: str | None = None
    # the chosen readings' run overrides: (label prefixes, exact labels, params); both None
    # for every run
    reading_params: list[tuple[tuple[str, ...] | None, tuple[str, ...] | None,
                               dict[str, Any]]] = field(repr=False, default_factory=list)

    def expand(self, data_dir: str | None = None, *, read_files: bool = True,
               stored_files: dict[str, str] | None = None) -> list[RunSpec]:
        """All runs: run groups x grid x seeds, in a deterministic order. ``read_files``: a
        data file's checksum is taken (:func:`with_data_file`); without it (validation with a
        placeholder ``data_dir``) the file is not looked at. ``stored_files``: the checksums
        stored runs recorded of data files no longer found (:func:`with_data_file`)."""
        axes = list(self.grid.items())
        combos = list(itertools.product(*[v for _, v in axes])) if axes else [()]
        out: list[RunSpec] = []
        seen: set[tuple[str, int]] = set()
        for group in self.runs:
            for combo in combos:
                params = deep_merge(self.base, group.get("params", {}))
                label = group["label"]
                if axes:
                    parts = []
                    for (k, _), v in zip(axes, combo):
                        set_dotted(params, k, v)
                        parts.append(f"{k.split('.')[-1]}={v}")
                    label = f"{label}|{','.join(parts)}" if label else ",".join(parts)
                for prefixes, exact, over in self.reading_params:
                    if _reaches(group["label"], prefixes, exact):
                        for k, v in over.items():
                            set_dotted(params, k, copy.deepcopy(v))
                params = _registered_spellings(_substitute(params, data_dir))
                if read_files:
                    try:
                        params = with_data_file(params, stored_files)
                    except DataError as e:
                        # the file, the run and the key, as a refused run parameter
                        source = "" if self.source == "<config>" else f"{self.source}: "
                        raise DataError(f"{source}{self.name}[{self.scale}] run {label!r}: "
                                        f"dataset.file: {e}") from None
                for seed in self.seeds:
                    if (label, seed) in seen:
                        raise ConfigError(f"{self.name}: duplicate run label {label!r}")
                    seen.add((label, seed))
                    # each seed its own copy: one run's params are no other's
                    out.append(RunSpec(self.name, self.version, self.scale, label,
                                       copy.deepcopy(params), int(seed), self.procedure,
                                       tuple(group.get("depends", ())),
                                       grid=tuple(self.grid)))
        out = self._shared(out, data_dir)
        labels = {r.label for r in out}
        for r in out:
            for d in r.depends:
                if d not in labels:
                    raise ConfigError(f"{self.name}: run {r.label!r} depends on unknown run "
                                      f"label {d!r}; known: {', '.join(sorted(labels))}")
        return _with_dependency_keys(out, self.name)

    def _shared(self, runs: list[RunSpec], data_dir: str | None) -> list[RunSpec]:
        """``runs`` with those of a group ``same_as: ENTRY`` keyed as the catalogue entry
        ENTRY's run of the same label and seed at this scale (under this spec's readings
        that ENTRY has too) where that run trains the same: the same procedure, no
        dependencies and the same :func:`key_params`, so that the store runs it once for
        both entries. A run that differs keeps its own key."""
        shared = {g["label"]: g["same_as"] for g in self.runs if "same_as" in g}
        if not shared:
            return runs
        theirs: dict[tuple[str, str, int], RunSpec] = {}
        for entry in sorted(set(shared.values())):
            # the entry's readings table, read from its file: resolving it once is enough
            known = read_file(catalogue_files()[entry]).get("readings") or {}
            chosen = {k: c for k, c in self.readings.items()
                      if k in known and c in known[k]["choices"]}
            other = load_experiment(entry, self.scale, readings=chosen)
            for r in other._own_runs(data_dir):
                theirs[(entry, r.label, r.seed)] = r
        out = []
        for r in runs:
            twin = theirs.get((shared.get(r.label, ""), r.label, r.seed))
            if (twin is not None and twin.procedure == r.procedure and not twin.depends
                    and not r.depends and key_params(twin.params) == key_params(r.params)):
                r = replace(r, experiment=twin.experiment, version=twin.version)
            out.append(r)
        return out

    def _own_runs(self, data_dir: str | None) -> list[RunSpec]:
        """The runs keyed as this entry's own (no ``same_as`` followed: two entries that
        name each other do not expand each other in turn)."""
        bare = replace(self, runs=[{k: v for k, v in g.items() if k != "same_as"}
                                   for g in self.runs])
        return bare.expand(data_dir)

    def describe(self) -> dict[str, Any]:
        table = self.raw.get("readings") or {}
        readings = {k: {"choice": c, "default": table[k]["default"],
                        "description": table[k]["choices"][c]["description"].strip()}
                    for k, c in self.readings.items()}
        return {"name": self.name, "version": self.version, "title": self.title,
                "description": self.description, "paper": self.paper,
                "deviations": list(self.deviations), "readings": readings,
                **({"outside_regime": self.outside_regime} if self.outside_regime else {}),
                **({"derived_deviations": derived} if (derived := self.derived_deviations())
                   else {}),
                "procedure": self.procedure, "analysis": self.analysis}

    def resolved_config(self) -> dict[str, Any]:
        """The settings this scale runs (results.json's ``config.resolved``)."""
        return {"base": self.base, "runs": self.runs, "grid": self.grid, "seeds": self.seeds,
                "options": self.options}

    def derived_deviations(self) -> list[str]:
        """Where a scale whose file lists no ``deviations`` departs from the ``paper`` scale
        (under the same readings), derived from the two resolved configs
        (:func:`sgdlab.report.settings.departures`: ``epochs 1 (paper: 200)``); none at the
        paper scale, at a scale that lists its departures, or where the file's paper scale
        does not resolve (an edited copy)."""
        if self.scale == "paper" or scale_deviations(self.raw).get(self.scale) or not self.raw:
            return []
        try:
            paper = resolve(self.raw, "paper", self.source, readings=self.readings)
        except ConfigError:
            return []
        return departures(self.resolved_config(), paper.resolved_config(), "paper")

    @property
    def catalogued(self) -> bool:
        """Whether the spec is read from a file of the catalogue (by name, or by path)."""
        return in_catalogue(self.source)

    def wall_minutes(self) -> float | None:
        """The whole entry's measured wall time at this scale (``scales.<scale>.wall_minutes``)
        when the spec is a catalogue file's under its default readings, as measured; else
        None."""
        if not self.catalogued or self.changed_readings():
            return None       # an edited copy, another reading: not the runs measured
        return ((self.raw.get("scales") or {}).get(self.scale) or {}).get("wall_minutes")

    def changed_readings(self) -> dict[str, str]:
        """The readings not at their default choice, in the file's order."""
        table = self.raw.get("readings") or {}
        return {k: c for k, c in self.readings.items() if c != table[k]["default"]}


def _reaches(label: str, prefixes: tuple[str, ...] | None,
             exact: tuple[str, ...] | None) -> bool:
    """Whether a reading's params reach the run group ``label``: every group when the choice
    names none, else a group whose label begins with one of ``prefixes`` or is one of
    ``exact``."""
    if prefixes is None and exact is None:
        return True
    return bool(prefixes and label.startswith(prefixes)) or bool(exact and label in exact)


# ----------------------------------------------------------------------------------------------
def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a`` updated by ``b`` recursively (dicts merge, everything else replaces); dotted keys
    in ``b`` address nested entries. Neither input is modified."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        if "." in k:
            set_dotted(out, k, copy.deepcopy(v))
        elif _merges_into(out.get(k), v):
            out[k] = deep_merge(out[k], v)
        else:       # a value, or another model/optimizer/...: its options start afresh
            out[k] = copy.deepcopy(v)
    return out


def _merges_into(old: Any, new: Any) -> bool:
    """Whether mapping ``new`` merges into mapping ``old`` (:func:`deep_merge`,
    :func:`set_dotted`), rather than replacing it: not when it names another ``name``, nor
    when either is a data file's (``{file: PATH}``: the tensors are the whole dataset)."""
    return (isinstance(new, dict) and isinstance(old, dict)
            and not ("name" in new and old.get("name", new["name"]) != new["name"])
            and not ("file" in new or "file" in old and "name" in new))


# a path part that selects the items of a list by one key: final[kind=hessian_top]
_SELECTOR = re.compile(r"^(\w+)\[(\w+)=([^\]]+)\]$")
# the dots that part a path, those inside a selector's brackets aside (final[name=v1.2].tol)
_PART_DOT = re.compile(r"\.(?![^\[\]]*\])")


def _items_where(items: Any, key: str, value: str) -> list[dict[str, Any]]:
    """The mappings of list ``items`` whose ``key`` reads ``value`` (compared as text)."""
    return [it for it in items or [] if isinstance(it, dict) and str(it.get(key)) == value]


def _selected(d: dict[str, Any], part: str, path: str) -> list[dict[str, Any]] | None:
    """The items of list ``d[name]`` whose ``key`` reads ``value`` for a part ``name[key=value]``
    (copied into the list first, so the items of a merged base are never changed in place);
    None for a plain part."""
    m = _SELECTOR.match(part)
    if m is None:
        return None
    name, key, value = m.groups()
    items = d.get(name)
    if not isinstance(items, list):
        raise ConfigError(f"cannot set {path!r}: {name!r} is not a list")
    d[name] = items = copy.deepcopy(items)
    hits = _items_where(items, key, value)
    if not hits:
        have = ", ".join(str(it.get(key)) for it in items if isinstance(it, dict))
        raise ConfigError(f"cannot set {path!r}: no item of {name!r} has {key} = {value} "
                          f"(its items: {have or 'none'})")
    return hits


def _where_given(raw: dict[str, Any], scale: str, run: RunSpec, message: str,
                 chosen: dict[str, str]) -> list[str]:
    """Where in the file ``raw`` the run parameter that a validation ``message`` of ``run``
    refuses is given (``base.batchsize``, ``runs[0].params.optimizer``; each place that sets
    it, in merge order): the message names the run and the parameter, and the run's params
    merge ``base``, the scale's ``base``, the group's ``params`` and the params of the
    ``chosen`` readings' choices that reach the group. The parameter is the run parameter
    named first in the message after its run; none where it is given nowhere (a missing
    one)."""
    said = message.split(f"run {run.label!r}: ", 1)[-1]
    # a parameter the message names: at its start, or quoted (unknown parameter 'batchsize')
    named = [(m.start(), k) for k in run.params if isinstance(k, str)
             for m in [re.search(rf"^{re.escape(k)}\b|'{re.escape(k)}'", said)] if m]
    if not named:
        return []
    key = min(named)[1]
    ov = (raw.get("scales") or {}).get(scale) or {}
    sections = [("base", raw.get("base")), (f"scales.{scale}.base", ov.get("base"))]
    runs_at = f"scales.{scale}.runs" if "runs" in ov else "runs"
    # a grid's run label is the group's, then "|" and the grid point (alone: no group label)
    label = run.label.split("|")[0] if "|" in run.label or not run.grid else ""
    for i, g in enumerate(ov.get("runs", raw.get("runs")) or []):
        if isinstance(g, dict) and g.get("label") == label:
            sections.append((f"{runs_at}[{i}].params", g.get("params")))
    for k, c in chosen.items():
        choice = raw["readings"][k]["choices"][c]
        at = f"readings.{k}.choices.{c}"
        for i, t in enumerate(_pieces(choice)):
            if _reaches(label, *_targets(t)):
                sections.append((f"{at}.pieces[{i}].params" if "pieces" in choice
                                 else f"{at}.params", t.get("params")))
    out: list[str] = []
    for at, sec in sections:
        for k, v in (sec.items() if isinstance(sec, dict) else ()):
            if isinstance(k, str) and _PART_DOT.split(k)[0].split("[")[0] == key:
                # a value replaces what the sections before gave; a mapping merges into it
                out = out + [f"{at}.{k}"] if isinstance(v, dict) or k != key else [f"{at}.{k}"]
    return out


def _grid_axis_refused(grid: dict[str, Any], proc, message: str) -> str | None:
    """The axis of ``grid`` that a run's validation ``message`` refuses, where it is one: a
    top-level key procedure ``proc`` does not take (``optimiser.lr``), or the path the
    message names (``optimizer.lrr: unknown key``)."""
    for axis in grid:
        top = _PART_DOT.split(axis)[0].split("[")[0]
        if (top not in proc.allowed and repr(top) in message) or f"{axis}:" in message:
            return axis
    return None


def set_dotted(d: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at a dotted ``path``; a part ``list[key=value]`` continues into every
    item of that list whose ``key`` reads ``value`` (``final[kind=hessian_top].bn_mode``). A
    mapping merges into the mapping there, as in :func:`deep_merge`, unless it names another
    ``name`` (another optimizer, model): then it replaces it whole."""
    parts = _PART_DOT.split(path)
    for i, p in enumerate(parts[:-1]):
        hits = _selected(d, p, path)
        if hits is not None:
            for item in hits:
                set_dotted(item, ".".join(parts[i + 1:]), value)
            return
        nxt = d.get(p)
        if nxt is None:
            nxt = d[p] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {path!r}: {p!r} is not a mapping")
        d = nxt
    if _SELECTOR.match(parts[-1]):
        raise ConfigError(f"cannot set {path!r}: a list selector needs a key after it")
    old = d.get(parts[-1])
    if _merges_into(old, value):
        d[parts[-1]] = deep_merge(old, value)
    else:
        d[parts[-1]] = value      # as deep_merge: another optimizer's options start afresh


def paper_ref(paper: dict[str, Any]) -> str:
    """A catalogue entry's ``paper`` block as a short reference, first author, year and
    figure ("Jastrzebski 2018, Fig. 3"): the form of RESULTS.md and of figure titles, where
    the full author list would crowd the title out. A field left out is left out."""
    who = " ".join(str(v) for v in (str(paper.get("author", "")).split(",")[0],
                                     paper.get("year")) if v)
    return ", ".join(v for v in (who, str(paper.get("figure") or "")) if v)


def cited(paper: dict[str, Any]) -> str:
    """The start of a figure's title that cites the paper: :func:`paper_ref` and ": ", or
    nothing where the ``paper`` block names none of author, year and figure
    (:func:`sgdlab.report.figures.cited`, which the figure functions use)."""
    from sgdlab.report.figures import cited as citing

    return citing(paper_ref(paper))


def get_dotted(d: dict[str, Any], path: str, default: Any = None) -> Any:
    """The value at a dotted ``path`` (``list[key=value]`` picks the first such item)."""
    for p in _PART_DOT.split(path):
        m = _SELECTOR.match(p)
        if m is not None:
            name, key, value = m.groups()
            hits = _items_where(d.get(name) if isinstance(d, dict) else None, key, value)
            if not hits:
                return default
            d = hits[0]
            continue
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def expand_data_dir(data_dir: str | os.PathLike | None) -> str | None:
    """``data_dir`` with a leading ``~`` expanded, as the CLI's ``--data-dir`` is (a path
    given from Python, ``run_experiment(data_dir="~/data")``, meant the same folder)."""
    return None if data_dir is None else os.path.expanduser(os.fspath(data_dir))


def _substitute(obj: Any, data_dir: str | None) -> Any:
    if isinstance(obj, str) and "${data_dir}" in obj:
        if data_dir is None:
            raise ConfigError("this experiment reads real data: pass --data-dir DIR "
                              "(the directory holding the dataset files)")
        if not os.fspath(data_dir):     # abspath("") is the working folder
            raise ConfigError("--data-dir is empty (an unset variable?): give the directory "
                              "holding the dataset files ('.' for the working folder)")
        # absolute: the runs' keys hold it, so `--data-dir data` from one folder and the same
        # folder named from another (or the absolute path results.json records) are one run
        return obj.replace("${data_dir}", os.path.abspath(expand_data_dir(data_dir)))
    if isinstance(obj, dict):
        return {k: _substitute(v, data_dir) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, data_dir) for v in obj]
    return obj


def _check_keys(where: str, d: Any, allowed: set[str],
                nested: dict[str, set[str]] | None = None) -> None:
    """A mapping whose unknown keys are refused all at once, each worded as a run config's
    (:func:`~sgdlab.errors.check_keys`: ``where.key: unknown key (did you mean x?)``, else
    the valid keys; ``nested``: the sections one level down where a key may belong)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    # sorted: the suggestion between two equally close keys does not follow set order
    check_keys(where, d, sorted(allowed),
               {k: sorted(v) for k, v in (nested or {}).items()})


def _check_runs(where: str, runs: Any) -> None:
    if not isinstance(runs, list) or not runs:
        raise ConfigError(f"{where}.runs: expected a non-empty list of run groups")
    labels = set()
    for i, r in enumerate(runs):
        _check_keys(f"{where}.runs[{i}]", r, _RUN_KEYS)
        if "label" not in r or not isinstance(r["label"], str):
            raise ConfigError(f"{where}.runs[{i}]: missing string key 'label'")
        if r["label"] in labels:
            raise ConfigError(f"{where}.runs[{i}]: duplicate label {r['label']!r}")
        labels.add(r["label"])
        if not isinstance(r.get("params", {}), dict):
            raise ConfigError(f"{where}.runs[{i}].params: expected a mapping")
        if not isinstance(r.get("depends", []), list):
            raise ConfigError(f"{where}.runs[{i}].depends: expected a list of labels")
        if "same_as" in r and (not isinstance(r["same_as"], str)
                               or r["same_as"] not in catalogue_files()):
            entries = catalogue_files()
            raise ConfigError(f"{where}.runs[{i}].same_as: {r['same_as']!r} is not a "
                              f"catalogue entry{did_you_mean(str(r['same_as']), entries)}")


def _check_grid(where: str, grid: Any) -> None:
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}.grid: expected a mapping axis -> list of values")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{where}.grid.{k}: expected a non-empty list of values")


def _check_seeds(where: str, seeds: Any) -> None:
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"{where}.seeds: expected a non-empty list of integers, "
                          f"{refused_value(seeds)}")
    for i, s in enumerate(seeds):
        if not isinstance(s, int) or isinstance(s, bool):     # a quoted '0' is a string
            raise ConfigError(f"{where}.seeds[{i}]: expected an integer, {refused_value(s)}")
    for s in seeds:
        # a run's seed seeds numpy (32 bits): a larger one failed each run, and "re-run the
        # same command" failed them again
        if not 0 <= s < SEED_LIMIT:
            raise ConfigError(f"{where}.seeds: {s} is outside 0..2**32 - 1")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:    # said as "duplicate run label 'a'", the first run group's
        raise ConfigError(f"{where}.seeds: seed {twice[0]} is given twice")


def validate_raw(raw: Any, source: str = "<config>") -> dict[str, Any]:
    """Check the file's structure; raises ``ConfigError`` naming the offending key."""
    check_config_kind(raw, "experiment", source)
    if isinstance(raw, dict) and "plugins" in raw:     # a run config's key
        raise ConfigError(f"{source}.plugins: an experiment file names no plugins; give them "
                          "to the command: sgdlab run --config FILE --plugin MODULE "
                          "(repeatable; the sweep's workers import them too)")
    # a paper's or a run's resources key given at the top: named where it belongs
    _check_keys(source, raw, _TOP_KEYS, {"paper": _PAPER_KEYS, "resources": _RESOURCE_KEYS})
    for k in _REQUIRED:
        if k not in raw:
            # an experiment of one's own reproduces no paper's figure: what to write then
            hint = (" (author, year and figure of what the experiment reproduces; for one of "
                    "your own, e.g. paper: {author: Me, year: 2026, figure: ''}: left out of "
                    "titles)" if k == "paper" else "")
            raise ConfigError(f"{source}: missing required key {k!r}{hint}")
    if not isinstance(raw["name"], str) or not _NAME_RE.match(raw["name"]):
        raise ConfigError(f"{source}: name {raw['name']!r} must be lower-case letters, digits "
                          "and dashes")
    for k in ("description", "title"):     # read as text (stripped, put in titles)
        if k in raw and not isinstance(raw[k], str):
            raise ConfigError(f"{source}.{k}: expected a string, {refused_value(raw[k])}")
    version = raw["version"]
    if not int_at_least(version, 1):
        raise ConfigError(f"{source}: version must be a positive integer, "
                          f"{refused_value(version)}")
    _check_keys(f"{source}.paper", raw["paper"], _PAPER_KEYS)
    for k in ("author", "year", "figure"):
        if k not in raw["paper"]:
            raise ConfigError(f"{source}.paper: missing required key {k!r}")
    _check_year(f"{source}.paper.year", raw["paper"]["year"])
    _check_quotes(f"{source}.paper", raw["paper"])
    for k in ("base", "options"):
        if k in raw and not isinstance(raw[k], dict):
            raise ConfigError(f"{source}.{k}: expected a mapping")
    _check_run_lists(source, raw)
    _check_resources(source, raw)
    if "readings" in raw:
        _check_readings(f"{source}.readings", raw["readings"])
    if "outputs" in raw:
        _check_keys(f"{source}.outputs", raw["outputs"], _OUTPUT_KEYS)
    scales = raw.get("scales", {})
    _check_keys(f"{source}.scales", scales, set(SCALES))
    for s, ov in scales.items():
        where = f"{source}.scales.{s}"
        _check_keys(where, ov or {}, _SCALE_KEYS)
        _check_run_lists(where, ov or {})
        _check_resources(where, ov or {})
        _check_sentences(f"{where}.deviations", (ov or {}).get("deviations", []))
        minutes = (ov or {}).get("wall_minutes")
        if "wall_minutes" in (ov or {}) and (isinstance(minutes, bool) or not isinstance(
                minutes, (int, float)) or not minutes > 0):
            raise ConfigError(f"{where}.wall_minutes: expected the measured wall time in "
                              f"minutes, a number > 0, {refused_value(minutes)}")
        reason = (ov or {}).get("outside_regime")
        if "outside_regime" in (ov or {}) and not (isinstance(reason, str) and reason.strip()):
            raise ConfigError(f"{where}.outside_regime: expected one sentence saying why the "
                              "scale lies outside the regime of the paper's claims")
    return raw


def _check_sentences(where: str, devs: Any) -> None:
    if not isinstance(devs, list) or not all(isinstance(d, str) and d.strip() for d in devs):
        raise ConfigError(f"{where}: expected a list of sentences")


def _one_line(text: Any) -> bool:
    """``text`` is a string of one non-blank line (surrounding whitespace aside)."""
    return isinstance(text, str) and bool(text.strip()) and "\n" not in text.strip()


def _check_readings(where: str, readings: Any) -> None:
    """``{KEY: {default, choices: {CHOICE: {description, params, labels, exact_labels,
    options, deviations, title}}}}``, names fit for a command line and a folder name; the
    choices of one reading at most give a ``title``."""
    if not isinstance(readings, dict) or not readings:
        raise ConfigError(f"{where}: expected a mapping reading -> {{default, choices}}")

    def check_name(at: str, what: str, name: Any) -> None:
        if not isinstance(name, str) or not _READING_RE.match(name):
            raise ConfigError(f"{at}: {what} name {name!r} must be lower-case letters, "
                              "digits, '.', '_' and '-'")

    for key, r in readings.items():
        at = f"{where}.{key}"
        check_name(where, "reading", key)
        _check_keys(at, r, _READING_KEYS)
        choices = r.get("choices")
        if not isinstance(choices, dict) or len(choices) < 2:
            raise ConfigError(f"{at}.choices: expected a mapping of at least two named choices")
        # a list or mapping as the default is no choice's name (and no key to look up)
        if not isinstance(r.get("default"), str) or r["default"] not in choices:
            raise ConfigError(f"{at}.default: {r.get('default')!r} is not one of its choices "
                              f"({', '.join(map(str, choices))})")
        for name, c in choices.items():
            cat = f"{at}.choices.{name}"
            check_name(f"{at}.choices", "choice", name)
            _check_keys(cat, c, _CHOICE_KEYS)
            if not _one_line(c.get("description")):
                raise ConfigError(f"{cat}: missing one-line string key 'description'")
            _check_mapping(f"{cat}.options", c.get("options", {}))
            if "pieces" in c:
                _check_pieces(f"{cat}.pieces", c)
            else:
                _check_targets(cat, c)
            _check_sentences(f"{cat}.deviations", c.get("deviations", []))
            if "title" in c and not _one_line(c["title"]):
                raise ConfigError(f"{cat}.title: expected a one-line string, got {c['title']!r}")
    titled = [k for k, r in readings.items()
              if any("title" in c for c in r["choices"].values())]
    if len(titled) > 1:
        raise ConfigError(f"{where}: choices of {', '.join(titled)} give titles; one reading "
                          "at most may, or two taken together would compete for the title")


def _check_mapping(where: str, v: Any) -> None:
    if not isinstance(v, dict) or not all(isinstance(p, str) for p in v):
        raise ConfigError(f"{where}: expected a mapping")


def _check_targets(where: str, c: dict[str, Any]) -> None:
    """A choice's (or a piece's) ``params``, ``labels`` and ``exact_labels``."""
    _check_mapping(f"{where}.params", c.get("params", {}))
    for k in ("labels", "exact_labels"):
        labels = c.get(k, [])
        if not isinstance(labels, list) or not all(isinstance(s, str) and s for s in labels):
            raise ConfigError(f"{where}.{k}: expected a list of run group labels")
        if labels and not c.get("params"):
            raise ConfigError(f"{where}.{k}: limits 'params', which the choice lacks")


def _check_pieces(where: str, c: dict[str, Any]) -> None:
    """``pieces: [{params, labels, exact_labels}, ...]``, in place of the choice's own three
    keys: each piece sets non-empty ``params`` on the groups it names (it must name some)."""
    mixed = sorted(_PIECE_KEYS & set(c))
    if mixed:
        raise ConfigError(f"{where}: a choice with 'pieces' sets its params in them, not in "
                          f"its own {mixed[0]!r}")
    pieces = c["pieces"]
    if not isinstance(pieces, list) or not pieces:
        raise ConfigError(f"{where}: expected a list of {{params, labels, exact_labels}}")
    for i, piece in enumerate(pieces):
        at = f"{where}[{i}]"
        _check_keys(at, piece, _PIECE_KEYS)
        _check_targets(at, piece)
        if not piece.get("params"):
            raise ConfigError(f"{at}: missing mapping 'params'")
        if not (piece.get("labels") or piece.get("exact_labels")):
            raise ConfigError(f"{at}: names no run groups ('labels' or 'exact_labels'): a "
                              "choice's own 'params' reach every group")


def choose_readings(raw: dict[str, Any], readings: dict[str, str] | None = None
                    ) -> dict[str, str]:
    """``{reading: choice}`` for every reading of the (validated) file: the chosen ones, the
    defaults for the rest. An unknown reading or choice is a ``ConfigError`` naming the valid
    ones."""
    table = raw.get("readings") or {}
    given = dict(readings or {})
    if given and not table:
        k = next(iter(given))
        raise ConfigError(f"{raw['name']} has no readings to choose from (--reading "
                          f"{k}={given[k]}): it names no ambiguity of its paper")
    for k, c in given.items():
        if k not in table:
            menu = "; ".join(f"{r} ({' | '.join(table[r]['choices'])})" for r in table)
            raise ConfigError(f"{raw['name']}: unknown reading {k!r}{did_you_mean(k, table)}; "
                              f"its readings: {menu}")
        choices = table[k]["choices"]
        if not isinstance(c, str) or c not in choices:
            raise ConfigError(f"{raw['name']}: reading {k!r} has no choice {c!r}"
                              f"{did_you_mean(c, choices)}; choices: {', '.join(choices)} "
                              f"(default {table[k]['default']})")
    return {k: given.get(k, r["default"]) for k, r in table.items()}


def _check_year(where: str, year: Any) -> None:
    """A paper's year is a year, written as an integer (a quoted '2018' is a string), up to
    next year's (a paper in press): it is printed in every title that cites the paper."""
    import datetime

    latest = datetime.date.today().year + 1
    if not (int_at_least(year, 1) and year <= latest):
        raise ConfigError(f"{where}: expected the year as an integer from 1 to {latest}, "
                          f"{refused_value(year)}")


def _check_quotes(where: str, paper: dict[str, Any]) -> None:
    """``quote`` and ``where`` go together, as strings; ``quotes`` is a list of such pairs."""
    if ("quote" in paper) != ("where" in paper):
        raise ConfigError(f"{where}: 'quote' and 'where' go together (the passage and its "
                          "location in the paper)")
    for k in ("quote", "where", "claim"):
        if k in paper and not (isinstance(paper[k], str) and paper[k].strip()):
            raise ConfigError(f"{where}.{k}: expected a non-empty string")
    extra = paper.get("quotes", [])
    if not isinstance(extra, list):
        raise ConfigError(f"{where}.quotes: expected a list of {{quote, where}} mappings")
    for i, q in enumerate(extra):
        _check_keys(f"{where}.quotes[{i}]", q, _QUOTE_KEYS)
        for k in ("quote", "where"):
            if not (isinstance(q.get(k), str) and q[k].strip()):
                raise ConfigError(f"{where}.quotes[{i}]: missing string key {k!r}")


def wall_time_text(minutes: float) -> str:
    """A measured wall time as a reader glances at it: ``~40 s``, ``~19 min``."""
    return f"~{round(minutes * 60)} s" if minutes < 1 else f"~{round(minutes)} min"


def scale_deviations(raw: dict[str, Any]) -> dict[str, list[str]]:
    """``{scale: [deviation, ...]}`` as the file lists them (scales without a list omitted)."""
    return {s: list(ov["deviations"]) for s, ov in (raw.get("scales") or {}).items()
            if ov and "deviations" in ov}


def _check_resources(where: str, sec: dict[str, Any]) -> None:
    """``resources: {cpus_per_run: > 0, gpus_per_run: >= 0}`` (fractions allowed)."""
    res = sec.get("resources")
    if res is None:
        return
    _check_keys(f"{where}.resources", res, _RESOURCE_KEYS)
    for k, v in res.items():
        low = 0 if k == "gpus_per_run" else 1e-9
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= low:
            raise ConfigError(f"{where}.resources.{k}: expected a number "
                              f"{'>= 0' if low == 0 else '> 0'}, {refused_value(v)}")


def _check_run_lists(where: str, sec: dict[str, Any]) -> None:
    """``runs``, ``grid`` and ``seeds`` of the file's top level or of one scale."""
    for key, check in (("runs", _check_runs), ("grid", _check_grid), ("seeds", _check_seeds)):
        if key in sec:
            check(where, sec[key])


def resolve(raw: dict[str, Any], scale: str, source: str = "<config>",
            readings: dict[str, str] | None = None) -> ExperimentSpec:
    """Apply the ``scales.<scale>`` overrides and the chosen ``readings`` (``{reading:
    choice}``; the defaults for the others) and validate the resulting runs."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    validate_raw(raw, source)
    chosen = choose_readings(raw, readings)
    ov = (raw.get("scales") or {}).get(scale) or {}
    base = deep_merge(raw.get("base", {}), ov.get("base", {}))
    runs = ov.get("runs", raw.get("runs", [{"label": ""}]))
    grid = dict(raw.get("grid", {}))
    if "grid" in ov:
        grid = dict(ov["grid"])     # a scale's grid replaces the whole grid
    _check_reading_targets(f"{source}.readings", raw.get("readings") or {}, raw, grid, scale)
    picked = [raw["readings"][k]["choices"][c] for k, c in chosen.items()]
    options = deep_merge(raw.get("options", {}), ov.get("options", {}))
    for c in picked:
        options = deep_merge(options, c.get("options", {}))
    options = _claims_of_readings(f"{source}.options.claims", options, chosen,
                                  raw.get("readings") or {})
    spec = ExperimentSpec(
        name=raw["name"], version=raw["version"],
        title=next((c["title"] for c in picked if "title" in c), raw.get("title", raw["name"])),
        description=raw["description"].strip(), paper=dict(raw["paper"]),
        procedure=raw.get("procedure", "train"), analysis=raw["analysis"], scale=scale,
        base=base, runs=copy.deepcopy(runs), grid=grid,
        seeds=list(ov.get("seeds", raw.get("seeds", [0]))),
        options=options, outputs={k: list(v) for k, v in (raw.get("outputs") or {}).items()},
        requires_data_dir=bool(ov.get("requires_data_dir", False)),
        deviations=list(ov.get("deviations", [])) + [d for c in picked
                                                     for d in c.get("deviations", [])],
        source=source, raw=raw,
        resources={**(raw.get("resources") or {}), **(ov.get("resources") or {})},
        readings=chosen, outside_regime=ov.get("outside_regime"),
        reading_params=[(*_targets(t), dict(t["params"])) for c in picked
                        for t in _pieces(c) if t.get("params")])
    from sgdlab.experiments.procedures import get_analysis, get_procedure

    registered = {}
    for key, get in (("procedure", get_procedure), ("analysis", get_analysis)):
        try:
            registered[key] = get(getattr(spec, key))       # raises ConfigError on unknown names
        except ConfigError as e:
            raise ConfigError(f"{source}.{key}: {e}") from None
    proc = registered["procedure"]
    # the readings taken otherwise than by default, which the message names: a run their
    # params make invalid (two readings that do not combine) is no fault of the file
    taken = ", ".join(f"{k}={c}" for k, c in chosen.items()
                      if c != raw["readings"][k]["default"])
    # validate every run's parameters against the procedure's schema (unknown keys named);
    # a placeholder data dir lets paper-scale specs validate without one
    for r in spec.expand(data_dir=None if not _needs_data_dir(spec) else "<data-dir>",
                         read_files=False):
        try:
            proc.validate(r.params, where=f"{spec.name}[{scale}] run {r.label!r}")
        except ConfigError as e:
            axis = _grid_axis_refused(spec.grid, proc, str(e))
            if axis is not None:    # the key is misspelt where the file spells it: the grid
                e = ConfigError(f"{e} (the grid's axis {axis!r} sets it)")
            # the file and where it gives the key, under any readings
            notes = []
            if axis is None and (given := _where_given(raw, scale, r, str(e), chosen)):
                notes.append(f"given at {', '.join(given)}")
            elif axis is None and "missing parameter" in str(e):
                notes.append("give it in base, for every run, or in the run group's params")
            if taken:
                notes.append(f"with the readings {taken}")
            if notes:
                e = ConfigError(f"{e} ({'; '.join(notes)})")
            raise (e if source == "<config>" else ConfigError(f"{source}: {e}")) from None
        proc.validate_seed(r.params, r.seed, where=f"{spec.name}[{scale}].seeds")
    return spec


def _pieces(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """A choice's ``{params, labels, exact_labels}`` sets: its ``pieces``, or itself."""
    return choice["pieces"] if "pieces" in choice else [choice]


def _targets(piece: dict[str, Any]) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """A piece's ``labels`` and ``exact_labels`` as :func:`_reaches` reads them (None where
    the piece gives none)."""
    return (tuple(piece["labels"]) if "labels" in piece else None,
            tuple(piece["exact_labels"]) if "exact_labels" in piece else None)


def _check_reading_targets(where: str, readings: dict[str, Any], raw: dict[str, Any],
                           grid: dict[str, Any], scale: str) -> None:
    """Every choice's ``labels`` start, and its ``exact_labels`` are, some run group's label
    at some scale of the file (a scale without such groups is left as it is: a passage about
    a run the scale does not make), and no choice sets a grid axis (the run labels name the
    grid's values)."""
    groups = list(dict.fromkeys(
        g["label"] for runs in [raw.get("runs", [])] + [
            (ov or {}).get("runs", []) for ov in (raw.get("scales") or {}).values()]
        for g in runs))
    for key, r in readings.items():
        for name, choice in r["choices"].items():
            for i, c in enumerate(_pieces(choice)):
                at = f"{where}.{key}.choices.{name}" + (f".pieces[{i}]" if "pieces" in choice
                                                          else "")
                _check_piece_targets(at, c, groups, grid, scale)


def _check_piece_targets(at: str, c: dict[str, Any], groups: list[str], grid: dict[str, Any],
                         scale: str) -> None:
    """One choice's (or piece's) ``labels`` and ``exact_labels`` against the file's run
    groups ``groups``, and its ``params`` against the grid's axes."""
    for lab in c.get("labels", []):
        if not any(g.startswith(lab) for g in groups):
            raise ConfigError(f"{at}.labels: {lab!r} begins no run group's label at "
                              f"any scale ({', '.join(groups)})")
    for lab in c.get("exact_labels", []):
        if lab not in groups:
            raise ConfigError(f"{at}.exact_labels: {lab!r} is no run group's label at "
                              f"any scale{did_you_mean(lab, groups)} ({', '.join(groups)})")
    clash = sorted(set(c.get("params", {})) & set(grid))
    if clash:
        raise ConfigError(f"{at}.params: {clash[0]!r} is a grid axis at scale {scale!r}")


def _claims_of_readings(where: str, options: dict[str, Any], chosen: dict[str, str],
                        readings: dict[str, Any]) -> dict[str, Any]:
    """``options`` with only the claims of the chosen readings: a claim carrying ``reading:
    {KEY: CHOICE}`` (or a list of choices) is kept, without that key, when every named reading
    is taken so; a claim without one is always kept."""
    claims = options.get("claims")
    if not isinstance(claims, list) or not any(isinstance(c, dict) and "reading" in c
                                               for c in claims):
        return options
    kept = []
    for i, c in enumerate(claims):
        if not (isinstance(c, dict) and "reading" in c):
            kept.append(c)
            continue
        want = c["reading"]
        if not isinstance(want, dict) or not want:
            raise ConfigError(f"{where}[{i}].reading: expected a mapping reading -> choice")
        take = True
        for k, v in want.items():
            names = v if isinstance(v, list) else [v]
            if k not in readings:
                raise ConfigError(f"{where}[{i}].reading: unknown reading {k!r}"
                                  f"{did_you_mean(k, readings)}")
            for n in names:
                if not isinstance(n, str) or n not in readings[k]["choices"]:
                    raise ConfigError(f"{where}[{i}].reading: reading {k!r} has no choice "
                                      f"{n!r}{did_you_mean(str(n), readings[k]['choices'])}")
            take = take and chosen[k] in names
        if take:
            kept.append({kk: vv for kk, vv in c.items() if kk != "reading"})
    return {**options, "claims": kept}


def _needs_data_dir(spec: ExperimentSpec) -> bool:
    return spec.requires_data_dir or "${data_dir}" in json.dumps(
        [spec.base, spec.runs], default=str)


def needs_data_dir(spec: ExperimentSpec) -> bool:
    return _needs_data_dir(spec)


# libyaml's safe loader when available (10x faster than the pure-Python one); both only
# build plain data (no tags, nothing executed); ``1e-3`` a float, as in run configs
_Loader = exponent_floats(getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_yaml(text: str) -> Any:
    """The data of an experiment file's text, read as every experiment file is read."""
    return yaml.load(text, Loader=strict_yaml_loader(_Loader))


# parsed files by their text: the text is read every time (cheap; the parse is not), so an
# edit is never served stale, though it keep the size within a tick of a coarse file clock
_CACHE: dict[str, dict[str, Any]] = {}


def read_file(path: str | Path) -> dict[str, Any]:
    """The data of the experiment file at ``path``, the caller's own copy."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(not_a_config_file(path, "experiment config", (".yaml", ".yml")))
    text = read_config_text(path)
    if text not in _CACHE:
        try:
            raw = load_yaml(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: {yaml_problem(e, text)}") from None
        check_not_empty(raw, "experiment", path)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        _CACHE[text] = raw
    return copy.deepcopy(_CACHE[text])


def in_catalogue(path: str | Path) -> bool:
    """Whether experiment file ``path`` is one of the catalogue's."""
    # resolved: --config catalogue/NAME.yaml from the package's folder is that file
    return Path(path).resolve().parent == CATALOGUE_DIR.resolve()


def catalogue_files() -> dict[str, Path]:
    """Experiment name -> shipped YAML file, by name: `sgdlab list`, `sgdlab run --paper` and
    docs/RESULTS.md in one order (the files' order put chaudhari-entropy-sgd-rnn first: "-"
    sorts before the ".yaml" of the shorter name)."""
    return {p.stem: p for p in sorted(CATALOGUE_DIR.glob("*.yaml"), key=lambda p: p.stem)}


def list_names() -> list[str]:
    return list(catalogue_files())


def catalogue_papers() -> list[str]:
    """The papers of the catalogue: the first word of its names (``xing`` of ``xing-walk``)."""
    return sorted({n.split("-")[0] for n in catalogue_files()})


def catalogue_entries(paper: str) -> list[str]:
    """The catalogue names of ``paper`` (one of :func:`catalogue_papers`, or ``all``: every
    entry), in catalogue order; a ConfigError listing the papers for another word."""
    papers = catalogue_papers()
    if paper != "all" and paper not in papers:
        raise ConfigError(f"unknown paper {paper!r}{did_you_mean(paper, papers + ['all'])}; "
                          f"one of: {', '.join(papers)}, all")
    return [n for n in catalogue_files() if paper == "all" or n.split("-")[0] == paper]


# what the errors of `sgdlab report TARGET` say of a TARGET that is an experiment file
REPORT_TAKES_A_FILE = "`sgdlab report FILE.yaml` takes an experiment file of your own"


def catalogue_name(name: str, *, or_folder: bool = False) -> str:
    """The catalogue entry ``name`` spells (``Xing_Walk`` is ``xing-walk``); a ConfigError
    naming the closest entries for one that is not in the catalogue. ``or_folder``: ``name``
    could have been a folder too (`sgdlab report`'s target), and the error says it is none."""
    files = catalogue_files()
    spelled = name_spelling(name)  # as for models
    if name in files or spelled in files:
        return name if name in files else spelled
    import difflib

    held = [n for n in files if spelled in n or n in spelled]
    # a name held in more entries than difflib names at most ('a', 'x', a blank) guesses
    # nothing: it listed all forty
    close = held if len(held) <= 3 else []
    close += [n for n in difflib.get_close_matches(spelled, list(files), n=3, cutoff=0.75)
              if n not in close]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    from sgdlab.config.io import packaged_configs

    if name in packaged_configs():
        hint = (f": it is a packaged run config, trained with `sgdlab train {name}`, not an "
                "experiment of the catalogue")
    elif spelled in catalogue_papers():
        # `sgdlab run zhu`: the paper's entries are run together by --paper
        count = sum(n.split("-")[0] == spelled for n in files)
        hint = (f": it is a paper, whose {count} entries `sgdlab run --paper {spelled}` "
                f"runs one after another (`sgdlab list {spelled}` lists them)")
    what = (f"no experiment and no folder {name!r}" if or_folder
            else f"unknown experiment {name!r}")
    tail = "; `sgdlab list` shows the catalogue"
    if or_folder:       # a report's target may also be an experiment file of one's own
        tail += f", and {REPORT_TAKES_A_FILE}"
        here = [f"{name}{ext}" for ext in (".yaml", ".yml") if Path(f"{name}{ext}").is_file()]
        if here:
            tail += f" (`sgdlab report {here[0]}` for the {here[0]} here)"
    raise ConfigError(f"{what}{hint}{tail}")


def load_experiment(name_or_path: str | Path, scale: str = "smoke",
                    readings: dict[str, str] | None = None) -> ExperimentSpec:
    """A catalogue entry by name, or a user's YAML file by path, resolved at ``scale`` under
    the chosen ``readings`` (``{reading: choice}``, the defaults for the others)."""
    files = catalogue_files()
    s = str(name_or_path)
    spelled = name_spelling(s)  # Xing_Walk is xing-walk, as for models
    if s in files or spelled in files:
        path = files[s if s in files else spelled]
    elif s.endswith((".yaml", ".yml")) or Path(s).is_file() or Path(s).is_dir():
        path = Path(s)      # (a folder: read_file says it is one, not "unknown experiment")
        entry = name_spelling(path.stem)
        if not path.exists() and entry in files:
            # a catalogue file's name or its path from another folder: the name reaches it
            raise ConfigError(f"no experiment config {s!r}; the catalogue entry {entry} is "
                              f"given by its name alone: {entry} (its file: {files[entry]})")
    else:
        path = files[catalogue_name(s)]
    raw = read_file(path)
    if path.parent == CATALOGUE_DIR and raw.get("name") != path.stem:
        raise ConfigError(f"{path}: name {raw.get('name')!r} differs from the file name")
    spec = resolve(raw, scale, source=str(path), readings=readings)
    if path.parent != CATALOGUE_DIR and raw.get("name") in files:
        _check_option_numbers(spec, files[raw["name"]], scale, readings, str(path))
    return spec


def _check_option_numbers(spec: ExperimentSpec, packaged: Path, scale: str,
                          readings: dict[str, str] | None, source: str) -> None:
    """Refuse an edited copy of a catalogue entry (``sgdlab run --config``) whose analysis
    options hold something else than a number where the entry holds one: the analyses read
    them with ``float()`` once every run has trained, and stopped there on a traceback. The
    entry is read at the same scale and readings; a copy whose readings it lacks is not
    compared."""
    try:
        theirs = resolve(read_file(packaged), scale, source=str(packaged), readings=readings)
    except ConfigError:
        return
    problems: list[str] = []

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def compare(mine: dict[str, Any], ref: dict[str, Any], path: str) -> None:
        for k in mine.keys() & ref.keys():
            a, b = mine[k], ref[k]
            if isinstance(a, dict) and isinstance(b, dict):
                compare(a, b, f"{path}.{k}")
            elif number(b) and a is not None and not number(a):
                problems.append(f"{path}.{k} must be a number (the catalogue's {spec.name} "
                                f"has {b!r} at scale {scale}), got {a!r}")

    compare(spec.options, theirs.options, "options")
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)}")
