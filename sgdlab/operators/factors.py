"""Per-sample gradients kept factored by layer: activations and output gradients of one pass.

For a layer z = W a + b applied to a batch of N samples, the gradient of sample i's loss ℓ_i is
Σ_p δ_ip a_ipᵀ for W and Σ_p δ_ip for b, with δ_i = ∂ℓ_i/∂z_i and p running over the positions
the weight is applied at (one for ``nn.Linear`` on (N, in) inputs; the output pixels of a
convolution, a_ip the input patch under the kernel; the sequence positions of a linear layer on
(N, T, in) inputs). With a mean-reduced batch loss L = (1/N) Σ ℓ_i one backward pass gives
∂L/∂z_i = δ_i / N, so the N per-sample gradients come from one forward and one backward pass
with hooks (Goodfellow 2015, "Efficient per-example gradient computations"; BackPACK's
BatchGrad does the same, unfolding convolutions into patches, im2col).

Kept factored, the N x N Gram matrix of per-sample gradients never needs the (N, d) matrix:

- ``nn.Linear`` on (N, in): ⟨g_i, g_j⟩ = (δ_i·δ_j)(a_i·a_j + [bias]) in O(N² (in + out));
- convolutions (and linear layers with positions): the layer's own (N, d_l) block, built in
  sample chunks (at most ``block_budget`` bytes at a time), then G_l G_lᵀ — one layer's block
  at a time, never all of G (a convolution's d_l is small: C_out·C_in·k² weights).

So do products Gᵀ U (eigenvectors of Σ, noise samples), Σ_i g_i² (the diagonal) and G itself
(:meth:`PerSampleFactors.materialize`, written straight into one (N, d) buffer).

The a_i and δ_i come from a forward pass and a backward pass that asks for the gradients
w.r.t. the layers' outputs only (no weight gradient at all): for a plain ``nn.Sequential``
with max pooling the hand-written passes of :class:`~sgdlab.operators.rop.SequentialHVP`
(:func:`_sequential_passes`), for other plain ``nn.Sequential`` networks their layers called
in turn (:func:`_plain_passes`), else the model's own forward pass with hooks. Applies when
every trainable parameter belongs to an ``nn.Linear``, an ``nn.Conv1d/2d/3d`` (zero padding,
"valid" or symmetric "same" included) or an eval-mode batch norm, each called once per
forward (no weight sharing, no parameter used outside its layer: ``h @ self.inp.weight``) on
inputs whose rows are the samples, the loss is a mean over samples and samples do not interact
(no batch norm in train mode); :func:`per_sample_factors` returns None otherwise and callers
fall back to ``torch.func`` (:func:`~sgdlab.operators.per_sample.per_sample_gradients`).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..accuracy import ignored_target
from ..loss_settings import ELEMENTWISE_LOSSES, torch_loss_class
from ..models.modes import BN_TYPES, PLAIN_BN_TYPES
from .batches import (Data, check_loss_reduction, check_model_data, fixed_randomness,
                      iterate_chunks, loss_derivatives, plain_checkpoints)
from .linear import kept_running_statistics
from .params import check_not_inference_mode, reaching_parameters, trainable_named_params
from .taylor import _CONV, conv_padding, flat_layers


class _Layer:
    """One trainable layer's per-sample gradients g_i = [vec(Σ_p δ_ip a_ipᵀ), Σ_p δ_ip]."""

    block_budget = 256 * 2**20     # bytes of materialised per-sample gradients at a time
    keep_budget = 64 * 2**20       # a layer's whole block is kept after first use up to this

    def __init__(self, delta: Tensor, has_weight: bool, has_bias: bool, weight_numel: int,
                 out_features: int):
        self.delta = delta
        self.has_weight, self.has_bias = has_weight, has_bias
        self.numel = (weight_numel if has_weight else 0) + (out_features if has_bias else 0)

    @property
    def n(self) -> int:
        return self.delta.shape[0]

    def rows(self, lo: int, hi: int) -> Tensor:
        """The layer's block of G for samples lo..hi-1, (hi - lo, numel)."""
        full = self.__dict__.get("_full")
        if full is not None:
            return full[lo:hi]
        if lo == 0 and hi == self.n and self.n * self.numel * self.delta.element_size() \
                <= self.keep_budget:
            self._full = self._rows(0, self.n)      # Gram, mean, Gᵀ U reuse it
            return self._full
        return self._rows(lo, hi)

    def _parts(self, lo: int, hi: int) -> list[Tensor]:
        """The weight's and the bias' blocks of G for samples lo..hi-1, (hi - lo, ·) each."""
        raise NotImplementedError

    def _rows(self, lo: int, hi: int) -> Tensor:
        parts = self._parts(lo, hi)
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    def write_rows(self, out: Tensor, lo: int, hi: int) -> None:
        full = self.__dict__.get("_full")
        if full is not None:
            out.copy_(full[lo:hi])
            return
        col = 0
        for part in self._parts(lo, hi):     # each block copied once, no concatenation
            out[:, col:col + part.shape[1]].copy_(part)
            col += part.shape[1]

    def _chunk(self) -> int:
        item = self.delta.element_size()
        return max(1, min(self.n, self.block_budget // max(1, self.numel * item)))

    def _chunks(self):
        c = self._chunk()
        return [(i, min(i + c, self.n)) for i in range(0, self.n, c)]

    def gram(self) -> Tensor:
        chunks = self._chunks()
        if len(chunks) == 1:
            g = self.rows(0, self.n)
            return g @ g.T
        k = self.delta.new_zeros(self.n, self.n)
        for a, (lo, hi) in enumerate(chunks):       # pairs of chunks, each block recomputed
            gi = self.rows(lo, hi)
            k[lo:hi, lo:hi] = gi @ gi.T
            for lo2, hi2 in chunks[a + 1:]:
                blk = gi @ self.rows(lo2, hi2).T
                k[lo:hi, lo2:hi2] = blk
                k[lo2:hi2, lo:hi] = blk.T
        return k

    def rmatmul(self, u: Tensor) -> Tensor:
        out = u.new_zeros(self.numel, u.shape[1])
        for lo, hi in self._chunks():
            out += self.rows(lo, hi).T @ u[lo:hi]
        return out

    def sq_sum(self) -> Tensor:
        out = self.delta.new_zeros(self.numel)
        for lo, hi in self._chunks():
            out += self.rows(lo, hi).square().sum(0)
        return out


class _Dense(_Layer):
    """``nn.Linear`` on (N, in) inputs: the outer-product Gram and products in closed form."""

    def __init__(self, a: Tensor, delta: Tensor, has_weight: bool, has_bias: bool):
        super().__init__(delta, has_weight, has_bias, delta.shape[1] * a.shape[1],
                         delta.shape[1])
        self.a = a                            # (N, in); delta (N, out)

    def gram(self) -> Tensor:
        k = self.delta @ self.delta.T
        if self.has_weight:
            aa = self.a @ self.a.T
            k = k * (aa + 1) if self.has_bias else k * aa
        return k

    def rmatmul(self, u: Tensor) -> Tensor:
        out = []
        if self.has_weight:
            # Σ_i u_ik δ_i a_iᵀ for each column k -> (out, in, k)
            out.append(torch.einsum("nk,no,ni->oik", u, self.delta, self.a)
                       .reshape(-1, u.shape[1]))
        if self.has_bias:
            out.append(self.delta.T @ u)
        return torch.cat(out)

    def sq_sum(self) -> Tensor:
        d2 = self.delta.square()
        parts = [(d2.T @ self.a.square()).reshape(-1)] if self.has_weight else []
        return torch.cat(parts + ([d2.sum(0)] if self.has_bias else []))

    def rows(self, lo: int, hi: int) -> Tensor:
        out = self.delta.new_empty(hi - lo, self.numel)
        self.write_rows(out, lo, hi)
        return out

    def write_rows(self, out: Tensor, lo: int, hi: int) -> None:
        d = self.delta[lo:hi]
        o, i = d.shape[1], self.a.shape[1]
        if self.has_weight:     # outer products straight into the output (no temporary)
            torch.mul(d[:, :, None], self.a[lo:hi, None, :], out=out[:, : o * i].view(-1, o, i))
        if self.has_bias:
            out[:, out.shape[1] - o:] = d


class _Positions(_Layer):
    """``nn.Linear`` applied at P positions of (N, P, in) inputs: g_i = Σ_p δ_ip a_ipᵀ."""

    def __init__(self, a: Tensor, delta: Tensor, has_weight: bool, has_bias: bool):
        super().__init__(delta, has_weight, has_bias, delta.shape[2] * a.shape[2],
                         delta.shape[2])
        self.a = a                            # (N, P, in); delta (N, P, out)

    def _parts(self, lo: int, hi: int) -> list[Tensor]:
        d = self.delta[lo:hi]
        parts = []
        if self.has_weight:
            parts.append(torch.bmm(d.transpose(1, 2), self.a[lo:hi]).reshape(len(d), -1))
        if self.has_bias:
            parts.append(d.sum(1))
        return parts


class _Conv(_Layer):
    """A convolution: sample i's weight gradient is the correlation of its input with its δ_i,
    Σ_p δ_ip a_ipᵀ over the input patches a_ip. Two ways, by measurement (one thread):

    - few input channels (``nn.Conv2d``, C_in ≤ 4, groups 1; typically the first layer, on
      the data): the patches (one strided copy, :func:`~sgdlab.operators.taylor.conv_patches`),
      then one batched GEMM, a few samples at a time, their patches and δ made into buffers
      reused, where they stay in cache (512 MNIST images, 1 → 8 channels 3x3, δ given at the
      size of the 2x2 max pooling after the layer: 3.6 vs 7.7 ms for the patches, δ and GEMM
      of all samples at once; 11 vs 22 ms for the vmapped route below; 256 CIFAR images,
      3 → 32: 34 vs 41 ms; F.unfold's patches were slower than both);
    - otherwise the weight half of ``convolution_backward`` vmapped over the samples (functorch
      turns it into one grouped convolution: 12 vs 22 ms for the patches on an 8 → 16-channel
      layer, 28 vs 52 ms on 16 → 32; in chunks of 32-128 samples 5.8-8.1 vs 5.0 ms)."""

    chunk_budget = 2 * 2**20       # bytes of one chunk's patches and δ

    def __init__(self, a: Tensor, delta: Tensor, m: nn.Module, has_weight: bool,
                 has_bias: bool, pooled: tuple[Tensor, torch.Size] | None = None):
        super().__init__(delta, has_weight, has_bias, m.weight.numel(), delta.shape[1])
        self.a = a                          # (N, C, *in); delta (N, O, *out)
        # (argmax, output shape) when delta is at the size of the max pooling after the
        # layer: its transpose is made chunk by chunk (the sum over positions, the bias' rows,
        # is the same at either size)
        self.pooled = pooled
        self.out_size = math.prod((pooled[1] if pooled else delta.shape)[2:])
        nd = a.dim() - 2
        pad = conv_padding(m)
        self.opts = (tuple(m.kernel_size), tuple(m.stride), pad, tuple(m.dilation))
        self.by_patches = type(m) is nn.Conv2d and m.groups == 1 and m.in_channels <= 4
        shape = a.new_empty(1).expand(m.weight.shape)   # only its shape is read

        def one(ai: Tensor, di: Tensor) -> Tensor:
            return torch.ops.aten.convolution_backward(
                di[None], ai[None], shape, None, tuple(m.stride), pad, tuple(m.dilation),
                False, [0] * nd, m.groups, (False, True, False))[1]

        self._weight_grads = torch.vmap(one)

    def _full_delta(self, lo: int, hi: int, out: Tensor | None = None) -> Tensor:
        """δ of samples lo..hi-1 at the layer's output size, (hi - lo, O, L), into ``out`` if
        given (when δ is kept at the pooled size)."""
        if self.pooled is None:
            return self.delta[lo:hi].flatten(2)
        idx = self.pooled[0][lo:hi].flatten(2)
        if out is None:
            out = self.delta.new_empty(hi - lo, self.delta.shape[1], self.out_size)
        return out.zero_().scatter_add_(2, idx, self.delta[lo:hi].flatten(2))

    def _patch_weight_grads(self, lo: int, hi: int) -> Tensor:
        """Σ_p δ_ip a_ipᵀ by patches for samples lo..hi-1: (hi - lo, O, C·k_h·k_w)."""
        from .taylor import conv_patches

        (kh, kw), stride, (ph, pw), dil = self.opts
        a = self.a[lo:hi]
        (n, c, h, w), o = a.shape, self.delta.shape[1]
        width = c * kh * kw
        out = self.delta.new_empty(n, o, width)
        step = n if a.device.type != "cpu" else min(n, max(1, self.chunk_budget // (
            (width + o) * self.out_size * a.element_size())))      # for CPU caches
        patches = a.new_empty(step, width, self.out_size)
        delta = a.new_empty(step, o, self.out_size) if self.pooled is not None else None
        # the chunk's inputs copied into the inside of a zero-bordered buffer
        padded = a.new_zeros(step, c, h + 2 * ph, w + 2 * pw) if ph or pw else None
        for s in range(0, n, step):
            e = min(s + step, n)
            x = a[s:e]
            if padded is not None:
                x = padded[:e - s]
                x[:, :, ph:ph + h, pw:pw + w] = a[s:e]
            p = conv_patches(x, (kh, kw), stride, (0, 0), dil, out=patches[:e - s])
            d = self._full_delta(lo + s, lo + e, None if delta is None else delta[:e - s])
            torch.bmm(d, p.transpose(1, 2), out=out[s:e])
        return out

    def _parts(self, lo: int, hi: int) -> list[Tensor]:
        parts = []
        if self.has_weight:
            if self.by_patches:
                w = self._patch_weight_grads(lo, hi)
            else:
                shape = (self.pooled[1] if self.pooled else self.delta.shape)[2:]
                w = self._weight_grads(self.a[lo:hi],
                                       self._full_delta(lo, hi).view(hi - lo, -1, *shape))
            parts.append(w.reshape(hi - lo, -1))
        if self.has_bias:
            parts.append(self.delta[lo:hi].flatten(2).sum(-1))
        return parts


class _BatchNormEval(_Layer):
    """Eval-mode batch norm y = x̂ γ + β, x̂ = (x − μ) r, r = 1/√(σ² + ε) (running statistics):
    g_i = [Σ_p δ_ip x̂_ip, Σ_p δ_ip] per channel. x̂ and δ may be given at the positions a
    following max pooling keeps only (the others have δ = 0)."""

    def __init__(self, xhat: Tensor, delta: Tensor, m: nn.Module, has_weight: bool,
                 has_bias: bool):
        super().__init__(delta, has_weight, has_bias, m.num_features, m.num_features)
        self.xhat = xhat

    def _parts(self, lo: int, hi: int) -> list[Tensor]:
        d = self.delta[lo:hi]
        s0 = d.flatten(2).sum(-1) if d.dim() > 2 else d
        parts = []
        if self.has_weight:
            dx = d * self.xhat[lo:hi]
            parts.append(dx.flatten(2).sum(-1) if d.dim() > 2 else dx)
        if self.has_bias:
            parts.append(s0)
        return parts


def _conv_supported(m: nn.Module) -> bool:
    return m.padding_mode == "zeros" and conv_padding(m) is not None


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _layer_supported(m: nn.Module) -> bool:
    if type(m) is nn.Linear:
        return True
    if type(m) in _LAYERS:
        return _conv_supported(m)
    return type(m) in PLAIN_BN_TYPES and not m.training and m.running_mean is not None


def _supported(model: nn.Module) -> list[nn.Module] | None:
    params = trainable_named_params(model)
    layers: list[nn.Module] = []
    owned: list[Tensor] = []
    for m in model.modules():
        direct = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if not direct:
            continue
        # its parameters must be its weight and bias (not, e.g., the hook-based weight norm's
        # weight_g and weight_v, from which the weight is computed before each forward)
        if not _layer_supported(m) or any(p is not m.weight and p is not m.bias
                                          for p in direct):
            return None
        layers.append(m)
        owned += direct
    if len(owned) != len(params) or len({id(p) for p in owned}) != len(owned):
        return None
    # batch norm in train mode mixes samples: per-sample gradients are not separable
    for m in model.modules():
        if isinstance(m, BN_TYPES) and m.training:
            return None
    return layers


class PerSampleFactors:
    """The (N, d) per-sample gradient matrix G of a network, factored by layer (rows g_i in
    the flat-parameter order of :mod:`sgdlab.operators.params`)."""

    def __init__(self, layers: list[_Layer], num_samples: int, dim: int):
        self.layers, self.num_samples, self.dim = layers, num_samples, dim

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].delta.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].delta.device

    def gram(self) -> Tensor:
        """G Gᵀ, (N, N): the sum of the layers' Gram matrices."""
        return sum(l.gram() for l in self.layers)

    def rmatmul(self, u: Tensor) -> Tensor:
        """Gᵀ U for U of shape (N, k) or (N,); returns (d, k) or (d,)."""
        vec = u.dim() == 1
        u2 = u.reshape(self.num_samples, -1).to(self.dtype)
        res = torch.cat([l.rmatmul(u2) for l in self.layers], 0)
        return res[:, 0] if vec else res

    def mean(self) -> Tensor:
        """ḡ = (1/N) Gᵀ 1."""
        ones = torch.full((self.num_samples,), 1.0 / self.num_samples, dtype=self.dtype,
                          device=self.device)
        return self.rmatmul(ones)

    def sq_sum(self) -> Tensor:
        """Σ_i g_i ⊙ g_i, (d,)."""
        return torch.cat([l.sq_sum() for l in self.layers])

    def materialize(self, *, release: bool = False) -> Tensor:
        """G as a dense (N, d) matrix, each layer's block written in place (one pass over
        the output's memory; see :func:`~sgdlab.operators.per_sample.empty_rows`). With
        ``release`` (the factors' last use) the blocks that come in buffers of their own
        anyway (convolutions, batch norm: one chunk of samples) are made first and the
        factors dropped before G is allocated, so that G takes memory they held (the
        benchmark CNN: G's (N, d) = 18.6 MB beside 20 MB of factors, else)."""
        from .per_sample import empty_rows

        n, layers = self.num_samples, list(self.layers)
        dtype, device = self.dtype, self.device
        made: dict[int, list[Tensor]] = {}
        if release:
            self.layers = []
            for i, l in enumerate(layers):
                if _made_first(l, n):
                    made[i] = l._parts(0, n)
                    layers[i] = None     # its factors freed before G is allocated
        out = empty_rows(n, self.dim, dtype, device)
        col = 0
        for i, l in enumerate(layers):
            if i in made:
                for part in made.pop(i):
                    out[:, col:col + part.shape[1]] = part
                    col += part.shape[1]
                continue
            c = l._chunk()
            for lo in range(0, n, c):
                hi = min(lo + c, n)
                l.write_rows(out[lo:hi, col:col + l.numel], lo, hi)
            col += l.numel
            if release:
                layers[i] = None
        return out


