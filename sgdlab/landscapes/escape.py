"""Zhu et al.'s escape experiment on the two-basin loss (§4.2, Fig. 3; Suppl. B), vectorised
over repetitions.

Every method starts at the sharp minimum (1, 1) and runs ``iterations`` steps of the §4.2
updates (the noise enters as η ε for GLD const / Hessian and as (η/√m) ε with ε ~ N(0, ·Σ) for
dynamic / diagonal / leading, i.e. η ε' with ε' ~ N(0, ·Σ/m))::

    w ← w − η ∇L(w) + η ε,        ε ~ N(0, C_method(w))

with ε drawn fresh each step from the current full-data statistics (all N samples):

==============  ============================================================================
``gd``          ε = 0                                                       (§4.2 item 1)
``gld_const``   C = σ² I (σ = ``const_sigma``)                              (item 2)
``gld_dynamic`` C = (Tr Σ_sgd / d) I: isotropic with SGD's expected noise norm (item 3)
``gld_diag``    C = diag(Σ_sgd)                                             (item 4)
``gld_leading`` C = top-k eigenpart of Σ_sgd (k = ``leading_k``), eq. (12)  (item 5)
``gld_hessian`` C = σ_H² H₊, H₊ = Σ |λ_i| u_i u_iᵀ over the top-k (|λ|) eigenpairs of H (item 6)
``sgd``         the real thing, eq. (1): ∇L replaced by a size-m with-replacement mini-batch
                gradient
==============  ============================================================================

Σ_sgd = Σ(w)/m is the exact covariance of a size-m with-replacement mini-batch gradient
(Σ the per-sample gradient covariance with 1/N normalisation, eq. (3)). All R repetitions of
all methods advance together as one (K, R, 2) tensor; there is no Python loop over repetitions.

Protocols (:data:`PROTOCOLS`):

- ``"paper"`` (default): the updates above with the constants of Suppl. B / the Fig. 3 caption
  (η = 0.1, m = 1, σ = 2, k = 2, σ_H² = 1, 600 iterations, 100 repetitions).
- ``"authors-code"`` (the authors' public ``2Dim`` code, see ``EscapeConfig.authors_code`` and
  ``TwoBasin.authors_code``): every GLD variant's covariance is rescaled to the same total
  variance Tr = ``noise_trace`` — const/dynamic σ² I → (τ/d) I, diag → diag(Σ)·τ/Tr Σ,
  leading → Σ_k·τ/Tr Σ_k, Hessian → H₊·τ/Tr H₊ — and ε is added to the weights *after* the
  gradient step, not multiplied by η: ``w ← w − η ∇L(w) + ε``. GD and SGD are unchanged.

Success (``success_rule``): ``"flat_basin"`` — the final iterate lies in the flat basin (most
samples' active branch is the flat quadratic, ``TwoBasin.in_flat_basin``); ``"reached"`` — some
iterate up to ``iterations`` lay in the flat basin (the paper's "success rate of arriving the
flat minimum ... limiting the maximum number of iterations as 600" read as a first passage);
``"corner"`` (the authors' code) — both final coordinates are < −0.5. The result records the
``reached`` rate whatever the rule, and each repetition's first-passage iteration into the flat
basin (−1 for a chain that never lay there up to ``iterations``). Expected sharpness
E_ξ[L(w+ξ)] − L(w), ξ ~ N(0, σ²I) with M draws per repetition (Suppl. B: σ = 0.1, M = 100), is
recorded every ``sharpness_every`` iterations and averaged over repetitions, with the Monte Carlo
standard error of that mean; ``sharpness_estimator="quadrature"`` computes each chain's
expectation on a Gauss-Hermite grid instead (no sampling error). It is negative where L is
locally concave: on the ridge between the basins, where the min of the two branches caps
L(w+ξ) (−0.16 at w = (0.55, 0.55) on the printed loss); and a Monte Carlo mean of a few draws
can be negative in the flat basin, where the exact value σ² Tr H_f / 2 is small.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from sgdlab.errors import UserError, check_flag, checked_float
from sgdlab.optim import noise

from .base import apart_seed, check_count
from .two_basin import TwoBasin

METHODS: tuple[str, ...] = (
    "gd", "gld_const", "gld_dynamic", "gld_diag", "gld_leading", "gld_hessian", "sgd",
)
LABELS: dict[str, str] = {
    "gd": "GD", "gld_const": "GLD const", "gld_dynamic": "GLD dynamic",
    "gld_diag": "GLD diagonal", "gld_leading": "GLD leading", "gld_hessian": "GLD Hessian",
    "sgd": "SGD",
}

PROTOCOLS: tuple[str, ...] = ("paper", "authors-code")
SUCCESS_RULES: tuple[str, ...] = ("flat_basin", "reached", "corner")
SHARPNESS_ESTIMATORS: tuple[str, ...] = ("monte-carlo", "quadrature")


@dataclass
class EscapeConfig:
    """The paper's settings (Zhu et al. Fig. 3 caption and Suppl. B); every field is data."""

    lr: float = 0.1
    iterations: int = 600
    repetitions: int = 100
    batch_size: int = 1           # m, for SGD and for Σ_sgd = Σ/m
    const_sigma: float = 2.0      # GLD const: ε ~ N(0, σ² I)
    leading_k: int = 2            # GLD leading: top-k eigenpairs of Σ
    hessian_k: int = 2            # GLD Hessian: top-k |eigenpairs| of H
    hessian_scale: float = 1.0    # σ_H²
    sharpness_sigma: float = 0.1
    sharpness_samples: int = 100  # M
    # "monte-carlo": M draws (Suppl. B); "quadrature": Gauss-Hermite grid, no sampling error
    sharpness_estimator: str = "monte-carlo"
    sharpness_nodes: int = 40     # quadrature: nodes per coordinate
    sharpness_every: int = 10     # 0 disables the sharpness curve
    record_trajectory: bool = True
    seed: int = 0
    protocol: str = "paper"       # "paper" | "authors-code" (see the module docstring)
    noise_trace: float = 0.01     # authors-code: Tr Cov(ε) of every GLD variant
    success_rule: str = "flat_basin"  # "flat_basin" | "reached" | "corner" (module docstring)
    start: str = "sharp_center"   # "sharp_center" (c_s = (1, 1), as printed) | "sharp_minimum"
                                  # (c_s + x̄, the exact minimum of the sampled loss)

    @classmethod
    def authors_code(cls, **overrides) -> "EscapeConfig":
        """The protocol of the authors' ``2Dim/run.py``: η = 0.005, 500 iterations, start at
        c_s = (1, 1), equal-trace noise with Tr = 0.01 added after the step, success = both
        coordinates < −0.5. Use with ``TwoBasin.authors_code()``."""
        base = dict(lr=0.005, iterations=500, protocol="authors-code", noise_trace=0.01,
                    success_rule="corner", start="sharp_center")
        base.update(overrides)
        return cls(**base)

    def validate(self) -> None:
        """A ``UserError`` naming the first bad field; whole-number floats (600.0) of the counts
        are stored as ints. A fractional count (100.5) or a bool was a TypeError deep in the
        run, or ran: ``True`` iterations as 1, a 1.5 ``batch_size`` divided Σ by 1.5."""
        checked_float("lr", self.lr, strict=True)       # a bool or a string too
        for name in ("const_sigma", "hessian_scale", "sharpness_sigma", "noise_trace"):
            checked_float(name, getattr(self, name))
        self.record_trajectory = check_flag("record_trajectory", self.record_trajectory)
        for name, least in (("seed", 0), ("iterations", 1), ("repetitions", 1),
                            ("batch_size", 1), ("leading_k", 1), ("hessian_k", 1),
                            ("sharpness_samples", 1), ("sharpness_every", 0),
                            ("sharpness_nodes", 1)):
            setattr(self, name, check_count(name, getattr(self, name), least))
        for name, allowed in (("protocol", PROTOCOLS), ("success_rule", SUCCESS_RULES),
                              ("sharpness_estimator", SHARPNESS_ESTIMATORS),
                              ("start", ("sharp_minimum", "sharp_center"))):
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)}, "
                                f"got {getattr(self, name)!r}")


