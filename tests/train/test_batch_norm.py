"""Batch-norm statistics recomputed at a model's weights: against the per-feature mean and
unbiased variance computed by hand (float64), one batch and several; no random numbers."""
from __future__ import annotations

import torch
from torch import nn

from sgdlab.train.batch_norm import batch_norm_modules, recompute_batch_norm

torch.set_num_threads(1)


def bn_model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(5, 4), nn.BatchNorm1d(4)).double()


def by_hand(model, xb):
    """The two batch norms' inputs on batch ``xb`` in train mode (batch statistics, biased
    variance in the normalisation), dropout off."""
    lin1, bn1, lin2 = model[0], model[1], model[4]
    h = xb @ lin1.weight.T + lin1.bias
    hn = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn1.eps)
    g = (hn * bn1.weight + bn1.bias).clamp_min(0) @ lin2.weight.T + lin2.bias
    return h, g


def test_one_batch_gives_the_training_set_s_mean_and_unbiased_variance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(11, 3, generator=g, dtype=torch.float64) * 2 + 3
    model = bn_model()
    assert recompute_batch_norm(model, x, batch_size=64) == 1
    h, z = by_hand(model, x)
    for bn, feats in zip(batch_norm_modules(model), (h, z)):
        torch.testing.assert_close(bn.running_mean, feats.mean(0), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, feats.var(0), rtol=1e-12, atol=1e-12)
        assert int(bn.num_batches_tracked) == 1


def test_several_batches_weigh_each_batch_s_statistics_by_its_size():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64) - 1
    model = bn_model(3)
    # ⌈10/4⌉ = 3 consecutive batches of 4, 3 and 3 examples
    assert recompute_batch_norm(model, x, batch_size=4) == 3
    parts = [by_hand(model, xb) for xb in (x[:4], x[4:7], x[7:])]
    for i, bn in enumerate(batch_norm_modules(model)):
        mean = sum(len(p[i]) * p[i].mean(0) for p in parts) / 10
        var = sum(len(p[i]) * p[i].var(0) for p in parts) / 10
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-12, atol=1e-12)
    # the first layer's inputs do not depend on the batching: the whole set's mean
    h, _ = by_hand(model, x)
    torch.testing.assert_close(model[1].running_mean, h.mean(0), rtol=1e-12, atol=1e-12)


def test_dropout_is_off_no_random_numbers_are_drawn_and_modes_are_restored():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64)
    model = bn_model(dropout=0.5)
    model.eval()
    model[1].momentum = 0.3
    model[3].train()      # a mix of modes, each restored
    torch.manual_seed(5)
    state = torch.get_rng_state()
    recompute_batch_norm(model, x, batch_size=100)
    assert torch.equal(torch.get_rng_state(), state)
    assert [m.training for m in model] == [False, False, False, True, False, False]
    assert (model[1].momentum, model[5].momentum) == (0.3, 0.1)
    h, z = by_hand(model, x)      # as with dropout p = 0
    torch.testing.assert_close(model[5].running_mean, z.mean(0), rtol=1e-12, atol=1e-12)


def test_a_model_without_batch_norm_is_left_alone():
    model = nn.Sequential(nn.Linear(3, 2)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recompute_batch_norm(model, torch.zeros(4, 3, dtype=torch.float64),
                                batch_size=2) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
