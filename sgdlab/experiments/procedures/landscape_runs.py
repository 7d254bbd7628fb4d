"""Procedures and analyses for the analytic-landscape experiments (``sgdlab.landscapes``)."""
from __future__ import annotations

from typing import Any

from sgdlab.errors import ConfigError
from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.plots import bars, curves, panels
from sgdlab.experiments.procedures import (Procedure, RunOutput, register_analysis,
                                           register_procedure)
from sgdlab.experiments.procedures.common import by_group, check_claims, stat
from sgdlab.report.tables import Table


# --- Zhu et al. Fig. 3: escape from the sharp minimum of the 2-D two-basin loss -----------
@register_procedure("zhu_escape")
class EscapeProcedure(Procedure):
    """One method of the escape experiment (all repetitions vectorised), via
    ``sgdlab.landscapes.escape.escape_experiment``. Params: ``method`` plus any
    ``EscapeConfig`` field; ``landscape``: ``TwoBasin`` keyword arguments."""

    allowed = {"method", "landscape", "lr", "iterations", "repetitions", "batch_size",
               "const_sigma", "leading_k", "hessian_k", "hessian_scale", "sharpness_sigma",
               "sharpness_samples", "sharpness_every", "trajectories"}
    required = {"method"}

    def validate(self, params, where):
        super().validate(params, where)
        from sgdlab.landscapes.escape import METHODS

        if params["method"] not in METHODS:
            raise ConfigError(f"{where}: unknown escape method {params['method']!r}; "
                              f"choose from {', '.join(METHODS)}")

    def run(self, run, ctx) -> RunOutput:
        from sgdlab.landscapes.escape import EscapeConfig, escape_experiment
        from sgdlab.landscapes.two_basin import TwoBasin

        p = dict(run.params)
        method = p.pop("method")
        land = TwoBasin(**p.pop("landscape", {}))
        keep = int(p.pop("trajectories", 5))
        cfg = EscapeConfig(seed=run.seed, record_trajectory=keep > 0, **p)
        res = escape_experiment(land, cfg, methods=[method])
        sharp = res.sharpness.get(method, [])
        ctx.store.log_many(ctx.run_id, [("expected_sharpness", t, v)
                                        for t, v in zip(res.sharpness_steps, sharp)])
        data: dict[str, Any] = {"sharpness_steps": res.sharpness_steps, "sharpness": sharp}
        if keep > 0:
            traj = res.trajectory[method][:, :keep]          # (T+1, keep, 2)
            stride = max(1, traj.shape[0] // 200)
            data["trajectories"] = traj[::stride].transpose(0, 1).tolist()
            data["sharp_minimum"] = land.sharp_minimum.tolist()
            data["flat_minimum"] = land.flat_minimum.tolist()
        return RunOutput(summary={"success_rate": res.success_rate[method],
                                  "final_sharpness": sharp[-1] if sharp else None},
                         data=data)


@register_analysis("zhu_escape")
def zhu_escape_analysis(spec, runs) -> Analysis:
    from sgdlab.landscapes.escape import LABELS

    groups = by_group(runs, key=lambda r: r.params["method"])
    names = {m: LABELS.get(m, m) for m in groups}
    rows, vals = [], {}
    for m, rs in groups.items():
        sr, sr_s, n = stat(rs, "success_rate")
        sh, sh_s, _ = stat(rs, "final_sharpness")
        rows.append([names[m], n, sr, sr_s, sh, sh_s])
        vals[m] = {"success_rate": sr, "final_sharpness": sh}
    reps = runs[0].params.get("repetitions", 100)
    table = Table("escape_success", ["method", "seeds", "success rate", "success std",
                                     "final expected sharpness", "sharpness std"], rows,
                  caption=f"Escape from the sharp minimum ({reps} repetitions per seed)")
    f1 = bars([names[m] for m in groups], [vals[m]["success_rate"] for m in groups],
              [stat(groups[m], "success_rate")[1] for m in groups],
              ylabel="success rate", title="Zhu et al. Fig. 3: escape success")
    series = {}
    for m, rs in groups.items():
        r0 = rs[0]
        if r0.data.get("sharpness"):
            import numpy as np

            arr = np.array([r.data["sharpness"] for r in rs], float)
            series[names[m]] = (r0.data["sharpness_steps"], arr.mean(0).tolist(), None)
    f2 = curves(series, xlabel="iteration", ylabel="expected sharpness",
                title="Expected sharpness (σ, M as configured)")
    figs = [("escape_success", f1), ("escape_sharpness", f2)]
    if runs[0].data.get("trajectories"):
        fig, axes = panels(len(groups))
        for ax, (m, rs) in zip(axes, groups.items()):
            d = rs[0].data
            for tr in d.get("trajectories", []):
                xs, ys = zip(*tr)
                ax.plot(xs, ys, lw=0.7)
            ax.plot(*d["sharp_minimum"], "k^", label="sharp min")
            ax.plot(*d["flat_minimum"], "ks", label="flat min")
            ax.set_title(names[m], fontsize=9)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        figs.append(("escape_trajectories", fig))
    return Analysis(tables=[table], figures=figs,
                    conclusions=check_claims(spec.options.get("claims", []), vals, names))


# --- thesis Example 6.43: non-equilibrium double well ----------------------------------------
@register_procedure("double_well")
class DoubleWellProcedure(Procedure):
    """Simulate dX = (−∇Φ + j) dt + √2 dB for one λ with ``sgdlab.landscapes.sde.simulate``
    (many chains), after a burn-in: histogram of X vs e^{−Φ} (total variation on a coarse
    grid), mean angular velocity vs its closed form, zeros of the drift."""

    allowed = {"lam", "chains", "dt", "burn_time", "time", "record_dt"}
    required = {"lam"}

    def run(self, run, ctx) -> RunOutput:
        import numpy as np
        import torch

        from sgdlab.landscapes.double_well import DoubleWell, angular_velocity
        from sgdlab.landscapes.sde import simulate

        p = run.params
        lam, chains = float(p["lam"]), int(p.get("chains", 20000))
        dt = float(p.get("dt", 0.01 if lam < 1 else 0.002))
        dw = DoubleWell(lam)
        gen = torch.Generator().manual_seed(run.seed)
        x0 = torch.zeros(chains, 2, dtype=torch.float64)
        x0[:, 0] = torch.where(torch.arange(chains) % 2 == 0, 1.0, -1.0)
        burn = simulate(dw.sde(), x0, dt=dt, steps=int(float(p.get("burn_time", 5)) / dt),
                        generator=gen).final
        every = max(1, int(float(p.get("record_dt", 0.05)) / dt))
        path = simulate(dw.sde(), burn, dt=dt, steps=int(float(p.get("time", 5)) / dt),
                        generator=gen, record_every=every)
        x = path.final.numpy()
        e1, e2 = np.linspace(-2.2, 2.2, 45), np.linspace(-2.5, 2.5, 51)
        counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[e1, e2])
        c1, c2 = np.linspace(-2.2, 2.2, 12), np.linspace(-2.4, 2.4, 9)
        coarse, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[c1, c2])
        probs = dw.stationary_bin_probabilities(c1, c2)
        tv = 0.5 * float(np.abs(coarse / chains - probs).sum()
                         + abs((1 - probs.sum()) - (1 - coarse.sum() / chains)))
        w = angular_velocity(path.states, every * dt)
        zeros = dw.drift_zeros()
        return RunOutput(
            summary={"total_variation": tv, "angular_velocity": float(w.mean()),
                     "angular_velocity_exact": dw.mean_angular_velocity(),
                     "angular_velocity_se": float(w.std() / max(1, w.numel()) ** 0.5),
                     "drift_zeros": [None if z is None else list(map(float, z)) for z in zeros]},
            data={"edges1": e1, "edges2": e2, "histogram": counts / chains,
                  "stationary": dw.stationary_bin_probabilities(e1, e2)})


