"""The analyses of ``procedures.landscape_runs`` on tiny stored runs whose numbers are worked
out by hand: the z of the escape intervals, which methods and seeds a verdict weighs, and the
thresholds of the PDE-smoothing and Fokker–Planck verdicts."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from sgdlab.experiments.procedures import landscape_runs as lr
from sgdlab.testing import stored_run

PAPER = {"author": "Zhu", "figure": "Fig. 3"}


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson score interval written out: (p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²))
    / (1 + z²/n)."""
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_the_rate_estimate_takes_its_z():
    # 4 of 10 at z = 1: (0.45 ± sqrt(0.0265)) / 1.1 = [0.26110, 0.55708]
    p, (lo, hi), n = lr._rate_estimate((4, 10), z=1.0)
    assert (p, n) == (0.4, 10)
    assert (lo, hi) == pytest.approx((0.261102, 0.557080), abs=1e-6)
    assert (lo, hi) == pytest.approx(_wilson(4, 10, 1.0), rel=1e-12)


def _escape(method: str, seed: int, successes: int, passage: list[int] | None = None):
    """An escape run of 100 repetitions at η = 0.1 as the analysis reads it."""
    summary = {"success_rate": successes / 100, "successes": successes, "repetitions": 100,
               "reached_rate": 1.0, "final_sharpness": 0.1, "never_reached": 0}
    data = {}
    if passage is not None:
        summary["first_passage_mean"] = sum(passage) / len(passage)
        data["first_passage"] = passage
    return stored_run(method, seed, params={"method": method, "lr": 0.1}, summary=summary,
                      data=data)


def test_the_ordering_weighs_the_seed_spread_of_the_slower_methods_too():
    # a: 90 and 90 of 100, b: 10 and 90 — pooled 0.9 vs 0.5, a gap of 0.4 far outside the
    # binomial interval but inside b's seed-to-seed std, sqrt(2·0.4²) = 0.5657
    runs = [_escape("a", 0, 90), _escape("a", 1, 90), _escape("b", 0, 10), _escape("b", 1, 90)]
    spec = SimpleNamespace(paper={**PAPER, "claim": "a escapes more often"},
                           options={"ordering": {"faster": ["a"], "slower": ["b"]}})
    (c,) = lr.zhu_escape_analysis(spec, runs).conclusions
    assert c.evidence["gap"] == pytest.approx(0.4) and c.evidence["interval"][0] > 0
    assert c.evidence["seed_spread"] == pytest.approx(0.4 * math.sqrt(2), rel=1e-12)
    assert c.agrees_with_paper is None and "seed-to-seed spread" in c.text




def test_the_speed_tiers_weigh_the_later_tiers_seed_spread_and_name_each_pairs_claim():
    # a: every chain at 10 in both seeds; b: seed means 12 and 48 (std 18·√2 = 25.46 over
    # seeds). Pooled, b's mean 30 with variance 20·18²/19 over 20 chains: the gap 20 has the
    # interval 20 ± 2·sqrt(341.05/20) = [11.74, 28.26], above 0 but within b's seed spread
    runs = [_escape("a", s, 50, [10] * 10) for s in (0, 1)]
    runs += [_escape("b", 0, 50, [12] * 10), _escape("b", 1, 50, [48] * 10)]
    runs += [_escape("c", s, 50, [500] * 5 + [520] * 5) for s in (0, 1)]
    spec = SimpleNamespace(paper=PAPER, options={"speed": {"tiers": [["a"], ["b"], ["c"]],
                                                           "claims": ["a first", "b next"]}})
    ab, bc = lr.zhu_escape_analysis(spec, runs).conclusions
    half = 2 * math.sqrt(20 * 18 ** 2 / 19 / 20)
    assert ab.evidence["interval"] == pytest.approx([20 - half, 20 + half], rel=1e-12)
    assert ab.evidence["seed_spread"] == pytest.approx(18 * math.sqrt(2), rel=1e-12)
    assert ab.agrees_with_paper is None and "seed-to-seed spread" in ab.text
    assert (ab.claim, bc.claim) == ("a first", "b next")
    assert bc.agrees_with_paper is True


def test_a_speed_pair_whose_later_tier_recorded_no_passages_is_not_judged():
    runs = [_escape("a", 0, 50, [10] * 10), _escape("b", 0, 50)]
    spec = SimpleNamespace(paper=PAPER, options={"speed": {"tiers": [["a"], ["b"]]}})
    (c,) = lr.zhu_escape_analysis(spec, runs).conclusions
    assert c.agrees_with_paper is None and "did not record" in c.text


def test_speed_is_testable_when_only_one_side_has_a_single_passage():
    # a: every chain at 5; b: 20, 22, 20, 22 — mean gap 16, interval 16 ± 2·sqrt((4/3)/4)
    # (b's sample variance 4/3 over 4 chains): above 0, an order, not a tie
    ok, text, ev = lr.speed_finding({"a": [5.0] * 4}, {"b": [20.0, 22.0] * 2})
    assert ev["interval"] == pytest.approx([16 - 2 / math.sqrt(3), 16 + 2 / math.sqrt(3)],
                                          rel=1e-12)
    assert ok is True and "untestable" not in text
