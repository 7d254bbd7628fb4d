"""The non-equilibrium double well of the thesis, Example 6.43.

    Φ(x) = (x₁² − 1)²/4 + x₂²/2,
    J_ss(x) = e^{−(x₁² + x₂²)²/4} (−x₂, x₁),      j(x) = λ e^{βΦ(x)} J_ss(x),
    dX = (−∇Φ(X) + j(X)) dt + √(2β⁻¹) dB.

Because j e^{−βΦ} = λ J_ss is divergence-free (a rotation field times a radial function), the
Fokker–Planck equation keeps ρ_ss ∝ e^{−βΦ} stationary for every λ (β = 1 in the thesis):
the steady state does not see the rotational force, but the dynamics do. j itself is not
divergence-free: ∇·j = β j·∇Φ = βλ e^{βΦ−|x|⁴/4} x₁x₂(2 − x₁²), so the example satisfies (6.10)
and (6.26), j = J/ρ_ss for its stationary probability current J = j ρ_ss = λ J_ss / Z (J_ss
above up to the factor λ/Z), but not Assumption 6.22 (∇·j = 0) nor Lemma 6.23 (ii)
(j·∇Φ = 0), which the thesis derives from it (docs/FIDELITY.md). Two consequences:

- the zeros of the drift b = −∇Φ + j (where a noiseless trajectory would rest, the "most likely
  locations" of the small-noise dynamics) move away from (±1, 0) as λ grows, and disappear for
  large λ, while the histogram of X stays e^{−βΦ};
- trajectories circulate around the saddle at the origin with stationary mean angular velocity
  ω = E_ρ[(x × b)/|x|²] = λ ∫ e^{−|x|⁴/4} dx / Z = λ π^{3/2} / Z (β = 1; the gradient part has
  zero mean because (−x₂, x₁)/|x|² is divergence-free, and θ = atan2 is harmonic so Itô adds no
  drift to dθ).

The noiseless flow ẋ = b(x) (the thesis' Fig. 6.4 streamlines; its Fig. 6.4c, for "a large
‖j(x)‖", says "SGD converges to limit cycles around the saddle point at the origin"):
linearised at the origin b ≈ [[1, −λ'], [λ', −1]] x with λ' = λ e^{1/4}, whose trace is zero;
for λ' > 1 the origin is a centre to first order, and averaging over the rotation gives
d|x|/dt ≈ −c |x|³ < 0 — trajectories circulate while spiralling slowly into the origin.
:func:`noiseless_orbits` integrates the flow and reports which happens.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from sgdlab.errors import UserError, checked_float
from sgdlab.optim.noise import standard_normal

from .base import Landscape, check_count, check_generator, check_positive, check_states
from .sde.base import SDE


class DoubleWell(Landscape):
    """Φ(x) = (x₁² − 1)²/4 + x₂²/2 with the rotational force j of Example 6.43 (j e^{−βΦ} is
    divergence-free, j is not: module docstring).

    Args:
        lam: λ, strength of the rotational force.
        beta: inverse temperature β (the noise is √(2/β) dB; the thesis uses β = 1).
    """

    dim = 2

    def __init__(self, lam: float = 0.0, *, beta: float = 1.0) -> None:
        # β = inf (no noise) is refused too: j = λ e^{βΦ} J_ss and Z are then not finite
        check_positive("beta", beta)
        self.lam, self.beta = checked_float("lam", lam, None), float(beta)

    @staticmethod
    def potential(x: Tensor) -> Tensor:
        return (x[..., 0] ** 2 - 1) ** 2 / 4 + x[..., 1] ** 2 / 2

    def loss(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        self._check(theta)
        if idx is not None:
            raise UserError("DoubleWell has no samples; idx must be None")
        return self.potential(theta)

    def grad(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        self._check(theta)
        x1, x2 = theta[..., 0], theta[..., 1]
        return torch.stack([(x1 ** 2 - 1) * x1, x2], -1)

    def rotational_force(self, x: Tensor) -> Tensor:
        """j(x) = λ e^{βΦ(x) − |x|⁴/4} (−x₂, x₁)."""
        r2 = (x ** 2).sum(-1)
        amp = self.lam * torch.exp(self.beta * self.potential(x) - r2 ** 2 / 4)
        return amp[..., None] * torch.stack([-x[..., 1], x[..., 0]], -1)

    def drift(self, x: Tensor) -> Tensor:
        return -self.grad(x) + self.rotational_force(x)

    def sde(self) -> SDE:
        """dX = (−∇Φ + j) dt + √(2/β) dB (additive noise)."""
        return SDE.langevin(self.grad, 2, beta=self.beta, extra_drift=self.rotational_force)

    # ----------------------------------------------------------- closed forms
    def _x1_mass(self, a: float, b: float) -> float:
        """∫_a^b e^{−β(x₁²−1)²/4} dx₁ by adaptive quadrature, split at the wells ±1 and the
        saddle 0, and cut where the exponent passes 50 (|x₁| > max(6, √(1 + √(200/β)))).
        A fixed [−6, 6] grid cut off the tails at small β (Z 0.4% low at β = 0.01, 22% at
        0.001) and 201 points per bin missed the wells' peaks at large β (a half-line bin had
        mass 0.61, not 0.5, at β = 100)."""
        from scipy.integrate import quad

        x_max = max(6.0, math.sqrt(1 + math.sqrt(200 / self.beta)))
        a, b = max(a, -x_max), min(b, x_max)
        if a >= b:
            return 0.0
        cuts = [a] + [p for p in (-1.0, 0.0, 1.0) if a < p < b] + [b]
        return sum(quad(lambda x: math.exp(-self.beta * (x * x - 1) ** 2 / 4), lo, hi,
                        epsabs=0.0, epsrel=1e-11, limit=200)[0]
                   for lo, hi in zip(cuts[:-1], cuts[1:]))

    def normaliser(self) -> float:
        """Z = ∫ e^{−βΦ} dx = √(2π/β) ∫ e^{−β(x₁²−1)²/4} dx₁ (1-D quadrature)."""
        return self._x1_mass(-math.inf, math.inf) * math.sqrt(2 * math.pi / self.beta)

    def stationary_bin_probabilities(self, edges1: np.ndarray, edges2: np.ndarray) -> np.ndarray:
        """P(X ∈ bin) under ρ ∝ e^{−βΦ}; Φ separates, so each is a product of 1-D integrals:
        x₁'s by quadrature, x₂'s (Gaussian, variance 1/β) exactly by erf."""
        z1 = self._x1_mass(-math.inf, math.inf)
        m1 = np.array([self._x1_mass(float(a), float(b)) / z1
                       for a, b in zip(edges1[:-1], edges1[1:])])
        cdf2 = np.array([0.5 * (1 + math.erf(float(e) * math.sqrt(self.beta / 2)))
                         for e in edges2])
        return np.outer(m1, np.diff(cdf2))

    def mean_angular_velocity(self) -> float:
        """ω = λ ∫ e^{−|x|⁴/4} dx / Z = λ π^{3/2} / Z (exact for β = 1, see module doc).

        For general β the rotational part is λ E_ρ[e^{βΦ−|x|⁴/4}] = λ π^{3/2} / Z as well, since
        ρ = e^{−βΦ}/Z cancels the e^{βΦ} factor."""
        return self.lam * math.pi ** 1.5 / self.normaliser()

    def drift_zeros(self, starts: tuple[tuple[float, float], ...] = ((1.0, 0.0), (-1.0, 0.0)),
                    *, iters: int = 100, tol: float = 1e-12) -> list[tuple[float, float] | None]:
        """Zeros of b = −∇Φ + j found by Newton from each start (None if Newton fails):
        the resting points of the noiseless dynamics, which move with λ."""
        out: list[tuple[float, float] | None] = []
        for s in starts:
            x = torch.tensor(s, dtype=torch.float64)
            ok = False
            for _ in range(iters):
                b = self.drift(x)
                if float(b.norm()) < tol:
                    ok = True
                    break
                jac = torch.func.jacrev(self.drift)(x)
                try:
                    x = x - torch.linalg.solve(jac, b)
                except RuntimeError:
                    break
                if not torch.isfinite(x).all() or float(x.norm()) > 10:
                    break
            out.append((float(x[0]), float(x[1])) if ok else None)
        return out


def winding_rate(dw: DoubleWell, x0: Tensor, *, dt: float, steps: int,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Simulate ``steps`` Euler–Maruyama steps from x0 (C, 2), accumulating every step's
    wrapped angle increment (so no winding is lost between records). Returns
    (final states (C, 2), per-chain mean angular velocity (C,))."""
    from .sde.euler_maruyama import EulerMaruyama

    dt, steps = check_positive("dt", dt), check_count("steps", steps, 1)
    check_states("x0", x0, 2)
    check_generator(generator)
    sde, integ = dw.sde(), EulerMaruyama()
    x = x0.clone()
    total = x.new_zeros(x.shape[:-1])      # on the chains' device, as the draws below
    ang = torch.atan2(x[..., 1], x[..., 0])
    sq = math.sqrt(dt)
    for n in range(steps):
        dwn = standard_normal(x.shape, generator=generator, dtype=x.dtype, device=x.device) * sq
        x = integ.step(sde, x, n * dt, dt, dwn)
        new = torch.atan2(x[..., 1], x[..., 0])
        total += (new - ang + math.pi) % (2 * math.pi) - math.pi
        ang = new
    return x, total / (steps * dt)


