"""Independently trained copies of a network (Chaudhari's thesis, §5.0.1 and Fig. 5.1): the
ensemble of their softmax predictions, the network of their averaged weights ("one shot
averaging"), the same after aligning each copy to the first by a permutation of its hidden
units, and the overlap of their (aligned) weights (:mod:`sgdlab.measure.permutation`).

Procedure ``train_or_compare_copies``: a run with ``copy: k`` trains copy k with the
``train`` procedure at seed 1000·seed + k (its own initialisation and batch order); a run with
``copies: [labels]`` (all listed in its ``depends``) loads their final weights and measures.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sgdlab.errors import SEED_LIMIT, ConfigError, int_at_least, refused_value
from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.spec import cited
from sgdlab.experiments.procedures import (ClaimNames, Procedure, RunOutput, StoredRun,
                                           get_procedure, register_analysis,
                                           register_procedure)
from sgdlab.experiments.procedures.common import (CLAIM_OPTIONS, add_references, by_group,
                                                  by_run_group, check_claims, claim_metrics,
                                                  values_by_group)
from sgdlab.report.tables import Table

# copy k of seed s trains with seed COPY_SEED_STRIDE·s + k
COPY_SEED_STRIDE = 1000

METRICS = [("individual_err", "test error of a copy (mean over copies)"),
           ("best_copy_err", "test error of the best copy"),
           ("ensemble_err", "test error of the softmax ensemble"),
           ("oneshot_err", "test error of the averaged weights (one shot)"),
           ("aligned_err", "test error of the averaged aligned weights"),
           ("overlap_aligned", "overlap of aligned copies (mean off the diagonal)"),
           ("overlap_raw", "overlap before alignment (mean off the diagonal)"),
           ("ensemble_rel_gain", "ensemble's relative error reduction")]


@register_procedure("compare_copies")
class CompareCopies(Procedure):
    """Params: ``dataset``, ``model``, ``loss``, ``dtype``, ``data_seed`` as in ``train``;
    ``copies``: the labels of the trained copies (at least two, the first the reference of
    the alignment); ``similarity``: the greedy matching's unit similarity (``cosine`` |
    ``inner``); ``overlap``: Fig. 5.1's overlap over all parameters (``whole``) or averaged
    per layer (``layer-mean``); ``bn_stats``: an averaged network's batch-norm running
    statistics averaged with the weights (``average``) or recomputed on the training set
    (``recompute``); ``eval_batch_size``: evaluate in batches of this size."""

    allowed = {"dataset", "data_seed", "model", "loss", "dtype", "copies", "similarity",
               "overlap", "bn_stats", "eval_batch_size"}
    required = {"dataset", "model", "copies"}
    numbers = {"eval_batch_size": "int>0|null"}

    def validate(self, params, where):
        from sgdlab.measure.permutation import OVERLAP_READINGS, SIMILARITIES

        super().validate(params, where)
        c = params["copies"]
        if not (isinstance(c, list) and len(c) >= 2 and len(set(c)) == len(c)):
            raise ConfigError(f"{where}: copies must list at least two distinct run labels, "
                              f"got {c!r}")
        for key, ok in (("similarity", SIMILARITIES), ("overlap", OVERLAP_READINGS),
                        ("bn_stats", ("average", "recompute"))):
            if key in params and params[key] not in ok:
                raise ConfigError(f"{where}: {key} must be one of {', '.join(ok)}, got "
                                  f"{params[key]!r}")

    def run(self, run, ctx) -> RunOutput:
        from sgdlab.experiments.procedures.train import build, final_weights
        from sgdlab.measure.batch_norm import recompute_bn_statistics
        from sgdlab.measure.permutation import (align_to, averaged_accuracy,
                                                ensemble_accuracy, overlap_matrix)
        from sgdlab.operators.params import copy_module

        p = run.params
        ds, model, _, _ = build(p, run.seed, ctx)
        models = []
        for lab in p["copies"]:
            if lab not in ctx.dependencies:
                raise ValueError(f"copy {lab!r} must be listed in depends")
            m = copy_module(model)
            m.load_state_dict(final_weights(ctx.dependencies[lab]))
            models.append(m.to(ctx.device) if getattr(ctx, "device", None) else m)
        device = next(models[0].parameters()).device
        eb = int(p.get("eval_batch_size") or len(ds.x_test))

        def batches(x, y):
            return [(x[i:i + eb].to(device), y[i:i + eb].to(device))
                    for i in range(0, len(x), eb)]

        test = batches(ds.x_test, ds.y_test)
        train = batches(ds.x_train, ds.y_train)

        def recompute(m):
            recompute_bn_statistics(m, train)

        prepare = recompute if p.get("bn_stats", "average") == "recompute" else None

        similarity = p.get("similarity", "cosine")
        reading = p.get("overlap", "whole")
        probe = test[0][0][:64]
        aligned = [models[0]] + [align_to(models[0], m, similarity=similarity,
                                          check_input=probe, atol=1e-3) for m in models[1:]]
        errs = [1.0 - ensemble_accuracy([m], test) for m in models]
        ens = 1.0 - ensemble_accuracy(models, test)
        oneshot = 1.0 - averaged_accuracy(models, test, prepare)
        al_err = 1.0 - averaged_accuracy(aligned, test, prepare)
        raw = overlap_matrix(models, reading=reading)
        ali = overlap_matrix(aligned, reading=reading)
        n = len(models)

        def off(mat):
            return float(np.mean([mat[i][j] for i in range(n) for j in range(n) if i != j]))

        ind = float(np.mean(errs))
        return RunOutput(summary={
            "individual_err": ind, "individual_err_std": float(np.std(errs, ddof=1)),
            "best_copy_err": float(min(errs)),
            "ensemble_err": ens, "oneshot_err": oneshot, "aligned_err": al_err,
            "overlap_aligned": off(ali), "overlap_raw": off(raw),
            "ensemble_rel_gain": (ind - ens) / ind if ind > 0 else float("nan"),
            "copies": n}, data={"copy_errors": errs, "overlap_aligned": ali,
                                "overlap_raw": raw, "labels": list(p["copies"])})


@register_procedure("train_or_compare_copies")
class TrainOrCompareCopies(Procedure):
    """``train`` for runs with ``copy: k`` (at seed 1000·seed + k), ``compare_copies`` for
    runs with ``copies`` (the shared ``base`` parameters only training uses dropped)."""

    def _pick(self, params: dict[str, Any]):
        if "copies" in params:
            proc = get_procedure("compare_copies")
            return proc, {k: v for k, v in params.items() if k in proc.allowed}, None
        if "copy" not in params:
            raise ConfigError("a run of train_or_compare_copies has either copy: k (train the "
                              "k-th copy) or copies: [labels] (compare them)")
        k = params["copy"]
        if not (int_at_least(k, 0) and k < COPY_SEED_STRIDE):
            raise ConfigError(f"copy must be an integer in [0, {COPY_SEED_STRIDE}), "
                              f"{refused_value(k)}")
        proc = get_procedure("train")
        drop = {"copy"} | (get_procedure("compare_copies").allowed - proc.allowed)
        return proc, {k2: v for k2, v in params.items() if k2 not in drop}, k

    def validate(self, params, where):
        try:
            proc, p, _ = self._pick(params)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        proc.validate(p, where)

    def validate_seed(self, params, seed, where):
        _, _, k = self._pick(params)          # validate() has checked params: no error here
        if k is not None and COPY_SEED_STRIDE * seed + k >= SEED_LIMIT:
            # each copy failed at its seed, past numpy's 32 bits, after the spec was accepted
            raise ConfigError(f"{where}: seed {seed} trains copy {k} at seed "
                              f"{COPY_SEED_STRIDE}·{seed} + {k} = {COPY_SEED_STRIDE * seed + k}, "
                              f"outside 0..2**32 - 1; copy {k} takes seeds up to "
                              f"{(SEED_LIMIT - 1 - k) // COPY_SEED_STRIDE}")

    def planned_steps(self, params):
        proc, p, _ = self._pick(params)
        return proc.planned_steps(p)

    def run(self, run, ctx) -> RunOutput:
        from dataclasses import replace

        proc, p, k = self._pick(run.params)
        seed = run.seed if k is None else COPY_SEED_STRIDE * run.seed + k
        return proc.run(replace(run, params=p, seed=seed), ctx)


def _overlap_figure(mat: list[list[float]], title: str):
    from sgdlab.report.figures.charts import plt, wrapped

    n = len(mat)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    im = ax.imshow(np.array(mat), vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{mat[i][j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if mat[i][j] < 0.6 else "black")
    ax.set_xticks(range(n), [str(i + 1) for i in range(n)])
    ax.set_yticks(range(n), [str(i + 1) for i in range(n)])
    ax.set_xlabel("copy")
    ax.set_ylabel("copy")
    # wrapped: the paper's reference ran past both edges of the 4.2 inches
    ax.set_title(wrapped(title, 4.0, fontsize=9), fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


# what a comparison run's summary holds besides METRICS
COMPARE_EXTRA = ("individual_err_std", "copies")


def _copies_names(spec, runs) -> ClaimNames:
    """The run groups of the comparison runs (``copies``) and references
    :func:`copies_analysis` compares, and what a comparison run's summary holds."""
    return by_run_group(spec, [r for r in runs if "copies" in r.params],
                        [m for m, _ in METRICS] + list(COMPARE_EXTRA))


