"""Sharpness measures on a quadratic loss with closed forms."""
import copy
import math
import re
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.measure.sharpness import (
    epsilon_sharpness, expected_sharpness, local_entropy, mean_loss,
)
from sgdlab.operators import params_vector
from sgdlab.testing import Quadratic, scalar_linear


def _loss(out, y):
    return out.mean()


DATA = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
H = torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64))


class Linear(Quadratic):
    """L(θ) = cᵀθ for every sample, c held as ``h``: the gradient's sign is sign(c) everywhere."""

    def forward(self, x):
        return (self.h @ self.theta).expand(len(x))


@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_epsilon_sharpness_steps_step_fraction_of_the_box(fraction):
    """On L = cᵀθ each ascent step moves ζ_i by fraction · r_i towards sign(c_i) r_i, clipped
    at the box: after k steps from the random start ζ⁰ = (2u − 1) r (u uniform from the
    generator) the loss is cᵀ(θ + ζᵏ), the largest along the way. Two steps leave some
    coordinates inside the box, so the step size shows."""
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    theta = torch.tensor([0.2, -1.0, 0.0, 0.5], dtype=torch.float64)
    eps, k = 1e-2, 2
    res = epsilon_sharpness(Linear(c, theta), _loss, DATA, eps, num_steps=k,
                            step_fraction=fraction, generator=torch.Generator().manual_seed(0))
    r = eps * (theta.abs() + 1)
    u = torch.rand(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    zeta = ((2 * u - 1) * r + k * fraction * r * c.sign()).clamp(-r, r)
    assert bool((zeta.abs() < r).any())                   # not every coordinate at the box
    assert res.loss == pytest.approx(float(c @ theta), rel=1e-15)
    assert res.max_loss == pytest.approx(float(c @ (theta + zeta)), rel=1e-13)


@pytest.mark.parametrize("fraction", [0.0, -0.25, float("nan"), float("inf")])
def test_epsilon_sharpness_refuses_a_step_fraction_that_does_not_climb(fraction):
    model = Linear(torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="Invalid step_fraction"):
        epsilon_sharpness(model, _loss, DATA, 1e-2, step_fraction=fraction)


@pytest.mark.parametrize("vectorize", [True, False])
def test_expected_sharpness_of_quadratic(vectorize):
    model = Quadratic(H, torch.tensor([0.3, -0.2, 0.1, 0.0, 0.5], dtype=torch.float64))
    sigma = 0.1
    est = expected_sharpness(model, _loss, DATA, sigma, 400,
                             generator=torch.Generator().manual_seed(0), vectorize=vectorize)
    exact = sigma ** 2 * float(torch.trace(H)) / 2
    assert abs(est.value - exact) < 3 * est.stderr
    assert est.stderr < exact            # the test can fail: the estimate is informative
    torch.testing.assert_close(params_vector(model)[0], torch.tensor(0.3, dtype=torch.float64))


def test_epsilon_sharpness_reaches_the_box_corner():
    model = Quadratic(H, torch.zeros(5, dtype=torch.float64))
    eps = 1e-2
    res = epsilon_sharpness(model, _loss, DATA, eps, num_steps=10,
                            generator=torch.Generator().manual_seed(0))
    exact_max = 0.5 * eps ** 2 * float(torch.trace(H))   # corners |ζ_i| = ε(|0| + 1)
    assert res.max_loss == pytest.approx(exact_max, rel=1e-9)
    assert res.sharpness == pytest.approx(100 * exact_max)
    assert mean_loss(model, _loss, DATA) == 0.0          # parameters restored


def test_epsilon_sharpness_away_from_the_minimum():
    """At θ with |θ_i| > ε(|θ_i| + 1) the ascent climbs to the corner ζ_i = sign(θ_i) r_i,
    r_i = ε(|θ_i| + 1) (the box scales with |θ_i|): max = ½ Σ h_i (|θ_i| + r_i)², reported
    relative to 1 + L(θ)."""
    theta = torch.tensor([0.3, -0.2, 0.8, -1.5, 0.5], dtype=torch.float64)
    model = Quadratic(H, theta)
    eps = 1e-2
    res = epsilon_sharpness(model, _loss, DATA, eps, num_steps=10,
                            generator=torch.Generator().manual_seed(0))
    h = torch.diagonal(H)
    base = float(0.5 * (h * theta ** 2).sum())
    exact_max = float(0.5 * (h * (theta.abs() + eps * (theta.abs() + 1)) ** 2).sum())
    assert res.loss == pytest.approx(base, rel=1e-12)
    assert res.max_loss == pytest.approx(exact_max, rel=1e-9)
    assert res.sharpness == pytest.approx(100 * (exact_max - base) / (1 + base), rel=1e-9)
    torch.testing.assert_close(params_vector(model), theta, atol=0, rtol=0)


def test_local_entropy_of_quadratic_at_minimum():
    model = Quadratic(H, torch.zeros(5, dtype=torch.float64))
    gamma, beta = 0.05, 2.0
    le = local_entropy(model, _loss, DATA, gamma, beta=beta, num_samples=4000,
                       generator=torch.Generator().manual_seed(1))
    lam = torch.diagonal(H)
    # ξ ~ N(0, γ/β): E exp(−β λ ξ²/2) = (1 + γλ)^(−1/2), so f_γ = Σ log(1 + γλ) / (2β), the
    # viscous HJ solution of the thesis at the minimum (landscapes.pde.local_entropy)
    exact = float(torch.log1p(gamma * lam).sum()) / (2 * beta)
    assert abs(le.f_gamma - exact) < 4 * le.stderr + 1e-4
    assert le.width == -le.f_gamma
    with pytest.raises(ValueError, match="beta"):
        local_entropy(model, _loss, DATA, gamma, beta=0.0)


def test_local_entropy_of_quadratic_away_from_the_minimum():
    """Eq. (3.8)'s log-partition at x ≠ 0 (β = 3, γ = 1): per eigen-direction
    E exp(−βλ(x + ξ)²/2), ξ ~ N(0, γ/β), is (1 + γλ)^(−1/2) exp(−βλx²/(2(1 + γλ))), so
    f_γ(x) = Σ [log(1 + γλ)/(2β) + λx²/(2(1 + γλ))]: the entropy term and f's Moreau envelope
    (Lemma 3.5's ∇f_γ = (I + γH)⁻¹Hx). A coupling of variance γ instead of γ/β would put the
    exact value 67 standard errors away, a 1/β missing from the entropy term 238, a variance
    30% too large 11."""
    x = torch.tensor([0.4, -0.6, 1.0, 0.8, -1.2], dtype=torch.float64)
    model = Quadratic(H, x)
    gamma, beta = 1.0, 3.0
    le = local_entropy(model, _loss, DATA, gamma, beta=beta, num_samples=20000,
                       generator=torch.Generator().manual_seed(3))
    lam = torch.diagonal(H)
    exact = float((torch.log1p(gamma * lam) / (2 * beta)
                   + lam * x ** 2 / (2 * (1 + gamma * lam))).sum())
    assert abs(le.f_gamma - exact) < 4 * le.stderr + 1e-4
    assert le.stderr < 0.01 * exact
    torch.testing.assert_close(params_vector(model), x, atol=0, rtol=0)


def test_local_entropy_stderr_is_the_spread_of_repeated_estimates():
    """The delta-method standard error matches the standard deviation of f_γ over independent
    estimates (β = 4: an error in the 1/β factor would be off by 4)."""
    model = Quadratic(H, torch.tensor([0.3, -0.2, 0.1, 0.0, 0.5], dtype=torch.float64))
    runs = [local_entropy(model, _loss, DATA, 0.05, beta=4.0, num_samples=200,
                          generator=torch.Generator().manual_seed(s)) for s in range(40)]
    spread = torch.tensor([r.f_gamma for r in runs], dtype=torch.float64).std()
    stderr = sum(r.stderr for r in runs) / len(runs)
    # the sample sd of 40 estimates is within ~11% (1 sd) of the true one
    assert 0.65 < float(spread) / stderr < 1.45


def _train_mode_batchnorm_model():
    """A small float64 MLP with batch norm in train mode, and a batch of 8 for it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(),
                          nn.Linear(4, 2)).double().train()
    g = torch.Generator().manual_seed(1)
    return model, (torch.randn(8, 3, generator=g, dtype=torch.float64),
                   torch.randint(2, (8,), generator=g))


def test_expected_sharpness_of_a_train_mode_batch_norm_model():
    # vmap cannot run a train-mode batch norm (it updates its running statistics in place):
    # the points are evaluated one by one instead, each batch normalised by its own statistics
    model, data = _train_mode_batchnorm_model()
    loss_fn = nn.CrossEntropyLoss()
    theta = params_vector(model)
    xi = 0.1 * torch.randn(5, theta.numel(), generator=torch.Generator().manual_seed(2),
                           dtype=torch.float64)
    ref = []
    for row in xi:
        m = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(theta + row, m.parameters())
        with torch.no_grad():
            ref.append(float(loss_fn(m(data[0]), data[1])))
    with torch.no_grad():
        base = float(loss_fn(copy.deepcopy(model)(data[0]), data[1]))
    expected = sum(ref) / len(ref) - base
    with pytest.warns(RuntimeWarning, match="vmap failed"):
        got = expected_sharpness(model, loss_fn, data, sigma=0.1, num_samples=5,
                                 generator=torch.Generator().manual_seed(2))
    assert got.value == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert torch.equal(params_vector(model), theta)


@pytest.mark.parametrize("measure", ["mean", "expected", "epsilon", "local_entropy"])
def test_sharpness_leaves_a_train_mode_model_running_statistics_alone(measure):
    """Each perturbed forward pass in train mode updates batch norm's running statistics; a
    measurement must not leave them moved (the model's eval-mode loss would change)."""
    model, data = _train_mode_batchnorm_model()
    loss_fn = nn.CrossEntropyLoss()
    before = copy.deepcopy(model.state_dict())
    gen = torch.Generator().manual_seed(2)
    with pytest.warns() if measure in ("expected", "local_entropy") else nullcontext():
        {"mean": lambda: mean_loss(model, loss_fn, data),
         "expected": lambda: expected_sharpness(model, loss_fn, data, 0.1, 3, generator=gen),
         "epsilon": lambda: epsilon_sharpness(model, loss_fn, data, num_steps=2, generator=gen),
         "local_entropy": lambda: local_entropy(model, loss_fn, data, 0.1, num_samples=3,
                                                generator=gen)}[measure]()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), measure
    assert model.training


@pytest.mark.parametrize("vectorize", [True, False])
def test_dropout_in_train_mode_is_not_read_as_sharpness(vectorize):
    """σ = 0 perturbs nothing: with dropout in train mode each point must see the same masks
    as θ itself (else the "sharpness" is dropout noise), and the global RNG, which the
    training loop's own dropout reads, must be left as it was."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.5),
                          nn.Linear(8, 2)).double().train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = torch.randint(2, (16,), generator=g)
    data = [(x[:5], y[:5]), (x[5:], y[5:])]
    loss_fn = nn.CrossEntropyLoss()
    state = torch.get_rng_state()
    with pytest.warns() if vectorize else nullcontext():
        est = expected_sharpness(model, loss_fn, data, 0.0, 6, vectorize=vectorize,
                                 generator=torch.Generator().manual_seed(2))
        le = local_entropy(model, loss_fn, data, 0.0, num_samples=4, vectorize=vectorize,
                           generator=torch.Generator().manual_seed(2))
    eps = epsilon_sharpness(model, loss_fn, data, 1e-3, num_steps=3,
                            generator=torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert est.value == 0.0 and est.stderr == 0.0
    assert le.f_gamma == pytest.approx(mean_loss(model, loss_fn, data), rel=1e-12)
    assert eps.sharpness >= 0.0


@pytest.mark.parametrize("vectorize", [True, False])
def test_train_mode_batch_norm_sees_the_same_batches_at_every_point(vectorize):
    """With batch statistics the loss depends on how the samples are batched: a shuffling
    DataLoader read once per point gave θ and each perturbed point other batches, and σ = 0
    read a "sharpness" (0.003 ± 0.006 here)."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(),
                          nn.Linear(4, 2)).double().train()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (20,))
    loader = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True)
    with pytest.warns() if vectorize else nullcontext():
        est = expected_sharpness(model, nn.CrossEntropyLoss(), loader, 0.0, 5,
                                 vectorize=vectorize)
    assert est.value == 0.0 and est.stderr == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1])
