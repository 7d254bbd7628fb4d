"""``sgdlab walk``: Xing et al.'s "A Walk with SGD" demonstration on a small dataset.

Trains the same MLP (same initialisation, same learning rate by default) with full-batch GD and
with mini-batch SGD (plain ``torch.optim.SGD``, batch 100), interpolating the full training loss
between every pair of consecutive iterates (K = 10 points between them, as Xing et al.) and
logging the consecutive-gradient
cosine and the distance from initialisation. Writes to ``--out``:

- ``walk.png`` — Xing et al. Fig. 1 style walk plot, one column per optimizer;
- ``walk_barriers.csv`` / ``.md`` — barriers crossed and heights per epoch (Tables 1–2);
- ``interpolation.png`` — loss/accuracy along (1 − α) θ_GD + α θ_SGD, α ∈ [−1, 2]
  (when both optimizers ran);
- ``trajectory.png`` — spectra of the SGD weight trajectory (recorded every step, a subset of
  coordinates) and its Fisher-g periodicity test; the raw trajectory under ``trajectory/``;
- ``results.json`` — config, per-run numbers, tables, timings, environment;
- ``history.json`` — every recorded metric per run (``{run: {name: [[step, value], ...]}}``).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

from sgdlab.atomic import write_whole
from sgdlab.cli.train import EXIT_DIVERGED
from sgdlab.report.figures import save_and_close
from sgdlab.strict_json import write_atomic

# as sgdlab train's: a script must not take a walk whose run diverged for a finished one
EXIT_STATUSES = (f"exit status: 0 its runs finished, {EXIT_DIVERGED} a run diverged (GD's "
                 "or SGD's; its outputs are written all the same, and the step it diverged "
                 "at printed), 2 "
                 "bad input (an option, the dataset), 130 interrupted")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "walk", help="walk-with-SGD demo: step interpolation, barriers, gradient cosine",
        description="Train an MLP with full-batch GD and with SGD, interpolate the training "
                    "loss between consecutive iterates (Xing et al. 2018) and save the walk "
                    "plot, barrier tables, model interpolation and trajectory spectra.",
        epilog=EXIT_STATUSES)
    p.add_argument("--data", default="digits", help="dataset name (default digits)")
    p.add_argument("--optimizer", nargs="+", choices=["gd", "sgd"], default=["gd", "sgd"],
                   help="which runs (default both)")
    p.add_argument("--steps", type=int, default=150,
                   help="optimizer steps per run (default 150; GD does one step per epoch)")
    p.add_argument("--lr", type=float, default=0.5,
                   help="learning rate of both runs (default 0.5)")
    p.add_argument("--lr-gd", type=float, default=None, help="GD learning rate (default --lr)")
    p.add_argument("--lr-sgd", type=float, default=None, help="SGD learning rate (default --lr)")
    p.add_argument("--batch-size", type=int, default=100,
                   help="SGD batch size (default 100, as Xing et al.; one above the training "
                        "set's size takes all of it, and the run says so)")
    p.add_argument("--widths", type=int, nargs="+", default=[100, 100],
                   help="MLP hidden widths (default 100 100)")
    p.add_argument("--points", type=int, default=10,
                   help="K points between consecutive iterates (default 10, as Xing et al.)")
    p.add_argument("--spacing", choices=["interior", "inclusive"], default="interior",
                   help="interior: K points strictly between the iterates, which are evaluated "
                        "too (the paper's reading, default); inclusive: K points counting the "
                        "iterates")
    p.add_argument("--eval-subset", type=int, default=None,
                   help="interpolate on a fixed subset of this many training examples "
                        "(default: the whole training set)")
    p.add_argument("--seed", type=int, default=0,
                   help="initialisation and sampling seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", metavar="DIR", default="sgdlab-out/walk",
                   help="output directory (default sgdlab-out/walk)")
    p.set_defaults(func=_walk)


def _run_one(opt: str, args, data, model_init):
    import torch
    from torch import nn

    from sgdlab.operators.params import copy_module
    from sgdlab.train.callbacks import Schedule
    from sgdlab.train.instruments.dynamics import DynamicsCallback
    from sgdlab.train.instruments.trajectory import TrajectoryRecorder
    from sgdlab.train.instruments.walk import StepInterpolationCallback
    from sgdlab.train.loop import train

    n = len(data.x_train)
    # a --batch-size above the training set's size draws all of it: the batch it is
    bs = n if opt == "gd" else min(args.batch_size, n)
    lr = args.lr_gd if opt == "gd" else args.lr_sgd
    lr = args.lr if lr is None else lr
    spe = math.ceil(n / bs)
    model = copy_module(model_init)
    walk = StepInterpolationCallback(Schedule.every(1), num_points=args.points,
                                     spacing=args.spacing, eval_data=args.eval_subset,
                                     seed=args.seed)
    dyn = DynamicsCallback(Schedule.every(1))
    cbs = [walk, dyn]
    if opt == "sgd":
        cbs.append(TrajectoryRecorder(Path(args.out) / "trajectory", every_steps=1,
                                      every_epochs=None, num_coords=2000, seed=args.seed))
    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=lr),
                epochs=math.ceil(args.steps / spe), batch_size=bs, seed=args.seed,
                callbacks=cbs, max_steps=args.steps, progress=False)
    return model, res, walk, {"batch_size": bs, "full_batch": bs == n, "lr": lr,
                              "steps_per_epoch": spe}


def _num(value, spec: str) -> str:
    """``value`` in format ``spec``; ``n/a`` for None (a run that diverged before it)."""
    return "n/a" if value is None else format(value, spec)


def _walk(args: argparse.Namespace) -> int:
    import torch

    from sgdlab.data import load_dataset
    from sgdlab.errors import (UserError, is_seed, make_output_dir, not_a_seed,
                               refuse_results_of_others)
    from sgdlab.measure.interpolation import interpolate_models
    from sgdlab.measure.trajectory import (
        increment_autocorrelation,
        increment_spectrum,
        periodicity_test,
    )
    from sgdlab.models import build_model
    from sgdlab.report.figures.interpolation import interpolation_figure
    from sgdlab.report.figures.trajectory import trajectory_figure
    from sgdlab.report.figures.walk import walk_epoch_table, walk_figure
    from sgdlab.store.trajectory import open_trajectory

    if args.steps < 2:
        raise UserError(f"--steps must be >= 2, got {args.steps}")
    if args.points < (1 if args.spacing == "interior" else 3):
        raise UserError(f"--points must be >= {1 if args.spacing == 'interior' else 3} (a "
                        f"barrier needs a point between the iterates), got {args.points}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    # as sgdlab landscape: --eval-subset 0 was a traceback from the instrument after the
    # output folder was made, --threads -1 one from torch, --threads 0 ran on torch's default
    for flag, value in (("--eval-subset", args.eval_subset), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    # bounded as a run config's seed: -1 failed the trajectory's subset draw after the
    # output folder was made and GD had trained
    if not is_seed(args.seed):
        raise UserError(not_a_seed("--seed", args.seed))
    if any(w < 1 for w in args.widths):     # the model's message names 'widths[1]', no flag
        raise UserError(f"--widths must each be >= 1, got {' '.join(map(str, args.widths))}")
    for name in ("lr", "lr_gd", "lr_sgd"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {v}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if Path(args.data).expanduser().is_file():
        raise UserError(
            f"--data {args.data}: sgdlab walk trains its own MLP on a named dataset; for a "
            "data file (or a model) of one's own, train a run config whose measure list "
            "holds the step_interpolation and dynamics instruments (sgdlab train CONFIG, "
            "data: {file: ...}), or register the data as a dataset in a plugin module "
            "($SGDLAB_PLUGINS) and give its name")
    data = load_dataset(args.data)
    if data.task != "classification":
        raise UserError(f"sgdlab walk needs a classification dataset; {args.data} is "
                        f"{data.task}")
    if not data.x_train.is_floating_point():   # token windows: the MLP's first layer failed
        raise UserError(f"sgdlab walk trains an MLP on features, but {args.data} holds "
                        f"{data.x_train.dtype} token windows shaped {tuple(data.x_train.shape)}"
                        ": give a dataset of images or features (digits, mnist_small, "
                        "mnist1d, ...)")
    torch.manual_seed(args.seed)
    model_init = build_model("mlp", data.input_shape, data.num_outputs, widths=args.widths)
    # made once the data and model are known good: a typo leaves no empty folder
    out = Path(args.out)
    refuse_results_of_others(out, "sgdlab walk")
    make_output_dir(out)

    runs, models, summary = {}, {}, {}
    for opt in dict.fromkeys(args.optimizer):
        t0 = time.perf_counter()
        model, res, walk, info = _run_one(opt, args, data, model_init)
        wall = time.perf_counter() - t0
        label = opt.upper()
        runs[label], models[label] = res.history, model
        cos = sorted(v for _, v in res.history.get("grad_cosine", []))
        epochs = walk.summary()
        first = epochs[0] if epochs else None
        summary[label] = {
            **info, "status": res.status, "steps": res.steps,
            "final_train_loss": res.final.get("train_loss"),
            "final_train_acc": res.final.get("train_acc"),
            "final_test_acc": res.final.get("test_acc"),
            "grad_cosine_mean": sum(cos) / len(cos) if cos else None,
            # the mean of the middle two of an even count (the upper one was reported)
            "grad_cosine_median": statistics.median(cos) if cos else None,
            "grad_cosine_frac_below_-0.9": (sum(c < -0.9 for c in cos) / len(cos)
                                            if cos else None),
            "barriers_total": sum(int(r.barrier) for r in walk.records),
            "steps_interpolated": len(walk.records),
            "barriers_epoch1": first.barriers if first else None,
            "steps_epoch1": first.steps if first else None,
            "mean_height_above_floor": (sum(r.height_above_floor for r in walk.records)
                                        / max(1, len(walk.records))),
            "walk_seconds": walk.seconds, "run_seconds": wall,
            "walk_fraction_of_run_time": walk.seconds / wall if wall > 0 else None,
        }
        full = ", the full training set;" if info["full_batch"] else ","
        row = summary[label]
        # a diverged run has no final loss nor cosines: None, which no float format takes
        below = row["grad_cosine_frac_below_-0.9"]
        steps = f"{res.steps} step{'' if res.steps == 1 else 's'}"
        print(f"{label}: {steps} (B={info['batch_size']}{full} lr={info['lr']}), "
              f"{'final' if res.status == 'finished' else 'last finite'} train loss "
              f"{_num(row['final_train_loss'], '.4f')}, "
              f"grad cosine mean {_num(row['grad_cosine_mean'], '.3f')}, median "
              f"{_num(row['grad_cosine_median'], '.3f')}, below -0.9 in "
              f"{_num(None if below is None else 100 * below, '.0f')}% of steps, "
              f"barriers in epoch 1: {row['barriers_epoch1']} of "
              f"{row['steps_epoch1']} steps, total {row['barriers_total']}"
              f"; interpolation took {walk.seconds:.2f}s of {wall:.2f}s")
        if res.status != "finished":
            print(f"{label}: {res.status}: {res.message}")

    # the recorded metrics, so the figures can be redrawn without training again
    write_atomic(out / "history.json",
                 {label: {k: [list(p) for p in v] for k, v in h.items()}
                  for label, h in runs.items()})
    fig = walk_figure(runs, title=f"Xing et al. 2018, Figs. 1-2: walk with SGD on {args.data}, "
                                  f"MLP {args.widths}")
    save_and_close(fig, out / "walk.png", dpi=130)
    table = walk_epoch_table(runs)
    write_whole(out / "walk_barriers.csv", table.to_csv())
    write_whole(out / "walk_barriers.md", table.to_markdown())
    results = {"config": vars(args) | {"func": None}, "runs": summary,
               "tables": [table.to_json()], "figures": ["walk.png"]}

    if "GD" in models and "SGD" in models:
        # interpolate_models' own grid: α = -1, -0.9, ..., 2 in float64 (a float32 linspace
        # put model A at α = 1.5e-8 and 0.1 at 0.10000001639), cast only where it meets
        # float32 parameters
        curve = interpolate_models(models["GD"], models["SGD"], torch.nn.CrossEntropyLoss(),
                                   data.train, data.test)
        save_and_close(interpolation_figure(curve, labels=("GD", "SGD")),
                       out / "interpolation.png", dpi=130)
        results["interpolation_gd_to_sgd"] = curve.to_dict()
        results["figures"].append("interpolation.png")
    if "SGD" in models:
        traj = open_trajectory(out / "trajectory")
        snaps = traj.snapshots
        if len(snaps) >= 6:
            spec, acf = increment_spectrum(snaps), increment_autocorrelation(snaps)
            test = periodicity_test(snaps)
            title = "Chaudhari 2018, Fig. 6.3a: increments of the SGD trajectory"
            save_and_close(trajectory_figure(spec, acf, test=test, title=title),
                           out / "trajectory.png", dpi=130)
            results["trajectory_sgd"] = {
                "snapshots": len(snaps), "coords": int(snaps.shape[1]),
                "fraction_significant": test.fraction_significant,
                "combined_p_value": test.combined_p_value, "periodic": test.periodic,
                "dominant_frequency": test.dominant_frequency,
                "autocorr_fraction_outside_99": acf.fraction_outside}
            results["figures"].append("trajectory.png")
    try:
        from sgdlab.store.env import environment
        results["environment"] = environment()
    except Exception as e:  # the environment record is informative only
        results["environment"] = {"error": str(e)}
    results["config"].pop("func", None)
    write_atomic(out / "results.json", results, indent=1, default=str)
    # the table has a row per GD step: the files are named after it, where the reader looks
    print(table.to_markdown())
    print(f"wrote {out}/walk.png, walk_barriers.md/.csv, results.json"
          + (", interpolation.png" if "interpolation_gd_to_sgd" in results else "")
          + (", trajectory.png" if "trajectory_sgd" in results else ""))
    # once everything is written: the diverged run's outputs are kept
    return EXIT_DIVERGED if any(r["status"] == "diverged" for r in summary.values()) else 0
