"""The training loop: ``train(model, loss_fn, data, optimizer, ...) -> RunResult``.

Conventions (see docs/ARCHITECTURE.md):

- **Steps and epochs.** An epoch is ``ceil(N / B)`` optimizer steps (``N // B`` with
  ``drop_last=True``), N the number of training examples and B the epoch's batch size
  (``batch_size`` may be a callable ``epoch -> int``). ``B >= N`` is full-batch gradient descent:
  every step uses the whole training set in its stored order, with no sampling.
- **Sampling.** Mini-batches come from one stream of indices driven by the loop's own
  ``torch.Generator`` seeded with ``seed``. Without replacement (default) the stream walks a
  fresh random permutation of ``range(N)`` per pass; the last batch of a pass holds the
  ``N mod B`` leftover examples (or is dropped with ``drop_last=True``, which ends the pass), so
  one epoch visits every example exactly once (with ``drop_last``, all but its leftover). With
  replacement every batch is B indices drawn i.i.d. uniformly.
  The sampling generator is separate from torch's global one, so dropout or noisy optimizers do
  not change which batches are drawn. A dataset loaded with ``augment=`` (``meta["augment"]``,
  :mod:`sgdlab.data.augment`) has each drawn batch cropped / flipped with random numbers from
  the same generator, drawn right after the batch's indices.
- **Micro-batches.** With ``micro_batch=m`` a batch of more than m examples is taken in
  consecutive chunks of m (the last one shorter), each forward and backward on its own, each
  chunk's mean loss weighted by its share of the batch's examples: the gradient is that of
  Σ_k (n_k/B) L_k, the batch's mean loss when nothing couples its examples; batch norm in
  train mode normalises (and updates its running statistics) chunk by chunk
  (:func:`micro_batch_backward`). Full-batch GD then accumulates its gradient over chunks of
  the stored order, the same at every step. Not for closure optimizers, token data or a
  weighted mean loss (class weights, ignored targets: each chunk normalised by its own).
- **Closure optimizers** (class attribute ``needs_closure = True``) get
  ``optimizer.step(closure)``; each ``closure()`` call draws the next batch from the stream
  (every call of a step evaluates the step's batch when the optimizer's
  ``closure_repeats_batch`` is true: ``HEAT(batches="shared")``), zeroes the gradients, runs
  forward + backward and returns the loss. Every call counts as one
  gradient evaluation: ``grad_evals`` and ``effective_epochs`` (examples processed / N, i.e.
  ``grad_evals * B / N`` when B divides N) are logged at each epoch end (for plain optimizers
  they equal steps and epochs). The step's recorded loss
  and the ``on_after_backward`` hook belong to the first closure call (the gradient at the
  current weights).
- **Evaluation** runs in ``model.eval()`` mode under ``torch.no_grad()`` and restores the
  previous mode (with ``eval_bn="recompute"``, batch norm's running statistics recomputed at
  the current weights first: :func:`recompute_eval_statistics`). It logs ``train_loss``,
  ``test_loss`` (mean loss over the set; per token for token data) and, for classification,
  ``train_acc``, ``test_acc`` (fraction of the labels hit by the argmax: one per sample, or
  one per position of (N, C, *d) outputs; none for outputs ``loss_fn`` unpacks or one score
  per label) and, for a cross-entropy over per-position labels (token
  data), ``train_perplexity``, ``test_perplexity`` (exp of the mean loss per token over the
  set), at step 0, on the ``eval_every`` schedule and at the end. At each epoch end the
  loop also logs ``batch_loss`` (mean of that epoch's mini-batch losses, in train mode),
  ``epoch`` (epochs completed), ``grad_evals`` and ``effective_epochs``; and ``lr`` (first
  parameter group) at step 0 and at each epoch end, after the schedule has stepped: the
  ``lr`` logged at step s is the one step s uses.
- **Divergence.** A non-finite mini-batch loss stops the run before the step that would use it;
  the result has status ``"diverged"``, the weights of the last finite step and the metrics
  recorded so far. It is not an exception. A callback's ``FloatingPointError`` (how the
  measurements report a non-finite model) ends the run the same way, and so does a closure
  optimizer's loss that is finite but overflows times ``sequence_loss``'s scale (the
  optimizer is handed the scaled loss; a plain optimizer only its gradient, which does not
  overflow with it). (On CUDA without callbacks the loss is read back every 16 steps to
  avoid a device sync per step, so the run may end up to 15 steps later.)
- **Checkpoints** (``checkpoint_dir``) are written every ``checkpoint_every`` steps (each epoch
  end when None), when training ends (before the final evaluation and the ``on_train_end``
  hooks, so that a resume after an interrupt there trains no step again) and at the end;
  with ``checkpoint_seconds``, each of these only once that many seconds have passed since
  the last one was written (or the run started), so that the time spent writing them stays
  small whatever the length of an epoch (a sweep run's cadence). A Ctrl-C or SIGTERM (where
  its handler raises ``KeyboardInterrupt``: Python's for SIGINT, the command line's for
  SIGTERM) that lands in a step is held to the step's end, where a checkpoint is written and
  it is raised (:mod:`sgdlab.interrupts`); one in a callback's ``on_step_end`` or
  ``on_epoch_end`` or in an evaluation, or a second one, is raised at once.
  ``resume=True`` continues from the last one bit for bit (same
  batches, same noise, same final weights as an uninterrupted run on the same machine). A
  resume with another training-set size, batch size, seed, ``replacement`` or ``drop_last``,
  another optimizer class or hyper-parameter (any key of a parameter group but its
  parameters, as the optimizer and schedule were built: ``lr``, ``momentum``, ``betas``, an
  Entropy-SGD's ``gamma``, ...; or one it keeps outside its groups, named by its
  ``settings()``: a generator's seed, GLD's ``sigma``, a SwitchOptimizer's ``switch_step``,
  ...), another schedule (its class or settings, its seed included), another
  torch loss class, parameter dtype, ``eval_subset`` or ``eval_bn`` is refused (one
  :class:`UserError` naming each difference, ``lr (0.1 -> 0.05)``): the optimizer's and scheduler's
  ``load_state_dict`` put the checkpoint's values back, so the new ones would be ignored
  without a word (or, for statistics drawn with the old value, mixed with it). ``epochs``,
  ``max_steps``, ``eval_every``, ``checkpoint_every``, the callbacks' cadences, ``device``
  and ``progress`` may change (they change what is logged or
  saved when, not the run). A checkpoint from before a setting was recorded is not checked
  for it.
- **The run store** (``store``) receives every logged metric: the loop flushes its buffer
  before each checkpoint and records in it how many rows the store holds, so a resumed run
  has exactly the rows of an uninterrupted one, whatever the checkpoint cadence. The run is
  ``finished`` only when its last rows, summary and status are committed together (or, with
  ``complete=False``, when the caller commits them with what else the run owes).
- **Dtypes.** The loop casts nothing: a model whose floating parameters are of another dtype
  than the data's inputs fails at its first forward pass, which is then reported as a
  :class:`UserError` naming both dtypes (torch's error chained); a model that casts its own
  inputs trains. A run config casts model and data to its ``train.dtype``.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import torch
from torch import Tensor, nn

from ..accuracy import argmax_hits, perplexity_tokens
from ..data.augment import batch_augmentation
from ..errors import (UserError, checked_float, checked_int, int_at_least, is_seed, not_a_seed,
                      plain_int, refused_value, warn)
from ..interrupts import StepInterrupts
from ..loss_settings import loss_name, loss_reduction, torch_loss_class
from ..measure.batch_norm import recompute_bn_statistics
from ..models.modes import eval_mode
from ..operators.batches import (check_target_shape, chunk_loss_problem, dtype_refusal,
                                 loss_refusal)
from ..operators.blocking import reproducible_blocks
from ..operators.params import reaching_parameters
from ..plugins import raised_at
from .callbacks import Callback, Schedule, TrainContext, callback_keys, callback_name
from .checkpoint import (changed_settings, checkpoint_path, load_checkpoint, load_state,
                         rng_state, save_checkpoint, set_rng_state, snapshot)

__all__ = ["LOSS_DIVERGENCE", "RunResult", "BatchStream", "epoch_steps", "evaluate",
           "steps_per_epoch", "train"]

# how the message of a run that diverged on its loss begins (a measurement's non-finite
# numbers, with the loss still finite, read otherwise): warm starts refuse the weights it
# diverged on
LOSS_DIVERGENCE = "non-finite mini-batch loss"

EVAL_BATCH = 4096
#: what an evaluation logs (each where it applies), in the order a run's summary lists them
EVAL_METRICS = ("train_loss", "train_acc", "train_perplexity", "test_loss", "test_acc",
                "test_perplexity")
#: the counters a run's summary holds beside the last value of each of EVAL_METRICS
FINAL_COUNTERS = ("steps", "epochs", "grad_evals", "effective_epochs")


@dataclass
class RunResult:
    """What :func:`train` returns.

    ``history`` maps a metric name to ``[(step, value), ...]`` (everything logged by the loop and
    the callbacks, including before a resume); ``final`` holds the last value of each evaluation
    metric (``train_loss``, ``test_acc``, ...) plus ``steps``, ``epochs``, ``grad_evals``,
    ``effective_epochs``. ``wall_time`` is the run's seconds over all its calls: this call's,
    plus those its checkpoint carries from the calls before a resume (up to their last
    checkpoint; the steps after it are redone and counted in this call). A resume from a
    checkpoint that carries none (written before they were recorded) counts this call alone.
    """

    run_id: str | None
    status: str                      # "finished" | "diverged"
    steps: int
    epochs_completed: int
    history: dict[str, list[tuple[int, float]]]
    final: dict[str, float]
    checkpoint: Path | None
    wall_time: float
    grad_evals: int = 0
    message: str | None = None

    def __repr__(self) -> str:
        # the history as each series' length: the dataclass's repr printed every point of
        # every series (thousands of lines for `r` in a notebook)
        series = ", ".join(f"{k!r}: {len(v)} points" for k, v in self.history.items())
        final = ", ".join(f"{k!r}: {v:.6g}" if isinstance(v, float) else f"{k!r}: {v!r}"
                          for k, v in self.final.items())
        return (f"RunResult(run_id={self.run_id!r}, status={self.status!r}, "
                f"steps={self.steps}, epochs_completed={self.epochs_completed}, "
                f"final={{{final}}}, history={{{series}}}, checkpoint={self.checkpoint!r}, "
                f"wall_time={self.wall_time:.3g}, grad_evals={self.grad_evals}, "
                f"message={self.message!r})")

    def last(self, name: str, default: float = math.nan) -> float:
        series = self.history.get(name)
        return series[-1][1] if series else default

    def summary(self) -> dict[str, Any]:
        """What the run store records as the run's summary: ``final``, status, wall time."""
        return {**self.final, "status": self.status, "wall_time": self.wall_time}


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimizer steps in one epoch of ``n`` examples (full batch: 1)."""
    if batch_size >= n:
        return 1
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_steps(n: int, batch_size: int | Callable[[int], int], epochs: int,
                drop_last: bool = False) -> list[int]:
    """The optimizer steps of each of ``epochs`` epochs over ``n`` examples, as the loop takes
    them: ``batch_size`` an int or a batch-size schedule (epoch -> size; numpy's ints too),
    whose epochs may take different numbers. A size that is no int >= 1 is a ``UserError``
    naming its epoch ("batch_size(3) must be an int >= 1, got 0")."""
    size_of = batch_size if callable(batch_size) else (lambda e: batch_size)
    return [steps_per_epoch(n, checked_int(f"batch_size({e})", size_of(e), 1), drop_last)
            for e in range(epochs)]


class BatchStream:
    """An endless stream of index batches over ``range(n)`` (see the module docstring).

    ``next(b)`` returns a LongTensor of indices on ``device``, or None for the full batch
    (``b >= n``); ``batch(x, y, b)`` the examples themselves, passed through ``augment(x_batch,
    generator)`` when given. Its state (current permutation and position) goes into
    checkpoints; the generator's state is saved with the other RNG states.
    """

    def __init__(self, n: int, generator: torch.Generator, *, replacement: bool = False,
                 drop_last: bool = False, device: torch.device | None = None,
                 augment: Callable[[Tensor, torch.Generator], Tensor] | None = None):
        self.n, self.generator = n, generator
        self.replacement, self.drop_last = replacement, drop_last
        self.device, self.augment = device, augment
        self.perm: Tensor | None = None   # CPU permutation of the current pass
        self._perm_dev: Tensor | None = None
        self.pos = 0

    def next(self, b: int) -> Tensor | None:
        if b >= self.n:
            return None
        if self.replacement:
            idx = torch.randint(self.n, (b,), generator=self.generator)
            return idx if self.device is None else idx.to(self.device, non_blocking=True)
        remaining = self.n - self.pos
        if self.perm is None or remaining <= 0 or (self.drop_last and remaining < b):
            self.perm = torch.randperm(self.n, generator=self.generator)
            self._perm_dev = None
            self.pos = 0
        if self._perm_dev is None:
            self._perm_dev = self.perm if self.device is None else self.perm.to(self.device)
        idx = self._perm_dev[self.pos:self.pos + b]
        self.pos += len(idx)
        if self.drop_last and self.n - self.pos < b:
            # the pass ends here, its leftover dropped: a smaller batch size next (a batch-size
            # schedule's next epoch) starts a new pass, not one made of the leftover
            self.pos = self.n
        return idx

    def batch(self, x: Tensor, y: Tensor, b: int) -> tuple[Tensor, Tensor]:
        """The next ``b`` examples of ``(x, y)`` (all of them for ``b >= n``), augmented."""
        idx = self.next(b)
        xb, yb = (x, y) if idx is None else (x[idx], y[idx])
        if self.augment is not None:
            xb = self.augment(xb, self.generator)
        return xb, yb

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm, self.pos, self._perm_dev = state["perm"], int(state["pos"]), None


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor,
             y: Tensor, *, classification: bool | None = None,
             batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """Mean loss (and accuracy, the fraction of argmax hits, for classification) of ``model``
    on ``(x, y)`` in eval mode; chunks are weighted by size. Restores every submodule's
    train/eval mode. ``classification`` defaults to whether ``y`` holds class labels (not
    floating point). The accuracy counts every label (:func:`sgdlab.accuracy.argmax_hits`, the
    measurements' rule too: per sample, or per
    position of (N, C, *d) outputs) and is left out for outputs that hold no class scores.
    For a cross-entropy over per-position labels (token data,
    :func:`sgdlab.accuracy.perplexity_tokens`) also ``perplexity``: exp of the mean loss per
    token over the whole set (chunks weighted by their tokens, a target the loss ignores
    not counted), and ``loss`` is that mean per token."""
    if classification is None:
        classification = not y.is_floating_point()
    with eval_mode(model):
        n = len(x)
        # Σ loss·weight over the chunks: a chunk weighs its samples, or for a per-token mean
        # (token data) its tokens, a target the loss ignores counting for none (by samples, a
        # chunk's tokens would weigh more where it ignores more of them)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        tokens_seen = torch.zeros((), dtype=torch.int64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        labels = torch.zeros((), dtype=torch.int64, device=x.device)
        per_token = False
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            out = model(xb)
            if i == 0:
                check_target_shape(loss_fn, out, yb)
            loss = loss_fn(out, yb).double()
            tokens = perplexity_tokens(out, yb, loss_fn)
            if i == 0:
                per_token = tokens is not None
            if per_token:   # a chunk without tokens has a NaN mean and no weight
                total += torch.where(tokens > 0, loss * tokens, 0.0)
                tokens_seen += tokens
            else:
                total += loss * len(xb)
            hits = argmax_hits(out, yb, loss_fn) if classification else None
            if hits is None:
                classification = False
            else:
                correct += hits[0]
                labels += hits[1]
        # no samples: 0; no tokens: NaN
        mean = total / tokens_seen if per_token else total / max(n, 1)
        res = {"loss": mean.item()}
        if classification:
            res["acc"] = correct.item() / labels.item() if labels.item() else float("nan")
        if per_token and n:
            res["perplexity"] = mean.exp().item()
        return res


def _loss_sync_every(device: torch.device, callbacks: Sequence[Callback]) -> int:
    """Steps between loss read-backs. Reading a CUDA loss is a device sync, so without callbacks
    (which may look at ``ctx.loss``) the loop reads 16 at a time; on CPU it is free."""
    return 1 if (device.type == "cpu" or callbacks) else 16


def _overrides(cb: Callback, hook: str) -> bool:
    # Skip hooks a callback does not implement: no Python call per step for them.
    return getattr(type(cb), hook, None) is not getattr(Callback, hook)


class _Diverged(Exception):
    """A non-finite mini-batch loss of the weights after ``step`` steps (the history's step);
    ``elsewhere``: another replica's (Parle over a communicator), this one's were finite;
    ``scale``: the loss was finite but overflowed times the loss scale (``scaled``)."""

    def __init__(self, step: int, value: float, *, elsewhere: bool = False,
                 scale: int | None = None, scaled: float | None = None):
        super().__init__(f"non-finite loss {value if scale is None else scaled} at step {step}"
                         + (" (another replica's)" if elsewhere else "")
                         + (f" (times the loss scale {scale})" if scale is not None else ""))
        self.step, self.value, self.elsewhere = step, value, elsewhere
        self.scale, self.scaled = scale, scaled


class _DefaultBatchSize(int):
    """train()'s default batch size, 128, told apart from a 128 the caller gives."""


DEFAULT_BATCH_SIZE = _DefaultBatchSize(128)


def train(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Any,
          optimizer: torch.optim.Optimizer, *, epochs: int,
          batch_size: int | str | Callable[[int], int] = DEFAULT_BATCH_SIZE,
          schedule: Any = None,
          replacement: bool = False, seed: int = 0, callbacks: Sequence[Callback] = (),
          eval_every: int | Schedule | None = None, eval_subset: int | None = None,
          store: Any = None, run_id: str | None = None, name: str | None = None,
          checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
          checkpoint_seconds: float | None = None,
          progress: bool | Literal["epochs"] = True, device: str | torch.device | None = None,
          max_steps: int | None = None, drop_last: bool = False,
          resume: bool = False, complete: bool = True,
          schedule_every: str = "step", clip_grad_norm: float | None = None,
          sequence_loss: str = "mean", eval_bn: str = "running",
          micro_batch: int | None = None,
          on_checkpoint: Callable[[Path], None] | None = None) -> RunResult:
    """Train ``model`` on ``data.train`` with ``optimizer``; see the module docstring.

    Args:
        model, loss_fn: ``loss_fn(outputs, targets)`` is mean-reduced.
        data: a :class:`sgdlab.data.Dataset` (``x_train``, ``y_train``, ``x_test``, ``y_test``).
        optimizer: any ``torch.optim.Optimizer`` (``needs_closure`` ones get a batch-drawing
            closure).
        epochs: number of epochs (see ``max_steps`` to stop earlier).
        batch_size: int, or ``epoch -> int``; ``>= N`` or ``"full"`` (as in a run config)
            means full-batch GD. Left at its default, 128, on fewer training examples it
            is full-batch GD too, with a warning that says so.
        schedule: anything with ``step()`` (and ``state_dict``/``load_state_dict`` for
            checkpoints), stepped once per optimizer step (``schedule_every``).
        schedule_every: ``"step"`` (default: sgdlab's schedules, which count epochs through
            their ``steps_per_epoch``) or ``"epoch"``: ``schedule.step()`` once at each
            epoch's end, as torch's epoch-based schedulers expect (``StepLR(step_size=30)``
            is 30 epochs then; stepped per optimizer step it is 30 steps).
        replacement: sample mini-batches i.i.d. with replacement instead of by permutation.
        seed: seeds the loop's sampling generator (and the eval subset). Model initialisation
            and global RNGs are the caller's.
        callbacks: :class:`sgdlab.train.callbacks.Callback` objects (or one of them).
        eval_every: evaluate every this many epochs (default 1; 0: only at step 0 and the end),
            or a :class:`Schedule` on steps.
        eval_subset: evaluate on a fixed random subset of this many train (and test) examples.
        store, run_id, name: a :class:`sgdlab.store.RunStore`; a run (called ``name`` in
            ``sgdlab runs list``) is created when ``run_id`` is None. Metrics are written in
            batches (every 2 s, each epoch end, before every checkpoint, and at the end).
        checkpoint_dir, checkpoint_every: where and how often (steps) to checkpoint (and
            at a step's end on an interrupt, in the main thread: see the module docstring).
        checkpoint_seconds: write a checkpoint only when this many seconds have passed since
            the last one (or the start); the end of training included. None: every one due.
        progress: show a tqdm bar (only when stderr is a terminal or in a Jupyter notebook);
            ``"epochs"``: one line per epoch on stderr instead (step, batch loss, test
            accuracy), for a log file or a pipe, where a bar is not drawn, and a last line
            with the status where the run ends elsewhere (max_steps, a divergence).
        device: moves model and data there (default: the model's device).
        max_steps: stop after this many optimizer steps in total (status "finished").
            Such a run resumed with a larger budget goes on from its last checkpoint, and
            its history keeps the rows its end wrote at that step (the final evaluation, the
            instruments' epoch-end rows): a killed run resumed has an uninterrupted run's
            rows, a run stopped by ``max_steps`` and continued has these too.
        drop_last: drop the last partial batch of each pass (without replacement).
        resume: continue from ``checkpoint_dir``'s last checkpoint.
        on_checkpoint: called with the checkpoint file after each checkpoint is written (its
            metric rows handed to the store first); a Ray sweep task ships it to the driver.
        clip_grad_norm: rescale each back-propagated gradient (every closure call's too)
            to at most this Euclidean norm over all parameters, before the callbacks see it
            and the optimizer steps (Zaremba et al.'s LSTM pipeline clips at 5 or 10).
        sequence_loss: what the optimizer steps on for token data (targets (N, T), one label
            per position): ``"mean"`` (default), ``loss_fn``'s per-token mean; or
            ``"window-sum"``, that mean times T, the loss summed over each window's positions
            (averaged over the batch), as Zaremba et al.'s code back-propagates it, so that
            their learning rate and clip act as in their code. Closure optimizers get that
            loss too. The logged and evaluated losses stay per token.
        eval_bn: the batch-norm statistics each evaluation normalises with: ``"running"``
            (default), the running statistics training left (gathered wherever the forward
            passes went: an Entropy-SGD's, HJ's or HEAT's at its inner points, not at x);
            ``"recompute"``, those of a train-mode pass over the training set at the current
            weights, written into the running buffers before each evaluation and left there
            (:func:`recompute_eval_statistics`; in batches of at most ``micro_batch``).
            Training itself is unchanged.
        micro_batch: take each batch larger than this in consecutive chunks of this many
            examples, accumulating their size-weighted gradients (see the module docstring);
            None (default): one forward and backward per batch.
        complete: record the end of the run in the store (summary and status, with the last
            metric rows, in one transaction). ``False`` when the caller still owes the run
            something (final measurements, files): the run stays ``running`` and the caller
            ends it with :meth:`sgdlab.store.RunStore.complete_run`. Failures and interrupts
            are recorded either way.
    """
    defaulted = batch_size is DEFAULT_BATCH_SIZE
    batch_size = int(batch_size) if defaulted else batch_size
    run = _Training(model, loss_fn, data, optimizer, epochs=epochs, batch_size=batch_size,
                    schedule=schedule, replacement=replacement, seed=seed, callbacks=callbacks,
                    eval_every=eval_every, eval_subset=eval_subset,
                    checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                    checkpoint_seconds=checkpoint_seconds, device=device, max_steps=max_steps,
                    drop_last=drop_last, resume=resume, progress=progress,
                    schedule_every=schedule_every, clip_grad_norm=clip_grad_norm,
                    sequence_loss=sequence_loss, eval_bn=eval_bn, micro_batch=micro_batch,
                    on_checkpoint=on_checkpoint)
    if defaulted and run.n < batch_size:
        # a small data set of one's own trained without batch_size= was silently GD
        warn(f"train: batch_size was left at its default {batch_size}, more than the "
             f"{run.n} training examples: every step is full-batch gradient descent; pass "
             "batch_size= for SGD (or batch_size='full' for GD)")
    # untimed probe blocks in the instruments, optimizers (GLD's Tr H) and end-of-run hooks:
    # a run's series must not depend on how busy the machine was
    with reproducible_blocks():
        run.open_record(store, run_id, name)
        try:
            run.fit()
        except _Diverged as d:
            run.diverged(d)
        except FloatingPointError as e:  # how measurements report a non-finite model
            run.diverged_in_measurement(e)
        except BaseException as e:
            m = run.micro_batch
            # a batch's last micro-batch is the other batch of one (40 examples in batches of
            # 10 and micro-batches of 3), which the partial batch alone did not explain
            chunk = ("" if m is None else f", and with micro_batch={m} a batch's last "
                     f"micro-batch holds one when the batch's size mod {m} = 1")
            one = (f"with {len(run.x_train)} training samples the last partial batch of an "
                   f"epoch holds one when N mod batch_size = 1{chunk}: train with "
                   "drop_last=True (a run config's train.drop_last: true) or another "
                   f"batch_size{'' if m is None else ' or micro_batch'}")
            abort_run(run, e, run.model, run.loss_fn, run.x_train, run.y_train,
                      batch_of_one=one)
        return run.complete(record_end=complete)


def abort_run(run: Any, e: BaseException, model: nn.Module, loss_fn: Any, x: Tensor,
              y: Tensor, *, batch_of_one: str) -> NoReturn:
    """End ``run`` (its ``abort``: what was logged kept, why recorded), which failed with
    ``e`` on the training inputs ``x`` and targets ``y``, and raise the
    :func:`input_refusal` that names the cause, from ``e``, else ``e`` itself (``train`` and
    ``train_replicas`` alike; ``batch_of_one`` as there)."""
    refusal = input_refusal(e, model, loss_fn, x, y, batch_of_one=batch_of_one)
    run.abort(refusal or e)
    if refusal is not None:
        raise refusal from e
    raise e


def input_refusal(e: BaseException, model: nn.Module, loss_fn: Any, x: Tensor,
                  y: Tensor, *, batch_of_one: str) -> UserError | None:
    """The :class:`UserError` that names what made training fail with ``e`` on the training
    inputs ``x`` and targets ``y``: inputs of another dtype than the model's, a loss that
    returns a value per sample or that autograd cannot connect to the parameters, a batch
    of one sample in train-mode batch norm (``batch_of_one``: where the caller's batch of one
    comes from and what to change), or a model whose own forward pass fails on them (inputs
    of another shape than it takes); None for any other failure (``train`` and
    ``train_replicas`` alike)."""
    return (_dtype_refusal(e, model, x) or _loss_refusal(e, model, loss_fn, x, y)
            or _graph_refusal(e, model, loss_fn, x, y) or _batch_of_one_refusal(e, batch_of_one)
            or _forward_refusal(e, model, x))


def _forward_refusal(e: BaseException, model: nn.Module, x: Tensor) -> UserError | None:
    """The :class:`UserError` for a failure ``e`` of the model's own forward pass, which an
    eval-mode pass of the first two training inputs repeats (most often inputs of another
    shape than the model takes: a convolution given flat rows): the inputs' shape, the
    model's class and the line of the model's code that raised, which the traceback it
    replaces showed; None for any other failure (the loss's, a step's)."""
    if (not isinstance(e, RuntimeError) or isinstance(e, torch.cuda.OutOfMemoryError)
            or not len(x)):
        return None
    try:
        with torch.no_grad(), eval_mode(model):
            model(x[:2])
    except RuntimeError as again:
        reason = (str(again).strip().splitlines() or [type(again).__name__])[0]
        return UserError(
            f"the model ({type(model).__name__}) fails on the training inputs, each of shape "
            f"{tuple(x.shape[1:])}: {reason}{raised_at(again)}; give it inputs of the shape "
            "it takes (a registered model is built for the data's input_shape), or data of "
            "that shape")
    except Exception:
        return None
    return None


def _graph_refusal(e: BaseException, model: nn.Module, loss_fn: Any, x: Tensor,
                   y: Tensor) -> UserError | None:
    """The :class:`UserError` of :func:`~sgdlab.operators.params.reaching_parameters` for a
    failure ``e`` (autograd's "element 0 of tensors does not require grad") of a loss that
    autograd cannot connect to the parameters, found on the first two examples (checked here,
    after the failure, not at every step); None for any other failure."""
    if not (isinstance(e, RuntimeError) and "does not require grad" in str(e)):
        return None
    try:
        with torch.enable_grad(), eval_mode(model):
            reaching_parameters(loss_fn(model(x[:2]), y[:2]))
    except UserError as refusal:
        return refusal
    except Exception:
        return None
    return None


def _batch_of_one_refusal(e: BaseException, remedy: str) -> UserError | None:
    """The :class:`UserError` for torch's "Expected more than 1 value per channel when
    training" (batch norm in train mode given a batch of one sample: most often the last
    partial batch of an epoch, N mod batch_size = 1), which says nothing of the batch, with
    ``remedy`` (where the batch of one comes from, what to change); None for any other
    failure."""
    if not (isinstance(e, ValueError)
            and str(e).startswith("Expected more than 1 value per channel when training")):
        return None
    return UserError(
        f"a mini-batch of one sample reached a batch-norm layer in train mode, which needs at "
        f"least two ({str(e).splitlines()[0]}); {remedy}")


def _dtype_refusal(e: BaseException, model: nn.Module, x: Tensor) -> UserError | None:
    """The :class:`UserError` for a failure ``e`` (torch's "mat1 and mat2 must have the same
    dtype") of a model whose parameters are of another floating dtype than its inputs ``x``,
    when a forward pass of one example fails too (:func:`~sgdlab.operators.batches.
    dtype_refusal`, shared with the measurements); None for any other failure. Not checked
    before: a model that casts its own inputs runs on them."""
    if not isinstance(e, RuntimeError):
        return None
    return dtype_refusal(model, x, str(e).splitlines()[0] if str(e) else "")


def _loss_refusal(e: BaseException, model: nn.Module, loss_fn: Any, x: Tensor,
                  y: Tensor) -> UserError | None:
    """The :class:`UserError` for a failure ``e`` (autograd's "grad can be implicitly created
    only for scalar outputs", a broadcast in the evaluation) of a loss that returns a value
    per sample, found on the first two examples (:func:`~sgdlab.operators.batches.
    loss_refusal`, shared with the measurements); None for any other failure."""
    if not isinstance(e, RuntimeError):
        return None
    return loss_refusal(model, loss_fn, x, y, where=" on the first 2 training examples")


class _Training:
    """One call of :func:`train`, in the phases a reader looks for: set-up (``__init__``,
    ``_resume``, ``open_record``), the epochs and their steps (``fit``, ``_epoch``), evaluation
    (``evaluate``), checkpoints (``checkpoint``) and completion (``complete``; ``diverged`` and
    ``abort`` for the other two ways a run ends).

    The completion guarantees live in ``checkpoint`` and ``complete``:

    - every metric row a checkpoint's history holds is in the store before the checkpoint is
      written (the writer is flushed first), and the checkpoint records how many rows that is;
      a resume truncates the run's rows to that count, so no row is lost or doubled whatever
      the checkpoint cadence;
    - the end hooks and the final evaluation run once: the final checkpoint says they ran;
      the trained steps are saved before them (a resume after an interrupt there only
      evaluates and runs the hooks);
    - with ``record_end`` the last rows, summary and status are one transaction.
    """

    def __init__(self, model, loss_fn, data, optimizer, *, epochs, batch_size, schedule,
                 replacement, seed, callbacks, eval_every, eval_subset, checkpoint_dir,
                 checkpoint_every, device, max_steps, drop_last, resume, progress,
                 schedule_every="step", checkpoint_seconds=None, clip_grad_norm=None,
                 sequence_loss="mean", eval_bn="running", micro_batch=None,
                 on_checkpoint=None):
        self.t_start = time.perf_counter()
        self.wall_before = 0.0   # seconds of the calls before a resume, from the checkpoint
        self.on_checkpoint = on_checkpoint
        # numpy's and torch's ints are counts and seeds (np.int64 from a grid), as for the
        # instruments; a bool is neither
        epochs, batch_size, eval_every, eval_subset, checkpoint_every, max_steps, seed = map(
            plain_int, (epochs, batch_size, eval_every, eval_subset, checkpoint_every,
                        max_steps, seed))
        _check_args(epochs, batch_size, eval_every, eval_subset, checkpoint_every, max_steps,
                    seed)
        if checkpoint_seconds is not None and (
                isinstance(checkpoint_seconds, bool)
                or not isinstance(checkpoint_seconds, (int, float))
                or not checkpoint_seconds >= 0):
            raise UserError(f"checkpoint_seconds must be a number >= 0, "
                            f"{refused_value(checkpoint_seconds)}")
        self.checkpoint_seconds = checkpoint_seconds
        self.saved_time = time.monotonic()   # of the last checkpoint written (or the start)
        clip_grad_norm = checked_float("clip_grad_norm", clip_grad_norm, 0.0, " (or None)",
                                       strict=True, optional=True)
        if schedule_every not in ("step", "epoch"):
            raise UserError(f"schedule_every must be 'step' or 'epoch', got {schedule_every!r}")
        self.schedule_per_step = schedule_every == "step"
        if eval_bn not in EVAL_BN:
            raise UserError(f"eval_bn must be one of {', '.join(map(repr, EVAL_BN))}, got "
                            f"{eval_bn!r}")
        self.eval_bn = eval_bn
        check_dataset(data)
        check_loss(loss_fn)
        _check_optimizer_updates(model, optimizer)
        if schedule is not None and not callable(getattr(schedule, "step", None)):
            raise UserError(f"schedule must have a step() (a torch LR scheduler, or "
                            f"sgdlab.optim.build_schedule(name, optimizer, steps_per_epoch=, "
                            f"total_steps=, ...)), got {schedule!r}")
        if resume and checkpoint_dir is None:
            raise UserError("resume=True needs checkpoint_dir")
        if device is not None:
            device = training_device(device)
            model.to(device)
        else:
            p = next(model.parameters(), None)
            device = p.device if p is not None else torch.device("cpu")
        if data.x_train.device != device:
            data = data.to(device)
        self.x_train, self.y_train = data.x_train, data.y_train
        self.clip = (None if clip_grad_norm is None else
                     ([q for q in model.parameters() if q.requires_grad], float(clip_grad_norm)))
        self.n = n = len(self.x_train)
        if n == 0:
            raise UserError("the training set is empty")
        self.loss_scale = _sequence_loss_scale(sequence_loss, self.y_train)
        self.micro_batch = _check_micro_batch(micro_batch, optimizer, loss_fn, self.y_train)
        self.model, self.loss_fn = model, loss_fn
        self.optimizer, self.schedule = optimizer, schedule
        self.epochs, self.max_steps, self.drop_last = epochs, max_steps, drop_last
        self.progress, self.call = progress, (epochs, batch_size, replacement, seed)
        # when and at which step progress="epochs" last wrote a line
        self.said_at, self.said_step = time.monotonic(), -1
        self.checkpoint_every, self.eval_every = checkpoint_every, eval_every
        self.classification = (getattr(data, "task", "classification") == "classification"
                               and not self.y_train.is_floating_point())
        if batch_size == "full":
            batch_size = n
        # a schedule's np.int64 (np.geomspace(...).astype(int)[e]) is a batch size too
        self.bs_of: Callable[[int], int] = ((lambda e: plain_int(batch_size(e)))
                                            if callable(batch_size) else (lambda e: batch_size))
        self.epoch_lengths = epoch_steps(n, self.bs_of, epochs, drop_last)
        # the step each epoch starts at, and the total after the last
        starts = list(itertools.accumulate(self.epoch_lengths, initial=0))
        self.total_steps = starts[-1] if max_steps is None else min(starts[-1], max_steps)
        # the epochs the run reaches (fewer where max_steps stops it): progress lines' total
        self.epochs_reached = sum(start < self.total_steps for start in starts[:-1])

        self.gen = torch.Generator().manual_seed(int(seed))
        self.stream = BatchStream(n, self.gen, replacement=replacement, drop_last=drop_last,
                                  device=None if device.type == "cpu" else device,
                                  augment=batch_augmentation(data))
        # (a fixed subset's own generator, so it does not shift the batch stream)
        self.eval_sets = evaluation_sets(data, eval_subset, int(seed) + 0x5EED)
        self.needs_closure = bool(getattr(optimizer, "needs_closure", False))
        self.callbacks = as_callbacks(callbacks)
        self.callback_keys = callback_keys(self.callbacks)
        check_callbacks(self.callbacks, model, data)
        self.hooks = {h: [cb for cb in self.callbacks if _overrides(cb, h)] for h in
                      ("on_train_begin", "on_step_begin", "on_after_backward", "on_step_end",
                       "on_epoch_end", "on_train_end")}
        self.eval_schedule = eval_every if isinstance(eval_every, Schedule) else None
        self.sync_every = _loss_sync_every(device, self.callbacks)
        self.pending: list[Tensor] = []   # unread losses in deferred mode
        self.ctx = TrainContext(model=model, optimizer=optimizer, loss_fn=loss_fn, data=data,
                                schedule=schedule, schedule_every=schedule_every)
        self.loop: dict[str, Any] = {"step": 0, "epoch": 0, "step_in_epoch": 0, "grad_evals": 0,
                                     "samples": 0, "loss_sum": 0.0, "loss_count": 0,
                                     "last_eval_step": -1}
        self.ckpt_file = checkpoint_path(checkpoint_dir) if checkpoint_dir is not None else None
        self.saved_at: int | None = None     # the step of the last checkpoint on disk
        self.interrupts = StepInterrupts()   # a Ctrl-C held to a step's end (fit)
        self.run_id: str | None = None
        self.store = self.writer = self.pbar = None
        self.status, self.message = "finished", None
        self.settings = {**_run_settings(optimizer, schedule),     # as built, before any step
                         **model_settings(model, loss_fn, eval_subset),
                         "schedule_every": schedule_every,
                         "clip_grad_norm": None if self.clip is None else self.clip[1],
                         "sequence_loss": sequence_loss, "eval_bn": eval_bn,
                         "micro_batch": self.micro_batch}
        if resume:
            self._resume()

    # --- set-up -----------------------------------------------------------------------------
    def _resume(self) -> None:
        f = self.ckpt_file
        state = load_checkpoint(f, map_location="cpu",  # RNG states must be CPU
                                require=("model", "optimizer", "loop", "stream", "rng"))
        self._check_resumable(state)
        load_state(self.model, state["model"], f, "model")
        load_state(self.optimizer, state["optimizer"], f, "optimizer")
        if self.schedule is not None and state.get("schedule") is not None:
            load_state(self.schedule, state["schedule"], f, "schedule")
        self._load_callback_states(state.get("callbacks", []))
        self.loop.update(state["loop"])
        self.saved_at = self.loop["step"]
        self.stream.load_state_dict(state["stream"])
        set_rng_state(state["rng"], self.gen)
        self.ctx.history = {k: [tuple(p) for p in v] for k, v in state["history"].items()}
        self.run_id = state.get("run_id")
        self.wall_before = float(state.get("wall_time", 0.0))

    def wall_time(self) -> float:
        """Seconds of the run so far: this call's, plus the earlier calls' that its checkpoint
        carried."""
        return self.wall_before + time.perf_counter() - self.t_start

    def _load_callback_states(self, saved: list | dict) -> None:
        """The saved states back on the callbacks of the same key (:func:`callback_keys`):
        by position, states landed on another instrument when the list was reordered. A
        non-empty state no callback of this run takes is refused (its instrument's memory
        would be lost); a callback without a saved state (one added) starts afresh."""
        f = self.ckpt_file
        if isinstance(saved, list):   # a checkpoint from before the keys: by position
            if len(saved) != len(self.callbacks):
                raise UserError(f"checkpoint {str(f)!r} has {len(saved)} callback states but "
                                f"{len(self.callbacks)} callbacks were given")
            saved = dict(zip(self.callback_keys, saved))
        orphans = [k for k, s in saved.items() if s and k not in self.callback_keys]
        if orphans:
            raise UserError(
                f"checkpoint {str(f)!r} holds the state of {', '.join(orphans)}, which no "
                "callback of this run matches (a state goes to the callback of the same kind "
                "and position among those of its kind; this run has "
                f"{', '.join(self.callback_keys) or 'none'}); resume with the run's instruments")
        for key, cb in zip(self.callback_keys, self.callbacks):
            if key in saved:
                cb.load_state_dict(saved[key])

    def _sampling(self) -> dict[str, Any]:
        """What the checkpoint's batch order (permutation, position, generator) belongs to:
        the training set's size and the sampling settings, with the batch size of each epoch
        begun."""
        epochs, _, replacement, seed = self.call
        return {"examples": self.n, "replacement": replacement, "drop_last": self.drop_last,
                "seed": int(seed), "batch_sizes": [self.bs_of(e) for e in
                                                   range(min(self.loop["epoch"] + 1, epochs))]}

    def _check_resumable(self, state: dict[str, Any]) -> None:
        """A :class:`UserError` naming each setting of this call that differs from the
        checkpoint's run: continued with it, the run would be neither (a larger training set
        drew empty batches), or the checkpoint's value would replace it without a word (the
        optimizer's and a torch scheduler's ``load_state_dict`` put theirs back). The number of
        epochs, ``max_steps``, ``eval_every`` and ``checkpoint_every`` may change."""
        changed = (self._sampling_changes(state.get("sampling"))
                   + self._setting_changes(state.get("settings")))
        if changed:
            raise UserError(f"cannot resume from {str(self.ckpt_file)!r}: the run it saved "
                            f"differs from this one in {', '.join(changed)}; resume with the "
                            "same settings")

    def _sampling_changes(self, saved: dict[str, Any] | None) -> list[str]:
        """Each sampling setting of this call that differs from the checkpoint's run."""
        if saved is None:        # a checkpoint from before they were recorded
            return []
        now = self._sampling()
        changed = [f"{k} ({saved[k]} -> {now[k]})" for k in ("seed", "replacement", "drop_last")
                   if saved[k] != now[k]]
        for e, b in enumerate(saved["batch_sizes"][:self.epochs]):
            if self.bs_of(e) != b:
                changed.append(f"batch_size (epoch {e}: {b} -> {self.bs_of(e)})")
                break
        if saved["examples"] != now["examples"]:
            changed.append(f"the training set ({saved['examples']} -> {now['examples']} "
                           "examples)")
        return changed

    def _setting_changes(self, saved: dict[str, Any] | None) -> list[str]:
        """Each optimizer, schedule or evaluation setting of this call (as built, before any
        step: :func:`_run_settings`) that differs from the checkpoint's run's."""
        if saved is None:        # a checkpoint from before they were recorded
            return []
        now = self.settings
        groups = list(zip(saved["param_groups"], now["param_groups"]))
        # (a checkpoint from before the optimizer's class and own settings were recorded
        # has neither)
        other_optimizer = saved.get("optimizer") not in (None, now["optimizer"])
        changed = ([f"the optimizer ({saved['optimizer']} -> {now['optimizer']})"]
                   if other_optimizer else [])
        for i, (was, is_) in enumerate(groups):
            if "initial_lr" in was and "initial_lr" in is_:
                # lr as built is the schedule's first rate (RandomLR's a draw): compared
                # through initial_lr and the schedule's settings
                was, is_ = ({k: v for k, v in g.items() if k != "lr"} for g in (was, is_))
            changed += changed_settings(was, is_, of=f" of parameter group {i}"
                                        if len(groups) > 1 else "")
        if not other_optimizer and saved.get("optimizer_settings") is not None and (
                now["optimizer_settings"] is not None):
            changed += changed_settings(saved["optimizer_settings"], now["optimizer_settings"],
                                        of=" of the optimizer")
        if saved["schedule"] != now["schedule"]:
            changed.append(f"the schedule ({saved['schedule']} -> {now['schedule']})")
        elif now["schedule"] is not None and (   # without a schedule it changes nothing
                saved.get("schedule_every", "step") != now["schedule_every"]):
            changed.append(f"schedule_every ({saved.get('schedule_every', 'step')!r} -> "
                           f"{now['schedule_every']!r})")
        elif saved["schedule_state"] is not None and now["schedule_state"] is not None:
            changed += changed_settings(saved["schedule_state"], now["schedule_state"],
                                        of=" of the schedule")
        if saved.get("clip_grad_norm") != now["clip_grad_norm"]:
            changed.append(f"clip_grad_norm ({saved.get('clip_grad_norm')} -> "
                           f"{now['clip_grad_norm']})")
        # (a checkpoint from before the setting was recorded stepped on the mean)
        if saved.get("sequence_loss", "mean") != now["sequence_loss"]:
            changed.append(f"sequence_loss ({saved.get('sequence_loss', 'mean')!r} -> "
                           f"{now['sequence_loss']!r})")
        # (its evaluations would mix two kinds of batch-norm statistics)
        if saved.get("eval_bn", "running") != now["eval_bn"]:
            changed.append(f"eval_bn ({saved.get('eval_bn', 'running')!r} -> "
                           f"{now['eval_bn']!r})")
        # (another chunking is another gradient where batch norm normalises per chunk)
        if saved.get("micro_batch") != now["micro_batch"]:
            changed.append(f"micro_batch ({saved.get('micro_batch')} -> {now['micro_batch']})")
        return changed + model_setting_changes(saved, now)

    @property
    def resumed(self) -> bool:
        """Whether this call goes on from a checkpoint: a step taken, or step 0 evaluated (so
        read before this call evaluates or steps: after, every call is one)."""
        return self.loop["step"] > 0 or self.loop["last_eval_step"] >= 0

    def open_record(self, store: Any, run_id: str | None, name: str | None = None) -> None:
        """The run's record in the store: created here, or the caller's (``run_id``); on a
        resume the rows logged after the checkpoint are dropped (they are redone)."""
        run_id = run_id or self.run_id
        if store is not None:
            run_id, self.writer = open_writer(
                store, run_id, resumed=self.resumed, stored_rows=self.loop.get("stored_rows"),
                step=self.loop["step"], new_run=lambda: store.create_run(
                    _call_config(self.model, self.optimizer, self.schedule, *self.call),
                    name=name))
            self.store = store
            self.ctx.logger = self.writer.log
        self.run_id = run_id
        if self.progress and self.progress != "epochs" and progress_watched():
            from tqdm.auto import tqdm
            self.pbar = tqdm(total=self.total_steps, initial=min(self.loop["step"],
                                                                 self.total_steps),
                             unit="step", dynamic_ncols=True, leave=False, desc="train")

    # --- the epochs and their steps ---------------------------------------------------------
    def fit(self) -> None:
        loop, ctx = self.loop, self.ctx
        ctx.step, ctx.epoch = loop["step"], loop["epoch"]
        ctx.steps_per_epoch = (self.epoch_lengths[min(loop["epoch"], self.epochs - 1)]
                               if self.epochs > 0 else 0)
        ctx.batch_size = (min(self.bs_of(min(loop["epoch"], self.epochs - 1)), self.n)
                          if self.epochs > 0 else None)
        # each callback refuses this run's loss and data before any measures step 0: from its
        # own on_train_begin, a later one's refusal came after an earlier one had logged step 0
        for cb in self.callbacks:
            cb.check_run(ctx)
        # (read only by a callback that replays the restored history: TensorBoard's; a
        # sweep worker's recorder, which reads nothing back, has none)
        metrics = getattr(self.store, "metrics", None)
        if metrics is not None and self.run_id is not None and self.resumed:
            ctx.stored_metrics = functools.partial(metrics, self.run_id, wall=True)
        for cb in self.hooks["on_train_begin"]:
            cb.on_train_begin(ctx)
        if not self.resumed:
            self.evaluate()
            self._log_lr()       # the epoch ends' samples leave out the first epoch's
        # with somewhere to save, a Ctrl-C or SIGTERM during a step waits for its end and is
        # raised there after a checkpoint: the steps since the last periodic one are kept
        with self.interrupts if self.ckpt_file is not None else contextlib.nullcontext():
            self.interrupts.holding = True
            while loop["epoch"] < self.epochs:
                if not self._epoch():
                    break            # max_steps reached inside the epoch
                self._end_epoch()
            self._stop_if_interrupted()

    def _stop_if_interrupted(self) -> None:
        """An interrupt held during a step: checkpoint here, at a step boundary (the state a
        periodic checkpoint at this step saves), then raise it."""
        if self.interrupts.held is None:
            return
        if self.pending:
            self._read_losses()
        if self.saved_at != self.loop["step"]:
            self.checkpoint()
        self.interrupts.raise_held()

    def _epoch(self) -> bool:
        """The steps of the current epoch; False if ``max_steps`` stopped it."""
        loop, ctx, stream = self.loop, self.ctx, self.stream
        x_train, y_train, model, loss_fn = self.x_train, self.y_train, self.model, self.loss_fn
        optimizer, pending = self.optimizer, self.pending
        schedule = self.schedule if self.schedule_per_step else None
        cb_step_begin = self.hooks["on_step_begin"]
        cb_after_backward = self.hooks["on_after_backward"]
        cb_step_end = self.hooks["on_step_end"]
        eval_schedule, pbar, sync_every = self.eval_schedule, self.pbar, self.sync_every
        max_steps, checkpoint_every = self.max_steps, self.checkpoint_every
        interrupts = self.interrupts
        epoch = loop["epoch"]
        b = self.bs_of(epoch)
        n_steps = self.epoch_lengths[epoch]
        ctx.epoch, ctx.steps_per_epoch, ctx.batch_size = epoch, n_steps, min(b, self.n)
        while loop["step_in_epoch"] < n_steps:
            if max_steps is not None and loop["step"] >= max_steps:
                if pending:
                    self._read_losses()
                return False
            if interrupts.held is not None:
                self._stop_if_interrupted()
            xb, yb = stream.batch(x_train, y_train, b)
            ctx.batch = (xb, yb)
            for cb in cb_step_begin:
                cb.on_step_begin(ctx)
            if self.needs_closure:
                _closure_step(ctx, optimizer, model, loss_fn, stream, x_train, y_train, b,
                              loop, cb_after_backward, self.clip, self.loss_scale)
            else:
                optimizer.zero_grad(set_to_none=True)
                chunked = self.micro_batch is not None and len(yb) > self.micro_batch
                if chunked:   # backpropagated chunk by chunk, the weighted loss returned
                    loss = micro_batch_backward(model, loss_fn, xb, yb, self.micro_batch)
                else:
                    loss = loss_fn(model(xb), yb)
                if sync_every == 1:
                    v = loss.item()
                    if not math.isfinite(v):
                        raise _Diverged(loop["step"], v)
                    ctx.loss = v
                    loop["loss_sum"] += v
                    loop["loss_count"] += 1
                else:
                    pending.append(loss.detach())
                # (a scaled loss that overflows to inf in float16 still has the gradient
                # loss_scale x that of the finite loss: mul's backward does not read its output)
                if not chunked:
                    (loss if self.loss_scale == 1 else loss * self.loss_scale).backward()
                if self.clip is not None:
                    torch.nn.utils.clip_grad_norm_(*self.clip)
                for cb in cb_after_backward:
                    cb.on_after_backward(ctx)
                optimizer.step()
                loop["grad_evals"] += 1
                loop["samples"] += len(yb)
            if schedule is not None:
                schedule.step()
            loop["step"] += 1
            loop["step_in_epoch"] += 1
            ctx.step = loop["step"]
            if len(pending) >= sync_every:
                self._read_losses()
            if cb_step_end:
                # the step-end measurements, maybe long, stay interruptible at once
                interrupts.holding = False
                for cb in cb_step_end:
                    cb.on_step_end(ctx)
                interrupts.holding = True
            if eval_schedule is not None and eval_schedule(loop["step"]):
                self.evaluate()
            if pbar is not None:
                pbar.update(1)
            if (checkpoint_every is not None and loop["step"] % checkpoint_every == 0
                    and loop["step_in_epoch"] < n_steps and self._checkpoint_due()):
                # (a checkpoint due on an epoch's last step waits for the epoch end work)
                if pending:
                    self._read_losses()
                self.checkpoint()
        if pending:
            self._read_losses()
        return True

    def _end_epoch(self) -> None:
        loop, ctx = self.loop, self.ctx
        ctx.step = loop["step"]
        done = loop["epoch"] + 1
        ctx.log_dict(_epoch_metrics(loop, done, self.n))
        if self._eval_due_at_epoch_end(done):
            self.evaluate()
        if self.hooks["on_epoch_end"]:
            holding, self.interrupts.holding = self.interrupts.holding, False
            for cb in self.hooks["on_epoch_end"]:
                cb.on_epoch_end(ctx)
            self.interrupts.holding = holding
        if self.schedule is not None and not self.schedule_per_step:
            self.schedule.step()         # after the epoch's metrics, as torch's examples do
        self._log_lr()                   # after it: the lr the next epoch steps with
        loop.update(epoch=done, step_in_epoch=0, loss_sum=0.0, loss_count=0)
        if self.pbar is not None:
            self.pbar.set_postfix(_postfix(ctx.history), refresh=False)
        elif self.progress == "epochs" and (
                self.said_step < 0 or done == self.epochs_reached
                or time.monotonic() - self.said_at >= 5.0):
            # the first epoch this call completes (a resumed run's too: it said nothing until
            # 5 s had passed), the last, and one every 5 s between: a few lines a minute
            self._say(f"epoch {done}/{self.epochs_reached} (step {loop['step']}/"
                      f"{self.total_steps})")
        if ((self.checkpoint_every is None or loop["step"] % self.checkpoint_every == 0)
                and self._checkpoint_due()):
            self.checkpoint()
        elif self.writer is not None:
            self.writer.flush()

    def _log_lr(self) -> None:
        """``lr`` (first parameter group) at the current step: the one that step uses."""
        group = self.optimizer.param_groups[0]
        if "lr" in group:
            self.ctx.log("lr", float(group["lr"]))

    def _say(self, line: str) -> None:
        """A progress="epochs" line on stderr: ``line``, then the latest metrics."""
        self.said_at, self.said_step = time.monotonic(), self.loop["step"]
        shown = "  ".join(f"{k} {v}" for k, v in _postfix(self.ctx.history).items())
        print(f"{line}{'  ' + shown if shown else ''}", file=sys.stderr, flush=True)

    def _read_losses(self) -> None:
        # Move pending losses to the epoch sum; raise _Diverged on the first non-finite one.
        pending, loop = self.pending, self.loop
        vals = torch.stack(pending).tolist() if len(pending) > 1 else [pending[0].item()]
        first_step = loop["step"] - len(pending)
        pending.clear()
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                raise _Diverged(first_step + i, v)
            loop["loss_sum"] += v
            loop["loss_count"] += 1
        self.ctx.loss = vals[-1]

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self) -> None:
        # a pass over the evaluation data, maybe long: interruptible at once
        holding, self.interrupts.holding = self.interrupts.holding, False
        self._evaluate()
        self.interrupts.holding = holding

    def _evaluate(self) -> None:
        ctx = self.ctx
        ctx.step = self.loop["step"]
        if self.eval_bn == "recompute":
            b = self.bs_of(min(self.loop["epoch"], max(self.epochs - 1, 0)))
            if self.micro_batch is not None:    # the batches training normalises with
                b = min(b, self.micro_batch)
            recompute_eval_statistics(self.model, self.x_train, b)
        for name, v in evaluation_metrics(self.model, self.loss_fn, self.eval_sets,
                                          classification=self.classification):
            ctx.log(name, v)
        self.loop["last_eval_step"] = self.loop["step"]

    def _eval_due_at_epoch_end(self, epochs_done: int) -> bool:
        if isinstance(self.eval_every, Schedule):
            return False
        k = 1 if self.eval_every is None else self.eval_every
        return k > 0 and epochs_done % k == 0

    # --- checkpoint -------------------------------------------------------------------------
    def _checkpoint_due(self) -> bool:
        """``checkpoint_seconds`` have passed since the last checkpoint (always without it)."""
        return (self.checkpoint_seconds is None
                or time.monotonic() - self.saved_time >= self.checkpoint_seconds)

    def checkpoint(self) -> None:
        """Flush the metric rows, then save: the store holds every row of the checkpoint's
        history (``stored_rows`` of them) before the checkpoint exists."""
        if self.writer is not None:
            self.writer.flush()
            self.loop["stored_rows"] = self.writer.stored
        if self.ckpt_file is None:
            return
        save_checkpoint(self.ckpt_file, {
            "run_id": self.run_id,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule is not None else None,
            "callbacks": {k: cb.state_dict() for k, cb in zip(self.callback_keys,
                                                               self.callbacks)},
            "rng": rng_state(self.gen),
            "stream": self.stream.state_dict(),
            "sampling": self._sampling(),
            "settings": self.settings,
            "loop": dict(self.loop),
            "history": self.ctx.history,
            "wall_time": self.wall_time(),
        })
        self.saved_at = self.loop["step"]
        self.saved_time = time.monotonic()
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.ckpt_file)

    # --- completion -------------------------------------------------------------------------
    def diverged(self, d: _Diverged) -> None:
        loop = self.loop
        self.status = "diverged"
        # numbered as the history and the run's step count are (step 0: the initial weights):
        # the loss of the weights after d.step steps, before the step it would have made
        weights = (f"the weights after {d.step} step{'s' * (d.step != 1)}" if d.step
                   else "the initial weights")
        # another replica's loss: not LOSS_DIVERGENCE, as this replica's weights gave a finite
        # one (a warm start from them is not refused as one from weights that diverged)
        what = ("another replica's mini-batch loss was non-finite" if d.elsewhere
                else f"{LOSS_DIVERGENCE} ({d.value})" if d.scale is None else
                f"{LOSS_DIVERGENCE} times the loss scale {d.scale} ({d.value} x {d.scale} "
                f"overflowed to {d.scaled})")
        self.message = f"{what} at step {d.step} (epoch {loop['epoch']}, {weights}); "
        if loop["step"] == d.step:
            self.message += "stopped before the next step"
        else:  # deferred loss read-back: the weights went on for a few steps
            self.message += (f"noticed after step {loop['step']} (losses read back every "
                             f"{self.sync_every} steps)")
        self.ctx.step = loop["step"]

    def diverged_in_measurement(self, e: FloatingPointError) -> None:
        """A callback met non-finite numbers (the loss was still finite): the run diverged
        there, and keeps what it recorded before, as for a non-finite loss."""
        loop = self.loop
        self.status = "diverged"
        self.message = (f"non-finite values in a measurement after step {loop['step']} "
                        f"(epoch {loop['epoch']}): {e}")
        self.ctx.step = loop["step"]

    def abort(self, e: BaseException) -> None:
        """An exception or interrupt ends the run: keep what was logged, record why."""
        if self.pbar is not None:
            self.pbar.close()
        if isinstance(e, KeyboardInterrupt):
            # what the interrupt keeps, for the caller's message: the step it stopped at and
            # that of the last checkpoint on disk (None: none, the run restarts from step 0)
            e.stopped_step = self.loop["step"]
            e.checkpoint_step = (self.saved_at if self.ckpt_file is not None
                                 and self.ckpt_file.exists() else None)
        record_abort(self.store, self.writer, self.run_id, e,
                     where=f"at step {self.loop['step']}")

    def complete(self, *, record_end: bool) -> RunResult:
        """Final evaluation and end hooks (once per end of training, not again on resuming a
        finished run), the final checkpoint,
        the summary; with ``record_end`` the last rows, summary and status in one
        transaction."""
        loop, ctx = self.loop, self.ctx
        if self.pbar is not None:
            self.pbar.close()
        # once per end of training: not again when a finished run is resumed with nothing
        # left to do, again when a resume trained further (a max_steps stop extended); a
        # checkpoint from before this rule holds only ``ended``, set at its own step
        ended_at = loop.get("ended_at", loop["step"] if loop.get("ended") else None)
        to_end = ended_at is None or loop["step"] > ended_at
        if (self.status == "finished" and to_end and self.ckpt_file is not None
                and self.saved_at != loop["step"] and self._checkpoint_due()):
            # the trained steps saved before the final evaluation and end hooks (the final
            # measurements, maybe long): an interrupt there resumes without training again
            self.checkpoint()
        if self.status == "finished" and loop["last_eval_step"] != loop["step"]:
            self.evaluate()
        if to_end:
            for cb in self.hooks["on_train_end"]:
                cb.on_train_end(ctx)
            loop["ended"], loop["ended_at"] = True, loop["step"]
        if self.ckpt_file is None or ((self.status == "finished" or not self.ckpt_file.exists())
                                      and self._checkpoint_due()):
            self.checkpoint()   # a diverged run keeps its last good periodic checkpoint (if any)
        if self.progress == "epochs" and (self.said_step != loop["step"]
                                          or self.status != "finished"):
            # a run that max_steps stops mid-epoch, or that diverged, wrote no last line
            self._say(f"{self.status} at step {loop['step']}/{self.total_steps} "
                      f"({loop['epoch']}/{self.epochs_reached} epochs done)")
        final = _final(ctx.history, loop, epochs_done=loop["epoch"], n=self.n)
        wall = self.wall_time()
        result = RunResult(run_id=self.run_id, status=self.status, steps=loop["step"],
                           epochs_completed=loop["epoch"], history=ctx.history, final=final,
                           checkpoint=self.ckpt_file if self.ckpt_file is not None
                           and self.ckpt_file.exists() else None, wall_time=wall,
                           grad_evals=loop["grad_evals"], message=self.message)
        record_completion(self.store, self.writer, self.run_id, self.status,
                          summary=result.summary(), message=self.message, record_end=record_end)
        return result


