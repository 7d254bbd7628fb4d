"""Model-to-model interpolation: endpoints equal the two models (with and without batch norm),
interior points equal a direct evaluation, batch-norm statistics recomputed exactly."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sgdlab.measure.interpolation import evaluate, interpolate_models, recompute_bn_statistics
from sgdlab.operators.params import params_vector, set_params_vector
from sgdlab.testing import scalar_linear


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


def _pair(bn: bool):
    def make(seed):
        torch.manual_seed(seed)
        layers = [nn.Linear(4, 6)] + ([nn.BatchNorm1d(6)] if bn else []) + [
            nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)]
        m = nn.Sequential(*layers).double()
        if bn:
            m.train()
            with torch.no_grad():
                m(torch.randn(64, 4, dtype=torch.float64) * (1 + seed) + seed)
        return m
    return make(0), make(1)


def test_endpoints_and_midpoint_without_batchnorm():
    a, b = _pair(False)
    train, test = _data(40, 0), _data(20, 1)
    loss_fn = nn.CrossEntropyLoss()
    curve = interpolate_models(a, b, loss_fn, train, test, [-1.0, 0.0, 0.5, 1.0, 2.0])
    assert curve.bn_stats == "none"
    for i, m in ((1, a), (3, b)):
        assert curve.train_loss[i] == pytest.approx(evaluate(m, loss_fn, train)[0], rel=1e-12)
        assert (curve.test_loss[i], curve.test_acc[i]) == pytest.approx(evaluate(m, loss_fn, test))
    for i, al in ((0, -1.0), (2, 0.5), (4, 2.0)):
        m = copy.deepcopy(a)
        set_params_vector(m, (1 - al) * params_vector(a) + al * params_vector(b))
        m.eval()
        with torch.no_grad():
            out = m(train[0])
        assert curve.train_loss[i] == pytest.approx(float(loss_fn(out, train[1])), rel=1e-12)
        acc = float((out.argmax(1) == train[1]).double().mean())
        assert curve.train_acc[i] == pytest.approx(acc)
    assert a.training and b.training  # dropout flags of the inputs untouched


def test_endpoints_with_batchnorm_interpolated_and_recomputed_stats():
    a, b = _pair(True)
    sa, sb = copy.deepcopy(a.state_dict()), copy.deepcopy(b.state_dict())
    train, test = _data(50, 2), _data(30, 3)
    batches = [(train[0][:20], train[1][:20]), (train[0][20:], train[1][20:])]
    loss_fn = nn.CrossEntropyLoss()
    # interpolating the running statistics too reproduces the two models exactly
    c = interpolate_models(a, b, loss_fn, batches, test, [0.0, 1.0], bn_stats="interpolate")
    assert c.train_loss == pytest.approx([evaluate(m, loss_fn, batches)[0] for m in (a, b)],
                                         rel=1e-12)
    assert c.test_loss == pytest.approx([evaluate(m, loss_fn, test)[0] for m in (a, b)],
                                        rel=1e-12)
    # recomputed statistics: the endpoints equal each model after the same recomputation
    c = interpolate_models(a, b, loss_fn, batches, test, [0.0, 0.3, 1.0])
    assert c.bn_stats == "recompute"
    for i, m in ((0, a), (2, b)):
        ref = copy.deepcopy(m)
        recompute_bn_statistics(ref, batches)
        assert c.train_loss[i] == pytest.approx(evaluate(ref, loss_fn, batches)[0], rel=1e-12)
        assert c.test_acc[i] == pytest.approx(evaluate(ref, loss_fn, test)[1])
        assert c.train_loss[i] != pytest.approx(evaluate(m, loss_fn, batches)[0], rel=1e-6)
    # bn_data: the statistics come from other samples than the losses
    other = _data(30, 7)
    c = interpolate_models(a, b, loss_fn, batches, test, [0.0, 1.0], bn_data=other)
    for i, m in ((0, a), (1, b)):
        ref, own = copy.deepcopy(m), copy.deepcopy(m)
        recompute_bn_statistics(ref, other)
        recompute_bn_statistics(own, batches)
        assert c.train_loss[i] == pytest.approx(evaluate(ref, loss_fn, batches)[0], rel=1e-12)
        assert c.train_loss[i] != pytest.approx(evaluate(own, loss_fn, batches)[0], rel=1e-6)
    for m, s in ((a, sa), (b, sb)):  # inputs unchanged
        for k, v in m.state_dict().items():
            torch.testing.assert_close(v, s[k])
    with pytest.raises(ValueError, match="bn_stats"):
        interpolate_models(a, b, loss_fn, batches, bn_stats="ema")


@pytest.mark.parametrize("layerwise", [True, False])
def test_recomputed_statistics_follow_bn_layerwise(layerwise):
    # two stacked batch norms and two batches: one pass per layer and one pass in all differ
    def make(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 5),
                             nn.BatchNorm1d(5), nn.Linear(5, 3)).double()
    a, b = make(0), make(1)
    train = _data(40, 5)
    batches = [(train[0][:12], train[1][:12]), (train[0][12:], train[1][12:])]
    loss_fn = nn.CrossEntropyLoss()
    c = interpolate_models(a, b, loss_fn, batches, alphas=[0.0, 1.0], bn_layerwise=layerwise)
    for got, m in zip(c.train_loss, (a, b), strict=True):
        own, other = copy.deepcopy(m), copy.deepcopy(m)
        recompute_bn_statistics(own, batches, layerwise=layerwise)
        recompute_bn_statistics(other, batches, layerwise=not layerwise)
        assert got == pytest.approx(evaluate(own, loss_fn, batches)[0], rel=1e-12)
        assert got != pytest.approx(evaluate(other, loss_fn, batches)[0], rel=1e-6)


def _whole_set_statistics(bn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What torch's train mode stores from one batch of the whole set with momentum=1."""
    ref = copy.deepcopy(bn).train()
    ref.reset_running_stats()
    ref.momentum = 1.0
    with torch.no_grad():
        ref(x)
    return ref.running_mean, ref.running_var


