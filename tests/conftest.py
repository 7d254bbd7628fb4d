"""Fixtures shared across test folders. Nothing here is autouse: a module opts in, e.g.

    pytestmark = pytest.mark.usefixtures("one_thread")
"""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test with one torch thread and restore the previous count afterwards (tiny
    tensors: threads only add overhead, and contention on a shared CI box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread_runs(monkeypatch):
    """Runs started by the lab (sweeps, worker processes) take one torch thread each
    (``SGDLAB_THREADS=1``): tiny models on busy cores thrash with more."""
    monkeypatch.setenv("SGDLAB_THREADS", "1")


@pytest.fixture
def close_figures():
    """Close every pyplot figure after the test: the analyses draw figures that a test of
    their numbers never looks at, and open ones pile up over a session."""
    yield
    import matplotlib.pyplot as plt
    plt.close("all")
