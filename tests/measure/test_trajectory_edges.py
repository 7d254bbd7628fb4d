"""Thesis §6.3.3 trajectory tests at their edges, against numbers worked out by hand: Fisher's
exact sum at its last term count, the default number of autocorrelation lags, and the
low-frequency verdict on a few coordinates with excess among many without."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from sgdlab.measure.trajectory import (_fisher_p_value, increment_autocorrelation,
                                       iterate_autocorrelation, low_frequency_test)


def test_fisher_p_value_with_twelve_terms_is_the_exact_sum():
    # g = 0.08: ⌊1/g⌋ = 12 terms, the most the alternating sum takes; in rationals it is 0.381
    # at m = 60 (the Bonferroni bound, 60 · 0.92^59 = 0.438, is for more terms only)
    m, g = 60, Fraction(2, 25)
    exact = sum((-1) ** (j - 1) * math.comb(m, j) * (1 - j * g) ** (m - 1) for j in range(1, 13))
    assert _fisher_p_value(0.08, m) == pytest.approx(float(exact), rel=1e-12)
    assert float(exact) == pytest.approx(0.380957, abs=1e-6)


def test_the_default_lags_are_ten_log10_n():
    # n = 100 increments (101 snapshots): 10 · log10(100) = 20 lags; n = 1000: 30
    rng = np.random.default_rng(0)
    for n, lags in ((100, 20), (1000, 30)):
        x = np.cumsum(rng.standard_normal((n + 1, 2)), 0)
        assert increment_autocorrelation(x).lags.tolist() == list(range(lags + 1))
        assert iterate_autocorrelation(x[1:]).lags.tolist() == list(range(lags + 1))


def test_excess_in_a_few_coordinates_is_no_excess_of_the_mean_spectrum():
    # n = 41 increments: m = 20 ordinates, the lowest K = 2. Every coordinate has a cosine at
    # ordinate 15 (power P); 3 of 20 also one at ordinate 1 of power 2P/3, so their
    # R = (2P/3 / 2) / (P / 18) = 6 and the others' R = 0: mean R = 18/20 = 0.9 < 1. Three
    # coordinates with p < 0.01 of 20 are significant (binomial tail 0.001), yet the mean
    # spectrum has no low-frequency excess.
    from scipy import stats

    n = 41
    k = np.arange(n)
    base = np.cos(2 * np.pi * 15 * k / n)
    low = math.sqrt(2 / 3) * np.cos(2 * np.pi * k / n)
    inc = np.stack([base + low if i < 3 else base for i in range(20)], 1)
    x = np.vstack([np.zeros((1, 20)), np.cumsum(inc, 0)])
    t = low_frequency_test(x, fraction=0.1)
    assert t.num_low == 2
    np.testing.assert_allclose(t.ratios, [6.0] * 3 + [0.0] * 17, rtol=1e-12, atol=1e-12)
    assert t.mean_ratio == pytest.approx(0.9, rel=1e-12)
    np.testing.assert_allclose(t.p_values[:3], stats.f.sf(6.0, 4, 36), rtol=1e-10)
    tail = 1 - sum(math.comb(20, i) * 0.01**i * 0.99 ** (20 - i) for i in range(3))
    assert t.fraction_significant == 3 / 20
    assert t.combined_p_value == pytest.approx(tail, rel=1e-9) and tail < 0.01
    assert not t.low_frequency_excess
