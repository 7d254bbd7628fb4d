"""ResNet-56 for CIFAR (He et al. 2016, Sec. 4.2).

A 3x3 stem with 16 channels, three stages of 9 basic blocks (two 3x3 convs with BatchNorm)
with 16, 32, 64 channels (stride 2 at the start of stages 2 and 3), global average pooling,
``Linear(64 -> classes)``; 6·9 + 2 = 56 layers. Shortcuts are option A of the paper
(identity; on down-sampling, stride-2 subsampling and zero-padded channels: no parameters),
which is what gives the paper's "0.85M": exactly 853,018 parameters with 10 classes.
``shortcut="B"`` uses 1x1 projection convolutions + BN instead (855,770). ``depth=6n+2``
builds the other CIFAR ResNets (20, 32, 44, 110).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError, int_at_least, plain_int, refused_value
from .registry import check_positive, image_shape, register_model


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in
        self.proj: nn.Module | None = None
        if (stride != 1 or c_in != c_out) and shortcut == "B":
            self.proj = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(c_out))

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            return self.proj(x)
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, input_shape, num_outputs: int, *, depth: int = 56, width: int = 16,
                 shortcut: str = "A") -> None:
        super().__init__()
        depth = plain_int(depth)      # a grid's np.int64 depth too
        if not int_at_least(depth, 8) or (depth - 2) % 6:
            raise UserError(f"option 'depth' must be 6n+2 (20, 32, 44, 56, 110), "
                            f"{refused_value(depth)}")
        width = check_positive("width", width)
        if shortcut not in ("A", "B"):
            raise UserError(f"option 'shortcut' must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks: list[nn.Module] = []
        c = width
        for stage in range(3):
            c_out = width * 2 ** stage
            for i in range(n):
                blocks.append(BasicBlock(c, c_out, 2 if (stage > 0 and i == 0) else 1, shortcut))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_outputs)
        for m in self.modules():  # He et al.'s initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


@register_model("resnet-56", paper="He et al. 2016, Deep residual learning (CIFAR, Sec. 4.2)",
                description="ResNet-56: 3 stages x 9 basic blocks, 16/32/64 channels, option-A "
                "shortcuts", reference_input=(3, 32, 32), stated_params=850_000,
                notes="paper states 0.85M (rounded); exact count 853,018 with 10 classes")
def resnet56(input_shape, num_outputs, *, depth: int = 56, width: int = 16,
             shortcut: str = "A") -> nn.Module:
    return CifarResNet(image_shape("resnet-56", input_shape), num_outputs, depth=depth,
                       width=width, shortcut=shortcut)
