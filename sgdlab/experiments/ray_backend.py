"""The Ray backend: a sweep's runs as Ray tasks, on this machine or on a Ray cluster.

Each run is a task with a resource request (``num_cpus=cpus_per_run``,
``num_gpus=gpus_per_run``; a fraction of a GPU lets several small runs share one). The
driver stays the only writer of the run store: a task streams its metric rows to an
``_Inbox`` actor that the driver drains, and returns its :class:`RunRecord` — with the run's
files (model weights, data, trajectories) as bytes — through Ray's object store. The driver
writes those files under the store's ``artifacts/`` folder and commits the run. So neither
the store nor the artifacts need a file system shared with the worker nodes, and a sweep
started on one backend can be finished on the other. A task checkpoints into its local
folder as a local run does and sends each checkpoint (with the run's files changed since the
last one) to the same actor after the rows it counts; the driver writes it into the run's
folder, and the attempt that resumes it gets that folder in its task.

A task lost with its node or worker process comes back as "lost"; the driver records that
attempt ``failed`` and submits the run again (``retries``). Ctrl-C cancels the tasks.
Without an address, a Ray instance is started on this machine's cores (and stopped at the
end); with one (``--address``, ``$RAY_ADDRESS``, ``auto``), the sweep joins that cluster.
"""
from __future__ import annotations

import itertools
import math
import os
import signal
import socket
import threading
from typing import Any

from sgdlab.errors import UserError
from sgdlab.experiments.resources import PerRun, per_run
from sgdlab.experiments.worker import RunTask, execute_run


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("the Ray backend needs Ray: python -m pip install -c constraints.txt "
                        "'sgdlab[ray]' (or 'ray')") from None
    return ray


def ready_ray(address: str | None):
    """Ray, imported, if this command can start or join it at ``address`` (None:
    ``$RAY_ADDRESS``, else a new instance on this machine); else the ``UserError`` saying why
    not: Ray not installed (:func:`import_ray`), no Ray answering at the address
    (:func:`check_reachable`). A Ray already started in this process is the one a sweep joins:
    no address is probed then. ``check_backend``, :class:`RayBackend` and the dry run's plan
    all ask this; a command asks it once and hands the answer on (``RayBackend``'s
    ``address_checked``)."""
    ray = import_ray()
    if not ray.is_initialized():
        check_reachable(address)
    return ray


def with_plugins_env(kw: dict[str, Any]) -> dict[str, Any]:
    """``ray.init``'s keywords ``kw`` with the driver's ``$SGDLAB_PLUGINS`` in the tasks'
    environment (merged into a ``runtime_env`` already there): the workers of a cluster this
    sweep joins were started without it. Plugin files must exist at that path on every node."""
    from sgdlab.plugins import PLUGINS_ENV

    value = os.environ.get(PLUGINS_ENV)
    if not value:
        return kw
    env = dict(kw.get("runtime_env") or {})
    env["env_vars"] = {**(env.get("env_vars") or {}), PLUGINS_ENV: value}
    return {**kw, "runtime_env": env}


