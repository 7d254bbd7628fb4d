"""SGD with a uniformly random learning rate: Musso 2020, eqs. (1)–(2).

    v_{k+1} = μ v_k − α_k ∇f_Γ(x_k),        x_{k+1} = x_k + l v_{k+1},        α_k ~ U[0, 1]

α_k is one scalar per step, drawn i.i.d. and shared by every parameter: it multiplies the
*new* mini-batch gradient only, so the velocity remembers each past gradient with the factor it
was drawn with. Putting a random learning rate into ``torch.optim.SGD`` is a different rule:
there the factor multiplies the whole step l·v, momentum buffer included. Both are here
(``multiply``); the paper's rule is the default.

In torch's buffer b = −v (which starts at 0, so b_1 = α_0 g_0, as torch starts its buffer at
the first gradient), with g_k = ∇f_Γ(x_k) + w x_k:

==================  ====================================  ===================================
``multiply``        buffer                                step
==================  ====================================  ===================================
``"gradient"``      b ← μ b + α g                         x ← x − l b   (Nesterov: l (α g + μ b))
``"step"``          b ← μ b + g                           x ← x − α l b (Nesterov: α l (g + μ b))
==================  ====================================  ===================================

With μ = 0 the two coincide. ``"step"`` is what the schedule ``random`` does to any optimizer.

Readings where the paper is silent or says two things (docs/FIDELITY.md#musso):

- ``convention="paper"``: α ~ U[0, 1] as eq. (1) states, so ``lr`` is the *maximal* learning
  rate l ("l would be the usual learning rate if α were constant and equal to 1"; the mean
  step is l/2). ``convention="mean-lr"``: α ~ U[0, 2], so ``lr`` is the *mean* learning rate,
  as §3.1 describes its comparisons ("all the training instances depicted correspond to the
  same mean value l of the learning rate") and as the cyclic protocol eq. (20) averages l.
- Nesterov: the figures use "Nesterov acceleration" but eqs. (1)–(2) are heavy-ball; we apply
  torch's Nesterov form to the randomly scaled gradient (the table above).
- Weight decay: the L2 term w x is part of the loss, so α multiplies it with ∇f_Γ.

The generator (one CPU ``torch.Generator``, seeded with ``seed`` or the run's seed), the step
count and the last α of each parameter group are part of ``state_dict()``, so a resumed run
draws the same sequence.

Parameter groups: eq. (1) draws one α per step for the whole weight vector, so every group
takes the same draw u ~ U[0, 1]; a group's α is u times its own convention's upper end, so
groups of different conventions step with different α (``last_alphas``, one per group).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from sgdlab.errors import ConfigError
from sgdlab.measure.temperature import MUSSO_CONVENTIONS as CONVENTIONS

from ._common import (PicklesWhole, closure_loss, group_number, momentum_direction,
                      runs_state_dict_hooks, seeded_generator)
from .registry import _init_default, register_optimizer
from .settings import split_own_state

__all__ = ["RandomLRSGD", "CONVENTIONS", "MULTIPLY", "alpha_high", "alpha_moments",
           "noise_equivalent_lr"]

# CONVENTIONS: α's upper end, U[0, 1] (eq. (1), ``lr`` = maximal l) or U[0, 2] (``lr`` = mean)
MULTIPLY = ("gradient", "step")


def alpha_high(convention: str) -> float:
    """Upper end of α's interval U[0, high] for a learning-rate convention (see module doc)."""
    try:
        return CONVENTIONS[convention]
    except KeyError:
        raise ValueError(f"Invalid convention {convention!r}; known: "
                         f"{', '.join(CONVENTIONS)}") from None


def alpha_moments(convention: str) -> tuple[float, float]:
    """⟨α⟩ and ⟨α²⟩ of α ~ U[0, high] for a convention: high/2 and high²/3 (eq. (25) and the
    ⟨α²⟩ = ⅓ behind eq. (24)'s 1/(3C) for ``"paper"``; 1 and 4/3 for ``"mean-lr"``)."""
    high = alpha_high(convention)
    return high / 2.0, high * high / 3.0


def noise_equivalent_lr(group: dict[str, Any]) -> float:
    """The constant SGD step η whose SDE a parameter group of :class:`RandomLRSGD` follows
    (or its config: :class:`RandomLRSGD`'s defaults for what it leaves out):
    l ⟨α²⟩ / ⟨α⟩ (2l/3 under ``"paper"``, 4l/3 under ``"mean-lr"``).

    A step −α l g_Γ has mean drift −⟨α⟩ l ∇f and mini-batch noise of covariance ⟨α²⟩ l² Σ/C;
    with the time step ⟨α⟩ l the drift is −∇f dt and the diffusion (⟨α²⟩ l/⟨α⟩) Σ/C, that
    of constant SGD at η = l⟨α²⟩/⟨α⟩ (Zhu et al. 2019, eq. (5); the random run's stationary
    temperature, twice Musso's eq. (19), is constant SGD's at that η). Neither the mean step ⟨α⟩l
    (the drift only) nor the root-mean-square step l√⟨α²⟩ (the noise only) is. Momentum
    leaves the ratio as it is where α multiplies the gradient (eq. (1)); where it multiplies
    the whole step (``multiply="step"``) with μ > 0 one α scales a buffer of many gradients,
    which this does not cover: a ConfigError (a ValueError) says so."""
    defaults = {k: _init_default(RandomLRSGD, k) for k in ("convention", "multiply", "momentum")}
    group = {**defaults, **group}
    if group["multiply"] not in MULTIPLY:       # another word was read as "gradient"
        raise ConfigError(f"multiply must be one of {', '.join(map(repr, MULTIPLY))}, got "
                          f"{group['multiply']!r}")
    if group["multiply"] == "step" and group_number(group, "momentum") > 0:
        raise ConfigError(
            f"random-lr-sgd with multiply='step' and momentum {group['momentum']}: one α "
            "scales the whole momentum buffer, so no constant SGD step with the same noise is "
            "given here; the noise measurements take one for multiply='gradient' (eq. (1)) "
            "or momentum 0")
    mean, mean_square = alpha_moments(group["convention"])
    return group_number(group, "lr") * mean_square / mean


