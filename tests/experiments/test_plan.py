"""The plan of a run (`sgdlab run --dry-run`) fails where the real run would: a data file
missing on this machine stops a local run, not a Ray run (its tasks read the data on their
own nodes). The real run's side: tests/cli/test_cli_run.py::
test_on_ray_the_data_files_are_not_looked_up_on_the_driver."""
from __future__ import annotations

import json

import pytest
import yaml

import sgdlab.experiments.ray_backend as ray_backend
from sgdlab.cli.main import main
from sgdlab.experiments.plan import ON_NODES, plan_experiment
from sgdlab.experiments.procedures.common import CLAIM_KINDS
from sgdlab.experiments.spec import CATALOGUE_DIR, SCALES, catalogue_entries

pytestmark = pytest.mark.usefixtures("one_thread_runs")

GRID = "jastrzebski-ratio-grid"      # smoke: a 2 x 2 grid of 1-epoch runs


class NoRay:
    """Ray as a dry run may see it: imported, never started."""

    def init(self, *args, **kwargs):
        raise AssertionError("the dry run started Ray")

    def is_initialized(self):
        return False


@pytest.fixture
def no_ray(monkeypatch):
    """Ray importable (installed or not) and refusing to start."""
    monkeypatch.setattr(ray_backend, "import_ray", NoRay)


def mnist_file(tmp_path, dataset: dict) -> str:
    """The smoke grid reading ``dataset`` (an MNIST), written to a file of its own."""
    raw = yaml.safe_load((CATALOGUE_DIR / f"{GRID}.yaml").read_text())
    raw["scales"]["smoke"]["base"]["dataset"] = dataset
    path = tmp_path / "mnist.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return str(path)


@pytest.fixture
def empty_data(tmp_path):
    """(the experiment file, its --data-dir: an empty folder, the options of its runs)."""
    (tmp_path / "data").mkdir()
    cfg = mnist_file(tmp_path, {"name": "mnist", "data_dir": "${data_dir}",
                                "train_size": 256, "test_size": 128})
    where = {"scale": "smoke", "data_dir": str(tmp_path / "data"),
             "store_path": str(tmp_path / "s.sqlite"), "out_dir": tmp_path / "out"}
    return cfg, where


def dry_run(capsys, cfg: str, where: dict, backend: str) -> tuple[int, dict, str]:
    """Exit status, JSON plan and stderr of `sgdlab run --config CFG ... --dry-run --json`."""
    code = main(["run", "--config", cfg, "--scale", where["scale"], "--data-dir",
                 where["data_dir"], "--store", where["store_path"], "--out",
                 str(where["out_dir"]), "--backend", backend, "--dry-run", "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_a_data_file_missing_here_stops_a_local_run(tmp_path, capsys, empty_data):
    cfg, where = empty_data
    plan = plan_experiment(cfg, backend="local", **where)
    [need] = plan.files
    assert need.found is None and need.to_run == 4
    assert need.problem.startswith(f"mnist: missing file {tmp_path / 'data'}")
    assert not plan.ok and plan.problems == [need.problem] and plan.notes == []
    code, got, err = dry_run(capsys, cfg, where, "local")
    assert code == 2 and got["problems"] == [need.problem] and got["notes"] == []
    assert f"sgdlab: error: {need.problem}" in err
    assert not any(p.name in ("s.sqlite", "out") for p in tmp_path.iterdir())


def test_a_data_file_missing_here_is_a_note_for_a_ray_run(tmp_path, capsys, empty_data,
                                                          no_ray):
    cfg, where = empty_data
    plan = plan_experiment(cfg, backend="ray", **where)
    [need] = plan.files
    assert need.found is None and need.problem.startswith("mnist: missing file")
    note = f"mnist in {tmp_path / 'data'}: not found on this machine: {ON_NODES}"
    assert plan.ok and plan.problems == [] and plan.notes == [note]
    assert (f"  mnist in {tmp_path / 'data'}: not found on this machine; read by 4 runs, 4 to "
            f"execute ({ON_NODES})") in plan.lines()
    code, got, err = dry_run(capsys, cfg, where, "ray")
    assert code == 0 and got["ok"] and got["notes"] == [note] and err == ""
    assert not any(p.name in ("s.sqlite", "out") for p in tmp_path.iterdir())


def test_a_dataset_given_no_folder_stops_a_ray_run_too(tmp_path, no_ray):
    # no node has a folder to read it from: each task would fail on it
    cfg = mnist_file(tmp_path, {"name": "mnist"})
    plan = plan_experiment(cfg, scale="smoke", backend="ray", out_dir=tmp_path / "out",
                           store_path=str(tmp_path / "s.sqlite"))
    assert not plan.ok and plan.notes == []
    assert plan.problems == [plan.files[0].problem]
    assert "the experiment gives it no folder" in plan.problems[0]


def test_a_ray_address_where_no_ray_answers_stops_the_plan_and_the_run(tmp_path, capsys,
                                                                      no_ray, monkeypatch):
    """The dry run said "would run" (exit 0) for an address nobody listens on, and the run
    made its store and --out folder before it found out. One from $RAY_ADDRESS is named so:
    the command line gave none."""
    import socket

    with socket.socket() as s:           # a port that was free a moment ago: nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["run", GRID, "--scale", "smoke", "--backend", "ray", "--address",
            f"127.0.0.1:{port}", "--store", str(tmp_path / "s.sqlite"), "--out",
            str(tmp_path / "out")]
    for dry in (["--dry-run"], []):
        assert main(args + dry) == 2
        assert f"sgdlab: error: cannot reach Ray at 127.0.0.1:{port}: " in capsys.readouterr().err
        assert not any(p.name in ("s.sqlite", "out") for p in tmp_path.iterdir())
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    for dry in (["--dry-run"], []):
        assert main(args[:6] + args[8:] + dry) == 2
        assert (f"sgdlab: error: cannot reach Ray at 127.0.0.1:{port} ($RAY_ADDRESS): "
                in capsys.readouterr().err)
    monkeypatch.setenv("RAY_ADDRESS", "head-node")
    assert main(args[:6] + args[8:] + ["--dry-run"]) == 2
    assert ("$RAY_ADDRESS 'head-node': expected HOST:PORT, ray://HOST:PORT or auto"
            in capsys.readouterr().err)
    assert not any(p.name in ("s.sqlite", "out") for p in tmp_path.iterdir())


def test_the_plan_looks_up_a_text_datasets_file_with_its_path_option(tmp_path):
    # text_chars with data_dir was "found (not looked up)"; its path option picks the file
    from types import SimpleNamespace

    from sgdlab.experiments.plan import data_needs

    (tmp_path / "a.txt").write_text("one\n")
    (tmp_path / "b.txt").write_text("two\n")
    ds = {"name": "text_chars", "data_dir": str(tmp_path)}
    _, (need,) = data_needs([SimpleNamespace(key="k", params={"dataset": ds})], set())
    assert need.found is None and "several .txt files (a.txt, b.txt)" in need.problem
    ds = {**ds, "path": "b.txt"}
    _, (need,) = data_needs([SimpleNamespace(key="k", params={"dataset": ds})], set())
    assert need.found == f"text file {tmp_path / 'b.txt'}" and need.problem is None


def test_a_dataset_without_a_folder_is_named_without_one():
    # it read "text_chars in None"
    from types import SimpleNamespace

    from sgdlab.experiments.plan import data_needs

    ds = {"name": "text_chars"}
    _, (need,) = data_needs([SimpleNamespace(key="k", params={"dataset": ds})], set())
    assert need.what == "text_chars" and need.found == "the bundled corpus"


def test_the_local_backend_refuses_the_resource_flags_but_not_the_variables_or_resources(
        tmp_path, monkeypatch):
    # it has no use for either: $SGDLAB_GPUS_PER_RUN and resources: were refused as if they
    # were --gpus-per-run, while the CPUs were refused as given on the command line only
    from sgdlab.errors import UserError

    raw = yaml.safe_load((CATALOGUE_DIR / "zhu-escape-2d.yaml").read_text())
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({**raw, "resources": {"cpus_per_run": 2,
                                                          "gpus_per_run": 0.5}}))
    monkeypatch.setenv("SGDLAB_CPUS_PER_RUN", "3")
    monkeypatch.setenv("SGDLAB_GPUS_PER_RUN", "1")
    monkeypatch.delenv("SGDLAB_BACKEND", raising=False)
    plan = plan_experiment(path, scale="smoke", store_path=str(tmp_path / "s.sqlite"))
    assert plan.settings["backend"] == "local" and plan.settings["gpus_per_run"] is None
    # and the sweep runs (run_sweep refused the GPUs the variable gave)
    assert main(["run", "--config", str(path), "--scale", "smoke", "--out",
                 str(tmp_path / "out"), "--store", str(tmp_path / "s.sqlite")]) == 0
    for flag, given in (("--gpus-per-run", {"gpus_per_run": 1}),
                        ("--cpus-per-run", {"cpus_per_run": 2})):
        with pytest.raises(UserError, match=f"^{flag} is an option of --backend ray"):
            plan_experiment(path, scale="smoke", store_path=str(tmp_path / "s.sqlite"),
                            **given)


