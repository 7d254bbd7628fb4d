"""The Ray backend stores exactly what the local pool stores, and a sweep started on one
backend is finished by the other (a local Ray instance: ``ray.init(num_cpus=2)``)."""
from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

# (registers the test procedures; the Ray workers import it too)
from sweep_kill_helpers import DIR_ENV, KILL_ENV, cancel_once_sent
from sgdlab.cli.main import main
from sgdlab.experiments.spec import CATALOGUE_DIR, load_experiment, resolve
from sgdlab.experiments.sweep import artifacts_root, dependency_layers, load_runs, run_sweep
from sgdlab.experiments.worker import CHECKPOINT_DIR
from sgdlab.store import RunStore
from test_sweep_resume import counted_steps, outcome, stop_with_a_refused_checkpoint, tiny


# the runs labelled so kill their Ray worker after step 2 (once each: sweep_kill_helpers)
KILLED_ON_RAY = ("ray-killed", "ray-failed")


@pytest.fixture(scope="module")
def ray_kills(tmp_path_factory) -> Path:
    """Where the Ray workers' kill points leave their markers."""
    return tmp_path_factory.mktemp("ray-kills")


@pytest.fixture(scope="module")
def ray_local(ray_kills):
    try:
        import ray
    except ImportError:
        pytest.skip("Ray is not installed here (python -m pip install 'sgdlab[ray]')")
    # the workers import the test procedures (sweep_kill_helpers) and read its kill points;
    # sgdlab they import from the driver's working folder, as Ray does
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, DIR_ENV: str(ray_kills), "SGDLAB_THREADS": "1",
           KILL_ENV: ";".join(f"train@{label}" for label in KILLED_ON_RAY)}
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 runtime_env={"env_vars": env})
    except Exception as e:  # noqa: BLE001 - whatever keeps Ray from starting on this machine
        pytest.skip(f"Ray cannot start here: {e}")
    yield ray
    ray.shutdown()


# before the tests that use `ray_local`: the sweep below starts (and stops) its own Ray
def test_a_sigterm_while_the_report_of_a_ray_sweep_is_written_says_the_runs_are_stored(
        tmp_path):
    """ray.shutdown resets SIGTERM to its default action beneath Python: a `kill` while the
    report was written ended the driver (exit 143) with nothing said."""
    pytest.importorskip("ray")
    import subprocess

    import sgdlab

    code = ("import os, signal, sys, time; sys.path.insert(0, sys.argv[1])\n"
            "import sgdlab.experiments.runner as runner\n"
            "from sgdlab.cli.main import main\n"
            "def build_report(*a, **k):\n"
            "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
            "runner.build_report = build_report\n"
            "sys.exit(main(sys.argv[2:]))")
    root = str(Path(sgdlab.__file__).resolve().parents[1])
    # (its Ray workers import this sgdlab too, not one installed elsewhere)
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    p = subprocess.run([sys.executable, "-c", code, root, "run", "chaudhari-pde-smoothing",
                        "--scale", "smoke", "--backend", "ray", "--workers", "1",
                        "--out", "o", "--store", "s.sqlite"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "SGDLAB_THREADS": "1", "PYTHONPATH": path})
    assert p.returncode == 130, p.stderr[-2000:]
    assert "the report was terminated after the sweep had ended (its runs are stored)" in p.stderr
    assert [r["status"] for r in RunStore(tmp_path / "s.sqlite").list_runs()] == ["finished"]


def stored(runs, store) -> dict[str, tuple]:
    """run key -> (status, summary, metric series, data, artifact file names + bytes)."""
    out = {}
    s = RunStore(store, readonly=True)
    for r in load_runs(runs, store_path=str(store))[0]:
        files = {Path(p).name: Path(p).read_bytes() for p in s.artifacts(r.run_id)}
        out[r.key] = (r.status, r.summary, r.metrics, r.data, files)
    return out


