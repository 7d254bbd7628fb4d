"""diag A: exact columns and the Rademacher estimator against dense float64 references."""
import pytest
import torch
from torch import nn

from sgdlab.errors import UserError
from sgdlab.measure.curvature import diagonal, hessian_diagonal
from sgdlab.testing import (
    dense_hessian_reference, ggn_reference, tiny_classification, tiny_mlp,
)


def _sym(d=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    return (m + m.T) / 2


def test_exact_diagonal_of_a_dense_matrix_in_any_blocks():
    a = _sym()
    for block in (1, 7, 30):
        est = diagonal(a, exact=True, block_size=block)
        assert est.exact and est.num_samples == 30
        torch.testing.assert_close(est.value, torch.diagonal(a), rtol=0, atol=1e-14)
        assert torch.count_nonzero(est.stderr) == 0


def test_estimator_is_the_mean_of_v_times_av_and_unbiased():
    a = _sym(seed=1)
    m = 400
    est = diagonal(a, m, generator=torch.Generator().manual_seed(3), block_size=64)
    # the same probes drawn by hand: (m, d) Rademacher rows from the same generator stream
    v = torch.randint(0, 2, (m, 30), generator=torch.Generator().manual_seed(3),
                      dtype=torch.float64) * 2 - 1
    samples = v * (v @ a)                       # row k: v_k ⊙ A v_k (A symmetric)
    torch.testing.assert_close(est.value, samples.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(est.stderr, samples.std(0) / m ** 0.5, rtol=1e-9, atol=1e-12)
    # per-probe variance of entry i is Σ_{j≠i} A_ij²: compare with the closed form
    off = (a.square().sum(1) - torch.diagonal(a).square())
    torch.testing.assert_close(est.stderr.square() * m, off, rtol=0.25, atol=0)
    assert bool(((est.value - torch.diagonal(a)).abs() < 4.5 * est.stderr).all())
    # a diagonal matrix is recovered exactly by one probe
    dg = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    one = diagonal(dg, 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(one.value, torch.arange(1.0, 6.0, dtype=torch.float64))
    assert bool(one.stderr.isnan().all())
    with pytest.raises(ValueError, match="num_probes"):
        diagonal(a, 0)


@pytest.mark.parametrize("operator, reference", [("hessian", dense_hessian_reference),
                                                 ("ggn", ggn_reference)])
def test_model_diagonal_matches_the_dense_matrix(operator, reference):
    model = tiny_mlp(3, 4, 2)
    data = tiny_classification(12, 3, 2)
    loss_fn = nn.CrossEntropyLoss()
    ref = torch.diagonal(reference(model, loss_fn, data))
    est = hessian_diagonal(model, loss_fn, data, exact=True, operator=operator)
    torch.testing.assert_close(est.value, ref, rtol=1e-10, atol=1e-12)
    noisy = hessian_diagonal(model, loss_fn, data, 300, operator=operator,
                             generator=torch.Generator().manual_seed(0))
    assert bool(((noisy.value - ref).abs() <= 4.5 * noisy.stderr + 1e-12).all())


@pytest.mark.parametrize("kind", ["mlp_ce", "mlp_mse", "cnn_ce", "skip_ce", "scalar_ce",
                                  "generic_ce", "generic_bce"])
def test_ggn_diagonal_from_backpropagated_factors(kind):
    from sgdlab.measure.curvature import ggn_diagonal
    from sgdlab.testing import tiny_images

    torch.manual_seed(0)
    if kind == "mlp_ce":
        model, data, loss_fn = tiny_mlp(3, 4, 3), tiny_classification(12, 3, 3), \
            nn.CrossEntropyLoss()
    elif kind == "mlp_mse":
        model = tiny_mlp(3, 4, 2)
        x = torch.randn(10, 3, dtype=torch.float64)
        data, loss_fn = (x, torch.randn(10, 2, dtype=torch.float64)), nn.MSELoss()
    elif kind == "generic_ce":    # a plain function: loss Hessians by torch.func + eigh
        model, data = tiny_mlp(3, 4, 3), tiny_classification(12, 3, 3)

        def loss_fn(out, y):
            return nn.functional.cross_entropy(out, y)
    elif kind == "generic_bce":
        model = tiny_mlp(3, 4, 2)
        x = torch.randn(10, 3, dtype=torch.float64)
        data = (x, (torch.rand(10, 2, dtype=torch.float64) > 0.5).double())
        loss_fn = nn.BCEWithLogitsLoss()
    elif kind == "cnn_ce":
        model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(),
                              nn.Linear(48, 3)).double()
        data, loss_fn = tiny_images(6, 2, 6, 3), nn.CrossEntropyLoss()
    elif kind == "scalar_ce":     # a parameter outside any layer: the vmap per-sample path
        class Scaled(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.s = nn.Linear(3, 3), nn.Parameter(torch.tensor(1.5))

            def forward(self, x):
                return torch.tanh(self.a(x)) * self.s

        model, data, loss_fn = Scaled().double(), tiny_classification(9, 3, 3), \
            nn.CrossEntropyLoss()
    else:                         # a module tree: the factored path through hooks
        class Skip(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

            def forward(self, x):
                return self.b(torch.tanh(self.a(x)) + x)

        model, data, loss_fn = Skip().double(), tiny_classification(9, 3, 3), \
            nn.CrossEntropyLoss()
    from sgdlab.testing import ggn_reference

    ref = torch.diagonal(ggn_reference(model, loss_fn, data))
    batches = [(data[0][:4], data[1][:4]), (data[0][4:], data[1][4:])]
    for d in (data, batches):
        torch.testing.assert_close(ggn_diagonal(model, loss_fn, d), ref, rtol=1e-9, atol=1e-12)


def test_ggn_diagonal_on_the_vmap_route_checks_the_data_once(monkeypatch):
    """A model the factored engine declines (layer norm): its per-column per-sample passes
    take the checked vmap engine, not per_sample_gradients' checks (a probe forward on the
    pseudo-loss) for every column; the diagonal is the dense GGN's."""
    import sgdlab.operators.per_sample as per_sample
    from sgdlab.measure.curvature import ggn_diagonal

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Tanh(), nn.Linear(4, 3)).double()
    data, loss_fn = tiny_classification(9, 3, 3), nn.CrossEntropyLoss()
    seen = []
    check = per_sample.check_model_data
    monkeypatch.setattr(per_sample, "check_model_data",
                        lambda *a, **k: seen.append(1) or check(*a, **k))
    ref = torch.diagonal(ggn_reference(model, loss_fn, data))
    torch.testing.assert_close(ggn_diagonal(model, loss_fn, data), ref, rtol=1e-9, atol=1e-12)
    assert seen == []


def test_ggn_diagonal_refuses_a_loss_concave_in_the_outputs():
    from sgdlab.measure.curvature import ggn_diagonal

    model = tiny_mlp(3, 4, 2)
    data = tiny_classification(6, 3, 2)
    with pytest.raises(ValueError, match="not convex"):
        ggn_diagonal(model, lambda out, y: -(out ** 2).mean(), data)


class _Tied(nn.Module):          # two Linear layers sharing one weight tensor
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class _FoldedRows(nn.Module):    # (N, 6) read as (2N, 3) rows by the first layer
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x.reshape(2 * len(x), 3)))
        return self.b(h.reshape(len(x), 6))


@pytest.mark.parametrize("kind", ["tied", "folded"])
def test_ggn_diagonal_of_tied_layers_and_rows_that_are_not_samples(kind):
    # all-Linear networks the one-backward-per-column path must not take
    from sgdlab.measure.curvature import ggn_diagonal
    from sgdlab.operators.per_sample import per_sample_gradients
    from sgdlab.testing import per_sample_gradients_loop

    torch.manual_seed(0)
    model = (_Tied() if kind == "tied" else _FoldedRows()).double()
    x, y = tiny_classification(8, 6 if kind == "folded" else 3, 3)
    loss_fn = nn.CrossEntropyLoss()
    ref = torch.diagonal(ggn_reference(model, loss_fn, (x, y)))
    torch.testing.assert_close(ggn_diagonal(model, loss_fn, (x, y)), ref, rtol=1e-9,
                               atol=1e-12)
    # the factored per-sample engine declines folded rows too
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y)),
                               per_sample_gradients_loop(model, loss_fn, (x, y)),
                               rtol=1e-9, atol=1e-12)


