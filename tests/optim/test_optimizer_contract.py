"""Every registered optimizer honours the ``torch.optim.Optimizer`` contract on every device
this machine has (CPU always; CUDA when present): it trains a model that is not a plain
``nn.Sequential``, keeps its parameters and state on the model's device, and a
``state_dict()`` / ``load_state_dict()`` round-trip into a fresh optimizer continues the
trajectory exactly (noise generators included). On CPU, with HYPER and the VARIANTS that take
other code paths: frozen, unused and newly frozen parameters stay put, a group at lr 0 does
not move, a group steps with its own hyper-parameters, LR schedulers (LambdaLR, StepLR) scale
the step and round-trip their state with the optimizer's, ``step(closure)`` returns the
closure's loss, ``step()`` works or asks for a closure, ``zero_grad()`` sets gradients to None,
``add_param_group`` trains the new group, and float32 models keep float32 parameters and state.
Every optimizer also trains and round-trips on a Transformer encoder, a GRU and an embedding
tied to the output projection, holding the tied matrix once and moving it by both uses'
gradient, and runs torch's four state-dict hooks as torch.optim.SGD does."""
from __future__ import annotations

import copy
import io
import math
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.optim import OPTIMIZERS, build_optimizer, build_optimizer_for
from sgdlab.optim.registry import needs_model
from sgdlab.testing import GRUClassifier, TiedEmbedding, TinyTransformer

# tiny tensors: more torch threads only contend on a shared machine (the file took 250 s on
# two busy cores with torch's default threads, 13 s with one)
pytestmark = pytest.mark.usefixtures("one_thread")

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
    "sgld": dict(lr=0.1), "rmsprop-eq15": dict(lr=0.01, delta=1e-4),
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
            assert t.dtype == torch.float64, (name, t.shape, t.dtype)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    # through a file read with weights_only=True: generator states, counters and statistics
    # are tensors and plain data (and a copy: torch's state holds the live buffers)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
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


# --- the rest of the torch.optim contract (CPU: the behaviour does not depend on the device) --

# options that take other code paths than HYPER's: "name:variant" -> (name, extra hyper)
VARIANTS = {
    "entropy_sgd:momentum": ("entropy_sgd", dict(momentum=0.9, nesterov=True, inner_momentum=0.9,
                                                noise=1e-4, weight_decay=1e-2)),
    "entropy_sgd:decay-both": ("entropy_sgd", dict(momentum=0.9, nesterov=True, weight_decay=1e-2,
                                                   weight_decay_on="both")),
    "entropy_adam:inner": ("entropy_adam", dict(adam="inner", noise=1e-4)),
    "parle:authors-code": ("parle", dict(normalization="authors-code", momentum=0.9)),
    "hj:implicit": ("hj", dict(form="implicit")),
    "gld-dynamic:minibatches": ("gld-dynamic", dict(covariance_estimate="minibatches")),
    "gld-hessian:sigma-h2-step": ("gld-hessian", dict(sigma_h2_timing="step", refresh_every=2)),
    "gld-leading:minibatch-scale": ("gld-leading", dict(covariance_estimate="minibatches",
                                                        minibatch_scale="batch")),
    "trivialized:adam": ("trivialized", dict(base="adam", lr=0.01)),
    "switch:adam": ("switch", dict(first="adam", second="sgd", first_hyper=dict(lr=0.01),
                                   second_hyper=dict(lr=0.1, momentum=0.9))),
}
CASES = sorted(HYPER) + sorted(VARIANTS)
# Parle's authors-code normalisation steps from the last inner iterate, x <- y_L - lr G (its
# module docstring): lr scales G only, so at lr 0 the parameters still move, to y_L
MOVES_AT_LR_ZERO = {"parle:authors-code"}
# SGLD's step is −lr (g + λθ) + √(2 lr T / N) ξ: a drift linear in lr plus noise in √lr
SQRT_LR_NOISE = {"sgld"}


# paths of their own for a sparse gradient only (weight decay where HEAT sums the L gradients
# and where HJ's implicit form decays its gradient)
SPARSE_VARIANTS = {
    "hj:implicit-decay": ("hj", dict(form="implicit", weight_decay=1e-2)),
    "heat:decay": ("heat", dict(weight_decay=1e-2)),
}


def _case(case: str) -> tuple[str, dict]:
    name, extra = {**VARIANTS, **SPARSE_VARIANTS}.get(case, (case, {}))
    return name, {**HYPER[name], **extra}


class PartlyFrozenNet(SkipNet):
    """``hidden.weight`` frozen (requires_grad=False) and a layer the forward pass never uses
    (trainable, but its ``.grad`` stays None)."""

    def __init__(self):
        super().__init__()
        self.hidden.weight.requires_grad_(False)
        self.unused = nn.Linear(3, 2)


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)
    return x.to(dtype), y


def _model(cls=SkipNet, dtype=torch.float64):
    torch.manual_seed(0)
    return cls().to(dtype)


def _build_on(case: str, params, model, data):
    """``case`` over explicit ``params`` (groups, frozen parameters), as a user builds it."""
    name, hyper = _case(case)
    kw = dict(model=model, loss_fn=F.cross_entropy, data=data) \
        if needs_model(OPTIMIZERS[name]) else {}
    return build_optimizer(name, params, **kw, **hyper)


def _needs_closure(opt) -> bool:
    return bool(getattr(opt, "needs_closure", False))


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("name", CASES)
def test_frozen_and_unused_parameters_stay_unchanged(name):
    model, data = _model(PartlyFrozenNet), _data()
    opt = _build_on(name, list(model.parameters()), model, data)   # frozen ones included
    before = _snapshot(model)
    _steps(opt, model, data, 2)
    after = _snapshot(model)
    for k in ("hidden.weight", "unused.weight", "unused.bias"):
        assert torch.equal(before[k], after[k]), (name, k)
        assert model.get_parameter(k).grad is None
    assert not torch.equal(before["out.weight"], after["out.weight"]), name
    for k in ("hidden.weight", "unused.weight"):   # any state they keep is inert
        for t in _state_tensors(opt.state.get(model.get_parameter(k), {})):
            if t.is_floating_point() and t.dim() > 0:
                assert torch.isfinite(t).all(), (name, k)
    # frozen mid-training: stops at once, as torch.optim.SGD skips a .grad of None (no
    # momentum or Adam moment carries it on; GLD's noise no longer covers it)
    model.inp.weight.requires_grad_(False)
    losses = _steps(opt, model, data, 2)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert torch.equal(after["inp.weight"], model.inp.weight), name
    assert not torch.equal(after["out.weight"], model.out.weight.detach()), name


def _two_groups(model, lr_out):
    body = [p for n, p in model.named_parameters() if not n.startswith("out.")]
    return [{"params": body}, {"params": list(model.out.parameters()), "lr": lr_out}]


