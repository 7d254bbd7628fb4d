"""Binary perceptron, teacher–student (thesis §3.1.1, eq. 3.3), and local-entropy-guided search.

A teacher x* ∈ {±1}^d labels N = αd random patterns ξ^μ ∈ {±1}^d by σ^μ = sign(x*·ξ^μ)
(d odd, so no ties). A student x ∈ {±1}^d has training energy E(x) = #{μ : σ^μ x·ξ^μ < 0} and
generalisation error (the probability of disagreeing with the teacher on a fresh pattern, for
d → ∞)

    ε(x) = arccos(R)/π,    R = x·x*/d.

Two searches, both simulated annealing by single-spin-flip Metropolis moves, vectorised over
instances × replicas (no Python loop over either):

- **plain**: y independent replicas anneal E(x); at the end each is (close to) a typical zero
  training-error solution; we report the mean ε over replicas.
- **local-entropy-guided** (robust ensemble / replicated search, Baldassi et al. 2016, which
  §3.1.1 reviews): the y replicas feel Σ_a E(x^a) − (γ/y) Σ_{a<b} x^a · x^b (= −(γ/2y)|C|²
  up to a constant, C = Σ_a x^a: a flip of x_i^a changes it by (2γ/y) x_i^a (C_i − x_i^a);
  the thesis states no discrete Hamiltonian, so this pairwise scale is sgdlab's) with γ ramped
  from 0, which pulls them into dense regions of solutions; the output is their centre
  sign(Σ_a x^a). This γ is a coupling (it grows as the scope of the thesis' continuous local
  entropy shrinks) and is not the γ of eq. (3.5), which fixes an overlap 1 − 2γ.

A control, **plain centre** (the sign of the sum of the *uncoupled* replicas), separates the
effect of the coupling from that of merely averaging solutions.

The replicas of an instance move at once, each flip judged against the others' configuration
from before the step (synchronous Metropolis). With γ > 0 that chain has no detailed balance
for the coupled energy at a fixed β and γ: it anneals towards low energy, as a search, but does
not sample that energy's Gibbs law (docs/design/landscapes.md, "Results").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sgdlab.errors import UserError, checked_float

from .base import check_count, check_floating_dtype, check_positive


def generalization_error(x: Tensor, teacher: Tensor) -> Tensor:
    """ε = arccos(x·x*/d)/π for ±1 vectors, batched over leading dims."""
    r = (x * teacher).sum(-1) / x.shape[-1]
    return torch.arccos(r.clamp(-1, 1)) / math.pi


@dataclass
class PerceptronInstances:
    """B independent teacher–student instances: teacher (B, d), patterns (B, N, d) of ±1,
    labels (B, N) of ±1."""

    teacher: Tensor
    patterns: Tensor
    labels: Tensor

    @classmethod
    def sample(cls, batch: int, d: int, alpha: float, *,
               generator: torch.Generator | None = None) -> PerceptronInstances:
        # fractional sizes failed inside torch.randint; batch 0 gave empty instances
        batch = check_count("batch", batch, 1)
        try:
            d = check_count("d", d, 3)
            odd = d % 2 == 1
        except UserError:
            odd = False
        if not odd:
            raise UserError(f"d must be an odd integer >= 3 (no ties in sign), got {d!r}")
        check_positive("alpha", alpha)
        n = max(1, int(round(alpha * d)))
        teacher = torch.randint(0, 2, (batch, d), generator=generator).float() * 2 - 1
        patterns = torch.randint(0, 2, (batch, n, d), generator=generator).float() * 2 - 1
        labels = torch.sign(torch.einsum("bnd,bd->bn", patterns, teacher))
        return cls(teacher, patterns, labels)

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> PerceptronInstances:
        """Move teacher, patterns and labels (all ±1, floating) in place, as
        ``Landscape.to``; :func:`anneal` then runs on their device."""
        check_floating_dtype("PerceptronInstances.to", dtype)
        for name in ("teacher", "patterns", "labels"):
            setattr(self, name, getattr(self, name).to(device=device, dtype=dtype))
        return self

    def train_errors(self, x: Tensor) -> Tensor:
        """E(x) for x of shape (B, ..., d): number of misclassified training patterns."""
        h = torch.einsum("bnd,b...d->b...n", self.patterns, x)
        return (h * self.labels.reshape(self.labels.shape[0], *([1] * (x.ndim - 2)), -1)
                < 0).sum(-1)


def coupling_energy(x: Tensor, gamma: float) -> Tensor:
    """−(γ/y) Σ_{a<b} x^a·x^b for replicas x of shape (..., y, d)."""
    y, c = x.shape[-2], x.sum(-2)
    return -(gamma / y) * ((c * c).sum(-1) - (x * x).sum((-2, -1))) / 2


def coupling_flip_change(gamma: float, replicas: int, xi: Tensor, c_i: Tensor) -> Tensor:
    """The change of :func:`coupling_energy` when x_i^a = ``xi`` flips, C_i = ``c_i``."""
    return 2 * gamma / replicas * xi * (c_i - xi)


def anneal(
    inst: PerceptronInstances, *, replicas: int = 7, sweeps: int = 200,
    beta: tuple[float, float] = (0.5, 6.0), gamma_max: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Simulated annealing of y replicas per instance; returns the replicas (B, y, d).

    β (inverse temperature on the total energy) rises geometrically over ``sweeps`` sweeps of
    d proposals; the coupling γ rises linearly from 0 to ``gamma_max`` (0 = plain search).
    Runs on the instances' device and dtype; the draws are made on the generator's device and
    moved there (a CPU generator gives the same replicas on every device).
    """
    replicas, sweeps = check_count("replicas", replicas, 1), check_count("sweeps", sweeps, 1)
    if len(beta) != 2:
        raise UserError(f"beta must be a (start, end) pair, got {beta}")
    for b in beta:        # β rises geometrically: a zero or negative end has no such schedule
        check_positive("beta", b)
    checked_float("gamma_max", gamma_max, None)
    b, n, d = inst.patterns.shape
    dev, dtype = inst.patterns.device, inst.patterns.dtype
    gdev = generator.device if generator is not None else dev

    def randint(high: int, shape: tuple[int, ...]) -> Tensor:
        return torch.randint(0, high, shape, generator=generator, device=gdev).to(dev)
    x = randint(2, (b, replicas, d)).to(dtype) * 2 - 1
    # stabilities Δ^μ = σ^μ x·ξ^μ, updated incrementally per flip
    sxi = inst.patterns * inst.labels[..., None]                   # (B, N, d)
    stab = torch.einsum("bnd,bad->ban", sxi, x)                     # (B, y, N)
    centre = x.sum(1)                                               # (B, d)
    total = sweeps * d
    bi = torch.arange(b, device=dev)[:, None].expand(b, replicas)
    ai = torch.arange(replicas, device=dev)[None, :].expand(b, replicas)
    cols = torch.arange(n, device=dev)[None, None, :]
    for step in range(total):
        frac = step / max(total - 1, 1)
        beta_t = beta[0] * (beta[1] / beta[0]) ** frac
        gamma_t = gamma_max * frac
        i = randint(d, (b, replicas))
        xi = x[bi, ai, i]                                           # (B, y)
        col = sxi[bi[..., None], cols, i[..., None]]                # (B, y, N)
        new_stab = stab - 2 * xi[..., None] * col
        d_err = ((new_stab < 0).sum(-1) - (stab < 0).sum(-1)).to(dtype)
        d_coup = coupling_flip_change(gamma_t, replicas, xi, centre[bi, i])
        delta = d_err + d_coup
        # float32 whatever the dtype: the same stream, so the same run, in either dtype
        u = torch.rand((b, replicas), generator=generator, device=gdev).to(dev, dtype)
        accept = (delta <= 0) | (u < torch.exp(-beta_t * delta))
        if accept.any():
            stab = torch.where(accept[..., None], new_stab, stab)
            flip = torch.where(accept, -2 * xi, torch.zeros_like(xi))
            x[bi, ai, i] = xi + flip
            centre.index_put_((bi.reshape(-1), i.reshape(-1)), flip.reshape(-1), accumulate=True)
    return x


