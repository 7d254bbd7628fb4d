"""Dense float64 references for every estimator (used by the tests; small problems only), and
tiny dataset files in the standard formats (IDX, CIFAR pickles) for the loaders.

Everything here is computed the slow, obvious way — ``torch.func.hessian`` of a functional
loss, explicit per-sample loops, explicit covariance sums, enumeration of all mini-batches — so
that the fast engine in :mod:`sgdlab.operators` / :mod:`sgdlab.measure` can be checked against
it.
"""
from __future__ import annotations

import copy
import gzip
import itertools
import json
import math
import pickle
import re
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from sgdlab.operators.batches import Data, concat_batches
from sgdlab.operators.hessian import composed_weight_norm
from sgdlab.operators.params import (UNUSED_ZERO, flatten, functional_call, params_vector,
                                     trainable_named_params, unflatten_like)

LossFn = Callable[[Tensor, Tensor], Tensor]


def tiny_mlp(in_dim: int = 3, hidden: int = 4, out_dim: int = 2, *, seed: int = 0,
             dtype: torch.dtype = torch.float64, act: type[nn.Module] = nn.Tanh) -> nn.Module:
    """A small smooth MLP for exact-reference tests."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_dim, hidden), act(), nn.Linear(hidden, out_dim))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)
    return model.to(dtype)


def weight_tensor_mask(params) -> Tensor:
    """Which coordinates of the flat parameter vector (``params`` in order) are the weight
    tensors', those of two or more dimensions: what ``field_on="weights"`` perturbs."""
    return torch.cat([torch.full((p.numel(),), p.dim() >= 2) for p in params])


def scalar_linear(weight: float) -> nn.Linear:
    """x ↦ w·x in float64, one weight and no bias: losses and gradients worked out by hand."""
    model = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(weight)
    return model


def random_eval_batchnorm(bn: nn.Module, seed: int) -> nn.Module:
    """``bn`` in eval mode with seeded random running statistics (and affine weights), so that
    eval-mode batch norm is not the identity in the tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        if bn.affine:
            bn.weight.copy_(torch.randn(bn.num_features, generator=g))
            bn.bias.copy_(torch.randn(bn.num_features, generator=g))
    return bn.eval()


def relu_chains_with_ties(channels: int, size: int, classes: int = 3) -> nn.Sequential:
    """conv - ReLU (inplace) - ReLU - max pool, then conv - max pool - ReLU and a linear head;
    the first convolution's channels 1 and 2 have zero weights, so every window of those ties:
    at a positive value (bias 0.5) and at a negative one (bias -0.3), and channel 0's bias of
    -1 leaves many windows whose maximum is negative. Exercises the order of pooling and ReLU
    and convolutions feeding a max pooling directly or through a run (channels-last on CPU)."""
    g = torch.Generator().manual_seed(2)
    first = nn.Conv2d(channels, 3, 3, padding=1)
    with torch.no_grad():
        first.weight.copy_(torch.randn(first.weight.shape, generator=g))
        first.weight[1:] = 0
        first.bias.copy_(torch.tensor([-1.0, 0.5, -0.3]))
    return nn.Sequential(
        first, nn.ReLU(inplace=True), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * (size // 4) ** 2, classes))


def user_model_plugin(name: str, inputs: int = 1, outputs: int = 1) -> str:
    """The source of a plugin module, as a user writes one: it registers a linear model
    ``name`` (flatten, then ``nn.Linear``) on inputs of ``inputs`` features."""
    return f"""import math

import torch

from sgdlab.models import register_model


@register_model({name!r}, paper="-", description="a user's linear model",
                reference_input=({inputs},), reference_outputs={outputs})
def linear(input_shape, num_outputs, *, bias: bool = True):
    return torch.nn.Sequential(torch.nn.Flatten(),
                               torch.nn.Linear(math.prod(input_shape), num_outputs, bias=bias))
