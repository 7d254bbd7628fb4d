"""File loaders on small files written here in the exact IDX and CIFAR-pickle formats."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from sgdlab.data import load_dataset, read_cifar_batch, read_idx
from sgdlab.errors import DataError, UserError
from sgdlab.testing import IDX_NAMES, make_cifar10, make_idx_dir, write_cifar_batch, write_idx


def test_idx_magic_numbers_are_the_real_ones(tmp_path):
    p = write_idx(tmp_path / "x", np.zeros((2, 3, 4)))
    assert p.read_bytes()[:4] == (2051).to_bytes(4, "big")
    p = write_idx(tmp_path / "y", np.zeros(2))
    assert p.read_bytes()[:4] == (2049).to_bytes(4, "big")
    assert read_idx(p).shape == (2,)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx(tmp_path, gz):
    arrays = make_idx_dir(tmp_path, gz=gz)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (40, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(),
                                  arrays["train_images"].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["test_labels"])
    assert ds.num_outputs == 10 and ds.input_shape == (1, 28, 28)


def test_fashion_mnist_in_torchvision_subdir_with_raw_normalisation(tmp_path):
    arrays = make_idx_dir(tmp_path / "FashionMNIST" / "raw", gz=True)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path, normalize="none", flatten=True)
    assert ds.name == "fashion_mnist" and ds.x_train.shape == (40, 784)
    np.testing.assert_array_equal(ds.x_train.numpy(),
                                  arrays["train_images"].reshape(40, -1).astype(np.float32))


def test_idx_subset_is_seeded_and_balanced(tmp_path):
    make_idx_dir(tmp_path, n_train=100, n_test=50)
    a = load_dataset("mnist", data_dir=tmp_path, train_size=30, test_size=10, seed=1)
    b = load_dataset("mnist", data_dir=tmp_path, train_size=30, test_size=10, seed=1)
    c = load_dataset("mnist", data_dir=tmp_path, train_size=30, test_size=10, seed=2)
    assert torch.bincount(a.y_train).tolist() == [3] * 10
    assert torch.bincount(a.y_test).tolist() == [1] * 10
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    u = load_dataset("mnist", data_dir=tmp_path, train_size=33, balanced=False, seed=1)
    assert len(u.y_train) == 33
    with pytest.raises(UserError, match="larger than the 100"):
        load_dataset("mnist", data_dir=tmp_path, train_size=101)


def test_missing_idx_file_names_path_and_download(tmp_path):
    make_idx_dir(tmp_path)
    (tmp_path / IDX_NAMES["test_labels"]).unlink()
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(tmp_path / "t10k-labels-idx1-ubyte") in str(e.value)
    assert "download" in str(e.value)
    with pytest.raises(DataError, match="pass data_dir"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nope")


def test_malformed_idx_files(tmp_path):
    make_idx_dir(tmp_path)
    bad = tmp_path / IDX_NAMES["train_images"]
    write_idx(bad, np.zeros((40, 28, 28)), magic=0x12345678)
    with pytest.raises(DataError, match=f"{bad}.*bad magic number"):
        load_dataset("mnist", data_dir=tmp_path)
    # labels file where images are expected: 1-D magic 2049
    write_idx(bad, np.zeros(40))
    with pytest.raises(DataError, match=f"{bad}.*expected 3-D"):
        load_dataset("mnist", data_dir=tmp_path)
    # truncated data
    write_idx(bad, np.zeros((40, 28, 28)))
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(DataError, match=f"{bad}.*header says shape"):
        load_dataset("mnist", data_dir=tmp_path)
    # corrupt gzip
    bad.unlink()
    (tmp_path / (IDX_NAMES["train_images"] + ".gz")).write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path)
    # images / labels count mismatch
    write_idx(tmp_path / IDX_NAMES["train_images"], np.zeros((39, 28, 28)))
    (tmp_path / (IDX_NAMES["train_images"] + ".gz")).unlink()
    with pytest.raises(DataError, match="39 images but .* 40 labels"):
        load_dataset("mnist", data_dir=tmp_path)


# --- CIFAR ----------------------------------------------------------------------------------

def test_cifar10_reads_batches(tmp_path):
    x, y, xt = make_cifar10(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.x_train.shape == (50, 3, 32, 32) and ds.x_test.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(ds.x_train.numpy(), x.astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.y_train.numpy(), y)
    # channel layout: the first 1024 bytes of a row are the red plane, row-major
    row = x[0].reshape(3072)
    assert ds.x_train[0, 0, 0, 1].item() * 255 == pytest.approx(row[1])
    assert ds.x_train[0, 1, 0, 0].item() * 255 == pytest.approx(row[1024])
    # the batches may also sit directly in data_dir; subsets are seeded and balanced
    sub = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py", train_size=20,
                       test_size=10, normalize="standardize", seed=4)
    assert torch.bincount(sub.y_train).tolist() == [2] * 10
    assert sub.meta["normalize"] == "standardize" and len(sub.meta["mean"]) == 3


def _cifar100_samples():
    """Eight images with fine labels (0..99) and their coarse ones (0..19)."""
    x = np.random.default_rng(0).integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    return x, [0, 99, 5, 42, 7, 1, 2, 3], [0, 19, 1, 8, 3, 0, 0, 1]


def test_cifar100_fine_and_coarse_labels(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    x, fine, coarse = _cifar100_samples()
    for name in ("train", "test"):
        write_cifar_batch(d / name, x, fine, key=b"fine_labels", extra={b"coarse_labels": coarse})
    ds = load_dataset("cifar100", data_dir=tmp_path)
    assert ds.num_outputs == 100 and ds.y_train.tolist() == fine
    dc = load_dataset("cifar100", data_dir=tmp_path, labels="coarse")
    assert dc.num_outputs == 20 and dc.y_test.tolist() == coarse


def test_cifar_missing_and_malformed(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in str(e.value)
    assert "cifar-10-python.tar.gz" in str(e.value)
    make_cifar10(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    (d / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path)
    p = d / "data_batch_3"
    with open(p, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(DataError, match=f"{p}.*missing key.*labels"):
        load_dataset("cifar10", data_dir=tmp_path)
    write_cifar_batch(p, np.zeros((2, 3, 32, 32), np.uint8), [0, 1],
                      extra={b"data": np.zeros((2, 100), np.uint8)})
    with pytest.raises(DataError, match=r"data_batch_3.*\(N, 3072\)"):
        load_dataset("cifar10", data_dir=tmp_path)
    p.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match=f"{p}.*cannot unpickle"):
        load_dataset("cifar10", data_dir=tmp_path)


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_cifar_unpickler_refuses_arbitrary_globals(tmp_path):
    p = tmp_path / "data_batch_1"
    with open(p, "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(DataError, match="refusing to unpickle"):
        read_cifar_batch(p)


def test_cifar_batch_with_str_keys_and_protocol_5(tmp_path):
    p = tmp_path / "b"
    x = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    with open(p, "wb") as f:
        pickle.dump({"data": x, "labels": np.array([3, 4])}, f, protocol=5)
    imgs, labels = read_cifar_batch(p)
    assert imgs.shape == (2, 3, 32, 32) and labels.tolist() == [3, 4]
    np.testing.assert_array_equal(imgs.reshape(2, 3072), x)


def test_cifar_batch_pickled_by_old_numpy(tmp_path):
    # the real files reference numpy.core.multiarray._reconstruct (numpy < 2 module name)
    x = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": x, b"labels": [7, 8]}, protocol=2)
    raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw
    (tmp_path / "b").write_bytes(raw)
    imgs, labels = read_cifar_batch(tmp_path / "b")
    np.testing.assert_array_equal(imgs.reshape(2, 3072), x)
    assert labels.tolist() == [7, 8]


# --- bad input found by review: each a named DataError, never a traceback or wrong data ----

def test_idx_pixel_order_is_the_specs(tmp_path):
    # the IDX spec: the last dimension changes fastest, so byte 16 + 28 r + c is row r, col c
    n, rows, cols = 2, 28, 28
    blob = bytearray(struct.pack(">IIII", 2051, n, rows, cols) + bytes(n * rows * cols))
    blob[16 + 28 * 1 + 0] = 200              # image 0, row 1, column 0
    blob[16 + 784 + 28 * 0 + 5] = 100        # image 1, row 0, column 5
    (tmp_path / "x").write_bytes(bytes(blob))
    x = read_idx(tmp_path / "x", expect_ndim=3, expect_ubyte=True)
    assert x.dtype == np.uint8 and x.shape == (2, 28, 28)
    assert x[0, 1, 0] == 200 and x[1, 0, 5] == 100 and x.sum() == 300


def test_idx_corrupt_deflate_stream_and_overflowing_header(tmp_path):
    good = gzip.compress(struct.pack(">II", 2049, 5) + bytes(range(5)))
    bad = tmp_path / "labels.gz"
    bad.write_bytes(good[:12] + bytes([good[12] ^ 0xFF]) + good[13:])  # gzip header intact
    with pytest.raises(DataError, match=f"cannot read IDX file {bad}"):
        read_idx(bad)
    # 2^31 * 2^31 * 4 bytes overflows int64 to 0, which matched an empty body
    huge = tmp_path / "huge"
    huge.write_bytes(struct.pack(">IIII", 2051, 2**31, 2**31, 4))
    with pytest.raises(DataError, match=f"{huge}.*header says shape"):
        read_idx(huge)


def test_mnist_refuses_non_ubyte_idx_and_mismatched_or_empty_images(tmp_path):
    make_idx_dir(tmp_path)
    labels = tmp_path / IDX_NAMES["train_labels"]
    # float labels 0.0..9.0 (IDX type 0x0D, magic 3329) were truncated to integers silently
    labels.write_bytes(struct.pack(">II", 0x0D01, 40)
                       + (np.arange(40) % 10).astype(">f4").tobytes())
    with pytest.raises(DataError, match=f"{labels}.*expected unsigned bytes"):
        load_dataset("mnist", data_dir=tmp_path)
    write_idx(labels, np.arange(40) % 10)
    test_images = write_idx(tmp_path / IDX_NAMES["test_images"], np.zeros((20, 32, 32)))
    with pytest.raises(DataError, match=rf"\(28, 28\) pixels but {test_images} of \(32, 32\)"):
        load_dataset("mnist", data_dir=tmp_path)
    write_idx(test_images, np.zeros((0, 28, 28)))
    write_idx(tmp_path / IDX_NAMES["test_labels"], np.zeros(0))
    with pytest.raises(DataError, match=f"{test_images} holds no images"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_files_come_from_the_datasets_own_folder(tmp_path):
    mnist = make_idx_dir(tmp_path, seed=1)                       # MNIST lying in data_dir
    fashion = make_idx_dir(tmp_path / "FashionMNIST" / "raw", seed=2)
    ds = load_dataset("fashion_mnist", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), fashion["train_images"])
    ds = load_dataset("mnist", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.x_test[:, 0].numpy(), mnist["test_images"])
    # a folder with only some of the files is named, not completed from another folder
    (tmp_path / "FashionMNIST" / "raw" / IDX_NAMES["test_labels"]).unlink()
    with pytest.raises(DataError, match="FashionMNIST/raw holds only some.*t10k-labels"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


def test_cifar_ragged_and_empty_batches(tmp_path):
    p = tmp_path / "b"
    with open(p, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, [1, 2]]}, f,
                    protocol=2)
    with pytest.raises(DataError, match=f"malformed CIFAR batch {p}"):
        read_cifar_batch(p)
    with open(p, "wb") as f:  # (an empty array pickles __builtin__.bytes)
        pickle.dump({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, f, protocol=2)
    with pytest.raises(DataError, match=f"{p}: it holds no images"):
        read_cifar_batch(p)


def test_cifar10_test_split_is_test_batch(tmp_path):
    _, _, xt = make_cifar10(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.x_test.numpy(), xt.astype(np.float32))
    np.testing.assert_array_equal(ds.y_test.numpy(), np.arange(10) % 10)


def test_cifar_without_batches_names_every_layout_it_reads(tmp_path):
    # an empty binary folder is not a source; an empty download is a broken archive
    (tmp_path / "cifar-10-batches-bin").mkdir()
    with pytest.raises(DataError, match="cifar-10-python.tar.gz or cifar-10-binary.tar.gz, "
                                        "extracted or not"):
        load_dataset("cifar10", data_dir=tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DataError, match="cannot read the archive .*cifar-10-python.tar.gz"):
        load_dataset("cifar10", data_dir=tmp_path)


def _binary_records(x: np.ndarray, *labels) -> bytes:
    """CIFAR binary records: the label byte(s), then the 3072 pixel bytes."""
    cols = [np.asarray(lab, np.uint8)[:, None] for lab in labels]
    return np.concatenate(cols + [x.reshape(len(x), 3072)], 1).tobytes()


def test_cifar10_binary_version_and_archives_read_as_the_python_batches(tmp_path):
    import tarfile

    x, y, xt = make_cifar10(tmp_path / "py")
    ref = load_dataset("cifar10", data_dir=tmp_path / "py")
    # the binary version, extracted
    b = tmp_path / "bin" / "cifar-10-batches-bin"
    b.mkdir(parents=True)
    for i in range(5):
        (b / f"data_batch_{i + 1}.bin").write_bytes(
            _binary_records(x[10 * i:10 * (i + 1)], y[10 * i:10 * (i + 1)]))
    (b / "test_batch.bin").write_bytes(_binary_records(xt, np.arange(10) % 10))
    # both downloads as they come, not extracted
    for dest, name, folder in (
            ("python", "cifar-10-python.tar.gz", tmp_path / "py" / "cifar-10-batches-py"),
            ("binary", "cifar-10-binary.tar.gz", b)):
        (tmp_path / dest).mkdir()
        with tarfile.open(tmp_path / dest / name, "w:gz") as tf:
            tf.add(folder, arcname=folder.name)
    for root in (tmp_path / "bin", tmp_path / "python", tmp_path / "binary"):
        ds = load_dataset("cifar10", data_dir=root)
        assert torch.equal(ds.x_train, ref.x_train) and torch.equal(ds.y_train, ref.y_train)
        assert torch.equal(ds.x_test, ref.x_test) and torch.equal(ds.y_test, ref.y_test)
    assert "binary archive" in load_dataset("cifar10", data_dir=tmp_path / "binary").meta[
        "source"]
    # malformed: a truncated record, a corrupt archive, an archive without a batch
    (b / "data_batch_2.bin").write_bytes(_binary_records(x[:2], y[:2])[:-5])
    with pytest.raises(DataError, match=r"data_batch_2\.bin.*3073-byte records"):
        load_dataset("cifar10", data_dir=tmp_path / "bin")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read the archive"):
        load_dataset("cifar10", data_dir=bad)
    with tarfile.open(bad / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "py" / "cifar-10-batches-py" / "test_batch", arcname="test_batch")
    with pytest.raises(DataError, match="no file.*data_batch_1"):
        load_dataset("cifar10", data_dir=bad)


def test_cifar100_binary_fine_and_coarse_labels(tmp_path):
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    x, fine, coarse = _cifar100_samples()
    for name in ("train.bin", "test.bin"):
        (d / name).write_bytes(_binary_records(x, coarse, fine))   # coarse byte first
    ds = load_dataset("cifar100", data_dir=tmp_path)
    assert ds.num_outputs == 100 and ds.y_train.tolist() == fine
    np.testing.assert_array_equal(ds.x_train.numpy(), x.astype(np.float32) / 255)
    dc = load_dataset("cifar100", data_dir=tmp_path, labels="coarse")
    assert dc.num_outputs == 20 and dc.y_test.tolist() == coarse


def test_idx_named_gz_that_is_not_gzip_or_is_gzipped_twice(tmp_path):
    make_idx_dir(tmp_path, gz=True)
    p = tmp_path / (IDX_NAMES["train_images"] + ".gz")
    good = p.read_bytes()
    # a mirror's error page saved under the file's name
    p.write_bytes(b"<!DOCTYPE html><html><body>404 Not Found</body></html>")
    with pytest.raises(DataError, match=f"{p}.*bad magic.*named .gz but not gzip-compressed; "
                                        f"it starts like an HTML page"):
        load_dataset("mnist", data_dir=tmp_path)
    p.write_bytes(gzip.compress(good))
    with pytest.raises(DataError, match=f"{p}.*bad magic.*compressed twice"):
        load_dataset("mnist", data_dir=tmp_path)
    # a plain IDX file named .gz is read by its content
    p.write_bytes(gzip.decompress(good))
    assert load_dataset("mnist", data_dir=tmp_path).x_train.shape == (40, 1, 28, 28)


def test_fashion_mnist_in_the_official_repositorys_folder_not_the_mnist_beside_it(tmp_path):
    # zalandoresearch/fashion-mnist keeps its files in data/fashion; MNIST lying in data_dir
    # itself was read as Fashion-MNIST
    mnist = make_idx_dir(tmp_path, seed=1)
    fashion = make_idx_dir(tmp_path / "fashion", seed=2, gz=True)
    ds = load_dataset("fashion_mnist", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), fashion["train_images"])
    assert str(tmp_path / "fashion") in ds.meta["source"]
    ds = load_dataset("mnist", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), mnist["train_images"])
    repo = tmp_path / "fashion-mnist-repo"
    make_idx_dir(repo / "data" / "fashion", seed=2, gz=True)
    ds = load_dataset("fashion_mnist", data_dir=repo, normalize="none")
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), fashion["train_images"])


# length and first ten labels of the published label files (as torchvision's and Keras' loaders
# of the real files return them)
_PUBLISHED_LABELS = {("mnist", "train"): (60000, [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]),
                     ("mnist", "test"): (10000, [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]),
                     ("fashion_mnist", "train"): (60000, [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]),
                     ("fashion_mnist", "test"): (10000, [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])}


def _published_like(root, dataset, *, swap=False):
    """IDX files of the published sizes whose labels start as the real ones (2x2 images)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, other in (("train", "test"), ("test", "train")):
        n, first = _PUBLISHED_LABELS[(dataset, other if swap else split)]
        y = rng.integers(0, 10, n).astype(np.uint8)
        y[:10] = first
        write_idx(root / IDX_NAMES[f"{split}_labels"], y)
        write_idx(root / IDX_NAMES[f"{split}_images"], np.zeros((n, 2, 2), np.uint8))


