"""Wide residual networks (Zagoruyko & Komodakis 2016), the CIFAR / SVHN networks of Parle in
Chaudhari's thesis (§5.4.3: WRN-28-10 on CIFAR-10 and CIFAR-100, dropout 0.3; §5.4.4: WRN-16-4
on SVHN, dropout 0.4).

WRN-d-k: a 3x3 convolution to 16 channels, three groups of n = (d − 4)/6 pre-activation basic
blocks (BN -> ReLU -> conv3x3 -> BN -> ReLU -> dropout -> conv3x3) with 16k, 32k, 64k channels
(strides 1, 2, 2; where the width or stride changes, the shortcut is a 1x1 convolution of the
pre-activated input BN -> ReLU(x) that the block's first convolution also takes, as in the
authors' code), then BN -> ReLU -> global average pooling -> linear. The paper does not say
what the projection takes; ``shortcut="input"`` projects the raw block input x instead, as
the WRN of Chaudhari's chapter-6 code (pratikac/grad-info) does. Convolutions have no bias.
The thesis states no parameter counts; Zagoruyko & Komodakis list 36.5M (WRN-28-10) and 2.7M
(WRN-16-4), which the tests check.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..errors import UserError
from .registry import check_positive, check_prob, flat_size, image_shape, register_model

_WRN = ("Zagoruyko & Komodakis 2016, Wide residual networks; used in Chaudhari 2018 (thesis), "
        "§5.4")
#: the thesis' two WRNs as ``wide-resnet`` options (§5.4.3, §5.4.4)
WRN_28_10 = {"depth": 28, "widen": 10, "dropout": 0.3}
WRN_16_4 = {"depth": 16, "widen": 4, "dropout": 0.4}


#: what a projection shortcut takes (``wide-resnet`` option ``shortcut``)
SHORTCUTS = ("preact", "input")


class _Block(nn.Module):
    def __init__(self, ci: int, co: int, stride: int, dropout: float,
                 shortcut: str = "preact") -> None:
        super().__init__()
        self.preact_shortcut = shortcut == "preact"
        self.body = nn.Sequential(
            nn.BatchNorm2d(ci), nn.ReLU(),
            nn.Conv2d(ci, co, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(co), nn.ReLU(), *([nn.Dropout(dropout)] if dropout > 0 else []),
            nn.Conv2d(co, co, 3, padding=1, bias=False))
        self.shortcut = (nn.Identity() if ci == co and stride == 1
                         else nn.Conv2d(ci, co, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.shortcut, nn.Identity) or not self.preact_shortcut:
            return self.body(x) + self.shortcut(x)
        # "preact": the projection takes the block's pre-activated input BN-ReLU(x), as in
        # Zagoruyko & Komodakis' code (Lua and PyTorch)
        # (each submodule called by its index: a slice would be a new module, unknown to
        # the graph R-op's trace)
        pre = h = self.body[1](self.body[0](x))
        for i in range(2, len(self.body)):
            h = self.body[i](h)
        return h + self.shortcut(pre)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen`` (module docstring)."""

    def __init__(self, input_shape, num_outputs: int, *, depth: int, widen: int,
                 dropout: float, shortcut: str = "preact") -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise UserError(f"option 'shortcut' must be one of {', '.join(SHORTCUTS)}, got "
                            f"{shortcut!r}")
        depth, widen = check_positive("depth", depth), check_positive("widen", widen)
        check_prob("dropout", dropout)
        if (depth - 4) % 6 or depth < 10:
            raise UserError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 28, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers: list[nn.Module] = [nn.Conv2d(input_shape[0], 16, 3, padding=1, bias=False)]
        ci = 16
        for co, stride in zip(widths[1:], (1, 2, 2)):
            for i in range(n):
                layers.append(_Block(ci, co, stride if i == 0 else 1, dropout, shortcut))
                ci = co
        layers += [nn.BatchNorm2d(ci), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   nn.Linear(ci, num_outputs)]
        self.m = nn.Sequential(*layers)
        flat_size(self.m, tuple(input_shape), "wide-resnet")

    def forward(self, x: Tensor) -> Tensor:
        return self.m(x)


@register_model("wide-resnet", paper=_WRN, description="WRN-depth-widen (pre-activation "
                "basic blocks, dropout between the convolutions)", reference_input=(3, 32, 32),
                stated_params=2_700_000,
                notes="depth and width default to WRN-16-4 (2.7M as Zagoruyko & Komodakis "
                "state it; the thesis states no count), dropout to 0 (§5.4.4 trains it with "
                "0.4); depth=28, widen=10, dropout=0.3 is §5.4.3's WRN-28-10 (36.5M). "
                "shortcut='input': projections of the raw block input")
def wide_resnet(input_shape, num_outputs, *, depth: int = 16, widen: int = 4,
                dropout: float = 0.0, shortcut: str = "preact") -> nn.Module:
    return WideResNet(image_shape("wide-resnet", input_shape), num_outputs, depth=depth,
                      widen=widen, dropout=dropout, shortcut=shortcut)