def noiseless_orbits(dw: DoubleWell, starts, *, t_end: float = 400.0, rtol: float = 1e-8,
                     atol: float = 1e-10) -> dict[str, np.ndarray]:
    """Integrate ẋ = b(x) = −∇Φ(x) + j(x) (no noise) from each start with an adaptive
    Runge–Kutta method (``scipy.integrate.solve_ivp``, RK45) up to ``t_end``.

    Returns arrays over starts: ``final`` (S, 2) states; ``radius_half`` / ``radius_end``, the
    mean |x| over [0.4, 0.5]·t_end and [0.9, 1]·t_end (windows, since an orbit's radius varies
    within a turn); ``turns``, signed turns around the origin over the second half; and
    ``speed_end`` = |b(x(t_end))|. A trajectory resting at a point has ``speed_end`` ≈ 0; one on
    a limit cycle keeps its radius (``radius_end ≈ radius_half`` > 0) and keeps turning; one
    spiralling into the origin turns while its radius shrinks.
    """
    from scipy.integrate import solve_ivp

    starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
    if starts.shape[-1] != 2 or not np.isfinite(starts).all():
        raise UserError("starts must be finite (S, 2) points")
    check_positive("t_end", t_end)
    lam, beta = dw.lam, dw.beta

    def rhs(_t, y):   # the drift of DoubleWell.drift in numpy: the solver calls it ~10⁵ times
        x1, x2 = y[0::2], y[1::2]
        r2 = x1 * x1 + x2 * x2
        amp = lam * np.exp(beta * ((x1 * x1 - 1) ** 2 / 4 + x2 * x2 / 2) - r2 * r2 / 4)
        out = np.empty_like(y)
        out[0::2] = x1 - x1 ** 3 - amp * x2
        out[1::2] = -x2 + amp * x1
        return out

    times = np.linspace(0.4 * t_end, t_end, 1201)
    sol = solve_ivp(rhs, (0.0, t_end), starts.ravel(), method="RK45", t_eval=times,
                    rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"noiseless integration failed: {sol.message}")
    y = sol.y.reshape(len(starts), 2, -1)                   # (S, 2, T)
    r = np.hypot(y[:, 0], y[:, 1])
    second = times >= 0.5 * t_end
    ang = np.unwrap(np.arctan2(y[:, 1], y[:, 0])[:, second], axis=-1)
    final = y[:, :, -1]
    return {"final": final, "radius_half": r[:, times <= 0.5 * t_end].mean(-1),
            "radius_end": r[:, times >= 0.9 * t_end].mean(-1),
            "turns": (ang[:, -1] - ang[:, 0]) / (2 * math.pi),
            "speed_end": dw.drift(torch.from_numpy(final)).norm(dim=-1).numpy()}


