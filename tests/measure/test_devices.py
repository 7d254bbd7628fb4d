"""The measurements on every device this machine has (CPU always; CUDA when present), each
against a dense float64 reference computed on the CPU: model, data and generators on the
device must give the CPU's numbers. Tiny conv net with eval-mode batch norm, so the R-op,
Taylor-mode and factored per-sample paths all run."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.measure import (batch_statistics, gradient_covariance, hessian_eigenpairs,
                            hessian_spectral_density, hessian_trace, normalized_step_length)
from sgdlab.measure.surface import loss_surface
from sgdlab.measure.passes import activation_bytes_per_sample
from sgdlab.measure.walk import segment_losses
from sgdlab.operators import HessianOperator, params_vector, per_sample_gradients
from sgdlab.testing import (covariance_reference, dense_hessian_reference,
                            per_sample_gradients_loop, random_eval_batchnorm, tiny_images)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LOSS = F.cross_entropy


def _problem(device: str):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), random_eval_batchnorm(
        nn.BatchNorm2d(3), seed=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(3 * 3 * 3, 3)).double()
    x, y = tiny_images(n=8, channels=2, size=6, classes=3)
    return model.to(device).eval(), (x.to(device), y.to(device))


@pytest.fixture(scope="module")
def reference():
    model, data = _problem("cpu")
    h = dense_hessian_reference(model, LOSS, data)
    g = per_sample_gradients_loop(model, LOSS, data)
    return {"H": h, "eig": torch.linalg.eigvalsh(h), "G": g,
            "cov_eig": torch.linalg.eigvalsh(covariance_reference(g))}


@pytest.mark.parametrize("device", DEVICES)
def test_hessian_products_and_spectrum(device, reference):
    model, data = _problem(device)
    op = HessianOperator(model, LOSS, data)
    v = torch.randn(len(reference["H"]), generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v.to(device)).cpu(), reference["H"] @ v,
                               rtol=1e-9, atol=1e-11)
    vals, vecs = hessian_eigenpairs(model, LOSS, data, k=3, tol=1e-10)
    assert vecs.device.type == device
    torch.testing.assert_close(vals.cpu().double(), reference["eig"].flip(0)[:3],
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_trace_and_density_with_a_generator_on_the_device(device, reference):
    model, data = _problem(device)
    gen = torch.Generator(device).manual_seed(0)
    est = hessian_trace(model, LOSS, data, num_probes=400, generator=gen)
    exact = float(reference["eig"].sum())
    assert abs(est.value - exact) <= 5 * est.stderr, (est, exact)
    d = len(reference["eig"])
    dens = hessian_spectral_density(model, LOSS, data, num_probes=2, num_iter=d,
                                    generator=torch.Generator(device).manual_seed(1))
    # Lanczos over the whole space: the extreme nodes are the extreme eigenvalues
    torch.testing.assert_close(dens.weights.sum(1).cpu().double(),
                               torch.ones(2, dtype=torch.float64))
    assert float(dens.nodes.max()) == pytest.approx(float(reference["eig"][-1]), rel=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_per_sample_gradients_covariance_and_batch_statistics(device, reference):
    model, data = _problem(device)
    g = per_sample_gradients(model, LOSS, data)
    assert g.device.type == device
    torch.testing.assert_close(g.cpu(), reference["G"], rtol=1e-9, atol=1e-12)
    vals, _ = gradient_covariance(model, LOSS, data).eigenpairs(3)
    torch.testing.assert_close(vals.cpu().double(), reference["cov_eig"].flip(0)[:3],
                               rtol=1e-8, atol=1e-12)
    stats = batch_statistics(model, LOSS, data, lr=0.1)
    n = len(reference["G"])
    tr_unbiased = float(reference["cov_eig"].sum()) * n / (n - 1)
    assert stats.trace_cov == pytest.approx(tr_unbiased, rel=1e-8)
    assert stats.grad_sq == pytest.approx(float(reference["G"].mean(0).square().sum()),
                                          rel=1e-8)


@pytest.mark.parametrize("device", DEVICES)
def test_step_length_and_loss_surface_match_the_cpu(device):
    results = {}
    for dev in dict.fromkeys(["cpu", device]):
        model, data = _problem(dev)
        theta = params_vector(model)
        step = 0.05 * torch.randn(len(theta), generator=torch.Generator().manual_seed(2),
                                  dtype=torch.float64).to(dev)
        alpha = normalized_step_length(model, LOSS, theta, theta - step, data).alpha
        surf = loss_surface(model, LOSS, data, [step], steps=5, accuracy=False)
        results[dev] = (alpha, torch.tensor(surf.train_loss, dtype=torch.float64))
    alpha_cpu, surf_cpu = results["cpu"]
    alpha_dev, surf_dev = results[device]
    assert alpha_dev == pytest.approx(alpha_cpu, rel=1e-9, abs=1e-12)
    torch.testing.assert_close(surf_dev, surf_cpu, rtol=1e-10, atol=1e-12)
    # the surface passes through the model's own loss at the origin (middle of 5 points)
    model, data = _problem("cpu")
    with torch.no_grad():
        origin = float(LOSS(model(data[0]), data[1]))
    assert float(surf_cpu[2]) == pytest.approx(origin, rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_a_cpu_generator_gives_the_cpu_direction_and_covariance_eigenvectors_on_any_device(
        device):
    # draws are made on the generator's device and moved: the same numbers on every device
    # (drawing on the parameters' device with a CPU generator is refused on CUDA)
    from sgdlab.measure.surface import random_direction

    out = {}
    for dev in dict.fromkeys(("cpu", device)):
        model, data = _problem(dev)
        d = random_direction(model, generator=torch.Generator().manual_seed(2))
        assert d.device.type == dev and d.dtype == torch.float64
        # N = 8 examples: Σ has rank <= 7, so k = 8 takes a zero eigenvalue, whose eigenvector
        # is completed with a random draw
        vals, vecs = gradient_covariance(model, LOSS, data).eigenpairs(
            8, generator=torch.Generator().manual_seed(3))
        out[dev] = (d.cpu(), vals.cpu(), vecs.cpu())
    (d_cpu, vals_cpu, vecs_cpu), (d_dev, vals_dev, vecs_dev) = out["cpu"], out[device]
    torch.testing.assert_close(d_dev, d_cpu, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(vals_dev, vals_cpu, rtol=1e-9, atol=1e-12)
    signs = torch.sign((vecs_dev * vecs_cpu).sum(0))      # eigh's sign per column is free
    torch.testing.assert_close(vecs_dev * signs, vecs_cpu, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_segment_losses_batched_over_alpha_match_the_cpu_point_by_point(device, bn_mode):
    # Xing et al.'s interpolation between iterates: vmap over the points on the device, whole
    # and in chunks of samples (train mode: the whole batch's statistics, computed over the
    # chunks first), against the CPU evaluating one point after another
    model, data = _problem("cpu")
    theta_a = params_vector(model)
    theta_b = theta_a + 0.1 * torch.randn(len(theta_a), dtype=torch.float64,
                                          generator=torch.Generator().manual_seed(5))
    ref = segment_losses(model, LOSS, data, theta_a, theta_b, 6, bn_mode=bn_mode,
                         vectorize=False)
    model, data = _problem(device)
    a, b = theta_a.to(device), theta_b.to(device)
    whole = segment_losses(model, LOSS, data, a, b, 6, bn_mode=bn_mode, vectorize=True)
    # a budget of 2 x 3 samples' activations: one point per vmap call, the 8 samples in
    # chunks of 3, 3 and 2 (walk._chunk_sizes)
    per_sample = activation_bytes_per_sample(model, data[0][:2])
    chunked = segment_losses(model, LOSS, data, a, b, 6, bn_mode=bn_mode, vectorize=True,
                             memory_budget=2 * 3 * per_sample)
    for out in (whole, chunked):
        assert out.device.type == "cpu" or out.device.type == device
        torch.testing.assert_close(out.cpu(), ref, rtol=1e-10, atol=1e-12)
