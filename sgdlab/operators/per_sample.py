"""The per-sample-gradient engine (``torch.func``: vmap over grad), chunked to bound memory.

Every noise quantity (gradient covariance, diffusion matrix D(x), structured-noise injection)
is built from the (N, d) matrix G of per-sample gradients g_i = ∇ℓ(x_i; θ) returned here.
Convention: ℓ is ``loss_fn`` applied to a batch of one sample, so with a mean-reduced loss the
full-batch gradient is ``G.mean(0)``. The model is evaluated in its current train/eval mode;
batch-norm layers in train mode see a batch of one, so call this in eval mode for such models.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .batches import Data, concat_batches
from .params import flatten, trainable_named_params


def per_sample_gradients(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    *,
    chunk_size: int | None = 256,
) -> Tensor:
    """Return G, shape (N, d): row i is the gradient of the loss on sample i alone.

    Args:
        model: any module; trainable parameters define the d coordinates.
        loss_fn: ``loss_fn(outputs, targets)``, mean-reduced.
        data: a batch ``(x, y)`` or an iterable of batches (concatenated).
        chunk_size: samples per vmap call (None: all at once).
    """
    x, y = concat_batches(data, device=next(model.parameters()).device)
    params = {k: v.detach() for k, v in trainable_named_params(model).items()}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def sample_loss(p, xi, yi):
        out = functional_call(model, (p, frozen, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0), randomness="different")
    step = len(x) if not chunk_size else chunk_size
    rows = []
    for i in range(0, len(x), step):
        g = per_sample(params, x[i : i + step], y[i : i + step])
        rows.append(flatten_batched(g, params))
    return torch.cat(rows)


def flatten_batched(grads: dict[str, Tensor], like: dict[str, Tensor]) -> Tensor:
    """Flatten a dict of batched (B, *shape) tensors into (B, d) in parameter order."""
    return torch.cat([grads[k].reshape(grads[k].shape[0], -1) for k in like], dim=1)


def full_gradient(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Data
) -> Tensor:
    """Flat gradient of the mean loss over all samples of ``data`` (batches weighted by size)."""
    from .batches import iterate_batches

    params = list(trainable_named_params(model).values())
    device = params[0].device
    total, n = None, 0
    for x, y in iterate_batches(data, device):
        g = torch.autograd.grad(loss_fn(model(x), y), params)
        g = flatten(g) * len(x)
        total = g if total is None else total + g
        n += len(x)
    return total / n
