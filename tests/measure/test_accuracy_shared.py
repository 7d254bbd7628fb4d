"""Training's evaluation and the measurements (interpolation, loss surfaces, perturbed
evaluations) read the same accuracy off any output shape: one rule, sgdlab.accuracy."""
from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from sgdlab.accuracy import argmax_hits, ignored_target
from sgdlab.measure.interpolation import evaluate as measure_evaluate
from sgdlab.measure.interpolation import interpolate_models
from sgdlab.measure.sharpness import perturbed_evaluations
from sgdlab.measure.surface import loss_surface
from sgdlab.operators.params import params_vector
from sgdlab.testing import TokenTagger
from sgdlab.train import loop
from sgdlab.train.loop import evaluate as train_evaluate


def _tagger_case():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (40, 6), generator=g)
    y = torch.randint(0, 5, (40, 6), generator=g)
    y[:, -1] = -100                                   # ignored positions: no labels
    y[:3] = -100                                      # three samples without any label
    torch.manual_seed(0)
    return TokenTagger().double(), x, y


def _linear_case():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    y[:5] = -100
    torch.manual_seed(0)
    return nn.Linear(4, 3).double(), x, y


@pytest.mark.parametrize("case", [_tagger_case, _linear_case], ids=["NCL", "NC"])
def test_training_and_the_measurements_report_the_same_accuracy(case):
    # the measurements read NaN for (N, C, L) outputs (0.189 in training) and counted ignored
    # targets as misses on (N, C) ones (0.267 against training's 0.32)
    model, x, y = case()
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        pred = model(x).argmax(1)
    labelled = y >= 0
    ref = float((pred == y)[labelled].double().mean())
    assert 0 < ref < 1
    assert train_evaluate(model, loss_fn, x, y, batch_size=7)["acc"] == pytest.approx(
        ref, rel=1e-15)
    # the measurements refuse ignored targets in batches (their losses would not average):
    # batches are checked on targets without any
    y_all = torch.where(labelled, y, pred)
    ref_all = float((pred == y_all).double().mean())
    for data, r in (((x, y), ref), ([(x[:7], y_all[:7]), (x[7:], y_all[7:])], ref_all)):
        assert measure_evaluate(model, loss_fn, data)[1] == pytest.approx(r, rel=1e-15)
        curve = interpolate_models(model, model, loss_fn, data, data, [0.0])
        assert curve.train_acc == curve.test_acc == [pytest.approx(r, rel=1e-15)]
        zero = torch.zeros(2, params_vector(model).numel(), dtype=torch.float64)
        for vectorize in (True, False):
            _, acc = perturbed_evaluations(model, loss_fn, data, zero, accuracy=True,
                                           vectorize=vectorize)
            assert acc.tolist() == [pytest.approx(r, rel=1e-15)] * 2
        d = torch.ones_like(params_vector(model))
        surf = loss_surface(model, loss_fn, data, [d], extent=1.0, steps=3)
        assert surf.train_acc[1] == pytest.approx(r, rel=1e-15)


def test_outputs_without_class_scores_have_no_accuracy_anywhere():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    one_logit = nn.Linear(3, 1).double()            # a binary classifier's single logit
    loss_fn = lambda out, t: nn.functional.binary_cross_entropy_with_logits(  # noqa: E731
        out[:, 0], t.double())
    assert "acc" not in train_evaluate(one_logit, loss_fn, x, y)
    assert math.isnan(measure_evaluate(one_logit, loss_fn, (x, y))[1])
    zero = torch.zeros(1, 4, dtype=torch.float64)
    for vectorize in (True, False):
        _, acc = perturbed_evaluations(one_logit, loss_fn, (x, y), zero, accuracy=True,
                                       vectorize=vectorize)
        assert math.isnan(float(acc[0]))
    # real-valued targets of a matching shape are no labels either
    assert argmax_hits(torch.randn(4, 3), torch.zeros(4)) is None


def test_one_accuracy_rule():
    assert loop.argmax_hits is argmax_hits


@pytest.mark.parametrize("loss_fn", [
    nn.CrossEntropyLoss(ignore_index=255),
    functools.partial(nn.functional.cross_entropy, ignore_index=255),
], ids=["module", "partial"])
def test_the_loss_s_ignore_index_is_no_label(loss_fn):
    # ignore_index=255 (segmentation's "void") counted as a miss: 0.667 where every label
    # the loss reads is hit
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    x = torch.randn(30, 4, dtype=torch.float64)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = torch.where(torch.arange(30) % 3 == 0, pred, (pred + 1) % 3)
    y[:12] = 255
    labelled = y != 255
    ref = float((pred == y)[labelled].double().mean())
    assert 0 < ref < 1
    assert train_evaluate(model, loss_fn, x, y, batch_size=7)["acc"] == pytest.approx(ref)
    assert measure_evaluate(model, loss_fn, (x, y))[1] == pytest.approx(ref)
    zero = torch.zeros(1, params_vector(model).numel(), dtype=torch.float64)
    for vectorize in (True, False):
        _, acc = perturbed_evaluations(model, loss_fn, (x, y), zero, accuracy=True,
                                       vectorize=vectorize)
        assert float(acc[0]) == pytest.approx(ref)
    assert ignored_target(loss_fn) == 255
    assert ignored_target(nn.MSELoss()) is None


def test_a_target_equal_to_a_negative_ignore_index_is_still_no_label():
    out = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([1, -5, 0])
    hits, labels = argmax_hits(out, y, nn.CrossEntropyLoss(ignore_index=-5))
    assert (int(hits), int(labels)) == (2, 2)
