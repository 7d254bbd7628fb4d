"""Gradient noise: the per-sample gradient covariance Σ and the diffusion matrix D(x).

Conventions (stated once, used everywhere in sgdlab):

- g_i = ∇ℓ(x_i; θ) is the gradient of the loss on sample i alone (``per_sample_gradients``),
  ḡ = (1/N) Σ_i g_i = ∇L(θ) the full-batch gradient of the mean loss.
- **Σ = (1/N) Σ_i (g_i − ḡ)(g_i − ḡ)ᵀ** — the *population* covariance (divide by N, not N − 1).
  Chaudhari's thesis (and Chaudhari & Soatto 2018) call this D(x): D(x) = (1/N) Σ_k ∇f_k ∇f_kᵀ
  − ∇f ∇fᵀ. It is stored as the factor F = (G − ḡ)/√N, shape (N, d), so Σ = Fᵀ F and nothing
  d x d is ever formed when d > N (spectra come from the N x N Gram matrix F Fᵀ).
- The mini-batch gradient g_B = (1/b) Σ_{i∈B} g_i has covariance
  - with replacement (b indices i.i.d. uniform; thesis eq. 6.4):   Cov g_B = Σ / b,
  - without replacement (b distinct indices; thesis eq. 6.5):
    Cov g_B = (N − b) / (b (N − 1)) · Σ = (1/b)(1 − b/N) · N/(N − 1) · Σ
    (the finite-population correction; derived from Var(Σ_{i∈B} g_i) = b(N−b)/(N−1) Σ for
    simple random sampling, and checked against enumeration of all mini-batches in the tests).
    The thesis prints eq. (6.5) as D_wo = (1/(N−1)) Σ_k g_k g_kᵀ − (1 − 1/(N−1)) ḡḡᵀ; its own
    proof's sums give (1 + 1/(N−1)) ḡḡᵀ = N/(N−1) ḡḡᵀ, i.e. D_wo = N/(N−1) · Σ, which is what
    is used here (the printed sign adds 2/(N−1) ḡḡᵀ; tests/measure/test_diffusion_thesis.py).
  :func:`minibatch_noise_factor` returns that scalar; :meth:`GradientCovariance.minibatch` the
  scaled covariance.
- ``centred=False`` (:func:`gradient_covariance`) gives the uncentred second moment
  M = (1/N) Σ_i g_i g_iᵀ = Σ + ḡḡᵀ instead, factor G/√N: Zhu et al.'s eq. (6) writes the Fisher
  information E[g gᵀ] so, which equals Σ where ḡ = 0 (docs/FIDELITY.md, "Which Σ §3 compares
  with H"). Every method below then reads M; a mini-batch's covariance is Σ's alone.
- The numerical rank uses numpy's ``matrix_rank`` threshold on the d x d matrix:
  λ_max · d · eps(dtype). The rank fraction is rank / d.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sgdlab.errors import (ConfigError, check_flag, checked_count_argument,
                           checked_float_argument, checked_keywords, int_at_least, plain_int)
from sgdlab.operators import LinearOperator, per_sample_gradients
from sgdlab.operators.factors import PerSampleFactors, per_sample_factors
from sgdlab.operators.batches import Data, check_mean_of_samples, num_samples
from sgdlab.operators.params import num_params
from sgdlab.operators.per_sample import check_chunk_size

# Above this size the Gram/d x d eigendecomposition is replaced by Lanczos on the implicit Gram.
DENSE_EIG_LIMIT = 6000


def _sample_count(value: object, what: str) -> int:
    """``value`` as an int when it is a whole number of samples (an int of Python, numpy or
    torch, or a whole float such as 4.0), else a ValueError naming ``what``: int() truncated
    2.5 to 2, and True passed as one sample."""
    v = plain_int(value)
    if not (int_at_least(v, -math.inf) or (isinstance(v, numbers.Real) and not isinstance(
            v, numbers.Integral) and float(v).is_integer())):
        raise ValueError(f"Invalid {what} {value!r} (a whole number of samples)")
    return int(v)


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` as an int when it is a whole number of samples >= 1, else a ValueError:
    the check of :func:`minibatch_noise_factor` that needs no data."""
    b = _sample_count(batch_size, "batch size")
    if b < 1:
        raise ValueError(f"Invalid batch size {batch_size} (must be >= 1)")
    return b


