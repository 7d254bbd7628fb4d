"""read_torch_file: a file that is not a torch archive is named as another format."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sgdlab.errors import DataError
from sgdlab.torch_files import read_torch_file


@pytest.mark.parametrize("name, write", [
    ("d.yaml", lambda p: p.write_text("a: 1\n")),
    ("d.npz", lambda p: np.savez(p, x_train=np.zeros(3))),
])
def test_a_yaml_or_npz_file_is_named_as_another_format(tmp_path, name, write):
    # torch's messages were "IndexError: pop from empty list" and
    # "RuntimeError: [enforce fail at inline_container.cc:180] ..."
    path = tmp_path / name
    write(path)
    with pytest.raises(DataError) as e:
        read_torch_file(path, what="data file", error=DataError)
    msg = str(e.value)
    assert msg.startswith(f"cannot read data file {str(path)!r}: ") and "another format" in msg
    assert "IndexError" not in msg and "enforce fail" not in msg


def test_a_torch_archive_still_reads(tmp_path):
    torch.save({"x": torch.arange(3.0)}, tmp_path / "d.pt")
    assert torch.equal(read_torch_file(tmp_path / "d.pt")["x"], torch.arange(3.0))
