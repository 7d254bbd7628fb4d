"""Hessian / GGN / empirical-Fisher operators against dense float64 references."""
import copy
import functools
import pickle
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sgdlab.operators.params
from sgdlab.operators import (
    EmpiricalFisherOperator, GGNOperator, HessianOperator, as_operator, curvature_operator,
    per_sample_gradients,
)
from sgdlab.testing import (
    dense_hessian_reference, empirical_fisher_reference, ggn_reference,
    per_sample_gradients_loop, tiny_classification, tiny_mlp, TokenBag,
)


def _regression(n=9, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(n, 2, generator=g,
                                                                           dtype=torch.float64)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_ggn_equals_dense_jt_h_j(loss):
    model = tiny_mlp(3, 4, 2)
    if loss == "ce":
        data, loss_fn = tiny_classification(9, 3, 2), nn.CrossEntropyLoss()
    else:
        data, loss_fn = _regression(), nn.MSELoss()
    ref = ggn_reference(model, loss_fn, data)
    torch.testing.assert_close(GGNOperator(model, loss_fn, data).to_dense(), ref)
    loader = [(data[0][:4], data[1][:4]), (data[0][4:], data[1][4:])]
    torch.testing.assert_close(GGNOperator(model, loss_fn, loader).to_dense(), ref)
    # the autograd route (no forward tangents) over batches of 4 and 5: weighted by their sizes
    plain = GGNOperator(model, loss_fn, loader, taylor=False, rop=False)
    assert plain._rop is None and plain._cached_graph is None
    v = torch.randn(ref.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain.matvec(v), ref @ v)
    torch.testing.assert_close(plain.to_dense(), ref)
    assert torch.linalg.eigvalsh(ref).min() > -1e-12       # PSD for convex losses
    if loss == "mse":
        # for a linear model the GGN is the Hessian
        lin = nn.Linear(3, 2).double()
        torch.testing.assert_close(GGNOperator(lin, loss_fn, data).to_dense(),
                                   dense_hessian_reference(lin, loss_fn, data))


class _AuxHead(nn.Module):
    """A trainable head the forward never calls (an auxiliary head, a disabled branch)."""

    def __init__(self):
        super().__init__()
        self.body = tiny_mlp(3, 4, 2)
        self.aux = nn.Linear(4, 5).double()

    def forward(self, x):
        return self.body(x)


def test_unused_parameters_have_zero_gradient_and_curvature():
    model, loss_fn = _AuxHead(), nn.CrossEntropyLoss()
    x, y = tiny_classification(9, 3, 2)
    d = sum(p.numel() for p in model.parameters())
    v = torch.randn(d, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h, g = dense_hessian_reference(model, loss_fn, (x, y)), ggn_reference(model, loss_fn, (x, y))
    assert h[-25:].abs().max() == 0                 # the reference: aux rows are zero
    for data in ((x, y), [(x[:4], y[:4]), (x[4:], y[4:])]):
        hess = HessianOperator(model, loss_fn, data)
        torch.testing.assert_close(hess.matvec(v[:, 0]), h @ v[:, 0])
        torch.testing.assert_close(hess.matmat(v), h @ v)
        torch.testing.assert_close(hess.quadratic_forms(v), (v * (h @ v)).sum(0))
        torch.testing.assert_close(GGNOperator(model, loss_fn, data).matmat(v), g @ v)
        ref = per_sample_gradients_loop(model, loss_fn, data)
        for method in ("auto", "vmap"):
            torch.testing.assert_close(per_sample_gradients(model, loss_fn, data, method=method),
                                       ref)


def test_a_ggn_of_log_probabilities_under_nll_loss_is_zero_and_says_so():
    # PyTorch's MNIST example ends its network in log_softmax under F.nll_loss: linear in the
    # log-probabilities, so G = Jᵀ ∇²_f L J = 0, which every GGN measurement returned without a
    # word (ggn_diagonal 0, Takeuchi's ratio 0/0 = nan); the logits under cross-entropy are
    # the same loss with the GGN one means
    from sgdlab.measure import ggn_diagonal

    logits = tiny_mlp(3, 4, 3)
    log_probs = nn.Sequential(logits, nn.LogSoftmax(dim=1))
    data = tiny_classification(6, 3, 3)
    for loss_fn in (nn.NLLLoss(), F.nll_loss):
        with pytest.warns(UserWarning, match="linear in the model's outputs.*CrossEntropyLoss"):
            ggn = GGNOperator(log_probs, loss_fn, data)
        assert ggn.to_dense().abs().max() == 0
        with pytest.warns(UserWarning, match="ggn_diagonal: .* linear in the model's outputs"):
            assert ggn_diagonal(log_probs, loss_fn, data).abs().max() == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = GGNOperator(logits, nn.CrossEntropyLoss(), data).to_dense()
        ggn_diagonal(logits, nn.CrossEntropyLoss(), data)
        # Huber is linear only beyond delta: its first samples' residuals say nothing
        far = (data[0], torch.full((6, 3), 100.0, dtype=torch.float64))
        GGNOperator(logits, nn.HuberLoss(delta=0.1), far)
    torch.testing.assert_close(ref, ggn_reference(logits, nn.CrossEntropyLoss(), data))


def test_the_zero_curvature_warning_probes_only_the_samples_the_loss_counts():
    # cross-entropy whose first samples' targets are ignored (a mean over none: nan; a sum: 0)
    # or weighted 0 is curved on the others: no warning; NLLLoss still gets it from the rest
    logits = tiny_mlp(3, 4, 3)
    x, y = tiny_classification(6, 3, 3)
    ignored = (x, torch.cat([torch.full((2,), -100), y[2:]]))
    zero_weight = nn.CrossEntropyLoss(weight=torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for loss_fn, data in ((nn.CrossEntropyLoss(), ignored),
                              (nn.CrossEntropyLoss(reduction="sum"), ignored),
                              (zero_weight, (x, torch.tensor([0, 0, 1, 2, 1, 2])))):
            GGNOperator(logits, loss_fn, data)
    one_ignored = (x, torch.cat([torch.full((1,), -100), y[1:]]))
    with pytest.warns(UserWarning, match="NLLLoss is linear in the model's outputs"):
        GGNOperator(nn.Sequential(logits, nn.LogSoftmax(dim=1)), nn.NLLLoss(), one_ignored)


def _mean_residual(out, y):
    return (out - y).mean()


@pytest.mark.parametrize("paths", [{}, {"rop": False}, {"rop": False, "taylor": False}])
@pytest.mark.parametrize("model", ["linear", "two_linear"])
def test_a_loss_linear_in_the_outputs_has_curvature_from_the_model_alone(model, paths):
    # a gradient entry constant in θ (the last bias under a loss linear in the outputs) was
    # autograd's "element 0 of tensors does not require grad" in every product; ∇²_f L = 0
    torch.manual_seed(0)
    model = (nn.Linear(3, 1) if model == "linear"
             else nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))).double()
    x, y = _regression(9)
    y = y[:, :1]
    # bilinear W2 W1 terms, zero for the linear one (checked against torch.func.hessian in
    # tests/test_testing.py)
    h = dense_hessian_reference(model, _mean_residual, (x, y))
    assert (h.abs().max() > 0) == (len(list(model.parameters())) > 2)
    v = torch.randn(len(h), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for data in ((x, y), [(x[:4], y[:4]), (x[4:], y[4:])]):
        hess = HessianOperator(model, _mean_residual, data, **paths)
        torch.testing.assert_close(hess.matvec(v[:, 0]), h @ v[:, 0])
        torch.testing.assert_close(hess.matmat(v), h @ v)
        torch.testing.assert_close(hess.quadratic_forms(v), (v * (h @ v)).sum(0))
        with pytest.warns(UserWarning, match="G = Jᵀ ∇²_f L J is zero"):
            ggn = GGNOperator(model, _mean_residual, data, **paths)
        assert ggn.matvec(v[:, 0]).abs().max() == 0 and ggn.matmat(v).abs().max() == 0
        assert ggn.quadratic_forms(v).abs().max() == 0


def test_bad_data_and_frozen_models_are_named_errors():
    from sgdlab.errors import UserError
    from sgdlab.measure import (expected_sharpness, ggn_diagonal, gradient_covariance,
                                hessian_top_eigenvalue, hessian_trace)

    model, loss_fn = tiny_mlp(3, 4, 2), nn.CrossEntropyLoss()
    x, y = tiny_classification(9, 3, 2)
    ggn_top = functools.partial(hessian_top_eigenvalue, operator="ggn")
    for data in ([], (x[:0], y[:0]), [(x[:0], y[:0])]):
        # the GGN's check for a loss linear in the outputs failed on an empty batch's labels
        for measure in (hessian_top_eigenvalue, hessian_trace, per_sample_gradients,
                        ggn_top, ggn_diagonal):
            with pytest.raises(UserError, match="no samples"):
                measure(model, loss_fn, data)
    # a generator is consumed by the first pass: the second says so, not just "no samples"
    with pytest.raises(UserError, match="one-shot iterator"):
        hessian_trace(model, loss_fn, ((x[i:i + 3], y[i:i + 3]) for i in range(0, 9, 3)),
                      num_probes=2)
    with pytest.raises(UserError, match=r"batch 1 is not an \(inputs, targets\) pair"):
        hessian_top_eigenvalue(model, loss_fn, [(x, y), {"x": x, "y": y}])
    frozen = tiny_mlp(3, 4, 2).requires_grad_(False)
    for measure in (hessian_top_eigenvalue, per_sample_gradients, gradient_covariance):
        with pytest.raises(UserError, match="no trainable parameters"):
            measure(frozen, loss_fn, (x, y))
    broken = tiny_mlp(3, 4, 2)
    with torch.no_grad():
        next(broken.parameters())[0, 0] = float("nan")
    for measure in (hessian_top_eigenvalue, hessian_trace, gradient_covariance,
                    lambda *a: expected_sharpness(*a, sigma=0.1)):
        with pytest.raises(FloatingPointError, match="non-finite"):
            measure(broken, loss_fn, (x, y))


def test_empirical_fisher_stored_and_streaming():
    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    ref = empirical_fisher_reference(per_sample_gradients_loop(model, loss_fn, data))
    torch.testing.assert_close(EmpiricalFisherOperator(model, loss_fn, data).to_dense(), ref)
    loader = [(data[0][:3], data[1][:3]), (data[0][3:], data[1][3:])]
    torch.testing.assert_close(
        EmpiricalFisherOperator(model, loss_fn, loader, store_gradients=False).to_dense(), ref)
    with pytest.raises(ValueError, match="needs data"):
        EmpiricalFisherOperator(model, loss_fn)


def test_empirical_fisher_streaming_checks_once_a_product(monkeypatch):
    """store_gradients=False: per_sample_gradients' checks (a probe forward) on the first
    batch of a product, not on every batch; the products are the stored G's."""
    import sgdlab.operators.per_sample as per_sample
    from sgdlab.errors import UserError

    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    loader = [(data[0][i:i + 3], data[1][i:i + 3]) for i in range(0, 10, 3)]   # 4 batches
    op = EmpiricalFisherOperator(model, loss_fn, loader, store_gradients=False)
    stored = EmpiricalFisherOperator(model, loss_fn, data)
    seen = []
    check = per_sample.check_model_data
    monkeypatch.setattr(per_sample, "check_model_data",
                        lambda *a, **k: seen.append(len(a[2][0])) or check(*a, **k))
    m = torch.randn(op.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(op.matmat(m), stored.matmat(m), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(op.quadratic_forms(m), stored.quadratic_forms(m), rtol=1e-12,
                               atol=1e-14)
    assert seen == [3, 3]         # one check a product, on the first batch
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double().eval()
    op = EmpiricalFisherOperator(bn, loss_fn, loader, store_gradients=False)
    bn.train()                    # after construction: the product's check still refuses it
    with pytest.raises(UserError, match="eval mode"):
        op.matvec(torch.zeros(op.shape[0], dtype=torch.float64))


def test_per_sample_gradients_match_loop_float32():
    model = tiny_mlp(3, 4, 2, dtype=torch.float32)
    x, y = tiny_classification(7, 3, 2, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss()
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y), chunk_size=3),
                               per_sample_gradients_loop(model, loss_fn, (x, y)))


def test_hessian_operator_float32_and_factory_and_algebra():
    model = tiny_mlp(3, 4, 2, dtype=torch.float32)
    x, y = tiny_classification(8, 3, 2, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss()
    op = curvature_operator("hessian", model, loss_fn, (x, y))
    assert op.dtype == torch.float32
    ref = dense_hessian_reference(copy.deepcopy(model).double(), loss_fn, (x.double(), y))
    torch.testing.assert_close(op.to_dense().double(), ref, atol=1e-5, rtol=1e-4)
    a = torch.randn(5, 5, dtype=torch.float64)
    a = a + a.T
    comb = 2.0 * as_operator(a) - torch.eye(5, dtype=torch.float64)
    dense = 2 * a - torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(comb.to_dense(), dense)
    # the quadratic forms (Hutchinson's samples) of scaled and summed operators as well
    v = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(comb.quadratic_forms(v), (v * (dense @ v)).sum(0))
    torch.testing.assert_close((as_operator(a) + as_operator(a)).quadratic_forms(v),
                               2 * (v * (a @ v)).sum(0))
    with pytest.raises(ValueError, match="Unknown curvature operator"):
        curvature_operator("fisher_true", model, loss_fn, (x, y))


@pytest.mark.parametrize("bad", [-1, 0, 2.5, True])
def test_to_dense_refuses_a_chunk_size_that_is_no_count(bad):
    """-1 took no product and returned torch.empty's memory as the Hessian (dense_hessian
    too); 0 and 2.5 failed in range(), True was one column a pass."""
    from sgdlab.measure import dense_hessian

    model, data = tiny_mlp(3, 4, 2), tiny_classification(8, 3, 2)
    op = HessianOperator(model, nn.CrossEntropyLoss(), data)
    says = f"Invalid chunk_size={bad!r} (an int >= 1: columns per pass)"
    for call in (lambda: op.to_dense(bad),
                 lambda: dense_hessian(model, nn.CrossEntropyLoss(), data, chunk_size=bad)):
        with pytest.raises(ValueError, match=re.escape(says)):
            call()


def _loader(data, cut=4):
    return [(data[0][:cut], data[1][:cut]), (data[0][cut:], data[1][cut:])]


@pytest.mark.parametrize("multi_batch", [False, True])
@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh])
def test_hessian_batched_matmat_and_quadratic_forms_match_dense(multi_batch, act):
    """Batched matmat == column-by-column matvec == dense H in float64; the Taylor-mode
    quadratic forms (Hutchinson's samples) == diag(Vᵀ H V); GGN and Fisher likewise."""
    from sgdlab.operators.taylor import SequentialTaylor

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 5), act(), nn.Linear(5, 4), act(),
                          nn.Linear(4, 3)).double()
    data, loss_fn = tiny_classification(11, 3, 3), nn.CrossEntropyLoss()
    d = sum(p.numel() for p in model.parameters())
    v = torch.randn(d, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    src = _loader(data) if multi_batch else data
    h = dense_hessian_reference(model, loss_fn, data)

    op = HessianOperator(model, loss_fn, src)
    assert op._taylor is not None
    cols = torch.stack([op.matvec(c) for c in v.T], dim=1)
    torch.testing.assert_close(op.matmat(v), cols)
    torch.testing.assert_close(op.matmat(v), h @ v)
    torch.testing.assert_close(op.quadratic_forms(v), (v * (h @ v)).sum(0))
    plain = HessianOperator(model, loss_fn, src, taylor=False)    # (V ⊙ H V).sum(0) path
    torch.testing.assert_close(plain.quadratic_forms(v), (v * (h @ v)).sum(0))
    assert op.num_matvecs == 4 * 6 and 1 <= op.probe_block_size() <= 16   # 6 matvecs + 3 blocks

    g = ggn_reference(model, loss_fn, data)
    gop = GGNOperator(model, loss_fn, src)
    torch.testing.assert_close(gop.matmat(v), g @ v)
    torch.testing.assert_close(gop.quadratic_forms(v), (v * (g @ v)).sum(0))

    f = empirical_fisher_reference(per_sample_gradients_loop(model, loss_fn, data))
    fop = EmpiricalFisherOperator(model, loss_fn, src, store_gradients=not multi_batch)
    torch.testing.assert_close(fop.matmat(v), f @ v)
    torch.testing.assert_close(fop.quadratic_forms(v), (v * (f @ v)).sum(0))

    # unsupported models fall back to (V ⊙ H V).sum(0)
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return x + self.lin(x)

    skip = Skip().double()
    assert SequentialTaylor.build(skip, dict(skip.named_parameters())) is None
    hs = dense_hessian_reference(skip, loss_fn, data)
    w = v[:12, :3]
    torch.testing.assert_close(HessianOperator(skip, loss_fn, src).quadratic_forms(w),
                               (w * (hs @ w)).sum(0))


@pytest.mark.parametrize("multi_batch", [False, True])
def test_hessian_products_through_group_norm(multi_batch):
    """autograd's batched double backward (``is_grads_batched``) through ``nn.GroupNorm``
    fails on a shape mismatch (torch 2.13), so every block product, and with them the dense
    Hessian and its exact diagonal, raised that RuntimeError. Blocks then go one column at a
    time, with a warning, and equal the dense H."""
    from sgdlab.measure import dense_hessian, hessian_diagonal

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.GroupNorm(2, 4), nn.Tanh(),
                          nn.Linear(4, 2)).double()
    data, loss_fn = tiny_classification(5, 3, 2), nn.CrossEntropyLoss()
    h = dense_hessian_reference(model, loss_fn, data)
    v = torch.randn(len(h), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    src = _loader(data) if multi_batch else data
    op = HessianOperator(model, loss_fn, src)
    with pytest.warns(RuntimeWarning, match="one column at a time"):
        torch.testing.assert_close(op.matmat(v), h @ v)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # said once: later blocks go by columns at once
        torch.testing.assert_close(op.matmat(v), h @ v)
    torch.testing.assert_close(op.quadratic_forms(v), (v * (h @ v)).sum(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        torch.testing.assert_close(dense_hessian(model, loss_fn, src), h)
        torch.testing.assert_close(hessian_diagonal(model, loss_fn, src, exact=True).value,
                                   h.diagonal())


class _ComposedWeightNorm(nn.Module):
    """tanh(x (g ⊙ v / ‖v_j‖)ᵀ + b) -> linear, the weight norm written in elementwise ops, with
    the parameters in the order of a weight-normed ``nn.Linear``'s (bias, g, v; the head)."""

    def __init__(self, bias, g, v, head):
        super().__init__()
        self.bias, self.g, self.v = (nn.Parameter(t.detach().clone()) for t in (bias, g, v))
        self.head = copy.deepcopy(head)

    def forward(self, x):
        w = self.v * (self.g / torch.norm_except_dim(self.v, 2, 0))
        return self.head(torch.tanh(nn.functional.linear(x, w, self.bias)))


@pytest.mark.parametrize("style", ["parametrizations", "hook"])
def test_hessian_products_through_weight_norm(style):
    """``torch._weight_norm``'s double backward is wrong (torch 2.13: ∂²/∂v² 5.3 off on a
    4 x 3 weight, and H not symmetric), so the Hessian of a weight-normed network was silently
    wrong (0.59 off, 0.67 asymmetric here). Within the operators' second-order forward the
    weight is composed of elementwise ops, for ``nn.utils.parametrizations.weight_norm`` and
    the older hook-based ``nn.utils.weight_norm``; the reference writes it out the same way."""
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    lin = nn.Linear(3, 4).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)     # the hook-based one is deprecated
        normed = (parametrizations.weight_norm(lin) if style == "parametrizations"
                  else nn.utils.weight_norm(lin))
    model = nn.Sequential(normed, nn.Tanh(), nn.Linear(4, 2).double())
    g, v = ((lin.parametrizations.weight.original0, lin.parametrizations.weight.original1)
            if style == "parametrizations" else (lin.weight_g, lin.weight_v))
    data, loss_fn = tiny_classification(6, 3, 2), nn.CrossEntropyLoss()
    h = dense_hessian_reference(_ComposedWeightNorm(lin.bias, g, v, model[2]), loss_fn, data)
    vecs = torch.randn(len(h), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for src in (data, _loader(data)):
        op = HessianOperator(model, loss_fn, src)
        torch.testing.assert_close(op.matmat(vecs), h @ vecs)
        torch.testing.assert_close(op.matvec(vecs[:, 0]), h @ vecs[:, 0])
        torch.testing.assert_close(op.quadratic_forms(vecs), (vecs * (h @ vecs)).sum(0))
    # the dense reference of the weight-normed model itself (was 0.66 off, not symmetric)
    torch.testing.assert_close(dense_hessian_reference(model, loss_fn, data), h)
    # outside the operators the model computes its weight as before
    torch.testing.assert_close(model[0].weight, v * (g / torch.norm_except_dim(v, 2, 0)))


def test_operators_leave_train_mode_batch_norm_statistics_as_they_were():
    """A batch norm in train mode normalises by each batch's statistics, and each of its
    forward passes also moves the running statistics: building an operator and every product
    over a loader moved them (a Lanczos run of k products, k momentum steps towards the
    measured data), so measuring a model changed its eval-mode outputs afterwards. The
    operators restore them, as the sharpness measures and hessian_spectral_norm do."""
    from sgdlab.measure import dense_hessian, hessian_trace

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(),
                          nn.Linear(4, 2)).double().train()
    data, loss_fn = tiny_classification(8, 3, 2), nn.CrossEntropyLoss()
    before = {n: b.clone() for n, b in model.named_buffers()}
    v = torch.randn(sum(p.numel() for p in model.parameters()), 2, dtype=torch.float64)
    for src in (data, _loader(data)):
        for kind in ("hessian", "ggn"):
            op = curvature_operator(kind, model, loss_fn, src)
            op.matvec(v[:, 0])
            op.matmat(v)
        dense_hessian(model, loss_fn, src)
        hessian_trace(model, loss_fn, src, 2)
    for n, b in model.named_buffers():
        torch.testing.assert_close(b, before[n], rtol=0, atol=0, msg=n)


@pytest.mark.parametrize("changed", ["biases", "all"])
def test_cached_gradient_graphs_follow_a_parameter_change(changed):
    """The autograd path keeps one batch's gradient graph (Hessian) or output graph (GGN)
    from construction. After the parameters changed in place (an optimizer step) the products
    were the old parameters' where the graph saved none of those that changed (biases: 0.42
    off the new Hessian, 0.067 off the new GGN), or autograd's 'modified by an inplace
    operation' error. The graph is rebuilt, as the R-op's cached activations are."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    data, loss_fn = tiny_classification(6, 3, 2), nn.CrossEntropyLoss()
    ops = [HessianOperator(model, loss_fn, data, rop=False, taylor=False),
           GGNOperator(model, loss_fn, data, rop=False, taylor=False)]
    v = torch.randn(ops[0].shape[0], 2, dtype=torch.float64)
    for op in ops:
        op.matvec(v[:, 0])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if changed == "all" or name.endswith("bias"):
                p.add_(0.3)
    for op, ref in zip(ops, (dense_hessian_reference, ggn_reference)):
        a = ref(model, loss_fn, data)
        torch.testing.assert_close(op.matvec(v[:, 0]), a @ v[:, 0])
        torch.testing.assert_close(op.matmat(v), a @ v)


def test_fisher_of_given_gradients_keeps_them_in_another_dtype():
    # with data beside them, .to(dtype) rebuilt the operator from the data: its products in
    # float64 were the data's Fisher, not that of the gradients the caller gave
    from sgdlab.operators import EmpiricalFisherOperator, per_sample_gradients

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    (x, y), loss_fn = tiny_classification(6, 3, 2), nn.CrossEntropyLoss()
    data = (x.float(), y)
    g = 2 * per_sample_gradients(model, loss_fn, data)        # not the data's G
    ref = empirical_fisher_reference(g)
    for given in (EmpiricalFisherOperator(model, loss_fn, data, gradients=g),
                  EmpiricalFisherOperator(model, loss_fn, gradients=g)):
        wide = given.to(torch.float64)
        assert wide.dtype == torch.float64
        torch.testing.assert_close(wide.to_dense(), ref, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=f"gradients have {g.shape[1] - 1} columns, model "
                                         f"has {g.shape[1]} parameters"):
        EmpiricalFisherOperator(model, loss_fn, gradients=g[:, 1:])


@pytest.mark.parametrize("store", [True, False])
def test_fisher_of_data_in_another_dtype_computes_its_gradients_in_that_dtype(store):
    """.to(float64) of a float32 operator over data: G of the float64 copy (float64 round-off,
    not float32's cast up), stored or streamed as the operator was."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    (x, y), loss_fn = tiny_classification(6, 3, 2), nn.CrossEntropyLoss()
    wide = EmpiricalFisherOperator(model, loss_fn, (x.float(), y), store_gradients=store).to(
        torch.float64)
    assert wide.dtype == torch.float64 and wide._store is store
    ref = empirical_fisher_reference(per_sample_gradients_loop(copy.deepcopy(model).double(),
                                                               loss_fn, (x.float().double(), y)))
    torch.testing.assert_close(wide.to_dense(), ref, rtol=1e-12, atol=1e-14)


def test_stored_fisher_gradients_follow_a_parameter_change():
    """The empirical Fisher keeps G from construction: after an optimizer step its products
    were the old parameters' Fisher, where the Hessian and GGN operators beside it follow the
    change. G is computed again; a G passed in by the caller is used as given."""
    from sgdlab.operators import EmpiricalFisherOperator, per_sample_gradients
    from sgdlab.testing import empirical_fisher_reference

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    data, loss_fn = tiny_classification(6, 3, 2), nn.CrossEntropyLoss()
    op = EmpiricalFisherOperator(model, loss_fn, data)
    given = EmpiricalFisherOperator(model, loss_fn,
                                    gradients=per_sample_gradients(model, loss_fn, data))
    v = torch.randn(op.shape[0], 2, dtype=torch.float64)
    before = op.matmat(v)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3)
    f = empirical_fisher_reference(per_sample_gradients(model, loss_fn, data))
    assert (f @ v - before).abs().max() > 1e-3            # the step changed the Fisher
    torch.testing.assert_close(op.matvec(v[:, 0]), f @ v[:, 0])
    torch.testing.assert_close(op.matmat(v), f @ v)
    torch.testing.assert_close(op.quadratic_forms(v), ((f @ v) * v).sum(0))
    torch.testing.assert_close(given.matmat(v), before)


def test_stored_fisher_gradients_follow_a_change_of_buffers():
    """G depends on eval-mode batch norm's running statistics as well: new ones written in
    place (a train-mode pass, a load_state_dict) make it again, as a parameter change does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(),
                          nn.Linear(4, 2)).double().eval()
    data, loss_fn = tiny_classification(6, 3, 2), nn.CrossEntropyLoss()
    op = EmpiricalFisherOperator(model, loss_fn, data)
    before = op.to_dense()
    with torch.no_grad():
        model[1].running_mean.add_(0.7)
        model[1].running_var.mul_(3.0)
    f = empirical_fisher_reference(per_sample_gradients_loop(model, loss_fn, data))
    assert (f - before).abs().max() > 1e-3                 # the statistics changed the Fisher
    torch.testing.assert_close(op.to_dense(), f)


def test_hutchinson_blocks_do_not_change_the_samples():
    from sgdlab.measure.curvature import hutchinson_trace
    from sgdlab.operators import HessianOperator

    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(9, 3, 2), nn.CrossEntropyLoss()
    h = dense_hessian_reference(model, loss_fn, data)
    ests = [hutchinson_trace(HessianOperator(model, loss_fn, data), 20, block_size=b,
                             generator=torch.Generator().manual_seed(5)) for b in (1, 7, None)]
    dense = hutchinson_trace(h, 20, block_size=3, generator=torch.Generator().manual_seed(5))
    for e in ests:
        assert e.value == pytest.approx(dense.value, rel=1e-10)
        assert e.stderr == pytest.approx(dense.stderr, rel=1e-8)


def test_slq_lockstep_matches_sequential_lanczos():
    """SLQ's probes share one matmat per Lanczos step; nodes/weights equal one run per probe
    (including a breakdown on a matrix with repeated eigenvalues)."""
    from sgdlab.measure.curvature import lanczos_decomposition, spectral_density
    from sgdlab.operators import HessianOperator

    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(9, 3, 2), nn.CrossEntropyLoss()
    rep = torch.diag(torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 3.0], dtype=torch.float64))
    for a, it in [(HessianOperator(model, loss_fn, _loader(data)), 8), (rep, 6)]:
        dens = spectral_density(a, num_probes=4, num_iter=it,
                                generator=torch.Generator().manual_seed(1))
        g = torch.Generator().manual_seed(1)
        for i in range(4):
            res = lanczos_decomposition(a, it, generator=g, keep_basis=False,
                                        restart_on_breakdown=False)
            theta, s = torch.linalg.eigh(res.tridiagonal())
            torch.testing.assert_close(dens.nodes[i, : len(theta)], theta)
            torch.testing.assert_close(dens.weights[i, : len(theta)], s[0] ** 2)
            assert float(dens.weights[i, len(theta):].abs().sum()) == 0


class _Attention(nn.Module):
    """Embedding, one self-attention layer (torch's fused attention kernels), mean pooling."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(5, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, tokens):
        h = self.emb(tokens)
        return self.head((h + self.attn(h, h, h, need_weights=False)[0]).mean(1))


def test_curvature_through_multihead_attention():
    # the flash kernel scaled_dot_product_attention picks on CPU has no double backward: the
    # operators run their forward on the math kernel, so the products exist and are exact
    from torch.nn.attention import SDPBackend, sdpa_kernel
    model = _Attention().double().eval()
    g = torch.Generator().manual_seed(1)
    data = (torch.randint(5, (6, 3), generator=g), torch.randint(3, (6,), generator=g))
    loss_fn = nn.CrossEntropyLoss()
    with sdpa_kernel([SDPBackend.MATH]):
        ref_h = dense_hessian_reference(model, loss_fn, data)
        ref_g = ggn_reference(model, loss_fn, data)
    loader = [(data[0][:4], data[1][:4]), (data[0][4:], data[1][4:])]
    for d in (data, loader):
        torch.testing.assert_close(HessianOperator(model, loss_fn, d).to_dense(), ref_h)
        torch.testing.assert_close(GGNOperator(model, loss_fn, d).to_dense(), ref_g)


class _Times(nn.Module):
    """x ↦ x ⊙ mask: a dropout layer with its mask fixed (rows: the batch's samples)."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        return x * self.mask


@pytest.mark.parametrize("kind", ["hessian", "ggn", "empirical_fisher"])
def test_dropout_in_train_mode_gives_one_operator_under_one_draw_of_masks_per_batch(kind):
    """Each product draws no masks of its own: the same v gives the same product, the dense
    matrix is symmetric and (Hessian, GGN) equals the curvature of each batch's loss under the
    operator's draw for that batch, weighted by size; the global generator is left as it was;
    a warning names the dropout layer. In eval mode: no warning, the deterministic network."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 2)).double()
    x, y = tiny_classification(12, 3, 2)
    loader = [(x[:5], y[:5]), (x[5:], y[5:])]
    loss_fn = nn.CrossEntropyLoss()
    state = torch.get_rng_state()
    kw = {"store_gradients": False} if kind == "empirical_fisher" else {}
    with pytest.warns(UserWarning, match=r"layer '2' \(Dropout\): dropout in train mode"):
        op = curvature_operator(kind, model, loss_fn, loader, **kw)
    v = torch.randn(op.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op @ v, op @ v, rtol=0, atol=0)
    dense = op.to_dense()
    torch.testing.assert_close(dense, dense.T)
    assert torch.equal(torch.get_rng_state(), state)
    reference = {"hessian": dense_hessian_reference, "ggn": ggn_reference,
                 "empirical_fisher": lambda m, f, d: empirical_fisher_reference(
                     per_sample_gradients_loop(m, f, d))}[kind]
    if kind != "empirical_fisher":     # per-sample gradients draw a mask per sample (vmap)
        want = torch.zeros_like(dense)
        for i, (xb, yb) in enumerate(loader):
            with op.fixed_randomness(i):        # the mask the batch's forward draws
                mask = model[2](torch.ones(len(xb), 6, dtype=torch.float64))
            masked = copy.deepcopy(model)
            masked[2] = _Times(mask)
            want += reference(masked, loss_fn, (xb, yb)) * len(xb)
        torch.testing.assert_close(dense, want / len(x))
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluated = curvature_operator(kind, model, loss_fn, loader, **kw).to_dense()
    torch.testing.assert_close(evaluated, reference(model, loss_fn, (x, y)))


def test_a_model_output_that_is_no_tensor_is_named_for_the_ggn_only():
    """A model returning its logits in a dict, with a loss that unpacks them: the Hessian is
    the loss's as it is; the GGN needs the outputs f as one tensor, and says so (it failed on
    ``'dict' object has no attribute 'detach'``)."""
    from sgdlab.errors import UserError
    from sgdlab.testing import DictOutput, dict_logits_loss

    torch.manual_seed(0)
    model = DictOutput().double()
    data = tiny_classification()
    torch.testing.assert_close(HessianOperator(model, dict_logits_loss, data).to_dense(),
                               dense_hessian_reference(model, dict_logits_loss, data))
    with pytest.raises(UserError, match="GGNOperator needs the model's output as one tensor.*"
                                        "returned a dict.*operator='hessian'") as refused:
        GGNOperator(model, dict_logits_loss, data).to_dense()
    # an exception crosses processes pickled (a pool's worker): its arguments rebuild it
    # (unpickling had failed on "__init__() missing 1 required positional argument: 'kind'")
    again = pickle.loads(pickle.dumps(refused.value))
    assert str(again) == str(refused.value) and again.kind == "dict"


def _spectral_normed(hook_based: bool) -> nn.Module:
    """A float64 MLP whose first layer is spectrally normalised in train mode, its power-
    iteration vector u far from converged (so one more iteration moves it visibly)."""
    torch.manual_seed(3)
    lin = nn.Linear(3, 4)
    if hook_based:
        lin = nn.utils.spectral_norm(lin)
    else:
        lin = nn.utils.parametrizations.spectral_norm(lin)
    model = nn.Sequential(lin, nn.Tanh(), nn.Linear(4, 2)).double()
    u = lin.weight_u if hook_based else lin.parametrizations.weight[0]._u
    with torch.no_grad():
        u.copy_(torch.nn.functional.normalize(torch.randn_like(u), dim=0))
    return model


@pytest.mark.parametrize("hook_based", [False, True])
def test_hessian_of_train_mode_spectral_norm_leaves_its_vectors(hook_based):
    """Each forward pass of a train-mode spectral norm runs a power iteration that moves its
    vectors: every batch and every product starts from the model's vectors (the Hessian of the
    loss a training step's forward pass computes next), and the model is left as it was."""
    model = _spectral_normed(hook_based)
    x, y = tiny_classification(8, 3, 2)
    x = x.double()
    ref = dense_hessian_reference(copy.deepcopy(model), nn.CrossEntropyLoss(), (x, y))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = [(x[:4], y[:4]), (x[4:], y[4:])]
    for data in [(x, y), loader]:
        op = HessianOperator(model, nn.CrossEntropyLoss(), data)
        torch.testing.assert_close(op.to_dense(), ref, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(op.to_dense(), ref, atol=1e-12, rtol=1e-10)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


class _Partial(functools.partial):
    """A partial that a partial over it keeps nested (functools flattens plain ones)."""

    def __call__(self, *args, **kwargs):
        return super().__call__(*args, **kwargs)


_WEIGHTS = torch.tensor([1.0, 5.0], dtype=torch.float64)


@pytest.mark.parametrize("loss_fn", [
    nn.CrossEntropyLoss(weight=_WEIGHTS), functools.partial(F.cross_entropy, weight=_WEIGHTS),
    _Partial(_Partial(F.cross_entropy, weight=_WEIGHTS), label_smoothing=0.0),
    functools.partial(F.nll_loss, weight=_WEIGHTS),
    nn.CrossEntropyLoss(ignore_index=1), functools.partial(F.cross_entropy, ignore_index=1)],
    ids=["weight", "partial_weight", "nested_partial_weight", "partial_nll_weight",
         "ignore_index", "partial_ignore_index"])
def test_weighted_mean_losses_are_refused_on_batches(loss_fn):
    """Cross-entropy with class weights or ignored targets is a weighted mean normalised per
    batch; the batches' values weighted by their sizes are not the weighted mean over the set
    (Hessian 0.20 / 0.43 and gradient 0.14 / 0.32 off here): refused on several batches, and
    measured as it is on one."""
    from sgdlab.errors import UserError
    from sgdlab.operators import full_gradient

    model = tiny_mlp(3, 4, 2)
    x, y = tiny_classification(8, 3, 2)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    loader = [(x[:4], y[:4]), (x[4:], y[4:])]
    for kind in ("hessian", "ggn", "empirical_fisher"):
        with pytest.raises(UserError, match="weighted mean over all samples"):
            curvature_operator(kind, model, loss_fn, loader)
    with pytest.raises(UserError, match="weighted mean over all samples"):
        full_gradient(model, loss_fn, loader)
    ref = dense_hessian_reference(model, loss_fn, (x, y))
    torch.testing.assert_close(HessianOperator(model, loss_fn, (x, y)).to_dense(), ref)


@pytest.mark.parametrize("loss_fn, why", [
    (nn.CrossEntropyLoss(reduction="sum"), r"reduction='sum'\) is N times the mean"),
    (nn.CrossEntropyLoss(weight=_WEIGHTS), "mean weighted by the class weights"),
    (nn.CrossEntropyLoss(ignore_index=1), "averages over the targets not ignored")],
    ids=["sum", "weight", "ignore_index"])
def test_the_empirical_fisher_refuses_a_batch_loss_that_is_no_mean_of_the_samples(loss_fn,
                                                                                   why):
    """Its rows are each sample's loss alone, so on one batch F was the plain mean's beside
    another loss's Hessian: of a summed loss N times the mean's (F was not), with class
    weights (which cancel in one sample's loss) or ignored targets (rows of zeros counted in
    the 1/N) a weighted mean's. hessian_trace(operator=...) read 1/N of Tr F against Tr H."""
    from sgdlab.errors import UserError
    from sgdlab.measure import hessian_trace

    model = tiny_mlp(3, 4, 2)
    x, _ = tiny_classification(8, 3, 2)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    with pytest.raises(UserError, match=f"EmpiricalFisherOperator sets per-sample.*{why}"):
        EmpiricalFisherOperator(model, loss_fn, (x, y))
    with pytest.raises(UserError, match=why):
        hessian_trace(model, loss_fn, (x, y), num_probes=2, operator="empirical_fisher")
    # the Hessian and GGN of the batch loss as it is (a sum: N times the mean's)
    torch.testing.assert_close(HessianOperator(model, loss_fn, (x, y)).to_dense(),
                               dense_hessian_reference(model, loss_fn, (x, y)))
    # precomputed gradients are the operator as given
    g = per_sample_gradients(model, nn.CrossEntropyLoss(), (x, y))
    EmpiricalFisherOperator(model, loss_fn, gradients=g)


def test_partials_of_torch_losses_are_measured_on_batches_as_their_modules():
    """Where the module form is measured on batches, so is the partial of its function, with
    the same numbers: uniform class weights (a plain mean), a mean reduction given by name,
    and binary cross-entropy's element weights (entries of a plain mean, not a weighted one)."""
    model = tiny_mlp(3, 4, 2)
    x, y = tiny_classification(8, 3, 2)
    loader = [(x[:4], y[:4]), (x[4:], y[4:])]
    same = torch.tensor([2.0, 2.0], dtype=torch.float64)
    for module, partial in [
            (nn.CrossEntropyLoss(weight=same), functools.partial(F.cross_entropy, weight=same)),
            (nn.CrossEntropyLoss(), functools.partial(F.cross_entropy, reduction="mean"))]:
        torch.testing.assert_close(HessianOperator(model, partial, loader).to_dense(),
                                   HessianOperator(model, module, loader).to_dense())
    model = tiny_mlp(3, 4, 1)
    t = y[:, None].double()
    loader = [(x[:4], t[:4]), (x[4:], t[4:])]
    w = torch.linspace(0.5, 2.0, 8, dtype=torch.float64)[:4, None]
    torch.testing.assert_close(
        HessianOperator(model, functools.partial(F.binary_cross_entropy_with_logits, weight=w),
                        loader).to_dense(),
        HessianOperator(model, nn.BCEWithLogitsLoss(weight=w), loader).to_dense())


@pytest.mark.parametrize("shuffle", [False, True])
def test_ignored_targets_in_a_loader_over_a_tensor_dataset_are_refused(shuffle):
    """A DataLoader's targets were not looked at: F.cross_entropy over batches of 4 from a
    TensorDataset with 3 targets -100 in 12 was measured, its Hessian off the set's. The
    loader's targets tensor is read (no pass over the data); a loader of one batch, exact,
    is measured."""
    from torch.utils.data import DataLoader, TensorDataset

    from sgdlab.errors import UserError

    model = tiny_mlp(3, 4, 3)
    x, _ = tiny_classification(12, 3, 3)
    y = torch.tensor([0, -100, -100, -100, 1, 2, 0, 1, 2, 0, 1, 2])
    dataset = TensorDataset(x, y)
    with pytest.raises(UserError, match=r"cross_entropy\(ignore_index=-100\)"):
        HessianOperator(model, F.cross_entropy, DataLoader(dataset, batch_size=4,
                                                           shuffle=shuffle))
    whole = DataLoader(dataset, batch_size=12, shuffle=shuffle)
    torch.testing.assert_close(HessianOperator(model, F.cross_entropy, whole).to_dense(),
                               dense_hessian_reference(model, F.cross_entropy, (x, y)))
    # without ignored targets the loader is measured as the set
    y = y.clamp_min(0)
    torch.testing.assert_close(
        HessianOperator(model, F.cross_entropy,
                        DataLoader(TensorDataset(x, y), batch_size=4)).to_dense(),
        dense_hessian_reference(model, F.cross_entropy, (x, y)))


def test_f_cross_entropy_with_targets_minus_100_is_refused_on_batches():
    """F.cross_entropy ignores targets -100 (its default ignore_index) as the module does, but
    was measured on batches: the Hessian over two batches of 6 with 3 targets -100 was 0.090
    off the whole set's (largest entry 0.39)."""
    from sgdlab.errors import UserError

    model = tiny_mlp(3, 4, 3)
    x, _ = tiny_classification(12, 3, 3)
    y = torch.tensor([0, -100, -100, -100, 1, 2, 0, 1, 2, 0, 1, 2])
    with pytest.raises(UserError, match=r"cross_entropy\(ignore_index=-100\)"):
        HessianOperator(model, F.cross_entropy, [(x[:6], y[:6]), (x[6:], y[6:])])
    torch.testing.assert_close(HessianOperator(model, F.cross_entropy, (x, y)).to_dense(),
                               dense_hessian_reference(model, F.cross_entropy, (x, y)))


@pytest.mark.parametrize("loss_fn", [
    nn.CrossEntropyLoss(weight=torch.tensor([1.0, 5.0], dtype=torch.float64)),
    nn.CrossEntropyLoss(ignore_index=1), nn.CrossEntropyLoss(reduction="sum")],
    ids=["weight", "ignore_index", "sum"])
def test_a_list_of_one_batch_is_measured_as_that_batch(loss_fn):
    """A list holding one (x, y) batch is that batch: its size weight cancels, so a weighted
    or summed loss on it is measured as on the batch itself, not refused as data in batches."""
    from sgdlab.operators import full_gradient

    model = tiny_mlp(3, 4, 2)
    x, y = tiny_classification(8, 3, 2)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    torch.testing.assert_close(HessianOperator(model, loss_fn, [(x, y)]).to_dense(),
                               HessianOperator(model, loss_fn, (x, y)).to_dense())
    torch.testing.assert_close(full_gradient(model, loss_fn, [(x, y)]),
                               full_gradient(model, loss_fn, (x, y)))


def test_measurements_name_mismatched_model_and_data_dtypes():
    """A float32 model on float64 inputs failed inside each measurement with torch's "mat1
    and mat2 must have the same dtype"; one shared check names both dtypes, as train() does,
    and a model that casts its own inputs is measured."""
    from torch.utils.data import DataLoader, TensorDataset

    from sgdlab import measure
    from sgdlab.errors import UserError
    from sgdlab.operators import full_gradient

    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = tiny_classification(8, 3, 2)
    x = x.double()
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    calls = [lambda d: HessianOperator(model, loss_fn, d),
             lambda d: per_sample_gradients(model, loss_fn, d),
             lambda d: full_gradient(model, loss_fn, d),
             lambda d: measure.hessian_trace(model, loss_fn, d, 2),
             lambda d: measure.gradient_covariance(model, loss_fn, d),
             lambda d: measure.ggn_diagonal(model, loss_fn, d)]
    for call in calls:
        for data in ((x, y), [(x[:4], y[:4]), (x[4:], y[4:])], loader):
            with pytest.raises(UserError, match="parameters are torch.float32 but the data's "
                                                "inputs are torch.float64"):
                call(data)

    class Casting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, t):
            return self.inner(t.float())

    assert HessianOperator(Casting(), loss_fn, (x, y)).to_dense().shape == (26, 26)


@pytest.mark.filterwarnings("ignore:Using a target size")
@pytest.mark.parametrize("loss_fn", [nn.MSELoss(), F.mse_loss,
                                     functools.partial(F.huber_loss, delta=0.5)],
                         ids=["module", "function", "partial"])
def test_measurements_refuse_targets_that_broadcast_against_the_outputs(loss_fn):
    """MSE on outputs (N, 1) against targets (N,) compares every output with every target
    (torch only warns): the Hessian, gradients and losses measured were those of that (N, N)
    loss, as training refuses to train on. Each measurement's entry refuses it, naming both
    shapes, for a batch, a list of batches and a loader; targets of the outputs' shape are
    measured as the dense float64 reference has them."""
    from torch.utils.data import DataLoader, TensorDataset

    from sgdlab import measure
    from sgdlab.errors import UserError
    from sgdlab.operators import full_gradient

    model = tiny_mlp(3, 4, 1)
    x, y = _regression(9)
    y = y[:, 0]
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    calls = [lambda d: HessianOperator(model, loss_fn, d),
             lambda d: GGNOperator(model, loss_fn, d),
             lambda d: measure.hessian_trace(model, loss_fn, d, 2),
             lambda d: measure.hessian_eigenpairs(model, loss_fn, d, 1),
             lambda d: per_sample_gradients(model, loss_fn, d),
             lambda d: full_gradient(model, loss_fn, d),
             lambda d: measure.gradient_covariance(model, loss_fn, d),
             lambda d: measure.batch_statistics(model, loss_fn, d),
             lambda d: measure.ggn_diagonal(model, loss_fn, d),
             lambda d: measure.mean_loss(model, loss_fn, d),
             lambda d: measure.expected_sharpness(model, loss_fn, d, 0.1, 2),
             lambda d: measure.segment_losses(model, loss_fn, d, theta, 1.1 * theta, 3)]
    for targets, shape in ((y, r"\(2,\)"), (y[:, None, None], r"\(2, 1, 1\)")):
        batches = [(x[:4], targets[:4]), (x[4:], targets[4:])]
        loader = DataLoader(TensorDataset(x, targets), batch_size=4)
        for call in calls:
            for data in ((x, targets), batches, loader):
                with pytest.raises(UserError, match=r"compares on the data's first 2 samples "
                                   rf"outputs of shape \(2, 1\) with targets of shape {shape}"):
                    call(data)
    data = (x, y[:, None])
    torch.testing.assert_close(HessianOperator(model, loss_fn, data).to_dense(),
                               dense_hessian_reference(model, loss_fn, data))
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, data),
                               per_sample_gradients_loop(model, loss_fn, data))
    assert measure.mean_loss(model, loss_fn, data) == pytest.approx(
        float(loss_fn(model(x), y[:, None]).detach()))


def test_the_entry_check_runs_one_forward_pass_of_two_samples_at_most():
    """The target-shape check shares the dtype check's probe: an element-wise loss on a model
    that casts its inputs of another dtype is checked in one forward pass of two samples; a
    cross-entropy on inputs of the parameters' dtype costs none."""
    from sgdlab.operators.batches import check_model_data

    class Casting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_mlp(3, 4, 1)

        def forward(self, x):
            return self.inner(x.to(torch.float64))

    model = Casting()
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    x, y = _regression(9)
    check_model_data(model, nn.MSELoss(), (x.float(), y[:, :1]))
    assert seen == [2]
    seen.clear()
    check_model_data(model, nn.CrossEntropyLoss(), tiny_classification(9, 3, 2))
    assert seen == []


def test_a_loader_whose_collate_fn_casts_the_inputs_is_measured():
    """The dtype check read a TensorDataset loader's first sample as its first batch: float64
    samples a collate_fn casts to float32 were refused for a float32 model the loader feeds
    float32. Measured on the batches the loader yields, as on the same data cast beforehand."""
    from torch.utils.data import DataLoader, TensorDataset

    from sgdlab import measure
    from sgdlab.operators import full_gradient

    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = tiny_classification(8, 3, 2)
    loss_fn = nn.CrossEntropyLoss()

    def cast(items):
        xs, ys = zip(*items)
        return torch.stack(xs).float(), torch.stack(ys)

    loader = DataLoader(TensorDataset(x.double(), y), batch_size=4, collate_fn=cast)
    cast_first = [(x[:4].float(), y[:4]), (x[4:].float(), y[4:])]
    torch.testing.assert_close(full_gradient(model, loss_fn, loader),
                               full_gradient(model, loss_fn, cast_first))
    assert measure.mean_loss(model, loss_fn, loader) == pytest.approx(
        measure.mean_loss(model, loss_fn, cast_first))


class _Checkpointed(nn.Module):
    """A float64 MLP whose middle layer runs under ``torch.utils.checkpoint`` (``reentrant``;
    None: not checkpointed), on the raw inputs or on a first layer's outputs (``after``)."""

    def __init__(self, reentrant, after: bool):
        super().__init__()
        torch.manual_seed(0)
        self.first, self.mid, self.head = nn.Linear(3, 3), nn.Linear(3, 4), nn.Linear(4, 2)
        self.double()
        self.reentrant, self.after = reentrant, after

    def forward(self, x):
        h = self.first(x) if self.after else x

        def mid(t):
            return torch.tanh(self.mid(t))

        if self.reentrant is None:
            return self.head(mid(h))
        from torch.utils.checkpoint import checkpoint
        return self.head(checkpoint(mid, h, use_reentrant=self.reentrant))


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")
@pytest.mark.filterwarnings("ignore:per_sample_gradients. vmap failed")
@pytest.mark.parametrize("after", [False, True], ids=["on_inputs", "after_a_layer"])
@pytest.mark.parametrize("reentrant", [True, False])
def test_measurements_through_activation_checkpoints(reentrant, after):
    """The reentrant checkpoint supports ``.backward()`` alone: on the inputs its layer got no
    gradient, so the Hessian through autograd's double backward (0.14 off here) and the full
    gradient were silently wrong; after a layer ``autograd.grad`` failed, and so did
    per-sample gradients. Measurements run it plainly (same values); the non-reentrant one
    needs nothing."""
    from sgdlab.operators import full_gradient

    x, y = tiny_classification(8, 3, 2)
    x = x.double()
    plain, model = _Checkpointed(None, after), _Checkpointed(reentrant, after)
    loss_fn = nn.CrossEntropyLoss()
    h, ggn = (dense_hessian_reference(plain, loss_fn, (x, y)),
              ggn_reference(plain, loss_fn, (x, y)))
    rows = per_sample_gradients_loop(plain, loss_fn, (x, y))
    loader = [(x[:4], y[:4]), (x[4:], y[4:])]
    for data in ((x, y), loader):
        torch.testing.assert_close(HessianOperator(model, loss_fn, data, rop=False,
                                                   taylor=False).to_dense(), h)
        torch.testing.assert_close(GGNOperator(model, loss_fn, data, rop=False,
                                               taylor=False).to_dense(), ggn)
        torch.testing.assert_close(full_gradient(model, loss_fn, data), rows.mean(0))
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y)), rows)


