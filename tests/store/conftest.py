"""Fixtures shared by the store's tests."""
import subprocess
import sys
import textwrap

import pytest

from sgdlab.store import RunStore

# a process that owns a run (and the lease on key "k") and waits to be killed
OWNER = textwrap.dedent("""
    import sys, time
    from sgdlab.store import RunStore
    store = RunStore(sys.argv[1])
    rid, _ = store.claim_key("k", {"run_key": "k"}, experiment="e", env={})
    print(rid, flush=True)
    time.sleep(120)
""")


@pytest.fixture
def owner(tmp_path):
    """(store path, run id, process) of a live process owning run "k" and the lease on "k"."""
    path = tmp_path / "runs.sqlite"
    RunStore(path).close()
    proc = subprocess.Popen([sys.executable, "-c", OWNER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    rid = proc.stdout.readline().strip()
    yield path, rid, proc
    proc.kill()
    proc.wait()
