"""Replica trainer: Parle / Elastic-SGD / Entropy-SGD over n replicas coupled to a master.

``train_replicas(model, loss_fn, data, config, rounds=... | epochs=..., mode=...)`` trains n
replicas of ``model`` with the Parle update (thesis eq. 5.8; :mod:`sgdlab.optim.elastic`) and
returns the master x̄ = (1/n) Σ_a x^a as the final model. Parle's special cases are reached
through the config (``"paper"`` normalisation): ``gamma=inf``, ``L=1``, ``alpha=0``,
``inner_lr=1``, ``momentum=0``, ``outer_momentum=0`` is Elastic-SGD (5.4) with step ``lr``
(the default outer Nesterov 0.9 makes it Elastic-SGD with momentum); ``rho=inf`` with one
replica is Entropy-SGD; both together with one replica are SGD.

Conventions:

- **Round.** One round = L inner steps on every replica (L gradient evaluations each, each
  on a new mini-batch) + one communication (the master average) + the outer step. Metrics
  are logged at ``step = rounds · L`` (inner steps per replica).
- **Initialisation.** Every replica starts from the weights of ``model`` (same x^a₀).
- **Data (§5.5).** ``shard=False``: each replica samples the full training set with its own
  sampling generator; ``shard=True``: replica a only sees its part of the training set
  (:func:`replica_shards`: disjoint shards, or ``shard_fraction`` overlapping subsets; a
  seeded permutation, identical on every process). A dataset loaded with ``augment=`` has
  each replica's mini-batches augmented with its own sampling generator
  (:mod:`sgdlab.data.augment`).
- **Epochs of the schedules.** The ``"1/2B"`` scoping counts rounds in units of
  B = ⌈N/b⌉, the mini-batches of the whole training set (§5.3.2: "B is the number of
  mini-batches in the global dataset"; the thesis' epochs of Entropy-SGD and Parle, L
  effective epochs per replica with the full data). The lr milestones count epochs of the
  same B rounds (``epoch_unit="global"``) or, with ``epoch_unit="local"``, of ⌈n_a/b⌉ rounds,
  n_a the largest replica subset (§5.5 on split data: "Parle has very few mini-batches").
  Sampling is without replacement per pass (``sgdlab.train.loop.BatchStream``).
- **Seeds.** Replica a's batch stream and Langevin noise are seeded from (seed, a) only,
  so the in-process mode (replicas stepped in turn in one process) and the distributed mode
  (one replica per process, :mod:`sgdlab.train.distributed`) compute the same iterates; the
  master agrees up to the order of the floating-point sum in the all-reduce (bit-exact for
  n = 2).
- **Accounting.** ``grad_evals`` and ``effective_epochs`` are per replica
  (effective epochs = examples drawn / N_a, N_a the replica's data size: grad_evals · b / N_a
  when b divides N_a, a short last batch counting its examples). ``rounds``,
  ``epochs`` (effective, per replica) or ``grad_evals`` (per replica) set the length.
- **Evaluation** of the master (``train_loss``/``test_loss``, ``*_acc`` for classification)
  every ``eval_every`` rounds and at the end, with :func:`sgdlab.train.loop.evaluate`
  (eval mode, no grad). Each evaluation, intermediate and final alike, gives the master the
  floating buffers (e.g. batch-norm running statistics) of that round: the mean of the
  replicas' (``master_buffers="average"``, the default; one all-reduce of the buffers, only
  for a model that has some), and with ``master_buffers="recompute"`` then the batch-norm
  statistics recomputed at x̄ by a train-mode pass over the whole training set, dropout off
  (:func:`sgdlab.train.loop.recompute_eval_statistics`; the authors' ``dry_feed``). Neither
  draws random numbers, so the training trajectory does not depend on the choice.
- **Instruments** (``callbacks``, a replica config's ``measure``): measurements of a model at
  a point (:class:`~sgdlab.train.callbacks.MeasurementCallback`: ``hessian``, ``sharpness``,
  ...) of the master as it is evaluated — x̄ with its floating buffers as ``master_buffers``
  says — at the round ends their schedule names: ``every``, ``start`` and ``at`` count
  rounds (round 0: the initial weights, when the schedule includes it; the last round: the
  final master). Their values are logged at step r · L into the run's series. Distributed,
  rank 0 measures and then tells every rank in one all-reduce whether it failed, so all stop
  in that round (**Failures**). An instrument's ``FloatingPointError`` ends the run as
  diverged, with the master it measured. What an instrument's measurement would refuse of the
  loss and data (class weights, ignored targets in its evaluation set) is refused before
  round 0 (its ``check_run``), as :func:`sgdlab.train.loop.train` refuses it before step 0.
- **Divergence.** A non-finite mean replica loss ends the run with status ``"diverged"``
  (all processes see the same all-reduced value, so they stop together). A replica whose
  loss was not finite at any inner step reports NaN for the round, so the round takes no
  outer step and the run keeps the weights of the round before.
- **Checkpoints** (``checkpoint_dir``): every ``checkpoint_every`` rounds and at the end of a
  finished run, each process writes ``rank{r}.pt`` (its replicas' weights, optimizer states
  — Parle state incl. scoping counters and noise generator —, batch-stream positions and
  sampling generators, grad-eval counters, and the process' global RNG states), then, once
  every rank has said its file is written, rank 0 writes ``master.pt`` (round, master
  weights x̄, history, config, world size, run id), and every rank waits to hear it is.
  Every file is written atomically (:func:`sgdlab.train.checkpoint.save_checkpoint`) and
  loads with ``weights_only=True``.
  Each process keeps its previous rank file (``rank{r}.prev.pt``) until the new ``master.pt``
  is written, so a kill while saving leaves the previous set whole. ``resume=True`` continues
  bit for bit from the set ``master.pt`` names; it refuses a set whose world size / replica
  count differs, or where no rank file of ``master.pt``'s round is left, and a run with
  another Parle config, training-set size, torch loss class, dtype, ``eval_subset`` or (for a
  config's run, ``run_config``) data, model or seed spec, naming each difference with both
  values; the length, ``eval_every`` and ``checkpoint_every`` may change.
- **Failures** (distributed). Work one process does alone — rank 0 recording the run,
  evaluating and measuring the master, writing ``master.pt`` and the run's end — and work
  whose failure on one process the others would not see — a rank's checkpoint file, its
  resume — ends in :func:`sgdlab.train.communicator.status_all_reduce`: every process learns
  how it went before its next collective, and when any failed all raise, the failing one its
  own error, the others :class:`~sgdlab.train.communicator.ReplicaFailed` naming its rank,
  what it was doing and its error. Rank 0's rows and progress line of every round are told
  by one number in the next all-reduce instead (no collective of their own per round).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.augment import batch_augmentation
from ..errors import (ConfigError, UserError, check_keys, checked_float, checked_int,
                      finite_number, is_seed, not_a_seed, plain_int, refused_value)
from ..operators.blocking import reproducible_blocks
from ..operators.params import copy_module
from ..optim.elastic import Parle, master_average
from .callbacks import (MeasurementCallback, Schedule, TrainContext, callback_keys,
                        callback_name)
from .checkpoint import (changed_settings, load_checkpoint, rng_state, save_checkpoint,
                         set_rng_state)
from .communicator import status_all_reduce, told_all
from .loop import (BatchStream, abort_run, as_callbacks, check_callbacks, check_dataset,
                   check_loss, evaluation_metrics, evaluation_sets,
                   model_setting_changes, model_settings, open_writer, recompute_eval_statistics,
                   record_abort, record_completion, steps_per_epoch, training_device)

__all__ = ["ParleConfig", "ReplicaResult", "ReplicaWorker", "train_replicas", "replica_shards",
           "replica_seeds", "replica_rounds"]


SCOPING_1_2B = "1/2B"
# the B of the lr milestones' epochs: the whole training set's mini-batches or a replica's
EPOCH_UNITS = ("global", "local")
# the master's floating buffers at an evaluation: the replicas' mean, or batch-norm statistics
# recomputed at the master's weights
MASTER_BUFFERS = ("average", "recompute")
# the checkpoint file that makes a folder a run's: rank 0 writes it last in each round
MASTER_CHECKPOINT = "master.pt"


def _decay(value: float | str, batches: int) -> float:
    """A scoping rate: a number, or ``"1/2B"`` (thesis eq. 5.10) with B = ``batches``."""
    if isinstance(value, str):
        if value.replace(" ", "") != SCOPING_1_2B:
            raise ConfigError(f"a scoping rate must be a number or {SCOPING_1_2B!r} (eq. 5.10), "
                              f"got {value!r}")
        return 1.0 / (2 * batches)
    return float(value)


@dataclass
class ParleConfig:
    """Hyper-parameters of a replica run (plain data; see :mod:`sgdlab.optim.elastic`).

    The defaults are the thesis' (§5.3.2, Remark 5.3): L = 25, α = 0.25, γ₀ = 100 and ρ₀ = 1
    scoped by (1 − 1/(2B)) per round (eq. 5.10, ``"1/2B"``; B = mini-batches in the whole
    training set) and clipped below at γ = 1 and ρ = 0.1, Nesterov momentum 0.9 on the inner
    steps (``momentum``/``nesterov``) and on the replicas' outer steps
    (``outer_momentum``/``outer_nesterov``; a Nesterov flag with momentum 0 is ignored), the
    ``"paper"`` normalisation and lr = η = 0.1.

    lr is η, the outer step of §5.3.2, multiplied by ``lr_factor`` at each of the
    ``lr_milestones`` (in epochs of B rounds: "dropped by a factor of 10 [...] only once,
    after the second epoch, for Entropy-SGD and Parle" is ``lr_milestones: [2]``).
    ``epoch_unit`` is the B of those epochs when the replicas hold a subset (``shard``):
    ``"global"`` the mini-batches of the whole training set, ``"local"`` those of a
    replica's subset (the scoping's B stays the global one, as eq. 5.10 says).
    ``inner_momentum_on``: ``"gradient"`` (default, the authors' Entropy-SGD code) the inner
    momentum carries ∇f_B alone; ``"step"`` the whole drift of (5.8a), coupling pull included
    (Remark 5.3 read literally, and the authors' ``parle_mpi.py``, which adds the pull to the
    gradient before its momentum; :class:`sgdlab.optim.entropy_sgd.EntropySGD`).
    ``inner_momentum_buffer``: ``"reset"`` (default, the authors' Entropy-SGD code) zeroes the
    inner momentum at every round; ``"kept"`` carries it across rounds (``parle_mpi.py``'s
    ``muy`` is never reset; the thesis re-initialises y_k^a only, line 2067).
    ``weight_decay_on``: ``"inner"`` (default; the authors' ``parle_mpi.py`` adds its ℓ2 to
    the inner gradients only) or ``"both"``, λx^a in the replica's outer gradient as well.
    inner_lr is η⁽⁰⁾ (default: lr, "the initial learning rate η₀"); it stays fixed unless
    ``anneal_inner`` (the authors' code anneals both). ``shard``: each replica sees only its
    own part of the training set — disjoint 1/n shards, or with ``shard_fraction`` f equal
    overlapping subsets of f·N examples whose union is the whole set when f·n ≥ 1 (§5.5).
    ``master_buffers``: the floating buffers (batch-norm statistics) of the master at each
    evaluation (the thesis is silent): ``"average"`` (default) the mean of the replicas',
    ``"recompute"`` batch-norm statistics recomputed at x̄ over the training set (the
    authors' code; :func:`sgdlab.train.loop.recompute_eval_statistics`, batches of
    ``batch_size``). Only evaluations change; training does not.
    """

    replicas: int = 3
    L: int = 25
    lr: float = 0.1
    inner_lr: float | None = None
    lr_milestones: list[float] = field(default_factory=list)
    lr_factor: float = 0.1
    anneal_inner: bool = False
    gamma: float = 100.0
    gamma_decay: float | str = SCOPING_1_2B
    gamma_min: float | None = 1.0
    gamma_max: float | None = None
    rho: float = 1.0
    rho_decay: float | str = SCOPING_1_2B
    rho_min: float | None = 0.1
    rho_max: float | None = None
    alpha: float = 0.25
    noise: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    outer_momentum: float = 0.9
    outer_nesterov: bool = True
    inner_momentum_on: str = "gradient"
    inner_momentum_buffer: str = "reset"
    weight_decay: float = 0.0
    weight_decay_on: str = "inner"
    normalization: str = "paper"
    master: str = "current"
    shard: bool = False
    shard_fraction: float | None = None
    epoch_unit: str = "global"
    master_buffers: str = "average"
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        # numpy's and torch's ints are counts and seeds (np.int64 from a grid): they were
        # refused as "must be a number"; a bool still is
        for f in fields(self):
            if f.type == "int":
                setattr(self, f.name, plain_int(getattr(self, f.name)))
        for name in ("replicas", "batch_size"):
            checked_int(name, getattr(self, name), 1, error=ConfigError)
        for k in ("gamma", "rho"):  # YAML has no inf literal that everyone writes the same way
            v = getattr(self, k)
            if isinstance(v, str):
                try:
                    setattr(self, k, float(v))
                except ValueError:
                    raise ConfigError(f"{k} must be a number or 'inf', got {v!r}") from None
        # a number given as text ("fast", "1e-3" in old YAML); the seed has a rule of its own
        for f in fields(self):
            v = getattr(self, f.name)
            if (f.type in ("float", "float | None", "int") and f.name != "seed"
                    and not (v is None and "None" in f.type)
                    and (isinstance(v, bool) or not isinstance(v, (int, float)))):
                raise ConfigError(f"{f.name} must be a number, {refused_value(v)}")
        if not is_seed(self.seed):    # bounded as a run config's seed
            raise ConfigError(not_a_seed("seed", self.seed))
        # a NaN milestone was never passed, an infinite one never reached: no drop, said nowhere
        if not isinstance(self.lr_milestones, (list, tuple)) or any(
                not finite_number(m) or m < 0 for m in self.lr_milestones):
            raise ConfigError(f"lr_milestones must be a list of finite epochs >= 0, got "
                              f"{self.lr_milestones!r}")
        self.lr_milestones = sorted(self.lr_milestones)
        # an infinite factor made the rate inf after the first milestone
        self.lr_factor = checked_float("lr_factor", self.lr_factor, 0.0, strict=True,
                                       error=ConfigError)
        if self.epoch_unit not in EPOCH_UNITS:
            raise ConfigError(f"epoch_unit must be one of {', '.join(EPOCH_UNITS)}, got "
                              f"{self.epoch_unit!r}")
        if self.master_buffers not in MASTER_BUFFERS:
            raise ConfigError(f"master_buffers must be one of {', '.join(MASTER_BUFFERS)}, "
                              f"got {self.master_buffers!r}")
        if self.shard_fraction is not None:
            if not self.shard:
                raise ConfigError("shard_fraction needs shard: true")
            if not 0 < self.shard_fraction <= 1:
                raise ConfigError(f"shard_fraction must be in (0, 1], got {self.shard_fraction}")
        try:  # the optimizer validates every hyper-parameter
            self.optimizer([nn.Parameter(torch.zeros(1))], seed=0, batches=1)
        except (ValueError, TypeError) as e:   # TypeError: a value of the wrong type
            raise ConfigError(f"invalid Parle hyper-parameters: {e}") from None

    @classmethod
    def field_names(cls) -> list[str]:
        """The keys of a ``parle`` mapping: the fields, in their order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ParleConfig":
        """The config of a run config's ``parle`` mapping ``d`` (an unknown key named
        ``parle.KEY``, as a run config's are)."""
        check_keys("parle", d, cls.field_names())
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> dict[str, Any]:
        """The fields for a JSON file: an infinite ``gamma`` or ``rho`` (Elastic-SGD,
        Entropy-SGD) as ``"inf"``, as :meth:`from_dict` reads it back (JSON has no inf)."""
        return {k: str(v) if k in ("gamma", "rho") and math.isinf(v) else v
                for k, v in self.to_dict().items()}

    def lr_scale(self, round_: int, batches: int) -> float:
        """The factor on lr during round ``round_`` (1-based): ``lr_factor`` per milestone
        passed, epochs counted in B = ``batches`` rounds (round r is in epoch ⌊(r − 1)/B⌋)."""
        epoch = (round_ - 1) // max(1, batches)
        return self.lr_factor ** sum(epoch >= m for m in self.lr_milestones)

    def optimizer(self, params, *, seed: int, batches: int) -> Parle:
        """The replica's :class:`Parle` optimizer; ``batches`` is B, the mini-batches of the
        whole training set (for the ``"1/2B"`` scoping of eq. 5.10)."""
        return Parle(params, lr=self.lr, inner_lr=self.inner_lr, L=self.L, gamma=self.gamma,
                     gamma_decay=_decay(self.gamma_decay, batches), gamma_min=self.gamma_min,
                     gamma_max=self.gamma_max, rho=self.rho,
                     rho_decay=_decay(self.rho_decay, batches), rho_min=self.rho_min,
                     rho_max=self.rho_max, alpha=self.alpha, noise=self.noise,
                     momentum=self.outer_momentum,
                     nesterov=self.outer_nesterov and self.outer_momentum > 0,
                     inner_momentum=self.momentum,
                     inner_nesterov=self.nesterov and self.momentum > 0,
                     inner_momentum_on=self.inner_momentum_on,
                     inner_momentum_buffer=self.inner_momentum_buffer,
                     weight_decay=self.weight_decay, weight_decay_on=self.weight_decay_on,
                     normalization=self.normalization,
                     master=self.master, replicas=self.replicas, seed=seed)


@dataclass
class ReplicaResult:
    """What :func:`train_replicas` returns. ``master`` is the final model (x̄); ``wall_time``
    and ``comm_time`` are the seconds of the run's rounds over all its calls (a resume adds
    its own to those its checkpoint carries)."""

    master: nn.Module
    status: str                       # "finished" | "diverged"
    rounds: int
    grad_evals: int                   # per replica
    effective_epochs: float           # per replica
    history: dict[str, list[tuple[int, float]]]
    final: dict[str, float]
    wall_time: float
    comm_time: float                  # seconds spent computing the master (all-reduce)
    replicas: list[nn.Module] = field(default_factory=list)   # this process' replicas
    run_id: str | None = None
    message: str | None = None


def _seed(seed: int, replica: int, stream: int) -> int:
    # distinct, reproducible seeds per (replica, purpose) that do not depend on the mode
    return (int(seed) * 1_000_003 + replica * 7_919 + stream * 104_729) % (2**62)


def replica_rounds(cfg: ParleConfig, n_a: int | None, *, rounds: int | None = None,
                   epochs: float | None = None, grad_evals: int | None = None) -> int:
    """A run's length in rounds, from whichever of ``rounds``, ``epochs`` (per replica, over
    its ``n_a`` examples; ``n_a`` is read for them alone) or ``grad_evals`` (per replica)
    was given."""
    if grad_evals is not None:
        rounds = math.ceil(checked_int("grad_evals", grad_evals, 1, error=ConfigError) / cfg.L)
    elif rounds is None:
        B = min(cfg.batch_size, n_a)     # a replica's batch (ReplicaWorker.B)
        # a pass over the replica's examples is ⌈n_a/B⌉ steps (the last batch may be short)
        rounds = max(1, math.ceil(epochs * math.ceil(n_a / B) / cfg.L))
    return checked_int("rounds", rounds, 0, error=ConfigError)


def replica_seeds(seed: int, replica: int) -> dict[str, int]:
    """The seeds replica ``replica`` uses: ``batches`` (its BatchStream generator) and
    ``noise`` (its optimizer's Langevin noise). Depend only on (seed, replica)."""
    return {"batches": _seed(seed, replica, 1), "noise": _seed(seed, replica, 2)}


def replica_shards(n_examples: int, replicas: int, seed: int,
                   fraction: float | None = None) -> list[Tensor]:
    """Index sets of the replicas' data (§5.5), each sorted, from one seeded permutation π.

    ``fraction=None``: disjoint shards, π dealt round-robin. ``fraction=f``: "We split the
    dataset evenly amongst the replicas [...] and all Ξ^a are of the same size. In particular,
    we ensure that each sample lies in at least one of the subsets Ξ^a": replica a gets the
    m = round(f·N) consecutive entries of π (cyclically) from position round(a·N/n); the
    windows start N/n apart, so their union is everything when m ≥ N/n (f·n ≥ 1). With n = 1
    that is a random subset of f·N examples.
    """
    if replicas > n_examples:
        raise ConfigError(f"cannot split {n_examples} examples into {replicas} shards")
    perm = torch.randperm(n_examples, generator=torch.Generator().manual_seed(_seed(seed, 0, 9)))
    if fraction is None:
        return [perm[a::replicas].sort().values for a in range(replicas)]
    m = max(1, round(fraction * n_examples))
    out = []
    for a in range(replicas):
        start = round(a * n_examples / replicas)
        out.append(perm[(start + torch.arange(m)) % n_examples].sort().values)
    return out


class ReplicaWorker:
    """One replica: its model, its Parle optimizer and its mini-batch stream."""

    def __init__(self, index: int, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 x: Tensor, y: Tensor, config: ParleConfig, batches: int,
                 augment: Callable[[Tensor, torch.Generator], Tensor] | None = None):
        self.index, self.model, self.loss_fn, self.x, self.y = index, model, loss_fn, x, y
        self.config = config
        self.B = min(config.batch_size, len(x))
        gen = torch.Generator().manual_seed(_seed(config.seed, index, 1))
        self.stream = BatchStream(len(x), gen, device=x.device if x.is_cuda else None,
                                  augment=augment)
        self.optimizer = config.optimizer([p for p in model.parameters() if p.requires_grad],
                                          seed=_seed(config.seed, index, 2), batches=batches)
        self.inner_lr0 = self.optimizer.param_groups[0]["inner_lr"]
        self.grad_evals = 0
        self.samples = 0

    def closure(self) -> Tensor:
        """Draw the next mini-batch, zero grads, forward + backward; returns the loss."""
        xb, yb = self.stream.batch(self.x, self.y, self.B)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(xb), yb)
        loss.backward()
        self.grad_evals += 1
        self.samples += len(yb)
        self.finite &= torch.isfinite(loss.detach())    # on the device: no sync per step
        return loss.detach()

    def set_lr(self, scale: float) -> None:
        """η = lr·scale for the coming round (and η⁽⁰⁾ too with ``anneal_inner``)."""
        for g in self.optimizer.param_groups:
            g["lr"] = self.config.lr * scale
            if self.config.anneal_inner:
                g["inner_lr"] = self.inner_lr0 * scale

    def inner(self) -> Tensor:
        """L inner steps; returns the loss at x^a (first closure call) as a 0-d tensor, or
        NaN when any inner step's loss was not finite: its gradient reached y and z, so the
        round must diverge before the outer step (every process sees the all-reduced NaN)."""
        self.model.train()
        self.finite = torch.ones((), dtype=torch.bool, device=self.x.device)
        loss = self.optimizer.inner_loop(self.closure)
        return torch.where(self.finite, loss, torch.full_like(loss, math.nan))

    @property
    def effective_epochs(self) -> float:
        return self.samples / len(self.x)

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "stream": self.stream.state_dict(),
                "generator": self.stream.generator.get_state(),
                "grad_evals": self.grad_evals, "samples": self.samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["index"]) != self.index:
            raise UserError(f"checkpoint holds replica {state['index']}, expected {self.index}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["stream"])
        self.stream.generator.set_state(state["generator"])
        self.grad_evals, self.samples = int(state["grad_evals"]), int(state["samples"])


Reducer = Callable[[list[list[Tensor]], list[Tensor]], tuple[list[Tensor], float]]


def _inprocess_reduce(anchors: list[list[Tensor]], losses: list[Tensor]
                      ) -> tuple[list[Tensor], float]:
    loss = sum(float(v) for v in losses) / len(losses)
    return master_average(anchors), loss


def _float_buffers(model: nn.Module) -> list[Tensor]:
    return [b for b in model.buffers() if b.is_floating_point()]


def master_instruments(callbacks: Any, model: nn.Module, data: Any
                        ) -> list[MeasurementCallback]:
    """The callbacks as instruments of the master: measurements of a model at a point
    (:class:`~sgdlab.train.callbacks.MeasurementCallback`), each checked on ``model`` and
    ``data``; a ``UserError`` naming any other (it needs the steps of a training loop)."""
    cbs = as_callbacks(callbacks)
    for i, cb in enumerate(cbs):
        name = callback_name(cb)
        if not isinstance(cb, MeasurementCallback) or cb.reads_training_step:
            raise UserError(
                f"callbacks[{i}] ({name}) cannot measure a replica run: Parle measures the "
                "master x̄ at round ends, which takes a measurement of the model at a point "
                "(a sgdlab.train.MeasurementCallback, such as the hessian, sharpness, noise, "
                f"alignment or entropy_angle instruments); {name} needs a training loop's "
                "steps, mini-batches or optimizer, which the master has not")
    check_callbacks(cbs, model, data)
    return cbs


def train_replicas(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Any,
                   config: ParleConfig | dict[str, Any], *, rounds: int | None = None,
                   epochs: float | None = None, grad_evals: int | None = None,
                   mode: str = "inprocess",
                   eval_every: int | None = None, eval_subset: int | None = None,
                   store: Any = None, run_id: str | None = None, name: str | None = None,
                   device: str | torch.device | None = None,
                   communicator: Any = None, checkpoint_dir: str | os.PathLike | None = None,
                   checkpoint_every: int | None = None,
                   resume: bool = False, complete: bool = True,
                   run_config: dict[str, Any] | None = None,
                   progress: Callable[[int, int, float], None] | None = None,
                   callbacks: Any = ()) -> ReplicaResult:
    """Train ``config.replicas`` replicas of ``model`` with Parle; return the master.

    Args:
        model: initial weights (not modified); every replica starts from a copy.
        loss_fn: mean-reduced loss ``loss_fn(outputs, targets)``.
        data: a :class:`sgdlab.data.Dataset` (``x_train``, ``y_train``, optional test split).
        config: :class:`ParleConfig` or a dict of its fields.
        rounds: number of communication rounds (L inner steps each); or
        epochs: effective epochs per replica (rounds = ceil(epochs · N_a / (b · L))); or
        grad_evals: gradient evaluations per replica (rounds = ceil(grad_evals / L)).
        mode: ``"inprocess"`` (all replicas here, stepped in turn) or ``"distributed"``
            (this process is replica ``rank`` of an initialised ``torch.distributed`` group of
            ``config.replicas`` processes; see :mod:`sgdlab.train.distributed`).
        eval_every: evaluate the master every this many rounds (and always at the end);
            None = only at round 0 and at the end.
        eval_subset: evaluate on a fixed random subset of this many examples per split.
        store, run_id, name: a :class:`sgdlab.store.RunStore` to log into (rank 0 only).
        device: where the replicas live (default: the data's device).
        communicator: for ``mode="distributed"``, a
            :class:`sgdlab.train.communicator.TorchDistributedCommunicator` (default: one
            over the default process group).
        checkpoint_dir: write checkpoints here (``master.pt`` + ``rank{r}.pt``, see the module
            docstring): every ``checkpoint_every`` rounds (None: only at the end of a
            finished run).
        resume: continue from ``checkpoint_dir``'s last checkpoint set, bit for bit (same
            data, model, config and world size). ``rounds``/``epochs`` is the total.
        complete: record the run's end (last metric rows, summary, status) in one
            transaction; ``False`` leaves the run ``running`` for a caller that still owes it
            files (it ends it with :meth:`sgdlab.store.RunStore.complete_run`).
        run_config: what else a new run's record in ``store`` holds in its config besides
            the method, mode, rounds and ``config`` (the data, model, loss, seed and dtype
            specs that built ``model`` and ``data``: :func:`sgdlab.train.distributed.build_run`),
            so that ``sgdlab runs compare`` sees them and ``sgdlab measure`` rebuilds the model.
        progress: called after every round (rank 0 only) with the round, the run's rounds
            and the round's mean replica loss: ``sgdlab parle`` prints a line from it.
        callbacks: instruments measured on the master x̄ at round ends (module docstring,
            **Instruments**), e.g. ``build_instrument("hessian", every=10)``: every 10
            rounds. Distributed, every rank passes the same ones (rank 0 measures).
    """
    run = _ReplicaTraining(model, loss_fn, data, config, rounds=rounds, epochs=epochs,
                           grad_evals=grad_evals, mode=mode, eval_every=eval_every,
                           eval_subset=eval_subset, device=device, communicator=communicator,
                           checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                           resume=resume, run_config=run_config, callbacks=callbacks)
    run.progress = progress
    # untimed probe blocks in the callbacks' measurements, as train() has them
    with reproducible_blocks():
        run.open_record(store, run_id, name, run_config)
        try:
            run.fit()
            run.final_master()
        except BaseException as e:
            # as train() names them: inputs of another dtype than the model's, a loss per
            # sample (found on the first two examples: only those go to the device)
            x, y = data.x_train[:2].to(run.dev), data.y_train[:2].to(run.dev)
            # not train()'s words: x holds two samples, and the replicas keep partial batches
            one = (f"a replica's pass over its examples ({len(data.x_train)} training "
                   "samples, or its shard of them) ends in a partial batch of one when their "
                   "number mod batch_size = 1: give the ParleConfig another batch_size "
                   "(train_replicas has no drop_last)")
            abort_run(run, e, run.master_model, loss_fn, x, y, batch_of_one=one)
        return run.complete(record_end=complete)


class _ReplicaTraining:
    """One call of :func:`train_replicas`, in the phases of :func:`sgdlab.train.loop.train`:
    set-up (``__init__``, ``_resume``, ``open_record``), the rounds (``fit``, ``_round``),
    evaluation of the master (``evaluate``), checkpoints (``checkpoint``) and completion
    (``complete``; ``diverged`` and ``abort`` for the other two ways a run ends).

    The completion guarantees live in ``checkpoint``, the end of ``fit`` and ``complete``:

    - every metric row a checkpoint set's history holds is in the store before the set is
      written, and ``master.pt`` records how many rows that is; a resume truncates the run's
      rows to that count, so no row is lost or doubled;
    - ``master.pt`` names a round only once every rank file of that round is on disk
      (a status all-reduce before and after it, which stops every rank when a file could
      not be written), so a resume finds a consistent set or refuses;
    - a finished run ends with a checkpoint set (it can be extended with more rounds),
      written at the end of ``fit``: its history is the last round's, without the final
      evaluation (the set says it is the last round's: a resume that extends the run
      evaluates and measures that round's master again, as a middle round), and a failed
      write marks the run failed; a diverged run keeps its last periodic set, from before
      the non-finite round;
    - the final master (x̄, and the mean of the replicas' floating buffers, its batch-norm
      statistics recomputed under ``master_buffers="recompute"``) is evaluated once, and its
      last rows, summary and status are committed together.
    """

    def __init__(self, model, loss_fn, data, config, *, rounds, epochs, grad_evals, mode,
                 eval_every, eval_subset, device, communicator, checkpoint_dir,
                 checkpoint_every, resume, run_config=None, callbacks=()):
        cfg = config if isinstance(config, ParleConfig) else ParleConfig.from_dict(dict(config))
        if mode not in ("inprocess", "distributed"):
            raise ConfigError(f"mode must be 'inprocess' or 'distributed', got {mode!r}")
        if sum(v is not None for v in (rounds, epochs, grad_evals)) != 1:
            raise ConfigError("give exactly one of rounds=, epochs= or grad_evals=")
        # read from a replica config they may be any YAML value, which would otherwise stop the
        # run with a comparison's TypeError
        checked_float("epochs", epochs, strict=True, optional=True, error=ConfigError)
        eval_every, eval_subset, checkpoint_every = (
            checked_int(name, v, 1, optional=True, error=ConfigError) for name, v in (
                ("eval_every", eval_every), ("eval_subset", eval_subset),
                ("checkpoint_every", checkpoint_every)))
        if (resume or checkpoint_every is not None) and checkpoint_dir is None:
            raise UserError("resume / checkpoint_every need checkpoint_dir")
        check_dataset(data)
        check_loss(loss_fn)
        self.cfg, self.mode, self.loss_fn = cfg, mode, loss_fn
        self.eval_every, self.checkpoint_every, self.resume = eval_every, checkpoint_every, resume
        self.dev = training_device(device) if device is not None else data.x_train.device
        self.examples = len(data.x_train)
        self.settings = _run_settings(model, loss_fn, eval_subset, run_config)
        self.classification = getattr(data, "task", "classification") == "classification"
        self._processes(mode, communicator)
        # (where, error) of this rank's own work that failed, not yet told (_settle)
        self.pending: tuple[str, Exception] | None = None
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.start = 0                  # rounds done before this call (a resume)
        self.stored_rows: int | None = None
        self.comm_time = 0.0
        self.wall_before = 0.0          # seconds of the calls before a resume (their rounds)
        # a rank that cannot (its device out of memory, an OUT it does not see) stops them all
        with self._told("setting up its replicas"):
            self._set_up(model, data, callbacks, rounds, epochs, grad_evals, eval_subset,
                         checkpoint_dir, resume)
        self.saved_run_id: str | None = None
        # a resumed set of a run's last round: its master, evaluated after the set was saved
        self.resumed_last: list[Tensor] | None = None
        if resume:
            self._resume()
        self.round = self.start         # the last round completed
        self.saved = self.start if resume else -1   # the round of the last checkpoint set
        self.last_master: Sequence[Tensor] | None = None
        self.run_id: str | None = None
        self.store = self.writer = None
        self.progress: Callable[[int, int, float], None] | None = None
        self.status, self.message = "finished", None
        self.t_start = math.nan          # the run's clock starts with the rounds (``fit``)
        self.measured = -1               # the round the instruments last measured
        self.evaluated = -1              # the step of the master's last metrics (rank 0)
        if self.comm is not None:
            self._same_instruments()

    # --- set-up -----------------------------------------------------------------------------
    def _set_up(self, model, data, callbacks, rounds, epochs, grad_evals, eval_subset,
                checkpoint_dir, resume) -> None:
        """The training set on the device, the replicas, instruments, length, evaluation
        sets, master model and the instruments' context: this process' own work, whose
        failure every rank learns."""
        # (a device too small for the training set fails here, on its rank alone)
        x_all, y_all = data.x_train.to(self.dev), data.y_train.to(self.dev)
        # the whole training set, for the master's batch-norm pass (also on split data)
        self.x_recompute = x_all if self.cfg.master_buffers == "recompute" else None
        self._build_workers(model, data, x_all, y_all)
        self.instruments = master_instruments(callbacks, model, data)
        self.rounds = replica_rounds(self.cfg, len(self.workers[0].x), rounds=rounds,
                                     epochs=epochs, grad_evals=grad_evals)
        self.eval_sets = evaluation_sets(data, eval_subset, _seed(self.cfg.seed, 0, 3),
                                         self.dev)
        # (copied before a resume loads the replicas' weights: the same model either way)
        self.master_model = copy_module(self.workers[0].model)
        self.ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if self.ckpt is not None:
            check_checkpoint_dir(self.ckpt, resume)
        # what the instruments see: the master model, on the data where the replicas are (a
        # copy of the data made only for a process that measures)
        on_dev = data if (data.x_train.device == self.dev or not hasattr(data, "to")
                          or not (self.instruments and self.is_main)) else data.to(self.dev)
        self.ctx = TrainContext(model=self.master_model, optimizer=None, loss_fn=self.loss_fn,
                                data=on_dev, batch_size=self.workers[0].B,
                                logger=self._store_row)
        if self.is_main:
            # what the first measurement would refuse of the loss and data (class weights,
            # ...), before round 0, as train() refuses it before step 0
            for cb in self.instruments:
                cb.check_run(self.ctx)

    def _processes(self, mode: str, communicator: Any) -> None:
        """Which replicas this process steps, and how it computes the master from them."""
        n = self.cfg.replicas
        if mode == "distributed":
            from .communicator import TorchDistributedCommunicator
            comm = communicator or TorchDistributedCommunicator()
            if comm.world_size != n:
                w = comm.world_size
                raise ConfigError(f"config.replicas = {n} but the process group has {w} "
                                  f"processes (one replica per process): launch {n} in all "
                                  f"(torchrun's --nproc-per-node times --nnodes), or set the "
                                  f"replicas to {w} (parle.replicas; python -m "
                                  f"sgdlab.train.distributed --replicas {w})")
            self.comm, self.mine, self.reduce = comm, [comm.rank], comm.reduce_round
            self.is_main, self.rank, self.world = comm.rank == 0, comm.rank, comm.world_size
        else:
            self.comm, self.mine, self.reduce = None, list(range(n)), _inprocess_reduce
            self.is_main, self.rank, self.world = True, 0, 1

    def _build_workers(self, model: nn.Module, data: Any, x_all: Tensor, y_all: Tensor) -> None:
        cfg, n = self.cfg, self.cfg.replicas
        shards = replica_shards(len(x_all), n, cfg.seed, cfg.shard_fraction) if cfg.shard else None
        # B of eq. (5.10): mini-batches in the whole training set
        batches = steps_per_epoch(len(x_all), cfg.batch_size)
        # B of the lr epochs: that, or a pass over the largest subset (every process knows all
        # the shards, so every replica drops its lr in the same round)
        self.lr_batches = batches
        if cfg.epoch_unit == "local" and shards is not None:
            self.lr_batches = steps_per_epoch(max(len(sh) for sh in shards), cfg.batch_size)
        augment = batch_augmentation(data)
        self.workers: list[ReplicaWorker] = []
        for a in self.mine:
            m = copy_module(model).to(self.dev)
            if shards is None:
                xa, ya = x_all, y_all
            else:
                idx = shards[a].to(self.dev)
                xa, ya = x_all[idx], y_all[idx]
            self.workers.append(ReplicaWorker(a, m, self.loss_fn, xa, ya, cfg, batches,
                                              augment=augment))

    def _resume(self) -> None:
        # every rank must have found and loaded a consistent set, or none starts
        with self._told("resuming from its checkpoint"):
            head, mine_state = _load_replica_checkpoint(
                self.ckpt, self.rank, self.world, self.cfg, self.mode, examples=self.examples,
                settings=self.settings, promote=True)
            if head is None:
                raise UserError(f"cannot resume from {str(self.ckpt)!r}: {mine_state}")
            for w in self.workers:
                w.load_state_dict(mine_state["workers"][w.index])
        set_rng_state(mine_state["rng"])
        self.start = int(head["round"])
        self.stored_rows = head.get("stored_rows")
        self.history = {k: [(int(s), float(v)) for s, v in pts]
                        for k, pts in head["history"].items()}
        self.comm_time = float(mine_state.get("comm_time", 0.0))
        # (a rank file from before it was recorded: this call's rounds alone)
        self.wall_before = float(mine_state.get("wall_time", 0.0))
        self.saved_run_id = head.get("run_id")
        if head.get("last") and head.get("master") is not None:
            self.resumed_last = [t.to(self.dev) for t in head["master"]]

    def open_record(self, store: Any, run_id: str | None, name: str | None,
                    run_config: dict[str, Any] | None = None) -> None:
        """The run's record (rank 0 only): created here, the caller's (``run_id``) or the
        resumed one's; on a resume the rows logged after the checkpoint are dropped (those
        rounds are redone). A resume of a run its checkpoints name no record of (one trained
        unrecorded) records it anew, its rounds up to the checkpoint first."""
        # rank 0 alone records the run: the others learn here whether it could
        with self._told("recording the run in its store"):
            run_id = self._open_record(store, run_id, name, run_config)
        self.run_id = run_id

    def _open_record(self, store: Any, run_id: str | None, name: str | None,
                     run_config: dict[str, Any] | None) -> str | None:
        if self.resume and self.is_main:
            run_id = run_id or self.saved_run_id
        if store is not None and self.is_main:
            config = {**(run_config or {}), "method": "parle", "mode": self.mode,
                      "rounds": self.rounds, "parle": self.cfg.to_dict()}
            new = run_id is None
            run_id, self.writer = open_writer(
                store, run_id, resumed=self.resume, stored_rows=self.stored_rows,
                step=self.start * self.cfg.L,
                new_run=lambda: store.create_run(config, name=name))
            if new and self.resume:   # else its record held only the rounds after the resume
                for step, key, value in sorted((s, k, v) for k, pts in self.history.items()
                                               for s, v in pts):
                    self.writer.log(key, value, step)
                self.writer.flush()
            if self.ckpt is not None:   # where the run's checkpoints are (sgdlab runs, measure)
                store.add_artifact(run_id, "checkpoints", self.ckpt.resolve())
            recorded = store.get_run(run_id)["config"] if self.resume else None
            if (isinstance(recorded, dict) and recorded.get("method") == "parle"
                    and recorded.get("rounds") != self.rounds):
                # a resume with more rounds extends the run: its record says how far it goes
                store.set_config(run_id, {**recorded, **config})
            self.store = store
        return run_id

    # --- the rounds -------------------------------------------------------------------------
    def fit(self) -> None:
        self.t_start = time.perf_counter()
        if not self.resume:
            self.evaluate(self.workers[0].optimizer.anchors(), 0, instruments=self._due(0))
            if self.status != "finished":
                return    # an instrument met non-finite numbers at the initial weights
        elif self.resumed_last is not None and self.start < self.rounds:
            # the saved run's last round, evaluated and measured after its set by
            # final_master (rows a resume drops), is not redone: do it as a middle round
            if not self._middle_round(self.start, self.resumed_last):
                return
        for r in range(self.start + 1, self.rounds + 1):
            master = self._round(r)
            if master is None:
                return    # diverged: no end-of-run checkpoint over the last good one
            self.round, self.last_master = r, master
            # the last round's master is evaluated and measured after its outer step, by
            # final_master, as the run's final model
            if r < self.rounds and not self._middle_round(r, master):
                return    # an instrument met non-finite numbers: diverged there
            if self.checkpoint_every is not None and r % self.checkpoint_every == 0:
                self.checkpoint(r, master)
        if self.ckpt is not None and self.saved != self.round:
            # the end of the run: it can be extended with more rounds
            self.checkpoint(self.round, self.last_master)

    def _middle_round(self, r: int, master: Sequence[Tensor]) -> bool:
        """The metrics and instruments due at the end of round ``r`` (not the run's last),
        at ``master``; False when an instrument met non-finite numbers (the run diverged)."""
        metrics = self.eval_every is not None and r % self.eval_every == 0
        due = self._due(r)
        if metrics or due:
            self.evaluate(master, r * self.cfg.L, metrics=metrics, instruments=due)
        return self.status == "finished"

    def _round(self, r: int) -> list[Tensor] | None:
        """Round ``r`` (1-based): L inner steps on every replica, the master, the outer steps
        and the round's metrics. Returns the master, or None when the mean replica loss is
        not finite (the run diverged; no outer step taken)."""
        cfg, workers = self.cfg, self.workers
        lr_scale = cfg.lr_scale(r, self.lr_batches)
        for w in workers:
            w.set_lr(lr_scale)
        gamma = workers[0].optimizer.current_gamma()
        rho = workers[0].optimizer.current_rho()
        try:
            losses = [w.inner() for w in workers]
        except Exception as e:
            if self.comm is None:
                raise
            # (its device out of memory, a batch only its shard holds): told by the round's
            # all-reduce itself, which the others already wait in
            if self.pending is None:
                self.pending = (f"training its replica in round {r}", e)
            losses = [torch.full((), math.nan) for _ in workers]
        anchors = [w.optimizer.anchors() for w in workers]
        master, mean_loss, each_loss = self._reduce(anchors, losses, each=True)
        if not math.isfinite(mean_loss):
            for w in workers:   # no outer step: x^a back from the inner loop's last y
                w.optimizer.restore_x()
            # (read after the all-reduce, which has already waited for the device)
            self.diverged(r, mean_loss, elsewhere=self.comm is not None and all(
                math.isfinite(float(v)) for v in losses))
            return None
        for w in workers:
            w.optimizer.outer_step(master)
        step = r * cfg.L
        try:   # rank 0 writes the rows to the store (every flush_every s) and the progress
            self.log("replica_loss", mean_loss, step)
            for a, loss in enumerate(each_loss):    # the spread about the mean
                self.log(f"replica_loss/{a}", loss, step)
            self.log("gamma", gamma, step)
            self.log("rho", rho, step)
            self.log("lr", cfg.lr * lr_scale, step)
            if self.progress is not None and self.is_main:
                self.progress(r, self.rounds, mean_loss)
        except Exception as e:
            if self.comm is None:
                raise
            # told at the next collective, which every one carries (_reduce, _settle), not
            # in a collective of its own every round
            self.pending = (f"recording round {r}", e)
        return master

    def _reduce(self, values: list[list[Tensor]], losses: list[Tensor], *, each: bool = False
                ) -> tuple[Any, ...]:
        """The mean over all replicas of ``values`` and of ``losses``, timed as communication;
        ``each``: also every replica's loss, in replica order. Distributed, one more number
        rides along: whether a rank's own work failed since its last collective
        (``pending``); then every rank learns which and how (:meth:`_settle`); with ``each``,
        a vector too, this rank's loss at its own index, whose mean times the world size is
        every replica's loss (to a rounding in the anchors' dtype) in the same all-reduce."""
        tc = time.perf_counter()
        if self.comm is None:
            out = self.reduce(values, losses)
            if each:
                out = (*out, [float(v) for v in losses])
            failed = False
        else:
            v = values[0][0]
            extra = [torch.full((1,), float(self.pending is not None), dtype=v.dtype,
                                device=v.device)]
            if each:
                own = torch.zeros(self.world, dtype=v.dtype, device=v.device)
                own[self.rank] = losses[0].detach().to(own)    # one replica per process
                extra.append(own)
            mean, loss = self.reduce([list(vs) + extra for vs in values], losses)
            n = len(mean) - len(extra)
            out, failed = (mean[:n], loss), float(mean[n]) > 0
            if each:
                out = (*out, [float(x) * self.world for x in mean[n + 1]])
        self.comm_time += time.perf_counter() - tc
        if failed:
            self._settle("", None)
        return out

    def _told(self, where: str) -> told_all:
        """``with self._told(where): work``: :meth:`_settle` of how this rank's ``where``
        went (:class:`~sgdlab.train.communicator.told_all`)."""
        return told_all(self.comm, where, settle=self._settle)

    def _settle(self, where: str, error: Exception | None, *, diverged: bool = False) -> bool:
        """:func:`~sgdlab.train.communicator.status_all_reduce` of rank-local work
        ``where`` that raised ``error`` here (or of the ``pending`` failure before it): every
        rank raises when any failed; else whether any diverged."""
        if self.pending is not None:
            (where, error), self.pending = self.pending, None
        return status_all_reduce(self.comm, where, error, diverged=diverged, device=self.dev)

    def log(self, name: str, value: float, step: int) -> None:
        self.history.setdefault(name, []).append((step, float(value)))
        if self.writer is not None:
            self.writer.log(name, float(value), step)

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self, master: Sequence[Tensor], step: int, *, metrics: bool = True,
                 instruments: Sequence[MeasurementCallback] = ()) -> None:
        """Evaluate the master with parameters ``master`` (rank 0 only) and the replicas'
        mean floating buffers now (which every process helps reduce), then with
        ``master_buffers="recompute"`` its batch-norm statistics recomputed at ``master``;
        its metrics (``metrics``) and the ``instruments`` due, all at ``step``."""
        buffers = self._mean_buffers()

        def evaluate() -> None:
            self._set_master(master, buffers)
            self._evaluate_master(step, metrics=metrics)
        self._measure(instruments, step, evaluate)

    def _set_master(self, params: Sequence[Tensor], buffers: Sequence[Tensor]) -> None:
        """The master model's parameters ``params`` and floating buffers ``buffers``."""
        _load_params(self.master_model, params)
        with torch.no_grad():
            for b, v in zip(_float_buffers(self.master_model), buffers):
                b.copy_(v)

    def _evaluate_master(self, step: int, metrics: bool = True) -> None:
        """Evaluate the master model as it is (rank 0 only), its batch-norm statistics
        recomputed first under ``master_buffers="recompute"``."""
        if self.x_recompute is not None:
            recompute_eval_statistics(self.master_model, self.x_recompute, self.cfg.batch_size)
        if not metrics:
            return
        self.evaluated = step
        for name, v in evaluation_metrics(self.master_model, self.loss_fn, self.eval_sets,
                                          classification=self.classification):
            self.log(name, v, step)

    def _mean_buffers(self) -> list[Tensor]:
        """The mean over all replicas of their floating buffers (none: no communication)."""
        mine = [_float_buffers(w.model) for w in self.workers]
        if not mine[0]:
            return []
        mean, _ = self._reduce(mine, [torch.zeros(()) for _ in self.workers])
        return mean

    # --- instruments ------------------------------------------------------------------------
    def _due(self, r: int) -> list[MeasurementCallback]:
        """The instruments that measure at the end of round ``r``: their schedule counts
        rounds (round 0, the initial master, as ``at_train_begin`` says)."""
        return [cb for cb in self.instruments
                if (cb.at_train_begin if r == 0 else cb.should_run(r))]

    def _store_row(self, name: str, value: float, step: int) -> None:
        if self.writer is not None:     # (the history row is the context's)
            self.writer.log(name, float(value), step)

    def _measure(self, due: Sequence[MeasurementCallback], step: int,
                 evaluate: Callable[[], None]) -> None:
        """Evaluate the master model (``evaluate()``, rank 0 only), then measure it as it is
        with the ``due`` instruments (rank 0 only) and log their values at ``step``, unless
        its evaluation failed. Distributed, every rank then learns how rank 0's evaluation
        and measurements went (:func:`~sgdlab.train.communicator.status_all_reduce`), so
        that an error or non-finite numbers stop every process at once, not only rank 0
        while the others wait at the next collective until its timeout. A
        ``FloatingPointError`` of an instrument ends the run as diverged (as in
        :func:`sgdlab.train.loop.train`); any other error fails it."""
        error = None
        if self.is_main:
            try:
                evaluate()
            except Exception as e:
                error = e
        r = step // self.cfg.L
        if due:
            self.measured = r
        where, diverged = f"evaluating the master after round {r}", None
        if self.is_main and due and error is None:
            self.ctx.step, self.ctx.history = step, self.history
            cb = None
            try:
                for cb in due:
                    cb.record(self.ctx)
            except FloatingPointError as e:
                diverged = e
            except Exception as e:       # (an interrupt stops this process alone, as ever)
                error = e
                where = f"measuring the master after round {r} with {callback_name(cb)}"
        if self._settle(where, error, diverged=diverged is not None):
            self.status = "diverged"
            self.message = (f"non-finite values in a measurement of the master after round "
                            f"{r}" + (f": {diverged}" if diverged is not None else
                                      " (on rank 0)"))

    def _same_instruments(self) -> None:
        """Distributed: a ``ConfigError`` on every rank unless each passed as many
        instruments of the same kinds on the same schedules (rank 0 measures, all ranks meet
        at its measurement rounds, so the rounds each rank finds due must agree)."""
        keys = callback_keys(self.instruments)
        said = [f"{k} ({_schedule_said(getattr(cb, 'schedule', None))}, at round 0: "
                f"{getattr(cb, 'at_train_begin', None)})"
                for k, cb in zip(keys, self.instruments)]
        # a digest in small whole numbers, whose sums and sums of squares float64 holds
        # exactly: the ranks' digests agree iff each number's variance across them is 0,
        # and a difference makes it at least 1/world² (one all-reduce, every rank told)
        digest = hashlib.sha256("\n".join(said).encode()).digest()[:8]
        t = torch.tensor(list(digest), dtype=torch.float64, device=self.dev)
        mean, mean_sq = self.comm.average([torch.cat([t, t * t])])[0].split(len(digest))
        if float((mean_sq - mean * mean).max()) > 0.5 / self.world ** 2:
            raise ConfigError("the replica processes were given different instruments or "
                              f"schedules (this one: {'; '.join(said) or 'none'}); pass the "
                              "same callbacks on every rank")

    # --- checkpoint -------------------------------------------------------------------------
    def wall_time(self) -> float:
        """Seconds of the run's rounds so far: this call's, plus the earlier calls' that its
        checkpoint carried (up to their last set: the rounds after it are redone here)."""
        return self.wall_before + time.perf_counter() - self.t_start

    def checkpoint(self, r: int, master: Sequence[Tensor] | None) -> None:
        """The checkpoint set of round ``r``: this process' ``rank{r}.pt``, then rank 0's
        ``master.pt``, each followed by a status all-reduce (every rank stops when any file
        could not be written); the store holds every row of the saved history (and
        ``master.pt`` their count) before the set exists."""
        assert self.ckpt is not None
        mine, prev = self.ckpt / f"rank{self.rank}.pt", self.ckpt / f"rank{self.rank}.prev.pt"
        # every rank file of round r is on disk before master.pt names round r
        with self._told(f"writing its checkpoint of round {r}"):
            if self.writer is not None:   # the store holds every row of the saved history
                self.writer.flush()
            if mine.exists():
                # the set master.pt names stays whole until the new master.pt is written: a
                # kill from here on leaves the previous round's rank file beside the previous
                # master
                os.replace(mine, prev)
            save_checkpoint(mine, {
                "round": r, "world_size": self.world, "rank": self.rank,
                "comm_time": self.comm_time, "wall_time": self.wall_time(),
                "workers": {w.index: w.state_dict() for w in self.workers}, "rng": rng_state()})
        # nobody overwrites its rank file before master.pt is written
        with self._told(f"writing master.pt of round {r}"):
            self._save_master(r, master)
        with contextlib.suppress(OSError):   # (a leftover only costs disk: a resume reads
            prev.unlink(missing_ok=True)     # the rank file of master.pt's round)
        self.saved = r

    def _save_master(self, r: int, master: Sequence[Tensor] | None) -> None:
        """Rank 0's ``master.pt`` of round ``r``."""
        assert self.ckpt is not None
        if self.is_main:
            save_checkpoint(self.ckpt / MASTER_CHECKPOINT, {
                "round": r, "world_size": self.world, "replicas": self.cfg.replicas,
                "mode": self.mode, "parle": self.cfg.to_dict(), "run_id": self.run_id,
                # the store that holds the run: its folder stands for it (sgdlab measure)
                "store": (str(Path(self.store.path).resolve())
                          if getattr(self.store, "path", None) is not None else None),
                "examples": self.examples, "settings": self.settings,
                "stored_rows": self.writer.stored if self.writer is not None else None,
                "master": None if master is None else [t.detach().cpu().clone() for t in master],
                # the run's last round: its evaluation and instruments come after this set
                "last": r == self.rounds,
                "history": {k: [[s, v] for s, v in pts] for k, pts in self.history.items()}})

    # --- completion -------------------------------------------------------------------------
    def diverged(self, r: int, mean_loss: float, *, elsewhere: bool = False) -> None:
        """A non-finite mean replica loss in round ``r`` (every process sees the same
        all-reduced value, so all stop together): the run keeps round ``r - 1``.
        ``elsewhere``: this process's own replicas' losses were finite, another's was not
        (said so, as the training loop says it of Parle over a communicator)."""
        self.status = "diverged"
        what = ("another replica's loss was non-finite" if elsewhere
                else f"non-finite replica loss ({mean_loss})")
        self.message = f"{what} in round {r}; stopped with the weights of round {r - 1}"

    def abort(self, e: BaseException) -> None:
        """An exception or interrupt ends the run: keep what was logged, record why."""
        record_abort(self.store, self.writer, self.run_id, e, where=f"in round {self.round + 1}")

    def final_master(self) -> None:
        """The final master — the average of the replicas' x^a and of their floating buffers,
        with ``master_buffers="recompute"`` its batch-norm statistics then recomputed — its
        evaluation and the instruments due at its round (not again for a diverged run's
        round they measured)."""
        cfg, workers = self.cfg, self.workers
        finals = [w.optimizer.anchors() + _float_buffers(w.model) for w in workers]
        master_all, _ = self._reduce(finals, [torch.zeros(()) for _ in workers])
        n_params = len(workers[0].optimizer.anchors())
        params = master_all[:n_params]
        by_instrument = self.status == "diverged" and self.measured == self.round
        if by_instrument and self.last_master is not None:
            # an instrument met non-finite numbers at this round's x̄: the run ends with it,
            # as train() ends with the weights a measurement diverged at
            params = self.last_master
        self._set_master(params, master_all[n_params:])   # every rank returns it
        step = self.round * cfg.L
        # the same master as evaluated at this step already (that x̄, or the initial
        # weights) is not logged twice there
        again = self.evaluated == step and (by_instrument or self.round == 0)
        due = (self._due(self.round) if self.measured != self.round
               and self.status == "finished" else [])
        self._measure(due, step, lambda: self._evaluate_master(step, metrics=not again))

    def complete(self, *, record_end: bool) -> ReplicaResult:
        """The accounting and the summary of the run :meth:`final_master` ended; with
        ``record_end`` the last rows, summary and status in one transaction."""
        cfg, workers = self.cfg, self.workers
        step = self.round * cfg.L
        wall = self.wall_time()
        w0 = workers[0]
        final = {k: v[-1][1] for k, v in self.history.items()
                 if k.startswith(("train_", "test_")) and v}
        # steps: the step axis of the run's metrics (rounds · L), as a trained run's steps
        final.update(rounds=self.round, steps=step, grad_evals=w0.grad_evals,
                     effective_epochs=w0.effective_epochs, comm_time=self.comm_time,
                     wall_time=wall)
        with self._told("recording the end of the run"):   # (rank 0's rows to its writer too)
            self.log("grad_evals", w0.grad_evals, step)
            self.log("effective_epochs", w0.effective_epochs, step)
            record_completion(self.store, self.writer, self.run_id, self.status,
                              summary={**final, "status": self.status}, message=self.message,
                              record_end=record_end)
        return ReplicaResult(master=self.master_model, status=self.status, rounds=self.round,
                             grad_evals=w0.grad_evals, effective_epochs=w0.effective_epochs,
                             history=self.history, final=final, wall_time=wall,
                             comm_time=self.comm_time, replicas=[w.model for w in workers],
                             run_id=self.run_id, message=self.message)


def _schedule_said(schedule: Any) -> str:
    """A schedule as every process spells it: a Schedule's description; of any other callable
    its type alone (its repr may hold an address, which differs between processes)."""
    return repr(schedule) if isinstance(schedule, Schedule) else type(schedule).__qualname__


def check_checkpoint_dir(ckpt: str | os.PathLike, resume: bool) -> None:
    """A ``UserError`` unless ``ckpt`` suits the run: a new run into a directory that holds
    another run's checkpoints (``master.pt``), or a resume from one that holds none."""
    master = Path(ckpt) / MASTER_CHECKPOINT
    if master.exists() and not resume:
        raise UserError(f"{str(ckpt)!r} already holds a run's checkpoints: continue it with "
                        "resume (--resume), or write this run elsewhere")
    if resume and not master.exists():
        raise UserError(f"nothing to resume: no checkpoint at {str(master)!r}")


def _load_replica_checkpoint(ckpt: Path, rank: int, world: int, cfg: ParleConfig,
                             mode: str, *, examples: int, settings: dict[str, Any] | None = None,
                             promote: bool = False) -> tuple[dict[str, Any] | None, Any]:
    """(master.pt's content, this rank's file) or (None, why not). A mismatched world size,
    replica count, Parle config, training set or other :func:`_run_settings` raises
    :class:`ConfigError` at once, naming each difference (every rank sees the same
    master.pt): the continuation would not be the run it saved. The length, ``eval_every``
    and ``checkpoint_every`` may differ (a finished run extended). ``promote`` (a resume):
    a rank file of master.pt's round found as ``rank{r}.prev.pt`` becomes ``rank{r}.pt``
    again, over the newer one of the set that was not completed, so that the next set, which
    keeps ``rank{r}.pt`` as its previous file, keeps this one."""
    try:
        head = load_checkpoint(ckpt / MASTER_CHECKPOINT)
    except UserError as e:
        return None, str(e)
    if int(head["world_size"]) != world or int(head["replicas"]) != cfg.replicas:
        raise ConfigError(
            f"cannot resume from {str(ckpt)!r}: it was written by {head['world_size']} "
            f"process(es) ({head['mode']}) with {head['replicas']} replicas; this run has "
            f"{world} process(es) ({mode}) with {cfg.replicas} replicas")
    changed = changed_settings(head.get("parle") or {}, cfg.to_dict())
    if "examples" in head and int(head["examples"]) != examples:   # the length may change
        changed.append(f"the training set ({head['examples']} -> {examples} examples)")
    if head.get("settings") is not None and settings is not None:   # (recorded since)
        changed += _setting_changes(head["settings"], settings)
    if changed:
        raise ConfigError(f"cannot resume from {str(ckpt)!r}: the config differs from the "
                          f"saved run's in {', '.join(changed)}; resume with the same config")
    # this rank's file of master.pt's round: rank{r}.pt, or, for a run killed while saving a
    # newer set, the previous one it kept (rank{r}.prev.pt)
    found = []
    for name in (f"rank{rank}.pt", f"rank{rank}.prev.pt"):
        if not (ckpt / name).exists():
            continue
        try:
            mine = load_checkpoint(ckpt / name)
        except UserError as e:
            found.append(str(e))
            continue
        if int(mine["round"]) == int(head["round"]):
            if promote and name.endswith(".prev.pt"):
                os.replace(ckpt / name, ckpt / f"rank{rank}.pt")
            return head, mine
        found.append(f"{name} is from round {mine['round']}")
    if not found:
        return None, f"rank{rank}.pt is missing from {str(ckpt)!r}"
    return None, (f"{'; '.join(found)} but master.pt from round {head['round']} (the run was "
                  "killed while saving)")


def _run_settings(model: nn.Module, loss_fn: Any, eval_subset: int | None,
                  run_config: dict[str, Any] | None) -> dict[str, Any]:
    """What a resume may not change besides the Parle config and the training set's size:
    the loss, dtype and ``eval_subset`` (:func:`sgdlab.train.loop.model_settings`) and, for a
    run built from a config (``run_config``), the specs of its data, model and initial
    weights (another dataset of the same size, another activation, another seed)."""
    built = None
    if run_config is not None:      # (what build_model_and_data reads; seed 0 when not given)
        built = {"data": run_config.get("data"), "model": run_config.get("model"),
                 "seed": int(run_config.get("seed", 0))}
    return {**model_settings(model, loss_fn, eval_subset), "built": built}


def _setting_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Each :func:`_run_settings` entry that differs (the specs only when both runs have
    them)."""
    changed = model_setting_changes(saved, now)
    if saved.get("built") is not None and now.get("built") is not None:
        built, data = now["built"], now["built"].get("data")
        if isinstance(data, dict) and "sha256" not in (saved["built"].get("data") or {}):
            # saved before runs recorded their data file's content: its path is compared
            built = {**built, "data": {k: v for k, v in data.items() if k != "sha256"}}
        changed += changed_settings(saved["built"], built)
    return changed


def load_master_checkpoint(ckpt: str | os.PathLike, model: nn.Module) -> dict[str, Any]:
    """Put the master of the last checkpoint set in ``ckpt`` (a run's ``checkpoints``
    folder) into ``model``: x̄ of the round ``master.pt`` names (the master that round
    evaluated) and, for a model with floating buffers (batch norm), the mean of the
    replicas' buffers in that round's rank files, as the end of a run averages them (also
    for a run with ``master_buffers="recompute"``: that pass needs the training data). Returns
    ``master.pt``'s content (``round``, ``run_id``, ...); a :class:`UserError` naming the
    file when the set cannot give the master."""
    ckpt = Path(ckpt)
    head = load_checkpoint(ckpt / MASTER_CHECKPOINT, require=("round",))
    if head.get("master") is None:
        raise UserError(f"{str(ckpt / MASTER_CHECKPOINT)!r} holds no master weights (saved "
                        "before the first round)")
    _load_params(model, head["master"])
    buffers = _float_buffers(model)
    if buffers:
        states = []
        for rank in range(int(head["world_size"])):
            _, mine = _load_replica_checkpoint(
                ckpt, rank, int(head["world_size"]), ParleConfig.from_dict(head["parle"]),
                str(head["mode"]), examples=int(head.get("examples", 0)))
            if isinstance(mine, str):      # why the round's rank file is not there
                raise UserError(f"cannot rebuild the master's buffers: {mine}")
            states += [w["model"] for w in mine["workers"].values()]
        names = [n for n, b in model.named_buffers() if b.is_floating_point()]
        with torch.no_grad():
            for n, b in zip(names, buffers):
                b.copy_(torch.stack([st[n].to(b.dtype) for st in states]).mean(0))
    return head


@torch.no_grad()
def _load_params(model: nn.Module, values: Sequence[Tensor]) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    if len(params) != len(values):
        raise UserError(f"master has {len(values)} tensors, model {len(params)} parameters")
    for p, v in zip(params, values):
        p.copy_(v)

