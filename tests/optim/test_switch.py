"""``SwitchOptimizer``'s saved state read back: the state of the optimizer taking the next step,
and what is not a switch optimizer's state, named."""
from __future__ import annotations

import re

import pytest
import torch

from sgdlab.optim import SwitchOptimizer, build_optimizer


def _switch(steps: int) -> SwitchOptimizer:
    """sgd then adam at step 1 on one parameter, after ``steps`` steps."""
    p = torch.nn.Parameter(torch.ones(2))
    opt = build_optimizer("switch", [p], first="sgd", second="adam", switch_step=1,
                          first_hyper={"lr": 0.1}, second_hyper={"lr": 0.01})
    for _ in range(steps):
        p.grad = torch.ones(2)
        opt.step()
    return opt


@pytest.mark.parametrize("steps, which", [(0, "first"), (1, "second")])
def test_the_active_state_is_the_next_steps_optimizers(steps, which):
    saved = _switch(steps).state_dict()
    assert SwitchOptimizer.active_state(saved) is saved[which]


@pytest.mark.parametrize("saved, says", [
    (torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1).state_dict(),
     "state_dict has no 'switch' entry (not saved by SwitchOptimizer; it holds keys 'state', "
     "'param_groups')"),
    ([], "state_dict has no 'switch' entry (not saved by SwitchOptimizer; it holds a list)"),
    ({"switch": {"t": 0}}, "state_dict's 'switch' entry has no switch_step (not saved by "
                           "SwitchOptimizer; it holds keys 't')")])
def test_a_state_not_saved_by_a_switch_optimizer_is_named(saved, says):
    # another optimizer's state was a bare KeyError: 'switch'
    with pytest.raises(ValueError, match=re.escape(says)):
        SwitchOptimizer.active_state(saved)


def test_a_switch_state_without_the_next_steps_optimizer_is_named():
    saved = _switch(1).state_dict()
    del saved["second"]
    with pytest.raises(ValueError, match=re.escape(
            "state_dict has no 'second' entry, the state of the optimizer that takes step 1 "
            "(switch_step 1)")):
        SwitchOptimizer.active_state(saved)
    saved = _switch(0).state_dict()
    del saved["switch"]["names"]
    with pytest.raises(ValueError, match=re.escape("'switch' entry has no names (not saved by")):
        _switch(0).load_state_dict(saved)
