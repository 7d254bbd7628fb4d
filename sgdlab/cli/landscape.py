"""``sgdlab landscape DEMO [--out DIR] [--quick]``: the analytic-landscape demonstrations.

Each demo computes on an analytic landscape (``sgdlab.landscapes``), prints its numbers, and
writes ``DIR/results.json`` (config, numbers, environment) plus its figure(s):

- ``escape``      Zhu et al.'s escape experiment on the two-basin loss as printed in Suppl. B;
                  prints the success-rate table per method. ``--lr`` sets η (the printed 0.1
                  by default; GD is stable at the sharp minimum only for η < 0.00974).
                  ``--landscape rescaled`` runs the rescaled variant (η λ_max = 1 at η = 0.1);
                  ``--protocol authors-code`` the authors' public-code protocol (their
                  landscape and data, every GLD variant at Tr Cov(ε) = 0.01, η = 0.005).
- ``ou``          SGD on a quadratic with C = H vs Jastrzebski's (η/4S) Tr H, several η/S.
- ``double-well`` thesis Example 6.43 for λ = 0, 0.5 and 1.5 (Fig. 6.4c's large λ, the
                  authors' plotting code's): histogram vs e^{−Φ},
                  resting points of the drift, mean angular velocity.
- ``pspin``       spherical 3-spin glass, three field regimes: distinct minima, energies, t-SNE.
- ``pde``         1-D viscous HJ (Cole–Hopf), Hopf–Lax and heat smoothing of a nonconvex f.
- ``perceptron``  binary perceptron teacher–student: plain vs local-entropy-guided search.

``--quick`` shrinks every demo to well under a minute (smaller sizes / fewer chains).
``--device cuda`` runs the chains of ``escape``, ``ou``, ``double-well``, ``pspin`` and
``perceptron`` on the GPU: the landscape is built on the CPU and moved, and the random numbers
are drawn by CPU generators, so a seed gives the CPU's run to round-off. ``pde`` solves its
1-D grids on the CPU and takes no ``--device``.
"""
from __future__ import annotations

import math
import platform
import sys
import time
from pathlib import Path

from sgdlab.cli.run import add_device_option, check_device
from sgdlab.report.figures import save_and_close
from sgdlab.strict_json import write_atomic

DEMOS = ("escape", "ou", "double-well", "pspin", "pde", "perceptron")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "landscape", help="analytic landscapes: escape, OU, double well, p-spin, PDE, perceptron",
        description="Run one analytic-landscape demonstration, print its numbers and save "
                    "results.json and its plots under --out.")
    p.add_argument("demo", choices=DEMOS, help="which demonstration")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output directory (default sgdlab-out/landscape-DEMO, "
                        "sgdlab-out/landscape-DEMO-quick with --quick)")
    p.add_argument("--quick", action="store_true", help="small sizes, well under a minute")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_device_option(p)
    g = p.add_argument_group("escape options (defaults: the paper's settings, Suppl. B)")
    g.add_argument("--repetitions", type=int, default=None, help="repetitions (default 100)")
    g.add_argument("--iterations", type=int, default=None, help="iterations (default 600)")
    g.add_argument("--lr", type=float, default=None,
                   help="step size η (default 0.1, or 0.005 with --protocol authors-code)")
    g.add_argument("--const-sigma", type=float, default=None, help="GLD const σ (default 2)")
    g.add_argument("--hessian-scale", type=float, default=None, help="GLD Hessian σ_H² (default 1)")
    shape = g.add_argument("--landscape", dest="escape_landscape",
                           choices=("paper", "rescaled", "authors-code"), default=None,
                           help="two-basin loss: paper (as printed, the default), rescaled "
                                "(orthogonal sharp axes 10/1, flat 0.1) or authors-code (their "
                                "2Dim code; the default with --protocol authors-code)")
    # zhu-escape-2d's reading names the printed loss landscape=printed
    shape.hints = {"printed": "the printed loss is --landscape paper, the catalogue's "
                              "--reading landscape=printed"}
    g.add_argument("--data-var", type=float, default=None,
                   help="paper/rescaled: variance of each data coordinate (default 0.01, the "
                        "printed N(0, 0.01) read as a variance; 1e-4 reads it as a std)")
    g.add_argument("--sharp-eigs", type=float, nargs=2, default=None, metavar=("A1", "A2"),
                   help="rescaled landscape (implied): sharp Hessian eigenvalues along "
                        "(cos θ, sin θ) and ⊥ (default 10 1)")
    g.add_argument("--flat-curvature", type=float, default=None,
                   help="rescaled landscape (implied): flat basin curvature b (default 0.1)")
    g.add_argument("--protocol", choices=("paper", "authors-code", "equal-trace"),
                   default="paper",
                   help="paper: the §4.2 updates with the Fig. 3 constants (default); "
                        "authors-code (alias equal-trace): the authors' 2Dim code, every GLD "
                        "variant at equal noise trace, added after the step")
    g.add_argument("--success", dest="success_rule", choices=("flat_basin", "reached", "corner"),
                   default=None, help="success: final iterate in the flat basin (default), some "
                                      "iterate in it, or final w1, w2 < -0.5 (authors-code)")
    g.add_argument("--noise-trace", type=float, default=None,
                   help="authors-code: Tr Cov(ε) of every GLD variant (default 0.01)")
    g = p.add_argument_group("pde options")
    g.add_argument("--beta", type=float, default=None,
                   help="inverse temperature β of the viscous HJ and heat equations (default 1: "
                        "the thesis' β⁻¹ = 1, §3.1.2)")
    p.set_defaults(func=_main)


