"""The ``entropy_angle`` instrument (thesis §3.3.5) inside the training loop: what it logs, that
it measures its own estimate from the current parameters, that training goes on as without
it, and its options in a run config."""
from __future__ import annotations

import copy
import math
import re
import warnings
from types import SimpleNamespace

import jsonschema
import pytest
import torch
from torch import nn

from sgdlab.config import apply_overrides, build_from_config, json_schema, validate_config
from sgdlab.errors import ConfigError
from sgdlab.measure.entropy_gradient import local_entropy_gradient_angle
from sgdlab.optim.entropy_sgd import EntropySGD
from sgdlab.testing import TINY_RUN, config_errors, tiny_classification, tiny_mlp, toy_dataset
from sgdlab.train.callbacks import MeasurementCallback, Schedule
from sgdlab.train.instruments import build_instrument, instruments
from sgdlab.train.loop import train

torch.set_num_threads(1)

SERIES = ("entropy_angle/degrees", "entropy_angle/cosine", "entropy_angle/grad_norm",
          "entropy_angle/sgd_grad_norm")




def _model(dropout: bool = False):
    torch.manual_seed(0)
    layers = [nn.Linear(4, 6), nn.Tanh()] + ([nn.Dropout(0.3)] if dropout else [])
    return nn.Sequential(*layers, nn.Linear(6, 3))


def _entropy_sgd(model):
    return EntropySGD(model.parameters(), lr=1.0, inner_lr=0.1, L=3, gamma=0.5, noise=1e-3,
                      seed=4)


def test_logs_the_measurement_of_the_current_parameters_with_its_own_generator():
    """Under Entropy-SGD: every logged value is local_entropy_gradient_angle of the model as
    it is after that step, on the evaluation set, with the generator seed + step, so neither
    the optimizer's running average z nor its batches enter the measurement."""
    assert "entropy_angle" in instruments()
    model, data = _model(), toy_dataset()
    cb = build_instrument("entropy_angle", schedule=Schedule.every(3), gamma=0.05, beta=1e4,
                          steps=4, eval_subset=None, seed=7)
    seen = {}

    def keep_model(ctx):
        seen[ctx.step] = copy.deepcopy(ctx.model)
        return {}
    keep = MeasurementCallback(keep_model, Schedule.every(3))
    res = train(model, nn.CrossEntropyLoss(), data, _entropy_sgd(model), epochs=1,
                batch_size=8, callbacks=[keep, cb], progress=False)
    h = res.history
    assert all(k in h for k in SERIES)
    # step 0 too, with batches of the loop's size (it had no batch to take the size from)
    assert [s for s, _ in h["entropy_angle/degrees"]] == [0, 3]
    for step, value in h["entropy_angle/degrees"]:
        ref = local_entropy_gradient_angle(
            seen[step].eval(), nn.CrossEntropyLoss(), (data.x_train, data.y_train), 0.05,
            batch_size=8, beta=1e4, steps=4,
            generator=torch.Generator().manual_seed(7 + step))
        assert value == ref.degrees
        assert dict(h["entropy_angle/cosine"])[step] == ref.cosine
        assert dict(h["entropy_angle/grad_norm"])[step] == ref.entropy_grad_norm
        assert 0 < value < 180 and math.cos(math.radians(value)) == pytest.approx(
            ref.cosine, abs=1e-12)


def test_a_diverged_chain_logs_nothing_and_training_goes_on_a_diverged_model_ends_it():
    """A Langevin chain that blows up on a finite model is the measurement's failure: nothing
    logged at those steps, a warning, and the same training as without the instrument; a
    model that diverges still ends the run as diverged."""
    def run(lr, callbacks):
        model = _model()
        return train(model, nn.CrossEntropyLoss(), toy_dataset(),
                     torch.optim.SGD(model.parameters(), lr=lr), epochs=1, batch_size=8,
                     callbacks=callbacks, progress=False)

    cb = build_instrument("entropy_angle", schedule=Schedule.every(2), gamma=0.05,
                          beta=1e4, steps=30, inner_lr=1e6, batch_size=8)
    with pytest.warns(RuntimeWarning, match="the local-entropy estimate diverged") as seen:
        res = run(0.1, [cb])
    assert [re.search(r"at step (\d+)", str(w.message))[1] for w in seen] == ["0", "2", "4"]
    plain = run(0.1, [])
    assert res.status == "finished"
    assert not any(k in res.history for k in SERIES)
    assert res.history["train_loss"] == plain.history["train_loss"]
    cb = build_instrument("entropy_angle", schedule=Schedule.every(1), gamma=0.05,
                          beta=1e4, steps=2, batch_size=8)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert run(math.inf, [cb]).status == "diverged"
    # the model's divergence, not the chain's: no "training goes on" said of it
    assert not [w for w in seen if "the local-entropy estimate diverged" in str(w.message)]


