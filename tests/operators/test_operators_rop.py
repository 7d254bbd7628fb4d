"""Hessian- and Gauss–Newton-vector products by the hand-written R-op (``operators/rop.py``)
against dense float64 matrices: convolutions, pooling, eval-mode batch norm, activations with
σ'' ≠ 0, frozen and shared weights, loaders, and the closed-form cross-entropy head against
autograd's."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.operators import GGNOperator, HessianOperator
from sgdlab.operators.rop import SequentialHVP
from sgdlab.operators.taylor import cross_entropy_probabilities, data_columns
from sgdlab.testing import (assert_rop_products_match_dense, dense_hessian_reference,
                            ggn_reference, random_eval_batchnorm, relu_chains_with_ties,
                            tiny_images)

pytestmark = pytest.mark.usefixtures("one_thread")


def _nets():
    torch.manual_seed(0)
    yield "conv-relu-maxpool-tanh", nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 2),
        nn.Tanh(), nn.Flatten(), nn.Linear(16, 3)), tiny_images()
    yield "stride-bn-softplus-avgpool", nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False),
        random_eval_batchnorm(nn.BatchNorm2d(4), 1), nn.Softplus(),
        nn.MaxPool2d(2, stride=1), nn.Conv2d(4, 3, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(3, 3)), tiny_images()
    yield "bn-no-affine-dilated", nn.Sequential(
        nn.Conv2d(2, 3, 3, dilation=2, padding=2),
        random_eval_batchnorm(nn.BatchNorm2d(3, affine=False), 2),
        nn.GELU(), nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(27, 3)).eval(), \
        tiny_images()
    # a chain that starts the network with its first weighted layer (batch norm), an inplace
    # activation inside a chain, overlapping padded windows after a tanh chain
    yield "bn-first-inplace-chain", nn.Sequential(
        random_eval_batchnorm(nn.BatchNorm2d(2), 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(2, 3, 3, padding=1), random_eval_batchnorm(nn.BatchNorm2d(3), 4), nn.Tanh(),
        nn.MaxPool2d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(27, 3)), tiny_images()
    # grouped and depthwise-multiplier convolutions, string paddings
    yield "grouped-same-valid", nn.Sequential(
        nn.Conv2d(2, 4, 3, padding="same", groups=2), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 2, groups=4, padding="valid"), nn.ReLU(), nn.Flatten(),
        nn.Linear(32, 3)), tiny_images()
    # one input channel at stride 1: products against the data's cached patches
    yield "one-channel-patches", nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=2, dilation=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(27, 3)), tiny_images(channels=1)
    yield "one-channel-same-patches", nn.Sequential(
        nn.Conv2d(1, 3, 3, padding="same", dilation=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(27, 3)), tiny_images(channels=1)
    # ReLU chains pooled before their ReLUs: windows tied at positive and negative values
    yield "relu-chains-ties", relu_chains_with_ties(1, 8), tiny_images(channels=1, size=8)
    g = torch.Generator().manual_seed(1)
    yield "conv1d-elu", nn.Sequential(
        nn.Conv1d(2, 3, 3, stride=2), nn.ELU(), nn.MaxPool1d(2), nn.Flatten(),
        nn.Linear(6, 3)), (torch.randn(5, 2, 11, generator=g, dtype=torch.float64),
                           torch.randint(0, 3, (5,), generator=g))
    yield "linear-on-sequences", nn.Sequential(
        nn.Linear(3, 4), nn.Tanh(), nn.Flatten(), nn.Linear(20, 3)), \
        (torch.randn(6, 5, 3, generator=g, dtype=torch.float64),
         torch.randint(0, 3, (6,), generator=g))
    # data with all-zero columns: the first linear layer's GEMMs drop them (data_columns)
    x = torch.randn(7, 2, 3, generator=g, dtype=torch.float64)
    x[:, 0, 1] = x[:, 1, 0] = 0
    yield "linear-data-zero-columns", nn.Sequential(
        nn.Flatten(), nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(),
        nn.Linear(4, 3)), (x, torch.randint(0, 3, (7,), generator=g))
    yield "mlp-tanh-nested", nn.Sequential(
        nn.Linear(4, 5), nn.Tanh(), nn.Sequential(nn.Linear(5, 5), nn.Sigmoid()),
        nn.Linear(5, 3)), (torch.randn(7, 4, generator=g, dtype=torch.float64),
                           torch.randint(0, 3, (7,), generator=g))
    # activations in place other than ReLU: σ', σ'' taken on a copy of their input
    yield "mlp-in-place-activations", nn.Sequential(
        nn.Linear(4, 5), nn.LeakyReLU(0.2, inplace=True), nn.Linear(5, 5),
        nn.ELU(0.5, inplace=True), nn.Linear(5, 5), nn.Hardtanh(-0.5, 0.5, inplace=True),
        nn.Linear(5, 3)), (torch.randn(7, 4, generator=g, dtype=torch.float64),
                           torch.randint(0, 3, (7,), generator=g))


@pytest.mark.parametrize("name,model,data", list(_nets()), ids=[n for n, *_ in _nets()])
def test_rop_products_match_dense_hessian(name, model, data):
    """Hessian and Gauss–Newton products (the same passes without the terms in the primal
    gradients), one batch and a loader, cross-entropy in closed form and MSE through
    autograd's output Hessian."""
    if name == "linear-data-zero-columns":     # the path under test is taken
        assert data_columns(model[1], data[0].flatten(1)) is not None
    assert_rop_products_match_dense(model.double(), data, SequentialHVP, columns=4)


