"""Hessian / GGN / empirical-Fisher operators against dense float64 references."""
import copy

import pytest
import torch
from torch import nn

from sgdlab.operators import (
    EmpiricalFisherOperator, GGNOperator, as_operator, curvature_operator,
    per_sample_gradients,
)
from sgdlab.testing import (
    dense_hessian_reference, empirical_fisher_reference, ggn_reference,
    per_sample_gradients_loop, tiny_classification, tiny_mlp,
)


def _regression(n=9, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(n, 2, generator=g,
                                                                           dtype=torch.float64)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_ggn_equals_dense_jt_h_j(loss):
    model = tiny_mlp(3, 4, 2)
    if loss == "ce":
        data, loss_fn = tiny_classification(9, 3, 2), nn.CrossEntropyLoss()
    else:
        data, loss_fn = _regression(), nn.MSELoss()
    ref = ggn_reference(model, loss_fn, data)
    torch.testing.assert_close(GGNOperator(model, loss_fn, data).to_dense(), ref)
    loader = [(data[0][:4], data[1][:4]), (data[0][4:], data[1][4:])]
    torch.testing.assert_close(GGNOperator(model, loss_fn, loader).to_dense(), ref)
    assert torch.linalg.eigvalsh(ref).min() > -1e-12       # PSD for convex losses
    if loss == "mse":
        # for a linear model the GGN is the Hessian
        lin = nn.Linear(3, 2).double()
        torch.testing.assert_close(GGNOperator(lin, loss_fn, data).to_dense(),
                                   dense_hessian_reference(lin, loss_fn, data))


def test_empirical_fisher_stored_and_streaming():
    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(10, 3, 2), nn.CrossEntropyLoss()
    ref = empirical_fisher_reference(per_sample_gradients_loop(model, loss_fn, data))
    torch.testing.assert_close(EmpiricalFisherOperator(model, loss_fn, data).to_dense(), ref)
    loader = [(data[0][:3], data[1][:3]), (data[0][3:], data[1][3:])]
    torch.testing.assert_close(
        EmpiricalFisherOperator(model, loss_fn, loader, store_gradients=False).to_dense(), ref)
    with pytest.raises(ValueError, match="needs data"):
        EmpiricalFisherOperator(model, loss_fn)


def test_per_sample_gradients_match_loop_float32():
    model = tiny_mlp(3, 4, 2, dtype=torch.float32)
    x, y = tiny_classification(7, 3, 2, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss()
    torch.testing.assert_close(per_sample_gradients(model, loss_fn, (x, y), chunk_size=3),
                               per_sample_gradients_loop(model, loss_fn, (x, y)))


def test_hessian_operator_float32_and_factory_and_algebra():
    model = tiny_mlp(3, 4, 2, dtype=torch.float32)
    x, y = tiny_classification(8, 3, 2, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss()
    op = curvature_operator("hessian", model, loss_fn, (x, y))
    assert op.dtype == torch.float32
    ref = dense_hessian_reference(copy.deepcopy(model).double(), loss_fn, (x.double(), y))
    torch.testing.assert_close(op.to_dense().double(), ref, atol=1e-5, rtol=1e-4)
    a = torch.randn(5, 5, dtype=torch.float64)
    a = a + a.T
    comb = 2.0 * as_operator(a) - torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(comb.to_dense(), 2 * a - torch.eye(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="Unknown curvature operator"):
        curvature_operator("fisher_true", model, loss_fn, (x, y))
