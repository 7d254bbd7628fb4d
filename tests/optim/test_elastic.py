"""Elastic-SGD / Parle update rules (thesis eqs. 5.4, 5.8), the §5.3.2 normalisation and its
named alternatives, checked step by step against the equations written out by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sgdlab.data.base import Dataset
from sgdlab.optim import OPTIMIZERS, build_optimizer
from sgdlab.optim.elastic import Parle, elastic_sgd_update, master_average, parle_coefficients
from sgdlab.optim.entropy_sgd import EntropySGD
from sgdlab.testing import run_threads

torch.set_num_threads(1)
F64 = torch.float64


def test_elastic_sgd_update_formula():
    x, g, m = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0]), torch.tensor([0.0, 4.0])
    out = elastic_sgd_update(x, g, m, lr=0.1, rho=0.5)
    assert torch.allclose(out, x - 0.1 * (g + 2.0 * (x - m)))
    assert torch.equal(elastic_sgd_update(x, g, m, lr=0.1, rho=math.inf), x - 0.1 * g)


def test_parle_coefficients():
    # §5.3.2: η⁽¹⁾ = ηγ_k, η⁽²⁾ = η → G = (x − z) + ρ⁻¹(x − x̄)
    assert parle_coefficients(gamma=0.2, rho=2.0) == (1.0, 0.5)
    assert parle_coefficients(gamma=0.2, rho=2.0, normalization="raw") == (5.0, 0.5)
    assert parle_coefficients(gamma=0.2, rho=2.0, normalization="authors-code", L=4,
                              replicas=3) == (1.0, 6.0)
    assert parle_coefficients(gamma=math.inf, rho=math.inf, normalization="raw") == (0.0, 0.0)
    with pytest.raises(ValueError, match="normalization"):
        parle_coefficients(gamma=1.0, rho=1.0, normalization="x")


def test_master_average_sums_in_order():
    a = [torch.tensor([1.0, 2.0]), torch.tensor([3.0])]
    b = [torch.tensor([3.0, 0.0]), torch.tensor([5.0])]
    m = master_average([a, b])
    assert torch.equal(m[0], torch.tensor([2.0, 1.0])) and torch.equal(m[1], torch.tensor([4.0]))
    assert a[0][0] == 1.0  # inputs untouched
    with pytest.raises(ValueError):
        master_average([])


# --- eq. (5.8) by hand ---------------------------------------------------------------------
def _problem(n=2, d=3):
    """Replica a minimises f_a(y) = ½(y − m_a)ᵀQ_a(y − m_a) (its own data Ξ^a)."""
    g = torch.Generator().manual_seed(11)
    Qs, ms = [], []
    for _ in range(n):
        A = torch.randn(d, d, generator=g, dtype=F64)
        Qs.append(A @ A.T / d + 0.5 * torch.eye(d, dtype=F64))
        ms.append(torch.randn(d, generator=g, dtype=F64))
    x0 = torch.randn(d, generator=g, dtype=F64)
    return Qs, ms, x0


def _by_hand(Qs, ms, x0, *, rounds, L, eta, eta0, gamma0, rho0, B, gmin, rmin, alpha, mu,
             normalization="paper", master="current", inner_on="gradient", wd=0.0,
             wd_on="inner", inner_buffer="reset"):
    """Eq. (5.8a-d) with the §5.3.2 normalisation, Nesterov momentum μ on y (reset every
    round, as the authors' Entropy-SGD code, or with ``inner_buffer="kept"`` carried across
    rounds, as their Parle code) and on x^a (persistent), written out in plain tensors; ℓ2
    λ = ``wd`` on ∇f_B(y), and with ``wd_on="both"`` λx^a on the outer gradient too."""
    n = len(Qs)
    xs = [x0.clone() for _ in range(n)]
    obuf = [None] * n
    ibuf = [None] * n
    prev = None
    for j in range(rounds):
        gamma = max(gamma0 * (1 - 1 / (2 * B)) ** j, gmin)      # (5.10), clipped
        rho = max(rho0 * (1 - 1 / (2 * B)) ** j, rmin)
        zs, ys = [], []
        for a in range(n):
            y, z = xs[a].clone(), xs[a].clone()
            ib = ibuf[a] if inner_buffer == "kept" else None
            for _ in range(L):
                g = Qs[a] @ (y - ms[a]) + wd * y
                if inner_on == "step":      # Remark 5.3 literally: momentum on all of (5.8a)
                    g = g + (y - xs[a]) / gamma
                    ib = g.clone() if ib is None else mu * ib + g
                    y = y - eta0 * (g + mu * ib)                         # (5.8a)
                else:
                    ib = g.clone() if ib is None else mu * ib + g
                    y = y - eta0 * ((g + mu * ib) + (y - xs[a]) / gamma)     # (5.8a)
                z = alpha * z + (1 - alpha) * y                          # (5.8b)
            ibuf[a] = ib
            zs.append(z)
            ys.append(y)
        fresh = sum(xs) / n                                              # (5.8d), η⁽³⁾ = ρ/n
        xbar = fresh if master == "current" or prev is None else prev
        prev = fresh
        for a in range(n):
            c_g = 1 / gamma if normalization == "raw" else 1.0
            c_r = (L * n if normalization == "authors-code" else 1) / rho
            G = c_g * (xs[a] - zs[a]) + c_r * (xs[a] - xbar)            # (5.8c)
            if wd_on == "both":
                G = G + wd * xs[a]
            obuf[a] = G.clone() if obuf[a] is None else mu * obuf[a] + G
            base = ys[a] if normalization == "authors-code" else xs[a]
            xs[a] = base - eta * (G + mu * obuf[a])
    return xs


def _closure(p, loss_of, a):
    """Replica a's closure: the gradient of loss_of(p, a) in p.grad, and that loss."""
    def cl():
        p.grad = None
        loss = loss_of(p, a)
        loss.backward()
        return loss
    return cl


