"""Xing et al. (2018, §4): GD + isotropic noise whose variance is 0.1 or 0.05 times the largest
per-coordinate variance of the gradients at initialisation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sgdlab.optim.gld import max_gradient_variance
from sgdlab.optim.registry import build_optimizer_for
from sgdlab.testing import (covariance_reference, per_sample_gradients_loop, tiny_classification,
                            tiny_mlp)

LOSS = nn.CrossEntropyLoss()


def _layernorm_net():
    # a LayerNorm's affine parameters are not in nn.Linear layers: the streamed path
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 2)).double()


@pytest.mark.parametrize("make", [lambda: tiny_mlp(3, 4, 2, seed=0), _layernorm_net])
def test_max_gradient_variance_is_the_largest_diagonal_entry_of_sigma(make):
    model = make()
    data = tiny_classification(n=13)
    sigma = covariance_reference(per_sample_gradients_loop(model, LOSS, data))
    expected = float(torch.diagonal(sigma).max())
    for chunk in (None, 4):          # streamed in chunks of 4 (the last one has 1 example)
        got = max_gradient_variance(model, LOSS, data, chunk_size=chunk)
        assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("factor", [0.1, 0.05])
def test_paper_factors_set_the_isotropic_variance(factor):
    model = tiny_mlp(3, 4, 2, seed=0)
    data = tiny_classification(n=13)
    sigma = covariance_reference(per_sample_gradients_loop(model, LOSS, data))
    opt = build_optimizer_for("gd-isotropic", model, loss_fn=LOSS, data=data, lr=0.1,
                              variance_factor=factor)
    opt.refresh_statistics()
    d = sigma.shape[0]
    torch.testing.assert_close(opt.covariance(),
                               factor * float(torch.diagonal(sigma).max()) *
                               torch.eye(d, dtype=torch.float64))
    # the mini-batch reading: the variance of a batch-100 gradient is 100 times smaller
    opt100 = build_optimizer_for("gd-isotropic", model, loss_fn=LOSS, data=data, lr=0.1,
                                 variance_factor=factor, noise_batch_size=100)
    opt100.refresh_statistics()
    torch.testing.assert_close(opt100.covariance() * 100, opt.covariance())
