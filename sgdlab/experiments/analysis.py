"""What an analysis returns: tables, figures and conclusions computed from stored runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sgdlab.report.tables import Table


@dataclass
class Conclusion:
    """One finding, a sentence computed from the numbers.

    ``agrees_with_paper`` is ``True``/``False`` where the paper makes a qualitative claim that
    this finding tests, ``None`` where it does not (a purely descriptive statement) or where
    the numbers cannot decide it (``claim`` set: inconclusive, e.g. inside the seed spread)."""

    text: str
    agrees_with_paper: bool | None = None
    claim: str | None = None          # the paper's claim being tested, in one line
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "agrees_with_paper": self.agrees_with_paper,
                "claim": self.claim, "evidence": self.evidence}


@dataclass
class Analysis:
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Any]] = field(default_factory=list)   # (name, matplotlib Figure)
    conclusions: list[Conclusion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)
