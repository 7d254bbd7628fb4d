"""Zhu et al. (2019), "The anisotropic noise in stochastic gradient descent": the LeNet-like CNN.

(The regression MLPs are in :mod:`sgdlab.models.mlp`.)
"""
from __future__ import annotations

from torch import Tensor, nn

from .registry import activation, flat_size, image_shape, register_model


class ZhuLeNet(nn.Module):
    """conv5x5(C->10) -> act -> maxpool2 -> conv5x5(10->10) -> act -> maxpool2 -> fc 50 -> act ->
    fc classes.

    On 28x28 inputs the feature map is 10x4x4 = 160, so the parameter count is
    (1·25+1)·10 + (10·25+1)·10 + (160+1)·50 + (50+1)·10 = 260 + 2,510 + 8,050 + 510 = 11,330,
    the number the paper states. Pooling after each conv is what makes the count exact (pooling
    once, or not at all, gives 10x8x8 / 10x20x20 feature maps and far more weights).
    """

    def __init__(self, input_shape, num_outputs: int, *, channels: int = 10, hidden: int = 50,
                 act: str = "relu") -> None:
        super().__init__()
        c, _, _ = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 5), activation(act), nn.MaxPool2d(2),
            nn.Conv2d(channels, channels, 5), activation(act), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        n = flat_size(self.features, tuple(input_shape), "zhu-lenet")
        self.classifier = nn.Sequential(nn.Linear(n, hidden), activation(act),
                                        nn.Linear(hidden, num_outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model("zhu-lenet", paper="Zhu et al. 2019, The anisotropic noise in SGD (Sec. 5.2)",
                description="LeNet-like CNN: two 5x5 convs with 10 channels (each followed by "
                "2x2 max-pooling), fc 50, for (Fashion-)MNIST",
                reference_input=(1, 28, 28), stated_params=11_330,
                notes="activation not stated; ReLU (option activation=)")
def zhu_lenet(input_shape, num_outputs, *, activation: str = "relu") -> nn.Module:
    return ZhuLeNet(image_shape("zhu-lenet", input_shape), num_outputs, act=activation)
