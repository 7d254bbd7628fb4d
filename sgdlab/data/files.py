"""Loaders for dataset files the user downloaded: MNIST / Fashion-MNIST (IDX; MNIST also as
Keras' ``mnist.npz``, read without pickles) and CIFAR-10/100
(the python pickle batches or the binary version, extracted or still in the downloaded
``.tar.gz``).

Files are looked up in the subdirectories the datasets are usually unpacked to
(``data_dir/mnist``, ``data_dir/MNIST/raw`` as torchvision writes them, ``data_dir/raw`` when
``data_dir`` is torchvision's ``MNIST`` folder, ``data_dir/fashion`` as the Fashion-MNIST
repository has it, ``data_dir/cifar-10-batches-py``, ...) and then in ``data_dir`` itself. IDX
files may be gzip-compressed (``.gz``), or each lie in a folder of its own name (a ``.gz``
unpacked "to a folder"). MNIST and Fashion-MNIST label
files of the published sizes are recognised by their first labels, so one dataset's (or split's)
files are not read as the other's.

Trust assumption for CIFAR: the batches are pickles. They are read with a *restricted*
unpickler that only reconstructs numpy arrays, numpy dtypes and plain builtins (dict, list,
bytes, str, int); any other global in the pickle is refused with a :class:`DataError`, so a
tampered file cannot run code. Only the CIFAR files named below are ever unpickled.

A run's own file of tensors (``data: {file: PATH}``, :func:`load_data_file`) is read with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import pickle
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..accuracy import ignored_target
from ..errors import DataError, UserError, file_problem
from ..torch_files import read_torch_file
from ._common import (check_int, make_classification, normalize_images, require_data_dir,
                      seeded_indices)
from .base import Dataset
from .registry import canonical_name, register_dataset

# --- IDX (LeCun et al.'s MNIST format) ------------------------------------------------------

_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path, *, expect_ndim: int | None = None,
             expect_ubyte: bool = False) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed, detected by content): big-endian magic
    ``0x0000 <dtype code> <ndim>`` (2051 = uint8 3-D images, 2049 = uint8 1-D labels), ``ndim``
    big-endian uint32 sizes, then the data. Raises :class:`DataError` naming the file on any
    inconsistency (bad magic, truncated or oversized data, unexpected dimensionality, or with
    ``expect_ubyte`` a data type other than unsigned bytes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        gzipped = raw[:2] == b"\x1f\x8b"
        if gzipped:
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as e:
        raise _idx_read_error(e, path) from None
    if len(raw) < 4:
        raise DataError(f"malformed IDX file {path}: only {len(raw)} bytes, no header")
    magic = int.from_bytes(raw[:4], "big")
    zero, code, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"malformed IDX file {path}: bad magic number {magic} (0x{magic:08x}); "
                        f"expected 2051 for images or 2049 for labels"
                        f"{_idx_hint(path, raw, gzipped)}")
    if expect_ndim is not None and ndim != expect_ndim:
        want = {3: 2051, 1: 2049}.get(expect_ndim, "?")
        raise DataError(f"malformed IDX file {path}: magic number {magic} says {ndim}-D data, "
                        f"expected {expect_ndim}-D (magic {want})")
    if expect_ubyte and code != 0x08:
        raise DataError(f"malformed IDX file {path}: magic number {magic} says "
                        f"{_IDX_DTYPES[code]} data, expected unsigned bytes (magic 2051 for "
                        f"images, 2049 for labels)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"malformed IDX file {path}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on a bad header
    if len(raw) - header != expected:
        raise DataError(f"malformed IDX file {path}: header says shape {shape} "
                        f"({expected} data bytes) but the file has {len(raw) - header}")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _idx_read_error(e: Exception, path: Path) -> DataError:
    """The :class:`DataError` for IDX file ``path`` that could not be read or inflated: an
    ``OSError`` (no permission, a folder, an I/O error; gzip's BadGzipFile too), an
    ``EOFError`` or a ``zlib.error`` (a corrupt deflate stream), with the reason."""
    return DataError(f"cannot read IDX file {path}: {_read_problem(e)}")


def _read_problem(e: Exception) -> str:
    """Why a file could not be read or inflated, for a message."""
    return file_problem(e) if isinstance(e, OSError) and e.errno is not None else str(e)


def _idx_hint(path: Path, raw: bytes, gzipped: bool) -> str:
    """What a bad IDX magic number most likely means, for the error message."""
    if raw[:2] == b"\x1f\x8b":
        return " (the decompressed data is gzip-compressed again: the file was compressed twice)"
    notes = ["named .gz but not gzip-compressed"] if path.suffix == ".gz" and not gzipped else []
    if raw.lstrip()[:1] == b"<":
        notes.append("it starts like an HTML page: a failed download?")
    return f" ({'; '.join(notes)})" if notes else ""


_IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
              "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
# "raw": data_dir may be torchvision's own MNIST or FashionMNIST folder
_IDX_SUBDIRS = {"mnist": ("mnist", "MNIST", "MNIST/raw", "mnist/raw", "raw"),
                "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST",
                                  "FashionMNIST/raw", "fashion-mnist/raw", "fashion_mnist/raw",
                                  # the layout of zalandoresearch/fashion-mnist (data/fashion)
                                  "fashion", "data/fashion", "raw")}
# (dataset, split) -> (number of labels, the first ten) of the published label files: a file of
# the other dataset or split is recognised by them (no chance file has both)
_IDX_LABEL_PRINTS = {
    ("mnist", "train"): (60000, (5, 0, 4, 1, 9, 2, 1, 3, 1, 4)),
    ("mnist", "test"): (10000, (7, 2, 1, 0, 4, 1, 4, 9, 5, 9)),
    ("fashion_mnist", "train"): (60000, (9, 0, 0, 3, 0, 2, 7, 2, 5, 5)),
    ("fashion_mnist", "test"): (10000, (9, 2, 1, 1, 6, 1, 4, 6, 5, 7)),
}
_IDX_URLS = {"mnist": "https://yann.lecun.com/exdb/mnist/ (or a mirror, e.g. "
                      "https://ossci-datasets.s3.amazonaws.com/mnist/)",
             "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist "
                              "(data/fashion/*.gz)"}


# Keras' copy (keras.datasets.mnist.load_data keeps ~/.keras/datasets/mnist.npz); its
# Fashion-MNIST is the four .gz IDX files in fashion-mnist/, found as such
_KERAS_NPZ = {"mnist": "mnist.npz"}
_NPZ_KEYS = {"train_images": "x_train", "train_labels": "y_train", "test_images": "x_test",
             "test_labels": "y_test"}


def _idx_names(stem: str) -> list[str]:
    # "train-images.idx3-ubyte" (dot) is how some mirrors name the same files
    dotted = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", dotted, dotted + ".gz"]


def _idx_copies(d: Path, stem: str) -> Iterator[Path]:
    """The files in folder ``d`` that may hold IDX file ``stem``, the one read first: its
    plain, ``.gz`` and dotted names, each also in a folder of its own name (a ``.gz``
    unpacked "to a folder", 7-Zip's default, gives ``train-images-idx3-ubyte/`` holding the
    file); only a folder is looked into (a dry run looks the files up for each run, in the
    folders of a download not made yet too)."""
    names = _idx_names(stem)
    for n in names:
        for p in [d / n] + ([d / n / m for m in names] if (d / n).is_dir() else []):
            if p.is_file():
                yield p


class _FolderNotSearched(DataError):
    """A folder on the way to a dataset's files may not be searched (no permission)."""


def _searching(find):
    """``find(dataset, root)`` (the look-up of ``dataset``'s files in ``root``) with a path
    inside a folder that may not be searched a :class:`DataError` naming it: ``Path.is_dir``
    and ``is_file`` raise ``PermissionError`` there, where a missing path is False (a
    traceback; the command line said "cannot write" the path)."""
    @functools.wraps(find)
    def searched(dataset: str, root: Path):
        try:
            return find(dataset, root)
        except DataError:
            raise
        except OSError as e:
            where = f" at {os.fsdecode(e.filename)}" if e.filename is not None else ""
            raise _FolderNotSearched(f"{dataset}: cannot look for its files{where}: "
                                     f"{_read_problem(e)} (each folder on the way must be "
                                     "searchable)") from None
    return searched


@_searching
def _find_idx(dataset: str, root: Path) -> dict[str, Path] | Path:
    """The four IDX files, all from one folder: the dataset's own sub-folders first, then
    ``root`` itself (so MNIST files lying in ``root`` are not read as Fashion-MNIST when a
    ``FashionMNIST/raw`` folder is there; and train and test never come from two folders).
    Without them, the path of Keras' ``mnist.npz`` in ``root`` when there is one."""
    # raw/ of the other dataset's torchvision folder is not this dataset's
    other = "fashion" if dataset == "mnist" else "mnist"
    subdirs = [s for s in _IDX_SUBDIRS[dataset]
               if s != "raw" or not root.name.lower().startswith(other)]
    # a sub-folder that is not there holds none of the files
    dirs = [d for d in [root / s for s in subdirs] + [root] if d.is_dir()]

    def missing(d: Path, stem: str) -> str:
        folder = next((d / n for n in _idx_names(stem) if (d / n).is_dir()), None)
        return (f"{folder} (a folder, without the file {stem} in it)" if folder else
                f"{d / stem} (or .gz)")

    for d in dirs:
        paths = {k: next(_idx_copies(d, stem), None) for k, stem in _IDX_FILES.items()}
        if all(paths.values()):
            return paths  # type: ignore[return-value]
        if any(paths.values()):
            gone = [missing(d, _IDX_FILES[k]) for k, v in paths.items() if v is None]
            raise DataError(
                f"{dataset}: {d} holds only some of the four IDX files: missing "
                f"{', '.join(gone)}; download them from {_IDX_URLS[dataset]}")
    npz = root / _KERAS_NPZ[dataset] if dataset in _KERAS_NPZ else None
    if npz is not None and npz.is_file():
        return npz
    stem = _IDX_FILES["train_images"]
    keras = f", or Keras' {npz.name} in {root}" if npz is not None else ""
    raise DataError(
        f"{dataset}: missing file {root / stem} (or {stem}.gz, also looked in "
        f"{', '.join(str(root / s) for s in subdirs)}{keras}); download the four IDX files "
        f"({', '.join(_IDX_FILES.values())}) from {_IDX_URLS[dataset]}")


def _read_keras_npz(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of Keras' ``mnist.npz`` (``x_train`` uint8 (N, 28, 28), ``y_train``
    (N,), ``x_test``, ``y_test``) by the keys of the IDX files; read without pickles, so an
    object array in the file is refused. A :class:`DataError` naming the file and the key."""
    import zipfile

    try:
        f = np.load(path, allow_pickle=False)
        if not hasattr(f, "files"):   # a bare .npy saved under the name: an array, no file
            raise DataError(f"malformed {path}: one array, not the archive of "
                            f"{', '.join(_NPZ_KEYS.values())}")
        with f:
            missing = [k for k in _NPZ_KEYS.values() if k not in f.files]
            if missing:
                raise DataError(f"malformed {path}: no array(s) {', '.join(missing)}; has "
                                f"{', '.join(f.files) or 'none'}")
            arrays = {k: f[key] for k, key in _NPZ_KEYS.items()}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path}: {_read_problem(e)}") from None
    for k, a in arrays.items():
        ndim = 3 if k.endswith("images") else 1
        if a.dtype != np.uint8 or a.ndim != ndim:
            raise DataError(f"malformed {path}: {_NPZ_KEYS[k]} must be uint8 with {ndim} "
                            f"dimension(s), got {a.dtype} {a.shape}")
    return arrays


def _read_idx_beside_gz(path: Path, ndim: int) -> np.ndarray:
    """:func:`read_idx`; a malformed file that has its ``.gz`` beside it (torchvision keeps
    both) is said to be a decompression cut short, with the fix."""
    try:
        return read_idx(path, expect_ndim=ndim, expect_ubyte=True)
    except DataError as e:
        gz = path.with_name(path.name + ".gz")
        if not gz.is_file() or not str(e).startswith("malformed"):
            raise
        raise DataError(f"{e} ({gz} lies beside it: a decompression cut short? Delete "
                        f"{path.name} to read the .gz, or decompress it again)") from None


def _check_idx_copies(dataset: str, path: Path, folder: Path, stem: str) -> None:
    """A :class:`DataError` when another copy of IDX file ``path`` lies in ``folder``
    (:func:`_idx_copies`) holding other data: torchvision keeps ``X`` beside ``X.gz`` and
    ``path`` alone is read, so an ``X`` left from another download was read without a word.
    Compared by length and CRC-32, a ``.gz`` by its trailer's (inflated to compare when they
    differ: a gzip of several members has its last member's)."""
    for other in _idx_copies(folder, stem):
        if other == path:
            continue
        try:
            crc = _idx_crc(other)   # None only for ``other``: ``path`` was read whole
            if (crc is not None and crc == _idx_crc(path)) or \
                    _idx_bytes(other) == _idx_bytes(path):
                continue
            problem = " holding different data"
        except (OSError, EOFError, zlib.error) as e:
            problem = f", but {other} cannot be read ({_read_problem(e)})"
        raise DataError(f"{dataset}: {path} and {other} are two copies of {stem}{problem}: "
                        f"delete the one that is not {dataset}'s ({path} is the one read), or "
                        f"both and decompress the .gz again")


def _idx_bytes(path: Path) -> bytes:
    """The bytes of IDX file ``path``, inflated when it is gzip-compressed (by content)."""
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _idx_crc(path: Path) -> tuple[int, int] | None:
    """(length mod 2**32, CRC-32) of the data :func:`_idx_bytes` gives, a gzip file's from its
    trailer (its last member's) without inflating it; None for a gzip file too short to
    have one."""
    with open(path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":
            if f.seek(0, os.SEEK_END) < 18:     # a gzip header and trailer take 18 bytes
                return None
            f.seek(-8, os.SEEK_END)
            crc, size = struct.unpack("<II", f.read(8))
            return size, crc
        f.seek(0)
        size = crc = 0
        while block := f.read(1 << 24):
            size, crc = size + len(block), zlib.crc32(block, crc)
        return size % 2**32, crc


def _idx_folder(paths: dict[str, Path]) -> Path:
    """The folder the four IDX files were found in (above any folder named like a file)."""
    return Path(os.path.commonpath([str(p.parent) for p in paths.values()]))


def _load_idx_dataset(dataset: str, data_dir, *, seed: int, train_size, test_size, balanced: bool,
                      normalize: str, flatten: bool) -> Dataset:
    root = require_data_dir(data_dir, dataset)
    found = _find_idx(dataset, root)
    if isinstance(found, Path):
        arrays = _read_keras_npz(found)
        paths = {k: f"{found} ({key})" for k, key in _NPZ_KEYS.items()}  # for the messages
        source = f"Keras' {found}"
    else:
        arrays = {k: _read_idx_beside_gz(p, 3 if k.endswith("images") else 1)
                  for k, p in found.items()}
        folder = _idx_folder(found)
        for k, p in found.items():
            _check_idx_copies(dataset, p, folder, _IDX_FILES[k])
        paths = {k: str(p) for k, p in found.items()}
        source = f"IDX files in {folder}"
    for split in ("train", "test"):
        xi, yi = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(xi) == 0:
            raise DataError(f"{dataset}: {paths[split + '_images']} holds no images")
        if len(xi) != len(yi):
            raise DataError(f"{dataset}: {paths[split + '_images']} has {len(xi)} images but "
                            f"{paths[split + '_labels']} has {len(yi)} labels")
        if yi.size and (yi.min() < 0 or yi.max() > 9):
            raise DataError(f"{dataset}: labels in {paths[split + '_labels']} outside 0..9")
        held = next((k for k, (n, first) in _IDX_LABEL_PRINTS.items()
                     if len(yi) == n and tuple(yi[:10].tolist()) == first), None)
        if held is not None and held != (dataset, split):
            fix = ("train and test files swapped?" if held[0] == dataset else
                   f"point data_dir at {dataset}'s files ({_IDX_URLS[dataset]})")
            raise DataError(f"{dataset}: {paths[split + '_labels']} holds the {held[1]} labels of "
                            f"{held[0]} (its length and first ten labels are theirs), not the "
                            f"{split} labels of {dataset}: {fix}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(f"{dataset}: {paths['train_images']} holds images of "
                        f"{arrays['train_images'].shape[1:]} pixels but "
                        f"{paths['test_images']} of {arrays['test_images'].shape[1:]}")
    return _finish_files(dataset, arrays["train_images"][:, None], arrays["train_labels"],
                         arrays["test_images"][:, None], arrays["test_labels"], num_classes=10,
                         seed=seed, train_size=train_size, test_size=test_size, balanced=balanced,
                         normalize=normalize, flatten=flatten, source=source)


def _finish_files(dataset: str, x_tr, y_tr, x_te, y_te, *, num_classes: int, seed: int,
                  train_size, test_size, balanced: bool, normalize: str, flatten: bool,
                  source: str) -> Dataset:
    train_size = check_int("train_size", train_size, minimum=1, allow_none=True)
    test_size = check_int("test_size", test_size, minimum=1, allow_none=True)
    # independent seeded streams for the two splits, so changing test_size keeps the train subset
    i_tr = seeded_indices(y_tr, train_size, seed, balanced=balanced, what="train_size")
    i_te = seeded_indices(y_te, test_size, seed + 1, balanced=balanced, what="test_size")
    x_tr, x_te, info = normalize_images(x_tr[i_tr], x_te[i_te], normalize, 255.0)
    return make_classification(x_tr, y_tr[i_tr], x_te, y_te[i_te], name=dataset, seed=seed,
                               num_classes=num_classes, flatten=flatten, source=source,
                               subset={"train_size": train_size, "test_size": test_size,
                                       "balanced": bool(balanced)}, **info)


@register_dataset("mnist")
def load_mnist(*, seed: int = 0, data_dir=None, train_size: int | None = None,
               test_size: int | None = None, balanced: bool = True, normalize: str = "unit",
               flatten: bool = False) -> Dataset:
    """MNIST from the four IDX files in ``data_dir`` (60,000 / 10,000 images, 1x28x28), or
    without them from Keras' ``mnist.npz`` there (``~/.keras/datasets``).

    ``train_size`` / ``test_size`` take a seeded subset (class-balanced unless
    ``balanced=False``); ``None`` keeps all. ``normalize``: ``"unit"`` ([0, 1], default),
    ``"symmetric"`` ([−1, 1]), ``"standardize"`` (per-channel, train statistics), ``"gcn"``
    (global contrast normalisation), ``"gcn-zca"`` (then ZCA whitening fitted on the training
    images: :mod:`sgdlab.data.preprocess`), ``"none"`` (0..255). The statistics and the ZCA
    fit use the ``train_size`` subset.
    """
    return _load_idx_dataset("mnist", data_dir, seed=seed, train_size=train_size,
                             test_size=test_size, balanced=balanced, normalize=normalize,
                             flatten=flatten)


@register_dataset("fashion_mnist")
def load_fashion_mnist(*, seed: int = 0, data_dir=None, train_size: int | None = None,
                       test_size: int | None = None, balanced: bool = True,
                       normalize: str = "unit", flatten: bool = False) -> Dataset:
    """Fashion-MNIST from its four IDX files in ``data_dir``; options as :func:`load_mnist`.
    (Zhu et al. 2019 train on 1,200 randomly sampled examples, 200 of them mislabelled:
    ``train_size=1200, balanced=False`` and :func:`~sgdlab.data.transforms.with_label_noise`
    with ``num_noisy=200``.)"""
    return _load_idx_dataset("fashion_mnist", data_dir, seed=seed, train_size=train_size,
                             test_size=test_size, balanced=balanced, normalize=normalize,
                             flatten=flatten)


# --- CIFAR python pickle batches ------------------------------------------------------------

_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "bytes"),
    ("builtins", "bytearray"), ("builtins", "str"), ("builtins", "int"), ("builtins", "float"),
    ("__builtin__", "dict"), ("__builtin__", "list"), ("__builtin__", "tuple"),
    ("__builtin__", "bytes"), ("__builtin__", "bytearray"), ("__builtin__", "str"),
    ("__builtin__", "int"), ("__builtin__", "float"),
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1")
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Only numpy arrays/dtypes and builtin containers; everything else is refused."""

    def __init__(self, file, path: str | Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name} from {self._path}: CIFAR batches "
                        f"only contain numpy arrays, lists and bytes")


def read_cifar_batch(path: str | Path, label_key: bytes = b"labels"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch: a pickled dict with ``b"data"`` (uint8, N x 3072, each row
    1024 red, 1024 green, 1024 blue values of a 32x32 image in row-major order) and
    ``label_key`` (``b"labels"`` for CIFAR-10, ``b"fine_labels"`` for CIFAR-100).
    Returns images (N, 3, 32, 32) uint8 and labels (N,) int64. str keys are accepted too."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _parse_cifar_pickle(f, str(path), label_key)
    except OSError as e:
        raise _cifar_read_error(e, path) from None


def _cifar_read_error(e: OSError, path: Path) -> DataError:
    """The :class:`DataError` for an ``OSError`` met reading CIFAR file ``path``: not found, or
    cannot be read (no permission, an I/O error) with the reason."""
    if isinstance(e, DataError):   # DataError is a FileNotFoundError: from the parser
        return e
    if isinstance(e, FileNotFoundError):
        return DataError(f"CIFAR batch not found: {path}")
    return DataError(f"cannot read CIFAR batch {path}: {file_problem(e)}")


def _unpickle_cifar(f, where: str, unpickler: type = _RestrictedUnpickler) -> Any:
    """What the CIFAR batch in file object ``f`` pickles; a :class:`DataError` naming
    ``where`` when it does not unpickle (an ``OSError`` reading it is left to the caller)."""
    try:
        return unpickler(f, where).load()
    except (DataError, OSError):  # from find_class; or reading the file failed
        raise
    except Exception as e:  # pickle raises many types on corrupt input
        raise DataError(f"malformed CIFAR batch {where}: cannot unpickle ({type(e).__name__}: "
                        f"{e})") from None


def _parse_cifar_pickle(f, where: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    obj = _unpickle_cifar(f, where)
    if not isinstance(obj, dict):
        raise DataError(f"malformed CIFAR batch {where}: expected a pickled dict, got "
                        f"{type(obj).__name__}")
    obj = {(k.encode() if isinstance(k, str) else k): v for k, v in obj.items()}
    missing = [k.decode() for k in (b"data", label_key) if k not in obj]
    if missing:
        keys = sorted(k.decode(errors="replace") for k in obj if isinstance(k, bytes))
        raise DataError(f"malformed CIFAR batch {where}: missing key(s) {missing}; has {keys}")
    try:
        data = np.asarray(obj[b"data"])
        labels = np.asarray(obj[label_key])
    except ValueError as e:  # ragged nested lists
        raise DataError(f"malformed CIFAR batch {where}: {e}") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"malformed CIFAR batch {where}: b'data' must be uint8 of shape (N, 3072), "
                        f"got {data.dtype} {data.shape}")
    if len(data) == 0:
        raise DataError(f"malformed CIFAR batch {where}: it holds no images")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"malformed CIFAR batch {where}: {label_key!r} must be {len(data)} "
                        f"integers, got {labels.dtype} {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar_binary(data: bytes | str | Path, *, label_bytes: int = 1, label_index: int = 0,
                      where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one file of CIFAR's binary version: records of ``label_bytes`` label bytes (CIFAR-10:
    1, the class; CIFAR-100: 2, coarse then fine) followed by 3072 pixel bytes (the red, green
    and blue planes of a 32x32 image, row-major). ``label_index`` picks the label byte.
    ``data``: the file's bytes or its path. Returns images (N, 3, 32, 32) uint8 and labels
    (N,) int64."""
    if isinstance(data, (str, Path)):
        where = where or str(data)
        try:
            data = Path(data).read_bytes()
        except OSError as e:
            raise _cifar_read_error(e, Path(where)) from None
    where = where or "CIFAR binary batch"
    rec = label_bytes + 3072
    if len(data) == 0 or len(data) % rec:
        raise DataError(f"malformed CIFAR binary batch {where}: {len(data)} bytes is not a "
                        f"whole number of {rec}-byte records")
    arr = np.frombuffer(data, dtype=np.uint8).reshape(-1, rec)
    return (arr[:, label_bytes:].reshape(-1, 3, 32, 32).copy(),
            arr[:, label_index].astype(np.int64))


_CIFAR = {
    "cifar10": {"subdir": "cifar-10-batches-py", "bin_subdir": "cifar-10-batches-bin",
                "classes": 10, "key": b"labels", "label_bytes": 1,
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "published": {"train": 10000, "test": 10000},   # images per file
                "archives": ("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"),
                # a folder of data_dir named for the dataset, as one keeps several datasets
                "dirs": ("cifar10", "CIFAR10", "cifar-10", "CIFAR-10"),
                "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"},
    "cifar100": {"subdir": "cifar-100-python", "bin_subdir": "cifar-100-binary",
                 "classes": 100, "key": b"fine_labels", "label_bytes": 2,
                 "train": ["train"], "test": ["test"],
                 "published": {"train": 50000, "test": 10000},
                 "archives": ("cifar-100-python.tar.gz", "cifar-100-binary.tar.gz"),
                 "dirs": ("cifar100", "CIFAR100", "cifar-100", "CIFAR-100"),
                 "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"},
}


def _cifar_source(root: Path, spec: dict) -> tuple[str, Path, Path]:
    """(kind, location, folder) of the first CIFAR layout found in ``root`` or in its folder
    named for the dataset (``root/cifar10``, ``root/CIFAR-10``, ...): the extracted python
    batches (``"python"``), the extracted binary version (``"binary"``), or one of the two
    downloaded archives, read without extracting (``"python-archive"``, ``"binary-archive"``);
    ``folder`` is the one of those two that holds it."""
    first = spec["train"][0]
    folders = [root] + [root / s for s in spec["dirs"] if (root / s).is_dir()]
    for base in folders:
        for kind, loc, name in (("python", base / spec["subdir"], first), ("python", base, first),
                                ("binary", base / spec["bin_subdir"], first + ".bin"),
                                ("binary", base, first + ".bin")):
            if (loc / name).is_file():
                return kind, loc, base
    for base in folders:
        for kind, archive in zip(("python-archive", "binary-archive"), spec["archives"]):
            if (base / archive).is_file():
                return kind, base / archive, base
    raise DataError(f"missing file {root / spec['subdir'] / first}: put the CIFAR files in "
                    f"{root} or in {root / spec['dirs'][0]}, extracted or as downloaded "
                    f"({spec['url']}, {spec['archives'][0]} or {spec['archives'][1]}, "
                    f"extracted or not; also looked in the folders "
                    f"{', '.join(spec['dirs'][1:])} of {root})")


@_searching
def _cifar_files(dataset: str, root: Path) -> tuple[str, Path, list[str]]:
    """(kind, location, file names) of ``dataset``'s files in ``root`` (see
    :func:`_cifar_source`); a :class:`DataError` names the first file missing from an
    extracted layout, before any is read."""
    spec = _CIFAR[dataset]
    try:
        kind, loc, base = _cifar_source(root, spec)
    except DataError as e:
        other = "cifar100" if dataset == "cifar10" else "cifar10"
        try:   # the other CIFAR's files where these were looked for: name them
            held = _cifar_source(root, _CIFAR[other])[1]
        except DataError:
            raise DataError(f"{dataset}: {e}") from None
        raise DataError(f"{dataset}: {e}. {held} holds {other}'s files: load the dataset "
                        f"{other!r}, or put {dataset}'s beside them") from None
    binary = kind.startswith("binary")
    names = [n + (".bin" if binary else "") for n in spec["train"] + spec["test"]]
    for name in names if not kind.endswith("archive") else []:
        if not (loc / name).is_file():
            raise DataError(f"{dataset}: missing file {loc / name}; download and extract "
                            f"{spec['url']} into {base}")
    return kind, loc, names


def _archive_members(path: Path, names: list[str]) -> dict[str, bytes]:
    """The files ``names`` (base names) of a tar archive, read in one pass."""
    import tarfile

    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in names and base not in out:
                    out[base] = tf.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read the archive {path} ({type(e).__name__}: {e}); "
                        f"re-download it or extract it by hand") from None
    missing = [n for n in names if n not in out]
    if missing:
        raise DataError(f"the archive {path} has no file(s) {', '.join(missing)}")
    return out


