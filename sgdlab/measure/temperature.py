"""Temperatures of SGD and a solver that keeps one of them fixed while changing lr or batch size.

Each temperature is a function of the hyper-parameters (η: learning rate, B: batch size,
μ: momentum, N: dataset size) and, for the thesis' proposal, of a measured mean eigenvalue of
the diffusion matrix D(x) (:mod:`sgdlab.measure.noise`).

- ``eta_over_b``:  η / B — Jastrzebski et al. (2018), "Width of Minima Reached by
  Stochastic Gradient Descent is Influenced by Learning Rate to Batch Size Ratio" (the ICANN
  version of "Three factors influencing minima in SGD"), §2.1.
- ``beta_inv``:    β⁻¹ = η / (2B) — Chaudhari & Soatto (2018) / Chaudhari's thesis Thm 6.5, for
  sampling with replacement; with ``dataset_size=N`` and without replacement, the thesis'
  factor (1 − B/N): β⁻¹ = η/(2B) · (1 − B/N). (The exact finite-population covariance factor
  is (N − B)/(B(N − 1)) = (1 − B/N)/B · N/(N − 1), see ``minibatch_noise_factor``; the thesis
  keeps N/(N − 1) in D_wo (eq. 6.5 as its proof gives it, D_wo = N/(N − 1) · D_w) and not in
  β_wo⁻¹ of eq. (6.7), which is what this returns: 2β_wo⁻¹ D_wo is η times the mini-batch
  gradient's exact covariance (Remark 6.37's ηD/ℓ), 2β_wo⁻¹ D_w falls short by N/(N − 1).)
- ``musso``:       T = l D / (6 C (1 − μ)) — Musso 2020, eq. (19), in the paper's own terms:
  l the *maximal* learning rate (the random factor α ~ U[0, 1] of eq. (1) multiplies it), C the
  mini-batch size, μ the momentum and D the isotropic diffusion constant of eq. (8), unknown
  and 1 by default (T in units of D). The printed eq. (19) has (μ − 1), which makes T < 0 for
  every μ in [0, 1); eq. (16), which it solves, gives (1 − μ): we use that. Ratios, which is
  what equal-temperature comparisons use, are the same either way.
- ``musso-mean-lr``: the same T with ``lr`` read as the *mean* learning rate ⟨η⟩ = l/2
  (§3.1's convention, "the same mean value l"): T = ⟨η⟩ D / (3 C (1 − μ)).
  Which rate eq. (19)'s l stands for is itself read two ways (``musso_temperature``'s
  ``eq19_l``): line 142 and the derivation from eq. (1) make it the maximal one (default),
  while the abstract (line 19), the introduction (line 48) and §3.3 (line 226) say T depends
  on the *average* learning rate: ``eq19_l="average"`` gives T = ⟨η⟩ D / (6 C (1 − μ)).
- ``thesis``:      (η / B) · mean λ(D) — the thesis' proposal to compare runs by the noise
  actually injected: mean λ(D) = Tr D / d (mean over all d eigenvalues), measured.
"""
from __future__ import annotations

import math

from sgdlab.errors import checked_keywords

KINDS = ("eta_over_b", "beta_inv", "musso", "musso-mean-lr", "thesis")
#: how ``musso_temperature`` reads its ``lr``: the maximal l (eq. (19)) or the mean l/2
MUSSO_CONVENTIONS = {"paper": 1.0, "mean-lr": 2.0}
#: which rate eq. (19)'s l is, as a share of the maximal one: line 142's "(maximal) learning
#: rate l", or the "average learning rate" of lines 19, 48 and 226 (half of it, α ~ U[0, 1])
MUSSO_EQ19_RATES = {"maximal": 1.0, "average": 0.5}


def _check(lr: float, batch_size: float, momentum: float = 0.0,
           dataset_size: int | None = None) -> None:
    # inf: every temperature came out inf, or 0 and nan once solved for the other
    if not 0 < lr < math.inf:
        raise ValueError(f"Invalid learning rate: {lr} (must be finite and > 0)")
    if not 0 < batch_size < math.inf:
        raise ValueError(f"Invalid batch size: {batch_size} (must be finite and > 0)")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"Invalid momentum value: {momentum} (need 0 <= momentum < 1)")
    if dataset_size is not None and not batch_size <= dataset_size:
        raise ValueError(f"batch size {batch_size} exceeds dataset size {dataset_size}")


def eta_over_b(lr: float, batch_size: float) -> float:
    """η / B (Jastrzebski et al. 2018, §2.1)."""
    _check(lr, batch_size)
    return lr / batch_size


def beta_inv(lr: float, batch_size: float, dataset_size: int | None = None) -> float:
    """β⁻¹ = η/(2B), times (1 − B/N) without replacement when ``dataset_size`` is given
    (Chaudhari's thesis Thm 6.5)."""
    _check(lr, batch_size, dataset_size=dataset_size)
    t = lr / (2 * batch_size)
    return t * (1 - batch_size / dataset_size) if dataset_size is not None else t


