"""Hessian-vector products of the mean training loss over a model's trainable parameters.

``HessianOperator(model, loss_fn, data)`` is the d x d Hessian of
L(θ) = (1/N) Σ_i ℓ(x_i; θ) as a :class:`LinearOperator`. For a single batch the gradient
graph is built once and reused by every matvec (one extra backward per product); for a
DataLoader each product streams over the batches without keeping their graphs. ``matmat``
applies k vectors in one vmapped backward (``is_grads_batched``) per batch.

Hutchinson's samples vᵀ H v (``quadratic_forms``) need no H v: for ``nn.Sequential`` stacks of
``nn.Linear`` and elementwise activations they are the second derivative of L(θ + t v) in t,
propagated forward in Taylor mode (:class:`_SequentialTaylor`): one tangent GEMM per layer
instead of the two GEMMs of a Hessian-vector product. Other models use (V ⊙ H V).sum(0).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .batches import Data, is_single_batch, iterate_batches
from .linear import ModelOperator
from .params import flatten, unflatten_like


class HessianOperator(ModelOperator):
    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        data: Data,
        *,
        cache_graph: bool = True,
        taylor: bool = True,
    ):
        super().__init__(model, loss_fn, data)
        self._kw = dict(cache_graph=cache_graph, taylor=taylor)
        self._cached_grad: tuple[Tensor, ...] | None = None
        self._batch_size = None
        if cache_graph and is_single_batch(data):
            x, y = next(iterate_batches(data, self.device))
            self._batch_size = len(x)
            loss = loss_fn(model(x), y)
            self._cached_grad = torch.autograd.grad(
                loss, list(self.params.values()), create_graph=True
            )
        # Taylor-mode quadratic forms (None when the model is not a supported Sequential)
        self._taylor = _SequentialTaylor.build(model, self.params) if taylor else None
        self._taylor_cache = None

    def _options(self) -> dict:
        return dict(self._kw)

    def _batch_hvp(self, grads: tuple[Tensor, ...], v: Tensor, retain: bool) -> Tensor:
        vs = list(unflatten_like(v, self.params).values())
        hv = torch.autograd.grad(grads, list(self.params.values()), vs, retain_graph=retain)
        return flatten(hv)

    def _batch_hmm(self, grads: tuple[Tensor, ...], m: Tensor, retain: bool) -> Tensor:
        """H M for (d, k) M: k products in one vmapped backward through a gradient graph."""
        vs = [t.movedim(-1, 0) for t in _unflatten_cols(m, self.params)]
        hv = torch.autograd.grad(grads, list(self.params.values()), vs,
                                 retain_graph=retain, is_grads_batched=True)
        return torch.cat([h.reshape(h.shape[0], -1) for h in hv], dim=1).T.detach()

    def _matmat(self, m: Tensor) -> Tensor:
        if m.shape[1] == 1:
            return self._matvec(m[:, 0])[:, None]
        if self._cached_grad is not None:
            return self._batch_hmm(self._cached_grad, m, retain=True)
        total, n = torch.zeros_like(m), 0
        for x, y in iterate_batches(self.data, self.device):
            with torch.enable_grad():
                loss = self.loss_fn(self.model(x), y)
                grads = torch.autograd.grad(loss, list(self.params.values()), create_graph=True)
                total += self._batch_hmm(grads, m, retain=False) * len(x)
            n += len(x)
        return total / n

    def _matvec(self, v: Tensor) -> Tensor:
        if self._cached_grad is not None:
            return self._batch_hvp(self._cached_grad, v, retain=True).detach()
        total, n = torch.zeros_like(v), 0
        for x, y in iterate_batches(self.data, self.device):
            with torch.enable_grad():
                loss = self.loss_fn(self.model(x), y)
                grads = torch.autograd.grad(loss, list(self.params.values()), create_graph=True)
                total += self._batch_hvp(grads, v, retain=False).detach() * len(x)
            n += len(x)
        return total / n

    def _quadratic_forms(self, m: Tensor) -> Tensor:
        if self._taylor is None:
            return super()._quadratic_forms(m)
        return _taylor_quadratic_forms(self, m, hessian=True)

    def _probe_bytes(self) -> int:
        item = torch.finfo(self.dtype).bits // 8
        act = self._taylor.width * (self._batch_size or 256) if self._taylor is not None else 0
        return item * (4 * self.shape[0] + 4 * act)


def _taylor_quadratic_forms(op, m: Tensor, *, hessian: bool) -> Tensor:
    """vᵀ A v for the columns v of ``m`` by ``op._taylor`` (A: the Hessian, or with
    ``hessian=False`` the GGN), over ``op.data`` with batches weighted by size; a single
    batch's Taylor preparation is kept in ``op._taylor_cache``."""
    if is_single_batch(op.data):
        if op._taylor_cache is None:
            x, y = next(iterate_batches(op.data, op.device))
            op._taylor_cache = op._taylor.prepare(x, y, op.loss_fn)
        return op._taylor.second_derivatives(op._taylor_cache, m, hessian=hessian)
    total, n = m.new_zeros(m.shape[1]), 0
    for x, y in iterate_batches(op.data, op.device):
        prep = op._taylor.prepare(x, y, op.loss_fn)
        total += op._taylor.second_derivatives(prep, m, hessian=hessian) * len(x)
        n += len(x)
    return total / n


