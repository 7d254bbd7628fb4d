"""Hessian-vector products through a plain ``nn.Sequential`` by hand: Pearlmutter's R-op.

H v is the derivative along v of the gradient, so it is the gradient's backward recursion run
with tangents. The forward pass carries the first-order tangents of
:class:`~sgdlab.operators.taylor.SequentialTaylor` (a' of every layer's input); at the outputs
f the loss gives ġ_f = ∇²ℓ f'; the reverse pass carries the primal output gradients g (cached
once per batch) and their tangents ġ:

- a layer bilinear in input and weight, z = B(a, W) + b (linear, convolution):
  ġ_a = B_aᵀ(ġ_z; W) + B_aᵀ(g_z; V),   (H v)_W = B_Wᵀ(a; ġ_z) + B_Wᵀ(a'; g_z),   (H v)_b = Σ ġ_z;
- eval-mode batch norm y = x̂ γ + β, x̂ = (x − μ) r: ġ_x = r (γ ġ_y + γ' g_y),
  (H v)_γ = Σ (x̂ ġ_y + r x' g_y), (H v)_β = Σ ġ_y;
- an elementwise activation h = σ(z): ġ_z = σ'(z) ġ_h + σ''(z) z' g_h;
- max pooling scatters through the primal's argmax; average pooling, flatten and identity
  are linear maps (their transposes). Runs of activations and batch norm that end in a max
  pooling go at the pooled size (:func:`~sgdlab.operators.taylor.pooled_chains`).

Without the terms in g this is the Gauss–Newton product G v = Jᵀ ∇²ℓ J v (``gauss_newton``).

Why not autograd's double backward: on the benchmark CNN it runs convolution double
backward (a slow non-oneDNN path for half of its convolutions), ReLU and max-pool
double backward and zero fills; here every product is one oneDNN convolution, GEMM or
gather, and the primal masks, argmax indices and gradients are computed once per batch.
Grouped convolutions stack the k probes' channels group by group. Models
:meth:`SequentialHVP.build` declines ("same" padding that is asymmetric, and all that
:class:`SequentialTaylor` declines) keep the autograd double backward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.modes import PLAIN_BN_TYPES
from .batches import is_single_batch, iterate_batches
from .params import add_param_rows, param_rows
from .taylor import (_CONV, _CONV_FN, _LINEAR_POOL, _MAXPOOL, _WEIGHTED, ELEMENTWISE,
                     SequentialTaylor, conv_padding, data_forms, forward_preparation,
                     output_hessian_products, single_batch_preparation)

_CONV_INPUT = {nn.Conv1d: F.grad.conv1d_input, nn.Conv2d: F.grad.conv2d_input,
               nn.Conv3d: F.grad.conv3d_input}
_CONV_WEIGHT = {nn.Conv1d: F.grad.conv1d_weight, nn.Conv2d: F.grad.conv2d_weight,
                nn.Conv3d: F.grad.conv3d_weight}


class SequentialHVP:
    """H v (k columns at once) for a supported ``nn.Sequential`` (module docstring)."""

    def __init__(self, taylor: SequentialTaylor):
        self.taylor, self.layers = taylor, taylor.layers
        # the reverse pass stops at the first layer with trainable parameters
        self.first = min(j for j, m in enumerate(self.layers)
                         if any(id(p) in taylor.slices for p in m.parameters(recurse=False)))

    @classmethod
    def build(cls, model: nn.Module, params: dict[str, Tensor], *,
              layers: list[nn.Module] | None = None) -> "SequentialHVP | None":
        return cls.on(SequentialTaylor.build(model, params, layers=layers))

    @classmethod
    def on(cls, taylor: SequentialTaylor | None) -> "SequentialHVP | None":
        """The R-op over an operator's Taylor-mode forward pass, or None when it declines."""
        if taylor is None or not taylor.slices:
            return None
        if any(isinstance(m, _CONV) and conv_padding(m) is None for m in taylor.layers):
            return None
        return cls(taylor)

    def forward(self, x: Tensor, y: Tensor, loss_fn) -> tuple:
        """The forward pass' primal quantities (Taylor mode's preparation)."""
        return self.taylor.prepare(x, y, loss_fn)

    @torch.no_grad()
    def prepare(self, x: Tensor, y: Tensor, loss_fn, *, gradients: bool = True,
                forward: tuple | None = None, per_sample: bool = False) -> tuple:
        """The forward pass' primal quantities (``forward``: ``self.taylor.prepare``'s, when
        already made), plus every layer's output gradient (not needed for Gauss–Newton
        products: ``gradients=False``). With ``per_sample`` (the per-sample gradients' passes)
        no patches of the data are made, and a first layer followed by a pooled chain keeps
        its output gradient at the pooled size (its max pooling's transpose left to the
        caller: ``cache["first_pooled"]`` is that pooling's layer p, ``cache[p]`` its
        argmax)."""
        prep = (self.taylor.prepare(x, y, loss_fn, per_sample=per_sample) if forward is None
                else forward)
        acts, cache, o, g_out = prep
        grads: list[Tensor | None] = [None] * len(self.layers)
        g = g_out.detach()[None]
        j = len(self.layers) - 1 if gradients else -1
        while j >= self.first:
            grads[j] = g[0]
            q, p = self.taylor.chain_of.get(j, (None, None))
            if j != p:
                if j > self.first:
                    g = layer_transpose(self.layers[j], g, acts[j], cache.get(j))
                j -= 1
                continue
            # a pooled chain: its gradients at the pooled size, one per pooling window
            # (overlapping windows share an input position: its gradient is their sum, made
            # by the one scatter at the chain's start)
            for i in range(p - 1, max(q, self.first) - 1, -1):
                grads[i] = g[0]
                if i > self.first:
                    g = layer_transpose(self.layers[i], g, acts[i], cache["pooled", i])
            if per_sample and q - 1 == self.first and isinstance(self.layers[q - 1], _CONV):
                grads[self.first] = g[0]
                cache["first_pooled"] = p
                break
            if q > self.first:
                g = _scatter_pool(g, cache[p], acts[q].shape)
            j = q - 1
        return prep + (grads,)

    def matmat(self, prep: tuple, m: Tensor, *, gauss_newton: bool = False) -> Tensor:
        """H M for the (d, k) matrix M; with ``gauss_newton`` G M = Jᵀ ∇²ℓ J M (the reverse
        pass without the terms in the primal gradients g)."""
        acts, cache, o, g_out, grads = prep
        tangents: list[Tensor | None] = []
        d1, _ = self.taylor.propagate(prep[:4], m, hessian=False, inputs=tangents)
        out = torch.zeros_like(m)
        if d1 is None:
            return out
        gd = output_hessian_products(g_out, o, d1, cache).detach()
        pooled_at = self.taylor.pooled_data_conv(cache)     # its scatter is not needed
        for j in range(len(self.layers) - 1, self.first - 1, -1):
            layer, a, g, at = self.layers[j], acts[j], grads[j], tangents[j]
            need_input = j > self.first
            q, p = self.taylor.chain_of.get(j, (None, None))
            if j == p:
                continue                  # a pooled chain's adjoints stay at the pooled size
            c = cache["pooled", j] if q is not None else cache.get(j)
            if gauss_newton:
                at = None                 # drops every term in g (with vw in weighted_reverse)
            if isinstance(layer, _WEIGHTED):
                gd = weighted_reverse(layer, a, at, g, gd, self.taylor.slices, m, out,
                                      need_input, c, gauss_newton, *data_forms(cache, j))
            elif need_input:
                if isinstance(layer, ELEMENTWISE) and c[1] is not None and at is not None:
                    s1, s2 = c
                    gd = s1 * gd + s2 * at * g
                elif j != pooled_at:
                    gd = layer_transpose(layer, gd, a, c)
            if j == q and need_input and p != pooled_at:   # leaving the chain: full size
                gd = _scatter_pool(gd, cache[p], a.shape)
        return out


