"""RandomLRSGD against Musso 2020, eqs. (1)-(2), written out by hand in float64."""
import copy
import math
import io

import pytest
import torch
from scipy import stats

from sgdlab.optim import build_optimizer, build_schedule
from sgdlab.optim.random_lr import RandomLRSGD
from sgdlab.testing import assert_uniform_moments, tiny_classification, tiny_mlp

D = torch.float64
LOSS = torch.nn.CrossEntropyLoss()


def _problem(seed=0, n=12, d=3):
    """Least squares f_i(x) = ½ (a_i·x − b_i)²; mini-batches Γ_k are fixed index sets."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, d, generator=g, dtype=D), torch.randn(n, generator=g, dtype=D)
    batches = [torch.randperm(n, generator=g)[:4] for _ in range(9)]
    return a, b, batches


def _grad(x, a, b, idx):
    """∇f_Γ(x) = (1/C) Σ_{j∈Γ} a_j (a_j·x − b_j), eq. (23)."""
    aj = a[idx]
    return aj.T @ (aj @ x - b[idx]) / len(idx)


def _alphas(seed, n, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return [high * float(torch.rand((), generator=g, dtype=D)) for _ in range(n)]


def _run(opt_kw, a, b, batches, x0):
    x = torch.nn.Parameter(x0.clone())
    opt = RandomLRSGD([x], **opt_kw)
    xs, alphas = [], []
    for idx in batches:
        x.grad = _grad(x.detach(), a, b, idx)
        opt.step()
        xs.append(x.detach().clone())
        alphas.append(opt.last_alpha)
    return xs, alphas


@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_paper_rule_is_eqs_1_2(mu):
    a, b, batches = _problem()
    x0 = torch.tensor([0.3, -0.2, 0.5], dtype=D)
    l = 0.07
    xs, alphas = _run(dict(lr=l, momentum=mu, seed=11), a, b, batches, x0)
    assert alphas == _alphas(11, len(batches))          # α_k ~ U[0, 1], one per step
    x, v = x0.clone(), torch.zeros(3, dtype=D)
    for k, idx in enumerate(batches):
        v = mu * v - alphas[k] * _grad(x, a, b, idx)      # eq. (1)
        x = x + l * v                                     # eq. (2)
        torch.testing.assert_close(xs[k], x, rtol=0, atol=1e-14)


def test_nesterov_weight_decay_and_mean_lr_convention_by_hand():
    a, b, batches = _problem(seed=1)
    x0 = torch.tensor([1.0, 0.0, -1.0], dtype=D)
    l, mu, w = 0.05, 0.8, 0.01
    xs, alphas = _run(dict(lr=l, momentum=mu, nesterov=True, weight_decay=w,
                           convention="mean-lr", seed=5), a, b, batches, x0)
    assert alphas == _alphas(5, len(batches), high=2.0)   # α ~ U[0, 2]: mean step l
    x, buf = x0.clone(), torch.zeros(3, dtype=D)
    for k, idx in enumerate(batches):
        g = alphas[k] * (_grad(x, a, b, idx) + w * x)     # α scales the whole loss gradient
        buf = mu * buf + g
        x = x - l * (g + mu * buf)                        # torch's Nesterov form
        torch.testing.assert_close(xs[k], x, rtol=0, atol=1e-14)


def test_nesterov_in_the_papers_velocity_with_one_alpha_for_every_parameter():
    # eqs. (1)-(2) in the paper's v (v = -b of torch's buffer), Nesterov read as torch's form:
    # v_{k+1} = μ v_k − α_k g_k, x_{k+1} = x_k + l (μ v_{k+1} − α_k g_k), α_k ~ U[0, 1] (the
    # "paper" convention), one α_k per step for both tensors of two groups with their own l
    a, b, batches = _problem(seed=2, d=4)
    x0 = torch.tensor([0.4, -0.1, 0.2, 0.7], dtype=D)
    mu, ls = 0.9, (0.03, 0.06)
    xa, xb = torch.nn.Parameter(x0[:2].clone()), torch.nn.Parameter(x0[2:].clone())
    opt = RandomLRSGD([{"params": [xa], "lr": ls[0]}, {"params": [xb], "lr": ls[1]}],
                      lr=ls[0], momentum=mu, nesterov=True, seed=7)
    x, v = x0.clone(), torch.zeros(4, dtype=D)
    lvec = torch.tensor([ls[0]] * 2 + [ls[1]] * 2, dtype=D)
    for alpha, idx in zip(_alphas(7, len(batches)), batches):
        g = _grad(torch.cat([xa.detach(), xb.detach()]), a, b, idx)
        xa.grad, xb.grad = g[:2].clone(), g[2:].clone()
        opt.step()
        assert opt.last_alpha == alpha
        v = mu * v - alpha * _grad(x, a, b, idx)                  # eq. (1)
        x = x + lvec * (mu * v - alpha * _grad(x, a, b, idx))     # eq. (2), Nesterov's step
        torch.testing.assert_close(torch.cat([xa.detach(), xb.detach()]), x, rtol=0,
                                   atol=1e-14)


def test_step_variant_is_a_random_lr_in_torch_sgd_and_differs_from_the_paper():
    model0 = tiny_mlp(3, 4, 2, seed=0)
    x, y = tiny_classification(n=16, seed=1)
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)

    def trajectory(make, steps=6):
        model = copy.deepcopy(model0)
        opt, sched = make(model)
        for _ in range(steps):
            opt.zero_grad()
            LOSS(model(x), y).backward()
            opt.step()
            if sched is not None:
                sched.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    def schedule(model):
        opt = torch.optim.SGD(model.parameters(), **kw)
        return opt, build_schedule("random", opt, steps_per_epoch=4, total_steps=6, width=1.0,
                                   seed=3)

    def ours(multiply):
        return lambda m: (RandomLRSGD(m.parameters(), **kw, convention="mean-lr",
                                      multiply=multiply, seed=3), None)

    torch.testing.assert_close(trajectory(ours("step")), trajectory(schedule))
    assert not torch.allclose(trajectory(ours("gradient")), trajectory(schedule), atol=1e-6)

    # without momentum the two rules coincide
    kw.update(momentum=0.0, nesterov=False)
    torch.testing.assert_close(trajectory(ours("gradient")), trajectory(ours("step")))


@pytest.mark.parametrize("convention,high", [("paper", 1.0), ("mean-lr", 2.0)])
def test_alpha_is_uniform(convention, high):
    p = torch.nn.Parameter(torch.zeros(1, dtype=D))
    opt = RandomLRSGD([p], lr=1.0, convention=convention, seed=0)
    draws = []
    for _ in range(1000):
        p.grad = torch.zeros(1, dtype=D)
        opt.step()
        draws.append(opt.last_alpha)
    assert min(draws) >= 0 and max(draws) <= high
    assert stats.kstest([d / high for d in draws], "uniform").pvalue > 1e-3


def _steps_taken(convention: str, l: float, n: int, seed: int) -> list[float]:
    """The factors α_k of n steps, read off the weights: μ = 0 and ∇f = 1, so
    x_k − x_{k+1} = l α_k."""
    p = torch.nn.Parameter(torch.zeros(1, dtype=D))
    opt = RandomLRSGD([p], lr=l, convention=convention, seed=seed)
    taken = []
    for _ in range(n):
        before = float(p.detach())
        p.grad = torch.ones(1, dtype=D)
        opt.step()
        taken.append((before - float(p.detach())) / l)
    return taken


@pytest.mark.parametrize("convention,high", [("paper", 1.0), ("mean-lr", 2.0)])
def test_steps_taken_have_eq_25s_mean_and_eq_1s_bounds(convention, high):
    """The factors the steps actually took, read off the weights (μ = 0, ∇f = 1, so
    x_k − x_{k+1} = l α_k): within [0, high] and of mean ⟨α⟩ = ∫₀¹ α dα = 1/2 (eq. (25), l. 288)
    under eq. (1)'s U[0, 1] ("paper": the mean step is l/2), 1 under U[0, 2] ("mean-lr")."""
    n = 4000
    taken = _steps_taken(convention, 0.3, n, seed=1)
    assert min(taken) >= 0 and max(taken) <= high * (1 + 1e-12)
    se = high / math.sqrt(12 * n)                     # std of U[0, high] over √n
    assert abs(sum(taken) / n - high / 2) < 4 * se


