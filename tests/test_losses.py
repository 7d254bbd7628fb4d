"""Losses by name: the one mapping configs, experiments and replica runs share."""
import pytest
import torch
from torch import nn

from sgdlab.data import load_dataset
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
