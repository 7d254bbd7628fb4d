"""Jastrzebski et al. (2018), "Width of Minima Reached by Stochastic Gradient Descent is
Influenced by Learning Rate to Batch Size Ratio" (the ICANN version of "Three factors
influencing minima in SGD"), §3: "a series of 4-layer batch-normalized ReLU MLPs on
Fashion-MNIST".

The paper states neither what "4-layer" counts nor the width. sgdlab's default reading: four
linear layers, i.e. ``depth=3`` hidden layers of ``width`` units (``Linear -> BatchNorm1d ->
ReLU``) and a linear output layer; ``depth=4`` is the other reading (four hidden layers).
Default width 400 (our choice). On 784 inputs and 10 classes the default is 641,210
parameters (BN affine weights included).
"""
from __future__ import annotations

from torch import nn

from .mlp import MLP
from .registry import check_positive, register_model


@register_model("jastrzebski-mlp", paper="Jastrzebski et al. 2018, Width of Minima Reached by "
                "Stochastic Gradient Descent is Influenced by Learning Rate to Batch Size "
                "Ratio (Three factors influencing minima in SGD)",
                description="4-layer batch-normalised ReLU MLP",
                reference_input=(1, 28, 28),
                notes="4 linear layers = 3 hidden x width (default 400) + output; our reading")
def jastrzebski_mlp(input_shape, num_outputs, *, width: int = 400, depth: int = 3) -> nn.Module:
    width, depth = check_positive("width", width), check_positive("depth", depth)
    return MLP(input_shape, num_outputs, [width] * depth, act="relu", batchnorm=True)
