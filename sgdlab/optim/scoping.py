"""Scoping: schedules for the scales γ (local entropy) and ρ (elastic coupling).

Chaudhari's thesis anneals the scale of the smoothing during training: a large γ early (a
very smooth landscape, wide basins) and a small one late (the smoothed loss approaches the
original). Its schedules are exponential:

    γ(t) = γ₀ (1 − γ₁)^t                                  (Entropy-SGD, §3.2.3, t outer steps)
    γ_k = γ₀ (1 − 1/(2B))^⌊k/L⌋,  ρ_k = ρ₀ (1 − 1/(2B))^⌊k/L⌋   (Parle, eq. 5.10)

with B the number of mini-batches in the whole dataset; "We clip γ at 1 and ρ at 0.1"
(§5.3.2), i.e. from below. Here t counts *outer* steps (one per L inner steps) and the values
are clipped to [lower, upper]. The experiments of §3.3 state a factor per update instead
("decreases by a factor of 1 + 10^-3 after each parameter update"): γ₁ = 1 − 1/1.001.

A scope is a small immutable object: ``scope(t) -> float``. It holds no mutable state, so
its ``state_dict()`` is its spec (plain data) and ``build_scope(spec)`` rebuilds it. For the
training loop, :class:`ScopingSchedule` writes a scope's value into an optimizer's
``param_groups[*][key]`` once per optimizer step (registered as schedule ``"scoping"``).
``float("inf")`` is a valid value (no coupling).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .registry import register_schedule

__all__ = [
    "Scope",
    "ConstantScope",
    "ExponentialScope",
    "LinearScope",
    "StepScope",
    "ScopingSchedule",
    "build_scope",
    "scope_of",
]


def _check_bounds(lower: float | None, upper: float | None,
                  names: tuple[str, str] | None = None) -> None:
    """``names``: the options that gave the bounds (``gamma_min``, ``gamma_max``), named by
    the messages; a scope's own are ``lower`` and ``upper``."""
    if lower is not None and upper is not None and lower > upper:
        low, up = names or ("lower", "upper")
        raise ValueError(f"Invalid clipping range: {low}={lower} > {up}={upper}")
    low, up = names or ("lower clip", "upper clip")
    # a NaN bound clipped nothing (max and min keep the scale against NaN), said nowhere
    if lower is not None and not lower >= 0:
        raise ValueError(f"Invalid {low}: {lower} (must be >= 0)")
    if upper is not None and math.isnan(upper):
        raise ValueError(f"Invalid {up}: {upper} (must be a number, inf allowed)")


