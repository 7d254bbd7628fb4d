"""`sgdlab measure` on a checkpoint written by `sgdlab train`, and the curvature figures."""
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from sgdlab.cli.main import main
from sgdlab.report.figures.curvature import (
    alignment_figure, batch_statistics_figure, curvature_history_figure, eigenspectrum_figure,
    noise_magnitude_figure, spectral_density_figure,
)
from sgdlab.testing import strict_loads


def _trained(folder: Path, *settings: str, steps: int = 3) -> tuple[str, Path]:
    """(store, run folder) in ``folder`` of `sgdlab train digits-mlp` for ``steps`` steps of
    one epoch, each of ``settings`` (``key=value``) one more ``--set``."""
    store, run_dir = str(folder / "runs.sqlite"), folder / "run"
    sets = [a for s in (f"train.max_steps={steps}", "train.epochs=1", *settings)
            for a in ("--set", s)]
    assert main(["train", "digits-mlp", "--store", store, "--out", str(run_dir), *sets,
                 "--no-progress"]) == 0
    return store, run_dir


def test_measure_checkpoint_writes_store_json_and_plots(tmp_path, capsys):
    store, run_dir = _trained(tmp_path)
    out = tmp_path / "m"
    rc = main(["measure", str(run_dir / "checkpoints" / "last.pt"), "--store", store,
               "--subset", "40", "--k", "2", "--probes", "4", "--samples", "3",
               "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "measurements.json").read_text())
    assert res["step"] == 3 and res["num_samples"] == 40
    for key in ["hess/top_1", "hess/trace", "noise/trace", "noise/rank", "align/residual",
                "sharpness/expected"]:
        assert key in res["scalars"], key
    assert res["scalars"]["hess/top_1"] >= res["scalars"]["hess/top_2"]
    assert res["scalars"]["noise/rank"] <= 39          # centred: at most N - 1
    for png in ["hessian_density.png", "spectra.png", "alignment.png"]:
        assert (out / png).stat().st_size > 0
    from sgdlab.store import RunStore

    s = RunStore(store)
    run_id = res["run_id"]
    rec = s.metrics(run_id, "measure/hess/top_1")["measure/hess/top_1"]
    assert rec == [(3, pytest.approx(res["scalars"]["hess/top_1"]))]
    # measured again (other probes): the new value replaces the last, not a second row
    assert main(["measure", str(run_dir / "checkpoints" / "last.pt"), "--store", store,
                 "--subset", "30", "--k", "2", "--probes", "4",
                 "--what", "hessian", "--out", str(tmp_path / "m2")]) == 0
    again = json.loads((tmp_path / "m2" / "measurements.json").read_text())
    rec = s.metrics(run_id, "measure/hess/top_1")["measure/hess/top_1"]
    assert rec == [(3, pytest.approx(again["scalars"]["hess/top_1"]))]
    assert len(s.metrics(run_id, "measure/noise/trace")["measure/noise/trace"]) == 1
    capsys.readouterr()
    assert main(["measure", str(run_dir), "--store", store, "--what", "bogus"]) == 2
    assert "--what" in capsys.readouterr().err
    assert main(["measure", str(tmp_path), "--store", store]) == 2     # no checkpoint there


def test_figures_from_recorded_data():
    figs = [
        spectral_density_figure([0.0, 1.0, 2.0], [0.1, 0.5, 0.1], eigenvalues=[1.0]),
        spectral_density_figure([], []),
        eigenspectrum_figure({"Σ": [3.0, 1.0, 0.1], "H": [2.0, -0.5]}),
        alignment_figure([0.9, 0.2], [0.7, 0.3], [0.8, 0.1], residual=0.4),
        curvature_history_figure({"hess/top_1": [(0, 1.0), (10, 2.0)],
                                  "align/residual": [(0, 0.5)]}),
        noise_magnitude_figure({}),
        batch_statistics_figure({"batch/norm_test": [(0, 1.0), (5, 0.5)],
                                 "batch/trace_cov": [(0, 2.0), (5, 1.0)],
                                 "batch/grad_sq_unbiased": [(0, 0.1), (5, -0.05)]}),
        batch_statistics_figure({}),
    ]
    for f in figs:
        assert isinstance(f, plt.Figure)
        plt.close(f)


@pytest.mark.parametrize("bad", [["--k", "0"], ["--data", "valid"]])
def test_measure_rejects_bad_options(bad, capsys, tmp_path):
    try:
        code = main(["measure", str(tmp_path), *bad])
    except SystemExit as e:      # argparse refuses a --data that is not one of its choices
        code = e.code
    assert code == 2 and "Traceback" not in capsys.readouterr().err


def test_measure_names_a_misspelled_measurement(capsys, tmp_path):
    assert main(["measure", str(tmp_path), "--what", "hessian,bach"]) == 2
    assert "--what: unknown bach (did you mean batch?); choose from" in capsys.readouterr().err


def test_measure_batch_says_why_cabs_is_nan_and_which_batch_sizes_fit(tmp_path, capsys):
    """A checkpoint whose learning rate is 0 (a schedule ending there) has no CABS batch size;
    a full-batch run has no batch size to default to."""
    store, run_dir = _trained(tmp_path, "optimizer.lr=0", "train.batch_size=full", steps=1)
    assert main(["measure", str(run_dir), "--store", store, "--what", "batch",
                 "--subset", "16"]) == 2
    assert ("give --batch-size B, 2 <= B <= 16 (the examples measured; the run's "
            "train.batch_size is 'full'") in capsys.readouterr().err
    assert main(["measure", str(run_dir), "--store", store, "--what", "batch", "--subset", "16",
                 "--batch-size", "8", "--batches", "1", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    measured = strict_loads((tmp_path / "b" / "measurements.json").read_text())
    assert measured["scalars"]["batch/cabs_batch_size"] is None
    assert "(batch/cabs_batch_size is NaN (null in measurements.json): CABS scales with the " \
           "learning rate, and the checkpoint's is not > 0" in out
    from sgdlab.store import RunStore

    (run,) = RunStore(store).list_runs()            # the store keeps the NaN
    (point,) = RunStore(store).metrics(run["id"])["measure/batch/cabs_batch_size"]
    assert math.isnan(point[1])


def test_measure_loss_surface_of_a_checkpoint(tmp_path):
    store, run_dir = _trained(tmp_path)
    final = json.loads((run_dir / "results.json").read_text())["final"]
    for directions in ("random", "hessian"):
        out = tmp_path / directions
        assert main(["measure", str(run_dir), "--store", store, "--what", "surface",
                     "--subset", "0", "--steps", "3", "--extent", "0.5", "--directions",
                     directions, "--out", str(out)]) == 0
        res = json.loads((out / "measurements.json").read_text())
        surf = res["surface"]
        assert surf["coords"] == [[-0.5, 0.0, 0.5]] * 2 and surf["directions"] == directions
        assert len(surf["train_loss"]) == 3 and all(len(r) == 3 for r in surf["train_loss"])
        # the origin is the checkpoint itself: its loss on the whole training set
        assert res["scalars"]["surface/origin_loss"] == pytest.approx(final["train_loss"],
                                                                      rel=1e-5)
        assert (out / "loss_surface.png").stat().st_size > 0
    assert surf["direction_norms"] == pytest.approx([1.0, 1.0])     # unit eigenvectors
    assert main(["measure", str(run_dir), "--store", store, "--what", "surface",
                 "--steps", "1"]) == 2


def test_measure_surface_refuses_an_infinite_extent(tmp_path, capsys):
    # checked before the checkpoint is read: the target need not exist
    assert main(["measure", str(tmp_path), "--what", "surface", "--extent", "inf"]) == 2
    assert "--extent must be finite" in capsys.readouterr().err


def test_measure_passes_its_memory_budget_to_every_measurement_that_takes_one(tmp_path,
                                                                              monkeypatch):
    """``--memory-budget 1MiB`` reaches the sharpness measurements and the loss surface as
    2**20 bytes (``sgdlab measure`` had no way to set the budget of their passes)."""
    import sgdlab.measure.sharpness as sharpness
    import sgdlab.measure.surface as surface

    seen: dict[str, object] = {}
    for module, name in ((sharpness, "expected_sharpness"), (sharpness, "epsilon_sharpness"),
                         (sharpness, "local_entropy"), (surface, "loss_surface")):
        def spy(*args, _real=getattr(module, name), _name=name, **kwargs):
            seen[_name] = kwargs.get("memory_budget", "not passed")
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, name, spy)
    store, run_dir = _trained(tmp_path)
    assert main(["measure", str(run_dir), "--store", store, "--what", "sharpness,surface",
                 "--subset", "40", "--samples", "2", "--steps", "3", "--memory-budget", "1MiB",
                 "--out", str(tmp_path / "m")]) == 0
    assert seen == dict.fromkeys(("expected_sharpness", "epsilon_sharpness", "local_entropy",
                                  "loss_surface"), 2**20)
    # and measurements.json says which budget its passes had (None: the device's default)
    assert json.loads((tmp_path / "m" / "measurements.json").read_text())["memory_budget"] == 2**20


@pytest.mark.parametrize("budget,problem", [("0", "must be >= 1"), ("1.5", "not a whole "
                         "number of bytes"), ("2GB3", "not a number of bytes"),
                         ("2G", "unknown unit 'G'")])
def test_measure_refuses_a_bad_memory_budget_before_reading_the_checkpoint(tmp_path, capsys,
                                                                           budget, problem):
    # the target need not exist: the option is checked first
    assert main(["measure", str(tmp_path), "--memory-budget", budget]) == 2
    assert f"Invalid --memory-budget={budget!r} ({problem}; bytes: " in capsys.readouterr().err


def test_measure_batch_statistics_of_a_checkpoint(tmp_path, monkeypatch):
    import torch

    import sgdlab.measure.curvature

    from sgdlab.config.io import load_config
    from sgdlab.config.run import build_from_config
    from sgdlab.measure import batch_statistics, takeuchi_information
    from sgdlab.train.checkpoint import load_checkpoint

    # a step schedule halving the learning rate every step: the checkpoint's lr is 0.05 / 8,
    # the one CABS takes (the config's 0.05 is the lr of the first step only)
    store, run_dir = _trained(tmp_path, "schedule.name=step", "schedule.every=0.02",
                              "schedule.gamma=0.5")
    lr = load_checkpoint(run_dir / "checkpoints" / "last.pt")["optimizer"]["param_groups"][0][
        "lr"]
    assert lr == pytest.approx(0.05 / 8)
    out = tmp_path / "b"
    # one batch of all 48 measured examples: the statistics of that subset (order-free)
    assert main(["measure", str(run_dir), "--store", store, "--what", "batch", "--subset", "48",
                 "--batch-size", "48", "--batches", "1", "--out", str(out)]) == 0
    sc = json.loads((out / "measurements.json").read_text())["scalars"]
    built = build_from_config(load_config(run_dir / "config.yaml"))
    model = built.model.eval()
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"])
    x, y = built.data.train
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:48]
    ref = batch_statistics(model, built.loss_fn, (x[idx], y[idx]), lr=lr)
    tic = takeuchi_information(model, built.loss_fn, (x[idx], y[idx]))
    for key in ("norm_test", "inner_product_test", "mean_gsnr", "eb_criterion",
                "cabs_batch_size", "noise_scale"):
        assert sc[f"batch/{key}"] == pytest.approx(getattr(ref, key), rel=1e-5), key
    assert sc["batch/tic_trace"] == pytest.approx(tic.trace, rel=1e-5)
    # several batches: the noise scale is the ratio of the averaged estimates
    assert main(["measure", str(run_dir), "--store", store, "--what", "batch", "--subset", "48",
                 "--batch-size", "8", "--batches", "3", "--batch-curvature", "ggn",
                 "--out", str(out)]) == 0
    sc = json.loads((out / "measurements.json").read_text())["scalars"]
    assert sc["batch/batch_size"] == 8
    assert sc["batch/noise_scale"] == pytest.approx(sc["batch/trace_cov"]
                                                    / sc["batch/grad_sq_unbiased"], rel=1e-12)
    assert sc["batch/noise_scale_curvature"] == pytest.approx(
        sc["batch/trace_h_cov"] / sc["batch/grad_h_grad_unbiased"], rel=1e-12)
    # bad batch options are refused before anything is measured (nothing computed is lost)
    lanczos_calls = []
    monkeypatch.setattr(sgdlab.measure.curvature, "lanczos",
                        lambda *a, **k: lanczos_calls.append(1))
    for bad in (["--batch-size", "49"], ["--batch-size", "8", "--batches", "0"]):
        assert main(["measure", str(run_dir), "--store", store, "--what", "hessian,batch",
                     "--subset", "48", *bad]) == 2
    assert lanczos_calls == []


def test_cabs_takes_the_step_along_mini_batch_gradients():
    """CABS (η Tr Σ / L) scales with the step taken along mini-batch gradients. Entropy-SGD,
    HJ and heat take those in their inner loop at ``inner_lr``; their ``lr`` is the outer η′
    (1.0 by default), which read 10x the CABS batch size of Entropy-SGD's η_y = 0.1."""
    import torch

    from sgdlab.cli.measure import _checkpoint_lr
    from sgdlab.optim.entropy_sgd import EntropySGD

    opt = EntropySGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0, inner_lr=0.1)
    state = {"optimizer": opt.state_dict()}
    assert _checkpoint_lr(state, {}, None, None) == pytest.approx(0.1)
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.05)
    assert _checkpoint_lr({"optimizer": sgd.state_dict()}, {}, None, None) == 0.05
    # no state: the config's value under the same key
    assert _checkpoint_lr({}, {"optimizer": {"name": "entropy-sgd", "inner_lr": 0.2,
                                             "lr": 1.0}}, None, None) == pytest.approx(0.2)



