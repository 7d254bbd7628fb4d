"""More model kinds researchers measure, beyond tests/measure/test_any_model.py's zoo, each
against dense float64 references or refused by name: an LSTM, self-attention with layer
norm in train mode (dropout 0), a Transformer encoder layer in train mode on embedded
tokens, a parameter stored transposed (non-contiguous) and a channels-last conv net,
cross-entropy with label smoothing and with soft (probability) targets, binary
cross-entropy on logits, float32 parameters, a model returning a tuple or a dict with a
loss that takes it apart (the Gauss-Newton products refuse it by name), a
``torch.compile``d model, an embedding that renormalises its rows (``max_norm``), a lazy
module not yet run, parameters over shared memory, and randomness drawn by a forward of
one's own in train mode."""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sgdlab.measure as M
from sgdlab.errors import UserError
from sgdlab.operators import GGNOperator, HessianOperator, per_sample_gradients
from sgdlab.operators.ggn import OutputNotTensor
from sgdlab.testing import (DictOutput, TinyTransformer, covariance_reference,
                            dense_hessian_reference, dict_logits_loss, empirical_fisher_reference,
                            ggn_reference, per_sample_gradients_loop, tiny_mlp)

pytestmark = pytest.mark.usefixtures("one_thread")

N = 6


def gen(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.LSTM(3, 2, batch_first=True), nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.att, self.norm = nn.MultiheadAttention(2, 1, batch_first=True), nn.LayerNorm(2)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.norm(x + self.att(x, x, x)[0]).mean(1))


class Transposed(nn.Module):
    """A weight held as the transpose of a (4, 3) tensor: a non-contiguous parameter."""

    def __init__(self):
        super().__init__()
        self.w, self.head = nn.Parameter(torch.randn(4, 3).t()), nn.Linear(4, 2)
        assert not self.w.is_contiguous()

    def forward(self, x):
        return self.head(torch.tanh(x @ self.w))


