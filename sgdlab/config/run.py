"""The run config: its schema, validation, and building a run from it.

A run config (YAML or TOML, data only) has these sections; every key but the names is optional::

    name: digits-mlp                  # run name (default: the file's stem)
    experiment: null                  # experiment the run belongs to
    data:      {name: digits, seed: 0, data_dir: null, options: {}}
    model:     {name: mlp, options: {widths: [64]}}
    loss:      auto                   # auto | cross_entropy | mse  (auto: by the data's task)
    optimizer: {name: sgd, lr: 0.1, momentum: 0.9}     # any registered optimizer + its args
    schedule:  {name: constant}       # any registered schedule + its args
    train:     {epochs: 10, batch_size: 128, replacement: false, drop_last: false, seed: 0,
                eval_every: 1, eval_subset: null, checkpoint_every: null, max_steps: null,
                device: cpu, dtype: float32, threads: null, progress: true}
    measure:   [{name: <instrument>, every: 10, ...params}]   # or at: [...] / log_points: 20
    store:     {path: null}           # default $SGDLAB_STORE or ./sgdlab-runs/runs.sqlite

Optimizer, schedule, instrument, dataset and model arguments are checked against the
registered callables' signatures, so a typo is reported with its key path.
"""
from __future__ import annotations

import inspect
import math
import random
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import ConfigError, DataError, UserError
from ..losses import LOSSES, build_loss
from .schema import (REQUIRED, Field, Section, config_error, join, plain_data, unknown_key,
                     validate)

DTYPES = ("float32", "float64")
_SCHEDULE_KEYS = ("every", "start", "at", "log_points")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps|auto)$")


# --- registry-backed validators ----------------------------------------------------------

def _signature_params(fn: Callable, skip: tuple[str, ...]) -> tuple[dict[str, Any], bool]:
    """``({name: default-or-REQUIRED}, accepts_var_kwargs)`` of ``fn``'s keyword parameters."""
    params: dict[str, Any] = {}
    var_kw = False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                        inspect.Parameter.KEYWORD_ONLY) and p.name not in skip:
            params[p.name] = REQUIRED if p.default is inspect.Parameter.empty else p.default
    return params, var_kw


def _nullable(fn: Callable) -> frozenset[str]:
    """Names of ``fn``'s parameters that accept None (annotated ``int | None``, or default
    None), so a config may give them as null."""
    return frozenset(p.name for p in inspect.signature(fn).parameters.values()
                     if p.default is None or "None" in str(p.annotation))