def test_the_plan_says_how_long_the_catalogue_measured_the_entry(tmp_path, monkeypatch):
    """A reader could not tell a dry run of twenty minutes from one of seconds."""
    store = str(tmp_path / "s.sqlite")
    plan = plan_experiment("zhu-large-network", scale="cpu", store_path=store)
    assert plan.spec.wall_minutes() == 9 and plan.to_json()["wall_minutes"] == 9
    assert ("wall time: ~9 min for all 18 runs as measured for docs/RESULTS.md (2 cores, "
            "--workers 2)") in plan.lines()
    # not measured: another scale, another reading, an edited copy
    for other in (plan_experiment("zhu-large-network", scale="smoke", store_path=store),
                  plan_experiment("zhu-large-network", scale="cpu", store_path=store,
                                  readings={"lr": "suppl-d"})):
        assert other.spec.wall_minutes() is None
        assert not any(line.startswith("wall time:") for line in other.lines())
    # the catalogue file itself, given by a relative path, is the one measured
    monkeypatch.chdir(CATALOGUE_DIR)
    assert plan_experiment("zhu-large-network.yaml", scale="cpu",
                           store_path=store).spec.wall_minutes() == 9
    copy = tmp_path / "zhu-large-network.yaml"
    copy.write_text((CATALOGUE_DIR / "zhu-large-network.yaml").read_text())
    assert plan_experiment(str(copy), scale="cpu", store_path=store).spec.wall_minutes() is None


def test_the_plan_shows_the_scales_departures_as_the_report_will(tmp_path):
    """A scale whose file lists no departures (the grid's smoke) shows those derived from the
    config, said to be derived; a scale that lists them (cpu) shows those. The plan showed
    neither: they were first seen in the report, after the runs."""
    from sgdlab.report.verdicts import DERIVED

    store = str(tmp_path / "s.sqlite")
    smoke = plan_experiment(GRID, scale="smoke", store_path=store)
    derived = smoke.spec.derived_deviations()
    assert derived and smoke.to_json()["derived_deviations"] == derived
    assert smoke.to_json()["deviations"] == []
    lines = smoke.lines()
    head = lines.index(f"departures from the paper at scale smoke, {DERIVED}:")
    assert lines[head + 1:] == [f"  - {d}" for d in derived]
    cpu = plan_experiment(GRID, scale="cpu", store_path=store)
    listed = cpu.spec.deviations
    assert listed and cpu.to_json()["deviations"] == listed
    assert cpu.to_json()["derived_deviations"] == []
    lines = cpu.lines()
    head = lines.index("departures from the paper at scale cpu, as the entry lists them:")
    assert lines[head + 1:] == [f"  - {' '.join(d.split())}" for d in listed]
    # a batch of entries counts them, with the command that lists them
    name = smoke.spec.name
    assert smoke.lines(departures=False)[-1] == (
        f"departures from the paper at scale smoke: {len(derived)} derived from the config "
        f"(`sgdlab run {name} --scale smoke --dry-run` lists them)")
    assert cpu.lines(departures=False)[-1] == (
        f"departures from the paper at scale cpu: {len(listed)} listed (`sgdlab run {name} "
        "--scale cpu --dry-run` lists them)")
    # a reading's own departures where the scale lists none: both lists counted, as shown
    walk = plan_experiment("xing-walk", scale="smoke", store_path=store,
                           readings={"gd-gradient": "batches-100"})
    n = len(walk.spec.derived_deviations())
    assert len(walk.spec.deviations) == 1 and n
    assert walk.lines(departures=False)[-1] == (
        f"departures from the paper at scale smoke: 1 listed, {n} derived from the config "
        "(`sgdlab run xing-walk --scale smoke --reading gd-gradient=batches-100 --dry-run` "
        "lists them)")


