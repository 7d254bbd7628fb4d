"""The protocol figure: each quantity a run sets and holds, as steps, a run in one colour."""
import matplotlib.pyplot as plt

from sgdlab.report.figures.protocols import protocol_curves


def test_a_run_keeps_its_colour_in_a_panel_only_another_run_is_missing_from():
    a = {"lr_step": [(0, 0.05), (5, 0.05)]}
    b = {"lr_step": [(0, 0.1), (5, 0.01)], "batch_size": [(0, 32), (5, 128)]}
    fig = protocol_curves({"a": a, "b": b})
    lr_ax, b_ax = fig.axes
    colours = {ln.get_label(): ln.get_color() for ln in lr_ax.get_lines()}
    assert colours["a"] != colours["b"]
    assert [(ln.get_label(), ln.get_color()) for ln in b_ax.get_lines()] == [
        ("b", colours["b"])]
    assert {ln.get_drawstyle() for ax in fig.axes for ln in ax.get_lines()} == {"steps-post"}
    plt.close(fig)


def test_the_lr_panel_draws_the_per_step_rate_where_both_are_recorded():
    # lr_step (each step's rate, a random protocol's draws) over lr (sampled once per epoch)
    h = {"lr_step": [(0, 0.3), (1, 0.7), (2, 0.1)], "lr": [(0, 0.5), (3, 0.5)]}
    fig = protocol_curves({"a": h})
    (line,) = fig.axes[0].get_lines()
    plt.close(fig)
    assert list(line.get_xdata()) == [0, 1, 2] and list(line.get_ydata()) == [0.3, 0.7, 0.1]
    # a run that logged only lr draws it
    fig = protocol_curves({"a": {"lr": [(0, 0.5), (3, 0.25)]}})
    assert list(fig.axes[0].get_lines()[0].get_ydata()) == [0.5, 0.25]
    plt.close(fig)
