"""Sweeps: execute an experiment's runs, recorded in the run store by one writer, the driver.

- Every run has a deterministic key (``RunSpec.key``); a run whose key is already in the store
  with status ``finished`` or ``diverged`` is skipped, so re-running an interrupted sweep
  completes only the missing (never-started, failed, killed) runs.
- **One writer.** This process (the driver) creates each run, claims its key with a lease in
  the store, hands the run to a backend (:mod:`sgdlab.experiments.backends`: this process or
  ``workers`` spawned processes), writes the metric rows the run streams back, and commits
  its end — last rows, artifacts, summary, status, lease release — in one transaction. A run
  is ``finished`` only with everything it owes.
- **Kills.** A worker that dies loses only its run: the run is recorded ``failed`` naming the
  signal, it is retried once on a fresh worker (``retries``), and the sweep carries on.
  Ctrl-C or SIGTERM stops the workers and records their runs ``interrupted``. A SIGKILLed
  driver takes its workers with it; its runs show as ``interrupted`` (their process is gone)
  and its leases are taken over by the next sweep.
- **Resume.** A procedure that checkpoints (``train``: at an epoch end, at most once a
  minute) keeps its checkpoint in ``checkpoint/`` of the run key's artifact folder. The next
  attempt of the key (the retry of a lost run, a re-run sweep) keeps that folder, is given
  the rows the checkpoint counted (copied from the attempt that wrote it) and continues from
  it: the run ends with the rows, summary and files of an uninterrupted one. The checkpoint
  is removed once the run is finished or diverged; its final weights stay (``train``'s
  ``weights.pt``: model only, for dependants, warm starts and ``sgdlab measure``). A Ray
  task sends each checkpoint it writes to the driver (after the rows it counts), which
  writes it there; a Ray attempt that resumes gets that folder in its task. Either backend
  resumes the other's checkpoints. A procedure that continues from a state of its own
  (``Procedure.resumes_from``: a distributed ``replicas`` run's checkpoint set) has the
  earlier attempt's folder kept for it (a Ray task gets it; a Ray attempt's comes back with
  its failure, not when it is lost); once the run has finished, the folders only a resume
  reads go (``Procedure.resume_folders``), as the training loop's checkpoint does.
- **Leases.** Two sweeps on one store never run the same key at once: a key leased by a live
  process is waited for (and counted as done when that process finishes it).
- **Backends** (``backend=``): ``"local"`` runs in this process (``workers=1``) or in
  ``workers`` spawned processes, each with ``max(1, cores // workers)`` torch threads
  (``$SGDLAB_THREADS`` overrides); ``"ray"`` runs each run as a Ray task with
  ``cpus_per_run`` CPUs (its torch threads) and ``gpus_per_run`` GPUs, on a local Ray instance
  or the cluster at ``address`` (:mod:`sgdlab.experiments.ray_backend`). The store is the same
  either way: a sweep started on one backend is finished by the other.
- Runs may depend on other runs of the same experiment (``depends: [label]``, e.g. "start from
  the GD solution" or "interpolate between run A and run B"): the sweep runs in dependency
  layers and hands each run the artifact directories of the runs it depends on (same seed).
- A run that fails on its *input* (a ``UserError``: missing data file, invalid option) stops
  the sweep with that message once the runs in flight have ended, since every other run
  would fail the same way.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdlab.errors import ConfigError, ReportInterrupted, UserError
from sgdlab.experiments.procedures import StoredRun, get_procedure
from sgdlab.experiments.resources import PerRun, amount, per_run
from sgdlab.experiments.spec import RunSpec, dependency_run, in_catalogue
from sgdlab.experiments.worker import (CHECKPOINT_DIR, RunContext, RunRecord,
                                       apply_checkpoint, task_for, write_files)
from sgdlab.strict_json import nan_in_arrays

__all__ = ["BACKENDS", "DONE", "RunContext", "SweepReport", "check_backend", "check_options",
           "dependency_layers", "finished_runs", "load_runs", "make_backend", "open_store",
           "run_device", "run_sweep", "stored_under", "threads_per_worker"]

BACKENDS = ("local", "ray")

DONE = ("finished", "diverged")
WAIT_POLL = 1.0          # seconds between looks at keys another sweep is running
HEARTBEAT = 30.0         # seconds of silence after which the sweep says which runs are running


@dataclass
class SweepReport:
    executed: list[str] = field(default_factory=list)     # run keys run now
    skipped: list[str] = field(default_factory=list)      # already finished in the store
    failed: list[tuple[str, str]] = field(default_factory=list)   # (label|seed, message)
    seconds: float = 0.0


def open_store(store_path: str | os.PathLike | None):
    from sgdlab.store import RunStore

    return RunStore(store_path) if store_path is not None else RunStore()


def store_file(store) -> Path:
    p = getattr(store, "path", None)
    if p is None:
        raise UserError("the run store does not expose its path")
    return Path(p)


def artifacts_root(store) -> Path:
    """``artifacts/`` beside the store, absolute (:func:`sgdlab.store.folders.sweep_artifacts`)."""
    from sgdlab.store.folders import sweep_artifacts

    return sweep_artifacts(store_file(store))


def artifact_file(path: str, store_path: str | os.PathLike) -> Path:
    """The file of a recorded artifact path. Absolute as recorded; a relative one (stores
    written before the paths were absolute hold them relative to the folder `sgdlab run` was
    started in) is looked for under this store's ``artifacts/`` first, then as it stands."""
    p = Path(path)
    if p.is_absolute() or "artifacts" not in p.parts:
        return p
    tail = p.parts[len(p.parts) - 1 - p.parts[::-1].index("artifacts"):]
    beside = Path(os.path.abspath(store_path)).parent.joinpath(*tail)
    return beside if beside.is_file() else p


