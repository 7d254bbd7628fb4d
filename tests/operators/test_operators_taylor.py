"""Taylor-mode quadratic forms (Hutchinson's samples vᵀ A v without A v) for conv nets, pooling
and eval-mode batch norm, against dense float64 Hessians and GGNs."""
import pytest
import torch
from torch import nn

from sgdlab.operators import GGNOperator, HessianOperator
from sgdlab.operators.taylor import SequentialTaylor, max_pool_with_indices
from sgdlab.testing import (dense_hessian_reference, ggn_reference, random_eval_batchnorm,
                            tiny_images)

pytestmark = pytest.mark.usefixtures("one_thread")


def _nets():
    torch.manual_seed(0)
    yield "conv-relu-maxpool", nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 2),
        nn.Tanh(), nn.Flatten(), nn.Linear(16, 3))
    yield "grouped-stride-avgpool-bn", nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False),
        random_eval_batchnorm(nn.BatchNorm2d(4), 1),
        nn.Softplus(), nn.Conv2d(4, 4, 2, groups=2), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4, 3))
    yield "bn-no-affine-dilated", nn.Sequential(
        nn.Conv2d(2, 3, 3, dilation=2, padding=2),
        random_eval_batchnorm(nn.BatchNorm2d(3, affine=False), 2),
        nn.GELU(), nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(27, 3)).eval()


@pytest.mark.parametrize("name,model", list(_nets()), ids=[n for n, _ in _nets()])
def test_conv_taylor_quadratic_forms_match_dense(name, model):
    model = model.double()
    data, loss_fn = tiny_images(), nn.CrossEntropyLoss()
    d = sum(p.numel() for p in model.parameters())
    v = torch.randn(d, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    h = dense_hessian_reference(model, loss_fn, data)
    op = HessianOperator(model, loss_fn, data)
    assert op._taylor is not None
    torch.testing.assert_close(op.quadratic_forms(v), (v * (h @ v)).sum(0))
    # products (eval-mode batch norm as elementwise ops in the gradient graph) too
    torch.testing.assert_close(op.matmat(v), h @ v)
    g = ggn_reference(model, loss_fn, data)
    gop = GGNOperator(model, loss_fn, data)
    torch.testing.assert_close(gop.quadratic_forms(v), (v * (g @ v)).sum(0))
    torch.testing.assert_close(gop.matmat(v), g @ v)
    # a two-batch loader averages the batches' forms by size
    loader = [(data[0][:2], data[1][:2]), (data[0][2:], data[1][2:])]
    torch.testing.assert_close(HessianOperator(model, loss_fn, loader).quadratic_forms(v),
                               (v * (h @ v)).sum(0))


def test_frozen_weights_and_unsupported_layers():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3)).double()
    model[0].weight.requires_grad_(False)      # only the conv bias moves in the first layer
    data, loss_fn = tiny_images(), nn.CrossEntropyLoss()
    d = sum(p.numel() for p in model.parameters() if p.requires_grad)
    v = torch.randn(d, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = dense_hessian_reference(model, loss_fn, data)
    op = HessianOperator(model, loss_fn, data)
    assert op._taylor is not None
    torch.testing.assert_close(op.quadratic_forms(v), (v * (h @ v)).sum(0))
    params = lambda m: dict(m.named_parameters())  # noqa: E731
    bn_train = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten())
    assert SequentialTaylor.build(bn_train, params(bn_train)) is None     # mixes samples
    circ = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), nn.Flatten())
    assert SequentialTaylor.build(circ, params(circ)) is None
    drop = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    assert SequentialTaylor.build(drop, params(drop)) is None             # random in train mode
    assert SequentialTaylor.build(drop.eval(), params(drop)) is not None


@pytest.mark.parametrize("opts", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                  dict(kernel_size=2, stride=1, dilation=2),
                                  dict(kernel_size=3, stride=2, ceil_mode=True),
                                  dict(kernel_size=2, ceil_mode=True)])    # 9 -> 5, not 4
