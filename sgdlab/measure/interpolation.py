"""Model-to-model linear interpolation (Goodfellow et al. 2015; Keskar et al. 2017 Fig. 3;
Jastrzebski et al. 2018 "Three factors", Fig. 4).

Along θ(α) = (1 − α) θ_A + α θ_B, with α over a range that extends beyond [0, 1] (e.g. −1 to 2),
record the mean loss and the accuracy on the training and test sets. Dropout is off.

Jastrzebski et al. read the *width of the basin* around each end off such a curve ("Higher
ratios result in wider minima (a,b) as seen by the width of the basin around α = 0", Fig. 4;
"We see sharper regions on the right for the lower η/S"): :func:`basin_width` measures it as
the length of the α-interval next to an end on which the loss stays within ``rise`` of its
value there (the paper gives no number; the level is ours). ``side="left"`` / ``"right"``
measures only the outward side (α < 0 for θ_A, α > 1 for θ_B), which the other end's basin
cannot reach.

Batch norm: the running statistics of θ_A and θ_B do not describe the interpolated network, so by
default (``bn_stats="recompute"``) they are recomputed at every α from ``bn_data`` (default:
the training data), without gradients: each layer's mean and unbiased variance over all the
samples as one batch in train mode would give them, whatever the batching, at every layer
(:func:`~sgdlab.measure.batch_norm.recompute_bn_statistics`: one pass per layer with several
batches, or one pass in all with ``bn_layerwise=False``; no EMA horizon). The
alternative ``bn_stats="interpolate"`` interpolates the running statistics like the weights (so
α = 0 and α = 1 reproduce the two models exactly; where an extrapolated running variance
reaches 0 or below, the point is NaN, with a warning), and ``"keep"`` uses model A's buffers.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from sgdlab.accuracy import argmax_hits
from sgdlab.errors import checked_keywords, warn
from sgdlab.measure.batch_norm import BN_TYPES, has_batchnorm, recompute_bn_statistics
from sgdlab.models.modes import eval_mode
from sgdlab.operators.batches import (Data, check_batch_loss, check_model_data,
                                      iterate_batches)
from sgdlab.operators.params import (copy_module, frozen_named_params, model_device,
                                      params_vector, set_params_vector)

__all__ = [
    "BasinWidth",
    "InterpolationCurve",
    "basin_width",
    "evaluate",
    "has_batchnorm",
    "interpolate_models",
    "recompute_bn_statistics",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: LossFn, data: Data) -> tuple[float, float]:
    """(mean loss, accuracy) over ``data`` in eval mode (batches weighted by size).

    The accuracy is training's (:func:`sgdlab.accuracy.argmax_hits`): the fraction of class
    labels hit by the argmax over the class dimension, for (N, C) scores or a label per
    position of (N, C, *d) ones, ignored targets (negative, or the loss's ``ignore_index``)
    left out; NaN for regression targets (floating point), outputs that hold no class scores
    (a tuple or dict that ``loss_fn`` unpacks; a binary classifier's one logit) and data
    without a label.
    """
    check_batch_loss(loss_fn, data)
    check_model_data(model, loss_fn, data, own_mode=False)    # evaluated in eval mode
    device = model_device(model)       # a module without parameters has a loss too
    loss = 0.0
    n = correct = labels = 0
    classify = True
    with eval_mode(model):
        for x, y in iterate_batches(data, device):
            out = model(x)
            loss += float(loss_fn(out, y)) * len(x)
            hits = argmax_hits(out, y, loss_fn) if classify else None
            if hits is None:
                classify = False
            else:
                correct += int(hits[0])
                labels += int(hits[1])
            n += len(x)
    if n == 0:
        raise ValueError("evaluate: data has no samples")
    return loss / n, (correct / labels if classify and labels else float("nan"))


@dataclass
class InterpolationCurve:
    """Loss / accuracy along (1 − α) θ_A + α θ_B. Test entries are empty without test data;
    accuracies are NaN for regression."""

    alphas: list[float]
    train_loss: list[float]
    train_acc: list[float]
    test_loss: list[float]
    test_acc: list[float]
    bn_stats: str

    def to_dict(self) -> dict:
        return asdict(self)


def _float_buffers(model: nn.Module) -> dict[str, Tensor]:
    return {n: b.detach().clone() for n, b in model.named_buffers() if b.is_floating_point()}


def _batchnorm_buffer_names(model: nn.Module) -> set[str]:
    return {f"{prefix}.{n}" if prefix else n for prefix, m in model.named_modules()
            if isinstance(m, BN_TYPES) for n, _ in m.named_buffers(recurse=False)}


def _frozen_params(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.clone() for n, p in frozen_named_params(model).items()}


@checked_keywords()
def interpolate_models(
    model_a: nn.Module,
    model_b: nn.Module,
    loss_fn: LossFn,
    train_data: Data,
    test_data: Data | None = None,
    alphas: Tensor | Sequence[float] | None = None,
    *,
    bn_stats: str = "recompute",
    bn_data: Data | None = None,
    bn_layerwise: bool = True,
) -> InterpolationCurve:
    """Mean loss and accuracy at θ(α) = (1 − α) θ_A + α θ_B for each α.

    Args:
        model_a, model_b: two models of the same architecture (not modified); frozen
            parameters are interpolated like the trainable ones, and so are floating-point
            buffers outside batch norm (spectral norm's power-iteration vectors, a running
            statistic of one's own), so that α = 1 is model B.
        loss_fn: mean-reduced loss.
        train_data, test_data: batches ``(x, y)`` or iterables of batches.
        alphas: default -1, -0.9, ..., 2 (α = 0 is θ_A, α = 1 is θ_B, both exactly).
        bn_stats: "recompute" (default), "interpolate" or "keep"; see the module docstring.
            Ignored for models without batch norm.
        bn_data: data for the recomputation (default ``train_data``).
        bn_layerwise: the recomputation's ``layerwise`` (:func:`recompute_bn_statistics`):
            exact at every layer (default), or ``False``: one pass, each batch of ``bn_data``
            normalised by its own statistics.
    """
    if bn_stats not in ("recompute", "interpolate", "keep"):
        raise ValueError(f"Invalid bn_stats={bn_stats!r}: expected 'recompute', "
                         "'interpolate' or 'keep'")
    theta_a, theta_b = params_vector(model_a), params_vector(model_b)
    if theta_a.shape != theta_b.shape:
        raise ValueError(f"models differ in size: {theta_a.numel()} vs {theta_b.numel()} "
                         "trainable parameters")
    if (theta_a.dtype, theta_a.device) != (theta_b.dtype, theta_b.device):
        # torch.lerp's own error names neither model ("expected dtype float for `end`")
        raise ValueError(f"models differ in dtype or device: {theta_a.dtype} on "
                         f"{theta_a.device} vs {theta_b.dtype} on {theta_b.device}; move one "
                         "to the other's (e.g. model_b.to(dtype=..., device=...))")
    if alphas is None:
        # steps of 0.1 from -1 to 2 with 0 and 1 exact (linspace puts 0 at 5.6e-17)
        alphas = torch.arange(-10, 21, dtype=torch.float64) / 10
    alphas = [float(a) for a in torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)]
    # a frozen part is still part of θ: where the two models' frozen parameters differ, θ(α)
    # moves them too (taking model A's at every α would end the line at another model than B)
    frozen_a, frozen_b = _frozen_params(model_a), _frozen_params(model_b)
    if frozen_a.keys() != frozen_b.keys() or any(
            frozen_a[n].shape != frozen_b[n].shape for n in frozen_a):
        raise ValueError("models differ in their frozen (requires_grad=False) parameters: "
                         f"{sorted(frozen_a)} vs {sorted(frozen_b)}")
    moving = {n: (frozen_a[n], frozen_b[n]) for n in frozen_a
              if not torch.equal(frozen_a[n], frozen_b[n])}
    model = copy_module(model_a)
    frozen = dict(model.named_parameters())
    bn = has_batchnorm(model)
    bufs_a, bufs_b = _float_buffers(model_a), _float_buffers(model_b)
    if bufs_a.keys() != bufs_b.keys() or any(bufs_a[n].shape != bufs_b[n].shape
                                             for n in bufs_a):
        raise ValueError("models differ in their floating-point buffers: "
                         f"{sorted(bufs_a)} vs {sorted(bufs_b)}")
    # buffers outside batch norm move with θ like frozen parameters (A's at every α would end
    # the line at another model than B); batch norm's follow ``bn_stats``
    bn_buffers = _batchnorm_buffer_names(model)
    moving_buffers = {n: (bufs_a[n], bufs_b[n]) for n in bufs_a
                      if n not in bn_buffers and not torch.equal(bufs_a[n], bufs_b[n])}
    buffers = dict(model.named_buffers())
    curve = InterpolationCurve(alphas, [], [], [], [], bn_stats if bn else "none")
    undefined = []
    for a in alphas:
        set_params_vector(model, torch.lerp(theta_a, theta_b, a))
        with torch.no_grad():
            for n, (pa, pb) in moving.items():
                frozen[n].copy_(torch.lerp(pa, pb, a))
            for n, (ba, bb) in moving_buffers.items():
                buffers[n].copy_(torch.lerp(ba, bb, a))
        if bn and bn_stats == "interpolate":
            with torch.no_grad():
                for n, b in model.named_buffers():
                    if n in bufs_a:
                        b.copy_(torch.lerp(bufs_a[n], bufs_b[n], a))
            # extrapolated (α outside [0, 1]) running variances can reach 0 or below: no
            # variance, so no network to evaluate there (NaN, outside any basin)
            if any(bool((b <= 0).any()) for n, b in model.named_buffers()
                   if n.endswith("running_var")):
                undefined.append(a)
                for series in (curve.train_loss, curve.train_acc) + (
                        (curve.test_loss, curve.test_acc) if test_data is not None else ()):
                    series.append(float("nan"))
                continue
        elif bn and bn_stats == "recompute":
            recompute_bn_statistics(model, train_data if bn_data is None else bn_data,
                                    layerwise=bn_layerwise)
        lo, ac = evaluate(model, loss_fn, train_data)
        curve.train_loss.append(lo)
        curve.train_acc.append(ac)
        if test_data is not None:
            lo, ac = evaluate(model, loss_fn, test_data)
            curve.test_loss.append(lo)
            curve.test_acc.append(ac)
    if undefined:
        warn(f"interpolate_models(bn_stats='interpolate'): at alpha = "
                      f"{', '.join(f'{a:g}' for a in undefined)} an interpolated running "
                      "variance is <= 0; those points are NaN (use bn_stats='recompute')",
                      RuntimeWarning)
    return curve


@dataclass
class BasinWidth:
    """The basin around α = ``center`` at level L(center) + ``rise``: the interval [lo, hi] of α
    on which the loss stays below the level, ``width = hi − lo`` (α units: multiply by
    ‖θ_B − θ_A‖ for a parameter distance). ``closed`` is False when the loss never reaches the
    level on one side within the α range (the width is then a lower bound)."""

    center: float
    level: float
    lo: float
    hi: float
    width: float
    closed: bool

    def to_dict(self) -> dict:
        return asdict(self)


@checked_keywords()
def basin_width(alphas: Sequence[float] | Tensor, losses: Sequence[float] | Tensor,
                center: float, rise: float, *, side: str = "both") -> BasinWidth:
    """Width of the basin around the grid point α = ``center`` of an interpolation curve.

    Walking outwards from ``center`` (on both sides, or only to the ``"left"`` / ``"right"``),
    the basin ends where the loss first exceeds L(center) + ``rise``; the crossing is placed by
    linear interpolation between the two grid points around it. On a parabola
    L(α) = L₀ + ½ c (α − α₀)² the width is 2 √(2 rise / c) (one side: √(2 rise / c)), so for
    two ends of one line the ratio of widths is √(c₁ / c₂): the sharper end has the narrower
    basin (Jastrzebski et al. 2018, Fig. 4).
    """
    if side not in ("both", "left", "right"):
        raise ValueError(f"Invalid side={side!r}: expected 'both', 'left' or 'right'")
    a = [float(v) for v in torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)]
    lo_ = [float(v) for v in torch.as_tensor(losses, dtype=torch.float64).reshape(-1)]
    if len(a) != len(lo_) or len(a) < 2:
        raise ValueError(f"need matching alphas and losses with >= 2 points, got {len(a)} "
                         f"and {len(lo_)}")
    if any(x >= y for x, y in zip(a, a[1:])):
        raise ValueError("alphas must be increasing")
    if not rise > 0:
        raise ValueError(f"Invalid rise={rise} (must be > 0)")
    i0 = min(range(len(a)), key=lambda i: abs(a[i] - center))
    # a grid built in float32 (torch.linspace's default) misses 0 and 1 by ~1e-7
    if abs(a[i0] - center) > 1e-4 * min(y - x for x, y in zip(a, a[1:])):
        raise ValueError(f"center={center} is not one of the alphas")
    if not math.isfinite(lo_[i0]):
        raise ValueError(f"the loss at center={center} is not finite ({lo_[i0]})")
    level = lo_[i0] + rise
    closed = True

    def edge(step: int) -> float:
        nonlocal closed
        j = i0
        while 0 <= j + step < len(a):
            k = j + step
            if not math.isfinite(lo_[k]):    # an overflowed loss (inf or NaN): outside the
                return a[j]                  # basin, with no level crossing to place
            if lo_[k] > level:       # crossing between a[j] (below) and a[k] (above)
                t = (level - lo_[j]) / (lo_[k] - lo_[j])
                return a[j] + t * (a[k] - a[j])
            j = k
        closed = False
        return a[j]

    hi = edge(+1) if side != "left" else a[i0]
    lo = edge(-1) if side != "right" else a[i0]
    return BasinWidth(center=a[i0], level=level, lo=lo, hi=hi, width=hi - lo, closed=closed)
