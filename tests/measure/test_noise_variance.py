"""Tr Σ and diag Σ without the (N, d) matrix (``gradient_variance``) against the explicit 1/N
covariance (Zhu et al. 2019, eq. 3) and against ``gradient_covariance``, in float64."""
import pytest
import torch
from torch import nn

import sgdlab.measure.fisher as fisher
from sgdlab.errors import UserError
from sgdlab.measure.noise import (GradientCovariance, GradientVariance, gradient_covariance,
                                  gradient_variance)
from sgdlab.testing import (AffineByHand, covariance_reference, per_sample_gradients_loop,
                            tiny_classification, tiny_mlp)

LOSS = nn.CrossEntropyLoss()


def _layer_norm_mlp(dropout: float = 0.0) -> nn.Module:
    """Outside the factored engine (a LayerNorm): per-sample gradients from torch.func."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Dropout(dropout), nn.Tanh(),
                         nn.Linear(5, 2)).double()


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 13])
def test_trace_and_diagonal_are_those_of_the_explicit_one_over_n_covariance(chunk_size):
    model = _layer_norm_mlp()
    data = tiny_classification(n=13, seed=4)
    sigma = covariance_reference(per_sample_gradients_loop(model, LOSS, data))
    var = gradient_variance(model, LOSS, data, chunk_size=chunk_size)
    assert isinstance(var, GradientVariance) and var.dim == sigma.shape[0]
    assert var.trace() == pytest.approx(float(torch.trace(sigma)), rel=1e-13)
    assert var.diagonal().dtype == torch.float64
    torch.testing.assert_close(var.diagonal(), torch.diagonal(sigma), rtol=1e-12, atol=1e-16)


def test_bands_of_columns_pool_exactly_when_d_is_not_a_multiple_of_the_band(monkeypatch):
    """A chunk's moments a band of 4 columns at a time (d = 42, chunks of 5, 5 and 3 rows, the
    last one 6 columns a band): the same variances as the explicit covariance, the 5-row
    chunks' last band 2 columns wide."""
    model = _layer_norm_mlp()
    data = tiny_classification(n=13, seed=7)
    d = sum(p.numel() for p in model.parameters())
    assert d == 42
    monkeypatch.setattr(fisher, "_BAND_BYTES", 8 * 5 * 4)     # 4 columns of a 5-row chunk
    bands = []
    moments = fisher._block_moments

    def recording(g):
        bands.append(max(1, fisher._BAND_BYTES // (8 * len(g))))
        return moments(g)

    monkeypatch.setattr(fisher, "_block_moments", recording)
    got = fisher.per_sample_variance(model, LOSS, data, chunk_size=5)
    assert bands == [4, 4, 6]
    sigma = covariance_reference(per_sample_gradients_loop(model, LOSS, data))
    torch.testing.assert_close(got, torch.diagonal(sigma), rtol=1e-12, atol=1e-16)


def test_block_moments_by_band_equal_the_whole_blocks():
    """Each band's mean and sum of squared deviations, for widths that do and do not divide d,
    equal those of the whole block in float64; the float32 block is left unchanged."""
    g = torch.randn(6, 11, generator=torch.Generator().manual_seed(1))
    keep = g.clone()
    want_mu = g.double().mean(0)
    want_dev = (g.double() - want_mu).square().sum(0)
    for width in (1, 3, 4, 11, 20):
        saved = fisher._BAND_BYTES
        fisher._BAND_BYTES = 8 * 6 * width
        try:
            mu, dev = fisher._block_moments(g)
        finally:
            fisher._BAND_BYTES = saved
        torch.testing.assert_close(mu, want_mu, rtol=0, atol=0)
        torch.testing.assert_close(dev, want_dev, rtol=1e-15, atol=0)
    assert torch.equal(g, keep)


def test_train_mode_dropout_gives_gradient_covariances_draw():
    """Dropout in train mode: the masks of the one fixed draw gradient_covariance's torch.func
    route takes, whatever the chunks."""
    model = _layer_norm_mlp(dropout=0.5).train()
    data = tiny_classification(n=13, seed=4)
    cov = gradient_covariance(model, LOSS, data, chunk_size=None)
    for chunk_size in (None, 5):
        var = gradient_variance(model, LOSS, data, chunk_size=chunk_size)
        torch.testing.assert_close(var.diagonal(), cov.diagonal(), rtol=1e-12, atol=1e-16)
    # without the fixed draw the variances would be another mask's: they do differ
    assert not torch.allclose(cov.diagonal(),
                              gradient_covariance(model.eval(), LOSS, data).diagonal())


def test_factored_models_keep_gradient_covariances_factored_object():
    model = tiny_mlp(3, 4, 2)
    data = tiny_classification(10, 3, 2)
    var = gradient_variance(model, LOSS, data, chunk_size=3)
    cov = gradient_covariance(model, LOSS, data, chunk_size=3)
    assert isinstance(var, GradientCovariance) and var._factored()
    assert var.trace() == cov.trace()
    assert torch.equal(var.diagonal(), cov.diagonal())


def test_train_mode_batch_norm_is_refused_as_by_gradient_covariance():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.BatchNorm1d(4),
                          nn.Linear(4, 2)).double().train()
    data = tiny_classification(n=8, seed=2)
    with pytest.raises(UserError, match="eval mode"):
        gradient_covariance(model, LOSS, data)
    with pytest.raises(UserError, match="eval mode"):
        gradient_variance(model, LOSS, data)


def test_non_finite_gradients_are_refused():
    with pytest.raises(FloatingPointError, match="non-finite"):
        GradientVariance(torch.tensor([1.0, float("nan")], dtype=torch.float64), torch.float32)


def test_a_diagonal_that_overflows_float32_is_reported_not_returned_as_inf():
    """Inputs ~1e10: finite float32 per-sample gradients ~1e20, pooled in float64 into
    variances ~1e40, beyond float32's range (~3.4e38). diagonal() cast them to inf; it is
    refused as GradientCovariance.diagonal() refuses it, and the float64 model gives the
    explicit covariance's diagonal."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 2) * 1e10, torch.zeros(8, 1)
    var = gradient_variance(AffineByHand(), nn.MSELoss(), (x, y))
    assert isinstance(var, GradientVariance) and var.dtype == torch.float32
    assert bool(torch.isfinite(var.variance).all()) and float(var.variance.max()) > 1e39
    with pytest.raises(FloatingPointError, match=r"^the diagonal of the gradient covariance "
                                                 r"overflows torch.float32: .*float64"):
        var.diagonal()
    model, x, y = AffineByHand().double(), x.double(), y.double()
    ref = covariance_reference(per_sample_gradients_loop(model, nn.MSELoss(), (x, y)))
    torch.testing.assert_close(gradient_variance(model, nn.MSELoss(), (x, y)).diagonal(),
                               torch.diagonal(ref), rtol=1e-10, atol=0)
