"""Hessian- and Gauss–Newton-vector products by the R-op over a traced graph
(``operators/graph_rop.py``) against dense float64 matrices: residual blocks (identity,
sliced-and-padded and projected shortcuts, in-place sums), functional activations with σ'' ≠ 0,
reshapes, constant factors, shared activation modules; the declined graphs keep autograd's
exact products."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.operators import GGNOperator, HessianOperator
from sgdlab.operators.graph_rop import GraphHVP
from sgdlab.operators.taylor import data_columns
from sgdlab.testing import (assert_rop_products_match_dense, dense_hessian_reference,
                            ggn_reference, random_eval_batchnorm, tiny_images)

pytestmark = pytest.mark.usefixtures("one_thread")


class _Block(nn.Module):
    """A residual block: conv-BN-relu-conv-BN + shortcut, then relu."""

    def __init__(self, c_in, c_out, stride, shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = random_eval_batchnorm(nn.BatchNorm2d(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bn2 = random_eval_batchnorm(nn.BatchNorm2d(c_out), c_out + 1)
        self.shortcut, self.stride, self.pad = shortcut, stride, c_out - c_in
        self.proj = nn.Conv2d(c_in, c_out, 1, stride=stride) if shortcut == "proj" else None
        self.relu = nn.ReLU(inplace=True)          # one module, called twice

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut == "proj":
            s = self.proj(x)
        else:                                      # option A: subsample and zero-pad
            s = x[:, :, ::self.stride, ::self.stride]
            s = F.pad(s, (0, 0, 0, 0, 0, self.pad))
        out += s
        return self.relu(out)


class _ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 3, 3, padding=1)
        self.a = _Block(3, 4, 2, "slice")
        self.b = _Block(4, 4, 1, "proj")
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.b(self.a(F.softplus(self.stem(x))))
        h = F.adaptive_avg_pool2d(h, 1)
        return self.fc(h.view(h.size(0), -1) * 0.5)


class _Functional(nn.Module):
    """Functional activations (σ'' ≠ 0), functional (overlapping) and module max pooling,
    padding with a value, a division and offsets, a sum of two branches with broadcasting, and
    an untrained layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(48, 5), nn.Linear(48, 1)
        self.frozen = nn.Linear(5, 5)
        self.out = nn.Linear(5, 3)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        h = F.max_pool2d(torch.tanh(self.conv(x)), 3, stride=1, padding=1)
        h = F.pad(self.pool(h), (1, 0, 0, 1), value=0.5).flatten(1)
        a = 1.0 - F.leaky_relu(self.fc1(h), 0.1) / 2 + 1.0
        b = torch.sigmoid(self.fc2(h))              # (N, 1): broadcast against (N, 5)
        return self.out(F.gelu(self.frozen(a + b)))


class _TwoHeads(nn.Module):
    """Two linear layers on the (flattened) data, one without bias, summed."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(72, 4), nn.Linear(72, 4, bias=False)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        h = x.flatten(1)
        return self.out(torch.tanh(self.a(h)) + F.relu(self.b(h)))


class _BatchStatistics(nn.Module):
    """Sums with statistics over the batch: a scalar (the mean of every value) and a row (the
    mean over samples) broadcast against (N, 3): the tangents of a sum broadcast as its inputs
    do. Three hidden units as three probe columns: a scalar's (k,) tangent must not be added
    along the units."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(72, 3), nn.Linear(3, 3)

    def forward(self, x):
        h = self.fc(x.flatten(1))
        return self.out(torch.tanh(h + h.mean() + h.mean(0, keepdim=True)))


def _zero_column_images():
    """tiny_images with a quarter of the pixels zero in every image (data_columns drops them)."""
    x, y = tiny_images()
    x[:, :, :, :2] = 0
    return x, y


class _SilentUnits(nn.Module):
    """Six of eight hidden units with zero weights and bias: tanh(0) = 0 in every sample, so
    the read-out's input has all-zero columns, but not their tangents (along those weights),
    which the products keep. Ops in place on tensors read once: a leaky ReLU (slope 0.2 at 0:
    the silent units keep their tangents) and an offset."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(9, 8), nn.Linear(8, 3)
        with torch.no_grad():
            self.fc.weight[2:] = 0
            self.fc.bias[2:] = 0

    def forward(self, x):
        out = self.out(torch.tanh(F.leaky_relu(self.fc(x.flatten(1)), 0.2, inplace=True)))
        out += 0.5
        return out


class _OffsetInPlace(nn.Module):
    """``h += 0.5`` between two layers: the read-out reads the offset tensor itself, which
    making the offset's vector-Jacobian product must leave as it is."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(9, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = F.leaky_relu(self.fc(x.flatten(1)), 0.1)
        h += 0.5
        return self.out(h)


