"""The run config: its sections (pydantic models), validation, and building a run from it.

A run config (YAML or TOML, data only) has these sections; every key but the names is optional::

    name: digits-mlp                  # run name (default: the file's stem)
    experiment: null                  # experiment the run belongs to
    plugins:   []                     # modules imported first (their register_* calls)
    data:      {name: digits, seed: 0, data_dir: null, options: {}}   # or {file: data.pt}
    model:     {name: mlp, options: {widths: [64]}, init_from: null}  # init_from: a warm start
    loss:      auto                   # auto | cross_entropy | mse  (auto: by the data's task)
    optimizer: {name: sgd, lr: 0.1, momentum: 0.9}     # any registered optimizer + its args
    schedule:  {name: constant}       # any registered schedule + its args
    train:     {epochs: 10, batch_size: 128, replacement: false, drop_last: false, seed: 0,
                eval_every: 1, eval_subset: null, eval_bn: running, checkpoint_every: null,
                max_steps: null, micro_batch: null, device: cpu, dtype: float32,
                threads: null, progress: true, tensorboard: null}
    measure:   [{name: <instrument>, every: 10, ...params}]   # or at: [...] / log_points: 20
    store:     {path: null}           # default $SGDLAB_STORE or ./sgdlab-runs/runs.sqlite

The fixed structure is :class:`RunConfig` (pydantic); optimizer, schedule, instrument, dataset
and model arguments are then checked against the registered callables' signatures, so a typo
is reported with its key path. :func:`json_schema` publishes both as one JSON Schema for
editors (``sgdlab config schema``).
"""
from __future__ import annotations

import inspect
import json
import math
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BeforeValidator, Field, ValidationError, WithJsonSchema

from ..errors import (SEED_LIMIT, ConfigError, DataError, UserError, check_config_kind,
                      config_error, did_you_mean, is_seed, join, not_a_seed,
                      refused_value, registered_spelling, unknown_key)
from ..losses import LOSSES, build_loss
from .schema import OpenSection, Section, invalid, plain_data, problems, validate

REQUIRED: Any = inspect.Parameter.empty
DTYPES = ("float32", "float64")
_SCHEDULE_KEYS = ("every", "start", "at", "log_points")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps|auto)$")
# Hyper-parameters that no optimizer accepts negative, checked before the optimizer is built so
# the message names the key (torch's own says "Invalid learning rate: -1").
_NON_NEGATIVE = ("lr", "momentum", "weight_decay", "eps")
# How optimizers' own error messages name some keys.
_KEY_WORDS = {"lr": ("learning rate",), "eps": ("epsilon",), "betas": ("beta",)}


# --- the fixed structure -------------------------------------------------------------------

def _batch_size(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, str, dict)):
        raise invalid(f'must be an integer >= 1, "full" or a schedule mapping {{kind: cyclic, '
                      f'low, high, period}}, got {v!r}')
    if isinstance(v, str) and v != "full":
        raise invalid(f'must be an integer >= 1 or "full", got {v!r}')
    if isinstance(v, int) and v < 1:
        raise invalid(f"must be >= 1, got {v}")
    if isinstance(v, dict):
        from ..train.batch_schedules import build_batch_schedule

        try:
            build_batch_schedule(v)
        except (ValueError, TypeError) as e:
            raise invalid(str(e)) from None
    return v


def _device(v: Any) -> Any:
    if isinstance(v, str) and not _DEVICE_RE.match(v):
        hint = did_you_mean(v, ("cpu", "cuda", "mps", "auto"))
        raise invalid(f"must be cpu, cuda, cuda:N, mps or auto, got {v!r}{hint}")
    return v


BatchSize = Annotated[Any, BeforeValidator(_batch_size), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 1}, {"const": "full"},
              {"type": "object", "properties": {
                  "kind": {"const": "cyclic"}, "low": {"type": "integer", "minimum": 1},
                  "high": {"type": "integer", "minimum": 1},
                  "period": {"type": "integer", "minimum": 2},
                  "shape": {"enum": ["triangular", "harmonic", "square"]},
                  "start": {"enum": ["low", "high"]}},
               "required": ["kind", "low", "high", "period"], "additionalProperties": False},
              {"type": "object", "properties": {"kind": {"const": "constant"},
                                                "size": {"type": "integer", "minimum": 1}},
               "required": ["kind", "size"], "additionalProperties": False}],
    "description": 'mini-batch size: an integer, "full" (gradient descent) or a schedule '
                   "over epochs {kind: cyclic, low, high, period}"})]
Device = Annotated[str, BeforeValidator(_device), WithJsonSchema({
    "type": "string", "pattern": _DEVICE_RE.pattern,
    "description": "cpu, cuda, cuda:N, mps or auto"})]
NonNegative = Annotated[int, Field(ge=0)]


class DataSection(Section):
    """The dataset: load_dataset(name, seed=seed, data_dir=data_dir, **options), or a file of
    tensors (``file``, as a replica run config's ``data: {file: PATH}``)."""

    name: str | None = Field(None, description="a registered dataset (digits, mnist1d, "
                                               "cubic, mnist, ...); or give file")
    file: str | None = Field(None, min_length=1, description=(
        "instead of name: a torch.save'd dict of tensors x_train, y_train (x_test with "
        "y_test, and meta, optional); stored as an absolute path"))
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "written by sgdlab: SHA-256 of the data file's bytes when the run started; the run "
        "is not rebuilt (resumed, measured) from a file that has changed since"))
    # numpy's seeds are 32-bit: a larger one failed in np.random.seed, after validation
    seed: int = Field(0, ge=0, le=SEED_LIMIT - 1,
                      description="seed of the data (subsets, label noise, splits)")
    data_dir: str | None = Field(None, description="folder with the dataset's files")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="the dataset's keyword arguments")


class WarmStartRecord(Section):
    """Where a warm-started run's weights came from, recorded by sgdlab when it starts."""

    init_from: str = Field(description="the source: a full run id or an absolute path")
    run_id: str | None = Field(None, description="the source run (None: a bare checkpoint)")
    checkpoint: str = Field(description="the checkpoint file loaded")
    step: int = Field(ge=0, description="the source's step at that checkpoint")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                        description="SHA-256 of the loaded model state (parameters, buffers)")