"""


# A run config that trains in a blink: Zhu et al.'s cubic regression and its 1-6-6-6-1 MLP.
TINY_RUN = {
    "name": "tiny",
    "data": {"name": "cubic", "seed": 0},
    "model": {"name": "zhu-mlp-1-6-6-6-1"},
    "optimizer": {"name": "sgd", "lr": 0.05},
    "train": {"epochs": 2, "batch_size": 5},
}


def config_errors(raw) -> str:
    """The message of the ConfigError that validating the run config ``raw`` raises."""
    from sgdlab.config import validate_config
    from sgdlab.errors import ConfigError

    try:
        validate_config(raw)
    except ConfigError as e:
        return str(e)
    raise AssertionError(f"the config was accepted: {raw!r}")


def paper_runs(name: str, data_dir: str = "/d") -> dict[str, dict]:
    """``{label: params}`` of catalogue entry ``name``'s runs at ``paper`` scale, its data files
    under ``data_dir`` (only named, not read): what a test of the paper's stated settings
    compares with the text."""
    from sgdlab.experiments.spec import load_experiment

    return {r.label: r.params
            for r in load_experiment(name, "paper").expand(data_dir=data_dir)}


def stored_run(label: str = "a", seed: int = 0, *, params: dict | None = None,
               summary: dict | None = None, metrics: dict | None = None,
               data: dict | None = None, status: str = "finished", key: str | None = None):
    """A :class:`~sgdlab.experiments.procedures.StoredRun` as the store reads one back, for
    the analyses' tests: key and run id ``key`` (``label-seed`` by default), each part empty
    unless given. The summary is a copy: ``add_derived`` writes its values into it."""
    from sgdlab.experiments.procedures import StoredRun

    key = f"{label}-{seed}" if key is None else key
    return StoredRun(key=key, run_id=key, label=label, seed=seed, params=params or {},
                     status=status, summary=dict(summary or {}), metrics=metrics or {},
                     data=data or {})


def unique_prefix(run_id: str, store: str | Path) -> str:
    """The shortest prefix of ``run_id`` (its timestamp at least) that no other run of the store
    at ``store`` begins with, for the tests that name a run by a prefix: ids are a timestamp and
    4 random hex digits, so runs started in the same second share a fixed cut such as
    ``run_id[:-2]`` one time in 256. Unique among the runs recorded so far: ask again after
    another run is recorded."""
    from sgdlab.store import RunStore

    with RunStore(store) as runs:
        others = [r["id"] for r in runs.list_runs() if r["id"] != run_id]
    return next(run_id[:n] for n in range(len(run_id) - 4, len(run_id) + 1)
                if not any(o.startswith(run_id[:n]) for o in others))


def run_experiment_config(raw: dict, folder: Path, scale: str = "cpu"):
    """Runs the experiment config ``raw``, written to ``folder/exp.yaml``, at ``scale``: its
    report in ``folder/o``, its runs in the store ``folder/runs.sqlite``. The runner's result."""
    import yaml

    from sgdlab.experiments.runner import run_experiment

    cfg = folder / "exp.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return run_experiment(str(cfg), scale=scale, out_dir=folder / "o",
                          store_path=str(folder / "runs.sqlite"), progress=None)


def strict_loads(text: str):
    """``json.loads`` as jq or ``JSON.parse`` read: NaN and Infinity are errors, not values."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def tiny_classification(n: int = 12, in_dim: int = 3, classes: int = 2, *, seed: int = 1,
                        dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, in_dim, generator=g, dtype=dtype),
            torch.randint(0, classes, (n,), generator=g))


def toy_dataset(n: int = 40, in_dim: int = 4, classes: int = 3, *, seed: int = 0,
                n_test: int = 10):
    """A float32 Gaussian classification :class:`~sgdlab.data.Dataset` whose test set is the
    first ``n_test`` training samples: for training-loop and instrument checks."""
    from sgdlab.data.base import Dataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return Dataset(x, y, x[:n_test], y[:n_test],
                   meta={"name": "toy", "task": "classification", "input_shape": (in_dim,),
                         "num_outputs": classes})


def tiny_images(n: int = 6, channels: int = 2, size: int = 6, classes: int = 3, *,
                seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """(N, C, size, size) Gaussian images with random class labels, for conv-net checks."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, channels, size, size, generator=g, dtype=dtype),
            torch.randint(0, classes, (n,), generator=g))


def flat_loss(model: nn.Module, loss_fn: LossFn, data: Data) -> Callable[[Tensor], Tensor]:
    """θ ↦ L(θ), mean loss over all samples of ``data`` as a function of the flat vector."""
    x, y = concat_batches(data)
    like = {k: v.detach() for k, v in trainable_named_params(model).items()}

    def f(theta: Tensor) -> Tensor:
        return loss_fn(functional_call(model, unflatten_like(theta, like), (x,)), y)

    return f


def dense_hessian_reference(model: nn.Module, loss_fn: LossFn, data: Data) -> Tensor:
    """∇²L(θ) of the flat-vector loss (d x d), one row at a time: the gradient of each entry
    of ∇L, by autograd's double backward. Reverse over reverse avoids forward-mode AD, whose
    first use compiles TorchScript decompositions for seconds; the rows are not vmapped
    (``jacrev(jacrev(L))``), since vmap's rule for layer norm's double backward was wrong when
    the input and the weight both carry a derivative (torch 2.13: an asymmetric Hessian, 0.09
    off a finite difference of the gradient, on a Transformer encoder layer). Attention runs
    on the math kernel of ``scaled_dot_product_attention``, the only one with a double
    backward. Weight-normed layers compose their weight of elementwise ops
    (:func:`~sgdlab.operators.hessian.composed_weight_norm`): ``torch._weight_norm``'s double
    backward is wrong, so the reference was too (0.66 off on a 3-4-2 MLP)."""
    theta = params_vector(model).requires_grad_()
    f = flat_loss(model, loss_fn, data)
    with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]), composed_weight_norm(model):
        (g,) = torch.autograd.grad(f(theta), theta, create_graph=True)
        if not g.requires_grad:     # a loss linear in θ: ∇L is constant, ∇²L = 0
            return torch.zeros(len(theta), len(theta), dtype=theta.dtype, device=theta.device)
        return torch.stack([torch.autograd.grad(g, theta, e, retain_graph=True)[0]
                            for e in torch.eye(len(theta), dtype=theta.dtype,
                                               device=theta.device)]).detach()


