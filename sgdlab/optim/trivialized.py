"""Trivialized-SGD (Chaudhari's thesis, §2.3.3, Algorithm 1) and the "resampled, annealed
noise" control of the thesis' Table 2.1.

The loss of a deep network is modelled as the Hamiltonian of a spherical p-spin glass on N
spins. An external field h with i.i.d. N(0, v²) entries trivializes the landscape (exponentially
many critical points → polynomially many → one) as v crosses v_c = J√(p(p−2)) (eq. 2.15);
eq. (2.19) puts v = v_c (1 + 2τ/N)^{1/2} and eq. (2.20) anneals τ. Algorithm 1:

    h ~ J√(p(p−2)) N(0, I)                                   (line 4, drawn once)
    τ_i = n (e^{−i/τ₀} − 1/2)                                 (line 8, eq. 2.20)
    h_curr = (1 + 2τ_i/N)^{1/2} h                             (line 9, eq. 2.19)
    w ← w − η (∇loss(w, ξ_i) + h_curr)                        (line 10)

with i the SGD iteration and n = N the number of neurons (Algorithm 1, line 2, estimates
"#neurons n"; the chapter uses n and N for the same quantity). With n = N the strength is
(2 e^{−i/τ₀})^{1/2} = √2 e^{−i/(2τ₀)}: from √2 down to 0, whatever N is. "Line 10 can be adapted
to the underlying implementation of SGD": the field is added to the gradient the base optimizer
(``sgd`` with Nesterov momentum, ``adam``, any registered name) receives.

**N and p for a real network** (§2.4.2): "N := (# weights / p)^{1/2} where p is taken to be the
number of layers", a convolution (with its batch normalization and max-pooling) counting as one
layer. :func:`trivialization_heuristics` counts the weight layers as p and sets
N = (d / p)^{1/2}, d the number of trainable parameters (of the weight tensors under
``field_on="weights"``: d counts the coordinates the field covers). A weight layer is a module
that applies a trainable weight of its own to its input: ``nn.Linear``, ``nn.Conv*`` and
``nn.ConvTranspose*`` (a convolution's transpose). The thesis has only convolutional and fully
connected networks; for the other layers the code reads "layer" as a fully connected one is: one
weight matrix deep. So ``nn.Embedding`` / ``nn.EmbeddingBag`` (a fully connected layer on
one-hot tokens) count one, ``nn.MultiheadAttention`` one for its input projection (queries,
keys and values side by side) besides its ``out_proj`` (an ``nn.Linear``: a second), and a
recurrent stack (``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``, any module with parameters named as
theirs, ``weight_ih_l{k}``) one per stacked layer, its time steps and a reverse direction
beside it not counted. The same paragraph calls p "the number of hidden layers" (as §2.1 and
§2.4.1 do: the 3-spin glass is "three hidden layers [...] and a fourth loss layer"), one fewer:
``p_count="hidden-layers"`` counts the weight layers but the output one. N only matters when
``n`` is given explicitly (n ≤ N keeps the square root real). The thesis' formula gives a zero
field for p ≤ 2 (√(p(p−2)) = 0); sgdlab raises p to 3 for networks with fewer than three layers
so counted (a departure, for small test networks; the thesis' networks have p ≥ 3).

``resample=True`` (registered as ``annealed-noise``) draws a fresh ξ every step with the same
annealed strength: Gaussian noise of the same magnitude but no fixed direction — the thesis'
"resampled, annealed noise" of Table 2.1 (§2.4.3.2), read as Algorithm 1 with line 4 moved
inside the loop (the thesis gives the control no separate schedule).

The field is added to ``p.grad`` just for the base optimizer's step and the original gradients
are restored afterwards (also when that step raises), so callbacks and logs see the true
gradient. :meth:`TrivializedSGD.last_perturbation` gives the (s_i, h) of the latest step, what
was added (the instruments of :mod:`sgdlab.train.instruments.perturbation` read it).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ._common import (PicklesWhole, check_plain_optimizer, check_real_parameters,
                      closure_loss, refuse_optimizer_level_keys, runs_state_dict_hooks,
                      seeded_generator)
from .noise import standard_normal
from .registry import build_optimizer, register_optimizer
from .settings import inner_settings, split_own_state

__all__ = ["TrivializedSGD", "AnnealedNoiseSGD", "trivialization_heuristics", "field_strength",
           "P_COUNTS", "FIELD_ON", "field_covers"]

# modules that are one weight layer each (module docstring) when their ``weight`` is trainable
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                  nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Embedding, nn.EmbeddingBag)
# a recurrent stack's input weights of layer k (not its reverse direction's: "_reverse" follows)
_RECURRENT_LAYER = re.compile(r"weight_ih_l\d+")
# what §2.4.2's p counts: "the number of layers" or "the number of hidden layers" (line 682-686)
P_COUNTS = ("weight-layers", "hidden-layers")
# which coordinates the field covers: every trainable parameter, or the weight tensors only
# (Algorithm 1's "weights of a deep network w", line 500: biases and batch norm left out)
FIELD_ON = ("all", "weights")


def _check_p_count(p_count: str) -> None:
    if p_count not in P_COUNTS:
        raise ValueError(f"Invalid p_count {p_count!r}; choose one of {', '.join(P_COUNTS)}")


def _check_field_on(field_on: str) -> None:
    if field_on not in FIELD_ON:
        raise ValueError(f"Invalid field_on {field_on!r}; choose one of {', '.join(FIELD_ON)}")


def field_covers(q: Tensor, field_on: str) -> bool:
    """Whether the field has coordinates on ``q``: every tensor (``"all"``), or the weight
    tensors, those of two or more dimensions (``"weights"``)."""
    return field_on == "all" or q.dim() >= 2


def _trainable(*weights: Tensor | None) -> bool:
    return any(w is not None and w.requires_grad for w in weights)


def _weight_layers(m: nn.Module) -> int:
    """The weight layers of §2.4.2's p that ``m`` is itself (its submodules counted apart)."""
    if isinstance(m, _WEIGHT_LAYERS):
        return int(_trainable(getattr(m, "weight", None)))
    if isinstance(m, nn.MultiheadAttention):
        return int(_trainable(m.in_proj_weight, m.q_proj_weight, m.k_proj_weight,
                              m.v_proj_weight))
    return sum(1 for name, w in m.named_parameters(recurse=False)
               if _RECURRENT_LAYER.fullmatch(name) and w.requires_grad)