def weighted_reverse(layer: nn.Module, a, at, g, gd, slices, m: Tensor, out: Tensor,
                     need_input: bool, c, gauss_newton: bool, patches: Tensor | None = None,
                     columns: tuple | None = None, pooled: Tensor | None = None):
    """One weighted layer's step of the reverse pass: its rows of H M (or G M) added to
    ``out``; returns the adjoint ġ of its input (None when not needed). a, a': its input and
    input tangent (None: zero or Gauss–Newton); g, ġ: its output's primal gradient and
    adjoint; c: batch norm's cached (x̂, r); ``pooled``: a first convolution's patches at
    the next max pooling's argmax, ġ then at the pooled size."""
    vw = None if gauss_newton else param_rows(slices, layer.weight, m)
    if pooled is not None:
        hw = _pooled_weight_terms(gd, pooled) if layer.weight.requires_grad else None
        hb = _channel_sum(gd) if layer.bias is not None else None
        add_param_rows(out, slices, layer.weight, None if hw is None else hw.view(
            len(gd), *layer.weight.shape))
        add_param_rows(out, slices, layer.bias, hb)
        return None
    if isinstance(layer, nn.Linear):
        hw, hb, gin = _linear_reverse(layer, a, at, g, gd, vw, need_input, columns)
    elif isinstance(layer, _CONV):
        hw, hb, gin = _conv_reverse(layer, a, at, g, gd, vw, need_input, patches)
    else:
        hw, hb, gin = _bn_reverse(layer, c, at, g, gd, vw, need_input)
    add_param_rows(out, slices, layer.weight, hw)
    add_param_rows(out, slices, layer.bias, hb)
    return gin