def test_ray_and_the_local_pool_store_the_same_results(ray_local, tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_THREADS", "1")
    # runs that depend on earlier runs' saved weights: the files travel through Ray (one
    # dependent run and the two it needs: each layer is a worker start-up fewer)
    needed = {"A-lr0.1-B50", "B-lr0.4-B200", "equal-ratio"}
    runs = [r for r in load_experiment("jastrzebski-interpolation", "smoke").expand()
            if r.label in needed]
    first, *later = dependency_layers(runs)
    assert len(runs) == 3 and later, "the runs include a dependent run"
    pool, mixed = tmp_path / "pool.sqlite", tmp_path / "mixed.sqlite"
    assert not run_sweep(runs, store_path=str(pool), workers=2, progress=None).failed

    # started on the local pool (first layer only), finished on Ray: only the rest runs there
    run_sweep(first, store_path=str(mixed), workers=2, progress=None)
    said: list[str] = []
    rep = run_sweep(runs, store_path=str(mixed), backend="ray", progress=said.append)
    assert not rep.failed and len(rep.skipped) == len(first)
    assert len(rep.executed) == len(runs) - len(first)

    a, b = stored(runs, pool), stored(runs, mixed)
    assert a.keys() == b.keys() == {r.key for r in runs}
    for key in a:
        assert a[key][:4] == b[key][:4], key           # status, summary, metrics, data
        assert a[key][4] == b[key][4], key             # the same files, byte for byte
    # Ray ran on this machine, one writer: every row came back through the driver
    envs = [RunStore(mixed).get_run(r["id"])["env"] for r in RunStore(mixed).list_runs()]
    assert {e["torch_threads"] for e in envs} == {1}
    assert run_sweep(runs, store_path=str(mixed), backend="ray", progress=None).executed == []


def test_backend_options_are_checked_before_anything_runs(tmp_path):
    import yaml

    from sgdlab.errors import ConfigError, UserError
    from sgdlab.experiments.spec import catalogue_files, resolve

    raw = yaml.safe_load(catalogue_files()["xing-walk"].read_text())
    runs = resolve(raw, "smoke").expand()
    with pytest.raises(UserError, match="--address and --gpus-per-run are options of"):
        run_sweep(runs, store_path=str(tmp_path / "s.sqlite"), address="head:6379",
                  gpus_per_run=1)
    with pytest.raises(UserError, match="--backend must be one of local, ray"):
        run_sweep(runs, store_path=str(tmp_path / "s.sqlite"), backend="slurm")
    assert resolve({**raw, "resources": {"gpus_per_run": 0.25}}, "smoke").resources == {
        "gpus_per_run": 0.25}
    with pytest.raises(ConfigError, match="resources.cpus_per_run: expected a number > 0"):
        resolve({**raw, "resources": {"cpus_per_run": 0}}, "smoke")
    with pytest.raises(ConfigError,
                       match=r"resources\.gpus: unknown key \(did you mean gpus_per_run\?\)"):
        resolve({**raw, "resources": {"gpus": 1}}, "smoke")


def test_unreachable_ray_addresses_fail_at_once():
    """ray.init retries an address nobody listens on for minutes: a closed port or an unknown
    host is a one-line error before it is called."""
    import socket

    from sgdlab.errors import UserError
    from sgdlab.experiments.ray_backend import check_reachable

    with socket.socket() as s:           # a port that was free a moment ago: nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=f"cannot reach Ray at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(UserError, match="cannot reach Ray at ray://127.0.0.1"):
        check_reachable(f"ray://127.0.0.1:{port}", timeout=2)
    with pytest.raises(UserError, match="expected HOST:PORT"):
        check_reachable("head-node")
    with pytest.raises(UserError, match="expected HOST:PORT"):
        check_reachable(":6379")
    with pytest.raises(UserError, match="an http:// address is a web server's .* GCS port"):
        check_reachable("http://127.0.0.1:8265")
    with socket.socket() as s:           # accepts connections (the kernel's), says nothing
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(UserError, match=r"no Ray at 127\.0\.0\.1:\d+: the port accepts "
                                            r"connections but answered nothing in 0\.2 s; "
                                            r"not a Ray cluster's port"):
            check_reachable(f"127.0.0.1:{s.getsockname()[1]}", timeout=0.2)
    with answering(b"HTTP/1.1 400 Bad Request\r\n\r\n") as port:
        with pytest.raises(UserError, match="answers as a web server"):
            check_reachable(f"127.0.0.1:{port}", timeout=2)
    with answering(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])) as port:     # a gRPC server's SETTINGS
        check_reachable(f"127.0.0.1:{port}", timeout=2)
        check_reachable(f"ray://127.0.0.1:{port}", timeout=2)   # a client server's
    for fine in (None, "auto", "local"):
        check_reachable(fine)


@contextlib.contextmanager
def answering(reply: bytes):
    """The port of a server on 127.0.0.1 that answers each connection with ``reply``."""
    server, done = socket.create_server(("127.0.0.1", 0)), threading.Event()
    server.settimeout(0.05)          # accept() wakes to see the test done (close() does not)

    def serve():
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=5)
        server.close()


def test_joining_an_explicit_address_that_fails_names_token_authentication(monkeypatch):
    """Ray sends its token only to a cluster found by `auto`, and `ray start --head` turns
    token authentication on where ~/.ray/auth_token exists: the sweep's one line said only
    "Failed to connect to Ray cluster", after Ray's log lines saying InvalidAuthToken."""
    from sgdlab.errors import UserError
    from sgdlab.experiments import ray_backend

    def init(**kw):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")

    fake = SimpleNamespace(is_initialized=lambda: False, init=init)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    monkeypatch.setattr(ray_backend, "check_reachable", lambda address: None)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(UserError, match=r"cannot start or join Ray at head:6379: Failed to "
                                        r"connect .*; a cluster started with token "
                                        r"authentication is joined with RAY_AUTH_MODE=token"):
        ray_backend.RayBackend(lambda *a: None, address="head:6379")
    for auto in ("auto", None):            # Ray sends the token there itself
        with pytest.raises(UserError) as refused:
            ray_backend.RayBackend(lambda *a: None, address=auto)
        assert "RAY_AUTH_MODE" not in str(refused.value)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")        # set: the token was not the cause
    with pytest.raises(UserError) as refused:
        ray_backend.RayBackend(lambda *a: None, address="head:6379")
    assert "RAY_AUTH_MODE" not in str(refused.value)


