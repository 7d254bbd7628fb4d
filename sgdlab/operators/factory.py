"""Build a curvature operator by name (configs, CLI and instruments pick the matrix by string)."""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .batches import Data
from .fisher import EmpiricalFisherOperator
from .ggn import GGNOperator
from .hessian import HessianOperator
from .linear import LinearOperator

OPERATORS: dict[str, type[LinearOperator]] = {
    "hessian": HessianOperator,
    "ggn": GGNOperator,
    "empirical_fisher": EmpiricalFisherOperator,
}


def curvature_operator(
    kind: str,
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    **kw,
) -> LinearOperator:
    """``kind`` in ``hessian`` | ``ggn`` | ``empirical_fisher`` (all of the mean loss)."""
    try:
        cls = OPERATORS[kind]
    except KeyError:
        raise ValueError(
            f"Unknown curvature operator {kind!r}; known: {', '.join(sorted(OPERATORS))}"
        ) from None
    return cls(model, loss_fn, data, **kw)
