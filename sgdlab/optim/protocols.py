"""Learning-rate protocols and schedules (Musso 2020; Xing et al. 2018; Smith 2017).

Every schedule here is stepped **once per optimizer step** by the training loop and writes
``lr = base_lr · factor`` into each parameter group, where ``base_lr`` is the group's learning
rate when the schedule first sees it (kept in ``group["initial_lr"]``, torch's convention, so a
schedule keeps working when :class:`~sgdlab.optim.switch.SwitchOptimizer` swaps its groups).
The value for step 0 is written at construction. Time is counted in optimizer steps ``t``;
epoch-based rules use completed epochs ``τ = ⌊t / steps_per_epoch⌋``, so they need the same
number of steps in every epoch: the run builders refuse them (:func:`counts_epochs`) next to a
batch-size schedule whose epochs differ in steps.

Registered names (``build_schedule(name, optimizer, steps_per_epoch=, total_steps=, **hyper)``):

- ``random``: η_t drawn i.i.d. each step, uniform on [η(1 − w), η(1 + w)] (``width`` w in
  [0, 1]; w = 1 is U[0, 2η], the mean-lr reading of Musso 2020's random protocol). Its mean is
  the base η, so it is comparable with the ``constant`` protocol of the same η. Own
  ``torch.Generator``; its state is in ``state_dict``. Written into ``torch.optim.SGD`` with
  momentum, the random factor multiplies the whole step l·v (momentum buffer included), not
  only the new gradient as Musso's eqs. (1)–(2) do: for the paper's rule use the optimizer
  ``random-lr-sgd`` (:mod:`sgdlab.optim.random_lr`), whose ``multiply="step"`` is this
  schedule's rule.
- ``cosine-cyclic`` (Musso 2020, eq. (20)): η_τ = η [1 + cos(π τ / P)] over completed epochs τ.
  The value runs 2η → 0 → 2η over 2P epochs and averages η; the figures call P the "period"
  (P ∈ {6, 18, 30}). ``convention="full-period"`` reads P as the full period instead:
  η [1 + cos(2π τ / P)].
- ``step`` (Xing et al.: step annealing): η · γ^k after the k-th milestone (epochs).
- ``triangular`` (Smith 2017, CLR): linear up from η to η_max over ``step_size`` steps, then down,
  repeated: cycle = ⌊1 + t/(2s)⌋, x = |t/s − 2 cycle + 1|, η_t = η + (η_max − η) max(0, 1 − x).
  ``per="epoch"`` holds each epoch at the value of its first step (t = τ · steps_per_epoch), the
  way a batch-size schedule moves (Jastrzebski et al.'s cyclic batch size).
- ``trapezoid`` (Xing et al.): linear warm-up from ``start_factor``·η to η, hold at η, linear
  anneal to ``end_factor``·η, then flat.

- ``constant``: η at every step (each group's own base, as every protocol here).
- ``polynomial-decay`` (Welling and Teh 2011 §3; Chaudhari's thesis §3.3.6, "η/(1+t)^b"):
  η / (1 + t)^b with t counted in optimizer steps (``per="step"``, default) or in completed
  epochs (``per="epoch"``): the thesis does not say which. Welling and Teh's
  ε_t = a (b + t)^{−γ} with b = 1.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ._common import seeded_generator
from .registry import register_schedule
from .settings import plain_attributes

__all__ = [
    "ProtocolSchedule",
    "RandomLR",
    "CosineCyclicLR",
    "StepLR",
    "TriangularLR",
    "TrapezoidLR",
    "PolynomialDecayLR",
    "counts_epochs",
    "lr_trace",
]


def _epochs_to_steps(value: float | None, steps_per_epoch: int, name: str) -> int | None:
    if value is None:
        return None
    if value < 0:
        raise ValueError(f"Invalid {name}={value} (must be >= 0)")
    return int(round(value * steps_per_epoch))


class ProtocolSchedule:
    """Base class: ``factor(t)`` (a multiplier of the base learning rate) at optimizer step t.

    Follows the LR-scheduler protocol of the training loop: ``step()``, ``state_dict()``,
    ``load_state_dict()``, plus ``get_last_lr()`` and ``lr_at(t)`` (deterministic schedules).
    """

    name = "?"

    def __init__(self, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int = 1):
        if int(steps_per_epoch) < 1:
            raise ValueError(f"Invalid steps_per_epoch={steps_per_epoch} (must be >= 1)")
        self.optimizer = optimizer
        self.steps_per_epoch = int(steps_per_epoch)
        self.t = 0
        self._apply()

    # --- to override ----------------------------------------------------------------------
    def factor(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None: ...

    # --- protocol -------------------------------------------------------------------------
    def epoch(self, t: int) -> int:
        """Completed epochs after t optimizer steps."""
        return t // self.steps_per_epoch

    def _apply(self) -> None:
        f = self.factor(self.t)
        for g in self.optimizer.param_groups:
            g["lr"] = g.setdefault("initial_lr", g["lr"]) * f
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def step(self) -> None:
        self.t += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    # what a step moves, not a setting (the last rates derive from the groups')
    _POSITION = frozenset({"t", "_last_lr", "_loaded_lr"})

    def settings(self) -> dict[str, Any]:
        """What it was built with (:mod:`sgdlab.optim.settings`): its plain-data attributes
        (milestones, width, steps_per_epoch, ...), less its position."""
        return plain_attributes(self, self._POSITION)

    def lr_at(self, t: int) -> float:
        """Learning rate of the first group at step t (deterministic schedules only)."""
        g = self.optimizer.param_groups[0]
        return g.get("initial_lr", g["lr"]) * self.factor(t)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "t": self.t, "steps_per_epoch": self.steps_per_epoch,
                "initial_lr": [g.get("initial_lr") for g in self.optimizer.param_groups],
                **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name", self.name) != self.name:
            raise ValueError(f"state_dict is for schedule {state['name']!r}, not {self.name!r}")
        self.t = int(state["t"])
        self.steps_per_epoch = int(state["steps_per_epoch"])
        for g, lr0 in zip(self.optimizer.param_groups, state.get("initial_lr", [])):
            if lr0 is not None:
                g["initial_lr"] = lr0
        self._load_extra_state(state)
        self._reapply_loaded()

    def _reapply_loaded(self) -> None:
        self._apply()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(t={self.t})"


class ConstantLR(ProtocolSchedule):
    """The base learning rate at every step (factor 1): written from each group's own
    ``initial_lr``, so after :class:`~sgdlab.optim.switch.SwitchOptimizer` swaps its groups
    the second optimizer keeps its own rate (torch's ``LambdaLR(lambda t: 1)`` would write the
    first optimizer's)."""

    name = "constant"

    def factor(self, t: int) -> float:
        return 1.0

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "t" not in state and "last_epoch" in state:       # saved as torch's LambdaLR
            state = {"name": self.name, "t": state["last_epoch"],
                     "steps_per_epoch": self.steps_per_epoch}
        super().load_state_dict(state)


class RandomLR(ProtocolSchedule):
    """A random learning rate η_t ~ U[η(1 − w), η(1 + w)] i.i.d. each step (mean η).

    With w = 1 and ``torch.optim.SGD`` this is the ``multiply="step"``, ``convention="mean-lr"``
    variant of Musso 2020's rule (:class:`sgdlab.optim.random_lr.RandomLRSGD`), not eqs. (1)–(2).

    The draw for step t is written when the schedule reaches t (construction for t = 0); the
    generator state saved in ``state_dict`` is the one *after* that draw, and loading restores
    the current lr and the generator, so a resumed run draws the same sequence.
    """

    name = "random"

    def __init__(self, optimizer: torch.optim.Optimizer, *, width: float = 1.0,
                 seed: int | None = None, steps_per_epoch: int = 1):
        if not 0.0 <= width <= 1.0:
            raise ValueError(f"Invalid width={width} (must be in [0, 1]; 1 is U[0, 2η])")
        self.width = float(width)
        # as given (None: the default), a setting a resume compares (settings())
        self.seed = None if seed is None else int(seed)
        # default: the run's seed (torch.initial_seed()), so seeds give different draws
        self.generator = seeded_generator(seed)
        super().__init__(optimizer, steps_per_epoch=steps_per_epoch)

    def factor(self, t: int) -> float:
        # a fresh draw for each new step; t is implicit in the generator's position
        u = float(torch.rand((), generator=self.generator, dtype=torch.float64))
        return 1.0 - self.width + 2.0 * self.width * u

    def lr_at(self, t: int) -> float:
        raise TypeError("the random protocol has no deterministic lr_at(t); use get_last_lr()")

    def _extra_state(self) -> dict[str, Any]:
        return {"width": self.width, "generator": self.generator.get_state(),
                "last_lr": list(self._last_lr)}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.width = float(state["width"])
        self.generator.set_state(state["generator"])
        self._loaded_lr = list(state["last_lr"])

    def _reapply_loaded(self) -> None:
        # restore the lr drawn before saving rather than drawing a new one
        for g, lr in zip(self.optimizer.param_groups, self._loaded_lr):
            g["lr"] = lr
        self._last_lr = list(self._loaded_lr)


class CosineCyclicLR(ProtocolSchedule):
    """Musso 2020, eq. (20): η_τ = η [1 + cos(π τ / P)], τ the completed epochs.

    eq. (20) repeats every 2P epochs while the captions of Figs. 1–2 call P ("6, 18, 30
    epochs") the period: ``convention="eq20"`` (default) is the printed formula,
    ``"full-period"`` reads P as the full period, η [1 + cos(2π τ / P)].
    """

    name = "cosine-cyclic"
    CONVENTIONS = {"eq20": 1.0, "full-period": 2.0}

    def __init__(self, optimizer: torch.optim.Optimizer, *, period: float,
                 convention: str = "eq20", steps_per_epoch: int = 1):
        if not period > 0:
            raise ValueError(f"Invalid period={period} (epochs, must be > 0)")
        if convention not in self.CONVENTIONS:
            raise ValueError(f"Invalid convention={convention!r}; known: "
                             f"{', '.join(self.CONVENTIONS)}")
        self.period, self.convention = float(period), convention
        super().__init__(optimizer, steps_per_epoch=steps_per_epoch)

    def factor(self, t: int) -> float:
        turns = self.CONVENTIONS[self.convention]
        return 1.0 + math.cos(turns * math.pi * self.epoch(t) / self.period)


class StepLR(ProtocolSchedule):
    """Step annealing: η · γ^k after the k-th milestone (in epochs), or every ``every`` epochs
    from epoch ``start`` on (default ``every``: the first drop after ``every`` epochs).
    ``every=1, start=14, gamma=1/1.15`` is Zaremba et al.'s large LSTM schedule: the rate
    held for 14 epochs, then divided by 1.15 at each epoch's start."""

    name = "step"

    def __init__(self, optimizer: torch.optim.Optimizer, *, milestones: list[float] | None = None,
                 every: float | None = None, gamma: float = 0.1, start: float | None = None,
                 steps_per_epoch: int = 1):
        if (milestones is None) == (every is None):
            raise ValueError("step schedule: give exactly one of milestones (epochs) or every")
        if start is not None and every is None:
            raise ValueError("step schedule: start (epochs) goes with every, not milestones")
        if start is not None and not 0 <= start < math.inf:
            raise ValueError(f"Invalid start={start} (epochs, must be >= 0)")
        if not gamma > 0:
            raise ValueError(f"Invalid gamma={gamma} (must be > 0)")
        if milestones is not None:
            ms = [float(m) for m in milestones]
            if ms != sorted(ms) or any(m < 0 for m in ms):
                raise ValueError(f"Invalid milestones={milestones} (epochs, increasing, >= 0)")
            self.milestones: list[float] | None = ms
        else:
            self.milestones = None
        if every is not None and not every > 0:
            raise ValueError(f"Invalid every={every} (epochs, must be > 0)")
        self.every, self.gamma = every, float(gamma)
        if start is not None:     # (absent otherwise: a checkpoint before it compares equal)
            self.start = float(start)
        super().__init__(optimizer, steps_per_epoch=steps_per_epoch)

    def factor(self, t: int) -> float:
        e = t / self.steps_per_epoch          # fractional epochs: milestones may be mid-epoch
        if self.milestones is not None:
            k = sum(e >= m - 1e-12 for m in self.milestones)
        elif not hasattr(self, "start"):
            k = int(math.floor(e / self.every + 1e-12))
        else:
            k = (int(math.floor((e - self.start) / self.every + 1e-12)) + 1
                 if e >= self.start - 1e-12 else 0)
        return self.gamma ** k


class TriangularLR(ProtocolSchedule):
    """Smith's triangular cyclical learning rate (CLR), between η (the base) and η_max.

    ``per="step"`` (default) moves the rate at every step; ``per="epoch"`` holds it over each
    epoch at the value of the epoch's first step, as a batch-size schedule moves the batch
    size (:mod:`sgdlab.train.batch_schedules`): a cyclic learning rate and a cyclic batch size
    then share η/S at every step, not only at each epoch's start."""

    name = "triangular"

    def __init__(self, optimizer: torch.optim.Optimizer, *, max_lr: float | None = None,
                 max_factor: float | None = None, step_size: int | None = None,
                 step_size_epochs: float | None = None, per: str = "step",
                 steps_per_epoch: int = 1):
        if per not in ("step", "epoch"):
            raise ValueError(f"Invalid per={per!r} (step | epoch: the learning rate changes at "
                             "every step, or once per epoch)")
        self.per = per
        if (max_lr is None) == (max_factor is None):
            raise ValueError("triangular schedule: give exactly one of max_lr or max_factor")
        if (step_size is None) == (step_size_epochs is None):
            raise ValueError("triangular schedule: give exactly one of step_size (steps) or "
                             "step_size_epochs")
        s = step_size if step_size is not None else _epochs_to_steps(
            step_size_epochs, int(steps_per_epoch), "step_size_epochs")
        if s is None or s < 1:
            raise ValueError(f"Invalid step_size={s} (half-cycle in steps, must be >= 1)")
        self.step_size = int(s)
        self.max_lr, self.max_factor = max_lr, max_factor
        g0 = optimizer.param_groups[0]
        base = g0.get("initial_lr", g0["lr"])
        if max_factor is not None and not max_factor >= 1:
            raise ValueError(f"Invalid max_factor={max_factor} (must be >= 1)")
        if max_lr is not None and not max_lr >= base:
            raise ValueError(f"Invalid max_lr={max_lr} (must be >= the base lr {base})")
        self._ratio = max_factor if max_factor is not None else (max_lr / base if base else 1.0)
        super().__init__(optimizer, steps_per_epoch=steps_per_epoch)

    def factor(self, t: int) -> float:
        if self.per == "epoch":             # held over the epoch at its first step's value
            t = self.epoch(t) * self.steps_per_epoch
        cycle = math.floor(1 + t / (2 * self.step_size))
        x = abs(t / self.step_size - 2 * cycle + 1)
        return 1.0 + (self._ratio - 1.0) * max(0.0, 1.0 - x)


class TrapezoidLR(ProtocolSchedule):
    """Warm up linearly (start_factor·η → η), hold at η, anneal linearly to end_factor·η, stay.

    Lengths in epochs; ``anneal`` defaults to the rest of training."""

    name = "trapezoid"

    def __init__(self, optimizer: torch.optim.Optimizer, *, warmup: float, hold: float,
                 anneal: float | None = None, start_factor: float = 0.1,
                 end_factor: float = 0.01, steps_per_epoch: int = 1,
                 total_steps: int | None = None):
        spe = int(steps_per_epoch)
        self.warmup_steps = _epochs_to_steps(warmup, spe, "warmup")
        self.hold_steps = _epochs_to_steps(hold, spe, "hold")
        if anneal is None:
            if total_steps is None:
                raise ValueError("trapezoid schedule: anneal (epochs) or total_steps required")
            self.anneal_steps = max(1, int(total_steps) - self.warmup_steps - self.hold_steps)
        else:
            self.anneal_steps = _epochs_to_steps(anneal, spe, "anneal")
        for name, v in (("start_factor", start_factor), ("end_factor", end_factor)):
            if not 0 <= v <= 1:
                raise ValueError(f"Invalid {name}={v} (must be in [0, 1])")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        super().__init__(optimizer, steps_per_epoch=spe)

    def factor(self, t: int) -> float:
        w, h, a = self.warmup_steps, self.hold_steps, self.anneal_steps
        if t < w:
            return self.start_factor + (1 - self.start_factor) * t / w
        if t < w + h:
            return 1.0
        if a > 0 and t < w + h + a:
            return 1.0 - (1 - self.end_factor) * (t - w - h) / a
        return self.end_factor


class PolynomialDecayLR(ProtocolSchedule):
    """η / (1 + t)^b (module docstring): t in steps (``per="step"``) or completed epochs
    (``per="epoch"``), b = ``power`` >= 0."""

    name = "polynomial-decay"

    def __init__(self, optimizer: torch.optim.Optimizer, *, power: float, per: str = "step",
                 steps_per_epoch: int = 1):
        if not 0 <= power < math.inf:
            raise ValueError(f"Invalid power b={power} (finite, >= 0)")
        if per not in ("step", "epoch"):
            raise ValueError(f"Invalid per={per!r} (step | epoch)")
        self.power, self.per = float(power), per
        super().__init__(optimizer, steps_per_epoch=steps_per_epoch)

    def factor(self, t: int) -> float:
        n = self.epoch(t) if self.per == "epoch" else t
        return (1.0 + n) ** -self.power


# --- registry ------------------------------------------------------------------------------

@register_schedule("constant")
def _constant(optimizer, *, steps_per_epoch: int = 1, total_steps: int = 1) -> ConstantLR:
    return ConstantLR(optimizer, steps_per_epoch=steps_per_epoch)


@register_schedule("random")
def _random(optimizer, *, steps_per_epoch: int = 1, total_steps: int = 1, width: float = 1.0,
            seed: int | None = None) -> RandomLR:
    return RandomLR(optimizer, width=width, seed=seed, steps_per_epoch=steps_per_epoch)


@register_schedule("cosine-cyclic")
def _cosine_cyclic(optimizer, *, steps_per_epoch: int = 1, total_steps: int = 1,
                   period: float, convention: str = "eq20") -> CosineCyclicLR:
    return CosineCyclicLR(optimizer, period=period, convention=convention,
                          steps_per_epoch=steps_per_epoch)


@register_schedule("step")
def _step(optimizer, *, steps_per_epoch: int = 1, total_steps: int = 1,
          milestones: list[float] | None = None, every: float | None = None,
          gamma: float = 0.1, start: float | None = None) -> StepLR:
    return StepLR(optimizer, milestones=milestones, every=every, gamma=gamma, start=start,
                  steps_per_epoch=steps_per_epoch)


@register_schedule("triangular")
def _triangular(optimizer, *, steps_per_epoch: int = 1, total_steps: int = 1,
                max_lr: float | None = None, max_factor: float | None = None,
                step_size: int | None = None,
                step_size_epochs: float | None = None, per: str = "step") -> TriangularLR:
    return TriangularLR(optimizer, max_lr=max_lr, max_factor=max_factor, step_size=step_size,
                        step_size_epochs=step_size_epochs, per=per,
                        steps_per_epoch=steps_per_epoch)


@register_schedule("trapezoid")
def _trapezoid(optimizer, *, steps_per_epoch: int = 1, total_steps: int = 1, warmup: float,
               hold: float, anneal: float | None = None, start_factor: float = 0.1,
               end_factor: float = 0.01) -> TrapezoidLR:
    return TrapezoidLR(optimizer, warmup=warmup, hold=hold, anneal=anneal,
                       start_factor=start_factor, end_factor=end_factor,
                       steps_per_epoch=steps_per_epoch, total_steps=total_steps)


@register_schedule("polynomial-decay")
def _polynomial_decay(optimizer, *, steps_per_epoch: int = 1, total_steps: int = 1,
                      power: float, per: str = "step") -> PolynomialDecayLR:
    return PolynomialDecayLR(optimizer, power=power, per=per, steps_per_epoch=steps_per_epoch)


def counts_epochs(name: str, hyper: dict[str, Any]) -> bool:
    """Whether schedule ``name`` with ``hyper`` reads epochs as a fixed ``steps_per_epoch``
    steps (``cosine-cyclic``, ``step``, ``trapezoid``, ``triangular`` with
    ``step_size_epochs`` or ``per: epoch``): with a batch-size schedule that changes the steps
    per epoch it would count epochs wrongly, so the builders refuse that pairing. ``name`` is
    matched in either spelling (``cosine_cyclic``), as :func:`build_schedule` matches it."""
    from ..errors import registered_spelling
    from .registry import SCHEDULES

    name = registered_spelling(name, SCHEDULES) or name
    if name in ("cosine-cyclic", "step", "trapezoid"):
        return True
    if name == "polynomial-decay":
        return hyper.get("per", "step") == "epoch"
    return name == "triangular" and (hyper.get("step_size_epochs") is not None
                                     or hyper.get("per", "step") == "epoch")


def lr_trace(name: str, num_steps: int, *, lr: float = 1.0, steps_per_epoch: int = 1,
             total_steps: int | None = None, **hyper: Any) -> list[float]:
    """The learning rate a schedule produces over ``num_steps`` steps (on a dummy parameter),
    for plots and docs: ``lr_trace("cosine-cyclic", 300, lr=0.1, steps_per_epoch=10, period=6)``.
    ``total_steps`` (default ``num_steps``) is the training length the schedule is built for.
    """
    from .registry import build_schedule

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = build_schedule(name, opt, steps_per_epoch=steps_per_epoch,
                           total_steps=num_steps if total_steps is None else total_steps,
                           **hyper)
    out = []
    for _ in range(num_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()        # a no-op (no gradients); keeps torch's scheduler order check quiet
        sched.step()
    return out
