"""SGLD (Welling and Teh 2011, the baseline of Chaudhari's thesis §3.3.6): one step by hand, the
noise's variance under each reading, resume from state_dict, any nn.Module."""
import copy
import io
import math

import pytest
import torch
from scipy import stats
from torch import nn

from sgdlab.optim import build_optimizer, build_optimizer_for, build_schedule
from sgdlab.optim.sgld import SGLD, sgld_noise_std
from sgdlab.testing import tiny_classification, tiny_mlp

LOSS = nn.CrossEntropyLoss()
X, Y = tiny_classification(n=16, seed=1)
X = X.double()


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def _backward(model):
    model.zero_grad()
    LOSS(model(X), Y).backward()


@pytest.mark.parametrize("energy,temperature", [("full-data", 1.0), ("full-data", 0.3),
                                                ("mean", 1e-4)])
def test_one_step_by_hand(energy, temperature):
    """θ ← θ − lr(∇f + λθ) + std ξ, std = √(2 lr T / N) or √(2 lr T), ξ from the same seed."""
    model = tiny_mlp(seed=0).double()
    lr, wd, n, seed = 0.07, 0.01, 250, 5
    opt = build_optimizer("sgld", model.parameters(), lr=lr, weight_decay=wd, num_data=n,
                          temperature=temperature, energy=energy, seed=seed)
    theta = [p.detach().clone() for p in model.parameters()]
    _backward(model)
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    std = math.sqrt(2 * lr * temperature / (n if energy == "full-data" else 1))
    assert opt.noise_std(opt.param_groups[0]) == pytest.approx(std, rel=1e-15)
    g = torch.Generator().manual_seed(seed)
    for p, t0, gr in zip(model.parameters(), theta, grads):
        xi = torch.randn(p.shape, generator=g, dtype=torch.float64)
        expected = t0 - lr * (gr + wd * t0) + std * xi
        assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("eps", [1.0, 0.3])
