"""The training loop: ``train(model, loss_fn, data, optimizer, ...) -> RunResult``.

Conventions (see docs/ARCHITECTURE.md):

- **Steps and epochs.** An epoch is ``ceil(N / B)`` optimizer steps (``N // B`` with
  ``drop_last=True``), N the number of training examples and B the epoch's batch size
  (``batch_size`` may be a callable ``epoch -> int``). ``B >= N`` is full-batch gradient descent:
  every step uses the whole training set in its stored order, with no sampling.
- **Sampling.** Mini-batches come from one stream of indices driven by the loop's own
  ``torch.Generator`` seeded with ``seed``. Without replacement (default) the stream walks a
  fresh random permutation of ``range(N)`` per pass; the last batch of a pass holds the
  ``N mod B`` leftover examples (or is dropped with ``drop_last=True``), so one epoch visits every
  example exactly once. With replacement every batch is B indices drawn i.i.d. uniformly.
  The sampling generator is separate from torch's global one, so dropout or noisy optimizers do
  not change which batches are drawn.
- **Closure optimizers** (class attribute ``needs_closure = True``) get
  ``optimizer.step(closure)``; each ``closure()`` call draws the next batch from the stream,
  zeroes the gradients, runs forward + backward and returns the loss. Every call counts as one
  gradient evaluation: ``grad_evals`` and ``effective_epochs`` (examples processed / N, i.e.
  ``grad_evals * B / N`` when B divides N) are logged at each epoch end (for plain optimizers
  they equal steps and epochs). The step's recorded loss
  and the ``on_after_backward`` hook belong to the first closure call (the gradient at the
  current weights).
- **Evaluation** runs in ``model.eval()`` mode under ``torch.no_grad()`` and restores the
  previous mode. It logs ``train_loss``, ``test_loss`` (mean loss over the set) and, for
  classification, ``train_acc``, ``test_acc`` (fraction correct), at step 0, on the
  ``eval_every`` schedule and at the end. At each epoch end the loop also logs ``batch_loss``
  (mean of that epoch's mini-batch losses, in train mode), ``lr`` (first parameter group),
  ``epoch`` (epochs completed), ``grad_evals`` and ``effective_epochs``.
- **Divergence.** A non-finite mini-batch loss stops the run before the step that would use it;
  the result has status ``"diverged"``, the weights of the last finite step and the metrics
  recorded so far. It is not an exception. (On CUDA without callbacks the loss is read back
  every 16 steps to avoid a device sync per step, so the run may end up to 15 steps later.)
- **Checkpoints** (``checkpoint_dir``) are written every ``checkpoint_every`` steps (each epoch
  end when None) and at the end; ``resume=True`` continues from the last one bit for bit (same
  batches, same noise, same final weights as an uninterrupted run on the same machine).
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from .callbacks import Callback, Schedule, TrainContext
from .checkpoint import checkpoint_path, load_checkpoint, rng_state, save_checkpoint, set_rng_state

__all__ = ["RunResult", "BatchStream", "evaluate", "steps_per_epoch", "train"]

EVAL_BATCH = 4096


@dataclass
class RunResult:
    """What :func:`train` returns.

    ``history`` maps a metric name to ``[(step, value), ...]`` (everything logged by the loop and
    the callbacks, including before a resume); ``final`` holds the last value of each evaluation
    metric (``train_loss``, ``test_acc``, ...) plus ``steps``, ``epochs``, ``grad_evals``,
    ``effective_epochs``. ``wall_time`` is seconds spent in this call.
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

    def last(self, name: str, default: float = math.nan) -> float:
        series = self.history.get(name)
        return series[-1][1] if series else default


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimizer steps in one epoch of ``n`` examples (full batch: 1)."""
    if batch_size >= n:
        return 1
    return n // batch_size if drop_last else -(-n // batch_size)


class BatchStream:
    """An endless stream of index batches over ``range(n)`` (see the module docstring).

    ``next(b)`` returns a LongTensor of indices on ``device``, or None for the full batch
    (``b >= n``). Its state (current permutation and position) goes into checkpoints; the
    generator's state is saved with the other RNG states.
    """

    def __init__(self, n: int, generator: torch.Generator, *, replacement: bool = False,
                 drop_last: bool = False, device: torch.device | None = None):
        self.n, self.generator = n, generator
        self.replacement, self.drop_last = replacement, drop_last
        self.device = device
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
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm, self.pos, self._perm_dev = state["perm"], int(state["pos"]), None


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor,
             y: Tensor, *, classification: bool = True,
             batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """Mean loss (and accuracy, the fraction of argmax hits, for classification) of ``model``
    on ``(x, y)`` in eval mode; chunks are weighted by size. Restores the previous train/eval
    mode."""
    was_training = model.training
    model.eval()
    try:
        n = len(x)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            out = model(xb)
            total += loss_fn(out, yb).double() * len(xb)
            if classification:
                correct += (out.argmax(dim=1) == yb).sum()
        res = {"loss": (total / max(n, 1)).item()}
        if classification:
            res["acc"] = correct.item() / max(n, 1)
        return res
    finally:
        model.train(was_training)


def _loss_sync_every(device: torch.device, callbacks: Sequence[Callback]) -> int:
    """Steps between loss read-backs. Reading a CUDA loss is a device sync, so without callbacks
    (which may look at ``ctx.loss``) the loop reads 16 at a time; on CPU it is free."""
    return 1 if (device.type == "cpu" or callbacks) else 16


def _overrides(cb: Callback, hook: str) -> bool:
    # Skip hooks a callback does not implement: no Python call per step for them.
    return getattr(type(cb), hook, None) is not getattr(Callback, hook)


class _Diverged(Exception):
    def __init__(self, step: int, value: float):
        super().__init__(f"non-finite loss {value} at step {step + 1}")
        self.step, self.value = step, value


def train(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Any,
          optimizer: torch.optim.Optimizer, *, epochs: int,
          batch_size: int | Callable[[int], int] = 128, schedule: Any = None,
          replacement: bool = False, seed: int = 0, callbacks: Sequence[Callback] = (),
          eval_every: int | Schedule | None = None, eval_subset: int | None = None,
          store: Any = None, run_id: str | None = None,
          checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
          progress: bool = True, device: str | torch.device | None = None,
          max_steps: int | None = None, drop_last: bool = False,
          resume: bool = False) -> RunResult:
    """Train ``model`` on ``data.train`` with ``optimizer``; see the module docstring.

    Args:
        model, loss_fn: ``loss_fn(outputs, targets)`` is mean-reduced.
        data: a :class:`sgdlab.data.Dataset` (``x_train``, ``y_train``, ``x_test``, ``y_test``).
        optimizer: any ``torch.optim.Optimizer`` (``needs_closure`` ones get a batch-drawing
            closure).
        epochs: number of epochs (see ``max_steps`` to stop earlier).
        batch_size: int, or ``epoch -> int``; ``>= N`` means full-batch GD.
        schedule: anything with ``step()`` (and ``state_dict``/``load_state_dict`` for
            checkpoints), stepped once per optimizer step.
        replacement: sample mini-batches i.i.d. with replacement instead of by permutation.
        seed: seeds the loop's sampling generator (and the eval subset). Model initialisation
            and global RNGs are the caller's.
        callbacks: :class:`sgdlab.train.callbacks.Callback` objects.
        eval_every: evaluate every this many epochs (default 1; 0: only at step 0 and the end),
            or a :class:`Schedule` on steps.
        eval_subset: evaluate on a fixed random subset of this many train (and test) examples.
        store, run_id: a :class:`sgdlab.store.RunStore`; a run is created when ``run_id`` is
            None. Metrics are written in batches (every 2 s, each epoch end, and at the end).
        checkpoint_dir, checkpoint_every: where and how often (steps) to checkpoint.
        progress: show a tqdm bar (only when stderr is a terminal).
        device: moves model and data there (default: the model's device).
        max_steps: stop after this many optimizer steps in total (status "finished").
        drop_last: drop the last partial batch of each pass (without replacement).
        resume: continue from ``checkpoint_dir``'s last checkpoint.
    """
    t_start = time.perf_counter()
    _check_args(epochs, batch_size, eval_every, eval_subset, checkpoint_every, max_steps)
    if resume and checkpoint_dir is None:
        raise UserError("resume=True needs checkpoint_dir")

    if device is not None:
        device = torch.device(device)
        model.to(device)
    else:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    if data.x_train.device != device:
        data = data.to(device)
    x_train, y_train = data.x_train, data.y_train
    n = len(x_train)
    if n == 0:
        raise UserError("the training set is empty")
    classification = (getattr(data, "task", "classification") == "classification"
                      and not y_train.is_floating_point())
    bs_of: Callable[[int], int] = batch_size if callable(batch_size) else (lambda e: batch_size)

    def epoch_steps(e: int) -> int:
        b = bs_of(e)
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise UserError(f"batch_size({e}) must be an int >= 1, got {b!r}")
        return steps_per_epoch(n, b, drop_last)

    total_steps = sum(epoch_steps(e) for e in range(epochs))
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)

    gen = torch.Generator().manual_seed(int(seed))
    stream = BatchStream(n, gen, replacement=replacement, drop_last=drop_last,
                         device=None if device.type == "cpu" else device)
    eval_sets = _eval_sets(data, eval_subset, seed)
    needs_closure = bool(getattr(optimizer, "needs_closure", False))
    callbacks = list(callbacks)
    hooks = {h: [cb for cb in callbacks if _overrides(cb, h)] for h in
             ("on_train_begin", "on_step_begin", "on_after_backward", "on_step_end",
              "on_epoch_end", "on_train_end")}
    cb_step_begin, cb_after_backward = hooks["on_step_begin"], hooks["on_after_backward"]
    cb_step_end = hooks["on_step_end"]
    eval_schedule = eval_every if isinstance(eval_every, Schedule) else None
    sync_every = _loss_sync_every(device, callbacks)

    ctx = TrainContext(model=model, optimizer=optimizer, loss_fn=loss_fn, data=data)
    loop = {"step": 0, "epoch": 0, "step_in_epoch": 0, "grad_evals": 0, "samples": 0,
            "loss_sum": 0.0,
            "loss_count": 0, "last_eval_step": -1}
    ckpt_file = checkpoint_path(checkpoint_dir) if checkpoint_dir is not None else None

    if resume:
        state = load_checkpoint(ckpt_file, map_location="cpu")  # RNG states must be CPU
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if schedule is not None and state.get("schedule") is not None:
            schedule.load_state_dict(state["schedule"])
        cb_states = state.get("callbacks", [])
        if len(cb_states) != len(callbacks):
            raise UserError(f"checkpoint has {len(cb_states)} callback states but "
                            f"{len(callbacks)} callbacks were given")
        for cb, s in zip(callbacks, cb_states):
            cb.load_state_dict(s)
        loop.update(state["loop"])
        stream.load_state_dict(state["stream"])
        set_rng_state(state["rng"], gen)
        ctx.history = {k: [tuple(p) for p in v] for k, v in state["history"].items()}
        run_id = run_id or state.get("run_id")

    writer = None
    if store is not None:
        if run_id is None:
            run_id = store.create_run(_call_config(model, optimizer, schedule, epochs, batch_size,
                                                   replacement, seed))
        elif resume:
            store.delete_metrics_after(run_id, loop["step"])
        store.set_status(run_id, "running")
        writer = store.writer(run_id)
        ctx.logger = writer.log

    pbar = None
    if progress and sys.stderr.isatty():
        from tqdm.auto import tqdm
        pbar = tqdm(total=total_steps, initial=min(loop["step"], total_steps), unit="step",
                    dynamic_ncols=True, leave=False, desc="train")

    def do_eval() -> None:
        ctx.step = loop["step"]
        for split, (xs, ys) in eval_sets.items():
            for k, v in evaluate(model, loss_fn, xs, ys, classification=classification).items():
                ctx.log(f"{split}_{k}", v)
        loop["last_eval_step"] = loop["step"]

    def eval_due_at_epoch_end(epochs_done: int) -> bool:
        if isinstance(eval_every, Schedule):
            return False
        k = 1 if eval_every is None else eval_every
        return k > 0 and epochs_done % k == 0

    def save() -> None:
        if ckpt_file is None:
            return
        save_checkpoint(ckpt_file, {
            "run_id": run_id,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict() if schedule is not None else None,
            "callbacks": [cb.state_dict() for cb in callbacks],
            "rng": rng_state(gen),
            "stream": stream.state_dict(),
            "loop": dict(loop),
            "history": ctx.history,
        })

    status, message = "finished", None
    pending: list[Tensor] = []  # unread losses in deferred mode

    def read_losses() -> None:
        # Move pending losses to the epoch sum; raise _Diverged on the first non-finite one.
        vals = torch.stack(pending).tolist() if len(pending) > 1 else [pending[0].item()]
        first_step = loop["step"] - len(pending)
        pending.clear()
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                raise _Diverged(first_step + i, v)
            loop["loss_sum"] += v
            loop["loss_count"] += 1
        ctx.loss = vals[-1]

    try:
        ctx.step, ctx.epoch = loop["step"], loop["epoch"]
        ctx.steps_per_epoch = epoch_steps(min(loop["epoch"], epochs - 1)) if epochs > 0 else 0
        for cb in hooks["on_train_begin"]:
            cb.on_train_begin(ctx)
        if loop["step"] == 0 and loop["last_eval_step"] < 0:
            do_eval()

        while loop["epoch"] < epochs:
            epoch = loop["epoch"]
            b = bs_of(epoch)
            n_steps = epoch_steps(epoch)
            ctx.epoch, ctx.steps_per_epoch = epoch, n_steps
            stopped = False
            while loop["step_in_epoch"] < n_steps:
                if max_steps is not None and loop["step"] >= max_steps:
                    stopped = True
                    break
                idx = stream.next(b)
                xb, yb = (x_train, y_train) if idx is None else (x_train[idx], y_train[idx])
                ctx.batch = (xb, yb)
                for cb in cb_step_begin:
                    cb.on_step_begin(ctx)
                if needs_closure:
                    _closure_step(ctx, optimizer, model, loss_fn, stream, x_train, y_train, b,
                                  loop, cb_after_backward)
                else:
                    optimizer.zero_grad(set_to_none=True)
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
                    loss.backward()
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
                    read_losses()
                for cb in cb_step_end:
                    cb.on_step_end(ctx)
                if eval_schedule is not None and eval_schedule(loop["step"]):
                    do_eval()
                if pbar is not None:
                    pbar.update(1)
                if (checkpoint_every is not None and loop["step"] % checkpoint_every == 0
                        and loop["step_in_epoch"] < n_steps):
                    # (a checkpoint due on an epoch's last step waits for the epoch end work)
                    if pending:
                        read_losses()
                    save()
            if pending:
                read_losses()
            if stopped:
                break
            # epoch end
            ctx.step = loop["step"]
            done = epoch + 1
            ctx.log_dict(_epoch_metrics(loop, optimizer, done, n))
            if eval_due_at_epoch_end(done):
                do_eval()
            for cb in hooks["on_epoch_end"]:
                cb.on_epoch_end(ctx)
            loop.update(epoch=done, step_in_epoch=0, loss_sum=0.0, loss_count=0)
            if pbar is not None:
                pbar.set_postfix(_postfix(ctx.history), refresh=False)
            if writer is not None:
                writer.flush()
            if checkpoint_every is None or loop["step"] % checkpoint_every == 0:
                save()
    except _Diverged as d:
        status = "diverged"
        message = (f"non-finite mini-batch loss ({d.value}) at step {d.step + 1} "
                   f"(epoch {loop['epoch']}); ")
        if loop["step"] == d.step:
            message += "stopped before taking that step"
        else:  # deferred loss read-back: the weights went on for a few steps
            message += (f"noticed after step {loop['step']} (losses read back every "
                        f"{sync_every} steps)")
        ctx.step = loop["step"]
    except BaseException as e:
        if pbar is not None:
            pbar.close()
        if writer is not None:
            try:
                writer.flush()
                store.set_status(run_id, "interrupted" if isinstance(e, KeyboardInterrupt)
                                 else "failed", f"{type(e).__name__}: {e}")
            except Exception:
                pass
        raise

    if pbar is not None:
        pbar.close()
    if status == "finished" and loop["last_eval_step"] != loop["step"]:
        do_eval()
    for cb in hooks["on_train_end"]:
        cb.on_train_end(ctx)
    if status == "finished" or ckpt_file is None or not ckpt_file.exists():
        save()  # a diverged run keeps its last good periodic checkpoint (if any)
    final = _final(ctx.history, loop, epochs_done=loop["epoch"], n=n)
    wall = time.perf_counter() - t_start
    if writer is not None:
        writer.flush()
        store.set_summary(run_id, {**final, "status": status, "wall_time": wall})
        store.set_status(run_id, status, message)
    return RunResult(run_id=run_id, status=status, steps=loop["step"],
                     epochs_completed=loop["epoch"], history=ctx.history, final=final,
                     checkpoint=ckpt_file if ckpt_file is not None and ckpt_file.exists()
                     else None, wall_time=wall, grad_evals=loop["grad_evals"],
                     message=message)


def _closure_step(ctx: TrainContext, optimizer, model, loss_fn, stream: BatchStream,
                  x_train: Tensor, y_train: Tensor, b: int, loop: dict,
                  after_backward: list[Callback]) -> None:
    calls = 0

    def closure() -> Tensor:
        nonlocal calls
        if calls == 0:
            xb, yb = ctx.batch
        else:
            idx = stream.next(b)
            xb, yb = (x_train, y_train) if idx is None else (x_train[idx], y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = loss_fn(model(xb), yb)
            v = loss.item()
            if not math.isfinite(v):
                raise _Diverged(loop["step"], v)
            loss.backward()
        loop["grad_evals"] += 1
        loop["samples"] += len(yb)
        if calls == 0:
            ctx.loss = v
            loop["loss_sum"] += v
            loop["loss_count"] += 1
            for cb in after_backward:
                cb.on_after_backward(ctx)
        calls += 1
        return loss

    optimizer.step(closure)


def _epoch_metrics(loop: dict, optimizer, epochs_done: int, n: int) -> dict[str, float]:
    out = {}
    if loop["loss_count"]:
        out["batch_loss"] = loop["loss_sum"] / loop["loss_count"]
    if "lr" in optimizer.param_groups[0]:
        out["lr"] = float(optimizer.param_groups[0]["lr"])
    out["epoch"] = float(epochs_done)
    out["grad_evals"] = float(loop["grad_evals"])
    out["effective_epochs"] = loop["samples"] / n
    return out


def _final(history: dict, loop: dict, *, epochs_done: int, n: int) -> dict[str, float]:
    final: dict[str, float] = {}
    for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
        finite = [v for _, v in history.get(name, []) if math.isfinite(v)]
        if finite:
            final[name] = finite[-1]
    final.update(steps=loop["step"], epochs=epochs_done, grad_evals=loop["grad_evals"],
                 effective_epochs=loop["samples"] / n)
    return final


def _postfix(history: dict) -> dict[str, str]:
    out = {}
    for name in ("batch_loss", "test_acc"):
        if history.get(name):
            out[name] = f"{history[name][-1][1]:.4g}"
    return out


def _eval_sets(data: Any, eval_subset: int | None, seed: int) -> dict[str, tuple[Tensor, Tensor]]:
    sets = {"train": (data.x_train, data.y_train)}
    if getattr(data, "x_test", None) is not None and len(data.x_test) > 0:
        sets["test"] = (data.x_test, data.y_test)
    if eval_subset is None:
        return sets
    # A fixed subset, drawn from its own generator so it does not shift the batch stream.
    g = torch.Generator().manual_seed(int(seed) + 0x5EED)
    out = {}
    for split, (x, y) in sets.items():
        if len(x) > eval_subset:
            idx = torch.randperm(len(x), generator=g)[:eval_subset].sort().values.to(x.device)
            x, y = x[idx], y[idx]
        out[split] = (x, y)
    return out


def _check_args(epochs, batch_size, eval_every, eval_subset, checkpoint_every, max_steps) -> None:
    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(epochs) or epochs < 0:
        raise UserError(f"epochs must be an int >= 0, got {epochs!r}")
    if not callable(batch_size) and (not is_int(batch_size) or batch_size < 1):
        raise UserError(f"batch_size must be an int >= 1 or a callable epoch -> int, "
                        f"got {batch_size!r}")
    if eval_every is not None and not isinstance(eval_every, Schedule) and (
            not is_int(eval_every) or eval_every < 0):
        raise UserError(f"eval_every must be an int >= 0 (epochs) or a Schedule, got "
                        f"{eval_every!r}")
    if eval_subset is not None and (not is_int(eval_subset) or eval_subset < 1):
        raise UserError(f"eval_subset must be an int >= 1, got {eval_subset!r}")
    if checkpoint_every is not None and (not is_int(checkpoint_every) or checkpoint_every < 1):
        raise UserError(f"checkpoint_every must be an int >= 1 (steps), got "
                        f"{checkpoint_every!r}")
    if max_steps is not None and (not is_int(max_steps) or max_steps < 0):
        raise UserError(f"max_steps must be an int >= 0, got {max_steps!r}")


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
                  "batch_size": batch_size if isinstance(batch_size, int) else repr(batch_size)},
    }
