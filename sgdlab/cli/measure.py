"""``sgdlab measure CHECKPOINT_OR_RUN --what hessian,noise,alignment,sharpness,surface,batch``.

Measures a trained model: by default the Hessian's top eigenvalues, trace and Frobenius norm,
the gradient-noise covariance Σ (Chaudhari's diffusion matrix D; its noise/mean_eig is
`sgdlab temperature --mean-eig`), the Σ–H alignment and the sharpness, on 1000 training
examples (``sgdlab measure RUN_ID``; ``--what`` adds the loss surface and mini-batch tests).

It loads a stored model — a run id (or unique prefix) in the run store, a run folder, or a
checkpoint file/folder written by the training loop (its run folder must hold the
``config.yaml`` that ``sgdlab train`` writes, so the model can be rebuilt); of a finished
run of an experiment's sweep, by run id, the final weights it keeps (``weights.pt``, its
model rebuilt from the run parameters the store holds), of one stopped before its end, by
run id or path, its last checkpoint (``checkpoint/last.pt``); of a run of ``sgdlab parle``
(Parle, Elastic-SGD, Entropy-SGD replicas), the master x̄ it ended with (``master.pt``), by
run id or ``--out`` folder (of an interrupted one, the master of its last checkpoint, by the
same or its ``checkpoints`` folder), rebuilt from the config the run store holds —
measures it on a fixed subset of its training (or test) data with :mod:`sgdlab.measure` (a
run of ``sgdlab train`` on the device it trained on, or on the CPU, with a note, where this
machine lacks it, a GPU; a sweep's run and a master on the CPU), and writes

- the scalars to the run's store (the one its folder records, or ``--store``) at the
  checkpoint's step, named ``measure/`` + the instrument
  names (``measure/hess/top_1``, ``measure/noise/trace``, ``measure/align/cos_1``,
  ``measure/sharpness/expected``, ``measure/batch/norm_test``, ...; of ``--data test``
  ``measure/test/`` + them, ``measure/test/hess/top_1``), kept apart from the series
  recorded during training (measured again at that step, a value replaces the last one),
- ``measurements.json`` (scalars and arrays: eigenvalues, spectra, SLQ density, the loss
  surface; a non-finite value is null; ``memory_budget``: the passes' budget in bytes, null
  for the device's default; ``centred``, with noise or alignment: false for ``--uncentred``;
  ``check_copies``, with hessian, noise or alignment: whether ``--check-copies`` checked their
  top-k; ``settings``: every setting the values depend on, the options of the measurements
  made, the examples' split, subset and seed, the mode, dtype and device, and the passes' fixed
  Lanczos tolerance and density probes, also in the config of a run this command creates)
  and plots (``hessian_density.png``, ``spectra.png``,
  ``alignment.png``, ``loss_surface.png``; ``curvature_history.png``, ``noise_magnitude.png`` and
  ``batch_statistics.png`` when the run recorded such series during training) to ``--out``
  (default: ``<run folder>/measure-step<step>``).

Each measurement's values are printed as it ends, under a note (wrapped at 100 columns) of
their scale and definitions (per example, not summed; which Σ; the estimates' standard errors;
sharpness's σ and ε, and which of its values is absolute or relative).

A Ctrl-C keeps the measurements finished before it: they are written as above
(``measurements.json`` names them in ``what`` and the one stopped in ``interrupted_during``),
and the message says which ``--what`` measures the rest.
"""
from __future__ import annotations

import argparse
import math
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdlab.cli._help import plain
from sgdlab.errors import (ConfigError, UserError, did_you_mean, is_seed, make_output_dir,
                           not_a_seed)
from sgdlab.report.figures import save_and_close
from sgdlab.strict_json import write_atomic

WHAT = ("hessian", "noise", "alignment", "sharpness", "surface", "batch")
DEFAULT_WHAT = "hessian,noise,alignment,sharpness"
# the options that only some measurements read: argparse dest -> (flag, the measurements that
# read it, its default); parsed as None, so that one given is told from one left out
OPTIONS = {
    "k": ("--k", ("hessian", "noise", "alignment"), 5),
    "probes": ("--probes", ("hessian", "alignment"), 100),
    "lanczos_iter": ("--lanczos-iter", ("hessian", "alignment", "surface"), None),
    "uncentred": ("--uncentred", ("noise", "alignment"), False),
    "check_copies": ("--check-copies", ("hessian", "noise", "alignment"), False),
    "sigma": ("--sigma", ("sharpness",), 0.01),
    "epsilon": ("--epsilon", ("sharpness",), 1e-3),
    "gamma": ("--gamma", ("sharpness",), 1e-4),
    "samples": ("--samples", ("sharpness",), 20),
    "memory_budget": ("--memory-budget", ("sharpness", "surface"), None),
    "directions": ("--directions", ("surface",), "random"),
    "normalization": ("--normalization", ("surface",), "filter"),
    "bias_bn": ("--bias-bn", ("surface",), "zero"),
    "extent": ("--extent", ("surface",), 1.0),
    "steps": ("--steps", ("surface",), 21),
    "bn_stats": ("--bn-stats", ("surface",), "keep"),
    "batch_size": ("--batch-size", ("batch",), None),
    "batches": ("--batches", ("batch",), 20),
    "batch_curvature": ("--batch-curvature", ("batch",), None),
}
# fixed settings of the passes, recorded with the options in measurements.json's settings
LANCZOS_TOL = 1e-4
DENSITY_PROBES, DENSITY_MAX_ITER = 5, 80     # the Hessian's SLQ density


