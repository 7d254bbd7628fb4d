"""Run configs: loading (YAML/TOML/packaged), schema errors naming key paths, building."""
from __future__ import annotations

import json
import math

import pytest
import torch

from typing import Literal

from pydantic import Field

from sgdlab.config import (Section, apply_overrides, build_from_config, load_config,
                           packaged_configs, validate, validate_config)
from sgdlab.errors import ConfigError
from sgdlab.testing import TINY_RUN as TINY, config_errors, strict_loads
from sgdlab.train.callbacks import Callback
from sgdlab.train.instruments import INSTRUMENTS, register_instrument


def test_packaged_default_validates_with_defaults_filled():
    assert "digits-mlp" in packaged_configs()
    cfg = validate_config(load_config("digits-mlp"))
    assert cfg["name"] == "digits-mlp" and cfg["data"]["name"] == "digits"
    assert cfg["train"]["checkpoint_every"] is None and cfg["measure"] == []
    assert cfg["store"] == {"path": None}
    assert validate_config(cfg) == cfg  # idempotent: stored configs re-validate


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("train.batch_size=half", "train.batch_size: must be an integer >= 1 or \"full\""),
    ("train.epochs=-2", "train.epochs: must be >= 0, got -2"),
    ("train.replacement=maybe", "train.replacement: must be true or false, got 'maybe'"),
    ("train.dtype=float16", "train.dtype: must be one of float32, float64"),
    ("train.device=gpu", "train.device: must be cpu, cuda, cuda:N, mps or auto"),
    ("train.epoch=3", "train.epoch: unknown key (did you mean epochs?)"),
    ("optimizer.lrr=0.1", "optimizer.lrr: unknown key (did you mean lr?)"),
    ("optimizer.lr=-1", "optimizer.lr: must be >= 0, got -1"),
    ("optimizer.momentum=-0.5", "optimizer.momentum: must be >= 0, got -0.5"),
    ("optimizer.nesterov=true", "optimizer.nesterov: Nesterov momentum requires a momentum"),
    ("optimizer.momentum=fast", "optimizer.momentum: must be a number, got 'fast'"),
    ("schedule={name: cosine-cyclic, period: x}", "schedule.period: must be a number, got 'x'"),
    ("optimizer.name=sdg", "optimizer.name: unknown optimizer 'sdg' (did you mean sgd?)"),
    ("schedule.name=nope", "schedule.name: unknown schedule 'nope'"),
    ("schedule.gama=0.1", "schedule.gama: unknown key"),
    ("data.name=digitz", "data.name: unknown dataset 'digitz' (did you mean digits?)"),
    ("data.options.n_trian=10", "data.options.n_trian: unknown key (did you mean n_train?)"),
    ("model.name=resnet", "model.name: unknown model 'resnet'"),
    ("model.options.activaton=relu", "model.options.activaton: unknown key (did you mean "
                                     "activation?)"),
    ("loss=hinge", "loss: must be one of auto, cross_entropy, mse, got 'hinge'"),
    ("trian.epochs=1", "trian: unknown key (did you mean train?)"),
    # a section's key given a level too high, as `--set epochs=5`: the list of top-level keys
    ("epochs=5", "epochs: unknown key (did you mean train.epochs?)"),
    ("seed=1", "seed: unknown key (did you mean data.seed or train.seed?)"),
    # found as it is one level down, it is that key, not a spelling of a top-level one
    ("replacement=without", "replacement: unknown key (did you mean train.replacement?)"),
    ("data_dir=x", "data_dir: unknown key (did you mean data.data_dir?)"),
    # a model's or dataset's argument beside its name, as replica configs write them
    ("model={name: mlp, widths: [4]}",
     "model.widths: unknown key (widths is an argument of the model 'mlp': it goes under "
     "model.options, as model.options.widths)"),
    ("data={name: digits, n_train: 50}",
     "data.n_train: unknown key (n_train is an argument of the dataset 'digits': it goes "
     "under data.options, as data.options.n_train)"),
    # a file of tensors is the whole data section, as in a replica run config
    ("data.file=x.pt", "data.file: a data file takes no other keys, got data.name (the whole "
                       "section is data: {file: PATH})"),
    ("data={file: x.pt, options: {n_train: 5}, seed: 1}",
     "data.file: a data file takes no other keys, got data.options, data.seed"),
    ("data={seed: 1}", "data.name: required key is missing (a registered dataset; or "
                       "data.file: a file of tensors)"),
    ("model.name=my-net", "model.name: unknown model 'my-net' (a model of your own: name the "
                          "module that registers it under plugins: [MODULE] or with --plugin "
                          "MODULE)"),
    ("plugins=[no_such_plugin_module]", "plugins[0]: cannot import plugin "
                                        "'no_such_plugin_module': no module named "
                                        "'no_such_plugin_module' (put its folder on PYTHONPATH"),
    # a required argument of the optimizer: not "Invalid sigma: None" when the run is built
    ("optimizer={name: gld-const, lr: 0.1}", "optimizer.sigma: required by optimizer "
                                             "'gld-const'"),
    ("optimizer={name: gd-isotropic, lr: 0.1}", "optimizer.variance_factor: required by "
                                                "optimizer 'gd-isotropic'"),
    # m of the SGD noise GLD mimics: "optimizer: Invalid noise_batch_size: None" named no key
    ("optimizer={name: gld-leading, lr: 0.1}", "optimizer.noise_batch_size: required by "
                                               "optimizer 'gld-leading'"),
    ("optimizer={name: gld-sgd-like, lr: 0.1}", "optimizer.noise_batch_size: required by "
                                                "optimizer 'gld-sgd-like'"),
    # k, the eigenpairs of gld-leading and gld-hessian: "optimizer: Invalid k: None"
    ("optimizer={name: gld-leading, lr: 0.1, noise_batch_size: 2}", "optimizer.k: required by "
                                                                    "optimizer 'gld-leading'"),
    ("optimizer={name: gld-hessian, lr: 0.1, sigma_h2: 0.1}", "optimizer.k: required by "
                                                              "optimizer 'gld-hessian'"),
    ("plugins=no_such_plugin_module", "plugins: must be a list, got 'no_such_plugin_module'"),
    ("measure=[{name: no_such_instrument}]", "measure[0].name: unknown instrument"),
    # a misspelt schedule key: the instrument's own arguments were listed, without every
    ("measure=[{name: hessian, evry: 5}]", "measure[0].evry: unknown key (did you mean every?)"),
    ("measure=[{name: dynamics, foo: 5}]", "measure[0].foo: unknown key (instrument 'dynamics' "
                                           "accepts: "),
    ("measure=[{name: dynamics, foo: 5}]", "; its schedule: every, start, at, log_points)"),
    # the measurement function's name for an option: its trace's probes, not the Frobenius'
    ("measure=[{name: hessian, every: 5, num_probes: 9}]",
     "measure[0].num_probes: unknown key (did you mean trace_probes?)"),
    ("measure=[{name: noise, every: 5, top_k: 3}]",
     "measure[0].top_k: unknown key (did you mean k?)"),
    ("optimizer.name=EntropySGD", "optimizer.name: unknown optimizer 'EntropySGD' (did you "
                                  "mean entropy_sgd?)"),
    ("measure=[{name: trajectory, every_steps: 5}]",
     "measure[0].path: required by instrument 'trajectory'"),
    # told only by build_optimizer: a config was told of plugins, as for a name of one's own
    ("optimizer.name=elastic-sgd", "; Elastic-SGD couples replicas: run it with "
                                   "sgdlab.train.train_replicas (or `sgdlab parle`)"),
    ("store.path=3", "store.path: must be a string, got 3"),
    ("train.clip_grad_norm=0", "train.clip_grad_norm: must be > 0.0, got 0"),
    ("train.clip_grad_norm=.nan", "train.clip_grad_norm: must be a finite number, got nan"),
    ("train.micro_batch=0", "train.micro_batch: must be >= 1, got 0"),
    ("train.micro_batch=2.5", "train.micro_batch: must be an integer, got 2.5"),
    ("train.micro_batch=true", "train.micro_batch: must be an integer, not a bool (True)"),
    ("train.clip_grad_norm=true", "train.clip_grad_norm: must be a number, not a bool (True)"),
])
def test_bad_values_name_their_key(override, message):
    errors = config_errors(apply_overrides(TINY, [override]))
    assert message in errors
    assert "Elastic-SGD" not in message or "of your own" not in errors


@pytest.mark.parametrize("spelt, registered", [
    ("entropy-sgd", "entropy_sgd"), ("Entropy_SGD", "entropy_sgd"),
    ("entropy-adam", "entropy_adam"), ("random_lr_sgd", "random-lr-sgd"),
    ("entropy_sgd", "entropy_sgd"),
])
def test_an_optimizer_of_either_spelling_is_stored_as_registered(spelt, registered):
    # entropy_sgd beside random-lr-sgd: a config spelling one like the other was refused;
    # the stored config (and what is compared, resumed, keyed from it) has the registered name
    raw = {**TINY, "optimizer": {"name": spelt, "lr": 0.1}}
    cfg = validate_config(raw)
    assert cfg["optimizer"] == {"name": registered, "lr": 0.1}
    assert validate_config({**TINY, "optimizer": {"name": registered, "lr": 0.1}}) == cfg
    assert validate_config(cfg) == cfg
    assert raw["optimizer"]["name"] == spelt          # the caller's mapping is left as it was


def test_a_schedule_of_either_spelling_is_stored_as_registered_and_built():
    cfg = validate_config({**TINY, "schedule": {"name": "Cosine_Cyclic", "period": 2}})
    assert cfg["schedule"] == {"name": "cosine-cyclic", "period": 2}
    built = build_from_config({**TINY, "optimizer": {"name": "entropy-sgd", "lr": 1.0, "L": 2},
                               "schedule": {"name": "cosine_cyclic", "period": 2}})
    assert type(built.optimizer).__name__ == "EntropySGD"
    # the other spelling's arguments are checked as the registered one's, under its name
    assert config_errors({**TINY, "optimizer": {"name": "entropy-sgd", "lr": 1.0, "gama": 1}}) \
        == "optimizer.gama: unknown key (did you mean gamma?)"


@pytest.mark.parametrize("spelt", ["zhu_lenet", "ZHU-LENET", "zhulenet"])
def test_a_model_spelt_as_build_model_takes_it_is_a_valid_config(spelt):
    # build_model took zhu_lenet / zhulenet while a run config refused them by name
    assert validate_config({**TINY, "model": {"name": spelt}})["model"]["name"] == spelt
    # its options are checked as the registered model's
    assert "model.options.activaton: unknown key (did you mean activation?)" in config_errors(
        {**TINY, "model": {"name": spelt, "options": {"activaton": "tanh"}}})


