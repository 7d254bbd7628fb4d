"""Curvature estimators on any symmetric ``Tensor | LinearOperator`` (Hessian, GGN, Fisher, ...).

Every estimator here takes ``A`` as a dense square tensor or a
:class:`~sgdlab.operators.LinearOperator` (through :func:`~sgdlab.operators.as_operator`), so the
same code is checked on a dense float64 matrix in the tests and runs on a d = 10⁵ Hessian.
The ``hessian_*`` conveniences build a :class:`~sgdlab.operators.HessianOperator` of the
*mean* loss L(θ) = (1/N) Σ_i ℓ_i over ``data`` (model in its current train/eval mode).

Estimators:

- :func:`lanczos` — k extreme eigenpairs, Lanczos with full re-orthogonalisation;
- :func:`power_iteration` — the top (largest-magnitude) eigenpair, for comparison;
- :func:`hutchinson_trace` — Tr A with Rademacher probes and its standard error;
- :func:`frobenius_norm` — ‖A‖_F from E‖Av‖² (Jastrzebski et al.);
- :func:`spectral_density` — stochastic Lanczos quadrature (Ubaru et al. 2017; Ghorbani et al.
  2019) broadened by a Gaussian on a grid;
- :func:`dense_hessian`, :func:`hessian_spectrum`, :func:`harmonic_mean_eigenvalue` — exact
  Hessians and full spectra for small models (Chaudhari's thesis §4.5.3).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sgdlab.operators import HessianOperator, LinearOperator, as_operator
from sgdlab.operators.batches import Data

Operand = "Tensor | LinearOperator"


def _random_vector(op: LinearOperator, generator: torch.Generator | None,
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


def _check_which(which: str) -> None:
    if which not in ("largest", "smallest", "both", "magnitude"):
        raise ValueError(
            f"Invalid which={which!r}: expected 'largest', 'smallest', 'both' or 'magnitude'")


# --------------------------------------------------------------------------------------------
# Lanczos
# --------------------------------------------------------------------------------------------

@dataclass
class LanczosResult:
    """The raw Lanczos decomposition A Q ≈ Q T (used by SLQ and by :func:`lanczos`)."""

    alpha: Tensor        # (m,) float64, diagonal of T
    beta: Tensor         # (m-1,) float64, off-diagonal of T
    basis: Tensor | None  # (m, d) orthonormal rows (None when not kept)
    residual: float      # |β_m|, the norm of the next (unused) Lanczos vector

    def tridiagonal(self) -> Tensor:
        m = len(self.alpha)
        t = torch.diag(self.alpha)
        if m > 1:
            t += torch.diag(self.beta, 1) + torch.diag(self.beta, -1)
        return t


def _select(theta: Tensor, k: int, which: str) -> Tensor:
    """Indices of the wanted Ritz values (theta ascending)."""
    m = len(theta)
    k = min(k, m)
    if which == "largest":
        return torch.arange(m - 1, m - 1 - k, -1)
    if which == "smallest":
        return torch.arange(0, k)
    if which == "magnitude":
        return torch.argsort(theta.abs(), descending=True)[:k]
    # both: k largest (descending) then k smallest (ascending); overlap allowed when m < 2k
    return torch.cat([torch.arange(m - 1, m - 1 - k, -1), torch.arange(0, k)])


def lanczos_decomposition(
    A: Operand,
    num_iter: int,
    *,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    keep_basis: bool = True,
    stop: Callable[[Tensor, Tensor, Tensor, float], bool] | None = None,
    restart_on_breakdown: bool = True,
) -> LanczosResult:
    """Run ``num_iter`` Lanczos steps from ``v0`` (random Gaussian if None) with full
    re-orthogonalisation (classical Gram–Schmidt applied twice, so the basis stays orthonormal to
    working precision). ``stop(alpha, beta, basis, beta_next)`` may end the iteration early.

    On breakdown (an invariant subspace is found, |β| ≈ 0) the iteration restarts from a fresh
    random vector orthogonal to the basis (T decouples, β = 0), so multiplicities are recovered;
    with ``restart_on_breakdown=False`` (SLQ) it stops instead.
    """
    op = as_operator(A)
    d = op.shape[0]
    m = max(1, min(int(num_iter), d))
    q = _random_vector(op, generator) if v0 is None else v0.to(device=op.device, dtype=op.dtype)
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
        w = op.matvec(basis[j])
        if not torch.isfinite(w).all():
            raise FloatingPointError(
                "operator returned non-finite values (diverged model or bad data?)")
        a = float(torch.dot(w, basis[j]))
        alpha.append(a)
        # full re-orthogonalisation against all previous vectors, twice (DGKS)
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = float(torch.linalg.vector_norm(w))
        scale = max(scale, abs(a), b)
        beta_next = b
        breakdown = b <= 10 * eps * max(scale, 1e-300) * math.sqrt(d)
        # at a breakdown the Ritz values are exact but multiplicities may be missing: restart
        # rather than ask ``stop`` (whose residuals would all read zero)
        if (stop is not None and not (breakdown and restart_on_breakdown)
                and stop(torch.tensor(alpha, dtype=torch.float64),
                         torch.tensor(beta, dtype=torch.float64), basis[: j + 1], b)):
            m = j + 1
            break
        if j == m - 1:
            break
        if breakdown:
            if not restart_on_breakdown:
                m = j + 1
                beta_next = 0.0
                break
            w = _random_vector(op, generator)
            for _ in range(2):
                w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
            wn = torch.linalg.vector_norm(w)
            if wn <= eps:  # the whole space is spanned
                m = j + 1
                beta_next = 0.0
                break
            beta.append(0.0)
            basis[j + 1] = w / wn
        else:
            beta.append(b)
            basis[j + 1] = w / b
    return LanczosResult(
        alpha=torch.tensor(alpha[:m], dtype=torch.float64),
        beta=torch.tensor(beta[: m - 1], dtype=torch.float64),
        basis=basis[:m] if keep_basis else None,
        residual=beta_next,
    )


def _lanczos_lockstep(op: LinearOperator, starts: Tensor, m: int) -> list[LanczosResult]:
    """``lanczos_decomposition(..., restart_on_breakdown=False, keep_basis=False)`` for the p
    columns of ``starts`` (d, p) at once: p independent recurrences whose products go through
    one ``matmat`` per step (one vmapped backward for the Hessian, or per batch of a
    DataLoader). A recurrence that breaks down stops; the others go on."""
    d, p = starts.shape
    eps = torch.finfo(op.dtype).eps
    nrm = torch.linalg.vector_norm(starts, dim=0)
    if not (torch.isfinite(nrm).all() and (nrm > 0).all()):
        raise ValueError("Lanczos start vector must be finite and nonzero")
    basis = torch.zeros(p, m, d, dtype=op.dtype, device=op.device)
    basis[:, 0] = (starts / nrm).T
    alpha: list[list[float]] = [[] for _ in range(p)]
    beta: list[list[float]] = [[] for _ in range(p)]
    scale, beta_next = [0.0] * p, [0.0] * p
    active = list(range(p))
    for j in range(m):
        w = torch.zeros(p, d, dtype=op.dtype, device=op.device)
        w[active] = op.matmat(basis[active, j].T).T
        if not torch.isfinite(w).all():
            raise FloatingPointError(
                "operator returned non-finite values (diverged model or bad data?)")
        a = (w * basis[:, j]).sum(1).tolist()
        for r in active:                             # full re-orthogonalisation, twice
            q = basis[r, : j + 1]                    # contiguous (j+1, d): no copies
            for _ in range(2):
                w[r] -= q.T @ (q @ w[r])
        b = torch.linalg.vector_norm(w, dim=1).tolist()
        still = []
        for r in active:
            alpha[r].append(a[r])
            scale[r] = max(scale[r], abs(a[r]), b[r])
            beta_next[r] = b[r]
            if j == m - 1:
                continue
            if b[r] <= 10 * eps * max(scale[r], 1e-300) * math.sqrt(d):   # breakdown: stop
                beta_next[r] = 0.0
                continue
            beta[r].append(b[r])
            basis[r, j + 1] = w[r] / b[r]
            still.append(r)
        active = still
        if not active:
            break
    return [LanczosResult(alpha=torch.tensor(alpha[r], dtype=torch.float64),
                          beta=torch.tensor(beta[r], dtype=torch.float64), basis=None,
                          residual=beta_next[r]) for r in range(p)]


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
) -> tuple[Tensor, Tensor]:
    """k extreme eigenpairs of a symmetric operator by Lanczos with full re-orthogonalisation.

    Args:
        A: symmetric (d, d) tensor or :class:`LinearOperator`.
        k: number of eigenpairs wanted (per end for ``which="both"``).
        num_iter: maximum Krylov dimension (default ``min(d, max(2k + 60, 4k))``); a
            ``RuntimeWarning`` says when the wanted pairs did not reach ``tol`` within it.
        tol: stop once every wanted Ritz pair has residual ‖A y − θ y‖ = |β_m s_m| below
            ``tol · max|θ|`` (relative to the spectral radius estimate, so eigenvalues near
            zero converge too). ``tol=0`` always runs ``num_iter`` steps.
        criterion: ``"residual"`` (above; a residual r bounds the eigenvalue error by r²/gap)
            or ``"ritz_change"``: stop when no wanted Ritz value moved by more than
            ``tol · |θ|`` since the previous step — PyHessian's power-iteration rule, looser
            (use it to compare at the same tolerance).
        which: ``"largest"`` (algebraic, descending), ``"smallest"`` (most negative first,
            ascending), ``"both"`` (k largest descending, then k smallest ascending: 2k pairs),
            ``"magnitude"`` (largest |λ| first).
        generator: seeds the random start vector.
        v0: explicit start vector (overrides ``generator``).

    Returns:
        ``(eigvals, eigvecs)``: eigvals (k,) (or (2k,) for ``"both"``) in ``A``'s dtype and
        device; eigvecs (d, k) orthonormal columns (signs arbitrary).
    """
    _check_which(which)
    op = as_operator(A)
    d = op.shape[0]
    if k < 1 or k > d:
        raise ValueError(f"Invalid k={k}: need 1 <= k <= d = {d}")
    if which == "both" and 2 * k > d:
        raise ValueError(f"which='both' with k={k} needs 2k <= d = {d}")
    if tol < 0:
        raise ValueError(f"Invalid tol={tol} (must be >= 0)")
    if criterion not in ("residual", "ritz_change"):
        raise ValueError(f"Invalid criterion={criterion!r}: expected 'residual' or 'ritz_change'")
    want = 2 * k if which == "both" else k
    m_max = min(d, num_iter if num_iter is not None else max(2 * want + 60, 4 * want))
    if m_max < want:
        raise ValueError(f"num_iter={num_iter} is smaller than the number of pairs wanted ({want})")

    previous: list[Tensor] = []

    def converged(alpha: Tensor, beta: Tensor, _basis: Tensor, b: float) -> bool:
        j = len(alpha)
        if tol == 0 or j < want:
            return False
        t = torch.diag(alpha)
        if j > 1:
            t += torch.diag(beta, 1) + torch.diag(beta, -1)
        theta, s = torch.linalg.eigh(t)
        idx = _select(theta, k, which)
        if criterion == "ritz_change":
            now = theta[idx]
            prev = previous[-1] if previous else None
            previous.append(now)
            return prev is not None and bool(((now - prev).abs() <= tol * now.abs()).all())
        res = (b * s[-1, idx]).abs()
        return bool((res <= tol * theta.abs().max().clamp_min(1e-300)).all())

    res = lanczos_decomposition(op, m_max, v0=v0, generator=generator, stop=converged)
    theta, s = torch.linalg.eigh(res.tridiagonal())
    idx = _select(theta, k, which)
    if tol > 0 and criterion == "residual" and len(res.alpha) < d:
        resid = float((res.residual * s[-1, idx]).abs().max())
        scale = float(theta.abs().max().clamp_min(1e-300))
        if resid > tol * scale:
            warnings.warn(f"lanczos: {want} eigenpair(s) not converged after {len(res.alpha)} "
                          f"iterations (relative residual {resid / scale:.1e} > tol {tol:g}); "
                          "raise num_iter", RuntimeWarning, stacklevel=2)
    vals = theta[idx].to(device=op.device, dtype=op.dtype)
    vecs = res.basis.T @ s[:, idx].to(device=op.device, dtype=op.dtype)
    return vals, vecs


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
    (PyHessian's criterion). Returns ``(eigenvalue, eigenvector, num_matvecs)``.
    """
    op = as_operator(A)
    v = _random_vector(op, generator)
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


