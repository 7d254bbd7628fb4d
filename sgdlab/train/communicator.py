"""The communicator between replica processes: averages tensors with ``torch.distributed``.

Used by the replica trainer (:mod:`sgdlab.train.replicas`, ``mode="distributed"``) and the
Parle optimizer's communicator protocol; the launcher (:mod:`sgdlab.train.distributed`)
creates the process group. Every collective failure surfaces as
:class:`ReplicaCommunicationError` naming the rank and the collective.

Work that one rank does alone (rank 0 evaluating or measuring the master, recording the run,
writing ``master.pt`` and the outputs) or whose failure on one rank the others would not see
(each rank's checkpoint file, its resume) ends in :func:`status_all_reduce`: every rank says
how its part went in one small all-reduce before the next collective, so a failure stops all
ranks at once instead of leaving the others waiting in that collective until its timeout.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import UserError

__all__ = ["ReplicaCommunicationError", "ReplicaFailed", "ReplicaRefused",
           "TorchDistributedCommunicator", "status_all_reduce", "told_all"]


class ReplicaCommunicationError(RuntimeError):
    """A collective between replica processes failed (a peer died, hung or timed out)."""


class ReplicaFailed(ReplicaCommunicationError):
    """Another replica process' own work failed (:func:`status_all_reduce`): this one stops
    with it. ``rank`` is the failing process'."""

    def __init__(self, message: str, rank: int):
        super().__init__(message)
        self.rank = rank


class ReplicaRefused(ReplicaFailed, UserError):
    """As :class:`ReplicaFailed` where the failing process refused with a
    :class:`~sgdlab.errors.UserError` (a bad config, a folder that is taken): the others
    refuse too, naming it."""


# the codes of status_all_reduce: fine, diverged (non-finite numbers), failed, refused
OK, DIVERGED, FAILED, REFUSED = 0, 1, 2, 3
# how much of the failing process' account (where, and its error) the others are told (UTF-8
# bytes; each a float64 in the all-reduce: a few KiB per process)
STATUS_TEXT = 480


def status_all_reduce(comm: Any, where: str, error: BaseException | None = None, *,
                      diverged: bool = False, device: Any = None) -> bool:
    """Tell every process how this one's part of ``where`` (rank-local work: "evaluating
    the master after round 3") went, in one all-reduce, before any of them goes on to its
    next collective. ``error``: what that work raised here (None: it succeeded);
    ``diverged``: it met non-finite numbers (a ``FloatingPointError``).

    When any process failed, every process raises: the failing one its own ``error``, the
    others :class:`ReplicaFailed` (:class:`ReplicaRefused` for a ``UserError``) naming the
    lowest failing rank, its ``where`` and the start of its error. Otherwise returns whether any
    process diverged. ``comm`` None (in-process): ``error`` is raised, nothing is sent.
    Every process of the group must call it at the same point (a collective)."""
    if error is not None and (comm is None or not isinstance(error, Exception)):
        raise error         # an interrupt stops this process alone, as ever
    if comm is None:
        return diverged
    code = (REFUSED if isinstance(error, UserError) else FAILED) if error is not None else (
        DIVERGED if diverged else OK)
    world, rank = comm.world_size, comm.rank
    # one row per rank, each rank filling its own: the sum is every rank's row, exactly
    rows = torch.zeros(world, 1 + STATUS_TEXT, dtype=torch.float64, device=device)
    rows[rank, 0] = code
    if error is not None:
        said = _account(where, error)
        rows[rank, 1:1 + len(said)] = torch.tensor(list(said), dtype=torch.float64)
    try:
        (mean,) = comm.average([rows])
    except ReplicaCommunicationError:
        if error is not None:   # this process' own error says more than the lost peer
            raise error from None
        raise
    got = (mean * world).round().cpu()
    codes = [int(c) for c in got[:, 0]]
    failed = [r for r, c in enumerate(codes) if c >= FAILED]
    if not failed:
        return DIVERGED in codes
    if error is not None:
        raise error
    r = failed[0]
    said = bytes(int(b) for b in got[r, 1:] if b > 0).decode(errors="replace")
    kind = ReplicaRefused if codes[r] == REFUSED else ReplicaFailed
    raise kind(f"replica {rank}/{world}: rank {r} failed {said}; stopped with it", r)