@pytest.mark.parametrize("bn_type,shape", [
    (nn.BatchNorm1d, (3,)), (nn.BatchNorm1d, (3, 5)), (nn.BatchNorm2d, (3, 4, 2)),
    (nn.BatchNorm3d, (3, 2, 3, 2))])
@pytest.mark.parametrize("affine", [True, False])
def test_recompute_bn_statistics_are_the_whole_sets_for_any_batching(bn_type, shape, affine):
    # each batch's statistics were averaged with equal weights (momentum=None): batches of
    # 10 and 22 put the running mean 0.097 and the variance 0.47 off the data's (BatchNorm1d)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, *shape, generator=g, dtype=torch.float64) * 2 + 1
    x[:10] += 0.7                                       # the two batches differ in mean
    m = nn.Sequential(nn.Identity(), bn_type(3, affine=affine, momentum=0.1)).double()
    m.eval()
    y = torch.zeros(32)                                 # targets unused
    batches = [(x[:10], y[:10]), (x[:0], y[:0]), (x[10:], y[10:])]   # an empty one ignored
    recompute_bn_statistics(m, batches)
    mean, var = _whole_set_statistics(m[1], x)
    torch.testing.assert_close(m[1].running_mean, mean, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(m[1].running_var, var, rtol=1e-13, atol=1e-13)
    dims = [0] + list(range(2, x.dim()))
    torch.testing.assert_close(mean, x.mean(dims), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(var, x.var(dims, unbiased=True), rtol=1e-13, atol=1e-13)
    assert int(m[1].num_batches_tracked) == 2           # the non-empty batches
    assert m[1].momentum == 0.1 and not m.training and not m[1].training


def test_recompute_bn_statistics_restores_flags_and_leaves_untracked_layers_alone():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5),
                      nn.BatchNorm1d(4, track_running_stats=False)).double()
    m.train()
    m[2].eval()
    x = torch.randn(30, 3, dtype=torch.float64)
    recompute_bn_statistics(m, [(x[:7], x[:7, 0]), (x[7:], x[7:, 0])])
    with torch.no_grad():
        z = m[0](x)
    torch.testing.assert_close(m[1].running_mean, z.mean(0), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(m[1].running_var, z.var(0), rtol=1e-13, atol=1e-13)
    assert m[3].running_mean is None
    assert m.training and m[1].training and not m[2].training and m[3].training


def test_recompute_bn_statistics_that_fail_leave_the_statistics_as_they_were():
    # the layers' statistics were reset before the passes: a batch that failed left the model
    # normalising with mean 0 and variance 1
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    with torch.no_grad():
        m.train()(3 * torch.randn(20, 3, dtype=torch.float64) + 1)
    m.eval()
    before = copy.deepcopy(m.state_dict())
    x = torch.randn(30, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError):     # the second batch has 2 features, not 3
        recompute_bn_statistics(m, [(x[:10], x[:10, 0]), (x[10:, :2], x[10:, 0])])
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not m.training and m[1].momentum == 0.1


def test_interpolated_statistics_without_a_variance_are_nan_with_a_warning():
    """Running variances 1 and 3 extrapolated to α = −1 give −1 and at α = −0.5 give 0: no
    network to evaluate there (NaN, with a warning), the others as the weights say."""
    a, b = _pair(True)
    a[1].running_var.fill_(1.0)
    b[1].running_var.fill_(3.0)
    data, loss_fn = _data(30, 4), nn.CrossEntropyLoss()
    with pytest.warns(RuntimeWarning, match=r"alpha = -1, -0.5 an interpolated running "
                                            r"variance is <= 0"):
        c = interpolate_models(a, b, loss_fn, data, data, [-1.0, -0.5, 0.0, 1.0, 2.0],
                               bn_stats="interpolate")
    for series in (c.train_loss, c.train_acc, c.test_loss, c.test_acc):
        assert all(x != x for x in series[:2]) and all(x == x for x in series[2:])
    assert c.train_loss[2:4] == pytest.approx([evaluate(m, loss_fn, data)[0] for m in (a, b)],
                                              rel=1e-12)


def test_frozen_parameters_are_interpolated_too():
    # a frozen layer that differs between the two models is part of θ: α = 1 is model B and
    # α = 0.5 the midpoint of every parameter, not model A's frozen layer with B's others
    a, b = _pair(False)
    for m in (a, b):
        m[0].requires_grad_(False)
    train = _data(40, 0)
    loss_fn = nn.CrossEntropyLoss()
    curve = interpolate_models(a, b, loss_fn, train, alphas=[0.0, 0.5, 1.0])
    mid = copy.deepcopy(a)
    with torch.no_grad():
        for pm, pa, pb in zip(mid.parameters(), a.parameters(), b.parameters()):
            pm.copy_((pa + pb) / 2)
    for got, model in zip(curve.train_loss, (a, mid, b)):
        assert got == pytest.approx(evaluate(model, loss_fn, train)[0], rel=1e-12)
    assert all(not p.requires_grad for p in a[0].parameters())    # the inputs are untouched
    c = nn.Sequential(nn.Identity(), nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5),
                      nn.Linear(6, 3)).double()
    c[1].requires_grad_(False)                    # as many trainable ones, other frozen names
    with pytest.raises(ValueError, match="frozen"):
        interpolate_models(a, c, loss_fn, train, alphas=[0.0])


