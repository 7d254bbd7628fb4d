"""Run a config end to end: record it in the store, train, write results and the plot.

``run_config(cfg)`` is what ``sgdlab train`` and ``sgdlab resume`` call. A run's folder
(default ``<store folder>/<run_id>/``) holds ``config.yaml`` (the validated config),
``checkpoints/last.pt``, ``results.json`` (status, final metrics, config, environment,
history) and ``learning_curves.png``; the store records the folder and files as artifacts.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .io import dump_yaml
from .run import build_from_config, resolve_device, validate_config

RESUMABLE = ("running", "interrupted", "failed")


@dataclass
class RunOutcome:
    run_id: str
    result: Any                    # sgdlab.train.RunResult
    out_dir: Path
    results_path: Path
    figure_path: Path | None
    store_path: Path
    resumed_from_step: int | None = None


def run_config(cfg: dict[str, Any], *, out_dir: str | os.PathLike | None = None,
               store: Any = None, progress: bool | None = None) -> RunOutcome:
    """Validate ``cfg``, create a run in ``store`` (default: ``cfg['store']['path']`` or the
    default store), train it and write its folder."""
    from ..store import RunStore, environment

    cfg = validate_config(cfg)
    # Build before recording: input that only fails when built (a bad data option value, a
    # missing file) is reported without leaving a failed run behind.
    built = build_from_config(cfg, validated=True)
    if store is None:
        store = RunStore(cfg["store"]["path"])
    env = environment(seed=cfg["train"]["seed"], device=resolve_device(cfg["train"]["device"]))
    run_id = store.create_run(cfg, name=cfg["name"], experiment=cfg["experiment"], env=env)
    out = Path(out_dir) if out_dir is not None else store.path.parent / run_id
    out.mkdir(parents=True, exist_ok=True)
    store.add_artifact(run_id, "out_dir", out.resolve())
    (out / "config.yaml").write_text(dump_yaml(cfg))
    return _execute(cfg, store, run_id, out, env, resume=False, progress=progress, built=built)


def resume_run(run_id: str, *, store: Any = None, progress: bool | None = None) -> RunOutcome:
    """Continue run ``run_id`` (a unique prefix is enough) from its last checkpoint, with the
    config stored for it. A run killed before its first checkpoint restarts from step 0."""
    from ..store import RunStore, environment
    from ..train.checkpoint import checkpoint_path

    store = store if store is not None else RunStore()
    run = store.get_run(run_id)
    run_id = run["id"]
    if run["status"] not in RESUMABLE:
        raise UserError(f"run {run_id} is {run['status']}; only {', '.join(RESUMABLE)} runs "
                        "can be resumed")
    dirs = [a["path"] for a in run["artifacts"] if a["kind"] == "out_dir"]
    if not dirs:
        raise UserError(f"run {run_id} has no run folder recorded (was it started by "
                        "`sgdlab train`?)")
    out = Path(dirs[-1])
    cfg = validate_config(run["config"])
    env = environment(seed=cfg["train"]["seed"], device=resolve_device(cfg["train"]["device"]))
    resume = checkpoint_path(out / "checkpoints").exists()
    if not resume:
        store.delete_metrics_after(run_id, -1)
    return _execute(cfg, store, run_id, out, env, resume=resume, progress=progress)


def _execute(cfg: dict[str, Any], store: Any, run_id: str, out: Path, env: dict[str, Any], *,
             resume: bool, progress: bool | None, built: Any = None) -> RunOutcome:
    from ..train.loop import train

    if built is None:
        try:
            built = build_from_config(cfg, validated=True)
        except BaseException as e:
            store.set_status(run_id, "failed", f"{type(e).__name__}: {e}")
            raise
    kwargs = dict(built.train_kwargs)
    from ..train.tensorboard import TensorBoardLogger, run_folder

    for cb in built.callbacks:  # one TensorBoard folder per run: DIR/<name>-<run id>
        if isinstance(cb, TensorBoardLogger) and cb.run is None:
            cb.run = run_folder("", run_id, cfg["name"]).name
    if progress is not None:
        kwargs["progress"] = progress
    ckpt_dir = out / "checkpoints"
    resumed_from = None
    if resume:
        from ..train.checkpoint import load_checkpoint
        resumed_from = int(load_checkpoint(ckpt_dir)["loop"]["step"])
    result = train(built.model, built.loss_fn, built.data, built.optimizer,
                   schedule=built.schedule, callbacks=built.callbacks, store=store,
                   run_id=run_id, checkpoint_dir=ckpt_dir, resume=resume, **kwargs)

    figure_path = None
    try:
        from ..report.figures.training import learning_curves
        import matplotlib.pyplot as plt
        fig = learning_curves(result.history, title=f"{cfg['name'] or 'run'} ({run_id}, "
                                                    f"{result.status})")
        figure_path = out / "learning_curves.png"
        fig.savefig(figure_path, dpi=120)
        plt.close(fig)
    except Exception as e:  # a plot must not lose a finished run
        print(f"sgdlab: warning: could not draw the learning curves: {e}")
    results = {
        "run_id": run_id, "status": result.status, "message": result.message,
        "steps": result.steps, "epochs_completed": result.epochs_completed,
        "wall_time_s": result.wall_time, "final": result.final, "config": cfg,
        "environment": env, "history": {k: [list(p) for p in v]
                                        for k, v in result.history.items()},
    }
    results_path = out / "results.json"
    tmp = results_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, results_path)
    store.add_artifact(run_id, "results", results_path.resolve())
    if figure_path is not None:
        store.add_artifact(run_id, "figure", figure_path.resolve())
    if result.checkpoint is not None:
        store.add_artifact(run_id, "checkpoint", Path(result.checkpoint).resolve())
    return RunOutcome(run_id, result, out, results_path, figure_path, store.path, resumed_from)