def test_joining_a_cluster_passes_the_drivers_plugins_to_its_workers(monkeypatch):
    """The workers of a running cluster were not started from the driver's environment:
    ray.init's runtime_env carries $SGDLAB_PLUGINS to them (no cluster: ray.init recorded)."""
    from types import SimpleNamespace

    from sgdlab.errors import UserError
    from sgdlab.experiments import ray_backend
    from sgdlab.plugins import PLUGINS_ENV

    calls = []

    def init(**kw):
        calls.append(kw)
        raise RuntimeError("recorded, not joined")

    fake = SimpleNamespace(is_initialized=lambda: False, init=init)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    monkeypatch.setattr(ray_backend, "check_reachable", lambda address: None)
    monkeypatch.setenv(PLUGINS_ENV, "/nodes/have/my_models.py")
    with pytest.raises(UserError, match="cannot start or join Ray at head:6379"):
        ray_backend.RayBackend(lambda *a: None, address="head:6379")
    assert calls[-1]["address"] == "head:6379"
    assert calls[-1]["runtime_env"] == {"env_vars": {PLUGINS_ENV: "/nodes/have/my_models.py"}}
    # a runtime_env of its own is kept, the variable added to it
    kw = ray_backend.with_plugins_env({"runtime_env": {"env_vars": {"A": "1"}, "pip": ["x"]}})
    assert kw["runtime_env"] == {"env_vars": {"A": "1", PLUGINS_ENV: "/nodes/have/my_models.py"},
                                 "pip": ["x"]}
    monkeypatch.delenv(PLUGINS_ENV)
    with pytest.raises(UserError):
        ray_backend.RayBackend(lambda *a: None, address="head:6379")
    assert "runtime_env" not in calls[-1]


def test_too_few_gpus_is_a_clear_error(ray_local):
    from sgdlab.errors import UserError
    from sgdlab.experiments.ray_backend import RayBackend

    with pytest.raises(UserError, match=re.escape(
            "64 GPUs per run (--gpus-per-run 64): the largest node of the Ray cluster has 0 "
            "GPUs (0 in all); no alive node has a GPU: join a cluster with one, or leave out "
            "--gpus-per-run")):
        RayBackend(lambda *a: None, gpus_per_run=64)


def test_a_lost_row_collector_is_one_clear_error(ray_local):
    """The actor collecting metric rows killed (as a user's kill -9 or a lost node does): the
    sweep stops with one line saying what died and how to continue, not Ray's traceback."""
    import ray

    from sgdlab.errors import UserError
    from sgdlab.experiments.ray_backend import RayBackend

    backend = RayBackend(lambda *a: None)
    try:
        ray.kill(backend.inbox, no_restart=True)
        with pytest.raises(UserError, match=r"Ray actor collecting the runs' metric rows died "
                                            r"\(.*\).*run the same command again"):
            backend._drain()
    finally:
        backend.close()


# --- resume: a Ray task sends its checkpoints to the driver -------------------------------
def with_reference(raw: dict, tmp_path: Path) -> tuple:
    """``raw`` at cpu scale, run on the local backend into ``ref.sqlite`` (what the sweeps
    under test must store); returns it, that store and the path of the one to sweep into."""
    spec, ref = resolve(raw, "cpu"), tmp_path / "ref.sqlite"
    run_sweep(spec.expand(), store_path=str(ref), progress=None)
    return spec, ref, tmp_path / "s.sqlite"


def killed_on_ray(label: str) -> dict:
    """A full-batch run (a checkpoint at each step) whose Ray worker SIGKILLs itself after
    step 2 (once): its checkpoint of step 1 was sent to the driver."""
    assert label in KILLED_ON_RAY
    return {**tiny("_test_killing_train", batch_size="full", epochs=4),
            "runs": [{"label": label}]}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.usefixtures("one_thread_runs")
def test_a_lost_ray_task_is_retried_from_the_checkpoint_it_sent(ray_local, ray_kills,
                                                               tmp_path):
    """Ray runs kept no checkpoint: a lost task started again from step 0."""
    spec, ref, store = with_reference(killed_on_ray("ray-killed"), tmp_path)
    said: list[str] = []
    rep = run_sweep(spec.expand(), store_path=str(store), backend="ray", progress=said.append)
    assert list(ray_kills.glob("train@ray-killed"))            # the kill fired
    assert not rep.failed
    assert any("its Ray task was lost" in s and "trying it again" in s for s in said), said
    assert "resuming ray-killed|seed=0 from step 1 of 4 (its last checkpoint)" in said
    assert outcome(store, spec) == outcome(ref, spec)
    assert not (artifacts_root(RunStore(store)) / spec.expand()[0].key / CHECKPOINT_DIR
                ).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.usefixtures("one_thread_runs")
def test_a_checkpoint_a_ray_task_sent_is_resumed_by_the_local_backend(ray_local, ray_kills,
                                                                      tmp_path):
    spec, ref, store = with_reference(killed_on_ray("ray-failed"), tmp_path)
    said: list[str] = []
    rep = run_sweep(spec.expand(), store_path=str(store), backend="ray", retries=0,
                    progress=None)
    assert list(ray_kills.glob("train@ray-failed")) and len(rep.failed) == 1
    run_sweep(spec.expand(), store_path=str(store), progress=said.append)   # in this process
    assert "resuming ray-failed|seed=0 from step 1 of 4 (its last checkpoint)" in said
    assert outcome(store, spec) == outcome(ref, spec)


@pytest.mark.usefixtures("one_thread_runs")
def test_a_checkpoint_of_a_local_run_is_resumed_on_ray(ray_local, tmp_path, monkeypatch):
    """A sweep stopped on the local backend and finished on Ray: Ray took the key over and
    removed its checkpoint, training from step 0."""
    import sgdlab.experiments.procedures.train as proc

    spec, ref, store = with_reference(tiny(), tmp_path)
    monkeypatch.setattr(proc, "CHECKPOINT_SECONDS", 0)      # here: at each epoch end
    counted_steps(monkeypatch, stop_at=11)    # in epoch 3: the last checkpoint is at step 8
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec.expand(), store_path=str(store), progress=None)
    said: list[str] = []              # (the Ray workers train with their own SGD)
    rep = run_sweep(spec.expand(), store_path=str(store), backend="ray", progress=said.append)
    assert not rep.failed
    assert "resuming a|seed=0 from step 8 of 20 (its last checkpoint)" in said
    assert outcome(store, spec) == outcome(ref, spec)     # the trajectory continued, too


