"""Zhu et al. (2019), "The Regularization Effects of Anisotropic Noise in Stochastic Gradient
Descent" (arXiv): the regression MLPs of Suppl. A and the LeNet-like CNN of §5.1 / Suppl. C,
as the text prints them.
"""
from __future__ import annotations

from torch import Tensor, nn

from .mlp import MLP
from .registry import activation, flat_size, image_shape, register_model

_PAPER = "Zhu et al. 2019, The Regularization Effects of Anisotropic Noise in SGD"


class ZhuLeNet(nn.Module):
    """Suppl. C, as printed: input ⇒ conv1 ⇒ max_pool ⇒ ReLU ⇒ conv2 ⇒ max_pool ⇒ ReLU ⇒ fc1
    ⇒ ReLU ⇒ fc2 ⇒ output; both convs 5x5, 10 channels, no padding; 50 hidden units.

    On 28x28 inputs the feature map is 10x4x4 = 160, so the parameter count is
    (1·25+1)·10 + (10·25+1)·10 + (160+1)·50 + (50+1)·10 = 260 + 2,510 + 8,050 + 510 = 11,330,
    the number the paper states. (With ReLU, pooling before or after the activation gives the
    same function, since both are monotone; the printed order is kept.)
    """

    def __init__(self, input_shape, num_outputs: int, *, channels: int = 10, hidden: int = 50,
                 act: str = "relu") -> None:
        super().__init__()
        c, _, _ = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, channels, 5), nn.MaxPool2d(2), activation(act),
            nn.Conv2d(channels, channels, 5), nn.MaxPool2d(2), activation(act),
            nn.Flatten(),
        )
        n = flat_size(self.features, tuple(input_shape), "zhu-lenet")
        self.classifier = nn.Sequential(nn.Linear(n, hidden), activation(act),
                                        nn.Linear(hidden, num_outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model("zhu-lenet", paper=f"{_PAPER} (§5.1, Suppl. C)",
                description="LeNet-like CNN: conv 5x5 (10 ch) → max-pool 2 → ReLU, twice; "
                "fc 50 → ReLU → fc, for (Fashion-)MNIST",
                reference_input=(1, 28, 28), stated_params=11_330,
                notes="layer order and ReLU as printed in Suppl. C")
def zhu_lenet(input_shape, num_outputs, *, activation: str = "relu") -> nn.Module:
    return ZhuLeNet(image_shape("zhu-lenet", input_shape), num_outputs, act=activation)


# Suppl. A: 1-D regression of y = (x+0.5)x(x-0.5) with 1-10-10-10-1 (251 parameters, the main
# paper's), 1-10-10-1 (141) and 1-6-6-6-1 (103) fully connected networks "with ReLU activation".
def _regression_mlp(widths: list[int]):
    def build(input_shape, num_outputs, *, activation: str = "relu") -> nn.Module:
        return MLP(input_shape, num_outputs, widths, act=activation)
    return build


for _w, _n in (([10, 10, 10], 251), ([10, 10], 141), ([6, 6, 6], 103)):
    _name = "zhu-mlp-1-" + "-".join(map(str, _w)) + "-1"
    register_model(_name, paper=f"{_PAPER} (§3, Suppl. A)",
                   description=f"regression MLP 1-{'-'.join(map(str, _w))}-1, ReLU",
                   reference_input=(1,), reference_outputs=1, stated_params=_n,
                   notes="dense layers with biases and ReLU, as Suppl. A states")(
        _regression_mlp(_w))
