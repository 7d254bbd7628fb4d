"""Flat views of a model's parameters: the coordinate system every operator and estimator uses.

The flat vector concatenates ``p.reshape(-1)`` for the trainable parameters in
``model.named_parameters()`` order (only those with ``requires_grad``).
"""
from __future__ import annotations

import copy
import functools
import itertools
import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from sgdlab.errors import UserError


# torch.autograd.grad options for derivatives in the parameters: a trainable parameter the
# forward does not use (an auxiliary head, a disabled branch) gets zero gradient and curvature
UNUSED_ZERO = {"allow_unused": True, "materialize_grads": True}


def batched_columns(per_param: Iterable[Tensor], params: Iterable[Tensor], k: int) -> Tensor:
    """The (d, k) matrix of a batched backward's per-parameter (k, *shape) results; an unused
    parameter's zeros (``UNUSED_ZERO``) come with the parameter's shape, without the k."""
    return torch.cat([t.reshape(1, -1).expand(k, -1) if t.dim() == p.dim() else t.reshape(k, -1)
                      for t, p in zip(per_param, params)], dim=1).T.detach()


def functional_call(model: nn.Module, tensors, args, kwargs=None):
    """``torch.func.functional_call``, with the model's parameters and buffers as they were
    afterwards. Why: torch does not restore a module registered under two names (a layer
    used twice, ``nn.Sequential(lin, act, lin)``): its parameters stay the plain tensors of
    the call, so later gradients, optimizers and hooks on the model silently miss them.
    ``nn.DataParallel`` refuses the stateless API ("The stateless API can't be used with
    nn.DataParallel module"): the module it wraps is called instead, the same function on
    the tensors' one device, its names without the ``module.`` prefix."""
    while isinstance(model, nn.DataParallel):
        model = model.module
        tensors = (_unprefixed(tensors) if isinstance(tensors, Mapping)
                   else type(tensors)(_unprefixed(t) for t in tensors))
    mods = list(model.modules())
    if len(mods) == sum(1 for _ in model.named_modules(remove_duplicate=False)):
        return torch.func.functional_call(model, tensors, args, kwargs)
    saved = [(m, dict(m._parameters), dict(m._buffers)) for m in mods]
    try:
        return torch.func.functional_call(model, tensors, args, kwargs)
    finally:
        for m, params, buffers in saved:
            m._parameters.update(params)
            m._buffers.update(buffers)


def _unprefixed(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k.removeprefix("module."): v for k, v in tensors.items()}


