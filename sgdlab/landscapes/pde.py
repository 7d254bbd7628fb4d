"""1-D PDE smoothing of a loss (thesis Chapter 4, Figure 4.1; Chaudhari et al. "Deep
relaxation"). All functions take f sampled on a uniform grid ``x`` (1-D float64 tensors) and
return u(·, t) on the same grid.

- **Viscous Hamilton–Jacobi** (local entropy)::

      u_t + ½ u_x² = (1/(2β)) u_xx,   u(x, 0) = f(x).

  Cole–Hopf: v = e^{−βu} solves the heat equation v_t = (1/(2β)) v_xx, so
  u(x, t) = −β⁻¹ log ∫ G_{t/β}(x − y) e^{−βf(y)} dy with G_s the N(0, s) density — the local
  entropy f_γ with γ = t (up to an additive constant). Computed by log-sum-exp quadrature.

- **Non-viscous HJ** u_t + ½ u_x² = 0 via Hopf–Lax::

      u(x, t) = min_y { f(y) + |x − y|²/(2t) },

  the Moreau envelope / inf-convolution, attained at the proximal point y = prox_{tf}(x).

- **Heat-equation smoothing** u_t = (1/(2β)) u_xx: u = G_{t/β} * f (convolution of f itself).

Semi-concavity: if f_xx ≤ C then both HJ solutions satisfy u_xx ≤ 1/(C⁻¹ + t) (the bound
improves with t, unlike heat smoothing, whose u_xx ≤ C only). Hopf–Lax preserves the minimum
value and the minimisers of f (min_x u(x, t) = min f, attained at the same points).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from sgdlab.errors import UserError, checked_float

from .base import check_count, check_positive


def _check_tensors(**named) -> None:
    """A ``UserError`` naming the first argument that is not a torch tensor (a numpy array
    failed with an AttributeError on ``numel`` or a TypeError inside ``torch.cat``)."""
    for name, value in named.items():
        if not isinstance(value, Tensor):
            raise UserError(f"{name} must be a torch.Tensor (torch.as_tensor(...) for an "
                            f"array), got {type(value).__name__}")


def _check_grid(f: Tensor, x: Tensor, names: tuple[str, str] = ("f", "x")) -> float:
    """The spacing of the uniform grid ``x`` with values ``f``, else a ``UserError`` in the
    caller's ``names`` (a NaN in a quadrature grid's fy was reported as one in f)."""
    fn, xn = names
    _check_tensors(**{fn: f, xn: x})
    if f.ndim != 1 or x.ndim != 1 or f.shape != x.shape or x.numel() < 3:
        raise UserError(f"{fn} and {xn} must be 1-D tensors of the same length (>= 3)")
    if bool(torch.isnan(f).any()):         # +inf is allowed: a constraint, e^{−βf} = 0
        raise UserError(f"{fn} has NaN values")
    dx = x[1:] - x[:-1]
    if (dx <= 0).any() or not torch.allclose(dx, dx[0].expand_as(dx), rtol=1e-6, atol=1e-12):
        hint = (f" (a {x.dtype} grid's spacing is uneven by rounding: build it in float64)"
                if x.dtype != torch.float64 else "")
        raise UserError(f"{xn} must be a uniform, increasing grid" + hint)
    return float(dx[0])


def _check_t(t: float) -> None:
    check_positive("t", t)


def _check_beta(beta: float) -> None:
    if beta == float("inf"):
        raise UserError("beta must be finite (beta = inf is no diffusion; the viscous HJ "
                        "solution then tends to hopf_lax)")
    check_positive("beta", beta)


def _quadrature_grid(f: Tensor, x: Tensor, y: Tensor | None, fy: Tensor | None
                     ) -> tuple[Tensor, Tensor, float]:
    """(y, f(y), dy): the grid a convolution integrates over, ``x`` itself by default."""
    dx = _check_grid(f, x)
    if y is None:
        return x, f, dx
    if fy is None:
        raise UserError("pass fy = f(y) together with y")
    return y, fy, _check_grid(fy, y, ("fy", "y"))


def padded_grid(x: Tensor, width: float) -> tuple[Tensor, slice]:
    """(y, where): ``x``'s uniform grid extended by at least ``width`` on each side at the same
    spacing, with y[where] == x: a quadrature grid for :func:`viscous_hj` and
    :func:`heat_smoothing` whose Gaussian (variance t/β; ``width`` = 8√(t/β) is ample) does
    not run off the ends at the points of ``x``."""
    dx = _check_grid(x, x)
    k = math.ceil(checked_float("width", width) / dx)
    y = x[0] + dx * torch.arange(-k, x.numel() + k, dtype=x.dtype, device=x.device)
    return y, slice(k, k + x.numel())


def viscous_hj(f: Tensor, x: Tensor, t: float, *, beta: float = 1.0,
               y: Tensor | None = None, fy: Tensor | None = None) -> Tensor:
    """Cole–Hopf solution of u_t + ½u_x² = (1/2β) u_xx at time t, at the points ``x``, by
    quadrature over the uniform grid ``y`` (default: ``x``) with values ``fy`` = f(y).
    Accurate where the Gaussian of variance t/β around x stays inside y: within a few √(t/β)
    of the ends of a grid that is not extended (:func:`padded_grid`) the integral is cut off."""
    y, fy, dy = _quadrature_grid(f, x, y, fy)
    _check_t(t)
    _check_beta(beta)
    var = t / beta
    logk = -(x[:, None] - y[None, :]) ** 2 / (2 * var) - 0.5 * math.log(2 * math.pi * var)
    return -torch.logsumexp(logk - beta * fy[None, :], dim=1) / beta - math.log(dy) / beta


def local_entropy(f: Tensor, x: Tensor, gamma: float, *, beta: float = 1.0,
                  y: Tensor | None = None, fy: Tensor | None = None) -> Tensor:
    """f_γ(x) = −β⁻¹ log ∫ exp(−βf(y) − β|x − y|²/(2γ)) dy: equals ``viscous_hj(f, x, γ)``
    minus the constant β⁻¹ log √(2πγ/β)."""
    return (viscous_hj(f, x, gamma, beta=beta, y=y, fy=fy)
            - 0.5 * math.log(2 * math.pi * gamma / beta) / beta)


def hopf_lax(f: Tensor, x: Tensor, t: float, *, y: Tensor | None = None,
             fy: Tensor | None = None) -> Tensor:
    """u(x, t) = min_y f(y) + |x − y|²/(2t), minimising over the grid ``y`` (default: ``x``;
    pass a finer ``y`` with its values ``fy`` for second-derivative checks)."""
    _check_grid(f, x)
    _check_t(t)
    if y is None:
        y, fy = x, f
    else:
        # any increasing grid will do for the minimum, but a NaN in fy made every u NaN
        if fy is None:
            raise UserError("pass fy = f(y) together with y")
        _check_tensors(y=y, fy=fy)
        if y.ndim != 1 or fy.shape != y.shape:
            raise UserError(f"y and fy must be 1-D tensors of the same length, got "
                            f"{tuple(y.shape)} and {tuple(fy.shape)}")
        if bool(torch.isnan(fy).any()) or bool(torch.isnan(y).any()):
            raise UserError("y or fy has NaN values")
    return (fy[None, :] + (x[:, None] - y[None, :]) ** 2 / (2 * t)).min(dim=1).values


def derivatives(fn, z: Tensor) -> tuple[Tensor, Tensor]:
    """(f'(z), f''(z)) of an elementwise function ``fn`` (torch ops), exactly, by autograd."""
    z = z.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(z).sum(), z, create_graph=True)
    if not g.requires_grad:      # fn affine in z: f' is constant, f'' = 0
        return g.detach(), torch.zeros_like(z)
    (h,) = torch.autograd.grad(g.sum(), z)
    return g.detach(), h


