"""Hessian-vector products of the mean training loss over a model's trainable parameters.

``HessianOperator(model, loss_fn, data)`` is the d x d Hessian of
L(θ) = (1/N) Σ_i ℓ(x_i; θ) as a :class:`LinearOperator`. For ``nn.Sequential`` stacks of
linear, convolution, pooling, eval-mode batch-norm layers and elementwise activations the
products are Pearlmutter's R-op written out layer by layer (:mod:`sgdlab.operators.rop`);
other models that ``torch.fx`` traces into supported layers and ops (residual networks,
functional activations, reshapes) get the same R-op over their graph
(:mod:`sgdlab.operators.graph_rop`); ``rop=False`` turns both off. Other models: for a single
batch the gradient graph is built once
and reused by every matvec (one extra backward per product); for a DataLoader each product
streams over the batches without keeping their graphs. ``matmat`` applies k vectors in one
vmapped backward (``is_grads_batched``) per batch.

Hutchinson's samples vᵀ H v (``quadratic_forms``) need no H v: for ``nn.Sequential`` stacks of
linear, convolution, pooling, eval-mode batch-norm layers and elementwise activations they are
the second derivative of L(θ + t v) in t, propagated forward in Taylor mode
(:mod:`sgdlab.operators.taylor`): no backward pass at all; the same over a traced graph
(:class:`~sgdlab.operators.graph_rop.GraphTaylor`). Other models use (V ⊙ H V).sum(0).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import warn
from ..models.modes import BN_TYPES
from .batches import Data, bags_composed, is_single_batch
from .linear import ModelOperator
from .params import (UNUSED_ZERO, batched_columns, flatten, reaching_parameters,
                     unflatten_like)
from .graph_rop import GraphHVP, GraphTaylor
from .rop import SequentialHVP, rop_products
from .taylor import (SequentialTaylor, forward_preparation, global_forward_hooks,
                     single_batch_preparation, taylor_quadratic_forms)



def _affine(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    x = inputs[0]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = (x - module.running_mean.reshape(shape)) * torch.rsqrt(
        module.running_var.reshape(shape) + module.eps)
    if module.weight is not None:
        y = y * module.weight.reshape(shape)
    if module.bias is not None:
        y = y + module.bias.reshape(shape)
    return y


@contextlib.contextmanager
def affine_batchnorm(model: nn.Module) -> Iterator[None]:
    """Inside the block, eval-mode batch-norm layers build their autograd graph from elementwise
    ops, (x − μ)/√(σ² + ε)·γ + β with the running statistics: the same values, but a double
    backward through them costs a few elementwise ops, where autograd's batch-norm double
    backward (written for batch statistics) took ~25% of a Hessian-vector product on the
    benchmark CNN with BatchNorm2d. Layers with hooks of their own are left alone."""
    handles = []
    if not global_forward_hooks():
        for m in model.modules():
            if (isinstance(m, BN_TYPES) and not m.training
                    and m.running_mean is not None and not m._forward_hooks
                    and not m._forward_pre_hooks):
                handles.append(m.register_forward_hook(_affine))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _composed_weight_norm(v: Tensor, g: Tensor, dim: int) -> Tensor:
    """``torch._weight_norm(v, g, dim)`` in elementwise ops: g ⊙ v / ‖v‖ (norm over all
    dimensions but ``dim``, -1: the whole tensor)."""
    return v * (g / torch.norm_except_dim(v, 2, dim))


@contextlib.contextmanager
def composed_weight_norm(model: nn.Module) -> Iterator[None]:
    """Inside the block, weight-normed layers (``nn.utils.parametrizations.weight_norm`` and
    the older hook-based ``nn.utils.weight_norm``) compose their weight of elementwise ops:
    ``torch._weight_norm``'s double backward is wrong (torch 2.13: ∂²/∂v² 5.3 off on a 4 x 3
    weight, and the Hessian it gives is not symmetric), so every Hessian-vector product
    through it was."""
    from torch.nn.utils.parametrizations import _WeightNorm
    from torch.nn.utils.weight_norm import WeightNorm

    def parametrization(m, inputs, out) -> Tensor:        # inputs: (g, v)
        return _composed_weight_norm(inputs[1], inputs[0], m.dim)

    def pre_hook(norm):
        def hook(m, inputs) -> None:                      # after the layer's own pre-hook
            setattr(m, norm.name, _composed_weight_norm(getattr(m, norm.name + "_v"),
                                                        getattr(m, norm.name + "_g"),
                                                        norm.dim))
        return hook

    handles = []
    for m in model.modules():
        if isinstance(m, _WeightNorm):
            handles.append(m.register_forward_hook(parametrization))
        handles += [m.register_forward_pre_hook(pre_hook(h))
                    for h in list(m._forward_pre_hooks.values()) if isinstance(h, WeightNorm)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def second_order_forward(model: nn.Module) -> Iterator[None]:
    """A forward pass whose graph will be differentiated twice: eval-mode batch norm as
    elementwise ops (:func:`affine_batchnorm`), weight norm too (:func:`composed_weight_norm`,
    for correct second derivatives), and ``scaled_dot_product_attention``
    (``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``) on its math kernel, the only
    one with a double backward: the fused flash and memory-efficient kernels it picks
    otherwise have none, so every Hessian-vector product through them would fail; and
    ``nn.EmbeddingBag`` in plain ops (:func:`~sgdlab.operators.batches.bags_composed`).
    Every product that differentiates a model's graph twice (the Hessian's create_graph
    pass, the GGN's double vector-Jacobian product) builds it in here; first-order passes
    keep torch's fused ops, but for the vmapped per-sample gradients, which take the math
    kernel and the composed bags too, as vmap has no batching rule for torch's
    (:func:`~sgdlab.operators.per_sample.checked_per_sample_gradients`)."""
    with affine_batchnorm(model), composed_weight_norm(model), bags_composed(model), \
            sdpa_kernel([SDPBackend.MATH]):
        yield


class SecondOrderOperator(ModelOperator):
    """Base of :class:`HessianOperator` and the Gauss-Newton operator: R-op products and
    Taylor-mode quadratic forms where the model is supported, and otherwise backward passes
    through :meth:`_graph`, kept for a single batch."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        data: Data,
        *,
        cache_graph: bool = True,
        taylor: bool = True,
        rop: bool = True,
    ):
        from sgdlab.measure.passes import eager_module

        # a torch.compile'd model's products go through the module it wraps (the same
        # parameters and function): AOTAutograd, every backend but "eager", has no double
        # backward ("torch.compile with aot_autograd does not currently support double
        # backward"), and the R-op and Taylor passes need the eager layers
        model = eager_module(model)
        super().__init__(model, loss_fn, data)
        self._kw = dict(cache_graph=cache_graph, taylor=taylor, rop=rop)
        # (parameter versions, the single batch's graph), when kept
        self._cached_graph: tuple | None = None
        # Taylor-mode quadratic forms and R-op products (None when the model is neither a
        # supported Sequential nor a supported traced graph), over one forward pass
        self._taylor, self._rop = _taylor_and_rop(model, self.params, taylor, rop)
        self._taylor_cache = self._rop_cache = None
        if cache_graph and is_single_batch(data) and self._rop is None:
            self._kept_graph()

    def _graph(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        """What the products differentiate through, for the batch (x, y)."""
        raise NotImplementedError

    def _kept_graph(self) -> tuple[Tensor, ...]:
        """The single batch's :meth:`_graph`, kept, and made again when a parameter changed in
        place (an optimizer step): the kept one holds the old parameters' activations, and
        products through it were silently the old operator's where it saved none of the
        changed tensors (biases)."""
        def build(x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
            with self.fixed_randomness(0):
                return self._graph(x, y)
        return single_batch_preparation(self, "_cached_graph", build)

    def _options(self) -> dict:
        return dict(self._kw)

    def _probe_bytes(self) -> int:
        return _probe_bytes(self)


class HessianOperator(SecondOrderOperator):
    def _graph(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        """The gradient graph (created with ``create_graph``)."""
        with torch.enable_grad(), second_order_forward(self.model):
            loss = reaching_parameters(self.loss_fn(self.model(x), y))
            return torch.autograd.grad(loss, list(self.params.values()), create_graph=True,
                                       **UNUSED_ZERO)

    def _batch_hvp(self, grads: tuple[Tensor, ...], v: Tensor, retain: bool) -> Tensor:
        vs = list(unflatten_like(v, self.params).values())
        return flatten(_gradient_products(grads, self.params, vs, retain_graph=retain))

    def _batch_hmm(self, grads: tuple[Tensor, ...], m: Tensor, retain: bool) -> Tensor:
        """H M for (d, k) M: k products in one vmapped backward through a gradient graph."""
        vs = [t.movedim(-1, 0) for t in _unflatten_cols(m, self.params)]
        hv = _gradient_products(grads, self.params, vs, retain_graph=retain,
                                is_grads_batched=True)
        return batched_columns(hv, self.params.values(), m.shape[1])

    # False once a batched backward has failed on this model: blocks go column by column
    _batched_backward = True

    def _matmat(self, m: Tensor) -> Tensor:
        if self._rop is not None:
            return rop_products(self, m, gauss_newton=False)
        if m.shape[1] > 1 and self._batched_backward:
            try:
                return self._batched_matmat(m)
            except RuntimeError as e:
                # autograd's batched double backward has no working rule for some ops
                # (nn.GroupNorm: a shape mismatch); the columns below redo the whole block.
                # Not from inside this handler: its traceback would keep a batch's fixed
                # draw of randomness open
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            self._batched_backward = False
            warn(f"HessianOperator: a block product by one batched backward failed "
                          f"({reason}); products one column at a time", RuntimeWarning)
        return torch.stack([self._matvec(c) for c in m.T], dim=1)

    def _batched_matmat(self, m: Tensor) -> Tensor:
        """H M by one vmapped backward per batch."""
        if self._cached_graph is not None:
            return self._batch_hmm(self._kept_graph(), m, retain=True)
        total, n = torch.zeros_like(m), 0
        for x, y in self.batches():
            total += self._batch_hmm(self._graph(x, y), m, retain=False) * len(x)
            n += len(x)
        return total / n

    def _matvec(self, v: Tensor) -> Tensor:
        if self._rop is not None:
            return rop_products(self, v[:, None], gauss_newton=False)[:, 0]
        if self._cached_graph is not None:
            return self._batch_hvp(self._kept_graph(), v, retain=True).detach()
        total, n = torch.zeros_like(v), 0
        for x, y in self.batches():
            total += self._batch_hvp(self._graph(x, y), v, retain=False).detach() * len(x)
            n += len(x)
        return total / n

    def _quadratic_forms(self, m: Tensor) -> Tensor:
        if self._taylor is None:
            return super()._quadratic_forms(m)
        return taylor_quadratic_forms(self, m, hessian=True)


def _gradient_products(grads, params: dict[str, Tensor], vs: list[Tensor],
                       **kwargs) -> tuple[Tensor, ...]:
    """∇_θ Σ_j ⟨g_j, v_j⟩ for the gradient g = ∇_θ L (with its graph): H v. A gradient entry
    without a graph is constant in θ (a last layer's bias under a loss linear in the
    outputs) and adds no curvature; autograd refuses it as an output ("element 0 of tensors
    does not require grad"), so it is left out, and with none left H v = 0."""
    keep = [i for i, g in enumerate(grads) if g.requires_grad]
    if not keep:
        return tuple(torch.zeros_like(p) for p in params.values())
    return torch.autograd.grad([grads[i] for i in keep], list(params.values()),
                               [vs[i] for i in keep], **kwargs, **UNUSED_ZERO)


def _unflatten_cols(m: Tensor, like: dict[str, Tensor]) -> list[Tensor]:
    """Split the rows of a (d, k) matrix into tensors shaped (*param.shape, k)."""
    out, i = [], 0
    for t in like.values():
        n = t.numel()
        out.append(m[i : i + n].reshape(*t.shape, m.shape[1]))
        i += n
    return out


def _taylor_and_rop(model, params, taylor: bool, rop: bool):
    """One Taylor-mode pass for an operator's quadratic forms (``taylor``) and, on top of it,
    its R-op products (``rop``); each None when off or when the model is not supported."""
    seq = SequentialTaylor.build(model, params) if taylor or rop else None
    if seq is not None or not (taylor or rop):
        return (seq if taylor else None), (SequentialHVP.on(seq) if rop else None)
    graph = GraphHVP.build(model, params)    # not a plain Sequential: its traced graph
    if graph is None:
        return None, None
    return (GraphTaylor(graph) if taylor else None), (graph if rop else None)


def _probe_bytes(op) -> int:
    """Scratch memory per probe of a batched product: ~4 d-vectors, plus ~4 activations of
    every weighted layer per sample for Taylor mode (sizes known once the primal is run)."""
    item = torch.finfo(op.dtype).bits // 8
    if op._taylor is None:
        return item * 4 * op.shape[0]
    batch_size = None
    if is_single_batch(op.data):                # the widths are known after a primal pass
        forward_preparation(op, op._taylor.prepare)
        batch_size = len(op.data[0])
    return item * (4 * op.shape[0] + 4 * op._taylor.width * (batch_size or 256))
