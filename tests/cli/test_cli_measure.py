"""``sgdlab measure``'s options: refused before the checkpoint is read (the target need not
exist) when they would change nothing."""
from __future__ import annotations

import json
import math

import pytest

from sgdlab.cli.main import main
from sgdlab.testing import check_copies_recorder


def _trained_tiny(tmp_path, *, lr: str, exit_code: int):
    """A one-epoch run of Zhu's 1-6-6-6-1 MLP on the cubic data, its folder (``sgdlab train``
    exits with ``exit_code``: 3 for a diverging ``lr``)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: tiny\ndata: {name: cubic, seed: 0}\nmodel: {name: zhu-mlp-1-6-6-6-1}\n"
                   f"optimizer: {{name: sgd, lr: {lr}}}\n"
                   "train: {epochs: 1, batch_size: 4, threads: 1, progress: false}\n")
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--store", str(tmp_path / "s.sqlite"), "--out",
                 str(run)]) == exit_code
    return run


@pytest.mark.parametrize("argv,needle", [
    (["--what", "hessian", "--batches", "0"],
     "--batches applies to --what batch, not measured with --what hessian: it would change "
     "nothing (add the measurement to --what, or leave the option out)"),
    (["--what", "batch", "--k", "3", "--sigma", "0.1"],
     "--k applies to --what hessian, noise or alignment; --sigma applies to --what sharpness, "
     "not measured with --what batch: they would change nothing"),
    (["--what", "noise", "--probes", "5"], "--probes applies to --what hessian or alignment,"),
    (["--what", "hessian,noise", "--memory-budget", "1GB", "--extent", "2"],
     "--memory-budget applies to --what sharpness or surface; --extent applies to --what "
     "surface, not measured with --what hessian,noise"),
    (["--what", "surface", "--batch-curvature", "ggn"], "--batch-curvature applies to --what "
                                                        "batch, not measured with --what surface"),
    (["--what", "sharpness", "--check-copies"], "--check-copies applies to --what hessian, "
                                                "noise or alignment, not measured with --what "
                                                "sharpness"),
    (["--what", "surface", "--directions", "hessian", "--normalization", "layer"],
     "--normalization: a random-direction option, but --directions hessian (it applies to "
     "--directions random only)"),
    # the Hessian, the mini-batch statistics and the rest take no Σ to uncentre
    (["--what", "hessian,sharpness,batch", "--uncentred"],
     "--uncentred applies to --what noise or alignment, not measured with --what "
     "hessian,sharpness,batch: it would change nothing"),
])
def test_an_option_of_a_measurement_not_asked_for_is_refused(tmp_path, capsys, argv, needle):
    # it was ignored: `--batches 0` without `--what batch` measured the Hessian and said nothing
    assert main(["measure", str(tmp_path / "no-such-run"), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_an_option_of_a_measurement_asked_for_passes_to_the_checks_after(tmp_path, capsys):
    # the default --what (hessian, noise, alignment, sharpness) reads --k, --probes, --sigma
    assert main(["measure", str(tmp_path / "no-such-run"), "--k", "2", "--probes", "3",
                 "--sigma", "0.1", "--memory-budget", "1GB"]) == 2
    err = capsys.readouterr().err
    assert "applies to" not in err and "no-such-run" in err
    assert main(["measure", str(tmp_path), "--what", "surface,batch", "--directions", "hessian",
                 "--steps", "1", "--batches", "0"]) == 2
    assert "--steps must be >= 2, got 1" in capsys.readouterr().err


def test_the_checkpoint_of_a_diverged_run_is_refused_in_one_line(tmp_path, capsys):
    # each measurement failed on its non-finite loss with a traceback (FloatingPointError from
    # Lanczos, the noise or sharpness; ValueError from the surface's directions)
    run = _trained_tiny(tmp_path, lr="1.0e+30", exit_code=3)
    capsys.readouterr()
    for what in ("hessian", "surface"):
        assert main(["measure", str(run), "--what", what, "--out", str(tmp_path / what)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1, err
        assert ("last.pt (step 1): its loss on the measured examples is inf: there is nothing "
                "to measure") in err
        assert not (tmp_path / what).exists()


@pytest.mark.parametrize("model, label", [
    (lambda nn: nn.BatchNorm1d(4), "the model (BatchNorm1d)"),
    (lambda nn: nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)),
     "the model's layer '1' (BatchNorm1d)")])
def test_train_mode_names_the_model_itself_as_the_batch_norm(model, label):
    """--train-mode on a bare batch-norm model read "the model's the model (BatchNorm1d)"."""
    from torch import nn

    from sgdlab.cli.measure import _refuse_train_mode_batch_norm
    from sgdlab.errors import UserError

    with pytest.raises(UserError) as e:
        _refuse_train_mode_batch_norm(model(nn), True)
    assert str(e.value).startswith(f"--train-mode: {label} would normalise"), str(e.value)


def test_check_copies_reaches_every_top_k_and_is_recorded(tmp_path, capsys, monkeypatch):
    """--check-copies: the Hessian's top-k of hessian and alignment, and Σ's, are checked for
    copies a start vector misses (Lanczos' check_copies); measurements.json says whether.
    Measured with hessian, alignment takes hessian's top-k; alone, it runs its own Lanczos."""
    import sgdlab.measure.alignment as alignment
    import sgdlab.measure.curvature as curvature
    from sgdlab.measure.noise import GradientCovariance

    asked: list[tuple[str, object]] = []
    spy = check_copies_recorder(asked)
    monkeypatch.setattr(curvature, "lanczos", spy("hessian", curvature.lanczos))
    monkeypatch.setattr(alignment, "lanczos", spy("alignment", alignment.lanczos))
    monkeypatch.setattr(GradientCovariance, "eigenpairs",
                        spy("sigma", GradientCovariance.eigenpairs))
    run = _trained_tiny(tmp_path, lr="0.01", exit_code=0)
    argv = ["measure", str(run), "--what", "hessian,noise,alignment", "--k", "2", "--probes",
            "2"]
    for given, out in ((["--check-copies"], "checked"), ([], "plain")):
        asked.clear()
        assert main([*argv, *given, "--out", str(tmp_path / out)]) == 0
        res = json.loads((tmp_path / out / "measurements.json").read_text())
        assert res["check_copies"] is bool(given)
        # the bottom eigenvalue (one pair: a copy cannot change it) is not checked
        assert asked == [("hessian", bool(given)), ("hessian", None), ("sigma", bool(given)),
                         ("sigma", bool(given))]
        asked.clear()
        assert main([*argv[:3], "alignment", *argv[4:], *given,
                     "--out", str(tmp_path / f"{out}-alignment")]) == 0
        assert asked == [("sigma", bool(given)), ("alignment", bool(given))]
    capsys.readouterr()


def test_a_lanczos_that_did_not_converge_names_the_option_that_iterates_longer(tmp_path,
                                                                              capsys):
    # the warning said "raise num_iter", an argument of a Python call that sgdlab measure
    # had no option for
    run = _trained_tiny(tmp_path, lr="0.01", exit_code=0)
    capsys.readouterr()
    argv = ["measure", str(run), "--what", "hessian,alignment", "--k", "1", "--probes", "2"]
    # measured with hessian, alignment takes hessian's top-k: one warning names both
    for what, warned in (("hessian,alignment", ("hess/top_1 and align (the Hessian's top-k)",
                                                "hess/bottom_1")),
                         ("alignment", ("align (the Hessian's top-k)",))):
        assert main([*argv[:3], what, *argv[4:], "--lanczos-iter", "2",
                     "--out", str(tmp_path / f"short-{what}")]) == 0
        err = capsys.readouterr().err
        for values in warned:
            assert (f"sgdlab: warning: {values}: 1 eigenpair(s) not converged after 2 "
                    "iterations" in err), err
        assert (err.count("; raise --lanczos-iter above that\n") == len(warned)
                and "num_iter" not in err)
    # d = 97 iterations: the Krylov space is the whole space, exact
    assert main([*argv, "--lanczos-iter", "97", "--out", str(tmp_path / "long")]) == 0
    assert "not converged" not in capsys.readouterr().err
    assert main(["measure", str(run), "--what", "surface", "--directions", "hessian",
                 "--steps", "2", "--lanczos-iter", "2", "--out", str(tmp_path / "plane")]) == 0
    assert ("sgdlab: warning: surface (the Hessian's top-2 directions): 2 eigenpair(s) not "
            "converged after 2 iterations") in capsys.readouterr().err


def test_fewer_lanczos_iterations_than_eigenpairs_are_refused(tmp_path, capsys):
    assert main(["measure", str(tmp_path), "--k", "3", "--lanczos-iter", "2"]) == 2
    assert "--lanczos-iter must be >= --k (3), got 2" in capsys.readouterr().err
    assert main(["measure", str(tmp_path), "--what", "surface", "--directions", "hessian",
                 "--lanczos-iter", "1"]) == 2
    assert ("--lanczos-iter must be >= 2 (the surface's two directions), got 1"
            in capsys.readouterr().err)
    # random directions take no eigenvectors: the option would change nothing
    assert main(["measure", str(tmp_path), "--what", "surface", "--lanczos-iter", "50"]) == 2
    assert ("--lanczos-iter: of --what surface it applies to --directions hessian only"
            in capsys.readouterr().err)


def test_the_measured_spectra_name_their_dtypes_for_the_round_off_line(tmp_path, capsys,
                                                                     monkeypatch):
    import torch

    import sgdlab.report.figures.curvature as curvature

    run = _trained_tiny(tmp_path, lr="0.01", exit_code=0)
    calls = []
    figure = curvature.eigenspectrum_figure

    def recording(spectra, **kw):
        calls.append(kw)
        return figure(spectra, **kw)
    monkeypatch.setattr(curvature, "eigenspectrum_figure", recording)
    assert main(["measure", str(run), "--what", "hessian,noise", "--k", "2", "--probes", "2",
                 "--out", str(tmp_path / "m")]) == 0
    (kw,) = calls
    # Σ's rank threshold (its own dtype, d = 103 weights) and the Hessian's Lanczos in the
    # model's dtype
    assert kw["dims"] == {"D(x) = Σ": 103, "Hessian (top-k)": 103}
    assert set(kw["dtype"].values()) == {torch.float32}


def test_a_run_s_ggn_series_are_drawn_in_its_curvature_history(tmp_path, capsys,
                                                              monkeypatch):
    # the hessian instrument of operator ggn logs ggn/...: the curvature history of the
    # series recorded in training draws them as it draws hess/...
    import sgdlab.report.figures.curvature as curvature

    drawn, draw = [], curvature.curvature_history_figure
    monkeypatch.setattr(curvature, "curvature_history_figure",
                        lambda h, **kw: drawn.append(set(h)) or draw(h, **kw))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: tiny\ndata: {name: cubic, seed: 0}\nmodel: {name: zhu-mlp-1-6-6-6-1}\n"
                   "optimizer: {name: sgd, lr: 0.01}\n"
                   "train: {epochs: 1, batch_size: 4, threads: 1, progress: false}\n"
                   "measure: [{name: hessian, at: [0, 1], operator: ggn, eval_subset: 16}]\n")
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--store", str(tmp_path / "s.sqlite"), "--out",
                 str(run)]) == 0
    assert main(["measure", str(run), "--what", "noise", "--k", "1", "--store",
                 str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "curvature_history.png").exists()
    # the series the run recorded, not the measurement's own (measure/noise/...)
    assert drawn == [{"ggn/top_1"}]


def test_an_experiment_s_replicas_run_is_measured_at_its_master(tmp_path, capsys):
    """A run of the ``replicas`` procedure (chaudhari-parle, Elastic-SGD; its record says
    ``procedure: replicas``, not ``method: parle``) was refused as a run of a procedure that
    keeps no model, though its distributed mode keeps the master x̄ (``master.pt``): it is
    measured there, at step rounds · L, with its Parle batch size, and CABS takes the last
    lr it recorded (after its milestone: 0.01, not the configured 0.1), as for a run of
    ``sgdlab parle``; a plain run's checkpoint rule found no lr (CABS NaN)."""
    import torch

    from sgdlab.cli.measure import _checkpoint_lr
    from sgdlab.experiments.procedures.train import build
    from sgdlab.testing import SWEEP_REPLICA_PARAMS, dense_hessian_reference, sweep_replica_run

    store, run_id, spec = sweep_replica_run(tmp_path)
    run = store.get_run(run_id)
    (master,) = [a["path"] for a in run["artifacts"] if a["kind"] == "model"]
    assert main(["measure", run_id, "--store", str(store.path), "--what", "hessian,batch",
                 "--subset", "0", "--k", "1", "--probes", "2", "--batches", "2",
                 "--out", str(tmp_path / "m")]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "m" / "measurements.json").read_text())
    assert res["run_id"] == run_id and res["step"] == 3 * 2 and res["checkpoint"] == master
    assert res["scalars"]["batch/batch_size"] == 24
    assert store.metrics(run_id)["lr"][-1] == (6, pytest.approx(0.01))
    assert _checkpoint_lr({}, run["config"], store, run_id) == pytest.approx(0.01)
    assert math.isfinite(res["scalars"]["batch/cabs_batch_size"])

    data, model, loss_fn, _ = build(SWEEP_REPLICA_PARAMS, 3)
    model.load_state_dict(torch.load(master, weights_only=True))
    # the params' build is the model and data the run trained: its last evaluation, exactly
    with torch.no_grad():
        assert float(loss_fn(model(data.train[0]), data.train[1])) == pytest.approx(
            store.metrics(run_id)["train_loss"][-1][1], rel=1e-12)
    hessian = dense_hessian_reference(model, loss_fn, data.train)
    top = float(torch.linalg.eigvalsh(hessian)[-1])
    assert res["scalars"]["hess/top_1"] == pytest.approx(top, rel=1e-6)