def trivialization_heuristics(model: nn.Module, *, p_count: str = "weight-layers",
                              field_on: str = "all") -> dict[str, float]:
    """Thesis §2.4.2 for a model: ``{"p": max(3, P), "num_spins": (d / P)^{1/2}, "layers": L}``
    with L the number of weight layers (``nn.Linear``, ``nn.Conv*``, ``nn.ConvTranspose*``;
    embeddings, attention and recurrent layers as the module docstring reads them), P = L
    (``p_count="weight-layers"``) or L − 1, the output layer left out (``"hidden-layers"``),
    and d, the "# weights", the number of trainable parameters the field covers (``field_on``:
    all of them, or the weight tensors only; module docstring)."""
    _check_p_count(p_count)
    _check_field_on(field_on)
    layers = sum(_weight_layers(m) for m in model.modules())
    d = sum(p.numel() for p in model.parameters()
            if p.requires_grad and field_covers(p, field_on))
    counted = layers if p_count == "weight-layers" else max(0, layers - 1)
    return {"p": max(3, counted), "num_spins": math.sqrt(d / max(1, counted)),
            "layers": layers}


def field_strength(i: int | Tensor, *, n: float, num_spins: float, tau0: float) -> float | Tensor:
    """(1 + 2τ_i/N)^{1/2} with τ_i = n (e^{−i/τ₀} − 1/2) (thesis Algorithm 1)."""
    if isinstance(i, Tensor):
        tau = n * (torch.exp(-i / tau0) - 0.5)
        return (1 + 2 * tau / num_spins).clamp_min(0).sqrt()
    tau = n * (math.exp(-i / tau0) - 0.5)
    return math.sqrt(max(0.0, 1 + 2 * tau / num_spins))


