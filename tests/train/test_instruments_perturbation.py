"""The ``min_abs_grad`` and ``field_alignment`` instruments (thesis Figs. 2.3b, 2.4) inside the
training loop, in float64 with plain SGD at learning rate 1 as the base: the field term the
optimizer added is then θ_before − θ_after − ∇f, read off the weights, independently of the
optimizer's report that the instruments use."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sgdlab.data.base import Dataset
from sgdlab.errors import UserError
from sgdlab.optim import build_optimizer_for
from sgdlab.testing import tiny_classification, tiny_mlp, weight_tensor_mask
from sgdlab.train.callbacks import Callback, Schedule
from sgdlab.train.instruments import build_instrument, instruments
from sgdlab.train.instruments.perturbation import FieldAlignmentCallback, MinAbsGradientCallback
from sgdlab.train.loop import train

LOSS = nn.CrossEntropyLoss()


def _data():
    x, y = tiny_classification(n=24, seed=1)
    return Dataset(x, y, x[:6], y[:6], meta={"name": "tiny", "task": "classification",
                                             "input_shape": (3,), "num_outputs": 2})


class _Spy(Callback):
    """θ before each step, ∇f after backward, θ after the step, by step count."""

    def __init__(self):
        self.before, self.grad, self.after = {}, {}, {}

    @staticmethod
    def _flat(ts):
        return torch.cat([t.detach().reshape(-1) for t in ts]).clone()

    def on_step_begin(self, ctx):
        self.before[ctx.step + 1] = self._flat(ctx.model.parameters())

    def on_after_backward(self, ctx):
        self.grad[ctx.step + 1] = self._flat(p.grad for p in ctx.model.parameters())

    def on_step_end(self, ctx):
        self.after[ctx.step] = self._flat(ctx.model.parameters())


def _run(name, *, layers=None, every=1, **opt_kw):
    model = tiny_mlp(seed=0)
    opt = build_optimizer_for(name, model, lr=1.0, **opt_kw)
    spy = _Spy()
    cbs = [spy, build_instrument("min_abs_grad", schedule=Schedule.every(every),
                                 layers=layers)]
    if name in ("trivialized", "annealed-noise"):
        cbs.append(build_instrument("field_alignment", schedule=Schedule.every(every)))
    res = train(model, LOSS, _data(), opt, epochs=2, batch_size=8, callbacks=cbs,
                progress=False)
    return res.history, spy, model, opt


@pytest.mark.parametrize("name", ["trivialized", "annealed-noise"])
def test_step_reading_is_the_gradient_the_optimizer_stepped_with(name):
    """min_abs_grad/step = min |θ_before − θ_after| (lr 1: the step is ∇f + s_i h, the field
    read off the weights); min_abs_grad/loss = min |∇f|; they differ while the field is on."""
    assert {"min_abs_grad", "field_alignment"} <= set(instruments())
    h, spy, _, _ = _run(name, coupling=0.3, tau0=4.0, seed=5)
    steps = [s for s, _ in h["min_abs_grad/step"]]
    assert steps == list(range(1, 7))
    for s, v in h["min_abs_grad/step"]:
        moved = spy.before[s] - spy.after[s]
        assert v == pytest.approx(float(moved.abs().min()), rel=1e-12, abs=1e-15)
    for s, v in h["min_abs_grad/loss"]:
        assert v == float(spy.grad[s].abs().min())
    assert all(a != b for (_, a), (_, b) in zip(h["min_abs_grad/step"],
                                                h["min_abs_grad/loss"]))


def test_without_a_field_both_readings_are_the_loss_gradient():
    h, spy, _, _ = _run("sgd", every=2)
    assert [s for s, _ in h["min_abs_grad/loss"]] == [2, 4, 6]
    assert h["min_abs_grad/loss"] == h["min_abs_grad/step"]
    for s, v in h["min_abs_grad/loss"]:
        assert v == float(spy.grad[s].abs().min())


def test_per_layer_minima_are_each_tensors_and_their_minimum_is_the_overall_one():
    h, spy, model, _ = _run("trivialized", layers="all", coupling=0.3, tau0=4.0, seed=5)
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    assert [s for s, _ in h["min_abs_grad/step"]] == list(range(1, 7))
    for s, v in h["min_abs_grad/step"]:
        moved = (spy.before[s] - spy.after[s]).split(sizes)
        per = [dict(h[f"min_abs_grad/step/{n}"])[s] for n in names]
        for m, p in zip(moved, per):
            assert p == pytest.approx(float(m.abs().min()), rel=1e-12, abs=1e-15)
        assert v == min(per)
        grads = spy.grad[s].split(sizes)
        assert [dict(h[f"min_abs_grad/loss/{n}"])[s] for n in names] == [
            float(g.abs().min()) for g in grads]


@pytest.mark.parametrize("name", ["trivialized", "annealed-noise"])
def test_alignment_is_the_weights_dot_the_steps_field(name):
    """|hᵀx| with x the weights after the step and h the step's field direction: the fixed
    field, or (resampled) (θ_before − θ_after − ∇f) / s_i read off the step."""
    h, spy, _, opt = _run(name, coupling=0.3, tau0=4.0, seed=5)
    assert [s for s, _ in h["field_alignment"]] == list(range(1, 7))
    fields = []
    for s, v in h["field_alignment/raw"]:
        direction = (spy.before[s] - spy.after[s] - spy.grad[s]) / opt.strength(s - 1)
        if name == "trivialized":
            torch.testing.assert_close(direction, opt.field, rtol=1e-9, atol=1e-12)
        fields.append(direction)
        x = spy.after[s]
        dot = abs(float(x @ direction))
        assert v == pytest.approx(dot, rel=1e-9)
        cos = dot / float(x.norm() * direction.norm())
        assert dict(h["field_alignment"])[s] == pytest.approx(cos, rel=1e-9)
    if name == "annealed-noise":     # a fresh direction each step
        assert all(not torch.allclose(a, b) for a, b in zip(fields, fields[1:]))


def test_named_layers_only_and_the_nonzero_minima():
    h, spy, model, _ = _run("sgd", layers=["2.weight"])
    assert "min_abs_grad/loss/2.weight" in h and "min_abs_grad/loss/0.weight" not in h
    for s, v in h["min_abs_grad/loss_nonzero/2.weight"]:
        g = spy.grad[s]
        assert v == float(g[-2 * 4 - 2:-2].abs().min())   # the 2 x 4 output weights
        nz = g[g != 0].abs().min()
        assert dict(h["min_abs_grad/loss_nonzero"])[s] == float(nz)
        assert dict(h["min_abs_grad/zero_fraction"])[s] == float((g == 0).double().mean())
    with pytest.raises(UserError, match="no parameter '9.weight' in the model"):
        _run("sgd", layers=["9.weight"])
    with pytest.raises(ValueError, match="Invalid layers=3"):
        build_instrument("min_abs_grad", schedule=Schedule.every(1), layers=3)


def test_alignment_needs_an_optimizer_with_a_field():
    model = tiny_mlp(seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    # measured every 4 steps: refused before the first step, not at step 4
    cb = build_instrument("field_alignment", schedule=Schedule.every(4))
    with pytest.raises(ValueError, match="needs an optimizer with a field"):
        train(model, LOSS, _data(), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
              batch_size=8, callbacks=[cb], progress=False)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_the_instruments_leave_training_unchanged():
    h0, _, m0, _ = _run("annealed-noise", coupling=0.3, tau0=4.0, seed=5)
    model = tiny_mlp(seed=0)
    opt = build_optimizer_for("annealed-noise", model, lr=1.0, coupling=0.3, tau0=4.0, seed=5)
    train(model, LOSS, _data(), opt, epochs=2, batch_size=8, progress=False)
    for a, b in zip(m0.parameters(), model.parameters()):
        assert torch.equal(a, b)
    assert math.isfinite(h0["min_abs_grad/step"][-1][1])


class _FieldOpt:
    """An optimizer that reports it added s·h, h flat over its parameter groups' order."""

    def __init__(self, params, s, h):
        self.param_groups, self._pert = [{"params": params}], (s, h)

    def last_perturbation(self):
        return self._pert


