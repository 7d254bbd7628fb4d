"""What an analysis returns: tables, figures and conclusions computed from stored runs."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sgdlab.report.tables import Table
from sgdlab.report.verdicts import CLAIM


@dataclass
class Conclusion:
    """One finding, a sentence computed from the numbers.

    ``agrees_with_paper`` is ``True``/``False`` where the paper makes a qualitative claim that
    this finding tests, ``None`` where it does not (a purely descriptive statement) or where
    the numbers cannot decide it (``claim`` set: inconclusive, e.g. inside the seed spread).
    ``outside_regime`` is the reason a claim is not scored at this scale (see
    :func:`outside_regime`), ``measured`` the verdict its numbers alone would give."""

    text: str
    agrees_with_paper: bool | None = None
    claim: str | None = None          # the paper's claim being tested, in one line
    evidence: dict[str, Any] = field(default_factory=dict)
    outside_regime: str | None = None
    measured: bool | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"text": self.text, "agrees_with_paper": self.agrees_with_paper,
               "claim": self.claim, "evidence": self.evidence}
        if self.outside_regime:
            out.update(outside_regime=self.outside_regime, measured=self.measured)
        return out


def outside_regime(conclusions: list[Conclusion], reason: str | None) -> list[Conclusion]:
    """``conclusions`` of a scale whose settings lie outside the regime where the paper makes
    its claims (``scales.<scale>.outside_regime``, the ``reason``): each claim's verdict
    becomes None (counted with the inconclusive: the paper predicts nothing there to agree or
    disagree with), its text keeps the numbers and says why and what they alone would give.
    Descriptions without a claim, and every conclusion when ``reason`` is None, unchanged."""
    if not reason:
        return list(conclusions)
    why = " ".join(reason.split())
    return [replace(c, agrees_with_paper=None, outside_regime=why, measured=c.agrees_with_paper,
                    text=f"{c.text} — outside the paper's regime: {why}; not scored (the "
                         f"numbers alone: {CLAIM[c.agrees_with_paper]})")
            if c.claim else c for c in conclusions]


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
