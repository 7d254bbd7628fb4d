"""The basin width of an interpolation curve (Jastrzebski et al. 2018, Fig. 4) at its edge: a
loss that touches the level without exceeding it stays inside the basin."""
import pytest

from sgdlab.measure.interpolation import basin_width


def test_a_loss_at_the_level_does_not_end_the_basin():
    # level 0 + 1 = 1; at α = 1 the loss touches it and falls back, at α = 3 it exceeds it:
    # the crossing between (2, 0.5) and (3, 2) is at 2 + (1 − 0.5)/(2 − 0.5) = 7/3
    w = basin_width([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 0.5, 2.0], 0.0, 1.0, side="right")
    assert w.hi == pytest.approx(7 / 3, rel=1e-15) and w.closed
    assert (w.lo, w.level) == (0.0, 1.0)


def test_a_center_off_the_grid_is_refused():
    # 0.01 is 2% of the step of 0.5 from α = 0: no grid point, though the nearest is close
    with pytest.raises(ValueError, match="center=0.01 is not one of the alphas"):
        basin_width([0.0, 0.5, 1.0], [0.0, 1.0, 2.0], 0.01, 0.5)
