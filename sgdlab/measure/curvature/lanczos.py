"""Extreme eigenpairs: Lanczos with full re-orthogonalisation, and power iteration.

Lanczos (Golub & Van Loan, Matrix Computations, Alg. 10.1.1) with full re-orthogonalisation:
after the three-term recurrence, classical Gram–Schmidt against the whole basis, repeated when
it removed more than 1 − 1/√2 of the vector's norm (Daniel, Gragg, Kaufman & Stewart 1976,
"twice is enough"), so the Krylov basis stays orthonormal to working precision and no ghost
eigenvalues appear. The recurrence removes the large components first, so one pass over the
basis usually suffices (two reads of it per step instead of four: 80 steps on a
1,863,690-long float32 basis took 5.4 instead of 10.3 s, one thread).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sgdlab.errors import (ConfigError, check_flag, checked_count_argument,
                           checked_float_argument, checked_int_argument, checked_keywords, warn)
from sgdlab.operators import LinearOperator, as_operator
from sgdlab.operators.linear import _Wrapped

from .._repr import compact_repr
from ._common import Operand, check_which, random_vector, working_operator


@dataclass
class LanczosResult:
    """The raw Lanczos decomposition A Q ≈ Q T (used by SLQ and by :func:`lanczos`)."""

    alpha: Tensor        # (m,) float64, diagonal of T
    beta: Tensor         # (m-1,) float64, off-diagonal of T
    basis: Tensor | None  # (m, d) orthonormal rows (None when not kept)
    residual: float      # |β_m|, the norm of the next (unused) Lanczos vector

    __repr__ = compact_repr

    def tridiagonal(self) -> Tensor:
        m = len(self.alpha)
        t = torch.diag(self.alpha)
        if m > 1:
            t += torch.diag(self.beta, 1) + torch.diag(self.beta, -1)
        return t


# The Ritz values are checked after every step on arrays of at most a few hundred entries:
# in NumPy, where each operation costs ~1 µs instead of torch's ~5-10 µs (on the digits MLP a
# step's product takes 2 ms, and the torch version of the check took ~0.3 ms of it).

def select_ritz(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    """Indices of the wanted Ritz values (theta ascending)."""
    m = len(theta)
    k = min(k, m)
    if which == "largest":
        return np.arange(m - 1, m - 1 - k, -1)
    if which == "smallest":
        return np.arange(0, k)
    if which == "magnitude":
        return np.argsort(-np.abs(theta), kind="stable")[:k]
    # both: k largest (descending) then k smallest (ascending); overlap allowed when m < 2k
    return np.concatenate([np.arange(m - 1, m - 1 - k, -1), np.arange(0, k)])


def tridiagonal_eigh(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal T(α, β), float64
    (LAPACK's tridiagonal solvers: ~20x faster than a dense eigh at the sizes Lanczos checks
    after every step; implicit QL, ``dstev``, up to 24 x 24, where it takes 6-40 µs against
    37-70 µs for scipy's ``eigh_tridiagonal``, which is faster from ~30 on)."""
    from scipy.linalg import eigh_tridiagonal
    from scipy.linalg.lapack import dstev

    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if len(alpha) == 1:
        return alpha.copy(), np.ones((1, 1))
    if len(alpha) <= 24:
        theta, s, info = dstev(alpha, beta, compute_v=1)
        if info == 0:
            return theta, s
    return eigh_tridiagonal(alpha, beta, check_finite=False)


_DGKS = 1 / math.sqrt(2)


def breakdown_threshold(scale: float, dtype: torch.dtype) -> float:
    """|β| below which the Krylov space is taken as invariant: rounding level relative to the
    spectrum's scale. Not grown with the dimension: a Hessian's bulk may sit 10⁻³-10⁻⁴ below
    its top eigenvalue, and a threshold ∝ √d (10·eps·√d ≈ 1.6e-3 in float32 at d = 1.9 M)
    would stop SLQ inside that bulk. A missed breakdown only costs a step with a near-zero
    β (its vector is rounding noise orthogonal to the basis: a restart in all but name)."""
    return 100 * torch.finfo(dtype).eps * max(scale, 1e-300)


