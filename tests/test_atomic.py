"""Files written whole or not at all (sgdlab.atomic)."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from sgdlab.atomic import replaced_whole, save_figure, write_whole


def test_a_write_that_fails_names_the_file_written_not_its_temporary(tmp_path):
    """A folder where the file goes, or a missing folder: the error names the target (it named
    ``target.PID.N.tmp``, a file the user never asked for and that no longer exists)."""
    (tmp_path / "out.json").mkdir()
    for target, code in ((tmp_path / "out.json", errno.EISDIR),
                         (tmp_path / "missing" / "out.json", errno.ENOENT)):
        with pytest.raises(OSError) as failed:
            write_whole(target, "{}")
        assert failed.value.errno == code and Path(failed.value.filename) == target
        assert ".tmp" not in str(failed.value)
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]      # no temporary file left


def test_a_figure_is_written_whole_or_not_at_all(tmp_path):
    """savefig wrote the PNG / SVG in place: a kill while it drew left a truncated image.
    save_figure goes through a temporary file: the previous image stays until the new one is
    whole, in the format the path's suffix names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png, svg = save_figure(fig, tmp_path / "f.png", dpi=50), save_figure(fig, tmp_path / "f.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in svg.read_bytes()[:400]
    before = png.read_bytes()
    real = fig.savefig

    def killed(fname, **kwargs):      # half an image written, then the process is stopped
        Path(fname).write_bytes(before[:100])
        raise KeyboardInterrupt

    fig.savefig = killed
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, png, dpi=50)
    assert png.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.svg"]
    fig.savefig = real
    with pytest.raises(ValueError, match="no suffix"):
        save_figure(fig, tmp_path / "f")
    plt.close(fig)


def test_every_figure_of_the_package_is_saved_through_save_figure():
    import ast

    import sgdlab

    root = Path(sgdlab.__file__).parent
    direct = []
    for f in sorted(root.rglob("*.py")):
        if f.name == "atomic.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("savefig", "print_figure")):
                direct.append(f"{f.relative_to(root)}:{node.lineno}")
    assert direct == []


def test_two_writers_of_one_file_each_write_their_own_temporary_file(tmp_path):
    """Two writes of one file in flight at once (two sweeps ending with the same report): each
    through a temporary file of its own, so each replaces the file whole and neither renames
    the other's; the write that ends last is the file."""
    target = tmp_path / "report.md"
    with replaced_whole(target) as first:
        first.write_text("first\n")
        with replaced_whole(target) as second:
            assert second != first
            second.write_text("second\n")
        assert target.read_text() == "second\n" and first.read_text() == "first\n"
    assert target.read_text() == "first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_write_whole_writes_utf8_and_the_line_endings_given(tmp_path):
    """The bytes on disk are the text's UTF-8 bytes, CRLF kept and no CR added to LF."""
    text = "σ² = 2·lr·T\r\nnext\nlast"
    path = write_whole(tmp_path / "page.md", text)
    assert path.read_bytes() == text.encode("utf-8")


def test_an_interrupted_write_leaves_the_previous_file(tmp_path, monkeypatch):
    """A write stopped half-way (a full disk, Ctrl-C) leaves the file as it was and no
    temporary file."""
    target = tmp_path / "results.json"
    target.write_text("old")
    real = Path.write_text

    def half(self, text, *args, **kwargs):
        real(self, text[:3], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half)
    with pytest.raises(KeyboardInterrupt):
        write_whole(target, "new contents")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_write_whole_never_writes_into_the_file_itself(tmp_path, monkeypatch):
    """Every byte goes to the temporary file, which then replaces the target: a write into the
    target itself is what a reader could find half done."""
    target = tmp_path / "results.json"
    target.write_text("old")
    written, real = [], Path.write_text

    def recording(self, *args, **kwargs):
        written.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", recording)
    write_whole(target, "new")
    assert written and target not in written
    assert target.read_text() == "new"


def test_save_figure_takes_the_format_given_over_the_suffix(tmp_path):
    """format= names the format where the path's suffix does not (a page's ``figure.out``)."""
    from matplotlib.figure import Figure

    fig = Figure()                   # no pyplot: nothing to close, no backend to pick
    fig.add_subplot().plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "figure.out", format="svg")
    assert path == tmp_path / "figure.out" and b"<svg" in path.read_bytes()[:400]