def test_idx_files_of_the_other_dataset_or_split_are_recognised(tmp_path):
    # Fashion-MNIST's files were read as MNIST (and the other way round) without a word
    _published_like(tmp_path / "f", "fashion_mnist")
    _published_like(tmp_path / "m", "mnist")
    _published_like(tmp_path / "s", "mnist", swap=True)
    f_labels = tmp_path / "f" / IDX_NAMES["train_labels"]
    with pytest.raises(DataError, match=f"{f_labels} holds the train labels of fashion_mnist"):
        load_dataset("mnist", data_dir=tmp_path / "f")
    with pytest.raises(DataError, match="holds the train labels of mnist.*point data_dir"):
        load_dataset("fashion_mnist", data_dir=tmp_path / "m")
    with pytest.raises(DataError, match="holds the test labels of mnist.*swapped"):
        load_dataset("mnist", data_dir=tmp_path / "s")
    assert load_dataset("mnist", data_dir=tmp_path / "m").y_train[:10].tolist() == \
        _PUBLISHED_LABELS[("mnist", "train")][1]
    assert len(load_dataset("fashion_mnist", data_dir=tmp_path / "f").y_test) == 10000


@pytest.mark.parametrize("kind", ["binary", "python"])
def test_cifar10_training_batch_cut_at_a_record_boundary(tmp_path, kind):
    # a binary batch cut after 6 of its 10 records read as a 46-image training set
    x, y, xt = make_cifar10(tmp_path / "py")
    if kind == "binary":
        root = tmp_path / "bin"
        d = root / "cifar-10-batches-bin"
        d.mkdir(parents=True)
        for i in range(5):
            n = 6 if i == 1 else 10
            (d / f"data_batch_{i + 1}.bin").write_bytes(
                _binary_records(x[10 * i:10 * i + n], y[10 * i:10 * i + n]))
        (d / "test_batch.bin").write_bytes(_binary_records(xt, np.arange(10) % 10))
        short = d / "data_batch_2.bin"
    else:
        root = tmp_path / "py"
        short = root / "cifar-10-batches-py" / "data_batch_2"
        write_cifar_batch(short, x[10:16], y[10:16])
    with pytest.raises(DataError, match=rf"{short} holds 6 images, data_batch_1 10: the "
                                        rf"training batches hold equally many"):
        load_dataset("cifar10", data_dir=root)


