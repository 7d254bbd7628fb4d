"""diag A: exactly from the d unit columns, or by the stochastic estimator of Bekas, Kokiopoulou
and Saad (2007): the mean of v ⊙ A v over Rademacher probes v; and the exact diagonal of a
model's GGN from backpropagated loss-Hessian factors (:func:`ggn_diagonal`).

For Rademacher v (independent ±1 entries), (v ⊙ A v)_i = A_ii + Σ_{j≠i} A_ij v_i v_j, so the
mean over probes is unbiased for diag A and each entry's variance is Σ_{j≠i} A_ij² per probe:
the estimate is exact for a diagonal A and worst where A is far from diagonal. The exact
diagonal costs d products (in blocks of unit columns): for small models.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sgdlab.errors import UserError, checked_keywords
from sgdlab.loss_settings import torch_loss_class
from sgdlab.operators.batches import (Data, check_batch_loss, check_model_data,
                                      iterate_batches, loss_derivatives, stochastic_modules)
from sgdlab.operators.factors import checked_per_sample_factors, samples_interact
from sgdlab.operators.ggn import check_tensor_output, warn_zero_output_curvature
from sgdlab.operators.linear import kept_running_statistics
from sgdlab.operators.params import num_params, reaching_parameters, require_trainable
from sgdlab.operators.per_sample import (check_per_sample_model, checked_per_sample_gradients,
                                         per_sample_contexts)

from .._repr import compact_repr
from ._common import (Operand, check_num_probes, probe_block, unit_column_blocks,
                      working_operator)

__all__ = ["DiagonalEstimate", "diagonal", "ggn_diagonal"]


@dataclass
class DiagonalEstimate:
    """diag A as a flat (d,) float64 ``value`` with each entry's standard error ``stderr``
    (zeros when exact; NaN with one probe) from ``num_samples`` probes (d unit columns when
    exact)."""

    value: Tensor
    stderr: Tensor
    num_samples: int
    exact: bool

    __repr__ = compact_repr


def diagonal(
    A: Operand,
    num_probes: int = 100,
    *,
    exact: bool = False,
    generator: torch.Generator | None = None,
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> DiagonalEstimate:
    """The diagonal of a symmetric ``A`` (a dense tensor or a
    :class:`~sgdlab.operators.LinearOperator`: Hessian, GGN, empirical Fisher).

    ``exact=True`` applies A to the d unit vectors (``num_probes`` ignored); otherwise
    ``num_probes`` Rademacher probes give the mean of v ⊙ A v (module docstring). Blocks of
    probes or columns go through ``matmat`` (``block_size`` as in
    :func:`~sgdlab.measure.curvature.hutchinson.hutchinson_trace`); ``dtype`` as there.
    """
    op = working_operator(A, dtype, exact_products=True)
    d = op.shape[0]
    total = torch.zeros(d, dtype=torch.float64, device=op.device)
    if exact:
        for idx, cols in unit_column_blocks(op, block_size):
            total[idx] = cols[idx, torch.arange(len(idx), device=op.device)].double()
        _check_finite(total)
        return DiagonalEstimate(total, torch.zeros_like(total), d, True)
    tuner = op.block_tuner("matmat", block_size=block_size)
    num_probes = check_num_probes(num_probes)
    squares = torch.zeros_like(total)
    for _, b in tuner.blocks(num_probes):
        v = probe_block(op, b, generator, "rademacher")
        s = (v * op.matmat(v)).double()                 # (d, b): one sample per column
        total += s.sum(1)
        squares += s.square().sum(1)
    _check_finite(total)
    mean = total / num_probes
    if num_probes > 1:
        var = (squares - num_probes * mean.square()).clamp_min(0) / (num_probes - 1)
        se = var.sqrt() / math.sqrt(num_probes)
    else:
        se = torch.full_like(mean, float("nan"))
    return DiagonalEstimate(mean, se, num_probes, False)


class SamplesInteract(UserError):
    """A sample's output depends on the rest of its batch: no per-sample factors."""


