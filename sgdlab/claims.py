"""Claiming an output folder: a file created only where none is, and read whole.

Two starts into one free folder at once both find it free when they look; the folder becomes
one start's when its claim file is created, which :func:`claim_file` lets exactly one of them
do (``sgdlab train --out``: ``run.json``; ``sgdlab parle --out``: ``parle.json``).

A folder whose run continues (a resume) is guarded while a process works in it by
:func:`hold_lock`: an advisory ``flock`` the kernel drops when the process ends however it
ends, so a killed holder never leaves a stale lock behind. Light on purpose: it imports
nothing of the numerical stack.

Two writers of one folder that may both go on, one after the other (two reports rebuilt into
one ``--out``), are ordered by :func:`folder_lock`: a blocking ``flock`` on the folder itself,
which leaves no file behind.
"""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FolderBusy", "claim_file", "folder_lock", "hold_lock"]

# what link(2) says on a file system without hard links (FAT, some network file systems)
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
# what flock(2) says where the file system keeps no locks (some network file systems)
_NO_LOCKS = frozenset({errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


def claim_file(target: str | os.PathLike, text: str) -> None:
    """Create file ``target`` holding ``text``, or raise :class:`FileExistsError` when it
    exists. The text is written aside and hard-linked to ``target`` (the link fails when the
    name exists): unlike a file created exclusively and then written, whoever reads it finds
    it whole. Where the file system has no hard links, ``target`` is created with
    ``O_CREAT | O_EXCL`` and then written (a reader may find it empty meanwhile)."""
    target = Path(target)
    if not _link_new(target, text):
        with open(target, "x") as f:    # O_CREAT | O_EXCL
            f.write(text)


def _link_new(target: Path, text: str) -> bool:
    """Write ``text`` aside and hard-link it to ``target``; False where the file system has
    no hard links."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.link(tmp, target)
        return True
    except OSError as e:
        if e.errno in _NO_HARD_LINKS:
            return False
        raise
    finally:
        os.unlink(tmp)


class FolderBusy(Exception):
    """Another live process holds the lock; ``holder`` is the text it wrote there."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def hold_lock(path: str | os.PathLike, text: str) -> int | None:
    """Lock file ``path`` (created if missing) for this process and write ``text`` in it;
    return the descriptor, which holds the lock until it is closed or the process ends. Raise
    :class:`FolderBusy` with the holder's text when another process holds it. None where the
    platform has no ``flock`` (nothing is guarded there)."""
    try:
        import fcntl
    except ImportError:      # not POSIX
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with open(fd, closefd=True) as f:
            raise FolderBusy(f.read()) from None
    except OSError as e:
        os.close(fd)
        if e.errno in _NO_LOCKS:     # a file system without locks: nothing is guarded
            return None
        raise
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, text.encode())
    return fd


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (which must exist) for the block, waiting
    while another process holds it: the writers of one folder take turns, and a killed holder
    releases it. Nothing is held where the platform or the file system has no locks."""
    try:
        import fcntl
    except ImportError:      # not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                raise
        yield
    finally:
        os.close(fd)        # releases the lock