class _Switch:
    """A wrapper without a field of its own, stepping with ``active`` (as ``switch`` does)."""

    def __init__(self, active):
        self.active, self.param_groups = active, active.param_groups


def _measure_step_one(cb, ctx):
    """The instrument's step 1 by hand: the gradients read after backward, logged at its end."""
    ctx.step = 0
    cb.on_after_backward(ctx)
    ctx.step = 1
    cb.on_step_end(ctx)


def test_field_slices_follow_the_optimizer_order_skip_gradientless_tensors_and_unwrap_switch():
    model = nn.Sequential(nn.Linear(2, 1), nn.Linear(1, 1)).double()
    w0, b0, w1, b1 = model.parameters()
    order = [w1, b0, w0, b1]                   # not the model's order; b0 has no gradient
    h = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)   # w1 | b0 | w0 | b1
    for p, g in ((w0, [[0.5, -4.0]]), (w1, [[-0.25]]), (b1, [-2.0])):
        p.grad = torch.tensor(g, dtype=torch.float64)
    opt = _Switch(_FieldOpt(order, 0.5, h))
    logged = {}
    ctx = SimpleNamespace(step=0, optimizer=opt, model=model, log_dict=logged.update)
    cb = MinAbsGradientCallback(Schedule.every(1), layers="all")
    cb.on_after_backward(ctx)
    cb.on_step_end(ctx)                   # a step that did not happen: nothing logged
    assert logged == {}
    _measure_step_one(cb, ctx)
    # g + s h by hand: w1: −0.25 + 0.5; w0: (0.5 + 1.5, −4 + 2); b1: −2 + 2.5
    assert logged["min_abs_grad/step/1.weight"] == 0.25
    assert logged["min_abs_grad/step/0.weight"] == 2.0
    assert logged["min_abs_grad/step/1.bias"] == 0.5
    assert logged["min_abs_grad/step"] == 0.25 and logged["min_abs_grad/loss"] == 0.25
    assert "min_abs_grad/step/0.bias" not in logged
    logged.clear()
    FieldAlignmentCallback(Schedule.every(1)).on_step_end(ctx)
    x = torch.cat([p.detach().reshape(-1) for p in order])
    assert logged["field_alignment/raw"] == pytest.approx(abs(float(x @ h)), rel=1e-14)


