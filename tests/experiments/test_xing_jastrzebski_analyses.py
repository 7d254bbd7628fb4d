"""The Xing and Jastrzebski analyses on synthetic stored runs with known answers: what they
compute from the series and which verdicts the claims get."""
from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

from sgdlab.errors import ConfigError
from sgdlab.experiments.procedures import analysis_option_problems
from sgdlab.experiments.procedures.jastrzebski import (breakdown, curve_gap, equal_ratio,
                                                     interpolation)
from sgdlab.experiments.procedures.xing import (fifths, rise_fraction, xing_cosine_grid,
                                               xing_hessian_norm, xing_walk)
from sgdlab.testing import stored_run as run

matplotlib.use("Agg")
PAPER = {"author": "X", "figure": "Fig. 0"}



def test_rise_fraction_and_curve_gap():
    assert rise_fraction([3.0, 2.0, 1.0]) == 0.0
    assert rise_fraction([1.0, 2.0, 1.0, 2.0]) == pytest.approx(2 / 3)
    a = run("a", 0, metrics={"test_acc": [(0, 0.1), (10, 0.5), (20, 0.7)]})
    b = run("b", 0, metrics={"test_acc": [(0, 0.1), (40, 0.6), (80, 0.6)]})
    assert curve_gap(a, b, "test_acc") == pytest.approx(0.1)      # the start is not compared


def acc_run(label, seed, acc, **parts):
    """A run at η = 0.01, B = 50 whose test accuracy is 0.1 at the start, then ``acc`` at
    steps 10, 20, ..."""
    return run(label, seed, params={"optimizer": {"lr": 0.01}, "batch_size": 50},
               metrics={"test_acc": [(0, 0.1)] + [(10 * e, a) for e, a in enumerate(acc, 1)]},
               **parts)


def test_equal_ratio_rescaling_gaps_for_two_networks():
    runs = []
    for s in (0, 1):
        runs += [acc_run("a-ref", s, [0.5, 0.6]), acc_run("a-lin", s, [0.5 - 0.01 * s, 0.6]),
                 acc_run("a-sqrt", s, [0.3, 0.4]),
                 acc_run("b-ref", s, [0.5, 0.6]), acc_run("b-lin", s, [0.2, 0.2]),
                 acc_run("b-sqrt", s, [0.5, 0.7])]
    triples = [{"name": n, "reference": f"{n}-ref", "linear": f"{n}-lin", "sqrt": f"{n}-sqrt"}
               for n in ("a", "b")]
    claims = [{"less": [f"gap-linear-{n}", f"gap-sqrt-{n}"], "metric": "gap"} for n in "ab"]
    spec = SimpleNamespace(paper=PAPER, options={"rescaling": triples, "claims": claims,
                                                 "curves": []})
    res = equal_ratio(spec, runs)
    # gaps per seed: a-lin 0 and 0.005, a-sqrt 0.2; b-lin 0.35, b-sqrt 0.05
    assert [c.agrees_with_paper for c in res.conclusions] == [True, False]
    # one triple without a list keeps the unsuffixed names
    spec.options = {"rescaling": triples[0], "curves": [],
                    "claims": [{"less": ["gap-linear", "gap-sqrt"], "metric": "gap"}]}
    assert equal_ratio(spec, runs).conclusions[0].agrees_with_paper is True
    unnamed = {k: v for k, v in triples[0].items() if k != "name"}
    spec.options = {"rescaling": [unnamed], "curves": []}
    with pytest.raises(ConfigError, match=r"rescaling\[0\]"):
        equal_ratio(spec, runs)


def test_equal_ratio_table_names_the_schedule_that_moves_the_learning_rate():
    # a cyclic learning rate is not its base rate: the table says how it moves
    acc = {"test_acc": [(0, 0.1), (10, 0.5)]}
    runs = [run("clr", 0, params={"optimizer": {"lr": 0.001}, "batch_size": 128, "schedule": {
                "name": "triangular", "max_factor": 5.0, "step_size_epochs": 5}}, metrics=acc),
            run("const", 0, params={"optimizer": {"lr": 0.005}, "batch_size": 640},
                metrics=acc)]
    spec = SimpleNamespace(paper=PAPER, options={"curves": [], "pairs": [
        {"name": "p", "a": "clr", "b": "const"}]})
    rows = {r[0]: r for r in equal_ratio(spec, runs).tables[0].rows}
    assert rows["clr"][1] == "0.001 (triangular: max_factor 5.0, step_size_epochs 5)"
    assert rows["const"][1] == "0.005"

def walk_run(label, seed, cos, floor, dist, alpha=0.5):
    return run(label, seed, metrics={
        "grad_cosine": [(s, cos) for s in range(2, 41)],
        "walk_valley_loss": list(enumerate(floor)),
        "walk_valley_alpha": [(s, alpha) for s in range(len(floor))],
        "dist_from_init": [(40, dist)]})


def test_walk_claims_on_cosines_distance_and_floor():
    gd_floor = list(np.linspace(2.0, 1.0, 40))                     # monotone descent
    sgd_floor = [2.0 - 0.02 * t + (0.05 if t % 2 else 0.0) for t in range(40)]
    runs = [walk_run("gd", s, -0.9 - 0.01 * s, gd_floor, 1.0) for s in (0, 1)] + \
           [walk_run("sgd", s, -0.2 - 0.01 * s, sgd_floor, 2.0) for s in (0, 1)]
    spec = SimpleNamespace(paper=PAPER, options={
        "after_step": 20, "distance_at": 40, "references": {"-0.5": {"grad_cosine_mean": -0.5}},
        "claims": [{"less": ["gd", "-0.5"], "metric": "grad_cosine_mean"},
                   {"greater": ["sgd", "gd"], "metric": "grad_cosine_mean"},
                   {"greater": ["sgd", "gd"], "metric": "distance"},
                   {"greater": ["sgd", "gd"], "metric": "floor_rise_fraction"}]})
    res = xing_walk(spec, runs)
    assert [c.agrees_with_paper for c in res.conclusions] == [True, True, True, True]
    assert runs[0].summary["floor_rise_fraction"] == 0.0
    assert runs[2].summary["floor_rise_fraction"] == pytest.approx(20 / 39)
    assert runs[0].summary["valley_floors"] == 40
    # the walk plots draw one run per group, and say which seed it is
    (_, fig), = res.figures
    assert [ax.get_title() for ax in fig.axes[:2]] == ["gd (seed 0)", "sgd (seed 0)"]


