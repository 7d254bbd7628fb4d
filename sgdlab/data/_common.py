"""Shared pieces of the loaders: seeded splits and subsets, normalisation, the Dataset record."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, UserError, checked_int, did_you_mean, file_problem
from .base import Dataset

NORMALIZATIONS = ("unit", "symmetric", "standardize", "imagenet", "gcn", "gcn-zca", "none")
# the per-channel (R, G, B) statistics torchvision's ImageNet weights were trained on
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def require_data_dir(data_dir: str | Path | None, name: str) -> Path:
    """``data_dir`` as an existing folder, or a :class:`DataError` naming dataset ``name``
    (an empty string too: an unset variable, not the working folder)."""
    if data_dir is None:
        raise DataError(f"dataset {name!r} reads files: pass data_dir= (config key data.data_dir) "
                        f"pointing to the directory that holds them")
    if isinstance(data_dir, str) and not data_dir:   # Path("") is the working folder
        raise DataError(f"data_dir for dataset {name!r} is empty: give the folder that holds "
                        f"the files ('.' for the working folder)")
    d = Path(data_dir).expanduser()
    try:
        is_file = d.is_file()
    except OSError as e:    # inside a folder that may not be searched: not False, an error
        raise DataError(f"data_dir for dataset {name!r} cannot be looked into: {d}: "
                        f"{file_problem(e)}") from None
    if is_file:   # e.g. the downloaded archive itself
        raise DataError(f"data_dir for dataset {name!r} is a file, not a folder: {d}; give the "
                        f"folder that holds it ({d.parent})")
    if not d.is_dir():
        raise DataError(f"data_dir for dataset {name!r} does not exist or is not a directory: {d}")
    return d


def check_int(name: str, value: Any, *, minimum: int = 0, allow_none: bool = False,
              what: str = "") -> int | None:
    """``value`` as a Python int if it is an int (numpy's and torch's too) >= ``minimum``, or
    None where ``allow_none``; else a :class:`UserError` "option 'name' must be an int >=
    minimum<what>, got value" (``what`` says why: " (mnist1d makes ...)")."""
    return checked_int(f"option {name!r}", value, minimum, what, optional=allow_none)


