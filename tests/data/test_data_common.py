"""The loaders' shared pieces (sgdlab/data/_common.py): the data_dir check, subset sizes."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from sgdlab.data import load_dataset
from sgdlab.data._common import (_split_cache_key, normalize_images, seeded_indices,
                                 stratified_split)
from sgdlab.errors import DataError, UserError
from sgdlab.testing import make_idx_dir


def test_data_dir_that_is_a_file_names_the_folder_that_holds_it(tmp_path):
    # the archive itself as data_dir was "does not exist or is not a directory"
    f = tmp_path / "cifar-10-python.tar.gz"
    f.write_bytes(b"")
    with pytest.raises(DataError, match=rf"^data_dir for dataset 'cifar10' is a file, not a "
                                        rf"folder: {f}; give the folder that holds it "
                                        rf"\({tmp_path}\)$"):
        load_dataset("cifar10", data_dir=f)
    with pytest.raises(DataError, match="does not exist or is not a directory"):
        load_dataset("cifar10", data_dir=tmp_path / "nowhere")


def test_a_subset_larger_than_the_split_names_the_option(tmp_path):
    make_idx_dir(tmp_path, n_train=40, n_test=20)
    with pytest.raises(UserError, match=r"^train_size 100 is larger than the 40 available "
                                        r"examples$"):
        load_dataset("mnist", data_dir=tmp_path, train_size=100)


def test_a_balanced_subset_gives_its_extra_examples_to_seeded_classes():
    labels = np.repeat([0, 1, 2], 10)
    # 4 of 3 classes: one class gets 2 examples, which one drawn with the seed
    extra = set()
    for seed in range(12):
        counts = np.bincount(labels[seeded_indices(labels, 4, seed, balanced=True)], minlength=3)
        assert sorted(counts.tolist()) == [1, 1, 2]
        extra.add(int(counts.argmax()))
    assert extra == {0, 1, 2}
    # a class one example short of its share is an error that says so
    with pytest.raises(UserError, match="needs 4 examples of class 2, only 3 available"):
        seeded_indices(np.array([0] * 5 + [1] * 5 + [2] * 3), 12, 0, balanced=True)


def test_an_unbalanced_subset_of_all_but_one_example_has_that_many():
    labels = np.zeros(6)
    for n in (5, 6):
        idx = seeded_indices(labels, n, 3, balanced=False)
        assert len(idx) == len(set(idx.tolist())) == n and list(idx) == sorted(idx)


# the stratified split's cache: scikit-learn's own answer, stored so that a warm process
# loads the digits without importing scikit-learn (~2 s of CPU, as much as torch); the arrays
# come from the bundled CSV (sgdlab.data.bundled), whose reading imports none either
DIGITS_CHILD = ("import hashlib, sys\n"
                "from sgdlab.data import load_dataset\n"
                "ds = load_dataset('digits', seed=3, test_size=100)\n"
                "h = hashlib.sha1()\n"
                "for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):\n"
                "    h.update(t.numpy().tobytes())\n"
                "print(h.hexdigest(), 'sklearn' in sys.modules)\n")


def _digits_child(cache) -> str:
    from sgdlab.testing import fresh_python

    return fresh_python(DIGITS_CHILD, env={"SGDLAB_CACHE": str(cache)}).strip()


def test_a_cached_split_loads_the_same_digits_without_sklearn(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    ds = load_dataset("digits", seed=3, test_size=100)    # scikit-learn's split, now stored
    assert len(list(tmp_path.glob("stratified-split-*.npz"))) == 1
    h = hashlib.sha1()
    for t in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        h.update(t.numpy().tobytes())
    assert _digits_child(tmp_path) == f"{h.hexdigest()} False"


def _sklearn(labels, n_test, seed):
    from sklearn.model_selection import train_test_split

    tr, te = train_test_split(np.arange(len(labels)), test_size=n_test, random_state=seed,
                              stratify=labels)
    return np.sort(tr), np.sort(te)


def test_the_split_cache_is_keyed_on_what_the_split_depends_on(tmp_path, monkeypatch):
    from importlib import metadata

    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    labels = np.arange(40) % 4
    key = _split_cache_key(labels, 8, 0)
    others = {_split_cache_key(labels, 8, 1), _split_cache_key(labels, 12, 0),
              _split_cache_key(labels[::-1].copy(), 8, 0),
              _split_cache_key(labels.astype(np.int32), 8, 0)}
    assert key not in others and len(others) == 4
    assert _split_cache_key(labels, 8, None) is None    # an unseeded split is drawn afresh
    for seed, n_test in [(0, 8), (1, 8), (0, 12), (0, 8)]:
        got, want = stratified_split(labels, n_test, seed), _sklearn(labels, n_test, seed)
        assert all(np.array_equal(g, w) and g.dtype == w.dtype for g, w in zip(got, want))
    assert len(list(tmp_path.glob("stratified-split-*.npz"))) == 3
    assert _split_cache_key(labels.astype(object), 8, 0) is None    # bytes are pointers
    real = metadata.distribution
    monkeypatch.setattr(metadata, "distribution", lambda name: _Installed(real(name), "0.0"))
    assert _split_cache_key(labels, 8, 0) != key


class _Installed:
    """scikit-learn's metadata with another version or another folder."""

    def __init__(self, dist, version=None, folder=None):
        self.dist, self.version, self.folder = dist, version or dist.version, folder

    def locate_file(self, path):
        return self.folder / path if self.folder else self.dist.locate_file(path)


