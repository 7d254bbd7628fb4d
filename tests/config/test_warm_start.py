"""Warm starts (``model.init_from``): the model starts from another run's checkpoint."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sgdlab.config import build_from_config, validate_config
from sgdlab.config.runner import run_config
from sgdlab.config.warm_start import warm_start_record, weights_sha256
from sgdlab.errors import ConfigError
from sgdlab.store import RunStore
from sgdlab.testing import unique_prefix
from sgdlab.train.checkpoint import load_checkpoint
from sgdlab.train.loop import train

# batch norm: its running statistics (buffers) are carried too
BN = {"name": "bn", "data": {"name": "cubic", "seed": 0},
      "model": {"name": "mlp", "options": {"widths": [8], "batchnorm": True}},
      "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
      "train": {"epochs": 2, "batch_size": 4, "threads": 1, "progress": False}}


def _with(cfg: dict, **model) -> dict:
    return {**cfg, "model": {**cfg["model"], **model}}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished run of BN (seed 0) in its own store: (store path, run id, checkpoint)."""
    tmp = tmp_path_factory.mktemp("source")
    store = tmp / "runs.sqlite"
    outcome = run_config(BN, out_dir=tmp / "src", store=store, progress=False)
    return store, outcome.run_id, tmp / "src" / "checkpoints" / "last.pt"


def test_the_model_starts_at_the_checkpoint_s_weights_and_buffers_exactly(source):
    store, rid, ckpt = source
    saved = load_checkpoint(ckpt)["model"]
    # another seed: its own initial weights differ, the loaded ones replace them (a prefix
    # unique among the runs the module's other tests add to the store)
    cfg = {**_with(BN, init_from=unique_prefix(rid, store)), "train": {**BN["train"], "seed": 5}}
    built = build_from_config(cfg, store=store)
    state = built.model.state_dict()
    assert state.keys() == saved.keys() and any("running_mean" in k for k in state)
    for k in saved:
        assert torch.equal(state[k], saved[k]), k
    fresh = build_from_config({**BN, "train": cfg["train"]}).model.state_dict()
    assert not all(torch.equal(fresh[k], saved[k]) for k in saved)
    assert warm_start_record(cfg["model"], store) == {
        "init_from": rid, "run_id": rid, "checkpoint": str(ckpt),
        "step": load_checkpoint(ckpt)["loop"]["step"], "sha256": weights_sha256(saved)}


def test_training_from_it_equals_training_a_model_given_the_state_dict_by_hand(source,
                                                                              tmp_path):
    """Bit for bit, under other settings (lr, momentum): the optimizer starts afresh."""
    store, rid, ckpt = source
    cfg = {**BN, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.5}}
    warm = run_config(_with(cfg, init_from=str(ckpt.parent.parent)), out_dir=tmp_path / "w",
                      store=store, progress=False)
    by_hand = build_from_config(cfg)
    by_hand.model.load_state_dict(load_checkpoint(ckpt)["model"])
    result = train(*by_hand[:4], schedule=by_hand.schedule, callbacks=by_hand.callbacks,
                   **by_hand.train_kwargs)
    ours = load_checkpoint(tmp_path / "w" / "checkpoints")["model"]
    theirs = by_hand.model.state_dict()
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k
    assert warm.result.steps == result.steps and warm.result.final == result.final
    # and it did move from the source (a test that cannot fail otherwise)
    assert not torch.equal(ours["net.1.weight"], load_checkpoint(ckpt)["model"]["net.1.weight"])


def test_the_stored_config_records_the_source_run_step_and_weights_hash(source, tmp_path):
    store, rid, ckpt = source
    outcome = run_config(_with(BN, init_from=unique_prefix(rid, store)), out_dir=tmp_path / "w",
                         store=store, progress=False)
    model = RunStore(store).get_run(outcome.run_id)["config"]["model"]
    state = load_checkpoint(ckpt)
    assert model["init_from"] == rid                # the full id: a prefix may become ambiguous
    assert model["warm_start"] == {"init_from": rid, "run_id": rid, "checkpoint": str(ckpt),
                                   "step": int(state["loop"]["step"]),
                                   "sha256": weights_sha256(state["model"])}
    assert validate_config(RunStore(store).get_run(outcome.run_id)["config"])  # it re-validates
    # a run without a warm start keeps the config it had (no new keys)
    assert set(validate_config(BN)["model"]) == {"name", "options"}