def per_sample_gradients_loop(model: nn.Module, loss_fn: LossFn, data: Data) -> Tensor:
    """(N, d) per-sample gradients by one backward pass per sample."""
    x, y = concat_batches(data)
    params = list(trainable_named_params(model).values())
    rows = []
    for i in range(len(x)):
        loss = loss_fn(model(x[i : i + 1]), y[i : i + 1])
        rows.append(flatten(torch.autograd.grad(loss, params, **UNUSED_ZERO)).detach())
    return torch.stack(rows)


def naive_segment_losses(model: nn.Module, loss_fn: LossFn, batches, theta_a: Tensor,
                         theta_b: Tensor, alphas, bn_mode: str = "eval") -> Tensor:
    """Mean loss at (1 − α) θ_a + α θ_b for each α, each point written into a copy of the
    model in eval mode (batch norm in train mode with ``bn_mode="train"``) and evaluated on
    each batch of ``batches`` (a batch or a list of them) in one pass, weighted by size."""
    from sgdlab.models.modes import BN_TYPES
    from sgdlab.operators.params import set_params_vector

    batches = [batches] if isinstance(batches, tuple) else list(batches)
    out = []
    for al in alphas:
        m = copy.deepcopy(model)
        set_params_vector(m, (1 - al) * theta_a + al * theta_b)
        m.eval()
        if bn_mode == "train":
            for mod in m.modules():
                if isinstance(mod, BN_TYPES):
                    mod.train()
        with torch.no_grad():
            total = sum(float(loss_fn(m(x), y)) * len(x) for x, y in batches)
        out.append(total / sum(len(x) for x, _ in batches))
    return torch.tensor(out, dtype=torch.float64)


def covariance_reference(grads: Tensor) -> Tensor:
    """Σ = (1/N) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ by an explicit sum of outer products."""
    g = grads.double()
    mean = g.mean(0)
    out = torch.zeros(g.shape[1], g.shape[1], dtype=torch.float64)
    for gi in g:
        out += torch.outer(gi - mean, gi - mean)
    return out / len(g)


def minibatch_covariance_enumerated(grads: Tensor, batch_size: int, *,
                                    replacement: bool) -> Tensor:
    """Exact covariance of g_B = (1/b) Σ_{i∈B} g_i by enumerating every mini-batch.

    With replacement: all N^b ordered index tuples (each equally likely). Without: all
    C(N, b) subsets (each equally likely).
    """
    g = grads.double()
    n = len(g)
    if replacement:
        batches = list(itertools.product(range(n), repeat=batch_size))
    else:
        batches = list(itertools.combinations(range(n), batch_size))
    means = torch.stack([g[list(b)].mean(0) for b in batches])
    mu = means.mean(0)
    c = means - mu
    return c.T @ c / len(batches)


def ggn_reference(model: nn.Module, loss_fn: LossFn, data: Data) -> Tensor:
    """Gauss–Newton matrix G = Jᵀ (∂²L/∂f²) J computed densely: J is the full Jacobian of all
    outputs f of the batch w.r.t. θ (``jacrev``) and ∂²L/∂f² the Hessian of the mean-reduced
    batch loss w.r.t. all outputs (``torch.func.hessian``), so the 1/N sits inside it."""
    x, y = concat_batches(data)
    like = {k: v.detach() for k, v in trainable_named_params(model).items()}
    theta = params_vector(model)

    def outputs(t: Tensor) -> Tensor:
        return functional_call(model, unflatten_like(t, like), (x,))

    out = outputs(theta).detach()
    # attention on the math kernel: vmap has no rule for the fused one
    with sdpa_kernel([SDPBackend.MATH]):
        jac = torch.func.jacrev(outputs)(theta).reshape(out.numel(), -1)  # (N*C, d)
    h_out = torch.func.jacrev(torch.func.jacrev(lambda o: loss_fn(o.reshape(out.shape), y)))(
        out.reshape(-1))
    return (jac.T @ h_out @ jac).detach()


def empirical_fisher_reference(grads: Tensor) -> Tensor:
    """(1/N) Σ_i g_i g_iᵀ (uncentred second moment of per-sample gradients)."""
    g = grads.double()
    return g.T @ g / len(g)


def quadratic_local_entropy_gradient(A: Tensor, x: Tensor, gamma: float) -> Tensor:
    """∇f_γ(x) of L(y) = ½ yᵀAy (A SPD) with the coupling exp(−β|x − y|²/(2γ)): the Gibbs
    measure ∝ exp(−β[½yᵀAy + |x − y|²/(2γ)]) is Gaussian with mean (I + γA)⁻¹x for every β,
    so γ⁻¹(x − ⟨y⟩) = A(I + γA)⁻¹x (solved densely in float64)."""
    A, x = A.double(), x.double()
    eye = torch.eye(len(x), dtype=torch.float64)
    return A @ torch.linalg.solve(eye + gamma * A, x)