def _n_warmup(name: str) -> int:
    """Steps to take first so that the next one is a switch's second optimizer's."""
    return _case(name)[1]["switch_step"] if name.startswith("switch") else 1


@pytest.mark.parametrize("name", CASES)
def test_a_param_group_with_lr_zero_does_not_move(name):
    model, data = _model(), _data()
    opt = _build_on(name, _two_groups(model, 0.0), model, data)
    before = _snapshot(model)
    _steps(opt, model, data, _n_warmup(name) + 1)      # switch: both optimizers
    after = _snapshot(model)
    for k in before:
        moved = not torch.equal(before[k], after[k])
        assert moved == (not k.startswith("out.") or name in MOVES_AT_LR_ZERO), (name, k)


# a second group's own hyper-parameters, each of which changes the first steps
_SGD_LIKE = dict(lr=0.05, momentum=0.5, weight_decay=0.01)
_GLD = dict(_SGD_LIKE, dampening=0.1)
GROUP_HYPER = {
    "sgd": dict(_SGD_LIKE, nesterov=True), "random-lr-sgd": dict(_SGD_LIKE, multiply="step"),
    "adam": dict(lr=0.005, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
    "rmsprop": dict(lr=0.005, alpha=0.9, momentum=0.5, weight_decay=0.01),
    "entropy_sgd": dict(_SGD_LIKE, inner_lr=0.05, gamma=50.0, alpha=0.5, inner_momentum=0.5),
    "entropy_adam": dict(lr=0.005, inner_lr=0.05, gamma=50.0, alpha=0.5, betas=(0.8, 0.99),
                         weight_decay=0.01),
    "parle": dict(_SGD_LIKE, inner_lr=0.1, gamma=50.0, alpha=0.5),   # inner_lr: default lr
    "hj": dict(_SGD_LIKE, inner_lr=0.05, gamma=0.05), "heat": dict(_SGD_LIKE, gamma=0.005),
    "switch": dict(lr=0.05, weight_decay=0.01), "trivialized": _SGD_LIKE,
    "annealed-noise": _SGD_LIKE, "sgld": dict(lr=0.05, temperature=0.5, weight_decay=0.01),
    "rmsprop-eq15": dict(lr=0.005, rho=0.9, delta=1e-3),
    **{name: _GLD for name in HYPER if name.startswith(("gld", "gd"))},
}
GROUP_HYPER["adamw"] = GROUP_HYPER["adam"]


class TwoNets(nn.Module):
    """Two independent SkipNets whose losses add up: each one's steps do not depend on the
    other's parameters (Σ aside, which GLD refreshes only once here)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = SkipNet(), SkipNet()

    def forward(self, x):
        return torch.stack([self.a(x), self.b(x)])


def _two_losses(out, y):
    return F.cross_entropy(out[0], y) + F.cross_entropy(out[1], y)


def test_every_optimizer_has_group_hyper_parameters():
    assert set(GROUP_HYPER) == set(HYPER)


@pytest.mark.parametrize("name", sorted(HYPER))
def test_a_param_group_steps_with_its_own_hyper_parameters(name):
    # the second group given GROUP_HYPER moves as the optimizer built with those values (the
    # hand computation of each group is the single-group optimizer's), the first as without
    group = GROUP_HYPER[name]
    gld = name.startswith(("gld", "gd"))       # Σ measured once: the nets stay independent
    base = dict(HYPER[name], **({"refresh_every": 100} if gld else {}))
    built = dict(base, first_hyper={**base["first_hyper"], **group},
                 second_hyper={**base["second_hyper"], **group}) if name == "switch" \
        else dict(base, **group)

    def run(hyper, groups):
        torch.manual_seed(0)
        model, (x, y) = TwoNets().double(), _data()
        a, b = list(model.a.parameters()), list(model.b.parameters())
        kw = dict(model=model, loss_fn=_two_losses, data=(x, y)) \
            if needs_model(OPTIMIZERS[name]) else {}
        params = [{"params": a}, {"params": b, **group}] if groups else a + b
        opt = build_optimizer(name, params, **kw, **hyper)
        for _ in range(_n_warmup(name) + 2):        # switch: both optimizers
            opt.step(lambda: _closure(opt, model, x, y))
        return [p.detach() for p in a], [p.detach() for p in b]

    a2, b2 = run(base, True)
    a_plain, b_plain = run(base, False)
    a_group, b_group = run(built, False)
    for p, q in zip(a2, a_plain):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-13)
    for p, q, r in zip(b2, b_group, b_plain):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-13)
    assert any(not torch.equal(q, r) for q, r in zip(b_group, b_plain))


def _closure(opt, model, x, y):
    opt.zero_grad()
    loss = _two_losses(model(x), y)
    loss.backward()
    return loss


def test_parle_authors_code_at_lr_zero_moves_to_the_last_inner_iterate():
    # x <- y_L - 0 G is Entropy-SGD's x <- z with alpha = 0 (z = y_L) and lr 1 (x <- x - (x - z))
    ends = []
    for name, hyper in (("parle", dict(lr=0.0, inner_lr=0.1, normalization="authors-code")),
                        ("entropy_sgd", dict(lr=1.0, inner_lr=0.1, alpha=0.0))):
        model, data = _model(), _data()
        opt = build_optimizer(name, model.parameters(), L=3, gamma=100.0, **hyper)
        before = _snapshot(model)
        _steps(opt, model, data, 1)
        ends.append(_snapshot(model))
    assert not torch.equal(before["out.weight"], ends[0]["out.weight"])
    for k in before:
        torch.testing.assert_close(ends[0][k], ends[1][k], rtol=1e-12, atol=1e-14)


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("name", CASES)
def test_lr_schedulers_change_the_step_taken(name):
    # a step is affine in the current lr given the state, and linear (lr 0: no move) unless
    # MOVES_AT_LR_ZERO; the inner loops of the closure optimizers use inner_lr, which
    # schedulers leave. StepLR is stepped after _n_warmup steps: for a switch that is the
    # second optimizer's first step (a chainable scheduler on the wrapper reaches it).
    n = _n_warmup(name)

    def run(scheduler, steps: int = n + 1) -> list[torch.Tensor]:
        """The displacement of each step."""
        model, data = _model(), _data()
        opt = _build_on(name, model.parameters(), model, data)
        lr0 = [g["lr"] for g in opt.param_groups]
        sched = scheduler(opt) if scheduler is not None else None
        if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):    # lr · factor when built
            assert [g["lr"] for g in opt.param_groups] == [lr * sched.lr_lambdas[0](0)
                                                            for lr in lr0]
        out = []
        for t in range(steps):
            if t == n and isinstance(sched, torch.optim.lr_scheduler.StepLR):
                sched.step()
            x0 = _flat(model)
            _steps(opt, model, data, 1)
            out.append(_flat(model) - x0)
        return out

    tol = dict(rtol=1e-9, atol=1e-13)
    full = run(None)
    half0 = run(lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 0.5), 1)[0]
    half1 = run(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5))[n]
    assert full[0].abs().max() > 0 and not torch.equal(full[n], half1), name
    if name in SQRT_LR_NOISE:
        # d(f) = f a + √f b at lr factor f: a and b from f = 1, 1/2; f = 1/4 and 0 must follow
        quarter0 = run(lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 0.25), 1)[0]
        zero0 = run(lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 0.0), 1)[0]
        quarter1 = run(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1,
                                                                 gamma=0.25))[n]
        for one, half, quarter in ((full[0], half0, quarter0), (full[n], half1, quarter1)):
            b = (half - one / 2) / (0.5 ** 0.5 - 0.5)
            a = one - b
            assert b.abs().max() > 0, name
            torch.testing.assert_close(quarter, a / 4 + b / 2, **tol, msg=f"{name} sqrt(lr)")
        assert zero0.abs().max() == 0
    elif name in MOVES_AT_LR_ZERO:
        zero0 = run(lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 0.0), 1)[0]
        assert zero0.abs().max() > 0
        torch.testing.assert_close(half0, (full[0] + zero0) / 2, **tol)
    else:
        torch.testing.assert_close(half0, full[0] / 2, **tol, msg=f"{name} LambdaLR")
        torch.testing.assert_close(half1, full[n] / 2, **tol, msg=f"{name} StepLR")


def _schedulers(opt, name: str = "") -> dict:
    """torch's other schedulers, each over 4 steps; OneCycleLR cycles the momentum (or Adam's
    β₁) of the optimizers that have one, as its default does (not switch:adam's: Adam's betas,
    which SGD after the switch lacks, switch.py's documented limit)."""
    S = torch.optim.lr_scheduler
    cycle = any(k in opt.defaults for k in ("momentum", "betas")) and name != "switch:adam"
    return {
        "cosine": lambda: S.CosineAnnealingLR(opt, T_max=4, eta_min=1e-3),
        "one-cycle": lambda: S.OneCycleLR(opt, max_lr=0.2, total_steps=5,
                                          cycle_momentum=cycle),
        "sequential": lambda: S.SequentialLR(opt, [S.LinearLR(opt, 0.25, total_iters=2),
                                                   S.ExponentialLR(opt, 0.7)], milestones=[2]),
        "plateau": lambda: S.ReduceLROnPlateau(opt, factor=0.5, patience=0),
    }


def _scheduled_run(opt, sched, step) -> list[list[dict]]:
    """4 steps of ``step()`` with ``sched`` stepped after each (ReduceLROnPlateau on a rising
    metric, so that it reduces the rate at every step); each step's group values."""
    groups = []
    for t in range(4):
        groups.append([{k: v for k, v in g.items() if k != "params"}
                       for g in opt.param_groups])
        step()
        plateau = isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
        sched.step(float(t)) if plateau else sched.step()
    return groups


@pytest.mark.parametrize("name", ["gd", "sgd"])
def test_schedulers_set_the_step_on_a_quadratic_by_hand(name):
    # f(w) = mean_i (w - y_i)^2 with mean y = 0: f'(w) = 2w, and the step is torch.optim.SGD's
    # w <- w - lr_t b_t, b_t = mu_t b_(t-1) + 2 w_t (b_0 = 2 w_0; mu = 0 for gd)
    x = torch.ones(8, 1, dtype=torch.float64)
    y = torch.linspace(-0.5, 0.5, 8, dtype=torch.float64).unsqueeze(1)
    for which in ("cosine", "one-cycle", "sequential", "plateau"):
        model = nn.Linear(1, 1, bias=False).double()
        nn.init.constant_(model.weight, 1.0)
        opt = build_optimizer_for(name, model, loss_fn=F.mse_loss, data=(x, y), **HYPER[name])
        sched = _schedulers(opt)[which]()
        ws = [1.0]

        def step():
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
            ws.append(model.weight.item())

        groups = _scheduled_run(opt, sched, step)
        lrs = [g[0]["lr"] for g in groups]
        assert len(set(lrs)) >= 3, (which, lrs)       # plateau: the first step sets its best
        if which == "cosine":
            assert lrs == pytest.approx([1e-3 + (0.1 - 1e-3) * (1 + math.cos(math.pi * t / 4)) / 2
                                         for t in range(4)], rel=1e-12)
        w, b = 1.0, None
        for t, g in enumerate(groups):
            mu = g[0].get("momentum", 0.0)
            b = 2 * w if b is None else mu * b + 2 * w
            w = w - g[0]["lr"] * b
            assert ws[t + 1] == pytest.approx(w, rel=1e-13, abs=1e-15), (which, t)


@pytest.mark.parametrize("name", CASES)
def test_schedulers_step_with_the_rates_they_write(name):
    # CosineAnnealingLR, OneCycleLR (with its momentum), SequentialLR, ReduceLROnPlateau: the
    # trajectory is the one of the same optimizer whose groups are given those values by hand
    # before each step, and it is not the unscheduled one (GLD: Σ and H measured once, the
    # lr read at every step)
    def run(sched=None, values=None):
        model, data = _model(), _data()
        opt = _build_on(name, model.parameters(), model, data)
        if name.startswith(("gld", "gd")):
            opt.hyper["refresh_every"] = 10

        def step():
            if values is not None:
                for g, v in zip(opt.param_groups, values[len(out)]):
                    g.update(v)
            _steps(opt, model, data, 1)
            out.append(_flat(model))

        out: list[torch.Tensor] = []
        if sched is None:
            for _ in range(4):
                step()
            return opt, out
        return _scheduled_run(opt, _schedulers(opt, name)[sched](), step), out

    _, plain = run()
    for which in ("cosine", "one-cycle", "sequential", "plateau"):
        values, scheduled = run(which)
        _, by_hand = run(values=values)
        for a, b in zip(scheduled, by_hand):
            assert torch.equal(a, b), (name, which)
        assert not torch.equal(scheduled[-1], plain[-1]), (name, which)


def test_switch_lambda_lr_keeps_the_first_optimizers_base_rates():
    # switch.py's documented limit: LambdaLR writes base_lr · factor from the rates it stored
    # when built (the first optimizer's), so after the switch the second runs at those
    model, data = _model(), _data()
    opt = _build_on("switch", model.parameters(), model, data)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    for _ in range(HYPER["switch"]["switch_step"]):
        _steps(opt, model, data, 1)
        sched.step()
    assert opt.switched and opt.active is opt.second
    assert opt.param_groups[0]["lr"] == HYPER["switch"]["first_hyper"]["lr"]


def test_switch_one_cycle_lr_goes_on_past_the_switch():
    # OneCycleLR reads its phase rates and momenta from the groups at every step: the second
    # optimizer's groups take them over, and the schedule writes the same rates and momenta as
    # on the first optimizer alone
    hyper = HYPER["switch"]
    rates = []
    for name, kw in (("switch", hyper), (hyper["first"], hyper["first_hyper"])):
        model, data = _model(), _data()
        opt = build_optimizer(name, model.parameters(), **kw)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=6)
        seen = []
        for _ in range(5):
            _steps(opt, model, data, 1)
            sched.step()
            seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        rates.append(seen)
    assert opt.param_groups[0]["momentum"] != 0.0      # cycled
    assert rates[0] == rates[1]


