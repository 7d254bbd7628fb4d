"""What a measurement reads of a model's randomness (sgdlab.operators.batches): the dropout
that recurrent layers and attention draw without a dropout module, float64; and the gradient
hooks it holds."""
import warnings
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.errors import UserError
from sgdlab.measure import ggn_diagonal, mean_loss
from sgdlab.models.recurrent import LSTMStack
from sgdlab.operators import HessianOperator
from sgdlab.operators.batches import (bags_composed, cast_batches, check_batch_loss,
                                      check_batch_rows, check_data, check_model_data,
                                      check_target_shape, chunk_loss_problem, concat_batches,
                                      fixed_randomness, gradient_hooks_held, iterate_batches,
                                      iterate_chunks, loss_derivatives, num_samples,
                                      stochastic_modules)
from sgdlab.testing import TinyAttention, memory_budget_for

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("data", [3, 0.5, object()])
def test_data_that_is_no_batch_nor_iterable_is_named(data):
    """A number failed deep inside the passes on "'int' object is not iterable"."""
    with pytest.raises(UserError, match=r"^data is .* \(a (int|float|object)\): measurements "
                                        r"take a batch \(x, y\) or an iterable of batches$"):
        check_data(data)


class _Recurrent(nn.Module):
    """Tokens -> a two-layer LSTM with dropout between its layers -> a linear head."""

    def __init__(self, layers: int = 2):
        super().__init__()
        self.emb, self.head = nn.Embedding(6, 3), nn.Linear(3, 2)
        with warnings.catch_warnings():     # torch warns that one layer has no dropout
            warnings.simplefilter("ignore")
            self.rnn = nn.LSTM(3, 3, num_layers=layers, dropout=0.5, batch_first=True)

    def forward(self, x):
        return self.head(self.rnn(self.emb(x))[1][0][-1])


class _Stack(nn.Module):
    """Tokens -> sgdlab's own two-layer LSTM (``F.dropout`` between its layers) -> head."""

    def __init__(self):
        super().__init__()
        self.rnn, self.head = LSTMStack(6, 3, layers=2, dropout=0.5), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[:, -1])


