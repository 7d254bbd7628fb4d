"""Datasets: generated, bundled, or read from files the user has.

``load_dataset(name, *, seed=0, data_dir=None, **options) -> Dataset``; ``sorted(DATASETS)`` lists
the names (cifar10, cifar100, cubic, digits, fashion_mnist, mnist, mnist1d, mnist_small, ptb,
text_chars, text_lines, text_words). The text datasets (:mod:`sgdlab.data.text`) hold int64
token indices: windows x (N, T) and the next tokens y (N, T).
Transforms (:func:`with_label_noise`, :func:`subset`, :func:`standardize`) return new
:class:`Dataset` records and note what they did in ``meta``. Image preprocessing (pixels in
[−1, 1], global contrast normalisation, ZCA whitening) is the loaders' ``normalize`` option
(:mod:`sgdlab.data.preprocess`); per-batch augmentation is ``load_dataset(..., augment=...)``
(:mod:`sgdlab.data.augment`), applied by the training loops. A torch dataset or ``DataLoader``
becomes a :class:`Dataset` through :meth:`Dataset.from_torch` (:mod:`sgdlab.data.torch_data`).
"""
from .base import Dataset
from .registry import DATASETS, dataset_options, load_dataset, register_dataset
from . import bundled, files, generated, text  # noqa: F401  (registers the datasets)
from .files import read_cifar_batch, read_cifar_binary, read_idx
from .generated import cubic_target
from .transforms import noisy_mask, select_classes, standardize, subset, with_label_noise

__all__ = ["DATASETS", "Dataset", "cubic_target", "dataset_options", "load_dataset",
           "noisy_mask", "read_cifar_batch", "read_cifar_binary", "read_idx", "register_dataset",
           "select_classes", "standardize", "subset", "with_label_noise"]
