"""The generalised Gauss–Newton operator G = Jᵀ H_out J of the mean loss.

With f(θ) the model outputs on a batch and L(f) the (mean-reduced) loss as a function of the
outputs, G = J_θ f(θ)ᵀ · ∇²_f L · J_θ f(θ); averaged over the samples of ``data`` this is
(1/N) Σ_i J_iᵀ ∇²ℓ_i J_i, the Hessian with the second-order model term dropped. It is positive
semi-definite for losses convex in the outputs (cross-entropy, MSE) and equals the Fisher
information for those losses (canonical link). A matvec is one Jacobian-vector product J v (by the
double-vjp trick through the cached output graph: two backward passes, no forward-mode AD),
the output-space Hessian H_out (J v) by double backward through the loss only (cheap, outputs
are small), and one vector-Jacobian product Jᵀ w through the cached output graph. Works for
any ``loss_fn(outputs, targets)``; no closed form per loss is needed. ``matmat`` does the three
products for k vectors in one vmapped backward each; ``quadratic_forms`` (vᵀ G v, Hutchinson)
needs only J v, by a forward tangent pass for ``nn.Sequential`` MLPs and conv nets. For those
models products are a forward tangent pass, the output Hessian and one reverse pass written
out layer by layer (:mod:`sgdlab.operators.rop`, ``rop=False`` turns it off).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from sgdlab.accuracy import ignored_target
from sgdlab.errors import UserError, warn
from sgdlab.loss_settings import loss_name

from .batches import _first_samples, _probe_forward
from .hessian import SecondOrderOperator, _unflatten_cols, second_order_forward
from .taylor import taylor_quadratic_forms
from .rop import rop_products
from .params import (UNUSED_ZERO, batched_columns, flatten, reaching_parameters,
                     unflatten_like)


class OutputNotTensor(UserError):
    """:func:`check_tensor_output`'s refusal; ``keyword`` is how the caller asks for the
    Hessian instead (a measurement whose keyword is another raises it again naming its own)."""

    def __init__(self, who: str, kind: str, keyword: str = "operator='hessian'"):
        self.who, self.kind, self.keyword = who, kind, keyword
        super().__init__(
            f"{who} needs the model's output as one tensor (the outputs f of G = Jᵀ ∇²_f L J); "
            f"the model returned a {kind}. Measure a module whose forward returns the tensor "
            f"loss_fn takes, or the Hessian ({keyword}), which takes any output loss_fn "
            "accepts")

    def __reduce__(self):
        # pickled (a process pool's worker), rebuilt from its own arguments, not the message
        return type(self), (self.who, self.kind, self.keyword)


def check_tensor_output(out: object, who: str) -> None:
    """A ``UserError`` for a model output that is not one tensor (a tuple, a dict): the
    Gauss-Newton matrix Jᵀ ∇²_f L J needs the outputs f the loss is differentiated in, and the
    Jacobian J of them."""
    if not isinstance(out, Tensor):
        raise OutputNotTensor(who, type(out).__name__)


def check_output_is_tensor(model: nn.Module, x: Tensor, who: str, keyword: str) -> None:
    """:class:`OutputNotTensor` (``who`` needs one output tensor, ``keyword`` asks for the
    Hessian) when ``model``'s output on the inputs ``x`` (a few samples, one no-grad,
    eval-mode pass) is no tensor: a training callback checks before step 0 what its first
    measurement would refuse (a tuple output met after hours of training). A model that
    fails on ``x`` is left to the measurement's own pass."""
    param = next(model.parameters(), None)
    try:
        out = _probe_forward(model, x if param is None else x.to(param.device))
    except Exception:
        return
    if not isinstance(out, Tensor):
        raise OutputNotTensor(who, type(out).__name__, keyword)


# losses linear in the outputs only away from zero residuals: a zero Hessian on the first
# samples says nothing of the others'
_CURVED_NEAR_ZERO = frozenset({"HuberLoss", "SmoothL1Loss", "huber_loss", "smooth_l1_loss"})


def warn_zero_output_curvature(model: nn.Module, loss_fn, data, who: str) -> None:
    """A warning where ``loss_fn`` is linear in the model's outputs on the data's first
    samples whose targets it counts (∇²_f L = 0), so that G = Jᵀ ∇²_f L J is zero, which
    every product then gives without a word: a model ending in ``log_softmax`` under
    ``NLLLoss`` (the cross-entropy whose GGN is that of the logits), ``L1Loss``. One no-grad,
    eval-mode forward pass of those samples; a model or loss that fails on them is left to
    the measurement."""
    if loss_name(loss_fn) in _CURVED_NEAR_ZERO:
        return
    first = _first_samples(data)
    param = next(model.parameters(), None)
    # no samples (an empty batch): the products' pass over the data says so, by name
    if first is None or param is None or not len(first[1]):
        return
    x, y = first[0].to(param.device), first[1].to(param.device)
    ignore = ignored_target(loss_fn)
    if ignore is not None and not y.is_floating_point():
        # a sample whose targets are all ignored adds no loss, curved or not (and a mean over
        # none is 0/0): the others are probed
        counted = (y != ignore).reshape(len(y), -1).any(1)
        x, y = x[counted], y[counted]
    if not len(x):
        return
    try:
        out = _probe_forward(model, x)
        if not isinstance(out, Tensor) or not out.is_floating_point():
            return
        o = out.detach().requires_grad_(True)
        # ∇²_f L v for a random v: zero only where ∇²_f L is (NLLLoss's double backward
        # keeps a graph whose products are all zero)
        v = torch.randn(o.shape, generator=torch.Generator().manual_seed(0),
                        dtype=o.dtype).to(o.device)
        # no catch_warnings: leaving it resets the filters' registries, and this warning,
        # once per call site, came again at every measurement of a training run
        with torch.enable_grad():
            g = torch.autograd.grad(loss_fn(o, y), o, create_graph=True, allow_unused=True)[0]
            hv = None if g is None or not g.requires_grad else \
                torch.autograd.grad(g, o, v, allow_unused=True)[0]
    except Exception:
        return
    if hv is not None and not bool(torch.isfinite(hv).all()):
        return      # a loss undefined on these samples (class weights of 0) shows no curvature
    if hv is None or not bool(hv.abs().max() > 0):
        warn(
            f"{who}: {loss_name(loss_fn)} is linear in the model's outputs (on the data's "
            "first samples its Hessian in them, ∇²_f L, is zero), so the Gauss-Newton matrix "
            "G = Jᵀ ∇²_f L J is zero. A model that ends in log_softmax under NLLLoss: give "
            "the GGN the logits (the model without its last log_softmax, under "
            "nn.CrossEntropyLoss: the same loss); or measure the Hessian")