@pytest.mark.parametrize("convention,high", [("paper", 1.0), ("mean-lr", 2.0)])
def test_steps_taken_have_the_variance_of_a_uniform_on_eq_1s_interval(convention, high):
    """Var α = high²/12 for α ~ U[0, high] (U[0, 1] in eq. (1)), read off the weights as the
    steps l α_k (μ = 0, ∇f = 1) at a fixed seed; tolerance 4 standard errors of the sample
    variance, √((μ₄ − σ⁴)/n) with μ₄ = high⁴/80 the uniform's fourth central moment."""
    taken = torch.tensor(_steps_taken(convention, 0.25, 4000, seed=7), dtype=D)
    assert_uniform_moments(taken, high)


def test_state_dict_round_trip_resumes_the_same_trajectory():
    model0 = tiny_mlp(3, 4, 2, seed=0)
    x, y = tiny_classification(n=16, seed=1)

    def make(model, seed=4):
        return RandomLRSGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                           seed=seed)

    def run(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            LOSS(model(x), y).backward()
            opt.step(lambda: LOSS(model(x), y))     # a closure is accepted and evaluated

    straight = copy.deepcopy(model0)
    run(straight, make(straight), 8)
    first = copy.deepcopy(model0)
    opt = make(first)
    run(first, opt, 4)
    buf = io.BytesIO()
    torch.save({"m": first.state_dict(), "o": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    fresh = tiny_mlp(3, 4, 2, seed=9)
    fresh.load_state_dict(saved["m"])
    opt2 = make(fresh, seed=123)                  # the generator state comes from the file
    opt2.load_state_dict(saved["o"])
    assert opt2.steps == 4 and opt2.last_alpha == opt.last_alpha
    run(fresh, opt2, 4)
    for p, q in zip(straight.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="random_lr"):
        opt2.load_state_dict(torch.optim.SGD(fresh.parameters(), lr=0.1).state_dict())


def test_seed_follows_the_run_seed_and_registry_name():
    def alphas(seed):
        torch.manual_seed(seed)
        p = torch.nn.Parameter(torch.zeros(1))
        opt = build_optimizer("random-lr-sgd", [p], lr=0.1)
        out = []
        for _ in range(3):
            p.grad = torch.ones(1)
            opt.step()
            out.append(opt.last_alpha)
        return out

    assert alphas(1) == alphas(1) != alphas(2)


@pytest.mark.parametrize("kw,match", [
    (dict(lr=-1.0), "learning rate"),
    (dict(lr=0.1, momentum=1.0), "momentum"),
    (dict(lr=0.1, nesterov=True), "Nesterov"),
    (dict(lr=0.1, weight_decay=-1.0), "weight_decay"),
    (dict(lr=0.1, convention="max"), "convention"),
    (dict(lr=0.1, multiply="velocity"), "multiply"),
])
def test_invalid_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        RandomLRSGD([torch.nn.Parameter(torch.zeros(1))], **kw)


def _two_groups(seed=5):
    """Two parameter groups of different conventions: U[0, 1] and U[0, 2]."""
    x = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=D))
    y = torch.nn.Parameter(torch.tensor([0.5], dtype=D))
    opt = RandomLRSGD([{"params": [x]}, {"params": [y], "convention": "mean-lr"}], lr=0.1,
                      momentum=0.5, seed=seed)
    return x, y, opt


def _step(x, y, opt, k):
    x.grad = torch.tensor([1.0, -2.0], dtype=D) * (k + 1)
    y.grad = torch.tensor([3.0], dtype=D)
    opt.step()


def test_each_parameter_group_reports_the_alpha_it_stepped_with():
    # one draw u per step (eq. (1)'s scalar α); the mean-lr group's α is 2u. last_alpha gave
    # the first group's u for both
    x, y, opt = _two_groups()
    assert opt.last_alphas is None and opt.last_alpha is None
    x0, y0 = x.detach().clone(), y.detach().clone()
    _step(x, y, opt, 0)
    u = _alphas(5, 1)[0]
    assert opt.last_alphas == [u, 2 * u]
    # first step, buffer = α g: x − l α g, written out in float64
    torch.testing.assert_close(x.detach(), x0 - 0.1 * u * x.grad, rtol=0, atol=1e-15)
    torch.testing.assert_close(y.detach(), y0 - 0.1 * 2 * u * y.grad, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="last_alphas"):
        opt.last_alpha
    opt.param_groups[1]["convention"] = "paper"     # one convention: one α, as with one group
    _step(x, y, opt, 1)
    assert opt.last_alphas == [_alphas(5, 2)[1]] * 2 and opt.last_alpha == _alphas(5, 2)[1]


def test_state_dict_round_trip_of_several_groups_is_bit_exact():
    x, y, opt = _two_groups()
    for k in range(3):
        _step(x, y, opt, k)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    x2, y2, opt2 = _two_groups(seed=99)
    with torch.no_grad():
        x2.copy_(x)
        y2.copy_(y)
    opt2.load_state_dict(saved)
    assert opt2.last_alphas == opt.last_alphas and opt2.steps == 3
    for k in range(3, 6):
        _step(x, y, opt, k)
        _step(x2, y2, opt2, k)
        assert opt2.last_alphas == opt.last_alphas
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # a state saved with the first group's α only gives each group its own α back, exactly
    old = opt.state_dict()
    del old["random_lr"]["last_alphas"]
    _, _, opt3 = _two_groups()
    opt3.load_state_dict(old)
    assert opt3.last_alphas == opt.last_alphas


def test_boundary_arguments_are_accepted_as_torch_sgd_accepts_them():
    """lr = 0 (a frozen run: l = 0 in eq. (2) leaves x unchanged) and μ = 0 are valid, as in
    ``torch.optim.SGD``; only lr < 0 and μ ∉ [0, 1) are refused (test above)."""
    p = torch.nn.Parameter(torch.ones(2, dtype=D))
    opt = RandomLRSGD([p], lr=0.0, momentum=0.0, seed=0)
    p.grad = torch.ones(2, dtype=D)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(2, dtype=D)) and 0 <= opt.last_alpha <= 1


def test_a_state_with_only_a_mean_lr_first_groups_alpha_restores_each_groups_alpha():
    """A state saved before ``last_alphas`` holds the first group's α only; with that group on
    U[0, 2] ("mean-lr") the draw is u = α/2, so a "paper" group's α is α/2 (eq. (1)'s U[0, 1])."""
    def make():
        a, b = torch.nn.Parameter(torch.zeros(1, dtype=D)), torch.nn.Parameter(
            torch.zeros(1, dtype=D))
        return [a, b], RandomLRSGD([{"params": [a], "convention": "mean-lr"},
                                    {"params": [b], "convention": "paper"}], lr=0.1, seed=4)

    params, opt = make()
    for p in params:
        p.grad = torch.ones(1, dtype=D)
    opt.step()
    u = _alphas(4, 1)[0]
    assert opt.last_alphas == [2 * u, u]
    old = opt.state_dict()
    del old["random_lr"]["last_alphas"]
    assert old["random_lr"]["last_alpha"] == 2 * u
    _, opt2 = make()
    opt2.load_state_dict(old)
    assert opt2.last_alphas == [2 * u, u]


def test_settings_hold_the_seed_as_given():
    p = torch.nn.Parameter(torch.zeros(1))
    assert RandomLRSGD([p], lr=0.1, seed=5).settings() == {"seed": 5}
    assert RandomLRSGD([p], lr=0.1).settings() == {"seed": None}


