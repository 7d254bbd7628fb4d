"""How many columns to push through one batched product: chosen by timing the real work.

A batched product (``matmat`` / ``quadratic_forms`` of k columns) is not always cheaper per
column than k single products: on CPU a vmapped backward through convolutions or through a
large MLP costs 1.2-2x a single Hessian-vector product per column, while on a small MLP (or a
GPU) blocks of 8-16 are 2-4x cheaper per column. Which one wins depends on the model, the
batch, the device and the thread count, so :class:`BlockTuner` measures it on the estimator's
own products (no extra work): the first blocks have sizes 1, 1, 2, 4, ... (1 twice, the first
call may include one-off set-up), and the tuner settles on the size with the lowest time per
column as soon as a larger block stops being cheaper per column. Every block is useful work;
the samples an estimator draws do not depend on the block sizes (see
:mod:`sgdlab.measure.curvature`), only the time does.

The float round-off does depend on them: a column's product in a block of b >= 2 is not
bitwise its single product. Within :func:`reproducible_blocks` no block is timed: each
operator takes the fixed size of its :meth:`~sgdlab.operators.LinearOperator.
reproducible_block_size` rule, so an estimate's bits do not depend on how busy the machine
was. The experiment worker, the training loops (``train``, ``train_replicas``) and
``sgdlab measure`` turn it on; outside it (the library's functions called directly) the
blocks are timed.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from sgdlab.errors import checked_int_argument

# a larger block must be at least this much cheaper per column to be preferred (timing noise)
_MARGIN = 0.95

_REPRODUCIBLE: ContextVar[bool] = ContextVar("sgdlab_reproducible_blocks", default=False)


@contextlib.contextmanager
def reproducible_blocks(enabled: bool = True) -> Iterator[None]:
    """Within: operators take a fixed, ruled block size instead of timing their first blocks
    (:meth:`~sgdlab.operators.LinearOperator.block_tuner`), so estimates are bitwise the same
    from run to run on CPU; ``enabled=False`` restores the timed choice inside."""
    token = _REPRODUCIBLE.set(bool(enabled))
    try:
        yield
    finally:
        _REPRODUCIBLE.reset(token)


def blocks_reproducible() -> bool:
    """Whether :func:`reproducible_blocks` is in force here."""
    return _REPRODUCIBLE.get()


class BlockTuner:
    """Block sizes for a run of products on one operator; settles on the cheapest per column.

    ``cap`` bounds the block (memory: :meth:`LinearOperator.probe_block_size`); ``fixed``
    disables the measurement (every block has that size).
    """

    def __init__(self, cap: int, *, device: torch.device | str = "cpu", fixed: int | None = None):
        # np.int64 is a size; True and 2.5 are not
        fixed = checked_int_argument("block_size", fixed, 1, optional=True)
        self.cap = max(1, int(cap))
        self.device = torch.device(device)
        self.settled: int | None = fixed
        self.per_column: dict[int, float] = {}    # block size -> best seconds per column
        self._trials = [1, 1] + [b for b in (2, 4, 8, 16, 32, 64) if b <= self.cap]
        if self.cap not in self._trials:
            self._trials.append(self.cap)

    def _clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return time.perf_counter()
        return time.process_time()       # this process' CPU time: other tenants do not count

    def _next(self, remaining: int) -> int:
        if self.settled is None and not self._trials:
            self._settle()
        if self.settled is not None:
            return max(1, min(self.settled, remaining))
        return max(1, min(self._trials[0], remaining))

    def _settle(self) -> None:
        self.settled = min(self.per_column, key=self.per_column.get) if self.per_column else 1

    def record(self, size: int, seconds: float) -> None:
        """Account ``seconds`` for one block of ``size`` columns (advances the trials)."""
        if self.settled is not None or not self._trials or size != self._trials[0]:
            return
        self._trials.pop(0)
        cost = max(seconds, 0.0) / size
        best = min(self.per_column.values()) if self.per_column else None
        self.per_column[size] = min(cost, self.per_column.get(size, float("inf")))
        if best is not None and size > 1 and cost > _MARGIN * best:
            self._settle()              # a larger block stopped paying: keep the best so far

    def blocks(self, total: int) -> Iterator[tuple[int, int]]:
        """Yield ``(start, size)`` for consecutive blocks covering ``total`` columns; the
        caller's work between two yields is what is timed."""
        i = 0
        while i < total:
            b = self._next(total - i)
            if self.settled is not None:      # nothing left to measure: no clock, no sync
                yield i, b
            else:
                t0 = self._clock()
                yield i, b
                self.record(b, self._clock() - t0)
            i += b
