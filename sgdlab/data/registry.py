"""Datasets by name: ``load_dataset(name, seed=..., data_dir=..., **options)``.

Each loader module registers a function with ``@register_dataset("name")``; the function takes
keyword-only options (``seed`` always, ``data_dir`` when it reads files) and returns a
:class:`~sgdlab.data.base.Dataset`. Names are matched case-insensitively with ``-`` and ``_``
interchangeable (``fashion-mnist`` == ``fashion_mnist``).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import (UserError, did_you_mean, int_at_least, is_seed, plain_int, plugin_hint,
                      refused_value, warn)
from .base import Dataset

Loader = Callable[..., Dataset]

#: options every dataset accepts (handled by load_dataset itself)
GENERIC_OPTIONS = ("n_train", "n_test", "label_noise", "classes", "augment")

#: name -> loader function. Iterate it (or ``sorted(DATASETS)``) for the known names.
DATASETS: dict[str, Loader] = {}


def canonical_name(name: str) -> str:
    """The key of dataset ``name`` in :data:`DATASETS` (whether registered or not): the
    spellings a run config may give (``Fashion-MNIST``, `` mnist``) are one name."""
    return name.strip().lower().replace("-", "_")


#: name -> check of its options' values, without loading anything (see register_dataset)
OPTION_CHECKS: dict[str, Callable[..., None]] = {}


def register_dataset(name: str, *, check: Callable[..., None] | None = None
                     ) -> Callable[[Loader], Loader]:
    """Register ``fn(*, seed, [data_dir], **options) -> Dataset`` under ``name``.

    ``check(**options)``, given the loader's own keyword options (the defaults filled in;
    not ``seed``, ``data_dir`` nor the :data:`GENERIC_OPTIONS` that :func:`load_dataset`
    applies after loading), raises :class:`UserError` for values the loader would refuse: a
    run config is validated with it before anything is generated or recorded
    (:func:`check_dataset_options`)."""
    key = canonical_name(name)

    def deco(fn: Loader) -> Loader:
        if key in DATASETS and DATASETS[key] is not fn:
            raise ValueError(f"dataset name {name!r} registered twice")
        DATASETS[key] = fn
        if check is not None:
            OPTION_CHECKS[key] = check
        return fn
    return deco


def check_dataset_options(name: str, options: dict[str, Any]) -> None:
    """Raise :class:`UserError` when dataset ``name`` would refuse ``options``' values (its
    registered check, for the datasets that have one; known option names are assumed)."""
    check = OPTION_CHECKS.get(canonical_name(name))
    if check is not None:
        # the options the loader itself is called with: a check written with the loader's
        # keywords (check(*, n)) was a TypeError for load_dataset's own n_train, label_noise...
        own = {p.name for p in inspect.signature(_lookup(name)).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY}
        check(**{k: v for k, v in {**dataset_options(name), **options}.items() if k in own})


def dataset_options(name: str) -> dict[str, Any]:
    """The options dataset ``name`` accepts, with their defaults (``seed``/``data_dir`` excluded):
    its loader's keyword options, then the :data:`GENERIC_OPTIONS` :func:`load_dataset` applies."""
    fn = _lookup(name)
    opts = {p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("seed", "data_dir")}
    generic = inspect.signature(load_dataset).parameters
    return {**opts, **{k: generic[k].default for k in GENERIC_OPTIONS if k not in opts}}


def _lookup(name: str) -> Loader:
    if not isinstance(name, str):
        raise UserError(f"dataset name must be a string, got {name!r}")
    try:
        return DATASETS[canonical_name(name)]
    except KeyError:
        raise UserError(
            f"Unknown dataset {name!r}{did_you_mean(name, DATASETS)}; known datasets: "
            f"{', '.join(sorted(DATASETS))} ({plugin_hint('dataset')})"
        ) from None


def _file_datasets() -> list[str]:
    return sorted(k for k, fn in DATASETS.items() if "data_dir" in inspect.signature(fn).parameters)