def finished_runs(store, experiment: str | Iterable[str]) -> dict[str, dict[str, Any]]:
    """run key -> stored run row, for finished/diverged runs of ``experiment`` (latest wins),
    or of each of several: the experiments ``stored_under`` names."""
    out: dict[str, dict[str, Any]] = {}
    for name in [experiment] if isinstance(experiment, str) else sorted(set(experiment)):
        for row in store.list_runs(experiment=name):
            cfg = row.get("config") or {}
            if isinstance(cfg, str):
                cfg = json.loads(cfg)
            key = cfg.get("run_key")
            if key and row.get("status") in DONE:
                out[key] = row
    return out


def stored_under(runs: list[RunSpec]) -> set[str]:
    """The experiments ``runs`` are stored under: their entry's, and another entry's for a
    run keyed as that entry's (``same_as``)."""
    return {r.experiment for r in runs}


def dependency_layers(runs: list[RunSpec]) -> list[list[RunSpec]]:
    """Topological layers by ``depends`` (labels within the same seed)."""
    by_label = {}
    for r in runs:
        by_label.setdefault(r.label, []).append(r)
    depth: dict[tuple[str, int], int] = {}

    def d(r: RunSpec, stack: tuple[str, ...] = ()) -> int:
        k = (r.label, r.seed)
        if k in depth:
            return depth[k]
        if r.label in stack:
            raise ConfigError(f"{r.experiment}: dependency cycle through {r.label!r}")
        best = 0
        for dep in r.depends:
            best = max(best, 1 + d(dependency_run(by_label, dep, r.seed), stack + (r.label,)))
        depth[k] = best
        return best

    layers: dict[int, list[RunSpec]] = {}
    for r in runs:
        layers.setdefault(d(r), []).append(r)
    return [layers[i] for i in sorted(layers)]


def threads_per_worker(workers: int) -> int:
    """torch threads per run: ``$SGDLAB_THREADS`` if set, else cores // workers (>= 1), at
    most ``$OMP_NUM_THREADS`` when that is set (a cap the user put on the process: torch
    reads it at import, and setting the threads here would override it)."""
    env = os.environ.get("SGDLAB_THREADS")
    if env:
        return max(1, _env_int("SGDLAB_THREADS", env))
    n = max(1, (os.cpu_count() or 1) // workers)
    omp = os.environ.get("OMP_NUM_THREADS")
    return min(n, max(1, _env_int("OMP_NUM_THREADS", omp))) if omp else n


def _env_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name} must be an integer, got {value!r}") from None


