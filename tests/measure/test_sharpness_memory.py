"""Perturbed losses on a batch too large for one pass: chunks of samples (and of points under
vmap) give the one-pass means, batch norm in train mode keeps the whole batch's statistics,
dropout in train mode is refused where a batch must be split, and running out of memory is
retried in smaller chunks and reported as such."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from sgdlab.errors import UserError
from sgdlab.measure.sharpness import (epsilon_sharpness, expected_sharpness, local_entropy,
                                      mean_loss, perturbed_evaluations)
from sgdlab.measure.surface import loss_surface, random_direction
from sgdlab.operators.params import params_vector
from sgdlab.testing import PassSizes, memory_budget_for, said_out_of_memory

N = 50


def _problem(batchnorm: bool = False, dropout: bool = False, train: bool = False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), *([nn.BatchNorm2d(3)] if batchnorm else []),
                          nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 8),
                          *([nn.BatchNorm1d(8)] if batchnorm else []), nn.Tanh(),
                          *([nn.Dropout(0.3)] if dropout else []), nn.Linear(8, 3)).double()
    with torch.no_grad():  # running statistics away from (0, 1)
        model(torch.randn(64, 1, 6, 6, dtype=torch.float64) * 2 + 1)
    model.train(train)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 1, 6, 6, dtype=torch.float64, generator=g) * 1.5 + 0.5
    y = torch.randint(0, 3, (N,), generator=g)
    xi = 0.1 * torch.randn(20, params_vector(model).numel(), dtype=torch.float64, generator=g)
    return model, nn.CrossEntropyLoss(), (x, y), xi


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # "vmap failed" for the train-mode models
        return fn(*args, **kwargs)


@pytest.mark.parametrize("vectorize", [True, False])
def test_chunked_equals_one_pass_in_eval_mode(vectorize):
    model, loss_fn, data, xi = _problem(batchnorm=True)
    whole, acc = perturbed_evaluations(model, loss_fn, data, xi, vectorize=vectorize,
                                       accuracy=True)
    spy = PassSizes(model)
    chunked, acc_chunked = perturbed_evaluations(
        model, loss_fn, data, xi, vectorize=vectorize, accuracy=True,
        memory_budget=memory_budget_for(model, data[0], 8))
    passes = spy.passes()
    assert passes and max(passes) <= 8 < N                # it did evaluate in chunks
    torch.testing.assert_close(chunked, whole, rtol=1e-13, atol=0)
    torch.testing.assert_close(acc_chunked, acc, rtol=0, atol=0)
    for f in (expected_sharpness, local_entropy):
        kw = dict(generator=torch.Generator().manual_seed(3), vectorize=vectorize)
        ref = f(model, loss_fn, data, 0.1, num_samples=6, **kw)
        kw["generator"] = torch.Generator().manual_seed(3)
        got = f(model, loss_fn, data, 0.1, num_samples=6,
                memory_budget=memory_budget_for(model, data[0], 8), **kw)
        ref, got = (ref.value, got.value) if f is expected_sharpness else (ref.f_gamma,
                                                                           got.f_gamma)
        assert got == pytest.approx(ref, rel=1e-11, abs=1e-14)


@pytest.mark.parametrize("vectorize", [True, False])
def test_train_mode_batch_norm_keeps_the_whole_batch_statistics(vectorize):
    model, loss_fn, data, xi = _problem(batchnorm=True, train=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    whole, _ = _quiet(perturbed_evaluations, model, loss_fn, data, xi, vectorize=vectorize)
    spy = PassSizes(model)
    chunked, _ = _quiet(perturbed_evaluations, model, loss_fn, data, xi, vectorize=vectorize,
                        memory_budget=memory_budget_for(model, data[0], 8))
    assert max(spy.passes()) <= 8
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=0)
    # chunks that are batches of their own, each with its own statistics: other losses
    x, y = data
    own = [(x[i:i + 8], y[i:i + 8]) for i in range(0, N, 8)]
    per_chunk, _ = _quiet(perturbed_evaluations, model, loss_fn, own, xi, vectorize=False)
    assert (per_chunk - whole).abs().max() > 1e-3
    for k, v in model.state_dict().items():            # running statistics untouched
        assert torch.equal(v, state[k]), k
    assert model.training
    # L(θ) is evaluated in the same chunks: σ = 0 reads exactly 0
    est = _quiet(expected_sharpness, model, loss_fn, data, 0.0, 4, vectorize=vectorize,
                 memory_budget=memory_budget_for(model, data[0], 8))
    assert est.value == 0.0
    budget = memory_budget_for(model, data[0], 8)
    assert mean_loss(model, loss_fn, data, memory_budget=budget) == \
        pytest.approx(mean_loss(model, loss_fn, data), rel=1e-12)


def test_dropout_in_train_mode_is_refused_where_a_batch_must_be_split():
    model, loss_fn, data, xi = _problem(dropout=True, train=True)
    with pytest.raises(UserError, match=r"random numbers once per batch.*batches of at most 8"):
        _quiet(perturbed_evaluations, model, loss_fn, data, xi,
               memory_budget=memory_budget_for(model, data[0], 8))
    # batches that fit are measured as before, one draw of masks per batch
    x, y = data
    small = [(x[i:i + 8], y[i:i + 8]) for i in range(0, N, 8)]
    est = _quiet(expected_sharpness, model, loss_fn, small, 0.0, 3,
                 memory_budget=memory_budget_for(model, data[0], 8))
    assert est.value == 0.0


def _oom_above(limit: int):
    """A forward pre-hook that raises as a GPU out of memory does, above ``limit`` samples."""
    def hook(_m, args):
        if len(args[0]) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return hook


@pytest.mark.parametrize("vectorize", [True, False])
def test_out_of_memory_is_retried_smaller_and_reported_as_such(vectorize):
    # under vmap it was taken for an op without a batching rule ("vmap failed"), and the
    # points went one by one over the whole batch, which ran out of memory again (raised)
    model, loss_fn, data, xi = _problem(batchnorm=True)
    ref, acc = perturbed_evaluations(model, loss_fn, data, xi, vectorize=False, accuracy=True)
    base = mean_loss(model, loss_fn, data)
    h = model.register_forward_pre_hook(_oom_above(20))
    out, acc_out = said_out_of_memory(perturbed_evaluations, model, loss_fn, data, xi,
                                       vectorize=vectorize, accuracy=True)
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=0)
    torch.testing.assert_close(acc_out, acc, rtol=0, atol=0)
    assert said_out_of_memory(mean_loss, model, loss_fn, data) == pytest.approx(base,
                                                                                 rel=1e-13)
    h.remove()


def test_out_of_memory_in_train_mode_keeps_the_whole_batch_statistics():
    model, loss_fn, data, xi = _problem(batchnorm=True, train=True)
    ref, _ = _quiet(perturbed_evaluations, model, loss_fn, data, xi)
    h = model.register_forward_pre_hook(_oom_above(20))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out, _ = perturbed_evaluations(model, loss_fn, data, xi)
    h.remove()
    assert any("out of memory evaluating one point x 50 samples" in str(m.message) for m in w)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=0)


def test_out_of_memory_at_one_sample_is_raised():
    model, loss_fn, data, xi = _problem()
    model.register_forward_pre_hook(_oom_above(0))
    for vectorize in (True, False):
        with pytest.raises(torch.OutOfMemoryError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            perturbed_evaluations(model, loss_fn, (data[0][:3], data[1][:3]), xi[:2],
                                  vectorize=vectorize)


def test_memory_budget_is_validated():
    model, loss_fn, data, xi = _problem()
    with pytest.raises(ValueError, match="memory_budget"):
        perturbed_evaluations(model, loss_fn, data, xi, memory_budget=0)
    with pytest.raises(ValueError, match="memory_budget"):
        mean_loss(model, loss_fn, data, memory_budget=0)


@pytest.mark.parametrize("vectorize", [True, False])
def test_a_loss_surface_in_chunks_is_the_one_pass_surface(vectorize):
    model, loss_fn, data, _ = _problem(batchnorm=True)
    d = random_direction(model, generator=torch.Generator().manual_seed(2))
    whole = loss_surface(model, loss_fn, data, d, steps=5, vectorize=vectorize)
    spy = PassSizes(model)     # the surface evaluates a copy, which has the hook too
    chunked = loss_surface(model, loss_fn, data, d, steps=5, vectorize=vectorize,
                           memory_budget=memory_budget_for(model, data[0], 8))
    passes = spy.passes()
    assert passes and max(passes) <= 8
    torch.testing.assert_close(torch.tensor(chunked.train_loss), torch.tensor(whole.train_loss),
                               rtol=1e-13, atol=0)
    assert chunked.train_acc == whole.train_acc


def _grad_passes(model: nn.Module) -> tuple[list[int], object]:
    """The sizes of the forward passes ``model`` runs with autograd on, and the hook's handle."""
    sizes: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda _m, args: sizes.append(len(args[0])) if torch.is_grad_enabled() else None)
    return sizes, hook


