"""The dataset record every loader and generator returns."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Dataset:
    """Train/test tensors plus metadata.

    ``x_*`` are float tensors shaped (N, *input_shape), or int64 token indices (N, T) for the
    text datasets (:mod:`sgdlab.data.text`); ``y_*`` are int64 class indices for
    classification (N,), or (N, T) next tokens, one label per position, or float
    (N, out_dim) targets for regression.
    ``meta`` holds at least: ``name``, ``task`` ("classification" | "regression"),
    ``input_shape`` (tuple), ``num_outputs`` (classes or regression outputs), ``seed``.
    A record built from one's own tensors may leave ``meta`` empty: the task then follows the
    targets' dtype (integer: class labels; floating point: regression), ``num_outputs`` the
    largest label (plus one) or the targets' width, ``input_shape`` the inputs. Without
    ``x_test`` and ``y_test`` the test split is empty: training then logs no test metrics.
    Each split holds as many targets as inputs (first dimension), or the record is refused
    with a ``ValueError`` naming both lengths; a 0-d tensor (a single number, no examples'
    dimension) is refused with a ``ValueError`` naming it and its shape.
    A torch dataset or ``DataLoader`` becomes a record through :meth:`from_torch`, which reads
    each split once into these tensors.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor = None        # type: ignore[assignment]  (None: an empty split)
    y_test: Tensor = None        # type: ignore[assignment]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            value = getattr(self, key)
            # a numpy array failed later, deep in training ("'numpy.ndarray' object has no
            # attribute 'to'")
            numpy = type(value).__module__ == "numpy"
            # several input tensors (a two-input or dict-input model) cannot be converted:
            # they failed later with "unhashable type: 'slice'" or a stacking error
            several = isinstance(value, dict) or (
                isinstance(value, (list, tuple)) and any(isinstance(v, Tensor) for v in value))
            if several:
                samples = "" if isinstance(value, dict) else (
                    "samples one by one: torch.stack them; ")
                # targets (labels gathered one by one, most often) are split by the loss
                role, splits = (("inputs", "wrap the model in a module") if key[0] == "x"
                                else ("targets", "give a loss_fn(outputs, targets)"))
                raise ValueError(
                    f"Dataset: {key} is a {type(value).__name__} of tensors, not one tensor: "
                    f"the {role} of a split are one tensor (N, ...); {samples}several {role} "
                    f"per sample: concatenate them (torch.cat(..., dim=1)) and {splits} that "
                    "takes that tensor and splits it")
            if isinstance(value, (list, tuple)) or numpy:
                raise ValueError(
                    f"Dataset: {key} is a {'numpy.' * numpy}{type(value).__name__}, not "
                    "a torch tensor: convert it, torch.as_tensor(x, dtype=torch.float32) for "
                    "inputs, torch.as_tensor(y).long() for class labels")
            # a 0-d tensor failed later, slicing the empty test split or in training ("len()
            # of a 0-d tensor"), or was taken as a test split of no example
            if isinstance(value, Tensor) and value.ndim == 0:
                raise ValueError(
                    f"Dataset: {key} is a 0-d tensor (shape (), the single number "
                    f"{value.item()}): a split holds one row per example, inputs shaped "
                    "(N, ...), class labels (N,)")
        if (self.x_test is None) != (self.y_test is None):
            raise ValueError("Dataset: give both x_test and y_test, or neither (no test split)")
        if self.x_test is None:
            self.x_test, self.y_test = self.x_train[:0], self.y_train[:0]
        # a mismatch otherwise surfaced later, as an indexing error deep in training
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            nx, ny = len(x), len(y)
            if nx != ny:
                raise ValueError(f"Dataset: x_{split} has {nx} examples but y_{split} has {ny} "
                                 f"(the {split} split needs one target per example)")

    @classmethod
    def from_torch(cls, train: Any, test: Any = None, *, meta: dict[str, Any] | None = None,
                   batch_size: int = 1024) -> "Dataset":
        """The record of a torch dataset or ``DataLoader`` of (input, target) items per split
        (``test`` None: no test split), each read once into tensors
        (:func:`sgdlab.data.torch_data.split_tensors`): a map-style ``Dataset`` (a
        torchvision dataset, a ``TensorDataset``, one's own) in order through a
        ``DataLoader`` of ``batch_size`` with torch's default collate, an
        ``IterableDataset`` as it iterates, a ``DataLoader`` as it is. Integer targets (Python
        ints, 0-d integer tensors) become int64 class labels (N,), floating-point ones stay
        regression targets of their shape; ``meta`` as given (empty: inferred from the
        tensors, as above).

        Training batches these tensors itself, from the run's seed, which is what lets a run
        resume bit for bit. What the dataset draws at random is drawn once here and then
        fixed: a random transform (torchvision's ``RandomCrop``, ``RandomHorizontalFlip``) is
        one augmented copy of each example, not a new one per epoch; for augmentation per
        batch give ``meta={"augment": augmentation_spec("crop-flip")}``
        (:mod:`sgdlab.data.augment`), which :func:`sgdlab.train.train` applies to every batch
        it draws. A ``DataLoader`` that shuffles warns (its order is then random); one with
        ``drop_last=True`` that would leave examples out is refused. Items that are not
        pairs, inputs of varying shapes, inputs the default collate cannot stack (a PIL
        image: ``transform=ToTensor()``) and an empty split are refused with a
        ``ValueError`` naming the problem.
        """
        from .torch_data import split_tensors

        x_train, y_train = split_tensors(train, "train", batch_size)
        x_test, y_test = (split_tensors(test, "test", batch_size) if test is not None
                          else (None, None))
        return cls(x_train, y_train, x_test, y_test, dict(meta or {}))

    @property
    def name(self) -> str:
        return self.meta.get("name", "?")

    @property
    def task(self) -> str:
        if "task" in self.meta:
            return self.meta["task"]
        return "regression" if self.y_train.is_floating_point() else "classification"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta.get("input_shape", self.x_train.shape[1:]))

    @property
    def num_outputs(self) -> int:
        if "num_outputs" in self.meta:
            return int(self.meta["num_outputs"])
        if self.task == "classification":
            return max((int(y.max()) for y in (self.y_train, self.y_test) if y.numel()),
                       default=-1) + 1
        return int(math.prod(self.y_train.shape[1:]))

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[Tensor, Tensor]:
        return self.x_test, self.y_test

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Dataset":
        """Move tensors; ``dtype`` applies to floating-point inputs (and regression targets):
        class labels and token indices stay int64."""
        def cast(t: Tensor, is_target: bool) -> Tensor:
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            return t.to(device) if device is not None else t
        return Dataset(cast(self.x_train, False), cast(self.y_train, True),
                       cast(self.x_test, False), cast(self.y_test, True), dict(self.meta))

    def __repr__(self) -> str:
        # a record built from one's own tensors has no name: say so rather than print "?"
        name = self.meta.get("name") or "unnamed"
        return (f"Dataset({name}: train {tuple(self.x_train.shape)}, "
                f"test {tuple(self.x_test.shape)}, task={self.task})")
