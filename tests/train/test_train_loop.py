"""The training loop: determinism, sampling, resume bit for bit, divergence, closures, eval."""
from __future__ import annotations

import functools
import math
import random
import re
import signal
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.data import Dataset
from sgdlab.errors import UserError
from sgdlab.store import RunStore
from sgdlab.testing import SkipsItsLayer, TokenTagger
from sgdlab.train import Callback, Schedule, evaluate, train
from sgdlab.train.loop import BatchStream, epoch_steps, steps_per_epoch

torch.set_num_threads(1)


def toy_data(n: int = 60, n_test: int = 20, d: int = 5, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + n_test, d, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return Dataset(x[:n], y[:n], x[n:], y[n:],
                   {"name": "toy", "task": "classification", "num_outputs": 2})


def index_data(n: int) -> Dataset:
    """x_i = i, so a batch tells which examples it holds."""
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    y = torch.zeros(n, dtype=torch.long)
    return Dataset(x, y, x[:2], y[:2], {"name": "idx", "task": "classification",
                                        "num_outputs": 2})


def make_model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 2))


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class RecordBatches(Callback):
    def __init__(self):
        self.batches: list[torch.Tensor] = []

    def on_step_begin(self, ctx):
        self.batches.append(ctx.batch[0][:, 0].long().clone())


class RunningSum(Callback):
    """A callback with memory (sum of the losses seen) that must survive a resume."""

    def __init__(self):
        self.total = 0.0

    def on_step_end(self, ctx):
        self.total += ctx.loss
        ctx.log("running_sum", self.total)

    def state_dict(self):
        return {"total": self.total}

    def load_state_dict(self, state):
        self.total = state["total"]


def run(seed=0, model_seed=0, dropout=0.0, **kw):
    model = make_model(model_seed, dropout)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    kw.setdefault("epochs", 3)
    kw.setdefault("batch_size", 8)
    res = train(model, nn.CrossEntropyLoss(), toy_data(), opt, seed=seed, progress=False, **kw)
    return model, res


def test_deterministic_given_seed_and_seed_matters():
    m1, r1 = run(seed=3)
    m2, r2 = run(seed=3)
    m3, _ = run(seed=4)
    assert torch.equal(flat(m1), flat(m2))
    assert r1.history == r2.history
    assert not torch.equal(flat(m1), flat(m3))  # the seed drives the batch order
    assert r1.status == "finished" and r1.steps == 3 * steps_per_epoch(60, 8) == 24
    assert r1.epochs_completed == 3 and r1.grad_evals == 24
    assert r1.final["effective_epochs"] == pytest.approx(3.0)
    # evaluated at step 0 and after every epoch
    assert [s for s, _ in r1.history["test_acc"]] == [0, 8, 16, 24]


def test_numpy_and_torch_ints_are_counts_and_seeds_as_python_ints_are():
    """np.int64 epochs, batch size, max_steps, eval_subset and seed (a grid's values) train
    as the Python ints do (they were refused: "epochs must be an int >= 0, got
    np.int64(2)")."""
    m1, r1 = run(seed=3, epochs=2, batch_size=8, max_steps=10, eval_subset=20)
    m2, r2 = run(seed=np.int64(3), epochs=np.int64(2), batch_size=torch.tensor(8),
                 max_steps=np.int32(10), eval_subset=np.uint16(20))
    assert r1.steps == 10 and torch.equal(flat(m1), flat(m2)) and r1.history == r2.history
    # a batch-size schedule's numpy ints too ("batch_size(0) must be an int >= 1, got
    # np.int64(8)")
    sizes = np.array([8, 12])
    m3, r3 = run(seed=3, epochs=2, batch_size=lambda e: int(sizes[e]))
    m4, r4 = run(seed=3, epochs=2, batch_size=lambda e: sizes[e])
    assert r3.steps == 8 + 5 and torch.equal(flat(m3), flat(m4)) and r3.history == r4.history


@pytest.mark.parametrize("option, value, says", [
    ("epochs", True, "epochs must be an int >= 0, not a bool (True)"),
    ("batch_size", True, "batch_size must be an int >= 1, "),
    ("max_steps", np.True_, "max_steps must be an int >= 0, not a bool (True)"),
    ("seed", True, "seed must be an int in 0..2**32 - 1 (as a run config's seed), not a bool "
                   "(True)"),
    ("seed", -1, "seed must be an int in 0..2**32 - 1 (as a run config's seed), got -1"),
    ("seed", 2**32, "seed must be an int in 0..2**32 - 1 (as a run config's seed), got "
                    "4294967296"),
    ("seed", 3.0, "seed must be an int in 0..2**32 - 1 (as a run config's seed), got 3.0")])
def test_a_bool_count_or_a_seed_a_run_config_refuses_is_refused(option, value, says):
    # True was seed 1, and -1, 2**64 - 1 or 3.0 seeds no run config takes
    with pytest.raises(UserError, match=re.escape(says)):
        run(**{option: value})


def test_without_replacement_visits_every_example_once_per_epoch():
    n, b = 23, 5
    rec = RecordBatches()
    model = nn.Linear(1, 2)
    train(model, nn.CrossEntropyLoss(), index_data(n), torch.optim.SGD(model.parameters(), lr=0),
          epochs=4, batch_size=b, callbacks=[rec], progress=False)
    spe = steps_per_epoch(n, b)
    assert len(rec.batches) == 4 * spe
    assert [len(x) for x in rec.batches[:spe]] == [5, 5, 5, 5, 3]  # last batch: the leftover
    orders = []
    for e in range(4):
        epoch = torch.cat(rec.batches[e * spe:(e + 1) * spe])
        assert sorted(epoch.tolist()) == list(range(n))
        orders.append(epoch.tolist())
    assert len({tuple(o) for o in orders}) == 4  # a fresh permutation each epoch


def test_drop_last_and_full_batch():
    rec = RecordBatches()
    model = nn.Linear(1, 2)
    res = train(model, nn.CrossEntropyLoss(), index_data(23), torch.optim.SGD(
        model.parameters(), lr=0), epochs=2, batch_size=5, drop_last=True, callbacks=[rec],
        progress=False)
    assert res.steps == 8 and all(len(x) == 5 for x in rec.batches)
    assert len(set(torch.cat(rec.batches[:4]).tolist())) == 20
    rec = RecordBatches()
    res = train(model, nn.CrossEntropyLoss(), index_data(23), torch.optim.SGD(
        model.parameters(), lr=0), epochs=3, batch_size=100, callbacks=[rec], progress=False)
    assert res.steps == 3
    for x in rec.batches:  # full-batch GD: the whole set in stored order, no sampling
        assert x.tolist() == list(range(23))


def test_with_replacement_is_iid_uniform():
    n, b, steps = 50, 10, 3000
    stream = BatchStream(n, torch.Generator().manual_seed(0), replacement=True)
    batches = torch.stack([stream.next(b) for _ in range(steps)])
    counts = torch.bincount(batches.flatten(), minlength=n).double()
    expected = steps * b / n
    # Pearson chi-square with n-1 = 49 dof: mean 49, sd ~ 9.9; 100 is > 5 sd out.
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 100
    # P(a batch of b i.i.d. draws has no repeated index) = prod_{i<b} (1 - i/n).
    p_distinct = math.prod(1 - i / n for i in range(b))
    frac = sum(len(set(row.tolist())) == b for row in batches) / steps
    sd = math.sqrt(p_distinct * (1 - p_distinct) / steps)
    assert abs(frac - p_distinct) < 5 * sd
    # Without replacement no batch repeats an index.
    stream = BatchStream(n, torch.Generator().manual_seed(0))
    assert all(len(set(stream.next(b).tolist())) == b for _ in range(200))


def test_with_replacement_epoch_covers_about_63_percent():
    n = 400
    rec = RecordBatches()
    model = nn.Linear(1, 2)
    train(model, nn.CrossEntropyLoss(), index_data(n), torch.optim.SGD(model.parameters(), lr=0),
          epochs=6, batch_size=40, replacement=True, callbacks=[rec], progress=False)
    spe = steps_per_epoch(n, 40)
    fracs = [len(set(torch.cat(rec.batches[e * spe:(e + 1) * spe]).tolist())) / n
             for e in range(6)]
    expected = 1 - (1 - 1 / n) ** n  # distinct fraction after n i.i.d. draws
    assert abs(sum(fracs) / 6 - expected) < 0.03


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_resume_after_max_steps_is_bit_for_bit(tmp_path, device):
    """Interrupt mid-epoch (step 11 of 8-step epochs), resume: identical weights, history,
    callback state, LR schedule and dropout noise as one uninterrupted run (on CUDA too: its
    generator state is checkpointed as well)."""
    def build():
        model = make_model(0, dropout=0.3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.7)
        return model, opt, sched

    def go(**kw):
        model, opt, sched = build()
        cb = RunningSum()
        torch.manual_seed(123)  # dropout draws from the global RNG
        res = train(model, nn.CrossEntropyLoss(), toy_data(), opt, schedule=sched, epochs=3,
                    batch_size=8, seed=5, callbacks=[cb], progress=False, device=device, **kw)
        return model, opt, cb, res

    m_ref, o_ref, cb_ref, r_ref = go()
    m1, _, _, r1 = go(checkpoint_dir=tmp_path, max_steps=11)
    assert r1.steps == 11 and r1.epochs_completed == 1
    assert not torch.equal(flat(m1), flat(m_ref))
    model, opt, sched = build()      # (make_model reseeds the global RNG: seed after it)
    torch.manual_seed(999)  # resuming restores the global RNG from the checkpoint
    cb = RunningSum()
    r2 = train(model, nn.CrossEntropyLoss(), toy_data(), opt, schedule=sched, epochs=3,
               batch_size=8, seed=5, callbacks=[cb], progress=False, checkpoint_dir=tmp_path,
               resume=True, device=device)
    assert r2.steps == r_ref.steps == 24
    assert torch.equal(flat(model), flat(m_ref))
    assert cb.total == cb_ref.total
    assert opt.param_groups[0]["lr"] == o_ref.param_groups[0]["lr"]
    assert r2.history["running_sum"] == r_ref.history["running_sum"]
    assert r2.history["batch_loss"] == r_ref.history["batch_loss"]


class GlobalDraws(Callback):
    """Draws from numpy's and Python's global generators at every step (as augmentations or
    user callbacks do); the normal draws also exercise each generator's cached second value."""

    def on_step_end(self, ctx):
        ctx.log("np_draw", float(np.random.randn()))
        ctx.log("py_draw", random.gauss(0.0, 1.0))


def test_resume_restores_numpy_and_python_global_generators(tmp_path):
    def go(**kw):
        np.random.seed(7)
        random.seed(7)
        return run(callbacks=[GlobalDraws()], **kw)[1]

    ref = go()
    go(checkpoint_dir=tmp_path, max_steps=11)
    np.random.seed(999)  # resuming restores both generators from the checkpoint
    random.seed(999)
    res = run(callbacks=[GlobalDraws()], checkpoint_dir=tmp_path, resume=True)[1]
    assert res.steps == ref.steps == 24
    assert res.history["np_draw"] == ref.history["np_draw"]
    assert res.history["py_draw"] == ref.history["py_draw"]


def test_resume_of_a_checkpoint_without_a_row_count_keeps_the_rows_up_to_its_step(tmp_path):
    """A checkpoint that records no row count (written before they were recorded): the resume
    drops the rows logged after its step (they are redone) and keeps the earlier ones, so the
    store ends with the rows of a resume from a checkpoint that has the count."""
    from sgdlab.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint

    ref_store = RunStore(tmp_path / "ref.sqlite")
    _, ref = run(store=ref_store, checkpoint_dir=tmp_path / "ref", max_steps=11)
    run(store=ref_store, checkpoint_dir=tmp_path / "ref", resume=True, max_steps=18)
    run(store=ref_store, checkpoint_dir=tmp_path / "ref", resume=True)
    store, ck = RunStore(tmp_path / "runs.sqlite"), tmp_path / "ck"
    _, r1 = run(store=store, checkpoint_dir=ck, max_steps=11)
    state = load_checkpoint(checkpoint_path(ck))
    assert state["loop"]["step"] == 11
    del state["loop"]["stored_rows"]
    save_checkpoint(checkpoint_path(ck), state)
    # a row a killed process logged after the checkpoint
    store.log_metrics(r1.run_id, 13, {"batch_loss": 99.0})
    # the resumed run's own checkpoints count the rows kept: a second resume loses none
    run(store=store, checkpoint_dir=ck, resume=True, max_steps=18)
    _, r2 = run(store=store, checkpoint_dir=ck, resume=True)
    assert r2.run_id == r1.run_id and r2.steps == 24
    assert store.metrics(r2.run_id) == ref_store.metrics(ref.run_id)


def test_a_resumed_run_s_wall_time_adds_the_seconds_its_checkpoint_carries(tmp_path):
    """``wall_time`` is the run's over all its calls, as an uninterrupted run's: a resume adds
    the seconds its checkpoint carries; a checkpoint that carries none (written before they
    were recorded) gives the resumed call's alone."""
    from sgdlab.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint

    store, ck = RunStore(tmp_path / "runs.sqlite"), checkpoint_path(tmp_path / "ck")
    _, r1 = run(store=store, checkpoint_dir=ck.parent, max_steps=11)
    state = load_checkpoint(ck)
    assert 0 < state["wall_time"] <= r1.wall_time
    state["wall_time"] = 1000.0      # as if the first call had taken that long
    save_checkpoint(ck, state)
    _, r2 = run(store=store, checkpoint_dir=ck.parent, resume=True, max_steps=18)
    assert r2.wall_time > 1000.0
    assert store.get_run(r2.run_id)["summary"]["wall_time"] == r2.wall_time
    state = load_checkpoint(ck)
    assert 1000.0 < state["wall_time"] <= r2.wall_time   # carried on to the next resume
    del state["wall_time"]
    save_checkpoint(ck, state)
    _, r3 = run(store=store, checkpoint_dir=ck.parent, resume=True)
    assert r3.steps == 24 and r3.wall_time < 1000.0