class _RunningCentre(nn.Module):
    """A running mean of its hidden units, subtracted in eval mode: a floating-point buffer
    outside batch norm, as spectral norm's power-iteration vectors are."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Linear(4, 6), nn.Linear(6, 3)
        self.register_buffer("centre", torch.zeros(6))

    def forward(self, x):
        h = self.inp(x)
        if self.training:
            with torch.no_grad():
                self.centre.lerp_(h.mean(0), 0.5)
        return self.out(torch.tanh(h - self.centre))


def test_buffers_outside_batch_norm_are_interpolated_too():
    """Model A's buffers at every α ended the line at another model than B (its loss at α = 1
    off B's by 0.008 with a spectral-normed layer, by 0.04 with a running mean like this
    one's); they move with θ, as frozen parameters do, and α = 0.5 is the midpoint of every
    parameter and buffer."""
    def make(seed):
        torch.manual_seed(seed)
        m = _RunningCentre().double()
        m(torch.randn(16, 4, dtype=torch.float64) + seed)
        return m.eval()

    a, b = make(0), make(1)
    train = _data(40, 0)
    loss_fn = nn.CrossEntropyLoss()
    curve = interpolate_models(a, b, loss_fn, train, alphas=[0.0, 0.5, 1.0])
    mid = copy.deepcopy(a)
    with torch.no_grad():
        for tm, ta, tb in zip([*mid.parameters(), mid.centre], [*a.parameters(), a.centre],
                              [*b.parameters(), b.centre]):
            tm.copy_((ta + tb) / 2)
    for got, model in zip(curve.train_loss, (a, mid, b)):
        assert got == pytest.approx(evaluate(model, loss_fn, train)[0], rel=1e-12)
    assert not torch.equal(a.centre, b.centre)


def test_models_of_different_dtypes_are_a_value_error_naming_both():
    a, b = _pair(bn=False)
    with pytest.raises(ValueError, match="float64 on cpu vs torch.float32 on cpu"):
        interpolate_models(a, b.float(), nn.functional.cross_entropy, _data(8, 1), alphas=[0.5])


def test_the_default_grid_holds_both_models_exactly():
    # linspace(-1, 2, 31) put model A at α = 5.6e-17: `curve.alphas.index(0.0)` failed
    a, b = _pair(False)
    train = _data(16, 0)
    curve = interpolate_models(a, b, nn.CrossEntropyLoss(), train)
    assert len(curve.alphas) == 31 and curve.alphas[::10] == [-1.0, 0.0, 1.0, 2.0]
    assert curve.alphas[4] == -0.6 and curve.alphas[17] == 0.7
    assert curve.train_loss[10] == evaluate(a, nn.CrossEntropyLoss(), train)[0]


def test_evaluate_weights_batches_by_their_size():
    # x ↦ x (weight 1, no bias) against targets 0: squared errors 1, 4, 9 in one batch and 16
    # in the other, mean over the 4 samples 30/4 (not the mean of the batch means, 31/3)
    model = scalar_linear(1.0)
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    y = torch.zeros(4, 1, dtype=torch.float64)
    loss, acc = evaluate(model, nn.MSELoss(), [(x[:3], y[:3]), (x[3:], y[3:])])
    assert loss == pytest.approx(7.5, rel=1e-15) and acc != acc    # regression: no accuracy


class _Square(nn.Module):
    def forward(self, x):
        return x * x


def test_recomputed_statistics_are_exact_at_every_layer_by_default():
    # x → BN₁ → square → BN₂ (no affine; x ↦ x in front), two batches. By default every
    # layer gets what the whole set as one batch in train mode stores: BN₁ the mean μ₁ and
    # unbiased variance of x, BN₂ those of z = ((x − μ₁)/√(v₁ + ε))² with v₁ the biased
    # variance train mode normalises by. Evaluated (running statistics) against targets 0,
    # the loss is mean(out²), worked out here in float64.
    def make():
        return nn.Sequential(scalar_linear(1.0), nn.BatchNorm1d(1, affine=False), _Square(),
                             nn.BatchNorm1d(1, affine=False)).double()

    x = torch.tensor([[0.0], [1.0], [3.0], [-2.0], [5.0], [0.5]], dtype=torch.float64)
    y = torch.zeros(6, 1, dtype=torch.float64)
    batches = [(x[:2], y[:2]), (x[2:], y[2:])]
    eps = 1e-5
    z = ((x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps)) ** 2
    z_eval = ((x - x.mean()) / torch.sqrt(x.var() + eps)) ** 2
    exact = float((((z_eval - z.mean()) / torch.sqrt(z.var() + eps)) ** 2).mean())
    c = interpolate_models(make(), make(), nn.MSELoss(), batches, alphas=[0.0])
    assert c.train_loss == pytest.approx([exact], rel=1e-12)


def test_keep_evaluates_every_point_with_model_a_s_batch_norm_statistics():
    # x ↦ x then batch norm (no affine) with running mean/variance 0/1 in A and 2/4 in B:
    # bn_stats="keep" normalises with A's at every α, B's end included: the loss against
    # targets 0 is mean(x²)/(1 + ε), not mean((x − 2)²)/(4 + ε)
    def make(mean, var):
        bn = nn.BatchNorm1d(1, affine=False)
        with torch.no_grad():
            bn.running_mean.fill_(mean)
            bn.running_var.fill_(var)
        return nn.Sequential(scalar_linear(1.0), bn).double()

    x = torch.tensor([[1.0], [2.0], [-3.0]], dtype=torch.float64)
    data = (x, torch.zeros(3, 1, dtype=torch.float64))
    c = interpolate_models(make(0.0, 1.0), make(2.0, 4.0), nn.MSELoss(), data,
                           alphas=[0.0, 0.5, 1.0], bn_stats="keep")
    assert c.train_loss == pytest.approx([14 / 3 / (1 + 1e-5)] * 3, rel=1e-12)
