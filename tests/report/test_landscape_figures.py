"""The analytic-landscape figures label what they plot."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def test_escape_figure_names_the_success_rule_it_was_given():
    from sgdlab.report.figures.landscapes import escape_figure

    g = np.linspace(-2.0, 2.0, 5)
    gx, gy = np.meshgrid(g, g)
    traj = {"gd": np.zeros((3, 2))}
    args = (gx, gy, gx ** 2 + gy ** 2, traj, {"gd": 0.5}, [0, 10], {"gd": [1.0, 0.5]})
    # the rate is the final iterate's by default (EscapeConfig.success_rule): not "reached"
    fig = escape_figure(*args)
    assert "reached" not in fig.axes[1].get_ylabel()
    plt.close(fig)
    fig = escape_figure(*args, success_rule="w1, w2 < -0.5 at the end")
    assert fig.axes[1].get_ylabel() == "w1, w2 < -0.5 at the end (%)"
    plt.close(fig)