def _made_first(layer: _Layer, n: int) -> bool:
    """Whether :meth:`PerSampleFactors.materialize` with ``release`` makes ``layer``'s block
    of G before G is allocated: a block in a buffer of its own anyway (not a dense layer's,
    none kept), of one chunk, and no larger than the factors it frees. A larger one (a wide
    convolution on few samples: C_out C_in k² numbers a sample against its C (H W) inputs)
    would sit beside G where its factors did, all such blocks at once, not one at a time."""
    if isinstance(layer, _Dense) or "_full" in layer.__dict__ or layer._chunk() < n:
        return False
    held = {}
    # the factors sit in attributes, alone or in a tuple (a pooling's argmax); not
    # tree_flatten: it was 0.2 ms of a 3 ms call on few samples
    for v in vars(layer).values():
        for t in (v if isinstance(v, tuple) else (v,)):
            if isinstance(t, Tensor):    # by storage: an expanded shape holds one number
                held[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return n * layer.numel * layer.delta.element_size() <= sum(held.values())


_MEAN_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss) + ELEMENTWISE_LOSSES


def ignores_targets(loss_fn, y: Tensor) -> bool:
    """Whether ``y`` holds a target ``loss_fn`` leaves out (accuracy's rule,
    :func:`~sgdlab.accuracy.ignored_target`): its batch loss is then the mean over the others,
    not of the samples' losses, in any batch (the first one's check does not vouch for it)."""
    ignore = ignored_target(loss_fn)
    return ignore is not None and not y.is_floating_point() and bool((y == ignore).any())


