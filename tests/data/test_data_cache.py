"""The on-disk array cache never fails a load: a cache it cannot find, search or trust is
skipped and the arrays are built."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sgdlab.data import cache


def _build():
    return {"a": np.arange(3)}


def test_a_cache_folder_that_cannot_be_searched_is_skipped(tmp_path, monkeypatch):
    # as root chmod 000 still searches, so is_file's PermissionError (EACCES, which
    # pathlib re-raises) is raised here directly
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_file", denied)
    assert cache.cached_arrays("k", _build)["a"].tolist() == [0, 1, 2]


def test_no_home_directory_means_no_cache(monkeypatch):
    monkeypatch.delenv("SGDLAB_CACHE", raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert cache.cached_arrays("k", _build)["a"].tolist() == [0, 1, 2]


def test_a_bare_npy_under_the_entry_name_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    with open(tmp_path / "k.npz", "wb") as f:
        np.save(f, np.zeros(2))
    assert cache.cached_arrays("k", _build)["a"].tolist() == [0, 1, 2]
    with np.load(tmp_path / "k.npz", allow_pickle=False) as f:    # overwritten with the build
        assert f["a"].tolist() == [0, 1, 2]


def test_the_suite_keeps_out_of_the_users_cache():
    # conftest points $SGDLAB_CACHE at a folder of the session's
    assert not cache.cache_dir().resolve().is_relative_to((Path.home() / ".cache").resolve())


def test_the_key_is_the_prefix_and_the_sha1_of_the_sorted_json_arguments():
    # computed by hand: the same arguments in any order are one entry, a changed one another
    want = hashlib.sha1(b'{"a": 2, "b": "x"}').hexdigest()[:16]
    assert cache.cache_key("p", {"b": "x", "a": 2}) == f"p-{want}"
    assert cache.cache_key("p", {"a": 2, "b": "x"}) == f"p-{want}"
    assert cache.cache_key("p", {"a": 3, "b": "x"}) != f"p-{want}"
