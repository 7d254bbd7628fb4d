"""Optimizers and schedules by name: a misspelled name or argument is a ValueError naming it,
with the closest spelling and the valid ones (as configs report it), not a bare TypeError."""
import pytest
import torch

from sgdlab.optim import (OPTIMIZERS, SCHEDULES, build_optimizer, build_optimizer_for,
                          build_schedule, optimizer_name, register_optimizer,
                          register_schedule, schedule_name)
from sgdlab.optim.entropy_sgd import EntropySGD
from sgdlab.optim.gld import StructuredNoiseGD
from sgdlab.optim.protocols import counts_epochs


def _params():
    return [torch.zeros(2, requires_grad=True)]


@pytest.mark.parametrize("name, hyper, message", [
    ("sgdd", {"lr": 0.1}, "Unknown optimizer 'sgdd' (did you mean sgd?); known: adam,"),
    ("sgd", {"lr": 0.1, "momentun": 0.9},
     "optimizer 'sgd' has no option 'momentun' (did you mean momentum?); its options: lr,"),
    ("entropy_sgd", {"lr": 1.0, "gama": 1.0},
     "optimizer 'entropy_sgd' has no option 'gama' (did you mean gamma?)"),
])
def test_a_misspelled_optimizer_or_argument_is_named(name, hyper, message):
    with pytest.raises(ValueError) as e:
        build_optimizer(name, _params(), **hyper)
    assert message in str(e.value)
    assert "_extra_defaults" not in str(e.value)          # private arguments are not offered


@pytest.mark.parametrize("name, meant", [
    ("EntropySGD", "entropy_sgd"), ("EntropySDG", "entropy_sgd"),
    ("RandomLRSGD", "random-lr-sgd"), ("TrivializedSGD", "trivialized"),
])
def test_a_class_or_paper_spelling_of_an_optimizer_gets_its_registry_name(name, meant):
    # the guide names the classes (EntropySGD, RandomLRSGD) beside their registry names; their
    # spellings were told only the list of known names
    with pytest.raises(ValueError) as e:
        build_optimizer(name, _params(), lr=0.1)
    assert f"Unknown optimizer {name!r} (did you mean {meant}?)" in str(e.value)


@pytest.mark.parametrize("name, hyper, message", [
    ("cosin-cyclic", {}, "Unknown schedule 'cosin-cyclic' (did you mean cosine-cyclic?)"),
    ("step", {"milestons": [1]},
     "schedule 'step' has no option 'milestons' (did you mean milestones?); its options: "
     "milestones, every, gamma"),
    ("constant", {"lr": 1}, "schedule 'constant' has no option 'lr'; its options: (none)"),
])
def test_a_misspelled_schedule_or_argument_is_named(name, hyper, message):
    opt = torch.optim.SGD(_params(), lr=0.1)
    with pytest.raises(ValueError) as e:
        build_schedule(name, opt, steps_per_epoch=2, total_steps=4, **hyper)
    assert message in str(e.value)


def test_a_required_argument_left_out_is_named_with_the_schedule_or_optimizer():
    # it was the call's TypeError about a private factory: "_polynomial_decay() missing 1
    # required keyword-only argument: 'power'", "RandomLRSGD.__init__() missing ... 'lr'"
    opt = torch.optim.SGD(_params(), lr=0.1)
    for name, needs in (("polynomial-decay", "power="), ("trapezoid", "warmup=, hold=")):
        with pytest.raises(ValueError, match=f"schedule '{name}' requires {needs}; its options"):
            build_schedule(name, opt, steps_per_epoch=2, total_steps=4)
    with pytest.raises(ValueError, match="optimizer 'random-lr-sgd' requires lr=; its options"):
        build_optimizer("random-lr-sgd", _params())


def test_elastic_sgd_asked_for_as_an_optimizer_is_told_where_it_is():
    # "Unknown optimizer 'elastic-sgd'" and the list, none of which is it
    for name in ("elastic-sgd", "ElasticSGD", "easgd"):
        with pytest.raises(ValueError, match=r"Elastic-SGD couples replicas: run it with "
                                             r"sgdlab\.train\.train_replicas"):
            build_optimizer(name, _params(), lr=0.1)


