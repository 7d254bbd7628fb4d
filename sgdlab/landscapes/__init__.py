"""Analytic landscapes where the papers' theory can be checked exactly, batched over chains.

Every landscape is a :class:`Landscape` (``loss``, ``grad``, ``hessian``, and where samples
exist ``per_sample_loss`` / ``per_sample_grad`` / ``gradient_covariance``), evaluated on
``theta`` of shape ``(..., dim)`` with independent chains in the leading dimensions.

- :class:`TwoBasin` and :func:`escape_experiment` — Zhu et al.'s sharp/flat toy (App. B).
- :class:`Quadratic` — SGD as an OU process (Jastrzebski et al. eq. 6–7).
- :mod:`.linear_potential` — Φ of the SDE linearised at a critical point (thesis Lemma 6.44).
- :class:`DoubleWell` — non-equilibrium double well (thesis Example 6.43).
- :class:`PSpinGlass` — spherical 3-spin glass in a field (thesis §2.4.1).
- :mod:`.pspin_complexity` — its critical points by energy and index (thesis Lemma 2.2, eq. 2.15).
- :mod:`.pde` — viscous/non-viscous HJ and heat smoothing in 1-D (thesis Fig. 4.1).
- :mod:`.fokker_planck` — 1-D Fokker–Planck densities, monotone upwind (Fig. 4.1's densities).
- :mod:`.perceptron` — binary perceptron teacher–student (thesis §3.1.1).
- :mod:`.sde` — Euler–Maruyama, batched simulation, discrete SGD and its SDE.
- :func:`as_problem` — any landscape as (model, loss_fn, data) for the shared engine.
"""
from .base import AnalyticLoss, Landscape
from .double_well import DoubleWell, noiseless_orbits
from .escape import EscapeConfig, EscapeResult, escape_experiment
from .module import LandscapeModel, as_dataset, as_problem
from .pspin import PSpinGlass, cluster_minima, mean_angular_distance, mean_cosine_distance
from .quadratic import Quadratic
from .two_basin import TwoBasin

__all__ = ["Landscape", "AnalyticLoss", "TwoBasin", "Quadratic", "DoubleWell", "PSpinGlass",
           "EscapeConfig", "EscapeResult", "escape_experiment", "cluster_minima",
           "mean_cosine_distance", "mean_angular_distance", "noiseless_orbits", "LandscapeModel",
           "as_problem", "as_dataset"]