# the escape options (argparse dest -> flag), which the other demos do not read
_ESCAPE_FLAGS = {"repetitions": "--repetitions", "iterations": "--iterations", "lr": "--lr",
                 "const_sigma": "--const-sigma", "hessian_scale": "--hessian-scale",
                 "escape_landscape": "--landscape", "data_var": "--data-var",
                 "sharp_eigs": "--sharp-eigs", "flat_curvature": "--flat-curvature",
                 "protocol": "--protocol", "success_rule": "--success",
                 "noise_trace": "--noise-trace"}


def _env() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "platform": platform.platform()}


def _save(out: Path, name: str, fig) -> str:
    save_and_close(fig, out / name, dpi=120)
    return name


def _main(args) -> int:
    import torch

    from sgdlab.errors import (UserError, checked_float, is_seed, make_output_dir, not_a_seed,
                               refuse_results_of_others)

    given = [flag for dest, flag in _ESCAPE_FLAGS.items()
             if getattr(args, dest) not in (None, "paper" if dest == "protocol" else None)]
    if args.demo != "escape" and given:   # they were ignored: a run not the one asked for
        raise UserError(f"{', '.join(given)}: escape options, but the demo is {args.demo!r} "
                        "(they apply to `sgdlab landscape escape` only)")
    if args.demo != "pde" and args.beta is not None:
        raise UserError(f"--beta: a pde option, but the demo is {args.demo!r} (it applies to "
                        "`sgdlab landscape pde` only)")
    if args.beta is not None:
        checked_float("--beta", args.beta, 0.0, strict=True)
    if args.demo == "pde" and args.device != "cpu":
        # its grids hold 10³–10⁴ points and no chains: nothing for a GPU to do
        raise UserError(f"--device {args.device}: `sgdlab landscape pde` computes on the CPU "
                        "(--device applies to the demos that run chains)")
    check_device(args.device)
    # bounded as a run config's seed: 2**64 was a traceback from torch in an empty --out
    if not is_seed(args.seed):
        raise UserError(not_a_seed("--seed", args.seed))
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    # the escape options are checked before the progress line and the output folder: a
    # refused one came after "computing"
    escape = _escape_setup(args) if args.demo == "escape" else None
    out = Path(args.out if args.out is not None else
               f"sgdlab-out/landscape-{args.demo}{'-quick' if args.quick else ''}")
    refuse_results_of_others(out, "sgdlab landscape")
    fresh = not out.exists()
    make_output_dir(out)
    runner = {"escape": lambda args, out: _escape(args, out, escape), "ou": _ou,
              "double-well": _double_well, "pspin": _pspin, "pde": _pde,
              "perceptron": _perceptron}[args.demo]
    # the demos print their numbers only once computed, some after half a minute
    print(f"sgdlab landscape {args.demo}{' --quick' if args.quick else ''}: computing "
          f"(output to {out})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        results = runner(args, out)
    except UserError:
        if fresh and not any(out.iterdir()):
            out.rmdir()   # a demo that refuses its options leaves no empty folder behind
        raise
    results.update({"demo": args.demo, "quick": args.quick, "seed": args.seed,
                    "device": args.device,
                    "seconds": round(time.perf_counter() - t0, 3), "environment": _env()})
    write_atomic(out / "results.json", results, indent=2, default=float)
    # the plots too: only results.json was named, the figure was left to be found
    print(f"wrote {out / 'results.json'}" + "".join(
        f", {out / name}" for name in results.get("figures", [])))
    return 0


# ------------------------------------------------------------------------ demos
def _escape_setup(args) -> tuple:
    """(EscapeConfig, landscape name, the two-basin landscape on the CPU) of the escape
    options, each checked (a UserError naming its flag)."""
    import torch

    from sgdlab.errors import UserError
    from sgdlab.landscapes.escape import EscapeConfig
    from sgdlab.landscapes.two_basin import two_basin

    protocol = getattr(args, "protocol", None) or "paper"
    protocol = "authors-code" if protocol == "equal-trace" else protocol
    if getattr(args, "noise_trace", None) is not None and protocol != "authors-code":
        # the paper's protocol scales each GLD variant's noise by its own constants
        raise UserError("--noise-trace applies to --protocol authors-code only (the paper's "
                        "protocol sets each GLD variant's noise by --const-sigma, "
                        "--hessian-scale and the gradient covariance)")
    rescaled_only = getattr(args, "sharp_eigs", None) is not None or \
        getattr(args, "flat_curvature", None) is not None
    which = getattr(args, "escape_landscape", None) or \
        ("authors-code" if protocol == "authors-code" else
         "rescaled" if rescaled_only else "paper")
    if protocol == "authors-code" and which == "authors-code":
        cfg = EscapeConfig.authors_code(seed=args.seed)
    else:   # the authors' protocol on another landscape keeps that landscape's η and rules
        cfg = EscapeConfig(seed=args.seed, protocol=protocol)
    if getattr(args, "noise_trace", None) is not None:
        cfg.noise_trace = args.noise_trace
    if args.quick:
        cfg.repetitions, cfg.sharpness_every = 50, 50
    for opt in ("repetitions", "iterations", "lr", "const_sigma", "hessian_scale",
                "success_rule"):
        if getattr(args, opt, None) is not None:
            setattr(cfg, opt, getattr(args, opt))
    try:
        cfg.validate()
    except UserError as e:     # named by the flag the user typed, not by the config field
        field = str(e).split(" ", 1)[0]
        if field in _ESCAPE_FLAGS:
            raise UserError(_ESCAPE_FLAGS[field] + str(e)[len(field):]) from None
        raise
    shape = {}
    if getattr(args, "sharp_eigs", None) is not None:
        shape["sharp_eigs"] = tuple(args.sharp_eigs)
    if getattr(args, "flat_curvature", None) is not None:
        shape["flat_curvature"] = args.flat_curvature
    if shape and which != "rescaled":
        raise UserError("--sharp-eigs/--flat-curvature apply to --landscape rescaled only")
    if getattr(args, "data_var", None) is not None:
        if which == "authors-code":
            raise UserError("--data-var applies to --landscape paper or rescaled")
        shape["data_var"] = args.data_var
    try:
        land = two_basin(which, seed=args.seed, dtype=torch.float32, **shape)
    except UserError as e:     # named by the flag, as the config's fields above
        if str(e).startswith("data_var "):
            raise UserError("--data-var" + str(e)[len("data_var"):]) from None
        raise
    return cfg, which, land


def _escape(args, out: Path, setup: tuple) -> dict:
    import numpy as np
    import torch

    from sgdlab.landscapes.escape import LABELS, escape_experiment
    from sgdlab.report.figures.landscapes import escape_run_figure

    cfg, which, land = setup
    land.to(args.device)       # built (its data drawn) on the CPU: the same loss everywhere
    res = escape_experiment(land, cfg)
    start = land.sharp_center if cfg.start == "sharp_center" else land.sharp_minimum
    extra = (f", protocol authors-code (Tr Cov(eps) = {cfg.noise_trace}, added after the step)"
             if cfg.protocol == "authors-code" else "")
    rule = {"corner": "w1, w2 < -0.5 at the end", "reached": "some iterate in the flat basin",
            "flat_basin": "ends in the flat basin"}[cfg.success_rule]
    eta_c = land.gd_stable_lr()
    print(f"two-basin escape ({which} landscape{extra}): eta={cfg.lr} "
          f"(eta*lambda_max = {2 * cfg.lr / eta_c:.3g}; GD is stable at the sharp minimum only "
          f"for eta < {eta_c:.3g}), {cfg.iterations} iterations, {cfg.repetitions} repetitions, "
          f"start at {[round(v, 3) for v in start.tolist()]}, success = {rule}")
    print(res.table())
    g = np.linspace(-2.0, 2.0, 161)
    gx, gy = np.meshgrid(g, g)
    pts = torch.tensor(np.stack([gx, gy], -1), dtype=torch.float32, device=args.device)
    loss = land.loss(pts).cpu().numpy()
    trajs = {m: t[:, 0].numpy() for m, t in res.trajectory.items()}
    fig = escape_run_figure(gx, gy, loss, trajs, res.success_rate, res.sharpness_steps,
                            res.sharpness, LABELS, success_rule=rule,
                            intervals=res.success_interval(), paper="Zhu et al. 2019, Fig. 3")
    data = res.to_dict()
    data["figures"] = [_save(out, "escape.png", fig)]
    data["landscape"] = land.describe()
    data["table"] = res.table()
    return data


def _ou(args, out: Path) -> dict:
    import torch

    from sgdlab.landscapes.quadratic import Quadratic
    from sgdlab.landscapes.sde import path_mean_se, sgd_chains
    from sgdlab.report.figures.landscapes import ou_figure

    d = 10 if not args.quick else 4
    h = torch.diag(torch.logspace(0, -1.5, d, dtype=torch.float64))
    q = Quadratic(h, num_samples=200, seed=args.seed).to(args.device)
    chains = 2000 if not args.quick else 500
    gen = torch.Generator().manual_seed(args.seed)
    settings = [(0.05, 1), (0.1, 2), (0.2, 4), (0.1, 1), (0.2, 2), (0.05, 4)]
    rows = []
    for lr, s in settings:
        cov = q.sgd_stationary_covariance(lr, s)
        # drawn on the CPU generator and moved: the same starts on any device
        th0 = torch.randn(chains, d, generator=gen, dtype=torch.float64).to(args.device) @ \
            torch.linalg.cholesky(cov).T
        relax = 1.0 / float(h.diagonal().min())  # slowest relaxation time of the OU process
        path = sgd_chains(q, th0, lr=lr, batch_size=s, steps=int(round(4 * relax / lr)),
                          generator=gen, record_every=max(1, int(round(relax / lr))))
        # s.e. from per-chain averages: records along a path are correlated (path_mean_se)
        measured, stderr = path_mean_se(q.loss(path.states[1:]) - q.min_loss)
        rows.append({"lr": lr, "batch_size": s, "eta_over_s": lr / s,
                     "measured": measured, "stderr": stderr,
                     "sde_prediction": q.stationary_excess_loss(lr, s),
                     "discrete_prediction": q.stationary_excess_loss(lr, s, discrete=True)})
    print(f"{'eta':>6} {'S':>3} {'eta/S':>7} {'E[L]-L*':>10} {'(eta/4S)TrH':>12} "
          f"{'discrete':>10}")
    for r in rows:
        print(f"{r['lr']:6.3f} {r['batch_size']:3d} {r['eta_over_s']:7.4f} {r['measured']:10.5f}"
              f" {r['sde_prediction']:12.5f} {r['discrete_prediction']:10.5f}")
    fig = ou_figure([r["eta_over_s"] for r in rows], [r["measured"] for r in rows],
                    [r["stderr"] for r in rows], [r["sde_prediction"] for r in rows],
                    [r["batch_size"] for r in rows])
    return {"rows": rows, "dim": d, "chains": chains, "trace_h": float(torch.trace(h)),
            "figures": [_save(out, "ou.png", fig)]}


def _double_well(args, out: Path) -> dict:
    import numpy as np
    import torch

    from sgdlab.landscapes.double_well import DoubleWell, drift_angular_rate, winding_rate
    from sgdlab.landscapes.sde import simulate
    from sgdlab.report.figures.landscapes import double_well_figure

    chains = 20000 if not args.quick else 4000
    e1, e2 = np.linspace(-2.2, 2.2, 45), np.linspace(-2.5, 2.5, 51)
    gen = torch.Generator().manual_seed(args.seed)
    hists, rest, ang, rows = {}, {}, {}, []
    stationary = None
    for lam in (0.0, 0.5, 1.5):     # 1.5: the authors' plotting code's "large" λ (Fig. 6.4c)
        dw = DoubleWell(lam).to(args.device)    # no tensors of its own: the chains' device
        dt = 0.01 if lam < 1 else 0.002
        x0 = torch.zeros(chains, 2, dtype=torch.float64)
        x0[:, 0] = torch.where(torch.arange(chains) % 2 == 0, 1.0, -1.0)
        x0 = x0.to(args.device)
        burn = simulate(dw.sde(), x0, dt=dt, steps=int(5 / dt), generator=gen).final
        final, w = winding_rate(dw, burn, dt=dt, steps=int(5 / dt), generator=gen)
        x = final.cpu().numpy()
        rate = drift_angular_rate(dw, final)
        counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[e1, e2])
        stationary = dw.stationary_bin_probabilities(e1, e2)
        # total variation on a coarse 11 x 8 grid (+ outside), where sampling error is small
        c1, c2 = np.linspace(-2.2, 2.2, 12), np.linspace(-2.4, 2.4, 9)
        coarse, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[c1, c2])
        probs = dw.stationary_bin_probabilities(c1, c2)
        tv = 0.5 * float(np.abs(coarse / chains - probs).sum()
                         + abs((1 - probs.sum()) - (1 - coarse.sum() / chains)))
        name = f"λ={lam:g}"
        hists[name] = counts / chains
        rest[name] = dw.drift_zeros()
        ang[name] = (float(w.mean()), dw.mean_angular_velocity(),
                     float(w.std() / max(1, w.numel()) ** 0.5))
        rows.append({"lambda": lam, "total_variation": tv,
                     "angular_velocity_mean": float(w.mean()),
                     "angular_velocity_drift_estimate": float(rate.mean()),
                     "angular_velocity_median": float(w.median()),
                     "angular_velocity_exact": dw.mean_angular_velocity(),
                     "drift_zeros": rest[name]})
        zeros = [None if z is None else (round(z[0], 4), round(z[1], 4)) for z in rest[name]]
        print(f"λ={lam:<4g} TV(hist, e^-Φ) on 11x8 bins = {tv:.3f}; mean angular velocity: "
              f"winding {float(w.mean()):+.3f}, E[(x×b)/|x|²] {float(rate.mean()):+.3f}, "
              f"exact {dw.mean_angular_velocity():+.3f}; drift zeros {zeros}")
    fig = double_well_figure(e1, e2, hists, stationary, rest, ang,
                             title=f"Chaudhari 2018, Fig. 6.4: {chains} chains, seed {args.seed}")
    return {"rows": rows, "chains": chains, "figures": [_save(out, "double_well.png", fig)]}


