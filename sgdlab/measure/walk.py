"""Step interpolation: the loss along the straight segment between consecutive iterates.

Xing, Arpit, Tsirigotis & Bengio, "A Walk with SGD" (2018), §3 (eq. 1 and the text after it): at
iteration t the training loss is evaluated at points θ(α) = (1 − α) θ_t + α θ_{t+1} "such that we
obtain 10 samples uniformly placed between these two parameter points". Fig. 1's caption plots
those 10 values *between* the losses of the two iterates, so by default (``spacing="interior"``)
K = 10 points lie strictly inside the segment, α = k/(K+1) for k = 1..K, and the two iterates
(α = 0 and 1) are evaluated as well: K + 2 losses per step. ``spacing="inclusive"`` is the other
reading of "α ∈ [0, 1]": K points α = k/(K−1), k = 0..K−1, the iterates among them. From these
losses they read off

- the *valley floor* θ_t^min: the evaluated point of the segment with the lowest loss (the
  iterates included, so the height below is never negative; Xing et al. take the arg-min over
  "the 10 points sampled", which with interior points only could exceed both iterates);
- whether a *barrier is crossed*: some interior point has a loss above both end points;
- the *barrier height*: max over interior points − max(L(θ_t), L(θ_{t+1}));
- the *height above the valley floor*: (L(θ_t) + L(θ_{t+1}) − 2 L(θ_t^min)) / 2 (their Table 2),
  with θ_t^min the valley floor above (``height_floor="segment"``, default) or, as line 128
  defines it, the lowest of the points sampled between the iterates only
  (``height_floor="interior"``: the height may then be negative);

and per epoch, the number of barriers crossed and the mean height (their Tables 1 and 2).

Conventions: L is the *mean* loss over the evaluation data (the whole training set or a fixed
subset, batches weighted by size). The model is evaluated with dropout off; batch-norm layers use
their running statistics (``bn_mode="eval"``, the default) or the statistics of each evaluation
batch (``bn_mode="train"``; the model's running statistics are left untouched either way).
The K points are evaluated either batched over α (``torch.func.functional_call`` under ``vmap``)
or one point after another, each point written into the model's parameters (restored bit for
bit afterwards). Batched is the default on accelerators; on CPU the pointwise path is the
default because batched matmuls over stacked weights measured ~2× slower than K separate ones
(benchmarks/bench_trajectory.py: the pointwise path costs ≈ K plain evaluations). A batch whose
activations exceed a memory budget is evaluated in chunks of samples (and of points under vmap),
which changes the mean only by round-off; in train mode batch norm keeps the statistics of the
whole batch (:func:`sgdlab.measure.batch_norm.batch_norm_statistics`). The passes are sized,
and retried smaller after running out of memory, by :mod:`sgdlab.measure.passes`, shared with
the perturbed losses of sharpness and loss surfaces. Xing et al.'s
paper scale (VGG-11, the 45,000 training images as one batch, 12 points) would need 280 GiB
vmapped in one pass.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.func import vmap

from sgdlab.errors import checked_keywords, int_at_least, plain_int
from sgdlab.measure.batch_norm import BN_TYPES
from sgdlab.measure.passes import (PassPlan, evaluate_points, pointwise_passes, resolved_budget,
                                   vmapped_passes)
from sgdlab.models.modes import buffers_kept, eval_mode
from sgdlab.operators.batches import (Data, check_batch_loss, check_model_data, is_single_batch,
                                      iterate_batches)
from sgdlab.operators.params import (check_params_vector, frozen_named_params, functional_call,
                                     params_vector, trainable_named_params)

__all__ = [
    "StepInterpolation",
    "EpochWalkSummary",
    "analyze_segment",
    "BN_MODES",
    "check_bn_mode",
    "evaluation_mode",
    "SPACINGS",
    "VALLEY_FLOORS",
    "HEIGHT_FLOORS",
    "has_valley_floor",
    "height_floor_of",
    "segment_alphas",
    "segment_losses",
    "step_interpolation",
    "summarize_epochs",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------------
# Evaluating the loss along a segment
# --------------------------------------------------------------------------------------------

SPACINGS = ("interior", "inclusive")
# which segments have a valley floor (Xing et al.): those whose lowest point lies between the
# iterates (the text, line 81), or every segment (Fig. 1's caption, line 70)
VALLEY_FLOORS = ("interior", "segment")
# the θ_t^min of Table 2's height: the lowest evaluated point, iterates included, or the lowest
# of the points between the iterates (line 128: "from the 10 points sampled uniformly between")
HEIGHT_FLOORS = ("segment", "interior")


def has_valley_floor(valley_alpha: float, reading: str = "interior") -> bool:
    """Whether a segment whose lowest point is at ``valley_alpha`` has a valley floor under
    ``reading`` (one of :data:`VALLEY_FLOORS`; another is a ValueError, not read as one)."""
    if reading not in VALLEY_FLOORS:
        raise ValueError(f"Invalid valley floor reading {reading!r}: expected "
                         f"{' or '.join(map(repr, VALLEY_FLOORS))}")
    return reading == "segment" or 0.0 < valley_alpha < 1.0


def height_floor_of(reading: str, spacing: str) -> str:
    """The ``height_floor`` of :func:`analyze_segment` for a reading of Xing et al.'s θ_t^min:
    "segment" (the lowest evaluated point, iterates included) or "sampled" (the lowest of "the
    10 points sampled", line 128: the points between the iterates with ``spacing="interior"``,
    all of them, iterates included, with "inclusive")."""
    if reading not in ("segment", "sampled"):
        raise ValueError(f"Invalid height_floor={reading!r}: expected 'segment' or 'sampled'")
    if spacing not in SPACINGS:
        raise ValueError(f"Invalid spacing={spacing!r}: expected 'interior' or 'inclusive'")
    return "interior" if reading == "sampled" and spacing == "interior" else "segment"


@checked_keywords()
def segment_alphas(num_points: int = 10, *, spacing: str = "interior",
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """The α of the points evaluated on a segment, increasing from 0 to 1 (both iterates).

    ``spacing="interior"`` (Xing et al. §3, Fig. 1: 10 points *between* the iterates):
    α = k/(K+1), k = 0..K+1 — K = ``num_points`` interior points plus the two ends.
    ``spacing="inclusive"``: α = k/(K−1), k = 0..K−1 — K points, the two ends among them.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"Invalid spacing={spacing!r}: expected 'interior' or 'inclusive'")
    num_points = plain_int(num_points)   # np.int64 is a count; True (1 point), 10.0 are not
    if not int_at_least(num_points, 0):
        raise ValueError(f"Invalid num_points={num_points!r}: an int, the points on the segment")
    if spacing == "interior":
        if num_points < 1:
            raise ValueError(f"Invalid num_points={num_points}: need at least 1 point between "
                             "the iterates")
        return torch.linspace(0.0, 1.0, num_points + 2, dtype=dtype)
    if num_points < 2:
        raise ValueError(f"Invalid num_points={num_points}: need at least the 2 end points")
    return torch.linspace(0.0, 1.0, num_points, dtype=dtype)


