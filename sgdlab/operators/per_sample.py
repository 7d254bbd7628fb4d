"""The per-sample-gradient engine: the (N, d) matrix G of per-sample gradients g_i.

Every noise quantity (gradient covariance, diffusion matrix D(x), structured-noise injection)
is built from G. Convention: ℓ is ``loss_fn`` applied to a batch of one sample, so with a
mean-reduced loss the full-batch gradient is ``G.mean(0)``. Two engines give the same G:

- factored (:mod:`sgdlab.operators.factors`): networks of ``nn.Linear`` / ``nn.Conv1d`` /
  ``nn.Conv2d`` layers — one forward and one backward pass per chunk of samples (hooks, or
  a plain ``nn.Sequential``'s layers in turn, or hand-written passes for plain
  ``nn.Sequential`` conv nets with max pooling), each layer's block written
  straight into the output (Goodfellow 2015; what BackPACK's
  BatchGrad computes);
- ``torch.func``: vmap over grad, for any model, chunked to bound memory; where vmap fails
  (an op without a batching rule that writes in place: ``nn.GRU``, ``nn.LSTM``), one
  backward pass per sample, with a warning.

G is written into one buffer allocated once (:func:`empty_rows`): for large G the cost is
memory traffic, not arithmetic (G of a 669,706-parameter MLP on 1,024 samples is 2.7 GB).
The model is evaluated in its current train/eval mode; batch norm in train mode mixes the
samples of a batch, so per-sample gradients are refused for it (call ``model.eval()``), as for
batch norm without running statistics (``track_running_stats=False``), which does so in eval
mode too.
"""
from __future__ import annotations

import contextlib
import mmap
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.func import grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from sgdlab.errors import UserError, checked_int_argument, warn
from sgdlab.models.modes import BN_TYPES, module_label

from .batches import (Data, bags_composed, check_loss_reduction, check_model_data,
                      concat_batches, fixed_randomness, loss_derivatives, plain_checkpoints,
                      stochastic_modules)
from .linear import kept_running_statistics
from .params import (UNUSED_ZERO, flat_dtype, flatten, frozen_named_params, functional_call,
                     reaching_parameters, require_trainable, trainable_named_params)

# CPU buffers at least this large are backed by transparent huge pages when the kernel allows
# it: first-touch page faults otherwise dominate writing G (first write of a 2.7 GB G 2.4x
# faster, of 35 MB 8 vs 17 ms). glibc serves smaller blocks from memory freed earlier, which
# was faster still (18 MB: 2.5 ms vs 4 ms huge-page backed); from 32 MB (its largest
# dynamic mmap threshold) every block is freshly mapped. On a virtual machine whose memory the
# host backs lazily the first huge pages of a process cost more (2.6 GB: 4-7 s vs 1 s);
# later calls gain 2.2x (docs/design/curvature.md, "Huge pages for a large G") unless the
# guest reported the freed 2 MB blocks to its host meanwhile (seconds; on a loaded machine
# every call: 0.7-2.6 s vs 1.1 s on ordinary pages, "... under load" there)
_HUGE_PAGE_MIN_BYTES = 32 * 2**20