def test_on_checkpoint_sees_each_checkpoint_after_the_rows_it_counts_are_stored(tmp_path):
    """A sweep's Ray task sends each checkpoint on (``on_checkpoint``): it must come once the
    checkpoint is on disk and the store holds every row it counts."""
    from sgdlab.train.checkpoint import load_checkpoint

    store, seen = RunStore(tmp_path / "runs.sqlite"), []

    def on_checkpoint(path):
        state = load_checkpoint(path)
        rows = sum(len(v) for v in store.metrics(state["run_id"]).values())
        seen.append((state["loop"]["step"], state["loop"]["stored_rows"], rows))

    _, res = run(store=store, checkpoint_dir=tmp_path / "ck", checkpoint_every=5,
                 on_checkpoint=on_checkpoint)
    # every 5 steps, and the two at the end: before and after the final evaluation
    assert [s for s, _, _ in seen] == [5, 10, 15, 20, 24, 24] and res.steps == 24
    assert all(0 < counted == stored for _, counted, stored in seen), seen


def test_checkpoint_every_and_weights_only_load(tmp_path):
    _, res = run(checkpoint_dir=tmp_path, checkpoint_every=5)
    state = torch.load(res.checkpoint, weights_only=True)
    assert state["loop"]["step"] == 24 and set(state["rng"]) >= {"torch", "numpy", "python",
                                                                  "sampler"}
    with pytest.raises(UserError, match="resume=True needs checkpoint_dir"):
        run(resume=True)
    with pytest.raises(UserError, match="no checkpoint"):
        run(checkpoint_dir=tmp_path / "empty", resume=True)


def test_checkpoint_seconds_writes_a_checkpoint_only_that_long_after_the_last(
        tmp_path, monkeypatch):
    import types

    import sgdlab.train.loop as loop

    class Clock(Callback):            # ten seconds a step
        now = 0.0

        def on_step_end(self, ctx):
            Clock.now = 10.0 * ctx.step

    monkeypatch.setattr(loop, "time", types.SimpleNamespace(
        perf_counter=loop.time.perf_counter, monotonic=lambda: Clock.now))
    saved: list[int] = []
    save = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda path, state: (
        saved.append(state["loop"]["step"]), save(path, state))[1])
    # 8 steps an epoch: epoch ends at 80 s, 160 s, 240 s
    m_every, _ = run(checkpoint_dir=tmp_path / "a", callbacks=[Clock()])
    assert saved == [8, 16, 24, 24]
    saved.clear()
    Clock.now = 0.0
    m_timed, res = run(checkpoint_dir=tmp_path / "b", callbacks=[Clock()],
                       checkpoint_seconds=100)
    assert saved == [16]              # not at 80 s, nor 80 s after the one at 160 s
    assert res.checkpoint == tmp_path / "b" / "last.pt" and torch.equal(flat(m_every),
                                                                        flat(m_timed))
    with pytest.raises(UserError, match="checkpoint_seconds must be a number >= 0, got -1"):
        run(checkpoint_dir=tmp_path / "c", checkpoint_seconds=-1)
    with pytest.raises(UserError, match=re.escape(
            "checkpoint_seconds must be a number >= 0, not a bool (True)")):
        run(checkpoint_dir=tmp_path / "c", checkpoint_seconds=True)


def test_divergence_stops_cleanly_and_is_recorded(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = x @ torch.tensor([[1.0], [2.0], [-1.0]])
    data = Dataset(x[:30], y[:30], x[30:], y[30:], {"name": "lin", "task": "regression",
                                                   "num_outputs": 1})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 1))
    store = RunStore(tmp_path / "runs.sqlite")
    res = train(model, nn.MSELoss(), data, torch.optim.SGD(model.parameters(), lr=1e3),
                epochs=50, batch_size=5, store=store, progress=False)
    assert res.status == "diverged"
    assert res.steps < 50 * 6
    assert "non-finite" in res.message
    assert torch.isfinite(flat(model)).all()  # stopped before the step that used a NaN loss
    assert all(math.isfinite(v) for v in res.final.values())
    run_row = store.get_run(res.run_id)
    assert run_row["status"] == "diverged" and "non-finite" in run_row["message"]
    assert run_row["summary"]["steps"] == res.steps


def test_the_step_a_divergence_names_is_numbered_as_the_history_and_step_count_are(
        monkeypatch):
    """A first step with lr 1e30 makes the next mini-batch loss NaN: the run has taken 1 step
    (``steps``, what `sgdlab runs show` prints) and its message said "at step 2", one more
    than the step whose weights gave the loss (the history's step 0 is the initial weights).
    With losses read back in groups the step is the same, noticed later."""
    import sgdlab.train.loop as loop_mod

    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
    data = Dataset(x, x.sum(1, keepdim=True), x[:5], x[:5].sum(1, keepdim=True),
                   {"name": "lin", "task": "regression", "num_outputs": 1})

    def diverge():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 1))
        return train(model, nn.MSELoss(), data, torch.optim.SGD(model.parameters(), lr=1e30),
                     epochs=2, batch_size=5, progress=False)

    res = diverge()
    assert res.status == "diverged" and res.steps == 1
    (step, loss), = res.history["train_loss"]          # the initial evaluation, step 0
    assert step == 0 and math.isfinite(loss)
    assert re.search(r"non-finite mini-batch loss \(\S+\) at step 1 \(epoch 0, the weights "
                     r"after 1 step\); stopped before the next step$", res.message), res.message
    monkeypatch.setattr(loop_mod, "_loss_sync_every", lambda device, callbacks: 4)
    res = diverge()
    assert res.steps == 4 and "at step 1 (epoch 0, the weights after 1 step); noticed after " \
        "step 4" in res.message, res.message


class TwoLookSGD(torch.optim.Optimizer):
    """A closure optimizer: evaluates ``looks`` mini-batches, steps along their mean gradient."""

    needs_closure = True

    def __init__(self, params, lr=0.1, looks=3):
        super().__init__(params, {"lr": lr, "looks": looks})

    @torch.no_grad()
    def step(self, closure):
        group = self.param_groups[0]
        acc = [torch.zeros_like(p) for p in group["params"]]
        loss = None
        for _ in range(group["looks"]):
            with torch.enable_grad():
                loss = closure()
            for a, p in zip(acc, group["params"]):
                a += p.grad
        for a, p in zip(acc, group["params"]):
            p -= group["lr"] * a / group["looks"]
        return loss


def test_closure_optimizer_counts_gradient_evaluations():
    model = make_model(0)
    rec = RecordBatches()

    class Backward(Callback):
        calls = 0

        def on_after_backward(self, ctx):
            Backward.calls += 1
            assert all(p.grad is not None for p in ctx.model.parameters())

    data = toy_data()
    data = Dataset(data.x_train, data.y_train, data.x_test, data.y_test, dict(data.meta))
    res = train(model, nn.CrossEntropyLoss(), data, TwoLookSGD(model.parameters(), looks=3),
                epochs=2, batch_size=10, callbacks=[rec, Backward()], progress=False)
    assert res.steps == 12 and res.grad_evals == 36
    assert res.final["effective_epochs"] == pytest.approx(6.0)  # 36 batches of 10 / 60
    assert res.history["grad_evals"][-1] == (12, 36.0)
    assert Backward.calls == 12  # once per step: the gradient at the current weights
    assert len(rec.batches) == 12


@pytest.mark.parametrize("closure", [False, True])
def test_a_loss_that_does_not_reach_the_parameters_is_named_before_a_step(closure):
    """backward() on such a loss failed with autograd's "element 0 of tensors does not
    require grad", naming neither the loss nor the model; with or without a closure."""
    model = SkipsItsLayer(5, 2)
    opt = (TwoLookSGD if closure else torch.optim.SGD)(model.parameters(), lr=0.1)
    with pytest.raises(UserError, match=r"the loss does not depend on the model's trainable"):
        train(model, nn.CrossEntropyLoss(), toy_data(), opt, epochs=1, batch_size=10,
              progress=False)


class SharedLookSGD(TwoLookSGD):
    """Looks at one mini-batch ``looks`` times, a step between looks (as HEAT's perturbed
    points differ), so each call's loss differs; keeps the losses its closure returned."""

    closure_repeats_batch = True

    def __init__(self, params, lr=0.1, looks=3):
        super().__init__(params, lr, looks)
        self.losses: list[list[float]] = []

    @torch.no_grad()
    def step(self, closure):
        self.losses.append([])
        for _ in range(self.param_groups[0]["looks"]):
            with torch.enable_grad():
                self.losses[-1].append(float(closure().detach()))
            for p in self.param_groups[0]["params"]:
                p -= self.param_groups[0]["lr"] * p.grad


def test_a_closure_that_repeats_the_batch_records_the_first_call_s_loss_and_hooks_once():
    """With ``closure_repeats_batch`` every call of a step gets the step's batch; the step's
    loss, the epoch's ``batch_loss`` and ``on_after_backward`` still belong to the first call
    alone, as for an optimizer that draws a batch a call."""
    model = make_model(0)
    seen = []

    class Hooks(Callback):
        backward = 0

        def on_after_backward(self, ctx):
            Hooks.backward += 1

        def on_step_end(self, ctx):
            seen.append(ctx.loss)

    opt = SharedLookSGD(model.parameters(), looks=3)
    res = train(model, nn.CrossEntropyLoss(), toy_data(), opt, epochs=1, batch_size=20,
                callbacks=[Hooks()], progress=False)
    assert res.steps == 3 and res.grad_evals == 9
    assert Hooks.backward == 3
    first = [losses[0] for losses in opt.losses]
    assert len({round(v, 6) for v in opt.losses[0]}) == 3     # the calls' losses differ
    assert seen == pytest.approx(first, abs=1e-6)
    assert res.history["batch_loss"][-1][1] == pytest.approx(sum(first) / 3, abs=1e-6)


def test_callable_batch_size_and_eval_schedule():
    _, res = run(epochs=3, batch_size=lambda e: [6, 12, 60][e],
                 eval_every=Schedule.every(4))
    assert res.steps == 10 + 5 + 1
    assert [s for s, _ in res.history["train_loss"]] == [0, 4, 8, 12, 16]


def test_epoch_steps_counts_each_epoch_at_its_size_as_the_loop_takes_them():
    # one count for the loop and an experiment's planned steps (--dry-run)
    assert epoch_steps(60, lambda e: [6, 12, 60][e], 3) == [10, 5, 1]
    assert epoch_steps(10, np.int64(4), 2) == [3, 3]
    assert epoch_steps(10, 4, 2, drop_last=True) == [2, 2]
    with pytest.raises(UserError, match=re.escape("batch_size(1) must be an int >= 1, got 0")):
        epoch_steps(10, lambda e: [4, 0][e], 2)


def test_batch_size_full_is_full_batch_gd_as_in_a_run_config(tmp_path):
    # a run config's `batch_size: full` was refused from Python, where the GUIDE shows it for
    # Zhu's GD + noise
    m_full, r_full = run(epochs=2, batch_size="full", store=RunStore(tmp_path / "s.sqlite"))
    m_n, r_n = run(epochs=2, batch_size=60)
    assert r_full.steps == 2 and torch.equal(flat(m_full), flat(m_n))
    stored = RunStore(tmp_path / "s.sqlite").get_run(r_full.run_id)["config"]
    assert stored["train"]["batch_size"] == "full"
    with pytest.raises(UserError, match='"full"'):
        run(batch_size="all")


def test_progress_bar_in_a_notebook_whose_stderr_is_no_terminal(capsys, monkeypatch):
    # a Jupyter kernel's stderr is no tty: the bar was never shown there
    import types

    run(epochs=1)
    assert "train:" not in capsys.readouterr().err          # progress=False: none anywhere
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train(model, nn.CrossEntropyLoss(), toy_data(), opt, epochs=1, batch_size=8)
    assert "train:" not in capsys.readouterr().err          # a script's redirected stderr
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    train(model, nn.CrossEntropyLoss(), toy_data(), opt, epochs=1, batch_size=8)
    assert "train:" in capsys.readouterr().err


def test_evaluate_gives_accuracy_for_class_labels_only():
    # on real-valued targets it reported {'acc': 0.0} unless told classification=False
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(20, 3, generator=g), torch.randn(3, 1, generator=g)
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.copy_(w.T)
        model.bias.zero_()
    res = evaluate(model, nn.MSELoss(), x, x @ w + 0.5)
    assert res == {"loss": pytest.approx(0.25)}
    data, model = toy_data(), make_model()
    assert set(evaluate(model, nn.CrossEntropyLoss(), data.x_test, data.y_test)) == {"loss", "acc"}
    assert set(evaluate(model, nn.CrossEntropyLoss(), data.x_test, data.y_test,
                        classification=False)) == {"loss"}


def test_accuracy_of_labels_per_position_is_the_fraction_of_positions_hit():
    # it counted every hit of the L positions and divided by N samples: 6.0 for L = 6
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (40, 6), generator=g)
    y = torch.where(torch.rand(40, 6, generator=g) < 0.3, torch.randint(0, 5, (40, 6), generator=g),
                    (x + 1) % 5)              # a rule with exceptions: some positions missed
    y[:, -1] = -100                           # cross-entropy's ignored positions: no labels
    torch.manual_seed(0)
    model = TokenTagger()
    r = train(model, nn.CrossEntropyLoss(), Dataset(x, y, x[:10], y[:10]),
              torch.optim.SGD(model.parameters(), lr=0.5), epochs=2, batch_size=8,
              progress=False)
    with torch.no_grad():
        pred = model(x).argmax(1)
    hits = (pred == y)[:, :-1].double().mean()
    assert 0.5 < hits < 1
    assert r.final["train_acc"] == pytest.approx(float(hits))
    test_hits = (pred[:10] == y[:10])[:, :-1].double().mean()
    assert r.final["test_acc"] == pytest.approx(float(test_hits))
    # chunks of the evaluation are counted by their labels
    res = evaluate(model, nn.CrossEntropyLoss(), x, y, batch_size=7)
    assert res["acc"] == pytest.approx(float(hits))


