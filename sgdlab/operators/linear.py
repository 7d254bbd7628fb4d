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

    def _matmat(self, m: Tensor) -> Tensor:
        """A @ M for (d, k) M; subclasses may batch the k products (default: column loop)."""
        return torch.stack([self._matvec(c) for c in m.T], dim=1)

    def matvec(self, v: Tensor) -> Tensor:
        """A @ v for a flat vector, or A @ V for a (d, k) matrix (see :meth:`matmat`)."""
        if v.dim() == 2:
            return self.matmat(v)
        self.num_matvecs += 1
        return self._matvec(v.to(self.dtype))

    def matmat(self, m: Tensor) -> Tensor:
        """A @ M for a (d, k) matrix (counted as k products)."""
        self.num_matvecs += m.shape[1]
        return self._matmat(m.to(self.dtype))

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v)

    def __mul__(self, c: float) -> "LinearOperator":
        return _Scaled(self, float(c))

    __rmul__ = __mul__

    def __add__(self, other: "LinearOperator | Tensor") -> "LinearOperator":
        return _Sum(self, as_operator(other))

    def __neg__(self) -> "LinearOperator":
        return _Scaled(self, -1.0)

    def __sub__(self, other: "LinearOperator | Tensor") -> "LinearOperator":
        return _Sum(self, _Scaled(as_operator(other), -1.0))

    def to_dense(self, chunk_size: int = 256) -> Tensor:
        """Materialise by d products, ``chunk_size`` columns at a time (small problems only)."""
        d = self.shape[0]
        out = torch.empty(d, d, dtype=self.dtype, device=self.device)
        for i in range(0, d, chunk_size):
            j = min(i + chunk_size, d)
            eye = torch.zeros(d, j - i, dtype=self.dtype, device=self.device)
            eye[i:j] = torch.eye(j - i, dtype=self.dtype, device=self.device)
            out[:, i:j] = self.matmat(eye)
        return out

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

    def _matmat(self, m: Tensor) -> Tensor:
        return self.matrix @ m

    def to_dense(self, chunk_size: int = 256) -> Tensor:
        return self.matrix


class _Scaled(LinearOperator):
    """c · A (e.g. −H for the most negative eigenvalues by a largest-eigenvalue method)."""

    def __init__(self, op: LinearOperator, c: float):
        super().__init__(op.shape[0], op.dtype, op.device)
        self.op, self.c = op, c

    def _matvec(self, v: Tensor) -> Tensor:
        return self.c * self.op.matvec(v)


class _Sum(LinearOperator):
    """A + B (e.g. a shift H + σI)."""

    def __init__(self, a: LinearOperator, b: LinearOperator):
        if a.shape != b.shape:
            raise ValueError(f"operator shapes differ: {a.shape} vs {b.shape}")
        super().__init__(a.shape[0], a.dtype, a.device)
        self.a, self.b = a, b

    def _matvec(self, v: Tensor) -> Tensor:
        return self.a.matvec(v) + self.b.matvec(v)


def as_operator(a: "Tensor | LinearOperator") -> LinearOperator:
    return a if isinstance(a, LinearOperator) else DenseOperator(a)
