"""Exact Hessians and full spectra of small models (Chaudhari's thesis §4.5.3)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sgdlab.errors import checked_keywords, human_size, int_at_least, plain_int
from sgdlab.operators import HessianOperator
from sgdlab.operators.batches import Data


def check_max_params(max_params: object) -> int:
    """``max_params`` as an int when it is a number of parameters >= 1, else a ValueError:
    :func:`dense_hessian`'s check of its size limit, made without a model (a string failed at
    the comparison with d, and a limit below 1 refuses every model)."""
    max_params = plain_int(max_params)      # np.int64 is a count; True and 6e4 are not
    if not int_at_least(max_params, 1):
        raise ValueError(f"Invalid max_params={max_params!r} (the most parameters a dense "
                         "Hessian is built for: an int >= 1)")
    return max_params


@checked_keywords()
def dense_hessian(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    *,
    chunk_size: int = 256,
    max_params: int = 60_000,
) -> Tensor:
    """The exact d x d Hessian of the mean loss, built from HVP columns (``chunk_size`` at a
    time, vmapped through the cached gradient graph for a single batch). Symmetrised
    ((H + Hᵀ)/2, in place) to remove round-off asymmetry. Refuses d > ``max_params`` (d²
    memory)."""
    max_params = check_max_params(max_params)
    op = HessianOperator(model, loss_fn, data)
    d = op.shape[0]
    if d > max_params:
        size = d * d * torch.empty((), dtype=op.dtype).element_size()
        # in a unit of its size: under a small max_params, "0.0 GB" read as no memory at all
        raise ValueError(f"dense Hessian of {d} parameters needs {human_size(size)}; "
                         f"raise max_params (now {max_params}) if you mean it, or use lanczos")
    return symmetrise_(op.to_dense(chunk_size))


def symmetrise_(h: Tensor, block: int = 1024) -> Tensor:
    """(H + Hᵀ)/2 written into ``h``, one pair of ``block``-sized tiles at a time: no second
    d x d matrix (the paper scale's 47,658-parameter small-LeNet Hessian is 9 GB in float32;
    ``(h + h.T) / 2`` held three such at once)."""
    d = h.shape[0]
    for i in range(0, d, block):
        for j in range(i, d, block):
            avg = (h[i:i + block, j:j + block] + h[j:j + block, i:i + block].T) / 2
            h[i:i + block, j:j + block] = avg
            h[j:j + block, i:i + block] = avg.T
    return h


# dense_hessian's options pass through as **kw: checked_keywords shows them with its defaults
# (written once, there) and names a misspelt one
@checked_keywords(dense_hessian)
def hessian_spectrum(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Data, **kw
) -> Tensor:
    """All d Hessian eigenvalues, ascending (dense ``eigvalsh`` of :func:`dense_hessian`, whose
    ``chunk_size`` and ``max_params`` it takes; small models only — Chaudhari computes full
    spectra of ~50k-parameter networks this way)."""
    return torch.linalg.eigvalsh(dense_hessian(model, loss_fn, data, **kw))


@checked_keywords()
def harmonic_mean_eigenvalue(
    eigvals: Tensor, *, threshold: float | None = None
) -> tuple[float, int]:
    """Harmonic mean of the positive part of a spectrum (Chaudhari's thesis §4.5.3).

    The harmonic mean n / Σ 1/λ_i is dominated by the smallest eigenvalues; it is zero as soon
    as one λ_i = 0 and undefined with negative ones, while a Hessian at a trained network has
    a bulk of numerically-zero and slightly negative eigenvalues. We therefore average only
    over eigenvalues above ``threshold`` (default numpy's rank threshold λ_max · d · eps of
    the dtype) and return ``(harmonic_mean, number_used)``; the count says how much of the
    spectrum was kept. Returns ``(nan, 0)`` when no eigenvalue is positive.
    """
    lam = eigvals.detach().double().reshape(-1)
    if threshold is None:
        threshold = max(float(lam.max()), 0.0) * len(lam) * torch.finfo(eigvals.dtype).eps
    pos = lam[lam > threshold]
    if len(pos) == 0:
        return float("nan"), 0
    return float(len(pos) / (1.0 / pos).sum()), int(len(pos))