def random_lr_sgd(params: list[Tensor], grads: list[Tensor], states: list[dict[str, Any]],
                  group: dict[str, Any], u: float) -> None:
    """One step of eqs. (1)–(2) on ``params`` with α = u · high(convention), u ~ U[0, 1]."""
    alpha = u * alpha_high(group["convention"])
    on_gradient = group["multiply"] == "gradient"
    step = group["lr"] if on_gradient else group["lr"] * alpha
    for p, g, state in zip(params, grads, states):
        if group["weight_decay"] != 0:
            g = g.add(p, alpha=group["weight_decay"])
        if on_gradient:
            g = g.mul(alpha)
        p.add_(momentum_direction(state, g, group), alpha=-step)


@register_optimizer("random-lr-sgd")
class RandomLRSGD(PicklesWhole, Optimizer):
    """Musso 2020, eqs. (1)–(2): SGD whose step multiplies each new gradient by α ~ U[0, 1].

    Args:
        params: parameters or parameter groups.
        lr: l of eq. (2) — the maximal learning rate (``convention="paper"``) or the mean one
            (``convention="mean-lr"``); an LR scheduler sets this l, and α multiplies it.
        momentum: μ of eq. (1), in [0, 1).
        nesterov: Nesterov's form of the momentum (torch's convention, see the module doc).
        weight_decay: w, the L2 coefficient added to the gradient (α multiplies it too).
        convention: ``"paper"`` (α ~ U[0, 1]) or ``"mean-lr"`` (α ~ U[0, 2]).
        multiply: ``"gradient"`` (eq. (1), default) or ``"step"`` (α scales l·v, as a random
            lr in ``torch.optim.SGD`` does).
        seed: seed of α's generator (default ``torch.initial_seed()``: the run's seed).

    ``last_alphas`` holds the α each parameter group took in the latest step (None before the
    first); ``last_alpha`` is that α where every group took the same (one convention, as with
    one group), and a ValueError where the groups' conventions made them differ.
    """

    def __init__(self, params, lr: float, *, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, convention: str = "paper",
                 multiply: str = "gradient", seed: int | None = None) -> None:
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum value: {momentum} (need 0 <= momentum < 1)")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum requires a momentum")
        alpha_high(convention)
        if multiply not in MULTIPLY:
            raise ValueError(f"Invalid multiply {multiply!r}; known: {', '.join(MULTIPLY)}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        convention=convention, multiply=multiply)
        super().__init__(params, defaults)
        self.generator = seeded_generator(seed)
        self._given_seed = None if seed is None else int(seed)
        self.steps = 0
        self.last_alphas: list[float] | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = closure_loss(closure)
        # one draw per step for the whole weight vector, as eq. (1)'s scalar α
        u = float(torch.rand((), generator=self.generator, dtype=torch.float64))
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            random_lr_sgd(params, [p.grad for p in params], [self.state[p] for p in params],
                          group, u)
        self.last_alphas = self._alphas(u)
        self.steps += 1
        return loss

    def _alphas(self, u: float) -> list[float]:
        """Each group's α for the draw ``u``, as :func:`random_lr_sgd` computes it: the same
        draw times the group's convention's upper end."""
        return [u * alpha_high(g["convention"]) for g in self.param_groups]

    @property
    def last_alpha(self) -> float | None:
        """The α of the latest step (None before the first), where every parameter group took
        the same; groups of different conventions took different α: read ``last_alphas``."""
        alphas = self.last_alphas
        if alphas is None:
            return None
        if any(a != alphas[0] for a in alphas):
            conventions = [g["convention"] for g in self.param_groups]
            raise ValueError(f"the parameter groups took different α in the latest step "
                             f"(conventions {conventions}): read last_alphas, one per group "
                             f"({alphas})")
        return alphas[0]

    def settings(self) -> dict[str, Any]:
        """Its generator's seed as given, None for the default (:mod:`sgdlab.optim.settings`):
        loading a state restores the generator, so another seed would be ignored."""
        return {"seed": self._given_seed}

    @runs_state_dict_hooks
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        alphas = self.last_alphas
        sd["random_lr"] = {"generator": self.generator.get_state(), "steps": self.steps,
                           # the first group's, as states saved before last_alphas hold it
                           "last_alpha": None if alphas is None else alphas[0],
                           "last_alphas": None if alphas is None else list(alphas)}
        return sd

    @runs_state_dict_hooks
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict, extra = split_own_state(state_dict, "random_lr", "RandomLRSGD")
        super().load_state_dict(state_dict)
        self.generator.set_state(extra["generator"])
        self.steps = int(extra["steps"])
        alphas = extra.get("last_alphas")
        if alphas is None and extra["last_alpha"] is not None:
            # a state saved with the first group's α only: the draw u is that α over its
            # convention's upper end (1 or 2, so exact), and each group's α is u times its own
            alphas = self._alphas(
                extra["last_alpha"] / alpha_high(self.param_groups[0]["convention"]))
        self.last_alphas = None if alphas is None else [float(a) for a in alphas]
