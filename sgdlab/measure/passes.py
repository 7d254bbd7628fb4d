"""Forward passes that fit in memory: a batch in chunks of samples, and the points of a
vmapped evaluation in chunks of fewer.

Evaluating a loss at many parameter points over one large batch (a walk's segment,
:func:`sgdlab.measure.walk.segment_losses`; the perturbed points of sharpness and of a loss
surface, :func:`sgdlab.measure.sharpness.perturbed_evaluations`) holds a forward pass's
activations once per point under ``vmap``, once without. A :class:`PassPlan` sizes the passes
to a memory budget (:func:`evaluation_memory_budget`) from an upper bound on one sample's
activations (:func:`activation_sizes`), keeps every vmapped tensor below cuDNN's 2³¹
elements (:func:`vmap_budget`), and after running out of memory all the same halves them
(:meth:`PassPlan.shrink`, with a warning that says so). Chunks are weighted by size, so the
mean over a batch is the one pass's up to round-off; where a chunk would not see what the
whole batch sees, the plan keeps the batch's loss exact (batch norm normalising with batch
statistics: those of the whole batch, :func:`sgdlab.measure.batch_norm.batch_norm_statistics`)
or refuses (dropout in train mode, whose masks are drawn once per batch; a summed or weighted
mean loss, whose chunks weighted by size do not give the batch's). The numbers behind
the rules: docs/design/walk-and-eta-ratio.md, "Memory at paper scale".

Both evaluations run their points through the same loops: :func:`pointwise_passes` (one point
at a time, written into the model's parameters), :func:`vmapped_passes` (the plan's points a
call), and :func:`evaluate_points`, which tries the second and falls back to the first; each
caller keeps only how its points are made and how it adds up what the passes return.
"""
from __future__ import annotations

import copy
import math
import numbers
import re
import sys
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import TypeVar

import torch
from torch import Tensor, nn

from sgdlab.errors import UserError, torch_warning_ignored, warn
from sgdlab.models.modes import buffer_restorer, eval_mode, uses_batch_statistics
from sgdlab.operators.batches import chunk_loss_problem, stochastic_modules
from sgdlab.operators.params import trainable_named_params

from .batch_norm import batch_norm_statistics, normalise_with, replaced_forwards

__all__ = [
    "NeedsPointwise",
    "PassPlan",
    "VMAP_MAX_ELEMENTS",
    "activation_bytes_per_sample",
    "activation_sizes",
    "evaluate_points",
    "evaluation_memory_budget",
    "is_out_of_memory",
    "memory_budget_bytes",
    "pointwise_passes",
    "resolved_budget",
    "run_within_memory",
    "vmapped_or_none",
    "vmapped_passes",
    "vmap_budget",
]

T = TypeVar("T")
P = TypeVar("P")
# the batches of an evaluation, read afresh at every point
Batches = Callable[[], Iterable[tuple[Tensor, Tensor]]]

_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# torch's fused kernels of its own modules that vmap has no batching rule for and runs once
# per point, with a "performance drop" warning at every call: attention (nn.MultiheadAttention's
# and nn.TransformerEncoderLayer's eval-mode fast paths, the CPU kernel of
# scaled_dot_product_attention below them in train mode) and nn.EmbeddingBag. Once per point
# is what vectorize=False costs too, and the batched routes gained nothing
# (docs/design/curvature.md, "Known limits"): nothing for the caller to act on. Another op's
# fallback (an op in a module of the caller's own) still warns.
_FUSED_FALLBACK = (r"There is a performance drop because we have not yet implemented the "
                   r"batching rule for aten::(_native_multi_head_attention|"
                   r"_transformer_encoder_layer_fwd|_scaled_dot_product_flash_attention_for_cpu|"
                   r"embedding_bag)\b")
# below this many samples a pass gets slow per sample: fewer points per vmap call come first
_MIN_CHUNK = 256
# vmap folds the points into one tensor, and cuDNN indexes with 32 bits (vmap_budget)
VMAP_MAX_ELEMENTS = 2**31 - 1


