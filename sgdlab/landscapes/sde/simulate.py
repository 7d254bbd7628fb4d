"""Batched simulation of an SDE with any :class:`Integrator`."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sgdlab.errors import UserError, checked_float
from sgdlab.optim.noise import standard_normal

from ..base import check_count, check_generator, check_positive, check_states
from .base import SDE, Integrator
from .euler_maruyama import EulerMaruyama


@dataclass
class Path:
    """Final state (..., d), and the recorded states (S, ..., d) at ``times``."""

    final: Tensor
    times: list[float] = field(default_factory=list)
    states: Tensor | None = None


def brownian_increments(shape: tuple[int, ...], dt: float, steps: int, *,
                        generator: torch.Generator | None = None,
                        dtype: torch.dtype = torch.float64,
                        device: torch.device | str | None = None) -> Tensor:
    """ΔB of shape (steps, *shape), i.i.d. N(0, dt) entries, drawn on the generator's device
    and moved to ``device`` (as :func:`~sgdlab.optim.noise.standard_normal`)."""
    dt = check_positive("dt", dt)
    steps = check_count("steps", steps)
    return standard_normal((steps, *shape), generator=generator, dtype=dtype,
                           device=device) * math.sqrt(dt)


def coarsen(dw: Tensor, factor: int) -> Tensor:
    """Sum consecutive groups of ``factor`` increments: the same Brownian path at step
    ``factor · dt`` (for common-random-number comparisons of step sizes)."""
    factor = check_count("factor", factor, 1)
    if dw.shape[0] % factor:
        raise UserError(f"{dw.shape[0]} increments do not split into groups of {factor}")
    return dw.reshape(dw.shape[0] // factor, factor, *dw.shape[1:]).sum(1)


def simulate(
    sde: SDE, x0: Tensor, *, dt: float, steps: int,
    integrator: Integrator | None = None,
    generator: torch.Generator | None = None,
    increments: Tensor | None = None,
    record_every: int | None = None,
    t0: float = 0.0,
    observe: Callable[[Tensor], Tensor] | None = None,
) -> Path:
    """Integrate ``steps`` steps of size ``dt`` from ``x0`` (..., d), all chains at once.

    The chains run on ``x0``'s device (an SDE built on a landscape needs the landscape's: its
    drift names both devices otherwise). Each step's increments are one (..., r) draw from
    ``generator`` on its own device, moved to the chains' (a CPU generator gives the same
    path on every device); a chain's path so depends on how many chains run beside it.

    Args:
        increments: optional Brownian increments (steps + lookahead, ..., r), the integrator's
            lookahead increments first; drawn from ``generator`` one step at a time otherwise
            (memory O(chains), not O(steps · chains)).
        record_every: keep the state (or ``observe(state)``) every k steps (and at step 0).
    """
    dt = check_positive("dt", dt)
    steps = check_count("steps", steps)
    check_states("x0", x0, sde.dim)
    check_generator(generator)
    t0 = checked_float("t0", t0, None)      # a NaN t0 made every recorded time NaN
    if record_every:                       # None or 0: nothing recorded
        record_every = check_count("record_every", record_every, 1)
    integ = integrator or EulerMaruyama()
    look = integ.lookahead if sde.factor is not None else 0
    if increments is not None:
        if not isinstance(increments, Tensor) or not increments.is_floating_point():
            raise UserError("increments must be a floating-point torch.Tensor, got "
                            + (str(increments.dtype) if isinstance(increments, Tensor)
                               else type(increments).__name__))
        want = (steps + look, *x0.shape[:-1], sde.noise_dim)
        if tuple(increments.shape) != want:
            raise UserError(f"increments must have shape {want} (steps + lookahead, chains, "
                            f"noise dimension), got {tuple(increments.shape)}")
    # the chains in the SDE's dtype (its drift's at x0), as sgd_chains' iterates take the
    # landscape's: a float32 x0 (torch.zeros(C, d)) met a float64 noise factor in a matmul
    b0 = sde.drift(x0)
    _check_coefficients(sde, x0, b0)
    x = x0.to(torch.promote_types(x0.dtype, b0.dtype), copy=True)
    if increments is not None:
        # in the chains' dtype and device: torch.randn's float32 increments beside float64
        # chains failed in the factor's matmul
        increments = increments.to(dtype=x.dtype, device=x.device)
    sq = math.sqrt(dt)

    def draw(n: int) -> Tensor:
        if increments is not None:
            return increments[n]
        # drawn on the generator's device (the chains' without one), moved to the chains':
        # a CPU draw beside CUDA chains failed in the integrator's first step
        return standard_normal((*x.shape[:-1], sde.noise_dim), generator=generator,
                               dtype=x.dtype, device=x.device) * sq
    if look:
        integ.start(sde, x, draw(0))
    obs = observe or (lambda s: s.clone())
    times, states = [], []
    if record_every:
        times.append(t0)
        states.append(obs(x))
        if not isinstance(states[0], Tensor):   # failed in torch.stack after the last step
            raise UserError(f"observe(state) must return a torch.Tensor, got "
                            f"{type(states[0]).__name__}")
    for n in range(steps):
        dw = x.new_zeros(*x.shape[:-1], 0) if sde.factor is None else draw(n + look)
        x = integ.step(sde, x, t0 + n * dt, dt, dw)
        if record_every and (n + 1) % record_every == 0:
            times.append(t0 + (n + 1) * dt)
            states.append(obs(x))
    return Path(final=x, times=times, states=torch.stack(states) if states else None)


def _check_coefficients(sde: SDE, x0: Tensor, b0: Tensor) -> None:
    """A ``UserError`` unless drift(x0) has x0's shape and factor(x0) is (..., d, r) over
    x0's chains (or broadcast to them). A drift of shape (C,) for C = d chains broadcast
    against (C, d) and ran as another SDE, without a word; other shapes failed deep in a
    step."""
    if not isinstance(b0, Tensor) or b0.shape != x0.shape:
        got = tuple(b0.shape) if isinstance(b0, Tensor) else type(b0).__name__
        raise UserError(f"drift(x) must return shape {tuple(x0.shape)} (the shape of x), got "
                        f"{got}")
    if sde.factor is None or sde.scalar_noise is not None:
        return
    g0 = sde.factor(x0)
    want = (sde.dim, sde.noise_dim)
    ok = isinstance(g0, Tensor) and g0.ndim >= 2 and tuple(g0.shape[-2:]) == want
    if ok:
        try:
            ok = torch.broadcast_shapes(g0.shape[:-2], x0.shape[:-1]) == x0.shape[:-1]
        except RuntimeError:
            ok = False
    if not ok:
        got = tuple(g0.shape) if isinstance(g0, Tensor) else type(g0).__name__
        raise UserError(f"factor(x) must return shape (..., {want[0]}, {want[1]}) (dim, "
                        f"noise_dim) over x's chains {tuple(x0.shape[:-1])}, got {got}")


def path_mean_se(values: Tensor) -> tuple[float, float]:
    """Mean of ``values`` (S, C): S records along each of C independent chains, and its
    standard error from the C per-chain time averages, std(avg) / √C.

    Records along one path are correlated (an OU coordinate at lag τ by e^{−λτ}, its square by
    e^{−2λτ}), so std(values) / √(S C) understates the error: by 4–5% for 5 records 2 time
    units apart on H = diag(1, 0.5, 0.25). The chains are independent, whatever the lag."""
    if values.ndim != 2 or values.shape[1] < 2:
        raise UserError(f"values must have shape (records, chains >= 2), "
                        f"got {tuple(values.shape)}")
    avg = values.mean(0)
    return float(avg.mean()), float(avg.std() / math.sqrt(avg.numel()))


__all__ = ["Path", "simulate", "brownian_increments", "coarsen", "path_mean_se"]
