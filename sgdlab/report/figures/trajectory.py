"""FFT and autocorrelation panels of a weight trajectory's increments (thesis §6.3.3).

Reads the results of :func:`sgdlab.measure.trajectory.increment_spectrum` and
:func:`~sgdlab.measure.trajectory.increment_autocorrelation` (computed once from the recorded
snapshots); recomputes nothing.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sgdlab.report.figures.charts import curves, grouped_bars, panels

__all__ = ["trajectory_figure"]


def trajectory_figure(spectrum: Any, autocorr: Any, *, test: Any = None,
                      title: str | None = None):
    """Left: mean ± std over coordinates of |FFT(x_{k+1} − x_k)| against frequency (cycles per
    snapshot); right: mean ± std autocorrelation of the increments with the 99% white-noise
    band ±2.576/√n. ``test`` (a :class:`~sgdlab.measure.trajectory.PeriodicityTest`) adds its
    verdict to the title."""
    fig, (a1, a2) = panels(2, width=5.0, height=3.8)
    f, m, s = (np.asarray(spectrum.freqs), np.asarray(spectrum.mean), np.asarray(spectrum.std))
    curves({"mean ± std over coordinates": (f[1:], m[1:], s[1:])},
           xlabel="frequency (cycles / snapshot)", ylabel="|FFT(Δx)| / √n",
           title=f"increment spectrum ({spectrum.num_coords} coordinates, n = {spectrum.n})",
           ax=a1, styles={"mean ± std over coordinates": {"color": "tab:blue", "lw": 1.0}})
    lags, am, asd = (np.asarray(autocorr.lags), np.asarray(autocorr.mean),
                     np.asarray(autocorr.std))
    grouped_bars(lags[1:], {"mean ± std over coordinates": (am[1:], asd[1:])},
                 ylabel="autocorrelation of Δx", ax=a2, colors=["tab:green"] * (len(lags) - 1),
                 numeric=True)
    a2.axhspan(-autocorr.band, autocorr.band, color="tab:gray", alpha=0.25, lw=0,
               label="99% white-noise band")
    a2.axhline(0, color="k", lw=0.5)
    # in snapshots, as the spectrum's frequency and the iterates' autocorrelation say it
    a2.set_xlabel("lag (snapshots)")
    a2.set_title("increment autocorrelation", fontsize=10)
    a2.legend(fontsize=7)
    sup = title or ""
    if test is not None:
        verdict = "periodic drift" if test.periodic else "consistent with white noise"
        # a line of its own: after two spaces it read as the title's continuation
        sup = (f"{sup}\n" if sup else "") + (
            f"Fisher g test: {verdict} ({100 * test.fraction_significant:.1f}% coords at "
            f"p<{test.level}, combined p={test.combined_p_value:.2g}, "
            f"peak f={test.dominant_frequency:.3g})")
    if sup:
        fig.suptitle(sup, fontsize=9)
    fig.tight_layout()
    return fig
