"""Where a step lands in the valley it crosses: the normalised step length α of Cockpit
(Schneider, Dangel & Hennig 2021, §3 "α"; after Mahsereci & Hennig's probabilistic line
search), from the loss and its slope along the step at both iterates.

Along the step d = θ₁ − θ₀ (length t = ‖d‖, unit direction u = d/t) a quadratic
q(s) = w₀ + w₁ s + w₂ s² is fitted to four observations: the losses f(0), f(t) and the slopes
f'(0) = ∇L(θ₀)ᵀu, f'(t) = ∇L(θ₁)ᵀu. With ``weights="noise"`` (Cockpit's reading) each
observation is weighted by the inverse of its per-sample variance over the batch (the variance
of the samples' losses ℓ_n and of their slopes ∇ℓ_nᵀu), a maximum-likelihood fit of a noisy
quadratic; with ``weights="equal"`` it is plain least squares (exact observations, e.g. the
full training set). Then

    α = 2t / ᾱ − 1,    ᾱ = −w₁ / w₂ (the point across the valley at the starting height),

so α = 0 lands at the fitted minimum, α = −1 did not move, α = 1 lands at the starting height on
the far side, α > 1 climbs above it; α > 0 means the step crossed the fitted valley floor, and
α < −1 that it started uphill (w₁ > 0, as a momentum step can: the floor is behind it). A
concave fit (w₂ < 0: still downhill at the far end) reads α = −1 as in Cockpit, flagged by
``concave``. On a quadratic loss the fit is exact: a gradient step of size η along an
eigendirection of curvature h gives α = ηh − 1.

This is the two-point, first-order counterpart of Xing et al.'s step interpolation
(:mod:`sgdlab.measure.walk`: the loss at 10 points between consecutive iterates), whose
"valley floor" crossings α > 0 summarises; Xing et al. report that SGD's steps cross the floor
of a valley-like structure and bounce between its walls (§3).

Per-sample losses and slopes come from one forward-mode pass of the B losses along u
(``torch.func.jvp``; per-sample gradients when an operation has no forward-mode rule).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.utils._pytree import tree_leaves, tree_map, tree_map_only

from sgdlab.errors import UserError, checked_keywords, forward_mode_loaded
from sgdlab.operators.batches import (Data, check_mean_of_samples, concat_batches,
                                      fixed_randomness)
from sgdlab.operators.params import (check_params_vector, copy_module, functional_call,
                                     set_params_vector, trainable_named_params, unflatten_like)

__all__ = ["StepLength", "normalized_step_length", "per_sample_losses_and_slopes"]

LossFn = Callable[[Tensor, Tensor], Tensor]
WEIGHTS = ("noise", "equal")
# Cockpit's stand-in for a zero variance (an exact observation): a large but finite weight
_ZERO_VARIANCE = 1e-10


@dataclass(frozen=True)
class StepLength:
    """α of one step (module docstring) with what it was fitted to."""

    alpha: float
    length: float                   # t = ‖θ₁ − θ₀‖
    losses: tuple[float, float]     # f(0), f(t)
    slopes: tuple[float, float]     # f'(0), f'(t) along the unit step direction
    concave: bool

    def as_metrics(self, prefix: str = "step") -> dict[str, float]:
        return {f"{prefix}/alpha": self.alpha, f"{prefix}/length": self.length,
                f"{prefix}/loss_start": self.losses[0], f"{prefix}/loss_end": self.losses[1],
                f"{prefix}/slope_start": self.slopes[0], f"{prefix}/slope_end": self.slopes[1],
                f"{prefix}/concave": float(self.concave)}


def per_sample_losses_and_slopes(model: nn.Module, loss_fn: LossFn, theta: Tensor,
                                 direction: Tensor, data: Data) -> tuple[Tensor, Tensor]:
    """(ℓ_n(θ), ∇ℓ_n(θ)ᵀ v) for every sample n of ``data`` at the flat parameters ``theta``
    (the model's own are not touched), ``loss_fn`` applied to one sample at a time (a
    mean-reduced loss of one sample is that sample's loss). Dropout in train mode takes one
    fixed draw of the masks (``fixed_randomness``), the same at every ``theta``, and leaves the
    global RNG as it was."""
    x, y = concat_batches(data)
    like = {k: p.detach() for k, p in trainable_named_params(model).items()}

    def sample_losses(out) -> Tensor:
        # outputs a tuple or dict of tensors (that loss_fn unpacks): each one sample at a time;
        # what is no tensor (a name, a count) goes to every sample as it is
        dims = tree_map(lambda o: 0 if isinstance(o, Tensor) else None, out)
        for o in tree_leaves(out):
            if isinstance(o, Tensor) and (o.dim() == 0 or len(o) != len(y)):
                raise UserError(
                    f"normalized_step_length takes each sample's loss from its slice of the "
                    f"batch's outputs: the model returns a tensor of shape {tuple(o.shape)} "
                    f"among them, with no dimension of the {len(y)} samples first")
        return vmap(lambda o, yi: loss_fn(tree_map_only(Tensor, lambda t: t[None], o),
                                          yi[None]), in_dims=(dims, 0))(out, y)

    def losses(t: Tensor) -> Tensor:
        return sample_losses(functional_call(model, unflatten_like(t, like), (x,)))

    forward_mode_loaded()
    try:
        with fixed_randomness(model, x.device):
            values, slopes = torch.func.jvp(losses, (theta.detach(),), (direction.detach(),))
        return values.detach(), slopes.detach()
    except (RuntimeError, NotImplementedError):   # an op without a forward-mode rule
        from sgdlab.operators.per_sample import per_sample_gradients

        at = copy_module(model)
        set_params_vector(at, theta)
        g = per_sample_gradients(at, loss_fn, (x, y))
        with torch.no_grad(), fixed_randomness(at, x.device):
            values = sample_losses(at(x))
        return values, g @ direction.to(g.dtype)


@checked_keywords()
def normalized_step_length(model: nn.Module, loss_fn: LossFn, theta_start: Tensor,
                           theta_end: Tensor, data: Data, *, data_end: Data | None = None,
                           weights: str = "noise") -> StepLength:
    """α of the step θ₀ = ``theta_start`` → θ₁ = ``theta_end`` (flat vectors), the losses and
    slopes at θ₀ on ``data`` and at θ₁ on ``data_end`` (default: the same data; Cockpit takes
    the next step's mini-batch there). The model is evaluated in its current mode; its
    parameters are not changed. ``weights``: ``"noise"`` or ``"equal"`` (module docstring)."""
    if weights not in WEIGHTS:
        raise ValueError(f"Invalid weights={weights!r}: expected one of {WEIGHTS}")
    for name, theta in (("theta_start", theta_start), ("theta_end", theta_end)):
        check_params_vector(model, theta, name,
                            "(model, loss_fn, theta_start, theta_end, data, ...)")
    # the losses and slopes are the means of the samples' own: the loss of the data only
    # where that is what loss_fn makes of a batch (not class weights or ignored targets)
    for batch in (data,) if data_end is None else (data, data_end):
        check_mean_of_samples(loss_fn, batch, "normalized_step_length")
    d = (theta_end - theta_start).detach()
    t = float(torch.linalg.vector_norm(d.double()))
    if not math.isfinite(t):
        raise FloatingPointError("non-finite step (diverged parameters?)")
    if t == 0:
        raise ValueError("the two iterates coincide: a step of length 0 has no α")
    u = d / t
    obs, var = [], []
    for theta, batch in ((theta_start, data), (theta_end, data if data_end is None
                                                     else data_end)):
        ell, slope = per_sample_losses_and_slopes(model, loss_fn, theta, u, batch)
        obs.append((float(ell.double().mean()), float(slope.double().mean())))
        n = len(ell)
        var.append((float(ell.double().var()) if n > 1 else 0.0,
                    float(slope.double().var()) if n > 1 else 0.0))
    (f0, s0), (f1, s1) = obs
    if not all(math.isfinite(v) for v in (f0, s0, f1, s1)):
        raise FloatingPointError("non-finite loss or slope along the step")
    phi = np.array([[1.0, 0.0, 0.0], [1.0, t, t * t], [0.0, 1.0, 0.0], [0.0, 1.0, 2 * t]])
    y = np.array([f0, f1, s0, s1])
    if weights == "noise":
        v = np.array([var[0][0], var[1][0], var[0][1], var[1][1]])
        w = 1.0 / np.where(v > 0, v, _ZERO_VARIANCE)
    else:
        w = np.ones(4)
    sw = np.sqrt(w)
    mu = np.linalg.lstsq(phi * sw[:, None], y * sw, rcond=None)[0]
    concave = bool(mu[2] < 0)
    if concave:
        alpha = -1.0
    elif mu[1] == 0:
        alpha = math.inf if mu[2] > 0 else math.nan
    else:
        alpha = float(-2 * t * mu[2] / mu[1] - 1)    # 2t/ᾱ − 1 with ᾱ = −w₁/w₂
    return StepLength(alpha=alpha, length=t, losses=(f0, f1), slopes=(s0, s1), concave=concave)
