"""Factored per-sample gradients (linear and convolution layers) against torch.func vmap and
explicit per-sample loops, float64; the Gram-trick products against the dense (N, d) matrix."""
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.errors import UserError
from sgdlab.measure.noise import gradient_covariance
from sgdlab.operators import per_sample_gradients
from sgdlab.operators.factors import _Conv, _Layer, _made_first, per_sample_factors
from sgdlab.testing import (GRUClassifier, TiedByHand, covariance_reference,
                            per_sample_gradients_loop, random_eval_batchnorm,
                            relu_chains_with_ties, tiny_classification, tiny_mlp)

pytestmark = pytest.mark.usefixtures("one_thread")


class _Seq(nn.Module):
    """A linear layer applied at every position of a (N, T, in) sequence."""

    def __init__(self):
        super().__init__()
        self.lin, self.out = nn.Linear(3, 4), nn.Linear(4 * 5, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.lin(x.reshape(len(x), 5, 3))).flatten(1))


def _models():
    torch.manual_seed(0)
    yield "conv2d", nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 2, stride=2, dilation=1, groups=2, bias=False), nn.Tanh(),
        nn.Flatten(), nn.Linear(6, 3)), (2, 4, 4)
    yield "conv1d", nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=2, dilation=2), nn.Softplus(), nn.Conv1d(3, 2, 2, stride=2),
        nn.Flatten(), nn.Linear(12, 3)), (2, 12)
    yield "bn-eval", nn.Sequential(
        nn.Conv2d(2, 3, 3), random_eval_batchnorm(nn.BatchNorm2d(3), 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(12, 3), random_eval_batchnorm(nn.BatchNorm1d(3, affine=False), 3)), (2, 4, 4)
    # batch norm and activations before overlapping and non-overlapping max pooling: the
    # hand-written passes differentiate them at the pooled size
    yield "bn-pooled-chains", nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), random_eval_batchnorm(nn.BatchNorm2d(3), 5), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, padding=1),
        random_eval_batchnorm(nn.BatchNorm2d(4), 6), nn.Tanh(),
        nn.MaxPool2d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(16, 3)), (2, 4, 4)
    yield "relu-chains-ties", relu_chains_with_ties(2, 8), (2, 8, 8)
    # a first convolution's δ kept at the size of the max pooling after it and put back
    # chunk by chunk: overlapping windows (their sums), on patches and on the vmapped route (5)
    yield "pooled-first-overlap", nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(3, stride=1, padding=1),
        nn.Flatten(), nn.Linear(48, 3)), (1, 4, 4)
    yield "pooled-first-vmapped", nn.Sequential(
        nn.Conv2d(5, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(), nn.Linear(12, 3)), (5, 4, 4)
    # patches (≤ 4 input channels) with stride and dilation, 1x1; the vmapped route (5)
    yield "strided-patches", nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=2), nn.ReLU(), nn.Conv2d(3, 5, 1),
        nn.Tanh(), nn.Conv2d(5, 2, 2), nn.Flatten(), nn.Linear(2, 3)), (2, 5, 5)
    # string paddings: "same" on a one-channel first layer (patches), "valid"
    yield "same-valid-padding", nn.Sequential(
        nn.Conv2d(1, 3, 3, padding="same"), nn.Tanh(), nn.Conv2d(3, 2, 2, padding="valid"),
        nn.Flatten(), nn.Linear(18, 3)), (1, 4, 4)
    yield "conv3d-bn1d", nn.Sequential(
        nn.Conv3d(1, 2, 2, bias=False), nn.Flatten(), nn.Linear(16, 4),
        random_eval_batchnorm(nn.BatchNorm1d(4), 4),
        nn.Tanh(), nn.Linear(4, 3)), (1, 3, 3, 3)
    # an activation writing into a linear layer's output: the plain passes decline, hooks
    yield "inplace-mlp", nn.Sequential(nn.Linear(4, 5), nn.ReLU(inplace=True),
                                       nn.Linear(5, 3)), (4,)
    yield "sequence", _Seq(), (15,)