def test_weights_sha256_tells_one_changed_value_and_a_renamed_entry():
    a = {"w": torch.zeros(3), "b": torch.ones(2)}
    assert weights_sha256(a) == weights_sha256({k: v.clone() for k, v in a.items()})
    b = {"w": torch.tensor([0.0, 0.0, 1e-30]), "b": torch.ones(2)}
    assert weights_sha256(a) != weights_sha256(b)
    assert weights_sha256(a) != weights_sha256({"v": a["w"], "b": a["b"]})
    assert weights_sha256(a) != weights_sha256({k: v.double() for k, v in a.items()})


def test_weights_sha256_tells_the_same_values_in_another_shape():
    # its docstring: each entry's name, dtype, shape and bytes; (2, 3) and (3, 2) share bytes
    assert weights_sha256({"w": torch.zeros(2, 3)}) != weights_sha256({"w": torch.zeros(3, 2)})
    assert weights_sha256({"w": torch.zeros(6)}) != weights_sha256({"w": torch.zeros(1, 6)})


def _refused(cfg: dict, store, *words: str) -> str:
    with pytest.raises(ConfigError) as e:
        build_from_config(cfg, store=store)
    msg = str(e.value)
    assert msg.startswith("model.init_from: ") and all(w in msg for w in words), msg
    return msg


def test_no_such_file_or_run_is_refused_naming_it(source, tmp_path):
    store, _, _ = source
    _refused(_with(BN, init_from="nope"), store, "'nope' is no file or folder",
             "no run 'nope'")
    _refused(_with(BN, init_from=str(tmp_path / "gone.pt")), tmp_path / "no.sqlite",
             "gone.pt", "no run store")
    (tmp_path / "empty").mkdir()
    _refused(_with(BN, init_from=str(tmp_path / "empty")), store, "no checkpoint in")


def test_a_run_without_a_checkpoint_is_refused(source, tmp_path):
    store, _, _ = source
    other = tmp_path / "runs.sqlite"
    outcome = run_config(BN, out_dir=tmp_path / "r", store=other, progress=False)
    (tmp_path / "r" / "checkpoints" / "last.pt").unlink()
    _refused(_with(BN, init_from=outcome.run_id), other,
             f"run {outcome.run_id} has no checkpoint on disk")
    s = RunStore(other)
    bare = s.create_run({"name": "metrics only"}, name="m")   # a run that keeps no model
    _refused(_with(BN, init_from=bare), other, f"run {bare} has no checkpoint")


def test_another_architecture_is_refused_listing_the_first_names(source):
    store, rid, _ = source
    deeper = {**BN, "model": {"name": "mlp", "options": {"widths": [8, 4], "batchnorm": True}}}
    msg = _refused(_with(deeper, init_from=rid), store, "does not fit the model of this config",
                   f"run {rid}", "missing: net.5.weight, net.5.bias, net.5.running_mean (and ",
                   "mis-shaped: net.4.weight (checkpoint [1, 8], model [4, 8]), net.4.bias "
                   "(checkpoint [1], model [4])")
    assert "unexpected" not in msg
    plain = {**BN, "model": {"name": "mlp", "options": {"widths": [8]}}}   # no batch norm
    _refused(_with(plain, init_from=rid), store, "missing: net.3.weight, net.3.bias;",
             "unexpected: net.2.weight, net.2.bias, net.2.running_mean (and 4 more)")


