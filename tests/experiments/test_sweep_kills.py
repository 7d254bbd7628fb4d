"""Sweeps under kills: a dead worker, a killed or terminated driver, two sweeps on one store.

Each case runs a small η/B grid (the flagship experiment's analysis on a tiny MLP) and compares
the report tables and every run's metric counts with one uninterrupted sweep.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import sweep_kill_helpers  # noqa: F401  (registers the procedures; workers import it too)
from sweep_kill_helpers import DIR_ENV, KILL_ENV
from sgdlab.cli.main import main
from sgdlab.experiments.runner import analyze
from sgdlab.experiments.spec import catalogue_files, resolve
from sgdlab.experiments.sweep import finished_runs, load_runs, run_sweep
from sgdlab.store import RunStore

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def tiny_grid() -> dict:
    """jastrzebski-ratio-grid at smoke scale, shrunk: 4 runs of a tiny MLP, kill points."""
    raw = yaml.safe_load(catalogue_files()["jastrzebski-ratio-grid"].read_text())
    raw["procedure"] = "_test_killing_train"
    raw["scales"]["smoke"]["base"].update(
        dataset={"n_train": 128, "n_test": 64}, epochs=2, model={"width": 8, "depth": 1},
        final=[{"kind": "hessian_top", "samples": 64, "tol": 0.01, "num_iter": 10},
               {"kind": "hessian_frobenius", "samples": 64, "probes": 2}])
    raw["scales"]["smoke"]["grid"] = {"optimizer.lr": [0.05, 0.2], "batch_size": [32, 128]}
    return raw


def report(spec, store) -> tuple[list, dict]:
    """(report tables, {run key: {metric: rows}}) from the store."""
    import matplotlib.pyplot as plt

    analysis, stored, missing = analyze(spec, store_path=str(store))
    plt.close("all")
    assert not missing
    return ([t.to_json() for t in analysis.tables],
            {r.key: {k: len(v) for k, v in r.metrics.items()} for r in stored})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    before = os.environ.get("SGDLAB_THREADS")
    os.environ["SGDLAB_THREADS"] = "1"
    try:
        spec = resolve(tiny_grid(), "smoke")
        store = tmp_path_factory.mktemp("reference") / "s.sqlite"
        run_sweep(spec.expand(), store_path=str(store), progress=None)
        return spec, report(spec, store)
    finally:
        if before is None:
            os.environ.pop("SGDLAB_THREADS")
        else:
            os.environ["SGDLAB_THREADS"] = before


@pytest.fixture
def kills(tmp_path, monkeypatch):
    folder = tmp_path / "kills"
    folder.mkdir()
    monkeypatch.setenv("SGDLAB_THREADS", "1")
    monkeypatch.setenv(DIR_ENV, str(folder))
    return folder


def gone(pids: list[int], within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_dead_workers_are_replaced_and_their_runs_redone(reference, kills, tmp_path,
                                                         monkeypatch):
    spec, (tables, counts) = reference
    labels = [r.label for r in spec.expand()]
    # killed during training, between training and the final measurements, and after them
    monkeypatch.setenv(KILL_ENV, f"train@{labels[0]};final@{labels[1]};end@{labels[2]}")
    store = tmp_path / "s.sqlite"
    said: list[str] = []
    rep = run_sweep(spec.expand(), store_path=str(store), workers=2, progress=said.append)
    assert len(list(kills.glob("*@*"))) == 3                       # every kill fired
    assert not rep.failed and sorted(rep.executed) == sorted(r.key for r in spec.expand())
    assert sum("killed by SIGKILL" in s and "trying it again" in s for s in said) == 3
    runs = RunStore(store).list_runs()
    attempts = [r for r in runs if r["status"] == "failed"]
    # a killed attempt is failed (never finished, never left running) and counts for nothing
    assert len(attempts) == 3 and all("SIGKILL" in r["message"] for r in attempts)
    assert all(r["summary"] == {} for r in attempts)
    assert sorted(r["status"] for r in runs) == ["failed"] * 3 + ["finished"] * 4
    assert report(spec, store) == (tables, counts)


def _sweep_args(config: Path, store: Path) -> list[str]:
    return ["run", "--config", str(config), "--scale", "smoke", "--workers", "2", "--store",
            str(store), "--out", str(config.parent / "o")]


def _sweep_cmd(config: Path, store: Path) -> list[str]:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import sweep_kill_helpers; "
            "from sgdlab.cli.main import main; sys.exit(main(sys.argv[2:]))")
    return [sys.executable, "-c", code, str(HERE), *_sweep_args(config, store)]


def test_a_killed_or_terminated_driver_takes_its_workers_and_a_rerun_completes(
        reference, kills, tmp_path, monkeypatch, capsys):
    spec, (tables, counts) = reference
    labels = [r.label for r in spec.expand()]
    config, store = tmp_path / "grid.yaml", tmp_path / "s.sqlite"
    config.write_text(yaml.safe_dump(tiny_grid(), sort_keys=False))   # same labels, same keys

    # 1. a worker SIGKILLs the driver: no worker outlives it, its runs show as interrupted
    env = {**os.environ, KILL_ENV: f"parent-final@{labels[1]}"}
    p = subprocess.run(_sweep_cmd(config, store), env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    workers = [int(f.name[4:]) for f in kills.glob("pid-*")]
    assert workers and gone(workers), "orphaned workers"
    stopped = [r for r in RunStore(store).list_runs() if r["recorded_status"] == "running"]
    assert stopped and all(r["status"] == "interrupted" for r in stopped)

    # 2. the rerun takes over; its driver gets SIGTERM: one line naming how to continue.
    # This process is that driver (its workers signal their parent): main turns SIGTERM into
    # an interrupt and restores the handler after, as the command's own process would.
    for f in kills.glob("pid-*"):
        f.unlink()
    # labels[1] is the one run certain to be unfinished (its worker killed the driver)
    monkeypatch.setenv(KILL_ENV, f"term-final@{labels[1]}")
    code = main(_sweep_args(config, store))
    err = capsys.readouterr().err
    assert code == 130, err[-2000:]
    assert "sgdlab: the sweep was terminated" in err and "Traceback" not in err
    assert f"continue with: sgdlab run --config {config}" in err
    assert gone([int(f.name[4:]) for f in kills.glob("pid-*")]), "orphaned workers"
    runs = RunStore(store).list_runs()
    assert not [r for r in runs if r["recorded_status"] == "running"]   # all ended cleanly
    assert any(r["message"] == "the sweep was interrupted (terminated (SIGTERM))"
               for r in runs)

    # 3. the same command once more completes the sweep: runs finished before are kept (how
    # many depends on the workers' timing), the others redone; the report is the uninterrupted one
    done = set(finished_runs(RunStore(store), spec.name))
    rep = run_sweep(spec.expand(), store_path=str(store), progress=None)
    assert not rep.failed and set(rep.skipped) == done
    assert sorted([*rep.skipped, *rep.executed]) == sorted(r.key for r in spec.expand())
    assert report(spec, store) == (tables, counts)
    stored, missing = load_runs(spec.expand(), store_path=str(store))
    assert not missing and all(r.status == "finished" for r in stored)


def test_two_sweeps_on_one_store_never_run_a_key_twice(kills, tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    raw = {"name": "t-lease", "version": 1, "description": "two sweeps",
           "analysis": "compare_groups", "procedure": "_test_slow_square",
           "paper": {"author": "N", "year": 2020, "figure": "0"},
           "base": {"x": 1, "sleep": 1.5, "calls_dir": str(calls)}, "runs": [{"label": "sq"}],
           "grid": {"x": [1, 2, 3]}, "seeds": [0]}
    runs = resolve(raw, "smoke").expand()
    store = tmp_path / "s.sqlite"
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); import sweep_kill_helpers; "
            "from sgdlab.experiments.spec import resolve; "
            "from sgdlab.experiments.sweep import run_sweep; "
            "rep = run_sweep(resolve(json.loads(sys.argv[2]), 'smoke').expand(), "
            "store_path=sys.argv[3], progress=print); "
            "print('EXECUTED', len(rep.executed), 'SKIPPED', len(rep.skipped))")
    other = subprocess.Popen([sys.executable, "-c", code, str(HERE), json.dumps(raw),
                              str(store)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(calls.iterdir()):          # the other sweep holds its first key
            assert other.poll() is None and time.monotonic() < deadline, other.stderr.read()
            time.sleep(0.05)
        said: list[str] = []
        rep = run_sweep(runs, store_path=str(store), progress=said.append)
        out, err = other.communicate(timeout=120)
    finally:
        if other.poll() is None:
            other.kill()
    assert other.returncode == 0, err
    assert any("is being run by process" in s for s in said)
    # every key ran exactly once, in one sweep or the other; both sweeps ended complete
    assert sorted(f.name.split("-")[0] for f in calls.iterdir()) == [r.label for r in runs]
    theirs = int(out.split("EXECUTED")[1].split()[0])
    assert theirs + len(rep.executed) == 3 and not rep.failed
    stored, missing = load_runs(runs, store_path=str(store))
    assert not missing and [r.summary["y"] for r in stored] == [1, 4, 9]
    assert all(r.metrics["value"] == [(0, 0.0), (1, float(r.params["x"])),
                                      (2, 2.0 * r.params["x"])] for r in stored)
    assert len(RunStore(store).list_runs()) == 3          # no key was started twice


@pytest.mark.parametrize("where", ["commit", "submit"])
def test_an_interrupt_while_a_run_is_recorded_or_started_leaves_no_run_running(
        reference, kills, tmp_path, monkeypatch, where):
    """A SIGTERM (KeyboardInterrupt) that lands while the driver records a run's end, or
    between claiming a run and handing it to a worker: that run is recorded as interrupted,
    not left 'running' (stop() used to see only the runs still in flight)."""
    from sgdlab.experiments import sweep as sweep_mod

    spec, _ = reference
    store = tmp_path / "s.sqlite"
    name = "_commit" if where == "commit" else "_start"
    real = getattr(sweep_mod._Driver, name)
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:              # the second run's end / the second start
            if where == "commit":
                raise KeyboardInterrupt("terminated (SIGTERM)")
            self.backend.submit = _raising_submit
        return real(self, *args, **kwargs)

    def _raising_submit(task):
        raise KeyboardInterrupt("terminated (SIGTERM)")

    monkeypatch.setattr(sweep_mod._Driver, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec.expand(), store_path=str(store), workers=1, progress=None)
    runs = RunStore(store).list_runs()
    assert runs and not [r for r in runs if r["recorded_status"] == "running"]
    assert any(r["recorded_status"] == "interrupted"
               and r["message"].startswith("the sweep was interrupted") for r in runs)
    assert sum(r["recorded_status"] == "finished" for r in runs) == (1 if where == "commit"
                                                                       else len(runs) - 1)
