"""Procedures and analyses for Chaudhari's thesis ("A picture of the energy landscape of deep
neural networks", 2018): replica methods (Ch. 5), Hessian spectra (§3.3.1, Figs. 3.1, 3.4),
diffusion spectra and rank (§6.3.2, Figs. 6.1-6.2), trajectory spectra (§6.3.3, Fig. 6.3),
Trivialized-SGD comparisons (§2.4.3, Fig. 2.3, Table 2.1)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sgdlab.errors import ConfigError, check_keys
from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.procedures import (ClaimNames, Procedure, RunOutput, StoredRun,
                                           register_analysis, register_procedure)
from sgdlab.experiments.procedures.common import (CLAIM_OPTIONS, by_group, check_claims, finite,
                                                  group_colours, run_groups, seeds_named, stat,
                                                  x_axis)
from sgdlab.experiments.procedures.generic import (COMPARE_OPTIONS, compare_groups,
                                                   compare_groups_names)
from sgdlab.experiments.spec import cited, paper_ref
from sgdlab.report.tables import Table, mean_std
from sgdlab.store.folders import SWEEP_REPLICA_FOLDER, SWEEP_REPLICA_STORE


REPLICA_MODES = ("inprocess", "distributed")
DISTRIBUTED_LOG = "parle.log"      # what its launcher and replicas print


@register_procedure("replicas")
class ReplicasProcedure(Procedure):
    """Parle / Elastic-SGD / Entropy-SGD / SGD over n replicas via ``sgdlab.train.replicas``.
    Params: ``dataset``, ``model``, ``loss``, ``dtype``, ``data_seed`` (as in ``train``),
    ``parle`` (a ``ParleConfig`` mapping; ``seed`` is the run seed), the length as ``epochs``
    (effective epochs per replica) or ``grad_evals`` (gradient evaluations per replica, i.e.
    equal wall-clock time with one replica per device), ``eval_every`` (rounds) or
    ``eval_every_epochs`` (epochs of B rounds: :func:`eval_rounds`), ``eval_subset``, and
    ``mode``: ``inprocess`` (the default: the replicas stepped in turn in
    the sweep's worker) or ``distributed`` (one process per replica, launched as ``sgdlab
    parle --mode distributed`` launches them: :func:`run_distributed`). A run without
    ``mode`` keeps the key it had before the parameter existed."""

    allowed = {"dataset", "data_seed", "model", "loss", "dtype", "parle", "epochs",
               "grad_evals", "eval_every", "eval_every_epochs", "eval_subset", "mode"}
    required = {"dataset", "model", "parle"}
    numbers = {"epochs": "number>0", "grad_evals": "int>0", "eval_every": "int>0|null",
               "eval_every_epochs": "int>0|null", "eval_subset": "int>0|null"}

    def validate(self, params, where):
        super().validate(params, where)
        from sgdlab.experiments.procedures.train import _check_named
        from sgdlab.train.replicas import ParleConfig

        _check_named({k: params[k] for k in ("dataset", "model")}, where)
        if ("epochs" in params) == ("grad_evals" in params):
            raise ConfigError(f"{where}: give exactly one of 'epochs' or 'grad_evals'")
        if params.get("eval_every") is not None and params.get("eval_every_epochs") is not None:
            raise ConfigError(f"{where}: give at most one of 'eval_every' (rounds) or "
                              "'eval_every_epochs'")
        if params.get("mode", "inprocess") not in REPLICA_MODES:
            raise ConfigError(f"{where}: mode must be one of {', '.join(REPLICA_MODES)}, got "
                              f"{params['mode']!r}")
        # an unknown key named by its path in the run, not by "parle: parle.KEY"
        if isinstance(params["parle"], dict):
            check_keys(f"{where}: parle", params["parle"], ParleConfig.field_names())
        try:
            ParleConfig.from_dict(dict(params["parle"]))
        except ConfigError as e:
            raise ConfigError(f"{where}: parle: {e}") from None

    def resumes_from(self, folder, params):
        """A distributed run's checkpoint set (``sgdlab parle --resume`` continues it)."""
        return params.get("mode") == "distributed" and _has_checkpoints(Path(folder))

    def resume_folders(self, folder, params):
        """The checkpoint set: each replica's state and the master's, with their optimizers'
        (the weights the run keeps are its ``master.pt``)."""
        from sgdlab.train.distributed import checkpoint_folder

        return ([checkpoint_folder(Path(folder) / SWEEP_REPLICA_FOLDER)]
                if params.get("mode") == "distributed" else [])

    def planned_steps(self, params):
        """Inner steps per replica, rounds x L (the step its metrics are logged at), with the
        rounds :func:`~sgdlab.train.replicas.train_replicas` makes of ``grad_evals``, or of
        ``epochs`` over the whole training set when its size is known (on split data a
        replica's part is drawn: not counted)."""
        from sgdlab.experiments.procedures.train import train_examples
        from sgdlab.train.replicas import ParleConfig, replica_rounds

        cfg = ParleConfig.from_dict(dict(params["parle"]))
        if "grad_evals" in params:
            return replica_rounds(cfg, None, grad_evals=int(params["grad_evals"])) * cfg.L
        n = train_examples(params["dataset"])
        if n is None or cfg.shard:
            return None
        return replica_rounds(cfg, n, epochs=float(params["epochs"])) * cfg.L

    def run(self, run, ctx) -> RunOutput:
        from sgdlab.experiments.procedures.train import build
        from sgdlab.train.replicas import ParleConfig, train_replicas

        p = run.params
        if p.get("mode", "inprocess") == "distributed":
            return run_distributed(run, ctx)
        ds, model, loss_fn, _ = build(p, run.seed, ctx)
        cfg = ParleConfig.from_dict({**p["parle"], "seed": run.seed})
        length = ({"epochs": float(p["epochs"])} if "epochs" in p
                  else {"grad_evals": int(p["grad_evals"])})
        with current_gpu(ctx.device):
            res = train_replicas(model, loss_fn, ds, cfg, **length, mode="inprocess",
                                 eval_every=eval_rounds(p, len(ds.x_train)),
                                 eval_subset=p.get("eval_subset"), store=ctx.store,
                                 run_id=ctx.run_id, device=ctx.device, complete=False)
        return _replica_output(res.final, res.status, res.message, cfg.replicas)