def lanczos_step(w: Tensor, basis: Tensor, b_prev: float,
                 scale: float) -> tuple[float, float, float, bool]:
    """One Lanczos step after the product ``w`` = A q_j, with ``basis`` the rows q_0 … q_j:
    α = wᵀq_j, then in place the recurrence w − α q_j − β q_{j−1} and classical Gram–Schmidt
    against the whole basis, repeated once when it removed more than 1 − 1/√2 of the norm
    (DGKS). Returns (α, β = ‖w‖, the spectrum's scale so far, breakdown): the Krylov space is
    invariant when w lies numerically in the span of the basis (the second pass shrank it as
    much again) or β is at rounding level."""
    a = float(torch.dot(w, basis[-1]))
    w.add_(basis[-1], alpha=-a)
    if len(basis) > 1 and b_prev:
        w.add_(basis[-2], alpha=-b_prev)
    norm = float(torch.linalg.vector_norm(w))
    in_span = True
    for _ in range(2):
        w.addmv_(basis.T, basis @ w, alpha=-1)
        new = float(torch.linalg.vector_norm(w))
        if new > _DGKS * norm:
            norm, in_span = new, False
            break
        norm = new
    if not (math.isfinite(a) and math.isfinite(norm)):
        raise FloatingPointError(
            "operator returned non-finite values (diverged model or bad data?)")
    scale = max(scale, abs(a), norm)
    return a, norm, scale, in_span or norm <= breakdown_threshold(scale, w.dtype)


def lanczos_decomposition(
    A: Operand,
    num_iter: int,
    *,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    keep_basis: bool = True,
    stop: Callable[[Tensor, Tensor, Tensor, float], bool] | None = None,
    restart_on_breakdown: bool = True,
    dtype: torch.dtype | None = None,
    stop_at_breakdown: Callable[[Tensor, Tensor], bool] | None = None,
    exclude: Tensor | None = None,
) -> LanczosResult:
    """Run ``num_iter`` Lanczos steps (an int >= 1; at most d are taken) from ``v0`` (random
    Gaussian if None) with full re-orthogonalisation (classical Gram–Schmidt applied twice, so
    the basis stays orthonormal to working precision). ``stop(alpha, beta, basis, beta_next)``
    may end the iteration early.

    On breakdown (an invariant subspace is found, |β| ≈ 0) the iteration restarts from a fresh
    random vector orthogonal to the basis (T decouples, β = 0), so multiplicities are recovered;
    with ``restart_on_breakdown=False`` (SLQ) it stops instead. Before a restart,
    ``stop_at_breakdown(alpha, beta)`` may end the iteration there (each restart is a zero in
    ``beta``: the invariant block began after the last one). ``dtype`` is the working
    precision of the basis and recurrence (default the operator's, float32 for a float16 or
    bfloat16 one; products stay in the operator's precision). ``exclude``: (d, p) orthonormal
    columns that a random start and every restart are drawn orthogonal to (a deflated
    operator's null space, which would otherwise come out as eigenvalues 0).
    """
    # np.int64 is a count; True (1 step) and 2.5 (int() made it 2) are not, nor is a count
    # below 1 (it took one step)
    num_iter = checked_int_argument("num_iter", num_iter, 1, ": the Lanczos steps")
    op = working_operator(A, dtype)
    d = op.shape[0]
    # the excluded columns take p dimensions: the whole space is spanned after d - p steps
    m = max(1, min(num_iter, d - (0 if exclude is None else exclude.shape[1])))
    if v0 is None:
        q = _orthogonal_to(exclude, random_vector(op, generator))
    else:
        q = v0.to(device=op.device, dtype=op.dtype)
    nrm = torch.linalg.vector_norm(q)
    if not torch.isfinite(nrm) or nrm == 0:
        raise ValueError("Lanczos start vector must be finite and nonzero")
    basis = torch.empty(m, d, dtype=op.dtype, device=op.device)
    basis[0] = q / nrm
    alpha: list[float] = []
    beta: list[float] = []
    eps = torch.finfo(op.dtype).eps
    scale = 0.0
    beta_next = 0.0
    for j in range(m):
        w = op.matvec(basis[j]).clone()           # the operator's output may alias its input
        q = basis[: j + 1]
        a, b, scale, breakdown = lanczos_step(w, q, beta[-1] if beta else 0.0, scale)
        if exclude is not None and not breakdown:
            # rounding leaves components along the excluded columns in w, which renormalising
            # a short w (beside a near-null eigenspace) would magnify into the basis
            w = _orthogonal_to(exclude, w)
            b = float(torch.linalg.vector_norm(w))
            breakdown = b <= breakdown_threshold(scale, w.dtype)
        alpha.append(a)
        beta_next = b
        # at a breakdown the Ritz values are exact but multiplicities may be missing: restart
        # rather than ask ``stop`` (whose residuals would all read zero)
        if (stop is not None and not (breakdown and restart_on_breakdown)
                and stop(torch.from_numpy(np.array(alpha)),
                         torch.from_numpy(np.array(beta, dtype=np.float64)), q, b)):
            m = j + 1
            break
        if j == m - 1:
            break
        if breakdown:
            if not restart_on_breakdown or (
                    stop_at_breakdown is not None
                    and stop_at_breakdown(torch.from_numpy(np.array(alpha)),
                                          torch.from_numpy(np.array(beta, dtype=np.float64)))):
                m = j + 1
                beta_next = 0.0
                break
            w = random_vector(op, generator)
            for _ in range(2):
                w = _orthogonal_to(exclude, w - q.T @ (q @ w))
            wn = torch.linalg.vector_norm(w)
            if wn <= eps:  # the whole space is spanned
                m = j + 1
                beta_next = 0.0
                break
            beta.append(0.0)
            basis[j + 1] = w / wn
        else:
            beta.append(b)
            torch.div(w, b, out=basis[j + 1])
    return LanczosResult(
        alpha=torch.tensor(alpha[:m], dtype=torch.float64),
        beta=torch.tensor(beta[: m - 1], dtype=torch.float64),
        basis=basis[:m] if keep_basis else None,
        residual=beta_next,
    )


