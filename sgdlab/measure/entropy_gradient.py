"""The local-entropy gradient and its angle with the SGD gradient (Chaudhari's thesis §3.3.5).

The local entropy of Chaudhari's thesis (Def. 3.3 with inverse temperature β; the scope γ is
the variance of the coupling, as in :func:`sgdlab.measure.sharpness.local_entropy`,
:func:`sgdlab.landscapes.pde.local_entropy` and :class:`sgdlab.optim.EntropySGD`)

    f_γ(x) = −β⁻¹ log ∫ exp(−β L(y) − β|x − y|²/(2γ)) dy

has the gradient (3.10)

    ∇f_γ(x) = γ⁻¹ (x − ⟨y⟩) = −γ⁻¹ ⟨ξ⟩,    ξ = y − x,

⟨·⟩ the mean under the Gibbs measure ρ_γ(y; x) ∝ exp(−β L(y) − β|x − y|²/(2γ)) (3.8). The
Entropy-SGD paper (ICLR 2017) and the authors' code write the coupling as γ_code|x − y|²/2:
γ_code = 1/γ here. Two estimates of ⟨y⟩:

- ``"langevin"``: Entropy-SGD's own (Algorithm 2, lines 1–5): L steps of SGLD on y from y = x,

      y ← y − η_y (∇L_B(y) + γ⁻¹(y − x)) + √(2 η_y β⁻¹) ε,    z ← α z + (1 − α) y,   z₀ = x,

  on mini-batches B drawn from the data, and ⟨y⟩ ≈ z. Each step is :func:`langevin_step_`,
  the step :class:`sgdlab.optim.EntropySGD` takes, so the measurement and the optimizer run one
  code. α = 0.25 (the thesis' value) weighs the last iterates most: z is close to one draw of
  ρ_γ, not a long-run mean; α → 1 with L ≫ 1/(1 − α) averages the chain.
- ``"importance"``: self-normalised importance sampling over ξ_i ~ N(0, (γ/β) I), the coupling's
  Gaussian (the samples of :func:`~sgdlab.measure.sharpness.local_entropy`), weights
  w_i = exp(−β L(x + ξ_i)) on all of the data: ∇f_γ ≈ −Σ w_i ξ_i / (γ Σ w_i). Biased by O(1/M)
  and with a variance that grows as γ/β shrinks relative to the loss's curvature (few samples
  carry the weight), but with no step size and no chain.

For L(y) = ½ yᵀAy the Gibbs measure is Gaussian with mean (A + I/γ)⁻¹x/γ = (I + γA)⁻¹x for
every β, so ∇f_γ(x) = A(I + γA)⁻¹x: γ → 0 gives ∇L(x) = Ax (the angle with the full gradient
goes to 0), γ → ∞ gives x/γ.

:func:`local_entropy_gradient_angle` compares the estimate with the "vanilla SGD gradient" at x:
a mini-batch gradient on a batch drawn independently of the estimate's, or the full-data
gradient. The thesis' reading: for RNNs this angle "changes much more rapidly [...] than for
CNNs", the local-entropy gradient "highly uncorrelated with the SGD gradient".

Losses are means over ``data`` (batches weighted by size) in the model's current train/eval
mode. The model is left as it was: the chain runs on copies of the parameters through
``functional_call``, its buffers (batch norm's running statistics) are restored, and a model
with dropout in train mode draws its masks per step from a fixed seed, not from torch's global
generators. Random draws (mini-batches, Langevin noise, ξ) come from ``generator`` (None: torch's
global generator).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sgdlab.errors import checked_int_argument, checked_keywords
from sgdlab.models.modes import buffer_restorer, buffers_kept
from sgdlab.operators.batches import (Data, check_batch_loss, check_model_data, concat_batches,
                                      fixed_randomness, iterate_batches, loss_derivatives,
                                      plain_checkpoints)
from sgdlab.operators.params import (UNUSED_ZERO, flatten, functional_call, params_vector,
                                     reaching_parameters, require_trainable)

from .dynamics import gradient_cosine
from .sharpness import _gaussian, _same_batches, perturbed_evaluations

__all__ = ["METHODS", "EntropyGradientAngle", "langevin_step_", "local_entropy_gradient",
           "local_entropy_gradient_angle"]

LossFn = Callable[[Tensor, Tensor], Tensor]

METHODS = ("langevin", "importance")
SGD_GRADIENTS = ("batch", "full")


@torch.no_grad()
def langevin_step_(ys: Sequence[Tensor], xs: Sequence[Tensor], zs: Sequence[Tensor],
                   direction: Sequence[Tensor], *, lr: float, gamma: float, alpha: float,
                   temperature: float = 0.0, generator: torch.Generator | None = None) -> None:
    """One step of Entropy-SGD's inner loop (thesis Algorithm 2, lines 3–4), in place:

        y ← y − η_y γ⁻¹(y − x) − η_y d + √(2 η_y T) ε,    z ← α z + (1 − α) y,

    per tensor of ``ys`` (the iterates), ``xs`` (the anchors x), ``zs`` (the averages), with
    ``direction`` d (∇L_B(y), or it through the optimizer's momentum or preconditioner),
    η_y = ``lr``, ``temperature`` T = β⁻¹ (0: no noise draw) and ε ~ N(0, I) drawn from
    ``generator`` (on its device, None: torch's generator of each tensor's device) tensor by
    tensor. ``gamma = inf``: no coupling."""
    if gamma < math.inf:
        # y ← y − η_y γ⁻¹(y − x): one fused pass (lerp towards x)
        torch._foreach_lerp_(ys, xs, lr / gamma)
    torch._foreach_add_(ys, direction, alpha=-lr)
    if temperature > 0:
        scale = math.sqrt(2.0 * lr * temperature)
        for y in ys:
            gdev = generator.device if generator is not None else y.device
            eps = torch.randn(y.shape, generator=generator, device=gdev, dtype=y.dtype)
            y.add_(eps.to(y.device), alpha=scale)
    torch._foreach_lerp_(zs, ys, 1.0 - alpha)


def _check_scope(gamma: float, beta: float, method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"Invalid method={method!r} (one of {', '.join(map(repr, METHODS))})")
    if not 0 < gamma < math.inf:            # NaN fails this too
        raise ValueError(f"Invalid gamma={gamma} (the scope, finite and > 0; the coupling's "
                         "variance is γ/β)")
    beta_ok = 0 < beta < math.inf or (beta == math.inf and method == "langevin")
    if not beta_ok:
        raise ValueError(f"Invalid beta={beta} (> 0; inf, no thermal noise, for the langevin "
                         "method only: the importance samples have variance γ/β)")


class _Minibatches:
    """Mini-batches of ``batch_size`` samples of ``data`` without replacement within a batch,
    each a fresh draw from ``generator``; ``batch_size=None``: every batch of ``data`` at each
    draw (the full-data mean). ``passes`` counts the batches dealt: a model with dropout in
    train mode draws pass i's masks from a fixed seed (:func:`fixed_randomness`), different
    for every pass, and torch's global generators are left alone."""

    def __init__(self, data: Data, batch_size: int | None, device: torch.device,
                 generator: torch.Generator | None, first_pass: int = 0):
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self.pool = None if batch_size is None else concat_batches(data, device)
        self.device, self.passes = device, first_pass
        if self.pool is not None and batch_size > len(self.pool[0]):
            raise ValueError(f"Invalid batch_size={batch_size} (the data has "
                             f"{len(self.pool[0])} samples: at most that many)")

    def draw(self) -> list[tuple[Tensor, Tensor]]:
        if self.pool is None:
            batches = list(iterate_batches(self.data, self.device))
        else:
            x, y = self.pool
            gdev = self.generator.device if self.generator is not None else torch.device("cpu")
            idx = torch.randperm(len(x), generator=self.generator, device=gdev)
            idx = idx[:self.batch_size].to(x.device)
            batches = [(x[idx], y[idx])]
        self.passes += len(batches)
        return batches


def _mean_gradient(model: nn.Module, loss_fn: LossFn, names: list[str], ys: list[Tensor],
                   draws: _Minibatches, restore: Callable[[], None] | None = None
                   ) -> list[Tensor]:
    """∇ of the size-weighted mean loss over the next batches of ``draws`` at the parameters
    ``ys`` (by ``names``; the model's own parameters are not touched). ``restore``: the
    model's :func:`~sgdlab.models.modes.buffer_restorer`, when a loop of calls made it once."""
    first = draws.passes
    batches = draws.draw()
    grads: list[Tensor] = []
    n = 0
    # each pass from the model's buffers: a train-mode module writing its own (a running
    # scale, spectral norm's u and v) would otherwise show each step another function
    if restore is None:
        restore = buffer_restorer(model)
    for i, (x, y) in enumerate(batches):
        leaves = [t.detach().requires_grad_() for t in ys]
        try:
            with torch.enable_grad(), fixed_randomness(model, ys[0].device, first + i), \
                    plain_checkpoints(), loss_derivatives(model):
                out = functional_call(model, dict(zip(names, leaves)), (x,))
                g = torch.autograd.grad(reaching_parameters(loss_fn(out, y)), leaves,
                                        **UNUSED_ZERO)
        finally:
            restore()
        if len(batches) == 1:
            return list(g)          # the batch's own gradient, as the optimizer's closure has it
        if not grads:
            grads = [torch.zeros_like(t) for t in ys]
        torch._foreach_add_(grads, [gi * len(x) for gi in g])
        n += len(x)
    torch._foreach_div_(grads, float(n))
    return grads


def _langevin_gradient(model: nn.Module, loss_fn: LossFn, gamma: float, beta: float, *,
                       steps: int, inner_lr: float, alpha: float,
                       draws: _Minibatches) -> Tensor:
    params = require_trainable(model)
    names = list(params)
    xs = [p.detach().clone() for p in params.values()]
    ys = [x.clone() for x in xs]
    zs = [x.clone() for x in xs]
    temperature = 0.0 if beta == math.inf else 1.0 / beta
    # every step's passes put the buffers back as they are now: saved once, not once a step
    restore = buffer_restorer(model)
    for _ in range(steps):
        d = _mean_gradient(model, loss_fn, names, ys, draws, restore)
        langevin_step_(ys, xs, zs, d, lr=inner_lr, gamma=gamma, alpha=alpha,
                       temperature=temperature, generator=draws.generator)
    return (flatten(xs) - flatten(zs)) / gamma


def _importance_gradient(model: nn.Module, loss_fn: LossFn, data: Data, gamma: float,
                         beta: float, *, num_samples: int, generator: torch.Generator | None,
                         chunk_size: int, vectorize: bool, memory_budget: int | None) -> Tensor:
    theta = params_vector(model)
    xi = _gaussian(num_samples, theta.numel(), math.sqrt(gamma / beta), theta, generator)
    losses, _ = perturbed_evaluations(model, loss_fn, data, xi, chunk_size=chunk_size,
                                      vectorize=vectorize, memory_budget=memory_budget)
    a = -beta * losses
    w = torch.exp(a - a.max())
    return (-(w @ xi.double()) / (gamma * w.sum())).to(theta.dtype)


def _check_estimate(method: str, steps: int, inner_lr: float, alpha: float,
                    num_samples: int) -> None:
    if method == "importance":
        checked_int_argument("num_samples", num_samples, 1)
        return
    checked_int_argument("steps", steps, 1)
    if not 0 < inner_lr < math.inf:
        raise ValueError(f"Invalid inner_lr={inner_lr} (finite and > 0)")
    if not 0 <= alpha < 1:
        raise ValueError(f"Invalid alpha={alpha} (in [0, 1))")


@checked_keywords()
def local_entropy_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    gamma: float,
    *,
    beta: float = 1.0,
    method: str = "langevin",
    steps: int = 20,
    inner_lr: float = 0.1,
    alpha: float = 0.25,
    batch_size: int | None = None,
    num_samples: int = 64,
    generator: torch.Generator | None = None,
    chunk_size: int = 16,
    vectorize: bool = True,
    memory_budget: int | None = None,
) -> Tensor:
    """∇f_γ(x) = γ⁻¹(x − ⟨y⟩) at the model's parameters x (thesis (3.10); module docstring), a
    flat vector in :func:`~sgdlab.operators.params.params_vector`'s order and dtype.

    γ is the thesis' scope: the coupling exp(−β|x − y|²/(2γ)) is a Gaussian of variance γ/β
    (Entropy-SGD's ``gamma``; the Entropy-SGD paper's γ is 1/γ). β = 1 is Def. 3.3.

    Args:
        gamma: the scope γ, finite and > 0.
        beta: inverse temperature β (> 0). ``"langevin"`` takes ``inf``: no thermal noise,
            Entropy-SGD's default ``noise=0`` (the chain then descends to the proximal point
            and the mini-batch noise is its only noise).
        method: ``"langevin"`` (Entropy-SGD's estimate) or ``"importance"``.
        steps, inner_lr, alpha: L, η_y and α of the Langevin chain (Entropy-SGD's defaults
            L = 20, η_y = 0.1; the thesis' α = 0.25).
        batch_size: samples per Langevin step, drawn without replacement from all of
            ``data`` with ``generator``, afresh each step; None: all of ``data`` every step.
        num_samples: M, the importance samples ξ_i (their losses are over all of ``data``).
        chunk_size, vectorize, memory_budget: the importance method's evaluations, as in
            :func:`~sgdlab.measure.sharpness.perturbed_evaluations`.

    Cost: ``steps`` gradient passes over ``batch_size`` samples (langevin) or ``num_samples``
    forward passes over ``data`` (importance).
    """
    data = _checked(model, loss_fn, data, gamma, beta, method, steps, inner_lr, alpha,
                    num_samples, batch_size)
    with buffers_kept(model):
        return _estimate(model, loss_fn, data, gamma, beta, method=method, steps=steps,
                         inner_lr=inner_lr, alpha=alpha, batch_size=batch_size,
                         num_samples=num_samples, generator=generator, chunk_size=chunk_size,
                         vectorize=vectorize, memory_budget=memory_budget)


