"""Spherical p-spin glass (p = 3) in a random field (thesis §2.4.1, eq. (2.32), Figure 2.2).

    H(σ) = −(1/N) Σ_{i,j,k} J_ijk σ_i σ_j σ_k − hᵀσ,    σ ∈ S = {σ ∈ R^N : |σ|² = N},

J_ijk ~ N(0, 1) i.i.d. over all ordered triples and h ~ N(0, ν² I). Then
E[H(σ)H(σ')] = N q³ + ν² N q with q = σ·σ'/N, the normalisation under which the field
trivialises the landscape at ν_c = J√(p(p − 2)) = √3 (eq. (2.15) with J = 1: B = (3 − ν²)/(9 +
ν²) vanishes there). The thesis' polynomial regime ν = √3 (1 − 1/N)^{1/2} is eq. (2.19) at
τ = −1/2, a field just below ν_c with B ≈ 1/(4N), inside the band |B| = O(1/N). The three
regimes of the thesis::

    glassy   ν = 1/N                  exponentially many minima
    critical ν = √3 (1 − 1/N)^{1/2}   few minima
    trivial  ν = 3                    one minimum

Only the symmetric part of J matters, so it is symmetrised once; with T(σ)_a = Σ_jk J^s_ajk σ_j σ_k
(one (N², N) @ (N, B) matmul for B chains), H = −σ·T/N − hᵀσ and ∇H = −3T/N − h. Projected
gradient descent steps along the Riemannian gradient ∇_S H = ∇H − (σ·∇H/N) σ (tangent to the
sphere) and retracts σ ← √N σ/|σ|: the thesis' "we project the gradient on the tangent plane
of S^{N−1}(√N) and re-project σ^{k+1} ← σ^k − η∇H̃(σ^k) back on to the sphere", with η = 0.1.
The thesis stops "when ‖∇H̃‖₂ ≤ 10⁻⁴"; on the sphere the Euclidean gradient keeps its normal
component at a minimum, so the stopping rule here is on the projected (Riemannian) gradient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sgdlab.errors import UserError, checked_float
from sgdlab.optim.noise import standard_normal

from .base import (
    Landscape, apart_seed, check_count, check_floating_dtype, check_positive, check_states,
    seeded_generator,
)
from .pspin_complexity import critical_field

REGIMES = ("glassy", "critical", "trivial")


def starts_seed(seed: int) -> int:
    """The seed of the generator that draws the random starts of a run of seed ``seed``
    (:func:`~sgdlab.landscapes.base.apart_seed`, stream 1: 62 bits hashed from ``seed``, with
    bit 62 set), so it differs from every seed a disorder (J, h) is drawn with
    (``PSpinGlass(seed=...)`` as given). A starts
    generator seeded with the glass' own seed replays the disorder's first draws: its k-th
    start is the direction of the couplings J_0k· (§2.4.1 samples the starts "uniformly on
    S^{N−1}(√N)", independently of J)."""
    return apart_seed(seed, 1)


def regime_field(regime: str, n: int) -> float:
    """ν for a named regime at size N (module docstring)."""
    if regime == "glassy":
        return 1.0 / n
    if regime == "critical":
        return critical_field(3) * math.sqrt(1.0 - 1.0 / n)
    if regime == "trivial":
        return 3.0
    raise UserError(f"unknown p-spin regime {regime!r}; choose from {', '.join(REGIMES)}")


@dataclass
class DescentResult:
    """Projected GD from B starts: final σ (B, N), energies per spin H/N (B,), steps taken and
    final Riemannian gradient norms (B,), converged mask (‖∇_S H‖ ≤ tol)."""

    sigma: Tensor
    energy_per_spin: Tensor
    steps: Tensor
    grad_norm: Tensor
    converged: Tensor


class PSpinGlass(Landscape):
    """H(σ) of the module docstring for one draw of (J, h).

    Args:
        n: N, number of spins (= dim).
        nu: field strength ν (h ~ N(0, ν² I)); or pass ``regime``.
        regime: "glassy", "critical" or "trivial" (sets ν from N).
        seed: seed of the (J, h) draw.
    """

    evaluates_wider_chains = True          # _common_dtype: σ in σ's dtype promoted with J's

    def __init__(self, n: int = 100, *, nu: float | None = None, regime: str | None = None,
                 seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        check_floating_dtype("PSpinGlass", dtype)
        n = check_count("n", n, 2)          # 4.5 failed in randn, a 0-d tensor stayed one
        if (nu is None) == (regime is None):
            raise UserError("give exactly one of nu or regime")
        self.nu = checked_float("nu", regime_field(regime, n) if regime is not None else nu)
        self.dim = self.n = n
        gen = seeded_generator(seed)
        j = torch.randn(n, n, n, generator=gen, dtype=torch.float64)
        self.J = j.to(dtype)                       # the raw couplings (for reference checks)
        perms = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
        js = sum(j.permute(*p) for p in perms) / 6
        self._j_flat = js.reshape(n * n, n).to(dtype)   # rows (a, j), columns k
        self.h = (self.nu * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype)

    # ---------------------------------------------------------------- values
    def _common_dtype(self, sigma: Tensor) -> Tensor:
        """σ in its dtype promoted with the couplings' (a float32 σ on the float64 glass is
        evaluated in float64, as the other landscapes do, not refused by the matmul)."""
        return sigma.to(torch.promote_types(sigma.dtype, self.h.dtype))

    def _contract(self, sigma: Tensor) -> Tensor:
        """T(σ)_a = Σ_jk J^s_ajk σ_j σ_k, batched: shape (..., N)."""
        flat = sigma.reshape(-1, self.n).to(self._j_flat.dtype)
        y = (self._j_flat @ flat.T).reshape(self.n, self.n, -1)   # (a, j, B)
        t = torch.einsum("ajb,bj->ba", y, flat)
        return t.reshape(sigma.shape)

    def loss(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        """H(σ) (not per spin), shape (...). σ is used as given (not projected)."""
        self._check(theta)
        if idx is not None:
            raise UserError("PSpinGlass has no samples; idx must be None")
        theta = self._common_dtype(theta)
        return -(theta * self._contract(theta)).sum(-1) / self.n - theta @ self.h.to(theta)

    def energy_and_grad(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(H(σ), Euclidean ∇H(σ)) from one contraction."""
        self._check(sigma)
        sigma = self._common_dtype(sigma)
        h = self.h.to(sigma)
        t = self._contract(sigma).to(sigma)
        energy = -(sigma * t).sum(-1) / self.n - sigma @ h
        return energy, -3.0 * t / self.n - h

    def grad(self, theta: Tensor, idx: Tensor | None = None) -> Tensor:
        """Euclidean gradient ∇H (use :meth:`riemannian_grad` on the sphere)."""
        if idx is not None:
            raise UserError("PSpinGlass has no samples; idx must be None")
        return self.energy_and_grad(theta)[1]

    def riemannian_grad(self, sigma: Tensor, euclid: Tensor | None = None) -> Tensor:
        """∇_S H = ∇H − (σ·∇H / |σ|²) σ: the tangential part, σ·∇_S H = 0."""
        g = self.grad(sigma) if euclid is None else euclid
        return g - ((sigma * g).sum(-1, keepdim=True) / (sigma * sigma).sum(-1, keepdim=True)) \
            * sigma

    def project(self, sigma: Tensor) -> Tensor:
        """Retraction onto the sphere of radius √N."""
        return math.sqrt(self.n) * sigma / sigma.norm(dim=-1, keepdim=True)

    def random_starts(self, count: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Uniform points on the sphere, shape (count, N). Seed ``generator`` apart from the
        glass (:func:`starts_seed`): one seeded like the glass draws the couplings' values."""
        count = check_count("count", count, 0)
        # drawn on the generator's device, then moved to the glass's (as sample_batches)
        return self.project(standard_normal((count, self.n), generator=generator,
                                            dtype=self.h.dtype, device=self.h.device))

    # ---------------------------------------------------------------- descent
    def descend(self, starts: Tensor, *, lr: float = 0.1, tol: float = 1e-4,
                max_steps: int = 5000) -> DescentResult:
        """Projected GD from every start at once; converged chains are frozen (their steps
        stop counting) and the loop ends when all have ‖∇_S H‖ ≤ tol or at ``max_steps``."""
        check_positive("lr", lr)
        check_positive("tol", tol)
        max_steps = check_count("max_steps", max_steps)
        if starts.ndim != 2 or starts.shape[1] != self.n:
            raise UserError(f"starts must have shape (B, {self.n}), got {tuple(starts.shape)}")
        check_states("starts", starts, self.n)
        self.check_device("starts", starts)
        if not bool((starts.norm(dim=-1) > 0).all()):
            raise UserError("a start is the zero vector: it has no projection onto the sphere")
        sigma = self.project(starts.to(self.h.dtype))
        steps = torch.zeros(sigma.shape[0], dtype=torch.long, device=sigma.device)
        active = torch.ones(sigma.shape[0], dtype=torch.bool, device=sigma.device)
        for _ in range(max_steps + 1):
            idx = active.nonzero().squeeze(-1)
            if idx.numel() == 0:
                break
            sub = sigma[idx]
            _, g = self.energy_and_grad(sub)
            rg = self.riemannian_grad(sub, g)
            done = rg.norm(dim=-1) <= tol
            if done.any():
                active[idx[done]] = False
            if int(steps.max()) >= max_steps:
                break
            move = ~done
            sigma[idx[move]] = self.project(sub[move] - lr * rg[move])
            steps[idx[move]] += 1
        energy, g = self.energy_and_grad(sigma)
        gn = self.riemannian_grad(sigma, g).norm(dim=-1)
        return DescentResult(sigma=sigma, energy_per_spin=energy / self.n, steps=steps,
                             grad_norm=gn, converged=gn <= tol)


def overlaps(sigma: Tensor) -> Tensor:
    """q_ab = σ_a·σ_b / N for rows of (B, N) on the sphere, shape (B, B)."""
    return sigma @ sigma.T / sigma.shape[-1]


def mean_cosine_distance(sigma: Tensor) -> float:
    """Mean of the cosine distance 1 − q_ab = 1 − σ_a·σ_b / N over all pairs a < b of points on
    the sphere (thesis §2.4.1: 0.02 in the trivial regime against 1.16 in the exponential one),
    from Σ_{a<b} q_ab = (|Σ_a σ_a|² − Σ_a |σ_a|²) / (2N) without forming the B x B overlaps.
    NaN for fewer than two points."""
    b, n = sigma.shape
    if b < 2:
        return float("nan")
    s = sigma.double()
    pair_sum = (float(s.sum(0).square().sum()) - float(s.square().sum())) / (2 * n)
    return 1.0 - pair_sum / (b * (b - 1) / 2)


def mean_angular_distance(sigma: Tensor, *, chunk: int = 1024) -> float:
    """Mean of the angle arccos q_ab (radians, in [0, π]) between points a < b on the sphere:
    the geodesic distance on the unit sphere, the other reading of §2.4.1's "average cosine
    distance" (reading ``cosine-distance``: a mean of 1 − q_ab over the thesis' 20,000 minima
    cannot reach its 1.16, an angle can). Overlaps are clamped to [−1, 1] against rounding,
    and formed ``chunk`` rows at a time. NaN for fewer than two points."""
    b, n = sigma.shape
    if b < 2:
        return float("nan")
    s = sigma.double()
    s = s / s.norm(dim=-1, keepdim=True)
    total = 0.0
    for lo in range(0, b - 1, chunk):
        hi = min(b, lo + chunk)
        q = (s[lo:hi] @ s[lo:].T).clamp(-1.0, 1.0)      # rows a in [lo, hi), columns b >= lo
        upper = torch.ones_like(q, dtype=torch.bool).triu(1)   # b > a within the block
        total += float(torch.arccos(q[upper]).sum())
    return total / (b * (b - 1) / 2)


def cluster_minima(sigma: Tensor, *, threshold: float = 0.999) -> tuple[Tensor, list[int]]:
    """Greedy clustering by overlap: a point joins the first representative with
    q ≥ ``threshold``, else becomes a new one. Returns (labels (B,), representative indices).
    Memory O((B + reps)·N): each point is compared with the representatives only."""
    if not 0 < threshold <= 1:
        raise UserError(f"threshold must be in (0, 1], got {threshold}")
    n = sigma.shape[-1]
    labels = torch.full((sigma.shape[0],), -1, dtype=torch.long)
    reps: list[int] = []
    rep_rows = sigma.new_empty((0, n))
    for i in range(sigma.shape[0]):
        q = rep_rows @ sigma[i] / n
        hit = (q >= threshold).nonzero()
        if len(hit):
            labels[i] = int(hit[0])
        else:
            labels[i] = len(reps)
            reps.append(i)
            rep_rows = torch.cat([rep_rows, sigma[i:i + 1]])
    return labels, reps


def embed_tsne(sigma: Tensor, *, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE (scikit-learn) of the points with distance √(2N(1 − q)) = |σ_a − σ_b|.
    Fewer than 5 points get their 2-D PCA coordinates instead (t-SNE needs neighbours)."""
    from sklearn.manifold import TSNE

    x = sigma.detach().cpu().numpy()
    if len(x) < 5:
        c = x - x.mean(0)
        u, s, _ = np.linalg.svd(c, full_matrices=False)
        out = np.zeros((len(x), 2))
        k = min(2, len(s))
        out[:, :k] = u[:, :k] * s[:k]
        return out
    perp = max(2.0, min(perplexity, (len(x) - 1) / 3))
    return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(x)


__all__ = ["PSpinGlass", "DescentResult", "REGIMES", "regime_field", "starts_seed", "overlaps",
           "cluster_minima", "embed_tsne", "mean_cosine_distance", "mean_angular_distance"]
