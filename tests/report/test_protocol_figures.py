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
