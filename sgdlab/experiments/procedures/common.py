"""Shared pieces of the analyses: grouping runs over seeds, mean curves, summary tables, and
*claims* — the paper's qualitative statements written as data and checked on the numbers.

Claims (``options.claims`` in an experiment file), each producing one ``Conclusion``::

    {less: [A, B], metric: test_error, claim: "..."}       # mean_A < mean_B
    {greater: [A, B], metric: success_rate}                # mean_A > mean_B
    {close: [A, B], metric: final_loss, rtol: 0.2, atol: 0}  # |a − b| <= atol + rtol·|b|
    {far: [A, B], metric: ..., rtol: 0.2}                  # not close
    {above: [[A1, A2], [B1, B2]], metric: ...}             # min over set A > max over set B
    {equivalent: [A, B], metric: test_acc, margin: 0.01}   # equivalence test (TOST), below
    {equivalent: [A, B], metric: train_loss, rtol: 0.1}    # margin 0.1·|mean_B| (+ margin)
    {equivalent: [A, B, C], metric: test_acc, margin: 0.01}  # every pair equivalent

``equivalent`` tests a paper's "the two are practically the same" as an equivalence test, not
as a failed superiority test: with the seeds' means, standard deviations and counts, the 90%
Welch confidence interval of mean_A − mean_B (two one-sided tests at 5%) must lie inside
±margin to agree; it disagrees when the interval lies wholly outside ±margin, and is
inconclusive otherwise. ``rtol`` adds rtol·|mean_B| to the margin (as for ``close``), for a
metric with no unit of its own such as a loss. With a single seed per group there is no
spread to go on, and the point difference decides (the text says so). A reference
(``options.references``, a number the paper states) is a constant, with no spread and no seed
count, in every claim kind: against one the interval is the group's one-sample TOST interval,
mean_A − ref ± t_{0.95, n_A−1}·s_A/√n_A, and the other kinds' seed-to-seed spread is the
group's std alone. With more than two groups ("the protocols all reach equivalent
levels") every pair is tested: the claim agrees
when every pair is equivalent (the intersection-union principle: no correction is needed
for that conclusion), disagrees when some pair is not (a union of tests: with many pairs one
outside the margin by chance gets likelier, so the text names the pair and its interval),
and is inconclusive otherwise. For A–B comparisons with B the reference of ``rtol``, the
pairs keep the listed order (the earlier group is A).

A claim may carry ``reading: {KEY: CHOICE}`` where the paper's readings of a passage make
different claims: only the chosen reading's claims reach the analysis (``spec.resolve``).

Any claim may carry ``requires``: preconditions every compared group must meet for the claim
to be testable at all, e.g. ``requires: [{metric: train_acc, above: 0.5}]`` ("the nets trained").
A group that misses one makes the conclusion inconclusive, whatever the comparison says: two
untrained nets are "equivalent" without telling anything about the paper's claim. A reference
(``options.references``) is a constant, not a run: no precondition applies to it. A pseudo-group
an analysis derives from run groups (:class:`Derived`, e.g. the gap between two groups' curves)
has its preconditions checked on those groups. ``options.best_of`` (:func:`add_best_of`) makes
one: the group of a list that is best by a metric ("the tuned σ"), for a claim on its other
metrics.

``metric_b`` compares ``metric`` of A with another metric of B (e.g. a value at the end of
training with the same run's value at the start). ``A``/``B`` are run-group labels (or any
key of the value table the analysis builds). An optional ``margin`` makes less/greater/above
stricter (mean_A + margin < mean_B; min over A > max over B + margin); a negative one is a
tolerance ("A not worse than B by more than |margin|"), still judged on the means, not by a
one-sided confidence bound. ``rtol`` (``above`` only) adds a tolerance relative to the
compared value of B, rtol·|max over B| (for a metric with no unit of its own, such as a
sharpness): min over A > max over B + margin − rtol·|max over B|. Where seeds give a spread,
a less/greater/above/close/far claim whose observed difference lies within the largest
seed-to-seed std of the compared groups from the claim's boundary (for close/far: |a − b|
from the tolerance) is inconclusive. ``paired: true`` takes that spread from the per-seed
differences instead (for ``above``, of min over A − max over B), for groups whose runs share
each seed's start (the same initialisation, or a continuation of the same seed's run): the
seeds' common variation then cancels. A reference there is its constant at every seed.

A group's mean is over the seeds with a finite value; where some seed has none (a diverged
run, a measurement that failed), the conclusion's text says how many of the group's seeds
its mean leaves out ("partial data: ..."), whatever the verdict, and so it does for the
diverged runs whose values, from before they stopped, the mean keeps.

A value may be *censored*: ``values[group][metric + "__censored"]`` true says that some seed
measured only a lower bound (e.g. a basin that does not close inside the range scanned), so
the group's mean is a lower bound of the true mean. A bound can only move the compared
difference one way, so a claim resting on it is decided only when that way cannot change the
verdict: a censored value on the side the claim wants larger (A of ``greater``, B of ``less``,
any group of set A of ``above``, whose min can only rise) agrees when its bound already wins;
one on the other side (any group of set B of ``above``: a bound there may become the max)
disagrees when its bound already loses; an ``equivalent`` claim with one side censored can
only be refuted (its interval already lies beyond the margin on the side the bound can only
widen). Anything else — censored values on both sides included — is inconclusive, as is a
close/far claim on a censored value.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from sgdlab.errors import ConfigError, did_you_mean, finite_number as finite, refused_value
from sgdlab.experiments.analysis import Conclusion
from sgdlab.experiments.procedures import (ClaimNames, StoredRun, get_procedure,
                                           option_problem)
from sgdlab.experiments.spec import cited
from sgdlab.report.figures import label_colours
from sgdlab.report.tables import Table, mean_std

CLAIM_KINDS = {"less", "greater", "close", "far", "above", "equivalent"}
# the rules (``register_analysis``'s ``options``) of the options every analysis that checks
# claims against references reads
CLAIM_OPTIONS = {"claims": "list|null", "references": "dict"}
# the keys of a claim (an item of ``options.claims``) and the rule (``option_problem``) of each
# value, as :func:`check_claims` reads them; ``reading`` is read when the file is loaded
CLAIM_KEYS = {**{k: "list" for k in CLAIM_KINDS}, "metric": "str", "metric_b": "str",
              "metric_name": "str", "claim": "str", "margin": "number", "rtol": "number>=0",
              "atol": "number>=0", "paired": "bool", "requires": "list", "requires_why": "str",
              "reading": "any"}
# those of a claim's precondition (an item of its ``requires``)
REQUIRES_KEYS = {"metric": "str", "above": "number", "below": "number"}
# what a claim and a precondition must hold besides keys of those names, as a problem says it
CLAIM_FORM = f"a claim has exactly one of {', '.join(sorted(CLAIM_KINDS))} and a 'metric'"
PRECONDITION_FORM = "give a 'metric' and one of above / below"
# the rules of the options of the curves :func:`group_curves` draws
CURVE_OPTIONS = {"curves": "list of str", "logy": "list of str", "curve_labels": "dict"}


def by_group(runs: list[StoredRun], key=None) -> "OrderedDict[str, list[StoredRun]]":
    """Runs grouped by label without the seed (``key(run)`` overrides), in first-seen order."""
    out: OrderedDict[str, list[StoredRun]] = OrderedDict()
    for r in runs:
        out.setdefault(key(r) if key else r.label, []).append(r)
    return out


def decided(holds: Any, *values: Any) -> bool | None:
    """The verdict ``holds``, or None (inconclusive) when a value it rests on is missing or
    not finite: a number that is not there neither agrees nor disagrees with the paper."""
    def known(v: Any) -> bool:
        try:
            return math.isfinite(float(v))
        except (TypeError, ValueError):
            return False

    return bool(holds) if all(known(v) for v in values) else None


def stat(runs: list[StoredRun], key: str) -> tuple[float, float, int]:
    """(mean, std, n) of a summary key over runs (non-finite and missing values skipped);
    the std is NaN where n < 2 (:func:`~sgdlab.report.tables.mean_std`: one seed has no
    spread)."""
    vals = [r.summary.get(key) for r in runs]
    vals = [float(v) for v in vals if finite(v)]
    m, s = mean_std(vals)
    return m, s, len(vals)


def mean_curve(runs: list[StoredRun], metric: str, *, counts: bool = False) -> tuple:
    """Mean and sample std over runs of a metric series, each over the runs with a finite
    value at that step: a run that diverged (its inf or NaN) or stopped early drops out of
    the steps after its last finite value, and the others' curves go on. A step is kept
    where every run still going (not past its last finite value) recorded it: a record of
    one seed between the others' steps would be a mean over that seed alone. Where fewer
    than two runs are in a mean its std is NaN (a single run's everywhere), so no band is
    drawn there. Returns ``(steps, mean, std)``; ``counts=True`` adds the number of runs in
    each mean."""
    series = [dict(r.metrics.get(metric, [])) for r in runs]
    series = [s for s in series if s]
    if not series:
        return ([], [], [], []) if counts else ([], [], [])
    steps = sorted(set().union(*series))
    arr = np.array([[s.get(t, np.nan) for t in steps] for s in series], dtype=float)
    arr[~np.isfinite(arr)] = np.nan
    finite = np.isfinite(arr)
    last = np.array([row.nonzero()[0].max() if row.any() else -1 for row in finite])
    going = np.arange(len(steps))[None, :] <= last[:, None]
    keep = (finite | ~going).all(axis=0)
    steps, arr, finite = [t for t, k in zip(steps, keep) if k], arr[:, keep], finite[:, keep]
    n = finite.sum(axis=0)
    # NaN where no run is in a mean, or one in a std, said by the value: numpy's warning of an
    # empty slice is never given (a catch_warnings block to ignore it, once left, voided every
    # module's record of the warnings shown, which then came again at each curve)
    mean, std = np.full(len(steps), np.nan), np.full(len(steps), np.nan)
    mean[n > 0] = np.nanmean(arr[:, n > 0], axis=0)
    std[n > 1] = np.nanstd(arr[:, n > 1], axis=0, ddof=1)
    out = ([float(t) for t in steps], mean.tolist(), std.tolist())
    return out + ([int(k) for k in n],) if counts else out


def seeds_label(label: str, counts: list[int] | None, seeds: int) -> str:
    """A curve's legend ``label``, saying how many of the group's ``seeds`` runs its mean
    holds where that is not all of them (``counts``: :func:`mean_curve`'s, per point): a
    mean over fewer seeds past where a run diverged or stopped can step, which must not be
    read as the runs' own change."""
    if not counts or min(counts) == seeds:
        return label
    lo, hi = min(counts), max(counts)
    return f"{label} (mean of {lo}{f'-{hi}' if hi != lo else ''} of {seeds} seeds)"


def group_colours(groups) -> dict[str, str]:
    """{group: colour}, by the group's place among all of them: the same in every curve and bar
    figure of a report, also where a group recorded no value of one metric (the colour cycle
    would give the next group its colour)."""
    return label_colours(groups)


def seeds_named(seeds: Iterable[int]) -> str:
    """"seed 0" or "seeds 0, 1, 2": the seeds themselves, in order, for a figure's title."""
    seeds = sorted(set(seeds))
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def seeds_note(groups: "OrderedDict[str, list[StoredRun]]", *, spread: bool = True) -> str:
    """Which seeds a figure of the ``groups``' curves holds, for its title: "mean ± std over
    3 seeds" (``spread``: a band of the std over seeds is drawn), "mean over 2-3 seeds" where
    the groups hold different numbers, or the seed itself where every group holds one run."""
    counts = [len(rs) for rs in groups.values() if rs]
    if not counts:
        return ""
    lo, hi = min(counts), max(counts)
    if hi > 1:
        return (f"mean{' ± std' if spread else ''} over "
                f"{lo if lo == hi else f'{lo}-{hi}'} seeds")
    return seeds_named(r.seed for rs in groups.values() for r in rs)


def summary_table(name: str, groups: "OrderedDict[str, list[StoredRun]]",
                  metrics: list[tuple[str, str]], caption: str = "",
                  first: str = "run") -> Table:
    """Rows = groups; "seeds" (the group's runs); per metric a mean and a std column (over
    the seeds with a finite value; NaN, shown as ``—`` and written as null, where one seed
    has a value: it measures no spread, while two equal values show 0), where some group's
    mean leaves seeds out (a diverged run's inf, a value not measured) a column counting the
    seeds in it, and where some run's value is only a lower bound (``metric +
    "__censored"``) a column counting those seeds, so that a bound is not read as a
    measurement; plus the diverged runs."""
    censored = {key for key, _ in metrics
                if any(r.summary.get(key + "__censored") for rs in groups.values() for r in rs)}
    partial = {key for key, _ in metrics
               if any(stat(rs, key)[2] < len(rs) for rs in groups.values())}
    cols = [first, "seeds"]
    for key, lab in metrics:
        cols += [lab, f"{lab} std"]
        cols += [f"{lab}: seeds in the mean"] if key in partial else []
        cols += [f"{lab}: seeds at a lower bound"] if key in censored else []
    cols.append("diverged")
    rows = []
    for g, rs in groups.items():
        row: list[Any] = [g, len(rs)]
        for key, _ in metrics:
            m, s, n = stat(rs, key)
            row += [m, s]
            if key in partial:
                row.append(n)
            if key in censored:
                row.append(sum(1 for r in rs if r.summary.get(key + "__censored")))
        row.append(sum(1 for r in rs if r.status == "diverged"))
        rows.append(row)
    return Table(name, cols, rows, caption=caption)


def values_by_group(groups: "OrderedDict[str, list[StoredRun]]", metrics: list[str]
                    ) -> dict[str, dict[str, Any]]:
    """``{group: {metric: mean, metric + "__std": std over seeds (only where two or more
    seeds have a finite value: one seed has no spread), metric + "__by_seed":
    {seed: value}}}`` (the last for claims with ``paired: true``), ``metric + "__missing"``:
    the number of seeds left out of the mean (no finite value), ``metric + "__diverged"``:
    the number of diverged runs whose value (from before they stopped) is in it, where there
    are any, and ``metric + "__censored": True`` where some run's summary flags its value as
    only a lower bound (its own ``metric + "__censored"``); :func:`check_claims` reads them."""
    out: dict[str, dict[str, Any]] = {}
    for g, rs in groups.items():
        out[g] = {}
        for m in metrics:
            mean, std, n = stat(rs, m)
            out[g][m] = mean
            out[g][m + "__n"] = n
            if n > 1:
                out[g][m + "__std"] = std
            out[g][m + "__by_seed"] = {r.seed: float(r.summary[m]) for r in rs
                                       if finite(r.summary.get(m))}
            if n < len(rs):     # seeds whose value is missing or not finite (a diverged run)
                out[g][m + "__missing"] = len(rs) - n
            # diverged runs whose value, from before they stopped, is in the mean
            div = sum(1 for r in rs if r.status == "diverged" and finite(r.summary.get(m)))
            if div:
                out[g][m + "__diverged"] = div
            if any(r.summary.get(m + "__censored") for r in rs):
                out[g][m + "__censored"] = True
            recorded = recorded_instead(rs, m)
            if recorded is not None:
                out[g][m + "__unrecorded"] = recorded
    return out


def recorded_instead(runs: Sequence[StoredRun], metric: str) -> list[str] | None:
    """The names the ``runs``' summaries record, sorted, where every run finished and none of
    them records ``metric`` (a name misspelt in the options, or a measurement the runs do not
    take); None where one does, where a run did not finish (a diverged run stops before its
    final measurements), or where there are no runs."""
    if not runs or any(metric in r.summary or r.status != "finished" for r in runs):
        return None
    return sorted(set().union(*(r.summary for r in runs)))


def unrecorded_note(metric: str, recorded: Sequence[str]) -> str:
    """Says that no run records ``metric``, the closest of ``recorded`` and all of them."""
    return (f"no run records {metric!r}{did_you_mean(metric, recorded)}; the runs' final "
            f"values are {', '.join(recorded) or 'none'}")


def _paired_spread(values: dict[str, dict[str, Any]], metric: str, a: list[str],
                   b: list[str], where: str) -> float:
    """Std over the seeds every group shares of min over A − max over B: the spread of a
    comparison between runs that share each seed's start (same initialisation, same data).
    A reference is a constant: the same value at every seed, and no seeds of its own."""
    try:
        by_seed = {g: values[g][metric + "__by_seed"] for g in a + b
                   if not isinstance(values[g], Reference)}
    except KeyError:
        raise ConfigError(f"{where}: 'paired' needs per-seed values, which this analysis "
                          "does not keep") from None

    def at(g: str, seed: Any) -> float:
        return by_seed[g][seed] if g in by_seed else values[g][metric]

    seeds = sorted(set.intersection(*(set(v) for v in by_seed.values()))) if by_seed else []
    diffs = [min(at(g, s) for g in a) - max(at(g, s) for g in b) for s in seeds]
    return float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0


def seed_spread(values: dict[str, dict[str, Any]], keys: list[tuple[str, str]]) -> float:
    """The largest seed-to-seed std (``metric + "__std"``) over (group, metric) ``keys``; a
    group with one seed has none (absent or NaN) and adds nothing, nor does a reference (a
    constant); 0 where none has one, so that the verdict rests on the point difference
    (:func:`within_spread`)."""
    stds = (values.get(g, {}).get(m + "__std") for g, m in keys)
    return max((float(s) for s in stds if finite(s)), default=0.0)


def within_spread(gap: float, spread: float) -> bool:
    """Whether ``gap``, the observed difference's distance from a claim's boundary, lies
    inside the seed-to-seed ``spread``: there neither meeting nor missing the claim is
    evidence, and the verdict is inconclusive."""
    return spread > 0 and abs(gap) < spread


def _bound_settles(up: int, down: int, keeps: str | None, compared: int) -> tuple[bool, str]:
    """(whether censored values settle a verdict, the words for them). A censored value is a
    lower bound, so it can only move the compared difference one way: ``up`` of them can only
    raise it, ``down`` only lower it. ``keeps`` is the way ("up" or "down") in which the
    observed verdict cannot change, None where either could; the verdict is settled only when
    every bound moves the difference that way. ``compared``: the values the claim reads."""
    n = up + down
    words = ("a value is a lower bound" if n == 1 else "both values are lower bounds"
             if n == compared == 2 else f"{n} values are lower bounds")
    way = "up" if up and not down else "down" if down and not up else None
    return way is not None and way == keeps, words


def _fmt(v: float) -> str:
    return "nan" if not finite(v) else f"{v:.4g}"


def _fmt_pair(va: float, vb: float) -> tuple[str, str]:
    """Both values with the fewest digits (at least 4) that tell two different values apart,
    so that "8.406 is lower than 8.406" cannot be printed."""
    for digits in range(4, 18):
        sa, sb = (f"{v:.{digits}g}" if finite(v) else "nan" for v in (va, vb))
        if sa != sb or va == vb or not (finite(va) and finite(vb)):
            return sa, sb
    return sa, sb


def spread_and_count(values: dict[str, dict[str, Any]], group: str,
                     metric: str) -> tuple[float, float]:
    """(seed-to-seed std, seed count) of ``group``'s ``metric`` as :func:`equivalence` reads
    them: a group without a std (one seed) has 0; a reference is a constant, with no spread
    and no seeds to count, so its count is infinite and a test's degrees of freedom are the
    other group's alone."""
    if isinstance(values.get(group), Reference):
        return 0.0, math.inf
    v = values.get(group, {})
    return v.get(metric + "__std", 0.0), int(v.get(metric + "__n", 1))


def equivalence(va: float, vb: float, sa: float, sb: float, na: float, nb: float,
                margin: float) -> tuple[bool | None, str]:
    """(verdict, text) of the TOST equivalence test described in the module docstring. A
    count ``na`` or ``nb`` of ``math.inf`` is a constant (:func:`spread_and_count`): its
    side adds nothing to the standard error nor to the degrees of freedom, so against a
    constant the interval is the other group's one-sample one, t_{0.95, n−1}·s/√n."""
    from scipy import stats

    d = va - vb
    if na < 2 or nb < 2:
        ok = abs(d) <= margin
        text = f"|difference| = {_fmt(abs(d))} {'<=' if ok else '>'} margin {margin:g}"
        # one seed on one side only: the other's seed-to-seed std still bounds what the point
        # difference shows, as for the other claims
        spread = sa if na > 1 else sb if nb > 1 else 0.0
        if within_spread(margin - abs(d), spread):
            return None, (f"{text}, within the seed-to-seed spread (std {spread:.3g}) of the "
                          "margin (one group has one seed), so inconclusive")
        return ok, text + (" (one seed: no spread to test against)" if not spread else
                           f" (one group has one seed; the other's std {spread:.3g})")
    va_n, vb_n = sa ** 2 / na, sb ** 2 / nb
    se = math.sqrt(va_n + vb_n)
    if se == 0:
        lo = hi = d
    else:
        df = (va_n + vb_n) ** 2 / ((va_n ** 2 / (na - 1) if na > 1 else 0)
                                   + (vb_n ** 2 / (nb - 1) if nb > 1 else 0) or 1e-300)
        t = float(stats.t.ppf(0.95, df))
        lo, hi = d - t * se, d + t * se
    ci = f"90% CI of the difference [{_fmt(lo)}, {_fmt(hi)}]"
    if math.inf in (na, nb):
        ci += " (one-sample: the reference is a constant)"
    if -margin <= lo and hi <= margin:
        return True, f"{ci} lies inside ±{margin:g}: equivalent"
    if lo > margin or hi < -margin:
        return False, f"{ci} lies outside ±{margin:g}: not equivalent"
    return None, f"{ci} straddles ±{margin:g}, so inconclusive"


class Reference(dict):
    """A constant pseudo-group's values: a claim reads "lower than cosine −0.9 (−0.9)", not
    "lower than that of cosine −0.9"."""


class Derived(dict):
    """A pseudo-group's values computed from run groups ``of`` (the gap between two groups'
    learning curves): a claim's preconditions (``requires``) are those groups' to meet, since
    two curves of networks that did not train match without telling anything."""

    def __init__(self, values: dict[str, Any], of: list[str] | tuple[str, ...]):
        super().__init__(values)
        self.of = tuple(of)


def add_references(values: dict[str, dict[str, float]], options: dict[str, Any]) -> None:
    """Add ``options.references`` ``{name: {metric: value}}`` to ``values`` (in place):
    constant pseudo-groups a claim compares a run group with ("100% training accuracy",
    "5% of the steps")."""
    for name, ref in (options.get("references") or {}).items():
        if name in values or not isinstance(ref, dict):
            raise ConfigError(f"options.references: {name!r} must be a new name mapping "
                              f"metrics to values, got {ref!r}")
        values[name] = Reference({k: float(v) for k, v in ref.items()})


def add_best_of(values: dict[str, dict[str, Any]], options: dict[str, Any]) -> dict[str, str]:
    """Add ``options.best_of`` ``{name: {of: [groups], by: metric}}`` to ``values`` (in place):
    a pseudo-group with every value of the group among ``of`` whose mean ``by`` is the
    largest (the first listed on a tie), as a grid search picks its best setting. Returns
    ``{name: "name (= chosen group)"}``, the names a claim's text gives the pseudo-groups."""
    names = {}
    for name, sel in (options.get("best_of") or {}).items():
        if name in values or not isinstance(sel, dict) or set(sel) != {"of", "by"} \
                or not sel["of"] or any(g not in values for g in sel["of"]):
            raise ConfigError(f"options.best_of: {name!r} must be a new name mapping 'of' "
                              f"(run groups; known: {', '.join(values)}) and 'by' (a metric), "
                              f"got {sel!r}")
        scored = [g for g in sel["of"] if finite(values[g].get(sel["by"]))]
        if not scored:      # no group has a value to choose by: nothing to compare
            values[name] = Derived({}, sel["of"])
            names[name] = f"{name} (none of {', '.join(sel['of'])} has a {sel['by']})"
            continue
        best = max(scored, key=lambda g: values[g][sel["by"]])    # max keeps the first on ties
        values[name] = Derived(values[best], [best])
        names[name] = f"{name} (= {best}, by {sel['by']})"
    return names


def pseudo_groups(options: dict[str, Any]) -> list[str]:
    """The names :func:`add_references` and :func:`add_best_of` add to a value table."""
    return [str(n) for k in ("references", "best_of")
            if isinstance(options.get(k), dict) for n in options[k]]


def run_groups(runs, key=lambda r: r.label.split("|")[0]) -> list[str]:
    """The groups ``runs`` (``RunSpec`` or :class:`StoredRun`) form under ``key``, in
    first-seen order; by default the run group's label (:attr:`StoredRun.group`)."""
    return list(dict.fromkeys(key(r) for r in runs))


def by_run_group(spec, runs, metrics: Iterable[str] | None = None) -> ClaimNames:
    """The :class:`ClaimNames` of an analysis that groups ``runs`` by run group
    (:attr:`StoredRun.group`) and adds the pseudo-groups of its options, with the
    ``metrics`` its value table holds (None: not known before the runs)."""
    return ClaimNames(run_groups(runs) + pseudo_groups(spec.options),
                      None if metrics is None else set(metrics))


def summary_names(runs) -> set[str] | None:
    """Every key the summaries of ``runs`` (``RunSpec``) can hold, as their procedures
    declare it (:meth:`Procedure.summary_keys`); None where one does not tell."""
    out: set[str] = set()
    for r in runs:
        keys = get_procedure(r.procedure).summary_keys(r.params)
        if keys is None:
            return None
        out |= keys
    return out


def unknown_claim_names(claims: Any, names: ClaimNames, options: dict[str, Any]) -> list[str]:
    """What ``claims`` (``options.claims``) name that the value table of their analysis
    will not hold, found before any run trains: a group not among ``names.groups``, a metric
    (compared or required) not among ``names.metrics`` nor the ``options.references``' own
    (:class:`~sgdlab.experiments.procedures.ClaimNames`; None checks nothing of that kind).
    One sentence a problem, naming the claim, with the closest name."""
    out: list[str] = []
    refs = options.get("references") if isinstance(options.get("references"), dict) else {}
    known = None if names.metrics is None else names.metrics | {
        m for ref in refs.values() if isinstance(ref, dict) for m in ref}
    for i, c in enumerate(claims if isinstance(claims, list) else []):
        kinds = [k for k in c if k in CLAIM_KINDS] if isinstance(c, dict) else []
        if len(kinds) != 1 or not isinstance(c[kinds[0]], list):
            continue        # malformed: check_claims says how when the report is written
        sides = c[kinds[0]]
        groups = [g for x in sides for g in (x if isinstance(x, list) else [x])]
        what = f"options.claims[{i}] ({kinds[0]}: {sides}, metric {c.get('metric')!r})"
        if names.groups is not None:
            out += [f"{what}: {unknown_group(g, names.groups)}" for g in _once(groups)
                    if g not in names.groups]
        if known is not None:
            used = [c[k] for k in ("metric", "metric_b") if k in c]
            used += [r["metric"] for r in c.get("requires") or []
                     if isinstance(r, dict) and "metric" in r]
            out += [f"{what}: {unknown_metric(m, known)}" for m in _once(used)
                    if not isinstance(m, str) or m not in known]
    return out


def mapping_problems(where: str, mapping: Any, keys: dict[str, str], what: str) -> list[str]:
    """A sentence for ``mapping`` (an option or a part of one, at ``where``; ``what`` says
    what it is: "a claim") that is no mapping, and for each of its keys not among ``keys``
    (with the closest one) or whose value breaks that key's rule (``keys``: ``{key: rule}``,
    :func:`~sgdlab.experiments.procedures.option_problem`)."""
    if not isinstance(mapping, dict):
        return [f"{where} must be a mapping ({what}), {refused_value(mapping)}"]
    out = []
    for k, v in mapping.items():
        if k not in keys:
            out.append(f"{where}: {what} has no key {k!r}{did_you_mean(k, keys)}; its "
                       f"keys: {', '.join(sorted(keys))}")
        elif (problem := option_problem(v, keys[k])) is not None:
            out.append(f"{where}.{k} must be {problem}, {refused_value(v)}")
    return out


def claim_entry_problems(claims: list[Any]) -> list[str]:
    """A sentence for each claim of ``claims`` (``options.claims``) that is no mapping, has a
    key a claim has not (with the closest one, :data:`CLAIM_KEYS`) or a value against its
    key's rule, or lacks one kind or its metric, or whose kind is not given the groups it compares
    (:func:`_claim_sides_problems`), and alike for each of its ``requires`` entries: found
    before any run trains, such a claim failed the report or had its misspelt key ignored."""
    out: list[str] = []
    for i, c in enumerate(claims):
        where = f"options.claims[{i}]"
        found = mapping_problems(where, c, CLAIM_KEYS, "a claim")
        # (a misspelt kind or metric is said as such, not as one missing too)
        if not found and (len([k for k in c if k in CLAIM_KINDS]) != 1 or "metric" not in c):
            found.append(f"{where}: {CLAIM_FORM}")
        elif not found:
            found += _claim_sides_problems(where, c)
        requires = c.get("requires") if isinstance(c, dict) else None
        for j, r in enumerate(requires if isinstance(requires, list) else []):
            at = f"{where}.requires[{j}]"
            said = mapping_problems(at, r, REQUIRES_KEYS, "a precondition")
            if not said and ("metric" not in r or len({"above", "below"} & r.keys()) != 1):
                said.append(f"{at}: {PRECONDITION_FORM}")
            found += said
        out += found
    return out


def _claim_sides_problems(where: str, c: dict[str, Any]) -> list[str]:
    """What is wrong with the groups a well-formed claim ``c`` compares, as
    :func:`check_claims` reads them: two groups ``[A, B]`` (``equivalent``: two or more),
    ``above`` two lists of groups. Found before any run trains; the report had failed on it
    after all the training."""
    kind = next(k for k in c if k in CLAIM_KINDS)
    sides = c[kind]
    if kind == "above":
        if len(sides) != 2 or not all(isinstance(s, list) and s for s in sides):
            return [f"{where}.above compares two lists of groups, [[A1, A2, ...], [B1, ...]], "
                    f"{refused_value(sides)}"]
    elif len(sides) != 2 and not (kind == "equivalent" and len(sides) > 2):
        more = " (or more)" if kind == "equivalent" else ""
        return [f"{where}.{kind} compares two groups, [A, B]{more}, {refused_value(sides)}"]
    return []


def unknown_group(group: Any, groups: list[str]) -> str:
    """Says, before any run trains, that the runs will form no group ``group``: the closest of
    the ``groups`` they form, and all of them."""
    return (f"no group {group!r}{did_you_mean(group, groups)}; the runs form "
            f"{', '.join(map(str, groups)) or 'none'}")


def option_group_problems(where: str, named: Any, groups: list[str]) -> list[str]:
    """A sentence for each group the option at ``where`` (a list of groups, or None) names
    that is not among ``groups``, found before any run trains."""
    if not isinstance(named, list):
        return []
    return [f"{where}: {unknown_group(g, groups)}" for g in _once(named) if g not in groups]


def unknown_metric(metric: Any, known: set[str]) -> str:
    """Says, before any run trains, that no run will record ``metric``: the closest of the
    ``known`` names, and all of them."""
    said = (f"no run records a metric {metric!r}{did_you_mean(metric, known)}; they record "
            f"{', '.join(sorted(known))}")
    if isinstance(metric, str) and "/" in metric:
        # an instrument's series (hess/top_1): recorded during training, no final value
        said += (f"; {metric!r} names a series of `measure`, not a final value: compare_groups'"
                 f" options.derived makes one, {{name: NAME, metric: {metric}, reduce: last}}")
    return said


def _once(items: list[Any]) -> list[Any]:
    """``items`` without repeats, in order (a name a file gives may be unhashable)."""
    return [x for i, x in enumerate(items) if x not in items[:i]]


def claim_metrics(claims: list[dict[str, Any]]) -> list[str]:
    """Every metric the claims read (compared metrics and preconditions), in order."""
    out = [c[k] for c in claims or [] for k in ("metric", "metric_b") if k in c]
    out += [r["metric"] for c in claims or [] for r in c.get("requires", [])]
    return list(dict.fromkeys(out))


def unmet_preconditions(c: dict[str, Any], groups: list[str],
                        values: dict[str, dict[str, float]], where: str, *,
                        every: bool = False) -> list[str]:
    """The ``requires`` entries of claim ``c`` that some group misses, as sentences; with
    ``every``, a requirement that all the groups miss is one sentence for all of them."""
    out = []
    for j, r in enumerate(c.get("requires", [])):
        bounds = [k for k in ("above", "below") if k in r]
        if "metric" not in r or len(bounds) != 1:
            raise ConfigError(f"{where}.requires[{j}]: {PRECONDITION_FORM}")
        bound = float(r[bounds[0]])
        missed = []
        # a reference is a constant: no precondition applies to it; a derived pseudo-group's
        # apply to the run groups it is computed from
        checked = list(dict.fromkeys(
            h for g in groups if not isinstance(values.get(g), Reference)
            for h in (values[g].of if isinstance(values.get(g), Derived) else (g,))))
        for g in checked:
            v = values.get(g, {}).get(r["metric"], float("nan"))
            if not (finite(v) and (v > bound if bounds[0] == "above" else v < bound)):
                missed.append((g, v))
        if every and len(missed) == len(checked) > 1:
            out.append(f"{r['metric']} of every group is not {bounds[0]} {bound:g} ("
                       + ", ".join(f"{g} {_fmt(v)}" for g, v in missed) + ")")
            continue
        out += [f"{r['metric']} of {g} = {_fmt(v)} is not {bounds[0]} {bound:g}"
                for g, v in missed]
    return out


def check_claims(claims: list[dict[str, Any]], values: dict[str, dict[str, float]],
                 names: dict[str, str] | None = None) -> list[Conclusion]:
    """Evaluate ``claims`` (see the module docstring) against ``values[group][metric]``."""
    names = names or {}
    out = []
    for i, c in enumerate(claims or []):
        kinds = [k for k in c if k in CLAIM_KINDS]
        if len(kinds) != 1 or "metric" not in c:
            raise ConfigError(f"options.claims[{i}]: {CLAIM_FORM}")
        kind, metric = kinds[0], c["metric"]
        if kind == "equivalent" and isinstance(c[kind], list) and len(c[kind]) > 2:
            out.append(_all_equivalent(c, values, names))
            continue
        if not isinstance(c[kind], list) or len(c[kind]) != 2:
            raise ConfigError(f"options.claims[{i}]: {kind} compares two groups, [A, B]"
                              + (" (or more, for equivalent)" if kind == "equivalent" else ""))
        a, b = c[kind]
        mname = c.get("metric_name", metric)

        def val(g: str, metric: str = metric) -> float:
            if g not in values:
                raise ConfigError(f"options.claims[{i}]: unknown group {g!r}"
                                  f"{did_you_mean(g, values)}; known: "
                                  f"{', '.join(values)}")
            return values[g].get(metric, float("nan"))

        def nm(g: str) -> str:
            return names.get(g, g)

        margin = float(c.get("margin", 0.0))
        slack = None        # how far the observed difference lies past the claim's boundary
        # censored values that can only raise / only lower the compared difference, the way
        # that cannot change the observed verdict, and how many values the claim reads
        up = down = 0
        keeps: str | None = None
        compared = 2
        if c.get("paired") and kind in ("less", "greater", "above") \
                and c.get("metric_b", metric) != metric:
            raise ConfigError(f"options.claims[{i}]: 'paired' compares one metric")
        if kind == "above":
            va, vb = [val(g) for g in a], [val(g) for g in b]
            rtol = float(c.get("rtol", 0.0))
            if rtol < 0:
                raise ConfigError(f"options.claims[{i}]: rtol is a tolerance, >= 0")
            if rtol and all(map(finite, vb)):    # a tolerance relative to max over B
                margin -= rtol * abs(max(vb))
            if all(map(finite, va + vb)):
                slack = min(va) - max(vb) - margin
            ok = slack is not None and slack > 0
            # a bound in A can only raise min over A; one in B may become max over B
            up, down = (sum(bool(values[g].get(metric + "__censored")) for g in side)
                        for side in (a, b))
            keeps = ("up" if ok else "down") if slack is not None else None
            compared = len(a) + len(b)
            fa, fb = _fmt_pair(min(va), max(vb)) if margin == 0 else (_fmt(min(va)),
                                                                      _fmt(max(vb)))
            if margin < 0:      # a tolerance: "no group of B better by more than |margin|"
                rel = f"{'is not below' if ok else 'is below'}"
                tail = f" by more than {-margin:.4g}" + (
                    f" ({rtol:g} × |max over B|)" if rtol else "")
            else:
                rel = ">" if ok else "is not above"
                tail = f" (by a margin of {margin:g})" if margin > 0 else ""
            text = (f"{mname}: min over {{{', '.join(map(nm, a))}}} {'≥' if up else '='} {fa} "
                    f"{rel} max over {{{', '.join(map(nm, b))}}} {'≥' if down else '='} "
                    f"{fb}{tail}")
            ev = {"a": dict(zip(a, va)), "b": dict(zip(b, vb))}
        else:
            mb = c.get("metric_b", metric)       # compare two metrics of one group
            va, vb = val(a), val(b, mb)
            if mb != metric:
                a, b = f"{a} [{metric}]", f"{b} [{mb}]"
            ev = {a: va, b: vb}
            fin = finite(va) and finite(vb)
            ga, gb = c[kind]
            cens_a = bool(values.get(ga, {}).get(metric + "__censored"))
            cens_b = bool(values.get(gb, {}).get(mb + "__censored"))
            if kind in ("less", "greater"):
                if fin:
                    slack = (vb - va if kind == "less" else va - vb) - margin
                ok = slack is not None and slack > 0
                fa, fb = _fmt_pair(va, vb) if margin == 0 else (_fmt(va), _fmt(vb))
                # the true slack is at least the observed one when the side the claim wants
                # larger is censored, at most it when the other side is
                up, down = (cens_a, cens_b) if kind == "greater" else (cens_b, cens_a)
                keeps = ("up" if ok else "down") if fin else None
                fa, fb = ("≥ " + fa if cens_a else fa), ("≥ " + fb if cens_b else fb)
                # a run group's value is "that of" the group; a reference is the value itself
                of = "" if isinstance(values.get(gb), Reference) else " that of"
                if margin < 0:      # a tolerance: "not worse by more than |margin|"
                    rel = {"less": "not above", "greater": "not below"}[kind]
                    rel = (rel if ok else "above" if kind == "less" else "below") + (
                        f"{of} {nm(b)} ({fb}) by more than {-margin:g}")
                    text = f"{mname} of {nm(a)} ({fa}) is {rel}"
                else:
                    rel = {"less": ("lower than", "not lower than"),
                           "greater": ("higher than", "not higher than")}[kind][0 if ok else 1]
                    if margin > 0:
                        rel += f" (by a margin of {margin:g})"
                    text = (f"{mname} of {nm(a)} ({fa}) is {rel}{of} {nm(b)} ({fb})")
            elif kind == "equivalent":
                if "margin" not in c and "rtol" not in c:
                    raise ConfigError(f"options.claims[{i}]: 'equivalent' needs a 'margin' or an "
                                      "'rtol' (the largest difference the paper's claim "
                                      "tolerates, absolute or as a fraction of |mean_B|)")
                rtol = float(c.get("rtol", 0.0))
                eq_margin = margin + rtol * abs(vb) if fin else margin
                (sa, na), (sb, nb) = spread_and_count(values, ga, metric), \
                    spread_and_count(values, gb, mb)
                ok, how = (None, "") if not fin else equivalence(va, vb, sa, sb, na, nb,
                                                                 eq_margin)
                fa, fb = (("≥ " if cens else "") + _fmt(v) for cens, v in ((cens_a, va),
                                                                          (cens_b, vb)))
                text = f"{mname} of {nm(a)} ({fa}) vs {nm(b)} ({fb}): {how}"
                if rtol and fin:
                    text += (f" (margin {f'{margin:g} + ' if margin else ''}{rtol:g} × |mean of "
                             f"{nm(b)}| = {_fmt(eq_margin)})")
                # a bound can only take A − B further up (A censored) or down (B): only an
                # interval already beyond the margin on that side stays there
                up, down = cens_a, cens_b
                keeps = None if ok is not False else "up" if va > vb else "down"
            else:
                tol = float(c.get("atol", 0.0)) + float(c.get("rtol", 0.1)) * abs(vb) if fin else 0
                close = fin and abs(va - vb) <= tol
                ok = close if kind == "close" else (fin and not close)
                if fin:     # how far |a − b| lies on the claim's side of the tolerance
                    slack = (tol - abs(va - vb)) * (1 if kind == "close" else -1)
                text = (f"{mname} of {nm(a)} ({_fmt(va)}) and {nm(b)} ({_fmt(vb)}) "
                        f"{'agree within' if close else 'differ by more than'} "
                        f"tolerance {_fmt(tol)}")
                up, down = cens_a, cens_b       # a bound may close or open the gap
        censored = None     # (which values are lower bounds, whether the bound settles it)
        if up or down:
            settles, bound = _bound_settles(int(up), int(down), keeps, compared)
            censored = (bound, settles)
            if not settles:
                ok = None
        if slack is not None:
            # distance of the observed difference from the claim's boundary: inside the
            # seed-to-seed spread, neither meeting nor missing the claim is evidence
            ga, gb = c[kind]
            paired = bool(c.get("paired"))
            if paired:      # min over the higher set − max over the lower, seed by seed
                high, low = (ga, gb) if kind == "above" else \
                    ([ga], [gb]) if kind == "greater" else ([gb], [ga])
                spread = _paired_spread(values, metric, high, low, f"options.claims[{i}]")
                seed_sets = {frozenset(values[g][metric + "__by_seed"]) for g in high + low
                             if not isinstance(values[g], Reference)}
                if len(seed_sets) > 1:
                    # the means average different seeds while the spread pairs the shared
                    # ones: no paired comparison (a seed diverged or is missing on one side)
                    text += (" — the groups' finite seeds differ, so the paired comparison "
                             "is inconclusive")
                    ok, slack = None, None
            elif kind == "above":
                spread = seed_spread(values, [(g, metric) for g in ga + gb])
            else:
                spread = seed_spread(values, [(ga, metric), (gb, c.get("metric_b", metric))])
            if slack is not None and within_spread(slack, spread):
                what = "paired seed-to-seed spread" if paired else "seed-to-seed spread"
                text += (f" — within the {what} (std {spread:.3g}) of the claim's boundary, "
                         "so inconclusive")
                ok = None
            elif paired and spread > 0:
                text += f" (paired seed-to-seed std {spread:.3g})"
        if censored is not None:
            bound, settles = censored
            if not settles:
                text += f" — {bound}, which does not settle the claim, so inconclusive"
            elif ok is not None:
                text += f" — {bound}, which already settles the claim"
            else:           # the seed-to-seed spread has already left it undecided
                text += f" — {bound}"
        if not all(map(finite, (va if isinstance(va, list) else [va])
                       + (vb if isinstance(vb, list) else [vb]))):
            ok = None      # no evidence either way, not a disagreement
            sides = [(x if isinstance(x, list) else [x], m)
                     for x, m in zip(c[kind], (metric, c.get("metric_b", metric)))]
            # a metric no run records is named, not read as a value a seed failed to reach
            unrecorded = [(m, values.get(g, {}).get(m + "__unrecorded"))
                          for gs, m in sides for g in gs]
            # the comparison's words ("(nan) is not lower than ...") would state a relation
            # that no value supports: say which values are missing instead
            text = (f"{mname}: {unrecorded_note(*unrecorded[0])}: the claim cannot be checked"
                    if all(recorded is not None for _, recorded in unrecorded)
                    else _missing_values_text(mname, ev, nm))
        groups = [g for x in c[kind] for g in (x if isinstance(x, list) else [x])]
        unmet = unmet_preconditions(c, groups, values, f"options.claims[{i}]")
        if unmet:
            text += (f" — but the claim is untestable here: {'; '.join(unmet)}"
                     f"{' (' + c['requires_why'] + ')' if c.get('requires_why') else ''}, "
                     "so inconclusive")
            ok = None
        # last, so that a claim over many pairs can state it once for all of them
        text += _partial_note(values, [(g, metric) for g in groups[:-1]]
                              + [(groups[-1], c.get("metric_b", metric) if kind != "above"
                                  else metric)], names)
        out.append(Conclusion(text, agrees_with_paper=None if ok is None else bool(ok),
                              claim=c.get("claim"),
                              evidence=ev))
    return out


def _missing_values_text(mname: str, evidence: dict[str, Any], name_of) -> str:
    """A claim's text where some compared value is missing or not finite: which ones, and
    the others' values (``evidence``: ``{group: value}``, or ``{"a": {...}, "b": {...}}`` for
    ``above``)."""
    nested = all(isinstance(side, dict) for side in evidence.values())
    pairs = [kv for side in evidence.values() for kv in side.items()] if nested \
        else list(evidence.items())
    bad = [name_of(g) for g, v in pairs if not finite(v)]
    known = ", ".join(f"{name_of(g)}: {_fmt(v)}" for g, v in pairs if finite(v))
    listed = bad[0] if len(bad) == 1 else f"{', '.join(bad[:-1])} and {bad[-1]}"
    return (f"{mname}: missing or non-finite value{'s' if len(bad) > 1 else ''} for {listed}"
            f"{f' ({known})' if known else ''}, so the claim cannot be checked")


_PARTIAL = " — partial data: "


def _partial_note(values: dict[str, dict[str, Any]], keys: list[tuple[str, str]],
                  names: dict[str, str]) -> str:
    """Words for the seeds a mean leaves out (``metric + "__missing"``) and for the diverged
    runs it keeps (``metric + "__diverged"``) among the (group, metric) ``keys``: a verdict on
    such a mean says it rests on part of the runs, or on runs cut short (a group with no seed
    left has no mean, which the claim's text already says)."""
    left, cut = [], []
    for g, m in dict.fromkeys(keys):
        v = values.get(g, {})
        k, n, d = v.get(m + "__missing", 0), int(v.get(m + "__n", 0)), v.get(m + "__diverged", 0)
        if k and n:
            left.append(f"{k} of {k + n} seeds of {names.get(g, g)}")
        if d:
            cut.append(f"{d} of {k + n} seeds of {names.get(g, g)}")
    words = ([f"{', '.join(left)} without a finite value, left out of the means"] if left
             else []) + ([f"{', '.join(cut)} diverged, their values from before it in the "
                          "means"] if cut else [])
    return _PARTIAL + "; ".join(words) if words else ""


def _all_equivalent(c: dict[str, Any], values: dict[str, dict[str, float]],
                    names: dict[str, str]) -> Conclusion:
    """An ``equivalent`` claim over three or more groups: every pair, in the listed order."""
    from itertools import combinations

    groups = list(c["equivalent"])
    pairs = list(combinations(groups, 2))
    each = check_claims([{**c, "equivalent": list(p)} for p in pairs], values, names)
    verdicts = [r.agrees_with_paper for r in each]
    for r in each:      # the seeds left out are stated once, for all the groups
        r.text = r.text.split(_PARTIAL)[0]
    ok = False if False in verdicts else (True if all(verdicts) else None)
    mname, m = c.get("metric_name", c["metric"]), c["metric"]
    listed = ", ".join(names.get(g, g) for g in groups)
    unmet = unmet_preconditions(c, groups, values, "options.claims", every=True)
    if ok is None and unmet and all("the claim is untestable here" in r.text for r in each):
        # every pair is undecided for the same reason (the nets did not train): said once,
        # not ten pair texts that each repeat it
        why = f" ({c['requires_why']})" if c.get("requires_why") else ""
        text = (f"{mname}, the {len(pairs)} pairs of {{{listed}}}: untestable here: "
                f"{'; '.join(unmet)}{why}, so inconclusive")
    elif ok:
        gap = [abs(values[a][m] - values[b][m]) for a, b in pairs]
        text = (f"{mname}, all {len(pairs)} pairs of {{{listed}}} equivalent; the farthest: "
                + each[gap.index(max(gap))].text)
    else:
        shown = [r.text for r, v in zip(each, verdicts) if v is (False if ok is False else None)]
        what = "not equivalent" if ok is False else "undecided"
        more = f"; and {len(shown) - 2} more" if len(shown) > 3 else ""
        text = (f"{mname}, {len(shown)} of the {len(pairs)} pairs of {{{listed}}} {what}: "
                + "; ".join(shown[:2] if more else shown) + more)
    text += _partial_note(values, [(g, m) for g in groups], names)
    ev = {f"{a} vs {b}": r.evidence for (a, b), r in zip(pairs, each)}
    return Conclusion(text, agrees_with_paper=ok, claim=c.get("claim"), evidence=ev)


def curve_label(metric: str, options: dict[str, Any]) -> str:
    """The y-axis label of ``metric``'s curve: ``options.curve_labels``, else
    :func:`~sgdlab.report.figures.axes.metric_label` (the CLI's figures name it alike)."""
    from sgdlab.report.figures.axes import metric_label

    return (options.get("curve_labels") or {}).get(metric) or metric_label(metric)


def curve_name(metric: str) -> str:
    """The figure name of ``metric``'s curve (a series' ``/`` would make a sub-folder)."""
    return "curve_" + metric.replace("/", "_")


def x_axis(run: StoredRun, steps: list[float], kind: str) -> list[float]:
    """Map step numbers to ``kind`` (effective epochs / epochs) using the run's own series.
    The series is logged at epoch ends; a run that stops inside an epoch (``max_steps``) has
    its final ``effective_epochs`` only in its summary, at its last ``steps``, which extends
    the series (else its steps past the last epoch end, or all of them, would have no time)."""
    if kind == "step":
        return steps
    ref = list(run.metrics.get(kind, []))
    end_s, end_v = run.summary.get("steps"), run.summary.get(kind)
    if kind == "effective_epochs" and finite(end_s) and finite(end_v) \
            and end_s > (ref[-1][0] if ref else 0):
        ref.append((end_s, end_v))
    if not ref:
        return steps
    s, v = zip(*([(0, 0.0)] + ref))
    return np.interp(steps, s, v).tolist()


def group_x_axis(runs: list[StoredRun], steps: list[float], kind: str) -> list[float]:
    """:func:`x_axis` of a group's mean curve: the seeds share the map from steps to epochs,
    but a seed that stopped early (diverged) holds it only up to its stop, past which its
    ``x_axis`` would pile every later step onto its last epoch; so it is read from the seed
    that took the most steps (the first of them)."""
    return x_axis(max(runs, key=_steps_done), steps, kind) if runs else list(steps)


def schedule_lr(runs: list[StoredRun]) -> tuple[list[float], list[float]] | None:
    """The learning rate of every optimizer step 0..T of ``train`` runs sharing one schedule
    (the seeds of a group), evaluated from the first run's ``schedule`` parameters
    (:func:`sgdlab.optim.protocols.lr_trace`) instead of the loop's per-epoch ``lr`` samples,
    through which a step schedule draws as ramps and a cyclic one aliased. Steps per epoch
    come from the ``epoch`` series (the step of the first epoch end), T from the last ``lr``
    sample. None when there is no schedule or no ``lr`` series, or when the evaluated schedule
    misses any run's recorded sample (a random schedule, a batch-size schedule, an optimizer
    that rewrites its learning rate): the caller then draws the samples."""
    if not runs:
        return None
    p = runs[0].params if isinstance(runs[0].params, dict) else {}
    sched, lr0 = p.get("schedule"), (p.get("optimizer") or {}).get("lr")
    epochs = runs[0].metrics.get("epoch") or []
    samples = [r.metrics.get("lr") or [] for r in runs]
    if not isinstance(sched, dict) or "name" not in sched or not all(samples) or not epochs \
            or not finite(lr0) or epochs[0][1] != 1 or epochs[0][0] < 1:
        return None
    spe = int(epochs[0][0])
    total = int(max(s for pts in samples for s, _ in pts))
    planned = int(p["max_steps"]) if p.get("max_steps") is not None else \
        spe * int(p.get("epochs") or 0)
    from sgdlab.optim.protocols import lr_trace

    try:
        # total_steps as the train procedure builds the schedule; the lr logged at step s is
        # the one step s uses, so the trace runs to T inclusive
        trace = lr_trace(sched["name"], total + 1, lr=float(lr0), steps_per_epoch=spe,
                         total_steps=max(planned, 1),
                         **{k: v for k, v in sched.items() if k != "name"})
    except (ValueError, TypeError):
        return None
    if not all(math.isclose(trace[int(s)], v, rel_tol=1e-6, abs_tol=1e-12)
               for pts in samples for s, v in pts):
        return None
    return [float(t) for t in range(total + 1)], [float(v) for v in trace]


def _steps_done(r: StoredRun) -> float:
    """Optimizer steps a run took: its summary's ``steps``, else the last step it recorded."""
    s = r.summary.get("steps")
    if finite(s):
        return float(s)
    return float(max((st for pts in r.metrics.values() for st, _ in pts), default=0))


def continuation_offsets(groups: "OrderedDict[str, list[StoredRun]]") -> dict[str, float]:
    """{group: steps already taken when its runs start}: a run with ``init_from: G`` (G a
    group here) starts where G's runs ended, so its own step s is step offset + s of the whole
    training (chains add up: G may continue another group). 0 for runs that start afresh."""
    def offset(g: str, seen: tuple[str, ...] = ()) -> float:
        src = next((r.params.get("init_from") for r in groups[g]
                    if isinstance(r.params, dict)), None)
        if not src or src not in groups or src in seen + (g,):
            return 0.0
        return offset(src, seen + (g,)) + max(_steps_done(r) for r in groups[src])
    return {g: offset(g) for g in groups}


def continuation_curves(spec, groups: "OrderedDict[str, list[StoredRun]]",
                        metrics: Sequence[str], *, xlabel: str, marks: Sequence[float],
                        logy: Sequence[str] = ()) -> list[tuple[str, Any]]:
    """:func:`group_curves` on the step axis of the whole training, a continued group shifted
    by its :func:`continuation_offsets`; the steps ``marks`` drawn as dashed lines (where the
    continuations start)."""
    offsets = continuation_offsets(groups)
    return group_curves(groups, metrics, lambda g, rs, st: [s + offsets[g] for s in st],
                        xlabel=xlabel,
                        title=lambda m: f"{cited(spec.paper)}"
                                        f"{curve_label(m, spec.options)}",
                        ylabel=lambda m: curve_label(m, spec.options), logy=logy,
                        marks=sorted(marks))


def group_curves(groups: "OrderedDict[str, list[StoredRun]]", metrics: Sequence[str],
                 x: Callable[[str, list[StoredRun], list[float]], list[float]], *,
                 xlabel: str, title: Callable[[str], str],
                 ylabel: Callable[[str], str] | None = None, logy: Sequence[str] = (),
                 marks: Sequence[float] = (), bands: bool = True) -> list[tuple[str, Any]]:
    """One figure per metric, named by :func:`curve_name`: each group's mean curve over its
    seeds (:func:`mean_curve`; its label says when it holds fewer than all of them), ± the
    std over seeds where ``bands`` and the group has several, against ``x(group, runs,
    steps)``; ``ylabel(metric)`` (default: :func:`curve_label`), ``title(metric)``
    followed by which seeds the curves hold (:func:`seeds_note`); a log y axis for the metrics
    in ``logy``, dashed lines at ``marks``. A group keeps its :func:`group_colours` colour in
    every figure; the learning rate ``lr`` is drawn at every step where the schedule gives it
    (:func:`schedule_lr`), as steps, not through its per-epoch samples."""
    from sgdlab.report.figures.charts import curves

    figs = []
    note = seeds_note(groups, spread=bands)
    colour = group_colours(groups)
    for m in metrics:
        series, styles = {}, {}
        for g, rs in groups.items():
            exact = schedule_lr(rs) if m == "lr" else None
            st, mean, sd, n = exact + (None, None) if exact else mean_curve(rs, m, counts=True)
            if st:
                label = seeds_label(g, n, len(rs))
                series[label] = (x(g, rs, st), mean,
                                 sd if bands and len(rs) > 1 and sd is not None else None)
                styles[label] = {"color": colour[g]}
        fig = curves(series, xlabel=xlabel,
                     ylabel=ylabel(m) if ylabel else curve_label(m, {}), styles=styles,
                     logy=m in set(logy), steps=m == "lr",
                     title="\n".join(filter(None, [title(m), note])), marks=marks)
        figs.append((curve_name(m), fig))
    return figs
