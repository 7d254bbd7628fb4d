"""The experiment worker's measurements: untimed probe blocks (``reproducible_blocks``), so
a run's numbers do not depend on how busy the machine was."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sgdlab.experiments.procedures import Procedure, RunOutput, register_procedure
from sgdlab.experiments.procedures.measures import compute_final
from sgdlab.experiments.spec import resolve
from sgdlab.experiments.sweep import load_runs, run_sweep
from sgdlab.testing import fake_block_timing

pytestmark = pytest.mark.usefixtures("one_thread_runs")


@register_procedure("_test_frobenius")
class _Frobenius(Procedure):
    """An MLP's ‖H‖_F as the catalogue's ``hessian_frobenius`` final measurement gives it."""
    allowed = {"x"}

    def run(self, run, ctx):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                              nn.Linear(32, 5))
        data = torch.randn(64, 20), torch.randint(0, 5, (64,))
        summary, _ = compute_final({"kind": "hessian_frobenius", "probes": 40}, model,
                                   nn.CrossEntropyLoss(), data)
        return RunOutput(summary=summary)


def test_a_runs_curvature_estimate_does_not_depend_on_the_block_timing(tmp_path,
                                                                        monkeypatch):
    raw = {"name": "t-frob", "version": 1, "description": "toy", "analysis": "compare_groups",
           "procedure": "_test_frobenius", "base": {"x": 1}, "runs": [{"label": "f"}],
           "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"}, "seeds": [0],
           "options": {"table": [["hessian_frobenius", "Frobenius norm"]]}}
    runs = resolve(raw, "cpu").expand()
    values = []
    # larger blocks cheaper per column (the tuner settles on 16) / dearer (it settles on 1)
    for i, per_block in enumerate((lambda b: 1.0, lambda b: float(b * b))):
        fake_block_timing(monkeypatch, per_block)
        store = str(tmp_path / f"s{i}.sqlite")
        run_sweep(runs, store_path=store, progress=None, workers=1)
        (done,), missing = load_runs(runs, store_path=store)
        assert not missing
        values.append(done.summary["hessian_frobenius"])
    assert values[0] == values[1]                # bitwise
