"""Parameter counts (papers' statements and our derivations) and forward shapes."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.models import MODELS, build_model, count_parameters, describe, register_model
from sgdlab.errors import UserError
from sgdlab.testing import random_eval_batchnorm

from model_counts import bn, conv, dense  # tests/models is on sys.path


# tiny batch-2 convolutions: two threads on a shared 2-core box only add contention
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name, count", [
    ("zhu-mlp-1-10-10-10-1", 251), ("zhu-mlp-1-10-10-1", 141), ("zhu-mlp-1-6-6-6-1", 103),
    ("zhu-lenet", 11_330),
])
def test_counts_stated_by_zhu_et_al(name, count):
    info = describe(name)
    assert info.stated_params == count
    model = build_model(name, info.reference_input, info.reference_outputs)
    assert count_parameters(model) == count


def test_zhu_lenet_layer_order_as_printed():
    """Suppl. C: conv1 ⇒ max_pool ⇒ ReLU ⇒ conv2 ⇒ max_pool ⇒ ReLU ⇒ fc1 ⇒ ReLU ⇒ fc2."""
    m = build_model("zhu-lenet", (1, 28, 28), 10)
    kinds = [type(x).__name__ for x in m.modules()
             if not isinstance(x, (nn.Sequential, nn.Flatten)) and x is not m]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU", "Linear",
                     "ReLU", "Linear"]
    assert [c.kernel_size for c in m.modules() if isinstance(c, nn.Conv2d)] == [(5, 5)] * 2
    assert [c.padding for c in m.modules() if isinstance(c, nn.Conv2d)] == [(0, 0)] * 2


def test_zhu_counts_by_hand():
    assert dense(1, 10) + 2 * dense(10, 10) + dense(10, 1) == 251
    # conv-pool-conv-pool on 28x28 leaves 10x4x4 = 160 features
    assert conv(1, 10, 5) + conv(10, 10, 5) + dense(160, 50) + dense(50, 10) == 11_330


def test_resnet56_count_is_the_papers_085M():
    m = build_model("resnet-56", (3, 32, 32), 10)
    n = count_parameters(m)
    by_hand = conv(3, 16, 3, bias=False) + bn(16) + dense(64, 10)
    for c_in, c in ((16, 16), (16, 32), (32, 64)):
        by_hand += conv(c_in, c, 3, False) + conv(c, c, 3, False) + 2 * bn(c)  # first block
        by_hand += 8 * (2 * conv(c, c, 3, False) + 2 * bn(c))
    assert n == by_hand == 853_018
    assert round(n / 1e4) * 1e4 == describe("resnet-56").stated_params == 850_000
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) + 1 == 56  # 55 conv layers + the fc layer
    # option-B projection shortcuts add two 1x1 convs + BN
    assert count_parameters(build_model("resnet-56", (3, 32, 32), 10, shortcut="B")) == \
        n + conv(16, 32, 1, False) + bn(32) + conv(32, 64, 1, False) + bn(64)


def test_derived_counts_of_the_other_architectures():
    mnist, cifar = (1, 28, 28), (3, 32, 32)
    expect = {
        ("musso-bilayer", mnist): dense(784, 100) + dense(100, 10),
        ("jastrzebski-mlp", mnist): dense(784, 400) + 2 * dense(400, 400) + dense(400, 10)
        + 3 * bn(400),
        # Musso's Model 2 (no padding): 32 -> 30 -> 28 -> 14 -> 12 -> 10 -> 8 -> 4
        ("musso-model2", cifar): conv(3, 64, 3) + conv(64, 64, 3) + conv(64, 128, 3)
        + 2 * conv(128, 128, 3) + dense(128 * 4 * 4, 10),
    }
    for (name, shape), count in expect.items():
        assert count_parameters(build_model(name, shape, 10)) == count, name


def test_vgg_counts():
    def vgg_count(cfg, bnorm):
        n, c = 0, 3
        for v in cfg:
            n += conv(c, v, 3) + (bn(v) if bnorm else 0)
            c = v
        return n + dense(512, 10)
    v11 = [64, 128, 256, 256, 512, 512, 512, 512]
    v16 = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    for name, cfg, total in (("vgg-11", v11, 9_231_114), ("vgg-16", v16, 14_728_266)):
        assert count_parameters(build_model(name, (3, 32, 32), 10)) == vgg_count(cfg, True) == total
        assert count_parameters(build_model(name, (3, 32, 32), 10, batchnorm=False)) == \
            vgg_count(cfg, False)
    # Zhu et al. Suppl. D: "The total number of parameters of this network is 9,750,922."
    zhu = build_model("vgg-11", (3, 32, 32), 10, batchnorm=False, classifier_widths=[512, 512])
    assert count_parameters(zhu) == vgg_count(v11, False) + 2 * dense(512, 512) == 9_750_922
    assert [type(m).__name__ for m in zhu.classifier] == ["Linear", "ReLU"] * 2 + ["Linear"]
    with pytest.raises(UserError, match="classifier_widths"):
        build_model("vgg-11", (3, 32, 32), 10, classifier_widths=[0])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_and_backward_on_intended_input(name):
    torch.manual_seed(0)
    info = describe(name)
    m = build_model(name, info.reference_input, info.reference_outputs)
    if info.inputs == "tokens":     # (N, T) tokens -> next-token logits (N, V, T)
        x = torch.randint(0, info.reference_outputs, (2, *info.reference_input))
        shape = (2, info.reference_outputs, *info.reference_input)
    else:
        x, shape = torch.randn(2, *info.reference_input), (2, info.reference_outputs)
    out = m(x)
    assert out.shape == shape
    out.square().sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    with torch.no_grad():
        assert m(x).shape == shape


def test_models_adapt_to_input_shape_and_classes():
    assert build_model("mlp", (1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert build_model("mlp", 40, 3, widths=[7, 5])(torch.zeros(2, 40)).shape == (2, 3)
    assert build_model("musso-bilayer", (1, 40), 10)(torch.zeros(2, 1, 40)).shape == (2, 10)
    assert build_model("zhu-lenet", (3, 32, 32), 100)(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert build_model("lenet", (28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # (H, W) images as a dataset of that shape holds them: (N, H, W), one channel added
    torch.manual_seed(0)
    net = build_model("resnet-56", (8, 8), 10, depth=20).eval()
    x = torch.randn(3, 8, 8)
    assert torch.equal(net(x), net(x[:, None]))
    assert build_model("allcnn", (1, 40), 10).eval()(torch.zeros(4, 1, 40)).shape == (4, 10)
    allcnn = build_model("allcnn", (3, 32, 32), 100).eval()
    assert allcnn(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert build_model("musso-model2", (1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    resnet = build_model("resnet-56", (1, 28, 28), 10, depth=20)
    assert resnet(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_bad_shapes_and_options_are_user_errors():
    with pytest.raises(UserError, match="cannot take inputs shaped"):
        build_model("zhu-lenet", (1, 8, 8), 10)  # digits are too small for two 5x5 convs
    with pytest.raises(UserError, match="needs input_shape"):
        build_model("vgg-11", (64,), 10)
    with pytest.raises(UserError, match="cannot take inputs shaped"):
        build_model("vgg-11", (1, 28, 28), 10)  # five poolings need >= 32x32
    with pytest.raises(UserError, match="known models: .*zhu-lenet"):
        build_model("alexnet", (3, 32, 32), 10)
    with pytest.raises(UserError, match=r"Unknown model 'mlpp' \(did you mean mlp\?\)"):
        build_model("mlpp", (4,), 2)
    # a model of one's own that the command did not import: how it is imported
    with pytest.raises(UserError,
                       match=r"known models: .* \(a model of your own: .*--plugin"):
        build_model("my-net", (4,), 2)
    with pytest.raises(UserError, match=r"must be a string, got dict .*build_model\(spec"):
        build_model({"name": "mlp", "widths": [3]}, (4,), 2)   # not "did you mean mlp"
    with pytest.raises(UserError, match=r"'widht' \(did you mean widths\?\); valid options: "
                                        r".*widths"):
        build_model("mlp", (4,), 2, widht=[3])
    with pytest.raises(UserError, match="activation"):
        build_model("mlp", (4,), 2, activation="swishy")
    with pytest.raises(UserError, match="6n\\+2"):
        build_model("resnet-56", (3, 32, 32), 10, depth=51)
    with pytest.raises(UserError, match="'width'"):      # a zero-channel net is no ResNet
        build_model("resnet-56", (3, 32, 32), 10, width=0)
    for bad in (["a"], 5, "512", [512, 2.5]):
        with pytest.raises(UserError, match="classifier_widths"):
            build_model("vgg-11", (3, 32, 32), 10, classifier_widths=bad)
    vgg = build_model("vgg-16", (3, 32, 32), 10)
    assert type(build_model("VGG16", (3, 32, 32), 10)) is type(vgg)
    assert describe("resnet56").name == "resnet-56"
    assert describe("small_lenet").name == "small-lenet"
    with pytest.raises(UserError, match="num_outputs"):
        build_model("mlp", (4,), 0)


def test_mlp_options_and_seeded_init():
    m = build_model("mlp", (6,), 2, widths=[5, 4], activation="tanh", batchnorm=True, dropout=0.1)
    kinds = [type(x).__name__ for x in m.modules()]
    assert kinds.count("BatchNorm1d") == 2 and kinds.count("Tanh") == 2 and "Dropout" in kinds
    assert count_parameters(m) == dense(6, 5) + dense(5, 4) + dense(4, 2) + bn(5) + bn(4)
    torch.manual_seed(1)
    a = build_model("zhu-mlp-1-10-10-10-1", (1,), 1)
    torch.manual_seed(1)
    b = build_model("zhu-mlp-1-10-10-10-1", (1,), 1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert any(isinstance(x, nn.ReLU) for x in a.modules())        # Suppl. A: ReLU
    assert describe("zhu-mlp-1-10-10-10-1").options == {"activation": "relu"}


def test_a_builder_whose_options_are_not_keyword_only_is_refused_at_registration():
    # its options are its keyword-only parameters: a positional `hidden` worked in
    # build_model but a run config's model.options refused it ("accepts: nothing")
    def positional(input_shape, num_outputs, hidden=8):
        return nn.Linear(input_shape[0], num_outputs)

    with pytest.raises(ValueError, match=r"option 'hidden' of model 'mine-positional' must be "
                                         r"keyword-only: def positional\(input_shape, "
                                         r"num_outputs, \*, hidden=8\)"):
        register_model("mine-positional", paper="-", description="-",
                       reference_input=(4,))(positional)
    assert "mine-positional" not in MODELS


def test_a_model_of_ones_own_registers_by_name_alone():
    # register_model demanded paper=, description= and reference_input= (a TypeError for a
    # plugin's model), where register_dataset and register_optimizer take the name alone
    def bare(input_shape, num_outputs, *, hidden: int = 3):
        return nn.Sequential(nn.Linear(input_shape[0], hidden), nn.Linear(hidden, num_outputs))

    try:
        register_model("mine-bare")(bare)
        assert count_parameters(build_model("mine-bare", (4,), 2, hidden=5)) == 25 + 12
        assert describe("mine-bare").reference_input is None
    finally:
        MODELS.pop("mine-bare", None)
    # the packaged architectures keep what their tests build them on
    assert all(info.reference_input is not None for info in MODELS.values())


def test_a_model_of_ones_own_that_fails_to_build_is_named_with_its_line():
    # a typo in a plugin's builder (a class name) ended the command in a traceback
    def typo(input_shape, num_outputs):
        raise NameError("name 'Netw' is not defined")    # as a misspelt class name raises

    try:
        register_model("mine-typo")(typo)
        with pytest.raises(UserError, match=r"model 'mine-typo': building it failed: NameError: "
                                            r"name 'Netw' is not defined \(.*"
                                            r"test_models_architectures\.py, line \d+\)$"):
            build_model("mine-typo", (4,), 2)
    finally:
        MODELS.pop("mine-typo", None)


def test_registry_refusals_name_the_problem():
    with pytest.raises(UserError, match=r"positive sizes, got \(0, 4\)"):
        build_model("mlp", (0, 4), 2)
    with pytest.raises(UserError,
                       match=re.escape("num_outputs must be an int >= 1, not a bool (True)")):
        build_model("mlp", (4,), True)
    for p in (1.0, -0.1):
        with pytest.raises(UserError, match=r"'dropout' must be a probability in \[0, 1\)"):
            build_model("mlp", (4,), 2, dropout=p)
    with pytest.raises(ValueError, match="inputs of model 'mine-images' must be one of"):
        register_model("mine-images", inputs="images")
    with pytest.raises(ValueError, match="model name 'mlp' registered twice"):
        register_model("mlp")(lambda input_shape, num_outputs: nn.Identity())
    assert describe("mlp").builder.__name__ == "mlp"


def test_numpy_ints_are_sizes_and_counts_as_python_ints_are():
    """A grid's np.int64 width or class count was refused: "option 'width' must be a positive
    integer, got np.int64(8)"."""
    model = build_model("jastrzebski-mlp", (4,), np.int64(3), width=np.int64(8),
                        depth=torch.tensor(2))
    twin = build_model("jastrzebski-mlp", (4,), 3, width=8, depth=2)
    assert [p.shape for p in model.parameters()] == [p.shape for p in twin.parameters()]
    assert build_model("mlp", (4,), 2, widths=[np.int32(5)]).net[1].out_features == 5


