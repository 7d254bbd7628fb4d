"""Basin width along a model interpolation (Jastrzebski et al. 2018, Fig. 4): closed forms on
parabolas, the outward sides, and open basins."""
from __future__ import annotations

import math

import pytest
import torch

from sgdlab.measure.interpolation import basin_width


def test_parabola_widths_closed_form():
    # L(α) = ½ c (α − α₀)² on a grid with α₀ on it: the level ½·rise is crossed at
    # α₀ ± √(2 rise / c); linear interpolation between grid points overestimates slightly
    # (the parabola is convex), by less than the grid step.
    a = torch.linspace(-1, 2, 3001, dtype=torch.float64)
    for c, a0 in ((4.0, 0.0), (25.0, 1.0)):
        loss = 0.5 * c * (a - a0) ** 2
        half = math.sqrt(2 * 0.5 / c)
        w = basin_width(a, loss, a0, 0.5)
        assert w.closed and w.width == pytest.approx(2 * half, abs=2e-3)
        assert (w.lo, w.hi) == (pytest.approx(a0 - half, abs=1e-3),
                                pytest.approx(a0 + half, abs=1e-3))
        left = basin_width(a, loss, a0, 0.5, side="left")
        right = basin_width(a, loss, a0, 0.5, side="right")
        assert left.hi == pytest.approx(a0, abs=1e-12) and right.lo == pytest.approx(a0, abs=1e-12)
        assert left.width == pytest.approx(half, abs=1e-3) == right.width
    # two ends on one line: the width ratio is √(c₁/c₂), the sharper end narrower
    sharp = basin_width(a, 0.5 * 25 * (a - 1) ** 2, 1.0, 0.5, side="right").width
    flat = basin_width(a, 0.5 * 4 * a ** 2, 0.0, 0.5, side="left").width
    assert flat / sharp == pytest.approx(math.sqrt(25 / 4), rel=2e-3)


def test_linear_crossing_is_exact_between_grid_points():
    # piecewise linear loss around α = 1 (L = 1): level 1.5 is crossed at α = 0.25 on the
    # segment 0 → 0.5 (L 2 → 1) and at α = 1.125 on 1 → 1.5 (L 1 → 3), exactly
    a = [0.0, 0.5, 1.0, 1.5]
    w = basin_width(a, [2.0, 1.0, 1.0, 3.0], 1.0, 0.5)
    assert w.hi == pytest.approx(1.125) and w.lo == pytest.approx(0.25)
    assert w.width == pytest.approx(0.875) and w.closed and w.level == 1.5


def test_float32_grids_find_their_ends():
    a = torch.linspace(-1.0, 2.0, 121)              # float32: α = 0 is off by ~1e-8
    w = basin_width(a, (a.double() ** 2), 0.0, 0.25, side="left")
    assert w.closed and w.width == pytest.approx(0.5, abs=1e-6)


def test_open_side_and_bad_input():
    a = [-1.0, 0.0, 1.0]
    w = basin_width(a, [0.1, 0.0, 0.2], 0.0, 0.5)
    assert not w.closed and (w.lo, w.hi) == (-1.0, 1.0)     # a lower bound only
    assert basin_width(a, [5.0, 0.0, 0.2], 0.0, 0.5, side="left").closed
    with pytest.raises(ValueError, match="not one of the alphas"):
        basin_width(a, [0, 0, 0], 0.5, 0.1)
    with pytest.raises(ValueError, match="rise"):
        basin_width(a, [0, 0, 0], 0.0, 0.0)
    with pytest.raises(ValueError, match="side"):
        basin_width(a, [0, 0, 0], 0.0, 0.1, side="up")
    with pytest.raises(ValueError, match="increasing"):
        basin_width([0.0, 1.0, 0.5], [0, 0, 0], 0.0, 0.1)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_an_overflowed_loss_ends_the_basin_at_the_last_finite_point(bad):
    # a diverged point of the curve (stored as NaN or inf) is outside the basin either way
    a = torch.linspace(-1, 1, 5, dtype=torch.float64)          # -1, -0.5, 0, 0.5, 1
    loss = torch.tensor([bad, 0.1, 0.0, 0.1, 0.2], dtype=torch.float64)
    w = basin_width(a, loss, 0.0, 0.5)
    assert (w.lo, w.hi, w.closed) == (-0.5, 1.0, False)
    w = basin_width(a, loss, 0.0, 0.5, side="left")
    assert (w.lo, w.hi, w.closed) == (-0.5, 0.0, True)
    with pytest.raises(ValueError, match="not finite"):
        basin_width(a, torch.tensor([0.0, 0.1, bad, 0.1, 0.2]), 0.0, 0.5)
