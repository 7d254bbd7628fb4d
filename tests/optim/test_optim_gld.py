"""GD + structured noise (sgdlab.optim.gld): the injected noise has the covariance it claims.

References are dense float64: Σ by an explicit sum of outer products of per-sample gradients
from one backward per sample, H by torch.func.hessian (sgdlab.testing)."""
import copy
import io
import math
import re
import warnings

import pytest
import torch

from sgdlab.measure.batch_norm import recompute_bn_statistics
from sgdlab.optim import build_optimizer, build_optimizer_for
from sgdlab.optim.gld import NOISE_KINDS, StructuredNoiseGD
from sgdlab.testing import (
    Quadratic,
    SkipsItsLayer,
    covariance_reference,
    dense_hessian_reference,
    per_sample_gradients_loop,
    tiny_classification,
    tiny_mlp,
)

from test_optim_noise import assert_cov

LOSS = torch.nn.CrossEntropyLoss()
M = 4          # the SGD batch size whose noise is mimicked
K = 3
S = 20000

VARIANTS = {
    "gd": {},
    "gld-const": dict(sigma=0.2),
    "gld-dynamic": dict(noise_batch_size=M),
    "gld-diagonal": dict(noise_batch_size=M),
    "gld-leading": dict(noise_batch_size=M, k=K),
    "gld-hessian": dict(noise_batch_size=M, k=K, hessian_tol=1e-10),   # sigma_h2_rule="top-k"
    "gld-sgd-like": dict(noise_batch_size=M),
    "gd-isotropic": dict(variance_factor=0.5),
}


@pytest.fixture(scope="module")
def problem():
    model = tiny_mlp(3, 4, 2, seed=0)          # d = 26, float64
    data = tiny_classification(n=16, seed=1)
    g = per_sample_gradients_loop(model, LOSS, data)
    sigma = covariance_reference(g)
    hess = dense_hessian_reference(model, LOSS, data)
    return model, data, sigma, hess


def target_covariance(name, sigma, hess):
    d = sigma.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    if name == "gd":
        return torch.zeros(d, d, dtype=torch.float64)
    if name == "gld-const":
        return 0.04 * eye
    if name == "gld-dynamic":
        return float(torch.trace(sigma)) / (M * d) * eye
    if name == "gld-diagonal":
        return torch.diag(torch.diagonal(sigma)) / M
    if name == "gld-leading":
        vals, vecs = torch.linalg.eigh(sigma)
        vals, vecs = vals.flip(0)[:K], vecs.flip(1)[:, :K]
        return (vecs * vals) @ vecs.T / M
    if name == "gld-hessian":     # H₊ over the top-K |λ| (Zhu §4.2 item 6), rule "top-k"
        vals, vecs = _top_abs(hess, K)
        hp = (vecs * vals.abs()) @ vecs.T
        return float(torch.trace(sigma)) / (M * float(vals.abs().sum())) * hp
    if name == "gld-sgd-like":
        return sigma / M
    if name == "gd-isotropic":
        return _isotropic_variance(sigma) * eye
    raise KeyError(name)


def _isotropic_variance(sigma):
    """gd-isotropic's s · max_j Σ_jj with VARIANTS' s = 0.5 (noise_batch_size defaults to 1)."""
    return 0.5 * float(torch.diagonal(sigma).max())


def _top_abs(mat, k):
    vals, vecs = torch.linalg.eigh(mat)
    order = vals.abs().argsort(descending=True)[:k]
    return vals[order], vecs[:, order]


def build(name, model, data, **kw):
    return build_optimizer_for(name, model, loss_fn=LOSS, data=data, lr=0.1,
                               **{**VARIANTS[name], **kw})


@pytest.mark.parametrize("sampling", ["factor", "dense"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_injected_noise_has_claimed_covariance(problem, name, sampling):
    model, data, sigma, hess = problem
    opt = build(name, model, data, sampling=sampling)
    opt.refresh_statistics()
    target = target_covariance(name, sigma, hess)
    # the statistics are exact (deterministic check) ...
    torch.testing.assert_close(opt.covariance(), target, atol=1e-9, rtol=1e-6)
    if name == "gd":
        assert opt.sample_noise() is None
        return
    # ... and the sampler draws from them (statistical check)
    eps = opt.sample_noise((S,))
    assert eps.shape == (S, opt.dim)
    assert_cov(eps, target)


def test_estimation_size_draws_a_fresh_subset_without_replacement_at_each_refresh(problem):
    """estimation_size = 5 of the 16 examples: after each refresh the covariance is Σ/m of
    one subset of 5 distinct examples (Σ by outer products over it, matched against all
    C(16, 5) = 4,368 subsets to 1e-12), and four refreshes at the same parameters do not all
    draw the same subset."""
    import itertools

    model, data, _, _ = problem
    g = per_sample_gradients_loop(model, LOSS, data)
    subsets = torch.tensor(list(itertools.combinations(range(len(g)), 5)))
    c = g[subsets] - g[subsets].mean(1, keepdim=True)                 # (4368, 5, d)
    covs = c.transpose(1, 2) @ c / 5 / M
    opt = build("gld-sgd-like", model, data, estimation_size=5, seed=2)
    drawn = []
    for _ in range(4):
        opt.refresh_statistics()
        err = (covs - opt.covariance()).abs().amax((1, 2))
        assert float(err.min()) < 1e-12, float(err.min())
        drawn.append(int(err.argmin()))
    assert len(set(drawn)) > 1, drawn


def test_dynamic_noise_norm_equals_sgd(problem):
    """E‖ε‖² of GLD dynamic = Tr Σ / m = E‖g_B − ḡ‖² of SGD with batches of m drawn with
    replacement (checked by Monte Carlo over real mini-batches)."""
    model, data, sigma, _ = problem
    opt = build("gld-dynamic", model, data)
    opt.refresh_statistics()
    eps = opt.sample_noise((S,))
    sq = (eps ** 2).sum(-1)
    assert float(sq.mean()) == pytest.approx(float(torch.trace(sigma)) / M,
                                             abs=5 * float(sq.std()) / math.sqrt(S))
    g = per_sample_gradients_loop(model, LOSS, data)
    idx = torch.randint(0, len(g), (S, M), generator=torch.Generator().manual_seed(3))
    sgd = ((g[idx].mean(1) - g.mean(0)) ** 2).sum(-1)
    assert float(sq.mean()) == pytest.approx(float(sgd.mean()),
                                             abs=5 * float(sgd.std()) / math.sqrt(S))


def test_update_rule(problem):
    """θ' = θ − η g₀ + η ε with ε the draw of this step (refresh_every > steps: no refresh)."""
    model0, data, _, _ = problem
    model = copy.deepcopy(model0)
    opt = build("gld-sgd-like", model, data, refresh_every=100)
    checked = 0
    for _ in range(2):
        opt.zero_grad()
        LOSS(model(data[0]), data[1]).backward()
        theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
        g0 = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()
        gen_state = opt.generator.get_state()
        stats_before = opt._stats
        opt.step()
        if stats_before is not None:       # second step: no refresh, one draw
            opt.generator.set_state(gen_state)
            eps = opt.sample_noise()
            new = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            torch.testing.assert_close(new, theta - 0.1 * g0 + 0.1 * eps)
            checked += 1
    assert checked == 1                    # the comparison ran (the second step)


# (momentum, dampening, nesterov, weight_decay): torch.optim.SGD's recursion, each part on
GLD_BY_HAND = [(0.0, 0.0, False, 0.0), (0.0, 0.0, False, 0.05), (0.9, 0.3, False, 0.05),
               (0.8, 0.0, True, 0.02)]


@pytest.mark.parametrize("momentum,dampening,nesterov,weight_decay", GLD_BY_HAND)
def test_gld_const_follows_the_update_written_by_hand(momentum, dampening, nesterov,
                                                      weight_decay):
    """GLD const on L(θ) = ½ θᵀHθ against the update written out in float64 (Zhu et al. §4.2
    item 2, θ' = θ − η g₀ + η ε, ε ~ N(0, σ² I) drawn fresh each step, with torch.optim.SGD's
    documented momentum on g = g₀ + λθ − ε: b₁ = g, b = μ b + (1 − τ) g, step b or, Nesterov,
    g + μ b). The group's lr and weight_decay change after step 2 (a schedule), and the run
    is saved and resumed after step 3 through state_dict."""
    h = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 0.5]], dtype=torch.float64)
    theta0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    data = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    sigma, seed = 0.3, 7
    hyper = dict(momentum=momentum, dampening=dampening, nesterov=nesterov,
                 weight_decay=weight_decay, sigma=sigma, seed=seed)

    def mean_loss(out, y):
        return out.mean()

    def make(model):
        return build_optimizer_for("gld-const", model, loss_fn=mean_loss, data=data, lr=0.1,
                                   **hyper)

    model = Quadratic(h, theta0)
    opt = make(model)
    theta, buf, gen = theta0.clone(), None, torch.Generator().manual_seed(seed)
    lr, wd = 0.1, weight_decay
    for t in range(6):
        if t == 2:                   # read from the group at every step, as torch's SGD
            lr, wd = 0.05, 2 * weight_decay
            opt.param_groups[0].update(lr=lr, weight_decay=wd)
        if t == 3:                   # resume a copy from the saved state
            buf_io = io.BytesIO()
            torch.save(opt.state_dict(), buf_io)
            buf_io.seek(0)
            model = Quadratic(h, model.theta.detach())
            opt = make(model)
            opt.load_state_dict(torch.load(buf_io, weights_only=True))
        opt.zero_grad()
        mean_loss(model(data[0]), data[1]).backward()
        opt.step()
        eps = sigma * torch.randn(3, generator=gen, dtype=torch.float64)
        g = h @ theta + wd * theta - eps
        if momentum:
            buf = g.clone() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        theta = theta - lr * g
        torch.testing.assert_close(model.theta.detach(), theta, rtol=0, atol=1e-13)