def test_walk_barrier_fraction_covers_the_walks_updates_not_gds_first_epoch():
    """Figs. 1-2 call the 40 updates "Epoch 1" for GD and SGD alike, but full-batch GD's epoch
    in the loop is one update: the walk's barrier fraction is over every interpolated update
    (here GD crosses a barrier at update 5 of 40 and SGD at updates 0 and 3 of 40)."""
    def walk(label, crossing):
        r = walk_run(label, 0, -0.5, list(np.linspace(2.0, 1.0, 40)), 1.0)
        r.metrics["walk_barrier"] = [(t, float(t in crossing)) for t in range(40)]
        # the instrument's per-epoch rows: GD has 40 epochs of one update, SGD one of 40
        per = 1 if label == "gd" else 40
        r.metrics["walk_epoch"] = [(t, float(t // per + 1)) for t in range(per - 1, 40, per)]
        r.metrics["walk_epoch_steps"] = [(t, float(per)) for t in range(per - 1, 40, per)]
        r.metrics["walk_epoch_barriers"] = [
            (t, float(sum(t - per < c <= t for c in crossing))) for t in range(per - 1, 40, per)]
        return r

    runs = [walk("gd", {5}), walk("sgd", {0, 3})]
    xing_walk(SimpleNamespace(paper=PAPER, options={"claims": []}), runs)
    assert runs[0].summary["barrier_fraction"] == pytest.approx(1 / 40)
    assert runs[1].summary["barrier_fraction"] == pytest.approx(2 / 40)


def test_the_valley_floor_is_read_as_the_text_or_as_fig_1s_caption_defines_it():
    # every segment of both runs has its lowest loss at the later iterate (alpha = 1): no
    # valley, so the text's floor (interior minima only) does not exist and the claim on it
    # is undecidable; the caption's reading (every segment's lowest point) compares the
    # losses at the iterates, which here fall in both runs
    descent = list(np.linspace(2.0, 1.0, 40))
    sgd = [2.0 - 0.02 * t + (0.05 if t % 2 else 0.0) for t in range(40)]
    sgd_alpha = [(s, 0.5 if s % 3 == 0 else 1.0) for s in range(40)]
    claim = {"greater": ["sgd", "gd"], "metric": "floor_rise_fraction"}

    def walks():
        runs = [walk_run("gd", s, 0.9, descent, 1.0, alpha=1.0) for s in (0, 1)]
        runs += [walk_run("sgd", s, 0.5, descent, 1.0, alpha=1.0) for s in (0, 1)]
        return runs
    spec = SimpleNamespace(paper=PAPER, options={"claims": [claim]})
    runs = walks()
    res = xing_walk(spec, runs)
    assert [r.summary["valley_floors"] for r in runs] == [0, 0, 0, 0]
    assert np.isnan(runs[0].summary["floor_rise_fraction"])
    assert res.conclusions[0].agrees_with_paper is None
    spec.options["valley_floor"] = "segment"
    runs = walks()
    assert xing_walk(spec, runs).conclusions[0].agrees_with_paper is False
    assert [r.summary["valley_floors"] for r in runs] == [40, 40, 40, 40]
    # interior minima on every third segment of the oscillating run: only those are its floor
    r = walk_run("sgd", 0, 0.5, sgd, 1.0)
    r.metrics["walk_valley_alpha"] = sgd_alpha
    xing_walk(SimpleNamespace(paper=PAPER, options={}), [r])
    floors = [sgd[s] for s in range(0, 40, 3)]
    assert r.summary["valley_floors"] == len(floors) == 14
    assert r.summary["floor_rise_fraction"] == pytest.approx(
        np.mean([b > a for a, b in zip(floors, floors[1:])]))
    # another reading of the floor is refused before training and before a report
    assert analysis_option_problems("xing_walk", {"valley_floor": "lowest"}) == [
        "options.valley_floor must be one of interior, segment, got 'lowest'"]


def test_fifths_are_window_means():
    w = fifths([float(x) for x in range(10)])            # windows of 2
    assert w == {"start": 0.5, "middle": 4.5, "before_end": 6.5, "end": 8.5}
    w = fifths([3.0, 1.0, 2.0])                           # windows of 1
    assert w == {"start": 3.0, "middle": 1.0, "before_end": 1.0, "end": 2.0}
    assert np.isnan(fifths([])["start"])
    assert np.isnan(fifths([1.0])["end"]) and np.isnan(fifths([1.0])["before_end"])
    # a flat series (a net stuck at chance): windows of 1 and 3 have the same mean, exactly,
    # not 0.1 and 0.10000000000000002, which a strict claim would read as a rise
    w = fifths([0.1] * 5)
    assert w["middle"] == w["start"] == w["end"] == 0.1
    # a fifth of 7 values rounds up to windows of 2 (⌈7/5⌉), not down to 1
    w = fifths([1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0])
    assert w == {"start": 2.0, "middle": 7.0, "before_end": 8.0, "end": 12.0}


def test_a_flat_pair_is_not_a_rise():
    assert rise_fraction([1.0, 1.0, 2.0]) == 0.5
    assert rise_fraction([2.0, 2.0]) == 0.0


def test_hessian_norm_claims_can_fail_on_a_flat_or_falling_norm():
    from sgdlab.experiments.spec import load_experiment

    claims = load_experiment("xing-hessian-norm", "cpu").options["claims"][:2]
    spec = SimpleNamespace(paper=PAPER, options={"claims": claims})

    def verdicts(series):
        runs = [run("sgd", s, metrics={"hess_norm_train": [(0, 99.0)] + [
            (200 * (i + 1), x + 0.001 * s) for i, x in enumerate(series)]})
            for s in (0, 1)]
        return [c.agrees_with_paper for c in xing_hessian_norm(spec, runs).conclusions]
    # Fig. 3: falls, then rises slightly at the end (20 measurements)
    u = [5.0 - 0.3 * i for i in range(14)] + [1.2, 1.3, 1.5, 1.7, 1.9, 2.1]
    assert verdicts(u) == [True, True]
    # flat with jitter: its minimum is below its first value and below its last one, yet
    # neither trend is there: undecided (the windows tie), not agreed
    flat = [1.0 + 0.05 * (-1) ** i for i in range(20)]
    assert verdicts(flat) == [None, None]
    rising = [1.0 + 0.2 * i for i in range(20)]
    assert verdicts(rising) == [False, True]
    falling = [5.0 - 0.2 * i for i in range(20)]          # no rise at the end
    assert verdicts(falling) == [True, False]


@pytest.mark.parametrize("which, sym, axis", [
    (None, "‖H‖", "Hessian spectral norm ‖H‖"),
    ("magnitude", "‖H‖", "Hessian spectral norm ‖H‖"),
    ("largest", "λ_max", "Hessian largest eigenvalue λ_max")])
def test_hessian_norm_names_the_eigenvalue_the_runs_logged(which, sym, axis):
    # under --reading hessian-eig=largest the table and figure had said ‖H‖ and "spectral
    # norm" over the λ_max values the dynamics instrument logs under hess_norm_*
    dyn = {"name": "dynamics", "every": 1, **({"hessian_which": which} if which else {})}
    runs = [run("sgd", s, params={"measure": [{"name": "walk"}, dyn]},
                metrics={"hess_norm_train": [(0, 9.0), (10, 2.0), (20, 1.5), (30, 1.7)]})
            for s in (0, 1)]
    out = xing_hessian_norm(SimpleNamespace(paper=PAPER, options={}), runs)
    (table,) = out.tables
    heads = [c for c in table.columns if "first fifth (train BN)" in c]
    assert heads and all(c.startswith(sym + " first fifth") for c in heads), table.columns
    fig = dict(out.figures)["curve_hess_norm"]
    assert fig.axes[0].get_ylabel() == axis
    assert fig.axes[0].get_title().startswith(f"X, Fig. 0: {sym},")   # whose Fig. 0
    import matplotlib.pyplot as plt

    plt.close(fig)


def cosine_run(label, lr, b, cos, seed):
    """A cosine-grid run at rate ``lr`` and batch ``b`` whose consecutive-gradient cosine is
    ``cos`` throughout and whose distance from its start is 10 / b."""
    return run(label, seed, params={"optimizer": {"lr": lr}, "batch_size": b},
               metrics={"grad_cosine": [(s, cos) for s in range(1, 50)],
                        "dist_from_init": [(49, 10.0 / b)]})


def test_cosine_grid_batch_trend_and_learning_rate_equivalence():
    runs = []
    for seed, jitter in ((0, 0.0), (1, 0.004)):
        runs += [cosine_run(f"B{b}", 0.1, b, -0.1 * np.log2(b / 25) + jitter, seed)
                 for b in (25, 50, 100, 200)]
        runs += [cosine_run(f"lr{lr}", lr, 100, -0.2 + 0.01 * np.log2(lr / 0.1) + jitter, seed)
                 for lr in (0.05, 0.2)]
    spec = SimpleNamespace(paper=PAPER, options={"fixed_lr": 0.1, "fixed_batch": 100,
                                                 "after_step": 0, "lr_margin": 0.05})
    c = xing_cosine_grid(spec, runs).conclusions
    assert c[0].agrees_with_paper is True and "ρ = -1.00" in c[0].text     # cosine vs B
    assert c[1].agrees_with_paper is True                                  # distance vs B
    assert c[2].agrees_with_paper is True and "equivalent" in c[2].text    # lr: within 0.05
    assert c[3].agrees_with_paper is None                                  # descriptive


def test_cosine_grid_reads_the_batch_trend_of_section_3_2_or_of_appendix_b():
    """§3.2: "the cosine is significantly more negative for larger batch sizes" (line 107);
    Appendix B: "smaller batch size will make the angle between gradients of two consecutive
    iterations larger" (line 256), a more negative cosine for the smaller batch. The reading
    `batch-cosine` names both; the distance's trend (line 126, and line 258's "travels
    farther" for smaller batches) is the same under either."""
    from sgdlab.experiments.spec import load_experiment

    runs = [cosine_run(f"B{b}", 0.1, b, -0.1 * np.log2(b / 25) + 0.004 * seed, seed)
            for seed in (0, 1) for b in (25, 50, 100, 200)]
    base = {"fixed_lr": 0.1, "fixed_batch": 100, "after_step": 0}
    for options, cosine in (({}, True), ({"batch_cosine_trend": "negative"}, True),
                            ({"batch_cosine_trend": "positive"}, False)):
        spec = SimpleNamespace(paper=PAPER, options={**base, **options})
        c = xing_cosine_grid(spec, runs).conclusions
        assert c[0].agrees_with_paper is cosine and c[1].agrees_with_paper is True, options
        assert "rises" in c[0].claim if options.get("batch_cosine_trend") == "positive" \
            else "falls" in c[0].claim
    assert analysis_option_problems("xing_cosine_grid", {**base, "batch_cosine_trend": "up"}) \
        == ["options.batch_cosine_trend must be one of negative, positive, got 'up'"]
    for scale in ("cpu", "paper"):
        assert load_experiment("xing-cosine-grid", scale).options.get(
            "batch_cosine_trend", "negative") == "negative"
        o = load_experiment("xing-cosine-grid", scale, readings={"batch-cosine": "appendix-b"})
        assert o.options["batch_cosine_trend"] == "positive"


def breakdown_run(n, beta, seed, best, status="finished"):
    """A β-scaled run (η = 0.1β, S = 50β) on n training examples whose test accuracy reaches
    ``best`` at its last evaluation."""
    return run(f"beta{beta}|n_train={n}", seed, status=status,
               params={"optimizer": {"lr": 0.1 * beta}, "batch_size": 50 * beta,
                       "dataset": {"n_train": n}},
               metrics={"test_acc": [(0, 0.1), (10, best - 0.05), (20, best)]})


def breakdown_runs(best_800_beta2: float, diverged_800_beta16: tuple[int, ...] = ()):
    """Seeds 0-2 (accuracies shifted by 0, +0.001, −0.001) of β = 1, 2, 16 on 4,000 examples
    (best 0.95, 0.951, 0.90) and on 800 (best 0.90, ``best_800_beta2``, 0.70; the seeds in
    ``diverged_800_beta16`` diverge at β = 16)."""
    r = breakdown_run
    runs = []
    for seed, e in ((0, 0.0), (1, 0.001), (2, -0.001)):
        status = "diverged" if seed in diverged_800_beta16 else "finished"
        runs += [r(4000, 1, seed, 0.95 + e), r(4000, 2, seed, 0.951 + e),
                 r(4000, 16, seed, 0.90 + e),
                 r(800, 1, seed, 0.90 + e), r(800, 2, seed, best_800_beta2 + e),
                 r(800, 16, seed, 0.70 + e, status=status)]
    return runs


def test_breakdown_equivalence_departure_and_dataset_size():
    runs = breakdown_runs(0.90, diverged_800_beta16=(0,))
    spec = SimpleNamespace(paper=PAPER, options={"metric": "test_acc", "margin": 0.01})
    c = breakdown(spec, runs).conclusions
    assert len(c) == 10
    assert c[0].agrees_with_paper is True and "equivalent" in c[0].text   # n=4000, β=2
    assert c[1].agrees_with_paper is True and "curves" in c[1].text       # its curve too
    assert c[2].agrees_with_paper is True and "not equivalent" in c[2].text  # β=16 departs
    assert c[3].agrees_with_paper is True and "curves of β = 16" in c[3].text  # its curve too
    assert c[4].agrees_with_paper is True                                  # n=800, β=2
    assert c[5].agrees_with_paper is True and "curves" in c[5].text
    assert c[6].agrees_with_paper is True and "diverged" in c[6].text
    assert c[7].agrees_with_paper is True and "diverged" in c[7].text     # a curve stops
    assert c[8].agrees_with_paper is True                                  # 0.2 > 0.05
    # the curves of the largest β: 800 images' gap to β = 1 (0.2) above 4,000 images' (0.05)
    assert c[9].agrees_with_paper is True and "curves of the largest β" in c[9].text
    assert c[9].evidence == pytest.approx({"800 examples": 0.2, "4000 examples": 0.05})


def test_breakdown_within_limit_reading_scores_the_small_beta_at_the_largest_size_only():
    """Line 219's "up to a certain limit" names no β: under ``within-limit=largest-size``
    β = 2 is held to β = 1 on the largest training set only, and on the smaller one (where
    the breakdown is "magnified", line 215) its numbers are described, not scored."""
    runs = breakdown_runs(0.80)       # β = 2 already departs on 800 images
    small = ("multiplying η and S by a small β keeps the final performance",
             "multiplying η and S by a small β keeps the learning dynamics")

    def small_beta(within):
        options = {"metric": "test_acc", "margin": 0.01} | (
            {"within_limit": within} if within else {})
        c = breakdown(SimpleNamespace(paper=PAPER, options=options), runs).conclusions
        assert len(c) == 10
        # per size: β = 2's best accuracy and curves, then β = 16's; 4,000 images first
        return [(c[i].claim, c[i].agrees_with_paper) for i in (0, 1, 4, 5)], c

    every, c = small_beta(None)
    assert small_beta("every-size")[0] == every
    assert every == [(small[0], True), (small[1], True), (small[0], False), (small[1], False)]
    scored, c = small_beta("largest-size")
    assert scored == [(small[0], True), (small[1], True), (None, None), (None, None)]
    assert all("not a claim under within-limit=largest-size" in c[i].text for i in (4, 5))
    assert "0.8" in c[4].text and "β = 2 vs β = 1" in c[5].text     # the numbers stay
    assert analysis_option_problems("jastrzebski_breakdown", {"within_limit": "smallest"}) == [
        "options.within_limit must be one of every-size, largest-size, got 'smallest'"]


def test_breakdown_counts_a_diverged_seed_at_the_largest_beta_as_the_breakdown():
    """Footnote 10 marks with * a β at which "at least one seed diverged": the scaling broke
    down there even when the seeds' best accuracies before diverging match β = 1's."""
    def r(beta, seed, best, status="finished"):
        return breakdown_run(800, beta, seed, best, status)

    def verdict(diverged_at_1: bool):
        runs = []
        for seed, e in ((0, 0.0), (1, 0.001), (2, -0.001)):
            runs += [r(1, seed, 0.90 + e,
                       status="diverged" if diverged_at_1 and seed == 1 else "finished"),
                     r(2, seed, 0.90 + e),
                     r(16, seed, 0.90 + e, status="diverged" if seed == 0 else "finished")]
        spec = SimpleNamespace(paper=PAPER, options={"metric": "test_acc", "margin": 0.01})
        c, = [x for x in breakdown(spec, runs).conclusions if "breaks down" in (x.claim or "")]
        return c
    c = verdict(False)
    assert "equivalent" in c.text and "1 seed(s) diverged at β = 16" in c.text
    assert c.agrees_with_paper is True
    # β = 1 diverged as often: no departure from it, the best accuracies decide (equivalent)
    c = verdict(True)
    assert "(and 1 at β = 1)" in c.text and c.agrees_with_paper is False


def test_interpolation_outward_basin_widths():
    a = np.linspace(-1, 2, 301)

    def interp(label, seed, c_a, c_b):
        # two parabolic basins, curvature c_a at α = 0 and c_b at α = 1, a hump between them
        loss = np.where(a < 0.5, 0.5 * c_a * a ** 2, 0.5 * c_b * (a - 1) ** 2)
        return run(label, seed, params={"between": ["A", "B"]},
                   data={"alphas": a.tolist(), "train_loss": loss.tolist(),
                         "train_acc": [1.0] * len(a), "test_loss": [], "test_acc": [],
                         "bn_stats": "none"},
                   summary={"distance": 2.0})
    runs = [interp("different", s, 4.0, 25.0) for s in (0, 1)] + \
           [interp("equal", s, 4.0, 4.0 * (1 + 0.01 * s)) for s in (0, 1)]
    spec = SimpleNamespace(paper=PAPER, options={"rise": 0.5, "claims": [
        {"greater": ["different", "different"], "metric": "width_A", "metric_b": "width_B"},
        {"equivalent": ["equal", "equal"], "metric": "log_width_A", "metric_b": "log_width_B",
         "margin": 0.223}]})
    res = interpolation(spec, runs)
    assert runs[0].summary["width_A"] == pytest.approx(0.5, abs=0.01)     # √(2·0.5/4)
    assert runs[0].summary["width_B"] == pytest.approx(0.2, abs=0.01)     # √(2·0.5/25)
    assert [c.agrees_with_paper for c in res.conclusions] == [True, True]
    # one interpolation per pair is drawn: the title names its seed
    titles = [fig.axes[0].get_title() for _, fig in res.figures]
    assert titles == ["X, Fig. 0: A → B (seed 0)", "X, Fig. 0: A → B (seed 0)"]


def test_measurement_subset_with_a_seed_is_random_and_fixed():
    import torch

    from sgdlab.experiments.procedures.measures import measurement_data

    ds = SimpleNamespace(x_train=torch.arange(100.0)[:, None],
                         y_train=torch.arange(100) // 10)          # stored sorted by class
    first = measurement_data(ds, {"kind": "hessian_top", "samples": 20})
    assert first[1].unique().tolist() == [0, 1]
    a = measurement_data(ds, {"kind": "hessian_top", "samples": 20, "sample_seed": 0})
    b = measurement_data(ds, {"kind": "hessian_top", "samples": 20, "sample_seed": 0})
    assert torch.equal(a[0], b[0]) and len(a[1].unique()) > 5
    assert torch.equal(a[0][:, 0].long() // 10, a[1])              # pairs kept together


def _basins(label, seed, c_a, c_b, start=-1.0):
    # parabolic basins of curvature c_a at α = 0 and c_b at α = 1; the loss reaches the level
    # 0.5 at |α − end| = 1/√c, so c < 1 leaves that side unclosed within α ∈ [start, 2]
    a = np.linspace(start, 2, int(round((2 - start) * 100)) + 1)
    loss = np.where(a < 0.5, 0.5 * c_a * a ** 2, 0.5 * c_b * (a - 1) ** 2)
    return run(label, seed, params={"between": ["A", "B"]},
               data={"alphas": a.tolist(), "train_loss": loss.tolist(),
                     "train_acc": [1.0] * len(a), "test_loss": [], "test_acc": [],
                     "bn_stats": "none"}, summary={"distance": 2.0})


def _width_claims(group):
    return [{"greater": [group, group], "metric": "width_A", "metric_b": "width_B"},
            {"less": [group, group], "metric": "width_B", "metric_b": "width_A"},
            {"equivalent": [group, group], "metric": "log_width_A", "metric_b": "log_width_B",
             "margin": 0.223}]


def test_interpolation_with_a_diverged_end_has_no_width_there():
    # a model whose loss is not finite has no basin: its width is NaN (not a lower bound) and
    # the claims on it inconclusive; the other end is still measured
    runs = [_basins("pair", s, 4.0, 25.0) for s in (0, 1)]
    for r in runs:
        loss = r.data["train_loss"]
        i = min(range(len(loss)), key=lambda k: abs(r.data["alphas"][k] - 1.0))
        loss[i] = float("nan")
    spec = SimpleNamespace(paper=PAPER, options={"rise": 0.5, "claims": _width_claims("pair")})
    res = interpolation(spec, runs)
    assert math.isnan(runs[0].summary["width_B"]) and not runs[0].summary["width_B__censored"]
    assert runs[0].summary["width_A"] == pytest.approx(0.5, abs=0.01)
    assert [c.agrees_with_paper for c in res.conclusions] == [None, None, None]

@pytest.mark.parametrize("c_a, c_b, start, verdict, equal", [
    (0.5, 25.0, -1.0, True, False),     # A unclosed: width ≥ 1 (the α range) > B's 0.2
    (4.0, 0.5, -1.0, False, False),     # B unclosed: ≥ 1 > A's 0.5, against A wider
    (4.0, 25.0, -1.0, True, False),     # both closed: 0.5 > 0.2, as before
    (0.5, 4.0, -0.3, None, None),       # A unclosed at ≥ 0.3 < B's 0.5: settles nothing
    (0.5, 0.5, -1.0, None, None),       # both unclosed: two lower bounds
])
def test_interpolation_width_claims_read_an_unclosed_basin_as_a_lower_bound(c_a, c_b, start,
                                                                             verdict, equal):
    runs = [_basins("pair", s, c_a, c_b, start) for s in (0, 1, 2)]
    spec = SimpleNamespace(paper=PAPER, options={"rise": 0.5, "claims": _width_claims("pair")})
    res = interpolation(spec, runs)
    greater, less, equivalent = res.conclusions
    assert greater.agrees_with_paper is verdict and less.agrees_with_paper is verdict
    # equal widths: a bound can refute them (≥ 1 against 0.2), never confirm them
    assert equivalent.agrees_with_paper is equal
    # a width on the unclosed side is the extent of the α range there, printed as a bound
    if c_a < 1:
        assert runs[0].summary["width_A"] == pytest.approx(-start)
        assert f"(≥ {-start:g})" in greater.text
    if c_b < 1:
        assert runs[0].summary["width_B"] == pytest.approx(1.0)
    if c_a < 1 or c_b < 1:
        assert "lower bound" in equivalent.text and "≥" in equivalent.text
        if verdict is not None:
            assert "already settles" in greater.text and "already settles" in equivalent.text
    else:
        assert "≥" not in greater.text + equivalent.text


def test_interpolation_width_claim_with_one_seed_unclosed_uses_the_mean_of_the_bounds():
    # seed 0's A basin does not close (≥ 1), seeds 1-2 close at 0.5: the mean width at A is at
    # least (1 + 0.5 + 0.5)/3 ≈ 0.67, above B's 0.2 by more than the seeds' spread
    runs = [_basins("pair", 0, 0.5, 25.0)] + [_basins("pair", s, 4.0, 25.0) for s in (1, 2)]
    spec = SimpleNamespace(paper=PAPER, options={"rise": 0.5, "claims": _width_claims("pair")})
    greater = interpolation(spec, runs).conclusions[0]
    assert greater.agrees_with_paper is True and "(≥ 0.66" in greater.text
    # against a B that closes wider than that mean bound, nothing is settled
    runs = [_basins("pair", 0, 0.5, 1.5)] + [_basins("pair", s, 4.0, 1.5) for s in (1, 2)]
    assert interpolation(spec, runs).conclusions[0].agrees_with_paper is None


# --- the catalogue entries encode what the papers say --------------------------------------
def _claims_of(name, scale):
    from sgdlab.experiments.spec import load_experiment

    return load_experiment(name, scale)


def _barrier_run(label, seed, table, rise=None):
    """A run whose walk instrument recorded ``table``: {epoch: (steps, barriers, height)};
    with ``rise`` ({epoch: r}), each barrier's segment is recorded too: iterates at losses
    0.5 and 0.4, the middle point r · 0.5 above the higher one."""
    metrics = {k: [] for k in ("walk_epoch", "walk_epoch_steps", "walk_epoch_barriers",
                               "walk_epoch_mean_height", "walk_loss_k00", "walk_loss_k01",
                               "walk_loss_k02", "walk_barrier", "walk_barrier_height",
                               "walk_height")}
    for e, (steps, barriers, height) in table.items():
        s = 1000 * e
        metrics["walk_epoch"].append((s, float(e)))
        metrics["walk_epoch_steps"].append((s, float(steps)))
        metrics["walk_epoch_barriers"].append((s, float(barriers)))
        metrics["walk_epoch_mean_height"].append((s, height * (1 + 0.01 * seed)))
        for t in range(s - barriers, s) if rise else ():
            peak = 0.5 * (1 + rise[e] * (1 + 0.01 * seed))
            for k, v in enumerate((0.5, peak, 0.4)):
                metrics[f"walk_loss_k{k:02d}"].append((t, v))
            metrics["walk_barrier"].append((t, 1.0))
            metrics["walk_barrier_height"].append((t, peak - 0.5))
            metrics["walk_height"].append((t, (0.5 + 0.4 - 2 * 0.4) / 2))
    return run(label, seed, metrics=metrics)


# Xing et al. Table 1 (VGG-11, lines 87-88) and Table 2 (VGG-11, lines 120-122)
TABLE_1_VGG = {1: 0, 10: 0, 25: 5, 100: 13}
TABLE_2_VGG = {"lr0.1": {1: 0.0625, 10: 0.0199, 25: 0.0104, 100: 0.0025},
               "lr0.05": {1: 0.0102, 10: 0.0050, 25: 0.0035, 100: 0.0011}}


def _barrier_verdicts(scale, barriers=None, heights=None, rise=None, small=None):
    """The verdicts of ``scale``'s claims on runs with Table 1's ``barriers`` at lr 0.1 and
    ``small`` ({epoch: count}, default none) at lr 0.05, Table 2's ``heights``."""
    from sgdlab.experiments.procedures.xing import xing_barriers

    spec = _claims_of("xing-barriers", scale)
    epochs = spec.options["epochs"]
    barriers = barriers or TABLE_1_VGG
    small = small or {}
    heights = heights or TABLE_2_VGG
    rise = rise or {e: 0.02 for e in epochs}
    runs = [_barrier_run(g, s, {e: (450, (barriers if g == "lr0.1" else small).get(e, 0),
                                    heights[g].get(e, heights[g][1] / e)) for e in epochs},
                         rise)
            for g in ("lr0.1", "lr0.05") for s in (0, 1)]
    spec = SimpleNamespace(paper=PAPER, options=spec.options)
    return [c.agrees_with_paper for c in xing_barriers(spec, runs).conclusions]


def test_barriers_paper_scale_tests_epoch_100():
    claims = _claims_of("xing-barriers", "paper").options["claims"]
    on = {(tuple(c[k] for k in c if k in ("less", "greater"))[0][0], c["metric"],
           c.get("metric_b")) for c in claims}
    assert ("lr0.1", "barrier_fraction_epoch100", None) in on
    assert ("lr0.05", "height_epoch100", None) in on
    # Table 2 falls at every step for both learning rates: each scale tests every step of
    # the epochs it measures, at both
    for scale in ("smoke", "cpu", "paper"):
        spec = _claims_of("xing-barriers", scale)
        epochs = spec.options["epochs"]
        on = {(c["less"][0], c["less"][1], c["metric"], c.get("metric_b"))
              for c in spec.options["claims"] if "less" in c}
        for lr in ("lr0.1", "lr0.05"):
            for a, b in zip(epochs, epochs[1:]):
                assert (lr, lr, f"height_epoch{b}", f"height_epoch{a}") in on, (scale, lr, a, b)
        for e in epochs:
            assert ("lr0.05", "lr0.1", f"height_epoch{e}", None) in on, (scale, e)


def test_barrier_claims_follow_table_1s_counts_and_table_2s_heights():
    # the paper's own VGG-11 numbers agree with every claim at paper scale (with barriers
    # rising 2% above the loss)
    assert _barrier_verdicts("paper") == [True] * 19
    # ResNet-56's 23 of 450 in epoch 100 (Table 1's largest count, line 89) passes as well
    assert all(_barrier_verdicts("paper", barriers={1: 0, 10: 0, 25: 2, 100: 23}))
    # a barrier count Table 1 does not have fails: 2 updates in epoch 1, 24 of 450 in epoch 100
    v = _barrier_verdicts("paper", barriers={1: 2, 10: 0, 25: 5, 100: 24})
    assert v[0] is False and v[13] is False and v.count(False) == 2
    # a height that does not fall from epoch 10 to 25 at lr 0.05 fails that claim only
    flat = {g: dict(h) for g, h in TABLE_2_VGG.items()}
    flat["lr0.05"][25] = 0.0060
    v = _barrier_verdicts("cpu", heights=flat)
    assert v.count(False) == 1


def test_barriers_read_an_epoch_logged_twice_from_its_complete_row():
    """An epoch cut short (max_steps) and completed on resume is logged twice by the walk
    instrument, its steps so far at the stop and all of them at its end: Tables 1-2 are of
    the whole epoch, so the analysis reads the later, complete row."""
    from sgdlab.experiments.procedures.xing import xing_barriers

    r = _barrier_run("lr0.1", 0, {1: (450, 3, 0.02)})
    for k, v in (("walk_epoch", 1.0), ("walk_epoch_steps", 200.0),
                 ("walk_epoch_barriers", 0.0), ("walk_epoch_mean_height", 0.05)):
        r.metrics[k].insert(0, (200, v))          # the partial row, logged at the stop
    res = xing_barriers(SimpleNamespace(paper=PAPER, options={"epochs": [1], "claims": []}),
                        [r])
    assert r.summary["barriers_epoch1"] == 3.0
    # the figure's title says what it shows, not only the paper's tables and the seeds
    assert "height above the valley floor per epoch" in dict(res.figures)["heights"].axes[
        0].get_title()
    assert r.summary["barrier_fraction_epoch1"] == pytest.approx(3 / 450)
    assert r.summary["height_epoch1"] == pytest.approx(0.02)


def test_barrier_claims_hold_the_smaller_learning_rate_to_the_same_bounds():
    """§6 (line 180): "if we use a small learning rate, SGD should encounter such barriers and
    likely cross them. But we found in our experiments that this was not the case." The
    lr 0.05 runs are held to Table 1's bounds, each epoch a claim, at both scales."""
    for scale, epochs in (("cpu", [1, 10, 25]), ("paper", [1, 10, 25, 100])):
        claims = _claims_of("xing-barriers", scale).options["claims"]
        on = [c["metric"] for c in claims if c.get("less", [None])[0] == "lr0.05"
              and c["metric"].startswith("barrier")]
        assert on == [f"barriers_epoch{e}" if e in (1, 10) else f"barrier_fraction_epoch{e}"
                      for e in epochs], scale
    assert all(_barrier_verdicts("cpu", small={1: 1, 25: 2}))
    v = _barrier_verdicts("cpu", small={10: 2, 25: 3})         # 2 updates; 3 of 450 pass
    assert v.count(False) == 1 and v[4] is False
    v = _barrier_verdicts("paper", small={100: 24})
    assert v.count(False) == 1 and v[14] is False


def test_barrier_height_ratios_read_the_crossed_segments_of_the_chosen_epochs():
    from sgdlab.experiments.procedures.xing import barrier_height_ratios

    r = _barrier_run("lr0.1", 0, {1: (450, 0, 0.01), 25: (450, 2, 0.01), 100: (450, 1, 0.01)},
                     rise={25: 0.04, 100: 0.3})
    # a segment that crosses no barrier is not read, whatever its losses
    r.metrics["walk_loss_k00"].append((10, 9.0))
    r.metrics["walk_loss_k01"].append((10, 1.0))
    r.metrics["walk_loss_k02"].append((10, 9.0))
    r.metrics["walk_barrier"].append((10, 0.0))
    out = barrier_height_ratios(r)
    assert out["barriers_crossed"] == 3
    assert out["barrier_rise_ratio"] == pytest.approx(0.3)        # epoch 100's
    # Fig. 8's formula: (0.5 + 0.4 − 2 · 0.4) / 2 over the higher iterate's 0.5
    assert out["barrier_fig8_ratio"] == pytest.approx(0.1)
    out = barrier_height_ratios(r, [1, 10, 25])
    assert out["barriers_crossed"] == 2
    assert out["barrier_rise_ratio"] == pytest.approx(0.04)
    out = barrier_height_ratios(r, [1, 10])
    assert out["barriers_crossed"] == 0 and math.isnan(out["barrier_rise_ratio"])


def test_barrier_heights_are_tested_against_the_loss_at_paper_scale_only():
    claims = _claims_of("xing-barriers", "paper").options
    assert claims["barrier_epochs"] == [1, 10, 25]         # Fig. 8: the first 40 epochs
    rise = {e: 0.02 for e in (1, 10, 25, 100)}
    assert _barrier_verdicts("paper", rise=rise)[-1] is True
    # a barrier a fifth above the loss in epoch 25 is significant: the claim fails
    assert _barrier_verdicts("paper", rise={**rise, 25: 0.2})[-1] is False
    # one in epoch 100 lies outside Fig. 8's 40 epochs
    assert _barrier_verdicts("paper", rise={**rise, 100: 0.2})[-1] is True
    # no barrier crossed in epochs 1-25: nothing to measure, no verdict
    assert _barrier_verdicts("paper", barriers={100: 13})[-1] is None
    # smoke and cpu scale cross no barrier (docs/design/walk-and-eta-ratio.md): not tested
    for scale in ("smoke", "cpu"):
        metrics = {c["metric"] for c in _claims_of("xing-barriers", scale).options["claims"]}
        assert not metrics & {"barrier_rise_ratio", "barrier_fig8_ratio"}, scale


def test_hessian_norm_validation_accuracy_rises_then_drops():
    claims = [c for c in _claims_of("xing-hessian-norm", "cpu").options["claims"]
              if c["metric"].startswith("acc_")]
    assert [(c.get("greater") and "greater") or "less" for c in claims] == ["greater", "less"]
    spec = SimpleNamespace(paper=PAPER, options={"claims": claims})

    def verdicts(acc):
        runs = [run("sgd", s, metrics={"test_acc": [(0, 0.1)] + [
            (40 * (i + 1), x + 0.001 * s) for i, x in enumerate(acc)]}) for s in (0, 1)]
        return [c.agrees_with_paper for c in xing_hessian_norm(spec, runs).conclusions]
    # Fig. 3: rises, then drops towards the end (20 evaluations)
    assert verdicts([0.5 + 0.03 * i for i in range(16)] + [0.9, 0.88, 0.86, 0.84]) == [True,
                                                                                         True]
    assert verdicts([0.5 + 0.02 * i for i in range(20)]) == [True, False]     # no drop
    assert verdicts([0.9 - 0.02 * i for i in range(20)]) == [False, True]     # no rise


def test_isotropic_noise_claims_cover_both_factors_sgd_and_gds_cosine():
    spec = _claims_of("xing-isotropic-noise", "cpu")
    on = {(c.get("greater") or c.get("less"))[0] + " " + (c.get("greater") or c.get("less"))[1]
          + " " + c["metric"] for c in spec.options["claims"]}
    for g in ("gd-iso-0.05", "gd-iso-0.1"):
        for what in (f"{g} gd distance", f"{g} sgd distance", f"{g} gd norm",
                     f"{g} gd train_loss", f"{g} gd test_acc"):
            assert what in on, what
    assert "gd cosine −0.9 cosine_1500" in on
    # the cosines that claim reads lie in the first 1,500 updates at each scale
    for scale, every in (("cpu", 25), ("paper", 100)):
        s = _claims_of("xing-isotropic-noise", scale)
        d = {x["name"]: x for x in s.options["derived"]}["cosine_1500"]
        assert d["reduce"] == "mean_first_k" and d["k"] * every <= 1500
        assert s.base["measure"][0]["every"] == every
    # paper scale: batch norm's statistics from the training data, as the default reading;
    # the other reading puts the running statistics back
    from sgdlab.experiments.spec import load_experiment

    def bn(readings=None):
        runs = load_experiment("xing-isotropic-noise", "paper", readings=readings).expand(
            data_dir="/d")
        return {r.label.split("|")[0]: r.params["optimizer"].get("variance_bn") for r in runs}
    assert bn() == {"gd": None, "gd-iso-0.05": "data", "gd-iso-0.1": "data", "sgd": None}
    assert bn({"max-variance-bn": "running"})["gd-iso-0.1"] == "running"


def test_isotropic_cosine_reduce_takes_the_first_records():
    from sgdlab.experiments.procedures.generic import add_derived

    r = run("gd", 0, metrics={"grad_cosine": [(25 * i, -1.0 if i <= 2 else 1.0)
                                              for i in range(1, 5)]})
    add_derived([r], [{"name": "c", "metric": "grad_cosine", "reduce": "mean_first_k", "k": 2}])
    assert r.summary["c"] == -1.0


def test_walk_gd_cosine_ends_near_minus_one_and_its_floor_barely_rises():
    spec = _claims_of("xing-walk", "cpu")
    o = spec.options
    first = o["claims"][0]
    assert first["less"][0] == "gd" and first["metric"] == "grad_cosine_final"
    assert o["references"][first["less"][1]]["grad_cosine_final"] <= -0.9
    absolute = [c for c in o["claims"] if c.get("less", [None])[0] == "gd"
                and c["metric"] == "floor_rise_fraction"]
    assert len(absolute) == 1
    assert o["references"][absolute[0]["less"][1]]["floor_rise_fraction"] <= 0.1
    gd_floor = list(np.linspace(2.0, 1.0, 40))
    sgd_floor = [2.0 - 0.02 * t + (0.05 if t % 2 else 0.0) for t in range(40)]

    def verdicts(gd_cos):
        runs = [walk_run("gd", s, gd_cos - 0.01 * s, gd_floor, 1.0) for s in (0, 1)] + \
               [walk_run("sgd", s, -0.2 - 0.01 * s, sgd_floor, 2.0) for s in (0, 1)]
        return [c.agrees_with_paper for c in xing_walk(SimpleNamespace(paper=PAPER, options=o),
                                                        runs).conclusions]
    assert verdicts(-0.95) == [True] * 6
    # below −0.5 but not close to −1: the first claim fails, the rest stand
    assert verdicts(-0.6) == [False, True, True, True, True, True]


def test_walk_gd_segments_after_iteration_15_have_a_minimum_in_between():
    """Line 81: after iteration 15 GD's interpolation between consecutive iterates "appears to
    be a quadratic-like structure with a minimum in between". The share of GD's segments from
    update 15 on whose lowest loss lies strictly inside (0, 1), whatever the floor's reading,
    must exceed the entry's threshold (a half); the segments before update 15 do not count."""
    spec = _claims_of("xing-walk", "cpu")
    o = spec.options
    assert o["valley_after"] == 15
    (claim,) = [c for c in o["claims"] if c["metric"] == "interior_min_share"]
    assert claim["greater"][0] == "gd"
    assert o["references"][claim["greater"][1]]["interior_min_share"] == 0.5

    def share(alphas, reading="interior"):
        runs = [walk_run("gd", s, -0.95, list(np.linspace(2.0, 1.0, 40)), 1.0)
                for s in (0, 1)]
        for r in runs:
            r.metrics["walk_valley_alpha"] = list(enumerate(alphas))
        res = xing_walk(SimpleNamespace(paper=PAPER, options={
            **o, "valley_floor": reading, "claims": [claim]}), runs)
        return runs[0].summary["interior_min_share"], res.conclusions[0].agrees_with_paper

    # a descent to the later iterate on every segment: no minimum in between
    assert share([1.0] * 40) == (0.0, False)
    # minima inside on 15 of the 25 segments from update 15 on, none before
    inside = [1.0] * 15 + [0.5] * 15 + [1.0] * 10
    assert share(inside) == (pytest.approx(15 / 25), True)
    assert share(inside, reading="segment") == (pytest.approx(15 / 25), True)
    # on every segment before update 15 but on 12 of the 25 after it: below the half
    assert share([0.5] * 15 + [0.0] * 13 + [0.5] * 12) == (pytest.approx(12 / 25), False)
    assert share([0.5] * 15 + [1.0] * 25) == (0.0, False)


def test_walk_gd_floor_claim_is_fewer_than_10_percent_of_rises_as_its_text_says():
    """The claim on GD's floor compares strictly with 0.1: a floor that rises in exactly one
    of ten steps disagrees, so the entry's texts say "fewer than 10%", not "at most"."""
    spec = _claims_of("xing-walk", "cpu")
    o = spec.options
    (claim,) = [c for c in o["claims"] if c.get("less", [None])[0] == "gd"
                and c["metric"] == "floor_rise_fraction"]
    gd_floor = [2.0 - 0.1 * t + (0.25 if t == 5 else 0.0) for t in range(11)]   # 1 rise of 10
    runs = [walk_run("gd", s, -0.95, gd_floor, 1.0) for s in (0, 1)]
    res = xing_walk(SimpleNamespace(paper=PAPER, options={**o, "claims": [claim]}), runs)
    assert runs[0].summary["floor_rise_fraction"] == 0.1
    assert res.conclusions[0].agrees_with_paper is False
    for text in (claim["claim"], spec.describe()["description"]):
        assert "fewer than 10%" in text and "at most 10%" not in text, text


def test_equal_ratio_pairs_are_held_to_their_curves_not_their_means():
    spec = _claims_of("jastrzebski-equal-ratio", "cpu")
    o = spec.options
    pairs = {p["name"]: (p["a"], p["b"]) for p in o["pairs"]}
    assert pairs == {"cyclic": ("cbs", "clr"),
                     "constant": ("const-lr0.001-B128", "const-lr0.005-B640")}
    assert not any("equivalent" in c and c["metric"] == "curve_mean" for c in o["claims"])

    def curve(label, seed, acc):
        return acc_run(label, seed, acc, summary={"train_acc": 0.9})
    rising = [0.80 + 0.01 * e for e in range(10)]
    runs = []
    for s in (0, 1):
        j = 0.001 * s
        runs += [curve("cbs", s, [a + j for a in rising]),
                 # the same mean over the curve, crossing it: far apart epoch by epoch
                 curve("clr", s, [a + j for a in reversed(rising)]),
                 curve("const-lr0.001-B128", s, [a + j for a in rising]),
                 curve("const-lr0.005-B640", s, [a + j + 0.002 for a in rising])]
        runs += [curve(g, s, rising) for g in ("small-lr0.01-B50", "linear-lr0.04-B200")]
        runs += [curve("sqrt-lr0.02-B200", s, [a - 0.05 for a in rising])]
    res = equal_ratio(SimpleNamespace(paper=PAPER, options={**o, "curves": []}), runs)
    assert [c.agrees_with_paper for c in res.conclusions] == [False, True, True]


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_equal_ratio_curves_of_networks_that_never_trained_are_no_verdict(scale):
    """Two networks stuck at chance have the same flat validation curve: a gap of 0, which
    "matches" within one point. Every claim on the gaps is inconclusive and says that the
    networks did not train, naming the run groups behind the gap; trained ones get a verdict."""
    spec = _claims_of("jastrzebski-equal-ratio", scale)
    o = {**spec.options, "curves": []}
    labels = [r["label"] for r in spec.runs]

    def runs(acc, train_acc, jitter=0.0):
        return [run(g, s, params={"optimizer": {"lr": 0.01}, "batch_size": 50},
                    metrics={"test_acc": [(0, 0.1)] + [(10 * e, a + jitter * s) for e, a
                                                       in enumerate(acc(g), 1)]},
                    summary={"train_acc": train_acc(g)})
                for g in labels for s in (0, 1)]

    def verdicts(rs):
        return equal_ratio(SimpleNamespace(paper=PAPER, options=o), rs).conclusions

    # every seed flat at 10%: no spread, so without the check each "match" would agree
    at_chance = verdicts(runs(lambda g: [0.1] * 5, lambda g: 0.1))
    assert len(at_chance) == len(o["claims"]) > 2
    assert all(c.agrees_with_paper is None and "is not above 0.5" in c.text
               and "did not train" in c.text for c in at_chance)
    assert "train_acc of cbs = 0.1 is not above 0.5; train_acc of clr = 0.1" in at_chance[0].text

    def rising(g):       # the square-root rescaling lies 5 points below the others
        return [0.8 + 0.01 * e - (0.05 if "sqrt" in g else 0.0) for e in range(5)]
    trained = verdicts(runs(rising, lambda g: 0.9, jitter=0.001))
    assert [c.agrees_with_paper for c in trained] == [True] * len(trained)
    assert not any("did not train" in c.text for c in trained)
    # the precondition reads the two groups a gap compares, not the others: the cyclic
    # learning rate at chance leaves the cyclic pair untestable and nothing else
    partly = verdicts(runs(rising, lambda g: 0.1 if g == "clr" else 0.9, jitter=0.001))
    assert [c.agrees_with_paper for c in partly] == [None] + [True] * (len(partly) - 1)
    assert "train_acc of clr = 0.1 is not above 0.5" in partly[0].text
    assert "train_acc of cbs" not in partly[0].text


def _beta_run(beta, seed, curve, status="finished"):
    """A breakdown run of β on 800 examples whose test accuracy follows ``curve``."""
    return run(f"beta{beta}|n_train=800", seed, status=status,
               params={"optimizer": {"lr": 0.1 * beta}, "batch_size": 50 * beta,
                       "dataset": {"n_train": 800}},
               metrics={"test_acc": [(0, 0.1)] + [(10 * (i + 1), x)
                                                  for i, x in enumerate(curve)]})


def test_breakdown_checks_the_curves_of_a_small_beta_too():
    r = _beta_run
    up = [0.5, 0.6, 0.7, 0.8, 0.9]
    spec = SimpleNamespace(paper=PAPER, options={"metric": "test_acc", "margin": 0.01})

    def gap_verdict(beta2):
        runs = []
        for s in (0, 1, 2):
            runs += [r(1, s, up), r(2, s, beta2), r(16, s, [0.2] * 5)]
        c = [x for x in breakdown(spec, runs).conclusions
             if x.claim == "multiplying η and S by a small β keeps the learning dynamics"]
        assert len(c) == 1
        return c[0].agrees_with_paper
    assert gap_verdict([x + 0.002 for x in up]) is True
    # the same best accuracy (0.9), reached late: final performance alike, dynamics not
    assert gap_verdict([0.2, 0.2, 0.3, 0.5, 0.9]) is False


def test_breakdown_checks_that_the_curves_of_the_largest_beta_do_not_match():
    """Line 219: "The curves don't match when β gets too large": the learning curves of the
    largest β against β = 1's, not only its best accuracy."""
    r = _beta_run
    up = [0.5, 0.6, 0.7, 0.8, 0.9]
    spec = SimpleNamespace(paper=PAPER, options={"metric": "test_acc", "margin": 0.01})

    def verdict(big, diverged=()):
        runs = []
        for s in (0, 1, 2):
            runs += [r(1, s, up), r(2, s, up),
                     r(16, s, big[:2] if s in diverged else big,
                       status="diverged" if s in diverged else "finished")]
        c = [x for x in breakdown(spec, runs).conclusions
             if x.claim == "for a large β the learning curves depart from β = 1's"]
        assert len(c) == 1 and "curves of β = 16 and β = 1" in c[0].text
        return c[0]
    # the same best accuracy (0.9), reached late: the curves do not match
    assert verdict([0.2, 0.2, 0.3, 0.5, 0.9]).agrees_with_paper is True
    assert verdict([x + 0.002 for x in up]).agrees_with_paper is False
    # a seed that diverged stops its curve: a mismatch, whatever the others' gaps
    c = verdict([x + 0.002 for x in up], diverged=(0,))
    assert c.agrees_with_paper is True and "1 seed(s) diverged at β = 16" in c.text


def _saddle(out, _y):
    """0.5 (−3 w0² + w1²) of a bias-free linear model on the inputs I: Hessian diag(−3, 1)."""
    return 0.5 * (-3 * out[0, 0] ** 2 + out[1, 0] ** 2)


def test_hessian_top_reads_the_largest_eigenvalue_or_the_largest_magnitude():
    import torch

    from sgdlab.experiments.procedures.measures import compute_final

    model = torch.nn.Linear(2, 1, bias=False)
    x, y = torch.eye(2), torch.zeros(2)
    top = {w: compute_final({"kind": "hessian_top", "which": w}, model, _saddle, (x, y))[0]
           for w in ("largest", "magnitude")}
    assert top["largest"]["hessian_top"] == pytest.approx(1.0, rel=1e-4)
    assert top["magnitude"]["hessian_top"] == pytest.approx(3.0, rel=1e-4)
    # Jastrzebski et al.: "we computed the largest eigenvalue" (line 193), at every scale
    for scale in ("smoke", "cpu", "paper"):
        finals = _claims_of("jastrzebski-ratio-grid", scale).base["final"]
        assert [m.get("which") for m in finals if m["kind"] == "hessian_top"] == ["largest"]


def test_hessian_frobenius_reads_the_frobenius_norm_of_the_models_hessian():
    """Fig. 3's "Frobenius norm of the Hessian" (line 193) as the final measurement computes
    it from the model: √10 for the Hessian diag(−3, 1) of a tiny float64 model, where the
    squared eigenvalues, not the eigenvalues, add up (a trace would read −2)."""
    import torch

    from sgdlab.experiments.procedures.measures import compute_final

    model = torch.nn.Linear(2, 1, bias=False).double()
    x, y = torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    fro = compute_final({"kind": "hessian_frobenius", "probes": 4000}, model, _saddle,
                        (x, y))[0]["hessian_frobenius"]
    assert fro == pytest.approx(math.sqrt(10.0), rel=0.03)


def test_interpolation_paper_scale_evaluates_the_whole_training_set():
    spec = _claims_of("jastrzebski-interpolation", "paper")
    interp = [r for r in spec.runs if "between" in (r.get("params") or {})]
    assert len(interp) == 2
    assert all("samples" not in r["params"] and r["params"]["eval_batch_size"] > 0
               for r in interp)


def test_a_curve_that_stops_early_or_misses_a_value_has_no_gap():
    """A diverged run's curve stops early: over the evaluations both reached it would
    "match" the other; a missing value would shift the rest by one evaluation."""
    full = acc_run("a", 0, [0.5, 0.6, 0.7])
    assert np.isnan(curve_gap(full, acc_run("b", 0, [0.5]), "test_acc"))
    assert np.isnan(curve_gap(full, acc_run("b", 0, [0.5, float("nan"), 0.6]), "test_acc"))
    assert curve_gap(full, acc_run("b", 0, [0.5, 0.65, 0.6]), "test_acc") == pytest.approx(0.05)
    # seed 1 of b diverged after one evaluation: the gap is seed 0's, and the claim says so
    runs = [acc_run("a", 0, [0.5, 0.6, 0.7]), acc_run("a", 1, [0.5, 0.6, 0.7]),
            acc_run("b", 0, [0.5, 0.6, 0.71]), acc_run("b", 1, [0.5])]
    spec = SimpleNamespace(paper=PAPER, options={
        "curves": [], "pairs": [{"name": "p", "a": "a", "b": "b"}],
        "references": {"one point": {"gap": 0.01}},
        "claims": [{"less": ["gap-p", "one point"], "metric": "gap"}]})
    c, = equal_ratio(spec, runs).conclusions
    assert c.evidence["gap-p"] == pytest.approx(0.01 / 3)
    assert c.agrees_with_paper is True and "1 of 2 seeds of gap-p without a finite value" in c.text


def test_breakdown_departure_says_which_seeds_it_leaves_out():
    def r(n, beta, seed, best):
        acc = [(0, 0.1), (10, best)] if best is not None else []
        return run(f"beta{beta}|n_train={n}", seed, metrics={"test_acc": acc},
                   params={"optimizer": {"lr": 0.1 * beta}, "batch_size": 50 * beta,
                           "dataset": {"n_train": n}})
    runs = []
    for seed in (0, 1):
        runs += [r(4000, 1, seed, 0.95), r(4000, 2, seed, 0.95), r(4000, 16, seed, 0.90),
                 r(800, 1, seed, 0.90), r(800, 2, seed, 0.90),
                 r(800, 16, seed, 0.70 if seed == 0 else None)]   # seed 1 measured nothing
    spec = SimpleNamespace(paper=PAPER, options={"metric": "test_acc", "margin": 0.01})
    dep = breakdown(spec, runs).conclusions[-2]
    assert dep.evidence == pytest.approx({"800 examples": 0.2, "4000 examples": 0.05})
    assert dep.agrees_with_paper is True
    assert "1 of 2 seeds of 800 examples without a finite value" in dep.text


def test_interpolation_reads_the_ends_at_alpha_0_and_1_whatever_the_rounding():
    """``linspace(-1, 2, 10)`` puts α = 0 at -5.6e-17: the test ``0 <= α`` skipped it, so "the
    loss at A" and the barrier were read from α = 1/3 on. A grid without 0 or 1 (num 8) has no
    point at a model: refused when the entry is loaded, not answered from the nearest point."""
    import torch

    from sgdlab.experiments.procedures import get_procedure
    from sgdlab.experiments.procedures.jastrzebski import segment_ends

    grid = torch.linspace(-1.0, 2.0, 10, dtype=torch.float64)
    assert float(grid[3]) < 0                             # the rounding this guards against
    assert segment_ends(grid) == (3, 6)
    assert segment_ends(torch.linspace(-1.0, 2.0, 121, dtype=torch.float64)) == (40, 80)
    proc = get_procedure("interpolate")
    base = {"dataset": "digits", "model": "mlp", "between": ["a", "b"]}
    proc.validate({**base, "alphas": {"start": -1.0, "stop": 2.0, "num": 10}}, "runs[0]")
    with pytest.raises(ConfigError, match=r"runs\[0\]: alphas .* must include 0 and 1"):
        proc.validate({**base, "alphas": {"start": -1.0, "stop": 2.0, "num": 8}}, "runs[0]")
    with pytest.raises(ConfigError, match="alphas must be a mapping"):
        proc.validate({**base, "alphas": [0, 1]}, "runs[0]")


def test_a_mean_curve_that_loses_seeds_says_how_many_it_holds():
    # a seed that stopped at step 20 left the mean of the others from there on: the curve
    # stepped (0.9 -> 0.5) with nothing in the figure saying that it held fewer seeds
    from sgdlab.experiments.procedures.jastrzebski import epoch_curves

    loss = {0: [(10, 1.0), (20, 0.9), (30, 0.8), (40, 0.7)],
            1: [(10, 0.2), (20, 0.1)],
            2: [(10, 0.5), (20, 0.5), (30, 0.5), (40, 0.5)]}
    groups = {"short": [run("short", s, metrics={"loss": pts}) for s, pts in loss.items()],
              "whole": [run("whole", s, metrics={"loss": [(10, 1.0), (40, 0.5)]})
                        for s in range(3)]}
    spec = SimpleNamespace(paper=PAPER)
    ((_, fig),) = epoch_curves(spec, groups, ["loss"])
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["short (mean of 2-3 of 3 seeds)", "whole"]
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("short")]
    assert line.get_ydata().tolist() == pytest.approx([1.7 / 3, 1.5 / 3, 0.65, 0.6])


# --- the interpolate procedure's batch-norm passes -------------------------------------------

def _interpolation_params(**extra) -> dict:
    """A float64 pair of batch-normalised MLPs (three stacked batch-norm layers) between two
    random initialisations, the 60 training images in 3 batches of 20."""
    return {"dataset": {"name": "digits", "n_train": 60, "n_test": 20},
            "model": {"name": "jastrzebski-mlp", "width": 6, "depth": 3}, "dtype": "float64",
            "between": ["A", "B"], "alphas": {"start": 0.0, "stop": 1.0, "num": 3},
            "eval_batch_size": 20, **extra}


def _pair(tmp_path):
    """{label: folder with its model file}, and the two models (A from seed 10, B from 11)."""
    import torch

    from sgdlab.experiments.procedures.train import MODEL_FILE, build

    folders, models = {}, []
    for seed, lab in ((10, "A"), (11, "B")):
        _, model, _, _ = build(_interpolation_params(), seed)
        folders[lab] = tmp_path / lab
        folders[lab].mkdir(exist_ok=True)
        torch.save(model.state_dict(), folders[lab] / MODEL_FILE)
        models.append(model)
    return folders, models


def _interpolate(folders, **extra):
    """The interpolate procedure's output between ``folders`` at ``_interpolation_params``
    with ``extra`` (a key given as None is left out)."""
    from sgdlab.experiments.procedures import get_procedure

    proc = get_procedure("interpolate")
    params = {k: v for k, v in _interpolation_params(**extra).items() if v is not None}
    proc.validate(params, "run")
    return proc.run(SimpleNamespace(params=params, seed=0),
                    SimpleNamespace(dependencies=folders))


def _whole_set_losses(models, alphas) -> list[float]:
    """The float64 reference: at each α, the interpolated network's batch norms given the
    statistics of all 60 images in one train-mode batch (momentum 1), then the mean loss."""
    import copy

    import torch

    from sgdlab.experiments.procedures.train import build

    ds, _, loss_fn, _ = build(_interpolation_params(), 0)
    a, b = models
    losses = []
    with torch.no_grad():
        for al in alphas:
            net = copy.deepcopy(a)
            for p, pa, pb in zip(net.parameters(), a.parameters(), b.parameters()):
                p.copy_((1 - al) * pa + al * pb)
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.momentum = 1.0
            net.train()(ds.x_train)
            losses.append(float(loss_fn(net.eval()(ds.x_train), ds.y_train)))
    return losses


def test_bn_stats_passes_chooses_the_recomputations_passes(tmp_path):
    """``bn_stats_passes`` reaches ``recompute_bn_statistics``: the default (absent, or
    ``layerwise``) gives at every α the loss of the whole set's statistics at every layer;
    ``one-pass``, each of the 3 batches normalised by its own statistics, another one."""
    folders, models = _pair(tmp_path)
    default = _interpolate(folders).data
    layerwise = _interpolate(folders, bn_stats_passes="layerwise").data
    one_pass = _interpolate(folders, bn_stats_passes="one-pass").data
    reference = _whole_set_losses(models, default["alphas"])
    assert default["train_loss"] == layerwise["train_loss"]
    assert layerwise["train_loss"] == pytest.approx(reference, rel=1e-10, abs=0)
    gaps = [abs(o - r) / r for o, r in zip(one_pass["train_loss"], reference)]
    assert min(gaps) > 1e-6, gaps


def test_the_interpolation_summary_reads_the_segment_between_the_two_ends(tmp_path):
    """On a grid past both ends (α = −0.5 ... 1.5): the losses at α = 0 and 1, and the barrier,
    the highest loss on [0, 1] above the higher of the two ends (float64 references)."""
    folders, models = _pair(tmp_path)
    s = _interpolate(folders, alphas={"start": -0.5, "stop": 1.5, "num": 5}).summary
    ref = _whole_set_losses(models, [-0.5, 0.0, 0.5, 1.0, 1.5])
    assert abs(ref[1] - ref[3]) > 1e-3 * ref[1]     # the higher end is the one that counts
    assert s["loss_at_A"] == pytest.approx(ref[1], rel=1e-10)
    assert s["loss_at_B"] == pytest.approx(ref[3], rel=1e-10)
    assert s["barrier_on_segment"] == pytest.approx(max(ref[1:4]) - max(ref[1], ref[3]),
                                                    rel=1e-9, abs=1e-12)
    # the length of the segment, ‖θ_B − θ_A‖ over every parameter (the table's ‖Δθ‖ units)
    a, b = models
    dist = math.sqrt(sum(float(((pb - pa).detach().double() ** 2).sum())
                         for pa, pb in zip(a.parameters(), b.parameters())))
    assert dist > 0 and s["distance"] == pytest.approx(dist, rel=1e-12)


def test_a_bad_bn_stats_passes_is_refused_by_name():
    from sgdlab.experiments.procedures import get_procedure

    proc = get_procedure("interpolate")
    for value, problem in (("one_pass", "must be one of layerwise, one-pass, got 'one_pass' "
                                        "(did you mean one-pass?)"),
                           (True, "must be one of layerwise, one-pass, got True")):
        with pytest.raises(ConfigError) as e:
            proc.validate(_interpolation_params(bn_stats_passes=value), "pair")
        assert str(e.value) == f"pair: bn_stats_passes: {problem}"
    with pytest.raises(ConfigError, match="pair: bn_stats: must be one of recompute, "
                                          "interpolate, keep, got 'ema'"):
        proc.validate(_interpolation_params(bn_stats="ema"), "pair")
    # the passes of statistics that are not recomputed: a key that would change nothing
    with pytest.raises(ConfigError, match=r"pair: bn_stats_passes applies to recomputed "
                                          r"statistics only \(bn_stats: recompute\), not to "
                                          r"bn_stats: keep"):
        proc.validate(_interpolation_params(bn_stats="keep", bn_stats_passes="layerwise"),
                      "pair")


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_the_one_pass_reading_keeps_the_default_run_keys(scale):
    """``--reading interp-bn=recompute-one-pass`` sets ``bn_stats_passes`` on the two
    interpolation runs only; the default runs hold no such key and keep the keys they had
    before the choice existed."""
    import copy

    from sgdlab.experiments.spec import catalogue_files, load_experiment, read_file, resolve

    path = catalogue_files()["jastrzebski-interpolation"]
    raw = read_file(path)
    before = copy.deepcopy(raw)
    del before["readings"]["interp-bn"]["choices"]["recompute-one-pass"]

    def keys(spec):
        return {(r.label, r.seed): r.key for r in spec.expand(data_dir="/d")}

    default = load_experiment("jastrzebski-interpolation", scale)
    assert keys(default) == keys(resolve(before, scale, str(path)))
    assert not any("bn_stats_passes" in r.params for r in default.expand(data_dir="/d"))
    one = load_experiment("jastrzebski-interpolation", scale,
                          readings={"interp-bn": "recompute-one-pass"})
    passes = {r.label: r.params.get("bn_stats_passes") for r in one.expand(data_dir="/d")}
    assert {lab for lab, v in passes.items() if v == "one-pass"} == {"equal-ratio",
                                                                     "different-ratio"}
    assert {lab for lab, v in passes.items() if v is None} == {
        lab for lab in passes if lab not in ("equal-ratio", "different-ratio")}
    changed = {k[0] for k, v in keys(one).items() if keys(default)[k] != v}
    assert changed == {"equal-ratio", "different-ratio"}


def test_a_segment_at_an_epoch_rows_step_belongs_to_the_next_epoch():
    from sgdlab.experiments.procedures.xing import barrier_height_ratios

    # epoch 1's row is logged at step 1000, after its last update (999): the segment of
    # update 1000 is epoch 2's first
    r = _barrier_run("lr0.1", 0, {1: (1000, 1, 0.01), 2: (1000, 1, 0.01)},
                     rise={1: 0.1, 2: 0.2})
    for k, v in enumerate((0.5, 0.8, 0.4)):
        r.metrics[f"walk_loss_k{k:02d}"].append((1000, v))
    r.metrics["walk_barrier"].append((1000, 1.0))
    r.metrics["walk_barrier_height"].append((1000, 0.3))
    r.metrics["walk_height"].append((1000, 0.05))
    one = barrier_height_ratios(r, [1])
    assert one["barriers_crossed"] == 1
    assert one["barrier_rise_ratio"] == pytest.approx(0.1)
    two = barrier_height_ratios(r, [2])
    assert two["barriers_crossed"] == 2
    assert two["barrier_rise_ratio"] == pytest.approx(0.6)        # 0.3 over 0.5


def test_the_final_cosine_is_the_mean_of_the_last_ten_by_default():
    r = walk_run("gd", 0, 0.0, [1.0, 0.9], 1.0)
    r.metrics["grad_cosine"] = [(s, float(s)) for s in range(1, 13)]   # 1 .. 12
    xing_walk(SimpleNamespace(paper=PAPER, options={"claims": []}), [r])
    assert r.summary["grad_cosine_final"] == pytest.approx(7.5)       # mean of 3 .. 12
    xing_walk(SimpleNamespace(paper=PAPER, options={"claims": [], "final_updates": 4}), [r])
    assert r.summary["grad_cosine_final"] == pytest.approx(10.5)      # mean of 9 .. 12


def test_hessian_norm_table_reads_the_best_validation_accuracy_not_the_last():
    r = run("sgd", 0, metrics={"test_acc": [(0, 0.1), (40, 0.6), (80, 0.5)]})
    res = xing_hessian_norm(SimpleNamespace(paper=PAPER, options={"claims": []}), [r])
    assert r.summary["best_test_acc"] == 0.6
    row = res.table("hessian_norm").rows[0]
    assert row[res.table("hessian_norm").columns.index("best validation accuracy")] == 0.6


def test_the_gap_to_beta_1_is_a_mean_over_seeds_with_their_sample_std():
    from sgdlab.experiments.procedures.jastrzebski import _gaps_to

    def curve(label, seed, values):
        return run(label, seed, metrics={"test_acc": [(0, 0.1)] + list(zip((10, 20), values))})
    ref = {s: curve("b1", s, (0.5, 0.6)) for s in (0, 1, 2)}
    # per seed, mean |a − b| over the evaluations after the start: 0.1, 0.3; seed 2 is not run
    runs = [curve("b2", 0, (0.6, 0.7)), curve("b2", 1, (0.8, 0.9)), curve("b2", 5, (0.0, 0.0))]
    out = _gaps_to(runs, ref, "test_acc")
    assert out["gap"] == pytest.approx(0.2) and out["gap__n"] == 2
    assert out["gap__std"] == pytest.approx(math.sqrt(0.02))       # sample std, n − 1
    assert "gap__missing" not in out


def test_a_curve_of_the_hessian_names_its_axis_with_a_subscript():
    from sgdlab.experiments.procedures.jastrzebski import _label

    # λ_max read with a literal underscore on a curve's axis (the grid's axes had mathtext)
    assert _label("hessian_top", {}) == r"Hessian $\lambda_{max}$"
    assert _label("test_acc", {}) == "validation accuracy"


def test_fifths_of_two_values_put_the_first_before_the_end():
    # n = 2k (n = 2, windows of 1): the fifth before the end is the first value, not empty
    w = fifths([1.0, 3.0])
    assert (w["start"], w["before_end"], w["end"]) == (1.0, 1.0, 3.0)
    assert np.isnan(w["middle"])


def test_cosine_grid_tests_the_smallest_against_the_largest_learning_rate():
    # lr 0.05 and 0.1 share a cosine of -0.2; lr 0.4 falls to -0.4: the equivalence test of
    # the smallest and the largest learning rate (0.2 apart, margin 0.05) is not passed
    def r(lr, b, cos, seed):
        return run(f"lr{lr}B{b}", seed, params={"optimizer": {"lr": lr}, "batch_size": b},
                   metrics={"grad_cosine": [(s, cos) for s in range(1, 20)],
                            "dist_from_init": [(19, 1.0)]})
    runs = [r(lr, 100, cos + j, seed) for seed, j in ((0, 0.0), (1, 0.002))
            for lr, cos in ((0.05, -0.2), (0.1, -0.2), (0.4, -0.4))]
    spec = SimpleNamespace(paper=PAPER, options={"fixed_lr": 0.1, "fixed_batch": 100,
                                                 "after_step": 0, "lr_margin": 0.05})
    c = xing_cosine_grid(spec, runs).conclusions
    eq = c[2]
    assert "lr=0.05" in eq.text and "lr=0.4" in eq.text
    assert eq.agrees_with_paper is False


def test_cosine_grid_rows_run_by_learning_rate_then_batch_size_in_number_order():
    """The table's rows (and so each panel's points and the equivalence test's smallest and
    largest learning rate) are in numeric order of (lr, B), whatever the runs' order: not the
    runs' order, nor their labels' text order (lr=0.05 < lr=0.1 < lr=0.2; B 25 < 50 < 100 <
    200, where text puts 100 and 200 before 25)."""
    settings = [(0.1, 200), (0.2, 100), (0.1, 25), (0.05, 100), (0.1, 100), (0.1, 50)]
    spec = SimpleNamespace(paper=PAPER, options={"fixed_lr": 0.1, "fixed_batch": 100,
                                                 "after_step": 0, "lr_margin": 0.05})
    out = xing_cosine_grid(spec, [cosine_run(f"lr{lr}B{b}", lr, b, -b / 1000 - lr, 0)
                                  for lr, b in settings])
    rows = out.tables[0].rows
    assert [(row[0], row[1]) for row in rows] == [(0.05, 100), (0.1, 25), (0.1, 50),
                                                  (0.1, 100), (0.1, 200), (0.2, 100)]
    assert [row[2] for row in rows] == pytest.approx([-0.15, -0.125, -0.15, -0.2, -0.3, -0.3])
    eq = out.conclusions[2].text        # the smallest against the largest learning rate
    assert "lr=0.05,B=100" in eq and "lr=0.2,B=100" in eq and "lr=0.1," not in eq
    ax_b, ax_lr = out.figures[0][1].axes[:2]
    assert list(ax_b.lines[0].get_xdata()) == [25, 50, 100, 200]
    assert list(ax_lr.lines[0].get_xdata()) == [0.05, 0.1, 0.2]


def test_the_walks_distance_is_read_at_the_step_asked_for_else_the_last():
    # ‖θ − θ₀‖ logged at steps 0, 20, 40 (1, 3, 2): the last by default, the step asked for,
    # NaN at a step not logged (not the nearest one)
    r = walk_run("gd", 0, 0.0, [1.0, 0.9], 2.0)
    r.metrics["dist_from_init"] = [(0, 1.0), (20, 3.0), (40, 2.0)]
    for at, want in ((None, 2.0), (20, 3.0), (0, 1.0), (30, math.nan)):
        opts = {"claims": []} if at is None else {"claims": [], "distance_at": at}
        xing_walk(SimpleNamespace(paper=PAPER, options=opts), [r])
        assert r.summary["distance"] == pytest.approx(want, nan_ok=True), at


def test_a_segment_without_a_finite_valley_alpha_has_no_interior_floor():
    from sgdlab.experiments.procedures.xing import valley_floor

    # segments 0-3: the lowest point at α = 0.5, 0 (an end point), NaN, not logged; only the
    # first lies strictly between its iterates, every one has a segment minimum
    r = run("sgd", 0, metrics={"walk_valley_loss": [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)],
                               "walk_valley_alpha": [(0, 0.5), (1, 0.0), (2, math.nan)]})
    assert valley_floor(r, "interior") == [1.0]
    assert valley_floor(r, "segment") == [1.0, 2.0, 3.0, 4.0]


def test_runs_that_logged_both_hessian_quantities_name_both():
    from sgdlab.experiments.procedures.xing import hessian_quantity

    def logged(which):
        return run("sgd", 0, params={"measure": [{"name": "dynamics", "hessian_which": which}]})
    # one run's ‖H‖ and another's λ_max under one name: neither symbol alone is right
    assert hessian_quantity([logged("magnitude"), logged("largest")]) == (
        "‖H‖ or λ_max", "Hessian spectral norm ‖H‖ or largest eigenvalue λ_max")
    assert hessian_quantity([logged("largest")])[0] == "λ_max"
    assert hessian_quantity([run("sgd", 0)])[0] == "‖H‖"


def test_a_segment_without_a_barrier_record_crossed_no_barrier():
    from sgdlab.experiments.procedures.xing import barrier_height_ratios

    # update 999 crossed a barrier 0.1 · 0.5 high; update 500 was interpolated (its losses
    # rise to 0.9) but its barrier flag was not recorded: it is no crossing
    r = _barrier_run("lr0.1", 0, {1: (1000, 1, 0.01)}, rise={1: 0.1})
    for k, v in enumerate((0.5, 0.9, 0.4)):
        r.metrics[f"walk_loss_k{k:02d}"].append((500, v))
    r.metrics["walk_barrier_height"].append((500, 0.4))
    out = barrier_height_ratios(r)
    assert out["barriers_crossed"] == 1
    assert out["barrier_rise_ratio"] == pytest.approx(0.1)


def test_the_barriers_of_epoch_1_by_default_and_epochs_counted_from_1():
    from sgdlab.experiments.procedures.xing import xing_barriers

    r = _barrier_run("lr0.1", 0, {1: (450, 3, 0.02), 2: (450, 9, 0.04)})
    xing_barriers(SimpleNamespace(paper=PAPER, options={"claims": []}), [r])
    assert r.summary["barriers_epoch1"] == 3.0 and "barriers_epoch2" not in r.summary
    assert r.summary["barrier_fraction_epoch1"] == pytest.approx(3 / 450)
    for bad in ([0], [1, 0], 1, [True]):
        assert analysis_option_problems("xing_barriers", {"barrier_epochs": bad}) == [
            "options.barrier_epochs must be a list, each item a positive integer or null, "
            f"got {bad!r}"]


def test_hessian_norm_numbers_of_a_run_by_hand():
    # after step 0 (the initialisation, 99): 4, 2, 3, 5, 6 — windows of one value (⌈5/5⌉)
    r = run("sgd", 0, metrics={
        "hess_norm_train": [(0, 99.0), (10, 4.0), (20, 2.0), (30, 3.0), (40, 5.0), (50, 6.0)],
        "test_acc": [(0, 0.1), (10, 0.5), (20, 0.7), (30, 0.6)]})
    xing_hessian_norm(SimpleNamespace(paper=PAPER, options={"claims": []}), [r])
    s = r.summary
    assert (s["hess_train_start"], s["hess_train_before_end"], s["hess_train_end"]) == (
        4.0, 5.0, 6.0)
    assert s["hess_train_middle"] == pytest.approx(10 / 3)
    assert (s["hess_train_min"], s["hess_train_mean"]) == (2.0, 4.0)
    # the accuracy's windows also leave out step 0
    assert (s["acc_start"], s["acc_middle"], s["acc_before_end"], s["acc_end"]) == (
        0.5, 0.7, 0.7, 0.6)
    assert s["best_test_acc"] == 0.7


def test_cosine_grid_ranks_the_cosine_against_the_learning_rate_at_the_default_margin():
    # per lr (0.05, 0.1, 0.4) mean cosines −0.199, −0.199, −0.399, distances all 1: Spearman
    # of the cosine with the lr on ranks (1, 2, 3) and (2.5, 2.5, 1) is −1.5 / √3 = −√3/2
    def r(lr, cos, seed):
        return run(f"lr{lr}", seed, params={"optimizer": {"lr": lr}, "batch_size": 100},
                   metrics={"grad_cosine": [(s, cos) for s in range(1, 20)],
                            "dist_from_init": [(19, 1.0)]})
    runs = [r(lr, cos + j, seed) for seed, j in ((0, 0.0), (1, 0.002))
            for lr, cos in ((0.05, -0.2), (0.1, -0.2), (0.4, -0.4))]
    # no lr_margin: the default 0.05 is narrower than the 0.2 between the ends
    spec = SimpleNamespace(paper=PAPER, options={"fixed_lr": 0.1, "fixed_batch": 100})
    c = xing_cosine_grid(spec, runs).conclusions
    assert c[2].agrees_with_paper is False
    assert c[3].evidence["spearman"] == pytest.approx(-math.sqrt(3) / 2, rel=1e-12)


def _breakdown_verdict(runs, claim: str, **options):
    """The verdict of the breakdown's one conclusion ``claim`` on the test accuracy of
    ``runs``, under ``options``."""
    spec = SimpleNamespace(paper=PAPER, options={"metric": "test_acc", **options})
    (c,) = [x for x in breakdown(spec, runs).conclusions if x.claim == claim]
    return c.agrees_with_paper


def test_breakdown_holds_the_curves_to_the_margin_unless_a_curve_margin_is_given():
    # "similar learning dynamics" (line 219) within options.curve_margin, by default
    # options.margin: a β = 2 curve 0.03 above β = 1's at every evaluation of every seed
    up = [0.5, 0.6, 0.7, 0.8, 0.9]
    runs = []
    for s in (0, 1, 2):
        runs += [_beta_run(1, s, up), _beta_run(2, s, [x + 0.03 for x in up]),
                 _beta_run(16, s, [0.2] * 5)]

    def small_curves(**options):
        return _breakdown_verdict(
            runs, "multiplying η and S by a small β keeps the learning dynamics", **options)
    assert small_curves(margin=0.05) is True
    assert small_curves(margin=0.05, curve_margin=0.02) is False
    assert small_curves(margin=0.02, curve_margin=0.05) is True


def test_cosine_grid_default_margin_is_the_catalogues_0_05_in_cosine():
    # lr 0.05 and 0.4 at cosines −0.2 and −0.27 (seed spread 0.002): 0.07 apart, outside
    # the default margin 0.05 (xing-cosine-grid's lr_margin), inside a margin of 0.1
    def r(lr, cos, seed):
        return run(f"lr{lr}", seed, params={"optimizer": {"lr": lr}, "batch_size": 100},
                   metrics={"grad_cosine": [(s, cos) for s in range(1, 20)],
                            "dist_from_init": [(19, 1.0)]})
    runs = [r(lr, cos + j, seed) for seed, j in ((0, 0.0), (1, 0.002))
            for lr, cos in ((0.05, -0.2), (0.1, -0.2), (0.4, -0.27))]

    def equivalent(**margin):
        spec = SimpleNamespace(paper=PAPER, options={"fixed_lr": 0.1, "fixed_batch": 100,
                                                     **margin})
        return xing_cosine_grid(spec, runs).conclusions[2].agrees_with_paper
    assert equivalent() is False and equivalent(lr_margin=0.05) is False
    assert equivalent(lr_margin=0.1) is True


def test_breakdown_default_margin_is_one_percentage_point():
    # β = 2 reaches a best accuracy 0.015 above β = 1's on every seed: not equivalent within
    # the default margin 0.01 (jastrzebski-breakdown's), equivalent within 0.02
    runs = []
    for seed, e in ((0, 0.0), (1, 0.001), (2, -0.001)):
        runs += [breakdown_run(800, 1, seed, 0.90 + e), breakdown_run(800, 2, seed, 0.915 + e),
                 breakdown_run(800, 16, seed, 0.70 + e)]

    def small_beta_kept(**options):
        return _breakdown_verdict(
            runs, "multiplying η and S by a small β keeps the final performance", **options)
    assert small_beta_kept() is False and small_beta_kept(margin=0.01) is False
    assert small_beta_kept(margin=0.02) is True


def test_breakdown_skips_a_training_set_that_lacks_beta_1():
    # β is η / the smallest η of the experiment: on 800 examples, which ran β = 2 and 16
    # only, there is no β = 1 to compare with, so its claims are left out (not a KeyError),
    # and with one size compared no size-versus-size claim is made
    runs = []
    for seed, e in ((0, 0.0), (1, 0.001), (2, -0.001)):
        runs += [breakdown_run(4000, 1, seed, 0.95 + e), breakdown_run(4000, 2, seed, 0.95 + e),
                 breakdown_run(4000, 16, seed, 0.90 + e),
                 breakdown_run(800, 2, seed, 0.90 + e), breakdown_run(800, 16, seed, 0.70 + e)]
    spec = SimpleNamespace(paper=PAPER, options={"metric": "test_acc", "margin": 0.01})
    res = breakdown(spec, runs)
    assert len(res.conclusions) == 4
    assert all("(800 examples)" not in c.text for c in res.conclusions)
    assert [c.agrees_with_paper for c in res.conclusions] == [True, True, True, True]
    # the table still lists the 800-example runs, at their β
    assert sorted(row[1] for row in res.tables[0].rows if row[0] == 800) == [2, 16]


def test_fewer_than_two_valley_floors_have_no_rise_fraction_quietly():
    import warnings

    # no consecutive pair to compare: NaN, without numpy's "mean of empty slice" warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(rise_fraction([1.0])) and math.isnan(rise_fraction([]))


def test_the_interpolation_evaluates_a_fixed_random_subset_of_samples(tmp_path):
    """``samples``: a fixed random subset of the training set (drawn with ``data_seed``, a
    permutation's first ``samples`` images), on which the batch-norm statistics are
    recomputed and the loss taken; not the first images (datasets stored sorted by class)."""
    import copy

    import torch

    from sgdlab.experiments.procedures.train import build

    folders, models = _pair(tmp_path)
    subset = {"samples": 20, "data_seed": 3, "eval_batch_size": None}
    s = _interpolate(folders, **subset).summary
    ds, _, loss_fn, _ = build(_interpolation_params(data_seed=3), 0)
    idx = torch.randperm(60, generator=torch.Generator().manual_seed(3))[:20]

    def loss_at_a(x, y):       # float64 reference: A's batch norms given x's statistics
        net = copy.deepcopy(models[0])
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.momentum = 1.0
        with torch.no_grad():
            net.train()(x)
            return float(loss_fn(net.eval()(x), y))
    assert s["loss_at_A"] == pytest.approx(loss_at_a(ds.x_train[idx], ds.y_train[idx]),
                                           rel=1e-10)
    assert s["loss_at_A"] != pytest.approx(loss_at_a(ds.x_train, ds.y_train), rel=1e-6)
    assert s["loss_at_A"] != pytest.approx(loss_at_a(ds.x_train[:20], ds.y_train[:20]),
                                           rel=1e-6)
    assert _interpolate(folders, **subset).summary["loss_at_A"] == s["loss_at_A"]


def test_the_interpolation_evaluates_a_last_batch_of_one_image_too(tmp_path):
    # 60 images in batches of 59: the 60th image is a batch of its own, still counted (the
    # pooled batch-norm statistics and the loss of the whole set, float64 reference)
    folders, models = _pair(tmp_path)
    s = _interpolate(folders, eval_batch_size=59).summary
    ref = _whole_set_losses(models, [0.0, 1.0])
    assert s["loss_at_A"] == pytest.approx(ref[0], rel=1e-10)
    assert s["loss_at_B"] == pytest.approx(ref[1], rel=1e-10)


def test_a_walk_without_segments_or_barrier_records_has_no_shares():
    # "NaN with no such segment recorded": a run that logged cosines only
    r = run("sgd", 0, metrics={"grad_cosine": [(s, -0.5) for s in range(1, 5)],
                               "dist_from_init": [(4, 1.0)]})
    xing_walk(SimpleNamespace(paper=PAPER, options={}), [r])
    matplotlib.pyplot.close("all")
    assert math.isnan(r.summary["interior_min_share"])
    assert math.isnan(r.summary["barrier_fraction"])
    assert r.summary["valley_floors"] == 0.0 and math.isnan(r.summary["floor_rise_fraction"])