def _orthogonal_to(columns: Tensor | None, v: Tensor) -> Tensor:
    """v less its components along the orthonormal ``columns`` (twice: DGKS)."""
    if columns is None:
        return v
    for _ in range(2):
        v = v - columns @ (columns.T @ v)
    return v


class _Deflated(_Wrapped):
    """(I − VVᵀ) A (I − VVᵀ) for orthonormal columns V, in A's (working) precision: A on the
    complement of V, zero on V."""

    def __init__(self, op: LinearOperator, columns: Tensor):
        super().__init__(op, op.dtype)
        self.columns = columns

    def _matvec(self, v: Tensor) -> Tensor:
        return _orthogonal_to(self.columns, self.op.matvec(_orthogonal_to(self.columns, v)))

    def _matmat(self, m: Tensor) -> Tensor:
        return _orthogonal_to(self.columns, self.op.matmat(_orthogonal_to(self.columns, m)))


def check_tol(tol: object, name: str = "tol", num_iter: str = "num_iter") -> float:
    """``tol`` when it is a finite number >= 0 (numpy's floats and ints as Python floats; a
    bool of either kind is none), else a ValueError: :func:`lanczos`'s check of its
    tolerance, made without an operator (a string failed at the comparison, NaN stopped no
    run early and inf stopped every one at once).
    ``name`` and ``num_iter``: what the caller's options for the tolerance and the most
    iterations are called, for the message."""
    return checked_float_argument(name, tol, 0, f"; 0 runs {num_iter} steps")


