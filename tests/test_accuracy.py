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


def test_a_single_score_per_label_or_scores_of_another_shape_have_no_accuracy():
    # one logit (a binary classifier's): its argmax is always class 0, no accuracy to read
    assert argmax_hits(torch.tensor([[0.3], [-2.0]]), torch.tensor([0, 1])) is None
    # (N, C) scores against (N, 1) labels: comparing them would broadcast to N x N pairs
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert argmax_hits(scores, torch.tensor([[0], [1]])) is None
    assert argmax_hits(scores, torch.tensor([0.0, 1.0])) is None     # regression targets


def test_a_cross_entropy_that_is_another_mean_has_no_perplexity():
    # per-position scores (N=2, C=3, d=2): 4 tokens under the plain mean-reduced loss; label
    # smoothing, class weights or a sum make the loss no mean log-likelihood per token
    scores = torch.zeros(2, 3, 2)
    targets = torch.tensor([[0, 1], [2, 0]])
    assert perplexity_tokens(scores, targets, nn.CrossEntropyLoss()).item() == 4
    for other in (nn.CrossEntropyLoss(label_smoothing=0.1),
                  nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 1.0])),
                  nn.CrossEntropyLoss(reduction="sum"), nn.CrossEntropyLoss(reduction="none"),
                  nn.MSELoss()):
        assert perplexity_tokens(scores, targets, other) is None, other
