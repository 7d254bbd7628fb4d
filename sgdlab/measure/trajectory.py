"""Spectra of a weight trajectory (Chaudhari's thesis §6.3.3): is SGD's walk Brownian?

Input: snapshots x_0, ..., x_{T−1} of (a subset of) the weights, an array (T, d) taken every k
steps or every epoch (``sgdlab.store.trajectory``). Everything is computed on the increments
Δ_k = x_{k+1} − x_k, one series of length n = T − 1 per coordinate:

- :func:`increment_spectrum` — |FFT(Δ)| per coordinate, mean ± std over coordinates. White noise
  (the increments of Brownian motion) has a flat spectrum; a periodic drift shows as a peak.
- :func:`increment_autocorrelation` — sample autocorrelation of Δ per coordinate, mean ± std over
  coordinates, with the 99% band ±2.576/√n within which a white-noise autocorrelation at lag ≥ 1
  falls with probability 0.99 (Bartlett's large-n approximation).
- :func:`fisher_g_test` / :func:`periodicity_test` — Fisher's (1929) g test of a white-noise null
  against a hidden periodicity: g = max_k I(f_k) / Σ_k I(f_k) over the periodogram ordinates at
  the Fourier frequencies 0 < f_k < 1/2, with the exact null distribution
  P(g > x) = Σ_{j=1}^{⌊1/x⌋} (−1)^{j−1} C(m, j) (1 − j x)^{m−1}, per coordinate, then combined
  over coordinates.
- :func:`low_frequency_test` — the thesis' reading of Fig. 6.3a ("the FFT ... would be flat if
  this were so. Instead, we see low-frequency modes"): the mean periodogram of the lowest
  fraction of Fourier frequencies over that of the rest; under Gaussian white noise the
  ordinates are i.i.d. exponential, so the ratio is F(2K, 2(m − K))-distributed per coordinate.

Fig. 6.3b of the thesis is the autocorrelation of the weights x_k themselves (the authors' code
computes it on the iterates), compared with "the AC for Brownian motion which decays to zero
very quickly and stays within the red confidence bands". That comparison holds for white noise
(Brownian *increments*), not for a Brownian path, whose sample autocorrelation stays near one;
both are computed here (:func:`iterate_autocorrelation`, :func:`increment_autocorrelation`)
and :func:`brownian_reference` simulates the Brownian path for the comparison.

The thesis discards the first 10³ of 10⁵ epochs ("burnin") before the analysis: every function
takes the snapshots after :func:`discard_burnin`.

Frequencies are in cycles per snapshot interval (0 … 0.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sgdlab.errors import (RUN_SEED_RULE, checked_int_argument, checked_keywords, finite_number,
                           int_at_least, is_seed, plain_float, plain_int)

__all__ = [
    "CONFIDENCE_Z_99",
    "Autocorrelation",
    "IncrementSpectrum",
    "LowFrequencyTest",
    "PeriodicityTest",
    "brownian_reference",
    "discard_burnin",
    "fisher_g_test",
    "increment_autocorrelation",
    "increment_spectrum",
    "increments",
    "iterate_autocorrelation",
    "low_frequency_test",
    "periodicity_test",
]

CONFIDENCE_Z_99 = 2.5758293035489004  # two-sided 99% standard-normal quantile


def _as_2d(snapshots) -> np.ndarray:
    a = np.asarray(snapshots, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"snapshots must be (T,) or (T, d), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("snapshots contain NaN or inf")
    return a


def check_burnin(burnin: object) -> int:
    """``burnin`` as an int when it is a number of snapshots >= 0, else a ValueError (the
    check of :func:`discard_burnin` that needs no snapshots)."""
    burnin = plain_int(burnin)      # np.int64 is a count; True is not (it discarded 1)
    if not int_at_least(burnin, 0):
        raise ValueError(f"Invalid burnin={burnin!r} (a number of snapshots >= 0)")
    return burnin


def check_max_lag(max_lag: object) -> int | None:
    """``max_lag`` as an int >= 1, or None (the default), else a ValueError: the check of the
    autocorrelations' ``max_lag`` that needs no snapshots (2.5 failed as a slice bound)."""
    return checked_int_argument("max_lag", max_lag, 1, ", or None", optional=True)