def test_a_given_batch_size_or_the_full_gradient_logs_from_step_0():
    model, data = _model(), toy_dataset()
    cbs = [build_instrument("entropy_angle", schedule=Schedule.every(2), gamma=0.05,
                            beta=1e4, steps=2, batch_size=6),
           build_instrument("entropy_angle", schedule=Schedule.every(2), gamma=0.05,
                            beta=1e4, method="importance", num_samples=8,
                            sgd_gradient="full", prefix="ea_is")]
    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=1, batch_size=8, callbacks=cbs, progress=False)
    assert [s for s, _ in res.history["entropy_angle/degrees"]] == [0, 2, 4]
    assert [s for s, _ in res.history["ea_is/degrees"]] == [0, 2, 4]


@pytest.mark.parametrize("optimizer,dropout,eval_mode", [
    ("entropy_sgd", False, True), ("sgd", True, True), ("sgd", True, False)])
def test_training_takes_the_same_steps_with_the_instrument(optimizer, dropout, eval_mode):
    """The Langevin chain runs on copies of the parameters, with its own generator and fixed
    dropout masks: the run's weights end bit for bit as without the instrument (Entropy-SGD's
    own Langevin noise, dropout masks from torch's global generator)."""
    ends = []
    for with_cb in (False, True):
        model = _model(dropout)
        opt = (_entropy_sgd(model) if optimizer == "entropy_sgd"
               else torch.optim.SGD(model.parameters(), lr=0.1))
        cbs = [build_instrument("entropy_angle", schedule=Schedule.every(1), gamma=0.05,
                                beta=1e4, steps=3, eval_mode=eval_mode)] if with_cb else []
        res = train(model, nn.CrossEntropyLoss(), toy_dataset(), opt, epochs=1, batch_size=8,
                    callbacks=cbs, progress=False)
        assert ("entropy_angle/degrees" in res.history) == with_cb
        ends.append(copy.deepcopy(model.state_dict()))
    assert all(torch.equal(ends[0][k], ends[1][k]) for k in ends[0])


