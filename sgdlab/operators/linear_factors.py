"""Earlier home of the factored per-sample gradients (fully-connected layers only); the engine
now lives in :mod:`sgdlab.operators.factors` and also covers convolutions."""
from .factors import PerSampleFactors, per_sample_factors

LinearPerSampleFactors = PerSampleFactors
linear_per_sample_factors = per_sample_factors

__all__ = ["LinearPerSampleFactors", "linear_per_sample_factors"]