def test_frozen_shared_weights_and_cross_entropy_variants():
    torch.manual_seed(2)
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), shared, nn.Softplus(), shared,
                          nn.Linear(4, 3)).double()
    model[0].weight.requires_grad_(False)     # only its bias moves
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    d = sum(p.numel() for p in model.parameters() if p.requires_grad)
    v = torch.randn(d, 3, dtype=torch.float64, generator=g)
    y_ignored = y.clone()
    y_ignored[0] = -100
    weights = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    for loss_fn, target in ((F.cross_entropy, y), (nn.CrossEntropyLoss(), y_ignored),
                            (nn.CrossEntropyLoss(weight=weights), y),
                            (nn.CrossEntropyLoss(label_smoothing=0.1), y)):
        op = HessianOperator(model, loss_fn, (x, target))
        assert op._rop is not None
        torch.testing.assert_close(op.matmat(v),
                                   dense_hessian_reference(model, loss_fn, (x, target)) @ v)
    o = torch.randn(8, 3, dtype=torch.float64)
    assert cross_entropy_probabilities(nn.CrossEntropyLoss(), o, y) is not None
    assert cross_entropy_probabilities(nn.CrossEntropyLoss(), o, y_ignored) is None
    assert cross_entropy_probabilities(nn.CrossEntropyLoss(weight=weights), o, y) is None
    assert cross_entropy_probabilities(nn.CrossEntropyLoss(reduction="sum"), o, y) is None


def test_frozen_first_convolution():
    """The data's cached patches serve the first convolution only; with that layer frozen the
    second convolution's products go through its own input."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2), nn.ReLU(), nn.Conv2d(3, 4, 2),
                          nn.Flatten(), nn.Linear(16, 3)).double()
    model[0].requires_grad_(False)
    data, loss_fn = tiny_images(size=7), nn.CrossEntropyLoss()
    op = HessianOperator(model, loss_fn, data)
    v = torch.randn(op.shape[0], 3, dtype=torch.float64)
    h = dense_hessian_reference(model, loss_fn, data)
    torch.testing.assert_close(op.matmat(v), h @ v)
    torch.testing.assert_close(op.quadratic_forms(v), (v * (h @ v)).sum(0))


def test_products_follow_an_optimizer_step():
    """The cached activations are remade when a parameter changed in place: after an SGD step
    products and Taylor forms are those of the Hessian at the new parameters."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2), nn.Tanh(), nn.Flatten(),
                          nn.Linear(12, 3)).double()
    data, loss_fn = tiny_images(size=6), nn.CrossEntropyLoss()
    ops = HessianOperator(model, loss_fn, data), GGNOperator(model, loss_fn, data)
    v = torch.randn(ops[0].shape[0], 2, dtype=torch.float64)
    for op in ops:
        op.matmat(v), op.quadratic_forms(v)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.zero_grad()
    loss_fn(model(data[0]), data[1]).backward()
    opt.step()
    h, g = dense_hessian_reference(model, loss_fn, data), ggn_reference(model, loss_fn, data)
    for op, ref in zip(ops, (h, g)):
        torch.testing.assert_close(op.matmat(v), ref @ v)
        torch.testing.assert_close(op.quadratic_forms(v), (v * (ref @ v)).sum(0))