@pytest.mark.parametrize("route", ["auto", "hooks", "sequential"])
@pytest.mark.parametrize("name,model,shape", list(_models()), ids=[m[0] for m in _models()])
def test_factored_per_sample_gradients_equal_vmap(name, model, shape, route, monkeypatch):
    """The routes to the layers' inputs and δ: the hand-written passes of a plain
    nn.Sequential (by default only with max pooling; "sequential": wherever they apply), its
    layers called one by one (the other plain nn.Sequential networks) and the model's own
    forward with hooks (the others; "hooks": every one); grouped convolutions in all."""
    from sgdlab.operators import factors

    model = model.double()
    sequential, seen = factors._sequential_passes, []
    plain, plain_seen = factors._plain_passes, []
    if route == "hooks":
        monkeypatch.setattr(factors, "_sequential_passes", lambda *a: None)
        monkeypatch.setattr(factors, "_plain_passes", lambda *a: None)
    else:
        def plain_spy(*a):
            plain_seen.append(plain(*a))
            return plain_seen[-1]
        monkeypatch.setattr(factors, "_plain_passes", plain_spy)

        def spy(*a):
            seen.append(sequential(*a, pooled_only=route == "auto"))
            return seen[-1]
        monkeypatch.setattr(factors, "_sequential_passes", spy)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    ps = per_sample_factors(model, loss_fn, (x, y), chunk_size=4)    # two passes
    assert ps is not None
    if route != "hooks":     # a custom module: hooks
        assert (seen[0] is not None) == (
            name in ("conv2d", "bn-pooled-chains", "relu-chains-ties", "pooled-first-overlap",
                     "pooled-first-vmapped") or (route == "sequential"
                                                       and name != "sequence"))
        # the plain passes wherever the hand-written ones did not run, but on a custom module
        assert [f is not None for f in plain_seen] == (
            [] if seen[0] is not None or name == "sequence" else [name != "inplace-mlp"])
    ref = per_sample_gradients(model, loss_fn, (x, y), method="vmap", chunk_size=3)
    torch.testing.assert_close(ref, per_sample_gradients_loop(model, loss_fn, (x, y)))
    torch.testing.assert_close(ps.materialize(), ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y)), ref,
                               rtol=1e-12, atol=1e-14)
    # the Gram-trick pieces without G; again with every layer's block built in sample chunks
    # (pairs of chunks for the Gram; a convolution's patches and δ one sample at a time) and
    # nothing kept
    u = torch.randn(7, 2, generator=g, dtype=torch.float64)
    for budget, keep, chunk in ((_Layer.block_budget, _Layer.keep_budget, _Conv.chunk_budget),
                                (200, 0, 1)):
        old = _Layer.block_budget, _Layer.keep_budget, _Conv.chunk_budget
        _Layer.block_budget, _Layer.keep_budget, _Conv.chunk_budget = budget, keep, chunk
        try:
            fresh = per_sample_factors(model, loss_fn, (x, y))
            for f in (fresh, fresh):          # twice: kept blocks are reused
                torch.testing.assert_close(f.gram(), ref @ ref.T)
                torch.testing.assert_close(f.rmatmul(u), ref.T @ u)
                torch.testing.assert_close(f.sq_sum(), (ref ** 2).sum(0))
                torch.testing.assert_close(f.materialize(), ref)
            # the factors' last use: blocks made before G, the factors dropped
            torch.testing.assert_close(
                per_sample_factors(model, loss_fn, (x, y)).materialize(release=True), ref)
        finally:
            _Layer.block_budget, _Layer.keep_budget, _Conv.chunk_budget = old
    cov = gradient_covariance(model, loss_fn, (x, y))
    assert cov._factored()
    f = (ref - ref.mean(0)) / 7 ** 0.5
    torch.testing.assert_close(cov.gram(), f @ f.T)
    torch.testing.assert_close(cov.eigenpairs(2)[0],
                               torch.linalg.eigvalsh(covariance_reference(ref)).flip(0)[:2])


@pytest.mark.parametrize("pooled", [False, True])
def test_the_sequential_layers_are_read_once_a_call(pooled, monkeypatch):
    """flat_layers once per factored call, shared by the routes (the hand-written passes'
    R-op, the row-wise check, the plain passes), not read again by each."""
    from sgdlab.operators import factors, taylor

    calls = []
    flat = taylor.flat_layers

    def spy(module):
        calls.append(module)
        return flat(module)
    monkeypatch.setattr(factors, "flat_layers", spy)
    monkeypatch.setattr(taylor, "flat_layers", spy)
    if pooled:
        model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(8, 3)).double()
        x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    else:
        model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
        x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    ps = per_sample_factors(model, nn.CrossEntropyLoss(), (x, y))
    assert ps is not None and calls == [model]
    torch.testing.assert_close(ps.materialize(), per_sample_gradients_loop(
        model, nn.CrossEntropyLoss(), (x, y)), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad", [True, 2.5, "3", 0])
def test_per_sample_gradients_refuse_a_chunk_size_that_is_no_count(bad):
    """2.5 and "3" failed inside torch, True was one sample a call, 0 all at once."""
    model, data = tiny_mlp(3, 4, 2), tiny_classification(6, 3, 2)
    with pytest.raises(ValueError, match=r"Invalid chunk_size=.* \(an int >= 1: samples per "
                                          r"vmap call, or None: all at once\)"):
        per_sample_gradients(model, nn.CrossEntropyLoss(), data, chunk_size=bad, method="vmap")


def test_batchnorm_in_train_mode_gets_a_clear_error():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(),
                          nn.Linear(8, 2)).double()
    x, y = torch.randn(4, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 0, 1])
    for method in ("auto", "vmap"):
        with pytest.raises(UserError, match=r"model\.eval\(\)"):
            per_sample_gradients(model, nn.CrossEntropyLoss(), (x, y), method=method)
    with pytest.raises(UserError, match="layer '1' .BatchNorm2d. is in train mode"):
        gradient_covariance(model, nn.CrossEntropyLoss(), (x, y))
    model.eval()
    torch.testing.assert_close(per_sample_gradients(model, nn.CrossEntropyLoss(), (x, y)),
                               per_sample_gradients_loop(model, nn.CrossEntropyLoss(), (x, y)))


