"""How a conclusion's verdict is worded, the same in report.html, RESULTS.md and the CLI.

At ``smoke`` scale the runs are too short and small for their numbers to mean anything, so
no verdict is shown (whatever ``agrees_with_paper`` says), only that the experiment ran. A
claim tested at a scale outside the regime where the paper makes it (``outside_regime``: the
reason) is neither an agreement nor a disagreement, and says so.
"""
from __future__ import annotations

from typing import Any

SMOKE = "smoke scale: checks that it runs, not a verdict"
OUTSIDE = "outside the paper's regime"
# beside a smoke report's departures: what that scale is for
SMOKE_SCALE = ("Smoke scale checks that the pipeline runs; it does not test the paper's claims "
               "(its runs are far too small and short).")
# a scale's departures when its entry lists none: every setting set otherwise than the paper
# scale's (``ExperimentSpec.derived_deviations``)
DERIVED = ("derived from the config, as the entry lists none for this scale: each setting that "
           "differs from the paper scale's")
# a claim's verdict (``agrees_with_paper``) in a word: the verdict column adds "with the
# paper"; a finding outside the paper's regime says what its numbers alone give in these
CLAIM = {True: "agrees", False: "disagrees", None: "inconclusive"}


def verdict(conclusion: dict[str, Any], scale: str | None) -> tuple[str, str]:
    """``(words, kind)``: kind is ``agree``, ``disagree`` or ``neutral`` (inconclusive, a
    description without a claim, a claim outside the paper's regime, or any smoke-scale
    result)."""
    if scale == "smoke":
        return SMOKE, "neutral"
    if conclusion.get("outside_regime") and conclusion.get("claim"):
        return OUTSIDE, "neutral"
    agrees = conclusion.get("agrees_with_paper")
    if isinstance(agrees, bool):
        return f"{CLAIM[agrees]} with the paper", "agree" if agrees else "disagree"
    return (CLAIM[None] if conclusion.get("claim") else "descriptive"), "neutral"


__all__ = ["CLAIM", "DERIVED", "OUTSIDE", "SMOKE", "SMOKE_SCALE", "verdict"]
