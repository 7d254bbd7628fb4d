"""Batch-norm running statistics recomputed at a model's current weights.

A model averaged from several (Parle's master x̄, thesis §5.3) has no running statistics of
its own: the replicas' were gathered at their weights, not at x̄. The authors' Parle code
(``parle_mpi.py``, ``validate`` → ``dry_feed``) recomputes them before each evaluation with
one train-mode forward pass over the training set, dropout off; :func:`recompute_batch_norm`
is that pass.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..operators.batches import _draws

__all__ = ["batch_norm_modules", "recompute_batch_norm"]


def batch_norm_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm modules of ``model`` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, x: Tensor, *, batch_size: int) -> int:
    """Replace the running mean and variance of every batch-norm module of ``model`` by those
    of one train-mode pass over ``x`` at the current weights; returns the number of batches.

    The pass takes ``x`` in its order (no sampling, no augmentation) in k = ⌈N/b⌉
    consecutive batches of near-equal size (``torch.tensor_split``: none of one example, which
    a train-mode batch norm refuses), and each statistic is the size-weighted mean over the
    batches of the batch's mean and unbiased variance — as PyTorch's running statistics
    with a momentum of b_i / (b_1 + ... + b_i) for batch i, after a reset. With one batch
    (b ≥ N) that is the training set's per-feature mean and unbiased variance at these
    weights; with several, a deeper layer sees its inputs normalised by batch statistics, as
    in training. The authors' ``dry_feed`` keeps the default momentum (0.1) over the pass,
    an average dominated by its last batches; the size-weighted mean weighs every example
    once. Modules that draw random numbers (dropout) run in eval mode, so the pass uses no
    random numbers (the generators are also restored after it); every module's mode is
    restored, and so is each batch norm's momentum. ``num_batches_tracked`` ends at k.
    """
    bns = batch_norm_modules(model)
    if not bns:
        return 0
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in bns]
    k = max(1, math.ceil(len(x) / batch_size))
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            for m in model.modules():
                m.training = not _draws(m)   # dropout off: p = 0, as the authors' code sets it
            for m in bns:
                m.reset_running_stats()
            seen = 0
            for xb in torch.tensor_split(x, k):
                seen += len(xb)
                for m in bns:
                    m.momentum = len(xb) / seen
                model(xb)
    finally:
        for m, mode in modes.items():
            m.training = mode
        for m, mom in zip(bns, momenta):
            m.momentum = mom
    return k