@pytest.mark.parametrize("kind", ["binary", "python"])
def test_cifar10_test_batch_cut_short_of_the_published_count(tmp_path, kind, monkeypatch):
    # the training batches were compared with each other only: a test batch cut at a record
    # boundary read as a smaller test set. Published count shrunk to the files written here.
    # A pickled batch cut short does not unpickle: a smaller whole one is the user's own test
    # set beside the published training batches, and loads.
    import sgdlab.data.files as files

    monkeypatch.setitem(files._CIFAR["cifar10"], "published", {"train": 10, "test": 10})
    x, y, xt = make_cifar10(tmp_path / "py")
    assert len(load_dataset("cifar10", data_dir=tmp_path / "py").y_test) == 10
    if kind == "binary":
        root = tmp_path / "bin"
        d = root / "cifar-10-batches-bin"
        d.mkdir(parents=True)
        for i in range(5):
            (d / f"data_batch_{i + 1}.bin").write_bytes(
                _binary_records(x[10 * i:10 * i + 10], y[10 * i:10 * i + 10]))
        short = d / "test_batch.bin"
        short.write_bytes(_binary_records(xt[:6], np.arange(6)))
    else:
        root = tmp_path / "py"
        short = root / "cifar-10-batches-py" / "test_batch"
        write_cifar_batch(short, xt[:6], np.arange(6))
        assert len(load_dataset("cifar10", data_dir=root).y_test) == 6
        cut = short.read_bytes()
        short.write_bytes(cut[:len(cut) // 2])
        with pytest.raises(DataError, match=rf"malformed CIFAR batch {short}: cannot unpickle"):
            load_dataset("cifar10", data_dir=root)
        return
    with pytest.raises(DataError, match=rf"{short} holds 6 images, expected 10 \(the published "
                                        rf"file; data_batch_1.* holds its published 10\)"):
        load_dataset("cifar10", data_dir=root)


def test_cifar100_file_cut_short_of_the_published_count(tmp_path):
    # a full-size test.bin (10,000 records) beside a train.bin cut at a record boundary; small
    # files of one's own, none at the published count, still load
    d = tmp_path / "cifar-100-binary"
    d.mkdir()
    x, fine, coarse = _cifar100_samples()
    (d / "train.bin").write_bytes(_binary_records(x, coarse, fine))
    (d / "test.bin").write_bytes(_binary_records(x, coarse, fine))
    assert len(load_dataset("cifar100", data_dir=tmp_path).y_train) == len(x)
    (d / "test.bin").write_bytes(bytes(10000 * 3074))
    with pytest.raises(DataError, match=rf"{d / 'train.bin'} holds {len(x)} images, expected "
                                        r"50,000 \(the published file; test.bin holds its "
                                        r"published 10,000\)"):
        load_dataset("cifar100", data_dir=tmp_path)


def test_an_unreadable_dataset_file_is_a_data_error_naming_it(tmp_path, monkeypatch):
    # a CIFAR batch without read permission was a raw PermissionError traceback (root reads
    # every file, so the refusal is simulated)
    import errno
    import pathlib

    import sgdlab.data.files as files

    def refuse(path):
        if pathlib.Path(path).name.startswith(("test_batch", "t10k-images")):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

    read_bytes = pathlib.Path.read_bytes
    monkeypatch.setattr(files, "open", lambda p, *a, **k: (refuse(p), open(p, *a, **k))[1],
                        raising=False)
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda p: (refuse(p), read_bytes(p))[1])
    make_cifar10(tmp_path / "py")
    p = tmp_path / "py" / "cifar-10-batches-py" / "test_batch"
    with pytest.raises(DataError, match=rf"^cannot read CIFAR batch {p}: Permission denied$"):
        load_dataset("cifar10", data_dir=tmp_path / "py")
    b = tmp_path / "bin" / "cifar-10-batches-bin"
    b.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (b / f"{name}.bin").write_bytes(_binary_records(np.zeros((2, 3, 32, 32), np.uint8), [0, 1]))
    with pytest.raises(DataError, match=rf"^cannot read CIFAR batch {b / 'test_batch.bin'}: "
                                        r"Permission denied$"):
        load_dataset("cifar10", data_dir=tmp_path / "bin")
    make_idx_dir(tmp_path / "m")
    with pytest.raises(DataError, match=rf"^cannot read IDX file {tmp_path / 'm'}/t10k-images"
                                        r"-idx3-ubyte: Permission denied$"):
        load_dataset("mnist", data_dir=tmp_path / "m")


def test_cifar_label_out_of_range_names_the_file_and_the_label(tmp_path):
    # the message named the folder only ("labels in .../cifar-10-batches-py outside 0..9")
    make_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    write_cifar_batch(p, np.zeros((10, 3, 32, 32), np.uint8), [0, 1, 2, 10, 4, 5, 6, 7, 8, 11])
    with pytest.raises(DataError, match=rf"^cifar10: {p} holds label 10 \(of image 3, 2 such\), "
                                        r"outside 0\.\.9$"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_idx_in_torchvisions_own_folder_and_in_folders_named_like_the_files(tmp_path):
    # data_dir = torchvision's MNIST folder (the one holding raw/) was "missing file"
    ref = make_idx_dir(tmp_path / "tv" / "MNIST" / "raw", seed=1)
    ds = load_dataset("mnist", data_dir=tmp_path / "tv" / "MNIST", normalize="none")
    np.testing.assert_array_equal(ds.x_train.numpy()[:, 0], ref["train_images"])
    np.testing.assert_array_equal(ds.y_test.numpy(), ref["test_labels"])
    # the raw/ of the other dataset's folder is not taken
    make_idx_dir(tmp_path / "tv" / "FashionMNIST" / "raw")
    with pytest.raises(DataError, match=r"^fashion_mnist: missing file .*MNIST/train-images"):
        load_dataset("fashion_mnist", data_dir=tmp_path / "tv" / "MNIST")
    with pytest.raises(DataError, match=r"^mnist: missing file .*FashionMNIST/train-images"):
        load_dataset("mnist", data_dir=tmp_path / "tv" / "FashionMNIST")
    # each .gz unpacked to a folder of its name (7-Zip's "extract to"): the file inside it
    arrays = make_idx_dir(tmp_path / "flat", seed=2)
    z = tmp_path / "7z"
    for stem in IDX_NAMES.values():
        (z / stem).mkdir(parents=True)
        (tmp_path / "flat" / stem).rename(z / stem / stem)
    ds = load_dataset("mnist", data_dir=z, normalize="none")
    np.testing.assert_array_equal(ds.x_test.numpy()[:, 0], arrays["test_images"])
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train_labels"])
    assert ds.meta["source"] == f"IDX files in {z}"
    # such a folder without the file in it is named as a folder
    stem = IDX_NAMES["test_labels"]
    (z / stem / stem).unlink()
    with pytest.raises(DataError, match=rf"missing {z / stem} \(a folder, without the file "
                                        rf"{stem} in it\)"):
        load_dataset("mnist", data_dir=z)


def test_cifar_in_a_folder_of_data_dir_named_for_the_dataset(tmp_path):
    # data_dir/cifar10/cifar-10-batches-py (one data_dir for several datasets) was "missing"
    import tarfile

    x, y, xt = make_cifar10(tmp_path / "cifar10")
    ds = load_dataset("cifar10", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.x_train.numpy(), x)
    np.testing.assert_array_equal(ds.x_test.numpy(), xt)
    np.testing.assert_array_equal(ds.y_train.numpy(), y)
    where = tmp_path / "cifar10" / "cifar-10-batches-py"
    assert ds.meta["source"] == f"CIFAR python batches in {where}"
    # the download as it comes, in CIFAR-10/
    (tmp_path / "CIFAR-10").mkdir()
    with tarfile.open(tmp_path / "CIFAR-10" / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "cifar10" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1").rename(tmp_path / "moved")
    ds = load_dataset("cifar10", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.x_train.numpy(), x)
    assert ds.meta["source"].startswith("CIFAR python archive batches in ")
    # an extracted set missing a batch names it and its folder
    (tmp_path / "moved").rename(tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1")
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=rf"^cifar10: missing file {tmp_path}/cifar10/cifar-10-"
                                        rf"batches-py/test_batch; download and extract .* "
                                        rf"into {tmp_path / 'cifar10'}$"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_of_the_other_kind_where_the_files_were_looked_for_is_named(tmp_path):
    # cifar10 on a folder of CIFAR-100 said only "missing file ...data_batch_1"
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    x, fine, coarse = _cifar100_samples()
    for name in ("train", "test"):
        write_cifar_batch(d / name, x, fine, key=b"fine_labels", extra={b"coarse_labels": coarse})
    with pytest.raises(DataError, match=rf"^cifar10: missing file .*data_batch_1.*\. {d} holds "
                                        r"cifar100's files: load the dataset 'cifar100'"):
        load_dataset("cifar10", data_dir=tmp_path)
    make_cifar10(tmp_path / "ten")
    with pytest.raises(DataError, match=rf"^cifar100: missing file .*\. {tmp_path}/ten/cifar-10-"
                                        r"batches-py holds cifar10's files"):
        load_dataset("cifar100", data_dir=tmp_path / "ten")


def test_mnist_from_keras_npz_when_no_idx_files(tmp_path):
    # ~/.keras/datasets/mnist.npz (keras.datasets.mnist) was "missing file ...idx3-ubyte"
    rng = np.random.default_rng(3)
    a = {"x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
         "y_train": (np.arange(30) % 10).astype(np.uint8),
         "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
         "y_test": (np.arange(10)[::-1]).astype(np.uint8)}
    p = tmp_path / "mnist.npz"
    np.savez_compressed(p, **a)
    ds = load_dataset("mnist", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.x_train.numpy()[:, 0], a["x_train"])
    np.testing.assert_array_equal(ds.x_test.numpy()[:, 0], a["x_test"])
    np.testing.assert_array_equal(ds.y_train.numpy(), a["y_train"])
    np.testing.assert_array_equal(ds.y_test.numpy(), a["y_test"])
    assert ds.meta["source"] == f"Keras' {p}" and ds.y_train.dtype == torch.int64
    # IDX files, when there are, come first
    arrays = make_idx_dir(tmp_path / "MNIST" / "raw")
    ds = load_dataset("mnist", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["test_labels"])
    (tmp_path / "MNIST").rename(tmp_path / "elsewhere")
    # malformed: counts, an object array (never unpickled), not an archive, not a zip
    np.savez(p, **{**a, "y_test": a["y_test"][:-1]})
    with pytest.raises(DataError, match=rf"{p} \(x_test\) has 10 images but {p} \(y_test\) has "
                                        r"9 labels"):
        load_dataset("mnist", data_dir=tmp_path)
    np.savez(p, **{**a, "y_train": np.array([None] * 30)})
    with pytest.raises(DataError, match=rf"^cannot read {p}: Object arrays cannot be loaded"):
        load_dataset("mnist", data_dir=tmp_path)
    with open(p, "wb") as f:
        np.save(f, a["x_train"])
    with pytest.raises(DataError, match=rf"^malformed {p}: one array, not the archive"):
        load_dataset("mnist", data_dir=tmp_path)
    p.write_bytes(b"<html>")
    with pytest.raises(DataError, match=rf"^cannot read {p}"):
        load_dataset("mnist", data_dir=tmp_path)
    np.savez(p, **{**a, "x_train": a["x_train"].astype(np.float32)})
    with pytest.raises(DataError, match=r"x_train must be uint8 with 3 dimension\(s\), got "
                                        r"float32"):
        load_dataset("mnist", data_dir=tmp_path)
    p.unlink()
    with pytest.raises(DataError, match=rf"or Keras' mnist.npz in {tmp_path}\)"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_file_cut_short_beside_its_gz_says_so(tmp_path):
    # torchvision keeps X and X.gz; an interrupted decompression left X short, read first
    arrays = make_idx_dir(tmp_path, gz=True)
    raw = tmp_path / IDX_NAMES["train_images"]
    raw.write_bytes(gzip.decompress((tmp_path / (raw.name + ".gz")).read_bytes())[:-100])
    with pytest.raises(DataError, match=rf"^malformed IDX file {raw}: header says .* \({raw}.gz "
                                        rf"lies beside it: a decompression cut short\? Delete "
                                        rf"{raw.name} to read the .gz"):
        load_dataset("mnist", data_dir=tmp_path)
    raw.unlink()
    ds = load_dataset("mnist", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.x_train.numpy()[:, 0], arrays["train_images"])


@pytest.mark.parametrize("tensors, message", [
    ({"x_train": torch.zeros(3, 2), "y_train": torch.zeros(2, dtype=torch.long)},
     "x_train has 3 examples but y_train has 2"),
    ({"x_train": torch.zeros(3, 2), "y_train": torch.tensor([-1, 0, 1])},
     "y_train holds the class label -1"),
    ({"x_train": torch.zeros(3, 2), "y_train": torch.tensor([0, 1, 2]),
      "meta": {"num_outputs": 2}}, "y_train holds the class label 2, but meta num_outputs is 2"),
    ({"x_train": torch.zeros(0, 2), "y_train": torch.zeros(0, dtype=torch.long)},
     "x_train holds no examples"),
    ({"x_train": torch.tensor(1.0), "y_train": torch.tensor(1)},
     "x_train is a single number (0-d tensor)"),
    ({"x_train": torch.zeros(3, 2), "y_train": torch.zeros(3, dtype=torch.long), "meta": 5},
     "meta must be a dict"),
])
def test_a_data_file_that_cannot_be_trained_on_is_named_when_read(tmp_path, tensors, message):
    # these were a TypeError, an IndexError, or a run recorded and then failed in the loss
    from sgdlab.data.files import load_data_file

    torch.save(tensors, tmp_path / "d.pt")
    with pytest.raises(DataError, match=r"^data file '.*d\.pt': " + message.replace("(", r"\(")
                       .replace(")", r"\)")):
        load_data_file(tmp_path / "d.pt")


def test_a_token_file_padded_with_cross_entropys_ignore_index_is_read(tmp_path):
    # -100 is nn.CrossEntropyLoss's default ignore_index: padded positions, no label
    from sgdlab.data.files import load_data_file

    y = torch.tensor([[1, 4, -100, -100], [3, 0, 2, -100]])
    torch.save({"x_train": torch.zeros(2, 4, dtype=torch.long), "y_train": y,
                "meta": {"num_outputs": 5}}, tmp_path / "d.pt")
    assert torch.equal(load_data_file(tmp_path / "d.pt").y_train, y)
    y[0, 0] = 5                     # a real label still has to be below num_outputs
    torch.save({"x_train": torch.zeros(2, 4, dtype=torch.long), "y_train": y,
                "meta": {"num_outputs": 5}}, tmp_path / "d.pt")
    with pytest.raises(DataError, match="y_train holds the class label 5"):
        load_data_file(tmp_path / "d.pt")


def test_idx_subsets_draw_the_test_split_from_its_own_seeded_stream(tmp_path):
    # train from default_rng(seed), test from default_rng(seed + 1): the test subset is not
    # the train one's indices again, and changing one size leaves the other subset alone
    from sgdlab.data._common import seeded_indices

    arrays = make_idx_dir(tmp_path, n_train=50, n_test=50)
    ds = load_dataset("mnist", data_dir=tmp_path, train_size=20, test_size=20, seed=3,
                      normalize="none")
    i_tr = seeded_indices(arrays["train_labels"], 20, 3, balanced=True)
    i_te = seeded_indices(arrays["test_labels"], 20, 4, balanced=True)
    assert not np.array_equal(i_tr, i_te)
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), arrays["train_images"][i_tr])
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train_labels"][i_tr])
    np.testing.assert_array_equal(ds.x_test[:, 0].numpy(), arrays["test_images"][i_te])
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["test_labels"][i_te])


def test_idx_reads_signed_and_wide_types_big_endian(tmp_path):
    # written byte by byte: magic 0x00000901 (int8, 1-D), size 3, then 0xff 0x80 0x7f
    p = tmp_path / "s.idx"
    p.write_bytes(bytes([0, 0, 0x09, 1, 0, 0, 0, 3, 0xFF, 0x80, 0x7F]))
    assert read_idx(p).tolist() == [-1, -128, 127]
    # 0x0B: int16, big-endian: 0x0102 = 258, 0xfffe = -2
    p.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
    assert read_idx(p).tolist() == [258, -2]


# --- pinned by a mutation audit: the IDX header and data read exactly as LeCun's spec ------

def test_idx_reads_big_endian_floats_and_int32_as_native_arrays(tmp_path):
    # 0x0D float32, 0x0E float64, 0x0C int32, all big-endian: 1.0f = 3f800000, -2.0f = c0000000,
    # 1.5 = 3ff8000000000000, 0x00000102 = 258, 0xfffffffe = -2
    p = tmp_path / "f.idx"
    p.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 2, 0x3F, 0x80, 0, 0, 0xC0, 0, 0, 0]))
    f32 = read_idx(p)
    assert f32.dtype == np.float32 and f32.tolist() == [1.0, -2.0]
    p.write_bytes(bytes([0, 0, 0x0E, 1, 0, 0, 0, 1, 0x3F, 0xF8, 0, 0, 0, 0, 0, 0]))
    f64 = read_idx(p)
    assert f64.dtype == np.float64 and f64.tolist() == [1.5]
    p.write_bytes(bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 1, 2, 0xFF, 0xFF, 0xFF, 0xFE]))
    i32 = read_idx(p)
    assert i32.dtype == np.int32 and i32.tolist() == [258, -2]
    # the arrays come back in the machine's byte order: torch takes them as they are
    for a in (f32, f64, i32):
        assert a.dtype.isnative
        assert torch.from_numpy(a).tolist() == a.tolist()