@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    """(store, run folder) of a 3-step digits-mlp run with batch norm, whose config.yaml names
    an instrument registered only in the script that trained it."""
    import yaml

    store, run_dir = _trained(tmp_path_factory.mktemp("bn"), "model.options.batchnorm=true")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["measure"] = [{"name": "an_instrument_of_the_training_script", "every": 5}]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    return store, run_dir


def test_measure_rebuilds_the_model_without_the_instruments(bn_run, tmp_path):
    """Nothing here runs them: an instrument the training script registered had made the
    run's model unmeasurable ("unknown instrument")."""
    store, run_dir = bn_run
    out = tmp_path / "m"
    assert main(["measure", str(run_dir), "--store", store, "--what", "hessian",
                 "--subset", "20", "--k", "2", "--probes", "2", "--out", str(out)]) == 0
    assert "hess/top_2" in json.loads((out / "measurements.json").read_text())["scalars"]


@pytest.mark.parametrize("args,needle", [
    (["--what", "hessian,alignment", "--subset", "3", "--k", "5"],
     "--k 5: alignment takes the top-k eigenpairs of Σ, which has at most min(N, d) = 3 (N = 3 "
     "examples measured, d = "),
    (["--what", "hessian", "--train-mode"],
     "--train-mode: the model's layer 'net.2' (BatchNorm1d) would normalise by the "
     "statistics of the measured examples")])