def run_sweep(runs: list[RunSpec], *, store_path: str | None = None, workers: int | None = None,
              device: str = "cpu", progress: Callable[[str], None] | None = print,
              train_progress: bool = False, retries: int = 1, backend: str = "local",
              address: str | None = None, cpus_per_run: float | PerRun | None = None,
              gpus_per_run: float | PerRun | None = None, source: str | None = None,
              command: str | None = None, tensorboard: str | os.PathLike | None = None,
              ray_checked: bool = False) -> SweepReport:
    """Execute the runs that the store does not hold yet. See the module docstring.
    ``retries``: how many times a run whose worker (or Ray task) was lost is tried again.
    ``source``: the experiment file, recorded with each run unless it is a catalogue entry
    (so the command that continues a stopped run can name it); ``command``: the command line
    that continues the sweep (``sgdlab run ...`` as it was given), recorded with each run.
    ``tensorboard``: a folder where each run's metrics are written live as TensorBoard event
    files (:class:`sgdlab.train.tensorboard.LiveRuns`). ``cpus_per_run``, ``gpus_per_run``:
    numbers (as the flags give them) or :class:`~sgdlab.experiments.resources.PerRun` (which
    also say where they came from, for the Ray backend's refusals). ``ray_checked``: the
    caller's :func:`check_backend` of these runs answered True (``run_experiment`` asks it
    before making its folder): Ray is not checked again, nor its address probed."""
    cpus_per_run, gpus_per_run = per_run("cpus", cpus_per_run), per_run("gpus", gpus_per_run)
    check_options(workers=workers, backend=backend, address=address,
                  gpus_per_run=amount(gpus_per_run))
    ray_checked = ray_checked or check_backend(backend, runs, store_path, address)
    curves = None
    if tensorboard is not None:
        from sgdlab.train.tensorboard import LiveRuns

        curves = LiveRuns(tensorboard)      # a missing package is said before any run
    t0 = time.perf_counter()
    store = open_store(store_path)
    rep = SweepReport()
    if not runs:
        return rep
    driver = _Driver(store, runs, rep, say=progress or (lambda s: None), device=device,
                     workers=workers, train_progress=train_progress, retries=retries,
                     backend=backend, address=address, cpus_per_run=cpus_per_run,
                     gpus_per_run=gpus_per_run, source=source, command=command,
                     curves=curves, address_checked=bool(ray_checked))
    ended = False
    try:
        for layer in driver.layers:
            driver.run_layer(layer)
        ended = True
    except BaseException as e:
        driver.stop(e)
        raise
    finally:
        if driver.curves is not None:
            driver.curves.close_all()
        try:
            if driver._backend is not None:
                driver._backend.close()
        except KeyboardInterrupt as e:
            if not ended:
                raise
            # every run has ended and is stored: only its workers (or Ray) were being stopped
            raise ReportInterrupted(*e.args) from None
    rep.seconds = time.perf_counter() - t0
    return rep


def check_options(*, workers: int | None, backend: str, address: str | None,
                  gpus_per_run: float | None, cpus_per_run: float | None = None) -> None:
    """The sweep options that cannot go together, refused before anything runs.
    ``cpus_per_run``, ``gpus_per_run``: as given on the command line (an experiment's
    resources, ``$SGDLAB_CPUS_PER_RUN`` and ``$SGDLAB_GPUS_PER_RUN`` are for Ray, and left
    unused by the local backend)."""
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    given = [flag for flag, v in (("--address", address is not None),
                                  ("--cpus-per-run", cpus_per_run is not None),
                                  ("--gpus-per-run", bool(gpus_per_run))) if v]
    if backend == "local" and given:
        # the local backend would ignore them: its runs take cores // --workers threads
        raise UserError(f"{' and '.join(given)} "
                        f"{'are options' if len(given) > 1 else 'is an option'} of --backend "
                        "ray; the local backend gives each run cores // --workers torch "
                        "threads ($SGDLAB_THREADS sets them)")


def check_backend(backend: str, runs: list[RunSpec], store_path: str | None,
                  address: str | None = None) -> bool:
    """A backend the sweep will start (some run is not done in the store) that cannot start
    here (Ray not installed, no Ray at ``address`` or ``$RAY_ADDRESS``: ``ready_ray``) is a
    ``UserError`` before the store or an output folder is made: the backend itself starts
    only with the first run. True where Ray was checked and is ready (handed on to the
    backend, which then does not probe the address again); False where nothing was checked
    (the local backend, nothing to run)."""
    if backend != "ray" or not runs:
        return False
    from sgdlab.store import default_store_path

    path = Path(store_path or default_store_path())
    if path.is_file():
        store = open_store(path)
        try:
            done = finished_runs(store, stored_under(runs))
        finally:
            store.close()
        if all(r.key in done for r in runs):
            return False
    from sgdlab.experiments.ray_backend import ready_ray

    ready_ray(address)
    return True