@register_analysis("double_well")
def double_well_analysis(spec, runs) -> Analysis:
    from sgdlab.report.figures.landscapes import double_well_figure

    o = spec.options
    groups = by_group(runs, key=lambda r: f"λ={r.params['lam']:g}")
    rows, hists, rest, ang, concl = [], {}, {}, {}, []
    stationary = None
    tv_max = float(o.get("tv_below", 0.05))
    for g, rs in groups.items():
        r0 = rs[0]
        tv = stat(rs, "total_variation")[0]
        w, w_exact = stat(rs, "angular_velocity")[0], r0.summary["angular_velocity_exact"]
        zeros = r0.summary.get("drift_zeros", [])
        rows.append([g, tv, w, w_exact, str(zeros)])
        hists[g] = r0.data["histogram"]
        stationary = r0.data["stationary"]
        rest[g] = zeros
        ang[g] = (w, w_exact)
        concl.append(Conclusion(
            f"{g}: total variation between the histogram of X and e^(−Φ) = {tv:.3f}",
            agrees_with_paper=tv < tv_max,
            claim=f"the steady state stays e^(−Φ) for every λ (TV < {tv_max})"))
    import numpy as np

    lams = sorted(float(r.params["lam"]) for r in runs)
    big = [r for r in runs if float(r.params["lam"]) == lams[-1]]
    if big and lams[-1] > 0:
        w = stat(big, "angular_velocity")[0]
        concl.append(Conclusion(
            f"λ={lams[-1]:g}: mean angular velocity {w:.3f} (closed form "
            f"{big[0].summary['angular_velocity_exact']:.3f}); λ=0: "
            f"{stat([r for r in runs if float(r.params['lam']) == 0.0], 'angular_velocity')[0]:.3f}",
            agrees_with_paper=w > 0.5 * big[0].summary["angular_velocity_exact"],
            claim="for large λ trajectories circulate around the saddle at the origin"))
    first = runs[0].data
    fig = double_well_figure(np.asarray(first["edges1"]), np.asarray(first["edges2"]),
                             {k: np.asarray(v) for k, v in hists.items()},
                             np.asarray(stationary), rest, ang)
    table = Table("double_well", ["λ", "TV(histogram, e^-Φ)", "mean angular velocity",
                                  "closed form", "zeros of the drift"], rows)
    return Analysis(tables=[table], figures=[("double_well", fig)], conclusions=concl)


