"""The training loop's ``micro_batch``: a batch's gradient accumulated over consecutive chunks."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from sgdlab.data import Dataset
from sgdlab.errors import UserError
from sgdlab.optim.entropy_sgd import EntropySGD
from sgdlab.train import train

torch.set_num_threads(1)


def toy_data(n: int = 10, d: int = 3) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 4, d, generator=g, dtype=torch.float64) * 2 + 1
    y = (x[:, 0] - x[:, 1] > 0).long()
    return Dataset(x[:n], y[:n], x[n:], y[n:],
                   {"name": "toy", "task": "classification", "num_outputs": 2})


def mlp(batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    mid = [nn.BatchNorm1d(4)] if batchnorm else []
    return nn.Sequential(nn.Linear(3, 4), *mid, nn.Tanh(), nn.Linear(4, 2)).double()


def gd_step(model: nn.Module, data: Dataset, **kw) -> nn.Module:
    """The model after one full-batch GD step (lr 0.5)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    train(model, nn.CrossEntropyLoss(), data, opt, epochs=1, batch_size="full",
          progress=False, **kw)
    return model


def chunked_loss_gradient(model: nn.Module, data: Dataset, sizes: list[int]) -> list:
    """∇ Σ_k (n_k/N) L_k in one graph, L_k the mean loss of the k-th consecutive chunk of the
    stored order, the model in train mode (batch norm: each chunk's own statistics)."""
    params = dict(model.named_parameters())
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    n, start, total = len(data.y_train), 0, 0.0
    for size in sizes:
        xs, ys = data.x_train[start:start + size], data.y_train[start:start + size]
        out = functional_call(model, (params, buffers), (xs,))
        total = total + nn.functional.cross_entropy(out, ys) * size / n
        start += size
    return torch.autograd.grad(total, list(params.values()))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_a_gd_step_on_micro_batches_steps_along_the_size_weighted_chunk_gradient(batchnorm):
    """10 examples in chunks of 4, 4, 2: the step is θ − η ∇ Σ_k (n_k/10) L_k (float64)."""
    data, model = toy_data(), mlp(batchnorm)
    start = copy.deepcopy(model).train()
    grads = chunked_loss_gradient(start, data, [4, 4, 2])
    expected = [p.detach() - 0.5 * g for p, g in zip(start.parameters(), grads)]
    stepped = gd_step(model, data, micro_batch=4)
    for p, e in zip(stepped.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-13)


def test_without_batch_norm_the_micro_batch_gradient_is_the_whole_sets():
    """Chunks of unequal size weighted by their examples: the whole set's mean gradient."""
    data = toy_data()
    whole = gd_step(mlp(False), data)
    chunked = gd_step(mlp(False), data, micro_batch=3)     # 3, 3, 3, 1
    for p, q in zip(whole.parameters(), chunked.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-13)


def test_with_batch_norm_chunk_statistics_give_another_step_and_running_statistics():
    data = toy_data()
    whole, chunked = gd_step(mlp(True), data), gd_step(mlp(True), data, micro_batch=5)
    assert not torch.allclose(whole[0].weight, chunked[0].weight, rtol=0, atol=1e-8)
    # the running mean moved once per chunk (momentum 0.1): 0.1 m₁ + 0.09 m₂ from zero
    z = mlp(True)[0](data.x_train).detach()
    expected = 0.9 * 0.1 * z[:5].mean(0) + 0.1 * z[5:].mean(0)
    torch.testing.assert_close(chunked[1].running_mean, expected, rtol=0, atol=1e-13)


def test_batches_no_larger_than_the_micro_batch_are_taken_whole():
    data = toy_data()
    for p, q in zip(gd_step(mlp(True), data).parameters(),
                    gd_step(mlp(True), data, micro_batch=10).parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_micro_batch_must_be_a_positive_int(bad):
    with pytest.raises(UserError, match="micro_batch must be an int >= 1"):
        gd_step(mlp(False), toy_data(), micro_batch=bad)


def test_a_micro_batch_of_one_in_batch_norm_is_named_with_the_micro_batch():
    """10 examples, full batch, chunks of 3: the last chunk holds one (10 mod 3 = 1), which no
    partial batch explains (there is none); the message names micro_batch and its value."""
    with pytest.raises(UserError, match=r"with micro_batch=3 a batch's last micro-batch "
                                        r"holds one .* or another batch_size or micro_batch"):
        gd_step(mlp(True), toy_data(), micro_batch=3)


def test_micro_batch_is_refused_for_closure_optimizers():
    model = mlp(False)
    opt = EntropySGD(model.parameters(), lr=1.0, inner_lr=0.1, L=2, gamma=1.0, noise=0.0)
    with pytest.raises(UserError, match="micro_batch is not supported with EntropySGD"):
        train(model, nn.CrossEntropyLoss(), toy_data(), opt, epochs=1, batch_size=5,
              progress=False, micro_batch=2)


def test_a_resume_with_another_micro_batch_is_refused(tmp_path):
    data = toy_data()
    gd_step(mlp(True), data, micro_batch=5, checkpoint_dir=tmp_path)
    with pytest.raises(UserError, match=r"micro_batch \(5 -> 2\)"):
        gd_step(mlp(True), data, micro_batch=2, checkpoint_dir=tmp_path, resume=True)


def test_micro_batch_is_refused_for_token_data():
    """A per-token mean weighs tokens, not examples: chunks weighted by size would not be it."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 5, (8, 4), generator=g), torch.randint(0, 5, (8, 4), generator=g)
    data = Dataset(x, y, x, y, {"name": "tokens", "task": "classification", "num_outputs": 5})
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UserError, match="micro_batch is not supported for token data"):
        train(model, lambda out, t: nn.functional.cross_entropy(out.transpose(1, 2), t), data,
              opt, epochs=1, batch_size=4, progress=False, micro_batch=2)


@pytest.mark.parametrize("loss_fn, why", [
    (nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0], dtype=torch.float64)), r"weight=\.\.\."),
    (nn.CrossEntropyLoss(ignore_index=1), "ignore_index=1"),
])
def test_micro_batch_is_refused_for_a_loss_whose_chunks_do_not_average_to_the_batchs(loss_fn,
                                                                                      why):
    """Class weights, or ignored targets among the labels, normalise each chunk's loss by its
    own sum of weights: chunks weighted by their examples would step on another gradient."""
    model = mlp(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with pytest.raises(UserError, match=f"micro_batch .*{why}"):
        train(model, loss_fn, toy_data(), opt, epochs=1, batch_size="full", progress=False,
              micro_batch=3)


def test_eval_bn_recompute_passes_over_the_training_set_in_micro_batches():
    """The statistics an evaluation recomputes (eval_bn="recompute") are those of a pass in
    the chunks training normalises with, not in one full batch (which micro_batch avoids):
    with two batch-norm layers the second one's input depends on the first one's batches."""
    from sgdlab.train.loop import recompute_eval_statistics

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 4),
                          nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    data = toy_data()
    gd_step(model, data, micro_batch=5, eval_bn="recompute")
    chunks, whole = copy.deepcopy(model), copy.deepcopy(model)
    recompute_eval_statistics(chunks, data.x_train, 5)
    recompute_eval_statistics(whole, data.x_train, 10)
    assert not torch.allclose(chunks[4].running_var, whole[4].running_var, rtol=1e-6)
    for name, buf in model.named_buffers():
        torch.testing.assert_close(buf, dict(chunks.named_buffers())[name], rtol=0, atol=0)