def test_epsilon_sharpness_in_chunks_is_the_one_pass_ascent():
    # eval mode: the gradients of the chunks, weighted by size, are the batch's
    model, loss_fn, data, _ = _problem(batchnorm=True)
    kw = dict(num_steps=5, generator=None)
    whole = epsilon_sharpness(model, loss_fn, data, 0.05,
                              **{**kw, "generator": torch.Generator().manual_seed(4)})
    sizes, hook = _grad_passes(model)
    chunked = epsilon_sharpness(model, loss_fn, data, 0.05, memory_budget=memory_budget_for(
        model, data[0], 16), **{**kw, "generator": torch.Generator().manual_seed(4)})
    hook.remove()
    # a gradient pass takes half the budget: 8 samples
    assert sizes and max(sizes) == 8 < N
    assert chunked.max_loss == pytest.approx(whole.max_loss, rel=1e-13, abs=0)
    assert chunked.loss == pytest.approx(whole.loss, rel=1e-13, abs=0)
    assert chunked.sharpness == pytest.approx(whole.sharpness, rel=1e-11, abs=0)


def test_epsilon_sharpness_keeps_a_train_mode_batch_norm_batch_whole():
    # a chunk's gradient would run through its own batch statistics, not the batch's
    model, loss_fn, data, _ = _problem(batchnorm=True, train=True)
    gen = lambda: torch.Generator().manual_seed(4)       # noqa: E731
    whole = epsilon_sharpness(model, loss_fn, data, 0.05, num_steps=3, generator=gen())
    sizes, hook = _grad_passes(model)
    kept = _quiet(epsilon_sharpness, model, loss_fn, data, 0.05, num_steps=3, generator=gen(),
                  memory_budget=memory_budget_for(model, data[0], 16))
    hook.remove()
    assert set(sizes) == {N}
    assert kept.max_loss == pytest.approx(whole.max_loss, rel=1e-12, abs=0)
    # dropout in train mode (one draw of masks per batch) is refused, as for L(θ)
    model, loss_fn, data, _ = _problem(dropout=True, train=True)
    with pytest.raises(UserError, match=r"random numbers once per batch"):
        epsilon_sharpness(model, loss_fn, data, 0.05, num_steps=3, generator=gen(),
                          memory_budget=memory_budget_for(model, data[0], 16))