def _checked(model: nn.Module, loss_fn: LossFn, data: Data, gamma, beta, method, steps,
             inner_lr, alpha, num_samples, batch_size) -> Data:
    """The arguments both measurements share, checked; ``data`` as one fixed set of batches."""
    _check_scope(gamma, beta, method)
    _check_estimate(method, steps, inner_lr, alpha, num_samples)
    if batch_size is not None:
        checked_int_argument("batch_size", batch_size, 1)
    check_batch_loss(loss_fn, data)
    check_model_data(model, loss_fn, data)
    return _same_batches(model, data)


def _estimate(model: nn.Module, loss_fn: LossFn, data: Data, gamma: float, beta: float, *,
              method: str, steps: int, inner_lr: float, alpha: float, batch_size: int | None,
              num_samples: int, generator: torch.Generator | None, chunk_size: int,
              vectorize: bool, memory_budget: int | None, first_pass: int = 0) -> Tensor:
    if method == "importance":
        g = _importance_gradient(model, loss_fn, data, gamma, beta, num_samples=num_samples,
                                 generator=generator, chunk_size=chunk_size,
                                 vectorize=vectorize, memory_budget=memory_budget)
    else:
        device = next(iter(require_trainable(model).values())).device
        g = _langevin_gradient(model, loss_fn, gamma, beta, steps=steps, inner_lr=inner_lr,
                               alpha=alpha, draws=_Minibatches(data, batch_size, device,
                                                               generator, first_pass))
    if not bool(torch.isfinite(g).all()):
        raise FloatingPointError(
            f"non-finite local-entropy gradient ({method}): a diverged model, or a Langevin "
            "chain that diverged (inner_lr too large for the loss's curvature + 1/gamma)")
    return g