@checked_keywords()
def lanczos(
    A: Operand,
    k: int = 1,
    *,
    num_iter: int | None = None,
    tol: float = 1e-6,
    which: str = "largest",
    generator: torch.Generator | None = None,
    v0: Tensor | None = None,
    criterion: str = "residual",
    dtype: torch.dtype | None = None,
    check_copies: bool = False,
) -> tuple[Tensor, Tensor]:
    """k extreme eigenpairs of a symmetric operator by Lanczos with full re-orthogonalisation.

    Args:
        A: symmetric (d, d) tensor or :class:`LinearOperator`.
        k: number of eigenpairs wanted (per end for ``which="both"``).
        num_iter: maximum Krylov dimension (default ``min(d, max(2k + 60, 4k))``); a
            ``RuntimeWarning`` says when the wanted pairs did not reach ``tol`` within it.
        tol: stop once every wanted Ritz pair has residual ‖A y − θ y‖ = |β_m s_m| below
            ``tol · max|θ|`` (relative to the spectral radius estimate, so eigenvalues near
            zero converge too). ``tol=0`` always runs ``num_iter`` steps. After a restart
            (an invariant subspace was found) and for k ≥ 2, the new block's extreme Ritz
            value must converge as well: a repeated eigenvalue's copies show up one per
            restart, and an exact smaller value from an earlier block must not be taken
            for the k-th. Restarts happen at a breakdown only: without one, a start vector's
            Krylov space holds one direction of each eigenspace, so an exactly repeated
            eigenvalue among the k can come out once, the next distinct eigenvalue in its
            place (5, 4, 4, 3.9, ... read as 5, 4, 3.9), and so can the members of a cluster
            narrower than the tolerance (0, 0, 0, 1e-12, 3e-11, 1e-10 below a bulk from 0.5,
            smallest first, read as two values, then 0.5; ``check_copies`` finds the missed
            copies of both). At a breakdown of a block begun at a random vector the
            iteration ends when that block's extreme values, and the previous random
            block's, do not beat the k-th wanted one: nothing left in the space can change
            the wanted values (c·I takes k + 1 products; two blocks, as a start with a
            component along an extreme eigenvector below the breakdown threshold misses it).
        criterion: ``"residual"`` (above; a residual r bounds the eigenvalue error by r²/gap)
            or ``"error_bound"``: stop once that bound on the eigenvalue error,
            min(r, r²/gap) with gap the distance from θ to the nearest other Ritz value (the
            Kato–Temple / Kahan–Parlett estimate), is below ``tol · |θ|`` for every wanted θ —
            for eigenvalues only, it stops much earlier at the same eigenvalue accuracy (the
            Ritz vectors' accuracy is then ~√(tol · |θ| · gap), not tol);
            or ``"ritz_change"``: stop when no wanted Ritz value moved by more than
            ``tol · |θ|`` since the previous step — PyHessian's power-iteration rule, looser
            (use it to compare at the same tolerance).
        which: ``"largest"`` (algebraic, descending), ``"smallest"`` (most negative first,
            ascending), ``"both"`` (k largest descending, then k smallest ascending: 2k pairs),
            ``"magnitude"`` (largest |λ| first).
        generator: seeds the random start vector.
        v0: explicit start vector (overrides ``generator``).
        dtype: working precision of the Krylov basis, re-orthogonalisation and Ritz vectors
            (default ``A``'s, float32 for a float16 or bfloat16 ``A``, whose own precision
            loses the basis' orthogonality at once). ``torch.float64`` on a float32 operator
            keeps the products in float32 and removes the float32 floor of the recurrence
            (relative eigenvalue errors ~5e-9 instead of ~5e-7 on a 669,706-parameter MLP).
        check_copies: after convergence, look for copies the Krylov space missed (a repeated
            eigenvalue, a cluster narrower than ``tol``): Lanczos again, for one pair (per end
            for ``"both"``), on (I − VVᵀ) A (I − VVᵀ) with V the pairs found, from a random
            start orthogonal to V; a value that beats or ties the k-th wanted one within
            ``tol`` joins them and the check repeats until a run finds none. 5, 4, 4, 3.9
            over a bulk below 3 then reads 5, 4, 4 (26-30 -> 92-101 products, d = 100, k = 3), the
            near-zero cluster above its 8 smallest values (36 -> 120-122). On distinct spectra
            the answer is unchanged and the check costs 1.7-2.9x the products (d = 200-300,
            k = 1-5: one more run to the extreme of the rest, which may be a bulk's edge).

    Returns:
        ``(eigvals, eigvecs)``: eigvals (k,) (or (2k,) for ``"both"``) in the working dtype
        (``dtype``, else ``A``'s or float32) on ``A``'s device; eigvecs (d, k) orthonormal
        columns (signs arbitrary).
    """
    check_which(which)
    op = working_operator(A, dtype)
    d = op.shape[0]
    k = checked_count_argument("k", k, d, "d")
    if which == "both" and 2 * k > d:
        raise ValueError(f"which='both' with k={k} needs 2k <= d = {d}")
    tol = check_tol(tol)
    check_copies = check_flag("check_copies", check_copies, error=ConfigError)
    if criterion not in ("residual", "error_bound", "ritz_change"):
        raise ValueError(f"Invalid criterion={criterion!r}: expected 'residual', 'error_bound' "
                         "or 'ritz_change'")
    # True was 1 iteration, 30.0 a TypeError from range()
    num_iter = checked_int_argument("num_iter", num_iter, 1, ", or None: the default",
                                    optional=True)
    want = 2 * k if which == "both" else k
    m_max = min(d, num_iter if num_iter is not None else max(2 * want + 60, 4 * want))
    if m_max < want:
        raise ValueError(f"num_iter={num_iter} is smaller than the number of pairs wanted ({want})")

    def run(exclude: Tensor | None, k: int) -> tuple[np.ndarray, Tensor, float, np.ndarray]:
        """The k wanted Ritz values (as ``which`` orders them), their vectors, the spectral
        radius estimate and the Ritz indices of A from ``v0``, or (``exclude`` given) of A
        deflated by those columns from a random start orthogonal to them."""
        want = 2 * k if which == "both" else k
        previous: list[np.ndarray] = []
        first = v0 if exclude is None else None

        def relative(theta: np.ndarray, idx: np.ndarray, r: np.ndarray) -> np.ndarray:
            """What ``tol`` bounds for the wanted Ritz pairs with residual norms r."""
            if criterion == "error_bound":
                return eigenvalue_error_bound(theta, idx, r) / np.maximum(np.abs(theta[idx]),
                                                                          1e-300)
            return r / max(float(np.abs(theta).max()), 1e-300)

        def converged(alpha: Tensor, beta: Tensor, _basis: Tensor, b: float) -> bool:
            j = len(alpha)
            if tol == 0 or j < want:
                return False
            alpha, beta = alpha.numpy(), beta.numpy()
            theta, s = tridiagonal_eigh(alpha, beta)
            idx = select_ritz(theta, k, which)
            if criterion == "ritz_change":
                now = theta[idx]
                prev = previous[-1] if previous else None
                previous.append(now)
                return prev is not None and bool((np.abs(now - prev) <= tol * np.abs(now)).all())
            if not bool((relative(theta, idx, np.abs(b * s[-1, idx])) <= tol).all()):
                return False
            restarts = np.flatnonzero(beta == 0)
            if k == 1 or len(restarts) == 0:
                return True
            # after a restart the wanted values may be exact ones from an earlier, invariant block
            # while the current block, exploring the rest of the space, has not shown its own
            # extreme value yet (a repeated eigenvalue's next copy): that one must converge too
            start = int(restarts[-1]) + 1
            tb, sb = tridiagonal_eigh(alpha[start:], beta[start:])
            ends = select_ritz(tb, 1, which)
            return bool(np.abs(b * sb[-1, ends]).max()
                        <= tol * max(float(np.abs(theta).max()), 1e-300))

        quiet = 0   # consecutive random-start blocks whose ends did not beat the k-th value

        def complete_at_breakdown(alpha: Tensor, beta: Tensor) -> bool:
            # A block begun at a random vector spans, once invariant, one vector of each
            # eigenspace of the rest of the space it explored: its extreme Ritz values are that
            # rest's extreme eigenvalues, exactly. Copies still hidden in what is left lie
            # between them, so they cannot change the wanted values unless those ends beat the
            # k-th wanted one; otherwise restarting (one product a block on c·I) finds nothing.
            # In floating point a breakdown is |β| below 100·eps·scale, so a start whose
            # component along an extreme eigenvector is below that (relative to the gap) ends
            # its block without it: I + 9uuᵀ with uᵀv₀ = 1e-6 read 1 for 10. Two independent
            # random blocks must agree before the iteration ends (that miss needs both).
            # The first block began at v0 where one is given: a chosen vector, which may miss
            # eigenspaces (unlike a random one), so its ends say nothing of the rest.
            nonlocal quiet
            alpha, beta = alpha.numpy(), beta.numpy()
            restarts = np.flatnonzero(beta == 0)
            start = int(restarts[-1]) + 1 if len(restarts) else 0
            if tol == 0 or (start == 0 and first is not None) or len(alpha) < want:
                quiet = 0
                return False
            theta = tridiagonal_eigh(alpha, beta)[0]
            ends = tridiagonal_eigh(alpha[start:], beta[start:])[0][[0, -1]]
            idx = select_ritz(theta, k, which)
            kth = theta[idx]
            margin = tol * (float(np.abs(theta).max()) if criterion == "residual"
                            else float(np.abs(kth).min()))
            if which == "largest":
                done = ends[1] <= kth[-1] + margin
            elif which == "smallest":
                done = ends[0] >= kth[-1] - margin
            elif which == "magnitude":
                done = np.abs(ends).max() <= abs(kth[-1]) + margin
            else:
                done = ends[1] <= kth[k - 1] + margin and ends[0] >= kth[-1] - margin
            quiet = quiet + 1 if done else 0
            return quiet >= 2

        operator = op if exclude is None else _Deflated(op, exclude)
        res = lanczos_decomposition(operator, m_max, v0=first, generator=generator,
                                    stop=converged, stop_at_breakdown=complete_at_breakdown,
                                    exclude=exclude)
        theta, s = tridiagonal_eigh(res.alpha.numpy(), res.beta.numpy())
        idx = select_ritz(theta, k, which)
        if tol > 0 and criterion != "ritz_change" and len(res.alpha) < d:
            worst = float(relative(theta, idx, np.abs(res.residual * s[-1, idx])).max())
            if worst > tol:
                what = "error bound" if criterion == "error_bound" else "residual"
                values, advice = _NAMED.get()
                warn(f"{values}: {want} eigenpair(s) not converged after {len(res.alpha)} "
                     f"iterations (relative {what} {worst:.1e} > tol {tol:g}); {advice}",
                     RuntimeWarning)
        vecs = res.basis.T @ torch.from_numpy(s[:, idx]).to(device=op.device, dtype=op.dtype)
        return theta[idx], vecs, float(np.abs(theta).max()), idx

    vals, vecs, scale, _ = run(None, k)
    if check_copies:
        vals, vecs = _deflation_checked(run, vals, vecs, scale, k, which, tol, criterion)
    return torch.from_numpy(vals).to(device=op.device, dtype=op.dtype), vecs