def assert_rop_products_match_dense(model: nn.Module, data: tuple[Tensor, Tensor],
                                    products: type, columns: int = 3) -> None:
    """Hessian and GGN products of a float64 classifier with 3 outputs whose operators take
    their products from ``products`` (an R-op class) equal the dense matrices: matvec, matmat,
    a two-batch loader (batches weighted by size), and MSE (no closed-form output Hessian);
    so do the Taylor-mode quadratic forms vᵀ A v."""
    import torch.nn.functional as F

    from sgdlab.operators import GGNOperator, HessianOperator

    loss_fn = nn.CrossEntropyLoss()
    d = sum(p.numel() for p in trainable_named_params(model).values())
    v = torch.randn(d, columns, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x, y = data
    loader = [(x[:2], y[:2]), (x[2:], y[2:])]
    mse = lambda out, t: F.mse_loss(out, F.one_hot(t, 3).to(out.dtype))  # noqa: E731
    for operator, reference in ((HessianOperator, dense_hessian_reference),
                                (GGNOperator, ggn_reference)):
        a = reference(model, loss_fn, data)
        op = operator(model, loss_fn, data)
        assert isinstance(op._rop, products), (operator.__name__, type(op._rop))
        torch.testing.assert_close(op.matvec(v[:, 0]), a @ v[:, 0])
        torch.testing.assert_close(op.matmat(v), a @ v)
        torch.testing.assert_close(operator(model, loss_fn, loader).matmat(v), a @ v)
        torch.testing.assert_close(operator(model, mse, data).matmat(v),
                                   reference(model, mse, data) @ v)
        assert op._taylor is not None
        forms = (v * (a @ v)).sum(0)
        torch.testing.assert_close(op.quadratic_forms(v), forms)
        torch.testing.assert_close(operator(model, loss_fn, loader).quadratic_forms(v), forms)


# ---------------------------------------------------------------------------------------------
# dataset files in the standard formats, written small
# ---------------------------------------------------------------------------------------------

IDX_NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = False, magic: int | None = None) -> Path:
    """IDX as LeCun specifies it: big-endian magic (0x0000, type 0x08=ubyte, ndim), sizes, data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | arr.ndim  # 2051 for 3-D images, 2049 for 1-D labels
    blob = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)
    return path


def make_idx_dir(root: Path, n_train=40, n_test=20, *, gz=False, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": np.arange(n_test, dtype=np.uint8) % 10}
    root.mkdir(parents=True, exist_ok=True)
    for k, a in arrays.items():
        write_idx(root / IDX_NAMES[k], a, gz=gz)
    return arrays


def write_cifar_batch(path: Path, images: np.ndarray, labels, key=b"labels", extra=None) -> None:
    """As the originals: a dict with bytes keys, b"data" uint8 (N, 3072) = R, G, B planes."""
    d = {b"batch_label": b"testing batch", key: list(map(int, labels)),
         b"data": images.reshape(len(images), 3072), b"filenames": [b"x.png"] * len(images)}
    d.update(extra or {})
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def make_cifar10(root: Path, n=10, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = (np.arange(n) + i) % 10
        write_cifar_batch(d / f"data_batch_{i}", x, y)
        xs.append(x)
        ys.append(y)
    xt = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    write_cifar_batch(d / "test_batch", xt, np.arange(n_test) % 10)
    return np.concatenate(xs), np.concatenate(ys), xt


def drawn_inside_width_and_top(fig, text) -> bool:
    """Whether the matplotlib ``text`` of ``fig`` (a title, once the figure has been drawn)
    lies within the figure's width and below its top edge: a long title ran past them."""
    box = text.get_window_extent(fig.canvas.get_renderer())
    return 0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1


def fresh_python(code: str, *args: str, env: dict | None = None, timeout: float = 120) -> str:
    """Run ``python -c code *args`` in a fresh interpreter that sees only this checkout (on
    PYTHONPATH, with an empty PATH, plus ``env``), for checks of what an import or a command
    pulls into ``sys.modules``; asserts it exited 0 (its stderr as the message), returns its
    stdout."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         cwd=root, timeout=timeout,
                         env={"PYTHONPATH": str(root), "PATH": "", **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout


def start_twice_at_once(start: Callable[[], object]) -> tuple[list, list[str]]:
    """Call ``start`` in two threads at once (a test holds them together where it matters,
    e.g. with a barrier after a free-folder check); returns what the calls returned and the
    messages of the :class:`~sgdlab.errors.UserError` refusals."""
    import threading

    from sgdlab.errors import UserError

    started: list = []
    refused: list[str] = []

    def one() -> None:
        try:
            started.append(start())
        except UserError as e:
            refused.append(str(e))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return started, refused


# a fenced block of Markdown: its language (maybe none) and its text, up to the closing fence
FENCED_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


class FencedBlock(NamedTuple):
    lang: str         # "" for a block that names none
    code: str
    line: int         # the line of its opening fence, 1-based


def fenced_blocks(text: str, *langs: str) -> list[FencedBlock]:
    """The fenced code blocks of Markdown ``text`` in order, those of languages ``langs``
    only where given (the doc tests run or parse them); :data:`FENCED_BLOCK` removes them
    (``FENCED_BLOCK.sub("", text)``: the prose)."""
    found = [FencedBlock(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
             for m in FENCED_BLOCK.finditer(text)]
    return [b for b in found if not langs or b.lang in langs]


def markdown_anchors(page: Path) -> set[str]:
    """Explicit ``<a id>`` anchors and GitHub's heading slugs of a Markdown page (a ``#`` line
    inside a fenced block is no heading): what the doc tests check a link's ``#anchor`` in."""
    text = page.read_text()
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
             for h in re.findall(r"^#+ (.+)$", FENCED_BLOCK.sub("", text), re.M)}
    return slugs | set(re.findall(r'<a id="([^"]+)"', text))