class GGNOperator(SecondOrderOperator):
    """G = Jᵀ ∇²_f L J over ``data`` (mean over samples, batches weighted by size); a loss
    linear in the outputs (``NLLLoss`` of log-probabilities) makes it zero, with a warning
    (:func:`warn_zero_output_curvature`)."""

    def __init__(self, model, loss_fn, data, **kw):
        super().__init__(model, loss_fn, data, **kw)
        warn_zero_output_curvature(self.model, loss_fn, data, "GGNOperator")

    def _graph(self, x: Tensor, y: Tensor) -> tuple:
        """(x, y, out, o, g_out): the outputs' graph ``out``, and the loss's gradient g_out in
        the outputs o (detached from it), with its graph, for the output-space Hessian."""
        with torch.enable_grad():
            with second_order_forward(self.model):
                out = self.model(x)
            check_tensor_output(out, "GGNOperator")
            reaching_parameters(out, "the model's output")
            o = out.detach().requires_grad_(True)
            g_out = torch.autograd.grad(self.loss_fn(o, y), o, create_graph=True)[0]
        return x, y, out, o, g_out

    def _batch_ggn(self, x, y, out, o, g_out, v: Tensor, retain: bool) -> Tensor:
        if not g_out.requires_grad:    # a loss linear in the outputs: ∇²_f L = 0, so G = 0
            return torch.zeros_like(v)
        params = list(self.params.values())
        vs = list(unflatten_like(v, self.params).values())
        # J v by the double-vjp trick (reverse over reverse through the cached output graph):
        # Jᵀu is linear in u, and d/du ⟨Jᵀu, v⟩ = J v. Avoids forward-mode AD and a new forward.
        u = torch.zeros_like(out, requires_grad=True)
        with torch.enable_grad():
            jtu = torch.autograd.grad(out, params, u, create_graph=True, **UNUSED_ZERO)
        jv = torch.autograd.grad(jtu, u, vs)[0]
        hjv = torch.autograd.grad(g_out, o, jv, retain_graph=True)[0]
        w = torch.autograd.grad(out, params, hjv, retain_graph=retain, **UNUSED_ZERO)
        return flatten(w)

    def _batch_ggn_cols(self, x, y, out, o, g_out, m: Tensor, retain: bool) -> Tensor:
        """G M for (d, k) M: the three products of :meth:`_batch_ggn`, each one vmapped
        backward over the k columns (``is_grads_batched``)."""
        if not g_out.requires_grad:    # ∇²_f L = 0, as in _batch_ggn
            return torch.zeros_like(m)
        params = list(self.params.values())
        vs = [t.movedim(-1, 0) for t in _unflatten_cols(m, self.params)]
        u = torch.zeros_like(out, requires_grad=True)
        with torch.enable_grad():
            jtu = torch.autograd.grad(out, params, u, create_graph=True, **UNUSED_ZERO)
        jv = torch.autograd.grad(jtu, u, vs, is_grads_batched=True)[0]
        hjv = torch.autograd.grad(g_out, o, jv, retain_graph=True, is_grads_batched=True)[0]
        w = torch.autograd.grad(out, params, hjv, retain_graph=retain, is_grads_batched=True,
                                **UNUSED_ZERO)
        return batched_columns(w, params, m.shape[1])

    def _matvec(self, v: Tensor) -> Tensor:
        if self._rop is not None:
            return rop_products(self, v[:, None], gauss_newton=True)[:, 0]
        if self._cached_graph is not None:
            return self._batch_ggn(*self._kept_graph(), v, retain=True).detach()
        total, n = torch.zeros_like(v), 0
        for x, y in self.batches():
            total += self._batch_ggn(*self._graph(x, y), v, retain=False).detach() * len(x)
            n += len(x)
        return total / n

    def _matmat(self, m: Tensor) -> Tensor:
        if self._rop is not None:
            return rop_products(self, m, gauss_newton=True)
        if m.shape[1] == 1:
            return self._matvec(m[:, 0])[:, None]
        if self._cached_graph is not None:
            return self._batch_ggn_cols(*self._kept_graph(), m, retain=True)
        total, n = torch.zeros_like(m), 0
        for x, y in self.batches():
            total += self._batch_ggn_cols(*self._graph(x, y), m, retain=False) * len(x)
            n += len(x)
        return total / n

    def _quadratic_forms(self, m: Tensor) -> Tensor:
        """vᵀ G v = (J v)ᵀ ∇²_f L (J v): for an ``nn.Sequential`` MLP J v comes from a forward
        tangent pass (:mod:`sgdlab.operators.taylor`), no Jᵀ product."""
        if self._taylor is None:
            return super()._quadratic_forms(m)
        return taylor_quadratic_forms(self, m, hessian=False)
