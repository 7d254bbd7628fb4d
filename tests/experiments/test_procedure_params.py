"""A run parameter of the wrong type or range in an experiment file is refused when the sweep
is planned, naming the run and the parameter, not by every run with Python's own message."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from sgdlab.data import load_dataset
from sgdlab.errors import ConfigError
from sgdlab.experiments.procedures import get_procedure, number_problem
from sgdlab.experiments.procedures.train import MODEL_FILE, final_weights
from sgdlab.experiments.spec import catalogue_files, read_file, resolve
from sgdlab.experiments.worker import RunContext
from sgdlab.models import build_model
from sgdlab.store import RunStore
from sgdlab.train.checkpoint import load_weights, save_weights

RAW = {name: read_file(catalogue_files()[name]) for name in (
    "chaudhari-double-well", "chaudhari-spin-glass", "chaudhari-pde-smoothing",
    "chaudhari-parle", "jastrzebski-interpolation")}


@pytest.mark.parametrize("name, key, value, message", [
    ("chaudhari-double-well", "chains", "lots", "chains must be a positive integer, got 'lots'"),
    ("chaudhari-double-well", "chains", 2.5, "chains must be a positive integer, got 2.5"),
    ("chaudhari-double-well", "dt", 0, "dt must be a finite number > 0, got 0"),
    ("chaudhari-double-well", "burn_time", -1, "burn_time must be a finite number >= 0"),
    ("chaudhari-spin-glass", "starts", "many", "starts must be a positive integer"),
    # a bool is named as one: "got True" read as if True were no number at all
    ("chaudhari-spin-glass", "tol", True,
     r"tol must be a finite number > 0, not a bool \(True\)"),
    ("chaudhari-double-well", "chains", True,
     r"chains must be a positive integer, not a bool \(True\)"),
    ("chaudhari-parle", "eval_every", False,
     r"eval_every must be a positive integer or null, not a bool \(False\)"),
    ("chaudhari-pde-smoothing", "horizon", "abc", "horizon must be a finite number > 0"),
    ("chaudhari-pde-smoothing", "points", "lots", "points must be a positive integer"),
    ("chaudhari-parle", "epochs", "two", "epochs must be a finite number > 0, got 'two'"),
    ("chaudhari-parle", "eval_every", "x", "eval_every must be a positive integer or null"),
])
def test_a_wrong_number_in_the_base_names_the_run_and_the_parameter(name, key, value, message):
    raw = copy.deepcopy(RAW[name])
    raw["base"][key] = value
    for scale in ("smoke", "cpu", "paper"):
        raw["scales"].get(scale, {}).get("base", {}).pop(key, None)
    with pytest.raises(ConfigError, match=rf"{name}\[smoke\] run '[^']+': {message}"):
        resolve(raw, "smoke")


def test_an_unknown_parle_key_is_named_by_its_path_in_the_run():
    raw = copy.deepcopy(RAW["chaudhari-parle"])
    raw["base"]["parle"]["lrr"] = 0.1
    with pytest.raises(ConfigError, match=r"^chaudhari-parle\[smoke\] run '[^']+': parle\.lrr: "
                                          r"unknown key \(did you mean lr\?\) \(given at "
                                          r"base\.parle, scales\.smoke\.base\.parle, "
                                          r"scales\.smoke\.runs\[0\]\.params\.parle\)$"):
        resolve(raw, "smoke")


# a train run's params: an MLP on a data file, one epoch of SGD
TRAIN_PARAMS = {"dataset": {"file": "blobs.pt"}, "model": {"name": "mlp"},
                "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1, "batch_size": 8}


def test_a_data_file_takes_no_other_keys_as_in_a_run_config():
    # `dataset: {file: PATH}`, a run config's `data: {file: PATH}`: the tensors are the data,
    # nothing to draw or pass on; an unknown name still says that a plugin registers one's own
    train = get_procedure("train")
    params = TRAIN_PARAMS
    train.validate(params, "e[cpu] run 'a'")
    with pytest.raises(ConfigError, match=r"^e\[cpu\] run 'a': dataset\.file: a data file "
                                          r"takes no other keys, got dataset\.n_train, "
                                          r"data_seed \(the whole mapping is dataset: "
                                          r"\{file: PATH\}\)$"):
        train.validate({**params, "dataset": {"file": "blobs.pt", "n_train": 8},
                        "data_seed": 1}, "e[cpu] run 'a'")
    with pytest.raises(ConfigError, match=r"dataset\.sha256: .*pattern"):
        train.validate({**params, "dataset": {"file": "blobs.pt", "sha256": "abc"}}, "e")
    with pytest.raises(ConfigError, match=r"'dataset' must be a mapping with a 'name' \(or, "
                                          r"for a data file of your own, a 'file'\); it gives "
                                          r"n_train$"):
        train.validate({**params, "dataset": {"n_train": 8}}, "e[cpu] run 'a'")
    # a misspelt 'file' or 'name' was not named: the message said what a dataset needs only
    with pytest.raises(ConfigError, match=r"a 'file'\); it gives fle \(did you mean file\?\)$"):
        train.validate({**params, "dataset": {"fle": "blobs.pt"}}, "e[cpu] run 'a'")
    with pytest.raises(ConfigError, match=r"unknown dataset 'my-blobs'; .*--plugin"):
        train.validate({**params, "dataset": {"name": "my-blobs"}}, "e[cpu] run 'a'")


def test_a_section_of_the_wrong_shape_says_what_it_gives():
    # a mapping without its 'name' was said to need one, not what it held; a mapping given
    # for a list was read key by key
    train = get_procedure("train")
    params = {**TRAIN_PARAMS, "dataset": {"name": "digits"}}
    train.validate(params, "e")
    with pytest.raises(ConfigError, match=r"^e: 'model' must be a mapping with a 'name'; it gives "
                                          r"nme, widths \(did you mean name\?\)$"):
        train.validate({**params, "model": {"nme": "mlp", "widths": [4]}}, "e")
    with pytest.raises(ConfigError, match=r"^e: 'optimizer' must be a mapping with a 'name', "
                                          r"got 'sgd'$"):
        train.validate({**params, "optimizer": "sgd"}, "e")
    # a mapping's keys were read as its items: "measure[0]: must be a mapping, got 'name'"
    with pytest.raises(ConfigError, match=r"^e: measure must be a list of mappings \(- \{name: "
                                          r"\.\.\.\} per instrument\), got \{'name': "):
        train.validate({**params, "measure": {"name": "hessian", "every": 2}}, "e")
    with pytest.raises(ConfigError, match=r"^e: final must be a list of mappings .* per "
                                          r"measurement\), got 'hessian_top'$"):
        train.validate({**params, "final": "hessian_top"}, "e")


def test_a_misspelt_option_of_a_grid_axis_names_the_axis():
    raw = copy.deepcopy(read_file(catalogue_files()["jastrzebski-ratio-grid"]))
    grid = raw["scales"]["smoke"]["grid"]
    grid["optimizer.lrr"] = grid.pop("optimizer.lr")
    with pytest.raises(ConfigError, match=r"optimizer\.lrr: unknown key \(did you mean lr\?\) "
                                          r"\(the grid's axis 'optimizer\.lrr' sets it\)$"):
        resolve(raw, "smoke")


def test_an_unknown_p_spin_regime_is_refused_with_the_closest():
    raw = copy.deepcopy(RAW["chaudhari-spin-glass"])
    raw["runs"][0]["params"]["regime"] = "glasy"
    with pytest.raises(ConfigError, match=r"unknown p-spin regime 'glasy' \(did you mean "
                                          r"glassy\?\); choose from glassy, critical, trivial"):
        resolve(raw, "smoke")


def test_interpolation_samples_are_checked_and_null_is_accepted():
    raw = copy.deepcopy(RAW["jastrzebski-interpolation"])
    run = next(r for r in raw["runs"] if "samples" in r.get("params", {}))
    run["params"]["samples"] = None
    resolve(raw, "cpu")
    run["params"]["samples"] = "all"
    with pytest.raises(ConfigError, match="samples must be a positive integer or null"):
        resolve(raw, "cpu")


@pytest.mark.parametrize("value, rule, ok", [
    (3, "int>0", True), (0, "int>0", False), (3.0, "int>0", False), (None, "int>0", False),
    (None, "int>0|null", True), (-2.5, "number", True), (float("inf"), "number", False),
    (float("nan"), "number>=0", False), (0, "number>=0", True), (0.0, "number>0", False),
    (False, "number", False), ("1", "number", False)])
def test_number_rules(value, rule, ok):
    assert (number_problem(value, rule) is None) == ok


def test_the_train_procedure_names_its_settings_as_a_run_config_does():
    params = {"dataset": {"name": "cubic", "n_train": 30}, "data_seed": 2,
              "model": {"name": "zhu-mlp-1-6-6-6-1"}, "optimizer": {"name": "sgd", "lr": 0.1},
              "batch_size": "full", "epochs": 3, "eval_every_steps": 5, "save_model": True,
              "final": [{"kind": "hessian_top"}]}
    s = get_procedure("train").training_settings(params, 4)
    assert s["data"] == {"name": "cubic", "seed": 2, "options": {"n_train": 30}}
    assert s["model"] == {"name": "zhu-mlp-1-6-6-6-1", "options": {}}
    assert (s["loss"], s["schedule"]) == ("auto", {"name": "constant"})
    assert {k: s["train"][k] for k in ("seed", "batch_size", "epochs", "eval_every",
                                       "eval_every_steps")} == {
        "seed": 4, "batch_size": "full", "epochs": 3, "eval_every": 1, "eval_every_steps": 5}
    assert "final" not in s and "save_model" not in s["train"]
    # a model option a run config refuses (null for a number): no settings, not a failure
    bad = {**params, "model": {"name": "small-fc", "input_size": None}}
    assert get_procedure("train").training_settings(bad, 0) is None


# 20 digits, a float64 MLP of width 5, plain SGD: the train procedure's runs below by hand
TRAIN = {"dataset": {"name": "digits", "n_train": 20, "n_test": 10},
         "model": {"name": "mlp", "widths": [5]}, "dtype": "float64", "eval_every": 0}


def _train_run(params: dict, seed: int, tmp_path, name: str):
    """The ``train`` procedure run on ``params`` at ``seed`` into a fresh store:
    (outcome, store, run id)."""
    store = RunStore(str(tmp_path / "runs.sqlite"))
    run_id = store.create_run({"t": 1}, name=name)
    ctx = RunContext(store=store, run_id=run_id, progress=None, device=None,
                     artifact_dir=tmp_path, dependencies={}, checkpoint_dir=None)
    out = get_procedure("train").run(SimpleNamespace(params=params, seed=seed), ctx)
    return out, store, run_id


def _train_start(seed: int):
    """TRAIN's data set and its model as ``torch.manual_seed(seed)`` initialises it."""
    ds = load_dataset("digits", n_train=20, n_test=10).to(dtype=torch.float64)
    torch.manual_seed(seed)
    return ds, build_model("mlp", ds.input_shape, ds.num_outputs, widths=[5]).to(torch.float64)