class ThreadCommunicator:
    """Replica ``rank`` of ``world`` replica processes run as threads (:func:`run_threads`):
    ``average`` all-reduces through shared slots, summing in rank order and dividing by the
    world size (what :func:`sgdlab.optim.elastic.master_average` does in process), and
    ``reduce_round`` averages the anchors and the replica loss in one buffer, as
    :class:`sgdlab.train.communicator.TorchDistributedCommunicator` does. The barrier times
    out: a mismatched collective fails the test instead of hanging it."""

    def __init__(self, rank: int, shared: dict):
        self.rank, self.shared = rank, shared
        self.world_size = len(shared["slots"])

    def average(self, tensors: list[Tensor]) -> list[Tensor]:
        slots = self.shared["slots"]
        slots[self.rank] = torch.cat([t.detach().reshape(-1) for t in tensors])
        self.shared["barrier"].wait()
        total = slots[0].clone()
        for s in slots[1:]:
            total = total + s
        self.shared["barrier"].wait()     # every rank has read the slots before any refills
        sizes = [t.numel() for t in tensors]
        return [c.view_as(t) for c, t in zip((total / self.world_size).split(sizes), tensors)]

    def reduce_round(self, anchors, losses):
        (mine,), (loss,) = anchors, losses
        *master, mean = self.average(list(mine) + [loss.detach().reshape(1).to(mine[0])])
        return master, float(mean)


def run_threads(fn: Callable[[int, ThreadCommunicator], object], world: int) -> list:
    """``fn(rank, communicator)`` in a thread per rank, the ranks' communicators a
    :class:`ThreadCommunicator` each; what each returned, or the exception it raised."""
    import threading

    shared = {"slots": [None] * world, "barrier": threading.Barrier(world, timeout=10)}
    out: list = [None] * world

    def target(rank: int) -> None:
        try:
            out[rank] = fn(rank, ThreadCommunicator(rank, shared))
        except Exception as e:      # (handed back to the test)
            out[rank] = e
    threads = [threading.Thread(target=target, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def sgd_steps_then_interrupt(steps: int) -> Callable:
    """A ``torch.optim.SGD.step`` that takes ``steps`` steps, then raises KeyboardInterrupt
    (a Ctrl-C during the next one): patched in, it stops a run where a user would."""
    step, taken = torch.optim.SGD.step, []

    def stopping(self, *args, **kwargs):
        if len(taken) == steps:
            raise KeyboardInterrupt
        taken.append(1)
        return step(self, *args, **kwargs)
    return stopping


def check_copies_recorder(asked: list) -> Callable[[str, Callable], Callable]:
    """``spy(where, real)``: ``real`` (a ``lanczos`` or ``eigenpairs`` to patch in) wrapped so
    that each call appends ``(where, its check_copies keyword)`` to ``asked``, None where the
    call passed none."""
    def spy(where: str, real: Callable) -> Callable:
        def call(*args, **kwargs):
            asked.append((where, kwargs.get("check_copies")))
            return real(*args, **kwargs)
        return call
    return spy


def assert_uniform_moments(samples: Tensor, high: float) -> None:
    """``samples`` (n of them) have the mean high/2 and the variance high²/12 of U[0, high],
    each within 4 standard errors: √(σ²/n) for the mean, √((μ₄ − σ⁴)/n) for the sample
    variance, with μ₄ = high⁴/80 the uniform's fourth central moment."""
    n, var = len(samples), high ** 2 / 12
    assert abs(float(samples.var()) - var) < 4 * high ** 2 * math.sqrt((1 / 80 - 1 / 144) / n)
    assert abs(float(samples.mean()) - high / 2) < 4 * math.sqrt(var / n)


def fake_block_timing(monkeypatch, per_block: Callable[[int], float]) -> None:
    """Replace :class:`~sgdlab.operators.blocking.BlockTuner`'s clock: a block of b columns
    takes ``per_block(b)`` seconds, so a test decides where a timed tuner settles (the same
    cost whatever b: the cap; dearer per column as b grows: 1). The tuner reads its clock
    before and after each timed block."""
    from sgdlab.operators.blocking import BlockTuner

    nxt, ticks, now = BlockTuner._next, itertools.count(), [0.0]

    def spy(self, remaining):
        self._timing = nxt(self, remaining)
        return self._timing

    def clock(self):
        if next(ticks) % 2:           # after a block: its cost
            now[0] += per_block(self._timing)
        return now[0]
    monkeypatch.setattr(BlockTuner, "_next", spy)
    monkeypatch.setattr(BlockTuner, "_clock", clock)


def without_hard_links(monkeypatch, code: int | None = None) -> None:
    """Make ``os.link`` fail as on a file system without hard links (FAT, some network
    file systems), for the rest of the test: with errno ``code`` (default EPERM, FAT's)."""
    import errno
    import os

    code = errno.EPERM if code is None else code

    def no_link(*a, **k):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, "link", no_link)


# --- models of the any-model tests: sequence models and a parameter used twice ---------------


class Quadratic(nn.Module):
    """L(θ) = ½ θᵀ H θ, returned for every sample of the batch (read it with ``out.mean()``):
    the Hessian is ``h`` wherever θ is. θ starts at ``theta``, all ones by default."""

    def __init__(self, h: Tensor, theta: Tensor | None = None):
        super().__init__()
        self.register_buffer("h", h)
        self.theta = nn.Parameter(torch.ones(len(h), dtype=h.dtype) if theta is None
                                  else theta.clone())

    def forward(self, x):
        return (0.5 * self.theta @ self.h @ self.theta).expand(len(x))


class AffineByHand(nn.Module):
    """x ↦ x w + b without nn.Linear (w ones, b zero): per-sample gradients through
    torch.func, outside the factored engine (:mod:`sgdlab.operators.factors`)."""

    def __init__(self, d_in: int = 2):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_in, 1))
        self.b = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x @ self.w + self.b