def test_ggn_diagonal_through_an_activation_in_place():
    """``nn.ReLU(inplace=True)`` overwrites the first layer's output: differentiated w.r.t.
    that tensor, the one-backward-per-column path took the gradient w.r.t. the ReLU's output
    for δ, unmasked by its derivative (0.14 off here). That path declines; the per-sample
    one keeps δ from before the ReLU."""
    from sgdlab.measure.curvature import ggn_diagonal

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 3)).double()
    x, y = tiny_classification(8, 3, 3)
    loss_fn = nn.CrossEntropyLoss()
    torch.testing.assert_close(ggn_diagonal(model, loss_fn, (x, y)),
                               torch.diagonal(ggn_reference(model, loss_fn, (x, y))),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("hook", ["layer", "global", "weight"])
def test_ggn_diagonal_under_a_forward_hook_of_the_first_layer(hook):
    """A first layer's forward hook returning twice its output ran before the linear path's
    own hook, which took that output's gradient for δ: the diagonal of the first layer a
    quarter of the GGN's. The path's hook now runs first; a global forward hook (run before
    any of a layer's) declines to the per-sample path. A hook returning o / ‖W‖ uses W
    outside o: the linear path's (Σ δ²)ᵀ a² missed that share (7.7e-3 off); it now declines
    to the per-sample path."""
    from sgdlab.measure.curvature import ggn_diagonal

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = tiny_classification(8, 3, 3)
    loss_fn = nn.CrossEntropyLoss()
    if hook == "global":
        handle = nn.modules.module.register_module_forward_hook(
            lambda m, args, out: 2 * out if m is model[0] else None)
    elif hook == "weight":
        handle = model[0].register_forward_hook(lambda m, args, out: out / m.weight.norm())
    else:
        handle = model[0].register_forward_hook(lambda m, args, out: 2 * out)
    try:
        torch.testing.assert_close(ggn_diagonal(model, loss_fn, (x, y)),
                                   torch.diagonal(ggn_reference(model, loss_fn, (x, y))),
                                   rtol=1e-9, atol=1e-12)
    finally:
        handle.remove()


class _BatchCentred(nn.Module):     # each sample's output depends on the batch's mean
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h - h.mean(0))


