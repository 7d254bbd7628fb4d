"""Analyses for Zhu, Wu, Yu, Wu & Ma (2019), "The anisotropic noise in SGD": Σ–H alignment
(Figs. 1, 8-9), noise norm vs gradient norm (Figs. 2, 11), projection residual (Fig. 4), the
noisy-label comparison (Fig. 5). The escape experiment's analyses (Fig. 3) are in
:mod:`sgdlab.experiments.procedures.landscape_runs`."""
from __future__ import annotations

import re

from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.plots import curves, panels
from sgdlab.experiments.procedures import StoredRun, register_analysis
from sgdlab.experiments.procedures.common import by_group, finite, mean_curve
from sgdlab.report.tables import Table, mean_std

_COS = re.compile(r"^align/cos_(\d+)$")


def _last(r: StoredRun, name: str) -> float:
    s = r.metrics.get(name, [])
    return float(s[-1][1]) if s else float("nan")


def _first(r: StoredRun, name: str) -> float:
    s = r.metrics.get(name, [])
    return float(s[0][1]) if s else float("nan")


def _k(r: StoredRun) -> int:
    return max([int(m.group(1)) for n in r.metrics if (m := _COS.match(n))] or [0])


@register_analysis("zhu_alignment")
def zhu_alignment(spec, runs: list[StoredRun]) -> Analysis:
    """Leading-eigenvector cosines and Frobenius-normalised eigenvalues of H and Σ (Figs. 1, 8,
    9) and the projection residual e(U_k, V_k) over training (eq. (13), Fig. 4).

    ``options.tests`` chooses which of the paper's statements are checked, per run group:

    - ``cosine``: at the last measurement every one of the k leading pairs has
      |cos(u_i, v_i)| > ``cosine_above`` ("the cosine similarity between leading eigen vectors
      of H and Σ approaches 1");
    - ``eigenvalues``: |λ_i(H)/‖H‖_F − λ_i(Σ)/‖Σ‖_F| <= ``eigenvalue_atol`` for i <= k ("the
      normalized eigenvalues are extremely similar");
    - ``residual``: e at the end is below e at the first measurement and below the residual
      of random k-subspaces of R^d, k − k²/d ("the projection residual becomes small").
    """
    from sgdlab.report.figures.curvature import alignment_figure

    o = spec.options
    tests = o.get("tests", ["cosine", "eigenvalues"])
    groups = by_group(runs, key=lambda r: r.group)
    rows, concl, figs = [], [], []
    for g, rs in groups.items():
        k = _k(rs[0])
        d = int(rs[0].summary.get("num_params", 0)) or None
        cos_end, gaps = [], []
        for i in range(1, k + 1):
            c = mean_std([_last(r, f"align/cos_{i}") for r in rs])
            h = mean_std([_last(r, f"align/hess_norm_eig_{i}") for r in rs])
            s = mean_std([_last(r, f"align/sigma_norm_eig_{i}") for r in rs])
            rows.append([g, i, c[0], c[1], h[0], s[0]])
            cos_end.append(c[0])
            gaps.append(abs(h[0] - s[0]))
        res_end = mean_std([_last(r, "align/residual") for r in rs])[0]
        res_start = mean_std([_first(r, "align/residual") for r in rs])[0]
        r0 = rs[0]
        figs.append((f"alignment_{g}", alignment_figure(
            [_last(r0, f"align/cos_{i}") for i in range(1, k + 1)],
            [_last(r0, f"align/hess_norm_eig_{i}") for i in range(1, k + 1)],
            [_last(r0, f"align/sigma_norm_eig_{i}") for i in range(1, k + 1)],
            residual=_last(r0, "align/residual"),
            title=f"{g}: Σ–H alignment at the end of training")))
        checks = []          # (finding, agrees, claim, evidence) per requested test
        if "cosine" in tests:
            thr = float(o.get("cosine_above", 0.9))
            lo = min(cos_end) if cos_end else float("nan")
            checks.append((
                f"|cos(u_i, v_i)| of the {k} leading eigenvector pairs at the end = "
                f"{', '.join(f'{c:.3f}' for c in cos_end)} (smallest {lo:.3f}, threshold {thr})",
                None if not finite(lo) else lo > thr,
                f"the cosines of the {k} leading eigenvector pairs of H and Σ approach 1",
                {"cosines": cos_end, "threshold": thr}))
        if "eigenvalues" in tests:
            tol = float(o.get("eigenvalue_atol", 0.1))
            worst = max(gaps) if gaps else float("nan")
            checks.append((
                f"largest gap between the Frobenius-normalised leading eigenvalues of H and Σ "
                f"at the end = {worst:.3f} (tolerance {tol})",
                None if not finite(worst) else worst <= tol,
                "the normalised leading eigenvalues of H and Σ are extremely similar",
                {"gaps": gaps, "tolerance": tol}))
        if "residual" in tests and d:
            rand = k - k * k / d
            checks.append((
                f"projection residual e(U_{k}, V_{k}) = {res_end:.3g} at the end "
                f"({res_start:.3g} at the first measurement); random {k}-subspaces of R^{d} give "
                f"{rand:.3g}",
                None if not (finite(res_end) and finite(res_start))
                else res_end < res_start and res_end < rand,
                "the projection residual becomes small in the later stage of training",
                {"residual_end": res_end, "residual_start": res_start,
                 "random_expectation": rand}))
        concl += [Conclusion(f"{g}: {text}", agrees_with_paper=ok, claim=claim, evidence=ev)
                  for text, ok, claim, ev in checks]
    table = Table("alignment", ["run", "i", "|cos(u_i, v_i)|", "std", "λ_i(H)/‖H‖_F",
                                "λ_i(Σ)/‖Σ‖_F"], rows, caption="at the last measurement; "
                  "cosine mean and std over seeds, eigenvalues mean over seeds")
    # two panels: the residual (in [0, k]) and a cosine (in [0, 1]) are different quantities
    fig, axes = panels(2)
    for ax, name, ylabel in ((axes[0], "align/residual", "projection residual e(U_k, V_k)"),
                             (axes[1], "align/cos_1", "|cos(u_1(H), v_1(Σ))|")):
        series = {}
        for g, rs in groups.items():
            st, m, sd = mean_curve(rs, name)
            if st:
                series[g] = (st, m, sd if len(rs) > 1 else None)
        curves(series, xlabel="step", ylabel=ylabel, ax=ax)
    fig.suptitle("projection residual and leading cosine over training", fontsize=10)
    fig.tight_layout()
    figs.append(("alignment_history", fig))
    return Analysis(tables=[table], figures=figs, conclusions=concl)


