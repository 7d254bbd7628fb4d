"""Measurements: plain functions of (model, loss_fn, data) and estimators on operators.

Every one reports the derivatives of the loss itself: gradient hooks on the model (rescaling,
clipping; ``p.register_hook``, module backward hooks) are a training-time device and do not
run while it measures (:func:`sgdlab.operators.batches.loss_derivatives`)."""
from .curvature import (
    DiagonalEstimate,
    Estimate,
    SpectralDensity,
    dense_hessian,
    frobenius_norm,
    ggn_diagonal,
    harmonic_mean_eigenvalue,
    hessian_bottom_eigenvalues,
    hessian_diagonal,
    hessian_eigenpairs,
    hessian_frobenius_norm,
    hessian_spectral_density,
    hessian_spectrum,
    hessian_top_eigenvalue,
    hessian_trace,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    power_iteration,
    spectral_density,
)
from .noise import (
    GradientCovariance,
    diffusion_matrix,
    gradient_covariance,
    minibatch_noise_factor,
    noise_magnitude,
)
from .fisher import fisher_diagonal
from .batch_statistics import (
    BatchStatistics,
    TakeuchiInformation,
    batch_statistics,
    takeuchi_information,
)
from .alignment import (
    Alignment,
    eigenvector_cosines,
    normalised_eigenvalues,
    projection_residual,
    sigma_hessian_alignment,
)
from .sharpness import epsilon_sharpness, expected_sharpness, local_entropy, mean_loss
from .entropy_gradient import (EntropyGradientAngle, local_entropy_gradient,
                               local_entropy_gradient_angle)
# not the function `temperature`: re-exporting it would shadow the module sgdlab.measure.temperature
from .temperature import musso_temperature, solve_batch_size, solve_lr, temperatures
from .step_length import StepLength, normalized_step_length
from .walk import (
    StepInterpolation,
    analyze_segment,
    segment_alphas,
    segment_losses,
    step_interpolation,
    summarize_epochs,
)
from .dynamics import (
    distance_from_init,
    full_batch_grad_norm,
    gradient_cosine,
    hessian_spectral_norm,
    parameter_norm,
    update_norm,
)
from .batch_norm import recompute_bn_statistics
from .perturbation import (min_abs_coordinates, overall_minimum, perturbation_alignment,
                           zero_fraction)
from .interpolation import InterpolationCurve, interpolate_models
from .interpolation import BasinWidth, basin_width
from .permutation import (align_to, average_weights, ensemble_accuracy, overlap_matrix,
                          weight_overlap)
from .surface import (
    LossSurface,
    TrajectoryPCA,
    hessian_directions,
    loss_surface,
    random_direction,
    trajectory_pca,
)
from .trajectory import (
    brownian_reference,
    discard_burnin,
    fisher_g_test,
    increment_autocorrelation,
    increment_spectrum,
    iterate_autocorrelation,
    low_frequency_test,
    periodicity_test,
)

__all__ = [
    "align_to", "average_weights", "ensemble_accuracy", "overlap_matrix", "weight_overlap",
    "Alignment", "BasinWidth", "BatchStatistics", "TakeuchiInformation", "basin_width",
    "batch_statistics", "takeuchi_information", "StepLength", "normalized_step_length",
    "DiagonalEstimate", "Estimate",
    "GradientCovariance", "InterpolationCurve", "LossSurface", "SpectralDensity",
    "StepInterpolation", "analyze_segment", "brownian_reference", "dense_hessian",
    "diffusion_matrix", "discard_burnin", "distance_from_init", "eigenvector_cosines",
    "EntropyGradientAngle", "local_entropy_gradient", "local_entropy_gradient_angle",
    "epsilon_sharpness", "expected_sharpness", "fisher_diagonal", "fisher_g_test",
    "frobenius_norm",
    "full_batch_grad_norm", "ggn_diagonal", "gradient_cosine", "gradient_covariance",
    "harmonic_mean_eigenvalue", "hessian_bottom_eigenvalues", "hessian_diagonal",
    "hessian_directions", "hessian_eigenpairs", "hessian_frobenius_norm",
    "hessian_spectral_density", "hessian_spectral_norm", "hessian_spectrum",
    "hessian_top_eigenvalue", "hessian_trace", "hutchinson_trace", "hutchpp_trace",
    "increment_autocorrelation", "increment_spectrum", "interpolate_models",
    "iterate_autocorrelation", "lanczos", "local_entropy", "loss_surface",
    "low_frequency_test", "mean_loss", "min_abs_coordinates", "minibatch_noise_factor",
    "musso_temperature", "noise_magnitude", "normalised_eigenvalues", "overall_minimum",
    "parameter_norm", "periodicity_test", "perturbation_alignment", "power_iteration",
    "projection_residual", "random_direction", "recompute_bn_statistics", "segment_alphas",
    "segment_losses", "sigma_hessian_alignment", "solve_batch_size", "solve_lr",
    "spectral_density", "step_interpolation", "summarize_epochs", "temperatures",
    "trajectory_pca", "TrajectoryPCA", "update_norm", "zero_fraction",
]