@pytest.mark.usefixtures("one_thread_runs")
def test_a_ray_sweep_stopped_by_ctrl_c_resumes_on_ray_when_run_again(ray_local, tmp_path,
                                                                     monkeypatch):
    """Ctrl-C in the driver once the task's first checkpoint is written there (the task
    trains on meanwhile: what it sent before the stop is taken too); the same sweep run
    again on Ray continues from the last checkpoint the driver holds."""
    import re

    from sgdlab.experiments.sweep import _Driver

    raw = {**tiny("_test_killing_train", batch_size="full", epochs=6),
           "runs": [{"label": "ray-stopped"}]}             # checkpoints at each step
    spec, ref, store = with_reference(raw, tmp_path)
    written = _Driver.on_checkpoint

    def ctrl_c_after_the_first(self, run_id, shipped):
        written(self, run_id, shipped)
        if not getattr(self, "stopped", False):
            self.stopped = True
            raise KeyboardInterrupt

    monkeypatch.setattr(_Driver, "on_checkpoint", ctrl_c_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec.expand(), store_path=str(store), backend="ray", progress=None)
    assert [r["status"] for r in RunStore(store).list_runs()] == ["interrupted"]
    monkeypatch.setattr(_Driver, "on_checkpoint", written)
    said: list[str] = []
    rep = run_sweep(spec.expand(), store_path=str(store), backend="ray", progress=said.append)
    assert not rep.failed
    assert any(re.fullmatch(r"resuming ray-stopped\|seed=0 from step [1-6] of 6 \(its last "
                            r"checkpoint\)", s) for s in said), said
    assert outcome(store, spec) == outcome(ref, spec)


@pytest.mark.usefixtures("one_thread_runs")
def test_a_checkpoint_a_ray_task_refuses_is_removed_and_the_run_started_again(
        ray_local, tmp_path, monkeypatch):
    """Its training names the checkpoint where the task wrote it (a temporary folder): the
    driver must see it is the one it sent, say so, and start the run again from step 0."""
    spec, ref, store = with_reference(tiny(), tmp_path)
    ckpt = stop_with_a_refused_checkpoint(monkeypatch, spec, store)
    said: list[str] = []
    rep = run_sweep(spec.expand(), store_path=str(store), backend="ray", progress=said.append)
    assert not rep.failed
    assert any(x.startswith(f"a|seed=0: its checkpoint cannot be resumed (cannot resume from "
                            f"{str(ckpt)!r}") and x.endswith("; starting it from step 0")
               for x in said), said
    assert outcome(store, spec) == outcome(ref, spec)


def test_what_a_ray_task_sent_before_the_sweep_stopped_it_reaches_the_driver(ray_local,
                                                                            tmp_path):
    """Ctrl-C cancelled the tasks and left what they had sent in the actor: a checkpoint sent
    just before the stop (and the rows it counts) was lost."""
    from sgdlab.experiments.ray_backend import RayBackend

    got: list[tuple] = []
    checkpoints: list[tuple[str, dict]] = []
    # its marker is left once the checkpoint has reached the actor
    cancel_once_sent(RayBackend(lambda run_id, rows: got.extend(rows),
                                on_checkpoint=lambda *a: checkpoints.append(a)),
                     "_test_checkpoint_then_wait", tmp_path)
    assert [(r[0], r[1], r[2]) for r in got] == [("value", i, float(i)) for i in range(5)]
    assert [(run_id, c["checkpoint"]) for run_id, c in checkpoints] == [("r1", b"after 5 rows")]


def test_a_shipped_checkpoint_brings_the_files_it_goes_with(tmp_path):
    """What a Ray task sends with each checkpoint: new and rewritten files whole, a grown
    file's tail only, removed files; the driver's folder then equals the task's."""
    from sgdlab.experiments.worker import CheckpointShipper, apply_checkpoint, read_files

    task, driver, sent = tmp_path / "task", tmp_path / "driver", []
    (task / "trajectory").mkdir(parents=True)
    (task / "trajectory" / "snapshots.bin").write_bytes(b"row0")   # as its task gave it
    (task / "old.json").write_text("{}")
    driver.mkdir()
    for rel, data in read_files(task).items():
        (driver / rel).parent.mkdir(parents=True, exist_ok=True)
        (driver / rel).write_bytes(data)
    ship = CheckpointShipper(task, sent.append)
    ckpt = task / CHECKPOINT_DIR / "last.pt"
    ckpt.parent.mkdir()

    def checkpoint(data: bytes) -> dict:
        ckpt.write_bytes(data)
        ship(ckpt)
        assert apply_checkpoint(driver, sent[-1]) is None
        assert read_files(driver) == read_files(task)
        return sent[-1]

    with open(task / "trajectory" / "snapshots.bin", "ab") as f:
        f.write(b"row1")
    (task / "meta.json").write_text('{"a": 1}')
    first = checkpoint(b"ckpt-1")
    assert first["tails"] == {"trajectory/snapshots.bin": (4, b"row1")}
    assert first["files"] == {"meta.json": b'{"a": 1}'} and first["removed"] == []
    assert first["checkpoint"] == b"ckpt-1"
    second = checkpoint(b"ckpt-2")                       # nothing else changed
    assert (second["files"], second["tails"], second["removed"]) == ({}, {}, [])
    (task / "trajectory" / "snapshots.bin").write_bytes(b"rowXrow1row2")  # not an append
    (task / "old.json").unlink()
    third = checkpoint(b"ckpt-3")
    assert third["files"] == {"trajectory/snapshots.bin": b"rowXrow1row2"}
    assert third["tails"] == {} and third["removed"] == ["old.json"]
    # a tail that does not continue the driver's file: the checkpoint is not written
    with open(task / "trajectory" / "snapshots.bin", "ab") as f:
        f.write(b"row3")
    (driver / "trajectory" / "snapshots.bin").write_bytes(b"short")
    ckpt.write_bytes(b"ckpt-4")
    ship(ckpt)
    why = apply_checkpoint(driver, sent[-1])
    assert why == "its file trajectory/snapshots.bin has 5 bytes here, its tail starts at 12"
    assert (driver / CHECKPOINT_DIR / "last.pt").read_bytes() == b"ckpt-3"