@pytest.mark.parametrize("name", CASES)
def test_scheduler_state_round_trips_with_the_optimizer(name):
    def fresh():
        model, data = _model(), _data()
        opt = _build_on(name, model.parameters(), model, data)
        return model, data, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)

    def go(opt, sched, model, data, n):
        for _ in range(n):
            _steps(opt, model, data, 1)
            sched.step()

    model, data, opt, sched = fresh()
    go(opt, sched, model, data, 2)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    state, sstate = copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict())
    go(opt, sched, model, data, 2)

    model2, _, opt2, sched2 = fresh()
    model2.load_state_dict(saved)
    opt2.load_state_dict(state)
    sched2.load_state_dict(sstate)
    go(opt2, sched2, model2, data, 2)
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("name", CASES)
def test_a_training_run_resumed_with_the_same_settings_is_accepted_and_bit_for_bit(
        name, tmp_path):
    """The training loop refuses a resume whose optimizer differs from the checkpoint's run
    (its class, its groups, the settings it keeps outside them: ``settings()``, seeds
    included): built again the same way, with its default seed, every optimizer passes that
    check, its settings load back from the checkpoint, and the resumed run ends where the
    uninterrupted one does."""
    from sgdlab.data import Dataset
    from sgdlab.train import train

    x, y = _data()
    data = Dataset(x, y, x[:4], y[:4], {"name": "t", "task": "classification",
                                        "num_outputs": 2})

    def run(**kw):
        model = _model()
        opt = _build_on(name, list(model.parameters()), model, (x, y))
        train(model, F.cross_entropy, data, opt, epochs=3, batch_size=8, progress=False,
              **kw)
        return model

    reference = run()
    run(checkpoint_dir=tmp_path, max_steps=3)
    resumed = run(checkpoint_dir=tmp_path, resume=True)
    for p, q in zip(resumed.parameters(), reference.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("name", CASES)
def test_step_closure_loss_step_without_closure_and_zero_grad(name):
    model, data = _model(), _data()
    opt = _build_on(name, model.parameters(), model, data)
    x, y = data
    losses = []

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss)
        return loss

    assert opt.step(closure) is losses[0], name
    before = _snapshot(model)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    if _needs_closure(opt):
        with pytest.raises(ValueError, match="closure"):
            opt.step()
        after = _snapshot(model)     # refused before touching the parameters
        assert all(torch.equal(before[k], after[k]) for k in before), name
    else:
        assert opt.step() is None
        after = _snapshot(model)
        assert any(not torch.equal(before[k], after[k]) for k in before), name
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.zero_grad(set_to_none=False)                   # the groups of a wrapper's inner one
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters()), name
    opt.zero_grad()                                    # set_to_none, torch's default
    assert all(p.grad is None for p in model.parameters()), name