BN_MODES = ("eval", "train")


def check_bn_mode(bn_mode: object, name: str = "bn_mode", *, also: tuple[str, ...] = ()) -> str:
    """``bn_mode`` if it is one of :data:`BN_MODES` ("eval", "train") or of ``also``, else a
    ValueError naming the option ``name``: the one check of a measurement's ``bn_mode``
    (:func:`evaluation_mode`'s, made without a model). ``also``: a caller's own values (the
    dynamics instrument's "both", a measurement in each mode)."""
    modes = BN_MODES + also
    if bn_mode not in modes:
        listed = ", ".join(map(repr, modes[:-1])) + f" or {modes[-1]!r}"
        raise ValueError(f"Invalid {name}={bn_mode!r}: expected {listed}")
    return bn_mode


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, bn_mode: str = "eval") -> Iterator[None]:
    """Dropout off; batch norm in ``bn_mode`` ("eval": running stats, "train": batch stats).

    Restores every submodule's ``training`` flag on exit, and in "train" mode also the
    batch-norm buffers (running statistics) that forward passes inside the block update.
    """
    check_bn_mode(bn_mode)
    with eval_mode(model):
        if bn_mode == "train":
            for m in model.modules():
                if isinstance(m, BN_TYPES):
                    m.train()
        with buffers_kept(model) if bn_mode == "train" else contextlib.nullcontext():
            yield