_REAL_FIELD = "its random field is drawn on real coordinates"
# what the field and its strength s_i are made of, saved with the state: one loaded into an
# optimizer built with others stepped the saved field at the builder's strength, or redrew
# it at the builder's scale, without a word (a state saved before it held them loads)
_FIELD_SETTINGS = ("coupling", "p", "tau0", "n", "num_spins")


class TrivializedSGD(PicklesWhole, Optimizer):
    """Base optimizer (any registered name: ``sgd`` with momentum/Nesterov, ``adam``, ...) on the
    gradient plus the annealed fixed field (thesis Algorithm 1).

    Args:
        params: parameters.
        base: registered optimizer name of the base (default ``"sgd"``).
        coupling: J, the scale of the spin-glass couplings (> 0); the field is
            h = J√(p(p−2)) ξ. In gradient units: ‖h‖ ≈ J√(p(p−2) d).
        p: spin-glass order (> 2); default from ``model`` (:func:`trivialization_heuristics`).
        p_count: what the default p counts, ``"weight-layers"`` (default) or
            ``"hidden-layers"`` (one fewer; module docstring).
        num_spins: N; default (d / p)^{1/2} from ``model`` (thesis §2.4.2), else d; d the
            coordinates the field covers (all parameters', or the weight tensors').
        n: annealing range, 0 < n <= N (default N, as in Algorithm 1).
        tau0: annealing time constant τ₀ in optimizer steps (> 0).
        resample: draw a fresh ξ every step (the "resampled annealed noise" control).
        field_on: the coordinates h covers: ``"all"`` trainable parameters (default) or
            ``"weights"``, the tensors of two or more dimensions (Linear, Conv, Embedding and
            recurrent weight matrices: biases, batch-norm scales and shifts and any other 1-D
            or scalar parameter get none; a LayerNorm over several dimensions would get h on
            its scale). The same draws either way: the weights' coordinates of h are those
            of ``"all"``.
        seed: seed of the field's generator (default ``torch.initial_seed()``).
        model, loss_fn, data: passed by ``build_optimizer_for`` (only ``model`` is used, for the
            heuristics).
        **base_hyper: the base optimizer's hyper-parameters (``lr``, ``momentum``, ...).
    """

    needs_model = True
    resample_default = False

    def __init__(self, params, base: str = "sgd", *, coupling: float = 1e-3,
                 p: int | None = None, p_count: str = "weight-layers",
                 num_spins: int | None = None, n: float | None = None, tau0: float = 1000.0,
                 resample: bool | None = None, seed: int | None = None,
                 field_on: str = "all",
                 model: nn.Module | None = None, loss_fn: Any = None, data: Any = None,
                 **base_hyper: Any):
        check_plain_optimizer("base", base, exclude=("trivialized", "annealed-noise"))
        _check_field_on(field_on)
        self.field_on = field_on
        if not 0 < coupling < math.inf:
            raise ValueError(f"Invalid coupling J: {coupling} (must be finite > 0)")
        if not tau0 > 0:
            raise ValueError(f"Invalid tau0: {tau0} (steps, must be > 0)")
        _check_p_count(p_count)        # here too: the heuristics run only with a model
        self.base = build_optimizer(base, params, **base_hyper)
        super().__init__(self.base.param_groups, self.base.defaults)
        self._link()

        heur = (trivialization_heuristics(model, p_count=p_count, field_on=field_on)
                if model is not None else {})
        d = sum(q.numel() for g in self.param_groups for q in g["params"])
        # §2.4.2's "# weights" of N: the coordinates the field covers
        covered = sum(q.numel() for g in self.param_groups for q in g["params"]
                      if field_covers(q, field_on))
        p = p if p is not None else heur.get("p")
        if p is None:
            raise ValueError("Invalid p: None (give p, the spin-glass order, or model= for the "
                             "heuristic, as build_optimizer_for(name, model) does)")
        if not p > 2:
            raise ValueError(f"Invalid p: {p} (spin-glass order, must be > 2)")
        if num_spins is None:
            num_spins = heur.get("num_spins", covered)
        if not num_spins > 0:
            raise ValueError(f"Invalid num_spins N: {num_spins} (must be > 0)")
        n = num_spins if n is None else n
        if not 0 < n <= num_spins:
            raise ValueError(f"Invalid n: {n} (must satisfy 0 < n <= N = {num_spins})")
        self.base_name = base
        self.p, self.num_spins, self.n = float(p), float(num_spins), float(n)
        self.coupling, self.tau0 = float(coupling), float(tau0)
        self.resample = self.resample_default if resample is None else bool(resample)
        self.field_scale = self.coupling * math.sqrt(self.p * (self.p - 2))
        self.generator = seeded_generator(seed)
        self._given_seed = None if seed is None else int(seed)
        self._dim = d
        self._device = next((q.device for g in self.param_groups for q in g["params"]), None)
        # built once (grown by add_param_group), not on each draw of a resampled field
        self._mask = (self._weights_mask(self.param_groups) if field_on == "weights"
                      else None)
        self._i = 0
        self.field = self._draw_field()
        self._last: tuple[float, Tensor] | None = None     # (s_i, h) of the latest step

    def _draw_field(self, n: int | None = None) -> Tensor:
        """h = J√(p(p−2)) ξ, ξ ~ N(0, I_n) (n: all d coordinates, flat in parameter-group
        order): drawn in float64 on the CPU generator (the same numbers on any device and
        dtype) and kept, in float64, on the parameters' device (one copy at the draw, not one
        per step)."""
        xi = standard_normal((self._dim if n is None else n,), generator=self.generator,
                             dtype=torch.float64, device=self._device)
        if self._mask is not None:     # zero h where no weight tensor lies
            xi = xi * (self._mask if n is None else self._mask[-n:])
        return self.field_scale * xi

    def _weights_mask(self, groups: list[dict[str, Any]]) -> Tensor:
        """True on the coordinates of the weight tensors (flat in ``groups``' order)."""
        return torch.cat([torch.full((q.numel(),), field_covers(q, "weights"),
                                     device=self._device)
                          for g in groups for q in g["params"]])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer; the fixed field grows by fresh draws for its
        coordinates (a resampled field is drawn over all of them from the next step)."""
        if "field" not in self.__dict__:      # Optimizer.__init__ adding the base's groups
            super().add_param_group(param_group)
            check_real_parameters(self, _REAL_FIELD)
            return
        refuse_optimizer_level_keys(self, param_group)
        self.base.add_param_group(param_group)
        self._link()
        check_real_parameters(self, _REAL_FIELD)
        n = sum(q.numel() for q in self.param_groups[-1]["params"])
        if self._mask is not None:
            self._mask = torch.cat([self._mask, self._weights_mask(self.param_groups[-1:])])
        if not self.resample:
            self.field = torch.cat([self.field, self._draw_field(n)])
        self._dim += n

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
        try:
            a = 0
            for g in self.param_groups:
                for q in g["params"]:
                    b = a + q.numel()
                    if q.grad is not None:
                        if q.grad.is_sparse:     # nn.Embedding(sparse=True): plus a dense field
                            saved.append((q, q.grad))
                            q.grad = q.grad.to_dense()
                        else:
                            saved.append((q, q.grad.clone()))
                        q.grad.add_(h[a:b].view_as(q).to(device=q.device, dtype=q.dtype),
                                    alpha=s)
                    a = b
            self.base.step()
        finally:                         # a base step that raises leaves the true gradients too
            for q, grad in saved:
                if grad.is_sparse or q.grad is None:
                    q.grad = grad
                else:
                    q.grad.copy_(grad)
        self._i += 1
        self._last = (s, h)
        self._link()              # a base that swaps its groups (``switch``) is followed
        return loss

    def last_perturbation(self) -> tuple[float, Tensor] | None:
        """(s_i, h) of the latest step: s_i h (float64, flat in parameter-group order) was
        added to the gradients the base optimizer stepped with; h is the fixed field, or the
        draw of that step when resampling. None before the first step, and after a resume
        when resampling (a draw is not saved; a fixed field is)."""
        if self._last is None and not self.resample and self._i > 0:
            return self.strength(self._i - 1), self.field
        return self._last

    def _link(self) -> None:
        self.param_groups, self.state = self.base.param_groups, self.base.state
        self.defaults = self.base.defaults

    def settings(self) -> dict[str, Any]:
        """The field's settings and its generator's seed, with the base's own settings (its
        groups are this optimizer's): :mod:`sgdlab.optim.settings`. A loaded state keeps the
        saved field and generator."""
        return {"base": self.base_name, "p": self.p, "num_spins": self.num_spins, "n": self.n,
                "coupling": self.coupling, "tau0": self.tau0, "resample": self.resample,
                "field_on": self.field_on, "seed": self._given_seed,
                **inner_settings("base", self.base, groups=False)}

    @runs_state_dict_hooks
    def state_dict(self) -> dict[str, Any]:
        sd = self.base.state_dict()
        sd["trivialized"] = {"base": self.base_name, "i": self._i, "field": self.field.clone(),
                             "generator": self.generator.get_state(), "field_on": self.field_on,
                             "resample": self.resample,
                             **{name: getattr(self, name) for name in _FIELD_SETTINGS}}
        return sd

    @runs_state_dict_hooks
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict, extra = split_own_state(state_dict, "trivialized", "TrivializedSGD",
                                            base=self.base_name)
        # a field of the other coverage would put h where this optimizer has none, or the
        # reverse; a state saved without field_on is read off its field (a draw over every
        # parameter is not 0 off the weights, almost surely)
        saved_on = extra.get("field_on")
        if saved_on is None:
            off = ~self._weights_mask(self.param_groups)
            field = extra["field"].to(off.device)
            saved_on = (self.field_on if field.numel() != off.numel() or not bool(off.any())
                        else "all" if bool(field[off].ne(0).any()) else "weights")
        if saved_on != self.field_on:
            raise ValueError(f"state_dict is for field_on {saved_on!r}, not {self.field_on!r}")
        # annealed-noise's state (a field redrawn every step) loaded into trivialized, or the
        # reverse, was taken without a word; a state saved before the entry held it is not told
        saved_resample = extra.get("resample")
        if saved_resample is not None and bool(saved_resample) != self.resample:
            raise ValueError(f"state_dict is for resample {bool(saved_resample)}, not "
                             f"{self.resample} (a field redrawn every step is annealed-noise's "
                             "rule, a fixed one trivialized's)")
        for name in _FIELD_SETTINGS:
            saved, built = extra.get(name), getattr(self, name)
            if saved is not None and float(saved) != built:
                raise ValueError(f"state_dict is for {name} {float(saved)!r}, not {built!r} "
                                 "(the field's settings are the state's: build the optimizer "
                                 "with the saved ones)")
        self.base.load_state_dict(state_dict)
        self._link()
        self._i = int(extra["i"])
        self.field = extra["field"].to(device=self._device, dtype=torch.float64).clone()
        self.generator.set_state(extra["generator"])


class AnnealedNoiseSGD(TrivializedSGD):
    """The Table 2.1 control: the same annealed strength, but ξ redrawn every step."""

    resample_default = True


register_optimizer("trivialized")(TrivializedSGD)
register_optimizer("annealed-noise")(AnnealedNoiseSGD)
