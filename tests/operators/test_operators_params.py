"""sgdlab.operators.params: the refusals of measured_params."""
import pytest
import torch
from torch import nn

from sgdlab.errors import UserError
from sgdlab.operators import params as P


def _holding(*tensors) -> nn.Module:
    module = nn.Module()
    for i, t in enumerate(tensors):
        module.register_parameter(f"p{i}", nn.Parameter(t))
    return module


def test_the_element_by_element_overlap_check_runs_once_per_layout(monkeypatch):
    # measured_params runs on every flat vector: parameters whose address ranges interleave
    # (column blocks of one matrix) were compared element by element on every call
    P._first_common_element.cache_clear()
    calls = []
    unit_offsets = P._unit_offsets
    monkeypatch.setattr(P, "_unit_offsets", lambda *a: calls.append(a) or unit_offsets(*a))
    w = torch.randn(6, 5, dtype=torch.float64)
    blocks = _holding(w[:, :2], w[:, 2:])
    for _ in range(3):
        assert list(P.measured_params(blocks)) == ["p0", "p1"]
    assert len(calls) == 2              # one per parameter, on the first call only
    # another matrix laid out alike: the same answer, without a new comparison
    v = torch.randn(6, 5, dtype=torch.float64)
    assert list(P.measured_params(_holding(v[:, :2], v[:, 2:]))) == ["p0", "p1"]
    assert len(calls) == 2
    # a real overlap is still refused, on every call
    shared = _holding(w[:, :3], w[:, 2:])
    for _ in range(2):
        with pytest.raises(UserError, match="parameters p0 and p1 share memory"):
            P.measured_params(shared)
    assert len(calls) == 4