def _stacked_params(theta_a: Tensor, theta_b: Tensor, alphas: Tensor,
                    like: dict[str, Tensor]) -> dict[str, Tensor]:
    """{name: (k, *shape)} parameters of the k points (1 − α) θ_a + α θ_b."""
    a = alphas.to(device=theta_a.device, dtype=theta_a.dtype)[:, None]
    pts = torch.lerp(theta_a[None], theta_b[None], a)
    out, i = {}, 0
    for name, t in like.items():
        n = t.numel()
        # contiguous per point: batched matmuls on strided weights are ~2x slower on CPU;
        # each in its parameter's dtype (a float32 head on a float64 body)
        out[name] = pts[:, i : i + n].reshape(len(alphas), *t.shape).to(t.dtype).contiguous()
        i += n
    return out


def _batched_losses(model: nn.Module, loss_fn: LossFn, params: dict[str, Tensor],
                    frozen: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
                    y: Tensor) -> Tensor:
    k = next(iter(params.values())).shape[0]
    # Each point gets its own copy of the buffers: batch norm in train mode updates them in
    # place, which vmap only allows on batched tensors (and the model's own stay untouched).
    bufs = {n: b.unsqueeze(0).expand(k, *b.shape).clone() for n, b in buffers.items()}

    def one(p: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
        return loss_fn(functional_call(model, (p, frozen, b), (x,)), y)

    return vmap(one, in_dims=(0, 0), randomness="same")(params, bufs)


# --------------------------------------------------------------------------------------------
# Memory: passes over chunks of samples (and of points), sgdlab.measure.passes
# --------------------------------------------------------------------------------------------

def _pointwise_losses(loss_fn: LossFn, data: Data, theta_a: Tensor, theta_b: Tensor,
                      alphas: Tensor, plan: PassPlan) -> tuple[Tensor, int]:
    """Sum over batches of size × loss at each point, each point written into the parameters
    of ``plan.model`` (:func:`pointwise_passes`, in the chunks of ``plan``)."""
    device = theta_a.device
    a = alphas.to(dtype=theta_a.dtype).tolist()
    rows, counts = pointwise_passes(
        plan, lambda: iterate_batches(data, device), loss_fn, num_points=len(a),
        write_point=lambda j, out: torch.lerp(theta_a, theta_b, a[j], out=out), like=theta_a)
    if not counts:
        return torch.zeros(len(alphas), dtype=torch.float64, device=device), 0
    w = torch.tensor(counts, dtype=torch.float64, device=device)
    losses = torch.stack([loss for row in rows for loss in row])
    return losses.to(torch.float64).view(len(alphas), len(counts)) @ w, sum(counts)


def _vectorized_losses(model: nn.Module, loss_fn: LossFn, data: Data, theta_a: Tensor,
                       theta_b: Tensor, alphas: Tensor, plan: PassPlan) -> tuple[Tensor, int]:
    """Sum over batches of size × loss at each point, in the points and chunks of samples of
    ``plan`` per vmap call (:func:`vmapped_passes`)."""
    like = trainable_named_params(model)
    frozen = frozen_named_params(model)
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    calls, n = vmapped_passes(
        plan, lambda: iterate_batches(data, theta_a.device), len(alphas),
        lambda points: _stacked_params(theta_a, theta_b, alphas[points], like),
        lambda params, x, y: _batched_losses(model, loss_fn, params, frozen, buffers, x, y))
    total = torch.zeros(len(alphas), dtype=torch.float64, device=theta_a.device)
    for points, vals, m in calls:
        total[points] += vals.to(torch.float64) * m
    return total, n


@checked_keywords()
@torch.no_grad()
def segment_losses(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    theta_a: Tensor,
    theta_b: Tensor,
    alphas: Tensor | Sequence[float] | int = 10,
    *,
    bn_mode: str = "eval",
    alpha_chunk: int | None = None,
    vectorize: bool | None = None,
    memory_budget: int | None = None,
) -> Tensor:
    """Mean loss over ``data`` at (1 − α) θ_a + α θ_b for each α (float64 tensor, one value
    per α: K + 2 of them for ``alphas=K``, the iterates included).

    Args:
        model: the module whose trainable parameters the flat vectors describe
            (``sgdlab.operators.params`` order); its parameters, buffers and train/eval flags
            are the same on return (the pointwise path writes into the parameters meanwhile).
        loss_fn: mean-reduced ``loss_fn(outputs, targets)``.
        data: a batch ``(x, y)`` or an iterable of batches (weighted by size); with
            ``bn_mode="train"`` its batches are drawn once and kept for every point.
        theta_a, theta_b: flat parameter vectors (θ_t and θ_{t+1}).
        alphas: the interpolation coefficients, or K for :func:`segment_alphas` (K points
            between the iterates, plus the iterates).
        bn_mode: "eval" (running statistics) or "train" (statistics of each batch of
            ``data``, however it is chunked); dropout is off in both.
        alpha_chunk: at most this many points per vmap call (None: all K when they fit).
        vectorize: True: batched over α with ``vmap``; False: one point after another (also
            the reference for the batched path); None: batched except on CPU.
        memory_budget: bytes of activations one forward pass may take (None:
            :func:`sgdlab.measure.passes.evaluation_memory_budget`). A batch whose activations
            (:func:`sgdlab.measure.passes.activation_bytes_per_sample` × samples,
            × (points + 1) under vmap) exceed it is evaluated in chunks of samples, and the
            points in chunks of fewer: the mean is the same up to round-off (chunks weighted
            by size). Batch norm normalising with batch statistics (``bn_mode="train"``, or a
            layer without running statistics) then uses those of the whole batch, computed
            over the chunks first (:func:`sgdlab.measure.batch_norm.batch_norm_statistics`;
            one pass per batch-norm layer, one point after another). Running out of memory all
            the same halves the chunks and starts again, with a warning that says so.
    """
    # the parameter vectors first: data and a θ swapped are named by the argument order
    for name, th in (("theta_a", theta_a), ("theta_b", theta_b)):
        check_params_vector(model, th, name, "(model, loss_fn, data, theta_a, theta_b, ...)")
    check_batch_loss(loss_fn, data)
    check_model_data(model, loss_fn, data, own_mode=False)    # bn_mode sets the statistics
    if isinstance(alphas, int):
        alphas = segment_alphas(alphas)
    alphas = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)
    if alpha_chunk is not None and alpha_chunk < 1:
        raise ValueError(f"Invalid alpha_chunk={alpha_chunk} (must be >= 1 or None)")
    budget = resolved_budget(memory_budget, theta_a.device)
    if not is_single_batch(data) and (iter(data) is data or bn_mode == "train"):
        # a one-shot iterator: every point needs another pass; batch statistics: every point
        # must see the same batches (a shuffling DataLoader deals new ones on every pass)
        data = list(data)
    device = theta_a.device
    if vectorize is None:
        vectorize = device.type != "cpu"
    points = len(alphas) if alpha_chunk is None else min(alpha_chunk, len(alphas))
    with evaluation_mode(model, bn_mode):
        plan = PassPlan(model, budget, points, vectorized=vectorize, caller="segment_losses",
                        loss_fn=loss_fn)
        total, n = evaluate_points(
            plan, device,
            lambda: _vectorized_losses(model, loss_fn, data, theta_a, theta_b, alphas, plan),
            lambda one: _pointwise_losses(loss_fn, data, theta_a, theta_b, alphas, one))
    if n == 0:
        raise ValueError("segment_losses: data has no samples")
    return total / n


