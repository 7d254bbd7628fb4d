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