def _closure_step(ctx: TrainContext, optimizer, model, loss_fn, stream: BatchStream,
                  x_train: Tensor, y_train: Tensor, b: int, loop: dict,
                  after_backward: list[Callback], clip: tuple | None = None,
                  loss_scale: int = 1) -> None:
    calls = 0
    same_batch = bool(getattr(optimizer, "closure_repeats_batch", False))
    returned: list[Tensor] = []     # the losses closure() read on the host, all finite

    def closure() -> Tensor:
        nonlocal calls
        if calls == 0 or same_batch:
            xb, yb = ctx.batch
        else:
            xb, yb = stream.batch(x_train, y_train, b)
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = loss_fn(model(xb), yb)
            if loss_scale == 1:
                v = sv = loss.item()
            else:      # the optimizer sees the loss it steps on; both in one read-back
                scaled = loss * loss_scale
                v, sv = torch.stack([loss.detach(), scaled.detach()]).tolist()
                loss = scaled
            if not math.isfinite(v):
                raise _Diverged(loop["step"], v)
            if not math.isfinite(sv):
                # the closure tells the optimizer its loss is finite (checks_finite_loss): a
                # finite loss whose product with the loss scale overflows (float16/bfloat16)
                # is refused here as the optimizer's own check would refuse it (Parle over a
                # communicator would otherwise read it as another replica's divergence)
                raise _Diverged(loop["step"], v, scale=loss_scale, scaled=sv)
            loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(*clip)
        loop["grad_evals"] += 1
        loop["samples"] += len(yb)
        if calls == 0:    # the step's loss and hooks are the first call's, either way
            ctx.loss = v
            loop["loss_sum"] += v
            loop["loss_count"] += 1
            for cb in after_backward:
                cb.on_after_backward(ctx)
        calls += 1
        returned.append(loss)
        return loss

    # it raises on a non-finite loss, read on the host above: the closure optimizers' own
    # check would add a device sync per call, after the backward pass is queued
    closure.checks_finite_loss = True  # type: ignore[attr-defined]
    loss = optimizer.step(closure)
    if getattr(optimizer, "communicator", None) is not None and loss is not None:
        # Parle over a communicator: another replica's non-finite loss comes back as this
        # step's NaN (every replica skipped the step), and this run stops as that one does.
        # A loss closure() returned was read on the host there and is finite: reading it
        # again would wait for the outer step queued after the all-reduce, a sync per step
        if not any(loss is t for t in returned):
            v = float(loss)    # (a tensor or a number)
            if not math.isfinite(v):  # this replica's own non-finite loss raised in closure()
                raise _Diverged(loop["step"], v, elsewhere=True)