def _parle_rounds(ps, opts, loss_of, rounds: int) -> list[float]:
    """Run `rounds` Parle rounds over the replicas (inner loop on loss_of(p, a), then the
    elastic pull to the master average); returns ρ as each round's outer step saw it."""
    rhos = []
    for _ in range(rounds):
        for a, (p, o) in enumerate(zip(ps, opts)):
            o.inner_loop(_closure(p, loss_of, a))
        rhos.append(opts[0].current_rho())
        xbar = master_average([o.anchors() for o in opts])
        for o in opts:
            o.outer_step(xbar)
    return rhos


def _with_parle(Qs, ms, x0, *, rounds, L, eta, eta0, gamma0, rho0, B, gmin, rmin, alpha, mu,
                normalization="paper", master="current", inner_on="gradient", wd=0.0,
                wd_on="inner", inner_buffer="reset"):
    n = len(Qs)
    ps = [nn.Parameter(x0.clone()) for _ in range(n)]
    opts = [Parle([p], lr=eta, inner_lr=eta0, L=L, gamma=gamma0, gamma_decay=1 / (2 * B),
                  gamma_min=gmin, rho=rho0, rho_decay=1 / (2 * B), rho_min=rmin, alpha=alpha,
                  momentum=mu, nesterov=True, inner_momentum=mu, inner_nesterov=True,
                  normalization=normalization, master=master, replicas=n,
                  inner_momentum_on=inner_on, inner_momentum_buffer=inner_buffer,
                  weight_decay=wd, weight_decay_on=wd_on)
            for p in ps]
    _parle_rounds(ps, opts, lambda p, a: 0.5 * (p - ms[a]) @ Qs[a] @ (p - ms[a]), rounds)
    return [p.detach().clone() for p in ps]


def _parle_is_by_hand_and_tells_the_reading(hyper: dict, key: str, other) -> None:
    """Parle's rounds under ``hyper`` equal (5.8) by hand to a few ulps (the authors-code
    coupling L·n/ρ drives the values to ~340), and (5.8) by hand with ``key`` set to the
    ``other`` reading differs: the test can tell the readings apart."""
    Qs, ms, x0 = _problem()
    want = _by_hand(Qs, ms, x0, **hyper)
    for a, b in zip(_with_parle(Qs, ms, x0, **hyper), want):
        assert torch.allclose(a, b, atol=1e-13, rtol=1e-14)
    alternative = _by_hand(Qs, ms, x0, **{**hyper, key: other})
    assert max((a - b).abs().max() for a, b in zip(want, alternative)) > 1e-3


@pytest.mark.parametrize("normalization,master", [("paper", "current"), ("paper", "lagged"),
                                                  ("raw", "current"),
                                                  ("authors-code", "current")])
def test_parle_rounds_equal_eq_5_8_by_hand(normalization, master):
    """Four rounds of two replicas: scoping (5.10) with clipping reached, Nesterov momentum on
    both loops, each normalisation and master reading, against the equations by hand."""
    hyper = dict(rounds=4, L=3, eta=0.3, eta0=0.1, gamma0=2.0, rho0=0.8, B=2, gmin=1.0,
                 rmin=0.5, alpha=0.25, mu=0.9, normalization=normalization, master=master)
    _parle_is_by_hand_and_tells_the_reading(
        hyper, "master", "lagged" if master == "current" else "current")