def _token_problem(n: int = 23, length: int = 6, vocab: int = 5):
    """A float64 TokenTagger, (n, length) tokens and next tokens with some positions ignored
    (-100): the rows hold 6, 4 or 2 labelled positions, so chunks differ in tokens."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (n, length), generator=g)
    y = torch.randint(0, vocab, (n, length), generator=g)
    for i in range(n):
        y[i, length - 2 * (i % 3):] = -100
    torch.manual_seed(0)
    return TokenTagger(vocab).double(), x, y


def _perplexity_by_hand(model, x, y) -> float:
    """exp of the mean negative log-likelihood over every labelled token, in float64."""
    with torch.no_grad():
        logp = torch.log_softmax(model(x), dim=1)          # (N, C, L)
    keep = y != -100
    nll = -logp.gather(1, y.clamp(min=0).unsqueeze(1)).squeeze(1)[keep]
    return math.exp(float(nll.sum()) / int(keep.sum()))


@pytest.mark.parametrize("loss_fn", [nn.CrossEntropyLoss(), F.cross_entropy,
                                     functools.partial(F.cross_entropy, ignore_index=-100)],
                         ids=["module", "function", "partial"])
def test_perplexity_is_exp_of_the_mean_loss_per_token_over_the_whole_set(loss_fn):
    from sgdlab.train.losses import SequenceCrossEntropyLoss

    model, x, y = _token_problem()
    want = _perplexity_by_hand(model, x, y)
    for batch_size in (7, 4096):                # a last chunk of 2 samples; one chunk
        res = evaluate(model, loss_fn, x, y, batch_size=batch_size)
        assert res["perplexity"] == pytest.approx(want, rel=1e-12)
    # what it is not: the mean of the chunks' perplexities, or exp of the mean loss per sample
    chunks = [(model(x[i:i + 7]), y[i:i + 7]) for i in range(0, len(x), 7)]
    with torch.no_grad():
        per_chunk = [math.exp(float(F.cross_entropy(o, t))) for o, t in chunks]
    assert abs(sum(per_chunk) / len(per_chunk) / want - 1) > 1e-3
    # the loss is the same mean per token (chunks weighted by their samples were 1e-3 off)
    res = evaluate(model, loss_fn, x, y, batch_size=7)
    assert math.exp(res["loss"]) == pytest.approx(want, rel=1e-12)
    sizes = [len(t) for _, t in chunks]
    with torch.no_grad():
        by_samples = sum(float(F.cross_entropy(o, t)) * k for (o, t), k in zip(chunks, sizes))
    assert abs(math.exp(by_samples / len(x)) / want - 1) > 1e-3
    # without ignored targets: exp of the loss, the registry's loss alike
    y = y.clamp(min=0)
    res = evaluate(model, SequenceCrossEntropyLoss(), x, y, batch_size=7)
    assert res["perplexity"] == pytest.approx(math.exp(res["loss"]), rel=1e-12)
    assert res["perplexity"] == pytest.approx(_perplexity_by_hand(model, x, y), rel=1e-12)


def test_no_perplexity_for_labels_per_sample_or_a_loss_whose_mean_is_another():
    model, x, y = _token_problem()
    weighted = nn.CrossEntropyLoss(weight=torch.linspace(0.5, 2, 5, dtype=torch.float64))
    for loss_fn in (weighted, nn.CrossEntropyLoss(label_smoothing=0.1),
                    functools.partial(F.cross_entropy, label_smoothing=0.1),
                    lambda out, t: F.nll_loss(torch.log_softmax(out, 1), t)):
        assert "perplexity" not in evaluate(model, loss_fn, x, y)
    data, model = toy_data(), make_model()
    assert "perplexity" not in evaluate(model, nn.CrossEntropyLoss(), data.x_test, data.y_test)


def test_a_run_on_tokens_logs_and_sums_up_its_perplexities(tmp_path):
    model, x, y = _token_problem()
    model.float()
    y = y.clamp(min=0)
    store = RunStore(tmp_path / "store")
    r = train(model, nn.CrossEntropyLoss(), Dataset(x, y, x[:9], y[:9]),
              torch.optim.SGD(model.parameters(), lr=0.5), epochs=2, batch_size=8,
              progress=False, store=store)
    for split in ("train", "test"):
        ppl, loss = r.history[f"{split}_perplexity"], r.history[f"{split}_loss"]
        assert [s for s, _ in ppl] == [s for s, _ in loss] == [0, 3, 6]
        assert [v for _, v in ppl] == pytest.approx([math.exp(v) for _, v in loss], rel=1e-6)
        assert r.final[f"{split}_perplexity"] == ppl[-1][1]
    assert store.metrics(r.run_id)["test_perplexity"] == r.history["test_perplexity"]
    assert store.get_run(r.run_id)["summary"]["test_perplexity"] == r.final["test_perplexity"]
    from sgdlab.train.loop import _postfix            # the progress bar's
    assert float(_postfix(r.history)["test_perplexity"]) == pytest.approx(
        r.final["test_perplexity"], rel=1e-3)
    _, plain = run(epochs=1)
    assert not any("perplexity" in k for k in (*plain.history, *plain.final))


def test_a_binary_classifier_with_one_logit_gets_no_argmax_accuracy():
    # the argmax over one score is class 0: train_acc 0.5 (the share of label 0) for a model
    # that separated the classes
    from sgdlab.measure import interpolate_models, loss_surface

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    loss_fn = lambda out, t: nn.functional.binary_cross_entropy_with_logits(  # noqa: E731
        out.squeeze(1), t.float())
    r = train(model, loss_fn, Dataset(x, y, x, y), torch.optim.SGD(model.parameters(), lr=0.5),
              epochs=20, batch_size=10, progress=False)
    with torch.no_grad():
        assert bool(((model(x).squeeze(1) > 0).long() == y).all())    # it separates them
    assert "train_acc" not in r.final and "test_acc" not in r.history
    assert "acc" not in evaluate(model, loss_fn, x, y)
    assert all(math.isnan(a) for a in interpolate_models(model, model, loss_fn, (x, y),
                                                         alphas=[0.0, 1.0]).train_acc)
    surf = loss_surface(model, loss_fn, (x, y), [torch.ones(4)], steps=3)
    assert all(math.isnan(a) for a in surf.train_acc)


def test_a_model_whose_outputs_loss_fn_unpacks_trains_without_an_accuracy():
    # a tuple of outputs failed in the evaluation: 'tuple' object has no attribute 'argmax'
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 2)

        def forward(self, x):
            return self.lin(x), x

    data, model = toy_data(), Pair()
    r = train(model, lambda out, y: nn.functional.cross_entropy(out[0], y), data,
              torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=16,
              progress=False)
    assert r.status == "finished" and math.isfinite(r.final["test_loss"])
    assert "train_acc" not in r.history and "test_acc" not in r.final


@pytest.mark.parametrize("loss_fn", [nn.MSELoss(), F.mse_loss,
                                     functools.partial(F.huber_loss, delta=0.5)],
                         ids=["module", "function", "partial"])
def test_regression_targets_that_broadcast_against_the_outputs_are_refused(loss_fn):
    # outputs (N, 1) against targets (N,): MSELoss compares every output with every target
    # (torch only warns), so train() trained and reported that loss; F.mse_loss and partials
    # of torch's element-wise losses were trained so until they were checked as the modules
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, generator=g)
    data = Dataset(x[:20], x[:20, 0], x[20:], x[20:, 0])
    model = nn.Linear(3, 1)
    with pytest.raises(UserError, match=r"outputs of shape \(20, 1\) with targets of shape "
                                        r"\(20,\).*y\[:, None\]"):
        train(model, loss_fn, data, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
              progress=False)
    with pytest.raises(UserError, match=r"\(10, 1\) with targets of shape \(10,\)"):
        evaluate(model, nn.L1Loss(), data.x_test, data.y_test)
    assert set(evaluate(model, nn.MSELoss(), data.x_test, data.y_test[:, None])) == {"loss"}


def test_class_labels_stored_as_floats_are_refused_saying_so():
    # labels read as floats (from a float array) gave torch's "expected target dtype to be
    # Long or Byte, but got Float" mid-run, in training and in the measurements alike
    from sgdlab.measure import hessian_trace

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 3, generator=g), torch.randint(0, 2, (30,), generator=g)
    data = Dataset(x[:20], y[:20].float(), x[20:], y[20:].float())
    model = nn.Linear(3, 2)
    says = r"float32 targets of shape \(\d+,\) for outputs of shape \(\d+, 2\).*y\.long\(\)"
    with pytest.raises(UserError, match=says):
        train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=1, progress=False)
    with pytest.raises(UserError, match=says):
        hessian_trace(model, F.cross_entropy, data.train, num_probes=2)
    # class probabilities, shaped as the outputs, stay a cross-entropy's targets
    probs = F.one_hot(y[:20], 2).float()
    assert hessian_trace(model, nn.CrossEntropyLoss(), (x[:20], probs), num_probes=2).value > 0


def test_class_labels_kept_as_a_column_are_refused_naming_both_shapes():
    # labels (N, 1), as a data file's column often holds them, gave torch's "0D or 1D target
    # tensor expected, multi-target not supported", in training and the measurements alike
    from sgdlab.measure import gradient_covariance, hessian_top_eigenvalue
    from sgdlab.operators.batches import check_target_shape

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 3, generator=g), torch.randint(0, 2, (30,), generator=g)
    data = Dataset(x[:20], y[:20, None], x[20:], y[20:, None])
    model = nn.Linear(3, 2)
    with pytest.raises(UserError, match=r"class labels of shape \(20, 1\) for outputs of "
                                        r"shape \(20, 2\).*of shape \(20,\) \(y\.squeeze\(1\)\)"):
        train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=1, progress=False)
    for measure in (hessian_top_eigenvalue, gradient_covariance):
        with pytest.raises(UserError, match=r"first 2 samples class labels of shape \(2, 1\)"):
            measure(model, F.cross_entropy, data.train)
    # labels per position of (N, C, L) outputs are their own shape (N, L)
    loss = nn.CrossEntropyLoss()
    check_target_shape(loss, torch.zeros(4, 3, 5), torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(UserError, match=r"of shape \(4, 5\)$"):
        check_target_shape(loss, torch.zeros(4, 3, 5), torch.zeros(4, 6, dtype=torch.long))


def test_progress_by_epochs_writes_a_line_per_epoch_to_stderr(capsys):
    # into a log file or a pipe no bar is drawn: `sgdlab train` said nothing between the
    # run's start and its end
    model = nn.Linear(5, 2)
    train(model, nn.CrossEntropyLoss(), toy_data(),
          torch.optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=16,
          progress="epochs")
    err = capsys.readouterr().err.splitlines()
    assert [ln.split("  ")[0] for ln in err] == ["epoch 1/2 (step 4/8)", "epoch 2/2 (step 8/8)"]
    assert "batch_loss " in err[0] and "test_acc " in err[0]


def test_progress_by_epochs_writes_the_first_epoch_a_resumed_run_completes(tmp_path, capsys):
    # a run resumed in epoch 2 of 6 said nothing until 5 s had passed or its last epoch
    def run(**kw):
        torch.manual_seed(0)
        model = nn.Linear(5, 2)
        return train(model, nn.CrossEntropyLoss(), toy_data(),
                     torch.optim.SGD(model.parameters(), lr=0.1), epochs=6, batch_size=16,
                     checkpoint_dir=tmp_path, checkpoint_every=6, **kw)

    run(max_steps=7, progress=False)
    run(resume=True, progress="epochs")
    err = capsys.readouterr().err.splitlines()
    assert [ln.split("  ")[0] for ln in err][:1] == ["epoch 2/6 (step 8/24)"]
    assert err[-1].startswith("epoch 6/6 (step 24/24)")


def test_progress_by_epochs_ends_with_a_line_where_max_steps_stops_the_run(capsys):
    # 3 epochs of 4 steps cut at step 6: "epoch 1/3" and then nothing, as if 3 were to come
    model = nn.Linear(5, 2)
    train(model, nn.CrossEntropyLoss(), toy_data(),
          torch.optim.SGD(model.parameters(), lr=0.1), epochs=3, batch_size=16,
          max_steps=6, progress="epochs")
    err = capsys.readouterr().err.splitlines()
    assert [ln.split("  ")[0] for ln in err] == [
        "epoch 1/2 (step 4/6)", "finished at step 6/6 (1/2 epochs done)"]
    assert "test_acc " in err[1]
    # cut at step 8, the end of epoch 2: it reaches 2 epochs (the third, starting at step 8,
    # takes no step), and its last epoch line is "epoch 2/2", not "epoch 2/3" or none
    train(model, nn.CrossEntropyLoss(), toy_data(),
          torch.optim.SGD(model.parameters(), lr=0.1), epochs=3, batch_size=16,
          max_steps=8, progress="epochs")
    err = capsys.readouterr().err.splitlines()
    assert [ln.split("  ")[0] for ln in err][:2] == ["epoch 1/2 (step 4/8)",
                                                      "epoch 2/2 (step 8/8)"]


class _CastsItsInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 3).double()

    def forward(self, x):
        return self.lin(x.double())


@pytest.mark.parametrize("model_dtype, data_dtype", [(torch.float64, torch.float32),
                                                     (torch.float32, torch.float64)])
def test_a_model_of_another_dtype_than_its_data_is_refused_saying_both(tmp_path, model_dtype,
                                                                       data_dtype):
    """torch's bare "mat1 and mat2 must have the same dtype" became a UserError naming the
    model's and the data's dtypes and the casts, with torch's error chained; the run is
    recorded failed with that message; a model that casts its own inputs still trains."""
    data, model = toy_data().to(dtype=data_dtype), make_model().to(model_dtype)
    store = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(UserError, match=rf"model's parameters are {model_dtype} but the "
                                        rf"data's inputs are {data_dtype}.*model.to\("
                                        rf"{data_dtype}\).*data.to\(dtype={model_dtype}\)"
                       ) as refused:
        train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=1, progress=False, store=store)
    assert isinstance(refused.value.__cause__, RuntimeError)
    (rec,) = store.list_runs()
    assert rec["status"] == "failed" and "model's parameters are" in rec["message"]
    model = _CastsItsInputs()
    res = train(model, nn.CrossEntropyLoss(), toy_data(), torch.optim.SGD(model.parameters(),
                lr=0.1), epochs=1, progress=False)
    assert res.status == "finished"


def test_integer_inputs_a_model_reads_itself_keep_its_own_error():
    """A model that reads integer inputs as one-hot rows (no nn.Embedding) and fails on a
    shape was told its integers were the cause (a UserError saying to give floats): its own
    error is named, with its line."""

    class OneHot(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(torch.eye(5)[x])

    x = torch.arange(10) % 5
    data = Dataset(x, x % 2, x, x % 2)
    model = OneHot()
    with pytest.raises(UserError, match=r"shapes cannot be multiplied.*test_train_loop\.py, "
                                        r"line \d+\)") as e:
        train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=1, progress=False)
    assert "float" not in str(e.value) and isinstance(e.value.__cause__, RuntimeError)


def test_evaluate_uses_eval_mode_and_restores_train_mode():
    data = toy_data()
    model = make_model(0, dropout=0.5)
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    a = evaluate(model, loss_fn, data.x_test, data.y_test, batch_size=7)
    assert model.training
    model.eval()
    with torch.no_grad():
        out = model(data.x_test)
    assert a["loss"] == pytest.approx(loss_fn(out, data.y_test).item(), rel=1e-6)
    assert a["acc"] == (out.argmax(1) == data.y_test).sum().item() / len(data.y_test)


def test_eval_subset_is_fixed_and_bad_arguments_are_rejected():
    _, r1 = run(eval_subset=7, epochs=1)
    _, r2 = run(eval_subset=7, epochs=1)
    assert r1.history["test_acc"] == r2.history["test_acc"]
    assert all(v * 7 == round(v * 7) for _, v in r1.history["test_acc"])
    with pytest.raises(UserError, match="batch_size must be"):
        run(batch_size=0)
    with pytest.raises(UserError, match="epochs must be"):
        run(epochs=-1)


def test_training_on_a_batch_tuple_names_the_dataset_it_needs():
    # the measurements take (x, y); train() and train_replicas() take a Dataset
    from sgdlab.train.replicas import ParleConfig, train_replicas
    model = nn.Linear(3, 2)
    batch = (torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(UserError, match=r"Dataset\(x_train, y_train, x_test, y_test\)"):
        train(model, nn.CrossEntropyLoss(), batch, torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=1, progress=False)
    with pytest.raises(UserError, match="must be a sgdlab.data.Dataset .* got tuple"):
        train_replicas(model, nn.CrossEntropyLoss(), batch, ParleConfig(replicas=1), epochs=1)


def test_names_given_for_the_optimizer_schedule_or_a_callback_say_what_builds_them(tmp_path):
    # an optimizer or schedule by name was an AttributeError ('str' object has no attribute
    # 'param_groups' / 'step', the latter at the first step), and callbacks="hessian" was
    # read as the callbacks 'h', 'e', ...
    model = make_model()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    for kw, says in ((dict(optimizer="sgd"), r"optimizer must be a torch.optim.Optimizer, got "
                                             r"'sgd'; by name: sgdlab.optim.build_optimizer"),
                     (dict(schedule="cosine-cyclic"), r"schedule must have a step\(\) .*"
                                                      r"build_schedule\(name, optimizer"),
                     (dict(callbacks="hessian"), r"callbacks\[0\] is the name 'hessian'.*"
                                                 r"build_instrument\('hessian', every=K")):
        kw = {"optimizer": sgd, **kw}
        store = RunStore(tmp_path / "s.sqlite")
        with pytest.raises(UserError, match=says):
            train(model, nn.CrossEntropyLoss(), toy_data(), kw.pop("optimizer"), epochs=1,
                  store=store, progress=False, **kw)
        assert store.list_runs() == []              # refused before the run is recorded


@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("form", ["module", "partial"])
def test_a_loss_that_is_not_the_batch_mean_is_refused(reduction, form):
    # a summed loss trained, then reported train_loss and test_loss as each evaluation
    # chunk's sum: 60x and 20x the mean on these splits, not comparable with each other;
    # a partial of F.cross_entropy given the reduction was trained so
    from sgdlab.train.replicas import ParleConfig, train_replicas
    data, model = toy_data(), make_model()
    loss_fn = {"module": nn.CrossEntropyLoss(reduction=reduction),
               "partial": functools.partial(F.cross_entropy, reduction=reduction)}[form]
    with pytest.raises(UserError, match=f"reduction='{reduction}'.*reduction='mean'"):
        train(model, loss_fn, data, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
              progress=False)
    with pytest.raises(UserError, match=f"reduction='{reduction}'.*reduction='mean'"):
        train_replicas(model, loss_fn, data, ParleConfig(replicas=1), epochs=1)

@pytest.mark.parametrize("opt", ["sgd", "entropy_sgd"])
def test_a_loss_function_of_ones_own_returning_a_loss_per_sample_is_named(tmp_path, opt):
    # a plain function has no reduction to read: it failed at the first evaluation or step on
    # torch's "output with shape [] doesn't match the broadcast shape [60]" or "grad can be
    # implicitly created only for scalar outputs"
    from sgdlab.optim import build_optimizer
    data, model = toy_data(), make_model()
    per_sample = lambda out, y: F.cross_entropy(out, y, reduction="none")  # noqa: E731
    store = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(UserError, match=r"loss_fn <lambda> returns a tensor of shape \(2,\) on "
                                        r"the first 2 training examples, not one number.*"
                                        r"\.mean\(\)") as refused:
        train(model, per_sample, data, build_optimizer(opt, model.parameters(), lr=0.1),
              epochs=1, eval_every=1000, progress=False, store=store)
    assert isinstance(refused.value.__cause__, RuntimeError)
    (rec,) = store.list_runs()
    assert rec["status"] == "failed" and "returns a tensor of shape (2,)" in rec["message"]
    # the same function with its mean trains
    mean = lambda out, y: F.cross_entropy(out, y, reduction="none").mean()  # noqa: E731
    model = make_model()
    res = train(model, mean, data, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
                progress=False)
    assert res.status == "finished"


def test_mismatched_labels_or_an_optimizer_of_another_model_is_named():
    data, loss_fn = toy_data(), nn.CrossEntropyLoss()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # Dataset refuses the mismatch when built; one made so afterwards is named by train
    short = Dataset(data.x_train, data.y_train, data.x_test, data.y_test)
    short.y_train = data.y_train[:-1]
    with pytest.raises(UserError, match="x_train has 60 examples but y_train has 59"):
        train(model, loss_fn, short, opt, epochs=1, batch_size=8, progress=False)
    # an optimizer over a fresh copy's parameters left `model` untouched, "finished"
    other = torch.optim.SGD(make_model().parameters(), lr=0.1)
    before = flat(model).clone()
    with pytest.raises(UserError, match="updates none of the model's parameters"):
        train(model, loss_fn, data, other, epochs=1, batch_size=8, progress=False)
    assert torch.equal(flat(model), before)
    # a frozen part is fine: the optimizer needs only some of the parameters
    model[0].requires_grad_(False)
    part = torch.optim.SGD(model[3].parameters(), lr=0.1)
    assert train(model, loss_fn, data, part, epochs=1, batch_size=8,
                 progress=False).status == "finished"
    assert torch.equal(flat(model)[:96], before[:96]) and not torch.equal(flat(model), before)


def test_deferred_loss_readback_matches_and_still_catches_divergence(monkeypatch):
    """The CUDA path reads losses back in groups; forced here on CPU with groups of 4."""
    import sgdlab.train.loop as loop_mod

    m_sync, r_sync = run(epochs=2, batch_size=7)
    monkeypatch.setattr(loop_mod, "_loss_sync_every", lambda device, callbacks: 4)
    m_def, r_def = run(epochs=2, batch_size=7)
    assert torch.equal(flat(m_sync), flat(m_def))
    assert r_def.history["batch_loss"] == r_sync.history["batch_loss"]

    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
    data = Dataset(x, x.sum(1, keepdim=True), x[:5], x[:5].sum(1, keepdim=True),
                   {"name": "lin", "task": "regression", "num_outputs": 1})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 1))
    res = train(model, nn.MSELoss(), data, torch.optim.SGD(model.parameters(), lr=1e3),
                epochs=50, batch_size=5, progress=False)
    assert res.status == "diverged" and "losses read back every 4 steps" in res.message


@pytest.mark.parametrize("exc, status", [(KeyboardInterrupt, "interrupted"),
                                         (RuntimeError, "failed")])
def test_crash_and_interrupt_are_recorded_and_reraised(tmp_path, exc, status):
    class Boom(Callback):
        def on_step_end(self, ctx):
            ctx.log("seen", ctx.step)
            if ctx.step == 9:
                raise exc("boom")

    store = RunStore(tmp_path / "runs.sqlite")
    with pytest.raises(exc):
        run(callbacks=[Boom()], store=store)
    (row,) = store.list_runs()
    assert row["status"] == status and "boom" in row["message"]
    assert store.metrics(row["id"])["seen"][-1] == (9, 9.0)  # flushed on the way out


def test_an_interrupt_in_the_end_hooks_resumes_without_training_again(tmp_path):
    """Ctrl-C during the final measurements (an ``on_train_end`` hook) of a run whose last
    periodic checkpoint is before its end (every 7 of 24 steps): the resume trained steps 22 to
    24 again. The trained steps are now saved before the final evaluation and end hooks; the
    resume only evaluates and measures, and ends as the uninterrupted run."""
    class Measure(Callback):
        def __init__(self, stop=False):
            self.stop, self.steps = stop, 0

        def on_step_end(self, ctx):
            self.steps += 1

        def on_train_end(self, ctx):
            if self.stop:
                raise KeyboardInterrupt
            ctx.log("final_norm", float(flat(ctx.model).norm()))

    kw = dict(epochs=3, batch_size=8, checkpoint_every=7)     # 8 steps per epoch
    ref_model, ref = run(callbacks=[Measure()], **kw)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        run(callbacks=[Measure(stop=True)], checkpoint_dir=ckpt, **kw)
    resumed = Measure()
    model, res = run(callbacks=[resumed], checkpoint_dir=ckpt, resume=True, **kw)
    assert resumed.steps == 0 and res.steps == 24
    assert torch.equal(flat(model), flat(ref_model))
    assert res.history == ref.history and "final_norm" in res.history


def test_a_run_started_from_python_carries_its_name_into_the_store(tmp_path):
    """``train(..., name=)`` names the new run, as ``train_replicas`` does (a run started
    from Python was listed nameless)."""
    store = RunStore(tmp_path / "runs.sqlite")
    _, res = run(store=store, name="my-probe")
    assert store.get_run(res.run_id)["name"] == "my-probe"


def test_non_finite_measurement_ends_the_run_as_diverged(tmp_path):
    # the loss is still finite when a measurement meets the non-finite weights (a hessian
    # instrument raised FloatingPointError and the run ended as a traceback, status failed)
    from sgdlab.train.checkpoint import load_checkpoint
    from sgdlab.train.instruments import build_instrument

    class Poison(Callback):
        def on_step_end(self, ctx):
            if ctx.step == 3:
                with torch.no_grad():
                    ctx.model[0].weight[0, 0] = math.nan

    store = RunStore(tmp_path / "runs.sqlite")
    hessian = build_instrument("hessian", schedule=Schedule.every(1), eval_subset=20)
    model = make_model()
    res = train(model, nn.CrossEntropyLoss(), toy_data(),
                torch.optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=10,
                callbacks=[Poison(), hessian], store=store, checkpoint_dir=tmp_path / "ck",
                checkpoint_every=2, progress=False)
    assert res.status == "diverged" and res.steps == 3
    assert res.message.startswith("non-finite values in a measurement after step 3 (epoch 0): "
                                  "hessian: ")
    row = store.get_run(res.run_id)
    assert row["status"] == "diverged" and row["message"] == res.message
    assert [s for s, _ in store.metrics(res.run_id)["hess/top_1"]] == [0, 1, 2]
    ckpt = load_checkpoint(tmp_path / "ck")   # the last good checkpoint is kept
    assert ckpt["loop"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def image_data(n: int = 30, seed: int = 0) -> Dataset:
    """Images (1, 5, 5) whose pixels all hold i + 1 plus noise below 0.5, label i % 3: an
    augmented batch still tells (through its largest pixel) which example it holds."""
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(1, n + 1, dtype=torch.float32)[:, None, None, None] + \
        0.4 * torch.rand(n, 1, 5, 5, generator=g)
    y = torch.arange(n) % 3
    meta = {"name": "img", "task": "classification", "num_outputs": 3,
            "augment": {"name": "crop-flip", "padding": 2, "flip": 0.5}}
    return Dataset(x, y, x[:6], y[:6], meta)


def image_model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(25, 8), nn.Tanh(), nn.Dropout(dropout),
                         nn.Linear(8, 3))


class RecordImages(Callback):
    def __init__(self):
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_step_begin(self, ctx):
        self.batches.append((ctx.batch[0].clone(), ctx.batch[1].clone()))


def test_augmented_batches_keep_their_labels_and_follow_the_seed():
    data = image_data()
    plain = Dataset(data.x_train, data.y_train, data.x_test, data.y_test,
                    {k: v for k, v in data.meta.items() if k != "augment"})

    def go(ds, seed=1):
        model = image_model()
        rec = RecordImages()
        train(model, nn.CrossEntropyLoss(), ds, torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=2, batch_size=7, seed=seed, callbacks=[rec], progress=False)
        return model, rec.batches

    m1, b1 = go(data)
    m2, b2 = go(data)
    _, b3 = go(data, seed=2)
    mp, bp = go(plain)
    assert torch.equal(flat(m1), flat(m2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(b1, b2))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(b1, b3))
    def index(xb):   # which example each augmented image is
        return xb.amax(dim=(1, 2, 3)).floor().long() - 1

    assert all(torch.equal(yb, data.y_train[index(xb)]) for xb, yb in b1 + b3)
    # the first pass draws its permutation before any crop: the examples of a run without
    # augmentation (the crops' draws then shift the later passes' permutations)
    changed = 0
    for (xb, yb), (xp, yp) in zip(b1[:5], bp[:5]):
        assert torch.equal(yb, yp) and torch.equal(index(xb), index(xp))
        changed += int((xb != xp).flatten(1).any(dim=1).sum())
    assert changed > 0.8 * 30   # 1 in 50 (offset, flip) draws is the identity

    def draw(aug, img):   # the (row offset, column offset, mirrored) that made aug from img
        p = torch.nn.functional.pad(img, (2, 2, 2, 2))
        hits = [(dy, dx, m) for dy in range(5) for dx in range(5) for m in (False, True)
                if torch.equal(aug, p[:, dy:dy + 5, dx:dx + 5].flip(-1) if m
                               else p[:, dy:dy + 5, dx:dx + 5])]
        assert len(hits) == 1
        return hits[0]

    # fresh draws for every image of every batch, not a pattern repeated per position
    first = [draw(xb[0], data.x_train[index(xb)[0]]) for xb, _ in b1]
    assert len(set(first)) > len(first) // 2
    assert not torch.equal(flat(m1), flat(mp))


def test_augmented_run_resumes_bit_for_bit(tmp_path):
    def go(**kw):
        model = image_model(0, dropout=0.3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        torch.manual_seed(123)
        res = train(model, nn.CrossEntropyLoss(), image_data(), opt, epochs=3, batch_size=8,
                    seed=5, progress=False, **kw)
        return model, res

    m_ref, r_ref = go()
    m1, r1 = go(checkpoint_dir=tmp_path, max_steps=6)
    assert r1.steps == 6 and not torch.equal(flat(m1), flat(m_ref))
    model = image_model(0, dropout=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(999)
    r2 = train(model, nn.CrossEntropyLoss(), image_data(), opt, epochs=3, batch_size=8, seed=5,
               progress=False, checkpoint_dir=tmp_path, resume=True)
    assert r2.steps == r_ref.steps == 12
    assert torch.equal(flat(model), flat(m_ref))
    assert r2.history["batch_loss"] == r_ref.history["batch_loss"]


def test_the_measurement_callbacks_docstring_example_runs_in_train():
    import inspect

    from sgdlab.measure import hessian_top_eigenvalue
    from sgdlab.train import MeasurementCallback

    example = inspect.getdoc(MeasurementCallback).split("Example::", 1)[1].strip()
    lines = example.splitlines()
    imports = [line for line in lines if line.startswith(("from ", "import "))]
    call = " ".join(line.strip() for line in lines if line not in imports)
    namespace = {"MeasurementCallback": MeasurementCallback, "Schedule": Schedule}
    exec("\n".join(imports), namespace)
    callback = eval(call.replace("Schedule.every(100)", "Schedule.every(1)"), namespace)
    data, model = toy_data(), make_model()
    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=1, batch_size=30, callbacks=[callback], progress=False)
    assert [s for s, _ in res.history["hess_top"]] == [0, 1, 2]
    model.eval()
    assert res.history["hess_top"][-1][1] == pytest.approx(
        hessian_top_eigenvalue(model, nn.CrossEntropyLoss(), data.train), rel=1e-4)


@pytest.mark.filterwarnings("ignore:.*dropout in train mode")
def test_a_measurement_callback_leaves_the_runs_random_draws_to_dropout():
    # the docstring's example drew its Lanczos start vector from the global generator: with
    # dropout the later masks, and so the final weights, differed from a run without it
    from sgdlab.measure import hessian_top_eigenvalue
    from sgdlab.train import MeasurementCallback

    data = toy_data()

    def run(callbacks):
        model = make_model(dropout=0.3)
        r = train(model, nn.CrossEntropyLoss(), data,
                  torch.optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=10,
                  callbacks=callbacks, progress=False)
        return model, r

    plain, _ = run([])
    measured, r = run([MeasurementCallback(lambda ctx: {"hess_top": hessian_top_eigenvalue(
        ctx.model, ctx.loss_fn, ctx.data.train)}, Schedule.every(3))])
    assert len(r.history["hess_top"]) > 3
    assert torch.equal(flat(measured), flat(plain))


class _Warming(nn.Module):
    """A layer whose output depends on how often it ran: a warm-up counted in forward."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * min(1.0, self.calls / 10)


