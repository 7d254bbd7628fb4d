"""Rows of text cells printed as aligned columns (what `sgdlab runs` and `sgdlab run --paper`
print as tables)."""
from __future__ import annotations

from collections.abc import Sequence


def aligned(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Each row as one line, its cells padded to their column's widest and two spaces apart,
    without trailing spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths))).rstrip()
            for row in rows]