def _wanted_order(vals: np.ndarray, which: str) -> np.ndarray:
    """Indices of ``vals`` in the order ``which`` returns them (ties keep their order)."""
    if which == "largest":
        return np.argsort(-vals, kind="stable")
    if which == "smallest":
        return np.argsort(vals, kind="stable")
    return np.argsort(-np.abs(vals), kind="stable")


def _beats_or_ties(theta: float, kth: float, margin: float, which: str) -> bool:
    if which == "largest":
        return bool(theta >= kth - margin)
    if which == "smallest":
        return bool(theta <= kth + margin)
    return bool(abs(theta) >= abs(kth) - margin)


def _deflation_checked(run: Callable[[Tensor | None, int],
                                     tuple[np.ndarray, Tensor, float, np.ndarray]],
                       vals: np.ndarray, vecs: Tensor, scale: float,
                       k: int, which: str, tol: float, criterion: str
                       ) -> tuple[np.ndarray, Tensor]:
    """The wanted pairs ``(vals, vecs)`` of a Lanczos ``run`` checked for copies it missed:
    ``run(V, 1)`` for one pair (per end for "both") on (I − VVᵀ) A (I − VVᵀ),
    V every pair found so far, from a random start orthogonal to V; a value that beats or
    ties (within ``tol``) the k-th wanted one joins the pairs found, and the check repeats
    until a run finds none (one pair a run: k pairs a run cost more products on every
    spectrum tried, the k-th of the rest converging slowly inside a bulk).
    Each run explores a smaller space, so the check ends; every value kept is a converged
    Ritz value of A on the complement of the others, so the vectors stay orthonormal."""
    ends = ["largest", "smallest"] if which == "both" else [which]
    # per end: every pair found at it, in the order found (the wanted k are the best of them)
    found = {end: (vals[i * k:(i + 1) * k], vecs[:, i * k:(i + 1) * k])
             for i, end in enumerate(ends)}

    def wanted(end: str) -> tuple[np.ndarray, Tensor]:
        v, x = found[end]
        order = _wanted_order(v, end)[:k]
        return v[order], x[:, order]

    while True:
        pool = torch.cat([x for _, x in found.values()], dim=1)
        if pool.shape[1] >= pool.shape[0]:     # the whole space
            break
        theta, y, radius, ritz = run(pool, 1)
        scale = max(scale, radius)
        added = False
        per_end = len(theta) // len(ends)
        taken: set[int] = set()
        for i, end in enumerate(ends):
            best = float(wanted(end)[0][-1])
            margin = tol * (scale if criterion == "residual" else abs(best))
            # "both" on a space of fewer than 2k dimensions gives a Ritz pair to both ends
            mine = [j for j in range(i * per_end, (i + 1) * per_end) if ritz[j] not in taken]
            new = [j for j in mine if _beats_or_ties(theta[j], best, margin, end)]
            taken.update(int(ritz[j]) for j in new)
            if new:
                v, x = found[end]
                found[end] = (np.concatenate([v, theta[new]]), torch.cat([x, y[:, new]], 1))
                added = True
        if not added:
            break
    pairs = [wanted(end) for end in ends]
    return np.concatenate([v for v, _ in pairs]), torch.cat([x for _, x in pairs], dim=1)