def test_a_replicas_run_without_a_parle_batch_size_is_measured_at_the_default(tmp_path):
    """A ``replicas`` run's params hold its Parle settings as the experiment gave them (a
    record of ``sgdlab parle`` holds all of them): without ``batch_size`` it trained with
    ParleConfig's default, 128, which ``--what batch`` takes (it said the run's
    parle.batch_size is None). A stored record and master, no training."""
    import torch

    from sgdlab.experiments.procedures.train import build
    from sgdlab.experiments.spec import RunSpec
    from sgdlab.store import RunStore
    from sgdlab.testing import SWEEP_REPLICA_PARAMS
    from sgdlab.train.replicas import ParleConfig

    parle = {k: v for k, v in SWEEP_REPLICA_PARAMS["parle"].items() if k != "batch_size"}
    params = {**SWEEP_REPLICA_PARAMS, "dataset": {**SWEEP_REPLICA_PARAMS["dataset"],
                                                  "n_train": 160}, "parle": parle}
    store = RunStore(tmp_path / "runs.sqlite")
    spec = RunSpec("e", 1, "smoke", "parle", params, 3, "replicas")
    run_id = store.create_run(spec.config(), name=spec.run_name, experiment="e")
    master = tmp_path / "master.pt"
    torch.save(build(params, 3)[1].state_dict(), master)
    store.add_artifact(run_id, "model", str(master))
    store.log_many(run_id, [("lr", 2, 0.1), ("lr", 6, 0.01)])
    store.complete_run(run_id, "finished", summary={"steps": 6})
    assert main(["measure", run_id, "--store", str(store.path), "--what", "batch",
                 "--batches", "1", "--out", str(tmp_path / "m")]) == 0
    res = json.loads((tmp_path / "m" / "measurements.json").read_text())
    assert res["step"] == 6
    assert res["scalars"]["batch/batch_size"] == ParleConfig.batch_size == 128
    assert math.isfinite(res["scalars"]["batch/cabs_batch_size"])


