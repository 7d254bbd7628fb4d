"""What the analyses' figures plot (the data behind the lines and markers, not pixels)."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from sgdlab.experiments.procedures.common import continuation_offsets, schedule_lr
from sgdlab.experiments.procedures.generic import compare_groups
from sgdlab.testing import stored_run


def run(label, seed=0, params=None, metrics=None, **parts):
    """A stored run; the params and the series may be given by position here."""
    return stored_run(label, seed, params=params, metrics=metrics, **parts)


def _epoch_samples(per_step, spe, epochs):
    """The loop's per-epoch records of a schedule: at each epoch end the lr the next step uses."""
    return {"lr": [(spe * e, per_step[spe * e]) for e in range(1, epochs + 1)],
            "epoch": [(spe * e, float(e)) for e in range(1, epochs + 1)]}


# xing-schedules at smoke scale: 4 steps per epoch, 4 epochs
STEP = ({"schedule": {"name": "step", "milestones": [2, 3], "gamma": 0.1},
         "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 4},
        [0.1] * 8 + [0.01] * 4 + [0.001] * 5)
# triangular: 0.01 -> 0.1 over 4 steps and back, 0.0225 per step
CLR = ({"schedule": {"name": "triangular", "max_factor": 10.0, "step_size_epochs": 1},
        "optimizer": {"name": "sgd", "lr": 0.01}, "epochs": 4},
       [0.01 + 0.0225 * (4 - abs(t % 8 - 4)) for t in range(17)])


@pytest.mark.parametrize("params,per_step", [STEP, CLR])
def test_a_deterministic_schedule_is_evaluated_at_every_step(params, per_step):
    runs = [run("a", s, params, _epoch_samples(per_step, 4, 4)) for s in (0, 1)]
    steps, lr = schedule_lr(runs)
    assert steps == list(range(17))
    assert lr == pytest.approx(per_step, rel=1e-12)


def test_a_schedule_that_misses_the_recorded_samples_is_not_evaluated():
    params, per_step = STEP
    bad = _epoch_samples(per_step, 4, 4)
    bad["lr"][1] = (8, 0.05)                     # not what the step schedule gives at step 8
    assert schedule_lr([run("a", 0, params, bad)]) is None
    rnd = {**params, "schedule": {"name": "random"}}
    assert schedule_lr([run("a", 0, rnd, _epoch_samples(per_step, 4, 4))]) is None
    assert schedule_lr([run("a", 0, {k: v for k, v in params.items() if k != "schedule"},
                            _epoch_samples(per_step, 4, 4))]) is None


def test_the_lr_curve_of_compare_groups_is_the_schedule_per_step_drawn_as_steps():
    runs = [run(lab, s, p, _epoch_samples(ps, 4, 4))
            for lab, (p, ps) in (("step", STEP), ("clr", CLR)) for s in (0, 1)]
    # a third group whose samples no schedule explains: its samples, held between epochs
    odd = {"lr": [(4, 0.1), (8, 0.03)], "epoch": [(4, 1.0), (8, 2.0)]}
    runs.append(run("odd", 0, {"optimizer": {"lr": 0.1}}, odd))
    spec = SimpleNamespace(options={"table": [], "curves": ["lr"]},
                           paper={"figure": "Fig. 6"})
    (name, fig), = compare_groups(spec, runs).figures
    assert name == "curve_lr"
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    for label, (_, per_step) in (("step", STEP), ("clr", CLR)):
        assert list(lines[label].get_xdata()) == list(range(17))
        assert np.allclose(lines[label].get_ydata(), per_step)
    assert list(lines["odd"].get_ydata()) == [0.1, 0.03]
    assert {ln.get_drawstyle() for ln in lines.values()} == {"steps-post"}
    plt.close(fig)



def test_the_paper_analyses_mean_curves_keep_group_colours_and_draw_the_lr_schedule():
    """The epoch curves of Jastrzebski's analyses draw as compare_groups' (group_curves)."""
    from matplotlib.colors import to_hex

    from sgdlab.experiments.procedures.common import by_group
    from sgdlab.experiments.procedures.jastrzebski import epoch_curves

    params, per_step = STEP
    # a first group with no lr series: the next group keeps its own colour, not the first's
    runs = [run("no lr", 0, params, {"train_loss": [(4, 1.0)], "epoch": [(4, 1.0)]})]
    runs += [run("step", s, params, _epoch_samples(per_step, 4, 4)) for s in (0, 1)]
    spec = SimpleNamespace(options={}, paper={"author": "Jastrzebski", "year": 2017,
                                              "figure": "Fig. 1"})
    (name, fig), = epoch_curves(spec, by_group(runs), ["lr"])
    (line,) = fig.axes[0].get_lines()
    assert name == "curve_lr" and to_hex(line.get_color()) == "#ff7f0e"
    assert line.get_drawstyle() == "steps-post"
    assert list(line.get_xdata()) == pytest.approx([t / 4 for t in range(17)])
    assert list(line.get_ydata()) == pytest.approx(per_step)
    plt.close(fig)

def test_the_spin_glass_embeds_each_distinct_minimum_once_with_its_multiplicity():
    from sgdlab.experiments.procedures.landscape_runs import PSpinProcedure, pspin_analysis
    from sgdlab.landscapes.pspin import cluster_minima

    out = PSpinProcedure().run(SimpleNamespace(params={"regime": "trivial", "n": 10,
                                                       "starts": 8, "max_steps": 300,
                                                       "tol": 1e-3}, seed=0),
                               SimpleNamespace(device="cpu"))
    d = out.data
    assert len(d["embedding"]) == len(d["energies"]) == out.summary["distinct_minima"]
    assert int(sum(d["basin_sizes"])) == out.summary["starts"] == 8
    # a glassy-looking run: 3 minima reached by 5, 1 and 2 starts (the clustering's counts)
    sigma = np.repeat(np.eye(3) * np.sqrt(3.0), [5, 1, 2], axis=0)
    labels, reps = cluster_minima(torch.as_tensor(sigma))
    sizes = torch.bincount(labels, minlength=len(reps))
    assert sizes.tolist() == [5, 1, 2]
    r = run("glassy", 0, {"regime": "glassy"},
            summary={"nu": 0.05, "distinct_minima": 3, "starts": 8, "converged": 8,
                     "cosine_distance": 0.9, "energy_min": -1.5, "energy_spread": 0.1},
            data={"embedding": [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
                  "energies": [-1.5, -1.45, -1.4], "basin_sizes": sizes.tolist()})
    spec = SimpleNamespace(options={"claims": []}, paper={"figure": "Fig. 2.2"})
    (name, fig), = pspin_analysis(spec, [r]).figures
    ax = fig.axes[0]
    (pts,) = ax.collections
    assert len(pts.get_offsets()) == 3
    assert np.allclose(pts.get_sizes() ** 2 / pts.get_sizes()[1] ** 2, [5, 1, 2])
    assert sorted(t.get_text() for t in ax.texts) == ["×2", "×5"]
    assert ax.get_title().endswith("3 distinct minima from 8 starts")
    assert fig.get_suptitle().startswith("Fig. 2.2: minima of the spherical p-spin glass")
    plt.close(fig)
    # with several seeds the figure embeds the first seed's glass, and says so
    r1 = copy.deepcopy(r)
    r1.seed, r1.key = 1, "glassy-1"
    (name, fig), = pspin_analysis(spec, [r, r1]).figures
    assert fig.axes[0].get_title().startswith("glassy (ν=0.05, seed 0)")
    plt.close(fig)


def test_zhu_continuations_are_drawn_after_the_gd_run_they_start_from():
    from sgdlab.experiments.procedures.zhu import zhu_noisy_label

    acc = {"test_acc": [(0, 0.5), (2, 0.6)]}
    runs = [run("gd-start", 0, {"init_from": None}, {"test_acc": [(0, 0.1), (5, 0.5)]},
                summary={"steps": 5}),
            run("gd", 0, {"init_from": "gd-start"}, acc, summary={"steps": 2}),
            run("sgd", 0, {"init_from": "gd-start"}, acc, summary={"steps": 2}),
            run("late", 0, {"init_from": "sgd"}, acc, summary={"steps": 2})]
    groups = {r.label: [r] for r in runs}
    assert continuation_offsets(groups) == {"gd-start": 0, "gd": 5, "sgd": 5, "late": 7}
    spec = SimpleNamespace(options={"curves": ["test_acc"], "claims": []},
                           paper={"figure": "Fig. 5"})
    (name, fig), = zhu_noisy_label(spec, runs[:3]).figures
    ax = fig.axes[0]
    xs = {ln.get_label(): list(ln.get_xdata()) for ln in ax.get_lines()
          if not ln.get_label().startswith("_")}
    assert xs == {"gd-start": [0, 5], "gd": [5, 7], "sgd": [5, 7]}
    (vline,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("_")]
    assert list(vline.get_xdata()) == [5, 5]                 # where the continuations start
    plt.close(fig)


def test_an_instrument_series_is_a_curve_of_its_own_figure_with_a_readable_label():
    # Zhu Figs. 5(b) and 7(c): the sharpness instrument's "sharpness/expected" over iterations
    from sgdlab.experiments.procedures.zhu import zhu_noisy_label

    sharp = {"sharpness/expected": [(0, 0.02), (100, 0.01)]}
    spec = SimpleNamespace(options={"table": [], "curves": ["sharpness/expected"],
                                    "claims": []}, paper={"figure": "Fig. 7"})
    for analysis in (compare_groups, zhu_noisy_label):
        (name, fig), = analysis(spec, [run("sgd", 0, {}, sharp, summary={"steps": 100})]).figures
        assert name == "curve_sharpness_expected"       # a "/" would make a sub-folder
        line, = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "sgd"]
        assert list(line.get_ydata()) == [0.02, 0.01]
        assert fig.axes[0].get_ylabel() == "expected sharpness E[L(θ+ν)] − L(θ)"
        plt.close(fig)
    spec.options["curve_labels"] = {"sharpness/expected": "E sharpness"}
    spec.options["curve_marks"] = [50]                  # Fig. 7's dashed line at the switch
    (_, fig), = compare_groups(spec, [run("sgd", 0, {}, sharp)]).figures
    assert fig.axes[0].get_ylabel() == "E sharpness"
    (mark,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("_")]
    assert list(mark.get_xdata()) == [50, 50]
    plt.close(fig)


def test_xing_hessian_norms_of_both_batch_norm_modes_share_one_axis():
    from sgdlab.experiments.procedures.xing import xing_hessian_norm

    ep = {"epoch": [(10, 1.0), (20, 2.0)], "test_acc": [(10, 0.5), (20, 0.6)]}
    runs = [run("sgd", s, {}, {**ep, "hess_norm_train": [(0, 9.0), (10, 4.0), (20, 5.0)],
                               "hess_norm_eval": [(0, 30.0), (10, 40.0), (20, 50.0 + s)]})
            for s in (0, 1)]
    spec = SimpleNamespace(options={"claims": []}, paper={"figure": "Fig. 3"})
    figs = dict(xing_hessian_norm(spec, runs).figures)
    assert list(figs) == ["curve_hess_norm", "curve_test_acc"]
    (ax,) = figs["curve_hess_norm"].axes
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["sgd, train-mode BN"].get_ydata()) == [9.0, 4.0, 5.0]
    assert list(lines["sgd, eval-mode BN"].get_ydata()) == [30.0, 40.0, 50.5]
    assert list(lines["sgd, eval-mode BN"].get_xdata()) == [0.0, 1.0, 2.0]     # epochs
    assert lines["sgd, eval-mode BN"].get_linestyle() == "--"
    assert ax.get_yscale() == "log"
    for f in figs.values():
        plt.close(f)