def test_a_train_run_is_minibatch_sgd_from_the_seeds_weights_and_batch_order(tmp_path):
    """The ``train`` procedure's run by hand (float64): weights from
    ``torch.manual_seed(seed)``, each epoch a fresh permutation of the training set from a
    generator seeded with the run seed, batches of 8, 8 and the leftover 4, and
    p ← p − lr·∇ mean cross-entropy; ``max_steps`` caps the run at 5 of its 6 steps."""
    seed, lr = 3, 0.5
    params = {**TRAIN, "optimizer": {"name": "sgd", "lr": lr}, "batch_size": 8, "epochs": 2,
              "max_steps": 5}
    out, store, run_id = _train_run(params, seed, tmp_path, "sgd")
    assert out.status == "finished" and out.summary["steps"] == 5
    _assert_stored_weights(store, run_id, _sgd_by_hand(seed, lambda t: lr, steps=5))


def _sgd_by_hand(seed: int, lr_at, steps: int) -> torch.nn.Module:
    """TRAIN's model after ``steps`` steps of mini-batch SGD at ``lr_at(t)``, 2 epochs of
    batches 8, 8 and 4 from a permutation per epoch drawn from a generator seeded ``seed``."""
    ds, net = _train_start(seed)
    gen, t = torch.Generator().manual_seed(seed), 0
    for _ in range(2):
        perm = torch.randperm(20, generator=gen)
        for idx in (perm[:8], perm[8:16], perm[16:]):
            if t == steps:
                break
            loss = torch.nn.functional.cross_entropy(net(ds.x_train[idx]), ds.y_train[idx])
            grads = torch.autograd.grad(loss, list(net.parameters()))
            with torch.no_grad():
                for p, g in zip(net.parameters(), grads):
                    p -= lr_at(t) * g
            t += 1
    return net


