"""Xing et al. (2018, §4): GD + isotropic noise whose variance is 0.1 or 0.05 times the largest
per-coordinate variance of the gradients at initialisation."""
from __future__ import annotations

import copy

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


def _bn_net():
    # batch norm after a layer whose outputs are far from (0, 1) (small spread, offset): fresh
    # running statistics (0, 1) make eval-mode batch norm a different function from the
    # train-mode one full-batch GD trains
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[0].weight.mul_(0.1)
        net[0].bias.copy_(torch.tensor([1.5, -1.0, 2.0, 0.5], dtype=torch.float64))
    return net


def _max_variance_with_bn_stats(net, data, mean, var) -> float:
    """max_j Σ_jj of the per-example gradients of ``net`` in eval mode with the batch-norm
    running statistics set to (mean, var), explicitly (one backward pass per example)."""
    ref = copy.deepcopy(net).eval()
    with torch.no_grad():
        ref[1].running_mean.copy_(mean)
        ref[1].running_var.copy_(var)
    sigma = covariance_reference(per_sample_gradients_loop(ref, LOSS, data))
    return float(torch.diagonal(sigma).max())


@pytest.mark.parametrize("factor", [0.0, -0.1])
def test_a_bad_variance_factor_says_what_it_is_and_the_papers_values(factor):
    # "Invalid variance_factor: None (must be > 0)" named no meaning and no value to try
    model = tiny_mlp(3, 4, 2, seed=0)
    with pytest.raises(ValueError, match=r"Invalid variance_factor: .*largest per-coordinate "
                                         r"gradient variance.*0\.1 and 0\.05"):
        build_optimizer_for("gd-isotropic", model, loss_fn=LOSS, data=tiny_classification(n=5),
                            lr=0.1, variance_factor=factor)


def test_a_missing_variance_factor_reads_as_required_not_as_a_bad_value():
    # "Invalid variance_factor: None" read as if None had been given
    model = tiny_mlp(3, 4, 2, seed=0)
    with pytest.raises(ValueError, match=r"^gd-isotropic requires variance_factor= \(.*largest "
                                         r"per-coordinate gradient variance.*0\.1 and 0\.05"):
        build_optimizer_for("gd-isotropic", model, loss_fn=LOSS, data=tiny_classification(n=5),
                            lr=0.1)


def test_max_variance_bn_reads_running_or_recomputed_batch_norm_statistics():
    net = _bn_net()
    data = tiny_classification(n=13)
    h = net[0](data[0]).detach()
    fresh = _max_variance_with_bn_stats(net, data, torch.zeros(4, dtype=torch.float64),
                                        torch.ones(4, dtype=torch.float64))
    # the statistics full-batch GD's train-mode forward pass uses: the data's mean and
    # (running-statistics convention) unbiased variance of the batch norm's inputs
    on_data = _max_variance_with_bn_stats(net, data, h.mean(0), h.var(0, unbiased=True))
    assert on_data > 2 * fresh         # the two functions differ: the reading matters
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    got = {}
    for bn in ("running", "data"):
        opt = build_optimizer_for("gd-isotropic", net, loss_fn=LOSS, data=data, lr=0.1,
                                  variance_factor=0.1, variance_bn=bn)
        got[bn] = opt.refresh_statistics()["sigma2"] / 0.1
        # the measurement leaves the model's buffers and its train mode as they were
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in buffers.items())
        assert net.training
    assert got["running"] == pytest.approx(fresh, rel=1e-9)
    assert got["data"] == pytest.approx(on_data, rel=1e-9)
    default = build_optimizer_for("gd-isotropic", net, loss_fn=LOSS, data=data, lr=0.1,
                                  variance_factor=0.1)
    assert default.refresh_statistics()["sigma2"] / 0.1 == pytest.approx(fresh, rel=1e-9)
    with pytest.raises(ValueError, match="variance_bn"):
        build_optimizer_for("gd-isotropic", net, loss_fn=LOSS, data=data, lr=0.1,
                            variance_factor=0.1, variance_bn="eval")


def test_max_variance_bn_data_is_a_no_op_without_batch_norm():
    model = tiny_mlp(3, 4, 2, seed=0)
    data = tiny_classification(n=13)
    a, b = (build_optimizer_for("gd-isotropic", model, loss_fn=LOSS, data=data, lr=0.1,
                                variance_factor=0.1, variance_bn=bn).refresh_statistics()
            for bn in ("running", "data"))
    assert a["sigma2"] == b["sigma2"]
