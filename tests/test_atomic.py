"""Files written whole or not at all (sgdlab.atomic)."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from sgdlab.atomic import write_whole


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

    from sgdlab.atomic import save_figure

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