def _assert_stored_weights(store, run_id: str, net: torch.nn.Module) -> None:
    (path,) = store.artifacts(run_id, "model")
    weights = load_weights(path)["model"]
    for name, p in net.state_dict().items():
        torch.testing.assert_close(weights[name], p, rtol=0, atol=1e-12)


def test_a_schedule_spans_the_steps_the_run_takes_when_max_steps_is_beyond_them(tmp_path):
    """``max_steps: 100`` over 2 epochs of 3 steps: the run takes 6 steps, so a trapezoid
    without ``anneal`` (warmup 0, hold 0, end_factor 0) anneals over those 6, lr·(1 − t/6)
    at step t, as ``sgdlab train`` builds it; it was built for 100 steps and ended at
    lr·0.95, its decay barely begun. By hand in float64."""
    seed, lr = 2, 0.5
    params = {**TRAIN, "optimizer": {"name": "sgd", "lr": lr}, "batch_size": 8, "epochs": 2,
              "max_steps": 100, "schedule": {"name": "trapezoid", "warmup": 0, "hold": 0,
                                             "end_factor": 0.0}}
    out, store, run_id = _train_run(params, seed, tmp_path, "trapezoid")
    assert out.status == "finished" and out.summary["steps"] == 6
    _assert_stored_weights(store, run_id, _sgd_by_hand(seed, lambda t: lr * (1 - t / 6), 6))


