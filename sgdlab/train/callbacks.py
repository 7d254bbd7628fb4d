"""Training callbacks: a measurement + a schedule + the run store as sink.

A callback never computes anything itself beyond deciding *when*: it calls a plain
measurement function (``sgdlab.measure``) and records the result with ``ctx.log``.
Hooks (all optional), in the order the loop calls them:

- ``on_train_begin(ctx)``                 before the first step (also after a resume)
- ``on_step_begin(ctx)``                  batch drawn, before forward
- ``on_after_backward(ctx)``              gradients in ``p.grad``, before ``optimizer.step``
- ``on_step_end(ctx)``                    after ``optimizer.step``; ``ctx.step`` already incremented
- ``on_epoch_end(ctx)``                   after the last step of an epoch and its evaluation
- ``on_train_end(ctx)``                   once, also for diverged runs
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..models.modes import modes_kept, restore_buffers, saved_buffers
from ..operators.batches import check_mean_of_samples


@dataclass
class TrainContext:
    """What a callback may look at. Mutated in place by the loop."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    data: Any                      # sgdlab.data.Dataset
    step: int = 0                  # optimizer steps taken so far
    epoch: int = 0                 # current epoch (0-based); on_epoch_end has epoch + 1 done
    steps_per_epoch: int = 0
    batch: tuple[Tensor, Tensor] | None = None
    loss: float = float("nan")     # mini-batch loss of the current step
    logger: Callable[[str, float, int], None] | None = None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    # samples per step of the current epoch (None: unknown), for instruments that draw
    # batches of the step's size before any step has set ``batch``; declared last, so that
    # a TrainContext built with positional arguments keeps their meaning
    batch_size: int | None = None
    # the learning-rate schedule the loop steps (None: none) and when: after each optimizer
    # step ("step") or at each epoch's end ("epoch"), for instruments that read its draws
    schedule: Any = None
    schedule_every: str = "step"
    # a resumed run recorded in a store: reads its rows there, ``{metric: [(step, value,
    # unix time logged), ...]}``, those of the restored history among them (None: a run
    # started afresh, or recorded in no store)
    stored_metrics: Callable[[], dict[str, list[tuple[int, float, float]]]] | None = None

    def log(self, name: str, value: float, step: int | None = None) -> None:
        """Record a scalar metric at ``step`` (default: the current step) in memory and store."""
        step = self.step if step is None else step
        value = float(value)
        self.history.setdefault(name, []).append((step, value))
        if self.logger is not None:
            self.logger(name, value, step)

    def log_dict(self, values: dict[str, float], step: int | None = None) -> None:
        for k, v in values.items():
            self.log(k, v, step)


def train_subset(data: Any, size: int | None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, y)``: the training set of ``data``, or a fixed random subset of ``size`` examples
    drawn with ``seed`` (its own generator, so the batch stream is untouched)."""
    x, y = data.x_train, data.y_train
    if size is not None and size < len(x):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(x), generator=g)[:size].to(x.device)
        x, y = x[idx], y[idx]
    return x, y


def train_batches(data: Any, size: int | None, seed: int = 0, batch_size: int | None = None
                  ) -> tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]:
    """:func:`train_subset`'s ``(x, y)``, or, when ``batch_size`` is smaller than it, the list
    of its ``(x, y)`` batches of ``batch_size`` examples (the last one shorter)."""
    x, y = train_subset(data, size, seed)
    if batch_size is None or batch_size >= len(x):
        return x, y
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


class FixedEvalSet:
    """For a callback that measures on a fixed evaluation set: ``eval_data(ctx)`` is
    :func:`train_batches` of the callback's ``eval_subset`` examples drawn with its ``seed``
    (in batches of its ``eval_batch_size``, where it has one), drawn at the first call and
    kept: every measurement of a run reads the same examples.

    One whose measurement sets per-sample gradients against the batch's loss sets
    :attr:`mean_of_samples`: what that measurement refuses of the run's loss is refused by
    ``check_run``, before step 0, not at its first measurement, after every step before it."""

    eval_subset: int | None = None
    eval_batch_size: int | None = None
    seed: int = 0
    _data: Any = None
    #: the batch loss as the mean of the samples' losses: a loss with class weights, or
    #: ignored targets in the evaluation set where the measurement runs on it, refused by
    #: check_run (check() has no loss)
    mean_of_samples = False
    #: whether the measurement's batches are those of the evaluation set (else drawn from it,
    #: or the steps')
    measures_eval_set = True

    def eval_data(self, ctx: "TrainContext") -> Any:
        if self._data is None:
            self._data = train_batches(ctx.data, self.eval_subset, self.seed,
                                       self.eval_batch_size)
        return self._data

    def check_run(self, ctx: "TrainContext") -> None:
        if self.mean_of_samples:
            # ignored targets only where every measurement reads the whole evaluation set:
            # batches drawn from it may miss them
            check_mean_of_samples(ctx.loss_fn, self.eval_data(ctx) if self.measures_eval_set
                                  else [], f"the {callback_name(self)} instrument")

    def on_train_begin(self, ctx: "TrainContext") -> None:
        self.check_run(ctx)
        super().on_train_begin(ctx)


def model_device(ctx: "TrainContext") -> torch.device:
    """The device the run computes on: its model's parameters', or, for a model without any
    (the loop trains one: an optimizer over tensors the model closes over), its training
    data's, where the loop runs such a model."""
    p = next(ctx.model.parameters(), None)
    if p is not None:
        return p.device
    x = getattr(ctx.data, "x_train", None)
    return x.device if isinstance(x, Tensor) else torch.device("cpu")


