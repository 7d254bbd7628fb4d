"""Musso (2020), "Stochastic gradient descent with random learning rate": Appendix B's models.

* ``musso-bilayer`` — Model 1, §B.1 table (27): ``Linear(28², 100) -> ReLU -> Linear(100, 10)``
  (ReLU and no dropout, as §B states for both MNIST models). On MNIST: 784·100 + 100 +
  100·10 + 10 = 79,510 parameters.
* ``musso-model2`` — Model 2, §B.2 table (28), layer by layer::

      Conv2d(1, 64) Conv2d(64, 64) MaxPool Conv2d(64, 128) Conv2d(128, 128) Conv2d(128, 128)
      MaxPool Linear(128·3·3, 10)

  3x3 kernels "throughout the entire network" (§3), ReLU after every convolution. The table
  does not print padding or the pooling window; its read-out size 128·3·3 fixes them: with no
  padding and 2x2 max-pooling a 28x28 image goes 26, 24, 12, 10, 8, 6, 3 (padding 1 would
  leave 7x7). On MNIST: 418,122 parameters. ``channels=`` changes the five widths (a
  departure from the paper, for small runs). ``init="torch"`` (default) keeps PyTorch's layer
  initialisation, which the paper's runs presumably had (footnote 3 names PyTorch): its weight
  variance 1/(3 fan_in) shrinks the ReLU signal about sixfold per layer, so the net starts on a
  long plateau at loss log 10. ``init="kaiming"`` draws every weight from He et al.'s
  N(0, 2/fan_in) and zeroes the biases (a departure, for short runs that must leave the
  plateau).
* ``musso-vgg16`` — Model 3, VGG16 as footnote 3 says the paper used it: "the vgg16 Pytorch
  implementation", i.e. torchvision's layout (13 3x3 convolutions with padding 1 in five
  stages, no batch norm, ``AdaptiveAvgPool2d(7)``, classifier
  ``Linear(512·7·7, 4096) -> ReLU -> Dropout -> Linear(4096, 4096) -> ReLU -> Dropout ->
  Linear(4096, classes)``), torchvision's initialisation, and ``weights=PATH`` to start from
  the ImageNet weights the paper used (a torchvision state-dict file such as
  ``vgg16-397923af.pth``; read with ``weights_only=True``, nothing is downloaded; the last
  layer is re-initialised when ``classes != 1000``). 138,357,544 parameters with 1,000
  classes, 134,301,514 with 10. ``stages``, ``width`` and ``classifier_width`` shrink it to a
  smaller net of the same family, and ``batchnorm=True`` is torchvision's ``vgg16_bn``
  layout (for small runs from scratch; departures from the paper).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UserError, int_at_least, plain_int, refused_value
from .mlp import MLP
from .registry import (activation, check_positive, check_prob, flat_size, image_shape,
                       register_model)

_PAPER = "Musso 2020, Stochastic gradient descent with random learning rate"
# torchvision's VGG16 ("D"): widths per stage, three convolutions in the last three stages
_VGG16_STAGES = ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))   # (width multiple, convolutions)
MODEL2_INITS = ("torch", "kaiming")


@register_model("musso-bilayer", paper=_PAPER, description="Model 1: Linear(in,100)-ReLU-Linear",
                reference_input=(1, 28, 28),
                notes="§B.1 table (27); ReLU as §B states; 79,510 parameters on MNIST")
def musso_bilayer(input_shape, num_outputs, *, hidden: int = 100, activation: str = "relu"
                  ) -> nn.Module:
    hidden = check_positive("hidden", hidden)
    return MLP(input_shape, num_outputs, [hidden], act=activation)


def weights_file(path: str | Path) -> Path:
    """``path`` as a file of weights, or a :class:`UserError` saying it is missing."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"musso-vgg16: weights file {str(p)!r} not found (torchvision's "
                        "ImageNet vgg16 state dict, e.g. vgg16-397923af.pth)")
    return p