def _pspin(args, out: Path) -> dict:
    import torch

    from sgdlab.landscapes.pspin import (REGIMES, PSpinGlass, cluster_minima, embed_tsne,
                                         starts_seed)
    from sgdlab.report.figures.landscapes import pspin_figure

    n = 100 if not args.quick else 40
    starts = 96 if not args.quick else 32
    gen = torch.Generator().manual_seed(starts_seed(args.seed))
    embeds, energies, counts, sizes, rows = {}, {}, {}, {}, []
    for regime in REGIMES:
        p = PSpinGlass(n, regime=regime, seed=args.seed).to(args.device)
        t0 = time.perf_counter()
        res = p.descend(p.random_starts(starts, generator=gen), lr=0.1, tol=1e-4,
                        max_steps=5000 if not args.quick else 2000)
        secs = time.perf_counter() - t0
        # clustering compares the minima one by one: on the CPU (no sync per minimum)
        sigma, e = res.sigma.cpu(), res.energy_per_spin.cpu()
        labels, reps = cluster_minima(sigma)
        name = f"{regime} (ν={p.nu:.3g})"
        embeds[name] = embed_tsne(sigma[reps], seed=args.seed)
        energies[name] = e[reps].numpy()
        counts[name] = len(reps)
        sizes[name] = torch.bincount(labels, minlength=len(reps)).numpy()
        rows.append({"regime": regime, "nu": p.nu, "n": n, "starts": starts,
                     "distinct_minima": len(reps), "converged": int(res.converged.sum()),
                     "energy_min": float(e.min()), "energy_max": float(e.max()),
                     "minima_energies": sorted(float(e[r]) for r in reps),
                     "median_steps": int(res.steps.median()), "seconds": secs})
        print(f"{regime:<9} ν={p.nu:.4f}: {len(reps)} distinct minima from {starts} starts "
              f"({int(res.converged.sum())} converged), H/N in [{float(e.min()):.4f}, "
              f"{float(e.max()):.4f}], {secs:.1f}s")
    fig = pspin_figure(embeds, energies, counts, sizes, paper="Chaudhari 2018, Fig. 2.2")
    return {"rows": rows, "figures": [_save(out, "pspin_tsne.png", fig)]}