@pytest.mark.parametrize("kind", ["batch_mean", "batchnorm_no_running_stats"])
def test_ggn_diagonal_of_a_model_whose_samples_interact(kind):
    """With a batch statistic in the forward pass J_n is the Jacobian of sample n's output
    within the batch, and per-sample passes (each sample alone) gave another matrix's
    diagonal (0.15-0.18 off the dense Jᵀ H J). ggn_diagonal refuses such a model and names
    the way out; hessian_diagonal(exact=True, operator="ggn") takes it: d GGN products."""
    from sgdlab.measure.curvature import ggn_diagonal

    torch.manual_seed(0)
    if kind == "batch_mean":
        model, (x, y) = _BatchCentred().double(), tiny_classification(6, 3, 3)
    else:
        model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2, track_running_stats=False),
                              nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).double().eval()
        x, y = torch.randn(6, 1, 6, dtype=torch.float64), torch.randint(0, 3, (6,))
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(UserError, match=r"samples interact.*exact=True, operator='ggn'"):
        ggn_diagonal(model, loss_fn, (x, y))
    torch.testing.assert_close(
        hessian_diagonal(model, loss_fn, (x, y), exact=True, operator="ggn").value,
        torch.diagonal(ggn_reference(model, loss_fn, (x, y))), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss_fn", [
    nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)),
    nn.CrossEntropyLoss(ignore_index=2),
    nn.CrossEntropyLoss(reduction="sum"),
    nn.MSELoss(reduction="sum"),
], ids=["class_weights", "ignore_index", "ce_sum", "mse_sum"])
def test_ggn_diagonal_is_the_batch_loss_ggn_not_the_single_sample_ones(loss_fn):
    from sgdlab.measure.curvature import ggn_diagonal
    from sgdlab.operators import curvature_operator

    model = tiny_mlp(3, 4, 3)
    x, y = tiny_classification(10, 3, 3)
    if isinstance(loss_fn, nn.MSELoss):
        y = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    else:
        assert bool((y == 2).any()) and bool((y != 2).any())
    ref = torch.diagonal(ggn_reference(model, loss_fn, (x, y)))
    torch.testing.assert_close(ggn_diagonal(model, loss_fn, (x, y)), ref, rtol=1e-9,
                               atol=1e-12)
    # on batches, weighted by size: a summed loss would count each batch's size twice, and
    # a weighted mean (class weights, ignored targets) is normalised per batch, so both are
    # refused there, by the GGN operator too
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    if loss_fn.reduction == "sum":
        with pytest.raises(UserError, match="reduction='sum'"):
            ggn_diagonal(model, loss_fn, batches)
        return
    for measure in (ggn_diagonal, lambda *a: curvature_operator("ggn", *a)):
        with pytest.raises(UserError, match="weighted mean over all samples"):
            measure(model, loss_fn, batches)


def test_ggn_diagonal_under_no_grad():
    """Called inside ``torch.no_grad()`` (an evaluation loop) the all-linear path reshaped
    the network's output without a graph and failed ("element 0 of tensors does not require
    grad"); the other paths and the other curvature measures took it."""
    from sgdlab.measure.curvature import ggn_diagonal

    model = tiny_mlp(3, 4, 3)
    data, loss_fn = tiny_classification(8, 3, 3), nn.CrossEntropyLoss()
    with torch.no_grad():
        got = ggn_diagonal(model, loss_fn, data)
    torch.testing.assert_close(got, torch.diagonal(ggn_reference(model, loss_fn, data)),
                               rtol=1e-9, atol=1e-12)


