"""Optimizers and schedules by name: a misspelled name or argument is a ValueError naming it,
with the closest spelling and the valid ones (as configs report it), not a bare TypeError."""
import pytest
import torch

from sgdlab.optim import build_optimizer, build_schedule


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
    ("EntropySGD", "entropy_sgd"), ("Entropy-SGD", "entropy_sgd"),
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


def test_right_arguments_still_build():
    opt = build_optimizer("sgd", _params(), lr=0.1, momentum=0.9)
    assert opt.param_groups[0]["momentum"] == 0.9
    sched = build_schedule("step", opt, steps_per_epoch=2, total_steps=8, milestones=[1],
                           gamma=0.5)
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