@checked_keywords()
def minibatch_noise_factor(batch_size: int, num_samples: int, *, replacement: bool = True) -> float:
    """c such that Cov[g_B] = c · Σ for a mini-batch of size b drawn from N samples.

    With replacement: c = 1/b (thesis eq. 6.4). Without replacement: c = (N − b)/(b (N − 1))
    (thesis eq. 6.5; = 0 for the full batch b = N). ``replacement``: a bool (numpy's too).
    """
    # "no" is truthy: with replacement; a ValueError as the other refusals here
    replacement = check_flag("replacement", replacement, error=ConfigError)
    b = check_batch_size(batch_size)
    n = _sample_count(num_samples, "number of samples")
    if n < 1:
        raise ValueError(f"Invalid number of samples {num_samples} (must be >= 1)")
    if replacement:
        return 1.0 / b
    if b > n:
        raise ValueError(f"batch size {b} exceeds the {n} samples (without replacement)")
    if n == 1:
        return 0.0
    return (n - b) / (b * (n - 1))


class CovarianceOperator(LinearOperator):
    """Σ = Fᵀ F as a :class:`LinearOperator` (two thin matmuls per product)."""

    def __init__(self, factor: Tensor):
        super().__init__(factor.shape[1], factor.dtype, factor.device)
        self.factor = factor

    def _matvec(self, v: Tensor) -> Tensor:
        return self.factor.T @ (self.factor @ v)


class _GramOperator(LinearOperator):
    """K = F Fᵀ (N x N) as an operator, for Lanczos when N is too large for a dense eigh."""

    def __init__(self, factor: Tensor):
        super().__init__(factor.shape[0], factor.dtype, factor.device)
        self.factor = factor

    def _matvec(self, v: Tensor) -> Tensor:
        return self.factor @ (self.factor.T @ v)


def _in_range(t: Tensor, quantity: str, dtype: torch.dtype) -> Tensor:
    """``t``, or a ``FloatingPointError`` (a measurement's word for a diverged model) when
    it holds a non-finite number: the gradients are finite (checked when Σ is built), so
    their products overflowed ``dtype`` (~1e19 per entry in float32)."""
    if not bool(torch.isfinite(t).all()):
        raise FloatingPointError(
            f"{quantity} overflows {dtype}: per-sample gradients too large for their "
            "products (diverged model?); in float64 (train.dtype: float64) they fit")
    return t


def _check_finite_gradients(t: Tensor) -> None:
    """The ``FloatingPointError`` of a Σ (:class:`GradientCovariance`, :class:`GradientVariance`)
    built from gradients with a non-finite entry: a diverged model or bad data."""
    if not bool(torch.isfinite(t).all()):
        raise FloatingPointError("non-finite gradients (diverged model or bad data?)")


