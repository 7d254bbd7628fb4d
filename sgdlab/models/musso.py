"""Musso (2020), "Partial local entropy and anisotropy in deep weight spaces".

* ``musso-bilayer``: the bi-layer perceptron ``in -> 100 -> classes`` (one hidden layer of 100
  units). For MNIST: 784·100 + 100 + 100·10 + 10 = 79,510 parameters. The hidden activation is
  an option (default ReLU; ``activation="sigmoid"`` for the classic perceptron reading).
* ``musso-model2``: the paper's "Model 2", a CNN with five convolutional layers. The exact
  widths are sgdlab's reading: ``Conv3x3(32) -> ReLU -> Conv3x3(32) -> ReLU -> MaxPool2 ->
  Conv3x3(64) -> ReLU -> Conv3x3(64) -> ReLU -> MaxPool2 -> Conv3x3(128) -> ReLU -> MaxPool2 ->
  Linear(classes)`` (padding 1, so 32x32 inputs give a 128x4x4 map and 28x28 a 128x3x3 map).
  ``channels=`` changes the five widths: 159,914 parameters on CIFAR-10, 150,378 on MNIST.
  Being layer-structured, it suits the per-layer ("partial") local entropy the paper studies.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..errors import UserError
from .mlp import MLP
from .registry import activation, check_positive, flat_size, image_shape, register_model

_PAPER = "Musso 2020, Partial local entropy and anisotropy in deep weight spaces"


@register_model("musso-bilayer", paper=_PAPER, description="bi-layer perceptron in-100-classes",
                reference_input=(1, 28, 28),
                notes="hidden activation not fixed by the architecture; default ReLU")
def musso_bilayer(input_shape, num_outputs, *, hidden: int = 100, activation: str = "relu"
                  ) -> nn.Module:
    check_positive("hidden", hidden)
    return MLP(input_shape, num_outputs, [hidden], act=activation)


class MussoModel2(nn.Module):
    """Five 3x3 convolutions (pooling after the 2nd, 4th and 5th), one linear read-out."""

    def __init__(self, input_shape, num_outputs: int, *, channels: Sequence[int],
                 act: str = "relu") -> None:
        super().__init__()
        if len(channels) != 5:
            raise UserError(f"option 'channels' must list 5 widths, got {list(channels)}")
        for i, w in enumerate(channels):
            check_positive(f"channels[{i}]", w)
        layers: list[nn.Module] = []
        prev = input_shape[0]
        for i, w in enumerate(channels):
            layers += [nn.Conv2d(prev, w, 3, padding=1), activation(act)]
            if i in (1, 3, 4):
                layers.append(nn.MaxPool2d(2))
            prev = w
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        n = flat_size(self.features, tuple(input_shape), "musso-model2")
        self.classifier = nn.Linear(n, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model("musso-model2", paper=_PAPER, description="5-conv-layer CNN (\"Model 2\")",
                reference_input=(3, 32, 32),
                notes="widths 32-32-64-64-128 are sgdlab's reading; option channels=")
def musso_model2(input_shape, num_outputs, *, channels: Sequence[int] = (32, 32, 64, 64, 128),
                 activation: str = "relu") -> nn.Module:
    return MussoModel2(image_shape("musso-model2", input_shape), num_outputs,
                       channels=list(channels), act=activation)
