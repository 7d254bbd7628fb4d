"""SDE lab: Itô SDEs with state-dependent diffusion, integrators, batched simulation, and
the discrete SGD that the SGD-SDE approximates (weak order 1)."""
from .base import SDE, Integrator, psd_sqrt
from .euler_maruyama import EulerMaruyama
from .leimkuhler_matthews import LeimkuhlerMatthews
from .sgd import sgd_chains, sgd_sde
from .simulate import Path, brownian_increments, coarsen, path_mean_se, simulate

__all__ = ["SDE", "Integrator", "EulerMaruyama", "LeimkuhlerMatthews", "Path", "simulate",
           "brownian_increments", "coarsen", "path_mean_se", "sgd_chains", "sgd_sde", "psd_sqrt"]