def _check_args(path: str, given: dict[str, Any], params: dict[str, Any], var_kw: bool,
                owner: str, errors: list[str],
                nullable: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Keys of ``given`` against a signature: unknown keys, missing required ones, and values
    whose type cannot match the default's (a string for a number, ...; null only where the
    parameter is in ``nullable``)."""
    out = {}
    for k, v in given.items():
        p = join(path, k)
        plain_data(p, v, errors)
        if k not in params and not var_kw:
            msg = unknown_key(path, k, list(params))
            errors.append(msg[:-1] + f"; {owner} accepts: {', '.join(params) or 'nothing'})"
                          if "did you mean" not in msg else msg)
            continue
        if v is None and k in nullable:
            out[k] = v
            continue
        d = params.get(k, REQUIRED)
        if isinstance(d, bool):
            if not isinstance(v, bool):
                errors.append(f"{p}: must be true or false, got {v!r}")
        elif isinstance(d, (int, float)) and not isinstance(d, bool):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                errors.append(f"{p}: must be a number, got {v!r}")
            elif isinstance(v, float) and math.isnan(v):
                errors.append(f"{p}: must be a number, got nan")
            elif (k == "lr" or k.endswith("_lr")) and not math.isfinite(v):
                # an infinite step size is accepted by torch's checks but never meaningful
                errors.append(f"{p}: a learning rate must be finite, got {v}")
        out[k] = v
    for k, d in params.items():
        if d is REQUIRED and k not in given:
            errors.append(f"{join(path, k)}: required by {owner}")
    return out


def _registered_name(path: str, sec: dict[str, Any], registry, what: str, errors: list[str],
                     key: Callable[[str], str] = str) -> str | None:
    """``sec["name"]`` if it names an entry of ``registry`` (looked up as ``key(name)``); None if
    it is not a string (the schema reports that) or unknown (reported here)."""
    name = sec.get("name")
    if not isinstance(name, str):
        return None
    if key(name) not in registry:
        errors.append(_unknown_name(join(path, "name"), name, registry, what))
        return None
    return name


def _check_hyper(path: str, sec: dict[str, Any], name: str, params: dict[str, Any],
                 var_kw: bool, what: str, errors: list[str],
                 build: Callable[[dict[str, Any]], Any] | None) -> None:
    """The section's keys but ``name`` against the signature; if they pass, ``build(hyper)``
    lets the callable check its own ranges ("Invalid learning rate: -1")."""
    hyper = {k: v for k, v in sec.items() if k != "name"}
    n_errors = len(errors)
    _check_args(path, hyper, params, var_kw, f"{what} {name!r}", errors)
    if len(errors) == n_errors and build is not None:
        try:
            build(hyper)
        except (ValueError, TypeError) as e:
            errors.append(f"{path} ({name}): {e}")


def _check_optimizer(path: str, sec: dict[str, Any], errors: list[str]) -> None:
    import torch

    from ..optim import OPTIMIZERS
    from ..optim.registry import needs_model

    name = _registered_name(path, sec, OPTIMIZERS, "optimizer", errors)
    if name is None:
        return
    cls = OPTIMIZERS[name]
    skip = ("self", "params") + (("model", "loss_fn", "data") if needs_model(cls) else ())
    params, var_kw = _signature_params(cls.__init__ if inspect.isclass(cls) else cls, skip)
    _check_hyper(path, sec, name, params, var_kw, "optimizer", errors,
                 None if needs_model(cls)
                 else lambda hyper: cls([torch.nn.Parameter(torch.zeros(1))], **hyper))


def _check_schedule(path: str, sec: dict[str, Any], errors: list[str]) -> None:
    import torch

    from ..optim import SCHEDULES, build_schedule

    name = _registered_name(path, sec, SCHEDULES, "schedule", errors)
    if name is None:
        return
    params, var_kw = _signature_params(SCHEDULES[name],
                                       ("optimizer", "steps_per_epoch", "total_steps"))

    def build(hyper: dict[str, Any]) -> None:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        build_schedule(name, opt, steps_per_epoch=10, total_steps=100, **hyper)

    _check_hyper(path, sec, name, params, var_kw, "schedule", errors, build)


def _check_data(path: str, sec: dict[str, Any], errors: list[str]) -> None:
    from ..data import DATASETS, dataset_options
    from ..data.registry import _canonical

    name = _registered_name(path, sec, DATASETS, "dataset", errors, key=_canonical)
    if name is None:
        return
    _check_args(join(path, "options"), sec.get("options") or {}, dataset_options(name), False,
                f"dataset {name!r}", errors)


def _check_model(path: str, sec: dict[str, Any], errors: list[str]) -> None:
    from ..models import MODELS, describe

    name = _registered_name(path, sec, MODELS, "model", errors,
                            key=lambda n: n.strip().lower())
    if name is None:
        return
    _check_args(join(path, "options"), sec.get("options") or {}, describe(name).options, False,
                f"model {name!r}", errors)


def _check_train(path: str, sec: dict[str, Any], errors: list[str]) -> None:
    bs = sec.get("batch_size")
    if isinstance(bs, dict):
        from ..train.batch_schedules import build_batch_schedule

        try:
            build_batch_schedule(bs)
        except ValueError as e:
            errors.append(f"{join(path, 'batch_size')}: {e}")
    elif isinstance(bs, str) and bs != "full":
        errors.append(f"{join(path, 'batch_size')}: must be an integer >= 1 or \"full\", "
                      f"got {bs!r}")
    elif isinstance(bs, int) and bs < 1:
        errors.append(f"{join(path, 'batch_size')}: must be >= 1, got {bs}")
    dev = sec.get("device")
    if isinstance(dev, str) and not _DEVICE_RE.match(dev):
        errors.append(f"{join(path, 'device')}: must be cpu, cuda, cuda:N, mps or auto, "
                      f"got {dev!r}")


def _check_measure_item(path: str, item: dict[str, Any], errors: list[str]) -> None:
    from ..train.instruments import instrument_params, instruments

    name = item.get("name")
    if not isinstance(name, str):
        return
    registry = instruments()
    if name not in registry:
        errors.append(_unknown_name(join(path, "name"), name, registry, "instrument"))
        return
    given = {k: v for k, v in item.items() if k not in ("name",) + _SCHEDULE_KEYS}
    params = instrument_params(name)
    _check_args(path, given, params or {}, params is None, f"instrument {name!r}", errors,
                nullable=_nullable(registry[name]))
    n_sched = sum(item.get(k) is not None for k in ("every", "at", "log_points"))
    if n_sched > 1:
        errors.append(f"{path}: give at most one of every, at, log_points")


def _unknown_name(path: str, name: str, registry, what: str) -> str:
    import difflib
    close = difflib.get_close_matches(name, list(registry), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{path}: unknown {what} {name!r}{hint}; known: {', '.join(sorted(registry))}"


def _keep_extra(path: str, values: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    return values  # checked by the section's check once the registered name is known


MEASURE_ITEM = Section({
    "name": Field(str),
    "every": Field(int, default=None, min=1, nullable=True, doc="steps between measurements"),
    "start": Field(int, default=0, min=0),
    "at": Field(list, default=None, nullable=True, item=Field(int, min=0)),
    "log_points": Field(int, default=None, min=1, nullable=True,
                        doc="about this many log-spaced steps up to the last step"),
}, extra=_keep_extra, check=_check_measure_item)

OPTIMIZER = Section({"name": Field(str)}, extra=_keep_extra, check=_check_optimizer,
                    optional=False)
SCHEDULE = Section({"name": Field(str, default="constant")}, extra=_keep_extra,
                   check=_check_schedule)

RUN_SCHEMA = Section({
    "name": Field(str, default=None, nullable=True),
    "experiment": Field(str, default=None, nullable=True),
    "description": Field(str, default=None, nullable=True),
    "data": Section({
        "name": Field(str),
        "seed": Field(int, default=0, min=0),
        "data_dir": Field(str, default=None, nullable=True),
        "options": Field(dict, default={}),
    }, check=_check_data, optional=False),
    "model": Section({
        "name": Field(str),
        "options": Field(dict, default={}),
    }, check=_check_model, optional=False),
    "loss": Field(str, default="auto", choices=LOSSES),
    "optimizer": OPTIMIZER,
    "schedule": SCHEDULE,
    "train": Section({
        "epochs": Field(int, default=10, min=0),
        "batch_size": Field((int, str, dict), default=128,
                            doc='int, "full", or a schedule {kind: cyclic, low, high, period}'),
        "replacement": Field(bool, default=False),
        "drop_last": Field(bool, default=False),
        "seed": Field(int, default=0, min=0),
        "eval_every": Field(int, default=1, min=0, doc="epochs; 0: only at start and end"),
        "eval_subset": Field(int, default=None, min=1, nullable=True),
        "checkpoint_every": Field(int, default=None, min=1, nullable=True,
                                  doc="steps; null: each epoch end"),
        "max_steps": Field(int, default=None, min=0, nullable=True),
        "device": Field(str, default="cpu"),
        "dtype": Field(str, default="float32", choices=DTYPES),
        "threads": Field(int, default=None, min=1, nullable=True),
        "progress": Field(bool, default=True),
    }, check=_check_train),
    "measure": Field(list, default=[], item=MEASURE_ITEM),
    "store": Section({"path": Field(str, default=None, nullable=True)}),
})


def validate_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate a run config (as loaded from YAML/TOML) and fill in defaults.

    Raises :class:`ConfigError` naming every offending key path."""
    errors: list[str] = []
    plain_data("config", raw, errors)
    if errors:
        raise config_error(errors)
    return validate(raw, RUN_SCHEMA)