def step_batch_size(ctx: "TrainContext") -> int | None:
    """The size of the step's batch: the last step's, else (before the first step) the one
    the loop will step with (``ctx.batch_size``), else None (a loop that does not say)."""
    return len(ctx.batch[0]) if ctx.batch is not None else ctx.batch_size


def step_generator(ctx: "TrainContext", seed: int) -> torch.Generator:
    """A generator on the model's device seeded with ``seed + step``: a measurement's random
    draws (probes, start vectors) are reproducible and leave torch's global RNG, which dropout
    and the optimizers' noise read, untouched."""
    dev = model_device(ctx)
    return torch.Generator(device=dev).manual_seed(seed + ctx.step)


def _whole(value: Any) -> bool:
    """``value`` is a whole number (``3`` or ``3.0``; not 2.5, nan, a string or a bool)."""
    try:
        return not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False


class Schedule:
    """When to measure: a predicate on the step count (and/or completed epochs)."""

    def __init__(self, predicate: Callable[[int], bool], description: str):
        self._predicate = predicate
        self.description = description

    def __call__(self, step: int) -> bool:
        return bool(self._predicate(step))

    def __repr__(self) -> str:
        return f"Schedule({self.description})"

    @classmethod
    def every(cls, k: int, start: int = 0) -> "Schedule":
        if not _whole(k) or k < 1:
            raise ValueError(f"Invalid schedule period: {k} (a whole number of steps >= 1)")
        if not _whole(start) or start < 0:
            raise ValueError(f"Invalid schedule start: {start} (a step, a whole number >= 0)")
        k, start = int(k), int(start)
        return cls(lambda s: s >= start and (s - start) % k == 0, f"every {k} from {start}")

    @classmethod
    def at(cls, steps: Iterable[int]) -> "Schedule":
        steps = list(steps)
        bad = [s for s in steps if not _whole(s) or s < 0]
        if bad:     # int() truncated 2.5 to step 2; a negative step never came
            raise ValueError(f"Invalid schedule steps: {bad} (steps are whole numbers >= 0)")
        chosen = frozenset(int(s) for s in steps)
        return cls(lambda s: s in chosen, f"at {sorted(chosen)}")

    @classmethod
    def given(cls, who: str, schedule: Schedule | None, every: int | None, start: int,
              at: Iterable[int] | None) -> Schedule:
        """The one schedule of a callback's ``schedule=``, ``every=`` (from ``start=``) or
        ``at=`` (as a run config's measure entry spells it); a ValueError naming ``who``
        for none, two, or a schedule that is not callable (a Schedule, or a function of one's
        own from the step to a bool)."""
        given = [k for k, v in (("schedule", schedule), ("every", every), ("at", at))
                 if v is not None]
        if len(given) != 1:
            raise ValueError(f"{who} needs one step schedule: schedule=Schedule..., every=K "
                             f"(from start=S) or at=[steps], got {' and '.join(given) or 'none'}")
        if schedule is not None and not callable(schedule):
            raise ValueError(f"{who}: schedule must be a Schedule (Schedule.every(k), "
                             f"Schedule.at(steps), ...) or a function step -> bool, got "
                             f"{schedule!r}; every=K and at=[steps] build one")
        if every is not None:
            return cls.every(every, start)
        return cls.at(at) if at is not None else schedule

    @classmethod
    def log_spaced(cls, num: int, max_step: int, start: int = 1) -> "Schedule":
        """About ``num`` steps spaced logarithmically in [start, max_step] (plus step 0)."""
        pts = {0} | {int(round(start * (max_step / start) ** (i / max(num - 1, 1))))
                     for i in range(num)}
        return cls(lambda s: s in pts, f"{num} log-spaced to {max_step}")

    @classmethod
    def never(cls) -> "Schedule":
        return cls(lambda s: False, "never")


