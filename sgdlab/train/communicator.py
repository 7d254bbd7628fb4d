"""The communicator between replica processes: averages tensors with ``torch.distributed``.

Used by the replica trainer (:mod:`sgdlab.train.replicas`, ``mode="distributed"``) and the
Parle optimizer's communicator protocol; the launcher (:mod:`sgdlab.train.distributed`)
creates the process group. Every collective failure surfaces as
:class:`ReplicaCommunicationError` naming the rank and the collective.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import UserError

__all__ = ["ReplicaCommunicationError", "TorchDistributedCommunicator"]


class ReplicaCommunicationError(RuntimeError):
    """A collective between replica processes failed (a peer died, hung or timed out)."""


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
            raise ReplicaCommunicationError(
                f"replica {self.rank}/{self.world_size}: all-reduce #{self.rounds} failed — "
                f"another replica process probably died or hung ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from e
        return flat.div_(self.world_size)

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
            raise ReplicaCommunicationError(
                f"replica {self.rank}/{self.world_size}: broadcast of the initial weights "
                f"failed — another replica process probably died or hung "
                f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
            ) from e
        with torch.no_grad():
            for t, v in zip(tensors, _split(flat, tensors)):
                t.copy_(v)


def _split(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        out.append(flat[i:i + t.numel()].view_as(t))
        i += t.numel()
    return out