def test_epsilon_sharpness_out_of_memory_is_retried_smaller():
    model, loss_fn, data, _ = _problem()
    ref = epsilon_sharpness(model, loss_fn, data, 0.05, num_steps=3,
                            generator=torch.Generator().manual_seed(4))
    h = model.register_forward_pre_hook(_oom_above(20))
    out = said_out_of_memory(epsilon_sharpness, model, loss_fn, data, 0.05, num_steps=3,
                             generator=torch.Generator().manual_seed(4))
    h.remove()
    assert out.max_loss == pytest.approx(ref.max_loss, rel=1e-13, abs=0)


@pytest.mark.parametrize("data_in", ["one batch", "two batches"])
def test_a_recomputed_loss_surface_in_chunks_is_the_one_pass_surface(data_in):
    # the batch-norm statistics recomputed at every point: the per-layer passes over the
    # chunks pool the statistics of the whole set, and the evaluation is in eval mode
    model, loss_fn, (x, y), _ = _problem(batchnorm=True)
    data = (x, y) if data_in == "one batch" else [(x[:30], y[:30]), (x[30:], y[30:])]
    d = random_direction(model, generator=torch.Generator().manual_seed(2))
    kw = dict(steps=3, bn_stats="recompute", test_data=(x[:20], y[:20]))
    whole = loss_surface(model, loss_fn, data, d, **kw)
    spy = PassSizes(model)
    chunked = loss_surface(model, loss_fn, data, d, memory_budget=memory_budget_for(
        model, x, 8), **kw)
    passes = spy.passes()
    assert passes and max(passes) <= 8
    for split in ("train", "test"):
        torch.testing.assert_close(torch.tensor(getattr(chunked, f"{split}_loss")),
                                   torch.tensor(getattr(whole, f"{split}_loss")),
                                   rtol=1e-12, atol=0)
        assert getattr(chunked, f"{split}_acc") == getattr(whole, f"{split}_acc")
    # the one pass normalises each batch by its own statistics: its batches stay whole
    spy = PassSizes(model)
    one = loss_surface(model, loss_fn, data, d, bn_layerwise=False,
                       memory_budget=memory_budget_for(model, x, 8), **kw)
    assert max(spy.passes()) == (N if data_in == "one batch" else 30)
    torch.testing.assert_close(
        torch.tensor(one.train_loss),
        torch.tensor(loss_surface(model, loss_fn, data, d, bn_layerwise=False, **kw).train_loss),
        rtol=1e-13, atol=0)


