"""Batch-norm statistics of a whole data set, however it is batched.

What one batch of all the samples gives batch norm in train mode: each layer normalises its
input with the mean and biased variance over every sample (and spatial position), so a layer's
input depends on the statistics of the layers before it. With the data in several batches
(or a batch evaluated in chunks) the statistics are found one layer at a time
(:func:`whole_set_moments`): layer k's input is pooled over all the batches in float64
(:class:`ChannelMoments`) in a pass that normalises the layers before it with their
whole-set statistics, found by the passes before, and stops at layer k. That is one pass per
layer, each as long as the network up to the layer (VGG-11: 8 passes, about 4.3 forward
passes of compute; ResNet-56: 55, about 28).

Two users: :func:`recompute_bn_statistics` writes the statistics into the running buffers (an
interpolated or perturbed network's, ``sgdlab.measure.interpolation``, ``.surface``), and
the evaluations of ``sgdlab.measure.passes`` (a walk's segment, perturbed points) normalise a
batch split into chunks with them (:func:`batch_norm_statistics`).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgdlab.errors import checked_keywords
from sgdlab.models.modes import (BN_TYPES, buffers_kept, eval_mode, has_batchnorm,
                                 uses_batch_statistics)
from sgdlab.operators.batches import Data, check_data, is_single_batch, iterate_batches

__all__ = [
    "BN_TYPES",
    "ChannelMoments",
    "batch_norm_call_order",
    "batch_norm_statistics",
    "has_batchnorm",
    "normalise_with",
    "recompute_bn_statistics",
    "replaced_forwards",
    "uses_batch_statistics",
    "whole_set_moments",
]


class ChannelMoments:
    """Per-channel sample count, mean and sum of squared deviations (float64) of the inputs of
    a batch-norm layer, pooled over the batches passed to :meth:`add` by Chan et al.'s
    pairwise combination (no cancellation of large sums of squares)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, x: Tensor) -> None:
        """Pool in ``x`` (channels at dimension 1; every other dimension is samples)."""
        z = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
        nb = z.shape[1]
        if nb == 0:
            return
        mean_b = z.mean(1)
        m2_b = (z - mean_b[:, None]).square().sum(1)
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mean_b, m2_b
            return
        n = self.n + nb
        delta = mean_b - self.mean
        self.m2 = self.m2 + m2_b + delta.square() * (self.n * nb / n)
        self.mean = self.mean + delta * (nb / n)
        self.n = n

    def biased_variance(self) -> Tensor:
        return self.m2 / self.n


# --------------------------------------------------------------------------------------------
# Batch-norm forwards replaced for a pass
# --------------------------------------------------------------------------------------------

class _StopForward(Exception):
    """Ends a statistics pass at the batch-norm layer it measures."""


@contextlib.contextmanager
def replaced_forwards(forwards: dict[nn.Module, Callable[[Tensor], Tensor]]
                      ) -> Iterator[None]:
    """Batch-norm modules whose ``forward`` is replaced for the duration of the block; a
    ``forward`` the instance had set itself is put back on exit."""
    own = {m: m.__dict__["forward"] for m in forwards if "forward" in m.__dict__}
    try:
        for m, f in forwards.items():
            m.forward = f
        yield
    finally:
        for m in forwards:
            if m in own:
                m.forward = own[m]
            else:
                m.__dict__.pop("forward", None)


def normalise_with(m: nn.Module, mean: Tensor, var: Tensor) -> Callable[[Tensor], Tensor]:
    """``m``'s forward normalising with the given per-channel mean and (biased) variance."""
    def forward(inp: Tensor) -> Tensor:
        return F.batch_norm(inp, mean.to(inp.dtype), var.to(inp.dtype), m.weight, m.bias,
                            False, 0.0, m.eps)
    return forward


@torch.no_grad()
def batch_norm_call_order(model: nn.Module, x: Tensor) -> list[nn.Module]:
    """The batch-norm modules in the order a forward pass of ``x`` calls them, a module called
    twice listed twice. The layers pass their input on unchanged meanwhile (so any number of
    samples will do, and no running statistic moves); every buffer is put back."""
    order: list[nn.Module] = []

    def recorder(m: nn.Module) -> Callable[[Tensor], Tensor]:
        def forward(inp: Tensor) -> Tensor:
            order.append(m)
            return inp
        return forward

    with replaced_forwards({m: recorder(m) for m in model.modules()
                            if isinstance(m, BN_TYPES)}), buffers_kept(model):
        model(x)
    return order


# --------------------------------------------------------------------------------------------
# The statistics of a whole data set
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def whole_set_moments(model: nn.Module, inputs: Callable[[], Iterable[Tensor]],
                      order: list[nn.Module], *, caller: str, remedy: str = ""
                      ) -> dict[nn.Module, ChannelMoments]:
    """{batch-norm module: its input's :class:`ChannelMoments`} when all the samples that
    ``inputs()`` yields pass through ``model`` as one batch in train mode (each layer
    normalised by the mean and biased variance of its whole input), for the modules of
    ``order`` (:func:`batch_norm_call_order`). One pass over ``inputs()`` per layer, stopped
    at the layer, the layers before it normalising with the statistics already found; the
    other modules run as they are (put dropout off). A layer no pass reaches is left out."""
    if len({id(m) for m in order}) != len(order):
        raise ValueError(f"{caller}: a batch-norm module is called more than once per forward "
                         "pass, so its statistics over the whole data are not defined"
                         f"{remedy}")
    found: dict[nn.Module, ChannelMoments] = {}
    for layer in order:
        acc = ChannelMoments()

        def measure(inp: Tensor) -> Tensor:
            acc.add(inp)
            raise _StopForward

        forwards = {m: normalise_with(m, mom.mean, mom.biased_variance())
                    for m, mom in found.items()}
        forwards[layer] = measure
        with replaced_forwards(forwards):
            for x in inputs():
                try:
                    model(x)
                except _StopForward:
                    pass
        if acc.n:
            found[layer] = acc
    return found


