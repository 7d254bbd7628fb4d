"""Independently trained copies of a network (Chaudhari's thesis, §5.0.1 and Fig. 5.1):
permutation alignment, the overlap of two networks' weights, the ensemble of their softmax
predictions and the network of their averaged weights.

Alignment (:func:`align_to`): the hidden units of a feed-forward chain (Linear and Conv2d
layers, each optionally followed by BatchNorm1d/2d, with element-wise activations, dropout,
pooling and one Flatten in between) can be permuted without changing the function it
computes. The thesis aligns "each network to the first [one] by permuting its filters using
a greedy layer-wise matching algorithm" (line 1921) and states no more; our greedy rule, layer
by layer from the input:

1. the layer's incoming weights in the copy have their input dimension already permuted as
   the previous layer's units were (so both networks' rows refer to the same inputs);
2. each unit's incoming weights (its weight row or filter, flattened, with its bias, and its
   batch-norm scale and shift when one follows) form a vector; the similarity of unit i of the
   reference and unit j of the copy is the cosine of their vectors (``similarity="cosine"``,
   the default; ``"inner"``: the plain inner product);
3. greedily, the pair (i, j) of highest similarity among the units not yet matched is
   matched, until every unit is (ties: the lowest i, then the lowest j);
4. the copy's units (rows, bias, batch-norm parameters and running statistics) are reordered
   so that its unit matched to i sits at i, and the next weighted layer's inputs are permuted
   the same way (through a Flatten: in blocks of the spatial size per channel).

The last weighted layer (the read-out) keeps its order. The result computes the same function
as the copy (:func:`align_to` checks this on ``check_input`` when given). A layer whose weight
is computed from other tensors at every forward pass (weight norm, spectral norm, any
``torch.nn.utils.parametrize`` parametrization) is refused by name: its rows alone cannot be
permuted; so is a weight used twice (a layer called twice, tied weights), whose permutation
for one use is not the other's.

Overlap (:func:`weight_overlap`): Fig. 5.1 plots ⟨x^a, x^b⟩ / (‖x^a‖ ‖x^b‖) for two networks'
weights x^a, x^b (line 1932). ``reading="whole"`` (the default) takes x as all the
parameters of the network in one vector; ``reading="layer-mean"`` averages, over the weighted
layers (Linear, Conv2d), the cosine of their weight tensors (the text says "the average
overlap of the weights of these aligned filters", line 1921, which can be read this way).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from sgdlab.errors import checked_keywords
from sgdlab.models.modes import PLAIN_BN_TYPES, eval_mode, module_label
from sgdlab.operators.batches import Data, iterate_batches
from sgdlab.operators.params import copy_module, params_vector

__all__ = [
    "SIMILARITIES",
    "OVERLAP_READINGS",
    "align_to",
    "average_weights",
    "averaged_accuracy",
    "ensemble_accuracy",
    "greedy_match",
    "overlap_matrix",
    "weight_overlap",
]

SIMILARITIES = ("cosine", "inner")
OVERLAP_READINGS = ("whole", "layer-mean")

_WEIGHTED = (nn.Linear, nn.Conv2d)
_BN = PLAIN_BN_TYPES        # F.batch_norm over channels at dimension 1
# element-wise or per-channel layers that commute with a permutation of the channels
_PASSIVE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.GELU, nn.Softplus,
            nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d,
            nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _chain(model: nn.Module) -> list[nn.Module]:
    """The model's leaf modules in registration order, refusing any that a permutation of
    the hidden units would not commute with."""
    for name, m in model.named_modules():
        # a weight computed from other tensors (weight_norm's g and v, spectral norm's
        # weight_orig, any parametrization) is computed again from them at the next forward
        # pass: permuting its rows alone changed the function
        if isinstance(m, _WEIGHTED) and (parametrize.is_parametrized(m)
                                         or not isinstance(m.weight, nn.Parameter)):
            raise ValueError(
                f"align_to: {module_label(name, m)} computes its weight from other "
                "tensors (a weight norm, spectral norm or other parametrization), which the "
                "alignment does not permute; align copies without it "
                "(torch.nn.utils.parametrize.remove_parametrizations(layer, 'weight'), or "
                "torch.nn.utils.remove_weight_norm / remove_spectral_norm for the hook-based "
                "ones)")
    # a weight used twice (a layer called twice, tied weights): permuting the rows of one use
    # permutes the other's too, and the inputs of the layer after the second use are not
    first_name: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        first = first_name.setdefault(id(p), name)
        if first != name:
            raise ValueError(
                f"align_to: parameter {name!r} is {first!r} as well (a layer called twice, "
                "or tied weights): permuting the units of one use permutes the other's, and "
                "the function changes; align copies whose layers hold weights of their own")
    leaves = [m for m in model.modules() if not list(m.children())]
    for m in leaves:
        if not isinstance(m, (*_WEIGHTED, *_BN, *_PASSIVE, nn.Flatten)):
            raise ValueError(f"align_to: unsupported layer {type(m).__name__}; the alignment "
                             "handles chains of Linear/Conv2d layers with BatchNorm1d/2d, "
                             "element-wise activations, dropout, pooling and Flatten")
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            raise ValueError(f"align_to: grouped convolution {m} is not supported")
    if not any(isinstance(m, _WEIGHTED) for m in leaves):
        raise ValueError("align_to: the model has no Linear or Conv2d layer")
    return leaves


def greedy_match(sim: Tensor) -> Tensor:
    """``perm`` with ``perm[i] = j``: unit j of the copy matched to unit i of the reference,
    by repeatedly taking the pair of highest ``sim[i, j]`` among the unmatched rows and
    columns (ties: lowest i, then lowest j). ``sim`` is a square (n, n) matrix."""
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"greedy_match: a square similarity matrix is needed, got shape "
                         f"{tuple(sim.shape)}")
    if not torch.isfinite(sim).all():
        raise ValueError("greedy_match: the similarity matrix has NaN or infinite entries")
    n = sim.shape[0]
    s = sim.detach().to(torch.float64).clone()
    perm = torch.full((n,), -1, dtype=torch.long)
    for _ in range(n):
        k = int(torch.argmax(s))          # first maximum in row-major order
        i, j = divmod(k, n)
        perm[i] = j
        s[i, :] = -math.inf
        s[:, j] = -math.inf
    return perm


def _unit_vectors(layer: nn.Module, bn: nn.Module | None) -> Tensor:
    parts = [layer.weight.detach().flatten(1)]
    if layer.bias is not None:
        parts.append(layer.bias.detach()[:, None])
    if bn is not None and bn.affine:
        parts += [bn.weight.detach()[:, None], bn.bias.detach()[:, None]]
    return torch.cat(parts, dim=1)


def _similarity(a: Tensor, b: Tensor, kind: str) -> Tensor:
    if kind == "cosine":
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-30)
        b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return a @ b.T


@torch.no_grad()
def _permute_inputs(layer: nn.Module, perm: Tensor, block: int) -> None:
    w = layer.weight
    if isinstance(layer, nn.Linear) and block > 1:
        idx = (perm[:, None] * block + torch.arange(block)[None, :]).flatten()
    else:
        idx = perm
    w.copy_(w[:, idx.to(w.device)])


@torch.no_grad()
def _permute_outputs(layer: nn.Module, bn: nn.Module | None, perm: Tensor) -> None:
    p = perm.to(layer.weight.device)
    layer.weight.copy_(layer.weight[p])
    if layer.bias is not None:
        layer.bias.copy_(layer.bias[p])
    if bn is not None:
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            if t is not None:
                t.copy_(t[p])


@checked_keywords()
def align_to(reference: nn.Module, model: nn.Module, *, similarity: str = "cosine",
             check_input: Tensor | None = None, atol: float = 1e-5) -> nn.Module:
    """A copy of ``model`` with its hidden units permuted to match ``reference`` (same
    architecture) by the greedy layer-wise rule of the module docstring. ``model`` itself is
    left as it is. With ``check_input``, both the copy and ``model`` are run on it in eval
    mode and a ValueError is raised when their outputs differ by more than ``atol`` (the
    model is then no plain chain of layers, e.g. it has residual connections). The chain is
    read from the modules' order, not from ``forward``: without ``check_input`` a ResNet's
    copy is permuted all the same and computes another function, so pass a batch of inputs
    unless the model is a chain."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"align_to: similarity must be one of {SIMILARITIES}, "
                         f"got {similarity!r}")
    ref_chain = _chain(reference)
    aligned = copy_module(model)
    chain = _chain(aligned)
    if [type(m) for m in ref_chain] != [type(m) for m in chain] or any(
            p.shape != q.shape for p, q in zip(reference.parameters(), aligned.parameters())):
        raise ValueError("align_to: the two models do not have the same architecture")
    weighted = [k for k, m in enumerate(chain) if isinstance(m, _WEIGHTED)]
    for n, k in enumerate(weighted[:-1]):
        layer, ref_layer = chain[k], ref_chain[k]
        nxt = weighted[n + 1]
        between = chain[k + 1:nxt]
        bns = [m for m in between if isinstance(m, _BN)]
        if len(bns) > 1:
            raise ValueError("align_to: more than one batch norm between two weighted layers")
        bn = bns[0] if bns else None
        ref_bn = ref_chain[chain.index(bn)] if bn is not None else None
        sim = _similarity(_unit_vectors(ref_layer, ref_bn).double(),
                          _unit_vectors(layer, bn).double(), similarity)
        perm = greedy_match(sim)
        _permute_outputs(layer, bn, perm)
        units = layer.weight.shape[0]
        nxt_layer = chain[nxt]
        fan_in = nxt_layer.weight.shape[1]
        if fan_in % units:
            raise ValueError(f"align_to: {nxt_layer} takes {fan_in} inputs, not a multiple of "
                             f"the {units} units before it")
        if fan_in != units and not isinstance(nxt_layer, nn.Linear):
            raise ValueError(f"align_to: {nxt_layer} takes {fan_in} channels, "
                             f"not the {units} before it")
        _permute_inputs(nxt_layer, perm, fan_in // units)
    if check_input is not None:
        with torch.no_grad(), eval_mode(model), eval_mode(aligned):
            diff = float((model(check_input) - aligned(check_input)).abs().max())
        if not diff <= atol:
            raise ValueError(f"align_to: the permuted model's outputs differ from the model's by "
                             f"{diff:.3g} (> {atol}); it is not a plain chain of layers")
    return aligned


def _weights(model: nn.Module, reading: str) -> list[Tensor]:
    if reading == "whole":
        return [params_vector(model).double()]
    if reading == "layer-mean":
        return [m.weight.detach().flatten().double() for m in model.modules()
                if isinstance(m, _WEIGHTED)]
    raise ValueError(f"weight_overlap: reading must be one of {OVERLAP_READINGS}, "
                     f"got {reading!r}")


@checked_keywords()
def weight_overlap(a: nn.Module, b: nn.Module, *, reading: str = "whole") -> float:
    """Fig. 5.1's overlap ⟨x^a, x^b⟩ / (‖x^a‖ ‖x^b‖) of two networks' weights: over all
    parameters in one vector (``reading="whole"``) or averaged over the weighted layers'
    weight tensors (``"layer-mean"``). 1 for identical weights."""
    wa, wb = _weights(a, reading), _weights(b, reading)
    if len(wa) != len(wb) or any(x.shape != y.shape for x, y in zip(wa, wb)):
        raise ValueError("weight_overlap: the two models do not have the same architecture")
    cos = []
    for x, y in zip(wa, wb):
        den = float(x.norm() * y.norm())
        if den == 0.0:
            raise ValueError("weight_overlap: a model's weights are all zero")
        cos.append(float(x @ y) / den)
    return sum(cos) / len(cos)


@checked_keywords()
def overlap_matrix(models: Sequence[nn.Module], *, reading: str = "whole") -> list[list[float]]:
    """The symmetric matrix of :func:`weight_overlap` over ``models`` (1 on the diagonal)."""
    n = len(models)
    out = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            out[i][j] = out[j][i] = weight_overlap(models[i], models[j], reading=reading)
    return out


@checked_keywords()
@torch.no_grad()
def average_weights(models: Sequence[nn.Module]) -> nn.Module:
    """A copy of the first model whose floating-point parameters and buffers (batch-norm
    running statistics included) are the means of the models'; integer buffers (batch norm's
    ``num_batches_tracked``) are the first model's."""
    if not models:
        raise ValueError("average_weights: no models")
    out = copy_module(models[0])
    states = [m.state_dict() for m in models]
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise ValueError("average_weights: the models do not have the same architecture")
    avg = {}
    for k in keys:
        t = states[0][k]
        avg[k] = (torch.stack([s[k] for s in states]).mean(0) if t.is_floating_point()
                  else t.clone())
    out.load_state_dict(avg)
    return out


@checked_keywords()
@torch.no_grad()
def ensemble_accuracy(models: Sequence[nn.Module], data: Data) -> float:
    """Accuracy of the mean of the models' softmax predictions (eval mode): the fraction
    of samples whose argmax over classes of (1/n) Σ_a softmax(f_a(x)) is the label."""
    if not models:
        raise ValueError("ensemble_accuracy: no models")
    device = next(models[0].parameters()).device
    hits = total = 0
    with ExitStack() as stack:
        for m in models:
            stack.enter_context(eval_mode(m))
        for x, y in iterate_batches(data, device):
            outs = [m(x) for m in models]
            for out in outs:
                _check_class_scores(out, y)
            p = sum(torch.softmax(out, dim=1) for out in outs) / len(models)
            hits += int((p.argmax(1) == y).sum())
            total += len(y)
    if total == 0:
        raise ValueError("ensemble_accuracy: data has no samples")
    return hits / total


def _check_class_scores(out: object, y: Tensor) -> None:
    """A ValueError unless ``out`` holds (N, C) class scores, C >= 2, for the (N,) integer
    labels ``y``: a single logit's softmax is 1 (the argmax always class 0), and other shapes
    broadcast in the comparison with the labels."""
    if (isinstance(out, Tensor) and out.dim() == 2 and out.shape[1] >= 2
            and not y.is_floating_point() and y.shape == out.shape[:1]):
        return
    what = (f"outputs of shape {tuple(out.shape)}" if isinstance(out, Tensor)
            else f"a {type(out).__name__} output")
    raise ValueError(
        f"ensemble_accuracy needs class scores (N, C) with C >= 2 from each model and (N,) "
        f"integer class labels; got {what} and {y.dtype} targets of shape {tuple(y.shape)}. "
        "A binary classifier's one logit z has no argmax over classes: give it two scores, "
        "torch.cat([torch.zeros_like(z), z], 1), whose softmax is (1 - sigmoid(z), sigmoid(z))")


def averaged_accuracy(models: Sequence[nn.Module], data: Data,
                      prepare: Callable[[nn.Module], None] | None = None) -> float:
    """Accuracy of :func:`average_weights` of ``models`` (``prepare``, when given, is called
    on the averaged network first, e.g. to recompute its batch-norm statistics)."""
    avg = average_weights(models)
    if prepare is not None:
        prepare(avg)
    return ensemble_accuracy([avg], data)