@pytest.mark.skipif(os.name != "posix", reason="a process is looked up by its pid")
def test_the_folder_a_killed_task_left_goes_when_the_next_task_starts_on_its_host(
        tmp_path, monkeypatch):
    """A shipped run works in a local folder its worker removes at the end; a SIGKILLed worker
    cannot, so the next one on the same host removes it (a checkpoint each), and only that:
    never a living worker's folder, another host's (a shared temporary directory) or a folder
    it did not name."""
    import socket
    import subprocess
    import tempfile
    import zlib

    from sgdlab.experiments.worker import local_run_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = f"{zlib.crc32(socket.gethostname().encode()):08x}"
    other = "0" * 8 if host != "0" * 8 else "1" * 8
    left = tmp_path / f"sgdlab-run-{host}-{gone.pid}-k1ll3d_"
    (left / "run" / CHECKPOINT_DIR).mkdir(parents=True)
    (left / "run" / CHECKPOINT_DIR / "last.pt").write_bytes(b"weights")
    kept = [tmp_path / f"sgdlab-run-{host}-{os.getpid()}-l1ve", tmp_path / "sgdlab-run-x1y2",
            tmp_path / f"sgdlab-run-{other}-{gone.pid}-0th3r"]
    for folder in kept:
        folder.mkdir()
    new = local_run_folder()
    assert not left.exists() and all(f.is_dir() for f in kept)
    assert new.parent == tmp_path and new.name.startswith(f"sgdlab-run-{host}-{os.getpid()}-")
    assert local_run_folder() != new and new.is_dir()        # its own process lives on


# --- the backend's own arithmetic and dispatch, against a stand-in for Ray (no cluster)


