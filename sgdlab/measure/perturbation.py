"""The two Trivialized-SGD measurements of Chaudhari's thesis §2.4.3 (Figs. 2.3b and 2.4).

Trivialized-SGD (:class:`sgdlab.optim.TrivializedSGD`, thesis Algorithm 1) steps with
∇f(x) + s_i h: the loss gradient plus an annealed field, h fixed (drawn once) or, for the
"resampled, annealed noise" control, redrawn every step. Both functions take the tensors
themselves, not a model: the instruments of :mod:`sgdlab.train.instruments.perturbation` hand
them the gradients and weights in the optimizer's parameter order, the order in which the field
is laid out flat.

- :func:`min_abs_coordinates` (Fig. 2.3b, "Minimum absolute value of the back-propagated
  gradient during training"): min_j |g_j + a_j| within each tensor, g a gradient and a what is
  added to it (s_i h: the gradient the optimizer steps with; none: the loss gradient alone).
  The minimum over all weights is the minimum of the tensors' minima. With ``nonzero`` only
  the coordinates where g itself is not exactly 0 count: a ReLU unit inactive on the whole
  mini-batch, or an input pixel that is 0 in all its images, gives its weights an exact 0 in
  the loss gradient, and then the minimum over all weights is 0 in every run.
- :func:`perturbation_alignment` (Fig. 2.4, "Alignment of the weights with the perturbation
  term (|hᵀσ|)"): |hᵀx|, or normalised, |hᵀx| / (‖h‖ ‖x‖), the |cosine| of the angle between
  the weights and the field's direction. The normalised value compares runs whose weights
  have different norms (weight decay, the field's own pull) and does not scale with the
  field's strength J√(p(p−2)); a direction independent of x gives |cos| ≈ √(2/(π d)).

All sums are in float64, whatever the tensors' dtype (the field is kept in float64); a
minimum of |g| alone is exact in g's own dtype.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from sgdlab.errors import checked_keywords
from sgdlab.operators.params import flatten

__all__ = ["min_abs_coordinates", "overall_minimum", "perturbation_alignment", "zero_fraction"]


def _flat_sizes(tensors: Sequence[Tensor], flat: Tensor, what: str) -> list[int]:
    sizes = [t.numel() for t in tensors]
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(f"{what} has shape {tuple(flat.shape)}: expected a flat vector of "
                         f"{sum(sizes)} entries, one per coordinate of the {len(sizes)} "
                         "tensors in order")
    return sizes


@checked_keywords()
def min_abs_coordinates(grads: Sequence[Tensor], added: Tensor | None = None, *,
                        nonzero: bool = False) -> Tensor:
    """min_j |g_kj + a_kj| for each tensor g_k of ``grads`` (float64, shape (len(grads),)).

    Args:
        grads: gradients (any shapes; empty tensors are refused: they have no minimum).
        added: None, or a flat vector with one entry per coordinate of ``grads`` in order
            (the field term s_i h the optimizer adds), added before the absolute value.
        nonzero: the minimum over the coordinates j with g_kj != 0 only (NaN for a tensor
            without any).
    """
    if not grads:
        raise ValueError("no gradients: the minimum |coordinate| of nothing is undefined")
    if any(g.numel() == 0 for g in grads):
        raise ValueError("an empty gradient tensor has no minimum |coordinate|")
    parts: Sequence[Tensor | None] = [None] * len(grads)
    if added is not None:
        parts = torch.split(added.detach().to(torch.float64),
                            _flat_sizes(grads, added, "added"))
    # tensor by tensor, not over one concatenation: a large new tensor costs its page faults
    mins = []
    for g, a in zip(grads, parts):
        g = g.detach().reshape(-1)
        if a is None:       # |g| and its minima are exact in the gradients' own dtype
            v = g.abs()
            if nonzero and v.is_floating_point():
                mins.append(_nonzero_minimum(v))
                continue
        else:               # a sum is rounded: float64
            v = (g.to(torch.float64) + a.to(g.device)).abs()
        mins.append((v.masked_fill_(g == 0, math.inf) if nonzero else v).min())
    minima = torch.stack([m.to(torch.float64) for m in mins]).cpu()
    return minima.masked_fill(~torch.isfinite(minima), math.nan)


# an integer view of each float width, for the bit-pattern minimum of _nonzero_minimum
_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _nonzero_minimum(v: Tensor) -> Tensor:
    """The minimum of the non-zero entries of ``v`` (flat, non-negative floats, overwritten;
    inf when all are 0, NaN when one is NaN), with no step that makes the host wait.

    Non-negative IEEE-754 numbers order as their bit patterns, so the minimum is taken on the
    integers: bits − 1 turns 0 into −1, which the mask of the sign bit turns into the largest
    pattern. Integer passes instead of a masked fill, which on the CPU costs ~20x a minimum
    over the same tensor (the instrument ``min_abs_grad`` takes this at every step)."""
    largest = v.max()                    # NaN when one entry is
    itype = _BITS[v.element_size()]
    top = torch.iinfo(itype).max
    low = v.view(itype).sub_(1).bitwise_and_(top).min()     # in place: v is spent
    m = (low + 1).view(v.dtype)          # all zeros overflow here: replaced by inf
    m = torch.where(low == top, torch.full_like(m, math.inf), m)
    return torch.where(largest.isnan(), largest, m)


@checked_keywords()
def overall_minimum(minima: Tensor) -> float:
    """The minimum over all tensors of :func:`min_abs_coordinates`' per-tensor minima, the
    tensors without a counted coordinate (NaN) left out; NaN when none has one."""
    kept = minima[~torch.isnan(minima)]
    return float(kept.min()) if kept.numel() else math.nan


@checked_keywords()
def zero_fraction(grads: Sequence[Tensor]) -> float:
    """The share of the coordinates of ``grads`` that are exactly 0."""
    zeros = int(torch.stack([(g.detach() == 0).sum() for g in grads]).sum())
    return zeros / sum(g.numel() for g in grads)


@checked_keywords()
def perturbation_alignment(weights: Sequence[Tensor], direction: Tensor, *,
                           normalise: bool = True) -> float:
    """|hᵀx| for the weights x (``weights`` flattened and concatenated in order) and the flat
    ``direction`` h; with ``normalise``, |hᵀx| / (‖h‖ ‖x‖) (NaN when either norm is 0)."""
    if not weights:
        raise ValueError("no weights to align with the perturbation")
    _flat_sizes(weights, direction, "direction")
    x = flatten(w.detach().to(torch.float64) for w in weights)
    h = direction.detach().to(x)
    dot_v = abs(float(torch.dot(x, h)))
    if not normalise:
        return dot_v
    denom = float(torch.linalg.vector_norm(x)) * float(torch.linalg.vector_norm(h))
    return dot_v / denom if denom > 0 else float("nan")
