"""The ``train`` procedure: one neural-network training run through ``sgdlab.train.loop.train``.

Run parameters (all data)::

    dataset: {name: digits, n_train: 500, ...}   # load_dataset(name, seed=data_seed, **opts)
                                                 # or {file: PATH}: load_data_file(PATH), its
                                                 # sha256 (in the run key) taken at expansion
    data_seed: 0                                 # the data are the same for every run seed
    model: {name: mlp, ...}                      # build_model(name, input_shape, outputs, **opts)
    loss: cross_entropy | mse                    # default from the dataset's task
    dtype: float32 | float64
    optimizer: {name: sgd, lr: 0.1, ...}         # build_optimizer_for(name, model, ...)
    schedule: {name: cosine_cyclic, ...}         # build_schedule (optional)
    batch_size: 64 | full | {kind: cyclic, low: .., high: .., period: ..}
    epochs: 5
    max_steps: null
    replacement: false                           # mini-batches with replacement
    drop_last: false                             # drop each epoch's last, short batch
    clip_grad_norm: null                         # rescale each gradient to at most this norm
    micro_batch: null                            # take a larger batch's gradient in chunks
                                                 # of this many (batch norm: chunk statistics)
    sequence_loss: mean                          # token data: step on the per-token mean, or
                                                 # window-sum: on it times the window length
    eval_every: 1                                # epochs between evaluations (0: start/end only)
    eval_every_steps: null                       # or: steps between evaluations
    eval_subset: null
    eval_bn: running                             # or recompute: batch-norm statistics of the
                                                 # training set at x before each evaluation
    measure: [{name: hessian, every: 50, eval_subset: 256}]   # instruments during training
                                                 # (sgdlab.config.run.MeasureItem: every | at |
                                                 # log_points; default every step)
    final:   [{kind: hessian_spectrum, samples: 256}]         # on the final model
    init_from: gd                                # start from the final weights of run "gd"
    save_model: true                             # (every run keeps its final weights now)

The model is initialised with ``torch.manual_seed(seed)``; the loop's own ``seed`` (mini-batch
order, noise) is the run seed too. In a sweep the loop checkpoints into the run's
``checkpoint/`` folder (``RunContext.checkpoint_dir``) at the first epoch end (or end of
training) :data:`CHECKPOINT_SECONDS` after the last checkpoint, and resumes from a checkpoint
found there, bit for bit: an interrupted or lost run continues from its last checkpoint.
Every run that ends (finished or diverged) writes its final weights, ``weights.pt`` (model
state dict and step, no optimizer state), in its artifact folder: what dependent runs, warm
starts (``model.init_from: RUN``) and ``sgdlab measure RUN`` load once the sweep has removed
the checkpoint.
"""
from __future__ import annotations

from typing import Any

from sgdlab.errors import (ConfigError, UserError, check_flag, checked_int, did_you_mean,
                           int_at_least, plugin_hint, refused_value)
from sgdlab.experiments.procedures import Procedure, RunOutput, register_procedure
from sgdlab.experiments.procedures.measures import (compute_final, final_metrics,
                                                    measurement_data, validate_measure)
from sgdlab.losses import LOSSES, build_loss

MODEL_FILE = "model.pt"       # the final weights as a bare state dict (``save_model``, before)
WEIGHTS_NAME = "weights.pt"   # sgdlab.train.checkpoint.WEIGHTS_NAME (torch not imported here)
TRAJECTORY_FILE = "trajectory"
# seconds between a sweep run's checkpoints: written at each epoch end they cost a full-batch
# GD run ~80 % of its training time (docs/design/sweeps.md, "Resume")
CHECKPOINT_SECONDS = 60.0


def load_data(p: dict[str, Any], device: str | None = None, dtype=None):
    from sgdlab.data import load_dataset

    opts = dict(p["dataset"])
    if "file" in opts:
        from sgdlab.data.files import load_data_file

        # the content the run key names (sha256), or a DataError: the file changed since
        ds = load_data_file(opts["file"], sha256=opts.get("sha256"))
    else:
        name = opts.pop("name")
        ds = load_dataset(name, seed=int(p.get("data_seed", 0)), **opts)
    if dtype is not None:
        ds = ds.to(dtype=dtype)
    return ds