@dataclass
class EntropyGradientAngle:
    """The angle between ∇f_γ(x) and the SGD gradient at x: ``degrees`` in [0, 180],
    ``cosine``, and the two gradients' Euclidean norms."""

    degrees: float
    cosine: float
    entropy_grad_norm: float
    sgd_grad_norm: float


@checked_keywords()
def local_entropy_gradient_angle(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    gamma: float,
    *,
    sgd_gradient: str = "batch",
    batch_size: int | None = None,
    beta: float = 1.0,
    method: str = "langevin",
    steps: int = 20,
    inner_lr: float = 0.1,
    alpha: float = 0.25,
    num_samples: int = 64,
    generator: torch.Generator | None = None,
    chunk_size: int = 16,
    vectorize: bool = True,
    memory_budget: int | None = None,
) -> EntropyGradientAngle:
    """The angle between the local-entropy gradient ∇f_γ(x) (:func:`local_entropy_gradient`,
    with the same ``gamma``, ``beta``, ``method``, ...) and the "vanilla SGD gradient" at x
    (thesis §3.3.5), in degrees and as a cosine (float64).

    ``sgd_gradient="batch"``: the gradient of the mean loss on a mini-batch of ``batch_size``
    samples drawn from ``data`` with ``generator`` before the estimate's own draws (so
    independent of the Langevin batches); ``"full"``: the gradient over all of ``data``.
    ``batch_size`` is also the Langevin steps' batch size; None: all of ``data`` (the SGD
    gradient is then the full one). The angle and cosine are NaN where either gradient is
    zero."""
    if sgd_gradient not in SGD_GRADIENTS:
        raise ValueError(f"Invalid sgd_gradient={sgd_gradient!r} (one of "
                         f"{', '.join(map(repr, SGD_GRADIENTS))})")
    data = _checked(model, loss_fn, data, gamma, beta, method, steps, inner_lr, alpha,
                    num_samples, batch_size)
    params = require_trainable(model)
    names, ys = list(params), [p.detach() for p in params.values()]
    with buffers_kept(model):
        draws = _Minibatches(data, batch_size if sgd_gradient == "batch" else None,
                             ys[0].device, generator)
        sgd = flatten(_mean_gradient(model, loss_fn, names, ys, draws))
        g = _estimate(model, loss_fn, data, gamma, beta, method=method, steps=steps,
                      inner_lr=inner_lr, alpha=alpha, batch_size=batch_size,
                      num_samples=num_samples, generator=generator, chunk_size=chunk_size,
                      vectorize=vectorize, memory_budget=memory_budget,
                      first_pass=draws.passes)
    na, nb = (float(torch.linalg.vector_norm(v.double())) for v in (g, sgd))
    if not math.isfinite(nb):
        raise FloatingPointError(f"non-finite SGD gradient (norm {nb}): a diverged model?")
    cos = gradient_cosine(g, sgd, eps=0.0)
    if math.isnan(cos):
        return EntropyGradientAngle(math.nan, math.nan, na, nb)
    cos = max(-1.0, min(1.0, cos))
    return EntropyGradientAngle(math.degrees(math.acos(cos)), cos, na, nb)