def _run(model, opt, data, steps):
    for _ in range(steps):
        opt.zero_grad()
        LOSS(model(data[0]), data[1]).backward()
        opt.step()


@pytest.mark.parametrize("timing", ["refresh", "step"])
def test_sigma_h2_timing_takes_tr_sigma_at_the_refresh_or_at_every_step(problem, timing):
    """§5.1's σ_H² = Tr Σ(θ_t)/(m Tr H(θ_t)) with H refreshed every 10 iterations: by default
    (``"refresh"``) σ_H² is set with H, from Tr Σ at the refresh; with ``"step"`` Tr Σ is
    that of each step's iterate, over the Hessian's top-k |λ| of the last refresh. Checked at
    step 3 of refresh_every = 10 (rule "top-k", Σ and H by explicit float64 references)."""
    model = copy.deepcopy(problem[0])
    data = problem[1]
    opt = build("gld-hessian", model, data, refresh_every=10, sigma_h2_timing=timing)
    vals, vecs = _top_abs(dense_hessian_reference(model, LOSS, data), K)
    hp = (vecs * vals.abs()) @ vecs.T
    traces = []
    for _ in range(4):
        traces.append(float(torch.trace(covariance_reference(
            per_sample_gradients_loop(model, LOSS, data)))))
        _run(model, opt, data, 1)
    assert abs(traces[3] - traces[0]) > 1e-3 * traces[0]     # Σ moved: the readings differ
    tr = traces[0] if timing == "refresh" else traces[3]
    torch.testing.assert_close(opt.covariance(), tr / (M * float(vals.abs().sum())) * hp,
                               atol=1e-9, rtol=1e-6)
    with pytest.raises(ValueError, match="sigma_h2_timing"):
        build("gld-dynamic", model, data, sigma_h2_timing="step")
    with pytest.raises(ValueError, match="sigma_h2_timing"):
        build("gld-hessian", model, data, sigma_h2_timing="always")


