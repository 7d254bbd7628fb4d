"""Which learning rate each step of a run took, read from its recorded ``lr`` samples.

The training loop (:mod:`sgdlab.train.loop`) logs the rate at step 0 and after each epoch's
schedule step, the rate the next epoch steps with: a sample holds from its step until the
next one's, and the last, at the run's final step count, is that of a step no one took (of a
cyclic schedule, a point of the next cycle; of a random one, one more draw). ``sgdlab parle``
and an experiment's ``replicas`` procedure log round r's rate at its end, step r·L
(:mod:`sgdlab.train.replicas`): a sample holds over the steps since the one before.
:func:`rate_stretches` reads both; the figures that draw a run's rate
(:mod:`sgdlab.report.figures.training`) and ``runs compare``'s last-step and mean rate
(:func:`lr_over_steps`) read it through it, so a curve and its table agree.

Plain Python, no matplotlib: ``runs compare`` reads it without drawing.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sgdlab.store.folders import is_replica_run

__all__ = ["last_step", "lr_over_steps", "rate_stretches", "used_rate_points"]

Points = Sequence[tuple[int, float]]


def last_step(history: Mapping[str, Points]) -> int | None:
    """The last step any series of ``history`` reached; None when it has no points."""
    return max((int(s) for pts in history.values() for s, _ in pts), default=None)


def rate_stretches(points: Points, run: Mapping[str, Any] | None = None, *,
                   last_step: int | None = None) -> list[tuple[int, int, float]]:
    """(first step, step after the last, lr) of each stretch of the steps a run took that used
    one recorded ``lr`` sample of ``points`` [(step, lr)], in step order; empty when no sample
    lies within the steps taken. The steps taken, 0..S - 1: S the summary's ``steps`` of
    ``run`` (its record as the run store gives it), else (a run still going, or stopped
    without one) ``last_step``, the last step any of its series reached, or the last sample's
    step. A replica run's (:func:`~sgdlab.store.folders.is_replica_run`) samples are one at
    each round's end, each holding over the steps since the one before (the first, since step
    0); else each holds from its step until the next sample's or S. Two samples at one step make a
    stretch of no steps (the later one holds)."""
    pts = sorted(((int(s), float(v)) for s, v in points), key=lambda p: p[0])
    run = run or {}
    steps = (run.get("summary") or {}).get("steps")
    end = int(steps) if isinstance(steps, (int, float)) and not isinstance(steps, bool) \
        else max(pts[-1][0] if pts else 0, last_step or 0)
    if is_replica_run(run.get("config")):     # each round's rate is logged at its end
        return [(max(prev, 0), s, v) for (s, v), prev
                in zip(pts, [0] + [s for s, _ in pts[:-1]]) if 0 < s <= end]
    return [(s, min(nxt, end), v) for (s, v), nxt
            in zip(pts, [s for s, _ in pts[1:]] + [end]) if s < end]


def used_rate_points(points: Points, run: Mapping[str, Any] | None = None, *,
                     last_step: int | None = None) -> list[tuple[int, float]]:
    """The rate the steps used as a step function to draw (``drawstyle="steps-post"``): the
    first step of each of :func:`rate_stretches`, with its rate, and the last rate held to the
    end of the last stretch. A run that took no step keeps its first sample."""
    stretches = rate_stretches(points, run, last_step=last_step)
    if not stretches:
        return [(int(s), float(v)) for s, v in points[:1]]
    return [(a, v) for a, _, v in stretches] + [(stretches[-1][1], stretches[-1][2])]


def lr_over_steps(points: Points, run: Mapping[str, Any] | None, *,
                  last_step: int | None = None) -> tuple[float, float] | None:
    """(the lr of the last step the run took, the mean lr over its steps) from its ``lr``
    samples ``points`` [(step, lr)], the stretches of :func:`rate_stretches` weighted by their
    steps; None when no sample lies within the steps taken. A schedule that changes the lr
    within an epoch (``random``, one draw per step) is seen through its samples, one per
    epoch: the mean then estimates its mean lr from those draws."""
    held = rate_stretches(points, run, last_step=last_step)
    if not held:
        return None
    # a plain run's last stretch, a Parle run's first, holds at least one step: total > 0
    total = sum(b - a for a, b, _ in held)
    return held[-1][2], sum(v * (b - a) for a, b, v in held) / total
