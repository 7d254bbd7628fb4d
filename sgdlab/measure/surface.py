"""The loss on a line or a plane through a model: L(θ + α d₁) or L(θ + α d₁ + β d₂).

Directions (flat vectors in the order of :func:`~sgdlab.operators.params.params_vector`):

- :func:`random_direction`: a Gaussian direction rescaled to the model's weights, as in Li et
  al. 2018 ("Visualizing the Loss Landscape of Neural Nets", §4, filter-wise normalisation
  d_{i,j} ← d_{i,j} / ‖d_{i,j}‖ · ‖θ_{i,j}‖ for the j-th filter of the i-th layer), so that a
  step α = 1 changes every filter by its own size and plots of networks with different weight
  scales (batch norm makes a network invariant to them) can be compared. ``normalization``
  names the reading: ``"filter"`` (Li et al.; a filter is a slice along the output dimension,
  a row of a linear layer's weight), ``"layer"`` (one parameter tensor at a time),
  ``"model"`` (the whole vector scaled to ‖θ‖) or ``"none"`` (N(0, I)). Parameters with one
  dimension (biases, batch-norm scales and shifts): ``bias_bn="zero"`` leaves them out of the
  direction, as Li et al.'s code does for its figures (``--xignore biasbn``);
  ``"weights"`` uses d = θ there, its behaviour without that flag; ``"normalize"`` treats them
  like the other tensors.
- :func:`hessian_directions`: the top Hessian eigenvectors (unit vectors): the plane of the
  sharpest curvature.
- :func:`trajectory_pca`: the leading principal directions of a training trajectory's
  iterates relative to its last one (Li et al. §7), with the iterates' coordinates in them,
  to draw the path over the plane.

:func:`loss_surface` evaluates the mean loss (and accuracy) on a grid in eval mode on a copy of
the model. Batch norm: ``bn_stats="keep"`` (default) keeps the model's running statistics at
every point, as Li et al. do; ``"recompute"`` recomputes them at every point from the training
data (see :mod:`sgdlab.measure.interpolation`).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from sgdlab.errors import (checked_count_argument, checked_int_argument, checked_keywords,
                           int_at_least, plain_int)
from sgdlab.operators.batches import Data, is_single_batch, iterate_batches
from sgdlab.operators.params import (copy_module, model_device, params_vector,
                                      set_params_vector, trainable_named_params)

from ._repr import compact_repr
from .batch_norm import has_batchnorm, recompute_bn_statistics
from .curvature import hessian_eigenpairs
from .passes import PassPlan, resolved_budget, run_within_memory
from .sharpness import perturbed_evaluations

__all__ = [
    "LossSurface",
    "TrajectoryPCA",
    "hessian_directions",
    "loss_surface",
    "random_direction",
    "trajectory_pca",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
NORMALIZATIONS = ("filter", "layer", "model", "none")
BIAS_BN = ("zero", "weights", "normalize")


def _scaled_to(d: Tensor, w: Tensor, dim: int | None = None) -> Tensor:
    """d rescaled to w's norm, as a whole or (``dim=1``) slice by slice along dimension 0;
    a zero slice of w (a pruned or dead filter) gets a zero direction, not 0/0."""
    if dim is None:
        return d * (torch.linalg.vector_norm(w) / torch.linalg.vector_norm(d).clamp_min(1e-30))
    shape = (-1,) + (1,) * (d.dim() - 1)
    wn = torch.linalg.vector_norm(w.flatten(1), dim=1)
    dn = torch.linalg.vector_norm(d.flatten(1), dim=1).clamp_min(1e-30)
    return d * (wn / dn).reshape(shape)


@checked_keywords()
@torch.no_grad()
def random_direction(model: nn.Module, *, normalization: str = "filter", bias_bn: str = "zero",
                     generator: torch.Generator | None = None) -> Tensor:
    """A Gaussian direction in parameter space, normalised to the weights (module docstring),
    as a flat vector of the model's trainable parameters (its dtype and device)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"Invalid normalization={normalization!r}: expected one of "
                         f"{', '.join(NORMALIZATIONS)}")
    if bias_bn not in BIAS_BN:
        raise ValueError(f"Invalid bias_bn={bias_bn!r}: expected one of {', '.join(BIAS_BN)}")
    params = list(trainable_named_params(model).values())
    if not params:
        raise ValueError("random_direction: the model has no trainable parameters")
    from sgdlab.optim.noise import standard_normal

    parts = []
    for w in params:
        # on the generator's device, then moved: a CPU generator gives the same direction on
        # any device instead of failing on CUDA
        d = standard_normal(w.shape, generator=generator, dtype=w.dtype, device=w.device)
        if w.dim() <= 1 and bias_bn != "normalize":
            d = torch.zeros_like(w) if bias_bn == "zero" else w.detach().clone()
        elif normalization == "filter" and w.dim() >= 2:
            d = _scaled_to(d, w.detach(), dim=1)
        elif normalization in ("layer", "filter"):     # a 1-dim tensor is one "filter"
            d = _scaled_to(d, w.detach())
        parts.append(d.reshape(-1))
    vec = torch.cat(parts)
    if normalization == "model":
        vec = _scaled_to(vec, params_vector(model))
    return vec


