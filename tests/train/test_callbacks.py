"""sgdlab.train.callbacks: schedules, MeasurementCallback around a training run, the context's
helpers."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.data import Dataset
from sgdlab.measure import gradient_covariance
from sgdlab.testing import tiny_classification
from sgdlab.train import Callback, MeasurementCallback, Schedule, train
from sgdlab.train.callbacks import (
    TrainContext,
    callback_keys,
    callback_name,
    step_batch_size,
    step_generator,
    train_batches,
    train_subset,
)


def test_a_measurement_that_sets_eval_mode_leaves_training_in_train_mode():
    # a measurement told to "call model.eval() first" (Σ with batch norm) left the rest of the
    # run training in eval mode: batch norm frozen, dropout off
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.1), nn.Linear(6, 2))
    model[1].eval()                       # one layer frozen by the caller, kept so
    seen = []

    def sigma(ctx):
        seen.append([m.training for m in ctx.model])
        ctx.model.eval()
        return {"my/sigma": gradient_covariance(ctx.model, ctx.loss_fn, ctx.data.train).trace()}

    r = train(model, nn.CrossEntropyLoss(), Dataset(x, y), torch.optim.SGD(model.parameters(), 0.1),
              epochs=1, batch_size=8, callbacks=[MeasurementCallback(sigma, every=2)],
              progress=False)
    assert [s for s, _ in r.history["my/sigma"]] == [0, 2, 4]
    assert seen == [[True, False, True, True]] * 3
    assert [m.training for m in model] == [True, False, True, True]


# --- schedules, hooks' cadences and the context's helpers, against values written by hand
def test_schedule_every_and_at_select_the_steps_written_by_hand():
    assert [s for s in range(12) if Schedule.every(3)(s)] == [0, 3, 6, 9]
    assert [s for s in range(12) if Schedule.every(3, start=2)(s)] == [2, 5, 8, 11]
    assert [s for s in range(12) if Schedule.every(1, start=10)(s)] == [10, 11]
    assert [s for s in range(12) if Schedule.at([7, 2, 2.0])(s)] == [2, 7]
    assert not any(Schedule.never()(s) for s in range(12))
    for bad in (dict(k=0), dict(k=2.5), dict(k=2, start=-1), dict(k=True)):
        with pytest.raises(ValueError):
            Schedule.every(**bad)
    for bad in ([-1], [2.5]):
        with pytest.raises(ValueError, match="steps"):
            Schedule.at(bad)


def test_log_spaced_holds_step_0_its_start_and_its_last_step():
    """num points start·(max/start)^(i/(num-1)), i = 0..num-1, rounded, plus step 0: for
    num = 4, start 1, max 1000 those are 1, 10, 100, 1000."""
    sched = Schedule.log_spaced(4, 1000)
    assert [s for s in range(1001) if sched(s)] == [0, 1, 10, 100, 1000]
    sched = Schedule.log_spaced(3, 400, start=4)
    assert [s for s in range(401) if sched(s)] == [0, 4, 40, 400]


def tiny_run(callbacks, epochs=2, **kw):
    x, y = tiny_classification(seed=0, dtype=torch.float32)
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    return train(model, nn.CrossEntropyLoss(), Dataset(x, y),
                 torch.optim.SGD(model.parameters(), 0.1), epochs=epochs, batch_size=4,
                 callbacks=callbacks, progress=False, **kw)


def test_a_measurement_callback_measures_at_its_schedule_s_steps_after_each_step():
    """Six steps: every=2 measures the initial model (step 0) and after steps 2, 4, 6; at=[3]
    after step 3 alone; every=2 from 1 after steps 1, 3, 5, not the initial model unless
    at_train_begin; each measurement sees ctx.step as the steps taken."""
    def fn(name):
        return lambda ctx: {name: float(ctx.step)}

    r = tiny_run([MeasurementCallback(fn("a"), every=2), MeasurementCallback(fn("b"), at=[3]),
                  MeasurementCallback(fn("c"), every=2, start=1),
                  MeasurementCallback(fn("d"), at=[3], at_train_begin=True)])
    for name, steps in (("a", [0, 2, 4, 6]), ("b", [3]), ("c", [1, 3, 5]), ("d", [0, 3])):
        assert r.history[name] == [(s, float(s)) for s in steps], name


def test_a_measurement_skips_none_and_nan_values_and_logs_the_others():
    r = tiny_run([MeasurementCallback(
        lambda ctx: {"none": None, "nan": math.nan, "x": 2.0, "t": torch.tensor(3.0)},
        at=[1])])
    assert "none" not in r.history and "nan" not in r.history
    assert r.history["x"] == [(1, 2.0)] and r.history["t"] == [(1, 3.0)]


def test_a_measurement_skips_nan_in_any_number_type_and_logs_a_graph_without_a_warning():
    # a NaN 0-dim tensor or numpy scalar was logged where a float NaN was left out, and a
    # value with a graph warned from torch's float() of a tensor that requires grad
    w = torch.ones(2, requires_grad=True)

    def fn(ctx):
        return {"tensor": torch.tensor(math.nan), "numpy": np.float32("nan"),
                "graph": (w * 3).sum()}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = tiny_run([MeasurementCallback(fn, at=[1])])
    assert "tensor" not in r.history and "numpy" not in r.history
    assert r.history["graph"] == [(1, 6.0)]


def test_a_resumed_run_measures_the_initial_model_once(tmp_path):
    """A run stopped at step 3 and resumed: step 0 is not measured again on resuming (the
    history holds it), so the series is the uninterrupted run's."""
    def cb():
        return MeasurementCallback(lambda ctx: {"m": float(ctx.step)}, every=2)

    ref = tiny_run([cb()])
    tiny_run([cb()], checkpoint_dir=tmp_path, max_steps=3)
    r = tiny_run([cb()], checkpoint_dir=tmp_path, resume=True)
    assert r.history["m"] == ref.history["m"] == [(s, float(s)) for s in (0, 2, 4, 6)]