def layer_transpose(layer: nn.Module, t: Tensor, a: Tensor, c) -> Tensor:
    """Jᵀ t for a layer's Jacobian in its input a at the primal; t is (k, N, *out); c is the
    layer's cached primal quantities (masks, argmax, x̂)."""
    if isinstance(layer, nn.Linear):
        return t @ layer.weight.detach()
    if isinstance(layer, _CONV):
        k = t.shape[0]
        if all(s == 1 for s in layer.stride):
            u = conv_input_by_forward(layer, t.flatten(0, 1))
            if u is not None:
                return u.unflatten(0, (k, a.shape[0]))
        u = _CONV_INPUT[type(layer)]((k * a.shape[0], *a.shape[1:]), layer.weight.detach(),
                                     t.flatten(0, 1), *_conv_options(layer))
        return u.unflatten(0, (k, a.shape[0]))
    if isinstance(layer, PLAIN_BN_TYPES):
        return t * _bn_scale(layer, c)
    if isinstance(layer, ELEMENTWISE):
        return c[0] * t
    if isinstance(layer, _MAXPOOL):
        return _scatter_pool(t, c, a.shape)
    if isinstance(layer, nn.Flatten) or not isinstance(layer, _LINEAR_POOL):
        return t.reshape(t.shape[0], *a.shape)         # Flatten, Identity, Dropout
    with torch.enable_grad():                          # average pooling: its transpose
        z = a.new_zeros(t.shape[0] * a.shape[0], *a.shape[1:]).requires_grad_(True)
        u = torch.autograd.grad(layer(z), z, t.flatten(0, 1))[0]
    return u.unflatten(0, t.shape[:2])