def _pde(args, out: Path) -> dict:
    import torch

    from sgdlab.experiments.procedures.landscape_runs import fokker_planck_densities
    from sgdlab.landscapes import pde
    from sgdlab.report.figures.landscapes import fokker_planck_figure, pde_figure

    x = torch.linspace(-4, 4, 801 if not args.quick else 401, dtype=torch.float64)
    dx = float(x[1] - x[0])
    fn = pde.wide_and_narrow_minima
    f = fn(x)
    t, beta = 0.5, (1.0 if args.beta is None else args.beta)
    y = torch.linspace(-6, 6, 12001, dtype=torch.float64)
    # the convolutions integrate over a grid padded by 8 std of their Gaussian (not cut off
    # near ±4, where the viscous solution's max u_xx otherwise lay: 0.72 vs 0.63 at β = 1)
    pad, _ = pde.padded_grid(x, 8 * math.sqrt(t / beta))
    fpad = fn(pad)
    curves = {
        "viscous HJ (Cole–Hopf, local entropy)": pde.viscous_hj(f, x, t, beta=beta, y=pad,
                                                                fy=fpad),
        "non-viscous HJ (Hopf–Lax, proximal)": pde.hopf_lax(f, x, t, y=y, fy=fn(y)),
        "heat equation": pde.heat_smoothing(f, x, t, beta=beta, y=pad, fy=fpad),
    }
    c = float(pde.second_difference(f, dx).max())
    bound = pde.semiconcavity_bound(c, t)
    rows = {}
    for name, u in curves.items():
        top = float(pde.second_difference(u, dx)[40:-40].max())
        rows[name] = {"max_u_xx": top, "argmin": float(x[u.argmin()])}
        # Lemma 4.17 bounds the HJ solutions only; the heat equation's row is for comparison
        rtol = f"{pde.SEMICONCAVITY_GRID_RTOL:.0%}"
        note = (f"bound 1/(1/C+t) = {bound:.3f}" if name.startswith("heat") else
                f"{'within' if pde.within_semiconcavity_bound(top, bound) else 'ABOVE'} "
                f"the bound 1/(1/C+t) = {bound:.3f} + {rtol} grid allowance")
        print(f"{name:<40} max u_xx = {top:8.3f} ({note}, C = {c:.2f}); "
              f"argmin {float(x[u.argmin()]):+.3f} (f: {float(x[f.argmin()]):+.3f})")
    fig = pde_figure(x.numpy(), f.numpy(), {k: v.numpy() for k, v in curves.items()}, t,
                     paper="Chaudhari 2018, Fig. 4.1")
    figures = [_save(out, "pde_smoothing.png", fig)]
    # Fig. 4.1's densities: the entry's defaults (ρ₀ on a poor local minimum of f)
    fp, dens = fokker_planck_densities({}, x, fn, t, beta, y, pad, fpad)
    densities = {name: {"start_basin": fp[f"fp: {name}: start basin"],
                        "global_basin": fp[f"fp: {name}: global basin"],
                        "nearly_optimal": fp[f"fp: {name}: nearly optimal"]}
                 for name in (k.removeprefix("density: ") for k in dens)
                 if name != "initial"}
    print(f"Fokker–Planck from N({fp['fp: rho0_mean']:g}, {fp['fp: rho0_std']:g}²) for "
          f"τ = {fp['fp: horizon']:g}, D = {fp['fp: D']:g}: mass in the start basin / f's "
          "global basin / its nearly optimal basins")
    for name, mass in densities.items():
        print(f"  {name:<38} {mass['start_basin']:.3f} / {mass['global_basin']:.3f} / "
              f"{mass['nearly_optimal']:.3f}")
    smoothed = {k: v.numpy() for k, v in curves.items() if not k.startswith("heat")}
    fig = fokker_planck_figure(x.numpy(), f.numpy(), smoothed,
                               {k.removeprefix("density: "): v.numpy() for k, v in dens.items()},
                               t, fp["fp: horizon"], paper="Chaudhari 2018, Fig. 4.1")
    figures.append(_save(out, "pde_densities.png", fig))
    return {"t": t, "beta": beta, "C": c, "bound": bound, "curves": rows,
            "fokker_planck": {"horizon": fp["fp: horizon"], "diffusion": fp["fp: D"],
                              "rho0_mean": fp["fp: rho0_mean"], "rho0_std": fp["fp: rho0_std"],
                              "start_basin": fp["fp: start_basin"],
                              "global_basin": fp["fp: global_basin"], "densities": densities},
            "figures": figures}


def _perceptron(args, out: Path) -> dict:
    from sgdlab.landscapes.perceptron import compare_searches
    from sgdlab.report.figures.landscapes import perceptron_figure

    d = 201 if not args.quick else 101
    alphas = [0.3, 0.6, 0.9] if not args.quick else [0.4, 0.8]
    instances = 8 if not args.quick else 4
    res = compare_searches(d=d, alphas=alphas, instances=instances, seed=args.seed,
                           device=args.device)
    print(f"{'alpha':>6} " + " ".join(f"{m:>22}" for m in res["errors"]))
    for i, a in enumerate(alphas):
        print(f"{a:6.2f} " + " ".join(f"{res['errors'][m][i]:14.3f} ± {res['stderr'][m][i]:5.3f}"
                                      for m in res["errors"]))
    fig = perceptron_figure(alphas, res["errors"], res["stderr"], paper="Chaudhari 2018, §3.1.1")
    res["figures"] = [_save(out, "perceptron.png", fig)]
    return res