def _load_cifar(dataset: str, data_dir, *, seed: int, train_size, test_size, balanced: bool,
                normalize: str, flatten: bool, labels: str = "fine") -> Dataset:
    spec = _CIFAR[dataset]
    root = require_data_dir(data_dir, dataset)
    kind, loc, names = _cifar_files(dataset, root)
    key = spec["key"]
    if dataset == "cifar100":
        if labels not in ("fine", "coarse"):
            raise UserError(f"option 'labels' must be 'fine' or 'coarse', got {labels!r}")
        key = b"fine_labels" if labels == "fine" else b"coarse_labels"
    num_classes = spec["classes"] if labels == "fine" else 20
    binary = kind.startswith("binary")
    # binary records: CIFAR-100's label bytes are (coarse, fine)
    label_index = 1 if dataset == "cifar100" and labels == "fine" else 0
    blobs = _archive_members(loc, names) if kind.endswith("archive") else None
    held: dict[str, int] = {}   # images per file, by the file's name in the spec

    def part(name: str) -> tuple[np.ndarray, np.ndarray]:
        where = f"{loc}:{name}" if blobs is not None else str(loc / name)
        if binary:
            x, y = read_cifar_binary(blobs[name] if blobs is not None else loc / name,
                                     label_bytes=spec["label_bytes"], label_index=label_index,
                                     where=where)
        elif blobs is not None:
            import io
            x, y = _parse_cifar_pickle(io.BytesIO(blobs[name]), where, key)
        else:
            x, y = read_cifar_batch(loc / name, key)
        bad = np.flatnonzero((y < 0) | (y >= num_classes))
        if bad.size:   # per file, so the message names the file that holds it
            raise DataError(f"{dataset}: {where} holds label {int(y[bad[0]])} (of image "
                            f"{int(bad[0])}, {bad.size} such), outside 0..{num_classes - 1}")
        return x, y

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [part(n + (".bin" if binary else "")) for n in names]
        held.update((n, len(a)) for n, (a, _) in zip(names, parts))
        # CIFAR-10's five training batches hold 10,000 images each; a binary batch cut at a
        # record boundary reads as fewer without any other sign
        counts = [len(a) for a, _ in parts]
        if len(set(counts)) > 1:
            short = names[counts.index(min(counts))] + (".bin" if binary else "")
            where = f"{loc}:{short}" if blobs is not None else str(loc / short)
            raise DataError(f"{dataset}: {where} holds {min(counts)} images, "
                            f"{names[counts.index(max(counts))]} {max(counts)}: the training "
                            f"batches hold equally many (a file cut short?)")
        x = np.concatenate([a for a, _ in parts])
        y = np.concatenate([b for _, b in parts])
        return x, y

    x_tr, y_tr = read(spec["train"])
    x_te, y_te = read(spec["test"])
    if binary:      # a pickle cut short does not unpickle: a smaller one is whole, one's own
        _check_published_counts(dataset, held, lambda n: f"{loc}:{n}" if blobs is not None
                                else str(loc / n))
    return _finish_files(dataset, x_tr, y_tr, x_te, y_te, num_classes=num_classes, seed=seed,
                         train_size=train_size, test_size=test_size, balanced=balanced,
                         normalize=normalize, flatten=flatten,
                         source=f"CIFAR {kind.replace('-', ' ')} batches in {loc}")


