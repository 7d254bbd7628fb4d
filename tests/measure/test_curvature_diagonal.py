"""diag A: exact columns and the Rademacher estimator against dense float64 references."""
import pytest
import torch
from torch import nn

from sgdlab.measure.curvature import diagonal, hessian_diagonal
from sgdlab.testing import (
    dense_hessian_reference, ggn_reference, tiny_classification, tiny_mlp,
)


def _sym(d=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    return (m + m.T) / 2


def test_exact_diagonal_of_a_dense_matrix_in_any_blocks():
    a = _sym()
    for block in (1, 7, 30):
        est = diagonal(a, exact=True, block_size=block)
        assert est.exact and est.num_samples == 30
        torch.testing.assert_close(est.value, torch.diagonal(a), rtol=0, atol=1e-14)
        assert torch.count_nonzero(est.stderr) == 0


def test_estimator_is_the_mean_of_v_times_av_and_unbiased():
    a = _sym(seed=1)
    m = 400
    est = diagonal(a, m, generator=torch.Generator().manual_seed(3), block_size=64)
    # the same probes drawn by hand: (m, d) Rademacher rows from the same generator stream
    v = torch.randint(0, 2, (m, 30), generator=torch.Generator().manual_seed(3),
                      dtype=torch.float64) * 2 - 1
    samples = v * (v @ a)                       # row k: v_k ⊙ A v_k (A symmetric)
    torch.testing.assert_close(est.value, samples.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(est.stderr, samples.std(0) / m ** 0.5, rtol=1e-9, atol=1e-12)
    # per-probe variance of entry i is Σ_{j≠i} A_ij²: compare with the closed form
    off = (a.square().sum(1) - torch.diagonal(a).square())
    torch.testing.assert_close(est.stderr.square() * m, off, rtol=0.25, atol=0)
    assert bool(((est.value - torch.diagonal(a)).abs() < 4.5 * est.stderr).all())
    # a diagonal matrix is recovered exactly by one probe
    dg = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    one = diagonal(dg, 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(one.value, torch.arange(1.0, 6.0, dtype=torch.float64))
    assert bool(one.stderr.isnan().all())
    with pytest.raises(ValueError, match="num_probes"):
        diagonal(a, 0)


@pytest.mark.parametrize("operator, reference", [("hessian", dense_hessian_reference),
                                                 ("ggn", ggn_reference)])
def test_model_diagonal_matches_the_dense_matrix(operator, reference):
    model = tiny_mlp(3, 4, 2)
    data = tiny_classification(12, 3, 2)
    loss_fn = nn.CrossEntropyLoss()
    ref = torch.diagonal(reference(model, loss_fn, data))
    est = hessian_diagonal(model, loss_fn, data, exact=True, operator=operator)
    torch.testing.assert_close(est.value, ref, rtol=1e-10, atol=1e-12)
    noisy = hessian_diagonal(model, loss_fn, data, 300, operator=operator,
                             generator=torch.Generator().manual_seed(0))
    assert bool(((noisy.value - ref).abs() <= 4.5 * noisy.stderr + 1e-12).all())