class _FakeRay:
    """Ray as RayBackend uses it: a cluster of ``resources`` (one node, or the alive nodes'
    ``node_resources``); ``init`` and the tasks submitted recorded; the inbox's ``take``
    answers ``batches``."""

    def __init__(self, resources: dict, initialized: bool = True,
                 node_resources: list[dict] | None = None):
        self.resources, self.initialized = resources, initialized
        self.node_resources = node_resources
        self.inits, self.submitted, self.cancelled, self.batches = [], [], [], []
        self.exceptions = SimpleNamespace(RayError=RuntimeError)

    def is_initialized(self):
        return self.initialized

    def init(self, **kw):
        self.inits.append(kw)
        self.initialized = True

    def shutdown(self):
        self.initialized = False

    def cluster_resources(self):
        return self.resources

    @classmethod
    def of_nodes(cls, nodes: list[dict]) -> "_FakeRay":
        """A cluster of the alive ``nodes``, its resources their totals."""
        total = {k: sum(n.get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
        return cls(total, node_resources=nodes)

    def nodes(self):
        if self.node_resources is None:
            return [{"Alive": True, "Resources": self.resources}]
        return [{"Alive": True, "Resources": r} for r in self.node_resources] + [
            {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]    # a dead node

    def remote(self, fn=None, **kw):
        if fn is None:                     # @ray.remote(num_cpus=0): the inbox actor class
            inbox = SimpleNamespace(take=SimpleNamespace(remote=lambda: "take"))
            return lambda cls: SimpleNamespace(remote=lambda: inbox)
        ray = self

        class Task:
            def options(self, **given):
                return SimpleNamespace(remote=lambda *args: ray._submit(given, args))

        return Task()

    def _submit(self, options: dict, args: tuple) -> int:
        self.submitted.append((options, args))
        return len(self.submitted)

    def get(self, ref):
        assert ref == "take"
        batches, self.batches = self.batches, []
        return batches

    def cancel(self, ref, force):
        self.cancelled.append(ref)


@pytest.mark.parametrize("resources, kw, capacity", [
    ({"CPU": 8.0}, {}, 8), ({"CPU": 8.0}, {"cpus_per_run": 3.0}, 2),
    ({"CPU": 8.0}, {"workers": 3}, 3), ({"CPU": 2.0}, {"workers": 5}, 2),
    ({"CPU": 8.0, "GPU": 1.0}, {"gpus_per_run": 0.25}, 4),
    ({"CPU": 8.0, "GPU": 1.0}, {"gpus_per_run": 1.0}, 1),
    ({"CPU": 2.0}, {"cpus_per_run": 2.0}, 1)])
def test_runs_in_flight_are_what_the_clusters_resources_and_workers_allow(
        monkeypatch, resources, kw, capacity):
    from sgdlab.experiments import ray_backend

    monkeypatch.setattr(ray_backend, "import_ray", lambda: _FakeRay(resources))
    assert ray_backend.RayBackend(lambda *a: None, **kw).capacity == capacity


def test_a_ray_instance_started_here_gets_the_cores_of_its_workers_and_stops_at_the_end(
        monkeypatch):
    from sgdlab.errors import UserError
    from sgdlab.experiments import ray_backend

    fake = _FakeRay({"CPU": 4.0}, initialized=False)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    backend = ray_backend.RayBackend(lambda *a: None, workers=2, cpus_per_run=2.0)
    assert fake.inits[-1]["num_cpus"] == 4.0 and backend.capacity == 2
    backend.close()
    assert not fake.initialized
    for bad, says in (({"cpus_per_run": 0.0}, "CPUs per run must be > 0, got --cpus-per-run 0"),
                      ({"gpus_per_run": -1.0}, "GPUs per run must be >= 0, got --gpus-per-run -1")):
        with pytest.raises(UserError, match=f"^{says}$"):
            ray_backend.RayBackend(lambda *a: None, **bad)
    with pytest.raises(UserError, match=re.escape(
            "1 GPUs per run (--gpus-per-run 1): the largest node of the Ray cluster has 0 "
            "GPUs")):
        ray_backend.RayBackend(lambda *a: None, gpus_per_run=1.0)


def test_more_cpus_per_run_than_the_cluster_has_is_a_clear_error_not_a_sweep_that_waits(
        monkeypatch):
    """Ray holds a task it can place on no node pending for ever (its autoscaler says so in
    a line of its own): the sweep waited without end for a run that could never start."""
    from sgdlab.errors import UserError
    from sgdlab.experiments import ray_backend

    fake = _FakeRay({"CPU": 16.0}, initialized=False)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_backend.os, "cpu_count", lambda: 16)
    with pytest.raises(UserError, match=re.escape(
            "32 CPUs per run (--cpus-per-run 32): the largest node of the Ray cluster has 16 "
            "CPUs (16 in all)")):
        ray_backend.RayBackend(lambda *a: None, cpus_per_run=32.0)
    assert not fake.initialized              # the instance it started is stopped


@pytest.mark.parametrize("nodes, kw, says", [
    ([{"CPU": 4.0}, {"CPU": 4.0}], {"cpus_per_run": 6.0},
     "6 CPUs per run (--cpus-per-run 6): the largest node of the Ray cluster has 4 CPUs "
     "(8 in all); a run must fit on one node: give --cpus-per-run 4 or less"),
    ([{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}], {"gpus_per_run": 1.5},
     "1.5 GPUs per run (--gpus-per-run 1.5): the largest node of the Ray cluster has 1 GPUs "
     "(2 in all); a run must fit on one node: give --gpus-per-run 1 or less"),
    ([{"CPU": 8.0}, {"CPU": 2.0, "GPU": 1.0}], {"cpus_per_run": 4.0, "gpus_per_run": 1.0},
     "4 CPUs (--cpus-per-run 4) and 1 GPUs (--gpus-per-run 1) per run: no node of the Ray "
     "cluster has both; give --cpus-per-run 2 or less, or run without GPUs: leave out "
     "--gpus-per-run"),
    ([], {}, "1 CPUs per run (the default 1; --cpus-per-run sets it): the largest node of the "
             "Ray cluster has 0 CPUs (0 in all); no alive node has a CPU (an autoscaling "
             "cluster's nodes are not up yet?): start the cluster's nodes, then run again")])
def test_a_run_no_single_node_can_hold_is_refused_though_the_cluster_totals_would(
        monkeypatch, nodes, kw, says):
    """Ray places a task on one node: with two 4-CPU nodes a 6-CPU run stays pending for
    ever though the cluster has 8 CPUs. The check is per alive node (an autoscaling cluster
    whose nodes are not up yet, no node alive, is refused the same way)."""
    from sgdlab.errors import UserError
    from sgdlab.experiments import ray_backend

    fake = _FakeRay.of_nodes(nodes)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    with pytest.raises(UserError, match=re.escape(says)):
        ray_backend.RayBackend(lambda *a: None, **kw)


TWO_4_CPU_NODES = [{"CPU": 4.0}, {"CPU": 4.0}]
NO_GPU_NODE = [{"CPU": 4.0}]
ONE_GPU_SMALL_NODE = [{"CPU": 8.0}, {"CPU": 2.0, "GPU": 1.0}]
TOO_BIG = "the largest node of the Ray cluster has 4 CPUs (8 in all); a run must fit on one node"
NO_GPU = "the largest node of the Ray cluster has 0 GPUs (0 in all); no alive node has a GPU"


def _ray_run(tmp_path, capsys, monkeypatch, fake, env: dict, argv: list) -> tuple[int, str]:
    """`sgdlab run ARGV --scale smoke --backend ray` on the stand-in cluster ``fake``, with
    only ``env`` of the per-run variables set: its exit code and what it wrote to stderr."""
    from sgdlab.experiments import ray_backend

    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    for var in ("SGDLAB_CPUS_PER_RUN", "SGDLAB_GPUS_PER_RUN", "SGDLAB_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    code = main(["run", *argv, "--scale", "smoke", "--backend", "ray",
                 "--out", str(tmp_path / "out"), "--store", str(tmp_path / "s.sqlite")])
    return code, capsys.readouterr().err


def test_a_ray_sweep_probes_its_address_once(tmp_path, capsys, monkeypatch):
    """`sgdlab run` checks Ray before its folder is made, `run_sweep` before the store, the
    backend before `ray.init`: each had probed the address again. The first answer is handed
    on; a backend built directly still probes before it joins."""
    from sgdlab.errors import UserError
    from sgdlab.experiments import ray_backend

    probes = []
    connect = socket.create_connection
    monkeypatch.setattr(socket, "create_connection", lambda where, *a, **kw: (
        probes.append(where) or connect(where, *a, **kw)))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    fake = _FakeRay({"CPU": 0.0}, initialized=False)     # joined, then no node takes a run
    with answering(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])) as port:    # a gRPC server's SETTINGS
        address = f"127.0.0.1:{port}"
        code, err = _ray_run(tmp_path, capsys, monkeypatch, fake, {},
                             ["zhu-escape-2d", "--address", address])
        assert code != 0 and "no alive node has a CPU" in err, err
        assert probes == [("127.0.0.1", port)] and fake.inits[-1]["address"] == address
        with pytest.raises(UserError, match="no alive node has a CPU"):
            ray_backend.RayBackend(lambda *a: None, address=address)
        assert len(probes) == 2 and len(fake.inits) == 2