def test_measure_refuses_before_measuring(bn_run, tmp_path, capsys, args, needle):
    """An alignment k above min(N, d) was a ValueError traceback after the Hessian had run;
    --train-mode on a model with batch norm measured values that depend on which examples
    share the batch. Both are refused before anything is measured or written."""
    store, run_dir = bn_run
    capsys.readouterr()
    assert main(["measure", str(run_dir), "--store", store, "--out", str(tmp_path / "m"),
                 *args]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_an_interrupted_measure_keeps_the_measurements_done_before(tmp_path, capsys,
                                                                   monkeypatch):
    # Ctrl-C during one measurement lost every one done before it: no measurements.json,
    # nothing in the store, a bare "interrupted"
    import sgdlab.cli.measure as measure
    from sgdlab.store import RunStore

    store, run_dir = _trained(tmp_path)
    def interrupted_halfway(step):
        def stopped(m):
            step(m)                          # its values are in, then the interrupt
            raise KeyboardInterrupt
        return stopped

    monkeypatch.setattr(measure, "_noise", interrupted_halfway(measure._noise))
    out = tmp_path / "m"
    assert main(["measure", str(run_dir), "--store", store, "--subset", "40", "--k", "2",
                 "--probes", "4", "--samples", "3", "--what", "hessian,noise,sharpness",
                 "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert ("interrupted during noise; what was measured before it (hessian) is written above; "
            "measure the rest with --what noise,sharpness") in err
    res = json.loads((out / "measurements.json").read_text())
    assert res["what"] == ["hessian"] and res["interrupted_during"] == "noise"
    assert "hess/top_1" in res["scalars"]
    assert not any(k.startswith(("noise/", "sharpness/")) for k in res["scalars"])
    assert not any(k.startswith("noise/") for k in res["arrays"])
    stored = RunStore(store).metrics(res["run_id"])
    assert "measure/hess/top_1" in stored and "measure/noise/trace" not in stored
    # interrupted in the first measurement: nothing to keep, nothing written
    monkeypatch.setattr(measure, "_hessian", interrupted_halfway(measure._hessian))
    assert main(["measure", str(run_dir), "--store", store, "--what", "hessian",
                 "--out", str(tmp_path / "m2")]) == 130
    assert not (tmp_path / "m2" / "measurements.json").exists()
    # (it said a bare "interrupted")
    assert ("sgdlab: interrupted during hessian, the first measurement: nothing was measured "
            "or written; run the same command again") in capsys.readouterr().err


def _sweep(name: str, description: str) -> dict:
    """An experiment of one run of the `train` procedure: 2 epochs of 4 steps of a tiny MLP
    on cubic's 20 points, float64."""
    return {"name": name, "version": 1, "description": description,
            "analysis": "compare_groups", "procedure": "train",
            "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"},
            "base": {"dataset": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
                     "dtype": "float64", "optimizer": {"name": "sgd", "lr": 0.05},
                     "batch_size": 5, "epochs": 2},
            "runs": [{"label": "a"}], "seeds": [0],
            "options": {"table": [["train_loss", "final train loss"]]}}


def test_measure_rebuilds_a_finished_sweep_run_from_its_final_weights(tmp_path, capsys,
                                                                       one_thread_runs):
    """A sweep run's checkpoint is removed when it finishes; `sgdlab measure RUN` rebuilds its
    model from the run parameters the store holds and loads the final weights it keeps: its
    top Hessian eigenvalue on all the training examples is the dense Hessian's of those
    weights, at the run's last step, recorded on the run."""
    import torch

    from sgdlab.experiments.procedures.train import build
    from sgdlab.experiments.spec import resolve
    from sgdlab.experiments.sweep import artifacts_root, load_runs, run_sweep
    from sgdlab.store import RunStore
    from sgdlab.testing import dense_hessian_reference
    from sgdlab.train.checkpoint import load_checkpoint

    runs = resolve(_sweep("t-measure", "final weights"), "cpu").expand()
    store = tmp_path / "s.sqlite"
    run_sweep(runs, store_path=str(store), workers=1, progress=None)
    (run,), _ = load_runs(runs, store_path=str(store))
    folder = artifacts_root(RunStore(store)) / run.key
    assert not (folder / "checkpoint").exists()
    assert main(["measure", run.run_id[:10], "--store", str(store), "--what", "hessian",
                 "--subset", "0", "--k", "1", "--probes", "2",
                 "--out", str(tmp_path / "m")]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "m" / "measurements.json").read_text())
    assert res["run_id"] == run.run_id and res["step"] == run.summary["steps"] == 8

    ds, model, loss_fn, _ = build(runs[0].params, runs[0].seed)
    model.load_state_dict(load_checkpoint(folder / "weights.pt")["model"])
    top = float(torch.linalg.eigvalsh(dense_hessian_reference(model, loss_fn, ds.train))[-1])
    assert res["scalars"]["hess/top_1"] == pytest.approx(top, rel=1e-6)
    recorded = RunStore(store).metrics(run.run_id, "measure/hess/top_1")
    assert recorded["measure/hess/top_1"] == [(8, pytest.approx(top, rel=1e-6))]
    # its folder has no config.yaml: the message names the run id to measure it by
    capsys.readouterr()
    assert main(["measure", str(folder), "--store", str(store)]) == 2
    assert "no config.yaml" in (err := capsys.readouterr().err) and "by its run id" in err