def test_ggn_diagonal_refuses_dropout_in_train_mode():
    """Its forward pass and its per-class per-sample passes would each draw other masks."""
    from sgdlab.measure import ggn_diagonal

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.3),
                                torch.nn.Linear(4, 2)).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,))
    with pytest.raises(UserError, match=r"layer '1' \(Dropout\) draws dropout masks in train "
                                        r"mode; call model.eval\(\) first"):
        ggn_diagonal(model, torch.nn.CrossEntropyLoss(), (x, y))
    model.eval()
    assert torch.isfinite(ggn_diagonal(model, torch.nn.CrossEntropyLoss(), (x, y))).all()


def test_ggn_diagonal_of_a_model_output_that_is_no_tensor_is_named():
    """Logits returned in a dict: no GGN factors (its outputs are no tensor). The message said
    that the samples interact (the probe could not compare dicts), sending the user to the
    GGN products, which failed on ``'dict' object has no attribute 'detach'``."""
    from sgdlab.measure.curvature import ggn_diagonal
    from sgdlab.testing import DictOutput, dict_logits_loss

    torch.manual_seed(0)
    model, data = DictOutput().double(), tiny_classification()
    for diag in (lambda: ggn_diagonal(model, dict_logits_loss, data),
                 lambda: hessian_diagonal(model, dict_logits_loss, data, exact=True,
                                          operator="ggn")):
        with pytest.raises(UserError, match="needs the model's output as one tensor.*"
                                            "returned a dict"):
            diag()
    torch.testing.assert_close(
        hessian_diagonal(model, dict_logits_loss, data, exact=True).value,
        dense_hessian_reference(model, dict_logits_loss, data).diagonal())


@pytest.mark.parametrize("hook_based", [False, True])
def test_ggn_diagonal_of_train_mode_spectral_norm_leaves_its_vectors(hook_based):
    """A train-mode spectral norm's power iteration moves its vectors u, v at every forward
    pass: ggn_diagonal's own passes (the forward pass, the interaction probe) moved them and
    left them moved. Each pass now starts from the model's vectors, as the GGN products do,
    and the diagonal is theirs."""
    import copy

    from sgdlab.measure.curvature import ggn_diagonal

    torch.manual_seed(3)
    lin = nn.Linear(3, 4)
    lin = nn.utils.spectral_norm(lin) if hook_based else \
        nn.utils.parametrizations.spectral_norm(lin)
    model = nn.Sequential(lin, nn.Tanh(), nn.Linear(4, 2)).double()
    u = lin.weight_u if hook_based else lin.parametrizations.weight[0]._u
    with torch.no_grad():         # far from converged: one more iteration moves it visibly
        u.copy_(torch.nn.functional.normalize(torch.randn_like(u), dim=0))
    x, y = tiny_classification(8, 3, 2)
    data, loss_fn = (x.double(), y), nn.CrossEntropyLoss()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = hessian_diagonal(copy.deepcopy(model), loss_fn, data, exact=True,
                           operator="ggn").value
    got = ggn_diagonal(model, loss_fn, data)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


class _FrozenFloat32Scale(nn.Module):
    """A float64 linear layer after a frozen float32 scale, registered first."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.full((3,), 0.5), requires_grad=False)
        self.lin = nn.Linear(3, 3, dtype=torch.float64)

    def forward(self, x):
        return self.lin(x * self.scale.to(x.dtype))


def test_hessian_diagonal_takes_the_factors_by_the_trainable_parameters_dtype(monkeypatch):
    """The exact GGN diagonal in the operator's own dtype (its trainable parameters') comes
    from the backpropagated factors: it was decided by the first parameter's dtype, a frozen
    float32 one's here, so dtype=torch.float64 took d products instead."""
    import sgdlab.measure.curvature.model as curvature_model

    torch.manual_seed(0)
    model, loss_fn = _FrozenFloat32Scale(), nn.CrossEntropyLoss()
    x, y = tiny_classification(6, 3, 3)
    ref = torch.diagonal(ggn_reference(model, loss_fn, (x, y)))
    factored = curvature_model.ggn_diagonal
    calls = []
    monkeypatch.setattr(curvature_model, "ggn_diagonal",
                        lambda *a: calls.append(1) or factored(*a))
    for dtype in (None, torch.float64):
        est = hessian_diagonal(model, loss_fn, (x, y), exact=True, operator="ggn", dtype=dtype)
        torch.testing.assert_close(est.value, ref, rtol=1e-9, atol=1e-12)
    assert len(calls) == 2