def hopf_lax_newton(fn, x: Tensor, t: float, *, y: Tensor,
                    steps: int = 30) -> tuple[Tensor, Tensor]:
    """(u(x, t), prox_{tf}(x)) of the Hopf–Lax formula (4.16) to machine precision for a
    smooth f given as a function ``fn`` (torch ops): the global minimiser over the grid ``y``,
    then Newton steps on f'(p) + (p − x)/t = 0 (derivatives by autograd). Second differences of
    this u are free of the grid-minimisation noise of :func:`hopf_lax`."""
    _check_t(t)
    _check_tensors(x=x, y=y)
    steps = check_count("steps", steps)     # a negative count ran no Newton step, silently
    fy = fn(y)
    p = y[(fy[None, :] + (x[:, None] - y[None, :]) ** 2 / (2 * t)).argmin(dim=1)].clone()
    for _ in range(steps):
        g, h = derivatives(fn, p)
        p = p - (g + (p - x) / t) / (h + 1 / t)
    with torch.no_grad():
        return fn(p) + (x - p) ** 2 / (2 * t), p


def convexity_interval(u: Tensor, x: Tensor, index: int, *, tol: float = 1e-8
                       ) -> tuple[float, float]:
    """The widest grid interval [x_l, x_r] around ``x[index]`` on which u is convex (second
    differences ≥ −tol): the I(x, t) of the thesis' Example 4.15."""
    dx = _check_grid(u, x)
    # an index past the end (or negative) returned the interval of the last grid point
    index = check_count("index", index)
    if index >= x.numel():
        raise UserError(f"index must be < {x.numel()} (the grid's length), got {index}")
    ok = second_difference(u, dx) >= -tol          # ok[i] is about x[i + 1]
    i = min(max(index - 1, 0), len(ok) - 1)
    if not ok[i]:
        return float(x[index]), float(x[index])
    lo = hi = i
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < len(ok) - 1 and ok[hi + 1]:
        hi += 1
    return float(x[lo + 1]), float(x[hi + 1])