class GradientCovariance:
    """Σ = Fᵀ F with F = (G − 1ḡᵀ)·sqrt(scale/N) (population covariance of per-sample gradients,
    times ``scale`` when built by :meth:`minibatch` / :meth:`scaled`); with ``centred=False``
    the second moment M = Fᵀ F, F = G·sqrt(scale/N) (module docstring).

    Two representations, same interface:

    - dense: the (N, d) factor F itself (``GradientCovariance(factor, mean, num_samples)``,
      ``scale`` then only recording the c that F already carries);
    - factored: per-layer activations and output gradients of a network of linear and
      convolution layers (:class:`~sgdlab.operators.factors.PerSampleFactors`), from which the Gram
      matrix, trace, diagonal, eigenvectors and noise samples are computed without ever forming
      the (N, d) matrix; ``factor`` materialises it on first access.

    Attributes:
        factor: F, shape (N, d) (materialised lazily in the factored representation).
        mean: ḡ, shape (d,), the full-batch gradient of the mean loss.
        num_samples: N.
        centred: whether F subtracts ḡ (Σ) or not (M).
    """

    def __init__(self, factor: Tensor | None, mean: Tensor, num_samples: int, *,
                 per_sample: PerSampleFactors | None = None, scale: float = 1.0,
                 centred: bool = True):
        if factor is None and per_sample is None:
            raise ValueError("GradientCovariance needs a factor or factored per-sample gradients")
        _check_finite_gradients(mean)
        self._factor, self.mean, self.num_samples = factor, mean, int(num_samples)
        self._ps, self._scale = per_sample, float(scale)
        self.centred = _check_centred(centred)
        self._gram: Tensor | None = None
        self._raw_gram: Tensor | None = None
        self._eigh: tuple[Tensor, Tensor, bool] | None = None

    @classmethod
    def from_per_sample(cls, ps: PerSampleFactors, scale: float = 1.0, *, centred: bool = True
                        ) -> "GradientCovariance":
        return cls(None, ps.mean(), ps.num_samples, per_sample=ps, scale=scale,
                   centred=centred)

    @property
    def factor(self) -> Tensor:
        if self._factor is None:
            g = self._ps.materialize()
            if self.centred:
                g = g - self.mean
            self._factor = g * math.sqrt(self._scale / self.num_samples)
        return self._factor

    @property
    def scale(self) -> float:
        """The factor c of c·Σ (:meth:`scaled`, :meth:`minibatch`); 1 for Σ itself."""
        return self._scale

    @property
    def dim(self) -> int:
        return self._ps.dim if self._factor is None else self._factor.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def _factored(self) -> bool:
        return self._factor is None

    # ---- cheap quantities ------------------------------------------------------------------
    def gram(self) -> Tensor:
        """K = F Fᵀ (N x N, float64); its nonzero eigenvalues are those of Σ."""
        if self._gram is None:
            if self._factored():
                n = self.num_samples
                k = self._uncentred_gram()
                if self.centred:        # C K C with C = I − 11ᵀ/N
                    r = k.mean(0, keepdim=True)
                    k = k - r - r.T + k.mean()
                gram = k * (self._scale / n)
            else:
                f = self._factor
                # products in the factor's dtype (the cost is N²d), accumulated result in float64
                gram = (f @ f.T).double()
            self._gram = _in_range(gram, "the Gram matrix of the per-sample gradients",
                                   self.dtype)
        return self._gram

    def _uncentred_gram(self) -> Tensor:
        """G Gᵀ (N x N, float64) of the factored per-sample gradients; cached."""
        if self._raw_gram is None:
            self._raw_gram = self._ps.gram().double()
        return self._raw_gram

    def mean_projections(self) -> Tensor:
        """F ḡ (N,), float64: each sample's centred gradient along the mean gradient,
        (g_i − ḡ)ᵀ ḡ · sqrt(scale/N), so that ḡᵀ Σ ḡ = ‖F ḡ‖² (from the Gram matrix when
        factored: G ḡ = G Gᵀ 1 / N and ‖ḡ‖² = 1ᵀ G Gᵀ 1 / N²); uncentred, g_iᵀ ḡ · sqrt(scale/N)."""
        if self._factored():
            raw = self._uncentred_gram()
            along = raw.mean(1) - raw.mean() if self.centred else raw.mean(1)
            return along * math.sqrt(self._scale / self.num_samples)
        return self._factor.double() @ self.mean.double()

    def trace(self) -> float:
        """Tr Σ = ‖F‖²_F = (scale/N) Σ_i ‖g_i − ḡ‖²."""
        if self._factored():
            return float(torch.trace(self.gram()))
        return float((self._factor.double() ** 2).sum())

    def diagonal(self) -> Tensor:
        """diag Σ, shape (d,)."""
        if self._factored():
            n = self.num_samples
            second = self._ps.sq_sum() / n
            diag = (second - self.mean ** 2 if self.centred else second) * self._scale
        else:
            diag = (self._factor ** 2).sum(0)
        return _in_range(diag, "the diagonal of the gradient covariance", self.dtype)

    def rmatmul(self, u: Tensor) -> Tensor:
        """Fᵀ U for U of shape (N, k) or (N,)."""
        if self._factored():
            u = u.to(self.dtype)
            colsum = u.sum(0)
            gt = self._ps.rmatmul(u)
            if self.centred:
                mean = self.mean if u.dim() == 1 else self.mean[:, None]
                gt = gt - mean * colsum
            return gt * math.sqrt(self._scale / self.num_samples)
        return self._factor.T @ u.to(self._factor.dtype)

    def operator(self) -> CovarianceOperator:
        """Σ as a LinearOperator (for the curvature estimators, e.g. Lanczos or Hutchinson)."""
        return CovarianceOperator(self.factor)

    def dense(self) -> Tensor:
        """Σ as a dense (d, d) matrix (small d and tests only)."""
        f = self.factor
        return _in_range(f.T @ f, "the gradient covariance", self.dtype)

    def frobenius_norm(self) -> float:
        """‖Σ‖_F = ‖F Fᵀ‖_F (same nonzero spectrum), without forming d x d when d > N."""
        if self._via_gram() or self.num_samples <= self.dim:
            return float(torch.linalg.matrix_norm(self.gram()))
        return float(torch.linalg.matrix_norm(self.dense().double()))

    # ---- spectra ---------------------------------------------------------------------------
    def _via_gram(self) -> bool:
        """Whether the dense spectra go through K = F Fᵀ (N x N) instead of Σ = Fᵀ F (d x d):
        when N < d, and for factored gradients (K without the (N, d) matrix) while N ≤
        ``DENSE_EIG_LIMIT``. Beyond it Σ is the smaller to hold and to diagonalise (the whole
        MNIST training set, N = 60,000: K takes 29 GB in float64, Σ of a 13,338-weight network
        1.4 GB)."""
        n = self.num_samples
        return n < self.dim or (self._factored() and n <= DENSE_EIG_LIMIT)

    def _smaller_matrix(self) -> tuple[Tensor, bool]:
        """K = F Fᵀ or Σ = Fᵀ F (float64), as :meth:`_via_gram` chooses (the smaller, but
        for factored gradients up to ``DENSE_EIG_LIMIT`` samples), and whether it is K."""
        if self._via_gram():
            return self.gram(), True
        f = self.factor.double()
        return f.T @ f, False

    def _full_eigh(self) -> tuple[Tensor, Tensor, bool]:
        """Eigen-decomposition of K = F Fᵀ or Σ = Fᵀ F (:meth:`_smaller_matrix`; ascending,
        float64). Returns (vals, vecs, via_gram); cached."""
        if self._eigh is None:
            m, via_gram = self._smaller_matrix()
            vals, vecs = torch.linalg.eigh(m)
            self._eigh = (vals, vecs, via_gram)
        return self._eigh

    def eigenpairs(self, k: int = 1, *, tol: float = 1e-8,
                   generator: torch.Generator | None = None,
                   check_copies: bool = False) -> tuple[Tensor, Tensor]:
        """Top-k eigenpairs of Σ, eigenvalues descending, eigenvectors (d, k) unit columns.

        Through the Gram matrix when d > N: K = U Λ Uᵀ ⇒ Σ (Fᵀ u) = λ (Fᵀ u), so
        v = Fᵀ u / √λ. Small problems (min(N, d) ≤ 1000) use a full eigh (cached, shared with
        :meth:`spectrum`; for k ≤ min(N, d)/10 on CPU, LAPACK's ``evx`` computes only those
        k pairs); larger Gram matrices up to ``DENSE_EIG_LIMIT`` = 6000 use Lanczos on
        the explicit Gram matrix (relative residual ``tol``), beyond it Lanczos on the implicit
        Gram (or Σ) operator. ``check_copies``: there, Lanczos' deflated check for the
        copies of a repeated eigenvalue one start vector misses (about twice the products;
        ``eigh`` finds every copy).
        """
        n, d = self.num_samples, self.dim
        k = checked_count_argument("k", k, min(n, d), "min(N, d)")
        dtype, dev = self.dtype, self.device
        small = n <= 1000 if self._factored() else min(n, d) <= 1000    # factored: N x N Gram
        if self._eigh is None and small and k <= min(n, d) // 10 and dev.type == "cpu":
            # a few pairs: LAPACK's bisection + inverse iteration on the tridiagonal form
            # (N = 512, k = 5: 25 ms vs 85 ms for the full eigh; N = 1,000: 152 vs 522 ms)
            import scipy.linalg

            m, via_gram = self._smaller_matrix()
            w, u = scipy.linalg.eigh(m.numpy(), subset_by_index=[len(m) - k, len(m) - 1],
                                     driver="evx")
            vals, vecs = torch.from_numpy(w[::-1].copy()), torch.from_numpy(u[:, ::-1].copy())
        elif self._eigh is not None or small:
            vals, vecs, via_gram = self._full_eigh()
            vals, vecs = vals.flip(0)[:k], vecs.flip(1)[:, :k]
        elif self._via_gram() and n <= DENSE_EIG_LIMIT:
            # a few pairs of an explicit N x N Gram: Lanczos (O(N²) per product) beats eigh
            from .curvature import lanczos

            via_gram = True
            vals, vecs = lanczos(self.gram(), k, tol=tol, generator=generator,
                                 num_iter=min(n, max(4 * k + 200, 300)),
                                 check_copies=check_copies)
        elif n >= d and d <= DENSE_EIG_LIMIT:
            vals, vecs, via_gram = self._full_eigh()
            vals, vecs = vals.flip(0)[:k], vecs.flip(1)[:, :k]
        else:
            from .curvature import lanczos

            via_gram = n < d
            op = _GramOperator(self.factor) if via_gram else CovarianceOperator(self.factor)
            vals, vecs = lanczos(op, k, tol=tol, generator=generator, check_copies=check_copies)
            vals, vecs = vals.double(), vecs.double()
        if via_gram:
            v = self.rmatmul(vecs.to(dtype)).double()
            vecs = v / torch.linalg.vector_norm(v, dim=0).clamp_min(1e-300)
            vecs = self._complete_null_columns(vals.double(), vecs, generator)
        vals = _in_range(vals.to(dtype=dtype, device=dev),
                         "an eigenvalue of the gradient covariance", self.dtype)
        return vals, vecs.to(dtype=dtype, device=dev)

    def _complete_null_columns(self, vals: Tensor, vecs: Tensor,
                               generator: torch.Generator | None) -> Tensor:
        """Columns for eigenvalues at or below :meth:`rank_threshold`: Fᵀu / √λ is rounding
        noise there (neither unit-norm eigenvectors of 0 nor orthogonal to the others).
        Σ's null space is the orthogonal complement of range(Fᵀ), which the columns of the
        nonzero eigenvalues already span when a zero one is among the top k; an orthonormal
        completion of those columns is therefore a valid set of eigenvectors of 0."""
        lam_max = float(vals[0]) if len(vals) else 0.0
        null = vals <= self.rank_threshold(max(lam_max, 0.0))
        if not bool(null.any()):
            return vecs
        keep = vecs[:, ~null]
        from sgdlab.optim.noise import standard_normal     # (sgdlab.optim imports this module)

        fill = standard_normal((vecs.shape[0], int(null.sum())), generator=generator,
                               dtype=vecs.dtype, device=vecs.device)
        for _ in range(2):      # twice is enough (Kahan-Parlett)
            fill = fill - keep @ (keep.T @ fill)
        fill = torch.linalg.qr(fill).Q
        out = vecs.clone()
        out[:, null] = fill
        return out

    def rank_threshold(self, lam_max: float | None = None) -> float:
        """numpy's ``matrix_rank`` tolerance for the d x d matrix: λ_max · d · eps(dtype)."""
        if lam_max is None:
            lam_max = float(self._full_eigh()[0][-1])
        return lam_max * self.dim * torch.finfo(self.dtype).eps

    def spectrum(self) -> Tensor:
        """All nonzero eigenvalues of Σ (above :meth:`rank_threshold`), descending, float64.

        At most min(N − 1, d) of them (centring removes one direction; uncentred min(N, d))."""
        vals = self._full_eigh()[0].flip(0)
        if len(vals) == 0 or vals[0] <= 0:
            return vals[:0]
        return vals[vals > self.rank_threshold(float(vals[0]))]

    def rank(self) -> int:
        """Numerical rank of Σ with numpy's threshold λ_max · d · eps."""
        return int(len(self.spectrum()))

    def rank_fraction(self) -> float:
        """rank(Σ) / d."""
        return self.rank() / self.dim

    # ---- sampling and scaling --------------------------------------------------------------
    def sample(self, num: int, generator: torch.Generator | None = None,
               scale: float = 1.0) -> Tensor:
        """``num`` draws from N(0, scale · Σ), shape (num, d): ξ = √scale · Fᵀ z with
        z ~ N(0, I_N), whose covariance is Fᵀ F = Σ exactly (O(num · N · d), no d x d)."""
        if scale < 0:
            raise ValueError(f"Invalid scale={scale} (must be >= 0)")
        from sgdlab.optim.noise import standard_normal     # (sgdlab.optim imports this module)

        z = standard_normal((self.num_samples, num), generator=generator, dtype=self.dtype,
                            device=self.device)
        return math.sqrt(scale) * self.rmatmul(z).T

    def scaled(self, c: float) -> "GradientCovariance":
        """c · Σ (same mean)."""
        if c < 0:
            raise ValueError(f"Invalid scale {c} (must be >= 0)")
        if self._factored():
            return GradientCovariance(None, self.mean, self.num_samples, per_sample=self._ps,
                                      scale=self._scale * c, centred=self.centred)
        # the dense factor carries c itself; scale records it (``scale``)
        return GradientCovariance(self._factor * math.sqrt(c), self.mean, self.num_samples,
                                  scale=self._scale * c, centred=self.centred)

    def minibatch(self, batch_size: int, *, replacement: bool = True) -> "GradientCovariance":
        """Covariance of the mini-batch gradient g_B (thesis eq. 6.4 / 6.5): see
        :func:`minibatch_noise_factor`. Σ's only: g_B's covariance is c Σ, not c M."""
        if not self.centred:
            raise ValueError("the mini-batch gradient's covariance scales the centred Σ, not the "
                             "uncentred second moment (gradient_covariance(centred=True))")
        return self.scaled(minibatch_noise_factor(batch_size, self.num_samples,
                                                  replacement=replacement))

    def __repr__(self) -> str:
        kind = "factored" if self._factored() else "dense factor"
        form = "" if self.centred else ", uncentred"
        return (f"GradientCovariance(N={self.num_samples}, d={self.dim}, {kind}{form}, "
                f"dtype={self.dtype})")


