"""Scoping schedules for γ and ρ (thesis eq. 5.10): values, clipping, specs, loop protocol."""
from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from sgdlab.optim import build_schedule
from sgdlab.optim.elastic import Parle
from sgdlab.optim.entropy_sgd import EntropySGD
from sgdlab.optim.smoothing import HEAT
from sgdlab.optim.scoping import (
    ConstantScope,
    ExponentialScope,
    LinearScope,
    ScopingSchedule,
    StepScope,
    build_scope,
)


def test_exponential_scope_and_clipping():
    s = ExponentialScope(1.0, 0.1, lower=0.5)
    assert [s(t) for t in range(3)] == pytest.approx([1.0, 0.9, 0.81])
    assert s(100) == 0.5
    assert ExponentialScope(2.0, 0.5, period=3)(5) == 1.0
    grow = ExponentialScope(1.0, -1.0, upper=5.0)        # negative rate: γ grows
    assert [grow(t) for t in range(4)] == [1.0, 2.0, 4.0, 5.0]
    assert ExponentialScope(math.inf, 0.5)(3) == math.inf


def test_other_scopes():
    assert [LinearScope(1.0, 0.5, 2)(t) for t in range(4)] == [1.0, 0.75, 0.5, 0.5]
    assert [StepScope(1.0, [1, 3], 0.1)(t) for t in range(4)] == pytest.approx(
        [1.0, 0.1, 0.1, 0.01])
    assert ConstantScope(0.3)(10) == 0.3


@pytest.mark.parametrize("spec", [0.25, {"kind": "exponential", "initial": 1.0, "rate": 0.2,
                                         "lower": 0.1},
                                  {"kind": "linear", "initial": 1.0, "final": 0.1, "steps": 5},
                                  {"kind": "step", "initial": 1.0, "milestones": [2],
                                   "factor": 0.5}])
def test_spec_roundtrip(spec):
    s = build_scope(spec)
    assert build_scope(s.state_dict()) == s
    assert [build_scope(s.state_dict())(t) for t in range(6)] == [s(t) for t in range(6)]


@pytest.mark.parametrize("spec", [{"kind": "nope"}, "x", {"kind": "exponential", "initial": 1},
                                  {"kind": "exponential", "initial": 1, "rate": 1.0},
                                  {"kind": "constant", "value": 1, "lower": 2, "upper": 1}, -1.0])
def test_bad_specs(spec):
    with pytest.raises(ValueError):
        build_scope(spec)


def test_scoping_schedule_protocol():
    opt = EntropySGD([nn.Parameter(torch.zeros(2))], gamma=1.0)
    sch = build_schedule("scoping", opt, steps_per_epoch=1, total_steps=10, key="gamma",
                         kind="exponential", initial=2.0, rate=0.5)
    assert opt.param_groups[0]["gamma"] == 2.0
    sch.step()
    sch.step()
    assert opt.param_groups[0]["gamma"] == 0.5
    state = sch.state_dict()
    opt2 = EntropySGD([nn.Parameter(torch.zeros(2))], gamma=1.0)
    sch2 = ScopingSchedule(opt2, "gamma", 1.0)
    sch2.load_state_dict(state)
    assert opt2.param_groups[0]["gamma"] == 0.5 and sch2.get_value() == 0.5
    with pytest.raises(ValueError, match="no hyper-parameter"):
        ScopingSchedule(opt, "rho", 1.0)
    # γ decayed by the optimizer too would be scoped twice (53.1 instead of 72.9 after 3 steps)
    twice = EntropySGD([nn.Parameter(torch.zeros(2))], gamma=1.0, gamma_decay=0.1)
    with pytest.raises(ValueError, match="gamma is scoped twice.*gamma_decay=0.1"):
        build_schedule("scoping", twice, steps_per_epoch=1, total_steps=10, key="gamma",
                       kind="exponential", initial=100.0, rate=0.1)


def test_a_scoping_schedule_without_kind_or_value_says_to_give_one():
    # it said "Unknown scope kind None; known: ..."
    opt = EntropySGD([torch.zeros(2, requires_grad=True)], lr=1.0, L=2, gamma=1.0)
    with pytest.raises(ValueError, match=r"has no kind: give kind= \(one of constant, "
                                         r"exponential, linear, step\) or value="):
        build_schedule("scoping", opt, steps_per_epoch=4, total_steps=8)
    sched = build_schedule("scoping", opt, steps_per_epoch=4, total_steps=8, value=0.5)
    sched.step()
    assert opt.param_groups[0]["gamma"] == 0.5