def check_level(level: object, name: str = "level") -> None:
    """A ValueError unless ``level`` (a test's significance level, or a ``fraction``) lies in
    (0, 1); numpy's floats too (np.float32 is no Python float)."""
    level = plain_float(level)
    if not (finite_number(level) and 0 < level < 1):
        raise ValueError(f"Invalid {name}={level!r} (must be in (0, 1))")


@checked_keywords()
def discard_burnin(snapshots, burnin: int) -> np.ndarray:
    """The snapshots after the first ``burnin`` (thesis §6.3.3: "We discard the first 10³
    epochs of training ("burnin") to ensure that SGD has reached the steady-state")."""
    a = _as_2d(snapshots)
    burnin = check_burnin(burnin)
    if burnin > len(a) - 2:
        raise ValueError(f"burnin={burnin} leaves fewer than 2 of the {len(a)} snapshots")
    return a[burnin:]


def increments(snapshots) -> np.ndarray:
    """Δ_k = x_{k+1} − x_k, shape (T − 1, d), float64."""
    a = _as_2d(snapshots)
    if len(a) < 2:
        raise ValueError(f"need at least 2 snapshots, got {len(a)}")
    return np.diff(a, axis=0)


def _centered(delta: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Increments minus their mean (a constant drift is not a periodicity); coordinates that
    never move, or move by a constant step (their centred increments round-off only), are
    dropped, each judged against its own steps, whatever its units. Returns (centered series,
    kept-coordinate mask)."""
    c = delta - delta.mean(axis=0, keepdims=True)
    sd = c.std(axis=0)
    keep = (sd > 0) & (sd > 1e-12 * np.abs(delta).max(axis=0, initial=0.0))
    c = c[:, keep]
    if standardize:
        c = c / sd[keep]
    return c, keep


@dataclass
class IncrementSpectrum:
    """|FFT| of the increments: ``freqs`` (cycles per snapshot interval), mean and std over
    coordinates of |Σ_k Δ_k e^{−2πi f k}| / √n (so white noise of variance σ² has mean level
    ≈ σ √(π)/2 ≈ 0.886 σ; σ = 1 with ``standardize``)."""

    freqs: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    num_coords: int
    n: int


@checked_keywords()
def increment_spectrum(snapshots, *, standardize: bool = True) -> IncrementSpectrum:
    """Amplitude spectrum of x_{k+1} − x_k per coordinate, mean ± std over coordinates.

    Each coordinate's increments are centred (and scaled to unit variance with
    ``standardize`` so that coordinates of different scales weigh the same); the zero
    frequency is therefore ≈ 0 and is kept only for completeness.
    """
    c, _ = _centered(increments(snapshots), standardize)
    n = len(c)
    if c.shape[1] == 0:
        raise ValueError("no coordinate moves along the trajectory")
    amp = np.abs(np.fft.rfft(c, axis=0)) / math.sqrt(n)
    return IncrementSpectrum(np.fft.rfftfreq(n, d=1.0), amp.mean(1), amp.std(1), c.shape[1], n)


@dataclass
class Autocorrelation:
    """Sample autocorrelation of the increments at lags 0..max_lag (mean ± std over coordinates)
    and the 99% white-noise band ±``band`` = ±2.576/√n."""

    lags: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    band: float
    n: int
    fraction_outside: float  # share of (coordinate, lag ≥ 1) values outside the band

    @property
    def outside(self) -> np.ndarray:
        """Lags ≥ 1 whose mean autocorrelation lies outside the band."""
        return self.lags[1:][np.abs(self.mean[1:]) > self.band]


def _autocorrelation(c: np.ndarray, max_lag: int | None, min_lag: int) -> Autocorrelation:
    """Sample ACF of the centred columns of ``c`` (n, d) at lags 0..max_lag; the share of
    values outside the 99% white-noise band is taken over lags >= ``min_lag``."""
    n = len(c)
    if c.shape[1] == 0:
        raise ValueError("no coordinate moves along the trajectory")
    max_lag = check_max_lag(max_lag)
    if max_lag is None:
        max_lag = min(n - 1, max(1, int(10 * math.log10(n))))
    if not 1 <= max_lag < n:
        raise ValueError(f"Invalid max_lag={max_lag}: need 1 <= max_lag < n = {n}")
    if not 1 <= min_lag <= max_lag:
        raise ValueError(f"Invalid min_lag={min_lag}: need 1 <= min_lag <= max_lag = {max_lag}")
    # autocovariances of all coordinates at once through the FFT (zero-padded: no wrap-around)
    f = np.fft.rfft(c, n=2 * n, axis=0)
    acov = np.fft.irfft(f * np.conj(f), axis=0)[: max_lag + 1]
    rho = acov / acov[:1]
    band = CONFIDENCE_Z_99 / math.sqrt(n)
    return Autocorrelation(np.arange(max_lag + 1), rho.mean(1), rho.std(1), band, n,
                           float(np.mean(np.abs(rho[min_lag:]) > band)))


@checked_keywords()
def increment_autocorrelation(snapshots, max_lag: int | None = None, *,
                              min_lag: int = 1) -> Autocorrelation:
    """ρ(ℓ) = Σ_k c_k c_{k+ℓ} / Σ_k c_k² of the centred increments c, per coordinate.

    ``max_lag`` defaults to min(n − 1, 10·log10(n)) lags (the usual choice). The band
    assumes white noise: under that null each ρ(ℓ), ℓ ≥ 1, is ≈ N(0, 1/n).
    """
    c, _ = _centered(increments(snapshots), standardize=False)
    return _autocorrelation(c, max_lag, min_lag)


@checked_keywords()
def iterate_autocorrelation(snapshots, max_lag: int | None = None, *,
                            min_lag: int = 1) -> Autocorrelation:
    """The same sample ACF computed on the iterates x_k themselves (thesis Fig. 6.3b; the
    authors' code), centred per coordinate. ``fraction_outside`` counts lags >= ``min_lag``
    (the thesis' claim is about "very large lags"). The ±2.576/√n band is the white-noise band
    the thesis draws; a Brownian path lies far outside it too (:func:`brownian_reference`)."""
    a = _as_2d(snapshots)
    c = a - a.mean(0, keepdims=True)
    keep = c.std(0) > 1e-12 * max(1.0, float(np.abs(a).max(initial=0.0)))
    return _autocorrelation(c[:, keep], max_lag, min_lag)


@checked_keywords()
def brownian_reference(n: int, num_coords: int, *, seed: int = 0) -> np.ndarray:
    """Snapshots (n, num_coords) of independent standard Brownian paths (cumulative sums of
    i.i.d. N(0, 1) increments): the process the thesis compares SGD's trajectory with."""
    n, num_coords, seed = plain_int(n), plain_int(num_coords), plain_int(seed)
    # True was 1 coordinate and a bool or float n numpy's "an integer is required"
    if not (int_at_least(n, 2) and int_at_least(num_coords, 1)):
        raise ValueError(f"need ints n >= 2 and num_coords >= 1, got {n!r}, {num_coords!r}")
    if not is_seed(seed):
        raise ValueError(f"Invalid seed={seed!r} ({RUN_SEED_RULE})")
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((n, num_coords)), axis=0)


def _fisher_p_value(g: float, m: int, max_terms: int = 12) -> float:
    """P(G > g) under Gaussian white noise for m periodogram ordinates (Fisher 1929).

    The alternating sum loses accuracy when many terms are needed (small g, p near 1); there
    the Bonferroni bound m (1 − g)^{m−1} (the first term, an upper bound) is used instead.
    """
    if g <= 0:
        return 1.0
    if g >= 1:
        return 0.0
    terms = int(math.floor(1 / g))
    if terms > max_terms:
        return min(1.0, m * (1 - g) ** (m - 1))
    p = sum((-1) ** (j - 1) * math.comb(m, j) * (1 - j * g) ** (m - 1)
            for j in range(1, min(terms, m) + 1))
    return float(min(1.0, max(0.0, p)))


@checked_keywords()
def fisher_g_test(series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fisher's g for each column of ``series`` (n, d) (already the series to test, e.g.
    increments). Returns (g, p_value, peak frequency in cycles per sample), each shape (d,).

    Uses the m = ⌊(n − 1)/2⌋ Fourier frequencies strictly between 0 and 1/2.
    """
    s = _as_2d(series)
    n = len(s)
    m = (n - 1) // 2
    if m < 2:
        raise ValueError(f"series of length {n} is too short for Fisher's test (need n >= 5)")
    s = s - s.mean(0, keepdims=True)
    per = np.abs(np.fft.rfft(s, axis=0)[1 : m + 1]) ** 2
    tot = per.sum(0)
    g = np.where(tot > 0, per.max(0) / np.where(tot > 0, tot, 1.0), 0.0)
    p = np.array([_fisher_p_value(float(x), m) for x in g])
    freq = (per.argmax(0) + 1) / n
    return g, p, freq


@dataclass
class PeriodicityTest:
    """White noise (Brownian increments) vs a periodic drift, from Fisher's g per coordinate.

    ``combined_p_value`` is P(Binomial(d, level) ≥ number of coordinates with p < level): the
    chance of that many per-coordinate rejections if every coordinate were white noise and the
    coordinates were independent. ``periodic`` is ``combined_p_value < level``.
    ``dominant_frequency`` is the peak of the coordinate-averaged standardized periodogram.
    """

    g: np.ndarray
    p_values: np.ndarray
    fraction_significant: float
    combined_p_value: float
    dominant_frequency: float
    level: float
    periodic: bool


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) ≥ k), summed in log space."""
    if k <= 0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
    top = max(logs)
    return float(min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs)))


