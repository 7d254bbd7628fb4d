"""Closed forms for the critical points of the spherical p-spin glass (thesis §2.2.1, §2.3.1).

The Hamiltonian is eq. (2.4), −H(σ) = N^{−(p−1)/2} Σ J_{i₁…i_p} σ_{i₁}⋯σ_{i_p} on the sphere
|σ|² = N (eq. (2.32) of :class:`~sgdlab.landscapes.pspin.PSpinGlass` at p = 3, ν = 0). Energies
u are per spin, crt_k(u) counts the critical points of index k with H ≤ N u, and
(1/N) log E crt_k(u) → Θ_k(u) (Lemma 2.2, Auffinger et al. 2013):

- E_∞ = 2 √((p − 1)/p), the threshold below which the index of a critical point is pinned
  (:func:`threshold_energy`);
- I₁(u) = (2/E_∞²) ∫_u^{−E_∞} (z² − E_∞²)^{1/2} dz
        = −(u/E_∞²) √(u² − E_∞²) − log(−u + √(u² − E_∞²)) + log E_∞   for u ≤ −E_∞
  (:func:`rate_function`). The thesis prints the first term as −(u²/E_∞²) √(u² − E_∞²) on the
  line below the integral; the integral, which it also prints, and Auffinger et al. (2013)
  give u, which is used here (tests/landscapes/test_landscape_pspin_complexity.py writes
  both);
- Θ(u), eq. (2.11), and Θ_k(u), eq. (2.12) (:func:`complexity`); −E_0, the energy below
  which there are no local minima, is the zero of Θ_0 (:func:`ground_state_energy`).

With an external field h ~ N(0, ν² I) added as in eq. (2.14), eq. (2.15)'s order parameter
B = (J² p(p − 2) − ν²)/(J² p² + ν²) (:func:`field_order_parameter`) places the landscape:
B = Ω(1/N) > 0 exponentially many critical points, |B| = O(1/N) polynomially many, B =
−Ω(1/N) one minimum (Theorems 2.7-2.8); ν_c = J √(p(p − 2)) gives B = 0. For B > 0,
(2.16)'s expected number of critical points is :func:`expected_critical_points` (N = 100:
5·10¹⁶ at §2.4.1's glassy field, 580 at its polynomial one).
"""
from __future__ import annotations

import math

from sgdlab.errors import UserError, checked_float

from .base import check_count


def _order(p: int) -> int:
    return check_count("p", p, 2)


def threshold_energy(p: int) -> float:
    """E_∞ = 2 √((p − 1)/p) (Lemma 2.2): below −E_∞ the critical points of index k thin out
    as e^{−N(k+1)I₁(u)}."""
    p = _order(p)
    return 2 * math.sqrt((p - 1) / p)


def rate_function(u: float, p: int) -> float:
    """I₁(u) of Lemma 2.2 for u ≤ −E_∞ (module docstring; 0 at u = −E_∞, positive and
    decreasing in u below it). Above −E_∞ it does not enter (2.11)-(2.12): refused."""
    u, e = checked_float("u", u, None), threshold_energy(p)
    if u > -e:
        raise UserError(f"I_1(u) is defined for u <= -E_inf = {-e:.6g}, got u = {u}")
    root = math.sqrt(max(u * u - e * e, 0.0))
    return -(u / e ** 2) * root - math.log(-u + root) + math.log(e)


def complexity(u: float, p: int, index: int | None = None) -> float:
    """Θ(u), eq. (2.11) (``index=None``: all critical points), or Θ_k(u), eq. (2.12) (``index``
    = k): lim (1/N) log E crt_k(u) for the critical points with energy per spin at most u."""
    u, p = checked_float("u", u, None), _order(p)
    e = threshold_energy(p)
    base = 0.5 * math.log(p - 1)
    quad = (p - 2) / (4 * (p - 1)) * u * u
    if index is None:
        if u <= -e:
            return base - quad - rate_function(u, p)
        return base - quad if u <= 0 else base
    k = check_count("index", index, 0)
    if u <= -e:
        return base - quad - (k + 1) * rate_function(u, p)
    return base - (p - 2) / p


def ground_state_energy(p: int) -> float:
    """E_0 > 0: −E_0 is the zero of Θ_0 below −E_∞, the energy per spin under which there are
    no local minima (Fig. 2.1; lim inf H/N = −E_0). p ≥ 3 (at p = 2, Θ_0 ≡ 0 above −E_∞)."""
    p = check_count("p", p, 3)
    e = threshold_energy(p)
    hi = -e
    lo = -e - 1.0
    while complexity(lo, p, 0) > 0:      # Θ_0 → −∞ as u → −∞: widen until it changes sign
        lo -= 1.0
    # bisection: Θ_0 is increasing below −E_∞ (Lemma 2.2), so the sign change is its one zero
    # (scipy.optimize would cost its ~1 s import for a scalar root)
    while hi - lo > 4 * math.ulp(hi):
        mid = 0.5 * (lo + hi)
        if complexity(mid, p, 0) > 0:
            hi = mid
        else:
            lo = mid
    return -0.5 * (lo + hi)


def field_order_parameter(nu: float, p: int, coupling: float = 1.0) -> float:
    """B = (J² p(p − 2) − ν²)/(J² p² + ν²), eq. (2.15), in (−1, 1 − 2/p] for a field of
    strength ν (h ~ N(0, ν² I)) and couplings of scale J."""
    nu, j = checked_float("nu", nu, None), checked_float("coupling", coupling, None)
    p = _order(p)
    if nu < 0 or j <= 0:
        raise UserError(f"need nu >= 0 and coupling > 0, got nu = {nu}, coupling = {j}")
    return (j * j * p * (p - 2) - nu * nu) / (j * j * p * p + nu * nu)


def expected_critical_points(b: float, n: int) -> float:
    """E crt(H̃) for B > 0 at large N, eq. (2.16)'s third case (Theorem 2.7, Fyodorov 2013):
    4 N^{1/2} √((1 + B)/(π B)) exp((N/2) log((1 + B)/(1 − B))). Exponential in N for B of
    order 1; O(N) in the band B = O(1/N), where it meets (2.17)'s τ ≪ −1 case."""
    b, n = checked_float("b", b, None), check_count("n", n, 1)
    if not 0 < b < 1:
        raise UserError(f"(2.16)'s formula holds for 0 < B < 1, got B = {b}")
    return 4 * math.sqrt(n) * math.sqrt((1 + b) / (math.pi * b)) * math.exp(
        0.5 * n * math.log((1 + b) / (1 - b)))


def critical_field(p: int, coupling: float = 1.0) -> float:
    """ν_c = J √(p(p − 2)), where B = 0 (§2.3.1)."""
    p, j = _order(p), checked_float("coupling", coupling, strict=True)
    return j * math.sqrt(p * (p - 2))
