"""Analyses for Xing, Arpit, Tsirigotis & Bengio (2018), "A Walk with SGD": walk plots
(Figs. 1-2, §3.1), barriers and heights per epoch (Tables 1-2), the Hessian spectral norm in
batch-norm train mode (Fig. 3), the consecutive-gradient cosine against batch size and
learning rate (Fig. 4, §3.2) and the stuck isotropic-noise run continued at a lower learning
rate, as GD and as SGD (footnote 6, line 161).

Each analysis turns the recorded series into per-run numbers (stored in the run's summary so
the report shows them), averages them over seeds per run group and checks the claims listed in
the experiment file (``options.claims``,
:func:`~sgdlab.experiments.procedures.common.check_claims`); ``options.references`` adds
constant pseudo-groups (``{"5% of steps": {metric: 0.05}}``) so a claim can compare a group
with a stated threshold.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sgdlab.errors import ConfigError
from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.procedures import ClaimNames, StoredRun, register_analysis
from sgdlab.experiments.procedures.common import (CLAIM_OPTIONS, CURVE_OPTIONS, add_references,
                                                  by_group, by_run_group, check_claims,
                                                  continuation_curves, finite, group_x_axis,
                                                  mean_curve, run_groups, seeds_label,
                                                  seeds_note, summary_table, unknown_group,
                                                  values_by_group)
from sgdlab.experiments.procedures.jastrzebski import (CLEAR_TREND, _spearman, epoch_curves,
                                                       ranked_over, trend_verdict)
from sgdlab.experiments.spec import cited, paper_ref
from sgdlab.measure.walk import VALLEY_FLOORS, has_valley_floor
from sgdlab.report.tables import Table, exact_mean


def _points(r: StoredRun, name: str, after: int = 0) -> list[tuple[int, float]]:
    return [(s, x) for s, x in r.metrics.get(name, []) if s >= after and math.isfinite(x)]


def _mean_after(r: StoredRun, name: str, after: int = 0) -> float:
    return exact_mean([x for _, x in _points(r, name, after)])


def _value_at(r: StoredRun, name: str, step: int | None) -> float:
    """The value logged at ``step`` (None: the last value); NaN when that step was not logged."""
    pts = _points(r, name)
    if not pts:
        return float("nan")
    if step is None:
        return pts[-1][1]
    return dict(pts).get(int(step), float("nan"))


def rise_fraction(values: list[float]) -> float:
    """Fraction of consecutive pairs in which the value goes up (0 for a monotone descent)."""
    if len(values) < 2:
        return float("nan")
    return float(np.mean([b > a for a, b in zip(values, values[1:])]))


def valley_floor(r: StoredRun, reading: str = "interior") -> list[float]:
    """The valley floor of run ``r``, in step order. ``interior``: the lowest loss of only the
    segments whose lowest point lies strictly between the two iterates (Xing et al. line 81:
    "For the iterations where there is a minimum in the interpolation between two iterations,
    we refer to this minimum as the floor of the valley"); ``segment``: the lowest loss of
    every segment, an end point included (Fig. 1's caption: "The dashed orange line connects
    the minimum of the loss interpolation between consecutive iterations")."""
    alpha = dict(_points(r, "walk_valley_alpha"))
    return [x for s, x in _points(r, "walk_valley_loss")
            if has_valley_floor(alpha.get(s, 0.0), reading)]


def _epoch_row(r: StoredRun, epoch: int) -> dict[str, float]:
    """The walk instrument's per-epoch numbers for ``epoch`` (1-based): steps, barriers,
    mean height above the valley floor; NaN where the epoch was not interpolated. An epoch
    cut short by ``max_steps`` and completed on resume is logged twice: the later row, the
    whole epoch's, is the one Tables 1-2 count (``walk.epoch_rows``)."""
    from sgdlab.report.figures.walk import epoch_rows

    s = epoch_rows(r.metrics).get(epoch)
    if s is None:
        return {"steps": float("nan"), "barriers": float("nan"), "mean_height": float("nan")}
    return {k: dict(r.metrics.get(f"walk_epoch_{k}", [])).get(s, float("nan"))
            for k in ("steps", "barriers", "mean_height")}


def barrier_height_ratios(r: StoredRun, epochs: list[int] | None = None) -> dict[str, float]:
    """The barriers run ``r`` crossed in the interpolated epochs ``epochs`` (1-based; None: all)
    and their largest height relative to the loss at the segment's higher iterate, max(L(θ_t),
    L(θ_{t+1})), which Xing et al. find "substantially smaller compared with the loss value at
    the corresponding point during training" (line 101), under two readings of a height:

    - ``barrier_rise_ratio``: the highest loss between the iterates minus that iterate's
      (the instrument's ``walk_barrier_height``): how far the barrier rises above the path;
    - ``barrier_fig8_ratio``: the formula Fig. 8's caption prints (line 311), Table 2's
      (L(θ_t) + L(θ_{t+1}) − 2 L(θ_t^min)) / 2 (``walk_height``), which does not involve the
      barrier's peak.

    Both NaN when no barrier was crossed; ``barriers_crossed`` counts the crossings."""
    from sgdlab.report.figures.walk import walk_segments

    steps, _, losses = walk_segments(r.metrics)
    # the epoch-end rows are logged after the epoch's last update (step t + 1)
    ends = sorted((s, int(e)) for s, e in r.metrics.get("walk_epoch", []))
    crossed = dict(_points(r, "walk_barrier"))
    rise, fig8 = dict(r.metrics.get("walk_barrier_height", [])), dict(r.metrics.get(
        "walk_height", []))
    ratios: list[tuple[float, float]] = []
    for t, row in zip(steps.tolist(), losses):
        epoch = next((e for s, e in ends if s > t), None)
        if crossed.get(t, 0.0) <= 0.5 or (epochs is not None and epoch not in epochs):
            continue
        top = max(row[0], row[-1])
        ratios.append((rise.get(t, math.nan) / top, fig8.get(t, math.nan) / top))
    worst = np.max(ratios, axis=0) if ratios else [math.nan, math.nan]
    return {"barriers_crossed": float(len(ratios)), "barrier_rise_ratio": float(worst[0]),
            "barrier_fig8_ratio": float(worst[1])}


def _claims(spec, runs: list[StoredRun], metrics: list[str], key=None):
    """Group, average the per-run ``metrics`` over seeds and check ``options.claims``."""
    o = spec.options
    groups = by_group(runs, key=key or (lambda r: r.group))
    vals: dict[str, dict[str, float]] = values_by_group(groups, metrics)
    add_references(vals, o)
    return groups, vals, check_claims(o.get("claims", []), vals)


# --- Figs. 1-2: walk plots, GD vs SGD ----------------------------------------------------------
@register_analysis("xing_walk", claim_names=by_run_group, options={
    **CLAIM_OPTIONS, "after_step": "int>=0", "final_updates": "int>0",
    "valley_floor": f"one of {', '.join(VALLEY_FLOORS)}", "valley_after": "int>=0",
    "distance_at": "int>=0|null", "max_steps": "int>0|null"})
def xing_walk(spec, runs: list[StoredRun]) -> Analysis:
    """Walk plots per run group (first seed) and, per run: the mean consecutive-gradient cosine
    over steps >= ``options.after_step`` (``grad_cosine_mean``) and over the last
    ``options.final_updates`` recorded cosines (``grad_cosine_final``, default 10: Fig. 1's
    "finally very close to -1"), the distance from the
    initialisation at step ``options.distance_at`` (``distance``, default the last step), the
    number of valley floors (``valley_floors``), the share of the segments from update
    ``options.valley_after`` on (default 0) whose lowest loss lies strictly between the two
    iterates (``interior_min_share``, whatever the floor's reading: line 81's "quadratic-like
    structure with a minimum in between"; NaN with no such segment recorded), the fraction
    of consecutive valley floors in
    which the floor rises (``floor_rise_fraction``; NaN with fewer than two floors) and the
    fraction of the interpolated updates that crossed a barrier (``barrier_fraction``: all
    the walk's updates, the 40 that Figs. 1-2 call "Epoch 1" for GD as for SGD, where GD's
    epoch 1 in the loop is its first update alone). ``options.valley_floor`` picks the
    reading of the floor (:func:`valley_floor`); ``options.max_steps`` crops the walk panel."""
    from sgdlab.report.figures.walk import walk_epoch_table, walk_figure

    o = spec.options
    after = int(o.get("after_step", 0))
    last = int(o.get("final_updates", 10))
    reading = o.get("valley_floor", "interior")
    valley_after = int(o.get("valley_after", 0))
    for r in runs:
        floor = valley_floor(r, reading)
        inside = [has_valley_floor(a) for _, a in _points(r, "walk_valley_alpha", valley_after)]
        crossed = [x > 0.5 for _, x in _points(r, "walk_barrier")]
        cos = [x for _, x in _points(r, "grad_cosine")][-last:]
        r.summary.update({
            "grad_cosine_mean": _mean_after(r, "grad_cosine", after),
            "grad_cosine_final": float(np.mean(cos)) if cos else float("nan"),
            "distance": _value_at(r, "dist_from_init", o.get("distance_at")),
            "valley_floors": float(len(floor)),
            "interior_min_share": float(np.mean(inside)) if inside else float("nan"),
            "floor_rise_fraction": rise_fraction(floor),
            "barrier_fraction": (float(np.mean(crossed)) if crossed else float("nan"))})
    metrics = [("grad_cosine_mean", f"mean cos(g_t-1, g_t), steps ≥ {after}"),
               ("grad_cosine_final", f"mean cos(g_t-1, g_t), last {last} updates"),
               ("distance", f"‖θ − θ₀‖ at step {o.get('distance_at', 'last')}"),
               ("valley_floors", f"valley floors ({reading})"),
               ("interior_min_share",
                f"share of segments from update {valley_after} with a minimum inside"),
               ("floor_rise_fraction", "fraction of consecutive valley floors that rise"),
               ("barrier_fraction", "barriers crossed / updates interpolated")]
    groups, vals, concl = _claims(spec, runs, [m for m, _ in metrics])
    summary = summary_table("walk_summary", groups, metrics,
                            caption="mean and std over seeds")
    fig = walk_figure({(f"{g} (seed {rs[0].seed})" if len(rs) > 1 else g): rs[0].metrics
                       for g, rs in groups.items()},
                      max_steps=o.get("max_steps"), floor=reading,
                      title=paper_ref(spec.paper))
    table = walk_epoch_table({f"{r.group} (seed {r.seed})": r.metrics for r in runs})
    return Analysis(tables=[summary, table], figures=[("walk", fig)], conclusions=concl)


# --- Tables 1-2: barriers and height above the valley floor per epoch ---------------------------
@register_analysis("xing_barriers", claim_names=by_run_group, options={
    **CLAIM_OPTIONS, "epochs": "list of int>0", "barrier_epochs": "list of int>0|null"})
def xing_barriers(spec, runs: list[StoredRun]) -> Analysis:
    """Per run and per epoch of ``options.epochs`` (1-based, the epochs the step interpolation
    covered): ``barrier_fraction_epochE`` (barriers crossed / steps interpolated, Table 1) and
    ``height_epochE`` (mean height above the valley floor, Table 2); over the epochs of
    ``options.barrier_epochs`` (default: all interpolated), the barriers crossed and their
    largest height relative to the loss (:func:`barrier_height_ratios`, line 101)."""
    from sgdlab.report.figures.charts import curves
    from sgdlab.report.figures.walk import walk_epoch_table

    o = spec.options
    epochs = [int(e) for e in o.get("epochs", [1])]
    barrier_epochs = o.get("barrier_epochs")
    metrics: list[tuple[str, str]] = []
    for e in epochs:
        metrics += [(f"barriers_epoch{e}", f"barriers, epoch {e}"),
                    (f"barrier_fraction_epoch{e}", f"barriers / steps, epoch {e}"),
                    (f"height_epoch{e}", f"height above floor, epoch {e}")]
    over = ("epochs " + ", ".join(map(str, barrier_epochs)) if barrier_epochs is not None
            else "interpolated epochs")
    metrics += [("barriers_crossed", f"barriers crossed, {over}"),
                ("barrier_rise_ratio", "largest barrier rise above the higher iterate / its loss"),
                ("barrier_fig8_ratio", "largest Fig. 8 height of a barrier / loss")]
    for r in runs:
        r.summary.update(barrier_height_ratios(r, barrier_epochs))
        for e in epochs:
            row = _epoch_row(r, e)
            r.summary[f"barriers_epoch{e}"] = row["barriers"]
            r.summary[f"barrier_fraction_epoch{e}"] = (
                row["barriers"] / row["steps"] if finite(row["steps"]) and row["steps"] > 0
                else float("nan"))
            r.summary[f"height_epoch{e}"] = row["mean_height"]
    groups, vals, concl = _claims(spec, runs, [m for m, _ in metrics])
    summary = summary_table("barriers_heights", groups, metrics,
                            caption="per epoch, mean and std over seeds (Tables 1-2)")
    series = {g: ([float(e) for e in epochs], [vals[g][f"height_epoch{e}"] for e in epochs],
                  None) for g in groups}
    fig = curves(series, xlabel="epoch", ylabel="mean height above the valley floor",
                 markers=True, logy=True,
                 title=f"{cited(spec.paper)}height above the valley floor per epoch\n"
                       f"{seeds_note(groups, spread=False)}")
    table = walk_epoch_table({f"{r.group} (seed {r.seed})": r.metrics for r in runs})
    return Analysis(tables=[summary, table], figures=[("heights", fig)], conclusions=concl)


# --- Fig. 3: Hessian spectral norm during training --------------------------------------------
def fifths(values: list[float]) -> dict[str, float]:
    """Window means of a series, to test a trend's shape without picking its extremes (the
    minimum of a noisy series is below its first value, and its last value above its minimum,
    whatever the trend): ``start`` (the first fifth: ⌈n/5⌉ of the n values), ``end`` (the last
    fifth), ``before_end`` (the fifth before it) and ``middle`` (between the first and last
    fifths), each an :func:`~sgdlab.report.tables.exact_mean`. NaN where a window is empty."""
    n = len(values)
    k = max(1, math.ceil(n / 5))
    # exact means: a flat stretch has the same mean over windows of any length
    return {"start": exact_mean(values[:k]), "middle": exact_mean(values[k:n - k]),
            "before_end": (exact_mean(values[max(0, n - 2 * k):n - k]) if n >= 2 * k
                           else float("nan")),
            "end": exact_mean(values[n - k:]) if n >= 2 else float("nan")}


@register_analysis("xing_hessian_norm", claim_names=by_run_group, options=CLAIM_OPTIONS)
def xing_hessian_norm(spec, runs: list[StoredRun]) -> Analysis:
    """The Hessian spectral norm (or λ_max: :func:`hessian_quantity`) logged by the
    ``dynamics`` instrument, per batch-norm mode M (``hess_norm_train`` /
    ``hess_norm_eval``). Per run, over the measurements after step 0 (the initialisation is
    not on SGD's path): the window means of :func:`fifths`
    (``hess_M_start``, ``hess_M_middle``, ``hess_M_before_end``, ``hess_M_end``), the minimum
    ``hess_M_min`` and the mean ``hess_M_mean``; plus ``best_test_acc``, ``test_acc`` and the
    window means of the validation accuracy after the start (``acc_start``, ``acc_middle``,
    ``acc_before_end``, ``acc_end``: Fig. 3's accuracy "roughly improves throughout training
    but drops towards the end")."""
    modes = [m for m in ("train", "eval") if any(f"hess_norm_{m}" in r.metrics for r in runs)]
    quantity = hessian_quantity(runs)
    sym = quantity[0]
    metrics: list[tuple[str, str]] = []
    for m in modes:
        metrics += [(f"hess_{m}_start", f"{sym} first fifth ({m} BN)"),
                    (f"hess_{m}_middle", f"{sym} middle ({m} BN)"),
                    (f"hess_{m}_before_end", f"{sym} fifth before the last ({m} BN)"),
                    (f"hess_{m}_end", f"{sym} last fifth ({m} BN)"),
                    (f"hess_{m}_min", f"{sym} min ({m} BN)"),
                    (f"hess_{m}_mean", f"{sym} mean ({m} BN)")]
    metrics += [("best_test_acc", "best validation accuracy"),
                ("test_acc", "final validation accuracy"),
                ("acc_start", "validation accuracy, first fifth"),
                ("acc_middle", "validation accuracy, middle"),
                ("acc_before_end", "validation accuracy, fifth before the last"),
                ("acc_end", "validation accuracy, last fifth")]
    for r in runs:
        for m in modes:
            v = [x for _, x in _points(r, f"hess_norm_{m}", 1)]
            r.summary.update({f"hess_{m}_{k}": x for k, x in fifths(v).items()})
            r.summary.update({
                f"hess_{m}_min": min(v) if v else float("nan"),
                f"hess_{m}_mean": exact_mean(v)})
        acc = [x for _, x in _points(r, "test_acc")]
        r.summary["best_test_acc"] = max(acc) if acc else float("nan")
        # the evaluations after the initialisation, as for the Hessian
        r.summary.update({f"acc_{k}": x
                          for k, x in fifths([x for _, x in _points(r, "test_acc", 1)]).items()})
    groups, _, concl = _claims(spec, runs, [m for m, _ in metrics])
    table = summary_table("hessian_norm", groups, metrics, caption="mean and std over seeds")
    figs = ([("curve_hess_norm", _hessian_norm_figure(spec, groups, modes, quantity))] if modes
            else [])
    figs += epoch_curves(spec, groups, ["test_acc"])
    return Analysis(tables=[table], figures=figs, conclusions=concl)


def hessian_quantity(runs: list[StoredRun]) -> tuple[str, str]:
    """(symbol, axis label) of what the runs' ``dynamics`` instrument logged as
    ``hess_norm_*``: the spectral norm ‖H‖ (``hessian_which: magnitude``, its default) or,
    under the reading ``hessian-eig=largest``, the largest eigenvalue λ_max."""
    which = {m.get("hessian_which", "magnitude") for r in runs
             for m in r.params.get("measure") or [] if isinstance(m, dict)
             and m.get("name") == "dynamics"}
    if which == {"largest"}:
        return "λ_max", "Hessian largest eigenvalue λ_max"
    if "largest" in which:
        return "‖H‖ or λ_max", "Hessian spectral norm ‖H‖ or largest eigenvalue λ_max"
    return "‖H‖", "Hessian spectral norm ‖H‖"


def _hessian_norm_figure(spec, groups, modes: list[str], quantity: tuple[str, str]):
    """Both batch-norm modes' ‖H‖ (or λ_max: :func:`hessian_quantity`) on one axis (log
    scale when positive), train mode solid and eval mode dashed, so that the comparison of
    footnote 5 reads off one y scale; ``quantity``: its (symbol, axis label)."""
    from sgdlab.report.figures.charts import curves

    series = {}
    for g, rs in groups.items():
        for m in modes:
            steps, mean, std, n = mean_curve(rs, f"hess_norm_{m}", counts=True)
            if steps:
                series[seeds_label(f"{g}, {m}-mode BN", n, len(rs))] = (
                    group_x_axis(rs, steps, "epoch"), mean, std if len(rs) > 1 else None)
    sym, label = quantity
    fig = curves(series, xlabel="epoch", ylabel=label, logy=True,
                 title=f"{cited(spec.paper)}{sym}, batch norm in train and eval mode")
    for line in fig.axes[0].get_lines():
        if "eval-mode BN" in line.get_label():
            line.set_linestyle("--")
    fig.axes[0].legend(fontsize=7)
    return fig


# --- Fig. 4: consecutive-gradient cosine vs batch size and learning rate -----------------------
def _setting(r: StoredRun) -> tuple[float, float]:
    from sgdlab.experiments.procedures.jastrzebski import lr_and_batch

    return lr_and_batch(r)


@register_analysis("xing_cosine_grid", options={
    "after_step": "int>=0", "fixed_lr": "required number>0",
    "fixed_batch": "required number>0",
    "batch_cosine_trend": "one of negative, positive", "lr_margin": "number>=0"})
def xing_cosine_grid(spec, runs: list[StoredRun]) -> Analysis:
    """Two one-dimensional sweeps around (``options.fixed_lr``, ``options.fixed_batch``): the
    batch size at the fixed learning rate and the learning rate at the fixed batch size (§3.2).
    Per run: mean cosine of consecutive gradients over steps >= ``options.after_step``
    (``grad_cosine_mean``) and the final distance from the initialisation (``distance``).

    Checks: the cosine falls with the batch size (Spearman ρ <= −0.5; line 107) and so does the
    distance (line 126); ``options.batch_cosine_trend: positive`` expects the cosine to rise
    instead, Appendix B's "smaller batch size will make the angle [...] larger" (line 256);
    the learning rate leaves the cosine unchanged — an equivalence test (TOST, margin
    ``options.lr_margin``) between the smallest and the largest learning rate of the sweep;
    the rank correlation with the learning rate is reported too."""
    from sgdlab.report.figures.axes import grid_ticks
    from sgdlab.report.figures.charts import error_bars, panels

    o = spec.options
    after = int(o.get("after_step", 0))
    lr0, b0 = float(o["fixed_lr"]), float(o["fixed_batch"])
    cos_trend = o.get("batch_cosine_trend", "negative")
    for r in runs:
        r.summary["grad_cosine_mean"] = _mean_after(r, "grad_cosine", after)
        r.summary["distance"] = _value_at(r, "dist_from_init", None)
    groups = by_group(runs, key=lambda r: "lr={:g},B={:g}".format(*_setting(r)))
    vals = values_by_group(groups, ["grad_cosine_mean", "distance"])
    rows = []
    for g, rs in groups.items():
        lr, b = _setting(rs[0])
        v = vals[g]
        rows.append([lr, int(b), v["grad_cosine_mean"],
                     v.get("grad_cosine_mean__std", math.nan), v["distance"], len(rs), g])
    rows.sort(key=lambda r: (r[0], r[1]))
    table = Table("cosine_grid", ["lr", "batch size", "mean cos(g_t-1, g_t)", "std",
                                  "final ‖θ − θ₀‖", "seeds"], [r[:-1] for r in rows],
                  keys=["lr", "batch size"],
                  caption=f"cosine: mean over steps ≥ {after}, then over seeds")
    by_b = [r for r in rows if math.isclose(r[0], lr0)]
    by_lr = [r for r in rows if math.isclose(r[1], b0)]
    fig, (ax_b, ax_lr) = panels(2)
    for ax, pts, col, name in ((ax_b, by_b, 1, "batch size"), (ax_lr, by_lr, 0, "learning rate")):
        xs = [p[col] for p in pts]
        error_bars({"cosine": (xs, [p[2] for p in pts], [p[3] for p in pts])}, xlabel=name,
                   ylabel=rf"mean $\cos(g_{{t-1}}, g_t)$ over steps ≥ {after}", logx=True,
                   ax=ax, legend=False)
        grid_ticks(ax, xs)
    ax_b.set_title(f"lr = {lr0:g}", fontsize=9)
    ax_lr.set_title(f"batch size = {b0:g}", fontsize=9)
    fig.suptitle(f"{cited(spec.paper)}{seeds_note(groups)}", fontsize=9)
    fig.tight_layout()
    concl = []
    for col, what, sign in ((2, "gradient cosine", cos_trend),
                            (4, "final distance from the initialisation", "negative")):
        rho = _spearman([p[1] for p in by_b], [p[col] for p in by_b])
        concl.append(Conclusion(
            f"{what} vs batch size at lr = {lr0:g}: Spearman ρ = {rho:.2f} over "
            f"{ranked_over([p[1] for p in by_b], [p[col] for p in by_b], 'batch sizes')} "
            f"(a clear trend needs |ρ| ≥ {CLEAR_TREND})",
            agrees_with_paper=trend_verdict(rho, sign),
            claim=f"the {what} {'falls' if sign == 'negative' else 'rises'} as the batch size "
                  "grows", evidence={"spearman": rho}))
    if len(by_lr) >= 2:
        lo, hi = by_lr[0][-1], by_lr[-1][-1]
        concl += check_claims([{
            "equivalent": [lo, hi], "metric": "grad_cosine_mean",
            "margin": float(o.get("lr_margin", 0.05)),
            "metric_name": "mean gradient cosine",
            "claim": "changing the learning rate (at a fixed batch size) does not change the "
                     "cosine of consecutive gradients"}], vals)
        rho = _spearman([p[0] for p in by_lr], [p[2] for p in by_lr])
        over = ranked_over([p[0] for p in by_lr], [p[2] for p in by_lr], "learning rates")
        concl.append(Conclusion(f"gradient cosine vs learning rate at B = {b0:g}: Spearman ρ "
                                f"= {rho:.2f} over {over}",
                                evidence={"spearman": rho}))
    return Analysis(tables=[table], figures=[("cosine_grid", fig)], conclusions=concl)



# --- footnote 6: the stuck isotropic-noise run, continued ----------------------------------------
def window_mean(points: list[tuple[float, float]], stop: float, window: float) -> float:
    """Mean of the finite values logged at steps s with ``stop − window < s <= stop``: a noisy
    run's level over the last ``window`` updates before ``stop``; NaN where none is logged."""
    return exact_mean([x for s, x in points if stop - window < s <= stop and math.isfinite(x)])


def relative_drop(before: float, after: float) -> float:
    """1 − after / before: the fraction of ``before`` that a positive quantity (a loss) lost
    by ``after``, negative where it rose; NaN unless both are finite and ``before`` > 0."""
    if not (math.isfinite(before) and math.isfinite(after) and before > 0):
        return float("nan")
    return 1.0 - after / before


def _last_step(r: StoredRun) -> float:
    return max((s for s, _ in r.metrics.get("train_loss", [])), default=float("nan"))


def stuck_continuation(phase_one: StoredRun, switch: float, run: StoredRun, *, window: float,
                       lag: float) -> dict[str, float]:
    """Footnote 6's numbers for ``run``, which continues the noisy run ``phase_one`` from its
    step ``switch`` (``run`` may be ``phase_one`` itself, continued past ``switch`` in the same
    run, or a run started from its weights at ``switch``, counting its own steps from 0). Every
    level is the mean over ``window`` updates (:func:`window_mean`) of the evaluated training
    loss (accuracy), so that a single noisy evaluation does not decide:

    - ``loss_stuck``, ``acc_stuck``: the level over the ``window`` updates up to ``switch``;
    - ``stuck_drop``: the relative drop (:func:`relative_drop`) of the loss over the ``lag``
      updates before ``switch``, from the level ending at ``switch − lag`` to ``loss_stuck``:
      how much the noisy run was still descending, below a tolerance where it is stuck;
    - ``loss_end``, ``acc_end``: the level over the last ``window`` updates of ``run``;
    - ``loss_drop`` = relative_drop(loss_stuck, loss_end) and ``acc_gain`` = acc_end −
      acc_stuck: what the continuation gained over the stuck state.
    """
    loss, acc = phase_one.metrics.get("train_loss", []), phase_one.metrics.get("train_acc", [])
    stuck = window_mean(loss, switch, window)
    end_step = _last_step(run)
    end = window_mean(run.metrics.get("train_loss", []), end_step, window)
    acc_stuck = window_mean(acc, switch, window)
    acc_end = window_mean(run.metrics.get("train_acc", []), end_step, window)
    return {"loss_stuck": stuck,
            "stuck_drop": relative_drop(window_mean(loss, switch - lag, window), stuck),
            "loss_end": end, "loss_drop": relative_drop(stuck, end),
            "acc_stuck": acc_stuck, "acc_end": acc_end, "acc_gain": acc_end - acc_stuck}


STUCK_METRICS = {
    "loss_stuck": "train loss at the switch",
    "stuck_drop": "loss drop over the lag before it",
    "loss_end": "final train loss",
    "loss_drop": "loss drop after the switch",
    "acc_stuck": "train acc. at the switch",
    "acc_end": "final train acc.",
    "acc_gain": "train acc. gained",
}


def stuck_problems(options: dict[str, Any], runs) -> list[str]:
    """A sentence for each thing ``options`` of :func:`xing_stuck` ask that ``runs``
    (``RunSpec`` or stored) do not give: ``stuck_run`` naming no run group (with the closest
    and all of them), else each group that neither starts from another (``init_from``) nor
    is the stuck one where ``switch_step`` does not say where it switches. Found when the
    sweep is planned and again when the report is written."""
    groups, stuck = run_groups(runs), options["stuck_run"]
    if stuck not in groups:
        return [f"options.stuck_run: {unknown_group(stuck, groups)}"]
    if "switch_step" in options:
        return []
    return [f"options.switch_step: run group {g!r} neither starts from another (init_from) "
            f"nor is {stuck!r}: give the step where it switches"
            for g in run_groups([r for r in runs if not r.params.get("init_from")])
            if g != stuck]


def _stuck_names(spec, runs) -> ClaimNames:
    """The run groups and :data:`STUCK_METRICS` the claims of :func:`xing_stuck` read, and
    :func:`stuck_problems` of its options."""
    names = by_run_group(spec, runs, STUCK_METRICS)
    names.problems += stuck_problems(spec.options, runs)
    return names


@register_analysis("xing_stuck", claim_names=_stuck_names,
                   options={**CLAIM_OPTIONS, **CURVE_OPTIONS, "stuck_run": "required str",
                            "window": "required number>0", "lag": "required number>0",
                            "switch_step": "number>=0"})
def xing_stuck(spec, runs: list[StoredRun]) -> Analysis:
    """Footnote 6 (line 161): the noisy run of group ``options.stuck_run`` and its
    continuations. A run with ``init_from: G`` continues G's run of the same seed from G's
    last step; a run of another group continues itself from step ``options.switch_step``
    (its first updates repeat G's: same seed, same settings up to the switch, e.g. a
    learning-rate schedule that falls there); the ``stuck_run`` group is its own phase one,
    ended. Per run, :func:`stuck_continuation` with ``options.window`` and ``options.lag``
    (updates); the claims read ``stuck_drop`` (a precondition: the noisy run is stuck) and
    ``loss_drop``, against ``options.references``. Curves count steps from the start of
    training, the end of phase one marked."""
    o = spec.options
    stuck_group = str(o["stuck_run"])
    window, lag = float(o["window"]), float(o["lag"])
    groups = by_group(runs, key=lambda r: r.group)
    # (the plan found them before training; the stored runs given may be others)
    if problems := stuck_problems(o, runs):
        raise ConfigError("; ".join(problems))
    marks = set()
    for r in runs:
        src = r.params.get("init_from")
        if r.group == stuck_group:
            phase_one, switch = r, _last_step(r)
        elif src:
            phase_one = next((q for q in groups.get(src, []) if q.seed == r.seed), None)
            switch = _last_step(phase_one) if phase_one is not None else float("nan")
        else:
            phase_one, switch = r, float(o["switch_step"])
        if phase_one is None:       # its source seed is missing: nothing to continue from
            r.summary.update({k: float("nan") for k in STUCK_METRICS})
            continue
        r.summary.update(stuck_continuation(phase_one, switch, r, window=window, lag=lag))
        if r.group != stuck_group and math.isfinite(switch):
            marks.add(switch)
    metrics = [(k, STUCK_METRICS[k]) for k in STUCK_METRICS]
    vals = values_by_group(groups, list(STUCK_METRICS))
    add_references(vals, o)
    # the precondition's number first, whatever the claims require of it
    seeds = "; ".join(f"seed {r.seed}: {r.summary['stuck_drop']:.4g}"
                      for r in groups[stuck_group])
    concl = [Conclusion(
        f"phase one, {stuck_group}: relative drop of its train loss over its last {lag:g} "
        f"updates (levels averaged over {window:g} updates) = "
        f"{vals[stuck_group]['stuck_drop']:.4g} ({seeds}); its train loss at the switch "
        f"{vals[stuck_group]['loss_stuck']:.4g}",
        evidence={"stuck_drop": vals[stuck_group]["stuck_drop"]})]
    concl += check_claims(o.get("claims", []), vals)
    div = [g for g, rs in groups.items() if any(r.status == "diverged" for r in rs)]
    if div:
        concl.append(Conclusion(f"runs diverged in: {', '.join(div)}"))
    table = summary_table("stuck_continuation", groups, metrics,
                          caption=f"levels: means over {window:g} updates; drops: 1 − "
                                  f"later / earlier level, {lag:g} updates apart before the "
                                  "switch, then from the switch to the end; mean and std "
                                  "over seeds")
    figs = continuation_curves(spec, groups, o.get("curves", ["train_loss", "train_acc"]),
                               xlabel="update (from the start of training)", marks=marks,
                               logy=o.get("logy", []))
    return Analysis(tables=[table], figures=figs, conclusions=concl)


