"""What the docs show as Python is Python: a ```python block of README.md or docs/ parses
(README's and GUIDE's run too, tests/test_readme.py and tests/test_guide.py); a signature
written with ``|`` alternatives or annotated arguments is marked ```text."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sgdlab.testing import fenced_blocks

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each ```python block of ``path``."""
    return [(b.line, b.code) for b in fenced_blocks(path.read_text(), "python", "py")]


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_python_block_of_the_docs_parses(path):
    # ARCHITECTURE.md's signatures (`data: Dataset` in a call) failed with a SyntaxError when
    # copied
    for line, text in python_blocks(path):
        try:
            ast.parse(text)
        except SyntaxError as e:
            pytest.fail(f"{path.relative_to(ROOT)}:{line}: a python block that is no Python "
                        f"({e.msg}, its line {e.lineno}): mark a signature ```text")


def test_the_blocks_checked_are_found():
    # the pattern finds the blocks it checks (a document with none would pass unread)
    assert len(python_blocks(ROOT / "README.md")) >= 4
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert "```text\nresult = train(model, loss_fn, data: Dataset" in text
