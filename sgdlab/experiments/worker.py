"""One experiment run as a worker executes it, for a sweep whose driver is the only writer of
the run store.

The driver (:mod:`sgdlab.experiments.sweep`) creates the run in the store and hands a
:class:`RunTask` to a backend (this process, a spawned worker process, a Ray task). The
worker runs the procedure with a :class:`RunRecorder` in place of the store: metric rows go
back to the driver in batches through ``send`` (or with the result when there is no channel),
artifacts are listed, and the outcome comes back as a :class:`RunRecord`. The driver commits
the record — last rows, artifacts, summary, status — in one transaction, so a run is
``finished`` only with everything it owes, and a worker killed at any point leaves nothing
half-written: the driver records the run as failed or interrupted and the run is redone.

A procedure that can resume (``train``) keeps its checkpoint in ``RunContext.checkpoint_dir``
(``checkpoint/`` of the run's artifact folder). The driver keeps that folder between attempts
of the run key and gives the next attempt the rows the checkpoint counted
(``RunTask.stored_rows``), so an interrupted or lost run continues from its last checkpoint.
A worker without the driver's disk (a Ray task) checkpoints into its local folder and sends
each checkpoint, with the run's files changed since the last one, through
``send_checkpoint`` (:class:`CheckpointShipper`) after the rows it counts; the driver writes
it into the run's folder (:func:`apply_checkpoint`). An attempt that resumes gets the folder's
files in its task (``RunTask.resume_files``).
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import socket
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdlab.errors import UserError
from sgdlab.experiments.procedures import RunOutput
from sgdlab.experiments.spec import RunSpec
from sgdlab.strict_json import write_atomic

DATA_FILE = "data.json"
CHECKPOINT_DIR = "checkpoint"           # a resumable procedure's checkpoint, in a run's files


@dataclass
class RunContext:
    """What a procedure gets besides its parameters."""

    store: Any                              # a RunRecorder (or a RunStore)
    run_id: str
    device: str
    artifact_dir: Path                      # this run's files (model weights, arrays)
    dependencies: dict[str, Path]           # depended-on label -> its artifact dir
    progress: bool = False
    # where a procedure that can resume keeps its checkpoint (None: keep none); one found
    # there at the start is resumed from (the sweep leaves one only with its rows)
    checkpoint_dir: Path | None = None
    # called with the checkpoint file after each one is written (a Ray task ships it)
    on_checkpoint: Callable[[Path], None] | None = None


@dataclass
class RunTask:
    """Everything a worker needs to execute one run (picklable).

    ``procedure`` is the procedure object itself: pickling it by reference makes a worker
    import the module that registered it, so procedures registered outside sgdlab work in
    worker processes too. With ``ship``, the worker writes the run's files to a local
    temporary folder and returns them (``RunRecord.files``), and ``dependency_files`` carries
    the files of the runs it depends on: no file system shared with the driver is needed.
    ``stored_rows``: the metric rows the driver gave the run before it started (those of the
    checkpoint it resumes from); with ``ship``, ``resume_files`` holds the run's folder as the
    attempt that wrote that checkpoint left it (the checkpoint included).
    """

    run: dict[str, Any]                     # RunSpec fields
    procedure: Any
    run_id: str
    device: str
    artifact_dir: str
    dependencies: dict[str, str] = field(default_factory=dict)
    threads: int | None = None
    progress: bool = False
    ship: bool = False
    dependency_files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    stored_rows: int = 0
    resume_files: dict[str, bytes] = field(default_factory=dict)

    @property
    def spec(self) -> RunSpec:
        return RunSpec(**{k: (tuple(v) if k in ("depends", "dependency_keys", "grid") else v)
                          for k, v in self.run.items()})


@dataclass
class RunRecord:
    """The outcome of a run, for the driver to commit. ``status``: finished | diverged |
    failed | failed-input (a :class:`UserError`: bad input that would fail every run)."""

    status: str
    message: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple] = field(default_factory=list)          # not yet sent to the driver
    artifacts: list[tuple[str, str]] = field(default_factory=list)
    detail: str | None = None                                # traceback tail of a failure
    files: dict[str, bytes] | None = None                    # shipped files (relative paths)
    artifact_dir: str | None = None                          # where the worker wrote them
    env: dict[str, Any] | None = None                        # where and how it ran
    seconds: float = 0.0


def task_for(run: RunSpec, procedure: Any, run_id: str, *, device: str, artifact_dir: Path,
             dependencies: dict[str, Path], threads: int | None, progress: bool = False,
             ship: bool = False, stored_rows: int = 0, resume: bool = False) -> RunTask:
    """The task of ``run``; with ``ship`` and ``resume`` (it continues the checkpoint in
    ``artifact_dir``), the files of ``artifact_dir`` travel in it."""
    # a copy of the params, as a worker process gets them: a procedure run in this process
    # that changes its params changes neither the driver's run (its key, its files' folder)
    # nor any other
    cfg = {"experiment": run.experiment, "version": run.version, "scale": run.scale,
           "label": run.label, "params": copy.deepcopy(run.params), "seed": run.seed,
           "procedure": run.procedure, "depends": list(run.depends),
           "dependency_keys": list(run.dependency_keys), "grid": list(run.grid)}
    task = RunTask(cfg, procedure, run_id, device, str(artifact_dir),
                   {k: str(v) for k, v in dependencies.items()}, threads, progress, ship,
                   stored_rows=stored_rows)
    if ship:
        task.dependency_files = {k: read_files(v) for k, v in dependencies.items()}
        if resume:
            task.resume_files = read_files(artifact_dir)
    return task


class RunRecorder:
    """The run store as a procedure sees it inside a sweep.

    Metric rows are recorded and handed to ``send(rows)`` (the driver writes them) whenever a
    writer flushes — or kept for the :class:`RunRecord` when there is no ``send``. Artifacts
    are listed. Status, summary and completion belong to the driver: ``set_status``,
    ``set_summary`` and ``complete_run`` only note what the procedure said. ``stored``: the
    rows the driver gave the run before it started (a resumed run's).
    """

    def __init__(self, run_id: str, send: Callable[[list[tuple]], None] | None = None, *,
                 stored: int = 0):
        self.run_id, self.send = run_id, send
        self.rows: list[tuple] = []
        self.artifacts: list[tuple[str, str]] = []
        self.noted: dict[str, Any] = {}
        self.stored = int(stored)
        self.sent = 0

    def _check(self, run_id: str) -> None:
        if run_id != self.run_id:
            raise UserError(f"a sweep run records only itself ({self.run_id}), not {run_id}")

    def log_many(self, run_id: str, rows: Iterable[Sequence[Any]]) -> None:
        self._check(run_id)
        now = time.time()
        batch = [(str(r[0]), int(r[1]), float(r[2]), float(r[3]) if len(r) > 3 else now)
                 for r in rows]
        if self.send is not None and batch:
            self.send(batch)
            self.sent += len(batch)
        else:
            self.rows.extend(batch)

    def log_metric(self, run_id: str, name: str, step: int, value: float) -> None:
        self.log_many(run_id, [(name, step, value)])

    def log_metrics(self, run_id: str, step: int, values: dict[str, float]) -> None:
        self.log_many(run_id, [(k, step, v) for k, v in values.items()])

    def writer(self, run_id: str, *, flush_every: float = 2.0, max_buffer: int = 2000,
               stored: int = 0):
        from sgdlab.store import MetricWriter

        self._check(run_id)
        return MetricWriter(self, run_id, flush_every=flush_every, max_buffer=max_buffer,
                            stored=stored)

    def count_metrics(self, run_id: str | None = None, *, measured: bool = True) -> int:
        return self.stored + self.sent + len(self.rows)

    def truncate_metrics(self, run_id: str, keep: int) -> int:
        """A resumed run keeps the ``keep`` rows its checkpoint counted: the driver gave it
        exactly those before it started (``stored``); anything else is refused."""
        self._check(run_id)
        if keep != self.count_metrics() or self.sent or self.rows:
            raise UserError(f"the checkpoint this run resumes from counts {keep} metric rows, "
                            f"but the sweep gave the run {self.stored}")
        return 0

    def add_artifact(self, run_id: str, kind: str, path: str | os.PathLike) -> None:
        self._check(run_id)
        if (kind, str(path)) not in self.artifacts:
            self.artifacts.append((kind, str(path)))

    def set_status(self, run_id: str, status: str, message: str | None = None) -> None:
        self.noted.update(status=status, message=message)

    def set_summary(self, run_id: str, summary: dict[str, Any]) -> None:
        self.noted["summary"] = summary

    def complete_run(self, run_id: str, status: str, *, summary=None, message=None,
                     artifacts=(), rows=(), release=None) -> None:
        self.log_many(run_id, rows)
        for kind, path in artifacts:
            self.add_artifact(run_id, kind, path)
        self.noted.update(status=status, message=message, summary=summary)

    def create_run(self, *args, **kwargs) -> str:
        raise UserError("a sweep run is created by the sweep, not by its procedure")

    def take_rows(self) -> list[tuple]:
        rows, self.rows = self.rows, []
        return rows


def execute_run(task: RunTask, send: Callable[[list[tuple]], None] | None = None,
                send_checkpoint: Callable[[dict[str, Any]], None] | None = None) -> RunRecord:
    """Run ``task`` here. Failures become a ``failed`` record (with the traceback's tail) and
    never propagate; interrupts do. ``send_checkpoint``: where a shipped run (``task.ship``)
    sends each checkpoint (:class:`CheckpointShipper`); without it, such a run keeps none."""
    import torch

    from sgdlab.operators.blocking import reproducible_blocks

    t0 = time.perf_counter()
    prev_threads = torch.get_num_threads()
    if task.threads:
        torch.set_num_threads(max(1, task.threads))
    local = local_run_folder() if task.ship else None
    try:
        # untimed probe blocks: a run's numbers must not depend on the machine's load
        with reproducible_blocks():
            return _execute(task, send, local, t0, send_checkpoint)
    finally:
        if torch.get_num_threads() != prev_threads:
            torch.set_num_threads(prev_threads)   # in-process runs leave the caller's setting
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)


def local_run_folder() -> Path:
    """A new folder in the temporary directory for a shipped run (a Ray task's), named after
    this host and process. Folders that an earlier worker on this host left behind are removed
    first, once their process is gone: a worker killed by SIGKILL (the out-of-memory killer,
    a cluster's scheduler) never reaches its cleanup, and each such folder holds a
    checkpoint."""
    from sgdlab.store.runstore import owner_alive

    name = socket.gethostname()
    host = f"{zlib.crc32(name.encode()):08x}"
    if os.name == "posix":      # os.kill(pid, 0) asks whether pid lives only there
        pattern = re.compile(rf"sgdlab-run-{host}-(\d+)-[^-]+")
        root = Path(tempfile.gettempdir())
        for folder in root.glob(f"sgdlab-run-{host}-*"):
            m = pattern.fullmatch(folder.name)
            try:
                ours = folder.is_dir() and folder.stat().st_uid == os.getuid()
            except OSError:     # removed meanwhile by another worker starting
                continue
            if m and ours and owner_alive(name, int(m.group(1)), None, None) is False:
                shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"sgdlab-run-{host}-{os.getpid()}-"))


def _execute(task: RunTask, send, local: Path | None, t0: float,
             send_checkpoint=None) -> RunRecord:
    run = task.spec
    rec = RunRecorder(task.run_id, send, stored=task.stored_rows)
    if local is not None:
        art = local / "run"
        deps = {}
        for label, files in task.dependency_files.items():
            write_files(local / "deps" / label, files)
            deps[label] = local / "deps" / label
    else:
        art = Path(task.artifact_dir)
        deps = {k: Path(v) for k, v in task.dependencies.items()}
    art.mkdir(parents=True, exist_ok=True)
    ckpt, shipper = art / CHECKPOINT_DIR, None
    if local is not None:
        write_files(art, task.resume_files)     # the folder of the checkpoint it resumes
        if send_checkpoint is not None:
            shipper = CheckpointShipper(art, send_checkpoint)
        elif not task.resume_files:
            ckpt = None           # a checkpoint nobody would see: none kept
    ctx = RunContext(store=rec, run_id=task.run_id, device=task.device, artifact_dir=art,
                     dependencies=deps, progress=task.progress, checkpoint_dir=ckpt,
                     on_checkpoint=shipper)
    try:
        from sgdlab.plugins import import_env_plugins

        # a spawned or Ray worker inherits the driver's $SGDLAB_PLUGINS (sgdlab run --plugin
        # adds to it): the names the run's params use are registered here too
        import_env_plugins()
        out = task.procedure.run(run, ctx)
        if not isinstance(out, RunOutput):
            raise TypeError(f"procedure {run.procedure!r} returned {type(out).__name__}, "
                            "expected RunOutput")
        if out.data:
            path = art / DATA_FILE
            # strict: a non-finite value is null, read back as NaN (sweep.load_runs)
            write_atomic(path, jsonable(out.data))
            rec.add_artifact(task.run_id, "data", str(path))
        record = RunRecord(out.status, out.message, jsonable(out.summary), rec.take_rows(),
                           rec.artifacts)
    except Exception as e:  # noqa: BLE001 - recorded, reported, and the sweep goes on
        # bad input is said in the error's own words; a crash is named by its exception
        bad = isinstance(e, UserError)
        record = RunRecord("failed-input" if bad else "failed",
                           str(e) if bad else f"{type(e).__name__}: {e}", {}, rec.take_rows(),
                           rec.artifacts, detail=traceback.format_exc()[-4000:])
    if local is not None:
        # its checkpoints came as they were written, after their rows (not with the last rows)
        record.files = {k: v for k, v in read_files(art).items()
                        if Path(k).parts[0] != CHECKPOINT_DIR}
        record.artifact_dir = str(art)
    from sgdlab.store import environment   # this process: its host, threads, versions

    record.env = environment(seed=run.seed, device=task.device)
    record.seconds = time.perf_counter() - t0
    return record


def read_files(folder: str | os.PathLike) -> dict[str, bytes]:
    """Every file under ``folder`` as ``{relative path: bytes}`` (empty if it is missing)."""
    root = Path(folder)
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def write_files(folder: str | os.PathLike, files: dict[str, bytes]) -> None:
    root = Path(folder)
    for rel, data in files.items():
        target = _inside(root, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


class CheckpointShipper:
    """A shipped run's ``on_checkpoint``: each checkpoint the run writes into ``folder`` goes
    to ``send`` as ``{"checkpoint": bytes, "files": {path: bytes}, "tails": {path: (offset,
    bytes)}, "removed": [path]}`` with the run's other files changed since the last shipment
    (those of the attempt it resumes from count as shipped): a file that only grew, its
    shipped bytes unchanged (CRC-32), as its new tail (a trajectory's appended snapshots),
    any other changed file whole. The folder the driver keeps then matches the checkpoint,
    which a resume needs (a trajectory continues its file)."""

    def __init__(self, folder: Path, send: Callable[[dict[str, Any]], None]):
        self.folder, self.send = Path(folder), send
        self.known: dict[str, tuple[int, int, int]] = {}   # path -> size, mtime, CRC-32
        for rel, p in self._files():
            data = p.read_bytes()
            self.known[rel] = (len(data), p.stat().st_mtime_ns, zlib.crc32(data))

    def _files(self) -> list[tuple[str, Path]]:
        return [(str(p.relative_to(self.folder)), p) for p in sorted(self.folder.rglob("*"))
                if p.is_file() and p.relative_to(self.folder).parts[0] != CHECKPOINT_DIR]

    def __call__(self, checkpoint: Path) -> None:
        files: dict[str, bytes] = {}
        tails: dict[str, tuple[int, bytes]] = {}
        seen = set()
        for rel, p in self._files():
            seen.add(rel)
            st, old = p.stat(), self.known.get(rel)
            if old is not None and old[:2] == (st.st_size, st.st_mtime_ns):
                continue
            data = p.read_bytes()
            view = memoryview(data)
            if old is not None and len(data) >= old[0] and zlib.crc32(view[:old[0]]) == old[2]:
                tails[rel] = (old[0], bytes(view[old[0]:]))
                crc = zlib.crc32(view[old[0]:], old[2])
            else:
                files[rel], crc = data, zlib.crc32(data)
            self.known[rel] = (len(data), st.st_mtime_ns, crc)
        removed = sorted(set(self.known) - seen)
        for rel in removed:
            del self.known[rel]
        self.send({"checkpoint": Path(checkpoint).read_bytes(), "files": files,
                   "tails": tails, "removed": removed})


def apply_checkpoint(folder: str | os.PathLike, shipped: dict[str, Any]) -> str | None:
    """Write a checkpoint :class:`CheckpointShipper` sent into a run's ``folder``: its files
    first (whole ones replaced atomically, tails appended), the checkpoint last, atomically
    and synced, as the training loop writes it; a driver killed in between leaves the
    previous checkpoint with files that ran ahead of it, as a local run does (a trajectory
    truncates itself to its checkpoint's rows). Returns why it was not written, or None: a
    tail that does not continue the file here (the driver's copy is not the worker's)."""
    from sgdlab.atomic import replaced_whole
    from sgdlab.train.checkpoint import checkpoint_path

    root = Path(folder)
    for rel, (offset, data) in shipped["tails"].items():
        target = _inside(root, rel)
        size = target.stat().st_size if target.is_file() else -1
        if size != offset:
            return (f"its file {rel} has {max(size, 0)} bytes here, its tail starts at "
                    f"{offset}")
    for rel in shipped["removed"]:
        _inside(root, rel).unlink(missing_ok=True)
    for rel, data in shipped["files"].items():
        target = _inside(root, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        with replaced_whole(target) as tmp:
            tmp.write_bytes(data)
    for rel, (offset, data) in shipped["tails"].items():
        with open(_inside(root, rel), "ab") as f:
            f.write(data)
    path = checkpoint_path(root / CHECKPOINT_DIR)
    path.parent.mkdir(parents=True, exist_ok=True)
    # named as save_checkpoint names its own: a leftover is removed by the next one written
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(shipped["checkpoint"])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return None


def _inside(root: Path, rel: str) -> Path:
    """``root / rel``, refused when it would lie outside ``root``."""
    target = root / rel
    if root.resolve() not in target.resolve().parents:
        raise UserError(f"refusing to write {rel!r} outside {root}")
    return target


def jsonable(obj: Any) -> Any:
    """Tensors/arrays -> lists, numpy scalars -> floats, non-finite floats kept as floats (the
    store keeps them; a data file writes them as null)."""
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
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj
