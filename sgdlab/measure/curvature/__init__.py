"""Curvature estimators on any symmetric ``Tensor | LinearOperator`` (Hessian, GGN, Fisher, ...).

Every estimator takes ``A`` as a dense square tensor or a
:class:`~sgdlab.operators.LinearOperator` (through :func:`~sgdlab.operators.as_operator`), so the
same code is checked on a dense float64 matrix in the tests and runs on a d = 10⁶ Hessian. One
short module per method:

- :mod:`.lanczos` — :func:`lanczos` (k extreme eigenpairs, full re-orthogonalisation),
  :func:`lanczos_decomposition`, :func:`power_iteration`;
- :mod:`.hutchinson` — :func:`hutchinson_trace` (Rademacher probes, standard error);
- :mod:`.hutchpp` — :func:`hutchpp_trace` (Meyer et al. 2021);
- :mod:`.frobenius` — :func:`frobenius_norm` from E‖Av‖² (Jastrzebski et al.);
- :mod:`.diagonal` — :func:`diagonal` (exact from unit columns, or the mean of v ⊙ Av over
  Rademacher probes, Bekas et al. 2007), :func:`ggn_diagonal` (exact, from backpropagated
  loss-Hessian factors);
- :mod:`.slq` — :func:`spectral_density` (stochastic Lanczos quadrature);
- :mod:`.dense` — :func:`dense_hessian`, :func:`hessian_spectrum`,
  :func:`harmonic_mean_eigenvalue` (small models, Chaudhari's thesis §4.5.3);
- :mod:`.model` — the ``hessian_*`` conveniences on a model's mean loss.

Blocks of probes go through one batched product when that is measured cheaper per column
(:mod:`sgdlab.operators.blocking`); ``dtype=torch.float64`` raises the working precision.
"""
from ._common import Estimate, Operand, mc_estimate, probe_block, random_vector
from .dense import dense_hessian, harmonic_mean_eigenvalue, hessian_spectrum
from .diagonal import DiagonalEstimate, diagonal, ggn_diagonal
from .frobenius import frobenius_norm
from .hutchinson import hutchinson_trace
from .hutchpp import hutchpp_trace
from .lanczos import LanczosResult, lanczos, lanczos_decomposition, power_iteration
from .model import (
    hessian_bottom_eigenvalues,
    hessian_diagonal,
    hessian_eigenpairs,
    hessian_frobenius_norm,
    hessian_spectral_density,
    hessian_top_eigenvalue,
    hessian_trace,
)
from .slq import SpectralDensity, spectral_density

__all__ = [
    "DiagonalEstimate", "Estimate", "LanczosResult", "Operand", "SpectralDensity",
    "dense_hessian", "diagonal", "frobenius_norm", "ggn_diagonal", "harmonic_mean_eigenvalue",
    "hessian_bottom_eigenvalues", "hessian_diagonal",
    "hessian_eigenpairs", "hessian_frobenius_norm", "hessian_spectral_density",
    "hessian_spectrum", "hessian_top_eigenvalue", "hessian_trace", "hutchinson_trace",
    "hutchpp_trace", "lanczos", "lanczos_decomposition", "mc_estimate", "power_iteration",
    "probe_block", "random_vector", "spectral_density",
]