def test_optimizer_rejections_name_the_key():
    adam = {**TINY, "optimizer": {"name": "adam", "lr": 0.1, "betas": [0.9, 1.5]}}
    assert config_errors(adam) == "optimizer.betas: Invalid beta parameter at index 1: 1.5"
    # a short list was torch's "list index out of range"; a long one failed at the first step
    for betas in ([0.9], [0.9, 0.99, 0.5]):
        wrong = {**TINY, "optimizer": {"name": "adam", "lr": 0.1, "betas": betas}}
        assert config_errors(wrong) == f"optimizer.betas: must be a list of 2 numbers, got {betas}"
    scalar = {**TINY, "optimizer": {"name": "adam", "lr": 0.1, "betas": 5}}
    assert config_errors(scalar) == "optimizer.betas: must be a list of numbers, got 5"
    assert config_errors({**TINY, "optimizer": {"name": "sgd", "lr": 0.1, "betas": [0.9]}}) == (
        "optimizer.betas: unknown key (optimizer 'sgd' accepts: lr, momentum, dampening, "
        "weight_decay, nesterov, maximize, foreach, differentiable, fused)")
    # only an optimizer's tuples have a fixed size: a model's widths take any number of layers
    validate_config({**TINY, "model": {"name": "mlp", "options": {"widths": [4, 4, 4]}}})


def test_all_problems_reported_and_required_keys():
    msg = config_errors({"data": {"seed": -1}, "optimizer": {"name": "sgd", "lr": 0.1}})
    assert "data.name: required key is missing" in msg
    assert "data.seed: must be >= 0, got -1" in msg
    assert "model: required section is missing" in msg and "model.name" not in msg
    assert msg.startswith("3 problems in the config")
    assert "optimizer.name: required key is missing" in config_errors(
        {**TINY, "optimizer": {"lr": 0.1}})


def test_configs_are_data(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="line 1, column 7: YAML tag .* is not allowed"):
        load_config(p)
    with pytest.raises(ConfigError, match="no config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must be plain data"):
        validate_config({**TINY, "optimizer": {"name": "sgd", "lr": object()}})


def test_a_misspelt_config_name_suggests_the_file_beside_it_or_the_packaged_one(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-run.yaml").write_text("name: x\n")
    (tmp_path / "my-run.txt").write_text("")
    with pytest.raises(ConfigError, match=r"'my-rn.yaml' \(did you mean my-run.yaml\?\)"):
        load_config("my-rn.yaml")
    with pytest.raises(ConfigError, match=r"\(did you mean " + str(tmp_path / "my-run.yaml")):
        load_config(tmp_path / "my-rnu.yaml")
    with pytest.raises(ConfigError, match=r"'digits-mpl' \(did you mean digits-mlp\?\) and no "
                                          "packaged config"):
        load_config("digits-mpl")
    with pytest.raises(ConfigError, match=r"'nowhere/x.yaml' and no packaged config"):
        load_config("nowhere/x.yaml")     # a folder that does not exist: no hint, no OSError


def test_yaml_and_toml_and_overrides(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("data: {name: cubic}\nmodel: {name: zhu-mlp-1-6-6-6-1}\n"
                 "optimizer: {name: sgd, lr: 1e-3}\n")
    raw = load_config(y)
    assert raw["optimizer"]["lr"] == 1e-3 and raw["name"] == "run"  # 1e-3 is a float
    t = tmp_path / "run.toml"
    t.write_text('[data]\nname = "cubic"\n[model]\nname = "zhu-mlp-1-6-6-6-1"\n'
                 '[optimizer]\nname = "sgd"\nlr = 0.001\n[train]\nbatch_size = "full"\n')
    cfg = validate_config(load_config(t))
    assert cfg["train"]["batch_size"] == "full"
    cfg = validate_config(apply_overrides(raw, ["train.epochs=3", "model.options.activation="
                                                "relu", "train.replacement=true"]))
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["replacement"] is True
    assert cfg["model"]["options"] == {"activation": "relu"}
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        apply_overrides(raw, ["train.epochs"])
    with pytest.raises(ConfigError, match="optimizer.lr is not a section"):
        apply_overrides(raw, ["optimizer.lr.x=1"])
    # an entry of a list: [i] or .i, only within the list's length
    listed = {**raw, "measure": [{"name": "hessian", "every": 2}, {"name": "noise"}]}
    out = apply_overrides(listed, ["measure[0].every=5", "measure.1.k=3"])
    assert out["measure"] == [{"name": "hessian", "every": 5}, {"name": "noise", "k": 3}]
    assert listed["measure"][0]["every"] == 2                      # a copy was changed
    for bad, match in (("measure[2].every=1", "measure has 2 entries, no \\[2\\]"),
                       ("measure.every=1", "measure is a list: pick an entry, measure\\[0\\]"),
                       ("optimizer[0]=1", "optimizer is not a list"),
                       ("measure[x]=1", "expected KEY.PATH=VALUE")):
        with pytest.raises(ConfigError, match=match):
            apply_overrides(listed, [bad])
    # a list the config does not have is named as missing, not as something else
    for bad in ("measure[0].every=5", "measure.0.every=5"):
        with pytest.raises(ConfigError, match="the config has no measure list; \\[0\\] picks"):
            apply_overrides(raw, [bad])


def test_set_of_a_list_entry_the_config_lacks_says_how_to_set_the_list():
    # "write the list there" named a config file that a packaged config (digits-mlp) has not
    raw = {"name": "r", "measure": [{"name": "noise"}], "model": {"options": {"widths": [8]}}}
    for bad, path, example in (
            ("measure[1].every=5", "measure", "{name: hessian, every: 5}"),
            ("model.options.widths[1]=4", "model.options.widths", "..."),
            ("schedule.milestones[0]=2", "schedule.milestones", "...")):
        with pytest.raises(ConfigError) as err:
            apply_overrides(raw, [bad])
        assert str(err.value).endswith(f"; --set '{path}=[{example}]' sets the whole list")
    cfg = apply_overrides({"name": "r"}, ["measure=[{name: hessian, every: 5}]"])
    assert cfg["measure"] == [{"name": "hessian", "every": 5}]


class _Inner(Section):
    k: Literal[1, 2]


class _Item(Section):
    w: int = Field(ge=0)


class _Top(Section):
    a: float = Field(1.0, ge=0.0, le=2.0)
    inner: _Inner
    items: list[_Item] = []


def test_sections_nested_lists_and_unknown_keys():
    assert validate({"inner": {"k": 2}}, _Top) == {"a": 1.0, "inner": {"k": 2}, "items": []}
    a = validate({"a": 2, "inner": {"k": 1}}, _Top)["a"]
    assert a == 2.0 and isinstance(a, float)  # int -> float, nothing else is coerced
    with pytest.raises(ConfigError) as e:
        validate({"a": 3.0, "inner": {"k": 3}, "items": [{"w": 1}, {"w": -1, "v": 0}]}, _Top)
    msg = str(e.value)
    assert msg.startswith("4 problems in the config")
    assert "a: must be <= 2.0, got 3.0" in msg
    assert "inner.k: must be one of 1, 2, got 3" in msg
    assert "items[1].w: must be >= 0, got -1" in msg
    assert "items[1].v: unknown key (valid keys: w)" in msg
    with pytest.raises(ConfigError, match=r"^x\.items\[0\]\.w: must be an integer, got '1'$"):
        validate({"inner": {"k": 1}, "items": [{"w": "1"}]}, _Top, path="x")
    with pytest.raises(ConfigError, match=r"^a: must be a finite number, got nan$"):
        validate({"a": float("nan"), "inner": {"k": 1}}, _Top)
    with pytest.raises(ConfigError, match=r"^inner: required section is missing$"):
        validate({}, _Top)


class _Probe(Callback):
    def __init__(self, schedule, scale):
        self.schedule, self.scale = schedule, scale

    def on_step_end(self, ctx):
        if self.should_run(ctx.step):
            ctx.log("probe", self.scale * ctx.step)


if "_test_probe" not in INSTRUMENTS:
    @register_instrument("_test_probe")
    def _test_probe(*, schedule, scale: float = 1.0):
        return _Probe(schedule, scale)


def test_build_from_config_is_deterministic_and_wires_instruments():
    from sgdlab.train import train

    raw = {**TINY, "measure": [{"name": "_test_probe", "every": 2, "scale": 0.5}],
           "schedule": {"name": "step", "every": 1, "gamma": 0.5}}
    b1 = build_from_config(raw)
    b2 = build_from_config(raw)
    assert isinstance(b1.loss_fn, torch.nn.MSELoss)  # auto: cubic is regression
    assert isinstance(b1.optimizer, torch.optim.SGD) and b1.schedule is not None
    w1, w2 = (torch.cat([p.detach().flatten() for p in b.model.parameters()]) for b in (b1, b2))
    assert w1.numel() == (1 * 6 + 6) + 2 * (6 * 6 + 6) + (6 * 1 + 1)  # zhu-mlp-1-6-6-6-1
    assert torch.equal(w1, w2)  # train.seed fixes the initial weights
    assert b1.train_kwargs["batch_size"] == 5 and b1.train_kwargs["epochs"] == 2
    res = train(*b1[:4], schedule=b1.schedule, callbacks=b1.callbacks,
                **{**b1.train_kwargs, "progress": False})
    assert res.history["probe"] == [(s, 0.5 * s) for s in (2, 4, 6, 8)]
    # the schedule is stepped once per step: halved after each 4-step epoch
    assert b1.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5 ** 2)
    assert build_from_config(TINY).schedule is None  # constant: nothing to step
    assert "schedule (step): step schedule: give exactly one of" in config_errors(
        {**TINY, "schedule": {"name": "step"}})
    assert "measure[0].scal: unknown key (did you mean scale?)" in config_errors(
        {**TINY, "measure": [{"name": "_test_probe", "scal": 1}]})
    assert "measure[0]: give at most one of every, at, log_points" in config_errors(
        {**TINY, "measure": [{"name": "_test_probe", "every": 1, "at": [3]}]})


def test_scoping_schedule_from_a_config():
    """The ``scoping`` schedule scopes the configured optimizer's gamma (Entropy-SGD, thesis
    §3.2.3): the config validates, and each step writes γ₀(1 − rate)^t into the groups; a key
    the optimizer lacks is named when the run is built."""
    raw = {**TINY, "optimizer": {"name": "entropy_sgd", "lr": 1.0, "L": 2, "gamma": 1.0},
           "schedule": {"name": "scoping", "key": "gamma", "kind": "exponential",
                        "initial": 2.0, "rate": 0.5}}
    b = build_from_config(raw)
    assert b.optimizer.param_groups[0]["gamma"] == 2.0
    b.schedule.step()
    b.schedule.step()
    assert b.optimizer.param_groups[0]["gamma"] == 0.5
    with pytest.raises(ConfigError, match="schedule: optimizer SGD has no hyper-parameter 'gamma'"):
        build_from_config({**raw, "optimizer": {"name": "sgd", "lr": 0.1}})


def test_clip_grad_norm_from_a_config_reaches_the_loop():
    assert build_from_config(TINY).train_kwargs["clip_grad_norm"] is None
    assert build_from_config(apply_overrides(TINY, ["train.clip_grad_norm=5"])
                             ).train_kwargs["clip_grad_norm"] == 5.0


def test_sequence_loss_from_a_config_reaches_the_loop():
    assert build_from_config(TINY).train_kwargs["sequence_loss"] == "mean"
    assert build_from_config(apply_overrides(TINY, ["train.sequence_loss=window-sum"])
                             ).train_kwargs["sequence_loss"] == "window-sum"
    with pytest.raises(ConfigError, match="train.sequence_loss"):
        validate_config(apply_overrides(TINY, ["train.sequence_loss=sum"]))


def test_micro_batch_from_a_config_trains_as_train_with_micro_batch():
    """A batch-normalised MLP on the 20 cubic examples, two full-batch GD steps in float64:
    ``train.micro_batch: 8`` trains bit for bit as ``train(..., micro_batch=8)`` (chunks of
    8, 8, 4, each normalised by its own statistics), not as one pass."""
    from sgdlab.train import train

    raw = apply_overrides(TINY, ["model={name: mlp, options: {widths: [6], batchnorm: true}}",
                                 "train.batch_size=full", "train.dtype=float64",
                                 "train.progress=false"])

    def trained(cfg, **kw) -> list:
        b = build_from_config(cfg)
        train(*b[:4], schedule=b.schedule, callbacks=b.callbacks, **{**b.train_kwargs, **kw})
        return [t.detach().clone() for t in b.model.state_dict().values()]

    built = build_from_config(apply_overrides(raw, ["train.micro_batch=8"]))
    assert built.train_kwargs["micro_batch"] == 8
    assert build_from_config(raw).train_kwargs["micro_batch"] is None
    chunked = trained(apply_overrides(raw, ["train.micro_batch=8"]))
    assert all(torch.equal(a, b) for a, b in zip(chunked, trained(raw, micro_batch=8)))
    assert not all(torch.equal(a, b) for a, b in zip(chunked, trained(raw)))


def test_micro_batch_of_a_closure_optimizer_is_refused_by_the_config():
    # the loop refused it at its first step, after `sgdlab train` had recorded the run
    assert config_errors(apply_overrides(TINY, [
        "train.micro_batch=4", "optimizer={name: entropy-sgd, lr: 0.1}"])) == (
        "train.micro_batch: not supported with optimizer 'entropy_sgd', whose closure "
        "evaluates its own batches (leave micro_batch out)")


def test_a_config_without_micro_batch_keeps_its_stored_config_and_settings():
    """The stored config of a run without ``micro_batch`` (the text runs are stored and
    matched by) and its training settings (``runs compare``, a sweep run's ``training``) are
    what sgdlab stored before the key existed: SHA-256 of the store's JSON, computed at commit
    802e0850. One that sets it stores and compares it."""
    import hashlib

    from sgdlab.config.run import stored_training_settings, training_settings
    from sgdlab.experiments.procedures import get_procedure
    from sgdlab.store.runstore import _to_json

    def digest(obj) -> str:
        return hashlib.sha256(_to_json(obj).encode()).hexdigest()

    cfg = validate_config(TINY)
    assert digest(cfg) == "5db96713cb53c4909cf61b151099b91649faca06feb66d8e7d7a40bb74a6ef65"
    settings = "2fce263a7d88e572b59a20375ac44a777fc13b4addba560978ac05a70644cc36"
    assert digest(training_settings(cfg)) == digest(stored_training_settings(cfg)) == settings
    params = {"dataset": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
              "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 2, "batch_size": "full"}
    procedure = get_procedure("train")
    assert digest(procedure.training_settings(params, 3)) == (
        "5115595a03e0bba1612403fa5172bfcde9fe33903065bc21e266e280de671b61")

    chunked = validate_config(apply_overrides(TINY, ["train.micro_batch=3"]))
    assert chunked["train"]["micro_batch"] == 3 and validate_config(chunked) == chunked
    assert training_settings(chunked)["train"]["micro_batch"] == 3
    assert stored_training_settings(chunked) == training_settings(chunked)
    assert procedure.training_settings({**params, "micro_batch": 3}, 3)["train"][
        "micro_batch"] == 3


def test_eval_bn_from_a_config_reaches_the_loop_and_a_stored_config_without_it_is_running():
    from sgdlab.config.run import stored_training_settings, training_settings

    cfg = validate_config(TINY)
    assert cfg["train"]["eval_bn"] == "running"
    assert build_from_config(TINY).train_kwargs["eval_bn"] == "running"
    assert build_from_config(apply_overrides(TINY, ["train.eval_bn=recompute"])
                             ).train_kwargs["eval_bn"] == "recompute"
    # a run stored before the key existed evaluated with the running statistics
    old = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "eval_bn"}}
    assert stored_training_settings(old) == training_settings(cfg)
    assert config_errors(apply_overrides(TINY, ["train.eval_bn=batch"])) == (
        "train.eval_bn: must be one of running, recompute, got 'batch'")


