"""Checkpoints that resume a run bit for bit.

A checkpoint is one ``torch.save`` file holding only tensors and plain containers, so it loads
with ``torch.load(..., weights_only=True)`` (no pickled code runs; a numpy scalar, such as an
lr taken from ``np.logspace``, is saved as the Python number it holds). It holds the model,
optimizer, schedule and callbacks' state dicts, every random number generator the run touches
(torch CPU and CUDA, the loop's own sampling generator, numpy's and Python's global
generators) and the loop's position (step, epoch, the epoch's permutation and the position in
it). It is written to a temporary file, synced to disk and moved over the old one with
``os.replace``, so a process killed (or a disk filling up) while saving leaves the previous
checkpoint intact. A file changed after it was written (a bad disk, a broken copy) still
unpickles when only tensor bytes changed, so each archive entry's CRC-32 is checked before
loading. Unreadable, foreign, damaged or mismatched checkpoints raise one
:class:`~sgdlab.errors.UserError` line naming the file and what is wrong with it.
"""
from __future__ import annotations

import errno
import glob
import math
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ResumableError, UserError
from ..torch_files import read_torch_file

CHECKPOINT_NAME = "last.pt"
FORMAT_VERSION = 1
# a finished run's final weights, kept where its checkpoint (optimizer state) is not
WEIGHTS_NAME = "weights.pt"