@pytest.mark.parametrize("nodes, flags, env, resources, says", [
    (TWO_4_CPU_NODES, ["--cpus-per-run", "6"], {}, {},
     f"6 CPUs per run (--cpus-per-run 6): {TOO_BIG}: give --cpus-per-run 4 or less"),
    (TWO_4_CPU_NODES, [], {"SGDLAB_CPUS_PER_RUN": "6"}, {},
     f"6 CPUs per run ($SGDLAB_CPUS_PER_RUN=6): {TOO_BIG}: set $SGDLAB_CPUS_PER_RUN to 4 or "
     "less (or give --cpus-per-run 4 or less)"),
    (TWO_4_CPU_NODES, [], {}, {"cpus_per_run": 6},
     f"6 CPUs per run (the experiment's resources: cpus_per_run: 6): {TOO_BIG}: give "
     "--cpus-per-run 4 or less, which overrides the experiment's resources: (or lower "
     "cpus_per_run in its file)"),
    # the one that wins is the one named: the flag over the variable over the file
    (TWO_4_CPU_NODES, ["--cpus-per-run", "6"], {"SGDLAB_CPUS_PER_RUN": "2"},
     {"cpus_per_run": 2}, "6 CPUs per run (--cpus-per-run 6): "),
    (TWO_4_CPU_NODES, [], {"SGDLAB_CPUS_PER_RUN": "6"}, {"cpus_per_run": 2},
     "6 CPUs per run ($SGDLAB_CPUS_PER_RUN=6): "),
    (NO_GPU_NODE, ["--gpus-per-run", "1"], {}, {},
     f"1 GPUs per run (--gpus-per-run 1): {NO_GPU}: join a cluster with one, or leave out "
     "--gpus-per-run"),
    (NO_GPU_NODE, [], {"SGDLAB_GPUS_PER_RUN": "0.5"}, {},
     f"0.5 GPUs per run ($SGDLAB_GPUS_PER_RUN=0.5): {NO_GPU}: join a cluster with one, or "
     "unset $SGDLAB_GPUS_PER_RUN"),
    (NO_GPU_NODE, [], {}, {"gpus_per_run": 1},
     f"1 GPUs per run (the experiment's resources: gpus_per_run: 1): {NO_GPU}: join a cluster "
     "with one, or give --gpus-per-run 0, which overrides the experiment's resources:"),
    (ONE_GPU_SMALL_NODE, ["--gpus-per-run", "1"], {}, {"cpus_per_run": 4},
     "4 CPUs (the experiment's resources: cpus_per_run: 4) and 1 GPUs (--gpus-per-run 1) per "
     "run: no node of the Ray cluster has both; give --cpus-per-run 2 or less, which "
     "overrides the experiment's resources: (or lower cpus_per_run in its file), or run "
     "without GPUs: leave out --gpus-per-run"),
    (ONE_GPU_SMALL_NODE, [], {"SGDLAB_CPUS_PER_RUN": "4", "SGDLAB_GPUS_PER_RUN": "1"}, {},
     "4 CPUs ($SGDLAB_CPUS_PER_RUN=4) and 1 GPUs ($SGDLAB_GPUS_PER_RUN=1) per run: no node of "
     "the Ray cluster has both; set $SGDLAB_CPUS_PER_RUN to 2 or less (or give "
     "--cpus-per-run 2 or less), or run without GPUs: unset $SGDLAB_GPUS_PER_RUN")])
def test_the_refusal_of_a_run_no_node_can_hold_names_where_its_resources_came_from(
        tmp_path, capsys, monkeypatch, nodes, flags, env, resources, says):
    """The CPUs and GPUs of a run come from the flag, the variable or the experiment's
    resources: the refusal said "6 CPUs per run" only, and the user did not know which to
    change. Through `sgdlab run`, as a user meets it (a stand-in for the cluster)."""
    raw = yaml.safe_load((CATALOGUE_DIR / "zhu-escape-2d.yaml").read_text())
    if resources:
        raw["resources"] = resources
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(raw))
    code, err = _ray_run(tmp_path, capsys, monkeypatch, _FakeRay.of_nodes(nodes), env,
                         ["--config", str(path), *flags])
    assert code != 0 and f"error: {says}" in err, err