# images of the embedded datasets that split them into train and ``test_size`` test examples
EMBEDDED_IMAGES = {"digits": 1797, "mnist_small": 5000}


def train_examples(dataset: dict[str, Any]) -> int | None:
    """The training examples a run on a ``dataset`` mapping sees, when its options and files
    tell without loading them: ``n_train`` (a subset taken last), else ``train_size`` of a file
    dataset or what ``test_size`` leaves of an embedded one (``digits``: 1,437,
    ``mnist_small``: 4,000 by default), or the training set of MNIST, Fashion-MNIST and CIFAR
    as counted in the files of its ``data_dir``, the published 60,000 or 50,000 where they are
    absent (:func:`~sgdlab.data.files.train_size_in_files`), unless ``classes`` filters it;
    None otherwise (text windows, whose number depends on the file; a loader whose
    ``n_train`` means something else, such as a grid size). What ``--dry-run`` and a sweep's
    "step X of N" count with. A data file's (``file``, with the ``sha256`` the expansion
    took) are its ``x_train``'s, read once per content."""
    import inspect

    from sgdlab.data import DATASETS
    from sgdlab.data.files import data_file_examples, train_size_in_files
    from sgdlab.data.registry import canonical_name

    if "file" in dataset:
        if dataset.get("sha256") is None:
            return None
        try:
            return data_file_examples(dataset["file"], dataset["sha256"])
        except UserError:     # the plan lists the file's problem
            return None
    name = canonical_name(str(dataset["name"]))
    loader = DATASETS[name]
    signature = inspect.signature(loader).parameters
    if "n_train" in signature:
        return None
    if dataset.get("n_train") is not None:
        return int(dataset["n_train"])
    if dataset.get("classes") is not None:
        return None
    if dataset.get("train_size") is not None:
        return int(dataset["train_size"])
    if name in EMBEDDED_IMAGES:
        return EMBEDDED_IMAGES[name] - int(dataset.get("test_size",
                                                       signature["test_size"].default))
    counted = train_size_in_files(name, dataset.get("data_dir"))
    return None if counted is None else counted.n


def final_weights(folder) -> dict[str, Any]:
    """The state dict a finished ``train`` run left in its artifact folder ``folder``:
    :data:`~sgdlab.train.checkpoint.WEIGHTS_NAME`, or :data:`MODEL_FILE` (a bare state dict)
    of a run that kept only that (``save_model`` before every run kept its weights); read
    by :func:`~sgdlab.train.checkpoint.load_weights`."""
    from pathlib import Path

    from sgdlab.train.checkpoint import load_weights

    folder = Path(folder)
    if (folder / WEIGHTS_NAME).is_file() or not (folder / MODEL_FILE).is_file():
        return load_weights(folder / WEIGHTS_NAME)["model"]
    return load_weights(folder / MODEL_FILE, step=0)["model"]    # (its step is not read)


def build(p: dict[str, Any], seed: int, ctx=None):
    """(dataset, model, loss_fn, dtype) for run parameters ``p``; weights from ``init_from``."""
    import torch

    from sgdlab.models import build_model, check_model_inputs

    dtype = {"float32": torch.float32, "float64": torch.float64}[p.get("dtype", "float32")]
    ds = load_data(p, dtype=dtype)
    mopts = dict(p["model"])
    mname = mopts.pop("name")
    check_model_inputs(mname, ds.x_train, ds.meta.get("name"))
    torch.manual_seed(seed)
    model = build_model(mname, ds.input_shape, ds.num_outputs, **mopts).to(dtype)
    if p.get("init_from"):
        model.load_state_dict(final_weights(ctx.dependencies[p["init_from"]]))
    loss_fn = build_loss(p.get("loss"), ds)
    return ds, model, loss_fn, dtype


def resolve_batch_size(bs: Any, n_train: int):
    if bs == "full":
        return n_train
    if isinstance(bs, dict):
        from sgdlab.train.batch_schedules import build_batch_schedule

        try:
            return build_batch_schedule(dict(bs))     # {kind: cyclic, low:, high:, period:}
        except ValueError as e:
            raise ConfigError(f"batch_size: {e}") from None
    return int(bs)


