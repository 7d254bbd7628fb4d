"""Fixtures shared across test folders, and the torch threads of pytest-xdist's workers.
No fixture here is autouse: a module opts in, e.g.

    pytestmark = pytest.mark.usefixtures("one_thread")
"""
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist the workers share the cores: each one's torch takes its share (tiny
    tensors on oversubscribed cores thrash). The data cache (``$SGDLAB_CACHE``) is a folder of
    the session's, inherited by the commands the tests start: the suite leaves the user's
    ``~/.cache/sgdlab`` alone, and no test finds another session's entries."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))
    config._sgdlab_cache = (os.environ.get("SGDLAB_CACHE"),
                            tempfile.mkdtemp(prefix="sgdlab-cache-"))
    os.environ["SGDLAB_CACHE"] = config._sgdlab_cache[1]


def pytest_unconfigure(config):
    saved = getattr(config, "_sgdlab_cache", None)
    if saved is None:
        return
    before, folder = saved
    shutil.rmtree(folder, ignore_errors=True)
    if before is None:
        os.environ.pop("SGDLAB_CACHE", None)
    else:
        os.environ["SGDLAB_CACHE"] = before


@pytest.fixture
def one_thread():
    """Run the test with one torch thread and restore the previous count afterwards (tiny
    tensors: threads only add overhead, and contention on a shared CI box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def sigint_interrupts():
    """Python's own SIGINT handler for the test (raise ``KeyboardInterrupt``), restored after:
    a process started in the background by a non-interactive shell (a CI job, ``nohup ... &``)
    inherits SIGINT ignored, where a raised SIGINT does nothing and sgdlab rightly leaves the
    ignoring alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def one_thread_runs(monkeypatch):
    """Runs started by the lab (sweeps, worker processes) take one torch thread each
    (``SGDLAB_THREADS=1``): tiny models on busy cores thrash with more."""
    monkeypatch.setenv("SGDLAB_THREADS", "1")


@pytest.fixture
def forward_mode_unloaded(monkeypatch):
    """As before a process's first forward-mode pass (``torch.func.jvp``, ``jacfwd``): torch's
    jvp decompositions not imported, so the next such pass imports them again (a test that
    runs after another one's finds them imported); put back as they were afterwards."""
    import sys

    import torch._decomp

    monkeypatch.delitem(sys.modules, "torch._decomp.decompositions_for_jvp", raising=False)
    monkeypatch.delattr(torch._decomp, "decompositions_for_jvp", raising=False)


@pytest.fixture
def tmp_store(tmp_path, monkeypatch) -> Path:
    """``$SGDLAB_STORE`` in the test's folder: commands that record their runs in the default
    run store (``sgdlab train``, ``sgdlab parle``) write there, not into the current folder."""
    path = tmp_path / "default-store" / "runs.sqlite"
    monkeypatch.setenv("SGDLAB_STORE", str(path))
    return path


@pytest.fixture
def close_figures():
    """Close every pyplot figure after the test: the analyses draw figures that a test of
    their numbers never looks at, and open ones pile up over a session."""
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


@pytest.fixture(scope="session")
def papers_folder() -> Path | None:
    """The folder of the papers' plain texts: ``$SGDLAB_PAPERS``, else ``../shared/papers``
    beside the repository; None when neither holds a ``.txt`` file (tests that quote the papers
    are skipped then). A ``$SGDLAB_PAPERS`` without a text fails those tests instead."""
    from sgdlab.testing import paper_texts_folder

    try:
        return paper_texts_folder(os.environ.get("SGDLAB_PAPERS"),
                                  Path(__file__).resolve().parents[1].parent / "shared" / "papers")
    except ValueError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def paper_lines_of(papers_folder):
    """``paper_lines_of(FILE)``: the lines of paper text FILE (line n is item n - 1); the test
    is skipped when the text is not at hand."""
    def read(name: str) -> list[str]:
        if papers_folder is None or not (papers_folder / name).is_file():
            pytest.skip(f"{name} not at hand (set SGDLAB_PAPERS to the folder of the paper texts)")
        return (papers_folder / name).read_text(errors="ignore").splitlines()
    return read