def test_a_full_batch_train_run_is_gradient_descent_and_measures_its_final_weights(tmp_path):
    """``batch_size: full``: one step per epoch on the whole training set (2 steps, as the
    plan counts them); the ``final`` measurement ``grad_norm`` is ‖∇ mean cross-entropy‖ over
    the training set at the final weights, by hand in float64."""
    seed, lr = 1, 0.5
    params = {**TRAIN, "optimizer": {"name": "sgd", "lr": lr}, "batch_size": "full",
              "epochs": 2, "final": [{"kind": "grad_norm"}]}
    assert get_procedure("train").planned_steps(params) == 2
    out, _, _ = _train_run(params, seed, tmp_path, "gd")
    assert out.status == "finished" and out.summary["steps"] == 2
    ds, net = _train_start(seed)

    def grads():
        loss = torch.nn.functional.cross_entropy(net(ds.x_train), ds.y_train)
        return torch.autograd.grad(loss, list(net.parameters()))

    for _ in range(2):
        step = grads()
        with torch.no_grad():
            for p, g in zip(net.parameters(), step):
                p -= lr * g
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads())).item()
    assert out.summary["grad_norm"] == pytest.approx(norm, rel=1e-10)


# 20 examples at batch 8: 3 steps an epoch
SMALL_RUN = {"dataset": {"name": "digits", "n_train": 20}, "model": {"name": "mlp"},
             "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 8}


def test_max_steps_caps_the_planned_steps_and_never_adds_to_them():
    p = {**SMALL_RUN, "epochs": 2}
    train = get_procedure("train")
    assert train.planned_steps(p) == 6
    assert train.planned_steps({**p, "max_steps": 5}) == 5
    assert train.planned_steps({**p, "max_steps": 100}) == 6
    assert train.planned_steps({**p, "batch_size": "full"}) == 2


def test_the_planned_steps_of_a_batch_size_schedule_are_the_steps_its_run_takes(tmp_path):
    """A square cycle of batches 4 and 16 over 20 examples: epochs of 5, 2 and 5 steps (5, 1
    and 5 with drop_last), counted by the code the run counts with; a dict batch size had
    left the plan without a count."""
    batches = {"kind": "cyclic", "low": 4, "high": 16, "period": 2, "shape": "square"}
    params = {**TRAIN, "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": batches,
              "epochs": 3}
    train = get_procedure("train")
    assert train.planned_steps(params) == 5 + 2 + 5
    assert train.planned_steps({**params, "drop_last": True}) == 5 + 1 + 5
    assert train.planned_steps({**params, "max_steps": 6}) == 6
    out, _, _ = _train_run(params, 0, tmp_path, "cyclic")
    assert out.status == "finished" and out.summary["steps"] == 12
    # a schedule the run refuses: no count (the run says why)
    assert train.planned_steps({**params, "batch_size": {"kind": "wavy"}}) is None


@pytest.mark.parametrize("dataset, n", [
    ({"name": "mnist"}, 60000), ({"name": "fashion-mnist", "label_noise": 200}, 60000),
    ({"name": "cifar10", "test_size": 500}, 50000),
    ({"name": "cifar100", "labels": "coarse"}, 50000)])
def test_a_file_dataset_keeping_its_training_files_has_their_published_size(dataset, n):
    from sgdlab.experiments.procedures.train import train_examples

    assert train_examples({**dataset, "data_dir": "/nowhere"}) == n
    p = {"dataset": dataset, "model": {"name": "mlp"}, "optimizer": {"name": "sgd", "lr": 0.1},
         "batch_size": 128, "epochs": 2}
    train = get_procedure("train")
    assert train.planned_steps(p) == 2 * -(-n // 128)
    assert train.planned_steps({**p, "drop_last": True}) == 2 * (n // 128)
    # the size left to the files: a classes filter keeps their examples of those classes;
    # text windows are counted in a file's tokens
    for other in ({**dataset, "classes": [0, 1]}, {"name": "ptb"}, {"name": "text_chars"}):
        assert train_examples(other) is None
        assert train.planned_steps({**p, "dataset": other}) is None


def test_the_planned_steps_on_ones_own_files_are_counted_in_them(tmp_path):
    """37 training images in MNIST's IDX files, not the published 60,000: the steps of a run
    (and of a replica run's epochs) are counted in the files' header, as many as the run
    loads; for CIFAR in its batches' label lists. The dry run and the sweep count so."""
    from sgdlab.experiments.procedures.train import train_examples
    from sgdlab.testing import make_cifar10, make_idx_dir

    make_idx_dir(tmp_path / "mnist", n_train=37, n_test=5, gz=True)
    make_cifar10(tmp_path / "cifar", n=4, n_test=2)
    mnist = {"name": "mnist", "data_dir": str(tmp_path), "flatten": True}
    assert train_examples(mnist) == 37 == len(load_dataset(**mnist).x_train)
    assert train_examples({"name": "cifar10", "data_dir": str(tmp_path / "cifar")}) == 20
    p = {**SMALL_RUN, "dataset": mnist, "epochs": 2}
    assert get_procedure("train").planned_steps(p) == 2 * 5          # ⌈37 / 8⌉ an epoch
    # ⌈2 · ⌈37 / 8⌉ / 3⌉ = 4 rounds of L = 3 inner steps
    assert get_procedure("replicas").planned_steps({**PARLE, "dataset": mnist, "epochs": 2}) == 12


PARLE = {"dataset": {"name": "digits", "n_train": 20, "n_test": 10},
         "model": {"name": "mlp", "widths": [5]}, "dtype": "float64",
         "parle": {"replicas": 2, "L": 3, "batch_size": 8, "lr": 0.1}}


@pytest.mark.parametrize("length, steps", [
    ({"grad_evals": 7}, 9),             # ⌈7 / 3⌉ = 3 rounds of L = 3 inner steps
    ({"epochs": 2}, 6),                 # ⌈2 · ⌈20 / 8⌉ / 3⌉ = 2 rounds
    ({"epochs": 2.5, "dataset": {"name": "mnist"}}, 18750)])   # ⌈2.5 · 7500 / 3⌉ = 6250
def test_the_planned_steps_of_a_replica_run_are_its_rounds_times_l(length, steps, tmp_path):
    """The steps of a ``replicas`` run are each replica's inner steps, rounds · L (the step its
    metrics are logged at), its rounds as train_replicas makes them of its length."""
    p = {**PARLE, **length}
    assert get_procedure("replicas").planned_steps(p) == steps
    if p["dataset"]["name"] == "digits":
        store = RunStore(str(tmp_path / "runs.sqlite"))
        run_id = store.create_run({"t": 1}, name="parle")
        ctx = RunContext(store=store, run_id=run_id, progress=None, device="cpu",
                         artifact_dir=tmp_path, dependencies={}, checkpoint_dir=None)
        out = get_procedure("replicas").run(SimpleNamespace(params=p, seed=0), ctx)
        assert out.summary["rounds"] * 3 == out.summary["grad_evals"] == steps


def test_the_planned_steps_of_a_replica_run_on_split_data_are_not_told():
    # a replica's part of the data is drawn when the run starts
    p = {**PARLE, "epochs": 2, "parle": {**PARLE["parle"], "shard": True}}
    assert get_procedure("replicas").planned_steps(p) is None
    assert get_procedure("replicas").planned_steps({**p, "grad_evals": 6}) == 6


def test_max_steps_zero_is_a_run_that_measures_its_initialisation():
    p = {**SMALL_RUN, "epochs": 1}
    get_procedure("train").validate({**p, "max_steps": 0}, "r")
    assert get_procedure("train").planned_steps({**p, "max_steps": 0}) == 0
    with pytest.raises(ConfigError, match="max_steps must be an int >= 0, got -1"):
        get_procedure("train").validate({**p, "max_steps": -1}, "r")


def test_final_weights_prefer_the_weights_file_to_an_older_bare_state_dict(tmp_path):
    new, old = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        new.weight.fill_(1.0)
        old.weight.fill_(-1.0)
    torch.save(old.state_dict(), tmp_path / MODEL_FILE)
    assert torch.equal(final_weights(tmp_path)["weight"], old.weight)    # only the old file
    save_weights(tmp_path / "weights.pt", new, 7)
    assert torch.equal(final_weights(tmp_path)["weight"], new.weight)


@pytest.mark.parametrize("item", [{"name": "step_length", "every": 1, "seed": -1},
                                  {"name": "trajectory", "every_epochs": 1, "seed": 2**32}])
def test_an_instrument_seed_out_of_range_is_refused_when_the_sweep_is_planned(item):
    # the instruments bound it when built, which an experiment does as each run starts: every
    # run failed after the sweep had begun, and --dry-run passed
    with pytest.raises(ConfigError, match=rf"measure\[0\]\.seed: must be an int in 0\.\.2\*\*32 "
                                          rf"- 1 \(as a run config's seed\), got {item['seed']}"):
        get_procedure("train").validate({**SMALL_RUN, "epochs": 1, "measure": [item]}, "r")
    get_procedure("train").validate({**SMALL_RUN, "epochs": 1,
                                     "measure": [{**item, "seed": 2**32 - 1}]}, "r")


def test_a_dataset_option_its_loader_refuses_is_refused_when_the_sweep_is_planned():
    # checked for run configs (register_dataset(check=)); an experiment's run loaded the data
    # first, so every run of the sweep failed on it
    run = {**SMALL_RUN, "epochs": 1, "dataset": {"name": "mnist1d", "num_samples": 5}}
    with pytest.raises(ConfigError, match=r"^r: option 'num_samples' must be an int >= 10 "
                                          r"\(mnist1d makes .*\), got 5$"):
        get_procedure("train").validate(run, "r")
    get_procedure("train").validate({**run, "dataset": {"name": "mnist1d", "num_samples": 10,
                                                        "data_dir": "/nowhere"}}, "r")


SWEEP = """
name: two-runs
version: 1
description: a run, then a run measuring its trajectory
paper: {author: X, year: 2020, title: T, figure: F, claim: C}
analysis: compare_groups
base:
  dataset: {name: cubic}
  model: {name: zhu-mlp-1-6-6-6-1}
  optimizer: {name: sgd, lr: 0.05}
  batch_size: 4
  epochs: 1
runs:
  - {label: plain}
  - label: traced
    params:
      measure: [{name: trajectory, every_steps: STEPS}]
"""


def test_an_instrument_count_given_as_a_float_is_refused_before_any_run_trains(tmp_path,
                                                                              capsys):
    # the instrument refused it when built, as its run started: the runs before it trained
    # first, and --dry-run passed
    from sgdlab.cli.main import main
    from sgdlab.experiments.spec import load_experiment

    bad, store = tmp_path / "two-runs.yaml", tmp_path / "runs.sqlite"
    bad.write_text(SWEEP.replace("STEPS", "2.0"))
    message = ("two-runs[smoke] run 'traced': measure[0].every_steps: instrument "
               "'trajectory': Invalid every_steps=2.0 (an int >= 1, or None)")
    for extra in (["--dry-run"], []):
        assert main(["run", "--config", str(bad), "--scale", "smoke", "--store", str(store),
                     "--out", str(tmp_path / "out"), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not store.exists() or RunStore(store).list_runs() == []
    bad.write_text(SWEEP.replace("STEPS", "2"))
    assert len(load_experiment(bad, "smoke").expand()) == 2


# the second run's params: PARAMS, a mapping
SECOND_BAD = SWEEP.replace("\n      measure: [{name: trajectory, every_steps: STEPS}]", " PARAMS")


@pytest.mark.parametrize("params, message", [
    ("{final: [{kind: hessian_spectrum, chunk_size: 2.0}]}",
     "final[0]: measurement 'hessian_spectrum': Invalid chunk_size=2.0 (an int >= 1: columns "
     "per pass)"),
    ("{final: [{kind: trajectory_spectrum, max_lag: 2.5}]}",
     "final[0]: measurement 'trajectory_spectrum': Invalid max_lag=2.5 (an int >= 1, or None)"),
    ("{final: [{kind: trajectory_spectrum, burnin: 1.5}]}",
     "final[0]: measurement 'trajectory_spectrum': Invalid burnin=1.5 (a number of snapshots"),
    ("{final: [{kind: diffusion_spectrum, batch_size: 0}]}",
     "final[0]: measurement 'diffusion_spectrum': batch_size: Invalid batch size 0 (must be"),
    ("{final: [{kind: hessian_top, samples: 2.5}]}",
     "final[0]: measurement 'hessian_top': samples must be an int >= 1 (or null: the "
     "default), got 2.5"),
    ("{final: [{kind: grad_norm, sample_seed: 1.5, samples: 4}]}",
     "final[0]: measurement 'grad_norm': sample_seed must be an int >= 0"),
    ("{measure: [{name: trajectory, every_steps: 1}], "
     "final: [{kind: trajectory_spectrum, samples: 64}]}",
     "final[0]: measurement 'trajectory_spectrum' has no option 'samples' (samples does not "
     "apply to trajectory_spectrum, which reads the run's recorded trajectory, not examples)"),
    ("{final: [{kind: hessian_trace, bn_mode: batch}]}",
     "final[0]: measurement 'hessian_trace': Invalid bn_mode='batch': expected 'eval' or "
     "'train'"),
    ("{final: [{kind: hessian_top, tol: -0.001}]}",
     "final[0]: measurement 'hessian_top': Invalid tol=-0.001 (a finite number >= 0"),
    ("{final: [{kind: hessian_spectrum, max_params: lots}]}",
     "final[0]: measurement 'hessian_spectrum': Invalid max_params='lots' (the most "
     "parameters a dense Hessian is built for: an int >= 1)"),
    ("{optimizer: {name: entropy_sgd, lr: 0.1, L: 2}, micro_batch: 2}",
     "micro_batch: not supported with optimizer 'entropy_sgd', whose closure evaluates its "
     "own batches (leave micro_batch out)"),
])
def test_a_setting_that_fails_after_training_is_refused_before_any_run_trains(
        params, message, tmp_path, capsys):
    # each passed --dry-run, and the second run failed once the first had trained (or, for
    # samples and sample_seed, was cut short by int())
    from sgdlab.cli.main import main

    bad, store = tmp_path / "two-runs.yaml", tmp_path / "runs.sqlite"
    bad.write_text(SECOND_BAD.replace("PARAMS", params))
    for extra in (["--dry-run"], []):
        assert main(["run", "--config", str(bad), "--scale", "smoke", "--store", str(store),
                     "--out", str(tmp_path / "out"), *extra]) == 2
        assert f"two-runs[smoke] run 'traced': {message}" in capsys.readouterr().err
    assert not store.exists() or RunStore(store).list_runs() == []


def test_a_run_on_a_data_file_loads_the_content_its_key_names(tmp_path):
    """The run reads the file with the checksum the expansion took: a file changed since the
    runs were planned is refused, not trained on under the old content's key."""
    import torch

    from sgdlab.data.files import data_file_sha256
    from sgdlab.errors import DataError
    from sgdlab.experiments.procedures.train import load_data

    f = tmp_path / "d.pt"
    torch.save({"x_train": torch.ones(3, 2), "y_train": torch.tensor([0, 1, 0])}, f)
    data = {"file": str(f), "sha256": data_file_sha256(f)}
    assert torch.equal(load_data({"dataset": data}, dtype=torch.float64).x_train,
                       torch.ones(3, 2, dtype=torch.float64))
    # (another size: a rewrite within one tick of the file clock is told apart by it)
    torch.save({"x_train": torch.zeros(4, 2), "y_train": torch.tensor([0, 1, 0, 1])}, f)
    with pytest.raises(DataError, match="has changed since the run recorded it"):
        load_data({"dataset": data})