def test_a_measurement_callback_leaves_the_model_as_it_found_it():
    # fn's forward passes in train mode moved batch norm's running statistics and the model's
    # own counter: the run went on from another model than a run without the measurement
    from sgdlab.train import MeasurementCallback

    data = toy_data()

    def run(callbacks):
        torch.manual_seed(0)
        model = nn.Sequential(_Warming(), nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
        train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=1, batch_size=10, callbacks=callbacks, progress=False)
        return model

    def probe(ctx):
        ctx.model.train()
        return {"out": float(ctx.model(ctx.data.x_train[:10]).sum().detach())}

    plain = run([])
    measured = run([MeasurementCallback(probe, Schedule.every(2))])
    assert measured[0].calls == plain[0].calls
    for (k, a), b in zip(plain.state_dict().items(), measured.state_dict().values()):
        assert torch.equal(a, b), k     # num_batches_tracked and running statistics too


def test_a_measurement_callback_value_that_is_no_number_is_named():
    # a GradientCovariance failed on float()'s bare "float() argument must be a string or a real
    # number", a vector on "only one element tensors can be converted to Python scalars"
    from sgdlab.measure import gradient_covariance, hessian_trace
    from sgdlab.train import MeasurementCallback

    for fn, says in [
            (lambda ctx: {"cov": gradient_covariance(ctx.model, ctx.loss_fn, ctx.data.train)},
             r"fn returned 'cov' = a GradientCovariance; each value must be one number"),
            (lambda ctx: {"vec": torch.ones(3)}, r"'vec' = a Tensor of shape \(3,\); each")]:
        with pytest.raises(UserError, match=says):
            run(epochs=1, callbacks=[MeasurementCallback(fn, Schedule.every(2))])
    # an Estimate and a 0-dim tensor are numbers
    _, r = run(epochs=1, callbacks=[MeasurementCallback(lambda ctx: {
        "trace": hessian_trace(ctx.model, ctx.loss_fn, ctx.data.train, 2),
        "norm": torch.tensor(2.0)}, Schedule.every(2))])
    assert len(r.history["trace"]) > 1 and r.history["norm"][-1][1] == 2.0