@pytest.mark.parametrize("rop", [True, False])
def test_products_follow_new_running_statistics(rop):
    """An eval-mode batch norm's kept activations read its running statistics: after they
    were recomputed (no parameter changed) the products were still the old statistics'
    (0.54 off the new Hessian here, by the R-op and by the kept gradient graph). The
    buffers' version counters now count with the parameters'."""
    from sgdlab.measure import recompute_bn_statistics

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), random_eval_batchnorm(nn.BatchNorm1d(4), 3),
                          nn.Tanh(), nn.Linear(4, 2)).double().eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (6,),
                                                                             generator=g)
    loss_fn = nn.CrossEntropyLoss()
    ops = (HessianOperator(model, loss_fn, (x, y), rop=rop, taylor=rop),
           GGNOperator(model, loss_fn, (x, y), rop=rop, taylor=rop))
    v = torch.randn(ops[0].shape[0], 2, dtype=torch.float64, generator=g)
    for op in ops:
        op.matmat(v), op.quadratic_forms(v)
    recompute_bn_statistics(model, (3 * torch.randn(20, 3, generator=g, dtype=torch.float64),
                                    torch.zeros(20)))
    for op, ref in zip(ops, (dense_hessian_reference, ggn_reference)):
        a = ref(model, loss_fn, (x, y))
        torch.testing.assert_close(op.matmat(v), a @ v)
        torch.testing.assert_close(op.quadratic_forms(v), (v * (a @ v)).sum(0))


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_declined_models_keep_autograd_products():
    params = lambda m: dict(m.named_parameters())  # noqa: E731
    # "same" padding of an even kernel is asymmetric; reflect padding: not a Taylor layer
    same = nn.Sequential(nn.Conv2d(2, 4, 2, padding="same"), nn.Flatten())
    reflect = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"), nn.Flatten())
    for model in (same, reflect):
        assert SequentialHVP.build(model, params(model)) is None
    model = nn.Sequential(nn.Conv2d(2, 4, 2, padding="same"), nn.ReLU(), nn.Flatten(),
                          nn.Linear(144, 3)).double()
    data, loss_fn = tiny_images(), nn.CrossEntropyLoss()
    op = HessianOperator(model, loss_fn, data)
    assert op._rop is None and op._cached_graph is not None
    v = torch.randn(op.shape[0], 2, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(v), dense_hessian_reference(model, loss_fn, data) @ v)
    assert HessianOperator(nn.Sequential(nn.Linear(3, 2)).double(), loss_fn,
                           (torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1])),
                           rop=False)._rop is None


@pytest.mark.parametrize("opts", [((3, 3), (1, 1), (1, 1), (1, 1)),
                                  ((1, 1), (1, 1), (0, 0), (1, 1)),
                                  ((2, 3), (2, 1), (0, 2), (2, 1))])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_conv_patches_equal_unfold(opts, layout):
    """The strided-view im2col equals F.unfold for any input strides (views, channels-last)."""
    from sgdlab.operators.taylor import conv_patches

    x = torch.randn(3, 4, 9, 8, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = x[:, 1:3, :, 1:]
    ks, st, pad, dil = opts
    torch.testing.assert_close(conv_patches(x, *opts), F.unfold(x, ks, dil, pad, st),
                               rtol=0, atol=0)


@pytest.mark.parametrize("layer", [
    nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 6, (3, 1), padding="same", groups=2),
    nn.Conv2d(4, 6, 3, padding=2, dilation=2), nn.Conv2d(4, 6, 3), nn.Conv1d(4, 2, 5, padding=1),
    nn.Conv3d(2, 3, 2, padding=1)], ids=["same", "groups", "dilation", "valid", "1d", "3d"])
def test_conv_input_gradient_as_forward_convolution(layer):
    """The transpose of a stride-1 convolution as a forward convolution with flipped filters
    equals torch's input gradient; padding beyond dilation·(k − 1) declines."""
    from sgdlab.operators.rop import _CONV_INPUT, _conv_options, conv_input_by_forward

    layer = layer.double()
    x = torch.randn(3, layer.in_channels, *[6] * (layer.weight.dim() - 2), dtype=torch.float64)
    t = torch.randn_like(layer(x))
    ref = _CONV_INPUT[type(layer)](x.shape, layer.weight, t, *_conv_options(layer))
    torch.testing.assert_close(conv_input_by_forward(layer, t), ref)
    assert conv_input_by_forward(nn.Conv2d(2, 2, 1, padding=1), t[:, :2]) is None