def _check_published_counts(dataset: str, held: dict[str, int], where) -> None:
    """A :class:`DataError` when one binary file of ``dataset`` holds its published number of
    images and another does not: the set is the published one, and the other file was cut
    short (a binary file cut at a record boundary reads as fewer images with no other sign). A
    set of smaller files of one's own, none at the published count, is not checked, nor are
    pickled batches (one cut short fails to unpickle; a smaller whole one is one's own)."""
    spec = _CIFAR[dataset]
    expected = {n: spec["published"][split] for split in ("train", "test") for n in spec[split]}
    full = next((n for n in held if held[n] == expected[n]), None)
    short = next((n for n in held if held[n] != expected[n]), None)
    if full is not None and short is not None:
        raise DataError(f"{dataset}: {where(short + '.bin')} holds {held[short]:,} images, "
                        f"expected {expected[short]:,} (the published file; {full}.bin holds its "
                        f"published {expected[full]:,}): a file cut short? Extract it again from "
                        f"the downloaded archive ({spec['url']}, or its binary version)")


@register_dataset("cifar10")
def load_cifar10(*, seed: int = 0, data_dir=None, train_size: int | None = None,
                 test_size: int | None = None, balanced: bool = True, normalize: str = "unit",
                 flatten: bool = False) -> Dataset:
    """CIFAR-10 from ``cifar-10-batches-py/data_batch_1..5, test_batch`` in ``data_dir``
    (or the batches directly in it, or either in ``data_dir/cifar10``; the binary version and
    the downloaded archives too: :func:`_cifar_source`): 50,000 / 10,000 images, 3x32x32, 10
    classes.
    Options as :func:`load_mnist`; ``normalize="standardize"`` uses per-channel train statistics,
    ``"imagenet"`` torchvision's ImageNet ones (for pretrained ImageNet weights)."""
    return _load_cifar("cifar10", data_dir, seed=seed, train_size=train_size,
                       test_size=test_size, balanced=balanced, normalize=normalize,
                       flatten=flatten)


