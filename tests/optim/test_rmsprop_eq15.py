"""RMSProp of Zhu et al. 2019, eqs. (14)–(15) as printed: against a float64 hand computation,
its state's round-trip, and as the first optimizer of ``switch``."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from sgdlab.optim import RMSPropEq15, SwitchOptimizer, build_optimizer


def _quadratic_grad(theta: list[float], a: list[float], c: list[float]) -> list[float]:
    """∇ of ½ Σ a_i (θ_i − c_i)²."""
    return [ai * (ti - ci) for ti, ai, ci in zip(theta, a, c)]


def _by_hand(theta0, a, c, *, lr, rho, delta, steps):
    """Eqs. (14)–(15) in plain Python floats: θ −= η g / √(r_t + δ), then r update."""
    theta, r = list(theta0), [0.0] * len(theta0)
    out = []
    for _ in range(steps):
        g = _quadratic_grad(theta, a, c)
        theta = [t - lr * gi / math.sqrt(ri + delta) for t, gi, ri in zip(theta, g, r)]
        r = [rho * ri + (1 - rho) * gi * gi for ri, gi in zip(r, g)]
        out.append(list(theta))
    return out, r


A, C, THETA0 = [2.0, 0.5, 1.0], [1.0, -1.0, 0.0], [0.3, 0.2, -0.4]
A64, C64 = torch.tensor(A, dtype=torch.float64), torch.tensor(C, dtype=torch.float64)


def _theta0() -> torch.Tensor:
    return torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)


def _run(opt, p, steps):
    """``steps`` steps of ``opt`` on ½ Σ a_i (p_i − c_i)²: p after each, as lists."""
    out = []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (A64 * (p - C64) ** 2).sum()).backward()
        opt.step()
        out.append(p.detach().tolist())
    return out


def test_steps_match_eqs_14_15_by_hand_in_float64():
    lr, rho, delta = 0.01, 0.9, 1e-3
    p = _theta0()
    opt = build_optimizer("rmsprop-eq15", [p], lr=lr, rho=rho, delta=delta)
    got = _run(opt, p, 4)
    want, r = _by_hand(THETA0, A, C, lr=lr, rho=rho, delta=delta, steps=4)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(opt.state[p]["square_avg"], torch.tensor(r, dtype=torch.float64),
                               rtol=1e-14, atol=1e-16)
    assert opt.state[p]["step"] == 4


def test_the_first_step_is_lr_g_over_root_delta_and_differs_from_torch_rmsprop():
    # r_0 = 0 and r_t (not r_{t+1}) in the denominator: θ_1 = θ_0 − η g / √δ = θ_0 − 10⁴ η g
    g0 = torch.tensor(_quadratic_grad(THETA0, A, C), dtype=torch.float64)
    p = _theta0()
    _run(RMSPropEq15([p], lr=1e-3), p, 1)               # ρ = 0.99, δ = 1e-8 by default
    want = torch.tensor(THETA0, dtype=torch.float64) - 1e-3 * 1e4 * g0
    torch.testing.assert_close(p.detach(), want, rtol=1e-14, atol=1e-15)
    q = _theta0()
    _run(torch.optim.RMSprop([q], lr=1e-3), q, 1)        # ≈ θ_0 − 10 η sign(g)
    torch.testing.assert_close(q.detach(), torch.tensor(THETA0, dtype=torch.float64)
                               - 1e-3 * g0 / (0.1 * g0.abs() + 1e-8), rtol=1e-12, atol=1e-15)
    assert (p.detach() - q.detach()).abs().min() > 1e-3


def test_state_dict_round_trip_continues_the_trajectory():
    p = _theta0()
    opt = RMSPropEq15([p], lr=0.01, rho=0.9, delta=1e-3)
    _run(opt, p, 2)
    # a copy: state_dict holds the live tensors, as torch's does
    saved, at = copy.deepcopy(opt.state_dict()), p.detach().clone()
    straight = _run(opt, p, 2)
    q = at.clone().requires_grad_(True)
    fresh = RMSPropEq15([q], lr=0.5, rho=0.5, delta=1.0)      # groups come from the state
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["rho"] == 0.9 and fresh.param_groups[0]["delta"] == 1e-3
    assert _run(fresh, q, 2) == straight


def test_torch_rmsprops_state_is_refused():
    # its square_avg is r_{t+1} under another update: not eq. (15)'s r
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"no 'rmsprop_eq15' entry \(not saved by RMSPropEq15"):
        RMSPropEq15([p]).load_state_dict(torch.optim.RMSprop([p]).state_dict())


@pytest.mark.parametrize("kw, word", [(dict(lr=-1.0), "learning rate"),
                                      (dict(rho=1.0), "rho"), (dict(delta=0.0), "delta")])
def test_invalid_hyper_parameters_are_named(kw, word):
    with pytest.raises(ValueError, match=f"Invalid {word}"):
        RMSPropEq15([torch.zeros(1, requires_grad=True)], **kw)


def test_as_switchs_first_optimizer_then_sgd():
    lr, rho, delta, k = 0.01, 0.9, 1e-3, 3

    def switch(p):
        return build_optimizer("switch", [p], first="rmsprop-eq15", second="sgd",
                               switch_step=k, first_hyper=dict(lr=lr, rho=rho, delta=delta),
                               second_hyper=dict(lr=0.1))

    p = _theta0()
    opt = switch(p)
    assert isinstance(opt, SwitchOptimizer) and isinstance(opt.first, RMSPropEq15)
    got = _run(opt, p, k + 2)
    want, _ = _by_hand(THETA0, A, C, lr=lr, rho=rho, delta=delta, steps=k)
    theta = want[-1]
    for _ in range(2):
        theta = [t - 0.1 * g for t, g in zip(theta, _quadratic_grad(theta, A, C))]
        want.append(theta)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-14, atol=1e-15)
    # and its state round-trips through the switch's
    saved = copy.deepcopy(opt.state_dict())
    q = p.detach().clone().requires_grad_(True)
    again = switch(q)
    again.load_state_dict(saved)
    torch.testing.assert_close(again.first.state[q]["square_avg"],
                               opt.first.state[p]["square_avg"], rtol=0, atol=0)
    assert _run(again, q, 1) == _run(opt, p, 1)


@pytest.mark.parametrize("key, value", [("delta", -1.0), ("delta", 0.0), ("rho", 1.0)])
def test_a_groups_own_rho_or_delta_is_checked_as_the_constructors(key, value):
    # torch's add_param_group takes a group's values unchecked: δ <= 0 with r_0 = 0 divided by
    # √δ and stepped the group's parameters to NaN without a word
    first, later = (torch.nn.Parameter(torch.ones(2, dtype=torch.float64)) for _ in range(2))
    opt = RMSPropEq15([first], lr=0.1, delta=1e-4)
    with pytest.raises(ValueError, match=f"Invalid {key} value \\(of a parameter group\\)"):
        opt.add_param_group({"params": [later], key: value})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match=f"Invalid {key} value \\(of a parameter group\\)"):
        RMSPropEq15([{"params": [later], key: value}], lr=0.1, delta=1e-4)