def test_idx_with_zero_dimensions_or_bytes_past_the_data_is_malformed(tmp_path):
    p = tmp_path / "x.idx"
    # magic 0x00000800: ubyte data of 0 dimensions; the spec's files have at least one
    p.write_bytes(bytes([0, 0, 0x08, 0, 7]))
    with pytest.raises(DataError, match="bad magic number 2048"):
        read_idx(p)
    # 2049 with one size of 2, then 3 data bytes: one byte more than the header says
    p.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 2, 1, 2, 3]))
    with pytest.raises(DataError, match=r"shape \(2,\) \(2 data bytes\) but the file has 3"):
        read_idx(p)


def test_mnist_label_10_is_outside_the_ten_classes(tmp_path):
    make_idx_dir(tmp_path)
    labels = np.arange(40) % 10
    labels[7] = 10
    write_idx(tmp_path / IDX_NAMES["train_labels"], labels)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte outside 0\.\.9"):
        load_dataset("mnist", data_dir=tmp_path)


def test_cifar_batch_labels_come_back_int64_whatever_they_were_pickled_as(tmp_path):
    # a batch whose labels are a uint8 array, not the originals' list of ints
    p = tmp_path / "data_batch_1"
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    with open(p, "wb") as f:
        pickle.dump({b"data": data, b"labels": np.array([3, 255], np.uint8)}, f, protocol=2)
    x, y = read_cifar_batch(p)
    assert y.dtype == np.int64 and y.tolist() == [3, 255]
    assert x.shape == (2, 3, 32, 32) and x[1, 2, 31, 31] == (2 * 3072 - 1) % 256