def test_thesis_eq_3_16_is_full_data_sgld_at_temperature_eps_squared(eps):
    """Thesis (3.16), line 924: Δx = (η/2)(∇log p(x) + (N/m) Σ_k ∇log p(ξ_k|x)) + √η ε_t,
    ε_t ~ N(0, ε²), with the Gaussian prior log p = −(Nλ/2)|x|² and log p(ξ|x) the negative
    per-sample loss, is ``energy="full-data"`` at lr = Nη/2 and temperature T = ε² (ε = 1:
    Welling and Teh's eq. 4), in float64 with the same draws."""
    model = tiny_mlp(seed=0).double()
    eta, wd, n, seed = 4e-4, 0.01, 250, 5
    m = len(Y)
    opt = SGLD(model.parameters(), lr=n * eta / 2, temperature=eps ** 2, weight_decay=wd,
               num_data=n, seed=seed)
    x0 = [p.detach().clone() for p in model.parameters()]
    model.zero_grad()
    # Σ_k ∇log p(ξ_k|x): the gradient of minus the summed per-sample losses
    (-nn.CrossEntropyLoss(reduction="sum")(model(X), Y)).backward()
    grad_loglik = [p.grad.clone() for p in model.parameters()]
    _backward(model)            # the mean loss the optimizer steps on
    opt.step()
    g = torch.Generator().manual_seed(seed)
    for p, x, gl in zip(model.parameters(), x0, grad_loglik):
        eps_t = eps * torch.randn(p.shape, generator=g, dtype=torch.float64)
        expected = x + eta / 2 * (-n * wd * x + n / m * gl) + math.sqrt(eta) * eps_t
        assert torch.allclose(p.detach(), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("energy,std", [("full-data", math.sqrt(2 * 0.05 / 40)),
                                        ("mean", math.sqrt(2 * 0.05))])
def test_noise_variance_matches_the_reading(energy, std):
    """With a zero gradient each step adds std ξ: Σ Δ² / std² ~ χ²(n); the other reading's
    std (a factor √N = √40 off) is rejected."""
    p = nn.Parameter(torch.zeros(200, dtype=torch.float64))
    opt = SGLD([p], lr=0.05, num_data=40, energy=energy, seed=11)
    steps = []
    for _ in range(50):
        before = p.detach().clone()
        p.grad = torch.zeros_like(p)
        opt.step()
        steps.append(p.detach() - before)
    d = torch.stack(steps).reshape(-1)
    k = d.numel()
    assert abs(float(d.mean())) < 4 * std / math.sqrt(k)
    ss = float((d ** 2).sum())
    cdf = stats.chi2.cdf(ss / std ** 2, k)
    assert 1e-3 < cdf < 1 - 1e-3
    other = std * math.sqrt(40) if energy == "full-data" else std / math.sqrt(40)
    assert not 1e-3 < stats.chi2.cdf(ss / other ** 2, k) < 1 - 1e-3


def test_state_dict_round_trip_resumes_bit_for_bit():
    """k steps with the polynomial-decay schedule, save, fresh objects, load, k more == 2k."""
    def make(model):
        opt = build_optimizer_for("sgld", model, loss_fn=LOSS, data=(X, Y), lr=0.1, seed=3,
                                  weight_decay=1e-3)
        return opt, build_schedule("polynomial-decay", opt, steps_per_epoch=4, total_steps=20,
                                   power=0.55)

    def run(model, opt, sched, k):
        for _ in range(k):
            _backward(model)
            opt.step()
            sched.step()

    straight = tiny_mlp(seed=0).double()
    opt, sched = make(straight)
    assert opt.num_data == 16                               # N from the training data
    run(straight, opt, sched, 10)

    first = tiny_mlp(seed=0).double()
    opt1, sched1 = make(first)
    run(first, opt1, sched1, 5)
    buf = io.BytesIO()
    torch.save({"opt": opt1.state_dict(), "sched": sched1.state_dict(),
                "model": first.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    resumed = tiny_mlp(seed=9).double()
    resumed.load_state_dict(saved["model"])
    opt2, sched2 = make(resumed)
    opt2.generator.manual_seed(123)                          # overwritten by the load
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    run(resumed, opt2, sched2, 5)
    assert torch.equal(_flat(resumed), _flat(straight))


def test_n_is_the_number_of_training_examples_in_every_form_of_data():
    # N was len(data): a DataLoader's number of batches (3 here, not 16) and a list of batches'
    # first pair (2), so the noise √(2 lr T / N) came out too large; a sgdlab Dataset failed
    from torch.utils.data import DataLoader, TensorDataset

    from sgdlab.data import Dataset

    model = tiny_mlp(seed=0).double()
    for data in [(X, Y), [(X[:10], Y[:10]), (X[10:], Y[10:])], Dataset(X, Y, X[:4], Y[:4]),
                 DataLoader(TensorDataset(X, Y), batch_size=6), TensorDataset(X, Y)]:
        opt = build_optimizer_for("sgld", model, loss_fn=LOSS, data=data, lr=0.1)
        assert opt.num_data == 16, type(data).__name__
    assert build_optimizer_for("sgld", model, loss_fn=LOSS, data=(X, Y), lr=0.1,
                               num_data=5).num_data == 5        # given, it wins


def test_trains_any_module_and_temperature_zero_is_sgd():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)) + x.sum(1, keepdim=True))

    torch.manual_seed(0)
    net = Net().double()
    ref = copy.deepcopy(net)
    opt = SGLD(net.parameters(), lr=0.1, temperature=0.0, num_data=16, weight_decay=0.01)
    sgd = torch.optim.SGD(ref.parameters(), lr=0.1, weight_decay=0.01)
    losses = []
    for _ in range(30):
        for m, o in ((net, opt), (ref, sgd)):
            o.zero_grad()
            loss = LOSS(m(X), Y)
            loss.backward()
            o.step()
        losses.append(float(loss.detach()))
    assert torch.equal(_flat(net), _flat(ref))
    assert losses[-1] < losses[0]


def test_bad_arguments_are_named():
    """Each a ValueError naming the argument; among them N = 0 would divide the variance
    2 lr T / N by zero, a negative λ is no Gaussian prior, an infinite T no temperature."""
    p = [nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError, match=r"give num_data=N, or data= \(build_optimizer_for"):
        SGLD(p, lr=0.1)                                       # full-data needs N
    with pytest.raises(ValueError, match="energy"):
        SGLD(p, lr=0.1, energy="posterior", num_data=3)
    with pytest.raises(ValueError, match="temperature"):
        SGLD(p, lr=0.1, temperature=-1.0, num_data=3)
    with pytest.raises(ValueError, match="learning rate"):
        SGLD(p, lr=-0.1, num_data=3)
    with pytest.raises(ValueError, match="num_data: 0"):
        SGLD(p, lr=0.1, num_data=0)
    with pytest.raises(ValueError, match="num_data: 0"):
        sgld_noise_std(0.1, num_data=0)
    with pytest.raises(ValueError, match="weight_decay"):
        SGLD(p, lr=0.1, num_data=3, weight_decay=-0.01)
    with pytest.raises(ValueError, match="temperature"):
        SGLD(p, lr=0.1, num_data=3, temperature=math.inf)
    assert SGLD(p, lr=0.1, energy="mean").num_data is None   # mean: no N needed
    assert sgld_noise_std(0.5, energy="mean", temperature=0.25) == pytest.approx(0.5)