def _check_finite(t: Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise FloatingPointError(
            "operator returned non-finite values (diverged model or bad data?)")


@torch.no_grad()
def _output_hessian_factors(loss_fn: Callable[[Tensor, Tensor], Tensor], out: Tensor,
                            y: Tensor) -> Tensor:
    """S (N, C, C) with S_n S_nᵀ = N ∇²_{f_n} L for the batch loss L (sample n's loss alone
    for a plain mean), outputs flattened per sample: in closed form for torch's plain
    mean-reduced cross-entropy and MSE (as BackPACK), otherwise from the diagonal blocks of
    the batch loss's Hessian in the outputs by eigendecomposition."""

    if out.dim() == 2 and getattr(loss_fn, "reduction", None) == "mean":
        if (torch_loss_class(loss_fn) is nn.CrossEntropyLoss and loss_fn.weight is None
                and loss_fn.label_smoothing == 0 and not y.is_floating_point()
                and not bool((y == loss_fn.ignore_index).any())):
            # diag(p) − p pᵀ = S Sᵀ with S = diag(√p) − p √pᵀ (since Σ p = 1)
            p = torch.softmax(out.double(), dim=1)
            sq = p.sqrt()
            return torch.diag_embed(sq) - p.unsqueeze(2) * sq.unsqueeze(1)
        if type(loss_fn) is nn.MSELoss:        # mean over N·C entries: 2/C I per sample
            eye = torch.eye(out.shape[1], dtype=torch.float64, device=out.device)
            return (eye * math.sqrt(2.0 / out.shape[1])).expand(len(out), -1, -1)
    # the blocks ∇²_{f_n} L of the batch loss (block diagonal for a loss that is a sum of
    # per-sample terms), times N: a sample's loss alone would lose class weights, ignored
    # targets and a sum reduction. One double-backward pass per output coordinate.
    flat = out.detach().reshape(len(out), -1).requires_grad_(True)
    with torch.enable_grad():
        grad = torch.autograd.grad(loss_fn(flat.reshape(out.shape), y), flat,
                                   create_graph=True)[0]
        cols = []
        for k in range(flat.shape[1] if grad.requires_grad else 0):
            e = torch.zeros_like(flat)
            e[:, k] = 1
            hk = torch.autograd.grad(grad, flat, grad_outputs=e, retain_graph=True,
                                     allow_unused=True)[0]
            cols.append(torch.zeros_like(flat) if hk is None else hk)
    h = (torch.stack(cols, 2) if cols else flat.new_zeros(*flat.shape, flat.shape[1])) \
        .double() * len(out)       # (N, C, C): h[n, :, k] = H_n e_k
    vals, vecs = torch.linalg.eigh((h + h.transpose(1, 2)) / 2)
    scale = vals.abs().amax().clamp_min(torch.finfo(vals.dtype).tiny)
    if bool((vals < -1e-6 * scale).any()):
        raise ValueError("ggn_diagonal: the loss is not convex in the model's outputs (its "
                         "Hessian there has negative eigenvalues), so the GGN has no real "
                         "square-root factors; use hessian_diagonal(..., operator='ggn')")
    return vecs * vals.clamp_min(0).sqrt().unsqueeze(1)


def _pseudo_loss(out: Tensor, s: Tensor) -> Tensor:
    # mean over samples of s_n · f_n: its per-sample gradients are J_nᵀ s_n
    return (out.reshape(len(out), -1) * s).sum(1).mean()


@checked_keywords()
def ggn_diagonal(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 data: Data) -> Tensor:
    """diag G of G = (1/N) Σ_n J_nᵀ H_n J_n exactly, as a flat float64 vector.

    H_n = ∇²_f ℓ(f_n, y_n) = S_n S_nᵀ (closed forms for cross-entropy and MSE, else an
    eigendecomposition of each sample's loss Hessian in the outputs), so
    diag G = (1/N) Σ_n Σ_c (J_nᵀ s_{n,c})², and J_nᵀ s_{n,c} is sample n's gradient of the
    pseudo-loss s_{n,c} · f_n: the backpropagated factors of BackPACK's ``DiagGGNExact``. A
    network whose parameters all sit in ``nn.Linear`` layers takes one forward pass and one
    backward pass per column; other networks C passes of per-sample gradients whose squares
    are summed (on factored layers without forming the (N, d) matrix). Columns that vanish for
    every sample are skipped. Needs a loss convex in the outputs (cross-entropy, MSE, BCE,
    ...) that is a sum of per-sample terms, and the model as per-sample gradients need it
    (eval-mode batch norm), with samples that do not interact in its forward pass (a batch
    statistic makes J_n the Jacobian within the batch, which per-sample passes do not see: a
    ``UserError`` then points to :func:`hessian_diagonal`'s d products). H_n is the block of
    the batch loss's Hessian, so class weights, ignored targets and ``reduction="sum"`` count
    as in the batch loss; several batches are weighted by size, as in
    :class:`~sgdlab.operators.GGNOperator` (a summed loss only on one batch:
    :func:`~sgdlab.operators.batches.check_batch_loss`).
    """
    require_trainable(model)
    check_per_sample_model(model)
    check_batch_loss(loss_fn, data)
    check_model_data(model, loss_fn, data)
    warn_zero_output_curvature(model, loss_fn, data, "ggn_diagonal")
    if stochastic := stochastic_modules(model):
        # its forward pass and its C per-sample passes would each draw other masks
        raise UserError(f"ggn_diagonal needs a deterministic forward pass: "
                        f"{', '.join(stochastic)} draws dropout masks in train mode; call "
                        "model.eval() first")
    device = next(model.parameters()).device
    total = torch.zeros(num_params(model), dtype=torch.float64, device=device)
    n = 0
    # each pass starts from the model's buffers and leaves them so (a train-mode spectral
    # norm's power iteration moved its vectors u and v at every pass, and kept them moved)
    for x, y in iterate_batches(data, device):
        # the loss's own derivatives (the other route's per-sample passes hold them as well)
        with kept_running_statistics(model), loss_derivatives(model):
            hooked = _hooked_linear_forward(model, x)
        if hooked is not None:            # its forward pass serves the factors too
            out, layers = hooked
            factors = _output_hessian_factors(loss_fn, out.detach(), y).to(out.dtype)
            with loss_derivatives(model):
                total += _linear_squares(model, out, layers, factors)
            n += len(x)
            continue
        with torch.no_grad(), kept_running_statistics(model):
            out = model(x)
        # before the interaction probe, which cannot compare outputs that are no tensor
        check_tensor_output(out, "ggn_diagonal")
        if samples_interact(model, x):
            raise SamplesInteract(
                "ggn_diagonal: the model's samples interact in its forward pass (sample 0's "
                "output alone is not the first row of its output beside sample 1: a batch "
                "statistic, such as batch norm without running statistics, or output rows "
                "that are not the samples), so its GGN does not split into per-sample "
                "factors; hessian_diagonal(model, loss_fn, data, exact=True, operator='ggn') "
                "computes the diagonal from d GGN products")
        factors = _output_hessian_factors(loss_fn, out, y).to(out.dtype)
        for c in range(factors.shape[2]):
            s = factors[:, :, c]
            if not bool(s.any()):
                continue
            # the model, data and loss checked above: per_sample_factors' checks again per
            # column (a probe forward each) were 23% of a small CNN's call (13.1 vs 10.1 ms),
            # and per_sample_gradients' on the vmap route (a digits MLP with layer norm,
            # 64 samples: 1.13-1.27x the call); within per_sample_gradients' own contexts
            with per_sample_contexts(model):
                ps = checked_per_sample_factors(model, _pseudo_loss, (x, s))
                if ps is None:
                    g = checked_per_sample_gradients(model, _pseudo_loss, (x, s),
                                                     method="vmap")
            if ps is not None:
                total += ps.sq_sum().double()
            else:
                total += g.double().square().sum(0)
        n += len(x)
    _check_finite(total)
    return total / n


def _hooked_linear_forward(model: nn.Module, x: Tensor):
    """The forward pass of a network whose trainable parameters all sit in ``nn.Linear``
    layers (the factored engine's layers, all linear), each called once on (N, in) inputs
    whose rows are the samples: (output, {layer: (input, output)}); None otherwise."""
    from sgdlab.operators.factors import _hooks_split_samples, _own_output_hooks, _supported

    layers = _supported(model)
    if not layers or not all(isinstance(m, nn.Linear) for m in layers) \
            or not _hooks_split_samples(model, layers, x):
        return None
    seen: dict[nn.Module, list[tuple[Tensor, Tensor]]] = {m: [] for m in layers}

    def hook(m, inp, out):
        seen[m].append((inp[0].detach(), out, out._version))

    handles = _own_output_hooks(layers, lambda i: hook)
    if handles is None:
        return None
    try:
        with torch.enable_grad():
            out = model(x.detach())
    finally:
        for h in handles:
            h.remove()
    # a layer's input rows must be the samples (not, e.g., a sequence folded into the batch);
    # an output changed in place afterwards (nn.ReLU(inplace=True)) names the changed tensor,
    # whose gradient is not δ
    if any(len(v) != 1 or v[0][0].dim() != 2 or len(v[0][0]) != len(x)
           or not v[0][1].requires_grad or v[0][1]._version != v[0][2]
           for v in seen.values()):
        return None
    return out, {m: v[0][:2] for m, v in seen.items()}


def _linear_squares(model: nn.Module, out: Tensor, layers: dict[nn.Module, tuple[Tensor, Tensor]],
                    factors: Tensor) -> Tensor:
    """Σ_n Σ_c (J_nᵀ s_{n,c})² from one backward pass per column c to the linear layers'
    outputs (δ_{n,c}): per layer (Σ_c δ²)ᵀ a² for the weight and Σ_n Σ_c δ² for the bias
    (sample n's weight gradient is δ_{n,c} a_nᵀ, so its squares factor)."""
    from sgdlab.operators.params import trainable_named_params

    zs = [z for _, z in layers.values()]
    # sums of squares: no cancellation, so the model's precision suffices (float64 here
    # doubled the first layer's GEMM on the large MLP)
    sq = [torch.zeros_like(z) for z in zs]
    with torch.enable_grad():            # a caller's no_grad would cut the reshape's graph
        flat_out = reaching_parameters(out, "the model's output").reshape(len(out), -1)
    for c in range(factors.shape[2]):
        s = factors[:, :, c]
        if not bool(s.any()):
            continue
        deltas = torch.autograd.grad(flat_out, zs, grad_outputs=s.to(out.dtype),
                                     retain_graph=True, allow_unused=True,
                                     materialize_grads=True)
        for acc, d in zip(sq, deltas):
            acc.addcmul_(d, d)
    diag = {}
    for (m, (a, _)), acc in zip(layers.items(), sq):
        diag[id(m.weight)] = acc.T @ (a * a)
        if m.bias is not None:
            diag[id(m.bias)] = acc.sum(0)
    return torch.cat([diag[id(p)].reshape(-1)
                      for p in trainable_named_params(model).values()]).double()