def compare_searches(*, d: int = 201, alphas: tuple[float, ...] | list[float] = (0.3, 0.6, 0.9),
                     instances: int = 8, replicas: int = 7, sweeps: int = 200,
                     gamma_max: float = 1.0, seed: int = 0,
                     device: torch.device | str = "cpu") -> dict:
    """ε per α for plain search, its replica centre, and local-entropy-guided search.

    The instances are drawn on the CPU and annealed on ``device`` with a CPU generator: the
    same replicas on every device (:func:`anneal`).

    Returns ``{"alphas", "errors": {method: [mean ε per α]}, "stderr": {...},
    "train_errors": {...}}`` with means over instances (and replicas for plain search)."""
    gen = torch.Generator().manual_seed(seed)
    out = {"alphas": list(alphas), "d": d, "instances": instances, "replicas": replicas,
           "sweeps": sweeps, "gamma_max": gamma_max,
           "errors": {"plain": [], "plain centre": [], "local entropy": []},
           "stderr": {"plain": [], "plain centre": [], "local entropy": []},
           "train_errors": {"plain": [], "plain centre": [], "local entropy": []}}
    for alpha in alphas:
        inst = PerceptronInstances.sample(instances, d, alpha, generator=gen).to(device)
        plain = anneal(inst, replicas=replicas, sweeps=sweeps, generator=gen)
        coupled = anneal(inst, replicas=replicas, sweeps=sweeps, gamma_max=gamma_max,
                         generator=gen)
        t = inst.teacher
        results = {
            "plain": (generalization_error(plain, t[:, None]).mean(1),
                      inst.train_errors(plain).float().mean(1)),
            "plain centre": (generalization_error(_centre(plain), t),
                             inst.train_errors(_centre(plain)[:, None])[:, 0].float()),
            "local entropy": (generalization_error(_centre(coupled), t),
                              inst.train_errors(_centre(coupled)[:, None])[:, 0].float()),
        }
        for name, (eps, err) in results.items():
            out["errors"][name].append(float(eps.mean()))
            out["stderr"][name].append(float(eps.std() / math.sqrt(len(eps))))
            out["train_errors"][name].append(float(err.mean()))
    return out


def _centre(x: Tensor) -> Tensor:
    """sign(Σ_a x^a) (y odd: no ties)."""
    s = x.sum(1)
    return torch.where(s >= 0, 1.0, -1.0)


__all__ = ["PerceptronInstances", "generalization_error", "anneal", "compare_searches"]