def test_a_measurement_callback_returning_a_bare_number_is_named():
    # "'float' object has no attribute 'items'"
    from sgdlab.measure import hessian_top_eigenvalue
    from sgdlab.train import MeasurementCallback

    bare = MeasurementCallback(
        lambda ctx: hessian_top_eigenvalue(ctx.model, ctx.loss_fn, ctx.data.train), every=2)
    with pytest.raises(UserError, match=r"fn returned a float, not a dict \{name: value\}"):
        run(epochs=1, callbacks=[bare])
    # a fn that logs nothing back ("'NoneType' object has no attribute 'items'")
    silent = MeasurementCallback(lambda ctx: None, every=2)
    with pytest.raises(UserError, match=r"fn returned None \(a function without a return\?\), "
                                        r"not a dict"):
        run(epochs=1, callbacks=[silent])


def test_a_measurement_callback_takes_every_and_at_as_build_instrument_does():
    from sgdlab.train import MeasurementCallback

    def steps(**cadence):
        _, r = run(epochs=1, callbacks=[MeasurementCallback(lambda ctx: {"one": 1.0},
                                                            **cadence)])
        return [s for s, _ in r.history["one"]]

    assert steps(every=2) == steps(schedule=Schedule.every(2)) == [0, 2, 4, 6, 8]   # 8 steps
    # the initial model only where the schedule has step 0, as build_instrument's: at=[1, 4]
    # measured step 0 too
    assert steps(every=2, start=3) == [3, 5, 7]
    assert steps(at=[1, 4]) == [1, 4]
    assert steps(at=[1, 4], at_train_begin=True) == [0, 1, 4]
    assert steps(schedule=lambda s: s in (0, 5)) == [0, 5]
    for cadence, says in [({}, "got none"), ({"every": 2, "at": [1]}, "got every and at"),
                          ({"schedule": 5}, "schedule must be a Schedule")]:
        with pytest.raises(ValueError, match=says):
            MeasurementCallback(lambda ctx: {}, **cadence)


def test_a_measurement_callback_measures_a_model_without_parameters():
    # StopIteration (next(model.parameters())) for a model the loop trains: its weights a
    # tensor it closes over, which the optimizer updates
    from sgdlab.train import MeasurementCallback

    w = torch.zeros(5, 2, requires_grad=True)

    class Closed(nn.Module):
        def forward(self, x):
            return x @ w

    r = train(Closed(), nn.CrossEntropyLoss(), toy_data(),
              torch.optim.SGD([w], lr=0.1), epochs=1, batch_size=20, progress=False,
              callbacks=[MeasurementCallback(lambda ctx: {"w_norm": float(w.detach().norm())},
                                             Schedule.every(1))])
    norms = [v for _, v in r.history["w_norm"]]
    assert [s for s, _ in r.history["w_norm"]] == [0, 1, 2, 3]
    assert norms[0] == 0 and norms[-1] > norms[1] > 0


def test_a_later_callbacks_refusal_of_the_loss_comes_before_an_earlier_one_measures_step_0():
    # each instrument's check_run ran in its own on_train_begin: a measurement listed before
    # the alignment instrument had measured (and logged) the initial model of a refused run
    from sgdlab.train import MeasurementCallback
    from sgdlab.train.instruments import build_instrument

    measured: list[int] = []
    spy = MeasurementCallback(lambda ctx: measured.append(ctx.step) or {"spy": 1.0},
                              Schedule.every(1))
    alignment = build_instrument("alignment", every=1, eval_subset=20)
    model = make_model()
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0]))
    with pytest.raises(UserError, match="the alignment instrument sets per-sample gradients"):
        train(model, weighted, toy_data(), torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=1, batch_size=20, progress=False, callbacks=[spy, alignment])
    assert measured == []


def test_a_run_result_prints_its_series_lengths_not_every_point():
    # the dataclass's repr printed every (step, value) of every series
    _, r = run(epochs=3)
    text = repr(r)
    assert len(r.history["train_loss"]) > 1 and len(r.history["batch_loss"]) > 1
    assert f"'batch_loss': {len(r.history['batch_loss'])} points" in text
    assert "status='finished'" in text and f"steps={r.steps}" in text
    assert f"'test_acc': {r.final['test_acc']:.6g}" in text
    assert "(0, " not in text and len(text) < 1500


def test_build_instrument_is_imported_beside_train():
    # `from sgdlab.train import train, MeasurementCallback, build_instrument`: an ImportError
    import sgdlab.train
    from sgdlab.train import build_instrument
    from sgdlab.train.instruments import build_instrument as defined

    assert build_instrument is defined and "build_instrument" in sgdlab.train.__all__
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        sgdlab.train.no_such_name


def test_a_last_batch_of_one_in_train_mode_batch_norm_is_named_with_drop_last():
    # torch's "Expected more than 1 value per channel when training" said nothing of the
    # batch: 65 samples in batches of 16 leave one for the last
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(65, 4, generator=g), torch.randint(0, 2, (65,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    with pytest.raises(UserError, match=r"a mini-batch of one sample reached a batch-norm layer "
                                        r"in train mode.*65 training samples.*drop_last=True"):
        train(model, nn.CrossEntropyLoss(), Dataset(x, y),
              torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=16,
              progress=False)
    r = train(model, nn.CrossEntropyLoss(), Dataset(x, y),
              torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=16,
              drop_last=True, progress=False)
    assert r.status == "finished" and r.steps == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_on_a_machine_without_cuda_is_refused_by_name():
    # torch's AssertionError "Torch not compiled with CUDA enabled" came from model.to()
    data, model = toy_data(), make_model()
    with pytest.raises(UserError, match=r"device='cuda', but CUDA is not available on this "
                                        r"machine .*leave device= out, or give 'cpu'"):
        train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=1, device="cuda", progress=False)


def test_a_torch_tensor_dataset_is_told_the_dataset_to_build():
    """A TensorDataset was told to build "Dataset(x_train, y_train, x_test, y_test)", not that
    its own two tensors are a training split; that split trains."""
    from torch.utils.data import TensorDataset

    data, model = toy_data(), make_model()
    td = TensorDataset(data.x_train, data.y_train)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UserError,
                       match=r"TensorDataset.*sgdlab.data.Dataset\(\*data.tensors\)"):
        train(model, nn.CrossEntropyLoss(), td, opt, epochs=1, progress=False)
    res = train(model, nn.CrossEntropyLoss(), Dataset(*td.tensors), opt, epochs=1,
                progress=False)
    assert res.status == "finished"


