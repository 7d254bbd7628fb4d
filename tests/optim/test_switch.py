"""``SwitchOptimizer``'s saved state read back: the state of the optimizer taking the next step,
and what is not a switch optimizer's state, named; a scheduler cycling a momentum key that the
second optimizer lacks, refused; a tensor given as ``params``, torch's TypeError."""
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


def _one_parameter_switch(first: str, second: str, momentum: dict) -> tuple:
    p = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = build_optimizer("switch", [p], first=first, second=second, switch_step=2,
                          first_hyper={"lr": 0.1, **momentum.get(first, {})},
                          second_hyper={"lr": 0.1, **momentum.get(second, {})})
    return p, opt


@pytest.mark.parametrize("first, second, key", [("adam", "sgd", "betas"),
                                                ("sgd", "adam", "momentum")])
@pytest.mark.parametrize("scheduler", ["one-cycle", "cyclic"])
def test_a_scheduler_cycling_a_momentum_the_second_lacks_is_refused_before_a_step(
        first, second, key, scheduler):
    # adam -> sgd: OneCycleLR / CyclicLR wrote Adam's betas into SGD's groups after the switch,
    # a bare KeyError 'betas' from the scheduler; sgd -> adam: they wrote a momentum that Adam
    # never reads, silently
    p, opt = _one_parameter_switch(first, second, {"sgd": {"momentum": 0.9}})
    if scheduler == "one-cycle":
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=6)
    else:
        torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=2)
    p.grad = torch.ones_like(p)
    before = p.detach().clone()
    with pytest.raises(ValueError, match=f"through its '{key}', which the second, {second}, "
                                         "has not.*cycle_momentum=False"):
        opt.step()
    assert torch.equal(p.detach(), before) and opt._t == 0


def test_a_tensor_for_params_is_torchs_type_error():
    # torch.optim.SGD(tensor) asks for an iterable; the switch iterated the tensor's rows and
    # said "can't optimize a non-leaf Tensor"
    p = torch.nn.Parameter(torch.ones(2, 3))
    with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts"):
        torch.optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts"):
        SwitchOptimizer(p, first="sgd", second="adam", switch_step=1,
                        first_hyper={"lr": 0.1}, second_hyper={"lr": 0.01})