def _bn_model_far_from_its_data():
    """A float64 batch-norm model in train mode and 16 examples, its running statistics far
    from the examples' (so a measurement that uses the wrong ones is seen)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                                torch.nn.Tanh(), torch.nn.Linear(4, 2)).double().train()
    data = tiny_classification(n=16)
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)
        model[1].running_var.fill_(0.25)
    return model, data


def test_sigma_h2_timing_step_measures_as_the_refresh_does():
    """The per-step Tr Σ of ``sigma_h2_timing="step"`` is measured as a refresh measures it:
    batch norm in eval mode with the estimation data's statistics (``variance_bn="data"``),
    over the optimizer's parameters alone; the model's buffers and train mode are its own
    again after the step (float64 reference at the step's iterate)."""
    model, (x, y) = _bn_model_far_from_its_data()
    held = [p for n, p in model.named_parameters() if not n.startswith("3.")]
    opt = build_optimizer(
        "gld-hessian", held, model=model, loss_fn=LOSS, data=(x, y), lr=0.5, noise_batch_size=2,
        k=2, refresh_every=10, sigma_h2_timing="step", variance_bn="data", hessian_tol=1e-12)
    _run(model, opt, (x, y), 1)                       # the refresh: H and its traces
    opt.zero_grad()
    LOSS(model(x), y).backward()
    ref = copy.deepcopy(model)
    recompute_bn_statistics(ref, (x, y))
    ref.eval()
    ref[3].requires_grad_(False)
    tr = float(torch.trace(covariance_reference(per_sample_gradients_loop(ref, LOSS, (x, y)))))
    before = {k: b.clone() for k, b in model.named_buffers()}
    opt.step()
    assert opt.settings()["sigma_h2_timing"] == "step"
    assert opt._stats["sigma_h2"] == pytest.approx(tr / (2 * opt._stats["trace_hk"]), rel=1e-9)
    assert model.training
    for k, b in model.named_buffers():
        assert torch.equal(b, before[k]), k


def test_sigma_h2_timing_step_refreshes_a_state_saved_without_the_hessian_traces(problem):
    """A GLD Hessian state saved before the Hessian traces were part of the statistics has
    none for the per-step σ_H²: ``sigma_h2_timing="step"`` refreshes at the next step (H and
    Tr Σ of that iterate) instead of keeping the loaded σ_H² until the next refresh."""
    model = copy.deepcopy(problem[0])
    data = problem[1]
    opt = build("gld-hessian", model, data, refresh_every=10, sigma_h2_timing="step")
    _run(model, opt, data, 1)
    sd = opt.state_dict()
    for key in ("trace_hk", "trace_h"):
        del sd["gld"]["stats"][key]
    resumed = build("gld-hessian", model, data, refresh_every=10, sigma_h2_timing="step")
    resumed.load_state_dict(sd)
    vals, vecs = _top_abs(dense_hessian_reference(model, LOSS, data), K)
    tr = float(torch.trace(covariance_reference(per_sample_gradients_loop(model, LOSS, data))))
    _run(model, resumed, data, 1)
    sigma_h2 = tr / (M * float(vals.abs().sum()))
    assert abs(sigma_h2 - sd["gld"]["stats"]["sigma_h2"]) > 1e-3 * sigma_h2   # not the saved
    assert resumed._stats["sigma_h2"] == pytest.approx(sigma_h2, rel=1e-6)
    assert resumed._stats["trace_hk"] == pytest.approx(float(vals.abs().sum()), rel=1e-6)


def test_statistics_are_refreshed_every_k_steps_from_the_first(problem):
    """refresh_every = 3 over 8 steps: the statistics are measured before steps 0, 3 and 6, at
    the parameters of those steps, and kept in between (checked on gld-dynamic's
    Tr Σ / (m d), Σ by explicit outer products at each step's parameters)."""
    model0, data, _, _ = problem
    model = copy.deepcopy(model0)
    opt = build("gld-dynamic", model, data, refresh_every=3)
    measured = []
    for _ in range(8):
        sigma = covariance_reference(per_sample_gradients_loop(model, LOSS, data))
        measured.append(float(torch.trace(sigma)) / (M * opt.dim))
        _run(model, opt, data, 1)
        used = float(opt.covariance()[0, 0])
        assert used == pytest.approx(measured[3 * ((len(measured) - 1) // 3)], rel=1e-10)
    assert len({round(v, 12) for v in measured}) == 8       # the parameters did move


def test_gd_matches_torch_sgd_with_momentum_nesterov_weight_decay(problem):
    model0, data, _, _ = problem
    hyper = dict(momentum=0.9, nesterov=True, weight_decay=1e-2)
    a, b = copy.deepcopy(model0), copy.deepcopy(model0)
    _run(a, build("gd", a, data, **hyper), data, 4)
    _run(b, torch.optim.SGD(b.parameters(), lr=0.1, **hyper), data, 4)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-14)


def test_noise_passes_through_momentum_like_a_gradient(problem):
    """GLD const + momentum == torch SGD + momentum on the gradient g₀ − ε (same draws)."""
    model0, data, _, _ = problem
    hyper = dict(momentum=0.8, dampening=0.1, weight_decay=1e-3)
    a, b = copy.deepcopy(model0), copy.deepcopy(model0)
    opt_a = build("gld-const", a, data, **hyper, seed=5)
    _run(a, opt_a, data, 3)
    twin = build("gld-const", b, data, seed=5)           # only used to replay the draws
    twin.refresh_statistics()
    sgd = torch.optim.SGD(b.parameters(), lr=0.1, **hyper)
    for _ in range(3):
        sgd.zero_grad()
        LOSS(b(data[0]), data[1]).backward()
        eps = twin.sample_noise()
        i = 0
        for p in b.parameters():
            p.grad -= eps[i:i + p.numel()].view_as(p)
            i += p.numel()
        sgd.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-14)


ROUND_TRIP = [
    ("gd", dict(momentum=0.9)),
    ("gld-const", dict(momentum=0.9, nesterov=True)),
    ("gld-dynamic", dict(refresh_every=3, weight_decay=1e-3)),
    ("gld-diagonal", dict(refresh_every=2, estimation_size=10)),
    ("gld-leading", dict(refresh_every=3, momentum=0.5)),
    ("gld-hessian", dict(refresh_every=3, estimation_size=12)),
    ("gld-sgd-like", dict(refresh_every=3)),
    ("gd-isotropic", dict(momentum=0.9)),
]


@pytest.mark.parametrize("name,kw", ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
def test_state_dict_round_trip_resumes_identical_trajectory(problem, name, kw):
    model0, data, _, _ = problem
    k = 2
    straight = copy.deepcopy(model0)
    _run(straight, build(name, straight, data, **kw), data, 2 * k)

    first = copy.deepcopy(model0)
    opt = build(name, first, data, **kw)
    _run(first, opt, data, k)
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = tiny_mlp(3, 4, 2, seed=123)              # fresh, different weights
    resumed.load_state_dict(saved["model"])
    opt2 = build(name, resumed, data, **kw, seed=999)  # different seed: state must win
    opt2.load_state_dict(saved["opt"])
    _run(resumed, opt2, data, k)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    assert not all(torch.equal(p, q) for p, q in zip(model0.parameters(),
                                                      straight.parameters()))


def test_float32_model_and_dataset_argument():
    from sgdlab.data.base import Dataset

    model = tiny_mlp(3, 4, 2, dtype=torch.float32)
    x, y = tiny_classification(n=16, dtype=torch.float32)
    ds = Dataset(x, y, x, y, {"name": "t", "num_outputs": 2})
    opt = build_optimizer_for("gld-leading", model, loss_fn=LOSS, data=ds, lr=0.1,
                              noise_batch_size=2, k=2)
    _run(model, opt, (x, y), 2)
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("name,kw,match", [
    ("gld-const", dict(sigma=-1.0), "sigma"),
    ("gld-const", dict(), "sigma"),
    ("gld-dynamic", dict(), "noise_batch_size"),
    ("gld-dynamic", dict(noise_batch_size=0), "noise_batch_size"),
    ("gld-leading", dict(noise_batch_size=2, k=0), "k"),
    ("gld-hessian", dict(noise_batch_size=2), "k"),
    ("gld-hessian", dict(k=2, sigma_h2=-1.0), "sigma_h2"),
    ("gld-hessian", dict(k=2, noise_batch_size=2, sigma_h2_rule="full"), "sigma_h2_rule"),
    ("gld-hessian", dict(k=2, noise_batch_size=2, trace_probes=0), "trace_probes"),
    ("gd-isotropic", dict(variance_factor=0.0), "variance_factor"),
    ("gld-sgd-like", dict(noise_batch_size=2, refresh_every=0), "refresh_every"),
    ("gld-sgd-like", dict(noise_batch_size=2, estimation_size=1000), "estimation_size"),
    ("gld-sgd-like", dict(noise_batch_size=2, sampling="cholesky"), "sampling"),
    # Lanczos' tolerances as Lanczos checks them: inf stopped at the first iterate
    ("gld-leading", dict(noise_batch_size=2, k=2, eig_tol=math.inf),
     re.escape("Invalid eig_tol=inf (a finite number >= 0; 0 runs Lanczos' default")),
    ("gld-leading", dict(noise_batch_size=2, k=2, eig_tol=True), "Invalid eig_tol=True"),
    ("gld-hessian", dict(noise_batch_size=2, k=2, hessian_tol=math.inf),
     re.escape("Invalid hessian_tol=inf (a finite number >= 0; 0 runs hessian_iter steps)")),
    ("gld-hessian", dict(noise_batch_size=2, k=2, hessian_tol=math.nan), "Invalid hessian_tol=nan"),
    ("gd", dict(lr=-1.0), "learning rate"),
    ("gd", dict(momentum=-0.5), "momentum"),
    ("gd", dict(nesterov=True), "Nesterov"),
    ("gd", dict(weight_decay=-1.0), "weight_decay"),
    # non-finite: NaN parameters a few steps later otherwise
    ("gd", dict(momentum=math.nan), "momentum"),
    ("gd", dict(momentum=math.inf), "momentum"),
    ("gd", dict(weight_decay=math.nan), "weight_decay"),
    ("gd", dict(momentum=0.9, dampening=math.nan), "dampening"),
    ("gd", dict(momentum=0.9, dampening=-1.0), "dampening"),
])
def test_invalid_hyper_parameters(problem, name, kw, match):
    model, data, _, _ = problem
    with pytest.raises(ValueError, match=match):
        build_optimizer_for(name, model, loss_fn=LOSS, data=data, **{"lr": 0.1, **kw})


def _first_step(name, model, data, **kw):
    """The parameters of a copy of ``model`` after one step of ``build(name, ...)``."""
    m = copy.deepcopy(model)
    _run(m, build(name, m, data, **kw), data, 1)
    return torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.mark.parametrize("name", ["gld-leading", "gld-hessian"])
def test_a_configs_whole_floats_are_the_counts_lanczos_takes(problem, name):
    # k: 2.0 and hessian_iter: 30.0 passed the config and the constructor (whole numbers, as a
    # config may write them), then failed the first refresh in Lanczos, after the run was
    # recorded; they draw what 2 and 30 draw
    model, data, _, _ = problem
    steps = [_first_step(name, model, data, k=k, hessian_iter=it, eig_solver="lanczos", seed=0)
             for k, it in ((2.0, 30.0), (2, 30))]
    torch.testing.assert_close(steps[0], steps[1], rtol=0, atol=0)


def test_a_whole_float_estimation_size_draws_the_subset_an_int_draws(problem):
    # estimation_size: 8.0 passed the constructor, then failed the first refresh's slice
    model, data, _, _ = problem
    steps = [_first_step("gld-sgd-like", model, data, estimation_size=n, seed=0)
             for n in (8.0, 8)]
    torch.testing.assert_close(steps[0], steps[1], rtol=0, atol=0)


@pytest.mark.parametrize("it", [0, 2.5, "30"])
def test_hessian_iter_is_refused_at_construction(problem, it):
    # it reached Lanczos only at the first refresh
    model, data, _, _ = problem
    with pytest.raises(ValueError, match=r"Invalid hessian_iter: .*an int >= 1"):
        build("gld-hessian", model, data, hessian_iter=it)


def test_a_missing_sigma_reads_as_required_not_as_a_bad_value(problem):
    # "Invalid sigma: None (gld-const needs sigma >= 0)" read as if None had been given
    model, data, _, _ = problem
    with pytest.raises(ValueError, match=r"^gld-const requires sigma= \(the noise std"):
        build_optimizer_for("gld-const", model, loss_fn=LOSS, data=data, lr=0.1)


def test_zero_learning_rate_is_accepted_and_moves_nothing(problem):
    model, data, _, _ = problem
    opt = build_optimizer_for("gld-const", model, loss_fn=LOSS, data=data, lr=0.0, sigma=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = data
    LOSS(model(x), y).backward()
    opt.step()
    moved = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    model.zero_grad(set_to_none=True)
    assert not any(moved)


@pytest.mark.parametrize("name", ["gld-dynamic", "gld-diagonal", "gld-leading", "gld-hessian",
                                  "gld-sgd-like", "gd-isotropic"])
def test_missing_model_is_an_error(name):
    with pytest.raises(ValueError, match="model"):
        StructuredNoiseGD([torch.zeros(2, requires_grad=True)], noise="diagonal",
                          noise_batch_size=1)
    # built over bare parameters, its first complaint was a hyper-parameter of the noise
    # (noise_batch_size, variance_factor), not the model that build_optimizer_for passes
    with pytest.raises(ValueError, match=r"needs model=, loss_fn= and data= \(missing: model, "
                                         r"loss_fn, data\): build it with "
                                         r"build_optimizer_for\(name, model"):
        build_optimizer(name, [torch.zeros(2, requires_grad=True)], lr=0.1)
    # build_optimizer_for without the loss and the data was told to use build_optimizer_for
    with pytest.raises(ValueError, match=r"\(missing: loss_fn, data\)"):
        build_optimizer_for(name, torch.nn.Linear(2, 1), lr=0.1)
    assert set(NOISE_KINDS) >= {"none", "const", "dynamic", "diagonal", "leading", "hessian",
                                "sgd-like"}


def test_frozen_parameter_in_the_groups_is_skipped(problem):
    """A requires_grad=False parameter given with the others (as to torch.optim.SGD) has no
    gradient and no noise coordinate: it stays put and the trainable ones move exactly as
    without it."""
    model0, data, _, _ = problem
    runs = []
    for with_frozen in (False, True):
        model = copy.deepcopy(model0)
        model[0].bias.requires_grad_(False)
        params = [p for p in model.parameters() if with_frozen or p.requires_grad]
        opt = StructuredNoiseGD(params, lr=0.1, noise="diagonal", noise_batch_size=M,
                                model=model, loss_fn=LOSS, data=data, momentum=0.5, seed=0)
        _run(model, opt, data, 2)
        runs.append(model)
    assert torch.equal(runs[1][0].bias, model0[0].bias)
    for p, q in zip(runs[0].parameters(), runs[1].parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name,with_model", [("gld-const", False), ("gld-const", True),
                                             ("gld-dynamic", True), ("gd-isotropic", True)])
def test_freezing_and_unfreezing_mid_training_lays_the_noise_out_again(problem, name,
                                                                      with_model):
    """A layer unfrozen after the optimizer was built (progressive unfreezing) gets noise
    coordinates and trains; a bias frozen later, whose .grad a zero_grad(set_to_none=False)
    keeps at zero, takes no noise and, without momentum, stays put (as with torch.optim.SGD).
    gld-dynamic refreshes every 3 steps, gd-isotropic never: the layout follows anyway."""
    model0, data, _, _ = problem
    model = copy.deepcopy(model0)
    model[0].weight.requires_grad_(False)
    kw = dict(VARIANTS[name], **({"refresh_every": 3} if name == "gld-dynamic" else {}))
    if with_model:
        kw = dict(kw, model=model, loss_fn=LOSS, data=data)
    opt = build_optimizer(name, model.parameters(), lr=0.1, seed=0, **kw)
    d = sum(q.numel() for q in model.parameters())
    assert opt.dim == d - model[0].weight.numel()
    model[0].weight.requires_grad_(True)
    before = model[0].weight.detach().clone()
    _run(model, opt, data, 2)
    assert opt.dim == d and opt.sample_noise().shape == (d,)
    assert not torch.equal(model[0].weight, before)
    model[0].bias.requires_grad_(False)
    bias = model[0].bias.detach().clone()
    for _ in range(2):
        opt.zero_grad(set_to_none=False)
        LOSS(model(data[0]), data[1]).backward()
        opt.step()
    assert opt.dim == d - model[0].bias.numel()
    assert torch.equal(model[0].bias, bias)


@pytest.mark.parametrize("name", [n for n in VARIANTS if n not in ("gd", "gld-const")])
def test_an_optimizer_over_part_of_a_model_measures_its_own_parameters(problem, name):
    """Built over the last layer only, the rest of the model still trainable (as a torch
    optimizer is given the parameters it trains): the statistics are those of that layer's
    gradients, as with the rest frozen, and the rest stays trainable."""
    model0, data, sigma, _ = problem
    covs = []
    for freeze in (False, True):
        model = copy.deepcopy(model0)
        body, head = list(model[0].parameters()), list(model[2].parameters())
        for p in body:
            p.requires_grad_(not freeze)
        opt = build_optimizer(name, head, lr=0.1, seed=0, model=model, loss_fn=LOSS, data=data,
                              **VARIANTS[name])
        opt.refresh_statistics()
        assert opt.dim == 10 and opt.sample_noise().shape == (10,)
        assert all(p.requires_grad is not freeze for p in body)
        covs.append(opt.covariance())
    torch.testing.assert_close(covs[0], covs[1], rtol=1e-10, atol=1e-14)
    if name == "gld-dynamic":            # Tr Σ/(m d) of the layer's own coordinates
        head_sigma = sigma[16:, 16:]
        torch.testing.assert_close(covs[0], float(torch.trace(head_sigma)) / (M * 10)
                                   * torch.eye(10, dtype=torch.float64))


@pytest.mark.parametrize("name", ["gld-dynamic", "gld-leading", "gld-sgd-like"])
def test_add_param_group_with_model_between_refreshes(problem, name):
    """The last layer first, the first one added after a step, the next step not a refresh:
    the flat vector grows to the new group (statistics of the old dimension remade) and the
    group trains."""
    model0, data, _, _ = problem
    model = copy.deepcopy(model0)
    opt = build_optimizer(name, list(model[2].parameters()), lr=0.1, seed=0, model=model,
                          loss_fn=LOSS, data=data, refresh_every=3, **VARIANTS[name])
    _run(model, opt, data, 1)
    assert opt.dim == 10
    body = list(model[0].parameters())
    before = [p.detach().clone() for p in body]
    opt.add_param_group({"params": body})
    _run(model, opt, data, 1)
    assert opt.dim == 26 and opt.sample_noise().shape == (26,)
    assert all(not torch.equal(b, p) for b, p in zip(before, body))


@pytest.mark.parametrize("name,kw", [("gd", {}), ("gld-const", dict(sigma=0.2))])
def test_add_param_group_without_model(problem, name, kw):
    """Without a model the flat vector is the groups' parameters: a group added later gets the
    next coordinates, as if it had been given at construction."""
    model0, data, _, _ = problem
    models = [copy.deepcopy(model0), copy.deepcopy(model0)]
    first, second = list(models[1][0].parameters()), list(models[1][2].parameters())
    whole = build_optimizer(name, [{"params": list(models[0][0].parameters())},
                                   {"params": list(models[0][2].parameters()), "lr": 0.05}],
                            lr=0.1, seed=0, **kw)
    grown = build_optimizer(name, first, lr=0.1, seed=0, **kw)
    grown.add_param_group({"params": second, "lr": 0.05})
    _run(models[0], whole, data, 2)
    _run(models[1], grown, data, 2)
    assert grown.dim == whole.dim == sum(p.numel() for p in model0.parameters())
    for p, q in zip(*(m.parameters() for m in models)):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="trainable parameters of model"):
        build(name, models[0], data).add_param_group({"params": [torch.zeros(2,
                                                                      requires_grad=True)]})


def test_leading_through_lanczos_matches_gram_eigh(problem):
    model, data, sigma, hess = problem
    opt = build("gld-leading", model, data, eig_solver="lanczos", eig_tol=1e-12)
    opt.refresh_statistics()
    torch.testing.assert_close(opt.covariance(), target_covariance("gld-leading", sigma, hess),
                               atol=1e-8, rtol=1e-6)


def test_batch_norm_model_refreshes_in_eval_mode_and_restores_train_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                                torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x, y = tiny_classification(n=16)
    opt = build_optimizer_for("gld-diagonal", model, loss_fn=LOSS, data=(x, y), lr=0.1,
                              noise_batch_size=2)
    model.train()
    _run(model, opt, (x, y), 2)
    assert model.training
    model.eval()
    ref = covariance_reference(per_sample_gradients_loop(model, LOSS, (x, y)))
    opt.refresh_statistics()
    torch.testing.assert_close(opt.covariance(), torch.diag(torch.diagonal(ref)) / 2)


@pytest.mark.parametrize("fails", [False, True])
def test_variance_bn_data_leaves_a_train_mode_models_running_statistics_unchanged(fails):
    """``variance_bn="data"`` writes the estimation data's statistics into the batch norm for
    the measurement: the running statistics (and batch counter) are the model's own again
    afterwards, also when the measurement raises, and the model is still in train mode."""
    model, (x, y) = _bn_model_far_from_its_data()
    with torch.no_grad():
        model[1].num_batches_tracked.fill_(7)
    before = {k: b.clone() for k, b in model.named_buffers()}
    opt = build_optimizer_for("gld-diagonal", model, loss_fn=LOSS, data=(x, y), lr=0.1,
                              noise_batch_size=2, variance_bn="data")
    seen = {}

    def refresh_from(*args):
        seen["mean"] = model[1].running_mean.clone()
        raise RuntimeError("measurement failed")

    if fails:
        opt._refresh_from = refresh_from
        with pytest.raises(RuntimeError, match="measurement failed"):
            opt.refresh_statistics()
        # the measurement did see the data's statistics, not the model's
        assert not torch.equal(seen["mean"], before["1.running_mean"])
    else:
        opt.refresh_statistics()
    for k, b in model.named_buffers():
        assert torch.equal(b, before[k]), k
    assert model.training


def test_problem_has_negative_curvature_among_the_top_abs_eigenvalues(problem):
    """The |λ| ranking of GLD Hessian differs from the algebraic one on this problem, so the
    exact-covariance test above checks the |λ| reading."""
    _, _, _, hess = problem
    vals, _ = _top_abs(hess, K)
    assert (vals < 0).any()


def test_an_invalid_hessian_which_names_the_readings_of_hessian_which(problem):
    """The message of the dynamics instrument and the hessian_top measure (HESSIAN_WHICH's
    names), not a wording of its own."""
    model, data, _, _ = problem
    for which in ("top", ["largest"]):
        with pytest.raises(ValueError, match=r"^Invalid hessian_which=.*: expected 'magnitude' "
                                             r"or 'largest' \(Lanczos's which: the Hessian's "
                                             r"eigenvalues ranked by \|λ\| or by value\)$"):
            build("gld-hessian", model, data, hessian_which=which)


def test_hessian_which_largest_takes_the_algebraic_top_k(problem):
    """``hessian_which="largest"``: the top-k eigenpairs by value, not by |λ| (on this problem
    the two differ), carried as H₊ = Σ |λ_i| u_i u_iᵀ with σ_H² = Tr Σ / (m Tr H₊) (rule
    "top-k"): the covariance equals that of the dense Hessian's top-k by value."""
    model, data, sigma, hess = problem
    opt = build("gld-hessian", model, data, hessian_which="largest")
    opt.refresh_statistics()
    vals, vecs = torch.linalg.eigh(hess)
    vals, vecs = vals.flip(0)[:K], vecs.flip(1)[:, :K]
    hp = (vecs * vals.abs()) @ vecs.T
    target = float(torch.trace(sigma)) / (M * float(vals.abs().sum())) * hp
    torch.testing.assert_close(opt.covariance(), target, atol=1e-9, rtol=1e-6)
    assert not torch.allclose(target, target_covariance("gld-hessian", sigma, hess), atol=1e-6)


@pytest.mark.parametrize("rule", ["paper", "appendix"])
def test_sigma_h2_rules_use_the_full_hessian_trace(problem, rule):
    """σ_H² = Tr Σ / (m Tr H) (§5.1, "paper") or Tr H / (m Tr Σ) (Suppl. C, "appendix"), Tr H
    by Hutchinson: within 3 standard errors of the exact ratio at 4,000 probes."""
    model, data, sigma, hess = problem
    opt = build("gld-hessian", model, data, sigma_h2_rule=rule, trace_probes=4000, seed=0)
    s2 = opt.refresh_statistics()["sigma_h2"]
    tr_s, tr_h = float(torch.trace(sigma)), float(torch.trace(hess))
    exact = tr_s / (M * tr_h) if rule == "paper" else tr_h / (M * tr_s)
    # Rademacher Hutchinson variance: 2 Σ_{i≠j} H_ij²
    se = math.sqrt(2 * float((hess ** 2).sum() - (hess.diagonal() ** 2).sum()) / 4000)
    rel = 3 * se / abs(tr_h)
    assert s2 == pytest.approx(exact, rel=rel)


def _top_batch_covariance(model, data, seed: int):
    """Top-K eigenpart of the covariance (population, over batches) of the gradients of the
    batches of M that ``randperm`` with ``seed`` partitions ``data`` into."""
    x, y = data
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    grads = []
    for b in perm.view(-1, M):
        model.zero_grad()
        LOSS(model(x[b]), y[b]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
    vals, vecs = torch.linalg.eigh(torch.cov(torch.stack(grads).T, correction=0))
    return (vecs[:, -K:] * vals[-K:]) @ vecs[:, -K:].T


def test_minibatch_covariance_estimate_is_the_covariance_of_batch_gradients(problem):
    """Suppl. C's GLD leading estimate: a random partition into batches of m, the covariance
    of their gradients (an estimate of Σ/m), top-k eigenpart."""
    model, data, _, _ = problem
    opt = build("gld-leading", model, data, covariance_estimate="minibatches", seed=11)
    opt.refresh_statistics()
    torch.testing.assert_close(opt.covariance(), _top_batch_covariance(model, data, 11),
                               atol=1e-10, rtol=1e-7)
    with pytest.raises(ValueError, match="covariance_estimate"):
        build("gld-leading", model, data, covariance_estimate="other")


def test_minibatch_scale_batch_takes_the_batch_gradients_covariance_as_sigma(problem):
    """Suppl. C's mini-batch estimate read the other way (``minibatch_scale="batch"``):
    Cov(g_B) itself taken as Σ, so GLD leading injects its top-k part divided by m (Σ/m²),
    not Cov(g_B) (≈ Σ/m) as by default; the option needs ``covariance_estimate="minibatches"``."""
    model, data, _, _ = problem
    top = _top_batch_covariance(model, data, 11)
    opt = build("gld-leading", model, data, covariance_estimate="minibatches",
                minibatch_scale="batch", seed=11)
    opt.refresh_statistics()
    torch.testing.assert_close(opt.covariance(), top / M, atol=1e-10, rtol=1e-7)
    assert opt.settings()["minibatch_scale"] == "batch"
    with pytest.raises(ValueError, match="minibatch_scale"):
        build("gld-leading", model, data, minibatch_scale="batch")
    with pytest.raises(ValueError, match="minibatch_scale"):
        build("gld-leading", model, data, covariance_estimate="minibatches",
              minibatch_scale="other")


def test_a_fixed_minibatch_partition_is_drawn_once_and_kept_through_a_resume(problem):
    """Suppl. C's "we first randomly divide the training set into 60 mini batches" read as one
    division (``minibatch_partition="fixed"``): every refresh uses the first partition, which
    ``state_dict`` carries; the default draws a new one each time."""
    model, data, _, _ = problem
    x, y = data

    def target(perm):
        grads = []
        for b in perm.view(-1, M):
            model.zero_grad()
            LOSS(model(x[b]), y[b]).backward()
            grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
        vals, vecs = torch.linalg.eigh(torch.cov(torch.stack(grads).T, correction=0))
        return (vecs[:, -K:] * vals[-K:]) @ vecs[:, -K:].T

    first = target(torch.randperm(len(x), generator=torch.Generator().manual_seed(11)))
    fixed = build("gld-leading", model, data, covariance_estimate="minibatches",
                  minibatch_partition="fixed", seed=11)
    redrawn = build("gld-leading", model, data, covariance_estimate="minibatches", seed=11)
    for opt in (fixed, redrawn):
        opt.refresh_statistics()
        torch.testing.assert_close(opt.covariance(), first, atol=1e-10, rtol=1e-7)
    fixed.refresh_statistics()
    redrawn.refresh_statistics()
    torch.testing.assert_close(fixed.covariance(), first, atol=1e-10, rtol=1e-7)
    assert not torch.allclose(redrawn.covariance(), first)
    resumed = build("gld-leading", model, data, covariance_estimate="minibatches",
                    minibatch_partition="fixed", seed=99)
    resumed.load_state_dict(fixed.state_dict())
    resumed.refresh_statistics()
    torch.testing.assert_close(resumed.covariance(), first, atol=1e-10, rtol=1e-7)
    with pytest.raises(ValueError, match="minibatch_partition"):
        build("gld-leading", model, data, minibatch_partition="once")
    with pytest.raises(ValueError, match="takes no estimation_size"):
        build("gld-leading", model, data, covariance_estimate="minibatches",
              minibatch_partition="fixed", estimation_size=8)


@pytest.mark.parametrize("rule", ["paper", "appendix"])
def test_the_paper_rule_warns_when_a_non_positive_trace_leaves_no_noise(rule):
    """σ_H² = Tr Σ / (m Tr H) (the appendix's Tr H / (m Tr Σ)) is set to 0 where Tr H ≤ 0 (a
    concave loss here, Tr H < 0 exactly): the run is then plain GD although SGD has noise,
    which was not said."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    x = torch.randn(12, 3, dtype=torch.float64)
    data = (x, torch.randn(12, 1, dtype=torch.float64))

    def concave(out, y):
        return -((out - y) ** 2).mean()

    opt = build_optimizer_for("gld-hessian", model, loss_fn=concave, data=data, lr=0.1,
                              noise_batch_size=4, k=2, sigma_h2_rule=rule, trace_probes=8)
    with pytest.warns(RuntimeWarning, match=f"sigma_h2_rule='{rule}' .* Tr H = -.*no noise is "
                                            "injected"):
        stats = opt.refresh_statistics()
    assert stats["sigma_h2"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # said once per optimizer, not every refresh
        opt.refresh_statistics()


def _aligned_top(mat, k, by_abs, like):
    """The top-k eigenpairs of ``mat`` (by |λ| or by λ), each eigenvector's sign set to that
    of the matching column of ``like``: eigenvectors are defined up to sign, a draw is not."""
    vals, vecs = torch.linalg.eigh(mat)
    order = (vals.abs() if by_abs else vals).argsort(descending=True)[:k]
    vals, vecs = vals[order], vecs[:, order]
    torch.testing.assert_close(vecs.T @ like, torch.diag(torch.diagonal(vecs.T @ like)),
                               rtol=0, atol=1e-8)           # the same directions
    return vals, vecs * torch.sign(torch.diagonal(vecs.T @ like))


@pytest.mark.parametrize("name,kw", [
    ("gld-const", dict(sigma=0.2)),
    ("gld-dynamic", dict(noise_batch_size=M)),
    ("gld-diagonal", dict(noise_batch_size=M)),
    ("gld-leading", dict(noise_batch_size=M, k=K)),
    ("gld-hessian", dict(k=K, sigma_h2=1.0, hessian_tol=1e-10)),
])
def test_step_is_zhus_section_4_2_update_by_hand(problem, name, kw):
    """Zhu et al. §4.2 items 2-6 (lines 160-183) written out in the paper's own terms with the
    step's standard-normal draw z, in float64, with Σ of eq. (3) (an explicit sum of outer
    products over the N examples) and H of the mean loss:
    GLD const θ − ηg₀ + ηε, ε = σz; GLD dynamic θ − ηg₀ + (η/√m)ε, ε = (Tr Σ/D)^{1/2} z;
    GLD diagonal θ − ηg₀ + (η/√m)ε, ε_i = Σ_ii^{1/2} z_i; GLD leading θ − ηg₀ + (η/√m)ε,
    ε = V_k Γ_k^{1/2} z (eq. (12); ε = V√Γz as eq. (10)); GLD Hessian θ − ηg₀ + ηε,
    ε ~ N(0, σ_H² H₊) = σ_H U_k |Λ_k|^{1/2} z over the k largest |λ| (Fig. 3's σ_H² = 1)."""
    model0, data, sigma, hess = problem
    model = copy.deepcopy(model0)
    eta, d = 0.1, sigma.shape[0]
    opt = build_optimizer_for(name, model, loss_fn=LOSS, data=data, lr=eta, refresh_every=100,
                              seed=3, **kw)
    opt.refresh_statistics()                    # at θ, the point of the step checked
    opt.zero_grad()
    LOSS(model(data[0]), data[1]).backward()
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
    g0 = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()
    gen = torch.Generator()
    gen.set_state(opt.generator.get_state())
    opt._t = 1                                  # not due: the step draws from these statistics
    opt.step()
    new = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    k = K
    z = torch.randn(k if name in ("gld-leading", "gld-hessian") else d, generator=gen,
                    dtype=torch.float64)
    if name == "gld-const":
        want = theta - eta * g0 + eta * 0.2 * z
    elif name == "gld-dynamic":
        want = theta - eta * g0 + eta / math.sqrt(M) * math.sqrt(float(torch.trace(sigma)) / d) * z
    elif name == "gld-diagonal":
        want = theta - eta * g0 + eta / math.sqrt(M) * torch.diagonal(sigma).sqrt() * z
    elif name == "gld-leading":
        vals, vecs = _aligned_top(sigma, k, False, opt._stats["eigvecs"])
        want = theta - eta * g0 + eta / math.sqrt(M) * vecs @ (vals.sqrt() * z)
    else:
        vals, vecs = _aligned_top(hess, k, True, opt._stats["eigvecs"])
        want = theta - eta * g0 + eta * vecs @ ((1.0 * vals.abs()).sqrt() * z)
    torch.testing.assert_close(new, want, rtol=0, atol=1e-9)
    assert (new - (theta - eta * g0)).abs().max() > 1e-4       # the noise moved θ


def _layer_norm_mlp():
    """A float64 MLP with a LayerNorm: outside the factored engine, so per-sample gradients
    come from torch.func (the route where Σ's factor is the (N, d) matrix)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.LayerNorm(5), torch.nn.Tanh(),
                               torch.nn.Linear(5, 2)).double()


@pytest.mark.parametrize("timing", ["refresh", "step"])
def test_trace_and_diagonal_statistics_without_the_factor_match_dense_float64(timing):
    """GLD dynamic's σ² = Tr Σ/(m d), diagonal's diag Σ/m and Hessian's σ_H² = Tr Σ/(m Tr H₊)
    taken in chunks of 5 of 13 samples (per-sample variances pooled, no (N, d) matrix) equal
    those of the explicit 1/N covariance of a loop of per-sample backward passes, in float64
    (σ_H² at a refresh and at a step between refreshes)."""
    model = _layer_norm_mlp()
    data = tiny_classification(n=13, seed=4)
    sigma = covariance_reference(per_sample_gradients_loop(model, LOSS, data))
    d = sigma.shape[0]
    opt = build("gld-dynamic", model, data, chunk_size=5)
    assert opt.refresh_statistics()["sigma2"] == pytest.approx(
        float(torch.trace(sigma)) / (M * d), rel=1e-12)
    opt = build("gld-diagonal", model, data, chunk_size=5)
    var = opt.refresh_statistics()["var"]
    assert var.dtype == torch.float64
    torch.testing.assert_close(var, torch.diagonal(sigma) / M, rtol=1e-12, atol=1e-15)
    opt = build("gld-hessian", model, data, chunk_size=5, sigma_h2_timing=timing,
                refresh_every=10)
    stats = opt.refresh_statistics()
    if timing == "step":        # Tr Σ taken again at the same θ, between refreshes
        opt._t = 1
        with torch.no_grad():
            opt._refresh_statistics(sigma_h2_only=True)
        stats = opt._stats
    assert stats["sigma_h2"] == pytest.approx(
        float(torch.trace(sigma)) / (M * stats["trace_hk"]), rel=1e-12)


@pytest.mark.parametrize("name", ["gld-dynamic", "gld-diagonal", "gld-hessian"])
def test_trace_and_diagonal_statistics_hold_one_chunk_of_per_sample_gradients(
        name, monkeypatch):
    """Tr Σ and diag Σ never hold the (N, d) matrix of per-sample gradients: every block of
    rows the per-sample-gradient engine returns is at most ``chunk_size`` rows (here 4 of 14
    samples), and Σ's factor is never built; the statistic is that of the whole data."""
    import sgdlab.operators.per_sample as per_sample

    rows = []
    engine = per_sample.checked_per_sample_gradients

    def recording(*args, **kwargs):
        g = engine(*args, **kwargs)
        rows.append(len(g))
        return g

    monkeypatch.setattr(per_sample, "checked_per_sample_gradients", recording)
    model = _layer_norm_mlp()
    data = tiny_classification(n=14, seed=5)
    stats = build(name, model, data, chunk_size=4).refresh_statistics()
    assert rows and max(rows) <= 4 and sum(rows) == 14
    sigma = covariance_reference(per_sample_gradients_loop(model, LOSS, data))
    if name == "gld-diagonal":
        torch.testing.assert_close(stats["var"], torch.diagonal(sigma) / M)
    elif name == "gld-dynamic":
        assert stats["sigma2"] == pytest.approx(float(torch.trace(sigma)) / (M * len(sigma)))


def test_leading_and_dense_sampling_still_take_the_whole_covariance(monkeypatch):
    """GLD leading needs Σ's eigenvectors and ``sampling="dense"`` its d x d matrix: both
    still go through the covariance (and its factor), the variance-only route is not taken."""
    import sgdlab.optim.gld as gld

    def refuse(*args, **kwargs):
        raise AssertionError("the variance-only route")

    monkeypatch.setattr(gld, "gradient_variance", refuse)
    model = _layer_norm_mlp()
    data = tiny_classification(n=8, seed=6)
    build("gld-leading", model, data).refresh_statistics()
    build("gld-dynamic", model, data, sampling="dense").refresh_statistics()


def test_a_minibatch_estimate_needs_two_batches(problem):
    """The covariance of one batch gradient is 0: with 16 examples and m = 9 there is one
    batch of 9, and the estimate is refused rather than injecting no noise without a word."""
    model, data, _, _ = problem
    opt = build("gld-leading", model, data, covariance_estimate="minibatches",
                noise_batch_size=9)
    with pytest.raises(ValueError, match="at least 2 batches of 9"):
        opt.refresh_statistics()


@pytest.mark.parametrize("rule", ["top-k", "paper", "appendix"])
def test_sigma_h2_is_zero_without_a_warning_where_sgd_has_no_noise(rule):
    """N copies of one example: Σ = 0 (eq. 3), so SGD has no noise and σ_H² is 0 under every
    rule (the appendix's Tr H / (m Tr Σ) included, which divides by Tr Σ) — there is nothing
    to warn about: GLD Hessian is then plain GD, as SGD is."""
    model = torch.nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.2, -0.4, 1.0]], dtype=torch.float64))
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64).repeat(8, 1)
    data = (x, torch.full((8, 1), 0.3, dtype=torch.float64))
    opt = build_optimizer_for("gld-hessian", model, loss_fn=torch.nn.MSELoss(), data=data,
                              lr=0.1, noise_batch_size=4, k=1, sigma_h2_rule=rule,
                              trace_probes=4, hessian_tol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = opt.refresh_statistics()
    assert stats["sigma_h2"] == 0.0
    assert stats["trace_hk"] == pytest.approx(2 * float((x[0] ** 2).sum()), rel=1e-9)   # H > 0


def test_the_top_k_rule_warns_where_the_hessian_vanishes():
    """ℓ_i = u_i + u_i³ − y_i with u_i = x_iᵀθ, at θ = 0: H = mean 6 u_i x_i x_iᵀ = 0 but the
    per-sample gradients x_i differ (Σ ≠ 0): Tr H₊ = 0, so σ_H² = 0 with the warning that
    SGD's noise is not matched, not a division by zero."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, bias=False).double()
    torch.nn.init.zeros_(model.weight)
    x = torch.randn(8, 3, dtype=torch.float64)
    data = (x, torch.zeros(8, 1, dtype=torch.float64))
    opt = build_optimizer_for("gld-hessian", model,
                              loss_fn=lambda out, y: (out + out ** 3 - y).mean(),
                              data=data, lr=0.1, noise_batch_size=4, k=1)
    with pytest.warns(RuntimeWarning, match="sigma_h2_rule='top-k' divides by Tr H₊ = 0"):
        stats = opt.refresh_statistics()
    assert stats["sigma_h2"] == 0.0


def test_gd_isotropic_keeps_the_variance_of_the_first_step(problem):
    """Xing et al. §4: the isotropic variance is s · max_j Σ_jj at initialisation and then
    fixed; after three steps that moved θ it is still that of θ₀ (dense float64 Σ by outer
    products), not that of the current iterate."""
    model0, data, sigma0, _ = problem
    model = copy.deepcopy(model0)
    opt = build("gd-isotropic", model, data, seed=0)
    _run(model, opt, data, 3)
    sigma3 = covariance_reference(per_sample_gradients_loop(model, LOSS, data))
    first, now = _isotropic_variance(sigma0), _isotropic_variance(sigma3)
    assert now != pytest.approx(first, rel=1e-3)                  # θ moved enough to tell
    eye = torch.eye(opt.dim, dtype=torch.float64)
    torch.testing.assert_close(opt.covariance(), first * eye, atol=1e-12, rtol=1e-9)


def test_gd_isotropic_keeps_its_first_variance_when_a_layer_is_frozen(problem):
    """Freezing a bias after three steps lays the noise out again over d − 4 coordinates; the
    isotropic variance stays the one fixed at the first step (a scalar, valid in any layout),
    not one measured again at the current iterate."""
    model0, data, sigma0, _ = problem
    model = copy.deepcopy(model0)
    opt = build("gd-isotropic", model, data, seed=0)
    _run(model, opt, data, 3)
    model[0].bias.requires_grad_(False)
    opt.zero_grad()
    LOSS(model(data[0]), data[1]).backward()
    opt.step()
    assert opt.dim == sigma0.shape[0] - 4
    eye = torch.eye(opt.dim, dtype=torch.float64)
    torch.testing.assert_close(opt.covariance(), _isotropic_variance(sigma0) * eye,
                               atol=1e-12, rtol=1e-9)


def test_minibatch_gradients_that_do_not_reach_the_parameters_are_named():
    """Σ from mini-batch gradients of a forward pass that never calls its layer: autograd's
    "element 0 of tensors does not require grad" before, naming neither loss nor model."""
    from sgdlab.errors import UserError

    model, data = SkipsItsLayer(), (torch.randn(8, 3), torch.tensor([0, 1] * 4))
    opt = StructuredNoiseGD(model.parameters(), lr=0.1, noise="diagonal", noise_batch_size=2,
                            covariance_estimate="minibatches", model=model, loss_fn=LOSS,
                            data=data, seed=0)
    with pytest.raises(UserError, match=r"the loss does not depend on the model's trainable"):
        opt.step()
