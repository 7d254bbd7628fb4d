"""Accuracy of class scores against class labels: one rule for training's evaluations
(:func:`sgdlab.train.loop.evaluate`) and the measurements (interpolation, loss surfaces,
perturbed evaluations), so that they report the same number for any output shape; and the
tokens a per-token cross-entropy averages over, whose mean over a whole set is the log of a
perplexity (:func:`perplexity_tokens`)."""
from __future__ import annotations

import operator
from typing import Any

from torch import Tensor

from sgdlab.loss_settings import class_weights, is_cross_entropy, loss_reduction, loss_setting

__all__ = ["argmax_hits", "ignored_target", "perplexity_tokens"]


def ignored_target(loss_fn: Any) -> int | None:
    """The target value ``loss_fn`` leaves out of its loss: the ``ignore_index`` of a
    cross-entropy or NLL loss (``nn.CrossEntropyLoss(ignore_index=255)``, or a
    ``functools.partial`` of ``F.cross_entropy`` given one; -100, their default, for
    ``F.cross_entropy`` and ``F.nll_loss`` themselves); None for a loss without one."""
    try:
        return operator.index(loss_setting(loss_fn, "ignore_index"))
    except TypeError:       # None, or no integer
        return None


def argmax_hits(outputs: Any, targets: Tensor,
                loss_fn: Any = None) -> tuple[Tensor, Tensor] | None:
    """``(hits, labels)``: how many argmax predictions over the class dimension equal their
    class label, and how many labels there are, where cross-entropy reads ``outputs`` as
    (N, C, *d) scores against (N, *d) integer targets (one label per sample, or per position
    of a sequence or image); negative targets (cross-entropy's ``ignore_index``, -100 by
    default) and the target ``loss_fn`` ignores (:func:`ignored_target`: 255 for
    ``nn.CrossEntropyLoss(ignore_index=255)``, as in segmentation) are no labels. The
    accuracy is ``hits / labels`` summed over batches. None for
    targets that are not class labels (floating point), outputs of any other shape, a single
    score per label (a binary classifier's one logit, whose argmax is always class 0), or a
    tuple or dict that ``loss_fn`` unpacks: there is no accuracy to read from them. Works
    under ``torch.func.vmap`` (the checks read logical shapes only)."""
    if (not isinstance(outputs, Tensor) or targets.is_floating_point() or outputs.dim() < 2
            or outputs.shape[1] < 2 or outputs.shape[:1] + outputs.shape[2:] != targets.shape):
        return None
    labelled = _labelled(targets, loss_fn)
    return (outputs.argmax(dim=1) == targets).logical_and(labelled).sum(), labelled.sum()


def _labelled(targets: Tensor, loss_fn: Any) -> Tensor:
    """Where ``targets`` holds a label: not negative, and not the target ``loss_fn`` ignores."""
    labelled = targets >= 0
    ignore = ignored_target(loss_fn)
    if ignore is not None and ignore >= 0:
        labelled = labelled.logical_and(targets != ignore)
    return labelled


def perplexity_tokens(outputs: Any, targets: Tensor, loss_fn: Any) -> Tensor | None:
    """How many tokens ``loss_fn(outputs, targets)`` is the mean negative log-likelihood of,
    where that mean's exponential is a perplexity: a mean-reduced cross-entropy
    (``nn.CrossEntropyLoss``, ``F.cross_entropy`` or a partial of it; no class weights, no
    label smoothing, which make it another mean) of (N, C, *d) scores against per-position
    class labels (N, *d), d not empty (token data: one label per position of a sequence).
    The labels :func:`argmax_hits` counts: a target the loss ignores is no token. The mean over
    a set evaluated in chunks is then Σ loss·tokens / Σ tokens. None for any other loss,
    output or target (one label per sample: an accuracy, not a perplexity, is the number)."""
    if (not isinstance(outputs, Tensor) or outputs.dim() < 3 or targets.is_floating_point()
            or outputs.shape[:1] + outputs.shape[2:] != targets.shape):
        return None
    if (not is_cross_entropy(loss_fn) or loss_reduction(loss_fn) != "mean"
            or class_weights(loss_fn) is not None
            or loss_setting(loss_fn, "label_smoothing", 0.0) != 0):
        return None
    return _labelled(targets, loss_fn).sum()
