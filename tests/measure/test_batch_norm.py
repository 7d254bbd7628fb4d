"""Batch-norm statistics of a whole data set: recomputed running statistics equal, at every
layer, those of one batch of all the samples, worked out layer by layer by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sgdlab.measure.interpolation import recompute_bn_statistics


def _stacked(bn_type=nn.BatchNorm1d, channels: int = 3):
    """Three batch-norm layers, each fed by the one before it."""
    torch.manual_seed(0)
    if bn_type is nn.BatchNorm1d:
        def mix(i, o):
            return nn.Linear(i, o)
    else:
        def mix(i, o):
            return nn.Conv2d(i, o, 3, padding=1)
    m = nn.Sequential(mix(channels, 5), bn_type(5), nn.ReLU(), nn.Dropout(0.3), mix(5, 4),
                      bn_type(4), nn.Tanh(), mix(4, 4), bn_type(4, momentum=0.2)).double()
    with torch.no_grad():
        for bn in (m[1], m[5], m[8]):       # affine parameters away from (1, 0)
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    return m


def _inputs(shape: tuple[int, ...], n: int = 32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64) * 2 + 1
    x[:10] += 0.7                                       # the two batches differ in mean
    return x


def _moments(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, unbiased variance) over every dimension but 1."""
    dims = [0] + list(range(2, h.dim()))
    return h.mean(dims), h.var(dims, unbiased=True)


def _forward_by_hand(model: nn.Sequential, h: torch.Tensor) -> list[torch.Tensor]:
    """The inputs of ``model``'s batch-norm layers when ``h`` passes as one batch in train
    mode (each layer normalised by the mean and biased variance of its input), dropout off."""
    inputs = []
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                inputs.append(h)
                mean, var = _moments(h)
                n = h.numel() // h.shape[1]
                shape = [1, -1] + [1] * (h.dim() - 2)
                h = (h - mean.view(shape)) / (var.view(shape) * (n - 1) / n + layer.eps).sqrt()
                h = h * layer.weight.view(shape) + layer.bias.view(shape)
            elif not isinstance(layer, nn.Dropout):
                h = layer(h)
    return inputs


def _by_hand(model: nn.Sequential, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, unbiased variance) of each batch-norm layer's input when all of ``x`` passes as
    one batch, every layer normalising with the full data's mean and biased variance."""
    return [_moments(h) for h in _forward_by_hand(model, x)]


@pytest.mark.parametrize("bn_type,shape", [(nn.BatchNorm1d, (3,)),
                                           (nn.BatchNorm2d, (3, 4, 3))])
def test_recomputed_statistics_are_the_whole_sets_at_every_layer(bn_type, shape):
    # the second and third layers saw their input as each batch's own normalisation shaped
    # it: batches of 10 and 22 put them 0.003 (mean) and 0.015 (variance) off
    model = _stacked(bn_type)
    model.train()
    x = _inputs(shape)
    reference = _by_hand(model, x)
    y = torch.zeros(len(x))
    recompute_bn_statistics(model, [(x[:10], y[:10]), (x[10:], y[10:])])
    bns = [model[1], model[5], model[8]]
    for bn, (mean, var) in zip(bns, reference):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-12, atol=1e-12)
        assert int(bn.num_batches_tracked) == 2
    # torch's train mode on one batch of all the samples stores the same
    whole = _stacked(bn_type)
    for bn in (whole[1], whole[5], whole[8]):
        bn.momentum = 1.0
    whole.train()
    whole[3].eval()
    with torch.no_grad():
        whole(x)
    for bn, ref in zip(bns, (whole[1], whole[5], whole[8])):
        torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-12, atol=1e-12)
    assert model.training and bns[2].momentum == 0.2