def test_patch_weight_terms_in_sample_chunks():
    """Σ_n ġ_n P_nᵀ is the convolution weight gradient, also when summed in sample chunks."""
    from sgdlab.operators.rop import _patch_weight_terms
    from sgdlab.operators.taylor import conv_patches

    x, _ = tiny_images(n=5, channels=2, size=7)
    opts = ((3, 2), (2, 1), (1, 0), (1, 2))
    p = conv_patches(x, *opts)
    gd = torch.randn(3, 5, 4, 4, 5, dtype=torch.float64)        # k = 3 probes
    ref = torch.stack([torch.nn.grad.conv2d_weight(x, (4, 2, 3, 2), t, *opts[1:])
                       for t in gd])
    for budget in (64 * 2**20, 1):
        torch.testing.assert_close(_patch_weight_terms(gd, p, budget).reshape(ref.shape), ref)
    torch.testing.assert_close(p, F.unfold(x, *[opts[0], opts[3], opts[2], opts[1]]))


def test_pooled_patches_are_the_patches_at_the_argmax():
    """pooled_patches[c, :, n, i, j] is the patch column of the data at the position that the
    max pooling picked for sample n, channel c and output (i, j)."""
    from sgdlab.operators.taylor import conv_patches, pooled_patches

    x, _ = tiny_images(n=3, channels=2, size=8)
    opts = ((3, 3), (1, 1), (1, 1), (1, 1))
    p = conv_patches(x, *opts)                                         # (N, 18, 64)
    z = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    _, idx = F.max_pool2d(z, 3, stride=2, padding=1, return_indices=True)   # overlapping
    got = pooled_patches(p, idx)
    assert got.shape == (4, 18, 3, 4, 4)
    for n in range(3):
        for c in range(4):
            for i in range(4):
                for j in range(4):
                    torch.testing.assert_close(got[c, :, n, i, j], p[n, :, idx[n, c, i, j]],
                                               rtol=0, atol=0)


def _first_conv_then_pooling():
    torch.manual_seed(5)
    yield "relu-chain", nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 2, 3),
        nn.Flatten(), nn.Linear(8, 3)), tiny_images(channels=1, size=8)
    # a chain through batch norm and tanh (σ'' ≠ 0) into overlapping windows
    yield "bn-tanh-overlapping", nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), random_eval_batchnorm(nn.BatchNorm2d(3), 5), nn.Tanh(),
        nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(), nn.Linear(27, 3)), \
        tiny_images(channels=1)
    # a strided convolution on two channels straight into the pooling, the ReLU after it
    yield "strided-bare-pooling", nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        nn.Linear(12, 3)), tiny_images(size=8)
    model = nn.Sequential(nn.Conv2d(1, 3, 2), nn.ELU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(27, 3))
    model[0].weight.requires_grad_(False)             # only its bias moves
    yield "frozen-weight-bias-moves", model, tiny_images(channels=1, size=7)


@pytest.mark.parametrize("name,model,data", list(_first_conv_then_pooling()),
                         ids=[n for n, *_ in _first_conv_then_pooling()])
@pytest.mark.parametrize("budget", ["default", "none"])
def test_first_convolution_at_the_pooled_argmax(name, model, data, budget, monkeypatch):
    """An operator's kept batch makes the first convolution's tangents and adjoints at its max
    pooling's argmax from the data's patches there (no full-size tangent, gather or scatter):
    the Hessian and GGN products, blocks and quadratic forms equal the dense matrices, and so
    they do with the pooled patches over budget (the full-size path)."""
    from sgdlab.operators import taylor

    if budget == "none":
        monkeypatch.setattr(taylor, "POOLED_PATCH_BUDGET", 0)
    model, loss_fn = model.double(), nn.CrossEntropyLoss()
    for operator, reference in ((HessianOperator, dense_hessian_reference),
                                (GGNOperator, ggn_reference)):
        a = reference(model, loss_fn, data)
        op = operator(model, loss_fn, data)
        v = torch.randn(op.shape[0], 4, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(op.matvec(v[:, 0]), a @ v[:, 0])
        kept = op._taylor_cache[1][1]["pooled_patches"][1]
        assert (kept is not None) == (budget == "default")
        torch.testing.assert_close(op.matmat(v), a @ v)
        torch.testing.assert_close(op.quadratic_forms(v), (v * (a @ v)).sum(0))
