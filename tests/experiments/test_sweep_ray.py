"""The Ray backend stores exactly what the local pool stores, and a sweep started on one
backend is finished by the other (a local Ray instance: ``ray.init(num_cpus=2)``)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from sgdlab.experiments.spec import load_experiment
from sgdlab.experiments.sweep import dependency_layers, load_runs, run_sweep
from sgdlab.store import RunStore


@pytest.fixture(scope="module")
def ray_local():
    try:
        import ray
    except ImportError:
        pytest.skip("Ray is not installed here (python -m pip install 'sgdlab[ray]')")
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
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
    import sys

    import sgdlab

    code = ("import os, signal, sys, time; sys.path.insert(0, sys.argv[1])\n"
            "import sgdlab.experiments.runner as runner\n"
            "from sgdlab.cli.main import main\n"
            "def build_report(*a, **k):\n"
            "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
            "runner.build_report = build_report\n"
            "sys.exit(main(sys.argv[2:]))")
    root = str(Path(sgdlab.__file__).resolve().parents[1])
    p = subprocess.run([sys.executable, "-c", code, root, "run", "chaudhari-pde-smoothing",
                        "--scale", "smoke", "--backend", "ray", "--workers", "1",
                        "--out", "o", "--store", "s.sqlite"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "SGDLAB_THREADS": "1"})
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
    # runs that depend on earlier runs' saved weights: the files travel through Ray
    runs = load_experiment("jastrzebski-interpolation", "smoke").expand()
    first, *later = dependency_layers(runs)
    assert later, "the experiment has dependent runs"
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
        run_sweep(runs, store_path=str(tmp_path / "s.sqlite"), address="head:6379")
    with pytest.raises(UserError, match="--backend must be one of local, ray"):
        run_sweep(runs, store_path=str(tmp_path / "s.sqlite"), backend="slurm")
    assert resolve({**raw, "resources": {"gpus_per_run": 0.25}}, "smoke").resources == {
        "gpus_per_run": 0.25}
    with pytest.raises(ConfigError, match="resources.cpus_per_run: expected a number > 0"):
        resolve({**raw, "resources": {"cpus_per_run": 0}}, "smoke")
    with pytest.raises(ConfigError, match="'gpus'"):
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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_reachable(f"127.0.0.1:{s.getsockname()[1]}", timeout=2)
    for fine in (None, "auto", "local"):
        check_reachable(fine)


def test_too_few_gpus_is_a_clear_error(ray_local):
    from sgdlab.errors import UserError
    from sgdlab.experiments.ray_backend import RayBackend

    with pytest.raises(UserError, match="--gpus-per-run 64: the Ray cluster has"):
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
