"""Losses the registry builds that torch does not ship."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OneHotMSELoss(nn.Module):
    """Squared error against one-hot class labels, mean over samples and classes (what
    ``nn.MSELoss`` gives on one-hot targets): ``loss: mse`` on a classification dataset."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = int(num_classes)

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = F.one_hot(y, self.num_classes).to(out.dtype)
        if out.shape != target.shape:
            # torch only warns and broadcasts: (N, 1) outputs against every class's label
            raise ValueError(f"OneHotMSELoss: outputs of shape {tuple(out.shape)} against "
                             f"one-hot labels of shape {tuple(target.shape)}: the model needs "
                             f"{self.num_classes} outputs per sample, one per class")
        return F.mse_loss(out, target)


class SequenceCrossEntropyLoss(nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss`` (same settings, same values and gradients to float rounding)
    that takes (N, C, *d) scores whose class dimension is the innermost in memory, as the
    recurrent models give them (the transpose of their (N, T, C) decoder output), as the
    (N·∏d, C) rows they are: torch's loss over a strided class dimension cost 1.3-3.6 times
    as much, forward and backward (``benchmarks/bench_sequence_loss.py``,
    docs/design/data-models.md). Other scores (contiguous (N, C, T), (N, C), probability
    targets) go to ``nn.CrossEntropyLoss`` unchanged. :func:`sgdlab.losses.build_loss` gives
    it for per-position targets; what checks for torch's loss by class reads it as one
    (:func:`sgdlab.loss_settings.torch_loss_class`)."""

    #: the torch loss this one computes (:func:`sgdlab.loss_settings.torch_loss_class`)
    torch_loss = nn.CrossEntropyLoss

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if (input.dim() > 2 and input.stride(1) == 1 and not target.is_floating_point()
                and target.shape == input.shape[:1] + input.shape[2:]):
            loss = F.cross_entropy(input.movedim(1, -1).reshape(-1, input.shape[1]),
                                   target.reshape(-1), weight=self.weight,
                                   ignore_index=self.ignore_index, reduction=self.reduction,
                                   label_smoothing=self.label_smoothing)
            return loss.reshape(target.shape) if self.reduction == "none" else loss
        return super().forward(input, target)