def eval_rounds(params: dict[str, Any], n_train: int) -> int | None:
    """The rounds between a ``replicas`` run's evaluations: ``eval_every``, or
    ``eval_every_epochs`` epochs of B = ⌈N/b⌉ rounds, N the whole training set and b the
    batch size (§5.3.2's "B is the number of mini-batches in the global dataset", the epoch of
    the lr milestones: an SGD epoch at L = 1, a Parle epoch of L·B gradient evaluations)."""
    epochs = params.get("eval_every_epochs")
    if epochs is None:
        return params.get("eval_every")
    from sgdlab.train.loop import steps_per_epoch
    from sgdlab.train.replicas import ParleConfig

    batch = ParleConfig.from_dict(dict(params["parle"])).batch_size
    return int(epochs) * steps_per_epoch(n_train, batch)


def _replica_output(final: dict[str, Any], status: str, message: str | None,
                    replicas: int) -> RunOutput:
    """A replica run's summary: the final master metrics and its length (``final`` holds
    rounds, grad_evals and effective_epochs), with its replica count."""
    return RunOutput(summary={**final, "replicas": replicas}, status=status, message=message)


def replica_run_config(params: dict[str, Any], seed: int, device: str = "cpu"
                       ) -> dict[str, Any]:
    """The run config of ``sgdlab parle`` (:func:`sgdlab.train.distributed.build_run`) that
    trains what the ``replicas`` procedure trains for ``params`` and ``seed``: the same data
    (``load_dataset(name, seed=data_seed, **options)``), initial weights (``seed``), Parle
    config (its ``seed`` the run seed), length and evaluations. No ``store``: the procedure
    records the run itself. ``device``: any cuda device places replica r on cuda:r (its local
    rank) of the GPUs the launcher sees, which :func:`replica_gpus` restricts to the run's."""
    if params.get("eval_every_epochs") is not None:
        raise ConfigError("eval_every_epochs counts the training set's mini-batches: give "
                          "the rounds it makes (eval_rounds) as eval_every")
    dataset = dict(params["dataset"])
    cfg: dict[str, Any] = {
        # a data file (its path and sha256) as a replica config's `data: {file: PATH}`
        "data": dataset if "file" in dataset else {
            "name": dataset.pop("name"), "seed": int(params.get("data_seed", 0)), **dataset},
        "model": dict(params["model"]), "parle": {**params["parle"], "seed": seed},
        "seed": seed, "dtype": params.get("dtype", "float32"),
        "device": "cuda" if str(device).startswith("cuda") else "cpu"}
    if "epochs" in params:
        cfg["epochs"] = float(params["epochs"])
    else:
        cfg["grad_evals"] = int(params["grad_evals"])
    for k in ("loss", "eval_every", "eval_subset"):
        if params.get(k) is not None:
            cfg[k] = params[k]
    return cfg


def distributed_command(config: str | Path, replicas: int, out: str | Path, device: str
                        ) -> list[str]:
    """The ``sgdlab parle`` command that trains ``config`` with one process per replica
    (torchrun on this machine): gloo on CPU, nccl (``auto``) with CUDA."""
    backend = "auto" if str(device).startswith("cuda") else "gloo"
    return [sys.executable, "-m", "sgdlab", "parle", str(config), "--mode", "distributed",
            "--replicas", str(replicas), "--out", str(out), "--backend", backend]


def current_gpu(device: str):
    """``torch.cuda.device(K)`` for a run on ``cuda:K`` (a null context otherwise): what torch
    puts on the current GPU while the run trains goes to the run's GPU, not to GPU 0."""
    import contextlib

    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None:
        return torch.cuda.device(dev.index)
    return contextlib.nullcontext()