def test_the_loss_gradient_is_read_before_a_base_step_changes_it_in_place():
    model = nn.Linear(2, 1, bias=False).double()
    model.weight.grad = torch.tensor([[0.5, -4.0]], dtype=torch.float64)
    # foreach Nesterov SGD adds the momentum into p.grad in place: 1.9 g at the first step
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                          foreach=True)
    logged = {}
    ctx = SimpleNamespace(step=0, optimizer=opt, model=model, log_dict=logged.update)
    cb = MinAbsGradientCallback(Schedule.every(1))
    cb.on_after_backward(ctx)
    opt.step()
    ctx.step = 1
    cb.on_step_end(ctx)
    assert logged["min_abs_grad/loss"] == 0.5 and logged["min_abs_grad/step"] == 0.5


def test_the_nonzero_minima_skip_exact_zeros_written_by_hand():
    """Gradients set by hand, (0, 0.5, −0.2) and (−0.3,), under plain SGD (no field): the
    minimum |∇f_j| is 0, over the non-zero coordinates 0.2, the zero share 1/4; the step's
    readings are the loss gradient's."""
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    b = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    model = nn.Module()
    model.w, model.b = w, b
    logged = {}
    ctx = SimpleNamespace(step=0, model=model, optimizer=torch.optim.SGD([w, b], lr=0.1),
                          log_dict=logged.update)
    cb = MinAbsGradientCallback(Schedule.every(1), layers=["w"])
    w.grad = torch.tensor([0.0, 0.5, -0.2], dtype=torch.float64)
    b.grad = torch.tensor([-0.3], dtype=torch.float64)
    _measure_step_one(cb, ctx)
    p = "min_abs_grad"
    assert logged == pytest.approx({
        f"{p}/loss": 0.0, f"{p}/step": 0.0, f"{p}/loss_nonzero": 0.2,
        f"{p}/step_nonzero": 0.2, f"{p}/zero_fraction": 0.25,
        f"{p}/loss/w": 0.0, f"{p}/step/w": 0.0, f"{p}/loss_nonzero/w": 0.2,
        f"{p}/step_nonzero/w": 0.2}, rel=1e-15)