def _mean_of_samples(loss_fn, out: Tensor, y: Tensor, m: int = 8) -> bool:
    """Whether the batch loss is the mean of the samples' losses, the assumption behind
    recovering δ_i from one batch backward: known for torch's unweighted mean-reduced losses
    (with no ignored target, and for element-wise ones targets of the outputs' shape: (N, 1)
    against (N,) broadcasts to every pair of samples), else checked on ``m`` samples."""
    if ignores_targets(loss_fn, y):
        return False         # the mean over the targets not ignored
    if (torch_loss_class(loss_fn) in _MEAN_LOSSES and loss_fn.reduction == "mean"
            and getattr(loss_fn, "weight", None) is None
            and not (isinstance(loss_fn, ELEMENTWISE_LOSSES) and out.shape != y.shape)):
        return True
    m = min(m, len(out))
    if m < 2:
        return True
    with torch.no_grad():
        batch = loss_fn(out[:m], y[:m])
        single = torch.stack([loss_fn(out[i:i + 1], y[i:i + 1]) for i in range(m)]).mean()
    if not bool(torch.isfinite(single)):
        return False         # a sample without a loss of its own (all its targets ignored)
    return bool(torch.isclose(batch, single, rtol=1e-4, atol=1e-6 * float(single.abs()) + 1e-30))


