"""Switch optimizers at a given step (Zhu et al. 2019, Fig. 7: RMSProp first, then SGD).

``SwitchOptimizer(params, first="rmsprop", second="sgd", switch_step=k, first_hyper={...},
second_hyper={...})`` runs ``first`` for steps 0 .. k−1 and ``second`` from step k on, over the
same parameters. ``param_groups`` and ``state`` are those of the active optimizer, so LR
schedules and ``zero_grad`` act on it (the protocols of :mod:`sgdlab.optim.protocols` keep each
group's own ``initial_lr``, so after the switch they scale the second optimizer's lr).
torch's chainable schedulers (``StepLR``, ``ExponentialLR``, ``MultiStepLR``,
``CosineAnnealingLR``, ``LinearLR``) multiply the active group's lr: after the switch the second
optimizer's own rate, without the factor f they reached before it (a decay before the switch is
not applied to the second, and a ``LinearLR`` warm-up still under way takes it to its rate / f).
Those that write ``base_lr · factor`` from the rates they stored when built (``LambdaLR``,
``OneCycleLR``) keep writing the first optimizer's rates after the switch: use the registry's
schedules with ``switch``. At the switch the second optimizer's groups take over the keys of the
first's that are no hyper-parameter of either (a group's own keys, ``OneCycleLR``'s phase rates
and momenta), so such a scheduler goes on past it; one that cycles momentum cycles the first's
key for it (Adam's ``betas``), which the second must have too: a step of the first under
such a scheduler (``OneCycleLR`` or ``CyclicLR`` with ``cycle_momentum=True``, the default) is
refused with a ValueError naming the key otherwise, before it moves anything (the scheduler
would raise a bare KeyError at the switch, or cycle a key the second never reads); build the
scheduler with ``cycle_momentum=False`` there.
``state_dict()`` holds both optimizers' states and the step count.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import (PicklesWhole, check_plain_optimizer, closure_loss, is_whole,
                      refuse_optimizer_level_keys, runs_state_dict_hooks)
from .registry import build_optimizer, register_optimizer
from .settings import inner_settings

__all__ = ["SwitchOptimizer"]


def _copy_params(params) -> list:
    """The parameters or groups, each group's ``params`` as its own list: both optimizers
    get every parameter even when a group gives them as an iterator (``m.parameters()``).
    A tensor is passed on as it is, for torch's TypeError (iterated, it gave its rows, and the
    error was "can't optimize a non-leaf Tensor")."""
    if isinstance(params, Tensor):
        return params
    out = []
    for g in params:
        if isinstance(g, dict) and "params" in g:      # (torch names a group without)
            ps = g["params"]
            g = {**g, "params": [ps] if isinstance(ps, Tensor) else list(ps)}
        out.append(g)
    return out


class SwitchOptimizer(PicklesWhole, Optimizer):
    """Optimizer ``first`` for ``switch_step`` steps, then ``second`` (names from the registry).

    Args:
        params: parameters (or groups) shared by both optimizers.
        first, second: registered optimizer names (plain optimizers).
        switch_step: k >= 0, the number of steps taken with ``first``.
        first_hyper, second_hyper: keyword hyper-parameters of each.
    """

    def __init__(self, params, *, first: str = "rmsprop", second: str = "sgd",
                 switch_step: int, first_hyper: dict[str, Any] | None = None,
                 second_hyper: dict[str, Any] | None = None):
        for role, name in (("first", first), ("second", second)):
            check_plain_optimizer(role, name, exclude=("switch",))
        if not is_whole(switch_step) or switch_step < 0:
            raise ValueError(f"Invalid switch_step: {switch_step} (an int >= 0)")
        params = _copy_params(params)
        self.first = build_optimizer(first, _copy_params(params), **(first_hyper or {}))
        self.second = build_optimizer(second, _copy_params(params), **(second_hyper or {}))
        self.names = (first, second)
        self.switch_step = int(switch_step)
        self._t = 0
        super().__init__(self.first.param_groups, {})
        self._link()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add the group to both optimizers, so it is trained before and after the switch."""
        if self.param_groups is not self.active.param_groups:   # in Optimizer.__init__
            super().add_param_group(param_group)
            return
        refuse_optimizer_level_keys(self, param_group)
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for opt in (self.first, self.second):
            opt.add_param_group({**param_group, "params": params})
        self._link()

    @property
    def active(self) -> Optimizer:
        return self.first if self._t < self.switch_step else self.second

    @staticmethod
    def active_state(state_dict: dict[str, Any]) -> dict[str, Any]:
        """Of a saved :meth:`state_dict`, the state of the optimizer that takes the next step
        (what :attr:`active` is once it is loaded)."""
        meta = _switch_entry(state_dict, ("t", "switch_step"))
        which = "first" if meta["t"] < meta["switch_step"] else "second"
        if which not in state_dict:
            raise ValueError(f"state_dict has no {which!r} entry, the state of the optimizer "
                             f"that takes step {meta['t']} (switch_step {meta['switch_step']})")
        return state_dict[which]

    @property
    def switched(self) -> bool:
        return self._t >= self.switch_step

    def _link(self) -> None:
        if self.switched:
            self._carry_group_keys()
        self.param_groups, self.state = self.active.param_groups, self.active.state
        self.defaults = self.active.defaults

    def _carry_group_keys(self) -> None:
        """Give the second optimizer's groups the keys of the first's that are no
        hyper-parameter of either and that the second lacks (OneCycleLR reads its phase rates
        from the groups at every step). ``initial_lr`` goes only with OneCycleLR's ``max_lr``:
        the registry's schedules scale each optimizer's own rate from it."""
        hyper = set(self.first.defaults) | set(self.second.defaults) | {"params"}
        for g1, g2 in zip(self.first.param_groups, self.second.param_groups):
            for key, value in g1.items():
                if key in hyper or key in g2 or (key == "initial_lr" and "max_lr" not in g1):
                    continue
                g2[key] = value

    def settings(self) -> dict[str, Any]:
        """Both optimizers' names, ``switch_step``, each one's own settings and the groups of
        the one not active at construction (the parameter groups are the other's):
        :mod:`sgdlab.optim.settings`. A loaded state puts the saved ``switch_step`` and both
        optimizers' groups back."""
        idle = self.second if self.active is self.first else self.first
        return {"first": self.names[0], "second": self.names[1],
                "switch_step": self.switch_step,
                **inner_settings("first", self.first, groups=self.first is idle),
                **inner_settings("second", self.second, groups=self.second is idle)}

    def _check_cycled_momentum(self) -> None:
        """A ValueError, before a step of the first optimizer, when a scheduler cycles its
        momentum (OneCycleLR and CyclicLR mark the groups with ``max_momentum`` and
        ``base_momentum``) through a key the second optimizer has not: the scheduler chose
        ``betas`` or ``momentum`` from the first's defaults when it was built, and would write
        it into the second's groups after the switch (a KeyError for ``betas``; a ``momentum``
        that Adam never reads)."""
        if self.switched:
            return
        key = "betas" if "betas" in self.first.defaults else "momentum"
        if key in self.second.defaults:
            return
        if any({"max_momentum", "base_momentum"} <= g.keys() for g in self.first.param_groups):
            raise ValueError(
                f"a scheduler cycles the momentum of switch's first optimizer "
                f"{self.names[0]} through its {key!r}, which the second, {self.names[1]}, has "
                "not, so after the switch the scheduler could not cycle it; build it with "
                "cycle_momentum=False")

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        self._check_cycled_momentum()
        loss = closure_loss(closure)
        self.active.step()
        self._t += 1
        self._link()
        return loss

    @runs_state_dict_hooks
    def state_dict(self) -> dict[str, Any]:
        return {"switch": {"t": self._t, "switch_step": self.switch_step,
                           "names": list(self.names)},
                "first": self.first.state_dict(), "second": self.second.state_dict()}

    @runs_state_dict_hooks
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        meta = _switch_entry(state_dict, ("t", "switch_step", "names"))
        if tuple(meta["names"]) != self.names:
            raise ValueError(f"state_dict is for optimizers {meta['names']}, "
                             f"not {list(self.names)}")
        self.first.load_state_dict(state_dict["first"])
        self.second.load_state_dict(state_dict["second"])
        self._t, self.switch_step = int(meta["t"]), int(meta["switch_step"])
        self._link()


def _switch_entry(state_dict: object, keys: tuple[str, ...]) -> dict[str, Any]:
    """The ``switch`` entry of a saved :meth:`SwitchOptimizer.state_dict`, holding ``keys``
    (of its step count ``t``, ``switch_step`` and ``names``); a ValueError naming what
    ``state_dict`` holds instead (another optimizer's state: a KeyError 'switch' before)."""
    def held(d: object) -> str:
        return (f"keys {', '.join(map(repr, d)) or '(none)'}" if isinstance(d, dict)
                else f"a {type(d).__name__}")

    meta = state_dict.get("switch") if isinstance(state_dict, dict) else None
    if not isinstance(meta, dict):
        # the words of the other optimizers' own entries (settings.split_own_state)
        raise ValueError("state_dict has no 'switch' entry (not saved by SwitchOptimizer; it "
                         f"holds {held(state_dict)})")
    missing = [k for k in keys if k not in meta]
    if missing:
        raise ValueError(f"state_dict's 'switch' entry has no {', '.join(missing)} (not saved "
                         f"by SwitchOptimizer; it holds {held(meta)})")
    return meta


register_optimizer("switch")(SwitchOptimizer)