def drift_angular_rate(dw: DoubleWell, x: Tensor) -> Tensor:
    """(x × b(x))/|x|² per point: its mean under the steady state is the mean angular
    velocity (module docstring); a low-variance estimator from samples of X."""
    b = dw.drift(x)
    return (x[..., 0] * b[..., 1] - x[..., 1] * b[..., 0]) / (x ** 2).sum(-1)


def angular_velocity(states: Tensor, dt: float) -> Tensor:
    """Per-chain mean angular velocity from recorded states (S, C, 2) spaced ``dt`` apart:
    (unwrapped angle change) / elapsed time. Winding around a point has heavy tails, so
    summarise it with a median or over many chains. A chain that turns by more than π between
    two records (near the origin) has that turn wrapped away: records 0.05 apart read λ = 1.5's
    mean 4% low; :func:`winding_rate` counts every integration step."""
    # (S, C) states read their last axis as (x₁, x₂), one record gave 0/0 = NaN, and a dt
    # <= 0 flipped or broke the sign, all without a word
    if not isinstance(states, Tensor) or states.ndim < 2 or states.shape[-1] != 2 \
            or states.shape[0] < 2:
        got = tuple(states.shape) if isinstance(states, Tensor) else type(states).__name__
        raise UserError(f"states must be a tensor of shape (records >= 2, ..., 2), got {got}")
    dt = check_positive("dt", dt)
    ang = torch.atan2(states[..., 1], states[..., 0])
    d = torch.diff(ang, dim=0)
    d = (d + math.pi) % (2 * math.pi) - math.pi
    return d.sum(0) / (dt * d.shape[0])


__all__ = ["DoubleWell", "angular_velocity", "winding_rate", "drift_angular_rate",
           "noiseless_orbits"]