@pytest.mark.parametrize("inner_on", ["gradient", "step"])
def test_parle_inner_momentum_carries_the_gradient_or_the_whole_step_as_by_hand(inner_on):
    """Remark 5.3's Nesterov momentum "for updating the variables y_k^a in Equation (5.8a)":
    on ∇f_B alone, the coupling pull added unaccelerated (default, the authors' Entropy-SGD
    code), or on the whole drift ∇f_B + γ_k⁻¹(y − x^a) (``inner_momentum_on="step"``, the
    authors' Parle code), against (5.8) by hand; the two readings take different steps."""
    hyper = dict(rounds=3, L=4, eta=0.3, eta0=0.1, gamma0=1.5, rho0=0.8, B=2, gmin=1.0,
                 rmin=0.5, alpha=0.25, mu=0.9, inner_on=inner_on)
    _parle_is_by_hand_and_tells_the_reading(
        hyper, "inner_on", "step" if inner_on == "gradient" else "gradient")


@pytest.mark.parametrize("normalization", ["paper", "authors-code"])
@pytest.mark.parametrize("wd_on", ["inner", "both"])
def test_parle_weight_decay_on_the_inner_loop_or_both_as_by_hand(wd_on, normalization):
    """ℓ2 λ on ∇f_B(y) in (5.8a) only (default; the authors' parle_mpi.py adds its ℓ2 to the
    inner gradients), or also λx^a on the replica's outer gradient of (5.8c)
    (``weight_decay_on="both"``, Entropy-SGD's authors' reading), against (5.8) by hand."""
    hyper = dict(rounds=3, L=3, eta=0.3, eta0=0.1, gamma0=1.5, rho0=0.8, B=2, gmin=1.0,
                 rmin=0.5, alpha=0.25, mu=0.9, normalization=normalization, wd=0.2,
                 wd_on=wd_on)
    _parle_is_by_hand_and_tells_the_reading(
        hyper, "wd_on", "both" if wd_on == "inner" else "inner")


@pytest.mark.parametrize("inner_on", ["gradient", "step"])
@pytest.mark.parametrize("inner_buffer", ["reset", "kept"])
def test_parle_inner_momentum_buffer_reset_or_kept_across_rounds_as_by_hand(inner_buffer,
                                                                             inner_on):
    """The inner momentum zeroed at every round (default, the authors' Entropy-SGD code) or
    carried across rounds (``inner_momentum_buffer="kept"``, the authors' Parle code), with
    either content, against (5.8) by hand; the two take different steps."""
    hyper = dict(rounds=3, L=3, eta=0.3, eta0=0.1, gamma0=1.5, rho0=0.8, B=2, gmin=1.0,
                 rmin=0.5, alpha=0.25, mu=0.9, inner_on=inner_on, inner_buffer=inner_buffer)
    _parle_is_by_hand_and_tells_the_reading(
        hyper, "inner_buffer", "kept" if inner_buffer == "reset" else "reset")


def _parle_mpi_rounds(Q, m, x0, *, rounds, L, lr, lr0, gamma, alpha, mu, keep=True):
    """parle_mpi.py's ``parle_step`` for one replica without the elastic pull, transcribed
    in plain float64 tensors. Inner: ``p.grad.data.add_(gamma, p.data - xa[p])`` (the code's
    coupling γ_code = 1/γ), ``muy[p].mul_(mom).add_(p.grad.data)``, the step along the
    gradient and ``muy``, ``za[p].mul_(alpha).add_(1-alpha, p.data)`` (its alpha weighs the
    old average, as ours); ``muy`` is made once and never zeroed (``keep=False`` zeroes it
    every round). Outer: ``(xa − za)`` through ``mux``, stepped from the last iterate y_L.
    Two differences the code has and sgdlab does not reproduce (docs/FIDELITY.md) follow
    sgdlab here: a step adds μ·buffer (torch's Nesterov) where the code adds the raw buffer,
    and z restarts at x^a every round."""
    x, muy, mux = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    for _ in range(rounds):
        y, z = x.clone(), x.clone()
        if not keep:
            muy = torch.zeros_like(x0)
        for _ in range(L):
            g = Q @ (y - m) + (y - x) / gamma           # the pull joins the gradient first
            muy = mu * muy + g
            y = y - lr0 * (g + mu * muy)
            z = alpha * z + (1 - alpha) * y
        G = x - z
        mux = mu * mux + G
        x = y - lr * (G + mu * mux)
    return x