def _check_data_file(params: dict[str, Any], where: str) -> None:
    """A ``dataset: {file: PATH}`` mapping, refused as a run config's ``data: {file: PATH}``
    section: the file takes no other keys (the tensors are the data: nothing to draw), its
    path and ``sha256`` checked by the run config's schema, in the same words."""
    from sgdlab.config.run import data_file_alone, validate_section

    d = params["dataset"]
    others = sorted(f"dataset.{k}" for k in d if k not in ("file", "sha256"))
    if params.get("data_seed", 0) != 0:
        others.append("data_seed")
    if others:
        raise ConfigError(f"{where}: {data_file_alone('dataset', others, 'mapping')}")
    validate_section("data", {k: d[k] for k in ("file", "sha256") if k in d},
                     path=f"{where}: dataset")


def _check_named(params: dict[str, Any], where: str) -> None:
    """Model/dataset/optimizer/schedule names and options, checked before anything runs."""
    from sgdlab.data import DATASETS, dataset_options
    from sgdlab.data.registry import canonical_name
    from sgdlab.models import describe

    try:
        m = dict(params["model"])
        info = describe(m.pop("name"))
        bad = sorted(set(m) - set(info.options))
        if bad:
            raise ConfigError(f"{where}: model {info.name!r} has no option {bad[0]!r}; "
                              f"valid: {', '.join(sorted(info.options))}")
        if "file" in params["dataset"]:
            _check_data_file(params, where)
        else:
            d = dict(params["dataset"])
            dname = d.pop("name")
            if canonical_name(str(dname)) not in DATASETS:
                raise ConfigError(f"{where}: unknown dataset {dname!r}; known: "
                                  f"{', '.join(sorted(DATASETS))} ({plugin_hint('dataset')})")
            bad = sorted(set(d) - set(dataset_options(dname)) - {"data_dir"})
            if bad:
                raise ConfigError(f"{where}: dataset {dname!r} has no option {bad[0]!r}; "
                                  f"valid: {', '.join(sorted(dataset_options(dname)))}")
            # values the loader refuses (mnist1d's num_samples: 5), as a run config's: before
            # the sweep, not as each run loads its data
            from sgdlab.data.registry import check_dataset_options

            check_dataset_options(dname, {k: v for k, v in d.items() if k != "data_dir"})
    except UserError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from None
    from sgdlab.config.run import validate_section

    for key in ("optimizer", "schedule"):
        if key in params:
            validate_section(key, params[key], path=f"{where}: {key}")


