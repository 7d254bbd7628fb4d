"""Elastic-SGD / Parle update rules, the §5.3.2 normalisation and the Parle optimizer."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sgdlab.data.base import Dataset
from sgdlab.optim import OPTIMIZERS, build_optimizer
from sgdlab.optim.elastic import Parle, elastic_sgd_update, master_average, parle_coefficients
from sgdlab.optim.entropy_sgd import EntropySGD

torch.set_num_threads(1)


def test_elastic_sgd_update_formula():
    x, g, m = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0]), torch.tensor([0.0, 4.0])
    out = elastic_sgd_update(x, g, m, lr=0.1, rho=0.5)
    assert torch.allclose(out, x - 0.1 * (g + 2.0 * (x - m)))
    assert torch.equal(elastic_sgd_update(x, g, m, lr=0.1, rho=math.inf), x - 0.1 * g)


def test_parle_coefficients():
    assert parle_coefficients(lr=0.1, outer_lr=0.5, L=4, gamma=0.2, rho=2.0,
                              normalize=False) == (5.0, 0.5)
    c_g, c_r = parle_coefficients(lr=0.1, outer_lr=0.5, L=4, gamma=0.2, rho=2.0, normalize=True)
    assert c_g == 1.0 and c_r == pytest.approx(4 * 0.1 / (0.5 * 2.0))
    assert parle_coefficients(lr=0.1, outer_lr=1, L=4, gamma=math.inf, rho=math.inf,
                              normalize=False) == (0.0, 0.0)


def test_master_average_sums_in_order():
    a = [torch.tensor([1.0, 2.0]), torch.tensor([3.0])]
    b = [torch.tensor([3.0, 0.0]), torch.tensor([5.0])]
    m = master_average([a, b])
    assert torch.equal(m[0], torch.tensor([2.0, 1.0])) and torch.equal(m[1], torch.tensor([4.0]))
    assert a[0][0] == 1.0  # inputs untouched
    with pytest.raises(ValueError):
        master_average([])


def test_parle_outer_step_pulls_towards_master():
    """One outer step with a given master: x ← x − η′[c_γ(x − z) + c_ρ(x − x̄)]."""
    Q = torch.diag(torch.tensor([1.0, 2.0], dtype=torch.float64))
    y = nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    x0 = y.detach().clone()
    opt = Parle([y], lr=0.5, inner_lr=0.1, L=3, gamma=0.5, rho=0.25, alpha=0.0)

    def closure():
        y.grad = None
        loss = 0.5 * y @ Q @ y
        loss.backward()
        return loss
    opt.inner_loop(closure)
    z = opt.state[y]["z"].clone()
    master = torch.tensor([0.3, 0.7], dtype=torch.float64)
    opt.outer_step([master])
    c_r = 3 * 0.1 / (0.5 * 0.25)
    assert torch.allclose(y.detach(), x0 - 0.5 * ((x0 - z) + c_r * (x0 - master)), atol=1e-15)


def test_parle_without_communicator_is_entropy_sgd():
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(30, 3, generator=g), torch.randint(0, 2, (30,), generator=g)
    res = []
    for cls in (Parle, EntropySGD):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        opt = cls(model.parameters(), lr=0.8, inner_lr=0.05, L=3, gamma=0.1, noise=1e-4, seed=7)
        gen = torch.Generator().manual_seed(3)

        def closure():
            idx = torch.randint(0, 30, (8,), generator=gen)
            model.zero_grad()
            loss = nn.functional.cross_entropy(model(X[idx]), Y[idx])
            loss.backward()
            return loss
        for _ in range(4):
            opt.step(closure)
        res.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*res):
        assert torch.equal(a, b)


def test_registered_names_and_training_loop_integration():
    for name in ("entropy_sgd", "entropy_adam", "hj", "heat", "parle"):
        assert name in OPTIMIZERS and OPTIMIZERS[name].needs_closure
    from sgdlab.train.loop import train
    g = torch.Generator().manual_seed(0)
    X = torch.randn(32, 3, generator=g)
    y = (X[:, 0] > 0).long()
    data = Dataset(X, y, X[:8], y[:8], {"name": "t", "task": "classification",
                                         "input_shape": (3,), "num_outputs": 2})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    opt = build_optimizer("entropy_sgd", model.parameters(), inner_lr=0.1, L=5, gamma=1.0)
    res = train(model, nn.CrossEntropyLoss(), data, opt, epochs=2, batch_size=8,
                progress=False)
    # one outer step = L = 5 gradient evaluations: the loop's ×L accounting
    assert res.grad_evals == 5 * res.steps
    assert res.last("effective_epochs") == pytest.approx(res.grad_evals * 8 / 32)