def _checked_mean_loss(loss_fn, out: Tensor, y: Tensor, n: int, checked: bool) -> bool | None:
    """After a batch of ``n`` samples, whether the loss was seen to be a mean over samples
    (``checked``: before it), or None where it is not one (no per-sample factors). Checked on
    the first batch of two samples or more (one sample alone says nothing); on every other
    batch only that no target is ignored."""
    if not checked and n >= 2:
        return True if _mean_of_samples(loss_fn, out.detach(), y) else None
    return None if ignores_targets(loss_fn, y) else checked


def per_sample_factors(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: Data,
    *,
    chunk_size: int | None = 2048,
) -> PerSampleFactors | None:
    """Factored per-sample gradients of ``model`` over ``data`` (all batches, ``chunk_size``
    samples per forward/backward pass), or None when the model does not qualify (see the
    module docstring).

    ``loss_fn`` must be mean-reduced over samples (the sgdlab convention): per-sample
    ∂ℓ_i/∂z_i is recovered as (batch size) × ∂L/∂z_i.
    """
    check_not_inference_mode()
    check_loss_reduction(loss_fn)
    check_model_data(model, loss_fn, data, loss_may_read_params=True)
    param = next(model.parameters(), None)
    if param is None:
        return None
    # dropout in train mode: one fixed draw; reentrant checkpoints differentiable
    with fixed_randomness(model, param.device), plain_checkpoints(), \
            loss_derivatives(model):
        return checked_per_sample_factors(model, loss_fn, data, chunk_size=chunk_size)


