"""The landscape procedures run on the run's device (``ctx.device``) and store CPU results.

No GPU here: the CPU runs are compared with the library's own runs (the procedure on "cpu"
must be the run it was before it took a device), and the device is followed down with the
``meta`` device, recorded where the landscape and the chains reach the library."""
from types import SimpleNamespace

import pytest
import torch


class _Reached(Exception):
    """Raised by a spy once it has recorded the devices (meta tensors hold no values)."""


def _ctx(device):
    return SimpleNamespace(run_id="r", device=device,
                           store=SimpleNamespace(log_many=lambda rid, rows: None))


ESCAPE = {"method": "sgd", "landscape": "rescaled", "iterations": 30, "repetitions": 8,
          "sharpness_every": 10, "sharpness_samples": 4, "trajectories": 2}


def test_escape_on_the_cpu_is_the_librarys_run():
    from sgdlab.experiments.procedures.landscape_runs import EscapeProcedure
    from sgdlab.landscapes.escape import EscapeConfig, escape_experiment
    from sgdlab.landscapes.two_basin import two_basin

    out = EscapeProcedure().run(SimpleNamespace(params=dict(ESCAPE), seed=1), _ctx("cpu"))
    cfg = {k: v for k, v in ESCAPE.items() if k not in ("method", "landscape", "trajectories")}
    ref = escape_experiment(two_basin("rescaled", seed=1),
                            EscapeConfig(seed=1, record_trajectory=True, **cfg),
                            methods=["sgd"])
    assert out.data["first_passage"] == ref.first_passage["sgd"].tolist()
    assert out.data["sharpness"] == ref.sharpness["sgd"]
    assert out.summary["success_rate"] == ref.success_rate["sgd"]
    traj = ref.trajectory["sgd"][:, :2]
    assert out.data["trajectories"] == traj[::max(1, traj.shape[0] // 200)].transpose(
        0, 1).tolist()


def test_escape_moves_its_landscape_to_the_runs_device(monkeypatch):
    import sgdlab.landscapes.escape as escape
    from sgdlab.experiments.procedures.landscape_runs import EscapeProcedure

    seen = {}

    def spy(land, cfg, methods):
        seen["device"] = land.device
        raise _Reached

    monkeypatch.setattr(escape, "escape_experiment", spy)
    with pytest.raises(_Reached):
        EscapeProcedure().run(SimpleNamespace(params=dict(ESCAPE), seed=1), _ctx("meta"))
    assert seen["device"] == torch.device("meta")


def test_double_well_starts_its_chains_on_the_runs_device(monkeypatch):
    import sgdlab.landscapes.sde as sde
    from sgdlab.experiments.procedures.landscape_runs import DoubleWellProcedure

    seen = {}

    def spy(eq, x0, **kw):
        seen["x0"], seen["generator"] = x0.device, kw["generator"].device
        raise _Reached

    monkeypatch.setattr(sde, "simulate", spy)
    with pytest.raises(_Reached):
        DoubleWellProcedure().run(SimpleNamespace(params={"lam": 0.5, "chains": 4}, seed=0),
                                  _ctx("meta"))
    # the increments' generator stays on the CPU: the CPU's paths on any device
    assert seen == {"x0": torch.device("meta"), "generator": torch.device("cpu")}


PSPIN = {"regime": "glassy", "n": 8, "starts": 6, "max_steps": 40, "tol": 1e-3}


def test_pspin_descends_on_the_runs_device_from_the_cpus_starts(monkeypatch):
    from sgdlab.experiments.procedures.landscape_runs import PSpinProcedure
    from sgdlab.landscapes.pspin import PSpinGlass

    seen = {}
    descend = PSpinGlass.descend

    def spy(self, starts, **kw):
        seen[str(starts.device)] = (self.device, starts)
        if starts.device.type == "meta":
            raise _Reached
        return descend(self, starts, **kw)

    monkeypatch.setattr(PSpinGlass, "descend", spy)
    with pytest.raises(_Reached):
        PSpinProcedure().run(SimpleNamespace(params=dict(PSPIN), seed=3), _ctx("meta"))
    out = PSpinProcedure().run(SimpleNamespace(params=dict(PSPIN), seed=3), _ctx("cpu"))
    assert seen["meta"][0] == torch.device("meta") and seen["cpu"][0] == torch.device("cpu")
    assert seen["meta"][1].shape == seen["cpu"][1].shape == (6, 8)
    # stored on the CPU, as before: tensors there, numbers as Python numbers
    assert out.data["energies"].device.type == "cpu"
    assert out.data["basin_sizes"].device.type == "cpu"
    assert isinstance(out.summary["energy_min"], float)


def test_pspin_on_the_cpu_is_the_librarys_run():
    from sgdlab.experiments.procedures.landscape_runs import PSpinProcedure
    from sgdlab.landscapes.pspin import PSpinGlass, cluster_minima, starts_seed

    out = PSpinProcedure().run(SimpleNamespace(params=dict(PSPIN), seed=3), _ctx("cpu"))
    ps = PSpinGlass(8, regime="glassy", seed=3)
    gen = torch.Generator().manual_seed(starts_seed(3))
    res = ps.descend(ps.random_starts(6, generator=gen), lr=0.1, tol=1e-3, max_steps=40)
    labels, reps = cluster_minima(res.sigma)
    assert torch.equal(out.data["energies"], res.energy_per_spin[reps])
    assert out.summary["energy_min"] == float(res.energy_per_spin.min())
    assert torch.equal(out.data["basin_sizes"], torch.bincount(labels, minlength=len(reps)))
