"""Datasets generated locally: Zhu et al.'s cubic regression set and MNIST-1D."""
from __future__ import annotations

import random

import numpy as np
import torch

from ..errors import UserError, refused_value
from ._common import check_int, make_classification
from .base import Dataset
from .cache import cache_key, cached_arrays
from .registry import register_dataset


def cubic_target(x: np.ndarray) -> np.ndarray:
    """Zhu et al. (2019)'s 1-D regression target y = (x + 0.5) x (x - 0.5)."""
    return (x + 0.5) * x * (x - 0.5)


#: ``cubic`` grids: how "sampled equidifferently from x ∈ [−1, 1]" (Suppl. A) places n points
CUBIC_GRIDS = ("closed", "half-open")


@register_dataset("cubic")
def load_cubic(*, seed: int = 0, n_train: int = 20, n_test: int = 100,
               grid: str = "closed") -> Dataset:
    """Zhu et al. (2019, "The Regularization Effects of Anisotropic Noise in SGD", §3 Fig. 1 and
    Suppl. A) regression data.

    ``n_train`` (20) training and ``n_test`` (100) test points equally spaced on [-1, 1],
    target y = (x + 0.5) x (x - 0.5), no noise. The paper does not say whether the end points
    are among them: ``grid="closed"`` (default) includes both (step 2/(n − 1)),
    ``"half-open"`` takes x = −1 + 2k/n, k = 0..n − 1 (step 2/n: 0.1 and 0.02 for 20 and 100
    points, x = 1 left out). Inputs and targets are float32 shaped (N, 1). Nothing is random:
    ``seed`` is only recorded.
    """
    n_train = check_int("n_train", n_train, minimum=2)
    n_test = check_int("n_test", n_test, minimum=2)
    if grid not in CUBIC_GRIDS:
        raise UserError(f"option 'grid' must be one of {', '.join(CUBIC_GRIDS)}, got {grid!r}")

    def points(n: int) -> np.ndarray:
        # computed in float64, then rounded once to float32
        if grid == "closed":
            return np.linspace(-1.0, 1.0, n)[:, None]
        return (-1.0 + 2.0 * np.arange(n) / n)[:, None]

    x_tr, x_te = points(n_train), points(n_test)
    as_t = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
    meta = {"name": "cubic", "task": "regression", "input_shape": (1,), "num_outputs": 1,
            "seed": int(seed), "source": f"generated: y=(x+0.5)x(x-0.5), {grid} grid on [-1,1]",
            "n_train": int(n_train), "n_test": int(n_test), "grid": grid}
    return Dataset(as_t(x_tr), as_t(cubic_target(x_tr)), as_t(x_te), as_t(cubic_target(x_te)), meta)


def _generate_mnist1d(num_samples: int, train_split: float, seed: int,
                      shuffle_seq: bool) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    args.shuffle_seq = shuffle_seq
    # make_dataset seeds the *global* random / numpy RNGs; keep the caller's streams intact
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {"x": d["x"].astype(np.float32), "y": d["y"].astype(np.int64),
            "x_test": d["x_test"].astype(np.float32), "y_test": d["y_test"].astype(np.int64)}


def _whole_mnist1d(arrays: dict[str, np.ndarray], num_samples: int) -> bool:
    """Whether a cache entry holds what :func:`_generate_mnist1d` makes of ``num_samples``
    (a multiple of 10: all of them): float32 sequences of one length split into train and
    test, an int64 label for each. Another entry under the name (an older layout) is
    rebuilt, not a KeyError or served as the set."""
    x, y, x_te, y_te = (arrays.get(k) for k in ("x", "y", "x_test", "y_test"))
    if any(a is None for a in (x, y, x_te, y_te)):
        return False
    return (x.dtype == x_te.dtype == np.float32 and y.dtype == y_te.dtype == np.int64
            and x.ndim == x_te.ndim == 2 and x.shape[1] == x_te.shape[1]
            and y.shape == x.shape[:1] and y_te.shape == x_te.shape[:1]
            and len(x) + len(x_te) == num_samples)


#: the generator makes num_samples // 10 sequences of each of the 10 digits: fewer than 10
#: make none (numpy's "need at least one array to stack")
MNIST1D_MIN_SAMPLES = 10


def check_mnist1d_options(*, num_samples: int, train_split: float, **_: object) -> None:
    """Refuse, with a :class:`UserError` naming the option, the sizes the mnist1d generator
    cannot make or would change (run configs are checked with it before generating)."""
    check_int("num_samples", num_samples, minimum=MNIST1D_MIN_SAMPLES,
              what=" (mnist1d makes num_samples // 10 sequences of each of the 10 digits, so "
                   "fewer than 10 make none)")
    if num_samples % 10:
        # the generator makes num_samples // 10 sequences of each digit: 25 gave 20
        raise UserError(f"option 'num_samples' must be a multiple of 10 (mnist1d makes "
                        f"num_samples // 10 sequences per class), got {num_samples}")
    if (isinstance(train_split, bool) or not isinstance(train_split, (int, float))
            or not 0.0 < float(train_split) < 1.0):
        raise UserError(f"option 'train_split' must be in (0, 1), {refused_value(train_split)}")
    if int(num_samples * float(train_split)) == 0:  # the generator's split (train_split < 1
        # always leaves a test sequence)
        raise UserError(f"option 'train_split'={train_split!r} of {num_samples} sequences "
                        f"leaves no training sequences")


@register_dataset("mnist1d", check=check_mnist1d_options)
def load_mnist1d(*, seed: int = 0, num_samples: int = 5000, train_split: float = 0.8,
                 shuffle_seq: bool = False, flatten: bool = False, cache: bool = True) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated locally with the ``mnist1d`` package.

    Defaults give 4,000 train / 1,000 test sequences of length 40, 10 classes, inputs shaped
    (1, 40) (or (40,) with ``flatten``), standardised by the generator (global mean 0, std 1,
    over train and test together, as the published set). ``num_samples`` must be a multiple of
    10, at least 10 (the generator makes ``num_samples // 10`` sequences per class; its split
    is a shuffle cut at ``train_split``, not stratified, so a small set may miss a class in
    one split).
    ``seed`` is the generator's seed (the published frozen dataset uses 42; sgdlab's default
    seed is 0, so pass ``seed=42`` to reproduce it). Generated arrays are cached on disk keyed
    by every argument and the package version (see :mod:`sgdlab.data.cache`).
    """
    import mnist1d

    check_mnist1d_options(num_samples=num_samples, train_split=train_split)
    version = getattr(mnist1d, "__version__", "?")
    key = cache_key("mnist1d", {"num_samples": num_samples, "train_split": float(train_split),
                                "seed": seed, "shuffle_seq": bool(shuffle_seq),
                                "version": version})
    d = cached_arrays(key, lambda: _generate_mnist1d(num_samples, float(train_split), seed,
                                                     bool(shuffle_seq)), enabled=cache,
                      valid=lambda arrays: _whole_mnist1d(arrays, num_samples))
    x_tr, x_te = d["x"][:, None, :], d["x_test"][:, None, :]
    return make_classification(x_tr, d["y"], x_te, d["y_test"], name="mnist1d", seed=seed,
                               num_classes=10, flatten=flatten,
                               source=f"generated: mnist1d.data.make_dataset (mnist1d {version})")