def checked_per_sample_factors(model: nn.Module, loss_fn, data: Data, *,
                               chunk_size: int | None = 2048) -> PerSampleFactors | None:
    """:func:`per_sample_factors` for a caller that has checked the loss, the data and that
    it runs outside inference mode, and runs it within
    :func:`~sgdlab.operators.batches.fixed_randomness`,
    :func:`~sgdlab.operators.batches.plain_checkpoints` and
    :func:`~sgdlab.operators.batches.loss_derivatives` (once a call: on the digits
    MLP the checks and contexts twice were 0.1 ms of a 3 ms call)."""
    layers = _supported(model)
    params = trainable_named_params(model)
    if not layers or len({p.dtype for p in params.values()}) > 1:
        return None       # parameters of several dtypes: one backward per chunk (vmap)
    order = {id(p): i for i, p in enumerate(params.values())}
    # flat-vector order must be layer by layer, weight before bias (registration order)
    flat = []
    for m in layers:
        for p in (m.weight, m.bias):
            if p is not None and p.requires_grad:
                flat.append(order[id(p)])
    if flat != sorted(flat):
        return None
    device = next(iter(params.values())).device
    batches = list(iterate_chunks(data, device, chunk_size))
    # the plain nn.Sequential's layers, read once for the routes below
    seq = flat_layers(model)
    found = _sequential_passes(model, loss_fn, batches, layers, seq)
    # checked on a batch of two samples or more where there is one: beside sample 0 alone
    # there is nothing to interact with
    probe = next((x for x, _ in batches if len(x) >= 2), batches[0][0])
    row_wise = found is None and _row_wise_sequential(seq)
    if row_wise:
        found = _plain_passes(loss_fn, batches, layers, seq)
    if found is None and (row_wise or _hooks_split_samples(model, layers, probe)):
        found = _hooked_passes(model, loss_fn, batches, layers)
    if found is None:
        return None
    acts, deltas, n, pooled = found

    def cat(ts: list[Tensor]) -> Tensor:
        return ts[0] if len(ts) == 1 else torch.cat(ts)     # one pass: no copy

    out, dim = [], 0
    for i, m in enumerate(layers):
        a, delta = cat(acts[i]), cat(deltas[i])
        has_w = m.weight is not None and m.weight.requires_grad
        has_b = m.bias is not None and m.bias.requires_grad
        if isinstance(m, nn.Linear) and a.dim() == 2:
            layer = _Dense(a, delta, has_w, has_b)
        elif isinstance(m, nn.Linear):       # positions: (N, *, in) -> (N, P, in)
            layer = _Positions(a.flatten(1, -2), delta.flatten(1, -2), has_w, has_b)
        elif type(m) in PLAIN_BN_TYPES:      # a: x̂ (both passes record it)
            layer = _BatchNormEval(a, delta, m, has_w, has_b)
        else:
            layer = _Conv(a, delta, m, has_w, has_b, pooled=pooled.get(i))
        out.append(layer)
        dim += layer.numel
    return PerSampleFactors(out, n, dim)


