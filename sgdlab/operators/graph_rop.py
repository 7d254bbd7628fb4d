"""Pearlmutter's R-op for networks that are not a plain ``nn.Sequential``: skip connections
(ResNets), functional activations, reshapes, slicing and padding, over the graph that
``torch.fx.symbolic_trace`` records.

The rules per layer are those of :mod:`sgdlab.operators.rop` (linear, convolution, eval batch
norm, elementwise activations, max pooling); what the graph adds:

- a node used by several others (the input of a residual block) sums their adjoints;
- ``x + y`` passes the adjoint to both (summed down to each one's shape when broadcast);
- an op affine in its single tensor input, with no parameters (slicing, padding, flatten,
  view / reshape, average pooling, a constant factor or offset), carries tangents by its
  linear part (the op itself, without the offset or the padding value) and adjoints by its
  vector-Jacobian product (``torch.func.vjp``, made once per batch), vmapped over the probes
  (not ``torch.func.jvp``: its first use compiles TorchScript decompositions for seconds);
- nodes whose value is not a tensor (``x.size(0)``) are constants.

Anything else (untraceable control flow, trainable parameters outside the supported modules,
``get_attr`` nodes, tensor attributes such as ``x.data``, batch norm or dropout in train mode,
several inputs or outputs, products of two tensors, an unknown function, an in-place op on a
tensor that other nodes read) makes
:meth:`GraphHVP.build` return None, and the operators keep autograd's double backward. No
pooled-run shortcut here: every activation works at full size.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import Node

from ..models.modes import PLAIN_BN_TYPES
from .linear import kept_running_statistics
from .params import param_slices
from .rop import layer_transpose, weighted_reverse
from .taylor import (_CONV, _MAXPOOL, _WEIGHTED, ELEMENTWISE, SequentialTaylor,
                     _gather_pool, _supported_layer, activation_derivatives, batchnorm_primal,
                     conv_padding, cross_entropy_probabilities, data_columns,
                     elementwise_tangents, global_forward_hooks, max_pool_with_indices,
                     output_hessian_products, quadratic_values)

_RELU = {F.relu, torch.relu, "relu"}
_SUB = {operator.sub, torch.sub, "sub"}
# functions and tensor methods acting elementwise on their first argument
_ELEMENTWISE_FN = _RELU | {torch.tanh, "tanh", F.tanh, torch.sigmoid, "sigmoid", F.sigmoid,
                           F.gelu, F.silu, F.elu, F.softplus, F.leaky_relu, F.relu6,
                           F.hardtanh, F.selu, F.celu, F.mish}
# functional max pooling: the module of the same arguments
_MAXPOOL_FN = {F.max_pool1d: nn.MaxPool1d, F.max_pool2d: nn.MaxPool2d,
               F.max_pool3d: nn.MaxPool3d}
# functions and methods affine in their one tensor argument (given the other arguments)
_AFFINE_FN = {operator.getitem, F.pad, torch.flatten, F.adaptive_avg_pool1d,
              F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.avg_pool1d, F.avg_pool2d,
              F.avg_pool3d, "flatten", "view", "reshape", "mean", "contiguous", "permute",
              "transpose", "squeeze", "unsqueeze", torch.squeeze, torch.unsqueeze, torch.mean,
              operator.mul, torch.mul, "mul", operator.truediv, "div", operator.neg} | _SUB
_ADD = {operator.add, torch.add, "add", operator.iadd}
_CONSTANT_FN = {"size", "dim", getattr}
_CONSTANT_ATTRS = {"shape", "ndim", "dtype", "device"}
_IN_PLACE = {operator.iadd}


def _tensor_arguments(node: Node, tensors: set) -> list[Node]:
    """The node's arguments (positional and keyword) that are tensors of the graph, each as
    often as it is passed (``all_input_nodes`` lists a node once)."""
    out: list[Node] = []
    torch.fx.node.map_arg((node.args, node.kwargs),
                          lambda a: out.append(a) if a in tensors else None)
    return out


def _function(node: Node):
    """The function or method name a node calls (None for modules and the rest)."""
    return node.target if node.op in ("call_function", "call_method") else None


class GraphHVP:
    """H v (k columns at once) over a traced graph (module docstring)."""

    def __init__(self, gm: torch.fx.GraphModule, slices: dict[int, tuple[int, int]]):
        self.gm, self.slices = gm, slices
        self.nodes = list(gm.graph.nodes)
        self.modules = dict(gm.named_modules())
        self.output = self.nodes[-1].args[0]
        # values per sample of the weighted layers' outputs (probe memory), after a forward
        self.width = 1

    @classmethod
    def build(cls, model: nn.Module, params: dict[str, Tensor]) -> "GraphHVP | None":
        """The R-op over ``model``'s traced graph, or None when it declines."""
        if global_forward_hooks() or any(m._forward_hooks or m._forward_pre_hooks
                                         for m in model.modules()):
            return None
        try:
            # tracing runs the modules' own code on real buffers: a running mean of one's own
            # (train mode) was moved by it
            with kept_running_statistics(model):
                gm = torch.fx.symbolic_trace(model)
        except Exception:        # control flow on tensors, unsupported constructs: decline
            return None
        modules = dict(gm.named_modules())
        owned, tensors = set(), set()
        nodes = list(gm.graph.nodes)
        if [n.op for n in nodes].count("placeholder") != 1 or nodes[-1].op != "output" \
                or not isinstance(nodes[-1].args[0], Node):
            return None
        for node in nodes[:-1]:
            ins = _tensor_arguments(node, tensors)
            if len(set(ins)) < len(ins):
                return None      # h * h, h + h: one tensor twice, not affine in it
            if node.op == "placeholder":
                tensors.add(node)
                continue
            if node.op == "call_module":
                m = modules[node.target]
                if not _supported_layer(m) or (isinstance(m, _CONV) and conv_padding(m) is None):
                    return None
                if isinstance(m, _WEIGHTED):
                    owned.update(id(p) for p in m.parameters())
                if getattr(m, "inplace", False) and len(node.args[0].users) > 1:
                    return None
                tensors.add(node)
                continue
            if node.op not in ("call_function", "call_method"):
                return None      # get_attr: parameters or buffers used outside modules
            t = node.target
            if t is getattr and node.args[1] not in _CONSTANT_ATTRS:
                return None      # x.data, x.T, ...: not a constant of the primal
            if t in _CONSTANT_FN or not ins:
                continue         # sizes, shapes, arithmetic on them
            if t in _ADD:
                ok = len(ins) in (1, 2)
            elif t in _MAXPOOL_FN:
                ok = len(ins) == 1 and not node.kwargs.get("return_indices", False) and not (
                    len(node.args) > 6 and node.args[6])
            elif t in _ELEMENTWISE_FN or t in _AFFINE_FN:
                # one tensor argument, and for a division it is the numerator
                ok = len(ins) == 1 and (t not in (operator.truediv, "div")
                                        or node.args[0] is ins[0])
            else:
                return None
            positional = len(node.args) > 1 and node.args[-1] is True and t in _ELEMENTWISE_FN
            if positional and t not in _RELU:
                return None      # f(x, ..., True) in place: its σ' would need a copy
            in_place = t in _IN_PLACE or node.kwargs.get("inplace", False) or positional
            if not ok or (in_place and len(node.args[0].users) > 1):
                return None
            tensors.add(node)
        slices = param_slices(params)
        if not slices or not set(slices) <= owned:
            return None
        return cls(gm, slices)

    # ---- the primal ---------------------------------------------------------------------------
    def _call(self, node: Node, env: dict, replace: dict | None = None, *,
              in_place: bool = True):
        """The node's op on the values in ``env`` (``replace``: other values for some inputs;
        ``in_place=False``: its out-of-place form)."""
        def value(a):
            if isinstance(a, Node):
                return replace[a] if replace and a in replace else env[a]
            return a
        args = torch.fx.node.map_aggregate(node.args, value)
        kwargs = torch.fx.node.map_aggregate(node.kwargs, value)
        target = node.target
        if not in_place:
            if "inplace" in kwargs:
                kwargs = {**kwargs, "inplace": False}
            if target in _IN_PLACE:
                target = operator.add
        if node.op == "call_module":
            return self.modules[target](*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        return target(*args, **kwargs)

    def _source(self, node: Node, env: dict) -> Node:
        """The node's one tensor input."""
        return next(a for a in node.all_input_nodes if isinstance(env[a], Tensor))

    def _of_source(self, node: Node, env: dict):
        """The node as a function of its one tensor input (the other arguments fixed), without
        acting in place."""
        src = self._source(node, env)
        return src, lambda t: self._call(node, env, {src: t}, in_place=False)

    def _linear_part(self, node: Node, env: dict, src: Node, fn):
        """The linear part of an affine node, as a function of its input's tangent."""
        t = _function(node)
        if t in _ADD:                       # x + c
            return lambda u: u
        if t in _SUB:                       # x - c or c - x
            return (lambda u: u) if node.args[0] is src else (lambda u: -u)
        if t is F.pad:                      # the padding value is an offset
            def pad(u):
                args = torch.fx.node.map_aggregate(
                    node.args[1:3], lambda a: env[a] if isinstance(a, Node) else a)
                kwargs = {k: v for k, v in node.kwargs.items() if k != "value"}
                return F.pad(u, *args, **kwargs)
            return pad
        return fn                           # linear: slicing, reshapes, pooling, factors

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor, loss_fn) -> tuple:
        """Primal values, what the products need at each node, and the loss' output gradient
        graph."""
        env, cache, kind = {}, {}, {}
        for node in self.nodes[:-1]:
            if node.op == "placeholder":
                env[node] = x
                continue
            m = self.modules.get(node.target) if node.op == "call_module" else None
            ins = [a for a in node.all_input_nodes if isinstance(env[a], Tensor)]
            if node.op == "call_module" and isinstance(m, _WEIGHTED):
                kind[node] = "weighted"
                if isinstance(m, PLAIN_BN_TYPES):
                    cache[node] = batchnorm_primal(m, env[node.args[0]])
            elif isinstance(m, ELEMENTWISE) or _function(node) in _ELEMENTWISE_FN:
                kind[node] = "elementwise"      # σ', σ'' before it runs: it may act in place
                if isinstance(m, ELEMENTWISE) or _function(node) in _RELU:
                    act = m if m is not None else nn.ReLU()
                else:
                    act = self._of_source(node, env)[1]
                cache[node] = activation_derivatives(act, env[ins[0]])
            elif isinstance(m, _MAXPOOL) or _function(node) in _MAXPOOL_FN:
                kind[node] = "maxpool"
                if m is None:                   # F.max_pool2d(x, ...): its module
                    args, kwargs = torch.fx.node.map_aggregate(
                        (node.args[1:], node.kwargs),
                        lambda a: env[a] if isinstance(a, Node) else a)
                    m = cache["module", node] = _MAXPOOL_FN[node.target](*args, **kwargs)
                env[node], cache[node] = max_pool_with_indices(m, env[node.args[0]])
                continue
            elif _function(node) in _ADD and len(ins) == 2:
                kind[node] = "add"
            elif ins:
                kind[node] = "affine"
            env[node] = self._call(node, env)
            if not isinstance(env[node], Tensor):
                kind.pop(node, None)            # x.size(0): a constant
        out = env[self.output]
        self.width = max(1, sum(env[n][0].numel() for n, t in kind.items() if t == "weighted"))
        with torch.enable_grad():
            o = out.detach().requires_grad_(True)
            g_out = torch.autograd.grad(loss_fn(o, y), o, create_graph=True)[0]
        cache["softmax"] = cross_entropy_probabilities(loss_fn, o, y)
        # the nodes downstream of a trainable parameter: only they carry tangents and adjoints
        live = set()
        for node in self.nodes[:-1]:
            if kind.get(node) == "weighted" and any(
                    id(p) in self.slices for p in self.modules[node.target].parameters()):
                live.add(node)
            elif node in kind and any(a in live for a in node.all_input_nodes):
                live.add(node)
        for node in live:
            if kind[node] == "affine":           # its linear part and vjp, once per batch
                src, fn = self._of_source(node, env)
                with torch.enable_grad():
                    cache[node] = (src, self._linear_part(node, env, src, fn),
                                   torch.func.vjp(fn, env[src])[1])
            elif kind[node] == "weighted" and node.args[0] not in live:   # on the data
                cache["columns", node] = data_columns(self.modules[node.target],
                                                      env[node.args[0]])
        cache["live"], cache["kind"] = live, kind
        return env, cache, o, g_out

    @torch.no_grad()
    def prepare(self, x: Tensor, y: Tensor, loss_fn, *, gradients: bool = True,
                forward: tuple | None = None) -> tuple:
        """The forward preparation (``forward``: when already made) plus each live node's
        output gradient g (not needed for Gauss–Newton products: ``gradients=False``)."""
        prep = self.forward(x, y, loss_fn) if forward is None else forward
        grads: dict[Node, Tensor] = {}
        if gradients:
            self._reverse(prep, prep[3].detach()[None], grads, self._transpose_with(prep))
        return prep + ({node: g[0] for node, g in grads.items()},)

    def _reverse(self, prep: tuple, t_out: Tensor, seen: dict, step) -> None:
        """Reverse sweep from the output's adjoint ``t_out``: each live node's adjoint (the sum
        over its users) into ``seen``; ``step(node, adjoint)`` gives [(input, its adjoint)]."""
        live = prep[1]["live"]
        adjoints = {self.output: t_out}
        for node in reversed(self.nodes[:-1]):
            t = adjoints.pop(node, None)
            if t is None or node not in live:
                continue
            seen[node] = t
            for src, u in step(node, t):
                if src in live and u is not None:
                    adjoints[src] = u if src not in adjoints else adjoints[src] + u

    def _transpose_with(self, prep: tuple):
        env, cache = prep[0], prep[1]

        def transpose(node: Node, t: Tensor) -> list:
            """[(input, Jᵀ t)] for the node's Jacobian in its tensor inputs at the primal."""
            kind = cache["kind"][node]
            if kind == "add":
                return [(a, _sum_to(t, env[a])) for a in node.all_input_nodes
                        if isinstance(env[a], Tensor)]
            if kind == "affine":
                src, _, vjp = cache[node]
                return [(src, torch.vmap(lambda u: vjp(u)[0])(t))]
            src = self._source(node, env)
            if kind == "elementwise":
                return [(src, cache[node][0] * t)]
            layer = cache.get(("module", node))
            layer = self.modules[node.target] if layer is None else layer
            return [(src, layer_transpose(layer, t, env[src], cache.get(node)))]
        return transpose

    # ---- products -----------------------------------------------------------------------------
    def _tangents(self, prep: tuple, m: Tensor, *, second: bool = False) -> tuple[dict, dict]:
        """(k, N, ...) first-order tangents of the live nodes along the columns of m and, with
        ``second``, their second derivatives (Taylor mode, :mod:`sgdlab.operators.taylor`);
        absent where zero."""
        env, cache = prep[0], prep[1]
        live, kinds = cache["live"], cache["kind"]
        first: dict[Node, Tensor] = {}
        again: dict[Node, Tensor] = {}
        for node in self.nodes[:-1]:
            if node not in live:
                continue
            kind = kinds[node]
            if kind == "add":
                for seen in (first, again):
                    ts = [seen[a] for a in node.all_input_nodes if a in seen]
                    if ts:
                        seen[node] = _broadcast_sum(ts, env[node].shape)
                continue
            src = cache[node][0] if kind == "affine" else self._source(node, env)
            d1, d2 = first.get(src), again.get(src)
            if kind == "weighted":
                d1, d2 = SequentialTaylor.weighted(self.modules[node.target], env[src], d1, d2,
                                                   self.slices, m, second, env[node].shape,
                                                   cache.get(node),
                                                   columns=cache.get(("columns", node)))
            elif d1 is None:
                continue
            elif kind == "elementwise":
                d1, d2 = elementwise_tangents(cache[node], d1, d2, second)
            elif kind == "maxpool":
                d1, d2 = (None if t is None else _gather_pool(t, cache[node]) for t in (d1, d2))
            else:
                d1, d2 = (None if t is None else torch.vmap(cache[node][1])(t) for t in (d1, d2))
            if d1 is not None:
                first[node] = d1
            if d2 is not None:
                again[node] = d2
        return first, again

    def second_derivatives(self, prep: tuple, m: Tensor, *, hessian: bool) -> Tensor:
        """(k,) values v_jᵀ H v_j (``hessian``) or v_jᵀ G v_j for the columns of m, forward
        in Taylor mode: no backward pass."""
        first, again = self._tangents(prep, m, second=hessian)
        return quadratic_values(prep[1], prep[2], prep[3], first.get(self.output),
                                again.get(self.output), m, hessian=hessian)

    def matmat(self, prep: tuple, m: Tensor, *, gauss_newton: bool = False) -> Tensor:
        """H M for the (d, k) matrix M; with ``gauss_newton`` G M (no terms in the primal
        gradients g)."""
        env, cache, o, g_out, grads = prep
        tangents = self._tangents(prep, m)[0]
        out = torch.zeros_like(m)
        if self.output not in tangents:
            return out
        transpose = self._transpose_with(prep)

        def step(node: Node, gd: Tensor) -> list:
            kind = cache["kind"][node]
            if kind == "weighted":
                src = node.args[0]
                at = None if gauss_newton else tangents.get(src)
                g = None if gauss_newton else grads[node]
                return [(src, weighted_reverse(
                    self.modules[node.target], env[src], at, g, gd, self.slices, m, out,
                    src in cache["live"], cache.get(node), gauss_newton,
                    columns=cache.get(("columns", node))))]
            if kind == "elementwise" and not gauss_newton:
                s1, s2 = cache[node]
                src = self._source(node, env)
                if s2 is not None and src in tangents:     # ġ_z = σ' ġ_h + σ'' z' g_h
                    return [(src, s1 * gd + s2 * tangents[src] * grads[node])]
            return transpose(node, gd)

        gd = output_hessian_products(g_out, o, tangents[self.output], cache).detach()
        self._reverse(prep, gd, {}, step)
        return out


