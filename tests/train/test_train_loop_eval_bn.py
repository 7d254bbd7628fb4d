"""The training loop's ``eval_bn``: batch-norm statistics recomputed at x before evaluating."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.data import Dataset
from sgdlab.errors import ConfigError, UserError
from sgdlab.optim.entropy_sgd import EntropySGD
from sgdlab.train import Schedule, train
from sgdlab.train.loop import recompute_eval_statistics

torch.set_num_threads(1)


def toy_data(n: int = 50, n_test: int = 20, d: int = 5) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + n_test, d, generator=g, dtype=torch.float64) * 2 + 1
    y = (x[:, 0] + 0.5 * x[:, 1] > 1).long()
    return Dataset(x[:n], y[:n], x[n:], y[n:],
                   {"name": "toy", "task": "classification", "num_outputs": 2})


def bn_mlp(seed: int = 0, dropout: float = 0.3) -> nn.Module:
    """Two batch-norm layers, the second's input shaped by the first's normalisation."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Tanh(),
                         nn.Linear(4, 2)).double()


def entropy_sgd_run(model: nn.Module, data: Dataset, **kw):
    # noise on: Langevin draws from the global generator, as dropout does
    opt = EntropySGD(model.parameters(), lr=1.0, inner_lr=0.1, L=3, gamma=1.0, noise=1e-4)
    kw.setdefault("eval_every", Schedule.every(2))
    return train(model, nn.CrossEntropyLoss(), data, opt, epochs=2, batch_size=8, seed=3,
                 progress=False, **kw)


def batch_statistics(model: nn.Module, x: torch.Tensor, k: int):
    """Each layer's (mean, unbiased variance) of its input in float64, worked out by hand:
    over all the examples of ``x`` taken in k consecutive batches, the layer before
    normalising each batch with that batch's mean and biased variance (train mode), dropout
    off. With k = 1, the whole set's."""
    lin1, bn1, _, _, lin2, bn2 = list(model)[:6]
    w = [p.detach().double() for p in (lin1.weight, lin1.bias, bn1.weight, bn1.bias,
                                        lin2.weight, lin2.bias)]
    inputs = [[], []]
    for xb in torch.tensor_split(x.double(), k):
        h1 = F.linear(xb, w[0], w[1])
        z1 = (h1 - h1.mean(0)) / torch.sqrt(h1.var(0, unbiased=False) + bn1.eps) * w[2] + w[3]
        h2 = F.linear(torch.relu(z1), w[4], w[5])
        inputs[0].append(h1)
        inputs[1].append(h2)
    return [(torch.cat(h).mean(0), torch.cat(h).var(0)) for h in inputs]


def test_recompute_puts_the_training_set_s_batch_statistics_at_x_into_the_running_buffers():
    data = toy_data()
    model = bn_mlp()
    res = entropy_sgd_run(model, data, eval_bn="recompute")
    assert res.status == "finished"
    bns = [m for m in model if isinstance(m, nn.BatchNorm1d)]
    # the final evaluation recomputed them at the final weights, in the run's batches of 8
    # (50 examples: 7 batches), and left them there
    for bn, (mean, var) in zip(bns, batch_statistics(model, data.x_train, 7)):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-10, atol=1e-12)
        assert bn.momentum == 0.1 and bn.training
    # the running statistics training left are another thing (the inner loop's points')
    other = bn_mlp()
    entropy_sgd_run(other, data)
    assert not torch.allclose(other[1].running_mean, bns[0].running_mean, atol=1e-3)


def test_with_one_batch_the_statistics_are_the_whole_training_set_s():
    data = toy_data()
    model = bn_mlp()
    recompute_eval_statistics(model, data.x_train, len(data.x_train))
    for bn, (mean, var) in zip([model[1], model[5]], batch_statistics(model, data.x_train, 1)):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-10, atol=1e-12)
    h1 = F.linear(data.x_train, model[0].weight, model[0].bias)
    torch.testing.assert_close(model[1].running_var, h1.var(0), rtol=1e-10, atol=1e-12)


