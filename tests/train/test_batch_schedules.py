"""Cyclic batch size (Jastrzebski et al. 2018): values per epoch, config round trip, and use as
``train(batch_size=...)``."""
import pytest
import torch

from sgdlab.train.batch_schedules import (
    ConstantBatchSize,
    CyclicBatchSize,
    batch_size_trace,
    build_batch_schedule,
)


def test_triangular_cycle_128_640():
    s = CyclicBatchSize(128, 640, period=4)
    assert [s(e) for e in range(9)] == [128, 384, 640, 384, 128, 384, 640, 384, 128]
    hi = CyclicBatchSize(128, 640, period=4, start="high")
    assert [hi(e) for e in range(4)] == [640, 384, 128, 384]
    odd = CyclicBatchSize(100, 400, period=3)
    assert [odd(e) for e in range(4)] == [100, 300, 300, 100]


def test_harmonic_cycle_sweeps_eta_over_b_as_the_cyclic_learning_rate_sweeps_eta_over_s():
    # Jastrzebski et al. Fig. 1: B in [128, 640] at η = 0.005 against η in [0.001, 0.005] at
    # S = 128; the cyclic learning rate's η/S is linear in time between the same ends
    from sgdlab.optim.protocols import lr_trace

    period = 10
    clr = lr_trace("triangular", 2 * period, lr=0.001, max_factor=5.0,
                   step_size_epochs=period / 2)
    cbs = build_batch_schedule({"kind": "cyclic", "low": 128, "high": 640, "period": period,
                                "shape": "harmonic", "start": "high"})
    for e in range(2 * period):
        # B is rounded to an int: η/B within half a batch of the exact 1/B
        assert 0.005 / cbs(e) == pytest.approx(clr[e] / 128, rel=0.5 / 128)
    assert [cbs(e) for e in (0, 5, 10)] == [640, 128, 640]
    # a batch size linear in time gives η/B well below the straight line mid-cycle
    lin = CyclicBatchSize(128, 640, period=period, start="high")
    assert 0.005 / lin(2) < 0.6 * clr[2] / 128


def test_square_cycle():
    s = CyclicBatchSize(128, 640, period=4, shape="square")
    assert [s(e) for e in range(8)] == [128, 128, 640, 640] * 2
    s = CyclicBatchSize(128, 640, period=2, shape="square", start="high")
    assert [s(e) for e in range(4)] == [640, 128, 640, 128]


def test_config_round_trip_and_description():
    spec = {"kind": "cyclic", "low": 128, "high": 640, "period": 4, "shape": "square"}
    s = build_batch_schedule(spec)
    assert s.state_dict() == {**spec, "start": "low"}
    assert build_batch_schedule(s.state_dict()) == s
    assert "640" in s.description and "CyclicBatchSize" in repr(s)
    assert build_batch_schedule(32) == ConstantBatchSize(32)
    s.load_state_dict(s.state_dict())
    with pytest.raises(ValueError):
        s.load_state_dict({"kind": "constant", "size": 3})


def test_trace_counts_steps_per_epoch():
    tr = batch_size_trace({"kind": "cyclic", "low": 2, "high": 6, "period": 2,
                           "shape": "square"}, num_samples=10, epochs=2)
    assert tr == [2] * 5 + [6] * 2


@pytest.mark.parametrize("spec,match", [
    ({"kind": "cyclic", "low": 0, "high": 4, "period": 2}, "low"),
    ({"kind": "cyclic", "low": 8, "high": 4, "period": 2}, "high"),
    ({"kind": "cyclic", "low": 2, "high": 4, "period": 1}, "period"),
    ({"kind": "cyclic", "low": 2, "high": 4, "period": 2, "shape": "sine"}, "shape"),
    ({"kind": "cyclic", "low": 2, "high": 4, "period": 2, "start": "mid"}, "start"),
    ({"kind": "nope"}, "kind"),
    ({"kind": "constant", "size": 0}, "size"),
    (True, "an int or a dict"),
    ({"kind": "cyclic", "low": 2}, "missing high, period"),
])
def test_invalid(spec, match):
    with pytest.raises(ValueError, match=match):
        build_batch_schedule(spec)


