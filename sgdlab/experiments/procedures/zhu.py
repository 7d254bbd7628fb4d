"""Analyses for Zhu, Wu, Yu, Wu & Ma (2019), "The Regularization Effects of Anisotropic Noise in
Stochastic Gradient Descent" (arXiv): Σ–H alignment (Figs. 1, 8-9), noise norm vs gradient norm
(Figs. 2, 11), projection residual (Fig. 4), the noisy-label comparison (Fig. 5). The escape
experiment's analyses (Fig. 3) are in :mod:`sgdlab.experiments.procedures.landscape_runs`."""
from __future__ import annotations

import re

from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.procedures import ClaimNames, StoredRun, register_analysis
from sgdlab.experiments.procedures.common import (CLAIM_OPTIONS, CURVE_OPTIONS, by_group,
                                                  by_run_group, curve_label, finite, group_curves,
                                                  mean_curve, seeds_label, seeds_note)
from sgdlab.experiments.spec import cited
from sgdlab.report.tables import Table, mean_std

_COS = re.compile(r"^align/cos_(\d+)$")


def _last(r: StoredRun, name: str) -> float:
    s = r.metrics.get(name, [])
    return float(s[-1][1]) if s else float("nan")


def _k(r: StoredRun) -> int:
    return max([int(m.group(1)) for n in r.metrics if (m := _COS.match(n))] or [0])


SIGMA, UNCENTRED = "Σ", "E[g gᵀ]"


def _second_moment(runs: list[StoredRun]) -> str:
    """The matrix the runs' ``alignment`` instrument set against H: eq. (3)'s covariance Σ
    (its default), the uncentred second moment E[g gᵀ] = Σ + ḡḡᵀ of eq. (6) where every run's
    has ``centred: false`` (the reading ``sigma-form=uncentred``), or either for a mixture."""
    kinds = {any(isinstance(m, dict) and m.get("name") == "alignment"
                 and m.get("centred") is False for m in r.params.get("measure") or [])
             for r in runs}
    if kinds == {True}:
        return UNCENTRED
    return SIGMA if kinds != {True, False} else f"{SIGMA} or {UNCENTRED}"