def run_device(backend: str, device: str, gpus_per_run: float | None) -> str:
    """The device the runs train on: a Ray run given a GPU uses it."""
    return "cuda" if backend == "ray" and gpus_per_run and device == "cpu" else device


def make_backend(backend: str, on_rows, *, workers: int | None, address: str | None = None,
                 cpus_per_run: float | PerRun | None = None,
                 gpus_per_run: float | PerRun | None = None, on_checkpoint=None,
                 address_checked: bool = False):
    """The backend ``run_sweep``'s options ask for. ``on_checkpoint(run_id, shipped)``: where
    the Ray backend hands the checkpoints its tasks send (the local ones write their own).
    ``address_checked``: :func:`check_backend` answered True (see ``RayBackend``)."""
    from sgdlab.experiments.backends import InProcessBackend, ProcessPoolBackend

    if backend == "ray":
        from sgdlab.experiments.ray_backend import RayBackend

        return RayBackend(on_rows, address=address, workers=workers,
                          cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                          on_checkpoint=on_checkpoint, address_checked=address_checked)
    workers = workers or 1
    return InProcessBackend(on_rows) if workers == 1 else ProcessPoolBackend(workers, on_rows)


def run_threads(backend: str, workers: int | None, cpus_per_run: float | None) -> int:
    """torch threads per run: ``$SGDLAB_THREADS``, else a Ray run's CPUs, else cores // workers."""
    if backend == "ray" and not os.environ.get("SGDLAB_THREADS"):
        return max(1, int(1.0 if cpus_per_run is None else cpus_per_run))
    return threads_per_worker(workers or 1)


@dataclass
class _Flight:
    run: RunSpec
    run_id: str
    started: float
    attempt: int


