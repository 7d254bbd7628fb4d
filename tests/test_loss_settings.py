"""What a loss is set to compute, read alike from modules and partials of torch's functions."""
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.accuracy import ignored_target
from sgdlab.loss_settings import (class_weights, is_cross_entropy, is_elementwise, loss_name,
                                  loss_reduction, loss_setting, torch_loss_class)


class _Nested(functools.partial):
    """A partial that a partial over it keeps nested (functools flattens plain ones)."""

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **kwargs)


@pytest.mark.filterwarnings("ignore:size_average and reduce args")
@pytest.mark.parametrize("kwargs", [
    {}, {"reduction": "sum"}, {"reduction": "none"}, {"size_average": False},
    {"reduce": False}, {"size_average": True, "reduce": True}, {"ignore_index": 3},
    {"reduce": True}, {"size_average": False, "reduce": False}])
def test_a_partial_reads_as_the_module_built_with_the_same_keywords(kwargs):
    module = nn.CrossEntropyLoss(**kwargs)
    partial = functools.partial(F.cross_entropy, **kwargs)
    assert loss_reduction(partial) == loss_reduction(module) == module.reduction
    assert ignored_target(partial) == ignored_target(module) == module.ignore_index
    assert loss_name(partial) == "cross_entropy" and loss_name(module) == "CrossEntropyLoss"


def test_an_outer_partial_s_keyword_overrides_an_inner_one_s_as_in_the_call():
    nested = _Nested(_Nested(F.cross_entropy, reduction="sum", ignore_index=2),
                     reduction="mean")
    assert isinstance(nested.func, functools.partial)      # really nested
    assert loss_reduction(nested) == "mean" and ignored_target(nested) == 2
    o, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
    torch.testing.assert_close(nested(o, y), F.cross_entropy(o, y, ignore_index=2))


def test_class_weights_are_those_of_cross_entropy_and_nll_only():
    w = torch.tensor([1.0, 2.0])
    for loss_fn in (nn.CrossEntropyLoss(weight=w), nn.NLLLoss(weight=w),
                    functools.partial(F.cross_entropy, weight=w),
                    _Nested(_Nested(F.nll_loss, weight=w))):
        assert class_weights(loss_fn) is not None and torch.equal(class_weights(loss_fn), w)
    # element weights of a plain mean, and losses without weights
    for loss_fn in (nn.BCEWithLogitsLoss(weight=w), functools.partial(F.mse_loss),
                    functools.partial(F.binary_cross_entropy, weight=w), F.cross_entropy,
                    nn.CrossEntropyLoss(), lambda o, y: o.sum()):
        assert class_weights(loss_fn) is None


def test_losses_that_do_not_say_have_no_setting():
    def plain(o, y):
        return (o - y).pow(2).mean()

    assert loss_reduction(plain) is None and loss_name(plain) == "plain"
    assert loss_setting(functools.partial(plain), "ignore_index", 7) == 7
    assert loss_reduction(F.mse_loss) == "mean" and ignored_target(F.mse_loss) is None
    assert ignored_target(F.nll_loss) == -100


def test_element_wise_losses_are_known_in_either_form():
    for loss_fn in (nn.MSELoss(), nn.BCEWithLogitsLoss(), F.mse_loss, F.l1_loss,
                    functools.partial(F.huber_loss, delta=0.5),
                    _Nested(_Nested(F.binary_cross_entropy_with_logits))):
        assert is_elementwise(loss_fn), loss_fn
    for loss_fn in (nn.CrossEntropyLoss(), F.cross_entropy, functools.partial(F.nll_loss),
                    lambda o, y: (o - y).pow(2).mean()):
        assert not is_elementwise(loss_fn), loss_fn


def test_cross_entropy_is_known_in_every_form_and_a_subclass_only_when_it_says_so():
    class Renamed(nn.CrossEntropyLoss):       # may compute anything: not read as torch's loss
        def forward(self, input, target):
            return super().forward(input, target) * 2

    class Declared(nn.CrossEntropyLoss):
        torch_loss = nn.CrossEntropyLoss

    class Unrelated(nn.Module):               # a claim its class does not back is not taken
        torch_loss = nn.CrossEntropyLoss

    for loss in (nn.CrossEntropyLoss(), F.cross_entropy, Declared(),
                 functools.partial(F.cross_entropy, reduction="sum"),
                 _Nested(functools.partial(F.cross_entropy, ignore_index=3))):
        assert is_cross_entropy(loss)
    for loss in (Renamed(), Unrelated(), nn.NLLLoss(), F.nll_loss, nn.MSELoss(), lambda o, t: 0):
        assert not is_cross_entropy(loss)
    assert torch_loss_class(Declared()) is nn.CrossEntropyLoss
    assert torch_loss_class(Renamed()) is Renamed and torch_loss_class(Unrelated()) is Unrelated