# --- thesis Fig. 2.2: spherical p-spin glass -------------------------------------------------
@register_procedure("pspin")
class PSpinProcedure(Procedure):
    """Projected GD on the sphere from many random starts in one regime
    (``PSpinGlass.descend``); minima clustered by overlap, embedded with t-SNE."""

    allowed = {"regime", "n", "starts", "lr", "tol", "max_steps", "overlap_threshold"}
    required = {"regime"}

    def run(self, run, ctx) -> RunOutput:
        import torch

        from sgdlab.landscapes.pspin import PSpinGlass, cluster_minima, embed_tsne

        p = run.params
        ps = PSpinGlass(int(p.get("n", 100)), regime=p["regime"], seed=run.seed)
        gen = torch.Generator().manual_seed(run.seed)
        res = ps.descend(ps.random_starts(int(p.get("starts", 96)), generator=gen),
                         lr=float(p.get("lr", 0.1)), tol=float(p.get("tol", 1e-4)),
                         max_steps=int(p.get("max_steps", 5000)))
        labels, reps = cluster_minima(res.sigma, threshold=float(p.get("overlap_threshold",
                                                                       0.999)))
        e = res.energy_per_spin
        return RunOutput(
            summary={"nu": ps.nu, "distinct_minima": len(reps),
                     "converged": int(res.converged.sum()), "starts": int(e.numel()),
                     "energy_min": float(e.min()), "energy_max": float(e.max()),
                     "energy_spread": float(e.max() - e.min())},
            data={"embedding": embed_tsne(res.sigma, seed=run.seed), "energies": e,
                  "minima_energies": sorted(float(e[r]) for r in reps)})


@register_analysis("pspin")
def pspin_analysis(spec, runs) -> Analysis:
    from sgdlab.report.figures.landscapes import pspin_figure

    groups = by_group(runs, key=lambda r: r.params["regime"])
    rows, emb, en, cnt = [], {}, {}, {}
    for g, rs in groups.items():
        r0 = rs[0]
        rows.append([g, r0.summary["nu"], stat(rs, "distinct_minima")[0],
                     r0.summary["starts"], stat(rs, "converged")[0],
                     stat(rs, "energy_min")[0], stat(rs, "energy_spread")[0]])
        name = f"{g} (ν={r0.summary['nu']:.3g})"
        emb[name], en[name] = r0.data["embedding"], r0.data["energies"]
        cnt[name] = r0.summary["distinct_minima"]
    table = Table("pspin", ["regime", "ν", "distinct minima", "starts", "converged",
                            "lowest H/N", "spread of H/N"], rows)
    vals = {g: {"distinct_minima": stat(rs, "distinct_minima")[0]} for g, rs in groups.items()}
    concl = check_claims(spec.options.get("claims", []), vals)
    return Analysis(tables=[table], figures=[("pspin_tsne", pspin_figure(emb, en, cnt))],
                    conclusions=concl)