@pytest.mark.parametrize("bad_call,bad", [(0, math.inf), (1, math.nan)])
@pytest.mark.parametrize("name", CASES)
def test_a_non_finite_closure_loss_is_returned_and_leaves_no_trace(name, bad_call, bad):
    # step(closure) returns the non-finite loss, as torch.optim.SGD does, so a loop of one's
    # own sees it. The optimizers that call the closure several times returned the first
    # call's loss, finite, while a NaN at a later call had reached the parameters, x, z, the
    # momentum and Adam moments: they now stop there, parameters and state as before the step
    model, (x, y) = _model(), _data()
    opt = _build_on(name, model.parameters(), model, (x, y))
    if bad_call and not _needs_closure(opt):
        pytest.skip("one closure call a step")
    _steps(opt, model, (x, y), 1)
    calls = []

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if len(calls) == bad_call:
            loss = loss * bad
        calls.append(loss)
        loss.backward()
        return loss

    before = _snapshot(model)
    state = copy.deepcopy(opt.state_dict())
    loss = opt.step(closure)
    assert not math.isfinite(float(loss.detach())), name
    if not _needs_closure(opt):         # one call: torch's step on that gradient, whatever it is
        return
    assert len(calls) == bad_call + 1, name        # stopped at the non-finite call
    after = _snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before), name
    for t in _state_tensors(opt.state_dict()["state"]):
        assert not t.is_floating_point() or torch.isfinite(t).all(), name
    # the persistent state is the one of before the step, bar what earlier calls moved
    later = opt.state_dict()["state"]
    for k, st in state["state"].items():
        for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
            if key in st and not (key.startswith("exp") and _case(name)[1].get("adam")):
                assert torch.equal(st[key], later[k][key]), (name, key)
    assert all(math.isfinite(v) for v in _steps(opt, model, (x, y), 2)), name


@pytest.mark.parametrize("name", sorted(HYPER))
def test_a_deep_copy_and_a_pickle_continue_the_trajectory(name):
    # torch's Optimizer.__getstate__ keeps defaults, state and param_groups only: a copy of
    # any optimizer with attributes of its own (generators, counters, the inner optimizers of
    # switch and trivialized, GLD's statistics) failed at its first step (AttributeError)
    model, data = _model(), _data()
    kw = dict(model=model, loss_fn=F.cross_entropy, data=data) \
        if needs_model(OPTIMIZERS[name]) else {}
    # GLD: statistics kept between refreshes (a copy that dropped them refreshed early)
    hyper = dict(HYPER[name], refresh_every=3) if name.startswith(("gld", "gd")) else HYPER[name]
    opt = build_optimizer(name, model.parameters(), **kw, **hyper)
    # a scheduler wraps the instance's step around a weak reference to the optimizer: a
    # copy that kept that wrapper would step the original (and it does not pickle)
    torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=1.0)
    _steps(opt, model, data, _n_warmup(name))
    copies = [copy.deepcopy((model, opt)), pickle.loads(pickle.dumps((model, opt)))]
    before = _snapshot(model)
    for m, o in copies:
        assert not o._optimizer_state_dict_pre_hooks       # no hook rides along, as in torch
        _steps(o, m, data, 2)
    assert all(torch.equal(before[k], p) for k, p in model.named_parameters()), name
    _steps(opt, model, data, 2)
    for m, _ in copies:
        for a, b in zip(model.parameters(), m.parameters()):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("name", ["entropy_sgd", "hj", "parle"])