def test_losses_that_are_not_sample_means_use_vmap():
    """A class-weighted cross-entropy divides by the weights' sum, not N: δ_i cannot be read off
    one batch backward, so the factored engine declines and the answer stays exact."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (9,),
                                                                             generator=g)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert per_sample_factors(model, loss_fn, (x, y)) is None
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y)),
                               per_sample_gradients_loop(model, loss_fn, (x, y)))
    with pytest.raises(ValueError, match="factored"):
        per_sample_gradients(model, loss_fn, (x, y), method="factored")


def test_a_target_broadcast_against_the_outputs_is_refused():
    """MSE on outputs (N, 1) and targets (N,) broadcasts the batch to (N, N) pairs (torch warns):
    its batch loss is no mean of the samples' losses, so the factored engine, which read δ_i
    off that backward, gave another Σ than vmap (trace 1.3 against 21.9 here), and the batch
    statistics beside Σ read that batch loss. Refused at the entry, as training refuses it,
    naming both shapes; the targets of the outputs' shape are factored."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    loss_fn = nn.MSELoss()
    for call in (per_sample_factors, per_sample_gradients, gradient_covariance):
        with pytest.raises(UserError, match=r"outputs of shape \(2, 1\) with targets of shape "
                                            r"\(2,\)"):
            call(model, loss_fn, (x, x[:, 0]))
    assert per_sample_factors(model, loss_fn, (x, x[:, :1])) is not None


class _BatchStatistic(nn.Module):
    """A forward that subtracts a batch mean: a sample's output depends on its batch."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(torch.tanh(h - 0.5 * h.mean()))


def test_models_whose_samples_interact_use_vmap():
    """Each row is the gradient of the sample's loss on its own: the hooks' one batch backward
    would mix in the batch mean's cross terms, so the factored engine declines."""
    _declined_yet_exact(_BatchStatistic().double(), classes=2)


def _declined_yet_exact(model: nn.Module, classes: int):
    """The factored engine declines ``model``; G and its covariance still match the loop's.
    Returns the data and the loss."""
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 3, generator=g, dtype=torch.float64), torch.randint(
        0, classes, (9,), generator=g)
    assert per_sample_factors(model, loss_fn, (x, y)) is None
    ref = per_sample_gradients_loop(model, loss_fn, (x, y))
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y)), ref)
    torch.testing.assert_close(gradient_covariance(model, loss_fn, (x, y)).dense(),
                               covariance_reference(ref))
    return x, y, loss_fn


class _SortedSamples(nn.Module):
    """A forward that runs its first layer on the samples sorted by a key of the data (as
    length bucketing does) and puts the rows back in order after it: outputs in the batch
    order, but the first layer's input row i is another sample's."""

    def __init__(self, descending: bool):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)
        self.descending = descending

    def forward(self, x):
        order = torch.argsort(x[:, 0], descending=self.descending)
        return self.b(torch.tanh(self.a(x[order]))[torch.argsort(order)])


@pytest.mark.parametrize("descending", [False, True])
def test_a_forward_that_reorders_the_samples_makes_the_factored_engine_decline(descending):
    """The hooks' rows of the first layer were other samples' activations and δ: G 0.87 off
    in Frobenius norm (its trace, a sum over rows, unchanged). The probe sees sample 0's
    input to the layer in another row of a batch, in either order of its two samples, so
    the engine declines whichever order the key puts them in."""
    _declined_yet_exact(_SortedSamples(descending).double(), classes=2)


def test_a_parameter_used_outside_its_layer_makes_the_factored_engine_decline():
    """The hooks on ``inp`` see only its own use of ``inp.weight``: rows built from them missed
    the output projection's share (0.47 off). The engine declines; G and the GGN diagonal
    (whose all-linear path reads the same hooks) come out exact."""
    from sgdlab.measure import ggn_diagonal
    from sgdlab.testing import ggn_reference

    model = TiedByHand().double()
    x, y, loss_fn = _declined_yet_exact(model, classes=3)
    torch.testing.assert_close(ggn_diagonal(model, loss_fn, (x, y)),
                               ggn_reference(model, loss_fn, (x, y)).diagonal())
    # the same network with the projection a layer of its own still factors
    model.forward = lambda x: model.mid(torch.tanh(model.inp(x)))
    assert per_sample_factors(model, loss_fn, (x, y)) is not None