def seeded_indices(labels: np.ndarray, n: int | None, seed: int, *, balanced: bool,
                   what: str = "subset") -> np.ndarray:
    """``n`` indices into ``labels`` drawn without replacement from ``np.random.default_rng(seed)``.

    ``balanced``: every class gets ``n // K`` examples and the first ``n % K`` classes (in a seeded
    random order) one more. ``n=None`` or ``n == len(labels)`` (unbalanced) keeps everything in its
    original order. The result is sorted so the subset keeps the file's order.
    """
    total = len(labels)
    if n is None:
        return np.arange(total)
    n = check_int(what, n, minimum=1)  # an empty split fails only later, in training
    if n > total:
        raise UserError(f"{what} {n} is larger than the {total} available examples")
    rng = np.random.default_rng(seed)
    if not balanced:
        if n == total:
            return np.arange(total)
        return np.sort(rng.choice(total, size=n, replace=False))
    classes = np.unique(labels)
    k = len(classes)
    per = np.full(k, n // k)
    per[rng.permutation(k)[: n % k]] += 1
    picked = []
    for c, m in zip(classes, per):
        idx = np.flatnonzero(labels == c)
        if m > len(idx):
            raise UserError(
                f"balanced {what} of {n} needs {m} examples of class {int(c)}, only {len(idx)} "
                f"available; use balanced=False or a smaller size")
        picked.append(rng.choice(idx, size=m, replace=False))
    return np.sort(np.concatenate(picked))


def stratified_split(labels: np.ndarray, n_test: int, seed: int, *, cache: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test split (scikit-learn's ``train_test_split``) of indices.

    scikit-learn's answer is cached (:mod:`.cache`) under the labels, ``n_test``, ``seed`` and
    the scikit-learn and numpy versions: ``import sklearn`` costs ~2 s of CPU (it imports
    scipy.stats), as much as torch, in every process that loads the data. ``cache=False`` (a
    loader's own ``cache=False``): no cache entry is read or written."""
    n_test = check_int("test_size", n_test, minimum=1)
    if n_test >= len(labels):
        raise UserError(f"test_size {n_test} leaves no training examples (of {len(labels)})")
    key = _split_cache_key(labels, n_test, seed) if cache else None
    if key is None:
        return _sklearn_split(labels, n_test, seed)
    from .cache import cached_arrays

    def whole(arrays: dict[str, np.ndarray]) -> bool:
        # a damaged entry is not trusted: scikit-learn is asked again and the entry rewritten
        tr, te, n = arrays.get("train"), arrays.get("test"), len(labels)
        return (tr is not None and te is not None and len(te) == n_test and len(tr) == n - n_test
                and tr.dtype.kind in "iu" and te.dtype.kind in "iu"
                and np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(n)))

    arrays = cached_arrays(key, lambda: dict(zip(("train", "test"),
                                                 _sklearn_split(labels, n_test, seed))),
                           valid=whole)
    return arrays["train"], arrays["test"]


def _split_cache_key(labels: np.ndarray, n_test: int, seed: int) -> str | None:
    """The cache key of a split, or None where the split is not to be cached: no seed, labels
    whose bytes are pointers (object dtype), or no installed scikit-learn whose version is the
    one imported (one from a source folder or an editable install changes without its version:
    its metadata names site-packages, its code is elsewhere)."""
    import importlib.util
    from importlib import metadata
    from pathlib import Path

    labels = np.ascontiguousarray(labels)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or labels.dtype.hasobject:
        return None
    try:
        dist = metadata.distribution("scikit-learn")
        spec = importlib.util.find_spec("sklearn")
        if spec is None or spec.origin is None:
            return None
        origin = Path(spec.origin).resolve()
        if Path(dist.locate_file("sklearn/__init__.py")).resolve() != origin:
            return None
        # a reinstall of the same version (a dev build) rewrites the splitter's source
        source = (origin.parent / "model_selection" / "_split.py").stat()
    except (metadata.PackageNotFoundError, ValueError, OSError):
        return None
    import hashlib

    from .cache import cache_key

    digest = hashlib.sha1(f"{labels.dtype.str}{labels.shape}".encode() + labels.tobytes())
    return cache_key("stratified-split", {"labels": digest.hexdigest(), "n_test": int(n_test),
                                          "seed": int(seed), "sklearn": dist.version,
                                          "sklearn_split": [source.st_size, source.st_mtime_ns],
                                          "numpy": np.__version__})


def _sklearn_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    try:
        tr, te = train_test_split(idx, test_size=n_test, random_state=seed, stratify=labels)
    except ValueError as e:  # e.g. fewer test examples than classes
        raise UserError(f"cannot split with test_size={n_test}: {e}") from None
    return np.sort(tr), np.sort(te)


def normalize_images(x_train: np.ndarray, x_test: np.ndarray, how: str, max_value: float
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Scale raw pixel arrays shaped (N, C, H, W) or (N, C, L); float32 results.

    ``"unit"``: divide by ``max_value`` (pixels in [0, 1]); ``"symmetric"``: pixels mapped
    linearly onto [−1, 1] (0 → −1, ``max_value`` → 1; Chaudhari's thesis §2.4.2 for MNIST);
    ``"standardize"``: per-channel mean and std of the *training* images applied to both
    splits; ``"imagenet"``: pixels in [0, 1], then torchvision's ImageNet per-channel mean and
    std (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`; the input pretrained ImageNet weights
    expect; 3-channel images only); ``"gcn"``: global contrast normalisation of each image,
    ``"gcn-zca"``: then ZCA whitening fitted on the training images and applied to both
    splits (Goodfellow et al. 2013's CIFAR-10 pipeline: :mod:`sgdlab.data.preprocess`);
    ``"none"``: raw pixel values.
    """
    if how not in NORMALIZATIONS:
        raise UserError(f"option 'normalize' must be one of {', '.join(NORMALIZATIONS)}, got "
                        f"{how!r}{did_you_mean(how, NORMALIZATIONS)}")
    info: dict[str, Any] = {"normalize": how}
    if how in ("gcn", "gcn-zca"):
        from . import preprocess as pre

        info["gcn"] = {"scale": pre.GCN_SCALE, "sqrt_bias": pre.GCN_SQRT_BIAS,
                       "min_divisor": pre.GCN_MIN_DIVISOR}
        if how == "gcn-zca":
            info["zca"] = {"filter_bias": pre.ZCA_FILTER_BIAS, "fitted_on": "train",
                           "n_fit": int(len(x_train))}
        return (*_contrast_normalize(x_train, x_test, whiten=how == "gcn-zca"), info)
    if how == "symmetric":
        # in float64, rounded once: 0 and max_value land exactly on -1 and 1
        def sym(x: np.ndarray) -> np.ndarray:
            return (x.astype(np.float64) * (2.0 / max_value) - 1.0).astype(np.float32)
        return sym(x_train), sym(x_test), info
    if how == "imagenet" and (x_train.ndim != 4 or x_train.shape[1] != 3):
        raise UserError(f"option normalize='imagenet' needs 3-channel images (N, 3, H, W); got "
                        f"shape {tuple(x_train.shape)}")
    x_train = x_train.astype(np.float32)
    x_test = x_test.astype(np.float32)
    if how == "imagenet":
        mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
        x_train = (x_train / max_value - mean) / std
        x_test = (x_test / max_value - mean) / std
        info["mean"], info["std"] = list(IMAGENET_MEAN), list(IMAGENET_STD)
    elif how == "unit":
        x_train /= max_value
        x_test /= max_value
    elif how == "standardize":
        axes = (0,) + tuple(range(2, x_train.ndim))
        mean = x_train.astype(np.float64).mean(axis=axes, keepdims=True)
        std = x_train.astype(np.float64).std(axis=axes, keepdims=True)
        std[std == 0] = 1.0
        x_train = ((x_train - mean) / std).astype(np.float32)
        x_test = ((x_test - mean) / std).astype(np.float32)
        info["mean"] = mean.ravel().tolist()
        info["std"] = std.ravel().tolist()
    return x_train, x_test, info


def _contrast_normalize(x_train: np.ndarray, x_test: np.ndarray, *, whiten: bool
                        ) -> tuple[np.ndarray, np.ndarray]:
    """GCN of the raw pixels (as pylearn2: scale-free), then optionally ZCA fitted on the
    training images only."""
    from .preprocess import ZCA, global_contrast_normalize

    g_tr = global_contrast_normalize(torch.from_numpy(np.ascontiguousarray(x_train)))
    g_te = global_contrast_normalize(torch.from_numpy(np.ascontiguousarray(x_test)))
    if not whiten:
        return g_tr.float().numpy(), g_te.float().numpy()
    zca = ZCA.fit(g_tr)
    return zca(g_tr).numpy(), zca(g_te).numpy()


def make_classification(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                        y_test: np.ndarray, *, name: str, seed: int, num_classes: int,
                        source: str, flatten: bool = False, **meta: Any) -> Dataset:
    """Wrap numpy arrays as a classification :class:`Dataset` (float32 inputs, int64 labels)."""
    if flatten:
        x_train = x_train.reshape(len(x_train), -1)
        x_test = x_test.reshape(len(x_test), -1)
    xt = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    xv = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y_train, dtype=np.int64).copy())
    yv = torch.from_numpy(np.asarray(y_test, dtype=np.int64).copy())
    info = {"name": name, "task": "classification", "input_shape": tuple(xt.shape[1:]),
            "num_outputs": int(num_classes), "seed": int(seed), "source": source,
            "n_train": int(len(yt)), "n_test": int(len(yv)), "flatten": bool(flatten)}
    info.update(meta)
    return Dataset(xt, yt, xv, yv, info)
