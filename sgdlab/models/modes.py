"""The train/eval flags and buffers of a model's submodules, kept across a measurement, and
what counts as a batch-norm layer (:data:`BN_TYPES`).

``model.train(was)`` after ``model.eval()`` would put *every* submodule into the model's old
mode: a batch-norm layer frozen in eval mode inside a training model (fine-tuning) would come
back in train mode, and its running statistics would move. These restore each flag as it was.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

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


@contextmanager
def modes_kept(model: nn.Module) -> Iterator[None]:
    """Every submodule's ``training`` flag as it was on exit, whatever the block set."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


@contextmanager
def eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """The model in eval mode inside the block (unchanged unless ``enabled``); every
    submodule's flag restored on exit."""
    with modes_kept(model):
        if enabled:
            model.eval()
        yield


#: a buffer as :func:`saved_buffers` keeps it: its module, its name, the tensor, its value
SavedBuffer = tuple[nn.Module, str, torch.Tensor, torch.Tensor]


def saved_buffers(model: nn.Module) -> list[SavedBuffer]:
    """Each buffer of ``model`` with its module, name and a copy of its value, for
    :func:`restore_buffers`."""
    return [(m, name, b, b.detach().clone()) for m in model.modules()
            for name, b in m._buffers.items() if b is not None]


def restore_buffers(saved: list[SavedBuffer], *, keep_versions: bool = False) -> None:
    """The buffers of :func:`saved_buffers` as they were: each module holds its own tensor
    again (a forward pass may have assigned a new one to the name, ``self.mean = ...``, or
    symbolic tracing a proxy), with the value it had. ``keep_versions``: written through
    ``.data``, as :func:`buffers_kept`'s."""
    with torch.no_grad():
        for m, name, b, value in saved:
            if m._buffers.get(name) is not b:
                m._buffers[name] = b
            (b.data if keep_versions else b).copy_(value)


@contextmanager
def buffers_kept(model: nn.Module, *, keep_versions: bool = False) -> Iterator[None]:
    """Every buffer as it was on exit (:func:`restore_buffers`): forward passes in train mode
    inside the block (batch norm's running statistics) leave no trace in the model.
    ``keep_versions``: restored through ``.data``, as batch norm's own update, so the version
    counters do not move (an autograd graph kept over the block that saved the buffers stays
    usable)."""
    saved = saved_buffers(model)
    try:
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