def empty_rows(n: int, d: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialised (n, d) tensor; on CPU, large ones are mapped with ``MADV_HUGEPAGE``."""
    nbytes = n * d * torch.empty((), dtype=dtype).element_size()
    if torch.device(device).type != "cpu" or nbytes < _HUGE_PAGE_MIN_BYTES \
            or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(n, d, dtype=dtype, device=device)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except OSError:          # not supported here: ordinary pages
        pass
    return torch.frombuffer(buf, dtype=dtype).view(n, d)     # the tensor keeps buf alive


def check_per_sample_model(model: nn.Module) -> None:
    """Refuse models without trainable parameters and models whose per-sample gradients are
    undefined (batch norm in train mode)."""
    require_trainable(model)
    for name, m in model.named_modules():
        if isinstance(m, BN_TYPES) and m.training:
            raise UserError(
                f"per-sample gradients need the model in eval mode: {module_label(name, m)} "
                "is in train mode, where batch statistics mix the samples of a batch; call "
                "model.eval() first")


def check_running_statistics(model: nn.Module) -> None:
    """Refuse batch norm built with ``track_running_stats=False``: it normalises by the
    statistics of its batch in eval mode too, so its per-sample gradients are as undefined as
    in train mode. Taken one at a time, each sample was normalised by its own statistics:
    rows of another network, which do not average to the batch's gradient."""
    for name, m in model.named_modules():
        if isinstance(m, BN_TYPES) and m.running_mean is None:
            raise UserError(
                f"per-sample gradients are undefined for {module_label(name, m)}, built with "
                "track_running_stats=False: it normalises "
                "by the statistics of its batch in eval mode too, mixing the samples of a "
                "batch; build it with track_running_stats=True, or measure curvature only "
                "(the Hessian and GGN take it)")


def per_sample_gradients(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    *,
    chunk_size: int | None = 256,
    method: str = "auto",
) -> Tensor:
    """Return G, shape (N, d): row i is the gradient of the loss on sample i alone.

    Args:
        model: any module; trainable parameters define the d coordinates.
        loss_fn: ``loss_fn(outputs, targets)``, mean-reduced.
        data: a batch ``(x, y)`` or an iterable of batches (concatenated).
        chunk_size: samples per vmap call (None: all at once); the factored engine takes up
            to 2,048 samples per pass.
        method: ``"auto"`` (factored when the model qualifies, else vmap), ``"factored"``
            or ``"vmap"``.

    Dropout in train mode gives each sample its own mask, from one fixed draw
    (:func:`~sgdlab.operators.batches.fixed_randomness`): the same G on every call, and the
    global generators untouched. The rows are the loss's own gradients, by every route: the
    model's gradient hooks do not run (:func:`~sgdlab.operators.batches.loss_derivatives`).
    """
    if method not in ("auto", "factored", "vmap"):
        raise ValueError(f"Invalid method={method!r}: expected 'auto', 'factored' or 'vmap'")
    chunk_size = check_chunk_size(chunk_size)
    check_per_sample_data(model, loss_fn, data)
    with per_sample_contexts(model):
        return checked_per_sample_gradients(model, loss_fn, data, chunk_size=chunk_size,
                                            method=method)


def check_chunk_size(chunk_size: object) -> int | None:
    """``chunk_size`` (samples per vmap call) as an int >= 1 (numpy's too) or None: a string
    or a fraction failed inside torch, True was one sample a call, and the factored engine,
    which does not read it, took anything."""
    return checked_int_argument("chunk_size", chunk_size, 1,
                                ": samples per vmap call, or None: all at once", optional=True)


def check_per_sample_data(model: nn.Module, loss_fn, data: Data) -> None:
    """:func:`per_sample_gradients`' checks of the model, the loss and the data, for a caller
    that then takes :func:`checked_per_sample_gradients` batch by batch."""
    check_running_statistics(model)
    check_per_sample_model(model)
    check_loss_reduction(loss_fn)
    check_model_data(model, loss_fn, data, loss_may_read_params=True)


@contextlib.contextmanager
def per_sample_contexts(model: nn.Module) -> Iterator[None]:
    """Within: what :func:`per_sample_gradients` computes in. Dropout in train mode from one
    fixed draw of masks, not the global generator's next one
    (:func:`~sgdlab.operators.batches.fixed_randomness`), and a train-mode spectral norm's
    power iteration run from the model's vectors for every chunk and put back after
    (:func:`~sgdlab.operators.linear.kept_running_statistics`): one function for all samples,
    the model left as it was; reentrant checkpoints differentiable; the loss's own
    derivatives."""
    with fixed_randomness(model, next(model.parameters()).device), \
            kept_running_statistics(model), plain_checkpoints(), loss_derivatives(model):
        yield


def checked_per_sample_gradients(model: nn.Module, loss_fn, data: Data, *,
                                 chunk_size: int | None = 256, method: str = "auto") -> Tensor:
    """:func:`per_sample_gradients` for a caller that has run :func:`check_per_sample_data`
    (once a call, not once a batch: the digits MLP's streamed empirical Fisher product
    1.13-1.35x faster, docs/design/curvature.md) and runs it within
    :func:`per_sample_contexts` (an operator's batches run within those already)."""
    if method != "vmap":
        from .factors import checked_per_sample_factors

        ps = checked_per_sample_factors(model, loss_fn, data,
                                        chunk_size=max(chunk_size or 0, 2048))
        if ps is not None:
            return ps.materialize(release=True)
        if method == "factored":
            raise ValueError("method='factored' needs a network whose trainable parameters all "
                             "sit in nn.Linear / nn.Conv1d / nn.Conv2d layers, each called once "
                             "on the batch's samples")
    x, y = concat_batches(data, device=next(model.parameters()).device)
    params = {k: v.detach() for k, v in trainable_named_params(model).items()}
    frozen = frozen_named_params(model)
    buffers = dict(model.named_buffers())

    def sample_loss(p, xi, yi):
        out = functional_call(model, (p, frozen, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0), randomness="different")
    step = len(x) if not chunk_size else chunk_size
    first = next(iter(params.values()))
    out = empty_rows(len(x), sum(p.numel() for p in params.values()),
                     flat_dtype(params.values()), first.device)
    for i in range(0, len(x), step):
        try:
            # attention on the math kernel: vmap has no rule for the fused CPU kernel's
            # forward or backward and ran them sample by sample; embedding bags likewise
            # in plain ops (no batching rule for torch's: 1.25-2x slower, bags_composed)
            with sdpa_kernel([SDPBackend.MATH]), bags_composed(model):
                g = per_sample(params, x[i : i + step], y[i : i + step])
        except (RuntimeError, NotImplementedError) as e:
            # an op vmap cannot batch (nn.GRU / nn.LSTM write into an unbatched hidden
            # state): stay correct, one backward pass per sample
            # dropout: each sample then draws its own masks, in another order than the
            # batch's draw, so the rows no longer average to the operators' batch gradient
            stochastic = stochastic_modules(model)
            warn(f"per_sample_gradients: vmap failed ({str(e).splitlines()[0]}); "
                 "one backward pass per sample" + (
                     f"; {stochastic[0]} in train mode draws each sample's dropout masks "
                     "apart, not the batch's draw that the curvature operators and "
                     "full_gradient take (model.eval() for the network without dropout)"
                     if stochastic else ""), RuntimeWarning)
            _sample_by_sample(model, loss_fn, x, y, out, i)
            return out
        col = 0
        for k, p in params.items():      # each chunk written once, straight into G
            out[i : i + step, col : col + p.numel()] = g[k].reshape(g[k].shape[0], -1)
            col += p.numel()
    return out


def _sample_by_sample(model, loss_fn, x: Tensor, y: Tensor, out: Tensor, start: int) -> None:
    """Rows ``start:`` of G by one forward and backward pass per sample, on the model itself."""
    params = list(trainable_named_params(model).values())
    with torch.enable_grad():
        for j in range(start, len(x)):
            # each sample from the model's buffers: one that a pass writes (a running mean of
            # one's own in train mode) moved under the later samples
            with kept_running_statistics(model):
                loss = loss_fn(model(x[j : j + 1]), y[j : j + 1])
                out[j] = flatten(torch.autograd.grad(loss, params, **UNUSED_ZERO))


def full_gradient(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], data: Data
) -> Tensor:
    """Flat gradient of the mean loss over all samples of ``data`` (batches weighted by size).
    Dropout in train mode: batch i under the operators' fixed draw i
    (:func:`~sgdlab.operators.batches.fixed_randomness`), so on one batch this is the mean of
    :func:`per_sample_gradients`' rows, the same on every call, and the global generators are
    left as they were. The loss's own gradient: the model's gradient hooks do not run
    (:func:`~sgdlab.operators.batches.loss_derivatives`)."""
    from .batches import check_batch_loss, iterate_batches

    check_batch_loss(loss_fn, data)
    check_model_data(model, loss_fn, data, loss_may_read_params=True)
    params = list(require_trainable(model).values())
    device = params[0].device
    total, n = None, 0
    for i, (x, y) in enumerate(iterate_batches(data, device)):
        # each batch from the model's own buffers; reentrant checkpoints differentiable
        with fixed_randomness(model, device, i), kept_running_statistics(model), \
                plain_checkpoints(), loss_derivatives(model):
            g = torch.autograd.grad(reaching_parameters(loss_fn(model(x), y)), params,
                                    **UNUSED_ZERO)
        g = flatten(g) * len(x)
        total = g if total is None else total + g
        n += len(x)
    return total / n
