"""What a sweep worker imports before its first run (the timing itself is the benchmark figure
worker_imports_vs_torch): the procedure modules and the run path leave matplotlib to the
analyses that draw, which run in the driver."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import sgdlab.experiments.procedures as procedures

ROOT = Path(__file__).resolve().parents[2]


def test_procedure_modules_and_the_run_path_import_no_matplotlib():
    modules = ["sgdlab.experiments.worker", "sgdlab.experiments.backends",
               "sgdlab.experiments.ray_backend", "sgdlab.train",
               *(f"sgdlab.experiments.procedures.{m.name}"
                 for m in pkgutil.iter_modules(procedures.__path__))]
    assert "sgdlab.experiments.procedures.jastrzebski" in modules
    code = ("import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    importlib.import_module(name)\n"
            "    drawn = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')\n"
            "    print(name, drawn[:3])\n")
    out = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True,
                         text=True, cwd=ROOT, timeout=120, env={"PYTHONPATH": str(ROOT),
                                                                "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{m} []" for m in modules]