def load_dataset(name: str, *, seed: int = 0, data_dir: str | Path | None = None,
                 n_train: int | None = None, n_test: int | None = None, label_noise: int = 0,
                 classes: list[int] | None = None, augment: str | None = None,
                 **options: Any) -> Dataset:
    """Load or generate dataset ``name``; deterministic given ``seed`` (and the files).

    ``data_dir`` is used by the file loaders (mnist, fashion_mnist, cifar10, cifar100); a
    generated/bundled dataset ignores it, with a ``UserWarning`` naming the dataset. Every
    dataset also accepts, applied in this order after loading: ``classes`` (classification
    only: the examples of these classes, relabelled 0..k−1:
    :func:`~sgdlab.data.transforms.select_classes`), ``n_train`` / ``n_test`` (a
    seeded subset, class-balanced for classification:
    :func:`~sgdlab.data.transforms.subset`) and ``label_noise=k`` (classification only: ``k``
    training examples get random wrong labels, :func:`~sgdlab.data.transforms.with_label_noise`),
    both seeded by ``seed``. The ``n_train`` subset is class-balanced; Zhu et al.'s corrupted
    Fashion-MNIST, 1,200 images "randomly sampled", is ``load_dataset("fashion_mnist",
    data_dir=..., train_size=1200, balanced=False, label_noise=200)``.
    ``augment`` (images only: ``"crop-flip"``, ``"crop"``, ``"flip"``) records in
    ``meta["augment"]`` the augmentation the training loops apply to each mini-batch
    (:mod:`sgdlab.data.augment`); the tensors themselves are unchanged.
    Unknown options raise :class:`UserError` listing the valid ones (and the datasets that
    have an option this one lacks, e.g. ``normalize`` of the image datasets).
    """
    fn = _lookup(name)
    params = inspect.signature(fn).parameters
    allowed = set(dataset_options(name))
    unknown = sorted(set(options) - allowed)
    if unknown:
        owners = [d for d in sorted(DATASETS) if unknown[0] in dataset_options(d)]
        elsewhere = (f"; {unknown[0]!r} is an option of {', '.join(owners)}" if owners else "")
        raise UserError(
            f"dataset {canonical_name(name)!r} has no option(s) {', '.join(map(repr, unknown))}"
            f"{did_you_mean(unknown[0], allowed | set(GENERIC_OPTIONS))}; valid options: "
            f"{', '.join(sorted(allowed | set(GENERIC_OPTIONS)))}{elsewhere}")
    if augment is not None:
        from .augment import augmentation_spec

        augmentation_spec(augment)  # a bad value fails before the (maybe long) loading
    # numpy's legacy seeding (mnist1d) and scikit-learn's random_state take 32 bits
    if not is_seed(seed):
        raise UserError(f"dataset seed must be an integer in 0..2**32 - 1, got {seed!r}")
    seed = int(seed)
    kwargs: dict[str, Any] = dict(options, seed=seed)
    if "data_dir" in params:
        kwargs["data_dir"] = data_dir
    elif data_dir is not None:
        # mnist_small with data_dir=~/mnist is 4,000 bundled images, not the files there
        warn(f"dataset {canonical_name(name)!r} reads no files: data_dir {str(data_dir)!r} "
                      f"is ignored (the datasets read from files: {', '.join(_file_datasets())})",
                      UserWarning)
    # a loader that defines n_train / n_test itself (cubic: grid sizes) gets them directly
    for key, value in (("n_train", n_train), ("n_test", n_test)):
        if key in params and value is not None:
            kwargs[key] = value
    if "n_train" in params:
        n_train = n_test = None
    ds = fn(**kwargs)
    if classes is not None:
        from .transforms import select_classes

        ds = select_classes(ds, classes)
    if n_train is not None or n_test is not None:
        from .transforms import subset

        ds = subset(ds, n_train, n_test, seed)
    if label_noise:
        from .transforms import with_label_noise

        label_noise = plain_int(label_noise)
        if not int_at_least(label_noise, 0):
            raise UserError(f"option 'label_noise' is a number of training examples to "
                            f"mislabel (an integer >= 0), {refused_value(label_noise)}")

        ds = with_label_noise(ds, label_noise, seed)
    if augment is not None:
        ds = Dataset(ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                     {**ds.meta, "augment": augmentation_spec(augment, ds.input_shape,
                                                              canonical_name(name))})
    return ds