def register(subparsers) -> None:
    from sgdlab.cli._plugins import add_plugin_option

    p = subparsers.add_parser(
        "measure", help="curvature, gradient noise, Σ–H alignment, sharpness of a stored model",
        description=plain(__doc__.split("\n\n", 1)[1]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="CHECKPOINT_OR_RUN",
                   help="a run id (or unique prefix), a run folder, or a checkpoint (of "
                        "`sgdlab train`; of `sgdlab parle`: its --out folder or master.pt; of "
                        "a sweep run: its id, for its final weights, or for the last "
                        "checkpoint of one that stopped, also that file)")
    p.add_argument("--what", default=DEFAULT_WHAT,
                   help=f"comma-separated subset of {','.join(WHAT)} (default: {DEFAULT_WHAT}; "
                        "surface: the loss on a plane through the model, steps² evaluations; "
                        "batch: mini-batch gradient tests, GSNR, noise scale, Takeuchi's "
                        "criterion)")
    p.add_argument("--data", default="train", choices=("train", "test"),
                   help="which split to measure on: train (default) or test (its scalars "
                        "stored as measure/test/..., beside the train split's measure/...)")
    p.add_argument("--subset", type=int, default=1000, metavar="N",
                   help="fixed random subset of N examples (0: all; default 1000)")
    p.add_argument("--k", type=int,
                   help="top-k eigenpairs of hessian, noise and alignment (default 5)")
    p.add_argument("--probes", type=int,
                   help="Hutchinson / Frobenius probes of hessian and alignment (default 100)")
    p.add_argument("--lanczos-iter", type=int, metavar="N",
                   help="most Lanczos iterations for the eigenvalues of hessian, alignment "
                        "and surface's --directions hessian (default min(d, max(2k + 60, 4k))); "
                        "raise it where a warning says an eigenvalue did not converge")
    p.add_argument("--uncentred", action="store_true", default=None,
                   help="noise and alignment of the uncentred second moment E[g gᵀ] = Σ + "
                        "ḡḡᵀ of the per-sample gradients (Zhu et al. eq. (6)) instead of their "
                        "covariance Σ (eq. (3), default)")
    p.add_argument("--check-copies", action="store_true", default=None,
                   help="check the top-k eigenvalues of hessian, noise and alignment for "
                        "copies of a repeated eigenvalue (or a cluster narrower than the "
                        "tolerance) that one Lanczos start vector misses: Lanczos again on "
                        "the rest of the space, about twice the products (noise: where "
                        "Lanczos, not a dense eigh, finds them)")
    p.add_argument("--sigma", type=float,
                   help="σ of the expected-sharpness perturbation (default 0.01)")
    p.add_argument("--epsilon", type=float, help="Keskar ε (default 1e-3)")
    p.add_argument("--gamma", type=float,
                   help="local-entropy variance γ (default 1e-4); sharpness/local_entropy "
                        "is −f_γ, the negative of sgdlab.measure.local_entropy's f_gamma")
    p.add_argument("--samples", type=int, help="perturbation samples (default 20)")
    p.add_argument("--memory-budget", metavar="BYTES",
                   help="bytes of activations one forward pass of sharpness and surface may "
                        "take, e.g. 2000000000, 2e9, 512MiB, 1.5GB (default: half the free "
                        "memory on CUDA, 1 GiB on CPU); a subset that exceeds it goes in "
                        "chunks")
    surf = p.add_argument_group("surface options (Li et al. 2018 loss plots; eval mode)")
    surf.add_argument("--directions", choices=("random", "hessian"),
                      help="the plane: two random directions normalised to the weights "
                           "(default) or the top-2 Hessian eigenvectors")
    surf.add_argument("--normalization", choices=("filter", "layer", "model", "none"),
                      help="random directions rescaled to the weights filter "
                      "by filter (default, Li et al.), tensor by tensor, as a whole, or not")
    surf.add_argument("--bias-bn", choices=("zero", "weights", "normalize"),
                      help="random directions of 1-D parameters (biases, batch norm): zero "
                           "(default), the weights themselves, or normalised like the rest")
    surf.add_argument("--extent", type=float,
                      help="coordinates from -EXTENT to EXTENT (default 1)")
    surf.add_argument("--steps", type=int,
                      help="grid points per direction (default 21)")
    surf.add_argument("--bn-stats", choices=("keep", "recompute"),
                      help="batch-norm running statistics at every point: the model's "
                           "(default) or recomputed from the measured examples (one batch: "
                           "exact at every layer in one pass)")
    bat = p.add_argument_group("batch options (statistics of mini-batches drawn from the "
                               "measured examples)")
    bat.add_argument("--batch-size", type=int, metavar="B",
                     help="mini-batch size (default: the run's train.batch_size)")
    bat.add_argument("--batches", type=int, metavar="R",
                     help="mini-batches averaged (default 20); CABS takes the learning rate "
                          "the checkpoint's optimizer holds (Entropy-SGD's, HJ's and heat's "
                          "inner one, the step along mini-batch gradients; random-lr-sgd's "
                          "l<α²>/<α>, the constant step with its noise; none for Adam, "
                          "AdamW or RMSprop, whose step is no lr times the gradient)")
    bat.add_argument("--batch-curvature", choices=("hessian", "ggn"),
                     help="also McCandlish et al.'s curvature-weighted noise scale B_noise "
                          "with this matrix (one quadratic form per sample)")
    p.add_argument("--train-mode", action="store_true",
                   help="measure with the model in train mode (default: eval mode)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of subset, probes and samples (default 0)")
    p.add_argument("--store", metavar="PATH", help="run store (default: the run's or "
                   "$SGDLAB_STORE or ./sgdlab-runs/runs.sqlite)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: <run folder>/measure-step<step>)")
    add_plugin_option(p, "; a run of sgdlab train imports those its config names itself, a "
                         "file given in place of a recorded file that is gone")
    p.set_defaults(func=_measure)


def _locate(target: str, store_path: str | None):
    """(config dict, checkpoint path, run_id or None, run folder or None, store): see
    :func:`sgdlab.config.locate.locate_run`."""
    from sgdlab.config.locate import locate_run

    return locate_run(target, store_path)


def _rebuild(cfg: dict, ckpt: Path, train_mode: bool = False, step: int | None = None):
    """(model with the checkpoint's weights, loss_fn, data, step, checkpoint state) of a
    stored run: a training-loop checkpoint of a run config, the final weights of a sweep run
    (``step``: that of a bare state dict), or a replica run's master. The
    run's instruments are not built (nothing here runs them). ``train_mode``: a model with
    batch norm is refused before its weights are read."""
    from sgdlab.config.run import build_from_config
    from sgdlab.train.checkpoint import load_state, load_weights

    if cfg.get("run_key") and isinstance(cfg.get("params"), dict):
        return _rebuild_sweep_run(cfg, ckpt, train_mode, step)
    if cfg.get("method") == "parle":     # (a sweep's replicas run is a sweep run's, above)
        from sgdlab.train.distributed import build_model_and_data

        model, loss_fn, data = build_model_and_data(cfg)
        _refuse_train_mode_batch_norm(model, train_mode)
        # the master after the last round (of the run, or of its last checkpoint), logged at
        # step rounds · L
        step = int(cfg["rounds"]) * int(cfg["parle"]["L"])
        if any(ckpt.parent.glob("rank*.pt")):     # a checkpoint set: the master of its round
            from sgdlab.train.replicas import load_master_checkpoint

            load_master_checkpoint(ckpt.parent, model)
            return model, loss_fn, data, step, {}
        load_state(model, load_weights(ckpt, step)["model"], ckpt, "model")
        return model, loss_fn, data, step, {}
    # without its instruments (and TensorBoard logger): an option a newer sgdlab refuses, or
    # an instrument registered only where the run trained, must not stop its model's rebuild
    # (and not a warm start's source weights: the checkpoint's replace them)
    built = build_from_config({**cfg, "measure": [],
                               "train": {**(cfg.get("train") or {}), "tensorboard": None,
                                         "device": _measured_device(cfg)}},
                              init=False)
    model = built.model
    _refuse_train_mode_batch_norm(model, train_mode)
    state = load_weights(ckpt, map_location=next(model.parameters()).device)
    load_state(model, state["model"], ckpt, "model")
    step = int(state.get("loop", {}).get("step", 0))
    return model, built.loss_fn, built.data, step, state


def _measured_device(cfg: dict) -> str:
    """The device a run of ``cfg`` is measured on: the one it trained on, else the CPU, with
    a note, where this machine lacks it (a run trained on a GPU, measured on a laptop: its
    settings record the device)."""
    import sys

    from sgdlab.config.run import missing_device

    device = str((cfg.get("train") or {}).get("device") or "cpu")
    problem = missing_device(device)
    if problem is None:
        return device
    print(f"sgdlab: note: the run trained on {device}, which this machine lacks ({problem}): "
          "measuring on cpu", file=sys.stderr, flush=True)
    return "cpu"


def _rebuild_sweep_run(cfg: dict, weights: Path, train_mode: bool, step: int | None):
    """:func:`_rebuild` for a run of an experiment's sweep (the ``train`` procedure's): its
    model and data from the run parameters the store holds, its final weights loaded
    (``weights.pt``; ``model.pt``, a bare state dict at ``step``), or the last checkpoint of
    a run stopped before its end. Of the ``replicas`` procedure's (distributed) run, the
    master: its ``master.pt`` (at ``step``, rounds · L), or of its last checkpoint set."""
    from sgdlab.experiments.procedures.train import build
    from sgdlab.store.folders import is_replica_run
    from sgdlab.train.checkpoint import load_state, load_weights

    if is_replica_run(cfg):
        # the model and data the procedure built (sgdlab.experiments.procedures.chaudhari)
        ds, model, loss_fn, _ = build(cfg["params"], int(cfg["seed"]))
        _refuse_train_mode_batch_norm(model, train_mode)
        if weights.parent.name == "checkpoints" and any(weights.parent.glob("rank*.pt")):
            from sgdlab.train.replicas import load_master_checkpoint

            load_master_checkpoint(weights.parent, model)
        else:
            load_state(model, load_weights(weights, step)["model"], weights, "model")
        return model, loss_fn, ds, int(step or 0), {}
    if cfg.get("procedure") not in ("train", "train_or_interpolate") or "between" in cfg["params"]:
        raise UserError(f"cannot rebuild the model of a run of the {cfg.get('procedure')!r} "
                        "procedure (the `train` and `replicas` procedures' runs are measured)")
    # the weights replace the initial ones: a dependency's (init_from) is not read
    ds, model, loss_fn, _ = build({**cfg["params"], "init_from": None}, int(cfg["seed"]))
    _refuse_train_mode_batch_norm(model, train_mode)
    state = load_weights(weights, step)
    load_state(model, state["model"], weights, "model")
    return model, loss_fn, ds, int(state.get("loop", {}).get("step", 0)), state


def _refuse_train_mode_batch_norm(model, train_mode: bool) -> None:
    """``--train-mode`` on a model with batch norm: a UserError, before any work."""
    from sgdlab.models.modes import first_batch_norm

    bn = first_batch_norm(model, of_model=True) if train_mode else None
    if bn is not None:
        raise UserError(f"--train-mode: {bn} would normalise by the statistics "
                        "of the measured examples, so every value would depend on which "
                        "examples share the batch (and per-sample gradients, for noise, "
                        "alignment and batch, are undefined); measure in eval mode (leave "
                        "out --train-mode)")


def _refuse_inert_options(args: argparse.Namespace, what: list[str]) -> None:
    """An option given whose measurement is not in ``what`` (``--batches 0`` without ``--what
    batch``), or a random-direction option with ``--directions hessian``: a UserError, as
    ``sgdlab landscape`` refuses another demo's options. They were ignored: a run other than
    the one asked for, said nowhere."""
    inert = [f"{flag} applies to --what {', '.join(needs[:-1])}{' or ' if needs[1:] else ''}"
             f"{needs[-1]}" for dest, (flag, needs, _) in OPTIONS.items()
             if getattr(args, dest) is not None and not set(needs) & set(what)]
    if inert:
        raise UserError(f"{'; '.join(inert)}, not measured with --what {','.join(what)}: "
                        f"{'they' if len(inert) > 1 else 'it'} would change nothing (add the "
                        "measurement to --what, or leave the option out)")
    random_only = [OPTIONS[dest][0] for dest in ("normalization", "bias_bn")
                   if getattr(args, dest) is not None]
    if (args.lanczos_iter is not None and args.directions != "hessian"
            and not {"hessian", "alignment"} & set(what)):
        raise UserError("--lanczos-iter: of --what surface it applies to --directions hessian "
                        "only (random directions take no eigenvectors)")
    if args.directions == "hessian" and random_only:
        many = len(random_only) > 1
        raise UserError(f"{', '.join(random_only)}: {'' if many else 'a '}random-direction "
                        f"option{'s' if many else ''}, but --directions hessian "
                        f"({'they apply' if many else 'it applies'} to --directions random "
                        "only)")


def _refuse_non_finite(model, loss_fn, batch, ckpt: Path, step: int,
                       memory_budget: int | None) -> None:
    """A :class:`UserError` when the model's weights, or its mean loss on the measured examples
    (eval mode, in chunks within ``memory_budget`` bytes), are not finite (a diverged run's
    checkpoint): each measurement failed on them with a traceback."""
    import torch

    from sgdlab.measure.sharpness import mean_loss

    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    what = (f"its weights {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} hold "
            "non-finite values") if bad else None
    if what is None:
        training = model.training
        model.eval()           # no dropout drawn by this check
        try:
            loss = mean_loss(model, loss_fn, batch, memory_budget=memory_budget)
        finally:
            model.train(training)
        what = None if math.isfinite(loss) else f"its loss on the measured examples is {loss}"
    if what is not None:
        raise UserError(f"{ckpt} (step {step}): {what}: there is nothing to measure (the "
                        "weights of a run that diverged?)")


def _settings(args: argparse.Namespace, what: list[str], model, batch_size: int | None
              ) -> dict[str, Any]:
    """Every setting the values measured depend on, for measurements.json's ``settings``: the
    examples (split, subset, seed), the model's mode, dtype and device, the options of the
    measurements in ``what`` (``batch_size``: the one used, ``lanczos_iter`` null for
    Lanczos' default, ``centred`` for ``--uncentred``) and the fixed settings of their passes.
    Two files measured alike hold equal ones."""
    param = next(model.parameters())
    out: dict[str, Any] = {"data": args.data, "subset": args.subset, "seed": args.seed,
                           "train_mode": bool(args.train_mode),
                           "dtype": str(param.dtype).removeprefix("torch."),
                           "device": param.device.type}
    # surface's --directions random runs no Lanczos
    lanczos_runs = (bool({"hessian", "alignment"} & set(what))
                    or ("surface" in what and args.directions == "hessian"))
    for dest, (_, needs, _) in OPTIONS.items():
        if not set(needs) & set(what):
            continue
        if dest == "lanczos_iter" and not lanczos_runs:
            continue
        if dest in ("normalization", "bias_bn") and args.directions != "random":
            continue
        if dest == "uncentred":
            out["centred"] = not args.uncentred
        else:
            out[dest] = batch_size if dest == "batch_size" else getattr(args, dest)
    if lanczos_runs:
        out["lanczos_tol"] = LANCZOS_TOL
    if "hessian" in what:
        out["density_probes"] = DENSITY_PROBES
        out["density_max_iter"] = DENSITY_MAX_ITER
    return out


def _tolist(t) -> list[float]:
    return [float(v) for v in t.reshape(-1).tolist()]


def _measure(args: argparse.Namespace) -> int:
    import torch

    from sgdlab.measure.passes import memory_budget_bytes
    from sgdlab.operators.params import num_params
    from sgdlab.store.folders import is_replica_run
    from sgdlab.store.runstore import MEASURED, MEASURED_TEST

    what = [w.strip() for w in args.what.split(",") if w.strip()]
    bad = [w for w in what if w not in WHAT]
    if bad or not what:
        hint = did_you_mean(bad[0], WHAT) if len(bad) == 1 else ""
        raise UserError(f"--what: unknown {', '.join(bad) or '(empty)'}{hint}; choose from "
                        f"{', '.join(WHAT)}")
    _refuse_inert_options(args, what)
    for dest, (_, _, default) in OPTIONS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    # the eigenpairs a Lanczos run is asked for: --k of hessian and alignment, the surface's 2
    least, at_least = 1, ">= 1"
    if "surface" in what and args.directions == "hessian":
        least, at_least = 2, ">= 2 (the surface's two directions)"
    if {"hessian", "alignment"} & set(what) and args.k >= least:
        least, at_least = args.k, f">= --k ({args.k})"
    # every option checked before the checkpoint is read: a bad --sigma was a traceback
    # from expected_sharpness after the Hessian had been measured
    bad = [f"{flag} must be {rule}, got {value:g}" for flag, value, ok, rule in (
        ("--subset", args.subset, args.subset >= 0, ">= 0"),
        ("--k", args.k, args.k >= 1, ">= 1"),
        ("--probes", args.probes, args.probes >= 1, ">= 1"),
        ("--samples", args.samples, args.samples >= 1, ">= 1"),
        ("--sigma", args.sigma, 0 <= args.sigma < math.inf, "finite and >= 0"),
        ("--epsilon", args.epsilon, 0 < args.epsilon < math.inf, "finite and > 0"),
        ("--gamma", args.gamma, 0 <= args.gamma < math.inf, "finite and >= 0"),
        ("--extent", args.extent, 0 < args.extent < math.inf, "finite and > 0"),
        ("--steps", args.steps, args.steps >= 2, ">= 2"),
        ("--lanczos-iter", args.lanczos_iter or 0,
         args.lanczos_iter is None or args.lanczos_iter >= least, at_least))
        if not ok]
    # bounded as a run config's seed: 2**64 was a traceback from torch after the checkpoint
    # had been read, named by no option
    if not is_seed(args.seed):
        bad.append(not_a_seed("--seed", args.seed))
    if bad:
        raise UserError("; ".join(bad))
    try:
        args.memory_budget = memory_budget_bytes(args.memory_budget, "--memory-budget")
    except ValueError as e:
        raise UserError(str(e)) from None

    found = _locate(args.target, args.store)
    cfg, ckpt, run_id, folder, store = found[:5]
    model, loss_fn, data, step, state = _rebuild(cfg, ckpt, args.train_mode, found.step)
    if cfg.get("run_key") and isinstance(cfg.get("params"), dict):
        # a sweep run's settings under the names --what batch reads for a run of sgdlab train
        cfg = {**cfg, "train": {"batch_size": cfg["params"].get("batch_size")},
               "optimizer": cfg["params"].get("optimizer")}
        if is_replica_run(cfg):     # (sgdlab parle's name: its batch size, its lr)
            from sgdlab.train.replicas import ParleConfig

            # the params hold the Parle settings as given, sgdlab parle's record all of them
            cfg["parle"] = {"batch_size": ParleConfig.batch_size,
                            **(cfg["params"].get("parle") or {})}
    run_id = run_id or state.get("run_id")
    model.train(args.train_mode)

    x, y = data.train if args.data == "train" else data.test
    if len(x) == 0:
        other = "train" if args.data == "test" else "test"
        raise UserError(f"--data {args.data}: the run's dataset has no {args.data} examples "
                        f"(e.g. a data file without x_{args.data}, y_{args.data}); measure the "
                        f"{other} split (--data {other})")
    if args.subset and args.subset < len(x):
        g = torch.Generator().manual_seed(args.seed)
        idx = torch.randperm(len(x), generator=g)[: args.subset].to(x.device)
        x, y = x[idx], y[idx]
    batch = (x, y)
    # bad batch options and an alignment k Σ cannot give are refused before anything is
    # measured
    batch_size = _batch_size(args, cfg, len(x)) if "batch" in what else None
    # and a step with no SGD noise (the random schedule's draw on a momentum buffer)
    batch_lr = _batch_lr(state, cfg, store, run_id, step) if "batch" in what else None
    d = num_params(model)
    if "alignment" in what and args.k > min(len(x), d):
        raise UserError(f"--k {args.k}: alignment takes the top-k eigenpairs of Σ, which has "
                        f"at most min(N, d) = {min(len(x), d)} (N = {len(x)} examples "
                        f"measured, d = {d} parameters); give --k <= {min(len(x), d)}"
                        + (" or more examples with --subset" if len(x) < d else ""))
    _refuse_non_finite(model, loss_fn, batch, ckpt, step, args.memory_budget)
    out_dir = Path(args.out) if args.out else ((folder or Path(".")) / f"measure-step{step}")
    make_output_dir(out_dir)
    print(f"sgdlab: measuring {ckpt} (step {step}) on {len(x)} {args.data} examples, "
          f"{d} parameters, "
          f"{'train' if args.train_mode else 'eval'} mode"
          f"{', Σ uncentred (E[g gᵀ] = Σ + ḡḡᵀ)' if args.uncentred else ''}",
          flush=True)

    result: dict[str, Any] = {"checkpoint": str(ckpt), "run_id": run_id, "step": step,
                              "data": args.data, "num_samples": len(x), "what": what,
                              "seed": args.seed, "memory_budget": args.memory_budget,
                              "settings": _settings(args, what, model, batch_size),
                              "scalars": {}, "arrays": {}}
    if {"noise", "alignment"} & set(what):
        result["centred"] = not args.uncentred
    if {"hessian", "noise", "alignment"} & set(what):
        result["check_copies"] = args.check_copies
    m = _Measuring(args, model, loss_fn, batch, out_dir, result)
    t0 = time.perf_counter()
    # a fixed order, not --what's: with --train-mode dropout draws on the global RNG in turn
    steps = {"hessian": lambda: _hessian(m), "noise": lambda: _noise(m),
             "alignment": lambda: _alignment(m), "sharpness": lambda: _sharpness(m),
             "batch": lambda: _batch(m, batch_size, *batch_lr),
             "surface": lambda: _surface(m)}
    from sgdlab.operators.blocking import reproducible_blocks

    done: list[str] = []
    stopped = None
    for name, measure in steps.items():
        if name not in what:
            continue
        # each measurement says when it starts and prints its values when done: on a CNN
        # they take minutes, which passed without a line
        print(f"  {name} ...", flush=True)
        before = (dict(m.scalars), dict(m.arrays), list(m.figures), list(m.notes))
        try:
            # untimed probe blocks: the values it stores must not depend on the machine's load
            with reproducible_blocks():
                measure()
        except KeyboardInterrupt as e:
            # the measurements done are kept (written below); this one's partial values not
            stopped = name
            m.scalars.clear(), m.arrays.clear()
            m.scalars.update(before[0]), m.arrays.update(before[1])
            m.figures[:], m.notes[:] = before[2], before[3]
            if not done:     # (said a bare "interrupted")
                raise KeyboardInterrupt(f"{str(e) or 'interrupted'} during {name}, the first "
                                        "measurement: nothing was measured or written; run "
                                        "the same command again") from None
            break
        done.append(name)
        # the values' scale and definitions once, above them: a bare number did not say
        # whether it was per example or summed, relative or absolute
        print(textwrap.fill(f"({conventions(name, m.args, len(x), batch_size)})", width=100,
                            initial_indent="  ", subsequent_indent="   ",
                            break_long_words=False, break_on_hyphens=False), flush=True)
        for key, v in m.scalars.items():
            if key not in before[0]:
                print(f"  {key:28s} {v:.6g}", flush=True)
    result["wall_time_s"] = time.perf_counter() - t0
    if stopped is not None:
        result["what"], result["interrupted_during"] = done, stopped
    scalars, notes, figures = m.scalars, m.notes, m.figures

    path = out_dir / "measurements.json"
    write_atomic(path, result, indent=1)
    if run_id is not None:
        try:
            store.resolve(run_id)
        except UserError:
            run_id = None
    if run_id is None:
        run_id = store.create_run({"measure": str(ckpt), "source_config": cfg,
                                   "settings": result["settings"]},
                                  name=f"measure {ckpt.name}", experiment="measure",
                                  status="finished")
        print(f"  (no run for this checkpoint in {store.path}: recorded as run {run_id})")
    # prefixed: a measurement (its own subset and options) is not the training-time series
    # measured again at the same step: the new values replace the last ones, not beside them;
    # the test split's under a prefix of their own: under the train split's names, they would
    # replace those
    prefix = MEASURED_TEST if args.data == "test" else MEASURED
    store.log_metrics(run_id, step, {f"{prefix}{k}": v for k, v in scalars.items()},
                      replace=True)
    store.add_artifact(run_id, "measurements", path.resolve())
    # the run's curvature/noise series recorded during training by the instruments, if any
    recorded = store.metrics(run_id)
    from sgdlab.report.figures.axes import CURVATURE_SERIES    # hess/, ggn/, fisher/

    history = {k: v for k, v in recorded.items()
               if k.split("/")[0] in (*CURVATURE_SERIES, "noise", "align")}
    if len(recorded.get("batch/norm_test", ())) > 1:
        from sgdlab.report.figures.curvature import batch_statistics_figure
        figures.append(_save(batch_statistics_figure(recorded, title=f"run {run_id}"),
                             out_dir / "batch_statistics.png"))
    if any(len(v) > 1 for v in history.values()):
        from sgdlab.report.figures.curvature import (
            curvature_history_figure, noise_magnitude_figure,
        )
        figures.append(_save(curvature_history_figure(history, title=f"run {run_id}"),
                             out_dir / "curvature_history.png"))
        if "noise/grad_norm" in history:
            figures.append(_save(noise_magnitude_figure(history),
                                 out_dir / "noise_magnitude.png"))
    for f in figures:
        store.add_artifact(run_id, "figure", f.resolve())
    for note in notes:
        print(f"  ({note})")
    print(f"  wrote {path} and {len(figures)} plot(s); {len(scalars)} scalars to run "
          f"{run_id} at step {step} in {store.path}")
    if stopped is not None:
        rest = [w for w in what if w not in done]
        raise KeyboardInterrupt(f"interrupted during {stopped}; what was measured before it "
                                f"({', '.join(done)}) is written above; measure the rest with "
                                f"--what {','.join(rest)}")
    return 0


def conventions(name: str, args: argparse.Namespace, n: int, batch_size: int | None) -> str:
    """The line printed above measurement ``name``'s values: the scale and definitions a
    reader needs to read them (per example or summed, of which matrix, the estimate's error,
    the options they depend on), for ``n`` examples measured with the options ``args``
    (``batch_size``: the mini-batches' of ``batch``)."""
    loss = f"L the mean loss over the {n} examples (per example, not summed)"
    sigma = ("Σ = (1/N) Σᵢ (gᵢ − ḡ)(gᵢ − ḡ)ᵀ" if not args.uncentred
             else "E[g gᵀ] = (1/N) Σᵢ gᵢ gᵢᵀ = Σ + ḡḡᵀ (uncentred)")
    per_example = (f"of the N = {n} per-example gradients gᵢ (a mini-batch gradient of B "
                   "drawn with replacement has covariance Σ/B)")
    return {
        "hessian": f"hess/: eigenvalues of the Hessian H of {loss}; trace and frobenius: "
                   f"estimates from {args.probes} probes, trace_se the trace's standard error",
        "noise": f"noise/: {sigma} {per_example}; mean_eig = trace / d",
        "alignment": f"align/: H of {loss}, {sigma} {per_example}; cos_i = |⟨u_i, v_i⟩| of "
                     "their i-th eigenvectors, *_norm_eig_i = λ_i / ‖·‖_F, residual in "
                     f"[0, {args.k}]",
        "sharpness": f"sharpness/: {loss}; expected = E L(θ + ξ) − L(θ), ξ ~ N(0, σ²I), "
                     f"σ = {args.sigma:g}, absolute, expected_se its standard error over "
                     f"{args.samples} samples; epsilon = 100 (max L(θ + ζ) − L(θ)) / "
                     f"(1 + L(θ)), |ζ_j| <= ε (|θ_j| + 1), ε = {args.epsilon:g}, relative, in "
                     f"percent (Keskar et al.); local_entropy = −f_γ, γ = {args.gamma:g}",
        "batch": f"batch/: means over {args.batches} mini-batches of B = {batch_size} of "
                 "the measured examples; trace_cov = Tr S, S the unbiased covariance of a "
                 "mini-batch's per-example gradients (the mini-batch gradient's ≈ S/B); "
                 "grad_sq = ‖ḡ‖², ḡ the mini-batch gradient; noise_scale and "
                 f"cabs_batch_size in examples; tic_* on all {n} examples",
        "surface": f"surface/: {loss}, over the {args.steps}×{args.steps} points of the "
                   f"plane (coordinates in [−{args.extent:g}, {args.extent:g}]); origin_loss "
                   "at the model",
    }[name]


@dataclass
class _Measuring:
    """What the measurements share: the options, the model and its fixed examples (``batch``),
    and what they produce: ``result`` (measurements.json: its ``scalars`` and ``arrays``),
    plots in ``out_dir`` and notes."""

    args: argparse.Namespace
    model: Any
    loss_fn: Any
    batch: tuple[Any, Any]
    out_dir: Path
    result: dict[str, Any]
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # printed under the scalars they explain
    # Σ of noise, kept for alignment (same examples, same --uncentred) when both are measured
    covariance: Any = None
    # H's top-k of hessian, kept for alignment (same examples, k, Lanczos options) when both
    # are measured: ((eigvals, eigvecs), the generator as that Lanczos run left it)
    hessian_top: Any = None

    @property
    def scalars(self) -> dict[str, float]:
        return self.result["scalars"]

    @property
    def arrays(self) -> dict[str, list[float]]:
        return self.result["arrays"]

    def gen(self):
        """A fresh generator seeded with ``--seed``: each measurement's draws do not depend on
        which others ran."""
        import torch
        return torch.Generator(device=self.batch[0].device).manual_seed(self.args.seed)


def _named(values: str):
    """Lanczos' "raise num_iter" as this command's option, with the eigenvalues it is about:
    a command-line user has no num_iter to raise."""
    from sgdlab.measure.curvature.lanczos import convergence_warnings_named

    return convergence_warnings_named(values, "raise --lanczos-iter above that")


def _top(prefix: str, first: int, last: int) -> str:
    """``hess/top_1..5`` (``hess/top_1`` where ``first`` is ``last``): the named eigenvalues."""
    return f"{prefix}/top_{first}" + (f"..{last}" if last > first else "")


def _note_fewer_eigenvalues(m: _Measuring, prefix: str, k: int, why: str) -> None:
    """Say that ``prefix``'s top-k holds only the ``k`` eigenvalues there are, where ``--k``
    asked for more (alignment refuses such a ``--k``: its residual counts k pairs)."""
    if k < m.args.k:
        m.notes.append(f"{_top(prefix, k + 1, m.args.k)} not measured (--k {m.args.k}): "
                       f"{why}; {_top(prefix, 1, k)} {'are' if k > 1 else 'is'} all there are")


def _hessian(m: _Measuring) -> None:
    from sgdlab.measure.curvature import (
        frobenius_norm, hutchinson_trace, lanczos, spectral_density,
    )
    from sgdlab.operators import HessianOperator
    from sgdlab.report.figures.curvature import spectral_density_figure

    op = HessianOperator(m.model, m.loss_fn, m.batch)
    # alignment's k (--k) was refused above min(N, d): where it is measured, k is --k
    k = min(m.args.k, op.shape[0])
    _note_fewer_eigenvalues(m, "hess", k, f"the Hessian of d = {op.shape[0]} parameters has "
                                          f"{op.shape[0]} eigenvalues")
    shared = "alignment" in m.result["what"]
    g = m.gen()
    with _named(_top("hess", 1, k) + (" and align (the Hessian's top-k)" if shared else "")):
        h_vals, h_vecs = lanczos(op, k, tol=LANCZOS_TOL, num_iter=m.args.lanczos_iter,
                                 generator=g, check_copies=m.args.check_copies)
    if shared:
        m.hessian_top = (h_vals, h_vecs), g     # Lanczos once: the costly part of both
    with _named("hess/bottom_1"):
        bottom, _ = lanczos(op, 1, which="smallest", tol=LANCZOS_TOL,
                            num_iter=m.args.lanczos_iter,
                            generator=m.gen())
    tr = hutchinson_trace(op, m.args.probes, generator=m.gen())
    fro = frobenius_norm(op, m.args.probes, generator=m.gen())
    dens = spectral_density(op, num_probes=DENSITY_PROBES, num_iter=DENSITY_MAX_ITER,
                            generator=m.gen())
    m.scalars.update({f"hess/top_{i + 1}": float(v) for i, v in enumerate(h_vals)})
    m.scalars.update({"hess/bottom_1": float(bottom[0]), "hess/trace": tr.value,
                      "hess/trace_se": tr.stderr, "hess/frobenius": fro.value})
    m.arrays.update({"hess/top": _tolist(h_vals), "hess/density_grid": _tolist(dens.grid),
                     "hess/density": _tolist(dens.density)})
    m.figures.append(_save(spectral_density_figure(dens.grid.tolist(), dens.density.tolist(),
                                                   eigenvalues=_tolist(h_vals)),
                           m.out_dir / "hessian_density.png"))


def _noise(m: _Measuring) -> None:
    from sgdlab.measure.noise import DENSE_EIG_LIMIT, gradient_covariance
    from sgdlab.report.figures.curvature import eigenspectrum_figure

    cov = gradient_covariance(m.model, m.loss_fn, m.batch, centred=not m.args.uncentred)
    if "alignment" in m.result["what"]:
        m.covariance = cov      # per-sample gradients once: the costly part of both
    k = min(m.args.k, cov.num_samples, cov.dim)
    _note_fewer_eigenvalues(m, "noise", k, f"Σ of N = {cov.num_samples} examples and d = "
                                           f"{cov.dim} parameters has at most min(N, d) = "
                                           f"{min(cov.num_samples, cov.dim)} nonzero "
                                           "eigenvalues, the rest are 0")
    s_vals, _ = cov.eigenpairs(k, check_copies=m.args.check_copies)
    m.scalars.update({"noise/trace": cov.trace(), "noise/mean_eig": cov.trace() / cov.dim})
    m.scalars.update({f"noise/top_{i + 1}": float(v) for i, v in enumerate(s_vals)})
    if min(cov.num_samples, cov.dim) <= DENSE_EIG_LIMIT:
        spec = cov.spectrum()
        m.scalars.update({"noise/rank": float(len(spec)),
                          "noise/rank_fraction": len(spec) / cov.dim})
        m.arrays["noise/spectrum"] = _tolist(spec)
    label = "D(x) = Σ" if cov.centred else "E[g gᵀ] = Σ + ḡḡᵀ"
    spectra = {label: m.arrays.get("noise/spectrum", _tolist(s_vals))}
    # the round-off each was computed with: Σ's rank threshold; Lanczos in the model's dtype
    dtypes, dims = {label: cov.dtype}, {label: cov.dim}
    if "hess/top" in m.arrays:   # the Hessian's top-k, when measured too
        spectra["Hessian (top-k)"] = m.arrays["hess/top"]
        params = [p for p in m.model.parameters() if p.requires_grad]
        dtypes["Hessian (top-k)"] = params[0].dtype
        dims["Hessian (top-k)"] = sum(p.numel() for p in params)
    m.figures.append(_save(eigenspectrum_figure(spectra, dtype=dtypes, dims=dims),
                           m.out_dir / "spectra.png"))


def _alignment(m: _Measuring) -> None:
    from sgdlab.measure.alignment import sigma_hessian_alignment
    from sgdlab.report.figures.curvature import alignment_figure

    cov, m.covariance = m.covariance, None      # its memory freed for what follows
    top, m.hessian_top = m.hessian_top, None
    # the probes draw from the generator where alignment's own Lanczos run would leave it
    pairs, g = top if top is not None else (None, m.gen())
    with _named("align (the Hessian's top-k)"):
        al = sigma_hessian_alignment(m.model, m.loss_fn, m.batch, m.args.k,
                                     num_probes=m.args.probes, tol=LANCZOS_TOL,
                                     num_iter=m.args.lanczos_iter, generator=g,
                                     centred=not m.args.uncentred,
                                     check_copies=m.args.check_copies, covariance=cov,
                                     hessian_eigenpairs=pairs)
    m.scalars.update(al.as_metrics("align"))
    m.arrays.update({"align/cosines": _tolist(al.cosines),
                     "align/hessian_normalised": _tolist(al.hessian_normalised),
                     "align/sigma_normalised": _tolist(al.sigma_normalised)})
    m.figures.append(_save(alignment_figure(_tolist(al.cosines), _tolist(al.hessian_normalised),
                                            _tolist(al.sigma_normalised), residual=al.residual,
                                            uncentred=m.args.uncentred),
                           m.out_dir / "alignment.png"))


def _sharpness(m: _Measuring) -> None:
    from sgdlab.measure.sharpness import epsilon_sharpness, expected_sharpness, local_entropy

    args = m.args
    budget = args.memory_budget
    es = expected_sharpness(m.model, m.loss_fn, m.batch, args.sigma, args.samples,
                            generator=m.gen(), memory_budget=budget)
    ke = epsilon_sharpness(m.model, m.loss_fn, m.batch, args.epsilon, generator=m.gen(),
                           memory_budget=budget)
    le = local_entropy(m.model, m.loss_fn, m.batch, args.gamma, num_samples=args.samples,
                       generator=m.gen(), memory_budget=budget)
    m.scalars.update({"sharpness/expected": es.value, "sharpness/expected_se": es.stderr,
                      "sharpness/epsilon": ke.sharpness, "sharpness/local_entropy": le.width})
    m.result["sharpness_params"] = {"sigma": args.sigma, "epsilon": args.epsilon,
                                    "gamma": args.gamma, "samples": args.samples}


def _batch(m: _Measuring, batch_size: int, lr: float | None, unrecorded: bool = False,
           adaptive: str | None = None) -> None:
    """``unrecorded``: a replica run that recorded no lr, in its record nor its own store;
    ``adaptive``: the checkpoint's optimizer, where its step is no lr times the gradient."""
    m.scalars.update(_batch_scalars(m.args, batch_size, lr, m.model, m.loss_fn, m.batch,
                                    m.gen()))
    if adaptive is not None:
        m.notes.append(f"batch/cabs_batch_size is NaN (null in measurements.json): optimizer "
                       f"{adaptive} divides each coordinate of the gradient by a running root "
                       "mean square, and CABS (Balles et al.) assumes plain SGD's step η·g; "
                       "the other statistics need no step")
    elif lr is None:
        from sgdlab.store.folders import SWEEP_REPLICA_FOLDER, SWEEP_REPLICA_STORE

        why = (f"the run recorded none up to this step (a distributed run of the `replicas` "
               f"procedure: neither its record nor its own store, "
               f"{SWEEP_REPLICA_FOLDER}/{SWEEP_REPLICA_STORE} in its artifact folder)"
               if unrecorded else "the checkpoint's is not > 0 (e.g. a schedule ending at 0)")
        m.notes.append("batch/cabs_batch_size is NaN (null in measurements.json): CABS "
                       f"scales with the learning rate, and {why}")


def _surface(m: _Measuring) -> None:
    from sgdlab.measure.surface import hessian_directions, loss_surface, random_direction
    from sgdlab.report.figures.surface import loss_surface_figure

    args = m.args
    if args.directions == "hessian":
        with _named("surface (the Hessian's top-2 directions)"):
            dirs = hessian_directions(m.model, m.loss_fn, m.batch, 2, tol=LANCZOS_TOL,
                                      num_iter=args.lanczos_iter, generator=m.gen())
    else:
        g = m.gen()
        dirs = [random_direction(m.model, normalization=args.normalization,
                                 bias_bn=args.bias_bn, generator=g) for _ in range(2)]
    surf = loss_surface(m.model, m.loss_fn, m.batch, dirs, extent=args.extent,
                        steps=args.steps, bn_stats=args.bn_stats,
                        memory_budget=args.memory_budget)
    grid = surf.train_loss
    mid = args.steps // 2
    m.scalars.update({"surface/mean_loss": sum(map(sum, grid)) / args.steps ** 2})
    if args.steps % 2:
        m.scalars["surface/origin_loss"] = grid[mid][mid]
    m.result["surface"] = {**surf.to_dict(), "directions": args.directions,
                           "normalization": args.normalization, "bias_bn": args.bias_bn}
    labels = ("v₁", "v₂") if args.directions == "hessian" else ("d₁", "d₂")
    m.figures.append(_save(loss_surface_figure(surf, labels=labels),
                           m.out_dir / "loss_surface.png"))


def _batch_size(args, cfg: dict, n: int) -> int:
    """``--batch-size`` (default: the run's ``train.batch_size``), checked against the ``n``
    examples measured, and ``--batches``."""
    b = args.batch_size if args.batch_size is not None else (
        cfg.get("parle") or cfg.get("train") or {}).get("batch_size")
    key = "parle" if "parle" in cfg else "train"
    if not isinstance(b, int) or isinstance(b, bool):
        raise UserError(f"--what batch: give --batch-size B, 2 <= B <= {n} (the examples "
                        f"measured; the run's {key}.batch_size is {b!r}, not one number)")
    if b > n >= 2:
        given = ("--batch-size" if args.batch_size is not None else
                 f"the run's {key}.batch_size (--batch-size left out)")
        raise UserError(f"--what batch: {given} is {b}, more than the {n} examples measured: "
                        f"give --batch-size B <= {n}, or measure more examples (--subset N; "
                        "0: all)")
    if not 2 <= b <= n or args.batches < 1:
        raise UserError(f"--batch-size must be in [2, {n}] (the examples measured) and "
                        f"--batches >= 1, got {b} and {args.batches}")
    return b


def _recorded_lr(store, run_id: str | None, step: int | None = None) -> list:
    """The ``lr`` rows [(step, lr)] the store holds for ``run_id`` up to ``step`` (all without
    one: an interrupted run has logged the rounds past its last checkpoint); none without a
    run id."""
    rows = (store.metrics(run_id, "lr").get("lr") or []) if run_id is not None else []
    return _up_to(rows, step)


def _up_to(rows: list, step: int | None) -> list:
    """The rows [(step, value)] at or before ``step`` (all without one)."""
    return [r for r in rows if step is None or r[0] <= step]


def _sweep_replica_lr(store, cfg: dict, step: int | None) -> list:
    """The ``lr`` rows [(step, lr)] up to ``step`` (all without one) that a distributed run of
    an experiment's ``replicas`` procedure holds in its own store, ``parle/runs.sqlite`` in its
    artifact folder, where its rank 0 records them until the run ends (a stopped run's are
    only there); none for another run, or without that store. A store that cannot be read
    (no run store, damaged) gives none with a warning: the measurements taken before CABS
    were lost with the error."""
    import sqlite3
    import sys

    from sgdlab.store import RunStore
    from sgdlab.store.folders import SWEEP_REPLICA_STORE, sweep_replica_checkpoints

    path = getattr(store, "path", None)
    if path is None or not cfg.get("run_key"):
        return []
    own = sweep_replica_checkpoints(path, cfg["run_key"]).parent / SWEEP_REPLICA_STORE
    if not own.is_file():
        return []
    rows: list = []
    try:
        private = RunStore(own, readonly=True)   # read only: its resume goes on writing it
        try:
            for run in private.list_runs():      # one run (rank 0's); the newest rows last
                rows = (private.metrics(run["id"], "lr").get("lr") or []) or rows
        finally:
            private.close()
    except (UserError, sqlite3.Error) as e:
        print(f"sgdlab: warning: cannot read the run's lr from its own store {own}: {e}",
              file=sys.stderr, flush=True)
        return []
    return _up_to(rows, step)


def _checkpoint_lr(state: dict, cfg: dict, store, run_id: str | None,
                   step: int | None = None) -> float | None:
    """The step size that multiplies mini-batch gradients at the checkpoint's next step (the
    optimizer's, which a schedule has moved; ``switch``'s: the one that takes that step),
    else the config's: for Entropy-SGD and the HJ / heat smoothers the inner step η_y
    (``inner_lr``), not the outer η′ that moves x towards the inner loop's average, for
    ``random-lr-sgd`` l⟨α²⟩/⟨α⟩, under the ``random`` schedule stepped each step η(1 + w²/3),
    not the draw saved in ``lr`` (:func:`sgdlab.optim.gradient_step_size`, given the
    checkpoint's schedule state as the training instruments are given the schedule; its
    ConfigError with momentum under that schedule is raised); a replica run's: the last one
    it recorded (after its milestones) up to the checkpoint's ``step``, of a stopped
    distributed run of the ``replicas`` procedure, whose record holds none, the last one its
    own store holds up to it; None when there is none > 0, and for Adam, AdamW or RMSprop,
    whose step is no lr times the gradient."""
    return _batch_lr(state, cfg, store, run_id, step)[0]


def _batch_lr(state: dict, cfg: dict, store, run_id: str | None, step: int | None = None
              ) -> tuple[float | None, bool, str | None]:
    """:func:`_checkpoint_lr`, whether the run is a replica run that recorded no lr up to
    ``step``, in its record nor its own store, and the adaptive optimizer that takes the
    next step, if one does (:func:`sgdlab.optim.preconditioned_optimizer`): the notes
    :func:`_batch` writes; read once."""
    from sgdlab.store.folders import is_replica_run

    if is_replica_run(cfg):
        own = _recorded_lr(store, run_id, step)
        recorded = own or _sweep_replica_lr(store, cfg, step)
        lr = recorded[-1][1] if recorded else None
        return ((float(lr) if isinstance(lr, (int, float)) and lr > 0 else None),
                not recorded, None)
    from sgdlab.optim import SwitchOptimizer, gradient_step_size, preconditioned_optimizer

    saved = state.get("optimizer") or {}
    if isinstance(saved.get("switch"), dict):   # the optimizer taking the next step
        saved = SwitchOptimizer.active_state(saved) or {}
    groups = saved.get("param_groups") or [{}]
    group = groups[0] if "lr" in groups[0] else (cfg.get("optimizer") or {})
    adaptive = preconditioned_optimizer(group)
    if adaptive is not None:
        return None, False, adaptive      # no η: CABS is left out, with a note
    # the schedule as the training instruments are given it (its state names a random one)
    every = (state.get("settings") or {}).get("schedule_every", "step")
    try:
        lr = gradient_step_size(group, state.get("schedule"), every)
    except ConfigError:
        raise       # named: no step of SGD's noise (momentum under the random draw, a bad lr)
    except (KeyError, TypeError, ValueError):
        return None, False, None
    return (lr if lr > 0 else None), False, None


def _batch_scalars(args, b: int, lr: float | None, model, loss_fn, data,
                   generator) -> dict[str, float]:
    """Means of :func:`~sgdlab.measure.batch_statistics` over ``--batches`` mini-batches of
    size ``b`` drawn from ``data`` (each without repeats; CABS with the learning rate ``lr``),
    except the noise scale: McCandlish et al.'s ratio of the averaged estimates Tr S and |G|²,
    as they recommend, and Takeuchi's criterion on all of ``data`` with the exact GGN diagonal
    (``batch/tic_...``, the names the ``batch_statistics`` instrument records). A statistic
    undefined (NaN) on some batches is the mean of those that define it."""
    import torch

    from sgdlab.measure.batch_statistics import batch_statistics, takeuchi_information

    x, y = data
    rows = []
    for _ in range(args.batches):
        idx = torch.randperm(len(x), generator=generator, device=generator.device)[:b]
        idx = idx.to(x.device)
        rows.append(batch_statistics(model, loss_fn, (x[idx], y[idx]), lr=lr,
                                     curvature=args.batch_curvature).as_metrics())
    out = {k: float(torch.tensor([r[k] for r in rows], dtype=torch.float64).nanmean())
           for k in rows[0]}
    # the mean of per-batch ratios is dominated by batches whose |G|² estimate is near 0
    for ratio, num, den in (("noise_scale", "trace_cov", "grad_sq_unbiased"),
                            ("noise_scale_curvature", "trace_h_cov", "grad_h_grad_unbiased")):
        if f"batch/{num}" in out:
            d = out[f"batch/{den}"]
            out[f"batch/{ratio}"] = out[f"batch/{num}"] / d if d != 0 else math.nan
    tic = takeuchi_information(model, loss_fn, data, curvature="ggn")
    out["batch/tic_diagonal"], out["batch/tic_trace"] = tic.diagonal, tic.trace
    return out


def _save(fig, path: Path) -> Path:
    return save_and_close(fig, path, dpi=110)
