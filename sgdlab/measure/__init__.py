"""Measurements: plain functions of (model, loss_fn, data) and estimators on operators.

Every one reports the derivatives of the loss itself: gradient hooks on the model (rescaling,
clipping; ``p.register_hook``, module backward hooks) are a training-time device and do not
run while it measures (:func:`sgdlab.operators.batches.loss_derivatives`).

The names below are imported from their modules when first used (PEP 562): ``import
sgdlab.measure.temperature`` (``sgdlab temperature``, the random-lr optimizer's conventions)
then imports neither torch nor the other measurements (docs/design/runner.md)."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

# name -> the module of this package that defines it
_FROM: dict[str, str] = {
    "DiagonalEstimate": "curvature", "Estimate": "curvature", "SpectralDensity": "curvature",
    "dense_hessian": "curvature", "frobenius_norm": "curvature", "ggn_diagonal": "curvature",
    "harmonic_mean_eigenvalue": "curvature", "hessian_bottom_eigenvalues": "curvature",
    "hessian_diagonal": "curvature", "hessian_eigenpairs": "curvature",
    "hessian_frobenius_norm": "curvature", "hessian_spectral_density": "curvature",
    "hessian_spectrum": "curvature", "hessian_top_eigenvalue": "curvature", "hessian_trace":
    "curvature", "hutchinson_trace": "curvature", "hutchpp_trace": "curvature", "lanczos":
    "curvature", "power_iteration": "curvature", "spectral_density": "curvature",
    "GradientCovariance": "noise", "diffusion_matrix": "noise", "gradient_covariance": "noise",
    "GradientVariance": "noise", "gradient_variance": "noise",
    "minibatch_noise_factor": "noise", "noise_magnitude": "noise",
    "fisher_diagonal": "fisher",
    "BatchStatistics": "batch_statistics", "TakeuchiInformation": "batch_statistics",
    "batch_statistics": "batch_statistics", "takeuchi_information": "batch_statistics",
    "Alignment": "alignment", "eigenvector_cosines": "alignment", "normalised_eigenvalues":
    "alignment", "projection_residual": "alignment", "sigma_hessian_alignment": "alignment",
    "epsilon_sharpness": "sharpness", "expected_sharpness": "sharpness", "local_entropy":
    "sharpness", "mean_loss": "sharpness",
    "EntropyGradientAngle": "entropy_gradient", "local_entropy_gradient": "entropy_gradient",
    "local_entropy_gradient_angle": "entropy_gradient",
    # not the function `temperature`: re-exporting it would shadow the module
    # sgdlab.measure.temperature
    "musso_temperature": "temperature", "solve_batch_size": "temperature", "solve_lr":
    "temperature", "temperatures": "temperature",
    "StepLength": "step_length", "normalized_step_length": "step_length",
    "StepInterpolation": "walk", "analyze_segment": "walk", "segment_alphas": "walk",
    "segment_losses": "walk", "step_interpolation": "walk", "summarize_epochs": "walk",
    "distance_from_init": "dynamics", "full_batch_grad_norm": "dynamics", "gradient_cosine":
    "dynamics", "hessian_largest_eigenvalue": "dynamics", "hessian_spectral_norm": "dynamics",
    "parameter_norm": "dynamics", "update_norm": "dynamics",
    "recompute_bn_statistics": "batch_norm",
    "min_abs_coordinates": "perturbation", "overall_minimum": "perturbation",
    "perturbation_alignment": "perturbation", "zero_fraction": "perturbation",
    "InterpolationCurve": "interpolation", "interpolate_models": "interpolation", "BasinWidth":
    "interpolation", "basin_width": "interpolation",
    "align_to": "permutation", "average_weights": "permutation", "ensemble_accuracy":
    "permutation", "overlap_matrix": "permutation", "weight_overlap": "permutation",
    "LossSurface": "surface", "TrajectoryPCA": "surface", "hessian_directions": "surface",
    "loss_surface": "surface", "random_direction": "surface", "trajectory_pca": "surface",
    "brownian_reference": "trajectory", "discard_burnin": "trajectory", "fisher_g_test":
    "trajectory", "increment_autocorrelation": "trajectory", "increment_spectrum":
    "trajectory", "iterate_autocorrelation": "trajectory", "low_frequency_test": "trajectory",
    "periodicity_test": "trajectory",
}

__all__ = sorted(_FROM)


class _Measure(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # the import system sets an imported submodule as an attribute of its package: for
        # batch_statistics, also a function's name, the function stays (as when the package
        # imported it eagerly)
        if isinstance(value, types.ModuleType) and name in _FROM \
                and value.__name__ == f"{__name__}.{_FROM[name]}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Measure


def __getattr__(name: str) -> Any:
    module = _FROM.get(name)
    if module is None:
        # a submodule, an attribute of the package once imported (as the eager package had
        # them all): sgdlab.measure.walk after `import sgdlab.measure`
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value      # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
