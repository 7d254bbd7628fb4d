"""Batch-size schedules: callables ``epoch -> batch size`` for ``train(batch_size=...)``.

Jastrzebski et al. (2018, "Width of Minima Reached by Stochastic Gradient Descent is
Influenced by Learning Rate to Batch Size Ratio", the ICANN version of "Three factors
influencing minima in SGD") compare a cyclic learning rate with a **cyclic batch size** at
fixed η (e.g. B cycling between 128 and 640, §3, Fig. 1): the ratio η/B sets the SGD
temperature. A cyclic learning rate moves η/S linearly; a batch size moving linearly
(``shape="triangular"``) moves η/B as 1/B, below the straight line between the same ends
(128 → 640 at η = 0.005: η/B is 0.56 times the linear cycle's value a quarter period in).
``shape="harmonic"`` moves 1/B linearly, so η/B follows the cyclic learning rate's triangle.

A schedule is stateless (a pure function of the 0-based epoch index, so resuming needs no
state); ``state_dict()`` returns its spec and :func:`build_batch_schedule` rebuilds it from
config data, e.g. ``{"kind": "cyclic", "low": 128, "high": 640, "period": 4}``.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import did_you_mean

__all__ = ["BatchSchedule", "ConstantBatchSize", "CyclicBatchSize", "build_batch_schedule",
           "batch_size_trace", "SHAPES"]

SHAPES = ("triangular", "harmonic", "square")


class BatchSchedule:
    """Base class: ``schedule(epoch) -> int`` (epoch 0-based)."""

    kind = "?"

    def __call__(self, epoch: int) -> int:
        if int(epoch) < 0:
            raise ValueError(f"Invalid epoch={epoch} (must be >= 0)")
        return int(self.value(int(epoch)))

    def value(self, epoch: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _spec(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self._spec()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if build_batch_schedule(state) != self:
            raise ValueError(f"state_dict {state} does not describe this schedule {self!r}")

    @property
    def description(self) -> str:
        """A short readable description (for tables and legends)."""
        return repr(self)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._spec().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BatchSchedule) and self.state_dict() == other.state_dict()


class ConstantBatchSize(BatchSchedule):
    kind = "constant"

    def __init__(self, size: int):
        if int(size) < 1 or int(size) != size:
            raise ValueError(f"Invalid batch size={size} (must be an int >= 1)")
        self.size = int(size)

    def value(self, epoch: int) -> int:
        return self.size

    def _spec(self) -> dict[str, Any]:
        return {"size": self.size}

    @property
    def description(self) -> str:
        return str(self.size)


class CyclicBatchSize(BatchSchedule):
    """B cycling between ``low`` and ``high`` with a period of ``period`` epochs.

    - ``shape="triangular"`` (default): low → high linearly over the first half period, back
      to low over the second, like Smith's triangular CLR; the value at epoch e is
      low + (high − low)·(1 − |2 (e mod P)/P − 1|), rounded to an int. ``start="low"`` begins
      at low; ``start="high"`` shifts by half a period (P // 2 epochs for an odd P).
    - ``shape="harmonic"``: the same cycle in 1/B,
      1/B = 1/low + (1/high − 1/low)·(1 − |2 (e mod P)/P − 1|), B rounded to an int: η/B is
      then triangular between η/high and η/low, the η/S of a triangular cyclic learning rate
      between the same ends (in phase with ``start="high"`` against a learning rate starting
      at its low end).
    - ``shape="square"``: ``low`` for the first half of each period, ``high`` for the second
      (reversed with ``start="high"``).

    Jastrzebski et al.'s cyclic batch size is ``CyclicBatchSize(128, 640, period=...)``; the
    paper does not give its shape, and only ``"harmonic"`` sweeps η/B as their cyclic learning
    rate (0.001 → 0.005 at S = 128) sweeps η/S.
    """

    kind = "cyclic"

    def __init__(self, low: int, high: int, period: int, *, shape: str = "triangular",
                 start: str = "low"):
        for name, v in (("low", low), ("high", high)):
            if int(v) != v or int(v) < 1:
                raise ValueError(f"Invalid {name}={v} (batch size, must be an int >= 1)")
        if high < low:
            raise ValueError(f"Invalid batch sizes: high={high} < low={low}")
        if int(period) != period or int(period) < 2:
            raise ValueError(f"Invalid period={period} (epochs, an int >= 2)")
        if shape not in SHAPES:
            raise ValueError(f"Invalid shape={shape!r}{did_you_mean(shape, SHAPES)} "
                             f"({' | '.join(SHAPES)})")
        if start not in ("low", "high"):
            raise ValueError(f"Invalid start={start!r} (low | high)")
        self.low, self.high, self.period = int(low), int(high), int(period)
        self.shape, self.start = shape, start

    def value(self, epoch: int) -> int:
        p = self.period
        if self.shape == "square":
            # the first half is low (high with start="high"): for an odd period a shift by
            # p // 2 epochs would start a "high" cycle low
            first = epoch % p < p / 2
            return self.low if first == (self.start == "low") else self.high
        e = (epoch + (p // 2 if self.start == "high" else 0)) % p
        frac = 1.0 - abs(2.0 * e / p - 1.0)            # 0 at e = 0, 1 at e = P/2
        if self.shape == "harmonic":
            inv = 1.0 / self.low + (1.0 / self.high - 1.0 / self.low) * frac
            return int(math.floor(1.0 / inv + 0.5))
        return int(math.floor(self.low + (self.high - self.low) * frac + 0.5))

    def _spec(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "period": self.period, "shape": self.shape,
                "start": self.start}

    @property
    def description(self) -> str:
        """For tables: ``cyclic 128–640, triangular, period 10 epochs, from 640``."""
        first = self.low if self.start == "low" else self.high
        return (f"cyclic {self.low}–{self.high}, {self.shape}, period {self.period} epochs, "
                f"from {first}")


_KINDS: dict[str, type[BatchSchedule]] = {c.kind: c for c in (ConstantBatchSize, CyclicBatchSize)}


def build_batch_schedule(spec: int | dict[str, Any] | BatchSchedule) -> BatchSchedule:
    """From config data: an int (constant) or ``{"kind": "cyclic", "low": .., "high": ..,
    "period": .., "shape": ..}``."""
    if isinstance(spec, BatchSchedule):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        return ConstantBatchSize(spec)
    if not isinstance(spec, dict):
        raise ValueError(f"Invalid batch-size schedule {spec!r}: an int or a dict with 'kind'")
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"Unknown batch-size schedule kind {kind!r}"
                         f"{did_you_mean(kind, _KINDS)}; known: "
                         f"{', '.join(sorted(_KINDS))}")
    import inspect

    params = inspect.signature(_KINDS[kind]).parameters
    missing = [k for k, q in params.items() if q.default is q.empty and k not in spec]
    unknown = [k for k in spec if k not in params]
    if missing or unknown:
        what = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(k + did_you_mean(k, params) for k in unknown)}"]
            if unknown else [])
        raise ValueError(f"Invalid batch-size schedule {kind!r}: {'; '.join(what)} (it takes "
                         f"{', '.join(params)})")
    try:
        return _KINDS[kind](**spec)
    except TypeError as e:
        raise ValueError(f"Invalid arguments for batch-size schedule {kind!r}: {e}") from None


def batch_size_trace(schedule: BatchSchedule | dict[str, Any], num_samples: int,
                     epochs: int) -> list[int]:
    """Batch size at every optimizer step of ``epochs`` epochs over ``num_samples`` examples
    (ceil(N/B) steps per epoch, the loop's convention), for plots."""
    sched = build_batch_schedule(schedule)
    out: list[int] = []
    for e in range(epochs):
        b = sched(e)
        out.extend([b] * max(1, -(-num_samples // b)))
    return out