def test_a_sklearn_imported_from_elsewhere_than_its_metadata_is_not_cached(tmp_path,
                                                                           monkeypatch):
    # a source checkout on PYTHONPATH or an editable install: its code changes under a version
    from importlib import metadata

    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    labels = np.arange(40) % 4
    assert _split_cache_key(labels, 8, 0) is not None
    real = metadata.distribution
    monkeypatch.setattr(metadata, "distribution",
                        lambda name: _Installed(real(name), folder=tmp_path / "site-packages"))
    assert _split_cache_key(labels, 8, 0) is None
    got, want = stratified_split(labels, 8, 0), _sklearn(labels, 8, 0)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert not list(tmp_path.glob("stratified-split-*.npz"))


def test_a_damaged_split_entry_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    labels = np.arange(40) % 4
    want = _sklearn(labels, 8, 0)
    path = tmp_path / f"{_split_cache_key(labels, 8, 0)}.npz"
    for bad in [{"train": np.arange(32), "test": np.arange(32, 40) - 1},   # not a partition
                {"train": np.arange(30), "test": np.arange(30, 40)},       # wrong sizes
                {"test": np.arange(8)},
                {"train": np.arange(32.0), "test": np.arange(32.0, 40.0)}]:    # not indices
        np.savez(path, **bad)
        got = stratified_split(labels, 8, 0)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        assert got[0].dtype == want[0].dtype and got[1].dtype == want[1].dtype
        with np.load(path, allow_pickle=False) as f:    # rewritten: the next process trusts it
            assert np.array_equal(f["train"], want[0]) and np.array_equal(f["test"], want[1])


def test_a_split_with_cache_false_neither_reads_nor_writes_the_cache(tmp_path, monkeypatch):
    # a loader's cache=False cached its split all the same
    monkeypatch.setenv("SGDLAB_CACHE", str(tmp_path))
    labels = np.arange(40) % 4
    want = _sklearn(labels, 8, 0)
    got = stratified_split(labels, 8, 0, cache=False)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert not list(tmp_path.iterdir())
    # an entry that is a valid partition, but not scikit-learn's split, is not read
    planted = {"train": np.arange(8, 40), "test": np.arange(8)}
    np.savez(tmp_path / f"{_split_cache_key(labels, 8, 0)}.npz", **planted)
    got = stratified_split(labels, 8, 0, cache=False)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert np.array_equal(stratified_split(labels, 8, 0)[1], planted["test"])   # cache=True


