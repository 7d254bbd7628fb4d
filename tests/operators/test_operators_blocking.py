"""Untimed probe blocks (``reproducible_blocks``): estimates whose bits do not depend on how
the BlockTuner's timing settled."""
import pytest
import torch
from torch import nn

from sgdlab.measure.curvature import frobenius_norm
from sgdlab.operators import DenseOperator, HessianOperator
from sgdlab.operators.blocking import blocks_reproducible, reproducible_blocks
from sgdlab.testing import fake_block_timing

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 5))
    x, y = torch.randn(64, 20), torch.randint(0, 5, (64,))
    return model, nn.CrossEntropyLoss(), (x, y)


def _conv_operator() -> HessianOperator:
    """The Hessian of a small CNN: its rule takes blocks of 1."""
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    data = (torch.randn(4, 1, 4, 4), torch.randint(0, 3, (4,)))
    return HessianOperator(cnn, nn.CrossEntropyLoss(), data)


def _estimate(monkeypatch, per_block):
    """‖H‖_F of one problem with the tuner's clock replaced; its settled block size."""
    fake_block_timing(monkeypatch, per_block)
    model, loss_fn, data = _problem()
    op = HessianOperator(model, loss_fn, data)
    value = frobenius_norm(op, 40, generator=torch.Generator().manual_seed(1)).value
    tuners = op.__dict__.get("_block_tuners", {})
    return value, [t.settled for t in tuners.values()]


def test_timed_blocks_move_the_bits_and_reproducible_blocks_do_not(monkeypatch):
    cheap_blocks = lambda b: 1.0            # noqa: E731 - a block costs the same whatever b
    dear_blocks = lambda b: float(b * b)    # noqa: E731 - per column dearer as b grows
    timed = [_estimate(monkeypatch, f) for f in (cheap_blocks, dear_blocks)]
    assert timed[0][1] == [16] and timed[1][1] == [1]        # the timing settled differently
    assert timed[0][0] != timed[1][0]                         # and the round-off followed it
    assert timed[0][0] == pytest.approx(timed[1][0], rel=1e-6)
    with reproducible_blocks():
        assert blocks_reproducible()
        fixed = [_estimate(monkeypatch, f) for f in (cheap_blocks, dear_blocks)]
    assert fixed[0][0] == fixed[1][0]                         # bitwise
    assert fixed[0][1] == fixed[1][1] == []                   # nothing timed, nothing kept
    assert not blocks_reproducible()


def test_reproducible_block_size_rule_follows_the_layers():
    model, loss_fn, data = _problem()
    mlp = HessianOperator(model, loss_fn, data)
    conv = _conv_operator()
    with reproducible_blocks():
        assert mlp.block_tuner("matmat").settled == mlp.probe_block_size() == 16
        assert conv.block_tuner("matmat").settled == 1
        assert mlp.block_tuner("matmat", cap=3).settled == 3     # within the caller's cap
        shifted = conv + DenseOperator(torch.eye(conv.shape[0]))
        assert shifted.block_tuner("matmat").settled == 1          # the sum: the lesser rule
        assert mlp.block_tuner("matmat", block_size=5).settled == 5
        with reproducible_blocks(False):                          # timed again inside
            assert mlp.block_tuner("matmat").settled is None
    assert mlp.block_tuner("matmat").settled is None


def test_a_scaled_model_operator_keeps_its_rule_in_sums():
    """-H + σI (a shift for the most negative eigenvalues) is the model's products: a CNN's
    takes its rule's block of 1, as H + σI does, not the memory cap."""
    conv = _conv_operator()
    eye = DenseOperator(torch.eye(conv.shape[0]))
    with reproducible_blocks():
        for op in (-conv + eye, 2.0 * conv + eye, eye - conv):
            assert op.block_tuner("matmat").settled == 1
    assert (-conv + eye).block_tuner("matmat").settled is None    # timed, as conv + eye is