def check_given_covariance(who: str, cov: object, model: nn.Module, data: Data, *,
                           centred: bool | None = None, asked_by: str | None = None) -> None:
    """A ValueError naming ``who`` where a ``covariance`` given to it is not the matrix that
    :func:`gradient_covariance` would compute for ``model`` over ``data``: no
    :class:`GradientCovariance`, not of the form ``centred`` (None: either), scaled
    (:meth:`~GradientCovariance.minibatch`, :meth:`~GradientCovariance.scaled`), over another
    number of samples or of parameters. ``asked_by``: what asks for that form, for the message
    (default ``centred=<centred>``, the caller's option)."""
    if not isinstance(cov, GradientCovariance):
        raise ValueError(f"{who}: covariance must be a GradientCovariance "
                         f"(gradient_covariance(...)), got {type(cov).__name__}")
    if centred is not None and cov.centred != centred:
        given, asked = (("Σ (centred)", "the uncentred second moment Σ + ḡḡᵀ") if cov.centred
                        else ("the uncentred second moment Σ + ḡḡᵀ", "Σ (centred)"))
        asked_by = f"centred={centred}" if asked_by is None else asked_by
        raise ValueError(f"{who}: covariance is {given}, {asked_by} asks for {asked} "
                         f"(gradient_covariance(centred={centred}))")
    if cov.scale != 1.0:
        itself = "Σ" if cov.centred else "the second moment"
        raise ValueError(f"{who}: covariance must be {itself} itself, not a scaled covariance "
                         "(minibatch() / scaled())")
    n = num_samples(data)
    if cov.num_samples != n:
        raise ValueError(f"{who}: covariance is over {cov.num_samples} samples, data holds "
                         f"{n}: it must be Σ of the same examples")
    d = num_params(model)
    if cov.dim != d:
        raise ValueError(f"{who}: covariance is over {cov.dim} parameters, the model has {d}: "
                         "it must be this model's Σ")


