"""Analyses for Jastrzebski et al. (2017/2018), "Three factors influencing minima in SGD":
the η/B grid (Fig. 3), its breakdown for large β (Fig. 5) and model interpolations (Fig. 4)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.plots import curves, panels
from sgdlab.experiments.procedures import StoredRun, register_analysis
from sgdlab.experiments.procedures.common import by_group, finite, mean_curve, stat, x_axis
from sgdlab.experiments.spec import get_dotted
from sgdlab.report.tables import Table


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    pts = [(a, b) for a, b in zip(x, y) if finite(a) and finite(b)]
    if len(pts) < 3:
        return float("nan")
    r = spearmanr([p[0] for p in pts], [p[1] for p in pts]).statistic
    return float(r)


# A claimed monotone trend counts as reproduced only if the rank correlation is clear, not
# merely of the right sign (a grid of 6 settings gives |ρ| ≈ 0.1 by chance easily).
CLEAR_TREND = 0.5


def clear_trend(rho: float, sign: str) -> bool:
    """Whether ``rho`` shows a clear trend in direction ``sign`` ("negative" | "positive")."""
    return finite(rho) and (rho <= -CLEAR_TREND if sign == "negative" else rho >= CLEAR_TREND)


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
            ok = clear_trend(rho, sign)
            trend = ("no clear trend" if abs(rho) < CLEAR_TREND or not finite(rho)
                     else "decreases" if rho < 0 else "increases")
            conclusions.append(Conclusion(
                f"{LABELS.get(m, m)} vs η/B: Spearman ρ = {rho:.2f} over {len(rows)} (η, B) "
                f"settings ({trend} with η/B; a clear trend needs |ρ| ≥ {CLEAR_TREND})",
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
                    series[g] = (x_axis(rs[0], steps, "epoch"), mean, None)
            figs.append((f"curve_{metric}", curves(series, xlabel="epoch", ylabel=metric,
                                                    title=f"{metric} per (η, B)")))
    return Analysis(tables=[table], figures=figs, conclusions=conclusions)


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
                series[g] = (x_axis(rs[0], steps, "epoch"), mean, std if len(rs) > 1 else None)
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


# --- model interpolation (Fig. 4) -------------------------------------------------------------
from sgdlab.experiments.procedures import Procedure, RunOutput, register_procedure  # noqa: E402


@register_procedure("interpolate")
class InterpolateProcedure(Procedure):
    """Loss/accuracy along (1 − α) θ_A + α θ_B between the final weights of two runs of the
    same experiment (``between: [A, B]``, which the run must also list in ``depends``), through
    ``sgdlab.measure.interpolation.interpolate_models`` (batch-norm statistics recomputed).
    Params: ``dataset``, ``model``, ``loss``, ``dtype``, ``data_seed`` as in ``train``;
    ``alphas: {start, stop, num}``; ``samples`` (train/test subset size)."""

    allowed = {"dataset", "data_seed", "model", "loss", "dtype", "between", "alphas",
               "samples", "bn_stats"}
    required = {"dataset", "model", "between"}

    def run(self, run, ctx) -> RunOutput:
        import torch

        from sgdlab.experiments.procedures.train import MODEL_FILE, build

        p = run.params
        a_lab, b_lab = p["between"]
        ds, model_a, loss_fn, _ = build(p, run.seed, ctx)
        _, model_b, _, _ = build(p, run.seed, ctx)
        for m, lab in ((model_a, a_lab), (model_b, b_lab)):
            if lab not in ctx.dependencies:
                raise ValueError(f"interpolation end {lab!r} must be listed in depends")
            m.load_state_dict(torch.load(ctx.dependencies[lab] / MODEL_FILE, weights_only=True))
        from sgdlab.measure.interpolation import interpolate_models

        al = p.get("alphas", {"start": -1.0, "stop": 2.0, "num": 31})
        n = p.get("samples")
        sl = slice(None) if n is None else slice(0, int(n))
        curve = interpolate_models(model_a, model_b, loss_fn,
                                   (ds.x_train[sl], ds.y_train[sl]),
                                   (ds.x_test[sl], ds.y_test[sl]),
                                   torch.linspace(al["start"], al["stop"], al["num"]),
                                   bn_stats=p.get("bn_stats", "recompute"))
        c = curve.to_dict()
        a = c["alphas"]
        inner = [i for i, x in enumerate(a) if 0 <= x <= 1]
        ends = max(c["train_loss"][inner[0]], c["train_loss"][inner[-1]])
        barrier = max(c["train_loss"][i] for i in inner) - ends
        return RunOutput(summary={"barrier_on_segment": barrier,
                                  "loss_at_A": c["train_loss"][inner[0]],
                                  "loss_at_B": c["train_loss"][inner[-1]]}, data=c)


def _hump(alphas: list[float], loss: list[float]) -> float:
    """max over α in (0, 1) of L(α) − [(1 − α) L(0) + α L(1)] (0 when the path is convex)."""
    a = np.asarray(alphas, float)
    lo = np.asarray(loss, float)
    i0, i1 = int(np.argmin(np.abs(a))), int(np.argmin(np.abs(a - 1)))
    inner = (a > 0) & (a < 1)
    if not inner.any():
        return float("nan")
    chord = (1 - a[inner]) * lo[i0] + a[inner] * lo[i1]
    hump = float(np.max(lo[inner] - chord))
    # below float round-off of the losses the path is convex: report 0
    return hump if hump > 1e-7 * max(1.0, float(np.abs(lo).max())) else 0.0


@register_analysis("jastrzebski_interpolation")
def interpolation(spec, runs: list[StoredRun]) -> Analysis:
    """Interpolation curves between pairs of minima (Fig. 4): pairs trained with equal η/B vs
    pairs with different η/B. ``options.equal`` / ``options.different`` name the
    interpolation runs; the claim: the equal-ratio pair is connected by a lower barrier."""
    from sgdlab.report.figures.interpolation import interpolation_figure

    o = spec.options
    interp = [r for r in runs if "alphas" in r.data]
    rows, figs = [], []
    for r in interp:
        a_lab, b_lab = r.params["between"]
        r.summary["hump"] = _hump(r.data["alphas"], r.data["train_loss"])
        rows.append([r.group, a_lab, b_lab, r.summary.get("loss_at_A"),
                     r.summary.get("loss_at_B"), r.summary.get("barrier_on_segment"),
                     r.summary["hump"]])
        if r.seed == interp[0].seed:
            figs.append((f"interpolation_{r.group}", interpolation_figure(
                r.data, labels=(a_lab, b_lab), title=f"{a_lab} → {b_lab}")))
    table = Table("interpolation", ["pair", "A", "B", "train loss at A", "train loss at B",
                                    "barrier on [0, 1]", "hump above the chord"], rows,
                  caption="barrier = max train loss on the segment minus the higher end; hump "
                          "= max over α in (0, 1) of L(α) − [(1−α) L(0) + α L(1)]")
    concl = []
    groups = by_group(interp, key=lambda r: r.group)
    eq, df = o.get("equal"), o.get("different")
    if eq in groups and df in groups:
        be = float(np.mean([r.summary["hump"] for r in groups[eq]]))
        bd = float(np.mean([r.summary["hump"] for r in groups[df]]))
        concl.append(Conclusion(
            f"loss hump above the chord between minima with equal η/B: {be:.4g}; with "
            f"different η/B: {bd:.4g}",
            agrees_with_paper=bd - be > 1e-6 * max(1.0, abs(bd)),   # round-off is no evidence
            claim="minima found with the same η/B are better connected (smaller rise of the "
                  "loss along the straight path) than minima found with different η/B",
            evidence={"equal": be, "different": bd}))
    return Analysis(tables=[table], figures=figs, conclusions=concl)


@register_analysis("jastrzebski_breakdown")
def breakdown(spec, runs: list[StoredRun]) -> Analysis:
    """η = β η₀, B = β B₀ for growing β (Fig. 5): the ratio is constant, so the η/B theory
    predicts identical results; the paper finds agreement for small β and a breakdown (lower
    accuracy, sharper minima, divergence) for large β."""
    o = spec.options
    metric = o.get("metric", "test_acc")
    tol = float(o.get("tolerance", 0.02))
    rows = []
    for r in ratio_rows(runs, [metric, "hessian_top"]):
        rows.append(r)
    rows.sort(key=lambda r: r[0])
    base = rows[0]
    out_rows = []
    for r in rows:
        beta = r[0] / base[0]
        dev = abs(r[3] - base[3]) if finite(r[3]) and finite(base[3]) else float("nan")
        out_rows.append([beta, r[0], r[1], r[2], r[3], r[4], dev, r[-2], r[-1]])
    table = Table("breakdown", ["β", "lr", "batch size", "lr / B", LABELS.get(metric, metric),
                                "Hessian λ_max", f"|Δ {metric}| vs β=1", "diverged", "seeds"],
                  out_rows)
    betas = [r[0] for r in out_rows]
    fig = curves({LABELS.get(metric, metric): (betas, [r[4] for r in out_rows], None)},
                 xlabel="β (η = β η₀, B = β B₀)", ylabel=LABELS.get(metric, metric), logx=True,
                 markers=True, title=f"{spec.paper['figure']}: constant η/B, growing β")
    for r in out_rows:
        if r[-2]:
            fig.axes[0].axvline(r[0], color="red", ls=":", lw=1)
    small = [r for r in out_rows if r[0] <= float(o.get("small_beta", 4))]
    large = [r for r in out_rows if r[0] > float(o.get("small_beta", 4))]
    concl = []
    if small:
        ok = all(finite(r[6]) and r[6] <= tol for r in small)
        concl.append(Conclusion(
            f"for β ≤ {o.get('small_beta', 4)}: max |Δ {metric}| = "
            f"{max((r[6] for r in small if finite(r[6])), default=float('nan')):.3g}",
            agrees_with_paper=ok, claim=f"for small β the η/B scaling holds (within {tol})"))
    if large:
        broke = any((not finite(r[6])) or r[6] > tol or r[7] for r in large)
        concl.append(Conclusion(
            f"for β > {o.get('small_beta', 4)}: max |Δ {metric}| = "
            f"{max((r[6] for r in large if finite(r[6])), default=float('nan')):.3g}, "
            f"{sum(r[7] for r in large)} diverged runs",
            agrees_with_paper=broke, claim="for large β the scaling breaks down"))
    return Analysis(tables=[table], figures=[("breakdown", fig)], conclusions=concl)


@register_procedure("train_or_interpolate")
class TrainOrInterpolate(Procedure):
    """``train`` for runs without ``between``, ``interpolate`` for runs with it (the shared
    ``base`` parameters that only training uses are dropped for the latter)."""

    def _pick(self, params: dict[str, Any]):
        from sgdlab.experiments.procedures import get_procedure

        if "between" in params:
            proc = get_procedure("interpolate")
            return proc, {k: v for k, v in params.items() if k in proc.allowed}
        return get_procedure("train"), params

    def validate(self, params, where):
        proc, p = self._pick(params)
        proc.validate(p, where)

    def run(self, run, ctx) -> RunOutput:
        from dataclasses import replace

        proc, p = self._pick(run.params)
        return proc.run(replace(run, params=p), ctx)