@checked_keywords()
def musso_temperature(lr: float, batch_size: float, momentum: float = 0.0, *,
                      diffusion: float = 1.0, convention: str = "paper",
                      eq19_l: str = "maximal") -> float:
    """T = l D / (6 C (1 − μ)): Musso 2020, eq. (19) (sign as eq. (16) gives it).

    ``convention`` says what ``lr`` is for the random protocol: ``"paper"`` the maximal
    learning rate (α ~ U[0, 1] of eq. (1)), ``"mean-lr"`` the mean one (maximal = 2·lr).
    ``eq19_l`` says which of the two eq. (19)'s l is: ``"maximal"`` (line 142, the
    derivation's) or ``"average"`` (lines 19, 48 and 226: T = ⟨η⟩ D / (6 C (1 − μ))). A
    constant learning rate η is its own maximum and mean: give ``lr=η`` with
    ``convention="paper"`` (``"maximal"``) or ``"mean-lr"`` (``"average"``) for l = η.
    ``diffusion`` is D of eq. (8).
    """
    _check(lr, batch_size, momentum)
    if convention not in MUSSO_CONVENTIONS:
        raise ValueError(f"Invalid convention {convention!r}; known: "
                         f"{', '.join(MUSSO_CONVENTIONS)}")
    if eq19_l not in MUSSO_EQ19_RATES:
        raise ValueError(f"Invalid eq19_l {eq19_l!r} (which rate eq. (19)'s l is); known: "
                         f"{', '.join(MUSSO_EQ19_RATES)}")
    if not diffusion > 0:
        raise ValueError(f"Invalid diffusion constant D = {diffusion} (must be > 0)")
    max_lr = lr * MUSSO_CONVENTIONS[convention]
    l = max_lr * MUSSO_EQ19_RATES[eq19_l]
    return l * diffusion / (6 * batch_size * (1 - momentum))


def thesis_temperature(lr: float, batch_size: float, mean_eigenvalue: float) -> float:
    """(η / B) · mean λ(D), with mean λ(D) = Tr D / d measured (e.g.
    ``GradientCovariance.trace() / dim``)."""
    _check(lr, batch_size)
    if not 0 <= mean_eigenvalue < math.inf:
        raise ValueError(f"Invalid mean eigenvalue {mean_eigenvalue} (must be finite and >= 0)")
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
    if kind == "musso-mean-lr":
        return musso_temperature(lr, batch_size, momentum, convention="mean-lr")
    if kind == "thesis":
        if mean_eigenvalue is None:
            raise ValueError("the thesis temperature needs a measured mean eigenvalue of D(x)")
        return thesis_temperature(lr, batch_size, mean_eigenvalue)
    raise ValueError(f"Unknown temperature {kind!r}; known: {', '.join(KINDS)}")


@checked_keywords()
def temperatures(lr: float, batch_size: float, *, momentum: float = 0.0,
                 dataset_size: int | None = None,
                 mean_eigenvalue: float | None = None) -> dict[str, float]:
    """All temperatures computable from the given inputs, by name.

    Keys: ``eta_over_b`` η/B (:func:`eta_over_b`; no momentum); ``beta_inv`` η/(2B), with
    replacement (:func:`beta_inv`); ``musso`` and ``musso-mean-lr``, Musso's eq. (19) with
    D = 1 and ``lr`` read as the maximal or the mean rate (:func:`musso_temperature`; the
    only ones that take ``momentum``); with ``dataset_size``,
    ``beta_inv_without_replacement`` η/(2B)·(1 − B/N); with ``mean_eigenvalue`` (Tr D / d),
    ``thesis`` (η/B)·Tr D/d (:func:`thesis_temperature`).
    """
    out = {
        "eta_over_b": eta_over_b(lr, batch_size),
        "beta_inv": beta_inv(lr, batch_size),
        "musso": musso_temperature(lr, batch_size, momentum),
        "musso-mean-lr": musso_temperature(lr, batch_size, momentum, convention="mean-lr"),
    }
    if dataset_size is not None:
        out["beta_inv_without_replacement"] = beta_inv(lr, batch_size, dataset_size)
    if mean_eigenvalue is not None:
        out["thesis"] = thesis_temperature(lr, batch_size, mean_eigenvalue)
    return out


@checked_keywords()
def solve_lr(kind: str, target: float, batch_size: float, *, momentum: float = 0.0,
             dataset_size: int | None = None, mean_eigenvalue: float | None = None) -> float:
    """The learning rate giving temperature ``target`` at ``batch_size`` (all temperatures are
    linear in η)."""
    if not target > 0:
        raise ValueError(f"Invalid target temperature {target} (must be > 0)")
    unit = temperature(kind, 1.0, batch_size, momentum=momentum, dataset_size=dataset_size,
                       mean_eigenvalue=mean_eigenvalue)
    if unit == 0:
        raise ValueError(f"temperature {kind!r} is zero at batch size {batch_size} "
                         "(full batch without replacement?): no learning rate matches")
    return target / unit


@checked_keywords()
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
    if not at_one > 0:
        raise ValueError(f"temperature {kind!r} is {at_one} at every batch size for lr={lr} "
                         "(a zero learning rate or mean eigenvalue?): no batch size matches")
    b = at_one / target
    if dataset_size is not None and b > dataset_size:
        raise ValueError(f"matching needs batch size {b:.1f} > dataset size {dataset_size}")
    return b


def round_batch_size(b: float) -> int:
    """Nearest integer batch size, at least 1."""
    return max(1, int(math.floor(b + 0.5)))
