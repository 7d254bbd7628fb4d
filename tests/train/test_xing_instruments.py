"""Xing et al.'s instruments: interpolation restricted to chosen epochs (Tables 1-2) and the
Hessian spectral norm with batch norm in train mode on SGD-sized batches (Fig. 3, fn. 5)."""
from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.data.base import Dataset
from sgdlab.operators.params import params_vector
from sgdlab.testing import Quadratic, TokenBag, flat_loss
from sgdlab.train.callbacks import Callback, Schedule
from sgdlab.train.instruments import build_instrument
from sgdlab.train.instruments.dynamics import DynamicsCallback
from sgdlab.train.instruments.walk import StepInterpolationCallback
from sgdlab.train.loop import train


def _data(n=12, seed=0, *, scale=1.0, shift=0.0):
    """n float64 examples of 3 features (× ``scale`` + ``shift``: batch statistics away from
    a fresh batch norm's running ones) with 2 classes; the first 4 again as the test set."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64) * scale + shift
    y = torch.randint(0, 2, (n,), generator=g)
    return Dataset(x, y, x[:4].clone(), y[:4].clone(),
                   {"name": "tiny", "task": "classification", "num_outputs": 2})


def _no_data(dtype=torch.float32):
    """Two zero examples (a ``Quadratic`` ignores its inputs): one full batch of 2."""
    z, t = torch.zeros(2, 1, dtype=dtype), torch.zeros(2, dtype=dtype)
    return Dataset(z, t, z.clone(), t.clone(),
                   {"name": "toy", "task": "regression", "num_outputs": 1})


def _bn_model(hidden=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, hidden), nn.BatchNorm1d(hidden), nn.Tanh(),
                         nn.Linear(hidden, 2)).double()


def test_step_interpolation_only_in_the_chosen_epochs():
    data = _data()
    model = _bn_model()
    walk = build_instrument("step_interpolation", schedule=Schedule.every(1), epochs=[2, 4])
    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=4, batch_size=4, callbacks=[walk], progress=False)
    assert res.status == "finished"
    assert sorted({r.epoch for r in walk.records}) == [2, 4]
    assert [r.step for r in walk.records] == [3, 4, 5, 9, 10, 11]     # 3 updates per epoch
    assert all(len(r.losses) == 12 for r in walk.records)             # 10 points + 2 iterates
    assert [v for _, v in res.history["walk_epoch"]] == [2.0, 4.0]
    assert [v for _, v in res.history["walk_epoch_steps"]] == [3.0, 3.0]
    with pytest.raises(ValueError, match="epochs"):
        build_instrument("step_interpolation", schedule=Schedule.every(1), epochs=[0])


def test_step_interpolation_summarises_an_epoch_training_ends_within():
    """max_steps = 5 at 3 updates per epoch: epoch 2 ends after 2 of its updates, and its
    summary is logged with them (not left out of the per-epoch table)."""
    model = _bn_model()
    walk = build_instrument("step_interpolation", schedule=Schedule.every(1))
    res = train(model, nn.CrossEntropyLoss(), _data(), torch.optim.SGD(model.parameters(),
                lr=0.1), epochs=4, batch_size=4, max_steps=5, callbacks=[walk], progress=False)
    assert [v for _, v in res.history["walk_epoch"]] == [1.0, 2.0]
    assert [v for _, v in res.history["walk_epoch_steps"]] == [3.0, 2.0]


def test_resume_after_max_steps_completes_the_cut_epoch_and_ends_again(tmp_path):
    """Stopped by max_steps = 5 inside epoch 2, then resumed to 4 epochs: epoch 2's summary is
    logged at its real end too (all 3 updates, as without the stop; the partial one of the
    stop stays in the history, at step 5), and the end hooks run at the real end."""
    class Ends(Callback):
        def __init__(self):
            self.at = []

        def on_train_end(self, ctx):
            self.at.append(ctx.step)

    def go(**kw):
        torch.manual_seed(0)
        model, walk, ends = _bn_model(), build_instrument("step_interpolation",
                                                          schedule=Schedule.every(1)), Ends()
        res = train(model, nn.CrossEntropyLoss(), _data(), torch.optim.SGD(
            model.parameters(), lr=0.1), epochs=4, batch_size=4, callbacks=[walk, ends],
            progress=False, seed=0, **kw)
        return model, res, ends

    m_ref, ref, ends_ref = go()
    go(checkpoint_dir=tmp_path, max_steps=5)
    model, res, ends = go(checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(params_vector(model), params_vector(m_ref))
    assert ends.at == ends_ref.at == [12]
    for key in ("walk_epoch", "walk_epoch_steps", "walk_epoch_mean_height"):
        assert [p for p in res.history[key] if p[0] != 5] == ref.history[key]
    assert [v for t, v in res.history["walk_epoch_steps"] if t == 5] == [2.0]


def test_train_mode_hessian_uses_the_statistics_of_each_batch():
    # train-mode BN on batches of 4: L(θ) = (1/3) Σ_b ℓ_b(θ) with each batch normalised by its
    # own mean and variance; its Hessian is the mean of the per-batch dense Hessians
    data = _data()
    model = _bn_model(hidden=2)                       # d = 18
    loss_fn = nn.CrossEntropyLoss()
    ref_model = copy.deepcopy(model).train()

    def dense(x, y):
        # torch.autograd.functional: torch.func's jacrev(jacrev) of a train-mode batch norm
        # differs from double backward (torch 2.13), so it cannot serve as the reference here
        return torch.autograd.functional.hessian(flat_loss(ref_model, loss_fn, (x, y)),
                                                 params_vector(ref_model))

    hs = [dense(data.x_train[i:i + 4], data.y_train[i:i + 4]) for i in range(0, 12, 4)]
    expected = float(torch.linalg.eigvalsh(sum(hs) / 3).abs().max())
    whole = float(torch.linalg.eigvalsh(dense(data.x_train, data.y_train)).abs().max())
    assert abs(whole - expected) > 1e-3 * expected     # the batch size matters in train mode

    dyn = DynamicsCallback(Schedule.never(), hessian_schedule=Schedule.at([0]),
                           hessian_bn_mode="train", eval_batch_size=4,
                           hessian_kw={"tol": 1e-10, "num_iter": 18})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = train(model, loss_fn, data, torch.optim.SGD(model.parameters(), lr=0.0),
                epochs=1, batch_size=12, callbacks=[dyn], progress=False)
    (step, got), = res.history["hess_norm_train"]
    assert step == 0 and got == pytest.approx(expected, rel=1e-6)
    for k, v in model.state_dict().items():           # lr 0: only the buffers could move
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(v, before[k])


def test_dynamics_logs_the_spectral_norm_or_the_largest_eigenvalue_as_asked():
    """hessian_which: Fig. 3's "Max eigenvalue (spectral norm)" as max |λ| (default) or as
    λ_max, each against the dense Hessian of a model whose spectrum has a negative end."""
    data = _data()
    model = _bn_model(hidden=2)

    def loss_fn(out, y):                  # the cross-entropy's spectrum turned over
        return -nn.functional.cross_entropy(out, y)
    ref = copy.deepcopy(model).eval()
    lam = torch.linalg.eigvalsh(torch.autograd.functional.hessian(
        flat_loss(ref, loss_fn, (data.x_train, data.y_train)), params_vector(ref)))
    got = {}
    for which in ("magnitude", "largest"):
        dyn = DynamicsCallback(Schedule.never(), hessian_schedule=Schedule.at([0]),
                               hessian_kw={"tol": 1e-10, "num_iter": 18}, hessian_which=which)
        m = copy.deepcopy(model)
        res = train(m, loss_fn, data, torch.optim.SGD(m.parameters(), lr=0.0), epochs=1,
                    batch_size=12, callbacks=[dyn], progress=False)
        (step, got[which]), *_ = res.history["hess_norm_eval"]
        assert step == 0                    # before a train-mode pass moves the statistics
    assert -lam.min() > lam.max()                     # the readings differ on this model
    assert got["magnitude"] == pytest.approx(float(lam.abs().max()), rel=1e-6)
    assert got["largest"] == pytest.approx(float(lam.max()), rel=1e-6)
    with pytest.raises(ValueError, match="hessian_which='top'"):
        DynamicsCallback(hessian_which="top")
    # a run's measure entry reaches it by name
    assert build_instrument("dynamics", every=1, hessian_which="largest").hessian_which == \
        "largest"


@pytest.mark.parametrize("which", [["largest"], {"largest": 1}, None, "Largest"])
def test_dynamics_names_a_hessian_which_that_is_not_one_of_its_choices(which):
    # a list or mapping from a config had escaped as "TypeError: unhashable type" from the
    # lookup, naming neither the option nor its choices
    with pytest.raises(ValueError, match=r"Invalid hessian_which=.*expected 'magnitude'"):
        build_instrument("dynamics", every=1, hessian_which=which)


def test_hessian_norm_leaves_the_global_rng_to_dropout():
    # dropout draws its masks from torch's global RNG: a Lanczos start vector drawn there
    # would change every later mask, and the run would end at other weights than without it
    def run(callbacks):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.5),
                              nn.Linear(4, 2)).double()
        res = train(model, nn.CrossEntropyLoss(), _data(),
                    torch.optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=4,
                    callbacks=callbacks, progress=False)
        return params_vector(model), res

    dyn = build_instrument("dynamics", schedule=Schedule.every(1), hessian_every=2,
                           hessian_bn_mode="both")
    measured, res = run([dyn])
    assert [s for s, _ in res.history["hess_norm_eval"]] == [0, 2, 4, 6]
    assert torch.equal(measured, run([])[0])


def test_step_length_instrument_logs_alpha_of_the_scheduled_steps():
    """Full-batch gradient descent: the logged α of step t is the direct
    ``normalized_step_length`` between θ_t and θ_{t+1} (here recomputed by hand)."""
    from sgdlab.measure.step_length import normalized_step_length

    data = _data(n=16)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    start = copy.deepcopy(model)
    lr = 0.7
    cb = build_instrument("step_length", schedule=Schedule.at([1, 3]))
    cb_eq = build_instrument("step_length", schedule=Schedule.at([3]), weights="equal",
                             source="eval", eval_subset=None, prefix="step_eq")
    cb_sub = build_instrument("step_length", schedule=Schedule.at([2]), source="eval",
                              eval_subset=6, seed=3, prefix="step_sub")
    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=lr),
                epochs=5, batch_size=16, callbacks=[cb, cb_eq, cb_sub], progress=False)
    h = res.history
    assert [s for s, _ in h["step/alpha"]] == [1, 3] and [s for s, _ in h["step_eq/alpha"]] == [3]
    loss_fn = nn.CrossEntropyLoss()
    full = (data.x_train, data.y_train)
    thetas = [params_vector(start).detach()]
    for _ in range(4):
        g = torch.func.grad(flat_loss(start, loss_fn, full))(thetas[-1])
        thetas.append(thetas[-1] - lr * g)
    for t in (1, 3):
        ref = normalized_step_length(start, loss_fn, thetas[t], thetas[t + 1], full)
        assert dict(h["step/alpha"])[t] == pytest.approx(ref.alpha, rel=1e-6, abs=1e-9)
        assert dict(h["step/length"])[t] == pytest.approx(ref.length, rel=1e-9)
    ref = normalized_step_length(start, loss_fn, thetas[3], thetas[4], full, weights="equal")
    assert dict(h["step_eq/alpha"])[3] == pytest.approx(ref.alpha, rel=1e-6, abs=1e-9)
    # eval_subset=6, seed=3: the first 6 of a permutation drawn from a generator seeded 3
    idx = torch.randperm(16, generator=torch.Generator().manual_seed(3))[:6]
    ref = normalized_step_length(start, loss_fn, thetas[2], thetas[3],
                                 (data.x_train[idx], data.y_train[idx]))
    assert dict(h["step_sub/alpha"])[2] == pytest.approx(ref.alpha, rel=1e-6, abs=1e-9)
    assert dict(h["step_sub/loss_start"])[2] == pytest.approx(ref.losses[0], rel=1e-9)
    for bad in ({"source": "next"}, {"weights": "cockpit"}, {"eval_subset": 1}):
        with pytest.raises(ValueError):
            build_instrument("step_length", schedule=Schedule.every(1), **bad)


def test_step_length_instrument_names_itself_when_a_step_leaves_finite_numbers():
    """A step whose update overflows (finite loss, infinite gradient): the run ends as diverged
    and the message says which measurement met the non-finite model, as for the others."""
    from sgdlab.train.callbacks import Callback

    class Overflow(Callback):
        def on_after_backward(self, ctx):
            if ctx.step == 2:
                ctx.model[0].weight.grad[0, 0] = math.inf

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    cb = build_instrument("step_length", schedule=Schedule.every(1))
    res = train(model, nn.CrossEntropyLoss(), _data(), torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=3, batch_size=4, callbacks=[Overflow(), cb], progress=False)
    assert res.status == "diverged" and res.steps == 3
    assert "step_length: non-finite step" in res.message
    assert [s for s, _ in res.history["step/alpha"]] == [0, 1]


def test_dynamics_of_an_embedding_with_sparse_gradients_are_those_of_a_dense_one():
    # the gradient cosine copied each step's p.grad into its buffer, and a sparse one failed
    # the run: "copy_() between dense and sparse Tensors is not implemented"
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 10, (40, 5), generator=g), torch.randint(0, 3, (40,), generator=g)
    data = Dataset(x, y, x[:10], y[:10])

    def run(sparse: bool):
        torch.manual_seed(0)
        model = TokenBag(sparse, vocab=10, dim=4, classes=3).double()
        cb = build_instrument("dynamics", schedule=Schedule.every(1), full_grad_every=3,
                              hessian_every=3)
        r = train(model, nn.CrossEntropyLoss(), data,
                  torch.optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=8,
                  callbacks=[cb], progress=False)
        assert r.status == "finished", r.message
        return r.history

    dense, sparse = run(False), run(True)
    assert len(dense["grad_cosine"]) > 5
    assert set(sparse) == set(dense)
    for name, series in dense.items():
        assert [s for s, _ in sparse[name]] == [s for s, _ in series], name
        assert [v for _, v in sparse[name]] == pytest.approx([v for _, v in series],
                                                             rel=1e-9, abs=1e-12), name


def test_step_interpolation_instrument_passes_its_memory_budget_to_the_segments(monkeypatch):
    import sgdlab.train.instruments.walk as inst

    budgets = []
    real = inst.segment_losses

    def spy(*args, **kwargs):
        budgets.append(kwargs.get("memory_budget", "not passed"))
        return real(*args, **kwargs)
    monkeypatch.setattr(inst, "segment_losses", spy)
    model = _bn_model()
    walk = build_instrument("step_interpolation", schedule=Schedule.at([1]), num_points=3,
                            memory_budget=2048)
    train(model, nn.CrossEntropyLoss(), _data(), torch.optim.SGD(model.parameters(), lr=0.1),
          epochs=1, batch_size=4, callbacks=[walk], progress=False)
    assert budgets == [2048]
    with pytest.raises(ValueError, match=r"Invalid memory_budget=0 "):
        build_instrument("step_interpolation", schedule=Schedule.at([1]), memory_budget=0)


def test_sgd_walk_interpolates_the_whole_training_sets_loss_not_the_mini_batchs():
    """Xing et al. line 83: "even though the updates are performed using mini-batches for SGD,
    the training loss values used in the plot are computed using the full dataset". Least
    squares in float64, SGD on batches of 4 of 12 samples: every segment's 12 losses are the
    whole set's mean squared error at θ_t + α (θ_{t+1} − θ_t), α = k/11 (line 61), worked out
    here from the iterates; floor, height (Table 2) and the absence of barriers (a convex
    loss has none) follow from them."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64) + 0.3 * torch.randn(
        12, 1, generator=g, dtype=torch.float64)
    data = Dataset(x, y, x[:4].clone(), y[:4].clone(),
                   {"name": "lsq", "task": "regression", "num_outputs": 1})

    class Iterates(Callback):
        def __init__(self):
            self.pairs = []

        def on_step_begin(self, ctx):
            self.start = params_vector(ctx.model)

        def on_step_end(self, ctx):
            self.pairs.append((self.start, params_vector(ctx.model)))

    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    its = Iterates()
    walk = build_instrument("step_interpolation", schedule=Schedule.every(1))
    # the same set evaluated in batches of 5, 5 and 2: the same means, every sample counted
    walk5 = build_instrument("step_interpolation", schedule=Schedule.every(1),
                             eval_batch_size=5)
    res = train(model, nn.MSELoss(), data, torch.optim.SGD(model.parameters(), lr=0.3),
                epochs=2, batch_size=4, callbacks=[its, walk, walk5], progress=False, seed=0)

    def full_loss(theta):
        w, b = theta[:3], theta[3]
        return float(((x @ w + b - y[:, 0]) ** 2).mean())

    alphas = torch.arange(12, dtype=torch.float64) / 11
    assert len(walk.records) == len(its.pairs) == 6
    for t, (r, (a, b)) in enumerate(zip(walk.records, its.pairs)):
        exact = [full_loss(a + al * (b - a)) for al in alphas]
        assert (r.step, r.epoch) == (t, t // 3 + 1)
        assert r.losses == pytest.approx(exact, rel=1e-12)
        i = min(range(12), key=exact.__getitem__)
        assert (r.valley_alpha, r.valley_loss) == (pytest.approx(float(alphas[i])), exact[i])
        assert r.height_above_floor == pytest.approx((exact[0] + exact[-1] - 2 * exact[i]) / 2,
                                                     rel=1e-12)
        assert not r.barrier
        assert walk5.records[t].losses == pytest.approx(exact, rel=1e-12)
    # each segment's metrics are logged at its start t (the step counter before the update),
    # by both instruments
    assert sorted({t for t, _ in res.history["walk_loss_k00"]}) == list(range(6))
    assert dict(res.history["walk_height"]) == pytest.approx(
        {t: r.height_above_floor for t, r in enumerate(walk.records)}, rel=1e-12)
    # no barrier in an epoch: its mean barrier height is left out, not logged as NaN
    assert [v for _, v in res.history["walk_epoch_barriers"]] == [0.0, 0.0]
    assert "walk_epoch_mean_barrier_height" not in res.history
    # a batch of 4 gives another loss at θ_t: the whole set is what the segments read
    xb = x[:4]
    assert any(abs(r.loss_start - float(((xb @ a[:3] + a[3] - y[:4, 0]) ** 2).mean())) > 1e-3
               for r, (a, _) in zip(walk.records, its.pairs))


def test_the_step_interpolation_instrument_passes_its_height_floor_on():
    # GD on L = θ²/2 with lr 0.2 from θ = 1: θ₁ = 0.8; "sampled" measures Table 2's height from
    # the lowest of the 10 points between the iterates, α = 10/11 (θ = 9/11), not from θ₁:
    # (1/2 + 0.32 − (9/11)²)/2
    data = _no_data(torch.float64)
    model = Quadratic(torch.ones(1, 1, dtype=torch.float64))
    walk = build_instrument("step_interpolation", schedule=Schedule.every(1),
                            height_floor="sampled")
    train(model, lambda out, y: out.mean(), data, torch.optim.SGD(model.parameters(), lr=0.2),
          epochs=1, batch_size=2, callbacks=[walk], progress=False)
    (r,) = walk.records
    assert r.height_above_floor == pytest.approx((0.5 + 0.32 - (9 / 11) ** 2) / 2, rel=1e-12)


def test_a_segment_without_a_point_between_the_iterates_is_refused():
    # two points, both iterates: no interior point could be a barrier (Xing et al. §3)
    with pytest.raises(ValueError, match="a barrier needs a point between the iterates"):
        build_instrument("step_interpolation", schedule=Schedule.every(1), num_points=2,
                         spacing="inclusive")


def test_a_step_that_does_not_move_logs_no_step_length():
    # lr 0: θ_{t+1} = θ_t, a step of length 0 has no α; the run goes on without one
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    cb = build_instrument("step_length", schedule=Schedule.every(1))
    res = train(model, nn.CrossEntropyLoss(), _data(), torch.optim.SGD(model.parameters(), lr=0.0),
                epochs=1, batch_size=4, callbacks=[cb], progress=False)
    assert res.status == "finished" and "step/alpha" not in res.history


def test_step_interpolation_takes_numpy_and_torch_ints_as_ints():
    """np.int64 epochs, subset size and seed (a grid's values) select what the Python ints
    do: the same steps on the same 6 examples (np.int64(6) was taken for explicit data)."""
    def walked(**kw):
        model = _bn_model()
        walk = StepInterpolationCallback(Schedule.every(1), num_points=2, **kw)
        train(model, nn.CrossEntropyLoss(), _data(), torch.optim.SGD(model.parameters(),
              lr=0.1), epochs=2, batch_size=4, callbacks=[walk], progress=False, seed=0)
        return [(r.step, r.losses) for r in walk.records]

    plain = walked(epochs=[2], eval_data=6, seed=3)
    assert [t for t, _ in plain] == [3, 4, 5]
    assert len(StepInterpolationCallback(num_points=np.int64(2)).alphas) == 4
    assert walked(epochs=[np.int64(2)], eval_data=np.int64(6), seed=np.int64(3)) == plain
    assert walked(epochs=(torch.tensor(2),), eval_data=torch.tensor(6),
                  seed=np.uint32(3)) == plain
    walk = build_instrument("step_interpolation", schedule=Schedule.every(1),
                            eval_subset=np.int64(6), seed=np.int64(3))
    assert (type(walk.eval_data), type(walk.seed)) == (int, int)


@pytest.mark.parametrize("options, says", [
    ({"num_points": True}, "Invalid num_points=True (an int >= 1)"),
    ({"num_points": 10.0}, "Invalid num_points=10.0 (an int >= 1)"),
    ({"eval_data": True}, "Invalid eval_data=True (None, a subset size >= 1, or a batch"),
    ({"eval_data": 0}, "Invalid eval_data=0 (None, a subset size >= 1"),
    ({"eval_data": 6.0}, "Invalid eval_data=6.0 (None, a subset size >= 1"),
    ({"epochs": [True]}, "Invalid epochs=[True] (a list of 1-based epoch numbers)"),
    ({"epochs": (0,)}, "Invalid epochs=(0,) (a list of 1-based epoch numbers)"),
    ({"eval_batch_size": True}, "Invalid eval_batch_size=True (an int >= 1, or None)"),
    ({"seed": -1}, "Invalid seed=-1 (an int in 0..2**32 - 1, as a run config's seed)"),
    ({"seed": 2**32}, "Invalid seed=4294967296 (an int in 0..2**32 - 1"),
    ({"seed": True}, "Invalid seed=True (an int in 0..2**32 - 1")])
def test_step_interpolation_refuses_a_bool_or_out_of_range_count_or_seed(options, says):
    """Refused when built, naming the option and the value: True was a subset of 1 example
    and epoch 1, a negative seed failed the subset's draw at the first step."""
    with pytest.raises(ValueError, match=re.escape(says)):
        StepInterpolationCallback(Schedule.every(1), **options)


@pytest.mark.parametrize("size", [0, True, 2.5])
def test_the_step_interpolation_instrument_names_its_eval_subset(size):
    with pytest.raises(ValueError, match=re.escape(
            f"Invalid eval_subset={size!r} (an int >= 1, or None: the whole training set)")):
        build_instrument("step_interpolation", schedule=Schedule.every(1), eval_subset=size)


def test_step_length_takes_numpy_ints_and_refuses_bools_and_seeds_out_of_range():
    """np.int64 subset size and seed draw the subset the Python ints do (np.int64(3) failed
    the draw at the measured step: "an integer is required")."""
    def alpha(**kw):
        model = _bn_model()
        cb = build_instrument("step_length", schedule=Schedule.at([1]), source="eval", **kw)
        res = train(model, nn.CrossEntropyLoss(), _data(), torch.optim.SGD(model.parameters(),
                    lr=0.1), epochs=1, batch_size=4, callbacks=[cb], progress=False, seed=0)
        return res.history["step/alpha"]

    plain = alpha(eval_subset=6, seed=3)
    assert [t for t, _ in plain] == [1]
    assert alpha(eval_subset=np.int64(6), seed=np.int64(3)) == plain
    for key, value, rule in (("eval_subset", True, "an int >= 2, or None"),
                             ("eval_subset", 1, "an int >= 2, or None"),
                             ("seed", -1, "an int in 0..2**32 - 1"),
                             ("seed", 2**32, "an int in 0..2**32 - 1"),
                             ("seed", True, "an int in 0..2**32 - 1")):
        with pytest.raises(ValueError, match=re.escape(f"Invalid {key}={value!r} ({rule}")):
            build_instrument("step_length", schedule=Schedule.every(1), **{key: value})