def test_plain_checkpoints_is_put_back_in_any_order_and_reaches_worker_threads():
    """Two threads' measurements that ended in the order they began left torch's reentrant
    checkpoint swapped for good (every later training forward kept its activations): torch's
    class is back after the last one now. Within a block a forward's worker thread (as
    nn.DataParallel's replicas run) has its checkpoints run plainly too, so its layers get
    their gradients under autograd.grad."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch.utils.checkpoint as ck

    from sgdlab.operators.batches import plain_checkpoints

    torch_class = ck.CheckpointFunction
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with plain_checkpoints():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with plain_checkpoints():
            b_in.set()
            a_out.wait(10)

    threads = [threading.Thread(target=f) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert ck.CheckpointFunction is torch_class

    lin = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    with plain_checkpoints(), ThreadPoolExecutor(1) as pool:
        out = pool.submit(ck.checkpoint, lin, x, use_reentrant=True).result()
        grads = torch.autograd.grad(out.sum(), list(lin.parameters()), allow_unused=True)
    assert all(g is not None for g in grads)
    assert ck.CheckpointFunction is torch_class


def _assert_hessian_and_ggn(model, loss_fn, data, hessian, ggn):
    """The model's Hessian and GGN operators, made dense, equal the references given."""
    torch.testing.assert_close(HessianOperator(model, loss_fn, data).to_dense(), hessian)
    torch.testing.assert_close(GGNOperator(model, loss_fn, data).to_dense(), ggn)


