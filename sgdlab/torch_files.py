"""Reading a file written by ``torch.save`` (a checkpoint, a weights file, a data file of
tensors) with ``weights_only=True``: every way it can be unreadable — missing, empty,
truncated, changed on disk since written (a CRC-32 check of each archive entry), another
format, holding pickled objects other than tensors and plain data — is one error naming the
file and the reason."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import UserError


def read_torch_file(path: Path, map_location: Any = "cpu", *, mmap: bool = False,
                    what: str = "checkpoint", error: type[Exception] = UserError) -> Any:
    """``torch.load(path, weights_only=True)``; a missing, damaged or unreadable file is one
    ``error`` (a :class:`UserError`; a data file's is a :class:`DataError`) naming it (as
    ``what``) and what is wrong with it."""
    if not path.exists():
        raise error(f"no {what} at {str(path)!r}")
    damaged = _failed_checksum(path)
    if damaged is not None:
        raise error(f"cannot read {what} {str(path)!r}: the file is corrupt (its entry "
                    f"{damaged!r} fails its CRC-32 check: changed on disk since written)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - each failure is named below, one line each
        raise error(f"cannot read {what} {str(path)!r}: {_load_failure(path, e, what)}"
                    ) from None


def _failed_checksum(path: Path) -> str | None:
    """The first entry of torch's zip archive ``path`` whose bytes do not match the CRC-32
    recorded for it, or None (also for a file that is not a readable zip archive: torch.load
    names what is wrong with that). Entries written without a checksum (CRC 0) are skipped."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None
    with archive:
        for entry in archive.infolist():
            if entry.CRC == 0:
                continue
            try:
                with archive.open(entry) as f:    # reading to the end checks the CRC-32
                    while f.read(1 << 20):
                        pass
            except zipfile.BadZipFile:
                return entry.filename.split("/", 1)[-1]
            except (OSError, EOFError, ValueError, NotImplementedError):
                return None
    return None


def _has_torch_pickle(path: Path) -> bool:
    """Whether zip archive ``path`` holds the ``<folder>/data.pkl`` torch.save writes."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.count("/") == 1 and n.endswith("/data.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return True     # unreadable as a zip: the other messages name that


def _load_failure(path: Path, e: Exception, what: str) -> str:
    size = path.stat().st_size if path.exists() else 0
    text = str(e)
    kind = "checkpoint file" if what == "checkpoint" else what
    if size == 0:
        return "the file is empty"
    archive = zipfile.is_zipfile(path)
    if isinstance(e, (KeyError, IndexError)) and not archive:
        # the unpickler read a byte of text as an opcode it does not know (KeyError), or as
        # one that pops an empty stack (IndexError: "a: 1" of a YAML file)
        return f"not a {kind} (neither a torch archive nor a pickle: another format)"
    if archive and not _has_torch_pickle(path):
        # torch's reader says "[enforce fail at inline_container.cc] ..."
        return ("a zip archive but not a torch one (no data.pkl in it: another format, e.g. "
                "numpy's .npz; write it with torch.save)")
    if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in text:
        if "GLOBAL" in text or "global" in text:
            wrote = ("only checkpoints sgdlab wrote can be read" if what == "checkpoint"
                     else "save its tensors, not the objects that hold them")
            return ("it holds pickled Python objects other than tensors and plain data, which "
                    f"sgdlab does not load ({wrote})")
        return f"not a {kind} (corrupt, or another format)"
    if isinstance(e, (EOFError, OSError)) or "zip archive" in text or "central directory" in text:
        return f"the file is truncated or corrupt ({size} bytes; not a complete torch archive)"
    return f"{type(e).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"
