"""Stochastic gradient Langevin dynamics (Welling and Teh 2011, eq. 4), the baseline of
Chaudhari's thesis §3.3.6 ("Comparison with SGLD").

Welling and Teh sample the posterior of N data points with a prior p(θ):

    Δθ_t = (ε_t / 2) (∇ log p(θ_t) + (N/n) Σ_{i ∈ batch} ∇ log p(x_i | θ_t)) + η_t,
    η_t ~ N(0, ε_t I),

i.e. Langevin dynamics at temperature 1 on the full-data energy U(θ) = N f(θ) − log p(θ), f
the mean loss (the negative mean log-likelihood) that sgdlab trains on. Written as a step of
size lr = N ε / 2 on f (the step a ``torch.optim.SGD`` of that ``lr`` would take):

    θ ← θ − lr (∇f + λ θ) + √(2 lr T / N) ξ,       ξ ~ N(0, I) drawn fresh every step,

with weight decay λ as the prior: −log p(θ) = (N λ / 2) ‖θ‖², a Gaussian of precision N λ
(λ = 0: a flat prior, §3.2.1's uniform one, line 930). The thesis prints this update in
§3.2.1, eqs. (3.15)–(3.16):
Δx_t = (η_t/2)(∇log p(x_t) + (N/m) Σ_k ∇p(ξ_k|x_t)) + √η_t ε_t with ε_t ~ N(0, ε²) (∇p
printed for ∇log p), which is ``energy="full-data"`` at lr = N η_t / 2 and T = ε² (ε = 1:
Welling and Teh's); §3.3.6, which runs SGLD, states neither ε nor the step, so the scale of
the noise relative to the step is a named option, ``energy``:

==============  ===================================  ==========================================
``energy``      noise std per coordinate             reading
==============  ===================================  ==========================================
``full-data``   √(2 lr T / N)                        Welling and Teh's posterior at temperature
                                                     T (T = 1, the default, is their SGLD)
``mean``        √(2 lr T)                            Langevin dynamics on the mean loss f at
                                                     temperature T (Entropy-SGD's inner loop's
                                                     convention, thermal noise T = β⁻¹)
==============  ===================================  ==========================================

``full-data`` at temperature T equals ``mean`` at temperature T / N. N (``num_data``) defaults
to the size of the training data ``data`` that :func:`~sgdlab.optim.build_optimizer_for`
passes. No momentum (Welling and Teh's SGLD has none) and no posterior averaging: the iterate
is the model.

A step size ε_t decreasing as a (b + t)^{−γ} (Welling and Teh §3; the thesis' η/(1+t)^b) is
the ``polynomial-decay`` schedule of :mod:`sgdlab.optim.protocols`.

Reproducibility: one CPU ``torch.Generator`` (``seed``) draws the noise, parameter by parameter
in parameter-group order (the same numbers on any device); its state is part of
``state_dict()``, so a resumed run continues the same trajectory.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from sgdlab.operators.batches import num_samples

from ._common import (PicklesWhole, check_real_parameters, closure_loss, dense, group_number,
                      runs_state_dict_hooks, seeded_generator)
from .noise import standard_normal
from .registry import register_optimizer
from .settings import split_own_state

__all__ = ["SGLD", "ENERGIES", "sgld_noise_std"]

ENERGIES = ("full-data", "mean")


def sgld_noise_std(lr: float, *, temperature: float = 1.0, energy: str = "full-data",
                   num_data: int | None = None) -> float:
    """The noise std per coordinate of one SGLD step of size ``lr`` on the mean loss (module
    table): √(2 lr T / N) for ``energy="full-data"``, √(2 lr T) for ``"mean"``."""
    if energy not in ENERGIES:
        raise ValueError(f"Invalid energy {energy!r}; choose one of {', '.join(ENERGIES)}")
    var = 2.0 * lr * temperature
    if energy == "full-data":
        if num_data is None or not num_data >= 1:
            raise ValueError(f"Invalid num_data: {num_data} (energy='full-data' needs N >= 1, "
                             "the number of training examples)")
        var /= num_data
    return math.sqrt(var)


def _num_examples(data: Any) -> int:
    """N of the training data ``data``: a sgdlab ``Dataset`` (its training split), a torch
    dataset, a batch ``(x, y)`` or batches (a list, a ``DataLoader``: their samples, not their
    count, nor a list's first batch's two tensors)."""
    from torch.utils.data import Dataset as TorchDataset

    if hasattr(data, "x_train"):
        return len(data.x_train)
    if isinstance(data, TorchDataset) and hasattr(data, "__len__"):
        return len(data)
    return num_samples(data)


class SGLD(PicklesWhole, Optimizer):
    """Stochastic gradient Langevin dynamics (Welling and Teh 2011), on the mean loss.

    Args:
        params: parameters.
        lr: step size on the mean loss (>= 0); Welling and Teh's ε is 2 lr / N.
        temperature: T (>= 0; 0 is plain SGD with weight decay).
        energy: ``"full-data"`` (default, noise √(2 lr T / N)) or ``"mean"`` (√(2 lr T));
            see the module table.
        num_data: N for ``energy="full-data"``; default: the number of examples in ``data``.
        weight_decay: λ, the Gaussian prior's gradient per example (precision N λ).
        seed: seed of the noise generator (default ``torch.initial_seed()``, so runs seeded
            differently draw different noise).
        model, loss_fn, data: passed by ``build_optimizer_for`` (only ``data``'s size is used).
    """

    needs_model = True

    def __init__(self, params, lr: float = 1e-2, *, temperature: float = 1.0,
                 energy: str = "full-data", num_data: int | None = None,
                 weight_decay: float = 0.0, seed: int | None = None,
                 model: Any = None, loss_fn: Any = None, data: Any = None):
        if not 0 <= lr < math.inf:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0 <= temperature < math.inf:
            raise ValueError(f"Invalid temperature: {temperature} (finite, >= 0)")
        if not 0 <= weight_decay < math.inf:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if energy not in ENERGIES:
            raise ValueError(f"Invalid energy {energy!r}; choose one of {', '.join(ENERGIES)}")
        if num_data is None and data is not None:
            num_data = _num_examples(data)
        if energy == "full-data" and num_data is None:
            raise ValueError("sgld with energy='full-data' needs N, the number of training "
                             "examples: give num_data=N, or data= (build_optimizer_for(name, "
                             "model, loss_fn=, data=) passes it)")
        if energy == "full-data":
            sgld_noise_std(0.0, energy=energy, num_data=num_data)     # validates N
        self.energy = energy
        self.num_data = None if num_data is None else int(num_data)
        self.generator = seeded_generator(seed)
        self._given_seed = None if seed is None else int(seed)
        super().__init__(params, dict(lr=lr, temperature=temperature,
                                      weight_decay=weight_decay))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        check_real_parameters(self, "its noise is drawn on real coordinates")

    def noise_std(self, group: dict[str, Any]) -> float:
        """The noise std per coordinate of the next step of ``group``; a ConfigError naming
        a group's ``lr`` or ``temperature`` that is no finite number >= 0 (one given to
        ``add_param_group`` or written by hand: √(2 lr T) was a bare "math domain error")."""
        return sgld_noise_std(group_number(group, "lr"),
                              temperature=group_number(group, "temperature"),
                              energy=self.energy, num_data=self.num_data)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        loss = closure_loss(closure)
        stds = [self.noise_std(group) for group in self.param_groups]   # checked before a move
        for group, std in zip(self.param_groups, stds):
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None or not p.requires_grad:
                    continue
                # a sparse gradient (nn.Embedding(sparse=True)) meets dense noise and decay
                d_p = dense(p.grad)
                if wd != 0:
                    d_p = d_p.add(p, alpha=wd)
                p.add_(d_p, alpha=-lr)
                if std > 0:
                    xi = standard_normal(p.shape, generator=self.generator, dtype=p.dtype,
                                         device=p.device)
                    p.add_(xi, alpha=std)
        return loss

    def settings(self) -> dict[str, Any]:
        """The noise's reading, N and the generator's seed (:mod:`sgdlab.optim.settings`)."""
        return {"energy": self.energy, "num_data": self.num_data, "seed": self._given_seed}

    @runs_state_dict_hooks
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["sgld"] = {"energy": self.energy, "num_data": self.num_data,
                      "generator": self.generator.get_state()}
        return sd

    @runs_state_dict_hooks
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict, extra = split_own_state(state_dict, "sgld", "SGLD", energy=self.energy)
        super().load_state_dict(state_dict)
        self.num_data = extra["num_data"]
        self.generator.set_state(extra["generator"])


register_optimizer("sgld")(SGLD)
