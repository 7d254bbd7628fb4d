"""Chaudhari et al.'s networks: Entropy-SGD (ICLR 2017), Parle (2017) and the thesis /
"SGD performs variational inference" (Chaudhari & Soatto 2018) small variants.

Layer order follows the authors' released PyTorch code (ucla-vision, ``models.py``):

* ``mnistfc``: input dropout 0.2, two hidden layers ``Linear(1024) -> ReLU -> BN -> Dropout(0.2)``
  then ``Linear(10)``; on 784 inputs 1,867,786 parameters (BN affine weights included).
* ``small-fc``: the code's ``small_mnistfc``: the same with 400 hidden units and no inner
  dropout; on 784 inputs 480,010 parameters.
* ``lenet``: ``Conv5x5(20) -> ReLU -> MaxPool3 -> BN -> Dropout`` and ``Conv5x5(50) -> ReLU ->
  MaxPool2 -> BN -> Dropout``, ``Linear(500) -> ReLU -> Dropout -> Linear(10)`` with dropout
  0.25; on 28x28 the feature map is 50x2x2 and the count is 131,220.
* ``small-lenet``: not in the released code; sgdlab's reading is the lenet layering with 10 and
  20 channels and a 128-unit hidden layer (on 28x28: 16,998 parameters), small enough for
  dense per-sample-gradient / D(x) computations. Options change the widths.
* ``allcnn``: All-CNN-C (Springenberg et al. 2015) with BatchNorm: input dropout 0.2, nine
  ``Conv -> BN -> ReLU`` blocks (3x3: 96, 96, 96/s2, 192, 192, 192/s2, 192, 192; then 1x1 to
  the classes; the All-CNN-C paper has 3x3, 1x1, 1x1 at the end, the code 3x3, 3x3, 1x1),
  dropout 0.5 after each stride-2 block, global average pooling; 1,667,166 parameters on
  CIFAR-10.
* ``small-allcnn``: the code's ``small_allcnn``: widths 32 / 64, dropout 0.25; 187,102
  parameters on CIFAR-10.

Every network takes any input_shape it makes sense for (MLPs flatten; CNN feature sizes come
from a dummy forward) and ``num_outputs`` classes.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from .registry import (check_positive, check_prob, flat_size, image_shape, register_model)

_ESGD = "Chaudhari et al. 2017, Entropy-SGD (ICLR); Parle (2017)"
_THESIS = "Chaudhari 2018 (thesis) / Chaudhari & Soatto 2018, SGD performs variational inference"


class ChaudhariFC(nn.Module):
    """``[Dropout(p_in)] -> (Linear -> ReLU -> BN1d -> Dropout(p))*depth -> Linear``."""

    def __init__(self, input_shape, num_outputs: int, *, width: int, depth: int,
                 dropout: float, input_dropout: float) -> None:
        super().__init__()
        check_positive("width", width)
        check_positive("depth", depth)
        check_prob("dropout", dropout)
        check_prob("input_dropout", input_dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout > 0:
            layers.append(nn.Dropout(input_dropout))
        prev = math.prod(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(prev, width), nn.ReLU(), nn.BatchNorm1d(width)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        layers.append(nn.Linear(prev, num_outputs))
        self.m = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.m(x)


@register_model("mnistfc", paper=_ESGD, description="784-1024-1024-10 MLP, ReLU, BatchNorm, "
                "dropout 0.2 (inputs too)", reference_input=(1, 28, 28),
                notes="layer order Linear-ReLU-BN-Dropout as in the authors' code; derived "
                "count 1,867,786")
def mnistfc(input_shape, num_outputs, *, width: int = 1024, dropout: float = 0.2,
            input_dropout: float = 0.2) -> nn.Module:
    return ChaudhariFC(input_shape, num_outputs, width=width, depth=2, dropout=dropout,
                       input_dropout=input_dropout)


@register_model("small-fc", paper=_THESIS, description="784-400-400-10 MLP, ReLU, BatchNorm, "
                "input dropout 0.2", reference_input=(1, 28, 28),
                notes="the authors' code's small_mnistfc; derived count 480,010")
def small_fc(input_shape, num_outputs, *, width: int = 400, dropout: float = 0.0,
             input_dropout: float = 0.2) -> nn.Module:
    return ChaudhariFC(input_shape, num_outputs, width=width, depth=2, dropout=dropout,
                       input_dropout=input_dropout)


class ChaudhariLeNet(nn.Module):
    """Two ``Conv5x5 -> ReLU -> MaxPool -> BN2d -> Dropout`` blocks (pool 3 then 2), then
    ``Linear(hidden) -> ReLU -> Dropout -> Linear(classes)``."""

    def __init__(self, input_shape, num_outputs: int, *, channels: tuple[int, int],
                 hidden: int, dropout: float) -> None:
        super().__init__()
        c1, c2 = channels
        for n, v in (("channels[0]", c1), ("channels[1]", c2), ("hidden", hidden)):
            check_positive(n, v)
        check_prob("dropout", dropout)
        c = input_shape[0]

        def block(ci: int, co: int, pool: int) -> list[nn.Module]:
            return [nn.Conv2d(ci, co, 5), nn.ReLU(), nn.MaxPool2d(pool, stride=pool),
                    nn.BatchNorm2d(co), nn.Dropout(dropout)]

        self.features = nn.Sequential(*block(c, c1, 3), *block(c1, c2, 2), nn.Flatten())
        n = flat_size(self.features, tuple(input_shape), "lenet")
        self.classifier = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(hidden, num_outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


@register_model("lenet", paper=_ESGD, description="LeNet: conv 20 and 50 channels 5x5 with "
                "BatchNorm, fc 500, dropout 0.25", reference_input=(1, 28, 28),
                notes="max-pool 3 then 2 and BN after pooling as in the authors' code; "
                "derived count 131,220 on 28x28")
def lenet(input_shape, num_outputs, *, channels: tuple[int, int] = (20, 50), hidden: int = 500,
          dropout: float = 0.25) -> nn.Module:
    return ChaudhariLeNet(image_shape("lenet", input_shape), num_outputs,
                          channels=tuple(channels), hidden=hidden, dropout=dropout)


@register_model("small-lenet", paper=_THESIS, description="small LeNet: conv 10 and 20 "
                "channels 5x5 with BatchNorm, fc 128", reference_input=(1, 28, 28),
                notes="sgdlab's reading (not in the released code): lenet layering with "
                "10/20 channels and 128 hidden units; derived count 16,998 on 28x28")
def small_lenet(input_shape, num_outputs, *, channels: tuple[int, int] = (10, 20),
                hidden: int = 128, dropout: float = 0.0) -> nn.Module:
    return ChaudhariLeNet(image_shape("small-lenet", input_shape), num_outputs,
                          channels=tuple(channels), hidden=hidden, dropout=dropout)


class AllCNN(nn.Module):
    """All-CNN-C with BatchNorm (``Conv -> BN -> ReLU`` blocks), global average pooling."""

    def __init__(self, input_shape, num_outputs: int, *, c1: int, c2: int, dropout: float,
                 input_dropout: float) -> None:
        super().__init__()
        for n, v in (("c1", c1), ("c2", c2)):
            check_positive(n, v)
        check_prob("dropout", dropout)
        check_prob("input_dropout", input_dropout)

        def cbr(ci: int, co: int, k: int, s: int = 1, p: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(ci, co, k, stride=s, padding=p), nn.BatchNorm2d(co), nn.ReLU()]

        c = input_shape[0]
        layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout > 0 else []
        layers += [*cbr(c, c1, 3), *cbr(c1, c1, 3), *cbr(c1, c1, 3, 2)]
        layers += [nn.Dropout(dropout)] if dropout > 0 else []
        layers += [*cbr(c1, c2, 3), *cbr(c2, c2, 3), *cbr(c2, c2, 3, 2)]
        layers += [nn.Dropout(dropout)] if dropout > 0 else []
        # the authors' code uses 3x3, 3x3, 1x1 here (the All-CNN-C paper: 3x3, 1x1, 1x1)
        layers += [*cbr(c2, c2, 3), *cbr(c2, c2, 3), *cbr(c2, num_outputs, 1, 1, 0)]
        # the original AvgPool2d(8) on CIFAR's 8x8 map == global average pooling
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.m = nn.Sequential(*layers)
        flat_size(self.m, tuple(input_shape), "allcnn")  # fail early on unusable shapes

    def forward(self, x: Tensor) -> Tensor:
        return self.m(x)


@register_model("allcnn", paper=_ESGD, description="All-CNN-C with BatchNorm (96/192 "
                "channels), dropout 0.5, input dropout 0.2", reference_input=(3, 32, 32),
                notes="authors' code; derived count 1,667,166 on CIFAR-10")
def allcnn(input_shape, num_outputs, *, c1: int = 96, c2: int = 192, dropout: float = 0.5,
           input_dropout: float = 0.2) -> nn.Module:
    return AllCNN(image_shape("allcnn", input_shape), num_outputs, c1=c1, c2=c2,
                  dropout=dropout, input_dropout=input_dropout)


@register_model("small-allcnn", paper=_THESIS, description="All-CNN-C with BatchNorm, 32/64 "
                "channels, dropout 0.25", reference_input=(3, 32, 32),
                notes="the authors' code's small_allcnn; derived count 187,102 on CIFAR-10")
def small_allcnn(input_shape, num_outputs, *, c1: int = 32, c2: int = 64, dropout: float = 0.25,
                 input_dropout: float = 0.2) -> nn.Module:
    return AllCNN(image_shape("small-allcnn", input_shape), num_outputs, c1=c1, c2=c2,
                  dropout=dropout, input_dropout=input_dropout)
