"""Data augmentation per mini-batch: random crops of zero-padded images and mirror flips.

Chaudhari's thesis trains WRN-28-10 on CIFAR "with data-augmentation which involves random
mirror-flipping (with probability 0.5) and random crops of size 32×32 after padding the image
by 4 pixels on each side" (§5.4.3), allcnn in §5.5 "with mirror flips and random crops", and
one CIFAR-10 run of Fig. 6.2c with augmented input. ``load_dataset(..., augment="crop-flip")``
records the augmentation in ``meta["augment"]``; the training loops
(:func:`sgdlab.train.train`, :func:`sgdlab.train.replicas.train_replicas`) then apply it to
every mini-batch they draw, with the random numbers of their own sampling generator right after
the batch's indices, so a run is reproducible from its seed and resumes bit for bit from a
checkpoint. Evaluation and measurements use the stored (unaugmented) images.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError, did_you_mean

#: the thesis' padding (§5.4.3) and mirror-flip probability
CROP_PADDING = 4
FLIP_PROBABILITY = 0.5

#: ``augment=`` values: what each does to a training image
AUGMENTATIONS = {
    "crop-flip": {"padding": CROP_PADDING, "flip": FLIP_PROBABILITY},
    "crop": {"padding": CROP_PADDING, "flip": 0.0},
    "flip": {"padding": 0, "flip": FLIP_PROBABILITY},
}


def augmentation_spec(name: Any, input_shape: tuple[int, ...] | None = None,
                      dataset: str = "") -> dict[str, Any]:
    """``meta["augment"]`` for ``augment=name`` on images of ``input_shape`` (not checked when
    None); a :class:`UserError` for an unknown name or inputs that are not images (C, H, W)."""
    if not isinstance(name, str) or name not in AUGMENTATIONS:
        raise UserError(f"option 'augment' must be one of {', '.join(AUGMENTATIONS)}, got "
                        f"{name!r}{did_you_mean(name, AUGMENTATIONS)}")
    if input_shape is not None and len(input_shape) != 3:
        from .registry import DATASETS, dataset_options

        # the hint only where the option exists: a text dataset's (T,) tokens have none
        flattened = (len(input_shape) == 1 and dataset in DATASETS
                     and "flatten" in dataset_options(dataset))
        raise UserError(f"option 'augment' crops and flips images shaped (C, H, W); dataset "
                        f"{dataset!r} has inputs shaped {tuple(input_shape)}"
                        + (" (drop flatten=True)" if flattened else ""))
    return {"name": name, **AUGMENTATIONS[name]}


def augment_batch(x: Tensor, generator: torch.Generator, *, padding: int = CROP_PADDING,
                  flip: float = FLIP_PROBABILITY) -> Tensor:
    """Images (B, C, H, W) → a random H x W crop of each image zero-padded by ``padding``
    pixels on every side (offsets uniform in 0..2·padding, drawn first), then mirrored
    left-right with probability ``flip`` (drawn second). The draws use ``generator`` (a CPU
    generator) and do not depend on ``x``'s values or device; the result is a new tensor on
    ``x``'s device."""
    n, _, h, w = x.shape
    rows = torch.arange(h).expand(n, h)
    cols = torch.arange(w).expand(n, w)
    if padding > 0:
        off = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
        rows = rows + off[0, :, None]
        cols = cols + off[1, :, None]
        x = F.pad(x, (padding, padding, padding, padding))
    if flip > 0:
        mirror = torch.rand(n, generator=generator) < flip
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    dev = x.device
    b = torch.arange(n, device=dev)[:, None, None, None]
    c = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    # non-blocking like BatchStream's copies: no wait on the device at every step
    rows, cols = rows.to(dev, non_blocking=True), cols.to(dev, non_blocking=True)
    return x[b, c, rows[:, None, :, None], cols[:, None, None, :]]


def batch_augmentation(data: Any) -> Callable[[Tensor, torch.Generator], Tensor] | None:
    """The augmentation ``data.meta["augment"]`` asks for, as ``f(batch, generator)``; None
    when the dataset has none."""
    spec = (getattr(data, "meta", None) or {}).get("augment")
    if not spec:
        return None
    padding, flip = int(spec["padding"]), float(spec["flip"])

    def apply(x: Tensor, generator: torch.Generator) -> Tensor:
        return augment_batch(x, generator, padding=padding, flip=flip)
    return apply
