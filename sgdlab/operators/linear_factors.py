"""Per-sample gradients of fully-connected networks, kept in factored form.

For a layer z = W a + b applied to a batch of N samples (a: (N, in), z: (N, out)), the gradient
of sample i's loss ℓ_i is outer(δ_i, a_i) for W and δ_i for b, with δ_i = ∂ℓ_i/∂z_i. With a
mean-reduced batch loss L = (1/N) Σ ℓ_i one backward pass gives ∂L/∂z_i = δ_i / N, so the N
per-sample gradients come from one forward and one backward pass with hooks (Goodfellow 2015,
"Efficient per-example gradient computations"; what BackPACK's BatchGrad does).

Kept factored, the N x N Gram matrix of per-sample gradients needs no (N, d) matrix at all:
⟨g_i, g_j⟩ = Σ_layers (δ_i·δ_j)(a_i·a_j + [bias]) — O(N² (in + out)) per layer instead of
O(N² d). So do products Gᵀ U (eigenvectors of Σ, noise samples) and Σ_i g_i² (the diagonal).

Applies when every trainable parameter belongs to an ``nn.Linear`` whose input is (N, in)
(no weight sharing, no sequence dimension) and samples do not interact (no batch norm in train
mode); :func:`linear_per_sample_factors` returns None otherwise and callers fall back to
``torch.func`` (:func:`~sgdlab.operators.per_sample.per_sample_gradients`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .batches import Data, iterate_batches
from .params import trainable_named_params


@dataclass
class _Layer:
    a: Tensor        # (N, in) inputs, with a ones column appended when the layer has a bias
    delta: Tensor    # (N, out) per-sample ∂ℓ_i/∂z_i
    has_weight: bool
    has_bias: bool
    in_features: int


class LinearPerSampleFactors:
    """The (N, d) per-sample gradient matrix G of a fully-connected network, factored by layer
    (rows g_i in the flat-parameter order of :mod:`sgdlab.operators.params`)."""

    def __init__(self, layers: list[_Layer], num_samples: int, dim: int):
        self.layers, self.num_samples, self.dim = layers, num_samples, dim

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].delta.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].delta.device

    def _w(self, l: _Layer) -> Tensor:
        return l.a[:, : l.in_features]

    def gram(self) -> Tensor:
        """G Gᵀ, (N, N)."""
        k = torch.zeros(self.num_samples, self.num_samples, dtype=self.dtype, device=self.device)
        for l in self.layers:
            dd = l.delta @ l.delta.T
            if l.has_weight and l.has_bias:
                k += dd * (l.a @ l.a.T)          # a·a + 1 through the ones column
            elif l.has_weight:
                w = self._w(l)
                k += dd * (w @ w.T)
            else:
                k += dd
        return k

    def _blocks(self, l: _Layer, u: Tensor) -> list[Tensor]:
        """Gᵀ U restricted to the layer's parameters, (n_params, k) blocks in flat order."""
        out = []
        if l.has_weight:
            # Σ_i u_ik δ_i a_iᵀ for each column k -> (out, in, k)
            w = torch.einsum("nk,no,ni->oik", u, l.delta, self._w(l))
            out.append(w.reshape(-1, u.shape[1]))
        if l.has_bias:
            out.append(l.delta.T @ u)
        return out

    def rmatmul(self, u: Tensor) -> Tensor:
        """Gᵀ U for U of shape (N, k) or (N,); returns (d, k) or (d,)."""
        vec = u.dim() == 1
        u2 = u.reshape(self.num_samples, -1).to(self.dtype)
        res = torch.cat([b for l in self.layers for b in self._blocks(l, u2)], 0)
        return res[:, 0] if vec else res

    def mean(self) -> Tensor:
        """ḡ = (1/N) Gᵀ 1."""
        ones = torch.full((self.num_samples,), 1.0 / self.num_samples, dtype=self.dtype,
                          device=self.device)
        return self.rmatmul(ones)

    def sq_sum(self) -> Tensor:
        """Σ_i g_i ⊙ g_i, (d,)."""
        parts = []
        for l in self.layers:
            d2 = l.delta ** 2
            if l.has_weight:
                parts.append((d2.T @ self._w(l) ** 2).reshape(-1))
            if l.has_bias:
                parts.append(d2.sum(0))
        return torch.cat(parts)

    def materialize(self) -> Tensor:
        """G as a dense (N, d) matrix."""
        cols = []
        for l in self.layers:
            if l.has_weight:
                cols.append(torch.einsum("no,ni->noi", l.delta, self._w(l))
                            .reshape(self.num_samples, -1))
            if l.has_bias:
                cols.append(l.delta)
        return torch.cat(cols, 1)