def test_idx_files_named_with_a_dot_before_idx_are_read(tmp_path):
    # some mirrors name them train-images.idx3-ubyte etc.
    arrays = make_idx_dir(tmp_path / "src")
    for k, name in IDX_NAMES.items():
        write_idx(tmp_path / name.replace("-idx", ".idx"), arrays[k])
    ds = load_dataset("mnist", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["test_labels"])
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), arrays["train_images"])


def test_labels_that_only_begin_like_a_published_file_are_ones_own(tmp_path):
    # 40 training labels whose first ten are MNIST's training file's (5 0 4 1 9 2 1 3 1 4):
    # not its 60,000, so Fashion-MNIST files of one's own, read as such
    make_idx_dir(tmp_path)
    labels = np.array([5, 0, 4, 1, 9, 2, 1, 3, 1, 4] * 4)
    write_idx(tmp_path / IDX_NAMES["train_labels"], labels)
    ds = load_dataset("fashion_mnist", data_dir=tmp_path)
    assert ds.y_train.tolist() == labels.tolist()


def test_unbalanced_idx_subsets_are_plain_draws_without_replacement(tmp_path):
    # balanced=False: np.random.default_rng(seed).choice(N, n, replace=False), sorted, for the
    # training split and default_rng(seed + 1) for the test split, whatever the classes
    arrays = make_idx_dir(tmp_path, n_train=40, n_test=20)
    ds = load_dataset("mnist", data_dir=tmp_path, train_size=13, test_size=7, seed=2,
                      balanced=False, normalize="none")
    i_tr = np.sort(np.random.default_rng(2).choice(40, size=13, replace=False))
    i_te = np.sort(np.random.default_rng(3).choice(20, size=7, replace=False))
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train_labels"][i_tr])
    np.testing.assert_array_equal(ds.x_test[:, 0].numpy(), arrays["test_images"][i_te])
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["test_labels"][i_te])