def checkpoint_path(checkpoint_dir: str | os.PathLike) -> Path:
    return Path(checkpoint_dir) / CHECKPOINT_NAME


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every RNG state as tensors / plain values (weights_only-loadable)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["sampler"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "sampler" in state:
        generator.set_state(state["sampler"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temporary file in the same folder, fsync, ``os.replace``).
    A failed write (full disk, ...) removes the temporary file, keeps the previous checkpoint
    and raises a :class:`UserError` naming the file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # through a Python file object, so a full disk surfaces as ENOSPC, not a zip-writer error
        with open(tmp, "wb") as f:
            # (a history holds floats by construction, and may hold a million of them)
            torch.save({"format": FORMAT_VERSION, **{
                k: v if k == "history" else _python_numbers(v) for k, v in state.items()}}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)    # also after an interrupt: its name is this process's alone
        except OSError:
            pass
        if not isinstance(e, (OSError, RuntimeError)):
            raise
        # torch's archive writer turns a failed write of the file object (a full disk) into
        # a RuntimeError ("unexpected pos ..."); the OSError is its context
        cause = e if isinstance(e, OSError) else e.__cause__ or e.__context__
        reason = ("no space left on device" if getattr(e, "errno", None) == errno.ENOSPC
                  or getattr(cause, "errno", None) == errno.ENOSPC
                  else str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise ResumableError(f"cannot write checkpoint {str(path)!r}: {reason}"
                             + ("; the previous checkpoint is kept" if path.exists() else "")
                             ) from None
    # a save SIGKILLed mid-write left its temporary file (nothing ran to remove it); only this
    # process writes this checkpoint now (the run's claim), so any other is such a leftover
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass
    return path


def save_weights(path: str | os.PathLike, model: torch.nn.Module, step: int) -> Path:
    """Write ``model``'s final weights — its state dict, parameters and buffers (batch-norm
    statistics), nothing of the optimizer — as a checkpoint that holds only them and the
    loop's ``step`` (atomically, as :func:`save_checkpoint`; read by :func:`load_weights`):
    what a warm start and ``sgdlab measure`` load from a run whose checkpoint is not kept.
    No run id: the same run in two stores writes the same bytes."""
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    return save_checkpoint(path, {"kind": "weights", "model": state,
                                  "loop": {"step": int(step)}})


def _python_numbers(value: Any) -> Any:
    """``value`` with each numpy scalar as the Python number it holds (an lr taken from
    ``np.logspace``, in the optimizer's groups and the run's settings): ``torch.load(...,
    weights_only=True)`` refuses numpy objects, so no resume could read the checkpoint. Only
    the containers that hold one are copied (a model's state dict keeps its metadata)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        new = {k: _python_numbers(v) for k, v in value.items()}
        return value if all(new[k] is v for k, v in value.items()) else new
    if isinstance(value, (list, tuple)):
        items = [_python_numbers(v) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return items if isinstance(value, list) else tuple(items)
    return value


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu",
                    require: tuple[str, ...] = (), *, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``; with
    ``mmap`` its tensors mapped, not read, for a caller that needs only its plain entries).

    ``require`` names entries that must be present (e.g. ``("model",)``). Every way a file
    can be unusable — missing, empty, truncated, not a checkpoint, holding pickled objects
    other than tensors and plain data, from another sgdlab format, lacking a required entry —
    is one :class:`UserError` naming the file."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    state = read_torch_file(path, map_location, mmap=mmap)
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise UserError(f"{str(path)!r} is not an sgdlab checkpoint "
                        f"({_foreign_contents(state)})")
    missing = [k for k in require if state.get(k) is None]
    if missing:
        raise UserError(f"checkpoint {str(path)!r} has no {', '.join(map(repr, missing))} entry "
                        f"(it holds: {', '.join(sorted(map(str, state))) or 'nothing'})")
    return state


OWN_WEIGHTS_HINT = ("the command line reads the checkpoints of `sgdlab train`, whose run config "
                    "rebuilds the model; weights saved by a script of one's own "
                    "(torch.save(model.state_dict(), path)) are loaded into the model in "
                    "Python and measured with sgdlab.measure's functions (docs/GUIDE.md, "
                    "\"Your own model and data\")")


def _foreign_contents(state: Any) -> str:
    """What a file torch reads but sgdlab did not write holds, and where such weights go:
    a bare state dict (``torch.save(model.state_dict())``) is the common one."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a checkpoint's dict"
    if "format" in state:
        return f"format {state['format']!r}, this version reads {FORMAT_VERSION}"
    what = (f"a bare state dict of {len(state)} tensors"
            if state and all(isinstance(v, torch.Tensor) for v in state.values())
            else f"a dict of {', '.join(sorted(map(str, state))[:5]) or 'nothing'}")
    return f"{what}, not written by `sgdlab train`: {OWN_WEIGHTS_HINT}"


def load_weights(path: str | os.PathLike, step: int | None = None,
                 map_location: Any = "cpu") -> dict[str, Any]:
    """The model weights a run left in the file ``path``, as a checkpoint holds them: its
    ``model`` state dict and, under ``loop``, the ``step`` they stand at. What a warm start,
    ``sgdlab measure`` and a sweep run's dependants load (``weights_only=True``).

    ``step`` None: ``path`` is a checkpoint — a training loop's (``last.pt``: the model of a
    run that stopped before its end) or a finished run's final weights (:func:`save_weights`,
    ``weights.pt``) — read as by :func:`load_checkpoint`, its ``model`` entry required, its
    own step and other entries kept. ``step`` given: ``path`` is a bare state dict (a run of
    ``sgdlab parle``'s master, ``master.pt``; a sweep run's ``model.pt`` from before
    ``weights.pt``), which records no step: ``{"model": it, "loop": {"step": step}}``.
    A missing or unreadable file, or one that holds no model, is one :class:`UserError`
    naming it."""
    if step is None:
        return load_checkpoint(path, map_location, require=("model",))
    path = Path(path)
    weights = read_torch_file(path, map_location, what="weights file")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in weights.values()):
        raise UserError(f"{str(path)!r} holds no state dict (a name -> tensor mapping)")
    return {"model": weights, "loop": {"step": int(step)}}


def load_state(target: Any, state: Any, source: str | os.PathLike, what: str = "model") -> None:
    """``target.load_state_dict(state)`` (a model, optimizer or schedule), with a shape or key
    mismatch reported as one :class:`UserError` naming ``source`` (the checkpoint) instead of a
    traceback."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        if isinstance(target, torch.nn.Module) and isinstance(state, dict):
            from ..config.warm_start import mismatch

            # torch's message lists every missing and unexpected name: hundreds of a ResNet's
            problem = mismatch(target.state_dict(), state)
            if problem is not None:
                raise UserError(f"checkpoint {str(source)!r} does not fit this {what} "
                                f"({problem}); was it written with another config?") from None
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = "; ".join(ln for ln in lines[1:4]) if len(lines) > 1 else (
            lines[0] if lines else type(e).__name__)
        detail = re.sub(r"torch\.Size\((\[[^\]]*\])\)", r"\1", detail).rstrip(".")
        raise UserError(f"checkpoint {str(source)!r} does not fit this {what} ({detail}); was "
                        "it written with another config?") from None


# --- what a resume may not change -----------------------------------------------------------
def snapshot(value: Any) -> Any:
    """``value`` as it is now, apart from the object it came from (a schedule later moves a
    group's tensor lr in place): tensors detached, cloned and on the CPU, containers copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(snapshot(v) for v in value)
    if isinstance(value, list):
        return [snapshot(v) for v in value]
    return value


def _comparable(value: Any) -> Any:
    """Tensors as numbers or nested lists, tuples as lists, recursively: a setting compares
    equal to itself read back from a checkpoint, whatever holds it (Adam's betas tuple, a
    tensor lr)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal settings; a NaN equals a NaN (``==`` would call every NaN setting changed)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def changed_settings(saved: dict[str, Any], now: dict[str, Any], *,
                     of: str = "") -> list[str]:
    """``"key (saved -> now)"`` (``of`` after the key) for each key of both mappings whose
    values differ; a key only one of them has is not compared (a newer torch adds keys to an
    optimizer's groups). Mappings within are compared key by key (``"model.activation ('tanh'
    -> 'relu')"``), there a key only one has included."""
    return _changes(saved, now, of=of, prefix="", both_only=True)


def _changes(saved: dict[str, Any], now: dict[str, Any], *, of: str, prefix: str,
             both_only: bool) -> list[str]:
    changed = []
    keys = [k for k in now if k in saved] if both_only else (
        list(now) + [k for k in saved if k not in now])
    for k in keys:
        a, b = _comparable(saved.get(k, _UNSET)), _comparable(now.get(k, _UNSET))
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changes(a, b, of=of, prefix=f"{prefix}{k}.", both_only=False)
        elif _dicts(a) and _dicts(b) and len(a) == len(b):   # (SequentialLR's schedulers)
            changed += _changes(dict(enumerate(a)), dict(enumerate(b)), of=of,
                                prefix=f"{prefix}{k}.", both_only=False)
        elif not _same(a, b):
            changed.append(f"{prefix}{k}{of} ({_shown(a)} -> {_shown(b)})")
    return changed


def _dicts(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


class _Unset:
    def __repr__(self) -> str:
        return "not set"


_UNSET = _Unset()
