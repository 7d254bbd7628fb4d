"""The train/eval flags, buffers and plain attributes of a model's submodules, kept across a
measurement, and what counts as a batch-norm layer (:data:`BN_TYPES`).

``model.train(was)`` after ``model.eval()`` would put *every* submodule into the model's old
mode: a batch-norm layer frozen in eval mode inside a training model (fine-tuning) would come
back in train mode, and its running statistics would move. These restore each flag as it was.

A measurement leaves the model as it found it. :func:`modes_kept` (and so :func:`eval_mode`)
and :func:`buffers_kept` restore, besides the flags and the buffers (batch norm's running
statistics and ``num_batches_tracked`` among them), every submodule's plain attributes
(:func:`attributes_kept`): a forward pass that counts its calls (``self.calls += 1``), sets a
flag or keeps its last input changes the model as a training step would, and a measurement
taken on a schedule would change the run. What is restored is the *binding* of each attribute
(an attribute rebound or added in the block is put back or removed); a mutable object changed
in place (``self.history.append(x)``, a plain tensor attribute written with ``copy_``) is not
copied back: a deep copy is no snapshot of an attribute that shares its object with others (an
optimizer, a loader, another module), and would copy every cache a module keeps.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.parameter import is_lazy

# batch norm of every kind: BatchNorm1d/2d/3d, their lazy forms, SyncBatchNorm and subclasses
BN_TYPES = (nn.modules.batchnorm._BatchNorm,)
# the kinds whose forward is F.batch_norm with channels at dimension 1 and no process group:
# the hand-written passes of sgdlab.operators take these (SyncBatchNorm and lazy forms excluded)
PLAIN_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def module_label(name: str, module: nn.Module, *, of_model: bool = False) -> str:
    """A submodule as messages name it: ``layer '1' (BatchNorm1d)`` for ``named_modules()``'s
    ``name`` (a bare nn.Sequential index read as a number), ``the model (BatchNorm1d)`` for the
    model itself (name ""). ``of_model``: ``the model's layer '1' (BatchNorm1d)`` for a
    submodule, where the message names the model nowhere else; the model itself reads the
    same either way (a "the model's" written before the label read "the model's the model")."""
    kind = type(module).__name__
    if not name:
        return f"the model ({kind})"
    owner = "the model's " if of_model else ""
    return f"{owner}layer {name!r} ({kind})"


def has_batchnorm(model: nn.Module) -> bool:
    """Whether any submodule of ``model`` (itself included) is a batch-norm layer."""
    return any(isinstance(m, BN_TYPES) for m in model.modules())


def uses_batch_statistics(model: nn.Module) -> bool:
    """Whether a batch-norm layer of ``model`` normalises with the statistics of its batch as
    the modules are now: in train mode, or without running statistics in either mode."""
    return any(isinstance(m, BN_TYPES) and (m.training or m.running_mean is None)
               for m in model.modules())


# what nn.Module keeps in an instance's __dict__ itself: its parameters, buffers, submodules
# and hook tables (restored by their own means, or none of a forward pass's doing) and the
# ``training`` flag (:func:`modes_kept`)
_MODULE_SLOTS = frozenset(nn.Module().__dict__)
_ABSENT = object()


def _restore_attributes(saved: list[tuple[nn.Module, type, dict[str, object]]]) -> None:
    """The plain attributes (those of a module's ``__dict__`` that are not nn.Module's own
    slots) of each (module, class, ``__dict__`` copy) bound as they were: an attribute
    rebound is put back, one added is removed. A lazy module that materialised its
    parameters meanwhile (its class changed, or, one without ``cls_to_become``, its
    initialising hook's handle gone) keeps its new attributes, which describe them."""
    for m, cls, attrs in saved:
        if type(m) is not cls:
            continue
        d = m.__dict__
        # the common case, nothing rebound or added, compared in C: a rebinding keeps the
        # key's place, so the values line up
        if d.keys() == attrs.keys() and all(map(operator.is_, d.values(), attrs.values())):
            continue
        if "_initialize_hook" in attrs and "_initialize_hook" not in d:
            continue    # LazyModuleMixin removed it: materialised in the block
        changed = [k for k, v in d.items() if attrs.get(k, _ABSENT) is not v]
        gone = [k for k in attrs if k not in d]
        for k in changed + gone:
            if k in _MODULE_SLOTS or k in m._parameters or k in m._buffers or k in m._modules:
                continue    # nn.Module's own, or made a parameter, buffer or submodule
            if k in attrs:
                d[k] = attrs[k]
            else:
                del d[k]


@contextmanager
def attributes_kept(model: nn.Module) -> Iterator[None]:
    """Every submodule's plain attributes bound on exit as they were on entry
    (:func:`_restore_attributes`; the module docstring says what is and is not restored)."""
    # a shallow copy, filtered on restore: a filtered copy took twice as long on ResNet-56's
    # 143 modules, and the copy is what every block pays
    saved = [(m, type(m), m.__dict__.copy()) for m in model.modules()]
    try:
        yield
    finally:
        _restore_attributes(saved)


@contextmanager
def modes_kept(model: nn.Module) -> Iterator[None]:
    """Every submodule's ``training`` flag and plain attributes (:func:`attributes_kept`) as
    they were on exit, whatever the block set."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        with attributes_kept(model):
            yield
    finally:
        for m, training in flags:
            m.training = training


@contextmanager
def eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """The model in eval mode inside the block (unchanged unless ``enabled``); every
    submodule's flag and plain attributes restored on exit (:func:`modes_kept`)."""
    with modes_kept(model):
        if enabled:
            model.eval()
        yield


#: a buffer as :func:`saved_buffers` keeps it: its module, its name, the tensor, its value
SavedBuffer = tuple[nn.Module, str, torch.Tensor, torch.Tensor]


def saved_buffers(model: nn.Module) -> list[SavedBuffer]:
    """Each buffer of ``model`` with its module, name and a copy of its value, for
    :func:`restore_buffers`. A lazy module's buffer not yet materialised has no value to copy
    (torch refuses any operation on it): it is left as the block leaves it, as the lazy
    module's attributes are (:func:`attributes_kept`)."""
    return [(m, name, b, b.detach().clone()) for m in model.modules()
            for name, b in m._buffers.items() if b is not None and not is_lazy(b)]


def restore_buffers(saved: list[SavedBuffer], *, keep_versions: bool = False) -> None:
    """The buffers of :func:`saved_buffers` as they were: each module holds its own tensor
    again (a forward pass may have assigned a new one to the name, ``self.mean = ...``, or
    symbolic tracing a proxy), with the value it had. ``keep_versions``: written through
    ``.data``, as :func:`buffers_kept`'s."""
    with torch.no_grad():
        for m, name, b, value in saved:
            # (a scripted module's buffer table has [] and in, no .get)
            if (m._buffers[name] if name in m._buffers else None) is not b:
                m._buffers[name] = b
            (b.data if keep_versions else b).copy_(value)


@contextmanager
def buffers_kept(model: nn.Module, *, keep_versions: bool = False) -> Iterator[None]:
    """Every buffer as it was on exit (:func:`restore_buffers`): forward passes in train mode
    inside the block (batch norm's running statistics) leave no trace in the model; nor in its
    plain attributes (:func:`attributes_kept`).
    ``keep_versions``: restored through ``.data``, as batch norm's own update, so the version
    counters do not move (an autograd graph kept over the block that saved the buffers stays
    usable)."""
    saved = saved_buffers(model)
    try:
        with attributes_kept(model):
            yield
    finally:
        restore_buffers(saved, keep_versions=keep_versions)


def writes_buffers(model: nn.Module) -> bool:
    """Whether a forward pass of ``model`` may write into its buffers: a batch norm in train
    mode tracking running statistics, a spectral norm in train mode (its power iteration moves
    the vectors u and v, ``nn.utils.parametrizations.spectral_norm`` and the older hook-based
    ``nn.utils.spectral_norm``), or any other module in train mode that holds buffers of its
    own (a running mean or a counter of one's own, which torch's modules update in train mode
    only, as batch norm does)."""
    from torch.nn.utils.parametrizations import _SpectralNorm
    from torch.nn.utils.spectral_norm import SpectralNorm

    for m in model.modules():
        if isinstance(m, BN_TYPES) and m.training and m.track_running_stats:
            return True
        if isinstance(m, _SpectralNorm) and m.training:
            return True
        if m.training and any(isinstance(h, SpectralNorm)
                              for h in m._forward_pre_hooks.values()):
            return True
        if m.training and next(m.buffers(recurse=False), None) is not None:
            return True
    return False


def buffer_restorer(model: nn.Module) -> Callable[[], None]:
    """A function that puts ``model``'s buffers back as they are now (:func:`restore_buffers`,
    through ``.data``), for a loop of forward passes that must each start from them; a no-op
    where no forward pass writes them (:func:`writes_buffers`). The modules are walked and the
    buffers copied once, not once a pass as a ``buffers_kept`` block a pass would: that took
    48 µs of a batch-norm CNN's 1.2 ms gradient pass on 8 samples, the restore alone 12."""
    if not writes_buffers(model):
        return lambda: None
    saved = saved_buffers(model)
    return lambda: restore_buffers(saved, keep_versions=True)


def first_batch_norm(model: nn.Module, *, training: bool = False,
                     of_model: bool = False) -> str | None:
    """:func:`module_label` (with ``of_model``) of ``model``'s first batch-norm layer (with
    ``training``, the first in train mode); None when there is none."""
    for name, m in model.named_modules():
        if isinstance(m, BN_TYPES) and (m.training or not training):
            return module_label(name, m, of_model=of_model)
    return None
