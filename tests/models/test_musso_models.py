"""Musso 2020, Appendix B: Models 1-3 layer by layer, with the parameter counts they imply."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from sgdlab.errors import UserError
from sgdlab.models import build_model, count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")
MNIST = (1, 28, 28)


def dense(i: int, o: int) -> int:
    return i * o + o


def conv3(ci: int, co: int) -> int:
    return ci * co * 9 + co


def layers(model: nn.Module) -> list[tuple]:
    """(type, in, out) of the Conv2d / Linear / MaxPool2d layers, in order."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            out.append(("Conv2d", m.in_channels, m.out_channels, m.kernel_size, m.padding))
        elif isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, nn.MaxPool2d):
            out.append(("MaxPool",))
    return out


def test_model1_is_table_27():
    m = build_model("musso-bilayer", MNIST, 10)
    assert layers(m) == [("Linear", 28 ** 2, 100), ("Linear", 100, 10)]
    assert [type(x) for x in m.modules() if isinstance(x, (nn.ReLU, nn.Dropout))] == [nn.ReLU]
    assert count_parameters(m) == dense(784, 100) + dense(100, 10) == 79_510


def test_model2_is_table_28():
    m = build_model("musso-model2", MNIST, 10)
    c = ((3, 3), (0, 0))
    assert layers(m) == [("Conv2d", 1, 64, *c), ("Conv2d", 64, 64, *c), ("MaxPool",),
                         ("Conv2d", 64, 128, *c), ("Conv2d", 128, 128, *c),
                         ("Conv2d", 128, 128, *c), ("MaxPool",), ("Linear", 128 * 3 * 3, 10)]
    assert sum(isinstance(x, nn.ReLU) for x in m.modules()) == 5
    assert count_parameters(m) == (conv3(1, 64) + conv3(64, 64) + conv3(64, 128)
                                   + 2 * conv3(128, 128) + dense(128 * 3 * 3, 10)) == 418_122
    assert m(torch.zeros(2, *MNIST)).shape == (2, 10)
    narrow = build_model("musso-model2", MNIST, 10, channels=[8, 8, 16, 16, 16])
    assert layers(narrow)[-1] == ("Linear", 16 * 3 * 3, 10)
    with pytest.raises(UserError, match="5 widths"):
        build_model("musso-model2", MNIST, 10, channels=[8, 8])


def test_model2_init_torch_default_or_kaiming():
    # PyTorch's default (the paper's PyTorch runs) has weight variance 1/(3 fan_in);
    # init="kaiming" is He et al.'s 2/fan_in with zero biases
    torch.manual_seed(0)
    wide = [64, 64, 128, 128, 128]
    default = build_model("musso-model2", MNIST, 10, channels=wide)
    torch.manual_seed(0)
    he = build_model("musso-model2", MNIST, 10, channels=wide, init="kaiming")
    for d, k in zip(default.modules(), he.modules()):
        if not isinstance(d, (nn.Conv2d, nn.Linear)):
            continue
        fan_in = d.weight[0].numel()
        assert d.weight.var().item() == pytest.approx(1 / (3 * fan_in), rel=0.2)
        assert k.weight.var().item() == pytest.approx(2 / fan_in, rel=0.2)
        assert d.bias.abs().max().item() > 0 and k.bias.abs().max().item() == 0
    with pytest.raises(UserError, match="init"):
        build_model("musso-model2", MNIST, 10, init="xavier")


def test_model3_is_torchvision_vgg16():
    # torchvision's vgg16: 138,357,544 parameters for ImageNet (VGG paper, Table 2: "138" M)
    with torch.device("meta"):
        imagenet = build_model("musso-vgg16", (3, 224, 224), 1000)
        cifar = build_model("musso-vgg16", (3, 32, 32), 10)
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs = sum(conv3(a, b) for a, b in zip([3] + widths[:-1], widths))
    head = dense(512 * 7 * 7, 4096) + dense(4096, 4096)
    assert count_parameters(imagenet) == convs + head + dense(4096, 1000) == 138_357_544
    assert count_parameters(cifar) == convs + head + dense(4096, 10) == 134_301_514
    assert sum(isinstance(x, nn.MaxPool2d) for x in cifar.modules()) == 5
    assert sum(isinstance(x, nn.Dropout) for x in cifar.modules()) == 2