class TwoLayers(nn.Module):
    """Linear(3, 4) then Linear(4, 2): the subclasses differ in the forward that joins them."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)


class TupleOut(TwoLayers):
    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h), h


def _conv_channels_last():
    return nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Tanh(), nn.Flatten(),
                         nn.Linear(2 * 4 * 4, 2)).to(memory_format=torch.channels_last)


def _data(kind: str):
    labels = torch.randint(0, 2, (N,), generator=gen(2))
    if kind == "sequence3":
        return torch.randn(N, 4, 3, generator=gen(1)), labels
    if kind == "sequence2":
        return torch.randn(N, 3, 2, generator=gen(1)), labels
    if kind == "tokens":
        return torch.randint(0, 5, (N, 4), generator=gen(1)), labels
    if kind == "image":
        return torch.randn(N, 2, 4, 4, generator=gen(1)), labels
    x = torch.randn(N, 3, generator=gen(1))
    if kind == "soft":
        return x, torch.softmax(torch.randn(N, 2, generator=gen(3)), 1)
    if kind == "binary":
        return x, torch.randint(0, 2, (N, 2), generator=gen(3)).float()
    return x, labels


CE = nn.CrossEntropyLoss()
# name: (model factory, loss, data kind)
KINDS = {
    "lstm": (LSTMClassifier, CE, "sequence3"),
    "attention_layer_norm_train": (lambda: SelfAttention().train(), CE, "sequence2"),
    # width 2, one head: a 60-parameter dense Hessian (the default 4-wide, 2-head
    # TinyTransformer takes 2.5x as long here)
    "encoder_train": (lambda: TinyTransformer(vocab=5, dim=2, heads=1, feedforward=2,
                                              activation="relu").train(), CE, "tokens"),
    "transposed_parameter": (Transposed, CE, "vector"),
    "channels_last_conv": (_conv_channels_last, CE, "image"),
    "label_smoothing": (tiny_mlp, nn.CrossEntropyLoss(label_smoothing=0.2), "vector"),
    "soft_targets": (tiny_mlp, CE, "soft"),
    "bce_logits": (tiny_mlp, nn.BCEWithLogitsLoss(), "binary"),
    "tuple_output": (TupleOut, lambda out, y: F.cross_entropy(out[0], y), "vector"),
    "dict_output": (DictOutput, dict_logits_loss, "vector"),
}
# the GGN reference's jacrev has no vmap rule through nn.LSTM (6 s point by point); the GRU of
# test_any_model.py's zoo checks the Gauss-Newton products of a recurrent layer
TENSOR_OUT = [k for k in KINDS if not k.endswith("_output") and k != "lstm"]


def make(name: str, dtype: torch.dtype = torch.float64):
    factory, loss_fn, kind = KINDS[name]
    torch.manual_seed(0)
    model = factory().to(dtype)
    x, y = _data(kind)
    return model, loss_fn, tuple(t.to(dtype) if t.is_floating_point() else t for t in (x, y))


def two_batches(data):
    x, y = data
    return [(x[:3], y[:3]), (x[3:], y[3:])]


def close(a, b, tol=1e-9):
    a, b = (torch.as_tensor(t, dtype=torch.float64) for t in (a, b))
    assert bool(torch.isfinite(a).all()), a
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def float64(model, data):
    """A float64 copy of ``model``, and ``data`` with its floating tensors in float64."""
    return (copy.deepcopy(model).double(),
            tuple(t.double() if t.is_floating_point() else t for t in data))


def references(model, loss_fn, data):
    """(H, per-sample gradients) of the float64 copy of ``model`` on ``data``."""
    m, d = float64(model, data)
    return dense_hessian_reference(m, loss_fn, d), per_sample_gradients_loop(m, loss_fn, d)


# float32 parameters on a few kinds (the products in float32, against float64 references)
CASES = [(k, torch.float64) for k in KINDS] + [
    (k, torch.float32) for k in ("attention_layer_norm_train", "transposed_parameter")]


# nn.LSTM's in-place writes have no vmap rule: per-sample gradients go one sample at a time
@pytest.mark.filterwarnings("ignore:per_sample_gradients. vmap failed:RuntimeWarning")
@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_curvature_and_noise_match_dense_references(name, dtype):
    model, loss_fn, data = make(name, dtype)
    hess, rows = references(model, loss_fn, data)
    eig, sigma = torch.linalg.eigvalsh(hess), covariance_reference(rows)
    tol = 1e-9 if dtype == torch.float64 else 3e-5
    v = torch.randn(len(eig), 2, generator=gen(), dtype=dtype)
    if name in TENSOR_OUT:
        m64, d64 = float64(model, data)
        ggn = ggn_reference(m64, loss_fn, d64)
    # the batching itself is test_any_model.py's: two batches for the dense matrices only
    batches = two_batches(data)
    close(M.dense_hessian(model, loss_fn, batches), hess, tol)
    close(M.gradient_covariance(model, loss_fn, batches).dense(), sigma, tol)
    if name in TENSOR_OUT:
        close(GGNOperator(model, loss_fn, batches).to_dense(), ggn, tol)
    d = data
    close(M.dense_hessian(model, loss_fn, d), hess, tol)
    close(M.hessian_diagonal(model, loss_fn, d, exact=True).value, hess.diagonal(), tol)
    for rop in (True, False):          # R-op products where supported, and backward ones
        close(HessianOperator(model, loss_fn, d, rop=rop).matmat(v), hess @ v.double(), tol)
    close(M.hessian_top_eigenvalue(model, loss_fn, d, generator=gen(), tol=1e-10), eig[-1],
          max(tol, 1e-7))
    close(M.hessian_bottom_eigenvalues(model, loss_fn, d, 2, generator=gen(), tol=1e-10),
          eig[:2], max(tol, 1e-7))
    close(per_sample_gradients(model, loss_fn, d), rows, tol)
    cov = M.gradient_covariance(model, loss_fn, d)
    close(cov.dense(), sigma, tol)
    close(cov.mean, rows.mean(0), tol)
    close(M.fisher_diagonal(model, loss_fn, d), rows.var(0, unbiased=False), tol)
    close(M.diffusion_matrix(model, loss_fn, d, 2, replacement=False).trace(),
          sigma.trace() * (N - 2) / (2 * (N - 1)), tol)
    close(M.noise_magnitude(model, loss_fn, d, 0.1, 2).noise_norm,
          math.sqrt(0.1 * float(sigma.trace()) / 2), tol)
    close(M.batch_statistics(model, loss_fn, d).trace_cov, sigma.trace() * N / (N - 1), tol)
    al = M.sigma_hessian_alignment(model, loss_fn, d, k=2, generator=gen())
    close(al.sigma_eigvals, torch.linalg.eigvalsh(sigma).flip(0)[:2], tol)
    close(al.hessian_eigvals, eig.flip(0)[:2], max(tol, 1e-6))
    if name in TENSOR_OUT:
        close(GGNOperator(model, loss_fn, d).to_dense(), ggn, tol)
        close(M.ggn_diagonal(model, loss_fn, d), ggn.diagonal(), tol)
    elif name.endswith("_output"):      # no one output f for G = Jᵀ ∇²_f L J
        kind = type(model(data[0])).__name__
        with pytest.raises(OutputNotTensor, match=f"the model returned a {kind}"):
            GGNOperator(model, loss_fn, d).to_dense()
    close(M.hessian_diagonal(model, loss_fn, d, exact=True,
                             operator="empirical_fisher").value,
          empirical_fisher_reference(rows).diagonal(), tol)


def test_a_compiled_model_has_its_curvature_measured_through_the_module_it_wraps():
    # torch.compile's AOTAutograd (every backend but "eager", inductor included) has no
    # double backward: the Hessian, its eigenvalues, trace, the alignment and the GGN
    # products failed on "torch.compile with aot_autograd does not currently support double
    # backward"
    model, loss_fn, data = make("label_smoothing")
    compiled = torch.compile(model, backend="aot_eager")     # no code generation
    try:
        close(M.dense_hessian(compiled, loss_fn, data),
              dense_hessian_reference(model, loss_fn, data))
        close(GGNOperator(compiled, loss_fn, data, rop=False).to_dense(),
              ggn_reference(model, loss_fn, data))
    finally:
        torch._dynamo.reset()


class Renormalising(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.head = nn.Embedding(5, 3, max_norm=1.0), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.emb(x).mean(1)))


def test_an_embedding_renormalising_its_rows_is_refused_by_name():
    # nn.Embedding(max_norm=...) renormalises the rows it looks up in place: every
    # measurement wrote into the model's weight, and vmapped passes warned of
    # embedding_renorm_ and went sample by sample
    torch.manual_seed(0)
    model, loss_fn, data = Renormalising().double(), nn.CrossEntropyLoss(), _data("tokens")
    weight = model.emb.weight.detach().clone()
    for fn in (M.dense_hessian, M.full_batch_grad_norm, M.gradient_covariance, M.ggn_diagonal,
               lambda *a: M.hessian_top_eigenvalue(*a, generator=gen()),
               lambda *a: M.expected_sharpness(*a, 0.01, 2, generator=gen())):
        with pytest.raises(UserError, match=r"emb \(Embedding, max_norm=1.0\) renormalises its "
                                            r"weight's rows in place.*max_norm=None"):
            fn(model, loss_fn, data)
    assert torch.equal(model.emb.weight, weight)
    # a frozen one is a fixed function of the tokens (after its first pass's renormalisation)
    model.emb.requires_grad_(False)
    model(data[0])
    close(M.dense_hessian(model, loss_fn, data), dense_hessian_reference(model, loss_fn, data))


def test_a_lazy_module_not_yet_run_is_refused_naming_the_first_forward_pass():
    # torch's ValueError came from inside the first flat vector ("Attempted to use an
    # uninitialized parameter in <method 'detach'...>")
    model = nn.Sequential(nn.LazyLinear(4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = _data("vector")
    for fn in (M.dense_hessian, M.gradient_covariance, M.full_batch_grad_norm,
               lambda *a: M.expected_sharpness(*a, 0.01, 2, generator=gen())):
        with pytest.raises(UserError, match=r"parameter 0.weight is not initialised yet \(a "
                                            r"lazy module.*run the model once on a batch"):
            fn(model, nn.CrossEntropyLoss(), (x.double(), y))
    model(x.double())
    close(M.dense_hessian(model, nn.CrossEntropyLoss(), (x.double(), y)),
          dense_hessian_reference(model, nn.CrossEntropyLoss(), (x.double(), y)))


class Aliased(nn.Module):
    """A second parameter registered as a view (the transpose) of a layer's weight."""

    def __init__(self, view: bool):
        super().__init__()
        self.lin, self.head = nn.Linear(3, 4), nn.Linear(4, 2)
        self.view = view
        if view:
            self.wt = nn.Parameter(self.lin.weight.t())

    def forward(self, x):
        wt = self.wt if self.view else self.lin.weight.t()
        return self.head(torch.tanh(self.lin(x)) + torch.tanh(x @ wt))