def test_an_embedding_with_sparse_gradients_is_measured_as_a_dense_one():
    # every measurement failed on nn.Embedding(sparse=True): "reshape is not implemented for
    # sparse tensors" (flattening autograd's sparse gradient of the embedding's weight)
    from sgdlab.operators import full_gradient

    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 6, (9, 4), generator=g), torch.randint(0, 2, (9,), generator=g)
    batches = [(data[0][:4], data[1][:4]), (data[0][4:], data[1][4:])]
    loss_fn = nn.CrossEntropyLoss()
    torch.manual_seed(0)
    dense = TokenBag(sparse=False).double()
    sparse = TokenBag(sparse=True).double()
    sparse.load_state_dict(dense.state_dict())
    ref = dense_hessian_reference(dense, loss_fn, data)
    grads = per_sample_gradients_loop(dense, loss_fn, data)
    assert bool(ref[:18, :18].any())                 # the embedding's block is not empty
    ggn = ggn_reference(dense, loss_fn, data)
    for d in (data, batches):
        _assert_hessian_and_ggn(sparse, loss_fn, d, ref, ggn)
        torch.testing.assert_close(EmpiricalFisherOperator(sparse, loss_fn, d).to_dense(),
                                   empirical_fisher_reference(grads))
        torch.testing.assert_close(full_gradient(sparse, loss_fn, d), grads.mean(0))
        for method in ("auto", "vmap"):
            torch.testing.assert_close(per_sample_gradients(sparse, loss_fn, d, method=method),
                                       grads)
    assert sparse.emb.sparse                         # the model's flag as it was
    loss_fn(sparse(data[0]), data[1]).backward()
    assert sparse.emb.weight.grad.is_sparse         # and its own backward still sparse