def test_the_plan_counts_the_steps_of_the_runs_to_execute_whose_length_is_known():
    """Four runs of 10 (stored), 5, unknown and 7 steps: 3 to run, 12 steps in the 2 of them
    whose parameters tell; the total is unknown until all of them tell."""
    from sgdlab.experiments.plan import Plan, PlannedRun
    from sgdlab.experiments.spec import resolve

    spec = resolve(yaml.safe_load((CATALOGUE_DIR / f"{GRID}.yaml").read_text()), "smoke")
    runs = spec.expand()
    planned = [PlannedRun(r, {}, {}, steps, stored) for r, steps, stored in
               zip(runs, (10, 5, None, 7), ("id-a", None, None, None))]
    settings = {"device": "cpu", "backend": "local", "address": None, "workers": None,
                "cpus_per_run": None, "gpus_per_run": None, "threads_per_run": 1,
                "store": "s", "store_exists": True, "out": "o", "data_dir": None}
    plan = Plan(spec, planned, settings, datasets=[])
    assert [p.run.key for p in plan.to_run] == [r.key for r in runs[1:]]
    assert plan.steps == (12, 2)
    got = plan.to_json()
    assert got["totals"] == {"runs": 4, "to_run": 3, "stored": 1, "steps": None,
                             "steps_known": 12, "runs_with_known_steps": 2}
    assert [r["status"] for r in got["runs"]] == ["stored", "to run", "to run", "to run"]
    assert [r["run_id"] for r in got["runs"]] == ["id-a", None, None, None]
    lines = plan.lines()
    assert "to run: 3 of 4 (1 already stored)" in lines
    assert ("training steps: 12 in the 2 of 3 runs to execute whose parameters tell (the "
            "others' depend on their data's size)") in lines
    planned[2].steps = 1
    assert plan.to_json()["totals"]["steps"] == 13 and "training steps: 13" in plan.lines()
    for p in planned[1:]:
        p.steps = None
    assert "training steps: not told by the runs' parameters" in plan.lines()
    for p in planned:             # all stored: nothing to count
        p.stored = "id"
    assert not any(line.startswith("training steps") for line in plan.lines())