def method_seed(seed: int, method: str) -> int:
    """The seed of ``method``'s generator in a run of seed ``seed``: 62 bits hashed from
    (seed, method) by numpy's ``SeedSequence``, with bit 62 set. It lies in [2⁶², 2⁶³), so it
    differs from every smaller seed (the landscape's data draw is seeded with
    ``TwoBasin(seed=...)`` as given), and the hash keeps the (seed, method) streams apart.
    (``seed * 1000 + index`` seeded GD at seed 0 as the data of seed 0, and GLD const at seed 0
    as the data of seed 1: correlated noise and data.)"""
    seed = check_count("seed", seed, 0)
    if method not in METHODS:
        raise UserError(f"unknown escape method {method!r}; choose from {', '.join(METHODS)}")
    return apart_seed(seed, METHODS.index(method))


def binomial_se(rate: float, n: int) -> float:
    """Standard error sqrt(p(1 − p)/n) of a success rate p measured on n independent runs."""
    return (rate * (1 - rate) / n) ** 0.5 if n > 0 else float("nan")


def wilson_interval(successes: int, n: int, z: float = 2.0) -> tuple[float, float]:
    """Wilson score interval (lo, hi) of a success rate k/n at ``z`` standard errors.

    Unlike p ± z·sqrt(p(1 − p)/n), which shrinks to a point at p = 0 or 1 (so that two rates
    both at 0% would look certain to be equal), it keeps a width there: [0, z²/(n + z²)] at
    k = 0. (nan, nan) for n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p, z2 = successes / n, z * z
    den = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / den
    half = z * (p * (1 - p) / n + z2 / (4 * n * n)) ** 0.5 / den
    # the interval contains p; min/max keep round-off from moving an end past it at 0 or 1
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def rate_difference_interval(k1: int, n1: int, k2: int, n2: int,
                             z: float = 2.0) -> tuple[float, float]:
    """Interval (lo, hi) of the difference k1/n1 − k2/n2 of two independent success rates,
    Newcombe's hybrid score interval (Stat. Med. 17, 1998, method 10) built from the two Wilson
    intervals: it does not collapse when both rates sit at 0 or 1."""
    p1, p2 = (k1 / n1 if n1 > 0 else float("nan")), (k2 / n2 if n2 > 0 else float("nan"))
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    return (d - ((p1 - l1) ** 2 + (u2 - p2) ** 2) ** 0.5,
            d + ((u1 - p1) ** 2 + (p2 - l2) ** 2) ** 0.5)


@dataclass
class EscapeResult:
    """Outcome per method: success rate, final iterates, sharpness curve, trajectories."""

    config: EscapeConfig
    success_rate: dict[str, float] = field(default_factory=dict)
    reached_rate: dict[str, float] = field(default_factory=dict)   # ever in the flat basin
    # (R,) first iteration 0..T at which each chain lay in the flat basin; −1 if none did
    first_passage: dict[str, Tensor] = field(default_factory=dict)
    # final iterate non-finite (η far past stability): a failure, whatever the success rule
    diverged_rate: dict[str, float] = field(default_factory=dict)
    final: dict[str, Tensor] = field(default_factory=dict)          # (R, 2)
    sharpness_steps: list[int] = field(default_factory=list)
    sharpness: dict[str, list[float]] = field(default_factory=dict)  # mean over repetitions
    # Monte Carlo standard error of that mean, sqrt(Σ_r se_r²)/R over the chains' M draws
    # (chains as they are); empty under the quadrature, which has no sampling error
    sharpness_stderr: dict[str, list[float]] = field(default_factory=dict)
    trajectory: dict[str, Tensor] = field(default_factory=dict)     # (T+1, R, 2)

    def successes(self, method: str) -> int:
        """How many of the R repetitions of ``method`` succeeded (the rate is stored; rate · R
        gives the count back exactly)."""
        return round(self.success_rate[method] * self.config.repetitions)

    def success_interval(self, z: float = 2.0) -> dict[str, tuple[float, float]]:
        """Each method's Wilson score interval of its success rate over the R repetitions
        (:func:`wilson_interval`): unlike ± s.e., it has a width at 0% and 100%."""
        return {m: wilson_interval(self.successes(m), self.config.repetitions, z)
                for m in self.success_rate}

    def table(self) -> str:
        """The success-rate table, one row per method: success rate ± its binomial standard
        error sqrt(p(1 − p)/R) and its Wilson interval (z = 2), the share that ever reached
        the flat basin, final sharpness and its Monte Carlo standard error ("-" under the
        quadrature)."""
        lines = [f"{'method':<14} {'success':>8} {'± s.e.':>7} {'Wilson, z = 2':>16} "
                 f"{'reached':>8} {'final sharpness':>16} {'± s.e.':>8}", "-" * 83]
        intervals = self.success_interval()
        for m, rate in self.success_rate.items():
            sh = self.sharpness.get(m)
            sh_se = self.sharpness_stderr.get(m)
            sh_txt = (f"{sh[-1]:16.4f}" if sh else f"{'-':>16}") \
                + (f" {sh_se[-1]:8.4f}" if sh_se else f" {'-':>8}")
            se = binomial_se(rate, self.config.repetitions)
            lo, hi = intervals[m]
            lines.append(f"{LABELS.get(m, m):<14} {rate:8.1%} {se:7.1%} "
                         f"{f'[{lo:.1%}, {hi:.1%}]':>16} "
                         f"{self.reached_rate.get(m, float('nan')):8.1%} {sh_txt}")
        diverged = {m: r for m, r in self.diverged_rate.items() if r > 0}
        if diverged:
            lines.append("diverged (a non-finite iterate; counted as failures): " + ", ".join(
                f"{LABELS.get(m, m)} {r:.1%}" for m, r in diverged.items()))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "config": dict(vars(self.config)),
            "success_rate": dict(self.success_rate),
            # Wilson score intervals at z = 2 (success_interval)
            "success_interval": {m: list(ci) for m, ci in self.success_interval().items()},
            "reached_rate": dict(self.reached_rate),
            "diverged_rate": dict(self.diverged_rate),
            "sharpness_steps": list(self.sharpness_steps),
            "sharpness": {k: list(v) for k, v in self.sharpness.items()},
            "sharpness_stderr": {k: list(v) for k, v in self.sharpness_stderr.items()},
        }


# ------------------------------------------------------------------ noise
def top_eigenpairs(sym: Tensor, k: int, *, absolute: bool = False) -> tuple[Tensor, Tensor]:
    """Top-k eigenpairs of symmetric ``sym`` (…, d, d): values (…, k) descending, vectors
    (…, d, k). ``absolute=True`` ranks by and returns |λ| (the H₊ of GLD Hessian).

    2×2 matrices use the closed-form eigendecomposition (a batched ``eigh`` call costs ~10×
    more at these sizes); larger ones use ``torch.linalg.eigh``.
    """
    d = sym.shape[-1]
    if d == 2:
        a, b, c = sym[..., 0, 0], sym[..., 0, 1], sym[..., 1, 1]
        mid, rad = (a + c) / 2, torch.sqrt(((a - c) / 2) ** 2 + b ** 2)
        phi = 0.5 * torch.atan2(2 * b, a - c)
        cos, sin = torch.cos(phi), torch.sin(phi)
        evals = torch.stack([mid + rad, mid - rad], -1)                  # descending
        evecs = torch.stack([torch.stack([cos, sin], -1),
                             torch.stack([-sin, cos], -1)], -1)          # columns
    else:
        evals, evecs = torch.linalg.eigh(sym)
    if absolute:
        evals = evals.abs()
    if absolute or d != 2:
        order = evals.argsort(-1, descending=True)
        evals = torch.gather(evals, -1, order)
        evecs = torch.gather(evecs, -1, order[..., None, :].expand_as(evecs))
    return evals[..., :k], evecs[..., :k]


def _needs_cov(method: str) -> bool:
    return method in ("gld_dynamic", "gld_diag", "gld_leading")


def method_noise_covariance(
    method: str, landscape: TwoBasin, w: Tensor, cfg: EscapeConfig,
) -> Tensor:
    """The covariance of the injected ε (before the factor η), shape (R, 2, 2), as a dense
    reference; for SGD it is the mini-batch gradient's covariance Σ/m. Under
    ``protocol="authors-code"`` the GLD covariances are built from the same parameters that
    :func:`sample_method_noise` feeds to the samplers (trace = ``noise_trace``)."""
    if method not in METHODS:
        raise UserError(f"unknown escape method {method!r}; choose from {', '.join(METHODS)}")
    d = landscape.dim
    if cfg.protocol == "authors-code" and method.startswith("gld_"):
        kind, *par = _equal_trace_params(method, landscape, w, cfg)
        if kind == "iso":
            return (par[0] ** 2 * torch.eye(d, dtype=w.dtype, device=w.device)).expand(
                *w.shape[:-1], d, d)
        if kind == "diag":
            return torch.diag_embed(par[0])
        vals, vecs, scale = par
        return (vecs * (vals * scale[..., None])[..., None, :]) @ vecs.transpose(-1, -2)
    eye = torch.eye(d, dtype=w.dtype, device=w.device)
    if method == "gd":
        return w.new_zeros(*w.shape[:-1], d, d)
    if method == "gld_const":
        return (cfg.const_sigma ** 2 * eye).expand(*w.shape[:-1], d, d)
    if method == "gld_hessian":
        vals, vecs = top_eigenpairs(landscape.hessian(w), min(cfg.hessian_k, d), absolute=True)
        return cfg.hessian_scale * (vecs * vals[..., None, :]) @ vecs.transpose(-1, -2)
    cov = landscape.gradient_covariance(w) / cfg.batch_size
    if method == "gld_dynamic":
        return cov.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] / d * eye
    if method == "gld_diag":
        return torch.diag_embed(cov.diagonal(dim1=-2, dim2=-1))
    if method == "gld_leading":
        vals, vecs = top_eigenpairs(cov, min(cfg.leading_k, d))
        return (vecs * vals.clamp_min(0)[..., None, :]) @ vecs.transpose(-1, -2)
    return cov  # sgd


def _equal_trace_params(
    method: str, landscape: TwoBasin, w: Tensor, cfg: EscapeConfig, *,
    mask: Tensor | None = None, cov: Tensor | None = None,
) -> tuple:
    """Sampler parameters of a GLD variant rescaled to Tr Cov(ε) = τ = ``cfg.noise_trace``:
    ``("iso", σ)`` with σ² = τ/d; ``("diag", v)`` with v = diag(Σ)·τ/Tr Σ; ``("lowrank", λ,
    U, s)`` with Cov = s U diag(λ) Uᵀ, s = τ/Σλ (λ ≥ 0: Σ's top-k clamped, or |H|'s top-k).
    Σ's 1/m cancels in the normalisation."""
    d, tau = landscape.dim, cfg.noise_trace
    tiny = torch.finfo(w.dtype).tiny
    if method in ("gld_const", "gld_dynamic"):   # both isotropic: identical at equal trace
        return ("iso", (tau / d) ** 0.5)
    if method == "gld_hessian":
        m = landscape.sharp_mask(w) if mask is None else mask
        p = m.to(w.dtype).mean(-1)[..., None, None]
        hess = p * landscape.sharp_hessian + (1 - p) * landscape.flat_hessian
        vals, vecs = top_eigenpairs(hess, min(cfg.hessian_k, d), absolute=True)
        return ("lowrank", vals, vecs, tau / vals.sum(-1).clamp_min(tiny))
    if not _needs_cov(method):
        raise UserError(f"unknown escape method {method!r}; choose from {', '.join(METHODS)}")
    if cov is None:
        cov = landscape.gradient_covariance(w, mask) / cfg.batch_size
    if method == "gld_diag":
        diag = cov.diagonal(dim1=-2, dim2=-1).clamp_min(0)
        return ("diag", diag * (tau / diag.sum(-1, keepdim=True).clamp_min(tiny)))
    vals, vecs = top_eigenpairs(cov, min(cfg.leading_k, d))
    vals = vals.clamp_min(0)
    return ("lowrank", vals, vecs, tau / vals.sum(-1).clamp_min(tiny))