@register_dataset("cifar100")
def load_cifar100(*, seed: int = 0, data_dir=None, train_size: int | None = None,
                  test_size: int | None = None, balanced: bool = True, normalize: str = "unit",
                  flatten: bool = False, labels: str = "fine") -> Dataset:
    """CIFAR-100 from ``cifar-100-python/train, test`` in ``data_dir``: 100 fine classes
    (``labels="coarse"``: the 20 superclasses). Options as :func:`load_cifar10`."""
    return _load_cifar("cifar100", data_dir, seed=seed, train_size=train_size,
                       test_size=test_size, balanced=balanced, normalize=normalize,
                       flatten=flatten, labels=labels)


def published_train_size(name: str) -> int | None:
    """The training examples in the published files of file dataset ``name``, as the loader
    keeps them all (no ``train_size``): 60,000 for MNIST and Fashion-MNIST, 50,000 for
    CIFAR-10 and CIFAR-100 (the counts the loaders recognise the published files by); None
    for another dataset. Files of one's own, which the loaders read too, may hold another
    number (:func:`train_size_in_files` counts them): this is what a plan counts steps with
    where they cannot be counted."""
    dataset = canonical_name(name)
    if dataset in _IDX_SUBDIRS:
        return _IDX_LABEL_PRINTS[dataset, "train"][0]
    if dataset in _CIFAR:
        spec = _CIFAR[dataset]
        return spec["published"]["train"] * len(spec["train"])
    return None