@register_analysis("chaudhari_copies", claim_names=_copies_names, options=CLAIM_OPTIONS)
def copies_analysis(spec, runs: list[StoredRun]) -> Analysis:
    """The compare runs' errors and overlaps per seed (table ``copies``), Fig. 5.1's matrix of
    the first seed's aligned overlaps (figure ``overlap``), and ``options.claims`` on the
    compare group's means over seeds (``options.references``: constants such as chance)."""
    o = spec.options
    cmp_runs = [r for r in runs if "overlap_aligned" in r.data]
    if not cmp_runs:
        return Analysis(notes=["no comparison run finished"])
    for r in cmp_runs:      # runs stored before the summary had it
        r.summary.setdefault("best_copy_err", float(min(r.data["copy_errors"])))
    rows = [[r.label, r.seed] + [r.summary.get(m) for m, _ in METRICS] for r in cmp_runs]
    table = Table("copies", ["run", "seed"] + [m for m, _ in METRICS], rows, keys=["run", "seed"],
                  caption="test errors (fractions) and weight overlaps of the copies; "
                          + "; ".join(f"{m}: {d}" for m, d in METRICS))
    first = min(cmp_runs, key=lambda r: r.seed)
    fig = _overlap_figure(first.data["overlap_aligned"],
                          f"{cited(spec.paper)}overlap of aligned copies "
                          f"(seed {first.seed})")
    groups = by_group(cmp_runs)
    vals = values_by_group(groups, [m for m, _ in METRICS]
                           + claim_metrics(o.get("claims", [])))
    add_references(vals, o)
    concl = check_claims(o.get("claims", []), vals)
    g = next(iter(groups))
    concl.insert(0, Conclusion(
        f"{len(first.data['copy_errors'])} copies: test error {vals[g]['individual_err']:.4g} "
        f"(mean over copies and seeds), ensemble {vals[g]['ensemble_err']:.4g}, averaged "
        f"weights {vals[g]['oneshot_err']:.4g}, averaged aligned weights "
        f"{vals[g]['aligned_err']:.4g}; overlap {vals[g]['overlap_raw']:.3g} before and "
        f"{vals[g]['overlap_aligned']:.3g} after alignment"))
    return Analysis(tables=[table], figures=[("overlap", fig)], conclusions=concl)