def test_packaged_char_lstm_trains_clipped_and_measures_the_entropy_angle():
    from sgdlab.train import train

    built = build_from_config(validate_config(apply_overrides(load_config("char-lstm"), [
        "train.max_steps=2", "measure[0].every=1", "data.options.max_chars=20000"])))
    assert built.train_kwargs["clip_grad_norm"] == 5.0
    res = train(*built[:4], schedule=built.schedule, callbacks=built.callbacks,
                **{**built.train_kwargs, "progress": False})
    assert res.status == "finished" and res.steps == 2
    angles = [v for _, v in res.history["entropy_angle/degrees"]]
    assert len(angles) == 3 and all(0 <= a <= 180 for a in angles)


def test_full_batch_and_cross_entropy_on_regression():
    b = build_from_config(apply_overrides(TINY, ["train.batch_size=full"]))
    assert b.train_kwargs["batch_size"] == len(b.data.x_train) == 20
    with pytest.raises(ConfigError, match=r"cross_entropy needs class labels, but dataset "
                                          r"'cubic' has real-valued targets \(torch.float32\)"):
        build_from_config({**TINY, "loss": "cross_entropy"})
    # one's own data names no dataset ('?'); labels saved as floats: say how to save them
    from sgdlab.data import Dataset
    from sgdlab.losses import build_loss

    x = torch.randn(4, 2)
    with pytest.raises(ConfigError, match=r"but the data has real-valued targets "
                                          r"\(torch.float64\): class labels are integers "
                                          r"\(save them as y.long\(\)\); for regression use mse"):
        build_loss("cross_entropy", Dataset(x, torch.arange(4.0, dtype=torch.float64)))