def test_a_file_that_is_not_an_sgdlab_checkpoint_is_refused(source, tmp_path):
    store, _, ckpt = source
    plain = tmp_path / "state_dict.pt"
    torch.save(load_checkpoint(ckpt)["model"], plain)       # a bare state dict
    _refused(_with(BN, init_from=str(plain)), store, "is not an sgdlab checkpoint")
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    _refused(_with(BN, init_from=str(text)), store, "not a checkpoint file")
    noloop = tmp_path / "noloop.pt"
    torch.save({"format": 1, "model": load_checkpoint(ckpt)["model"]}, noloop)
    _refused(_with(BN, init_from=str(noloop)), store, "not a checkpoint of `sgdlab train`")


def test_a_refused_warm_start_records_no_run(source, tmp_path):
    store = tmp_path / "runs.sqlite"
    with pytest.raises(ConfigError, match="model.init_from"):
        run_config(_with(BN, init_from="nope"), out_dir=tmp_path / "o", store=source[0])
    with pytest.raises(ConfigError, match="model.init_from"):
        run_config(_with(BN, init_from=str(tmp_path / "x.pt")), store=store)
    assert not store.exists() and not (tmp_path / "o").exists()
    assert len(RunStore(source[0]).list_runs()) >= 1     # (the source alone, or others')


def test_a_recorded_hash_that_the_checkpoint_no_longer_has_is_refused(source, tmp_path):
    store, rid, ckpt = source
    record = warm_start_record({"init_from": rid}, store)
    wrong = {**record, "sha256": "0" * 64}
    _refused(_with(BN, init_from=rid, warm_start=wrong), store,
             "not those this run started from", "remove model.warm_start")
    with pytest.raises(ConfigError, match="not those this run started from"):
        run_config(_with(BN, init_from=rid, warm_start=wrong), out_dir=tmp_path / "o",
                   store=store)
    built = build_from_config(_with(BN, init_from=rid, warm_start=record), store=store)
    assert torch.equal(built.model.state_dict()["net.1.weight"],
                       load_checkpoint(ckpt)["model"]["net.1.weight"])
    with pytest.raises(ConfigError, match="model.warm_start: records a warm start, but "
                                          "model.init_from is not set"):
        validate_config(_with(BN, warm_start=record))


def test_a_damaged_config_beside_the_checkpoint_is_not_read(source, tmp_path):
    """The model is the config's own: the source folder's config.yaml plays no part."""
    store, _, ckpt = source
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(ckpt.read_bytes())
    (tmp_path / "run" / "config.yaml").write_text("model: [unclosed\n")
    built = build_from_config(_with(BN, init_from=str(tmp_path / "run")), store=store)
    saved = load_checkpoint(ckpt)["model"]
    for k, v in built.model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_init_false_leaves_the_seed_s_weights(source):
    store, rid, _ = source
    built = build_from_config(_with(BN, init_from="nope"), store=store, init=False)
    fresh = build_from_config(BN).model.state_dict()
    for k, v in built.model.state_dict().items():
        assert torch.equal(v, fresh[k]), k


# -- sources whose checkpoint is not kept: a sweep's finished runs, a parle run's master --