def test_a_copy_between_the_inner_loop_and_the_outer_step_takes_the_outer_step(name):
    # the outer step skips the parameters the inner loop did not move (no gradient): kept as
    # ids, a copy's parameters were all skipped
    model, data = _model(), _data()
    opt = _build_on(name, model.parameters(), model, data)
    x, y = data
    opt.inner_loop(lambda: _closure_on(opt, model, x, y))
    m2, o2 = copy.deepcopy((model, opt))
    opt.outer_step()
    o2.outer_step()
    for a, b in zip(model.parameters(), m2.parameters()):
        assert torch.equal(a, b), name


def _closure_on(opt, model, x, y):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss


@pytest.mark.parametrize("name", sorted(HYPER))
def test_grad_scaler_steps_as_without_it_or_is_refused(name):
    # on CPU with a power-of-two scale, unscaling is exact: scaler.step(opt) is opt.step().
    # The closure optimizers call their closure for the gradients of their later inner steps,
    # which the scaler never unscales: scaler.step(opt) asked for a closure without naming the
    # scaler, and scaler.step(opt, closure) stepped on gradients 1024 times too large
    dtype = torch.float32
    model, data = _model(dtype=dtype), _data(dtype)
    opt = _build_on(name, model.parameters(), model, data)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x, y = data
    opt.zero_grad()
    scaler.scale(F.cross_entropy(model(x), y)).backward()
    if _needs_closure(opt):
        before = _snapshot(model)

        def scaled():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            return loss

        for args in ((), (scaled,)):
            with pytest.raises(ValueError, match=rf"^{type(opt).__name__} takes no "
                               r"torch.amp.GradScaler: .*torch.autocast\(dtype=torch.bfloat16"):
                scaler.step(opt, *args)
        assert all(torch.equal(before[k], p) for k, p in model.named_parameters())
        assert _steps(opt, model, data, 1)           # without the scaler it steps
        return
    scaler.step(opt)
    scaler.update()
    model2, _ = _model(dtype=dtype), None
    opt2 = _build_on(name, model2.parameters(), model2, data)
    opt2.zero_grad()
    F.cross_entropy(model2(x), y).backward()
    opt2.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("name", sorted(HYPER))
def test_a_step_inside_autocast_is_the_step_outside_it(name):
    # a loop that runs its whole step under torch.autocast(bfloat16): the closure's forward
    # is the autocast one either way, and the optimizer's own passes and products are not
    # (gld-hessian failed on mixed dtypes; the other GLD kept bfloat16 statistics, 1e-3 off)
    dtype = torch.float32

    def run(inside: bool):
        model, (x, y) = _model(dtype=dtype), _data(dtype)
        opt = _build_on(name, model.parameters(), model, (x, y))

        def closure():
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
            loss = F.cross_entropy(out.float(), y)
            loss.backward()
            return loss

        for _ in range(2):
            if inside:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    opt.step(closure)
            else:
                opt.step(closure)
        return model, opt

    outside, _ = run(False)
    inside, opt = run(True)
    for a, b in zip(outside.parameters(), inside.parameters()):
        assert torch.equal(a, b), name
    for t in _state_tensors(opt.state_dict()):
        assert not t.is_floating_point() or t.dtype in (torch.float32, torch.float64), name


@pytest.mark.parametrize("name", CASES)
def test_add_param_group_trains_the_new_group_like_the_others(name):
    model, data = _model(), _data()
    body = [p for n, p in model.named_parameters() if not n.startswith("out.")]
    opt = _build_on(name, body, model, data)
    _steps(opt, model, data, 1)
    out = list(model.out.parameters())
    before = [p.detach().clone() for p in out]
    opt.add_param_group({"params": out})
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["params"] == out
    _steps(opt, model, data, _n_warmup(name) + 1)      # switch: past the switch
    for b, p in zip(before, out):
        assert not torch.equal(b, p.detach()), name
    # the new parameters keep the same kind of per-parameter state as the old ones
    assert set(opt.state.get(out[0], {})) == set(opt.state.get(body[0], {})), name


@pytest.mark.parametrize("name", CASES)
def test_float32_parameters_and_state_stay_float32(name):
    # float64: test_state_dict_round_trip_continues_the_trajectory
    dtype = torch.float32
    model, data = _model(dtype=dtype), _data(dtype)
    opt = _build_on(name, model.parameters(), model, data)
    losses = _steps(opt, model, data, 2)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert all(p.dtype == dtype for p in model.parameters())
    sd = opt.state_dict()
    # trivialized keeps its field in float64 by design (the same draw on any dtype)
    sd = {k: v for k, v in sd.items() if k != "trivialized"}
    for t in _state_tensors(sd):
        if t.is_floating_point() and t.dim() > 0:
            assert t.dtype == dtype, (name, t.shape, t.dtype)


class MixedDtypeNet(SkipNet):
    """The output layer in float32 inside a float64 model (``.out.float()`` after
    ``.double()``): one group, two dtypes."""

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = h + torch.tanh(self.hidden(h))
        return F.linear(h, self.out.weight.double(), self.out.bias.double())


@pytest.mark.parametrize("name", CASES)
def test_float32_and_float64_parameters_in_one_group_keep_their_dtypes(name):
    # torch.optim.SGD takes a group of mixed dtypes (its foreach path groups them by dtype)
    model, data = _model(MixedDtypeNet), _data()
    model.out.float()
    opt = _build_on(name, list(model.parameters()), model, data)
    before = _snapshot(model)
    losses = _steps(opt, model, data, _n_warmup(name) + 1)
    assert all(math.isfinite(v) for v in losses), (name, losses)
    for k, p in model.named_parameters():
        assert p.dtype == (torch.float32 if k.startswith("out.") else torch.float64), (name, k)
        assert not torch.equal(before[k], p.detach()), (name, k)
        for t in _state_tensors(opt.state.get(p, {})):
            if t.is_floating_point() and t.shape == p.shape:
                assert t.dtype == p.dtype, (name, k)


@pytest.mark.parametrize("name", CASES)
def test_meta_parameters_step_as_torch_or_are_refused_naming_the_meta_device(name):
    # torch.optim.SGD steps meta parameters (shapes, no values: a dry run); the optimizers
    # that draw noise from a torch.Generator or measure statistics cannot, and said
    # "META device type not an accelerator" or "unsupported scalarType"
    model = _model().to("meta")
    x, y = (t.to("meta") for t in _data())
    opt = _build_on(name, list(model.parameters()), model, (x, y))
    try:
        for _ in range(_n_warmup(name) + 1):
            loss = opt.step(lambda: _closure_on(opt, model, x, y))
        assert loss.device.type == "meta", name
    except ValueError as e:
        assert re.match(rf"{type(opt).__name__} cannot step parameters on the meta device \(",
                        str(e)), (name, str(e))
        assert name.startswith(("gld", "gd", "heat")) or _case(name)[1].get("noise"), name
    assert all(p.device.type == "meta" for p in model.parameters()), name