def test_a_torch_dataset_or_loader_is_told_to_read_it_with_from_torch_and_then_trains():
    """A DataLoader or a torch Dataset of one's own was told "data must be a
    sgdlab.data.Dataset ..., for your own tensors: ...", leaving the samples to stack by hand;
    Dataset.from_torch reads them, and that record trains (train_replicas says the same)."""
    from torch.utils.data import DataLoader, TensorDataset

    from sgdlab.train.replicas import ParleConfig, train_replicas

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i], int(self.y[i])

    data, model = toy_data(), make_model()
    train_set, loader = Pairs(*data.train), DataLoader(TensorDataset(*data.test), batch_size=7)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for given, kind in ((loader, r"DataLoader \(DataLoader\)"), (train_set, r"Dataset \(Pairs\)")):
        with pytest.raises(UserError, match=rf"data is a torch {kind}: .*sgdlab.data.Dataset."
                                            r"from_torch\(train, test\)"):
            train(model, nn.CrossEntropyLoss(), given, opt, epochs=1, progress=False)
    with pytest.raises(UserError, match=r"torch DataLoader .*Dataset.from_torch\(train, test"):
        train_replicas(model, nn.CrossEntropyLoss(), loader, ParleConfig(replicas=1), epochs=1)
    with pytest.raises(UserError, match=r"TensorDataset.*Dataset.from_torch\(data, test\)"):
        train(model, nn.CrossEntropyLoss(), TensorDataset(*data.train), opt, epochs=1,
              progress=False)
    read = Dataset.from_torch(train_set, loader)
    assert torch.equal(read.x_train, data.x_train) and torch.equal(read.y_test, data.y_test)
    res = train(model, nn.CrossEntropyLoss(), read, opt, epochs=2, batch_size=20,
                progress=False)
    assert res.status == "finished" and res.final["steps"] == 6
    assert res.history["train_loss"][-1][1] < res.history["train_loss"][0][1]
    assert "test_acc" in res.final


def test_train_replicas_is_imported_beside_train():
    # the README's table names train_replicas (Elastic-SGD, Parle) with the optimizers:
    # `from sgdlab.train import train_replicas` was an ImportError (sgdlab.train.replicas only)
    import sgdlab.train
    from sgdlab.train import ParleConfig, train_replicas
    from sgdlab.train import replicas

    assert train_replicas is replicas.train_replicas and ParleConfig is replicas.ParleConfig
    assert {"train_replicas", "ParleConfig"} <= set(sgdlab.train.__all__)


def test_callbacks_that_are_not_callbacks_are_named_and_a_single_one_is_taken():
    # a measurement function failed at the first hook ("'function' object has no attribute
    # 'on_train_begin'"); a single callback failed on "'...' object is not iterable"
    data, model = toy_data(), make_model()

    def run(callbacks):
        return train(model, nn.CrossEntropyLoss(), data,
                     torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=30,
                     callbacks=callbacks, progress=False)

    with pytest.raises(UserError, match=r"callbacks\[1\] is a function, not a "
                                        r"sgdlab.train.Callback: .*MeasurementCallback"):
        run([Callback(), lambda ctx: {"x": 1.0}])
    seen = []

    class Counter(Callback):
        def on_step_end(self, ctx):
            seen.append(ctx.step)

    assert run(Counter()).status == "finished" and seen == [1, 2]