def test_a_batch_size_schedule_reads_as_words_in_the_equal_ratio_table():
    from sgdlab.experiments.procedures.jastrzebski import batch_size_text, equal_ratio

    cyc = {"kind": "cyclic", "low": 128, "high": 640, "period": 10, "shape": "triangular",
           "start": "high"}
    assert batch_size_text(cyc) == "cyclic 128–640, triangular, period 10 epochs, from 640"
    assert batch_size_text(128) == "128" and batch_size_text("full") == "full"
    acc = {"test_acc": [(0, 0.1), (10, 0.5)]}
    runs = [run("cbs", 0, {"optimizer": {"lr": 0.01}, "batch_size": cyc}, acc),
            run("const", 0, {"optimizer": {"lr": 0.01}, "batch_size": 640}, acc)]
    spec = SimpleNamespace(options={"curves": []}, paper={"figure": "Fig. 1"})
    t = equal_ratio(spec, runs).table("equal_ratio")
    assert t.column("batch size") == ["cyclic 128–640, triangular, period 10 epochs, from 640",
                                      "640"]


def test_a_mean_curve_in_epochs_goes_on_past_a_first_seed_that_stopped_early():
    """The seeds share the map from steps to epochs, but a seed that diverged holds it only
    up to its stop: the others' curve after it is drawn at their own epochs, not piled onto
    the first seed's last one."""
    def r(seed, last):
        steps = range(10, last + 1, 10)
        return run("sgd", seed, {}, {"train_loss": [(s, 1.0 / s) for s in steps],
                                     "epoch": [(s, s / 10) for s in steps]},
                   summary={"steps": last})
    spec = SimpleNamespace(options={"table": [], "curves": ["train_loss"], "curve_x": "epoch"},
                           paper={"figure": "Fig. 0"})
    (_, fig), = compare_groups(spec, [r(0, 20), r(1, 40)]).figures
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [1.0, 2.0, 3.0, 4.0]
    plt.close(fig)


