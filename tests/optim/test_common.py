"""The pieces several optimizers share (sgdlab.optim._common), each on a tiny case written out
by hand: the momentum rule against torch.optim.SGD's documented recursion, the seeded
generators, the whole-number check."""
import math

import pytest
import torch

from sgdlab.optim._common import (NonFiniteLoss, check_finite_loss, check_plain_optimizer,
                                  gradient_step_size, is_whole, momentum_direction,
                                  preconditioned_optimizer, seeded_generator)

GRADS = [[1.0, -2.0], [0.5, 0.25], [-3.0, 1.0], [2.0, 2.0]]


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_direction_is_torch_sgds_recursion_without_dampening(nesterov):
    """torch.optim.SGD's documented rule with dampening 0: b_1 = g_1, b_t = μ b_{t−1} + g_t;
    the direction is b_t, or g_t + μ b_t (Nesterov). Written out in float64 for μ = 0.9."""
    mu = 0.9
    group = {"momentum": mu, "nesterov": nesterov}
    state: dict = {}
    buf = None
    for g in GRADS:
        buf = list(g) if buf is None else [mu * b + gi for b, gi in zip(buf, g)]
        expected = [gi + mu * b for gi, b in zip(g, buf)] if nesterov else buf
        got = momentum_direction(state, torch.tensor(g, dtype=torch.float64), group)
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64),
                                   rtol=0, atol=1e-15)
        torch.testing.assert_close(state["momentum_buffer"],
                                   torch.tensor(buf, dtype=torch.float64), rtol=0, atol=1e-15)


def test_the_momentum_buffer_is_not_the_gradient_it_started_from():
    """b_1 = g_1 is a copy: a gradient the caller changes in place afterwards (an optimizer's
    gradient of the next step, written into the same tensor by backward) leaves b as it was."""
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    state: dict = {}
    momentum_direction(state, g, {"momentum": 0.5, "nesterov": False})
    g.mul_(10.0)
    torch.testing.assert_close(state["momentum_buffer"],
                               torch.tensor([1.0, -2.0], dtype=torch.float64), rtol=0, atol=0)


def test_no_momentum_is_the_gradient_itself_and_keeps_no_buffer():
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    state: dict = {}
    assert momentum_direction(state, g, {"momentum": 0.0, "nesterov": False}) is g
    assert state == {}


def test_a_seeded_generator_draws_the_seeds_stream_and_by_default_the_runs_seed():
    """seed=s draws as torch.Generator().manual_seed(s); seed=None as the run's seed
    (torch.initial_seed()), so runs seeded differently draw differently."""
    ref = torch.randn(5, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    got = torch.randn(5, generator=seeded_generator(17), dtype=torch.float64)
    assert torch.equal(got, ref)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)
        run = seeded_generator(None)
    ref = torch.randn(5, generator=torch.Generator().manual_seed(12345), dtype=torch.float64)
    assert torch.equal(torch.randn(5, generator=run, dtype=torch.float64), ref)


@pytest.mark.parametrize("value, whole", [(3, True), (3.0, True), (0, True), (2.5, False),
                                          (math.nan, False), (math.inf, False),
                                          (-math.inf, False), ("3", False), (None, False)])
def test_is_whole(value, whole):
    # inf raises OverflowError in int(): a count given as inf is "not whole", named by the
    # caller's ValueError, not an OverflowError from inside the check
    assert is_whole(value) is whole


def test_the_gradient_step_size_is_the_inner_one_where_there_is_one():
    assert gradient_step_size({"lr": 0.1}) == 0.1
    assert gradient_step_size({"lr": 1.0, "inner_lr": 0.05}) == 0.05


@pytest.mark.parametrize("args, message", [
    (({"lr": "0.1"},), "lr must be a finite number >= 0 (of the optimizer's parameter "
                      "group), got '0.1'"),
    (({"lr": float("nan")},), "lr must be a finite number >= 0"),
    (({"lr": -0.1},), "lr must be a finite number >= 0"),
    (({"lr": True},), "lr must be a finite number >= 0"),
    (({"lr": 1.0, "inner_lr": "0.05"},), "inner_lr must be a finite number >= 0"),
    (({"lr": 0.1, "momentum": None}, {"name": "random", "width": 0.5}),
     "momentum must be a finite number >= 0"),
    (({"lr": 0.1}, {"name": "random", "width": 2.0}),
     "the random schedule's width must be a number in [0, 1]"),
    (({"lr": 0.1}, None, "epochs"), "every must be 'step' or 'epoch'"),
    ((0.1,), "group must be an optimizer's parameter group or config"),
    (({"name": "random-lr-sgd", "lr": 0.3, "multiply": "steps"},),
     "multiply must be one of 'gradient', 'step', got 'steps'"),
])
def test_a_bad_gradient_step_size_argument_is_named(args, message):
    """A string, NaN, a bool or a negative rate was read as a step (or failed deep inside);
    a misspelt ``every`` or ``multiply`` was read as the other choice."""
    from sgdlab.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        gradient_step_size(*args)
    assert message in str(e.value)


def test_an_inner_optimizer_must_be_a_registered_plain_one_not_excluded():
    check_plain_optimizer("base", "SGD", ())                 # either spelling, any case
    with pytest.raises(ValueError, match=r"^Invalid base optimizer 'sdg'; known: adam, "):
        check_plain_optimizer("base", "sdg", ())
    with pytest.raises(ValueError, match=r"^Invalid first optimizer 'switch'; known: "):
        check_plain_optimizer("first", "switch", ("switch",))
    for needs in ("entropy_sgd", "gd"):                       # a closure, a model
        with pytest.raises(ValueError, match=f"'{needs}': must be a plain optimizer"):
            check_plain_optimizer("base", needs, ())


