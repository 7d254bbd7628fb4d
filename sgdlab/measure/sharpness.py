"""Sharpness and width of a minimum, by perturbing the parameters.

- :func:`expected_sharpness` — E_ξ[L(θ + ξ)] − L(θ), ξ ~ N(0, σ² I) (Neyshabur et al. 2017;
  Zhu et al. 2019). For a quadratic L = ½ θᵀHθ it equals σ² Tr(H) / 2 exactly.
- :func:`epsilon_sharpness` — Keskar et al. (2017): max over the box
  C_ε = {ζ : |ζ_i| ≤ ε (|θ_i| + 1)} of L(θ + ζ) − L(θ), reported as
  100 · (max − L(θ)) / (1 + L(θ)). Keskar solve the inner maximisation with L-BFGS-B; we use
  projected sign-gradient ascent (steps of ``step_fraction`` of the box half-width, projected
  back onto the box), which gives a lower bound on the true maximum.
- :func:`local_entropy` — Chaudhari's thesis Definition 4.20 (local entropy), estimated by
  sampling: f_γ(θ) = −(1/β) log E_{ξ~N(0, (γ/β) I)} exp(−β L(θ + ξ)) (the kernel of the
  thesis' (3.8); Def. 3.3 sets β = 1); the "width" is −f_γ(θ)
  (larger = wider, flatter neighbourhood). We use the normalised Gaussian kernel, so the
  normalising constant of the thesis' definition (independent of θ) is dropped, and
  f_γ(θ) → L(θ) as γ → 0.

All losses are means over ``data`` (batches weighted by size), evaluated in the model's current
train/eval mode with gradients off (except the ascent in ``epsilon_sharpness``); the buffers
(batch norm's running statistics, which forward passes in train mode update) are restored.
Perturbed losses are batched with ``torch.func.vmap`` over ``functional_call``, ``chunk_size``
points a call (``vectorize=False``: a loop that writes the parameters in place and restores
them). A model vmap cannot batch — batch norm or dropout in train mode — falls back to the
loop with a ``RuntimeWarning``. A batch whose activations exceed ``memory_budget`` goes in
chunks of samples, and fewer points a call, also where a folded activation would reach 2³¹
elements (:class:`sgdlab.measure.passes.PassPlan`, as a walk's segments); L(θ) goes in the
same chunks as one point, and ε-sharpness's gradient passes in chunks of half the budget.
Dropout in train mode draws the same masks at θ and at every perturbed point (one fixed draw
per batch, as the curvature operators do), and with modules in train mode the batches of
``data`` are drawn once (a shuffling DataLoader would deal others at every point), so σ = 0
reads 0; the global random generators are untouched.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import vmap

from sgdlab.accuracy import argmax_hits
from sgdlab.errors import checked_float_argument, checked_int_argument, checked_keywords
from sgdlab.models.modes import buffer_restorer, buffers_kept
from sgdlab.operators.batches import (Data, check_batch_loss, check_data, check_model_data,
                                      fixed_randomness, is_single_batch, iterate_batches,
                                      loss_derivatives, plain_checkpoints)
from sgdlab.operators.params import (UNUSED_ZERO, check_not_inference_mode, params_vector,
                                     set_params_vector, trainable_named_params)
from sgdlab.operators.params import (frozen_named_params, functional_call, model_device,
                                     reaching_parameters, unflatten_like)

from .curvature import Estimate
from .curvature import mc_estimate as _mc
from .passes import (PassPlan, evaluate_points, pointwise_passes, resolved_budget,
                     run_within_memory, vmapped_passes)

LossFn = Callable[[Tensor, Tensor], Tensor]


def _same_batches(model: nn.Module, data: Data) -> Data:
    """``data`` drawn once when the loss depends on how its samples are batched (modules in
    train mode: batch statistics, dropout masks per batch), so that θ and every perturbed point
    see the same batches (a shuffling DataLoader deals new ones on every pass)."""
    check_data(data)
    if is_single_batch(data) or not any(m.training for m in model.modules()):
        return data
    return list(data)


def _batches(model: nn.Module, data: Data, device: torch.device,
             moved: list[tuple[Tensor, Tensor]] | None = None):
    """The batches of ``data`` (``moved``: already on ``device``), each one's loop body run
    with the model's randomness fixed for that batch (``fixed_randomness``): dropout in train
    mode draws the same masks at every point, so a difference of losses is not dropout noise,
    and the global RNG is left as it was."""
    for i, (x, y) in enumerate(moved if moved is not None else iterate_batches(data, device)):
        with fixed_randomness(model, device, i), plain_checkpoints():
            yield x, y


class _Scores:
    """(loss, hits, labels) of a pass's outputs: training's accuracy rule
    (:func:`sgdlab.accuracy.argmax_hits`) while ``classify``, which turns False (zeros from
    then on) once a batch's outputs hold no class scores."""

    def __init__(self, loss_fn: LossFn, classify: bool) -> None:
        self.loss_fn, self.classify = loss_fn, classify

    def __call__(self, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # under vmap this runs once per call, on the logical shapes
        counts = argmax_hits(out, y, self.loss_fn) if self.classify else None
        loss = self.loss_fn(out, y)
        if counts is None:
            self.classify = False
            zero = loss.new_zeros((), dtype=torch.float64)
            return loss, zero, zero
        return loss, counts[0].double(), counts[1].double()      # counts exact past 2^24


def _row_sums(rows: list[list[tuple[Tensor, Tensor, Tensor]]], sizes: list[int],
              classify: bool) -> tuple[list[float], list[float], int, int]:
    """(size-weighted loss sums, hit sums) per point of :func:`pointwise_passes`' rows of
    ``_Scores``, then (samples, labels); Python floats, no tensor indexing per point."""
    sums, hit_sums = [], []
    for row in rows:
        total = hits_total = 0.0
        for (loss, hits, _), size in zip(row, sizes):
            total += float(loss) * size
            hits_total += float(hits) if classify else 0.0
        sums.append(total)
        hit_sums.append(hits_total)
    labels = sum(int(lab) for _, _, lab in rows[0]) if classify and rows else 0
    return sums, hit_sums, sum(sizes), labels


@checked_keywords()
@torch.no_grad()
def mean_loss(model: nn.Module, loss_fn: LossFn, data: Data, *,
              memory_budget: int | None = None) -> float:
    """L(θ): mean loss over all samples of ``data`` (batches weighted by size), a batch in
    chunks of samples where its activations exceed ``memory_budget`` (as
    :func:`perturbed_evaluations`, one point)."""
    check_batch_loss(loss_fn, data)
    check_model_data(model, loss_fn, data)
    device = model_device(model)       # a module without parameters has a loss too
    plan = PassPlan(model, resolved_budget(memory_budget, device), 1, vectorized=False,
                    caller="mean_loss", loss_fn=loss_fn)
    with buffers_kept(model):
        rows, sizes = run_within_memory(
            lambda: pointwise_passes(plan, lambda: _batches(model, data, device),
                                     _Scores(loss_fn, False)), plan, device)
    return _row_sums(rows, sizes, False)[0][0] / sum(sizes)


@torch.no_grad()
def perturbed_evaluations(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    perturbations: Tensor,
    *,
    chunk_size: int = 16,
    vectorize: bool = True,
    accuracy: bool = False,
    memory_budget: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(L(θ + ξ_m), accuracy at θ + ξ_m) for each row ξ_m of ``perturbations`` (M, d), both
    (M,) float64; the accuracy (training's: :func:`sgdlab.accuracy.argmax_hits`, the fraction
    of class labels hit, per sample or per position of (N, C, *d) outputs, ignored targets left
    out) is None unless asked for, NaN for floating-point targets, outputs that hold no class
    scores and data without a label.

    ``memory_budget``: bytes of activations one forward pass may take (None:
    :func:`sgdlab.measure.passes.evaluation_memory_budget`, half the free memory on CUDA,
    1 GiB elsewhere). A batch whose activations (an upper bound per sample times its samples,
    times ``chunk_size`` + 1 under vmap) exceed it is evaluated in chunks of samples, and the
    points in fewer per vmap call (:class:`sgdlab.measure.passes.PassPlan`): the means are
    the same up to round-off. With batch norm normalising over the batch (train mode) the
    chunks use the statistics of the whole batch, computed over them first, one point at a
    time; dropout in train mode (one draw of masks per batch) is refused where a batch must
    be split. Running out of memory all the same halves the chunks and starts again, with a
    warning that says so."""
    check_batch_loss(loss_fn, data)
    check_model_data(model, loss_fn, data)
    data = _same_batches(model, data)
    with buffers_kept(model):
        return _perturbed_evaluations(model, loss_fn, data, perturbations,
                                      chunk_size=chunk_size, vectorize=vectorize,
                                      accuracy=accuracy, memory_budget=memory_budget)


def _vmapped_sums(model: nn.Module, scores: _Scores, data: Data, theta: Tensor,
                  perturbations: Tensor, plan: PassPlan) -> tuple[Tensor, Tensor, int, int]:
    """(size-weighted loss sums, hit sums) per point as (M,) float64, then (samples, labels):
    the points and chunks of samples of ``plan`` per vmap call over ``functional_call``
    (:func:`vmapped_passes`)."""
    like = {k: v.detach() for k, v in trainable_named_params(model).items()}
    frozen = frozen_named_params(model)
    buffers = dict(model.named_buffers())
    device, m = theta.device, perturbations.shape[0]

    def loss_at(flat: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = functional_call(model, (unflatten_like(flat, like), frozen, buffers), (x,))
        return scores(out, y)

    calls, n = vmapped_passes(
        plan, lambda: _batches(model, data, device), m,
        lambda points: theta + perturbations[points].to(device, theta.dtype),
        vmap(loss_at, in_dims=(0, None, None)))
    totals = torch.zeros(m, dtype=torch.float64, device=device)
    correct = torch.zeros(m, dtype=torch.float64, device=device)
    labels = 0
    for points, (loss, hits, lab), size in calls:
        totals[points] += loss.double() * size
        correct[points] += hits.double()
        if points.start == 0 and scores.classify:
            labels += int(lab[0])
    return totals, correct, n, labels


def _perturbed_evaluations(model: nn.Module, loss_fn: LossFn, data: Data, perturbations: Tensor,
                           *, chunk_size: int, vectorize: bool, accuracy: bool,
                           memory_budget: int | None) -> tuple[Tensor, Tensor | None]:
    theta = params_vector(model)
    device = theta.device
    scores = _Scores(loss_fn, accuracy)
    plan = PassPlan(model, resolved_budget(memory_budget, device), chunk_size,
                    vectorized=vectorize, caller="perturbed_evaluations", loss_fn=loss_fn)

    def pointwise(one: PassPlan) -> tuple[Tensor, Tensor, int, int]:
        # a single batch is moved and checked once, not once per point
        moved = list(iterate_batches(data, device)) if is_single_batch(data) else None
        rows, sizes = pointwise_passes(
            one, lambda: _batches(model, data, device, moved), scores,
            num_points=len(perturbations), like=theta,
            write_point=lambda j, out: torch.add(theta, perturbations[j].to(device, theta.dtype),
                                                 out=out))
        loss_sums, hit_sums, n, labels = _row_sums(rows, sizes, scores.classify)
        return (torch.tensor(loss_sums, dtype=torch.float64, device=device),
                torch.tensor(hit_sums, dtype=torch.float64, device=device), n, labels)

    # train-mode batch norm (an in-place update of its running statistics), dropout in
    # train mode (random ops) or an op without a batching rule: one point at a time
    totals, correct, n, labels = evaluate_points(
        plan, device,
        lambda: _vmapped_sums(model, scores, data, theta, perturbations, plan), pointwise)
    classify = scores.classify
    acc = (correct / labels if classify and labels else torch.full_like(correct, float("nan"))) \
        if accuracy else None
    return totals / n, acc


def _sample_count(num_samples: object) -> int:
    """``num_samples`` as a Python int >= 1 (numpy's and torch's ints too), else the
    ValueError naming it: True was 1 sample, 0 torch's "max(): Expected reduction dim" and a
    bool or float torch's "randn() received an invalid combination of arguments"."""
    return checked_int_argument("num_samples", num_samples, 1)


def _gaussian(num: int, d: int, sigma: float, theta: Tensor,
              generator: torch.Generator | None) -> Tensor:
    gdev = generator.device if generator is not None else theta.device
    z = torch.randn(num, d, generator=generator, device=gdev, dtype=theta.dtype)
    return sigma * z.to(theta.device)


@checked_keywords()
def expected_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    sigma: float,
    num_samples: int = 20,
    *,
    generator: torch.Generator | None = None,
    chunk_size: int = 16,
    vectorize: bool = True,
    memory_budget: int | None = None,
) -> Estimate:
    """E_ξ[L(θ+ξ)] − L(θ), ξ ~ N(0, σ² I) over all trainable parameters, from M samples;
    returns the mean and its standard error (std over samples / √M). ``memory_budget``: as
    in :func:`perturbed_evaluations` (L(θ) is evaluated in the same chunks of samples)."""
    sigma = checked_float_argument("sigma", sigma, 0)    # a NaN measured NaN, True was 1
    num_samples = _sample_count(num_samples)
    theta = params_vector(model)
    data = _same_batches(model, data)
    base = mean_loss(model, loss_fn, data, memory_budget=memory_budget)
    if not math.isfinite(base):      # a perturbed loss may overflow; the model's own may not
        raise FloatingPointError(f"non-finite loss {base} (diverged model or bad data?)")
    xi = _gaussian(num_samples, theta.numel(), sigma, theta, generator)
    losses, _ = perturbed_evaluations(model, loss_fn, data, xi, chunk_size=chunk_size,
                                      vectorize=vectorize, memory_budget=memory_budget)
    return _mc((losses - base).tolist())


def _gradient_sums(model: nn.Module, loss_fn: LossFn, data: Data, plan: PassPlan,
                   params: list[Tensor], device: torch.device, restore: Callable[[], None]
                   ) -> tuple[float, int, list[Tensor]]:
    """(size-weighted loss sum, samples, size-weighted gradient sums) over ``data`` at the
    model's parameters, each batch in the chunks of samples of ``plan``; whole where its loss
    depends on all its samples at once (batch statistics, dropout masks drawn per batch).
    ``restore``: the model's :func:`~sgdlab.models.modes.buffer_restorer`, run after each
    pass."""
    total, n = 0.0, 0
    grads = [torch.zeros_like(p) for p in params]
    whole = plan.batch_statistics or bool(plan.random)
    for x, y in _batches(model, data, device):
        for xc, yc in [(x, y)] if whole else plan.split(x, y)[1]:
            try:
                with torch.enable_grad():
                    loss = reaching_parameters(loss_fn(model(xc), yc))
                    g = torch.autograd.grad(loss, params, **UNUSED_ZERO)
            finally:
                restore()
            for acc, gi in zip(grads, g):
                acc += gi * len(xc)
            total += float(loss.detach()) * len(xc)
            n += len(xc)
    return total, n, grads


@dataclass
class EpsilonSharpness:
    """Keskar's ε-sharpness: ``sharpness`` = 100 · (max_loss − loss) / (1 + loss)."""

    sharpness: float
    max_loss: float
    loss: float
    epsilon: float


@checked_keywords()
def epsilon_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    epsilon: float = 1e-3,
    *,
    num_steps: int = 20,
    step_fraction: float = 0.25,
    generator: torch.Generator | None = None,
    memory_budget: int | None = None,
) -> EpsilonSharpness:
    """Keskar et al. (2017) sharpness in the full parameter space (A = I): maximise
    L(θ + ζ) over |ζ_i| ≤ ε(|θ_i| + 1) by projected sign-gradient ascent from a random start in
    the box. The model's parameters are restored afterwards.

    ``memory_budget``: as in :func:`perturbed_evaluations`. A gradient pass keeps the forward
    pass's activations for the backward one, so it is sized at half the budget; a larger batch
    goes in chunks of samples whose gradients, weighted by size, add up to the batch's (exact
    up to round-off for a mean loss). Batch norm normalising with batch statistics (train
    mode) keeps each batch whole: a chunk would normalise with, and differentiate through,
    its own statistics. Dropout in train mode is refused where a batch must be split, as in
    :func:`perturbed_evaluations` (L(θ) is evaluated first, by :func:`mean_loss`)."""
    # True was 1, a string failed on the comparison
    epsilon = checked_float_argument("epsilon", epsilon, 0, strict=True)
    num_steps = checked_int_argument("num_steps", num_steps, 1)
    # 0 never moves, < 0 descends, NaN fills ζ with NaN
    step_fraction = checked_float_argument("step_fraction", step_fraction, 0, strict=True)
    check_not_inference_mode()          # its ascent steps follow gradients
    theta = params_vector(model)
    data = _same_batches(model, data)
    base = mean_loss(model, loss_fn, data, memory_budget=memory_budget)
    radius = epsilon * (theta.abs() + 1)
    gdev = generator.device if generator is not None else theta.device
    u = torch.rand(theta.numel(), generator=generator, device=gdev, dtype=theta.dtype)
    zeta = (2 * u.to(theta.device) - 1) * radius
    params = list(trainable_named_params(model).values())
    device = theta.device
    # a gradient pass holds the activations for the backward pass besides the forward's
    plan = PassPlan(model, max(1, resolved_budget(memory_budget, device) // 2), 1,
                    vectorized=False, caller="epsilon_sharpness", loss_fn=loss_fn)
    best = -math.inf
    # each pass from the model's buffers, as L(θ): a train-mode module writing its own (a
    # running scale) would otherwise show each step another function (saved once, not once
    # a step: every step puts them back to the same values)
    restore = buffer_restorer(model)
    # forward passes in train mode would move batch norm's running statistics
    with buffers_kept(model), loss_derivatives(model):
        try:
            for _ in range(num_steps + 1):
                set_params_vector(model, theta + zeta)
                total, n, grads = run_within_memory(
                    lambda: _gradient_sums(model, loss_fn, data, plan, params, device,
                                           restore),
                    plan, device)
                best = max(best, total / n)
                step = torch.cat([gi.reshape(-1) for gi in grads]).sign()
                zeta = torch.clamp(zeta + step_fraction * radius * step, -radius, radius)
        finally:
            set_params_vector(model, theta)
    return EpsilonSharpness(100.0 * (best - base) / (1.0 + base), best, base, epsilon)


@dataclass
class LocalEntropy:
    """f_γ(θ) = −(1/β) log E exp(−β L(θ + ξ)), ξ ~ N(0, γI); ``width`` = −f_γ."""

    f_gamma: float
    stderr: float
    gamma: float
    beta: float
    num_samples: int

    @property
    def width(self) -> float:
        return -self.f_gamma


@checked_keywords()
def local_entropy(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    gamma: float,
    *,
    beta: float = 1.0,
    num_samples: int = 64,
    generator: torch.Generator | None = None,
    chunk_size: int = 16,
    vectorize: bool = True,
    memory_budget: int | None = None,
) -> LocalEntropy:
    """Monte-Carlo local entropy f_γ(x) = −(1/β) log E_ξ exp(−β L(x + ξ)), ξ ~ N(0, (γ/β) I):
    the thesis' (4.11), the heat kernel's normalised form of the log-partition of (3.8), whose
    coupling exp(−β|x − y|²/(2γ)) is a Gaussian of variance γ/β (the same scope as
    ``landscapes.pde.local_entropy`` and ``EntropySGD``); Def. 3.3's unnormalised one (β = 1)
    is this minus (d/(2β)) log(2πγ/β). It tends to L(x) as γ → 0; the width is −f_γ
    (Def. 4.20). A log-mean-exp over M samples: biased upwards by Jensen for small M; the
    standard error is the delta-method one, se(mean w) / (β · mean w) with
    w = exp(−β (L − min L)). ``memory_budget``: as in :func:`perturbed_evaluations`."""
    if not (0 <= gamma < math.inf and 0 < beta < math.inf):
        raise ValueError(f"Invalid gamma={gamma} / beta={beta} (need finite gamma >= 0, "
                         "beta > 0)")
    num_samples = _sample_count(num_samples)
    theta = params_vector(model)
    data = _same_batches(model, data)
    xi = _gaussian(num_samples, theta.numel(), math.sqrt(gamma / beta), theta, generator)
    losses, _ = perturbed_evaluations(model, loss_fn, data, xi, chunk_size=chunk_size,
                                      vectorize=vectorize, memory_budget=memory_budget)
    a = -beta * losses
    amax = a.max()
    w = torch.exp(a - amax)
    lme = float(amax + torch.log(w.mean()))
    f = -lme / beta
    se = float(w.std() / math.sqrt(num_samples) / w.mean() / beta) if num_samples > 1 else math.nan
    return LocalEntropy(f, se, float(gamma), float(beta), num_samples)
