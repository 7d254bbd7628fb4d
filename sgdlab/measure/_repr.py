"""Compact reprs for measurement results that hold whole vectors and grids: ``print(result)``
shows shapes and ranges, not every entry (the fields stay as they are)."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

# arrays and lists up to this many entries are shown in full
SHOWN = 6


def summary(value: Any) -> str:
    """``value`` in a few characters: small arrays and lists in full, larger ones by shape,
    dtype and range."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        a = value
        if isinstance(value, torch.Tensor):
            t = value.detach()
            if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
                t = t.float()         # numpy has no bfloat16: shown as float32, named as is
            a = t.cpu().numpy()
        kind = type(value).__name__
        if a.size <= SHOWN:
            return f"{kind}({np.array2string(a.ravel(), precision=4, separator=', ')})"
        dtype = str(value.dtype).removeprefix("torch.")
        span = ""
        if a.dtype.kind in "fiu" and np.isfinite(a).any():
            span = f", range [{np.nanmin(a):.4g}, {np.nanmax(a):.4g}]"
        return f"{kind}(shape={tuple(a.shape)}, {dtype}{span})"
    if isinstance(value, (list, tuple)) and len(value) > SHOWN:
        return f"[{len(value)} items]" if isinstance(value, list) else f"({len(value)} items)"
    if isinstance(value, (list, tuple)) and any(isinstance(v, (list, tuple, torch.Tensor,
                                                               np.ndarray)) for v in value):
        inner = ", ".join(summary(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def compact_repr(self) -> str:
    """A dataclass's repr with each field as :func:`summary` gives it."""
    fields = ", ".join(f"{f.name}={summary(getattr(self, f.name))}"
                       for f in dataclasses.fields(self) if f.repr)
    return f"{type(self).__name__}({fields})"
