"""The networks of Chaudhari's thesis, "A picture of the energy landscape of deep neural
networks" (2018), with the parameter counts the thesis states.

The thesis defines several networks more than once, under the same name, with different
layers; each definition is a registered name or an option here (docs/FIDELITY.md#chaudhari-ch2-6
has the table). Counts include BatchNorm's affine weights and biases (running statistics are
buffers); every stated count is asserted in ``tests/models/test_models_chaudhari.py``.

=====================  =====================================================  ===========
name                   thesis definition                                      stated
=====================  =====================================================  ===========
``mnistfc``            §4.6.2: drop 0.2, (fc1024-ReLU-BN-drop 0.2) x 2, fc10  "1.86 million"
                       (§3.3.2: the same with dropout 0.5)
``deep-mnistfc``       §2.4.3's "mnistfc": 16 hidden layers of 128, ReLU      —
``small-mnistfc``      §3.3.1 "smallfc": one hidden layer, ReLU               50,890
``lenet``              §4.6.2: conv20,5,3-drop-conv50,5,2-drop-fc500-drop     131,220
                       (conv = conv-ReLU-maxpool-BN; also §3.3.2, §5.4.2)
``trivialized-lenet``  §2.4.3: block32-block64-linear512-drop0.1              —
``small-lenet-hessian``  §3.3.1 "small-LeNet": conv10,5-pool2-conv20,5-pool2-fc128  47,658
``small-lenet``        §6.3.1: conv8/conv16 with BN and dropout 0.1, fc128    13,338
``small-fc``           §6.3.1: 7x7 input, fc64 with BN, ReLU                  —
``tiny-fc``            §6.3.3: small-fc with 16 hidden units, 5 classes       —
``allcnn``             §4.6.3 All-CNN-C with BN (also §2.4.3.1, §3.3.3)       "1.67 million"
``small-allcnn``       §6.3.1: allcnn with 12 and 24 channels                 26,982
=====================  =====================================================  ===========

Layer orders the thesis leaves open follow the authors' released code (ucla-vision/entropy-sgd
for lenet/allcnn; pratikac/grad-info for small-lenet, small-fc, tiny-fc,
small-allcnn; pratikac/explore-hessian for small-LeNet and smallfc of §3.3.1), and in every
case the choice is the one that reproduces the stated count exactly. Where the text and the
stated count disagree the reading is an option:

- ``small-mnistfc``: the text says "one layer of 32 hidden units" but 50,890 parameters is
  784-64-10 exactly; ``hidden=64`` (default) matches the count, ``hidden=32`` the words (25,450),
  and ``hidden=32, input_size=14`` is the authors' code (14x14 binned MNIST, 6,634).
- ``lenet``: §4.6.2 says its fully-connected layer includes batch normalization, but the stated
  131,220 has none there (the authors' Lua code); ``fc_batchnorm=True`` is the text (132,220).
- ``allcnn``: §3.3.1 says "≈ 1.6 million", §4.6.3 "1.67 million"; the latter is this network
  (1,667,166); the All-CNN-C paper's own last block (3x3, 1x1, 1x1) would give 1,372,254
  (``last_block="paper"``).

Where the text and the authors' code disagree on a layer order, both are options:

- ``mnistfc``: §4.6.2 defines fc_d as a dense layer "followed by the ReLU nonlinearity and ...
  batch normalization" (``order="relu-bn"``, default); the authors' PyTorch mnistfc is
  Linear -> BN -> ReLU (``order="bn-relu"``); their Lua mnistfc has no BN (``batchnorm=False``).
  The three have the same count up to BN's 4,096 affine parameters.
- ``lenet``: §4.6.2's conv "adds ReLU nonlinearity, batch normalization and ... max-pooling";
  the default is the authors' Lua order conv -> ReLU -> max-pool -> BN (the stated count);
  their PyTorch code is conv -> BN -> ReLU -> max-pool with BN in the fc layer too
  (``block="bn-relu-pool", fc_batchnorm=True``, 132,220).

The small fully-connected networks of ch. 6 take "7x7 down-sampled images of MNIST": with
``input_size=7`` a parameter-free average pooling (``nn.AdaptiveAvgPool2d``; 4x4 block means on
28x28 MNIST) is the first layer, so they take the dataset's images as they are.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from ..errors import UserError, checked_int
from .registry import check_positive, check_prob, flat_size, image_shape, register_model

_THESIS = "Chaudhari 2018, A picture of the energy landscape of deep neural networks (thesis)"


def _downsample(input_shape: tuple[int, ...], size: int | None, name: str) -> list[nn.Module]:
    """[AdaptiveAvgPool2d(size)] for image inputs larger than size x size (thesis §6.3.1:
    "7x7 down-sampled images"); nothing when ``size`` is None or the images are that small."""
    if size is None:
        return []
    size = check_positive("input_size", size)
    if len(input_shape) != 3:
        raise UserError(f"model {name!r} with input_size={size} needs image inputs (C, H, W), "
                        f"got {input_shape}; pass input_size=None for flat inputs")
    if input_shape[1] < size or input_shape[2] < size:
        raise UserError(f"model {name!r} cannot down-sample {input_shape[1:]} images to "
                        f"{size}x{size}")
    if tuple(input_shape[1:]) == (size, size):
        return []
    return [nn.AdaptiveAvgPool2d(size)]


def _flat_inputs(input_shape: tuple[int, ...], size: int | None) -> int:
    if size is None or len(input_shape) != 3:
        return math.prod(input_shape)
    return input_shape[0] * size * size


#: where BatchNorm goes in a hidden layer of the fully-connected networks (ThesisFC)
FC_ORDERS = ("relu-bn", "bn-relu")


class ThesisFC(nn.Module):
    """``[pool] -> [Dropout(p_in)] -> (Linear -> [BN1d] -> ReLU -> [Dropout]) x depth -> Linear``.

    ``order="relu-bn"`` puts BatchNorm after the ReLU (the order in which §4.6.2 defines fc_d:
    "followed by the ReLU nonlinearity and ... batch normalization"); ``"bn-relu"`` before it
    (the authors' PyTorch code for mnistfc, small-fc and tiny-fc; their Lua mnistfc has no BN).
    """

    def __init__(self, input_shape, num_outputs: int, *, width: int, depth: int,
                 batchnorm: bool, dropout: float, input_dropout: float,
                 input_size: int | None = None, order: str = "relu-bn", name: str = "fc"):
        super().__init__()
        width, depth = check_positive("width", width), check_positive("depth", depth)
        check_prob("dropout", dropout)
        check_prob("input_dropout", input_dropout)
        if order not in FC_ORDERS:
            raise UserError(f"option 'order' must be one of {', '.join(FC_ORDERS)}, got "
                            f"{order!r}")
        shape = tuple(input_shape)
        layers: list[nn.Module] = [*_downsample(shape, input_size, name), nn.Flatten()]
        if input_dropout > 0:
            layers.append(nn.Dropout(input_dropout))
        prev = _flat_inputs(shape, input_size)
        for _ in range(depth):
            layers.append(nn.Linear(prev, width))
            act: list[nn.Module] = [nn.ReLU()]
            if batchnorm:
                bn = nn.BatchNorm1d(width)
                act = [bn, *act] if order == "bn-relu" else [*act, bn]
            layers += act
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        layers.append(nn.Linear(prev, num_outputs))
        self.m = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.m(x)


@register_model("mnistfc", paper=_THESIS + ", §4.6.2 (also §3.3.2)",
                description="784-1024-1024-10: input dropout 0.2, (fc-ReLU-BN-dropout) x 2",
                reference_input=(1, 28, 28), stated_params=1_860_000,
                notes="stated 'n = 1.86 million' (§4.6.2); ours 1,867,786 (BN affine included). "
                "§3.3.2 uses dropout=0.5. BN after the ReLU as §4.6.2 words fc_d; "
                "order='bn-relu' is the authors' PyTorch code (Linear-BN-ReLU)")
def mnistfc(input_shape, num_outputs, *, width: int = 1024, dropout: float = 0.2,
            input_dropout: float = 0.2, batchnorm: bool = True, order: str = "relu-bn"
            ) -> nn.Module:
    return ThesisFC(input_shape, num_outputs, width=width, depth=2, batchnorm=batchnorm,
                    dropout=dropout, input_dropout=input_dropout, order=order, name="mnistfc")


@register_model("deep-mnistfc", paper=_THESIS + ", §2.4.3 ('mnistfc')",
                description="thin, very deep MLP: 16 hidden layers of 128 units, ReLU",
                reference_input=(1, 28, 28),
                notes="the thesis states no count; 349,450 on 784 inputs. No batch norm or "
                "dropout is mentioned for it")
def deep_mnistfc(input_shape, num_outputs, *, width: int = 128, depth: int = 16,
                 dropout: float = 0.0, batchnorm: bool = False) -> nn.Module:
    return ThesisFC(input_shape, num_outputs, width=width, depth=depth, batchnorm=batchnorm,
                    dropout=dropout, input_dropout=0.0, name="deep-mnistfc")


@register_model("small-mnistfc", paper=_THESIS + ", §3.3.1 ('smallfc'; Fig. 3.4a)",
                description="one hidden layer with ReLU; 784-64-10 matches the stated count",
                reference_input=(1, 28, 28), stated_params=50_890,
                notes="the text says 32 hidden units but states 50,890 parameters = 784-64-10; "
                "hidden=32 gives 25,450; the authors' code is hidden=32, input_size=14 (6,634)")
def small_mnistfc(input_shape, num_outputs, *, hidden: int = 64,
                  input_size: int | None = None) -> nn.Module:
    return ThesisFC(input_shape, num_outputs, width=hidden, depth=1, batchnorm=False,
                    dropout=0.0, input_dropout=0.0, input_size=input_size, name="small-mnistfc")


@register_model("small-fc", paper=_THESIS + ", §6.3.1",
                description="7x7 down-sampled MNIST -> fc64 -> BN -> ReLU -> fc",
                reference_input=(1, 28, 28),
                notes="the thesis states no count; 3,978 with 10 classes (authors' code "
                "fclenet: Linear-BN-ReLU-Linear)")
def small_fc(input_shape, num_outputs, *, hidden: int = 64, input_size: int | None = 7
             ) -> nn.Module:
    return ThesisFC(input_shape, num_outputs, width=hidden, depth=1, batchnorm=True,
                    dropout=0.0, input_dropout=0.0, input_size=input_size, order="bn-relu",
                    name="small-fc")


@register_model("tiny-fc", paper=_THESIS + ", §6.3.3", description="small-fc with 16 hidden "
                "units (5 classes in the thesis)", reference_input=(1, 28, 28),
                reference_outputs=5,
                notes="the thesis states no count; 917 with 5 classes (authors' code fclenett)")
def tiny_fc(input_shape, num_outputs, *, hidden: int = 16, input_size: int | None = 7
            ) -> nn.Module:
    return ThesisFC(input_shape, num_outputs, width=hidden, depth=1, batchnorm=True,
                    dropout=0.0, input_dropout=0.0, input_size=input_size, order="bn-relu",
                    name="tiny-fc")


class ThesisLeNet(nn.Module):
    """Two 5x5 convolution blocks and a hidden fully-connected layer.

    ``block`` orders each convolution block: ``"relu-pool-bn"`` (the authors' Lua lenet: conv ->
    ReLU -> max-pool -> BN -> dropout), ``"bn-relu-pool"`` (their PyTorch code: conv -> BN ->
    ReLU -> max-pool -> dropout), ``"pool-bn"`` (§2.4.3's block: conv -> ReLU -> max-pool ->
    BN) or ``"relu-pool"`` (no BN: §3.3.1's small-LeNet). ``fc_batchnorm`` adds BN1d after the
    hidden linear layer (conv-net order Linear -> BN -> ReLU). ``padding`` pads each 5x5
    convolution's input (0: unpadded, as the stated lenet counts need; 2 keeps its size).
    """

    def __init__(self, input_shape, num_outputs: int, *, channels: tuple[int, int],
                 pools: tuple[int, int], hidden: int, dropout: float, fc_dropout: float,
                 block: str, fc_batchnorm: bool, name: str, padding: int = 0) -> None:
        super().__init__()
        c1, c2 = (check_positive(f"channels[{i}]", c) for i, c in enumerate(channels))
        hidden = check_positive("hidden", hidden)
        pools = tuple(check_positive(f"pools[{i}]", p) for i, p in enumerate(pools))
        check_prob("dropout", dropout)
        check_prob("fc_dropout", fc_dropout)
        if block not in ("relu-pool-bn", "bn-relu-pool", "pool-bn", "relu-pool"):
            raise UserError(f"option 'block' must be relu-pool-bn, bn-relu-pool, pool-bn or "
                            f"relu-pool, got {block!r}")
        padding = checked_int("option 'padding'", padding, 0)   # Conv2d fails on a 0-d tensor

        def conv_block(ci: int, co: int, pool: int) -> list[nn.Module]:
            conv, mp = nn.Conv2d(ci, co, 5, padding=padding), nn.MaxPool2d(pool, stride=pool)
            layers = {"relu-pool-bn": [conv, nn.ReLU(), mp, nn.BatchNorm2d(co)],
                      "bn-relu-pool": [conv, nn.BatchNorm2d(co), nn.ReLU(), mp],
                      "pool-bn": [conv, nn.ReLU(), mp, nn.BatchNorm2d(co)],
                      "relu-pool": [conv, nn.ReLU(), mp]}[block]
            return layers + ([nn.Dropout(dropout)] if dropout > 0 else [])

        c = input_shape[0]
        self.features = nn.Sequential(*conv_block(c, c1, pools[0]), *conv_block(c1, c2, pools[1]),
                                      nn.Flatten())
        n = flat_size(self.features, tuple(input_shape), name)
        if n == 0:
            raise UserError(f"model {name!r}: inputs {input_shape} leave no features after "
                            "two 5x5 convolutions and pooling")
        head: list[nn.Module] = [nn.Linear(n, hidden)]
        head += [nn.BatchNorm1d(hidden)] if fc_batchnorm else []
        head += [nn.ReLU()] + ([nn.Dropout(fc_dropout)] if fc_dropout > 0 else [])
        self.classifier = nn.Sequential(*head, nn.Linear(hidden, num_outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _pair(name: str, v) -> tuple[int, int]:
    try:
        a, b = v
    except (TypeError, ValueError):
        raise UserError(f"option {name!r} must be a pair of integers, got {v!r}") from None
    return int(a), int(b)


@register_model("lenet", paper=_THESIS + ", §4.6.2 (also §3.3.2, §5.4.2)",
                description="conv 20 and 50 channels 5x5 (max-pool 3, then 2) with BatchNorm, "
                "fc 500, dropout 0.25", reference_input=(1, 28, 28), stated_params=131_220,
                notes="conv -> ReLU -> max-pool -> BN -> dropout as in the authors' Lua code; "
                "§4.6.2's text also puts BN in the fc layer (fc_batchnorm=True: 132,220) but "
                "the stated 131,220 has none. §3.3.2 uses dropout=0.5. block='bn-relu-pool', "
                "fc_batchnorm=True is the authors' PyTorch code")
def lenet(input_shape, num_outputs, *, channels=(20, 50), hidden: int = 500,
          dropout: float = 0.25, fc_batchnorm: bool = False, block: str = "relu-pool-bn"
          ) -> nn.Module:
    return ThesisLeNet(image_shape("lenet", input_shape), num_outputs,
                       channels=_pair("channels", channels), pools=(3, 2), hidden=hidden,
                       dropout=dropout, fc_dropout=dropout, block=block,
                       fc_batchnorm=fc_batchnorm, name="lenet")


@register_model("trivialized-lenet", paper=_THESIS + ", §2.4.3 (LeNet-style network)",
                description="block32 -> block64 -> linear512 -> drop0.1; block = 5x5 conv, "
                "3x3 max-pool, BatchNorm", reference_input=(1, 28, 28),
                notes="the thesis states no count; with 3x3 pooling in both blocks (as "
                "block32 is described) 28x28 leaves 64x1x1 features: 90,698 parameters; "
                "pools=[3, 2] (lenet's) gives 64x2x2; padding=2 (the convolutions' padding "
                "is not stated) 64x3x3")
def trivialized_lenet(input_shape, num_outputs, *, channels=(32, 64), pools=(3, 3),
                      hidden: int = 512, dropout: float = 0.1, padding: int = 0) -> nn.Module:
    return ThesisLeNet(image_shape("trivialized-lenet", input_shape), num_outputs,
                       channels=_pair("channels", channels), pools=_pair("pools", pools),
                       hidden=hidden, dropout=0.0, fc_dropout=dropout, block="pool-bn",
                       fc_batchnorm=False, name="trivialized-lenet", padding=padding)


@register_model("small-lenet-hessian", paper=_THESIS + ", §3.3.1 ('small-LeNet', Fig. 3.1)",
                description="conv 10 and 20 channels 5x5, max-pool 2, fc 128, no BatchNorm",
                reference_input=(1, 28, 28), stated_params=47_658,
                notes="matches the stated 47,658 exactly (20x4x4 features; the authors' "
                "autograd code explore-hessian/mnistconv.py)")
def small_lenet_hessian(input_shape, num_outputs, *, channels=(10, 20), hidden: int = 128
                        ) -> nn.Module:
    return ThesisLeNet(image_shape("small-lenet-hessian", input_shape), num_outputs,
                       channels=_pair("channels", channels), pools=(2, 2), hidden=hidden,
                       dropout=0.0, fc_dropout=0.0, block="relu-pool", fc_batchnorm=False,
                       name="small-lenet-hessian")


@register_model("small-lenet", paper=_THESIS + ", §6.3.1", description="conv 8 and 16 "
                "channels 5x5 with BatchNorm and dropout 0.1, fc 128 with BatchNorm",
                reference_input=(1, 28, 28), stated_params=13_338,
                notes="matches the stated 13,338 exactly with the authors' code lenets: conv -> "
                "BN -> ReLU -> max-pool (3, then 2) -> dropout, Linear -> BN -> ReLU")
def small_lenet(input_shape, num_outputs, *, channels=(8, 16), hidden: int = 128,
                dropout: float = 0.1) -> nn.Module:
    # the thesis puts dropout after the convolutional layers only
    return ThesisLeNet(image_shape("small-lenet", input_shape), num_outputs,
                       channels=_pair("channels", channels), pools=(3, 2), hidden=hidden,
                       dropout=dropout, fc_dropout=0.0, block="bn-relu-pool",
                       fc_batchnorm=True, name="small-lenet")


class AllCNN(nn.Module):
    """All-CNN-C with BatchNorm (``Conv -> BN -> ReLU`` blocks), mean pooling over the last
    map. ``last_block``: ``"code"`` = 3x3, 3x3, 1x1-to-classes (the authors' code; matches
    §4.6.3's "1.67 million"), ``"paper"`` = 3x3, 1x1, 1x1 (Springenberg et al.'s All-CNN-C)."""

    def __init__(self, input_shape, num_outputs: int, *, c1: int, c2: int, dropout: float,
                 input_dropout: float, last_block: str = "code") -> None:
        super().__init__()
        c1, c2 = check_positive("c1", c1), check_positive("c2", c2)
        check_prob("dropout", dropout)
        check_prob("input_dropout", input_dropout)
        if last_block not in ("code", "paper"):
            raise UserError(f"option 'last_block' must be 'code' or 'paper', got {last_block!r}")

        def cbr(ci: int, co: int, k: int, s: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(ci, co, k, stride=s, padding=k // 2), nn.BatchNorm2d(co),
                    nn.ReLU()]

        c = input_shape[0]
        layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout > 0 else []
        layers += [*cbr(c, c1, 3), *cbr(c1, c1, 3), *cbr(c1, c1, 3, 2)]
        layers += [nn.Dropout(dropout)] if dropout > 0 else []
        layers += [*cbr(c1, c2, 3), *cbr(c2, c2, 3), *cbr(c2, c2, 3, 2)]
        layers += [nn.Dropout(dropout)] if dropout > 0 else []
        k2 = 3 if last_block == "code" else 1
        layers += [*cbr(c2, c2, 3), *cbr(c2, c2, k2), *cbr(c2, num_outputs, 1)]
        # AvgPool2d(8) on CIFAR's 8x8 map == mean over the map (any input size)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.m = nn.Sequential(*layers)
        flat_size(self.m, tuple(input_shape), "allcnn")  # fail early on unusable shapes

    def forward(self, x: Tensor) -> Tensor:
        return self.m(x)


@register_model("allcnn", paper=_THESIS + ", §4.6.3 (also §2.4.3.1 All-CNN-BN, §3.3.3)",
                description="All-CNN-C with BatchNorm (96/192 channels), dropout 0.5, input "
                "dropout 0.2", reference_input=(3, 32, 32), stated_params=1_670_000,
                notes="stated 'n = 1.67 million' (§4.6.3; '≈ 1.6 million' in §3.3.1); ours "
                "1,667,166 (the authors' code); last_block='paper' gives 1,372,254")
def allcnn(input_shape, num_outputs, *, c1: int = 96, c2: int = 192, dropout: float = 0.5,
           input_dropout: float = 0.2, last_block: str = "code") -> nn.Module:
    return AllCNN(image_shape("allcnn", input_shape), num_outputs, c1=c1, c2=c2,
                  dropout=dropout, input_dropout=input_dropout, last_block=last_block)


@register_model("small-allcnn", paper=_THESIS + ", §6.3.1", description="allcnn with 12 and "
                "24 channels and BatchNorm", reference_input=(3, 32, 32), stated_params=26_982,
                notes="matches the stated 26,982 exactly (authors' code allcnns); the thesis "
                "mentions no dropout for it (the code's default is 0)")
def small_allcnn(input_shape, num_outputs, *, c1: int = 12, c2: int = 24, dropout: float = 0.0,
                 input_dropout: float = 0.0) -> nn.Module:
    return AllCNN(image_shape("small-allcnn", input_shape), num_outputs, c1=c1, c2=c2,
                  dropout=dropout, input_dropout=input_dropout)
