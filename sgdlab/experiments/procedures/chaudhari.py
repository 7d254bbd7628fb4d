"""Procedures and analyses for Chaudhari's thesis ("A picture of the energy landscape of deep
neural networks", 2018): replica methods (Ch. 5), Hessian spectra (Figs. 3.1, 3.4), diffusion
spectra and rank (Figs. 6.1-6.2), trajectory spectra (Fig. 6.3)."""
from __future__ import annotations

import numpy as np

from sgdlab.errors import ConfigError
from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.plots import curves, histogram
from sgdlab.experiments.procedures import (Procedure, RunOutput, StoredRun, register_analysis,
                                           register_procedure)
from sgdlab.experiments.procedures.common import by_group, finite, stat
from sgdlab.report.tables import Table, mean_std


@register_procedure("replicas")
class ReplicasProcedure(Procedure):
    """Parle / Elastic-SGD / Entropy-SGD / SGD over n replicas via ``sgdlab.train.replicas``
    (in-process mode). Params: ``dataset``, ``model``, ``loss``, ``dtype``, ``data_seed``
    (as in ``train``), ``parle`` (a ``ParleConfig`` mapping; ``seed`` is the run seed), the
    length as ``epochs`` (effective epochs per replica) or ``grad_evals`` (gradient
    evaluations per replica, i.e. equal wall-clock time with one replica per device),
    ``eval_every`` (rounds), ``eval_subset``."""

    allowed = {"dataset", "data_seed", "model", "loss", "dtype", "parle", "epochs",
               "grad_evals", "eval_every", "eval_subset"}
    required = {"dataset", "model", "parle"}

    def validate(self, params, where):
        super().validate(params, where)
        from sgdlab.experiments.procedures.train import _check_named
        from sgdlab.train.replicas import ParleConfig

        _check_named({k: params[k] for k in ("dataset", "model")}, where)
        if ("epochs" in params) == ("grad_evals" in params):
            raise ConfigError(f"{where}: give exactly one of 'epochs' or 'grad_evals'")
        try:
            ParleConfig.from_dict(dict(params["parle"]))
        except ConfigError as e:
            raise ConfigError(f"{where}: parle: {e}") from None

    def run(self, run, ctx) -> RunOutput:
        from sgdlab.experiments.procedures.train import build
        from sgdlab.train.replicas import ParleConfig, train_replicas

        p = run.params
        ds, model, loss_fn, _ = build(p, run.seed, ctx)
        cfg = ParleConfig.from_dict({**p["parle"], "seed": run.seed})
        length = ({"epochs": float(p["epochs"])} if "epochs" in p
                  else {"grad_evals": int(p["grad_evals"])})
        res = train_replicas(model, loss_fn, ds, cfg, **length, mode="inprocess", eval_every=p.get("eval_every"),
                             eval_subset=p.get("eval_subset"), store=ctx.store,
                             run_id=ctx.run_id, device=ctx.device, complete=False)
        summary = dict(res.final)
        summary.update(rounds=res.rounds, grad_evals=res.grad_evals,
                       effective_epochs=res.effective_epochs, replicas=cfg.replicas)
        return RunOutput(summary=summary, status=res.status, message=res.message)


# --- Hessian eigenspectrum at the end of training --------------------------------------------
@register_analysis("chaudhari_hessian_spectrum")
def hessian_spectrum(spec, runs: list[StoredRun]) -> Analysis:
    """Full Hessian spectrum of the trained network (dense, small models): a large fraction of
    eigenvalues is close to zero, a few are large positive, some small negative."""
    from sgdlab.report.figures.curvature import eigenspectrum_figure

    o = spec.options
    rel = float(o.get("near_zero_rel", 1e-3))
    groups = by_group(runs, key=lambda r: r.group)
    rows, concl, spectra, hist = [], [], {}, {}
    for g, rs in groups.items():
        fr = []
        for r in rs:
            ev = np.asarray(r.data.get("hessian_eigenvalues", []), float)
            if ev.size:
                fr.append(float(np.mean(np.abs(ev) <= rel * np.abs(ev).max())))
        near, near_sd = mean_std(fr)
        lmax = stat(rs, "hessian_lambda_max")[0]
        lmin = stat(rs, "hessian_lambda_min")[0]
        neg = stat(rs, "hessian_negative_fraction")[0]
        hm = stat(rs, "hessian_harmonic_mean")[0]
        d = int(rs[0].summary.get("hessian_dim", 0))
        rows.append([g, d, lmax, lmin, near, neg, hm, rs[0].summary.get("test_acc")])
        ev0 = rs[0].data.get("hessian_eigenvalues", [])
        spectra[g] = ev0
        hist[g] = ev0
        thr = float(o.get("near_zero_fraction_above", 0.5))
        concl.append(Conclusion(
            f"{g}: {near:.1%} of the {d} Hessian eigenvalues have |λ| ≤ {rel:g}·λ_max; "
            f"λ_max = {lmax:.3g}, λ_min = {lmin:.3g}, {neg:.1%} negative",
            agrees_with_paper=finite(near) and near > thr,
            claim=f"most eigenvalues are close to zero (more than {thr:.0%}), with a few large "
                  "positive and some small negative ones",
            evidence={"near_zero_fraction": near, "lambda_max": lmax, "lambda_min": lmin}))
        if finite(lmin) and finite(lmax) and lmin < 0:
            concl.append(Conclusion(
                f"{g}: the most negative eigenvalue is {abs(lmin) / lmax:.2%} of λ_max in size",
                agrees_with_paper=abs(lmin) < 0.1 * lmax,
                claim="negative eigenvalues are small in magnitude compared with λ_max"))
    table = Table("hessian_spectrum", ["run", "d", "λ_max", "λ_min",
                                       f"fraction |λ| ≤ {rel:g} λ_max", "fraction negative",
                                       "harmonic mean (λ > threshold)", "test accuracy"], rows)
    f1 = eigenspectrum_figure(spectra, title="Hessian eigenvalues at the end of training")
    f2 = histogram(hist, xlabel="eigenvalue λ", title="Hessian eigenspectrum (log counts)")
    return Analysis(tables=[table], figures=[("eigenspectrum", f1), ("eigen_histogram", f2)],
                    conclusions=concl)


