"""A minimal linear-operator base shared by every curvature matrix.

Subclasses implement ``_matvec`` on flat vectors; estimators (Lanczos, Hutchinson, SLQ, ...)
accept either a dense square tensor or a ``LinearOperator`` through :func:`as_operator`.
"""
from __future__ import annotations

import torch
from torch import Tensor


class LinearOperator:
    """Symmetric d x d operator acting on flat vectors of ``dtype`` on ``device``."""

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device):
        self.shape = (dim, dim)
        self.dtype = dtype
        self.device = torch.device(device)
        self.num_matvecs = 0

    def _matvec(self, v: Tensor) -> Tensor:
        raise NotImplementedError

    def matvec(self, v: Tensor) -> Tensor:
        """A @ v for a flat vector, or A @ V column by column for a (d, k) matrix."""
        if v.dim() == 2:
            return torch.stack([self.matvec(c) for c in v.T], dim=1)
        self.num_matvecs += 1
        return self._matvec(v.to(self.dtype))

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v)

    def to_dense(self) -> Tensor:
        """Materialise by d matvecs (small problems and tests only)."""
        eye = torch.eye(self.shape[0], dtype=self.dtype, device=self.device)
        return self.matvec(eye)

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` view (float64 numpy in and out)."""
        from scipy.sparse.linalg import LinearOperator as ScipyOp

        def mv(x):
            v = torch.as_tensor(x.reshape(-1), dtype=self.dtype, device=self.device)
            return self.matvec(v).detach().cpu().double().numpy()

        return ScipyOp(self.shape, matvec=mv, rmatvec=mv, dtype="float64")


class DenseOperator(LinearOperator):
    """Wrap an explicit symmetric matrix so estimators can be checked on dense references."""

    def __init__(self, matrix: Tensor):
        super().__init__(matrix.shape[0], matrix.dtype, matrix.device)
        self.matrix = matrix

    def _matvec(self, v: Tensor) -> Tensor:
        return self.matrix @ v

    def to_dense(self) -> Tensor:
        return self.matrix


def as_operator(a: "Tensor | LinearOperator") -> LinearOperator:
    return a if isinstance(a, LinearOperator) else DenseOperator(a)