def test_cyclic_batch_size_from_config_drives_the_loop():
    raw = load_config("digits-mlp")
    raw["train"].update(epochs=2, batch_size={"kind": "cyclic", "low": 32, "high": 160,
                                              "period": 2})
    built = build_from_config(validate_config(raw))
    schedule = built.train_kwargs["batch_size"]
    assert [schedule(e) for e in range(4)] == [32, 160, 32, 160]
    n = len(built.data.x_train)
    from sgdlab.train import train
    result = train(built.model, built.loss_fn, built.data, built.optimizer,
                   **{**built.train_kwargs, "progress": False})
    assert result.steps == -(-n // 32) + -(-n // 160)


def test_unknown_batch_size_schedule_names_the_key():
    raw = load_config("digits-mlp")
    raw["train"]["batch_size"] = {"kind": "cyclicc"}
    with pytest.raises(ConfigError, match=r"train\.batch_size: Unknown batch-size schedule"):
        validate_config(raw)
    raw["train"]["batch_size"] = {"kind": "cyclic", "low": 32, "shap": "square"}
    with pytest.raises(ConfigError, match=r"train\.batch_size: Invalid batch-size schedule "
                                          r"'cyclic': missing high, period; unknown shap \(did "
                                          r"you mean shape\?\) \(it takes low, high, period, "
                                          r"shape, start\)"):
        validate_config(raw)


def test_instrument_parameters_annotated_optional_accept_null():
    cfg = validate_config({**TINY, "measure": [
        {"name": "trajectory", "path": "t", "every_steps": 5, "every_epochs": None}]})
    assert cfg["measure"][0]["every_epochs"] is None
    assert "measure[0].num_points: must be a number, got None" in config_errors(
        {**TINY, "measure": [{"name": "step_interpolation", "every": 1, "num_points": None}]})


def test_two_hessian_instruments_need_their_own_series():
    """The Hessian and the GGN measured side by side write their own series, ``hess/`` and
    ``ggn/`` (the operator's prefix); two instruments of one operator need one ``prefix``
    each, else the second would write into the first's series."""
    from sgdlab.train import train

    both = [{"name": "hessian", "at": [0], "eval_subset": None},
            {"name": "hessian", "at": [0], "eval_subset": None, "operator": "ggn"}]
    b = build_from_config({**TINY, "measure": both})
    res = train(*b[:4], callbacks=b.callbacks, **{**b.train_kwargs, "progress": False})
    assert len(res.history["hess/top_1"]) == len(res.history["ggn/top_1"]) == 1
    assert res.history["hess/top_1"] != res.history["ggn/top_1"]
    two = [both[1], {**both[1], "k": 2}]
    with pytest.raises(ConfigError, match=r"measure\[1\]: its series \(ggn/...\) are already "
                                          r"written by measure\[0\]"):
        build_from_config({**TINY, "measure": two})
    two[1]["prefix"] = "ggn_k2"
    build_from_config({**TINY, "measure": two})


def test_bad_instrument_option_values_are_reported_together_under_their_key():
    """Values an instrument refuses when built (not only unknown keys) name their key path,
    every instrument's at once."""
    bad = [{"name": "batch_statistics", "every": 8, "curvature": "hesian"},
           {"name": "dynamics", "every": 1},
           {"name": "step_length", "every": 4, "source": "steps"},
           {"name": "hessian", "every": 4}, {"name": "hessian", "every": 8}]
    with pytest.raises(ConfigError) as e:
        build_from_config({**TINY, "measure": bad})
    assert str(e.value).splitlines() == [
        "3 problems in the config:",
        "  measure[0].curvature: Invalid curvature='hesian': expected 'ggn', 'hessian' or null",
        "  measure[2].source: Invalid source='steps': expected 'step' or 'eval'",
        "  measure[4]: its series (hess/...) are already written by measure[3]; give it another "
        "prefix"]


def test_out_of_range_instrument_options_are_refused_before_training():
    """Counts and scales the measurements would refuse at their first call (after maybe hours
    of training, the run then failing on every resume) are refused when the run is built."""
    bad = [{"name": "hessian", "every": 2, "k": -1, "tol": 0},
           {"name": "noise", "every": 2, "k": -3},
           {"name": "alignment", "every": 2, "num_probes": 0},
           {"name": "sharpness", "every": 2, "sigma": -1},
           {"name": "sharpness", "every": 4, "epsilon": 0},
           {"name": "noise_magnitude", "every": 2, "batch_size": -4}]
    with pytest.raises(ConfigError) as e:
        build_from_config({**TINY, "measure": bad})
    lines = str(e.value).splitlines()
    assert lines[1:] == [
        "  measure[0].k: Invalid k=-1 (an int >= 0)",
        "  measure[1].k: Invalid k=-3 (an int >= 0; 0: no eigenvalues)",
        "  measure[2].num_probes: Invalid num_probes=0 (an int >= 1)",
        "  measure[3].sigma: Invalid sigma=-1 (must be >= 0)",
        "  measure[4].epsilon: Invalid epsilon=0 (must be > 0)",
        "  measure[5].batch_size: Invalid batch_size=-4 (an int >= 1)"]


def test_instrument_flags_are_refused_under_their_key():
    """A run config refuses an instrument's on/off option by its schema (the key's bool
    annotation) before the instrument is built; an option refused by the instrument's own
    ``check_flag`` (one without the annotation: a plugin's) still names its key path."""
    from sgdlab.config.run import _option_error
    from sgdlab.errors import check_flag

    bad = [{"name": "noise", "every": 2, "rank": "no"},
           {"name": "hessian", "every": 2, "eval_mode": 1},
           {"name": "noise_magnitude", "every": 2, "replacement": "false"}]
    with pytest.raises(ConfigError) as e:
        build_from_config({**TINY, "measure": bad})
    assert str(e.value).splitlines()[1:] == [
        "  measure[0].rank: must be true or false, got 'no'",
        "  measure[1].eval_mode: must be true or false, got 1",
        "  measure[2].replacement: must be true or false, got 'false'"]
    with pytest.raises(ConfigError) as e:
        check_flag("rank", "no", error=ConfigError)
    assert _option_error("measure[0]", bad[0], e.value) == \
        "measure[0].rank: rank must be True or False, got 'no'"


@pytest.mark.parametrize("item", [
    {"name": "trajectory", "path": "t", "every_steps": 2.0},
    {"name": "hessian", "every": 2, "k": 2.0},
    {"name": "alignment", "every": 2, "num_probes": 20.0},
    {"name": "entropy_angle", "every": 2, "gamma": 0.1, "steps": 20.0},
    {"name": "dynamics", "every": 1, "hessian_every": 5.0}])
def test_a_measure_section_is_checked_by_building_its_instrument(item):
    """An experiment checks each run's ``measure`` items by themselves (validate_section),
    before any run: a count given as a float, which the instrument's constructor refuses,
    is refused there in the instrument's own words, under the key and naming the
    instrument."""
    from sgdlab.config import validate_section
    from sgdlab.train.instruments import build_instrument

    key = next(k for k, v in item.items() if isinstance(v, float) and k != "gamma")
    with pytest.raises(ValueError) as own:
        build_instrument(**item)
    with pytest.raises(ConfigError) as e:
        validate_section("measure", item, path="r: measure[1]")
    assert str(e.value) == f"r: measure[1].{key}: instrument {item['name']!r}: {own.value}"
    validate_section("measure", {**item, key: int(item[key])}, path="r: measure[1]")


def test_generic_dataset_options_are_valid_for_every_dataset():
    # load_dataset applies n_train / n_test / label_noise to any dataset
    cfg = validate_config({**TINY, "data": {"name": "digits",
                                            "options": {"n_train": 100, "label_noise": 10}}})
    assert cfg["data"]["options"] == {"n_train": 100, "label_noise": 10}
    assert "data.options.label_noise: must be a number" in config_errors(
        {**TINY, "data": {"name": "digits", "options": {"label_noise": "some"}}})


def test_mnist1d_sizes_the_generator_cannot_make_are_refused_at_validation():
    # they passed validation and failed only when the dataset was loaded, the run recorded
    data = {"name": "mnist1d", "options": {"num_samples": 5}}
    assert ("data.options: option 'num_samples' must be an int >= 10 (mnist1d makes "
            "num_samples // 10 sequences of each of the 10 digits, so fewer than 10 make none), "
            "got 5" in config_errors(
                {**TINY, "data": data}))
    data["options"] = {"num_samples": 20, "train_split": 0.01}
    assert "leaves no training sequences" in config_errors({**TINY, "data": data})
    data["options"] = {"num_samples": 10}
    assert validate_config({**TINY, "data": data})["data"]["options"] == {"num_samples": 10}


def test_bad_model_option_values_name_the_key():
    bad = {**TINY, "model": {"name": "mlp", "options": {"widths": "abc"}}}
    with pytest.raises(ConfigError, match=r"model\.options\.widths: must be a list of numbers, "
                                          r"got 'abc'"):
        build_from_config(bad)


def test_an_out_folder_holding_a_run_is_not_overwritten(tmp_path):
    from sgdlab.config.runner import run_config
    from sgdlab.errors import UserError
    from sgdlab.store import RunStore

    store = RunStore(tmp_path / "runs.sqlite")
    first = run_config(TINY, out_dir=tmp_path / "out", store=store, progress=False)
    before = (tmp_path / "out" / "results.json").read_bytes()
    with pytest.raises(UserError, match=f"already holds run {first.run_id}"):
        run_config(TINY, out_dir=tmp_path / "out", store=store, progress=False)
    assert (tmp_path / "out" / "results.json").read_bytes() == before
    assert [r["id"] for r in store.list_runs()] == [first.run_id]


def test_bad_data_option_value_names_the_key_and_records_no_run(tmp_path):
    from sgdlab.config.runner import run_config
    from sgdlab.store import RunStore

    raw = load_config("digits-mlp")
    raw["data"]["options"] = {"test_size": 0.2}
    store = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(ConfigError, match=r"data\.options: option 'test_size'"):
        run_config(raw, out_dir=tmp_path / "out", store=store)
    assert store.list_runs() == []


def test_results_of_a_diverged_run_are_strict_json(tmp_path):
    from sgdlab.config.runner import run_config
    from sgdlab.store import RunStore

    store = RunStore(tmp_path / "runs.sqlite")
    # a step of 1e20 sends the weights to inf, which the step-wise instrument records
    raw = {**TINY, "optimizer": {"name": "sgd", "lr": 1e20},
           "measure": [{"name": "dynamics", "every": 1}]}
    outcome = run_config(raw, out_dir=tmp_path / "out", store=store, progress=False)
    assert outcome.result.status == "diverged"
    results = strict_loads((tmp_path / "out" / "results.json").read_text())
    # recorded diverged, in the store and its results: not finished
    assert results["status"] == store.get_run(outcome.run_id)["status"] == "diverged"
    norms = [v for _, v in outcome.result.history["param_norm"]]
    assert not all(math.isfinite(v) for v in norms)
    assert [v for _, v in results["history"]["param_norm"]] == [
        v if math.isfinite(v) else None for v in norms]
    assert results["final"] == outcome.result.final       # the last finite evaluation's
    assert strict_loads((tmp_path / "out" / "run.json").read_text())["run_id"] == \
        outcome.run_id


@pytest.mark.parametrize("hard_links", [True, False])
def test_of_two_starts_into_one_free_folder_at_once_exactly_one_proceeds(tmp_path, monkeypatch,
                                                                       hard_links):
    """Both starts find the folder free, and only then (a barrier holds the first until the
    second has checked too) go on to take it: one runs, the other is refused naming the
    folder (and the run that holds it), and the store records one run. Also on a file system
    without hard links."""
    import threading

    import sgdlab.config.runner as runner
    from sgdlab.store import RunStore
    from sgdlab.testing import start_twice_at_once, without_hard_links

    both_checked = threading.Barrier(2, timeout=60)
    make_output_dir = runner.make_output_dir

    def after_the_check(*a, **k):
        both_checked.wait()
        return make_output_dir(*a, **k)

    monkeypatch.setattr(runner, "make_output_dir", after_the_check)
    if not hard_links:
        without_hard_links(monkeypatch)
    # what is measured ends once the run is recorded and its folder written: no training
    monkeypatch.setattr(runner, "_execute", lambda cfg, store, run_id, *a, **k: run_id)
    RunStore(tmp_path / "runs.sqlite").close()
    out = tmp_path / "out"
    started, refused = start_twice_at_once(lambda: runner.run_config(
        TINY, out_dir=out, progress=False, store=RunStore(tmp_path / "runs.sqlite")))
    assert len(started) == 1 and len(refused) == 1, (started, refused)
    # without hard links the file is created, then written: it may be read empty
    assert refused[0].startswith(f"{out} already holds run {started[0] if hard_links else ''}")
    assert [r["id"] for r in RunStore(tmp_path / "runs.sqlite").list_runs()] == started
    assert json.loads((out / "run.json").read_text())["run_id"] == started[0]
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "run.json"]


def test_an_epoch_schedule_with_a_batch_size_schedule_of_varying_steps_is_refused():
    # cubic has 20 examples: B = 5 then 20 gives 4 then 1 steps per epoch, so a schedule that
    # reads epochs as a fixed number of steps would put eq. (20)'s epoch 2 at epoch 1's value
    cyc = {"kind": "cyclic", "low": 5, "high": 20, "period": 2, "shape": "square"}
    raw = {**TINY, "train": {"epochs": 4, "batch_size": cyc}}
    for sched in ({"name": "cosine-cyclic", "period": 2}, {"name": "step", "every": 1},
                  {"name": "triangular", "max_factor": 2.0, "step_size_epochs": 1},
                  {"name": "trapezoid", "warmup": 1, "hold": 1}):
        with pytest.raises(ConfigError, match="miscounted"):
            build_from_config({**raw, "schedule": sched})
    # schedules in steps do not count epochs
    b = build_from_config({**raw, "schedule": {"name": "triangular", "max_factor": 2.0,
                                               "step_size": 3}})
    assert b.schedule.step_size == 3
    assert build_from_config({**raw, "schedule": {"name": "random"}}).schedule is not None
    # the same schedule with a constant batch size is built as before
    const = build_from_config({**TINY, "schedule": {"name": "cosine-cyclic", "period": 2}})
    assert const.schedule.steps_per_epoch == 4