@checked_keywords(hessian_eigenpairs, advice={"which": "they are the largest's; for others use "
                                                      "hessian_eigenpairs(..., which=)"})
def hessian_directions(model: nn.Module, loss_fn: LossFn, data: Data, k: int = 2,
                       **kw) -> list[Tensor]:
    """The k top eigenvectors of the Hessian of the mean loss over ``data`` (unit flat vectors,
    largest eigenvalue first; ``operator=``, ``tol``, ``generator`` as in
    :func:`~sgdlab.measure.curvature.hessian_eigenpairs`)."""
    _vals, vecs = hessian_eigenpairs(model, loss_fn, data, k, "largest", **kw)
    return [vecs[:, i].clone() for i in range(vecs.shape[1])]


@dataclass
class TrajectoryPCA:
    """Principal directions of iterates θ_t − θ_T (rows of ``points`` minus the last one):
    ``directions`` (unit flat vectors), ``explained`` (fraction of the total squared
    deviation along each), ``coords`` (T, k): each iterate's coordinates in that basis."""

    directions: list[Tensor]
    explained: list[float]
    coords: Tensor

    __repr__ = compact_repr


@checked_keywords()
def trajectory_pca(points: Tensor | np.ndarray | Sequence[Tensor], k: int = 2) -> TrajectoryPCA:
    """PCA of a trajectory's iterates centred on its last one (Li et al. 2018 §7): the plane
    that captures most of the path, and the path's coordinates in it (so the path can be drawn
    over :func:`loss_surface` computed around the last iterate with these directions)."""
    if isinstance(points, Tensor):
        m = points
    elif isinstance(points, np.ndarray):          # e.g. open_trajectory(dir).snapshots
        # copied when read-only (a trajectory's memmap): torch warns against sharing those
        m = torch.from_numpy(np.require(points, requirements=("C", "W")))
    else:
        m = torch.stack([torch.as_tensor(p) for p in points])
    if m.dim() != 2 or len(m) < 2:
        raise ValueError(f"trajectory_pca: need a (T, d) stack of >= 2 iterates, got shape "
                         f"{tuple(m.shape)}")
    dev = m - m[-1]
    k = checked_count_argument("k", k, min(dev.shape), "min(T, d)")
    _u, s, vh = torch.linalg.svd(dev, full_matrices=False)
    total = float((s ** 2).sum())
    if total == 0:
        raise ValueError("trajectory_pca: every iterate equals the last one")
    dirs = [vh[i].clone() for i in range(k)]
    return TrajectoryPCA(dirs, [float(s[i] ** 2) / total for i in range(k)],
                         dev @ torch.stack(dirs, 1))


@dataclass
class LossSurface:
    """Mean loss / accuracy at θ + Σ_i c_i d_i on a grid: ``coords`` one list per direction,
    ``train_loss`` (and the others) a list for a line, a nested list ``[i][j]`` (i along d₁,
    j along d₂) for a plane; test entries empty without test data, accuracies NaN for
    regression. ``direction_norms``: ‖d_i‖ (a coordinate times it is a parameter distance)."""

    coords: list[list[float]]
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    direction_norms: list[float] = field(default_factory=list)
    bn_stats: str = "none"

    __repr__ = compact_repr

    def to_dict(self) -> dict:
        return asdict(self)


