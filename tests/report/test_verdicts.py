"""A verdict's words: agreement with a cited paper, or an own claim holding or failing."""
from __future__ import annotations

from sgdlab.report.html import conclusions_html
from sgdlab.report.verdicts import cites_paper, verdict

OWN = {"author": "Me", "year": 2026, "figure": ""}      # docs/GUIDE.md's own experiment
CITED = {"author": "Xing", "year": 2018, "figure": "Fig. 5", "quote": "q", "where": "§4"}


def _results(paper: dict) -> dict:
    return {"experiment": {"name": "e", "paper": paper}, "scale": "cpu",
            "conclusions": [{"text": "sgd lower", "agrees_with_paper": True, "claim": "c1"},
                            {"text": "adam lower", "agrees_with_paper": False, "claim": "c2"},
                            {"text": "tie", "agrees_with_paper": None, "claim": "c3"}]}


def test_an_experiment_citing_no_paper_words_its_claims_as_holding_or_failing():
    assert not cites_paper(_results(OWN))
    assert cites_paper(_results(CITED)) and cites_paper({"scale": "cpu"})
    assert cites_paper(_results({"author": "Me", "year": 2026, "figure": "Fig. 1"}))
    words = [verdict(c, "cpu", cited=False) for c in _results(OWN)["conclusions"]]
    assert words == [("holds", "agree"), ("fails", "disagree"), ("inconclusive", "neutral")]
    assert verdict({"agrees_with_paper": False, "claim": "c"}, "cpu") == (
        "disagrees with the paper", "disagree")


def test_the_report_page_of_an_own_experiment_names_no_paper():
    own, cited = conclusions_html(_results(OWN)), conclusions_html(_results(CITED))
    assert "with the paper" not in own and "paper:" not in own
    assert "<span class='agree'>holds</span><br><span class='note'>claim: c1" in own
    assert "<span class='disagree'>fails</span>" in own
    assert "agrees with the paper</span><br><span class='note'>paper: c1" in cited