def test_schedule_keys_the_instrument_would_ignore_are_refused(tmp_path):
    """A trajectory records by its own every_steps / every_epochs: ``every: 5`` recorded at
    every epoch end instead, without a word. ``start`` with ``at`` / ``log_points``: those
    named the steps and ``start`` was dropped."""
    traj = {"name": "trajectory", "path": str(tmp_path / "t")}
    for key, value in (("every", 5), ("at", [0, 4]), ("log_points", 3), ("start", 2)):
        msg = config_errors({**TINY, "measure": [{**traj, key: value}]})
        assert (f"measure[0].{key}: instrument 'trajectory' keeps its own cadence "
                "(every_steps / every_epochs)") in msg
    for key, value in (("at", [0, 4]), ("log_points", 3)):
        msg = config_errors({**TINY, "measure": [{"name": "hessian", key: value, "start": 2}]})
        assert f"measure[0].start: start is the first step of `every`; {key} names" in msg
    b = build_from_config({**TINY, "measure": [{"name": "hessian", "every": 3, "start": 2},
                                               {**traj, "every_steps": 3}]})
    assert [s for s in range(9) if b.callbacks[0].schedule(s)] == [2, 5, 8]
    assert b.callbacks[1].every_steps == 3


def test_instrument_options_are_checked_when_the_run_is_built(tmp_path):
    """Option values an instrument took until its first measurement, possibly hours into the
    run: every one reported at once under its key path when the run is built."""
    items = [{"name": "hessian", "operator": "hesian", "every": 50},
             {"name": "hessian", "k": 104, "prefix": "h2", "start": 40, "every": 50},
             {"name": "alignment", "k": 21, "every": 50},
             {"name": "dynamics", "hessian_every": 50, "hessian_tol": -1.0},
             {"name": "dynamics", "hessian_every": 50, "hessian_iter": 0},
             {"name": "trajectory", "path": str(tmp_path / "t"), "dtype": "int8"},
             {"name": "dynamics", "full_grad_every": 0},          # 0 was read as "never"
             {"name": "dynamics", "hessian_every": 2.5},
             {"name": "batch_statistics", "batch_size": 16, "eval_subset": 10}]   # was cut to 10
    with pytest.raises(ConfigError) as e:
        build_from_config({**TINY, "measure": items})
    msg = str(e.value)
    for needle in ("measure[0].operator: Invalid operator='hesian' (one of empirical_fisher, "
                   "ggn, hessian)",
                   "measure[1].k: Invalid k=104 (more eigenvalues than the model's 103 "
                   "parameters)",
                   "measure[2].k: Invalid k=21 (at most min(N, d) = 20",
                   "measure[3].hessian_tol: Invalid hessian_tol=-1.0",
                   "measure[4].hessian_iter: Invalid hessian_iter=0",
                   "measure[5].dtype: Invalid dtype='int8'",
                   "measure[6].full_grad_every: Invalid full_grad_every=0 (an int >= 1, or "
                   "leave it out for never)",
                   "measure[7].hessian_every: Invalid hessian_every=2.5",
                   "measure[8].batch_size: Invalid batch_size=16 (fresh batches are drawn from "
                   "N = 10 examples"):
        assert needle in msg, msg
    assert not (tmp_path / "t").exists()


def test_eval_mode_false_on_a_training_batch_norm_is_a_config_error():
    raw = {**TINY, "model": {"name": "mlp", "options": {"widths": [4], "batchnorm": True}},
           "measure": [{"name": "noise", "every": 3}, {"name": "noise", "eval_mode": False}]}
    with pytest.raises(ConfigError) as e:
        build_from_config(raw)
    assert str(e.value).startswith("measure[1].eval_mode: Invalid eval_mode=False (the model's "
                                   "layer 'net.2' (BatchNorm1d) is in train mode"), str(e.value)
    raw["model"]["options"]["batchnorm"] = False             # nothing mixes the examples
    assert len(build_from_config(raw).callbacks) == 2


def test_memory_budget_of_the_measuring_instruments_is_an_optional_checked_key():
    """The sharpness and step-interpolation instruments take ``memory_budget`` (bytes, or null
    for the device's default) from a config, as ``memory_budget_bytes`` reads it; a value it
    refuses is refused when the config is read, under its key."""
    items = [{"name": "sharpness", "every": 2, "memory_budget": 2 ** 20},
             {"name": "step_interpolation", "every": 2, "memory_budget": None}]
    cfg = validate_config({**TINY, "measure": items})
    assert [m["memory_budget"] for m in cfg["measure"]] == [2 ** 20, None]
    assert "memory_budget" not in validate_config(
        {**TINY, "measure": [{"name": "sharpness", "every": 2}]})["measure"][0]
    b = build_from_config({**TINY, "measure": items})
    assert [cb.memory_budget for cb in b.callbacks] == [2 ** 20, None]
    b = build_from_config({**TINY, "measure": [
        {"name": "step_interpolation", "every": 2, "memory_budget": "1GiB"}]})
    assert [cb.memory_budget for cb in b.callbacks] == [2 ** 30]
    for bad, problem in ((0, "must be >= 1"), ("1XB", "unknown unit 'XB'"),
                         (1.5, "not a whole number of bytes"), (True, "a bool is no size")):
        errors = config_errors({**TINY, "measure": [
            {"name": "step_interpolation", "every": 2, "memory_budget": bad}]})
        assert errors.startswith(f"measure[0].memory_budget: Invalid memory_budget={bad!r} "
                                 f"({problem}; bytes: "), errors


def test_a_memory_budget_written_as_a_float_or_a_size_in_yaml():
    """YAML reads ``2e9`` and ``1.5e9`` as floats, which a budget in bytes refused ("no int >=
    1") when the run was built; they, and sizes such as ``512MiB``, are whole numbers of
    bytes."""
    from sgdlab.config.io import parse_yaml

    raw = parse_yaml("""
measure:
  - {name: sharpness, every: 2, memory_budget: 2e9}
  - {name: sharpness, every: 3, memory_budget: 1.5e9}
  - {name: step_interpolation, every: 2, memory_budget: 512MiB}
""")
    assert [m["memory_budget"] for m in raw["measure"]] == [2e9, 1.5e9, "512MiB"]
    b = build_from_config({**TINY, **raw})
    assert [cb.memory_budget for cb in b.callbacks] == [2_000_000_000, 1_500_000_000,
                                                        512 * 2**20]
    assert all(type(cb.memory_budget) is int for cb in b.callbacks)
    bad = parse_yaml("measure: [{name: sharpness, every: 2, memory_budget: 2.5e-1}]")
    assert config_errors({**TINY, **bad}).startswith(
        "measure[0].memory_budget: Invalid memory_budget=0.25 (not a whole number of bytes")


def test_entropy_sgd_weight_decay_on_from_a_config():
    """Where Entropy-SGD's ℓ2 acts is a keyword of the optimizer: a run config sets it (and
    every optimizer on Entropy-SGD's code path takes it), a value it does not know is named."""
    for name in ("entropy_sgd", "entropy_adam", "hj", "parle"):
        raw = {**TINY, "optimizer": {"name": name, "L": 2, "weight_decay": 1e-3,
                                     "weight_decay_on": "both"}}
        assert validate_config(raw)["optimizer"]["weight_decay_on"] == "both"
        assert build_from_config(raw).optimizer.param_groups[0]["weight_decay_on"] == "both"
    assert build_from_config({**TINY, "optimizer": {"name": "entropy_sgd", "L": 2}}
                             ).optimizer.param_groups[0]["weight_decay_on"] == "inner"
    assert "optimizer.weight_decay_on: Invalid weight_decay_on: 'outer'" in config_errors(
        {**TINY, "optimizer": {"name": "entropy_sgd", "weight_decay_on": "outer"}})


def test_training_settings_are_a_run_config_of_the_same_training():
    from sgdlab.config.run import stored_training_settings, training_settings

    cfg = validate_config({**TINY, "train": {**TINY["train"], "device": "cpu", "threads": 1,
                                             "checkpoint_every": 3}})
    settings = training_settings(cfg)
    assert set(settings) == {"data", "model", "loss", "optimizer", "schedule", "train",
                             "measure"}
    assert "device" not in settings["train"] and "data_dir" not in settings["data"]
    # a run config that trains the same: validated again, it keeps the same settings
    assert training_settings(validate_config(settings)) == settings
    # a config stored before a key existed gets its default; a sweep's config is none
    old = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "sequence_loss"}}
    assert stored_training_settings(old) == settings
    assert stored_training_settings({"run_key": "k", "params": {}}) is None
    assert stored_training_settings({"method": "parle", **cfg}) is None


def test_training_hparams_are_a_train_runs_settings_and_a_sweeps_grid_point():
    # a run of `sgdlab train` showed every config leaf in TensorBoard's HParams dashboard:
    # where it ran and wrote (device, threads, tensorboard, checkpoint_every) among them
    from sgdlab.config.run import training_hparams
    from sgdlab.train.tensorboard import run_hparams

    cfg = validate_config({**TINY, "name": "r", "train": {
        **TINY["train"], "device": "cpu", "threads": 1, "checkpoint_every": 3,
        "tensorboard": "tb", "replacement": True}})
    hp = training_hparams(cfg)
    assert hp["optimizer.lr"] == cfg["optimizer"]["lr"] and hp["train.replacement"] == "true"
    assert hp["data.name"] == cfg["data"]["name"] and hp["measure"] == "[]"
    assert not {"name", "train.device", "train.threads", "train.checkpoint_every",
                "train.tensorboard", "train.progress"} & set(hp)
    assert set(hp) < set(run_hparams(cfg))
    sweep = {"experiment": "e", "label": "lr=0.1", "seed": 1, "run_key": "k",
             "params": {"optimizer": {"lr": 0.1}}, "grid": {"optimizer.lr": 0.1}}
    assert training_hparams(sweep) == {"optimizer.lr": 0.1, "label": "lr=0.1", "seed": 1}
    # a config of another command (not a train run's) shows its leaves, as before
    other = {"method": "parle", "optimizer": {"lr": 0.1}}
    assert training_hparams(other) == run_hparams(other) == {"method": "parle",
                                                             "optimizer.lr": 0.1}