@torch.no_grad()
def batch_norm_statistics(model: nn.Module, chunks: Sequence[tuple[Tensor, object]], *,
                          caller: str = "batch_norm_statistics"
                          ) -> dict[nn.Module, tuple[Tensor, Tensor]]:
    """{batch-norm module: (mean, biased variance)} per channel (float64) of its input when
    the samples of all ``chunks`` pass through the model as one batch in train mode, which is
    what batch norm normalises with there; computed a chunk at a time, one pass per layer
    (:func:`whole_set_moments`). The model's buffers (running statistics) and its modules'
    ``forward`` are as they were on return; ``caller`` names the evaluation in errors."""
    order = batch_norm_call_order(model, chunks[0][0][:2])
    moments = whole_set_moments(
        model, lambda: (xc for xc, _ in chunks), order, caller=caller,
        remedy="; pass smaller batches as data (batch statistics are then each batch's) or a "
               "larger memory_budget")
    return {m: (mom.mean, mom.biased_variance()) for m, mom in moments.items()}


@torch.no_grad()
def _pooled_moments(model: nn.Module, inputs: Callable[[], Iterable[Tensor]]
                    ) -> dict[nn.Module, ChannelMoments]:
    """Every batch-norm layer's input pooled over one pass in which each batch is normalised
    by its own statistics (train mode's output; the running statistics do not move)."""
    pooled: dict[nn.Module, ChannelMoments] = {}

    def own_statistics(m: nn.Module) -> Callable[[Tensor], Tensor]:
        def forward(inp: Tensor) -> Tensor:
            pooled.setdefault(m, ChannelMoments()).add(inp)
            return F.batch_norm(inp, None, None, m.weight, m.bias, True, 0.0, m.eps)
        return forward

    with replaced_forwards({m: own_statistics(m) for m in model.modules()
                            if isinstance(m, BN_TYPES)}):
        for x in inputs():
            model(x)
    return pooled


@checked_keywords()
@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, data: Data, *, layerwise: bool = True) -> None:
    """Replace every batch-norm layer's running mean and variance by those of all the samples
    of ``data``, however they are batched: per channel, the mean and the unbiased variance of
    the layer's input over every sample (and spatial position) when the whole set passes as
    one batch in train mode, dropout off (what torch's train mode stores with ``momentum=1``),
    pooled in float64 (:class:`ChannelMoments`). ``num_batches_tracked`` counts the non-empty
    batches.

    Args:
        model: its layers with ``track_running_stats=False`` (which normalise as the others
            do in the passes) and models without batch norm are left alone; the modules'
            train/eval flags are restored, and nothing changes when a pass fails.
        data: a batch ``(x, y)`` or an iterable of batches (read once per pass: a loader
            must deliver the same samples each time; a one-shot iterator is read into a list).
        layerwise: with more than one batch, one pass per layer (:func:`whole_set_moments`,
            each pass as long as the network up to its layer), exact at every layer.
            ``False``: one pass in which each batch is normalised by its
            own statistics, exact for a layer whose input passes through no other batch norm
            (and for every layer when ``data`` is one batch) but a deeper layer sees its input
            as each batch's normalisation shaped it (docs/design/trajectory.md gives the costs
            and the differences).
    """
    tracked = [m for m in model.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]
    if not tracked:
        return
    check_data(data)        # before iter(data): None's "'NoneType' object is not iterable"
    if not is_single_batch(data) and iter(data) is data:
        data = list(data)              # every pass reads the same batches
    device = tracked[0].running_mean.device     # a model without parameters has its buffers
    batches = [0]

    def inputs() -> Iterator[Tensor]:
        batches[0] = 0
        for x, _ in iterate_batches(data, device):
            batches[0] += 1
            yield x

    # one batch: its own statistics are the whole set's at every layer, in one pass
    one_batch = is_single_batch(data) or (isinstance(data, (list, tuple))
                                          and sum(1 for _ in iterate_batches(data)) <= 1)
    with eval_mode(model):             # dropout off
        if one_batch or not layerwise:
            moments = _pooled_moments(model, inputs)
        else:
            order = batch_norm_call_order(model, next(inputs())[:2])
            moments = whole_set_moments(
                model, inputs, order, caller="recompute_bn_statistics",
                remedy=" (pass layerwise=False to pool its inputs over every call, each batch "
                       "normalised by its own statistics)")
    for m in tracked:
        m.reset_running_stats()
        mom = moments.get(m)
        if mom is None:  # a layer the forward pass does not reach keeps reset statistics
            continue
        m.running_mean.copy_(mom.mean)
        m.running_var.copy_(mom.m2 / (mom.n - 1) if mom.n > 1
                            else torch.full_like(mom.m2, math.nan))
        m.num_batches_tracked.fill_(batches[0])