def test_drives_the_training_loop():
    from sgdlab.data.base import Dataset
    from sgdlab.testing import tiny_classification, tiny_mlp
    from sgdlab.train.loop import train

    x, y = tiny_classification(n=12, dtype=torch.float32)
    ds = Dataset(x, y, x, y, {"name": "tiny", "task": "classification", "num_outputs": 2})
    model = tiny_mlp(dtype=torch.float32)
    from sgdlab.optim import build_schedule
    from sgdlab.report.figures.protocols import protocol_curves
    from sgdlab.train.instruments.noise_protocols import ProtocolCallback

    sched = CyclicBatchSize(3, 12, period=2, shape="square")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lr_sched = build_schedule("random", opt, steps_per_epoch=1, total_steps=10, seed=1)
    res = train(model, torch.nn.CrossEntropyLoss(), ds, opt, epochs=4, batch_size=sched,
                schedule=lr_sched, progress=False, eval_every=0,
                callbacks=[ProtocolCallback()])
    # epochs alternate B = 3 (4 steps) and B = 12 (1 step)
    assert res.steps == 4 + 1 + 4 + 1
    assert [v for _, v in res.history["batch_size"]] == [3] * 4 + [12] + [3] * 4 + [12]
    lrs = [v for _, v in res.history["lr_step"]]
    assert len(set(lrs)) == 10 and all(0 <= v <= 0.2 for v in lrs)
    ratio = [v for _, v in res.history["lr_over_batch"]]
    sizes = [v for _, v in res.history["batch_size"]]
    assert ratio == pytest.approx([lr / b for lr, b in zip(lrs, sizes)]) and len(ratio) == 10
    fig = protocol_curves({"random lr + cyclic B": res.history})
    assert len(fig.axes) == 3


def test_random_lr_sgd_logs_the_step_it_takes():
    # Musso's random learning rate: random-lr-sgd draws α inside step(); lr_step was the
    # group's constant l, while a `random` schedule on SGD logs α·l
    from sgdlab.data.base import Dataset
    from sgdlab.optim import build_optimizer
    from sgdlab.testing import tiny_classification, tiny_mlp
    from sgdlab.train.callbacks import Callback
    from sgdlab.train.instruments.noise_protocols import ProtocolCallback
    from sgdlab.train.loop import train

    class Alphas(Callback):
        def __init__(self):
            self.seen = []

        def on_step_end(self, ctx):
            self.seen.append((ctx.step - 1, ctx.optimizer.last_alpha))

    x, y = tiny_classification(n=12, dtype=torch.float32)
    ds = Dataset(x, y, x, y, {"name": "tiny", "task": "classification", "num_outputs": 2})
    model = tiny_mlp(dtype=torch.float32)
    opt = build_optimizer("random-lr-sgd", model.parameters(), lr=0.1, momentum=0.9, seed=3)
    spy = Alphas()
    res = train(model, torch.nn.CrossEntropyLoss(), ds, opt, epochs=3, batch_size=4,
                progress=False, eval_every=0, callbacks=[ProtocolCallback(), spy])
    assert res.steps == 9 and len(spy.seen) == 9
    lrs = res.history["lr_step"]
    assert [s for s, _ in lrs] == [s for s, _ in spy.seen] == list(range(9))
    assert [v for _, v in lrs] == pytest.approx([0.1 * a for _, a in spy.seen])
    assert len({v for _, v in lrs}) == 9
    assert [s for s, _ in res.history["batch_size"]] == list(range(9))
    assert [v for _, v in res.history["lr_over_batch"]] == pytest.approx(
        [0.1 * a / 4 for _, a in spy.seen])