def test_kept_inner_momentum_with_the_pull_inside_is_the_authors_parle_update():
    """``inner_momentum_on="step"`` with ``inner_momentum_buffer="kept"`` and the
    ``"authors-code"`` normalisation take the steps of parle_mpi.py's update loop; with the
    buffer reset every round (the default) they do not."""
    Qs, ms, x0 = _problem(n=1)
    Q, m = Qs[0], ms[0]
    hyper = dict(rounds=5, L=4, lr=0.3, lr0=0.1, gamma=1.5, alpha=0.75, mu=0.9)
    want = _parle_mpi_rounds(Q, m, x0, **hyper)

    def parle(buffer):
        p = nn.Parameter(x0.clone())
        opt = Parle([p], lr=0.3, inner_lr=0.1, L=4, gamma=1.5, rho=math.inf, alpha=0.75,
                    momentum=0.9, nesterov=True, inner_momentum=0.9, inner_nesterov=True,
                    inner_momentum_on="step", inner_momentum_buffer=buffer,
                    normalization="authors-code")

        def closure():
            p.grad = None
            loss = 0.5 * (p - m) @ Q @ (p - m)
            loss.backward()
            return loss
        for _ in range(hyper["rounds"]):
            opt.step(closure)
        return p.detach()

    assert torch.allclose(parle("kept"), want, atol=1e-13, rtol=1e-14)
    assert (parle("reset") - want).abs().max() > 1e-3
    reset = _parle_mpi_rounds(Q, m, x0, keep=False, **hyper)
    assert torch.allclose(parle("reset"), reset, atol=1e-13, rtol=1e-14)


def test_inner_momentum_on_is_checked():
    with pytest.raises(ValueError, match="inner_momentum_on"):
        Parle([nn.Parameter(torch.zeros(1))], inner_momentum_on="coupling")
    with pytest.raises(ValueError, match="inner_momentum_buffer"):
        Parle([nn.Parameter(torch.zeros(1))], inner_momentum_buffer="persistent")


def test_one_paper_step_in_numbers():
    """One round with L = 1, no momentum, α = 0 in one dimension, by arithmetic:
    f_1 = y²/2, f_2 = (y − 2)²/2, x^a = 1, η₀ = 0.5, γ = 1, ρ = 0.5, η = 0.1.
    y^1 = 1 − 0.5·(1 + 0) = 0.5 = z^1; y^2 = 1 − 0.5·(−1) = 1.5 = z^2; x̄ = 1;
    x^1 = 1 − 0.1·[(1 − 0.5) + 2·0] = 0.95, x^2 = 1 − 0.1·(−0.5) = 1.05."""
    ps = [nn.Parameter(torch.ones(1, dtype=F64)) for _ in range(2)]
    opts = [Parle([p], lr=0.1, inner_lr=0.5, L=1, gamma=1.0, rho=0.5, alpha=0.0) for p in ps]
    _parle_rounds(ps, opts, lambda p, a: 0.5 * (p - 2.0 * a).pow(2).sum(), 1)
    assert ps[0].item() == pytest.approx(0.95, abs=1e-15)
    assert ps[1].item() == pytest.approx(1.05, abs=1e-15)


def test_rho_max_clips_a_growing_rho_in_the_steps():
    """With zero loss the inner loop stays at x (z = x) and only the elastic pull acts:
    x^a − x̄ shrinks by (1 − η/ρ_k) per round, x̄ = 1 fixed by symmetry. ρ_k = 0.25·2^k
    (rho_decay = −1) clipped at rho_max = 0.5 is 0.25, 0.5, 0.5: the factor after three
    rounds is 0.6·0.8·0.8 = 0.384 (unclipped, ρ₂ = 1: 0.432)."""
    ps = [nn.Parameter(torch.tensor([x], dtype=F64)) for x in (0.0, 2.0)]
    opts = [Parle([p], lr=0.1, inner_lr=0.5, L=1, gamma=1.0, rho=0.25, rho_decay=-1.0,
                  rho_max=0.5, alpha=0.0, momentum=0.0) for p in ps]
    rhos = _parle_rounds(ps, opts, lambda p, a: (0.0 * p).sum(), 3)
    assert rhos == [0.25, 0.5, 0.5]
    assert ps[0].item() == pytest.approx(1 - 0.384, abs=1e-15)
    assert ps[1].item() == pytest.approx(1 + 0.384, abs=1e-15)