def _supported(model: nn.Module) -> list[nn.Linear] | None:
    params = trainable_named_params(model)
    linears: list[nn.Linear] = []
    owned: list[Tensor] = []
    for m in model.modules():
        direct = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if not direct:
            continue
        if not isinstance(m, nn.Linear):
            return None
        linears.append(m)
        owned += direct
    if len(owned) != len(params) or len({id(p) for p in owned}) != len(owned):
        return None
    # batch norm in train mode mixes samples: per-sample gradients are not separable
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            return None
    return linears


def linear_per_sample_factors(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    *,
    chunk_size: int | None = 1024,
) -> LinearPerSampleFactors | None:
    """Factored per-sample gradients of ``model`` over ``data`` (all batches), or None when the
    model is not a plain fully-connected network (see the module docstring).

    ``loss_fn`` must be mean-reduced over samples (the sgdlab convention): per-sample
    ∂ℓ_i/∂z_i is recovered as (batch size) × ∂L/∂z_i.
    """
    linears = _supported(model)
    if not linears:
        return None
    order = {id(p): i for i, p in enumerate(trainable_named_params(model).values())}
    # flat-vector order must be layer by layer, weight before bias (registration order)
    flat = []
    for m in linears:
        for p in (m.weight, m.bias):
            if p is not None and p.requires_grad:
                flat.append(order[id(p)])
    if flat != sorted(flat):
        return None
    device = next(model.parameters()).device
    acts: dict[int, list[Tensor]] = {i: [] for i in range(len(linears))}
    deltas: dict[int, list[Tensor]] = {i: [] for i in range(len(linears))}
    calls = {i: 0 for i in range(len(linears))}
    ok = True
    handles = []

    def fwd_hook(i):
        def hook(mod, inputs, output):
            nonlocal ok
            calls[i] += 1
            x = inputs[0]
            if x.dim() != 2 or calls[i] > 1:
                ok = False
                return
            acts[i].append(x.detach())
            output.register_hook(lambda g: deltas[i].append(g.detach()))
        return hook

    for i, m in enumerate(linears):
        handles.append(m.register_forward_hook(fwd_hook(i)))
    n = 0
    try:
        batches = []
        for x, y in iterate_batches(data, device):
            step = len(x) if not chunk_size else chunk_size
            batches += [(x[j : j + step], y[j : j + step]) for j in range(0, len(x), step)]
        for x, y in batches:
            for i in calls:
                calls[i] = 0
            with torch.enable_grad():
                out = model(x)
                loss = loss_fn(out, y)
                if not ok:
                    return None
                params = [p for m in linears for p in m.parameters() if p.requires_grad]
                torch.autograd.grad(loss, params)
            for i in deltas:
                if len(deltas[i]) != len(acts[i]):
                    return None
                deltas[i][-1] = deltas[i][-1] * len(x)     # mean loss: undo the 1/batch
            n += len(x)
    finally:
        for h in handles:
            h.remove()
    if not ok:
        return None
    layers = []
    dim = 0
    for i, m in enumerate(linears):
        a = torch.cat(acts[i])
        has_w = m.weight.requires_grad
        has_b = m.bias is not None and m.bias.requires_grad
        if has_b:
            a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], 1)
        layers.append(_Layer(a, torch.cat(deltas[i]), has_w, has_b, m.in_features))
        dim += (m.weight.numel() if has_w else 0) + (m.bias.numel() if has_b else 0)
    return LinearPerSampleFactors(layers, n, dim)