def test_dropout_inside_recurrent_layers_and_attention_is_randomness_too():
    """nn.LSTM's dropout between layers, nn.MultiheadAttention's and sgdlab's own
    LSTMStack's draw masks with no dropout module: the operators did not say the curvature is
    that of one draw, ggn_diagonal blamed a batch statistic, and a mean loss in chunks of
    samples took other masks than the whole batch (0.6586 for 0.6603 on the LSTM) instead of
    refusing as for nn.Dropout."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 6, (40, 4), generator=g), torch.randint(0, 2, (40,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    for cls, name in ((_Recurrent, r"layer 'rnn' \(LSTM\)"),
                      (partial(TinyAttention, dropout=0.5),
                       r"layer 'att' \(MultiheadAttention\)"),
                      (_Stack, r"layer 'rnn' \(LSTMStack\)")):
        torch.manual_seed(0)
        model = cls().double()
        with pytest.warns(UserWarning, match=name + ": dropout in train mode"):
            HessianOperator(model, loss_fn, (x, y))
        with pytest.raises(UserError, match=name + " draws dropout masks in train mode"):
            ggn_diagonal(model, loss_fn, (x, y))
        with pytest.raises(UserError, match=name + r" draw\(s\) random numbers once per batch"):
            mean_loss(model, loss_fn, (x, y), memory_budget=memory_budget_for(model, x, 5))
        # the whole batch: the loss under the fixed draw of batch 0
        with torch.no_grad(), fixed_randomness(model, torch.device("cpu"), 0):
            ref = float(F.cross_entropy(model(x), y))
        assert mean_loss(model, loss_fn, (x, y)) == pytest.approx(ref, rel=1e-14)
        model.eval()
        assert stochastic_modules(model) == []
    # one layer: torch applies no dropout between layers
    assert stochastic_modules(_Recurrent(layers=1)) == []


def test_the_gradient_hooks_held_come_back_in_order_and_removable():
    lin = nn.Linear(2, 1).double()
    x = torch.ones(1, 2, dtype=torch.float64, requires_grad=True)   # no warning from torch
    calls = []
    first = lin.weight.register_hook(lambda g: calls.append("first") or 2 * g)
    lin.weight.register_hook(lambda g: calls.append("second") or 3 * g)
    lin.register_full_backward_pre_hook(lambda m, go: calls.append("module") or None)

    def grad():
        return torch.autograd.grad(lin(x).sum(), lin.weight)[0]

    with pytest.raises(RuntimeError, match="inside"), gradient_hooks_held(lin):
        assert grad().tolist() == [[1.0, 1.0]] and calls == []
        lin.weight.register_hook(lambda g: calls.append("within") or g)
        raise RuntimeError("inside")                    # put back on an error as well
    assert grad().tolist() == [[6.0, 6.0]]
    assert calls == ["module", "first", "second", "within"]
    first.remove()
    assert grad().tolist() == [[3.0, 3.0]]


def test_loss_derivatives_walks_the_modules_once(monkeypatch):
    """One walk for the embeddings' flags and the hooks' tables; nested (the hooks held
    already), one walk for the embeddings alone. Both put back on exit, as they were."""
    bag = nn.EmbeddingBag(6, 3, sparse=True, scale_grad_by_freq=True, dtype=torch.float64)
    model = nn.Sequential(bag, nn.Linear(3, 1).double())
    model[1].weight.register_hook(lambda g: 2 * g)
    model[1].register_full_backward_pre_hook(lambda m, go: None)
    walks = []
    modules = model.modules
    monkeypatch.setattr(model, "modules", lambda: walks.append(1) or modules())
    x = torch.tensor([[0, 1, 1]])

    def grads():
        out = model(x).sum()
        return torch.autograd.grad(out, [bag.weight, model[1].weight])

    with loss_derivatives(model):
        assert len(walks) == 1
        with loss_derivatives(model):
            assert len(walks) == 2
            g_bag, g_lin = grads()
        assert not (bag.sparse or bag.scale_grad_by_freq)
    assert not g_bag.is_sparse and g_bag[1].tolist() == [2 * v for v in g_bag[0].tolist()]
    assert g_lin.tolist() == [model[0](x)[0].tolist()]          # the hook's x2 not applied
    assert bag.sparse and bag.scale_grad_by_freq
    assert len(model[1].weight._backward_hooks) == 1 and len(model[1]._backward_pre_hooks) == 1


def test_a_loss_that_reads_the_parameters_is_refused_unless_the_caller_takes_it():
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)

    def decayed(out, t):
        return F.mse_loss(out, t) + 1e-3 * model.weight.square().sum()

    with pytest.raises(UserError, match="reads the model's parameters"):
        check_model_data(model, decayed, (x, y))
    check_model_data(model, decayed, (x, y), loss_may_read_params=True)


def _bag_pair(**kw) -> tuple[nn.EmbeddingBag, nn.EmbeddingBag]:
    """Two float64 bags with the same weights: one left as torch's, one for bags_composed."""
    torch.manual_seed(0)
    ref = nn.EmbeddingBag(7, 3, dtype=torch.float64, **kw)
    composed = nn.EmbeddingBag(7, 3, dtype=torch.float64, **kw)
    composed.load_state_dict(ref.state_dict())
    return ref, composed


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_the_composed_embedding_bag_is_torch_s_function(mode, padding_idx):
    # within bags_composed a bag computes its sum, mean or max in ops with a double backward:
    # the outputs and gradients are torch's, for (B, L) rows, 1-d runs between offsets (an
    # empty bag, a bag of padding), include_last_offset, max_norm and per_sample_weights
    tokens = torch.tensor([[1, 2, 2, 0], [0, 0, 0, 0], [3, 4, 5, 6]])
    flat, offsets = torch.tensor([1, 2, 2, 0, 3, 4, 5, 6, 1]), torch.tensor([0, 3, 3, 5])
    weights = torch.rand(3, 4, dtype=torch.float64) if mode == "sum" else None
    cases = [({}, (tokens,)), ({}, (flat, offsets)), ({}, (tokens, None, weights)),
             ({"include_last_offset": True}, (flat, torch.tensor([0, 3, 3, 5, 9]))),
             ({"max_norm": 1.0}, (tokens,))]
    if mode == "sum":
        cases.append(({}, (flat, offsets, torch.rand(9, dtype=torch.float64))))
    for kw, args in cases:
        ref, composed = _bag_pair(mode=mode, padding_idx=padding_idx, **kw)
        out = ref(*args)
        g_ref = torch.autograd.grad(out.sin().sum(), ref.weight)[0]
        with bags_composed(composed):
            assert type(composed) is not nn.EmbeddingBag
            out2 = composed(*args)
            g = torch.autograd.grad(out2.sin().sum(), composed.weight, create_graph=True)[0]
        torch.testing.assert_close(out2, out, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(g, g_ref, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(composed.weight, ref.weight, rtol=0, atol=0)   # max_norm's
        assert type(composed) is nn.EmbeddingBag


def test_the_composed_embedding_bag_refuses_what_torch_s_refuses():
    # per_sample_weights in mode "mean" or "max" or of another shape than the input's, and
    # bags of no token in a (B, 0) input fail in torch's bag (in training): the composed one
    # took them (the mean of empty rows NaN, weights broadcast along the bags)
    flat, offsets = torch.tensor([1, 2, 2, 0]), torch.tensor([0, 2])
    tokens = torch.tensor([[1, 2], [3, 4]])
    cases = [({"mode": "mean"}, (tokens, None, torch.rand(2, 2, dtype=torch.float64))),
             ({"mode": "max"}, (flat, offsets, torch.rand(4, dtype=torch.float64))),
             ({"mode": "sum"}, (tokens, None, torch.rand(2, dtype=torch.float64))),
             ({"mode": "mean"}, (torch.zeros(2, 0, dtype=torch.long),))]
    for kw, args in cases:
        ref, composed = _bag_pair(**kw)
        with pytest.raises((RuntimeError, ValueError)) as torch_s:
            ref(*args)
        with bags_composed(composed), pytest.raises(type(torch_s.value)) as composed_s:
            composed(*args)
        assert str(composed_s.value) == str(torch_s.value)


@pytest.mark.parametrize("chunk_size, sizes", [(2, [2, 2, 1, 2]), (None, [5, 2]), (9, [5, 2])])
def test_iterate_chunks_cuts_each_batch_and_skips_the_empty_ones(chunk_size, sizes):
    x, y = torch.arange(7.0)[:, None], torch.arange(7)
    data = [(x[:5], y[:5]), (x[:0], y[:0]), (x[5:], y[5:])]
    chunks = list(iterate_chunks(data, None, chunk_size))
    assert [len(cx) for cx, _ in chunks] == sizes
    assert torch.equal(torch.cat([cy for _, cy in chunks]), y)


def _batches(n: int = 7, split: int = 3):
    x = torch.arange(2.0 * n, dtype=torch.float64).view(n, 2).requires_grad_(True)
    y = torch.arange(n)
    return x, y, [(x[:split], y[:split]), (x[split:], y[split:])]


def test_iterate_batches_reads_a_list_pair_as_one_batch_and_detaches_it():
    x, y, batches = _batches()
    got = list(iterate_batches([x, y]))            # a list [x, y] is one batch, as (x, y)
    assert len(got) == 1 and torch.equal(got[0][0], x) and torch.equal(got[0][1], y)
    for bx, _ in list(iterate_batches(batches)) + got:
        assert not bx.requires_grad                # activations kept as data: no graph


def test_a_loader_of_triples_or_dicts_is_named_with_the_pairs_to_pass():
    # a loader of (x, y, index) triples or of a tokenizer's dicts was told "got list" or
    # "got dict", nothing of what it held or what to pass instead
    x, y, _ = _batches()
    with pytest.raises(UserError, match=r"batch 0 is not an \(inputs, targets\) pair of "
                       r"tensors \(got a list of 3 items \(Tensor, Tensor, int\)\): .* "
                       r"\[\(b\[0\], b\[1\]\) for b in loader\]"):
        list(iterate_batches([[x, y, 0]]))
    records = [{"input_ids": x, "attention_mask": x, "labels": y}]
    with pytest.raises(UserError, match=r"\(got a dict with keys 'input_ids', 'attention_mask',"
                       r" 'labels'\): .* \[\(b\['input_ids'\], b\['labels'\]\) for b in"):
        list(iterate_batches(records))


def test_single_samples_without_a_batch_axis_are_named():
    """A loader with batch_size=None over a TensorDataset, or a list of (x[i], y[i]), gives
    samples without a batch axis: len(x) counted their features as samples (a batch of five
    and one such sample: a mean loss 0.15 off), and per-sample passes failed on "slice()
    cannot be applied to a 0-dim tensor"."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(UserError, match=r"batch_size=None over a TensorDataset: its items are "
                                        r"single samples .* give the loader a batch_size"):
        mean_loss(model, loss_fn, DataLoader(TensorDataset(x, y), batch_size=None))
    with pytest.raises(UserError, match=r"data: batch 1 has a 0-d target and inputs of shape "
                                        r"\(3,\): one sample without a batch axis"):
        mean_loss(model, loss_fn, [(x[:5], y[:5]), (x[5], y[5])])
    # a dataset that gives whole batches by index is read without a batch size
    batched = [(x[:4], y[:4]), (x[4:], y[4:])]
    assert mean_loss(model, loss_fn, DataLoader(batched, batch_size=None)) == pytest.approx(
        mean_loss(model, loss_fn, (x, y)), rel=1e-12)


def test_a_batch_of_one_sample_in_train_mode_batch_norm_is_named():
    """torch's "Expected more than 1 value per channel when training" named no batch (a
    loader's last partial batch, most often): named, with model.eval(); a batch of one
    image, several values per channel, is measured; the model is left as it was."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(),
                          nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1])
    loss_fn, stats = nn.CrossEntropyLoss(), model[1].running_mean.clone()
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    with pytest.raises(UserError, match=r"data: batch 2 \(the last, of 5 samples in batches of "
                                        r"2\) holds one sample, and layer '1' \(BatchNorm1d\) "
                                        r"normalises .* call model.eval\(\)"):
        HessianOperator(model, loss_fn, loader)
    with pytest.raises(UserError, match=r"data: batch 1 holds one sample"):
        mean_loss(model, loss_fn, [(x[:4], y[:4]), (x[4:], y[4:])])
    assert model.training and torch.equal(model[1].running_mean, stats)
    model.eval()
    HessianOperator(model, loss_fn, loader)
    images = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten(),
                           nn.Linear(8, 2)).double()
    mean_loss(images, loss_fn, (torch.randn(1, 1, 2, 2, dtype=torch.float64), y[:1]))