# --- thesis Fig. 4.1 / §4.5: PDE smoothing of a 1-D loss ------------------------------------
_VISCOUS, _HOPF, _HEAT = ("viscous HJ (local entropy)", "non-viscous HJ (Hopf-Lax)",
                          "heat equation")


@register_procedure("pde_smoothing")
class PDEProcedure(Procedure):
    """Viscous HJ (Cole–Hopf: local entropy), non-viscous HJ (Hopf–Lax, solved to machine
    precision by Newton) and heat smoothing of a 1-D f with a wide and a narrow minimum
    (``sgdlab.landscapes.pde``) at time ``t`` (β = ``beta``), and at the short time
    t_w = t*/2 inside Example 4.15's range (t* = 1/max(−f'')): the semi-concavity bound of
    Lemma 4.17, the minimum and the convexity interval around it (Example 4.15, Fig. 4.1),
    the top curvature against heat smoothing (Example 4.13) and local entropy's minimum."""

    allowed = {"t", "beta", "points"}

    def run(self, run, ctx) -> RunOutput:
        import torch

        from sgdlab.landscapes import pde

        p = run.params
        x = torch.linspace(-4, 4, int(p.get("points", 801)), dtype=torch.float64)
        dx = float(x[1] - x[0])
        fn = pde.wide_and_narrow_minima
        f = fn(x)
        t, beta = float(p.get("t", 0.5)), float(p.get("beta", 5.0))
        y = torch.linspace(-6, 6, 12001, dtype=torch.float64)
        # f'' exactly (autograd) on a fine grid: C of Lemma 4.17 and t* of (4.36)
        z = torch.linspace(-4, 4, 8001, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(fn(z).sum(), z, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), z)
        c, neg = float(h.max()), float((-h).max())
        t_w = 0.5 / neg
        margin = max(1, len(x) // 20)
        i_f = int(f.argmin())
        summary = {"C": c, "t": t, "beta": beta, "t_star": 1 / neg, "t_w": t_w,
                   "argmin_f": float(x[i_f]), "min_f": float(fn(y).min()),
                   "bound": pde.semiconcavity_bound(c, t),
                   "bound_w": pde.semiconcavity_bound(c, t_w)}
        lo, hi = pde.convexity_interval(f, x, i_f)
        summary.update(convex_f_lo=lo, convex_f_hi=hi)
        data = {"x": x, "f": f}
        for tag, tt in (("", t), ("_w", t_w)):
            us = {_VISCOUS: pde.viscous_hj(f, x, tt, beta=beta),
                  _HOPF: pde.hopf_lax_newton(fn, x, tt, y=y)[0],
                  _HEAT: pde.heat_smoothing(f, x, tt, beta=beta)}
            for k, u in us.items():
                i = int(u.argmin())
                summary[f"{k}: max u_xx{tag}"] = float(
                    pde.second_difference(u, dx)[margin:-margin].max())
                summary[f"{k}: argmin{tag}"] = float(x[i])
                summary[f"{k}: min{tag}"] = float(u.min())
            lo, hi = pde.convexity_interval(us[_HOPF], x, int(us[_HOPF].argmin()))
            summary.update({f"convex_u_lo{tag}": lo, f"convex_u_hi{tag}": hi})
            if tag == "":
                data.update(us)
        return RunOutput(summary=summary, data=data)


@register_analysis("pde_smoothing")
def pde_analysis(spec, runs) -> Analysis:
    """The claims of Lemma 4.17, Example 4.15 / Fig. 4.1, Example 4.13 and Fig. 3.2 on the
    stored 1-D solutions (see :class:`PDEProcedure`)."""
    import numpy as np

    from sgdlab.report.figures.landscapes import pde_figure

    r = runs[0]
    s, d = r.summary, r.data
    names = [k for k in d if k not in ("x", "f")]
    rows = [[k, s[f"{k}: max u_xx"], s["bound"], s[f"{k}: max u_xx_w"], s["bound_w"],
             s[f"{k}: argmin"], s["argmin_f"]] for k in names]
    table = Table("pde_smoothing", ["smoothing", "max u_xx (t)", "bound 1/(1/C + t)",
                                    "max u_xx (t_w)", "bound at t_w", "argmin u (t)",
                                    "argmin f"], rows,
                  caption=f"t = {s['t']}, t_w = t*/2 = {s['t_w']:.3g} (t* = 1/max(−f'') = "
                          f"{s['t_star']:.3g}), β = {s['beta']}, C = max f'' = {s['C']:.4g}")
    concl = []
    for k in (_VISCOUS, _HOPF):
        for tag, b in (("", "bound"), ("_w", "bound_w")):
            ok = s[f"{k}: max u_xx{tag}"] <= s[b] * 1.01
            concl.append(Conclusion(
                f"{k} at t = {s['t' if not tag else 't_w']:.3g}: max u_xx = "
                f"{s[f'{k}: max u_xx{tag}']:.4g} vs the bound {s[b]:.4g} (1% grid allowance)",
                agrees_with_paper=ok,
                claim="Lemma 4.17: HJ smoothing is semi-concave, u_xx ≤ 1/(C⁻¹ + t) — high "
                      "curvature minima widen fastest"))
    # Hopf–Lax keeps the global minimum (value and place) and widens its convexity interval
    dx = float(np.asarray(d["x"])[1] - np.asarray(d["x"])[0])
    tol = s["C"] * dx ** 2          # the grid cannot place a minimum better than this
    same = (abs(s[f"{_HOPF}: argmin_w"] - s["argmin_f"]) <= dx
            and abs(s[f"{_HOPF}: min_w"] - s["min_f"]) <= tol)
    wider = s["convex_u_lo_w"] <= s["convex_f_lo"] and s["convex_u_hi_w"] >= s["convex_f_hi"]
    concl.append(Conclusion(
        f"at t_w = {s['t_w']:.3g}: the Hopf–Lax minimum is at x = "
        f"{s[f'{_HOPF}: argmin_w']:.3g} with value {s[f'{_HOPF}: min_w']:.6g} (f: x = "
        f"{s['argmin_f']:.3g}, min f = {s['min_f']:.6g}); its convexity interval "
        f"[{s['convex_u_lo_w']:.3g}, {s['convex_u_hi_w']:.3g}] vs f's "
        f"[{s['convex_f_lo']:.3g}, {s['convex_f_hi']:.3g}]",
        agrees_with_paper=same and wider,
        claim="non-viscous HJ keeps the value and location of the minimum while its region of "
              "convexity widens (Fig. 4.1, Example 4.15, for t ≤ t*)"))
    heat = s[f"{_HEAT}: max u_xx_w"]
    hj = max(s[f"{_VISCOUS}: max u_xx_w"], s[f"{_HOPF}: max u_xx_w"])
    concl.append(Conclusion(
        f"at the short time t_w = {s['t_w']:.3g}: max u_xx of heat smoothing {heat:.4g} vs "
        f"{hj:.4g} for the HJ solutions",
        agrees_with_paper=heat > hj,
        claim="for short times the HJ solutions widen faster than heat smoothing (Ex. 4.13)"))
    wide = s[f"{_VISCOUS}: argmin"]
    concl.append(Conclusion(
        f"the global minimum of f is at x = {s['argmin_f']:.2f} (narrow); local entropy's at "
        f"γ = t = {s['t']} is at x = {wide:.2f}",
        agrees_with_paper=wide < 0 < s["argmin_f"],
        claim="for large γ local entropy has its global minimum in the wide valley (Fig. 3.2)"))
    fig = pde_figure(np.asarray(d["x"]), np.asarray(d["f"]),
                     {k: np.asarray(d[k]) for k in names}, s["t"])
    return Analysis(tables=[table], figures=[("pde_smoothing", fig)], conclusions=concl)