@checked_keywords()
def gradient_covariance(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    *,
    chunk_size: int | None = 256,
    method: str = "auto",
    centred: bool = True,
) -> GradientCovariance:
    """Σ (population covariance of per-sample gradients of the current model over ``data``),
    or with ``centred=False`` their uncentred second moment M = (1/N) Σ_i g_i g_iᵀ = Σ + ḡḡᵀ
    (Zhu et al. 2019, eq. (6)'s E[g gᵀ], against eq. (3)'s centred Σ).

    ``method``: ``"factored"`` keeps per-layer factors of a network of ``nn.Linear`` /
    ``nn.Conv1d`` / ``nn.Conv2d`` layers (one forward + backward; the Gram matrix layer by
    layer — O(N²·(in + out)) for a linear layer, the layer's own (N, d_l) block for a
    convolution — never the whole (N, d) matrix); ``"vmap"`` builds the (N, d) factor with
    ``torch.func`` (any model); ``"auto"`` uses the first when the model qualifies
    (:mod:`sgdlab.operators.factors`). Model evaluated in its current train/eval mode; batch
    norm must be in eval mode (train-mode batch statistics mix the samples: a
    :class:`~sgdlab.errors.UserError` says so).
    """
    if method not in ("auto", "factored", "vmap"):
        raise ValueError(f"Invalid method={method!r}: expected 'auto', 'factored' or 'vmap'")
    centred = _check_centred(centred)
    chunk_size = check_chunk_size(chunk_size)     # before the factored engine, which ignores it
    if method in ("auto", "factored"):
        cov = _factored_covariance(model, loss_fn, data, centred=centred)
        if cov is not None:
            return cov
        if method == "factored":
            raise ValueError("method='factored' needs a network whose trainable parameters all "
                             "sit in nn.Linear / nn.Conv1d / nn.Conv2d layers, each called once, "
                             "a mean-reduced loss and no batch norm in train mode")
    g = per_sample_gradients(model, loss_fn, data, chunk_size=chunk_size,
                             method="vmap").detach()
    n = g.shape[0]
    mean = g.mean(0)
    factor = ((g - mean) if centred else g) / math.sqrt(n)
    return GradientCovariance(factor, mean, n, centred=centred)