class ModelSection(Section):
    """The model: build_model(name, input_shape, num_outputs, **options)."""

    name: str = Field(description="a registered model (mlp, lenet, resnet-56, ...)")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="the model's keyword arguments")
    init_from: str | None = Field(None, min_length=1, description=(
        "warm start: the weights and buffers of this run id (or unique prefix), run folder "
        "(its last checkpoint; a finished sweep run's final weights; a finished parle run's "
        "master) or checkpoint file; the optimizer starts afresh"))
    warm_start: WarmStartRecord | None = Field(None, description=(
        "written by sgdlab: the source run, checkpoint, step and weights' SHA-256 loaded"))


class OptimizerSection(OpenSection):
    """A registered optimizer's name and its hyper-parameters (lr, momentum, ...)."""

    name: str = Field(description="a registered optimizer (sgd, adam, entropy_sgd, ...; - and _ "
                                  "alike, stored as registered)")


class ScheduleSection(OpenSection):
    """A learning-rate schedule's name and arguments; stepped once per optimizer step."""

    name: str = Field("constant", description="a registered learning-rate schedule (- and _ "
                                              "alike, stored as registered)")


class TrainSection(Section):
    """The training loop's settings (the arguments of sgdlab.train.train)."""

    epochs: int = Field(10, ge=0, description="passes over the training set; 0: none, the "
                        "initial weights are evaluated and checkpointed (for sgdlab measure)")
    batch_size: BatchSize = 128
    replacement: bool = Field(False, description="draw mini-batches i.i.d. with replacement")
    drop_last: bool = Field(False, description="drop each pass's last partial batch")
    seed: int = Field(0, ge=0, le=SEED_LIMIT - 1,
                      description="seed of the initial weights and the batch order")
    eval_every: int = Field(1, ge=0, description="epochs between evaluations; 0: start and end")
    eval_subset: int | None = Field(None, ge=1, description="evaluate on this many examples")
    eval_bn: Literal["running", "recompute"] = Field(
        "running", description="batch-norm statistics of the evaluations: the running ones "
                               "training left, or recompute them on the training set at the "
                               "current weights before each evaluation (and keep them)")
    checkpoint_every: int | None = Field(None, ge=1,
                                         description="steps between checkpoints; null: epochs")
    max_steps: int | None = Field(None, ge=0, description="stop after this many steps")
    clip_grad_norm: float | None = Field(None, gt=0,
                                         description="rescale each gradient to at most this "
                                                     "norm (null: no clipping)")
    micro_batch: int | None = Field(
        None, ge=1, description="take each batch larger than this in consecutive chunks of this "
                                "many examples, their gradients weighted by size and summed "
                                "(batch norm: each chunk's statistics); null: one pass")
    sequence_loss: Literal["mean", "window-sum"] = Field(
        "mean", description="token data: step on the per-token mean loss, or on the loss summed "
                            "over each window's positions (window-sum, Zaremba et al.'s)")
    device: Device = "cpu"
    dtype: Literal[DTYPES] = Field("float32", description="float32 or float64")
    threads: int | None = Field(None, ge=1, description="torch threads (null: torch's default)")
    progress: bool = Field(True, description="show a progress bar on a terminal, a line per "
                                             "epoch into a log file or a pipe")
    tensorboard: str | None = Field(None, description="log every metric live to TensorBoard "
                                                      "event files in DIR/<run id>")


class MeasureItem(OpenSection):
    """An instrument, its step schedule (at most one of every, at, log_points) and options."""

    name: str = Field(description="a registered instrument (hessian, noise, alignment, ...)")
    every: int | None = Field(None, ge=1, description="steps between measurements (without "
                                                      "every, at or log_points: every step)")
    start: int = Field(0, ge=0, description="first step of `every`")
    at: list[NonNegative] | None = Field(None, description="these steps")
    log_points: int | None = Field(None, ge=1, description="about this many log-spaced steps "
                                                           "up to the last step")


class StoreSection(Section):
    path: str | None = Field(None, description="run store (SQLite); default $SGDLAB_STORE or "
                                               "./sgdlab-runs/runs.sqlite")


class RunConfig(Section):
    """A run config for `sgdlab train` (YAML or TOML)."""

    name: str | None = Field(None, description="run name (default: the file's stem)")
    experiment: str | None = Field(None, description="experiment the run belongs to")
    description: str | None = None
    plugins: list[str] = Field(default_factory=list, description=(
        "modules (names on sys.path, or .py files) imported before the config is checked: "
        "their register_model / register_dataset / ... calls name what the config uses"))
    data: DataSection
    model: ModelSection
    loss: Literal[LOSSES] = Field("auto", description="auto (by the data's task), "
                                                      "cross_entropy or mse")
    optimizer: OptimizerSection
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    train: TrainSection = Field(default_factory=TrainSection)
    measure: list[MeasureItem] = Field(default_factory=list,
                                       description="instruments measured during training")
    store: StoreSection = Field(default_factory=StoreSection)


# --- registry-backed checks ------------------------------------------------------------------

def _signature_params(fn: Callable, skip: tuple[str, ...]) -> tuple[dict[str, Any], bool]:
    """``({name: default-or-REQUIRED}, accepts_var_kwargs)`` of ``fn``'s keyword parameters."""
    params: dict[str, Any] = {}
    var_kw = False
    for p in inspect.signature(fn).parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                        inspect.Parameter.KEYWORD_ONLY) and p.name not in skip:
            params[p.name] = p.default
    return params, var_kw


def _required_numbers(fn: Callable) -> frozenset[str]:
    """Names of ``fn``'s required parameters annotated as a number (``period: float``), whose
    config value must be one (a string there failed inside the callable, in Python's words)."""
    return frozenset(p.name for p in inspect.signature(fn).parameters.values()
                     if p.default is p.empty and p.annotation in ("float", "int", float, int))


def _optional_numbers(fn: Callable) -> frozenset[str]:
    """Names of ``fn``'s parameters annotated as a number or None with default None
    (``memory_budget: int | None = None``), whose config value must be a number or null (a
    string there passed the config and failed at the first measurement)."""
    return frozenset(p.name for p in inspect.signature(fn).parameters.values()
                     if p.default is None and str(p.annotation).replace(" ", "") in
                     ("int|None", "float|None", "Optional[int]", "Optional[float]"))


def _nullable(fn: Callable) -> frozenset[str]:
    """Names of ``fn``'s parameters that accept None (annotated ``int | None``, or default
    None), so a config may give them as null."""
    return frozenset(p.name for p in inspect.signature(fn).parameters.values()
                     if p.default is None or "None" in str(p.annotation))