def _sequential_passes(model, loss_fn, batches, layers, seq, *, pooled_only: bool = True):
    """Each layer's inputs and δ from the hand-written forward and backward passes of
    :class:`~sgdlab.operators.rop.SequentialHVP` (plain ``nn.Sequential`` networks): no
    autograd graph, torch's faster channels-last max pooling, and activations and batch norm
    before a max pooling differentiated at the pooled size, where δ is non-zero (batch norm's
    x̂ and δ kept there). Only for networks with max pooling unless ``pooled_only=False``:
    elsewhere autograd's fused activation backward was as fast or faster (MLP 784-512-512-10:
    71 vs 65 ms). A first convolution followed by max pooling keeps its δ at the pooled size
    (the pooling's transpose is made by its rows, chunk by chunk). Returns (inputs, δ,
    samples, {0: (that pooling's argmax, the convolution's output shape)} when it does), or
    None when the network is not one of those, or uses a layer twice. ``seq``: the model's
    :func:`~sgdlab.operators.taylor.flat_layers`."""
    from .rop import SequentialHVP
    from .taylor import _MAXPOOL, batchnorm_primal

    if seq is None or (pooled_only and not any(isinstance(m, _MAXPOOL) for m in seq)):
        return None
    rop = SequentialHVP.build(model, trainable_named_params(model), layers=seq)
    if rop is None:
        return None
    where = [j for j, m in enumerate(rop.layers) if any(m is l for l in layers)]
    if len(where) != len(layers) or [rop.layers[j] for j in where] != layers:
        return None                      # a layer used twice, or not in registration order
    acts: list[list[Tensor]] = [[] for _ in layers]
    deltas: list[list[Tensor]] = [[] for _ in layers]
    pooled: list[tuple[Tensor, torch.Size]] = []   # the first layer's argmax, output shape
    n, checked = 0, False
    for x, y in batches:
        # the loss times the batch size: its gradients are the per-sample δ_i (mean loss)
        a_in, cache, out, _, grads = rop.prepare(
            x, y, lambda o, t, b=len(x): loss_fn(o, t) * b, per_sample=True)
        checked = _checked_mean_loss(loss_fn, out, y, len(x), checked)
        if checked is None:
            return None
        for i, j in enumerate(where):
            a = a_in[j]
            if isinstance(layers[i], PLAIN_BN_TYPES):
                a = cache["pooled", j][0] if ("pooled", j) in cache else batchnorm_primal(
                    layers[i], a)[0]
            acts[i].append(a)
            deltas[i].append(grads[j])
        if "first_pooled" in cache:      # the first layer's δ at its max pooling's size
            pooled.append((cache[cache["first_pooled"]], a_in[where[0] + 1].shape))
        n += len(x)
    if not pooled:
        return acts, deltas, n, {}
    idx = pooled[0][0] if len(pooled) == 1 else torch.cat([t for t, _ in pooled])
    return acts, deltas, n, {0: (idx, torch.Size((n, *pooled[0][1][1:])))}


def _batched_input(m: nn.Module, x: Tensor, n: int) -> bool:
    """Whether ``x``, the input of layer ``m`` on a batch of ``n`` samples, has one row per
    sample: rows that are not the samples (a sequence folded into the batch dimension, an
    unbatched input) do not factor per sample."""
    return not ((isinstance(m, nn.Linear) and x.dim() < 2)
                or (type(m) in _CONV and x.dim() != m.weight.dim()) or len(x) != n)


def _layer_factor_input(m: nn.Module, x: Tensor) -> Tensor:
    """The a_i factor of layer ``m`` on its input ``x``, detached: the input itself, for a
    batch norm its normalised x̂ (whose per-channel sums with δ give the weight's gradient)."""
    from .taylor import batchnorm_primal

    x = x.detach()
    return batchnorm_primal(m, x)[0] if type(m) in PLAIN_BN_TYPES else x