def test_sharpness_refuses_a_non_finite_or_negative_scale(bad):
    # a NaN or infinite σ, ε or γ measured NaN (or -inf) instead of being refused
    model = Quadratic(H, torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="sigma"):
        expected_sharpness(model, _loss, DATA, bad, 2)
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_sharpness(model, _loss, DATA, bad)
    with pytest.raises(ValueError, match="gamma"):
        local_entropy(model, _loss, DATA, bad, num_samples=2)


def test_vmapped_points_stay_below_the_element_limit(monkeypatch):
    # vmap folds the points into one tensor: points x samples x the widest activation of one
    # sample must stay below cuDNN's 32-bit limit (here scaled down), in fewer points per call
    import sgdlab.measure.passes as passes
    import sgdlab.measure.sharpness as sharpness

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    x = torch.randn(10, 4, dtype=torch.float64)
    data = (x, torch.randint(0, 2, (10,)))
    loss_fn = nn.CrossEntropyLoss()
    pert = 0.1 * torch.randn(20, 6 * 4 + 6 + 2 * 6 + 2, dtype=torch.float64)
    widest = 6                        # the hidden layer's outputs, per sample
    monkeypatch.setattr(passes, "VMAP_MAX_ELEMENTS", 3 * 10 * widest)
    seen, real_vmap = [], sharpness.vmap

    def spy(f, *args, **kwargs):
        g = real_vmap(f, *args, **kwargs)

        def call(thetas, xb, yb):
            seen.append(len(thetas) * len(xb) * widest)
            return g(thetas, xb, yb)
        return call
    monkeypatch.setattr(sharpness, "vmap", spy)
    out, _ = sharpness.perturbed_evaluations(model, loss_fn, data, pert, chunk_size=16)
    assert seen and max(seen) <= 3 * 10 * widest, seen
    loop, _ = sharpness.perturbed_evaluations(model, loss_fn, data, pert, vectorize=False)
    torch.testing.assert_close(out, loop, rtol=1e-12, atol=0)