def _check_args(path: str, given: dict[str, Any], params: dict[str, Any], var_kw: bool,
                owner: str, errors: list[str],
                nullable: frozenset[str] = frozenset(),
                numbers: frozenset[str] = frozenset(),
                beside: tuple[str, Sequence[str]] | None = None,
                fixed_tuples: bool = False) -> dict[str, Any]:
    """Keys of ``given`` against a signature: unknown keys, missing required ones, and values
    whose type cannot match the default's (a string for a number, ...; null only where the
    parameter is in ``nullable``); a required parameter in ``numbers`` takes a number.
    ``fixed_tuples``: a tuple default's length is the value's (an optimizer's betas; a
    model's widths take any length).
    ``beside``: (what, keys) valid in the same mapping but checked elsewhere (an instrument's
    schedule), suggested for a misspelt key and listed with the parameters."""
    out = {}
    others = list(beside[1]) if beside else []
    for k, v in given.items():
        p = join(path, k)
        plain_data(p, v, errors)
        if k not in params and not var_kw:
            msg = unknown_key(path, k, [*params, *others])
            listed = f"; {beside[0]}: {', '.join(others)}" if beside else ""
            errors.append(msg if "did you mean" in msg else
                          f"{p}: unknown key ({owner} accepts: {', '.join(params) or 'nothing'}"
                          f"{listed})")
            continue
        if v is None and k in nullable:
            out[k] = v
            continue
        d = params.get(k, REQUIRED)
        if (d is REQUIRED or d is None) and k in numbers:
            d = 0.0                       # checked as a number with a finite default
        if isinstance(d, bool):
            if not isinstance(v, bool):
                errors.append(f"{p}: must be true or false, got {v!r}")
        elif isinstance(d, (int, float)) and not isinstance(d, bool):
            is_lr = k == "lr" or k.endswith("_lr")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                errors.append(f"{p}: must be a number, {refused_value(v)}")
            elif isinstance(v, float) and math.isnan(v):
                # the rule refusing inf below, or none: an infinite default allows inf
                errors.append(f"{p}: must be a finite number, got nan" if is_lr
                              or not math.isinf(d) else f"{p}: must be a number (inf allowed), "
                                                         "not nan")
            elif math.isinf(v):
                if is_lr:
                    # an infinite step size passes torch's checks but is never meaningful
                    # (-inf is left to the range check: "must be >= 0")
                    if v > 0:
                        errors.append(f"{p}: a learning rate must be finite, got inf")
                elif not math.isinf(d):
                    # momentum, weight decay, noise scales...: finite defaults, no meaning at
                    # ±inf
                    errors.append(f"{p}: must be a finite number, got {v}")
        elif (isinstance(d, tuple) and d and all(isinstance(e, (int, float))
                                                 and not isinstance(e, bool) for e in d)):
            # (0.9, 0.999): torch indexes the value, a scalar failed as "'int' object is not
            # subscriptable"
            if not isinstance(v, (list, tuple)) or any(
                    isinstance(e, bool) or not isinstance(e, (int, float)) for e in v):
                errors.append(f"{p}: must be a list of numbers, got {v!r}")
            elif fixed_tuples and len(v) != len(d):
                # Adam's betas: torch indexes [0], [1] (a short list was "list index out of
                # range") and unpacks two at its first step (a long one failed mid-run)
                errors.append(f"{p}: must be a list of {len(d)} numbers, got {v!r}")
        out[k] = v
    for k, d in params.items():
        if d is REQUIRED and k not in given:
            errors.append(f"{join(path, k)}: required by {owner}")
    return out


def _registered_name(path: str, sec: dict[str, Any], registry, what: str, errors: list[str],
                     key: Callable[[str], str] = str) -> str | None:
    """``sec["name"]`` if it names an entry of ``registry`` (looked up as ``key(name)``); None
    (and the problem reported) if it is unknown."""
    name = sec["name"]
    if key(name) not in registry:
        errors.append(_unknown_name(join(path, "name"), name, registry, what))
        return None
    return name


def _spelt_name(path: str, sec: dict[str, Any], registry, what: str,
                errors: list[str]) -> str | None:
    """As :func:`_registered_name`, for a registry whose names are matched in either spelling
    (``entropy-sgd`` for ``entropy_sgd``: optimizers, schedules); the section's name becomes
    the registered spelling, so that the stored config, and a run key or comparison made
    from it, is the same whichever spelling the config used."""
    name = registered_spelling(sec["name"], registry)
    if name is None:
        errors.append(_unknown_name(join(path, "name"), sec["name"], registry, what))
        return None
    sec["name"] = name
    return name


def _key_named(message: str, keys: list[str]) -> str | None:
    """The one key of ``keys`` that an optimizer's or schedule's error message speaks of."""
    low = message.lower()
    hits = [k for k in keys
            if re.search(rf"(?<![\w]){re.escape(k.lower())}(?![\w])", low)
            or any(w in low for w in _KEY_WORDS.get(k, ()))]
    return hits[0] if len(hits) == 1 else None


def _key_quoted(message: str, hyper: dict[str, Any]) -> str | None:
    """The one key of ``hyper`` whose text value, or a text item of its list, ``message``
    quotes ("could not convert string to float: 'a'" of ``milestones: [a]``)."""
    hits = [k for k, v in hyper.items()
            if any(isinstance(x, str) and repr(x) in message
                   for x in (v if isinstance(v, list) else [v]))]
    return hits[0] if len(hits) == 1 else None


def _check_hyper(path: str, sec: dict[str, Any], name: str, params: dict[str, Any],
                 var_kw: bool, what: str, errors: list[str],
                 build: Callable[[dict[str, Any]], Any] | None,
                 numbers: frozenset[str] = frozenset(),
                 nullable: frozenset[str] = frozenset()) -> None:
    """The section's keys but ``name`` against the signature; if they pass, ``build(hyper)``
    lets the callable check its own ranges, reported under the key its message names."""
    hyper = {k: v for k, v in sec.items() if k != "name"}
    n_errors = len(errors)
    _check_args(path, hyper, params, var_kw, f"{what} {name!r}", errors, numbers=numbers,
                nullable=nullable, fixed_tuples=what == "optimizer")
    if what == "optimizer":
        for k in _NON_NEGATIVE:
            v = hyper.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                errors.append(f"{join(path, k)}: must be >= 0, got {v!r}")
    if len(errors) == n_errors and build is not None:
        try:
            build(hyper)
        except Exception as e:  # any rejection of these arguments is a config problem
            key = _key_named(str(e), list(hyper)) or _key_quoted(str(e), hyper)
            errors.append(f"{join(path, key)}: {e}" if key else f"{path} ({name}): {e}")


