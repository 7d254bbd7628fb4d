"""Step interpolation on data too large for one pass: chunks of samples and of points give the
mean loss of one pass (batch norm's statistics of the whole batch in train mode), and running
out of memory is reported as such and retried in smaller chunks."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import sgdlab.measure.passes as passes
import sgdlab.measure.walk as walk
from sgdlab.measure.batch_norm import batch_norm_statistics
from sgdlab.measure.walk import segment_alphas, segment_losses
from sgdlab.operators.params import params_vector
from sgdlab.testing import (PassSizes, memory_budget_for, naive_segment_losses,
                            said_out_of_memory)

N = 50


def _conv_bn_net(batchnorm: bool = True) -> nn.Module:
    torch.manual_seed(0)
    bn2 = [nn.BatchNorm2d(3)] if batchnorm else []
    bn1 = [nn.BatchNorm1d(8)] if batchnorm else []
    return nn.Sequential(nn.Conv2d(1, 3, 3), *bn2, nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 8), *bn1, nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(8, 3)).double()


def _problem(batchnorm: bool = True):
    model = _conv_bn_net(batchnorm)
    model.train()
    with torch.no_grad():  # running statistics away from (0, 1)
        model(torch.randn(64, 1, 6, 6, dtype=torch.float64) * 2 + 1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 1, 6, 6, dtype=torch.float64, generator=g) * 1.5 + 0.5
    y = torch.randint(0, 3, (N,), generator=g)
    a = params_vector(model)
    b = a + 0.3 * torch.randn(a.shape, dtype=a.dtype, generator=g)
    return model, nn.CrossEntropyLoss(), (x, y), a, b


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("vectorize", [False, True])
def test_chunked_equals_one_pass_in_eval_mode(batchnorm, vectorize):
    model, loss_fn, data, a, b = _problem(batchnorm)
    alphas = segment_alphas(5)
    whole = segment_losses(model, loss_fn, data, a, b, alphas, vectorize=vectorize)
    spy = PassSizes(model)
    chunked = segment_losses(model, loss_fn, data, a, b, alphas, vectorize=vectorize,
                             memory_budget=memory_budget_for(model, data[0], 7))
    passes = spy.passes()
    assert passes and max(passes) <= 7 < N            # it did evaluate in chunks
    torch.testing.assert_close(chunked, whole, rtol=1e-13, atol=0)
    naive = naive_segment_losses(model, loss_fn, data, a, b, alphas, "eval")
    torch.testing.assert_close(whole, naive, rtol=1e-13, atol=0)


@pytest.mark.parametrize("vectorize", [False, True])
def test_train_mode_batch_norm_keeps_the_whole_batch_statistics(vectorize):
    """Chunks normalised each with its own statistics give another loss (checked below); the
    statistics of the whole batch, computed over the chunks first, give the one-pass loss."""
    model, loss_fn, data, a, b = _problem()
    alphas = segment_alphas(4)
    state = copy.deepcopy(model.state_dict())
    whole = segment_losses(model, loss_fn, data, a, b, alphas, bn_mode="train",
                           vectorize=vectorize)
    spy = PassSizes(model)
    chunked = segment_losses(model, loss_fn, data, a, b, alphas, bn_mode="train",
                             vectorize=vectorize,
                             memory_budget=memory_budget_for(model, data[0], 8))
    assert max(spy.passes()) <= 8
    reference = naive_segment_losses(model, loss_fn, data, a, b, alphas, "train")
    torch.testing.assert_close(whole, reference, rtol=1e-12, atol=0)
    torch.testing.assert_close(chunked, reference, rtol=1e-12, atol=0)
    # the batches of 8 the chunks are, each with its own statistics: not the same losses
    x, y = data
    per_chunk = segment_losses(model, loss_fn, [(x[i:i + 8], y[i:i + 8]) for i in range(0, N, 8)],
                               a, b, alphas, bn_mode="train", vectorize=False)
    assert (per_chunk - reference).abs().max() > 1e-3
    for k, v in model.state_dict().items():            # running statistics untouched
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert model.training


def test_batch_norm_statistics_of_the_whole_batch():
    model, _, (x, _y), _, _ = _problem()
    model.train()
    chunks = [(x[i:i + 9], None) for i in range(0, N, 9)]
    with torch.no_grad():
        stats = batch_norm_statistics(model, chunks)
        h = model[0](x)                                # the first layer's input: conv output
        mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
    assert list(stats) == [model[1], model[5]]
    torch.testing.assert_close(stats[model[1]][0], mean, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(stats[model[1]][1], var, rtol=1e-13, atol=1e-15)


def test_chunks_of_one_sample_keep_the_whole_batchs_statistics():
    # the batch-norm layers' call order was measured on the first chunk in train mode, which
    # refuses one sample: "Expected more than 1 value per channel when training"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    a = params_vector(model)
    ref = segment_losses(model, nn.CrossEntropyLoss(), (x, y), a, a + 0.1, 3, bn_mode="train",
                         vectorize=False)
    got = segment_losses(model, nn.CrossEntropyLoss(), (x, y), a, a + 0.1, 3, bn_mode="train",
                         vectorize=False, memory_budget=memory_budget_for(model, x, 1))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)


def test_a_batch_norm_called_twice_is_refused_when_chunked():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4)
    model = nn.Sequential(nn.Linear(4, 4), bn, nn.Linear(4, 4), bn, nn.Linear(4, 2)).double()
    x, y = torch.randn(20, 4, dtype=torch.float64), torch.randint(0, 2, (20,))
    a = params_vector(model)
    with pytest.raises(ValueError, match="more than once per forward pass"):
        segment_losses(model, nn.CrossEntropyLoss(), (x, y), a, a + 0.1, 3, bn_mode="train",
                       vectorize=False, memory_budget=memory_budget_for(model, x, 5))


def _oom_above(limit: int, fn, error):
    """``fn`` raising ``error`` when a pass holds more than ``limit`` samples x points (as a
    GPU runs out of memory)."""
    def wrapped(model, loss_fn, params, frozen, buffers, x, y):
        k = next(iter(params.values())).shape[0]
        if k * len(x) > limit:
            raise error
        return fn(model, loss_fn, params, frozen, buffers, x, y)
    return wrapped


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
])
def test_out_of_memory_under_vmap_is_reported_as_memory_and_retried(monkeypatch, error):
    model, loss_fn, data, a, b = _problem()
    alphas = segment_alphas(10)
    reference = segment_losses(model, loss_fn, data, a, b, alphas, vectorize=False)
    monkeypatch.setattr(walk, "_batched_losses", _oom_above(100, walk._batched_losses, error))
    calls = []
    monkeypatch.setattr(walk, "_pointwise_losses",
                        lambda *args, **kw: calls.append(1) or pytest.fail("pointwise"))
    out = said_out_of_memory(segment_losses, model, loss_fn, data, a, b, alphas,
                              vectorize=True)
    torch.testing.assert_close(out, reference, rtol=1e-13, atol=0)


def test_out_of_memory_one_point_at_a_time_is_retried(monkeypatch):
    model, loss_fn, data, a, b = _problem()
    alphas = segment_alphas(3)
    reference = segment_losses(model, loss_fn, data, a, b, alphas, vectorize=False)

    def forward_pre(_m, args):
        if len(args[0]) > 20:
            raise torch.OutOfMemoryError("CUDA out of memory.")
    h = model.register_forward_pre_hook(forward_pre)
    with pytest.warns(RuntimeWarning, match="out of memory") as w:
        out = segment_losses(model, loss_fn, data, a, b, alphas, vectorize=False)
    assert [str(m.message).split(" (")[0] for m in w] == [
        "segment_losses: out of memory evaluating one point x 50 samples per pass",
        "segment_losses: out of memory evaluating one point x 25 samples per pass"]
    torch.testing.assert_close(out, reference, rtol=1e-13, atol=0)
    # with batch statistics, the retried chunks keep the whole batch's
    h.remove()
    ref_train = segment_losses(model, loss_fn, data, a, b, alphas, bn_mode="train",
                               vectorize=False)
    h = model.register_forward_pre_hook(forward_pre)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        out = segment_losses(model, loss_fn, data, a, b, alphas, bn_mode="train",
                             vectorize=False)
    h.remove()
    torch.testing.assert_close(out, ref_train, rtol=1e-12, atol=0)


def test_the_cpu_allocators_failure_is_out_of_memory_too():
    # "DefaultCPUAllocator: can't allocate memory" was no memory error: under vmap it was
    # taken for an op without a batching rule ("vmap failed"), one point at a time raised
    model, loss_fn, data, a, b = _problem()
    alphas = segment_alphas(3)
    reference = segment_losses(model, loss_fn, data, a, b, alphas, vectorize=False)

    def forward_pre(_m, args):
        if len(args[0]) > 20:
            torch.empty(1 << 50, dtype=torch.uint8)     # more than any address space holds
    h = model.register_forward_pre_hook(forward_pre)
    for vectorize in (False, True):
        out = said_out_of_memory(segment_losses, model, loss_fn, data, a, b, alphas,
                                  vectorize=vectorize)
        torch.testing.assert_close(out, reference, rtol=1e-12, atol=0)
    h.remove()


def test_out_of_memory_at_one_sample_is_raised():
    model, loss_fn, data, a, b = _problem()

    def forward_pre(_m, args):
        raise torch.OutOfMemoryError("CUDA out of memory.")
    model.register_forward_pre_hook(forward_pre)
    with pytest.raises(torch.OutOfMemoryError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segment_losses(model, loss_fn, (data[0][:3], data[1][:3]), a, b, 3, vectorize=False)


def test_memory_budget_is_validated():
    model, loss_fn, data, a, b = _problem()
    with pytest.raises(ValueError, match="memory_budget"):
        segment_losses(model, loss_fn, data, a, b, 3, memory_budget=0)


def test_batch_norm_statistics_leave_the_model_as_it_was():
    model, _, (x, _y), _, _ = _problem()
    model.train()
    bn = model[1]
    calls = []

    def own_forward(inp):
        calls.append(len(inp))
        return nn.BatchNorm2d.forward(bn, inp)

    bn.forward = own_forward                     # an instance's own forward (a wrapper)
    state = copy.deepcopy(model.state_dict())
    batch_norm_statistics(model, [(x[i:i + 9], None) for i in range(0, N, 9)])
    assert bn.forward is own_forward
    for k, v in model.state_dict().items():      # the probe pass in train mode moved none
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    calls.clear()
    model(x[:4])
    assert calls == [4]


def test_no_vmapped_activation_reaches_the_element_limit(monkeypatch):
    # vmap folds the points into one tensor: points x samples x a sample's elements must stay
    # below cuDNN's 32-bit limit whatever the memory budget (here the limit is scaled down)
    model, loss_fn, data, a, b = _problem(batchnorm=False)
    model.eval()
    widest = 3 * 4 * 4          # the convolution's output, per sample (48 elements)
    limit = 5 * 10 * widest     # e.g. 5 points x 10 samples
    monkeypatch.setattr(passes, "VMAP_MAX_ELEMENTS", limit)
    seen = []
    batched = walk._batched_losses

    def record(model, loss_fn, params, frozen, buffers, x, y):
        seen.append(next(iter(params.values())).shape[0] * len(x) * widest)
        return batched(model, loss_fn, params, frozen, buffers, x, y)
    monkeypatch.setattr(walk, "_batched_losses", record)
    alphas = segment_alphas(10)
    out = segment_losses(model, loss_fn, data, a, b, alphas, vectorize=True,
                         memory_budget=2**40)
    assert seen and max(seen) <= limit, seen
    naive = naive_segment_losses(model, loss_fn, data, a, b, alphas, "eval")
    torch.testing.assert_close(out, naive, rtol=1e-12, atol=0)


@pytest.mark.parametrize("vectorize", [False, True])
def test_batch_norm_without_running_statistics_keeps_the_whole_batch_in_eval_mode(vectorize):
    # such a layer normalises with its batch's statistics in eval mode too: chunks were each
    # normalised with their own (the losses moved by up to 0.16, 12%, here)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, track_running_stats=False),
                          nn.Tanh(), nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 4, dtype=torch.float64, generator=g) * 2 + 1
    y = torch.randint(0, 3, (N,), generator=g)
    a = params_vector(model)
    b = a + 0.3 * torch.randn(a.shape, dtype=a.dtype, generator=g)
    loss_fn = nn.CrossEntropyLoss()
    whole = segment_losses(model, loss_fn, (x, y), a, b, 4, vectorize=vectorize)
    chunked = segment_losses(model, loss_fn, (x, y), a, b, 4, vectorize=vectorize,
                             memory_budget=memory_budget_for(model, x, 8))
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=0)


def test_points_written_one_at_a_time_are_undone_when_a_pass_fails():
    # the walk's segments and the perturbed losses write their points into the model through
    # one loop: a pass that raises at a later point leaves the parameters as they were
    model, loss_fn, data, a, b = _problem(batchnorm=False)
    model.eval()
    plan = passes.PassPlan(model, 2**30, 1, vectorized=False, caller="test")
    seen = []

    def fn(out, y):
        seen.append(params_vector(model))
        if len(seen) == 2:
            raise RuntimeError("a failing pass")
        return loss_fn(out, y)

    with pytest.raises(RuntimeError, match="a failing pass"):
        passes.pointwise_passes(plan, lambda: [data], fn, num_points=3, like=a,
                                write_point=lambda j, out: torch.lerp(a, b, j / 2, out=out))
    torch.testing.assert_close(seen[1], torch.lerp(a, b, 0.5), rtol=0, atol=0)   # point 1
    torch.testing.assert_close(params_vector(model), a, rtol=0, atol=0)
    with pytest.raises(ValueError, match="write_point needs like"):
        passes.pointwise_passes(plan, lambda: [data], loss_fn, num_points=2,
                                write_point=lambda j, out: None)