def test_num_samples_and_concat_batches_count_every_sample():
    x, y, batches = _batches()
    assert num_samples(batches) == 7 and num_samples((x, y)) == 7
    cx, cy = concat_batches(batches)
    assert torch.equal(cx, x) and torch.equal(cy, y) and not cx.requires_grad
    sx, _ = concat_batches((x, y))
    assert torch.equal(sx, x) and not sx.requires_grad


def test_cast_batches_casts_floating_inputs_and_targets_and_keeps_labels():
    x, y, batches = _batches()
    yf = y.double()[:, None]
    cast = [cast_batches((x, y), torch.float32), cast_batches((x, yf), torch.float32),
            *cast_batches(batches, torch.float32), *cast_batches([(x, yf)], torch.float32)]
    assert [(bx.dtype, by.dtype) for bx, by in cast] == [
        (torch.float32, torch.int64), (torch.float32, torch.float32),
        (torch.float32, torch.int64), (torch.float32, torch.int64),
        (torch.float32, torch.float32)]


@pytest.mark.parametrize("x_shape, n_targets, refused", [
    ((5, 3), 4, True), ((4, 3), 5, True), ((5, 3), 5, False),
    ((5, 3), 1, False),                 # one placeholder target for five samples
    ((7, 1, 3), 1, True),               # one sequence, time first: (T, 1, F)
    ((5, 1, 4, 4), 1, False)])          # images of one channel with a placeholder target
