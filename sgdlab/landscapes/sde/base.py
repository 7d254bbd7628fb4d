"""SDEs and their integrators (diffrax style: one base, one small class per method).

An SDE here is an Itô equation (thesis Remark 6.9: Itô, i.e. the diffusion is evaluated at the
left end of each step), batched over leading "chain" dimensions of the state::

    dX = b(X) dt + G(X) dB,           G(X) G(X)ᵀ = 2 β⁻¹ D(X)

with X of shape (..., d), b(X) of shape (..., d) and the factor G(X) of shape (..., d, r)
(r = d for a square root of D, r = N for the per-sample factor of SGD's diffusion). The
overdamped Langevin form dX = −∇f dt + √(2β⁻¹ D(X)) dB is :meth:`SDE.langevin`.
"""
from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sgdlab.errors import UserError, checked_float
from sgdlab.optim.noise import psd_sqrt  # symmetric square root, negatives clipped (batched)

from ..base import check_count, check_psd_matrix, psd_tolerances

Drift = Callable[[Tensor], Tensor]
Factor = Callable[[Tensor], Tensor]


@dataclass
class SDE:
    """dX = drift(X) dt + factor(X) dB (Itô).

    Args:
        drift: X (..., d) -> (..., d).
        factor: X (..., d) -> G (..., d, r); None means no noise (an ODE).
        additive: True when G does not depend on X (Euler–Maruyama is then strong order 1).
        dim: d.
        noise_dim: r, the number of Brownian components.
        scalar_noise: c when G = c I (integrators then skip the batched matmul; r = d). With
            ``factor=None`` it is the factor: ``SDE(drift, None, d, d, scalar_noise=c)`` is
            dX = drift dt + c dB.
    """

    drift: Drift
    factor: Factor | None
    dim: int
    noise_dim: int
    additive: bool = False
    scalar_noise: float | None = None

    def __post_init__(self) -> None:
        self.dim = check_count("dim", self.dim, 1)
        self.noise_dim = check_count("noise_dim", self.noise_dim, 0)
        c = self.scalar_noise
        if c is None:
            return
        checked_float("scalar_noise", c)
        if self.noise_dim != self.dim:
            raise UserError(f"scalar_noise is G = c I, square: noise_dim must be dim = "
                            f"{self.dim}, got {self.noise_dim}")
        if self.factor is None:
            # G = c I in full: without it simulate() drew no noise, and Euler–Maruyama's
            # c·ΔB of width 0 broadcast the chains to shape (..., 0)
            dim = self.dim
            self.factor = lambda x: (c * torch.eye(dim, dtype=torch.float64)).to(x).expand(
                *x.shape[:-1], dim, dim)
            self.additive = True

    @classmethod
    def langevin(
        cls, grad: Callable[[Tensor], Tensor], dim: int, *, beta: float = 1.0,
        diffusion: float | Tensor | Callable[[Tensor], Tensor] | None = None,
        extra_drift: Callable[[Tensor], Tensor] | None = None,
    ) -> SDE:
        """dX = (−∇f(X) + extra(X)) dt + √(2β⁻¹ D(X)) dB.

        ``diffusion`` D is None (identity), a float (c I), a tensor of shape (d,) (diagonal) or
        (d, d) (constant PSD), or a callable X -> (..., d, d) PSD matrix (state-dependent; its
        symmetric square root is taken each step, after checking that every returned matrix
        is finite, symmetric and PSD up to round-off: a ``UserError`` names the first state
        where it is not. A D that may dip below zero must be clipped by the callable itself).
        """
        # a string was a TypeError about '>'; NaN fails too; β = inf is zero noise
        if isinstance(beta, bool) or not isinstance(beta, (numbers.Real, Tensor)) \
                or not float(beta) > 0:
            raise UserError(f"beta must be a number > 0, got {beta!r}")
        beta = float(beta)
        scale = math.sqrt(2.0 / beta)
        if extra_drift is None:
            def drift(x: Tensor) -> Tensor:
                return -grad(x)
        else:
            def drift(x: Tensor) -> Tensor:
                return -grad(x) + extra_drift(x)
        if callable(diffusion):
            def factor(x: Tensor) -> Tensor:
                return scale * _checked_root(diffusion(x), x, dim)
            return cls(drift, factor, dim, dim, additive=False)
        if isinstance(diffusion, (list, tuple, np.ndarray)):
            # a list or array of the diagonal or the matrix (float() of one was a TypeError)
            diffusion = torch.as_tensor(diffusion, dtype=torch.float64)
        if diffusion is None or not isinstance(diffusion, Tensor):
            try:
                value = 1.0 if diffusion is None else float(diffusion)
            except (TypeError, ValueError):
                raise UserError(f"diffusion must be None, a number, a (d,) or (d, d) tensor or "
                                f"a callable, got {type(diffusion).__name__}") from None
            c = scale * math.sqrt(checked_float("diffusion", value))
            # the identity in float64: a float32 one put 2e-8 errors into float64 factors
            return cls(drift, lambda x: (c * torch.eye(dim, dtype=torch.float64)).to(x).expand(
                *x.shape[:-1], dim, dim), dim, dim, additive=True, scalar_noise=c)
        if not bool(torch.isfinite(diffusion).all()):
            raise UserError("diffusion has non-finite entries")
        # roots in float64 whatever D's dtype (torch.tensor([...]) is float32): a float32
        # root made G Gᵀ of a float64 simulation miss 2 β⁻¹ D by ~1e-7
        if diffusion.ndim == 1:
            if diffusion.shape[0] != dim or (diffusion < 0).any():
                raise UserError(f"diagonal diffusion must be ({dim},) and >= 0")
            root = torch.diag(diffusion.double().sqrt())
        else:
            root = psd_sqrt(check_psd_matrix("diffusion matrix", diffusion, dim))

        def const_factor(x: Tensor) -> Tensor:
            return (scale * root).to(x).expand(*x.shape[:-1], dim, dim)
        return cls(drift, const_factor, dim, dim, additive=True)


