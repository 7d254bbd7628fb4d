"""How a conclusion's verdict is worded, the same in report.html, RESULTS.md and the CLI.

At ``smoke`` scale the runs are too short and small for their numbers to mean anything, so
no verdict is shown (whatever ``agrees_with_paper`` says), only that the experiment ran. A
claim tested at a scale outside the regime where the paper makes it (``outside_regime``: the
reason) is neither an agreement nor a disagreement, and says so. An experiment that cites no
paper (:func:`cites_paper`) words its verdicts as its own claims holding or failing.
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
# the same verdict where no paper is cited: the experiment's own claim holds or fails
OWN_CLAIM = {True: "holds", False: "fails", None: "inconclusive"}


def cites_paper(results: dict[str, Any]) -> bool:
    """Whether the experiment of ``results`` (a results.json) cites a paper: its ``paper``
    block gives a figure, a title or a quoted passage. An experiment of one's own
    (``paper: {author: Me, year: 2026, figure: ''}``) gives none."""
    paper = (results.get("experiment") or {}).get("paper")
    if not isinstance(paper, dict):
        return True     # nothing to tell: the catalogue's wording
    return any(paper.get(k) for k in ("figure", "title", "quote", "quotes"))


def claim_word(agrees: bool | None, cited: bool = True) -> str:
    """A verdict in a word: ``agrees`` with a cited paper, ``holds`` where none is cited."""
    return (CLAIM if cited else OWN_CLAIM)[agrees]


def verdict(conclusion: dict[str, Any], scale: str | None, *,
            cited: bool = True) -> tuple[str, str]:
    """``(words, kind)``: kind is ``agree``, ``disagree`` or ``neutral`` (inconclusive, a
    description without a claim, a claim outside the paper's regime, or any smoke-scale
    result). ``cited``: whether the experiment cites a paper (:func:`cites_paper`); where it
    does not, the words say whether the claim holds (``holds``, ``fails``) and the key
    ``agrees_with_paper`` keeps its name."""
    if scale == "smoke":
        return SMOKE, "neutral"
    if conclusion.get("outside_regime") and conclusion.get("claim"):
        return OUTSIDE, "neutral"
    agrees = conclusion.get("agrees_with_paper")
    if isinstance(agrees, bool):
        words = claim_word(agrees, cited) + (" with the paper" if cited else "")
        return words, "agree" if agrees else "disagree"
    return (CLAIM[None] if conclusion.get("claim") else "descriptive"), "neutral"


__all__ = ["CLAIM", "DERIVED", "OUTSIDE", "OWN_CLAIM", "SMOKE", "SMOKE_SCALE", "cites_paper",
           "claim_word", "verdict"]
