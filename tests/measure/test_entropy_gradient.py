"""The local-entropy gradient (thesis (3.10)) and its angle with the SGD gradient, against the
closed form A(I + γA)⁻¹x of the quadratic L(y) = ½ yᵀAy, in float64."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.measure.entropy_gradient import (langevin_step_, local_entropy_gradient,
                                             local_entropy_gradient_angle)
from sgdlab.operators.params import params_vector
from sgdlab.optim.entropy_sgd import EntropySGD
from sgdlab.testing import quadratic_local_entropy_gradient, scalar_linear

torch.set_num_threads(1)


def quadratic(d: int = 3, seed: int = 0):
    """A linear model w ↦ Xw (no bias) under MSE against zero targets: L(w) = ½ wᵀAw with
    A = 2XᵀX/n; X = √(n/2) A^½ (n = d rows) for A SPD with eigenvalues 0.5 .. 2."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    A = U @ torch.diag(lam) @ U.T
    X = math.sqrt(d / 2) * U @ torch.diag(lam.sqrt()) @ U.T
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    return model, nn.MSELoss(), (X, torch.zeros(d, 1, dtype=torch.float64)), A


def degrees(a, b) -> float:
    cos = float(a @ b / (a.norm() * b.norm()))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def test_the_quadratic_is_what_it_says():
    model, loss_fn, data, A = quadratic()
    w = params_vector(model)
    with torch.no_grad():
        loss = float(loss_fn(model(data[0]), data[1]))
    assert loss == pytest.approx(float(0.5 * w @ A @ w), rel=1e-14)


def test_noiseless_langevin_converges_to_the_closed_form():
    """β = inf, α = 0, full-data steps: z = y_L, the fixed point (I + γA)⁻¹x of the chain's
    contraction (factor ≤ 1 − η_y(0.5 + 1/γ) = 0.75 per step): exact to round-off."""
    model, loss_fn, data, A = quadratic(d=4, seed=3)
    x = params_vector(model)
    gamma = 0.5
    g = local_entropy_gradient(model, loss_fn, data, gamma, beta=math.inf, steps=200,
                               inner_lr=0.1, alpha=0.0)
    exact = quadratic_local_entropy_gradient(A, x, gamma)
    assert torch.allclose(g, exact, atol=1e-13, rtol=0), (g, exact)
    assert (exact - A @ x).abs().max() > 0.1           # not the plain gradient


@pytest.mark.parametrize("beta", [1.0, 4.0])
def test_importance_sampling_converges_to_the_closed_form(beta):
    """γ = 0.5: K = 8 independent estimates of M = 4,096 samples each; their mean is within
    4.5 standard errors (spread over the K) of A(I + γA)⁻¹x, and the self-normalised bias
    O(1/M) is below that resolution. β = 4 checks the samples' variance γ/β (with variance γ
    the estimate would be βA(I + γβA)⁻¹x)."""
    model, loss_fn, data, A = quadratic()
    x = params_vector(model)
    gamma, K = 0.5, 8
    est = torch.stack([local_entropy_gradient(model, loss_fn, data, gamma, method="importance",
                                              beta=beta, num_samples=4096,
                                              generator=torch.Generator().manual_seed(k))
                       for k in range(K)])
    exact = quadratic_local_entropy_gradient(A, x, gamma)
    se = est.std(0) / math.sqrt(K)
    assert ((est.mean(0) - exact).abs() / se).max() < 4.5, (est.mean(0), exact, se)
    # resolved well enough to tell ∇f_γ from ∇L, and noisy, not degenerate
    assert (exact - A @ x).abs().max() > 10 * se.max()
    assert se.min() > 1e-4