def _optimizer_signature(cls: Any) -> Callable:
    """What a registered optimizer's hyper-parameters are read from: a class's ``__init__``,
    or the factory function itself."""
    return cls.__init__ if inspect.isclass(cls) else cls


def _optimizer_params(name: str) -> tuple[dict[str, Any], bool]:
    from ..optim import OPTIMIZERS
    from ..optim.registry import needs_model

    cls = OPTIMIZERS[name]
    skip = ("self", "params") + (("model", "loss_fn", "data") if needs_model(cls) else ())
    params, var_kw = _signature_params(_optimizer_signature(cls), skip)
    # a variant of a shared signature that cannot do without one of its None defaults
    # (gld-const's sigma)
    for k in getattr(cls, "required_args", ()):
        params[k] = REQUIRED
    return params, var_kw


def _schedule_params(name: str) -> tuple[dict[str, Any], bool]:
    from ..optim import SCHEDULES

    return _signature_params(SCHEDULES[name], ("optimizer", "steps_per_epoch", "total_steps"))


def _check_optimizer(path: str, sec: dict[str, Any], errors: list[str]) -> None:
    import torch

    from ..optim import OPTIMIZERS
    from ..optim.registry import needs_model

    name = _spelt_name(path, sec, OPTIMIZERS, "optimizer", errors)
    if name is None:
        return
    cls = OPTIMIZERS[name]
    params, var_kw = _optimizer_params(name)
    # a number with no default (random-lr-sgd's lr) or a None one (entropy_sgd's gamma_min):
    # a string there reached the optimizer's range checks ("'>=' not supported between ...")
    fn = _optimizer_signature(cls)
    optional = _optional_numbers(fn)
    _check_hyper(path, sec, name, params, var_kw, "optimizer", errors,
                 None if needs_model(cls)
                 else lambda hyper: cls([torch.nn.Parameter(torch.zeros(1))], **hyper),
                 numbers=_required_numbers(fn) | optional, nullable=optional)


def micro_batch_optimizer_problem(name: Any) -> str | None:
    """Why a ``micro_batch`` does not go with optimizer ``name``, or None: an optimizer whose
    closure draws its own batches (Entropy-SGD, HJ, ...), which the loop cannot chunk
    (:func:`~sgdlab.train.loop.micro_batch_optimizer_refusal`). A run config's
    ``train.micro_batch`` and an experiment run's ``micro_batch`` are checked so before a run
    is recorded (the loop refuses it as it sets up, before the first step)."""
    from ..optim import OPTIMIZERS
    from ..train.loop import micro_batch_optimizer_refusal

    name = registered_spelling(name, OPTIMIZERS)
    problem = (None if name is None
               else micro_batch_optimizer_refusal(OPTIMIZERS[name], f"optimizer {name!r}"))
    return None if problem is None else f"{problem} (leave micro_batch out)"


def _check_schedule(path: str, sec: dict[str, Any], errors: list[str]) -> None:
    import torch

    from ..optim import SCHEDULES, build_schedule

    name = _spelt_name(path, sec, SCHEDULES, "schedule", errors)
    if name is None:
        return
    params, var_kw = _schedule_params(name)

    def build(hyper: dict[str, Any]) -> None:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        if name == "scoping":
            # it scopes a hyper-parameter of the configured optimizer (gamma, rho): whether
            # that optimizer has it is checked when the run is built, not on this stand-in
            opt.param_groups[0].setdefault(hyper.get("key", "gamma"), 1.0)
        build_schedule(name, opt, steps_per_epoch=10, total_steps=100, **hyper)

    _check_hyper(path, sec, name, params, var_kw, "schedule", errors, build,
                 numbers=_required_numbers(SCHEDULES[name]))


def _check_data(path: str, sec: dict[str, Any], errors: list[str]) -> None:
    from ..data import DATASETS, dataset_options
    from ..data.registry import canonical_name, check_dataset_options

    if sec.get("file") is not None:
        # the tensors are the data: nothing to draw, download or pass on
        others = [k for k, default in (("name", None), ("data_dir", None), ("options", {}),
                                       ("seed", 0)) if sec.get(k, default) != default]
        if others:
            errors.append(data_file_alone(path, [join(path, k) for k in others]))
        return
    if sec.get("sha256") is not None:
        errors.append(f"{join(path, 'sha256')}: the fingerprint of a data file, but "
                      f"{join(path, 'file')} is not given")
    if sec.get("name") is None:
        errors.append(_no_data_source(path))
        return
    name = _registered_name(path, sec, DATASETS, "dataset", errors, key=canonical_name)
    if name is None:
        return
    before = len(errors)
    _check_args(join(path, "options"), sec["options"], dataset_options(name), False,
                f"dataset {name!r}", errors)
    if len(errors) == before:
        # values the loader refuses (mnist1d's num_samples) fail here, not once the run is
        # recorded and generating
        try:
            check_dataset_options(name, sec["options"])
        except UserError as e:
            errors.append(f"{join(path, 'options')}: {e}")


def data_file_alone(path: str, others: list[str], whole: str = "section") -> str:
    """The problem of a data file (``PATH.file``) given with ``others`` (their key paths)
    beside it: the tensors are the data, nothing to draw, download or pass on. A run
    config's ``data`` section and an experiment's ``dataset`` mapping (``whole``) say it
    alike."""
    return (f"{join(path, 'file')}: a data file takes no other keys, got {', '.join(others)} "
            f"(the whole {whole} is {path}: {{file: PATH}})")


def _no_data_source(path: str) -> str:
    return (f"{join(path, 'name')}: required key is missing (a registered dataset; or "
            f"{join(path, 'file')}: a file of tensors)")


def _model_key(name: str) -> str:
    """The registry key a config's ``model.name`` is looked up under, as ``build_model`` looks
    it up."""
    from ..models.registry import model_key

    return model_key(name)


def _check_model(path: str, sec: dict[str, Any], errors: list[str]) -> None:
    from ..models import MODELS, describe

    name = _registered_name(path, sec, MODELS, "model", errors, key=_model_key)
    if name is None:
        return
    _check_args(join(path, "options"), sec["options"], describe(name).options, False,
                f"model {name!r}", errors)