def test_measure_takes_the_last_checkpoint_of_a_stopped_sweep_run(tmp_path, capsys, monkeypatch,
                                                                   one_thread_runs):
    """A sweep run interrupted in its second epoch keeps no final weights, only its last
    checkpoint (step 4, the first epoch's end): `sgdlab measure` takes it by run id, by the
    checkpoint's path (absolute or relative) and by its folder; its top Hessian eigenvalue
    is the dense Hessian's of the checkpoint's model, recorded on the run at step 4. A warm
    start still takes only the path (the sweep that resumes the run overwrites the file)."""
    import torch

    import sgdlab.experiments.procedures.train as proc
    from sgdlab.config.run import build_from_config
    from sgdlab.errors import ConfigError
    from sgdlab.experiments.procedures.train import build
    from sgdlab.experiments.spec import resolve
    from sgdlab.experiments.sweep import artifacts_root, run_sweep
    from sgdlab.store import RunStore
    from sgdlab.testing import TINY_RUN, dense_hessian_reference, sgd_steps_then_interrupt
    from sgdlab.train.checkpoint import load_checkpoint

    (spec,) = resolve(_sweep("t-stopped", "a stopped run"), "cpu").expand()
    store = tmp_path / "s.sqlite"
    with monkeypatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(proc, "CHECKPOINT_SECONDS", 0)
        mp.setattr(torch.optim.SGD, "step", sgd_steps_then_interrupt(6))
        run_sweep([spec], store_path=str(store), workers=1, progress=None)
    (run,) = RunStore(store).list_runs()
    assert run["status"] == "interrupted"
    ckpt = artifacts_root(RunStore(store)) / spec.key / "checkpoint" / "last.pt"
    state = load_checkpoint(ckpt)
    assert state["loop"]["step"] == 4 and not (ckpt.parent.parent / "weights.pt").exists()
    ds, model, loss_fn, _ = build(spec.params, spec.seed)
    model.load_state_dict(state["model"])
    top = float(torch.linalg.eigvalsh(dense_hessian_reference(model, loss_fn, ds.train))[-1])
    for i, (cwd, target) in enumerate(((tmp_path, run["id"]), (tmp_path, str(ckpt)),
                                       (tmp_path, str(ckpt.parent)),
                                       (ckpt.parent.parent, "checkpoint/last.pt"))):
        monkeypatch.chdir(cwd)
        out = tmp_path / f"m{i}"
        assert main(["measure", target, "--store", str(store), "--what", "hessian",
                     "--subset", "0", "--k", "1", "--probes", "2", "--out", str(out)]) == 0, (
            target, capsys.readouterr().err)
        res = json.loads((out / "measurements.json").read_text())
        assert res["run_id"] == run["id"] and res["step"] == 4
        assert res["scalars"]["hess/top_1"] == pytest.approx(top, rel=1e-6)
    assert "measuring its last checkpoint" in capsys.readouterr().out
    recorded = RunStore(store).metrics(run["id"], "measure/hess/top_1")["measure/hess/top_1"]
    assert recorded[-1] == (4, pytest.approx(top, rel=1e-6))
    # another store does not hold the run the checkpoint records: named, with the way out
    RunStore(tmp_path / "other.sqlite").create_run({"name": "x"}, name="x")
    assert main(["measure", str(ckpt), "--store", str(tmp_path / "other.sqlite")]) == 2
    err = capsys.readouterr().err
    assert f"does not hold its run {run['id']}" in err and "--store PATH" in err
    tiny = {**TINY_RUN, "model": {**TINY_RUN["model"], "init_from": run["id"]}}
    with pytest.raises(ConfigError, match="its sweep resumes it from its last checkpoint"):
        build_from_config(tiny, store=str(store))
