"""A torch dataset or ``DataLoader`` read once into the tensors of a :class:`Dataset` split.

The training loops batch a :class:`Dataset`'s tensors themselves (``BatchStream`` in
:mod:`sgdlab.train.loop`): their batches follow from the run's seed alone, which is what lets a
run resume bit for bit from a checkpoint. A torch dataset or loader is therefore not trained on
as it is but materialised: :func:`split_tensors` iterates it once and concatenates its
(input, target) items into one input and one target tensor. :meth:`Dataset.from_torch` calls it
for each split.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, checked_int, warn


def split_tensors(source: Any, split: str, batch_size: int) -> tuple[Tensor, Tensor]:
    """The inputs (N, ...) and targets (N, ...) of ``source``'s N items, in the order it gives
    them: a map-style torch ``Dataset`` read through a non-shuffling ``DataLoader`` of
    ``batch_size`` with torch's default collate, an ``IterableDataset`` as it iterates, a
    ``DataLoader`` as it is (its own batches, collate and order). Integer targets become int64
    class labels; a dataset's Python float (input or target) becomes torch's default dtype, as
    ``torch.tensor`` makes it (the default collate's float64 would not match a float32 model),
    while a ``DataLoader``'s collate is its own (float64 stays); other dtypes and shapes stay
    as collated. ``split`` names the split in messages.

    A ``ValueError`` names the problem: items that are not (input, target) pairs, inputs or
    targets of varying shapes (both shapes and the item's index), inputs the default collate
    cannot stack (a PIL image: ``transform=ToTensor()``), an empty split, and a ``DataLoader``
    with ``drop_last=True`` that would leave examples out. A ``DataLoader`` that shuffles
    warns: its examples are read once, in a random order.
    """
    from torch.utils.data import DataLoader, Dataset as TorchDataset

    # a ConfigError is the ValueError the docstring promises, and still a UserError
    batch_size = checked_int("batch_size", batch_size, 1, error=ConfigError)
    if isinstance(source, DataLoader):
        _check_loader(source, split)
        batches = source
    elif isinstance(source, TorchDataset):
        batches = DataLoader(source, batch_size=batch_size, shuffle=False,
                             collate_fn=_ItemCollate(split))
    else:
        raise ValueError(f"Dataset.from_torch: {split} is a {type(source).__name__}, not a "
                         "torch Dataset or DataLoader; for tensors of one's own: "
                         "sgdlab.data.Dataset(x_train, y_train, x_test, y_test)")
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    seen = 0
    for number, batch in _loader_batches(batches, split):
        x, y = _batch_pair(batch, number, split)
        # a batch stacked its items, so its first item stands for all of them
        for part, read, new in (("input", xs, x), ("target", ys, y)):
            if read and read[0].shape[1:] != new.shape[1:]:
                raise _shape_mismatch(f"{split} item {seen}", part, tuple(new.shape[1:]),
                                      tuple(read[0].shape[1:]))
        xs.append(x)
        ys.append(y)
        seen += len(x)
    if not seen:
        raise ValueError(f"Dataset.from_torch: the {split} split is empty (it gave no items)"
                         + (": leave test out for no test split" if split == "test" else ""))
    x_all, y_all = torch.cat(xs), torch.cat(ys)
    if not (y_all.is_floating_point() or y_all.is_complex() or y_all.dtype == torch.bool):
        y_all = y_all.long()
    return x_all, y_all


def _check_loader(loader: Any, split: str) -> None:
    """Refuse a loader that drops examples; warn for one that shuffles."""
    from torch.utils.data import RandomSampler, SubsetRandomSampler, WeightedRandomSampler

    if loader.drop_last and loader.batch_size:
        # training draws batches of its own size: the loader's batching buys nothing, and its
        # dropped examples would be missing from every epoch
        try:
            lost = len(loader.sampler) % loader.batch_size
        except TypeError:           # an IterableDataset of unknown length
            lost = None
        if lost != 0:
            count = f"{lost} examples" if lost is not None else "its last examples"
            raise ValueError(
                f"Dataset.from_torch: the {split} DataLoader drops its last partial batch "
                f"(drop_last=True): {count} would be left out of the split; give its dataset "
                "(loader.dataset) or a DataLoader with drop_last=False (training draws "
                "batches of its own batch_size)")
    sampler = loader.sampler
    if isinstance(sampler, (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)):
        drawn = (", drawing with replacement: some examples repeated, others left out"
                 if getattr(sampler, "replacement", False) else "")
        warn(f"Dataset.from_torch: the {split} DataLoader shuffles ({type(sampler).__name__}"
             f"{drawn}): its examples are read once, in a random order, another at each call; "
             "train() shuffles every epoch from its own seed, so give the loader's dataset "
             "(loader.dataset) or a DataLoader with shuffle=False")


def _loader_batches(batches: Any, split: str):
    """``batches``' batches, numbered; the default collate's refusals of items it cannot stack
    (a PIL image, inputs of several shapes in one batch) as a ``ValueError`` saying so."""
    number = 0
    try:
        for batch in batches:
            yield number, batch
            number += 1
    except (TypeError, RuntimeError) as e:
        message = str(e).splitlines()[-1] if str(e) else ""
        if "default_collate" in str(e):
            raise ValueError(f"Dataset.from_torch: the {split} DataLoader's items cannot be "
                             f"stacked by torch's default collate ({message}): give the "
                             "dataset transform=ToTensor() (torchvision) for images, or return "
                             "tensors from its __getitem__") from e
        if "stack expects each tensor to be equal size" in str(e):
            raise ValueError(f"Dataset.from_torch: batch {number} of the {split} DataLoader "
                             f"holds items of several shapes ({message}): a split's inputs "
                             "and targets are stacked into one tensor each, so they must "
                             "share a shape (resize or pad them in the dataset)") from e
        raise


def _batch_pair(batch: Any, number: int, split: str) -> tuple[Tensor, Tensor]:
    """A collated batch as its (inputs, targets) tensors; a ``ValueError`` for another one."""
    if (isinstance(batch, (tuple, list)) and len(batch) == 2
            and all(isinstance(t, Tensor) for t in batch)):
        x, y = batch
        if x.dim() and y.dim() and len(x) == len(y):
            return x, y
    raise ValueError(f"Dataset.from_torch: batch {number} of the {split} DataLoader is "
                     f"{_described(batch)}, not (inputs, targets) tensors of one row per "
                     "item: its dataset's items must be (input, target) pairs")


class _ItemCollate:
    """torch's default collate, after checking each item (numbered across batches, the loader
    being sequential and in this process): an (input, target) pair, an input the default
    collate stacks, and the first item's shapes; Python floats then of torch's default dtype."""

    def __init__(self, split: str):
        self.split, self.seen, self.first = split, 0, None

    def __call__(self, items: list[Any]) -> list[Tensor]:
        from torch.utils.data import default_collate

        for item in items:
            self._check(item)
            self.seen += 1
        x, y = default_collate(items)
        # a Python float is collated to float64; torch.tensor(0.5) is of the default dtype
        return [t.to(torch.get_default_dtype()) if type(part) is float else t
                for t, part in zip((x, y), items[0])]

    def _check(self, item: Any) -> None:
        where = f"Dataset.from_torch: {self.split} item {self.seen}"
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"{where} is {_described(item)}, not an (input, target) pair: "
                             "the dataset's __getitem__ must return (input, target)")
        for part, value in zip(("input", "target"), item):
            if type(value).__module__.split(".")[0] == "PIL":
                raise ValueError(f"{where}'s {part} is a PIL image ({type(value).__name__}), "
                                 "which torch's default collate cannot stack: give the dataset "
                                 "transform=ToTensor() (torchvision), or return a tensor")
            if not _stackable(value):
                raise ValueError(
                    f"{where}'s {part} is {_described(value)}: an item's {part} is one "
                    "tensor, numpy array or number (several inputs: concatenate them into one "
                    "tensor, and split them in the model)")
        shapes = tuple(tuple(getattr(v, "shape", ())) for v in item)
        if self.first is None:
            self.first = shapes
        for part, shape, first in zip(("input", "target"), shapes, self.first):
            if shape != first:
                raise _shape_mismatch(f"{self.split} item {self.seen}", part, shape, first)


def _shape_mismatch(item: str, part: str, shape: tuple[int, ...],
                    first: tuple[int, ...]) -> ValueError:
    """The refusal of ``item``'s input or target (``part``) shaped otherwise than item 0's."""
    article = "an" if part == "input" else "a"
    return ValueError(f"Dataset.from_torch: {item} has {article} {part} of shape {shape}, item "
                      f"0 one of shape {first}: a split's {part}s are stacked into one tensor, "
                      "so they must share a shape (resize or pad them in the dataset)")


def _stackable(value: Any) -> bool:
    """Whether torch's default collate stacks ``value`` into a tensor (a bool aside)."""
    import numbers

    numpy = type(value).__module__ == "numpy" and hasattr(value, "shape")
    return isinstance(value, (Tensor, numbers.Number)) or numpy


def _described(value: Any) -> str:
    """``value`` in a message: a type, with a tensor's shape or a sequence's element types."""
    if isinstance(value, Tensor):
        return f"a Tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    if isinstance(value, (tuple, list)):
        kinds = ", ".join(type(v).__name__ for v in value)
        return f"a {type(value).__name__} of {len(value)} ({kinds})"
    return f"a {type(value).__name__}"