class _Driver:
    """The state of one sweep: what is done, in flight, waiting on another sweep."""

    def __init__(self, store, runs: list[RunSpec], rep: SweepReport, *, say, device: str,
                 workers: int | None, train_progress: bool, retries: int, backend: str,
                 address: str | None, cpus_per_run: PerRun | None,
                 gpus_per_run: PerRun | None, source: str | None = None,
                 command: str | None = None, curves=None, address_checked: bool = False):
        self.store, self.rep, self.device = store, rep, device
        self._say, self.said_at = say, time.monotonic()
        # an experiment file outside the catalogue, recorded with each run
        self.source = (str(Path(source).resolve()) if source is not None
                       and not in_catalogue(source) else None)
        self.command = command
        self.train_progress, self.retries = train_progress, retries
        self.stored_under = stored_under(runs)
        self.art_root = artifacts_root(store)
        self.done = finished_runs(store, self.stored_under)
        self.layers = dependency_layers(runs)
        self.by_label: dict[str, list[RunSpec]] = {}
        for r in runs:
            self.by_label.setdefault(r.label, []).append(r)
        self.options = dict(workers=workers, address=address, cpus_per_run=cpus_per_run,
                            gpus_per_run=gpus_per_run, address_checked=address_checked)
        self.backend_name, self._backend = backend, None
        self.threads = run_threads(backend, workers, amount(cpus_per_run))
        self.device = run_device(backend, device, amount(gpus_per_run))
        from sgdlab.store import environment

        self.env = environment(device=self.device)
        self.inflight: dict[int, _Flight] = {}
        self.steps: dict[str, int] = {}         # run id -> the last step it logged
        self._planned: dict[str, int | None] = {}    # run key -> the steps it will take
        self.starting: _Flight | None = None
        self.failed_keys: set[str] = set()
        self.bad_input: tuple[RunSpec, str] | None = None
        self.curves = curves                    # LiveRuns: live TensorBoard event files
        self.resumed: dict[str, Path] = {}      # run id -> the checkpoint file it resumes
        self.count = 0
        self.todo_total = sum(len(self._missing(layer)) for layer in self.layers)
        skipped = [r.key for r in runs if r.key in self.done]
        rep.skipped.extend(skipped)
        if skipped and self.todo_total == 0:
            say(f"all {len(runs)} runs already in the store ({store.path}): nothing to run")
        elif skipped:
            say(f"{len(skipped)} of {len(runs)} runs already in the store ({store.path}); "
                f"running the {self.todo_total} missing")
        if skipped and curves is not None:
            # the folder is to hold the whole sweep's curves, not only those run this time
            curves.write_stored(store, [self.done[k]["id"] for k in skipped])
            say(f"the {len(skipped)} stored runs' metrics written to TensorBoard in "
                f"{curves.root}")

    def say(self, line: str) -> None:
        self.said_at = time.monotonic()
        self._say(line)

    def heartbeat(self) -> None:
        """After ``HEARTBEAT`` seconds without a line, one saying which runs are running, for
        how long and at which step (runs last minutes; a line comes only when one ends). Not
        with ``--progress``, whose bars say it."""
        now = time.monotonic()
        if self.train_progress or not self.inflight or now - self.said_at < HEARTBEAT:
            return
        running = []
        for f in list(self.inflight.values()):
            step = self.steps.get(f.run_id)
            at = ""
            if step is not None:
                total = self._planned_steps(f.run)
                at = f" (step {step}" + (f" of {total})" if total is not None else ")")
            running.append(f"{f.run.run_name} for "
                           f"{_duration(time.perf_counter() - f.started)}{at}")
        self.say(f"  ... {self.count} of {self.todo_total} done; running: "
                 + ", ".join(running))

    def _planned_steps(self, run: RunSpec) -> int | None:
        """The steps ``run`` will take where its parameters tell (as ``--dry-run`` counts)."""
        if run.key not in self._planned:
            self._planned[run.key] = get_procedure(run.procedure).planned_steps(run.params)
        return self._planned[run.key]

    @property
    def backend(self):
        """Started when the first run is submitted (a sweep with nothing to run starts none)."""
        if self._backend is None:
            workers = self.options["workers"] or 1
            if self.backend_name != "ray" and workers > 1:
                # a spawned worker imports torch and sgdlab before its first run: seconds in
                # which nothing else is printed (the pool spawns one per run, at most K)
                pool = min(workers, self.todo_total)
                self.say(f"starting {pool} worker process{'es' * (pool > 1)} ...")
            self._backend = make_backend(self.backend_name, self.on_rows, **self.options,
                                         on_checkpoint=self.on_checkpoint)
        return self._backend

    def _missing(self, layer: list[RunSpec]) -> list[RunSpec]:
        return [r for r in layer if r.key not in self.done]

    # --- scheduling -----------------------------------------------------------------------
    def run_layer(self, layer: list[RunSpec]) -> None:
        queue = deque((r, 0) for r in self._missing(layer))
        waiting: dict[str, RunSpec] = {}
        next_look = 0.0
        while queue or self.inflight or waiting:
            while queue and self.bad_input is None and self.backend.has_capacity():
                r, attempt = queue.popleft()
                if not self._start(r, attempt):
                    waiting[r.key] = r
            if self.inflight:
                for h, kind, payload in self.backend.wait(timeout=0.5):
                    self._on_event(h, kind, payload, queue)
                self.heartbeat()
            elif waiting:
                time.sleep(min(WAIT_POLL, max(0.0, next_look - time.monotonic())))
            if self.bad_input is not None and not self.inflight:
                r, msg = self.bad_input
                raise UserError(f"run {r.run_name} failed on its input: {msg}\nThe sweep "
                                "stopped (the other runs would fail the same way); fix the "
                                "input and re-run the same command: finished runs are kept.")
            if waiting and time.monotonic() >= next_look:
                next_look = time.monotonic() + WAIT_POLL
                self._look_at(waiting, queue)

    def _start(self, r: RunSpec, attempt: int) -> bool:
        """Claim ``r``'s key and submit it; False if another live sweep holds the key."""
        deps = {d: dependency_run(self.by_label, d, r.seed) for d in r.depends}
        bad = [d for d, dr in deps.items() if dr.key in self.failed_keys]
        if bad:
            self.rep.failed.append((r.run_name, f"dependency {bad[0]!r} failed"))
            self.failed_keys.add(r.key)
            return True
        # the worker reports where it ran at the end; until then, the driver's view of it
        env = {**self.env, "seed": r.seed, "torch_threads": self.threads}
        cfg = r.config() if self.source is None else {**r.config(), "source": self.source}
        if self.command is not None:
            cfg["command"] = self.command
        run_id, holder = self.store.claim_key(r.key, cfg, name=r.run_name,
                                              experiment=r.experiment, env=env, unless=DONE)
        if run_id is None and "status" in holder:
            self._finished_elsewhere(r, {"id": holder["run_id"], "status": holder["status"]})
            return True
        if run_id is None:
            self.say(f"{r.run_name} is being run by process {holder['pid']} on "
                     f"{holder['host']}; waiting for it")
            return False
        # claimed but not yet handed to a worker: stop() records it too if the sweep ends
        # here (a SIGTERM while a worker starts)
        self.starting = _Flight(r, run_id, time.perf_counter(), attempt)
        art = self.art_root / r.key
        ship = self.backend_name == "ray"
        # an earlier attempt's files (of either backend): we hold the lease; resumed from its
        # checkpoint, if it left one, else started afresh
        rows = self._resume(r, run_id, art / CHECKPOINT_DIR)
        # a state the procedure continues from itself (it travels in a shipped task too)
        own = False
        if rows is None and art.exists():
            own = get_procedure(r.procedure).resumes_from(art, r.params)
            if own:
                self.say(f"resuming {r.run_name} from the checkpoint its last attempt left")
            else:
                shutil.rmtree(art)
        elif rows is not None:
            from sgdlab.train.checkpoint import checkpoint_path

            self.resumed[run_id] = checkpoint_path(art / CHECKPOINT_DIR)
        art.mkdir(parents=True, exist_ok=True)
        task = task_for(r, get_procedure(r.procedure), run_id, device=self.device,
                        artifact_dir=art,
                        dependencies={d: self.art_root / dr.key for d, dr in deps.items()},
                        threads=self.threads, progress=self.train_progress, ship=ship,
                        stored_rows=rows or 0, resume=rows is not None or own)
        h = self.backend.submit(task)
        self.inflight[h] = self.starting
        self.starting = None
        return True

    def _resume(self, r: RunSpec, run_id: str, folder: Path) -> int | None:
        """When an earlier attempt of ``r`` left a checkpoint of the training loop in
        ``folder``: give the new run ``run_id`` the metric rows that checkpoint counted (the
        first ones of the attempt that wrote it) and return how many; the run then resumes
        from it. None when there is none or it cannot be used (unreadable, or its rows are
        not all in the store: an attempt stopped with rows on their way to the driver): the
        run starts from step 0."""
        from sgdlab.train.checkpoint import checkpoint_path, load_checkpoint

        path = checkpoint_path(folder)
        if not path.is_file():
            return None
        why = None
        try:   # its CRC-32 checked; its tensors mapped, not read
            state = load_checkpoint(path, require=("loop",), mmap=True)
            step, rows = int(state["loop"]["step"]), state["loop"].get("stored_rows")
            source = state.get("run_id")
        except UserError as e:
            why = f"its checkpoint cannot be used ({e})"
        else:
            if rows is None or source is None or not self.store.copy_metrics(
                    str(source), run_id, int(rows)):
                why = (f"the store lacks metric rows its checkpoint (step {step}) counts "
                       f"(run {source})")
        if why is not None:
            self.say(f"{r.run_name}: {why}; starting it from step 0")
            return None
        if self.curves is not None:     # the new run's event files hold them too
            self.curves.write(run_id, r.run_name, [(m, st, v) for m, points in
                                                   self.store.metrics(run_id).items()
                                                   for st, v in points])
        total = self._planned_steps(r)
        self.say(f"resuming {r.run_name} from step {step}"
                 + (f" of {total}" if total is not None else "")
                 + " (its last checkpoint)")
        self.steps[run_id] = step
        return int(rows)

    def _look_at(self, waiting: dict[str, RunSpec], queue: deque) -> None:
        """Keys another sweep was running: done there, or free to take over."""
        done = finished_runs(self.store, self.stored_under)
        for key, r in list(waiting.items()):
            if key in done:
                self._finished_elsewhere(waiting.pop(key), done[key])
            elif self.store.lease_holder(key) is None:
                # finished there since `done` was read: the claim sees it and skips the key
                queue.append((waiting.pop(key), 0))

    def _finished_elsewhere(self, r: RunSpec, row: dict[str, Any]) -> None:
        self.done[r.key] = row
        self.rep.skipped.append(r.key)
        self.count += 1
        self.say(f"[{self.count}/{self.todo_total}] {r.run_name} finished by another sweep")

    # --- what the backend reports -----------------------------------------------------------
    def on_rows(self, run_id: str, rows: list[tuple]) -> None:
        # rows of an attempt already recorded as lost are late: that run is failed, drop them
        f = next((f for f in self.inflight.values() if f.run_id == run_id), None)
        if f is not None:
            self.store.log_many(run_id, rows)
            if self.curves is not None:
                self.curves.write(run_id, f.run.run_name, rows)
            steps = [int(r[1]) for r in rows if isinstance(r[1], (int, float))]
            if steps:
                self.steps[run_id] = max(steps + [self.steps.get(run_id, 0)])
            # a run in this process (one worker) reports only through its rows until it ends
            self.heartbeat()

    def on_checkpoint(self, run_id: str, shipped: dict[str, Any]) -> None:
        """A checkpoint a Ray task sent, after the rows it counts (written by ``on_rows``
        already): into the run's ``checkpoint/``, with the files it goes with, as a local
        run writes it. A lost attempt's late one is dropped with its rows."""
        f = next((f for f in self.inflight.values() if f.run_id == run_id), None)
        if f is None:
            return
        why = apply_checkpoint(self.art_root / f.run.key, shipped)
        if why is not None:
            self.say(f"{f.run.run_name}: a checkpoint it sent was not kept ({why})")

    def _on_event(self, h: int, kind: str, payload: Any, queue: deque) -> None:
        # in flight until the store holds its end: a SIGTERM while it is recorded leaves it
        # to stop(), which marks it interrupted unless the record was made
        f = self.inflight[h]
        r, sec = f.run, time.perf_counter() - f.started
        if kind == "lost":
            again = f.attempt < self.retries
            self.store.complete_run(f.run_id, "failed", message=payload, release=r.key)
            if self.curves is not None:
                self.curves.close(f.run_id)
            del self.inflight[h]
            self.say(f"{r.run_name}: {payload}" + ("; trying it again on a fresh worker"
                                                     if again else ""))
            if again:
                queue.appendleft((r, f.attempt + 1))
                return
            record = RunRecord("failed", payload)
        else:
            record = payload
            if record.artifact_dir:      # its messages name the files where the driver has them
                here = str(self.art_root / r.key)
                if record.message:
                    record.message = record.message.replace(record.artifact_dir, here)
                if record.detail:
                    record.detail = record.detail.replace(record.artifact_dir, here)
            self._commit(f, record)
            del self.inflight[h]
            if self._checkpoint_refused(f, record):
                queue.appendleft((r, f.attempt))
                return
            # nothing left to resume: no optimizer states kept (the weights.pt beside it stays)
            if record.status in DONE:
                art = self.art_root / r.key
                for folder in [art / CHECKPOINT_DIR,
                               *get_procedure(r.procedure).resume_folders(art, r.params)]:
                    shutil.rmtree(folder, ignore_errors=True)
            # the run's own time: a new worker's first run also waited for the process to
            # start and import torch (9.8 s said for a 0.9 s run)
            sec = record.seconds or sec
        self.rep.executed.append(r.key)
        self.count += 1
        status = "failed" if record.status == "failed-input" else record.status
        if status in DONE:
            self.done[r.key] = {"id": f.run_id}
        else:
            self.failed_keys.add(r.key)
            self.rep.failed.append((r.run_name, record.message or "failed"))
        extra = (f": {record.message.splitlines()[0]}" if record.message and status != "finished"
                 else "")
        if record.status == "failed-input" and self.bad_input is None:
            self.bad_input = (r, record.message or "")
            # its message is the error that ends the sweep: said there, not twice
            extra = ": bad input (the error that stops the sweep says what)"
        self.say(f"[{self.count}/{self.todo_total}] {r.run_name} {status} ({sec:.1f} s){extra}")

    def _checkpoint_refused(self, f: _Flight, record: RunRecord) -> bool:
        """Whether ``f``'s attempt resumed a checkpoint that its training refused, naming the
        file (its settings differ from the run's: a checkpoint of an sgdlab whose defaults
        have changed since, the run's key the same). The checkpoint is removed, so that the
        run starts again from step 0, and the sweep goes on."""
        ckpt = self.resumed.pop(f.run_id, None)
        if (ckpt is None or record.status != "failed-input"
                or str(ckpt) not in (record.message or "")):
            return False
        shutil.rmtree(ckpt.parent, ignore_errors=True)
        self.say(f"{f.run.run_name}: its checkpoint cannot be resumed "
                 f"({record.message.splitlines()[0]}); starting it from step 0")
        return True

    def _commit(self, f: _Flight, record: RunRecord) -> None:
        """A run's end, everything it owes, in one transaction."""
        artifacts = record.artifacts
        if record.files is not None:         # shipped back by a worker without our disk
            art = self.art_root / f.run.key
            write_files(art, record.files)
            artifacts = [(k, _relocate(p, record.artifact_dir, art)) for k, p in artifacts]
        ok = record.status in DONE
        message = record.message if ok or not record.detail else (
            f"{record.message}\n{record.detail}")
        self.store.complete_run(f.run_id, record.status if ok else "failed",
                                summary=record.summary if ok else None, message=message,
                                artifacts=artifacts, rows=record.rows, release=f.run.key,
                                env=record.env)
        if self.curves is not None:
            self.curves.write(f.run_id, f.run.run_name, record.rows)
            if ok:     # its grid point and final values, for the HParams dashboard
                from sgdlab.train.tensorboard import run_hparams

                # the fields of its stored config that run_hparams reads, not the whole
                # config again (the train procedure's validates a run config)
                shown = {"run_key": f.run.key, "grid": f.run.grid_point,
                         "label": f.run.label, "seed": f.run.seed}
                self.curves.finish(f.run_id, f.run.run_name, run_hparams(shown),
                                   record.summary or {})
            self.curves.close(f.run_id)

    def stop(self, why: BaseException) -> None:
        """The sweep ends early (interrupt, error): stop the workers, record their runs."""
        if self._backend is not None:
            self._backend.cancel_all()
        message = ("the sweep was interrupted" + (f" ({why})" if str(why) else "")
                   if isinstance(why, KeyboardInterrupt)
                   else f"the sweep stopped ({type(why).__name__}: {why})")
        for f in [*self.inflight.values(), *([self.starting] if self.starting else [])]:
            try:
                if self.store.get_run(f.run_id)["recorded_status"] != "running":
                    continue          # its end was recorded just before the stop
                self.store.complete_run(f.run_id, "interrupted", message=message,
                                        release=f.run.key)
            except Exception:  # noqa: BLE001 - the store may be what failed
                pass
        self.inflight.clear()
        self.starting = None


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _relocate(path: str, old_root: str | None, new_root: Path) -> str:
    if old_root and Path(path).is_relative_to(old_root):
        return str(new_root / Path(path).relative_to(old_root))
    return path


