"""Warm starts: a run whose model starts from the weights of another run's checkpoint.

``model.init_from`` names the checkpoint as ``sgdlab measure`` names a model (a run id or
unique prefix in the run store, a run folder, a checkpoint file or folder; one resolver,
:func:`~sgdlab.config.locate.locate_run`): of a run of ``sgdlab train``, its last checkpoint;
of a finished or diverged run of an experiment's sweep, the final weights it keeps
(``weights.pt``: its checkpoint is removed); of a finished run of ``sgdlab parle``, its
master (``master.pt``: x̄ and the replicas' averaged buffers, at step rounds · L). Weights
that are not finite are refused, as are those a diverged run diverged on (its last
checkpoint or final weights: finite, but their loss is not). The model of the run's own config
is built as usual (seeded by ``train.seed``) and then given the checkpoint's parameters and buffers
(batch-norm statistics); nothing else is carried: the optimizer's state (momentum buffers),
the schedule's position and the step count start afresh, as the point is to continue under
other settings (Xing et al. 2018, footnote 6: isotropic noise, then SGD, from where it stuck).

What was loaded is recorded in the run's config as ``model.warm_start``: the source run's id,
the checkpoint file, its step and a SHA-256 of its model state (:func:`weights_sha256`), so
two stored runs say whether they started from the same weights, and a restart from step 0
(a resume before the first checkpoint) checks it loads those same weights again.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UserError

KEY = "model.init_from"


def weights_sha256(state: dict[str, Any]) -> str:
    """SHA-256 (hex) of a state dict: each entry's name, dtype, shape and bytes, in order."""
    import torch

    h = hashlib.sha256()
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|".encode())
        h.update(str(list(state[name].shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def mismatch(expected: dict[str, Any], found: dict[str, Any], limit: int = 3) -> str | None:
    """How state dict ``found`` (a checkpoint's) does not fit ``expected`` (the model's): the
    first ``limit`` missing, unexpected and mis-shaped entry names, or None when it fits."""
    def first(names: list[str]) -> str:
        more = len(names) - limit
        return ", ".join(names[:limit]) + (f" (and {more} more)" if more > 0 else "")

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shaped = [f"{k} (checkpoint {list(found[k].shape)}, model {list(v.shape)})"
              for k, v in expected.items()
              if k in found and hasattr(found[k], "shape") and found[k].shape != v.shape]
    parts = [f"{what}: {first(names)}" for what, names in (
        ("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)) if names]
    return "; ".join(parts) or None


def _source(init_from: str, store_path: str | os.PathLike | None):
    """(checkpoint state, Located) of ``init_from``, each failure a ConfigError under KEY."""
    from ..train.checkpoint import load_weights
    from .locate import locate_run

    try:
        found = locate_run(init_from, getattr(store_path, "path", store_path), rebuild=False)
        # weights_only=True (load_weights's only way): no pickled code runs
        state = load_weights(found.checkpoint, found.step)
    except UserError as e:
        raise ConfigError(f"{KEY}: {e}") from None
    if not isinstance(state.get("loop"), dict) or "step" not in state["loop"]:
        raise ConfigError(f"{KEY}: {str(found.checkpoint)!r} holds no training loop's "
                          "position: it is not a checkpoint of `sgdlab train`")
    bad = [k for k, v in state["model"].items() if hasattr(v, "is_floating_point")
           and v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:   # training from them would diverge at its first step
        raise ConfigError(f"{KEY}: {_where(state, found)} holds values that are not finite "
                          f"(in {', '.join(bad[:3])}{' and more' if len(bad) > 3 else ''}): "
                          "the run diverged before they were saved; start from an earlier "
                          "checkpoint of it")
    diverged = _diverged_on(state, found)
    if diverged:   # finite, but their loss is not: the new run would diverge at step 0
        raise ConfigError(f"{KEY}: {_where(state, found)} holds the weights its run "
                          f"diverged on ({diverged}): a run started from them diverges at its "
                          "first step; start from an earlier checkpoint of it, or from "
                          "another run")
    return state, found


def _diverged_on(state: dict[str, Any], found: Any) -> str | None:
    """Why the source run diverged (its recorded message) when it diverged on its loss and
    the checkpoint holds the weights it diverged on (those of its last step: a diverged run
    keeps them when it has no earlier checkpoint); None for any other source: a run that
    diverged in a measurement (its loss finite), or one whose record or step count is not at
    hand. The run's record is read from its store, else from its folder's results.json."""
    import json

    from ..train.loop import LOSS_DIVERGENCE

    run = None
    if found.run_id and found.store is not None:
        try:
            run = found.store.get_run(found.run_id)
            run = {**run, "steps": (run.get("summary") or {}).get("steps")}
        except UserError:
            run = None
    if run is None and found.run_id and found.folder is not None:
        try:
            run = json.loads((Path(found.folder) / "results.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(run, dict) or run.get("run_id") != found.run_id:
            return None
    if (run is None or run.get("status") != "diverged"
            or not str(run.get("message") or "").startswith(LOSS_DIVERGENCE)):
        return None
    steps = run.get("steps")
    if not isinstance(steps, int) or int(state["loop"]["step"]) < steps:
        return None    # an earlier checkpoint, from before the divergence, or not known
    return str(run["message"])


def _record(model_cfg: dict[str, Any], state: dict[str, Any], found: Any) -> dict[str, Any]:
    """The ``model.warm_start`` record of a loaded checkpoint, refused when the config
    records other weights."""
    init_from = model_cfg["init_from"]
    digest = weights_sha256(state["model"])
    recorded = model_cfg.get("warm_start")
    if recorded and recorded.get("sha256") and recorded["sha256"] != digest:
        raise ConfigError(f"{KEY}: the weights of {_where(state, found)} are not those this "
                          f"run started from (sha256 {digest[:12]}..., recorded "
                          f"{recorded['sha256'][:12]}...): the checkpoint changed since; to "
                          "start from it as it is now, remove model.warm_start from the config")
    source = (found.run_id if found.run_id and not Path(init_from).exists()
              else str(Path(init_from).expanduser().resolve()))
    return {"init_from": source, "run_id": found.run_id,
            "checkpoint": str(Path(found.checkpoint).resolve()),
            "step": int(state["loop"]["step"]), "sha256": digest}


def _where(state: dict[str, Any], found: Any) -> str:
    what = ("final weights" if found.step is not None or state.get("kind") == "weights"
            else "checkpoint")
    return (f"{what} {str(found.checkpoint)!r}"
            + (f" (run {found.run_id}, step {int(state['loop']['step'])})"
               if found.run_id else ""))


def warm_start_record(model_cfg: dict[str, Any],
                      store_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``model.warm_start`` record of the checkpoint ``model_cfg["init_from"]`` names (run
    ids looked up in the store at ``store_path``): ``init_from`` (made absolute, or the full
    run id), ``run_id``, ``checkpoint``, ``step``, ``sha256``. What ``sgdlab train`` stores
    in the run's config before the run is built (:func:`load_warm_start` then checks it loads
    these weights). A :class:`ConfigError` under ``model.init_from`` for every problem."""
    state, found = _source(model_cfg["init_from"], store_path)
    return _record(model_cfg, state, found)


def load_warm_start(model: Any, model_cfg: dict[str, Any],
                    store_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Give ``model`` the parameters and buffers of the checkpoint ``model_cfg["init_from"]``
    names (run ids looked up in the store at ``store_path``) and return its
    :func:`warm_start_record`. A recorded ``model.warm_start`` whose ``sha256`` differs from
    the checkpoint's (it changed since) is refused, as is a checkpoint of another
    architecture: a :class:`ConfigError` under ``model.init_from``, before anything trains."""
    from ..train.checkpoint import load_state

    state, found = _source(model_cfg["init_from"], store_path)
    problem = mismatch(model.state_dict(), state["model"])
    if problem is not None:
        raise ConfigError(f"{KEY}: {_where(state, found)} does not fit the model of this "
                          f"config ({model_cfg['name']}, {model_cfg.get('options') or {}}): "
                          f"{problem}")
    record = _record(model_cfg, state, found)
    load_state(model, state["model"], found.checkpoint, "model")
    return record


__all__ = ["load_warm_start", "mismatch", "warm_start_record", "weights_sha256"]
