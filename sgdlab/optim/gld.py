"""Gradient descent with structured Gaussian noise (Zhu et al. 2019, "The Regularization Effects
of Anisotropic Noise in Stochastic Gradient Descent", arXiv, §4.2) and the isotropic-noise
control of Xing et al. (2018, §4).

Every optimizer here performs

    θ ← θ − η (g₀ + λ θ) + η ε,         ε ~ N(0, C_t) drawn fresh every step,

with momentum / Nesterov / weight decay exactly as ``torch.optim.SGD`` applies them to the
noisy direction g₀ + λθ − ε (the noise enters where SGD's mini-batch noise enters). g₀ is
whatever gradient is in ``p.grad`` (or what ``closure()`` computes): run the training loop with
``batch_size >= N`` for Zhu's full-batch GD + noise; with mini-batches it is SGD + extra noise.

C_t is built from *statistics* of the current parameters — the per-sample gradient covariance
Σ = (1/N) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ (population convention, :mod:`sgdlab.measure.noise`) and/or the
top-k Hessian eigenpairs of the mean loss — computed on ``data`` (the full training set) or on
a random subset of ``estimation_size`` examples redrawn at each refresh, and refreshed every
``refresh_every`` steps (Zhu et al. refresh the Hessian every few steps; between refreshes the
noise is still drawn fresh each step from the last statistics). The SGD noise being mimicked
has batch size m = ``noise_batch_size`` and covariance Σ/m (with-replacement mini-batches,
thesis eq. 6.4):

==================  ====================================  ===============================
name                C                                     E‖ε‖²
==================  ====================================  ===============================
``gd``              0                                     0
``gld-const``       σ² I                                  d σ²
``gld-dynamic``     (Tr Σ / (m d)) I                       Tr Σ / m   (= SGD's)
``gld-diagonal``    diag(Σ) / m                           Tr Σ / m
``gld-leading``     Σ̃_k / m (top-k eigenpairs of Σ)       Σ_{i≤k} λ_i(Σ) / m
``gld-hessian``     σ_H² H₊, H₊ = Σ_{i≤k}|λ_i| u_i u_iᵀ    σ_H² Tr H₊
``gld-sgd-like``    Σ / m (exact, through the factor)     Tr Σ / m
``gd-isotropic``    s · max_j Σ_jj(θ₀)/m · I (Xing §4)     d s max_j Σ_jj(θ₀)/m
==================  ====================================  ===============================

GLD Hessian (§4.2 item 6): H₊ reverses the sign of negative eigenvalues, so the top-k pairs are
the k largest |λ| (``hessian_which="magnitude"``, the default; ``"largest"`` takes the algebraic
top-k). σ_H² is either given (``sigma_h2``) or set at each refresh by ``sigma_h2_rule``:

- ``"top-k"`` (default): σ_H² = Tr Σ / (m Tr H₊) over the same top-k part whose eigenvectors
  carry the noise, which makes the expected norm exactly SGD's — the purpose §5.1 states;
- ``"paper"``: σ_H² = Tr Σ / (m Tr H), §5.1's formula as printed ("to guarantee that it has the
  same expected noise norm as that of SGD"), Tr H the full Hessian trace (Hutchinson,
  ``trace_probes`` probes); with the top-k truncation the injected norm σ_H² Tr H₊ is then
  Tr Σ/m · Tr H₊/Tr H, at most SGD's (the zhu-noisy-label entry uses it);
- ``"appendix"``: σ_H² = Tr H / (m Tr Σ), Suppl. C's printed coefficient √(Tr H / m Tr V) read
  with V = Σ (the inverse of the main text's ratio).

Its Tr Σ is that of the refresh's iterate (``sigma_h2_timing="refresh"``, default), or, with
``"step"``, of every step's (§5.1's "Tr(Σ(θ_t))" with H refreshed every few steps: one
per-sample-gradient pass a step, the Hessian traces kept from the last refresh).

Σ is estimated from per-sample gradients (``covariance_estimate="per-sample"``, default: the
exact population covariance over the estimation data; GLD dynamic, diagonal and σ_H²'s rules
read its trace or diagonal alone, taken without the (N, d) matrix of per-sample gradients,
:func:`~sgdlab.measure.noise.gradient_variance`) or, as Suppl. C does for GLD leading
("we first randomly divide the training set into 60 mini batches containing 20 examples, and
then use those minibatches to estimate covariance matrix"), from the gradients of a random
partition of the data into mini-batches of m (``"minibatches"``: their covariance estimates
Σ/m directly, rank < N/m). The partition is drawn afresh at every refresh
(``minibatch_partition="redrawn"``, default) or once, at the first, and kept
(``"fixed"``: Suppl. C's "we first randomly divide the training set", read as one division;
it is part of ``state_dict()``). What the batch gradients' covariance Cov(g_B) ≈ Σ/m stands
for is not said either: ``minibatch_scale="sigma"`` (default) takes m Cov(g_B) as the estimate
of Σ, so that the injected covariance is Cov(g_B) ≈ Σ/m as with per-sample gradients;
``"batch"`` takes Cov(g_B) itself as Σ (the paper calls Σ "the covariance matrix of the noisy
gradient", eq. (3)), which injects Cov(g_B)/m ≈ Σ/m², a noise std √m times smaller.
Sampling uses the factor /
low-rank representations (:mod:`sgdlab.optim.noise`, Gram trick: no d x d matrix);
``sampling="dense"`` builds the d x d covariance and samples through its square root instead
(the baseline of ``benchmarks/bench_gld.py``; small d only).

Reproducibility: one CPU ``torch.Generator`` (``seed``) drives noise draws, estimation subsets
and Lanczos start vectors; its state, the step count and the current statistics are part of
``state_dict()``, so a resumed run continues the same trajectory.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from sgdlab.errors import warn
from sgdlab.measure.curvature import hessian_eigenpairs, hutchinson_trace, lanczos
from sgdlab.measure.curvature.lanczos import check_tol
from sgdlab.measure.dynamics import check_hessian_which
from sgdlab.measure.noise import (GradientCovariance, GradientVariance, gradient_covariance,
                                  gradient_variance)
from sgdlab.models.modes import buffers_kept, eval_mode, has_batchnorm
from sgdlab.operators import HessianOperator
from sgdlab.operators.batches import concat_batches
from sgdlab.operators.params import reaching_parameters, trainable_named_params

from . import noise as N
from ._common import (PicklesWhole, check_real_parameters, closure_loss, dense,
                      is_whole, refuse_meta, runs_state_dict_hooks, seeded_generator)
from .registry import register_optimizer
from .settings import split_own_state

__all__ = [
    "StructuredNoiseGD", "GD", "GLDConst", "GLDDynamic", "GLDDiagonal", "GLDLeading",
    "GLDHessian", "GLDSGDLike", "IsotropicNoiseGD", "NOISE_KINDS", "SIGMA_H2_RULES",
    "max_gradient_variance",
]

NOISE_KINDS = ("none", "const", "dynamic", "diagonal", "leading", "hessian", "sgd-like",
               "isotropic-init")
SIGMA_H2_RULES = ("paper", "top-k", "appendix")
# Below this min(N, d) the Gram (or d x d) eigh is cheaper than Lanczos for the leading-k part.
_DENSE_EIG_MAX = 512
_NEEDS_SIGMA = ("dynamic", "diagonal", "leading", "sgd-like", "isotropic-init")


class StructuredNoiseGD(PicklesWhole, Optimizer):
    """GD + structured Gaussian noise; ``noise`` selects C (see the module table).

    Args:
        params: parameters (the model's trainable parameters, in any grouping, or some of
            them: the statistics cover the parameters given, as SGD's noise on them).
        lr: step size η (>= 0; at 0 nothing moves, as with ``torch.optim.SGD``).
        noise: one of :data:`NOISE_KINDS` (the registered subclasses fix it).
        model, loss_fn, data: the model, its mean-reduced loss and the estimation data (a
            ``Dataset`` — its training split is used —, a batch ``(x, y)`` or batches). Needed
            by every kind except ``none`` and ``const``.
        sigma: σ for ``const`` (noise std per coordinate, gradient units).
        noise_batch_size: m, the batch size of the SGD noise being mimicked (>= 1). Default 1
            for ``isotropic-init``; required by the Σ-based kinds.
        k: number of eigenpairs for ``leading`` / ``hessian``.
        sigma_h2: σ_H² for ``hessian``; if None it is set by ``sigma_h2_rule`` at each refresh.
        sigma_h2_rule: ``"top-k"`` (Tr Σ/(m Tr H₊), default), ``"paper"`` (Tr Σ/(m Tr H)) or
            ``"appendix"`` (Tr H/(m Tr Σ)); see the module docstring.
        trace_probes: Hutchinson probes for the full Tr H of the ``paper``/``appendix`` rules.
        sigma_h2_timing: ``"refresh"`` (default: σ_H² set with H, from Tr Σ at the refresh) or
            ``"step"`` (Tr Σ measured again at every step in between; module docstring).
        covariance_estimate: ``"per-sample"`` (default) or ``"minibatches"`` (module docstring).
        minibatch_partition: ``"redrawn"`` (default) or ``"fixed"``, the partition of
            ``"minibatches"`` (module docstring).
        minibatch_scale: ``"sigma"`` (default: m Cov(g_B) estimates Σ) or ``"batch"``
            (Cov(g_B) taken as Σ), the scale of ``"minibatches"`` (module docstring).
        variance_factor: s for ``isotropic-init`` (Xing et al.'s multiple of the largest
            per-coordinate gradient variance at the first step).
        refresh_every: f, recompute the statistics every f steps (>= 1). Statistics use the
            model's current mode, except that models with batch norm are switched to eval mode
            for the refresh (per-sample gradients would otherwise see batches of one).
        variance_bn: the batch-norm statistics of that eval-mode refresh: ``"running"`` (the
            model's running statistics as they stand, the default; at the first step still
            about (0, 1), so batch norm is then nearly the identity) or ``"data"`` (first
            recomputed on the estimation data in one train-mode pass, the statistics a
            full-batch forward pass normalises with; the model's buffers are restored after
            the refresh). No effect on models without batch norm.
        estimation_size: if set, statistics use a random subset of that many examples
            (without replacement, redrawn at each refresh) instead of all of ``data``.
        momentum, dampening, nesterov, weight_decay: as ``torch.optim.SGD`` (finite, >= 0).
        sampling: ``"factor"`` (Gram trick / low rank, default) or ``"dense"`` (d x d).
        hessian_which: ``"magnitude"`` (top-k |λ|, the H₊ of the paper; default) or
            ``"largest"`` (algebraic top-k).
        hessian_tol, hessian_iter: Lanczos relative residual tolerance and Krylov size.
        eig_solver: top-k eigenpairs of Σ for ``leading``: ``"dense"`` (eigh of the N x N Gram
            matrix, or of Σ when d < N), ``"lanczos"`` (Lanczos on the Σ operator, tolerance
            ``eig_tol``), ``"auto"`` (dense when min(N, d) <= 512, else Lanczos).
        chunk_size: per-sample-gradient chunk (memory bound).
        seed: seed of the optimizer's generator (default ``torch.initial_seed()``, so runs
            seeded differently draw different noise).
    """

    needs_model = True
    noise_kind: str | None = None
    required_args: tuple[str, ...] = ()

    def __init__(self, params, lr: float = 1e-2, *, noise: str | None = None,
                 model: nn.Module | None = None,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                 data: Any = None, sigma: float | None = None,
                 noise_batch_size: int | None = None, k: int | None = None,
                 sigma_h2: float | None = None, sigma_h2_rule: str = "top-k",
                 trace_probes: int = 20, sigma_h2_timing: str = "refresh",
                 covariance_estimate: str = "per-sample",
                 minibatch_partition: str = "redrawn", minibatch_scale: str = "sigma",
                 variance_factor: float | None = None,
                 refresh_every: int = 1, estimation_size: int | None = None,
                 variance_bn: str = "running", momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, sampling: str = "factor",
                 hessian_which: str = "magnitude", hessian_tol: float = 1e-3,
                 hessian_iter: int | None = None, eig_solver: str = "auto",
                 eig_tol: float = 1e-4, chunk_size: int | None = 256,
                 seed: int | None = None):
        kind = noise if noise is not None else self.noise_kind
        if kind is None:
            raise ValueError("Invalid noise=None: choose one of " + ", ".join(NOISE_KINDS))
        if self.noise_kind is not None and noise is not None and noise != self.noise_kind:
            raise ValueError(f"Invalid noise={noise!r} for {type(self).__name__} "
                             f"(fixed to {self.noise_kind!r})")
        if kind not in NOISE_KINDS:
            raise ValueError(f"Invalid noise={kind!r}; known: {', '.join(NOISE_KINDS)}")
        # first: built by build_optimizer over bare parameters, the missing model is the cause
        # of whichever hyper-parameter check would fail next
        if kind not in ("none", "const") and (model is None or loss_fn is None or data is None):
            # name what is missing: build_optimizer_for without loss_fn= or data= was told to
            # use build_optimizer_for
            missing = [k for k, v in (("model", model), ("loss_fn", loss_fn), ("data", data))
                       if v is None]
            raise ValueError(f"gld noise {kind!r} needs model=, loss_fn= and data= (missing: "
                             f"{', '.join(missing)}): build it with build_optimizer_for(name, "
                             "model, loss_fn=, data=, ...), data the estimation batch (x, y)")
        if not lr >= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        # finite: torch.optim.SGD lets nan/inf through, to NaN parameters a few steps later
        if not 0 <= momentum < math.inf:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0 <= dampening < math.inf:
            raise ValueError(f"Invalid dampening value: {dampening}")
        if not 0 <= weight_decay < math.inf:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if not is_whole(refresh_every) or refresh_every < 1:
            raise ValueError(f"Invalid refresh_every: {refresh_every} (an int >= 1)")
        if variance_bn not in ("running", "data"):
            raise ValueError(f"Invalid variance_bn: {variance_bn!r} (running | data)")
        if sampling not in ("factor", "dense"):
            raise ValueError(f"Invalid sampling: {sampling!r} (factor | dense)")
        check_hessian_which(hessian_which)
        if sigma_h2_rule not in SIGMA_H2_RULES:
            raise ValueError(f"Invalid sigma_h2_rule: {sigma_h2_rule!r} "
                             f"({' | '.join(SIGMA_H2_RULES)})")
        if sigma_h2_timing not in ("refresh", "step"):
            raise ValueError(f"Invalid sigma_h2_timing: {sigma_h2_timing!r} (refresh | step)")
        if sigma_h2_timing == "step" and (kind != "hessian" or sigma_h2 is not None
                                          or sampling == "dense"):
            raise ValueError("sigma_h2_timing='step' measures the Tr Σ of gld-hessian's "
                             "sigma_h2_rule at every step: it needs noise 'hessian', no fixed "
                             "sigma_h2 and sampling='factor'")
        if covariance_estimate not in ("per-sample", "minibatches"):
            raise ValueError(f"Invalid covariance_estimate: {covariance_estimate!r} "
                             "(per-sample | minibatches)")
        if minibatch_partition not in ("redrawn", "fixed"):
            raise ValueError(f"Invalid minibatch_partition: {minibatch_partition!r} "
                             "(redrawn | fixed)")
        if minibatch_scale not in ("sigma", "batch"):
            raise ValueError(f"Invalid minibatch_scale: {minibatch_scale!r} (sigma | batch)")
        if minibatch_scale != "sigma" and covariance_estimate != "minibatches":
            raise ValueError(f"minibatch_scale={minibatch_scale!r} is the scale of the "
                             "mini-batch estimate of Σ: it needs "
                             "covariance_estimate='minibatches'")
        if minibatch_partition == "fixed" and estimation_size is not None:
            raise ValueError("minibatch_partition='fixed' partitions the whole data once: it "
                             "takes no estimation_size (a subset redrawn at every refresh)")
        if not is_whole(trace_probes) or trace_probes < 1:
            raise ValueError(f"Invalid trace_probes: {trace_probes} (an int >= 1)")
        if eig_solver not in ("auto", "dense", "lanczos"):
            raise ValueError(f"Invalid eig_solver: {eig_solver!r} (auto | dense | lanczos)")
        # NaN and inf were taken (never converged / converged at once), a bool as 0 or 1
        eig_tol = check_tol(eig_tol, "eig_tol", "Lanczos' default min(d, 2k + 60)")
        hessian_tol = check_tol(hessian_tol, "hessian_tol", "hessian_iter")
        if kind == "const" and sigma is None:
            raise ValueError("gld-const requires sigma= (the noise std σ, >= 0)")
        if kind == "const" and not sigma >= 0:
            raise ValueError(f"Invalid sigma: {sigma} (gld-const needs sigma >= 0)")
        if kind == "isotropic-init":
            noise_batch_size = 1 if noise_batch_size is None else noise_batch_size
            if variance_factor is None:
                raise ValueError("gd-isotropic requires variance_factor= (its noise variance as "
                                 "a multiple of the largest per-coordinate gradient variance at "
                                 "the first step, > 0; Xing et al. use 0.1 and 0.05)")
            if not variance_factor > 0:
                raise ValueError(f"Invalid variance_factor: {variance_factor} (gd-isotropic's "
                                 "noise variance as a multiple of the largest per-coordinate "
                                 "gradient variance at the first step, > 0; Xing et al. use "
                                 "0.1 and 0.05)")
        if kind in _NEEDS_SIGMA or (kind == "hessian" and sigma_h2 is None):
            if not is_whole(noise_batch_size) or noise_batch_size < 1:
                raise ValueError(f"Invalid noise_batch_size: {noise_batch_size} (the SGD batch "
                                 f"size m whose noise gld {kind!r} mimics, an int >= 1)")
        if kind in ("leading", "hessian") and (not is_whole(k) or k < 1):
            raise ValueError(f"Invalid k: {k} (number of eigenpairs, an int >= 1)")
        if sigma_h2 is not None and not sigma_h2 >= 0:
            raise ValueError(f"Invalid sigma_h2: {sigma_h2} (must be >= 0)")
        if estimation_size is not None and (not is_whole(estimation_size) or estimation_size < 2):
            raise ValueError(f"Invalid estimation_size: {estimation_size} (an int >= 2)")
        if hessian_iter is not None and (not is_whole(hessian_iter) or hessian_iter < 1):
            raise ValueError(f"Invalid hessian_iter: {hessian_iter} (Lanczos' Krylov size, an "
                             "int >= 1, or None: its default)")
        # a config's whole floats (k: 2.0) are counts Lanczos and the subset draw take as ints
        # alone: 2.0 failed the first noise refresh, after the run was recorded
        k, hessian_iter, estimation_size = (int(v) if v is not None and is_whole(v) else v
                                            for v in (k, hessian_iter, estimation_size))
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=weight_decay)
        self.noise = kind                # read by add_param_group within Optimizer.__init__
        super().__init__(params, defaults)

        self.hyper = dict(sigma=sigma, noise_batch_size=noise_batch_size, k=k, sigma_h2=sigma_h2,
                          sigma_h2_rule=sigma_h2_rule, trace_probes=int(trace_probes),
                          sigma_h2_timing=sigma_h2_timing,
                          covariance_estimate=covariance_estimate,
                          minibatch_partition=minibatch_partition,
                          minibatch_scale=minibatch_scale,
                          variance_factor=variance_factor, refresh_every=int(refresh_every),
                          estimation_size=estimation_size, variance_bn=variance_bn,
                          sampling=sampling,
                          hessian_which=hessian_which, hessian_tol=hessian_tol,
                          hessian_iter=hessian_iter, eig_solver=eig_solver, eig_tol=eig_tol,
                          chunk_size=chunk_size, seed=seed)
        self.model, self.loss_fn = model, loss_fn
        self._x = self._y = None
        if kind not in ("none", "const"):
            if hasattr(data, "x_train"):          # a sgdlab Dataset: its training split
                data = data.train
            dev = next(iter(trainable_named_params(model).values())).device
            self._x, self._y = concat_batches(data, device=dev)
            if estimation_size is not None and estimation_size > len(self._x):
                raise ValueError(f"Invalid estimation_size: {estimation_size} > "
                                 f"{len(self._x)} examples in data")
        self._layout = self._build_layout(model)
        self.generator = seeded_generator(seed)
        self._t = 0
        self._stats: dict[str, Any] | None = None
        self._partition: Tensor | None = None   # minibatch_partition="fixed": drawn once

    # --- flat layout --------------------------------------------------------------------------
    def _build_layout(self, model: nn.Module | None) -> dict[int, tuple[int, int]]:
        """Slice of each parameter in the flat vector (the model's ``named_parameters`` order,
        the order of every statistic in sgdlab). Only the optimizer's parameters have one: the
        model's other trainable parameters, which it does not move, are outside the statistics
        (as SGD's noise on the parameters it trains is that of their gradients alone)."""
        group_params = [p for g in self.param_groups for p in g["params"]]
        held = {id(p) for p in group_params}
        order = [p for p in trainable_named_params(model).values() if id(p) in held] \
            if model is not None else group_params
        self._layout, self._dim = {}, 0
        self._lay_out(order, check=False)
        self._lay_out(group_params, check=model is not None)
        return self._layout

    def _lay_out(self, params, *, check: bool) -> None:
        """Give each trainable parameter of ``params`` not yet laid out the next slice of the
        flat vector; with ``check`` (the layout is the model's), such a parameter is an error.
        Frozen parameters (``requires_grad=False``) get no slice: they take no noise, and, as
        in torch.optim.SGD, a step only where they still hold a ``.grad`` (:meth:`step` lays
        the vector out again when the trainable set changes)."""
        new = [p for p in params if p.requires_grad and id(p) not in self._layout]
        if check:
            ours = {id(q) for q in trainable_named_params(self.model).values()}
            if any(id(p) not in ours for p in new):
                raise ValueError("the optimizer's parameters must be trainable parameters of "
                                 f"model ({sum(id(p) not in ours for p in new)} are not)")
        for p in new:
            self._layout[id(p)] = (self._dim, self._dim + p.numel())
            self._dim += p.numel()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if self.noise != "none":
            check_real_parameters(self, "its noise and the statistics it is shaped by are real")
        if "_layout" not in self.__dict__:     # Optimizer.__init__: laid out by _build_layout
            return
        try:
            self._lay_out(self.param_groups[-1]["params"], check=self.model is not None)
        except ValueError:
            self.param_groups.pop()
            raise
        if self.model is None:
            self._stats = None        # the flat vector grew: recompute (const's dense square root)
        else:                         # in the model's order, and statistics that cover the group
            self._relayout()

    @property
    def dim(self) -> int:
        return self._dim

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # the layout is keyed by id(): carried as the slices in param_groups order
        state["_layout"] = [self._layout.get(id(p)) for p in self._layout_params()]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_layout" in state:     # a copy's (torch's load_state_dict passes groups and state)
            self._layout = {id(p): s for p, s in zip(self._layout_params(), self._layout)
                            if s is not None}

    @contextmanager
    def _full_precision(self) -> Iterator[None]:
        """torch.autocast off on the parameters' device: the statistics' passes and the
        noise's products in the parameters' dtype, also when ``step`` is called inside an
        autocast region (in bfloat16, gld-hessian's Lanczos failed on mixed dtypes and the
        other statistics were kept in bfloat16, 1e-3 to 1e-2 off)."""
        device = next(iter(self._layout_params())).device
        with torch.autocast(device.type, enabled=False):
            yield

    def settings(self) -> dict[str, Any]:
        """Its noise and the settings of its statistics, with its generator's seed
        (:mod:`sgdlab.optim.settings`): they are no keys of the parameter groups, and a
        loaded state keeps the saved statistics and generator. ``chunk_size`` is left out: it
        bounds the memory of a refresh, not what it computes."""
        return {"noise": self.noise,
                **{k: v for k, v in self.hyper.items() if k != "chunk_size"}}

    # --- statistics --------------------------------------------------------------------------
    def _estimation_data(self) -> tuple[Tensor, Tensor]:
        n = self.hyper["estimation_size"]
        if n is None:
            return self._x, self._y
        idx = torch.randperm(len(self._x), generator=self.generator)[:n].to(self._x.device)
        return self._x[idx], self._y[idx]

    def _covariance(self, est, *, diagonal_only: bool = False
                    ) -> GradientCovariance | GradientVariance:
        """Σ over ``est``: exact from per-sample gradients, or (``minibatches``) m times the
        covariance of the gradients of a random partition into mini-batches of m (Suppl. C;
        the covariance itself with ``minibatch_scale="batch"``). ``diagonal_only``: the caller
        reads ``trace()`` and ``diagonal()`` alone, which per-sample estimates then take
        without the (N, d) matrix (:func:`~sgdlab.measure.noise.gradient_variance`), except
        for ``sampling="dense"``, the d x d baseline, kept as it was."""
        h = self.hyper
        if h["covariance_estimate"] == "per-sample":
            if diagonal_only and h["sampling"] != "dense":
                return gradient_variance(self.model, self.loss_fn, est,
                                         chunk_size=h["chunk_size"])
            return gradient_covariance(self.model, self.loss_fn, est,
                                       chunk_size=h["chunk_size"])
        x, y = est
        m = self.hyper["noise_batch_size"]
        nb = len(x) // m
        if nb < 2:
            raise ValueError(f"covariance_estimate='minibatches' needs at least 2 batches of "
                             f"{m}; the estimation data have {len(x)} examples")
        fixed = self.hyper["minibatch_partition"] == "fixed"
        perm = self._partition if fixed else None
        if perm is None:
            perm = torch.randperm(len(x), generator=self.generator)[: nb * m]
            if fixed:
                self._partition = perm
        perm = perm.to(x.device)
        params = list(trainable_named_params(self.model).values())
        grads = []
        for b in perm.view(nb, m):
            # a trainable parameter outside the loss has a zero gradient (as per-sample ones)
            loss = reaching_parameters(self.loss_fn(self.model(x[b]), y[b]))
            g = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
            # nn.Embedding(sparse=True) gives a sparse gradient, which has no reshape
            grads.append(torch.cat([dense(t).reshape(-1) for t in g]).detach())
        g = torch.stack(grads)
        mean = g.mean(0)
        # factor of Cov(g_B) = Σ/m, times √m so that the shared code's "/ m" gives Σ/m back
        # ("batch": Cov(g_B) read as Σ, and the "/ m" then gives Σ/m²)
        scale = m if self.hyper["minibatch_scale"] == "sigma" else 1
        return GradientCovariance((g - mean) * math.sqrt(scale / nb), mean, nb)

    def refresh_statistics(self) -> dict[str, Any]:
        """Recompute the statistics at the current parameters (called every ``refresh_every``
        steps by :meth:`step`; public so experiments can refresh on demand)."""
        with self._full_precision():
            return self._refresh_statistics()

    def _refresh_statistics(self, sigma_h2_only: bool = False) -> dict[str, Any]:
        kind, h = self.noise, self.hyper
        if self.model is not None:
            # the statistics cover the model's trainable parameters as they are now (a layer
            # frozen since the last refresh has no coordinates): lay the flat vector out again
            self._build_layout(self.model)
        m = h["noise_batch_size"]
        dense = h["sampling"] == "dense"
        stats: dict[str, Any] = {}
        if kind in ("none", "const"):
            if kind == "const":
                stats["sigma2"] = float(h["sigma"]) ** 2
                if dense:
                    stats = {"sqrt": N.psd_sqrt(self._dense_covariance(stats, None))}
            self._stats = stats
            return stats
        est = self._estimation_data()
        # batch norm in train mode would see batches of one in the per-sample gradients:
        # such models are measured in eval mode (running statistics, or ``variance_bn="data"``
        # the estimation data's), then restored
        bn = has_batchnorm(self.model)
        on_data = bn and h["variance_bn"] == "data"
        # the model's own statistics back afterwards, even after an error
        with buffers_kept(self.model) if on_data else nullcontext():
            if on_data:
                from sgdlab.measure.batch_norm import recompute_bn_statistics

                recompute_bn_statistics(self.model, est)     # one batch: the data's statistics
            with eval_mode(self.model, bn), self._held_only():
                if sigma_h2_only:       # H and its traces kept, Tr Σ of this step's iterate
                    with torch.enable_grad():
                        cov = self._covariance(est, diagonal_only=True)
                    stats = {**self._stats, "sigma_h2": self._sigma_h2(
                        self._stats["trace_hk"], self._stats["trace_h"], cov, m)}
                else:
                    stats = self._refresh_from(est, kind, h, m, dense)
        self._stats = stats
        return stats

    @contextmanager
    def _held_only(self) -> Iterator[None]:
        """The model's trainable parameters that the optimizer does not hold frozen while the
        statistics are measured: they cover the optimizer's coordinates alone."""
        others = [p for p in trainable_named_params(self.model).values()
                  if id(p) not in self._layout]
        try:
            for p in others:
                p.requires_grad_(False)
            yield
        finally:
            for p in others:
                p.requires_grad_(True)

    def _refresh_from(self, est, kind: str, h: dict[str, Any], m: int | None,
                      dense: bool) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        if kind == "isotropic-init":
            with torch.enable_grad():
                var = max_gradient_variance(self.model, self.loss_fn, est,
                                            chunk_size=h["chunk_size"])
            stats["sigma2"] = float(h["variance_factor"]) * var / m
            if dense:
                stats = {"sqrt": N.psd_sqrt(self._dense_covariance(stats, None))}
            return stats
        with torch.enable_grad():
            # dynamic, diagonal and σ_H² read Tr Σ or diag Σ alone
            cov = (self._covariance(est, diagonal_only=kind in ("dynamic", "diagonal", "hessian"))
                   if kind != "hessian" or h["sigma_h2"] is None else None)
            trace_h = None
            if kind == "hessian":
                vals, vecs = hessian_eigenpairs(
                    self.model, self.loss_fn, est, h["k"], which=h["hessian_which"],
                    tol=h["hessian_tol"], num_iter=h["hessian_iter"], generator=self.generator)
                if h["sigma_h2"] is None and h["sigma_h2_rule"] in ("paper", "appendix"):
                    trace_h = hutchinson_trace(HessianOperator(self.model, self.loss_fn, est),
                                               h["trace_probes"], generator=self.generator).value
        if kind == "dynamic":
            stats["sigma2"] = cov.trace() / (m * self._dim)
        elif kind == "diagonal":
            stats["var"] = cov.diagonal() / m
        elif kind == "leading":
            if dense:   # no Gram trick: eigen-decompose the d x d covariance
                evals, evecs = torch.linalg.eigh(cov.dense())
                vals, vecs = evals.flip(0)[: h["k"]], evecs.flip(1)[:, : h["k"]]
            elif h["eig_solver"] == "dense" or (h["eig_solver"] == "auto" and min(
                    cov.num_samples, cov.dim) <= _DENSE_EIG_MAX):   # shape of F, not F itself
                vals, vecs = cov.eigenpairs(h["k"], generator=self.generator)   # Gram eigh
            else:       # top-k only: Lanczos on Σ = Fᵀ F, 2 N d flops per product
                vals, vecs = lanczos(cov.operator(), h["k"], tol=h["eig_tol"],
                                     generator=self.generator)
            stats["eigvals"], stats["eigvecs"] = vals.clamp_min(0) / m, vecs
        elif kind == "sgd-like":
            stats["factor"], stats["scale"] = cov.factor, 1.0 / m
        elif kind == "hessian":
            stats["eigvals"], stats["eigvecs"] = vals, vecs
            stats["trace_hk"], stats["trace_h"] = float(vals.abs().sum()), trace_h
            stats["sigma_h2"] = self._sigma_h2(stats["trace_hk"], trace_h, cov, m)
        if dense:
            stats = {"sqrt": N.psd_sqrt(self._dense_covariance(stats, cov))}
        return stats

    def _sigma_h2(self, trace_hk: float, trace_h: float | None,
                  cov: GradientCovariance | GradientVariance | None, m: int | None) -> float:
        """σ_H² by ``sigma_h2`` or ``sigma_h2_rule`` (module docstring); 0 where the trace it
        divides by is not positive (no Hessian-shaped noise to scale)."""
        h = self.hyper
        if h["sigma_h2"] is not None:
            return float(h["sigma_h2"])
        rule, tr_sigma = h["sigma_h2_rule"], float(cov.trace())
        if rule == "appendix":      # Tr H / (m Tr Σ): Tr H ≤ 0 leaves no noise either
            if tr_sigma > 0 and trace_h > 0:
                return float(trace_h) / (m * tr_sigma)
            trace, what = trace_h, "multiplies by the Hessian trace Tr H"
        else:
            trace = trace_h if rule == "paper" else trace_hk
            if trace > 0:
                return float(N.hessian_noise_variance(tr_sigma, trace, m))
            what = f"divides by {'the Hessian trace Tr H' if rule == 'paper' else 'Tr H₊'}"
        if tr_sigma > 0 and not getattr(self, "_warned_no_noise", False):
            # SGD has noise here but the rule's trace is not positive: no noise would be
            # injected, and the run would be plain GD without a word
            self._warned_no_noise = True
            warn(
                f"gld-hessian: sigma_h2_rule={rule!r} {what} = {trace:.3g}, "
                "not positive, so sigma_h2 is 0 and no noise is injected (plain GD) at this "
                "refresh; the 'top-k' rule divides by the top-k |λ|, or give sigma_h2",
                RuntimeWarning)
        return 0.0

    def _dense_covariance(self, stats: dict[str, Any], cov: GradientCovariance | None) -> Tensor:
        if "sigma2" in stats:
            p = next(iter(self._layout_params()))
            return stats["sigma2"] * torch.eye(self._dim, dtype=p.dtype, device=p.device)
        if "var" in stats:
            return torch.diag(stats["var"])
        if "factor" in stats:
            return cov.dense() * stats["scale"]
        lam = stats["eigvals"].abs() * stats.get("sigma_h2", 1.0)
        v = stats["eigvecs"]
        return (v * lam) @ v.T

    def covariance(self) -> Tensor:
        """The dense d x d covariance C of the noise the current statistics inject (tests and
        small models only)."""
        if self._stats is None:
            self.refresh_statistics()
        s = self._stats
        if "sqrt" in s:
            return s["sqrt"] @ s["sqrt"].T
        if self.noise == "none":
            p = next(iter(self._layout_params()))
            return torch.zeros(self._dim, self._dim, dtype=p.dtype, device=p.device)
        if "factor" in s:
            return s["factor"].T @ s["factor"] * s["scale"]
        return self._dense_covariance(s, None)

    def sample_noise(self, sample_shape: tuple[int, ...] = ()) -> Tensor | None:
        """Draw ε ~ N(0, C) from the current statistics (shape ``sample_shape + (d,)``)."""
        with self._full_precision():
            return self._sample_noise(sample_shape)

    def _sample_noise(self, sample_shape: tuple[int, ...]) -> Tensor | None:
        s, g = self._stats, self.generator
        if s is None or self.noise == "none":
            return None
        if "sqrt" in s:
            return N.dense_noise(s["sqrt"], sample_shape=sample_shape, generator=g)
        if "sigma2" in s:
            p = next(iter(self._layout_params()))
            return N.isotropic_noise(self._dim, math.sqrt(s["sigma2"]), sample_shape=sample_shape,
                                     generator=g, dtype=p.dtype, device=p.device)
        if "var" in s:
            return N.diagonal_noise(s["var"], sample_shape=sample_shape, generator=g)
        if "factor" in s:
            return N.factor_noise(s["factor"], scale=s["scale"], sample_shape=sample_shape,
                                  generator=g)
        if "sigma_h2" in s:
            return N.hessian_noise(s["eigvals"], s["eigvecs"], s["sigma_h2"],
                                   sample_shape=sample_shape, generator=g)
        return N.leading_noise(s["eigvals"], s["eigvecs"], sample_shape=sample_shape,
                               generator=g)

    def _layout_params(self):
        return (p for g in self.param_groups for p in g["params"])

    def _follow_trainable(self) -> None:
        """Lay the flat vector out again when parameters were frozen or unfrozen since it was
        laid out (a layer frozen mid-training, progressive unfreezing)."""
        trainable = {id(p) for p in self._layout_params() if p.requires_grad}
        if trainable != self._layout.keys():
            self._relayout()

    def _relayout(self) -> None:
        """Lay the flat vector out again; statistics other than a scalar variance have the old
        dimension and are made again."""
        self._build_layout(self.model)
        if self._stats is not None and set(self._stats) != {"sigma2"}:
            self._stats = None

    def _due(self) -> bool:
        if self._stats is None:
            return True
        if self.noise == "isotropic-init":       # Xing: variance fixed at initialisation
            return False
        if self.hyper["sigma_h2_timing"] == "step" and "trace_hk" not in self._stats:
            return True     # a state saved before the Hessian traces were kept: none to reuse
        return self._t % self.hyper["refresh_every"] == 0

    # --- step --------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        # (is_meta first: a device object per parameter cost ~50 µs a step for 100 of them)
        refuse_meta(self, (p.device for g in self.param_groups for p in g["params"] if p.is_meta),
                    "the GLD family's step measures and draws its noise on the model's numbers")
        loss = closure_loss(closure)
        self._follow_trainable()
        if self.noise != "none" and self._due():
            self.refresh_statistics()
        elif self.hyper["sigma_h2_timing"] == "step":
            with self._full_precision():
                self._refresh_statistics(sigma_h2_only=True)
        eps = self.sample_noise()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            mom, damp, nest = group["momentum"], group["dampening"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                # a sparse gradient (nn.Embedding(sparse=True)) meets dense noise and decay
                d_p = dense(p.grad)
                if wd != 0:
                    d_p = d_p.add(p, alpha=wd)
                if eps is not None and id(p) in self._layout:   # frozen: a stale .grad, no noise
                    a, b = self._layout[id(p)]
                    d_p = d_p.sub(eps[a:b].view_as(p).to(p.dtype))
                if mom != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d_p.detach().clone()
                    else:
                        buf.mul_(mom).add_(d_p, alpha=1 - damp)
                    d_p = d_p.add(buf, alpha=mom) if nest else buf
                p.add_(d_p, alpha=-lr)
        self._t += 1
        return loss

    # --- state --------------------------------------------------------------------------------
    @runs_state_dict_hooks
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["gld"] = {"noise": self.noise, "t": self._t,
                     "generator": self.generator.get_state(),
                     "stats": None if self._stats is None else dict(self._stats),
                     "partition": self._partition}
        return sd

    @runs_state_dict_hooks
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict, extra = split_own_state(state_dict, "gld", "a GLD optimizer",
                                            noise=self.noise)
        super().load_state_dict(state_dict)
        self._t = int(extra["t"])
        self.generator.set_state(extra["generator"])
        self._partition = extra.get("partition")      # absent from states saved before it
        stats = extra["stats"]
        if stats is not None:
            dev = next(iter(self._layout_params())).device
            stats = {k: (v.to(dev) if isinstance(v, Tensor) else v) for k, v in stats.items()}
        self._stats = stats


def max_gradient_variance(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                          data: tuple[Tensor, Tensor], *, chunk_size: int | None = 256) -> float:
    """max_j Σ_jj: the largest per-coordinate variance of the per-example gradients over
    ``data`` (population convention) — Xing et al. (2018, §4)'s "maximum gradient variance of
    the model", which scales their isotropic noise: the diagonal of
    :func:`~sgdlab.measure.noise.gradient_covariance` (factored for linear, convolutional and
    eval-mode batch-norm layers, ``torch.func`` in ``chunk_size`` chunks otherwise)."""
    from sgdlab.measure.noise import gradient_covariance

    cov = gradient_covariance(model, loss_fn, data, chunk_size=chunk_size)
    return float(cov.diagonal().max())


def _variant(name: str, kind: str, doc: str,
             required: tuple[str, ...] = ()) -> type[StructuredNoiseGD]:
    # ``required_args``: keyword arguments the shared signature defaults to None that this
    # variant cannot do without (the config validator reports them missing, as for any
    # required argument)
    cls = type(name, (StructuredNoiseGD,), {"noise_kind": kind, "__doc__": doc,
                                             "__module__": __name__,
                                             "required_args": required})
    return cls


GD = register_optimizer("gd")(_variant(
    "GD", "none", "Plain (full-batch) gradient descent: no injected noise (Zhu et al. GD)."))
GLDConst = register_optimizer("gld-const")(_variant(
    "GLDConst", "const", "GLD const: ε ~ N(0, σ² I), σ fixed (``sigma``).", ("sigma",)))
GLDDynamic = register_optimizer("gld-dynamic")(_variant(
    "GLDDynamic", "dynamic",
    "GLD dynamic: ε ~ N(0, Tr Σ/(m d) I), so E‖ε‖² = Tr Σ / m equals SGD's noise norm.",
    ("noise_batch_size",)))
GLDDiagonal = register_optimizer("gld-diagonal")(_variant(
    "GLDDiagonal", "diagonal", "GLD diagonal: ε ~ N(0, diag Σ / m).", ("noise_batch_size",)))
GLDLeading = register_optimizer("gld-leading")(_variant(
    "GLDLeading", "leading", "GLD leading: ε ~ N(0, Σ̃_k / m), the top-k eigenpairs of Σ.",
    ("noise_batch_size", "k")))
GLDHessian = register_optimizer("gld-hessian")(_variant(
    "GLDHessian", "hessian",
    "GLD Hessian: ε ~ N(0, σ_H² H₊) over the top-k |λ| Hessian eigenpairs; σ_H² defaults to "
    "Tr Σ / (m Tr H₊), SGD's expected noise norm (Zhu et al. §5.1).", ("k",)))
GLDSGDLike = register_optimizer("gld-sgd-like")(_variant(
    "GLDSGDLike", "sgd-like",
    "GD + SGD-like Gaussian noise: ε ~ N(0, Σ / m) through the exact per-sample factor.",
    ("noise_batch_size",)))
IsotropicNoiseGD = register_optimizer("gd-isotropic")(_variant(
    "IsotropicNoiseGD", "isotropic-init",
    "Xing et al. §4 control: GD + isotropic noise of variance ``variance_factor`` (the paper: "
    "0.1 and 0.05) × the largest per-coordinate gradient variance max_j Σ_jj / m at the first "
    "step (then fixed; :func:`max_gradient_variance`). m = ``noise_batch_size`` = 1 (default) "
    "reads the paper's 'maximum gradient variance' as that of per-example gradients; m = 100 as "
    "that of the batch-100 gradients of its SGD baseline. With batch norm, ``variance_bn`` "
    "picks the statistics it is measured with: the fresh running ones (default) or the "
    "training data's, which the full-batch GD step normalises with.", ("variance_factor",)))