def _check_measure_item(path: str, item: dict[str, Any], errors: list[str], *,
                        build: bool = True) -> None:
    """One ``measure`` item: its keys against the instrument's signature and, with ``build``
    and no problem found so far, the instrument built (on no schedule, with no model), so
    that its own checks of its values run: an experiment builds each run's instruments only
    when that run starts, after the runs before it have trained. A caller that builds them
    next with the run's model (:func:`build_measure`, every problem at once) passes False."""
    from ..train.instruments import instrument_params, instruments

    registry = instruments()
    n_errors = len(errors)
    name = _registered_name(path, item, registry, "instrument", errors)
    if name is None:
        return
    given = {k: v for k, v in item.items() if k not in ("name",) + _SCHEDULE_KEYS}
    params = instrument_params(name)
    # a misspelt schedule key (evry) is named as one, and the listing has them too
    _check_args(path, given, params or {}, params is None, f"instrument {name!r}", errors,
                nullable=_nullable(registry[name]), numbers=_optional_numbers(registry[name]),
                beside=("its schedule", _SCHEDULE_KEYS))
    if "memory_budget" in given and "memory_budget" in (params or {}):
        from ..measure.passes import memory_budget_bytes

        # checked when the config is read: a run config's validation leaves the instrument's
        # build to build_from_config
        try:
            memory_budget_bytes(given["memory_budget"])
        except ValueError as e:
            errors.append(f"{join(path, 'memory_budget')}: {e}")
    seed = given.get("seed")
    if (isinstance(seed, (int, float)) and not isinstance(seed, bool) and not is_seed(seed)
            and "seed" in (params or {})
            and getattr(registry[name], "__module__", "").startswith("sgdlab.")):
        # sgdlab's instruments bound it so when built, which a run config's validation leaves
        # to build_from_config: refused with the config, in a run config's seed's words
        errors.append(not_a_seed(f"{join(path, 'seed')}:", seed))
    chosen = [k for k in ("every", "at", "log_points") if item.get(k) is not None]
    if len(chosen) > 1:
        errors.append(f"{path}: give at most one of every, at, log_points")
    starts = bool(item.get("start"))    # 0, the default, moves nothing
    if getattr(registry[name], "own_cadence", False):
        for key in chosen + ["start"] * starts:
            errors.append(f"{path}.{key}: instrument {name!r} keeps its own cadence "
                          f"({registry[name].own_cadence}); {key} would be ignored")
    elif starts and set(chosen) & {"at", "log_points"}:
        other = "at" if "at" in chosen else "log_points"
        errors.append(f"{path}.start: start is the first step of `every`; {other} names its "
                      "own steps (give start with every, or the steps in at)")
    if build and len(errors) == n_errors:
        from ..train.callbacks import Schedule
        from ..train.instruments import build_instrument

        try:
            build_instrument(name, schedule=Schedule.never(), **given)
        except (ValueError, TypeError, UserError) as e:
            errors.append(_option_error(path, item, e, instrument=name))


def with_instrument_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """A validated config with each ``measure`` item's instrument options that were not given
    filled in with their defaults (those of :func:`json_schema`), as ``sgdlab train
    --print-config`` shows it; the run is the same (the instrument gets the same values).
    A required option stays absent; an instrument taking ``**kwargs`` gets nothing added, as
    does one not registered (a stored run's, of a plugin not imported): ``sgdlab runs
    compare`` fills in both runs' items this way, so that a run trained from the printed
    config and one from the config it printed compare equal."""
    from ..train.instruments import instrument_params, instruments

    items = []
    for item in cfg["measure"]:
        if isinstance(item, dict) and item.get("name") in instruments():
            defaults = _param_schema_defaults(instrument_params(item["name"]) or {})
            item = {**item, **{k: v for k, v in defaults.items() if k not in item}}
        items.append(item)
    return {**cfg, "measure": items}