class MixedPrecision(nn.Module):
    """A float32 body and a float64 head: trainable parameters of two dtypes."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(3, 4), nn.Linear(4, 2).double()

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)).double())


def test_integer_inputs_a_model_of_features_refuses_are_named_with_the_cast():
    """Integer inputs (images of bytes) to a model of linear layers failed with torch's "mat1
    and mat2 must have the same dtype, but got Long and Float"; an embedding takes them."""
    from sgdlab import measure
    from sgdlab.errors import UserError

    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = tiny_classification(8, 3, 2)
    x = (x * 10).to(torch.uint8)
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(UserError, match=r"inputs are integers \(torch.uint8\) but the model's "
                                        r"parameters are torch.float32, .*x.to\(torch.float32\)"):
        measure.hessian_trace(model, loss_fn, (x, y), 2)
    tokens = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
    assert measure.gradient_covariance(tokens, loss_fn, (x.long() % 10, y)).dim == 66


class _OneHotTagger(nn.Module):
    """Integer inputs read as one-hot rows, no embedding module; ``features``: its layer's."""

    def __init__(self, vocab: int = 5, features: int | None = None):
        super().__init__()
        self.vocab, self.lin = vocab, nn.Linear(features or vocab, 2)

    def forward(self, x):
        return self.lin(torch.eye(self.vocab, dtype=self.lin.weight.dtype)[x])