def _sweep(epochs: int = 2) -> dict:
    """TINY_RUN's data, model and optimizer as an experiment of the ``train`` procedure: a run
    that finishes and one whose learning rate makes it diverge."""
    from sgdlab.testing import TINY_RUN

    return {"name": "t-weights", "version": 1, "description": "final weights",
            "analysis": "compare_groups", "procedure": "train",
            "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"},
            "base": {"dataset": {"name": TINY_RUN["data"]["name"]},
                     "data_seed": TINY_RUN["data"]["seed"], "model": TINY_RUN["model"],
                     "optimizer": TINY_RUN["optimizer"],
                     "batch_size": TINY_RUN["train"]["batch_size"], "epochs": epochs},
            "runs": [{"label": "ok"},
                     {"label": "blowup", "params": {"optimizer": {"name": "sgd", "lr": 1e4}}}],
            "seeds": [0], "options": {"table": [["train_loss", "final train loss"]]}}


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory):
    """The sweep of :func:`_sweep`, run in this process with a checkpoint at every epoch end;
    each run's last checkpoint is copied aside before the driver removes it. Returns (store,
    {label: run}, {label: the model state of its last checkpoint})."""
    import shutil

    import sgdlab.experiments.procedures.train as proc
    from sgdlab.experiments.spec import resolve
    from sgdlab.experiments.sweep import load_runs, run_sweep
    from sgdlab.experiments.worker import CHECKPOINT_DIR

    tmp = tmp_path_factory.mktemp("sweep")
    store, kept, remove = tmp / "s.sqlite", {}, shutil.rmtree

    def keeping(path, *a, **kw):
        if Path(path).name == CHECKPOINT_DIR and (Path(path) / "last.pt").is_file():
            kept[Path(path).parent.name] = load_checkpoint(Path(path) / "last.pt")
        return remove(path, *a, **kw)

    spec = resolve(_sweep(), "cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(proc, "CHECKPOINT_SECONDS", 0)
        mp.setattr(shutil, "rmtree", keeping)
        mp.setenv("SGDLAB_THREADS", "1")
        run_sweep(spec.expand(), store_path=str(store), workers=1, progress=None)
    runs, missing = load_runs(spec.expand(), store_path=str(store))
    assert not missing
    by_label = {r.label: r for r in runs}
    return store, by_label, {lab: kept[r.key] for lab, r in by_label.items()}


def _tiny(**model) -> dict:
    from sgdlab.testing import TINY_RUN

    return {**TINY_RUN, "model": {**TINY_RUN["model"], **model},
            "train": {**TINY_RUN["train"], "threads": 1, "progress": False}}


def test_a_finished_sweep_run_starts_a_run_from_its_final_weights(sweep_runs):
    """Its checkpoint is removed; the weights it keeps are its last checkpoint's, entry for
    entry, found by run id, prefix and run folder."""
    from sgdlab.experiments.sweep import artifacts_root

    store, runs, last = sweep_runs
    run, final = runs["ok"], last["ok"]["model"]
    assert run.status == "finished"
    folder = artifacts_root(RunStore(store)) / run.key
    assert not (folder / "checkpoint").exists() and (folder / "weights.pt").is_file()
    for init_from in (run.run_id, unique_prefix(run.run_id, store), str(folder)):
        built = build_from_config(_tiny(init_from=init_from), store=store)
        state = built.model.state_dict()
        assert state.keys() == final.keys()
        for k in final:
            assert torch.equal(state[k], final[k]), (init_from, k)
    step = last["ok"]["loop"]["step"]
    # 2 epochs of 4 batches of 5 (of cubic's 20 training points)
    assert step == run.summary["steps"] and step == 8
    assert warm_start_record({"init_from": run.run_id}, store) == {
        "init_from": run.run_id, "run_id": run.run_id,
        "checkpoint": str(folder / "weights.pt"), "step": step,
        "sha256": weights_sha256(final)}
    # only the model: no optimizer state, a fraction of the checkpoint's size
    assert set(load_checkpoint(folder / "weights.pt")) == {"format", "kind", "model", "loop"}


def test_the_final_weights_of_a_diverged_sweep_run_are_refused(sweep_runs):
    # finite (the run stopped before the step that would have made them non-finite), but
    # their loss is not: a run started from them was recorded as diverged at step 0
    store, runs, _ = sweep_runs
    run = runs["blowup"]
    assert run.status == "diverged"
    _refused(_tiny(init_from=run.run_id), store, f"(run {run.run_id}, step "
             f"{run.summary['steps']}) holds the weights its run diverged on (",
             "a run started from them diverges at its first step")


def test_a_run_warm_started_from_a_sweep_run_resumes_from_its_own_checkpoint(
        sweep_runs, tmp_path, monkeypatch):
    """Interrupted in its second epoch and resumed with the source's weights file gone: it
    continues from its own checkpoint (step 4) and ends where the uninterrupted run did."""
    from sgdlab.config.runner import resume_run
    from sgdlab.testing import sgd_steps_then_interrupt

    store, runs, _ = sweep_runs
    cfg = _tiny(init_from=runs["ok"].run_id)
    whole = run_config(cfg, out_dir=tmp_path / "whole", store=store, progress=False)
    step = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", sgd_steps_then_interrupt(6))
    with pytest.raises(KeyboardInterrupt):
        run_config(cfg, out_dir=tmp_path / "cut", store=store, progress=False)
    monkeypatch.setattr(torch.optim.SGD, "step", step)
    (cut,) = [r for r in RunStore(store).list_runs() if r["status"] == "interrupted"
              and r["id"] != whole.run_id]
    weights = Path(RunStore(store).get_run(runs["ok"].run_id)["artifacts"][-1]["path"])
    weights.rename(tmp_path / "aside.pt")
    try:
        resumed = resume_run(cut["id"], store=RunStore(store), progress=False)
    finally:
        (tmp_path / "aside.pt").rename(weights)
    assert resumed.result.steps == whole.result.steps == 8
    ours = load_checkpoint(tmp_path / "cut" / "checkpoints")["model"]
    theirs = load_checkpoint(tmp_path / "whole" / "checkpoints")["model"]
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k


def test_a_sweep_run_without_final_weights_is_refused_naming_why(sweep_runs, tmp_path):
    store, runs, last = sweep_runs
    s = RunStore(store)
    # a run that stopped before any checkpoint, as its sweep records it
    config = s.get_run(runs["ok"].run_id)["config"]
    stopped = s.create_run({**config, "run_key": "0" * 20}, name="ok|seed=0",
                           experiment="t-weights", status="interrupted")
    _refused(_tiny(init_from=stopped), store, f"run {stopped}", "interrupted",
             "only a finished or diverged run keeps them", "it has no checkpoint either")
    # one that left a checkpoint: named, and a warm start takes it as a path
    from sgdlab.experiments.sweep import artifacts_root
    from sgdlab.train.checkpoint import save_checkpoint

    ckpt = artifacts_root(s) / ("0" * 20) / "checkpoint" / "last.pt"
    save_checkpoint(ckpt, {k: v for k, v in last["ok"].items() if k != "format"})
    _refused(_tiny(init_from=stopped), store, "its sweep resumes it from its last checkpoint, "
             f"{ckpt} (a warm start takes that file as a path)")
    built = build_from_config(_tiny(init_from=str(ckpt)), store=store).model.state_dict()
    assert all(torch.equal(built[k], v) for k, v in last["ok"]["model"].items())
    gone = tmp_path / "weights.pt"
    moved = Path(s.get_run(runs["ok"].run_id)["artifacts"][-1]["path"])
    assert moved.name == "weights.pt"
    moved.rename(gone)
    try:
        _refused(_tiny(init_from=runs["ok"].run_id), store, "has no final weights on disk",
                 "is gone")
    finally:
        gone.rename(moved)


def test_weights_that_are_not_finite_are_refused(tmp_path):
    from sgdlab.train.checkpoint import save_weights

    model = build_from_config(_tiny()).model
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")
    save_weights(tmp_path / "weights.pt", model, 7)
    _refused(_tiny(init_from=str(tmp_path)), tmp_path / "no.sqlite",
             f"final weights {str(tmp_path / 'weights.pt')!r} holds values that are not "
             "finite (in net.1.weight): the run diverged")


def test_a_finished_parle_run_starts_a_run_from_its_master(tmp_path, capsys):
    """By run id or --out folder: its master.pt (x̄, the replicas' averaged buffers), at step
    rounds · L; an unfinished one, whose master only its checkpoint set gives, is refused."""
    import json
    import shutil

    from sgdlab.cli.main import main

    store, out = tmp_path / "runs.sqlite", tmp_path / "out"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": {"name": "digits", "flatten": True, "n_train": 64},
                               "model": {"name": "mlp", "widths": [8]},
                               "parle": {"replicas": 2, "L": 2}, "rounds": 2,
                               "store": str(store)}))
    assert main(["parle", str(cfg), "--out", str(out)]) == 0, capsys.readouterr().err
    rid = json.loads((out / "results.json").read_text())["run_id"]
    master = torch.load(out / "master.pt", weights_only=True)
    train_cfg = {"name": "from-master",
                 "data": {"name": "digits", "options": {"flatten": True, "n_train": 64}},
                 "model": {"name": "mlp", "options": {"widths": [8]}},
                 "optimizer": {"name": "sgd", "lr": 0.05},
                 "train": {"epochs": 1, "batch_size": 16, "threads": 1, "progress": False}}
    for init_from in (rid[:-1], str(out)):
        state = build_from_config(_with(train_cfg, init_from=init_from),
                                  store=store).model.state_dict()
        assert state.keys() == master.keys()
        for k in master:
            assert torch.equal(state[k], master[k]), (init_from, k)
    assert warm_start_record({"init_from": rid}, store) == {
        "init_from": rid, "run_id": rid, "checkpoint": str(out / "master.pt"),
        "step": 2 * 2, "sha256": weights_sha256(master)}
    # its master.pt gone, the master of its last checkpoint set is there for measure only
    (out / "master.pt").unlink()
    _refused(_with(train_cfg, init_from=rid), store, f"run {rid} is a run of `sgdlab parle` "
             "without its master.pt", "only in its last checkpoint set")
    shutil.rmtree(out / "checkpoints")
    _refused(_with(train_cfg, init_from=rid), store, f"replica run {rid} has no master "
             "weights on disk")