def test_a_run_config_trains_on_a_file_of_tensors_as_a_replica_config_reads_it(tmp_path,
                                                                               monkeypatch):
    """data: {file: PATH}, as in a replica run config: the same tensors, stored absolute (the
    run is rebuilt from any folder), and the same reader's messages for a malformed file."""
    from sgdlab.errors import DataError
    from sgdlab.train.distributed import build_model_and_data

    g = torch.Generator().manual_seed(0)
    tensors = {"x_train": torch.randn(12, 1, generator=g), "y_train": torch.randn(12, 1),
               "x_test": torch.randn(4, 1), "y_test": torch.randn(4, 1)}
    torch.save(tensors, tmp_path / "d.pt")
    monkeypatch.chdir(tmp_path)
    cfg = validate_config({**TINY, "data": {"file": "d.pt"}})
    assert cfg["data"]["file"] == str(tmp_path.resolve() / "d.pt") and "name" not in cfg["data"]
    assert validate_config(cfg) == cfg
    assert "file" not in validate_config(TINY)["data"]      # stored configs stay as they were
    built = build_from_config(cfg)
    for k, v in tensors.items():
        assert torch.equal(getattr(built.data, k), v)
    _, _, replica = build_model_and_data({"data": {"file": str(tmp_path / "d.pt")},
                                          "model": {"name": "zhu-mlp-1-6-6-6-1"}})
    assert torch.equal(replica.x_train, built.data.x_train)
    torch.save({"x_train": tensors["x_train"]}, tmp_path / "bad.pt")
    messages = []
    for build in (lambda: build_from_config({**TINY, "data": {"file": "bad.pt"}}),
                  lambda: build_model_and_data({"data": {"file": "bad.pt"},
                                                "model": {"name": "mlp"}})):
        with pytest.raises(DataError, match="needs the tensors x_train and y_train") as e:
            build()
        messages.append(str(e.value).replace(str(tmp_path.resolve()) + "/", ""))
    assert messages[0] == messages[1]
    with pytest.raises(DataError, match="data file not found: .*missing.pt .*torch.save'd dict "
                                        "of tensors x_train, y_train"):
        build_from_config({**TINY, "data": {"file": "missing.pt"}})
    (tmp_path / "mnist").mkdir()
    with pytest.raises(DataError, match=r"/mnist' is a folder: .*`name:` with `data_dir:`"):
        build_from_config({**TINY, "data": {"file": "mnist"}})


def test_a_run_on_a_data_file_records_its_content_and_no_other_file_stands_in_for_it(
        tmp_path, capsys):
    """A run of a data file was recorded by its path only: after the file at that path was
    replaced, resume and measure rebuilt the run on other data, and two runs on different
    data compared equal. The run records the file's SHA-256 (`runs show` says it, `runs
    compare` sets it side by side); a rebuild from a file that has changed is refused. A config
    of a named dataset keeps the keys it had."""
    import hashlib

    from sgdlab.cli.main import main
    from sgdlab.config.run import training_settings
    from sgdlab.config.runner import resume_run, run_config
    from sgdlab.errors import DataError, UserError
    from sgdlab.store import RunStore

    def save(seed: int) -> str:
        g = torch.Generator().manual_seed(seed)
        torch.save({"x_train": torch.randn(10, 1, generator=g),
                    "y_train": torch.randn(10, 1, generator=g)}, tmp_path / "d.pt")
        return hashlib.sha256((tmp_path / "d.pt").read_bytes()).hexdigest()

    store = RunStore(tmp_path / "runs.sqlite")
    cfg = {**TINY, "data": {"file": str(tmp_path / "d.pt")},
           "train": {**TINY["train"], "epochs": 1}}
    first = save(0)
    a = run_config(cfg, store=store, out_dir=tmp_path / "a", progress=False).run_id
    second = save(1)                                  # another file at the same path
    b = run_config(cfg, store=store, out_dir=tmp_path / "b", progress=False).run_id
    runs = {r["id"]: r["config"] for r in store.list_runs()}
    assert (runs[a]["data"]["sha256"], runs[b]["data"]["sha256"]) == (first, second)
    assert training_settings(runs[a])["data"] != training_settings(runs[b])["data"]
    store.set_status(a, "interrupted", "stopped")
    with pytest.raises(UserError, match=f"has changed since the run recorded it \\(sha256 "
                                        f"{first[:16]}... recorded, {second[:16]}... now\\)"):
        resume_run(a, store=store, progress=False)
    with pytest.raises(DataError, match="has changed since the run recorded it.*; put the "
                       "recorded file back, or remove data.sha256 from the config to train on "
                       "the file as it is now$"):
        build_from_config(runs[a])
    capsys.readouterr()
    assert main(["runs", "show", b, "--store", str(store.path)]) == 0
    assert f"data file: {tmp_path / 'd.pt'} (sha256 {second})" in capsys.readouterr().out
    assert "sha256" not in validate_config(TINY)["data"]     # named data: the keys it had
    assert "data.sha256: the fingerprint of a data file, but data.file is not given" in \
        config_errors({**TINY, "data": {**TINY["data"], "sha256": first}})


def test_a_new_run_on_a_data_file_reads_it_once_for_its_sha256(tmp_path, monkeypatch):
    # the runner hashed it to record, then the build hashed it again to check
    import hashlib

    from sgdlab.config.runner import run_config

    torch.save({"x_train": torch.randn(10, 1), "y_train": torch.randn(10, 1)}, tmp_path / "d.pt")
    hashed, digest = [], hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda f, h: hashed.append(f.name) or digest(f, h))
    run_config({**TINY, "data": {"file": str(tmp_path / "d.pt")},
                "train": {**TINY["train"], "epochs": 1}}, store=tmp_path / "runs.sqlite",
               out_dir=tmp_path / "a", progress=False)
    assert hashed == [str(tmp_path / "d.pt")]


@pytest.mark.parametrize("content, reason", [
    (b"", "the file is empty"),
    (b"x_train,y_train\n1,2\n", "not a data file"),
    (b"PK\x03\x04 truncated", "corrupt"),
])
def test_an_unreadable_data_file_is_a_data_error_naming_the_file_not_a_bad_option(
        tmp_path, content, reason):
    """A data file torch cannot read (empty, another format, a broken archive) is the file's
    problem, said with the reason: it was a ConfigError under data.options, a key the config
    does not have."""
    from sgdlab.errors import DataError

    f = tmp_path / "d.pt"
    f.write_bytes(content)
    with pytest.raises(DataError) as e:
        build_from_config({**TINY, "data": {"file": str(f)}})
    assert not isinstance(e.value, ConfigError)
    assert "data.options" not in str(e.value)
    assert f"cannot read data file {str(f)!r}" in str(e.value) and reason in str(e.value)


def test_building_a_run_on_a_data_file_imports_no_distributed_training(tmp_path):
    """The reader of data files lives in the data package: a run config on a file of tensors
    is built without importing the torchrun entry point (nor config code from train)."""
    from sgdlab.testing import fresh_python

    torch.save({"x_train": torch.randn(8, 1), "y_train": torch.randn(8, 1)}, tmp_path / "d.pt")
    code = ("import sys\n"
            "from sgdlab.config import build_from_config\n"
            "from sgdlab.testing import TINY_RUN\n"
            f"build_from_config({{**TINY_RUN, 'data': {{'file': {str(tmp_path / 'd.pt')!r}}}}})\n"
            "print(sorted(m for m in sys.modules if m in ('sgdlab.train.distributed',"
            " 'sgdlab.train.communicator')))\n")
    out = fresh_python(code, env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.splitlines()[-1] == "[]"


def test_instrument_defaults_leave_an_item_of_an_unregistered_instrument_as_stored():
    # runs compare fills in stored runs' items: a plugin's instrument, its module not
    # imported, has no defaults to add and must not fail the comparison
    from sgdlab.config.run import with_instrument_defaults

    mystery = {"name": "my-plugin-probe", "every": 2, "width": 3}
    filled = with_instrument_defaults({"measure": [mystery, {"name": "hessian", "every": 5}]})
    assert filled["measure"][0] == mystery
    assert filled["measure"][1]["tol"] == 1e-3 and filled["measure"][1]["every"] == 5


def test_a_run_into_a_log_file_shows_its_progress_by_epochs(monkeypatch):
    # a bar is drawn on a terminal only: `sgdlab train > log` said nothing until the run's end
    import sgdlab.train.loop as loop
    from sgdlab.config.runner import progress_mode

    for watched, configured, shown in ((True, True, True), (False, True, "epochs"),
                                       (False, False, False), (True, False, False)):
        monkeypatch.setattr(loop, "progress_watched", lambda: watched)
        assert progress_mode(None, configured) == shown
        assert progress_mode(False, configured) is False           # --no-progress


@pytest.mark.parametrize("name, text, message", [
    ("run.yaml", 'name = "x"\n[train]\nepochs = 2\n',
     "the config must be a mapping at top level; it reads as TOML: give the file the suffix "
     ".toml"),
    ("run.yaml", '[data]\nname = "digits"\n',
     "not valid YAML: expected '<document start>', but found '<scalar>'; it reads as TOML"),
    ("run.toml", "name: x\ntrain:\n  epochs: 2\n",
     "not valid TOML: Expected '=' after a key in a key/value pair (at line 1, column 5); it "
     "reads as YAML: give the file the suffix .yaml"),
])
def test_a_toml_config_named_yaml_or_the_reverse_is_said_to_be(tmp_path, name, text, message):
    # the message was only "must be a mapping at top level" or the parser's own error
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / name)
    assert message in str(e.value)


def test_a_config_of_neither_format_gets_no_suffix_hint(tmp_path):
    (tmp_path / "run.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"mapping at top level$"):
        load_config(tmp_path / "run.yaml")


def test_a_seed_beyond_32_bits_is_named_under_its_key():
    # it passed validation and failed in np.random.seed / torch.manual_seed with a traceback
    for key in ("train.seed", "data.seed"):
        assert config_errors(apply_overrides(TINY, [f"{key}={2**32}"])) == (
            f"{key}: must be <= 4294967295, got {2**32}")


def test_a_text_item_a_schedule_cannot_read_is_named_under_its_key():
    # "schedule (step): could not convert string to float: 'a'" named the section only
    raw = apply_overrides(TINY, ["schedule={name: step, milestones: [2, a]}"])
    assert config_errors(raw) == "schedule.milestones: could not convert string to float: 'a'"


def test_a_loss_that_fails_on_the_outputs_records_no_run(tmp_path, request):
    """A model of another output count than the data's classes under loss: mse (one-hot
    labels (N, 10) against outputs (N, 3)): refused before the run is recorded, naming both
    shapes. The pre-record check left the loss's failure to training, which failed the
    recorded run at its first step."""
    from torch import nn

    from sgdlab.config.runner import run_config
    from sgdlab.errors import UserError
    from sgdlab.models import MODELS, register_model
    from sgdlab.store import RunStore

    def three(input_shape, num_outputs):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 3))

    request.addfinalizer(lambda: MODELS.pop("three-outputs", None))
    register_model("three-outputs")(three)
    raw = {**TINY, "data": {"name": "digits", "seed": 0}, "model": {"name": "three-outputs"},
           "loss": "mse"}
    store = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(UserError, match=r"OneHotMSELoss fails on the model's outputs of shape "
                       r"\(2, 3\) with targets of shape \(2,\).*first step"):
        run_config(raw, out_dir=tmp_path / "out", store=store, progress=False)
    assert store.list_runs() == [] and not (tmp_path / "out").exists()


