"""What an optimizer or a schedule was built with, as data: the settings a resumed training run
compares with its checkpoint's run (:mod:`sgdlab.train.loop`; docs/design/runner.md "Resume
with changed settings").

An optimizer's hyper-parameters belong in its parameter groups (torch's convention), and
:func:`group_settings` reads them. What an optimizer or schedule keeps elsewhere — the seed of
its own generator, GLD's noise settings, a SwitchOptimizer's switch step and second optimizer,
a schedule's attributes — it names in a ``settings()`` method returning plain data (numbers,
strings, None, lists and dicts of them; tensors compare by value). A checkpoint restores the
generator's state and, for most, the settings themselves, so a new value would be ignored or
mixed with the old without a word: the loop refuses the resume instead. Any optimizer or
schedule joins by defining ``settings()``; :func:`own_settings` reads it.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["group_settings", "inner_settings", "own_settings", "plain_attributes",
           "split_own_state"]


def group_settings(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter group's hyper-parameters: every key but its parameters."""
    return [{k: v for k, v in g.items() if k not in ("params", "param_names")}
            for g in optimizer.param_groups]


def own_settings(obj: Any) -> dict[str, Any] | None:
    """``obj.settings()``, the settings an optimizer or schedule keeps outside its parameter
    groups, or None when it defines none (torch's optimizers keep all of theirs in the
    groups)."""
    settings = getattr(obj, "settings", None)
    return settings() if callable(settings) else None


def inner_settings(role: str, optimizer: torch.optim.Optimizer, *,
                   groups: bool = True) -> dict[str, Any]:
    """The settings of an optimizer held inside another under ``role`` (SwitchOptimizer's
    ``second``, TrivializedSGD's ``base``), flat: ``"second.lr"`` (``"second.1.lr"`` with more
    groups than one), ``"second.seed"``; with ``groups=False`` only its own settings (the
    outer optimizer's groups are its groups). Flat, each compares as a setting of its own, and
    a key only one run has (one a newer torch adds to a group) is not compared."""
    out: dict[str, Any] = {}
    if groups:
        found = group_settings(optimizer)
        for i, g in enumerate(found):
            at = f"{role}." if len(found) == 1 else f"{role}.{i}."
            out.update({at + k: v for k, v in g.items()})
    out.update({f"{role}.{k}": v for k, v in (own_settings(optimizer) or {}).items()})
    return out


def plain_attributes(obj: Any, position: frozenset[str] | set[str] = frozenset()
                     ) -> dict[str, Any]:
    """``obj``'s attributes that hold plain data (numbers, strings, None, lists and tuples of
    them), less ``position`` (what a step moves): the settings of an object built from
    them, such as :mod:`sgdlab.optim.protocols`' schedules."""
    return {k: v for k, v in vars(obj).items() if k not in position and _plain_data(v)}


def _plain_data(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain_data(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def split_own_state(state_dict: dict[str, Any], key: str, saved_by: str,
                    **expected: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(torch_state, own)``: an optimizer's ``state_dict`` less the entry ``key`` in which
    it keeps what torch's state does not hold (its generator's state, counters), and that
    entry. Refused with a ValueError naming ``saved_by`` when the entry is missing, and naming
    the setting when one of ``expected`` (the reading the state was saved under, e.g.
    ``noise="dynamic"``) differs from the entry's."""
    torch_state = dict(state_dict)
    own = torch_state.pop(key, None)
    if own is None:
        raise ValueError(f"state_dict has no {key!r} entry (not saved by {saved_by})")
    for name, value in expected.items():
        if own[name] != value:
            raise ValueError(f"state_dict is for {name} {own[name]!r}, not {value!r}")
    return torch_state, own