def test_a_model_vmap_cannot_batch_gets_one_backward_per_sample():
    """vmap over ``nn.GRU`` fails (its hidden state is written in place, unbatched): the rows
    come from one backward pass per sample instead, with a warning, from the chunk that
    failed on."""
    torch.manual_seed(0)
    model, loss_fn = GRUClassifier().double(), nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 4, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (7,),
                                                                                generator=g)
    ref = per_sample_gradients_loop(model, loss_fn, (x, y))
    for chunk_size in (None, 3):
        with pytest.warns(RuntimeWarning, match="vmap failed.*one backward pass per sample"):
            got = per_sample_gradients(model, loss_fn, (x, y), chunk_size=chunk_size)
        torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_dropout_in_train_mode_is_one_fixed_draw_of_masks(method):
    """Per-sample gradients of a model with dropout in train mode: each sample under its own
    mask (the rows differ from the eval-mode ones, and not by one common factor), the same G
    on every call, the global generator left as it was; inside an operator's fixed draw they
    take that draw instead of starting their own."""
    from sgdlab.operators.batches import fixed_randomness

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 2)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (6,))
    state = torch.get_rng_state()
    g = per_sample_gradients(model, nn.CrossEntropyLoss(), (x, y), method=method)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(
        per_sample_gradients(model, nn.CrossEntropyLoss(), (x, y), method=method), g,
        rtol=0, atol=0)
    model.eval()
    plain = per_sample_gradients(model, nn.CrossEntropyLoss(), (x, y), method=method)
    model.train()
    assert not torch.allclose(g, plain)
    with fixed_randomness(model, torch.device("cpu"), 7):
        inner = per_sample_gradients(model, nn.CrossEntropyLoss(), (x, y), method=method)
    assert not torch.equal(inner, g)      # the outer draw (7), not a fresh draw 0


def test_fixed_draw_on_cpu_reseeds_the_cpu_generator_only(monkeypatch):
    """A CPU model's fixed draw seeds (and restores) the CPU generator alone: reseeding the
    accelerators' generators too would leave them changed, as fork_rng restores only the
    devices it forked."""
    from sgdlab.operators.batches import fixed_randomness

    touched = []
    for mod in (torch.cuda, torch.xpu, torch.mps):
        if hasattr(mod, "manual_seed_all"):
            monkeypatch.setattr(mod, "manual_seed_all", lambda s, m=mod: touched.append(m))
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5))
    with fixed_randomness(model, torch.device("cpu")):
        first = model(torch.ones(2, 3))
    with fixed_randomness(model, torch.device("cpu")):
        torch.testing.assert_close(model(torch.ones(2, 3)), first, rtol=0, atol=0)
    assert touched == []


@pytest.mark.parametrize("features", ["channels", "positions"])
def test_batch_norm_without_running_statistics_is_refused_in_eval_mode_too(features):
    """Batch norm built with ``track_running_stats=False`` normalises by its batch in eval mode
    as in train mode: per-sample gradients are as undefined as in train mode. Sample by sample
    (vmap) each was normalised by its own statistics, on (N, C, L) inputs without an error:
    rows of another network, whose mean is not the batch gradient (0.76 off here, relative);
    on (N, C) inputs torch failed ("Expected more than 1 value per channel"). The Hessian is
    defined and still measured."""
    from sgdlab.measure import dense_hessian, fisher_diagonal
    from sgdlab.operators import EmpiricalFisherOperator
    from sgdlab.testing import dense_hessian_reference

    torch.manual_seed(0)
    if features == "channels":
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False),
                              nn.Tanh(), nn.Linear(4, 2))
        x = torch.randn(5, 3, dtype=torch.float64)
    else:
        model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2, affine=False,
                                                                 track_running_stats=False),
                              nn.Tanh(), nn.Flatten(), nn.Linear(8, 2))
        x = torch.randn(5, 1, 6, dtype=torch.float64)
    model = model.double().eval()
    y, loss_fn = torch.randint(0, 2, (5,)), nn.CrossEntropyLoss()
    for fn in (per_sample_gradients, functools.partial(per_sample_gradients, method="vmap"),
               gradient_covariance, fisher_diagonal, EmpiricalFisherOperator):
        with pytest.raises(UserError, match=r"layer '1' \(BatchNorm1d\), built with "
                                            r"track_running_stats=False"):
            fn(model, loss_fn, (x, y))
    assert per_sample_factors(model, loss_fn, (x, y)) is None
    torch.testing.assert_close(dense_hessian(model, loss_fn, (x, y)),
                               dense_hessian_reference(model, loss_fn, (x, y)))


def test_a_convolution_on_unbatched_input_is_not_factored():
    """A convolution fed (C, H, W) without a batch dimension mixes the rows it is given (its
    channels): the rows of such a network's output are no samples to split gradients by."""
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Flatten(1), nn.Linear(16, 2)).double()
    x, y = torch.randn(3, 4, 4, dtype=torch.float64), torch.randint(0, 2, (3,))
    assert per_sample_factors(model, nn.CrossEntropyLoss(), (x, y)) is None