class GraphTaylor:
    """Taylor-mode quadratic forms over a :class:`GraphHVP`'s graph: what the operators keep
    as ``_taylor`` (``prepare`` is the graph's forward preparation, shared with the R-op)."""

    def __init__(self, graph: GraphHVP):
        self.graph = graph

    @property
    def width(self) -> int:
        return self.graph.width

    def prepare(self, x: Tensor, y: Tensor, loss_fn) -> tuple:
        return self.graph.forward(x, y, loss_fn)

    def second_derivatives(self, prep: tuple, m: Tensor, *, hessian: bool) -> Tensor:
        return self.graph.second_derivatives(prep, m, hessian=hessian)


def _broadcast_sum(ts: list[Tensor], shape: torch.Size) -> Tensor:
    """The sum of (k, *shape_i) tangents of a sum's inputs, broadcast as the sum broadcasts its
    inputs (trailing dimensions aligned, the probe dimension k first) to (k, *shape)."""
    out = None
    for t in ts:
        t = t.reshape(t.shape[:1] + (1,) * (len(shape) + 1 - t.dim()) + t.shape[1:])
        out = t if out is None else out + t
    return out if out.shape[1:] == shape else out.expand(out.shape[0], *shape).contiguous()


def _sum_to(t: Tensor, like: Tensor) -> Tensor:
    """(k, *shape) adjoint summed down to ``like``'s shape (undoing broadcasting; the probe
    dimension k stays first, whatever ``like``'s rank)."""
    if t.shape[1:] == like.shape:
        return t
    ones = (1,) * (t.dim() - 1 - like.dim())
    return t.sum_to_size(t.shape[0], *ones, *like.shape).view(t.shape[0], *like.shape)