def test_the_defaults_of_a_run_config_are_those_documented():
    # the module docstring of sgdlab.config.run (and --print-config) lists these by hand
    cfg = validate_config({"data": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
                           "optimizer": {"name": "sgd", "lr": 0.1}})
    assert cfg["train"] == {
        "epochs": 10, "batch_size": 128, "replacement": False, "drop_last": False, "seed": 0,
        "eval_every": 1, "eval_subset": None, "eval_bn": "running", "checkpoint_every": None,
        "max_steps": None, "clip_grad_norm": None, "sequence_loss": "mean", "device": "cpu",
        "dtype": "float32", "threads": None, "progress": True, "tensorboard": None}
    assert cfg["data"] == {"name": "cubic", "seed": 0, "data_dir": None, "options": {}}
    assert cfg["model"] == {"name": "zhu-mlp-1-6-6-6-1", "options": {}}
    assert cfg["loss"] == "auto" and cfg["schedule"] == {"name": "constant"}
    assert cfg["measure"] == [] and cfg["store"] == {"path": None}
    assert cfg["name"] is None and cfg["experiment"] is None and "plugins" not in cfg


@pytest.mark.parametrize("override", [
    "train.eval_every=0", "train.epochs=0", "train.max_steps=0", "data.seed=4294967295",
    "train.seed=4294967295", "train.device=cuda:10", "train.device=auto", "train.threads=1",
    "train.batch_size=1", "measure=[{name: hessian, every: 1, start: 0}]",
    "measure=[{name: hessian, at: [0, 3]}]", "train.eval_subset=1", "train.checkpoint_every=1",
    # no optimizer takes these negative; zero is plain SGD
    "optimizer.momentum=0", "optimizer.weight_decay=0", "optimizer.lr=0",
])
def test_values_at_the_edge_of_their_range_are_valid(override):
    validate_config(apply_overrides(TINY, [override]))