@pytest.mark.parametrize("name", CASES)
def test_state_dict_round_trip_after_add_param_group(name):
    # a group added mid-training (its own lr), saved, loaded into a fresh optimizer given the
    # same groups: the same trajectory, bit for bit
    def build():
        model, data = _model(), _data()
        body = [p for n, p in model.named_parameters() if not n.startswith("out.")]
        return model, data, _build_on(name, body, model, data)

    model, data, opt = build()
    _steps(opt, model, data, 1)
    opt.add_param_group({"params": list(model.out.parameters()), "lr": 0.03})
    _steps(opt, model, data, _n_warmup(name))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    later = _steps(opt, model, data, 2)

    model2, _, opt2 = build()
    model2.load_state_dict(saved)
    opt2.add_param_group({"params": list(model2.out.parameters()), "lr": 0.03})
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert _steps(opt2, model2, data, 2) == later, name
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b), name


# a constructor argument of each optimizer that is no group key (held for the whole optimizer)
OPTIMIZER_LEVEL = {
    "entropy_sgd": ("seed", 3), "entropy_adam": ("seed", 3), "hj": ("seed", 3),
    "heat": ("seed", 3), "parle": ("communicator", None), "random-lr-sgd": ("seed", 3),
    "sgld": ("num_data", 7), "switch": ("first", "adam"), "trivialized": ("p", 0.5),
    "annealed-noise": ("tau0", 2.0), "gld-const": ("sigma", 0.5),
    **{name: ("noise_batch_size", 2) for name in HYPER
       if name.startswith(("gld-", "gd")) and name != "gld-const"},
}


@pytest.mark.parametrize("name", sorted(OPTIMIZER_LEVEL))
def test_a_group_key_that_is_a_setting_of_the_whole_optimizer_is_refused(name):
    # torch keeps any key in a group: GLD's noise, a seed, a switch's optimizers are one for
    # the whole optimizer, and a group given its own stepped with the optimizer's, silently
    key, value = OPTIMIZER_LEVEL[name]
    model, data = _model(), _data()
    body = [p for n, p in model.named_parameters() if not n.startswith("out.")]
    out = list(model.out.parameters())
    msg = rf"^{{}}'s '{key}' is a setting of the whole optimizer, not of a parameter group"
    with pytest.raises(ValueError) as e:
        _build_on(name, [{"params": body}, {"params": out, key: value}], model, data)
    assert re.match(msg.format(type(_build_on(name, body, model, data)).__name__),
                    str(e.value)), str(e.value)
    opt = _build_on(name, body, model, data)
    with pytest.raises(ValueError, match=msg.format(type(opt).__name__)):
        opt.add_param_group({"params": out, key: value})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": out})            # without it: added and trained
    before = [p.detach().clone() for p in out]
    losses = _steps(opt, model, data, _n_warmup(name) + 1)
    assert all(math.isfinite(v) for v in losses), (name, losses)
    assert not any(torch.equal(b, p.detach()) for b, p in zip(before, out)), name


COUNTS = [("switch", "switch_step"), ("gld-const", "refresh_every"),
          ("gld-const", "trace_probes"), ("gld-dynamic", "noise_batch_size"), ("gld-leading", "k"),
          ("gld-dynamic", "estimation_size")]


@pytest.mark.parametrize("name,key,value", [
    (name, key, value) for name, key in COUNTS for value in (float("inf"), float("nan"), None, 2.5)
    if not (value is None and key == "estimation_size")])     # None: all the data (valid)
def test_a_count_that_is_no_whole_number_is_a_value_error_naming_it(name, key, value):
    # as a config may give it (.inf, .nan, null): not an OverflowError or TypeError of int()
    model, data = _model(), _data()
    kw = dict(model=model, loss_fn=F.cross_entropy, data=data) \
        if needs_model(OPTIMIZERS[name]) else {}
    with pytest.raises(ValueError, match=key):
        build_optimizer(name, model.parameters(), **kw, **{**HYPER[name], key: value})


# --- the sequence models in use today, and a parameter used twice -----------------------------


class TiedByHand(TiedEmbedding):
    """The same function with the projection written as ``h @ emb.weight.T``."""

    def __init__(self):
        super().__init__()
        del self.out

    def forward(self, x):
        return torch.tanh(self.mix(self.emb(x).mean(1))) @ self.emb.weight.T


def _seq_data(name: str):
    g = torch.Generator().manual_seed(0)
    if name == "gru":
        return torch.randn(8, 4, 3, generator=g, dtype=torch.float64), torch.randint(
            0, 2, (8,), generator=g)
    return torch.randint(0, 6, (8, 4), generator=g), torch.randint(
        0, 6 if name.startswith("tied") else 2, (8,), generator=g)


SEQ_MODELS = {"transformer": lambda: TinyTransformer().eval(), "gru": GRUClassifier,
              "tied": TiedEmbedding, "tied_by_hand": TiedByHand}


def _seq_run(name: str, model_name: str, n: int = 2):
    torch.manual_seed(0)
    model, data = SEQ_MODELS[model_name]().double(), _seq_data(model_name)
    opt = _build(name, model, data)
    return model, data, opt, _steps(opt, model, data, n)


@pytest.mark.filterwarnings("ignore:.*vmap failed.*:RuntimeWarning")
@pytest.mark.parametrize("model_name", ["transformer", "gru", "tied"])
@pytest.mark.parametrize("name", sorted(HYPER))
def test_sequence_models_train_and_round_trip(name, model_name):
    model, data, opt, first = _seq_run(name, model_name)
    assert all(torch.isfinite(torch.tensor(first))), first
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    state = copy.deepcopy(opt.state_dict())
    later = _steps(opt, model, data, 1)
    torch.manual_seed(0)
    fresh = SEQ_MODELS[model_name]().double()
    fresh.load_state_dict(saved)
    opt2 = _build(name, fresh, data)
    opt2.load_state_dict(state)
    assert _steps(opt2, fresh, data, 1) == later, name
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("name", sorted(HYPER))
def test_a_tied_parameter_is_one_parameter_of_the_optimizer(name):
    # registered twice or used twice by hand, the same function and the same three parameters:
    # every optimizer holds the matrix once and takes the same steps
    tied, _, opt, losses = _seq_run(name, "tied")
    by_hand, _, opt2, losses2 = _seq_run(name, "tied_by_hand")
    held = [p for g in opt.param_groups for p in g["params"]]
    assert len(held) == len({id(p) for p in held}) == 3
    assert sum(p is tied.emb.weight for p in held) == 1
    assert len(opt.state) == len(opt2.state) <= 3
    assert all(any(p is q for q in held) for p in opt.state)
    assert losses == losses2, name
    for a, b in zip(tied.parameters(), by_hand.parameters()):
        assert torch.equal(a, b), name


