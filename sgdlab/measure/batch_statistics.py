"""What one mini-batch's per-sample gradients say about the step: the batch-size tests of
adaptive sampling, the gradient signal-to-noise ratio, the evidence-based stopping criterion,
the noise scale, and the Takeuchi information criterion. Cockpit (Schneider, Dangel & Hennig
2021) tracks the same quantities with BackPACK; here they come from the per-sample gradient
engine's Gram matrix, mean and squared sums (:class:`~sgdlab.measure.noise.GradientCovariance`),
so a network of linear and convolution layers never forms its (B, d) gradient matrix.

Notation: a mini-batch of B samples with per-sample gradients g_n (of the mean-reduced loss),
ḡ their mean (the mini-batch gradient, the SGD step's direction), S = (1/(B−1)) Σ_n
(g_n − ḡ)(g_n − ḡ)ᵀ their sample covariance (unbiased) and Σ = ((B−1)/B) S the population one
(:func:`~sgdlab.measure.noise.gradient_covariance`). Each test reports the smallest tolerance it
would pass with (Cockpit's reading); the test passes with a tolerance θ when the value is ≤ θ:

- norm test (Byrd, Chin, Nocedal & Wu 2012, eq. 3.9): √(Tr S / (B ‖ḡ‖²)), the relative size
  of the mini-batch gradient's standard error;
- inner-product test (Bollapragada, Byrd & Nocedal 2018): √(ḡᵀ S ḡ / (B ‖ḡ‖⁴)), the same along
  ḡ only (whether −ḡ stays a descent direction);
- orthogonality test (ibid.): √((Tr S − ḡᵀ S ḡ / ‖ḡ‖²) / (B ‖ḡ‖²)), the part orthogonal to ḡ.
  The three satisfy norm² = inner² + orthogonality² exactly.
- mean GSNR (Liu et al. 2020): the mean over parameters j of ḡ_j² / Σ_jj (population variance,
  as Cockpit computes it);
- EB criterion (Mahsereci, Balles, Lassner & Hennig 2017, eq. 7): 1 − (B/d) Σ_j ḡ_j² / S_jj;
  > 0 says the gradient is indistinguishable from noise (stop);
- CABS batch size (Balles, Romero & Hennig 2017, eq. 22, as Cockpit evaluates it):
  η Tr Σ / L for learning rate η and mini-batch loss L (derived for plain SGD; Cockpit refuses
  other optimizers; the instruments and ``sgdlab measure`` give the step
  :func:`sgdlab.optim.gradient_step_size`, which keeps SGD's lr with momentum μ, where the
  step's scale is about η/(1 − μ), not η, and give none for Adam, AdamW and RMSprop, whose
  step is no η times the gradient: CABS is then NaN, the only statistic that needs ``lr``);
- simple noise scale (McCandlish, Kaplan, Amodei et al. 2018, with the unbiased estimators of
  their appendix taken at batch sizes 1 and B): B_simple = Tr S / |G|², with
  |G|² = ‖ḡ‖² − Tr S / B unbiased for the squared norm of the true gradient. Its ratio is
  noisy: McCandlish et al. average numerator and denominator over steps separately, so both
  are reported (``trace_cov``, ``grad_sq_unbiased``);
- with ``curvature`` (``"hessian"`` or ``"ggn"``, of the mini-batch loss): their curvature-
  weighted noise scale B_noise = Tr(H S) / GᵀHG (the critical batch size of their quadratic
  model, where the best step size is ε_opt(B) = ε_max / (1 + B_noise / B)), GᵀHG estimated
  without bias by ḡᵀHḡ − Tr(H S)/B (``trace_h_cov``, ``grad_h_grad_unbiased``,
  ``noise_scale_curvature``).
  Tr(H S) takes one quadratic form per sample, (g_n − ḡ)ᵀ H (g_n − ḡ), by the operator's
  batched forms; H is the batch's own Hessian, not the full-data one McCandlish et al. mean.

Coordinates with zero variance (dead units, frozen-by-ReLU weights) make ḡ_j² / Σ_jj 0/0: with
``epsilon=0`` (default) they are left out of the GSNR and EB means (d counts the others);
``epsilon > 0`` adds it to every variance and keeps all d, as Cockpit does (its default 1e-5
dominates the variances of small models: a named reading, not the default).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from sgdlab.errors import checked_float_argument, checked_keywords
from sgdlab.operators.batches import Data, check_mean_of_samples
from sgdlab.operators.ggn import OutputNotTensor

from .noise import GradientCovariance, check_given_covariance, gradient_covariance
from .sharpness import mean_loss

__all__ = ["BatchStatistics", "TakeuchiInformation", "batch_statistics",
           "takeuchi_information"]


@dataclass(frozen=True)
class BatchStatistics:
    """One mini-batch's gradient statistics (module docstring); floats, NaN where undefined
    (a zero mini-batch gradient, no coordinate with variance, no learning rate for CABS)."""

    batch_size: int
    loss: float
    grad_sq: float            # ‖ḡ‖²
    trace_cov: float          # Tr S (unbiased)
    grad_sq_unbiased: float   # ‖ḡ‖² − Tr S / B
    norm_test: float
    inner_product_test: float
    orthogonality_test: float
    mean_gsnr: float
    eb_criterion: float
    cabs_batch_size: float
    noise_scale: float
    trace_h_cov: float = math.nan              # Tr(H S), with ``curvature``
    grad_h_grad_unbiased: float = math.nan     # ḡᵀHḡ − Tr(H S)/B
    noise_scale_curvature: float = math.nan    # B_noise

    def as_metrics(self, prefix: str = "batch") -> dict[str, float]:
        """``{prefix/name: value}``; the curvature-weighted entries only when computed."""
        skip = set() if math.isfinite(self.trace_h_cov) else {
            "trace_h_cov", "grad_h_grad_unbiased", "noise_scale_curvature"}
        return {f"{prefix}/{k}": float(v) for k, v in asdict(self).items() if k not in skip}


@checked_keywords()
def batch_statistics(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batch: Data,
    *,
    lr: float | None = None,
    epsilon: float = 0.0,
    method: str = "auto",
    curvature: str | None = None,
) -> BatchStatistics:
    """The statistics of the module docstring for one mini-batch ``(x, y)`` (or an iterable of
    batches taken as one sample of size B) at the model's current parameters, in its current
    train/eval mode. ``lr``: the step's learning rate (only the CABS batch size needs it);
    ``epsilon``: added to the per-coordinate variances (module docstring); ``method``: the
    per-sample gradient route of :func:`~sgdlab.measure.noise.gradient_covariance`;
    ``curvature``: ``"hessian"`` | ``"ggn"`` adds McCandlish et al.'s B_noise (module
    docstring; forms the (B, d) gradient matrix). A non-finite gradient or loss (a diverged
    model) raises ``FloatingPointError``."""
    epsilon = checked_epsilon(epsilon)
    check_mean_of_samples(loss_fn, batch, "batch_statistics")
    # True was 1, a string failed on the comparison
    lr = checked_float_argument("lr", lr, 0, ", or None", strict=True, optional=True)
    if curvature not in (None, "hessian", "ggn"):
        raise ValueError(f"Invalid curvature={curvature!r}: expected 'hessian', 'ggn' or None")
    cov = gradient_covariance(model, loss_fn, batch, method=method)
    b = cov.num_samples
    if b < 2:
        raise ValueError(f"batch statistics need a mini-batch of at least 2 samples, got {b}")
    mean = cov.mean.double()
    grad_sq = float(mean @ mean)
    trace = cov.trace() * b / (b - 1)                                  # Tr S
    along = float(cov.mean_projections().square().sum()) * b / (b - 1)  # ḡᵀ S ḡ
    var = cov.diagonal().double()                                      # diag Σ
    loss = mean_loss(model, loss_fn, batch)
    if not math.isfinite(loss):
        raise FloatingPointError(f"non-finite mini-batch loss {loss} (diverged model?)")
    curv = {}
    if curvature is not None:
        with _curvature_keyword("batch_statistics"):
            curv = _curvature_noise_scale(curvature, model, loss_fn, batch, cov)
    return BatchStatistics(
        **curv,
        batch_size=b, loss=loss, grad_sq=grad_sq, trace_cov=trace,
        grad_sq_unbiased=grad_sq - trace / b,
        norm_test=_root(_ratio(trace, b * grad_sq)),
        inner_product_test=_root(_ratio(along, b * grad_sq ** 2)),
        orthogonality_test=_root(_ratio(trace - _ratio(along, grad_sq), b * grad_sq)),
        mean_gsnr=_mean_ratio(mean.square(), var, epsilon),
        eb_criterion=1 - b * _mean_ratio(mean.square(), var * b / (b - 1), epsilon),
        cabs_batch_size=(lr * trace * (b - 1) / b / loss if lr is not None and loss > 0
                         else math.nan),
        noise_scale=_ratio(trace, grad_sq - trace / b),
    )


@dataclass(frozen=True)
class TakeuchiInformation:
    """Takeuchi's information criterion Tr(H⁻¹ C) in the two approximations Thomas, Pedregosa,
    van Merriënboer et al. (2020) and Cockpit use: ``diagonal`` = Σ_j C_jj / H_jj and ``trace``
    = Tr C / Tr H, with C = (1/N) Σ_n g_n g_nᵀ the uncentred second moment of the per-sample
    gradients and H the curvature named by ``curvature``."""

    diagonal: float
    trace: float
    curvature: str


@checked_keywords()
def takeuchi_information(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    *,
    curvature: str = "ggn",
    epsilon: float = 0.0,
    covariance: GradientCovariance | None = None,
) -> TakeuchiInformation:
    """:class:`TakeuchiInformation` over ``data``. ``curvature``: ``"ggn"`` (exact diagonal
    from backpropagated loss-Hessian factors: C passes of per-sample gradients) or
    ``"hessian"`` (exact diagonal from d Hessian-vector products: small models). Coordinates
    whose curvature is ≤ 0 (ReLU-dead weights have H_jj = 0) are left out of the diagonal form
    when ``epsilon=0``; ``epsilon > 0`` is added to every H_jj instead (Cockpit's reading,
    default 1e-7 there). ``covariance``: Σ of this model over the same ``data``, when already
    computed (or C itself, built with ``centred=False``; not scaled); its numbers of samples
    and parameters are checked."""
    from .curvature import hessian_diagonal

    if curvature not in ("ggn", "hessian"):
        raise ValueError(f"Invalid curvature={curvature!r}: expected 'ggn' or 'hessian'")
    epsilon = checked_epsilon(epsilon)
    check_mean_of_samples(loss_fn, data, "takeuchi_information")
    if covariance is not None:      # Σ or C itself (either form: C = Σ + ḡḡᵀ below)
        check_given_covariance("takeuchi_information", covariance, model, data)
    cov = covariance if covariance is not None else gradient_covariance(model, loss_fn, data)
    second = cov.diagonal().double()                                   # diag C
    if cov.centred:         # Σ's diagonal: C = Σ + ḡḡᵀ
        second = second + cov.mean.double().square()
    with _curvature_keyword("takeuchi_information"):
        h = hessian_diagonal(model, loss_fn, data, exact=True, operator=curvature).value.double()
    ratios = _kept_ratios(second, h, epsilon)
    return TakeuchiInformation(diagonal=float(ratios.sum()) if len(ratios) else math.nan,
                               trace=_ratio(float(second.sum()), float(h.sum()) + epsilon),
                               curvature=curvature)


@contextlib.contextmanager
def _curvature_keyword(who: str) -> Iterator[None]:
    """A GGN refusal of an output that is no tensor names ``who``'s own keyword for the
    Hessian, ``curvature='hessian'`` (the operators' is ``operator=``)."""
    try:
        yield
    except OutputNotTensor as e:
        raise OutputNotTensor(f"{who}(curvature='ggn')", e.kind, "curvature='hessian'") from None


def _curvature_noise_scale(kind: str, model: nn.Module, loss_fn, batch: Data,
                           cov: GradientCovariance) -> dict[str, float]:
    """Tr(H S), ḡᵀHḡ − Tr(H S)/B and their ratio (module docstring)."""
    from sgdlab.operators import curvature_operator

    op = curvature_operator(kind, model, loss_fn, batch)
    b = cov.num_samples
    f = cov.factor                                   # rows (g_n − ḡ)/√B
    # a fixed block, as the instruments use: the round-off must not depend on timings
    tuner = op.block_tuner("quadratic_forms", block_size=op.probe_block_size())
    forms = torch.cat([op.quadratic_forms(f[i:i + k].T.contiguous()).double()
                       for i, k in tuner.blocks(b)])
    trace_hs = float(forms.sum()) * b / (b - 1)
    ghg = float(op.quadratic_forms(cov.mean[:, None]).double()[0]) - trace_hs / b
    return {"trace_h_cov": trace_hs, "grad_h_grad_unbiased": ghg,
            "noise_scale_curvature": _ratio(trace_hs, ghg)}


def checked_epsilon(epsilon: object) -> float:
    """``epsilon`` as a float when it is a finite number >= 0 (numpy's too): a NaN ε made every
    ratio NaN, a string failed on the comparison, and True was 1."""
    return checked_float_argument("epsilon", epsilon, 0)


def _ratio(a: float, b: float) -> float:
    return a / b if b != 0 else math.nan


def _root(v: float) -> float:
    """√v, NaN for an undefined ratio; a tiny negative v (round-off of a zero) reads 0."""
    if math.isnan(v) or math.isinf(v):
        return math.nan
    return math.sqrt(max(v, 0.0))


def _kept_ratios(num: Tensor, den: Tensor, epsilon: float) -> Tensor:
    """num_j / (den_j + ε) for every j; with ε = 0 only where den_j > 0 (module docstring)."""
    if epsilon > 0:
        return num / (den + epsilon)
    keep = den > 0
    return num[keep] / den[keep]


def _mean_ratio(num: Tensor, den: Tensor, epsilon: float) -> float:
    ratios = _kept_ratios(num, den, epsilon)
    return float(ratios.mean()) if len(ratios) else math.nan