@pytest.mark.parametrize("override, message", [
    ("train.threads=0", "train.threads: must be >= 1, got 0"),
    ("train.eval_subset=0", "train.eval_subset: must be >= 1, got 0"),
    ("train.checkpoint_every=0", "train.checkpoint_every: must be >= 1, got 0"),
    ("train.max_steps=-1", "train.max_steps: must be >= 0, got -1"),
    ("train.eval_every=-1", "train.eval_every: must be >= 0, got -1"),
    ("train.device='cuda:'", "train.device: must be cpu, cuda, cuda:N, mps or auto, got 'cuda:'"),
    ("train.device=cuda0", "train.device: must be cpu, cuda, cuda:N, mps or auto, got 'cuda0'"),
    ("train.dtype=float46", "train.dtype: must be one of float32, float64, got 'float46' (did "
                            "you mean float64?)"),
    ("train.clip_grad_norm=.inf", "train.clip_grad_norm: must be a finite number, got inf"),
    ("measure=[{name: hessian, every: 0}]", "measure[0].every: must be >= 1, got 0"),
    ("measure=[{name: hessian, every: 2, start: -1}]", "measure[0].start: must be >= 0, got -1"),
    ("measure=[{name: hessian, at: [1, -1]}]", "measure[0].at[1]: must be >= 0, got -1"),
    ("measure=[{name: hessian, every: 2, at: [1]}]",
     "measure[0]: give at most one of every, at, log_points"),
    ("measure=[{name: hessian, start: 2, log_points: 5}]",
     "measure[0].start: start is the first step of `every`; log_points names its own steps"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay: must be >= 0, got -0.1"),
    ("optimizer={name: adam, lr: 0.1, eps: -1.0e-8}", "optimizer.eps: must be >= 0, got -1e-08"),
    ("optimizer.lr=.inf", "optimizer.lr: a learning rate must be finite, got inf"),
    ("optimizer.momentum=.inf", "optimizer.momentum: must be a finite number, got inf"),
    ("optimizer.lr=.nan", "optimizer.lr: must be a finite number, got nan"),
    ("optimizer.momentum=.nan", "optimizer.momentum: must be a finite number, got nan"),
    ("optimizer.momentum=true", "optimizer.momentum: must be a number, not a bool (True)"),
    ("optimizer={name: adam, lr: 0.1, betas: [0.9]}",
     "optimizer.betas: must be a list of 2 numbers, got [0.9]"),
    ("optimizer={name: adam, lr: 0.1, betas: [0.9, 0.99, 0.9]}",
     "optimizer.betas: must be a list of 2 numbers, got [0.9, 0.99, 0.9]"),
    ("optimizer={name: adam, lr: 0.1, betas: 0.9}",
     "optimizer.betas: must be a list of numbers, got 0.9"),
    ("optimizer.nesterov=null", "optimizer.nesterov: must be true or false, got None"),
    # a message naming three of the given keys singles none out: the section is named
    ("optimizer={name: sgd, lr: 0.1, momentum: 0.9, dampening: 0.5, nesterov: true}",
     "optimizer (sgd): Nesterov momentum requires a momentum and zero dampening"),
    ("model={name: zhu-mlp-1-6-6-6-1, warm_start: {init_from: x, checkpoint: c, step: 0, "
     "sha256: " + "a" * 64 + "}}",
     "model.warm_start: records a warm start, but model.init_from is not set"),
    ("data={file: x.pt, seed: 1}", "data.file: a data file takes no other keys, got data.seed "),
    ("model.name=null", "model.name: must be a string, got null"),
])
def test_values_out_of_range_name_their_key(override, message):
    assert message in config_errors(apply_overrides(TINY, [override]))


def test_nan_for_an_argument_whose_default_is_inf_names_the_inf_it_may_be():
    # NaN is refused for every number, inf only where the default is finite: "must be a
    # finite number" would refuse the inf such an argument takes
    from sgdlab.config.run import _check_args

    errors: list[str] = []
    _check_args("optimizer", {"cap": math.nan, "width": math.nan},
                {"cap": math.inf, "width": 1.0}, False, "f", errors)
    assert errors == ["optimizer.cap: must be a number (inf allowed), not nan",
                      "optimizer.width: must be a finite number, got nan"]


def test_a_run_config_and_an_experiment_refuse_keys_beside_a_data_file_in_one_sentence():
    """``data: {file: PATH}`` and an experiment's ``dataset: {file: PATH}`` share the check's
    words (:func:`data_file_alone`), each naming its own keys."""
    from sgdlab.config.run import data_file_alone
    from sgdlab.experiments.procedures import get_procedure

    assert data_file_alone("data", ["data.seed"]) in config_errors(
        apply_overrides(TINY, ["data={file: x.pt, seed: 1}"]))
    params = {"dataset": {"file": "x.pt", "n_train": 8}, "model": {"name": "mlp"},
              "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1, "batch_size": 8}
    with pytest.raises(ConfigError) as e:
        get_procedure("train").validate(params, "e")
    assert str(e.value) == "e: " + data_file_alone("dataset", ["dataset.n_train"], "mapping")
    assert data_file_alone("dataset", ["dataset.n_train"], "mapping") == (
        "dataset.file: a data file takes no other keys, got dataset.n_train (the whole "
        "mapping is dataset: {file: PATH})")


def test_a_data_file_is_stored_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    cfg = validate_config({**TINY, "data": {"file": "sub/../d.pt"}})
    assert cfg["data"] == {"file": str(tmp_path.resolve() / "d.pt"), "seed": 0,
                           "data_dir": None, "options": {}}


def test_an_override_without_a_value_is_null_and_leaves_the_config_given_unchanged():
    raw = {**TINY, "train": {"epochs": 2, "batch_size": 5, "eval_subset": 10}}
    out = apply_overrides(raw, ["train.eval_subset=", "schedule.name=step"])
    assert out["train"] == {"epochs": 2, "batch_size": 5, "eval_subset": None}
    assert out["schedule"] == {"name": "step"}          # a section not given is made
    assert raw["train"]["eval_subset"] == 10 and "schedule" not in raw


def test_a_yml_file_loads_and_its_name_is_its_stem_unless_given(tmp_path):
    (tmp_path / "a.run.yml").write_text("data: {name: cubic}\noptimizer: {lr: -1e-3}\n")
    assert load_config(tmp_path / "a.run.yml") == {"data": {"name": "cubic"},
                                                   "optimizer": {"lr": -0.001},
                                                   "name": "a.run"}
    (tmp_path / "b.toml").write_text('name = "mine"\n')
    assert load_config(tmp_path / "b.toml") == {"name": "mine"}


def test_a_validated_config_round_trips_through_yaml_and_keeps_its_key_order(tmp_path):
    from sgdlab.config.io import dump_yaml

    assert dump_yaml({"b": 1, "a": {"d": 2.5e-3, "c": [1, 2]}}) == (
        "b: 1\na:\n  d: 0.0025\n  c: [1, 2]\n")
    cfg = validate_config({**TINY, "optimizer": {"name": "sgd", "lr": 1e-3, "momentum": 0.9},
                           "measure": [{"name": "hessian", "at": [0, 2]}]})
    (tmp_path / "back.yaml").write_text(dump_yaml(cfg))
    assert validate_config(load_config(tmp_path / "back.yaml")) == cfg


def test_a_toml_config_is_the_same_run_as_its_yaml(tmp_path):
    (tmp_path / "r.yaml").write_text("data: {name: cubic, seed: 1}\nmodel: {name: mlp, options: "
                                     "{widths: [4, 4]}}\noptimizer: {name: sgd, lr: 1e-2}\n"
                                     "train: {batch_size: full, replacement: true}\n")
    (tmp_path / "r.toml").write_text('[data]\nname = "cubic"\nseed = 1\n[model]\nname = "mlp"\n'
                                     'options = {widths = [4, 4]}\n[optimizer]\nname = "sgd"\n'
                                     'lr = 0.01\n[train]\nbatch_size = "full"\n'
                                     'replacement = true\n')
    assert (validate_config(load_config(tmp_path / "r.yaml"))
            == validate_config(load_config(tmp_path / "r.toml")))


def test_a_section_given_as_null_takes_its_defaults():
    from sgdlab.config.run import TrainSection

    assert validate(None, TrainSection) == validate({}, TrainSection)
    assert validate(None, TrainSection)["epochs"] == 10


def test_tuples_in_a_config_are_data_and_other_objects_are_named_by_path():
    from sgdlab.config.schema import plain_data

    errors: list[str] = []
    plain_data("x", {"a": (1, [2, {"b": {3}}]), "c": (None, "s", 1.5, True)}, errors)
    assert errors == ["x.a[1][1].b: must be plain data, got set"]


def test_a_name_given_under_two_naming_keys_gets_no_hint():
    # one stray naming key is the name mistyped; two leave it unclear which was meant
    one = config_errors({**TINY, "optimizer": {"type": "sgd", "lr": 0.1}})
    assert "optimizer.name: required key is missing (write name: sgd, not type: sgd)" in one
    two = config_errors({**TINY, "optimizer": {"type": "sgd", "method": "adam", "lr": 0.1}})
    assert "optimizer.name: required key is missing" in two and "write name" not in two


def test_argument_defaults_are_the_optimizer_s_own_as_a_config_spells_them():
    from sgdlab.config.run import argument_defaults

    cfg = validate_config({**TINY, "optimizer": {"name": "adam", "lr": 0.1, "eps": 1e-6}})
    opt = argument_defaults(cfg)["optimizer"]
    # torch.optim.Adam's: betas as the list a config gives; the given keys are not repeated
    assert opt["betas"] == [0.9, 0.999] and opt["weight_decay"] == 0
    assert opt["amsgrad"] is False and "lr" not in opt and "eps" not in opt
    ent = argument_defaults(validate_config({**TINY, "optimizer": {"name": "entropy_sgd"}}))
    assert not any(k.startswith("_") for k in ent["optimizer"])     # private: not a setting


def test_only_string_keyed_plain_data_is_a_config_value():
    from sgdlab.config.run import _plain_value

    assert _plain_value({"a": [1, 2.5, None, True, "s", {"b": []}]})
    assert not _plain_value({1: "a"}) and not _plain_value((1, 2)) and not _plain_value({"a": {1}})


def test_stored_training_settings_are_none_for_a_sweep_s_config():
    from sgdlab.config.run import stored_training_settings, training_settings

    cfg = validate_config(TINY)
    assert stored_training_settings(cfg) == training_settings(cfg)
    assert "init_from" not in training_settings(cfg)["model"]
    assert stored_training_settings({**cfg, "run_key": "abc"}) is None


@pytest.mark.parametrize("override, present, absent", [
    # a key beside the name that is no argument of the model: listed as unknown, not moved
    ("model={name: mlp, colour: red}", "model.colour: unknown key (valid keys: ",
     "argument of the model"),
    # a misspelt known model: the suggestion, not the plugin advice
    ("model.name=mpl", "model.name: unknown model 'mpl' (did you mean mlp?); known: ",
     "of your own"),
])
def test_unknown_keys_and_names_get_the_one_fitting_hint(override, present, absent):
    errors = config_errors(apply_overrides(TINY, [override]))
    assert present in errors and absent not in errors


def test_a_start_of_zero_moves_nothing_and_is_valid_beside_at():
    validate_config(apply_overrides(TINY, ["measure=[{name: hessian, at: [1], start: 0}]"]))


def test_an_override_picks_an_entry_of_a_list_in_a_list():
    raw = {**TINY, "measure": [{"name": "hessian", "at": [1, 2]}]}
    assert apply_overrides(raw, ["measure[0].at[1]=7"])["measure"][0]["at"] == [1, 7]
    assert apply_overrides({"grid": [[1, 2], [3, 4]]}, ["grid[1][0]=9"]) == {
        "grid": [[1, 2], [9, 4]]}


def test_a_file_that_reads_as_an_empty_mapping_in_the_other_format_gets_no_suffix_hint(
        tmp_path):
    # "{}" is no TOML and an empty YAML mapping: renaming the file would give no config either
    (tmp_path / "run.toml").write_text("{}\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "run.toml")
    assert "not valid TOML" in str(e.value) and "reads as YAML" not in str(e.value)


def test_a_config_dumped_with_defaults_loads_back_to_the_same_config_with_long_values():
    """A long value in a section written a key per line (a path with spaces, a long list)
    stays on its one line: wrapped at 80 columns, the continuation of a path was not
    indented under its section and the YAML did not read back as the config."""
    from sgdlab.config import parse_yaml
    from sgdlab.config.io import dump_yaml_with_defaults

    cfg = {"name": "long", "data": {"name": "cubic", "options": {}},
           "model": {"name": "mlp", "options": {"widths": list(range(1000, 1040))},
                     "init_from": "/my runs/" + "a folder with spaces in its name/" * 4},
           "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
           "measure": [{"name": "hessian", "at": list(range(0, 400, 7))}]}
    defaults = {"optimizer": {"dampening": 0, "nesterov": False},
                "model.options": {"bias": True, "activation": "relu"}}
    text = dump_yaml_with_defaults(cfg, defaults)
    assert parse_yaml(text) == cfg
    # uncommented, each default is set beside the given values
    assert parse_yaml(text.replace("# ", "").replace("  default\n", "\n")) == {
        **cfg, "optimizer": {**cfg["optimizer"], "dampening": 0, "nesterov": False},
        "model": {**cfg["model"], "options": {**cfg["model"]["options"], "bias": True,
                                              "activation": "relu"}}}


def test_an_override_into_a_section_given_as_null_makes_the_section():
    # `schedule:` (null) takes the section's defaults; a --set into it gives the key
    assert apply_overrides({"schedule": None, "train": {"epochs": 1}},
                           ["schedule.name=step", "train.seed=3"]) == {
        "schedule": {"name": "step"}, "train": {"epochs": 1, "seed": 3}}


def test_a_file_of_a_packaged_config_s_name_is_read_before_the_packaged_one(tmp_path,
                                                                              monkeypatch):
    from pathlib import Path

    from sgdlab.config.io import find_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits-mlp").write_text("name: mine\n")
    assert find_config("digits-mlp") == Path("digits-mlp")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_run_is_built_in_the_dtype_its_config_names(dtype):
    built = build_from_config({**TINY, "train": {**TINY["train"], "dtype": dtype}})
    want = getattr(torch, dtype)
    assert {p.dtype for p in built.model.parameters()} == {want}
    assert built.data.x_train.dtype == want and built.data.x_test.dtype == want


@pytest.mark.parametrize("train, drop_last", [
    ({"epochs": 2}, False), ({"epochs": 3, "max_steps": 4}, False),
    ({"epochs": 2, "drop_last": True}, True), ({"epochs": 2, "max_steps": 100}, False)])
def test_measure_schedules_span_the_run_s_steps(train, drop_last):
    """log_points: 2 measures at 0, 1 and the run's last step: epochs times the steps of an
    epoch (N/B rounded up, or down with drop_last), cut at max_steps; every: 3 from start: 2
    at 2, 5, 8, ..."""
    items = [{"name": "dynamics", "log_points": 2},
             {"name": "hessian", "every": 3, "start": 2, "k": 1}]
    built = build_from_config({**TINY, "train": {"batch_size": 7, **train}, "measure": items})
    n = len(built.data.x_train)
    per_epoch = n // 7 if drop_last else math.ceil(n / 7)
    assert n % 7 != 0 and built.train_kwargs["drop_last"] is drop_last
    total = min(per_epoch * train["epochs"], train.get("max_steps") or 10**9)
    log, every = (cb.schedule for cb in built.callbacks)
    assert [s for s in range(total + 5) if log(s)] == [0, 1, total]
    assert [s for s in range(12) if every(s)] == [2, 5, 8, 11]


def test_a_cuda_device_beyond_the_machine_s_count_is_named(monkeypatch):
    from sgdlab.config.run import missing_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert missing_device("cuda") is None and missing_device("cuda:1") is None
    assert missing_device("cuda:2") == "this machine has 2 CUDA device(s)"
    assert missing_device("cpu") is None


def test_training_settings_keep_the_dtype_a_run_trains_in():
    # a float64 run's settings, run as a config, train in float64 (float32 is the default)
    from sgdlab.config.run import training_settings

    cfg = validate_config({**TINY, "train": {**TINY["train"], "dtype": "float64"}})
    again = validate_config(training_settings(cfg))
    assert again["train"]["dtype"] == "float64"
    assert training_settings(again) == training_settings(cfg)


def test_a_run_given_its_data_file_s_sha256_refuses_a_file_that_differs(tmp_path,
                                                                         monkeypatch):
    """A config that records its data file's SHA-256 (a stored run's, run again) names those
    bytes: a file that differs at that path is refused, not fingerprinted anew, and no run is
    recorded; the same bytes run."""
    import hashlib

    import sgdlab.config.runner as runner
    from sgdlab.errors import UserError
    from sgdlab.store import RunStore

    tensors = {"x_train": torch.linspace(-1, 1, 12).reshape(12, 1),
               "y_train": torch.linspace(0, 1, 12).reshape(12, 1)}
    torch.save(tensors, tmp_path / "d.pt")
    digest = hashlib.sha256((tmp_path / "d.pt").read_bytes()).hexdigest()
    store = RunStore(tmp_path / "runs.sqlite")
    monkeypatch.setattr(runner, "_execute", lambda cfg, store, run_id, *a, **k: cfg)
    other = {**TINY, "data": {"file": str(tmp_path / "d.pt"), "sha256": "0" * 64}}
    with pytest.raises(UserError):
        runner.run_config(other, out_dir=tmp_path / "a", store=store)
    assert store.list_runs() == []
    same = {**TINY, "data": {"file": str(tmp_path / "d.pt"), "sha256": digest}}
    assert runner.run_config(same, out_dir=tmp_path / "b", store=store)["data"]["sha256"] == \
        digest


def test_sigterm_while_the_data_is_built_says_terminated(tmp_path, monkeypatch):
    # main turns SIGTERM into a KeyboardInterrupt that says so: the message says which it was
    import sgdlab.config.runner as runner
    from sgdlab.errors import RunInterrupted

    def terminated(*a, **k):
        raise KeyboardInterrupt("terminated (SIGTERM)")

    monkeypatch.setattr(runner, "build_from_config", terminated)
    with pytest.raises(RunInterrupted, match="^terminated while the data and model were "
                                             "built, before the run was recorded"):
        runner.run_config(TINY, store=tmp_path / "runs.sqlite")
    assert not (tmp_path / "runs.sqlite").exists()
