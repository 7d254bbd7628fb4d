"""Losses the registry builds that torch does not ship: the per-position cross-entropy computed
on flattened rows is torch's cross-entropy, value and gradients, in every setting."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.loss_settings import is_cross_entropy, torch_loss_class
from sgdlab.testing import TokenTagger, per_sample_gradients_loop
from sgdlab.train.losses import SequenceCrossEntropyLoss


def _logits(layout: str, n: int = 6, c: int = 7, t: int = 5, seed: int = 0):
    """(N, C, T) float64 scores: the transpose of a contiguous (N, T, C) leaf, as the
    recurrent models give them (``view``), or a contiguous (N, C, T) leaf."""
    g = torch.Generator().manual_seed(seed)
    if layout == "view":
        leaf = torch.randn(n, t, c, generator=g, dtype=torch.float64, requires_grad=True)
        return leaf, leaf.transpose(1, 2)
    leaf = torch.randn(n, c, t, generator=g, dtype=torch.float64, requires_grad=True)
    return leaf, leaf


@pytest.mark.parametrize("layout", ["view", "contiguous"])
@pytest.mark.parametrize("kwargs", [
    {}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 2},
    {"label_smoothing": 0.1}, {"weight": "w"}, {"weight": "w", "ignore_index": -100}])
def test_values_and_gradients_are_torch_s_cross_entropy(layout, kwargs):
    kwargs = {k: torch.linspace(0.5, 2.0, 7, dtype=torch.float64) if v == "w" else v
              for k, v in kwargs.items()}
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 7, (6, 5), generator=g)
    y[0, :3] = -100                        # torch's default ignore_index
    if kwargs.get("ignore_index", -100) != -100:
        y[0, :3] = kwargs["ignore_index"]
    leaf_ref, ref_logits = _logits(layout)
    leaf, logits = _logits(layout)
    ref = nn.CrossEntropyLoss(**kwargs)(ref_logits, y)
    got = SequenceCrossEntropyLoss(**kwargs)(logits, y)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=0)
    v = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (ref * v).sum().backward()
    (got * v).sum().backward()
    torch.testing.assert_close(leaf.grad, leaf_ref.grad, rtol=1e-12, atol=1e-15)


def test_the_flattened_form_is_taken_where_the_class_dimension_is_innermost(monkeypatch):
    """The view of the recurrent models' outputs goes to the flattened rows, other scores
    to torch's loss (which a flattened copy would slow down)."""
    seen = []
    real = F.cross_entropy

    def spy(input, target, **kw):
        seen.append(tuple(input.shape))
        return real(input, target, **kw)

    monkeypatch.setattr(F, "cross_entropy", spy)
    y = torch.zeros(6, 5, dtype=torch.long)
    loss = SequenceCrossEntropyLoss()
    loss(_logits("view")[1], y)
    loss(_logits("contiguous")[1], y)
    loss(torch.randn(4, 7), torch.zeros(4, dtype=torch.long))
    assert seen == [(30, 7), (6, 7, 5), (4, 7)]


def test_it_reads_as_torch_s_loss_where_its_class_is_checked():
    loss = SequenceCrossEntropyLoss()
    assert isinstance(loss, nn.CrossEntropyLoss) and is_cross_entropy(loss)
    assert torch_loss_class(loss) is nn.CrossEntropyLoss
    assert torch_loss_class(nn.MSELoss()) is nn.MSELoss


def test_per_sample_gradients_on_token_outputs_are_those_of_torch_s_loss():
    from sgdlab.operators import per_sample_gradients

    torch.manual_seed(0)
    model = TokenTagger().double()
    g = torch.Generator().manual_seed(0)
    batch = (torch.randint(0, 5, (7, 4), generator=g), torch.randint(0, 5, (7, 4), generator=g))
    ref = per_sample_gradients_loop(model, nn.CrossEntropyLoss(), batch)
    for method in ("auto", "vmap"):
        torch.testing.assert_close(
            per_sample_gradients(model, SequenceCrossEntropyLoss(), batch, method=method), ref)


def test_one_hot_mse_refuses_outputs_of_another_shape_than_the_labels():
    """One output per sample broadcast against the 3 one-hot labels with only torch's
    warning: the loss of every output against every class."""
    from sgdlab.train.losses import OneHotMSELoss

    loss = OneHotMSELoss(3)
    y = torch.tensor([0, 2])
    with pytest.raises(ValueError, match=r"outputs of shape \(2, 1\) against one-hot labels "
                       r"of shape \(2, 3\): the model needs 3 outputs"):
        loss(torch.zeros(2, 1), y)
    out = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.5]], dtype=torch.float64)
    assert loss(out, y).item() == pytest.approx(0.25 / 6)