@pytest.mark.parametrize("options,says", [
    ({"gamma": 0}, "Invalid gamma=0 (the scope, finite and > 0)"),
    ({"gamma": -1.0}, "Invalid gamma=-1.0"),
    ({"gamma": 0.1, "method": "mcmc"}, "Invalid method='mcmc' (one of langevin, importance)"),
    ({"gamma": 0.1, "beta": 0}, "Invalid beta=0"),
    ({"gamma": 0.1, "beta": math.inf, "method": "importance"}, "Invalid beta=inf"),
    ({"gamma": 0.1, "steps": 0}, "Invalid steps=0 (an int >= 1)"),
    ({"gamma": 0.1, "alpha": 1}, "Invalid alpha=1 (in [0, 1))"),
    ({"gamma": 0.1, "batch_size": 0}, "Invalid batch_size=0"),
    ({"gamma": 0.1, "sgd_gradient": "minibatch"}, "Invalid sgd_gradient='minibatch'"),
    ({"gamma": 0.1, "num_samples": 0}, "Invalid num_samples=0"),
])
def test_bad_options_are_refused_when_built(options, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        build_instrument("entropy_angle", schedule=Schedule.every(1), **options)


TINY = {**TINY_RUN, "train": {"epochs": 1, "batch_size": 5}}


def test_run_configs_take_it_and_refuse_unknown_or_missing_keys():
    good = {**TINY, "measure": [{"name": "entropy_angle", "every": 4, "gamma": 0.1,
                                 "beta": 1e4, "method": "importance", "num_samples": 4,
                                 "eval_subset": 20}]}
    built = build_from_config(validate_config(good))
    res = train(*built[:4], callbacks=built.callbacks,
                **{**built.train_kwargs, "progress": False})
    assert res.history["entropy_angle/degrees"]
    assert "measure[0].gama: unknown key (did you mean gamma?)" in config_errors(
        apply_overrides(TINY, ["measure=[{name: entropy_angle, gama: 0.1}]"]))
    assert "measure[0].gamma: required by instrument 'entropy_angle'" in config_errors(
        apply_overrides(TINY, ["measure=[{name: entropy_angle, every: 2}]"]))
    assert "measure[0].steps: must be a number, got 'many'" in config_errors(
        apply_overrides(TINY, ["measure=[{name: entropy_angle, gamma: 0.1, steps: many}]"]))
    with pytest.raises(ConfigError, match=re.escape("measure[0].gamma: Invalid gamma=-0.1")):
        build_from_config(apply_overrides(TINY, ["measure=[{name: entropy_angle, "
                                                 "gamma: -0.1}]"]))
    with pytest.raises(ConfigError, match=re.escape(
            "measure[0].batch_size: Invalid batch_size=30 (mini-batches are drawn from N = 20")):
        build_from_config(apply_overrides(TINY, ["measure=[{name: entropy_angle, gamma: 0.1, "
                                                 "batch_size: 30, eval_subset: 20}]"]))
    schema = jsonschema.Draft202012Validator(json_schema())
    assert list(schema.iter_errors(good)) == []
    assert list(schema.iter_errors(apply_overrides(
        good, ["measure=[{name: entropy_angle, gamma: 0.1, gama: 1}]"])))
    assert list(schema.iter_errors(apply_overrides(
        good, ["measure=[{name: entropy_angle, every: 2}]"])))


def test_logs_algorithm_2s_chain_with_its_options_on_a_quadratic_by_hand():
    """L(w) = ½ wᵀAw (a linear model under MSE, float64) and a run that does not move
    (lr = 0): the logged values are the noiseless chain of Algorithm 2 with the instrument's
    own ``inner_lr``, ``alpha``, ``steps`` and ``gamma`` written out by hand, y ← y −
    η_y(Ay + γ⁻¹(y − x)), z ← αz + (1 − α)y, ∇f_γ = γ⁻¹(x − z), against the full gradient Ax."""
    from sgdlab.data.base import Dataset

    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    lam = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    A = U @ torch.diag(lam) @ U.T
    X = math.sqrt(3 / 2) * U @ torch.diag(lam.sqrt()) @ U.T      # 2XᵀX/3 = A
    Y = torch.zeros(3, 1, dtype=torch.float64)
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -0.5, 0.8]], dtype=torch.float64))
    x = model.weight.detach().reshape(-1).clone()
    gamma, eta, alpha, L = 2.0, 0.3, 0.6, 4
    y, z = x.clone(), x.clone()
    for _ in range(L):
        y = y - eta * (A @ y + (y - x) / gamma)
        z = alpha * z + (1 - alpha) * y
    ent, sgd = (x - z) / gamma, A @ x
    cos = float(ent @ sgd / (ent.norm() * sgd.norm()))
    data = Dataset(X, Y, X, Y, {"name": "quad", "task": "regression", "num_outputs": 1})
    cb = build_instrument("entropy_angle", schedule=Schedule.every(1), gamma=gamma,
                          beta=math.inf, steps=L, inner_lr=eta, alpha=alpha, batch_size=3,
                          sgd_gradient="full", eval_subset=None)
    res = train(model, nn.MSELoss(), data, torch.optim.SGD(model.parameters(), lr=0.0),
                epochs=1, batch_size=3, callbacks=[cb], progress=False)
    h = {k: dict(res.history[k]) for k in SERIES}
    assert h["entropy_angle/cosine"][0] == pytest.approx(cos, abs=1e-12)
    assert h["entropy_angle/degrees"][0] == pytest.approx(math.degrees(math.acos(cos)),
                                                         abs=1e-9)
    assert h["entropy_angle/grad_norm"][0] == pytest.approx(float(ent.norm()), rel=1e-12)
    assert h["entropy_angle/sgd_grad_norm"][0] == pytest.approx(float(sgd.norm()), rel=1e-12)
    assert 5 < h["entropy_angle/degrees"][0] < 175          # the two directions differ


def test_a_step_batch_larger_than_the_evaluation_set_draws_all_of_it():
    """Batches of 8 and an evaluation set of 5: the instrument's mini-batches (the step's size
    by default) hold all 5 examples, so its SGD gradient is the evaluation set's full one."""
    model = _model()
    cbs = [build_instrument("entropy_angle", schedule=Schedule.every(2), gamma=0.05,
                            beta=1e4, steps=2, eval_subset=5, prefix=prefix,
                            sgd_gradient=sgd)
           for prefix, sgd in (("ea_batch", "batch"), ("ea_full", "full"))]
    res = train(model, nn.CrossEntropyLoss(), toy_dataset(),
                torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=8,
                callbacks=cbs, progress=False, max_steps=3)
    batch, full = (dict(res.history[f"{p}/sgd_grad_norm"]) for p in ("ea_batch", "ea_full"))
    assert list(batch) == [0, 2] == list(full)
    assert all(batch[s] == pytest.approx(full[s], rel=1e-5) for s in batch)