class MussoModel2(nn.Module):
    """§B.2 table (28): conv, conv, pool, conv, conv, conv, pool, linear (3x3, no padding)."""

    def __init__(self, input_shape, num_outputs: int, *, channels: Sequence[int],
                 act: str = "relu", init: str = "torch") -> None:
        super().__init__()
        if init not in MODEL2_INITS:
            raise UserError(f"option 'init' must be one of {', '.join(MODEL2_INITS)}, got "
                            f"{init!r}")
        if len(channels) != 5:
            raise UserError(f"option 'channels' must list 5 widths, got {list(channels)}")
        channels = [check_positive(f"channels[{i}]", w) for i, w in enumerate(channels)]
        layers: list[nn.Module] = []
        prev = input_shape[0]
        for i, w in enumerate(channels):
            layers += [nn.Conv2d(prev, w, 3), activation(act)]
            if i in (1, 4):
                layers.append(nn.MaxPool2d(2))
            prev = w
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        n = flat_size(self.features, tuple(input_shape), "musso-model2")
        self.classifier = nn.Linear(n, num_outputs)
        if init == "kaiming":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model("musso-model2", paper=_PAPER, description="Model 2: 5 3x3 convs, 2 pools, linear",
                reference_input=(1, 28, 28),
                notes="§B.2 table (28); no padding and 2x2 pools, as its 128*3*3 read-out "
                      "implies; 418,122 parameters on MNIST; options channels=, init=")
def musso_model2(input_shape, num_outputs, *, channels: Sequence[int] = (64, 64, 128, 128, 128),
                 activation: str = "relu", init: str = "torch") -> nn.Module:
    return MussoModel2(image_shape("musso-model2", input_shape), num_outputs,
                       channels=list(channels), act=activation, init=init)


class TorchvisionVGG16(nn.Module):
    """torchvision's ``vgg16`` layout (module names match its state dict), optionally shrunk."""

    def __init__(self, input_shape, num_outputs: int, *, stages: int = 5, width: int = 64,
                 classifier_width: int = 4096, dropout: float = 0.5,
                 batchnorm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = input_shape[0]
        for mult, convs in _VGG16_STAGES[:stages]:
            for _ in range(convs):
                layers.append(nn.Conv2d(prev, mult * width, 3, padding=1))
                if batchnorm:       # torchvision's vgg16_bn
                    layers.append(nn.BatchNorm2d(mult * width))
                layers.append(nn.ReLU(inplace=True))
                prev = mult * width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        flat_size(self.features, tuple(input_shape), "musso-vgg16")   # pools fit the input
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        h = classifier_width
        self.classifier = nn.Sequential(
            nn.Linear(prev * 7 * 7, h), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(h, h), nn.ReLU(True), nn.Dropout(dropout), nn.Linear(h, num_outputs))
        for m in self.modules():        # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    def load_pretrained(self, path: str | Path) -> None:
        """Load a torchvision ``vgg16`` state dict; a read-out of another size is kept fresh."""
        p = weights_file(path)
        state = torch.load(p, map_location="cpu", weights_only=True)
        own = self.state_dict()
        head = "classifier.6."
        if state.get(head + "weight") is not None and \
                state[head + "weight"].shape != own[head + "weight"].shape:
            state = {k: v for k, v in state.items() if not k.startswith(head)}
        bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        missing = [k for k in own if k not in state and not k.startswith(head)]
        if bad or missing:
            raise UserError(f"musso-vgg16: {str(p)!r} is not a torchvision vgg16 state dict "
                            f"for this net (mismatched: {(bad + missing)[:3]})")
        self.load_state_dict(state, strict=False)


@register_model("musso-vgg16", paper=_PAPER, description="Model 3: torchvision's VGG16",
                reference_input=(3, 32, 32),
                notes="torchvision layout (footnote 3); weights=PATH loads the ImageNet "
                      "weights; stages/width/classifier_width shrink it (not the paper)")
def musso_vgg16(input_shape, num_outputs, *, weights: str | None = None, stages: int = 5,
                width: int = 64, classifier_width: int = 4096, dropout: float = 0.5,
                batchnorm: bool = False) -> nn.Module:
    width = check_positive("width", width)
    classifier_width = check_positive("classifier_width", classifier_width)
    stages = plain_int(stages)
    # not `in range(1, 6)`: 2.0 and True are in it
    if not (int_at_least(stages, 1) and stages <= 5):
        raise UserError(f"option 'stages' must be 1..5 (VGG16 has five), {refused_value(stages)}")
    check_prob("dropout", dropout)
    model = TorchvisionVGG16(image_shape("musso-vgg16", input_shape), num_outputs,
                             stages=stages, width=width, classifier_width=classifier_width,
                             dropout=dropout, batchnorm=bool(batchnorm))
    if weights is not None:
        model.load_pretrained(weights)
    return model