def test_sgd_moves_a_tied_parameter_by_the_sum_of_both_uses():
    torch.manual_seed(0)
    model, (x, y) = TiedEmbedding().double(), _seq_data("tied")
    # the two uses as two parameters: their gradients' sum is the tied matrix's gradient
    emb, proj = (model.emb.weight.detach().clone().requires_grad_() for _ in range(2))
    h = torch.tanh(model.mix(F.embedding(x, emb).mean(1)))
    g_emb, g_proj = torch.autograd.grad(F.cross_entropy(h @ proj.T, y), (emb, proj))
    assert g_emb.abs().max() > 0 and g_proj.abs().max() > 0
    before = model.emb.weight.detach().clone()
    opt = build_optimizer_for("sgd", model, lr=0.1)
    _steps(opt, model, (x, y), 1)
    torch.testing.assert_close(model.emb.weight.detach(), before - 0.1 * (g_emb + g_proj),
                               rtol=1e-12, atol=1e-14)


class ComplexPair(nn.Module):
    """A complex parameter (``as_real=False``) or its real and imaginary parts as one real
    (4, 2) parameter, in a regression whose per-sample gradients differ (Σ is not zero)."""

    def __init__(self, as_real: bool):
        super().__init__()
        z = torch.randn(4, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
        self.z = nn.Parameter(torch.view_as_real(z).clone() if as_real else z)
        self.as_real = as_real

    def forward(self, x):
        r = (self.z if self.as_real else torch.view_as_real(self.z)).reshape(-1)
        return (x @ r + (r ** 4).sum() * 0.1).unsqueeze(1)


@pytest.mark.parametrize("name", sorted(HYPER))
def test_a_complex_parameter_steps_as_its_real_pairs_or_is_refused(name):
    # noise drawn in a complex dtype has half the variance on each real coordinate:
    # gld-const, heat, trivialized and annealed-noise moved 1e-3 to 3e-2 off the real pairs'
    # trajectory, entropy_adam's moments of complex gradients too; the GLD statistics failed
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 8, dtype=torch.float64, generator=g)
    y = torch.randn(12, 1, dtype=torch.float64, generator=g)

    def run(as_real: bool) -> torch.Tensor:
        model = ComplexPair(as_real)
        torch.manual_seed(0)
        opt = build_optimizer_for(name, model, loss_fn=F.mse_loss,
                                  data=(x, y) if needs_model(OPTIMIZERS[name]) else None,
                                  **HYPER[name])

        def closure():
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        return (model.z if as_real else torch.view_as_real(model.z)).detach()

    try:
        moved = run(as_real=False)
    except ValueError as e:
        assert re.search(r"takes real parameters: one of shape \(4,\) is torch.complex128 "
                         r"\(.*\); hold its real and imaginary parts as one real parameter "
                         r"\(torch.view_as_real\)", str(e)), str(e)
        model = ComplexPair(as_real=True)
        opt = build_optimizer_for(name, model, loss_fn=F.mse_loss,
                                  data=(x, y) if needs_model(OPTIMIZERS[name]) else None,
                                  **HYPER[name])
        groups = len(opt.param_groups)
        extra = nn.Parameter(torch.zeros(2, dtype=torch.complex128))
        with pytest.raises(ValueError, match="takes real parameters"):
            opt.add_param_group({"params": [extra]})
        assert len(opt.param_groups) == groups
        return
    torch.testing.assert_close(moved, run(as_real=True), rtol=1e-12, atol=1e-12)


class SparseBag(nn.Module):
    def __init__(self, sparse: bool):
        super().__init__()
        self.emb, self.head = nn.Embedding(10, 3, sparse=sparse), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.emb(x).mean(1))