def test_parameters_sharing_memory_are_refused_naming_both_and_the_tie():
    # autograd took the view as coordinates of its own while writing a point into the model
    # wrote one over the other: expected sharpness 0.33 one point at a time, 0.013 vmapped
    torch.manual_seed(0)
    model = Aliased(view=True).double()    # .double() copies each: alias again in float64
    model.wt = nn.Parameter(model.lin.weight.t())
    x, y = _data("vector")
    data, loss_fn = (x.double(), y), nn.CrossEntropyLoss()
    for fn in (M.dense_hessian, M.gradient_covariance, M.full_batch_grad_norm,
               lambda *a: M.expected_sharpness(*a, 0.3, 3, generator=gen(), vectorize=False)):
        with pytest.raises(UserError, match=r"parameters lin.weight and wt share memory.*"
                                            r"self.lin.weight.t\(\)"):
            fn(model, loss_fn, data)
    tied = Aliased(view=False).double()
    tied.load_state_dict({k: v for k, v in model.state_dict().items() if k != "wt"})
    close(M.dense_hessian(tied, loss_fn, data), dense_hessian_reference(tied, loss_fn, data))
    close(M.expected_sharpness(tied, loss_fn, data, 0.3, 3, generator=gen(),
                               vectorize=False).value,
          M.expected_sharpness(tied, loss_fn, data, 0.3, 3, generator=gen()).value)


