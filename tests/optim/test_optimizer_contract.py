"""Every registered optimizer honours the ``torch.optim.Optimizer`` contract on every device
this machine has (CPU always; CUDA when present): it trains a model that is not a plain
``nn.Sequential``, keeps its parameters and state on the model's device, and a
``state_dict()`` / ``load_state_dict()`` round-trip into a fresh optimizer continues the
trajectory exactly (noise generators included)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.optim import OPTIMIZERS, build_optimizer_for
from sgdlab.optim.registry import needs_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# the hyper-parameters each optimizer cannot do without (small L for the inner loops)
HYPER = {
    "sgd": dict(lr=0.1, momentum=0.9), "adam": dict(lr=0.01), "adamw": dict(lr=0.01),
    "rmsprop": dict(lr=0.01), "entropy_sgd": dict(lr=0.1, L=3),
    "entropy_adam": dict(lr=0.01, L=3), "parle": dict(lr=0.1, L=3), "gd": dict(lr=0.1),
    "gld-const": dict(lr=0.1, sigma=0.01),
    **{f"gld-{kind}": dict(lr=0.1, noise_batch_size=4)
       for kind in ("dynamic", "diagonal", "sgd-like")},
    "gld-leading": dict(lr=0.1, noise_batch_size=4, k=2),
    "gld-hessian": dict(lr=0.1, noise_batch_size=4, k=2),
    "gd-isotropic": dict(lr=0.1, variance_factor=0.5), "random-lr-sgd": dict(lr=0.1),
    "hj": dict(lr=0.1, L=3), "heat": dict(lr=0.1, L=3),
    "switch": dict(first="rmsprop", second="sgd", switch_step=2,
                   first_hyper=dict(lr=0.01), second_hyper=dict(lr=0.1)),
    "trivialized": dict(lr=0.1), "annealed-noise": dict(lr=0.1),
}


class SkipNet(nn.Module):
    """A residual block by hand: ``forward`` is not a chain of children."""

    def __init__(self):
        super().__init__()
        self.inp, self.hidden, self.out = nn.Linear(3, 5), nn.Linear(5, 5), nn.Linear(5, 2)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        return self.out(h + torch.tanh(self.hidden(h)))


def _setup(device: str):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)
    torch.manual_seed(0)
    model = SkipNet().double().to(device)
    return model, (x.double().to(device), y.to(device))


def _build(name: str, model, data):
    return build_optimizer_for(name, model, loss_fn=F.cross_entropy,
                               data=data if needs_model(OPTIMIZERS[name]) else None,
                               **HYPER[name])


def _steps(opt, model, data, n: int) -> list[float]:
    x, y = data

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return [float(opt.step(closure).detach()) for _ in range(n)]


def _state_tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _state_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _state_tensors(v)


def test_every_registered_optimizer_is_covered():
    assert set(HYPER) == set(OPTIMIZERS), (
        "give a newly registered optimizer its hyper-parameters here so the contract covers it")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(HYPER))
def test_state_dict_round_trip_continues_the_trajectory(name, device):
    model, data = _setup(device)
    opt = _build(name, model, data)
    first = _steps(opt, model, data, 3)
    assert all(torch.isfinite(torch.tensor(first))), first
    for p in model.parameters():
        assert p.device.type == device
    for t in _state_tensors(opt.state_dict()):
        # floating state lives with the parameters; generator states (uint8) may stay on CPU
        if t.is_floating_point() and t.dim() > 0:
            assert t.device.type == device, (name, t.shape, t.device)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    state = copy.deepcopy(opt.state_dict())   # torch's holds the live buffers
    later = _steps(opt, model, data, 4)
    after = [p.detach().clone() for p in model.parameters()]

    fresh, _ = _setup(device)
    fresh.load_state_dict(saved)
    opt2 = _build(name, fresh, data)
    opt2.load_state_dict(state)
    again = _steps(opt2, fresh, data, 4)
    if device == "cpu":
        assert again == later
        for a, b in zip(after, fresh.parameters()):
            assert torch.equal(a, b.detach())
    else:   # CUDA reductions may reorder: equal to float64 rounding
        assert again == pytest.approx(later, rel=1e-10)
        for a, b in zip(after, fresh.parameters()):
            torch.testing.assert_close(a, b.detach(), rtol=1e-10, atol=1e-12)