def side_by_side(K: int, d: int = 3, seed: int = 0):
    """K copies of :func:`quadratic` side by side in one linear model of K·d weights, each
    block at the same x: L(w) = Σ_k ½ w_kᵀAw_k (block-diagonal X scaled by √K for the mean
    over K·d rows). Its Langevin chain is K independent chains of the d-dimensional one: the
    drift is block-diagonal and the noise independent per coordinate."""
    model, loss_fn, (X, _), A = quadratic(d, seed)
    x = params_vector(model)
    big = nn.Linear(K * d, 1, bias=False).double()
    with torch.no_grad():
        big.weight.copy_(x.repeat(K)[None])
    data = (torch.block_diag(*[math.sqrt(K) * X] * K), torch.zeros(K * d, 1, dtype=torch.float64))
    return big, loss_fn, data, A, x


def test_langevin_with_a_small_step_and_many_steps_converges_to_the_closed_form():
    """β = 50 (thermal noise 0.02), full-data drift, η_y = 0.05, L = 3,000, α = 0.995: the
    chain's stationary mean is exact for a linear drift (ULA on a Gaussian), z₀ = x weighs
    α^L = 3e-7, and the average spans ~200 steps; K = 8 independent chains (run as one, on
    K copies of the problem side by side), 5 standard errors (the Gibbs mean does not depend
    on β; β = 1 needs ~50x the steps for this resolution)."""
    K, d, gamma = 8, 3, 0.5
    model, loss_fn, data, A, x = side_by_side(K, d)
    w = params_vector(model)
    with torch.no_grad():
        loss = float(loss_fn(model(data[0]), data[1]))
    assert loss == pytest.approx(K * float(0.5 * x @ A @ x), rel=1e-13)
    est = local_entropy_gradient(model, loss_fn, data, gamma, beta=50.0, steps=3000,
                                 inner_lr=0.05, alpha=0.995,
                                 generator=torch.Generator().manual_seed(0)).reshape(K, d)
    assert torch.equal(params_vector(model), w)           # the model is left at x
    exact = quadratic_local_entropy_gradient(A, x, gamma)
    se = est.std(0) / math.sqrt(K)
    assert ((est.mean(0) - exact).abs() / se).max() < 5, (est.mean(0), exact, se)
    assert (exact - A @ x).abs().max() > 10 * se.max()
    assert se.min() > 1e-4


def test_langevin_is_entropy_sgds_own_estimate():
    """The same chain as one step of EntropySGD(lr=0) on the full data, with the optimizer's
    seed as the measurement's generator: (x − z)/γ bit for bit (one step code, shared)."""
    model, loss_fn, data, A = quadratic(d=4, seed=1)
    gamma, beta, L, seed = 0.7, 5.0, 25, 11
    g = local_entropy_gradient(model, loss_fn, data, gamma, beta=beta, steps=L, inner_lr=0.08,
                               alpha=0.25, generator=torch.Generator().manual_seed(seed))
    w = model.weight
    opt = EntropySGD([w], lr=0.0, inner_lr=0.08, L=L, gamma=gamma, noise=1 / beta,
                     alpha=0.25, seed=seed)

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(data[0]), data[1])
        loss.backward()
        return loss
    opt.step(closure)
    st = opt.state[w]
    assert torch.equal(g, ((st["x"] - st["z"]) / gamma).reshape(-1))