def test_train_context_logs_at_the_current_step_or_the_one_given():
    rows = []
    ctx = TrainContext(model=nn.Linear(1, 1), optimizer=None, loss_fn=None, data=None, step=5,
                       logger=lambda name, v, s: rows.append((name, v, s)))
    ctx.log("a", 1)
    ctx.log("a", torch.tensor(2.5), step=2)
    ctx.log_dict({"b": 3.0})
    assert ctx.history == {"a": [(5, 1.0), (2, 2.5)], "b": [(5, 3.0)]}
    assert rows == [("a", 1.0, 5), ("a", 2.5, 2), ("b", 3.0, 5)]


def test_train_subset_is_size_distinct_examples_fixed_by_its_seed():
    x = torch.arange(20.0)[:, None]
    data = Dataset(x, torch.arange(20), x, torch.arange(20))
    xs, ys = train_subset(data, 6, seed=1)
    assert len(xs) == 6 and len(set(ys.tolist())) == 6
    assert torch.equal(xs[:, 0].long(), ys)          # pairs kept together
    assert torch.equal(train_subset(data, 6, seed=1)[1], ys)
    assert not torch.equal(train_subset(data, 6, seed=2)[1], ys)
    assert train_subset(data, None)[1] is data.y_train
    assert train_subset(data, 20)[1] is data.y_train


def test_train_batches_split_the_subset_into_batches_only_when_smaller_than_it():
    # one split for the dynamics and step interpolation instruments' evaluation sets
    x = torch.arange(20.0)[:, None]
    data = Dataset(x, torch.arange(20), x, torch.arange(20))
    xs, ys = train_subset(data, 5, seed=1)
    batches = train_batches(data, 5, 1, 2)
    assert [len(b) for _, b in batches] == [2, 2, 1]
    assert torch.equal(torch.cat([b for _, b in batches]), ys)
    for whole in (None, 5, 9):
        assert torch.equal(train_batches(data, 5, 1, whole)[1], ys)


def test_step_generator_is_seeded_with_seed_plus_step_and_batch_size_is_the_step_s():
    x = torch.zeros(10, 2)
    ctx = TrainContext(model=nn.Linear(2, 1), optimizer=None, loss_fn=None,
                       data=Dataset(x, torch.zeros(10)), step=3, batch_size=4)
    draw = torch.randn(5, generator=step_generator(ctx, 10))
    assert torch.equal(draw, torch.randn(5, generator=torch.Generator().manual_seed(13)))
    assert step_batch_size(ctx) == 4                  # before any step: the loop's
    ctx.batch = (x[:2], x[:2])
    assert step_batch_size(ctx) == 2                  # the step's batch (a last partial one)


def test_callback_keys_number_each_kind_from_zero():
    class A(Callback):
        pass

    class B(Callback):
        instrument = "dynamics"

    assert callback_keys([A(), B(), A(), B(), A()]) == [
        f"{A.__qualname__}#0", "dynamics#0", f"{A.__qualname__}#1", "dynamics#1",
        f"{A.__qualname__}#2"]


def test_a_callback_is_named_in_messages_by_its_instrument_else_its_class():
    class A(Callback):
        pass

    class B(Callback):
        instrument = "dynamics"

    # the class's plain name in messages; its key (callback_keys) is the qualified one
    assert callback_name(A()) == "A" != A.__qualname__
    assert callback_name(B()) == "dynamics"