@pytest.mark.parametrize("wrapper", ["switch", "trivialized"])
def test_random_lr_sgd_inside_a_wrapper_logs_the_step_it_takes(wrapper):
    # random-lr-sgd as the optimizer that switch (after its switch step) or trivialized steps
    # with draws α inside the wrapper's step as well: lr_step was the group's constant l
    from sgdlab.data.base import Dataset
    from sgdlab.optim import build_optimizer
    from sgdlab.testing import tiny_classification, tiny_mlp
    from sgdlab.train.callbacks import Callback
    from sgdlab.train.instruments.noise_protocols import ProtocolCallback
    from sgdlab.train.loop import train

    x, y = tiny_classification(n=12, dtype=torch.float32)
    ds = Dataset(x, y, x, y, {"name": "tiny", "task": "classification", "num_outputs": 2})
    model = tiny_mlp(dtype=torch.float32)
    if wrapper == "switch":
        opt = build_optimizer("switch", model.parameters(), first="sgd", second="random-lr-sgd",
                              switch_step=3, first_hyper={"lr": 0.2},
                              second_hyper={"lr": 0.1, "seed": 3})
        inner, first_steps = opt.second, 3
    else:
        opt = build_optimizer("trivialized", list(model.parameters()), base="random-lr-sgd",
                              lr=0.1, coupling=1e-3, p=3)
        inner, first_steps = opt.base, 0

    class Alphas(Callback):
        def __init__(self):
            self.seen = []

        def on_step_end(self, ctx):
            self.seen.append(inner.last_alpha)

    spy = Alphas()
    res = train(model, torch.nn.CrossEntropyLoss(), ds, opt, epochs=3, batch_size=4,
                progress=False, eval_every=0, callbacks=[ProtocolCallback(), spy])
    lrs = res.history["lr_step"]
    assert [s for s, _ in lrs] == list(range(9))
    want = [0.2] * first_steps + [0.1 * a for a in spy.seen[first_steps:]]
    assert [v for _, v in lrs] == pytest.approx(want)
    assert len({v for _, v in lrs[first_steps:]}) == 9 - first_steps


def test_square_cycle_of_an_odd_period_starts_at_its_start():
    # period 5: the first half is epochs 0, 1, 2 (e < 2.5); start="high" reverses it
    s = CyclicBatchSize(10, 20, period=5, shape="square")
    assert [s(e) for e in range(6)] == [10, 10, 10, 20, 20, 10]
    s = CyclicBatchSize(10, 20, period=5, shape="square", start="high")
    assert [s(e) for e in range(6)] == [20, 20, 20, 10, 10, 20]
    # a triangular cycle shifts by P // 2 = 2 epochs: fractions 0.8, 0.8, 0.4, 0, 0.4 of the way
    t = CyclicBatchSize(10, 20, period=5, start="high")
    assert [t(e) for e in range(5)] == [18, 18, 14, 10, 14]


def test_triangular_and_harmonic_round_half_up_where_floor_and_round_half_even_differ():
    # period 4, 1 → 2: epoch 1 is half-way, 1.5, rounded up to 2 (a floor would give 1)
    s = CyclicBatchSize(1, 2, period=4)
    assert [s(e) for e in range(4)] == [1, 2, 2, 2]
    # harmonic 2 → 6 at frac 0.5: 1/B = 1/2 + (1/6 − 1/2)/2 = 1/3, B = 3; at frac 1, 6
    h = CyclicBatchSize(2, 6, period=4, shape="harmonic")
    assert [h(e) for e in range(4)] == [2, 3, 6, 3]
    # triangular 2 → 3 half-way is 2.5: up to 3 (Python's round() would give 2)
    assert [CyclicBatchSize(2, 3, period=4)(e) for e in range(4)] == [2, 3, 3, 3]
    # harmonic 2 → 5 half-way: 1/B = (1/2 + 1/5)/2 = 7/20, B = 20/7 = 2.857..., rounded to 3
    assert [CyclicBatchSize(2, 5, period=4, shape="harmonic")(e) for e in range(4)] == [
        2, 3, 5, 3]


def test_a_negative_epoch_is_refused_and_low_equal_to_high_is_a_constant_cycle():
    with pytest.raises(ValueError, match="epoch=-1"):
        CyclicBatchSize(2, 4, period=2)(-1)
    with pytest.raises(ValueError, match="epoch=-1"):
        ConstantBatchSize(3)(-1)
    s = CyclicBatchSize(5, 5, period=3)
    assert [s(e) for e in range(4)] == [5] * 4


def test_description_names_the_batch_size_the_cycle_starts_from():
    assert CyclicBatchSize(128, 640, period=10, start="high").description == (
        "cyclic 128–640, triangular, period 10 epochs, from 640")
    assert CyclicBatchSize(128, 640, period=4, shape="square").description.endswith("from 128")
    assert ConstantBatchSize(32).description == "32"