def test_langevin_step_is_the_documented_update():
    """y ← y − η γ⁻¹(y − x) − η d + √(2ηT) ε, z ← αz + (1 − α)y, against the formula."""
    gen = torch.Generator().manual_seed(0)
    x, y, z, d = (torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(4))
    ys, zs = [y.clone()], [z.clone()]
    langevin_step_(ys, [x], zs, [d], lr=0.1, gamma=0.4, alpha=0.3, temperature=0.2,
                   generator=torch.Generator().manual_seed(5))
    eps = torch.randn(5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y_new = y - 0.1 / 0.4 * (y - x) - 0.1 * d + math.sqrt(2 * 0.1 * 0.2) * eps
    assert torch.allclose(ys[0], y_new, atol=1e-15, rtol=0)
    assert torch.allclose(zs[0], 0.3 * z + 0.7 * y_new, atol=1e-15, rtol=0)


def test_angle_is_the_closed_form_angle_and_vanishes_as_gamma_goes_to_zero():
    """∠(A(I + γA)⁻¹x, Ax) with the full-data SGD gradient, noiseless Langevin (η_y =
    min(γ/2, 0.4): contraction ≤ 0.76 per step), for γ = 10 .. 0.001: the measured angle
    equals the closed form, and both fall to 0 with γ (∇f_γ → ∇L; γ → ∞: ∇f_γ → x/γ)."""
    model, loss_fn, data, A = quadratic(d=4, seed=2)
    x = params_vector(model)
    measured, closed = [], []
    for gamma in (10.0, 1.0, 0.1, 0.01, 0.001):
        r = local_entropy_gradient_angle(model, loss_fn, data, gamma, sgd_gradient="full",
                                         beta=math.inf, steps=150, inner_lr=min(gamma / 2, 0.4),
                                         alpha=0.0)
        exact = quadratic_local_entropy_gradient(A, x, gamma)
        closed.append(degrees(exact, A @ x))
        measured.append(r.degrees)
        assert r.cosine == pytest.approx(math.cos(math.radians(r.degrees)), abs=1e-12)
        assert r.sgd_grad_norm == pytest.approx(float((A @ x).norm()), rel=1e-12)
        assert r.entropy_grad_norm == pytest.approx(float(exact.norm()), rel=1e-10)
    assert measured == pytest.approx(closed, abs=1e-9)
    assert closed[0] > 5 and all(a > b for a, b in zip(closed, closed[1:]))
    assert measured[-1] < 0.05


def test_the_sgd_gradient_is_a_minibatch_drawn_first_from_the_generator():
    """sgd_gradient="batch": the gradient on randperm(N, generator)[:b], the generator's first
    draw; "full": the gradient over all of the data."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(30, 3, generator=gen, dtype=torch.float64), torch.randint(0, 2, (30,),
                                                                                   generator=gen)
    loss_fn = nn.CrossEntropyLoss()

    def grad_norm(xb, yb):
        g = torch.autograd.grad(loss_fn(model(xb), yb), list(model.parameters()))
        return float(torch.cat([t.reshape(-1) for t in g]).norm())

    idx = torch.randperm(30, generator=torch.Generator().manual_seed(9))[:8]
    r = local_entropy_gradient_angle(model, loss_fn, (x, y), 0.1, batch_size=8, beta=1e4,
                                     steps=3, generator=torch.Generator().manual_seed(9))
    assert r.sgd_grad_norm == pytest.approx(grad_norm(x[idx], y[idx]), rel=1e-12)
    full = local_entropy_gradient_angle(model, loss_fn, (x, y), 0.1, sgd_gradient="full",
                                        batch_size=8, beta=1e4, steps=3,
                                        generator=torch.Generator().manual_seed(9))
    assert full.sgd_grad_norm == pytest.approx(grad_norm(x, y), rel=1e-12)
    assert 0 <= r.degrees <= 180 and 0 <= full.degrees <= 180


@pytest.mark.parametrize("seed, pair, degrees", [(3, [0, 1], 180.0), (0, [0, 2], 0.0)])
def test_an_sgd_gradient_against_the_entropy_gradient_is_at_180_degrees(seed, pair, degrees):
    """One weight w = 0, losses (w − t_i)² with t = (−1, −1, 5): every mini-batch of two pulls
    the Langevin chain's average ⟨y⟩ > 0 on the whole (pairs {0, 2} and {1, 2} to 1, {0, 1} to
    −1/2), so ∇f_γ = γ⁻¹(w − ⟨y⟩) < 0, while the SGD gradient on the pair {0, 1} is
    2(w + 1) = +2: in one dimension the angle is 180° exactly (0° for a pair with t = 5)."""
    assert sorted(torch.randperm(3, generator=torch.Generator().manual_seed(seed))[:2]
                  .tolist()) == pair
    model = scalar_linear(0.0)
    data = (torch.ones(3, 1, dtype=torch.float64),
            torch.tensor([[-1.0], [-1.0], [5.0]], dtype=torch.float64))
    r = local_entropy_gradient_angle(model, nn.MSELoss(), data, 0.5, batch_size=2,
                                     beta=math.inf, steps=50, inner_lr=0.1,
                                     generator=torch.Generator().manual_seed(seed))
    assert r.degrees == pytest.approx(degrees, abs=1e-9)
    assert r.cosine == pytest.approx(math.cos(math.radians(degrees)), abs=1e-12)
    assert r.sgd_grad_norm == pytest.approx(2.0 if degrees else 4.0, rel=1e-12)


@pytest.mark.parametrize("method", ["langevin", "importance"])
def test_the_model_and_the_global_generators_are_left_as_they_were(method):
    """Batch norm and dropout in train mode, mini-batches: parameters, buffers, .grad and
    torch's global generator unchanged; the same generator seed gives the same estimate."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.3),
                          nn.Linear(6, 2)).double()
    gen = torch.Generator().manual_seed(1)
    data = (torch.randn(40, 3, generator=gen, dtype=torch.float64),
            torch.randint(0, 2, (40,), generator=gen))
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(model(data[0]), data[1]).backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    kw = dict(method=method, beta=1e3, steps=4, batch_size=10, num_samples=5)
    # train-mode batch norm updates its running statistics in place: vmap cannot batch it
    def says():
        return (pytest.warns(RuntimeWarning, match="vmap failed .* evaluating the points one "
                             "by one") if method == "importance" else contextlib.nullcontext())
    with says():
        runs = [local_entropy_gradient(model, loss_fn, data, 0.05,
                                       generator=torch.Generator().manual_seed(3), **kw)
                for _ in range(2)]
    with says():
        angle = local_entropy_gradient_angle(model, loss_fn, data, 0.05,
                                             generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(runs[0], runs[1]) and math.isfinite(angle.degrees)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert torch.equal(rng, torch.get_rng_state())
    assert runs[0].shape == params_vector(model).shape


@pytest.mark.parametrize("kw,says", [
    ({"gamma": 0.0}, "Invalid gamma=0.0"),
    ({"gamma": -1.0}, "Invalid gamma=-1.0"),
    ({"gamma": math.inf}, "Invalid gamma=inf"),
    ({"gamma": math.nan}, "Invalid gamma=nan"),
    ({"method": "sgld"}, "Invalid method='sgld' \\(one of 'langevin', 'importance'\\)"),
    ({"beta": 0.0}, "Invalid beta=0.0"),
    ({"beta": math.inf, "method": "importance"}, "Invalid beta=inf .* langevin method only"),
    ({"steps": 0}, "Invalid steps=0"),
    ({"inner_lr": 0.0}, "Invalid inner_lr=0.0"),
    ({"alpha": 1.0}, "Invalid alpha=1.0"),
    ({"num_samples": 0, "method": "importance"}, "Invalid num_samples=0"),
    ({"batch_size": 4}, "Invalid batch_size=4 \\(the data has 3 samples"),
    ({"batch_size": 0}, "Invalid batch_size=0"),
])
def test_bad_input_is_refused_by_name(kw, says):
    model, loss_fn, data, _ = quadratic()
    kw = {"gamma": 0.5, **kw}
    gamma = kw.pop("gamma")
    with pytest.raises(ValueError, match=says):
        local_entropy_gradient(model, loss_fn, data, gamma, **kw)
    with pytest.raises(ValueError, match=says):
        local_entropy_gradient_angle(model, loss_fn, data, gamma, **kw)
    with pytest.raises(ValueError, match="Invalid sgd_gradient='mini'"):
        local_entropy_gradient_angle(model, loss_fn, data, 0.5, sgd_gradient="mini")


def test_numpy_ints_are_the_counts_they_hold():
    """np.int64 steps, samples and batch size (a count computed with numpy) were refused as no
    int; they give what the Python ints give."""
    model, loss_fn, data, _ = quadratic()

    def grad(**kw):
        return local_entropy_gradient(model, loss_fn, data, 0.5, **kw,
                                      generator=torch.Generator().manual_seed(0))

    for kw in ({"steps": 3, "batch_size": 2}, {"method": "importance", "num_samples": 4}):
        as_numpy = {k: np.int64(v) if isinstance(v, int) else v for k, v in kw.items()}
        torch.testing.assert_close(grad(**as_numpy), grad(**kw), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^Invalid steps=True \(an int >= 1\)$"):
        grad(steps=True)


def test_a_diverging_chain_is_a_floating_point_error():
    """η_y (λ + 1/γ) > 2: the noiseless chain grows without bound and overflows."""
    model, loss_fn, data, _ = quadratic()
    with pytest.raises(FloatingPointError, match="non-finite local-entropy gradient"):
        local_entropy_gradient(model, loss_fn, data, 0.01, beta=math.inf, steps=2000,
                               inner_lr=1.0)


class _RunningScale(nn.Module):
    """Divides by a running mean of |x| of its own, updated after use in train mode."""

    def __init__(self, d: int):
        super().__init__()
        self.register_buffer("scale", torch.full((d,), 2.0, dtype=torch.float64))

    def forward(self, x):
        out = x / self.scale.clone()
        if self.training:
            with torch.no_grad():
                self.scale.mul_(0.5).add_(0.5 * x.abs().mean(0))
        return out


def test_each_langevin_step_starts_from_the_buffers_a_train_mode_module_writes():
    # each chain step's gradient pass saw the running scale the steps before had moved: the
    # estimate was 0.041 off (its angle to the gradient's cosine 0.074) the same function's
    # with the scale held, the model in eval mode
    import copy

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), _RunningScale(4), nn.Tanh(), nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(8, 3, generator=g, dtype=torch.float64),
            torch.randint(0, 2, (8,), generator=g))
    held = copy.deepcopy(model).eval()              # the same function: no buffer written
    before = model[1].scale.clone()
    for fn in (lambda m: local_entropy_gradient(m, nn.CrossEntropyLoss(), data, 0.5,
                                                beta=math.inf, steps=3),
               lambda m: torch.tensor(local_entropy_gradient_angle(
                   m, nn.CrossEntropyLoss(), data, 0.5, beta=math.inf, steps=3).cosine)):
        torch.testing.assert_close(fn(model), fn(held), rtol=1e-12, atol=1e-12)
    assert torch.equal(model[1].scale, before) and model.training