def test_parameters_that_are_disjoint_views_of_one_buffer_are_measured():
    # flat-parameter wrappers hold each parameter as a slice of one buffer: no overlap
    torch.manual_seed(0)
    plain = tiny_mlp()
    flat = torch.cat([p.detach().reshape(-1) for p in plain.parameters()])
    model, i = copy.deepcopy(plain), 0
    for mod in (model[0], model[2]):
        for name in ("weight", "bias"):
            n = getattr(mod, name).numel()
            setattr(mod, name, nn.Parameter(flat[i:i + n].view_as(getattr(mod, name))))
            i += n
    x, y = _data("vector")
    data, loss_fn = (x.double(), y), nn.CrossEntropyLoss()
    close(M.dense_hessian(model, loss_fn, data), dense_hessian_reference(plain, loss_fn, data))


class ColumnBlocks(nn.Module):
    """A layer's weight held as two parameters, column blocks of one (4, 3) matrix: their
    address ranges interleave, but no element is shared."""

    def __init__(self):
        super().__init__()
        w = torch.randn(4, 3, dtype=torch.float64)
        self.a, self.b = nn.Parameter(w[:, :1]), nn.Parameter(w[:, 1:])
        self.head = nn.Linear(4, 2).double()

    def forward(self, x):
        return self.head(torch.tanh(x @ torch.cat([self.a, self.b], 1).t()))