class TokenTagger(nn.Module):
    """A label per position: (N, C, L) scores for (N, L) targets, as cross-entropy reads them."""

    def __init__(self, vocab: int = 5):
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab, 8), nn.Linear(8, vocab)

    def forward(self, x):
        return self.head(self.emb(x)).transpose(1, 2)


class TokenBag(nn.Module):
    """Tokens -> an embedding (``sparse``: sparse gradients) -> tanh, mean over positions ->
    a linear head."""

    def __init__(self, sparse: bool, vocab: int = 6, dim: int = 3, classes: int = 2):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, sparse=sparse)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(torch.tanh(self.emb(x)).mean(1))


class TinyAttention(nn.Module):
    """Tokens -> an embedding -> self-attention (``nn.MultiheadAttention``: its fused fast path
    in eval mode) -> mean over positions -> a linear head; ``dropout`` on the attention
    weights."""

    def __init__(self, vocab: int = 6, dim: int = 4, heads: int = 2, classes: int = 2, *,
                 dropout: float = 0.0):
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab, dim), nn.Linear(dim, classes)
        self.att = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, x):
        e = self.emb(x)
        return self.head(self.att(e, e, e, need_weights=False)[0].mean(1))


class TinyTransformer(nn.Module):
    """Tokens -> a Transformer encoder layer -> mean over positions -> a linear head. The sizes
    are options: a dense-Hessian reference grows with the square of the parameter count."""

    def __init__(self, vocab: int = 6, dim: int = 4, heads: int = 2, feedforward: int = 8,
                 activation: str = "gelu"):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.enc = nn.TransformerEncoderLayer(d_model=dim, nhead=heads,
                                              dim_feedforward=feedforward, dropout=0.0,
                                              batch_first=True, activation=activation)
        self.head = nn.Linear(dim, 2)

    def forward(self, x):
        return self.head(self.enc(self.emb(x)).mean(1))


class GRUClassifier(nn.Module):
    """A GRU over (N, T, 3) float features; the last hidden state -> a linear head."""

    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.GRU(3, 4, batch_first=True), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[1][-1])


class TiedEmbedding(nn.Module):
    """The embedding matrix is also the output projection (``out.weight is emb.weight``): one
    parameter, registered twice, used twice."""

    def __init__(self):
        super().__init__()
        self.emb, self.mix = nn.Embedding(6, 3), nn.Linear(3, 3)
        self.out = nn.Linear(3, 6, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x):
        return self.out(torch.tanh(self.mix(self.emb(x).mean(1))))


class TiedByHand(nn.Module):
    """The first layer's weight, used again outside its layer as the output projection."""

    def __init__(self):
        super().__init__()
        self.inp, self.mid = nn.Linear(3, 4), nn.Linear(4, 4)

    def forward(self, x):
        return torch.tanh(self.mid(torch.tanh(self.inp(x)))) @ self.inp.weight


