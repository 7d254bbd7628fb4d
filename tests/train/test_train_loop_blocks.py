"""train() measures with untimed probe blocks (``reproducible_blocks``): an instrument's or an
optimizer's (GLD's Tr H) estimate timed its blocks, so its round-off, and the run's series,
depended on how busy the machine was."""
from __future__ import annotations

import torch
from torch import nn

from sgdlab.operators import HessianOperator
from sgdlab.operators.blocking import blocks_reproducible
from sgdlab.testing import toy_dataset
from sgdlab.train import Callback, train


class _Sees(Callback):
    """Whether blocks are ruled, and the block an MLP's operator takes, at each step."""

    def __init__(self, data):
        self.data, self.seen = data, []

    def on_step_end(self, ctx):
        op = HessianOperator(ctx.model, ctx.loss_fn, self.data)
        self.seen.append((blocks_reproducible(), op.block_tuner("matmat").settled))

    def on_train_end(self, ctx):
        self.seen.append((blocks_reproducible(), None))


def test_measurements_during_training_take_untimed_probe_blocks():
    data = toy_dataset(40, 5, 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    cb = _Sees((data.x_train, data.y_train))
    train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
          epochs=1, batch_size=20, callbacks=[cb], progress=False)
    assert len(cb.seen) == 3 and all(on for on, _ in cb.seen)
    assert [size for _, size in cb.seen[:-1]] == [16, 16]        # the MLP's memory cap
    assert not blocks_reproducible()                             # left as it was
