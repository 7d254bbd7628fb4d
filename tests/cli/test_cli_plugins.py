"""``--plugin``: a user's own model and data through train -> measure -> resume -> warm start,
each command a fresh process that imports the plugin the stored config names."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import sgdlab
from sgdlab.store import RunStore
from sgdlab.testing import user_model_plugin

PLUGIN = user_model_plugin("cli-user-linear", inputs=3, outputs=2)
CONFIG = """
data: {file: data.pt}
model: {name: cli-user-linear}
optimizer: {name: sgd, lr: 0.1}
train: {epochs: 2, batch_size: 8, threads: 1, progress: false}
"""


def _sgdlab(args: list[str], cwd: Path, path: list[Path]) -> subprocess.CompletedProcess:
    """``python -m sgdlab ARGS`` in a new process, with ``path`` (and this sgdlab) on
    PYTHONPATH."""
    here = Path(sgdlab.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*path, here])),
           "OMP_NUM_THREADS": "1"}
    env.pop("SGDLAB_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "sgdlab", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_users_model_and_data_file_train_measure_resume_and_warm_start(tmp_path):
    mods, work, elsewhere = tmp_path / "mods", tmp_path / "work", tmp_path / "elsewhere"
    for d in (mods, work, elsewhere):
        d.mkdir()
    (mods / "my_models.py").write_text(PLUGIN)
    g = torch.Generator().manual_seed(0)
    torch.save({"x_train": torch.randn(24, 3, generator=g),
                "y_train": torch.randint(0, 2, (24,), generator=g),
                "x_test": torch.randn(8, 3, generator=g),
                "y_test": torch.randint(0, 2, (8,), generator=g)}, work / "data.pt")
    (work / "run.yaml").write_text(CONFIG)
    store = tmp_path / "runs.sqlite"

    # without the plugin, the model is unknown and the message says how to name its module
    p = _sgdlab(["train", "run.yaml", "--store", str(store)], work, [mods])
    assert p.returncode == 2 and "unknown model 'cli-user-linear' (a model of your own: " \
        "name the module that registers it under plugins: [MODULE] or with --plugin " \
        "MODULE)" in p.stderr, p.stderr

    p = _sgdlab(["train", "run.yaml", "--plugin", "my_models", "--store", str(store),
                 "--out", str(work / "run")], work, [mods])
    assert p.returncode == 0, p.stderr
    (run,) = RunStore(store).list_runs()
    assert run["config"]["plugins"] == ["my_models"]
    assert run["config"]["data"]["file"] == str((work / "data.pt").resolve())

    # from another folder, with no --plugin: the stored config names the module
    p = _sgdlab(["measure", run["id"], "--store", str(store), "--what", "hessian",
                 "--out", str(tmp_path / "m")], elsewhere, [mods])
    assert p.returncode == 0, p.stderr
    p = _sgdlab(["measure", run["id"], "--store", str(store), "--what", "hessian",
                 "--out", str(tmp_path / "m2")], elsewhere, [])
    assert p.returncode == 2 and "plugins[0]: cannot import plugin 'my_models'" in p.stderr

    RunStore(store).set_status(run["id"], "interrupted", "stopped after its last checkpoint")
    p = _sgdlab(["resume", run["id"], "--store", str(store)], elsewhere, [mods])
    assert p.returncode == 0 and "finished after 6 steps" in p.stdout, p.stderr + p.stdout

    p = _sgdlab(["train", "run.yaml", "--plugin", "my_models", "--store", str(store),
                 "--init-from", run["id"], "--set", "train.epochs=1"], work, [mods])
    assert p.returncode == 0, p.stderr
    warm = next(r for r in RunStore(store).list_runs() if r["id"] != run["id"])
    assert warm["config"]["model"]["warm_start"]["run_id"] == run["id"]


def test_sgdlab_run_leaves_the_callers_plugins_variable_as_it_was(tmp_path, monkeypatch):
    """`sgdlab run --plugin` gives its plugins to the sweep's workers through $SGDLAB_PLUGINS
    while it runs; a caller of main() in its own process keeps the variable it had."""
    import uuid

    from sgdlab.cli.main import main
    from sgdlab.plugins import PLUGINS_ENV

    plugin = tmp_path / f"plugin_run_{uuid.uuid4().hex[:8]}.py"
    plugin.write_text("X = 1\n")
    seen = []
    monkeypatch.setattr("sgdlab.cli.run._dry_run",
                        lambda args: seen.append(os.environ.get(PLUGINS_ENV)) or 0)
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    argv = ["run", "zhu-escape-2d", "--scale", "smoke", "--dry-run", "--plugin", str(plugin),
            "--store", str(tmp_path / "runs.sqlite")]
    assert main(argv) == 0
    assert seen == [str(plugin)] and PLUGINS_ENV not in os.environ
    monkeypatch.setenv(PLUGINS_ENV, "json")     # a module of its own
    assert main(argv) == 0
    assert seen[-1] == os.pathsep.join(["json", str(plugin)])
    assert os.environ[PLUGINS_ENV] == "json"
    sys.modules.pop(plugin.stem, None)


def test_a_config_recording_a_plugin_file_that_moved_takes_the_one_given(tmp_path, monkeypatch,
                                                                         capsys):
    """A config as a run records it names its plugin file by its absolute path; the file moved
    since, the command asks for its new path, and `--plugin NEWPATH` is used in its place (as
    `sgdlab measure RUN` and `sgdlab resume RUN` rebuild the run through the same check)."""
    import uuid

    import yaml

    from sgdlab.cli.main import main
    from sgdlab.plugins import PLUGINS_ENV
    from sgdlab.testing import TINY_RUN

    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    gone = tmp_path / f"plugin_moved_{uuid.uuid4().hex[:8]}.py"
    (tmp_path / "new").mkdir()
    moved = tmp_path / "new" / gone.name
    moved.write_text("X = 1\n")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**TINY_RUN, "plugins": [str(gone)]}))
    capsys.readouterr()
    assert main(["train", str(config), "--print-config"]) == 2
    assert (f"plugins[0]: cannot import plugin '{gone}': no such file (moved or renamed? "
            "give its new path with --plugin NEWPATH)") in capsys.readouterr().err
    try:
        assert main(["train", str(config), "--print-config", "--plugin", str(moved)]) == 0
        out = capsys.readouterr()
        assert out.err == (f"sgdlab: note: plugin {gone} recorded by the run is gone; using "
                           f"{moved}\n")
        assert yaml.safe_load(out.out)["plugins"] == [str(moved)]
    finally:
        sys.modules.pop(gone.stem, None)


def test_resume_takes_plugin_as_measure_does():
    """`sgdlab resume RUN --plugin NEWPATH`: the file that stands in for a recorded plugin
    file that is gone (or a module the run did not record)."""
    from sgdlab.cli.main import build_parser

    for command in ("resume", "measure"):
        args = build_parser().parse_args([command, "RUN", "--plugin", "new/my_models.py"])
        assert args.plugins == ["new/my_models.py"]
