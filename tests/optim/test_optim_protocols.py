"""Learning-rate protocols (sgdlab.optim.protocols): formulas of Musso, Smith and Xing et al. at
given steps/epochs, the random protocol's mean, and exact resume from state_dict."""
import copy
import io
import math

import pytest
import torch
from scipy import stats

from sgdlab.optim import build_schedule, protocols
from sgdlab.optim.protocols import ConstantLR, CosineCyclicLR, RandomLR, counts_epochs, lr_trace
from sgdlab.testing import assert_uniform_moments, tiny_classification, tiny_mlp

LOSS = torch.nn.CrossEntropyLoss()


def _opt(lr=0.1, **kw):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, **kw)


def test_random_protocol_mean_equals_constant():
    n = 4000
    for width in (1.0, 0.5):
        lrs = torch.tensor(lr_trace("random", n, lr=0.2, width=width, seed=3),
                           dtype=torch.float64)
        const = torch.tensor(lr_trace("constant", n, lr=0.2), dtype=torch.float64)
        assert torch.all(const == 0.2)
        sd = 0.2 * width / math.sqrt(3)              # std of U[η(1−w), η(1+w)]
        assert abs(float(lrs.mean()) - float(const.mean())) < 4 * sd / math.sqrt(n)
        assert float(lrs.min()) >= 0.2 * (1 - width) and float(lrs.max()) <= 0.2 * (1 + width)
        # uniform on the interval (Musso: U[0, 2η] for w = 1)
        u = (lrs - 0.2 * (1 - width)) / (0.4 * width)
        assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
        # i.i.d.: no lag-1 correlation
        assert abs(float(torch.corrcoef(torch.stack([lrs[:-1], lrs[1:]]))[0, 1])) < 0.05


def test_random_protocol_default_width_has_the_mean_and_variance_of_u_0_2eta():
    """The default width 1 (by name and of the class): η_t ~ U[0, 2η] (the mean-lr reading of
    Musso's random protocol), mean η and variance (2η)²/12, within 4 standard errors (sample
    variance: √((μ₄ − σ⁴)/n), μ₄ = (2η)⁴/80)."""
    eta, n = 0.2, 4000
    h = 2 * eta
    for make in (lambda o: build_schedule("random", o, steps_per_epoch=1, total_steps=n,
                                          seed=11),
                 lambda o: RandomLR(o, seed=11)):
        sched = make(_opt(eta))
        lrs = []
        for _ in range(n):
            lrs.append(sched.get_last_lr()[0])
            sched.step()
        lrs = torch.tensor(lrs, dtype=torch.float64)
        assert_uniform_moments(lrs, h)
        assert float(lrs.min()) >= 0 and float(lrs.max()) <= h


def test_random_protocol_width_zero_is_constant():
    assert lr_trace("random", 5, lr=0.3, width=0.0) == [0.3] * 5


def test_cosine_cyclic_formula():
    # Musso: l_τ = l [1 + cos(π τ / P)], τ completed epochs
    spe, P, lr = 5, 6, 0.1
    trace = lr_trace("cosine-cyclic", 13 * spe, lr=lr, steps_per_epoch=spe, period=P)
    for tau, expected in [(0, 2 * lr), (3, lr), (6, 0.0), (9, lr), (12, 2 * lr), (2, 1.5 * lr)]:
        for j in range(spe):                      # constant within an epoch
            assert trace[tau * spe + j] == pytest.approx(expected, abs=1e-15)
    # mean over a full period 2P equals l
    assert sum(trace[: 2 * P * spe]) / (2 * P * spe) == pytest.approx(lr)
    # P read as the full period: l [1 + cos(2π τ / P)]
    full = lr_trace("cosine-cyclic", 7 * spe, lr=lr, steps_per_epoch=spe, period=P,
                    convention="full-period")
    for tau, expected in [(0, 2 * lr), (3, 0.0), (6, 2 * lr), (2, 0.5 * lr)]:
        assert full[tau * spe] == pytest.approx(expected, abs=1e-15)