def _plain_passes(loss_fn, batches, layers, seq):
    """Each layer's inputs (batch norm: x̂) and δ for a plain ``nn.Sequential``
    (:func:`_row_wise_sequential`): its layers called one by one, each weighted layer's
    output kept, and one backward pass of the loss times the batch size w.r.t. those outputs
    (its gradients are the δ_i of a mean loss). The same passes as :func:`_hooked_passes`
    without hooks or rescaling (digits MLP: the call 1.04-1.07x faster). None when a layer runs
    twice, an input is not batched, the loss is not a mean over samples, or an output is
    changed in place (an inplace activation: the hooks then take the weights' route).
    ``seq``: the model's :func:`~sgdlab.operators.taylor.flat_layers`."""
    pos = {id(m): i for i, m in enumerate(layers)}
    if seq is None or [m for m in seq if id(m) in pos] != layers:
        return None
    acts: list[list[Tensor]] = [[] for _ in layers]
    deltas: list[list[Tensor]] = [[] for _ in layers]
    n, checked = 0, False
    for x, y in batches:
        outputs: list[tuple[Tensor, int]] = []
        with torch.enable_grad():
            a = x
            for m in seq:
                i = pos.get(id(m))
                if i is not None:
                    if not _batched_input(m, a, len(x)):
                        return None
                    acts[i].append(_layer_factor_input(m, a))
                    a = m(a)
                    outputs.append((a, a._version))
                else:
                    a = m(a)
            checked = _checked_mean_loss(loss_fn, a, y, len(x), checked)
            if checked is None or any(t._version != v for t, v in outputs):
                return None
            grads = torch.autograd.grad(loss_fn(a, y) * len(x), [t for t, _ in outputs])
        for i, g in enumerate(grads):
            deltas[i].append(g)
        n += len(x)
    return acts, deltas, n, {}


class _ParameterUses(TorchFunctionMode):
    """Records whether a trainable parameter of ``layers`` reaches a torch function outside its
    own layer's forward (``h @ self.inp.weight``, a weight tied by hand): hooks on the layers
    see only the use inside the layer, so a per-sample gradient built from them would miss
    the other use's share."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.owner = {id(p): m for m in layers for p in m.parameters(recurse=False)
                      if p.requires_grad}
        self.running: list[nn.Module] = []
        self.outside = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.outside:
            inner = self.running[-1] if self.running else None
            self.outside = any(
                isinstance(t, Tensor) and self.owner.get(id(t), inner) is not inner
                for t in tree_flatten((args, kwargs))[0])
        return func(*args, **kwargs)


def _row_wise_sequential(seq: list[nn.Module] | None) -> bool:
    """Whether the model, whose :func:`~sgdlab.operators.taylor.flat_layers` are ``seq``, is
    a plain ``nn.Sequential`` of the layers the R-op knows (``seq`` not None: no hooks, batch
    norm in eval mode on running statistics, dropout off), each flatten keeping the batch
    dimension: then samples cannot interact and no parameter is used outside its layer, so
    :func:`_hooks_split_samples` has nothing to find (its two forwards were 20% of a call on
    the digits MLP); a layer's input that is not batched is refused in
    :func:`_hooked_passes`."""
    return seq is not None and all(m.start_dim >= 1 for m in seq if isinstance(m, nn.Flatten))


def _hooks_split_samples(model, layers: list[nn.Module], x: Tensor) -> bool:
    """Whether hooks on ``layers`` and one batch backward give each sample's own gradient:

    - no parameter of a layer is used outside it (:class:`_ParameterUses`, recorded during the
      forward pass of sample 0 alone);
    - samples do not interact (a batch statistic in ``forward``): sample 0 alone against
      sample 0 beside sample 1, whose batch backward would not split into per-sample
      gradients (each sample's loss on its own, as ``vmap`` computes them);
    - each layer's input has one row per sample: 1 row for sample 0 alone, 2 beside sample
      1. A layer on a time-first (T, N, in) sequence has T rows, which the row count of a
      whole batch cannot tell from the samples when T = N;
    - row i of each layer's input is sample i's, in the batch order: sample 0's input alone
      is row 0 of the pair (0, 1) and row 1 of the pair (1, 0). A forward that reorders the
      samples before a layer and restores the order after it (sorting them by a key, as
      length bucketing does) has outputs in order but a layer whose rows are other samples':
      the rows of G built from its hooks would be those samples' blocks (0.87 off in Frobenius
      norm on such a model). Two orders, as a reordering by a key of the data leaves one of
      them as it is.

    Three tiny forwards per call (two were 3-6% of one on the registry's smallest MLP); not
    cached: outputs that coincide by accident (a zero-initialised layer) must not hide an
    interaction once the weights have moved. False when a forward fails (vmap then reports
    it)."""
    uses = _ParameterUses(layers)
    inputs: list[Tensor | None] = []       # each layer call's input, every forward

    def enter(m, args) -> None:
        uses.running.append(m)
        inputs.append(args[0].detach() if args and isinstance(args[0], Tensor)
                      and args[0].dim() else None)

    def leave(m, args, out) -> None:       # returns None: the output stays the layer's
        uses.running.pop()

    # leave first of the layer's forward hooks: a parameter use in a later one (o / ‖W‖) is
    # outside the layer's output, whose δ the engine takes
    handles = [h for m in layers
               for h in (m.register_forward_pre_hook(enter),
                         m.register_forward_hook(leave, prepend=True))]
    cuda = x.device.type == "cuda"
    try:
        # its own randomness: the passes after it take the caller's fixed draw from its start
        # and its own buffers: a train-mode module's running mean is left as it was
        with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if cuda else [],
                                                    device_type="cuda"), \
                kept_running_statistics(model):
            with uses:
                alone = model(x[:1])
            calls = len(inputs)
            # sample 0 first, then second
            batches = [model(x[:2]), model(x[:2].flip(0))] if len(x) >= 2 else []
    except Exception:
        return False
    finally:
        for h in handles:
            h.remove()
    if uses.outside or len(inputs) != calls * (1 + len(batches)) \
            or any(a is None or len(a) != 1 for a in inputs[:calls]) \
            or any(a is None or len(a) != 2 for a in inputs[calls:]):
        return False
    for k, batch in enumerate(batches):
        row = k                                   # where sample 0 sits in this batch
        if not _row_agrees(alone, batch, row) or not all(
                _row_agrees(inputs[j], inputs[(k + 1) * calls + j], row) for j in range(calls)):
            return False
    return True


def _row_agrees(alone, batch, row: int = 0) -> bool:
    """Whether ``alone`` (a model's output, or a layer's input, for sample 0 alone) equals row
    ``row`` of ``batch`` (the same for a batch where sample 0 sits at ``row``)."""
    if not (isinstance(batch, Tensor) and isinstance(alone, Tensor)) \
            or batch.shape[1:] != alone.shape[1:]:
        return False
    scale = float(batch.abs().max()) if batch.numel() else 0.0
    if not math.isfinite(scale):
        return True          # non-finite outputs: the caller's finiteness checks report them
    return torch.allclose(batch[row:row + 1], alone, rtol=1e-4, atol=1e-5 * scale + 1e-30)


@torch.no_grad()
def samples_interact(model: nn.Module, x: Tensor) -> bool:
    """Whether a sample's output depends on the other samples of its batch (a batch statistic
    in ``forward``, batch norm without running statistics): sample 0 alone against sample 0
    beside sample 1, or a model that cannot evaluate one sample alone. For a deterministic
    forward pass (no dropout in train mode). Both passes start from the model's buffers: a
    train-mode spectral norm's power iteration, moved between them, read as an interaction."""
    if len(x) < 2:
        return False
    try:
        with kept_running_statistics(model):
            alone = model(x[:1])
        with kept_running_statistics(model):
            pair = model(x[:2])
    except Exception:
        return True
    return not _row_agrees(alone, pair)