def test_data_in_batches_of_unequal_size_weighs_each_sample_once():
    """The quadratic's 4 samples as batches of 1 and 3: the full-data gradient is the
    size-weighted mean Ax (not the mean of the two batches' gradients, nor their sum over the
    number of batches), and the noiseless chain on it reaches (I + γA)⁻¹x's closed form."""
    model, loss_fn, (X, Y), A = quadratic(d=4, seed=5)
    x = params_vector(model)
    batches = [(X[:1], Y[:1]), (X[1:], Y[1:])]
    r = local_entropy_gradient_angle(model, loss_fn, batches, 0.5, sgd_gradient="full",
                                     beta=math.inf, steps=200, inner_lr=0.1, alpha=0.0)
    exact = quadratic_local_entropy_gradient(A, x, 0.5)
    assert r.sgd_grad_norm == pytest.approx(float((A @ x).norm()), rel=1e-12)
    assert r.entropy_grad_norm == pytest.approx(float(exact.norm()), rel=1e-12)
    assert r.degrees == pytest.approx(degrees(exact, A @ x), abs=1e-9)


def test_a_batch_of_every_sample_is_allowed_and_is_the_full_gradient():
    """batch_size = N (the largest allowed): the mini-batch is a permutation of all of the
    data, so the SGD gradient is the full one, Ax."""
    model, loss_fn, data, A = quadratic(d=4, seed=5)
    x = params_vector(model)
    r = local_entropy_gradient_angle(model, loss_fn, data, 0.5, batch_size=4, beta=math.inf,
                                     steps=2, generator=torch.Generator().manual_seed(0))
    assert r.sgd_grad_norm == pytest.approx(float((A @ x).norm()), rel=1e-12)
    with pytest.raises(ValueError, match="Invalid batch_size=5"):
        local_entropy_gradient_angle(model, loss_fn, data, 0.5, batch_size=5)