def test_model3_loads_torchvision_weights_and_replaces_the_read_out(tmp_path):
    kw = dict(stages=2, width=4, classifier_width=8)
    torch.manual_seed(0)
    src = build_model("musso-vgg16", (3, 8, 8), 1000, **kw)
    path = tmp_path / "vgg.pth"
    torch.save(src.state_dict(), path)
    torch.manual_seed(1)
    dst = build_model("musso-vgg16", (3, 8, 8), 10, weights=str(path), **kw)
    for k, v in dst.state_dict().items():
        same = torch.equal(v, src.state_dict()[k]) if v.shape == src.state_dict()[k].shape \
            else False
        assert same == (not k.startswith("classifier.6.")), k
    with pytest.raises(UserError, match="not found"):
        build_model("musso-vgg16", (3, 8, 8), 10, weights=str(tmp_path / "none.pth"), **kw)
    with pytest.raises(UserError, match="not a torchvision vgg16"):
        build_model("musso-vgg16", (3, 8, 8), 10, weights=str(path), stages=2, width=8,
                    classifier_width=8)


def test_small_vgg16_family_member():
    m = build_model("musso-vgg16", (1, 8, 8), 10, stages=3, width=8, classifier_width=128,
                    batchnorm=True)
    assert [x[2] for x in layers(m) if x[0] == "Conv2d"] == [8, 8, 16, 16, 32, 32, 32]
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == 7
    assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(UserError, match="stages"):
        build_model("musso-vgg16", (1, 8, 8), 10, stages=6)
    # 2.0 was taken (it is in range(1, 6)); True was refused as "got True"
    for bad, says in ((2.0, "got 2.0"), (True, "not a bool (True)")):
        with pytest.raises(UserError, match=re.escape(
                f"option 'stages' must be 1..5 (VGG16 has five), {says}")):
            build_model("musso-vgg16", (1, 8, 8), 10, stages=bad, width=8)


def test_model3_has_torchvisions_initialisation():
    # torchvision's VGG: conv weights N(0, 2 / (9 c_out)) (Kaiming, fan-out), linear weights
    # N(0, 0.01^2), every bias zero
    torch.manual_seed(0)
    m = build_model("musso-vgg16", (3, 8, 8), 10, stages=2, width=16, classifier_width=64)
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    for c in convs[1:]:
        assert c.weight.var().item() == pytest.approx(2 / (9 * c.out_channels), rel=0.15)
    for lin in (x for x in m.modules() if isinstance(x, nn.Linear)):
        assert lin.weight.std().item() == pytest.approx(0.01, rel=0.15)
    assert all(x.bias.abs().max().item() == 0 for x in m.modules()
               if isinstance(x, (nn.Conv2d, nn.Linear)))


def test_model3_refuses_an_incomplete_state_dict_a_directory_and_no_stages(tmp_path):
    kw = dict(stages=2, width=4, classifier_width=8)
    src = build_model("musso-vgg16", (3, 8, 8), 10, **kw).state_dict()
    del src["features.0.weight"]
    torch.save(src, tmp_path / "part.pth")
    with pytest.raises(UserError, match=r"not a torchvision vgg16 .*features\.0\.weight"):
        build_model("musso-vgg16", (3, 8, 8), 10, weights=str(tmp_path / "part.pth"), **kw)
    with pytest.raises(UserError, match="not found"):
        build_model("musso-vgg16", (3, 8, 8), 10, weights=str(tmp_path), **kw)
    with pytest.raises(UserError, match="stages"):
        build_model("musso-vgg16", (3, 8, 8), 10, stages=0, width=4, classifier_width=8)