class TrainSize(NamedTuple):
    """The training examples a file dataset's run sees before any subset, and how that is
    known (:func:`train_size_in_files`)."""

    n: int
    counted: bool      # counted in the files; False: the published size stands in for it
    how: str           # where it was counted, or why the published size stands

    def __str__(self) -> str:
        return f"{self.n:,} examples ({self.how})"


def train_size_in_files(name: str, data_dir) -> TrainSize | None:
    """How many training examples file dataset ``name`` holds in ``data_dir``, counted without
    loading the data: an IDX training label file's header (gzipped too: only its first bytes
    are inflated), Keras' ``y_train``, a CIFAR binary file's size in records, a python
    batch's label list (unpickled without building its images). Where the files are absent
    (a dry run before the download), lie in a downloaded archive (not opened to count) or
    their header cannot be read (the run says why), the published size
    (:func:`published_train_size`), said so. None for a dataset that reads no such files."""
    dataset = canonical_name(name)
    published = published_train_size(dataset)
    if published is None:
        return None
    if data_dir is None:
        return TrainSize(published, False, "the published size: no data_dir")
    try:
        root = require_data_dir(data_dir, dataset)
        found = (_find_idx(dataset, root) if dataset in _IDX_SUBDIRS
                 else _cifar_files(dataset, root))
    except _FolderNotSearched as e:
        return TrainSize(published, False, f"the published size: {e}")
    except DataError:
        return TrainSize(published, False, "the published size: the files are not found")
    try:
        n, where = _count_train_examples(dataset, found)
    except DataError as e:
        return TrainSize(published, False, f"the published size: {e}")
    if n is None:
        return TrainSize(published, False, f"the published size: {where} is not opened to "
                                           "count")
    return TrainSize(n, True, f"counted in {where}")


