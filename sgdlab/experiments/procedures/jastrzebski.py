"""Analyses for Jastrzebski et al. (2017/2018), "Three factors influencing minima in SGD":
the η/B grid (Fig. 3), its breakdown for large β (Fig. 5) and model interpolations (Fig. 4)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.plots import curves, panels
from sgdlab.experiments.procedures import StoredRun, register_analysis
from sgdlab.experiments.procedures.common import by_group, finite, mean_curve, stat
from sgdlab.experiments.spec import get_dotted
from sgdlab.report.tables import Table


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    pts = [(a, b) for a, b in zip(x, y) if finite(a) and finite(b)]
    if len(pts) < 3:
        return float("nan")
    r = spearmanr([p[0] for p in pts], [p[1] for p in pts]).statistic
    return float(r)


def lr_and_batch(r: StoredRun) -> tuple[float, float]:
    lr = float(get_dotted(r.params, "optimizer.lr"))
    b = r.params["batch_size"]
    if b == "full":
        b = float("nan")
    return lr, float(b)


def ratio_rows(runs: list[StoredRun], metrics: list[str]):
    """Rows (lr, B, η/B, metric means..., diverged count) grouped by (lr, B)."""
    groups = by_group(runs, key=lambda r: "lr={:g},B={:g}".format(*lr_and_batch(r)))
    rows = []
    for g, rs in groups.items():
        lr, b = lr_and_batch(rs[0])
        div = sum(1 for r in rs if r.status == "diverged")
        fin = [r for r in rs if r.status != "diverged"]
        vals = [stat(fin, m)[0] if fin else float("nan") for m in metrics]
        rows.append([lr, int(b), lr / b, *vals, div, len(rs)])
    return rows


LABELS = {"hessian_top": "Hessian λ_max", "hessian_frobenius": "Hessian ‖H‖_F",
          "test_acc": "validation accuracy", "test_loss": "validation loss",
          "train_loss": "train loss"}


@register_analysis("jastrzebski_ratio_grid")
def ratio_grid(spec, runs: list[StoredRun]) -> Analysis:
    """Final curvature and accuracy against η/B; Spearman correlations check the claims
    (larger η/B ⇒ flatter: lower λ_max and ‖H‖_F; ``options.expect`` gives the signs)."""
    o = spec.options
    metrics = o.get("metrics", ["hessian_top", "hessian_frobenius", "test_acc"])
    expect: dict[str, str] = o.get("expect", {"hessian_top": "negative",
                                              "hessian_frobenius": "negative",
                                              "test_acc": "positive"})
    rows = ratio_rows(runs, metrics)
    cols = ["lr", "batch size", "lr / B"] + [LABELS.get(m, m) for m in metrics] + [
        "diverged", "seeds"]
    rows.sort(key=lambda r: (r[2], r[0]))
    table = Table("ratio_grid", cols, rows, caption="final values, mean over seeds "
                  "(diverged runs excluded from the means)")
    fig, axes = panels(len(metrics))
    conclusions = []
    for ax, (i, m) in zip(axes, enumerate(metrics)):
        by_b: dict[int, list] = {}
        for r in rows:
            by_b.setdefault(r[1], []).append(r)
        for b, rs in sorted(by_b.items()):
            ok = [r for r in rs if finite(r[3 + i])]
            ax.plot([r[2] for r in ok], [r[3 + i] for r in ok], "o-", ms=4, label=f"B={b}")
            bad = [r for r in rs if r[-2] > 0]
            for r in bad:
                ax.axvline(r[2], color="red", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("η / B")
        ax.set_ylabel(LABELS.get(m, m))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        rho = _spearman([r[2] for r in rows], [r[3 + i] for r in rows])
        sign = expect.get(m)
        if sign:
            ok = finite(rho) and (rho < 0 if sign == "negative" else rho > 0)
            conclusions.append(Conclusion(
                f"{LABELS.get(m, m)} vs η/B: Spearman ρ = {rho:.2f} over {len(rows)} (η, B) "
                f"settings ({'decreases' if rho < 0 else 'increases'} with η/B)",
                agrees_with_paper=ok,
                claim=f"{LABELS.get(m, m)} {'decreases' if sign == 'negative' else 'increases'} "
                      "as η/B grows", evidence={"spearman": rho}))
    fig.suptitle(f"{spec.paper['author']} {spec.paper['figure']}: final values vs η/B "
                 "(red dotted: diverged)", fontsize=9)
    fig.tight_layout()
    # equal-ratio pairs: settings sharing η/B should agree more than settings that do not
    pair = o.get("equal_ratio_metric", metrics[0] if metrics else None)
    if pair in metrics:
        j = metrics.index(pair)
        same, diff = [], []
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                va, vb = rows[a][3 + j], rows[b][3 + j]
                if not (finite(va) and finite(vb)):
                    continue
                rel = abs(va - vb) / max(abs(va), abs(vb), 1e-12)
                (same if math.isclose(rows[a][2], rows[b][2], rel_tol=1e-9) else diff).append(rel)
        if same and diff:
            ms, md = float(np.mean(same)), float(np.mean(diff))
            conclusions.append(Conclusion(
                f"{LABELS.get(pair, pair)}: settings with equal η/B differ by {ms:.1%} on "
                f"average, settings with different η/B by {md:.1%}",
                agrees_with_paper=ms < md, claim="equal η/B gives similar minima",
                evidence={"equal_ratio_rel_diff": ms, "different_ratio_rel_diff": md}))
    divs = [f"lr={r[0]:g}, B={r[1]}" for r in rows if r[-2] > 0]
    if divs:
        conclusions.append(Conclusion(f"diverged: {'; '.join(divs)}"))
    figs = [("ratio_grid", fig)]
    if o.get("curves"):
        for metric in o["curves"]:
            groups = by_group(runs, key=lambda r: "η={:g}, B={:g}".format(*lr_and_batch(r)))
            series = {}
            for g, rs in groups.items():
                steps, mean, std = mean_curve(rs, metric)
                if steps:
                    series[g] = (_epochs(rs[0], steps), mean, None)
            figs.append((f"curve_{metric}", curves(series, xlabel="epoch", ylabel=metric,
                                                    title=f"{metric} per (η, B)")))
    return Analysis(tables=[table], figures=figs, conclusions=conclusions)


def _epochs(r: StoredRun, steps: list[float]) -> list[float]:
    ref = r.metrics.get("epoch", [])
    if not ref:
        return steps
    s, v = zip(*([(0, 0.0)] + list(ref)))
    return np.interp(steps, s, v).tolist()


def _group_key(r: StoredRun) -> str:
    return r.group


@register_analysis("jastrzebski_equal_ratio")
def equal_ratio(spec, runs: list[StoredRun]) -> Analysis:
    """Learning curves (in epochs) of runs sharing η/B vs one with a different ratio, including
    cyclic LR vs cyclic batch size (Figs. 1-2). ``options.same`` lists groups that should match
    and ``options.different`` a group that should not (on ``options.metric``, late values)."""
    o = spec.options
    metric = o.get("metric", "test_acc")
    k = int(o.get("last_k", 3))
    groups = by_group(runs, key=_group_key)
    late: dict[str, float] = {}
    rows = []
    for g, rs in groups.items():
        vals = []
        for r in rs:
            v = [x for _, x in r.metrics.get(metric, []) if math.isfinite(x)]
            if v:
                vals.append(float(np.mean(v[-k:])))
        m = float(np.mean(vals)) if vals else float("nan")
        sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        late[g] = m
        lr, b = rs[0].params["optimizer"]["lr"], rs[0].params["batch_size"]
        rows.append([g, str(lr), str(b), m, sd, len(rs)])
    table = Table("equal_ratio", ["run", "lr", "batch size", f"{metric} (last {k})", "std",
                                  "seeds"], rows)
    figs = []
    for mname in o.get("curves", [metric, "train_loss"]):
        series = {}
        for g, rs in groups.items():
            steps, mean, std = mean_curve(rs, mname)
            if steps:
                series[g] = (_epochs(rs[0], steps), mean, std if len(rs) > 1 else None)
        figs.append((f"curve_{mname}", curves(series, xlabel="epoch", ylabel=mname,
                                               title=f"{spec.paper['figure']}: {mname}")))
    concl = []
    same, diff = o.get("same", []), o.get("different", [])
    ref = same[0] if same else None
    if ref and ref in late:
        spread_same = max(abs(late[g] - late[ref]) for g in same if g in late)
        for g in diff:
            if g in late:
                gap = abs(late[g] - late[ref])
                concl.append(Conclusion(
                    f"late {metric}: runs with equal η/B ({', '.join(same)}) are within "
                    f"{spread_same:.4g} of each other; {g} (different η/B) is {gap:.4g} away",
                    agrees_with_paper=gap > spread_same,
                    claim="equal η/B gives matching learning curves; a different η/B does not",
                    evidence={"spread_same": spread_same, "gap_different": gap}))
    return Analysis(tables=[table], figures=figs, conclusions=concl)