def _epoch_metrics(loop: dict, epochs_done: int, n: int) -> dict[str, float]:
    out = {}
    if loop["loss_count"]:
        out["batch_loss"] = loop["loss_sum"] / loop["loss_count"]
    out["epoch"] = float(epochs_done)
    out["grad_evals"] = float(loop["grad_evals"])
    out["effective_epochs"] = loop["samples"] / n
    return out


def _final(history: dict, loop: dict, *, epochs_done: int, n: int) -> dict[str, float]:
    final: dict[str, float] = {}
    for name in EVAL_METRICS:
        finite = [v for _, v in history.get(name, []) if math.isfinite(v)]
        if finite:
            final[name] = finite[-1]
    final.update(zip(FINAL_COUNTERS, (loop["step"], epochs_done, loop["grad_evals"],
                                      loop["samples"] / n)))
    return final


def _postfix(history: dict) -> dict[str, str]:
    out = {}
    for name in ("batch_loss", "test_acc", "test_perplexity"):
        if history.get(name):
            out[name] = f"{history[name][-1][1]:.4g}"
    return out


def evaluation_sets(data: Any, eval_subset: int | None, seed: int,
                    device: torch.device | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """The evaluation splits of ``data``: ``train`` and, if it has test examples, ``test``;
    with ``eval_subset``, a fixed random subset of that many examples of each, drawn from a
    generator of its own seeded with ``seed`` (the global RNGs are untouched). Moved to
    ``device`` when given."""
    sets = {"train": (data.x_train, data.y_train)}
    if getattr(data, "x_test", None) is not None and len(data.x_test) > 0:
        sets["test"] = (data.x_test, data.y_test)
    g = torch.Generator().manual_seed(seed) if eval_subset is not None else None
    out = {}
    for split, (x, y) in sets.items():
        if g is not None and len(x) > eval_subset:
            idx = torch.randperm(len(x), generator=g)[:eval_subset].sort().values.to(x.device)
            x, y = x[idx], y[idx]
        out[split] = (x, y) if device is None else (x.to(device), y.to(device))
    return out


def evaluation_metrics(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                       sets: dict[str, tuple[Tensor, Tensor]], *, classification: bool
                       ) -> Iterator[tuple[str, float]]:
    """``(split_loss, value)`` (and ``split_acc`` for classification) for each evaluation set,
    from :func:`evaluate`; each split's as soon as it is evaluated."""
    for split, (xs, ys) in sets.items():
        for k, v in evaluate(model, loss_fn, xs, ys, classification=classification).items():
            yield f"{split}_{k}", v


# --- the run's record in the store, shared with the replica trainer -------------------------
def open_writer(store: Any, run_id: str | None, *, resumed: bool, stored_rows: int | None,
                step: int, new_run: Callable[[], str]) -> tuple[str, Any]:
    """``(run_id, writer)``: the metric writer of run ``run_id``, or of a new run
    (``new_run()``) when None. A resumed run keeps the ``stored_rows`` its checkpoint
    recorded and drops the later ones (those steps are redone); a checkpoint from before row
    counts were recorded keeps the rows up to its ``step``."""
    stored = 0
    if run_id is None:
        run_id = new_run()
    elif resumed:
        if stored_rows is None:
            store.delete_metrics_after(run_id, step)
            stored = store.count_metrics(run_id, measured=False)
        else:
            stored = int(stored_rows)
            store.truncate_metrics(run_id, stored)
    return run_id, store.writer(run_id, stored=stored)


def record_abort(store: Any, writer: Any, run_id: str | None, e: BaseException, *,
                 where: str | None = None) -> None:
    """An exception or interrupt ended the run: store the rows logged so far and the status
    (``interrupted`` or ``failed``) with the exception (``where`` it happened when it says
    nothing). Best effort: the exception itself is what the caller raises."""
    if writer is None:
        return
    try:
        writer.flush()
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        store.set_status(run_id, status, f"{type(e).__name__}: {e}" if str(e) or where is None
                         else f"{type(e).__name__} {where}")
    except Exception:
        pass


def record_completion(store: Any, writer: Any, run_id: str | None, status: str, *,
                      summary: dict[str, Any], message: str | None, record_end: bool) -> None:
    """The end of the run: with ``record_end`` its last rows, ``summary`` and status in one
    transaction (the run is ``finished`` only with all of them); else just the rows (the
    caller ends the run with what else it owes)."""
    if writer is None:
        return
    if record_end:
        store.complete_run(run_id, status, summary=summary, message=message,
                           rows=writer.take())
    else:
        writer.flush()


SEQUENCE_LOSSES = ("mean", "window-sum")
EVAL_BN = ("running", "recompute")


def recompute_eval_statistics(model: nn.Module, x_train: Tensor, batch_size: int) -> None:
    """Batch norm's running statistics recomputed at the current weights for an evaluation
    (``train(..., eval_bn="recompute")``; Parle's ``master_buffers="recompute"``), as the
    authors' ``dry_feed()`` before each validation (ucla-vision/entropy-sgd, python/train.py;
    parle_mpi.py): one train-mode pass over ``x_train`` with dropout off, in the stored order,
    in ⌈N/b⌉ consecutive batches of near-equal size (b = ``batch_size``), each batch
    normalised by its own statistics
    (:func:`~sgdlab.measure.batch_norm.recompute_bn_statistics` with ``layerwise=False``).
    Each statistic is the mean and unbiased variance of the layer's input over all N examples
    of that pass, pooled in float64: with one batch (b ≥ N), the training set's at every
    layer. ``dry_feed`` keeps the default momentum (0.1), an average dominated by the last
    batches; the pooled statistic weighs every example once. No random number is drawn and
    no parameter moves, so the training trajectory is the one without it; the statistics stay
    in the running buffers afterwards, as ``dry_feed()`` leaves them. Nothing happens for a
    model without tracked batch norm."""
    k = max(1, math.ceil(len(x_train) / max(int(batch_size), 1)))
    # the targets are not read: empty ones, so that nothing else is copied to the device
    batches = [(xb, xb.new_empty(0)) for xb in torch.tensor_split(x_train, k)]
    recompute_bn_statistics(model, batches, layerwise=False)


def micro_batch_backward(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                         x: Tensor, y: Tensor, size: int) -> Tensor:
    """Backpropagate the loss of ``(x, y)`` in consecutive chunks of at most ``size`` examples
    and return it, detached: Σ_k (n_k/n) L_k, L_k chunk k's mean loss (``loss_fn``) and n_k its
    examples, the batch's mean loss when nothing couples the examples (batch norm in train
    mode normalises each chunk by its own statistics). The gradients accumulate into
    ``.grad``, one chunk's graph alive at a time."""
    n, total = len(y), None
    for xs, ys in zip(x.split(size), y.split(size)):
        loss = loss_fn(model(xs), ys) * (len(ys) / n)
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    return total


def micro_batch_optimizer_refusal(optimizer: Any, name: str) -> str | None:
    """Why a ``micro_batch`` does not go with ``optimizer`` (an optimizer or its class, called
    ``name``), or None: a closure optimizer's closure evaluates its own batches, which the loop
    cannot chunk. The one rule of the loop, a run config and an experiment run."""
    if getattr(optimizer, "needs_closure", False):
        return f"not supported with {name}, whose closure evaluates its own batches"
    return None


def _check_micro_batch(micro_batch: Any, optimizer: Any, loss_fn: Any,
                       y_train: Tensor) -> int | None:
    """``micro_batch`` as an int (or None), refused where the loop cannot chunk the batch."""
    if micro_batch is None:
        return None
    m = checked_int("micro_batch", micro_batch, 1, " (or None)")
    problem = micro_batch_optimizer_refusal(optimizer, type(optimizer).__name__)
    if problem is not None:
        raise UserError(f"micro_batch is {problem}")
    if not y_train.is_floating_point() and y_train.dim() > 1:
        # a per-token mean weighs tokens, not examples (and window-sum scales it): chunks
        # weighted by their examples would not be it
        raise UserError("micro_batch is not supported for token data (targets (N, T))")
    problem = chunk_loss_problem(loss_fn, y_train)
    if problem is not None:
        # each chunk's loss is normalised by that chunk's own sum of weights
        raise UserError(f"micro_batch weights the chunks' losses by their examples, but "
                        f"{problem}: the chunks' losses so weighted are not the batch's; use "
                        "a plain mean loss, or no micro_batch")
    return m


def _sequence_loss_scale(sequence_loss: Any, y_train: Tensor) -> int:
    """The factor on the loss the optimizer steps on: 1 for ``"mean"``, the window length T
    of token targets (N, T) for ``"window-sum"``."""
    if sequence_loss not in SEQUENCE_LOSSES:
        raise UserError(f"sequence_loss must be one of {', '.join(map(repr, SEQUENCE_LOSSES))}, "
                        f"got {sequence_loss!r}")
    if sequence_loss == "mean":
        return 1
    if y_train.is_floating_point() or y_train.dim() != 2:
        raise UserError(f"sequence_loss 'window-sum' needs token data (targets (N, T): a label "
                        f"per position of each window), got {y_train.dtype} targets of shape "
                        f"{tuple(y_train.shape)}")
    return int(y_train.shape[1])


def training_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``; a ``UserError`` for CUDA on a machine without it
    (``train`` and ``train_replicas`` alike)."""
    device = torch.device(device)
    # torch's own words were an AssertionError, "Torch not compiled with CUDA enabled"
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={str(device)!r}, but CUDA is not available on this "
                        "machine (a CPU build of torch, or no GPU visible): leave "
                        "device= out, or give 'cpu'")
    return device


def check_dataset(data: Any) -> None:
    """Training takes a :class:`sgdlab.data.Dataset`, not the ``(x, y)`` batches the
    measurements take: say so instead of failing on a missing attribute, naming
    ``Dataset.from_torch`` for a torch dataset or ``DataLoader``; and as many labels as
    examples."""
    from torch.utils.data import DataLoader, Dataset as TorchDataset, TensorDataset

    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        # its (inputs, targets) are a Dataset's training split: it was told to build one
        # from "your own tensors" without saying which
        raise UserError(
            "data is a torch TensorDataset: training takes a sgdlab.data.Dataset; its two "
            "tensors are one's training split, sgdlab.data.Dataset(*data.tensors) (with a "
            "test set: Dataset(*train.tensors, *test.tensors)), or "
            "sgdlab.data.Dataset.from_torch(data, test)")
    tensors = all(hasattr(data, a) for a in ("x_train", "y_train", "x_test", "y_test"))
    if isinstance(data, (TorchDataset, DataLoader)) and not tensors:
        # the loop batches tensors itself, from the run's seed (bit-exact resume): a torch
        # dataset is read into them once
        kind = "DataLoader" if isinstance(data, DataLoader) else "Dataset"
        raise UserError(
            f"data is a torch {kind} ({type(data).__name__}): training takes a "
            "sgdlab.data.Dataset of tensors, which it batches itself; read the dataset into "
            "one with sgdlab.data.Dataset.from_torch(train, test)")
    if not tensors:
        raise UserError(
            f"data must be a sgdlab.data.Dataset (x_train, y_train, x_test, y_test), got "
            f"{type(data).__name__}; for your own tensors: "
            "sgdlab.data.Dataset(x_train, y_train, x_test, y_test)")
    for part in ("train", "test"):
        x, y = getattr(data, f"x_{part}"), getattr(data, f"y_{part}")
        if x is not None and y is not None and len(x) != len(y):
            raise UserError(f"data: x_{part} has {len(x)} examples but y_{part} has {len(y)}")


def as_callbacks(callbacks: Any) -> list[Callback]:
    """One :class:`Callback` or an iterable of them, as a list; anything else (a measurement
    function, ...) is a ``UserError`` naming its position and the wrapper to use."""
    items = [callbacks] if isinstance(callbacks, (Callback, str)) else list(callbacks)
    for i, cb in enumerate(items):
        if isinstance(cb, str):     # an instrument's name, as a run config's measure entry
            raise UserError(f"callbacks[{i}] is the name {cb!r}, not a sgdlab.train.Callback: "
                            "build the instrument with sgdlab.train.instruments."
                            f"build_instrument({cb!r}, every=K, ...)")
        if not isinstance(cb, Callback):
            kind = "a function" if callable(cb) else f"a {type(cb).__name__}"
            raise UserError(f"callbacks[{i}] is {kind}, not a sgdlab.train.Callback: wrap a "
                            "measurement as MeasurementCallback(lambda ctx: {name: value}, "
                            "Schedule.every(k))")
    return items


def check_callbacks(callbacks: Sequence[Callback], model: nn.Module, data: Any) -> None:
    """Each callback's :meth:`~sgdlab.train.callbacks.Callback.check` on this model and data,
    before step 0: a ``UserError`` naming the callback (its instrument) and the option."""
    for i, cb in enumerate(callbacks):
        try:
            cb.check(model, data)
        except (ValueError, UserError) as e:
            raise UserError(f"callbacks[{i}] ({callback_name(cb)}): {e}") from None


def check_loss(loss_fn: Any) -> None:
    """Training, its evaluations and its budgets take ``loss_fn``'s value on a batch as the mean
    over the batch (chunks of an evaluation are weighted by their size): refuse a torch loss
    summed over the batch or returned per sample, naming the remedy."""
    reduction = loss_reduction(loss_fn)
    if reduction in ("sum", "none"):
        raise UserError(
            f"loss_fn {loss_name(loss_fn)}(reduction='{reduction}'): training and its "
            "reported losses need the mean over each batch; use reduction='mean' (a summed "
            "loss's steps are those of the mean with the learning rate times the batch size)")


def _run_settings(optimizer, schedule) -> dict[str, Any]:
    """The optimizer's and schedule's settings a resume may not change, as the run was built
    (before any step; a torch scheduler has already moved ``lr`` and added ``initial_lr`` at
    construction, the same on every build): the optimizer's class, each parameter group's
    hyper-parameters (every key but the parameters) and what the optimizer keeps outside
    them (its ``settings()``: a generator's seed, GLD's noise settings, ...), the schedule's
    class and its settings: a torch scheduler's (its state at construction, less what derives
    from the groups' rates, which the groups name: ``base_lrs``, ``_last_lr``, and its
    position), or the schedule's ``settings()`` (:mod:`sgdlab.optim.settings`)."""
    from ..optim.settings import group_settings, own_settings

    if isinstance(schedule, torch.optim.lr_scheduler.LRScheduler):
        sched_state = _without(snapshot(schedule.state_dict()), _SCHEDULER_DERIVED)
    else:
        sched_state = snapshot(own_settings(schedule))
    return {"optimizer": type(optimizer).__name__,
            "optimizer_settings": snapshot(own_settings(optimizer)),
            "param_groups": snapshot(group_settings(optimizer)),
            "schedule": type(schedule).__name__ if schedule is not None else None,
            "schedule_state": sched_state}