def _count_train_examples(dataset: str, found) -> tuple[int | None, str]:
    """(training examples, where counted) in the files :func:`_find_idx` or
    :func:`_cifar_files` found for ``dataset``; None for a downloaded archive."""
    if isinstance(found, Path):     # Keras' mnist.npz: its small label array only
        import zipfile

        try:
            with np.load(found, allow_pickle=False) as f:  # a bare .npy: no `with`, TypeError
                return len(f[_NPZ_KEYS["train_labels"]]), str(found)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot read {found}: {e}") from None
    if isinstance(found, dict):     # the four IDX files
        return read_idx_shape(found["train_labels"])[0], str(found["train_labels"])
    kind, loc, _ = found
    if kind.endswith("archive"):
        return None, str(loc)
    spec = _CIFAR[dataset]
    if kind == "binary":
        record = spec["label_bytes"] + 3072
        return sum(_stat(loc / f"{n}.bin").st_size // record for n in spec["train"]), str(loc)
    return sum(_cifar_labels_counted(str(loc / n), spec["key"], *_file_key(loc / n))
               for n in spec["train"]), str(loc)


def _file_key(path: Path) -> tuple[int, ...]:
    """What tells a file from another at its path, or the same file changed."""
    st = _stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as e:
        raise DataError(f"cannot read {path}: {file_problem(e)}") from None


def read_idx_shape(path: str | Path) -> tuple[int, ...]:
    """The sizes an IDX file's header gives (its first, the number of items), read from the
    header alone: ``4 + 4 * ndim`` bytes, inflated first when the file is gzip-compressed. A
    :class:`DataError` naming the file when they cannot be read; :func:`read_idx` checks
    the rest."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw) if gzipped else raw
            head = f.read(4)
            if len(head) == 4 and head[:2] == b"\x00\x00" and head[2] in _IDX_DTYPES \
                    and head[3]:
                sizes = f.read(4 * head[3])
                if len(sizes) == 4 * head[3]:
                    return tuple(int.from_bytes(sizes[i:i + 4], "big")
                                 for i in range(0, len(sizes), 4))
    except (OSError, EOFError, zlib.error) as e:
        raise _idx_read_error(e, path) from None
    raise DataError(f"malformed IDX file {path}: no IDX header")


class _Unbuilt:
    """A numpy object of a CIFAR batch whose labels alone are counted: never built; an array
    keeps its shape (``_frombuffer(buffer, dtype, shape, order)``'s, or in the state
    ``(version, shape, dtype, fortran, data)`` of ``_reconstruct``'s array)."""

    def __init__(self, *args: Any) -> None:
        self.shape = tuple(args[2]) if len(args) == 4 else None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            self.shape = tuple(state[1])


class _LabelCountingUnpickler(_RestrictedUnpickler):
    """:class:`_RestrictedUnpickler` that builds no numpy object (the images are skipped)."""

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name)
        return _Unbuilt if module.startswith("numpy") else found


@functools.lru_cache(maxsize=16)
def _cifar_labels_counted(path: str, key: bytes, *stat: int) -> int:
    # ``stat`` is only the cache key: a plan counts each run's training set, and the runs of
    # a sweep read one folder
    try:
        with open(path, "rb") as f:
            obj = _unpickle_cifar(f, path, _LabelCountingUnpickler)
    except OSError as e:    # a DataError too, which _cifar_read_error passes on
        raise _cifar_read_error(e, Path(path)) from None
    labels = obj.get(key, obj.get(key.decode())) if isinstance(obj, dict) else None
    if isinstance(labels, (list, tuple)):
        return len(labels)
    if isinstance(labels, _Unbuilt) and labels.shape:
        return labels.shape[0]
    raise DataError(f"malformed CIFAR batch {path}: no {key.decode()!r} list")


def find_files(name: str, data_dir, path=None) -> str | None:
    """Where the files of dataset ``name`` lie in ``data_dir`` (``"IDX files in DIR"``,
    ``"CIFAR python batches in DIR"``, ``"PTB files in DIR"``, ``"text file PATH"``), looked
    up as loading it looks them up but without reading them (an archive's members are not
    checked); a :class:`DataError` with the message loading would give when one is missing.
    ``path``: the text datasets' option of that name. ``"the bundled corpus"`` for a text
    dataset given neither; None for a dataset that reads no files."""
    dataset = canonical_name(name)
    if dataset in _IDX_SUBDIRS:
        found = _find_idx(dataset, require_data_dir(data_dir, dataset))
        return (f"Keras' {found}" if isinstance(found, Path) else
                f"IDX files in {_idx_folder(found)}")
    if dataset in _CIFAR:
        kind, loc, _ = _cifar_files(dataset, require_data_dir(data_dir, dataset))
        return f"CIFAR {kind.replace('-', ' ')} batches in {loc}"
    from .text import TEXT_DATASETS, ptb_files, text_file

    if dataset == "ptb":
        return f"PTB files in {ptb_files(data_dir)['train'].parent}"
    if dataset in TEXT_DATASETS:
        # War and Peace from data_dir at paper scale: a plan said "found" without looking
        f = text_file(dataset, path, data_dir)
        if f is None:
            return "the bundled corpus"
        if not f.is_file():
            raise DataError(f"{dataset}: text file not found: {f}")
        return f"text file {f}"
    return None


# --- a file of tensors (``data: {file: PATH}``) ---------------------------------------------

def data_file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of the bytes of data file ``path``: the content a run records beside the
    path (``data.sha256``), since another file may later stand there. The file is read once
    while it stays as it was (same inode, size, modification and change times): a new run
    hashes it to record, then its build to check."""
    try:
        st = os.stat(path)
        return _file_sha256(str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size,
                            st.st_mtime_ns, st.st_ctime_ns)
    except OSError as e:
        raise DataError(f"cannot read data file {str(path)!r}: {file_problem(e)}") from None


@functools.lru_cache(maxsize=1)
def _file_sha256(path: str, *stat: int) -> str:
    # ``stat`` is only the cache key: another file at ``path`` (or this one changed) is hashed
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _existing_data_file(path: str | Path) -> Path:
    """``path`` as a :class:`Path`, or a :class:`DataError` when no file stands there."""
    f = Path(path)
    if f.is_dir():     # a dataset's folder given as the file
        raise DataError(f"data file {str(f)!r} is a folder: `file:` names one torch.save'd "
                        "dict of tensors x_train, y_train (x_test, y_test, meta optional); a "
                        "named dataset reads its folder as `name:` with `data_dir:`")
    if not f.is_file():
        # a relative path is read from the working folder, not from the config's folder
        at = "" if f.is_absolute() else f" (looked for in the working folder {Path.cwd()})"
        raise DataError(f"data file not found: {f}{at} (`file:` names a torch.save'd dict of "
                        "tensors x_train, y_train; x_test, y_test and meta optional)")
    return f


def recorded_data_file(path: str | Path) -> dict[str, str]:
    """``{file, sha256}`` of data file ``path``: its absolute path (``~`` expanded, a relative
    one read from the working folder) and the SHA-256 of its bytes, as a run records them;
    the :class:`DataError` of :func:`load_data_file` when no file stands there."""
    f = _existing_data_file(Path(path).expanduser())
    return {"file": str(f.resolve()), "sha256": data_file_sha256(f)}


@functools.lru_cache(maxsize=8)
def data_file_examples(path: str, sha256: str) -> int:
    """The number of training examples in data file ``path`` whose bytes have SHA-256
    ``sha256``, read by :func:`load_data_file` (its refusals, its check of the content) once
    per content."""
    return len(load_data_file(path, sha256=sha256).x_train)


def load_data_file(path: str | Path, sha256: str | None = None) -> Dataset:
    """The :class:`~sgdlab.data.base.Dataset` a ``data: {file: PATH}`` section names: a dict
    of tensors saved by ``torch.save`` (``x_train``, ``y_train``; ``x_test`` with ``y_test``,
    and a ``meta`` dict, optional), read with ``weights_only=True``. The one reader of data
    files, for replica run configs and run configs; a missing, unreadable (empty, corrupt,
    another format) or malformed file is a :class:`DataError` naming it and the reason.
    ``sha256``: the content a run recorded (:func:`data_file_sha256`); a file that has
    changed since is a :class:`DataError` too, not read as the run's data."""
    f = _existing_data_file(path)
    if sha256 is not None and (now := data_file_sha256(f)) != sha256:
        raise DataError(f"data file {str(f)!r} has changed since the run recorded it "
                        f"(sha256 {sha256[:16]}... recorded, {now[:16]}... now): it is not the "
                        "run's data; put the recorded file back, or remove data.sha256 from "
                        "the config to train on the file as it is now")
    try:
        d = read_torch_file(f, "cpu", what="data file", error=DataError)
    except DataError as e:   # what to write instead: numpy's .npz, a whole TensorDataset
        raise DataError(f"{e}; `file:` names a torch.save'd dict of tensors x_train, y_train "
                        "(x_test, y_test, meta optional): of a TensorDataset ds, "
                        "{'x_train': ds.tensors[0], 'y_train': ds.tensors[1]}") from None
    if not isinstance(d, dict):
        raise DataError(f"data file {str(f)!r} holds a {type(d).__name__}, not a dict of "
                        "tensors x_train, y_train (x_test, y_test, meta optional)")
    wrong = [k for k in ("x_train", "y_train", "x_test", "y_test")
             if not isinstance(d.get(k), torch.Tensor) and (k in d or "train" in k)]
    if wrong or ("x_test" in d) != ("y_test" in d):
        raise DataError(f"data file {str(f)!r} needs the tensors x_train and y_train, and "
                        "x_test with y_test or neither (meta optional); it holds "
                        f"{', '.join(f'{k}: {type(v).__name__}' for k, v in d.items())}")
    meta = d.get("meta", {})
    if not isinstance(meta, dict):
        raise DataError(f"data file {str(f)!r}: meta must be a dict (name, task, input_shape, "
                        f"num_outputs, ...), got {type(meta).__name__}")
    return _trainable_dataset(f, d, dict(meta))


_PADDING_LABEL = ignored_target(nn.CrossEntropyLoss())     # -100


def _trainable_dataset(f: Path, d: dict, meta: dict) -> Dataset:
    """The :class:`Dataset` of data file ``f``'s tensors ``d``, or a :class:`DataError` naming
    ``f`` when they cannot be trained on: a 0-d tensor, other than as many labels as examples
    (:class:`Dataset`'s check), no training example, a class label below 0 or not below
    meta's ``num_outputs`` (-100, cross-entropy's default ``ignore_index``, is no label:
    padding) (the loss failed on it mid-run, after the run was recorded)."""
    for k in ("x_train", "y_train", "x_test", "y_test"):
        if k in d and d[k].dim() == 0:
            raise DataError(f"data file {str(f)!r}: {k} is a single number (0-d tensor); it "
                            "needs one row per example")
    try:
        ds = Dataset(d["x_train"], d["y_train"], d.get("x_test"), d.get("y_test"), meta)
    except ValueError as e:      # as many targets as inputs, checked where every loader meets
        raise DataError(f"data file {str(f)!r}: {str(e).removeprefix('Dataset: ')}") from None
    for part in ("train", "test"):
        y = getattr(ds, f"y_{part}")
        if y.is_floating_point():
            continue
        # cross-entropy's default ignore_index marks padding (a token file's padded positions)
        y = y[y != _PADDING_LABEL]
        if y.numel() and int(y.min()) < 0:
            raise DataError(f"data file {str(f)!r}: y_{part} holds the class label "
                            f"{int(y.min())}; integer labels are class indices 0, 1, ... "
                            f"or {_PADDING_LABEL} for no label (store regression targets as "
                            "floats)")
        classes = meta.get("num_outputs")
        if y.numel() and isinstance(classes, int) and int(y.max()) >= classes:
            raise DataError(f"data file {str(f)!r}: y_{part} holds the class label "
                            f"{int(y.max())}, but meta num_outputs is {classes} (labels "
                            f"0..{classes - 1})")
    if len(ds.x_train) == 0:
        raise DataError(f"data file {str(f)!r}: x_train holds no examples")
    return ds