def sample_method_noise(
    method: str, landscape: TwoBasin, w: Tensor, cfg: EscapeConfig, *,
    generator: torch.Generator | None = None, mask: Tensor | None = None,
    cov: Tensor | None = None,
) -> Tensor | None:
    """One draw of ε per chain, shape (R, 2), from the samplers of :mod:`sgdlab.optim.noise`;
    None for GD and SGD (whose noise is the mini-batch itself). ``mask`` (branch mask) and
    ``cov`` (Σ/m) may be passed when already computed for this state."""
    d = landscape.dim
    if method in ("gd", "sgd"):
        return None
    kw = {"generator": generator}
    if cfg.protocol == "authors-code":
        kind, *par = _equal_trace_params(method, landscape, w, cfg, mask=mask, cov=cov)
        if kind == "iso":
            return noise.isotropic_noise(d, par[0], batch_shape=tuple(w.shape[:-1]),
                                         dtype=w.dtype, device=w.device, **kw)
        if kind == "diag":
            return noise.diagonal_noise(par[0], **kw)
        vals, vecs, scale = par
        if method == "gld_hessian":
            return noise.hessian_noise(vals, vecs, scale, **kw)
        return noise.leading_noise(vals, vecs, scale=scale, **kw)
    if method == "gld_const":
        return noise.isotropic_noise(d, cfg.const_sigma, batch_shape=tuple(w.shape[:-1]),
                                     dtype=w.dtype, device=w.device, **kw)
    if method == "gld_hessian":
        p = landscape.sharp_mask(w).to(w.dtype).mean(-1) if mask is None \
            else mask.to(w.dtype).mean(-1)
        p = p[..., None, None]
        hess = p * landscape.sharp_hessian + (1 - p) * landscape.flat_hessian
        vals, vecs = top_eigenpairs(hess, min(cfg.hessian_k, d), absolute=True)
        return noise.hessian_noise(vals, vecs, cfg.hessian_scale, **kw)
    if not _needs_cov(method):
        raise UserError(f"unknown escape method {method!r}; choose from {', '.join(METHODS)}")
    if cov is None:
        cov = landscape.gradient_covariance(w, mask) / cfg.batch_size  # Σ_sgd = Σ/m
    diag = cov.diagonal(dim1=-2, dim2=-1).clamp_min(0)
    if method == "gld_dynamic":
        return noise.dynamic_noise(diag.sum(-1), d, dtype=w.dtype, **kw)
    if method == "gld_diag":
        return noise.diagonal_noise(diag, **kw)
    vals, vecs = top_eigenpairs(cov, min(cfg.leading_k, d))
    return noise.leading_noise(vals, vecs, **kw)