def test_the_catalogue_curves_and_bars_name_the_paper_of_the_figure_they_reproduce():
    """"Fig. 4: test accuracy" left the reader to guess whose Fig. 4 it is."""
    from sgdlab.experiments.procedures.common import continuation_curves, by_group

    runs = [run("constant", 0, {}, {"test_acc": [(1, 0.5), (2, 0.6)]},
                summary={"test_acc": 0.6})]
    spec = SimpleNamespace(paper={"author": "Musso", "year": 2020, "figure": "Fig. 4"},
                           options={"table": [], "curves": ["test_acc"], "bars": [
                               {"name": "acc", "metrics": [["test_acc", "final"]]}]})
    titles = [fig.axes[0].get_title() for _, fig in compare_groups(spec, runs).figures]
    assert titles == ["Musso 2020, Fig. 4: test accuracy\nseed 0",
                      "Musso 2020, Fig. 4: acc\nseed 0"]
    (_, fig), = continuation_curves(spec, by_group(runs), ["test_acc"], xlabel="step",
                                    marks=[])
    assert fig.axes[0].get_title() == "Musso 2020, Fig. 4: test accuracy\nseed 0"
    plt.close("all")


def test_compare_groups_bars_are_the_seed_means_with_their_std_as_error_bars():
    def r(label, seed, best, final):
        return run(label, seed, {}, {"test_acc": [(1, final - 0.1), (2, best), (3, final)],
                                     "train_acc": [(3, 1.0)]}, summary={"test_acc": final})
    runs = [r("constant", 0, 0.96, 0.95), r("constant", 1, 0.98, 0.97),
            r("random", 0, 0.97, 0.96), r("random", 1, 0.97, 0.96)]
    spec = SimpleNamespace(paper={"figure": "Fig. 4"}, options={
        "table": [], "curves": [],
        "derived": [{"name": "best_test_acc", "metric": "test_acc", "reduce": "max"}],
        "bars": [{"name": "acc", "zoom": True, "ylabel": "accuracy",
                  "metrics": [["test_acc", "final"], ["best_test_acc", "best"]]}]})
    (name, fig), = compare_groups(spec, runs).figures
    assert name == "bars_acc"
    ax = fig.axes[0]
    heights = [round(p.get_height(), 12) for p in ax.patches]
    assert heights == [0.96, 0.96, 0.97, 0.97]        # final: constant, random; best: both
    # the error bars: constant's std over its two seeds sqrt(2)·0.01, random's 0
    segs = [c for c in ax.collections if c.get_segments()]
    spans = sorted(round(abs(s[1][1] - s[0][1]) / 2, 12) for c in segs for s in c.get_segments())
    assert spans == pytest.approx([0, 0, np.sqrt(2) * 0.01, np.sqrt(2) * 0.01])
    assert ax.get_ylim()[0] > 0.9                      # zoomed on the bars' tops
    assert [t.get_text() for t in ax.get_xticklabels()] == ["constant", "random"]
    assert ax.get_title() == "Fig. 4: acc\nmean ± std over 2 seeds"
    plt.close(fig)
    # the curves say what they plot, by name, and over which seeds
    spec.options.update(curves=["test_acc"], bars=[])
    (_, fig), = compare_groups(spec, runs).figures
    assert fig.axes[0].get_title() == "Fig. 4: test accuracy\nmean ± std over 2 seeds"
    assert fig.axes[0].get_ylabel() == "test accuracy"
    plt.close(fig)
    (_, fig), = compare_groups(spec, runs[::2]).figures
    assert fig.axes[0].get_title() == "Fig. 4: test accuracy\nseed 0"
    plt.close(fig)
    # a group has one colour in the curves and the bars, also when an earlier group has no
    # curve of a metric (the colour cycle would hand its colour on)
    from matplotlib.colors import to_hex

    spec.options.update(curves=["train_acc"], bars=[{"name": "acc", "ylabel": "accuracy",
                                                     "metrics": [["test_acc", "final"]]}])
    runs[0].metrics.pop("train_acc")
    runs[1].metrics.pop("train_acc")
    (_, curve), (_, bar) = compare_groups(spec, runs).figures
    (line,) = curve.axes[0].get_lines()
    assert line.get_label() == "random"
    assert [to_hex(p.get_facecolor()) for p in bar.axes[0].patches] == ["#1f77b4", "#ff7f0e"]
    assert to_hex(line.get_color()) == "#ff7f0e"
    plt.close("all")
    with pytest.raises(Exception, match="options.bars"):
        compare_groups(SimpleNamespace(paper={"figure": "F"},
                                       options={"table": [], "curves": [], "bars": [{}]}), runs)