def _test_increments(snapshots, level: float) -> np.ndarray:
    """The standardised increments of the coordinates that move, for the spectral tests."""
    check_level(level)
    c, _ = _centered(increments(snapshots), standardize=True)
    if c.shape[1] == 0:
        raise ValueError("no coordinate moves along the trajectory")
    return c


@checked_keywords()
def periodicity_test(snapshots, *, level: float = 0.01) -> PeriodicityTest:
    """Test the increments x_{k+1} − x_k of every coordinate for a hidden periodicity."""
    c = _test_increments(snapshots, level)
    g, p, _ = fisher_g_test(c)
    n = len(c)
    m = (n - 1) // 2
    per = (np.abs(np.fft.rfft(c, axis=0)[1 : m + 1]) ** 2).mean(1)
    k = int(np.sum(p < level))
    combined = _binomial_tail(k, len(p), level)
    return PeriodicityTest(g, p, k / len(p), combined, float((per.argmax() + 1) / n), level,
                           combined < level)


@dataclass
class LowFrequencyTest:
    """White noise (a flat spectrum of the increments) vs excess power at low frequencies.

    For each coordinate, R = mean of the lowest K periodogram ordinates / mean of the other
    m − K (Fourier frequencies 0 < f_k < 1/2, K = max(1, round(fraction · m))); ``p_values``
    are P(F(2K, 2(m − K)) ≥ R). ``combined_p_value`` is the binomial tail of the number of
    coordinates with p < level, as in :class:`PeriodicityTest`; ``mean_ratio`` is R averaged over
    coordinates (≈ 1 for white noise; < 1 for a mean-reverting walk, whose increments cancel
    over long times).
    """

    ratios: np.ndarray
    p_values: np.ndarray
    mean_ratio: float
    fraction_significant: float
    combined_p_value: float
    num_low: int
    level: float
    low_frequency_excess: bool


@checked_keywords()
def low_frequency_test(snapshots, *, fraction: float = 0.1, level: float = 0.01
                       ) -> LowFrequencyTest:
    """Test the increments x_{k+1} − x_k of every coordinate for excess low-frequency power
    (the "low-frequency modes" of thesis Remark 6.41) against a flat white-noise spectrum."""
    from scipy import stats

    check_level(fraction, "fraction")
    c = _test_increments(snapshots, level)
    n = len(c)
    m = (n - 1) // 2
    k = max(1, int(round(fraction * m)))
    if m - k < 1:
        raise ValueError(f"a trajectory of {n + 1} snapshots is too short for the test")
    per = np.abs(np.fft.rfft(c, axis=0)[1 : m + 1]) ** 2
    r = per[:k].mean(0) / np.maximum(per[k:].mean(0), 1e-300)
    p = stats.f.sf(r, 2 * k, 2 * (m - k))
    sig = int(np.sum(p < level))
    combined = _binomial_tail(sig, len(p), level)
    return LowFrequencyTest(r, p, float(r.mean()), sig / len(p), combined, k, level,
                            combined < level and float(r.mean()) > 1)