def replica_gpus(device: str, replicas: int) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` that the launcher of a distributed run on ``device`` gets,
    so that local rank r, which takes ``cuda:r``, is the r-th GPU assigned to the run: for
    ``cuda:K``, GPU K of those this process sees (its entry of this process's
    ``CUDA_VISIBLE_DEVICES``, or K); None, the launcher seeing what this process sees, for the
    CPU and for ``cuda`` (the GPUs this process sees are the run's: a Ray task given G GPUs
    sees those G). A run given fewer GPUs than it has replicas is refused (``UserError``),
    before the launcher starts."""
    import torch

    from sgdlab.errors import UserError
    from sgdlab.train.distributed import check_replica_gpus, visible_gpus

    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    count, said = visible_gpus()
    ways = "fewer replicas, or mode: inprocess (the replicas stepped in turn on one GPU)"
    if dev.index is None:
        check_replica_gpus(replicas, device, f"give the run {replicas} GPUs (--backend ray "
                           f"--gpus-per-run {replicas}), {ways}", (count, said))
        return None
    if dev.index >= count:
        raise UserError(f"device {device} names GPU {dev.index}, but {said}")
    check_replica_gpus(replicas, device, f"give it {replicas} GPUs (--device cuda: those this "
                       f"process sees; --backend ray --gpus-per-run {replicas}), {ways}",
                       (1, f"it gives the run one GPU, GPU {dev.index} of those this process "
                           "sees"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    # (CUDA numbers the GPUs it sees in the variable's order, up to its first invalid entry)
    return visible.split(",")[dev.index].strip() if visible is not None else str(dev.index)


def _has_checkpoints(art: Path) -> bool:
    """Whether a distributed run in artifact folder ``art`` has written a checkpoint set."""
    from sgdlab.train.distributed import has_checkpoint

    return has_checkpoint(art / SWEEP_REPLICA_FOLDER)


def _start(cmd: list[str], **kw: Any) -> subprocess.Popen:
    """The launcher's process (a test's stand-in replaces it)."""
    return subprocess.Popen(cmd, **kw)


def run_distributed(run, ctx) -> RunOutput:
    """A ``replicas`` run with one process per replica: its run config
    (:func:`replica_run_config`) written to the run's artifact folder, trained there by
    ``sgdlab parle --mode distributed`` (torchrun; a crashed replica stops the others and
    fails the run), whose ``result.json`` gives the summary and the metric rows, recorded
    under the sweep's run id as the in-process mode records them. An earlier attempt's
    checkpoint set there is continued (``--resume``). On a GPU, the launcher sees only the
    run's GPUs (:func:`replica_gpus`)."""
    from sgdlab.store.folders import REPLICA_RESULT
    from sgdlab.train.distributed import die_with_parent
    from sgdlab.train.replicas import ParleConfig

    p = run.params
    n = ParleConfig.from_dict({**p["parle"], "seed": run.seed}).replicas
    if p.get("eval_every_epochs") is not None:      # rounds, counted on the training set
        from sgdlab.experiments.procedures.train import load_data

        rounds = eval_rounds(p, len(load_data(p).x_train))
        p = {**{k: v for k, v in p.items() if k != "eval_every_epochs"}, "eval_every": rounds}
    # the run's GPUs: refused here, before its folder is touched, when fewer than n
    gpus = replica_gpus(ctx.device, n)
    art = Path(ctx.artifact_dir)
    art.mkdir(parents=True, exist_ok=True)
    config = art / "parle-config.json"
    out = art / SWEEP_REPLICA_FOLDER
    # an earlier attempt's checkpoint set is continued (the sweep keeps the folder for it),
    # anything else it left removed
    resume = _has_checkpoints(art)
    if out.exists() and not resume:
        shutil.rmtree(out)
    out.mkdir(exist_ok=True)
    # rank 0 records into a store of its own, whose rows are then copied: the history in
    # result.json is strict JSON, where inf (γ = ∞ of Elastic-SGD) and NaN are both null
    store = out / SWEEP_REPLICA_STORE
    config.write_text(json.dumps({**replica_run_config(p, run.seed, ctx.device),
                                  "store": str(store)}, indent=1))
    # the child imports this process's sgdlab, wherever it was imported from
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root] + [q for q in os.environ.get("PYTHONPATH", "").split(os.pathsep) if q])}
    if gpus is not None:        # local rank r on the run's r-th GPU, not on this machine's
        env["CUDA_VISIBLE_DEVICES"] = gpus
    log = art / DISTRIBUTED_LOG
    cmd = distributed_command(config, n, out, ctx.device) + (["--resume"] if resume else [])
    with open(log, "w") as f:
        # the launcher dies with this worker (and torchrun and the replicas with it)
        proc = _start(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                      preexec_fn=die_with_parent if os.name == "posix" else None)
        try:
            code = proc.wait()
        except BaseException:
            proc.terminate()          # sgdlab parle stops torchrun and the replicas
            proc.wait()
            raise
    result = out / REPLICA_RESULT
    res = json.loads(result.read_text()) if result.is_file() else None
    if res is None or res.get("status") not in ("finished", "diverged"):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"the distributed run of {n} replica processes failed (sgdlab parle "
                           f"exit status {code}); the end of {log}:\n{tail}")
    from sgdlab.store import RunStore

    metrics = RunStore(store).metrics(res["run_id"])
    ctx.store.log_many(ctx.run_id, [(name, int(step), float(value))
                                    for name, points in metrics.items()
                                    for step, value in points])
    ctx.store.add_artifact(ctx.run_id, "model", str((out / "master.pt").resolve()))
    # (a non-finite final value, as of a diverged run, is null in strict JSON)
    final = {k: float("nan") if v is None else v for k, v in res["final"].items()}
    return _replica_output(final, res["status"], res.get("message"), n)


# --- Hessian eigenspectrum at the end of training (thesis §3.3.1) ---------------------------
# which eigenvalues count as "negative" for Fig. 3.4's "very small fraction of directions have
# negative curvature" (line 1071): the thesis names no bar (reading ``negative`` of the entry)
NEGATIVE_BARS = ("float32-round-off", "dtype-round-off", "beyond-peak")


def _negative_bar(ev: np.ndarray, thr: float, *, eigenvalues: bool, dtype: str,
                  negative: str) -> float:
    """The bar b of a spectrum's negative share (λ < −b). ``float32-round-off``: numpy's rank
    tolerance max |λ|·d·eps32 for the eigenvalues of a Hessian, max |λ|·eps32 for entries each
    computed on its own (a Fisher diagonal's, ``eigenvalues=False``: no eigensolver);
    ``dtype-round-off``: the same with the eps of ``dtype``, the dtype the spectrum was computed
    in; ``beyond-peak``: ``thr``, the figure's clipped peak at zero (|λ| ≤ thr)."""
    if negative == "beyond-peak":
        return float(thr)
    eps = np.finfo(np.float32 if negative == "float32-round-off" else np.dtype(dtype)).eps
    return float(np.abs(ev).max()) * (ev.size if eigenvalues else 1) * float(eps)


def _spectrum_facts(ev: np.ndarray, thr: float, *, eigenvalues: bool = True,
                    dtype: str = "float32", negative: str = "float32-round-off"
                    ) -> dict[str, float]:
    """Fractions of a spectrum: near zero (|λ| ≤ thr), negative beyond the bar of the reading
    ``negative`` (:func:`_negative_bar`), and the tail sizes λ_max, |λ_min|. ``dtype`` is the
    dtype the spectrum was computed in (:func:`_run_dtype`), not the float64 of the stored list
    the measurement cast it to."""
    bar = _negative_bar(ev, thr, eigenvalues=eigenvalues, dtype=dtype, negative=negative)
    return {"near_zero": float(np.mean(np.abs(ev) <= thr)), "lambda_max": float(ev.max()),
            "lambda_min": float(ev.min()), "negative": float(np.mean(ev < -bar))}


def _negative_bar_text(negative: str, thr: float, *, eigenvalues: bool, dtype: str) -> str:
    """The words a conclusion names the bar of its negative share with."""
    d = "·d" if eigenvalues else ""
    if negative == "beyond-peak":
        return f"beyond the figure's peak at zero (λ < −{thr:g})"
    if negative == "float32-round-off":
        return f"beyond float32 round-off (λ < −max |λ|{d}·eps32)"
    bits = np.finfo(np.dtype(dtype)).bits
    return f"beyond the round-off of the run's {dtype} (λ < −max |λ|{d}·eps{bits})"


def _run_dtype(r: StoredRun) -> str:
    """The dtype a run computed its spectrum in: its ``dtype`` parameter, float32 when absent
    (train.py's default)."""
    return r.params.get("dtype") or "float32"


def _fisher_reading(r: StoredRun) -> str:
    """The ``fisher_diagonal`` measurement's reading in a run's parameters, with
    ``-uncorrected`` for Adam's moments without bias correction."""
    for m in r.params.get("final") or []:
        if m.get("kind") == "fisher_diagonal":
            reading = m.get("reading", "per-sample")
            if reading == "adam-moments" and m.get("bias_correction", True) is False:
                reading += "-uncorrected"
            return reading
    return "per-sample"


@register_analysis("chaudhari_hessian_spectrum", options={
    "near_zero": "dict", "allowance": "number>=0", "tail_ratio": "number>0",
    "negative_fraction_below": "number>=0",
    "negative_bar": f"one of {', '.join(NEGATIVE_BARS)}"})
def hessian_spectrum(spec, runs: list[StoredRun]) -> Analysis:
    """Thesis §3.3.1, Figs. 3.1 and 3.4: at the end of training most Hessian eigenvalues are
    near zero (|λ| ≤ the figure's threshold: the fraction the thesis reports, less
    ``allowance``), the right tail is much longer than the left (λ_max ≥ ``tail_ratio``·|λ_min|)
    and a small fraction (≤ ``negative_fraction_below``) of directions has negative curvature
    (Fig. 3.4's caption, line 1071), counted below −b for the bar b that ``negative_bar`` names
    (:data:`NEGATIVE_BARS`, :func:`_negative_bar`; the thesis names none): float32 round-off
    (the default), the round-off of the run's own dtype, or the figure's clipped peak at zero.
    ``near_zero``: {run group: [threshold, fraction the thesis reports]}.

    A group whose runs recorded a ``fisher_diagonal`` (Fig. 3.4c, allcnn) is read the same way
    with the diagonal's entries for eigenvalues; with the ``per-sample`` reading (a variance:
    no negative entries) the two claims on the negative side are reported, not tested."""
    from sgdlab.report.figures.charts import histogram
    from sgdlab.report.figures.curvature import eigenspectrum_figure, signed_log_histogram_figure

    o = spec.options
    near = {g: (float(t), float(f)) for g, (t, f) in (o.get("near_zero") or {}).items()}
    allow = float(o.get("allowance", 0.1))
    ratio = float(o.get("tail_ratio", 10.0))
    neg_max = float(o.get("negative_fraction_below", 0.1))
    bar = o.get("negative_bar", "float32-round-off")
    groups = by_group(runs, key=lambda r: r.group)
    rows, concl, spectra, fisher, clips = [], [], {}, {}, []
    dtypes = {}         # the dtype each Hessian spectrum was computed in (train.py's default)
    claims = (f"a large fraction of the eigenvalues is near zero (at least the thesis' "
              f"fraction less {allow:g})",
              f"the right (positive) tail is much longer than the left (λ_max ≥ {ratio:g} "
              "|λ_min|)",
              f"the end point is a saddle: a small fraction (0 < share ≤ {neg_max:g}) of "
              "directions has negative curvature")
    for g, rs in groups.items():
        thr, paper = near.get(g, (1e-4, float("nan")))
        is_fisher = any(r.data.get("fisher_diagonal") for r in rs)
        key = "fisher_diagonal" if is_fisher else "hessian_eigenvalues"
        what, items = (("Fisher diagonal", "entries") if is_fisher
                       else ("Hessian spectrum", "eigenvalues"))
        recorded = [r for r in rs if r.data.get(key)]
        spectra_g = [np.asarray(r.data[key], float) for r in recorded]
        why = (f"no {what} was recorded" if not spectra_g else
               f"a recorded {what} holds non-finite {items}"
               if not all(np.isfinite(e).all() for e in spectra_g) else None)
        if why:             # each claim stays, undecided (not dropped, not a disagreement)
            concl += [Conclusion(f"{g}: {why}, so the claim cannot be checked",
                                 agrees_with_paper=None, claim=c) for c in claims]
            continue
        facts = [_spectrum_facts(e, thr, eigenvalues=not is_fisher, dtype=_run_dtype(r),
                                 negative=bar) for e, r in zip(spectra_g, recorded)]
        # the first seed that recorded one (a diverged seed records none): its reading, size
        # and spectrum stand for the group's
        r0 = recorded[0]
        dtype0 = _run_dtype(r0)
        f = {k: float(np.mean([x[k] for x in facts])) for k in facts[0]}
        if is_fisher:
            reading = _fisher_reading(r0)
            d = int(r0.summary.get("fisher_dim", 0))
            name = f"{g} (Fisher diagonal, {reading})"
            n = len(spectra_g)
            entries = (f"{d} Fisher-diagonal entries ({reading}; mean over {n} "
                       f"run{'s' if n > 1 else ''})")
            fisher[name] = np.concatenate(spectra_g)
            clips.append(thr)
        else:
            reading, d, name = None, int(r0.summary.get("hessian_dim", 0)), g
            entries = f"{d} eigenvalues"
        acc, _, n_acc = stat(rs, "test_acc")
        rows.append([name, d, thr, f["near_zero"], paper, f["lambda_max"], f["lambda_min"],
                     f["negative"], acc if n_acc else None])
        spectra[name] = r0.data[key]
        if not is_fisher:
            dtypes[name] = dtype0
        concl.append(Conclusion(
            f"{g}: {f['near_zero']:.1%} of the {entries} have |λ| ≤ {thr:g} (the thesis: "
            f"{paper:.0%})",
            agrees_with_paper=(f["near_zero"] >= paper - allow) if np.isfinite(paper) else None,
            claim=claims[0],
            evidence={"near_zero_fraction": f["near_zero"], "threshold": thr}))
        lmin = abs(min(f["lambda_min"], 0.0))
        tails = (f"{g}: λ_max = {f['lambda_max']:.3g}, λ_min = {f['lambda_min']:.3g} "
                 f"(right tail {f['lambda_max'] / lmin if lmin else float('inf'):.3g} times "
                 "the left)")
        beyond = _negative_bar_text(bar, thr, eigenvalues=not is_fisher, dtype=dtype0)
        negative = f"{g}: {f['negative']:.2%} of the {entries} are negative {beyond}"
        if reading == "per-sample":     # a variance: its negative side is empty by definition
            concl.append(Conclusion(f"{g}: λ_max = {f['lambda_max']:.3g}, λ_min = "
                                    f"{f['lambda_min']:.3g}: a variance has no negative "
                                    "entries"))
            concl.append(Conclusion(negative))
            continue
        concl.append(Conclusion(tails, agrees_with_paper=f["lambda_max"] >= ratio * lmin,
                                claim=claims[1]))
        concl.append(Conclusion(negative, agrees_with_paper=0 < f["negative"] <= neg_max,
                                claim=claims[2]))
    table = Table("hessian_spectrum", ["run", "d", "threshold", "fraction |λ| ≤ threshold",
                                       "thesis' fraction", "λ_max", "λ_min",
                                       "fraction negative", "test accuracy"], rows,
                  caption="Means over each run group's seeds; the figures show the spectrum of "
                          "its first seed that recorded one.")
    ref = cited(spec.paper)
    f1 = eigenspectrum_figure(spectra, title=f"{ref}Hessian eigenvalues (and Fisher "
                                             "diagonals) at the end of training", dtype=dtypes)
    f2 = histogram({k: v for k, v in spectra.items() if k not in fisher},
                   xlabel="eigenvalue λ", title=f"{ref}Hessian eigenspectrum (log counts)")
    f3 = signed_log_histogram_figure(
        fisher, clip=min(clips, default=1e-5),
        title=f"{ref}Fisher diagonal at the end of training, negative and positive entries "
              "(runs pooled)")
    return Analysis(tables=[table], figures=[("eigenspectrum", f1), ("eigen_histogram", f2),
                                             ("fisher_histogram", f3)],
                    conclusions=concl)


# --- diffusion matrix spectrum and rank (thesis §6.3.2) --------------------------------------
def _split_instant(label: str) -> tuple[str, float]:
    """``"small-lenet@40"`` → ("small-lenet", 40.0); a label without ``@`` is at 100%."""
    net, _, pct = label.partition("@")
    return net, float(pct) if pct else 100.0


# the values chaudhari_diffusion_spectrum's claims compare for each network at 100%
DIFFUSION_VALUES = ("rank", "rank_fraction", "trace", "eig_variance", "mean_nonzero_eig",
                    "test_acc", "mean_eig")


def _diffusion_names(spec, runs) -> ClaimNames:
    """The networks :func:`diffusion_spectrum` compares (those of the runs at 100% of
    training) and the values its claims read."""
    instants = map(_split_instant, run_groups(runs))
    return ClaimNames(list(dict.fromkeys(net for net, pct in instants if pct == 100.0)),
                      set(DIFFUSION_VALUES))


@register_analysis("chaudhari_diffusion_spectrum", claim_names=_diffusion_names, options={
    "claims": CLAIM_OPTIONS["claims"], "rank_fraction_range": "list of number>0",
    "same_within_factor": "number>0"})
def diffusion_spectrum(spec, runs: list[StoredRun]) -> Analysis:
    """Thesis §6.3.2: D(x) (eq. 6.4, network in evaluation mode) has a very small rank that
    "ranges between 0.3% - 2%" of d (the rank fraction inside ``rank_fraction_range``, both
    ends: a rank below 0.3% is not the thesis' either); its spectrum at 20%, 40% and 100% of
    training is "almost indistinguishable" (Tr D and rank within a factor
    ``same_within_factor`` of the final ones; Remark 6.37). Run labels are ``NET@PERCENT``.
    ``options.claims`` compare networks at 100% on ``rank``, ``rank_fraction``, ``mean_eig``
    (Tr D / d: eq. (6.45)'s (1/d) Σ_{k=1}^d λ_k, zeros included), ``mean_nonzero_eig`` (the
    mean of the eigenvalues above footnote 1's threshold, the spectrum Figs. 6.1-6.2 plot:
    reading ``eigenvalue-mean`` of Remark 6.38), ``eig_variance`` (variance of the nonzero
    eigenvalues) and ``test_acc`` (the final test accuracy: Fig. 6.1's small-lenet "also
    performs better on MNIST", line 2933)."""
    from sgdlab.report.figures.charts import curves

    o = spec.options
    lo, hi = (float(v) for v in o.get("rank_fraction_range", [0.003, 0.02]))
    factor = float(o.get("same_within_factor", 2.0))
    groups = by_group(runs, key=lambda r: r.group)
    rows, concl, spectra, vals = [], [], {}, {}
    by_net: dict[str, dict[float, dict[str, float]]] = {}
    for g, rs in groups.items():
        net, pct = _split_instant(g)
        r0 = rs[0]
        ev = np.asarray(r0.data.get("diffusion_eigenvalues", []), float)
        d = int(r0.summary.get("diffusion_dim", 0))
        # the paper scale gives no ``samples`` (the whole training set): the measured N
        n = r0.summary.get("diffusion_samples") or int(
            (r0.params.get("final") or [{}])[0].get("samples") or 0) or None
        # each seed's spectrum has its own spread: the mean over seeds, as for the rank
        plotted = [e for e in (np.asarray(r.data.get("diffusion_eigenvalues", []), float)
                               for r in rs) if e.size]
        spreads = [float(np.var(e)) for e in plotted]
        v = {"rank": stat(rs, "diffusion_rank")[0], "rank_fraction":
             stat(rs, "diffusion_rank_fraction")[0], "trace": stat(rs, "diffusion_trace")[0],
             "eig_variance": float(np.mean(spreads)) if spreads else float("nan"),
             "mean_nonzero_eig": float(np.mean([e.mean() for e in plotted])) if plotted
             else float("nan"), "test_acc": stat(rs, "test_acc")[0]}
        v["mean_eig"] = v["trace"] / d if d else float("nan")
        by_net.setdefault(net, {})[pct] = v
        if pct == 100.0:
            vals[net] = v
        rows.append([net, f"{pct:g}%", d, n, v["rank"], v["rank_fraction"], v["trace"],
                     v["mean_eig"], v["mean_nonzero_eig"], v["eig_variance"]])
        if ev.size:
            spectra[f"{net}, {pct:g}% of training"] = (
                list(range(1, len(ev) + 1)), sorted(ev.tolist(), reverse=True), None)
    for net, inst in by_net.items():
        if 100.0 in inst:
            rf = inst[100.0]["rank_fraction"]
            concl.append(Conclusion(
                f"{net}: rank D = {inst[100.0]['rank']:.0f}, {rf:.2%} of d "
                f"({'inside' if lo <= rf <= hi else 'outside'} the thesis' {lo:.1%}-{hi:.0%})",
                agrees_with_paper=(lo <= rf <= hi) if np.isfinite(rf) else None,
                claim=f"D(x) has a very small rank: between {lo:.1%} and {hi:.0%} of the "
                      f"weights"))
        others = sorted(p for p in inst if p != 100.0)
        if 100.0 in inst and others:
            end = inst[100.0]
            ok, parts = True, []
            for p in others:
                # D = 0 at the end (Tr D = 0, rank 0): no multiple of it, as for the rank
                tr = inst[p]["trace"] / end["trace"] if end["trace"] else float("nan")
                rk = inst[p]["rank"] / end["rank"] if end["rank"] else float("nan")
                ok = ok and all(np.isfinite(x) and 1 / factor <= x <= factor for x in (tr, rk))
                parts.append(f"{p:g}%: Tr D ×{tr:.2f}, rank ×{rk:.2f}")
            concl.append(Conclusion(
                f"{net}: against 100% of training — {'; '.join(parts)}",
                agrees_with_paper=ok,
                claim=f"the spectra at 20%, 40% and 100% of training are almost "
                      f"indistinguishable (Tr D and rank within a factor {factor:g})"))
    concl += check_claims(o.get("claims", []), vals)
    several = any(len(rs) > 1 for rs in groups.values())
    table = Table("diffusion_spectrum", ["network", "training", "d", "samples N",
                                         "numerical rank", "rank / d", "Tr D", "Tr D / d",
                                         "mean of nonzero λ", "variance of nonzero λ"], rows,
                  caption="means over each run's seeds" + ("; the figure shows the first "
                                                            "seed's spectrum" if several else ""))
    # a colour per network, a line style per instant: the thesis compares the instants of
    # one network (Remark 6.37) and the networks at one instant (Fig. 6.1 caption)
    colour = group_colours(by_net)
    dashes = {p: ls for p, ls in zip(sorted({p for i in by_net.values() for p in i},
                                            reverse=True), ("-", "--", ":", "-."))}
    styles = {f"{net}, {p:g}% of training": {"color": colour[net],
                                              "ls": dashes.get(p, "-")}
              for net, inst in by_net.items() for p in inst}
    fig = curves({g: s for g, s in spectra.items() if s[0]}, xlabel="index i",
                 ylabel="λ_i(D)", logx=True, logy=True, styles=styles,
                 figsize=(7.6, 3.8), legend_outside=True,
                 title="Diffusion-matrix eigenvalues (Chaudhari Figs. 6.1-6.2)\n"
                       + ("first " if several else "")
                       + seeds_named(rs[0].seed for rs in groups.values()))
    return Analysis(tables=[table], figures=[("diffusion_spectrum", fig)], conclusions=concl)


# --- trajectory spectra (thesis §6.3.3) ------------------------------------------------------
GRAD_NORM_WINDOWS = ("after-burnin", "whole-run")


def burnin_end(params: dict[str, Any]) -> tuple[str, float] | None:
    """Where the analysed trajectory starts: ("epoch" or "step", value). The recorder takes
    snapshot 0 at step 0, then one every ``every_epochs`` epochs or every ``every_steps``
    steps, so discarding ``burnin`` snapshots starts at burnin × that interval; None when the
    run has no such trajectory or records by both cadences (the start is then not known)."""
    traj = [m for m in params.get("measure") or [] if m.get("name") == "trajectory"]
    final = [m for m in params.get("final") or [] if m.get("kind") == "trajectory_spectrum"]
    if len(traj) != 1 or len(final) != 1:
        return None
    every_e, every_s = traj[0].get("every_epochs", 1), traj[0].get("every_steps")
    burnin = int(final[0].get("burnin") or 0)
    if every_s and not every_e:
        return "step", float(burnin * every_s)
    if every_e and not every_s:
        return "epoch", float(burnin * every_e)
    return None


def _grad_norm_drop(r: StoredRun, start: tuple[str, float] | None, mean_of: int
                    ) -> tuple[float, float, float]:
    """(‖∇f‖ over the first ``mean_of`` records at or after ``start`` — ("epoch" | "step",
    value), None for the first record —, over the last ``mean_of`` records, their ratio)."""
    g = r.metrics.get("full_grad_norm", [])
    if not g:
        return float("nan"), float("nan"), float("nan")
    steps = np.asarray([s for s, _ in g], float)
    vals = np.asarray([v for _, v in g], float)
    at = steps
    if start is not None and start[0] == "epoch":
        if not r.metrics.get("epoch"):
            return float("nan"), float("nan"), float("nan")
        at = np.asarray(x_axis(r, steps, "epoch"))
    i = 0 if start is None else int(np.searchsorted(at, start[1] - 1e-9))
    if i >= len(vals):
        return float("nan"), float("nan"), float("nan")
    # a single record at either end is noisy (at η = 10⁻³ successive ones differ by 2×)
    first = float(vals[i:i + mean_of].mean())
    last = float(vals[max(i, len(vals) - mean_of):].mean())
    return first, last, first / last if last > 0 else float("inf")


def _mean_drop(runs: list[StoredRun], start: tuple[str, float] | None, mean_of: int
               ) -> tuple[float, float, float]:
    """:func:`_grad_norm_drop`'s (start, end, ratio), each the mean over the ``runs`` that
    have one (NaN where none has)."""
    ends = [_grad_norm_drop(r, start, mean_of) for r in runs]
    return tuple(mean_std([e[i] for e in ends])[0] for i in range(3))


@register_analysis("chaudhari_trajectory", options={
    "iterate_acf_outside_above": "number", "grad_norm_drop_below": "number>0",
    "grad_norm_window": f"one of {', '.join(GRAD_NORM_WINDOWS)}",
    "grad_norm_mean_of": "int>0"})
def trajectory(spec, runs: list[StoredRun]) -> Analysis:
    """Thesis §6.3.3, Fig. 6.3, after the burn-in: (a) the spectrum of the increments is not
    flat but has excess low-frequency power (Remark 6.41; ``low_frequency_test``); (b) the
    iterates stay correlated at very large lags (Fig. 6.3b: share of the iterate ACF at lags
    n/10 … n/2 outside the 99% band above ``iterate_acf_outside_above``; a Brownian path of the
    same size is shown for reference); (c) the full gradient norm drops by less than
    ``grad_norm_drop_below`` (Remark 6.42: "only by about a factor of 3"), from the end of the
    burn-in (``grad_norm_window: after-burnin``) or from the first record (``whole-run``) to
    the end, each end the mean of ``grad_norm_mean_of`` records."""
    from types import SimpleNamespace

    from sgdlab.report.figures.charts import curves
    from sgdlab.report.figures.trajectory import trajectory_figure

    o = spec.options
    acf_above = float(o.get("iterate_acf_outside_above", 0.5))
    drop_max = float(o.get("grad_norm_drop_below", 5.0))
    window = o.get("grad_norm_window", "after-burnin")
    mean_of = int(o.get("grad_norm_mean_of", 5))

    def panel(letter: str) -> str:
        """Fig. 6.3's panel, cited with the paper: "Chaudhari 2018, Fig. 6.3a"."""
        return paper_ref({**spec.paper, "figure": f"Fig. 6.3{letter}"})

    groups = by_group(runs, key=lambda r: r.group)
    rows, figs, concl = [], [], []
    for g, rs in groups.items():
        # a seed that diverged recorded no spectrum: the group is drawn from one that did
        r0 = next((r for r in rs if r.data.get("spectrum_freqs")), None)
        if r0 is None:
            continue
        d = r0.data
        spec_ns = SimpleNamespace(freqs=d["spectrum_freqs"], mean=d["spectrum_mean"],
                                  std=d["spectrum_std"], num_coords=d["num_coords"],
                                  n=d["n_increments"])
        ac = SimpleNamespace(lags=d["acf_lags"], mean=d["acf_mean"], std=d["acf_std"],
                             band=d["acf_band"], n=d["n_increments"])
        # the figures draw one trajectory's spectra: that seed is named, where there are several
        one = f"{g}, seed {r0.seed}" if len(rs) > 1 else g
        figs.append((f"trajectory_{g}", trajectory_figure(
            spec_ns, ac, title=f"{one}: increments of the trajectory ({panel('a')})")))
        lags = d.get("iterate_acf_lags", [])
        if lags:
            band = float(d["iterate_acf_band"])
            fig = curves(
                {"SGD iterates": (lags, d["iterate_acf_mean"], d["iterate_acf_std"]),
                 "Brownian path (same n)": (lags, d["brownian_acf_mean"], None)},
                xlabel="lag (snapshots)", ylabel="autocorrelation of $x_k$", figsize=(7.2, 3.6),
                title=f"{one}: autocorrelation of the iterates ({panel('b')})")
            ax = fig.axes[0]
            # the band is ±: the test counts |ACF| above it (Fig. 6.3b's dotted red lines)
            ax.axhspan(-band, band, color="tab:gray", alpha=0.2, lw=0,
                       label="99% white-noise band")
            # right of the axes: iterates that stay correlated (the claim) run along the top
            # to the largest lag, where a legend inside would hide them
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
            fig.tight_layout()
            figs.append((f"iterate_acf_{g}", fig))
        gn = r0.metrics.get("full_grad_norm", [])
        if gn:
            steps, vals = zip(*gn)
            figs.append((f"grad_norm_{g}", curves(
                {"‖∇f‖ (full batch)": (steps, vals, None)}, xlabel="step",
                ylabel="‖∇f($x_k$)‖", log_steps_x=True, logy=True,
                title=f"{one}: full gradient norm ({panel('c')})")))
        lf_r = stat(rs, "low_frequency_ratio")[0]
        lf_p = stat(rs, "low_frequency_p_value")[0]
        lf = [bool(r.summary.get("low_frequency_excess")) for r in rs]
        it = stat(rs, "iterate_acf_fraction_outside")[0]
        bm = stat(rs, "brownian_iterate_acf_fraction_outside")[0]
        # each seed's ends and drop, then their means over the seeds (the other columns' rule)
        if window == "whole-run":
            first, last, drop = _mean_drop(rs, None, mean_of)
            since = "the first record"
        elif (start := burnin_end(r0.params)) is not None:
            first, last, drop = _mean_drop(rs, start, mean_of)
            since = f"{start[0]} {start[1]:g} (the end of the burn-in)"
        else:
            first = last = drop = float("nan")
            since = "the end of the burn-in (not known for this run)"
        rows.append([g, r0.summary.get("burnin"), d["n_increments"], d["num_coords"], lf_r,
                     lf_p, stat(rs, "acf_fraction_outside")[0], it, bm, first, last, drop])
        concl.append(Conclusion(
            f"{g}: low-frequency power of the increments is {lf_r:.2f}× that of the rest of "
            f"the spectrum (white noise: 1); combined p = {lf_p:.3g}",
            agrees_with_paper=all(lf) if finite(lf_p) else None,
            claim="the FFT of the increments is not flat: there are low-frequency modes"))
        concl.append(Conclusion(
            f"{g}: {it:.0%} of the iterate autocorrelations at lags n/10…n/2 lie outside the "
            f"99% band (a Brownian path of the same size: {bm:.0%})"
            + (" — no more than the Brownian path, so this does not tell SGD's trajectory from "
               "Brownian motion" if finite(it) and finite(bm) and it <= bm else ""),
            agrees_with_paper=(it > acf_above) if finite(it) else None,
            claim="the iterates are significantly correlated even at very large lags"))
        concl.append(Conclusion(
            f"{g}: the full gradient norm goes {first:.3g} → {last:.3g} from {since} to the "
            f"end, means of {mean_of} records (a factor {drop:.2f})"
            + (f"; means over {len(rs)} seeds" if len(rs) > 1 else ""),
            agrees_with_paper=(drop < drop_max) if finite(drop) else None,
            claim=f"the gradient norm stays large: it drops by less than a factor "
                  f"{drop_max:g} (the thesis: about 3)"))
    table = Table("trajectory", ["run", "burn-in (snapshots)", "increments", "coordinates",
                                 "low-frequency power ratio", "low-frequency p",
                                 "increment ACF outside band", "iterate ACF outside band",
                                 "same for a Brownian path", "‖∇f‖ start", "‖∇f‖ end",
                                 "drop factor"], rows,
                  caption="means over each run's seeds (the drop factor: of the seeds' "
                          "factors)")
    return Analysis(tables=[table], figures=figs, conclusions=concl)


# --- Trivialized-SGD (thesis §2.4.3) ---------------------------------------------------------
# the values chaudhari_trivialized adds to each run's summary (epochs_to_train: with
# options.trained_at)
TRIVIALIZED_VALUES = ("early_train_loss", "test_error")


def _trivialized_names(spec, runs) -> ClaimNames:
    """``compare_groups``' names with the values :func:`trivialized` adds."""
    names = compare_groups_names(spec, runs)
    if names.metrics is not None:
        names.metrics |= set(TRIVIALIZED_VALUES)
        if spec.options.get("trained_at") is not None:
            names.metrics.add("epochs_to_train")
    return names


@register_analysis("chaudhari_trivialized", claim_names=_trivialized_names, options={
    **COMPARE_OPTIONS, "early_epoch": "number>=0|null", "trained_at": "number|null"})
def trivialized(spec, runs: list[StoredRun]) -> Analysis:
    """``compare_groups`` plus the values the thesis' Trivialized-SGD claims are about:
    ``early_train_loss`` (training loss at the evaluation at the end of epoch ``early_epoch``,
    the "beginning when the external field is stronger": Fig. 2.3a; NaN for a run not
    evaluated at that epoch, whose next evaluation would be a later loss under the same name;
    without ``early_epoch``, the loss before training), ``test_error`` (1 − test accuracy) and,
    with ``options.trained_at`` = a, ``epochs_to_train``: the epoch of the first evaluation
    whose training accuracy reaches a. A run that never reaches it gets its last epoch, flagged
    ``epochs_to_train__censored`` (a lower bound: a net that has not trained by the end has
    trained no faster than that)."""
    early = spec.options.get("early_epoch")
    trained_at = spec.options.get("trained_at")
    for r in runs:
        r.summary["early_train_loss"] = _loss_at_epoch(r, early)
        acc = r.summary.get("test_acc")
        r.summary["test_error"] = 1 - acc if finite(acc) else float("nan")
        if trained_at is not None:
            r.summary["epochs_to_train"], r.summary["epochs_to_train__censored"] = \
                _epochs_to_reach(r, "train_acc", float(trained_at))
    return compare_groups(spec, runs)


def _loss_at_epoch(run: StoredRun, epoch: float | None) -> float:
    """The ``train_loss`` evaluated at the end of ``epoch`` (None: the first record), NaN
    when there is no evaluation there."""
    pts = run.metrics.get("train_loss", [])
    if epoch is None or not pts:
        return float(pts[0][1]) if pts else float("nan")
    end = next((s for s, e in run.metrics.get("epoch", []) if abs(e - float(epoch)) < 1e-9),
               None)
    return next((float(v) for s, v in pts if s == end), float("nan"))


def _epochs_to_reach(run: StoredRun, metric: str, level: float) -> tuple[float, bool]:
    """(epoch of the first record of ``metric`` at or above ``level``, False), else (the last
    record's epoch, True): censored, a lower bound. NaN without records."""
    pts = run.metrics.get(metric, [])
    if not pts:
        return float("nan"), False
    steps = [s for s, _ in pts]
    epochs = x_axis(run, steps, "epoch")
    hit = next((i for i, (_, v) in enumerate(pts) if v >= level), None)
    return (float(epochs[hit]), False) if hit is not None else (float(epochs[-1]), True)
