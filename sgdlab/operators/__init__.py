"""Curvature operators and the per-sample-gradient engine shared by every estimator."""
from .batches import Batch, Data, concat_batches, iterate_batches, num_samples
from .fisher import EmpiricalFisherOperator
from .ggn import GGNOperator
from .hessian import HessianOperator
from .factory import curvature_operator
from .linear import DenseOperator, LinearOperator, ModelOperator, as_operator
from .factors import PerSampleFactors, per_sample_factors
from .params import (
    flatten,
    grads_vector,
    num_params,
    params_vector,
    set_params_vector,
    trainable_named_params,
    unflatten_like,
)
from .per_sample import full_gradient, per_sample_gradients

__all__ = [
    "Batch", "Data", "DenseOperator", "EmpiricalFisherOperator", "GGNOperator", "HessianOperator",
    "LinearOperator", "ModelOperator", "PerSampleFactors",
    "as_operator", "curvature_operator", "per_sample_factors",
    "concat_batches", "flatten", "full_gradient", "grads_vector",
    "iterate_batches",
    "num_params", "num_samples", "params_vector", "per_sample_gradients", "set_params_vector",
    "trainable_named_params", "unflatten_like",
]