def test_one_sample_of_expected_sharpness_is_its_own_difference():
    """M = 1 is allowed: on L = cᵀθ the one sample reads cᵀξ, ξ = σ z with z the generator's
    first standard normal draw (no standard error from one sample)."""
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    model = Linear(c, torch.tensor([0.2, -1.0, 0.3], dtype=torch.float64))
    est = expected_sharpness(model, _loss, DATA, 0.1, 1,
                             generator=torch.Generator().manual_seed(2))
    z = torch.randn(1, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert est.value == pytest.approx(float(0.1 * z[0] @ c), rel=1e-12)


def test_local_entropy_of_two_samples_by_hand():
    """M = 2 on L = cᵀθ: f = −(1/β) log mean exp(−β L_i) and the delta-method standard error
    sd(w) / (√2 β mean w), w_i = exp(−β (L_i − min L)), from the generator's two draws
    ξ_i = √(γ/β) z_i."""
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    theta = torch.tensor([0.2, -1.0, 0.3], dtype=torch.float64)
    gamma, beta = 0.5, 2.0
    le = local_entropy(Linear(c, theta), _loss, DATA, gamma, beta=beta, num_samples=2,
                       generator=torch.Generator().manual_seed(3))
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    losses = [float(c @ (theta + (gamma / beta) ** 0.5 * zi)) for zi in z]
    lo = min(losses)
    w = [math.exp(-beta * (v - lo)) for v in losses]
    mean_w = sum(w) / 2
    sd_w = abs(w[0] - w[1]) / math.sqrt(2)                   # n − 1 = 1
    assert le.f_gamma == pytest.approx(lo - math.log(mean_w) / beta, rel=1e-12)
    assert le.stderr == pytest.approx(sd_w / math.sqrt(2) / mean_w / beta, rel=1e-12)


@pytest.mark.parametrize("vectorize", [True, False])
def test_losses_over_batches_of_unequal_size_are_means_over_samples(vectorize):
    """L(w) = (1/N) Σ_i (w x_i − y_i)², a quadratic in the one weight w, over batches of 3 and
    1 samples: the mean over all N = 4 samples (batches weighted by their size, not a mean of
    batch means). Each sample of the expected sharpness is, exactly,
    L(w + ξ) − L(w) = (1/N) Σ_i [2 ξ x_i (w x_i − y_i) + ξ² x_i²], ξ = σ z with z the
    generator's draws; its expectation σ²/2 · Tr H with H = (2/N) Σ x_i²."""
    x = torch.tensor([[1.0], [2.0], [-1.0], [3.0]], dtype=torch.float64)
    y = torch.tensor([[0.5], [1.0], [2.0], [-4.0]], dtype=torch.float64)
    model = scalar_linear(0.7)
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    r = 0.7 * x - y
    assert mean_loss(model, nn.MSELoss(), batches) == pytest.approx(float(r.square().mean()),
                                                                    rel=1e-14)
    sigma, m = 0.3, 5
    est = expected_sharpness(model, nn.MSELoss(), batches, sigma, m, vectorize=vectorize,
                             generator=torch.Generator().manual_seed(4))
    xi = sigma * torch.randn(m, 1, generator=torch.Generator().manual_seed(4),
                             dtype=torch.float64)[:, 0]
    samples = torch.stack([(2 * s * x * r + s ** 2 * x ** 2).mean() for s in xi])
    assert est.value == pytest.approx(float(samples.mean()), rel=1e-12)
    assert est.stderr == pytest.approx(float(samples.std()) / math.sqrt(m), rel=1e-12)
    assert model.weight.item() == 0.7


def test_epsilon_sharpness_climbs_the_gradient_of_the_mean_over_all_samples():
    """L(w) = (1/4) Σ_i (w − y_i)² over batches of 3 samples (y = −0.3, residual +1 each)
    and 1 (y = 2.7, residual −2) at w = 0.7: dL/dw ∝ 3·1 − 2 > 0 throughout the box
    |ζ| ≤ ε(|w| + 1) = 0.17 (its minimiser mean y = 0.45 lies below it), so Keskar's ascent
    ends at the corner w + 0.17 and the maximum is L(0.87) exactly; a sum of the batches'
    mean gradients, not weighted by their sizes (1 − 2 < 0), would descend instead."""
    x = torch.ones(4, 1, dtype=torch.float64)
    y = torch.tensor([[-0.3], [-0.3], [-0.3], [2.7]], dtype=torch.float64)
    model = scalar_linear(0.7)
    res = epsilon_sharpness(model, nn.MSELoss(), [(x[:3], y[:3]), (x[3:], y[3:])], 0.1,
                            generator=torch.Generator().manual_seed(0))
    base, top = float((0.7 - y).square().mean()), float((0.87 - y).square().mean())
    assert res.loss == pytest.approx(base, rel=1e-14)
    assert res.max_loss == pytest.approx(top, rel=1e-12)
    assert res.sharpness == pytest.approx(100 * (top - base) / (1 + base), rel=1e-12)


def test_epsilon_sharpness_reports_the_largest_loss_along_the_ascent_not_the_last():
    """On the concave L(θ) = −½θ² (a maximum inside the box, at θ = 0) the sign-gradient ascent
    from ζ⁰ = (2u − 1) r oscillates around 0 in steps of r/4: the maximum is the loss at the
    visited point nearest 0, replayed here by hand (the loss at ζ⁰ … ζᵏ, k = num_steps), and
    not the loss at the last point."""
    theta = torch.zeros(1, dtype=torch.float64)
    model = Quadratic(-torch.eye(1, dtype=torch.float64), theta)
    eps, k = 0.1, 5
    res = epsilon_sharpness(model, _loss, DATA, eps, num_steps=k,
                            generator=torch.Generator().manual_seed(0))
    r = eps
    zeta = (2 * torch.rand(1, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64) - 1) * r
    losses = []
    for _ in range(k + 1):
        losses.append(float(-0.5 * zeta.square()))
        zeta = (zeta - 0.25 * r * zeta.sign()).clamp(-r, r)
    assert max(losses) > losses[-1]                  # the test can tell the two apart
    assert res.max_loss == pytest.approx(max(losses), rel=1e-12)


def test_sharpness_refuses_no_samples_and_a_zero_box():
    """Zero samples estimate nothing; a box of half-width ε = 0 has no sharpness to find."""
    model = Quadratic(H)
    with pytest.raises(ValueError, match="num_samples=0"):
        expected_sharpness(model, _loss, DATA, 0.1, 0)
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="Invalid epsilon"):
            epsilon_sharpness(model, _loss, DATA, bad)


