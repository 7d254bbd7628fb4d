"""Lemma 2.2's complexity of the spherical p-spin glass and eq. (2.15)'s order parameter
(sgdlab/landscapes/pspin_complexity.py), against quadrature and the thesis' own statements."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy.integrate import quad

from sgdlab.errors import UserError
from sgdlab.landscapes.pspin import regime_field
from sgdlab.landscapes.pspin_complexity import (complexity, critical_field,
                                                expected_critical_points,
                                                field_order_parameter, ground_state_energy,
                                                rate_function, threshold_energy)


@pytest.mark.parametrize("p", [3, 4, 7])
def test_rate_function_is_the_integral_and_the_printed_closed_form_is_not(p):
    """I₁(u) = (2/E_∞²) ∫_u^{−E_∞} √(z² − E_∞²) dz (Lemma 2.2's first line). The thesis' second
    line prints −(u²/E_∞²)√(u² − E_∞²) for the first term, which does not equal it."""
    e = threshold_energy(p)
    assert e == pytest.approx(2 * math.sqrt((p - 1) / p), rel=1e-15)
    for u in (-e, -e - 1e-3, -e - 0.1, -2.5, -4.0):
        integral = 2 / e ** 2 * quad(lambda z: math.sqrt(z * z - e * e), u, -e,
                                     epsabs=0, epsrel=1e-13)[0]
        assert rate_function(u, p) == pytest.approx(integral, rel=1e-10, abs=1e-14)
    u = -2.5
    root = math.sqrt(u * u - e * e)
    printed = -(u ** 2 / e ** 2) * root - math.log(-u + root) + math.log(e)
    assert abs(printed - rate_function(u, p)) > 1.0
    with pytest.raises(UserError, match="defined for u <= -E_inf"):
        rate_function(-e + 1e-3, p)


@pytest.mark.parametrize("p", [3, 4, 7])
def test_complexities_are_continuous_non_decreasing_and_ordered_by_index(p):
    """(2.11)'s and (2.12)'s branches meet at −E_∞ and at 0; Θ and Θ_k are non-decreasing
    (Lemma 2.2); below −E_∞, Θ_k − Θ_{k+1} = I₁(u) > 0 (Remark 2.6: index k outnumbers k + 1),
    and above it every index has the same Θ_k = ½ log(p − 1) − (p − 2)/p."""
    e, eps = threshold_energy(p), 1e-9
    for k in (None, 0, 1, 5):
        assert complexity(-e - eps, p, k) == pytest.approx(complexity(-e + eps, p, k), abs=1e-6)
    assert complexity(-eps, p) == pytest.approx(complexity(eps, p), abs=1e-9)
    assert complexity(-e + eps, p, 3) == pytest.approx(0.5 * math.log(p - 1) - (p - 2) / p,
                                                       abs=1e-12)
    grid = np.linspace(-e - 1.5, 1.0, 2001)
    for k in (None, 0, 2):
        vals = np.array([complexity(u, p, k) for u in grid])
        assert (np.diff(vals) >= -1e-12).all()
    for u in (-e - 0.05, -e - 0.5):
        assert complexity(u, p, 0) - complexity(u, p, 1) == pytest.approx(rate_function(u, p),
                                                                          rel=1e-12)
        assert rate_function(u, p) > 0


def test_ground_state_energy_is_the_zero_of_the_minima_complexity():
    """−E_0 is where Θ_0 crosses zero (Fig. 2.1), below −E_∞; for p = 3, E_0 = 1.657 and
    E_∞ = 1.633 (Auffinger, Ben Arous and Černý 2013)."""
    for p in (3, 4, 7):
        e0 = ground_state_energy(p)
        assert e0 > threshold_energy(p)
        assert abs(complexity(-e0, p, 0)) < 1e-12
        assert complexity(-e0 + 1e-3, p, 0) > 0 > complexity(-e0 - 1e-3, p, 0)
    assert ground_state_energy(3) == pytest.approx(1.657, abs=5e-4)
    assert threshold_energy(3) == pytest.approx(1.633, abs=5e-4)
    with pytest.raises(UserError, match="p must be an integer >= 3"):
        ground_state_energy(2)


def test_a_level_or_field_is_a_finite_number_not_a_bool_or_string():
    """float() read True as 1 and "0.5" as 0.5; numpy's floats are the numbers they hold."""
    assert complexity(np.float32(-1.75), 3, 0) == complexity(-1.75, 3, 0)
    for bad, says in (((True, 3, 0), "u must be a finite number, not a bool (True)"),
                      (("-1.75", 3, 0), "u must be a finite number, got '-1.75'"),
                      ((math.nan, 3, 0), "u must be a finite number, got nan")):
        with pytest.raises(UserError, match=f"^{re.escape(says)}$"):
            complexity(*bad)
    with pytest.raises(UserError, match=r"^nu must be a finite number, got '0\.1'$"):
        field_order_parameter("0.1", 3)


def test_order_parameter_places_the_three_regimes_of_section_2_4_1():
    """B of eq. (2.15) is 1 − 2/p without a field and 0 at ν_c = J√(p(p − 2)); §2.4.1's three
    fields at N = 100 give B = Ω(1/N) > 0 (exponential), N|B| = O(1) (polynomial: B ≈ 1/(4N))
    and B = −Ω(1/N) (trivial)."""
    n = 100
    assert field_order_parameter(0.0, 3) == pytest.approx(1 - 2 / 3, rel=1e-15)
    assert field_order_parameter(critical_field(4, 0.5), 4, 0.5) == pytest.approx(0, abs=1e-15)
    assert critical_field(3) == pytest.approx(math.sqrt(3), rel=1e-15)
    glassy, critical, trivial = (field_order_parameter(regime_field(r, n), 3)
                                 for r in ("glassy", "critical", "trivial"))
    assert n * glassy > 30
    assert 0 < n * critical < 1 and critical == pytest.approx(1 / (4 * n), rel=0.01)
    assert n * trivial < -30
    with pytest.raises(UserError):
        field_order_parameter(-1.0, 3)


def test_critical_point_count_of_theorem_2_7_meets_eq_2_17_in_the_band():
    """(2.16) at B = −τ/N, τ ≪ −1, is (2.17)'s N · (2/√(π|τ|)) 2e^{|τ|} as N → ∞ (line 473:
    the second case "recovers the B > 0 limit of the exponential regime"); §2.4.1's glassy
    field gives exponentially many critical points at N = 100, the polynomial one O(N)."""
    for tau in (-3.0, -8.0):
        n = 10 ** 6
        band = n * 2 / math.sqrt(math.pi * abs(tau)) * 2 * math.exp(abs(tau))
        assert expected_critical_points(-tau / n, n) == pytest.approx(band, rel=1e-5)
    n = 100
    glassy = expected_critical_points(field_order_parameter(regime_field("glassy", n), 3), n)
    critical = expected_critical_points(field_order_parameter(regime_field("critical", n), 3),
                                        n)
    assert glassy > 1e15 and critical < 10 * n
    with pytest.raises(UserError, match="0 < B < 1"):
        expected_critical_points(-0.1, n)