def test_an_interrupted_distributed_run_is_listed_and_measured_at_its_checkpoint_set(
        tmp_path, capsys):
    """A run of the ``replicas`` procedure keeps the master of its last round saved in its
    ``sgdlab parle`` folder's checkpoint set, which its sweep continues. Its record says
    ``procedure: replicas``, not ``method: parle``, so it was taken for a ``train``
    procedure's run: ``runs list`` said its sweep reruns it from step 0, and ``sgdlab
    measure`` found no checkpoint. Both now read the set: round 2 of L = 2 steps, x̄ of that
    round; a warm start, which does not read a set, is refused saying so."""
    import torch

    from sgdlab.cli.measure import _checkpoint_lr, _rebuild
    from sgdlab.config.locate import locate_run
    from sgdlab.errors import UserError
    from sgdlab.experiments.sweep import artifacts_root
    from sgdlab.store import RunStore
    from sgdlab.store.folders import SWEEP_REPLICA_FOLDER, SWEEP_REPLICA_STORE
    from sgdlab.testing import sweep_replica_run

    store, run_id, spec = sweep_replica_run(tmp_path, stop_in_round=3)
    ckpt = (artifacts_root(store) / spec.key / SWEEP_REPLICA_FOLDER / "checkpoints"
            / "master.pt")
    assert store.get_run(run_id)["status"] == "interrupted" and ckpt.is_file()
    capsys.readouterr()
    assert main(["runs", "list", "--store", str(store.path)]) == 0
    listing = capsys.readouterr().out
    assert "4 (ckpt)" in listing and "(its sweep resumes it from its last checkpoint, step 4)" \
        in listing

    found = locate_run(run_id, store.path)
    assert (found.checkpoint, found.run_id, found.step) == (ckpt, run_id, 2 * 2)
    assert "measuring the master of its last checkpoint (round 2)" in capsys.readouterr().out
    model, _, _, step, _ = _rebuild(found.config, found.checkpoint, step=found.step)
    assert step == 4
    head = torch.load(ckpt, weights_only=True)
    assert head["round"] == 2
    for p, v in zip(model.parameters(), head["master"], strict=True):
        assert torch.equal(p, v)
    with pytest.raises(UserError, match="which a warm start does not read"):
        locate_run(run_id, store.path, rebuild=False)
    # its rows are in its own store until it ends, which CABS reads its lr from (it was NaN):
    # the last row up to the checkpoint's step, not one of a round after it (here one added
    # as a run checkpointing every 10 rounds logs rounds past its last checkpoint)
    own = ckpt.parent.parent / SWEEP_REPLICA_STORE
    private = RunStore(own)
    (rank_0_run,) = private.list_runs()
    assert private.metrics(rank_0_run["id"])["lr"] == [(2, 0.1), (4, 0.1)]
    private.log_metric(rank_0_run["id"], "lr", 6, 0.01)
    private.close()
    assert store.metrics(run_id).get("lr") is None
    assert _checkpoint_lr({}, found.config, store, run_id, 4) == 0.1
    assert _checkpoint_lr({}, found.config, store, run_id, 2) == 0.1
    assert _checkpoint_lr({}, found.config, store, run_id) == 0.01
    assert main(["measure", run_id, "--store", str(store.path), "--what", "batch",
                 "--batches", "1", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "(step 4)" in out and "CABS" not in out, out
    res = json.loads((tmp_path / "m" / "measurements.json").read_text())
    assert math.isfinite(res["scalars"]["batch/cabs_batch_size"])


@pytest.mark.parametrize("content", [None, b"", b"not a database" * 8])
def test_cabs_of_a_stopped_run_whose_own_store_cannot_be_read_has_no_lr_and_says_why(
        tmp_path, capsys, content):
    """The run's own store missing, empty or damaged: CABS has no lr (NaN, with its note), and
    ``sgdlab measure`` goes on; the error was raised after the measurements before CABS
    (Hessian, noise, ...) had been taken, and they were lost with it."""
    from sgdlab.cli.measure import _checkpoint_lr
    from sgdlab.store import RunStore
    from sgdlab.store.folders import SWEEP_REPLICA_STORE, sweep_replica_checkpoints
    from sgdlab.testing import SWEEP_REPLICA_PARAMS

    store = RunStore(tmp_path / "runs.sqlite")
    params = {k: v for k, v in SWEEP_REPLICA_PARAMS.items() if k != "mode"}
    cfg = {"procedure": "replicas", "run_key": "k", "params": params}
    own = sweep_replica_checkpoints(store.path, "k").parent / SWEEP_REPLICA_STORE
    own.parent.mkdir(parents=True)
    if content is not None:
        own.write_bytes(content)
    assert _checkpoint_lr({}, cfg, store, None, 4) is None
    err = capsys.readouterr().err
    if content is None:
        assert err == ""
    else:
        assert f"warning: cannot read the run's lr from its own store {own}: " in err, err


def test_a_replica_run_whose_own_store_holds_an_lr_of_zero_is_not_told_it_recorded_none(
        tmp_path):
    """CABS's note says why the lr is missing: 'recorded none' only where neither the record
    nor the run's own store holds one; an lr of 0 there is the 'not > 0' case."""
    from sgdlab.cli.measure import _batch_lr
    from sgdlab.store import RunStore
    from sgdlab.store.folders import SWEEP_REPLICA_STORE, sweep_replica_checkpoints
    from sgdlab.testing import SWEEP_REPLICA_PARAMS

    store = RunStore(tmp_path / "runs.sqlite")
    cfg = {"procedure": "replicas", "run_key": "k", "params": dict(SWEEP_REPLICA_PARAMS)}
    own = sweep_replica_checkpoints(store.path, "k").parent / SWEEP_REPLICA_STORE
    own.parent.mkdir(parents=True)
    assert _batch_lr({}, cfg, store, None, 4) == (None, True, None)
    private = RunStore(own)
    private.log_metric(private.create_run({"method": "parle"}), "lr", 2, 0.0)
    private.close()
    assert _batch_lr({}, cfg, store, None, 4) == (None, False, None)


def test_cabs_of_an_interrupted_replica_run_takes_the_lr_of_its_checkpoint_s_round(tmp_path):
    """A run checkpointing every 2 rounds and interrupted in round 4 has logged round 3 (step
    6) past its checkpoint (round 2, step 4): CABS of that checkpoint took round 3's lr, after
    a milestone the checkpoint's master never trained with."""
    from sgdlab.cli.measure import _checkpoint_lr
    from sgdlab.store import RunStore

    store = RunStore(tmp_path / "runs.sqlite")
    # a record of `sgdlab parle` (2 replicas, L = 2)
    cfg = {"data": {"name": "digits", "flatten": True, "n_train": 64},
           "model": {"name": "mlp", "widths": [8]}, "parle": {"replicas": 2, "L": 2},
           "rounds": 2, "method": "parle"}
    run_id = store.create_run(cfg)
    store.log_many(run_id, [("lr", 2, 0.1), ("lr", 4, 0.1), ("lr", 6, 0.01)])
    assert _checkpoint_lr({}, cfg, store, run_id, 4) == 0.1
    assert _checkpoint_lr({}, cfg, store, run_id, 6) == 0.01
    assert _checkpoint_lr({}, cfg, store, run_id, 1) is None      # no round before it
    assert _checkpoint_lr({}, cfg, store, run_id) == 0.01


def test_measurements_take_untimed_probe_blocks(tmp_path, monkeypatch):
    """The values ``sgdlab measure`` stores do not depend on the machine's load: its
    estimators run within ``reproducible_blocks`` (ruled, untimed probe blocks), as a
    training run's do, and leave it off after."""
    import sgdlab.cli.measure as measure
    from sgdlab.operators.blocking import blocks_reproducible

    run = _trained_tiny(tmp_path, lr="0.01", exit_code=0)
    seen = []
    hessian = measure._hessian

    def recording(m):
        seen.append(blocks_reproducible())
        return hessian(m)
    monkeypatch.setattr(measure, "_hessian", recording)
    assert main(["measure", str(run), "--what", "hessian", "--k", "2", "--probes", "2",
                 "--out", str(tmp_path / "m")]) == 0
    assert seen == [True] and not blocks_reproducible()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(run folder, store) of the one-epoch run of Zhu's 1-6-6-6-1 MLP on the cubic data (20
    training and 100 test examples, d = 103 weights), trained once for the tests below."""
    tmp = tmp_path_factory.mktemp("tiny")
    return _trained_tiny(tmp, lr="0.01", exit_code=0), tmp / "s.sqlite"


def _printed_scalars(out: str) -> dict[str, float]:
    """The ``  name/key   value`` lines ``sgdlab measure`` prints as each measurement ends."""
    import re

    return {m[1]: float(m[2]) for m in re.finditer(r"^  (\S+/\S+) +(\S+)$", out, re.M)}


def _float64_model_and_examples(run, split: str = "train", subset: int = 0, seed: int = 0):
    """The run's checkpointed model in float64, rebuilt from its config.yaml, and the examples
    ``--data split --subset subset --seed seed`` names: a fixed random subset drawn with
    ``torch.randperm`` seeded by ``--seed`` (all of the split for 0)."""
    import torch

    from sgdlab.config.io import load_config
    from sgdlab.config.run import build_from_config
    from sgdlab.train.checkpoint import load_checkpoint

    built = build_from_config(load_config(run / "config.yaml"))
    model = built.model
    model.load_state_dict(load_checkpoint(run / "checkpoints" / "last.pt")["model"])
    model = model.double().eval()
    x, y = built.data.train if split == "train" else built.data.test
    if subset:
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:subset]
        x, y = x[idx], y[idx]
    return model, built.loss_fn, (x.double(), y.double())


def test_printed_curvature_and_noise_are_the_dense_float64_values_of_the_seeded_subset(
        tiny_run, tmp_path, capsys):
    """Each printed number (and its measurements.json and run-store copy) is the one measured
    on the ``--subset`` that ``--seed`` draws: the top ``--k`` and bottom eigenvalues of the
    dense float64 Hessian, Hutchinson's trace within its standard error, the Frobenius norm,
    and of Σ = (1/N) Σᵢ (gᵢ − ḡ)(gᵢ − ḡ)ᵀ its trace, trace / d, top k and rank (/ d)."""
    import torch

    from sgdlab.store import RunStore
    from sgdlab.testing import (
        covariance_reference, dense_hessian_reference, per_sample_gradients_loop,
    )

    run, store = tiny_run
    capsys.readouterr()
    assert main(["measure", str(run), "--what", "hessian,noise", "--k", "3", "--probes", "300",
                 "--subset", "12", "--seed", "5", "--store", str(store),
                 "--out", str(tmp_path / "m")]) == 0
    printed = _printed_scalars(capsys.readouterr().out)
    res = json.loads((tmp_path / "m" / "measurements.json").read_text())
    assert res["num_samples"] == 12 and res["seed"] == 5 and res["data"] == "train"
    assert set(printed) == set(res["scalars"]) and "hess/top_4" not in printed
    for key, value in res["scalars"].items():
        assert printed[key] == pytest.approx(value, rel=1e-5), key
    stored = RunStore(store).metrics(res["run_id"])
    assert stored["measure/hess/top_1"] == [(res["step"], res["scalars"]["hess/top_1"])]

    model, loss_fn, data = _float64_model_and_examples(run, subset=12, seed=5)
    h = dense_hessian_reference(model, loss_fn, data)
    eig = torch.linalg.eigvalsh(h).flip(0)
    scale = float(eig.abs().max())
    for i in range(3):
        assert printed[f"hess/top_{i + 1}"] == pytest.approx(float(eig[i]), abs=1e-4 * scale)
    assert printed["hess/bottom_1"] == pytest.approx(float(eig[-1]), abs=1e-4 * scale)
    exact_trace = float(h.trace())
    assert 0 < printed["hess/trace_se"] < 0.2 * abs(exact_trace)
    assert abs(printed["hess/trace"] - exact_trace) < 4 * printed["hess/trace_se"]
    assert printed["hess/frobenius"] == pytest.approx(float(torch.linalg.norm(h)), rel=0.15)

    sigma = covariance_reference(per_sample_gradients_loop(model, loss_fn, data))
    vals = torch.linalg.eigvalsh(sigma).flip(0)
    d = sigma.shape[0]
    assert d == 103
    assert printed["noise/trace"] == pytest.approx(float(sigma.trace()), rel=1e-4)
    assert printed["noise/mean_eig"] == pytest.approx(float(sigma.trace()) / d, rel=1e-4)
    for i in range(3):
        assert printed[f"noise/top_{i + 1}"] == pytest.approx(float(vals[i]), rel=1e-3,
                                                              abs=1e-6 * float(vals[0]))
    # numpy's matrix_rank threshold in the model's float32, λ_max · d · eps: Σ's spectrum
    # decays smoothly through it, so float32 round-off decides the eigenvalues near it
    threshold = float(vals[0]) * d * torch.finfo(torch.float32).eps
    rank = printed["noise/rank"]
    assert int((vals > 10 * threshold).sum()) <= rank <= int((vals > threshold / 10).sum())
    assert rank <= 11      # centred: at most N − 1
    assert printed["noise/rank_fraction"] == pytest.approx(rank / d, rel=1e-5)


def _zhu_run64(tmp_path, *, optimizer: str = "{name: sgd, lr: 0.01}",
               schedule: str | None = None, steps: int = 0):
    """Zhu's 1-6-6-6-1 MLP on the cubic data in float64, trained ``steps`` steps (0: stored
    untrained) with ``optimizer`` under ``schedule`` (flow mappings; None: none): its run
    folder and store."""
    cfg = tmp_path / "tiny64.yaml"
    cfg.write_text("name: tiny64\ndata: {name: cubic, seed: 0}\nmodel: {name: zhu-mlp-1-6-6-6-1}\n"
                   f"optimizer: {optimizer}\n"
                   + (f"schedule: {schedule}\n" if schedule else "")
                   + (f"train: {{epochs: 1, max_steps: {steps}, " if steps else
                      "train: {epochs: 0, ")
                   + "batch_size: 4, dtype: float64, threads: 1, progress: false}\n")
    run, store = tmp_path / "run", tmp_path / "s.sqlite"
    assert main(["train", str(cfg), "--store", str(store), "--out", str(run)]) == 0
    return run, store


def test_noise_and_alignment_share_one_covariance(tmp_path, capsys, monkeypatch):
    """--what noise,alignment builds Σ (per-sample gradients) once, on the one set of examples,
    and stores the values each gives measured alone (float64)."""
    import sgdlab.measure.noise as noise

    builds = []
    for engine in ("per_sample_factors", "per_sample_gradients"):
        def counted(*args, real=getattr(noise, engine), **kwargs):
            builds.append(engine)
            return real(*args, **kwargs)
        monkeypatch.setattr(noise, engine, counted)
    run, store = _zhu_run64(tmp_path)
    res = {}
    for what in ("noise,alignment", "noise", "alignment"):
        builds.clear()
        probes = ["--probes", "4"] if "alignment" in what else []
        assert main(["measure", str(run), "--what", what, "--k", "3", *probes,
                     "--subset", "12", "--seed", "5", "--store", str(store),
                     "--out", str(tmp_path / what)]) == 0
        assert len(builds) == 1, (what, builds)
        res[what] = json.loads((tmp_path / what / "measurements.json").read_text())
    capsys.readouterr()
    both, alone = res["noise,alignment"], {**res["noise"]["scalars"],
                                           **res["alignment"]["scalars"]}
    assert both["scalars"].keys() == alone.keys()
    assert any(key.startswith("align/") for key in alone)
    for key, value in alone.items():
        assert both["scalars"][key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    for key, value in {**res["noise"]["arrays"], **res["alignment"]["arrays"]}.items():
        assert both["arrays"][key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_hessian_and_alignment_share_one_lanczos_run(tmp_path, capsys, monkeypatch):
    """--what hessian,alignment runs Lanczos for the Hessian's top-k once, on the one set of
    examples, and stores the values each gives measured alone (float64; ‖H‖_F by probes
    here, drawn where alignment's own Lanczos run leaves its generator)."""
    import sgdlab.measure.alignment as alignment
    import sgdlab.measure.curvature as curvature

    top_k = []
    for module in (curvature, alignment):
        def counted(*args, real=module.lanczos, **kwargs):
            if kwargs.get("which", "largest") == "largest":
                top_k.append(args[1])
            return real(*args, **kwargs)
        monkeypatch.setattr(module, "lanczos", counted)
    monkeypatch.setattr(alignment, "EXACT_FROBENIUS_MAX_DIM", 0)
    run, store = _zhu_run64(tmp_path)
    res = {}
    for what in ("hessian,alignment", "hessian", "alignment"):
        top_k.clear()
        assert main(["measure", str(run), "--what", what, "--k", "3", "--probes", "4",
                     "--subset", "12", "--seed", "5", "--check-copies", "--store", str(store),
                     "--out", str(tmp_path / what)]) == 0
        assert top_k == [3], (what, top_k)
        res[what] = json.loads((tmp_path / what / "measurements.json").read_text())
    capsys.readouterr()
    both = res["hessian,alignment"]
    alone = {part: {**res["hessian"][part], **res["alignment"][part]}
             for part in ("scalars", "arrays")}
    assert any(key.startswith("align/hess_norm_eig") for key in alone["scalars"])
    assert both["scalars"] == alone["scalars"] and both["arrays"] == alone["arrays"]


def test_uncentred_noise_and_alignment_are_the_python_calls_with_centred_false(tmp_path,
                                                                               capsys):
    """``--uncentred``: noise and alignment of a float64 run are those of
    ``gradient_covariance`` and ``sigma_hessian_alignment`` with ``centred=False`` on the same
    seeded subset, the noise the dense (1/N) Σᵢ gᵢgᵢᵀ = Σ + ḡḡᵀ; measurements.json records
    ``centred: false``."""
    import torch

    from sgdlab.measure.alignment import sigma_hessian_alignment
    from sgdlab.measure.noise import gradient_covariance
    from sgdlab.operators.blocking import reproducible_blocks
    from sgdlab.testing import (
        covariance_reference, empirical_fisher_reference, per_sample_gradients_loop,
    )

    run, store = _zhu_run64(tmp_path)
    capsys.readouterr()
    assert main(["measure", str(run), "--what", "noise,alignment", "--uncentred", "--k", "3",
                 "--subset", "12", "--seed", "5", "--store", str(store),
                 "--out", str(tmp_path / "m")]) == 0
    assert "Σ uncentred (E[g gᵀ] = Σ + ḡḡᵀ)" in capsys.readouterr().out
    res = json.loads((tmp_path / "m" / "measurements.json").read_text())
    assert res["centred"] is False

    model, loss_fn, data = _float64_model_and_examples(run, subset=12, seed=5)
    cov = gradient_covariance(model, loss_fn, data, centred=False)
    vals = cov.eigenpairs(3)[0]
    for i in range(3):
        assert res["scalars"][f"noise/top_{i + 1}"] == pytest.approx(float(vals[i]), rel=1e-9)
    assert res["arrays"]["noise/spectrum"] == pytest.approx(cov.spectrum().tolist(), rel=1e-9)
    grads = per_sample_gradients_loop(model, loss_fn, data)
    second_moment = empirical_fisher_reference(grads)
    assert res["scalars"]["noise/trace"] == pytest.approx(float(second_moment.trace()),
                                                          rel=1e-10)
    assert res["scalars"]["noise/rank"] == cov.rank()
    # not Σ: M = Σ + ḡḡᵀ, trace Σ + ‖ḡ‖², ‖ḡ‖² far from round-off here
    sigma_trace = float(covariance_reference(grads).trace())
    gbar_sq = float(grads.mean(0).square().sum())
    assert res["scalars"]["noise/trace"] == pytest.approx(sigma_trace + gbar_sq, rel=1e-10)
    assert gbar_sq > 0.1 * sigma_trace

    with reproducible_blocks():
        al = sigma_hessian_alignment(model, loss_fn, data, 3, num_probes=100, tol=1e-4,
                                     generator=torch.Generator().manual_seed(5),
                                     centred=False)
    for key, value in al.as_metrics("align").items():
        assert res["scalars"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert res["arrays"]["align/sigma_normalised"] == pytest.approx(
        al.sigma_normalised.tolist(), rel=1e-9)
    centred = sigma_hessian_alignment(model, loss_fn, data, 3, num_probes=100, tol=1e-4,
                                      generator=torch.Generator().manual_seed(5))
    assert res["scalars"]["align/sigma_norm_eig_1"] != pytest.approx(
        centred.as_metrics("align")["align/sigma_norm_eig_1"], rel=1e-6)


def test_data_test_measures_the_test_split(tiny_run, tmp_path, capsys):
    """``--data test --subset 0``: Σ of all 100 test examples, not of the training ones."""
    from sgdlab.testing import covariance_reference, per_sample_gradients_loop

    run, store = tiny_run
    capsys.readouterr()
    assert main(["measure", str(run), "--what", "noise", "--k", "1", "--data", "test",
                 "--subset", "0", "--store", str(store), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "on 100 test examples" in out
    model, loss_fn, data = _float64_model_and_examples(run, "test")
    sigma = covariance_reference(per_sample_gradients_loop(model, loss_fn, data))
    assert _printed_scalars(out)["noise/trace"] == pytest.approx(float(sigma.trace()),
                                                                 rel=1e-4)


def test_the_test_split_s_values_are_stored_beside_the_train_split_s(tiny_run, tmp_path,
                                                                     capsys):
    """``--data test`` after ``--data train`` at the same step: both splits' values in the
    store, the test split's as ``measure/test/...`` (they had replaced the train split's)."""
    from sgdlab.store import RunStore

    run, store = tiny_run
    scalars = {}
    for split in ("train", "test"):
        out = tmp_path / split
        assert main(["measure", str(run), "--what", "noise", "--k", "1", "--data", split,
                     "--store", str(store), "--out", str(out)]) == 0
        scalars[split] = json.loads((out / "measurements.json").read_text())
    assert scalars["train"]["step"] == scalars["test"]["step"]
    assert scalars["train"]["scalars"] != scalars["test"]["scalars"]
    stored = RunStore(store).metrics(scalars["train"]["run_id"])
    for split, prefix in (("train", "measure/"), ("test", "measure/test/")):
        res = scalars[split]
        for key, value in res["scalars"].items():
            assert stored[prefix + key] == [(res["step"], value)], (split, key)


@pytest.mark.parametrize("argv,last,note", [
    (["--what", "noise", "--k", "25"], "noise/top_20",
     "(noise/top_21..25 not measured (--k 25): Σ of N = 20 examples and d = 103 parameters has "
     "at most min(N, d) = 20 nonzero eigenvalues, the rest are 0; noise/top_1..20 are all there "
     "are)"),
    (["--what", "hessian", "--k", "104", "--probes", "2"], "hess/top_103",
     "(hess/top_104 not measured (--k 104): the Hessian of d = 103 parameters has 103 "
     "eigenvalues; hess/top_1..103 are all there are)")])
def test_a_top_k_cut_to_the_eigenvalues_there_are_says_so(tiny_run, tmp_path, capsys, argv,
                                                          last, note):
    """--k above the eigenvalues there are reported fewer top_i than asked and said nothing
    (alignment refuses such a --k: its residual counts k pairs of Σ)."""
    run, store = tiny_run
    capsys.readouterr()
    assert main(["measure", str(run), *argv, "--store", str(store),
                 "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert note in out and last in _printed_scalars(out)


def test_each_measurement_s_values_are_headed_by_their_scale_and_definitions(tiny_run,
                                                                             tmp_path, capsys):
    """The printed values said nothing of their scale: a line above each measurement's
    values says it once (per example, not summed; which Σ; the trace's standard error;
    sharpness's σ and ε and which is absolute or relative), with the options given."""
    run, store = tiny_run
    capsys.readouterr()
    assert main(["measure", str(run), "--what", "hessian,noise,sharpness", "--k", "1",
                 "--probes", "7", "--subset", "12", "--samples", "2", "--sigma", "0.03",
                 "--epsilon", "0.002", "--uncentred", "--store", str(store),
                 "--out", str(tmp_path / "m")]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = {}
    for name, prefix in (("hessian", "hess/"), ("noise", "noise/"),
                         ("sharpness", "sharpness/")):
        first = lines.index(f"  {name} ...") + 1
        end = next(i for i in range(first, len(lines)) if lines[i].startswith(f"  {prefix}"))
        block = lines[first:end]            # the head, wrapped to the width of a terminal
        assert all(len(line) <= 100 for line in block), block
        assert block[0].startswith(f"  ({prefix}: ") and block[-1].endswith(")"), block
        assert all(line.startswith("   ") for line in block[1:]), block
        heads[name] = " ".join(line.strip() for line in block)
    mean_loss = "the mean loss over the 12 examples (per example, not summed)"
    assert "eigenvalues of the Hessian H of L " + mean_loss in heads["hessian"]
    assert "estimates from 7 probes, trace_se the trace's standard error" in heads["hessian"]
    assert ("E[g gᵀ] = (1/N) Σᵢ gᵢ gᵢᵀ = Σ + ḡḡᵀ (uncentred) of the N = 12 per-example "
            "gradients gᵢ (a mini-batch gradient of B drawn with replacement has covariance "
            "Σ/B)") in heads["noise"]
    assert "σ = 0.03, absolute, expected_se its standard error over 2 samples" in (
        heads["sharpness"])
    assert "ε = 0.002, relative, in percent (Keskar et al.)" in heads["sharpness"]
    assert sum(line.startswith("  (") for line in lines) == 3     # once each, no more


def _spy(monkeypatch, module, name: str, calls: dict) -> None:
    """Replace ``module.name`` by a wrapper that records its bound arguments, the model's
    train/eval mode at the call and the result."""
    import inspect

    real = getattr(module, name)

    def spy(*args, **kwargs):
        bound = inspect.signature(real).bind(*args, **kwargs).arguments
        mode = {"training": bound["model"].training} if "model" in bound else {}
        out = real(*args, **kwargs)
        calls.setdefault(name, []).append({**bound, **mode, "result": out})
        return out
    monkeypatch.setattr(module, name, spy)


def test_each_option_reaches_the_measurement_it_names(tiny_run, tmp_path, capsys,
                                                      monkeypatch):
    """--k, --probes, --lanczos-iter, --sigma, --epsilon, --gamma, --samples and --seed reach
    the estimators (each generator seeded with --seed), in the mode --train-mode asks for,
    and the printed sharpness values are the ones they return."""
    import sgdlab.measure.alignment as alignment
    import sgdlab.measure.curvature as curvature
    import sgdlab.measure.sharpness as sharpness

    calls: dict = {}
    for module, names in ((curvature, ("lanczos", "hutchinson_trace", "frobenius_norm")),
                          (alignment, ("sigma_hessian_alignment",)),
                          (sharpness, ("expected_sharpness", "epsilon_sharpness",
                                       "local_entropy"))):
        for name in names:
            _spy(monkeypatch, module, name, calls)
    run, store = tiny_run
    capsys.readouterr()
    assert main(["measure", str(run), "--what", "hessian,alignment,sharpness", "--k", "2",
                 "--probes", "7", "--lanczos-iter", "40", "--sigma", "0.02", "--epsilon",
                 "0.003", "--gamma", "0.0002", "--samples", "4", "--seed", "9", "--subset",
                 "0", "--train-mode", "--store", str(store), "--out", str(tmp_path / "m")]) == 0
    printed = _printed_scalars(capsys.readouterr().out)
    top, bottom = calls["lanczos"]
    assert (top["k"], top.get("which", "largest"), top["num_iter"]) == (2, "largest", 40)
    assert (bottom["k"], bottom["which"], bottom["num_iter"]) == (1, "smallest", 40)
    (tr,), (fro,), (al,) = (calls["hutchinson_trace"], calls["frobenius_norm"],
                            calls["sigma_hessian_alignment"])
    assert tr["num_probes"] == fro["num_probes"] == al["num_probes"] == 7
    assert (al["k"], al["num_iter"]) == (2, 40)
    (es,), (ke,), (le,) = (calls["expected_sharpness"], calls["epsilon_sharpness"],
                           calls["local_entropy"])
    assert (es["sigma"], es["num_samples"]) == (0.02, 4)
    assert ke["epsilon"] == 0.003
    assert (le["gamma"], le["num_samples"]) == (0.0002, 4)
    for call in (top, bottom, tr, fro, al, es, ke, le):
        assert call["generator"].initial_seed() == 9
    for call in (al, es, ke, le):      # --subset 0: the 20 training examples, in train mode
        assert len(call["data"][0]) == 20 and call["training"]
    assert printed["sharpness/expected"] == pytest.approx(es["result"].value, rel=1e-5)
    assert printed["sharpness/epsilon"] == pytest.approx(ke["result"].sharpness, rel=1e-5)
    assert printed["sharpness/local_entropy"] == pytest.approx(le["result"].width, rel=1e-5)
    assert printed["hess/trace"] == pytest.approx(tr["result"].value, rel=1e-5)


def test_measurements_json_holds_the_settings_the_values_depend_on(tiny_run, tmp_path,
                                                                   capsys):
    """``settings``: the options of the measurements made, as given or as defaulted (the
    batch size the run's train.batch_size, Lanczos' iterations null for its default), the
    examples, mode, dtype and device, and the passes' fixed settings; strict JSON that reads
    back equal."""
    from sgdlab.strict_json import dumps
    from sgdlab.testing import strict_loads

    run, store = tiny_run
    assert main(["measure", str(run), "--what", "hessian,noise,alignment,surface,batch",
                 "--uncentred", "--k", "2", "--probes", "3", "--normalization", "layer",
                 "--extent", "0.5", "--steps", "3", "--batches", "2", "--subset", "12",
                 "--seed", "4", "--store", str(store), "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    text = (tmp_path / "m" / "measurements.json").read_text()
    settings = strict_loads(text)["settings"]
    assert settings == {
        "data": "train", "subset": 12, "seed": 4, "train_mode": False, "dtype": "float32",
        "device": "cpu", "k": 2, "probes": 3, "lanczos_iter": None, "centred": False,
        "check_copies": False,
        "directions": "random", "normalization": "layer", "bias_bn": "zero", "extent": 0.5,
        "steps": 3, "bn_stats": "keep", "memory_budget": None, "batch_size": 4,
        "batches": 2, "batch_curvature": None, "lanczos_tol": 1e-4, "density_probes": 5,
        "density_max_iter": 80}
    assert strict_loads(dumps(settings)) == settings


@pytest.mark.parametrize("argv, problem", [
    (["--probes", "0"], "--probes must be >= 1, got 0"),
    (["--what", "sharpness", "--samples", "0"], "--samples must be >= 1, got 0"),
    (["--what", "sharpness", "--epsilon", "0"], "--epsilon must be finite and > 0, got 0"),
    (["--what", "sharpness", "--sigma", "-0.01"], "--sigma must be finite and >= 0, got -0.01"),
    (["--what", "sharpness", "--sigma", "inf"], "--sigma must be finite and >= 0, got inf"),
    (["--what", "sharpness", "--gamma=-0.001"], "--gamma must be finite and >= 0, got -0.001"),
    (["--what", "surface", "--extent", "0"], "--extent must be finite and > 0, got 0"),
    (["--what", "noise,alignment", "--k", "2", "--lanczos-iter", "1"],
     "--lanczos-iter must be >= --k (2), got 1"),
    (["--seed=-1"], "--seed must be an int in 0..2**32 - 1 (as a run config's seed), got -1"),
    (["--seed", str(2**64)], "--seed must be an int in 0..2**32 - 1 (as a run config's seed), "
                             f"got {2**64}"),
])
def test_a_value_out_of_range_is_refused_at_its_boundary(tmp_path, capsys, argv, problem):
    # checked before the checkpoint is read: the target need not exist
    assert main(["measure", str(tmp_path / "no-such-run"), *argv]) == 2
    assert capsys.readouterr().err == f"sgdlab: error: {problem}\n"


@pytest.mark.parametrize("argv", [["--what", "sharpness", "--sigma", "0", "--gamma", "0"],
                                  ["--subset", "0", "--probes", "1", "--samples", "1"],
                                  ["--what", "hessian", "--k", "2", "--lanczos-iter", "2"]])
def test_a_value_at_its_boundary_is_accepted(tmp_path, capsys, argv):
    # σ = 0 and γ = 0 are the unperturbed loss, --subset 0 all examples: the options pass
    # their checks and the command goes on to the (missing) run
    assert main(["measure", str(tmp_path / "no-such-run"), *argv]) == 2
    err = capsys.readouterr().err
    assert "must be" not in err and "no-such-run" in err, err


def test_surface_options_reach_the_plane_and_its_printed_losses_are_the_grid_s(
        tiny_run, tmp_path, capsys, monkeypatch):
    """--normalization, --bias-bn (each direction), --extent, --steps and --bn-stats reach
    the loss surface; the printed mean loss is the mean of the written grid and the origin's
    loss is the float64 loss of the model on the seeded subset."""
    import torch

    import sgdlab.measure.surface as surface

    calls: dict = {}
    for name in ("random_direction", "loss_surface"):
        _spy(monkeypatch, surface, name, calls)
    run, store = tiny_run
    capsys.readouterr()
    assert main(["measure", str(run), "--what", "surface", "--normalization", "layer",
                 "--bias-bn", "weights", "--extent", "0.3", "--steps", "5", "--bn-stats",
                 "recompute", "--subset", "12", "--seed", "3", "--store", str(store),
                 "--out", str(tmp_path / "m")]) == 0
    printed = _printed_scalars(capsys.readouterr().out)
    assert [(c["normalization"], c["bias_bn"], c["generator"].initial_seed())
            for c in calls["random_direction"]] == [("layer", "weights", 3)] * 2
    (surf,) = calls["loss_surface"]
    assert (surf["extent"], surf["steps"], surf["bn_stats"]) == (0.3, 5, "recompute")
    grid = json.loads((tmp_path / "m" / "measurements.json").read_text())["surface"][
        "train_loss"]
    assert len(grid) == 5 and all(len(row) == 5 for row in grid)
    mean = float(torch.tensor(grid, dtype=torch.float64).mean())
    assert printed["surface/mean_loss"] == pytest.approx(mean, rel=1e-5)
    model, loss_fn, (x, y) = _float64_model_and_examples(run, subset=12, seed=3)
    with torch.no_grad():
        origin = float(loss_fn(model(x), y))
    assert printed["surface/origin_loss"] == pytest.approx(origin, rel=1e-5)


def test_batch_options_reach_each_mini_batch_and_the_printed_values_are_their_means(
        tiny_run, tmp_path, capsys, monkeypatch):
    """--batches mini-batches of --batch-size examples, each drawn without repeats from the
    measured ones with --batch-curvature: the printed statistics are the means over them."""
    import importlib

    import torch

    # the module (the package's attribute of that name is the function)
    module = importlib.import_module("sgdlab.measure.batch_statistics")
    calls: dict = {}
    _spy(monkeypatch, module, "batch_statistics", calls)
    run, store = tiny_run
    capsys.readouterr()
    assert main(["measure", str(run), "--what", "batch", "--batch-size", "6", "--batches",
                 "3", "--batch-curvature", "hessian", "--subset", "0", "--store", str(store),
                 "--out", str(tmp_path / "m")]) == 0
    printed = _printed_scalars(capsys.readouterr().out)
    rows = calls["batch_statistics"]
    assert len(rows) == 3
    for row in rows:
        x = row["batch"][0]
        assert len(x) == 6 and len(torch.unique(x, dim=0)) == 6
        assert row["curvature"] == "hessian"
    for key in ("norm_test", "inner_product_test", "mean_gsnr", "trace_cov"):
        mean = sum(float(getattr(r["result"], key)) for r in rows) / 3
        assert printed[f"batch/{key}"] == pytest.approx(mean, rel=1e-5), key
    assert printed["batch/batch_size"] == 6


def test_batch_means_leave_out_the_batches_where_a_statistic_is_undefined(monkeypatch):
    """``--what batch`` averages each statistic over the batches that define it (NaN: a zero
    gradient's tests, no coordinate with variance for the GSNR), as the GSNR and EB means leave
    out their undefined coordinates (docs/design/batch-statistics.md); NaN only when no batch
    defines it. A plain mean gave NaN for one undefined batch, zeros would pull it to 0."""
    import importlib
    import math
    from types import SimpleNamespace

    import torch

    from sgdlab.cli.measure import _batch_scalars

    module = importlib.import_module("sgdlab.measure.batch_statistics")

    rows = iter([{"batch/norm_test": 1.0, "batch/mean_gsnr": math.nan,
                  "batch/trace_cov": 2.0, "batch/grad_sq_unbiased": math.nan},
                 {"batch/norm_test": math.nan, "batch/mean_gsnr": math.nan,
                  "batch/trace_cov": 4.0, "batch/grad_sq_unbiased": 1.0},
                 {"batch/norm_test": 4.0, "batch/mean_gsnr": math.nan,
                  "batch/trace_cov": 9.0, "batch/grad_sq_unbiased": 3.0}])
    monkeypatch.setattr(module, "batch_statistics", lambda *a, **k: SimpleNamespace(
        as_metrics=lambda: next(rows)))
    monkeypatch.setattr(module, "takeuchi_information",
                        lambda *a, **k: SimpleNamespace(diagonal=0.5, trace=0.25))
    data = (torch.zeros(6, 2), torch.zeros(6, dtype=torch.long))
    out = _batch_scalars(SimpleNamespace(batches=3, batch_curvature=None), 2, None, None,
                         None, data, torch.Generator().manual_seed(0))
    assert out["batch/norm_test"] == (1.0 + 4.0) / 2
    assert math.isnan(out["batch/mean_gsnr"])
    # the noise scale: the ratio of the two means, each over its own defined batches
    assert out["batch/trace_cov"] == 5.0 and out["batch/grad_sq_unbiased"] == 2.0
    assert out["batch/noise_scale"] == 5.0 / 2.0


# the random schedule of the checkpoints whose CABS step is read
_RANDOM = "{name: random, width: 0.5, seed: 1}"


def test_cabs_of_a_checkpoint_under_the_random_schedule_takes_the_instruments_step(tmp_path):
    """The checkpoint's ``lr`` under the ``random`` schedule is the last step's draw η·α;
    ``--what batch`` takes the step the training instruments take (gradient_step_size given
    the schedule the checkpoint holds), η(1 + w²/3): CABS of one batch of all examples
    against a direct call at that step, float64."""
    from sgdlab.measure import batch_statistics
    from sgdlab.train.checkpoint import load_checkpoint

    run, store = _zhu_run64(tmp_path, optimizer="{name: sgd, lr: 0.05}", schedule=_RANDOM,
                            steps=3)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    noise_step = 0.05 * (1 + 0.5**2 / 3)
    draw = state["optimizer"]["param_groups"][0]["lr"]
    assert draw != pytest.approx(noise_step, rel=1e-3)      # the draw is not the step
    model, loss_fn, data = _float64_model_and_examples(run)
    n = len(data[0])
    assert main(["measure", str(run), "--store", str(store), "--what", "batch",
                 "--batch-size", str(n), "--batches", "1", "--subset", "0",
                 "--out", str(tmp_path / "m")]) == 0
    cabs = json.loads((tmp_path / "m" / "measurements.json").read_text())["scalars"][
        "batch/cabs_batch_size"]
    ref = batch_statistics(model, loss_fn, data, lr=noise_step)
    assert cabs == pytest.approx(ref.cabs_batch_size, rel=1e-10)


def test_a_random_schedule_stepped_at_epoch_ends_leaves_the_checkpoints_draw_the_step(
        tmp_path):
    """train() with the ``random`` schedule stepped at epoch ends (``schedule_every``): its
    draw holds for the epoch and is the step, as the training instruments take it; stepped
    each step, η(1 + w²/3) (float64)."""
    import torch
    from torch import nn

    from sgdlab.cli.measure import _checkpoint_lr
    from sgdlab.optim.protocols import RandomLR
    from sgdlab.testing import toy_dataset
    from sgdlab.train import train
    from sgdlab.train.checkpoint import CHECKPOINT_NAME, load_checkpoint

    for every in ("epoch", "step"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 3)).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        folder = tmp_path / every
        train(model, nn.CrossEntropyLoss(), toy_dataset().to(dtype=torch.float64), opt,
              epochs=2, batch_size=20,
              schedule=RandomLR(opt, width=1.0, seed=0), schedule_every=every,
              checkpoint_dir=folder, progress=False)
        state = load_checkpoint(folder / CHECKPOINT_NAME)
        draw = state["optimizer"]["param_groups"][0]["lr"]
        assert draw != pytest.approx(0.4 / 3, rel=1e-3)
        assert _checkpoint_lr(state, {}, None, None) == pytest.approx(
            draw if every == "epoch" else 0.4 / 3, rel=1e-12)


def test_measure_batch_refuses_a_step_with_no_sgd_noise_before_measuring(tmp_path, capsys):
    """A checkpoint whose step has no constant SGD step of the same noise (the random
    schedule's draw on a momentum buffer) is refused as the training instruments refuse it,
    before anything is measured or written; its CABS was computed with the saved lr."""
    run, store = _zhu_run64(tmp_path, optimizer="{name: sgd, lr: 0.05, momentum: 0.9}",
                            schedule=_RANDOM, steps=3)
    capsys.readouterr()
    assert main(["measure", str(run), "--store", str(store), "--what", "hessian,batch",
                 "--out", str(tmp_path / "m")]) == 2
    assert "the random schedule with momentum 0.9" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_measure_batch_of_an_adam_checkpoint_writes_the_statistics_that_need_no_step(
        tmp_path, capsys):
    """Adam's step divides each coordinate by a running root mean square, so CABS has no η
    for it: ``--what batch`` writes every other statistic, equal to a direct call without lr
    on one batch of all examples (float64), CABS null, and prints a note naming Adam."""
    from sgdlab.measure import batch_statistics

    run, store = _zhu_run64(tmp_path, optimizer="{name: adam, lr: 0.01}", steps=3)
    model, loss_fn, data = _float64_model_and_examples(run)
    n = len(data[0])
    capsys.readouterr()
    assert main(["measure", str(run), "--store", str(store), "--what", "batch",
                 "--batch-size", str(n), "--batches", "1", "--subset", "0",
                 "--out", str(tmp_path / "m")]) == 0
    assert ("(batch/cabs_batch_size is NaN (null in measurements.json): optimizer adam "
            "divides each coordinate") in capsys.readouterr().out
    got = json.loads((tmp_path / "m" / "measurements.json").read_text())["scalars"]
    ref = batch_statistics(model, loss_fn, data, lr=None).as_metrics()
    assert got.pop("batch/cabs_batch_size") is None
    assert math.isnan(ref.pop("batch/cabs_batch_size"))
    assert {k: got[k] for k in ref} == pytest.approx(ref, rel=1e-10)


def test_a_switch_checkpoints_batch_step_is_the_next_steps_optimizers():
    """``switch``'s state holds both optimizers: ``--what batch`` reads the one that takes the
    checkpoint's next step, RMSprop before the switch (no η: left out, named for the note)
    and SGD's lr after it."""
    import torch

    from sgdlab.cli.measure import _batch_lr
    from sgdlab.optim import build_optimizer

    p = [torch.nn.Parameter(torch.zeros(3))]
    opt = build_optimizer("switch", p, first="rmsprop", second="sgd", switch_step=1,
                          first_hyper={"lr": 0.01}, second_hyper={"lr": 0.05})
    assert _batch_lr({"optimizer": opt.state_dict()}, {}, None, None) == (None, False,
                                                                          "rmsprop")
    p[0].grad = torch.ones(3)
    opt.step()
    assert _batch_lr({"optimizer": opt.state_dict()}, {}, None, None) == (0.05, False, None)


def test_a_run_trained_on_a_device_this_machine_lacks_is_measured_on_the_cpu(tiny_run,
                                                                             tmp_path, capsys):
    # a run trained on a GPU, its folder copied to a machine without it, was refused
    # ("train.device: 'cuda' requested but CUDA is not available"), with no way to measure it
    import json
    import shutil

    run, store = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = copy / "config.yaml"
    assert "device: cpu" in cfg.read_text()
    cfg.write_text(cfg.read_text().replace("device: cpu", "device: cuda:99"))
    capsys.readouterr()
    assert main(["measure", str(copy), "--what", "noise", "--k", "1", "--store", str(store),
                 "--out", str(tmp_path / "m")]) == 0
    assert ("the run trained on cuda:99, which this machine lacks" in capsys.readouterr().err)
    settings = json.loads((tmp_path / "m" / "measurements.json").read_text())["settings"]
    assert settings["device"] == "cpu"


def test_the_test_split_of_a_data_file_without_one_is_named_with_the_split_there_is(tmp_path,
                                                                                   capsys):
    # "dataset has no test examples" named neither the option nor what to measure instead
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 1, generator=g)
    torch.save({"x_train": x, "y_train": x ** 3}, tmp_path / "d.pt")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: t\ndata: {{file: {tmp_path / 'd.pt'}}}\n"
                   "model: {name: zhu-mlp-1-6-6-6-1}\noptimizer: {name: sgd, lr: 0.01}\n"
                   "train: {epochs: 1, batch_size: 4, threads: 1, progress: false}\n")
    store = str(tmp_path / "s.sqlite")
    assert main(["train", str(cfg), "--store", store, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["measure", str(tmp_path / "run"), "--data", "test", "--what", "noise",
                 "--store", store]) == 2
    assert ("--data test: the run's dataset has no test examples (e.g. a data file without "
            "x_test, y_test); measure the train split (--data train)") in capsys.readouterr().err


@pytest.mark.parametrize("argv,given", [
    ([], "the run's train.batch_size (--batch-size left out) is 4"),
    (["--batch-size", "5"], "--batch-size is 5")])
def test_a_batch_larger_than_the_examples_measured_names_both_ways_out(tiny_run, tmp_path,
                                                                       capsys, argv, given):
    # "--batch-size must be in [2, 3]" blamed an option not given for the run's batch size
    run, store = tiny_run
    capsys.readouterr()
    assert main(["measure", str(run), "--what", "batch", "--subset", "3", *argv, "--store",
                 str(store), "--out", str(tmp_path / "m")]) == 2
    assert (f"--what batch: {given}, more than the 3 examples measured: give --batch-size B "
            "<= 3, or measure more examples (--subset N; 0: all)") in capsys.readouterr().err
