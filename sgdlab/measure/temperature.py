"""Temperatures of SGD and a solver that keeps one of them fixed while changing lr or batch size.

Each temperature is a function of the hyper-parameters (η: learning rate, B: batch size,
μ: momentum, N: dataset size) and, for the thesis' proposal, of a measured mean eigenvalue of
the diffusion matrix D(x) (:mod:`sgdlab.measure.noise`).

- ``eta_over_b``:  η / B — Jastrzebski et al. (2017), "Three factors influencing minima".
- ``beta_inv``:    β⁻¹ = η / (2B) — Chaudhari & Soatto (2018) / Chaudhari's thesis Thm 6.5, for
  sampling with replacement; with ``dataset_size=N`` and without replacement, the thesis'
  factor (1 − B/N): β⁻¹ = η/(2B) · (1 − B/N). (The exact finite-population covariance factor
  is (N − B)/(B(N − 1)) = (1 − B/N)/B · N/(N − 1), see ``minibatch_noise_factor``; the thesis
  drops N/(N − 1), and so do we here, so the numbers match the thesis.)
- ``musso``:       T = ⟨η⟩ / (2B(1 − μ)) — Musso (2020), "Stochastic gradient descent with
  random learning rate". Our reading: in the small-learning-rate regime the effective
  temperature of SGD with heavy-ball momentum μ and a random (e.g. uniform) learning rate
  depends only on the *mean* learning rate ⟨η⟩, the batch size and μ, through the effective
  step ⟨η⟩/(1 − μ); the fluctuation of η multiplies the full gradient ∇L (not the mini-batch
  noise), so its second moment enters only at higher order in η and near minima, and no
  second-moment correction is applied. We keep the factor 1/2 of β⁻¹ so that T reduces to
  β⁻¹ for μ = 0 and constant η. This is our reading of the abstract-level statement; check the
  paper's eq. for constant factors before comparing absolute values.
- ``thesis``:      (η / B) · mean λ(D) — the thesis' proposal to compare runs by the noise
  actually injected: mean λ(D) = Tr D / d (mean over all d eigenvalues), measured.
"""
from __future__ import annotations

import math

KINDS = ("eta_over_b", "beta_inv", "musso", "thesis")


def _check(lr: float, batch_size: float, momentum: float = 0.0,
           dataset_size: int | None = None) -> None:
    if not lr > 0:
        raise ValueError(f"Invalid learning rate: {lr} (must be > 0)")
    if not batch_size > 0:
        raise ValueError(f"Invalid batch size: {batch_size} (must be > 0)")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"Invalid momentum value: {momentum} (need 0 <= momentum < 1)")
    if dataset_size is not None and not batch_size <= dataset_size:
        raise ValueError(f"batch size {batch_size} exceeds dataset size {dataset_size}")


def eta_over_b(lr: float, batch_size: float) -> float:
    """η / B (Jastrzebski et al. 2017)."""
    _check(lr, batch_size)
    return lr / batch_size


def beta_inv(lr: float, batch_size: float, dataset_size: int | None = None) -> float:
    """β⁻¹ = η/(2B), times (1 − B/N) without replacement when ``dataset_size`` is given
    (Chaudhari's thesis Thm 6.5)."""
    _check(lr, batch_size, dataset_size=dataset_size)
    t = lr / (2 * batch_size)
    return t * (1 - batch_size / dataset_size) if dataset_size is not None else t


def musso_temperature(mean_lr: float, batch_size: float, momentum: float = 0.0) -> float:
    """T = ⟨η⟩ / (2B(1 − μ)) (Musso 2020; see the module docstring for our reading)."""
    _check(mean_lr, batch_size, momentum)
    return mean_lr / (2 * batch_size * (1 - momentum))


def thesis_temperature(lr: float, batch_size: float, mean_eigenvalue: float) -> float:
    """(η / B) · mean λ(D), with mean λ(D) = Tr D / d measured (e.g.
    ``GradientCovariance.trace() / dim``)."""
    _check(lr, batch_size)
    if not mean_eigenvalue >= 0:
        raise ValueError(f"Invalid mean eigenvalue {mean_eigenvalue} (must be >= 0)")
    return lr / batch_size * mean_eigenvalue


def temperature(kind: str, lr: float, batch_size: float, *, momentum: float = 0.0,
                dataset_size: int | None = None, mean_eigenvalue: float | None = None) -> float:
    """Temperature ``kind`` (one of :data:`KINDS`) at the given hyper-parameters."""
    if kind == "eta_over_b":
        return eta_over_b(lr, batch_size)
    if kind == "beta_inv":
        return beta_inv(lr, batch_size, dataset_size)
    if kind == "musso":
        return musso_temperature(lr, batch_size, momentum)
    if kind == "thesis":
        if mean_eigenvalue is None:
            raise ValueError("the thesis temperature needs a measured mean eigenvalue of D(x)")
        return thesis_temperature(lr, batch_size, mean_eigenvalue)
    raise ValueError(f"Unknown temperature {kind!r}; known: {', '.join(KINDS)}")


def temperatures(lr: float, batch_size: float, *, momentum: float = 0.0,
                 dataset_size: int | None = None,
                 mean_eigenvalue: float | None = None) -> dict[str, float]:
    """All temperatures computable from the given inputs, by name."""
    out = {
        "eta_over_b": eta_over_b(lr, batch_size),
        "beta_inv": beta_inv(lr, batch_size),
        "musso": musso_temperature(lr, batch_size, momentum),
    }
    if dataset_size is not None:
        out["beta_inv_without_replacement"] = beta_inv(lr, batch_size, dataset_size)
    if mean_eigenvalue is not None:
        out["thesis"] = thesis_temperature(lr, batch_size, mean_eigenvalue)
    return out


def solve_lr(kind: str, target: float, batch_size: float, *, momentum: float = 0.0,
             dataset_size: int | None = None, mean_eigenvalue: float | None = None) -> float:
    """The learning rate giving temperature ``target`` at ``batch_size`` (all temperatures are
    linear in η)."""
    unit = temperature(kind, 1.0, batch_size, momentum=momentum, dataset_size=dataset_size,
                       mean_eigenvalue=mean_eigenvalue)
    if unit == 0:
        raise ValueError(f"temperature {kind!r} is zero at batch size {batch_size} "
                         "(full batch without replacement?): no learning rate matches")
    return target / unit


def solve_batch_size(kind: str, target: float, lr: float, *, momentum: float = 0.0,
                     dataset_size: int | None = None,
                     mean_eigenvalue: float | None = None) -> float:
    """The (real-valued) batch size giving temperature ``target`` at learning rate ``lr``.

    All kinds are c/B except β⁻¹ without replacement, η(N − B)/(2BN) = T ⇒ B = ηN/(2TN + η).
    Round to an integer yourself (and recompute the temperature) — the CLI does.
    """
    if not target > 0:
        raise ValueError(f"Invalid target temperature {target} (must be > 0)")
    if kind == "beta_inv" and dataset_size is not None:
        return lr * dataset_size / (2 * target * dataset_size + lr)
    at_one = temperature(kind, lr, 1.0, momentum=momentum, mean_eigenvalue=mean_eigenvalue)
    b = at_one / target
    if dataset_size is not None and b > dataset_size:
        raise ValueError(f"matching needs batch size {b:.1f} > dataset size {dataset_size}")
    return b


def round_batch_size(b: float) -> int:
    """Nearest integer batch size, at least 1."""
    return max(1, int(math.floor(b + 0.5)))
