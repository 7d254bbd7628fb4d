"""Second-order forward (Taylor) mode through a plain ``nn.Sequential``: vᵀ H v without H v.

Along a direction v (k of them at once, leading dim), each layer carries the primal a and the
first and second derivatives a', a'' in t of a(θ + t v). A layer that is bilinear in its input
and its weight, z = B(a, W) + b (``nn.Linear``, ``nn.Conv1d/2d/3d``), gives

    z' = B(a', W) + B(a, V) + c,        z'' = B(a'', W) + 2 B(a', V);

an elementwise activation σ gives h' = σ'(z) z', h'' = σ''(z) z'² + σ'(z) z''; max pooling
routes the tangents through the primal's argmax (it is piecewise linear); average pooling,
flatten and identity are linear; eval-mode batch norm y = x̂ γ + β with x̂ = (x − μ) r is
bilinear in (x, γ): y' = x' r γ + x̂ γ' + β', y'' = x'' r γ + 2 x' r γ'. The input is data
(a' = a'' = 0), so the first layer costs one product B(X, V) per probe, all probes of a block
in one call. With outputs f and the loss ℓ(f), d²/dt² ℓ = f'ᵀ ∇²ℓ f' + ∇ℓᵀ f'' is vᵀ H v and
the first term alone vᵀ G v (the generalised Gauss–Newton matrix).

Anything else (skip connections, hooks, batch norm in train mode, dropout in train mode,
grouped/transposed convolutions with non-zero padding modes, trainable parameters outside
the supported layers) makes :meth:`SequentialTaylor.build` return None, and the operators fall
back to (V ⊙ A V).sum(0).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..accuracy import ignored_target
from ..loss_settings import torch_loss_class
from ..models.modes import PLAIN_BN_TYPES
from .batches import gradient_hooks_held, is_single_batch, iterate_batches
from .params import param_rows, param_slices, state_versions

# elementwise activations whose first and second derivatives are taken by autograd at z
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.GELU, nn.SiLU,
               nn.Softplus, nn.CELU, nn.SELU, nn.Mish, nn.Hardtanh, nn.ReLU6)
_PASS = (nn.Identity, nn.Flatten)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_FN = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_MAXPOOL_FN = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d,
               nn.MaxPool3d: F.max_pool3d}
_LINEAR_POOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_WEIGHTED = (nn.Linear, *_CONV, *PLAIN_BN_TYPES)


def _supported_layer(m: nn.Module) -> bool:
    t = type(m)
    if t in (nn.Linear, *ELEMENTWISE, *_PASS, *_LINEAR_POOL):
        return True
    if t in _CONV:
        return m.padding_mode == "zeros"
    if t in _MAXPOOL:
        return not m.return_indices
    if t in PLAIN_BN_TYPES:   # eval mode with running statistics: an affine map per channel
        return not m.training and m.running_mean is not None
    return isinstance(m, nn.Dropout) and (m.p == 0 or not m.training)


def global_forward_hooks() -> bool:
    """Whether forward (pre-)hooks are registered for every module: the hand-written passes
    would skip them."""
    from torch.nn.modules import module as _mod

    return bool(_mod._global_forward_hooks or _mod._global_forward_pre_hooks)


def flat_layers(module: nn.Module) -> list[nn.Module] | None:
    """The layers of a (nested) plain ``nn.Sequential``, or None when not one."""
    if (type(module).forward is not nn.Sequential.forward or module._forward_hooks
            or module._forward_pre_hooks or global_forward_hooks()):
        return None
    out = []
    for m in module:
        if m._forward_hooks or m._forward_pre_hooks:
            return None
        if isinstance(m, nn.Sequential):
            sub = flat_layers(m)
            if sub is None:
                return None
            out += sub
        elif _supported_layer(m):
            out.append(m)
        else:
            return None
    return out


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a + b


def _merged(fn, t: Tensor) -> Tensor:
    """Apply a per-sample layer to (k, N, ...) tangents as one batch of k·N samples."""
    out = fn(t.flatten(0, 1))
    return out.unflatten(0, t.shape[:2])


class SequentialTaylor:
    """Second-order forward mode through a supported ``nn.Sequential`` (module docstring)."""

    def __init__(self, layers: list[nn.Module], slices: dict[int, tuple[int, int]]):
        self.layers, self.slices = layers, slices
        # values per sample of every weighted layer's output (probe memory), known after
        # the first ``prepare``; Linear widths until then
        self.width = sum(m.out_features for m in layers if isinstance(m, nn.Linear)) or 1
        self.chains = pooled_chains(layers)
        # layer -> (first, max-pool) of the pooled chain it belongs to
        self.chain_of = {j: (q, p) for q, p in self.chains.items() for j in range(q, p + 1)}
        # chains of ReLUs alone: max pooling first, the ReLUs at the pooled size (below)
        self.relu_chains = {q: p for q, p in self.chains.items()
                            if all(type(layers[j]) is nn.ReLU for j in range(q, p))}
        # 2-D convolutions whose output goes (through a chain) into a 2-D max pooling: run
        # channels-last on CPU, so the pooling's faster kernel needs no conversion
        self.pooled_convs = {j for j, m in enumerate(layers[:-1]) if type(m) is nn.Conv2d
                             and isinstance(layers[self.chains.get(j + 1, j + 1)], nn.MaxPool2d)}

    @classmethod
    def build(cls, model: nn.Module, params: dict[str, Tensor], *,
              layers: list[nn.Module] | None = None) -> "SequentialTaylor | None":
        """The forward mode over ``model``'s layers, or None when it declines. ``layers``: its
        :func:`flat_layers` when the caller has them already (the per-sample factors' routes
        read them once)."""
        if layers is None:
            layers = flat_layers(model)
        if layers is None or not any(isinstance(m, _WEIGHTED) for m in layers):
            return None
        offsets = param_slices(params)
        seen = set()
        for m in layers:
            if isinstance(m, _WEIGHTED):
                seen.update(id(p) for p in m.parameters())
        if not set(offsets) <= seen:     # a trainable parameter outside the supported layers
            return None
        return cls(layers, offsets)

    @torch.no_grad()
    def prepare(self, x: Tensor, y: Tensor, loss_fn, *, per_sample: bool = False) -> tuple:
        """Primal quantities at every layer and the loss' output gradient graph. With
        ``per_sample`` (for the per-sample gradients' passes) no patches of the data, which
        they do not read, and the argmax of a ReLU chain's max pooling left in the layout the
        pooling gives it (channels-last on CPU: turning the benchmark CNN's 512 x 8 x 14 x 14
        int64 argmax NCHW cost 1.05 ms; the scatters read it in place, its last two
        dimensions merging into one stride: 1.73 vs 1.94 ms for the first convolution's)."""
        acts, cache, a = [], {}, x
        first = next(j for j, m in enumerate(self.layers) if isinstance(m, _WEIGHTED))
        width = 0
        pooled = None         # a max pooling's output, maybe channels-last
        masks = ()            # a ReLU chain's layers whose masks wait for the NCHW copy
        for j, m in enumerate(self.layers):
            cl = None
            if a is pooled and not a.is_contiguous():    # recorded NCHW; kept channels-last as
                cl, a = a, a.contiguous()                 # the input of a pooled convolution
            self._relu_masks(cache, masks, a)
            masks = ()
            acts.append(a)
            q, p = self.chain_of.get(j, (None, None))
            if q in self.relu_chains:
                # max(relu(z)) = relu(max(z)), and the argmax differs only in windows with
                # max z <= 0, whose coefficient relu' is 0: pool z, then the ReLUs at the
                # pooled size. The chain's recorded inputs are z (their shape is what is read)
                if j == p:
                    a, cache[j] = max_pool_with_indices(m, a, contiguous=False,
                                                        contiguous_indices=not per_sample)
                    for i in range(q, p):
                        a = self.layers[i](a)
                    # relu'(z) = [relu(z) > 0] = [chain's output > 0]: with ``per_sample``
                    # made from the output as the next layer records it (NCHW), the layout of
                    # the output gradients it multiplies there
                    masks = range(q, p)
                    if not per_sample:
                        self._relu_masks(cache, masks, a)
                        masks = ()
                    else:
                        # only the shape of z is read from here on: its memory freed now
                        # for the next layers' outputs and the δ (the benchmark CNN's
                        # passes ended with 32 MB in use, not 50.6)
                        acts[q:] = [acts[q].new_empty(()).expand(acts[q].shape)] * (p - q + 1)
                    pooled = a
                continue
            # a pooled chain's coefficients are taken at the pooled size once the argmax is
            # known, from its inputs, unless the layer overwrites its input (inplace)
            pooled_later = q is not None and j < p and not getattr(m, "inplace", False)
            if isinstance(m, ELEMENTWISE) and not pooled_later:
                cache[j] = activation_derivatives(m, a)    # before m runs: it may act in place
            elif isinstance(m, PLAIN_BN_TYPES) and not pooled_later:
                cache[j] = batchnorm_primal(m, a)
            if isinstance(m, _MAXPOOL):
                a, cache[j] = max_pool_with_indices(m, a, contiguous=False)
                pooled = a
            elif j in self.pooled_convs and a.device.type == "cpu" and a.dim() == 4:
                a = m(channels_last(a) if cl is None else cl)
            else:
                a = m(a)
            if isinstance(m, _WEIGHTED):
                width += a[0].numel() if a.dim() > 1 else 1
        self._relu_masks(cache, masks, a)
        self.width = max(width, 1)
        with torch.enable_grad():
            o = a.detach().requires_grad_(True)
            g_out = torch.autograd.grad(loss_fn(o, y), o, create_graph=True)[0]
        cache["softmax"] = cross_entropy_probabilities(loss_fn, o, y)
        cache["patches"] = (first, None if per_sample else
                            input_patches(self.layers[first], acts[first]))
        cache["pooled_patches"] = (first, None)     # made by ``keep``
        cache["columns"] = (first, data_columns(self.layers[first], acts[first]))
        for start, pool in self.chains.items():       # the chains' coefficients at the argmax
            if start in self.relu_chains:
                continue                               # made with the pooling
            z = None          # the current layer's input at the argmax, when already made
            for j in range(start, pool):
                m = self.layers[j]
                if j not in cache:
                    # one gather per chain: the layers act elementwise, so each next input at
                    # the argmax is this layer applied to its input there (pooled size)
                    z = _gather_one(acts[j], cache[pool]) if z is None else z
                    cache["pooled", j] = (batchnorm_primal(m, z) if isinstance(m, PLAIN_BN_TYPES)
                                          else activation_derivatives(m, z))
                    z = m(z) if j + 1 < pool else None
                    continue
                z = None      # made before an inplace layer ran: gather those coefficients
                if isinstance(m, PLAIN_BN_TYPES):
                    cache["pooled", j] = (_gather_one(cache[j][0], cache[pool]), cache[j][1])
                else:
                    cache["pooled", j] = tuple(None if t is None else _gather_one(t, cache[pool])
                                               for t in cache[j])
        return acts, cache, o, g_out

    def _relu_masks(self, cache: dict, chain, out: Tensor) -> None:
        """relu' of the ReLU layers ``chain`` at the pooled size from the chain's output: one
        mask for all of them (a ReLU of a ReLU has the same positive entries)."""
        for i in chain:
            cache["pooled", i] = cache["pooled", chain[0]] if i > chain[0] else \
                activation_derivatives(self.layers[i], out)

    def keep(self, prep: tuple) -> tuple:
        """``prep`` with what pays only when a preparation serves many products (an operator's
        kept single batch): the first convolution's patches at its max pooling's argmax."""
        cache = prep[1]
        first, patches = cache["patches"]
        if first in self.pooled_convs:
            pool = self.chains.get(first + 1, first + 1)
            cache["pooled_patches"] = (first, pooled_patches(patches, cache[pool]))
        return prep

    # ---- layers bilinear in (input, weight) ---------------------------------------------------
    @classmethod
    def weighted(cls, layer: nn.Module, a, d1, d2, slices, m: Tensor, hessian: bool,
                 out_shape, c, patches: Tensor | None = None, columns: tuple | None = None,
                 pooled: Tensor | None = None):
        """(z', z'') of a weighted layer (linear, convolution, eval batch norm with its
        cached (x̂, r) c) along the probe block m, given its input's (a', a''); with
        ``pooled`` (:func:`pooled_patches`) z' at the next max pooling's argmax."""
        k = m.shape[1]
        vw, vb = param_rows(slices, layer.weight, m), param_rows(slices, layer.bias, m)
        if isinstance(layer, nn.Linear):
            return cls._linear(layer, a, d1, d2, vw, vb, k, hessian, columns)
        if isinstance(layer, _CONV):
            if pooled is not None:
                return cls._pooled_conv(pooled, vw, vb, k), None
            return cls._conv(layer, a, d1, d2, vw, vb, k, hessian, out_shape, patches)
        return cls._batchnorm(c, d1, d2, vw, vb, k, hessian, layer)

    @staticmethod
    def _linear(layer: nn.Linear, a, d1, d2, vw, vb, k: int, hessian: bool,
                columns: tuple | None = None):
        w = layer.weight.detach()
        n1 = None if d1 is None else d1 @ w.T
        if vw is not None:
            out = vw.shape[1]
            # a Vᵀ for all k probes in one GEMM: (..., in) @ (in, k·out)
            v = vw.reshape(k * out, -1)
            if columns is not None:     # the data without its all-zero columns
                kept, a_kept = columns
                av = (a_kept @ v.index_select(1, kept).T).reshape(len(a), k, out)
            else:
                av = (a @ v.T).reshape(*a.shape[:-1], k, out)
            n1 = _add(n1, av.movedim(-2, 0))
        if vb is not None:
            c = vb.reshape(k, *([1] * (a.dim() - 1)), -1)
            n1 = c.expand(k, *a.shape[:-1], c.shape[-1]) if n1 is None else n1 + c
        n2 = None
        if hessian:
            if d2 is not None:
                n2 = d2 @ w.T
            if d1 is not None and vw is not None:
                vwt = vw.transpose(-1, -2).reshape(k, *([1] * (a.dim() - 2)), *vw.shape[:0:-1])
                n2 = _add(n2, 2 * (d1 @ vwt))
        return n1, n2

    @staticmethod
    def _conv(layer: nn.Module, a, d1, d2, vw, vb, k: int, hessian: bool, out_shape,
              patches: Tensor | None = None):
        conv, g = _CONV_FN[type(layer)], layer.groups
        opts = (layer.stride, layer.padding, layer.dilation)
        w = layer.weight.detach()

        def with_weight(t):            # B(t, W) for (k, N, ...) tangents
            return _merged(lambda u: conv(u, w, None, *opts, g), t)

        def shared_input(x, v):        # B(x, V_j) for the k probes' weights, one call
            o, rest = v.shape[1], v.shape[2:]
            if patches is not None:    # V P_n against the data's cached patches
                z = torch.matmul(v.reshape(k * o, -1), patches)       # (N, k·C_out, L)
                z = z.unflatten(1, (k, o)).transpose(0, 1)            # a view for k = 1
                return z.reshape(k, x.shape[0], o, *out_shape[2:])
            wk = v.reshape(k, g, o // g, *rest).transpose(0, 1).reshape(k * o, *rest)
            z = conv(x, wk, None, *opts, g)                    # channels (g, k, o/g)
            z = z.unflatten(1, (g, k, o // g)).transpose(1, 2).flatten(2, 3)
            return z.movedim(1, 0)

        def paired(t, v):              # B(t_j, V_j) for each probe j: grouped by probe
            o, rest = v.shape[1], v.shape[2:]
            z = conv(t.transpose(0, 1).flatten(1, 2), v.reshape(k * o, *rest), None, *opts,
                     g * k)
            return z.unflatten(1, (k, o)).movedim(1, 0)

        n1 = None if d1 is None else with_weight(d1)
        if vw is not None:          # n1 is fresh: add in place (no new page-faulted buffer)
            n1 = shared_input(a, vw) if n1 is None else n1.add_(shared_input(a, vw))
        if vb is not None:
            c = vb.reshape(k, 1, -1, *([1] * (a.dim() - 2)))
            n1 = c.expand(k, *out_shape) if n1 is None else n1.add_(c)
        n2 = None
        if hessian:
            if d2 is not None:
                n2 = with_weight(d2)
            if d1 is not None and vw is not None:
                n2 = _add(n2, 2 * paired(d1, vw))
        return n1, n2

    @staticmethod
    def _pooled_conv(pooled: Tensor, vw, vb, k: int) -> Tensor | None:
        """z' of a first convolution on the data at its max pooling's argmax: V_c P_{n,c,l}
        per output channel c, one batched GEMM over the channels (pooled: (C_out, C_in·k_h·k_w,
        N, *out)); its input's tangent is zero, so z'' is too."""
        c_out, width, n, *out = pooled.shape
        z = None
        if vw is not None:
            v = vw.reshape(k, c_out, width).transpose(0, 1)               # (C_out, k, W)
            z = torch.bmm(v, pooled.view(c_out, width, -1)).view(c_out, k, n, *out)
            z = z.permute(1, 2, 0, *range(3, 3 + len(out)))               # (k, N, C_out, *out)
        if vb is not None:
            c = vb.reshape(k, 1, c_out, *([1] * len(out)))
            z = c.expand(k, n, c_out, *out) if z is None else z + c
        return z

    @staticmethod
    def _batchnorm(cache, d1, d2, vw, vb, k: int, hessian: bool, layer):
        xhat, r = cache
        shape = (k, 1, -1) + (1,) * (xhat.dim() - 2)
        gamma = layer.weight.detach() if layer.weight is not None else None
        scale = r if gamma is None else r * gamma.reshape(r.shape)
        n1 = None if d1 is None else d1 * scale
        if vw is not None:
            n1 = xhat * vw.reshape(shape) if n1 is None else n1.addcmul_(xhat, vw.reshape(shape))
        if vb is not None:
            c = vb.reshape(shape)
            n1 = (c * torch.ones_like(xhat)) if n1 is None else n1.add_(c)
        n2 = None
        if hessian:
            if d2 is not None:
                n2 = d2 * scale
            if d1 is not None and vw is not None:
                n2 = _add(n2, 2 * d1 * (r * vw.reshape(shape)))
        return n1, n2

    def propagate(self, prep: tuple, m: Tensor, *, hessian: bool,
                  inputs: list | None = None) -> tuple[Tensor | None, Tensor | None]:
        """(k, N, ...) first and (``hessian``) second derivatives of the outputs along the
        columns of m; ``inputs`` collects each layer's input tangent (None where zero)."""
        acts, cache, o, _ = prep
        d1 = d2 = None           # (k, N, ...) derivatives of the current activation
        pooled_at = self.pooled_data_conv(cache)    # that pooling's gather is already made
        for j, layer in enumerate(self.layers):
            q, p = self.chain_of.get(j, (None, None))
            if j == q and p != pooled_at:   # gather first; the chain runs at pooled size
                d1, d2 = (None if t is None else _gather_pool(t, cache[p]) for t in (d1, d2))
            if inputs is not None:
                inputs.append(d1)
            if j == p:
                continue          # already gathered
            a = acts[j]
            c = cache["pooled", j] if q is not None else cache.get(j)
            if isinstance(layer, _WEIGHTED):
                out = (acts[j + 1] if j + 1 < len(acts) else o).shape
                d1, d2 = self.weighted(layer, a, d1, d2, self.slices, m, hessian, out, c,
                                       *data_forms(cache, j))
            elif d1 is None:
                continue          # the tangents are still zero
            elif isinstance(layer, ELEMENTWISE):
                d1, d2 = elementwise_tangents(c, d1, d2, hessian)
            elif isinstance(layer, _MAXPOOL):
                if j != pooled_at:
                    d1, d2 = (None if t is None else _gather_pool(t, c) for t in (d1, d2))
            elif isinstance(layer, _LINEAR_POOL):
                d1, d2 = (None if t is None else _merged(layer, t) for t in (d1, d2))
            else:                # Identity, Flatten, Dropout (identity here)
                d1, d2 = (None if t is None else torch.vmap(layer)(t) for t in (d1, d2))
        return d1, d2

    def pooled_data_conv(self, cache: dict) -> int | None:
        """The max pooling at whose argmax the first convolution's tangents and adjoints are
        made directly (a preparation with :func:`pooled_patches`), or None."""
        first, pooled = cache["pooled_patches"]
        return None if pooled is None else self.chains.get(first + 1, first + 1)

    def second_derivatives(self, prep: tuple, m: Tensor, *, hessian: bool) -> Tensor:
        """(k,) values of d²/dt² L(θ + t v_j) (``hessian``) or of v_jᵀ G v_j (GGN) for the
        columns v_j of m."""
        d1, d2 = self.propagate(prep, m, hessian=hessian)
        return quadratic_values(prep[1], prep[2], prep[3], d1, d2, m, hessian=hessian)


def elementwise_tangents(c: tuple, d1: Tensor, d2: Tensor | None, hessian: bool):
    """(h', h'') of h = σ(z) from (z', z''): σ' z' and σ'' z'² + σ' z'' (c: σ', σ'' or None)."""
    s1, s2 = c
    n2 = None
    if hessian:
        if s2 is not None:
            n2 = s2 * d1 * d1
        if d2 is not None:
            n2 = _add(n2, s1 * d2)
    return s1 * d1, n2


def quadratic_values(cache: dict, o: Tensor, g_out: Tensor, d1: Tensor | None,
                     d2: Tensor | None, m: Tensor, *, hessian: bool) -> Tensor:
    """(k,) values f'ᵀ ∇²ℓ f' (+ ∇ℓᵀ f'' with ``hessian``) from the outputs' first and second
    derivatives d1, d2 along the k columns of m (None where zero)."""
    k = m.shape[1]
    if d1 is None:
        return m.new_zeros(k)
    dims = tuple(range(1, d1.dim()))
    vals = m.new_zeros(k, dtype=torch.float64)   # the last reductions in float64 (cheap)
    if g_out.requires_grad:
        vals = vals + (d1 * output_hessian_products(g_out, o, d1, cache)).sum(
            dims, dtype=torch.float64)
    if hessian and d2 is not None:
        vals = vals + (g_out.detach() * d2).sum(dims, dtype=torch.float64)
    return vals.detach().to(m.dtype)


def cross_entropy_probabilities(loss_fn, o: Tensor, y: Tensor) -> Tensor | None:
    """softmax(o) when ``loss_fn`` is the plain mean cross-entropy of (N, C) logits against
    class indices, else None. Its Hessian in the logits is then (diag p_i − p_i p_iᵀ) / N per
    sample (label smoothing does not change it: the smoothed targets still sum to 1)."""
    if not (loss_fn is F.cross_entropy or (torch_loss_class(loss_fn) is nn.CrossEntropyLoss
                                           and loss_fn.weight is None
                                           and loss_fn.reduction == "mean")):
        return None
    if (o.dim() != 2 or y.dim() != 1 or y.is_floating_point()
            or bool((y == ignored_target(loss_fn)).any())):    # accuracy's rule
        return None
    return torch.softmax(o.detach(), dim=-1)


def output_hessian_products(g_out: Tensor, o: Tensor, t: Tensor, cache: dict) -> Tensor:
    """∇²ℓ t_j for (k, N, ...) output tangents t: in closed form for plain cross-entropy
    (``cache["softmax"]``), else by a batched backward through the loss' gradient graph
    ``g_out`` = ∇ℓ(o)."""
    p = cache.get("softmax")
    if p is not None:
        pt = p * t
        return pt.sub_(p * pt.sum(-1, keepdim=True)).div_(p.shape[0])
    if not g_out.requires_grad:     # a loss linear in the outputs: ∇ℓ is constant, ∇²ℓ = 0
        return torch.zeros_like(t)
    try:
        return torch.autograd.grad(g_out, o, t, retain_graph=True, is_grads_batched=True)[0]
    except RuntimeError:     # loss without a batching rule: one backward per probe
        return torch.stack([torch.autograd.grad(g_out, o, u, retain_graph=True)[0] for u in t])


PATCH_BUDGET = 256 * 2**20      # bytes of cached patches of the data (first layer only)
ZERO_COLUMN_SHARE = 0.1          # data_columns: the least share of all-zero columns it drops
POOLED_PATCH_BUDGET = 256 * 2**20   # bytes of the patches at a max pooling's argmax


def conv_padding(layer: nn.Module) -> tuple | None:
    """A convolution's padding as numbers ("valid": zeros; "same" when symmetric), else None."""
    if not isinstance(layer.padding, str):
        return tuple(layer.padding)
    if layer.padding == "valid":
        return (0,) * len(layer.kernel_size)
    total = [d * (q - 1) for d, q in zip(layer.dilation, layer.kernel_size)]
    return None if any(t % 2 for t in total) else tuple(t // 2 for t in total)


def _conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_patches(a: Tensor, kernel_size, stride, padding, dilation, *,
                 out: Tensor | None = None) -> Tensor:
    """im2col of a 2-d convolution's input: (N, C·k_h·k_w, L), F.unfold's layout, as one copy
    of a strided view of the padded input (512 MNIST images, 3x3: 3.0 ms vs 4.6 ms for k_h·k_w
    strided copies and 13 ms for F.unfold; 512x8x14x14: 7.5 vs 17 ms), into ``out`` if
    given."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    n, c, h, w = a.shape
    oh, ow = (_conv_output_size(*args) for args in zip((h, w), kernel_size, stride, padding,
                                                       dilation))
    ap = F.pad(a, (pw, pw, ph, ph)) if ph or pw else a
    s0, s1, s2, s3 = ap.stride()
    windows = ap.as_strided((n, c, kh, kw, oh, ow),
                            (s0, s1, s2 * dh, s3 * dw, s2 * sh, s3 * sw), ap.storage_offset())
    if out is None:
        return windows.reshape(n, c * kh * kw, oh * ow)
    out.view(n, c, kh, kw, oh, ow).copy_(windows)
    return out


def input_patches(layer: nn.Module, a: Tensor) -> Tensor | None:
    """The (N, C_in·k_h·k_w, L) patches of the input (the data) of a first-layer ``nn.Conv2d``
    that is strided or has one input channel, or None (another layer, groups, over
    ``PATCH_BUDGET``). Why: oneDNN's weight gradient of such a convolution costs ~2-4 forward
    passes on CPU; against cached patches B(X, V) = V P_n and Σ_n ġ_n P_nᵀ are batched GEMMs
    (512 MNIST images, 1 -> 8 channels 3x3: 6 + 6 ms vs oneDNN's 8 + 21 ms; 2,000 images,
    5x5 stride 2: 23 + 23 ms vs 25 + 113 ms). With 3 input channels at stride 1 oneDNN was
    faster (11 + 12 ms vs 14 + 16 ms on 256 CIFAR images), so it keeps those."""
    pad = conv_padding(layer) if type(layer) is nn.Conv2d else None
    if (pad is None or layer.groups != 1 or a.dim() != 4
            or (a.shape[1] > 1 and all(s == 1 for s in layer.stride))):
        return None
    opts = (layer.kernel_size, layer.stride, pad, layer.dilation)
    positions = math.prod(_conv_output_size(*args) for args in zip(a.shape[2:], *opts))
    per_position = a.shape[1] * math.prod(layer.kernel_size) * a.element_size()
    if a.shape[0] * positions * per_position > PATCH_BUDGET:
        return None
    return conv_patches(a, *opts)


def data_forms(cache: dict, j: int) -> tuple:
    """(patches, columns, pooled patches) of the data cached by a preparation
    (``input_patches``, ``data_columns``, ``pooled_patches``) when layer j is the first weighted
    layer, else Nones."""
    return tuple(cache[key][1] if cache[key][0] == j else None
                 for key in ("patches", "columns", "pooled_patches"))


def pooled_patches(patches: Tensor | None, idx: Tensor) -> Tensor | None:
    """(C_out, C_in·k_h·k_w, N, *out): the data's patches (N, C_in·k_h·k_w, L) of a first
    convolution at the argmax idx (N, C_out, *out) of the max pooling after it, or None (no
    patches, or over ``POOLED_PATCH_BUDGET`` bytes). Why: the convolution's
    tangent is wanted only there, and its adjoint is zero elsewhere, so B(X, V) and
    Σ_n ġ_n P_nᵀ become one batched GEMM over the channels at the pooled size, without the
    full-size tangent, its gather, the adjoint's zero fill and scatter (512 MNIST images,
    1 -> 8 channels 3x3, 2x2 pooling: the reverse step 2.7 vs 6.4 ms)."""
    if patches is None:
        return None
    n, width, length = patches.shape
    c_out, out = idx.shape[1], idx.shape[2:]
    if c_out * width * n * math.prod(out) * patches.element_size() > POOLED_PATCH_BUDGET:
        return None
    # in this layout both directions are one batched GEMM along a long row (in the
    # (C_out, N·L', W) layout one of them is a GEMV with one probe, 3-7x slower)
    ix = idx.flatten(2).transpose(0, 1)[:, None].expand(c_out, width, n, -1)
    src = patches.transpose(0, 1)[None].expand(c_out, width, n, length)
    return src.gather(3, ix).view(c_out, width, n, *out)


def channels_last(a: Tensor) -> Tensor:
    """a (N, C, H, W) in channels-last layout; a view when C = 1 (the same memory order, but
    torch calls such strides contiguous and its convolutions would answer in NCHW)."""
    if a.shape[1] == 1 and a.is_contiguous():
        return a.as_strided(a.shape, (a.stride(0), 1, a.stride(2), 1))
    return a.contiguous(memory_format=torch.channels_last)


def data_columns(layer: nn.Module, a: Tensor) -> tuple[Tensor, Tensor] | None:
    """(kept, a[:, kept]) for a first ``nn.Linear`` layer whose data a (N, in) has at least
    ``ZERO_COLUMN_SHARE`` of its columns zero in every sample (kept: the others), else None.
    Why: those columns add nothing to X Vᵀ or to ġᵀ X, so both of the layer's GEMMs per
    product shrink by their share, exactly (1,024 MNIST images: 178 of 784 pixels are zero in
    all of them)."""
    if type(layer) is not nn.Linear or a.dim() != 2:
        return None
    kept = (a != 0).any(0).nonzero().squeeze(1)
    if len(kept) > (1 - ZERO_COLUMN_SHARE) * a.shape[1]:
        return None
    return kept, a.index_select(1, kept)


def max_pool_with_indices(m: nn.Module, a: Tensor, *, contiguous: bool = True,
                          contiguous_indices: bool = True) -> tuple[Tensor, Tensor]:
    """``m(a)`` and its argmax indices, as ``F.max_pool*d(..., return_indices=True)`` gives
    them (``contiguous=False``: the values may be left channels-last; ``contiguous_indices=
    False``: the indices too). Why not plainly: on CPU
    torch's NCHW max pooling is 2x slower than its channels-last kernel (512x8x28x28, 2x2: 26
    vs 15 ms with both conversions; 512x16x14x14: 14 vs 7 ms), which gives the same values and
    indices (both keep a window's first maximum in row-major order, NaN counting as the
    maximum)."""
    opts = (m.kernel_size, m.stride, m.padding, m.dilation)
    fn = _MAXPOOL_FN[type(m)]
    if a.dim() == 4 and a.device.type == "cpu":
        out, idx = fn(a.contiguous(memory_format=torch.channels_last), *opts,
                      ceil_mode=m.ceil_mode, return_indices=True)
        return ((out.contiguous() if contiguous else out),
                (idx.contiguous() if contiguous_indices else idx))
    return fn(a, *opts, ceil_mode=m.ceil_mode, return_indices=True)


def batchnorm_primal(m: nn.Module, a: Tensor) -> tuple[Tensor, Tensor]:
    """(x̂, r) of an eval-mode batch norm at its input a: x̂ = (a − μ) r, r = 1/√(σ² + ε)."""
    shape = (1, -1) + (1,) * (a.dim() - 2)
    r = torch.rsqrt(m.running_var + m.eps).reshape(shape)
    return (a - m.running_mean.reshape(shape)) * r, r


def pooled_chains(layers: list[nn.Module]) -> dict[int, int]:
    """{first layer: max-pool layer} for runs of elementwise activations and eval batch norm
    that end in a max pooling. Those layers act position by position, so they commute with
    the pooling's gather at the argmax: tangents and adjoints go through them at the pooled
    size (a quarter of the values for 2x2 pooling), their coefficients gathered once per
    batch. Overlapping windows are fine: every map in the chain is linear in the tangent or
    adjoint it carries, so the sums of the max pooling's transpose go through them too."""
    chains = {}
    for p, m in enumerate(layers):
        if isinstance(m, _MAXPOOL):
            q = p
            while q > 0 and isinstance(layers[q - 1], (*ELEMENTWISE, *PLAIN_BN_TYPES)):
                q -= 1
            if q < p:
                chains[q] = p
    return chains


def _gather_one(t: Tensor, idx: Tensor) -> Tensor:
    """t (N, C, *in) at the argmax idx (N, C, *out); a channels-last t is read in place."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
            memory_format=torch.channels_last):
        c = t.shape[1]
        channel = torch.arange(c, device=idx.device).view(1, c, 1)
        ix = (idx.flatten(2) * c + channel).flatten(1)
        return t.permute(0, 2, 3, 1).reshape(len(t), -1).gather(1, ix).view(idx.shape)
    return _gather_pool(t[None], idx)[0]


def _gather_pool(t: Tensor, idx: Tensor) -> Tensor:
    """Max pooling of (k, N, C, *in) tangents through the primal's argmax ``idx`` (N, C, *out)."""
    k = t.shape[0]
    src = t.flatten(3) if t.dim() > 3 else t
    ix = idx.flatten(2).unsqueeze(0).expand(k, -1, -1, -1)
    return src.gather(-1, ix).reshape(k, *idx.shape)


def activation_derivatives(act: nn.Module, z: Tensor) -> tuple[Tensor, Tensor | None]:
    """σ'(z) and σ''(z) (None where identically zero, e.g. ReLU) by autograd."""
    if type(act) is nn.ReLU:     # written as floats at once: 3x faster than bool, then cast
        return torch.gt(z, 0, out=torch.empty_like(z)), None
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        # an activation in place (nn.LeakyReLU(inplace=True)) may not write into a leaf
        # that requires grad: it gets a copy
        s1 = torch.autograd.grad(act(zz.clone() if getattr(act, "inplace", False) else zz)
                                 .sum(), zz, create_graph=True)[0]
        s2 = (torch.autograd.grad(s1.sum(), zz, allow_unused=True)[0]
              if s1.requires_grad else None)
    return s1.detach(), (None if s2 is None else s2.detach())


def single_batch_preparation(op, attr: str, prepare) -> tuple:
    """``prepare(x, y)`` on ``op``'s single batch, kept in ``op.<attr>`` with the parameters'
    and buffers' version counters: a parameter changed in place since (an optimizer step)
    makes a new one instead of mixing activations at the old parameters with the new weights,
    and so do batch norm's running statistics changed since (a train-mode forward,
    :func:`~sgdlab.measure.batch_norm.recompute_bn_statistics`), which an eval-mode batch
    norm's kept activations read. Counted after ``prepare``: a train-mode batch norm's own
    forward moves them (the operators put the values back, not the counters). Made without
    the model's gradient hooks, whoever asks first (the probe-memory estimate does, outside
    any product): an activation's backward hook changed its kept derivatives."""
    held = getattr(op, attr)
    if held is None or held[0] != state_versions(op.model):
        x, y = next(iterate_batches(op.data, op.device))
        with gradient_hooks_held(op.model):
            value = prepare(x, y)
        held = (state_versions(op.model), value)
        setattr(op, attr, held)
    return held[1]


def forward_preparation(op, prepare) -> tuple:
    """``prepare(x, y, loss_fn)`` (a forward preparation: ``SequentialTaylor.prepare``,
    ``GraphHVP.forward``) on ``op``'s single batch, kept in ``op._taylor_cache`` (shared by the
    Taylor quadratic forms, the probe-memory estimate and the R-op products)."""
    keep = getattr(op._taylor, "keep", None)       # SequentialTaylor's kept forms

    def made(x, y):
        prep = prepare(x, y, op.loss_fn)
        return prep if keep is None else keep(prep)

    return single_batch_preparation(op, "_taylor_cache", made)


def taylor_quadratic_forms(op, m: Tensor, *, hessian: bool) -> Tensor:
    """vᵀ A v for the columns v of ``m`` by ``op._taylor`` (A: the Hessian, or with
    ``hessian=False`` the GGN), over ``op.data`` with batches weighted by size; a single
    batch's Taylor preparation is kept in ``op._taylor_cache``."""
    if is_single_batch(op.data):
        return op._taylor.second_derivatives(forward_preparation(op, op._taylor.prepare), m,
                                             hessian=hessian)
    total, n = m.new_zeros(m.shape[1]), 0
    for x, y in iterate_batches(op.data, op.device):
        prep = op._taylor.prepare(x, y, op.loss_fn)
        total += op._taylor.second_derivatives(prep, m, hessian=hessian) * len(x)
        n += len(x)
    return total / n