def load_runs(runs: list[RunSpec], *, store_path: str | None = None
              ) -> tuple[list[StoredRun], list[RunSpec]]:
    """Read the finished runs back from the store (summaries, metric series, data artifacts).
    Returns (stored runs in ``runs`` order, runs missing from the store)."""
    store = open_store(store_path)
    if not runs:
        return [], []
    done = finished_runs(store, stored_under(runs))
    out, missing = [], []
    for r in runs:
        row = done.get(r.key)
        if row is None:
            missing.append(r)
            continue
        run_id = row["run_id"] if "run_id" in row else row["id"]
        full = store.get_run(run_id)
        summary = full.get("summary") or {}
        if isinstance(summary, str):
            summary = json.loads(summary)
        data: dict[str, Any] = {}
        for a in full.get("artifacts", []) or []:
            kind = a.get("kind") if isinstance(a, dict) else a[0]
            path = a.get("path") if isinstance(a, dict) else a[1]
            if kind == "data" and (f := artifact_file(path, store_file(store))).is_file():
                # its arrays' nulls were non-finite numbers: NaN for the analyses
                data = nan_in_arrays(json.loads(f.read_text()))
        out.append(StoredRun(key=r.key, run_id=str(run_id), label=r.label, seed=r.seed,
                             params=r.params, status=full.get("status", row.get("status")),
                             summary=summary, metrics=store.metrics(run_id), data=data,
                             message=full.get("message") or ""))
    return out, missing
