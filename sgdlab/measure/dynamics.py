"""Per-step dynamics of a training run (Xing et al. 2018, "A Walk with SGD", Fig. 1 and §4).

Plain functions of flat vectors or of (model, loss_fn, data):

- :func:`gradient_cosine` — cos ∠(g_t, g_{t+1}) of two consecutive mini-batch gradients; it is
  ≈ −1 when full-batch GD bounces between the walls of a valley (lr near 2/λ_max) and much
  less negative under SGD (Xing et al. Fig. 1);
- :func:`distance_from_init` ‖θ_t − θ_0‖₂, :func:`parameter_norm` ‖θ_t‖₂, :func:`update_norm`
  ‖θ_{t+1} − θ_t‖₂ (Euclidean norms of the flat trainable-parameter vector);
- :func:`full_batch_grad_norm` ‖∇L(θ)‖₂ of the mean loss over ``data``;
- :func:`hessian_spectral_norm` ‖∇²L(θ)‖₂ = max_i |λ_i| by Lanczos (``sgdlab.measure.curvature``)
  with batch norm in eval mode (running statistics) or train mode (batch statistics: the Hessian
  then includes the dependence of the statistics on θ; Xing et al. note the two differ);
- :func:`hessian_largest_eigenvalue` λ_max, the algebraically largest eigenvalue, likewise.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sgdlab.errors import checked_keywords
from sgdlab.operators.batches import Data
from sgdlab.operators.params import params_vector
from sgdlab.operators.per_sample import full_gradient

from .curvature import hessian_eigenpairs
from .walk import evaluation_mode

__all__ = [
    "distance_from_init",
    "full_batch_grad_norm",
    "gradient_cosine",
    "hessian_largest_eigenvalue",
    "hessian_spectral_norm",
    "parameter_norm",
    "update_norm",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


def _flat(v: Tensor | nn.Module) -> Tensor:
    return params_vector(v) if isinstance(v, nn.Module) else v.detach().reshape(-1)


@checked_keywords()
def gradient_cosine(g_prev: Tensor, g_next: Tensor, *, eps: float = 1e-30) -> float:
    """cos ∠(g_prev, g_next) = ⟨g_prev, g_next⟩ / (‖g_prev‖ ‖g_next‖), in float64.

    Returns NaN when either gradient is (numerically) zero, where the angle is undefined.
    """
    a, b = g_prev.detach().reshape(-1).double(), g_next.detach().reshape(-1).double()
    if a.shape != b.shape:
        raise ValueError(f"gradients have different sizes: {a.numel()} and {b.numel()}")
    den = float(torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b))
    if den <= eps:
        return float("nan")
    return float(torch.dot(a, b)) / den


@checked_keywords()
def distance_from_init(theta: Tensor | nn.Module, theta0: Tensor) -> float:
    """‖θ − θ_0‖₂ over the trainable parameters (flat vectors, or a model for θ)."""
    t = _flat(theta)
    if t.shape != theta0.shape:
        raise ValueError(f"theta has {t.numel()} entries, theta0 has {theta0.numel()}")
    return float(torch.linalg.vector_norm((t - theta0.to(t)).double()))


@checked_keywords()
def parameter_norm(theta: Tensor | nn.Module) -> float:
    """‖θ‖₂ of the flat trainable parameters."""
    return float(torch.linalg.vector_norm(_flat(theta).double()))


@checked_keywords()
def update_norm(theta_before: Tensor, theta_after: Tensor | nn.Module) -> float:
    """‖θ_{t+1} − θ_t‖₂ (the step actually taken, including momentum and weight decay)."""
    return distance_from_init(theta_after, theta_before)


@checked_keywords()
def full_batch_grad_norm(model: nn.Module, loss_fn: LossFn, data: Data, *,
                         bn_mode: str = "eval") -> float:
    """‖∇L(θ)‖₂ of the mean loss over all of ``data`` (batches weighted by size).

    Dropout off; batch norm per ``bn_mode`` (running statistics untouched either way). The
    loss's own gradient: gradient hooks on the model (``p.register_hook``, module backward
    hooks) are a training-time device and do not run
    (:func:`~sgdlab.operators.batches.loss_derivatives`), as in every measurement.
    """
    with torch.enable_grad(), evaluation_mode(model, bn_mode):
        g = full_gradient(model, loss_fn, data)
    return float(torch.linalg.vector_norm(g.double()))


@checked_keywords(hessian_eigenpairs, advice={
    k: "it is the largest |eigenvalue|; for others use hessian_eigenpairs(model, loss_fn, "
       "data, k, which)" for k in ("k", "which")})
def hessian_spectral_norm(model: nn.Module, loss_fn: LossFn, data: Data, *,
                          bn_mode: str = "eval", **lanczos_kw) -> float:
    """‖∇²L(θ)‖₂ = max_i |λ_i| of the Hessian of the mean loss over ``data``.

    Lanczos from ``sgdlab.measure.curvature`` with ``which="magnitude"`` (keywords such as
    ``tol``, ``num_iter``, ``generator`` are passed on). Dropout off; batch norm per ``bn_mode``:
    "eval" differentiates through the running statistics (constants), "train" through the
    statistics of each batch of ``data``; the model's running statistics are restored after.
    """
    return abs(_extreme_eigenvalue(model, loss_fn, data, "magnitude", bn_mode, lanczos_kw))


@checked_keywords(hessian_eigenpairs, advice={
    k: "it is the algebraically largest eigenvalue; for others use "
       "hessian_eigenpairs(model, loss_fn, data, k, which)" for k in ("k", "which")})
def hessian_largest_eigenvalue(model: nn.Module, loss_fn: LossFn, data: Data, *,
                               bn_mode: str = "eval", **lanczos_kw) -> float:
    """λ_max = max_i λ_i, the algebraically largest eigenvalue of the Hessian of the mean loss
    over ``data``: the other reading of Xing et al.'s "Max eigenvalue (spectral norm)" (Fig. 3,
    line 95), below the spectral norm where a negative eigenvalue is the larger in magnitude.
    Lanczos with ``which="largest"``; batch norm per ``bn_mode`` as in
    :func:`hessian_spectral_norm`."""
    return _extreme_eigenvalue(model, loss_fn, data, "largest", bn_mode, lanczos_kw)


# the two readings of Xing et al.'s "Max eigenvalue (spectral norm)" (Fig. 3), by the name a
# config gives them (the dynamics instrument's hessian_which, the hessian_top measure's which)
HESSIAN_WHICH = {"magnitude": hessian_spectral_norm, "largest": hessian_largest_eigenvalue}


def check_hessian_which(which: object, name: str = "hessian_which") -> str:
    """``which`` if it names a reading of :data:`HESSIAN_WHICH`, else a ``ValueError`` naming
    them: the one check of the option ``name`` (the dynamics instrument's and GLD's
    ``hessian_which``, the ``hessian_top`` measure's ``which``)."""
    # (a list from a config is unhashable: named here, not a TypeError from the lookup)
    if not isinstance(which, str) or which not in HESSIAN_WHICH:
        # (worded for one eigenvalue and for GLD's top k alike)
        raise ValueError(f"Invalid {name}={which!r}: expected "
                         f"{' or '.join(map(repr, HESSIAN_WHICH))} (Lanczos's which: the "
                         "Hessian's eigenvalues ranked by |λ| or by value)")
    return which


def _extreme_eigenvalue(model: nn.Module, loss_fn: LossFn, data: Data, which: str,
                        bn_mode: str, lanczos_kw: dict) -> float:
    """The Ritz value Lanczos selects by ``which`` ("magnitude": signed, largest |λ|;
    "largest": algebraic), batch norm in ``bn_mode``: the one path of both readings."""
    with torch.enable_grad(), evaluation_mode(model, bn_mode):
        vals, _ = hessian_eigenpairs(model, loss_fn, data, 1, which, **lanczos_kw)
    return float(vals[0])
