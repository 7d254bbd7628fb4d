"""Module docstrings as ``--help`` text: the reST markup a terminal would show raw, removed."""
from __future__ import annotations

import re

_ROLE = re.compile(r":(?:mod|func|class|meth|data|attr|obj):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(doc: str) -> str:
    """``x`` -> x, :func:`a.b` -> a.b, :class:`~a.B` -> B, ``::`` at a line end -> ``:``."""
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), doc)
    text = _LITERAL.sub(r"\1", text)
    return re.sub(r"::$", ":", text, flags=re.M)