def test_a_non_finite_loss_stops_a_step_and_anything_else_does_not():
    for bad in (torch.tensor(math.nan), torch.tensor([1.0, math.inf]), math.inf, -math.inf):
        with pytest.raises(NonFiniteLoss):
            check_finite_loss(bad)
    for fine in (torch.tensor(2.0), 1.5, "not a number", None,
                 torch.empty((), device="meta")):      # a dry run: no values to check
        check_finite_loss(fine)


def test_the_gradient_step_size_of_random_lr_sgd_is_its_noise_step_through_the_wrappers():
    """l⟨α²⟩/⟨α⟩ (2l/3, 4l/3 under mean-lr) for random-lr-sgd's group, a state dict's, its
    config (defaults filled) and the groups that switch and trivialized share with it."""
    from sgdlab.optim import build_optimizer
    from sgdlab.optim.random_lr import RandomLRSGD

    p = [torch.nn.Parameter(torch.zeros(3))]
    for opt in (RandomLRSGD(p, lr=0.3),
                build_optimizer("switch", p, first="random-lr-sgd", switch_step=5,
                                first_hyper={"lr": 0.3}),
                build_optimizer("trivialized", p, base="random-lr-sgd", lr=0.3, p=3, seed=0)):
        assert gradient_step_size(opt.param_groups[0]) == pytest.approx(0.2, rel=1e-12)
    saved = RandomLRSGD(p, lr=0.3, convention="mean-lr").state_dict()["param_groups"][0]
    assert gradient_step_size(saved) == pytest.approx(0.4, rel=1e-12)
    for name in ("random-lr-sgd", "Random_LR_SGD"):
        assert gradient_step_size({"name": name, "lr": 0.3}) == pytest.approx(0.2, rel=1e-12)


def test_an_optimizer_whose_step_is_not_lr_times_the_gradient_has_no_gradient_step_size():
    """Adam, AdamW, RMSprop, eq. (15)'s RMSProp and Entropy-Adam with Adam in its inner loop
    divide the gradient by a running root mean square: named from a live group, a state
    dict's, a config, and refused by gradient_step_size (a ConfigError naming them); SGD's,
    Entropy-Adam's outer form (its inner SGLD steps at inner_lr) and random-lr-sgd's keep
    their step."""
    from sgdlab.errors import ConfigError
    from sgdlab.optim import build_optimizer

    p = [torch.nn.Parameter(torch.zeros(3))]
    for name in ("adam", "adamw", "rmsprop", "rmsprop-eq15"):
        opt = build_optimizer(name, p, lr=0.1)
        for group in (opt.param_groups[0], opt.state_dict()["param_groups"][0],
                      {"name": name.upper(), "lr": 0.1}):
            assert preconditioned_optimizer(group) == name
            with pytest.raises(ConfigError, match=f"^optimizer {name}: its step divides"):
                gradient_step_size(group)
    inner = build_optimizer("entropy_adam", p, adam="inner")
    assert preconditioned_optimizer(inner.param_groups[0]) == "entropy_adam"
    assert preconditioned_optimizer({"name": "entropy-adam", "adam": "inner"}) == "entropy_adam"
    outer = build_optimizer("entropy_adam", p, inner_lr=0.1)
    assert gradient_step_size(outer.param_groups[0]) == 0.1
    assert gradient_step_size({"name": "entropy_adam", "inner_lr": 0.2, "lr": 0.01}) == 0.2
    for opt in (torch.optim.SGD(p, lr=0.1, momentum=0.9),
                build_optimizer("sgld", p, lr=0.1, num_data=10),
                build_optimizer("switch", p, first="sgd", second="adam", switch_step=2,
                                first_hyper={"lr": 0.1})):
        assert preconditioned_optimizer(opt.param_groups[0]) is None
        assert gradient_step_size(opt.param_groups[0]) == 0.1


def test_the_random_schedules_state_dict_gives_the_step_the_schedule_gives():
    """A checkpoint holds the ``random`` schedule's state: given it, gradient_step_size takes
    η(1 + w²/3) as given the live schedule, refuses it with momentum alike, and another
    schedule's state leaves the current lr the step."""
    from sgdlab.errors import ConfigError
    from sgdlab.optim.protocols import CosineCyclicLR, RandomLR

    p = [torch.nn.Parameter(torch.zeros(3))]
    opt = torch.optim.SGD(p, lr=0.3)
    schedule = RandomLR(opt, width=0.5, seed=0)
    saved = opt.state_dict()["param_groups"][0]
    assert gradient_step_size(saved, schedule.state_dict()) == pytest.approx(
        gradient_step_size(opt.param_groups[0], schedule), rel=1e-15)
    assert gradient_step_size(saved, schedule.state_dict()) == pytest.approx(
        0.3 * (1 + 0.25 / 3), rel=1e-12)
    heavy = torch.optim.SGD(p, lr=0.3, momentum=0.9)
    with pytest.raises(ConfigError, match="random schedule with momentum 0.9"):
        gradient_step_size(heavy.param_groups[0], RandomLR(heavy, width=0.5).state_dict())
    cyclic = CosineCyclicLR(torch.optim.SGD(p, lr=0.3), period=3)
    assert gradient_step_size({"lr": 0.2}, cyclic.state_dict()) == 0.2