def test_integer_inputs_a_model_reads_itself_are_not_blamed_for_its_own_failure():
    """A model that reads integers itself (one-hot, no nn.Embedding) and fails for another
    reason (a shape) was told its integer inputs were the cause and to cast them to float."""
    from sgdlab import measure

    x, y = torch.arange(8) % 5, torch.arange(8) % 2
    loss_fn = nn.CrossEntropyLoss()
    assert measure.gradient_covariance(_OneHotTagger(), loss_fn, (x, y)).dim == 12
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as failed:
        measure.hessian_trace(_OneHotTagger(features=4), loss_fn, (x, y), 2)
    assert "integers" not in str(failed.value)


def test_a_model_with_parameters_of_two_dtypes_is_measured_in_the_widest():
    # Lanczos failed on "dot: expected both vectors to have same dtype" (the operator's
    # vectors in the first parameter's float32, its products in float64), the gradient
    # covariance on "expected m1 and m2 to have the same dtype"
    from sgdlab.measure import gradient_covariance, hessian_diagonal, hessian_top_eigenvalue

    torch.manual_seed(0)
    model = MixedPrecision()
    x, y = tiny_classification(9, 3, 2, dtype=torch.float32)
    wide = copy.deepcopy(model).double()             # the reference: all of it in float64
    ref = dense_hessian_reference(wide, nn.CrossEntropyLoss(), (x.double(), y))
    grads = per_sample_gradients_loop(wide, nn.CrossEntropyLoss(), (x.double(), y))
    loss_fn, tol = nn.CrossEntropyLoss(), dict(rtol=1e-5, atol=1e-6)
    for d in ((x, y), [(x[:4], y[:4]), (x[4:], y[4:])]):
        op = HessianOperator(model, loss_fn, d)
        assert op.dtype == torch.float64
        torch.testing.assert_close(op.to_dense(), ref, **tol)
        # the autograd route: each parameter's slice of a float64 vector in its own dtype
        plain = HessianOperator(model, loss_fn, d, rop=False, taylor=False)
        torch.testing.assert_close(plain.to_dense(), ref, **tol)
        top = hessian_top_eigenvalue(model, loss_fn, d, generator=torch.Generator().manual_seed(0))
        assert top == pytest.approx(float(torch.linalg.eigvalsh(ref)[-1]), rel=1e-5)
        for method in ("auto", "vmap"):
            g = per_sample_gradients(model, loss_fn, d, method=method)
            assert g.dtype == torch.float64
            torch.testing.assert_close(g, grads, **tol)
        cov = gradient_covariance(model, loss_fn, d)
        centred = grads - grads.mean(0)
        torch.testing.assert_close(cov.dense(), centred.T @ centred / len(grads), **tol)
        torch.testing.assert_close(
            hessian_diagonal(model, loss_fn, d, exact=True, operator="empirical_fisher").value,
            grads.square().mean(0), **tol)
    assert model.body.weight.dtype == torch.float32 and model.head.weight.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_is_measured_with_a_warning_naming_the_cast(dtype):
    # its products carry bfloat16's rounding: a 5-8-3 MLP's λ_max came out 11-35% below the
    # float64 copy's, without a word
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
    x, y = torch.randn(16, 5).to(dtype), torch.randint(3, (16,))
    with pytest.warns(UserWarning, match=rf"parameters are {dtype}: .*float32 or float64 copy "
                                         r"\(sgdlab.operators.params.copy_module\(model\)"
                                         r".double\(\), with the data cast alike"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HessianOperator(model.float(), nn.CrossEntropyLoss(), (x.float(), y))


def test_the_half_precision_warnings_copy_works_on_a_hook_based_weight_norm():
    # the copy the warning suggested, copy.deepcopy(model).double(), failed on such a model:
    # "Only Tensors created explicitly by the user (graph leaves) support the deepcopy protocol"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)       # the hook-based one is deprecated
        model = nn.Sequential(nn.utils.weight_norm(nn.Linear(5, 8)), nn.Tanh(),
                              nn.Linear(8, 3)).to(torch.bfloat16)
    x, y = torch.randn(16, 5), torch.randint(3, (16,))
    model(x.bfloat16())                            # weight = g v / ‖v‖: a non-leaf attribute
    with pytest.warns(UserWarning, match=r"\(sgdlab.operators.params.copy_module\(model\)"
                                         r".double\(\), with the data cast alike"):
        HessianOperator(model, nn.CrossEntropyLoss(), (x.bfloat16(), y))
    wide = sgdlab.operators.params.copy_module(model).double()         # the code it names
    assert wide[0].weight_v.dtype == torch.float64 and model[0].weight_v.dtype == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op = HessianOperator(wide, nn.CrossEntropyLoss(), (x.double(), y))
    assert op.dtype == torch.float64


class BagClassifier(nn.Module):
    """An ``nn.EmbeddingBag`` over padded tokens (0 pads; row 3 is all padding, an empty bag),
    the rows of x as bags or (``runs``) x flattened with offsets, or with ``plain`` the same
    function written out in ops with a double backward."""

    def __init__(self, mode: str, plain: bool = False, runs: bool = False):
        super().__init__()
        self.bag, self.head = nn.EmbeddingBag(6, 3, mode=mode, padding_idx=0), nn.Linear(3, 2)
        self.plain, self.runs = plain, runs

    def forward(self, x):
        if self.runs:
            return self.head(torch.tanh(self.bag(x.flatten(),
                                                 torch.arange(0, x.numel(), x.shape[1]))))
        if not self.plain:
            return self.head(torch.tanh(self.bag(x)))
        keep = (x != 0).unsqueeze(-1)
        e = F.embedding(x, self.bag.weight)
        if self.bag.mode == "max":
            h = torch.where(keep.any(1), torch.where(keep, e, -torch.inf).amax(1), 0.0)
        else:
            h = (e * keep).sum(1)
            h = h / keep.sum(1).clamp_min(1) if self.bag.mode == "mean" else h
        return self.head(torch.tanh(h))


@pytest.mark.parametrize("runs", [False, True])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_an_embedding_bag_has_a_hessian(mode, runs):
    # torch's embedding bag has no double backward: every Hessian and GGN product failed on
    # "the derivative for '_embedding_bag_backward' is not implemented"
    from sgdlab.measure import hessian_top_eigenvalue
    from sgdlab.operators import full_gradient

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (8, 4), generator=g)
    x[3] = 0
    data, loss_fn = (x, torch.randint(0, 2, (8,), generator=g)), nn.CrossEntropyLoss()
    batches = [(x[:5], data[1][:5]), (x[5:], data[1][5:])]
    torch.manual_seed(0)
    model = BagClassifier(mode, runs=runs).double()
    plain = BagClassifier(mode, plain=True).double()
    plain.load_state_dict(model.state_dict())
    ref = dense_hessian_reference(plain, loss_fn, data)
    assert bool(ref[:18, :18].any())                 # the bag's block is not empty
    ggn = ggn_reference(plain, loss_fn, data)
    for d in (data, batches):
        _assert_hessian_and_ggn(model, loss_fn, d, ref, ggn)
        torch.testing.assert_close(
            hessian_top_eigenvalue(model, loss_fn, d, tol=1e-10,
                                   generator=torch.Generator().manual_seed(1)),
            float(torch.linalg.eigvalsh(ref)[-1]))
        torch.testing.assert_close(full_gradient(model, loss_fn, d),
                                   per_sample_gradients_loop(plain, loss_fn, data).mean(0))
    assert type(model.bag) is nn.EmbeddingBag        # the module as it was


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_only_second_order_and_vmapped_passes_compose_an_embedding_bag(mode, monkeypatch):
    # the composed bag forms the (B, L, D) embeddings, 1.1-3x slower than torch's fused op:
    # the gradient, the loss and ε-sharpness's gradient ascent run torch's bag and equal what
    # the composed one gave; Hessian and GGN products (torch's bag has no double backward) and
    # the vmapped per-sample gradients (no batching rule: its fallback is the slower) compose
    from sgdlab.measure import epsilon_sharpness, gradient_covariance, mean_loss
    from sgdlab.operators import full_gradient
    from sgdlab.operators.batches import _ComposedEmbeddingBag, bags_composed

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (8, 4), generator=g)
    data, loss_fn = (x, torch.randint(0, 2, (8,), generator=g)), nn.CrossEntropyLoss()
    torch.manual_seed(0)
    model = BagClassifier(mode).double()
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=g,
                    dtype=torch.float64)

    def first_order():
        return [full_gradient(model, loss_fn, data),
                torch.tensor(mean_loss(model, loss_fn, data)),
                torch.tensor(epsilon_sharpness(
                    model, loss_fn, data, num_steps=3,
                    generator=torch.Generator().manual_seed(2)).max_loss)]

    with bags_composed(model):         # as every measurement ran before
        composed = first_order()
    calls = []
    forward = _ComposedEmbeddingBag.forward
    monkeypatch.setattr(_ComposedEmbeddingBag, "forward",
                        lambda self, *a: calls.append(1) or forward(self, *a))
    native = first_order()
    assert calls == []
    for a, b in zip(native, composed):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)
    for product in (lambda: HessianOperator(model, loss_fn, data, cache_graph=False) @ v,
                    lambda: GGNOperator(model, loss_fn, data, cache_graph=False) @ v,
                    lambda: per_sample_gradients(model, loss_fn, data, method="vmap"),
                    lambda: EmpiricalFisherOperator(model, loss_fn, data) @ v,
                    lambda: gradient_covariance(model, loss_fn, data).factor):
        product()
        assert calls
        calls.clear()
    assert type(model.bag) is nn.EmbeddingBag