@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_dropout_rows_average_to_the_batch_gradient_of_the_same_draw(method):
    """Under dropout in train mode the rows of G are the samples' gradients under the draw an
    operator's products see for the batch (index 0): their mean is that batch gradient."""
    from sgdlab.operators.batches import fixed_randomness
    from sgdlab.operators.params import flatten

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 3)).double()
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    loss_fn = nn.CrossEntropyLoss()
    g = per_sample_gradients(model, loss_fn, (x, y), method=method)
    with fixed_randomness(model, torch.device("cpu"), 0):
        batch = flatten(torch.autograd.grad(loss_fn(model(x), y), list(model.parameters())))
    torch.testing.assert_close(g.mean(0), batch, rtol=1e-10, atol=1e-12)
    model.eval()
    assert not torch.allclose(g.mean(0), flatten(torch.autograd.grad(
        loss_fn(model(x), y), list(model.parameters()))))


def test_full_gradient_under_dropout_is_the_operators_draw_and_leaves_the_generator():
    """full_gradient drew its dropout masks from the global generator: another gradient on every
    call (and a moved training stream), not the mean of G's rows (0.76 off in norm here). Now
    batch i takes the fixed draw i that per-sample gradients and the operators take."""
    from sgdlab.operators import full_gradient
    from sgdlab.operators.batches import fixed_randomness
    from sgdlab.operators.params import flatten

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 2)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    loss_fn = nn.CrossEntropyLoss()
    state = torch.get_rng_state()
    g = full_gradient(model, loss_fn, (x, y))
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(g, per_sample_gradients(model, loss_fn, (x, y)).mean(0),
                               rtol=1e-12, atol=1e-14)
    # two batches: each under its own draw, the sizes weighting them, as the operators' passes
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    ref = 0
    for i, (xb, yb) in enumerate(batches):
        with fixed_randomness(model, torch.device("cpu"), i):
            ref = ref + len(xb) / 6 * flatten(torch.autograd.grad(
                loss_fn(model(xb), yb), list(model.parameters())))
    torch.testing.assert_close(full_gradient(model, loss_fn, batches), ref,
                               rtol=1e-12, atol=1e-14)


class _TimeMajor(nn.Module):
    """A linear layer applied to a (T, N, in) sequence, time first (the layout of ``nn.GRU``
    and ``nn.Transformer`` without ``batch_first``): its input's rows are positions, not the
    samples."""

    def __init__(self):
        super().__init__()
        self.lin, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.lin(x.transpose(0, 1))).mean(0))


def test_a_layer_whose_rows_are_not_the_samples_is_not_factored():
    """With as many positions as samples (T = N = 5) the time-first input passed for a batch
    of samples: its rows were taken for the samples' (G 0.40 off the loop's, the GGN
    diagonal's linear path 0.02 off). The engine and that path decline; both come out
    exact."""
    from sgdlab.measure import ggn_diagonal
    from sgdlab.testing import ggn_reference

    torch.manual_seed(0)
    model, loss_fn = _TimeMajor().double(), nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 5, 3, generator=g, dtype=torch.float64), torch.randint(
        0, 2, (5,), generator=g)
    assert per_sample_factors(model, loss_fn, (x, y)) is None
    ref = per_sample_gradients_loop(model, loss_fn, (x, y))
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y)), ref)
    torch.testing.assert_close(gradient_covariance(model, loss_fn, (x, y)).dense(),
                               covariance_reference(ref))
    torch.testing.assert_close(ggn_diagonal(model, loss_fn, (x, y)),
                               ggn_reference(model, loss_fn, (x, y)).diagonal())


def test_a_layer_whose_weight_is_computed_from_other_parameters_is_not_factored():
    """The hook-based ``nn.utils.weight_norm`` replaces a layer's weight parameter by weight_g
    and weight_v and recomputes ``weight`` before each forward: the layer's parameters are not
    its weight and bias, which the factored engine indexed by (a KeyError). It declines; G
    comes out exact."""
    torch.manual_seed(0)
    with pytest.warns(FutureWarning):          # deprecated in favour of parametrizations
        normed = nn.utils.weight_norm(nn.Linear(3, 4))
    model = nn.Sequential(normed, nn.Tanh(), nn.Linear(4, 2)).double()
    _declined_yet_exact(model, classes=2)