def test_parle_without_communicator_is_entropy_sgd():
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(30, 3, generator=g), torch.randint(0, 2, (30,), generator=g)
    res = []
    for cls in (Parle, EntropySGD):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        opt = cls(model.parameters(), lr=0.8, inner_lr=0.05, L=3, gamma=0.1, noise=1e-4, seed=7)
        gen = torch.Generator().manual_seed(3)

        def closure():
            idx = torch.randint(0, 30, (8,), generator=gen)
            model.zero_grad()
            loss = nn.functional.cross_entropy(model(X[idx]), Y[idx])
            loss.backward()
            return loss
        for _ in range(4):
            opt.step(closure)
        res.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*res):
        assert torch.equal(a, b)


def test_a_replica_s_non_finite_loss_skips_every_replica_s_step_in_the_average():
    """Parle.step with a communicator, two replicas as threads: replica 1 meets a NaN at its
    second closure call. Both meet in the average (replica 1 left it out, and replica 0
    waited in it for ever), both put x back and skip the outer step; replica 0, whose losses
    were finite, returns NaN; the next step, all finite, is taken by both."""
    def replica(rank, comm):
        model, x0, opt, X, calls = _replica_of(comm, rank)

        def closure(bad=rank == 1):
            model.zero_grad()
            loss = model(X).square().mean()
            loss.backward()
            calls.append(1)
            return loss * math.nan if bad and len(calls) == 2 else loss
        first = opt.step(closure)
        kept = all(torch.equal(a, p) for a, p in zip(x0, model.parameters()))
        second = opt.step(lambda: closure(bad=False))
        moved = not any(torch.equal(a, p) for a, p in zip(x0, model.parameters()))
        return (math.isnan(float(first.detach())), kept, len(calls),
                math.isfinite(float(second.detach())), moved)
    assert run_threads(replica, 2) == [(True, True, 6, True, True), (True, True, 5, True, True)]


def _replica_of(comm, rank):
    """Replica ``rank`` of a two-thread Parle: a float64 linear model, its starting weights,
    its optimizer over communicator ``comm``, the data and a list counting closure calls."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    x0 = [p.detach().clone() for p in model.parameters()]
    opt = Parle(model.parameters(), lr=0.5, L=3, communicator=comm, seed=rank)
    return model, x0, opt, torch.randn(8, 3, dtype=F64,
                                       generator=torch.Generator().manual_seed(1)), []


@pytest.mark.parametrize("n", [2, 3])
def test_parle_step_with_a_communicator_is_the_trainer_s_round_bit_for_bit(n):
    """Finite losses: Parle.step over replicas as threads (the flag of a non-finite loss
    averaged with the anchors) equals inner_loop, master_average and outer_step, exactly."""
    Qs, ms, x0 = _problem(n)
    hyper = dict(lr=0.3, inner_lr=0.1, L=3, gamma=2.0, rho=0.8, alpha=0.25, momentum=0.9,
                 nesterov=True, replicas=n, noise=1e-3)

    def loss_of(p, a):
        return 0.5 * (p - ms[a]) @ Qs[a] @ (p - ms[a])

    ps = [nn.Parameter(x0.clone()) for _ in range(n)]
    opts = [Parle([p], seed=a, **hyper) for a, p in enumerate(ps)]
    _parle_rounds(ps, opts, loss_of, 4)
    def replica(a, comm):
        p = nn.Parameter(x0.clone())
        opt = Parle([p], seed=a, communicator=comm, **hyper)
        for _ in range(4):
            opt.step(_closure(p, loss_of, a))
        return p.detach().clone()
    got = run_threads(replica, n)
    assert all(torch.equal(g, p.detach()) for g, p in zip(got, ps))


def test_a_closure_that_raises_itself_meets_the_others_in_the_average():
    """A closure that checks its loss itself (checks_finite_loss, as sgdlab's loop's) raises
    at replica 1's non-finite loss: replica 1 still meets replica 0 in the average, then
    raises; both skip the step (at x), replica 0 returns NaN instead of waiting for ever."""
    class Stop(Exception):
        pass

    def replica(rank, comm):
        model, x0, opt, X, calls = _replica_of(comm, rank)

        def closure():
            model.zero_grad()
            loss = model(X).square().mean() * (math.nan if rank == 1 and calls else 1)
            calls.append(1)
            if not math.isfinite(float(loss.detach())):
                raise Stop(rank)
            loss.backward()
            return loss
        closure.checks_finite_loss = True
        try:
            got = math.isnan(float(opt.step(closure).detach()))
        except Stop:
            got = "stopped"
        return got, all(torch.equal(a, p) for a, p in zip(x0, model.parameters()))
    assert run_threads(replica, 2) == [(True, True), ("stopped", True)]


def test_a_lagged_master_is_the_previous_average_on_every_replica_whatever_it_stepped():
    """master="lagged": x_k of (5.8c) is the average of the previous communication on every
    replica. Replica 1's first loss leaves v out (no gradient): it kept no previous average
    for v and pulled v towards the fresh one at the second round, replica 0 towards the old.
    By hand with L = 1, α = 0, γ = ∞, η⁽⁰⁾ = 1, no momentum: z = x − ∇f, so (5.8c) with the
    "paper" normalisation is x − η(∇f + ρ⁻¹(x − x_k)); round 1's average of v is v₀."""
    eta, rho = 0.5, 0.8
    v0 = torch.tensor([0.3], dtype=F64)

    def replica(rank, comm):
        u = nn.Parameter(torch.tensor([1.0, -1.0], dtype=F64))
        v = nn.Parameter(v0.clone())
        opt = Parle([u, v], lr=eta, inner_lr=1.0, L=1, gamma=math.inf, alpha=0.0, rho=rho,
                    master="lagged", replicas=2, communicator=comm)
        grads = []

        def closure():
            u.grad = v.grad = None
            loss = (u - rank).square().sum()
            if not (rank == 1 and not grads):      # replica 1's first round: no v
                loss = loss + (rank + 2) * v.square().sum()
            loss.backward()
            grads.append(None if v.grad is None else v.grad.clone())
            return loss
        opt.step(closure)
        v1 = v.detach().clone()
        opt.step(closure)
        return v1, grads[-1], v.detach().clone()

    for rank, got in enumerate(run_threads(replica, 2)):
        assert not isinstance(got, Exception), got
        v1, g2, v2 = got
        want = v1 - eta * (g2 + (v1 - v0) / rho)
        torch.testing.assert_close(v2, want, rtol=0, atol=1e-15, msg=f"replica {rank}")