def copy_module(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, also for a model that keeps a tensor computed from its
    parameters as a plain attribute: the hook-based ``nn.utils.weight_norm`` holds
    ``weight = g v / ‖v‖``, a tensor of the autograd graph, which deepcopy refuses ("Only
    Tensors created explicitly by the user (graph leaves) support the deepcopy protocol").
    Such tensors are copied detached: the copy's forward pre-hook computes them again from
    its own parameters before every use."""
    memo: dict[int, object] = {}
    for m in model.modules():
        for v in vars(m).values():
            if isinstance(v, Tensor) and not v.is_leaf:
                memo[id(v)] = v.detach().clone()
    return copy.deepcopy(model, memo)


def trainable_named_params(model: nn.Module) -> dict[str, Tensor]:
    """Trainable parameters by name, in registration order (the flat-vector order)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def frozen_named_params(model: nn.Module) -> dict[str, Tensor]:
    """The parameters that do not require a gradient, detached, by name: the constants a
    functional call over the trainable ones must be given as well."""
    return {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}


def no_trainable_parameters() -> UserError:
    return UserError("the model has no trainable parameters (none, or all with "
                     "requires_grad=False): there is nothing to differentiate or perturb")


def check_real(params: Mapping[str, Tensor]) -> None:
    """A ``UserError`` naming a complex trainable parameter: flat vectors, gradients,
    curvature and noise are measured in real coordinates, and a complex one was read as one
    coordinate per entry (the gradient norm of a 4-entry complex regression 0.47 off its real
    pairs', the Hessian 4 x 4 and complex for the pairs' 8 x 8, Lanczos and probes failing
    inside torch)."""
    for name, p in params.items():
        if p.is_complex():
            raise UserError(
                f"parameter {name} of shape {tuple(p.shape)} is {p.dtype}: measurements take "
                "real parameters; hold its real and imaginary parts as one real parameter "
                "(torch.view_as_real), the coordinates torch's optimizers step")


def check_parametrizations_uncached(model: nn.Module) -> None:
    """A ``UserError`` inside ``torch.nn.utils.parametrize.cached()`` for a model with a
    parametrized trainable weight: its weights are computed once there and reused, so every
    point a measurement moved θ to, and every functional call's own tensors, met the weight
    of θ (sharpness, local entropy, walks, surfaces and the GGN diagonal of an orthogonal
    layer 0.002-0.1 off, without a word)."""
    from torch.nn.utils import parametrize

    # a frozen parametrized layer (its originals all fixed) has one weight at every point
    if parametrize._cache_enabled and any(
            parametrize.is_parametrized(m) and any(p.requires_grad
                                                   for p in m.parametrizations.parameters())
            for m in model.modules()):
        raise UserError(
            "the model's parametrized weights are cached (inside "
            "torch.nn.utils.parametrize.cached()): a measurement would read the weight "
            "cached at the model's parameters at every point it evaluates and in every "
            "derivative; call it outside the cached() block")


def require_trainable(model: nn.Module) -> dict[str, Tensor]:
    """:func:`measured_params` (a ``UserError`` when there is none: nothing to differentiate,
    no gradient, no curvature), outside inference mode."""
    params = measured_params(model)
    check_not_inference_mode()
    return params


def measured_params(model: nn.Module) -> dict[str, Tensor]:
    """:func:`trainable_named_params`, refusing what no measurement can move or
    differentiate: none at all, one of a lazy module not yet run (:func:`check_initialised`),
    two over common memory (:func:`check_no_shared_memory`), a complex one
    (:func:`check_real`), a parametrized one cached
    (:func:`check_parametrizations_uncached`), an embedding that renormalises its rows
    (:func:`check_no_renormalising_embedding`). Every flat vector starts here: each check
    costs little (docs/design/curvature.md)."""
    params = trainable_named_params(model)
    if not params:
        raise no_trainable_parameters()
    check_initialised(params)
    check_no_shared_memory(params)
    check_real(params)
    check_parametrizations_uncached(model)
    check_no_renormalising_embedding(model)
    return params


def check_initialised(params: Mapping[str, Tensor]) -> None:
    """A ``UserError`` naming a parameter of a lazy module (``nn.LazyLinear``) that has not
    run yet: it has no shape, and torch failed on it inside the first flat vector."""
    for name, p in params.items():
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise UserError(
                f"parameter {name} is not initialised yet (a lazy module, such as "
                "nn.LazyLinear, that has not run): run the model once on a batch (model(x)) "
                "before measuring it")


def check_no_shared_memory(params: Mapping[str, Tensor]) -> None:
    """A ``UserError`` for two trainable parameters over the same memory (one registered as a
    view of another, ``nn.Parameter(lin.weight.t())``): autograd and functional calls take
    them as separate coordinates, but writing a point into the model writes one over the
    other, so evaluations one point at a time and vmapped ones measured different functions
    (expected sharpness 0.33 against 0.013 on a 3-4-2 MLP). Views of one buffer that share
    no element (flat-parameter wrappers' slices, or column blocks of one matrix, whose
    address ranges interleave) are separate coordinates indeed and pass. Addresses are
    absolute, not offsets in a storage: two storages may hold the same memory
    (``torch.from_numpy`` of two views of one array)."""
    spans: dict[torch.device, list[tuple[int, int, str, Tensor]]] = {}
    for name, p in params.items():
        # meta tensors have no memory (every one at address 0)
        if p.layout != torch.strided or not p.numel() or p.device.type == "meta":
            continue
        size, start = p.element_size(), p.data_ptr()
        extent = sum((n - 1) * abs(st) for n, st in zip(p.shape, p.stride())) + 1
        spans.setdefault(p.device, []).append((start, start + extent * size, name, p))
    for group in spans.values():
        group.sort(key=lambda s: s[:3])
        # runs of parameters whose address ranges overlap, each looked at element by element
        run, end = [group[0]], group[0][1]
        for span in group[1:] + [None]:
            if span is not None and span[0] < end:
                run.append(span)
                end = max(end, span[1])
                continue
            if len(run) > 1:
                _check_disjoint_elements(run)
            if span is not None:
                run, end = [span], span[1]


#: (address of its first element, shape, strides, element size) of one parameter
Layout = tuple[int, tuple[int, ...], tuple[int, ...], int]


def _unit_offsets(layout: Layout, unit: int) -> Tensor:
    """The addresses, in ``unit`` bytes, of every ``unit`` of the elements of a tensor laid
    out as ``layout`` (from its shape, strides and address alone)."""
    address, shape, strides, size = layout
    offsets = torch.tensor(address)
    for n, st in zip(shape, strides):
        offsets = offsets[..., None] + torch.arange(n) * (st * size)
    return (offsets.reshape(-1, 1) // unit + torch.arange(size // unit)).reshape(-1)


def _check_disjoint_elements(run: list[tuple[int, int, str, Tensor]]) -> None:
    """The shared-memory ``UserError`` for the first two parameters of ``run`` (on one
    device, their address ranges overlapping) that have a byte in common. Only such runs
    are compared element by element: flat wrappers' slices never overlap in range and cost
    nothing."""
    pair = _first_common_element(tuple(
        (name, (p.data_ptr(), tuple(p.shape), p.stride(), p.element_size()))
        for _, _, name, p in run))
    if pair is not None:
        first, second = pair
        raise UserError(
            f"parameters {first} and {second} share memory (views with elements in "
            "common, as a weight and its transpose have): the measurements take each "
            "parameter as coordinates of its own, which writing a point into the model "
            "cannot hold apart; register one of them and compute the other from it in "
            "forward (e.g. self.lin.weight.t()), which ties them as one parameter")


@functools.lru_cache(maxsize=32)
def _first_common_element(run: tuple[tuple[str, Layout], ...]) -> tuple[str, str] | None:
    """The names of the first two of ``run``'s (name, layout) on one device, sorted by
    address, that have a byte in common, else None. Counted in units of the elements' sizes'
    greatest common divisor (elements, where they have one size). Kept per layout, since
    measured_params runs on every flat vector: column blocks of a 1024 x 1024 matrix took
    36 ms a call."""
    unit = functools.reduce(math.gcd, (layout[3] for _, layout in run))
    starts = [_unit_offsets(layout, unit) for _, layout in run]
    lo = min(int(s.min()) for s in starts)
    owner = torch.full((max(int(s.max()) for s in starts) + 1 - lo,), -1, dtype=torch.int32)
    for i, ((second, _), where) in enumerate(zip(run, starts)):
        seen = owner[where - lo]
        seen = seen[seen >= 0]
        if seen.numel():
            # named in address order, as the ranges are sorted
            return run[int(seen[0])][0], second
        owner[where - lo] = i
    return None


def check_no_renormalising_embedding(model: nn.Module) -> None:
    """A ``UserError`` for a trainable ``nn.Embedding`` / ``nn.EmbeddingBag`` with
    ``max_norm``: its forward pass renormalises the rows it looks up in place, so every
    measurement wrote into the model's weight (even a no-grad loss), and the derivatives
    torch gives treat the renormalised rows as the parameters, which they are not where a row
    was renormalised (the loss has a kink there)."""
    for name, m in model.named_modules():
        if (isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.max_norm is not None
                and m.weight.requires_grad):
            raise UserError(
                f"{name or 'the model'} ({type(m).__name__}, max_norm={m.max_norm}) "
                "renormalises its weight's rows in place in every forward pass: a "
                "measurement would change the model's weight, and its derivatives are not "
                "the loss's where a row is renormalised; measure with max_norm=None (the "
                "same function where every row's norm is within max_norm: renormalise them "
                "first, e.g. by one forward pass over all tokens) or freeze the embedding")


def model_device(model: nn.Module) -> torch.device:
    """Where the model computes: its first parameter's or buffer's device (the CPU for a
    module that holds neither, whose forward pass runs where its inputs are)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def check_not_inference_mode() -> None:
    """A ``UserError`` inside ``torch.inference_mode()`` (an evaluation loop's, PyTorch
    Lightning's validation): no gradient can be taken there, and enabling it again does not
    help (the tensors made there are inference tensors), so a gradient, curvature or
    per-sample measurement failed on autograd's "element 0 of tensors does not require grad"
    or "Inference tensors do not track version counter"."""
    if torch.is_inference_mode_enabled():
        raise UserError("this measurement differentiates the loss, which torch cannot do "
                        "inside torch.inference_mode(): call it outside that block "
                        "(torch.no_grad() is fine: the measurements enable gradients "
                        "themselves)")


def reaching_parameters(t: Tensor, what: str = "the loss") -> Tensor:
    """``t``, or a ``UserError`` where autograd reaches none of the parameters from it: a
    forward pass that skips the model's layers, runs them under ``torch.no_grad()`` or
    detaches their output, or wraps them all in a reentrant ``torch.utils.checkpoint`` whose
    inputs do not require grad (it runs them under no_grad: PyTorch's own pitfall, which only
    a warning names). The gradient and curvature are then zero; autograd's own words were
    "element 0 of tensors does not require grad", which names neither."""
    if not t.requires_grad:
        raise UserError(f"{what} does not depend on the model's trainable parameters (autograd "
                        "reaches none of them from it): does forward() use its layers, "
                        "outside torch.no_grad() and without .detach()? (A "
                        "checkpoint(..., use_reentrant=True) over inputs that do not require "
                        "grad cuts them off too: use use_reentrant=False.)")
    return t


def state_versions(model: nn.Module) -> tuple[int, ...]:
    """The version counters of ``model``'s parameters and buffers. Every in-place change moves
    them (an optimizer step, new batch-norm running statistics), so a result kept with them
    is known to be stale once they differ."""
    return tuple(t._version for t in (*model.parameters(), *model.buffers()))


def flat_dtype(params: Iterable[Tensor]) -> torch.dtype:
    """The dtype of the flat vectors of ``params``: theirs, or the widest where they are of
    several dtypes (what ``torch.cat`` makes of them); each is computed in its own."""
    return functools.reduce(torch.promote_types, (p.dtype for p in params))


def num_params(model: nn.Module) -> int:
    """Number of trainable scalars d."""
    return sum(p.numel() for p in trainable_named_params(model).values())


def flatten(tensors: Iterable[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_like(vec: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Split a flat vector into tensors shaped like ``like`` (same keys, same order)."""
    # checked first: a short vector failed inside view_as on torch's "shape is invalid"
    sizes = [t.numel() for t in like.values()]
    if sum(sizes) != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, parameters have {sum(sizes)}")
    # a model with parameters of several dtypes: each in its own (the flat vector is of the
    # widest)
    return {name: part.view_as(t).to(t.dtype)
            for (name, t), part in zip(like.items(), vec.split(sizes))}


def params_vector(model: nn.Module) -> Tensor:
    """A detached copy of the trainable parameters as one flat vector (a ``UserError`` when
    there is none, or a complex one: every measurement that moves θ starts here)."""
    params = measured_params(model)
    return flatten(p.detach() for p in params.values()).clone()


def check_params_vector(model: nn.Module, vec: object, name: str, call: str) -> None:
    """Refuse anything but a flat vector of ``model``'s trainable parameters for argument
    ``name``, quoting the signature ``call`` (functions that take both data and parameter
    vectors do not all take them in the same order)."""
    d = sum(p.numel() for p in measured_params(model).values())
    if not d:
        raise no_trainable_parameters()
    if not isinstance(vec, Tensor):
        raise TypeError(f"{name} must be a flat vector of the model's {d} trainable parameters "
                        f"(params_vector(model)), got {type(vec).__name__}; the arguments are "
                        f"{call}")
    if vec.dim() != 1 or vec.numel() != d:
        raise ValueError(f"{name} has shape {tuple(vec.shape)}; the model has {d} trainable "
                         "parameters (pass a flat vector)")


@torch.no_grad()
def set_params_vector(model: nn.Module, vec: Tensor) -> None:
    """Write a flat vector into the model's trainable parameters in place."""
    params = trainable_named_params(model)
    torch._foreach_copy_(list(params.values()), list(unflatten_like(vec, params).values()))


def grads_vector(model: nn.Module) -> Tensor:
    """The current ``.grad`` of the trainable parameters as a flat vector (zeros where None;
    a sparse gradient, as ``nn.Embedding(sparse=True)`` leaves, by its dense values)."""
    return flatten(
        (p.grad.detach().to_dense() if p.grad.is_sparse else p.grad.detach())
        if p.grad is not None else torch.zeros_like(p)
        for p in trainable_named_params(model).values()
    )


def param_slices(params: Mapping[str, Tensor]) -> dict[int, tuple[int, int]]:
    """{id(p): (start, end)} of each parameter's entries in the flat vector."""
    out, i = {}, 0
    for p in params.values():
        out[id(p)] = (i, i + p.numel())
        i += p.numel()
    return out


def param_rows(slices: Mapping[int, tuple[int, int]], p: Tensor | None,
               m: Tensor) -> Tensor | None:
    """Parameter p's rows of a (d, k) block, shaped (k, *p.shape); None when p is absent or
    not among ``slices``."""
    if p is None or id(p) not in slices:
        return None
    i, j = slices[id(p)]
    return m[i:j].T.reshape(m.shape[1], *p.shape)


def add_param_rows(out: Tensor, slices: Mapping[int, tuple[int, int]], p: Tensor | None,
                   values: Tensor | None) -> None:
    """out[p's rows] += values, for (k, *p.shape) values (nothing when either is absent)."""
    if values is not None and p is not None and id(p) in slices:
        i, j = slices[id(p)]
        out[i:j] += values.reshape(out.shape[1], -1).T