class RayBackend:
    """See the module docstring. ``workers`` caps the runs in flight (default: as many as
    the cluster's resources hold). ``cpus_per_run`` (default 1), ``gpus_per_run`` (default
    0): numbers, taken as the flags', or :class:`PerRun` saying where they came from (the
    refusal of a run no node can hold names it). ``address_checked``: :func:`ready_ray` has
    answered for ``address`` in this command (``run_sweep`` asked it before the store was
    opened), so the address is not probed again; a caller that builds the backend itself
    leaves it False."""

    name = "ray"

    def __init__(self, on_rows, *, address: str | None = None, workers: int | None = None,
                 cpus_per_run: float | PerRun | None = None,
                 gpus_per_run: float | PerRun | None = None, on_checkpoint=None,
                 address_checked: bool = False):
        self.refs: dict[Any, tuple[int, str]] = {}     # object ref -> (handle, run id)
        cpus = per_run("cpus", cpus_per_run) or PerRun.default("cpus")
        gpus = per_run("gpus", gpus_per_run) or PerRun.default("gpus")
        if not cpus.value > 0:
            raise UserError(f"CPUs per run must be > 0, got {cpus}")
        if not gpus.value >= 0:
            raise UserError(f"GPUs per run must be >= 0, got {gpus}")
        cpus_per_run, gpus_per_run = cpus.value, gpus.value
        # before ray.init, which retries an address where no Ray answers for minutes
        ray = self.ray = import_ray() if address_checked else ready_ray(address)
        self.started = not ray.is_initialized()
        if self.started:
            kw: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR",
                                  "log_to_driver": True}
            if address is None and not os.environ.get("RAY_ADDRESS"):
                # whole CPUs: Ray refuses to start with 1.5 ("Resource quantities must all be
                # whole numbers"), which 3 workers of 0.5 CPU asked for
                kw["num_cpus"] = (math.ceil(workers * cpus_per_run) if workers
                                  else os.cpu_count())
            # Ray installs a SIGTERM handler that aborts the driver; keep ours (SIGTERM stops
            # the sweep like Ctrl-C: tasks cancelled, runs recorded interrupted)
            term = signal.getsignal(signal.SIGTERM) if _main_thread() else None
            try:
                ray.init(address=address, **with_plugins_env(kw))
                if term is not None:
                    signal.signal(signal.SIGTERM, term)
            except Exception as e:  # noqa: BLE001 - Ray's errors are many; one line
                raise UserError(f"cannot start or join Ray"
                                f"{f' at {address}' if address else ''}: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else e}"
                                f"{_token_hint(address or os.environ.get('RAY_ADDRESS'))}"
                                ) from None
        try:
            slots = _slots(ray, cpus, gpus)
        except UserError:
            self.close()
            raise
        self.capacity = max(1, min(slots, workers) if workers else slots)
        self.cpus, self.gpus = cpus_per_run, gpus_per_run
        self.on_rows = on_rows
        # (run id, shipped checkpoint) -> None; without it the tasks keep no checkpoint
        self.on_checkpoint = on_checkpoint
        self.inbox = _inbox_class(ray).remote()
        self.remote = ray.remote(_run_task)
        self._ids = itertools.count()

    def has_capacity(self) -> bool:
        return len(self.refs) < self.capacity

    def submit(self, task: RunTask) -> int:
        task.ship = True              # no file system shared with the driver is assumed
        h = next(self._ids)
        ref = self.remote.options(num_cpus=self.cpus, num_gpus=self.gpus,
                                  max_retries=0).remote(task, self.inbox,
                                                        self.on_checkpoint is not None)
        self.refs[ref] = (h, task.run_id)
        return h

    def wait(self, timeout: float) -> list[tuple[int, str, Any]]:
        ray = self.ray
        if not self.refs:
            return []
        ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
        self._drain()
        events = []
        for ref in ready:
            h, _ = self.refs.pop(ref)
            try:
                events.append((h, "done", ray.get(ref)))
            except ray.exceptions.RayError as e:   # worker, node or object lost
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                events.append((h, "lost", f"its Ray task was lost ({type(e).__name__}"
                                          f"{': ' + first[:200] if first else ''})"))
        return events

    def _drain(self) -> None:
        try:
            batches = self.ray.get(self.inbox.take.remote())
        except self.ray.exceptions.RayError as e:
            # the actor that collects the runs' metric rows is gone (killed, its node lost):
            # the rows of the runs in flight with it; they are recorded interrupted
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise UserError(f"the Ray actor collecting the runs' metric rows died "
                            f"({type(e).__name__}{': ' + first if first else ''}); the runs "
                            "in flight are lost, the finished ones are in the store: run the "
                            "same command again to complete the sweep") from None
        for kind, run_id, payload in batches:
            if kind == "rows":
                self.on_rows(run_id, payload)
            elif self.on_checkpoint is not None:
                self.on_checkpoint(run_id, payload)

    def cancel_all(self) -> None:
        for ref in list(self.refs):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already done or gone
                pass
        if self.refs:
            # then what the tasks had sent is taken, as the local pool reads its workers'
            # pipes: a checkpoint and the rows it counts may still be in the actor
            try:
                self._drain()
            except Exception:  # noqa: BLE001 - the actor gone too: nothing to take
                pass
        self.refs.clear()

    def close(self) -> None:
        if self.refs:
            self.cancel_all()
        if self.started and self.ray.is_initialized():
            try:
                self.ray.shutdown()
            finally:
                _keep_sigterm_handler()