def test_momentum_survives_a_gradient_written_in_place():
    """``zero_grad(set_to_none=False)`` and ``backward`` write each gradient into the same
    ``.grad`` tensor; the heavy-ball buffer starts as a copy of the first one (torch.optim.SGD's
    b₁ = g₁), so the in-place writes do not reach it: buf ← μ buf + g, x ← x − l α_k buf by
    hand (``multiply="step"``: the gradient stepped as it is)."""
    a, b, batches = _problem(seed=2)
    x0 = torch.tensor([0.2, 0.4, -0.3], dtype=D)
    l, mu = 0.05, 0.9
    x = torch.nn.Parameter(x0.clone())
    x.grad = torch.zeros(3, dtype=D)
    opt = RandomLRSGD([x], lr=l, momentum=mu, multiply="step", seed=3)
    want, buf = x0.clone(), None
    for idx in batches:
        x.grad.copy_(_grad(x.detach(), a, b, idx))
        opt.step()
        g = _grad(want, a, b, idx)
        buf = g.clone() if buf is None else mu * buf + g
        want = want - l * opt.last_alpha * buf
        torch.testing.assert_close(x.detach(), want, rtol=0, atol=1e-14)


def test_a_parameter_without_a_gradient_is_left_alone_and_still_one_draw_per_step():
    """A frozen parameter (``grad is None``) is skipped, as torch.optim.SGD skips it: it keeps
    its value and takes no momentum buffer, while the other steps by eqs. (1)-(2) with the
    step's α (first step, buffer = α g: x − l α g, in float64)."""
    x = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=D))
    frozen = torch.nn.Parameter(torch.tensor([1.0], dtype=D))
    opt = RandomLRSGD([x, frozen], lr=0.1, momentum=0.9, weight_decay=0.01, seed=2)
    x0 = x.detach().clone()
    x.grad = torch.tensor([1.0, -2.0], dtype=D)
    opt.step()
    u = _alphas(2, 1)[0]
    want = x0 - 0.1 * u * (torch.tensor([1.0, -2.0], dtype=D) + 0.01 * x0)
    torch.testing.assert_close(x.detach(), want, rtol=0, atol=1e-15)
    assert torch.equal(frozen.detach(), torch.tensor([1.0], dtype=D))
    assert "momentum_buffer" not in opt.state[frozen] and opt.last_alpha == u