def _protocol_steps(cb, opt, steps: int, batch_size: int, after=None) -> list[tuple]:
    """Drive ``cb`` by hand around ``steps`` steps of ``opt`` (every gradient 1, batches of
    ``batch_size``); ``after(k, logged)`` runs after step k. Returns what ``cb`` logged, as
    (name, value, step)."""
    from types import SimpleNamespace

    logged: list[tuple] = []
    ctx = SimpleNamespace(optimizer=opt, batch=(torch.zeros(batch_size, 2),
                                                torch.zeros(batch_size)),
                          log=lambda name, v, step: logged.append((name, v, step)))
    params = [p for g in opt.param_groups for p in g["params"]]
    for k in range(steps):
        ctx.step = k
        cb.on_step_begin(ctx)
        for p in params:
            p.grad = torch.ones(1)
        opt.step()
        cb.on_step_end(ctx)
        if after is not None:
            after(k, logged)
    return logged


def test_random_lr_sgd_with_two_groups_logs_the_first_groups_step():
    # one draw u per step (Musso eq. (1)); the first group (lr 0.1, α = u on U[0, 1]) is the
    # one logged, not the second (lr 0.3, "mean-lr": α = 2u on U[0, 2])
    from sgdlab.optim.random_lr import RandomLRSGD
    from sgdlab.train.instruments.noise_protocols import ProtocolCallback

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = RandomLRSGD([{"params": [a]}, {"params": [b], "lr": 0.3, "convention": "mean-lr"}],
                      lr=0.1, seed=0)

    def check(k, logged):
        u = opt.last_alphas[0]
        assert opt.last_alphas[1] == 2 * u
        assert logged[-3:] == [("lr_step", pytest.approx(0.1 * u), k), ("batch_size", 5, k),
                               ("lr_over_batch", pytest.approx(0.1 * u / 5), k)]
    _protocol_steps(ProtocolCallback(), opt, 3, 5, after=check)


def test_protocol_callback_logs_only_the_scheduled_steps():
    from sgdlab.optim.random_lr import RandomLRSGD
    from sgdlab.train.callbacks import Schedule
    from sgdlab.train.instruments.noise_protocols import ProtocolCallback

    opt = RandomLRSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, seed=0)
    logged = _protocol_steps(ProtocolCallback(Schedule.every(2)), opt, 5, 3)
    assert [s for name, _, s in logged if name == "lr_step"] == [0, 2, 4]


@pytest.mark.parametrize("spec,match", [
    ({"kind": "constant", "size": 2.5}, "size=2.5"),
    ({"kind": "cyclic", "low": 2.5, "high": 4, "period": 2}, "low=2.5"),
    ({"kind": "cyclic", "low": 2, "high": 4.5, "period": 2}, "high=4.5"),
    ({"kind": "cyclic", "low": 2, "high": 4, "period": 2.5}, "period=2.5"),
    ({"kind": "cyclic", "low": 2, "high": 4, "period": 2, "shap": "square"},
     r"unknown shap \(did you mean shape\?\)"),
])
def test_a_batch_size_or_period_that_is_no_whole_number_or_an_unknown_key_is_named(spec, match):
    with pytest.raises(ValueError, match=match):
        build_batch_schedule(spec)


def test_a_step_that_never_ended_logs_nothing_at_the_next_unscheduled_step():
    """A scheduled step whose α is awaited but whose end never comes (the step raised, the
    callback is reused) leaves nothing behind: the next, unscheduled step logs nothing."""
    from types import SimpleNamespace

    from sgdlab.train.callbacks import Schedule
    from sgdlab.train.instruments.noise_protocols import ProtocolCallback

    logged = []
    opt = SimpleNamespace(param_groups=[{"lr": 0.1}], last_alphas=[0.5])
    ctx = SimpleNamespace(step=0, optimizer=opt, batch=(torch.zeros(4, 2),),
                          log=lambda *a: logged.append(a))
    cb = ProtocolCallback(Schedule.at([0]))
    cb.on_step_begin(ctx)                  # step 0: waits for its α, then raises
    ctx.step = 1
    cb.on_step_begin(ctx)                  # step 1: not scheduled
    ctx.step = 2
    cb.on_step_end(ctx)
    assert logged == []
