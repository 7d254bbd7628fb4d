"""The papers' architectures, built by name for a dataset's input shape.

``build_model(name, input_shape, num_outputs, **options)``; ``sorted(MODELS)`` lists the names;
``describe(name)`` gives the paper, the parameter count it states and our reading
(:class:`ModelInfo`). Weights are initialised from torch's global RNG (seed it first).
"""
from .registry import (MODELS, ModelInfo, build_model, check_model_inputs, count_parameters,
                       describe, register_model)
from . import (chaudhari, jastrzebski, mlp, musso, recurrent, resnet, vgg,  # noqa: F401
               wideresnet, zhu)
from .mlp import MLP

__all__ = ["MLP", "MODELS", "ModelInfo", "build_model", "check_model_inputs",
           "count_parameters", "describe", "register_model"]