def _error_bar_half_lengths(fig) -> list[float]:
    """Half the length of each bar's error bar; NaN where none is drawn."""
    from matplotlib.container import BarContainer

    (container,) = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    (segments,) = [c.get_segments() for c in container.errorbar.lines[2]]
    return [float(abs(s[1][1] - s[0][1]) / 2) if len(s) else math.nan for s in segments]


def _gap_run(label, seed, train, test):
    """A run whose summary holds its train and test accuracy and their gap."""
    return run(label, seed, summary={"train_acc": train, "test_acc": test, "gap": train - test})


def test_a_propagated_error_bar_combines_the_stds_of_what_the_difference_is_made_of():
    """Musso (2020) Fig. 4 right: "The error bars descend from propagation of the standard
    deviations of the original data": the train - test gap's bar is √(std_train² + std_test²),
    not the std of the seeds' gaps (here 0: every seed's gap is the same)."""
    from sgdlab.experiments.procedures.generic import _bar_figure

    train, test = [0.9, 0.95, 1.0], [0.8, 0.85, 0.9]
    runs = [_gap_run("a", s, tr, te) for s, (tr, te) in enumerate(zip(train, test))]
    spec = SimpleNamespace(paper={"figure": "Fig. 4"})
    bar = {"name": "gap", "metrics": [["gap", "train - test"]]}
    assert _error_bar_half_lengths(_bar_figure(spec, {"a": runs}, bar)) == pytest.approx([0])
    bar["propagate"] = {"gap": ["train_acc", "test_acc"]}
    want = float(np.hypot(np.std(train, ddof=1), np.std(test, ddof=1)))
    fig = _bar_figure(spec, {"a": runs}, bar)
    assert _error_bar_half_lengths(fig) == pytest.approx([want])
    plt.close(fig)