@pytest.mark.parametrize("var, value, says", [
    ("SGDLAB_CPUS_PER_RUN", "0", "CPUs per run must be > 0, got $SGDLAB_CPUS_PER_RUN=0"),
    ("SGDLAB_GPUS_PER_RUN", "-1", "GPUs per run must be >= 0, got $SGDLAB_GPUS_PER_RUN=-1")])
def test_a_variable_out_of_range_is_named_not_taken_for_the_flag(tmp_path, capsys, monkeypatch,
                                                                 var, value, says):
    """The refusal said "--cpus-per-run must be > 0" where no flag had been given."""
    code, err = _ray_run(tmp_path, capsys, monkeypatch, _FakeRay({"CPU": 4.0}), {var: value},
                         ["zhu-escape-2d"])
    assert code != 0 and f"error: {says}\n" in err, err


@pytest.mark.parametrize("nodes, kw, capacity", [
    ([{"CPU": 4.0}, {"CPU": 4.0}], {"cpus_per_run": 3.0}, 2),
    ([{"CPU": 4.0}, {"CPU": 4.0}], {"cpus_per_run": 2.5}, 2),      # 8 // 2.5 = 3 never run
    ([{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0}], {"gpus_per_run": 0.5}, 2)])
def test_runs_in_flight_are_what_the_nodes_hold_one_by_one(monkeypatch, nodes, kw, capacity):
    from sgdlab.experiments import ray_backend

    fake = _FakeRay.of_nodes(nodes)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    assert ray_backend.RayBackend(lambda *a: None, **kw).capacity == capacity


def test_a_ray_task_ships_its_files_is_never_retried_by_ray_and_its_sends_reach_the_driver(
        monkeypatch):
    from sgdlab.experiments import ray_backend
    from sgdlab.experiments.worker import RunTask

    fake = _FakeRay({"CPU": 4.0, "GPU": 1.0})
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    rows, checkpoints = [], []
    backend = ray_backend.RayBackend(lambda run_id, r: rows.append((run_id, r)),
                                     cpus_per_run=2.0, gpus_per_run=0.5,
                                     on_checkpoint=lambda run_id, c: checkpoints.append(
                                         (run_id, c)))
    task = RunTask({}, None, "r7", "cpu", "unused")
    backend.submit(task)
    options, (sent, _inbox, keeps_checkpoints) = fake.submitted[-1]
    # the driver retries a lost run itself, from its checkpoint (max_retries=0 for Ray)
    assert options == {"num_cpus": 2.0, "num_gpus": 0.5, "max_retries": 0}
    assert sent is task and task.ship and keeps_checkpoints
    fake.batches = [("rows", "r7", [1]), ("checkpoint", "r7", {"c": 1}), ("rows", "r7", [2])]
    backend.cancel_all()             # what was sent before a Ctrl-C is taken
    assert rows == [("r7", [1]), ("r7", [2])] and checkpoints == [("r7", {"c": 1})]
    assert fake.cancelled == [1] and backend.refs == {}


@pytest.mark.parametrize("workers, cpus_per_run, num_cpus, capacity", [
    (3, 0.5, 2, 3), (1, 0.5, 1, 1), (2, 1.5, 3, 2), (4, 0.25, 1, 4), (2, 2.0, 4, 2)])
def test_a_ray_instance_started_for_fractional_cpus_per_run_gets_whole_cpus(
        monkeypatch, workers, cpus_per_run, num_cpus, capacity):
    """Fractions of a CPU per run are allowed (``resources:``, --cpus-per-run 0.5), but Ray
    refuses to start with a fractional CPU count ("Resource quantities must all be whole
    numbers. Violated by resource 'CPU'"): 3 workers of 0.5 CPU asked it for 1.5 and the sweep
    failed with "cannot start or join Ray". The instance gets the whole CPUs that hold them."""
    from sgdlab.experiments import ray_backend

    class WholeCpus(_FakeRay):
        def init(self, **kw):
            if kw.get("num_cpus") is not None and kw["num_cpus"] != int(kw["num_cpus"]):
                raise ValueError("Resource quantities must all be whole numbers.")
            super().init(**kw)
            self.resources = {"CPU": float(kw["num_cpus"])}

    fake = WholeCpus({}, initialized=False)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    backend = ray_backend.RayBackend(lambda *a: None, workers=workers,
                                     cpus_per_run=cpus_per_run)
    assert fake.inits[-1]["num_cpus"] == num_cpus and backend.capacity == capacity
    backend.submit(SimpleNamespace(run_id="r"))
    assert fake.submitted[-1][0]["num_cpus"] == cpus_per_run      # each run asks its share


@pytest.mark.parametrize("resources, says", [
    ({"CPU": 1.0}, "1.5 CPUs per run (--cpus-per-run 1.5): the largest node of the Ray "
                   "cluster has 1 CPUs"),
    ({"GPU": 1.0}, "1.5 CPUs per run (--cpus-per-run 1.5): the largest node of the Ray "
                   "cluster has 0 CPUs")])
def test_a_joined_cluster_with_too_few_cpus_is_refused_and_left_running(monkeypatch,
                                                                        resources, says):
    """Joining a cluster (this process already connected, or --address) whose CPUs cannot
    hold one run is refused; the cluster this backend did not start is not shut down."""
    from sgdlab.errors import UserError
    from sgdlab.experiments import ray_backend

    fake = _FakeRay(resources, initialized=True)
    monkeypatch.setattr(ray_backend, "import_ray", lambda: fake)
    with pytest.raises(UserError, match=re.escape(says)):
        ray_backend.RayBackend(lambda *a: None, cpus_per_run=1.5)
    assert fake.initialized and not fake.inits