def test_a_resnet_takes_a_numpy_or_torch_integer_depth():
    twin = [p.shape for p in build_model("resnet-56", (3, 8, 8), 10, depth=8).parameters()]
    for depth in (np.int64(8), torch.tensor(8)):
        net = build_model("resnet-56", (3, 8, 8), 10, depth=depth)
        assert [p.shape for p in net.parameters()] == twin
    for bad, said in ((True, "not a bool (True)"), (np.float64(8.0), "got np.float64(8.0)")):
        rule = f"'depth' must be 6n+2 (20, 32, 44, 56, 110), {said}"
        with pytest.raises(UserError, match=re.escape(rule)):
            build_model("resnet-56", (3, 8, 8), 10, depth=bad)


@pytest.mark.parametrize("bad", [True, 8.0, "8", np.float64(8.0)])
def test_a_size_option_that_is_no_int_is_named_with_the_option(bad):
    said = "not a bool (True)" if bad is True else f"got {bad!r}"
    with pytest.raises(UserError, match=re.escape(
            f"option 'width' must be an int >= 1, {said}")):
        build_model("jastrzebski-mlp", (4,), 3, width=bad)
    with pytest.raises(UserError, match=re.escape(
            f"option 'widths[1]' must be an int >= 1, {said}")):
        build_model("mlp", (4,), 2, widths=[3, bad])