def test_cosine_cyclic_class_defaults_to_eq_20_at_given_steps():
    """eq. (20), l_τ = l [1 + cos(π τ / P)], by hand at P = 18 (Fig. 1), 3 steps an epoch, from
    the class with its default convention as from the registry's."""
    lr, spe, P = 0.05, 3, 18
    want = {0: 2 * lr, 2: 2 * lr, 27: lr, 28: lr, 40: lr * (1 + math.cos(13 * math.pi / 18)),
            54: 0.0, 108: 2 * lr}
    for make in (lambda o: CosineCyclicLR(o, period=P, steps_per_epoch=spe),
                 lambda o: build_schedule("cosine-cyclic", o, steps_per_epoch=spe,
                                          total_steps=200, period=P)):
        sched = make(_opt(lr))
        for t, v in want.items():
            assert sched.lr_at(t) == pytest.approx(v, rel=1e-12, abs=1e-17)


def test_paper_periods_average_l_over_180_epochs():
    # P ∈ {6, 18, 30} (Musso §3, eq. (20)): cycles of 12, 36 and 60 epochs all fit in 180
    for P in (6, 18, 30):
        trace = lr_trace("cosine-cyclic", 180, lr=1.0, steps_per_epoch=1, period=P)
        assert sum(trace) / 180 == pytest.approx(1.0, abs=1e-12)


def test_triangular_clr_formula():
    # Smith 2017: base 0.1, max 0.5, step_size 4
    trace = lr_trace("triangular", 17, lr=0.1, max_lr=0.5, step_size=4)
    expected = {0: 0.1, 1: 0.2, 2: 0.3, 4: 0.5, 6: 0.3, 8: 0.1, 10: 0.3, 12: 0.5, 16: 0.1}
    for t, v in expected.items():
        assert trace[t] == pytest.approx(v), t
    t2 = lr_trace("triangular", 9, lr=0.1, max_factor=5, step_size_epochs=2, steps_per_epoch=2)
    assert t2[4] == pytest.approx(0.5) and t2[8] == pytest.approx(0.1)


def test_triangular_per_epoch_holds_each_epoch_at_its_first_step():
    # 4 steps an epoch, half-cycle 2 epochs: per step 0.1 -> 0.5 in 8 steps; per epoch the
    # rate of step 4 tau for all of epoch tau (0.1, 0.3, 0.5, 0.3, 0.1)
    step = lr_trace("triangular", 20, lr=0.1, max_factor=5, step_size_epochs=2,
                    steps_per_epoch=4)
    epoch = lr_trace("triangular", 20, lr=0.1, max_factor=5, step_size_epochs=2,
                     steps_per_epoch=4, per="epoch")
    assert step[1] == pytest.approx(0.15) and step[7] == pytest.approx(0.45)
    assert epoch == pytest.approx([v for v in (0.1, 0.3, 0.5, 0.3, 0.1) for _ in range(4)])
    assert epoch[::4] == pytest.approx(step[::4])
    with pytest.raises(ValueError, match="per='batch'"):
        lr_trace("triangular", 4, lr=0.1, max_factor=5, step_size=2, per="batch")
    assert counts_epochs("triangular", {"step_size": 8, "per": "epoch"})
    assert not counts_epochs("triangular", {"step_size": 8})