def _keep_sigterm_handler() -> None:
    """Install the SIGTERM handler Python holds again: ``ray.shutdown`` resets the signal to
    its default action beneath Python, which still reports sgdlab's handler, so a ``kill``
    while the report was written ended the driver at once (exit 143, not a word said)."""
    if not _main_thread():
        return
    handler = signal.getsignal(signal.SIGTERM)
    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


# HTTP/2's client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, its client
# server) answers with a SETTINGS frame of its own (frame type 4, the header's fourth byte)
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_NOT_RAY = ("not a Ray cluster's port: give the head node's GCS port (`ray start --head "
            "--port`, 6379 by default), or ray://HOST:10001 for its Ray Client server")


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) address where no Ray answers is a
    ``UserError`` at once: ``ray.init`` retries it for minutes. Accepting a TCP connection is
    not enough: the port must answer HTTP/2's preface as the gRPC servers of Ray's GCS and
    client do (not checked under ``$RAY_USE_TLS``); a port that accepts and stays silent kept
    ``ray.init`` retrying for over two minutes, as did a web server's (the dashboard's 8265).
    ``address`` None: ``$RAY_ADDRESS``, named as such (a variable left set in the shell is
    easily forgotten). Other forms (``auto``, ``local``, none) are Ray's to resolve."""
    where, named = "--address", ""
    if address is None and os.environ.get("RAY_ADDRESS"):
        address, where, named = os.environ["RAY_ADDRESS"], "$RAY_ADDRESS", " ($RAY_ADDRESS)"
    if not address or address in ("auto", "local"):
        return
    scheme, has_scheme, rest = address.partition("://")
    if has_scheme and scheme != "ray":
        raise UserError(f"{where} {address!r}: an {scheme}:// address is a web server's (the "
                        "Ray dashboard's, for `ray job submit`), " + _NOT_RAY)
    host, sep, port = (rest if has_scheme else address).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"{where} {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except OSError as e:
        raise UserError(f"cannot reach Ray at {address}{named}: {e.strerror or e}") from None
    with conn:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        answer = _first_bytes(conn, _HTTP2_PREFACE, 9)
    if answer is not None and len(answer) == 9 and answer[3] == 4:
        return
    if answer is None:
        what = f"accepts connections but answered nothing in {timeout:g} s"
    elif answer.startswith(b"HTTP/"):
        what = "answers as a web server (HTTP/1; the Ray dashboard's port is 8265)"
    elif not answer:
        what = "closed the connection without answering"
    else:
        what = "does not answer as a gRPC server"
    raise UserError(f"no Ray at {address}{named}: the port {what}; {_NOT_RAY}")


def _first_bytes(conn: socket.socket, send: bytes, n: int) -> bytes | None:
    """The first ``n`` bytes ``conn`` answers ``send`` with (fewer where it closes), None
    where it says nothing before the socket's timeout."""
    answer = b""
    try:
        conn.sendall(send)
        while len(answer) < n:
            chunk = conn.recv(n - len(answer))
            if not chunk:
                break
            answer += chunk
    except TimeoutError:
        return answer or None
    except OSError:      # reset by the peer: a server that refused what it was sent
        pass
    return answer


def _token_hint(address: str | None) -> str:
    """Why joining a cluster at an explicit address may fail: Ray sends its token only to
    one found by ``auto``, while ``ray start --head`` turns token authentication on where a
    token exists (``~/.ray/auth_token``, which a local ``ray.init`` writes)."""
    if not address or address in ("auto", "local") or os.environ.get("RAY_AUTH_MODE"):
        return ""
    return ("; a cluster started with token authentication is joined with "
            "RAY_AUTH_MODE=token set (and its token in ~/.ray/auth_token or $RAY_AUTH_TOKEN)")


