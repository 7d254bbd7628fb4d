"""Fixtures shared by the experiments' tests."""
import pytest


@pytest.fixture(autouse=True)
def figures_taken_are_closed():
    """The figures a test left open, closed after it: an analysis returns its figures to
    the caller on purpose, and those of the tests that read analyses added up in pyplot
    (matplotlib warns past 20). That the lab's own paths close theirs is tested where they
    save them (the catalogue's smoke runs, test_experiments_framework). Every test here has
    it, so none asks for the root conftest's opt-in ``close_figures``."""
    from sgdlab.report.figures import close_figures, open_figures

    before = open_figures()
    yield
    close_figures(open_figures() - before)


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
