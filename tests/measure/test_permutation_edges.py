"""Averaged weights, the aligned copy's check and the weight overlap (Chaudhari's thesis §5.0.1,
Fig. 5.1) at their edges, against numbers worked out by hand."""
import math

import pytest
import torch
from torch import nn

from sgdlab.measure.permutation import align_to, average_weights, weight_overlap


def _bn_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.ReLU(),
                         nn.Linear(3, 2)).double()


def test_integer_buffers_of_the_average_are_the_first_models():
    # batch norm's step counters are no weights to average: the first model's, 7
    models = [_bn_net(s) for s in (1, 2, 3)]
    for m, count in zip(models, (7, 4, 10)):
        m[1].num_batches_tracked.fill_(count)
    avg = average_weights(models)
    assert avg[1].num_batches_tracked.dtype == torch.long
    assert int(avg[1].num_batches_tracked) == 7
    w = [m[0].weight[1, 0].item() for m in models]
    assert avg[0].weight[1, 0].item() == pytest.approx(sum(w) / 3, rel=1e-15)


def test_a_check_whose_outputs_are_nan_does_not_pass():
    # a NaN difference says nothing about the function: it is refused, not read as <= atol
    ref, other = _bn_net(1), _bn_net(2)
    x = torch.tensor([[math.nan, 0.0], [1.0, 2.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="differ from the model's by nan"):
        align_to(ref, other, check_input=x)
    align_to(ref, other, check_input=torch.nan_to_num(x))


def test_batch_norm_shifts_alone_tell_two_units_apart():
    # units 0 and 1 have the same weights, bias and batch-norm scale and differ only in the
    # batch-norm shift β: the copy with them swapped is aligned back by β
    ref = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.ReLU(), nn.Linear(2, 2)).double()
    with torch.no_grad():
        ref[0].weight.copy_(torch.tensor([[1.0, 2.0], [1.0, 2.0]]))
        ref[0].bias.fill_(0.5)
        ref[1].weight.fill_(1.5)
        ref[1].bias.copy_(torch.tensor([0.3, -0.7], dtype=torch.float64))
        ref[3].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
    swap = torch.tensor([1, 0])
    copy = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.ReLU(), nn.Linear(2, 2)).double()
    copy.load_state_dict(ref.state_dict())
    with torch.no_grad():
        copy[1].bias.copy_(ref[1].bias[swap])
        copy[3].weight.copy_(ref[3].weight[:, swap])
    aligned = align_to(ref, copy)
    assert aligned[1].bias.tolist() == [0.3, -0.7]
    assert aligned[3].weight.tolist() == [[1.0, -2.0], [3.0, 4.0]]


def test_the_layer_mean_overlap_counts_convolutions_too():
    # conv weights (1, 0) and (0, 1): cosine 0; read-out weights (1, 1) in both: cosine 1.
    # Layer mean (0 + 1)/2; the whole vectors (1, 0, 1, 1) and (0, 1, 1, 1): 2/3
    def net(conv):
        m = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Flatten(),
                          nn.Linear(2, 1, bias=False)).double()
        with torch.no_grad():
            m[0].weight.copy_(torch.tensor(conv, dtype=torch.float64).view(2, 1, 1, 1))
            m[2].weight.fill_(1.0)
        return m

    a, b = net([1.0, 0.0]), net([0.0, 1.0])
    assert weight_overlap(a, b, reading="layer-mean") == pytest.approx(0.5, rel=1e-15)
    assert weight_overlap(a, b) == pytest.approx(2 / 3, rel=1e-15)