def test_a_paper_scale_plan_counts_the_steps_of_the_published_training_set(tmp_path, capsys):
    """Fashion-MNIST's training files hold 60,000 images: each run of the paper-scale grid
    takes 200 epochs of ⌈60,000 / S⌉ steps, counted without the files (an empty folder); the
    plan had said "training steps: not told by the runs' parameters". A ``classes`` filter
    leaves the size to the files: not told."""
    (tmp_path / "data").mkdir()
    where = {"scale": "paper", "data_dir": str(tmp_path / "data"),
             "store_path": str(tmp_path / "s.sqlite"), "out_dir": tmp_path / "out"}
    plan = plan_experiment(GRID, **where)
    assert len(plan.runs) == 90 and not plan.ok          # (the files are missing)
    for p in plan.runs:
        assert p.steps == 200 * -(-60000 // p.run.params["batch_size"])
    total = sum(p.steps for p in plan.runs)
    assert total == 3 * 5 * 200 * sum(60000 // s for s in (25, 50, 100, 200, 400, 800))
    assert f"training steps: {total}" in plan.lines()
    code = main(["run", GRID, "--scale", "paper", "--data-dir", where["data_dir"], "--store",
                 where["store_path"], "--out", str(where["out_dir"]), "--dry-run", "--json"])
    got = json.loads(capsys.readouterr().out)
    assert code == 2 and got["totals"]["steps"] == total
    assert [r["steps"] for r in got["runs"]] == [p.steps for p in plan.runs]
    raw = yaml.safe_load((CATALOGUE_DIR / f"{GRID}.yaml").read_text())
    raw["scales"]["paper"]["base"]["dataset"]["classes"] = [0, 1]
    path = tmp_path / "two-classes.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    plan = plan_experiment(str(path), **where)
    assert all(p.steps is None for p in plan.runs)
    assert "training steps: not told by the runs' parameters" in plan.lines()
    assert plan.to_json()["totals"]["steps"] is None


def test_a_store_that_could_not_be_created_is_named_with_the_folder_in_the_way(tmp_path,
                                                                              monkeypatch):
    """The nearest existing folder above a new store decides: absent folders are made; a
    file, or a folder this user may not write (faked: root may write anywhere), is named."""
    import os

    import sgdlab.experiments.plan as plan

    assert plan._store_problem(tmp_path / "a" / "b" / "s.sqlite") is None
    (tmp_path / "f").write_text("")
    assert plan._store_problem(tmp_path / "f" / "b" / "s.sqlite") == (
        f"run store {str(tmp_path / 'f' / 'b' / 's.sqlite')!r}: cannot create it: "
        f"{tmp_path / 'f'} is a file, not a folder")
    (tmp_path / "d").mkdir()
    asked = []
    monkeypatch.setattr(plan.os, "access", lambda p, mode: asked.append((p, mode)) or False)
    assert plan._store_problem(tmp_path / "d" / "s.sqlite").endswith(
        f"cannot create it: {tmp_path / 'd'} is not writable")
    assert asked == [(tmp_path / "d", os.W_OK | os.X_OK)]


def test_the_plan_gives_each_run_the_threads_the_sweep_would(tmp_path, monkeypatch):
    """8 cores: cores // --workers on the local backend, as the sweep gives them."""
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    for var in ("SGDLAB_THREADS", "OMP_NUM_THREADS", "SGDLAB_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    store = str(tmp_path / "s.sqlite")
    got = [plan_experiment("zhu-escape-2d", scale="smoke", store_path=store, workers=w)
           .settings["threads_per_run"] for w in (None, 2, 3)]
    assert got == [8, 4, 2]


def test_the_plan_counts_the_steps_of_ones_own_files_and_says_where(tmp_path):
    """MNIST files of 37 training images: each run's steps are counted over 37, and the
    dataset's line says where that was counted; before the download, the published 60,000,
    said to be that."""
    from sgdlab.testing import IDX_NAMES, make_idx_dir

    make_idx_dir(tmp_path / "data" / "mnist", n_train=37, n_test=5)
    cfg = mnist_file(tmp_path, {"name": "mnist", "data_dir": "${data_dir}"})
    where = {"scale": "smoke", "data_dir": str(tmp_path / "data"),
             "store_path": str(tmp_path / "s.sqlite"), "out_dir": tmp_path / "out"}
    plan = plan_experiment(cfg, **where)
    assert plan.ok and plan.runs
    for p in plan.runs:
        assert p.steps == p.run.params["epochs"] * -(-37 // p.run.params["batch_size"])
    labels = tmp_path / "data" / "mnist" / IDX_NAMES["train_labels"]
    assert f"    training set: 37 examples (counted in {labels})" in plan.lines()
    assert plan.to_json()["files"][0]["train_size"] == {
        "n": 37, "counted": True, "how": f"counted in {labels}"}
    (tmp_path / "empty").mkdir()
    plan = plan_experiment(cfg, **{**where, "data_dir": str(tmp_path / "empty")})
    assert all(p.steps == p.run.params["epochs"] * -(-60000 // p.run.params["batch_size"])
               for p in plan.runs)
    assert ("    training set: 60,000 examples (the published size: the files are not found)"
            in plan.lines())


def test_a_train_size_above_the_examples_in_ones_files_is_a_problem_of_the_plan(
        tmp_path, monkeypatch):
    """A subset of 256 from MNIST files of 37 training images: the dry run says so (the
    loader would refuse it only when each run starts); 30 of them plan. The files are
    counted once, for the dataset's line and this check (which had counted them again)."""
    from sgdlab.data import files
    from sgdlab.testing import make_idx_dir

    counted = []
    count = files.train_size_in_files
    monkeypatch.setattr(files, "train_size_in_files", lambda name, data_dir: (
        counted.append((name, data_dir)) or count(name, data_dir)))
    make_idx_dir(tmp_path / "data" / "mnist", n_train=37, n_test=5)
    where = {"scale": "smoke", "data_dir": str(tmp_path / "data"),
             "store_path": str(tmp_path / "s.sqlite"), "out_dir": tmp_path / "out"}
    cfg = mnist_file(tmp_path, {"name": "mnist", "data_dir": "${data_dir}",
                                "train_size": 256})
    plan = plan_experiment(cfg, **where)
    assert counted == [("mnist", where["data_dir"])]
    assert not plan.ok
    (problem,) = [p for p in plan.problems if "train_size" in p]
    assert problem.startswith("mnist: train_size 256 of 4 runs [lr=0.05,batch_size=128; ")
    assert "] is more than the 37 examples (counted in " in problem
    assert "give a train_size of at most 37" in problem
    cfg = mnist_file(tmp_path, {"name": "mnist", "data_dir": "${data_dir}", "train_size": 30})
    assert plan_experiment(cfg, **where).ok


def own_experiment(tmp_path, options: dict, final: list | None = None) -> str:
    """An experiment of one's own: two optimizers on the cubic set, one seed, compared by
    ``options`` (``final``: measurements on the final model)."""
    base = {"dataset": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
            "optimizer": {"name": "sgd", "lr": 0.01}, "batch_size": 20, "epochs": 1}
    raw = {"name": "mine", "version": 1, "description": "", "analysis": "compare_groups",
           "procedure": "train",
           "paper": {"author": "Me", "year": 2026, "figure": ""},
           "base": {**base, **({"final": final} if final else {})},
           "runs": [{"label": "sgd"},
                    {"label": "adam", "params": {"optimizer": {"name": "adam", "lr": 0.01}}}],
           "seeds": [0], "options": options}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def plan_of(tmp_path, cfg: str, scale: str = "cpu"):
    return plan_experiment(cfg, scale=scale, store_path=str(tmp_path / "s.sqlite"),
                           out_dir=tmp_path / "out")


def run_of(tmp_path, cfg: str, scale: str = "cpu"):
    """The run :func:`plan_of` plans."""
    from sgdlab.experiments.runner import run_experiment

    return run_experiment(cfg, scale=scale, store_path=str(tmp_path / "s.sqlite"),
                          out_dir=str(tmp_path / "out"), progress=None)


def dry_run_refuses(tmp_path, capsys, cfg: str, problem: str, scale: str = "cpu") -> None:
    """`sgdlab run --config CFG --dry-run` of :func:`plan_of`'s store and folder exits 2 with
    ``problem`` as its error."""
    assert main(["run", "--config", cfg, "--scale", scale, "--store", str(tmp_path / "s.sqlite"),
                 "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert f"sgdlab: error: {problem}" in capsys.readouterr().err


@pytest.mark.parametrize("claim, problem", [
    ({"less": ["sgd", "adma"], "metric": "test_acc"},
     "no group 'adma' (did you mean adam?); the runs form sgd, adam"),
    ({"less": ["sgd", "adam"], "metric": "tst_acc"},
     "no run records a metric 'tst_acc' (did you mean test_acc?); they record "),
    ({"less": ["sgd", "adam"], "metric": "test_acc", "requires": [
        {"metric": "train_ac", "above": 0.5}]},
     "no run records a metric 'train_ac' (did you mean train_acc?)"),
    # an instrument's series, which a claim reads only through a derived value
    ({"less": ["sgd", "adam"], "metric": "hess/top_1"},
     "'hess/top_1' names a series of `measure`, not a final value: compare_groups' "
     "options.derived makes one, {name: NAME, metric: hess/top_1, reduce: last}"),
])
def test_a_misspelt_claim_fails_the_dry_run_and_the_run_before_training(tmp_path, capsys,
                                                                        claim, problem):
    from sgdlab.errors import ConfigError

    cfg = own_experiment(tmp_path, {"claims": [{"less": ["sgd", "adam"], "metric": "train_loss"},
                                               claim]})
    plan = plan_of(tmp_path, cfg)
    [found] = plan.problems
    assert found.startswith(f"{cfg}: options.claims[1] (less: ['sgd', ") and problem in found
    dry_run_refuses(tmp_path, capsys, cfg, found)
    with pytest.raises(ConfigError, match="options.claims.1."):
        run_of(tmp_path, cfg)
    assert not any(p.name in ("s.sqlite", "out") for p in tmp_path.iterdir())


def test_the_plan_names_only_what_the_runs_will_not_have(tmp_path):
    # references, derived values, the loop's counters and the final measurements' metrics are
    # the value table's
    options = {"references": {"chance": {"test_acc": 0.1}},
               "derived": [{"name": "best", "metric": "test_acc", "reduce": "max"}],
               "claims": [{"greater": ["adam", "chance"], "metric": "test_acc"},
                          {"less": ["sgd", "adam"], "metric": "best"},
                          {"above": [["sgd"], ["adam"]], "metric": "effective_epochs"},
                          {"greater": ["adam", "chanse"], "metric": "test_acc"}]}
    [problem] = plan_of(tmp_path, own_experiment(tmp_path, options)).problems
    assert "options.claims[3]" in problem and "no group 'chanse' (did you mean chance?)" in problem
    measured = {"claims": [{"less": ["sgd", "adam"], "metric": "grad_norm"},
                           {"less": ["sgd", "adams"], "metric": "grad_norm"}]}
    plan = plan_of(tmp_path, own_experiment(tmp_path, measured, [{"kind": "grad_norm"}]))
    [problem] = plan.problems
    assert "options.claims[1]" in problem and "no group 'adams'" in problem


def test_a_misspelt_metric_of_a_final_measurement_fails_the_dry_run(tmp_path, capsys):
    final = [{"kind": "hessian_spectrum"}, {"kind": "expected_sharpness", "num_samples": 2}]
    options = {"claims": [{"less": ["sgd", "adam"], "metric": "hessian_lambda_max"},
                          {"less": ["sgd", "adam"], "metric": "expected_sharpness_se"},
                          {"less": ["sgd", "adam"], "metric": "hessian_lamda_max"},
                          {"less": ["sgd", "adam"], "metric": "fisher_max"}]}
    cfg = own_experiment(tmp_path, options, final)
    misspelt, unmeasured = plan_of(tmp_path, cfg).problems
    assert misspelt.startswith(f"{cfg}: options.claims[2] ")
    assert ("no run records a metric 'hessian_lamda_max' (did you mean hessian_lambda_max?); "
            "they record ") in misspelt
    assert unmeasured.startswith(f"{cfg}: options.claims[3] ")
    assert "no run records a metric 'fisher_max'" in unmeasured
    dry_run_refuses(tmp_path, capsys, cfg, misspelt)


def test_a_train_run_records_what_its_plan_checks_claims_against(tmp_path):
    # every final measurement's declared metrics, and nothing the plan would not expect
    from sgdlab.experiments.procedures import get_procedure
    from sgdlab.experiments.procedures.measures import final_metrics
    from sgdlab.testing import run_experiment_config

    final = [{"kind": "grad_norm"}, {"kind": "hessian_trace", "probes": 2, "samples": 8},
             {"kind": "fisher_diagonal", "samples": 8}]
    raw = yaml.safe_load(open(own_experiment(tmp_path, {}, final)).read())
    raw["runs"] = raw["runs"][:1]
    raw["base"]["max_steps"] = 2
    res = run_experiment_config(raw, tmp_path)
    [run] = res.results["runs"]
    assert run["status"] == "finished"
    declared = set.union(*map(final_metrics, final))
    assert declared <= set(run["summary"]) <= get_procedure("train").summary_keys(
        {"final": final})


# (entry, its claim i, what the edit gives it, the sentence the dry run says): each analysis
# with claims of the entry's own, a misspelt group and a misspelt metric
ENTRY_CLAIMS_MISSPELT = [
    ("chaudhari-diffusion-spectrum", 0, {"greater": ["small-lenet", "small-fcc"]},
     "no group 'small-fcc' (did you mean small-fc?); the runs form small-lenet, small-fc"),
    ("chaudhari-diffusion-spectrum", 1, {"metric": "eig_varaince"},
     "no run records a metric 'eig_varaince' (did you mean eig_variance?)"),
    ("chaudhari-independent-copies", 2, {"less": ["compare", "slihgt"]},
     "no group 'slihgt' (did you mean slight?); the runs form compare, chance, slight, far"),
    ("chaudhari-independent-copies", 2, {"metric": "ensemble_rel_gian"},
     "no run records a metric 'ensemble_rel_gian' (did you mean ensemble_rel_gain?)"),
    ("chaudhari-trivialized", 1, {"less": ["trivialised", "adam"]},
     "no group 'trivialised' (did you mean trivialized?); the runs form adam, trivialized"),
    ("chaudhari-trivialized", 1, {"metric": "epochs_to_trian"},
     "no run records a metric 'epochs_to_trian' (did you mean epochs_to_train?)"),
    ("chaudhari-spin-glass", 3, {"less": ["critical", "glasy"]},
     "no group 'glasy' (did you mean glassy?); the runs form glassy, critical, trivial, one"),
    ("chaudhari-spin-glass", 3, {"metric": "distinct_minim"},
     "no run records a metric 'distinct_minim' (did you mean distinct_minima?)"),
    ("jastrzebski-interpolation", 0, {"greater": ["diferent-ratio", "different-ratio"]},
     "no group 'diferent-ratio' (did you mean different-ratio?); the runs form equal-ratio, "
     "different-ratio"),
    ("jastrzebski-interpolation", 1, {"metric": "log_widht_A"},
     "no run records a metric 'log_widht_A' (did you mean log_width_A?)"),
    ("zhu-escape-2d", 0, {"greater": ["sgd", "gld_hesian"], "metric": "success_rate"},
     "no group 'gld_hesian' (did you mean gld_hessian?); the runs form gd, gld_const, "),
    ("zhu-escape-2d", 0, {"greater": ["sgd", "gd"], "metric": "success_rte"},
     "no run records a metric 'success_rte' (did you mean success_rate?)"),
]


def entry_file(tmp_path, entry: str, edit) -> str:
    """Catalogue ``entry`` with ``edit(raw)`` applied to its file's contents, in a file of its
    own."""
    raw = yaml.safe_load((CATALOGUE_DIR / f"{entry}.yaml").read_text())
    edit(raw)
    path = tmp_path / f"{entry}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return str(path)


@pytest.mark.parametrize("entry, i, change, problem", ENTRY_CLAIMS_MISSPELT)
def test_a_misspelt_claim_of_an_analysis_of_its_own_fails_the_dry_run(tmp_path, capsys, entry,
                                                                      i, change, problem):
    def edit(raw):
        claims = raw["options"].setdefault("claims", [])
        if i == len(claims):        # the entry makes none: one of one's own
            claims.append({})
        kept = claims[i] if not CLAIM_KINDS & change.keys() else {
            k: v for k, v in claims[i].items() if k not in CLAIM_KINDS}
        claims[i] = kept | change

    cfg = entry_file(tmp_path, entry, edit)
    [found] = plan_of(tmp_path, cfg, "smoke").problems
    # the index among the claims of the default readings
    assert found.startswith(f"{cfg}: options.claims[") and problem in found
    dry_run_refuses(tmp_path, capsys, cfg, found, "smoke")


@pytest.mark.parametrize("entry, option, edit, problem", [
    ("zhu-escape-2d", "options.ordering.slower",
     lambda o: o["ordering"].update(slower=["gd", "gld_cnst"]),
     "no group 'gld_cnst' (did you mean gld_const?); the runs form gd, gld_const, "),
    ("zhu-escape-2d", "options.speed.tiers[1]",
     lambda o: o["speed"]["tiers"].__setitem__(1, ["sgd", "gld_leadng"]),
     "no group 'gld_leadng' (did you mean gld_leading?); the runs form gd, gld_const, "),
    ("zhu-escape-lr-sweep", "options.faster", lambda o: o.update(faster=["sdg"]),
     "no group 'sdg' (did you mean sgd?); the runs form "),
])
def test_a_misspelt_method_the_escape_analyses_order_fails_the_dry_run(tmp_path, entry, option,
                                                                        edit, problem):
    cfg = entry_file(tmp_path, entry, lambda raw: edit(raw["options"]))
    [found] = plan_of(tmp_path, cfg, "smoke").problems
    assert found.startswith(f"{cfg}: {option}: ") and problem in found


def _without_switch_step(raw):
    for piece in [raw, *raw["scales"].values()]:
        (piece.get("options") or {}).pop("switch_step", None)


@pytest.mark.parametrize("entry, edit, problem", [
    ("xing-stuck-continuation", lambda raw: raw["options"].update(stuck_run="gd-isoo"),
     "options.stuck_run: no group 'gd-isoo' (did you mean gd-iso?); the runs form gd-iso, "
     "lower-lr, gd, sgd"),
    ("xing-stuck-continuation", _without_switch_step,
     "options.switch_step: run group 'lower-lr' neither starts from another (init_from) nor "
     "is 'gd-iso': give the step where it switches"),
    ("zhu-escape-2d", lambda raw: raw["options"]["speed"].update(claim="faster"),
     "options.speed: the speed ordering has no key 'claim' (did you mean claims?); its keys: "
     "claims, tiers, z"),
    ("zhu-escape-2d", lambda raw: raw["options"]["speed"].update(z=0),
     "options.speed.z must be a finite number > 0, got 0"),
    ("zhu-escape-2d", lambda raw: raw["options"]["speed"].update(tiers=[["sgd", "gd"]]),
     "options.speed.tiers: needs two or more non-empty tiers of methods, got [['sgd', 'gd']]"),
    ("zhu-escape-2d", lambda raw: raw["options"]["speed"]["claims"].append("a third"),
     "options.speed.claims: 3 claims for 2 pairs of adjacent tiers"),
    ("zhu-escape-2d", lambda raw: raw["options"]["ordering"].update(fastr=["sgd"]),
     "options.ordering: the ordering has no key 'fastr' (did you mean faster?); its keys: "
     "claim, faster, slower, z"),
    ("zhu-escape-2d", lambda raw: raw["options"]["ordering"].pop("slower"),
     "options.ordering: needs methods in both 'faster' and 'slower'"),
])
def test_an_option_the_report_would_refuse_fails_the_dry_run(tmp_path, capsys, entry, edit,
                                                             problem):
    """What an analysis read of its options only when the report was written, after all the
    training, the plan knows: the run groups a group option names, the keys of a nested
    option."""
    cfg = entry_file(tmp_path, entry, edit)
    [found] = plan_of(tmp_path, cfg, "smoke").problems
    assert found.startswith(f"{cfg}: {problem}")
    dry_run_refuses(tmp_path, capsys, cfg, found, "smoke")


@pytest.mark.parametrize("entry", catalogue_entries("all"))
def test_every_entry_plans_at_every_scale_under_every_reading(tmp_path, entry):
    """Each scale, under the defaults and under each other choice of each reading (alone, as
    ``--reading KEY=CHOICE`` takes it): no error before the sweep and no problem of the plan
    but a file of the paper's data missing from the empty ``--data-dir``. A claim naming a
    group the runs no longer form, a metric they no longer record or a refused option was
    found only by running that entry at that scale and reading; each failing combination is
    named as the command that shows it."""
    from sgdlab.errors import UserError
    from sgdlab.experiments.plan import missing_files
    from sgdlab.experiments.readings import entry_readings, reading_names

    (tmp_path / "data").mkdir()
    failed = []
    for scale in SCALES:
        for shown, readings in reading_names(entry_readings(entry)).items():
            command = (f"sgdlab run {entry} --scale {scale}"
                       f"{' --reading ' + shown if readings else ''} --dry-run")
            try:
                plan = plan_experiment(entry, scale=scale, data_dir=str(tmp_path / "data"),
                                       readings=readings, store_path=str(tmp_path / "s.sqlite"),
                                       out_dir=tmp_path / "out")
            except UserError as e:          # a ConfigError is one
                failed.append(f"{command}: {e}")
                continue
            missing = missing_files(plan.files)
            failed += [f"{command}: {p}" for p in plan.problems if p not in missing]
    assert not failed, "\n".join(failed)
    assert not any(p.name in ("s.sqlite", "out") for p in tmp_path.iterdir())


def test_a_trend_the_ratio_grid_would_not_test_fails_the_dry_run(tmp_path):
    path = entry_file(tmp_path, GRID, lambda raw: raw["options"].update(
        expect={"hessian_top": "negative", "test_ac": "positive"}))
    [problem] = plan_of(tmp_path, path, "smoke").problems
    assert problem.startswith(f"{path}: options.expect names 'test_ac', which options.metrics "
                              "does not list (did you mean test_acc?) (hessian_top, ")
    assert problem.endswith("): its trend would not be tested")


def test_the_plan_names_a_data_file_its_examples_and_its_checksum(tmp_path, capsys):
    """``dataset: {file: PATH}`` in place of the grid's dataset: the plan counts each run's
    steps in the file's 40 training examples (one batch of 128 or 512) and says the file,
    its examples and the checksum its runs are keyed by; the real run takes them too."""
    import torch

    from sgdlab.data.files import data_file_sha256

    torch.save({"x_train": torch.randn(40, 3), "y_train": torch.arange(40) % 2},
               tmp_path / "d.pt")
    digest = data_file_sha256(tmp_path / "d.pt")
    cfg = mnist_file(tmp_path, {"file": str(tmp_path / "d.pt")})
    plan = plan_of(tmp_path, cfg, "smoke")
    assert plan.ok and [p.steps for p in plan.runs] == [1] * 4
    [need] = plan.files
    assert (need.what, need.found, need.runs) == (f"data file {tmp_path / 'd.pt'}",
                                                  f"sha256 {digest}", 4)
    assert plan.datasets == ["data file d.pt"]
    lines = plan.lines()
    assert (f"  data file {tmp_path / 'd.pt'}: found (sha256 {digest}); read by 4 runs, 4 to "
            "execute") in lines
    assert "    training set: 40 examples (x_train of the file)" in lines


def test_a_data_file_its_loader_refuses_stops_the_plan_with_the_loaders_message(tmp_path):
    """A numpy .npz is not a torch.save'd dict: the loader's refusal, before any run."""
    import numpy as np

    from sgdlab.errors import UserError

    np.savez(tmp_path / "d.npz", x_train=np.zeros((4, 2)), y_train=np.zeros(4))
    cfg = mnist_file(tmp_path, {"file": str(tmp_path / "d.npz")})
    plan = plan_of(tmp_path, cfg, "smoke")
    [need] = plan.files
    assert need.found.startswith("sha256 ") and plan.problems == [need.problem]
    assert "numpy's .npz; write it with torch.save" in need.problem
    assert any(line.startswith(f"  data file {tmp_path / 'd.npz'}: found ({need.found}), "
                               "REFUSED; read by 4 runs, 4 to execute") for line in plan.lines())
    with pytest.raises(UserError, match="numpy's .npz"):
        run_of(tmp_path, cfg, "smoke")
    assert not (tmp_path / "s.sqlite").exists()


# (entry, an option misspelt with its value and the option it misspells, an option given a
# value its analysis' rule refuses and what the rule asks): one for each analysis (each
# declares its options); None is the compare_groups experiment of one's own above
OPTION_MISTAKES = [
    ("zhu-alignment-cubic", ("cosine_abov", 0.9, "cosine_above"),
     ("cosine_above", "high", "a finite number, got 'high'")),
    ("zhu-projection-residual", ("residual_sprad", 0.25, "residual_spread"),
     ("eigenvalue_rtol", True, "a finite number >= 0 or null, not a bool (True)")),
    (None, ("curvs", ["train_loss"], "curves"),
     ("curve_marks", ["5"], "a list, each item a finite number, got ['5']")),
    ("jastrzebski-ratio-grid", ("equal_ratio_margn", 0.01, "equal_ratio_margin"),
     ("equal_ratio_margin", -0.01, "a finite number >= 0, got -0.01")),
    ("xing-walk", ("afer_step", 20, "after_step"),
     ("final_updates", -1, "a positive integer, got -1")),
    ("xing-barriers", ("epoch", [1], "epochs"),
     ("barrier_epochs", 2, "a list, each item a positive integer or null, got 2")),
    ("xing-hessian-norm", ("referenses", {}, "references"),
     ("claims", {"less": ["a", "b"]}, "a list or null, got {'less': ['a', 'b']}")),
    ("xing-cosine-grid", ("lr_margine", 0.05, "lr_margin"),
     ("fixed_batch", "100", "a finite number > 0, got '100'")),
    ("xing-stuck-continuation", ("windw", 5, "window"),
     ("stuck_run", ["gd-iso"], "a string, got ['gd-iso']")),
    ("jastrzebski-equal-ratio", ("last_kk", 3, "last_k"),
     ("last_k", 2.5, "a positive integer, got 2.5")),
    ("jastrzebski-interpolation", ("rize", 0.5, "rise"),
     ("rise", "half", "a finite number > 0, got 'half'")),
    ("jastrzebski-breakdown", ("curve_margn", 0.01, "curve_margin"),
     ("within_limit", "all", "one of every-size, largest-size, got 'all'")),
    ("zhu-noise-vs-gradient", ("dominance_ration", 10, "dominance_ratio"),
     ("dominance_ratio", False, "a finite number > 0, not a bool (False)")),
    ("zhu-noisy-label", ("best_off", {}, "best_of"),
     ("curves", "test_acc", "a list, each item a string, got 'test_acc'")),
    ("zhu-escape-2d", ("orderin", {}, "ordering"),
     ("speed", ["sgd"], "a mapping, got ['sgd']")),
    ("zhu-escape-lr-sweep", ("fastr", ["sgd"], "faster"),
     ("z", "2", "a finite number > 0, got '2'")),
    ("chaudhari-hessian-spectrum", ("tail_ration", 10, "tail_ratio"),
     ("negative_bar", 0.1, "one of float32-round-off, dtype-round-off, beyond-peak, got 0.1")),
    ("chaudhari-diffusion-spectrum", ("same_within_facter", 2, "same_within_factor"),
     ("rank_fraction_range", [0.003, "2%"],
      "a list, each item a finite number > 0, got [0.003, '2%']")),
    ("chaudhari-trajectory-fft", ("grad_norm_mean", 5, "grad_norm_mean_of"),
     ("grad_norm_mean_of", 0, "a positive integer, got 0")),
    ("chaudhari-trivialized", ("early_step", 1, "early_epoch"),
     ("trained_at", "half", "a finite number or null, got 'half'")),
    ("chaudhari-independent-copies", ("claim", [], "claims"),
     ("references", [], "a mapping, got []")),
    ("chaudhari-double-well", ("cycle_ration", 0.95, "cycle_ratio"),
     ("zero_tol", -1e-6, "a finite number >= 0, got -1e-06")),
    ("chaudhari-spin-glass", ("claimss", [], "claims"),
     ("claims", "less", "a list or null, got 'less'")),
]


def own_copy(tmp_path, entry: str | None, options: dict) -> str:
    """An experiment of one's own with ``options`` added: catalogue ``entry`` under a name of
    its own (a copy keeping the name has its numbers compared with the entry's on load), or
    :func:`own_experiment`."""
    if entry is None:
        return own_experiment(tmp_path, options)

    def edit(raw):
        raw["name"] = "mine"
        raw["options"] = {**raw.get("options", {}), **options}
    return entry_file(tmp_path, entry, edit)


@pytest.mark.parametrize("entry, misspelt, wrong", OPTION_MISTAKES)
def test_a_misspelt_or_mistyped_option_fails_the_dry_run_and_the_run(tmp_path, capsys, entry,
                                                                     misspelt, wrong):
    """Each analysis declares the options it reads and their rules: an option read with
    float() or iterated when the report is written failed there, after all the training, or
    was not read at all."""
    from sgdlab.errors import ConfigError
    from sgdlab.experiments.procedures import ANALYSIS_OPTIONS

    key, value, meant = misspelt
    cfg = own_copy(tmp_path, entry, {key: value})
    [found] = plan_of(tmp_path, cfg, "smoke").problems
    analysis = yaml.safe_load(open(cfg))["analysis"]
    assert found == (f"{cfg}: options.{key}: analysis {analysis!r} has no option {key!r} "
                     f"(did you mean {meant}?); its options: "
                     f"{', '.join(sorted(ANALYSIS_OPTIONS[analysis]))}")
    dry_run_refuses(tmp_path, capsys, cfg, found, "smoke")
    key, value, said = wrong
    cfg = own_copy(tmp_path, entry, {key: value})
    [found] = plan_of(tmp_path, cfg, "smoke").problems
    assert found == f"{cfg}: options.{key} must be {said}"
    with pytest.raises(ConfigError, match=f"options.{key} must be "):
        run_of(tmp_path, cfg, "smoke")
    assert not any(p.name in ("s.sqlite", "out") for p in tmp_path.iterdir())


def test_an_edited_copy_of_an_entry_has_its_options_checked_too(tmp_path):
    # a copy keeping the entry's name: its numbers are compared with the entry's on load,
    # and every option is checked against the analysis' rules when it is planned
    for options, problem in (
            ({"afer_step": 20}, "options.afer_step: analysis 'xing_walk' has no option "
                                "'afer_step' (did you mean after_step?); its options: "),
            ({"valley_floor": "middle"},
             "options.valley_floor must be one of interior, segment, got 'middle'")):
        cfg = entry_file(tmp_path, "xing-walk", lambda raw: raw["options"].update(options))
        [found] = plan_of(tmp_path, cfg).problems
        assert found.startswith(f"{cfg}: {problem}")


def test_every_analysis_declares_its_options_and_has_its_mistakes_tested_above():
    from sgdlab.experiments.procedures import ANALYSES, ANALYSIS_OPTIONS, get_analysis

    get_analysis("compare_groups")      # every module of the package registered
    shipped = {a for a in ANALYSES if not a.startswith("_test")}      # (tests' own aside)
    assert shipped <= ANALYSIS_OPTIONS.keys()
    tested = {yaml.safe_load((CATALOGUE_DIR / f"{e}.yaml").read_text())["analysis"]
              for e, _, _ in OPTION_MISTAKES if e} | {"compare_groups", "pde_smoothing"}
    assert tested == shipped


def test_an_option_of_an_analysis_that_reads_none_fails_the_dry_run(tmp_path):
    cfg = own_copy(tmp_path, "chaudhari-pde-smoothing", {"tol": 1e-6})
    [found] = plan_of(tmp_path, cfg, "smoke").problems
    assert found == (f"{cfg}: options.tol: analysis 'pde_smoothing' has no option 'tol'; its "
                     "options: none")


def test_a_required_option_missing_fails_the_dry_run_and_the_run(tmp_path, capsys):
    # xing_cosine_grid reads its two sweeps around (fixed_lr, fixed_batch): without one the
    # report failed with a KeyError after all the training
    from sgdlab.errors import ConfigError

    cfg = entry_file(tmp_path, "xing-cosine-grid", lambda raw: raw["options"].pop("fixed_lr"))
    [found] = plan_of(tmp_path, cfg, "smoke").problems
    assert found == (f"{cfg}: options.fixed_lr: analysis 'xing_cosine_grid' needs this "
                     "option, a finite number > 0")
    dry_run_refuses(tmp_path, capsys, cfg, found, "smoke")
    with pytest.raises(ConfigError, match="options.fixed_lr: analysis 'xing_cosine_grid' "):
        run_of(tmp_path, cfg, "smoke")
    assert not any(p.name in ("s.sqlite", "out") for p in tmp_path.iterdir())


def test_claims_null_is_no_claims(tmp_path):
    # every analysis reads a null `claims:` as none; the rule refused it
    assert plan_of(tmp_path, own_experiment(tmp_path, {"claims": None})).problems == []


@pytest.mark.parametrize("claim, problem", [
    ({"grater": ["sgd", "adam"], "metric": "test_acc"},
     "options.claims[1]: a claim has no key 'grater' (did you mean greater?); its keys: "
     "above, atol, claim, close, "),
    ({"less": ["sgd", "adam"], "metrc": "test_acc"},
     "options.claims[1]: a claim has no key 'metrc' (did you mean metric?); its keys: "),
    ({"less": ["sgd", "adam"], "metric": "test_acc", "margin": "1%"},
     "options.claims[1].margin must be a finite number, got '1%'"),
    ({"less": ["sgd", "adam"], "metric": "test_acc", "requires": [
        {"metric": "train_acc", "abve": 0.5}]},
     "options.claims[1].requires[0]: a precondition has no key 'abve' (did you mean above?); "
     "its keys: above, below, metric"),
    ({"less": ["sgd", "adam"]},
     "options.claims[1]: a claim has exactly one of above, close, equivalent, far, greater, "
     "less and a 'metric'"),
    # the report refused these once every run had trained
    ({"greater": ["adam"], "metric": "test_acc"},
     "options.claims[1].greater compares two groups, [A, B], got ['adam']"),
    ({"less": ["sgd", "adam", "sgd"], "metric": "test_acc"},
     "options.claims[1].less compares two groups, [A, B], got ['sgd', 'adam', 'sgd']"),
    ({"equivalent": ["sgd"], "metric": "test_acc", "margin": 0.1},
     "options.claims[1].equivalent compares two groups, [A, B] (or more), got ['sgd']"),
    ({"above": ["sgd", "adam"], "metric": "test_acc"},
     "options.claims[1].above compares two lists of groups, [[A1, A2, ...], [B1, ...]], "
     "got ['sgd', 'adam']"),
])
def test_a_misspelt_key_of_a_claim_fails_the_dry_run(tmp_path, capsys, claim, problem):
    # a misspelt kind failed the report after all the training; a misspelt margin or metric
    # name was ignored, its default used without a word
    cfg = own_experiment(tmp_path, {"claims": [{"less": ["sgd", "adam"], "metric": "test_acc"},
                                               claim]})
    [found] = plan_of(tmp_path, cfg).problems
    assert found.startswith(f"{cfg}: {problem}")
    dry_run_refuses(tmp_path, capsys, cfg, found)