def test_importance_weights_ignore_a_constant_added_to_the_loss():
    """ρ_γ(y; x) ∝ exp(−β L(y) − β|x − y|²/(2γ)) is normalised, so L + c has the same ⟨y⟩
    and the same ∇f_γ for any c: with c = 10⁴ every weight exp(−β L) underflows in float64
    unless the largest is factored out; the estimate is the offset-free one to round-off."""
    model, loss_fn, data, A = quadratic()

    def shifted(out, y):
        return loss_fn(out, y) + 1e4
    kw = dict(method="importance", beta=1.0, num_samples=256)
    plain = local_entropy_gradient(model, loss_fn, data, 0.5,
                                   generator=torch.Generator().manual_seed(0), **kw)
    far = local_entropy_gradient(model, shifted, data, 0.5,
                                 generator=torch.Generator().manual_seed(0), **kw)
    assert torch.allclose(far, plain, rtol=1e-9, atol=1e-12), (far, plain)


def test_the_chain_draws_other_dropout_masks_than_the_sgd_gradient():
    """One noiseless Langevin step from x with α = 0 on all of the data: z = x − η∇L(x), so
    ∇f_γ = (η/γ)∇L(x) and its angle with the full gradient is 0 exactly, in eval mode. In train
    mode with dropout, each pass draws its own masks (module docstring): the chain's gradient
    is at x as the SGD gradient is, but under other masks, at an angle."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 2)).double()
    gen = torch.Generator().manual_seed(2)
    data = (torch.randn(16, 3, generator=gen, dtype=torch.float64),
            torch.randint(0, 2, (16,), generator=gen))
    kw = dict(sgd_gradient="full", beta=math.inf, steps=1, inner_lr=0.1, alpha=0.0)
    still = local_entropy_gradient_angle(model.eval(), nn.CrossEntropyLoss(), data, 0.5, **kw)
    # its cosine rounds to 1 + 2⁻⁵² here: clamped to 1, not acos's domain error
    assert still.cosine == 1.0 and still.degrees == 0.0
    assert still.entropy_grad_norm == pytest.approx(0.2 * still.sgd_grad_norm, rel=1e-12)
    masked = local_entropy_gradient_angle(model.train(), nn.CrossEntropyLoss(), data, 0.5, **kw)
    assert masked.degrees > 1.0


def test_a_non_finite_sgd_gradient_is_a_floating_point_error():
    """L(w) = mean (w x_i)², one sample x = 10²⁰⁰: its gradient 2w x² overflows. The SGD
    gradient's mini-batch (the generator's first draw, seed 1) is that sample, the one-step
    chain's batch another: the estimate is finite, the SGD gradient is not, and the angle
    is refused by name rather than returned as NaN."""
    gen = torch.Generator().manual_seed(1)
    assert [int(torch.randperm(3, generator=gen)[0]) for _ in range(2)] == [1, 0]
    model = scalar_linear(0.5)
    data = (torch.tensor([[1.0], [1e200], [2.0]], dtype=torch.float64),
            torch.zeros(3, 1, dtype=torch.float64))
    with pytest.raises(FloatingPointError, match="non-finite SGD gradient"):
        local_entropy_gradient_angle(model, nn.MSELoss(), data, 0.5, batch_size=1,
                                     beta=math.inf, steps=1,
                                     generator=torch.Generator().manual_seed(1))