# --- building ------------------------------------------------------------------------------

class BuiltRun(NamedTuple):
    """Everything :func:`sgdlab.train.train` needs; ``train(*built[:4], callbacks=...,
    schedule=..., **built.train_kwargs)``."""

    model: Any
    loss_fn: Any
    data: Any
    optimizer: Any
    schedule: Any
    callbacks: list
    train_kwargs: dict[str, Any]


def measure_schedule(item: dict[str, Any], total_steps: int):
    """The step :class:`~sgdlab.train.callbacks.Schedule` of a ``measure`` item: ``at: [...]``,
    ``log_points: n`` (about n log-spaced steps up to ``total_steps``), or ``every: k`` from
    ``start`` (default: every step)."""
    from ..train.callbacks import Schedule

    if item.get("at") is not None:
        return Schedule.at(item["at"])
    if item.get("log_points") is not None:
        return Schedule.log_spaced(item["log_points"], max(total_steps, 1))
    return Schedule.every(item.get("every") or 1, item.get("start") or 0)


def build_measure(items: list[dict[str, Any]], total_steps: int) -> list:
    """Callbacks for validated ``measure`` items (see :data:`MEASURE_ITEM`)."""
    from ..train.instruments import build_instrument

    callbacks = []
    for i, item in enumerate(items):
        params = {k: v for k, v in item.items() if k not in ("name",) + _SCHEDULE_KEYS}
        try:
            callbacks.append(build_instrument(item["name"],
                                              schedule=measure_schedule(item, total_steps),
                                              **params))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"measure[{i}]: {e}") from None
    return callbacks


