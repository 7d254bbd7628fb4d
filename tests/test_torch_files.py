"""read_torch_file: a file that is not a torch archive is named as another format."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from sgdlab.errors import DataError, UserError
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


class Payload:
    """A pickled object of the user's that is neither a tensor nor plain data."""


def test_pickled_objects_other_than_tensors_are_refused_not_run(tmp_path):
    """weights_only=True: a file holding a pickled class instance is refused, naming why (a
    full unpickler would import and build whatever the file names)."""
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(2), "obj": Payload()}, path)
    with pytest.raises(UserError) as e:
        read_torch_file(path)
    assert f"cannot read checkpoint {str(path)!r}: it holds pickled Python objects" in str(e.value)


def _entry_offset(path, suffix):
    """Where the bytes of the archive entry ending in ``suffix`` start (stored, uncompressed)."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
        assert info.compress_type == zipfile.ZIP_STORED and info.CRC != 0
    raw = path.read_bytes()
    # local header: 30 bytes + name + extra (lengths at bytes 26-29)
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    return info.header_offset + 30 + name_len + extra_len


def test_a_byte_changed_on_disk_is_named_by_the_entry_that_fails_its_crc(tmp_path):
    """One byte of a tensor's storage flipped after writing: torch.load would return the wrong
    number without a word; the CRC-32 of the entry (data/0) names it."""
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.arange(4.0)}, path)
    raw = bytearray(path.read_bytes())
    raw[_entry_offset(path, "data/0") + 5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError) as e:
        read_torch_file(path)
    assert "its entry 'data/0' fails its CRC-32 check" in str(e.value)


@pytest.mark.parametrize("case, message", [
    ("missing", "no checkpoint at "),
    ("empty", ": the file is empty"),
    ("truncated", ": the file is truncated or corrupt ("),
])
def test_a_missing_empty_or_truncated_file_is_named(tmp_path, case, message):
    path = tmp_path / "ckpt.pt"
    if case != "missing":
        torch.save({"w": torch.arange(4.0)}, path)
        raw = path.read_bytes()
        path.write_bytes(b"" if case == "empty" else raw[:len(raw) // 2])
    with pytest.raises(UserError) as e:
        read_torch_file(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_map_location_is_passed_on(tmp_path):
    torch.save({"w": torch.arange(3.0)}, tmp_path / "d.pt")
    assert read_torch_file(tmp_path / "d.pt", map_location="meta")["w"].is_meta


def test_a_file_saved_without_checksums_reads(tmp_path):
    """torch.save with compute_crc32=False records CRC 0 for every entry: no checksum to check,
    not a corrupt file (zipfile would report each entry's bytes as a CRC mismatch)."""
    from torch.utils.serialization import config

    # config.patch, not monkeypatch: undoing a monkeypatch deletes the key from torch's config,
    # and every later torch.save in the process then fails
    with config.patch({"save.compute_crc32": False}):
        torch.save({"w": torch.arange(4.0)}, tmp_path / "d.pt")
    with zipfile.ZipFile(tmp_path / "d.pt") as z:
        assert {i.CRC for i in z.infolist()} == {0}
    assert torch.equal(read_torch_file(tmp_path / "d.pt")["w"], torch.arange(4.0))
