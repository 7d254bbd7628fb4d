"""Discrete SGD on a sample-structured landscape, and the SDE that approximates it.

SGD with step η and size-S mini-batches drawn with replacement,
θ_{k+1} = θ_k − η ∇L_B(θ_k), has E[∇L_B] = ∇L and Cov[∇L_B] = Σ(θ)/S (Σ with the 1/N
normalisation). Matching the first two moments of one step gives the Itô SDE (Li, Tai & E;
thesis §6.1; Jastrzebski et al. eq. (5))::

    dX = −∇L(X) dt + √(η/S) Σ(X)^{1/2} dB,   i.e. 2β⁻¹D(X) = (η/S) Σ(X),

in time t = k η. SGD is its weak order-1 approximation: |E φ(θ_k) − E φ(X(kη))| = O(η).
The diffusion factor is the per-sample one, √(η/S) (G − ḡ)ᵀ/√N of shape (d, N), so no square
root of Σ is ever taken (Gram trick). This is thesis Theorem 6.5 with D = Σ (eq. 6.4) and
β⁻¹ = η/(2S) (eq. 6.6). For mini-batches drawn without replacement (``replacement=False``)
the thesis' eqs. (6.5) and (6.7) give 2β⁻¹D = (η/S)(1 − S/N) · N/(N − 1) Σ (with the sign of
eq. (6.5) its proof gives; see :mod:`sgdlab.measure.noise`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from sgdlab.errors import UserError

from ..base import Landscape, check_count, check_positive, check_states
from .base import SDE
from .simulate import Path


def sgd_chains(
    landscape: Landscape, theta0: Tensor, *, lr: float, batch_size: int, steps: int,
    replacement: bool = True, generator: torch.Generator | None = None,
    record_every: int | None = None,
) -> Path:
    """Run independent SGD chains (one mini-batch per chain per step) from ``theta0`` (C, d).

    ``times`` in the returned path are in SDE time t = k·lr. The chains run on ``theta0``'s
    device, which must be the landscape's (a ``UserError`` names both otherwise). Each step's
    indices are one (C, batch_size) draw from ``generator`` on its own device, moved to the
    chains': a CPU generator gives the same batches, hence the same path up to round-off, on
    every device. A chain's path depends on how many chains run beside it (one block per step;
    docs/design/landscapes.md, "Devices, dtypes and random streams").
    """
    lr = check_positive("lr", lr)
    steps = check_count("steps", steps)
    check_states("theta0", theta0, landscape.dim)
    landscape.check_device("theta0", theta0)
    if record_every:                       # None or 0: nothing recorded
        record_every = check_count("record_every", record_every, 1)
    theta = theta0.clone()
    batch_shape = tuple(theta.shape[:-1])
    times, states = [], []
    if record_every:
        times.append(0.0)
        states.append(theta.clone())
    for k in range(steps):
        idx = landscape.sample_batches(batch_shape, batch_size, replacement=replacement,
                                       generator=generator, device=theta.device)
        theta = theta - lr * landscape.grad(theta, idx)
        if record_every and (k + 1) % record_every == 0:
            times.append((k + 1) * lr)
            states.append(theta.clone())
    return Path(final=theta, times=times, states=torch.stack(states) if states else None)


def sgd_sde(landscape: Landscape, *, lr: float, batch_size: int,
            replacement: bool = True) -> SDE:
    """The Itô SDE dX = −∇L dt + √(η c) Σ(X)^{1/2} dB approximating SGD, c = 1/S with
    replacement, (N − S)/(S (N − 1)) without (module docstring). Simulate it with chains on
    the landscape's device."""
    n = landscape.num_samples
    if n is None:
        raise UserError("sgd_sde needs a landscape with per-sample structure")
    try:
        check_positive("lr", lr)
        batch_size = check_count("batch_size", batch_size, 1)
    except UserError as e:
        raise UserError(f"sgd_sde needs lr > 0 and an integer batch_size >= 1: {e}") from None
    c = checked_noise_factor(batch_size, n, replacement)
    scale = math.sqrt(lr * c / n)

    def drift(x: Tensor) -> Tensor:
        return -landscape.grad(x)

    def factor(x: Tensor) -> Tensor:
        g = landscape.per_sample_grad(x)                     # (..., N, d)
        return scale * (g - g.mean(-2, keepdim=True)).transpose(-1, -2)  # (..., d, N)

    return SDE(drift, factor, landscape.dim, n, additive=False)


def checked_noise_factor(batch_size: int, num_samples: int, replacement: bool) -> float:
    """c of Cov[∇L_B] = c Σ (:func:`sgdlab.measure.noise.minibatch_noise_factor`), with a
    refusal (a ``replacement`` that is no flag too) a ``UserError``; the SGD-SDE's and
    :class:`~sgdlab.landscapes.Quadratic`'s closed forms."""
    from sgdlab.measure.noise import minibatch_noise_factor

    try:
        return minibatch_noise_factor(batch_size, num_samples, replacement=replacement)
    except ValueError as e:
        raise UserError(str(e)) from None


__all__ = ["sgd_chains", "sgd_sde"]