def proximal_point(f: Tensor, x: Tensor, t: float) -> Tensor:
    """prox_{tf}(x) = argmin_y f(y) + |x − y|²/(2t) over the grid (the Hopf–Lax minimiser)."""
    _check_grid(f, x)
    _check_t(t)
    return x[(f[None, :] + (x[:, None] - x[None, :]) ** 2 / (2 * t)).argmin(dim=1)]


def heat_smoothing(f: Tensor, x: Tensor, t: float, *, beta: float = 1.0,
                   y: Tensor | None = None, fy: Tensor | None = None) -> Tensor:
    """u = G_{t/β} * f at the points ``x``, integrated over the grid ``y`` (default ``x``;
    values ``fy``) and normalised over it, so constants stay constants; any other f is cut off
    within a few √(t/β) of the ends of a grid that is not extended (:func:`padded_grid`)."""
    y, fy, _ = _quadrature_grid(f, x, y, fy)
    _check_t(t)
    _check_beta(beta)
    # an infinite value (a constraint for the HJ solutions) met kernel weights that underflow
    # to 0 and gave NaN; the Gaussian average of such an f is infinite everywhere
    if not bool(torch.isfinite(fy).all()):
        raise UserError("heat_smoothing averages f itself and needs finite values (an infinite "
                        "one makes u infinite everywhere); viscous_hj and hopf_lax take +inf "
                        "as a constraint")
    k = torch.exp(-(x[:, None] - y[None, :]) ** 2 / (2 * t / beta))
    return (k @ fy) / k.sum(1)


def second_difference(u: Tensor, dx: float) -> Tensor:
    """(u_{i+1} − 2u_i + u_{i−1}) / dx², length n − 2."""
    return (u[2:] - 2 * u[1:-1] + u[:-2]) / dx ** 2


def semiconcavity_bound(c: float, t: float) -> float:
    """1/(C⁻¹ + t) = C/(1 + Ct): the bound on u_xx at time t if f_xx ≤ C (C > 0)."""
    check_positive("C", c)
    return c / (1 + c * t)


# a second difference on the grid may exceed the exact u_xx by this fraction of the bound
SEMICONCAVITY_GRID_RTOL = 0.01