#: the eigenvalues and the advice a warning that Lanczos did not converge names: "lanczos" and
#: "raise num_iter" unless a :func:`convergence_warnings_named` block says otherwise
_NAMED: ContextVar[tuple[str, str]] = ContextVar("lanczos_warning_named",
                                                 default=("lanczos", "raise num_iter"))


@contextmanager
def convergence_warnings_named(values: str, advice: str) -> Iterator[None]:
    """The warnings of the block's :func:`lanczos` calls that their wanted pairs did not
    converge name the ``values`` they are about in place of ``lanczos`` and ``advice`` in
    place of "raise num_iter": where a command's flag or an instrument's option sets
    ``num_iter``, the warning names that, and which series it concerns. Named where they are
    given, not caught and given again: leaving a ``warnings.catch_warnings`` block clears every
    module's record of the warnings it showed, so each warning of a training run (this one, a
    vmap fallback, any of the user's) came again at every measurement. Other warnings are
    untouched."""
    token = _NAMED.set((values, advice))
    try:
        yield
    finally:
        _NAMED.reset(token)


def eigenvalue_error_bound(theta: np.ndarray, idx: np.ndarray,
                           residuals: np.ndarray) -> np.ndarray:
    """min(r, r²/gap) for the Ritz values ``theta[idx]`` with residual norms r: |λ − θ| ≤ r
    always, and ≤ r²/gap when θ is separated by gap from the rest of the spectrum (estimated
    by the other Ritz values)."""
    t = theta[idx]
    dist = np.abs(t[:, None] - theta[None, :])
    dist[np.arange(len(idx)), idx] = np.inf
    gap = dist.min(1)
    # no other Ritz value yet (a one-step Krylov space): nothing estimates the gap
    with np.errstate(divide="ignore"):
        return np.where(np.isinf(gap), residuals, np.minimum(residuals, residuals ** 2 / gap))