def _nets():
    torch.manual_seed(0)
    yield "resnet-slice-proj", _ResNet().eval(), tiny_images()
    yield "functional-broadcast-frozen", _Functional(), tiny_images()
    yield "linear-data-zero-columns", _TwoHeads(), _zero_column_images()
    yield "hidden-zero-columns", _SilentUnits(), tiny_images(channels=1, size=3)
    yield "offset-in-place", _OffsetInPlace(), tiny_images(channels=1, size=3)


@pytest.mark.parametrize("name,model,data", list(_nets()), ids=[n for n, *_ in _nets()])
def test_graph_rop_products_match_dense(name, model, data):
    model = model.double()
    if name == "linear-data-zero-columns":     # the path under test is taken
        assert data_columns(model.a, data[0].flatten(1)) is not None
    if name == "hidden-zero-columns":          # columns a layer on the data would drop
        with torch.no_grad():
            assert data_columns(model.out, torch.tanh(model.fc(data[0].flatten(1)))) is not None
    assert_rop_products_match_dense(model, data, GraphHVP)


def test_batch_statistics_broadcast_in_block_products():
    """A sum with batch statistics (one batch: its loss is not a sum over batches, so the
    loader check of the other nets does not apply): blocks of 3 columns, products and
    Taylor-mode forms, equal the dense matrices."""
    torch.manual_seed(0)
    model, data = _BatchStatistics().double(), tiny_images()
    v = torch.randn(sum(p.numel() for p in model.parameters()), 3, dtype=torch.float64)
    for operator, reference in ((HessianOperator, dense_hessian_reference),
                                (GGNOperator, ggn_reference)):
        a = reference(model, nn.CrossEntropyLoss(), data)
        op = operator(model, nn.CrossEntropyLoss(), data)
        assert isinstance(op._rop, GraphHVP)
        torch.testing.assert_close(op.matmat(v), a @ v)
        torch.testing.assert_close(op.quadratic_forms(v), (v * (a @ v)).sum(0))


def test_lab_resnets_match_autograd_products():
    """The lab's CIFAR ResNet (option A and B shortcuts) and pre-activation wide ResNet: the
    traced R-op and Taylor-mode forms equal autograd's double backward (both exact) in
    float64."""
    from sgdlab.models.registry import build_model

    torch.manual_seed(1)
    x, y = tiny_images(n=3, channels=3, size=8)
    for name, kw in (("resnet-56", dict(depth=8, width=2, shortcut="A")),
                     ("resnet-56", dict(depth=8, width=2, shortcut="B")),
                     ("wide-resnet", dict(depth=10, widen=1))):
        model = build_model(name, (3, 8, 8), 3, **kw).double()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                random_eval_batchnorm(m, 5)
        model.eval()
        op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
        assert isinstance(op._rop, GraphHVP)
        v = torch.randn(op.shape[0], 2, dtype=torch.float64)
        ref = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), rop=False, taylor=False)
        hv = ref.matmat(v)
        torch.testing.assert_close(op.matmat(v), hv)
        torch.testing.assert_close(op.quadratic_forms(v), (v * hv).sum(0))   # Taylor mode
        gref = GGNOperator(model, nn.CrossEntropyLoss(), (x, y), rop=False)
        torch.testing.assert_close(GGNOperator(model, nn.CrossEntropyLoss(), (x, y)).matmat(v),
                                   gref.matmat(v))


class _Declined(nn.Module):
    """One linear layer and a forward the graph R-op does not take."""

    def __init__(self, body):
        super().__init__()
        self.fc, self.body = nn.Linear(4, 3), body

    def forward(self, x):
        return self.body(self.fc, x)


_DECLINED = {
    "product of two tensors": lambda fc, x: fc(x) * fc(x),
    "one tensor twice in a product": lambda fc, x: (lambda h: h * h)(fc(x)),
    "one tensor twice in a sum": lambda fc, x: (lambda h: torch.tanh(h + h))(fc(x)),
    "control flow on values": lambda fc, x: fc(x) if x.sum() > 0 else -fc(x),
    "parameter outside its module": lambda fc, x: F.linear(x, fc.weight),
    "detached copy": lambda fc, x: fc(x) + fc(x).data,
    "inplace op on a tensor read again": lambda fc, x: (
        lambda h: F.relu(h, inplace=True) + h)(fc(x)),
    "tensor in a denominator": lambda fc, x: 1.0 / fc(x),
    "max pooling with indices": lambda fc, x: F.max_pool1d(
        fc(x)[:, None], 3, return_indices=True)[0].flatten(1),
    "max pooling with indices by position": lambda fc, x: F.max_pool1d(
        fc(x)[:, None], 3, 3, 0, 1, False, True)[0].flatten(1),
}


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, shift):
        return self.fc(x) + shift


