"""Chaudhari's thesis networks: the parameter counts the thesis states (one test per
architecture), by-hand derivations, and the readings kept as options."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.errors import UserError
from sgdlab.models import build_model, count_parameters, describe
from sgdlab.models.wideresnet import WRN_16_4, WRN_28_10

from model_counts import bn, conv, dense  # tests/models is on sys.path

pytestmark = pytest.mark.usefixtures("one_thread")
MNIST, CIFAR = (1, 28, 28), (3, 32, 32)




def count(name: str, shape=None, outputs: int | None = None, **opts) -> int:
    info = describe(name)
    return count_parameters(build_model(name, shape or info.reference_input,
                                        outputs or info.reference_outputs, **opts))


# --- counts the thesis states exactly --------------------------------------------------------
def test_small_lenet_hessian_is_the_stated_47658():  # §3.3.1 (i)
    assert describe("small-lenet-hessian").stated_params == 47_658
    # 28 -conv5-> 24 -pool2-> 12 -conv5-> 8 -pool2-> 4: 20x4x4 = 320 features, no BatchNorm
    assert count("small-lenet-hessian") == conv(1, 10, 5) + conv(10, 20, 5) + dense(320, 128) \
        + dense(128, 10) == 47_658


def test_small_mnistfc_stated_count_and_the_readings_of_its_width():  # §3.3.1 (ii)
    assert describe("small-mnistfc").stated_params == 50_890
    assert count("small-mnistfc") == dense(784, 64) + dense(64, 10) == 50_890
    assert count("small-mnistfc", hidden=32) == dense(784, 32) + dense(32, 10) == 25_450
    # the authors' code: 14x14 binned MNIST, 32 hidden units
    assert count("small-mnistfc", hidden=32, input_size=14) == dense(196, 32) + dense(32, 10)


def test_lenet_is_the_stated_131220():  # §4.6.2
    assert describe("lenet").stated_params == 131_220
    # 28 -conv5-> 24 -pool3-> 8 -conv5-> 4 -pool2-> 2: 50x2x2 features
    assert count("lenet") == conv(1, 20, 5) + bn(20) + conv(20, 50, 5) + bn(50) \
        + dense(200, 500) + dense(500, 10) == 131_220
    assert count("lenet", fc_batchnorm=True) == 131_220 + bn(500)     # the text's fc_d


def test_small_lenet_is_the_stated_13338():  # §6.3.1 (i)
    assert describe("small-lenet").stated_params == 13_338
    assert count("small-lenet") == conv(1, 8, 5) + bn(8) + conv(8, 16, 5) + bn(16) \
        + dense(64, 128) + bn(128) + dense(128, 10) == 13_338


def test_small_allcnn_is_the_stated_26982():  # §6.3.1 (iii)
    assert describe("small-allcnn").stated_params == 26_982
    assert count("small-allcnn") == conv(3, 12, 3) + 2 * conv(12, 12, 3) + conv(12, 24, 3) \
        + 4 * conv(24, 24, 3) + conv(24, 10, 1) + 3 * bn(12) + 5 * bn(24) + bn(10) == 26_982


# --- counts the thesis states to three figures -----------------------------------------------
def test_mnistfc_is_the_stated_186_million():  # §4.6.2 "n = 1.86 million"
    n = count("mnistfc")
    assert n == dense(784, 1024) + dense(1024, 1024) + dense(1024, 10) + 2 * bn(1024)
    assert describe("mnistfc").stated_params == 1_860_000
    assert int(n / 1e4) * 1e4 == 1_860_000           # 1,867,786: "1.86 million" truncated


def test_mnistfc_layer_order_readings():  # §4.6.2's fc_d wording vs the authors' PyTorch code
    def kinds(**opts):
        net = build_model("mnistfc", MNIST, 10, **opts)
        return [type(m).__name__ for m in net.modules()
                if isinstance(m, (nn.Linear, nn.BatchNorm1d, nn.ReLU))]
    assert kinds()[:3] == ["Linear", "ReLU", "BatchNorm1d"]
    assert kinds(order="bn-relu")[:3] == ["Linear", "BatchNorm1d", "ReLU"]
    assert count("mnistfc", order="bn-relu") == count("mnistfc")
    assert "BatchNorm1d" not in kinds(batchnorm=False)
    assert count("mnistfc", batchnorm=False) == 1_863_690   # the authors' Lua mnistfc
    with pytest.raises(UserError, match="order"):
        build_model("mnistfc", MNIST, 10, order="relu-then-bn")


def test_lenet_layer_order_of_the_authors_pytorch_code():  # §4.6.2; entropy-sgd models.py
    net = build_model("lenet", MNIST, 10, block="bn-relu-pool", fc_batchnorm=True)
    kinds = [type(m).__name__ for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d,
                               nn.Linear, nn.BatchNorm1d))]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2 + [
        "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert count_parameters(net) == 132_220
    with pytest.raises(UserError, match="block"):
        build_model("lenet", MNIST, 10, block="bn-pool")


def test_allcnn_is_the_stated_167_million():  # §4.6.3 "n = 1.67 million"; §3.3.1 "≈ 1.6"
    n = count("allcnn")
    assert n == conv(3, 96, 3) + 2 * conv(96, 96, 3) + conv(96, 192, 3) \
        + 4 * conv(192, 192, 3) + conv(192, 10, 1) + 3 * bn(96) + 5 * bn(192) + bn(10)
    assert round(n / 1e4) * 1e4 == describe("allcnn").stated_params == 1_670_000
    # the All-CNN-C paper's last block (3x3, 1x1, 1x1) is far from the thesis' count
    assert count("allcnn", last_block="paper") == n - 192 * 192 * 8 == 1_372_254


def test_wide_resnets_are_zagoruyko_komodakis_counts():  # thesis §5.4.3, §5.4.4
    assert round(count("wide-resnet", **WRN_16_4) / 1e5) * 1e5 == 2_700_000
    assert describe("wide-resnet").stated_params == 2_700_000
    assert round(count("wide-resnet", CIFAR, 10, **WRN_28_10) / 1e5) * 1e5 == 36_500_000


def test_the_thesis_wrn_option_sets_carry_its_dropout(paper_lines_of):
    # §5.4.4 (lines 2161-2165; a footnote falls inside the sentence): "We use the WRN-16-4
    # network ... The dropout probability is set to 0.4"; §5.4.3 (line 2130): "We use the
    # WRN-28-10 network ... We use a dropout of probability 0.3"
    assert WRN_16_4 == {"depth": 16, "widen": 4, "dropout": 0.4}
    assert WRN_28_10 == {"depth": 28, "widen": 10, "dropout": 0.3}
    # the registered default stays without dropout, as its note says (WRN_16_4 is §5.4.4's)
    assert "dropout to 0 (§5.4.4 trains it with 0.4)" in describe("wide-resnet").notes
    assert not any(isinstance(m, nn.Dropout) for m in build_model("wide-resnet", CIFAR, 10,
                                                                   depth=10, widen=1).modules())
    lines = paper_lines_of("chaudhari-2018-thesis-energy-landscape.txt")
    svhn = lines.index("5.4.4. SVHN")
    body = [ln for ln in lines[svhn:svhn + 12] if ln.strip() and not ln.startswith("⁴")]
    said = next(i for i, ln in enumerate(body) if "We use the WRN-16-4 network" in ln)
    assert body[said].endswith("The dropout probability is set to")
    assert body[said + 1].startswith("0.4 and weight decay is set to")
    cifar = lines[2129]
    assert "We use the WRN-28-10 network" in cifar and "dropout of probability 0.3" in cifar


def test_wide_resnet_projection_shortcut_takes_the_pre_activated_input():
    # Zagoruyko & Komodakis' code: where the width changes, BN -> ReLU is shared by the
    # convolution path and the 1x1 shortcut convolution (not applied to the raw input only)
    torch.manual_seed(0)
    net = build_model("wide-resnet", (3, 8, 8), 4, depth=16, widen=2).eval()
    blocks = [m for m in net.modules() if hasattr(m, "shortcut")]
    first = blocks[0]                        # 16 -> 32 channels: a projection shortcut
    assert isinstance(first.shortcut, nn.Conv2d)
    bn0 = first.body[0]
    with torch.no_grad():                    # non-trivial BN statistics and affine weights
        bn0.running_mean.uniform_(-1, 1)
        bn0.running_var.uniform_(0.5, 2)
        bn0.weight.uniform_(0.5, 2)
        bn0.bias.uniform_(-1, 1)
        x = torch.randn(2, 16, 8, 8)
        pre = torch.relu(bn0(x))
        want = first.body[2:](pre) + first.shortcut(pre)
        assert torch.allclose(first(x), want, atol=1e-6)
        assert not torch.allclose(first(x), first.body(x) + first.shortcut(x), atol=1e-3)
        same = blocks[-1]                    # identity shortcut: the raw input is added
        y = torch.randn(2, same.body[0].num_features, 2, 2)
        assert torch.equal(same(y), same.body(y) + y)
    # the other reading: the projection takes the raw input (same parameters)
    torch.manual_seed(0)
    raw = build_model("wide-resnet", (3, 8, 8), 4, depth=16, widen=2, shortcut="input").eval()
    assert count_parameters(raw) == count_parameters(net)
    first = next(m for m in raw.modules() if hasattr(m, "shortcut"))
    with torch.no_grad():
        assert torch.equal(first(x), first.body(x) + first.shortcut(x))
    with pytest.raises(UserError, match="shortcut"):
        build_model("wide-resnet", CIFAR, 10, shortcut="raw")


# --- networks the thesis gives no count for: derived by hand --------------------------------
def test_counts_the_thesis_leaves_unstated():
    assert count("deep-mnistfc") == dense(784, 128) + 15 * dense(128, 128) + dense(128, 10)
    assert count("small-fc") == dense(49, 64) + bn(64) + dense(64, 10)        # 7x7 inputs
    assert count("tiny-fc") == dense(49, 16) + bn(16) + dense(16, 5)         # 5 classes
    # §2.4.3 blocks: 5x5 conv, 3x3 max-pool, BN -> 28 -> 24 -> 8 -> 4 -> 1
    assert count("trivialized-lenet") == conv(1, 32, 5) + bn(32) + conv(32, 64, 5) + bn(64) \
        + dense(64, 512) + dense(512, 10)


def test_layers_and_orders():
    m = build_model("deep-mnistfc", MNIST, 10)
    assert sum(isinstance(x, nn.Linear) for x in m.modules()) == 17
    assert not any(isinstance(x, (nn.BatchNorm1d, nn.Dropout)) for x in m.modules())
    kinds = [type(x).__name__ for x in build_model("small-fc", MNIST, 10).m]
    assert kinds == ["AdaptiveAvgPool2d", "Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    kinds = [type(x).__name__ for x in build_model("mnistfc", MNIST, 10).m]
    assert kinds[:6] == ["Flatten", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout"]
    sl = build_model("small-lenet", MNIST, 10)
    drops = [x.p for x in sl.features if isinstance(x, nn.Dropout)]
    assert drops == [0.1, 0.1] and not any(isinstance(x, nn.Dropout) for x in sl.classifier)
    assert not any(isinstance(x, nn.BatchNorm2d)
                   for x in build_model("small-lenet-hessian", MNIST, 10).modules())


def test_downsampling_is_block_means():
    """input_size=7 on 28x28 = 4x4 block means (the authors bin MNIST the same way)."""
    torch.manual_seed(0)
    m = build_model("small-fc", MNIST, 10).eval()
    x = torch.rand(3, 1, 28, 28)
    binned = x.reshape(3, 1, 7, 4, 7, 4).mean((3, 5))
    lin = m.m[2]
    torch.testing.assert_close(m.m[1](m.m[0](x)), binned.flatten(1))
    assert lin.in_features == 49
    # already 7x7: no pooling layer
    assert type(build_model("tiny-fc", (1, 7, 7), 5).m[0]).__name__ == "Flatten"
    assert build_model("tiny-fc", MNIST, 5)(x).shape == (3, 5)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="input_size"):
        build_model("small-fc", (49,), 10)
    with pytest.raises(UserError, match="cannot down-sample"):
        build_model("tiny-fc", (1, 5, 5), 5)
    with pytest.raises(UserError, match="last_block"):
        build_model("allcnn", CIFAR, 10, last_block="nope")
    with pytest.raises(UserError, match="6n\\+4"):
        build_model("wide-resnet", CIFAR, 10, depth=20)
    with pytest.raises(UserError, match="pools"):
        build_model("trivialized-lenet", MNIST, 10, pools=3)
    with pytest.raises(UserError, match="no features|cannot take"):
        build_model("trivialized-lenet", (1, 12, 12), 10)


# --- layer placements the thesis prints (dropout, strides, BN): counts do not see them --------
def _dropouts(module: nn.Module) -> list[float]:
    return [m.p for m in module.modules() if isinstance(m, nn.Dropout)]


def test_mnistfc_dropouts_are_section_4_6_2s():
    # §4.6.2: input_784 -> drop_0.2 -> (fc_1024 -> drop_0.2) x 2 -> fc_10
    net = build_model("mnistfc", MNIST, 10)
    assert [type(x).__name__ for x in net.m] == [
        "Flatten", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout",
        "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
    assert _dropouts(net) == [0.2, 0.2, 0.2]


def test_lenet_layers_and_dropouts_are_section_4_6_2s():
    # §4.6.2: conv_{20,5,3} -> drop_0.25 -> conv_{50,5,2} -> drop_0.25 -> fc_500 -> drop_0.25
    # -> fc_10; conv = conv -> ReLU -> max-pool -> BN (the Lua order, the stated count)
    net = build_model("lenet", MNIST, 10)
    assert [type(x).__name__ for x in net.features] == [
        "Conv2d", "ReLU", "MaxPool2d", "BatchNorm2d", "Dropout"] * 2 + ["Flatten"]
    assert [type(x).__name__ for x in net.classifier] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert _dropouts(net) == [0.25, 0.25, 0.25]
    assert [x.kernel_size for x in net.features if isinstance(x, nn.MaxPool2d)] == [3, 2]


def test_trivialized_lenet_has_batch_norm_not_dropout_after_its_convolutions():
    # §2.4.3: "we have replaced the drop layer after the convolutional layer with batch-
    # normalization"; block32 -> block64 -> linear512 -> drop0.1
    net = build_model("trivialized-lenet", MNIST, 10)
    assert _dropouts(net.features) == [] and _dropouts(net.classifier) == [0.1]
    assert sum(isinstance(x, nn.BatchNorm2d) for x in net.features) == 2


def test_trivialized_lenet_padding_keeps_each_convolutions_input_size():
    # §2.4.3 states "a 5×5 kernel" and no padding: unpadded by default (28 -> 24 -> 8 -> 4 -> 1),
    # padding=2 (reading block-padding=same) keeps the size: 28 -> 28 -> 9 -> 9 -> 3
    x = torch.zeros(2, *MNIST)
    plain = build_model("trivialized-lenet", MNIST, 10)
    padded = build_model("trivialized-lenet", MNIST, 10, padding=2)
    assert plain.features(x).shape == (2, 64) and padded.features(x).shape == (2, 64 * 3 * 3)
    assert count("trivialized-lenet", padding=2) == conv(1, 32, 5) + bn(32) + conv(32, 64, 5) \
        + bn(64) + dense(64 * 9, 512) + dense(512, 10)
    for bad, said in ((-1, r"got -1"), (2.0, r"got 2\.0"), (True, r"not a bool \(True\)")):
        with pytest.raises(UserError, match=f"^option 'padding' must be an int >= 0, {said}$"):
            build_model("trivialized-lenet", MNIST, 10, padding=bad)
    # numpy's and torch's ints are paddings too: Conv2d gets them as Python ints
    for two in (np.int64(2), torch.tensor(2)):
        same = build_model("trivialized-lenet", MNIST, 10, padding=two)
        assert same.features[0].padding == (2, 2) and type(same.features[0].padding[0]) is int


def test_allcnn_layers_strides_and_dropouts_are_section_4_6_3s():
    # §4.6.3: drop_0.2 -> block_96 -> block_192 -> conv_192,3 x 2 -> conv_10 -> mean-pool,
    # block_d = conv_d,3 -> conv_d,3 -> conv*_d,3 (stride 2) -> drop_0.5; mean-pool takes
    # 10 x 8 x 8 on CIFAR's 32 x 32
    net = build_model("allcnn", CIFAR, 10)
    convs = [x for x in net.m if isinstance(x, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [1, 1, 2, 1, 1, 2, 1, 1, 1]
    assert [c.out_channels for c in convs] == [96] * 3 + [192] * 5 + [10]
    kinds = [type(x).__name__ for x in net.m]
    assert kinds[0] == "Dropout" and kinds[-2:] == ["AdaptiveAvgPool2d", "Flatten"]
    cbr = ["Conv2d", "BatchNorm2d", "ReLU"]
    assert kinds[1:-2] == cbr * 3 + ["Dropout"] + cbr * 3 + ["Dropout"] + cbr * 3
    assert _dropouts(net) == [0.2, 0.5, 0.5]
    seen = []
    net.m[-3].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:])))
    net.eval()(torch.zeros(1, *CIFAR))
    assert seen == [(10, 8, 8)]


def test_downsampled_fc_nets_read_every_channel_and_refuse_a_side_too_short():
    # 7x7 average pooling keeps the channels: 3 x 7 x 7 = 147 inputs
    assert count("small-fc", (3, 28, 28), 10) == dense(147, 64) + bn(64) + dense(64, 10)
    with pytest.raises(UserError, match=r"cannot down-sample \(5, 28\) images to 7x7"):
        build_model("small-fc", (1, 5, 28), 10)


def test_wide_resnet_16_4_count_by_hand_and_its_layers():
    # Zagoruyko & Komodakis: bias-free convolutions, 1x1 projections where width or stride
    # change, BN -> ReLU before the pooled read-out
    def wrn(depth, k, classes=10):
        n, total, ci = (depth - 4) // 6, conv(3, 16, 3, False), 16
        for co in (16 * k, 32 * k, 64 * k):
            for i in range(n):
                total += bn(ci) + conv(ci, co, 3, False) + bn(co) + conv(co, co, 3, False)
                total += conv(ci, co, 1, False) if ci != co or (i == 0 and co != 16 * k) else 0
                ci = co
        return total + bn(ci) + dense(ci, classes)
    net = build_model("wide-resnet", CIFAR, 10, **WRN_16_4)
    assert count_parameters(net) == wrn(16, 4) == 2_748_890
    assert [type(x).__name__ for x in net.m[-5:]] == [
        "BatchNorm2d", "ReLU", "AdaptiveAvgPool2d", "Flatten", "Linear"]
    block = net.m[1]
    assert [type(x).__name__ for x in block.body] == [
        "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Dropout", "Conv2d"]
    assert _dropouts(net) == [0.4] * 6
    with pytest.raises(UserError, match="6n\\+4"):
        build_model("wide-resnet", CIFAR, 10, depth=4)     # n = 0: no block at all


def test_wide_resnet_groups_work_on_32_16_and_8_pixel_maps():
    # Zagoruyko & Komodakis, Table 1: conv2 32x32, conv3 16x16, conv4 8x8 (strides 1, 2, 2)
    net = build_model("wide-resnet", CIFAR, 10, depth=10, widen=1).eval()
    seen = []
    for block in net.m[1:4]:
        block.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:])))
    net(torch.zeros(1, *CIFAR))
    assert seen == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