@pytest.mark.parametrize("name", ["trivialized", "annealed-noise"])
def test_alignment_under_field_on_weights_is_over_the_weight_tensors(name):
    """With h on the weight tensors only, x is those tensors: the biases, which get no field,
    would otherwise enlarge ‖x‖ (and batch norm's scales, 1 at the start, even more)."""
    h, spy, model, opt = _run(name, coupling=0.3, tau0=4.0, seed=5, field_on="weights")
    keep = weight_tensor_mask(model.parameters())
    assert 0 < int(keep.sum()) < keep.numel()
    for s, v in h["field_alignment"]:
        direction = (spy.before[s] - spy.after[s] - spy.grad[s]) / opt.strength(s - 1)
        torch.testing.assert_close(direction[~keep], torch.zeros(int((~keep).sum()),
                                                                 dtype=direction.dtype))
        x, d = spy.after[s][keep], direction[keep]
        dot = abs(float(x @ d))
        assert dict(h["field_alignment/raw"])[s] == pytest.approx(dot, rel=1e-9)
        assert v == pytest.approx(dot / float(x.norm() * d.norm()), rel=1e-9)
        assert v > dot / float(spy.after[s].norm() * d.norm()) * (1 + 1e-6)


def test_over_weights_takes_every_minimum_over_the_weight_tensors_past_a_dead_bias():
    """A layer of two units, the second dead on the batch: its weight row and bias have
    ∇f = 0, and the field s·h (s = 0.5) is on the weights only. Over every parameter the
    dead bias sets min |∇f + s h| = 0; over the weights (by hand, float64) the minima are
    min |∇f + s h| = min(|0.3 + 0.1|, |−0.6 − 0.1|, |0 + 0.05|, |0 − 0.4|) = 0.05,
    min |∇f| = 0 (the dead row), over ∇f ≠ 0: |∇f + s h| 0.4, |∇f| 0.3; zero share 2/4."""
    model = nn.Linear(2, 2).double()
    w, b = model.weight, model.bias
    w.grad = torch.tensor([[0.3, -0.6], [0.0, 0.0]], dtype=torch.float64)
    b.grad = torch.tensor([0.7, 0.0], dtype=torch.float64)
    h = torch.tensor([0.2, -0.2, 0.1, -0.8, 0.0, 0.0], dtype=torch.float64)   # w | b
    ctx = SimpleNamespace(step=0, model=model, optimizer=_FieldOpt([w, b], 0.5, h))
    got = {}
    for over in ("all", "weights"):
        logged = {}
        ctx.log_dict = logged.update
        cb = build_instrument("min_abs_grad", schedule=Schedule.every(1), over=over,
                              layers=["weight"])
        _measure_step_one(cb, ctx)
        got[over] = logged
    p = "min_abs_grad"
    assert got["all"][f"{p}/step"] == 0.0 and got["all"][f"{p}/zero_fraction"] == 3 / 6
    assert got["weights"] == pytest.approx({
        f"{p}/step": 0.05, f"{p}/loss": 0.0, f"{p}/step_nonzero": 0.4,
        f"{p}/loss_nonzero": 0.3, f"{p}/zero_fraction": 0.5,
        f"{p}/step/weight": 0.05, f"{p}/loss/weight": 0.0, f"{p}/step_nonzero/weight": 0.4,
        f"{p}/loss_nonzero/weight": 0.3}, rel=1e-15)


def test_over_weights_refuses_a_named_bias_and_an_unknown_choice():
    model = nn.Linear(2, 2)
    cb = MinAbsGradientCallback(Schedule.every(1), layers=["bias"], over="weights")
    with pytest.raises(ValueError, match="'bias' is not a weight tensor"):
        cb.check(model, None)
    with pytest.raises(ValueError, match="Invalid over='biases'"):
        MinAbsGradientCallback(Schedule.every(1), over="biases")
