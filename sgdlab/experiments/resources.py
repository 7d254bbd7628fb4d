"""A Ray run's CPUs and GPUs, and where each number came from.

Each is ``--cpus-per-run`` / ``--gpus-per-run``, else ``$SGDLAB_CPUS_PER_RUN`` /
``$SGDLAB_GPUS_PER_RUN``, else the experiment's ``resources:``, else 1 CPU and no GPU
(:func:`resolve`). A refusal of the number (the Ray backend's, where no node of the cluster can
hold a run) names where it came from and what to change there: the flag, the variable, or the
file (which the flag overrides).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sgdlab.errors import UserError

FLAG, VARIABLE, FILE, DEFAULT = "flag", "variable", "resources", "default"
DEFAULTS = {"cpus": 1.0, "gpus": 0.0}


@dataclass(frozen=True)
class PerRun:
    """``value`` CPUs or GPUs (``kind``: ``"cpus"`` or ``"gpus"``) per run, from ``source``:
    ``FLAG`` (the command line, or a number a Python caller gave), ``VARIABLE``, ``FILE`` (the
    experiment's ``resources:``) or ``DEFAULT``."""

    kind: str
    value: float
    source: str = FLAG

    @classmethod
    def default(cls, kind: str) -> PerRun:
        return cls(kind, DEFAULTS[kind], DEFAULT)

    @property
    def flag(self) -> str:
        return f"--{self.kind}-per-run"

    @property
    def variable(self) -> str:
        return f"SGDLAB_{self.kind.upper()}_PER_RUN"

    def __str__(self) -> str:
        """Where the number came from, spelled as the user gave it."""
        v = f"{self.value:g}"
        return {FLAG: f"{self.flag} {v}", VARIABLE: f"${self.variable}={v}",
                FILE: f"the experiment's resources: {self.kind}_per_run: {v}",
                DEFAULT: f"the default {v}; {self.flag} sets it"}[self.source]

    def at_most(self, limit: float) -> str:
        """What to do so that the number is ``limit`` (> 0) or less."""
        give = f"{self.flag} {limit:g} or less"
        if self.source == VARIABLE:
            return f"set ${self.variable} to {limit:g} or less (or give {give})"
        if self.source == FILE:
            return (f"give {give}, which overrides the experiment's resources: (or lower "
                    f"{self.kind}_per_run in its file)")
        return f"give {give}"

    def none(self) -> str:
        """What to do so that a run asks for none (of the GPUs: it runs on CPUs then)."""
        return {VARIABLE: f"unset ${self.variable}",
                FILE: f"give {self.flag} 0, which overrides the experiment's resources:"
                }.get(self.source, f"leave out {self.flag}")


def per_run(kind: str, given: float | PerRun | None) -> PerRun | None:
    """``given`` as a :class:`PerRun`: a bare number is taken as the flag's."""
    if given is None or isinstance(given, PerRun):
        return given
    return PerRun(kind, float(given), FLAG)


def amount(given: float | PerRun | None) -> float | None:
    """The number of ``given``, None where none was given."""
    return given.value if isinstance(given, PerRun) else given


def resolve(kind: str, given: float | None, resources: dict[str, Any]) -> PerRun | None:
    """``kind``'s CPUs or GPUs per run: the flag's ``given``, else the variable, else the
    experiment's ``resources`` (its ``{kind}_per_run``); None where none of them sets it."""
    if given is not None:
        return PerRun(kind, float(given), FLAG)
    var = PerRun.default(kind).variable
    if os.environ.get(var):
        try:
            return PerRun(kind, float(os.environ[var]), VARIABLE)
        except ValueError:
            raise UserError(f"${var} must be a number, got {os.environ[var]!r}") from None
    value = resources.get(f"{kind}_per_run")
    return None if value is None else PerRun(kind, float(value), FILE)
