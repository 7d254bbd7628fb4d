"""What ``sgdlab run`` would do, without doing it (``sgdlab run --dry-run``).

The experiment is resolved and its sweep expanded by the code a real run uses
(:func:`sgdlab.experiments.runner.prepare`, :meth:`ExperimentSpec.expand`, the sweep's
option checks and dependency layers); the store is opened read-only (and not at all when its
file is absent) to mark the runs it holds as finished, which a run would skip. The files the
runs to execute read (datasets in their ``data_dir``, weights) are looked up as their loaders
look them up, without loading them (a file dataset's training examples, which the steps are
counted with, are read from its headers or label lists); a data file of the experiment's own
(``dataset: {file: PATH}``) is loaded once, to count its examples and meet its loader's
refusals. Nothing is trained, and neither the store nor the output folder is created or
written.

A problem that makes the real run fail for certain (a file missing for a run that would
execute, a ``train_size`` above the training examples in the files, an output folder with a
file in the way, Ray not installed or not answering at the address, an option the analysis
does not read or against its rule, a claim of the analysis naming a group the runs will not
form or a metric they will not record: :func:`claim_problems`) is listed with the message the
run would give; the plan is then not ``ok``. With ``backend="ray"`` a file missing on this
machine is a note, not a problem: the real run does not look for it here (each Ray task reads
it at the same path on its own node), so it would not fail for that.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgdlab.errors import UserError, int_at_least
from sgdlab.experiments.resources import amount
from sgdlab.experiments.runner import default_out_dir, foreign_out_dir, prepare
from sgdlab.experiments.spec import ExperimentSpec, RunSpec, expand_data_dir, wall_time_text
from sgdlab.experiments.sweep import (dependency_layers, finished_runs, run_device,
                                     run_threads, stored_under)
from sgdlab.report.verdicts import DERIVED

if TYPE_CHECKING:
    from sgdlab.data.files import TrainSize

# the run parameters that say how long a run is, by procedure: train, replicas (Parle),
# zhu_escape, double_well, pspin
LENGTH_KEYS = ("epochs", "max_steps", "grad_evals", "iterations", "repetitions", "time",
               "starts")


@dataclass
class PlannedRun:
    run: RunSpec
    swept: dict[str, Any]            # grid axis -> this run's value
    length: dict[str, Any]           # the parameters of LENGTH_KEYS the run sets
    steps: int | None                # optimizer steps, when its parameters tell
    stored: str | None               # the store's run id when finished there (skipped)


@dataclass
class DataNeed:
    """One file source (a dataset in a folder, a weights file) and the runs that read it."""

    what: str                        # "mnist in /data", "weights /data/vgg16.pth"
    found: str | None                # where it was found; None when missing
    problem: str | None              # the message loading it would give
    at_path: bool = True             # looked for at a path (not a dataset given no folder)
    train_size: TrainSize | None = None     # a file dataset's training examples
    dataset: str | None = None       # the dataset's name as the runs give it (None: weights)
    data_dir: str | None = None      # ... and its folder
    runs: int = 0                    # runs that read it
    to_run: int = 0                  # ... of them that would execute


@dataclass
class Plan:
    spec: ExperimentSpec
    runs: list[PlannedRun]
    settings: dict[str, Any]         # device, backend, workers, store, out, ...
    datasets: list[str]              # the dataset names the runs load
    files: list[DataNeed] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # the real run would fail on these
    notes: list[str] = field(default_factory=list)      # worth knowing; the run goes on

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def to_run(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.stored is None]

    @property
    def steps(self) -> tuple[int, int]:
        """(optimizer steps of the runs to execute whose length is known, how many those are)."""
        known = [r.steps for r in self.to_run if r.steps is not None]
        return sum(known), len(known)

    def to_json(self) -> dict[str, Any]:
        total, known = self.steps
        return {
            "experiment": self.spec.name, "version": self.spec.version,
            "title": self.spec.title, "scale": self.spec.scale,
            "readings": dict(self.spec.readings), **self.settings,
            "runs": [{"key": p.run.key, "label": p.run.label, "seed": p.run.seed,
                      "swept": p.swept, "length": p.length, "steps": p.steps,
                      "status": "stored" if p.stored else "to run", "run_id": p.stored}
                     for p in self.runs],
            "totals": {"runs": len(self.runs), "to_run": len(self.to_run),
                       "stored": len(self.runs) - len(self.to_run),
                       "steps": total if known == len(self.to_run) else None,
                       "steps_known": total, "runs_with_known_steps": known},
            "wall_minutes": self.spec.wall_minutes(),
            "datasets": list(self.datasets),
            "files": [{"what": f.what, "found": f.found, "problem": f.problem, "runs": f.runs,
                       "to_run": f.to_run,
                       "train_size": None if f.train_size is None else f.train_size._asdict()}
                      for f in self.files],
            "deviations": list(self.spec.deviations),
            "derived_deviations": self.spec.derived_deviations(),
            "problems": list(self.problems), "notes": list(self.notes), "ok": self.ok,
        }

    def lines(self, *, departures: bool = True) -> list[str]:
        """The plan as text, one run a line; the scale's departures from the paper in full
        with ``departures``, else counted, with the command that lists them (a batch of
        entries, where they would fill pages)."""
        s, st = self.spec, self.settings
        tag = "".join(f", {k}={c}" for k, c in s.changed_readings().items())
        out = [f"dry run: {s.name} v{s.version} [{s.scale}{tag}] — {s.title}"]
        if s.readings:
            out.append("readings: " + ", ".join(f"{k}={c}" for k, c in s.readings.items()))
        where = f"backend {st['backend']}"
        if st["backend"] == "ray":
            where += (f" ({st['address'] or 'a Ray instance on this machine'}; per run "
                      f"{st['cpus_per_run'] or 1:g} CPUs, {st['gpus_per_run'] or 0:g} GPUs)")
        workers = st["workers"] if st["workers"] is not None else (
            1 if st["backend"] == "local" else "as the cluster holds")
        out.append(f"device {st['device']}, {where}, workers {workers}, "
                   f"{st['threads_per_run']} torch threads per run")
        store = st["store"] + ("" if st["store_exists"] else " (absent: would be created)")
        out.append(f"store: {store}")
        out.append(f"out:   {st['out']}")
        if st["data_dir"] is not None:
            out.append(f"data:  {st['data_dir']}")
        out.append(f"runs ({len(self.runs)}):")
        width = max((len(p.run.run_name) for p in self.runs), default=0)
        for p in self.runs:
            length = " ".join(f"{k}={v}" for k, v in p.length.items()) or "-"
            steps = "" if p.steps is None else f", {p.steps} step{'s' * (p.steps != 1)}"
            state = f"stored ({p.stored}), skipped" if p.stored else "would run"
            out.append(f"  {p.run.run_name:<{width}}  {length}{steps}  {state}")
        total, known = self.steps
        n = len(self.to_run)
        out.append(f"to run: {n} of {len(self.runs)} ({len(self.runs) - n} already stored)")
        if n and known == n:
            out.append(f"training steps: {total}")
        elif n and not known:
            out.append("training steps: not told by the runs' parameters")
        elif n:
            out.append(f"training steps: {total} in the {known} of {n} runs to execute whose "
                       "parameters tell (the others' depend on their data's size)")
        minutes = self.spec.wall_minutes()
        if n and minutes is not None:
            out.append(f"wall time: {wall_time_text(minutes)} for all {len(self.runs)} runs as "
                       "measured for docs/RESULTS.md (2 cores, --workers 2)")
        out.append("datasets: " + (", ".join(self.datasets) or "none"))
        for f in self.files:
            used = f"read by {f.runs} runs, {f.to_run} to execute"
            if f.found is not None and f.problem is not None:     # a data file its loader refuses
                out.append(f"  {f.what}: found ({f.found}), REFUSED; {used} (the error below)")
            elif f.found is not None:
                out.append(f"  {f.what}: found ({f.found}); {used}")
            elif f.to_run and self._on_nodes(f):
                out.append(f"  {f.what}: not found on this machine; {used} ({ON_NODES})")
            elif f.to_run:
                out.append(f"  {f.what}: MISSING; {used} (the error below)")
            else:
                out.append(f"  {f.what}: missing, {used}: {f.problem}")
            if f.train_size is not None:     # what the steps above are counted with
                out.append(f"    training set: {f.train_size}")
        return out + (self._departure_lines() if departures else [self._departure_count()])

    def _departure_count(self) -> str:
        """One line: how many departures the scale has and where they are listed."""
        s = self.spec
        # the lists _departure_lines shows: a reading's own besides those derived, if any
        counts = [f"{len(devs)} {how}" for devs, how in (
            (s.deviations, "listed"), (s.derived_deviations(), "derived from the config"))
            if devs]
        if not counts:
            return f"departures from the paper at scale {s.scale}: none listed"
        readings = "".join(f" --reading {k}={c}" for k, c in s.changed_readings().items())
        return (f"departures from the paper at scale {s.scale}: {', '.join(counts)} (`sgdlab "
                f"run {s.name} --scale {s.scale}{readings} --dry-run` lists them)")

    def _departure_lines(self) -> list[str]:
        """Where this scale departs from the paper, as the report shows it: as the entry
        lists it (with its readings'), and as derived from the config where the entry lists
        none for the scale (:meth:`ExperimentSpec.derived_deviations`), said to be derived."""
        s, out = self.spec, []
        for devs, how in ((s.deviations, ", as the entry lists them"),
                          (s.derived_deviations(), f", {DERIVED}")):
            if devs:
                out.append(f"departures from the paper at scale {s.scale}{how}:")
                out += [f"  - {' '.join(d.split())}" for d in devs]
        return out or [f"departures from the paper at scale {s.scale}: none listed"]

    def _on_nodes(self, need: DataNeed) -> bool:
        """Whether ``need``, missing here, is read only where the runs execute: on Ray, each
        task on its node (a dataset given no folder fails there too)."""
        return self.settings["backend"] == "ray" and need.at_path


# why a file missing here is no problem on Ray
ON_NODES = "the Ray tasks read it at the same path on their nodes"


def plan_experiment(name_or_path: str | Path, *, scale: str = "cpu",
                    out_dir: str | Path | None = None, store_path: str | None = None,
                    workers: int | None = None, device: str = "cpu",
                    data_dir: str | None = None, backend: str | None = None,
                    address: str | None = None, cpus_per_run: float | None = None,
                    gpus_per_run: float | None = None,
                    readings: dict[str, str] | None = None) -> Plan:
    """The plan of :func:`sgdlab.experiments.runner.run_experiment` with the same arguments
    (see the module docstring). Errors that stop a real run before its sweep (an invalid
    file, no ``--data-dir``, contradictory options) are raised as they are there."""
    data_dir = expand_data_dir(data_dir)
    spec, runs, backend, cpus_per_run, gpus_per_run = prepare(
        name_or_path, scale=scale, device=device, data_dir=data_dir, backend=backend,
        cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, readings=readings,
        workers=workers, address=address)
    if runs:
        dependency_layers(runs)           # a dependency cycle fails the run before it starts
    store, done = _stored(store_path, runs)
    out = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    from sgdlab.experiments.procedures import get_procedure

    proc = get_procedure(spec.procedure)
    planned = [PlannedRun(r, r.grid_point,
                          {k: r.params[k] for k in LENGTH_KEYS if k in r.params},
                          proc.planned_steps(r.params),
                          str(done[r.key]["id"]) if r.key in done else None)
               for r in runs]
    plan = Plan(spec, planned, {
        "device": run_device(backend, device, amount(gpus_per_run)), "backend": backend,
        "address": address or (os.environ.get("RAY_ADDRESS") if backend == "ray" else None),
        "workers": workers, "cpus_per_run": amount(cpus_per_run),
        "gpus_per_run": amount(gpus_per_run),
        "threads_per_run": run_threads(backend, workers, amount(cpus_per_run)),
        "store": str(store), "store_exists": store.is_file(), "out": str(out),
        "data_dir": data_dir}, datasets=[])
    plan.problems += claim_problems(spec, runs)
    _check_files(plan)
    blocked = _blocked(out) or foreign_out_dir(out, spec)
    if blocked:
        plan.problems.append(blocked)
    if plan.to_run and not store.is_file():
        problem = _store_problem(store)
        if problem:
            plan.problems.append(problem)
    if backend == "ray" and plan.to_run:
        from sgdlab.experiments.ray_backend import ready_ray

        try:
            ready_ray(address)        # what the run's check_backend asks, by the same code
        except UserError as e:
            plan.problems.append(str(e))
    return plan


def claim_problems(spec: ExperimentSpec, runs: list[RunSpec]) -> list[str]:
    """The analysis' options it does not read or whose values break the rules it declared
    (:func:`~sgdlab.experiments.procedures.analysis_option_problems`), else what its claims
    (and its other options that name groups or metrics) name that ``runs`` will not form or
    record, as far as the experiment tells before any run trains (the analysis'
    ``claim_names``, :class:`~sgdlab.experiments.procedures.ClaimNames`), each naming the
    file: found only when the report is written, such a mistake cost the whole sweep's wait."""
    from sgdlab.experiments.procedures import analysis_claim_names
    from sgdlab.experiments.procedures.common import unknown_claim_names

    found = option_problems(spec)
    names_of = analysis_claim_names(spec.analysis)
    # claim_names reads the options as their rules say: not when they break them
    if not found and names_of is not None and runs:
        names = names_of(spec, runs)
        found = [f"{spec.source}: {p}" for p in names.problems + unknown_claim_names(
            spec.options.get("claims"), names, spec.options)]
    return found


def option_problems(spec: ExperimentSpec) -> list[str]:
    """The analysis' options of ``spec`` that break the rules it declared
    (:func:`~sgdlab.experiments.procedures.analysis_option_problems`), each naming the file:
    checked before the runs train and before a report of stored runs analyses them."""
    from sgdlab.experiments.procedures import analysis_option_problems

    return [f"{spec.source}: {p}"
            for p in analysis_option_problems(spec.analysis, spec.options)]


def _store_problem(path: Path) -> str | None:
    """Why a store that does not exist yet could not be created at ``path``, or None: the
    nearest existing folder above it must be a folder, and writable."""
    p = _first_existing(path.parent)
    if p is None:
        return None
    if not p.is_dir():
        return f"run store {str(path)!r}: cannot create it: {p} is a file, not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"run store {str(path)!r}: cannot create it: {p} is not writable"
    return None


def _first_existing(path: Path) -> Path | None:
    """``path`` or the nearest of its parents that exists (None: none does)."""
    return next((p for p in (path, *path.parents) if p.exists()), None)


def _stored(store_path: str | None, runs: list[RunSpec]) -> tuple[Path, dict[str, dict]]:
    """The store's file and its finished runs of the experiments ``runs`` are stored under
    (:func:`~sgdlab.experiments.sweep.stored_under`), read without creating or writing the
    store."""
    from sgdlab.store import RunStore, default_store_path

    path = Path(store_path) if store_path is not None else default_store_path()
    if path.is_dir():
        from sgdlab.store import folder_hint
        raise UserError(f"run store path {str(path)!r} is a directory, expected a file"
                        f"{folder_hint(path, said=True)}")
    if not path.is_file():
        return path, {}
    store = RunStore(path, readonly=True)
    try:
        return path, finished_runs(store, stored_under(runs))
    finally:
        store.close()


def _check_files(plan: Plan) -> None:
    """Look up the files each run reads; a missing one needed by a run to execute is a
    problem (a stored run is not run again, so what it read may be gone), or on Ray a note:
    the real run does not look for it on this machine (``run_experiment``)."""
    plan.datasets, plan.files = data_needs([p.run for p in plan.runs],
                                           {p.run.key for p in plan.runs if p.stored},
                                           count_train=True)
    for f in missing_needs(plan.files):
        if plan._on_nodes(f):
            plan.notes.append(f"{f.what}: not found on this machine: {ON_NODES}")
        else:
            plan.problems.append(f.problem)
    plan.problems += _subsets_too_large(plan)


def _subsets_too_large(plan: Plan) -> list[str]:
    """A problem for each file dataset whose runs to execute ask for a ``train_size``
    subset larger than the training examples counted in its files (the loader would refuse
    it when the run starts), the runs named. The counts are the plan's files' (counted once,
    by :func:`data_needs`)."""
    counts = {(f.dataset, str(f.data_dir)): f.train_size for f in plan.files
              if f.dataset is not None}
    asked: dict[tuple[str, str, int], list[str]] = {}
    for p in plan.runs:
        ds = p.run.params.get("dataset")
        if p.stored or not isinstance(ds, dict) or "name" not in ds:
            continue
        size = ds.get("train_size")
        if int_at_least(size, 1):
            asked.setdefault((str(ds["name"]), ds.get("data_dir"), size), []).append(
                p.run.label)
    out = []
    for (name, where, size), labels in asked.items():
        counted = counts.get((name, str(where)))
        if counted is not None and counted.counted and size > counted.n:
            k = len(labels)
            out.append(f"{name}: train_size {size:,} of {k} run{'s' if k != 1 else ''} "
                       f"[{'; '.join(labels)}] is more than the {counted}: give a "
                       f"train_size of at most {counted.n:,}, or point --data-dir at the "
                       "whole training set")
    return out


def data_needs(runs: list[RunSpec], stored: set[str], *, count_train: bool = False
               ) -> tuple[list[str], list[DataNeed]]:
    """The dataset names ``runs`` load, and the files they read (datasets in their
    ``data_dir``, weights), looked up as their loaders look them up without reading them.
    ``stored``: the keys of the runs the store holds finished, which do not execute.
    ``count_train``: also count a file dataset's training examples (headers only: what the
    plan's steps are counted with, said beside the files). A data file (``dataset: {file:
    PATH}``) is read by its loader, found as the checksum its runs' keys name, its examples
    counted in its ``x_train``."""
    import inspect

    from sgdlab.data import DATASETS
    from sgdlab.data.files import TrainSize, data_file_examples, train_size_in_files
    from sgdlab.data.registry import canonical_name

    needs: dict[tuple[str, str], DataNeed] = {}

    def need(kind: str, where: str | None, look, count: bool = False) -> DataNeed:
        """The need of ``kind`` (a dataset's name, or "weights") at ``where``, looked up (and
        a dataset's training examples counted, ``count``) the first time only."""
        if (kind, str(where)) not in needs:
            try:
                found, problem = look() or "not looked up", None
            except UserError as e:       # a DataError is one
                found, problem = None, str(e)
            what = (f"weights {where}" if kind == "weights"
                    else kind if where is None else f"{kind} in {where}")
            needs[kind, str(where)] = DataNeed(
                what, found, problem, at_path=where is not None,
                train_size=train_size_in_files(kind, where) if count else None,
                dataset=None if kind == "weights" else kind,
                data_dir=None if kind == "weights" else where)
        return needs[kind, str(where)]

    def file_need(path: str, sha256: str | None) -> DataNeed:
        """The need of data file ``path``: read by its loader once (its refusals the
        problem), its training examples and the checksum its runs are keyed by said."""
        if ("data file", path) not in needs:
            # found: the expansion took its checksum; read, it may still be refused
            found, problem, size = f"sha256 {sha256}", None, None
            try:
                size = TrainSize(data_file_examples(path, sha256), True, "x_train of the file")
            except UserError as e:      # a DataError is one
                problem = str(e)
            needs["data file", path] = DataNeed(f"data file {path}", found, problem,
                                                train_size=size if count_train else None)
        return needs["data file", path]

    names: list[str] = []
    for r in runs:
        hits = []
        ds = r.params.get("dataset")
        if isinstance(ds, dict) and isinstance(ds.get("file"), str):
            name = f"data file {Path(ds['file']).name}"
            names += [name] if name not in names else []
            hits.append(file_need(ds["file"], ds.get("sha256")))
        elif isinstance(ds, dict) and "name" in ds:
            name, where = str(ds["name"]), ds.get("data_dir")
            names += [name] if name not in names else []
            loader = DATASETS.get(canonical_name(name))
            if loader is not None and "data_dir" in inspect.signature(loader).parameters:
                hits.append(need(name, where, lambda n=name, d=where, f=ds.get("path"):
                                 _look_up(n, d, f), count=count_train))
        model = r.params.get("model")
        if isinstance(model, dict) and model.get("name") == "musso-vgg16" \
                and isinstance(model.get("weights"), str):
            from sgdlab.models.musso import weights_file

            hits.append(need("weights", model["weights"],
                             lambda w=model["weights"]: str(weights_file(w))))
        for h in hits:
            h.runs += 1
            h.to_run += r.key not in stored
    return names, list(needs.values())


def _look_up(name: str, data_dir: str | None, path: str | None = None) -> str | None:
    from sgdlab.data.files import find_files

    try:
        return find_files(name, data_dir, path)
    except UserError:
        if data_dir is not None:
            raise
        # the loader's own message names a run config's data.data_dir, not how an
        # experiment file passes the folder (`--data-dir` fills in ${data_dir})
        raise UserError(f"dataset {name!r} reads files and the experiment gives it no folder: "
                        "write `data_dir: ${data_dir}` in its dataset mapping and pass "
                        "--data-dir DIR") from None


def missing_needs(needs: list[DataNeed]) -> list[DataNeed]:
    """The files missing for a run that would execute."""
    return [f for f in needs if f.problem is not None and f.to_run]


def missing_files(needs: list[DataNeed]) -> list[str]:
    """The messages of the files missing for a run that would execute."""
    return [f.problem for f in missing_needs(needs)]


def check_data(runs: list[RunSpec], store_path: str | None) -> None:
    """Raise a :class:`UserError` naming every file missing for a run of ``runs`` that the
    store does not hold finished: each such run would fail on it (what the plan lists)."""
    _, done = _stored(store_path, runs)
    problems = missing_files(data_needs(runs, set(done))[1])
    if problems:
        raise UserError("\n".join(problems))


def _blocked(out: Path) -> str | None:
    """The message of a real run whose output folder cannot be created for a file in the
    way (``make_output_dir``); None when it can be (as far as a look tells)."""
    p = _first_existing(out)
    return None if p is None or p.is_dir() else (f"--out {out}: cannot create the folder: {p} "
                                                 "is a file, not a folder")