def test_only_a_run_that_diverged_on_its_loss_refuses_its_last_weights(tmp_path):
    # a callback's non-finite numbers (the loss finite) and a record without a step count
    # refused every checkpoint of the run as the weights it diverged on
    import json
    from types import SimpleNamespace

    from sgdlab.config.warm_start import _diverged_on

    found = SimpleNamespace(run_id="r1", store=None, folder=tmp_path)
    loss = "non-finite mini-batch loss (inf) at step 8 (epoch 2, the weights after 8 steps)"
    measurement = "non-finite values in a measurement after step 8 (epoch 2): NaN in Hv"
    for message, steps, at, why in [(loss, 8, 8, loss), (loss, 8, 4, None),
                                    (loss, None, 8, None), (measurement, 8, 8, None)]:
        (tmp_path / "results.json").write_text(json.dumps(
            {"run_id": "r1", "status": "diverged", "message": message, "steps": steps}))
        assert _diverged_on({"loop": {"step": at}}, found) == why, (message, steps, at)


def test_a_replica_stopped_by_another_replica_s_loss_keeps_weights_a_warm_start_takes(tmp_path):
    # Parle over a communicator: both replicas keep x, the last finite step's weights; the one
    # whose own loss was non-finite (or overflowed times the loss scale) is refused as any run
    # that diverged on its loss, the one stopped by another replica's loss is not (its own
    # losses at x and at every inner iterate were finite). Messages as the loop records them.
    import json
    from types import SimpleNamespace

    from sgdlab.config.warm_start import _diverged_on

    found = SimpleNamespace(run_id="r1", store=None, folder=tmp_path)
    own = ("non-finite mini-batch loss (nan) at step 1 (epoch 0, the weights after 1 step); "
           "stopped before the next step")
    scaled = ("non-finite mini-batch loss times the loss scale 4 (49984.0 x 4 overflowed to "
              "inf) at step 2 (epoch 2, the weights after 2 steps); stopped before the next step")
    other = ("another replica's mini-batch loss was non-finite at step 1 (epoch 0, the weights "
             "after 1 step); stopped before the next step")
    for message, why in [(own, own), (scaled, scaled), (other, None)]:
        (tmp_path / "results.json").write_text(json.dumps(
            {"run_id": "r1", "status": "diverged", "message": message, "steps": 1}))
        assert _diverged_on({"loop": {"step": 2}}, found) == why, message