def test_max_pool_with_indices_matches_torch(opts):
    """The channels-last route gives torch's values and argmax, ties (ReLU zeros) and NaN
    included."""
    g = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(3, 4, 9, 9, generator=g))
    a[0, 0, :4] = 0.5
    a[1, 2, 1, 1] = a[1, 2, 2, 3] = float("nan")
    m = nn.MaxPool2d(**opts)
    out, idx = max_pool_with_indices(m, a)
    ref, ref_idx = nn.functional.max_pool2d(a, **opts, return_indices=True)
    assert out.is_contiguous() and idx.is_contiguous()
    torch.testing.assert_close(out, ref, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(idx, ref_idx)


def test_per_sample_relu_masks_are_made_in_the_layout_the_next_layer_records():
    """In the per-sample passes a pooled ReLU chain's masks come from the chain's output as the
    next layer records it (NCHW on CPU, the layout of the output gradients they multiply
    there; from the channels-last pooling they were channels-last), with the same values."""
    from sgdlab.operators.params import trainable_named_params

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16, 3))
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 3, (6,))
    taylor = SequentialTaylor.build(model, trainable_named_params(model))
    loss = nn.CrossEntropyLoss()
    ops = taylor.prepare(x, y, loss)[1]
    per_sample = taylor.prepare(x, y, loss, per_sample=True)[1]
    for i in (1, 2, 5):
        mask = per_sample["pooled", i][0]
        assert mask.is_contiguous()
        assert torch.equal(mask, ops["pooled", i][0])


def test_data_columns_keep_every_column_nonzero_in_some_sample():
    """The first linear layer drops only the columns of the data that are zero in every
    sample (MNIST's border pixels): a column zero in some samples only still counts for the
    others, in the forms and products against the dense Hessian and GGN."""
    from sgdlab.operators.taylor import data_columns

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 10, generator=g, dtype=torch.float64)
    x[:, :2] = 0            # zero in every sample: dropped
    x[:5, 2] = 0            # zero in five samples of eight: kept
    y = torch.randint(0, 3, (8,), generator=g)
    kept, a = data_columns(model[0], x)
    assert kept.tolist() == list(range(2, 10))
    assert torch.equal(a, x[:, 2:])
    loss_fn = nn.CrossEntropyLoss()
    v = torch.randn(59, 4, generator=g, dtype=torch.float64)
    h = dense_hessian_reference(model, loss_fn, (x, y))
    op = HessianOperator(model, loss_fn, (x, y))
    torch.testing.assert_close(op.quadratic_forms(v), (v * (h @ v)).sum(0))
    torch.testing.assert_close(op.matmat(v), h @ v)
    ggn = ggn_reference(model, loss_fn, (x, y))
    torch.testing.assert_close(GGNOperator(model, loss_fn, (x, y)).quadratic_forms(v),
                               (v * (ggn @ v)).sum(0))


@pytest.mark.parametrize("pre", [False, True])
def test_a_hook_on_an_inner_layer_makes_the_forward_mode_decline(pre):
    """The hand-written passes would skip a forward hook of a layer inside the Sequential
    (here one that doubles the layer's output, or its input): the forward mode declines and
    the forms come out of the model's own graph, against the dense Hessian (its functional
    call runs the hook)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    if pre:
        model[2].register_forward_pre_hook(lambda m, args: (2 * args[0],))
    else:
        model[0].register_forward_hook(lambda m, args, out: 2 * out)
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(5, 3, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1]))
    loss_fn = nn.CrossEntropyLoss()
    op = HessianOperator(model, loss_fn, data)
    v = torch.randn(31, 3, generator=g, dtype=torch.float64)
    h = dense_hessian_reference(model, loss_fn, data)
    torch.testing.assert_close(op.quadratic_forms(v), (v * (h @ v)).sum(0))
    assert op._taylor is None