def conv_input_by_forward(layer: nn.Module, t: Tensor) -> Tensor | None:
    """Jᵀ t of a stride-1 convolution as a forward convolution of t (N, C_out, *out) with the
    flipped, transposed filters, or None when its padding exceeds dilation·(k − 1). Why: on
    CPU oneDNN's backward-data kernel took 3.9 vs 3.6 ms (512x16x14x14 -> 8 channels, 3x3)
    and allocated a 14 MB column buffer (3,900 vs 3,100 fresh pages a call)."""
    pad, dil, g = conv_padding(layer), layer.dilation, layer.groups
    back = tuple(d * (q - 1) - p for d, q, p in zip(dil, layer.kernel_size, pad))
    if any(b < 0 for b in back):
        return None
    w = layer.weight.detach()
    c_out, c_in = w.shape[0], w.shape[1] * g
    wt = w.unflatten(0, (g, c_out // g)).transpose(1, 2).reshape(c_in, c_out // g, *w.shape[2:])
    wt = wt.flip(tuple(range(2, w.dim())))
    return _CONV_FN[type(layer)](t, wt, None, 1, back, dil, g)


def rop_products(op, m: Tensor, *, gauss_newton: bool) -> Tensor:
    """H M (or G M) by ``op._rop`` over ``op.data``, batches weighted by size; a single batch's
    preparation is kept (its forward part shared with the Taylor quadratic forms) unless the
    operator was made with ``cache_graph=False``."""
    def prepare(x, y, forward=None):
        return op._rop.prepare(x, y, op.loss_fn, gradients=not gauss_newton, forward=forward)

    if is_single_batch(op.data):
        if op._kw["cache_graph"]:
            forward = forward_preparation(op, op._rop.forward)
            prep = single_batch_preparation(op, "_rop_cache",
                                            lambda x, y: prepare(x, y, forward))
        else:
            prep = prepare(*next(iterate_batches(op.data, op.device)))
        return op._rop.matmat(prep, m, gauss_newton=gauss_newton)
    total, n = torch.zeros_like(m), 0
    for x, y in iterate_batches(op.data, op.device):
        total += op._rop.matmat(prepare(x, y), m, gauss_newton=gauss_newton) * len(x)
        n += len(x)
    return total / n


def _bn_scale(layer: nn.Module, cache: tuple) -> Tensor:
    xhat, r = cache
    return r if layer.weight is None else r * layer.weight.detach().reshape(r.shape)


def _channel_sum(t: Tensor) -> Tensor:
    """Sum of (k, N, C, ...) over samples and positions: (k, C)."""
    return t.sum((1, *range(3, t.dim())))


def _linear_reverse(layer, a, at, g, gd, vw, need_input, columns=None):
    k, n_out = gd.shape[0], gd.shape[-1]
    a2, g2 = a.reshape(-1, a.shape[-1]), (None if g is None else g.reshape(-1, n_out))
    w = layer.weight.detach()
    if columns is not None and at is None and not need_input:   # data without zero columns
        kept, a_kept = columns
        gk = gd.reshape(k, -1, n_out)
        hw = None
        if layer.weight.requires_grad:
            part = (gk[0].T @ a_kept)[None] if k == 1 else gk.transpose(1, 2) @ a_kept
            hw = _in_columns(part, kept, a.shape[-1])
        return hw, (gk.sum(1) if layer.bias is not None else None), None
    if k == 1:                    # plain GEMMs (a batched matmul of one costs more here)
        gd2 = gd.reshape(-1, n_out)
        hw = None
        if layer.weight.requires_grad:
            hw = gd2.T @ a2                                       # ġ_zᵀ a
            if at is not None:
                hw.addmm_(g2.T, at.reshape(-1, a.shape[-1]))       # + g_zᵀ a'
        hb = gd2.sum(0) if layer.bias is not None else None
        gin = None
        if need_input:
            gin = gd2 @ w
            if vw is not None:
                gin.addmm_(g2, vw[0])                             # + g_z V
            gin = gin.reshape(1, *a.shape)
        return hw, hb, gin
    gd2 = gd.reshape(k, -1, n_out)
    hw = None
    if layer.weight.requires_grad:
        hw = gd2.transpose(1, 2) @ a2
        if at is not None:
            hw = hw + g2.T @ at.reshape(k, -1, a.shape[-1])
    hb = gd2.sum(1) if layer.bias is not None else None
    gin = None
    if need_input:
        gin = gd @ w
        if vw is not None:
            gin = gin.add_((g2 @ vw).reshape(k, *a.shape))
    return hw, hb, gin


def _in_columns(part: Tensor, kept: Tensor, n: int) -> Tensor:
    """(..., n) with part's (..., len(kept)) values at the columns kept, zeros elsewhere."""
    return part.new_zeros(*part.shape[:-1], n).index_copy_(-1, kept, part)


def _conv_options(layer: nn.Module) -> tuple:
    """(stride, padding, dilation, groups) for ``torch.nn.grad.conv*d_input/weight``."""
    return layer.stride, conv_padding(layer), layer.dilation, layer.groups


def _by_group(t: Tensor, dim: int, g: int) -> Tensor:
    """Channels (k, C) at ``dim`` and ``dim`` + 1 reordered to (g, k, C/g) and merged: how a
    grouped convolution with g groups expects k stacked copies of its channels."""
    t = t.unflatten(dim + 1, (g, -1)).transpose(dim, dim + 1)
    return t.flatten(dim, dim + 2)


def _from_groups(t: Tensor, dim: int, g: int, k: int) -> Tensor:
    """Merged (g, k, C/g) channels at ``dim`` (a grouped convolution's k stacked copies) to
    (k, C) at ``dim`` and ``dim`` + 1."""
    t = t.unflatten(dim, (g, k, -1)).transpose(dim, dim + 1)
    return t.flatten(dim + 1, dim + 2)


def _conv_reverse(layer, a, at, g, gd, vw, need_input, patches=None):
    k, n = gd.shape[:2]
    stride, pad, dil, groups = _conv_options(layer)
    opts = (stride, pad, dil)
    w = layer.weight.detach()
    weight_of, input_of = _CONV_WEIGHT[type(layer)], _CONV_INPUT[type(layer)]
    hw = None
    if layer.weight.requires_grad:
        cout, rest = w.shape[0], w.shape[1:]
        if patches is not None:       # Σ_n ġ_n P_nᵀ against the data's cached patches
            hw = _patch_weight_terms(gd, patches).reshape(k, *w.shape)
        else:                         # ġ_z of all k probes against the shared input, one call
            gz = _by_group(gd.transpose(0, 1), 1, groups)          # (N, g·k·C_out/g, ...)
            hw = _from_groups(weight_of(a, (k * cout, *rest), gz, *opts, groups=groups),
                              0, groups, k)
        if at is not None:            # each probe's input tangent against the shared g_z
            gk = g if k == 1 else g.repeat(1, k, *([1] * (g.dim() - 2)))
            hw = hw + weight_of(at.transpose(0, 1).flatten(1, 2), (k * cout, *rest), gk, *opts,
                                groups=k * groups).unflatten(0, (k, cout))
    hb = _channel_sum(gd) if layer.bias is not None else None
    gin = None
    if need_input and vw is not None and k == 1:
        # B_aᵀ(ġ_z; W) + B_aᵀ(g_z; V) as one transposed convolution over [ġ_z, g_z] with
        # filters [W; V] (per group): one call with twice the channels (1.3x one term, not 2x)
        gin = input_of(a.shape, _by_group(torch.stack([w, vw[0]]), 0, groups),
                       _by_group(torch.stack([gd[0], g], 1), 1, groups), *opts,
                       groups=groups)[None]
    elif need_input:
        gin = input_of((k * n, *a.shape[1:]), w, gd.flatten(0, 1), *opts,
                       groups=groups).unflatten(0, (k, n))
        if vw is not None:            # g_z against the k probes' filters: one call
            wk = vw.transpose(0, 1).flatten(1, 2)        # (C_out, k·C_in/g, ...)
            u = input_of((n, k * a.shape[1], *a.shape[2:]), wk, g, *opts, groups=groups)
            gin = gin.add_(_from_groups(u, 1, groups, k).transpose(0, 1))
    return hw, hb, gin


def _patch_weight_terms(gd: Tensor, patches: Tensor, budget: int = 64 * 2**20) -> Tensor:
    """Σ_n ġ_n P_nᵀ for (k, N, C_out, *out) ġ and (N, C_in·k_h·k_w, L) patches: (k·C_out,
    C_in·k_h·k_w), batched GEMMs over sample chunks (each chunk's (n, k·C_out, ·) products
    within ``budget`` bytes)."""
    k, n, cout = gd.shape[:3]
    g = gd.transpose(0, 1).reshape(n, k * cout, -1)       # a view for k = 1
    step = max(1, budget // (k * cout * patches.shape[1] * gd.element_size()))
    out = None
    for lo in range(0, n, step):
        part = torch.bmm(g[lo:lo + step], patches[lo:lo + step].transpose(1, 2)).sum(0)
        out = part if out is None else out.add_(part)
    return out


def _pooled_weight_terms(gd: Tensor, pooled: Tensor) -> Tensor:
    """Σ_n ġ_n P_nᵀ for (k, N, C_out, *out) ġ at the pooled size and (C_out, W, N, *out)
    pooled patches: (k, C_out, W), one batched GEMM over the channels."""
    k, c_out, width = gd.shape[0], pooled.shape[0], pooled.shape[1]
    g = gd.movedim(2, 0).reshape(c_out, k, -1)                        # (C_out, k, N·out)
    return torch.bmm(g, pooled.view(c_out, width, -1).transpose(1, 2)).transpose(0, 1)


def _bn_reverse(layer, cache, at, g, gd, vw, need_input):
    xhat, r = cache
    k = gd.shape[0]
    shape = (k, 1, -1) + (1,) * (xhat.dim() - 2)
    gr = None if at is None and vw is None else g * r
    hw = None
    if layer.weight is not None and layer.weight.requires_grad:
        hw = _channel_sum(gd * xhat)
        if at is not None:
            hw = hw + _channel_sum(at * gr)
    hb = _channel_sum(gd) if layer.bias is not None else None
    gin = None
    if need_input:
        gin = gd * _bn_scale(layer, cache)
        if vw is not None:
            gin = gin.addcmul_(gr, vw.reshape(shape))
    return hw, hb, gin


def _scatter_pool(t: Tensor, idx: Tensor, in_shape) -> Tensor:
    """Transpose of max pooling: (k, N, C, *out) values back to the argmax positions of
    (k, N, C, *in); overlapping windows add up."""
    k = t.shape[0]
    out = t.new_zeros(k, *in_shape[:2], torch.Size(in_shape[2:]).numel())
    ix = idx.flatten(2).unsqueeze(0).expand(k, -1, -1, -1)
    out.scatter_add_(-1, ix, t.flatten(3) if t.dim() > 3 else t)
    return out.reshape(k, *in_shape)
