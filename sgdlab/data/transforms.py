"""Transforms of a :class:`Dataset`: label noise, seeded subsets, standardisation.

Each returns a *new* Dataset (input tensors are shared, never modified in place) and records
what it did in ``meta`` so a run's config and store entry say exactly which data it saw.
Zhu et al. (2019)'s corrupted Fashion-MNIST (1,200 examples "randomly sampled" from the
training set, 200 of them given wrong labels) is::

    ds = load_dataset("fashion_mnist", data_dir=..., seed=s)
    ds = with_label_noise(subset(ds, 1200, seed=s, balanced=False), 200, seed=s)
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ._common import check_int, seeded_indices
from .base import Dataset


def _num_classes(ds: Dataset, num_classes: int | None) -> int:
    return int(num_classes) if num_classes is not None else ds.num_outputs


def _one_label_each(ds: Dataset, what: str) -> None:
    """A :class:`UserError` for targets with a label per position (the text datasets' (N, T)
    next tokens): ``what`` works on one class label per example."""
    if ds.y_train.dim() != 1:
        raise UserError(f"{what} needs one class label per example; dataset {ds.name!r} has a "
                        f"label per position (targets shaped {tuple(ds.y_train.shape)})")


def with_label_noise(ds: Dataset, num_noisy: int, seed: int = 0, *,
                     num_classes: int | None = None) -> Dataset:
    """Replace the labels of ``num_noisy`` training examples by random *wrong* labels.

    The examples are drawn uniformly without replacement; each new label is uniform over the
    K - 1 classes other than the true one (so exactly ``num_noisy`` labels change). Test labels
    are untouched. ``meta["label_noise"]`` records ``num_noisy``, ``seed``, the sorted
    ``indices`` of the corrupted training examples and their ``original_labels``.
    """
    if ds.task != "classification":
        raise UserError(f"label noise needs a classification dataset; {ds.name!r} is {ds.task}")
    _one_label_each(ds, "label noise")
    num_noisy = check_int("num_noisy", num_noisy)
    n = len(ds.y_train)
    if num_noisy > n:
        raise UserError(f"num_noisy={num_noisy} exceeds the {n} training examples of {ds.name!r}")
    k = _num_classes(ds, num_classes)
    if k < 2:
        raise UserError("label noise needs at least 2 classes")
    if "label_noise" in ds.meta:
        raise UserError(f"dataset {ds.name!r} already has label noise; apply it once")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=num_noisy, replace=False))
    y = ds.y_train.clone()
    old = y[torch.from_numpy(idx)].numpy()
    shift = rng.integers(1, k, size=num_noisy)  # 1..K-1: never the true label
    y[torch.from_numpy(idx)] = torch.from_numpy((old + shift) % k).to(y.dtype)
    meta = dict(ds.meta)
    meta["label_noise"] = {"num_noisy": int(num_noisy), "seed": int(seed),
                           "indices": idx.tolist(), "original_labels": old.tolist()}
    return Dataset(ds.x_train, y, ds.x_test, ds.y_test, meta)


def noisy_mask(ds: Dataset) -> torch.Tensor:
    """Boolean (N_train,) mask of the training examples whose labels :func:`with_label_noise`
    corrupted (all False for a clean dataset)."""
    mask = torch.zeros(len(ds.y_train), dtype=torch.bool)
    info = ds.meta.get("label_noise")
    if info:
        mask[torch.tensor(info["indices"], dtype=torch.long)] = True
    return mask


def select_classes(ds: Dataset, classes) -> Dataset:
    """The examples (train and test) whose label is in ``classes``, relabelled 0..k−1 in the
    order given; ``num_outputs`` becomes k. Chaudhari's thesis §6.3.3 trains on the first five
    MNIST digits (``classes=[0, 1, 2, 3, 4]``). ``meta["classes"]`` records the original labels."""
    if ds.task != "classification":
        raise UserError(f"option 'classes' needs a classification dataset; {ds.name!r} is "
                        f"{ds.task}")
    _one_label_each(ds, "option 'classes'")
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise UserError(f"option 'classes' must be a list of class labels, got {classes!r}")
    keep = [int(c) for c in classes]
    k = _num_classes(ds, None)
    if not keep or len(set(keep)) != len(keep) or not all(0 <= c < k for c in keep):
        raise UserError(f"option 'classes' must list distinct labels in 0..{k - 1}, got "
                        f"{list(classes)!r}")
    if "label_noise" in ds.meta:
        raise UserError("select classes before adding label noise")
    new = torch.full((k,), -1, dtype=torch.long)
    new[torch.tensor(keep)] = torch.arange(len(keep))

    def pick(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = new[y.long()] >= 0  # uint8 labels (an IDX file's) would index as a mask
        return x[m], new[y[m].long()]

    xt, yt = pick(ds.x_train, ds.y_train)
    xv, yv = pick(ds.x_test, ds.y_test)
    meta = dict(ds.meta)
    meta.update(classes=keep, num_outputs=len(keep), n_train=len(yt), n_test=len(yv))
    return Dataset(xt, yt, xv, yv, meta)


def subset(ds: Dataset, n_train: int | None, n_test: int | None = None, seed: int = 0, *,
           balanced: bool = True) -> Dataset:
    """A seeded subset: ``n_train`` training and ``n_test`` test examples (None keeps a split
    whole), drawn without replacement and kept in their original order. ``balanced`` (for
    classification with one label per example) gives every class ``n // K`` examples, plus one
    for ``n % K`` classes; targets with a label per position (the text datasets' next tokens)
    give a plain seeded subset of the windows. Label-noise metadata is carried over with
    indices renumbered into the subset."""
    bal = balanced and ds.task == "classification" and ds.y_train.dim() == 1
    y_tr = ds.y_train.numpy() if bal else np.zeros(len(ds.y_train))
    y_te = ds.y_test.numpy() if bal else np.zeros(len(ds.y_test))
    i_tr = seeded_indices(y_tr, n_train, seed, balanced=bal, what="n_train")
    i_te = seeded_indices(y_te, n_test, seed + 1, balanced=bal, what="n_test")
    t_tr, t_te = torch.from_numpy(i_tr), torch.from_numpy(i_te)
    meta = dict(ds.meta)
    meta.update(n_train=len(i_tr), n_test=len(i_te))
    meta["subsets"] = list(ds.meta.get("subsets", [])) + [
        {"n_train": n_train, "n_test": n_test, "seed": int(seed), "balanced": bool(bal)}]
    if "label_noise" in ds.meta:
        info = dict(ds.meta["label_noise"])
        pos = {int(old): new for new, old in enumerate(i_tr)}
        keep = [(pos[i], lab) for i, lab in zip(info["indices"], info["original_labels"])
                if i in pos]
        info["indices"] = [i for i, _ in keep]
        info["original_labels"] = [lab for _, lab in keep]
        info["num_noisy"] = len(keep)
        meta["label_noise"] = info
    return Dataset(ds.x_train[t_tr], ds.y_train[t_tr], ds.x_test[t_te], ds.y_test[t_te], meta)


def standardize(ds: Dataset, *, per_channel: bool = True, eps: float = 0.0) -> Dataset:
    """Shift and scale inputs by the *training* mean and standard deviation (population std).

    ``per_channel``: statistics per channel (axis 1) for inputs (N, C, ...), per feature for
    flat inputs (N, D); otherwise one scalar. Zero std is replaced by 1; ``eps`` is added to the
    std. Test inputs use the training statistics. ``meta["standardize"]`` records them.
    Integer inputs (the text datasets' token indices) are refused: they are not values.
    """
    if not ds.x_train.is_floating_point():
        raise UserError(f"standardize shifts and scales real-valued inputs; dataset {ds.name!r} "
                        f"has {ds.x_train.dtype} inputs (token indices, which the model embeds)"
                        f": leave them as they are")
    x = ds.x_train.double()
    if per_channel and x.ndim >= 2:
        dims = (0,) + tuple(range(2, x.ndim))
    else:
        dims = tuple(range(x.ndim))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, unbiased=False)
    std = torch.where(std == 0, torch.ones_like(std), std) + eps

    def apply(t: torch.Tensor) -> torch.Tensor:
        return ((t.double() - mean) / std).to(t.dtype)

    meta: dict[str, Any] = dict(ds.meta)
    meta["standardize"] = {"mean": mean.flatten().tolist(), "std": std.flatten().tolist(),
                           "per_channel": bool(per_channel)}
    return Dataset(apply(ds.x_train), ds.y_train, apply(ds.x_test), ds.y_test, meta)