def test_sharpness_options_that_are_no_numbers_are_named():
    """True was a box of half-width 1, a step of the whole box or a σ of 1, and one ascent
    step; a string failed on a comparison, 2.5 steps in range()."""
    model = Quadratic(H)
    for call, says in (
            (lambda: epsilon_sharpness(model, _loss, DATA, True), "Invalid epsilon=True"),
            (lambda: epsilon_sharpness(model, _loss, DATA, "0.1"), "Invalid epsilon='0.1'"),
            (lambda: epsilon_sharpness(model, _loss, DATA, 0.1, step_fraction="0.5"),
             "Invalid step_fraction='0.5'"),
            (lambda: epsilon_sharpness(model, _loss, DATA, 0.1, num_steps=True),
             "Invalid num_steps=True (an int >= 1)"),
            (lambda: epsilon_sharpness(model, _loss, DATA, 0.1, num_steps=2.5),
             "Invalid num_steps=2.5 (an int >= 1)"),
            (lambda: expected_sharpness(model, _loss, DATA, True, 2), "Invalid sigma=True"),
            (lambda: expected_sharpness(model, _loss, DATA, "0.1", 2), "Invalid sigma='0.1'")):
        with pytest.raises(ValueError, match=re.escape(says)):
            call()


@pytest.mark.parametrize("measure", ["expected", "local_entropy"])
def test_a_sample_count_is_an_int_numpy_s_included(measure):
    """np.int64(4) samples are 4 (local entropy's result held np.int64); True, 0 and 2.0 are
    refused naming the option (True was 1 sample of expected sharpness and torch's randn()
    error for local entropy, 0 torch's max() error)."""
    def value(n):
        g = torch.Generator().manual_seed(0)
        if measure == "expected":
            return expected_sharpness(Quadratic(H), _loss, DATA, 0.1, n, generator=g)
        return local_entropy(Quadratic(H), _loss, DATA, 0.1, num_samples=n, generator=g)

    assert value(np.int64(4)) == value(4)
    if measure == "local_entropy":
        assert type(value(np.int64(4)).num_samples) is int
    for bad in (True, 0, 2.0):
        with pytest.raises(ValueError, match=re.escape(f"Invalid num_samples={bad!r} (an int "
                                                       ">= 1)")):
            value(bad)