def _grid(extent: float | tuple[float, float], steps: int) -> list[float]:
    if isinstance(extent, numbers.Real):
        lo, hi = -float(extent), float(extent)
    else:
        lo, hi = (float(v) for v in extent) if len(extent) == 2 else (math.nan, math.nan)
    # an infinite extent makes every coordinate (the origin too: 0 · inf) NaN
    n = plain_int(steps)        # a torch int is a count (was refused); a bool is not
    if not (-math.inf < lo < hi < math.inf) or not int_at_least(n, 2):
        raise ValueError(f"need a finite extent (lo < hi, or a number > 0) and an integer "
                         f"steps >= 2, got extent={extent!r} and steps={steps!r}")
    return [float(v) for v in torch.linspace(lo, hi, n, dtype=torch.float64)]


class _Chunked:
    """The batches of ``data`` on ``device`` in ``plan``'s chunks of samples, read afresh at
    every pass (a recomputation passes over its data once per batch-norm layer)."""

    def __init__(self, data: Data, plan: PassPlan, device: torch.device) -> None:
        self.data, self.plan, self.device = data, plan, device

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in iterate_batches(self.data, self.device):
            yield from self.plan.split(x, y)[1]


def _recompute_in_chunks(model: nn.Module, data: Data, layerwise: bool,
                         memory_budget: int | None) -> None:
    """:func:`~sgdlab.measure.batch_norm.recompute_bn_statistics` over ``data``, its batches in
    chunks of samples whose activations fit in ``memory_budget`` (as in
    :func:`~sgdlab.measure.sharpness.perturbed_evaluations`). The per-layer passes pool the
    whole set's statistics however it is batched, so chunks change them by round-off only;
    the one pass (``layerwise=False``) normalises each batch by its own statistics, which
    chunks would change, and keeps the batches whole. A single batch that fits is passed as it
    is (one pass, exact)."""
    if not layerwise:
        recompute_bn_statistics(model, data, layerwise=False)
        return
    device = model_device(model)       # batch norm without affine parameters has its buffers
    plan = PassPlan(model, resolved_budget(memory_budget, device), 1, vectorized=False,
                    caller="loss_surface")
    if not is_single_batch(data) and iter(data) is data:
        data = list(data)              # every pass reads the same batches

    def recompute() -> None:
        if is_single_batch(data):
            x, y = next(iterate_batches(data, device))
            if len(plan.split(x, y)[1]) == 1:
                recompute_bn_statistics(model, data, layerwise=True)
                return
        recompute_bn_statistics(model, _Chunked(data, plan, device), layerwise=True)

    run_within_memory(recompute, plan, device)


