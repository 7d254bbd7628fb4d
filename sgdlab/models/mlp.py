"""Fully connected networks: the generic ``mlp`` and the papers' MLPs built on it."""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from ..errors import UserError
from .registry import activation, check_positive, check_prob, register_model


class MLP(nn.Module):
    """Flatten, then ``Linear -> [BatchNorm1d] -> act -> [Dropout]`` per hidden layer, then a
    linear output layer. Any input shape is flattened (``in_features = prod(input_shape)``).

    ``input_dropout`` applies dropout to the flattened input (Chaudhari's mnistfc does).
    """

    def __init__(self, input_shape: Sequence[int], num_outputs: int, widths: Sequence[int],
                 *, act: str = "relu", batchnorm: bool = False, dropout: float = 0.0,
                 input_dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        widths = [check_positive(f"widths[{i}]", w) for i, w in enumerate(widths)]
        check_prob("dropout", dropout)
        check_prob("input_dropout", input_dropout)
        self.in_features = math.prod(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout > 0:
            layers.append(nn.Dropout(input_dropout))
        prev = self.in_features
        for w in widths:
            layers.append(nn.Linear(prev, w, bias=bias))
            if batchnorm:
                layers.append(nn.BatchNorm1d(w))
            layers.append(activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = w
        layers.append(nn.Linear(prev, num_outputs, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register_model("mlp", paper="generic", description="fully connected network: widths, "
                "activation, optional BatchNorm / dropout", reference_input=(1, 8, 8))
def mlp(input_shape, num_outputs, *, widths: Sequence[int] = (100,), activation: str = "relu",
        batchnorm: bool = False, dropout: float = 0.0, input_dropout: float = 0.0,
        bias: bool = True) -> nn.Module:
    if isinstance(widths, (int, str)) or not isinstance(widths, Sequence):
        raise UserError(f"option 'widths' must be a list of hidden widths, got {widths!r}")
    return MLP(input_shape, num_outputs, list(widths), act=activation, batchnorm=batchnorm,
               dropout=dropout, input_dropout=input_dropout, bias=bias)