class told_all:
    """``with told_all(comm, where, device=...): work`` — this process' own part of
    ``where`` (rank-local work, or rank 0's alone under an ``if``), then
    :func:`status_all_reduce` of how it went: an ``Exception`` it raised is the ``error``
    (every process raises), none tells success. An interrupt (a ``BaseException`` only)
    stops this process alone, as ever, with no all-reduce. ``settle(where, error)``
    replaces the all-reduce (the replica trainer's, which tells an earlier failure first).
    ``error``: what the work raised here (None: nothing)."""

    def __init__(self, comm: Any, where: str, *, device: Any = None,
                 settle: Callable[[str, Exception | None], Any] | None = None):
        self.where, self.error = where, None
        self.settle = settle or (lambda where, error: status_all_reduce(comm, where, error,
                                                                        device=device))

    def __enter__(self) -> "told_all":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if error is not None and not isinstance(error, Exception):
            return False
        self.error = error
        self.settle(self.where, error)    # raises ``error`` itself when it is not None
        return False


def _account(where: str, error: BaseException) -> bytes:
    """"where (Type: message)" in at most ``STATUS_TEXT`` UTF-8 bytes, cut at whole
    characters: a long ``where`` (a deep folder) keeps a third of them, so that the error
    itself is told too."""
    said = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if len(f"{where} ({said})".encode()) > STATUS_TEXT:
        where = _cut(where, STATUS_TEXT // 3)
    return _cut(f"{where} ({said})", STATUS_TEXT).encode()


def _cut(text: str, n: int) -> str:
    """``text`` in at most ``n`` UTF-8 bytes, ending in "…" where cut (never mid-character)."""
    if len(text.encode()) <= n:
        return text
    return text.encode()[:n - len("…".encode())].decode(errors="ignore") + "…"


class TorchDistributedCommunicator:
    """Averages tensors across the processes of a ``torch.distributed`` group (all-reduce).

    ``reduce_round`` is the replica trainer's reducer, ``average`` the ``Parle`` optimizer's
    communicator protocol. ``rounds`` counts the collectives (for error messages).
    """

    def __init__(self, group: Any = None):
        if not dist.is_available() or not dist.is_initialized():
            raise UserError("distributed mode needs an initialised torch.distributed process "
                            "group: launch with torchrun (see sgdlab.train.distributed)")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.rounds = 0

    def _all_reduce_mean(self, flat: Tensor) -> Tensor:
        self.rounds += 1
        try:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        except Exception as e:  # DistBackendError, RuntimeError (gloo), timeouts
            raise self._failed(f"all-reduce #{self.rounds}", e) from e
        return flat.div_(self.world_size)

    def _failed(self, what: str, e: Exception) -> ReplicaCommunicationError:
        """The error of collective ``what`` that raised ``e``, naming this rank."""
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return ReplicaCommunicationError(
            f"replica {self.rank}/{self.world_size}: {what} failed — another replica process "
            f"probably died or hung ({type(e).__name__}: {first})")

    def average(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        flat = self._all_reduce_mean(flat)
        return _split(flat, tensors)

    def reduce_round(self, anchors: list[list[Tensor]],
                     losses: list[Tensor]) -> tuple[list[Tensor], float]:
        """(x̄, mean replica loss) from this process' single replica, in one all-reduce."""
        (mine,), (loss,) = anchors, losses
        flat = torch.cat([t.detach().reshape(-1) for t in mine]
                         # the loss on the anchors' device too: the final round passes
                         # CPU zeros, which torch.cat refuses beside CUDA anchors
                         + [loss.detach().reshape(1).to(mine[0])])
        flat = self._all_reduce_mean(flat)
        return _split(flat[:-1], mine), float(flat[-1])

    def broadcast_(self, tensors: Sequence[Tensor], src: int = 0) -> None:
        """Overwrite ``tensors`` with rank ``src``'s values (initial weights)."""
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        try:
            dist.broadcast(flat, src=src, group=self.group)
        except Exception as e:
            raise self._failed("broadcast of the initial weights", e) from e
        with torch.no_grad():
            for t, v in zip(tensors, _split(flat, tensors)):
                t.copy_(v)


def _split(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        out.append(flat[i:i + t.numel()].view_as(t))
        i += t.numel()
    return out