def test_parle_defaults_are_section_5_3_2():
    g = Parle([nn.Parameter(torch.zeros(1))]).param_groups[0]
    assert (g["L"], g["alpha"], g["gamma"], g["rho"], g["normalization"]) == (25, 0.25, 100.0,
                                                                              1.0, "paper")
    assert g["inner_lr"] == g["lr"] == 0.1          # η⁽⁰⁾ = η₀
    with pytest.raises(ValueError, match="normalization"):
        Parle([nn.Parameter(torch.zeros(1))], normalize=True)
    with pytest.raises(ValueError, match="master"):
        Parle([nn.Parameter(torch.zeros(1))], master="stale")


def test_registered_names_and_training_loop_integration():
    for name in ("entropy_sgd", "entropy_adam", "hj", "heat", "parle"):
        assert name in OPTIMIZERS and OPTIMIZERS[name].needs_closure
    from sgdlab.train.loop import train
    g = torch.Generator().manual_seed(0)
    X = torch.randn(32, 3, generator=g)
    y = (X[:, 0] > 0).long()
    data = Dataset(X, y, X[:8], y[:8], {"name": "t", "task": "classification",
                                         "input_shape": (3,), "num_outputs": 2})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    opt = build_optimizer("entropy_sgd", model.parameters(), inner_lr=0.1, L=5, gamma=1.0)
    res = train(model, nn.CrossEntropyLoss(), data, opt, epochs=2, batch_size=8,
                progress=False)
    # one outer step = L = 5 gradient evaluations: the loop's ×L accounting
    assert res.grad_evals == 5 * res.steps
    assert res.last("effective_epochs") == pytest.approx(res.grad_evals * 8 / 32)


# --- the documented Elastic-SGD recipe ---------------------------------------------------
def _documented_recipes() -> dict[str, dict[str, int | float]]:
    """The ParleConfig settings README, docs/GUIDE.md and the docstrings of
    sgdlab.optim.elastic and sgdlab.train.replicas give for Elastic-SGD (5.4)."""
    import re
    from pathlib import Path

    import sgdlab.train.replicas as replicas
    from sgdlab.optim import elastic

    root = Path(__file__).resolve().parents[2]
    texts = {"README.md": (root / "README.md").read_text(),
             "docs/GUIDE.md": (root / "docs" / "GUIDE.md").read_text(),
             "elastic": elastic.__doc__, "replicas": replicas.__doc__}
    pair = r"\w+=[\w.]+"
    recipes = {}
    for where, text in texts.items():
        flat = " ".join(text.replace("`", "").split())
        m = re.search(rf"({pair}(?:, {pair})*) (?:gives|is) Elastic-SGD", flat)
        assert m, f"{where} states no Elastic-SGD recipe"
        recipes[where] = {k: int(v) if v.isdigit() else float(v)
                          for k, v in (kv.split("=") for kv in m[1].split(", "))}
    return recipes