def _unflatten_cols(m: Tensor, like: dict[str, Tensor]) -> list[Tensor]:
    """Split the rows of a (d, k) matrix into tensors shaped (*param.shape, k)."""
    out, i = [], 0
    for t in like.values():
        n = t.numel()
        out.append(m[i : i + n].reshape(*t.shape, m.shape[1]))
        i += n
    return out


# elementwise activations whose first and second derivatives are taken by autograd at z
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.GELU, nn.SiLU,
                nn.Softplus, nn.CELU, nn.SELU, nn.Mish, nn.Hardtanh, nn.ReLU6)
_PASS = (nn.Identity, nn.Flatten)


def _flat_layers(module: nn.Module) -> list[nn.Module] | None:
    """The layers of a (nested) plain ``nn.Sequential``, or None when not one."""
    from torch.nn.modules import module as _mod

    if (type(module).forward is not nn.Sequential.forward or module._forward_hooks
            or module._forward_pre_hooks or _mod._global_forward_hooks
            or _mod._global_forward_pre_hooks):
        return None
    out = []
    for m in module:
        if m._forward_hooks or m._forward_pre_hooks:
            return None
        if isinstance(m, nn.Sequential):
            sub = _flat_layers(m)
            if sub is None:
                return None
            out += sub
        elif type(m) in (nn.Linear, *_ELEMENTWISE, *_PASS) or (
                isinstance(m, nn.Dropout) and m.p == 0):
            out.append(m)
        else:
            return None
    return out