def test_local_entropy_of_losses_spread_over_thousands_stays_finite():
    """A log-mean-exp shifted by the largest −βL: on L = cᵀθ with |c| ~ 10³ the sampled losses
    spread over thousands, so exp(−β(L − L_min)) underflows harmlessly for the large ones,
    while a shift by the smallest −βL would overflow to inf. f = L_min − log(mean w)/β by
    hand from the generator's draws ξ_i = √(γ/β) z_i."""
    c = torch.tensor([1000.0, -2000.0, 500.0], dtype=torch.float64)
    theta = torch.tensor([0.2, -1.0, 0.3], dtype=torch.float64)
    gamma, beta, m = 0.5, 2.0, 4
    le = local_entropy(Linear(c, theta), _loss, DATA, gamma, beta=beta, num_samples=m,
                       generator=torch.Generator().manual_seed(3))
    z = torch.randn(m, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    losses = [float(c @ (theta + (gamma / beta) ** 0.5 * zi)) for zi in z]
    lo = min(losses)
    assert max(losses) - lo > 1000
    mean_w = sum(math.exp(-beta * (v - lo)) for v in losses) / m
    assert math.isfinite(le.f_gamma) and math.isfinite(le.stderr)
    assert le.f_gamma == pytest.approx(lo - math.log(mean_w) / beta, rel=1e-12)