def test_the_documented_elastic_sgd_recipe_with_one_replica_is_plain_sgd_step_by_step():
    """The recipe the docs give for Elastic-SGD, with replicas=1, rho=inf, is plain SGD: the
    Parle optimizer ParleConfig builds steps as torch.optim.SGD without momentum does, step
    by step in float64. It lacked outer_momentum=0: the replicas' step kept Remark 5.3's
    Nesterov 0.9 (a different trajectory, checked below)."""
    from sgdlab.train.replicas import ParleConfig

    recipes = _documented_recipes()
    recipe = recipes["README.md"]
    assert all(r == recipe for r in recipes.values()), recipes
    lr, B = 0.3, 8
    g = torch.Generator().manual_seed(4)
    X = torch.randn(40, 5, generator=g, dtype=F64)
    y = torch.randint(0, 3, (40,), generator=g)
    batches = [torch.randperm(40, generator=g)[:B] for _ in range(12)]

    def trajectory(make_optimizer) -> list[list[torch.Tensor]]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
        opt = make_optimizer(model.parameters())
        out = []
        for idx in batches:
            def closure():
                model.zero_grad()
                loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
                loss.backward()
                return loss
            opt.step(closure)
            out.append([p.detach().clone() for p in model.parameters()])
        return out

    def parle(settings):
        cfg = ParleConfig(**{**settings, "replicas": 1, "rho": math.inf}, lr=lr, batch_size=B)
        return trajectory(lambda ps: cfg.optimizer(ps, seed=0, batches=5))

    sgd = trajectory(lambda ps: torch.optim.SGD(ps, lr=lr))
    for step, (a, b) in enumerate(zip(parle(recipe), sgd)):
        for p, q in zip(a, b):
            assert torch.allclose(p, q, atol=1e-13, rtol=0), step
    # without outer_momentum=0 (the outer Nesterov 0.9 kept) it is another algorithm
    with_momentum = {k: v for k, v in recipe.items() if k != "outer_momentum"}
    assert (parle(with_momentum)[-1][0] - sgd[-1][0]).abs().max() > 1e-3


def test_elastic_sgd_as_the_catalogue_runs_it_is_eq_5_4_by_hand():
    """Elastic-SGD as the catalogue runs it (§5.3.1's L = 1, γ = ∞, α = 0, η⁽⁰⁾ = 1, Remark
    5.3's outer Nesterov 0.9, ρ scoped by (5.10) at every step since L = 1 and clipped at its
    floor), five steps of two replicas against (5.4a) by hand in float64:
    x^a ← x^a − η N[∇f_a(x^a) + ρ_k⁻¹(x^a − x̄_k)], N Nesterov's direction, with
    ρ_k = max(ρ₀(1 − 1/(2B))^k, ρ_min) and x̄_k the replicas' average ((5.4b) with nη′/ρ = 1)."""
    Qs, ms, x0 = _problem()
    eta, mu, rho0, B, rmin, n = 0.2, 0.9, 0.8, 2, 0.5, 2
    xs, bufs = [x0 + 0.1 * a for a in range(n)], [None] * n
    for k in range(5):
        rho = max(rho0 * (1 - 1 / (2 * B)) ** k, rmin)
        xbar = sum(xs) / n
        for a in range(n):
            G = Qs[a] @ (xs[a] - ms[a]) + (xs[a] - xbar) / rho                  # (5.4a)
            bufs[a] = G.clone() if bufs[a] is None else mu * bufs[a] + G
            xs[a] = xs[a] - eta * (G + mu * bufs[a])
    ps = [nn.Parameter(x0 + 0.1 * a) for a in range(n)]
    opts = [Parle([p], lr=eta, inner_lr=1.0, L=1, gamma=math.inf, alpha=0.0, rho=rho0,
                  rho_decay=1 / (2 * B), rho_min=rmin, momentum=mu, nesterov=True,
                  replicas=n) for p in ps]
    rhos = _parle_rounds(ps, opts, lambda p, a: 0.5 * (p - ms[a]) @ Qs[a] @ (p - ms[a]), 5)
    assert rhos == pytest.approx([max(rho0 * 0.75 ** k, rmin) for k in range(5)], rel=1e-14)
    assert rhos[-1] == rmin                                     # the floor is reached
    for p, x in zip(ps, xs):
        assert torch.allclose(p.detach(), x, atol=1e-13, rtol=0), (p.detach(), x)


