"""Every public measurement on a zoo of small models: a correct, finite result (against a dense
float64 reference where one is cheap, else one batch against the same samples in two batches)
or a UserError that names the problem and the remedy.

The zoo: a residual tanh network (not ``nn.Sequential``), a frozen parameter next to an unused
trainable layer, batch norm and dropout in eval and in train mode, a conv net with max pooling,
an ``nn.Embedding`` front end on integer tokens, MSE regression, a ``reduction="sum"`` loss, and
the sequence models in use today: a one-layer Transformer encoder (layer norm, multi-head
attention, GELU; eval mode, where PyTorch's fused fast path serves no-grad calls) on tokens, a
GRU over a sequence of float features (vmap cannot batch it), and tied weights: an embedding
matrix that is also the output projection's weight (one parameter registered twice), a
linear layer's weight used again outside the layer, and one linear layer called twice (one
module registered twice: every measurement must leave its parameters registered as they were).
"""
from __future__ import annotations

import copy
import functools
import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sgdlab.measure as M
from sgdlab.errors import UserError
from sgdlab.measure.interpolation import evaluate
from sgdlab.measure.sharpness import perturbed_evaluations
from sgdlab.operators.params import flatten, params_vector, set_params_vector
from sgdlab.testing import (GRUClassifier, SkipsItsLayer, TiedByHand, TiedEmbedding,
                            TinyTransformer, covariance_reference, dense_hessian_reference,
                            empirical_fisher_reference, flat_loss, ggn_reference,
                            per_sample_gradients_loop, random_eval_batchnorm)

pytestmark = pytest.mark.usefixtures("one_thread")

N = 8


class Residual(nn.Module):
    def __init__(self, out: int = 2):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, out)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.head(h + torch.tanh(self.b(h)))


class FrozenUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.unused, self.head = nn.Linear(3, 4), nn.Linear(2, 2), nn.Linear(4, 2)
        self.a.bias.requires_grad_(False)

    def forward(self, x):
        return self.head(torch.tanh(self.a(x)))


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.head = nn.Embedding(6, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.emb(x).mean(1)))


def _bn(train: bool) -> nn.Module:
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    random_eval_batchnorm(m[1], 3)
    return m.train(train)


def _dropout(train: bool) -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.3), nn.Linear(4, 2)).train(train)


def _layer_twice() -> nn.Module:
    lin = nn.Linear(3, 3)
    return nn.Sequential(lin, nn.Tanh(), lin, nn.Softplus(), nn.Linear(3, 2))


def _conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(2 * 16, 3))