def expected_sharpness_batched(
    landscape: TwoBasin, w: Tensor, *, sigma: float = 0.1, samples: int = 100,
    generator: torch.Generator | None = None, xi: Tensor | None = None,
    with_stderr: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """E_ξ[L(w+ξ)] − L(w), ξ ~ N(0, σ²I), M = ``samples`` draws per chain; shape (...).

    Monte-Carlo over M draws (or the given perturbations ``xi``, shape (..., M, d)), batched
    over chains. ``sgdlab.measure.sharpness`` computes the same quantity for one
    ``nn.Module`` at a time; here 10²–10³ chains are probed at once on an analytic loss.
    ``with_stderr=True`` returns (estimate, its standard error std/√M over the M draws).
    """
    if xi is None:
        xi = noise.standard_normal((*w.shape[:-1], samples, w.shape[-1]), generator=generator,
                                   dtype=w.dtype, device=w.device) * sigma
    diffs = landscape.loss(w[..., None, :] + xi) - landscape.loss(w)[..., None]
    if not with_stderr:
        return diffs.mean(-1)
    m = diffs.shape[-1]
    se = diffs.std(-1) / m ** 0.5 if m > 1 else torch.full_like(diffs[..., 0], float("nan"))
    return diffs.mean(-1), se


def gauss_hermite_normal(dim: int, nodes: int, *, dtype: torch.dtype = torch.float64,
                         device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Tensor-grid Gauss-Hermite rule for E over z ~ N(0, I_dim): points (nodes^dim, dim)
    and weights (nodes^dim,) summing to 1 (numpy's ``hermgauss`` nodes times √2, weights
    over √π). Exact for polynomials of degree < 2·nodes in each coordinate."""
    nodes = check_count("nodes", nodes, 1)
    x, wt = np.polynomial.hermite.hermgauss(nodes)
    z = torch.tensor(np.sqrt(2.0) * x, dtype=dtype, device=device)
    p = torch.tensor(wt / np.sqrt(np.pi), dtype=dtype, device=device)
    grid = torch.stack(torch.meshgrid(*[z] * dim, indexing="ij"), -1).reshape(-1, dim)
    weights = torch.ones((), dtype=dtype, device=device)
    for _ in range(dim):
        weights = (weights[..., None] * p).reshape(-1)
    return grid, weights


def expected_sharpness_quadrature(landscape: TwoBasin, w: Tensor, *, sigma: float = 0.1,
                                  nodes: int = 40) -> Tensor:
    """E_ν[L(w+ν)] − L(w), ν ~ N(0, σ²I), by a ``nodes`` × ``nodes`` Gauss-Hermite grid over
    the 2-D loss, batched over chains; shape (...). No sampling error: exact to round-off
    where every sample stays on one branch over the grid (there L is quadratic), and across a
    branch kink it converges as the grid is refined (the printed loss, σ = 0.1, 40 nodes:
    within 5·10⁻⁴ of 80 nodes on the segment between the minima;
    docs/design/landscapes-escape.md). Chains are evaluated in blocks so that a block's
    (chains × nodes² × N) losses stay near 10⁷ terms."""
    grid, weights = gauss_hermite_normal(w.shape[-1], nodes, dtype=w.dtype, device=w.device)
    flat = w.reshape(-1, w.shape[-1])
    per_block = max(1, 10_000_000 // (grid.shape[0] * max(1, landscape.num_samples)))
    out = [(landscape.loss(b[:, None, :] + sigma * grid) * weights).sum(-1)
           - landscape.loss(b) for b in flat.split(per_block)]
    return torch.cat(out).reshape(w.shape[:-1])


# ------------------------------------------------------------------ the experiment
def run_methods(
    methods: tuple[str, ...] | list[str], landscape: TwoBasin, cfg: EscapeConfig,
    *, generators: list[torch.Generator],
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor, Tensor | None]:
    """Run R repetitions of K methods together as one (K, R, 2) state.

    Branch masks, gradients and the sharpness probe are computed once for all K·R chains;
    only the noise factor is per method. Each method draws its randomness from its own
    generator, so its outcome does not depend on which other methods run beside it.

    Returns (final (K, R, 2), sharpness (K, S) or None, trajectory (T+1, K, R, 2) or None,
    passage (K, R): the first iteration 0..T at which the iterate lay in the flat basin, −1
    where none did, the sharpness's Monte Carlo standard error (K, S) or None: None too
    under ``sharpness_estimator="quadrature"``), on the landscape's device. The generators
    may be on another device (the CPU's): every draw is made on its generator's device and
    moved, so a run on CUDA with CPU generators sees the CPU run's draws.
    """
    cfg.validate()
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UserError(f"unknown escape method(s) {bad}; choose from {', '.join(METHODS)}")
    if len(generators) != len(methods):
        raise UserError("one generator per method is required")
    K, R, eta = len(methods), cfg.repetitions, cfg.lr
    # authors-code: ε is added after the step as is; paper: η ε
    noise_factor = 1.0 if cfg.protocol == "authors-code" else eta
    start = landscape.sharp_center if cfg.start == "sharp_center" else landscape.sharp_minimum
    w = start.expand(K, R, 2).clone()
    traj = [w.clone()] if cfg.record_trajectory else None
    sharp: list[Tensor] = []
    sharp_se: list[Tensor] = []
    passage = torch.full((K, R), -1, dtype=torch.long, device=w.device)
    cov_rows = [i for i, m in enumerate(methods) if _needs_cov(m)]
    for t in range(cfg.iterations + 1):
        if cfg.sharpness_every and t % cfg.sharpness_every == 0:
            # drawn under the quadrature too: the chains' noise, and so the success rates,
            # do not depend on the estimator
            xi = torch.cat([noise.standard_normal((1, R, cfg.sharpness_samples, 2),
                                                  generator=g, dtype=w.dtype, device=w.device)
                            for g in generators])
            if cfg.sharpness_estimator == "quadrature":
                sharp.append(expected_sharpness_quadrature(
                    landscape, w, sigma=cfg.sharpness_sigma, nodes=cfg.sharpness_nodes).mean(-1))
            else:
                est, se = expected_sharpness_batched(landscape, w, xi=xi * cfg.sharpness_sigma,
                                                     with_stderr=True)
                sharp.append(est.mean(-1))
                # the R chains' draws are independent: the mean's variance is Σ se_r² / R²
                sharp_se.append(se.square().sum(-1).sqrt() / R)
        mask = landscape.sharp_mask(w)                      # (K, R, N)
        # in_flat_basin, mask reused; a non-finite iterate has no sharp branch but is nowhere
        inside = (mask.to(w.dtype).mean(-1) < 0.5) & torch.isfinite(w).all(-1)
        passage[inside & (passage < 0)] = t
        if t == cfg.iterations:
            break
        grad = landscape.grad(w, mask=mask)                 # (K, R, 2)
        covs: dict[int, Tensor] = {}
        if cov_rows:  # Σ/m for every method that needs it, in one batched call
            cov = landscape.gradient_covariance(w[cov_rows], mask[cov_rows]) / cfg.batch_size
            covs = {i: cov[j] for j, i in enumerate(cov_rows)}
        steps = []
        for i, method in enumerate(methods):
            gen = generators[i]
            if method == "sgd":
                idx = landscape.sample_batches((R,), cfg.batch_size, generator=gen)
                steps.append(-eta * landscape.grad(w[i], idx, mask=mask[i]))
                continue
            step = -eta * grad[i]
            eps = sample_method_noise(method, landscape, w[i], cfg, generator=gen,
                                      mask=mask[i], cov=covs.get(i))
            steps.append(step if eps is None else step + noise_factor * eps)
        w = w + torch.stack(steps)
        if traj is not None:
            traj.append(w.clone())
    return (w, torch.stack(sharp, -1) if sharp else None,
            torch.stack(traj) if traj is not None else None, passage,
            torch.stack(sharp_se, -1) if sharp_se else None)


def escape_experiment(
    landscape: TwoBasin | None = None,
    config: EscapeConfig | None = None,
    *,
    methods: str | tuple[str, ...] | list[str] = METHODS,
) -> EscapeResult:
    """Run every method from the sharp minimum; success rate = share ending in the flat basin
    (or, ``success_rule="corner"``, with both coordinates < −0.5). ``methods``: names from
    :data:`METHODS`, each once, or one name.

    Each method uses its own generator seeded with ``method_seed(config.seed, method)``. The default
    landscape is ``TwoBasin(dtype=torch.float32)``; the state takes the landscape's dtype and
    device (``landscape.to("cuda")`` runs it there). The generators are CPU generators whatever
    the device, so a seed gives the same draws on every device; the result's tensors are
    returned on the CPU.
    """
    cfg = config or EscapeConfig()
    cfg.validate()
    # float32 by default: values are O(1) and the sharpness probe (K·R·M·N ≈ 7·10⁶ terms per
    # record) is 4–6× faster than in float64; pass a float64 TwoBasin for exact comparisons.
    land = TwoBasin(dtype=torch.float32) if landscape is None else landscape
    if not isinstance(land, TwoBasin):      # an AttributeError about sharp_center before
        raise UserError(f"escape_experiment runs on a TwoBasin landscape (its sharp and flat "
                        f"basins), got {type(land).__name__}")
    # one name alone is that method (list("gd") was ['g', 'd']); none failed in torch.stack
    # and a repeated one ran twice into one entry of the result
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise UserError(f"methods must name at least one of {', '.join(METHODS)}")
    repeated = sorted({m for m in methods if methods.count(m) > 1})
    if repeated:
        raise UserError(f"methods repeat {', '.join(map(str, repeated))}: each runs once")
    gens = [torch.Generator().manual_seed(method_seed(cfg.seed, m)) if m in METHODS
            else torch.Generator() for m in methods]
    final, sharp, traj, passage, sharp_se = run_methods(methods, land, cfg, generators=gens)
    reached = passage >= 0
    result = EscapeResult(config=cfg)
    if sharp is not None:
        result.sharpness_steps = list(range(0, cfg.iterations + 1, cfg.sharpness_every))
    if cfg.success_rule == "corner":
        ok = (final < -0.5).all(-1)
    elif cfg.success_rule == "reached":
        ok = reached
    else:
        ok = land.in_flat_basin(final)
    finite = torch.isfinite(final).all(-1)     # a NaN iterate compares False everywhere: it
    ok = ok & finite                           # would count as "in the flat basin"
    flat = ok.to(torch.float64).mean(-1)
    reach = reached.to(torch.float64).mean(-1)
    lost = (~finite).to(torch.float64).mean(-1)
    for i, method in enumerate(methods):
        result.final[method] = final[i].cpu()
        result.success_rate[method] = float(flat[i])
        result.reached_rate[method] = float(reach[i])
        result.first_passage[method] = passage[i].cpu()
        result.diverged_rate[method] = float(lost[i])
        if sharp is not None:
            result.sharpness[method] = sharp[i].tolist()
        if sharp_se is not None:
            result.sharpness_stderr[method] = sharp_se[i].tolist()
        if traj is not None:
            result.trajectory[method] = traj[:, i].cpu()
    return result


__all__ = ["METHODS", "LABELS", "PROTOCOLS", "SUCCESS_RULES", "SHARPNESS_ESTIMATORS",
           "binomial_se", "wilson_interval",
           "rate_difference_interval", "EscapeConfig", "EscapeResult", "escape_experiment",
           "method_seed", "run_methods", "method_noise_covariance", "sample_method_noise",
           "top_eigenpairs", "expected_sharpness_batched", "gauss_hermite_normal",
           "expected_sharpness_quadrature"]