def test_right_arguments_still_build():
    opt = build_optimizer("sgd", _params(), lr=0.1, momentum=0.9)
    assert opt.param_groups[0]["momentum"] == 0.9
    sched = build_schedule("step", opt, steps_per_epoch=2, total_steps=8, milestones=[1],
                           gamma=0.5)
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


@pytest.mark.parametrize("name, registered", [
    ("entropy-sgd", "entropy_sgd"), ("Entropy-SGD", "entropy_sgd"),
    ("entropy_adam", "entropy_adam"),
    ("entropy-adam", "entropy_adam"), ("random_lr_sgd", "random-lr-sgd"),
    ("gld_const", "gld-const"), (" GD_Isotropic ", "gd-isotropic"), ("sgd", "sgd"),
])
def test_an_optimizer_is_named_with_hyphens_or_underscores(name, registered):
    # the registry mixes entropy_sgd with random-lr-sgd and gld-*: either spelling is one name
    assert optimizer_name(name) == registered
    assert registered in OPTIMIZERS


def test_build_optimizer_takes_the_other_spelling_and_checks_its_options():
    opt = build_optimizer("entropy-sgd", _params(), lr=1.0, L=2, gamma=0.5)
    assert isinstance(opt, EntropySGD)
    assert opt.param_groups[0]["gamma"] == 0.5
    with pytest.raises(ValueError, match="optimizer 'entropy_sgd' has no option 'gama'"):
        build_optimizer("entropy-sgd", _params(), lr=1.0, gama=1.0)


def test_build_optimizer_for_passes_the_model_under_either_spelling():
    # gld-diagonal draws its noise from the model and data: build_optimizer_for looked the
    # name up exactly, and passed them only to the registered spelling
    model = torch.nn.Linear(2, 1)
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    opt = build_optimizer_for("gld_diagonal", model, loss_fn=torch.nn.MSELoss(), data=(x, y),
                              lr=0.1, noise_batch_size=4)
    assert isinstance(opt, StructuredNoiseGD) and opt.noise_kind == "diagonal"


def test_the_wrappers_inner_optimizer_takes_either_spelling():
    opt = build_optimizer("switch", _params(), first="random_lr_sgd", second="SGD",
                          switch_step=1, first_hyper={"lr": 0.1}, second_hyper={"lr": 0.1})
    assert type(opt.first).__name__ == "RandomLRSGD"
    with pytest.raises(ValueError, match="Invalid first optimizer 'Switch'"):
        build_optimizer("switch", _params(), first="Switch", second="sgd", switch_step=1)


@pytest.mark.parametrize("name, registered, hyper", [
    ("cosine_cyclic", "cosine-cyclic", {"period": 2}),
    ("Polynomial_Decay", "polynomial-decay", {"power": 0.5}),
    ("step", "step", {"every": 1}),
])
def test_a_schedule_is_named_with_hyphens_or_underscores(name, registered, hyper):
    assert schedule_name(name) == registered
    opt = torch.optim.SGD(_params(), lr=0.1)
    build_schedule(name, opt, steps_per_epoch=2, total_steps=4, **hyper)
    # the epoch-counting schedules are told apart by name: the other spelling is one of them
    assert counts_epochs(name, {}) == counts_epochs(registered, {})
    assert counts_epochs("cosine_cyclic", {})