def test_to_dense_in_chunks_scipy_view_and_operator_algebra_match_dense():
    """Dense H of a 3-4-2 MLP (d = 26) by columns in chunks that do not divide d, the scipy
    view's products, and -H, c·H, H - H', H + H' against the float64 reference."""
    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(9, 3, 2), nn.CrossEntropyLoss()
    h = dense_hessian_reference(model, loss_fn, data)
    op = HessianOperator(model, loss_fn, data)
    for chunk in (4, 7, 26):
        torch.testing.assert_close(op.to_dense(chunk_size=chunk), h)
    v = torch.randn(h.shape[0], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scipy_op = op.to_scipy()
    torch.testing.assert_close(torch.from_numpy(scipy_op.matvec(v[:, 0].numpy())), h @ v[:, 0])
    torch.testing.assert_close(torch.from_numpy(scipy_op.rmatvec(v[:, 0].numpy())), h @ v[:, 0])
    b = torch.randn(h.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    b = b + b.T
    for combined, want in ((-op, -h), (-3.0 * op, -3 * h), (op * 0.5, 0.5 * h),
                           (op - b, h - b), (op + b, h + b), (as_operator(b) - op, b - h)):
        torch.testing.assert_close(combined.matvec(v[:, 0]), want @ v[:, 0])
        torch.testing.assert_close(combined.matmat(v), want @ v)
        torch.testing.assert_close(combined.quadratic_forms(v), (v * (want @ v)).sum(0))
    # vectors of another dtype are taken in the operator's (float64 products, not float32's)
    for product in (op.matvec, op.matmat, op.quadratic_forms):
        assert product(v.float()[:, 0] if product is op.matvec else v.float()).dtype == h.dtype
    torch.testing.assert_close(op.matvec(v[:, 0].float()), h @ v[:, 0].float().double())
    narrow = as_operator(b).to(torch.float32)
    assert narrow.dtype == torch.float32 and narrow.matvec(v[:, 0]).dtype == torch.float32
    # every column a product: k for a (d, k) block, one for a vector
    op.num_matvecs = 0
    op.matvec(v[:, 0])
    op.matmat(v)
    op.quadratic_forms(v)
    assert op.num_matvecs == 1 + 3 + 3


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_the_kept_graph_of_one_batch_sees_that_batchs_draw_of_dropout(kind):
    """The autograd route keeps one batch's graph: its forward pass draws the dropout masks of
    batch 0, as the R-op route and every forward of a product do, so both routes give the
    curvature of the loss under that one mask (dense float64 reference on the masked net)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.5), nn.Linear(6, 2)).double()
    x, y = tiny_classification(8, 3, 2)
    loss_fn = nn.CrossEntropyLoss()
    cls, reference = {"hessian": (HessianOperator, dense_hessian_reference),
                      "ggn": (GGNOperator, ggn_reference)}[kind]
    with pytest.warns(UserWarning, match="dropout in train mode"):
        kept = cls(model, loss_fn, (x, y), rop=False, taylor=False)
    assert kept._cached_graph is not None
    with kept.fixed_randomness(0):
        mask = model[2](torch.ones(len(x), 6, dtype=torch.float64))
    masked = copy.deepcopy(model)
    masked[2] = _Times(mask)
    torch.testing.assert_close(kept.to_dense(), reference(masked, loss_fn, (x, y)))