def test_count_parameters_leaves_out_frozen_ones_unless_asked():
    m = build_model("mlp", (3,), 2, widths=[4])
    m.net[1].weight.requires_grad_(False)                    # 3 x 4 frozen
    assert count_parameters(m) == dense(3, 4) + dense(4, 2) - 12
    assert count_parameters(m, trainable_only=False) == dense(3, 4) + dense(4, 2)


def test_mlp_layer_order_bias_and_dropouts_as_documented():
    # Flatten -> [Dropout(input_dropout)] -> (Linear -> BN -> act -> Dropout) per hidden layer
    m = build_model("mlp", (6,), 2, widths=[5], activation="Tanh", batchnorm=True,
                    dropout=0.3, input_dropout=0.1, bias=False)
    assert [type(x).__name__ for x in m.net] == ["Flatten", "Dropout", "Linear",
                                                  "BatchNorm1d", "Tanh", "Dropout", "Linear"]
    assert [m.net[1].p, m.net[5].p] == [0.1, 0.3]
    assert count_parameters(m) == 6 * 5 + bn(5) + 5 * 2            # no biases


def test_papers_mlps_use_the_activation_they_state():
    # Jastrzebski et al. §3: "4-layer batch-normalized ReLU MLPs": Linear -> BN -> ReLU
    m = build_model("jastrzebski-mlp", (1, 28, 28), 10)
    assert [type(x).__name__ for x in m.net] == ["Flatten"] + [
        "Linear", "BatchNorm1d", "ReLU"] * 3 + ["Linear"]
    # Zhu et al. Suppl. A: ReLU by default; the activation option is honoured
    tanh = build_model("zhu-mlp-1-6-6-6-1", (1,), 1, activation="tanh")
    assert sum(isinstance(x, nn.Tanh) for x in tanh.modules()) == 3
    assert not any(isinstance(x, nn.ReLU) for x in tanh.modules())