def test_compare_groups_draws_its_curves_against_the_step_unless_told():
    # the runs log epochs every 10 steps: the default axis is still the optimizer step
    metrics = {"epoch": [(10, 1.0), (20, 2.0)], "train_loss": [(0, 1.0), (10, 0.5), (20, 0.25)]}
    spec = SimpleNamespace(options={"table": [], "curves": ["train_loss"]},
                           paper={"figure": "Fig. 0"})
    for curve_x, want in ((None, [0.0, 10.0, 20.0]), ("epoch", [0.0, 1.0, 2.0])):
        if curve_x is not None:
            spec.options["curve_x"] = curve_x
        (_, fig), = compare_groups(spec, [run("sgd", 0, {}, metrics)]).figures
        (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "sgd"]
        assert list(line.get_xdata()) == want, curve_x
        plt.close(fig)


def test_a_continuation_starts_after_the_longest_run_of_the_group_it_continues():
    """A seed of the source group that stopped early (diverged at step 3) does not move the
    start of the continuation: the group's training ran to step 8; a run without a
    ``steps`` summary counts its last recorded step (12 here)."""
    groups = {"gd": [run("gd", 0, {}, {"loss": [(0, 1.0), (8, 0.5)]}, summary={"steps": 8}),
                     run("gd", 1, {}, {"loss": [(0, 1.0), (3, 9.0)]}, summary={"steps": 3})],
              "sgd": [run("sgd", 0, {"init_from": "gd"}, {"loss": [(0, 0.5), (12, 0.1)]})],
              "late": [run("late", 0, {"init_from": "sgd"}, {"loss": [(0, 0.1)]})]}
    assert continuation_offsets(groups) == {"gd": 0, "sgd": 8, "late": 20}