def _data(kind: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    if kind == "image":
        return torch.randn(N, 1, 8, 8, generator=g), torch.randint(0, 3, (N,), generator=g)
    if kind in ("tokens", "tokens6"):
        return (torch.randint(0, 6, (N, 4), generator=g),
                torch.randint(0, 6 if kind == "tokens6" else 2, (N,), generator=g))
    if kind == "sequence":
        return torch.randn(N, 5, 3, generator=g), torch.randint(0, 2, (N,), generator=g)
    if kind == "regression":
        return torch.randn(N, 3, generator=g), torch.randn(N, 3, generator=g)
    return torch.randn(N, 3, generator=g), torch.randint(0, 2, (N,), generator=g)


# name: (model factory, loss, data kind)
ZOO = {
    "residual": (Residual, nn.CrossEntropyLoss(), "vector"),
    "frozen_unused": (FrozenUnused, nn.CrossEntropyLoss(), "vector"),
    "bn_eval": (lambda: _bn(False), nn.CrossEntropyLoss(), "vector"),
    "bn_train": (lambda: _bn(True), nn.CrossEntropyLoss(), "vector"),
    "dropout_eval": (lambda: _dropout(False), nn.CrossEntropyLoss(), "vector"),
    "dropout_train": (lambda: _dropout(True), nn.CrossEntropyLoss(), "vector"),
    "conv_maxpool": (_conv, nn.CrossEntropyLoss(), "image"),
    "embedding": (Tokens, nn.CrossEntropyLoss(), "tokens"),
    "mse": (lambda: Residual(3), nn.MSELoss(), "regression"),
    # eval mode: nn.MultiheadAttention and the encoder layer take PyTorch's fused fast path
    # whenever no gradient is recorded
    "transformer": (lambda: TinyTransformer().eval(), nn.CrossEntropyLoss(), "tokens"),
    "gru": (GRUClassifier, nn.CrossEntropyLoss(), "sequence"),
    "tied_embedding": (TiedEmbedding, nn.CrossEntropyLoss(), "tokens6"),
    "tied_by_hand": (TiedByHand, nn.CrossEntropyLoss(), "vector"),
    "layer_twice": (_layer_twice, nn.CrossEntropyLoss(), "vector"),
}
DETERMINISTIC = [k for k in ZOO if k not in ("bn_train", "dropout_train")]
PER_SAMPLE = [k for k in ZOO if k != "bn_train"]
TWO_BATCH_REF = [k for k in ZOO if k != "dropout_train"]   # train-mode bn: per-batch statistics


def make(name: str, seed: int = 0):
    factory, loss_fn, kind = ZOO[name]
    torch.manual_seed(seed)
    model = factory().double()
    x, y = _data(kind, seed + 1)
    return model, loss_fn, (x.double() if x.is_floating_point() else x,
                            y.double() if y.is_floating_point() else y)


class BatchStatisticsNorm(nn.Module):
    """Train-mode batch norm written out in elementwise ops (same parameter names)."""

    def __init__(self, bn: nn.BatchNorm1d):
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps

    def forward(self, x):
        mean, var = x.mean(0), x.var(0, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def hessian_reference(model, loss_fn, data):
    # torch.func cannot update running statistics, and its second derivatives through
    # train-mode nn.BatchNorm1d were wrong here (a finite difference of the gradient agreed
    # with sgdlab): the reference writes train-mode batch norm out in elementwise ops
    model = copy.deepcopy(model)
    for i, m in (enumerate(model) if isinstance(model, nn.Sequential) else ()):
        if isinstance(m, nn.BatchNorm1d) and m.training:
            model[i] = BatchStatisticsNorm(m)
    return dense_hessian_reference(model, loss_fn, data)


def two_batches(data):
    x, y = data
    return [(x[:5], y[:5]), (x[5:], y[5:])]


def batch_weighted(ref, data):
    """Σ_b (n_b / N) ref(batch b): the mean over samples, each batch's own statistics."""
    return sum(len(x) / N * ref((x, y)) for x, y in two_batches(data))


def gen(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def _quiet_dropout_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*dropout in train mode.*")
        warnings.filterwarnings("ignore", message=".*vmap failed.*")
        yield


def registered(model) -> list[tuple[str, nn.Parameter]]:
    """Every registration of a parameter, by name (a module used twice is listed twice)."""
    return list(model.named_parameters(remove_duplicate=False))


def assert_parameters_kept(model, before):
    after = registered(model)
    assert [n for n, _ in after] == [n for n, _ in before]
    assert all(a is b for (_, a), (_, b) in zip(after, before)), "a parameter was replaced"


def close(a, b, tol=1e-9):
    a, b = (torch.as_tensor(t, dtype=torch.float64) for t in (a, b))
    assert bool(torch.isfinite(a).all()), a
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ---- curvature ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", TWO_BATCH_REF)
def test_hessian_measurements_match_dense_reference(name):
    model, loss_fn, data = make(name)
    ref1 = hessian_reference(model, loss_fn, data)
    # the mean over samples of the batches' own losses (train-mode batch norm: own statistics)
    ref2 = batch_weighted(lambda b: hessian_reference(model, loss_fn, b), data)
    close(M.dense_hessian(model, loss_fn, data), ref1)
    close(M.dense_hessian(model, loss_fn, two_batches(data)), ref2)
    close(M.hessian_diagonal(model, loss_fn, data, exact=True).value, ref1.diagonal())
    # Lanczos on the two batches only (the products are those checked above)
    d, eig = two_batches(data), torch.linalg.eigvalsh(ref2)
    close(M.hessian_top_eigenvalue(model, loss_fn, d, generator=gen(), tol=1e-10), eig[-1], 1e-7)
    close(M.hessian_bottom_eigenvalues(model, loss_fn, d, 2, generator=gen(), tol=1e-10),
          eig[:2], 1e-7)
    if name != "bn_train":           # bn_mode="eval" by default: a different function
        close(M.hessian_spectral_norm(model, loss_fn, d, generator=gen(), tol=1e-10),
              eig.abs().max(), 1e-7)
    v = M.hessian_directions(model, loss_fn, d, 2, generator=gen(), tol=1e-10)
    for u, lam in zip(v, eig.flip(0)[:2], strict=True):
        close(ref2 @ u, lam * u, 1e-6)
    if name == "tied_embedding":     # d counts the tied matrix once: emb.weight, mix.*
        assert ref1.shape == (18 + 12, 18 + 12)
    if name == "frozen_unused":      # d counts a.weight, unused.*, head.*: unused rows are 0
        assert ref1.shape == (12 + 6 + 10, 12 + 6 + 10)
        assert not bool(ref1[12:18].any())


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_stochastic_curvature_estimates_do_not_depend_on_batching(name):
    model, loss_fn, data = make(name)
    for fn in (lambda d: M.hessian_trace(model, loss_fn, d, 3, generator=gen()).value,
               lambda d: M.hessian_frobenius_norm(model, loss_fn, d, 3, generator=gen()).value,
               lambda d: M.hessian_spectral_density(model, loss_fn, d, num_probes=1,
                                                    num_iter=4, generator=gen()).nodes):
        close(fn(data), fn(two_batches(data)))


def test_dropout_in_train_mode_fixes_one_draw_and_warns():
    model, loss_fn, data = make("dropout_train")
    with pytest.warns(UserWarning, match=r"dropout in train mode.*model\.eval\(\)"):
        h = M.dense_hessian(model, loss_fn, data)
    close(h, M.dense_hessian(model, loss_fn, data), 0)        # the same draw every time
    close(M.hessian_diagonal(model, loss_fn, data, exact=True).value, h.diagonal())


@pytest.mark.parametrize("name", [k for k in PER_SAMPLE if k != "dropout_train"])
def test_ggn_and_fisher_diagonals_match_dense_references(name):
    model, loss_fn, data = make(name)
    ggn = ggn_reference(model, loss_fn, data).diagonal()
    fisher = empirical_fisher_reference(per_sample_gradients_loop(model, loss_fn, data))
    for d in (data, two_batches(data)):
        close(M.ggn_diagonal(model, loss_fn, d), ggn)
        close(M.hessian_diagonal(model, loss_fn, d, exact=True, operator="ggn").value, ggn)
        close(M.hessian_diagonal(model, loss_fn, d, exact=True,
                                 operator="empirical_fisher").value, fisher.diagonal())


# ---- gradient noise ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [k for k in PER_SAMPLE if k != "dropout_train"])
def test_gradient_covariance_matches_explicit_per_sample_sum(name):
    model, loss_fn, data = make(name)
    before = registered(model)
    g = per_sample_gradients_loop(model, loss_fn, data)
    ref = covariance_reference(g)
    for d in (data, two_batches(data)):
        for method in ("auto", "vmap"):
            cov = M.gradient_covariance(model, loss_fn, d, method=method)
            close(cov.dense(), ref)
            close(cov.mean, g.mean(0))
        close(M.diffusion_matrix(model, loss_fn, d, 2, replacement=False).trace(),
              ref.trace() * (N - 2) / (2 * (N - 1)))
        nm = M.noise_magnitude(model, loss_fn, d, 0.1, 2)
        close(nm.grad_norm, g.mean(0).norm())
        close(nm.noise_norm, math.sqrt(0.1 * float(ref.trace()) / 2))
    assert_parameters_kept(model, before)


@pytest.mark.parametrize("name", [k for k in PER_SAMPLE if k != "dropout_train"])
def test_noise_statistics_do_not_depend_on_batching(name):
    model, loss_fn, data = make(name)
    before = registered(model)
    for fn in (lambda d: list(M.batch_statistics(model, loss_fn, d, lr=0.1).as_metrics().values()),
               lambda d: [(t := M.takeuchi_information(model, loss_fn, d)).diagonal, t.trace],
               lambda d: M.sigma_hessian_alignment(model, loss_fn, d, k=2, num_probes=3,
                                                   generator=gen()).sigma_eigvals,
               lambda d: M.normalized_step_length(model, loss_fn, params_vector(model),
                                                  params_vector(model) + 0.01, d).alpha):
        close(fn(data), fn(two_batches(data)))
    assert_parameters_kept(model, before)


def test_per_sample_measurements_refuse_train_mode_batch_norm():
    model, loss_fn, data = make("bn_train")
    for fn in (M.gradient_covariance, M.ggn_diagonal, M.takeuchi_information,
               lambda *a: M.noise_magnitude(*a, 0.1, 2), M.batch_statistics,
               lambda *a: M.sigma_hessian_alignment(*a, k=2),
               lambda m, lf, d: M.normalized_step_length(m, lf, params_vector(m),
                                                         params_vector(m) + 0.01, d)):
        with pytest.raises(UserError, match=r"BatchNorm1d\) is in train mode.*model\.eval\(\)"):
            fn(model, loss_fn, data)


def test_per_sample_gradients_in_train_mode_dropout_use_one_mask_per_sample():
    """One independent mask per sample: the noise of dropout is part of Σ. Each row of Σ's
    factor, √N F_i + ḡ, is the gradient of sample i's loss under one of the 2⁴ masks of the
    4 hidden units (all enumerated, scaled by 1/(1 − p)), and the samples' masks differ."""
    model, loss_fn, data = make("dropout_train")
    cov = M.gradient_covariance(model, loss_fn, data)
    rows = cov.factor * math.sqrt(N) + cov.mean
    close(cov.factor.sum(0), torch.zeros_like(cov.mean))          # centred: ḡ is the mean
    params = {k: v.detach() for k, v in model.named_parameters()}
    keep = 1 - model[2].p
    masks = torch.tensor(list(itertools.product((0.0, 1.0), repeat=4)), dtype=torch.float64)

    def sample_loss(theta, mask, x, y):         # the network with this mask for its dropout
        h = torch.tanh(F.linear(x, theta["0.weight"], theta["0.bias"])) * mask / keep
        return loss_fn(F.linear(h, theta["3.weight"], theta["3.bias"])[None], y[None])

    grads = torch.func.vmap(torch.func.vmap(torch.func.grad(sample_loss), (None, None, 0, 0)),
                            (None, 0, None, None))(params, masks, *data)   # (masks, N, ...)
    cands = torch.cat([grads[k].flatten(2) for k in params], -1)            # (16, N, d)
    err = (cands - rows).abs().amax(-1)
    assert float(err.amin(0).max()) < 1e-12, err.amin(0)
    matched = err.argmin(0).tolist()
    assert len(set(matched)) > 1, matched


# ---- losses along lines, sharpness, gradients -----------------------------------------------


def _eval_loss(model, loss_fn, data):
    was = model.training
    model.eval()
    try:
        # a gradient recorded: attention takes no fused eval-mode fast path here, which the
        # library's no-grad evaluations do
        with torch.enable_grad():
            return float(loss_fn(model(data[0]), data[1]).detach())
    finally:
        model.train(was)


@pytest.mark.parametrize("name", list(ZOO))
def test_loss_evaluations_match_the_mean_loss(name):
    model, loss_fn, data = make(name)
    before = registered(model)
    theta, mode = params_vector(model), model.training
    # all of these evaluate without dropout and with batch norm's running statistics
    base = _eval_loss(model, loss_fn, data)
    grad = torch.func.grad(flat_loss(model.eval(), loss_fn, data))(theta)
    model.train(mode)
    for d in (data, two_batches(data)):
        seg = M.segment_losses(model, loss_fn, d, theta, theta + 0.01, [0.0, 0.5, 1.0])
        close(seg[0], base)
        walk = M.step_interpolation(model, loss_fn, d, theta + 0.01, num_points=3)
        close(walk.losses[-1], base)
        close(M.full_batch_grad_norm(model, loss_fn, d), grad.norm())
        curve = M.interpolate_models(model, model, loss_fn, d, alphas=[0.0, 1.0], bn_stats="keep")
        close(curve.train_loss, [base, base])
        surf = M.loss_surface(model, loss_fn, d, [M.random_direction(model, generator=gen())],
                              steps=3)
        close(surf.train_loss[1], base)
        close(params_vector(model), theta, 0)                  # parameters restored
        assert model.training == mode
    assert_parameters_kept(model, before)


class TwoDtypes(nn.Module):
    """A float64 body and a float32 head: trainable parameters of two dtypes."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(3, 4).double(), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x.double())).float())


@pytest.mark.parametrize("vectorize", [True, False])
def test_perturbed_points_of_a_model_with_two_dtypes(vectorize):
    # one point at a time, the float32 head was read from a copy made once (unflatten_like
    # converts a slice of the float64 point): every point was evaluated with an unwritten
    # head, and the head was "restored" from that copy, left holding whatever memory it held
    torch.manual_seed(0)
    model, loss_fn = TwoDtypes(), nn.CrossEntropyLoss()
    x, y = _data("vector", 1)
    theta = params_vector(model)
    xi = 0.3 * torch.randn(3, len(theta), generator=gen(), dtype=theta.dtype)
    ref = []
    for row in xi:
        moved = copy.deepcopy(model)
        set_params_vector(moved, theta + row)
        ref.append(float(loss_fn(moved(x), y).detach()))
    loss, _ = perturbed_evaluations(model, loss_fn, (x, y), xi, vectorize=vectorize)
    close(loss, ref, 1e-6)
    close(params_vector(model), theta, 0)
    surf = M.loss_surface(model, loss_fn, (x, y), [xi[0]], extent=(0.0, 1.0), steps=2,
                          vectorize=vectorize)
    close(surf.train_loss, [_eval_loss(model, loss_fn, (x, y)), ref[0]], 1e-6)
    # the walk's segment from θ to θ + ξ_0: under vmap each point's parameters were stacked
    # in the body's float64, the head's matmul failed, and a "vmap failed" warning sent the
    # points one by one
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seg = M.segment_losses(model, loss_fn, (x, y), theta, theta + xi[0], [0.0, 1.0],
                               vectorize=vectorize)
    close(seg, [_eval_loss(model, loss_fn, (x, y)), ref[0]], 1e-6)


@pytest.mark.parametrize("name", list(ZOO))
def test_sharpness_is_finite_and_does_not_depend_on_batching(name):
    model, loss_fn, data = make(name)
    theta, before = params_vector(model), registered(model)
    for fn in (lambda d: M.mean_loss(model, loss_fn, d),
               lambda d: M.expected_sharpness(model, loss_fn, d, 0.01, 4, generator=gen()).value,
               lambda d: M.epsilon_sharpness(model, loss_fn, d, 1e-3, num_steps=3,
                                             generator=gen()).max_loss,
               lambda d: M.local_entropy(model, loss_fn, d, 0.01, num_samples=4,
                                         generator=gen()).f_gamma):
        one, two = fn(data), fn(two_batches(data))
        assert math.isfinite(one) and math.isfinite(two)
        if name in DETERMINISTIC:
            close(one, two)
    close(params_vector(model), theta, 0)
    assert_parameters_kept(model, before)


# ---- a loss summed over its batch -----------------------------------------------------------


def loss_reading_measurements(theta):
    """Measurements that read ``loss_fn``'s value as the batch's loss, as ``fn(model,
    loss_fn, data)``."""
    return [M.dense_hessian, M.mean_loss, M.full_batch_grad_norm, M.ggn_diagonal,
            lambda *a: M.hessian_trace(*a, 2),
            lambda *a: M.expected_sharpness(*a, 0.01, 2),
            lambda *a: M.epsilon_sharpness(*a, num_steps=1),
            lambda *a: M.local_entropy(*a, 0.01, num_samples=2),
            lambda *a: M.segment_losses(*a, theta, theta + 0.01, 2),
            lambda m, lf, d: M.interpolate_models(m, m, lf, d, alphas=[0.0]),
            lambda m, lf, d: M.loss_surface(m, lf, d, [theta], steps=2)]


def refused_by_every_measurement(model, loss_fn, data, match: str) -> None:
    """Each measurement taking a ``loss_fn`` (loss_reading_measurements, the top eigenvalue,
    the covariance, the batch statistics, the noise and the alignment) refuses ``loss_fn`` on
    ``data`` as one batch and as two, with a UserError matching ``match``."""
    for fn in loss_reading_measurements(params_vector(model)) + [
            M.hessian_top_eigenvalue, M.gradient_covariance, M.batch_statistics,
            lambda *a: M.noise_magnitude(*a, 0.1, 2),
            lambda *a: M.sigma_hessian_alignment(*a, 1)]:
        for d in (data, two_batches(data)):
            with pytest.raises(UserError, match=match):
                fn(model, loss_fn, d)


# a loss summed over the batch, as a module and as partials of F.cross_entropy (given
# reduction, or torch's legacy size_average); the partials were measured on several batches
SUMMED = {"module": nn.CrossEntropyLoss(reduction="sum"),
          "partial": functools.partial(F.cross_entropy, reduction="sum"),
          "legacy_partial": functools.partial(F.cross_entropy, size_average=False)}


@pytest.mark.filterwarnings("ignore:size_average and reduce args")
@pytest.mark.parametrize("form", list(SUMMED))
def test_summed_loss_is_measured_on_one_batch_and_refused_on_several(form):
    model, _, data = make("residual")
    summed, mean = SUMMED[form], nn.CrossEntropyLoss()
    close(M.dense_hessian(model, summed, data), N * M.dense_hessian(model, mean, data))
    close(M.mean_loss(model, summed, data), N * M.mean_loss(model, mean, data))
    # per-sample gradients are those of one sample's loss: the same for either reduction
    close(M.gradient_covariance(model, summed, data).dense(),
          M.gradient_covariance(model, mean, data).dense())
    for fn in loss_reading_measurements(params_vector(model)):
        with pytest.raises(UserError, match=r"reduction='sum'.*reduction='mean', or pass "
                                            r"the samples as one \(x, y\) batch"):
            fn(model, summed, two_batches(data))


@pytest.mark.parametrize("form", ["module", "partial"])
def test_a_loss_per_sample_is_refused_with_its_remedy(form):
    # reduction='none' gives a vector, not the batch's loss: each measurement failed inside
    # autograd or a float() ("grad can be implicitly created only for scalar outputs", ...)
    model, _, data = make("residual")
    per_sample = {"module": nn.CrossEntropyLoss(reduction="none"),
                  "partial": functools.partial(F.cross_entropy, reduction="none")}[form]
    refused_by_every_measurement(model, per_sample, data, r"reduction='none'.*reduction='mean'")


def test_a_torch_dataset_given_as_data_is_refused_naming_the_data_loader():
    # a TensorDataset iterates over single samples: the model ran on unbatched inputs, which
    # failed ("slice() cannot be applied to a 0-dim tensor", "mat1 and mat2 shapes cannot be
    # multiplied") or, for an MLP, read each sample's features as a batch of that many
    from torch.utils.data import DataLoader, Subset, TensorDataset

    model, loss_fn, (x, y) = make("residual")
    for dataset in (TensorDataset(x, y), Subset(TensorDataset(x, y), range(4))):
        for fn in (M.hessian_top_eigenvalue, M.gradient_covariance, M.mean_loss,
                   M.batch_statistics, lambda *a: M.expected_sharpness(*a, 0.01, 2)):
            with pytest.raises(UserError, match=rf"data is a torch Dataset "
                                                rf"\({type(dataset).__name__}\).*single samples"
                                                rf".*DataLoader\(dataset, batch_size=...\)"):
                fn(model, loss_fn, dataset)
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    close(M.mean_loss(model, loss_fn, loader), M.mean_loss(model, loss_fn, (x, y)))


def test_a_batch_with_several_input_tensors_is_named():
    # ((x1, x2), y) was read as two batches, (x1, x2) the first one's inputs and targets: the
    # model failed on "mat1 and mat2 shapes cannot be multiplied"
    model, loss_fn, (x, y) = make("residual")
    for inputs in ((x, x[:, :2]), [x, x[:, :2]], {"a": x, "b": x[:, :2]}):
        for fn in (M.hessian_top_eigenvalue, M.gradient_covariance, M.mean_loss):
            with pytest.raises(UserError, match=rf"batch whose inputs are a "
                                                rf"{type(inputs).__name__} of several tensors"):
                fn(model, loss_fn, (inputs, y))
    close(M.mean_loss(model, loss_fn, [(x[:5], y[:5]), (x[5:], y[5:])]),
          M.mean_loss(model, loss_fn, (x, y)))          # two batches are still two batches


def test_a_loss_function_of_ones_own_returning_a_loss_per_sample_is_named():
    # a plain function says no reduction: each measurement failed inside autograd or a
    # comparison ("grad can be implicitly created only for scalar outputs", "Boolean value of
    # Tensor with more than one value is ambiguous"); with its mean it is measured
    model, _, data = make("residual")
    per_sample = lambda out, y: F.cross_entropy(out, y, reduction="none")  # noqa: E731
    mean = lambda out, y: F.cross_entropy(out, y, reduction="none").mean()  # noqa: E731
    refused_by_every_measurement(model, per_sample, data,
                                 r"loss_fn <lambda> returns a tensor of shape \(2,\) on the "
                                 r"data's first 2 samples, not one number.*\.mean\(\)")
    close(M.dense_hessian(model, mean, data), M.dense_hessian(model, nn.CrossEntropyLoss(), data))
    with pytest.raises(UserError, match=r"returns a float .*return a 0-dim tensor"):
        M.mean_loss(model, lambda out, y: 1.0, data)


def test_none_as_data_is_named_with_the_callback_it_most_often_comes_from():
    # a MeasurementCallback's fn on ctx.batch, None at step 0, failed deep in the passes on
    # "'NoneType' object is not iterable"
    from sgdlab.data import Dataset
    from sgdlab.train import MeasurementCallback, Schedule, train

    model, loss_fn, (x, y) = make("residual")
    for fn in (M.hessian_top_eigenvalue, M.hessian_trace, M.gradient_covariance, M.mean_loss):
        with pytest.raises(UserError, match=r"^data is None: .* ctx.batch is None at step 0"):
            fn(model, loss_fn, None)
        # the inputs alone were read as batches of rows: "batch 0 is not an (inputs,
        # targets) pair of tensors (got Tensor)"
        with pytest.raises(UserError, match=r"^data is one tensor of shape \(\d+, .*: "
                                            r"measurements take a batch \(x, y\)"):
            fn(model, loss_fn, x)
    on_batch = MeasurementCallback(
        lambda ctx: {"lmax": M.hessian_top_eigenvalue(ctx.model, ctx.loss_fn, ctx.batch)},
        Schedule.every(2))
    with pytest.raises(UserError, match=r"^data is None: .*ctx.data.train"):
        train(model, loss_fn, Dataset(x, y), torch.optim.SGD(model.parameters(), lr=0.0),
              epochs=1, batch_size=4, callbacks=[on_batch], progress=False)


def test_a_dataset_record_or_a_longer_tuple_given_as_data_is_named():
    # a sgdlab Dataset (what train() takes) failed on "'Dataset' object is not iterable"; an
    # (x, y, w) tuple on "batch 0 is not an (inputs, targets) pair of tensors (got Tensor)"
    from sgdlab.data import Dataset

    model, loss_fn, (x, y) = make("residual")
    record = Dataset(x, y, x, y)
    for fn in (M.hessian_top_eigenvalue, M.gradient_covariance, M.mean_loss,
               M.full_batch_grad_norm, M.batch_statistics,
               lambda *a: M.expected_sharpness(*a, 0.01, 2)):
        with pytest.raises(UserError, match=r"data is a sgdlab.data.Dataset: measurements take "
                                            r"a batch \(x, y\) .* data.train"):
            fn(model, loss_fn, record)
        with pytest.raises(UserError, match=r"data is a tuple of 3 tensors: a batch is one "
                                            r"\(inputs, targets\) pair"):
            fn(model, loss_fn, (x, y, y))


class _RunningScale(nn.Module):
    """Divides by a running mean of |x| of its own, updated after use in train mode (as batch
    norm updates its statistics; a clone is used, as spectral norm uses its vectors, so the
    update leaves the graph intact), with a counter: buffers that torch does not know about."""

    def __init__(self, d: int):
        super().__init__()
        self.register_buffer("scale", torch.full((d,), 2.0))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        out = x / self.scale.clone()
        if self.training:
            with torch.no_grad():
                self.scale.mul_(0.5).add_(0.5 * x.abs().mean(0))
                self.calls += 1
        return out


def test_a_train_mode_module_writing_buffers_of_its_own_is_measured_from_them_and_left_so():
    # only batch norm and spectral norm were known to write buffers: every product, per-sample
    # pass, probe and trace of the curvature and noise measurements moved this module's
    # running mean and counter for good, each product seeing another function
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), _RunningScale(4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = _data("vector", 1)
    data, loss_fn = (x.double(), y), nn.CrossEntropyLoss()
    frozen = copy.deepcopy(model).eval()        # the same function, no buffer written
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for fn in (M.dense_hessian, M.ggn_diagonal, lambda *a: M.gradient_covariance(*a).dense(),
               lambda *a: M.hessian_top_eigenvalue(*a, generator=gen(), tol=1e-12),
               lambda *a: M.hessian_trace(*a, 3, generator=gen()).value,
               lambda *a: M.batch_statistics(*a).trace_cov):
        close(fn(model, loss_fn, data), fn(frozen, loss_fn, data))
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k
    assert model[1].training


@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.parametrize("kind", ["running_scale", "spectral_norm"])
def test_each_perturbed_point_starts_from_the_buffers_a_train_mode_module_writes(kind, vectorize):
    # one point at a time, each point's forward pass started from the buffers the points
    # before it had left (a running scale of one's own, a train-mode spectral norm's u and v):
    # expected sharpness and local entropy at σ = 0 read 0.012-0.025, not 0, and the spectral
    # norm's losses at σ = 0.05 were 2e-4 off; vmap, failing after its first in-place write,
    # left a halved scale to the points one at a time
    torch.manual_seed(0)
    first = (_RunningScale(4) if kind == "running_scale"
             else nn.utils.parametrizations.spectral_norm(nn.Linear(4, 4)))
    model = nn.Sequential(nn.Linear(3, 4), first, nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = _data("vector", 1)
    data, loss_fn = (x.double(), y), nn.CrossEntropyLoss()
    theta, before = params_vector(model), {k: v.clone() for k, v in model.state_dict().items()}
    xi = 0.05 * torch.randn(3, len(theta), generator=gen(), dtype=torch.float64)

    def loss_at(point):                         # a fresh copy's forward pass from the buffers
        moved = copy.deepcopy(model)
        set_params_vector(moved, point)
        with torch.no_grad():
            return float(loss_fn(moved(data[0]), y))

    loss, _ = perturbed_evaluations(model, loss_fn, data, xi, vectorize=vectorize)
    close(loss, [loss_at(theta + row) for row in xi])
    for d in (data, two_batches(data)):
        for fn in (lambda: M.expected_sharpness(model, loss_fn, d, 0.0, 3,
                                                vectorize=vectorize).value,
                   lambda: M.local_entropy(model, loss_fn, d, 1e-30, num_samples=3,
                                           vectorize=vectorize).f_gamma
                   - M.mean_loss(model, loss_fn, d)):
            close(fn(), 0.0)
    if kind == "running_scale":
        # the second batch's pass saw the scale the first had moved (0.0017 off), where the
        # gradient and the curvature products start every pass from the model's buffers
        held = copy.deepcopy(model).eval()         # the same function, no buffer written
        for fn in (M.mean_loss, M.full_batch_grad_norm,
                   lambda *a: M.expected_sharpness(*a, 0.05, 3, generator=gen()).value):
            close(fn(model, loss_fn, two_batches(data)), fn(held, loss_fn, data))
    # ε-sharpness's ascent steps too: each step's pass saw the buffers the steps before had
    # moved (the spectral norm's maximum 1.6e-5 above L(θ) at ε = 1e-10; on another running
    # scale, sharpness 1.66 at ε = 1e-12)
    eps = M.epsilon_sharpness(model, loss_fn, data, 1e-10, num_steps=2, generator=gen())
    close(eps.max_loss, eps.loss, 1e-8)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


class _AssignedScale(nn.Module):
    """A running mean of |x| of its own that train mode assigns anew (``self.scale = ...``),
    as modules written by hand often do, where batch norm writes its statistics in place."""

    def __init__(self, d: int):
        super().__init__()
        self.register_buffer("scale", torch.full((d,), 2.0, dtype=torch.float64))

    def forward(self, x):
        out = x / self.scale
        if self.training:
            self.scale = 0.5 * self.scale + 0.5 * x.detach().abs().mean(0)
        return out


def test_a_buffer_assigned_anew_in_train_mode_is_put_back_as_it_was():
    # the buffers were restored into the tensors they had been, which the module no longer
    # held: mean_loss's second batch saw the moved scale (0.6568 for 0.6584) and left it
    # moved (2.0 -> 0.60-1.18), the gradient norm read 0.833 for 0.598, and tracing the
    # model for the Hessian's product left an fx Proxy as the buffer (every pass failed)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), _AssignedScale(4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = _data("vector", 1)
    data, loss_fn = two_batches((x.double(), y)), nn.CrossEntropyLoss()
    held = copy.deepcopy(model).eval()            # the same function, no buffer written
    scale = model[1].scale
    for fn in (M.mean_loss, M.full_batch_grad_norm,
               lambda *a: M.hessian_top_eigenvalue(*a, generator=gen(), tol=1e-12),
               lambda *a: M.expected_sharpness(*a, 0.05, 3, generator=gen()).value):
        close(fn(model, loss_fn, data), fn(held, loss_fn, data))
        assert model[1].scale is scale and torch.equal(scale, torch.full((4,), 2.0).double())


def test_inside_inference_mode_gradient_measurements_are_refused_by_name():
    # torch.inference_mode (an evaluation loop's, Lightning's validation) cannot be left for
    # gradients: each failed on "element 0 of tensors does not require grad" or "Inference
    # tensors do not track version counter"; losses alone are measured there
    model, loss_fn, data = make("residual")
    for fn in (M.dense_hessian, M.hessian_top_eigenvalue, M.gradient_covariance,
               M.full_batch_grad_norm, M.ggn_diagonal, M.batch_statistics,
               lambda *a: M.hessian_trace(*a, 2), lambda *a: M.epsilon_sharpness(*a),
               lambda *a: M.noise_magnitude(*a, 0.1, 2),
               lambda *a: M.sigma_hessian_alignment(*a, 1),
               lambda *a: M.local_entropy_gradient(*a, 1.0, steps=2)):
        with torch.inference_mode(), pytest.raises(
                UserError, match=r"differentiates the loss, .* inside torch.inference_mode\(\)"):
            fn(model, loss_fn, data)
    with torch.inference_mode():
        inside = M.mean_loss(model, loss_fn, data)
    close(inside, M.mean_loss(model, loss_fn, data))
    with torch.no_grad():      # no_grad is fine: the measurements enable gradients
        close(M.dense_hessian(model, loss_fn, data), M.dense_hessian(model, loss_fn, data))


class _DetachesItsLayer(SkipsItsLayer):
    def forward(self, x):
        return self.lin(x).detach()


_GRAPH_MEASUREMENTS = {
    "dense_hessian": M.dense_hessian, "top": M.hessian_top_eigenvalue,
    "ggn_top": lambda *a: M.hessian_top_eigenvalue(*a, operator="ggn"),
    "trace": lambda *a: M.hessian_trace(*a, 2), "grad_norm": M.full_batch_grad_norm,
    "epsilon_sharpness": lambda *a: M.epsilon_sharpness(*a),
    "alignment": lambda *a: M.sigma_hessian_alignment(*a, 1),
    "local_entropy_gradient": lambda *a: M.local_entropy_gradient(*a, 1.0, steps=2)}
_PER_SAMPLE_MEASUREMENTS = {
    "covariance": lambda *a: M.gradient_covariance(*a).dense(),
    "ggn_diagonal": M.ggn_diagonal,
    "fisher_top": lambda *a: M.hessian_top_eigenvalue(*a, operator="empirical_fisher"),
    "noise": lambda *a: M.noise_magnitude(*a, 0.1, 2).noise_norm}


@pytest.mark.parametrize("name", [*_GRAPH_MEASUREMENTS, *_PER_SAMPLE_MEASUREMENTS])
def test_a_loss_that_autograd_cannot_reach_the_parameters_from_is_named(name):
    """A forward pass that skips the layers or detaches their output: autograd reaches no
    parameter from the loss. Each measurement failed on autograd's "element 0 of tensors
    does not require grad" (or "cannot register a hook"), naming neither the loss nor the
    model. Now by name; where the layer is skipped, per-sample gradients (vmap's view of a
    function constant in θ) are exact zeros, as are its gradient and Hessian."""
    fn = {**_GRAPH_MEASUREMENTS, **_PER_SAMPLE_MEASUREMENTS}[name]
    data = (torch.randn(8, 3), torch.tensor([0, 1] * 4))
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(UserError, match=r"does not depend on the model's trainable param"):
        fn(_DetachesItsLayer(), loss_fn, data)
    if name in _GRAPH_MEASUREMENTS:
        with pytest.raises(UserError, match=r"does not depend on the model's trainable param"):
            fn(SkipsItsLayer(), loss_fn, data)
    else:
        assert not torch.as_tensor(fn(SkipsItsLayer(), loss_fn, data)).any()


@pytest.mark.parametrize("kind", ["no_parameters", "all_frozen"])
def test_a_model_with_nothing_to_perturb_has_a_loss_and_names_the_problem_elsewhere(kind):
    """A module without trainable parameters (a fixed feature map, a frozen network) has a
    mean loss: mean_loss and the interpolation's evaluate read their device from a first
    parameter (StopIteration without one).
    What moves or differentiates θ refuses it by name; it failed inside torch.cat
    ("expected a non-empty list of Tensors"), or in a segment's passes."""
    torch.manual_seed(0)
    if kind == "no_parameters":
        model = nn.Sequential(nn.Tanh(), nn.Softplus())
    else:
        model = _dropout(False).double().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 3 if kind == "all_frozen" else 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (N,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    close(M.mean_loss(model, loss_fn, (x, y)), F.cross_entropy(model(x), y), 1e-15)
    close(M.mean_loss(model, loss_fn, two_batches((x, y))), F.cross_entropy(model(x), y), 1e-15)
    close(evaluate(model, loss_fn, two_batches((x, y)))[0], F.cross_entropy(model(x), y), 1e-15)
    empty = torch.zeros(0, dtype=torch.float64)
    for fn in (params_vector, M.parameter_norm,
               lambda m: M.expected_sharpness(m, loss_fn, (x, y), 0.1, 2, generator=gen()),
               lambda m: M.epsilon_sharpness(m, loss_fn, (x, y), generator=gen()),
               lambda m: M.local_entropy(m, loss_fn, (x, y), 0.1, num_samples=2,
                                         generator=gen()),
               lambda m: M.segment_losses(m, loss_fn, (x, y), empty, empty, 3),
               lambda m: M.step_interpolation(m, loss_fn, (x, y), empty),
               lambda m: M.normalized_step_length(m, loss_fn, empty, empty, (x, y)),
               lambda m: M.loss_surface(m, loss_fn, (x, y), [empty, empty], steps=3),
               lambda m: M.hessian_top_eigenvalue(m, loss_fn, (x, y)),
               # it read the dtype of a first parameter: StopIteration without one
               lambda m: M.hessian_diagonal(m, loss_fn, (x, y), exact=True, operator="ggn")):
        with pytest.raises(UserError, match="no trainable parameters"):
            fn(model)


def test_a_compiled_model_called_at_two_batch_sizes_has_its_losses_measured():
    # a model called at two batch sizes (a last, smaller batch) is recompiled with dynamic
    # shapes; the pass planner's size probe hooked its layers inside the compiled forward,
    # and dynamo failed on the hook's ``out.nbytes`` ("Cannot call numel() on tensor with
    # symbolic sizes/strides") in every loss evaluation
    model, loss_fn, (x, y) = make("residual")
    compiled = torch.compile(model, backend="eager")      # dynamo's tracing, no code generation
    try:
        compiled(x)
        compiled(x[:5])
        close(M.mean_loss(compiled, loss_fn, (x, y)), M.mean_loss(model, loss_fn, (x, y)))
    finally:
        torch._dynamo.reset()


def _weight_normed(hook_based: bool) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)     # the hook-based one is deprecated
        lin = (nn.utils.weight_norm if hook_based
               else nn.utils.parametrizations.weight_norm)(nn.Linear(3, 4))
    return nn.Sequential(lin, nn.Tanh(), nn.Linear(4, 2)).double()


def test_the_hook_based_weight_norm_is_measured_where_a_copy_of_the_model_is_made():
    # nn.utils.weight_norm keeps weight = g v / ‖v‖ as a plain attribute, a tensor of the
    # autograd graph: the measurements that copy the model failed on deepcopy's "Only Tensors
    # created explicitly by the user (graph leaves) support the deepcopy protocol"
    hook, param = _weight_normed(True), _weight_normed(False)   # the same function and θ
    loss_fn, data = nn.CrossEntropyLoss(), _data("vector", 1)
    data = (data[0].double(), data[1])
    theta = params_vector(hook)
    close(theta, params_vector(param), 0)
    x = data[0]
    hook(x)                                   # weight = g v / ‖v‖ of the float64 parameters
    weight, out = hook[0].weight.detach().clone(), hook(x).detach()
    params, pre_hooks = list(hook.parameters()), list(hook[0]._forward_pre_hooks.values())
    for fn in (lambda m: M.loss_surface(m, loss_fn, data, [theta * 0 + 0.01], steps=3).train_loss,
               lambda m: M.interpolate_models(m, m, loss_fn, data, alphas=[0.0, 1.0]).train_loss,
               lambda m: M.normalized_step_length(m, loss_fn, theta, theta + 0.01, data).alpha,
               lambda m: M.hessian_top_eigenvalue(m, loss_fn, data, dtype=torch.float32,
                                                  generator=gen())):
        close(fn(hook), fn(param))
    # the model as it was before: its own parameters and hooks, the same weight and function
    assert all(p is q for p, q in zip(hook.parameters(), params, strict=True))
    close(params_vector(hook), theta, 0)
    assert list(hook[0]._forward_pre_hooks.values()) == pre_hooks
    assert hook[0].weight.dtype == torch.float64
    close(hook[0].weight, weight, 0)
    close(hook(x), out, 0)


def test_an_embedding_scaling_its_gradient_by_frequency_is_measured_by_the_losss_derivatives():
    # nn.Embedding(scale_grad_by_freq=True) divides each row's gradient by its token's count
    # in the batch: the Hessian was 0.024 off the loss's, the gradient norm 0.017, Σ 0.006,
    # and one batch disagreed with the same samples in two
    model, loss_fn, data = make("embedding")
    plain = copy.deepcopy(model)
    model.emb.scale_grad_by_freq = True
    for fn in (M.dense_hessian, M.full_batch_grad_norm,
               lambda *a: M.gradient_covariance(*a).dense(),
               lambda *a: M.hessian_top_eigenvalue(*a, generator=gen(), tol=1e-10),
               lambda *a: M.epsilon_sharpness(*a, 1e-2, num_steps=2, generator=gen()).max_loss):
        for d in (data, two_batches(data)):
            close(fn(model, loss_fn, d), fn(plain, loss_fn, data))
    assert model.emb.scale_grad_by_freq                       # put back


def _hook_gradients(model: nn.Sequential, kind: str) -> list:
    """Gradient hooks of ``kind`` on the MLP ``model``: their handles."""
    def halved(*grads):
        return tuple(None if g is None else 0.5 * g for g in grads[-1])

    if kind == "tensor":                  # rescaled, and one parameter clipped
        return [p.register_hook(lambda g: 0.5 * g) for p in model.parameters()] + [
            model[2].bias.register_hook(lambda g: g.clamp(-0.01, 0.01))]
    if kind == "module":                  # the tanh's input gradient, the head's output one
        return [model[1].register_full_backward_hook(lambda m, gi, go: halved(gi)),
                model[2].register_full_backward_pre_hook(lambda m, go: halved(go))]
    if kind == "legacy module":
        return [model[1].register_backward_hook(lambda m, gi, go: halved(gi))]
    return [nn.modules.module.register_module_full_backward_pre_hook(      # global
        lambda m, go: halved(go) if m is model[2] else None)]


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")   # torch, on the pre-hook
@pytest.mark.parametrize("kind", ["tensor", "module", "legacy module", "global"])
def test_measurements_differentiate_the_loss_not_the_models_gradient_hooks(kind):
    # a x0.5 hook on every parameter put the gradient norm 0.38 off the loss's, while the
    # per-sample gradients (torch.func) never saw it; module backward hooks reached these,
    # the Fisher and GGN diagonals and the Hessian products through a kept gradient graph
    from sgdlab.operators import (EmpiricalFisherOperator, GGNOperator, HessianOperator,
                                  full_gradient, per_sample_gradients)

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    loss_fn, data = nn.CrossEntropyLoss(), _data("vector", 1)
    data = (data[0].double(), data[1])
    rows = per_sample_gradients_loop(plain, loss_fn, data)      # the float64 references
    grad, hess = rows.mean(0), dense_hessian_reference(plain, loss_fn, data)
    eig, ggn = torch.linalg.eigvalsh(hess), ggn_reference(plain, loss_fn, data)
    v = torch.randn(len(grad), 3, generator=gen(), dtype=torch.float64)
    model = copy.deepcopy(plain)
    handles = _hook_gradients(model, kind)
    params = list(model.parameters())
    try:
        hooked = torch.autograd.grad(loss_fn(model(data[0]), data[1]), params)
        assert (flatten(hooked) - grad).abs().max() > 0.01              # the hooks bite
        close(M.full_batch_grad_norm(model, loss_fn, data), grad.norm())
        close(full_gradient(model, loss_fn, data), grad)
        for method in ("auto", "vmap"):
            close(per_sample_gradients(model, loss_fn, data, method=method), rows)
            close(M.gradient_covariance(model, loss_fn, data, method=method).dense(),
                  covariance_reference(rows))
        close(M.fisher_diagonal(model, loss_fn, data), rows.var(0, unbiased=False))
        close(M.dense_hessian(model, loss_fn, data), hess)
        for op in (HessianOperator(model, loss_fn, data),     # R-op products, kept graph
                   HessianOperator(model, loss_fn, data, rop=False, taylor=False)):
            close(op.matvec(v[:, 0]), hess @ v[:, 0])
            close(op.matmat(v), hess @ v)
        close(M.hessian_diagonal(model, loss_fn, data, exact=True).value, hess.diagonal())
        close(M.hessian_top_eigenvalue(model, loss_fn, data, generator=gen(), tol=1e-10),
              eig[-1], 1e-7)
        close(M.hessian_spectral_norm(model, loss_fn, data, generator=gen(), tol=1e-10),
              eig.abs().max(), 1e-7)
        close(GGNOperator(model, loss_fn, data).to_dense(), ggn)
        close(M.ggn_diagonal(model, loss_fn, data), ggn.diagonal())
        close(EmpiricalFisherOperator(model, loss_fn, data).to_dense(),
              empirical_fisher_reference(rows))
        # no dense reference: the unhooked model's, which the tests above check
        for fn in (lambda m: M.epsilon_sharpness(m, loss_fn, data, 1e-2, num_steps=3,
                                                 generator=gen()).max_loss,
                   lambda m: M.local_entropy_gradient(m, loss_fn, data, 1.0, steps=2,
                                                      generator=gen()),
                   lambda m: M.sigma_hessian_alignment(m, loss_fn, data, k=2,
                                                       generator=gen()).cosines,
                   lambda m: M.takeuchi_information(m, loss_fn, data).trace,
                   lambda m: M.batch_statistics(m, loss_fn, data).norm_test):
            close(fn(model), fn(plain))
        # training still sees the hooks, as registered: backward gives the hooked gradient
        loss_fn(model(data[0]), data[1]).backward()
        close(flatten([p.grad for p in params]), flatten(hooked), 0)
    finally:
        for h in handles:
            h.remove()
    model.zero_grad()
    loss_fn(model(data[0]), data[1]).backward()                 # removable as ever
    close(flatten([p.grad for p in params]), grad)


def test_a_data_parallel_model_is_measured_as_the_module_it_wraps():
    # torch.func refuses nn.DataParallel ("The stateless API can't be used with
    # nn.DataParallel module"): the local-entropy gradient failed on it, and the vmapped
    # evaluations of sharpness and local entropy went point by point with a warning
    model, loss_fn, data = make("residual")
    wrapped = nn.DataParallel(model)          # on CPU: calls the module, as on one device
    for fn in (lambda m: M.local_entropy_gradient(m, loss_fn, data, 1.0, steps=2,
                                                  generator=gen()),
               lambda m: M.expected_sharpness(m, loss_fn, data, 0.01, 3, generator=gen()).value,
               lambda m: M.local_entropy(m, loss_fn, data, 0.01, num_samples=3,
                                         generator=gen()).f_gamma):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            close(fn(wrapped), fn(model))
    assert_parameters_kept(wrapped, registered(nn.DataParallel(model)))


def test_a_complex_parameter_is_refused_by_name_and_its_real_pairs_measured():
    # a complex parameter was read as one coordinate per entry: the gradient norm, sharpness,
    # surfaces and batch statistics came out wrong without a word, the Hessian 4 x 4 and
    # complex, and Lanczos, Hutchinson and epsilon-sharpness failed inside torch ("value
    # cannot be converted to type double without overflow", "torch.sign is not intended to
    # support complex numbers")
    z = torch.randn(4, dtype=torch.complex128, generator=gen(0))

    class Pair(nn.Module):
        def __init__(self, as_real: bool):
            super().__init__()
            self.z = nn.Parameter(torch.view_as_real(z).clone() if as_real else z.clone())

        def forward(self, x):
            r = (self.z if self.z.is_floating_point() else torch.view_as_real(self.z))
            return (x @ r.reshape(-1) + (r ** 4).sum() * 0.1).unsqueeze(1)

    x, y = torch.randn(6, 8, dtype=torch.float64, generator=gen(1)), torch.zeros(6, 1).double()
    loss_fn, theta = nn.MSELoss(), torch.zeros(8, dtype=torch.float64)
    for fn in (M.dense_hessian, M.full_batch_grad_norm, M.batch_statistics, M.gradient_covariance,
               lambda *a: M.hessian_top_eigenvalue(*a, generator=gen()),
               lambda *a: M.hessian_trace(*a, 2, generator=gen()),
               lambda *a: M.expected_sharpness(*a, 0.01, 2, generator=gen()),
               lambda *a: M.epsilon_sharpness(*a, num_steps=1, generator=gen()),
               lambda *a: M.segment_losses(*a, theta, theta + 0.01, 2),
               lambda m, lf, d: M.parameter_norm(m)):
        with pytest.raises(UserError, match=r"parameter z of shape \(4,\) is torch.complex128: "
                                            r"measurements take real parameters.*view_as_real"):
            fn(Pair(as_real=False), loss_fn, (x, y))
    close(M.mean_loss(Pair(False), loss_fn, (x, y)), M.mean_loss(Pair(True), loss_fn, (x, y)))
    assert M.dense_hessian(Pair(True), loss_fn, (x, y)).shape == (8, 8)


def test_inside_a_parametrization_cache_the_measurements_are_refused_by_name():
    # parametrize.cached() computes a parametrized weight once and reuses it: the points a
    # measurement moved θ to, and its functional calls' own tensors, met the weight of θ
    # (an orthogonal layer: sharpness, local entropy, walks, surfaces 0.002-0.03 off, the GGN
    # diagonal 0.1), without a word
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    model = nn.Sequential(nn.utils.parametrizations.orthogonal(nn.Linear(4, 4)), nn.Tanh(),
                          nn.Linear(4, 2)).double()
    x, y = torch.randn(N, 4, generator=gen(1), dtype=torch.float64), _data("vector", 1)[1]
    loss_fn, theta = nn.CrossEntropyLoss(), params_vector(model)
    for fn in (M.ggn_diagonal, M.dense_hessian,
               lambda *a: M.expected_sharpness(*a, 0.05, 2, generator=gen()),
               lambda *a: M.segment_losses(*a, theta, theta + 0.05, 3),
               lambda *a: M.step_interpolation(*a, theta + 0.05, num_points=3),
               lambda *a: M.loss_surface(*a, [theta * 0 + 0.05], steps=3),
               lambda *a: M.local_entropy_gradient(*a, 1.0, steps=2, generator=gen())):
        with parametrize.cached(), pytest.raises(
                UserError, match=r"parametrized weights are cached \(inside torch.nn.utils."
                                 r"parametrize.cached\(\)\).*outside the cached\(\) block"):
            fn(model, loss_fn, (x, y))
    outside = M.mean_loss(model, loss_fn, (x, y))
    with parametrize.cached():                 # the loss at θ itself is the cached weight's
        close(M.mean_loss(model, loss_fn, (x, y)), outside)
    # a frozen parametrized layer has the same weight at every point: the cache is exact
    model[0].requires_grad_(False)
    outside = M.dense_hessian(model, loss_fn, (x, y))
    with parametrize.cached():
        close(M.dense_hessian(model, loss_fn, (x, y)), outside)


def test_a_sequence_first_batch_is_refused_naming_the_batch_first_remedy():
    # nn.GRU's default batch_first=False takes (T, N, F): Σ and the batch statistics failed
    # inside vmap ("Expected all tensors to have the same size in the mapped dimension"),
    # chunks of the batch would have cut it along T
    torch.manual_seed(0)

    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.GRU(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0][-1])

    model, loss_fn = SeqFirst().double(), nn.CrossEntropyLoss()
    x, y = torch.randn(5, N, 3, generator=gen(1), dtype=torch.float64), _data("vector", 1)[1]
    for fn in (M.gradient_covariance, M.batch_statistics, M.mean_loss, M.dense_hessian,
               lambda *a: M.expected_sharpness(*a, 0.01, 2, generator=gen())):
        for d, which in (((x, y), "the batch"), ([(x, y)], "batch 0")):
            with pytest.raises(UserError, match=rf"data: {which} has 5 inputs along dimension 0 "
                                                rf"but 8 targets.*batch_first=True"):
                fn(model, loss_fn, d)


def test_a_placeholder_target_is_measured_with_a_loss_that_ignores_it():
    # a loss without targets (an unsupervised one) given one placeholder target: refused as a
    # sequence-first batch ("has 8 inputs along dimension 0 but 1 targets")
    model, _, (x, _) = make("residual")

    def loss_fn(out, _):
        return out.square().mean()

    one, each = torch.zeros(1), torch.zeros(N)
    for fn in (M.dense_hessian, M.full_batch_grad_norm, M.mean_loss,
               lambda *a: M.gradient_covariance(*a).dense(),
               lambda *a: M.hessian_top_eigenvalue(*a, generator=gen(), tol=1e-10),
               lambda *a: M.expected_sharpness(*a, 0.01, 2, generator=gen()).value):
        close(fn(model, loss_fn, (x, one)), fn(model, loss_fn, (x, each)))
        close(fn(model, loss_fn, [(x[:3], one), (x[3:], one)]), fn(model, loss_fn, (x, each)))


def test_a_placeholder_target_for_one_channel_images_is_not_read_as_a_sequence():
    # (N, 1, H, W) images have one row along dimension 1 too, but no sequence-first batch is
    # 4-d: an unsupervised loss on grayscale images was refused as one sequence's target
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).double()
    x = torch.randn(6, 1, 4, 4, generator=gen(1), dtype=torch.float64)

    def loss_fn(out, _):
        return out.square().mean()

    for fn in (M.full_batch_grad_norm, lambda *a: M.gradient_covariance(*a).dense()):
        close(fn(model, loss_fn, (x, torch.zeros(1))), fn(model, loss_fn, (x, torch.zeros(6))))


def test_one_target_for_a_sequence_first_batch_of_one_sequence_is_refused():
    # (T, 1, F) inputs with one target read as one sequence: dimension 0 is time, refused as
    # any sequence-first batch, and the message names the placeholder's remedy too
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2)).double()
    x = torch.randn(5, 1, 3, generator=gen(1), dtype=torch.float64)
    for fn in (M.gradient_covariance, M.mean_loss, M.dense_hessian):
        with pytest.raises(UserError, match=r"the batch has 5 inputs along dimension 0 but 1 "
                                            r"targets.*batch_first=True.*torch.zeros\(len\(x\)\)"):
            fn(model, nn.CrossEntropyLoss(), (x, torch.zeros(1, dtype=torch.long)))