def _checked_root(mat: Tensor, x: Tensor, dim: int) -> Tensor:
    """The symmetric square root of a state-dependent D(x) (..., d, d), each matrix checked
    first: finite, symmetric and PSD up to its dtype's round-off, with the tolerances of
    :func:`~sgdlab.landscapes.base.psd_tolerances` (relative to each matrix's scale); else a
    ``UserError`` naming the first failing state. Unchecked, the root read only the lower
    triangle and clipped negative eigenvalues (D = diag(−1, 1) was simulated as diag(0, 1))
    and a NaN D made that chain NaN without a word. The checks reuse the root's ``eigh`` and
    add one host synchronisation per step."""
    if not isinstance(mat, Tensor) or mat.ndim < 2 or tuple(mat.shape[-2:]) != (dim, dim):
        got = tuple(mat.shape) if isinstance(mat, Tensor) else type(mat).__name__
        raise UserError(f"diffusion(x) must return (..., {dim}, {dim}) matrices, got {got}")
    sym_tol, eig_tol = psd_tolerances(mat.dtype, dim)
    # the root in the chains' dtype if wider (a float32 D beside float64 chains failed in the
    # integrator's matmul), the tolerances at D's own round-off
    mat = mat.to(torch.promote_types(mat.dtype, x.dtype))
    finite = torch.isfinite(mat).all(-1).all(-1)
    m = torch.where(finite[..., None, None], mat, torch.zeros((), dtype=mat.dtype,
                                                              device=mat.device))
    scale = m.abs().amax((-2, -1))
    asym = (m - m.transpose(-1, -2)).abs().amax((-2, -1))
    vals, vecs = torch.linalg.eigh(m)
    top = vals.abs().amax(-1)
    ok = finite & (asym <= sym_tol * scale) & (vals[..., 0] >= -eig_tol * top)
    if not bool(ok.all()):
        shape = torch.broadcast_shapes(ok.shape, x.shape[:-1])
        ok_b = ok.expand(shape)
        first = tuple(int(i) for i in (~ok_b).nonzero()[0])
        at = x.expand(*shape, x.shape[-1])[first].tolist()
        k = first[len(shape) - ok.ndim:]          # the index into D's own batch dimensions
        if not bool(finite[k]):
            why = "has non-finite entries"
        elif not bool(asym[k] <= sym_tol * scale[k]):
            why = (f"is not symmetric (max|D − Dᵀ| = {float(asym[k]):.3g}, entries up to "
                   f"{float(scale[k]):.3g})")
        else:
            why = (f"is not positive semi-definite (smallest eigenvalue {float(vals[k][0]):.3g}"
                   f", largest |λ| {float(top[k]):.3g})")
        raise UserError(f"diffusion(x) {why} at x = {at} (chain {list(first)})")
    return psd_sqrt(m, eig=(vals, vecs))


class Integrator(ABC):
    """One step X_{n+1} = Φ(X_n, t_n, h, ΔB_n). Subclasses state their convergence orders:
    ``weak_order`` (|E φ(X_N) − E φ(X(T))| = O(h^p) for smooth φ) and ``strong_order``
    (E|X_N − X(T)| = O(h^q)), as diffrax's ``order()`` / ``strong_order()``."""

    weak_order: float
    strong_order: float
    strong_order_additive: float | None = None  # when G is constant, if higher
    #: Brownian increments consumed before the first step (see :meth:`start`).
    lookahead: int = 0

    def start(self, sde: SDE, x: Tensor, dw0: Tensor) -> None:
        """Called once before the first step with ``lookahead`` extra increment(s); stateful
        integrators (Leimkuhler–Matthews) keep what they need here."""

    @abstractmethod
    def step(self, sde: SDE, x: Tensor, t: float, dt: float, dw: Tensor) -> Tensor:
        """Advance every chain by dt; ``dw`` (..., r) are the Brownian increments N(0, dt I)."""

    def strong_order_for(self, sde: SDE) -> float:
        if sde.additive and self.strong_order_additive is not None:
            return self.strong_order_additive
        return self.strong_order


__all__ = ["SDE", "Integrator", "psd_sqrt"]