class _InPlaceModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act = nn.Linear(4, 3), nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.fc(x)
        return self.act(h) + h


def _hooked():
    model = _Declined(lambda fc, x: fc(x))
    model.fc.register_forward_hook(lambda m, args, out: 2 * out)
    return model


class _Unused(nn.Module):
    """A trained layer the forward never calls: its parameters are no graph module's."""

    def __init__(self):
        super().__init__()
        self.fc, self.spare = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


class _Unreached(nn.Module):
    """A trained layer whose output reaches the loss only through its size."""

    def __init__(self):
        super().__init__()
        self.fc, self.head = nn.Linear(4, 3), nn.Linear(4, 3)
        self.head.requires_grad_(False)

    def forward(self, x):
        return self.head(x) * self.fc(x).size(1)


def test_a_trained_layer_the_loss_does_not_depend_on_has_zero_products():
    torch.manual_seed(0)
    model = _Unreached().double()
    data = (torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1]))
    for operator in (HessianOperator, GGNOperator):
        op = operator(model, nn.CrossEntropyLoss(), data)
        assert isinstance(op._rop, GraphHVP)
        v = torch.randn(op.shape[0], 2, dtype=torch.float64)
        assert torch.equal(op.matmat(v), torch.zeros_like(v))
        assert torch.equal(op.quadratic_forms(v), torch.zeros(2, dtype=torch.float64))


def test_declined_graphs_keep_autograd_products():
    params = lambda m: dict(m.named_parameters())  # noqa: E731
    train_bn = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    for why, model in [(k, _Declined(b)) for k, b in _DECLINED.items()] + [
            ("bn", train_bn), ("two inputs", _TwoInputs()),
            ("inplace module on a tensor read again", _InPlaceModule()),
            ("forward hook", _hooked()), ("parameters of no module in the graph", _Unused())]:
        assert GraphHVP.build(model, params(model)) is None, why
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(5, 4, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (5,), generator=g))
    for why in ("product of two tensors", "one tensor twice in a product",
                "one tensor twice in a sum"):
        model = _Declined(_DECLINED[why]).double()
        op = HessianOperator(model, nn.CrossEntropyLoss(), data)
        assert op._rop is None and op._taylor is None, why
        v = torch.randn(op.shape[0], 2, dtype=torch.float64)
        a = dense_hessian_reference(model, nn.CrossEntropyLoss(), data)
        torch.testing.assert_close(op.matmat(v), a @ v)
        torch.testing.assert_close(op.quadratic_forms(v), (v * (a @ v)).sum(0))


def test_probe_width_is_the_weighted_layers_outputs_per_sample():
    """The memory plan's width: values per sample of the weighted layers' outputs (4 + 4 + 3
    here), after a forward preparation."""
    torch.manual_seed(0)
    model = _TwoHeads().double()
    graph = GraphHVP.build(model, dict(model.named_parameters()))
    x, y = tiny_images()
    graph.forward(x, y, nn.CrossEntropyLoss())
    assert graph.width == 11


class _BroadcastSum(nn.Module):
    """The data plus one trained value per sample, broadcast over the features, then reshaped:
    the sum's tangent (from the small input alone) has the sum's full shape."""

    def __init__(self):
        super().__init__()
        self.a, self.fc = nn.Linear(6, 1), nn.Linear(6, 3)

    def forward(self, x):
        s = (x + self.a(x)).view(-1, 2, 3)
        return self.fc(torch.tanh(s).flatten(1))


def test_a_broadcast_sum_of_data_and_a_trained_value_matches_dense():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    data = (torch.randn(5, 6, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (5,), generator=g))
    assert_rop_products_match_dense(_BroadcastSum().double(), data, GraphHVP)


class _OneOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(x) * 2.0


def test_probe_width_of_one_value_per_sample_is_one():
    model = _OneOutput().double()
    graph = GraphHVP.build(model, dict(model.named_parameters()))
    x = torch.randn(3, 4, dtype=torch.float64)
    graph.forward(x, torch.zeros(3, 1, dtype=torch.float64), nn.MSELoss())
    assert graph.width == 1
