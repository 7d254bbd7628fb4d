"""Thesis §6.3.3 pieces of :mod:`sgdlab.measure.trajectory`: burn-in, the low-frequency test of
a flat increment spectrum (exact F null), and the autocorrelation of the iterates vs that of a
Brownian path."""
from __future__ import annotations

import numpy as np
import pytest

from sgdlab.measure.trajectory import (brownian_reference, discard_burnin,
                                       iterate_autocorrelation, low_frequency_test)

N, D = 1001, 200


def _ar1_increments(phi: float, seed: int = 0) -> np.ndarray:
    """Snapshots whose increments are AR(1) with coefficient phi (red noise for phi > 0)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((N - 1, D))
    d = np.empty_like(e)
    d[0] = e[0]
    for k in range(1, len(e)):
        d[k] = phi * d[k - 1] + e[k]
    return np.vstack([np.zeros((1, D)), np.cumsum(d, 0)])


def _ou(theta: float, seed: int = 0) -> np.ndarray:
    """Mean-reverting positions x_{k+1} = (1 − θ) x_k + ε_k."""
    rng = np.random.default_rng(seed)
    x = np.zeros((N, D))
    for k in range(1, N):
        x[k] = (1 - theta) * x[k - 1] + rng.standard_normal(D)
    return x


def test_burnin_drops_the_first_snapshots():
    a = np.arange(20.0).reshape(10, 2)
    assert np.array_equal(discard_burnin(a, 3), a[3:])
    assert np.array_equal(discard_burnin(a, 0), a)
    for bad in (-1, 9, 2.5):
        with pytest.raises(ValueError, match="burnin"):
            discard_burnin(a, bad)


def test_low_frequency_test_holds_its_level_on_white_noise():
    t = low_frequency_test(brownian_reference(N, 2000, seed=3), fraction=0.1, level=0.05)
    # per-coordinate p-values are exact (F distribution): about 5% below 0.05
    assert abs(t.fraction_significant - 0.05) < 4 * np.sqrt(0.05 * 0.95 / 2000)
    assert abs(t.mean_ratio - 1) < 0.02
    assert not t.low_frequency_excess
    assert t.num_low == round(0.1 * ((N - 2) // 2))


def test_low_frequency_test_finds_red_noise_and_not_mean_reversion():
    red = low_frequency_test(_ar1_increments(0.5), fraction=0.1)
    assert red.low_frequency_excess and red.mean_ratio > 2 and red.combined_p_value < 1e-6
    ou = low_frequency_test(_ou(0.2), fraction=0.1)
    assert ou.mean_ratio < 0.5 and not ou.low_frequency_excess


def test_iterate_acf_of_a_brownian_path_is_far_outside_the_white_noise_band():
    """The thesis compares SGD's iterate ACF with the band of white noise: a Brownian path
    itself is 'significantly correlated at very large lags', white noise is not."""
    lag = N // 10
    bm = iterate_autocorrelation(brownian_reference(N, D, seed=1), max_lag=N // 2, min_lag=lag)
    assert bm.fraction_outside > 0.5 and bm.mean[lag] > 0.3
    white = np.random.default_rng(2).standard_normal((N, D))
    wn = iterate_autocorrelation(white, max_lag=N // 2, min_lag=lag)
    assert wn.fraction_outside < 0.03
    assert wn.band == pytest.approx(2.5758293035489004 / np.sqrt(N))
    # a fast-mean-reverting walk forgets: within the band at large lags
    assert iterate_autocorrelation(_ou(0.5), max_lag=N // 2, min_lag=lag).fraction_outside < 0.03


def test_brownian_reference_is_seeded():
    a, b = brownian_reference(5, 3, seed=7), brownian_reference(5, 3, seed=7)
    assert a.shape == (5, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, brownian_reference(5, 3, seed=8))
    # standard Brownian increments: i.i.d. N(0, 1) (20,000 of them: the sample variance is
    # within 5 standard errors of 1, the lag-1 and cross-coordinate correlations of 0)
    inc = np.diff(brownian_reference(2001, 10, seed=1), axis=0)
    n = inc.size
    assert abs(inc.var() - 1) < 5 * np.sqrt(2 / n) and abs(inc.mean()) < 5 / np.sqrt(n)
    lag1 = (inc[1:] * inc[:-1]).mean()
    cross = (inc[:, 1:] * inc[:, :-1]).mean()
    assert abs(lag1) < 5 / np.sqrt(n) and abs(cross) < 5 / np.sqrt(n)


def test_p_values_are_the_exact_f_and_binomial_tails_of_the_periodogram():
    """Against the definitions written out: the periodogram by explicit cosine and sine sums of
    the increments at f_j = j/n, 0 < j ≤ m = ⌊(n − 1)/2⌋; R = mean of the lowest K ordinates
    over the mean of the other m − K, p = P(F(2K, 2(m − K)) ≥ R), and the combined p-value
    P(Bin(d, level) ≥ #{p < level}). Half the coordinates are red noise, so that number is
    neither 0 nor d."""
    from scipy import stats

    rng = np.random.default_rng(4)
    e = rng.standard_normal((100, 24))
    for k in range(1, len(e)):
        e[k, :12] += 0.6 * e[k - 1, :12]
    x = np.vstack([np.zeros((1, 24)), np.cumsum(e, 0)])
    fraction, level = 0.15, 0.05                   # K = round(7.35) = 7
    t = low_frequency_test(x, fraction=fraction, level=level)
    n, m = len(e), (len(e) - 1) // 2
    k = max(1, round(fraction * m))
    arg = 2 * np.pi * np.outer(np.arange(1, m + 1), np.arange(n)) / n      # (m, n)
    per = (np.cos(arg) @ e) ** 2 + (np.sin(arg) @ e) ** 2
    r = per[:k].mean(0) / per[k:].mean(0)
    p = stats.f.sf(r, 2 * k, 2 * (m - k))
    np.testing.assert_allclose(t.ratios, r, rtol=1e-10)
    np.testing.assert_allclose(t.p_values, p, rtol=1e-8, atol=1e-300)
    sig = int((p < level).sum())
    assert 0 < sig < 24 and t.num_low == k
    assert t.combined_p_value == pytest.approx(stats.binom.sf(sig - 1, 24, level), rel=1e-10)


def test_iterate_and_increment_acfs_are_the_sample_autocorrelation_by_hand():
    """Fig. 6.3b's autocorrelation written out: per coordinate c = x − mean x (iterates) or
    c = Δx − mean Δx (increments), ρ(ℓ) = Σ_{k<n−ℓ} c_k c_{k+ℓ} / Σ_k c_k², the mean and
    standard deviation over the coordinates that move, the 99% band ±z_{0.995}/√n and the
    share of |ρ(ℓ)| beyond it at lags min_lag..max_lag. A coordinate that never moves is left
    out (its ρ is 0/0)."""
    from sgdlab.measure.trajectory import increment_autocorrelation

    k = np.arange(40.0)
    x = np.stack([0.1 * k + 0.5 * (-1) ** k, np.sin(k) + 0.02 * k ** 1.5, np.full(40, 2.0)], 1)

    def by_hand(c, max_lag, min_lag):
        n = len(c)
        rho = np.array([[sum(c[k, j] * c[k + lag, j] for k in range(n - lag))
                         / sum(c[k, j] ** 2 for k in range(n)) for j in range(2)]
                        for lag in range(max_lag + 1)])
        band = 2.5758293035489004 / np.sqrt(n)
        return rho.mean(1), rho.std(1), band, np.mean(np.abs(rho[min_lag:]) > band)

    for acf, c in ((iterate_autocorrelation, x[:, :2] - x[:, :2].mean(0)),
                   (increment_autocorrelation, np.diff(x[:, :2], axis=0)
                    - np.diff(x[:, :2], axis=0).mean(0))):
        got = acf(x, max_lag=12, min_lag=2)
        mean, std, band, outside = by_hand(c, 12, 2)
        np.testing.assert_allclose(got.mean, mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got.std, std, rtol=1e-12, atol=1e-14)
        assert got.band == pytest.approx(band, rel=1e-15) and got.n == len(c)
        assert got.fraction_outside == outside
        assert 0 < outside < 1           # lags on both sides of the band