def test_a_sample_whose_targets_are_all_ignored_gets_its_undefined_row():
    """Cross-entropy over positions with ``ignore_index``: a sample whose targets are all
    ignored has no loss of its own (0/0), and the check whether the batch loss is the mean of
    the samples' losses crashed on its NaN ("atol must be greater than or equal to zero").
    The engine declines; the rows are the loop's (autograd's zero for that sample)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    loss_fn = nn.CrossEntropyLoss(ignore_index=1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 5, 3, generator=g, dtype=torch.float64), torch.randint(
        0, 2, (4, 5), generator=g)
    y[2] = 1                           # sample 2: every position ignored

    def per_position(out, t):
        return loss_fn(out.transpose(1, 2), t)

    assert per_sample_factors(model, per_position, (x, y)) is None
    ref = per_sample_gradients_loop(model, per_position, (x, y))
    assert not bool(ref[2].any()) and bool(ref[[0, 1, 3]].isfinite().all())
    torch.testing.assert_close(per_sample_gradients(model, per_position, (x, y)), ref,
                               equal_nan=True)


@pytest.mark.parametrize("where", ["first_batch", "later_batch"])
@pytest.mark.parametrize("loss", ["module", "partial", "F"])
@pytest.mark.parametrize("kind", ["mlp", "pooled"])
def test_an_ignored_target_in_any_batch_is_no_mean_of_the_samples(kind, loss, where):
    """A batch with an ignored target averages over the others, so its δ_i (the batch loss's
    output gradient times N) are not the samples' own: rows 0.17 off the loop, one target of
    12 ignored. It was seen for the loss modules only in the first 8 samples of the first
    batch; F.cross_entropy (-100) and a functools.partial given ignore_index not at all."""
    torch.manual_seed(0)
    model = (nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)) if kind == "mlp" else
             nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(),
                           nn.Linear(8, 3))).double()
    ignore = -100 if loss == "F" else 255
    loss_fn = {"module": nn.CrossEntropyLoss(ignore_index=255), "F": F.cross_entropy,
               "partial": functools.partial(F.cross_entropy, ignore_index=255)}[loss]
    x = torch.randn(24, *((6,) if kind == "mlp" else (1, 10)), dtype=torch.float64)
    y = torch.randint(0, 3, (24,))
    y[10 if where == "first_batch" else 20] = ignore
    data = [(x[:12], y[:12]), (x[12:], y[12:])]
    ref = per_sample_gradients_loop(model, loss_fn, data)
    assert not bool(ref[10 if where == "first_batch" else 20].any())
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, data), ref)


@pytest.mark.parametrize("kind", ["batch_statistic", "class_weights", "pooled_weights"])
def test_a_first_batch_of_one_sample_does_not_vouch_for_the_others(kind):
    """Whether samples interact and whether the loss is a mean over samples were read off the
    first batch: one of a single sample passes both (nothing beside it, its mean is itself),
    and the later batches were split by the hooks anyway (0.11 off the loop for a batch mean
    in the forward, 0.39 for a class-weighted cross-entropy). The first batch of two samples
    or more decides."""
    torch.manual_seed(0)
    loss_fn = nn.CrossEntropyLoss()
    if kind == "batch_statistic":
        model = _BatchStatistic().double()
    else:
        # pooled: the hand-written passes of a max-pooled nn.Sequential
        model = (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)) if kind ==
                 "class_weights" else nn.Sequential(nn.Conv1d(1, 2, 2), nn.ReLU(),
                                                    nn.MaxPool1d(2), nn.Flatten(),
                                                    nn.Linear(2, 2))).double()
        loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (7,),
                                                                             generator=g)
    if kind == "pooled_weights":
        x = x[:, None]
    data = [(x[:1], y[:1]), (x[1:], y[1:])]
    assert per_sample_factors(model, loss_fn, data) is None
    ref = per_sample_gradients_loop(model, loss_fn, (x, y))
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, data), ref)
    torch.testing.assert_close(gradient_covariance(model, loss_fn, data).dense(),
                               covariance_reference(ref))


def test_per_sample_gradients_of_train_mode_spectral_norm_leave_its_vectors():
    """A train-mode spectral norm's power iteration runs from the model's vectors for the
    samples' gradients (each sample's reference starts from them too) and the full gradient,
    and leaves them as they were."""
    from sgdlab.models.modes import buffers_kept
    from sgdlab.operators import full_gradient
    torch.manual_seed(3)
    lin = nn.utils.parametrizations.spectral_norm(nn.Linear(3, 4))
    model = nn.Sequential(lin, nn.Tanh(), nn.Linear(4, 2)).double()
    u = lin.parametrizations.weight[0]._u
    with torch.no_grad():
        u.copy_(torch.nn.functional.normalize(torch.randn_like(u), dim=0))
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.arange(6) % 2
    rows = []
    for i in range(6):
        with buffers_kept(model):
            rows.append(per_sample_gradients_loop(model, nn.CrossEntropyLoss(),
                                                  (x[i : i + 1], y[i : i + 1]))[0])
    before = u.clone()
    g = per_sample_gradients(model, nn.CrossEntropyLoss(), (x, y))
    assert torch.equal(u, before)
    torch.testing.assert_close(g, torch.stack(rows), atol=1e-12, rtol=1e-10)
    full = full_gradient(model, nn.CrossEntropyLoss(), [(x[:3], y[:3]), (x[3:], y[3:])])
    assert torch.equal(u, before)
    torch.testing.assert_close(full, torch.stack(rows).mean(0), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("channels, samples, first", [(2, 16, True), (16, 2, False)])
def test_release_makes_a_block_first_only_when_it_is_no_larger_than_its_factors(
        channels, samples, first):
    # 2 -> 2 channels on 16 samples of 6 x 6: 38 numbers a sample's block, 144 its factors;
    # 16 -> 16 on 2: 2,320 against 1,152, which made first would sit beside G
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.Tanh(), nn.Flatten(),
                          nn.Linear(channels * 36, 3)).double()
    x = torch.randn(samples, channels, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (samples,))
    loss_fn = nn.CrossEntropyLoss()
    ps = per_sample_factors(model, loss_fn, (x, y))
    assert _made_first(ps.layers[0], samples) is first
    assert not _made_first(ps.layers[1], samples)        # a dense layer's block: into G
    ref = per_sample_gradients(model, loss_fn, (x, y), method="vmap")
    torch.testing.assert_close(ps.materialize(release=True), ref, rtol=1e-12, atol=1e-14)


def _assert_factors_match(ps, ref: torch.Tensor, u: torch.Tensor) -> None:
    """The factors' Gram matrix, Gᵀ U, Σ g_i² and G against the loop's rows ``ref``."""
    torch.testing.assert_close(ps.gram(), ref @ ref.T, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ps.rmatmul(u), ref.T @ u, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ps.sq_sum(), (ref ** 2).sum(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ps.materialize(), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunked", [False, True])
def test_dense_layers_without_bias_or_with_a_frozen_weight_or_bias(chunked, monkeypatch):
    """A linear layer's g_i is [δ_i a_iᵀ, δ_i] minus what is not trained: no bias (Gram
    (δ_i·δ_j)(a_i·a_j)), a frozen weight (bias alone: δ_i·δ_j), a frozen bias (weight alone);
    the Gram trick, Gᵀ U (a matrix and a vector), Σ g_i², the mean and G against the loop."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5, bias=False), nn.Tanh(), nn.Linear(5, 6), nn.Tanh(),
                          nn.Linear(6, 3)).double()
    model[2].weight.requires_grad_(False)
    model[4].bias.requires_grad_(False)
    if chunked:      # the generic chunked paths of the layer base class
        monkeypatch.setattr(_Layer, "block_budget", 8 * 3 * 30)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    ref = per_sample_gradients_loop(model, loss_fn, (x, y))
    assert ref.shape == (7, 20 + 6 + 18)
    ps = per_sample_factors(model, loss_fn, (x, y))
    assert ps is not None and ps.dim == ref.shape[1]
    u = torch.randn(7, 2, generator=g, dtype=torch.float64)
    _assert_factors_match(ps, ref, u)
    torch.testing.assert_close(ps.rmatmul(u[:, 0]), ref.T @ u[:, 0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ps.mean(), ref.mean(0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y)), ref,
                               rtol=1e-12, atol=1e-14)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_same_padding_is_factored_only_where_it_is_symmetric():
    """padding="same" pads d (k − 1) in total along each dimension, half on each side: numbers
    when every total is even (dilation 2 on a 3-kernel: 2), None when one is odd (a 2-kernel
    beside a 3-kernel: torch pads one side more), where the factored engine declines (vmap's
    G then)."""
    from sgdlab.operators.taylor import conv_padding

    def same(k, dilation=1):
        return nn.Conv2d(1, 2, k, padding="same", dilation=dilation)
    assert conv_padding(same((3, 5), (2, 1))) == (2, 2)
    assert conv_padding(same((3, 3))) == (1, 1)
    assert conv_padding(same((2, 3))) is None and conv_padding(same((3, 2))) is None
    assert conv_padding(nn.Conv2d(1, 2, (2, 3), padding="valid")) == (0, 0)
    torch.manual_seed(0)
    model = nn.Sequential(same((2, 3)), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (5,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    assert per_sample_factors(model, loss_fn, (x, y)) is None


def test_an_unknown_method_is_refused_by_name():
    model = nn.Sequential(nn.Linear(3, 2)).double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="method='exact'"):
        per_sample_gradients(model, nn.CrossEntropyLoss(), (x, y), method="exact")


class _Skipped(nn.Module):
    """A layer the forward never calls (an auxiliary head): its rows of G are zero."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.aux = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class _FreeScale(nn.Module):
    """A trainable parameter outside any layer: no hook sees its gradient."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)) * self.scale)


@pytest.mark.parametrize("model", [_Skipped, _FreeScale])
def test_a_skipped_layer_or_a_parameter_outside_the_layers_makes_the_engine_decline(model):
    """The factored engine has no δ for a layer that never runs and no factors for a
    parameter outside its layers: it declines, and G (zero columns for the skipped layer, the
    free parameter's column) matches the loop's."""
    x, y, loss_fn = _declined_yet_exact(model().double(), classes=2)
    if model is _Skipped:
        assert torch.equal(per_sample_gradients(model().double(), loss_fn, (x, y))[:, -10:],
                           torch.zeros(9, 10, dtype=torch.float64))


class _MixedDtypes(nn.Module):
    """A float64 layer feeding a float32 head."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4).double(), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)).float())


def _bias_registered_first() -> nn.Module:
    """A linear layer whose bias comes before its weight in the flat-vector order."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    w = model[0].weight
    del model[0].weight
    model[0].register_parameter("weight", w)
    return model


@pytest.mark.parametrize("make", [_MixedDtypes, _bias_registered_first])
def test_parameters_of_several_dtypes_or_out_of_layer_order_make_the_engine_decline(make):
    """Factors are written layer by layer, weight before bias, in one dtype: parameters of
    several dtypes, or a bias registered before its weight (the flat order), decline to
    vmap, whose G and covariance match the loop's (the factored covariance's products
    met a float32 head with float64 vectors: a dtype error)."""
    model = make()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (6,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    ref = per_sample_gradients_loop(model, loss_fn, (x, y))
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y)), ref,
                               rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(
        gradient_covariance(model, loss_fn, (x, y)).eigenpairs(2)[0].double(),
        torch.linalg.eigvalsh(covariance_reference(ref)).flip(0)[:2], rtol=1e-5, atol=1e-7)
    assert per_sample_factors(model, loss_fn, (x, y)) is None


