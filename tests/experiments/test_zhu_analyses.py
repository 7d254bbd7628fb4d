"""Zhu et al.'s analyses (sgdlab.experiments.procedures.zhu) by hand: the windows, reductions
and verdict edges the catalogue's tests leave unpinned."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sgdlab.errors import ConfigError
from sgdlab.experiments.procedures import zhu
from sgdlab.testing import stored_run as run

PAPER = {"author": "X", "figure": "Fig. 0"}


def test_the_steps_of_a_window_are_named_by_its_first_and_last():
    assert zhu._steps([]) == "no steps"
    assert zhu._steps([300.0]) == "step 300"
    assert zhu._steps([10.0, 20.0, 50.0]) == "steps 10-50"


def _residual_run(seed, residual, k=2, d=10):
    m = {"align/residual": list(zip(range(len(residual)), residual))}
    for i in range(1, k + 1):
        m[f"align/cos_{i}"] = [(len(residual) - 1, 0.99)]
    return run("g", seed, summary={"num_params": d}, metrics=m)


def test_a_seed_that_diverges_within_the_late_window_leaves_the_residual_inconclusive():
    """Seed 1 is finite up to step 6 and NaN at steps 7 and 8 of the window 6-8: the mean
    there is seed 0's alone, so both residual verdicts are inconclusive (seed 0 by itself
    is small and stable)."""
    nan = float("nan")
    good = [1.8, 1.5, 1.0, 0.8, 0.6, 0.5, 0.42, 0.40, 0.41]
    runs = [_residual_run(0, good), _residual_run(1, good[:7] + [nan, nan])]
    spec = SimpleNamespace(paper=PAPER, options={"tests": ["residual"]})
    small, stable = zhu.zhu_alignment(spec, runs).conclusions
    assert small.evidence["late_steps"] == [6, 7, 8]
    assert (small.agrees_with_paper, stable.agrees_with_paper) == (None, None)
    assert "1 of 2 seeds have no finite value there" in small.text
    alone = zhu.zhu_alignment(spec, runs[:1]).conclusions
    assert [c.agrees_with_paper for c in alone] == [True, True]


def test_a_pair_of_zero_normalised_eigenvalues_is_no_relative_gap():
    """λ_2(H) = λ_2(Σ) = 0 (both spectra rank one): the gap 0 is within every tolerance; the
    relative gap 0/0 reads 0, not a mismatch."""
    text, ok, _, ev = zhu._eigenvalue_check({}, [(0.9, 0.88), (0.0, 0.0)])
    assert ok is True
    assert ev["gaps"] == pytest.approx([0.02, 0.0], abs=1e-15)
    assert ev["relative_gaps"] == pytest.approx([0.02 / 0.9, 0.0], abs=1e-15)


def test_a_residual_of_zero_throughout_the_late_window_is_stable():
    """e = 0 at every late log point (the subspaces coincide): spread 0, not 0/0."""
    small, stable = zhu._residual_checks({}, 2, 10, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
                                         [1.5, 1.0, 0.5, 0.0, 0.0, 0.0])
    assert small[3]["late_steps"] == [4.0, 5.0]
    assert (small[1], stable[1]) == (True, True)
    assert stable[3]["relative_spread"] == 0.0


@pytest.mark.parametrize("lr, want", [(0.04, 5.0), (4, 0.5), (0, None), (-0.01, None),
                                      (True, None), (float("nan"), None), ("0.1", None)])
def test_the_step_factor_is_one_over_the_root_of_a_positive_step_size(lr, want):
    got = zhu._step_factor(run(params={"optimizer": {"lr": lr}}))
    assert got == pytest.approx(want, rel=1e-12) if want is not None else got != got


def test_a_log_point_with_a_zero_gradient_norm_has_no_ratio():
    """‖g₀‖ = 0 at step 1: the ratio there is undefined and left out of the first third's
    median (that of step 0's 0.5 alone), not a division by zero."""
    gn = [(t, 0.0 if t == 1 else 2.0) for t in range(6)]
    nn = [(t, 1.0 if t < 1 else 3.0) for t in range(6)]
    first, last, early, late = zhu._ratio_thirds(run(metrics={"noise/grad_norm": gn,
                                                              "noise/noise_norm": nn}))
    assert (early, late) == ([0, 1], [4, 5])
    assert (first, last) == (pytest.approx(0.5), pytest.approx(1.5))


def _noise_run(measure):
    return run(params={"measure": measure} if measure is not None else {})


def test_the_noise_variance_is_eq_2s_unless_every_run_took_distinct_samples():
    eq2, distinct = "Tr Σ/m", "Tr Σ (N − m)/(m (N − 1))"
    off = [{"name": "noise_magnitude", "replacement": False}]
    assert zhu._noise_variance([_noise_run(None)]) == eq2
    assert zhu._noise_variance([_noise_run([{"name": "noise_magnitude"}])]) == eq2
    assert zhu._noise_variance([_noise_run([{"name": "noise_magnitude",
                                             "replacement": True}])]) == eq2
    # another instrument's replacement: false is not the noise's
    assert zhu._noise_variance([_noise_run([{"name": "other", "replacement": False}])]) == eq2
    assert zhu._noise_variance([_noise_run(off), _noise_run(off)]) == distinct
    assert zhu._noise_variance([_noise_run(off), _noise_run(None)]) == f"{eq2} or {distinct}"


def test_eigenvalue_gaps_at_the_tolerances_themselves_are_within_them():
    """The tolerances bound the gap from above, inclusive: 0.5 vs 0.375 is a gap of 0.125 and
    0.125/0.5 = 0.25 of the larger, each exactly (binary fractions)."""
    _, ok, _, ev = zhu._eigenvalue_check({"eigenvalue_atol": 0.125, "eigenvalue_rtol": None},
                                         [(0.5, 0.375)])
    assert ev["gaps"] == [0.125] and ok is True
    # the default relative tolerance 0.25 at 0.0625/0.25, within the default 0.1
    _, ok, _, ev = zhu._eigenvalue_check({}, [(0.25, 0.1875)])
    assert ev["relative_gaps"] == [0.25] and ok is True
    _, ok, _, _ = zhu._eigenvalue_check({}, [(0.25, 0.1874)])
    assert ok is False


def test_a_residual_no_lower_than_at_the_start_is_not_small_and_a_spread_at_its_bound_is_stable():
    # e = 0.4 throughout: below k/4 = 0.5 but not below its first value
    small, stable = zhu._residual_checks({}, 2, 10, [0, 1, 2, 3], [0.4] * 4)
    assert (small[1], stable[1]) == (False, True)
    # late window steps 2-3: 0.875 and 1.125, mean 1, spread 0.25 = the default bound
    small, stable = zhu._residual_checks({}, 8, 100, [0, 1, 2, 3], [4.0, 3.0, 0.875, 1.125])
    assert small[3]["residual_late_mean"] == 1.0 and small[1] is True
    assert stable[3]["relative_spread"] == 0.25 and stable[1] is True
    # 0.86 and 1.14: spread 0.28, past the default bound
    _, stable = zhu._residual_checks({}, 8, 100, [0, 1, 2, 3], [4.0, 3.0, 0.86, 1.14])
    assert stable[3]["relative_spread"] == pytest.approx(0.28) and stable[1] is False


def _ratio_run(seed, early, late, n=9):
    """Gradient norm 1 at n log points, noise norm ``early`` over the first third and ``late``
    after: the ratio is the noise norm."""
    third = -(-n // 3)
    noise = [(t, early if t < third else late) for t in range(n)]
    return run("g", seed, metrics={"noise/grad_norm": [(t, 1.0) for t in range(n)],
                                   "noise/noise_norm": noise})


def _dominance(runs, **options):
    spec = SimpleNamespace(paper=PAPER, options=options)
    (c,) = zhu.zhu_noise_magnitude(spec, runs).conclusions
    return c


def test_dominance_is_a_ratio_above_1_or_of_at_least_the_reading():
    assert _dominance([_ratio_run(0, 0.5, 1.0)]).agrees_with_paper is False   # 1 is not above 1
    assert _dominance([_ratio_run(0, 0.5, 1.25)]).agrees_with_paper is True
    assert _dominance([_ratio_run(0, 0.5, 10.0)], dominance_ratio=10).agrees_with_paper is True
    assert _dominance([_ratio_run(0, 0.5, 9.75)], dominance_ratio=10).agrees_with_paper is False
    # dominant but no larger than early on: not "especially in the late iterations"
    assert _dominance([_ratio_run(0, 2.0, 2.0)]).agrees_with_paper is False


def test_the_ratios_are_means_over_seeds_and_a_seed_without_an_early_ratio_is_inconclusive():
    c = _dominance([_ratio_run(0, 0.5, 2.0), _ratio_run(1, 1.0, 4.0)])
    assert c.agrees_with_paper is True
    assert (c.evidence["ratio_first_third"], c.evidence["ratio_last_third"]) == (0.75, 3.0)
    c = _dominance([_ratio_run(0, 0.5, 2.0), _ratio_run(1, float("nan"), 4.0)])
    assert c.agrees_with_paper is None and "1 of 2 seeds have no finite ratio" in c.text


def test_the_residual_verdicts_read_the_mean_over_seeds():
    """Over steps 2-3 (k = 2, bound 0.5) seed 0 reads 0.3, 0.3 and seed 1 0.5, 0.7: the means
    0.4, 0.5 are small (0.45) and stable (spread 0.22); seed 1 alone is neither (0.6, 0.33)."""
    runs = [_residual_run(0, [1.8, 1.0, 0.3, 0.3]), _residual_run(1, [1.6, 1.2, 0.5, 0.7])]
    spec = SimpleNamespace(paper=PAPER, options={"tests": ["residual"]})
    small, stable = zhu.zhu_alignment(spec, runs).conclusions
    assert small.evidence["residual_late_mean"] == pytest.approx(0.45)
    assert small.evidence["residual_start"] == pytest.approx(1.7)
    assert stable.evidence["late_values"] == pytest.approx([0.4, 0.5])
    assert (small.agrees_with_paper, stable.agrees_with_paper) == (True, True)
    alone = zhu.zhu_alignment(spec, runs[1:]).conclusions
    assert [c.agrees_with_paper for c in alone] == [False, False]


def test_the_noisy_label_curves_are_test_accuracy_and_expected_sharpness_by_default():
    """Fig. 5's two panels: (a) test accuracy, (b) expected sharpness over iterations."""
    m = {"test_acc": [(0, 0.5), (10, 0.6)], "sharpness/expected": [(0, 0.02), (10, 0.01)]}
    spec = SimpleNamespace(paper=PAPER, options={})
    res = zhu.zhu_noisy_label(spec, [run("sgd", 0, metrics=m, summary={"steps": 10})])
    assert [name for name, _ in res.figures] == ["curve_test_acc", "curve_sharpness_expected"]


def test_the_residual_at_the_start_is_the_first_finite_measurement():
    """"The projection residual becomes small [...] in the later stage" (Fig. 4b): the late
    mean is compared with the first measured e; a log point without a finite e (NaN at step
    0) is no measurement, so the start is step 1's 1.5, and the late mean 0.3 (steps 3-4,
    k = 2, bound 0.5) is small against it."""
    nan = float("nan")
    small, stable = zhu._residual_checks({}, 2, 10, [0, 1, 2, 3, 4], [nan, 1.5, 1.0, 0.3, 0.3])
    assert small[3]["residual_start"] == 1.5 and small[3]["late_steps"] == [3, 4]
    assert (small[1], stable[1]) == (True, True)
    # the reference of eq. (13) for random k-subspaces of R^d: E e = k − k²/d = 2 − 0.4
    assert small[3]["random_expectation"] == pytest.approx(1.6, rel=1e-15)


def test_a_seed_that_stopped_inside_the_late_window_leaves_the_residual_inconclusive():
    """Seed 1 stopped after step 6 (its last record finite), inside the window 6-8: the means
    at steps 7 and 8 are seed 0's alone, so both verdicts are inconclusive, not read as
    though seed 1, finite at its end, were in them."""
    good = [1.8, 1.5, 1.0, 0.8, 0.6, 0.5, 0.42, 0.40, 0.41]
    runs = [_residual_run(0, good), _residual_run(1, good[:7])]
    spec = SimpleNamespace(paper=PAPER, options={"tests": ["residual"]})
    small, stable = zhu.zhu_alignment(spec, runs).conclusions
    assert small.evidence["late_steps"] == [6, 7, 8]
    assert (small.agrees_with_paper, stable.agrees_with_paper) == (None, None)
    assert "1 of 2 seeds have no finite value there" in small.text


def test_a_missing_eigenvalue_pair_past_the_first_is_no_verdict():
    """A NaN in the second pair: its gap is unknown, so the eigenvalue test is undecided,
    not failed (``max`` and ``all(... <= atol)`` would read it as a mismatch)."""
    nan = float("nan")
    for pairs in ([(0.9, 0.88), (nan, 0.1)], [(0.9, 0.88), (0.1, nan)]):
        _, ok, _, _ = zhu._eigenvalue_check({}, pairs)
        assert ok is None, pairs
    _, ok, _, _ = zhu._eigenvalue_check({}, [(0.9, 0.88), (0.1, 0.1)])
    assert ok is True


def test_the_alignment_tests_by_default_are_fig_1s_two_statements():
    """Without ``options.tests``, both statements of Fig. 1's text are checked: "the cosine
    similarity between leading eigen vectors of H and Σ approaches 1" and "the normalized
    eigenvalues are extremely similar" (k = 2 pairs)."""
    m = {"align/cos_1": [(10, 0.99)], "align/cos_2": [(10, 0.95)],
         "align/hess_norm_eig_1": [(10, 0.9)], "align/sigma_norm_eig_1": [(10, 0.875)],
         "align/hess_norm_eig_2": [(10, 0.25)], "align/sigma_norm_eig_2": [(10, 0.25)]}
    spec = SimpleNamespace(paper=PAPER, options={})
    cos, eig = zhu.zhu_alignment(spec, [run("g", 0, metrics=m)]).conclusions
    assert "approach 1" in cos.claim and cos.agrees_with_paper is True
    assert "extremely similar" in eig.claim and eig.agrees_with_paper is True
    assert eig.evidence["gaps"] == pytest.approx([0.025, 0.0], abs=1e-15)


def _alignment_texts(centred: list) -> dict:
    """The matrix labels of the alignment analysis of one seed per ``centred`` value (its
    alignment instrument's ``centred``; None: left out, the default): the table's column and
    caption, the figures' titles (without the residual), legend and cosine axis, the findings
    up to their values, the claims."""
    import matplotlib.pyplot as plt

    m = {"align/cos_1": [(10, 0.99)], "align/hess_norm_eig_1": [(10, 0.9)],
         "align/sigma_norm_eig_1": [(10, 0.875)]}
    runs = [run("g", seed, metrics=m, params={"measure": [
        {"name": "alignment", "k": 1, **({} if c is None else {"centred": c})}]})
            for seed, c in enumerate(centred)]
    out = zhu.zhu_alignment(SimpleNamespace(paper=PAPER, options={}), runs)
    (_, fig), (_, history) = out.figures
    texts = {"column": out.tables[0].columns[-1], "caption": out.tables[0].caption,
             "title": fig._suptitle.get_text().replace("\n", " ").split(" ($e")[0],
             "history_title": history._suptitle.get_text().split(", ")[:2],
             "legend": [t.get_text() for t in fig.axes[1].get_legend().get_texts()],
             "cos_axis": fig.axes[0].get_ylabel(), "history": history.axes[1].get_ylabel(),
             "findings": [c.text.split(" = ")[0] for c in out.conclusions],
             "claims": [c.claim for c in out.conclusions]}
    plt.close(fig), plt.close(history)
    return texts


CAPTION = "at the last measurement; cosine mean and std over seeds, eigenvalues mean over seeds"
CLAIMS = ["the cosines of the 1 leading eigenvector pairs of H and Σ approach 1",
          "the normalised leading eigenvalues of H and Σ are extremely similar"]


@pytest.mark.parametrize("centred, matrix, tex, caption, cosine_finding", [
    # the default (or centred: true) as before
    ([None, True], "Σ", r"\Sigma", CAPTION, "g: |cos(u_i, v_i)| of the 1 leading eigenvector "
                                             "pairs at the end"),
    ([False, False], "E[g gᵀ]", r"E[g\,g^T]",
     CAPTION + "; v_i the eigenvectors of E[g gᵀ], E[g gᵀ] = Σ + ḡḡᵀ the uncentred second "
               "moment of the per-sample gradients (eq. (6))",
     "g: |cos(u_i, v_i)| of the 1 leading eigenvector pairs of H and E[g gᵀ] at the end"),
], ids=["centred", "uncentred"])
def test_alignment_labels_name_the_uncentred_second_moment_where_the_runs_measured_it(
        centred, matrix, tex, caption, cosine_finding):
    """The reading sigma-form=uncentred (the alignment instrument's ``centred: false``)
    compares H with E[g gᵀ] = Σ + ḡḡᵀ: the tables, figures and findings name that matrix,
    the claims stay the paper's (of Σ); the default's labels are Σ's, as before."""
    assert _alignment_texts(centred) == {
        "column": f"λ_i({matrix})/‖{matrix}‖_F", "caption": caption,
        "title": f"X, Fig. 0: {matrix}–H alignment of g at the end of training, mean over 2 "
                 "seeds",
        "history_title": ["X", "Fig. 0: projection residual and leading cosine over training"],
        "legend": ["H", matrix], "cos_axis": rf"$|\cos(u_i(H), v_i({tex}))|$",
        "history": f"|cos(u_1(H), v_1({matrix}))|",
        "findings": [cosine_finding, "g: gaps between the Frobenius-normalised leading "
                                     f"eigenvalues of H and {matrix} at the end"],
        "claims": CLAIMS}


def test_alignment_runs_of_both_matrices_are_named_as_either():
    # no reading mixes them: seeds of both forms are labelled with both names
    assert _alignment_texts([None, False])["column"] == "λ_i(Σ or E[g gᵀ])/‖Σ or E[g gᵀ]‖_F"


def test_the_cubic_figures_draw_each_leading_cosine_by_step_as_figs_1b_8b_9b():
    """``options.cosine_history`` (set by zhu-alignment-cubic): each group's figure gains a
    panel of its k leading cosines over training, the mean over seeds at each step, as
    Figs. 1(b), 8(b) and 9(b) plot them; without it the figure keeps its two panels."""
    import matplotlib.pyplot as plt
    import numpy as np

    from sgdlab.experiments.spec import load_experiment

    def seed(s):
        m = {f"align/cos_{i}": [(t, 0.5 + 0.1 * i + 0.01 * s * t) for t in (1, 10, 100)]
             for i in (1, 2)}
        m.update({f"align/{w}_norm_eig_{i}": [(100, 0.5 / i)] for w in ("hess", "sigma")
                  for i in (1, 2)})
        return run("g", s, metrics=m)
    runs = [seed(0), seed(1)]
    options = dict(load_experiment("zhu-alignment-cubic", "cpu").options)
    assert options["cosine_history"] is True
    figs = dict(zhu.zhu_alignment(SimpleNamespace(paper=PAPER, options=options), runs).figures)
    panel = figs["alignment_g"].axes[2]
    lines = {ln.get_label(): ln for ln in panel.get_lines()}
    assert sorted(lines) == ["i = 1", "i = 2"]
    for i in (1, 2):
        np.testing.assert_allclose(lines[f"i = {i}"].get_ydata(),
                                   [0.5 + 0.1 * i + 0.005 * t for t in (1, 10, 100)])
    assert panel.get_xlabel() == "step"
    plain = dict(zhu.zhu_alignment(SimpleNamespace(paper=PAPER, options={}), runs).figures)
    assert len(plain["alignment_g"].axes) == 2
    for f in (*figs.values(), *plain.values()):
        plt.close(f)


def test_the_cubic_entry_draws_the_training_and_test_loss_by_step_as_figs_1a_8a_9a():
    """``options.curves`` (zhu-alignment-cubic: train_loss, test_loss on a log axis): one
    figure per metric, each group's mean over seeds by step; none without the option."""
    import matplotlib.pyplot as plt
    import numpy as np

    from sgdlab.experiments.spec import load_experiment

    def seed(s):
        m = {"align/cos_1": [(100, 0.99)], "align/hess_norm_eig_1": [(100, 0.9)],
             "align/sigma_norm_eig_1": [(100, 0.9)],
             "train_loss": [(0, 1.0 + s), (100, 0.01 + s / 100)],
             "test_loss": [(0, 2.0 + s), (100, 0.1)]}
        return run("mlp-251", s, metrics=m)
    runs = [seed(0), seed(1)]
    spec = load_experiment("zhu-alignment-cubic", "cpu")
    figs = dict(zhu.zhu_alignment(SimpleNamespace(paper=PAPER, options=spec.options),
                                  runs).figures)
    assert {"curve_train_loss", "curve_test_loss"} <= set(spec.outputs["figures"])
    for name, want in (("curve_train_loss", [1.5, 0.015]), ("curve_test_loss", [2.5, 0.1])):
        ax = figs[name].axes[0]
        (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("mlp-251")]
        np.testing.assert_allclose(line.get_xdata(), [0, 100])
        np.testing.assert_allclose(line.get_ydata(), want)
        assert ax.get_yscale() == "log"
    plain = dict(zhu.zhu_alignment(SimpleNamespace(paper=PAPER, options={}), runs).figures)
    assert set(plain) == {"alignment_mlp-251", "alignment_history"}
    for f in (*figs.values(), *plain.values()):
        plt.close(f)


def _near_minimum_run(seed, final_loss):
    """One seed of aligned H and Σ (k = 1) and a small stable residual whose last training
    loss is ``final_loss``."""
    m = {"align/cos_1": [(10, 0.99)], "align/hess_norm_eig_1": [(10, 0.9)],
         "align/sigma_norm_eig_1": [(10, 0.88)],
         "align/residual": [(t, 0.2 if t else 0.9) for t in range(11)],
         "train_loss": [(0, 0.1), (10, final_loss)]}
    return run("g", seed, summary={"num_params": 10}, metrics=m)


def test_the_alignment_is_judged_only_where_every_seed_ends_near_a_minimum():
    """With ``near_minimum_loss_below`` (ε = 10⁻³), a seed ending at a training loss of 0.02
    leaves Fig. 1's two statements ("near the global minima", line 113) not judged though the
    cosines and eigenvalues agree; the residual's claims keep their verdicts. A loss at ε is
    not below it; every seed below ε, or no ε, judges them."""
    spec = SimpleNamespace(paper=PAPER, options={
        "tests": ["cosine", "eigenvalues", "residual"], "near_minimum_loss_below": 1e-3})
    far = [_near_minimum_run(0, 2e-4), _near_minimum_run(1, 0.02)]
    cos, eig, small, stable = zhu.zhu_alignment(spec, far).conclusions
    assert (cos.agrees_with_paper, eig.agrees_with_paper) == (None, None)
    assert "not judged: 1 of 2 seeds end with a training loss not below ε = 0.001" in cos.text
    assert "0.0002, 0.02" in eig.text
    assert (small.agrees_with_paper, stable.agrees_with_paper) == (True, True)
    at = zhu.zhu_alignment(spec, [_near_minimum_run(0, 1e-3)]).conclusions
    assert [c.agrees_with_paper for c in at] == [None, None, True, True]
    near = [_near_minimum_run(0, 2e-4), _near_minimum_run(1, 9e-4)]
    assert [c.agrees_with_paper for c in zhu.zhu_alignment(spec, near).conclusions] == [True] * 4
    ungated = SimpleNamespace(paper=PAPER, options={"tests": ["cosine", "eigenvalues"]})
    assert [c.agrees_with_paper for c in zhu.zhu_alignment(ungated, far).conclusions] == [
        True, True]


def test_a_seed_without_a_training_loss_is_not_known_to_be_near_a_minimum():
    r = _near_minimum_run(0, 2e-4)
    del r.metrics["train_loss"]
    spec = SimpleNamespace(paper=PAPER, options={"near_minimum_loss_below": 1e-3})
    cos, eig = zhu.zhu_alignment(spec, [r]).conclusions
    assert (cos.agrees_with_paper, eig.agrees_with_paper) == (None, None)
    assert "(nan)" in cos.text


@pytest.mark.parametrize("eps, said", [(0, "got 0"), (-1e-3, "got -0.001"),
                                       (True, "not a bool (True)"), ("tiny", "got 'tiny'")])
def test_a_bad_near_minimum_threshold_fails_the_plan_before_training(tmp_path, eps, said):
    """Refused by the dry run and the run (``claim_problems``), not after all the training
    when the report is written; the problem names the file, the option and the value."""
    import yaml

    from sgdlab.experiments.plan import plan_experiment
    from sgdlab.experiments.runner import run_experiment
    from sgdlab.experiments.spec import CATALOGUE_DIR

    raw = yaml.safe_load((CATALOGUE_DIR / "zhu-alignment-cubic.yaml").read_text())
    # a name of its own: a copy keeping the entry's name has its non-numbers refused on load
    raw["name"], raw["options"]["near_minimum_loss_below"] = "mine", eps
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump(raw, allow_unicode=True))
    where = {"scale": "smoke", "store_path": str(tmp_path / "s.sqlite"),
             "out_dir": tmp_path / "out"}
    [problem] = plan_experiment(str(cfg), **where).problems
    assert problem == (f"{cfg}: options.near_minimum_loss_below must be a finite number > 0 "
                       f"or null, {said}")
    with pytest.raises(ConfigError, match="near_minimum_loss_below"):
        run_experiment(str(cfg), progress=None, **where)
    assert not any(p.name in ("s.sqlite", "out") for p in tmp_path.iterdir())
