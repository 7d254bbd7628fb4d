"""`sgdlab run --dry-run`: the sweep a run would execute, read from the store and the data
folder, with nothing trained or written."""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from sgdlab.cli.main import main
from sgdlab.experiments.spec import CATALOGUE_DIR
from sgdlab.store import RunStore

pytestmark = pytest.mark.usefixtures("one_thread_runs", "close_figures")

GRID = "jastrzebski-ratio-grid"      # smoke: a 2 x 2 grid of 1-epoch runs on 256 digits


def smoke_file() -> dict:
    return yaml.safe_load((CATALOGUE_DIR / f"{GRID}.yaml").read_text())


def plan(capsys, *argv: str) -> tuple[int, dict, str]:
    """Exit status, the JSON plan and stderr of `sgdlab run ... --dry-run --json`."""
    code = main(["run", *argv, "--dry-run", "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def files_under(root: Path) -> dict[str, bytes]:
    """Each file's bytes; a run store's (``*.sqlite``) by its rows, not its pages: SQLite folds
    the write-ahead log into the file whenever a connection closes last, which changes the
    bytes, not the content. The log and shared-memory files themselves are left out."""
    return {str(p.relative_to(root)): (_store_rows(p) if p.suffix == ".sqlite"
                                        else p.read_bytes())
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def _store_rows(path: Path) -> bytes:
    con = sqlite3.connect(path)
    try:
        return "\n".join(con.iterdump()).encode()
    finally:
        con.close()


def test_a_smoke_plan_lists_the_grid_times_the_seeds(tmp_path, capsys):
    smoke = smoke_file()["scales"]["smoke"]
    code, got, _ = plan(capsys, GRID, "--scale", "smoke", "--store", str(tmp_path / "s.sqlite"))
    assert code == 0 and got["ok"] and got["scale"] == "smoke" and got["backend"] == "local"
    assert len(got["runs"]) == math.prod(map(len, smoke["grid"].values())) * len(smoke["seeds"])
    swept = {tuple(r["swept"][k] for k in smoke["grid"]) for r in got["runs"]}
    assert swept == set(itertools.product(*smoke["grid"].values()))
    assert {r["status"] for r in got["runs"]} == {"to run"}
    assert got["totals"] == {"runs": 4, "to_run": 4, "stored": 0,
                             "steps": sum(r["steps"] for r in got["runs"]), "steps_known": 6,
                             "runs_with_known_steps": 4}
    assert got["datasets"] == ["digits"] and got["files"] == []
    assert all(r["length"] == {"epochs": 1} for r in got["runs"])
    # the text plan: one line per run
    assert main(["run", GRID, "--scale", "smoke", "--store", str(tmp_path / "s.sqlite"),
                 "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count("would run") == 4 and "to run: 4 of 4 (0 already stored)" in text


def test_the_plan_marks_what_a_finished_run_stored(tmp_path, capsys):
    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    assert main(["run", GRID, "--scale", "smoke", "--store", str(store), "--out", str(out)]) == 0
    capsys.readouterr()
    rows = {r["config"]["run_key"]: r for r in RunStore(store).list_runs(experiment=GRID)}
    code, got, _ = plan(capsys, GRID, "--scale", "smoke", "--store", str(store))
    assert code == 0 and got["totals"]["to_run"] == 0 and got["totals"]["stored"] == 4
    for r in got["runs"]:
        assert r["status"] == "stored" and r["run_id"] == rows[r["key"]]["id"]
        # the planned length is the one the run took
        assert r["steps"] == rows[r["key"]]["summary"]["steps"]
    # an edited copy with a second seed: the first seed's runs are found, the others would run
    edited = smoke_file()
    edited["scales"]["smoke"]["seeds"] = [0, 1]
    cfg = tmp_path / "two-seeds.yaml"
    cfg.write_text(yaml.safe_dump(edited, sort_keys=False, allow_unicode=True))
    code, got, _ = plan(capsys, "--config", str(cfg), "--scale", "smoke", "--store", str(store))
    assert code == 0 and len(got["runs"]) == 8
    assert {r["seed"] for r in got["runs"] if r["status"] == "stored"} == {0}
    assert {r["seed"] for r in got["runs"] if r["status"] == "to run"} == {1}
    assert got["totals"]["steps"] == 6


def test_missing_paper_data_fails_the_plan_as_it_fails_the_run(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    args = [GRID, "--scale", "paper", "--data-dir", str(data), "--store",
            str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out")]
    code, got, err = plan(capsys, *args)
    assert code == 2 and not got["ok"] and got["totals"]["to_run"] == 90
    assert got["datasets"] == ["fashion_mnist"]
    [need] = got["files"]
    assert need["found"] is None and need["to_run"] == 90
    assert f"fashion_mnist: missing file {data / 'train-images-idx3-ubyte'}" in need["problem"]
    assert got["problems"] == [need["problem"]]
    assert f"sgdlab: error: {need['problem']}" in err
    assert not (tmp_path / "s.sqlite").exists() and not (tmp_path / "out").exists()
    # the real run stops with the same message, once, before it records a run (it had
    # recorded its first run failed and printed the message with that run's line too)
    assert main(["run", *args]) == 2
    out, err = capsys.readouterr()
    assert (out + err).count(need["problem"]) == 1 and f"sgdlab: error: {need['problem']}" in err
    assert not (tmp_path / "s.sqlite").exists() and not (tmp_path / "out").exists()
    # the four files present (found, not read): the plan passes
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (data / name).write_bytes(b"")
    code, got, err = plan(capsys, *args)
    assert code == 0 and got["ok"] and err == ""
    assert got["files"][0]["found"] == f"IDX files in {data}"


def test_an_edited_file_that_reads_files_without_a_folder_says_how_to_give_it(tmp_path,
                                                                            capsys):
    # a copy of an entry switched to mnist was told "pass data_dir= (config key
    # data.data_dir)", a run config's key: an experiment file passes ${data_dir}
    raw = smoke_file()
    raw["scales"]["smoke"]["base"]["dataset"] = {"name": "mnist"}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    args = ["--config", str(path), "--scale", "smoke", "--store", str(tmp_path / "s.sqlite"),
            "--out", str(tmp_path / "out")]
    code, got, err = plan(capsys, *args)
    says = ("dataset 'mnist' reads files and the experiment gives it no folder: write "
            "`data_dir: ${data_dir}` in its dataset mapping and pass --data-dir DIR")
    assert code == 2 and got["problems"] == [says] and f"sgdlab: error: {says}" in err
    assert main(["run", *args]) == 2
    assert f"sgdlab: error: {says}" in capsys.readouterr().err
    assert not (tmp_path / "s.sqlite").exists() and not (tmp_path / "out").exists()


def write_mnist(folder: Path, n_train: int, n_test: int) -> None:
    """The four IDX files of an MNIST with random pixels and balanced labels."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{split}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, n) + labels.tobytes())


def test_data_gone_after_its_runs_finished_fails_nothing(tmp_path, capsys):
    data, store = tmp_path / "data", tmp_path / "s.sqlite"
    data.mkdir()
    write_mnist(data, 300, 150)
    edited = smoke_file()
    edited["scales"]["smoke"]["base"]["dataset"] = {
        "name": "mnist", "data_dir": "${data_dir}", "train_size": 256, "test_size": 128}
    cfg = tmp_path / "mnist.yaml"
    cfg.write_text(yaml.safe_dump(edited, sort_keys=False, allow_unicode=True))
    args = ["--config", str(cfg), "--scale", "smoke", "--data-dir", str(data),
            "--store", str(store)]
    code, got, _ = plan(capsys, *args)
    assert code == 0 and got["files"][0]["found"] == f"IDX files in {data}"
    assert got["totals"]["steps"] == 6           # train_size fixes the epoch's steps
    assert main(["run", *args, "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    for f in data.iterdir():
        f.unlink()
    # every run is stored: the real run reads no data, so neither fails
    code, got, err = plan(capsys, *args)
    assert code == 0 and got["ok"] and err == "" and got["totals"]["to_run"] == 0
    [need] = got["files"]
    assert need["found"] is None and need["runs"] == 4 and need["to_run"] == 0
    assert "mnist: missing file" in need["problem"]
    assert main(["run", *args, "--out", str(tmp_path / "out")]) == 0


def test_a_dry_run_writes_nothing(tmp_path, capsys):
    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    before = files_under(tmp_path)
    assert main(["run", GRID, "--scale", "smoke", "--store", str(store), "--out", str(out),
                 "--dry-run"]) == 0
    assert files_under(tmp_path) == before == {} and not out.exists()
    # an existing store: read, not written (SQLite's -wal/-shm of a reader are not the store)
    assert main(["run", "zhu-escape-2d", "--scale", "smoke", "--store", str(store),
                 "--out", str(tmp_path / "zhu")]) == 0
    # the run's heartbeat connection closes at its next beat (up to 5 s later), folding the
    # WAL into the file then: fold it now, so that only a write of the dry runs can differ
    import sqlite3

    with contextlib.closing(sqlite3.connect(store)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = files_under(tmp_path)
    runs = RunStore(store).list_runs()
    for argv in ([GRID], ["zhu-escape-2d"]):
        assert main(["run", *argv, "--scale", "smoke", "--store", str(store), "--out", str(out),
                     "--dry-run"]) == 0
    after = files_under(tmp_path)
    assert after == before and not out.exists() and RunStore(store).list_runs() == runs
    assert "to run: 0 of 7 (7 already stored)" in capsys.readouterr().out


def test_what_stops_a_run_stops_its_plan(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, got, err = plan(capsys, GRID, "--scale", "smoke", "--store", str(tmp_path / "s"),
                          "--out", str(blocker / "report"))
    assert code == 2 and f"{blocker} is a file, not a folder" in err
    # a store that could not be created there: the plan says so, and the run in the same words
    code, got, err = plan(capsys, GRID, "--scale", "smoke", "--store", str(blocker / "s.sqlite"),
                          "--out", str(tmp_path / "out"))
    assert code == 2 and f"cannot create it: {blocker} is a file, not a folder" in err
    assert main(["run", "zhu-escape-2d", "--scale", "smoke", "--store", str(blocker / "s.sqlite"),
                 "--out", str(tmp_path / "zhu")]) == 2
    assert f"{blocker} is a file, not a folder" in capsys.readouterr().err
    # errors before the sweep are the run's own: no --data-dir at paper scale, bad options
    assert main(["run", GRID, "--scale", "paper", "--dry-run"]) == 2
    assert "pass --data-dir DIR" in capsys.readouterr().err
    assert main(["run", GRID, "--scale", "smoke", "--workers", "0", "--dry-run"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    assert main(["run", GRID, "--scale", "smoke", "--json"]) == 2
    assert "give both" in capsys.readouterr().err


def _run_in_a(tmp_path, monkeypatch) -> None:
    """Runs chaudhari-pde-smoothing at smoke scale from tmp_path/a, its report and store given
    relative (out, st/runs.sqlite); tmp_path/b is another folder to read them from."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main(["run", "chaudhari-pde-smoothing", "--scale", "smoke", "--out", "out",
                 "--store", "st/runs.sqlite"]) == 0


def test_a_report_rebuilds_from_another_folder_with_a_relative_store(tmp_path, capsys,
                                                                     monkeypatch):
    _run_in_a(tmp_path, monkeypatch)
    (run,) = RunStore("st/runs.sqlite").list_runs()
    (data,) = RunStore("st/runs.sqlite").artifacts(run["id"], "data")
    assert Path(data).is_absolute() and Path(data).is_file()
    tables = json.loads(Path("out/results.json").read_text())["tables"]
    monkeypatch.chdir(tmp_path / "b")       # the run's data is found from here too
    assert main(["report", "../a/out", "--store", "../a/st/runs.sqlite"]) == 0
    assert json.loads((tmp_path / "a/out/results.json").read_text())["tables"] == tables
    # a path recorded relative to the first folder (older stores): found beside the store
    from sgdlab.experiments.sweep import artifact_file

    rel = Path("st") / Path(data).relative_to(tmp_path / "a" / "st")
    assert artifact_file(str(rel), "../a/st/runs.sqlite") == Path(data)


def test_results_json_names_its_store_from_any_folder(tmp_path, capsys, monkeypatch):
    _run_in_a(tmp_path, monkeypatch)
    assert json.loads(Path("out/results.json").read_text())["store"] == str(
        tmp_path / "a" / "st" / "runs.sqlite")
    monkeypatch.chdir(tmp_path / "b")       # the recorded store, not ./st/runs.sqlite here
    assert main(["report", "../a/out"]) == 0
    assert not (tmp_path / "b" / "st").exists()


@pytest.mark.parametrize("bad, says", [(["--workers", "0"], "--workers must be >= 1"),
                                       (["--address", "auto"], "option of --backend ray"),
                                       # was run and ignored: local runs take cores // K
                                       (["--cpus-per-run", "2"], "--cpus-per-run is an "
                                                                 "option of --backend ray"),
                                       ([], "file is not a database")])
def test_a_run_refuses_bad_options_before_it_writes(tmp_path, capsys, bad, says):
    """As its plan: the options (and a store that is no store) are refused before the output
    folder is made or the header printed, so a mistyped option leaves nothing behind."""
    out, store = tmp_path / "out", tmp_path / "s"
    if not bad:
        store.write_text("not a database")
    assert main(["run", "zhu-escape-2d", "--scale", "smoke", "--store", str(store),
                 "--out", str(out), *bad]) == 2
    got = capsys.readouterr()
    assert got.out == "" and says in got.err
    assert not out.exists()


def test_a_run_refuses_a_folder_of_a_training_run_or_another_experiment(tmp_path, capsys):
    """--out naming a `sgdlab train` run folder, or another experiment's report, is refused
    by the run and its plan alike, before anything is written there; the same experiment's
    folder is rewritten."""
    store = ["--store", str(tmp_path / "s.sqlite")]
    trained, zhu = tmp_path / "trained", tmp_path / "zhu"
    assert main(["train", "digits-mlp", "--set", "train.epochs=1", "--no-progress",
                 "--out", str(trained), *store]) == 0
    assert main(["run", "zhu-escape-2d", "--scale", "smoke", "--out", str(zhu), *store]) == 0
    capsys.readouterr()
    before = files_under(tmp_path)
    for name, out, says in (("zhu-escape-2d", trained, "holds a training run (sgdlab train)"),
                            (GRID, zhu, "holds the report of zhu-escape-2d")):
        for dry in ([], ["--dry-run"]):
            argv = ["run", name, "--scale", "smoke", "--out", str(out), *store, *dry]
            assert main(argv) == 2
            assert says in capsys.readouterr().err
    # a rebuilt report is refused the same folders
    assert main(["report", "zhu-escape-2d", "--scale", "smoke", "--out", str(trained),
                 *store]) == 2
    assert "holds a training run (sgdlab train)" in capsys.readouterr().err
    assert main(["report", GRID, "--scale", "smoke", "--out", str(zhu), *store]) == 2
    assert "holds the report of zhu-escape-2d" in capsys.readouterr().err
    after = files_under(tmp_path)
    assert after == {k: v for k, v in before.items() if not k.endswith(("-wal", "-shm"))}
    assert main(["run", "zhu-escape-2d", "--scale", "smoke", "--out", str(zhu), *store]) == 0


def test_resume_of_a_sweep_run_says_how_it_continues(tmp_path, capsys):
    # an experiment's runs keep no checkpoints: their sweep, run again, redoes what it lacks
    store = RunStore(tmp_path / "runs.sqlite")
    run_id = store.create_run({"run_key": "k1", "experiment": GRID, "scale": "smoke"},
                              experiment=GRID)
    store.set_status(run_id, "interrupted")
    assert main(["resume", run_id, "--store", str(store.path)]) == 2
    said = capsys.readouterr().err
    assert f"a run of the sweep of {GRID}" in said
    assert f"sgdlab run {GRID} --scale smoke --store {store.path}" in said


def test_data_dir_given_with_a_tilde_is_the_home_folder(tmp_path, capsys, monkeypatch):
    # the shell does not expand --data-dir=~/data: it was refused as "not a directory"
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    main(["run", GRID, "--scale", "paper", "--data-dir=~/data", "--store",
          str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out"), "--dry-run", "--json"])
    out, err = capsys.readouterr()
    assert "not a directory" not in err
    problem = json.loads(out)["problems"][0]
    assert f"missing file {tmp_path / 'data' / 'train-images-idx3-ubyte'}" in problem


def test_a_stopped_sweep_run_continues_with_the_options_its_sweep_ran_with(
        tmp_path, capsys, monkeypatch):
    """`runs list` and `runs show` gave `sgdlab run NAME --scale S --store PATH` for a stopped
    run of a sweep, without the --out, --workers, ... it ran with; they give the sweep's own
    command line, the one its interrupt prints, with relative paths made absolute."""
    monkeypatch.chdir(tmp_path)
    argv = ["run", GRID, "--scale", "smoke", "--workers", "1", "--out", "o", "--store",
            "s.sqlite"]
    assert main(argv) == 0
    store = RunStore(tmp_path / "s.sqlite")
    stopped = store.list_runs()[0]["id"]
    store.set_status(stopped, "interrupted")
    store.close()
    capsys.readouterr()
    same = (f"sgdlab run {GRID} --scale smoke --workers 1 --out {tmp_path / 'o'} "
            f"--store {tmp_path / 's.sqlite'}")
    monkeypatch.chdir(tmp_path.parent)
    assert main(["runs", "list", "--store", str(tmp_path / "s.sqlite")]) == 0
    assert f"1 run(s) stopped before they ended; continue with:\n  {same}  (" in (
        capsys.readouterr().out)
    assert main(["runs", "show", stopped, "--store", str(tmp_path / "s.sqlite")]) == 0
    assert f"continue it with: {same}  (" in capsys.readouterr().out

    _interrupted_rerun_says(argv, same, tmp_path, capsys, monkeypatch)


def _interrupted_rerun_says(argv, same, folder, capsys, monkeypatch):
    """The sweep ``argv`` run again in ``folder`` and interrupted ends saying ``same``."""
    import sgdlab.experiments.runner as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.chdir(folder)
    monkeypatch.setattr(runner, "run_experiment", interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err.rstrip().endswith(f"continue with: {same}")


@pytest.mark.parametrize("failed", [0, 1])
def test_ctrl_c_while_the_conclusions_are_printed_says_the_report_is_written(
        tmp_path, capsys, monkeypatch, failed):
    """The sweep and its report written, Ctrl-C amid the conclusions' lines said a bare
    "interrupted": now where the results and report are, and that nothing is left to run
    (or, with failed runs, the command that completes them)."""
    from types import SimpleNamespace

    import sgdlab.experiments.runner as runner
    import sgdlab.report.verdicts as verdicts

    out = tmp_path / "o"
    res = SimpleNamespace(out_dir=out, report_path=out / "report.html", ok=not failed,
                          results={"scale": "cpu", "conclusions": [{"text": "a claim"}]},
                          sweep=SimpleNamespace(failed=[("a-run", "boom")] * failed))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_experiment", lambda *a, **k: res)
    monkeypatch.setattr(verdicts, "verdict", interrupted)
    argv = ["run", GRID, "--out", str(out), "--store", str(tmp_path / "s.sqlite")]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert (f"sgdlab: interrupted while the conclusions were printed: the sweep and its report "
            f"are complete and written (results: {out / 'results.json'}, report: "
            f"{out / 'report.html'}); ") in err, err
    same = f"sgdlab run {GRID} --scale cpu --out {out} --store {tmp_path / 's.sqlite'}"
    assert err.rstrip().endswith(f"1 runs failed: complete them with: {same}" if failed
                                 else "nothing is left to run"), err


def test_the_continue_command_names_a_store_given_by_the_environment(tmp_path, capsys,
                                                                     monkeypatch):
    """A sweep into $SGDLAB_STORE printed a continue command without --store: from a shell
    without the variable it ran the whole sweep again into ./sgdlab-runs. It names the store,
    as `sgdlab train`'s resume command does."""
    import sgdlab.experiments.runner as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_experiment", interrupted)
    monkeypatch.setenv("SGDLAB_STORE", str(tmp_path / "env.sqlite"))
    out = tmp_path / "o"
    assert main(["run", GRID, "--scale", "smoke", "--out", str(out)]) == 130
    assert capsys.readouterr().err.rstrip().endswith(
        f"continue with: sgdlab run {GRID} --scale smoke --out {out} --store "
        f"{tmp_path / 'env.sqlite'}")


def test_a_sweep_without_out_continues_into_the_folder_it_wrote(tmp_path, capsys, monkeypatch):
    """A sweep given no --out writes to sgdlab-out/NAME-SCALE under the folder it ran in; the
    command recorded to continue it had no --out, so run from elsewhere it wrote the report
    there. The command names the folder, absolute, as it does a given --out."""
    monkeypatch.chdir(tmp_path)
    argv = ["run", GRID, "--scale", "smoke", "--store", "s.sqlite"]
    assert main(argv) == 0
    out = tmp_path / "sgdlab-out" / f"{GRID}-smoke"
    assert (out / "results.json").is_file()
    store = RunStore(tmp_path / "s.sqlite")
    stopped = store.list_runs()[0]["id"]
    store.set_status(stopped, "interrupted")
    store.close()
    capsys.readouterr()
    same = f"sgdlab run {GRID} --scale smoke --out {out} --store {tmp_path / 's.sqlite'}"
    monkeypatch.chdir(tmp_path.parent)
    assert main(["runs", "list", "--store", str(tmp_path / "s.sqlite")]) == 0
    assert f"continue with:\n  {same}  (" in capsys.readouterr().out

    _interrupted_rerun_says(argv, same, tmp_path, capsys, monkeypatch)


def test_a_sweep_entry_stopped_twice_gives_one_command(tmp_path, capsys):
    """An entry stopped by two invocations of its sweep (here with different --workers) gave
    both command lines, as if each were needed; either reruns it, and once one has, the other
    run needs nothing. The listing gives the latest invocation's command, once per entry."""
    store = RunStore(tmp_path / "runs.sqlite")
    first, second = (f"sgdlab run {GRID} --scale smoke{w} --out {tmp_path / 'o'}"
                     for w in ("", " --workers 2"))
    for key, command in (("k1", first), ("k1", second), ("k2", first)):
        rid = store.create_run({"run_key": key, "experiment": GRID, "scale": "smoke",
                                "command": command}, experiment=GRID)
        store.set_status(rid, "interrupted")
        if key == "k1" and command == second:
            assert main(["runs", "list", "--store", str(store.path)]) == 0
            footer = capsys.readouterr().out.split("\n\n")[1]
            assert footer.count("sgdlab run") == 1 and f"{second} --store" in footer
            assert footer.startswith("2 run(s) stopped before they ended")
    assert main(["runs", "list", "--store", str(store.path)]) == 0
    footer = capsys.readouterr().out.split("\n\n")[1]     # another entry, stopped by the first
    assert footer.count("sgdlab run") == 2 and f"{first} --store" in footer


def test_on_ray_the_data_files_are_not_looked_up_on_the_driver(tmp_path, monkeypatch):
    """The runs of --backend ray read the data of the Ray nodes, which the driver's machine
    need not hold: missing there, the sweep still starts (its runs say what they lack)."""
    pytest.importorskip("ray")
    import sgdlab.experiments.runner as runner
    from sgdlab.errors import UserError

    class Started(Exception):
        pass

    def run_sweep(*a, **k):
        raise Started

    monkeypatch.setattr(runner, "run_sweep", run_sweep)
    (tmp_path / "data").mkdir()
    args = dict(scale="paper", data_dir=str(tmp_path / "data"), out_dir=tmp_path / "out",
                store_path=str(tmp_path / "s.sqlite"), progress=None)
    with pytest.raises(Started):
        runner.run_experiment(GRID, backend="ray", **args)
    with pytest.raises(UserError, match="fashion_mnist: missing file"):
        runner.run_experiment(GRID, backend="local", **args)


@pytest.mark.parametrize("device,message", [
    ("gpu", "--device must be cpu or cuda, got 'gpu' (did you mean cuda?)"),
    ("cuda", "--device cuda requested but CUDA is not available on this machine"),
])
def test_a_device_not_here_is_refused_before_the_plan(tmp_path, capsys, monkeypatch, device,
                                                      message):
    # the option and its checks are the ones `sgdlab landscape --device` shares
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["run", "zhu-escape-2d", "--scale", "smoke", "--device", device,
                 "--store", str(tmp_path / "s.sqlite"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err == f"sgdlab: error: {message}\n"


@pytest.mark.parametrize("given", ["spacing=", "=inclusive", "spacing", " = "])
def test_a_reading_without_its_key_or_choice_is_refused_as_an_argument(capsys, given):
    with pytest.raises(SystemExit) as e:
        main(["run", "xing-walk", "--reading", given, "--dry-run"])
    assert e.value.code == 2
    assert "argument --reading: expected KEY=CHOICE" in capsys.readouterr().err


@pytest.mark.parametrize("argv, example", [
    # the example is the entry's own: its first reading, a choice other than the default
    (["xing-walk", "--reading", "gd"], "a reading of xing-walk and one of its choices, e.g. "
     "valley-floor=segment; `sgdlab list xing-walk` shows its readings), got 'gd'"),
    # NAME after the option; a reading of the entry given without its choice: its choices
    (["--reading", "spacing", "xing-walk"], "e.g. spacing=inclusive; spacing's choices: "
     "interior, inclusive (default interior)), got 'spacing'"),
    (["zhu-escape-2d", "--reading", "landscape="], "a reading of zhu-escape-2d and one of its "
     "choices, e.g. landscape=rescaled;"),
    (["xing-schedules", "--reading", "spacing"], "(xing-schedules has no readings to choose "
     "from: it names no ambiguity of its paper), got 'spacing'"),
    (["--reading", "spacing"], "(a reading and one of its choices: `sgdlab list NAME` shows an "
     "entry's readings), got 'spacing'"),
])
def test_a_reading_without_its_choice_is_shown_an_example_of_the_entry_s_own(capsys, argv,
                                                                             example):
    with pytest.raises(SystemExit) as e:
        main(["run", *argv, "--dry-run"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --reading: expected KEY=CHOICE (" in err
    assert example in err and "max-variance" not in err


def test_name_and_config_together_are_refused(tmp_path, capsys):
    assert main(["run", "xing-walk", "--config", str(tmp_path / "x.yaml"), "--scale",
                 "smoke", "--store", str(tmp_path / "s.sqlite")]) == 2
    assert (f"give NAME (xing-walk) or --config FILE ({tmp_path / 'x.yaml'}), not both"
            in capsys.readouterr().err)
    assert not any(tmp_path.iterdir())


def test_the_results_of_a_sweep_with_failed_runs_exit_1(tmp_path, capsys):
    from types import SimpleNamespace

    from sgdlab.cli.run import print_results

    def res(failed):
        return SimpleNamespace(results={"scale": "cpu", "conclusions": []},
                               sweep=SimpleNamespace(failed=failed), out_dir=tmp_path,
                               report_path=tmp_path / "report.html", ok=not failed)

    assert print_results(res([("lr=0.1|seed=0", "boom")])) == 1
    out = capsys.readouterr().out
    assert out.startswith("1 runs failed (first: lr=0.1|seed=0: boom); re-run the same command")
    assert print_results(res([])) == 0
    assert capsys.readouterr().out == (f"results: {tmp_path / 'results.json'}\n"
                                       f"report:  {tmp_path / 'report.html'}\n")


def test_the_conclusions_of_an_experiment_citing_no_paper_hold_or_fail(tmp_path, capsys):
    from types import SimpleNamespace

    from sgdlab.cli.run import print_results

    cs = [{"text": "a", "agrees_with_paper": True, "claim": "c1"},
          {"text": "b", "agrees_with_paper": False, "claim": "c2"}]
    paper = {"author": "Me", "year": 2026, "figure": ""}
    res = SimpleNamespace(results={"scale": "cpu", "conclusions": cs,
                                   "experiment": {"paper": paper}},
                          sweep=SimpleNamespace(failed=[]), out_dir=tmp_path,
                          report_path=tmp_path / "report.html", ok=True)
    print_results(res)
    assert capsys.readouterr().out.startswith("conclusions:\n  - [holds] a\n  - [FAILS] b\n")
    paper["figure"] = "Fig. 1"
    print_results(res)
    assert "  - [agrees] a\n  - [DISAGREES] b\n" in capsys.readouterr().out


def test_the_command_that_continues_a_sweep_repeats_its_options_with_absolute_paths(
        tmp_path, monkeypatch):
    import argparse

    from sgdlab.cli.run import same_command

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(
        paper=None, name="xing-walk", config=None, scale="smoke", data_dir="data", workers=2,
        backend=None, address=None, cpus_per_run=None, gpus_per_run=None, device="cpu",
        out="out", store="s.sqlite", tensorboard=None,
        reading=[("spacing", "inclusive"), ("valley-floor", "segment")])
    assert same_command(args) == (
        f"sgdlab run xing-walk --scale smoke --data-dir {tmp_path / 'data'} --workers 2 "
        f"--out {tmp_path / 'out'} --store {tmp_path / 's.sqlite'} "
        "--reading spacing=inclusive --reading valley-floor=segment")
    # recorded with each run: the store it is read from is its own
    assert "--store" not in same_command(args, store=False)


def test_a_second_entry_name_says_that_run_takes_one(capsys):
    # "unrecognized arguments: zhu-escape-2d" said nothing of --paper nor of one entry a run
    with pytest.raises(SystemExit) as stop:
        main(["run", "xing-walk", "zhu-escape-2d", "--scale", "smoke"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "unrecognized arguments: zhu-escape-2d (sgdlab run takes one entry: run zhu-escape-2d "
        "with a command of its own, or every entry of one paper with --paper PAPER (chaudhari, "
        "jastrzebski, musso, xing, zhu, or all))")
    with pytest.raises(SystemExit):      # a word that is no entry: argparse's message alone
        main(["run", "xing-walk", "3"])
    assert capsys.readouterr().err.splitlines()[-1].endswith("unrecognized arguments: 3")


def test_the_command_that_continues_a_sweep_names_its_plugins(tmp_path, monkeypatch):
    # without --plugin the printed command stopped at "Unknown model" of the plugin's model
    import argparse

    from sgdlab.cli.run import same_command

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(
        paper=None, name=None, config="exp.yaml", scale="cpu", data_dir=None, workers=2,
        backend=None, address=None, cpus_per_run=None, gpus_per_run=None, device="cpu",
        out="out", store="s.sqlite", tensorboard=None, reading=[],
        plugins=["./my_models.py", "my_package.models"])
    assert same_command(args, store=False) == (
        f"sgdlab run --config {tmp_path / 'exp.yaml'} --scale cpu --workers 2 "
        f"--out {tmp_path / 'out'} --plugin {tmp_path / 'my_models.py'} "
        "--plugin my_package.models")
