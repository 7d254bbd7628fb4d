"""Procedures and analyses for the analytic-landscape experiments (``sgdlab.landscapes``)."""
from __future__ import annotations

from typing import Any

from sgdlab.errors import ConfigError
from sgdlab.experiments.analysis import Analysis
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