def _check_centred(centred: object) -> bool:
    """``centred`` as a bool (numpy's too): a string such as "false" would read as True."""
    return check_flag("centred", centred, " (True: Σ, eq. (3); False: the second moment "
                      "E[g gᵀ], eq. (6))", error=ConfigError)


def _factored_covariance(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                         data: Data, *, centred: bool = True) -> GradientCovariance | None:
    """Σ (or M) from the per-layer factored engine, or None where the model does not qualify:
    the one decision of :func:`gradient_covariance`'s ``"auto"`` and :func:`gradient_variance`."""
    ps = per_sample_factors(model, loss_fn, data)
    return None if ps is None else GradientCovariance.from_per_sample(ps, centred=centred)


class GradientVariance:
    """diag Σ alone: the :meth:`GradientCovariance.trace` and :meth:`~GradientCovariance.diagonal`
    of per-sample gradients pooled in chunks (:func:`~sgdlab.measure.fisher.per_sample_variance`,
    float64), without the (N, d) factor. ``diagonal()`` is in ``dtype``, the parameters' (as
    :class:`GradientCovariance`'s), ``trace()`` from the float64 variances."""

    def __init__(self, variance: Tensor, dtype: torch.dtype):
        _check_finite_gradients(variance)
        self.variance, self.dtype = variance, dtype

    @property
    def dim(self) -> int:
        return self.variance.shape[0]

    def trace(self) -> float:
        """Tr Σ = Σ_j Σ_jj."""
        return float(self.variance.sum())

    def diagonal(self) -> Tensor:
        """diag Σ, shape (d,), in ``dtype``: a variance beyond its range (finite in float64)
        is refused as :meth:`GradientCovariance.diagonal` refuses it, not returned as inf."""
        return _in_range(self.variance.to(self.dtype),
                         "the diagonal of the gradient covariance", self.dtype)