@register_procedure("train")
class TrainProcedure(Procedure):
    allowed = {"dataset", "data_seed", "model", "loss", "dtype", "optimizer", "schedule",
               "batch_size", "epochs", "max_steps", "replacement", "drop_last", "eval_every",
               "eval_subset", "eval_bn", "clip_grad_norm", "sequence_loss",
               "eval_every_steps", "measure", "final", "init_from", "save_model",
               "micro_batch"}
    required = {"dataset", "model", "optimizer", "epochs", "batch_size"}
    numbers = {"clip_grad_norm": "number>0|null"}

    def validate(self, params: dict[str, Any], where: str) -> None:
        super().validate(params, where)
        for k in ("dataset", "model", "optimizer"):
            sec = params[k]
            keys = ("name", "file") if k == "dataset" else ("name",)
            if isinstance(sec, dict) and any(n in sec for n in keys):
                continue
            also = " (or, for a data file of your own, a 'file')" if k == "dataset" else ""
            # what it gives instead, a misspelt 'name' or 'file' said as such
            given = (f"; it gives {', '.join(map(str, sec))}"
                     + "".join(dict.fromkeys(did_you_mean(g, keys) for g in sec))
                     if isinstance(sec, dict) else f", {refused_value(sec)}")
            raise ConfigError(f"{where}: {k!r} must be a mapping with a 'name'{also}{given}")
        _check_named(params, where)
        if "schedule" in params and (not isinstance(params["schedule"], dict)
                                     or "name" not in params["schedule"]):
            raise ConfigError(f"{where}: 'schedule' must be a mapping with a 'name'")
        if params.get("dtype", "float32") not in ("float32", "float64"):
            raise ConfigError(f"{where}: dtype must be float32 or float64")
        check_flag(f"{where}: drop_last", params.get("drop_last", False), error=ConfigError)
        from sgdlab.train.loop import EVAL_BN, SEQUENCE_LOSSES

        if params.get("sequence_loss", "mean") not in SEQUENCE_LOSSES:
            raise ConfigError(f"{where}: sequence_loss must be one of "
                              f"{', '.join(SEQUENCE_LOSSES)}, got {params['sequence_loss']!r}")
        if params.get("eval_bn", "running") not in EVAL_BN:
            raise ConfigError(f"{where}: eval_bn must be one of {', '.join(EVAL_BN)}, got "
                              f"{params['eval_bn']!r}")
        checked_int(f"{where}: epochs", params["epochs"], 1, error=ConfigError)
        # checked here, not first when a run reaches the training loop: --dry-run reports them
        for k, low in (("eval_every", 0), ("eval_every_steps", 1), ("max_steps", 0),
                       ("eval_subset", 1), ("data_seed", 0), ("micro_batch", 1)):
            checked_int(f"{where}: {k}", params.get(k), low, optional=True, error=ConfigError)
        if params.get("micro_batch") is not None:
            from sgdlab.config.run import micro_batch_optimizer_problem

            problem = micro_batch_optimizer_problem(params["optimizer"]["name"])
            if problem is not None:
                raise ConfigError(f"{where}: micro_batch: {problem}")
        for k in ("replacement", "save_model"):
            check_flag(f"{where}: {k}", params.get(k, False), error=ConfigError)
        if params.get("loss") not in (None, *LOSSES):
            raise ConfigError(f"{where}: loss must be one of {', '.join(LOSSES)}, got "
                              f"{params['loss']!r}")
        b = params["batch_size"]
        if not (b == "full" or isinstance(b, dict) or int_at_least(b, 1)):
            raise ConfigError(f"{where}: batch_size must be a positive integer, 'full' or a "
                              f"schedule mapping, {refused_value(b)}")
        from sgdlab.config.run import validate_section

        for k in ("measure", "final"):
            # a mapping's keys had been read as its items ("measure[0]: must be a mapping,
            # got 'name'"), a string's letters as measurements
            if not isinstance(params.get(k) or [], list):
                raise ConfigError(f"{where}: {k} must be a list of mappings (- {{name: ...}} "
                                  f"per {'instrument' if k == 'measure' else 'measurement'}), "
                                  f"{refused_value(params[k])}")
        for i, m in enumerate(params.get("measure", []) or []):
            if isinstance(m, dict) and m.get("name") == "trajectory" and "path" not in m:
                m = {**m, "path": TRAJECTORY_FILE}  # run() records into the artifact directory
            validate_section("measure", m, path=f"{where}: measure[{i}]")
        for i, m in enumerate(params.get("final", []) or []):
            validate_measure(m, f"{where}: final[{i}]", final=True)

    def summary_keys(self, params: dict[str, Any]) -> set[str] | None:
        """The loop's final evaluation metrics and counters, the weights counted and the
        metrics each ``final`` measurement declares (:func:`final_metrics`), as :meth:`run`
        writes them."""
        from sgdlab.train.loop import EVAL_METRICS, FINAL_COUNTERS

        keys = {*EVAL_METRICS, *FINAL_COUNTERS, "num_params"}
        for m in params.get("final") or []:
            keys |= final_metrics(m)
        return keys

    def planned_steps(self, params: dict[str, Any]) -> int | None:
        """The steps of each epoch summed over ``epochs``, capped by ``max_steps``, as
        :meth:`run` and the loop count them (:func:`sgdlab.train.loop.epoch_steps`, a
        batch-size schedule's epochs each at its size), when the training set's size is known
        (:func:`train_examples`) or the batch is the full set."""
        from sgdlab.train.loop import epoch_steps

        p, b = params, params["batch_size"]
        cap = None if p.get("max_steps") is None else int(p["max_steps"])
        n = train_examples(p["dataset"])
        if b == "full":
            total = p["epochs"]
        elif n is None:
            return None
        else:
            try:
                bs = resolve_batch_size(b, n)
                total = sum(epoch_steps(n, bs, p["epochs"], bool(p.get("drop_last", False))))
            except UserError:         # the run fails on it, and says why
                return None
        return total if cap is None else min(total, cap)

    def training_settings(self, params: dict[str, Any], seed: int) -> dict[str, Any] | None:
        """The run's settings as a run config of ``sgdlab train`` names them, defaults filled
        in: ``dataset`` is ``data`` (its options under ``data.options``, ``data_seed`` its
        ``seed``), the model's options go under ``model.options``, the run seed is
        ``train.seed`` (the initial weights and the batch order, as there), no ``loss`` is
        ``auto``, no ``schedule`` is ``constant``, the other loop settings go under
        ``train``. ``eval_every_steps``, which a run config lacks, is kept as
        ``train.eval_every_steps``; ``model.init_from`` names the run of the sweep whose
        final weights the run starts from. ``final`` (measured after training) and
        ``save_model`` decide no training. None when the settings make no valid run config
        (the run is then compared by its params)."""
        from sgdlab.config.run import TRAINING_KEYS, training_settings, validate_config

        p = params
        # the params that are the training loop's settings, in a run config's train.* (the
        # run's seed is the sweep's)
        loop = [k for k in TRAINING_KEYS["train"] if k != "seed" and p.get(k) is not None]
        data, model = dict(p["dataset"]), dict(p["model"])
        raw: dict[str, Any] = {
            # a data file as a run config records it: its path and sha256, nothing else
            "data": data if "file" in data else {
                "name": data.pop("name"), "seed": p.get("data_seed", 0),
                "data_dir": data.pop("data_dir", None), "options": data},
            "model": {"name": model.pop("name"), "options": model},
            "loss": p.get("loss") or "auto", "optimizer": dict(p["optimizer"]),
            "train": {"seed": seed, **{k: p[k] for k in loop}},
            # a trajectory without a path records into the run's folder (run())
            "measure": [dict(m, path=TRAJECTORY_FILE)
                        if m.get("name") == "trajectory" and "path" not in m else m
                        for m in p.get("measure") or []]}
        if p.get("schedule"):
            raw["schedule"] = dict(p["schedule"])
        if p.get("init_from"):
            raw["model"]["init_from"] = p["init_from"]
        try:
            settings = training_settings(validate_config(raw))
        except UserError:
            return None
        if p.get("eval_every_steps") is not None:
            settings["train"]["eval_every_steps"] = p["eval_every_steps"]
        return settings

    def run(self, run, ctx) -> RunOutput:
        from sgdlab.config.run import build_measure
        from sgdlab.optim.registry import build_optimizer_for, build_schedule
        from sgdlab.train.callbacks import Schedule
        from sgdlab.train.checkpoint import checkpoint_path
        from sgdlab.train.loop import epoch_steps, train

        p = run.params
        ds, model, loss_fn, dtype = build(p, run.seed, ctx)
        n = len(ds.x_train)
        bs = resolve_batch_size(p["batch_size"], n)
        hyper = dict(p["optimizer"])
        oname = hyper.pop("name")
        opt = build_optimizer_for(oname, model, loss_fn=loss_fn, data=ds.train, **hyper)
        drop_last = bool(p.get("drop_last", False))
        # a batch-size schedule changes the steps of each epoch: count them as the loop does
        counts = epoch_steps(n, bs, p["epochs"], drop_last)
        spe = counts[0]
        # the steps the run takes (max_steps beyond the epochs' steps adds none), which a
        # schedule that decays over the run and log-spaced measurements are built for
        total = sum(counts) if p.get("max_steps") is None else min(sum(counts),
                                                                   int(p["max_steps"]))
        sched = None
        if p.get("schedule"):
            from sgdlab.optim.protocols import counts_epochs

            sh = dict(p["schedule"])
            if len(set(counts)) > 1 and counts_epochs(sh["name"], sh):
                raise ValueError(
                    f"schedule {sh['name']!r} counts epochs as a fixed number of steps, but "
                    f"the batch-size schedule gives {min(counts)} to {max(counts)} steps per "
                    "epoch (its epochs would be miscounted): use a schedule in steps")
            sched = build_schedule(sh.pop("name"), opt, steps_per_epoch=spe, total_steps=total,
                                   **sh)
        # a trajectory without a path records into the run's artifact directory
        items = [dict(m, path=str(ctx.artifact_dir / TRAJECTORY_FILE))
                 if m["name"] == "trajectory" and "path" not in m else m
                 for m in p.get("measure", []) or []]
        callbacks = build_measure(items, total, model, ds)
        eval_every = p.get("eval_every")
        if p.get("eval_every_steps"):
            eval_every = Schedule.every(int(p["eval_every_steps"]))
        # a sweep keeps the checkpoint between attempts of the run: one there is resumed from
        ckpt = getattr(ctx, "checkpoint_dir", None)
        res = train(model, loss_fn, ds, opt, epochs=int(p["epochs"]), batch_size=bs,
                    schedule=sched, replacement=bool(p.get("replacement", False)),
                    seed=run.seed, callbacks=callbacks, eval_every=eval_every,
                    eval_subset=p.get("eval_subset"), store=ctx.store, run_id=ctx.run_id,
                    progress=ctx.progress, device=ctx.device, max_steps=p.get("max_steps"),
                    drop_last=drop_last, checkpoint_dir=ckpt,
                    checkpoint_seconds=CHECKPOINT_SECONDS,
                    clip_grad_norm=p.get("clip_grad_norm"),
                    sequence_loss=p.get("sequence_loss", "mean"),
                    eval_bn=p.get("eval_bn", "running"),
                    micro_batch=p.get("micro_batch"),
                    resume=ckpt is not None and checkpoint_path(ckpt).is_file(),
                    # a Ray task ships each checkpoint to the driver
                    on_checkpoint=getattr(ctx, "on_checkpoint", None),
                    complete=False)   # the sweep completes the run after the final measurements
        summary: dict[str, Any] = dict(getattr(res, "final", None) or {})
        trained = sum(q.numel() for q in model.parameters() if q.requires_grad)
        summary.update({"steps": int(getattr(res, "steps", 0)), "num_params": trained})
        data: dict[str, Any] = {}
        # the loop's message says what diverged (the loss, or a callback's numbers)
        status, message = getattr(res, "status", "finished"), getattr(res, "message", None)
        # the weights training ended with (those of its final checkpoint), before the final
        # measurements: dependent runs, warm starts and `sgdlab measure` load them once the
        # driver has removed the checkpoint (optimizer state) of the finished run
        from sgdlab.train.checkpoint import save_weights

        weights = ctx.artifact_dir / WEIGHTS_NAME
        save_weights(weights, model, summary["steps"])
        ctx.store.add_artifact(ctx.run_id, "model", str(weights))
        if status == "finished":
            model.eval()
            for m in p.get("final", []) or []:
                try:
                    if m["kind"] == "trajectory_spectrum":
                        from sgdlab.experiments.procedures.measures import trajectory_spectrum

                        opts = {k: v for k, v in m.items() if k != "kind"}
                        s, d = trajectory_spectrum(ctx.artifact_dir / TRAJECTORY_FILE, **opts)
                    else:
                        s, d = compute_final(m, model, loss_fn,
                                             measurement_data(ds, m, ctx.device), optimizer=opt)
                except FloatingPointError as e:
                    # how the measurements report a non-finite model: it diverged after its
                    # last finite loss (in its last steps), as the training loop records a
                    # callback's; a failure would be redone, and fail again, by every rerun
                    status = "diverged"
                    message = (f"the final measurement {m['kind']!r} met non-finite numbers "
                               f"({e}): the model diverged after its last finite loss")
                    break
                summary.update(s)
                data.update(d)
        return RunOutput(summary=summary, data=data, status=status, message=message)
