"""Trivialized-SGD (Chaudhari's thesis, Algorithm 1; Chaudhari & Soatto 2015, "AnnealSGD") and
the "resampled annealed noise" control of the thesis' Table 2.1.

The loss of a deep network is modelled as the Hamiltonian of a spherical p-spin glass on N
spins. Adding an external field hᵀθ with h ~ J√(p(p−2)) N(0, I) *trivializes* the landscape
(Fyodorov & Le Doussal: exponentially many minima → polynomially many → one) when the field
variance B is above B_c = J² p(p−2); the transition regime is B = B_c (1 + 2τ/N). The algorithm
adds the field to every gradient and anneals its strength so the landscape is "untrivialized"
during training:

    g̃_i = g_i + (1 + 2τ_i/N)^{1/2} h,      τ_i = n (e^{−i/τ₀} − 1/2),      h = J√(p(p−2)) ξ,

with ξ ~ N(0, I_d) drawn once (fixed) and i the optimizer step. τ_i runs from +n/2 (strongly
trivialized) to −n/2; with the default n = N the strength is √2·e^{−i/(2τ₀)}, from √2 down to 0,
so late training is the base optimizer on the original loss. ``n > N`` would make the square
root imaginary and is rejected.

**N and p heuristics** (thesis §2.4.2, as implemented here; the thesis text was not available
while writing this, so this is our reading, documented in docs/design/noise-optim.md): the
spherical constraint of the spin-glass mapping (Choromanska et al. 2015) is over all weights,
so **N = d**, the number of trainable parameters; a network with L weight layers maps to an
L-spin glass, so **p = number of weight layers** (``nn.Linear`` / ``nn.Conv*`` modules with a
weight), clamped to p ≥ 3 because the field scale √(p(p−2)) needs p > 2. Both can be given
explicitly (``p=``, ``num_spins=``).

``resample=True`` (registered as ``annealed-noise``) draws a fresh ξ every step with the same
annealed strength: Gaussian noise of the same magnitude but no fixed field, the control that
separates "landscape trivialization" from "annealed noise".

The field is added to ``p.grad`` just for the base optimizer's step and the original gradients
are restored afterwards, so callbacks and logs see the true gradient.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ._common import check_plain_optimizer, closure_loss, seeded_generator
from .registry import build_optimizer, register_optimizer

__all__ = ["TrivializedSGD", "AnnealedNoiseSGD", "trivialization_heuristics", "field_strength"]

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def trivialization_heuristics(model: nn.Module) -> dict[str, int]:
    """``{"p": ..., "num_spins": ...}`` for a model: p = number of weight layers (>= 3),
    N = number of trainable parameters (see the module docstring)."""
    layers = sum(1 for m in model.modules()
                 if isinstance(m, _WEIGHT_LAYERS) and getattr(m, "weight", None) is not None
                 and m.weight.requires_grad)
    d = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"p": max(3, layers), "num_spins": int(d)}


def field_strength(i: int | Tensor, *, n: float, num_spins: float, tau0: float) -> float | Tensor:
    """(1 + 2τ_i/N)^{1/2} with τ_i = n (e^{−i/τ₀} − 1/2) (thesis Algorithm 1)."""
    if isinstance(i, Tensor):
        tau = n * (torch.exp(-i / tau0) - 0.5)
        return (1 + 2 * tau / num_spins).clamp_min(0).sqrt()
    tau = n * (math.exp(-i / tau0) - 0.5)
    return math.sqrt(max(0.0, 1 + 2 * tau / num_spins))


class TrivializedSGD(Optimizer):
    """Base optimizer (any registered name: ``sgd`` with momentum/Nesterov, ``adam``, ...) on the
    gradient plus the annealed fixed field (thesis Algorithm 1).

    Args:
        params: parameters.
        base: registered optimizer name of the base (default ``"sgd"``).
        coupling: J, the scale of the spin-glass couplings (> 0); the field is
            h = J√(p(p−2)) ξ. In gradient units: ‖h‖ ≈ J√(p(p−2) d).
        p: spin-glass order (> 2); default from ``model`` (:func:`trivialization_heuristics`).
        num_spins: N; default d (the number of parameters).
        n: annealing range, 0 < n <= N (default N).
        tau0: annealing time constant τ₀ in optimizer steps (> 0).
        resample: draw a fresh ξ every step (the "resampled annealed noise" control).
        seed: seed of the field's generator (default ``torch.initial_seed()``).
        model, loss_fn, data: passed by ``build_optimizer_for`` (only ``model`` is used, for the
            heuristics).
        **base_hyper: the base optimizer's hyper-parameters (``lr``, ``momentum``, ...).
    """

    needs_model = True
    resample_default = False

    def __init__(self, params, base: str = "sgd", *, coupling: float = 1e-3,
                 p: int | None = None, num_spins: int | None = None, n: float | None = None,
                 tau0: float = 1000.0, resample: bool | None = None, seed: int | None = None,
                 model: nn.Module | None = None, loss_fn: Any = None, data: Any = None,
                 **base_hyper: Any):
        check_plain_optimizer("base", base, exclude=("trivialized", "annealed-noise"))
        if not coupling > 0:
            raise ValueError(f"Invalid coupling J: {coupling} (must be > 0)")
        if not tau0 > 0:
            raise ValueError(f"Invalid tau0: {tau0} (steps, must be > 0)")
        self.base = build_optimizer(base, params, **base_hyper)
        super().__init__(self.base.param_groups, self.base.defaults)
        self.param_groups, self.state = self.base.param_groups, self.base.state

        heur = trivialization_heuristics(model) if model is not None else {}
        d = sum(q.numel() for g in self.param_groups for q in g["params"])
        p = p if p is not None else heur.get("p")
        if p is None:
            raise ValueError("Invalid p: None (give p, the spin-glass order, or model= for the "
                             "heuristic)")
        if not p > 2:
            raise ValueError(f"Invalid p: {p} (spin-glass order, must be > 2)")
        num_spins = d if num_spins is None else num_spins
        if not num_spins >= 1:
            raise ValueError(f"Invalid num_spins N: {num_spins} (must be >= 1)")
        n = num_spins if n is None else n
        if not 0 < n <= num_spins:
            raise ValueError(f"Invalid n: {n} (must satisfy 0 < n <= N = {num_spins})")
        self.base_name = base
        self.p, self.num_spins, self.n = float(p), float(num_spins), float(n)
        self.coupling, self.tau0 = float(coupling), float(tau0)
        self.resample = self.resample_default if resample is None else bool(resample)
        self.field_scale = self.coupling * math.sqrt(self.p * (self.p - 2))
        self.generator = seeded_generator(seed)
        self._dim = d
        self._i = 0
        self.field = self._draw_field()

    def _draw_field(self) -> Tensor:
        """h = J√(p(p−2)) ξ, ξ ~ N(0, I_d), flat in parameter-group order (float64 on CPU so
        the draw is the same on any device/dtype)."""
        xi = torch.randn(self._dim, generator=self.generator, dtype=torch.float64)
        return self.field_scale * xi

    def strength(self, i: int | None = None) -> float:
        """(1 + 2τ_i/N)^{1/2} at step i (default: the next step)."""
        return field_strength(self._i if i is None else i, n=self.n, num_spins=self.num_spins,
                              tau0=self.tau0)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        loss = closure_loss(closure)
        h = self._draw_field() if self.resample else self.field
        s = self.strength()
        saved: list[tuple[Tensor, Tensor]] = []
        a = 0
        for g in self.param_groups:
            for q in g["params"]:
                b = a + q.numel()
                if q.grad is not None:
                    saved.append((q, q.grad.clone()))
                    q.grad.add_(h[a:b].view_as(q).to(device=q.device, dtype=q.dtype), alpha=s)
                a = b
        self.base.step()
        for q, grad in saved:
            q.grad.copy_(grad)
        self._i += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        sd = self.base.state_dict()
        sd["trivialized"] = {"base": self.base_name, "i": self._i, "field": self.field.clone(),
                             "generator": self.generator.get_state()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("trivialized", None)
        if extra is None:
            raise ValueError("state_dict has no 'trivialized' entry")
        if extra["base"] != self.base_name:
            raise ValueError(f"state_dict is for base {extra['base']!r}, not {self.base_name!r}")
        self.base.load_state_dict(state_dict)
        self.param_groups, self.state = self.base.param_groups, self.base.state
        self._i = int(extra["i"])
        self.field = extra["field"].to(torch.float64).clone()
        self.generator.set_state(extra["generator"])


class AnnealedNoiseSGD(TrivializedSGD):
    """The Table 2.1 control: the same annealed strength, but ξ redrawn every step."""

    resample_default = True


register_optimizer("trivialized")(TrivializedSGD)
register_optimizer("annealed-noise")(AnnealedNoiseSGD)
