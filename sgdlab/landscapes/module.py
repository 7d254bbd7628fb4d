"""A landscape as an ordinary training problem: (model, loss_fn, data) for the shared engine.

``as_problem(landscape, theta0)`` returns

- ``model``: a :class:`LandscapeModel` whose single parameter is θ (shape (dim,)) and whose
  forward maps a batch of *sample indices* to their per-sample losses ℓ_i(θ), shape (B,);
- ``loss_fn``: :func:`mean_of_outputs`, the mean of those losses (targets ignored), so the
  mean-reduced contract L(θ) = (1/N) Σ ℓ_i holds;
- ``data``: the batch ``(arange(N), zeros(N))``.

With it, operators (``HessianOperator``, ``per_sample_gradients``), measurements
(``sgdlab.measure``), optimizers and the training loop run on analytic landscapes unchanged,
and their answers can be checked against the landscape's closed forms (see the tests).
Sample-free landscapes have one "sample" (index 0) whose loss is L itself.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from sgdlab.data.base import Dataset
from sgdlab.errors import UserError

from .base import Landscape


class LandscapeModel(nn.Module):
    """θ as an ``nn.Parameter``; ``forward(idx) -> ℓ_idx(θ)`` of shape (B,). θ takes θ0's
    dtype promoted with that of the landscape's tensors (float64 for the float64 landscapes; a
    θ0 wider than a float32 landscape is a ``UserError`` unless the landscape evaluates wider
    chains, as the p-spin glass does), and the landscape's device (θ0's for a landscape that
    holds no tensors).

    ``model.to(device)`` / ``.double()`` move the landscape with θ (in place, as a submodule
    moves with its parent), so the engine's usual ``model.to(device)`` keeps them together.
    """

    def __init__(self, landscape: Landscape, theta0: Tensor) -> None:
        super().__init__()
        self.landscape = landscape
        theta = torch.as_tensor(theta0).detach()
        if theta.numel() != landscape.dim:     # a batch of chains failed in reshape
            raise UserError(f"theta0 must be one point of the landscape, shape "
                            f"({landscape.dim},), got {tuple(theta.shape)} (a batch of "
                            "points is for sgd_chains and simulate)")
        theta = theta.reshape(landscape.dim)
        if not theta.is_floating_point():     # an integer θ0 cannot carry gradients
            theta = theta.to(torch.get_default_dtype())
        if not bool(torch.isfinite(theta).all()):
            raise UserError(f"theta0 has non-finite entries: {theta.tolist()}")
        # a θ0 wider than a landscape that refuses wider chains: its error now, not at the
        # first forward inside the engine
        landscape.check_dtype("theta0", theta)
        # θ in the dtype the landscape holds its tensors in: a float32 θ0 such as torch.zeros(d)
        # on a float64 landscape made a float32 parameter, so its gradients and steps were
        # rounded to float32 while every closed form stays float64 (p-spin's matmuls refused it)
        dtype = theta.dtype
        for v in landscape._tensors():
            if v.is_floating_point():
                dtype = torch.promote_types(dtype, v.dtype)
        device = landscape.device or theta.device
        self.theta = nn.Parameter(theta.to(device=device, dtype=dtype).clone())

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.landscape._apply(fn)
        return self

    def forward(self, idx: Tensor) -> Tensor:
        if self.landscape.num_samples is None:
            return self.landscape.loss(self.theta).expand(idx.shape[0])
        per = self.landscape.per_sample_loss(self.theta)            # (N,)
        return torch.gather(per, 0, idx.reshape(-1).long().to(per.device))


def mean_of_outputs(outputs: Tensor, targets: Tensor) -> Tensor:
    """The mean of the per-sample losses the model returns (``targets`` are ignored)."""
    return outputs.mean()


def as_problem(landscape: Landscape, theta0: Tensor
               ) -> tuple[LandscapeModel, object, tuple[Tensor, Tensor]]:
    """(model, loss_fn, data) for the shared engine; see the module docstring. The data
    are on the landscape's device (the model's)."""
    n = landscape.num_samples or 1
    model = LandscapeModel(landscape, theta0)
    dev = model.theta.device
    data = (torch.arange(n, device=dev), torch.zeros(n, dtype=model.theta.dtype, device=dev))
    return model, mean_of_outputs, data


def as_dataset(landscape: Landscape, name: str = "landscape") -> Dataset:
    """The sample indices as a ``Dataset`` (train = test = all samples) for ``train()``."""
    n = landscape.num_samples or 1
    idx = torch.arange(n)
    zeros = torch.zeros(n)
    return Dataset(idx, zeros, idx.clone(), zeros.clone(),
                   meta={"name": name, "task": "regression", "input_shape": (),
                         "num_outputs": 1, "seed": None})


__all__ = ["LandscapeModel", "mean_of_outputs", "as_problem", "as_dataset"]