def resolve_device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    return name


def build_from_config(cfg: dict[str, Any], *, validated: bool = False) -> BuiltRun:
    """Build model, loss, data, optimizer, schedule and callbacks from a run config.

    Seeds torch, numpy and Python's global RNGs with ``train.seed`` before building the model,
    so a config fixes the initial weights; ``data.seed`` fixes the data.
    """
    import numpy as np
    import torch

    from ..data import load_dataset
    from ..models import build_model
    from ..optim import build_optimizer_for, build_schedule
    from ..train.loop import steps_per_epoch

    if not validated:
        cfg = validate_config(cfg)
    t = cfg["train"]
    if t["threads"] is not None:
        torch.set_num_threads(t["threads"])
    device = resolve_device(t["device"])
    dtype = getattr(torch, t["dtype"])
    d = cfg["data"]
    try:
        data = load_dataset(d["name"], seed=d["seed"], data_dir=d["data_dir"], **d["options"])
    except DataError:
        raise  # already names the file
    except UserError as e:  # a bad option value: say which config key holds it
        raise ConfigError(f"data.options: {e}") from None
    data = data.to(device=device, dtype=dtype)

    seed = t["seed"]
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    m = cfg["model"]
    model = build_model(m["name"], data.input_shape, data.num_outputs, **m["options"])
    model = model.to(device=device, dtype=dtype)

    loss_fn = build_loss(cfg["loss"], data)

    o = dict(cfg["optimizer"])
    oname = o.pop("name")
    try:
        optimizer = build_optimizer_for(oname, model, loss_fn=loss_fn, data=data.train, **o)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"optimizer: {e}") from None

    n = len(data.x_train)
    if isinstance(t["batch_size"], dict):  # a batch-size schedule (e.g. Jastrzebski's cyclic B)
        from ..train.batch_schedules import build_batch_schedule

        batch_size = build_batch_schedule(t["batch_size"])
        total = sum(steps_per_epoch(n, batch_size(e), t["drop_last"]) for e in range(t["epochs"]))
    else:
        batch_size = n if t["batch_size"] == "full" else t["batch_size"]
        total = steps_per_epoch(n, batch_size, t["drop_last"]) * t["epochs"]
    first_batch_size = batch_size(0) if callable(batch_size) else batch_size
    if t["max_steps"] is not None:
        total = min(total, t["max_steps"])
    s = dict(cfg["schedule"])
    sname = s.pop("name")
    schedule = None
    if sname != "constant" or s:
        try:
            schedule = build_schedule(sname, optimizer,
                                      steps_per_epoch=steps_per_epoch(n, first_batch_size,
                                                                      t["drop_last"]),
                                      total_steps=max(total, 1), **s)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"schedule: {e}") from None

    callbacks = build_measure(cfg["measure"], total)

    train_kwargs = dict(epochs=t["epochs"], batch_size=batch_size, replacement=t["replacement"],
                        drop_last=t["drop_last"], seed=seed, eval_every=t["eval_every"],
                        eval_subset=t["eval_subset"], checkpoint_every=t["checkpoint_every"],
                        max_steps=t["max_steps"], device=device, progress=t["progress"])
    return BuiltRun(model, loss_fn, data, optimizer, schedule, callbacks, train_kwargs)


__all__ = ["BuiltRun", "MEASURE_ITEM", "OPTIMIZER", "RUN_SCHEMA", "SCHEDULE",
           "build_from_config", "build_measure",
           "measure_schedule", "resolve_device", "validate_config"]