_SCHEDULER_DERIVED = frozenset({"base_lrs", "_last_lr", "last_epoch", "_step_count",
                                "_is_initial", "_get_lr_called_within_step"})


def _without(value: Any, keys: frozenset[str]) -> Any:
    """``value`` with ``keys`` left out of every mapping in it (SequentialLR holds the
    states of its schedulers)."""
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


MODEL_SETTINGS = ("loss", "dtype", "eval_subset")


def model_settings(model: nn.Module, loss_fn: Any, eval_subset: int | None) -> dict[str, Any]:
    """What a resume may not change of what is trained and measured (:data:`MODEL_SETTINGS`):
    a torch loss module's class (another loss trains another objective; a plain function,
    maybe a wrapper of the same loss, is not named), the parameters' dtype (a checkpoint
    loads into float32 parameters by casting) and ``eval_subset`` (another subset makes the
    resumed evaluations measure another quantity). Shared with the replica trainer."""
    return {"loss": torch_loss_class(loss_fn).__name__ if isinstance(loss_fn, nn.Module) else None,
            "dtype": ", ".join(sorted({str(p.dtype).removeprefix("torch.")
                                       for p in model.parameters()})),
            "eval_subset": eval_subset}


def model_setting_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Each :func:`model_settings` entry that differs (a loss compared only when both runs'
    are named)."""
    keys = [k for k in MODEL_SETTINGS if k in saved and k in now
            and not (k == "loss" and None in (saved[k], now[k]))]
    return changed_settings({k: saved[k] for k in keys}, {k: now[k] for k in keys})


def progress_watched() -> bool:
    """Whether someone watches the run's progress: a terminal, or a notebook, whose stderr is
    no terminal (where tqdm.auto draws its widget)."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _check_args(epochs, batch_size, eval_every, eval_subset, checkpoint_every, max_steps,
                seed) -> None:
    checked_int("epochs", epochs, 0)
    if (not callable(batch_size) and batch_size != "full"
            and not int_at_least(batch_size, 1)):
        raise UserError(f'batch_size must be an int >= 1, "full" (full-batch GD) or a callable '
                        f"epoch -> int, got {batch_size!r}")
    if eval_every is not None and not isinstance(eval_every, Schedule) and (
            not int_at_least(eval_every, 0)):
        raise UserError(f"eval_every must be an int >= 0 (epochs) or a Schedule, got "
                        f"{eval_every!r}")
    checked_int("eval_subset", eval_subset, 1, optional=True)
    checked_int("checkpoint_every", checkpoint_every, 1, " (steps)", optional=True)
    checked_int("max_steps", max_steps, 0, optional=True)
    # True was seed 1; bounded as a run config's seed, which a stored run's config holds
    if not is_seed(seed):
        raise UserError(not_a_seed("seed", seed))