@checked_keywords()
def gradient_variance(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    *,
    chunk_size: int | None = 256,
) -> GradientCovariance | GradientVariance:
    """Tr Σ and diag Σ (``.trace()``, ``.diagonal()``: same convention as
    :func:`gradient_covariance`) without the (N, d) matrix of per-sample gradients: the
    factored Σ where the model qualifies (Gram matrix and squared sums layer by layer, memory
    O(N · layer widths), the same numbers as :func:`gradient_covariance`), else per-sample
    gradients ``chunk_size`` samples at a time pooled in float64
    (:func:`~sgdlab.measure.fisher.per_sample_variance`: memory O(chunk_size · d), where
    :func:`gradient_covariance`'s ``torch.func`` route holds the (N, d) matrix and its centred
    copy). Dropout in train mode: the masks of one fixed draw over all chunks, as
    :func:`~sgdlab.operators.per_sample_gradients` draws them."""
    from sgdlab.operators.params import flat_dtype, trainable_named_params

    from .fisher import per_sample_variance

    chunk_size = check_chunk_size(chunk_size)     # before the factored engine, which ignores it
    cov = _factored_covariance(model, loss_fn, data)     # gradient_covariance's "auto"
    if cov is not None:
        return cov
    var = per_sample_variance(model, loss_fn, data, chunk_size=chunk_size)
    return GradientVariance(var, flat_dtype(trainable_named_params(model).values()))