@pytest.mark.parametrize("name", CASES + sorted(SPARSE_VARIANTS))
def test_sparse_embedding_gradients_take_the_dense_trajectory(name):
    # the GLD family and trivialized failed on nn.Embedding(sparse=True): "add(sparse, dense)
    # is not supported" at the step, "reshape is not implemented for sparse tensors" in the
    # noise statistics; so did Entropy-SGD with weight decay or momentum, Entropy-Adam's
    # inner Adam (addcmul_), GLD's minibatch covariance, HEAT and HJ's implicit form with decay
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 10, (16, 4), generator=g), torch.randint(0, 2, (16,), generator=g)

    def run(sparse: bool):
        torch.manual_seed(0)
        model = SparseBag(sparse).double()
        opt = _build_on(name, list(model.parameters()), model, data)
        losses = _steps(opt, model, data, 3)
        return model, losses

    if name in ("adam", "adamw", "rmsprop", "switch", "switch:adam"):     # torch's
        with pytest.raises(RuntimeError, match="does not support sparse gradients"):
            run(sparse=True)
        return
    dense, losses = run(sparse=False)
    sparse, sparse_losses = run(sparse=True)
    torch.testing.assert_close(sparse_losses, losses, rtol=1e-12, atol=1e-12)
    for a, b in zip(sparse.parameters(), dense.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert sparse.emb.weight.grad.is_sparse      # the model's gradient as backward left it


# torch's own optimizers take any state whose groups match, as torch does
TORCH_OWN = {"sgd", "adam", "adamw", "rmsprop"}


@pytest.mark.parametrize("name", sorted(set(HYPER) - TORCH_OWN))
def test_another_optimizers_state_is_refused_naming_the_one_that_saves_it(name):
    # Entropy-SGD, Entropy-Adam, HJ, HEAT and Parle took torch.optim.SGD's state without a
    # word: its groups replaced theirs and the next step failed on KeyError 'inner_momentum'
    model, data = _setup("cpu")
    opt = _build(name, model, data)
    keys = [sorted(g) for g in opt.param_groups]
    with pytest.raises(ValueError, match=r"state_dict has no '\w+' entry \(not saved by \w+"):
        opt.load_state_dict(torch.optim.SGD(model.parameters(), lr=0.1).state_dict())
    assert [sorted(g) for g in opt.param_groups] == keys
    assert _steps(opt, model, data, 1)                       # and it still steps


# the closure optimizers, which keep their generator's state under the same entry ("noise")
SEEDED_NOISE = ("entropy_sgd", "entropy_adam", "hj", "parle", "heat")
# a state saved before its entry named the class: told apart by its keys, the loader's it
# lacks, or a group key of the saver's own (HJ, Parle, Entropy-Adam's groups hold all of
# Entropy-SGD's and loaded into it as its own)
OWN_GROUP_KEY = {"entropy_adam": "betas", "hj": "form", "parle": "rho"}


@pytest.mark.parametrize("unnamed", [False, True])
@pytest.mark.parametrize("saver,name", [(a, b) for a in SEEDED_NOISE for b in SEEDED_NOISE
                                        if a != b])
def test_another_closure_optimizers_state_is_refused(saver, name, unnamed):
    # Entropy-SGD took HJ's, Parle's and Entropy-Adam's state and stepped with their groups;
    # the others took one another's and failed at the next step (KeyError 'form', 'adam',
    # 'rho_min') or at the load (KeyError 'steps', 'outer_steps'). The saver's own kind
    # resumes from it, bit for bit, also from a state saved before the entry named the class.
    model, data = _setup("cpu")
    source = _build(saver, model, data)
    _steps(source, model, data, 1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    state = copy.deepcopy(source.state_dict())
    if unnamed:
        state["noise"].pop("saved_by", None)    # as saved before it named the class
    later = _steps(source, model, data, 1)
    opt = _build(name, model, data)
    before = copy.deepcopy(opt.state_dict())
    what = rf"state_dict was saved by {type(source).__name__}, not "
    if unnamed:
        what = (rf"state_dict was saved by {type(source).__name__} \(its groups hold "
                rf"'{OWN_GROUP_KEY[saver]}'\), not " if saver in OWN_GROUP_KEY
                else r"state_dict has no '\w+'.* \(not saved by ")
    with pytest.raises(ValueError, match=rf"^{what}{type(opt).__name__}"):
        opt.load_state_dict(state)
    assert _same(opt.state_dict(), before), (saver, name)
    assert _steps(opt, model, data, 1)                       # and it still steps
    fresh, _ = _setup("cpu")
    fresh.load_state_dict(saved)
    twin = _build(saver, fresh, data)
    twin.load_state_dict(state)
    assert _steps(twin, fresh, data, 1) == later, saver


def test_another_closure_optimizers_state_is_not_read_as_an_older_own_state():
    # HEAT's groups lack weight_decay_on, an option Entropy-SGD gained later: its state was
    # refused as Entropy-SGD's "state saved before weight_decay_on existed"
    model, data = _setup("cpu")
    heat = _build("heat", model, data)
    _steps(heat, model, data, 1)
    opt = build_optimizer("entropy_sgd", model.parameters(), lr=0.1, L=3, weight_decay=0.01,
                          weight_decay_on="both")
    with pytest.raises(ValueError, match="^state_dict was saved by HEAT, not EntropySGD$"):
        opt.load_state_dict(heat.state_dict())


# --- torch's state-dict hooks -------------------------------------------------------------------


def _same(a, b) -> bool:
    """Equal state dicts: the same keys and structure, tensors of equal dtype and values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and torch.equal(a, b))
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
                and all(_same(a[k], b[k]) for k in a))
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    return a == b


def _lrs(sd) -> list[float]:
    """Every ``lr`` of every group in a state dict, however the optimizer nests its own."""
    if isinstance(sd, dict):
        return [v for k, v in sd.items() if k == "lr"] + [x for v in sd.values()
                                                          for x in _lrs(v)]
    if isinstance(sd, (list, tuple)):
        return [x for v in sd for x in _lrs(v)]
    return []


LR_PRE, LR_LOADED = 0.0123, 0.0456


def _hook_trace(name: str) -> list:
    """What the four state-dict hooks of optimizer ``name`` see in a ``state_dict()`` /
    ``load_state_dict()`` round trip: the pre-hook sets every group's lr, the post-hook returns
    a new dict with an extra key, the load pre-hook drops that key from its copy and returns
    another state (saved one step later, at lr LR_LOADED), the load post-hook reads the lrs."""
    model, data = _setup("cpu")
    torch.manual_seed(1)
    source = _build(name, model, data)
    _steps(source, model, data, 1)
    start = copy.deepcopy(source.state_dict())
    _steps(source, model, data, 1)
    for g in source.param_groups:
        g["lr"] = LR_LOADED
    other = copy.deepcopy(source.state_dict())
    assert not _same(start, other), name            # the load pre-hook's state is another
    torch.manual_seed(1)
    opt = _build(name, model, data)
    opt.load_state_dict(start)                      # no hooks yet: a state mid-run
    trace, seen = [], {}

    def pre(o):
        trace.append(("state_dict pre", o is opt))
        for g in o.param_groups:
            g["lr"] = LR_PRE

    def post(o, sd):
        seen["post"] = copy.deepcopy(sd)
        trace.append(("state_dict post", o is opt, isinstance(sd, dict)))
        seen["returned"] = {**sd, "hooked": True}
        return seen["returned"]

    def load_pre(o, sd):
        trace.append(("load pre", o is opt, sd is not seen["passed"],
                      _same(sd, seen["passed"])))
        del sd["hooked"]                            # in its shallow copy only
        return copy.deepcopy(other)

    def load_post(o):
        trace.append(("load post", o is opt,
                      all(g["lr"] == LR_LOADED for g in o.param_groups)))

    handles = [opt.register_state_dict_pre_hook(pre), opt.register_state_dict_post_hook(post),
               opt.register_load_state_dict_pre_hook(load_pre),
               opt.register_load_state_dict_post_hook(load_post)]
    sd = seen["passed"] = opt.state_dict()
    trace.append(("returns the post-hook's dict", sd is seen.get("returned")))
    # the post-hook saw the whole state: the returned dict less the key it added
    trace.append(("post-hook saw it all", _same(seen.get("post"), {
        k: v for k, v in sd.items() if k != "hooked"})))
    trace.append(("pre-hook's lr saved", LR_PRE in _lrs(sd)))   # (switch: 2nd's lr too)
    opt.load_state_dict(sd)
    trace.append(("caller's dict kept", "hooked" in sd))
    for h in handles:
        h.remove()
    trace.append(("loads the load pre-hook's dict", _same(opt.state_dict(), other)))
    return trace


@pytest.mark.parametrize("name", sorted(HYPER))
def test_state_dict_hooks_run_once_as_torch_runs_them(name):
    # wrappers that build their own state dict (switch, trivialized) ran none of the four
    # hooks; those adding an entry after torch's (the noise generators' states) showed the
    # post-hook a dict without it and loaded that entry from the dict given, not the
    # load pre-hook's
    reference = _hook_trace("sgd")              # torch.optim.SGD itself
    assert reference == [
        ("state_dict pre", True), ("state_dict post", True, True),
        ("returns the post-hook's dict", True), ("post-hook saw it all", True),
        ("pre-hook's lr saved", True), ("load pre", True, True, True),
        ("load post", True, True), ("caller's dict kept", True),
        ("loads the load pre-hook's dict", True)]
    assert _hook_trace(name) == reference, name