def _own_output_hooks(layers: list[nn.Module], hook_of) -> list | None:
    """Forward hooks ``hook_of(i)`` on ``layers[i]`` that see the layer's own output: each the
    first of its layer's hooks (a later one may return another output, 2 z, whose δ is not
    the layer's: rows off by that factor); None where torch's global forward hooks are
    registered, which run before any of a layer's (its output may be theirs)."""
    from torch.nn.modules import module as _mod

    if _mod._global_forward_hooks:
        return None
    return [m.register_forward_hook(hook_of(i), prepend=True) for i, m in enumerate(layers)]


def _hooked_passes(model, loss_fn, batches, layers):
    """Each layer's inputs (batch norm: x̂) and δ from the model's own forward pass with hooks
    and one backward pass w.r.t. the layers' outputs; None when a layer runs twice."""
    acts: list[list[Tensor]] = [[] for _ in layers]
    deltas: list[list[Tensor]] = [[] for _ in layers]
    calls = [0] * len(layers)
    outputs: list[tuple[Tensor, int]] = []
    ok = True
    batch_len = [0]
    checked = False          # whether the loss was seen to be a mean over samples

    def fwd_hook(i):
        def hook(mod, inputs, output):
            nonlocal ok
            calls[i] += 1
            x = inputs[0]
            # an output without a graph (the layer ran under no_grad): vmap, which sees the
            # same function and gives it zero rows
            if (calls[i] > 1 or not _batched_input(mod, x, batch_len[0])
                    or not output.requires_grad):
                ok = False
                return
            acts[i].append(_layer_factor_input(mod, x))
            outputs.append((output, output._version))
            output.register_hook(lambda g: deltas[i].append(g.detach()))
        return hook

    handles = _own_output_hooks(layers, fwd_hook)
    if handles is None:
        return None
    n = 0
    try:
        params = [p for m in layers for p in m.parameters() if p.requires_grad]
        for x, y in batches:
            calls[:] = [0] * len(layers)
            batch_len[0] = len(x)
            outputs.clear()
            with torch.enable_grad():
                out = model(x)
                if not ok or 0 in calls:
                    return None      # a layer the forward skips: vmap (zero rows for it)
                checked = _checked_mean_loss(loss_fn, out, y, len(x), checked)
                if checked is None:
                    return None
                # δ only: differentiate w.r.t. the layers' outputs, so no weight gradient (and
                # no input gradient of the first layer) is computed; an output changed in place
                # afterwards (inplace activation) no longer names it: then w.r.t. the weights
                intact = all(t._version == v for t, v in outputs)
                torch.autograd.grad(reaching_parameters(loss_fn(out, y)),
                                    [t for t, _ in outputs] if intact else params,
                                    allow_unused=True)     # an unused output: no δ, vmap
            outputs.clear()
            for i in range(len(layers)):
                if len(deltas[i]) != len(acts[i]):
                    return None
                deltas[i][-1] = deltas[i][-1] * len(x)     # mean loss: undo the 1/batch
            n += len(x)
    finally:
        for h in handles:
            h.remove()
    return (acts, deltas, n, {}) if ok else None