class _SequentialTaylor:
    """Second-order forward (Taylor) mode through Linear + elementwise layers.

    Along a direction v (k of them at once, leading dim), each layer carries the primal a, its
    first derivative a' and second derivative a'' in t of a(θ + t v):
    Linear  z = a Wᵀ + b:  z' = a' Wᵀ + a Vᵀ + c,   z'' = a'' Wᵀ + 2 a' Vᵀ;
    σ(z):   h' = σ'(z) z',  h'' = σ''(z) z'² + σ'(z) z''.
    The input is data (a' = a'' = 0), so the first layer costs one GEMM X V₁ᵀ per probe.
    With outputs f and the loss ℓ(f), d²/dt² ℓ = f'ᵀ ∇²ℓ f' + ∇ℓᵀ f'' (vᵀ H v) and the first
    term alone is vᵀ G v (the GGN).
    """

    def __init__(self, layers: list[nn.Module], slices: dict[int, tuple[int, int]], width: int):
        self.layers, self.slices, self.width = layers, slices, width

    @classmethod
    def build(cls, model: nn.Module, params: dict[str, Tensor]) -> "_SequentialTaylor | None":
        layers = _flat_layers(model)
        if layers is None or not any(isinstance(m, nn.Linear) for m in layers):
            return None
        offsets, i = {}, 0
        for p in params.values():
            offsets[id(p)] = (i, i + p.numel())
            i += p.numel()
        seen = set()
        for m in layers:
            if isinstance(m, nn.Linear):
                seen.update(id(p) for p in m.parameters())
        if not set(offsets) <= seen:     # a trainable parameter outside the supported layers
            return None
        width = sum(m.out_features for m in layers if isinstance(m, nn.Linear))
        return cls(layers, offsets, width)

    @torch.no_grad()
    def prepare(self, x: Tensor, y: Tensor, loss_fn) -> tuple:
        """Primal activations at every layer and the loss' output gradient graph."""
        acts, derivs, a = [], {}, x
        for j, m in enumerate(self.layers):
            acts.append(a)
            if isinstance(m, _ELEMENTWISE):      # before m runs: it may act in place
                derivs[j] = _activation_derivatives(m, a)
            a = m(a)
        with torch.enable_grad():
            o = a.detach().requires_grad_(True)
            g_out = torch.autograd.grad(loss_fn(o, y), o, create_graph=True)[0]
        return acts, derivs, o, g_out

    def _tangent(self, p: Tensor | None, m: Tensor) -> Tensor | None:
        """Rows of the (d, k) probe block for parameter p, shaped (k, *p.shape)."""
        if p is None or id(p) not in self.slices:
            return None
        i, j = self.slices[id(p)]
        return m[i:j].T.reshape(m.shape[1], *p.shape)

    def second_derivatives(self, prep: tuple, m: Tensor, *, hessian: bool) -> Tensor:
        """(k,) values of d²/dt² L(θ + t v_j) (``hessian``) or of v_jᵀ G v_j (GGN) for the
        columns v_j of m."""
        acts, derivs, o, g_out = prep
        k = m.shape[1]
        d1 = d2 = None           # (k, N, ...) derivatives of the current activation
        for j, layer in enumerate(self.layers):
            a = acts[j]
            if isinstance(layer, nn.Linear):
                vw = self._tangent(layer.weight, m)
                vb = self._tangent(layer.bias, m)
                w = layer.weight.detach()
                n1 = None if d1 is None else d1 @ w.T
                if vw is not None:
                    out = vw.shape[1]
                    # a Vᵀ for all k probes in one GEMM: (..., in) @ (in, k·out)
                    av = (a @ vw.reshape(k * out, -1).T).reshape(*a.shape[:-1], k, out)
                    av = av.movedim(-2, 0)
                    n1 = av if n1 is None else n1 + av
                if vb is not None:
                    c = vb.reshape(k, *([1] * (a.dim() - 1)), -1)
                    n1 = c.expand(k, *a.shape[:-1], c.shape[-1]) if n1 is None else n1 + c
                n2 = None
                if hessian:
                    if d2 is not None:
                        n2 = d2 @ w.T
                    if d1 is not None and vw is not None:
                        vwt = vw.transpose(-1, -2).reshape(k, *([1] * (a.dim() - 2)),
                                                           *vw.shape[:0:-1])
                        cross = 2 * (d1 @ vwt)
                        n2 = cross if n2 is None else n2 + cross
                d1, d2 = n1, n2
            elif j in derivs:
                s1, s2 = derivs[j]
                if d1 is None:
                    continue
                n2 = None
                if hessian:
                    if s2 is not None:
                        n2 = s2 * d1 * d1
                    if d2 is not None:
                        n2 = s1 * d2 if n2 is None else n2 + s1 * d2
                d1, d2 = s1 * d1, n2
            else:                # Identity, Flatten, Dropout(0)
                if d1 is not None:
                    d1 = torch.vmap(layer)(d1)
                if d2 is not None:
                    d2 = torch.vmap(layer)(d2)
        if d1 is None:
            return m.new_zeros(k)
        dims = tuple(range(1, d1.dim()))
        vals = m.new_zeros(k, dtype=torch.float64)   # the last reductions in float64 (cheap)
        if g_out.requires_grad:
            try:
                hd1 = torch.autograd.grad(g_out, o, d1, retain_graph=True,
                                          is_grads_batched=True)[0]
            except RuntimeError:     # loss without a batching rule: one backward per probe
                hd1 = torch.stack([torch.autograd.grad(g_out, o, t, retain_graph=True)[0]
                                   for t in d1])
            vals = vals + (d1 * hd1).sum(dims, dtype=torch.float64)
        if hessian and d2 is not None:
            vals = vals + (g_out.detach() * d2).sum(dims, dtype=torch.float64)
        return vals.detach().to(m.dtype)


def _activation_derivatives(act: nn.Module, z: Tensor) -> tuple[Tensor, Tensor | None]:
    """σ'(z) and σ''(z) (None where identically zero, e.g. ReLU) by autograd."""
    if type(act) is nn.ReLU:
        return (z > 0).to(z.dtype), None
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        s1 = torch.autograd.grad(act(zz).sum(), zz, create_graph=True)[0]
        s2 = (torch.autograd.grad(s1.sum(), zz, allow_unused=True)[0]
              if s1.requires_grad else None)
    return s1.detach(), (None if s2 is None else s2.detach())
