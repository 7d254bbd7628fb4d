"""Losses by name: the one mapping configs, experiments and replica runs share."""
import math

import pytest
import torch
from torch import nn

from sgdlab.data import Dataset, load_dataset
from sgdlab.errors import ConfigError
from sgdlab.losses import build_loss


def test_auto_follows_the_task():
    assert isinstance(build_loss("auto", load_dataset("cubic")), nn.MSELoss)
    assert isinstance(build_loss(None, load_dataset("digits")), nn.CrossEntropyLoss)


def test_cross_entropy_on_real_targets_and_unknown_names_are_clear_errors():
    with pytest.raises(ConfigError, match="real-valued targets"):
        build_loss("cross_entropy", load_dataset("cubic"))
    with pytest.raises(ConfigError, match="unknown loss 'hinge'"):
        build_loss("hinge", load_dataset("digits"))


def test_losses_are_mean_reduced():
    loss = build_loss("mse", load_dataset("cubic"))
    assert loss(torch.ones(4, 1), torch.zeros(4, 1)).item() == pytest.approx(1.0)


def test_mse_on_class_labels_is_against_one_hot_labels():
    """``loss: mse`` on a classification dataset (an MSE-trained classifier): nn.MSELoss on
    one-hot targets, per-sample gradients included."""
    from sgdlab.operators import per_sample_gradients
    from sgdlab.testing import per_sample_gradients_loop

    data = load_dataset("digits")
    loss = build_loss("mse", data)
    out = torch.randn(5, data.num_outputs, dtype=torch.float64)
    y = data.y_train[:5]
    target = nn.functional.one_hot(y, data.num_outputs).double()
    assert loss(out, y).item() == pytest.approx(nn.MSELoss()(out, target).item())
    model = nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 10)).double()
    batch = (data.x_train[:6].reshape(6, -1).double(), data.y_train[:6])
    torch.testing.assert_close(per_sample_gradients(model, loss, batch),
                               per_sample_gradients_loop(model, loss, batch))


def test_cross_entropy_on_labels_per_position_is_computed_on_flattened_rows():
    """Token data (targets (N, T)) gets the per-position cross-entropy, which is torch's loss
    (tests/train/test_train_losses.py); one label per sample keeps torch's module itself."""
    from sgdlab.train.losses import SequenceCrossEntropyLoss

    assert type(build_loss("cross_entropy", load_dataset("digits"))) is nn.CrossEntropyLoss
    tokens = load_dataset("text_lines", n_lines=4, test_lines=2)
    assert tokens.y_train.dim() == 2
    for name in ("cross_entropy", "auto"):
        assert type(build_loss(name, tokens)) is SequenceCrossEntropyLoss


def test_mse_on_labels_per_position_is_refused_by_name():
    """Token data (integer targets (N, T)): one-hot labels (N, T, C) are not the models'
    (N, C, T) outputs, so ``mse`` is refused when built, naming cross_entropy."""
    tokens = load_dataset("text_lines", n_lines=4, test_lines=2)
    with pytest.raises(ConfigError, match=r"mse.*'text_lines'.*\(4, 31\).*cross_entropy"):
        build_loss("mse", tokens)


def _labels_dataset(y, num_outputs):
    return Dataset(torch.zeros(len(y), 1), y, meta={"name": "toy", "task": "classification",
                                                    "num_outputs": num_outputs})


def test_cross_entropy_is_the_plain_mean_of_minus_log_softmax():
    # no label smoothing, no weights: scores [ln 1, ln 3, 0] and [0, 0, ln 2] -> softmax
    # probabilities of the labels 3/5 (label 1) and 2/4 (label 2): loss (ln(5/3) + ln 2) / 2
    loss = build_loss("cross_entropy", _labels_dataset(torch.tensor([1, 2]), 3))
    out = torch.tensor([[0.0, math.log(3.0), 0.0], [0.0, 0.0, math.log(2.0)]],
                       dtype=torch.float64)
    want = (math.log(5 / 3) + math.log(2.0)) / 2
    assert loss(out, torch.tensor([1, 2])).item() == pytest.approx(want, rel=1e-12)


def test_mse_on_class_labels_has_one_output_per_class_of_the_dataset():
    # 4 classes, the training labels only 0..2: the one-hot targets are 4 wide all the same
    loss = build_loss("mse", _labels_dataset(torch.tensor([0, 2, 1]), 4))
    out = torch.zeros(2, 4, dtype=torch.float64)
    out[0, 3] = 2.0                       # squared errors: 1 (label) + 4, then 1: sum 6 of 8
    assert loss(out, torch.tensor([0, 3])).item() == pytest.approx(6 / 8, rel=1e-12)