def _uniform_mean(fn, high, n=200_000):
    """E fn(α) for α ~ U[0, high] by the midpoint rule in float64 (error O(n⁻²))."""
    alpha = (torch.arange(n, dtype=D) + 0.5) * (high / n)
    return float(fn(alpha).mean())


@pytest.mark.parametrize("convention, high", [("paper", 1.0), ("mean-lr", 2.0)])
def test_alpha_moments_are_the_uniform_laws_mean_and_mean_square(convention, high):
    """⟨α⟩ = high/2 (eq. (25): ½ under eq. (1)) and ⟨α²⟩ = high²/3 (eq. (24)'s 1/(3C))."""
    from sgdlab.optim.random_lr import alpha_moments

    mean, mean_square = alpha_moments(convention)
    assert mean == pytest.approx(_uniform_mean(lambda a: a, high), rel=1e-12)
    assert mean_square == pytest.approx(_uniform_mean(lambda a: a * a, high), rel=1e-9)


@pytest.mark.parametrize("convention, high", [("paper", 1.0), ("mean-lr", 2.0)])
def test_the_noise_equivalent_step_gives_constant_sgd_the_random_runs_stationary_variance(
        convention, high):
    """x ← x − α l (k x + ε) on f = k x²/2 with gradient noise ε of variance s²: the exact
    stationary E x² = ⟨α²⟩l²s² / (1 − ⟨(1 − αlk)²⟩) (α's moments by quadrature) is constant
    SGD's η²s² / (1 − (1 − ηk)²) at η = the noise step (2l/3, 4l/3), not at the mean step
    ⟨α⟩l nor at the root-mean-square step l√⟨α²⟩."""
    from sgdlab.optim import gradient_step_size

    lr, k, s2 = 0.05, 3.0, 0.7
    group = RandomLRSGD([torch.nn.Parameter(torch.zeros(1))], lr=lr,
                        convention=convention).param_groups[0]
    random_run = (_uniform_mean(lambda a: a * a, high) * lr * lr * s2
                  / (1 - _uniform_mean(lambda a: (1 - a * lr * k) ** 2, high)))

    def constant_run(eta):
        return eta * eta * s2 / (1 - (1 - eta * k) ** 2)

    eta = gradient_step_size(group)
    assert eta == pytest.approx(2 * high * lr / 3, rel=1e-12)
    assert constant_run(eta) == pytest.approx(random_run, rel=1e-9)
    for other in (high / 2 * lr, math.sqrt(high * high / 3) * lr):
        assert constant_run(other) != pytest.approx(random_run, rel=1e-2)


def test_the_noise_equivalent_step_of_a_step_multiplied_alpha_needs_momentum_0():
    """multiply="step" is eq. (1)'s rule at μ = 0 (the same step); with μ > 0 one α scales a
    whole buffer and the step is refused, naming the choice."""
    from sgdlab.optim import gradient_step_size

    p = [torch.nn.Parameter(torch.zeros(1))]
    step = RandomLRSGD(p, lr=0.3, multiply="step").param_groups[0]
    assert gradient_step_size(step) == pytest.approx(0.2, rel=1e-12)
    buffered = RandomLRSGD(p, lr=0.3, multiply="step", momentum=0.9).param_groups[0]
    with pytest.raises(ValueError, match="multiply='step' and momentum 0.9"):
        gradient_step_size(buffered)
    nesterov = RandomLRSGD(p, lr=0.3, momentum=0.9, nesterov=True).param_groups[0]
    assert gradient_step_size(nesterov) == pytest.approx(0.2, rel=1e-12)