# --------------------------------------------------------------------------------------------
# Trace, Frobenius norm
# --------------------------------------------------------------------------------------------

@dataclass
class Estimate:
    """A Monte-Carlo estimate with its standard error (std of the samples / sqrt(n))."""

    value: float
    stderr: float
    num_samples: int

    def __float__(self) -> float:
        return self.value


def _mc(samples: list[float]) -> Estimate:
    t = torch.tensor(samples, dtype=torch.float64)
    n = len(samples)
    se = float(t.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return Estimate(float(t.mean()), se, n)


def _probe_block(op: LinearOperator, b: int, generator: torch.Generator | None,
                 kind: str) -> Tensor:
    """(d, b) block of independent probes (columns)."""
    gdev = generator.device if generator is not None else op.device
    d = op.shape[0]
    if kind == "gaussian":
        v = torch.randn(b, d, generator=generator, device=gdev, dtype=torch.float64)
    elif kind == "rademacher":
        # drawn directly in the operator's dtype (±1 are exact; the same generator stream as
        # int64 draws) and returned as a transposed view: each probe's rows stay contiguous
        v = torch.randint(0, 2, (b, d), generator=generator, device=gdev, dtype=op.dtype)
        return v.mul_(2).sub_(1).to(device=op.device).T
    else:
        raise ValueError(f"Unknown probe distribution {kind!r} (gaussian | rademacher)")
    return v.T.to(device=op.device, dtype=op.dtype)


def _probe_samples(op: LinearOperator, num_probes: int, generator, kind: str,
                   block_size: int | None, stat: Callable[[Tensor], Tensor]) -> list[float]:
    """``stat(V)`` -> (b,) samples for (d, b) blocks of probes; ``block_size=None`` lets the
    operator choose the block from d and its memory budget (``probe_block_size``). On CPU
    Rademacher probes are the same whatever the block (one generator stream), so are the
    samples (Gaussian blocks of different shapes draw different numbers)."""
    if num_probes < 1:
        raise ValueError(f"Invalid num_probes={num_probes} (must be >= 1)")
    if block_size is None:
        block_size = op.probe_block_size()
    if block_size < 1:
        raise ValueError(f"Invalid block_size={block_size} (must be >= 1)")
    samples: list[float] = []
    for i in range(0, num_probes, block_size):
        v = _probe_block(op, min(block_size, num_probes - i), generator, kind)
        samples.extend(stat(v).double().tolist())
    return samples


def hutchinson_trace(
    A: Operand,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
    block_size: int | None = None,
) -> Estimate:
    """Tr A ≈ (1/M) Σ_m v_mᵀ A v_m, v_m Rademacher (±1) probes (Hutchinson 1990).

    The standard error is the sample standard deviation of vᵀAv over probes divided by √M.
    Probes are applied ``block_size`` at a time (default: the operator's
    ``probe_block_size()``) through ``LinearOperator.quadratic_forms``, which for a Hessian of
    an ``nn.Sequential`` MLP is one forward Taylor-mode pass per block (no H v formed), and
    otherwise ``(V ⊙ A V).sum(0)`` with A V one vmapped backward per block.
    """
    op = as_operator(A)
    return _mc(_probe_samples(op, num_probes, generator, distribution, block_size,
                              op.quadratic_forms))


def frobenius_norm(
    A: Operand,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    distribution: str = "gaussian",
    block_size: int | None = None,
) -> Estimate:
    """‖A‖_F estimated from E_v ‖A v‖² = ‖A‖²_F (v with E[v vᵀ] = I: Gaussian or Rademacher),
    as Jastrzebski et al. (2018/2020) estimate the Hessian's Frobenius norm.

    Returns the square root of the mean of ‖A v‖²; the standard error is propagated by the delta
    method (se(‖A‖²_F) / (2‖A‖_F)).
    """
    op = as_operator(A)
    sq = _mc(_probe_samples(op, num_probes, generator, distribution, block_size,
                            lambda v: op.matmat(v).square().sum(0)))
    val = math.sqrt(max(sq.value, 0.0))
    se = sq.stderr / (2 * val) if val > 0 else float("nan")
    return Estimate(val, se, sq.num_samples)


# --------------------------------------------------------------------------------------------
# Spectral density (SLQ)
# --------------------------------------------------------------------------------------------

@dataclass
class SpectralDensity:
    """A Gaussian-broadened spectral density φ(t) = (1/d) Σ_i N(t; λ_i, σ²) estimated by SLQ.

    ``nodes``/``weights`` are the quadrature nodes and weights per probe (weights of a probe sum
    to 1); ``grid``/``density`` the broadened density, which integrates to 1 over the grid when
    the grid covers the spectrum with margin.
    """

    grid: Tensor        # (G,)
    density: Tensor     # (G,)
    nodes: Tensor       # (probes, m)
    weights: Tensor     # (probes, m)
    sigma: float
    dim: int

    def moment(self, p: int) -> float:
        """(1/d) Tr A^p by quadrature (exact per probe for p <= 2m − 1; unbiased over probes)."""
        return float((self.weights * self.nodes ** p).sum(1).mean())

    def trace(self) -> float:
        return self.moment(1) * self.dim


def spectral_density(
    A: Operand,
    *,
    num_probes: int = 10,
    num_iter: int = 80,
    sigma: float | None = None,
    grid: Tensor | int = 1000,
    margin: float = 0.05,
    generator: torch.Generator | None = None,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019).

    For each Gaussian probe v (normalised), m Lanczos steps give T = S Θ Sᵀ (the probes' runs go
    in lockstep, ``probe_block_size()`` of them sharing one ``matmat`` per step, bounded by
    the operator's ``probe_memory_budget`` for their bases); the quadrature
    vᵀ f(A) v ≈ Σ_j S[0,j]² f(θ_j) with f a Gaussian kernel of width ``sigma`` gives the
    density φ(t) = (1/d) Tr N(t; A, σ²) averaged over probes.

    Args:
        num_iter: Lanczos steps per probe (m).
        sigma: kernel width; default 1% of the estimated spectral range (at least 1e-12).
        grid: number of grid points spanning [λ_min − margin·range, λ_max + margin·range]
            (plus 5σ on each side), or an explicit 1-D grid.
    """
    if num_probes < 1 or num_iter < 1:
        raise ValueError("num_probes and num_iter must be >= 1")
    op = as_operator(A)
    nodes, weights = [], []
    starts = [_random_vector(op, generator) for _ in range(num_probes)]   # the sequential draws
    m = max(1, min(int(num_iter), op.shape[0]))
    basis_bytes = m * op.shape[0] * torch.finfo(op.dtype).bits // 8
    block = max(1, min(op.probe_block_size(), op.probe_memory_budget // max(1, basis_bytes)))
    for i in range(0, num_probes, block):
        for res in _lanczos_lockstep(op, torch.stack(starts[i:i + block], dim=1), m):
            theta, s = torch.linalg.eigh(res.tridiagonal())
            nodes.append(theta)
            weights.append(s[0] ** 2)
    m = max(len(t) for t in nodes)
    # pad probes that broke down early with zero-weight nodes
    n_t = torch.stack([torch.cat([t, t.new_full((m - len(t),), float(t[-1]))]) for t in nodes])
    w_t = torch.stack([torch.cat([w, w.new_zeros(m - len(w))]) for w in weights])
    lo, hi = float(n_t.min()), float(n_t.max())
    span = max(hi - lo, abs(hi), abs(lo), 1e-12)
    if sigma is None:
        sigma = max(0.01 * span, 1e-12)
    if sigma <= 0:
        raise ValueError(f"Invalid sigma={sigma} (must be > 0)")
    if isinstance(grid, int):
        pad = margin * span + 5 * sigma
        g = torch.linspace(lo - pad, hi + pad, grid, dtype=torch.float64)
    else:
        g = torch.as_tensor(grid, dtype=torch.float64).reshape(-1)
    diff = g[:, None, None] - n_t[None]
    kern = torch.exp(-0.5 * (diff / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = (kern * w_t[None]).sum(-1).mean(-1)
    return SpectralDensity(g, density, n_t, w_t, float(sigma), op.shape[0])


# --------------------------------------------------------------------------------------------
# Model conveniences
# --------------------------------------------------------------------------------------------

def hessian_eigenpairs(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    k: int = 1,
    which: str = "largest",
    **kw,
) -> tuple[Tensor, Tensor]:
    """k extreme eigenpairs of the Hessian of the mean loss over ``data`` (see :func:`lanczos`
    for ``which``, ``tol``, ``num_iter``, ``generator``)."""
    return lanczos(HessianOperator(model, loss_fn, data), k, which=which, **kw)


def hessian_top_eigenvalue(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Data, **kw
) -> float:
    """λ_max of the Hessian of the mean loss over ``data`` (Lanczos, ``tol`` relative)."""
    vals, _ = hessian_eigenpairs(model, loss_fn, data, 1, "largest", **kw)
    return float(vals[0])


def _operator(model, loss_fn, data, operator: str) -> LinearOperator:
    from sgdlab.operators import curvature_operator

    return curvature_operator(operator, model, loss_fn, data)


def hessian_bottom_eigenvalues(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Data, k: int = 1, **kw
) -> Tensor:
    """The k most negative (algebraically smallest) Hessian eigenvalues, ascending."""
    vals, _ = hessian_eigenpairs(model, loss_fn, data, k, "smallest", **kw)
    return vals


def hessian_trace(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    operator: str = "hessian",
) -> Estimate:
    """Hutchinson estimate of Tr ∇²L (mean loss over ``data``) with its standard error;
    ``operator="ggn"`` / ``"empirical_fisher"`` estimates those traces instead."""
    return hutchinson_trace(_operator(model, loss_fn, data, operator), num_probes,
                            generator=generator)


def hessian_frobenius_norm(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    num_probes: int = 100,
    *,
    generator: torch.Generator | None = None,
    operator: str = "hessian",
) -> Estimate:
    """‖∇²L‖_F estimated from E‖H v‖² (Jastrzebski et al.)."""
    return frobenius_norm(_operator(model, loss_fn, data, operator), num_probes,
                          generator=generator)


def hessian_spectral_density(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    *,
    operator: str = "hessian",
    **kw,
) -> SpectralDensity:
    """SLQ spectral density of the Hessian (see :func:`spectral_density` for options)."""
    return spectral_density(_operator(model, loss_fn, data, operator), **kw)


# --------------------------------------------------------------------------------------------
# Dense Hessians (small models)
# --------------------------------------------------------------------------------------------

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
    ((H + Hᵀ)/2) to remove round-off asymmetry. Refuses d > ``max_params`` (d² memory)."""
    op = HessianOperator(model, loss_fn, data)
    d = op.shape[0]
    if d > max_params:
        raise ValueError(f"dense Hessian of {d} parameters needs {d * d * 8 / 1e9:.1f} GB; "
                         f"raise max_params (now {max_params}) if you mean it, or use lanczos")
    h = op.to_dense(chunk_size)
    return (h + h.T) / 2


def hessian_spectrum(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Data, **kw
) -> Tensor:
    """All d Hessian eigenvalues, ascending (dense ``eigvalsh``; small models only — Chaudhari
    computes full spectra of ~50k-parameter networks this way)."""
    return torch.linalg.eigvalsh(dense_hessian(model, loss_fn, data, **kw))


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


def hutchpp_trace(
    A: Operand,
    num_matvecs: int = 102,
    *,
    generator: torch.Generator | None = None,
) -> Estimate:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): Tr A with a third of the products spent on
    a sketch Q = orth(A S) of the dominant range, whose trace Tr(Qᵀ A Q) is exact, and the rest
    on Hutchinson for the deflated remainder (I − QQᵀ) A (I − QQᵀ). For Hessians with a few
    outlying eigenvalues the variance is far below Hutchinson's at the same number of products.

    ``num_matvecs`` (≥ 3) is split m/3 sketch, m/3 for A Q, m/3 Rademacher probes; the standard
    error is that of the Hutchinson part (the sketched part has none given Q).
    """
    if num_matvecs < 3:
        raise ValueError(f"Invalid num_matvecs={num_matvecs} (Hutch++ needs >= 3)")
    op = as_operator(A)
    k = num_matvecs // 3
    b = op.probe_block_size()

    def blocked(f, m: Tensor) -> Tensor:   # bounded memory: at most b columns per call
        return torch.cat([f(m[:, i:i + b]) for i in range(0, m.shape[1], b)], dim=-1)

    s = _probe_block(op, k, generator, "rademacher")
    q, _ = torch.linalg.qr(blocked(op.matmat, s))
    exact = float(blocked(op.quadratic_forms, q).sum())     # Tr(Qᵀ A Q)
    g = _probe_block(op, num_matvecs - 2 * k, generator, "rademacher")
    g = g - q @ (q.T @ g)
    rest = _mc(blocked(op.quadratic_forms, g).double().tolist())
    return Estimate(exact + rest.value, rest.stderr, num_matvecs)
