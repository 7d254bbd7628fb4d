"""Jastrzebski et al. (2017), "Three factors influencing minima in SGD": the 4-layer
batch-normalised ReLU MLP.

sgdlab's reading of "4-layer": four linear layers, i.e. three hidden layers of ``width``
units (``Linear -> BatchNorm1d -> ReLU``) and a linear output layer; default width 400.
On 784 inputs and 10 classes that is 641,210 parameters (BN affine weights included).
``depth`` (number of hidden layers) and ``width`` are options.
"""
from __future__ import annotations

from torch import nn

from .mlp import MLP
from .registry import check_positive, register_model


@register_model("jastrzebski-mlp", paper="Jastrzebski et al. 2017, Three factors influencing "
                "minima in SGD", description="4-layer batch-normalised ReLU MLP",
                reference_input=(1, 28, 28),
                notes="4 linear layers = 3 hidden x width (default 400) + output; our reading")
def jastrzebski_mlp(input_shape, num_outputs, *, width: int = 400, depth: int = 3) -> nn.Module:
    check_positive("width", width)
    check_positive("depth", depth)
    return MLP(input_shape, num_outputs, [width] * depth, act="relu", batchnorm=True)