def _step_lr_training(every, epochs=4, **kw):
    """nn.Linear(5, 3) trained by SGD at lr 1 under torch's StepLR(step_size=2, gamma=0.5) on
    60 samples, 3 steps per epoch at batch size 20: (the lr each step used, the result, the
    optimizer)."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    used = []

    class Lr(Callback):
        def on_step_begin(self, ctx):
            used.append(opt.param_groups[0]["lr"])

    res = train(model, nn.CrossEntropyLoss(), toy_data(n=60), opt, epochs=epochs, batch_size=20,
                schedule=sched, progress=False, schedule_every=every, callbacks=[Lr()], **kw)
    return used, res, opt


def test_a_torch_epoch_scheduler_steps_per_epoch_with_schedule_every_epoch(tmp_path):
    """torch's StepLR(step_size=2) counts the calls of its step(): stepped per optimizer step
    (the default, for sgdlab's schedules) it decays every 2 steps; ``schedule_every="epoch"``
    steps it at each epoch's end, so step_size counts epochs. A resume may not switch."""
    def run(every, epochs=4, **kw):
        return _step_lr_training(every, epochs, **kw)[0]

    assert run("step") == [0.5 ** (i // 2) for i in range(12)]
    assert run("epoch") == [0.5 ** (i // 6) for i in range(12)]
    with pytest.raises(UserError, match="schedule_every must be 'step' or 'epoch'"):
        run("epochs")
    run("epoch", epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match="schedule_every \\('epoch' -> 'step'\\)"):
        run("step", epochs=2, checkpoint_dir=tmp_path, resume=True)
    assert run("epoch", epochs=4, checkpoint_dir=tmp_path, resume=True) == [
        0.5 ** ((i + 3) // 6) for i in range(9)]


@pytest.mark.parametrize("every", ["step", "epoch"])
def test_the_lr_series_starts_at_step_0_with_the_lr_each_logged_step_uses(every):
    """``lr`` was logged at the epoch ends only: the first epoch's rate was missing from the
    series (and from instruments.png), and per epoch it was logged before the schedule
    stepped, one epoch late. At step s it is now the rate step s uses."""
    from sgdlab.report.figures.training import instrument_panels

    used, res, opt = _step_lr_training(every)
    lr = res.history["lr"]
    assert [s for s, _ in lr] == [0, 3, 6, 9, 12]           # 3 steps per epoch
    assert all(v == used[s] for s, v in lr[:-1])
    assert lr[0] == (0, 1.0) and lr[-1][1] == opt.param_groups[0]["lr"]
    fig = instrument_panels(res.history)
    (line,) = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label() == "lr"]
    assert line.get_xdata()[0] == 0 and line.get_ydata()[0] == 1.0


def test_schedule_every_without_a_schedule_does_not_stop_a_resume(tmp_path):
    """schedule_every steps a schedule; a run without one resumed with the other value was
    refused as a changed setting, though nothing it does differs."""
    def run(every, epochs, **kw):
        torch.manual_seed(0)
        model = nn.Linear(5, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return train(model, nn.CrossEntropyLoss(), toy_data(), opt, epochs=epochs,
                     batch_size=20, progress=False, schedule_every=every,
                     checkpoint_dir=kw.pop("ckpt"), **kw)

    whole = run("step", 2, ckpt=tmp_path / "whole")
    run("step", 1, ckpt=tmp_path / "cut")
    resumed = run("epoch", 2, ckpt=tmp_path / "cut", resume=True)
    assert resumed.status == "finished"
    assert resumed.history["train_loss"] == whole.history["train_loss"]


def test_a_schedule_of_steps_that_are_no_whole_numbers_is_refused():
    # every(2.5) measured at steps 0, 5, 10 and at([2.5]) at step 2; a negative step never came
    for make, what in ((lambda: Schedule.every(2.5), "period: 2.5"),
                       (lambda: Schedule.every(3, start=1.5), "start: 1.5"),
                       (lambda: Schedule.every(True), "period: True"),
                       (lambda: Schedule.at([4, 2.5]), r"steps: \[2.5\]"),
                       (lambda: Schedule.at([3, -1]), r"steps: \[-1\]")):
        with pytest.raises(ValueError, match=f"Invalid schedule {what} .*whole number"):
            make()
    assert [s for s in range(10) if Schedule.every(4.0, start=1)(s)] == [1, 5, 9]
    assert [s for s in range(10) if Schedule.at(np.array([2, 7]))(s)] == [2, 7]


def test_clip_grad_norm_rescales_each_gradient_before_the_step_and_callbacks():
    """One SGD step with clipping at c moves θ by lr·g·c/|g| when |g| > c (the whole
    gradient's norm over all parameters, float64, against the gradient computed by hand), by
    lr·g when |g| <= c; callbacks see the clipped gradient the optimizer uses."""
    data = toy_data(n=20)
    for clip in (0.05, 1e6):
        torch.manual_seed(0)
        model = nn.Linear(5, 3).double()
        theta0 = [q.detach().clone() for q in model.parameters()]
        ref = nn.Linear(5, 3).double()
        ref.load_state_dict(model.state_dict())
        F.cross_entropy(ref(data.x_train.double()), data.y_train).backward()
        g = [q.grad for q in ref.parameters()]
        norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
        scale = min(1.0, clip / (float(norm) + 1e-6))   # torch's clip_grad_norm_ rule
        seen = []

        class Norm(Callback):
            def on_after_backward(self, ctx):
                seen.append(float(torch.sqrt(sum((q.grad ** 2).sum()
                                                 for q in model.parameters()))))

        train(model, nn.CrossEntropyLoss(), data.to(dtype=torch.float64),
              torch.optim.SGD(model.parameters(), lr=0.5), epochs=1, batch_size=20,
              progress=False, clip_grad_norm=clip, callbacks=[Norm()])
        for q, q0, gi in zip(model.parameters(), theta0, g):
            torch.testing.assert_close(q.detach(), q0 - 0.5 * scale * gi, rtol=0, atol=1e-12)
        assert seen == [pytest.approx(scale * float(norm), rel=1e-12)]
    assert float(norm) > 0.05          # the first clip did rescale


def test_clip_grad_norm_clips_every_closure_call():
    """A closure optimizer's every gradient (Entropy-SGD's Langevin steps) is clipped."""
    norms = []

    class TwoCalls(torch.optim.Optimizer):
        needs_closure = True

        def __init__(self, params):
            super().__init__(params, {"lr": 0.1})

        def step(self, closure):
            for _ in range(2):
                closure()
                norms.append(float(torch.sqrt(sum((q.grad ** 2).sum() for g in
                                                  self.param_groups for q in g["params"]))))
                with torch.no_grad():
                    for g in self.param_groups:
                        for q in g["params"]:
                            q.sub_(g["lr"] * q.grad)

    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    train(model, nn.CrossEntropyLoss(), toy_data(n=40), TwoCalls(model.parameters()),
          epochs=1, batch_size=20, progress=False, clip_grad_norm=1e-3)
    assert len(norms) == 4 and all(n == pytest.approx(1e-3, rel=1e-3) for n in norms)


def test_clip_grad_norm_bad_values_are_refused_and_a_resume_may_not_change_it(tmp_path):
    def run(clip, epochs=1, **kw):
        torch.manual_seed(0)
        model = nn.Linear(5, 3)
        return train(model, nn.CrossEntropyLoss(), toy_data(), torch.optim.SGD(
            model.parameters(), lr=0.1), epochs=epochs, batch_size=20, progress=False,
            clip_grad_norm=clip, **kw)

    for bad in (0, -1.0, math.nan, math.inf, True, "5"):
        with pytest.raises(UserError, match="clip_grad_norm must be a finite number > 0"):
            run(bad)
    whole = run(1.0, epochs=2)
    run(1.0, checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match=r"clip_grad_norm \(1.0 -> 2.0\)"):
        run(2.0, epochs=2, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(UserError, match=r"clip_grad_norm \(1.0 -> None\)"):
        run(None, epochs=2, checkpoint_dir=tmp_path, resume=True)
    resumed = run(1, epochs=2, checkpoint_dir=tmp_path, resume=True)
    assert resumed.history["train_loss"] == whole.history["train_loss"]
    # numpy's float is the number it holds (it was refused as no int or float)
    assert run(np.float32(1.0), epochs=2).history["train_loss"] == whole.history["train_loss"]


# --- sequence_loss: the step on the window's summed loss ------------------------------------
def token_windows(n: int = 12, t: int = 4, vocab: int = 5, seed: int = 0) -> Dataset:
    """Windows of t random tokens and their next tokens: targets (N, t), one per position."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(0, vocab, (n + 4, t + 1), generator=g)
    x, y = s[:, :-1].contiguous(), s[:, 1:].contiguous()
    return Dataset(x[:n], y[:n], x[n:], y[n:], {"name": "tok", "task": "classification",
                                                "input_shape": (t,), "num_outputs": vocab})


def test_a_closure_optimizer_gets_the_window_s_summed_loss_and_its_gradient():
    """With ``sequence_loss="window-sum"`` every closure call returns the loss summed over the
    window's T positions (mean over the batch) and leaves its gradient; the logged batch loss
    stays the per-token mean."""
    data, seen = token_windows(t=4), []

    class Record(torch.optim.Optimizer):
        needs_closure = True

        def __init__(self, params):
            super().__init__(params, {"lr": 0.0})

        def step(self, closure):
            loss = closure()
            seen.append((float(loss.detach()),
                         [q.grad.clone() for q in self.param_groups[0]["params"]]))

    torch.manual_seed(0)
    model = TokenTagger(5).double()
    ref = TokenTagger(5).double()
    ref.load_state_dict(model.state_dict())
    res = train(model, nn.CrossEntropyLoss(), data, Record(model.parameters()), epochs=1,
                batch_size=len(data.x_train), progress=False, eval_every=0,
                sequence_loss="window-sum")
    per_position = F.cross_entropy(ref(data.x_train), data.y_train, reduction="none")
    summed = per_position.sum(1).mean()
    grads = torch.autograd.grad(summed, list(ref.parameters()))
    (loss, got), = seen
    assert float(loss) == pytest.approx(float(summed.detach()), rel=1e-12)
    for g, h in zip(got, grads):
        torch.testing.assert_close(g, h, rtol=1e-12, atol=1e-14)
    assert res.history["batch_loss"][-1][1] == pytest.approx(float(per_position.detach().mean()),
                                                            rel=1e-12)


def test_entropy_sgd_on_the_window_s_summed_loss_is_entropy_sgd_on_the_mean_rescaled():
    """Entropy-SGD on F = T f (``window-sum``) is Entropy-SGD on f with its SGLD step η_y T
    and scope γ T (no thermal noise), the outer step the same (docs/design/data-models.md):
    two steps in float64."""
    from sgdlab.optim import build_optimizer

    data, t = token_windows(n=16, t=4), 4
    after = []
    for sequence_loss, inner_lr, gamma in (("window-sum", 0.05, 2.0), ("mean", 0.2, 8.0)):
        torch.manual_seed(0)
        model = TokenTagger(5).double()
        opt = build_optimizer("entropy_sgd", model.parameters(), lr=0.5, L=3, inner_lr=inner_lr,
                              gamma=gamma)
        train(model, nn.CrossEntropyLoss(), data, opt, epochs=1, batch_size=8, max_steps=2,
              progress=False, eval_every=0, sequence_loss=sequence_loss)
        after.append([q.detach().clone() for q in model.parameters()])
    assert inner_lr == 0.05 * t and gamma == 2.0 * t
    for p, q in zip(*after):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["entropy_sgd", "heat"])
def test_the_loop_s_closure_spares_the_optimizer_s_finite_check(name, monkeypatch):
    """The loop's closure reads each loss on the host and raises on a non-finite one; the
    closure optimizers' own check (a device sync per call, after the backward pass is
    queued) is left out for it (docs/design/smoothing-parle.md)."""
    import sgdlab.optim.entropy_sgd as es
    import sgdlab.optim.smoothing as sm
    from sgdlab.optim import build_optimizer

    checked = []
    for module in (es, sm):
        monkeypatch.setattr(module, "check_finite_loss", checked.append)
    model = make_model(0)
    opt = build_optimizer(name, model.parameters(), L=2, seed=0)
    res = train(model, nn.CrossEntropyLoss(), toy_data(), opt, epochs=1, batch_size=20,
                max_steps=2, progress=False, eval_every=0)
    assert res.steps == 2 and res.grad_evals == 4
    assert checked == []
    opt.step(lambda: nn.CrossEntropyLoss()(model(toy_data().x_train), toy_data().y_train))
    assert len(checked) == 2         # a closure of one's own is checked


def test_sequence_loss_bad_values_non_sequence_data_and_a_resume_changing_it_are_refused(
        tmp_path):
    def run(sequence_loss, epochs=1, data=None, **kw):
        torch.manual_seed(0)
        model = TokenTagger(5)
        return train(model, nn.CrossEntropyLoss(), data or token_windows(), torch.optim.SGD(
            model.parameters(), lr=0.1), epochs=epochs, batch_size=4, progress=False,
            sequence_loss=sequence_loss, **kw)

    for bad in ("sum", "window_sum", None, True):
        with pytest.raises(UserError, match="sequence_loss must be one of 'mean', 'window-sum'"):
            run(bad)
    with pytest.raises(UserError, match=r"'window-sum' needs token data .*shape \(60,\)"):
        torch.manual_seed(0)
        model = nn.Linear(5, 2)
        train(model, nn.CrossEntropyLoss(), toy_data(), torch.optim.SGD(
            model.parameters(), lr=0.1), epochs=1, progress=False, sequence_loss="window-sum")
    whole = run("window-sum", epochs=2)
    assert whole.history["train_loss"] != run("mean", epochs=2).history["train_loss"]
    run("window-sum", checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match=r"sequence_loss \('window-sum' -> 'mean'\)"):
        run("mean", epochs=2, checkpoint_dir=tmp_path, resume=True)
    resumed = run("window-sum", epochs=2, checkpoint_dir=tmp_path, resume=True)
    assert resumed.history["train_loss"] == whole.history["train_loss"]


def test_parle_with_a_communicator_stops_every_replica_at_one_s_non_finite_loss():
    """Two replicas, each trained by the loop in a thread with Parle over a communicator:
    replica 1's loss is NaN at the second inner call of step 1. Its closure raises there
    (the loop's check); Parle meets replica 0 in the average all the same, and replica 0,
    handed the step's NaN, stops as replica 1 does: both runs diverged at step 1, neither
    waiting for ever in an average the other left. Replica 0's record says the loss that
    stopped it was another replica's (its own were finite); replica 1's names its own."""
    from sgdlab.optim.elastic import Parle
    from sgdlab.testing import run_threads

    def replica(rank, comm):
        calls = []

        def loss_fn(out_, y):
            calls.append(torch.is_grad_enabled())      # training's calls, not evaluation's
            loss = nn.functional.cross_entropy(out_, y)
            return loss * math.nan if rank == 1 and sum(calls) == 5 else loss
        model = make_model(0)
        opt = Parle(model.parameters(), lr=0.1, L=3, communicator=comm, seed=rank)
        res = train(model, loss_fn, toy_data(), opt, epochs=1, batch_size=20,
                    progress=False, eval_every=0)
        return res.status, res.steps, res.message

    out = run_threads(replica, 2)
    assert [o[:2] for o in out] == [("diverged", 1), ("diverged", 1)], out
    assert out[0][2] == ("another replica's mini-batch loss was non-finite at step 1 (epoch 0, "
                         "the weights after 1 step); stopped before the next step")
    assert out[1][2] == ("non-finite mini-batch loss (nan) at step 1 (epoch 0, the weights "
                         "after 1 step); stopped before the next step")


def test_a_finite_loss_that_overflows_times_the_loss_scale(monkeypatch):
    """A float16 loss of 49984 is finite, but times the window-sum loss scale (T = 4) it is
    inf. A plain optimizer never sees that value: the gradient of T f is T times f's (mul's
    backward does not read its output), so the run steps exactly as with the float64 loss,
    read back every step or in groups. A closure optimizer is handed the loss it steps on,
    told it is finite: the run diverges at that step, naming the loss scale, with the weights
    of the last finite step."""
    import sgdlab.train.loop as loop_mod
    from sgdlab.optim import EntropySGD

    data = token_windows(t=4)

    def run(opt_of, half, sync=1):
        now, kept = {}, {}

        def loss_fn(out, y):    # 49984 (a float16) from step 2; float16's max is 65504
            ce = F.cross_entropy(out, y)
            loss = ce / ce.detach() * (49984.0 if now.get("step", 0) >= 2 else 1000.0)
            return loss.half() if half else loss

        class Keep(loop_mod.Callback):
            def on_step_begin(self, ctx):
                now["step"] = ctx.step

            def on_step_end(self, ctx):
                kept[ctx.step] = flat(model).clone()
        monkeypatch.setattr(loop_mod, "_loss_sync_every", lambda device, cb: sync)
        torch.manual_seed(0)
        model = TokenTagger(5).double()
        res = train(model, loss_fn, data, opt_of(model.parameters()), epochs=4,
                    batch_size=len(data.x_train), progress=False, eval_every=0,
                    sequence_loss="window-sum", callbacks=[Keep()])
        return res, flat(model), kept

    def sgd(p):
        return torch.optim.SGD(p, lr=1e-5)
    res64, w64, _ = run(sgd, half=False)
    for sync in (1, 3):
        res, w, _ = run(sgd, half=True, sync=sync)
        assert res.status == "finished" and res.steps == 4, res
        assert torch.isfinite(w).all() and torch.equal(w, w64)

    res, w, kept = run(lambda p: EntropySGD(p, lr=1e-5, L=1), half=True)
    assert res.status == "diverged" and res.steps == 2, res
    assert res.message == ("non-finite mini-batch loss times the loss scale 4 (49984.0 x 4 "
                           "overflowed to inf) at step 2 (epoch 2, the weights after 2 steps); "
                           "stopped before the next step")
    assert torch.equal(w, kept[2])


def test_parle_with_a_communicator_does_not_read_its_step_s_finite_loss_again(monkeypatch):
    """The loss a Parle step over a communicator returns, when it is one the loop's closure
    read on the host (finite), is not read back again after the step: on a GPU that read
    waits for the outer step queued after the all-reduce, a device sync per step. (One
    replica: the average is the identity; the step's NaN path is tested above.)"""
    from sgdlab.optim.elastic import Parle

    class One:
        def average(self, tensors):
            return [t.detach().clone() for t in tensors]

    read, stepped = [], []
    float_ = torch.Tensor.__float__

    def counting_float(self):
        read.append(self)     # (kept alive, as the steps' losses: no address reused)
        return float_(self)
    monkeypatch.setattr(torch.Tensor, "__float__", counting_float)
    model = make_model(0)
    opt = Parle(model.parameters(), lr=0.1, L=2, communicator=One(), seed=0)
    step = opt.step

    def recorded_step(closure):
        loss = step(closure)
        stepped.append(loss)
        return loss
    opt.step = recorded_step
    res = train(model, nn.CrossEntropyLoss(), toy_data(), opt, epochs=1, batch_size=20,
                progress=False, eval_every=0)
    assert res.status == "finished" and res.steps == len(stepped) == 3, res
    assert not {t.data_ptr() for t in stepped} & {t.data_ptr() for t in read}


# --- references written by hand: plain SGD in float64, hook steps, resume after an interrupt
def linear_regression_data(n: int = 10, d: int = 3) -> Dataset:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n + 4, d, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)[:d] + 0.1 * torch.randn(
        n + 4, generator=g, dtype=torch.float64)
    return Dataset(x[:n], y[:n, None], x[n:], y[n:, None],
                   {"name": "lin", "task": "regression", "num_outputs": 1})


def linear_model() -> nn.Linear:
    model = nn.Linear(3, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, 0.1, -0.2]], dtype=torch.float64))
        model.bias.fill_(0.05)
    return model


def sgd_by_hand(data: Dataset, lr, *, epochs: int, b: int, seed: int,
                replacement: bool = False, drop_last: bool = False):
    """Plain SGD on the mean squared error of a linear model, the gradient in closed form
    (2/|B| Xᵀ(Xw + c - y)), batches as the loop's docstring states them: per epoch
    ceil(N/B) steps (N // B with drop_last) over a fresh permutation of range(N) drawn from a
    generator seeded with ``seed`` (with replacement: B indices drawn uniformly at each
    step); ``lr(s)`` is the rate step s uses. Returns (w, c, the mini-batch losses of each
    epoch)."""
    x, y = data.x_train, data.y_train[:, 0]
    n = len(x)
    w = torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64)
    c = torch.tensor(0.05, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    s, losses = 0, []
    for _ in range(epochs):
        steps = n // b if drop_last else -(-n // b)
        perm = None if replacement else torch.randperm(n, generator=g)
        losses.append([])
        for i in range(steps):
            idx = (torch.randint(n, (b,), generator=g) if replacement
                   else perm[i * b:(i + 1) * b])
            xb, yb = x[idx], y[idx]
            r = xb @ w + c - yb
            losses[-1].append(float((r ** 2).mean()))
            w, c = w - lr(s) * 2 * xb.T @ r / len(idx), c - lr(s) * 2 * r.sum() / len(idx)
            s += 1
    return w, c, losses


@pytest.mark.parametrize("b, replacement, drop_last", [(4, False, False), (4, False, True),
                                                       (4, True, False), (3, False, False)])
def test_plain_sgd_in_float64_is_the_sgd_written_by_hand(b, replacement, drop_last):
    """The loop's SGD on a linear model in float64, with a learning rate that changes every
    step (LambdaLR stepped per step: step s uses lr0 / (1 + s)), against SGD written by hand:
    the same weights, the same epoch mean of the mini-batch losses, and the counts the
    docstring defines (grad_evals = steps, effective_epochs = examples processed / N)."""
    data = linear_regression_data()
    model = linear_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    r = train(model, nn.MSELoss(), data, opt, schedule=sched, epochs=3, batch_size=b,
              seed=7, replacement=replacement, drop_last=drop_last, progress=False)
    w, c, losses = sgd_by_hand(data, lambda s: 0.2 / (1 + s), epochs=3, b=b, seed=7,
                               replacement=replacement, drop_last=drop_last)
    torch.testing.assert_close(model.weight.detach()[0], w, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.bias.detach()[0], c, rtol=0, atol=1e-12)
    steps = len(losses[0])
    assert r.steps == 3 * steps and r.grad_evals == 3 * steps
    assert [s for s, _ in r.history["batch_loss"]] == [steps, 2 * steps, 3 * steps]
    for (_, got), want in zip(r.history["batch_loss"], losses):
        assert got == pytest.approx(sum(want) / len(want), rel=1e-12)
    examples = [steps * b if replacement else (steps * b if drop_last else 10)] * 3
    assert [v for _, v in r.history["effective_epochs"]] == pytest.approx(
        [sum(examples[:e + 1]) / 10 for e in range(3)])
    # step s logs the lr step s uses: 0.2/(1 + s) at 0 and each epoch end
    assert r.history["lr"] == [(s, pytest.approx(0.2 / (1 + s)))
                               for s in (0, steps, 2 * steps, 3 * steps)]
    # the final evaluation: the mean squared error over the whole set, in float64
    x, y = data.x_train, data.y_train[:, 0]
    assert r.final["train_loss"] == pytest.approx(float(((x @ w + c - y) ** 2).mean()),
                                                  rel=1e-12)


def test_full_batch_gd_is_gradient_descent_on_the_whole_set_in_its_stored_order():
    """B >= N: every step uses all N examples (one step an epoch), no batch drawn: gradient
    descent written by hand, and the sampling generator untouched (any seed, same run)."""
    data = linear_regression_data()
    x = data.x_train
    # one batch of all 10 an epoch: gradient descent (its rows' order only rounds differently)
    w, c, _ = sgd_by_hand(data, lambda s: 0.1, epochs=4, b=10, seed=0)
    for seed, b in ((0, 10), (1, 25)):
        model = linear_model()
        seen = RecordImages()
        r = train(model, nn.MSELoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
                  epochs=4, batch_size=b, seed=seed, progress=False, callbacks=[seen])
        assert r.steps == 4 and len(seen.batches) == 4
        assert all(torch.equal(xb, x) for xb, _ in seen.batches)    # in the stored order
        torch.testing.assert_close(model.weight.detach()[0], w, rtol=0, atol=1e-13)
        torch.testing.assert_close(model.bias.detach()[0], c, rtol=0, atol=1e-13)


class HookSteps(Callback):
    """Writes down ctx.step and ctx.epoch at every hook, what the step's parameters were,
    and whether the epoch's evaluation was logged before on_epoch_end."""

    def __init__(self):
        self.calls: list[tuple] = []

    def on_train_begin(self, ctx):
        self.calls.append(("train_begin", ctx.step, ctx.epoch, ctx.batch_size))

    def on_step_begin(self, ctx):
        self.w = ctx.model.weight.detach().clone()
        self.calls.append(("step_begin", ctx.step, ctx.epoch, len(ctx.batch[0])))

    def on_after_backward(self, ctx):
        # the gradient is in p.grad and the weights have not moved yet
        assert torch.equal(ctx.model.weight, self.w) and ctx.model.weight.grad is not None
        self.calls.append(("after_backward", ctx.step, ctx.epoch, ctx.batch_size))

    def on_step_end(self, ctx):
        assert not torch.equal(ctx.model.weight, self.w)      # the step was taken
        self.calls.append(("step_end", ctx.step, ctx.epoch, ctx.steps_per_epoch))

    def on_epoch_end(self, ctx):
        evaluated = ctx.history["train_loss"][-1][0] == ctx.step
        self.calls.append(("epoch_end", ctx.step, ctx.epoch, evaluated))

    def on_train_end(self, ctx):
        self.calls.append(("train_end", ctx.step, ctx.epoch, None))


def test_each_hook_sees_the_step_count_the_callbacks_docstring_gives():
    """N = 10, B = 4: three steps an epoch (the last of 2 examples). on_step_begin and
    on_after_backward see the steps taken before the step, on_step_end after it; on_epoch_end
    the epoch's last step, after its evaluation; on_train_end the total, once."""
    cb = HookSteps()
    model = linear_model()
    train(model, nn.MSELoss(), linear_regression_data(), torch.optim.SGD(
        model.parameters(), lr=0.1), epochs=2, batch_size=4, callbacks=[cb], progress=False)
    want = [("train_begin", 0, 0, 4)]
    s = 0
    for e in range(2):
        for size in (4, 4, 2):
            want += [("step_begin", s, e, size), ("after_backward", s, e, 4),
                     ("step_end", s + 1, e, 3)]
            s += 1
        want.append(("epoch_end", s, e, True))
    want.append(("train_end", 6, 1, None))
    assert cb.calls == want


def test_evaluations_fall_at_step_0_every_eval_every_epochs_and_the_end():
    """eval_every=2 over 3 epochs of 3 steps: steps 0, 6 and (the end) 9; None: each epoch;
    0: the start and the end; a Schedule: its steps."""
    def steps(**kw):
        model = linear_model()
        r = train(model, nn.MSELoss(), linear_regression_data(), torch.optim.SGD(
            model.parameters(), lr=0.1), epochs=3, batch_size=4, progress=False, **kw)
        return [s for s, _ in r.history["train_loss"]]

    assert steps(eval_every=2) == [0, 6, 9]
    assert steps() == [0, 3, 6, 9]
    assert steps(eval_every=0) == [0, 9]
    assert steps(eval_every=Schedule.at([2, 9])) == [0, 2, 9]


class Interrupt(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, ctx):
        if ctx.step == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("replacement, drop_last", [(False, False), (True, False),
                                                    (False, True)])
def test_a_run_interrupted_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path, replacement,
                                                                      drop_last):
    """Killed at step 7 (mid-epoch 2 of 3-step epochs) with a checkpoint every 2 steps: the
    resume from step 6 ends with the uninterrupted run's weights, momentum, history and
    callback memory, bit for bit."""
    def go(callbacks, **kw):
        model = linear_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        r = train(model, nn.MSELoss(), linear_regression_data(), opt, epochs=4, batch_size=4,
                  seed=3, replacement=replacement, drop_last=drop_last, progress=False,
                  callbacks=callbacks, **kw)
        return model, opt, r

    cb_ref = RunningSum()
    m_ref, o_ref, r_ref = go([cb_ref])
    with pytest.raises(KeyboardInterrupt):
        go([RunningSum(), Interrupt(7)], checkpoint_dir=tmp_path, checkpoint_every=2)
    cb = RunningSum()
    model, opt, r = go([cb, Interrupt(-1)], checkpoint_dir=tmp_path, checkpoint_every=2,
                       resume=True)
    assert r.steps == r_ref.steps
    assert torch.equal(model.weight, m_ref.weight) and torch.equal(model.bias, m_ref.bias)
    assert torch.equal(opt.state[model.weight]["momentum_buffer"],
                       o_ref.state[m_ref.weight]["momentum_buffer"])
    assert r.history == r_ref.history
    assert cb.total == cb_ref.total


def test_drop_last_with_a_shrinking_batch_size_visits_every_example_once_an_epoch():
    """N = 10, B = 4 then 2 with drop_last: epoch 0 takes 8 examples of its pass (2
    dropped); epoch 1 is a new pass of 5 batches of 2, each example once. (The pass's two
    leftover examples made epoch 1's first batch, and two examples of its pass went to
    epoch 2.)"""
    seen = RecordBatches()
    model = nn.Linear(1, 2)
    train(model, nn.CrossEntropyLoss(), index_data(10), torch.optim.SGD(model.parameters(), 0.0),
          epochs=3, batch_size=lambda e: 4 if e == 0 else 2, drop_last=True,
          callbacks=[seen], progress=False)
    assert [len(b) for b in seen.batches] == [4, 4] + [2] * 10
    assert len(set(torch.cat(seen.batches[:2]).tolist())) == 8
    for e in (1, 2):
        epoch = torch.cat(seen.batches[2 + 5 * (e - 1):2 + 5 * e])
        assert sorted(epoch.tolist()) == list(range(10)), e


class EndCount(Callback):
    def __init__(self):
        self.ends, self.sizes = 0, []

    def on_train_begin(self, ctx):
        self.sizes.append(ctx.batch_size)

    def on_step_begin(self, ctx):
        self.sizes.append(ctx.batch_size)

    def on_train_end(self, ctx):
        self.ends += 1


def test_resuming_a_finished_run_runs_no_end_hook_again_and_a_full_batch_is_n(tmp_path):
    """A finished run resumed with nothing left to train: no second on_train_end (the
    checkpoint says the end ran); continued with more epochs it ends again. B = 25 > N = 10:
    the step's batch size before the first step is N."""
    def go(cb, epochs, **kw):
        model = linear_model()
        return train(model, nn.MSELoss(), linear_regression_data(), torch.optim.SGD(
            model.parameters(), lr=0.1), epochs=epochs, batch_size=25, callbacks=[cb],
            progress=False, checkpoint_dir=tmp_path, **kw)

    cb = EndCount()
    go(cb, 2)
    assert cb.ends == 1 and cb.sizes == [10, 10, 10]
    again = EndCount()
    r = go(again, 2, resume=True)
    assert r.steps == 2 and again.ends == 0
    more = EndCount()
    r = go(more, 3, resume=True)
    assert r.steps == 3 and more.ends == 1


def test_every_closure_call_of_a_repeating_optimizer_sees_the_step_s_batch():
    """lr = 0: the weights never move, so equal losses within a step mean one batch. With
    ``closure_repeats_batch`` a step's three calls give one loss, and the steps walk the
    stream as a plain optimizer's would (the same first losses as the one-look run)."""
    def losses(looks):
        model = make_model(0)
        opt = SharedLookSGD(model.parameters(), lr=0.0, looks=looks)
        train(model, nn.CrossEntropyLoss(), toy_data(), opt, epochs=1, batch_size=20,
              progress=False)
        return opt.losses

    three, one = losses(3), losses(1)
    assert all(len(set(step)) == 1 for step in three)
    assert len({step[0] for step in three}) == 3
    assert [step[0] for step in three] == [step[0] for step in one]


def test_checkpoints_fall_every_checkpoint_every_steps_and_at_the_end(tmp_path):
    """3-step epochs, 9 steps: checkpoint_every=5 writes at step 5, not at the epoch ends,
    then at the end twice (the trained steps before the final evaluation and end hooks, then
    the end); None writes at each epoch end (3, 6, 9: the last is the trained steps) and
    at the end."""
    from sgdlab.train.checkpoint import load_checkpoint

    def steps(every):
        seen = []
        model = linear_model()
        train(model, nn.MSELoss(), linear_regression_data(), torch.optim.SGD(
            model.parameters(), lr=0.1), epochs=3, batch_size=4, progress=False,
            checkpoint_dir=tmp_path / str(every), checkpoint_every=every,
            on_checkpoint=lambda f: seen.append(load_checkpoint(f)["loop"]["step"]))
        return seen

    assert steps(5) == [5, 9, 9]
    assert steps(None) == [3, 6, 9, 9]
    # one due on an epoch's last step waits for the epoch end's work: written once
    assert steps(3) == [3, 6, 9, 9]


def test_the_default_batch_size_on_a_smaller_training_set_warns_that_it_is_gd():
    # train() without batch_size= on 60 examples of one's own took the default 128: every
    # step full-batch GD, without a word; a batch size one gives is taken as meant
    import warnings

    data = toy_data(60)
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    with pytest.warns(UserWarning, match="default 128, more than the 60 training examples"):
        r = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
                  epochs=2, progress=False)
    assert r.steps == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for b in (128, "full"):
            r = train(model, nn.CrossEntropyLoss(), data,
                      torch.optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=b,
                      progress=False)
            assert r.steps == 2


class _ConvOnImages(nn.Module):
    """A model of one's own that takes (1, 4, 4) images: flat rows fail in its forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))


def test_inputs_of_another_shape_than_the_model_takes_are_named_with_the_model_s_line():
    # a traceback through torch's conv2d ended the command: name the inputs' shape, the
    # model and the line of its own code that raised
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 16, generator=g), torch.randint(0, 2, (8,), generator=g)
    model = _ConvOnImages()
    with pytest.raises(UserError, match=r"the model \(_ConvOnImages\) fails on the training "
                                        r"inputs, each of shape \(16,\): Expected 3D.*\(.*"
                                        r"test_train_loop\.py, line \d+\); give it"):
        train(model, nn.CrossEntropyLoss(), Dataset(x, y),
              torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=4,
              progress=False)
    r = train(model, nn.CrossEntropyLoss(), Dataset(x.reshape(8, 1, 4, 4), y),
              torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=4,
              progress=False)
    assert r.status == "finished"


class SignalInStep(Callback):
    """Sends ``signum`` to this process during step ``at`` (after its backward pass), as a
    Ctrl-C or ``kill`` landing mid-step would."""

    def __init__(self, at: int, signum: int):
        self.at, self.signum = at, signum

    def on_after_backward(self, ctx):
        if ctx.step == self.at:
            signal.raise_signal(self.signum)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_mid_step_is_raised_at_its_end_with_a_checkpoint(tmp_path, signame,
                                                                  sigint_interrupts):
    """Ctrl-C (or SIGTERM, as the command line raises it) during step 5 of an epoch of 8, no
    checkpoint yet: the run lost its steps and restarted from step 0. The step now ends, a
    checkpoint is saved at step 6 and the interrupt raised; the resume ends bit for bit where
    the uninterrupted run does."""
    from sgdlab.interrupts import raise_terminated
    from sgdlab.train.checkpoint import load_checkpoint

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        kw = dict(epochs=2, batch_size=8)          # 8 steps per epoch
        ref_model, ref = run(callbacks=[RunningSum()], **kw)
        ckpt = tmp_path / "ckpt"
        with pytest.raises(KeyboardInterrupt):
            run(callbacks=[RunningSum(), SignalInStep(5, getattr(signal, signame))],
                checkpoint_dir=ckpt, **kw)
        assert load_checkpoint(ckpt)["loop"]["step"] == 6
        model, res = run(callbacks=[RunningSum()], checkpoint_dir=ckpt, resume=True, **kw)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert torch.equal(flat(model), flat(ref_model))
    assert res.history == ref.history and res.steps == 16


def test_a_signal_in_a_step_end_measurement_is_raised_at_once(tmp_path, sigint_interrupts):
    """A measurement at a step's end (maybe minutes long) stays interruptible at once: no
    checkpoint there, the run stopped at that step."""
    class SignalAtEnd(Callback):
        def on_step_end(self, ctx):
            if ctx.step == 5:
                signal.raise_signal(signal.SIGINT)
                raise AssertionError("not raised at once")

    with pytest.raises(KeyboardInterrupt):
        run(callbacks=[SignalAtEnd()], checkpoint_dir=tmp_path, epochs=1, batch_size=8)
    assert not (tmp_path / "last.pt").exists()


def test_a_signal_held_in_a_step_that_diverges_still_stops_the_run(tmp_path,
                                                                   sigint_interrupts):
    """Ctrl-C early in step 3, whose loss is non-finite: the divergence ends the run before
    the step's end, and the held interrupt is raised all the same (train returned a diverged
    result, the Ctrl-C dropped)."""

    class SignalThenPoison(Callback):
        def on_step_begin(self, ctx):
            if ctx.step == 3:
                signal.raise_signal(signal.SIGINT)
                with torch.no_grad():
                    ctx.model[0].weight[0, 0] = math.nan

    with pytest.raises(KeyboardInterrupt) as raised:
        run(callbacks=[SignalThenPoison()], checkpoint_dir=tmp_path, epochs=1, batch_size=8)
    assert raised.value.stopped_step == 3
