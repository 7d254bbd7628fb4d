"""What an optimizer or schedule was built with, as data (sgdlab.optim.settings): the pieces a
resumed run compares with its checkpoint, each on a tiny case written out by hand."""
import pytest
import torch

from sgdlab.optim import build_optimizer, build_schedule
from sgdlab.optim.settings import (group_settings, inner_settings, plain_attributes,
                                   split_own_state)


def test_group_settings_leave_out_the_parameters_and_their_names():
    # torch keeps the names of parameters given as named_parameters() in each group
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.named_parameters(), lr=0.1)
    assert "param_names" in opt.param_groups[0]
    (found,) = group_settings(opt)
    assert "params" not in found and "param_names" not in found and found["lr"] == 0.1


def test_inner_settings_without_groups_are_the_inner_optimizers_own_only():
    params = [torch.zeros(2, requires_grad=True)]
    rnd = build_optimizer("random-lr-sgd", params, lr=0.1, seed=3)
    assert inner_settings("base", rnd, groups=False) == {"base.seed": 3}
    with_groups = inner_settings("base", rnd)
    assert with_groups["base.seed"] == 3 and with_groups["base.lr"] == 0.1
    assert inner_settings("base", torch.optim.SGD(params, lr=0.1), groups=False) == {}


def test_a_schedules_settings_do_not_move_with_its_steps():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = build_schedule("step", opt, steps_per_epoch=2, total_steps=8, milestones=[1],
                           gamma=0.5)
    before = sched.settings()
    for _ in range(3):
        opt.step()
        sched.step()
    assert sched.settings() == before
    assert before["milestones"] == [1.0] and before["gamma"] == 0.5 and "t" not in before


def test_split_own_state_refuses_a_missing_entry_or_another_reading():
    state = {"state": {}, "param_groups": [], "gld": {"noise": "dynamic", "count": 4}}
    torch_state, own = split_own_state(state, "gld", "a GLD optimizer", noise="dynamic")
    assert torch_state == {"state": {}, "param_groups": []} and own["count"] == 4
    with pytest.raises(ValueError, match="state_dict is for noise 'dynamic', not 'const'"):
        split_own_state(state, "gld", "a GLD optimizer", noise="const")
    with pytest.raises(ValueError, match=r"no 'gld' entry \(not saved by a GLD optimizer\)"):
        split_own_state({"state": {}}, "gld", "a GLD optimizer")


def test_plain_attributes_are_numbers_strings_none_and_lists_of_them_less_the_position():
    class Schedule:
        def __init__(self):
            self.gamma, self.kind, self.off, self.flag = 0.5, "cosine", None, True
            self.milestones, self.pairs = [1, 2.5], ((1, "a"), (2, "b"))
            self.t = 4                                    # moved by each step
            self.table, self.x = {"a": 1}, torch.zeros(1)   # no plain data
            self.mixed = [1, torch.zeros(1)]

    assert plain_attributes(Schedule(), {"t"}) == {
        "gamma": 0.5, "kind": "cosine", "off": None, "flag": True, "milestones": [1, 2.5],
        "pairs": ((1, "a"), (2, "b"))}