@register_analysis("zhu_noise_magnitude")
def zhu_noise_magnitude(spec, runs: list[StoredRun]) -> Analysis:
    """‖∇L‖ vs the noise magnitude sqrt(η Tr Σ / m) over training (Fig. 2)."""
    from sgdlab.report.figures.curvature import noise_magnitude_figure

    groups = by_group(runs, key=lambda r: r.group)
    rows, concl, figs = [], [], []
    for g, rs in groups.items():
        def ratio(r, at):
            gn = at(r, "noise/grad_norm")
            nn = at(r, "noise/noise_norm")
            return nn / gn if finite(gn) and gn > 0 and finite(nn) else float("nan")
        r_start = mean_std([ratio(r, _first) for r in rs])[0]
        r_end = mean_std([ratio(r, _last) for r in rs])[0]
        gn_end = mean_std([_last(r, "noise/grad_norm") for r in rs])[0]
        nn_end = mean_std([_last(r, "noise/noise_norm") for r in rs])[0]
        rows.append([g, len(rs), r_start, r_end, gn_end, nn_end])
        figs.append((f"noise_magnitude_{g}", noise_magnitude_figure(
            rs[0].metrics, title=f"{g}: ‖∇L‖ vs sqrt(η Tr Σ / m)")))
        concl.append(Conclusion(
            f"{g}: noise/gradient norm ratio {r_start:.3g} at the start, {r_end:.3g} at the end",
            # a missing norm is no evidence either way, not a disagreement
            agrees_with_paper=(None if not (finite(r_start) and finite(r_end))
                               else r_end > 1 and r_end > r_start),
            claim="late in training the noise magnitude dominates the gradient norm",
            evidence={"ratio_start": r_start, "ratio_end": r_end}))
    table = Table("noise_magnitude", ["run", "seeds", "noise/grad at start",
                                      "noise/grad at end", "‖∇L‖ at end",
                                      "sqrt(η Tr Σ/m) at end"], rows)
    return Analysis(tables=[table], figures=figs, conclusions=concl)


@register_analysis("zhu_noisy_label")
def zhu_noisy_label(spec, runs: list[StoredRun]) -> Analysis:
    """Test accuracy and expected sharpness of the dynamics started from the GD solution
    (Fig. 5), compared by ``options.claims``; curves of ``options.curves`` over iterations
    from the start of training (a run started from another's weights continues its x axis).
    """
    from sgdlab.experiments.procedures.common import (check_claims, continuation_offsets,
                                                      curve_label, curve_name, summary_table,
                                                      values_by_group)

    o = spec.options
    groups = by_group(runs, key=lambda r: r.group)
    metrics = [("test_acc", "test accuracy"), ("expected_sharpness", "expected sharpness"),
               ("train_acc", "train accuracy"), ("train_loss", "train loss")]
    table = summary_table(o.get("table_name", "noisy_label"), groups, metrics,
                          caption="final values, mean and std over seeds")
    figs = []
    # the dynamics continued from the GD solution start where its run ended: the x axis counts
    # iterations from the start of training, the start marked by a dashed line (as Fig. 5)
    offsets = continuation_offsets(groups)
    starts = sorted({v for v in offsets.values() if v > 0})
    for m in o.get("curves", ["test_acc", "sharpness/expected"]):
        series = {}
        for g, rs in groups.items():
            st, mean, sd = mean_curve(rs, m)
            if st:
                series[g] = ([s + offsets[g] for s in st], mean, sd if len(rs) > 1 else None)
        fig = curves(series, xlabel="iteration (from the start of training)",
                     ylabel=curve_label(m, o), title=f"{spec.paper['figure']}: {m}",
                     marks=starts)
        figs.append((curve_name(m), fig))
    vals = values_by_group(groups, [k for k, _ in metrics])
    return Analysis(tables=[table], figures=figs,
                    conclusions=check_claims(o.get("claims", []), vals))
