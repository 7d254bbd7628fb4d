"""The loaders' shared pieces (sgdlab/data/_common.py): the data_dir check, subset sizes."""
from __future__ import annotations

import pytest

from sgdlab.data import load_dataset
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