def _third(n: int) -> int:
    """How many log points make a third of ``n``: ⌈n/3⌉ (one for one or two points)."""
    return -(-n // 3)


def _steps(ts: list[float]) -> str:
    """"step a" or "steps a-b" for the steps of a window of log points."""
    if not ts:
        return "no steps"
    return f"step {ts[0]:g}" if ts[0] == ts[-1] else f"steps {ts[0]:g}-{ts[-1]:g}"


ALIGNMENT_TESTS = ("cosine", "eigenvalues", "residual")


@register_analysis("zhu_alignment", options={
    "tests": f"list of one of {', '.join(ALIGNMENT_TESTS)}", "cosine_above": "number",
    "eigenvalue_atol": "number>=0", "eigenvalue_rtol": "number>=0|null",
    "residual_small_fraction": "number>=0", "residual_spread": "number>=0",
    "near_minimum_loss_below": "number>0|null", "cosine_history": "bool", **CURVE_OPTIONS})
def zhu_alignment(spec, runs: list[StoredRun]) -> Analysis:
    """Leading-eigenvector cosines and Frobenius-normalised eigenvalues of H and Σ (Figs. 1, 8,
    9) and the projection residual e(U_k, V_k) over training (eq. (13), Fig. 4).

    ``options.tests`` chooses which of the paper's statements are checked, per run group:

    - ``cosine``: at the last measurement every one of the k leading pairs has
      |cos(u_i, v_i)| > ``cosine_above`` ("the cosine similarity between leading eigen vectors
      of H and Σ approaches 1");
    - ``eigenvalues``: for i <= k the gap |a − b| between a = λ_i(H)/‖H‖_F and
      b = λ_i(Σ)/‖Σ‖_F is at most ``eigenvalue_atol`` (default 0.1) and at most
      ``eigenvalue_rtol`` (default 0.25; null: no relative test) times max(|a|, |b|) ("the
      normalized eigenvalues are extremely similar"): a nearly rank-one normalised spectrum
      puts every pair past the first within any absolute tolerance, so the relative one is
      what tests them;
    - ``residual``, two conclusions on e (the mean over seeds) at the log points in the last
      third of training (steps ≥ 2/3 of the last logged one; log points crowd the start, so a
      third of them would reach back into the early descent): "small" — their mean is at
      most ``residual_small_fraction``
      (default 0.25) times k and below e at the first measurement; "stable" — their spread
      (max − min)/mean is at most ``residual_spread`` (default 0.25); fewer than two points
      there leave stability undecided ("the projection residual becomes small and stable in
      the later stage of optimization"). The residual of random k-subspaces of R^d,
      k − k²/d, is stated for reference.

    ``options.near_minimum_loss_below`` (ε; default null: no gate) judges ``cosine`` and
    ``eigenvalues`` only where every seed's last ``train_loss`` is below ε: the paper's
    alignment holds "near the global minima" (§3, line 113), the set L(θ) < ϵ of §2 (line 37),
    as eq. (7) asks θ_t "not far from the ground truth" (line 76); away from one the two
    matrices need not agree, so a group with a seed above ε (or without a finite loss) is not
    judged there, whatever its cosines. The residual's claims are of "the later stage of
    optimization" and keep no gate.

    The values are means over seeds; a seed without a finite value where a test reads them
    (a diverged run) makes that test inconclusive rather than leave it to the other seeds.
    ``options.cosine_history`` adds to each group's figure its k leading cosines over
    training, as Figs. 1(b), 8(b) and 9(b) plot them; ``options.curves`` draws those
    metrics of every group over training (``options.logy``: on a log axis), as Figs. 1(a),
    8(a) and 9(a) draw the training and test loss.
    """
    from sgdlab.report.figures.charts import curves, panels
    from sgdlab.report.figures.curvature import alignment_figure

    o = spec.options
    tests = o.get("tests", ["cosine", "eigenvalues"])
    groups = by_group(runs, key=lambda r: r.group)
    rows, concl, figs = [], [], []
    for g, rs in groups.items():
        k = max(_k(r) for r in rs)      # a seed that measured nothing has no k
        sigma = _second_moment(rs)
        d = int(rs[0].summary.get("num_params", 0)) or None
        cos_end, pairs = [], []
        for i in range(1, k + 1):
            c = mean_std([_last(r, f"align/cos_{i}") for r in rs])
            h = mean_std([_last(r, f"align/hess_norm_eig_{i}") for r in rs])
            s = mean_std([_last(r, f"align/sigma_norm_eig_{i}") for r in rs])
            rows.append([g, i, c[0], c[1], h[0], s[0]])
            cos_end.append(c[0])
            pairs.append((h[0], s[0]))
        res_steps, res_mean, _ = mean_curve(rs, "align/residual")
        history = None
        if o.get("cosine_history"):     # Figs. 1(b), 8(b), 9(b): each leading cosine by step
            history = [(st, m, sd if len(rs) > 1 else None) for st, m, sd in
                       (mean_curve(rs, f"align/cos_{i}") for i in range(1, k + 1))]
        # the table's means over the seeds, not one seed's values
        figs.append((f"alignment_{g}", alignment_figure(
            cos_end, [h for h, _ in pairs], [s for _, s in pairs],
            residual=mean_std([_last(r, "align/residual") for r in rs])[0],
            title=f"{cited(spec.paper)}{sigma}–H alignment of {g} at the end of training"
                  + (f", mean over {len(rs)} seeds" if len(rs) > 1 else ""),
            uncentred=sigma == UNCENTRED, cosine_history=history)))
        # (finding, agrees, claim, evidence) per requested test, with the seeds that have no
        # finite value where it reads: a verdict on the mean of the others would hide them
        checks: list[tuple[tuple, int]] = []

        def lost(names: list[str], steps: list[float] | None = None) -> int:
            """Seeds without a finite value of every series in ``names`` at the end (at
            each of ``steps``): the means over seeds leave them out."""
            def ok(r: StoredRun, n: str) -> bool:
                if steps is None:
                    return finite(_last(r, n))
                got = dict(r.metrics.get(n, []))
                return all(finite(got.get(t)) for t in steps)
            return sum(1 for r in rs if not all(ok(r, n) for n in names))
        if "cosine" in tests:
            thr = float(o.get("cosine_above", 0.9))
            # every pair must be finite: min() skips a NaN that is not first
            lo = min(cos_end) if cos_end and all(map(finite, cos_end)) else float("nan")
            checks.append(((
                f"|cos(u_i, v_i)| of the {k} leading eigenvector pairs"
                f"{'' if sigma == SIGMA else f' of H and {sigma}'} at the end = "
                f"{', '.join(f'{c:.3f}' for c in cos_end)} (smallest {lo:.3f}, threshold {thr})",
                None if not finite(lo) else lo > thr,
                f"the cosines of the {k} leading eigenvector pairs of H and Σ approach 1",
                {"cosines": cos_end, "threshold": thr}),
                lost([f"align/cos_{i}" for i in range(1, k + 1)])))
        if "eigenvalues" in tests:
            checks.append((_eigenvalue_check(o, pairs, sigma),
                           lost([f"align/{w}_norm_eig_{i}" for w in ("hess", "sigma")
                                 for i in range(1, k + 1)])))
        near = len(checks)      # the checks above need a net near a minimum
        if "residual" in tests:
            res = _residual_checks(o, k, d, res_steps, res_mean)
            gone = lost(["align/residual"], res[0][3]["late_steps"])
            checks += [(c, gone) for c in res]
        found = [((text + f"; {gone} of {len(rs)} seeds have no finite value there, so "
                    "inconclusive", None, claim, ev) if gone else (text, ok, claim, ev))
                  for (text, ok, claim, ev), gone in checks]
        # Fig. 1's two statements are of a net near a minimum (§2-3); the residual's are not
        far = _far_from_minimum(o, rs)
        found = [(text + far, None, claim, ev) if far and i < near else (text, ok, claim, ev)
                 for i, (text, ok, claim, ev) in enumerate(found)]
        concl += [Conclusion(f"{g}: {text}", agrees_with_paper=ok, claim=claim, evidence=ev)
                  for text, ok, claim, ev in found]
    sigma = _second_moment(runs)
    table = Table("alignment", ["run", "i", "|cos(u_i, v_i)|", "std", "λ_i(H)/‖H‖_F",
                                f"λ_i({sigma})/‖{sigma}‖_F"], rows, keys=["run", "i"],
                  caption="at the last measurement; "
                  "cosine mean and std over seeds, eigenvalues mean over seeds"
                  + ("" if sigma == SIGMA else f"; v_i the eigenvectors of {sigma}, "
                     f"{UNCENTRED} = Σ + ḡḡᵀ the uncentred second moment of the per-sample "
                     "gradients (eq. (6))"))
    # two panels: the residual (in [0, k]) and a cosine (in [0, 1]) are different quantities
    fig, axes = panels(2)
    for ax, name, ylabel in ((axes[0], "align/residual", "projection residual e(U_k, V_k)"),
                             (axes[1], "align/cos_1", f"|cos(u_1(H), v_1({sigma}))|")):
        series = {}
        for g, rs in groups.items():
            st, m, sd, n = mean_curve(rs, name, counts=True)
            # e ranges over [0, k]: the legend gives each group's k
            k = f", k = {max(_k(r) for r in rs)}" if name == "align/residual" else ""
            if st:
                series[seeds_label(g + k, n, len(rs))] = (st, m, sd if len(rs) > 1 else None)
        # measured at log-spaced steps: on a linear axis most points sit at its origin
        curves(series, xlabel="step", ylabel=ylabel, ax=ax, log_steps_x=True)
    fig.suptitle(f"{cited(spec.paper)}projection residual and leading cosine over "
                 "training, "
                 + seeds_note(groups), fontsize=10)
    fig.tight_layout()
    figs.append(("alignment_history", fig))
    if o.get("curves"):     # Figs. 1(a), 8(a), 9(a): training and test loss by iteration
        figs += group_curves(groups, o["curves"], lambda g, rs, st: st, xlabel="step",
                             title=lambda m: f"{cited(spec.paper)}{curve_label(m, o)}",
                             ylabel=lambda m: curve_label(m, o), logy=o.get("logy", ()))
    return Analysis(tables=[table], figures=figs, conclusions=concl)


def _far_from_minimum(o: dict, rs: list[StoredRun]) -> str:
    """"" where ``options.near_minimum_loss_below`` is unset or every seed's last training
    loss is below it; else the note that leaves :func:`zhu_alignment`'s cosine and eigenvalue
    claims not judged, naming the seeds' losses."""
    eps = o.get("near_minimum_loss_below")
    if eps is None:
        return ""
    losses = [_last(r, "train_loss") for r in rs]
    far = sum(1 for v in losses if not (finite(v) and v < eps))
    if not far:
        return ""
    return (f"; not judged: {far} of {len(rs)} seeds end with a training loss not below "
            f"ε = {eps:g} ({', '.join(f'{v:.3g}' for v in losses)}), so not near a minimum, "
            "where the paper's alignment is claimed")


def _eigenvalue_check(o: dict, pairs: list[tuple[float, float]], sigma: str = SIGMA
                      ) -> tuple:
    """The ``eigenvalues`` test of :func:`zhu_alignment` on the (λ_i(H)/‖H‖_F,
    λ_i(Σ)/‖Σ‖_F) pairs, ``sigma`` the matrix measured (:func:`_second_moment`): (finding,
    agrees, claim, evidence); the claim is the paper's, of Σ."""
    gaps = [abs(a - b) for a, b in pairs]
    atol = float(o.get("eigenvalue_atol", 0.1))
    rtol = o.get("eigenvalue_rtol", 0.25)
    rtol = None if rtol is None else float(rtol)
    rel = [gap / max(abs(a), abs(b)) if max(abs(a), abs(b)) > 0 else 0.0
           for gap, (a, b) in zip(gaps, pairs)]
    worst = max(gaps) if gaps else float("nan")
    worst_rel = max(rel) if rel else float("nan")
    ok = all(gap <= atol for gap in gaps) and (rtol is None or all(r <= rtol for r in rel))
    text = (f"gaps between the Frobenius-normalised leading eigenvalues of H and {sigma} at the "
            f"end = {', '.join(f'{x:.3f}' for x in gaps)} (largest {worst:.3f}, tolerance {atol})")
    if rtol is not None:
        text += (f"; relative to the larger of each pair {', '.join(f'{x:.2f}' for x in rel)} "
                 f"(largest {worst_rel:.2f}, tolerance {rtol})")
    known = pairs and all(finite(a) and finite(b) for a, b in pairs)   # (max() skips NaN)
    return (text, ok if known else None,
            "the normalised leading eigenvalues of H and Σ are extremely similar",
            {"gaps": gaps, "relative_gaps": rel, "tolerance": atol, "relative_tolerance": rtol})


def _residual_checks(o: dict, k: int, d: int | None, steps: list[float],
                     e: list[float]) -> list[tuple]:
    """The ``residual`` test of :func:`zhu_alignment`: "small" and "stable", each (finding,
    agrees, claim, evidence), on the residual e (mean over seeds) at the log points."""
    frac = float(o.get("residual_small_fraction", 0.25))
    max_spread = float(o.get("residual_spread", 0.25))
    pts = [(t, v) for t, v in zip(steps, e) if finite(v)]
    late = [(t, v) for t, v in pts if t >= 2 * pts[-1][0] / 3] if pts else []
    start = pts[0][1] if pts else float("nan")
    end = pts[-1][1] if pts else float("nan")
    vals = [v for _, v in late]
    mean = sum(vals) / len(vals) if vals else float("nan")
    rand = k - k * k / d if d else float("nan")
    bound = frac * k
    window = f"the last third of training ({_steps([t for t, _ in late])})"
    ref = f"; random {k}-subspaces of R^{d} give {rand:.3g}" if finite(rand) else ""
    small = (
        f"projection residual e(U_{k}, V_{k}) over {window}: mean {mean:.3g}, bound "
        f"{frac:g}·k = {bound:.3g} (e ∈ [0, {k}]); {start:.3g} at the first measurement, "
        f"{end:.3g} at the end{ref}",
        None if not (finite(mean) and finite(start)) else mean <= bound and mean < start,
        "the projection residual becomes small in the later stage of training",
        {"residual_late_mean": mean, "residual_start": start, "residual_end": end,
         "small_bound": bound, "random_expectation": rand, "late_steps": [t for t, _ in late]})
    if len(vals) < 2:
        spread = float("nan")
        txt = f"projection residual over {window}: fewer than two points, stability untestable"
    else:
        spread = (max(vals) - min(vals)) / mean if mean > 0 else 0.0
        txt = (f"projection residual over {window}: {', '.join(f'{v:.3g}' for v in vals)}, "
               f"spread (max − min)/mean = {spread:.2f} (bound {max_spread:g})")
    stable = (txt, None if not finite(spread) else spread <= max_spread,
              "the projection residual is stable in the later stage of training",
              {"relative_spread": spread, "spread_bound": max_spread,
               "late_values": vals})
    return [small, stable]


NOISE_SCALES = ("figure", "step")


def _step_factor(r: StoredRun) -> float:
    """1/sqrt(η) of the run's constant step size (``params.optimizer.lr``): the factor from
    the figure's noise magnitude sqrt(η Tr Σ/m) to the noise of one step relative to its
    drift, (η/√m)‖ε‖ / (η‖g₀‖) = sqrt(Tr Σ/m)/‖g₀‖ (eq. (4)). NaN without a positive lr."""
    lr = (r.params.get("optimizer") or {}).get("lr")
    ok = isinstance(lr, (int, float)) and not isinstance(lr, bool) and finite(lr) and lr > 0
    return lr ** -0.5 if ok else float("nan")


def _ratio_thirds(r: StoredRun, scale: str = "figure"
                  ) -> tuple[float, float, list[float], list[float]]:
    """Median noise/gradient norm ratio over the first and over the last third of the run's
    log points (those with both norms logged), and the steps of each third. The thirds are
    of the points logged, the medians of those in them with both norms finite and ‖g₀‖ > 0:
    a run whose late norms are NaN (diverged) has no late ratio, rather than a "last third"
    drawn from its early points. NaN for a third without such a point. ``scale``: the ratio
    of the figure's sqrt(η Tr Σ/m) to ‖g₀‖ (``"figure"``), or of one step's noise to its
    drift, sqrt(Tr Σ/m)/‖g₀‖ (``"step"``, :func:`_step_factor`)."""
    import statistics

    f = 1.0 if scale == "figure" else _step_factor(r)
    gn = dict(r.metrics.get("noise/grad_norm", []))
    nn = dict(r.metrics.get("noise/noise_norm", []))
    pts = [(t, f * nn[t] / gn[t] if finite(gn[t]) and gn[t] > 0 and finite(nn[t])
            else float("nan")) for t in sorted(set(gn) & set(nn))]
    if not pts:
        return float("nan"), float("nan"), [], []
    n = _third(len(pts))
    first, last = pts[:n], pts[-n:]

    def median(window: list[tuple[float, float]]) -> float:
        vals = [v for _, v in window if finite(v)]
        return float(statistics.median(vals)) if vals else float("nan")
    return median(first), median(last), [t for t, _ in first], [t for t, _ in last]


def _noise_variance(runs: list[StoredRun]) -> str:
    """What the runs' ``noise/noise_norm`` is the root of, over η: Tr Σ/m of eq. (2), or
    Tr Σ (N − m)/(m (N − 1)) where every run's ``noise_magnitude`` instrument took batches
    of distinct samples (``replacement: false``); both for a mixture."""
    def without(r: StoredRun) -> bool:
        return any(isinstance(m, dict) and m.get("name") == "noise_magnitude"
                   and m.get("replacement") is False for m in r.params.get("measure") or [])
    kinds = {without(r) for r in runs}
    if kinds == {True}:
        return "Tr Σ (N − m)/(m (N − 1))"
    return "Tr Σ/m" if kinds != {True, False} else "Tr Σ/m or Tr Σ (N − m)/(m (N − 1))"


@register_analysis("zhu_noise_magnitude", options={
    "dominance_ratio": "number>0", "noise_scale": f"one of {', '.join(NOISE_SCALES)}"})
def zhu_noise_magnitude(spec, runs: list[StoredRun]) -> Analysis:
    """‖∇L‖ vs the noise magnitude sqrt(η Tr Σ / m) over training (Fig. 2).

    The ratio sqrt(η Tr Σ / m)/‖∇L‖ (``options.noise_scale="figure"``, the default; ``"step"``:
    one step's noise against its drift, sqrt(Tr Σ / m)/‖∇L‖, the figure's ratio over √η) is
    read, per run, as its median over the first and over
    the last third of the log points (⌈n/3⌉ each; the mean over seeds): ‖∇L‖ of a late
    mini-batch-trained iterate swings several-fold from one log point to the next, so a
    single end point would decide the verdict. The paper's "the noise dominates, especially
    in the late iterations" holds when the late median exceeds ``options.dominance_ratio``
    (default 1; "overwhelmingly" read as an order of magnitude: 10; the ratio at 10 itself
    counts) and the early one."""
    from sgdlab.report.figures.curvature import noise_magnitude_figure

    groups = by_group(runs, key=lambda r: r.group)
    dom = float(spec.options.get("dominance_ratio", 1.0))
    scale = spec.options.get("noise_scale", "figure")
    var = _noise_variance(runs)     # the readings' names of what the runs measured
    what = ("noise/gradient norm ratio" if scale == "figure" else
            f"ratio of one step's noise to its drift, sqrt({var})/‖g₀‖,")
    rows, concl, figs = [], [], []
    for g, rs in groups.items():
        thirds = [_ratio_thirds(r, scale) for r in rs]
        r_start = mean_std([t[0] for t in thirds])[0]
        r_end = mean_std([t[1] for t in thirds])[0]
        # a seed without a ratio in one of the thirds would leave the mean to the others
        lost = sum(1 for t in thirds if not (finite(t[0]) and finite(t[1])))
        early, late = thirds[0][2], thirds[0][3]
        gn_end = mean_std([_last(r, "noise/grad_norm") for r in rs])[0]
        nn_end = mean_std([_last(r, "noise/noise_norm") for r in rs])[0]
        rows.append([g, len(rs), r_start, r_end, gn_end, nn_end])
        # one trajectory of the norms (a mean would smooth the swings the medians are for)
        one = f"{g}, seed {rs[0].seed}" if len(rs) > 1 else g
        # the figure's own spelling, "Tr Σ / m", as noise_magnitude_figure's default
        noise = f"sqrt(η {_noise_variance(rs)})".replace("Tr Σ/m)", "Tr Σ / m)")
        figs.append((f"noise_magnitude_{g}", noise_magnitude_figure(
            rs[0].metrics, title=f"{cited(spec.paper)}‖∇L‖ vs {noise} ({one})",
            noise=noise)))
        concl.append(Conclusion(
            f"{g}: median {what} {r_start:.3g} over the first third of the "
            f"log points ({_steps(early)}), {r_end:.3g} over the last third ({_steps(late)}); "
            f"dominance read as a ratio {'above 1' if dom == 1 else f'of at least {dom:g}'}"
            + (f"; {lost} of {len(rs)} seeds have no finite ratio in a third, so inconclusive"
               if lost else ""),
            # a missing norm is no evidence either way, not a disagreement
            agrees_with_paper=(None if lost or not (finite(r_start) and finite(r_end))
                               else (r_end > 1 if dom == 1 else r_end >= dom)
                               and r_end > r_start),
            claim="late in training the noise magnitude dominates the gradient norm"
                  + ("" if dom == 1 else f" overwhelmingly (by a factor of at least {dom:g})"),
            evidence={"ratio_first_third": r_start, "ratio_last_third": r_end,
                      "dominance_ratio": dom,
                      **({} if scale == "figure" else {"step_ratio": True})}))
    table = Table("noise_magnitude", ["run", "seeds", "median noise/grad, first third",
                                      "median noise/grad, last third", "‖∇L‖ at end",
                                      f"sqrt(η {var}) at end"], rows,
                  caption="medians over the first and the last third of the log points, "
                          "mean over seeds" + ("" if scale == "figure" else
                                               f"; noise/grad: sqrt({var})/‖∇L‖, one "
                                               "step's noise over its drift"))
    return Analysis(tables=[table], figures=figs, conclusions=concl)


# the values of zhu_noisy_label's table, which its claims compare
NOISY_LABEL_METRICS = [("test_acc", "test accuracy"), ("expected_sharpness", "expected sharpness"),
                       ("train_acc", "train accuracy"), ("train_loss", "train loss")]


def _noisy_label_names(spec, runs) -> ClaimNames:
    return by_run_group(spec, runs, [k for k, _ in NOISY_LABEL_METRICS])


@register_analysis("zhu_noisy_label", claim_names=_noisy_label_names, options={
    **CLAIM_OPTIONS, "best_of": "dict", "table_name": "str", "curves": CURVE_OPTIONS["curves"],
    "curve_labels": CURVE_OPTIONS["curve_labels"]})
def zhu_noisy_label(spec, runs: list[StoredRun]) -> Analysis:
    """Test accuracy and expected sharpness of the dynamics started from the GD solution
    (Fig. 5), compared by ``options.claims``; curves of ``options.curves`` over iterations
    from the start of training (a run started from another's weights continues its x axis).
    ``options.references`` ``{name: {metric: value}}`` are reference values the claims may
    compare a group with (e.g. "100% training accuracy"); ``options.best_of`` names the best
    of some groups by a metric (:func:`add_best_of`: the σ of GLD const a grid search picks)."""
    from sgdlab.experiments.procedures.common import (add_best_of, add_references,
                                                      check_claims, continuation_curves,
                                                      continuation_offsets, summary_table,
                                                      values_by_group)

    o = spec.options
    groups = by_group(runs, key=lambda r: r.group)
    metrics = NOISY_LABEL_METRICS
    table = summary_table(o.get("table_name", "noisy_label"), groups, metrics,
                          caption="final values, mean and std over seeds")
    # the dynamics continued from the GD solution start where its run ended: the x axis counts
    # iterations from the start of training, the start marked by a dashed line (as Fig. 5)
    starts = {v for v in continuation_offsets(groups).values() if v > 0}
    figs = continuation_curves(spec, groups, o.get("curves", ["test_acc", "sharpness/expected"]),
                               xlabel="iteration (from the start of training)", marks=starts)
    vals = values_by_group(groups, [k for k, _ in metrics])
    add_references(vals, o)
    names = add_best_of(vals, o)
    return Analysis(tables=[table], figures=figs,
                    conclusions=check_claims(o.get("claims", []), vals, names))
