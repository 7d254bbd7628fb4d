"""Folder claims and locks: a lock another live process holds is refused with its note, and
the kernel drops it when that process ends, a SIGKILL included."""
from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import textwrap

import pytest

from sgdlab.claims import FolderBusy, claim_file, folder_lock, hold_lock
from sgdlab.testing import without_hard_links

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


def _claims(folder):
    """The folder's files: a claim leaves its file and no temporary one beside it."""
    return sorted(p.name for p in folder.iterdir())


def test_a_claim_is_made_once_and_read_whole(tmp_path):
    target = tmp_path / "run.json"
    claim_file(target, "first")
    with pytest.raises(FileExistsError):
        claim_file(target, "second")
    assert target.read_text() == "first" and _claims(tmp_path) == ["run.json"]


@pytest.mark.parametrize("code", [errno.EPERM, errno.ENOTSUP, errno.ENOSYS])
def test_a_file_system_without_hard_links_still_claims_once(tmp_path, monkeypatch, code):
    # FAT says EPERM to link(2): the claim falls back to an exclusive create, which must
    # refuse a second claim, not overwrite the first
    without_hard_links(monkeypatch, code)
    target = tmp_path / "run.json"
    claim_file(target, "first")
    with pytest.raises(FileExistsError):
        claim_file(target, "second")
    assert target.read_text() == "first" and _claims(tmp_path) == ["run.json"]


def test_a_link_that_fails_otherwise_is_raised(tmp_path, monkeypatch):
    def denied(src, dst):
        raise OSError(errno.EACCES, "denied")
    monkeypatch.setattr(os, "link", denied)
    with pytest.raises(PermissionError):
        claim_file(tmp_path / "run.json", "x")
    assert _claims(tmp_path) == []


def _flock_fails(monkeypatch, code: int) -> None:
    def fails(fd, op):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(fcntl, "flock", fails)


def test_a_file_system_without_locks_guards_nothing(tmp_path, monkeypatch):
    """ENOLCK (no locks kept there): nothing is held, None, for both locks."""
    _flock_fails(monkeypatch, errno.ENOLCK)
    assert hold_lock(tmp_path / "lock", "me") is None
    with folder_lock(tmp_path):
        pass


def test_another_flock_error_is_raised(tmp_path, monkeypatch):
    """Any other error of flock(2) is raised, not taken for a file system without locks."""
    code = errno.EBADF
    _flock_fails(monkeypatch, code)
    with pytest.raises(OSError) as e:
        hold_lock(tmp_path / "lock", "me")
    assert e.value.errno == code
    with pytest.raises(OSError) as e:
        with folder_lock(tmp_path):
            pass
    assert e.value.errno == code
