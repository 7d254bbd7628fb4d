"""``compare_groups``: the analysis most training experiments share.

Groups the runs (by run-group label, or by ``options.group_by``: a dotted parameter path),
tabulates summary metrics as mean ± std over seeds, plots mean learning curves per group, and
checks the paper's claims (see ``common.check_claims``).

Options::

    table: [[test_acc, test accuracy], [train_loss, final train loss]]   # summary keys
    derived:                              # new summary values computed from stored series
      - {name: best_test_acc, metric: test_acc, reduce: max}   # max | min | first | last |
                                          # mean | mean_abs | mean_abs_change |
                                          # mean_first_k | mean_last_k | at_step
      - {name: gap, metric: train_acc, minus: test_acc, reduce: last}   # a difference
      - {name: perplexity, metric: test_loss, reduce: last, transform: exp}   # exp | log
      - {name: epochs_to_sgd_error, metric: test_acc, reduce: time_to_error, error_of: sgd,
         slack: 0.09, x: effective_epochs}   # when the error first comes within 9% of sgd's
    curves: [train_loss, test_acc]        # one figure per metric series (mean ± std)
    curve_x: step | effective_epochs | epoch
    curve_labels: {sharpness/expected: expected sharpness}   # y-axis labels (else metric_label)
    curve_marks: [12000]                  # dashed vertical lines (e.g. an optimizer switch)
    logy: [train_loss]
    bars:                                 # bar charts of summary values, std over seeds as
      - {name: best, metrics: [[best_test_acc, best]], ylabel: accuracy, zoom: true}  # errors
    references: {"cosine −0.9": {grad_cosine_mean: -0.9}}   # constant pseudo-groups
    claims: [...]
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sgdlab.errors import ConfigError
from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.procedures import ClaimNames, StoredRun, register_analysis
from sgdlab.experiments.procedures.common import (CLAIM_OPTIONS, CURVE_OPTIONS, add_references,
                                                  by_group, check_claims, claim_metrics,
                                                  curve_label, group_colours, group_curves,
                                                  group_x_axis, pseudo_groups, run_groups,
                                                  seeds_note, stat, summary_names, summary_table,
                                                  values_by_group, x_axis)
from sgdlab.experiments.spec import cited, get_dotted
from sgdlab.report.tables import exact_mean

DEFAULT_TABLE = [["train_loss", "train loss"], ["test_loss", "test loss"],
                 ["test_acc", "test accuracy"]]


REDUCES = ("max", "min", "first", "last", "mean", "mean_abs", "mean_abs_change",
           "mean_first_k", "mean_last_k", "at_step", "time_to_error")
# exp of a loss past ~709 is inf, not an OverflowError; log of a value <= 0 is NaN
TRANSFORMS = {"exp": lambda v: math.exp(v) if v < 709.0 else math.inf,
              "log": lambda v: math.log(v) if v > 0 else float("nan")}


def mean_abs_change(series: list[tuple[float, float]]) -> float:
    """How fast a logged series moves: the mean over consecutive finite records (s₁, v₁),
    (s₂, v₂) of |v₂ − v₁| / (s₂ − s₁), the absolute change per step; NaN with fewer than two
    finite records. A non-finite record is skipped (the change spans it)."""
    pts = [(float(s), float(v)) for s, v in series if math.isfinite(v)]
    rates = [abs(v2 - v1) / (s2 - s1) for (s1, v1), (s2, v2) in zip(pts, pts[1:]) if s2 > s1]
    return float(np.mean(rates)) if rates else float("nan")


def _reduced(run: StoredRun, metric: str, red: str, k: int, step: float | None = None) -> float:
    if red == "mean_abs_change":
        return mean_abs_change(run.metrics.get(metric, []))
    if red == "at_step":        # the last record at or before the step (a state mid-run)
        if step is None:
            raise ConfigError("options.derived: reduce at_step needs a 'step'")
        ran = run.summary.get("steps")
        if isinstance(ran, (int, float)) and ran < step:
            return float("nan")     # the run stopped before the step: it has no state there
        at = [v for s, v in run.metrics.get(metric, []) if s <= step]
        return at[-1] if at else float("nan")
    vals = [v for _, v in run.metrics.get(metric, []) if math.isfinite(v)]
    if not vals:
        return float("nan")
    if red == "max":
        return max(vals)
    if red == "min":
        return min(vals)
    if red == "first":
        return vals[0]
    if red == "last":
        return vals[-1]
    # exact means, so a flat series has equal means over windows of any length
    if red == "mean":
        return exact_mean(vals)
    if red == "mean_abs":
        return exact_mean([abs(v) for v in vals])
    if red == "mean_last_k":
        return exact_mean(vals[-k:])
    if red == "mean_first_k":
        return exact_mean(vals[:k])
    raise ConfigError(f"options.derived: unknown reduce {red!r} ({' | '.join(REDUCES)})")


def time_to_error(run: StoredRun, metric: str, target: float, x: str) -> tuple[float, bool]:
    """(``x`` at the first finite record of the accuracy ``metric`` whose error 1 − value is at
    most ``target``, False), else (``x`` at its last finite record, True): censored, a lower
    bound (a run that never gets there took at least its whole budget). ``x`` maps steps to
    the reported time through the run's own series (``common.x_axis``: effective epochs,
    epochs, or the step itself). NaN without records or with a non-finite ``target``."""
    pts = [(s, v) for s, v in run.metrics.get(metric, []) if math.isfinite(v)]
    if not pts or not math.isfinite(target):
        return float("nan"), False
    xs = x_axis(run, [float(s) for s, _ in pts], x)
    hit = next((i for i, (_, v) in enumerate(pts) if 1.0 - v <= target), None)
    return (float(xs[hit]), False) if hit is not None else (float(xs[-1]), True)


def _time_to_error(runs: list[StoredRun], d: dict[str, Any]) -> None:
    """``reduce: time_to_error`` (see :func:`add_derived`), in place."""
    name, metric = d["name"], d["metric"]
    of, slack, x = d.get("error_of"), float(d.get("slack", 0.0)), d.get("x", "effective_epochs")
    if not of:
        raise ConfigError(f"options.derived[{name}]: time_to_error needs 'error_of': a run "
                          "group whose mean final error sets the target, or 'own'")
    if of != "own":
        if not any(r.label == of for r in runs):
            raise ConfigError(f"options.derived[{name}]: error_of {of!r} is not a run group")
        finals = [_reduced(r, metric, "last", 0) for r in runs if r.label == of]
        finals = [v for v in finals if math.isfinite(v)]
        # the group's mean final error; NaN (every run censored at NaN) when none is finite
        shared = (1.0 - float(np.mean(finals))) * (1.0 + slack) if finals else float("nan")
    for r in runs:
        target = ((1.0 - _reduced(r, metric, "last", 0)) * (1.0 + slack) if of == "own"
                  else shared)
        r.summary[name], censored = time_to_error(r, metric, target, x)
        r.summary[name + "__censored"] = censored


def add_derived(runs: list[StoredRun], derived: list[dict[str, Any]]) -> None:
    """Compute ``derived`` summary values from each run's stored series (in place); with
    ``minus: OTHER`` the value is reduce(metric) − reduce(OTHER) (e.g. a train–test gap);
    ``reduce: at_step`` with ``step: S`` takes the last record at or before step S (NaN for
    a run whose summary says it stopped before S: its last state is not the one at S);
    ``transform: exp | log`` applies to the result (a perplexity from a mean per-token loss,
    the log of a positive rate so that a claim's margin is a ratio); the log of a value that
    is not positive is NaN.

    ``reduce: time_to_error`` reads ``metric`` as an accuracy (error = 1 − value) and gives
    the time (``x``: effective_epochs, the default, epoch or step) at which a run's error first
    comes within ``slack`` (a fraction, default 0) of a reference error: with ``error_of:
    GROUP`` the mean final error of that run group's runs (a common target, the time to reach
    a baseline's error), with ``error_of: own`` the run's own final error (the time to reach
    the error it ends with). A run that never reaches it gets its last time, flagged
    ``NAME__censored`` (a lower bound, which the claims treat as one)."""
    for d in derived or []:
        name, metric, red = d["name"], d["metric"], d.get("reduce", "max")
        if red == "time_to_error":
            _time_to_error(runs, d)
            continue
        k, step = int(d.get("k", 3)), d.get("step")
        tf = d.get("transform")
        if tf is not None and tf not in TRANSFORMS:
            raise ConfigError(f"options.derived[{name}]: unknown transform {tf!r} "
                              f"({' | '.join(TRANSFORMS)})")
        for r in runs:
            v = _reduced(r, metric, red, k, step)
            if d.get("minus"):
                v -= _reduced(r, d["minus"], red, k, step)
            if tf is not None:
                v = TRANSFORMS[tf](v) if math.isfinite(v) else float("nan")
            r.summary[name] = v


def group_key(spec, r: StoredRun) -> str:
    gb = spec.options.get("group_by")
    if not gb:
        return r.label
    v = get_dotted(r.params, gb)
    return f"{gb.split('.')[-1]}={v}"


def _bar_figure(spec, groups, b: dict[str, Any]):
    """``options.bars`` entry ``{name, metrics: [[key, label], ...], ylabel, zoom,
    propagate}``: per group the mean over seeds of each summary ``key`` as a bar, the seeds'
    std as its error bar (as Musso (2020) Figs. 3-4 plot them; none for a group of one seed,
    which measures no spread). ``propagate: {key: [k1, k2, ...]}`` takes a difference's error
    bar from the seeds' stds of the values it is computed from, √(Σ std_i²), as Musso (2020)
    Fig. 4 right does ("The error bars descend from propagation of the standard deviations of
    the original data"); none where one of those values is over one seed."""
    from sgdlab.report.figures.charts import grouped_bars

    if not isinstance(b, dict) or "name" not in b or not b.get("metrics"):
        raise ConfigError(f"options.bars: each entry needs a name and metrics, got {b!r}")
    propagate = b.get("propagate") or {}
    if not isinstance(propagate, dict) or not all(isinstance(v, list) and v
                                                  for v in propagate.values()):
        raise ConfigError(f"options.bars[{b['name']}].propagate: expected {{metric: [the "
                          f"metrics it is computed from, ...]}}, got {propagate!r}")
    series = {}
    for key, label in (tuple(m) for m in b["metrics"]):
        st = [stat(rs, key) for rs in groups.values()]
        errs = [s for _, s, _ in st]        # NaN for a group of one seed: no bar
        if key in propagate:
            errs = [math.sqrt(sum(s ** 2 for _, s, _ in parts))
                    for parts in ([stat(rs, k) for k in propagate[key]]
                                  for rs in groups.values())]
        series[label] = ([m for m, _, _ in st], errs)
    return grouped_bars(list(groups), series, ylabel=b.get("ylabel", ""),
                        colors=list(group_colours(groups).values()),
                        zoom=bool(b.get("zoom", False)),
                        title=f"{cited(spec.paper)}{b.get('title', b['name'])}\n"
                              + seeds_note(groups))


def compare_groups_names(spec, runs) -> ClaimNames:
    """The groups :func:`compare_groups` forms of ``runs`` (``RunSpec``) with the references,
    and the metrics their summaries and ``options.derived`` hold, where the procedures tell."""
    o = spec.options
    metrics = summary_names(runs)
    if metrics is not None:
        metrics |= {d["name"] for d in o.get("derived") or [] if isinstance(d, dict)
                    and "name" in d}
    return ClaimNames(run_groups(runs, key=lambda r: group_key(spec, r)) + pseudo_groups(o),
                      metrics)


# the rules of compare_groups' options (``register_analysis``), which analyses built on it add to
COMPARE_OPTIONS = {
    **CLAIM_OPTIONS, **CURVE_OPTIONS, "derived": "list", "table": "list", "table_name": "str",
    "caption": "str", "curve_x": "str", "curve_marks": "list of number", "bars": "list",
    "group_by": "str|null"}


@register_analysis("compare_groups", claim_names=compare_groups_names, options=COMPARE_OPTIONS)
def compare_groups(spec, runs: list[StoredRun]) -> Analysis:
    from sgdlab.report.figures.axes import metric_label

    o = spec.options
    add_derived(runs, o.get("derived", []))
    groups = by_group(runs, key=lambda r: group_key(spec, r))
    tab_spec = [tuple(x) for x in o.get("table", DEFAULT_TABLE)]
    table = summary_table(o.get("table_name", "summary"), groups, tab_spec,
                          caption=o.get("caption", "mean and std over seeds"))
    curve_x = o.get("curve_x", "step")
    figs = group_curves(groups, o.get("curves", ["train_loss", "test_acc"]),
                        lambda g, rs, steps: group_x_axis(rs, steps, curve_x),
                        xlabel=metric_label(curve_x),
                        title=lambda m: f"{cited(spec.paper)}{curve_label(m, o)}",
                        ylabel=lambda m: curve_label(m, o), logy=o.get("logy", []),
                        marks=o.get("curve_marks", []))    # e.g. where an optimizer switch is
    for b in o.get("bars", []) or []:
        fig = _bar_figure(spec, groups, b)
        figs.append((f"bars_{b['name']}", fig))
    keys = [k for k, _ in tab_spec] + [d["name"] for d in o.get("derived", [])]
    keys += claim_metrics(o.get("claims", []))
    vals = values_by_group(groups, list(dict.fromkeys(keys)))
    add_references(vals, o)                 # constant pseudo-groups
    concl = check_claims(o.get("claims", []), vals)
    div = [g for g, rs in groups.items() if any(r.status == "diverged" for r in rs)]
    if div:
        concl.append(Conclusion(f"runs diverged in: {', '.join(div)}"))
    return Analysis(tables=[table], figures=figs, conclusions=concl)