# --- diffusion matrix spectrum and rank ------------------------------------------------------
def _k_for(ev: np.ndarray, frac: float) -> int:
    ev = np.sort(np.clip(ev, 0, None))[::-1]
    tot = ev.sum()
    if tot <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(ev) / tot, frac) + 1)


@register_analysis("chaudhari_diffusion_spectrum")
def diffusion_spectrum(spec, runs: list[StoredRun]) -> Analysis:
    """Eigenvalues of D(x) = Σ (N-sample Gram trick), numerical rank and rank fraction, and how
    many eigen-directions carry 90% of Tr D, against the largest rank possible min(N−1, d)."""
    o = spec.options
    frac = float(o.get("energy", 0.9))
    groups = by_group(runs, key=lambda r: r.group)
    rows, concl, spectra = [], [], {}
    for g, rs in groups.items():
        r0 = rs[0]
        ev = np.asarray(r0.data.get("diffusion_eigenvalues", []), float)
        d = int(r0.summary.get("diffusion_dim", 0))
        n = int(r0.params.get("final", [{}])[0].get("samples") or 0) or None
        rank = stat(rs, "diffusion_rank")[0]
        rf = stat(rs, "diffusion_rank_fraction")[0]
        k90 = float(np.mean([_k_for(np.asarray(r.data.get("diffusion_eigenvalues", [])), frac)
                             for r in rs]))
        max_rank = min((n - 1) if n else d, d)
        rows.append([g, d, n, rank, rf, k90, k90 / max_rank if max_rank else None,
                     stat(rs, "diffusion_trace")[0]])
        spectra[g] = (list(range(1, len(ev) + 1)), sorted(ev.tolist(), reverse=True), None)
        thr = float(o.get("k_fraction_below", 0.1))
        concl.append(Conclusion(
            f"{g}: {k90:.0f} of at most {max_rank} eigen-directions carry {frac:.0%} of Tr D "
            f"({k90 / max_rank:.1%}); numerical rank {rank:.0f} = {rf:.2%} of d = {d}",
            agrees_with_paper=k90 / max_rank < thr if max_rank else None,
            claim="the diffusion matrix D(x) is highly low-rank: a few directions carry "
                  "almost all of the noise",
            evidence={"k_energy": k90, "max_rank": max_rank, "rank_fraction": rf}))
    table = Table("diffusion_spectrum", ["run", "d", "samples N", "numerical rank",
                                         "rank fraction (rank/d)", f"k for {frac:.0%} of Tr D",
                                         "k / min(N−1, d)", "Tr D"], rows)
    fig = curves({g: s for g, s in spectra.items() if s[0]}, xlabel="index i",
                 ylabel="λ_i(D)", logx=True, logy=True,
                 title="Diffusion-matrix eigenvalues (Chaudhari Figs. 6.1-6.2)")
    return Analysis(tables=[table], figures=[("diffusion_spectrum", fig)], conclusions=concl)


# --- trajectory spectra ----------------------------------------------------------------------
@register_analysis("chaudhari_trajectory")
def trajectory(spec, runs: list[StoredRun]) -> Analysis:
    """|FFT| and autocorrelation of the weight increments (computed by the run from its
    recorded trajectory): the thesis finds SGD's trajectory is not Brownian motion — the
    increments are correlated / show low-frequency structure."""
    from types import SimpleNamespace

    from sgdlab.report.figures.trajectory import trajectory_figure

    groups = by_group(runs, key=lambda r: r.group)
    rows, figs, concl = [], [], []
    for g, rs in groups.items():
        r0 = rs[0]
        d = r0.data
        if not d.get("spectrum_freqs"):
            continue
        spec_ns = SimpleNamespace(freqs=d["spectrum_freqs"], mean=d["spectrum_mean"],
                                  std=d["spectrum_std"], num_coords=d["num_coords"],
                                  n=d["n_increments"])
        ac = SimpleNamespace(lags=d["acf_lags"], mean=d["acf_mean"], std=d["acf_std"],
                             band=d["acf_band"], n=d["n_increments"])
        figs.append((f"trajectory_{g}", trajectory_figure(spec_ns, ac, title=g)))
        fo = mean_std([r.summary.get("acf_fraction_outside", float("nan")) for r in rs])[0]
        pv = mean_std([r.summary.get("periodicity_p_value", float("nan")) for r in rs])[0]
        per = [bool(r.summary.get("periodic")) for r in rs]
        rows.append([g, d["n_increments"], d["num_coords"], fo, pv, sum(per), len(rs)])
        concl.append(Conclusion(
            f"{g}: {fo:.1%} of the increment autocorrelations (lags ≥ 1) lie outside the 99% "
            f"white-noise band (1% expected for Brownian motion); periodicity test p = {pv:.3g}",
            agrees_with_paper=finite(fo) and fo > 0.05,
            claim="SGD's weight trajectory is not a Brownian motion: its increments are "
                  "correlated in time"))
    table = Table("trajectory", ["run", "increments", "coordinates",
                                 "fraction of ACF outside 99% band", "periodicity p-value",
                                 "periodic (seeds)", "seeds"], rows)
    return Analysis(tables=[table], figures=figs, conclusions=concl)