def test_a_frozen_parameter_with_a_stale_gradient_takes_neither_step_nor_noise():
    """A layer frozen after its gradient was computed keeps its values: no gradient step and
    no Langevin noise on coordinates the model no longer trains."""
    model = tiny_mlp(seed=0).double()
    opt = SGLD(model.parameters(), lr=0.1, temperature=1.0, num_data=16, seed=0)
    _backward(model)
    frozen = model[0].weight
    frozen.requires_grad_(False)
    assert frozen.grad is not None and float(frozen.grad.abs().sum()) > 0
    before = frozen.detach().clone()
    opt.step()
    assert torch.equal(frozen.detach(), before)
    assert not torch.equal(model[0].bias.detach(), torch.zeros_like(model[0].bias))


def test_load_state_dict_restores_the_saved_n():
    """N is part of the saved state: an optimizer built with another N resumes with the saved
    one, so the noise std √(2 lr T / N) is the saved run's."""
    model = tiny_mlp(seed=0).double()
    saved = SGLD(model.parameters(), lr=0.1, num_data=16, seed=0).state_dict()
    other = SGLD(model.parameters(), lr=0.1, num_data=250, seed=0)
    other.load_state_dict(saved)
    assert other.num_data == 16
    assert other.noise_std(other.param_groups[0]) == pytest.approx(math.sqrt(2 * 0.1 / 16))


def test_settings_name_the_reading_n_and_the_given_seed():
    """The noise's provenance: a given seed is recorded, an unseeded run records None (its
    generator then follows torch.initial_seed())."""
    p = [nn.Parameter(torch.zeros(3))]
    assert SGLD(p, lr=0.1, num_data=16, seed=7).settings() == {
        "energy": "full-data", "num_data": 16, "seed": 7}
    assert SGLD(p, lr=0.1, energy="mean").settings()["seed"] is None


def test_a_state_saved_under_the_other_reading_is_refused():
    """A state of energy="mean" loaded into a "full-data" SGLD would continue with a noise √N
    times smaller than the one saved: refused, naming both readings."""
    p = [nn.Parameter(torch.zeros(3))]
    saved = SGLD(p, lr=0.1, energy="mean", seed=0).state_dict()
    with pytest.raises(ValueError, match="energy 'mean', not 'full-data'"):
        SGLD(p, lr=0.1, num_data=16, seed=0).load_state_dict(saved)


def test_a_sparse_gradient_with_weight_decay_steps_as_its_dense_gradient():
    """nn.Embedding(sparse=True): the step θ − lr(∇f + λθ) + std ξ is the one of the dense
    gradient (torch has no sparse + dense add with the sparse tensor first)."""
    torch.manual_seed(0)
    sparse = nn.Embedding(6, 3, sparse=True).double()
    dense = nn.Embedding(6, 3).double()
    dense.load_state_dict(sparse.state_dict())
    opts = [SGLD(m.parameters(), lr=0.1, num_data=16, weight_decay=0.05, seed=2)
            for m in (sparse, dense)]
    for m, o in zip((sparse, dense), opts):
        m(torch.tensor([1, 4, 4])).pow(2).sum().backward()
        o.step()
    assert sparse.weight.grad.is_sparse
    assert torch.equal(sparse.weight.detach(), dense.weight.detach())


@pytest.mark.parametrize("key, value", [("lr", -0.1), ("temperature", -1.0),
                                        ("lr", math.nan)])
def test_a_group_rate_or_temperature_below_zero_is_named_before_any_group_moves(key, value):
    # a group's own lr or T (add_param_group takes it unchecked, as torch does) met
    # √(2 lr T / N) at the step: a bare "math domain error", after the groups before it moved
    first, later = nn.Parameter(torch.ones(2, dtype=torch.float64)), \
        nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = SGLD([first], lr=0.1, num_data=4)
    opt.add_param_group({"params": [later], key: value})
    first.grad, later.grad = torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match=f"{key} must be a finite number >= 0 .*parameter group"):
        opt.step()
    assert torch.equal(first.detach(), torch.ones(2, dtype=torch.float64))