def test_the_full_sgd_gradient_leaves_the_chain_on_mini_batches_of_the_steps_size():
    """``sgd_gradient="full"`` is about g only: the Langevin chain still steps on mini-batches
    of the step's size (8 here), as the measurement with ``batch_size=8`` does, not on all of
    the evaluation set."""
    model, data = _model(), toy_dataset()
    x0 = copy.deepcopy(model).eval()
    cb = build_instrument("entropy_angle", schedule=Schedule.every(1), gamma=0.05,
                          beta=math.inf, steps=3, sgd_gradient="full", eval_subset=None, seed=3)
    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.0),
                epochs=1, batch_size=8, callbacks=[cb], progress=False, max_steps=1)
    logged = dict(res.history["entropy_angle/grad_norm"])[0]

    def measured(b):
        return local_entropy_gradient_angle(
            x0, nn.CrossEntropyLoss(), (data.x_train, data.y_train), 0.05, batch_size=b,
            sgd_gradient="full", beta=math.inf, steps=3,
            generator=torch.Generator().manual_seed(3)).entropy_grad_norm
    assert logged == measured(8)
    assert abs(measured(None) - logged) > 1e-6 * logged


def test_importance_sampling_logs_the_measurement_called_by_hand_without_a_batch_size():
    """``method="importance"`` with ``sgd_gradient="full"`` draws no mini-batch: at step 0 of a
    loop that says no batch size it still logs, the value of local_entropy_gradient_angle
    called by hand with the instrument's gamma, beta and num_samples and the generator
    seed + step (float64); another num_samples gives another estimate."""
    model, (x, y) = tiny_mlp(3, 4, 2, seed=0), tiny_classification(n=6, seed=1)
    ctx = SimpleNamespace(model=model, loss_fn=nn.CrossEntropyLoss(), batch=None,
                          batch_size=None, step=0,
                          data=SimpleNamespace(x_train=x, y_train=y))
    cb = build_instrument("entropy_angle", every=1, gamma=0.2, beta=3.0, method="importance",
                          num_samples=5, sgd_gradient="full", eval_subset=None, seed=2)
    got = cb._measure(ctx)

    def by_hand(num_samples):
        return local_entropy_gradient_angle(
            model, nn.CrossEntropyLoss(), (x, y), 0.2, sgd_gradient="full", beta=3.0,
            method="importance", num_samples=num_samples,
            generator=torch.Generator().manual_seed(2))
    ref = by_hand(5)
    assert got == {"entropy_angle/degrees": ref.degrees, "entropy_angle/cosine": ref.cosine,
                   "entropy_angle/grad_norm": ref.entropy_grad_norm,
                   "entropy_angle/sgd_grad_norm": ref.sgd_grad_norm}
    assert by_hand(6).entropy_grad_norm != ref.entropy_grad_norm


def test_the_edges_of_the_options_ranges():
    """alpha = 0 (z the chain's last point) and a batch_size of the whole evaluation set are
    allowed; an infinite scope gamma is not (finite and > 0), nor a batch larger than the
    evaluation set."""
    assert build_instrument("entropy_angle", every=1, gamma=0.1, alpha=0).alpha == 0
    with pytest.raises(ValueError, match=re.escape("Invalid gamma=inf (the scope, finite")):
        build_instrument("entropy_angle", every=1, gamma=math.inf)
    data = SimpleNamespace(x_train=torch.zeros(20, 4))
    for b in (20, 21):
        cb = build_instrument("entropy_angle", every=1, gamma=0.1, batch_size=b,
                              eval_subset=None)
        if b == 20:
            cb.check(_model(), data)
        else:
            with pytest.raises(ValueError, match=r"Invalid batch_size=21 .* N = 20"):
                cb.check(_model(), data)


def test_the_memory_budget_reaches_the_measurement(monkeypatch):
    """``memory_budget`` (as memory_budget_bytes reads it) is passed to the measurement."""
    import sgdlab.train.instruments.entropy_gradient as inst

    seen = []
    real = inst.local_entropy_gradient_angle

    def spy(*args, **kw):
        seen.append(kw["memory_budget"])
        return real(*args, **kw)

    monkeypatch.setattr(inst, "local_entropy_gradient_angle", spy)
    model = _model()
    train(model, nn.CrossEntropyLoss(), toy_dataset(), torch.optim.SGD(model.parameters(),
          lr=0.1), epochs=1, batch_size=8, progress=False, max_steps=1,
          callbacks=[build_instrument("entropy_angle", at=[1], gamma=0.05, beta=1e4, steps=2,
                                      memory_budget="8KiB")])
    assert seen == [8192]