# --------------------------------------------------------------------------------------------
# Reading the segment: valley floor, barrier, heights
# --------------------------------------------------------------------------------------------

@dataclass
class StepInterpolation:
    """One step's interpolation (Xing et al. §3). Losses are mean losses; α ∈ [0, 1].

    ``barrier_height`` is max(interior) − max(end points) when a barrier is crossed, else 0.
    ``height_above_floor`` is (L(θ_t) + L(θ_{t+1}) − 2 L(θ_t^min)) / 2: ≥ 0 with θ_t^min the
    valley floor (``height_floor="segment"``), of either sign with the lowest point between the
    iterates (``"interior"``).
    """

    alphas: list[float]
    losses: list[float]
    loss_start: float
    loss_end: float
    valley_alpha: float
    valley_loss: float
    barrier: bool
    barrier_height: float
    height_above_floor: float
    step: int | None = None
    epoch: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _parabola_vertex(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Vertex of the parabola through three points (None if they are collinear)."""
    (x0, x1, x2), (y0, y1, y2) = xs, ys
    den = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / den
    c = (x1 * x2 * (x1 - x2) * y0 + x2 * x0 * (x2 - x0) * y1 + x0 * x1 * (x0 - x1) * y2) / den
    if a <= 0:
        return None
    xv = -b / (2 * a)
    return xv, c - b * b / (4 * a)


@checked_keywords()
def analyze_segment(
    alphas: Tensor | Sequence[float],
    losses: Tensor | Sequence[float],
    *,
    rtol: float = 1e-4,
    atol: float = 0.0,
    refine: bool = False,
    height_floor: str = "segment",
    step: int | None = None,
    epoch: int | None = None,
) -> StepInterpolation:
    """Valley floor, barrier and heights from the losses at the points ``alphas`` of a segment.

    ``alphas`` must be increasing with ``alphas[0] = 0`` and ``alphas[-1] = 1`` (the two iterates).
    A barrier is crossed when some interior loss exceeds max(L(0), L(1)) by more than
    ``atol + rtol · |max(L(0), L(1))|`` (the tolerance keeps float round-off on flat segments from
    counting as barriers). The valley floor is the evaluated point with the lowest loss (Xing et
    al.); ``refine=True`` moves it to the vertex of the parabola through that point and its two
    neighbours (if the vertex lies between those neighbours), which is exact when the loss is
    quadratic along the segment. The height above the floor (Table 2) measures from that floor
    (``height_floor="segment"``) or from the lowest point strictly between the iterates
    (``"interior"``: Xing et al.'s θ_t^min "from the 10 points sampled uniformly between θ_t and
    θ_{t+1}", line 128, read with the iterates outside those points; it may lie above both
    iterates, and the height is then negative).
    """
    if height_floor not in HEIGHT_FLOORS:
        raise ValueError(f"Invalid height_floor={height_floor!r}: expected one of "
                         f"{', '.join(HEIGHT_FLOORS)}")
    a = [float(v) for v in torch.as_tensor(alphas, dtype=torch.float64).reshape(-1)]
    l = [float(v) for v in torch.as_tensor(losses, dtype=torch.float64).reshape(-1)]
    if len(a) != len(l) or len(a) < 2:
        raise ValueError(f"need matching alphas and losses with >= 2 points, got "
                         f"{len(a)} and {len(l)}")
    if abs(a[0]) > 1e-12 or abs(a[-1] - 1) > 1e-12 or any(x >= y for x, y in zip(a, a[1:])):
        raise ValueError("alphas must increase from 0 to 1 (the two iterates)")
    if rtol < 0 or atol < 0:
        raise ValueError(f"Invalid tolerances rtol={rtol}, atol={atol} (must be >= 0)")
    l0, l1 = l[0], l[-1]
    top = max(l0, l1)
    interior = l[1:-1]
    peak = max(interior) if interior else -math.inf
    barrier = bool(interior) and peak > top + atol + rtol * abs(top)
    i = min(range(len(l)), key=l.__getitem__)
    va, vl = a[i], l[i]
    if refine and len(l) >= 3:
        # parabola through the minimum and its neighbours (the three first/last points when the
        # minimum is an end point); its vertex is kept if it lies next to the minimum
        j = min(max(i, 1), len(l) - 2)
        vertex = _parabola_vertex(a[j - 1 : j + 2], l[j - 1 : j + 2])
        lo, hi = a[max(i - 1, 0)], a[min(i + 1, len(a) - 1)]
        if vertex is not None and lo <= vertex[0] <= hi and vertex[1] <= vl:
            va, vl = vertex
    if height_floor == "segment":
        height = max(0.0, (l0 + l1 - 2 * vl) / 2)
    elif interior:
        height = (l0 + l1 - 2 * min(interior)) / 2
    else:
        raise ValueError("height_floor='interior' needs a point between the iterates")
    return StepInterpolation(
        alphas=a, losses=l, loss_start=l0, loss_end=l1, valley_alpha=va, valley_loss=vl,
        barrier=barrier, barrier_height=(peak - top) if barrier else 0.0,
        height_above_floor=height, step=step, epoch=epoch,
    )


@checked_keywords()
def step_interpolation(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    theta_a: Tensor,
    theta_b: Tensor | None = None,
    num_points: int = 10,
    *,
    spacing: str = "interior",
    bn_mode: str = "eval",
    alpha_chunk: int | None = None,
    rtol: float = 1e-4,
    atol: float = 0.0,
    refine: bool = False,
    height_floor: str = "segment",
    step: int | None = None,
    epoch: int | None = None,
) -> StepInterpolation:
    """Interpolate the mean loss over ``data`` between θ_t = ``theta_a`` and θ_{t+1} =
    ``theta_b`` (default: the model's current parameters) at the points of
    :func:`segment_alphas` (``num_points``, ``spacing``; default Xing et al.'s 10 points between
    the iterates) and analyse the segment (:func:`segment_losses` then :func:`analyze_segment`).
    ``height_floor``: "segment" or "sampled" (:func:`height_floor_of`)."""
    floor = height_floor_of(height_floor, spacing)
    if theta_b is None:
        theta_b = params_vector(model)
    alphas = segment_alphas(num_points, spacing=spacing)
    losses = segment_losses(model, loss_fn, data, theta_a, theta_b, alphas,
                            bn_mode=bn_mode, alpha_chunk=alpha_chunk)
    return analyze_segment(alphas, losses, rtol=rtol, atol=atol, refine=refine,
                           height_floor=floor, step=step, epoch=epoch)


# --------------------------------------------------------------------------------------------
# Per-epoch tables (Xing et al. Tables 1 and 2)
# --------------------------------------------------------------------------------------------

@dataclass
class EpochWalkSummary:
    """Per epoch: steps interpolated, barriers crossed, mean barrier height (over the steps
    that crossed one; NaN if none), mean height above the valley floor (over all steps)."""

    epoch: int
    steps: int
    barriers: int
    mean_barrier_height: float
    mean_height_above_floor: float

    def to_dict(self) -> dict:
        return asdict(self)


@checked_keywords()
def summarize_epochs(records: Sequence[StepInterpolation]) -> list[EpochWalkSummary]:
    """Group step records by ``epoch`` (records without one count as epoch 0)."""
    groups: dict[int, list[StepInterpolation]] = {}
    for r in records:
        groups.setdefault(0 if r.epoch is None else int(r.epoch), []).append(r)
    out = []
    for e in sorted(groups):
        rs = groups[e]
        bh = [r.barrier_height for r in rs if r.barrier]
        out.append(EpochWalkSummary(
            epoch=e, steps=len(rs), barriers=len(bh),
            mean_barrier_height=sum(bh) / len(bh) if bh else math.nan,
            mean_height_above_floor=sum(r.height_above_floor for r in rs) / len(rs),
        ))
    return out