class Scope:
    """Base class: ``value(t)`` unclipped, ``__call__(t)`` clipped to [lower, upper]."""

    kind: str = "?"

    def __init__(self, *, lower: float | None = None, upper: float | None = None):
        _check_bounds(lower, upper)
        self.lower, self.upper = lower, upper

    def value(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, t: int) -> float:
        if t < 0:
            raise ValueError(f"Invalid scoping step: {t} (must be >= 0)")
        v = self.value(int(t))
        if self.lower is not None:
            v = max(v, self.lower)
        if self.upper is not None:
            v = min(v, self.upper)
        return float(v)

    def _spec(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The spec (plain data): ``build_scope(scope.state_dict())`` rebuilds an equal scope."""
        return {"kind": self.kind, **self._spec(), "lower": self.lower, "upper": self.upper}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.state_dict().items() if k != "kind")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scope) and self.state_dict() == other.state_dict()


class ConstantScope(Scope):
    kind = "constant"

    def __init__(self, value: float, **clip: float | None):
        super().__init__(**clip)
        if not value > 0:
            raise ValueError(f"Invalid scope value: {value} (must be > 0, inf allowed)")
        self.initial = float(value)

    def value(self, t: int) -> float:
        return self.initial

    def _spec(self) -> dict[str, Any]:
        return {"value": self.initial}


class ExponentialScope(Scope):
    """γ(t) = initial · (1 − rate)^⌊t / period⌋ (thesis eq. 5.10).

    ``rate`` in [0, 1) shrinks the scale (the thesis' scoping); a negative rate grows it
    (the Entropy-SGD paper writes the coupling γ⁻¹ growing as (1 + γ₁)^t, which is
    ``rate = 1 − 1/(1 + γ₁)`` here, applied to γ).
    """

    kind = "exponential"

    def __init__(self, initial: float, rate: float, *, period: int = 1, **clip: float | None):
        super().__init__(**clip)
        if not initial > 0:
            raise ValueError(f"Invalid initial scale: {initial} (must be > 0, inf allowed)")
        if not rate < 1:
            raise ValueError(f"Invalid scoping rate: {rate} (must be < 1)")
        if period < 1:
            raise ValueError(f"Invalid scoping period: {period} (must be >= 1)")
        self.initial, self.rate, self.period = float(initial), float(rate), int(period)

    def value(self, t: int) -> float:
        if math.isinf(self.initial) or self.rate == 0:
            return self.initial
        return self.initial * (1.0 - self.rate) ** (t // self.period)

    def _spec(self) -> dict[str, Any]:
        return {"initial": self.initial, "rate": self.rate, "period": self.period}


class LinearScope(Scope):
    """Linear interpolation from ``initial`` to ``final`` over ``steps`` outer steps, then flat."""

    kind = "linear"

    def __init__(self, initial: float, final: float, steps: int, **clip: float | None):
        super().__init__(**clip)
        if not (initial > 0 and final > 0) or math.isinf(initial) or math.isinf(final):
            raise ValueError(f"Invalid linear scope: initial={initial}, final={final} "
                             "(both must be finite and > 0)")
        if steps < 1:
            raise ValueError(f"Invalid linear scope length: {steps} (must be >= 1)")
        self.initial, self.final, self.steps = float(initial), float(final), int(steps)

    def value(self, t: int) -> float:
        s = min(t, self.steps) / self.steps
        return self.initial + s * (self.final - self.initial)

    def _spec(self) -> dict[str, Any]:
        return {"initial": self.initial, "final": self.final, "steps": self.steps}


class StepScope(Scope):
    """Piecewise constant: ``initial · factor^k`` after the k-th milestone (outer steps)."""

    kind = "step"

    def __init__(self, initial: float, milestones: list[int], factor: float, **clip: float | None):
        super().__init__(**clip)
        if not initial > 0 or not factor > 0:
            raise ValueError(f"Invalid step scope: initial={initial}, factor={factor} "
                             "(must be > 0)")
        ms = [int(m) for m in milestones]
        if ms != sorted(ms) or any(m < 0 for m in ms):
            raise ValueError(f"Invalid milestones: {milestones} (must be increasing, >= 0)")
        self.initial, self.milestones, self.factor = float(initial), ms, float(factor)

    def value(self, t: int) -> float:
        return self.initial * self.factor ** sum(t >= m for m in self.milestones)

    def _spec(self) -> dict[str, Any]:
        return {"initial": self.initial, "milestones": list(self.milestones), "factor": self.factor}


def scope_of(key: str, options: dict[str, Any]) -> ExponentialScope:
    """The exponential scope of an optimizer's hyper-parameter ``key`` (``gamma``, ``rho``;
    thesis eq. 5.10) from its options ``key``, ``key_decay``, ``key_min`` and ``key_max`` (a
    param group holds them): a bad rate or clip is named by the option that gave it."""
    lower, upper, rate = options[f"{key}_min"], options[f"{key}_max"], options[f"{key}_decay"]
    _check_bounds(lower, upper, (f"{key}_min", f"{key}_max"))
    if not rate < 1:
        raise ValueError(f"Invalid {key}_decay: {rate} (a scoping rate, must be < 1)")
    if not options[key] > 0:     # a group's own (add_param_group takes it unchecked)
        raise ValueError(f"Invalid {key}: {options[key]} (must be > 0, inf allowed)")
    return ExponentialScope(options[key], rate, lower=lower, upper=upper)


_KINDS: dict[str, type[Scope]] = {
    c.kind: c for c in (ConstantScope, ExponentialScope, LinearScope, StepScope)
}


def build_scope(spec: float | int | dict[str, Any] | Scope) -> Scope:
    """A scope from config data: a number (constant) or ``{"kind": ..., **args}``.

    Example: ``build_scope({"kind": "exponential", "initial": 0.1, "rate": 1e-3,
    "lower": 1e-4})``.
    """
    if isinstance(spec, Scope):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return ConstantScope(float(spec))
    if not isinstance(spec, dict):
        raise ValueError(f"Invalid scope spec {spec!r}: expected a number or a dict with 'kind'")
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind is None:
        # "Unknown scope kind None" when the key was simply left out
        raise ValueError(f"scope {spec!r} has no kind: give kind= (one of "
                         f"{', '.join(sorted(_KINDS))}) or value= (a constant)")
    if kind not in _KINDS:
        raise ValueError(f"Unknown scope kind {kind!r}; known: {', '.join(sorted(_KINDS))}")
    try:
        return _KINDS[kind](**spec)
    except TypeError as e:
        raise ValueError(f"Invalid arguments for scope {kind!r}: {e}") from None


class ScopingSchedule:
    """Write ``scope(t)`` into ``param_groups[*][key]`` of an optimizer, once per ``step()``.

    ``t`` is the number of optimizer steps taken (for Entropy-SGD, outer steps). Follows the
    LR-scheduler protocol the training loop expects (``step``, ``state_dict``,
    ``load_state_dict``); the value for ``t = 0`` is written at construction.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, key: str,
                 scope: float | dict[str, Any] | Scope):
        for g in optimizer.param_groups:
            if key not in g:
                raise ValueError(f"optimizer {type(optimizer).__name__} has no hyper-parameter "
                                 f"{key!r} to scope")
            if g.get(f"{key}_decay"):
                # the optimizer's own decay would apply on top of this schedule's values
                raise ValueError(f"{key} is scoped twice: this schedule and the optimizer's "
                                 f"{key}_decay={g[f'{key}_decay']}; set {key}_decay to 0 to "
                                 "scope it here")
        self.optimizer, self.key, self.scope = optimizer, key, build_scope(scope)
        self.t = 0
        self._apply()

    def _apply(self) -> None:
        v = self.scope(self.t)
        for g in self.optimizer.param_groups:
            g[self.key] = v

    def step(self) -> None:
        self.t += 1
        self._apply()

    def get_value(self) -> float:
        return self.scope(self.t)

    def settings(self) -> dict[str, Any]:
        """What it was built with (:mod:`sgdlab.optim.settings`): the key and the scope's spec
        (loading a state puts the saved ones back, so others would be ignored)."""
        return {"key": self.key, "scope": self.scope.state_dict()}

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "key": self.key, "scope": self.scope.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.key, self.scope, self.t = state["key"], build_scope(state["scope"]), int(state["t"])
        self._apply()


@register_schedule("scoping")
def _scoping(optimizer, *, steps_per_epoch: int = 1, total_steps: int = 1,
             key: str = "gamma", **scope: Any) -> ScopingSchedule:
    """``schedule: {name: scoping, key: gamma, kind: exponential, initial: .., rate: ..}``."""
    return ScopingSchedule(optimizer, key, scope if "kind" in scope else scope.get("value", scope))