@checked_keywords()
def diffusion_matrix(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    batch_size: int | None = None,
    *,
    replacement: bool = True,
    chunk_size: int | None = 256,
    method: str = "auto",
) -> GradientCovariance:
    """Chaudhari's D(x) = Σ (``batch_size=None``), or the covariance of the mini-batch
    gradient D(x) · c(b, N) for a batch size b (eq. 6.4 with, 6.5 without replacement)."""
    cov = gradient_covariance(model, loss_fn, data, chunk_size=chunk_size, method=method)
    return cov if batch_size is None else cov.minibatch(batch_size, replacement=replacement)


@dataclass
class NoiseMagnitude:
    """Zhu et al. (2019) Fig. 2: gradient norm vs. the SGD noise magnitude.

    ``grad_norm`` = ‖∇L(θ)‖ (full batch, mean loss); ``noise_norm`` = sqrt(η Tr Σ / m), the
    root-mean-square size of the noise term in the SDE view dθ = −∇L dt + sqrt(η Σ / m) dW
    (Σ: population per-sample covariance, m: batch size, with replacement: Zhu's eq. (2));
    without replacement sqrt(η c Tr Σ), c = (N − m)/(m (N − 1)) the covariance factor of a
    batch of m distinct samples of N (:func:`minibatch_noise_factor`).
    """

    grad_norm: float
    noise_norm: float
    trace_sigma: float

    @property
    def ratio(self) -> float:
        """noise_norm / grad_norm (> 1: the noise dominates the drift)."""
        return self.noise_norm / self.grad_norm if self.grad_norm > 0 else float("inf")


@checked_keywords()
def noise_magnitude(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    lr: float,
    batch_size: int,
    *,
    covariance: GradientCovariance | None = None,
    chunk_size: int | None = 256,
    replacement: bool = True,
    num_samples: int | None = None,
) -> NoiseMagnitude:
    """‖∇L‖ and sqrt(η Tr Σ / m) at the current parameters (pass ``covariance`` to reuse one:
    Σ of this model over ``data``, not scaled, :func:`check_given_covariance`); η = 0 (a
    schedule's zero, as cosine-cyclic's at τ = P) gives no noise. ``lr``: a finite number >= 0.

    ``replacement=False``: the noise of batches of m distinct samples drawn from the
    ``num_samples`` that training draws from (default: the N that Σ is estimated on, that of
    ``data`` or of ``covariance``), sqrt(η c Tr Σ) with c = (N − m)/(m (N − 1)); zero for a
    batch of all N (full-batch GD)."""
    batch_size = check_batch_size(batch_size)
    lr = checked_float_argument("lr", lr, 0.0)    # NaN gave a NaN noise, a string a TypeError
    # a string such as "false" would read as True; a ValueError as the other refusals here
    replacement = check_flag("replacement", replacement, error=ConfigError)
    if replacement and num_samples is not None:
        raise ValueError(f"noise_magnitude: num_samples={num_samples!r} is the number of "
                         "samples batches are drawn from without replacement; with "
                         "replacement=True it has no effect (pass replacement=False)")
    check_mean_of_samples(loss_fn, data, "noise_magnitude")
    if covariance is not None:
        # a scaled one is refused too: the batch's factor 1/m (or c) is applied below, and a
        # mini-batch covariance would take it twice
        check_given_covariance("noise_magnitude", covariance, model, data, centred=True,
                               asked_by="the noise of eq. (2)")
    cov = covariance or gradient_covariance(model, loss_fn, data, chunk_size=chunk_size)
    tr = cov.trace()
    if replacement:
        noise = math.sqrt(lr * tr / batch_size)
    else:
        n = cov.num_samples if num_samples is None else num_samples
        noise = math.sqrt(lr * tr * minibatch_noise_factor(batch_size, n, replacement=False))
    # in float64, as Tr Σ: ‖ḡ‖ of a finite float32 ḡ may exceed float32's range (~3.4e38)
    return NoiseMagnitude(float(torch.linalg.vector_norm(cov.mean.double())), noise, tr)