def test_step_and_trapezoid_formulas():
    tr = lr_trace("step", 40, lr=1.0, steps_per_epoch=4, milestones=[2, 5], gamma=0.1)
    assert tr[7] == 1.0 and tr[8] == pytest.approx(0.1) and tr[19] == pytest.approx(0.1)
    assert tr[20] == pytest.approx(0.01)
    tr = lr_trace("step", 12, lr=1.0, steps_per_epoch=2, every=2, gamma=0.5)
    assert tr[3] == 1.0 and tr[4] == 0.5 and tr[8] == 0.25
    # fractional periods: step 7 of 10-step epochs is epoch 0.7, the end of the 7th period of
    # 0.1 epochs (though 0.7 / 0.1 = 6.999... in floating point)
    tr = lr_trace("step", 12, lr=1.0, steps_per_epoch=10, every=0.1, gamma=0.5)
    assert tr[6] == 0.5 ** 6 and tr[7] == 0.5 ** 7
    # Zaremba et al.'s large LSTM: held 14 epochs, then / 1.15 at each epoch's start
    tr = lr_trace("step", 40, lr=1.0, steps_per_epoch=2, every=1, start=14, gamma=1 / 1.15)
    assert tr[:28] == [1.0] * 28
    assert tr[28:] == [pytest.approx(1.15 ** -(1 + i // 2)) for i in range(12)]
    # the thesis' PTB Entropy-SGD: η' / 10 at each epoch after the third
    tr = lr_trace("step", 10, lr=1.0, steps_per_epoch=2, every=1, start=3, gamma=0.1)
    assert tr == pytest.approx([1, 1, 1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    # start defaults to every
    assert lr_trace("step", 12, lr=1.0, steps_per_epoch=2, every=2, start=2, gamma=0.5) == \
        lr_trace("step", 12, lr=1.0, steps_per_epoch=2, every=2, gamma=0.5)
    for bad, msg in ((dict(milestones=[1], start=2), "start \\(epochs\\) goes with every"),
                     (dict(every=1, start=-1), "Invalid start=-1")):
        with pytest.raises(ValueError, match=msg):
            lr_trace("step", 4, lr=1.0, steps_per_epoch=2, **bad)
    # Xing: warm-up 2 epochs from 0.1η, hold 3, anneal 2 to 0.01η (steps_per_epoch = 10)
    tr = lr_trace("trapezoid", 90, lr=1.0, steps_per_epoch=10, warmup=2, hold=3, anneal=2,
                  start_factor=0.1, end_factor=0.01)
    assert tr[0] == pytest.approx(0.1) and tr[10] == pytest.approx(0.55)
    assert tr[20] == 1.0 and tr[49] == 1.0
    assert tr[60] == pytest.approx(1 - 0.99 * 0.5) and tr[70] == pytest.approx(0.01)
    assert tr[89] == pytest.approx(0.01)
    # anneal defaults to the rest of training
    tr = lr_trace("trapezoid", 100, lr=1.0, steps_per_epoch=10, warmup=1, hold=1,
                  end_factor=0.0)
    assert tr[20] == 1.0 and tr[60] == pytest.approx(0.5)


SCHEDULES = [
    ("random", dict(width=1.0, seed=4)),
    ("cosine-cyclic", dict(period=2)),
    ("step", dict(milestones=[1, 2], gamma=0.5)),
    ("triangular", dict(max_factor=4, step_size=3)),
    ("trapezoid", dict(warmup=0.5, hold=1, anneal=1)),
    ("constant", dict()),
    ("polynomial-decay", dict(power=0.55, per="epoch")),
]


def test_polynomial_decay_is_eta_over_one_plus_t_to_the_b():
    """Thesis §3.3.6's η/(1+t)^b, t in steps (default) or completed epochs."""
    eta, b = 0.3, 0.55
    tr = lr_trace("polynomial-decay", 12, lr=eta, power=b)
    assert tr == pytest.approx([eta / (1 + t) ** b for t in range(12)], rel=1e-12)
    ep = lr_trace("polynomial-decay", 12, lr=eta, power=b, per="epoch", steps_per_epoch=4)
    assert ep == pytest.approx([eta / (1 + t // 4) ** b for t in range(12)], rel=1e-12)
    assert lr_trace("polynomial-decay", 3, lr=eta, power=0.0) == [eta] * 3
    assert counts_epochs("polynomial-decay", {"power": b, "per": "epoch"})
    assert not counts_epochs("polynomial-decay", {"power": b})
    for bad in (dict(power=-1.0), dict(power=b, per="batch")):
        with pytest.raises(ValueError, match="power|per"):
            lr_trace("polynomial-decay", 2, lr=eta, **bad)


@pytest.mark.parametrize("name,kw", SCHEDULES, ids=[n for n, _ in SCHEDULES])
def test_schedule_state_dict_round_trip_resumes_identical_trajectory(name, kw):
    """SGD + Nesterov momentum driven by the schedule: k steps, save, fresh objects, load,
    k more == 2k straight (bit for bit)."""
    model0 = tiny_mlp(3, 4, 2, seed=0)
    x, y = tiny_classification(n=16, seed=1)
    spe, k = 3, 5

    def make(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        return opt, build_schedule(name, opt, steps_per_epoch=spe, total_steps=2 * k, **kw)

    def run(model, opt, sched, steps, lrs):
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.zero_grad()
            LOSS(model(x), y).backward()
            opt.step()
            sched.step()

    straight = copy.deepcopy(model0)
    lr_a: list[float] = []
    run(straight, *make(straight), 2 * k, lr_a)

    first = copy.deepcopy(model0)
    lr_b: list[float] = []
    opt, sched = make(first)
    run(first, opt, sched, k, lr_b)
    buf = io.BytesIO()
    torch.save({"m": first.state_dict(), "o": opt.state_dict(), "s": sched.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    fresh = tiny_mlp(3, 4, 2, seed=7)
    fresh.load_state_dict(saved["m"])
    opt2, sched2 = make(fresh)
    opt2.load_state_dict(saved["o"])
    sched2.load_state_dict(saved["s"])
    run(fresh, opt2, sched2, k, lr_b)
    assert lr_a == lr_b
    if name != "constant":
        assert len(set(lr_a)) > 1
    for p, q in zip(straight.parameters(), fresh.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name,kw,match", [
    ("random", dict(width=1.5), "width"),
    ("random", dict(width=-0.1), "width"),
    ("cosine-cyclic", dict(period=0), "period"),
    ("cosine-cyclic", dict(period=6, convention="half"), "convention"),
    ("step", dict(milestones=[3, 1]), "milestones"),
    ("step", dict(every=2, gamma=-1), "gamma"),
    ("step", dict(), "milestones"),
    ("triangular", dict(max_lr=0.01, step_size=3), "max_lr"),
    ("triangular", dict(max_factor=2, step_size=0), "step_size"),
    ("triangular", dict(max_factor=2), "step_size"),
    ("trapezoid", dict(warmup=-1, hold=1, anneal=1), "warmup"),
    ("trapezoid", dict(warmup=1, hold=1, anneal=1, end_factor=2), "end_factor"),
])
def test_invalid_hyper_parameters(name, kw, match):
    with pytest.raises(ValueError, match=match):
        build_schedule(name, _opt(), steps_per_epoch=2, total_steps=10, **kw)


def test_schedules_follow_group_initial_lr_and_multiple_groups():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1.0}])
    s = build_schedule("cosine-cyclic", opt, steps_per_epoch=1, total_steps=10, period=2)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 2.0]
    s.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 1.0])
    assert s.get_last_lr() == pytest.approx([0.1, 1.0])


def test_random_protocol_default_seed_follows_the_run_seed():
    def draws(seed):
        torch.manual_seed(seed)
        return lr_trace("random", 5, lr=0.1)

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)


def test_a_loaded_schedule_scales_the_saved_initial_lr():
    # the base rate travels with the schedule's state: loaded over an optimizer built with
    # another lr, the step-decay schedule resumes at 0.1·0.5^2 (0.5·0.5^2 from the new one)
    src = build_schedule("step", _opt(0.1), steps_per_epoch=1, total_steps=4,
                         milestones=[1, 2], gamma=0.5)
    src.step()
    src.step()
    opt = _opt(0.5)
    dst = build_schedule("step", opt, steps_per_epoch=1, total_steps=4, milestones=[1, 2],
                         gamma=0.5)
    dst.load_state_dict(src.state_dict())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025, rel=1e-15)
    assert dst.get_last_lr() == src.get_last_lr()


def test_fewer_than_one_step_per_epoch_is_refused():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        CosineCyclicLR(_opt(), period=6, steps_per_epoch=0)


def test_trapezoid_lengths_round_to_the_nearest_step_and_may_be_zero():
    """Lengths in epochs become ``round(epochs · steps_per_epoch)`` steps: 0.29 epochs of 100
    steps is 29 steps (0.29 · 100 is 28.999... in floating point). A zero warm-up starts at η,
    a zero anneal drops to end_factor·η right after the hold."""
    tr = lr_trace("trapezoid", 31, lr=1.0, steps_per_epoch=100, warmup=0.29, hold=1,
                  anneal=1, start_factor=0.1)
    assert tr[28] == pytest.approx(0.1 + 0.9 * 28 / 29, rel=1e-12)
    assert tr[29] == 1.0 and tr[30] == 1.0
    tr = lr_trace("trapezoid", 5, lr=2.0, steps_per_epoch=2, warmup=0, hold=1, anneal=0,
                  start_factor=0.1, end_factor=0.01)
    assert tr == pytest.approx([2.0, 2.0, 0.02, 0.02, 0.02], rel=1e-15)


def test_step_decay_of_jastrzebski_et_al_resnet_and_vgg_schedules():
    """Jastrzebski et al., footnote 7: η / 10 at epochs 60, 100, 140, 180 (ResNet56) and η / 2
    every 25 epochs (VGG11), by hand at the epochs around each drop (2 steps an epoch)."""
    eta, spe = 0.1, 2
    resnet = build_schedule("step", _opt(eta), steps_per_epoch=spe, total_steps=400,
                            milestones=[60, 100, 140, 180], gamma=0.1)
    for epoch, drops in [(0, 0), (59.5, 0), (60, 1), (99.5, 1), (100, 2), (140, 3),
                         (179.5, 3), (180, 4), (199.5, 4)]:
        assert resnet.lr_at(int(epoch * spe)) == pytest.approx(eta * 10.0 ** -drops,
                                                               rel=1e-12), epoch
    vgg = build_schedule("step", _opt(eta), steps_per_epoch=spe, total_steps=400, every=25,
                         gamma=0.5)
    for epoch in (0, 24.5, 25, 49.5, 50, 199.5):
        assert vgg.lr_at(int(epoch * spe)) == pytest.approx(eta * 0.5 ** (epoch // 25),
                                                            rel=1e-12), epoch


def test_triangular_max_factor_one_is_the_constant_rate():
    assert lr_trace("triangular", 6, lr=0.3, max_factor=1, step_size=2) == [0.3] * 6


@pytest.mark.parametrize("kw,match", [
    (dict(milestones=[1], gamma=0.0), "gamma"),          # η · 0^k: no rate after the drop
    (dict(milestones=[-1, 2]), "milestones"),
    (dict(every=0), "every"),                            # was a ZeroDivisionError at step 0
    (dict(every=1, start=math.inf), "start"),
])
def test_step_schedule_refuses_settings_of_no_schedule(kw, match):
    with pytest.raises(ValueError, match=match):
        build_schedule("step", _opt(), steps_per_epoch=2, total_steps=10, **kw)


def test_counts_epochs_for_every_schedule_that_reads_epochs():
    assert counts_epochs("trapezoid", {"warmup": 1, "hold": 1})
    assert counts_epochs("triangular", {"max_factor": 2, "step_size_epochs": 1})
    assert not counts_epochs("random", {}) and not counts_epochs("constant", {})


def test_registered_schedules_default_as_their_classes():
    """build_schedule(name, ...) without an option is the class without it: the registry's
    factories repeat each default (gamma, per, convention, width, start/end factors)."""
    import inspect

    from sgdlab.optim import SCHEDULES     # the registry; the module's SCHEDULES is a list

    classes = {c.name: c for c in (protocols.ConstantLR, protocols.RandomLR,
                                   protocols.CosineCyclicLR, protocols.StepLR,
                                   protocols.TriangularLR, protocols.TrapezoidLR,
                                   protocols.PolynomialDecayLR)}
    for name, cls in classes.items():
        made = inspect.signature(cls.__init__).parameters
        for key, p in inspect.signature(SCHEDULES[name]).parameters.items():
            if key in made and key not in ("optimizer", "steps_per_epoch", "total_steps"):
                assert p.default == made[key].default, (name, key)


def test_another_schedules_state_is_refused_naming_both():
    src = build_schedule("step", _opt(), steps_per_epoch=1, total_steps=4, milestones=[1])
    dst = build_schedule("cosine-cyclic", _opt(), steps_per_epoch=1, total_steps=4, period=2)
    with pytest.raises(ValueError, match="state_dict is for schedule 'step', not "
                                         "'cosine-cyclic'"):
        dst.load_state_dict(src.state_dict())


def test_constant_schedule_resumes_from_torch_lambda_lr_state():
    # a checkpoint whose constant schedule was torch's LambdaLR(lambda t: 1) resumes at its step
    old = torch.optim.lr_scheduler.LambdaLR(_opt(0.1), lambda t: 1.0)
    for _ in range(3):
        old.optimizer.step()
        old.step()
    opt = _opt(0.1)
    new = ConstantLR(opt)
    new.load_state_dict(old.state_dict())
    assert new.t == 3 and opt.param_groups[0]["lr"] == 0.1