class DictOutput(nn.Module):
    """A tiny MLP whose forward returns its logits in a dict (as many library models do), for
    a loss that unpacks them: :func:`dict_logits_loss`."""

    def __init__(self, in_dim: int = 3, classes: int = 2):
        super().__init__()
        self.inp, self.out = nn.Linear(in_dim, 4), nn.Linear(4, classes)

    def forward(self, x):
        return {"logits": self.out(torch.tanh(self.inp(x)))}


def dict_logits_loss(out: dict[str, Tensor], y: Tensor) -> Tensor:
    """Mean cross-entropy of a :class:`DictOutput`'s logits."""
    return nn.functional.cross_entropy(out["logits"], y)


class SkipsItsLayer(nn.Module):
    """A forward pass that never calls its layer (a forgotten call): autograd reaches none of
    the parameters from the loss. The output is the first ``out_dim`` inputs, doubled."""

    def __init__(self, in_dim: int = 3, out_dim: int = 2, dtype: torch.dtype | None = None):
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim, dtype=dtype)
        self.out_dim = out_dim

    def forward(self, x):
        return x[:, :self.out_dim] * 2.0


# --------------------------------------------------------------------------------------------
# Evaluations in chunks of samples (sgdlab.measure.passes)
# --------------------------------------------------------------------------------------------

def memory_budget_for(model: nn.Module, x: Tensor, samples: int) -> int:
    """A memory budget that holds ``samples`` samples of one point per pass."""
    from sgdlab.measure.passes import activation_bytes_per_sample

    return activation_bytes_per_sample(model, x) * samples


class PassSizes:
    """Records the number of samples of each forward pass of ``model`` until :meth:`passes`."""

    def __init__(self, model: nn.Module) -> None:
        self.sizes: list[int] = []
        self.hook = model.register_forward_pre_hook(
            lambda _m, args: self.sizes.append(len(args[0])))

    def passes(self) -> list[int]:
        """The sizes recorded, without the 2-sample probes that size the passes."""
        self.hook.remove()
        return [s for s in self.sizes if s > 2]


def said_out_of_memory(fn: Callable, *args, **kwargs):
    """fn's result, asserting that its warnings said "out of memory" and never "vmap failed"."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    messages = [str(m.message) for m in w]
    assert any("out of memory" in m for m in messages), messages
    assert not any("vmap failed" in m for m in messages), messages
    return out


def torchrun_rank(rank: int, world: int, port, argv: list[str], log: str,
                  hold: str | None = None) -> None:
    """A forked child (torch already imported: no start-up cost) that runs the torchrun
    entry point ``python -m sgdlab.train.distributed`` (its exit status,
    :func:`~sgdlab.train.distributed.exit_status`) as rank ``rank``, with the
    environment torchrun gives it: the rendezvous store's port (read from the pipe ``port``)
    is its launcher's, which every rank joins. Its output goes to ``log``. With ``hold``,
    a process that outlives its end: once the entry point has returned or raised it writes
    its exit status to ``log + ".end"`` and waits (60 s at most) for file ``hold`` to exist
    before it exits, as a process that is slow to exit after an error would (its peers see
    no closed socket meanwhile)."""
    import os
    import sys
    import time

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port.recv()),
                      TORCHELASTIC_USE_AGENT_STORE="True", OMP_NUM_THREADS="1")
    rc = 3
    with open(log, "w", buffering=1) as f:
        sys.stdout = sys.stderr = f
        try:
            # the entry point's own status on every path (a traceback printed: 1)
            from sgdlab.train.distributed import exit_status
            rc = exit_status(argv)
        except BaseException as e:  # pragma: no cover - reported through the log
            print(f"unexpected {type(e).__name__}: {e}", flush=True)
        f.flush()
    if hold is not None:
        with open(log + ".ending", "w") as f:
            f.write(str(rc))
        os.replace(log + ".ending", log + ".end")     # whole when seen
        t0 = time.monotonic()
        while not os.path.exists(hold) and time.monotonic() - t0 < 60:
            time.sleep(0.02)
    os._exit(rc)


def forked_torchrun(world: int, argv: list[str], logs: list[str], hold: str | None = None):
    """``world`` ranks of ``python -m sgdlab.train.distributed argv`` as torchrun starts them
    (:func:`torchrun_rank`, rank r printing to ``logs[r]``), forked from this process, and
    the rendezvous store they join, held here on a port the system picks free (a port found
    free here and bound later by rank 0 could be taken meanwhile by another process). This
    process' heartbeat threads are stopped first (``stop_heartbeats``: one inside SQLite at
    the fork would leave SQLite's locks held in the children). Returns (processes, store);
    keep the store as long as the ranks run. ``hold``: :func:`torchrun_rank`'s."""
    import multiprocessing as mp

    import torch.distributed as dist

    from sgdlab.store.runstore import stop_heartbeats

    stop_heartbeats()
    ctx = mp.get_context("fork")
    procs, tells = [], []
    for rank in range(world):
        port, tell = ctx.Pipe(duplex=False)
        p = ctx.Process(target=torchrun_rank,
                        args=(rank, world, port, argv, logs[rank], hold), daemon=True)
        p.start()
        procs.append(p)
        tells.append(tell)
    # after the forks: the store's server thread is not copied into the workers
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    for tell in tells:
        tell.send(store.port)
    return procs, store


