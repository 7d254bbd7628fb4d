"""Analyses for Xing, Arpit, Tsirigotis & Bengio (2018), "A Walk with SGD": walk plots
(Figs. 1-2), barrier tables (Tables 1-2) and the consecutive-gradient cosine grid (Fig. 4)."""
from __future__ import annotations

import math

import numpy as np

from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.plots import curves
from sgdlab.experiments.procedures import StoredRun, register_analysis
from sgdlab.experiments.procedures.common import by_group, check_claims, finite
from sgdlab.experiments.procedures.jastrzebski import _spearman, clear_trend
from sgdlab.report.tables import Table, mean_std


def _mean_metric(r: StoredRun, name: str, after: int = 0) -> float:
    v = [x for s, x in r.metrics.get(name, []) if s >= after and math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def _epoch_barriers(r: StoredRun, epoch: int = 1) -> tuple[float, float]:
    """(barriers crossed, steps interpolated) in ``epoch`` from the walk instrument's
    per-epoch metrics."""
    ep = dict(r.metrics.get("walk_epoch", []))
    bar = dict(r.metrics.get("walk_epoch_barriers", []))
    st = dict(r.metrics.get("walk_epoch_steps", []))
    for s, e in ep.items():
        if int(e) == epoch:
            return bar.get(s, float("nan")), st.get(s, float("nan"))
    return float("nan"), float("nan")


@register_analysis("xing_walk")
def xing_walk(spec, runs: list[StoredRun]) -> Analysis:
    """Walk plots per run group (first seed), per-epoch barrier table, cosine summary.

    Options: ``max_steps`` (crop of the walk panel), ``after_step`` (cosines averaged over
    steps >= this, past the initial transient), ``gd`` / ``sgd`` (group labels whose
    cosines are compared), ``max_barrier_fraction`` (what "few barriers" means, default 0.1)."""
    from sgdlab.report.figures.walk import walk_epoch_table, walk_figure

    o = spec.options
    groups = by_group(runs, key=lambda r: r.group)
    first = {g: rs[0].metrics for g, rs in groups.items()}
    fig = walk_figure(first, max_steps=o.get("max_steps"),
                      title=f"{spec.paper['author']} {spec.paper['figure']}")
    table = walk_epoch_table({f"{r.group} (seed {r.seed})": r.metrics for r in runs})
    rows, vals = [], {}
    after = int(o.get("after_step", 0))     # skip the initial transient (Xing plot it too)
    for g, rs in groups.items():
        cos = mean_std([_mean_metric(r, "grad_cosine", after) for r in rs])
        b1 = [(_epoch_barriers(r, 1)) for r in rs]
        frac = [b / s for b, s in b1 if finite(b) and finite(s) and s > 0]
        bars_ = [b for b, _ in b1 if finite(b)]
        rows.append([g, len(rs), cos[0], cos[1], float(np.mean(bars_)) if bars_ else None,
                     float(np.mean(frac)) if frac else None])
        vals[g] = {"grad_cosine": cos[0],
                   "epoch1_barrier_fraction": float(np.mean(frac)) if frac else float("nan")}
    summary = Table("walk_summary", ["run", "seeds", f"mean cos(g_t, g_t+1), steps ≥ {after}", "std",
                                     "barriers in epoch 1", "fraction of steps"], rows,
                    caption="consecutive-gradient cosine and barriers crossed in epoch 1")
    concl = []
    gd, sgd = o.get("gd"), o.get("sgd")
    if gd in vals:
        c = vals[gd]["grad_cosine"]
        concl.append(Conclusion(
            f"{gd}: mean cosine of consecutive gradients over steps ≥ {after} = {c:.3f}",
            agrees_with_paper=finite(c) and c < float(o.get("gd_cosine_below", -0.5)),
            claim="full-batch GD bounces between valley walls: consecutive gradients point in "
                  "nearly opposite directions (cosine near −1)"))
    if gd in vals and sgd in vals:
        concl += check_claims([{"greater": [sgd, gd], "metric": "grad_cosine",
                                "metric_name": "mean gradient cosine",
                                "claim": "SGD's consecutive gradients are far less anti-aligned "
                                         "than GD's"}], vals)
    mb = float(o.get("max_barrier_fraction", 0.1))
    for g in o.get("few_barriers", []):
        if g in vals:
            f = vals[g]["epoch1_barrier_fraction"]
            concl.append(Conclusion(
                f"{g}: barriers crossed on {f:.1%} of the interpolated steps of epoch 1",
                agrees_with_paper=finite(f) and f <= mb,
                claim=f"few or no barriers are crossed early in training (≤ {mb:.0%} of steps)"))
    return Analysis(tables=[summary, table], figures=[("walk", fig)], conclusions=concl)


@register_analysis("xing_cosine_grid")
def xing_cosine_grid(spec, runs: list[StoredRun]) -> Analysis:
    """Mean consecutive-gradient cosine per (lr, batch size): Fig. 4."""
    from sgdlab.experiments.procedures.jastrzebski import lr_and_batch

    after = int(spec.options.get("after_step", 0))
    groups = by_group(runs, key=lambda r: "lr={:g},B={:g}".format(*lr_and_batch(r)))
    rows = []
    for g, rs in groups.items():
        lr, b = lr_and_batch(rs[0])
        m, s = mean_std([_mean_metric(r, "grad_cosine", after) for r in rs])
        rows.append([lr, int(b), m, s, len(rs)])
    rows.sort(key=lambda r: (r[0], r[1]))
    table = Table("cosine_grid", ["lr", "batch size", "mean cos(g_t, g_t+1)", "std", "seeds"],
                  rows, caption=f"mean over steps ≥ {after} and seeds")
    series = {}
    for lr in sorted({r[0] for r in rows}):
        pts = [r for r in rows if r[0] == lr]
        series[f"lr={lr:g}"] = ([r[1] for r in pts], [r[2] for r in pts], None)
    fig = curves(series, xlabel="batch size", ylabel="mean cos(g_t, g_{t+1})", logx=True,
                 markers=True, title=f"{spec.paper['author']} {spec.paper['figure']}")
    concl = []
    for col, name in ((1, "batch size"), (0, "learning rate")):
        rho = _spearman([r[col] for r in rows], [r[2] for r in rows])
        concl.append(Conclusion(
            f"gradient cosine vs {name}: Spearman ρ = {rho:.2f}",
            agrees_with_paper=clear_trend(rho, "negative"),
            claim=f"a larger {name} makes consecutive gradients more anti-correlated",
            evidence={"spearman": rho}))
    return Analysis(tables=[table], figures=[("cosine_grid", fig)], conclusions=concl)
