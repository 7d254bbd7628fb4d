"""The loaders' shared pieces (sgdlab/data/_common.py): the data_dir check, subset sizes."""
from __future__ import annotations

import numpy as np
import pytest

from sgdlab.data import load_dataset
from sgdlab.data._common import seeded_indices
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
