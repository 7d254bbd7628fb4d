"""The diagonal of the empirical Fisher information, diag I = E(g²) − (E g)² (Chaudhari's thesis
§3.3.1 (iv), Fig. 3.4c), in two readings:

- ``"per-sample"``: the exact variance of the per-sample gradients g_i over ``data`` at the
  model's current weights, (1/N) Σ_i g_i² − ḡ² per coordinate (the diagonal of the gradient
  covariance Σ of :mod:`sgdlab.measure.noise`, divided by N, not N − 1). A variance: never
  negative beyond round-off.
- ``"adam-moments"``: v̂ − m̂² from the state of a ``torch.optim.Adam`` / ``AdamW`` that trained
  the model, "the element-wise first and second moments of the gradients that Adam maintains"
  (the thesis). m and v are exponential averages of the mini-batch gradients with different
  decays (β₁ = 0.9 and β₂ = 0.999 by default), so v̂ − m̂² is no variance and can be negative:
  a recent run of large gradients of one sign raises m̂² (ten steps' memory) faster than v̂
  (a thousand). With ``bias_correction`` (default) m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ), the
  estimates Adam's step uses; without it the raw state v − m², which is negative for every
  coordinate with a steady gradient while t ≪ 1 / (1 − β₂) (after one step: v − m² =
  (0.001 − 0.01) g²). The moments are those of the gradients Adam was given: with
  ``weight_decay`` in ``Adam`` (not ``AdamW``) they include the decay term, and they come from
  the model in training mode (dropout, batch statistics) on the mini-batches of the last
  ~1 / (1 − β) steps, not from the final weights.

Both return a flat (d,) float64 tensor in the order of the model's trainable parameters (the
order of :func:`sgdlab.operators.params_vector`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sgdlab.errors import ConfigError, check_flag, checked_keywords
from sgdlab.operators.batches import Data
from sgdlab.operators.params import trainable_named_params

FISHER_READINGS = ("per-sample", "adam-moments")
# float64 bytes of one band of columns of a chunk's per-sample gradients
_BAND_BYTES = 32 * 2**20


@checked_keywords()
def fisher_diagonal(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                    data: Data | None = None, *, reading: str = "per-sample",
                    optimizer: torch.optim.Optimizer | None = None,
                    bias_correction: bool = True, chunk_size: int | None = 256) -> Tensor:
    """diag I = E(g²) − (E g)², shape (d,), float64, by ``reading`` (see the module).

    ``"per-sample"`` needs ``loss_fn`` and ``data`` (the model in its current train/eval mode:
    batch norm must be in eval mode); ``"adam-moments"`` needs ``optimizer``, an Adam that has
    taken a step on every trainable parameter of ``model``. ``bias_correction`` belongs to
    ``"adam-moments"`` only; ``chunk_size`` to ``"per-sample"`` (samples per vmap call).
    """
    if reading == "per-sample":
        if loss_fn is None or data is None:
            raise ValueError("fisher_diagonal(reading='per-sample') needs loss_fn and data: the "
                             "variance is over the per-sample gradients of data")
        return per_sample_variance(model, loss_fn, data, chunk_size=chunk_size)
    if reading == "adam-moments":
        if optimizer is None:
            raise ValueError("fisher_diagonal(reading='adam-moments') needs the Adam optimizer "
                             "that trained the model (optimizer=)")
        return adam_moments_variance(model, optimizer, bias_correction=bias_correction)
    raise ValueError(f"fisher_diagonal: reading must be one of {', '.join(FISHER_READINGS)}, "
                     f"got {reading!r}")


def per_sample_variance(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                        data: Data, *, chunk_size: int | None = 256) -> Tensor:
    """(1/N) Σ_i (g_i − ḡ)² per coordinate, flat, float64: the per-sample gradients of
    :func:`sgdlab.operators.per_sample_gradients` taken ``chunk_size`` samples at a time (one
    (chunk, d) block in memory, not the (N, d) matrix) and pooled exactly (each block's mean
    and sum of squared deviations in float64, combined as Chan et al.'s parallel variance), so
    no entry is negative and none loses digits to E(g²) − (E g)² cancelling. Dropout in train
    mode: per_sample_gradients' masks, one fixed draw going on from chunk to chunk."""
    from sgdlab.operators.batches import fixed_randomness
    from sgdlab.operators.per_sample import check_chunk_size

    chunk_size = check_chunk_size(chunk_size)
    device = next(iter(trainable_named_params(model).values()), torch.empty(0)).device
    # dropout in train mode: per_sample_gradients' one draw for all chunks (each chunk's own
    # context would seed the same masks again for every chunk)
    with fixed_randomness(model, device):
        return _pooled_variance(model, loss_fn, data, device, chunk_size)


def _pooled_variance(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Data,
                     device: torch.device, chunk_size: int | None) -> Tensor:
    """:func:`per_sample_variance`'s pass over the chunks, within its fixed draw."""
    from sgdlab.operators.batches import iterate_chunks
    from sgdlab.operators.per_sample import (check_per_sample_data, checked_per_sample_gradients,
                                             per_sample_contexts)

    n, mean, m2 = 0, None, None
    for chunk in iterate_chunks(data, device, chunk_size):
        if mean is None:
            # per_sample_gradients' checks on the first chunk, not on every chunk again
            # (a probe forward each: docs/design/curvature.md); each chunk its own call,
            # under the same fixed draw of a train-mode model's dropout masks
            check_per_sample_data(model, loss_fn, chunk)
        with per_sample_contexts(model):
            g = checked_per_sample_gradients(model, loss_fn, chunk,
                                             chunk_size=chunk_size).detach()
        k = len(g)
        mu, dev = _block_moments(g)
        del g
        if mean is None:
            n, mean, m2 = k, mu, dev
            continue
        delta = mu - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + dev + delta.square() * (n * k / total)
        n = total
    if mean is None:
        raise ValueError("per_sample_variance: data holds no samples")
    return m2 / n


def _block_moments(g: Tensor) -> tuple[Tensor, Tensor]:
    """The column means and sums of squared deviations of ``g`` (k, d), float64, a band of
    columns at a time: the float64 copies of the whole block (two of them) took 4x the memory
    of ``g`` itself in float32 (d = 10⁶, k = 256: 4 GB beside its 1 GB)."""
    k, d = g.shape
    mean = torch.empty(d, dtype=torch.float64, device=g.device)
    dev = torch.empty(d, dtype=torch.float64, device=g.device)
    step = max(1, _BAND_BYTES // (8 * max(k, 1)))
    for a in range(0, d, step):
        # a float64 g's band is a view of g, centred in place: the caller's scratch block
        band = g[:, a:a + step].double()
        mu = band.mean(0)
        mean[a:a + step] = mu
        dev[a:a + step] = band.sub_(mu).square_().sum(0)
    return mean, dev


def adam_moments_variance(model: nn.Module, optimizer: torch.optim.Optimizer, *,
                          bias_correction: bool = True) -> Tensor:
    """v̂ − m̂² (or v − m² without ``bias_correction``) per trainable parameter of ``model``
    from ``optimizer``'s ``exp_avg``, ``exp_avg_sq`` and ``step``, flat, float64. An optimizer
    without that state (SGD, RMSprop, an Adam before its first step, an Adam over other
    parameters) is a ValueError naming what is missing."""
    bias_correction = check_flag("bias_correction", bias_correction, error=ConfigError)
    betas = {id(p): g.get("betas") for g in optimizer.param_groups for p in g["params"]}
    kind = type(optimizer).__name__
    out = []
    for name, p in trainable_named_params(model).items():
        if id(p) not in betas:
            raise ValueError(f"adam-moments: the optimizer ({kind}) does not hold the model's "
                             f"parameter {name!r}")
        state = optimizer.state.get(p, {})
        missing = [k for k in ("exp_avg", "exp_avg_sq", "step") if k not in state]
        if betas[id(p)] is None or missing:
            why = ("it has no betas" if betas[id(p)] is None
                   else f"its state lacks {', '.join(missing)}")
            raise ValueError(f"adam-moments needs the first and second moments Adam keeps, but "
                             f"the optimizer ({kind}) has none for parameter {name!r}: {why} "
                             "(another optimizer, or an Adam that has taken no step on it)")
        m = state["exp_avg"].detach().double().reshape(-1)
        v = state["exp_avg_sq"].detach().double().reshape(-1)
        if bias_correction:
            b1, b2 = (float(b) for b in betas[id(p)])
            t = float(state["step"])
            if t < 1:
                raise ValueError(f"adam-moments: parameter {name!r} has taken no Adam step "
                                 f"(step {t:g}): its moments are not estimates yet")
            m = m / (1.0 - b1 ** t)
            v = v / (1.0 - b2 ** t)
        out.append(v - m * m)
    return torch.cat(out)