@checked_keywords()
def power_iteration(
    A: Operand,
    *,
    num_iter: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> tuple[float, Tensor, int]:
    """The largest-magnitude eigenpair by power iteration (PyHessian's method, kept for
    comparison: Lanczos converges in far fewer products).

    Stops when the Rayleigh quotient changes by less than ``tol`` relative to its magnitude
    (PyHessian's criterion; ``tol=0`` runs ``num_iter`` steps). Returns ``(eigenvalue,
    eigenvector, num_matvecs)``.
    """
    num_iter = checked_int_argument("num_iter", num_iter, 1)
    tol = check_tol(tol)        # NaN ran every step, inf stopped at the second
    op = as_operator(A)
    v = random_vector(op, generator)
    v = v / torch.linalg.vector_norm(v)
    lam = None
    for it in range(1, num_iter + 1):
        w = op.matvec(v)
        new = float(torch.dot(w, v))
        nrm = torch.linalg.vector_norm(w)
        if nrm == 0:
            return 0.0, v, it
        v = w / nrm
        if lam is not None and abs(new - lam) / (abs(lam) + 1e-6) < tol:
            return new, v, it
        lam = new
    return float(lam), v, num_iter


__all__ = ["LanczosResult", "check_tol", "lanczos", "lanczos_decomposition",
           "power_iteration"]