@pytest.mark.parametrize("hook", ["forward", "pre", "global"])
def test_a_forward_hook_that_returns_another_output_is_part_of_the_rows(hook):
    """A forward hook of a factored layer that returns another output (here twice the
    convolution's) ran before the engine's own, whose δ was then that output's, not the
    layer's: rows half the loop's (0.42 off in Frobenius norm on an MLP). The engine's hook
    now runs first, and a global forward hook (run before any of a layer's) declines to vmap;
    a pre-hook's input is the layer's own."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8, 3)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (5,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    if hook == "global":
        handle = nn.modules.module.register_module_forward_hook(
            lambda m, args, out: 2 * out if isinstance(m, nn.Conv2d) else None)
    elif hook == "pre":
        handle = model[4].register_forward_pre_hook(lambda m, args: (2 * args[0],))
    else:
        handle = model[0].register_forward_hook(lambda m, args, out: 2 * out)
    try:
        ref = per_sample_gradients_loop(model, loss_fn, (x, y))
        assert (per_sample_factors(model, loss_fn, (x, y)) is None) == (hook == "global")
        torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y)), ref,
                                   rtol=1e-12, atol=1e-14)
    finally:
        handle.remove()


def test_a_vmapped_convolution_in_chunks_with_a_shorter_last_one(monkeypatch):
    """Blocks built two samples at a time over five samples (the last chunk one sample) on
    the vmapped convolution route (5 input channels): Gram, Gᵀ U, Σ g_i² and G against the
    loop."""
    monkeypatch.setattr(_Layer, "block_budget", 2 * (2 * 5 * 9 + 2) * 8)
    monkeypatch.setattr(_Layer, "keep_budget", 0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(5, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 5, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (5,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    ref = per_sample_gradients_loop(model, loss_fn, (x, y))
    ps = per_sample_factors(model, loss_fn, (x, y))
    u = torch.randn(5, 2, generator=g, dtype=torch.float64)
    _assert_factors_match(ps, ref, u)
    assert ps.layers[0]._chunks() == [(0, 2), (2, 4), (4, 5)]


def test_eval_batch_norm_over_positions_sums_each_channel_over_its_positions():
    """An eval-mode BatchNorm1d on (N, C, L) inputs: g_i = [Σ_p δ_ip x̂_ip, Σ_p δ_ip] per
    channel (the plain passes), against the loop."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 2), random_eval_batchnorm(nn.BatchNorm1d(3), 7),
                          nn.Tanh(), nn.Flatten(), nn.Linear(12, 3)).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (5,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    ps = per_sample_factors(model, loss_fn, (x, y))
    assert ps is not None
    ref = per_sample_gradients_loop(model, loss_fn, (x, y))
    torch.testing.assert_close(ps.materialize(), ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ps.sq_sum(), (ref ** 2).sum(0), rtol=1e-12, atol=1e-14)


def test_vmap_rows_are_no_function_of_the_parameters():
    """G is data: vmap's rows are taken at detached parameters, so G holds no autograd
    graph back to them (one per call would keep every chunk's activations alive)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1])
    g = per_sample_gradients(model, nn.CrossEntropyLoss(), (x, y), method="vmap")
    assert not g.requires_grad and g.grad_fn is None


def test_a_forward_hook_that_uses_the_layer_s_weight_makes_the_engine_decline():
    """A layer's forward hook returning o / ‖W‖ uses W outside the layer's output o, whose δ
    the engine takes: δ aᵀ missed the hook's share (0.33 off in Frobenius norm here, of 3.4).
    The probe's own hook ran after the layer's others and counted that use as inside."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    handle = model[0].register_forward_hook(lambda m, args, out: out / m.weight.norm())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    try:
        ref = per_sample_gradients_loop(model, loss_fn, (x, y))
        assert per_sample_factors(model, loss_fn, (x, y)) is None
        torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y)), ref,
                                   rtol=1e-12, atol=1e-14)
    finally:
        handle.remove()
