"""Fixtures shared by the experiments' tests."""
import pytest


@pytest.fixture
def blank_figures(monkeypatch):
    """The Chaudhari analyses' figures (the spectra's histograms, the trajectory's curves) as
    blank ones, for tests that read the verdicts and tables only: each drew them for ~0.25 s."""
    from matplotlib.figure import Figure

    from sgdlab.report.figures import charts, curvature, trajectory

    for mod, name in ((charts, "histogram"), (charts, "curves"),
                      (curvature, "eigenspectrum_figure"),
                      (curvature, "signed_log_histogram_figure"),
                      (trajectory, "trajectory_figure")):
        monkeypatch.setattr(mod, name, lambda *a, **k: Figure())
