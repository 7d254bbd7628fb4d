"""Pieces every curvature estimator shares: probes, Monte-Carlo estimates, working precision."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sgdlab.errors import checked_int_argument
from sgdlab.operators import LinearOperator, as_operator
from sgdlab.operators.linear import _Wrapped

Operand = "Tensor | LinearOperator"


def random_vector(op: LinearOperator, generator: torch.Generator | None,
                  kind: str = "gaussian") -> Tensor:
    """A random flat vector on the operator's device/dtype, reproducible with ``generator``."""
    gdev = generator.device if generator is not None else op.device
    d = op.shape[0]
    if kind == "gaussian":
        v = torch.randn(d, generator=generator, device=gdev, dtype=torch.float64)
    elif kind == "rademacher":
        v = torch.randint(0, 2, (d,), generator=generator, device=gdev).to(torch.float64) * 2 - 1
    else:
        raise ValueError(f"Unknown probe distribution {kind!r} (gaussian | rademacher)")
    return v.to(device=op.device, dtype=op.dtype)


def probe_block(op: LinearOperator, b: int, generator: torch.Generator | None,
                kind: str) -> Tensor:
    """(d, b) block of independent probes (columns). The draws do not depend on how probes
    are grouped into blocks: Gaussian probes are drawn one vector at a time, Rademacher ones
    in one call (on CPU the same generator stream as one call per probe)."""
    if kind == "gaussian":
        return torch.stack([random_vector(op, generator) for _ in range(b)], dim=1)
    if kind == "rademacher":
        gdev = generator.device if generator is not None else op.device
        # drawn directly in the operator's dtype (±1 are exact) and returned as a transposed
        # view: each probe's entries stay contiguous
        v = torch.randint(0, 2, (b, op.shape[0]), generator=generator, device=gdev,
                          dtype=op.dtype)
        return v.mul_(2).sub_(1).to(device=op.device).T
    raise ValueError(f"Unknown probe distribution {kind!r} (gaussian | rademacher)")


def unit_column_blocks(op: LinearOperator, block_size: int | None = None
                       ) -> Iterator[tuple[Tensor, Tensor]]:
    """``(idx, A[:, idx])`` for consecutive blocks of the d unit columns: A applied to the
    identity in ``matmat`` blocks (sized like probe blocks), for the exact diagonal and
    Frobenius norm of small operators (d products in all, never a d x d matrix)."""
    d = op.shape[0]
    start = 0
    for _, b in op.block_tuner("matmat", block_size=block_size).blocks(d):
        idx = torch.arange(start, start + b, device=op.device)
        cols = torch.zeros(d, b, dtype=op.dtype, device=op.device)
        cols[idx, torch.arange(b, device=op.device)] = 1
        yield idx, op.matmat(cols)
        start += b


def check_which(which: str) -> None:
    if which not in ("largest", "smallest", "both", "magnitude"):
        raise ValueError(
            f"Invalid which={which!r}: expected 'largest', 'smallest', 'both' or 'magnitude'")


@dataclass
class Estimate:
    """A Monte-Carlo estimate with its standard error (std of the samples / sqrt(n))."""

    value: float
    stderr: float
    num_samples: int

    def __float__(self) -> float:
        return self.value

    def __format__(self, spec: str) -> str:
        # f"{hessian_trace(...):.3f}" was a TypeError ("unsupported format string passed to
        # Estimate.__format__"): the value and its standard error, both in the spec
        if not spec:
            return str(self)
        return f"{format(self.value, spec)} ± {format(self.stderr, spec)}"


def mc_estimate(samples: list[float]) -> Estimate:
    t = torch.tensor(samples, dtype=torch.float64)
    n = len(samples)
    se = float(t.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return Estimate(float(t.mean()), se, n)


def check_num_probes(num_probes: object) -> int:
    """``num_probes`` as a Python int when it is an int >= 1 (numpy's and torch's too), else a
    ValueError: np.int64 is a count; True (it was 1 probe) and 2.5 are not."""
    return checked_int_argument("num_probes", num_probes, 1)


def probe_samples(op: LinearOperator, num_probes: int, generator, kind: str,
                  block_size: int | None, stat: Callable[[Tensor], Tensor], *,
                  product: str) -> list[float]:
    """``stat(V)`` -> (b,) samples for (d, b) blocks of probes. ``block_size=None`` lets the
    operator choose the block (:meth:`~sgdlab.operators.LinearOperator.block_tuner`: bounded by
    its memory budget and, for model operators, measured cheapest per column for the
    ``product`` kind). The samples do not depend on the blocks (see :func:`probe_block`)."""
    num_probes = check_num_probes(num_probes)
    tuner = op.block_tuner(product, block_size=block_size)
    samples: list[float] = []
    for _, b in tuner.blocks(num_probes):
        samples.extend(stat(probe_block(op, b, generator, kind)).double().tolist())
    if not all(map(math.isfinite, samples)):
        raise FloatingPointError(
            "operator returned non-finite values (diverged model or bad data?)")
    return samples


class _Cast(_Wrapped):
    """A in a wider working precision: vectors arrive and leave in ``dtype``, the operator
    computes its products in its own precision (the Krylov recurrence, not the products'
    round-off, limits Ritz values: see docs/design/curvature.md)."""

    def _matvec(self, v: Tensor) -> Tensor:
        return self.op.matvec(v.to(self.op.dtype)).to(self.dtype)

    def _matmat(self, m: Tensor) -> Tensor:
        return self.op.matmat(m.to(self.op.dtype)).to(self.dtype)

    def _quadratic_forms(self, m: Tensor) -> Tensor:
        return self.op.quadratic_forms(m.to(self.op.dtype)).to(self.dtype)

    def _probe_bytes(self) -> int:
        return self.op._probe_bytes() + super()._probe_bytes()


def working_operator(A: Operand, dtype: torch.dtype | None, *,
                     exact_products: bool = False) -> LinearOperator:
    """``A`` as an operator whose vectors live in ``dtype`` (None: A's own dtype, float32 for
    a half-precision A).

    With ``exact_products`` the products themselves are computed in ``dtype`` too: a dense
    matrix is converted, a model operator rebuilt on a copy of its model and data in ``dtype``
    (:meth:`~sgdlab.operators.ModelOperator.to`); other operators only have their vectors cast.
    A half-precision A without ``dtype`` keeps its products in its own precision.
    """
    op = as_operator(A)
    if dtype is None and op.dtype in (torch.float16, torch.bfloat16):
        # a Krylov basis in bfloat16 loses orthogonality at once: λ_max of a bfloat16 MLP came
        # out 17-72% off, 0.1-0.2% with the vectors in float32 and the same products
        return _Cast(op, torch.float32)
    if dtype is None or dtype == op.dtype:
        return op
    if not dtype.is_floating_point:
        raise ValueError(f"Invalid dtype={dtype}: a floating-point dtype is needed")
    if exact_products and hasattr(op, "to"):
        return op.to(dtype)
    return _Cast(op, dtype)