class Callback:
    """Base class. ``schedule`` is on steps; ``epochs`` (optional) selects epochs for
    ``on_epoch_end`` work. Subclasses override the hooks they need."""

    schedule: Schedule = Schedule.every(1)

    def should_run(self, step: int) -> bool:
        return self.schedule(step)

    def on_train_begin(self, ctx: TrainContext) -> None: ...
    def on_step_begin(self, ctx: TrainContext) -> None: ...
    def on_after_backward(self, ctx: TrainContext) -> None: ...
    def on_step_end(self, ctx: TrainContext) -> None: ...
    def on_epoch_end(self, ctx: TrainContext) -> None: ...
    def on_train_end(self, ctx: TrainContext) -> None: ...

    def check(self, model: nn.Module, data: Any) -> None:
        """Raise a ValueError ("Invalid OPTION=value (why)") for an option this model or data
        cannot take (more eigenpairs than parameters, ...). The loop calls it before step 0 and
        a run config before the run is recorded, not at the first measurement."""

    def check_run(self, ctx: TrainContext) -> None:
        """Raise for what this run gives the callback (its loss, data) that its measurement
        would refuse (a loss that is no plain mean of the samples' ...): before step 0, not
        at the first measurement. :func:`sgdlab.train.loop.train` calls it on every callback
        before any ``on_train_begin`` (a later callback's refusal comes before an earlier one
        measures step 0), as :func:`sgdlab.train.replicas.train_replicas` does before round
        0; the instruments' ``on_train_begin`` calls it too, for a loop of one's own that
        calls only the hooks (cheap a second time: the evaluation subset is drawn once)."""

    # Callbacks with memory (e.g. the previous gradient) save it here so resume is exact.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def callback_name(cb: Callback) -> str:
    """The callback's name in messages: its instrument's name, else its class's."""
    return getattr(cb, "instrument", None) or type(cb).__name__


def callback_keys(callbacks: Iterable[Callback]) -> list[str]:
    """Each callback's key in a checkpoint: its kind (the instrument's name, else its class)
    and its position among the callbacks of that kind, ``"dynamics#0"``. A resume hands the
    saved states back by key, so reordering the callbacks (or adding one) moves no state onto
    another callback."""
    seen: dict[str, int] = {}
    keys = []
    for cb in callbacks:
        # the qualified name, not callback_name's: two classes named alike in other scopes
        # (Outer.Probe, Other.Probe) take no state of each other's, and saved keys stay valid
        kind = getattr(cb, "instrument", None) or type(cb).__qualname__
        keys.append(f"{kind}#{seen.get(kind, 0)}")
        seen[kind] = seen.get(kind, 0) + 1
    return keys


@contextmanager
def naming_divergence(cb: Callback) -> Iterator[None]:
    """Re-raise a ``FloatingPointError`` (how measurements report a non-finite model) with the
    callback's instrument name in front: the diverged run's message says which one met it."""
    try:
        yield
    except FloatingPointError as e:
        raise FloatingPointError(f"{callback_name(cb)}: {e}") from e