# a tiny run of an experiment's `replicas` procedure (chaudhari-parle's), one process per
# replica: 3 rounds of L = 2 steps
SWEEP_REPLICA_PARAMS = {
    "dataset": {"name": "digits", "flatten": True, "n_train": 48},
    "model": {"name": "mlp", "widths": [6]}, "dtype": "float64", "grad_evals": 6,
    "eval_every": 1, "mode": "distributed",
    "parle": {"replicas": 2, "L": 2, "lr": 0.1, "batch_size": 24, "rho": 0.5, "gamma": "inf",
              "lr_milestones": [1]}}


class InProcessLaunch:
    """Stands in for the ``replicas`` procedure's launcher (``chaudhari._start``): ``sgdlab
    parle`` run here in in-process mode on the config it was given, checkpointing every round
    (``--resume`` passed on); the commands it was given kept in ``commands``; ``stop_at``: it
    dies in that round (a Ctrl-C, exit status 1). :func:`launch_in_process` installs it."""

    commands: list = []
    stop_at: int | None = None

    def __init__(self, cmd, **kw):
        from sgdlab.train.distributed import load_config, run_from_config

        self.commands.append(cmd)
        self.code = 0
        try:
            run_from_config(load_config(cmd[4]), mode="inprocess", checkpoint_every=1,
                            out=cmd[cmd.index("--out") + 1], resume="--resume" in cmd)
        except KeyboardInterrupt:
            self.code = 1

    def wait(self):
        return self.code


def launch_in_process(mp) -> None:
    """Through the monkeypatch ``mp``: the ``replicas`` procedure's launcher is
    :class:`InProcessLaunch`, whose training dies in round ``InProcessLaunch.stop_at``; its
    ``commands`` and ``stop_at`` start afresh."""
    from sgdlab.experiments.procedures import chaudhari
    from sgdlab.train import replicas

    mp.setattr(InProcessLaunch, "commands", [])
    mp.setattr(InProcessLaunch, "stop_at", None)
    mp.setattr(chaudhari, "_start", InProcessLaunch)
    one_round = replicas._ReplicaTraining._round

    def dies(self, r):
        if r == InProcessLaunch.stop_at:
            raise KeyboardInterrupt
        return one_round(self, r)

    mp.setattr(replicas._ReplicaTraining, "_round", dies)


def sweep_replica_run(folder: Path, *, stop_in_round: int | None = None):
    """A run of an experiment's ``replicas`` procedure in its ``distributed`` mode on
    :data:`SWEEP_REPLICA_PARAMS`, recorded as a sweep records it in the store
    ``folder/runs.sqlite`` (config ``procedure: replicas``, not ``method: parle``), its
    ``sgdlab parle --out`` folder in its run key's artifact folder. The launcher runs ``sgdlab
    parle`` in-process here (the same files), checkpointing every round;
    ``stop_in_round``: it dies in that round, the sweep's record then ``interrupted``, the
    checkpoint set of the round before kept. Returns (store, run id, run spec)."""
    import pytest

    from sgdlab.experiments.procedures import get_procedure
    from sgdlab.experiments.spec import RunSpec
    from sgdlab.experiments.sweep import artifacts_root
    from sgdlab.experiments.worker import RunContext
    from sgdlab.store import RunStore

    store = RunStore(Path(folder) / "runs.sqlite")
    spec = RunSpec("e", 1, "smoke", "parle", SWEEP_REPLICA_PARAMS, 3, "replicas")
    run_id = store.create_run(spec.config(), name=spec.run_name, experiment="e")
    ctx = RunContext(store=store, run_id=run_id, device="cpu",
                     artifact_dir=artifacts_root(store) / spec.key, dependencies={})
    with pytest.MonkeyPatch.context() as mp:
        launch_in_process(mp)
        InProcessLaunch.stop_at = stop_in_round
        try:
            out = get_procedure("replicas").run(spec, ctx)
        except RuntimeError:
            if stop_in_round is None:
                raise
            store.set_status(run_id, "interrupted")
            return store, run_id, spec
    store.complete_run(run_id, out.status, summary=out.summary)
    return store, run_id, spec


def paper_texts_folder(named: str | None, beside: Path) -> Path | None:
    """The folder of the papers' plain texts (``*.txt``) that the tests check quotes against:
    ``named`` (``$SGDLAB_PAPERS``) where given, else ``beside`` where it holds a text, else
    None (those tests are skipped). A ``named`` folder without a text is an error, not a skip:
    a mistyped path would skip every check against the papers without a word."""
    def holds_texts(p: Path) -> bool:
        return p.is_dir() and any(p.glob("*.txt"))

    if named:
        if not holds_texts(Path(named)):
            raise ValueError(f"SGDLAB_PAPERS={named!r} is not a folder of paper texts (*.txt)")
        return Path(named)
    return beside if holds_texts(beside) else None