@pytest.mark.parametrize("loss", ["sum", "class weights", "ignored targets"])
def test_a_batch_whose_loss_is_no_plain_mean_is_refused_where_it_must_be_split(loss):
    # chunks weighted by their sizes gave a sum loss divided by the batch size (5.5 for 110.2)
    # and class-weighted or ignore_index means off by the weights
    from sgdlab.measure.walk import segment_losses

    model, _, (x, y), xi = _problem()
    if loss == "sum":
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
    elif loss == "class weights":
        loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    else:
        loss_fn, y = nn.CrossEntropyLoss(), torch.where(torch.arange(N) < 5, -100, y)
    data, budget = (x, y), memory_budget_for(model, x, 8)
    assert mean_loss(model, loss_fn, data) == pytest.approx(float(loss_fn(model(x).detach(), y)),
                                                            rel=1e-15)
    theta = params_vector(model)
    calls = [lambda: mean_loss(model, loss_fn, data, memory_budget=budget),
             lambda: perturbed_evaluations(model, loss_fn, data, xi, memory_budget=budget),
             lambda: perturbed_evaluations(model, loss_fn, data, xi, vectorize=False,
                                           memory_budget=budget),
             lambda: epsilon_sharpness(model, loss_fn, data, 0.05, num_steps=1,
                                       memory_budget=2 * budget),
             lambda: segment_losses(model, loss_fn, data, theta, theta + xi[0], [0.0, 0.5, 1.0],
                                    vectorize=True, memory_budget=budget)]
    for call in calls:
        with pytest.raises(UserError, match=r"chunks of \d+ to fit in memory, but loss_fn "
                                            r"CrossEntropyLoss\(.*not the batch's"):
            call()