def test_an_unknown_name_still_gets_the_closest_one():
    with pytest.raises(ValueError, match=r"Unknown optimizer 'entropy-sdg' \(did you mean "
                                         r"entropy_sgd\?\)"):
        build_optimizer("entropy-sdg", _params(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer name must be a string, got None"):
        optimizer_name(None)


def test_a_name_one_spelling_from_a_registered_one_is_refused():
    # lookups ignore the spelling: entropy-sgd beside entropy_sgd would make them ambiguous
    with pytest.raises(ValueError, match="'entropy-sgd' is another spelling of 'entropy_sgd'"):
        register_optimizer("entropy-sgd")(torch.optim.SGD)
    assert "entropy-sgd" not in OPTIMIZERS and "cosine_cyclic" not in SCHEDULES


def test_every_registered_optimizer_class_is_exported_by_sgdlab_optim():
    # as torch.optim.SGD: `from sgdlab.optim import EntropySGD` is what a reader tries first
    import sgdlab.optim
    from sgdlab.optim import EntropySGD as exported, RandomLRSGD as random_lr

    assert exported is EntropySGD and random_lr is OPTIMIZERS["random-lr-sgd"]
    builtin = {n: c for n, c in OPTIMIZERS.items()
               if c.__module__.startswith("sgdlab.optim.") and isinstance(c, type)}
    assert len(builtin) >= 18
    for name, cls in builtin.items():
        assert getattr(sgdlab.optim, cls.__name__, None) is cls, name
        assert cls.__name__ in sgdlab.optim.__all__, name


def test_a_name_taken_by_another_object_is_refused_and_the_same_one_is_kept():
    with pytest.raises(ValueError, match="optimizer name 'sgd' registered twice"):
        register_optimizer("sgd")(torch.optim.Adam)
    assert OPTIMIZERS["sgd"] is torch.optim.SGD
    assert register_optimizer("sgd")(torch.optim.SGD) is torch.optim.SGD   # (a re-import)
    with pytest.raises(ValueError, match="schedule name 'step' registered twice"):
        register_schedule("step")(lambda optimizer, **kw: None)


def test_build_optimizer_for_trains_only_the_trainable_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    model[0].weight.requires_grad_(False)
    opt = build_optimizer_for("sgd", model, lr=0.1)
    held = [p for g in opt.param_groups for p in g["params"]]
    assert len(held) == 3 and all(p is not model[0].weight for p in held)


def test_an_optimizer_taking_any_keyword_is_built_with_them_unchecked():
    """A user's optimizer with ``**kw`` names its options itself: none is refused for want of
    a list to check them against."""
    class Anything(torch.optim.SGD):
        def __init__(self, params, **kw):
            self.extra = kw.pop("extra")
            super().__init__(params, **kw)

    register_optimizer("test-anything-kw")(Anything)
    try:
        opt = build_optimizer("test-anything-kw", _params(), lr=0.5, extra=3)
    finally:
        del OPTIMIZERS["test-anything-kw"]
    assert isinstance(opt, Anything) and opt.extra == 3 and opt.param_groups[0]["lr"] == 0.5


def _entropy_trajectory(name: str, **hyper) -> list[torch.Tensor]:
    """Weights of a tiny float64 least-squares model after each of 3 steps of ``name``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = torch.randn(8, 1, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(3, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 3, generator=g, dtype=torch.float64))
        model.bias.zero_()
    opt = build_optimizer(name, model.parameters(), L=3, gamma=1.0, noise=1e-4, seed=1,
                          **hyper)

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    out = []
    for _ in range(3):
        opt.step(closure)
        out.append(model.weight.detach().clone())
    return out


@pytest.mark.parametrize("name", ["entropy_sgd", "entropy_adam"])
def test_options_idle_without_an_inner_momentum_are_dropped_and_change_nothing(name):
    """What the inner momentum carries and whether its buffer is kept act on nothing without
    an inner momentum: the steps are the same bit for bit, and the form a run key is made of
    leaves them out (given one, it keeps them)."""
    from sgdlab.optim.registry import without_idle_options

    idle = {"inner_momentum_on": "step", "inner_momentum_buffer": "kept"}
    plain = _entropy_trajectory(name)
    assert all(torch.equal(a, b) for a, b in zip(plain, _entropy_trajectory(name, **idle)))
    assert without_idle_options(name, {"lr": 0.5, **idle}) == {"lr": 0.5}
    assert without_idle_options(name, {"inner_momentum": 0.0, **idle}) == {"inner_momentum": 0.0}
    moving = {"inner_momentum": 0.5, **idle}
    assert without_idle_options(name, moving) == moving
    assert not all(torch.equal(a, b) for a, b in zip(
        _entropy_trajectory(name, inner_momentum=0.5),
        _entropy_trajectory(name, **moving)))
    # an optimizer declaring none keeps every option
    assert without_idle_options("sgd", {"lr": 0.1, "dampening": 0.5}) == {"lr": 0.1,
                                                                          "dampening": 0.5}
