"""What a sweep worker imports before its first run (the timing itself is the benchmark figure
worker_imports_vs_torch): the procedure modules and the run path leave matplotlib to the
analyses that draw, which run in the driver, and scipy (~0.3 s for scipy.linalg alone) to the
functions that solve with it."""
import pkgutil

import sgdlab.experiments.procedures as procedures
from sgdlab.testing import fresh_python, user_model_plugin


def test_procedure_modules_and_the_run_path_import_no_matplotlib_nor_scipy():
    modules = ["sgdlab.experiments.worker", "sgdlab.experiments.backends",
               "sgdlab.experiments.ray_backend", "sgdlab.train",
               *(f"sgdlab.experiments.procedures.{m.name}"
                 for m in pkgutil.iter_modules(procedures.__path__))]
    assert "sgdlab.experiments.procedures.jastrzebski" in modules
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module(name)\n"
            "    drawn = sorted(m for m in sys.modules\n"
            "                   if m.split('.')[0] in ('matplotlib', 'scipy'))\n"
            "    print(name, drawn[:3])\n")
    assert fresh_python(code, *modules).splitlines() == [f"{m} []" for m in modules]


# a model of the user's own, registered by a plugin file (tests/cli/test_cli_plugins.py has
# the CLI's round trip)
PLUGIN = user_model_plugin("sweep-user-linear")


def test_spawned_sweep_workers_import_the_plugins_of_the_command(tmp_path, monkeypatch):
    """A sweep run's params name a plugin's model; `sgdlab run --plugin` passes the module on
    through $SGDLAB_PLUGINS, which each spawned worker imports before its run: without, the
    model was unknown there."""
    import yaml

    from sgdlab.cli.main import main
    from sgdlab.models import MODELS
    from sgdlab.plugins import PLUGINS_ENV
    from sgdlab.store import RunStore

    (tmp_path / "sweep_user_models.py").write_text(PLUGIN)
    monkeypatch.setenv(PLUGINS_ENV, "")     # restored after the test, as the command sets it
    before = set(MODELS)
    raw = {"name": "t-plugin", "version": 1, "description": "a plugin's model",
           "analysis": "compare_groups", "procedure": "train",
           "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"},
           "base": {"dataset": {"name": "cubic"}, "model": {"name": "sweep-user-linear"},
                    "optimizer": {"name": "sgd", "lr": 0.01}, "batch_size": "full",
                    "epochs": 1},
           "runs": [{"label": "a"}, {"label": "b", "params": {"optimizer": {"lr": 0.02}}}],
           "seeds": [0], "options": {"table": [["train_loss", "final train loss"]],
                                     "curves": ["train_loss"]}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    try:
        assert main(["run", "--config", str(tmp_path / "exp.yaml"), "--scale", "cpu",
                     "--workers", "2", "--plugin", str(tmp_path / "sweep_user_models.py"),
                     "--store", str(tmp_path / "runs.sqlite"), "--out",
                     str(tmp_path / "o")]) == 0
    finally:
        for name in set(MODELS) - before:
            del MODELS[name]
    runs = RunStore(tmp_path / "runs.sqlite").list_runs()
    assert sorted(r["status"] for r in runs) == ["finished", "finished"]