def test_thesis_exponential_schedules_by_hand():
    """Parle, eq. (5.10): γ_k = γ₀ (1 − 1/(2B))^⌊k/L⌋ with γ₀ = 100, L = 25, clipped at 1
    (§5.3.2); here B = 4 batches, so the factor is 7/8 and the clip is reached at
    ⌊k/L⌋ = 35 (100 · (7/8)^34 = 1.067, (7/8)^35 · 100 = 0.934). Entropy-SGD §3.3: γ divided
    by 1 + 10⁻³ after each update, γ₁ = 1 − 1/1.001."""
    parle = build_scope({"kind": "exponential", "initial": 100.0, "rate": 1 / 8, "period": 25,
                         "lower": 1.0})
    for k, n in [(0, 0), (24, 0), (25, 1), (49, 1), (50, 2), (874, 34)]:
        assert parle(k) == pytest.approx(100.0 * (7 / 8) ** n, rel=1e-12), k
    assert parle(875) == 1.0 and parle(10_000) == 1.0
    entropy = ExponentialScope(0.03, 1 - 1 / 1.001)
    for t in (0, 1, 1000, 5000):
        assert entropy(t) == pytest.approx(0.03 / 1.001 ** t, rel=1e-10)


def test_clipping_edges_and_an_infinite_scale_far_into_training():
    # lower == upper clips every value to it; inf stays inf where (1 − rate)^t underflows
    # to 0 (inf · 0 would be NaN)
    assert [ExponentialScope(1.0, 0.5, lower=0.3, upper=0.3)(t) for t in range(3)] == [0.3] * 3
    assert ExponentialScope(math.inf, 0.5)(5000) == math.inf


@pytest.mark.parametrize("make, match", [
    (lambda: ExponentialScope(1.0, 0.5, lower=-1.0), "lower clip"),
    (lambda: ExponentialScope(1.0, 0.5, lower=math.nan), "lower clip: nan"),
    (lambda: ExponentialScope(1.0, 0.5, upper=math.nan), "upper clip: nan"),
    (lambda: ExponentialScope(1.0, 0.5, period=0), "period"),
    (lambda: ConstantScope(1.0)(-1), "scoping step"),
    (lambda: StepScope(1.0, [1], 0.0), "factor"),
    (lambda: StepScope(1.0, [3, 1], 0.5), "milestones"),
    (lambda: LinearScope(1.0, math.inf, 3), "finite"),
    (lambda: build_scope(True), "expected a number"),
])
def test_a_scope_of_no_schedule_is_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make, message", [
    (lambda p: EntropySGD(p, gamma_min=math.nan), "Invalid gamma_min: nan (must be >= 0)"),
    (lambda p: EntropySGD(p, gamma_max=math.nan),
     "Invalid gamma_max: nan (must be a number, inf allowed)"),
    (lambda p: EntropySGD(p, gamma_decay=1.0), "Invalid gamma_decay: 1.0 (a scoping rate, "),
    (lambda p: Parle(p, rho_min=math.nan), "Invalid rho_min: nan (must be >= 0)"),
    (lambda p: Parle(p, rho_min=2.0, rho_max=1.0),
     "Invalid clipping range: rho_min=2.0 > rho_max=1.0"),
    (lambda p: HEAT(p, gamma_min=-1.0), "Invalid gamma_min: -1.0 (must be >= 0)")])
def test_an_optimizer_s_bad_scoping_names_the_option_given(make, message):
    # "Invalid lower clip: nan" named the scope's bound, not the gamma_min the user gave
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        make([nn.Parameter(torch.zeros(1))])


@pytest.mark.parametrize("make, key", [(EntropySGD, "gamma"), (HEAT, "gamma"), (Parle, "rho")])
def test_a_groups_own_scale_below_zero_names_the_option(make, key):
    # a group's own gamma (or Parle's rho) reached the scope as "Invalid initial scale: -1.0"
    first, later = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = make([first], L=1)
    opt.add_param_group({"params": [later], key: -1.0})

    def closure():
        opt.zero_grad()
        loss = (first ** 2 + later ** 2).sum()
        loss.backward()
        return loss

    with pytest.raises(ValueError, match=f"^Invalid {key}: -1.0 \\(must be > 0, inf allowed\\)"):
        opt.step(closure)