def test_recomputing_leaves_the_training_trajectory_bit_for_bit():
    data = toy_data()
    runs = {}
    for eval_bn in ("running", "recompute"):
        model = bn_mlp()
        res = entropy_sgd_run(model, data, eval_bn=eval_bn)
        runs[eval_bn] = (model, res.history, torch.get_rng_state())
    (ma, ha, ga), (mb, hb, gb) = runs["running"], runs["recompute"]
    for p, q in zip(ma.parameters(), mb.parameters()):
        assert torch.equal(p, q)
    assert ha["batch_loss"] == hb["batch_loss"]
    assert torch.equal(ga, gb)             # no random number drawn by the recomputation
    assert ha["test_loss"] != hb["test_loss"]    # but the evaluations differ


def test_a_model_without_batch_norm_evaluates_the_same_either_way():
    data = toy_data()
    out = []
    for eval_bn in ("running", "recompute"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2)).double()
        out.append((entropy_sgd_run(model, data, eval_bn=eval_bn).history, model.state_dict()))
    assert out[0][0] == out[1][0]
    assert all(torch.equal(out[0][1][k], out[1][1][k]) for k in out[0][1])


def test_a_resume_with_another_eval_bn_is_refused(tmp_path):
    data = toy_data()
    entropy_sgd_run(bn_mlp(), data, checkpoint_dir=tmp_path, max_steps=3)
    with pytest.raises(UserError, match="eval_bn \\('running' -> 'recompute'\\)"):
        entropy_sgd_run(bn_mlp(), data, checkpoint_dir=tmp_path, resume=True,
                        eval_bn="recompute")


def test_unknown_values_are_refused_with_the_choices():
    """By the loop and by a sweep's train procedure (a run config's ``train.eval_bn``:
    tests/config/test_config_run.py)."""
    from sgdlab.experiments.procedures import get_procedure

    with pytest.raises(UserError, match="eval_bn must be one of 'running', 'recompute'"):
        entropy_sgd_run(bn_mlp(), toy_data(), eval_bn="recomputed")
    params = {"dataset": {"name": "digits"}, "model": {"name": "mlp"},
              "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1, "batch_size": 8}
    get_procedure("train").validate({**params, "eval_bn": "recompute"}, "x")
    with pytest.raises(ConfigError, match="eval_bn must be one of running, recompute, got "
                                          "'recomputed'"):
        get_procedure("train").validate({**params, "eval_bn": "recomputed"}, "x")


class Square(nn.Module):
    def forward(self, x):
        return x * x


def test_recompute_batches_the_training_set_by_the_evaluated_epoch_s_batch_size():
    """Batch sizes 10 then 3 (N = 10): the last evaluation (end of epoch 1) recomputes with
    ceil(10/3) = 4 consecutive batches of 3, 3, 2, 2. The second batch norm's running mean is
    then the mean over all N of z², z the input standardised within its own batch (biased
    variance, eps 1e-5), written by hand in float64."""
    x = torch.linspace(-1.0, 2.0, 10, dtype=torch.float64)[:, None] ** 3
    y = torch.zeros(10, dtype=torch.long)
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(1, affine=False), Square(),
                          nn.BatchNorm1d(1, affine=False), nn.Linear(1, 2)).double()
    train(model, nn.CrossEntropyLoss(), Dataset(x, y, x, y), torch.optim.SGD(
        model.parameters(), lr=0.0), epochs=2, batch_size=lambda e: 10 if e == 0 else 3,
        drop_last=True, eval_bn="recompute", progress=False)   # (no training batch of 1)
    z2 = torch.cat([((c - c.mean()) / torch.sqrt(c.var(unbiased=False) + 1e-5)) ** 2
                    for c in (x[:3], x[3:6], x[6:8], x[8:])])
    assert model[0].running_mean.item() == pytest.approx(x.mean().item(), rel=1e-12)
    assert model[2].running_mean.item() == pytest.approx(z2.mean().item(), rel=1e-12)
    assert model[2].running_var.item() == pytest.approx(z2.var().item(), rel=1e-12)