def test_resnet_blocks_are_he_et_als_residual_units():
    # He et al. 2016, Fig. 2 and Sec. 3: y = ReLU(F(x) + x), F = BN(W2 ReLU(BN(W1 x)));
    # option A on down-sampling: the identity taken with a stride of 2, extra channels zero
    torch.manual_seed(0)
    net = build_model("resnet-56", (3, 8, 8), 10, depth=8).double().eval()
    bns = (m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    for seed, m in enumerate(bns):                     # non-trivial statistics and weights
        random_eval_batchnorm(m, seed)
    with torch.no_grad():
        same, down = net.blocks[0], net.blocks[1]           # 16 -> 16; 16 -> 32, stride 2

        def eval_bn(b, h):
            return (h - b.running_mean[:, None, None]) / (b.running_var[:, None, None]
                                                          + b.eps).sqrt() \
                * b.weight[:, None, None] + b.bias[:, None, None]
        x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
        h = F.relu(eval_bn(same.bn1, F.conv2d(x, same.conv1.weight, padding=1)))
        want = F.relu(eval_bn(same.bn2, F.conv2d(h, same.conv2.weight, padding=1)) + x)
        torch.testing.assert_close(same(x), want)
        h = F.relu(eval_bn(down.bn1, F.conv2d(x, down.conv1.weight, stride=2, padding=1)))
        r = eval_bn(down.bn2, F.conv2d(h, down.conv2.weight, padding=1))
        short = down._shortcut(x)
        torch.testing.assert_close(down(x), F.relu(r + short))
        # x's 16 channels, in order, at every other pixel; which 16 of the 32 the paper
        # does not say (ours: 8 zero channels on either side)
        live = [c for c in range(32) if short[:, c].abs().sum() > 0]
        assert len(live) == 16 and live == list(range(live[0], live[0] + 16))
        torch.testing.assert_close(short[:, live], x[:, :, ::2, ::2])
    # the feature maps of the three stages are 32, 16 and 8 pixels on CIFAR (Sec. 4.2)
    seen = []
    net = build_model("resnet-56", (3, 32, 32), 10, depth=8)
    for block in net.blocks:
        block.register_forward_hook(lambda m, a, o: seen.append(tuple(o.shape[1:])))
    net.eval()(torch.zeros(1, 3, 32, 32))
    assert seen == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    with pytest.raises(UserError, match="6n\\+2"):
        build_model("resnet-56", (3, 32, 32), 10, depth=2)     # n = 0: no residual block


def test_resnet_convolutions_have_he_initialisation():
    # N(0, 2 / (k^2 c_out)) (He et al. 2015's fan-out form, as torchvision); the stem's
    # fan-in form 2/27 would be 5.3x larger
    torch.manual_seed(0)
    net = build_model("resnet-56", (3, 32, 32), 10)
    for conv_ in (net.stem[0], net.blocks[-1].conv2):
        c_out = conv_.out_channels
        assert conv_.weight.var().item() == pytest.approx(2 / (9 * c_out), rel=0.15)


def test_vgg11_is_configuration_a():
    # Simonyan & Zisserman, Table 1, column A: conv3-64, maxpool, conv3-128, maxpool,
    # conv3-256 x 2, maxpool, conv3-512 x 2, maxpool, conv3-512 x 2, maxpool (2x2, stride 2)
    net = build_model("vgg-11", (3, 32, 32), 10, batchnorm=False)
    seq = [x.out_channels if isinstance(x, nn.Conv2d) else "M" for x in net.features
           if isinstance(x, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))]
    assert seq == [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
    pools = [x for x in net.features if isinstance(x, nn.MaxPool2d)]
    assert len(pools) == 5 and all(p.kernel_size == p.stride == 2 for p in pools)