class MeasurementCallback(Callback):
    """Call ``fn(ctx) -> dict[str, float]`` on a step schedule (``schedule=``, ``every=`` from
    ``start=``, or ``at=``) and log every entry (one number each: a float, a 0-dim tensor or
    an ``Estimate``; an entry that is None or NaN is left out at that step, in whatever type
    it comes); the initial model too (step 0, before
    training) where the schedule has step 0, or as ``at_train_begin`` says. ``fn`` runs on a
    fork of torch's global generators: its random draws do not change the run's; and the
    model's train/eval flags, buffers (batch norm's running statistics) and plain attributes
    are put back after it (:mod:`sgdlab.models.modes`): forward passes it takes in train mode
    or that count themselves do not change the model the run goes on training.

    ``fn`` sees the model in the mode the loop keeps it in: train mode inside :func:`train`
    (batch norm on batch statistics, dropout on), unlike the instruments, which measure in
    eval mode. ``fn`` may call ``ctx.model.eval()`` (per-sample gradients, Σ and D(x) need
    it with batch norm): the modes are put back after it, so training goes on in the mode it
    had.

    Example::

        from sgdlab.measure import hessian_top_eigenvalue
        MeasurementCallback(lambda ctx: {"hess_top": hessian_top_eigenvalue(
            ctx.model, ctx.loss_fn, ctx.data.train)}, Schedule.every(100))
    """

    # reads the training loop's optimizer or step batch (noise_magnitude, batch_statistics):
    # no measurement of a model at a point, such as Parle's master at round ends
    reads_training_step = False

    def __init__(self, fn: Callable[[TrainContext], dict[str, float]],
                 schedule: Schedule | None = None, *, every: int | None = None, start: int = 0,
                 at: Iterable[int] | None = None, at_train_begin: bool | None = None):
        # every= / at= as build_instrument takes them: MeasurementCallback(fn, every=100)
        schedule = Schedule.given(type(self).__name__, schedule, every, start, at)
        # the initial model (step 0) when the schedule has step 0, as the instruments: at=[5]
        # is step 5 alone
        begin = schedule(0) if at_train_begin is None else at_train_begin
        self.fn, self.schedule, self.at_train_begin = fn, schedule, bool(begin)

    def on_train_begin(self, ctx: TrainContext) -> None:
        if self.at_train_begin and ctx.step == 0:
            self._record(ctx)

    def on_step_end(self, ctx: TrainContext) -> None:
        if self.should_run(ctx.step):
            self._record(ctx)

    def record(self, ctx: TrainContext) -> None:
        """Measure ``ctx.model`` now and log every entry at ``ctx.step``: what a loop that
        picks its own measurement points calls (Parle's round ends,
        :func:`sgdlab.train.replicas.train_replicas`) instead of the step hooks."""
        self._record(ctx)

    def _record(self, ctx: TrainContext) -> None:
        # what ``fn`` draws from torch's global generators (a Lanczos start vector or probes
        # without ``generator=``) comes from a fork of them: the run's dropout masks and
        # noise go on as without the callback, as for the instruments
        dev = model_device(ctx)
        # fn may call model.eval(), as a measurement's error tells it to: training must not
        # go on in eval mode (batch norm frozen, dropout off) without a word. The buffers are
        # saved beside modes_kept, which keeps the flags and plain attributes: a buffers_kept
        # block would save and restore the attributes a second time
        saved = saved_buffers(ctx.model)
        try:
            with naming_divergence(self), torch.random.fork_rng(
                    devices=[dev] if dev.type == "cuda" else [], device_type="cuda"), \
                    modes_kept(ctx.model):
                values = self.fn(ctx)
        finally:
            restore_buffers(saved)
        if not isinstance(values, Mapping):
            got = ("None (a function without a return?)" if values is None
                   else f"a {type(values).__name__}")
            raise UserError(f"MeasurementCallback: fn returned {got}, not a dict "
                            "{name: value}: return {'my/name': value}, so that the series has "
                            "a name")
        for k, v in values.items():
            # NaN as a tensor or a numpy scalar too: it was logged where a float NaN was not
            value = None if v is None else _scalar(k, v)
            if value is not None and not math.isnan(value):
                ctx.log(k, value)


def _scalar(name: str, value: Any) -> float:
    """``value`` as the float a series records; a ``UserError`` naming ``name`` for a value
    that is no number (a ``GradientCovariance``, a vector), where ``float()`` failed bare."""
    try:
        # detached: a value with a graph (a norm of the weights) warned from torch's float()
        return float(value.detach() if isinstance(value, Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        shape = f" of shape {tuple(value.shape)}" if isinstance(value, Tensor) else ""
        raise UserError(f"MeasurementCallback: fn returned {name!r} = a "
                        f"{type(value).__name__}{shape}; each value must be one number (a "
                        "float, a 0-dim tensor or an Estimate): log the scalars of a result "
                        "(cov.trace(), its .value)") from None
