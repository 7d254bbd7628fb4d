"""What "data" means for an operator or a measurement.

``data`` is either one batch ``(x, y)`` of tensors, or an iterable of such batches (a
``DataLoader``). Quantities are means over all samples, so batches are weighted by size.
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_map_only

from sgdlab.accuracy import ignored_target
from sgdlab.errors import UserError
from sgdlab.loss_settings import (class_weights, is_cross_entropy, is_elementwise, loss_name,
                                   loss_reduction)

Batch = tuple[Tensor, Tensor]
Data = Union[Batch, Iterable[Batch]]


# seeds of the fixed draw of a train-mode model's randomness: batch i uses _FIXED_SEED + i
_FIXED_SEED = 20_181_024
_fixing = False      # inside a fixed_randomness context (one thread computes at a time)


def _draws(m: nn.Module) -> bool:
    """Whether module ``m`` itself draws random numbers in a train-mode forward pass: dropout
    and RReLU, and the dropout applied by modules that hold its rate as a number
    (``m.dropout``) and call ``F.dropout`` themselves, with no dropout module: an
    ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` between its layers (of several),
    ``nn.MultiheadAttention`` on its weights, sgdlab's own recurrent models."""
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return m.p > 0
    if isinstance(m, nn.RNNBase):
        return m.dropout > 0 and m.num_layers > 1
    rate = getattr(m, "dropout", None)
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        return rate > 0
    return isinstance(m, nn.RReLU)


def stochastic_modules(model: nn.Module) -> list[str]:
    """The modules of ``model`` that draw random numbers in their forward pass as they are
    now (train mode: :func:`_draws`), as :func:`~sgdlab.models.modes.module_label` names
    them."""
    from sgdlab.models.modes import module_label

    return [module_label(name, m) for name, m in model.named_modules()
            if m.training and _draws(m)]


def draws_unseen(model: nn.Module, data: object, device: torch.device) -> bool:
    """Whether ``model``, with modules in train mode but none that :func:`stochastic_modules`
    knows to draw, still draws random numbers in a forward pass: ``F.dropout(h, p,
    self.training)`` or noise written in a ``forward`` of one's own. One no-grad pass over
    the data's first samples (:func:`_first_samples`; none for a loader it cannot read them
    from), the generators' states (the CPU's, and ``device``'s when it is a CUDA device)
    compared before and after it; the buffers a train-mode pass moves are put back, and the
    generators are as they were. A model that fails on them is left to the measurement."""
    from sgdlab.measure.passes import eager_module

    from .linear import kept_running_statistics

    if not any(m.training for m in model.modules()) or stochastic_modules(model):
        return False
    first = _first_samples(data)
    if first is None or not len(first[0]):
        return False

    model, device = eager_module(model), torch.device(device)
    cuda = device.type == "cuda"
    # the CPU generator as well as the device's, as fixed_randomness seeds both: a model on
    # a GPU may still draw on the CPU (torch.randperm(n), torch.rand(shape) without device)
    gens = [torch.default_generator] + (
        [torch.cuda.default_generators[device.index or 0]] if cuda else [])
    # the generators forked, not seeded: an outer fixed draw goes on as if no probe had run
    with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda"), \
            kept_running_statistics(model), torch.no_grad():
        states = [g.get_state() for g in gens]
        try:
            model(first[0].to(device))
        except Exception:
            return False
        return not all(torch.equal(g.get_state(), s) for g, s in zip(gens, states))


@contextlib.contextmanager
def fixed_randomness(model: nn.Module, device: torch.device, index: int = 0) -> Iterator[None]:
    """Within: the random generators (CPU, and ``device`` when it is a CUDA device) seeded for
    draw ``index`` when ``model`` has modules in train mode, so that a measurement that runs
    the model's forward pass again (every product of an operator, every pass over a batch)
    sees the same dropout masks each time, and leaves the global generators as they were.
    Nested inside another such context it changes nothing: the outer draw goes on."""
    global _fixing
    if _fixing or not any(m.training for m in model.modules()):
        yield
        return
    device = torch.device(device)
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda"):
        # the forked generators only: torch.manual_seed would also reseed every other
        # accelerator's, which fork_rng does not restore (and costs ~1 ms in traceback
        # capture for the lazily seeded ones)
        torch.default_generator.manual_seed(_FIXED_SEED + index)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(_FIXED_SEED + index)
        _fixing = True
        try:
            yield
        finally:
            _fixing = False


# plain_checkpoints' state: the blocks open in any thread (torch's CheckpointFunction is
# swapped while it is not zero, and put back with the last) and torch's class while swapped
_plain_lock = threading.Lock()
_plain_open = 0
_checkpoint_function = None


class _Uncheckpointed:
    """``torch.utils.checkpoint.CheckpointFunction`` run plainly: the function's forward pass
    with its graph, as if the model had not checkpointed it."""

    @staticmethod
    def apply(function, preserve_rng_state, *args):
        return function(*args)


@contextlib.contextmanager
def plain_checkpoints() -> Iterator[None]:
    """Within: ``torch.utils.checkpoint.checkpoint(..., use_reentrant=True)`` runs its function
    plainly instead of under ``no_grad`` (the values are the same; only the activations are
    kept). The reentrant form supports ``.backward()`` alone: under ``torch.autograd.grad`` it
    fails when an input needs a gradient, and when none does, the parameters inside get no
    gradient at all, so gradients and Hessian blocks of those layers were silently zero
    (``UNUSED_ZERO``) and vmapped per-sample gradients failed. The non-reentrant form needs
    nothing: autograd differentiates through it, twice as well. The swap is process-wide, so
    the worker threads of a forward pass (``nn.DataParallel``'s replicas) run plainly too
    (another thread training meanwhile only keeps its activations: the same values); torch's
    class is back once the last block in any thread ends, whatever order the threads leave
    in."""
    global _plain_open, _checkpoint_function
    import torch.utils.checkpoint as checkpoint

    with _plain_lock:
        if _plain_open == 0:
            found = getattr(checkpoint, "CheckpointFunction", _Uncheckpointed)
            if found is _Uncheckpointed:    # none to swap (another torch), or swapped already
                swapped = False
            else:
                _checkpoint_function, checkpoint.CheckpointFunction = found, _Uncheckpointed
                swapped = True
        else:
            swapped = True
        _plain_open += swapped
    try:
        yield
    finally:
        if swapped:
            with _plain_lock:
                _plain_open -= 1
                if _plain_open == 0:
                    checkpoint.CheckpointFunction = _checkpoint_function


def _changed_embedding(m: nn.Module) -> tuple[nn.Module, bool, bool] | None:
    """``(m, sparse, scale_grad_by_freq)`` for an embedding whose flags
    :func:`_embeddings_dense` turns off; None for any other module."""
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and (m.sparse or m.scale_grad_by_freq):
        return m, m.sparse, m.scale_grad_by_freq
    return None


@contextlib.contextmanager
def _embeddings_dense(changed: list[tuple[nn.Module, bool, bool]]) -> Iterator[None]:
    """Within: the embeddings of ``changed`` (:func:`_changed_embedding`; ``nn.Embedding``,
    ``nn.EmbeddingBag``) with both flags off, so they give their weights the loss's own
    gradient, dense. Built with ``sparse=True``, the forward pass and the gradient's values
    are the same; autograd's sparse gradient is only another layout of them, one that the
    measurements' flat vectors, per-sample gradients and second derivatives cannot take
    (every measurement failed on it: "reshape is not implemented for sparse tensors"). Built
    with ``scale_grad_by_freq=True``, backward divides each row's gradient by its token's
    count in the batch: no derivative of the loss, and one that depends on how the data is
    batched (the Hessian of a 6-token bag model was 0.024 off the loss's, its gradient norm
    0.017, and one batch against two disagreed); the measurements differentiate the loss.
    The flags are put back on exit."""
    for m, _, _ in changed:
        m.sparse = m.scale_grad_by_freq = False
    try:
        yield
    finally:
        for m, sparse, by_freq in changed:
            m.sparse, m.scale_grad_by_freq = sparse, by_freq


class _ComposedEmbeddingBag(nn.EmbeddingBag):
    """``nn.EmbeddingBag`` written out in ops with a double backward (torch's
    ``_embedding_bag_backward`` has none): the same sum, mean or max over each bag, a row of a
    (B, L) input or a run of a 1-d one between ``offsets``, padding tokens left out and an
    empty bag 0."""

    def forward(self, input: Tensor, offsets: Tensor | None = None,
                per_sample_weights: Tensor | None = None) -> Tensor:
        if self._refused(input, per_sample_weights):
            return super().forward(input, offsets, per_sample_weights)   # torch's own error
        if input.dim() == 1 and offsets is not None and offsets.dim() == 1:
            return self._bags_of_runs(input, offsets, per_sample_weights)
        if input.dim() != 2 or offsets is not None:
            return super().forward(input, offsets, per_sample_weights)   # torch's own error
        e = self._weighted_rows(input, per_sample_weights)
        if self.padding_idx is None:
            if self.mode == "max":
                return e.amax(1)
            return e.sum(1) if self.mode == "sum" else e.mean(1)
        keep = (input != self.padding_idx).unsqueeze(-1)
        if self.mode == "max":
            return torch.where(keep.any(1), torch.where(keep, e, -torch.inf).amax(1), 0.0)
        out = (e * keep).sum(1)
        return out if self.mode == "sum" else out / keep.sum(1).clamp_min(1)

    def _weighted_rows(self, input: Tensor, per_sample_weights: Tensor | None) -> Tensor:
        """Each token's embedding row, times its weight where ``per_sample_weights`` are
        given."""
        e = F.embedding(input, self.weight, None, self.max_norm, self.norm_type)
        if per_sample_weights is not None:
            e = e * per_sample_weights.unsqueeze(-1).to(e.dtype)
        return e

    def _refused(self, input: Tensor, per_sample_weights: Tensor | None) -> bool:
        """Whether torch's bag refuses these arguments, where the ops would compute something:
        weights per token outside mode "sum", or of another shape than the input (they would
        broadcast); rows of no token (a mean 0/0). Weights of another dtype are taken in the
        weight's (a measurement's float64 copy of a model may meet float32 ones)."""
        if input.dim() == 2 and input.shape[1] == 0:
            return True
        return per_sample_weights is not None and (
            self.mode != "sum" or per_sample_weights.shape != input.shape)

    def _bags_of_runs(self, input: Tensor, offsets: Tensor,
                      per_sample_weights: Tensor | None) -> Tensor:
        starts = offsets[:-1] if self.include_last_offset else offsets
        positions = torch.arange(len(input), device=input.device)
        bag = torch.searchsorted(starts, positions, right=True) - 1      # each token's bag
        e = self._weighted_rows(input, per_sample_weights)
        keep = (torch.ones_like(input, dtype=torch.bool) if self.padding_idx is None
                else input != self.padding_idx)
        shape = (len(starts), e.shape[1])
        if self.mode == "max":
            src = torch.where(keep.unsqueeze(-1), e, -torch.inf)
            out = e.new_full(shape, -torch.inf).scatter_reduce(
                0, bag.unsqueeze(-1).expand_as(e), src, "amax")
            return torch.where(out == -torch.inf, 0.0, out)
        out = e.new_zeros(shape).index_add(0, bag, e * keep.unsqueeze(-1))
        if self.mode == "sum":
            return out
        count = e.new_zeros(len(starts)).index_add(0, bag, keep.to(e.dtype))
        return out / count.clamp_min(1).unsqueeze(-1)


@contextlib.contextmanager
def bags_composed(model: nn.Module) -> Iterator[None]:
    """Within: ``model``'s ``nn.EmbeddingBag`` layers compute their bags in ops with a double
    backward (:class:`_ComposedEmbeddingBag`, the same function): torch's own has none, and
    every Hessian and GGN product failed on "the derivative for '_embedding_bag_backward' is
    not implemented". Their gradient is the loss's own, dense and unscaled, whatever
    ``sparse`` and ``scale_grad_by_freq`` say (as :func:`_embeddings_dense` makes torch's).
    The class is put back on exit.

    Entered where torch's bag cannot serve: a forward pass whose graph is differentiated
    twice (:func:`~sgdlab.operators.hessian.second_order_forward`: Hessian and GGN products,
    and the estimators and diagonals built on them), and the vmapped per-sample gradients
    (:func:`~sgdlab.operators.per_sample.checked_per_sample_gradients`: torch's bag has no
    batching rule, and vmap's fallback, a call per sample, was 1.25-2x slower than these
    ops). Every other pass (gradients, sign-gradient ascent, losses) keeps torch's fused
    bag, which is faster: the composition forms the (B, L, D) embeddings
    (docs/design/curvature.md)."""
    bags = [m for m in model.modules() if type(m) is nn.EmbeddingBag]
    if not bags:
        yield
        return
    for m in bags:
        m.__class__ = _ComposedEmbeddingBag
    try:
        yield
    finally:
        for m in bags:
            m.__class__ = nn.EmbeddingBag


# the models whose hooks a gradient_hooks_held block holds now: a block within (each batch's
# passes inside an operator's product) finds their tables empty, and skips the walk
_hooks_held: set[int] = set()


def _global_hook_tables() -> dict[int, dict]:
    """torch's global module backward (pre-)hook tables that hold a hook, by id."""
    from torch.nn.modules import module as torch_module

    return {id(t): t for t in (torch_module._global_backward_hooks,
                               torch_module._global_backward_pre_hooks) if t}


def _add_hook_tables(m: nn.Module, tables: dict[int, dict]) -> None:
    """Add module ``m``'s backward (pre-)hook tables and its own parameters' tensor hook
    tables that hold a hook to ``tables``, by id: a table seen twice (a tied parameter, a
    module registered twice) is held once."""
    for t in (m._backward_hooks, m._backward_pre_hooks):
        if t:
            tables[id(t)] = t
    for p in m._parameters.values():
        if p is not None and p._backward_hooks:
            tables[id(p._backward_hooks)] = p._backward_hooks


@contextlib.contextmanager
def _tables_held(model: nn.Module, tables: dict[int, dict]) -> Iterator[None]:
    """Within: the hook ``tables`` of ``model`` empty; put back on exit, in their order."""
    held = [(t, dict(t)) for t in tables.values()]
    for t, _ in held:
        t.clear()      # in place: autograd and the handles hold these very dicts
    _hooks_held.add(id(model))
    try:
        yield
    finally:
        _hooks_held.discard(id(model))
        for t, hooks in held:
            added = dict(t)                 # registered within: after the user's, as if later
            t.clear()
            t.update(hooks)
            t.update(added)


@contextlib.contextmanager
def gradient_hooks_held(model: nn.Module) -> Iterator[None]:
    """Within: none of the hooks that change gradients in backward runs: a parameter's
    tensor hooks (``p.register_hook``: rescaling, clipping), the model's module backward hooks
    (``register_full_backward_hook``, ``register_full_backward_pre_hook``, the older
    ``register_backward_hook``) and torch's global ones
    (``nn.modules.module.register_module_full_backward_hook`` and ``_pre_hook``). They are a
    training-time device, not part of the landscape: a x0.5 hook on every parameter halved the
    gradient norm the measurements reported, while the torch.func ones never saw it. The
    hooks are put back on exit, in their order; forward hooks (weight norm's) still run.
    ``register_post_accumulate_grad_hook`` hooks run only in ``.backward()``, which no
    measurement calls."""
    if id(model) in _hooks_held:
        yield
        return
    # one walk over the modules (about half the time of model.parameters() and
    # model.modules() apart: 0.5 vs 1 ms on 201 modules)
    tables = _global_hook_tables()
    for m in model.modules():
        _add_hook_tables(m, tables)
    with _tables_held(model, tables):
        yield


@contextlib.contextmanager
def loss_derivatives(model: nn.Module) -> Iterator[None]:
    """Within: the derivatives autograd gives in ``model``'s parameters are those of the loss
    itself: embeddings' dense and unscaled (:func:`_embeddings_dense`), no gradient hook run
    (:func:`gradient_hooks_held`). Every measurement differentiates within it; the training
    loop's ``.backward()`` runs outside, and so honours the hooks. Embedding bags stay
    torch's: a pass differentiated twice, and the vmapped per-sample gradients, compose them
    themselves (:func:`bags_composed`)."""
    # the contexts' walks over the modules in one (per_sample_gradients on the digits
    # MLP: see docs/design/curvature.md); the hooks skipped when held already, as there
    hold = id(model) not in _hooks_held
    changed, tables = [], _global_hook_tables() if hold else {}
    for m in model.modules():
        c = _changed_embedding(m)
        if c is not None:
            changed.append(c)
        if hold:
            _add_hook_tables(m, tables)
    with _embeddings_dense(changed), (
            _tables_held(model, tables) if hold else contextlib.nullcontext()):
        yield


def is_single_batch(data: Data) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, Tensor) for t in data))


def check_loss_reduction(loss_fn: object) -> None:
    """A ``UserError`` for a loss that returns one value per sample (``reduction="none"``):
    measurements differentiate and average the loss of a batch, a scalar."""
    if loss_reduction(loss_fn) == "none":
        raise UserError(
            f"loss_fn {loss_name(loss_fn)}(reduction='none') returns one loss per sample; "
            "measurements differentiate the batch's loss: use reduction='mean'")


def check_target_shape(loss_fn: object, outputs: Tensor, targets: Tensor, *,
                       where: str = "") -> None:
    """A ``UserError`` for an element-wise loss given targets of another shape than the
    outputs: (N, 1) against (N,) broadcasts to (N, N), every output against every target; and
    for a cross-entropy, floating-point targets not shaped as the outputs and integer labels
    not shaped as the outputs without their class axis. ``where``: the samples looked at, in
    the message (" on the data's first 2 samples")."""
    if (is_cross_entropy(loss_fn) and targets.is_floating_point()
            and outputs.shape != targets.shape):
        # torch reads floating-point targets as class probabilities, shaped as the outputs,
        # and says only "expected target dtype to be Long"
        raise UserError(
            f"loss_fn {loss_name(loss_fn)} is given{where} {targets.dtype} targets of shape "
            f"{tuple(targets.shape)} for outputs of shape {tuple(outputs.shape)}: class "
            "labels are integers (y.long()); floating-point targets are class probabilities "
            "of the outputs' shape")
    if (is_cross_entropy(loss_fn) and not targets.is_floating_point() and outputs.dim() >= 2
            and targets.shape != outputs.shape[:1] + outputs.shape[2:]):
        # labels kept as a column, (N, 1): torch says only "0D or 1D target tensor expected,
        # multi-target not supported"
        labels = outputs.shape[:1] + outputs.shape[2:]
        fix = " (y.squeeze(1))" if targets.shape == labels[:1] + (1,) + labels[1:] else ""
        raise UserError(
            f"loss_fn {loss_name(loss_fn)} is given{where} class labels of shape "
            f"{tuple(targets.shape)} for outputs of shape {tuple(outputs.shape)}: it takes one "
            f"label per sample (and position), of shape {tuple(labels)}{fix}")
    if is_elementwise(loss_fn) and outputs.shape != targets.shape:
        raise UserError(
            f"loss_fn {loss_name(loss_fn)} compares{where} outputs of shape "
            f"{tuple(outputs.shape)} with targets of shape {tuple(targets.shape)}: torch "
            "broadcasts them, every output against every target; give the targets the "
            "outputs' shape (y[:, None] for one output)")


def check_batch_loss(loss_fn: object, data: Data) -> None:
    """A ``UserError`` for a loss whose batch values do not average to the loss over all the
    samples, on data in several batches. A measurement takes ``loss_fn``'s value on a batch as
    that batch's loss and weights batches by their size, which is the mean over samples for a
    mean-reduced loss; a summed one (``reduction="sum"``) would be counted again, and a
    weighted mean (cross-entropy / NLL with class ``weight=``, or with targets equal to its
    ``ignore_index``) is normalised per batch by that batch's sum of weights, so the size-
    weighted mean of the batches is not the weighted mean over the whole set (the result
    would depend on how the samples are batched). On one ``(x, y)`` batch, or a list holding
    one (or a ``DataLoader`` of one batch), the loss is measured as it is (one batch's weight
    cancels). Ignored targets are looked for where they can be read without a pass over the
    data (:func:`_readable_targets`: batches, a ``DataLoader`` over a ``TensorDataset``). A
    loss per sample (``reduction="none"``) is refused by :func:`check_loss_reduction`, data
    that is no batch by :func:`check_data`."""
    check_data(data)
    check_loss_reduction(loss_fn)
    if is_single_batch(data) or (isinstance(data, (list, tuple)) and len(data) == 1
                                 and is_single_batch(data[0])) or _one_loader_batch(data):
        return
    if loss_reduction(loss_fn) == "sum":
        raise UserError(
            f"loss_fn {loss_name(loss_fn)}(reduction='sum') on data in batches: the "
            "measurement weights each batch's loss by its size, which assumes the mean over "
            "the batch; use reduction='mean', or pass the samples as one (x, y) batch")
    weighted = _weighted_mean(loss_fn, data)
    if weighted is not None:
        raise UserError(
            f"{weighted[0]}, normalised per batch by the batch's own sum of weights, on data in "
            "batches: the batches' losses weighted by their sizes are not the weighted mean "
            "over all samples; pass the samples as one (x, y) batch")


def chunk_loss_problem(loss_fn: object, y: Tensor) -> str | None:
    """Why the losses of chunks of one batch with targets ``y``, weighted by their sizes, do
    not average to the batch's loss, as :func:`check_batch_loss` finds for batches: a summed
    loss, or a weighted mean (class weights, ignored targets among ``y``); None: they do."""
    if loss_reduction(loss_fn) == "sum":
        return f"loss_fn {loss_name(loss_fn)}(reduction='sum') sums over the batch"
    weighted = _weighted_mean(loss_fn, (y, y))      # read as one batch with targets y
    return None if weighted is None else weighted[0]


def _weighted_mean(loss_fn: object, data: Data) -> tuple[str, str] | None:
    """What makes a cross-entropy / NLL loss's batch value a weighted mean of its samples'
    losses (class weights, ignored targets in ``data``: :func:`_readable_targets`), and how
    one sample's loss differs from its share of it; None: a plain mean."""
    if loss_reduction(loss_fn) in ("sum", "none"):
        return None
    name = loss_name(loss_fn)
    weight = class_weights(loss_fn)
    if isinstance(weight, Tensor) and bool((weight != weight.flatten()[0]).any()):
        return (f"loss_fn {name}(weight=...) is a mean weighted by the class weights",
                "they cancel in one sample's loss")
    ignore = ignored_target(loss_fn)     # accuracy's rule: the target the loss leaves out
    if ignore is None:
        return None
    if any(not y.is_floating_point() and bool((y == ignore).any())
           for y in _readable_targets(data)):
        return (f"loss_fn {name}(ignore_index={ignore}) averages over the "
                "targets not ignored, and the data has ignored ones",
                "an ignored sample's own loss has zero gradient")
    return None


def _one_loader_batch(data: Data) -> bool:
    """Whether ``data`` is a ``DataLoader`` that gives all its samples in one batch."""
    from torch.utils.data import DataLoader

    try:
        return isinstance(data, DataLoader) and data.batch_sampler is not None and len(data) == 1
    except TypeError:       # an iterable dataset without a length
        return False


def _readable_targets(data: Data) -> list[Tensor]:
    """The targets of ``data`` that can be looked at without a pass over it: those of one
    batch or a list of batches, and the targets tensor of a ``DataLoader`` that reads each
    sample of a ``TensorDataset(x, y)`` once per pass (sequential or shuffled without
    replacement, default collation, no batch dropped); none of an iterator (read once) or of
    any other loader (a pass may cost as much as the measurement)."""
    if is_single_batch(data):
        return [data[1]]
    if isinstance(data, (list, tuple)):
        return [b[1] for b in data
                if isinstance(b, (list, tuple)) and len(b) == 2 and isinstance(b[1], Tensor)]
    from torch.utils.data import (BatchSampler, DataLoader, RandomSampler, SequentialSampler,
                                  TensorDataset, default_collate)

    if not (isinstance(data, DataLoader) and isinstance(data.dataset, TensorDataset)
            and len(data.dataset.tensors) == 2 and type(data.batch_sampler) is BatchSampler
            and not data.drop_last and data.collate_fn is default_collate):
        return []
    sampler = data.batch_sampler.sampler
    if type(sampler) is SequentialSampler or (
            type(sampler) is RandomSampler and not sampler.replacement
            and sampler.num_samples == len(data.dataset)):
        return [data.dataset.tensors[1]]
    return []


def check_mean_of_samples(loss_fn: object, data: Data, who: str) -> None:
    """A ``UserError`` for a loss whose batch value is not the mean of its samples' losses,
    where ``who`` sets per-sample gradients (each one sample's loss alone) against the batch's
    loss, gradient or curvature: a sum (``reduction="sum"``, N times the mean), class weights
    (``weight=``: a weighted mean, while they cancel in one sample's loss) and ignored targets
    (``ignore_index`` present in the targets: the mean over the others, while an ignored
    sample's own loss has zero gradient). Targets are looked at as by
    :func:`_readable_targets`. A plain callable is taken to be a mean."""
    if loss_reduction(loss_fn) == "sum":
        what = f"loss_fn {loss_name(loss_fn)}(reduction='sum') is N times the mean"
    else:
        weighted = _weighted_mean(loss_fn, data)
        what = None if weighted is None else f"{weighted[0]}, while {weighted[1]}"
    if what is not None:
        raise UserError(
            f"{who} sets per-sample gradients (each one sample's loss alone) against the "
            f"batch's loss, gradient or curvature, which assumes the batch loss is the mean of "
            f"the samples' losses: {what}; use a plain mean-reduced loss")


def check_data(data: object) -> None:
    """A ``UserError`` for what is often passed where a batch or batches go: None (a training
    callback's ``ctx.batch`` before the first step), one tensor (the inputs alone), the
    training loop's :class:`~sgdlab.data.Dataset` record, or a tuple of more tensors than
    (x, y)."""
    if data is None:
        # most often a callback's ctx.batch at step 0 ("'NoneType' object is not iterable")
        raise UserError("data is None: measurements take a batch (x, y) or an iterable of "
                        "batches (in a training callback, ctx.batch is None at step 0, before "
                        "the first batch: measure on ctx.data.train or a fixed batch)")
    if isinstance(data, Tensor):
        # iterated by rows: "batch 0 is not an (inputs, targets) pair of tensors (got Tensor)"
        raise UserError(f"data is one tensor of shape {tuple(data.shape)}: measurements take a "
                        "batch (x, y) of inputs and targets, or an iterable of batches")
    if all(hasattr(data, a) for a in ("x_train", "y_train")):
        raise UserError("data is a sgdlab.data.Dataset: measurements take a batch (x, y) or "
                        "an iterable of batches; pass data.train (its training examples) or "
                        "data.test")
    if not (hasattr(data, "__iter__") or hasattr(data, "__getitem__")):
        # a number or another object: "'int' object is not iterable" from deep inside
        raise UserError(f"data is {data!r} (a {type(data).__name__}): measurements take a "
                        "batch (x, y) or an iterable of batches")
    if (isinstance(data, tuple) and len(data) != 2 and data
            and all(isinstance(t, Tensor) for t in data)):
        raise UserError(f"data is a tuple of {len(data)} tensors: a batch is one (inputs, "
                        "targets) pair")
    if is_single_batch(data):
        check_batch_rows(*data)
    if (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], Tensor)
            and isinstance(data[0], (tuple, list, dict))):
        # read as two batches: (x1, x2) as a first batch's inputs and targets, and a shape
        # error from the model ("mat1 and mat2 shapes cannot be multiplied")
        raise UserError(f"data is a batch whose inputs are a {type(data[0]).__name__} of "
                        "several tensors: a batch is (inputs, targets) with the inputs one "
                        "tensor; wrap the model in a module that takes one tensor (the inputs "
                        "concatenated) and splits it")
    from torch.utils.data import Dataset as TorchDataset, IterableDataset

    # a map-style dataset iterates over single samples, without a batch axis: the model then
    # ran on unbatched inputs ("mat1 and mat2 shapes cannot be multiplied", "slice() cannot
    # be applied to a 0-dim tensor") or read features as samples
    if isinstance(data, TorchDataset) and not isinstance(data, IterableDataset):
        raise UserError(f"data is a torch Dataset ({type(data).__name__}), whose items are "
                        "single samples: measurements take a batch (x, y) or an iterable of "
                        "batches; wrap it in a DataLoader(dataset, batch_size=...)")
    if _unbatched_tensor_loader(data):
        # each item a row of the tensors: len(x) counted its features as samples, and the
        # per-sample passes sliced features ("slice() cannot be applied to a 0-dim tensor")
        raise UserError("data is a DataLoader with batch_size=None over a TensorDataset: its "
                        "items are single samples without a batch axis, while measurements "
                        "take batches (x, y); give the loader a batch_size")
    why = _random_sample_set(data)
    if why is not None:
        # each pass over the loader was another data set: Lanczos' products were of different
        # matrices (eigenvalues of none of them) and two mean losses of one model differed
        raise UserError(f"data is a DataLoader that {why}, so every pass over it reads "
                        "another set of samples and each product or loss of a measurement "
                        "would be of other data: measure on a loader whose passes read the "
                        "same samples (shuffle=False, or drop_last=False), or on a fixed batch")


def _unbatched_tensor_loader(data: object) -> bool:
    """Whether ``data`` is a ``DataLoader`` without automatic batching (``batch_size=None``)
    over a ``TensorDataset``, whose items are then single rows (a dataset of one's own may
    give whole batches so)."""
    from torch.utils.data import DataLoader, TensorDataset

    return (isinstance(data, DataLoader) and data.batch_sampler is None
            and isinstance(data.dataset, TensorDataset))


def check_reshuffled_batches(model: nn.Module, data: Data) -> None:
    """A ``UserError`` for a ``DataLoader`` that shuffles, given a model whose loss depends on
    how the samples are batched: batch norm that normalises by each batch's statistics (train
    mode, or no running statistics) across several batches, or dropout drawn in train mode
    (one draw of the masks per batch, whose rows meet other samples at every pass). Each pass
    then makes other batches, and each product of a curvature operator was of another matrix
    (the model's mode is the operators' own; functions that set a mode of their own, or read
    such a loader once, check what they run)."""
    from torch.utils.data import DataLoader, RandomSampler, SubsetRandomSampler

    from sgdlab.models.modes import first_batch_norm, uses_batch_statistics

    # a subset sampler reorders its indices at every pass too
    shuffles = (RandomSampler, SubsetRandomSampler)
    if not (isinstance(data, DataLoader) and isinstance(data.sampler, shuffles)):
        return
    if uses_batch_statistics(model) and not _one_loader_batch(data):
        layer = first_batch_norm(model, training=True) or first_batch_norm(model)
        why = f"{layer} normalises each batch by its own statistics"
    elif stochastic := stochastic_modules(model):
        why = f"{stochastic[0]} in train mode draws one set of dropout masks per batch"
    else:
        return
    raise UserError(f"data is a DataLoader that shuffles, so every pass over it makes other "
                    f"batches, and {why}: each curvature product would be of another "
                    "batching. Measure with shuffle=False, or call model.eval() first")


def _random_sample_set(data: object) -> str | None:
    """How a ``DataLoader``'s passes read different sets of samples (a random subset or
    multiset each), or None: a loader that shuffles all its samples, or reads them in order,
    reads the same set every pass."""
    from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

    if not isinstance(data, DataLoader) or data.batch_sampler is None:
        return None
    sampler = data.sampler
    if isinstance(sampler, WeightedRandomSampler):
        return "draws its samples by weight (WeightedRandomSampler)"
    if not isinstance(sampler, RandomSampler):
        return None
    if sampler.replacement:
        return "draws its samples with replacement"
    n, drawn = len(sampler.data_source), sampler.num_samples
    if n and drawn % n:
        return f"draws num_samples={drawn} of its {n} samples at random"
    batch = data.batch_size
    if data.drop_last and batch and drawn % batch:
        return (f"shuffles its {n} samples and drops the last partial batch (drop_last=True): "
                f"another {drawn % batch} of them left out of each pass")
    return None


def check_batch_rows(x: Tensor, y: Tensor, which: str = "the batch") -> None:
    """A ``UserError`` for inputs and targets of another length along dimension 0: the rows
    of both are the samples, which per-sample gradients, chunks and probes slice alike (a
    sequence-first batch, (T, N, F) inputs for N targets, failed inside vmap: "Expected all
    tensors to have the same size in the mapped dimension"). One target for several inputs
    is a placeholder (a loss that ignores its targets) unless it reads as one sequence's:
    inputs of one along dimension 1, (T, 1, F) or (T, 1) tokens (not (N, 1, H, W) images)."""
    # (no targets at all: batches read for their inputs alone, as batch norm's statistics)
    if x.dim() and y.dim() and len(y) and len(x) != len(y):
        if len(y) == 1 and not (x.dim() in (2, 3) and x.shape[1] == 1):
            return                # a placeholder: no sample count to compare, no sequence
        placeholder = (" (a placeholder target for a loss that ignores them: one per sample, "
                       "e.g. torch.zeros(len(x)))" if len(y) == 1 else "")
        raise UserError(
            f"data: {which} has {len(x)} inputs along dimension 0 but {len(y)} targets; "
            "measurements read dimension 0 of both as the samples: give a sequence model "
            f"batch-first inputs (batch_first=True, or transpose inside its forward){placeholder}")


def _other_dtype(model: nn.Module, x: Tensor) -> torch.dtype | None:
    """The dtype of ``model``'s floating parameters (all of one) when the inputs ``x`` are of
    another floating dtype, or integers to a model without embeddings (images of bytes given
    to a model that wants features); None otherwise."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    numeric = not (x.is_complex() or x.dtype == torch.bool)     # floating or integer
    # integers to a model that embeds tokens are its input: no probe pass (an embedding's
    # max_norm would renormalise its rows in place before that is refused by name)
    if not x.is_floating_point() and any(
            isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules()):
        return None
    if not (numeric and x.dim() and len(x) and len(dtypes) == 1
            and x.dtype not in dtypes):
        return None
    (dtype,) = dtypes
    return dtype


def _probe_forward(model: nn.Module, x: Tensor) -> object:
    """``model``'s outputs on ``x`` in a no-grad, eval-mode forward pass (dropout off, running
    statistics read, none moved: no random draw and no state changed)."""
    from sgdlab.models.modes import eval_mode

    with torch.no_grad(), eval_mode(model):
        return model(x)


def _dtype_error(dtype: torch.dtype, x: Tensor, reason: str) -> UserError:
    if not x.is_floating_point():
        # Dataset.to(dtype=) casts floating inputs only (integers are token indices): the
        # tensor itself is what to cast
        return UserError(
            f"the data's inputs are integers ({x.dtype}) but the model's parameters are "
            f"{dtype}, and its forward pass refuses them ({reason}): integer inputs are token "
            f"indices for an nn.Embedding; give features as floating point, x.to({dtype}) "
            "(images of bytes: x.float() / 255)")
    return UserError(
        f"the model's parameters are {dtype} but the data's inputs are {x.dtype}, and "
        f"its forward pass refuses them ({reason}): cast one to the other, "
        f"model.to({x.dtype}) or data.to(dtype={dtype}) (a sgdlab Dataset); a run config "
        "casts both to its train.dtype")


def dtype_refusal(model: nn.Module, x: Tensor, reason: str = "") -> UserError | None:
    """The :class:`UserError` for inputs ``x`` of another dtype than ``model``'s parameters
    (all of one dtype; integers to a model without embeddings, :func:`_other_dtype`) when a
    no-grad, eval-mode forward pass of one example refuses them and runs on them cast; None
    otherwise (a model that casts its own inputs runs on them). ``reason``:
    the first line of torch's error, when one was raised already."""
    dtype = _other_dtype(model, x)
    if dtype is None:
        return None
    try:
        _probe_forward(model, x[:1])
    except RuntimeError as e:
        if not _cast_runs(model, x[:1], dtype):
            return None
        return _dtype_error(dtype, x, reason or str(e).splitlines()[0])
    return None


def _cast_runs(model: nn.Module, x: Tensor, dtype: torch.dtype) -> bool:
    """Whether ``model``'s probe pass runs on ``x`` cast to ``dtype``, for inputs it refused;
    floating inputs always count as cast. A model that reads integers itself (one-hot rows, a
    parameter indexed by them) and fails for another reason is left its own error, not told
    to give floats."""
    if x.is_floating_point():
        return True
    try:
        _probe_forward(model, x.to(dtype))
    except Exception:
        return False
    return True


# samples of the first batch a measurement's entry runs the model on (a couple: a model that
# squeezes its outputs drops the sample axis of one)
_PROBE = 2


def loss_refusal(model: nn.Module, loss_fn: object, x: Tensor, y: Tensor, *,
                 where: str = "") -> UserError | None:
    """The :class:`UserError` of :func:`loss_value_refusal` for ``loss_fn`` on ``model``'s
    outputs of the first :data:`_PROBE` samples of ``x`` (one no-grad, eval-mode forward
    pass) against those of ``y``; None when it returns one number or the model fails on
    them."""
    if not len(x):
        return None
    try:
        out = _probe_forward(model, x[:_PROBE])
    except Exception:
        return None
    return loss_value_refusal(loss_fn, out, y[:_PROBE], where=where)


def _first_samples(data: Data) -> Batch | None:
    """The first :data:`_PROBE` samples ``(x, y)`` of ``data`` where they can be read without
    drawing a batch: one batch or a list of batches, and a ``DataLoader`` over a
    ``TensorDataset`` that collates with torch's default (a ``collate_fn`` of one's own may
    cast or reshape the samples); None for other loaders and iterators (a shuffling loader's
    first batch would draw from the global generator)."""
    from torch.utils.data import DataLoader, TensorDataset, default_collate, default_convert

    batch = None
    if is_single_batch(data):
        batch = data
    elif isinstance(data, (list, tuple)):
        batch = next((b for b in data if isinstance(b, (list, tuple)) and len(b) == 2), None)
    elif (isinstance(data, DataLoader) and isinstance(data.dataset, TensorDataset)
          and len(data.dataset.tensors) == 2
          and data.collate_fn in (default_collate, default_convert)):
        batch = data.dataset.tensors
    if batch is None or not all(isinstance(t, Tensor) and t.dim() for t in batch):
        return None
    return batch[0][:_PROBE], batch[1][:_PROBE]


def check_model_data(model: nn.Module, loss_fn: object, data: Data, *,
                     loss_may_read_params: bool = False, loss_runs: bool = False,
                     own_mode: bool = True) -> None:
    """A ``UserError`` for data the model and the loss take without failing but not as meant,
    found on the first samples (:func:`_first_samples`) before a measurement computes anything:
    inputs of another floating dtype than the model's parameters that the model refuses
    (as :func:`dtype_refusal`, where torch would fail mid-measurement: "mat1 and mat2 must
    have the same dtype"), targets of another shape than the outputs of an element-wise
    loss (:func:`check_target_shape`, training's check: torch only warns, and the loss,
    gradients and curvature would be those of every output against every target), and a
    loss of one's own that returns a value per sample (:func:`loss_value_refusal`; a torch
    loss says its reduction, :func:`check_loss_reduction`). One no-grad, eval-mode forward
    pass of those samples at most, run for an element-wise loss, a loss of one's own or inputs
    of another dtype only, and shared by the checks. A loss of one's own that reads the
    model's parameters besides its outputs (a weight-decay term) is refused too, unless
    ``loss_may_read_params``: the caller takes such a loss (per-sample gradients, whose
    centred spread it shifts by one vector alike, and the full gradient, taken through the
    model). ``loss_runs``: the forward pass runs for any loss, and a loss that fails on the outputs
    and targets is a ``UserError`` naming both shapes (a run config's loss by name, whose
    failure does not depend on the batch: refused before the run is recorded). Otherwise a
    model or a loss that fails on the samples is left to the caller's own pass, which reports
    it in its context; the model's failure is left to it in either case (a model may need more
    samples than the two probed). ``own_mode``: the measurement runs the model in its own
    train/eval mode, so a batch of one that batch norm normalises by its own statistics is
    refused (:func:`check_batches_of_one`); False where the measurement sets the mode or the
    statistics itself."""
    check_data(data)
    if own_mode:
        check_batches_of_one(model, data)
    first = _first_samples(data)
    param = next(model.parameters(), None)
    if first is None or param is None or not len(first[0]):
        return
    x, y = first[0].to(param.device), first[1].to(param.device)
    dtype = _other_dtype(model, x)
    # a loader with batch_size=None gives its samples one by one, without a batch axis
    batched = getattr(data, "batch_sampler", True) is not None
    # a cross-entropy's integer labels are probed only when they have an axis too many for
    # (N, C) outputs, a column (N, 1) most often
    shapes = (is_elementwise(loss_fn) or (is_cross_entropy(loss_fn) and (
        y.is_floating_point() or (y.dim() >= 2 and y.shape[1] == 1)))) and batched
    own = loss_reduction(loss_fn) is None and batched
    if dtype is None and not shapes and not own and not (loss_runs and batched):
        return
    try:
        out = _probe_forward(model, x)
    except Exception as e:
        if dtype is not None and isinstance(e, RuntimeError) and _cast_runs(model, x, dtype):
            raise _dtype_error(dtype, x, str(e).splitlines()[0]) from e
        return      # a model that cannot run on two samples: the measurement reports it
    where = f" on the data's first {len(x)} samples"
    if shapes and isinstance(out, Tensor):
        check_target_shape(loss_fn, out, y, where=where)
    if own:
        refusal = loss_value_refusal(
            loss_fn, out, y, where=where,
            params=None if loss_may_read_params
            else [p for p in model.parameters() if p.requires_grad])
        if refusal is not None:
            raise refusal
    if loss_runs and batched:
        try:
            # a warning torch gives here (a broadcast) is given again by the training step
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss_fn(out, y)
        except Exception as e:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise UserError(
                f"loss_fn {loss_name(loss_fn)} fails on the model's outputs of shape {shape} "
                f"with targets of shape {tuple(y.shape)}{where} ({type(e).__name__}: "
                f"{(str(e).splitlines() or [''])[0]}): training would fail at its first "
                "step") from e


def _batch_of_one(data: Data) -> tuple[str, Tensor] | None:
    """(which, its inputs) for a batch of ``data`` that holds one sample, where the batches'
    sizes can be read without a pass over the data (:func:`_readable_targets`' rule: one
    batch, a list of batches, a ``DataLoader`` over a ``TensorDataset`` in batches of its
    sampler's samples); None otherwise."""
    from torch.utils.data import BatchSampler, DataLoader, TensorDataset

    if is_single_batch(data):
        return ("the batch", data[0]) if data[0].dim() and len(data[0]) == 1 else None
    if isinstance(data, (list, tuple)):
        for i, b in enumerate(data):
            if is_single_batch(b) and b[0].dim() and len(b[0]) == 1:
                return f"batch {i}", b[0]
        return None
    if not (isinstance(data, DataLoader) and isinstance(data.dataset, TensorDataset)
            and type(data.batch_sampler) is BatchSampler and data.dataset.tensors[0].dim()):
        return None
    try:
        n, size = len(data.batch_sampler.sampler), data.batch_sampler.batch_size
    except TypeError:           # a sampler without a length
        return None
    last = n % size if not data.drop_last else 0
    if size == 1 and n:
        return "batch 0", data.dataset.tensors[0][:1]
    return (f"batch {n // size} (the last, of {n} samples in batches of {size})",
            data.dataset.tensors[0][:1]) if last == 1 else None


def check_batches_of_one(model: nn.Module, data: Data) -> None:
    """A ``UserError`` naming a batch of one sample (:func:`_batch_of_one`) that reaches a
    batch norm normalising by its batch's statistics (train mode, or no running statistics)
    where that needs two (torch's "Expected more than 1 value per channel when training",
    which names no batch: most often a loader's last partial batch). Found by one no-grad
    forward pass of the sample, run only for such a model and batch; its randomness and the
    buffers it moves are put back."""
    from sgdlab.models.modes import buffers_kept, first_batch_norm, uses_batch_statistics

    if not uses_batch_statistics(model):
        return
    found = _batch_of_one(data)
    param = next(model.parameters(), None)
    if found is None or param is None:
        return
    which, x = found
    try:
        with torch.no_grad(), buffers_kept(model, keep_versions=True), \
                fixed_randomness(model, param.device):
            model(x.to(param.device))
    except ValueError as e:
        if not str(e).startswith("Expected more than 1 value per channel when training"):
            return
        layer = first_batch_norm(model, training=True) or first_batch_norm(model)
        raise UserError(
            f"data: {which} holds one sample, and {layer} normalises each batch by its own "
            f"statistics, which needs two ({str(e).splitlines()[0]}): call model.eval() "
            "(its running statistics), or batch the data so that no batch holds one sample"
        ) from e
    except Exception:
        return          # the model's own failure: the measurement's pass reports it


def check_run_data(model: nn.Module, loss_fn: object, data: object) -> None:
    """The check of a run config's built model, loss and data (``data``: a
    :class:`sgdlab.data.Dataset`) before ``sgdlab train`` or ``sgdlab parle`` records the run:
    :func:`check_model_data` with ``loss_runs`` on the first :data:`_PROBE` training samples
    (the targets against the outputs, and the loss run on them). Refused then, a run recorded
    failed at its first step could not be resumed once a data file is fixed (its SHA-256 is
    the run's)."""
    check_model_data(model, loss_fn, (data.x_train[:_PROBE], data.y_train[:_PROBE]),
                     loss_runs=True)


def loss_value_refusal(loss_fn: object, outputs: object, targets: Tensor, *,
                       where: str = "", params: list[Tensor] | None = None
                       ) -> UserError | None:
    """The :class:`UserError` for a loss whose value on ``outputs`` and ``targets`` is not one
    number (a value per sample or per position: a function of one's own without its mean),
    which every consumer takes for the batch's mean loss, or, given the model's trainable
    ``params``, that reads them besides the (detached) outputs, as a weight-decay term does:
    functional calls and the R-op see the loss through the outputs only (a 3-4-2 MLP's
    Hessian missed the term's 2λI, Σ's mean its gradient). None otherwise, and for a loss
    that fails on them (the caller's own pass reports that)."""
    # detached: a model may return one of its parameters itself (a learned noise variance),
    # which no-grad leaves requiring a gradient though the loss reads it as an output
    outputs = tree_map_only(Tensor, Tensor.detach, outputs)
    try:
        # gradients recorded on detached outputs: only another tensor can give the value one
        with torch.enable_grad():
            value = loss_fn(outputs, targets)
    except Exception:
        return None
    name = loss_name(loss_fn)
    if (params and isinstance(value, Tensor) and value.requires_grad and value.numel() == 1
            and any(g is not None for g in torch.autograd.grad(value, params,
                                                              allow_unused=True))):
        return UserError(
            f"loss_fn {name} reads the model's parameters besides its outputs (seen{where}; "
            "a weight-decay term?): the measurements differentiate and move the parameters "
            "through the outputs, where such a term is missed or read at the wrong point (a "
            "Hessian without its 2λI); measure the loss of the outputs alone and give weight "
            "decay to the optimizer")
    if isinstance(value, Tensor) and value.numel() == 1:
        return None
    if not isinstance(value, Tensor):
        return UserError(
            f"loss_fn {name} returns a {type(value).__name__}{where}: training and the "
            "measurements differentiate its value, the batch's mean loss; return a 0-dim "
            "tensor computed from the outputs")
    return UserError(
        f"loss_fn {name} returns a tensor of shape {tuple(value.shape)}{where}, not one "
        "number: training and the measurements take its value as the batch's mean loss (a "
        "0-dim tensor); return the mean over the samples (.mean())")


def _not_a_pair(i: int, batch: object) -> UserError:
    """The error for a loader's item that is no ``(x, y)`` pair of tensors: what it is, and
    how to pass pairs (a loader of (x, y, index) triples or of a tokenizer's dicts was told
    only "got list" or "got dict")."""
    pair = "b[0], b[1]"
    if isinstance(batch, dict):
        keys = [repr(k) for k in batch]
        got = (f"a dict with keys {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
               if keys else "an empty dict")
        if len(keys) >= 2:
            pair = f"b[{keys[0]}], b[{keys[-1]}]"
    elif isinstance(batch, (tuple, list)):
        kinds = [type(t).__name__ for t in batch]
        got = (f"a {type(batch).__name__} of {len(batch)} items "
               f"({', '.join(kinds[:6])}{', ...' if len(kinds) > 6 else ''})")
    else:
        got = type(batch).__name__
    return UserError(f"data: batch {i} is not an (inputs, targets) pair of tensors (got {got}): "
                     f"measurements take (x, y) batches; pass the loader's as pairs, a list "
                     f"[({pair}) for b in loader] or a DataLoader whose collate_fn returns "
                     "(x, y)")


def iterate_batches(data: Data, device: torch.device | None = None) -> Iterator[Batch]:
    """Yield the non-empty ``(x, y)`` batches, moved to ``device`` when given; data without a
    sample, or an item that is not an ``(x, y)`` pair of tensors, is a ``UserError``."""
    check_data(data)
    single = is_single_batch(data)
    batches = [data] if single else data
    seen = 0
    for i, batch in enumerate(batches):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2
                and all(isinstance(t, Tensor) for t in batch)):
            raise _not_a_pair(i, batch)
        x, y = batch
        check_batch_rows(x, y, f"batch {i}")
        if not y.dim() and x.dim() and not single:
            # one sample without a batch axis: len(x) counted its features as samples (a
            # list of batches and such samples was weighted wrong, 0.15 off a mean loss)
            raise UserError(
                f"data: batch {i} has a 0-d target and inputs of shape {tuple(x.shape)}: one "
                "sample without a batch axis (a list of (x[i], y[i]), or a loader without a "
                "batch size), while measurements take batches; pass (x, y) whole, batches "
                "(x[j:k], y[j:k]), or a DataLoader with a batch_size (a placeholder target "
                "for a loss that ignores them: torch.zeros(len(x)))")
        if not len(x):
            continue             # weighs nothing in a mean over samples
        seen += len(x)
        if device is not None:
            x, y = x.to(device), y.to(device)
        # inputs that require a gradient (a model's activations kept as data) would put them
        # into every product's graph: Lanczos' out= writes failed on them
        yield x.detach(), y.detach()
    if not seen:
        if isinstance(data, Iterator):
            # a generator is read once; measurements read their data more than once
            raise UserError("data: no samples left in a one-shot iterator (a generator, "
                            "iter(...)): measurements may read their data several times, so "
                            "pass a list of batches or a DataLoader")
        raise UserError("data: no samples (an empty batch or an empty loader)")


def iterate_chunks(data: Data, device: torch.device | None,
                   chunk_size: int | None) -> Iterator[Batch]:
    """:func:`iterate_batches`' batches cut into chunks of ``chunk_size`` samples (views; the
    last chunk of a batch may be shorter), each batch whole for ``chunk_size`` None or 0."""
    for x, y in iterate_batches(data, device):
        step = chunk_size or len(x)
        for i in range(0, len(x), step):
            yield x[i : i + step], y[i : i + step]


def num_samples(data: Data) -> int:
    return sum(len(x) for x, _ in iterate_batches(data))


def concat_batches(data: Data, device: torch.device | None = None) -> Batch:
    """All samples as one batch (for per-sample quantities that need every sample at once)."""
    if is_single_batch(data):
        x, y = data[0].detach(), data[1].detach()
        return (x.to(device), y.to(device)) if device is not None else (x, y)
    xs, ys = zip(*iterate_batches(data, device))
    return torch.cat(xs), torch.cat(ys)


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t.to(dtype) if t.is_floating_point() else t


class _CastBatches:
    """Re-iterable view of batches with floating tensors cast to ``dtype``."""

    def __init__(self, data: Iterable[Batch], dtype: torch.dtype):
        self.data, self.dtype = data, dtype

    def __iter__(self) -> Iterator[Batch]:
        for x, y in self.data:
            yield _cast(x, self.dtype), _cast(y, self.dtype)


def cast_batches(data: Data, dtype: torch.dtype) -> Data:
    """``data`` with its floating-point inputs and targets in ``dtype`` (integer labels kept)."""
    if is_single_batch(data):
        x, y = data
        return _cast(x, dtype), _cast(y, dtype)
    return _CastBatches(data, dtype)