def test_a_propagated_error_bar_needs_two_seeds_of_every_part_it_is_made_of():
    # a part over one seed has no std to propagate: the bar has no error bar (as a bar over
    # one seed), not the other part's std alone as if the first had none
    from sgdlab.experiments.procedures.generic import _bar_figure

    groups = {"a": [_gap_run("a", s, tr, te)
                    for s, (tr, te) in enumerate([(0.9, 0.8), (1.0, 0.9)])],
              "b": [_gap_run("b", 0, 0.9, 0.8)],
              "c": [_gap_run("c", 0, 0.9, 0.8), _gap_run("c", 1, 1.0, math.nan)]}
    spec = SimpleNamespace(paper={"figure": "Fig. 4"})
    bar = {"name": "gap", "metrics": [["gap", "train - test"]],
           "propagate": {"gap": ["train_acc", "test_acc"]}}
    # a: the std of (0.9, 1.0) and of (0.8, 0.9) is sqrt(2) · 0.05, so sqrt(2 · 0.005) = 0.1;
    # c's train_acc alone has a std (sqrt(2) · 0.05), its test_acc one seed
    assert _error_bar_half_lengths(_bar_figure(spec, groups, bar)) == pytest.approx(
        [0.1, math.nan, math.nan], nan_ok=True)
    plt.close("all")