def test_check_batch_rows_compares_the_samples_of_inputs_and_targets(x_shape, n_targets,
                                                                     refused):
    x, y = torch.zeros(x_shape), torch.zeros(n_targets)
    if refused:
        with pytest.raises(UserError, match="along dimension 0"):
            check_batch_rows(x, y)
    else:
        check_batch_rows(x, y)


def test_check_batch_loss_refuses_what_batches_would_average_wrongly():
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset, default_collate

    x, y = torch.zeros(6, 2), torch.tensor([0, 1, 2, 0, 1, -100])
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    summed = nn.CrossEntropyLoss(reduction="sum")
    check_batch_loss(summed, (x, y))               # one batch: its weight cancels
    with pytest.raises(UserError, match="reduction='sum'"):
        check_batch_loss(summed, batches)
    with pytest.raises(UserError, match="reduction='sum'"):
        check_batch_loss(summed, DataLoader(TensorDataset(x, y), batch_size=3))
    check_batch_loss(summed, DataLoader(TensorDataset(x, y), batch_size=6))
    check_batch_loss(nn.CrossEntropyLoss(weight=torch.ones(3)), batches[:1] * 2)
    with pytest.raises(UserError, match="class weights"):
        check_batch_loss(nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 1.0])),
                         batches[:1] * 2)
    with pytest.raises(UserError, match="ignore_index"):
        check_batch_loss(nn.CrossEntropyLoss(), batches)
    # a collate_fn of one's own may change the targets: not looked at
    ds = TensorDataset(x, y)
    check_batch_loss(nn.CrossEntropyLoss(), DataLoader(
        ds, batch_size=3, collate_fn=lambda rows: default_collate(rows)))
    # drawn with replacement, every pass reads other samples: refused as data
    with pytest.raises(UserError, match="with replacement"):
        check_batch_loss(nn.CrossEntropyLoss(), DataLoader(
            ds, batch_size=3, sampler=RandomSampler(ds, replacement=True)))
    assert chunk_loss_problem(nn.CrossEntropyLoss(), y) is not None
    assert chunk_loss_problem(nn.CrossEntropyLoss(), y[:5]) is None