def evaluation_memory_budget(device: torch.device | str) -> int:
    """Bytes of activations one forward pass of an evaluation may take: half of the device's
    free memory on CUDA (the data and the parameters are already resident), 1 GiB elsewhere
    (:meth:`sgdlab.operators.linear.LinearOperator.memory_budget` keeps a quarter and 256 MiB
    for scratch beside its operator's own passes)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] // 2)
    return 2**30


_BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?)\s*"
                   r"([A-Za-z]*)\s*")
_BUDGET_RULE = ("bytes: a whole number >= 1 such as 2000000000 or 2e9, or a size in B, kB, MB, "
                "GB, TB, KiB, MiB, GiB or TiB such as 512MiB or 1.5GB")


def memory_budget_bytes(value: object, name: str = "memory_budget") -> int | None:
    """A ``memory_budget`` option in bytes, as every place that takes one reads it (a config,
    an experiment file, ``sgdlab measure --memory-budget``): None (the device's default) as
    it is; an int >= 1; a float that is a whole number >= 1 (YAML reads ``2e9`` as one); or
    a string of either, optionally followed by a unit, case ignored: B, kB, MB, GB, TB
    (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), ``"512MiB"``, ``"1.5 GB"``.

    Raises:
        ValueError: "Invalid NAME=VALUE (...)" saying what is wrong: a bool or another type,
            an unknown unit, not a whole number of bytes, below 1, not finite."""
    if value is None:
        return None

    def bad(problem: str) -> ValueError:
        return ValueError(f"Invalid {name}={value!r} ({problem}; {_BUDGET_RULE})")

    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise bad(f"a {type(value).__name__} is no size")
    if isinstance(value, str):
        m = _SIZE.fullmatch(value)
        if m is None:
            raise bad("not a number of bytes")
        unit = _BYTE_UNITS.get(m[2].lower() or "b")
        if unit is None:
            raise bad(f"unknown unit {m[2]!r}")
        amount = Fraction(m[1]) * unit   # exact: 1.005kB is 1005 bytes, in floats 1004.99...
    else:
        if not math.isfinite(value):
            raise bad("not finite")
        amount = Fraction(value)
    if amount.denominator != 1:
        raise bad("not a whole number of bytes")
    if amount < 1:
        raise bad("must be >= 1")
    return int(amount)


def resolved_budget(memory_budget: int | str | None, device: torch.device | str) -> int:
    """``memory_budget`` in bytes (:func:`memory_budget_bytes`), or
    :func:`evaluation_memory_budget` for None."""
    budget = memory_budget_bytes(memory_budget)
    return evaluation_memory_budget(device) if budget is None else budget


def activation_bytes_per_sample(model: nn.Module, x: Tensor) -> int:
    """An upper bound on one sample's activation memory in a forward pass without autograd:
    its input plus the outputs of all leaf modules, measured on (at most) 2 samples of ``x``
    in eval mode. A pass frees most of them as it goes, so this overestimates (CIFAR-10,
    float32: VGG-11 1.87 MiB against a measured peak of 0.50 MiB, ResNet-56 4.14 MiB against
    0.31; docs/design/walk-and-eta-ratio.md). A ``torch.compile``d model is measured on its
    eager module (``_orig_mod``, the same layers)."""
    return activation_sizes(model, x)[0]


def activation_sizes(model: nn.Module, x: Tensor) -> tuple[int, int]:
    """(:func:`activation_bytes_per_sample`, elements per sample of the largest of those
    tensors, which sizes vmapped passes: :func:`vmap_budget`)."""
    # the hooks under torch.compile would be traced: with the dynamic shapes of a recompile
    # (after per-sample passes) ``out.nbytes`` fails, and adding hooks forces a recompile
    model = eager_module(model)
    probe = x[: min(2, len(x))]
    total = [probe.nbytes]
    widest = [probe.numel()]

    def add(_m: nn.Module, _args: tuple, out: object) -> None:
        if isinstance(out, Tensor):
            total[0] += out.nbytes
            widest[0] = max(widest[0], out.numel())

    hooks = [m.register_forward_hook(add) for m in model.modules()
             if next(m.children(), None) is None]
    try:
        with torch.no_grad(), eval_mode(model):
            model(probe)
    finally:
        for h in hooks:
            h.remove()
    return max(1, -(-total[0] // len(probe))), max(1, -(-widest[0] // len(probe)))


def eager_module(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile``d model wraps (``_orig_mod``), else ``model``."""
    # a compiled model exists only once torch imported dynamo: importing it here would add
    # seconds to every process that measures a loss
    frames = sys.modules.get("torch._dynamo.eval_frame")
    return (model._orig_mod if frames is not None and isinstance(model, frames.OptimizedModule)
            else model)


def vmap_budget(budget: int, per_sample: int, widest: int) -> int:
    """``budget`` capped so that no activation of a vmapped pass reaches 2³¹ elements: vmap
    folds the points into one tensor (points × samples × one sample's elements), and cuDNN
    indexes with 32 bits (an H200 evaluating 12 points x 2,000 samples of a 64-channel
    64 x 64 map, 6.3e9 elements, raised CUDNN_STATUS_NOT_SUPPORTED, and the points went one
    by one). Without vmap, torch splits such a convolution itself."""
    return min(budget, max(1, VMAP_MAX_ELEMENTS // widest) * per_sample)


def _chunk_sizes(per_sample: int, n: int, points: int, budget: int,
                 vectorize: bool) -> tuple[int, int]:
    """(points per vmap call, samples per pass) whose activations fit in ``budget`` bytes:
    a vmap call over k points holds about k + 1 copies of one point's activations."""
    if not vectorize:
        return 1, max(1, min(n, budget // per_sample))
    k = points
    c = budget // ((k + 1) * per_sample)
    if c < min(n, _MIN_CHUNK) and k > 1:
        k = max(1, min(k, budget // (per_sample * min(n, _MIN_CHUNK)) - 1))
        c = budget // ((k + 1) * per_sample)
    return k, max(1, min(n, c))


def is_out_of_memory(e: BaseException) -> bool:
    """torch's out-of-memory error, or an allocation failure that reaches Python as a plain
    RuntimeError: a library's (cuDNN, cuBLAS) or the CPU allocator's ("DefaultCPUAllocator:
    can't allocate memory", "not enough memory" in older torch)."""
    msg = str(e)
    return (isinstance(e, _OOM) or "out of memory" in msg.lower() or "ALLOC_FAILED" in msg
            or "DefaultCPUAllocator" in msg)


def _smaller(k: int, c: int) -> tuple[int, int] | None:
    """The next (points, samples) to try after running out of memory (None: nothing smaller)."""
    if c > _MIN_CHUNK:
        return k, (c + 1) // 2
    if k > 1:
        return k // 2, c
    if c > 1:
        return k, (c + 1) // 2
    return None


def _chunks(x: Tensor, y: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    if size >= len(x):
        return [(x, y)]          # the batch itself: one pass, as without chunking
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


class NeedsPointwise(Exception):
    """A vmapped pass would split a batch whose loss depends on all its samples at once."""


class PassPlan:
    """Points per vmapped call and samples per pass for each batch of an evaluation whose
    activations fit in ``budget`` bytes, at most ``points`` points a call (``vectorized``)
    or one point at a time; smaller after running out of memory (:meth:`shrink`). One
    sample's activations are measured on the first batch (:func:`activation_sizes`). The
    model's modes when the plan is made decide what a chunk must keep of its batch.
    ``caller`` names the evaluation in warnings and errors; with ``loss_fn``, a batch whose
    loss its chunks' losses weighted by size do not give (a summed or weighted mean loss:
    :func:`sgdlab.operators.batches.chunk_loss_problem`) is refused where it must be split."""

    def __init__(self, model: nn.Module, budget: int, points: int, *, vectorized: bool,
                 caller: str, loss_fn: object = None) -> None:
        self.model, self.budget, self.points = model, budget, points
        self.vectorized, self.caller, self.loss_fn = vectorized, caller, loss_fn
        self.batch_statistics = uses_batch_statistics(model)
        self.random = stochastic_modules(model)
        self._sizes: tuple[int, int] | None = None
        self._cap: int | None = None          # samples per pass after running out of memory
        self._last = (points, 1)

    def one_point(self) -> PassPlan:
        """The plan for evaluating one point at a time (the same measured sizes)."""
        plan = copy.copy(self)
        plan.points, plan.vectorized, plan._cap, plan._last = 1, False, None, (1, 1)
        return plan

    def split(self, x: Tensor, y: Tensor) -> tuple[int, list[tuple[Tensor, Tensor]]]:
        """(points per vmapped call, chunks of the batch ``(x, y)``); under vmap a batch whose
        loss depends on all its samples at once is not split (:class:`NeedsPointwise`)."""
        if self._sizes is None:
            self._sizes = activation_sizes(self.model, x)
        per_sample, widest = self._sizes
        budget = vmap_budget(self.budget, per_sample, widest) if self.vectorized \
            else self.budget
        k, size = _chunk_sizes(per_sample, len(x), self.points, budget, self.vectorized)
        size = size if self._cap is None else min(size, self._cap)
        self._last = (k, size)
        chunks = _chunks(x, y, size)
        problem = None if len(chunks) == 1 or self.loss_fn is None \
            else chunk_loss_problem(self.loss_fn, y)
        if problem is not None:
            raise UserError(
                f"{self.caller}: a batch of {len(x)} samples must be evaluated in chunks of "
                f"{size} to fit in memory, but {problem}, so the chunks' losses weighted by "
                "their sizes are not the batch's: use a plain mean loss, or give a larger "
                "memory_budget")
        if len(chunks) > 1 and self.vectorized and (self.batch_statistics or self.random):
            raise NeedsPointwise
        return k, chunks

    def passes(self, fn: Callable[[Tensor, Tensor], T], x: Tensor, y: Tensor
               ) -> list[tuple[T, int]]:
        """(``fn(outputs, targets)``, samples) of each chunk of the batch ``(x, y)`` at the
        model's parameters. With batch statistics the chunks are normalised by the whole
        batch's; a model that draws random numbers (dropout in train mode: one draw of masks
        per batch) is refused where the batch must be split."""
        chunks = self.split(x, y)[1]
        if len(chunks) == 1:
            return [(fn(self.model(x), y), len(x))]
        if self.random:
            size = len(chunks[0][0])
            raise UserError(
                f"{self.caller}: a batch of {len(x)} samples must be evaluated in chunks of "
                f"{size} to fit in memory, but {', '.join(self.random)} draw(s) random numbers "
                "once per batch (train mode), which chunks would change: pass the data in "
                f"batches of at most {size} samples, put those modules in eval mode, or give "
                "a larger memory_budget")
        if not self.batch_statistics:
            return [(fn(self.model(xc), yc), len(xc)) for xc, yc in chunks]
        stats = batch_norm_statistics(self.model, chunks, caller=self.caller)
        with replaced_forwards({m: normalise_with(m, *st) for m, st in stats.items()}):
            return [(fn(self.model(xc), yc), len(xc)) for xc, yc in chunks]

    def shrink(self, e: BaseException, device: torch.device) -> None:
        """Smaller passes than the last batch's after running out of memory (``e``), with a
        warning; re-raises ``e`` when a single sample at a single point does not fit."""
        k, size = self._last
        nxt = _smaller(k, size)
        if nxt is None:
            raise e
        if device.type == "cuda":
            torch.cuda.empty_cache()
        what = f"{k} points under vmap" if self.vectorized else "one point"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        warn(f"{self.caller}: out of memory evaluating {what} x {size} samples per pass "
             f"({first}); retrying with {nxt[0]} points x {nxt[1]} samples", RuntimeWarning)
        self.points, self._cap = nxt
        self._last = nxt          # a failure before the next split shrinks from here


def run_within_memory(evaluate: Callable[[], T], plan: PassPlan, device: torch.device) -> T:
    """``evaluate()``, again from the start with smaller passes (``plan.shrink``) each time it
    runs out of memory."""
    while True:
        try:
            return evaluate()
        except RuntimeError as e:
            if not is_out_of_memory(e):
                raise
            plan.shrink(e, device)


def vmapped_or_none(evaluate: Callable[[], T], plan: PassPlan,
                    device: torch.device) -> T | None:
    """``evaluate()`` (a vmapped evaluation, :func:`run_within_memory`), or None where the
    points must go one at a time: a batch that must stay whole (:class:`NeedsPointwise`), or
    an error that is not out of memory (an op without a batching rule, train-mode batch norm
    updating unbatched buffers, random ops), which is warned about. Running out of memory
    at one sample and one point is raised."""
    try:
        return run_within_memory(evaluate, plan, device)
    except NeedsPointwise:
        return None
    except RuntimeError as e:
        if is_out_of_memory(e):
            raise
        warn(f"{plan.caller}: vmap failed ({str(e).splitlines()[0]}); evaluating the points "
             "one by one", RuntimeWarning)
        return None


def pointwise_passes(plan: PassPlan, batches: Batches, fn: Callable[[Tensor, Tensor], T], *,
                     num_points: int = 1,
                     write_point: Callable[[int, Tensor], object] | None = None,
                     like: Tensor | None = None) -> tuple[list[list[T]], list[int]]:
    """``fn(outputs, targets)`` of each pass of ``plan.passes`` over ``batches()`` at each
    point, one point at a time: a row per point, a column per pass; and the samples of each
    pass. ``write_point(j, out)`` writes point j into ``out``, a flat vector of the trainable
    parameters like ``like`` (its dtype and device), which is copied into the model's own
    parameters (cheaper than ``functional_call``; restored bit for bit afterwards); without
    it the one point is the model's parameters as they are."""
    sizes: list[int] = []
    # every batch of every point starts from the model's buffers, as the gradients and
    # curvature products do: a train-mode module writing its own (spectral norm's u and v, a
    # running statistic of one's own) would otherwise evaluate each batch, and each point,
    # with the buffers the passes before it left
    restore = buffer_restorer(plan.model)

    def row(j: int) -> list[T]:
        values = []
        for x, y in batches():
            restore()
            for value, m in plan.passes(fn, x, y):
                values.append(value)
                if j == 0:
                    sizes.append(m)
        return values

    if write_point is None:
        return [row(0)], sizes
    if like is None:
        raise ValueError("pointwise_passes: write_point needs like (a flat vector of the "
                         "points' dtype and device)")
    params = [p.detach() for p in trainable_named_params(plan.model).values()]
    saved = [p.clone() for p in params]
    point = torch.empty_like(like)
    # plain views of the point: the foreach copy converts each to its parameter's dtype
    views = [v.view_as(p) for v, p in zip(torch.split(point, [p.numel() for p in params]),
                                          params)]
    rows = []
    try:
        for j in range(num_points):
            write_point(j, point)
            torch._foreach_copy_(params, views)
            rows.append(row(j))
    finally:
        torch._foreach_copy_(params, saved)
    return rows, sizes


def vmapped_passes(plan: PassPlan, batches: Batches, num_points: int,
                   stacked: Callable[[slice], P], evaluate: Callable[[P, Tensor, Tensor], T]
                   ) -> tuple[list[tuple[slice, T, int]], int]:
    """(slice of the points, ``evaluate(stacked(points), x, y)``, samples) of each vmapped
    call over ``batches()``: the points ``plan.split`` gives a call, on each chunk of samples
    of the batch; then the samples of all batches. ``stacked(points)``: the parameters of
    those points, stacked along a first dimension (made once per batch and slice)."""
    calls = []
    n = 0
    restore = buffer_restorer(plan.model)     # each call from them, as one point at a time
    with torch_warning_ignored(_FUSED_FALLBACK, UserWarning):
        for x, y in batches():
            k, chunks = plan.split(x, y)
            for s in range(0, num_points, k):
                points = slice(s, s + k)
                params = stacked(points)
                for xc, yc in chunks:
                    restore()
                    calls.append((points, evaluate(params, xc, yc), len(xc)))
            n += len(x)
    return calls, n


def evaluate_points(plan: PassPlan, device: torch.device, vmapped: Callable[[], T],
                    pointwise: Callable[[PassPlan], T]) -> T:
    """``vmapped()`` where ``plan`` is vectorized and vmap can (:func:`vmapped_or_none`),
    else ``pointwise(plan.one_point())``, again with smaller passes each time it runs out of
    memory (:func:`run_within_memory`)."""
    if plan.vectorized:
        # a vmapped call that failed may have written buffers before the op that failed (an
        # unbatched scale halved in place, then a batched value refused): the points one at a
        # time start from them as they were
        restore = buffer_restorer(plan.model)
        out = vmapped_or_none(vmapped, plan, device)
        if out is not None:
            return out
        restore()
    one = plan.one_point()
    return run_within_memory(lambda: pointwise(one), one, device)
