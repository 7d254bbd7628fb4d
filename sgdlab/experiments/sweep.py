"""Sweeps: execute an experiment's runs in parallel worker processes, recorded in the run store.

- Every run has a deterministic key (``RunSpec.key``); a run whose key is already in the store
  with status ``finished`` or ``diverged`` is skipped, so re-running an interrupted sweep
  completes only the missing (never-started, failed, killed) runs.
- ``workers > 1`` uses a ``ProcessPoolExecutor`` with the *spawn* start method (safe with
  torch threads); each worker uses ``max(1, cores // workers)`` torch threads. Workers write to
  the same SQLite store (the store handles concurrent writers).
- Runs may depend on other runs of the same experiment (``depends: [label]``, e.g. "start from
  the GD solution" or "interpolate between run A and run B"): the sweep runs in dependency
  layers and hands each run the artifact directories of the runs it depends on (same seed).
- A run that fails on its *input* (a ``UserError``: missing data file, invalid option) stops
  the sweep with that message, since every other run would fail the same way.
- Cluster dispatch uses **torchrun** (the launcher the distributed optimizers already use):
  under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) rank r executes runs
  ``i ≡ r (mod WORLD_SIZE)`` of each layer, ranks meet at a gloo barrier between layers, and
  rank 0 writes the report. The store and ``--out`` must be on a filesystem all nodes share.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sgdlab.errors import ConfigError, UserError
from sgdlab.experiments.procedures import RunOutput, StoredRun, get_procedure
from sgdlab.experiments.spec import RunSpec

DONE = ("finished", "diverged")


@dataclass
class RunContext:
    """What a procedure gets besides its parameters."""

    store: Any                              # sgdlab.store.RunStore
    run_id: str
    device: str
    artifact_dir: Path                      # this run's files (model weights, arrays)
    dependencies: dict[str, Path]           # depended-on label -> its artifact dir
    progress: bool = False


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
    return store_file(store).parent / "artifacts"


def finished_runs(store, experiment: str) -> dict[str, dict[str, Any]]:
    """run key -> stored run row, for finished/diverged runs of ``experiment`` (latest wins)."""
    out: dict[str, dict[str, Any]] = {}
    for row in store.list_runs(experiment=experiment):
        cfg = row.get("config") or {}
        if isinstance(cfg, str):
            cfg = json.loads(cfg)
        key = cfg.get("run_key")
        if key and row.get("status") in DONE:
            out[key] = row
    return out


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
            best = max(best, 1 + d(_dep_run(by_label, dep, r.seed), stack + (r.label,)))
        depth[k] = best
        return best

    layers: dict[int, list[RunSpec]] = {}
    for r in runs:
        layers.setdefault(d(r), []).append(r)
    return [layers[i] for i in sorted(layers)]


def _dep_run(by_label: dict[str, list[RunSpec]], label: str, seed: int) -> RunSpec:
    cands = by_label[label]
    for c in cands:
        if c.seed == seed:
            return c
    return cands[0]          # a dependency run with a single seed serves every seed


def threads_per_worker(workers: int) -> int:
    """torch threads per run: ``$SGDLAB_THREADS`` if set, else cores // workers (>= 1)."""
    env = os.environ.get("SGDLAB_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise UserError(f"SGDLAB_THREADS must be an integer, got {env!r}") from None
        return max(1, n)
    return max(1, (os.cpu_count() or 1) // workers)


def _set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(max(1, n))


def _execute(run_cfg: dict[str, Any], store_path: str, device: str,
             dep_dirs: dict[str, str], threads: int | None,
             progress: bool = False) -> tuple[str, str, str | None]:
    """Run one experiment run (in this process or a worker). Returns (key, status, message).

    Failures are recorded in the store as ``failed`` with the traceback's last line and never
    propagate, so one bad run does not stop the sweep."""
    import torch

    prev_threads = torch.get_num_threads()
    if threads:
        _set_threads(threads)
    try:
        return _execute_run(run_cfg, store_path, device, dep_dirs, progress)
    finally:
        _set_threads(prev_threads)       # in-process runs leave the caller's setting alone


def _execute_run(run_cfg: dict[str, Any], store_path: str, device: str,
                 dep_dirs: dict[str, str], progress: bool) -> tuple[str, str, str | None]:
    run = RunSpec(**{k: (tuple(v) if k == "depends" else v) for k, v in run_cfg.items()})
    store = open_store(store_path)
    run_id = store.create_run(run.config(), name=run.run_name, experiment=run.experiment)
    art = artifacts_root(store) / run.key
    if art.exists():          # a failed or killed earlier attempt: start the run afresh
        import shutil

        shutil.rmtree(art)
    art.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(store=store, run_id=run_id, device=device, artifact_dir=art,
                     dependencies={k: Path(v) for k, v in dep_dirs.items()}, progress=progress)
    try:
        store.set_status(run_id, "running")
        out = get_procedure(run.procedure).run(run, ctx)
        if not isinstance(out, RunOutput):
            raise TypeError(f"procedure {run.procedure!r} returned {type(out).__name__}, "
                            "expected RunOutput")
        if out.data:
            path = art / "data.json"
            path.write_text(json.dumps(_jsonable(out.data)))
            store.add_artifact(run_id, "data", str(path))
        store.set_summary(run_id, _jsonable(out.summary))
        store.set_status(run_id, out.status, out.message)
        return run.key, out.status, out.message
    except KeyboardInterrupt:
        store.set_status(run_id, "interrupted", "KeyboardInterrupt")
        raise
    except Exception as e:  # noqa: BLE001 - recorded, reported, and the sweep goes on
        msg = f"{type(e).__name__}: {e}"
        store.set_status(run_id, "failed", msg + "\n" + traceback.format_exc()[-4000:])
        # bad input (missing data file, invalid option): every other run would fail the same way
        return run.key, ("failed-input" if isinstance(e, UserError) else "failed"), msg


def _jsonable(obj: Any) -> Any:
    """Tensors/arrays -> lists, numpy scalars -> floats, non-finite floats kept as floats."""
    try:
        import numpy as np
        import torch
    except ImportError:  # pragma: no cover
        np = torch = None
    if torch is not None and isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if np is not None and isinstance(obj, np.ndarray):
        return obj.tolist()
    if np is not None and isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _shard() -> tuple[int, int]:
    """(rank, world) under torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _barrier(world: int) -> None:
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def run_sweep(runs: list[RunSpec], *, store_path: str | None = None, workers: int = 1,
              device: str = "cpu", progress: Callable[[str], None] | None = print,
              train_progress: bool = False) -> SweepReport:
    """Execute the runs that the store does not hold yet. See the module docstring."""
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    t0 = time.perf_counter()
    store = open_store(store_path)
    spath = str(store_file(store))
    rep = SweepReport()
    if not runs:
        return rep
    experiment = runs[0].experiment
    done = finished_runs(store, experiment)
    rank, world = _shard()
    _barrier(world)       # every rank shards the same list: read the store before anyone runs
    threads = threads_per_worker(workers)
    say = progress or (lambda s: None)
    if world > 1:
        base_say = say
        say = lambda s: base_say(f"[rank {rank}/{world}] {s}")  # noqa: E731
    layers = dependency_layers(runs)
    todo_total = sum(1 for layer in layers
                     for i, r in enumerate(x for x in layer if x.key not in done)
                     if i % world == rank)
    skipped = [r.key for r in runs if r.key in done]
    rep.skipped.extend(skipped)
    if skipped:
        say(f"{len(skipped)} of {len(runs)} runs already in the store ({spath}); "
            f"running the {todo_total} missing")
    by_label: dict[str, list[RunSpec]] = {}
    for r in runs:
        by_label.setdefault(r.label, []).append(r)
    failed_keys: set[str] = set()
    count = 0
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        for layer in layers:
            todo = [r for i, r in enumerate(x for x in layer if x.key not in done)
                    if i % world == rank]
            jobs = []
            for r in todo:
                deps = {d: _dep_run(by_label, d, r.seed) for d in r.depends}
                bad = [d for d, dr in deps.items() if dr.key in failed_keys]
                if bad:
                    rep.failed.append((r.run_name, f"dependency {bad[0]!r} failed"))
                    continue
                dep_dirs = {d: str(artifacts_root(store) / dr.key) for d, dr in deps.items()}
                cfg = {"experiment": r.experiment, "version": r.version, "scale": r.scale,
                       "label": r.label, "params": r.params, "seed": r.seed,
                       "procedure": r.procedure, "depends": list(r.depends)}
                jobs.append((r, cfg, dep_dirs))
            results: list[tuple[RunSpec, str, str, str | None, float]] = []
            if pool is None:
                for r, cfg, dep_dirs in jobs:
                    t = time.perf_counter()
                    key, status, msg = _execute(cfg, spath, device, dep_dirs, threads,
                                                train_progress)
                    results.append((r, key, status, msg, time.perf_counter() - t))
                    count += 1
                    _say_run(say, count, todo_total, r, status, msg, results[-1][-1])
                    if status == "failed-input":
                        break
            else:
                futs = {pool.submit(_execute, cfg, spath, device, dep_dirs, threads): (r, time.perf_counter())
                        for r, cfg, dep_dirs in jobs}
                for f in as_completed(futs):
                    r, t = futs[f]
                    key, status, msg = f.result()
                    results.append((r, key, status, msg, time.perf_counter() - t))
                    count += 1
                    _say_run(say, count, todo_total, r, status, msg, results[-1][-1])
            for r, key, status, msg, _ in results:
                rep.executed.append(key)
                if status.startswith("failed"):
                    failed_keys.add(key)
                    rep.failed.append((r.run_name, msg or "failed"))
            bad_input = [(r, msg) for r, _, status, msg, _ in results if status == "failed-input"]
            if bad_input:
                r, msg = bad_input[0]
                raise UserError(f"run {r.run_name} failed on its input: {msg}\nThe sweep stopped "
                                "(the other runs would fail the same way); fix the input and "
                                "re-run the same command: finished runs are kept.")
            _barrier(world)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    rep.seconds = time.perf_counter() - t0
    return rep


def _say_run(say, i: int, n: int, r: RunSpec, status: str, msg: str | None, sec: float) -> None:
    status = "failed" if status == "failed-input" else status
    extra = f": {msg.splitlines()[0]}" if msg and status != "finished" else ""
    say(f"[{i}/{n}] {r.run_name} {status} ({sec:.1f} s){extra}")


def load_runs(runs: list[RunSpec], *, store_path: str | None = None) -> tuple[list[StoredRun], list[RunSpec]]:
    """Read the finished runs back from the store (summaries, metric series, data artifacts).
    Returns (stored runs in ``runs`` order, runs missing from the store)."""
    store = open_store(store_path)
    if not runs:
        return [], []
    done = finished_runs(store, runs[0].experiment)
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
            if kind == "data" and Path(path).is_file():
                data = json.loads(Path(path).read_text())
        out.append(StoredRun(key=r.key, run_id=str(run_id), label=r.label, seed=r.seed,
                             params=r.params, status=full.get("status", row.get("status")),
                             summary=summary, metrics=store.metrics(run_id), data=data))
    return out, missing
