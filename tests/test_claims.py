"""Folder claims and locks: a lock another live process holds is refused with its note, and
the kernel drops it when that process ends, a SIGKILL included."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from sgdlab.claims import FolderBusy, hold_lock

HOLDER = textwrap.dedent("""
    import sys, time
    from sgdlab.claims import hold_lock
    fd = hold_lock(sys.argv[1], "held by the child")
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_lock_held_by_a_live_process_is_refused_and_freed_by_its_death(tmp_path):
    path = tmp_path / "x.lock"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusy) as busy:
            hold_lock(path, "mine")
        assert busy.value.holder == "held by the child"
    finally:
        child.kill()
        child.wait()
    fd = hold_lock(path, "mine")                 # the SIGKILLed holder left nothing behind
    try:
        assert path.read_text() == "mine"
        with pytest.raises(FolderBusy):          # a second descriptor, even in this process
            hold_lock(path, "again")
    finally:
        os.close(fd)
    os.close(hold_lock(path, "after close"))
