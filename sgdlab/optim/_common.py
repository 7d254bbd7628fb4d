"""Small pieces shared by several optimizers of :mod:`sgdlab.optim` (private)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .registry import OPTIMIZERS


def closure_loss(closure: Callable[[], Tensor] | None) -> Tensor | None:
    """``closure()`` with gradients enabled (inside an optimizer's ``no_grad`` step), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def seeded_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed``, by default with ``torch.initial_seed()`` (the run's
    seed, so runs seeded differently draw differently)."""
    return torch.Generator().manual_seed(int(torch.initial_seed() if seed is None else seed))


def is_whole(value) -> bool:
    """``value`` is a whole number (``3``, or ``3.0`` as a config may write it): False for
    nan, inf, 2.5, a string or None, so the caller's ValueError names the argument."""
    try:
        return int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False


def check_plain_optimizer(role: str, name: str, exclude: tuple[str, ...]) -> None:
    """``name`` must be registered, not in ``exclude`` and a plain optimizer (no model, no
    closure), as the inner optimizer of a wrapper; ValueError naming ``role`` otherwise."""
    if name not in OPTIMIZERS or name in exclude:
        raise ValueError(f"Invalid {role} optimizer {name!r}; known: "
                         f"{', '.join(sorted(OPTIMIZERS))}")
    cls = OPTIMIZERS[name]
    if getattr(cls, "needs_model", False) or getattr(cls, "needs_closure", False):
        raise ValueError(f"Invalid {role} optimizer {name!r}: must be a plain optimizer")


def check_real_parameters(optimizer, why: str) -> None:
    """After ``add_param_group``: a ValueError naming a complex parameter of the group just
    added, which is removed again. ``why``: what of the optimizer is defined on real
    coordinates (its noise, its statistics). torch.optim's optimizers read a complex
    parameter as the pairs of its real and imaginary parts; a noise drawn in its complex
    dtype has half the variance in each, and the statistics of sgdlab's per-sample gradients
    and curvature are real."""
    for p in optimizer.param_groups[-1]["params"]:
        if p.is_complex():
            optimizer.param_groups.pop()
            raise ValueError(
                f"{type(optimizer).__name__} takes real parameters: one of shape "
                f"{tuple(p.shape)} is {p.dtype} ({why}); hold its real and imaginary parts as "
                "one real parameter (torch.view_as_real)")


def momentum_direction(state: dict, g: Tensor, group: dict) -> Tensor:
    """``g`` through heavy-ball / Nesterov momentum (torch.optim.SGD's convention, no
    dampening; the buffer ``state["momentum_buffer"]`` starts at g); ``g`` if momentum is 0."""
    mu = group["momentum"]
    if mu > 0:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = g.clone()
        else:
            buf.mul_(mu).add_(g)
        g = g.add(buf, alpha=mu) if group["nesterov"] else buf
    return g


def gradient_step_size(group: dict) -> float:
    """The step size along mini-batch gradients of an optimizer's parameter group: ``lr``,
    except for the optimizers that take those steps in an inner loop (Entropy-SGD, the HJ and
    heat smoothers: ``inner_lr``, η_y), whose ``lr`` is the outer step η′ towards the inner
    average. SGD-noise measurements that scale with the step (CABS, the noise magnitude) take
    this one."""
    return float(group["inner_lr"] if "inner_lr" in group else group["lr"])