# --- hyper-parameters users rely on --------------------------------------------------------
def test_the_inner_step_defaults_to_the_outer_lr():
    """§5.3.2: η⁽⁰⁾ = η₀, the initial learning rate. One replica, L = 1, α = 0, on f = x²/2
    from x = 1: y = z = x − η⁽⁰⁾x (the pull is zero at y = x), then x ← x − η(x − z) =
    1 − η·η⁽⁰⁾ = 1 − 0.3·0.3 = 0.91 with inner_lr left out."""
    p = nn.Parameter(torch.ones(1, dtype=F64))
    opt = Parle([p], lr=0.3, L=1, gamma=1.0, alpha=0.0, momentum=0.0)
    assert opt.param_groups[0]["inner_lr"] == 0.3
    opt.step(_closure(p, lambda q, a: 0.5 * q.square().sum(), 0))
    assert p.item() == pytest.approx(0.91, abs=1e-15)


@pytest.mark.parametrize("kw,match", [
    (dict(rho=0.0), "Invalid rho: 0"),      # an infinite coupling 1/ρ, named as ρ
    (dict(replicas=0), "Invalid replicas: 0"),
    # the scoping of ρ is checked when the optimizer is built, not at its first outer step
    (dict(rho_decay=1.0), "scoping rate"),
    (dict(rho_min=2.0, rho_max=1.0), "clipping range"),
])
def test_invalid_parle_hyper_parameters_are_refused_when_built(kw, match):
    with pytest.raises(ValueError, match=match):
        Parle([nn.Parameter(torch.zeros(1))], **kw)


def test_parameter_groups_are_pulled_each_by_its_own_rho():
    """ρ is a group option: two groups with ρ = 0.5 and ρ = 2, two replicas, the Elastic-SGD
    setting (L = 1, γ = ∞, α = 0, η⁽⁰⁾ = 1, no momentum), so (5.8c) is
    x^a ← x^a − η(∇f_a(x^a) + ρ_g⁻¹(x^a − x̄)) per group g, by hand for three rounds on
    f_a = |u − a|² + |v + a|²."""
    eta, rhos = 0.1, (0.5, 2.0)
    starts = [(torch.tensor([1.0, -1.0], dtype=F64), torch.tensor([0.5], dtype=F64)),
              (torch.tensor([-2.0, 3.0], dtype=F64), torch.tensor([4.0], dtype=F64))]
    ps = [[nn.Parameter(u.clone()), nn.Parameter(v.clone())] for u, v in starts]
    opts = [Parle([{"params": [u], "rho": rhos[0]}, {"params": [v], "rho": rhos[1]}],
                  lr=eta, inner_lr=1.0, L=1, gamma=math.inf, alpha=0.0, momentum=0.0,
                  replicas=2) for u, v in ps]

    def loss_of(a):
        def closure():
            u, v = ps[a]
            u.grad = v.grad = None
            loss = (u - a).square().sum() + (v + a).square().sum()
            loss.backward()
            return loss
        return closure
    xs = [[u.clone(), v.clone()] for u, v in starts]
    for _ in range(3):
        for a, o in enumerate(opts):
            o.inner_loop(loss_of(a))
        got_master = master_average([o.anchors() for o in opts])
        for o in opts:
            o.outer_step(got_master)
        xbar = [(xs[0][k] + xs[1][k]) / 2 for k in range(2)]
        for a in range(2):
            grads = [2 * (xs[a][0] - a), 2 * (xs[a][1] + a)]
            xs[a] = [xs[a][k] - eta * (grads[k] + (xs[a][k] - xbar[k]) / rhos[k])
                     for k in range(2)]
    for a in range(2):
        for p, x in zip(ps[a], xs[a]):
            torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-15)


def test_a_lagged_master_is_kept_even_when_the_caller_reuses_its_buffer():
    """master="lagged" pulls towards the average of the previous communication, also for a
    caller (a communicator) that all-reduces into one buffer it refills every round. Zero
    loss (z = x), η = 0.5, ρ = 1, no momentum: x ← x − 0.5(x − x_k); round 1 pulls x = 0
    towards 2 (the first communication: the fresh average), x = 1; round 2 towards the
    previous average 2 (not the refilled 10): x = 1.5."""
    p = nn.Parameter(torch.zeros(1, dtype=F64))
    opt = Parle([p], lr=0.5, inner_lr=1.0, L=1, gamma=math.inf, alpha=0.0, rho=1.0,
                momentum=0.0, master="lagged", replicas=2)
    buffer = torch.empty(1, dtype=F64)
    for average, want in ((2.0, 1.0), (10.0, 1.5)):
        opt.inner_loop(_closure(p, lambda q, a: 0.0 * q.sum(), 0))
        buffer.fill_(average)
        opt.outer_step([buffer])
        assert p.item() == want
