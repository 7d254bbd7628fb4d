"""Hutch++ (Meyer, Musco, Musco & Woodruff 2021, Algorithm 1): Tr A with a low-rank sketch."""
from __future__ import annotations

import torch
from torch import Tensor

from sgdlab.errors import checked_keywords, int_at_least, plain_int

from ._common import Estimate, Operand, mc_estimate, probe_block, working_operator


@checked_keywords()
def hutchpp_trace(
    A: Operand,
    num_matvecs: int = 102,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Estimate:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): Tr A with a third of the products spent on
    a sketch Q = orth(A S) of the dominant range, whose trace Tr(Qᵀ A Q) is exact, and the rest
    on Hutchinson for the deflated remainder (I − QQᵀ) A (I − QQᵀ). For Hessians with a few
    outlying eigenvalues the variance is far below Hutchinson's at the same number of products.

    ``num_matvecs`` (≥ 3) is split m/3 sketch, m/3 for A Q, m/3 Rademacher probes; the standard
    error is that of the Hutchinson part (the sketched part has none given Q).
    """
    num_matvecs = plain_int(num_matvecs)   # np.int64 is a count; True and 4.5 are not
    if not int_at_least(num_matvecs, 3):
        raise ValueError(f"Invalid num_matvecs={num_matvecs!r} (Hutch++ needs an int >= 3)")
    op = working_operator(A, dtype, exact_products=True)
    k = num_matvecs // 3

    def blocked(f, kind: str, m: Tensor) -> Tensor:   # bounded memory, measured block sizes
        tuner = op.block_tuner(kind)
        return torch.cat([f(m[:, i:i + b]) for i, b in tuner.blocks(m.shape[1])], dim=-1)

    s = probe_block(op, k, generator, "rademacher")
    q, _ = torch.linalg.qr(blocked(op.matmat, "matmat", s))
    exact = float(blocked(op.quadratic_forms, "quadratic_forms", q).sum())     # Tr(Qᵀ A Q)
    g = probe_block(op, num_matvecs - 2 * k, generator, "rademacher")
    g = g - q @ (q.T @ g)
    rest = mc_estimate(blocked(op.quadratic_forms, "quadratic_forms", g).double().tolist())
    return Estimate(exact + rest.value, rest.stderr, num_matvecs)