def _slots(ray, cpus: PerRun, gpus: PerRun) -> int:
    """How many runs of ``cpus`` CPUs and ``gpus`` GPUs the alive nodes of the cluster hold
    at once; a :class:`UserError` where no node can hold one, naming where the number came
    from (flag, variable, experiment file) and what to change there. A task must fit on one
    node: one no node can hold stays pending for ever (Ray's autoscaler says so in a log
    line), so the sweep would wait without end, though the cluster's totals are enough (two
    4-CPU nodes, 6 CPUs per run). An autoscaling cluster whose nodes are not up yet is
    refused."""
    nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]
    for kind, need in (("CPU", cpus), ("GPU", gpus)):
        if need.value <= 0:
            continue
        largest = max((n.get(kind, 0) for n in nodes), default=0)
        if largest < need.value:
            if largest > 0:
                fix = f"a run must fit on one node: {need.at_most(largest)}"
            elif kind == "CPU":
                fix = ("no alive node has a CPU (an autoscaling cluster's nodes are not up "
                       "yet?): start the cluster's nodes, then run again")
            else:
                fix = f"no alive node has a GPU: join a cluster with one, or {need.none()}"
            raise UserError(f"{need.value:g} {kind}s per run ({need}): the largest node of "
                            f"the Ray cluster has {largest:g} {kind}s "
                            f"({sum(n.get(kind, 0) for n in nodes):g} in all); {fix}")
    slots = sum(min(n.get("CPU", 0) // cpus.value,
                    n.get("GPU", 0) // gpus.value if gpus.value > 0 else math.inf)
                for n in nodes)
    if slots < 1:
        # the most of each that a node holding enough of the other has
        cpus_fit = max((n.get("CPU", 0) for n in nodes if n.get("GPU", 0) >= gpus.value),
                       default=0)
        gpus_fit = max((n.get("GPU", 0) for n in nodes if n.get("CPU", 0) >= cpus.value),
                       default=0)
        fixes = [cpus.at_most(cpus_fit)] if cpus_fit > 0 else []
        fixes.append(gpus.at_most(gpus_fit) if gpus_fit > 0 else
                     f"run without GPUs: {gpus.none()}")
        raise UserError(f"{cpus.value:g} CPUs ({cpus}) and {gpus.value:g} GPUs ({gpus}) per "
                        f"run: no node of the Ray cluster has both; {', or '.join(fixes)}")
    return int(slots)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _run_task(task: RunTask, inbox, checkpoints: bool = True) -> Any:
    """A Ray task: run ``task``, streaming rows and checkpoints to ``inbox``; every row is
    in the inbox before the record is returned, and before the checkpoint that counts it
    (actor calls from one caller run in order). The task waits for each checkpoint to be in
    the inbox before it trains on: a task lost after that loses nothing it had saved."""
    import ray

    last = []

    def send(rows):
        last[:] = [inbox.put.remote(task.run_id, rows)]

    def send_checkpoint(shipped):
        last[:] = [inbox.put_checkpoint.remote(task.run_id, shipped)]
        ray.get(last[0])

    record = execute_run(task, send=send,
                         send_checkpoint=send_checkpoint if checkpoints else None)
    if last:
        ray.get(last[0])
    return record


def _inbox_class(ray):
    @ray.remote(num_cpus=0)
    class _Inbox:
        """Metric rows and checkpoints from the tasks, in the order sent, until the driver
        takes them."""

        def __init__(self):
            self.rows: list[tuple[str, str, Any]] = []

        def put(self, run_id: str, rows: list) -> None:
            self.rows.append(("rows", run_id, rows))

        def put_checkpoint(self, run_id: str, shipped: dict) -> None:
            self.rows.append(("checkpoint", run_id, shipped))

        def take(self) -> list:
            rows, self.rows = self.rows, []
            return rows

    return _Inbox