def within_semiconcavity_bound(max_u_xx: float, bound: float) -> bool:
    """Whether a grid's max u_xx meets Lemma 4.17's bound, up to the grid allowance."""
    return max_u_xx <= bound * (1 + SEMICONCAVITY_GRID_RTOL)


def wide_and_narrow_minima(z: Tensor) -> Tensor:
    """The 1-D test loss of the Fig. 4.1 reproduction: a wide minimum near −1.5, a narrow
    deeper one near +1.5, plus a small ripple 0.1 sin 6z."""
    return (0.05 * z ** 2 - 0.8 * torch.exp(-(z + 1.5) ** 2)
            - torch.exp(-8 * (z - 1.5) ** 2) + 0.1 * torch.sin(6 * z))


# ---------------------------------------------------------------- reference solvers
def _check_periodic(f: Tensor, period: float, t: float, beta: float) -> None:
    if f.ndim != 1 or f.numel() < 3:
        raise UserError("f must be a 1-D tensor of >= 3 values over one period")
    check_positive("period", period)
    _check_t(t)
    _check_beta(beta)


def periodic_cole_hopf(f: Tensor, period: float, t: float, *, beta: float = 1.0) -> Tensor:
    """Cole–Hopf on a periodic grid (n points over one period), the heat equation solved
    exactly in Fourier space: v̂_k(t) = v̂_k(0) e^{−k² t/(2β)}. v = e^{−β(f − min f)} is
    transformed as it is, so where v(t) falls to the FFT's round-off relative to its maximum
    (large β times the range of f) its logarithm is meaningless: a ``UserError`` then, not
    NaN (``viscous_hj`` works in log space)."""
    _check_periodic(f, period, t, beta)
    n = f.numel()
    v0 = torch.exp(-beta * (f - f.min()))
    k = 2 * math.pi * torch.fft.fftfreq(n, d=period / n).to(f.dtype)
    v = torch.fft.ifft(torch.fft.fft(v0) * torch.exp(-k ** 2 * t / (2 * beta))).real
    # FFT round-off is ~n·eps of the maximum: keep six digits above it
    floor = 1e6 * n * torch.finfo(v.dtype).eps * float(v.abs().max())
    if float(v.min()) <= floor:
        hint = "" if v.dtype == torch.float64 else ", a float64 f"
        raise UserError(
            f"periodic_cole_hopf: e^(-beta (f - min f)) spans more than {v.dtype}'s precision "
            f"here (its heat solution reaches {float(v.min()):.1e} against a maximum "
            f"{float(v.abs().max()):.1e}): use a smaller beta{hint} or viscous_hj (log-space "
            "quadrature)")
    return -torch.log(v) / beta + f.min()


def finite_difference_viscous_hj(f: Tensor, period: float, t: float, *, beta: float = 1.0,
                                 cfl: float = 0.2) -> Tensor:
    """Direct explicit solution of u_t = −½u_x² + (1/2β) u_xx on a periodic grid (central
    differences, forward Euler with dt ≤ cfl·min(β dx², dx/max|u_x|)). A reference for tests."""
    _check_periodic(f, period, t, beta)
    if not 0 < cfl <= 1:
        raise UserError(f"cfl must be in (0, 1], got {cfl}")
    n = f.numel()
    dx = period / n
    u = f.clone()
    time = 0.0
    while time < t:
        ux = (torch.roll(u, -1) - torch.roll(u, 1)) / (2 * dx)
        uxx = (torch.roll(u, -1) - 2 * u + torch.roll(u, 1)) / dx ** 2
        dt = cfl * min(beta * dx ** 2, dx / max(float(ux.abs().max()), 1e-12))
        dt = min(dt, t - time)
        u = u + dt * (-0.5 * ux ** 2 + uxx / (2 * beta))
        time += dt
    return u


__all__ = ["viscous_hj", "local_entropy", "padded_grid", "hopf_lax", "hopf_lax_newton",
           "convexity_interval", "proximal_point", "heat_smoothing",
           "second_difference", "semiconcavity_bound", "periodic_cole_hopf",
           "finite_difference_viscous_hj", "wide_and_narrow_minima"]