def test_interleaved_views_that_share_no_element_are_measured():
    # column blocks of one matrix span overlapping address ranges without sharing an
    # element: they were refused as sharing memory (views of one vector:
    # tests/operators/test_operators_params.py)
    torch.manual_seed(0)
    model, loss_fn = ColumnBlocks(), nn.CrossEntropyLoss()
    x, y = _data("vector")
    data = (x.double(), y)
    close(M.dense_hessian(model, loss_fn, data), dense_hessian_reference(model, loss_fn, data))
    # one point at a time as vmapped: one function
    close(M.expected_sharpness(model, loss_fn, data, 0.3, 3, generator=gen(),
                               vectorize=False).value,
          M.expected_sharpness(copy.deepcopy(model), loss_fn, data, 0.3, 3,
                               generator=gen()).value)


class FunctionalDropout(TwoLayers):
    """Dropout by ``F.dropout(h, p, self.training)`` in its forward: no dropout module."""

    def forward(self, x):
        return self.b(F.dropout(torch.tanh(self.a(x)), 0.5, self.training))


def test_a_forward_drawing_random_numbers_of_its_own_in_train_mode_is_said():
    # dropout modules were the only randomness named: F.dropout in a forward of one's own
    # gave the curvature under one fixed draw of its masks without a word (1.55 for the
    # network's 0.90 without dropout)
    torch.manual_seed(0)
    model, loss_fn, data = FunctionalDropout().double(), nn.CrossEntropyLoss(), _data("vector")
    data = (data[0].double(), data[1])
    state = torch.random.get_rng_state()
    for fn in (M.dense_hessian, lambda *a: M.hessian_top_eigenvalue(*a, generator=gen()),
               lambda *a: M.hessian_trace(*a, 2, generator=gen())):
        with pytest.warns(UserWarning, match=r"forward pass draws random numbers in train "
                                             r"mode.*one fixed draw.*model\.eval\(\)"):
            fn(model, loss_fn, data)
    assert torch.equal(torch.random.get_rng_state(), state)     # the generator left as it was
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        close(M.dense_hessian(model.eval(), loss_fn, data),
              dense_hessian_reference(model, loss_fn, data))
        M.dense_hessian(make("label_smoothing")[0].train(), loss_fn, data)   # draws nothing


@pytest.mark.parametrize("momentum", [0.1, None])
def test_the_random_draw_probe_leaves_batch_norm_statistics_and_generators_as_they_were(
        momentum):
    # the probe is a train-mode forward pass: batch norm's running statistics and its
    # counter (the cumulative average's weights when momentum is None) must not move
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=momentum), nn.Tanh(),
                          nn.Linear(4, 2)).double()
    model[1].running_mean.normal_(generator=gen(3))
    x, y = _data("vector")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # the probe runs, and finds no draw
        HessianOperator(model, nn.CrossEntropyLoss(), (x.double(), y))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.random.get_rng_state(), state)


class CPUDraws(TwoLayers):
    """A GPU model that draws on the CPU generator: a random mask made without a device."""

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h * (torch.rand(h.shape) < 0.5).to(h.device) if self.training else h)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a CUDA model drawing on the CPU")
def test_a_gpu_model_drawing_on_the_cpu_generator_is_said():
    # only the device's generator was compared around the probe, while fixed_randomness
    # seeds the CPU's as well: such draws went without a word
    torch.manual_seed(0)
    model, (x, y) = CPUDraws().double().cuda(), _data("vector")
    data, state = (x.double().cuda(), y.cuda()), torch.random.get_rng_state()
    with pytest.warns(UserWarning, match=r"forward pass draws random numbers in train mode"):
        M.dense_hessian(model, nn.CrossEntropyLoss(), data)
    assert torch.equal(torch.random.get_rng_state(), state)
