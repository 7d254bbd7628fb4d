"""The thesis' preprocessing: [−1, 1] pixels, global contrast normalisation, ZCA whitening."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sgdlab.data import load_dataset
from sgdlab.data._common import normalize_images
from sgdlab.data.preprocess import ZCA, global_contrast_normalize
from sgdlab.errors import UserError
from sgdlab.testing import write_cifar_batch

F64 = torch.float64


def images(n: int, seed: int, shape=(3, 2, 2)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.2, 3.0, int(np.prod(shape))).reshape(shape)   # anisotropic
    return torch.randn(n, *shape, generator=g, dtype=F64) * scales + 0.7


def closed_form(x_train: torch.Tensor, bias: float):
    """Mean, C, its eigenpairs and P = U diag((S + b)^-1/2) U^T, computed from scratch."""
    flat = x_train.reshape(len(x_train), -1)
    mean = flat.mean(dim=0)
    c = (flat - mean).T @ (flat - mean) / len(flat)
    s, u = torch.linalg.eigh(c)
    s = s.clamp(min=0)
    return mean, c, s, u, (u * (s + bias).rsqrt()) @ u.T


def test_symmetric_pixels_map_0_to_minus_1_and_max_to_1():
    raw = np.array([0, 51, 255, 255, 0, 102], dtype=np.uint8).reshape(2, 1, 3)
    tr, te, info = normalize_images(raw, raw[:1], "symmetric", 255.0)
    assert tr.dtype == np.float32 and info["normalize"] == "symmetric"
    np.testing.assert_array_equal(tr.ravel(), np.float32([-1, -0.6, 1, 1, -1, -0.2]))
    np.testing.assert_array_equal(te, tr[:1])
    digits = load_dataset("digits", normalize="symmetric")       # pixel values 0..16
    assert digits.x_train.min() == -1 and digits.x_train.max() == 1
    unit = load_dataset("digits")
    assert torch.allclose(digits.x_train, unit.x_train * 2 - 1, atol=1e-6)


def test_gcn_gives_each_image_zero_mean_and_norm_scale():
    x = images(5, 0)
    g = global_contrast_normalize(x)
    flat = g.reshape(5, -1)
    assert g.dtype == F64 and g.shape == x.shape
    assert flat.mean(dim=1).abs().max() < 1e-14
    assert torch.allclose(flat.norm(dim=1), torch.full((5,), 55.0, dtype=F64), rtol=1e-14)
    g2 = global_contrast_normalize(x, scale=2.0)
    assert torch.allclose(g2.reshape(5, -1).norm(dim=1), torch.full((5,), 2.0, dtype=F64),
                          rtol=1e-14)
    # the pixel scale does not matter (pylearn2 applied it to 0..255 values)
    assert torch.allclose(global_contrast_normalize(x * 255), g, rtol=1e-13, atol=1e-13)


def test_gcn_sqrt_bias_and_min_divisor():
    x = images(3, 1)
    centred = (x - x.reshape(3, -1).mean(dim=1)[:, None, None, None]).reshape(3, -1)
    norm2 = (centred ** 2).sum(dim=1)
    g = global_contrast_normalize(x, scale=55.0, sqrt_bias=10.0).reshape(3, -1)
    assert torch.allclose(g.norm(dim=1), 55.0 * norm2.sqrt() / (10.0 + norm2).sqrt(),
                          rtol=1e-14)
    # a constant image: the divisor 0 is below min_divisor, the image stays all zeros
    const = torch.full((1, 3, 2, 2), 0.3, dtype=F64)
    assert torch.equal(global_contrast_normalize(const), torch.zeros_like(const))
    # a divisor below min_divisor leaves the centred image undivided
    tiny = x[:1] * 1e-12
    undivided = tiny - tiny.mean()
    assert torch.allclose(global_contrast_normalize(tiny, min_divisor=1.0), undivided,
                          rtol=0, atol=1e-27)


@pytest.mark.parametrize("n", [40, 7], ids=["N>D covariance", "N<D gram"])
def test_zca_matrix_and_whitened_covariance_match_the_closed_form(n):
    x = images(n, 2)                       # D = 12 values per image
    bias = 0.1
    zca = ZCA.fit(x, filter_bias=bias)
    mean, c, s, u, p = closed_form(x, bias)
    assert torch.allclose(zca.mean, mean, rtol=0, atol=1e-14)
    assert torch.allclose(zca.matrix, p, rtol=0, atol=1e-12)
    # P C P = U diag(S / (S + b)) U^T: the training covariance after whitening
    w = zca(x).to(F64).reshape(n, -1)
    assert zca(x).dtype == torch.float32
    w64 = (x.reshape(n, -1) - zca.mean) @ zca.matrix
    assert torch.allclose(w, w64, rtol=0, atol=1e-5)             # float32 rounding only
    cov = (w64 - w64.mean(dim=0)).T @ (w64 - w64.mean(dim=0)) / n
    assert torch.allclose(cov, (u * (s / (s + bias))) @ u.T, rtol=0, atol=1e-12)
    assert w64.mean(dim=0).abs().max() < 1e-12


def test_zca_applies_the_training_fit_to_test_images():
    x_tr, x_te = images(30, 3), images(9, 4)
    zca = ZCA.fit(x_tr)
    mean, _, _, _, p = closed_form(x_tr, 0.1)
    expect = (x_te.reshape(9, -1) - mean) @ p
    assert torch.allclose(zca(x_te).to(F64).reshape(9, -1), expect, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="12 values per image"):
        zca(torch.zeros(2, 5))


def test_gcn_zca_fits_on_training_images_only():
    rng = np.random.default_rng(5)
    x_tr = rng.integers(0, 256, (20, 3, 2, 2), dtype=np.uint8)
    te_a = rng.integers(0, 256, (6, 3, 2, 2), dtype=np.uint8)
    te_b = te_a.copy()
    te_b[1:] = rng.integers(0, 256, (5, 3, 2, 2), dtype=np.uint8)
    tr_a, out_a, info = normalize_images(x_tr, te_a, "gcn-zca", 255.0)
    tr_b, out_b, _ = normalize_images(x_tr, te_b, "gcn-zca", 255.0)
    assert tr_a.dtype == out_a.dtype == np.float32
    np.testing.assert_array_equal(tr_a, tr_b)
    np.testing.assert_array_equal(out_a[:1], out_b[:1])     # the shared test image
    assert info["gcn"] == {"scale": 55.0, "sqrt_bias": 0.0, "min_divisor": 1e-8}
    assert info["zca"] == {"filter_bias": 0.1, "fitted_on": "train", "n_fit": 20}
    # the pipeline is GCN then ZCA fitted on the GCN'd training images
    g_tr = global_contrast_normalize(torch.from_numpy(x_tr))
    zca = ZCA.fit(g_tr)
    np.testing.assert_array_equal(tr_a, zca(g_tr).numpy())
    np.testing.assert_array_equal(out_a, zca(global_contrast_normalize(
        torch.from_numpy(te_a))).numpy())
    gcn_tr, _, info = normalize_images(x_tr, te_a, "gcn", 255.0)
    np.testing.assert_array_equal(gcn_tr, g_tr.float().numpy())
    assert "zca" not in info


def _cifar_dir(root, x_tr, y_tr, x_te, y_te):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(5):
        write_cifar_batch(d / f"data_batch_{i + 1}", x_tr[i::5], y_tr[i::5])
    write_cifar_batch(d / "test_batch", x_te, y_te)
    return root


def test_cifar10_gcn_zca_is_deterministic_and_ignores_the_test_images(tmp_path):
    rng = np.random.default_rng(6)
    x_tr = rng.integers(0, 256, (30, 3, 32, 32), dtype=np.uint8)
    y_tr = np.arange(30) % 10
    x_te = rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    other = x_te.copy()
    other[5:] = 255 - other[5:]
    a = load_dataset("cifar10", data_dir=_cifar_dir(tmp_path / "a", x_tr, y_tr, x_te, y_tr[:10]),
                     normalize="gcn-zca")
    b = load_dataset("cifar10", data_dir=_cifar_dir(tmp_path / "b", x_tr, y_tr, other, y_tr[:10]),
                     normalize="gcn-zca")
    assert a.x_train.dtype == torch.float32 and a.x_train.shape == (30, 3, 32, 32)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test[:5], b.x_test[:5])
    assert not torch.equal(a.x_test[5:], b.x_test[5:])
    again = load_dataset("cifar10", data_dir=tmp_path / "a", normalize="gcn-zca")
    assert torch.equal(again.x_train, a.x_train) and torch.equal(again.x_test, a.x_test)
    assert a.meta["normalize"] == "gcn-zca" and a.meta["zca"]["n_fit"] == 30


def test_imagenet_normalisation_uses_torchvisions_channel_statistics(tmp_path):
    rng = np.random.default_rng(1)
    x_tr = rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
    y = np.arange(20) % 10
    d = _cifar_dir(tmp_path, x_tr, y, x_tr[:10], y[:10])
    unit = load_dataset("cifar10", data_dir=d)
    net = load_dataset("cifar10", data_dir=d, normalize="imagenet")
    # torchvision's Normalize(mean, std) after ToTensor, channel by channel
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(net.x_train, (unit.x_train - mean) / std)
    torch.testing.assert_close(net.x_test, (unit.x_test - mean) / std)
    assert net.meta["normalize"] == "imagenet"
    with pytest.raises(UserError, match="needs 3-channel images"):
        load_dataset("digits", normalize="imagenet")


def test_normalize_option_errors():
    with pytest.raises(UserError, match=r"one of unit, symmetric, standardize, imagenet, gcn, "
                                        r"gcn-zca, none, got 'gcn_zca' \(did you mean gcn-zca\?\)"):
        load_dataset("digits", normalize="gcn_zca")
    with pytest.raises(UserError, match=r"dataset 'cubic' has no option\(s\) 'normalize'.*"
                                        r"'normalize' is an option of cifar10, cifar100, "
                                        r"digits, fashion_mnist, mnist, mnist_small"):
        load_dataset("cubic", normalize="symmetric")
    with pytest.raises(UserError, match="'normalize' is an option of"):
        load_dataset("mnist1d", normalize="gcn-zca")


def test_standardize_uses_each_channels_training_mean_and_population_std():
    # channel 0: pixels 0, 2 (mean 1, population std 1); channel 1: 10, 30 (mean 20, std 10)
    x_train = np.array([[[[0.0]], [[10.0]]], [[[2.0]], [[30.0]]]])         # (2, 2, 1, 1)
    x_test = np.array([[[[3.0]], [[40.0]]]])
    tr, te, info = normalize_images(x_train, x_test, "standardize", 255.0)
    assert tr[:, :, 0, 0].tolist() == [[-1.0, -1.0], [1.0, 1.0]]
    assert te[0, :, 0, 0].tolist() == [2.0, 2.0]
    assert info["mean"] == [1.0, 20.0] and info["std"] == [1.0, 10.0]


def test_zca_refuses_a_filter_bias_of_zero():
    with pytest.raises(ValueError, match="filter_bias must be > 0"):
        ZCA.fit(torch.ones(3, 2, dtype=torch.float64), filter_bias=0.0)


def test_gcn_divides_by_a_divisor_equal_to_min_divisor():
    # pylearn2 leaves undivided only divisors strictly below min_divisor: the image (0, 2)
    # centres to (-1, 1), divisor sqrt(2 + 1 + 1) / 1 = 2 = min_divisor, so it is divided
    x = torch.tensor([[0.0, 2.0]], dtype=F64)
    g = global_contrast_normalize(x, scale=1.0, sqrt_bias=2.0, min_divisor=2.0)
    assert g.tolist() == [[-0.5, 0.5]]


def test_zca_fit_counts_the_images_past_a_whole_chunk():
    # 4097 images of 2 values: one more than the 4096 per chunk; only the last is nonzero,
    # so the training mean is exactly (1, 0) and it is the last image that makes it so
    x = torch.zeros(4097, 2, dtype=F64)
    x[-1] = torch.tensor([4097.0, 0.0])
    zca = ZCA.fit(x)
    assert zca.mean.tolist() == [1.0, 0.0]
    _, _, _, _, p = closed_form(x, 0.1)
    torch.testing.assert_close(zca.matrix, p, rtol=1e-12, atol=1e-12)
