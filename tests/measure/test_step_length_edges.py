"""Per-sample losses and slopes along a step (Cockpit's α) for a model whose operation has no
rule for torch.func at all: an autograd.Function of the old style (``forward(ctx, ...)``, no
``setup_context``), on which ``torch.func.jvp`` raises a RuntimeError, not a
NotImplementedError."""
import pytest
import torch
from torch import nn

from sgdlab.measure.step_length import per_sample_losses_and_slopes
from sgdlab.operators.params import params_vector
from sgdlab.testing import per_sample_gradients_loop


class _OldStyleSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _Square(nn.Module):
    def forward(self, x):
        return _OldStyleSquare.apply(x)


def test_an_old_style_autograd_function_falls_back_to_per_sample_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), _Square(), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    loss_fn = nn.CrossEntropyLoss()
    theta = params_vector(model).detach()
    with pytest.raises(RuntimeError, match="setup_context"):     # the route that fails
        torch.func.jvp(lambda t: model(t), (x,), (x,))
    v = torch.linspace(-1.0, 1.0, len(theta), dtype=torch.float64)
    ell, slope = per_sample_losses_and_slopes(model, loss_fn, theta, v, (x, y))
    # by hand: one backward pass per sample, and each sample's cross-entropy
    torch.testing.assert_close(slope, per_sample_gradients_loop(model, loss_fn, (x, y)) @ v,
                               rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        out = model(x)
    want = torch.logsumexp(out, 1) - out[torch.arange(5), y]
    torch.testing.assert_close(ell, want, rtol=1e-12, atol=1e-12)