def test_inputs_that_require_a_gradient_are_measured_as_data():
    # features taken from another network without torch.no_grad() carry a graph: it entered
    # every Hessian product, and Lanczos failed on "functions with out=... arguments don't
    # support automatic differentiation"
    model, loss_fn, (x, y) = make("residual")
    features = (x * torch.ones(3, dtype=torch.float64, requires_grad=True), y)
    for fn in (lambda d: M.hessian_top_eigenvalue(model, loss_fn, d, generator=gen()),
               lambda d: M.hessian_spectral_density(model, loss_fn, d, num_probes=1, num_iter=3,
                                                    generator=gen()).nodes):
        for d in (features, [features]):
            close(fn(d), fn((x, y)))


def test_a_loss_reading_the_models_parameters_is_refused_by_name():
    # a weight-decay term inside loss_fn reads model.parameters(), which functional calls
    # and the R-op do not replace: the Hessian missed the term's 2λI, vmapped points read it
    # at θ, without a word
    model, _, data = make("residual")
    decayed = lambda out, y: (F.cross_entropy(out, y)                     # noqa: E731
                              + 0.05 * sum(p.pow(2).sum() for p in model.parameters()))
    for fn in (M.dense_hessian, M.mean_loss,
               lambda *a: M.hessian_top_eigenvalue(*a, generator=gen()),
               lambda *a: M.expected_sharpness(*a, 0.01, 2, generator=gen())):
        for d in (data, two_batches(data)):
            with pytest.raises(UserError, match=r"loss_fn <lambda> reads the model's parameters "
                                                r"besides its outputs.*weight decay to the "
                                                r"optimizer"):
                fn(model, decayed, d)
    # the spread of per-sample gradients (the optimizers' noise statistics) and the full
    # gradient, taken through the model, keep it
    plain = nn.CrossEntropyLoss()
    close(M.gradient_covariance(model, decayed, data).dense(),
          M.gradient_covariance(model, plain, data).dense())
    theta = params_vector(model).requires_grad_()
    close(M.full_batch_grad_norm(model, decayed, data),
          torch.func.grad(lambda t: flat_loss(model, plain, data)(t) + 0.05 * t.pow(2).sum())(
              theta).norm())
    # a loss with a parameter of its own (not the model's) is a constant of the measurements
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    scaled = lambda out, y: F.cross_entropy(out * scale, y)                 # noqa: E731
    close(M.dense_hessian(model, scaled, data),
          M.dense_hessian(model, lambda out, y: F.cross_entropy(out * 2.0, y), data))


class LearnedVariance(nn.Module):
    """A regression returning its noise's log-variance, a parameter, beside the mean."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.log_var = nn.Parameter(torch.tensor([0.3]))

    def forward(self, x):
        return self.lin(x).squeeze(-1), self.log_var


def test_a_parameter_returned_among_the_outputs_is_no_loss_reading_parameters():
    # the no-grad probe leaves a returned parameter requiring a gradient: the loss reads it
    # through the outputs, as functional calls replace it
    torch.manual_seed(0)
    model = LearnedVariance().double()
    data = (torch.randn(6, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64))

    def nll(out, y):
        mean, log_var = out
        return (0.5 * log_var + 0.5 * (y - mean) ** 2 / log_var.exp()).mean()

    close(M.dense_hessian(model, nll, data), dense_hessian_reference(model, nll, data))