def test_keras_npz_of_flattened_images_or_2d_labels_is_malformed(tmp_path):
    # keras.datasets.mnist: x_* uint8 (N, 28, 28), y_* uint8 (N,); a flattened (N, 784) copy
    # would read as 1x784 images
    a = {"x_train": np.zeros((30, 784), np.uint8), "y_train": np.zeros(30, np.uint8),
         "x_test": np.zeros((10, 784), np.uint8), "y_test": np.zeros(10, np.uint8)}
    p = tmp_path / "mnist.npz"
    np.savez(p, **a)
    with pytest.raises(DataError, match=r"x_train must be uint8 with 3 dimension\(s\), got "
                                        r"uint8 \(30, 784\)"):
        load_dataset("mnist", data_dir=tmp_path)
    images = {"x_train": np.zeros((30, 28, 28), np.uint8),
              "x_test": np.zeros((10, 28, 28), np.uint8)}
    np.savez(p, **{**a, **images, "y_train": np.zeros((30, 1), np.uint8)})
    with pytest.raises(DataError, match=r"y_train must be uint8 with 1 dimension\(s\)"):
        load_dataset("mnist", data_dir=tmp_path)


def test_mnist_flatten_flattens_both_splits(tmp_path):
    arrays = make_idx_dir(tmp_path, n_train=40, n_test=20)
    ds = load_dataset("mnist", data_dir=tmp_path, normalize="none", flatten=True)
    assert ds.x_train.shape == (40, 784) and ds.x_test.shape == (20, 784)
    np.testing.assert_array_equal(ds.x_test.numpy(), arrays["test_images"].reshape(20, 784))


