"""FFT and autocorrelation panels of a weight trajectory's increments (thesis §6.3.3).

Reads the results of :func:`sgdlab.measure.trajectory.increment_spectrum` and
:func:`~sgdlab.measure.trajectory.increment_autocorrelation` (computed once from the recorded
snapshots); recomputes nothing.
"""
from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["trajectory_figure"]


def trajectory_figure(spectrum: Any, autocorr: Any, *, test: Any = None,
                      title: str | None = None):
    """Left: mean ± std over coordinates of |FFT(x_{k+1} − x_k)| against frequency (cycles per
    snapshot); right: mean ± std autocorrelation of the increments with the 99% white-noise
    band ±2.576/√n. ``test`` (a :class:`~sgdlab.measure.trajectory.PeriodicityTest`) adds its
    verdict to the title."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.0, 3.8))
    f, m, s = (np.asarray(spectrum.freqs), np.asarray(spectrum.mean), np.asarray(spectrum.std))
    a1.plot(f[1:], m[1:], color="tab:blue", lw=1.0, label="mean over coordinates")
    a1.fill_between(f[1:], (m - s)[1:], (m + s)[1:], color="tab:blue", alpha=0.25, lw=0,
                    label="± std over coordinates")
    a1.legend(fontsize=7)
    a1.set_xlabel("frequency (cycles / snapshot)")
    a1.set_ylabel("|FFT(Δx)| / √n")
    a1.set_title(f"increment spectrum ({spectrum.num_coords} coordinates, n = {spectrum.n})",
                 fontsize=9)
    lags, am, asd = (np.asarray(autocorr.lags), np.asarray(autocorr.mean),
                     np.asarray(autocorr.std))
    a2.bar(lags[1:], am[1:], color="tab:green", width=0.6, label="mean over coordinates")
    a2.errorbar(lags[1:], am[1:], yerr=asd[1:], fmt="none", ecolor="k", lw=0.6,
                label="± std over coordinates")
    a2.axhspan(-autocorr.band, autocorr.band, color="tab:gray", alpha=0.25, lw=0,
               label="99% band")
    a2.axhline(0, color="k", lw=0.5)
    a2.set_xlabel("lag")
    a2.set_ylabel("autocorrelation of Δx")
    a2.legend(fontsize=7)
    sup = title or ""
    if test is not None:
        verdict = "periodic drift" if test.periodic else "consistent with white noise"
        sup = (f"{sup}  " if sup else "") + (
            f"Fisher g test: {verdict} ({100 * test.fraction_significant:.1f}% coords at "
            f"p<{test.level}, combined p={test.combined_p_value:.2g}, "
            f"peak f={test.dominant_frequency:.3g})")
    if sup:
        fig.suptitle(sup, fontsize=9)
    fig.tight_layout()
    return fig
