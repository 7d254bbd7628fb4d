"""sgdlab/accuracy.py on hand-made scores: which targets are labels, which outputs have a
perplexity."""
from __future__ import annotations

import torch
from torch import nn

from sgdlab.accuracy import argmax_hits, perplexity_tokens


def test_an_ignore_index_of_zero_is_no_label():
    # padding token 0, as in language modelling: its positions are neither hits nor labels
    pred = torch.tensor([[0, 1], [1, 0]])
    scores = nn.functional.one_hot(pred, 3).permute(0, 2, 1).float()   # (N=2, C=3, d=2)
    targets = torch.tensor([[0, 1], [2, 0]])        # hits at [0, 0], [0, 1], [1, 1]
    hits, labels = argmax_hits(scores, targets, nn.CrossEntropyLoss(ignore_index=0))
    assert (hits.item(), labels.item()) == (1, 2)
    hits, labels = argmax_hits(scores, targets, nn.CrossEntropyLoss())
    assert (hits.item(), labels.item()) == (3, 4)
    assert perplexity_tokens(scores, targets, nn.CrossEntropyLoss(ignore_index=0)).item() == 2


def test_one_label_per_sample_has_an_accuracy_not_a_perplexity():
    scores, targets = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]), torch.tensor([0, 0, 0])
    assert perplexity_tokens(scores, targets, nn.CrossEntropyLoss()) is None
    hits, labels = argmax_hits(scores, targets)
    assert (hits.item(), labels.item()) == (2, 3)