def argument_defaults(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The defaults of the arguments of a validated config's optimizer and model that it
    does not give, by the path of the mapping they would go in (``optimizer``,
    ``model.options``), read from the registered callables' signatures as the validation
    reads them (the optimizer's ``__init__``, the model builder's keyword-only options): what
    ``sgdlab train --print-config`` shows as defaults. Left out: a required argument (no
    default), a private one (``_name``) and a default a config cannot spell (not plain
    data); a tuple is shown as the list a config gives. An optimizer or model not registered
    (a plugin's, not imported) has none."""
    from ..models import MODELS, describe
    from ..optim import OPTIMIZERS

    out: dict[str, dict[str, Any]] = {}
    opt = cfg["optimizer"]
    if opt["name"] in OPTIMIZERS:
        out["optimizer"] = _spelt_defaults(_optimizer_params(opt["name"])[0], opt)
    model = cfg["model"]
    if _model_key(model["name"]) in MODELS:
        out["model.options"] = _spelt_defaults(describe(model["name"]).options,
                                               model["options"])
    return {k: v for k, v in out.items() if v}


def _spelt_defaults(params: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, default in params.items():
        if k in given or k == "name" or k.startswith("_") or default is REQUIRED:
            continue
        value = list(default) if isinstance(default, tuple) else default
        if _plain_value(value):
            out[k] = value
    return out


def _plain_value(v: Any) -> bool:
    """Whether ``v`` is YAML a config can hold: None, bool, number, string, or lists and
    string-keyed mappings of them."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, list):
        return all(_plain_value(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain_value(x) for k, x in v.items())
    return False


def _param_schema_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """The defaults of ``params`` a config can spell (as the JSON Schema gives them)."""
    return {k: schema["default"] for k, schema in
            ((k, _param_schema(d)) for k, d in params.items()) if "default" in schema}


def _unknown_name(path: str, name: str, registry, what: str) -> str:
    from ..optim.registry import not_an_optimizer

    hint = did_you_mean(name, registry)
    # Elastic-SGD is a replica method (sgdlab parle), told as build_optimizer tells it
    elsewhere = not_an_optimizer(name) if what == "optimizer" else ""
    # a name of the user's own is registered by a module sgdlab has not imported
    own = ("" if hint or elsewhere or what not in ("model", "dataset", "optimizer",
                                                   "instrument") else
           f" (a {what} of your own: name the module that registers it under plugins: "
           "[MODULE] or with --plugin MODULE)")
    return (f"{path}: unknown {what} {name!r}{hint}{own}; known: "
            f"{', '.join(sorted(registry))}{elsewhere}")


_CHECKS: dict[str, Callable[[str, dict[str, Any], list[str]], None]] = {
    "data": _check_data, "model": _check_model, "optimizer": _check_optimizer,
    "schedule": _check_schedule, "measure": _check_measure_item,
}
_SECTIONS: dict[str, type[Section]] = {
    "data": DataSection, "model": ModelSection, "optimizer": OptimizerSection,
    "schedule": ScheduleSection, "measure": MeasureItem,
}


def validate_section(key: str, value: Any, *, path: str) -> dict[str, Any]:
    """One ``optimizer``, ``schedule``, ``measure`` item, ``data`` or ``model`` section, checked
    as in a run config (structure, then the registered callable's arguments; a ``measure``
    item's instrument is built, so that its own checks run) and reported under ``path``;
    ConfigError listing the problems."""
    errors: list[str] = []
    sec = validate(value, _SECTIONS[key], path=path, errors=errors)
    if sec is not None:
        _CHECKS[key](path, sec, errors)
    if errors:
        raise config_error(errors)
    return sec


def _named_argument(raw: dict[str, Any], err: dict[str, Any]) -> str | None:
    """For an unknown key of ``data`` or ``model`` that is an argument of the dataset or model
    it names (``model: {name: mlp, widths: [64]}``, as replica configs write it), where that
    argument goes; None otherwise."""
    from ..data import DATASETS, dataset_options
    from ..data.registry import canonical_name
    from ..models import MODELS, describe

    loc = err["loc"]
    if err["type"] != "extra_forbidden" or len(loc) != 2 or loc[0] not in ("data", "model"):
        return None
    name = raw[loc[0]].get("name")
    if not isinstance(name, str):
        return None
    if loc[0] == "data":
        name = canonical_name(name)
        options = dataset_options(name) if name in DATASETS else {}
    else:
        name = _model_key(name)
        options = describe(name).options if name in MODELS else {}
    if loc[1] not in options:
        return None
    what = "dataset" if loc[0] == "data" else "model"
    return (f"{loc[0]}.{loc[1]}: unknown key ({loc[1]} is an argument of the {what} {name!r}: "
            f"it goes under {loc[0]}.options, as {loc[0]}.options.{loc[1]})")


def validate_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate a run config (as loaded from YAML/TOML) and fill in defaults.

    Raises :class:`ConfigError` naming every offending key path."""
    errors: list[str] = []
    plain_data("config", raw, errors)
    if errors:
        raise config_error(errors)
    if not isinstance(raw, dict):
        raise config_error([f"config: must be a mapping, got {raw!r}"])
    check_config_kind(raw, "run")
    plugins = _import_config_plugins(raw.get("plugins"))
    failed: list[tuple] = []
    try:
        cfg = RunConfig.model_validate(raw).model_dump()
    except ValidationError as e:
        cfg = None
        failed = [tuple(err["loc"]) for err in e.errors()]
        errors += [_named_argument(raw, err) or message
                   for err, message in zip(e.errors(), problems(e, RunConfig))]

    def sound(loc: tuple) -> bool:  # no structural problem in or above loc
        return not any(f[:len(loc)] == loc or loc[:len(f)] == f for f in failed)

    def checked(key: str, value: Any) -> dict[str, Any]:
        return _SECTIONS[key].model_validate(value or {}).model_dump()

    for key in ("data", "model", "optimizer", "schedule"):
        if sound((key,)):
            _CHECKS[key](key, cfg[key] if cfg else checked(key, raw.get(key)), errors)
    if cfg and cfg["train"]["micro_batch"] is not None:
        problem = micro_batch_optimizer_problem(cfg["optimizer"]["name"])
        if problem is not None:
            errors.append(f"train.micro_batch: {problem}")
    data = raw.get("data")
    if (not sound(("data",)) and isinstance(data, dict)
            and data.get("name") is None and data.get("file") is None):
        errors.append(_no_data_source("data"))   # beside the section's other problems
    items = raw.get("measure")
    for i, item in enumerate(items if isinstance(items, list) else []):
        if sound(("measure", i)) and isinstance(item, dict):
            # build_from_config builds them with the model's checks: every problem at once
            _check_measure_item(f"measure[{i}]", cfg["measure"][i] if cfg
                                else checked("measure", item), errors, build=False)
    if not errors and cfg["model"]["warm_start"] is not None and not cfg["model"]["init_from"]:
        errors.append("model.warm_start: records a warm start, but model.init_from is not set "
                      "(remove both to start from the seed's weights)")
    if errors:
        raise config_error(errors)
    # a run without a warm start, plugins, a data file or micro-batches keeps the config it
    # always had (stored configs compare)
    for key in ("init_from", "warm_start"):
        if cfg["model"][key] is None:
            del cfg["model"][key]
    if cfg["train"]["micro_batch"] is None:
        del cfg["train"]["micro_batch"]
    if cfg["plugins"]:
        from ..plugins import recorded_plugins

        # a plugin file's path, as a data file's, is stored absolute: the run is rebuilt from
        # any folder (sgdlab measure, sgdlab resume)
        cfg["plugins"] = recorded_plugins(plugins)
    else:
        del cfg["plugins"]
    if cfg["data"]["sha256"] is None:
        del cfg["data"]["sha256"]
    if cfg["data"]["file"] is None:
        del cfg["data"]["file"]
    else:
        del cfg["data"]["name"]
        cfg["data"]["file"] = str(Path(cfg["data"]["file"]).expanduser().resolve())
    return cfg


def _import_config_plugins(plugins: Any) -> Any:
    """Import a config's ``plugins`` before its names are checked (a malformed list is left
    to the structural check); the list to record, a file that is gone replaced by the one
    given in its place (:func:`~sgdlab.plugins.import_recorded_plugins`)."""
    from ..plugins import import_recorded_plugins

    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        return import_recorded_plugins(plugins)
    return plugins


# --- the training settings -----------------------------------------------------------------

# the keys of a run config that decide what a run trains and records (None: the whole
# section): not its name, where it ran (device, threads, data_dir), how it shows progress or
# where it writes (tensorboard, checkpoint_every, store), nor a warm start's record of itself
TRAINING_KEYS: dict[str, tuple[str, ...] | None] = {
    "data": ("name", "file", "sha256", "seed", "options"),
    "model": ("name", "options", "init_from"),
    "loss": None,
    "optimizer": None,
    "schedule": None,
    "train": ("epochs", "batch_size", "replacement", "drop_last", "seed", "eval_every",
              "eval_subset", "eval_bn", "max_steps", "clip_grad_norm", "micro_batch",
              "sequence_loss", "dtype"),
    "measure": None,
}


def training_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The :data:`TRAINING_KEYS` of a validated run config ``cfg``: what ``sgdlab runs
    compare`` sets side by side for runs of ``sgdlab train`` and of a sweep's ``train``
    procedure (which records the settings of each run in these names). The result is itself
    a run config that :func:`validate_config` accepts and that trains the same run."""
    import copy

    out: dict[str, Any] = {}
    for section, keys in TRAINING_KEYS.items():
        if section not in cfg:
            continue
        value = cfg[section]
        if keys is not None and isinstance(value, dict):
            # no warm start is no init_from key, no data file no file key, a data file no
            # name, no micro-batches no micro_batch key, as validate_config leaves them
            value = {k: value[k] for k in keys
                     if k in value and not (k in ("init_from", "file", "sha256", "name",
                                                  "micro_batch") and value[k] is None)}
        out[section] = copy.deepcopy(value)
    return out


def stored_training_settings(cfg: Any) -> dict[str, Any] | None:
    """:func:`training_settings` of a config a run of ``sgdlab train`` stored, with the
    defaults of the current sections filled in (a run stored before a key existed has that
    key's default); None for any other config (a sweep's, ``sgdlab parle``'s, ``sgdlab
    measure``'s). Structure only: the registries (and torch) are not loaded."""
    if not isinstance(cfg, dict) or "run_key" in cfg:
        return None
    try:
        return training_settings(RunConfig.model_validate(cfg).model_dump())
    except ValidationError:
        return None


def training_hparams(cfg: Any) -> dict[str, Any]:
    """The hyper-parameters a stored run's config ``cfg`` shows in TensorBoard's HParams
    dashboard: for a run of ``sgdlab train``, its :func:`stored_training_settings` (what
    ``sgdlab runs compare`` sets side by side, not where it ran or wrote) by dotted key;
    for any other run (a sweep's: its grid point, label and seed), as
    :func:`sgdlab.train.tensorboard.run_hparams` gives them."""
    from ..train.tensorboard import run_hparams

    settings = stored_training_settings(cfg)
    return run_hparams(cfg if settings is None else settings)


# --- the JSON Schema ---------------------------------------------------------------------------

def _param_schema(default: Any, nullable: bool = False) -> dict[str, Any]:
    """A keyword argument's JSON Schema, from its default's type."""
    if default is REQUIRED:
        return {}
    if isinstance(default, bool):
        out: dict[str, Any] = {"type": "boolean"}
    elif isinstance(default, (int, float)):
        out = {"type": "number"}
    elif isinstance(default, str):
        out = {"type": "string"}
    elif isinstance(default, (list, tuple)):
        out, default = {"type": "array"}, list(default)
    else:
        out = {}
    if nullable and "type" in out:
        out["type"] = [out["type"], "null"]
    try:
        json.dumps(default, allow_nan=False)
        out["default"] = default
    except (TypeError, ValueError):
        pass
    return out


def _by_name(section: dict[str, Any], entries: dict[str, tuple[dict[str, Any], bool]], *,
             fixed: tuple[str, ...] = ("name",), under: str | None = None,
             ranges: dict[str, dict[str, Any]] | None = None,
             nullable: Callable[[str], frozenset[str]] = lambda name: frozenset()) -> None:
    """Add to a section's schema the enum of registered names and, per name, its arguments
    (``if name == X then ...``), at the section's level or under its key ``under``."""
    section["properties"]["name"]["enum"] = sorted(entries)
    rules = []
    for name, (params, var_kw) in sorted(entries.items()):
        null = nullable(name)
        props = {k: {**_param_schema(d, k in null), **(ranges or {}).get(k, {})}
                 for k, d in params.items()}
        body: dict[str, Any] = {"properties": props}
        if not var_kw:
            body["additionalProperties"] = False
        if under is None:
            body["properties"] = {**{k: True for k in fixed}, **props}
            required = [k for k, d in params.items() if d is REQUIRED]
            if required:
                body["required"] = required
        else:
            body = {"properties": {under: {"type": "object", **body}}}
        rules.append({"if": {"properties": {"name": {"const": name}}, "required": ["name"]},
                      "then": body})
    section["allOf"] = rules


def _both_spellings(entries: dict[str, Any]) -> dict[str, Any]:
    """``entries`` with each name also under its other spelling (``-`` for ``_`` and back):
    the validator accepts both (:func:`sgdlab.errors.registered_spelling`), so the schema
    does."""
    out = dict(entries)
    for n, v in entries.items():
        for other in (n.replace("_", "-"), n.replace("-", "_")):
            out.setdefault(other, v)
    return out


def json_schema() -> dict[str, Any]:
    """The run config's JSON Schema (draft 2020-12): the fixed structure from
    :class:`RunConfig`, plus the registered names and each one's arguments, so an editor
    completes and checks ``optimizer: {name: sgd, lr: ...}`` as the validator does."""
    from ..data import DATASETS, dataset_options
    from ..models import MODELS, describe
    from ..optim import OPTIMIZERS, SCHEDULES
    from ..train.instruments import instrument_params, instruments

    schema = RunConfig.model_json_schema()
    defs = schema["$defs"]
    _by_name(defs["OptimizerSection"],
             _both_spellings({n: _optimizer_params(n) for n in OPTIMIZERS}),
             ranges={k: {"minimum": 0} for k in _NON_NEGATIVE})
    _by_name(defs["ScheduleSection"], _both_spellings({n: _schedule_params(n) for n in SCHEDULES}))
    inst = {n: ((instrument_params(n) or {}), instrument_params(n) is None)
            for n in instruments()}
    _by_name(defs["MeasureItem"], inst, fixed=("name",) + _SCHEDULE_KEYS,
             nullable=lambda n: _nullable(instruments()[n]))
    data = _both_spellings({n: (dataset_options(n), False) for n in DATASETS})
    _by_name(defs["DataSection"], data, under="options")
    _by_name(defs["ModelSection"], {n: (describe(n).options, False) for n in MODELS},
             under="options")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema,
            "title": "sgdlab run config"}


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


def _option_error(path: str, item: dict[str, Any], e: Exception,
                  instrument: str | None = None) -> str:
    """An instrument's error for the ``measure`` item at ``path``: its "Invalid KEY=..." (or
    an on/off option's "KEY must be True or False", :func:`~sgdlab.errors.check_flag`) names
    the option, and is reported under the option's key path (after the instrument's name,
    where the path alone does not show which instrument the item is)."""
    key = re.match(r"Invalid (\w+)=|(\w+) must be True or False", str(e))
    key = key and (key[1] or key[2])
    named = (f"instrument {instrument!r}: "
             if instrument and f"instrument {instrument!r}" not in str(e) else "")
    return path + (f".{key}" if key and key in item else "") + f": {named}{e}"


def build_measure(items: list[dict[str, Any]], total_steps: int, model: Any = None,
                  data: Any = None) -> list:
    """Callbacks for validated ``measure`` items (see :class:`MeasureItem`); with the run's
    ``model`` and ``data``, each one's :meth:`~sgdlab.train.callbacks.Callback.check` on them
    too (more eigenpairs than parameters, ``eval_mode: false`` on a batch norm in train mode,
    ...), so that every bad option is reported at once, before the run is recorded."""
    from ..train.instruments import build_instrument

    callbacks, prefixes, errors = [], {}, []
    for i, item in enumerate(items):
        params = {k: v for k, v in item.items() if k not in ("name",) + _SCHEDULE_KEYS}
        try:
            callbacks.append(build_instrument(item["name"],
                                              schedule=measure_schedule(item, total_steps),
                                              **params))
            if model is not None:
                callbacks[-1].check(model, data)
        except (ValueError, TypeError, UserError) as e:
            errors.append(_option_error(f"measure[{i}]", item, e))
            continue
        prefix = getattr(callbacks[-1], "prefix", None)
        if prefix is not None and prefix in prefixes:
            errors.append(f"measure[{i}]: its series ({prefix}/...) are already written by "
                          f"measure[{prefixes[prefix]}]; give it another prefix")
        prefixes.setdefault(prefix, i)
    if errors:  # every bad option at once, as the config's other checks report them
        raise config_error(errors)
    return callbacks


def missing_device(name: str) -> str | None:
    """Why the CUDA device ``name`` (cuda or cuda:N) is not on this machine (no CUDA, or
    fewer devices than its index needs); None when it is, or for any other device."""
    import torch
    if not name.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        return "CUDA is not available on this machine"
    index = torch.device(name).index
    if index is not None and index >= torch.cuda.device_count():
        return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def resolve_device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    problem = missing_device(name)
    if problem is not None:
        raise ConfigError(f"train.device: {name!r} requested but {problem}")
    return name


def build_from_config(cfg: dict[str, Any], *, validated: bool = False, store: Any = None,
                      init: bool = True) -> BuiltRun:
    """Build model, loss, data, optimizer, schedule and callbacks from a run config.

    Seeds torch, numpy and Python's global RNGs with ``train.seed`` before building the model,
    so a config fixes the initial weights; ``data.seed`` fixes the data. With
    ``model.init_from`` (and ``init``) the model then takes that checkpoint's weights (run ids
    looked up in the run store at ``store``, default ``store.path`` or the default store),
    before the optimizer is built; ``init=False`` leaves them for a resume to replace with the
    run's own checkpoint.
    """
    import numpy as np
    import torch

    from ..data import load_dataset
    from ..models import build_model, check_model_inputs
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
    if d.get("file") is not None:
        from ..data.files import load_data_file

        # a DataError naming the file and what is wrong, or that it changed since recorded
        data = load_data_file(d["file"], sha256=d.get("sha256"))
    else:
        try:
            data = load_dataset(d["name"], seed=d["seed"], data_dir=d["data_dir"],
                                **d["options"])
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
    check_model_inputs(m["name"], data.x_train, data.meta.get("name"))
    try:
        model = build_model(m["name"], data.input_shape, data.num_outputs, **m["options"])
    except UserError as e:  # a bad option value: say which config key holds it
        raise ConfigError(f"model.options: {e}") from None
    model = model.to(device=device, dtype=dtype)
    if m.get("init_from") and init:   # before the optimizer, which is given the model
        from .warm_start import load_warm_start

        load_warm_start(model, m, store if store is not None else cfg["store"]["path"])

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
    if callable(batch_size):
        counts = {steps_per_epoch(n, batch_size(e), t["drop_last"]) for e in range(t["epochs"])}
        from ..optim.protocols import counts_epochs

        if len(counts) > 1 and counts_epochs(sname, s):
            raise ConfigError(
                f"schedule: {sname!r} counts epochs as a fixed number of steps, but the batch-size "
                f"schedule gives {min(counts)} to {max(counts)} steps per epoch (its epochs "
                "would be miscounted); use a schedule in steps, or a constant batch size")
    if sname != "constant" or s:
        try:
            schedule = build_schedule(sname, optimizer,
                                      steps_per_epoch=steps_per_epoch(n, first_batch_size,
                                                                      t["drop_last"]),
                                      total_steps=max(total, 1), **s)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"schedule: {e}") from None

    callbacks = build_measure(cfg["measure"], total, model, data)
    if t["tensorboard"]:  # last, so it sees what the instruments log in the same step
        from ..train.tensorboard import TensorBoardLogger

        callbacks.append(TensorBoardLogger(t["tensorboard"]))

    train_kwargs = dict(epochs=t["epochs"], batch_size=batch_size, replacement=t["replacement"],
                        drop_last=t["drop_last"], seed=seed, eval_every=t["eval_every"],
                        eval_subset=t["eval_subset"], checkpoint_every=t["checkpoint_every"],
                        max_steps=t["max_steps"], device=device, progress=t["progress"],
                        clip_grad_norm=t["clip_grad_norm"], sequence_loss=t["sequence_loss"],
                        eval_bn=t["eval_bn"], micro_batch=t.get("micro_batch"))
    return BuiltRun(model, loss_fn, data, optimizer, schedule, callbacks, train_kwargs)


__all__ = ["BuiltRun", "DataSection", "MeasureItem", "ModelSection", "OptimizerSection",
           "RunConfig", "ScheduleSection", "StoreSection", "TrainSection", "WarmStartRecord",
           "build_from_config",
           "TRAINING_KEYS", "build_measure", "data_file_alone", "json_schema",
           "measure_schedule",
           "with_instrument_defaults",
           "resolve_device", "stored_training_settings", "training_hparams", "training_settings",
           "validate_config", "validate_section"]