def test_check_target_shape_refuses_broadcasting_targets():
    with pytest.raises(UserError, match="broadcasts"):
        check_target_shape(nn.MSELoss(), torch.zeros(4, 1), torch.zeros(4))
    check_target_shape(nn.MSELoss(), torch.zeros(4, 1), torch.zeros(4, 1))


def test_a_loader_that_reads_another_set_of_samples_each_pass_is_refused():
    # a shuffled loader that drops its last partial batch left out other samples at every
    # pass: Lanczos' products were of different matrices, its "eigenvalues" those of no data
    # set, and two mean losses of one model unequal
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset, WeightedRandomSampler

    from sgdlab.measure import hessian_eigenpairs
    from sgdlab.testing import tiny_classification, tiny_mlp

    model, (x, y) = tiny_mlp(3, 4, 2), tiny_classification(10, 3, 2)
    ds, loss_fn = TensorDataset(x, y), nn.CrossEntropyLoss()
    refused = {
        "drops the last partial batch": DataLoader(ds, batch_size=4, shuffle=True,
                                                   drop_last=True),
        "with replacement": DataLoader(ds, batch_size=4,
                                       sampler=RandomSampler(ds, replacement=True)),
        "by weight": DataLoader(ds, batch_size=4,
                                sampler=WeightedRandomSampler(torch.ones(10), 10)),
        "num_samples=6 of its 10": DataLoader(ds, batch_size=4,
                                              sampler=RandomSampler(ds, num_samples=6))}
    for why, loader in refused.items():
        with pytest.raises(UserError, match=f"DataLoader that .*{why}.*another set of samples"):
            hessian_eigenpairs(model, loss_fn, loader, 2)
        with pytest.raises(UserError, match=why):
            mean_loss(model, loss_fn, loader)
    # the same samples at every pass: all of them shuffled, or the same ones dropped
    full = mean_loss(model, loss_fn, (x, y))
    for loader in (DataLoader(ds, batch_size=4, shuffle=True),
                   DataLoader(ds, batch_size=5, shuffle=True, drop_last=True)):
        assert mean_loss(model, loss_fn, loader) == pytest.approx(full, rel=1e-12)
    assert mean_loss(model, loss_fn, DataLoader(ds, batch_size=4, drop_last=True)) == \
        pytest.approx(mean_loss(model, loss_fn, (x[:8], y[:8])), rel=1e-12)


def test_a_shuffling_loader_is_refused_where_the_batching_changes_the_loss():
    # train-mode batch norm (each batch's statistics) and dropout (a draw per batch) under a
    # shuffling loader: other batches at every pass, so two Lanczos runs on one model gave
    # two λ_max far apart; in eval mode the loss is the samples' mean, whatever the batching
    from torch.utils.data import DataLoader, SubsetRandomSampler, TensorDataset

    from sgdlab.measure import hessian_top_eigenvalue
    from sgdlab.testing import tiny_classification

    x, y = tiny_classification(10, 3, 2)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    torch.manual_seed(0)
    for layer, why in [(nn.BatchNorm1d(4), "BatchNorm1d.*own statistics"),
                       (nn.Dropout(0.5), "Dropout.*one set of dropout masks per batch")]:
        model = nn.Sequential(nn.Linear(3, 4), layer, nn.Tanh(), nn.Linear(4, 2)).double()
        with pytest.raises(UserError, match=f"DataLoader that shuffles.*{why}.*shuffle=False"):
            hessian_top_eigenvalue(model, loss_fn, loader)
        with pytest.raises(UserError, match="DataLoader that shuffles"):
            HessianOperator(model, loss_fn, loader)
        HessianOperator(model, loss_fn, DataLoader(TensorDataset(x, y), batch_size=4))
        # a subset sampler reshuffles its indices at every pass as well
        subset = DataLoader(TensorDataset(x, y), batch_size=4,
                            sampler=SubsetRandomSampler(range(8)))
        with pytest.raises(UserError, match="DataLoader that shuffles"):
            HessianOperator(model, loss_fn, subset)
        model.eval()
        torch.testing.assert_close(HessianOperator(model, loss_fn, loader).to_dense(),
                                   HessianOperator(model, loss_fn, (x, y)).to_dense())