def test_standardize_divides_by_the_population_std_of_each_channel():
    # channel 0 holds 0, 2, 4, 6 (mean 3, population std √5), channel 1 is constant (std 1)
    x = np.zeros((2, 2, 1, 2), np.float32)
    x[:, 0] = np.array([[[0, 2]], [[4, 6]]])
    x[:, 1] = 7
    tr, te, info = normalize_images(x.copy(), x[:1].copy(), "standardize", 255.0)
    assert info["mean"] == [3.0, 7.0]
    assert info["std"] == pytest.approx([np.sqrt(5.0), 1.0], rel=1e-15)
    np.testing.assert_allclose(tr[:, 0].ravel(), np.array([-3, -1, 1, 3]) / np.sqrt(5.0),
                               rtol=1e-6)
    assert (tr[:, 1] == 0).all() and (te[:, 1] == 0).all()


def test_a_balanced_subset_keeps_the_files_order():
    # labels 0..4 repeated: a balanced subset of 10 takes 2 of each class, and its indices
    # come back increasing so the subset lists its examples in the file's order
    labels = np.arange(50) % 5
    for seed in range(5):
        idx = seeded_indices(labels, 10, seed, balanced=True)
        assert np.bincount(labels[idx], minlength=5).tolist() == [2] * 5
        assert np.all(np.diff(idx) > 0)


def test_a_test_split_of_every_example_names_the_empty_training_split():
    labels = np.arange(6) % 2
    with pytest.raises(UserError, match=r"^test_size 6 leaves no training examples \(of 6\)$"):
        stratified_split(labels, 6, 0, cache=False)


def test_unit_scaling_divides_both_splits_by_the_largest_pixel_value():
    tr, te, info = normalize_images(np.array([[[0, 255]]], np.uint8),
                                    np.array([[[51, 255]]], np.uint8), "unit", 255.0)
    assert tr.dtype == te.dtype == np.float32 and info == {"normalize": "unit"}
    assert tr.tolist() == [[[0.0, 1.0]]] and te.tolist() == [[[np.float32(0.2), 1.0]]]


def test_sizes_must_be_integers_not_booleans():
    # True is an int to Python: a subset of True examples was one example
    with pytest.raises(UserError, match=re.escape(
            "option 'n_train' must be an int >= 1, not a bool (True)")):
        seeded_indices(np.zeros(4), True, 0, balanced=False, what="n_train")
    assert len(seeded_indices(np.zeros(4), 1, 0, balanced=False)) == 1    # the minimum is valid


def test_sizes_of_numpy_and_torch_are_taken_as_the_ints_they_hold():
    # a 0-d tensor passed the check and then failed inside numpy ("must be int, not NoneType")
    for two in (np.int64(2), torch.tensor(2)):
        assert len(seeded_indices(np.zeros(4), two, 0, balanced=False)) == 2
        assert [len(i) for i in stratified_split(np.arange(8) % 2, two, 0, cache=False)] == [6, 2]
    assert len(load_dataset("cubic", n_train=torch.tensor(4)).y_train) == 4


def test_a_test_size_that_is_a_fraction_is_refused():
    # scikit-learn would read 0.25 as a quarter of the examples: the option counts examples
    with pytest.raises(UserError, match=r"option 'test_size' must be an int >= 1, got 0.25"):
        stratified_split(np.arange(8) % 2, 0.25, 0, cache=False)


def test_an_empty_data_dir_is_refused_not_read_as_the_working_folder(tmp_path, monkeypatch):
    # data_dir "" (an unset variable in --data-dir "$DATA" or a config) was Path(""), the
    # working folder: the files lying there were trained on without a word
    make_idx_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^data_dir for dataset 'mnist' is empty: give the "
                                        r"folder that holds the files \('\.' for the working "
                                        r"folder\)$"):
        load_dataset("mnist", data_dir="")
    assert len(load_dataset("mnist", data_dir=".").x_train) == 40