def _pooled_by_hand(model: nn.Sequential, batches: list[torch.Tensor]
                    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, unbiased variance) of each layer's input pooled over the batches, each batch
    normalised by its own statistics."""
    per_batch = [_forward_by_hand(model, x) for x in batches]
    return [_moments(torch.cat(hs)) for hs in zip(*per_batch)]


def test_one_pass_pools_each_batchs_normalisation():
    """``layerwise=False``: one pass, each batch normalised by its own statistics; exact at
    the first layer only."""
    model = _stacked()
    x = _inputs((3,))
    y = torch.zeros(len(x))
    recompute_bn_statistics(model, [(x[:10], y[:10]), (x[10:], y[10:])], layerwise=False)
    bns = [model[1], model[5], model[8]]
    for bn, (mean, var) in zip(bns, _pooled_by_hand(model, [x[:10], x[10:]])):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-12, atol=1e-12)
    exact = _by_hand(model, x)
    torch.testing.assert_close(bns[0].running_var, exact[0][1], rtol=1e-12, atol=1e-12)
    for bn, (mean, var) in zip(bns[1:], exact[1:]):
        assert float((bn.running_mean - mean).abs().max()) > 1e-3


@pytest.mark.parametrize("layerwise", [True, False])
def test_one_batch_takes_one_pass(layerwise):
    model = _stacked()
    x = _inputs((3,))
    passes = []
    model.register_forward_pre_hook(lambda _m, args: passes.append(len(args[0])))
    recompute_bn_statistics(model, [(x[:0], x[:0, 0]), (x, x[:, 0])], layerwise=layerwise)
    assert passes == [32]
    for bn, (mean, var) in zip((model[1], model[5], model[8]), _by_hand(model, x)):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-12, atol=1e-12)
        assert int(bn.num_batches_tracked) == 1


def test_a_one_shot_iterator_is_read_for_every_pass():
    model = _stacked()
    x = _inputs((3,))
    y = torch.zeros(len(x))
    recompute_bn_statistics(model, iter([(x[:10], y[:10]), (x[10:], y[10:])]))
    for bn, (mean, var) in zip((model[1], model[5], model[8]), _by_hand(model, x)):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-12, atol=1e-12)


def test_a_batch_norm_called_twice_is_refused_layer_by_layer_and_pooled_in_one_pass():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4)
    model = nn.Sequential(nn.Linear(4, 4), bn, nn.Linear(4, 4), bn).double()
    x = torch.randn(20, 4, dtype=torch.float64)
    batches = [(x[:8], x[:8, 0]), (x[8:], x[8:, 0])]
    before = bn.running_mean.clone()
    with pytest.raises(ValueError, match="recompute_bn_statistics: a batch-norm module is "
                                         "called more than once.*layerwise=False"):
        recompute_bn_statistics(model, batches)
    assert torch.equal(bn.running_mean, before)
    recompute_bn_statistics(model, batches, layerwise=False)    # both calls' inputs pooled
    assert int(bn.num_batches_tracked) == 2
    seen = []
    with torch.no_grad():
        for xb, _ in batches:
            h = model[0](xb)
            seen.append(h)
            h = (h - h.mean(0)) / (h.var(0, unbiased=False) + bn.eps).sqrt() * bn.weight + bn.bias
            seen.append(model[2](h))
    seen = torch.cat(seen)
    torch.testing.assert_close(bn.running_mean, seen.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.running_var, seen.var(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layerwise", [True, False])
def test_no_random_number_is_drawn_and_every_mode_and_momentum_is_kept(layerwise):
    """Dropout is off in the passes (the statistics are those of p = 0), the global generator
    does not move, and each module keeps its own train/eval flag and momentum."""
    model = _stacked()
    model.eval()
    model[3].train()                                    # a mix of modes, each restored
    x = _inputs((3,))
    y = torch.zeros(len(x))
    torch.manual_seed(5)
    state = torch.get_rng_state()
    recompute_bn_statistics(model, [(x[:10], y[:10]), (x[10:], y[10:])], layerwise=layerwise)
    assert torch.equal(torch.get_rng_state(), state)
    assert [m.training for m in model] == [m is model[3] for m in model]
    assert [model[i].momentum for i in (1, 5, 8)] == [0.1, 0.1, 0.2]
    reference = (_by_hand(model, x) if layerwise
                 else _pooled_by_hand(model, [x[:10], x[10:]]))
    for bn, (mean, var) in zip((model[1], model[5], model[8]), reference):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-12, atol=1e-12)


def test_a_model_without_tracked_batch_norm_is_left_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False),
                          nn.Linear(4, 2)).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _inputs((3,), n=8)
    recompute_bn_statistics(model, [(x[:4], x[:4, 0]), (x[4:], x[4:, 0])], layerwise=False)
    assert before.keys() == model.state_dict().keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_none_or_a_dataset_record_as_data_is_named_as_the_measurements_name_it():
    # None failed on "'NoneType' object is not iterable" before the data check the
    # measurements run (a callback's ctx.batch at step 0)
    from sgdlab.data import Dataset
    from sgdlab.errors import UserError

    model = _stacked()
    x = _inputs((3,), n=8)
    with pytest.raises(UserError, match=r"^data is None: .*ctx.batch is None at step 0"):
        recompute_bn_statistics(model, None)
    with pytest.raises(UserError, match=r"^data is a sgdlab.data.Dataset: .*data.train"):
        recompute_bn_statistics(model, Dataset(x, x[:, 0], x, x[:, 0]))


def test_channel_moments_pool_batches_and_skip_an_empty_one():
    """Batches of 2 and 1 samples (2 channels, 2 positions each) with an empty batch between
    them pool to the mean and biased variance of all 6 values per channel, worked by hand."""
    from sgdlab.measure.batch_norm import ChannelMoments

    a = torch.tensor([[[1.0, 3.0], [0.0, 2.0]], [[5.0, 7.0], [4.0, 4.0]]], dtype=torch.float64)
    b = torch.tensor([[[2.0, 0.0], [10.0, -2.0]]], dtype=torch.float64)
    acc = ChannelMoments()
    for x in (a, a[:0], b):
        acc.add(x)
    # channel 0: 1, 3, 5, 7, 2, 0 (mean 3, squares about it 4+0+4+16+1+9 = 34);
    # channel 1: 0, 2, 4, 4, 10, −2 (mean 3, 9+1+1+1+49+25 = 86)
    assert acc.n == 6
    torch.testing.assert_close(acc.mean, torch.tensor([3.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(acc.biased_variance(),
                               torch.tensor([34 / 6, 86 / 6], dtype=torch.float64))


def test_a_batch_norm_the_forward_pass_never_reaches_is_reset():
    """A registered batch norm the forward pass does not call gets the reset statistics
    (mean 0, variance 1, no batches), not whatever it held before."""
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn, self.unused = nn.BatchNorm1d(2).double(), nn.BatchNorm1d(2).double()

        def forward(self, x):
            return self.bn(x)

    model = Skips()
    with torch.no_grad():
        model.unused.running_mean.fill_(5.0)
        model.unused.running_var.fill_(7.0)
        model.unused.num_batches_tracked.fill_(3)
    x = torch.tensor([[1.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    y = torch.zeros(2)
    recompute_bn_statistics(model, [(x, y), (x, y)])
    torch.testing.assert_close(model.bn.running_mean, torch.tensor([2.0, 2.0],
                                                                   dtype=torch.float64))
    torch.testing.assert_close(model.unused.running_mean, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(model.unused.running_var, torch.ones(2, dtype=torch.float64))
    assert int(model.unused.num_batches_tracked) == 0


def test_the_layers_before_normalise_with_their_own_eps():
    # a large eps moves every deeper layer's input: the passes must normalise with each
    # layer's eps, as train mode does
    model = _stacked()
    for bn in (model[1], model[5], model[8]):
        bn.eps = 0.5
    x = _inputs((3,))
    reference = _by_hand(model, x)
    y = torch.zeros(len(x))
    recompute_bn_statistics(model, [(x[:10], y[:10]), (x[10:], y[10:])])
    for bn, (mean, var) in zip((model[1], model[5], model[8]), reference):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-12, atol=1e-12)
