"""Files written whole or not at all (results, tables, pages and figures): through a
temporary file of the write's own in the same folder, then ``os.replace``. A reader finds the
previous file or the new one, never a truncated one; a write that fails (a full disk, an
interrupt) leaves no temporary file; two writers of one file (two sweeps sharing a store end
with the same report) neither write into nor rename each other's temporary files."""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_WRITES = itertools.count()     # numbers this process' temporary files apart


@contextmanager
def replaced_whole(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; it replaces ``path`` when the block
    ends normally and is removed when the block raises."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{next(_WRITES)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if (isinstance(e, OSError) and e.errno is not None and e.filename is not None
                and os.fsdecode(e.filename) == str(tmp)):
            # the temporary file is gone and was never the caller's: name the file written
            # ("cannot write out.json: Is a directory", not "out.json.4127.0.tmp")
            failed = OSError(e.errno, e.strerror, str(path))
            # marked as a write's: "no such file" here is a file system that makes no new
            # entries (/proc, /sys), which the CLI names as a path it cannot write
            failed.written = True
            raise failed from e
        raise


def write_whole(path: str | os.PathLike, text: str) -> Path:
    """``text`` written to ``path`` through :func:`replaced_whole`: a result file that an
    interrupt or a full disk leaves as it was, never truncated. UTF-8, and the line endings
    as ``text`` has them (a page's CRLF lines stay CRLF, none are added)."""
    path = Path(path)
    with replaced_whole(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return path


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """``fig.savefig(path, **kwargs)`` through :func:`replaced_whole`: a process killed while
    a figure is drawn leaves the previous PNG / SVG (or none), never a truncated one. The
    format is ``format=`` or ``path``'s suffix, as matplotlib would read it (the temporary
    file's name has no suffix matplotlib knows)."""
    path = Path(path)
    fmt = kwargs.pop("format", None) or path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"{path}: no suffix that names the figure's format; give format=")
    with replaced_whole(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)
    return path