def _check_optimizer_updates(model, optimizer) -> None:
    """An optimizer built over another model instance's parameters would "train" without
    changing ``model``."""
    if not isinstance(getattr(optimizer, "param_groups", None), list):
        raise UserError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}; by "
                        "name: sgdlab.optim.build_optimizer(name, model.parameters(), lr=...) "
                        "(build_optimizer_for(name, model, loss_fn=, data=, ...) for those "
                        "that need the model)")
    own = {id(p) for p in model.parameters()}
    updated = [p for g in optimizer.param_groups for p in g["params"]]
    if own and updated and not any(id(p) in own for p in updated):
        raise UserError("the optimizer updates none of the model's parameters (built for "
                        "another instance of the model?): build it from model.parameters()")


def python_trained(config: Any) -> str | None:
    """For the stored config of a run of a direct ``train()`` call (:func:`_call_config`), the
    start of what says so: "trained by train() from Python (a <model class> the store cannot
    rebuild)"; None for any other run. Such a run is resumed and measured from Python."""
    model = config.get("model") if isinstance(config, dict) else None
    if not (isinstance(model, dict) and "class" in model):
        return None
    return (f"trained by train() from Python (a {model['class']} the store cannot "
            "rebuild)")


def _call_config(model, optimizer, schedule, epochs, batch_size, replacement, seed) -> dict:
    """A description of a direct ``train()`` call, for runs created without a config file."""
    return {
        "model": {"class": type(model).__name__,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "optimizer": {"class": type(optimizer).__name__,
                      **{k: v for k, v in optimizer.defaults.items()
                         if isinstance(v, (int, float, str, bool, type(None)))}},
        "schedule": type(schedule).__name__ if schedule is not None else None,
        "train": {"epochs": epochs, "seed": seed, "replacement": replacement,
                  "batch_size": (batch_size if isinstance(batch_size, (int, str))
                                 else repr(batch_size))},
    }