@checked_keywords()
def loss_surface(
    model: nn.Module, loss_fn: LossFn, train_data: Data, directions: Sequence[Tensor] | Tensor,
    *, extent: float | tuple[float, float] = 1.0, steps: int = 21,
    test_data: Data | None = None, bn_stats: str = "keep", bn_data: Data | None = None,
    bn_layerwise: bool = True, chunk_size: int = 16, vectorize: bool = False,
    accuracy: bool = True, memory_budget: int | None = None,
) -> LossSurface:
    """The loss on the line (one direction) or plane (two) through the model's parameters θ.

    Args:
        model: not modified (a copy is evaluated, in eval mode).
        loss_fn: mean-reduced loss.
        train_data, test_data: batches ``(x, y)`` or iterables of batches.
        directions: one or two flat vectors (or a (d, k) tensor's columns, a (k, d) one's
            rows) of the trainable
            parameters' size, e.g. from :func:`random_direction`, :func:`hessian_directions`
            or :func:`trajectory_pca`. They are used as given (not re-normalised).
        extent: the coordinates run over [-extent, extent] (or the given (lo, hi)) in
            ``steps`` points per direction (``steps²`` evaluations for a plane).
        bn_stats: ``"keep"`` (the model's running statistics everywhere) or ``"recompute"``
            (recomputed at every point from ``bn_data``, default ``train_data``;
            ``bn_layerwise`` is :func:`~sgdlab.measure.batch_norm.recompute_bn_statistics`'s
            ``layerwise``).
        vectorize, chunk_size: one point at a time, parameters written in place (default),
            or ``chunk_size`` points per ``vmap``-ed forward pass as in
            :func:`~sgdlab.measure.sharpness.expected_sharpness` (no faster on the MLPs and
            CNNs measured, 2x slower on a CNN: batched weights turn convolutions into grouped
            ones). Recomputed batch-norm statistics are always one point at a time.
        accuracy: also the accuracy at every point (``False``: the loss only, the ``*_acc``
            grids NaN).
        memory_budget: bytes of activations one forward pass may take (None: the device's
            default); a larger batch is evaluated in chunks of samples (and of points under
            vmap), as in :func:`~sgdlab.measure.sharpness.perturbed_evaluations`; so do
            recomputed batch-norm statistics with ``bn_layerwise`` (the per-layer passes
            pool the whole set's statistics however it is batched) and their evaluation (eval
            mode). The one pass (``bn_layerwise=False``) normalises each batch by its own
            statistics and keeps it whole.
    """
    if bn_stats not in ("keep", "recompute"):
        raise ValueError(f"Invalid bn_stats={bn_stats!r}: expected 'keep' or 'recompute'")
    # np.int64 is a count; True (1 point) and 2.5 not
    chunk_size = checked_int_argument("chunk_size", chunk_size, 1)
    theta = params_vector(model)
    if isinstance(directions, Tensor):      # one flat vector, or (d, k) columns / (k, d) rows
        dirs = [directions] if directions.dim() == 1 else list(
            directions.T if directions.dim() == 2 and len(directions) == len(theta)
            else directions)
    else:
        dirs = list(directions)
    if len(dirs) not in (1, 2):
        raise ValueError(f"loss_surface: need one or two directions, got {len(dirs)}")
    for i, d in enumerate(dirs):
        if d.shape != theta.shape:
            raise ValueError(f"direction {i} has shape {tuple(d.shape)}, the model's trainable "
                             f"parameters {tuple(theta.shape)}")
        if not bool(torch.isfinite(d).all()):
            raise ValueError(f"direction {i} has non-finite entries")
    dirs = [d.to(dtype=theta.dtype, device=theta.device) for d in dirs]
    grid = _grid(extent, steps)
    coef = torch.tensor(grid, dtype=theta.dtype, device=theta.device)
    work = copy_module(model).eval()
    bn = has_batchnorm(work)
    surf = LossSurface([grid] * len(dirs), direction_norms=[float(d.norm()) for d in dirs],
                       bn_stats=bn_stats if bn else "none")

    def row(offsets: Tensor, data: Data) -> tuple[list[float], list[float]]:
        """(losses, accuracies) at θ + each row of ``offsets``."""
        if bn and bn_stats == "recompute":
            losses, accs = [], []
            here = torch.zeros_like(theta)[None]
            for off in offsets:
                set_params_vector(work, theta + off)
                _recompute_in_chunks(work, train_data if bn_data is None else bn_data,
                                     bn_layerwise, memory_budget)
                # eval mode, the statistics fixed: chunks of samples are exact
                loss, acc = perturbed_evaluations(work, loss_fn, data, here, vectorize=False,
                                                  accuracy=accuracy, memory_budget=memory_budget)
                losses.append(float(loss[0]))
                accs.append(float(acc[0]) if acc is not None else math.nan)
            set_params_vector(work, theta)
            return losses, accs
        loss, acc = perturbed_evaluations(work, loss_fn, data, offsets, chunk_size=chunk_size,
                                          vectorize=vectorize, accuracy=accuracy,
                                          memory_budget=memory_budget)
        return loss.tolist(), (acc.tolist() if acc is not None else [math.nan] * len(loss))

    # one row of the grid at a time: never more than steps x d offsets in memory
    offsets = [coef[:, None] * dirs[0]] if len(dirs) == 1 else \
        [a * dirs[0] + coef[:, None] * dirs[1] for a in coef]
    for split, data in (("train", train_data), ("test", test_data)):
        if data is None:
            continue
        rows = [row(off, data) for off in offsets]
        loss, acc = [r[0] for r in rows], [r[1] for r in rows]
        if len(dirs) == 1:
            loss, acc = loss[0], acc[0]
        setattr(surf, f"{split}_loss", loss)
        setattr(surf, f"{split}_acc", acc)
    return surf