def test_a_missing_idx_file_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=rf"^IDX file not found: {tmp_path / 'nope'}$"):
        read_idx(tmp_path / "nope")


def test_an_unreadable_idx_file_beside_its_gz_is_not_called_cut_short(tmp_path):
    # the hint is for a malformed file (a decompression cut short); a corrupt gzip stream
    # in the file read first is a "cannot read" error without it
    arrays = make_idx_dir(tmp_path, gz=True)
    raw = tmp_path / IDX_NAMES["train_images"]
    raw.write_bytes(b"\x1f\x8b\x08\x00" + bytes(20))
    with pytest.raises(DataError, match=rf"^cannot read IDX file {raw}") as e:
        load_dataset("mnist", data_dir=tmp_path)
    assert "lies beside it" not in str(e.value)
    raw.unlink()
    ds = load_dataset("mnist", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.x_train.numpy()[:, 0], arrays["train_images"])


def test_idx_header_shorter_than_its_sizes_is_a_truncated_header(tmp_path):
    # magic 2051 announces three big-endian sizes (12 bytes); the file stops after one
    p = tmp_path / "x.idx"
    p.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 2]))
    with pytest.raises(DataError, match=rf"^malformed IDX file {p}: truncated header$"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_the_training_examples_of_idx_files_are_counted_in_a_header(tmp_path, gz):
    # a plan counted the published 60,000 whatever the files held
    from sgdlab.data.files import read_idx_shape, train_size_in_files

    make_idx_dir(tmp_path / "fashion", n_train=37, gz=gz)
    labels = tmp_path / "fashion" / (IDX_NAMES["train_labels"] + ".gz" * gz)
    counted = train_size_in_files("fashion-mnist", tmp_path)
    assert counted == (37, True, f"counted in {labels}")
    assert str(counted) == f"37 examples (counted in {labels})"
    # the header alone is read: the data behind it may be cut short (the run says so)
    blob = struct.pack(">IIII", 2051, 50, 28, 28) + np.random.default_rng(0).bytes(5000)
    p = tmp_path / "cut"
    p.write_bytes(gzip.compress(blob)[:2000] if gz else blob[:2000])
    assert read_idx_shape(p) == (50, 28, 28)
    with pytest.raises(DataError):
        read_idx(p)


def test_the_training_examples_of_cifar_batches_are_their_label_lists(tmp_path):
    import tarfile

    from sgdlab.data.files import train_size_in_files

    make_cifar10(tmp_path / "py", n=3)
    folder = tmp_path / "py" / "cifar-10-batches-py"
    assert train_size_in_files("cifar10", tmp_path / "py") == (15, True, f"counted in {folder}")
    # labels pickled as a numpy array (protocol 5), counted by its shape: no array is built
    x = np.zeros((4, 3072), np.uint8)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({"data": x, "labels": np.arange(4)}, f, protocol=5)
    assert train_size_in_files("cifar10", tmp_path / "py").n == 3 + 4 + 3 + 3 + 3
    # the binary version: records of a label byte and 3072 pixels
    b = tmp_path / "bin" / "cifar-10-batches-bin"
    b.mkdir(parents=True)
    for i in range(1, 6):
        (b / f"data_batch_{i}.bin").write_bytes(_binary_records(np.zeros((i, 3072), np.uint8),
                                                                np.arange(i) % 10))
    (b / "test_batch.bin").write_bytes(_binary_records(x, np.arange(4)))
    assert train_size_in_files("cifar10", tmp_path / "bin") == (15, True, f"counted in {b}")
    # a downloaded archive is not opened to count; a batch that does not unpickle (the run
    # fails on it, saying why), absent files, no folder: the published 50,000
    (tmp_path / "arc").mkdir()
    with tarfile.open(tmp_path / "arc" / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    assert train_size_in_files("cifar10", tmp_path / "arc") == (
        50000, False, f"the published size: {tmp_path / 'arc' / 'cifar-10-python.tar.gz'} is "
                      "not opened to count")
    (folder / "data_batch_4").write_bytes(b"not a pickle")
    counted = train_size_in_files("cifar10", tmp_path / "py")
    assert counted[:2] == (50000, False)
    assert counted.how.startswith(f"the published size: malformed CIFAR batch {folder}/data_")
    assert train_size_in_files("cifar10", tmp_path / "arc" / "none") == (
        50000, False, "the published size: the files are not found")
    assert train_size_in_files("cifar100", None) == (50000, False,
                                                      "the published size: no data_dir")
    assert train_size_in_files("digits", tmp_path) is None


def test_the_training_examples_of_keras_mnist_npz_are_its_labels(tmp_path):
    from sgdlab.data.files import train_size_in_files

    np.savez_compressed(tmp_path / "mnist.npz", x_train=np.zeros((6, 28, 28), np.uint8),
                        y_train=np.zeros(6, np.uint8), x_test=np.zeros((2, 28, 28), np.uint8),
                        y_test=np.zeros(2, np.uint8))
    assert train_size_in_files("mnist", tmp_path) == (6, True,
                                                       f"counted in {tmp_path / 'mnist.npz'}")
    # an IDX label file with no header: the published size, and why
    make_idx_dir(tmp_path / "mnist", n_train=9)
    (tmp_path / "mnist" / IDX_NAMES["train_labels"]).write_bytes(b"<html>")
    assert train_size_in_files("mnist", tmp_path) == (
        60000, False, f"the published size: malformed IDX file "
                      f"{tmp_path / 'mnist' / IDX_NAMES['train_labels']}: no IDX header")


def test_a_data_file_of_another_format_is_told_the_dict_of_tensors_to_write(tmp_path):
    # a saved TensorDataset was "only checkpoints sgdlab wrote can be read", and numpy's .npz
    # named no keys: each names the dict of tensors `file:` takes
    from torch.utils.data import TensorDataset

    from sgdlab.data.files import load_data_file

    x, y = torch.randn(6, 3), torch.arange(6) % 2
    torch.save(TensorDataset(x, y), tmp_path / "tds.pt")
    np.savez(tmp_path / "d.npz", x_train=x.numpy(), y_train=y.numpy())
    for name, reason in (("tds.pt", r"it holds pickled Python objects .*\(save its tensors, "
                                    r"not the objects that hold them\)"),
                         ("d.npz", r"a zip archive but not a torch one .*numpy's \.npz.*\)")):
        with pytest.raises(DataError, match=rf"cannot read data file .*{name}': {reason}; "
                                            r"`file:` names a torch.save'd dict of tensors "
                                            r"x_train, y_train .*ds.tensors\[0\]") as e:
            load_data_file(tmp_path / name)
        assert "checkpoint" not in str(e.value)


def test_idx_file_and_its_gz_holding_different_data_is_refused(tmp_path):
    # torchvision keeps X beside X.gz and X is read; an X left from another download (MNIST's
    # labels beside Fashion-MNIST's .gz) was trained on without a word
    arrays = make_idx_dir(tmp_path, gz=True)
    raw = tmp_path / IDX_NAMES["train_labels"]
    write_idx(raw, np.roll(arrays["train_labels"], 1))
    with pytest.raises(DataError, match=rf"^mnist: {raw} and {raw}.gz are two copies of "
                                        rf"{raw.name} holding different data"):
        load_dataset("mnist", data_dir=tmp_path)
    # the same data in both (torchvision's layout), the .gz in two gzip members (its
    # trailer's CRC is the last member's only): read
    blob = raw.with_name(raw.name + ".gz")
    plain = gzip.decompress(blob.read_bytes())
    raw.write_bytes(plain)
    blob.write_bytes(gzip.compress(plain[:9]) + gzip.compress(plain[9:]))
    ds = load_dataset("mnist", data_dir=tmp_path, normalize="none")
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train_labels"])
    # a .gz beside its copy that does not inflate is no copy of it either
    blob.write_bytes(gzip.compress(plain)[:-8] + bytes(8))
    with pytest.raises(DataError, match=rf"^mnist: {raw} and {blob} are two copies .* {blob} "
                                        r"cannot be read \(CRC check failed"):
        load_dataset("mnist", data_dir=tmp_path)
    # the .gz beside the folder 7-Zip unpacked it to is a copy too
    blob.write_bytes(gzip.compress(plain[:-1] + b"\x03"))
    raw.unlink()
    (tmp_path / raw.name).mkdir()
    (tmp_path / raw.name / raw.name).write_bytes(plain)
    with pytest.raises(DataError, match=rf"^mnist: {raw / raw.name} and {blob} are two copies "
                                        rf"of {raw.name} holding different data"):
        load_dataset("mnist", data_dir=tmp_path)


def test_a_dataset_folder_that_cannot_be_searched_is_a_data_error_naming_it(tmp_path,
                                                                             monkeypatch):
    # Path.is_dir / is_file raise PermissionError for a path inside a folder without search
    # permission: a traceback (the command line said "cannot write" it); root searches
    # every folder, so the refusal is simulated
    import errno
    import pathlib

    from sgdlab.data.files import find_files, train_size_in_files

    make_idx_dir(tmp_path / "MNIST" / "raw")
    make_cifar10(tmp_path)
    stat = pathlib.Path.stat
    locked = [tmp_path / "MNIST", tmp_path / "cifar-10-batches-py"]

    def refuse(path, **kwargs):
        if any(folder in path.parents for folder in locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return stat(path, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", refuse)
    for name, folder in (("mnist", "MNIST"), ("cifar10", "cifar-10-batches-py")):
        message = rf"^{name}: cannot look for its files at {tmp_path / folder}/\S+: Permission"
        with pytest.raises(DataError, match=message):
            load_dataset(name, data_dir=tmp_path)
        with pytest.raises(DataError, match=message):
            find_files(name, tmp_path)
        assert "Permission denied" in train_size_in_files(name, tmp_path).how
    with pytest.raises(DataError, match=rf"^data_dir for dataset 'mnist' cannot be looked "
                                        rf"into: {tmp_path / 'MNIST' / 'raw'}: Permission"):
        load_dataset("mnist", data_dir=tmp_path / "MNIST" / "raw")


def test_a_missing_data_file_at_a_relative_path_names_the_folder_it_was_looked_for_in(
        tmp_path, monkeypatch):
    # "data file not found: data.pt" did not say that the path is read from the working
    # folder, not from the folder of the config that names it
    from sgdlab.data.files import load_data_file

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^data file not found: data\.pt \(looked for in the "
                                        rf"working folder {tmp_path}\) \(`file:` names"):
        load_data_file("data.pt")
    with pytest.raises(DataError, match=rf"^data file not found: {tmp_path}/d\.pt \(`file:`"):
        load_data_file(tmp_path / "d.pt")
