"""Loss functions by name (configs, experiments, replica runs): all mean-reduced."""
from __future__ import annotations

from sgdlab.errors import ConfigError

LOSSES = ("auto", "cross_entropy", "mse")


def build_loss(name: str | None, data):
    """``cross_entropy`` | ``mse`` | ``auto``/None (by ``data.task``) for a ``Dataset``.

    ``mse`` on class labels compares the outputs with one-hot labels
    (:class:`sgdlab.train.losses.OneHotMSELoss`). ``cross_entropy`` on per-position labels
    (targets (N, T), token data) is :class:`sgdlab.train.losses.SequenceCrossEntropyLoss`,
    ``nn.CrossEntropyLoss`` computed on flattened rows where that is faster.
    Raises ConfigError for an unknown name, cross-entropy on real-valued targets, or ``mse``
    on per-position labels (token data), which has no one-hot form matching the outputs.
    """
    from torch import nn  # lazy: configs validate without importing torch

    from sgdlab.train.losses import OneHotMSELoss, SequenceCrossEntropyLoss

    if name in (None, "auto"):
        name = "cross_entropy" if data.task == "classification" else "mse"
    of = f"dataset {data.name!r}" if data.name != "?" else "the data"    # in the refusals
    if name == "cross_entropy":
        if data.y_train.is_floating_point():
            # a data file's labels saved as floats are read as regression targets
            raise ConfigError(f"loss: cross_entropy needs class labels, but {of} has "
                              f"real-valued targets ({data.y_train.dtype}): class labels are "
                              "integers (save them as y.long()); for regression use mse")
        return SequenceCrossEntropyLoss() if data.y_train.dim() > 1 else nn.CrossEntropyLoss()
    if name == "mse":
        if data.y_train.is_floating_point():
            return nn.MSELoss()
        if data.y_train.dim() > 1:
            # one-hot labels per position (N, T, C) are not the (N, C, T) outputs of token
            # models: torch fails at the first step, after the run is recorded
            raise ConfigError(f"loss: mse on class labels compares the outputs with one label "
                              f"per sample, but {of} has integer labels of shape "
                              f"{tuple(data.y_train.shape)} (per position, token data): use "
                              "loss: cross_entropy (or auto)")
        return OneHotMSELoss(data.num_outputs)
    raise ConfigError(f"loss: unknown loss {name!r}; known: {', '.join(LOSSES)}")
