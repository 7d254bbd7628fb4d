"""Replica trainer (in-process Parle): the thesis' degenerate cases as exact trajectory
equalities (SGD, Elastic-SGD, Entropy-SGD), master = mean of replicas, shards, store, errors."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.data.base import Dataset
from sgdlab.errors import ConfigError
from sgdlab.optim.elastic import elastic_sgd_update
from sgdlab.optim.entropy_sgd import EntropySGD
from sgdlab.testing import SkipsItsLayer, run_threads
from sgdlab.train.loop import BatchStream
from sgdlab.train.replicas import ParleConfig, replica_seeds, replica_shards, train_replicas

torch.set_num_threads(1)


def toy_data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(4, 3, generator=g, dtype=torch.float64)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    Xt = torch.randn(24, 4, generator=g, dtype=torch.float64)
    return Dataset(X, (X @ W).argmax(1), Xt, (Xt @ W).argmax(1),
                   {"name": "toy", "task": "classification", "input_shape": (4,),
                    "num_outputs": 3})


def toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


LOSS = nn.CrossEntropyLoss()


class Stream:
    """The batches replica ``a`` draws in the trainer (same seed, same BatchStream)."""

    def __init__(self, data, seed, a, B):
        self.x, self.y, self.B = data.x_train, data.y_train, B
        self.s = BatchStream(len(self.x), torch.Generator().manual_seed(
            replica_seeds(seed, a)["batches"]))

    def closure(self, model, opt=None):
        def cl():
            idx = self.s.next(self.B)
            model.zero_grad(set_to_none=True)
            loss = LOSS(model(self.x[idx]), self.y[idx])
            loss.backward()
            return loss
        return cl


def params(m):
    return [p.detach().clone() for p in m.parameters()]


def test_n1_rho_inf_is_entropy_sgd_exactly():
    data, model = toy_data(), toy_model()
    cfg = ParleConfig(replicas=1, L=4, lr=0.7, inner_lr=0.05, gamma=0.3, gamma_decay=0.1,
                      gamma_min=None, rho=math.inf, alpha=0.25, noise=1e-3, momentum=0.5,
                      nesterov=True, outer_momentum=0.9, batch_size=8, seed=3)
    res = train_replicas(model, LOSS, data, cfg, rounds=6)
    ref = toy_model()
    opt = EntropySGD(ref.parameters(), lr=0.7, inner_lr=0.05, L=4, gamma=0.3, gamma_decay=0.1,
                     alpha=0.25, noise=1e-3, inner_momentum=0.5, inner_nesterov=True,
                     momentum=0.9, nesterov=True, seed=replica_seeds(3, 0)["noise"])
    cl = Stream(data, 3, 0, 8).closure(ref)
    for _ in range(6):
        opt.step(cl)
    for a, b in zip(params(res.master), ref.parameters()):
        assert torch.equal(a, b)
    assert res.grad_evals == 24 and res.effective_epochs == pytest.approx(24 * 8 / 48)


def test_L1_gamma_inf_is_elastic_sgd():
    """"paper" normalisation, L = 1, γ = ∞, α = 0, η⁽⁰⁾ = 1: z = x^a − ∇f_B(x^a) and the outer
    step x^a − η[(x^a − z) + ρ⁻¹(x^a − x̄)] is Elastic-SGD (5.4a)."""
    n, lr, rho, seed, B, T = 3, 0.1, 0.5, 1, 8, 7
    data = toy_data()
    cfg = ParleConfig(replicas=n, L=1, lr=lr, inner_lr=1.0, gamma=math.inf, rho=rho,
                      rho_decay=0.0, rho_min=None, alpha=0.0, momentum=0.0,
                      outer_momentum=0.0, batch_size=B, seed=seed)
    res = train_replicas(toy_model(), LOSS, data, cfg, rounds=T)
    # explicit Elastic-SGD (5.4) with the same batches
    models = [toy_model() for _ in range(n)]
    closures = [Stream(data, seed, a, B).closure(models[a]) for a in range(n)]
    for _ in range(T):
        xs = [params(m) for m in models]
        master = [sum(x[i] for x in xs) / n for i in range(len(xs[0]))]
        for m, cl in zip(models, closures):
            cl()
            with torch.no_grad():
                for p, mp in zip(m.parameters(), master):
                    p.copy_(elastic_sgd_update(p, p.grad, mp, lr=lr, rho=rho))
    ref_master = [sum(params(m)[i] for m in models) / n for i in range(4)]
    for a, b in zip(params(res.master), ref_master):
        assert torch.allclose(a, b, atol=1e-13, rtol=0)
    for rm, m in zip(res.replicas, models):
        for a, b in zip(rm.parameters(), m.parameters()):
            assert torch.allclose(a, b, atol=1e-13, rtol=0)
    # the coupling matters: without it the replicas would differ from these
    assert max((a - b).abs().max() for a, b in zip(params(res.replicas[0]),
                                                    params(res.replicas[1]))) > 1e-3


def test_elastic_sgd_on_split_least_squares_reaches_the_coupled_fixed_point():
    """Elastic-SGD (5.4) with full-batch gradients on three disjoint shards of a least-squares
    problem, f_a(w) = |X_a w − y_a|²/n_a: its fixed point solves the coupled linear system
    ∇f_a(w_a) + ρ⁻¹(w_a − w̄) = 0 for every a, w̄ = (1/n) Σ_b w_b, i.e.
    (H_a + ρ⁻¹I) w_a − (nρ)⁻¹ Σ_b w_b = 2X_aᵀy_a/n_a with H_a = 2X_aᵀX_a/n_a, solved here
    densely in float64. The replicas stay apart (each pulled by its own data) and the master
    is their mean; Σ_a ∇f_a(w_a) = 0 there (the elastic forces cancel)."""
    n, d, rho = 3, 2, 0.5
    g = torch.Generator().manual_seed(2)
    X = torch.randn(30, d, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([[1.0], [-2.0]], dtype=torch.float64) + torch.randn(
        30, 1, generator=g, dtype=torch.float64)
    cfg = ParleConfig(replicas=n, L=1, lr=0.3, inner_lr=1.0, gamma=math.inf, rho=rho,
                      rho_decay=0.0, rho_min=None, alpha=0.0, momentum=0.0,
                      outer_momentum=0.0, shard=True, batch_size=10, seed=0)
    torch.manual_seed(0)
    res = train_replicas(nn.Linear(d, 1, bias=False).double(), nn.MSELoss(),
                         Dataset(X, y, X[:4], y[:4]), cfg, rounds=90)
    eye = torch.eye(d, dtype=torch.float64)
    A = torch.kron(torch.ones(n, n, dtype=torch.float64), -eye / (n * rho))
    rhs, grads = torch.zeros(n * d, dtype=torch.float64), []
    for a, idx in enumerate(replica_shards(30, n, cfg.seed)):
        H = 2 * X[idx].T @ X[idx] / len(idx)
        A[a * d:(a + 1) * d, a * d:(a + 1) * d] += H + eye / rho
        rhs[a * d:(a + 1) * d] = 2 * X[idx].T @ y[idx, 0] / len(idx)
        grads.append(lambda w, H=H, b=rhs[a * d:(a + 1) * d].clone(): H @ w - b)
    want = torch.linalg.solve(A, rhs).view(n, d)
    got = torch.stack([m.weight.detach()[0] for m in res.replicas])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.master.weight.detach()[0], want.mean(0), rtol=0, atol=1e-12)
    assert (want[0] - want[1]).abs().max() > 0.05
    assert sum(gr(w) for gr, w in zip(grads, want)).abs().max() < 1e-12


@pytest.mark.parametrize("mu", [0.0, 0.9])
def test_L1_n1_gamma_rho_inf_is_sgd(mu):
    """One replica, L = 1, γ = ρ = ∞, α = 0, η⁽⁰⁾ = 1: SGD (with the outer Nesterov momentum
    of Remark 5.3 = torch's Nesterov SGD)."""
    data = toy_data()
    cfg = ParleConfig(replicas=1, L=1, lr=0.2, inner_lr=1.0, gamma=math.inf, rho=math.inf,
                      alpha=0.0, momentum=0.0, outer_momentum=mu, outer_nesterov=mu > 0,
                      batch_size=8, seed=5)
    res = train_replicas(toy_model(), LOSS, data, cfg, rounds=9)
    ref = toy_model()
    sgd = torch.optim.SGD(ref.parameters(), lr=0.2, momentum=mu, nesterov=mu > 0)
    cl = Stream(data, 5, 0, 8).closure(ref)
    for _ in range(9):
        sgd.step(cl)
    for a, b in zip(params(res.master), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-14, rtol=0)


def test_master_is_mean_of_replicas_and_training_reduces_loss():
    data = toy_data()
    cfg = ParleConfig(replicas=3, L=5, lr=0.5, inner_lr=0.2, gamma=1.0, rho=1.0, batch_size=8,
                      seed=0)
    res = train_replicas(toy_model(), LOSS, data, cfg, rounds=12, eval_every=4)
    for i, mp in enumerate(res.master.parameters()):
        mean = sum(list(r.parameters())[i] for r in res.replicas) / 3
        assert torch.allclose(mp, mean, atol=1e-14)
    tl = res.history["train_loss"]
    assert [s for s, _ in tl] == [0, 20, 40, 60]
    assert tl[-1][1] < 0.8 * tl[0][1]
    assert res.status == "finished" and res.rounds == 12 and res.grad_evals == 60


def test_the_replica_loss_of_a_round_is_the_mean_over_the_replicas_at_their_anchors():
    """``replica_loss`` of round 1 is (1/n) Σ_a f_a(x₀): each replica's first mini-batch
    loss at x^a = x₀, here the whole of its shard (batch_size = the shard's 16 examples),
    averaged over the three replicas, by hand."""
    data, model = toy_data(), toy_model()
    cfg = ParleConfig(replicas=3, L=2, lr=0.1, shard=True, batch_size=16, seed=0)
    res = train_replicas(model, LOSS, data, cfg, rounds=1)
    with torch.no_grad():
        want = sum(float(LOSS(model(data.x_train[idx]), data.y_train[idx]))
                   for idx in replica_shards(48, 3, cfg.seed)) / 3
    assert res.history["replica_loss"] == [(2, pytest.approx(want, rel=1e-13))]


def test_each_replica_s_loss_is_recorded_beside_their_mean(tmp_path):
    """Only the mean replica loss was recorded: ``replica_loss/a`` is replica a's own,
    f_a(x₀) on its first mini-batch in round 1 (its whole shard), by hand, every round, in
    the history and the run store, and their mean is ``replica_loss``."""
    from sgdlab.store import RunStore

    data, model = toy_data(), toy_model()
    cfg = ParleConfig(replicas=3, L=2, lr=0.1, shard=True, batch_size=16, seed=0)
    store = RunStore(tmp_path / "runs.sqlite")
    res = train_replicas(model, LOSS, data, cfg, rounds=2, store=store)
    with torch.no_grad():
        want = [float(LOSS(model(data.x_train[idx]), data.y_train[idx]))
                for idx in replica_shards(48, 3, cfg.seed)]
    for a in range(3):
        assert res.history[f"replica_loss/{a}"][0] == (2, pytest.approx(want[a], rel=1e-13))
        assert [s for s, _ in res.history[f"replica_loss/{a}"]] == [2, 4]
    assert len(set(want)) == 3      # three shards, three losses: a spread to see
    for r in range(2):
        each = [res.history[f"replica_loss/{a}"][r][1] for a in range(3)]
        assert res.history["replica_loss"][r][1] == pytest.approx(sum(each) / 3, rel=1e-13)
    recorded = store.metrics(res.run_id)
    assert recorded["replica_loss/2"] == [(s, pytest.approx(v, rel=1e-6))
                                          for s, v in res.history["replica_loss/2"]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_on_a_machine_without_cuda_is_refused_by_name():
    # as train(): torch's AssertionError "Torch not compiled with CUDA enabled"
    from sgdlab.errors import UserError

    cfg = ParleConfig(replicas=2, L=1, batch_size=8, seed=0)
    with pytest.raises(UserError, match=r"device='cuda', but CUDA is not available on this "
                                        r"machine .*leave device= out, or give 'cpu'"):
        train_replicas(toy_model(), LOSS, toy_data(), cfg, rounds=1, device="cuda")


def test_a_last_batch_of_one_in_batch_norm_names_the_training_set_and_the_batch_size():
    # train()'s message was given: "with 2 training samples" (the two probed) and
    # drop_last=True, an option train_replicas does not have
    from sgdlab.errors import UserError

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(17, 4, generator=g), torch.randint(0, 2, (17,), generator=g)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    with pytest.raises(UserError, match=r"a mini-batch of one sample reached a batch-norm "
                                        r"layer.*\(17 training samples.*another batch_size "
                                        r"\(train_replicas has no drop_last\)") as refused:
        train_replicas(model, nn.CrossEntropyLoss(), Dataset(x, y),
                       ParleConfig(replicas=1, L=1, batch_size=8), rounds=5)
    assert "drop_last=True" not in str(refused.value)


def test_own_regression_tensors_get_no_accuracy():
    # a Dataset of one's own real-valued targets, no meta: its task is regression
    g = torch.Generator().manual_seed(0)
    X, Xt = (torch.randn(n, 4, generator=g, dtype=torch.float64) for n in (24, 8))
    data = Dataset(X, X[:, :1] * 2, Xt, Xt[:, :1] * 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    cfg = ParleConfig(replicas=2, L=2, lr=0.1, batch_size=8, seed=0)
    res = train_replicas(model, nn.MSELoss(), data, cfg, rounds=2)
    assert "train_loss" in res.final and "test_loss" in res.final
    assert "train_acc" not in res.final and "test_acc" not in res.final


def test_disjoint_shards():
    shards = replica_shards(10, 3, seed=0)
    allidx = torch.cat(shards).sort().values
    assert torch.equal(allidx, torch.arange(10)) and [len(s) for s in shards] == [4, 3, 3]
    assert all(torch.equal(s, s.sort().values) for s in shards)      # each sorted
    # §5.5: n = 3 replicas with 50% each and n = 6 with 25% each — equal sizes, every
    # sample in at least one subset; n = 1 with 50%: a random half
    for n, f in ((3, 0.5), (6, 0.25)):
        sh = replica_shards(1000, n, seed=1, fraction=f)
        assert [len(s) for s in sh] == [int(1000 * f)] * n
        assert all(len(s.unique()) == len(s) for s in sh)
        counts = torch.bincount(torch.cat(sh), minlength=1000)
        assert counts.min() >= 1 and counts.sum() == int(1000 * f) * n
    # m = round(f·N) examples each: 0.37·10 = 3.7 gives 4
    assert [len(s) for s in replica_shards(10, 3, seed=1, fraction=0.37)] == [4] * 3
    half = replica_shards(1000, 1, seed=1, fraction=0.5)[0]
    assert len(half) == 500 and half.max() > 900 and half.min() < 100
    data = toy_data(n=48)
    cfg = ParleConfig(replicas=2, L=3, lr=0.1, batch_size=8, shard=True)
    res = train_replicas(toy_model(), LOSS, data, cfg, epochs=2)
    # N_a = 24: 2 effective epochs = 6 batches of 8 = 2 rounds of L = 3
    assert res.rounds == 2 and res.effective_epochs == pytest.approx(2.0)


def test_store_records_run(tmp_path):
    from sgdlab.store import RunStore
    store = RunStore(tmp_path / "runs.sqlite")
    cfg = ParleConfig(replicas=2, L=2, lr=0.1, batch_size=16)
    res = train_replicas(toy_model(), LOSS, toy_data(), cfg, rounds=3, store=store, name="p")
    run = store.get_run(res.run_id)
    assert run["status"] == "finished"
    m = store.metrics(res.run_id)
    assert {"replica_loss", "gamma", "rho", "lr", "train_loss", "test_acc", "grad_evals",
            "effective_epochs"} <= set(m)
    assert m["grad_evals"][-1] == (6, 6.0)


def test_a_model_of_another_dtype_or_a_loss_per_sample_is_named_as_train_names_them(tmp_path):
    # train() named both; train_replicas failed on torch's "mat1 and mat2 must have the same
    # dtype" and "output with shape [] doesn't match the broadcast shape [48]"
    from sgdlab.errors import UserError
    from sgdlab.store import RunStore

    cfg = ParleConfig(replicas=2, L=2, lr=0.1, batch_size=16)
    per_sample = lambda out, y: nn.functional.cross_entropy(out, y, reduction="none")  # noqa
    store = RunStore(tmp_path / "runs.sqlite")
    for model, loss_fn, says in [
            (toy_model().float(), LOSS, r"model's parameters are torch.float32 but the data's "
                                        r"inputs are torch.float64.*model.to\(torch.float64\)"),
            (toy_model(), per_sample, r"loss_fn <lambda> returns a tensor of shape \(2,\) on "
                                      r"the first 2 training examples.*\.mean\(\)")]:
        with pytest.raises(UserError, match=says) as refused:
            train_replicas(model, loss_fn, toy_data(), cfg, rounds=2, store=store)
        assert isinstance(refused.value.__cause__, RuntimeError)
    assert [r["status"] for r in store.list_runs()] == ["failed", "failed"]


def test_divergence_is_reported_not_raised():
    data = toy_data()
    data.x_train[0, 0] = float("nan")
    cfg = ParleConfig(replicas=2, L=2, lr=0.1, batch_size=48)
    res = train_replicas(toy_model(), LOSS, data, cfg, rounds=3)
    assert res.status == "diverged" and "non-finite" in res.message


def test_a_non_finite_loss_inside_the_inner_loop_keeps_the_previous_round():
    """A NaN mini-batch loss at a later inner step of round 3 (not at x^a, the loss the round
    reports): its NaN gradient reached the Langevin average z and the outer step, so the
    master of round 3 was NaN, the run stopped a round later "with the weights of round 3"
    and returned a NaN master. The round reports the non-finite loss, takes no outer step, and
    the run ends with the weights (master and replicas) of round 2."""
    data = toy_data()
    cfg = ParleConfig(replicas=2, L=3, lr=0.05, gamma=0.5, rho=0.5, noise=1e-3, batch_size=7,
                      seed=4)
    ref = train_replicas(dropout_model(), LOSS, data, cfg, rounds=2)
    calls = [0]

    def nan_at_round_3_replica_1_step_2(out, y):
        calls[0] += out.requires_grad           # training calls: L per replica per round
        loss = LOSS(out, y)
        return loss * float("nan") if calls[0] == 2 * 2 * 3 + 3 + 2 else loss

    res = train_replicas(dropout_model(), nan_at_round_3_replica_1_step_2, data, cfg,
                         rounds=6)
    assert res.status == "diverged" and res.rounds == 2
    assert "in round 3; stopped with the weights of round 2" in res.message
    for a, b in zip(params(res.master), params(ref.master)):
        assert torch.equal(a, b)
    for m, mr in zip(res.replicas, ref.replicas):
        for a, b in zip(params(m), params(mr)):
            assert torch.equal(a, b)
    assert all(math.isfinite(v) for _, v in res.history["train_loss"])


@pytest.mark.parametrize("kw", [dict(replicas=0), dict(L=0), dict(gamma=-1), dict(rho="x"),
                                dict(alpha=1.5), dict(batch_size=0), dict(gamma_decay="1/3B"),
                                dict(lr_milestones=[-1]), dict(lr_factor=0),
                                dict(shard_fraction=0.5), dict(shard=True, shard_fraction=1.5),
                                dict(normalization="x"), dict(master="x"),
                                dict(epoch_unit="replica")])
def test_bad_config_raises_config_error(kw):
    with pytest.raises(ConfigError):
        ParleConfig(**kw)


@pytest.mark.parametrize("kw, message", [
    (dict(lr_milestones=[float("nan")]), "lr_milestones must be a list of finite epochs >= 0"),
    (dict(lr_milestones=[1, math.inf]), "lr_milestones must be a list of finite epochs >= 0"),
    (dict(lr_factor=math.inf), "lr_factor must be a finite number > 0, got inf"),
])
def test_a_milestone_never_passed_or_an_infinite_lr_factor_is_refused(kw, message):
    """A NaN or infinite milestone never dropped the rate, said nowhere; an infinite factor
    made it inf after the first milestone."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        ParleConfig(**kw)


@pytest.mark.parametrize("key", ["gamma_min", "rho_min"])
def test_a_nan_clip_is_named_by_its_option(key):
    # "Invalid lower clip: nan": the scope's bound, not the option given
    with pytest.raises(ConfigError, match=re.escape(
            f"invalid Parle hyper-parameters: Invalid {key}: nan (must be >= 0)")):
        ParleConfig(**{key: math.nan})


def test_config_from_dict():
    assert ParleConfig.from_dict({"gamma": "inf", "rho": 2}).gamma == math.inf
    with pytest.raises(ConfigError, match="unknown"):
        ParleConfig.from_dict({"gama": 1})
    with pytest.raises(ConfigError, match="exactly one"):
        train_replicas(toy_model(), LOSS, toy_data(), {}, rounds=1, epochs=1)


@pytest.mark.parametrize("kw, message", [
    (dict(epochs="two"), "epochs must be a finite number > 0, got 'two'"),
    (dict(epochs=float("nan")), "epochs must be a finite number > 0, got nan"),
    (dict(rounds=1, eval_every="x"), "eval_every must be an int >= 1, got 'x'"),
    (dict(rounds=1, eval_subset="x"), "eval_subset must be an int >= 1, got 'x'"),
    (dict(rounds=1, eval_subset=0), "eval_subset must be an int >= 1, got 0"),
    # True was 1 round, 1 gradient evaluation, a checkpoint every round
    (dict(rounds=True), "rounds must be an int >= 0, not a bool (True)"),
    (dict(grad_evals=True), "grad_evals must be an int >= 1, not a bool (True)"),
    (dict(rounds=1, checkpoint_every=True),
     "checkpoint_every must be an int >= 1, not a bool (True)")])
def test_a_length_or_evaluation_of_the_wrong_type_is_a_config_error(kw, message):
    # values read from a replica config's YAML: a TypeError of a comparison before
    with pytest.raises(ConfigError, match=re.escape(message)):
        train_replicas(toy_model(), LOSS, toy_data(), {"replicas": 2}, **kw)


def test_thesis_scoping_and_lr_schedule_per_round():
    """Eq. (5.10): γ_k = γ₀(1 − 1/(2B))^⌊k/L⌋, clipped at γ_min, B = ⌈N/b⌉ of the whole set;
    lr drops by lr_factor after the milestone epochs of B rounds; grad_evals sets the length."""
    data = toy_data()                     # N = 48, b = 8: B = 6
    cfg = ParleConfig(replicas=2, L=2, lr=0.3, gamma=1.5, gamma_min=1.0, rho=0.2,
                      rho_min=0.1, lr_milestones=[2], lr_factor=0.1, batch_size=8,
                      shard=True, shard_fraction=0.5)
    res = train_replicas(toy_model(), LOSS, data, cfg, grad_evals=28)
    assert res.rounds == 14 and res.grad_evals == 28
    g = [v for _, v in res.history["gamma"]]
    r = [v for _, v in res.history["rho"]]
    lr = [v for _, v in res.history["lr"]]
    for j in range(14):
        assert g[j] == pytest.approx(max(1.5 * (1 - 1 / 12) ** j, 1.0), rel=1e-12)
        assert r[j] == pytest.approx(max(0.2 * (1 - 1 / 12) ** j, 0.1), rel=1e-12)
    assert g[-1] == 1.0 and r[-1] == 0.1
    assert lr == pytest.approx([0.3] * 12 + [0.03] * 2)


@pytest.mark.parametrize("batch_size", [8, 7])
def test_local_epochs_count_passes_over_each_replicas_subset(batch_size):
    """``epoch_unit="local"`` (§5.5's reading: "Parle has very few mini-batches"): the lr
    milestones count passes of ⌈n_a/b⌉ steps over the replica's own subset, while the
    scoping of eq. (5.10) keeps B of "the global dataset" (§5.3.2)."""
    data = toy_data()                     # N = 48: n_a = 24
    per_pass = math.ceil(24 / batch_size)               # 3 steps at b = 8, 4 at b = 7 (short)
    global_b = math.ceil(48 / batch_size)
    lrs = {}
    for unit in ("global", "local"):
        cfg = ParleConfig(replicas=2, L=1, lr=0.3, gamma=1.5, gamma_min=None, rho=0.2,
                          rho_min=None, lr_milestones=[1, 2], lr_factor=0.1,
                          batch_size=batch_size, shard=True, shard_fraction=0.5,
                          epoch_unit=unit)
        res = train_replicas(toy_model(), LOSS, data, cfg, rounds=3 * global_b)
        lrs[unit] = [v for _, v in res.history["lr"]]
        g = [v for _, v in res.history["gamma"]]
        assert g == pytest.approx([1.5 * (1 - 1 / (2 * global_b)) ** j
                                   for j in range(3 * global_b)], rel=1e-12)
    for unit, b in (("global", global_b), ("local", per_pass)):
        want = [0.3] * b + [0.03] * b + [0.003] * (3 * global_b - 2 * b)
        assert lrs[unit] == pytest.approx(want), unit


def test_local_epochs_count_passes_over_the_largest_replica_subset():
    """Disjoint shards of 47 examples over three replicas hold 16, 16 and 15: with b = 5 a
    pass over the largest is ⌈16/5⌉ = 4 rounds (over the smallest ⌈15/5⌉ = 3), so with
    ``epoch_unit="local"`` the lr drops after round 4, L = 1."""
    data = toy_data(n=47)
    cfg = ParleConfig(replicas=3, L=1, lr=0.3, lr_milestones=[1], lr_factor=0.1,
                      batch_size=5, shard=True, epoch_unit="local")
    assert sorted(len(s) for s in replica_shards(47, 3, cfg.seed)) == [15, 16, 16]
    res = train_replicas(toy_model(), LOSS, data, cfg, rounds=6)
    assert [v for _, v in res.history["lr"]] == pytest.approx([0.3] * 4 + [0.03] * 2)


def test_grad_evals_round_up_to_whole_rounds():
    # rounds = ⌈grad_evals / L⌉: 7 gradient evaluations at L = 3 are 3 rounds (9 evaluations)
    cfg = ParleConfig(replicas=2, L=3, lr=0.1, batch_size=8)
    res = train_replicas(toy_model(), LOSS, toy_data(), cfg, grad_evals=7)
    assert res.rounds == 3 and res.grad_evals == 9


def test_local_epochs_are_the_global_ones_with_the_whole_set():
    data = toy_data()
    lrs = []
    for unit in ("global", "local"):
        cfg = ParleConfig(replicas=2, L=2, lr=0.3, lr_milestones=[1], batch_size=8,
                          epoch_unit=unit)
        lrs.append(train_replicas(toy_model(), LOSS, data, cfg, rounds=8).history["lr"])
    assert lrs[0] == lrs[1]


def test_anneal_inner_and_fixed_inner_step():
    """η⁽⁰⁾ stays at η₀ under the "paper" normalisation; ``anneal_inner`` scales it too."""
    data = toy_data()
    for anneal in (False, True):
        cfg = ParleConfig(replicas=1, L=1, lr=0.3, inner_lr=0.05, lr_milestones=[1],
                          anneal_inner=anneal, batch_size=48)
        from sgdlab.train.replicas import ReplicaWorker
        w = ReplicaWorker(0, toy_model(), LOSS, data.x_train, data.y_train, cfg, batches=1)
        w.set_lr(cfg.lr_scale(2, 1))
        g = w.optimizer.param_groups[0]
        assert g["lr"] == pytest.approx(0.03)
        assert g["inner_lr"] == pytest.approx(0.005 if anneal else 0.05)


def cli_config(tmp_path) -> dict:
    """A tiny replica-run config on the toy data, saved as ``tmp_path/c.json``."""
    d = toy_data()
    torch.save({"x_train": d.x_train, "y_train": d.y_train, "x_test": d.x_test,
                "y_test": d.y_test, "meta": d.meta}, tmp_path / "toy.pt")
    cfg = {"data": {"file": str(tmp_path / "toy.pt")}, "dtype": "float64",
           "model": {"name": "mlp", "widths": [6], "activation": "tanh"},
           "parle": {"replicas": 2, "L": 2, "batch_size": 8}, "rounds": 2}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    return cfg


def test_cli_inprocess_and_torchrun_command(tmp_path, capsys, tmp_store):
    from sgdlab.cli.main import main
    cfg = cli_config(tmp_path)
    assert main(["parle", str(tmp_path / "c.json"), "--out", str(tmp_path / "o")]) == 0
    sd = torch.load(tmp_path / "o" / "master.pt", weights_only=True)
    from sgdlab.train.distributed import build_run
    assert set(sd) == set(build_run(cfg)[0].state_dict())
    assert main(["parle", str(tmp_path / "c.json"), "--mode", "distributed", "--replicas", "3",
                 "--print-command"]) == 0
    out = capsys.readouterr().out
    assert "torch.distributed.run --nproc-per-node 3 -m sgdlab.train.distributed" in out
    cfg["parle"]["gama"] = 1
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert main(["parle", str(tmp_path / "c.json")]) == 2
    assert "parle.gama: unknown key (did you mean gamma?)" in capsys.readouterr().err


class _Interrupted(Exception):
    pass


def dies_in_round(k, cfg):
    """``LOSS`` that raises :class:`_Interrupted` two calls into round ``k``'s training (the
    L inner steps of every replica make a round's calls)."""
    calls = [0]

    def loss(out, y):
        calls[0] += 1
        if calls[0] > (k - 1) * cfg.L * cfg.replicas + 2:
            raise _Interrupted
        return LOSS(out, y)
    return loss


def stopped_and_extended(cfg, data, folder, *, stop, rounds):
    """(the run stopped after ``stop`` rounds and resumed to ``rounds``, the uninterrupted
    run of ``rounds``), both on :func:`dropout_model`."""
    ref = train_replicas(dropout_model(), LOSS, data, cfg, rounds=rounds)
    train_replicas(dropout_model(), LOSS, data, cfg, rounds=stop, checkpoint_dir=folder)
    res = train_replicas(dropout_model(), LOSS, data, cfg, rounds=rounds, checkpoint_dir=folder,
                         resume=True)
    return res, ref


def dropout_model(seed=0):  # dropout: the global torch RNG matters too
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Dropout(0.2), nn.Linear(6, 3)).double()


def test_checkpoint_resume_is_bit_exact(tmp_path):
    """A run killed in round 6 (checkpoints every 2 rounds) and resumed, and a run stopped
    after 3 rounds and extended to 7, both end exactly where an uninterrupted run ends."""
    from sgdlab.errors import UserError
    data = toy_data()
    cfg = ParleConfig(replicas=2, L=3, lr=0.05, gamma=0.5, gamma_decay=0.1, rho=0.5,
                      rho_decay=0.2, noise=1e-3, momentum=0.5, nesterov=True,
                      outer_momentum=0.9, batch_size=7, seed=4)
    ref = train_replicas(dropout_model(), LOSS, data, cfg, rounds=7, eval_every=2)

    ck = tmp_path / "a"
    with pytest.raises(_Interrupted):
        train_replicas(dropout_model(), dies_in_round(6, cfg), data, cfg, rounds=7, eval_every=2,
                       checkpoint_dir=ck, checkpoint_every=2)
    assert sorted(p.name for p in ck.iterdir()) == ["master.pt", "rank0.pt"]
    model = dropout_model(7)         # (it reseeds the global RNG: seed after it)
    torch.manual_seed(123)  # the resume restores the global RNG state
    res = train_replicas(model, LOSS, data, cfg, rounds=7, eval_every=2,
                         checkpoint_dir=ck, checkpoint_every=2, resume=True)
    for a, b in zip(params(res.master), params(ref.master)):
        assert torch.equal(a, b)
    assert len(res.replicas) == len(ref.replicas) == cfg.replicas
    for m, mr in zip(res.replicas, ref.replicas):
        for a, b in zip(params(m), params(mr)):
            assert torch.equal(a, b)
    assert res.history == ref.history
    assert {"replica_loss/0", "replica_loss/1"} <= set(res.history)    # each replica's too
    assert (res.rounds, res.grad_evals) == (7, ref.grad_evals)

    cfg = ParleConfig(**{**cfg.to_dict(), "master": "lagged"})  # its state resumes too
    res2, ref2 = stopped_and_extended(cfg, data, tmp_path / "b", stop=3, rounds=7)
    for a, b in zip(params(res2.master), params(ref2.master)):
        assert torch.equal(a, b)
    assert res2.history == ref2.history

    with pytest.raises(ConfigError, match="with 2 replicas; this run has 1 process"):
        train_replicas(dropout_model(), LOSS, data, ParleConfig(replicas=3, L=3), rounds=7,
                       checkpoint_dir=ck, resume=True)
    with pytest.raises(UserError, match="no checkpoint"):
        train_replicas(dropout_model(), LOSS, data, cfg, rounds=7,
                       checkpoint_dir=tmp_path / "none", resume=True)
    # the continuation must be the saved run: same Parle config, same training set
    with pytest.raises(ConfigError, match="differs from the saved run's in lr"):
        train_replicas(dropout_model(), LOSS, data, ParleConfig(**{**cfg.to_dict(), "lr": 0.1}),
                       rounds=7, checkpoint_dir=tmp_path / "b", resume=True)
    fewer = Dataset(data.x_train[:-3], data.y_train[:-3], data.x_test, data.y_test,
                    meta=data.meta)
    with pytest.raises(ConfigError, match="the training set"):
        train_replicas(dropout_model(), LOSS, fewer, cfg, rounds=7,
                       checkpoint_dir=tmp_path / "b", resume=True)
    # a new run does not overwrite another run's checkpoints
    with pytest.raises(UserError, match="already holds a run's checkpoints"):
        train_replicas(dropout_model(), LOSS, data, cfg, rounds=2, checkpoint_dir=tmp_path / "b")


SAVING = ParleConfig(replicas=2, L=3, lr=0.05, gamma=0.5, rho=0.5, noise=1e-3, momentum=0.5,
                    batch_size=7, seed=4)


def master_pt_of_round_4_raises(error):
    """``save_checkpoint`` of sgdlab.train.replicas, but raising ``error`` for master.pt of
    round 4 (its rank files written before)."""
    import sgdlab.train.replicas as R
    save = R.save_checkpoint

    def saving(path, state):
        if Path(path).name == R.MASTER_CHECKPOINT and state["round"] == 4:
            raise error
        return save(path, state)
    return saving


def test_a_run_killed_while_saving_resumes_from_the_previous_set(tmp_path, monkeypatch):
    """Killed after its round-4 rank file was written but before master.pt named round 4:
    the round-2 set is still whole (the previous rank file was kept beside it), and the
    resume ends where an uninterrupted run ends. Before, the round-2 rank file was already
    overwritten and nothing could resume."""
    import sgdlab.train.replicas as R

    data, cfg, save = toy_data(), SAVING, R.save_checkpoint
    ref = train_replicas(dropout_model(), LOSS, data, cfg, rounds=6, eval_every=2)
    ck = tmp_path / "ck"
    monkeypatch.setattr(R, "save_checkpoint", master_pt_of_round_4_raises(_Interrupted))
    with pytest.raises(_Interrupted):
        train_replicas(dropout_model(), LOSS, data, cfg, rounds=6, eval_every=2,
                       checkpoint_dir=ck, checkpoint_every=2)
    monkeypatch.setattr(R, "save_checkpoint", save)
    assert sorted(p.name for p in ck.iterdir()) == ["master.pt", "rank0.prev.pt", "rank0.pt"]
    res = train_replicas(dropout_model(7), LOSS, data, cfg, rounds=6, eval_every=2,
                         checkpoint_dir=ck, checkpoint_every=2, resume=True)
    for a, b in zip(params(res.master), params(ref.master)):
        assert torch.equal(a, b)
    assert res.history == ref.history
    assert sorted(p.name for p in ck.iterdir()) == ["master.pt", "rank0.pt"]


def test_a_set_failing_twice_while_saving_still_resumes_from_the_set_before(tmp_path,
                                                                            monkeypatch):
    """master.pt of round 4 cannot be written (a full disk), and again in the resumed run:
    the round-2 set stays whole both times and a third start ends where an uninterrupted run
    ends. Before, the resumed run moved the first failure's round-4 rank file over the
    round-2 one it had resumed from (kept as rank0.prev.pt): nothing could resume."""
    import sgdlab.train.replicas as R

    data, cfg, save = toy_data(), SAVING, R.save_checkpoint
    ref = train_replicas(dropout_model(), LOSS, data, cfg, rounds=6, eval_every=2)
    ck = tmp_path / "ck"
    monkeypatch.setattr(R, "save_checkpoint",
                        master_pt_of_round_4_raises(OSError(28, "No space left on device")))
    kw = dict(rounds=6, eval_every=2, checkpoint_dir=ck, checkpoint_every=2)
    with pytest.raises(OSError, match="No space"):
        train_replicas(dropout_model(), LOSS, data, cfg, **kw)
    with pytest.raises(OSError, match="No space"):
        train_replicas(dropout_model(7), LOSS, data, cfg, resume=True, **kw)
    assert torch.load(ck / "master.pt", weights_only=True)["round"] == 2
    monkeypatch.setattr(R, "save_checkpoint", save)
    res = train_replicas(dropout_model(7), LOSS, data, cfg, resume=True, **kw)
    for a, b in zip(params(res.master), params(ref.master)):
        assert torch.equal(a, b)
    assert res.history == ref.history
    assert sorted(p.name for p in ck.iterdir()) == ["master.pt", "rank0.pt"]


def test_a_resumed_run_s_wall_time_adds_the_seconds_its_rank_file_carries(tmp_path):
    """The resumed run's ``wall_time`` is the time of all its calls' rounds, as ``comm_time``
    is: the seconds the rank file carries plus this call's; a rank file that carries none
    (written before they were recorded) gives the resumed call's alone."""
    data, ck = toy_data(), tmp_path / "ck"
    first = train_replicas(toy_model(), LOSS, data, SAVING, rounds=2, checkpoint_dir=ck)
    mine = torch.load(ck / "rank0.pt", weights_only=True)
    assert 0 < mine["wall_time"] <= first.wall_time
    mine["wall_time"] = 1000.0       # as if the first call had taken that long
    torch.save(mine, ck / "rank0.pt")
    res = train_replicas(toy_model(), LOSS, data, SAVING, rounds=3, checkpoint_dir=ck,
                         resume=True)
    assert res.wall_time == res.final["wall_time"] and res.wall_time > 1000.0
    mine = torch.load(ck / "rank0.pt", weights_only=True)
    del mine["wall_time"]
    torch.save(mine, ck / "rank0.pt")
    res = train_replicas(toy_model(), LOSS, data, SAVING, rounds=4, checkpoint_dir=ck,
                         resume=True)
    assert res.rounds == 4 and res.wall_time < 1000.0


def test_resume_with_another_loss_dtype_or_evaluation_subset_is_refused(tmp_path):
    """Besides the Parle config (now named with both values) and the training set's size: a
    resume with another torch loss trained another objective, float32 replicas took the
    float64 checkpoint by casting, another eval_subset evaluated the master on other
    examples, all without a word. The length and eval_every may change."""
    data, cfg = toy_data(), ParleConfig(replicas=1, L=2, batch_size=8, seed=1)
    train_replicas(toy_model(), LOSS, data, cfg, rounds=1, eval_subset=10,
                   checkpoint_dir=tmp_path)
    for change, needle in [({"eval_subset": 12}, "eval_subset (10 -> 12)"),
                           ({"loss_fn": nn.MultiMarginLoss()},
                            "loss ('CrossEntropyLoss' -> 'MultiMarginLoss')"),
                           ({"model": toy_model().float(), "data": data.to(dtype=torch.float32)},
                            "dtype ('float64' -> 'float32')"),
                           ({"config": ParleConfig(**{**cfg.to_dict(), "lr": 0.05})},
                            "lr (0.1 -> 0.05)")]:
        kw = {"model": toy_model(), "loss_fn": LOSS, "data": data, "config": cfg,
              "eval_subset": 10, **change}
        with pytest.raises(ConfigError) as e:
            train_replicas(rounds=2, checkpoint_dir=tmp_path, resume=True, **kw)
        assert "differs from the saved run's in " + needle in str(e.value), (needle, e.value)
    res = train_replicas(toy_model(), LOSS, data, cfg, rounds=2, eval_subset=10, eval_every=1,
                         checkpoint_dir=tmp_path, resume=True)
    assert res.rounds == 2


def test_epochs_count_the_short_last_batch():
    """An epoch of n examples in batches of B is ⌈n/B⌉ steps: epochs=E runs ⌈E⌈n/B⌉/L⌉
    rounds, and the reported effective epochs reach E."""
    data = toy_data()
    n = len(data.x_train)
    cfg = ParleConfig(replicas=2, L=3, batch_size=7, seed=0)
    assert n % 7                                      # the last batch is short
    res = train_replicas(dropout_model(), LOSS, data, cfg, epochs=20)
    assert res.rounds == math.ceil(20 * math.ceil(n / 7) / 3) == 47   # n·E/(B·L) gave 46
    # the examples drawn over N: 141 steps are 20 passes of 7 batches (6 of 7 examples and
    # one of 6) and one batch of 7, not 141·7/48 (which counts the short batches whole)
    assert res.grad_evals == 141
    assert res.effective_epochs == pytest.approx((20 * 48 + 7) / 48, rel=1e-15)


def test_cli_resume(tmp_path, capsys, tmp_store):
    from sgdlab.cli.main import main
    cfg = cli_config(tmp_path)
    (tmp_path / "c4.json").write_text(json.dumps({**cfg, "rounds": 4}))
    o = str(tmp_path / "o")
    assert main(["parle", str(tmp_path / "c4.json"), "--out", str(tmp_path / "ref")]) == 0
    assert main(["parle", str(tmp_path / "c.json"), "--out", o]) == 0
    assert (tmp_path / "o" / "checkpoints" / "master.pt").is_file()
    assert main(["parle", str(tmp_path / "c4.json"), "--out", o, "--resume"]) == 0
    a = torch.load(tmp_path / "o" / "master.pt", weights_only=True)
    b = torch.load(tmp_path / "ref" / "master.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert main(["parle", str(tmp_path / "c.json"), "--resume"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["parle", str(tmp_path / "c.json"), "--mode", "distributed", "--out", o,
                 "--resume", "--checkpoint-every", "3", "--print-command"]) == 0
    assert "--out " + o + " --checkpoint-every 3 --resume" in capsys.readouterr().out


def test_a_replica_config_reads_numbers_as_run_configs_do_and_names_text_given_for_one(
        tmp_path):
    """`lr: 1e-2` was the string '1e-2' in a replica config (YAML 1.1), a TypeError traceback
    inside the optimizer's check; run configs read it as a number."""
    from sgdlab.train.distributed import load_config

    cfg = tmp_path / "parle.yaml"
    cfg.write_text("data: {name: digits}\nmodel: {name: mlp}\n"
                   "parle: {replicas: 2, lr: 1e-2, gamma: 1e2, rho: inf}\nrounds: 1\n")
    parle = load_config(cfg)["parle"]
    assert parle["lr"] == 0.01 and parle["gamma"] == 100.0
    conf = ParleConfig.from_dict(parle)
    assert (conf.lr, conf.gamma, conf.rho) == (0.01, 100.0, math.inf)
    for key, value in (("lr", "fast"), ("momentum", True), ("alpha", None), ("batch_size", 1.5)):
        with pytest.raises(ConfigError, match=f"{key} must be a"):
            ParleConfig(**{key: value})


def test_augmented_replicas_resume_bit_exact(tmp_path):
    """With meta["augment"] every replica crops / flips its mini-batches with its own sampling
    generator: the run differs from an unaugmented one and resumes bit for bit."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 4, 4, generator=g, dtype=torch.float64)
    y = torch.arange(40) % 3
    meta = {"name": "img", "task": "classification", "num_outputs": 3}
    aug = Dataset(x, y, x[:8], y[:8],
                  {**meta, "augment": {"name": "crop-flip", "padding": 1, "flip": 0.5}})
    plain = Dataset(x, y, x[:8], y[:8], meta)

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()

    cfg = ParleConfig(replicas=2, L=2, lr=0.1, batch_size=8, seed=3, shard=True)
    ref = train_replicas(model(), LOSS, aug, cfg, rounds=6)
    other = train_replicas(model(), LOSS, plain, cfg, rounds=6)
    assert not all(torch.equal(a, b) for a, b in zip(params(ref.master), params(other.master)))
    ck = tmp_path / "ck"
    train_replicas(model(), LOSS, aug, cfg, rounds=3, checkpoint_dir=ck, checkpoint_every=1)
    res = train_replicas(model(), LOSS, aug, cfg, rounds=6, checkpoint_dir=ck, resume=True)
    for a, b in zip(params(res.master), params(ref.master)):
        assert torch.equal(a, b)


def test_a_mistyped_key_of_a_replica_run_config_is_named_with_the_closest_one():
    # they listed the known keys as Python lists, without pointing at the one meant
    from sgdlab.train.distributed import build_run

    # (now in the words of a run config's: the key path, then the hint)
    with pytest.raises(ConfigError, match=r"^parle\.LL: unknown key \(did you mean L\?\)$"):
        ParleConfig.from_dict({"LL": 5})
    with pytest.raises(ConfigError) as e:
        ParleConfig.from_dict({"LL": 5, "zzz": 1})
    lines = str(e.value).splitlines()
    assert lines[:2] == ["2 problems in the config:", "  parle.LL: unknown key (did you mean L?)"]
    assert lines[2].startswith("  parle.zzz: unknown key (valid keys: L, alpha, anneal_inner, ")
    cfg = {"data": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
           "parle": {"replicas": 2}}
    with pytest.raises(ConfigError, match=r"^epoch: unknown key \(did you mean epochs\?\)$"):
        build_run({**cfg, "epoch": 1})
    # a Parle key given a level too high is pointed to its place
    with pytest.raises(ConfigError, match=r"^inner_lr: unknown key \(did you mean "
                                          r"parle\.inner_lr\?\)$"):
        build_run({**cfg, "epochs": 1, "inner_lr": 0.1})
    # a Parle key is that key even where its name is close to a top-level one's
    with pytest.raises(ConfigError, match=r"^master: unknown key \(did you mean "
                                          r"parle\.master\?\)$"):
        build_run({**cfg, "epochs": 1, "master": "lagged"})
    with pytest.raises(ConfigError, match=r"^zzz: unknown key \(valid keys: checkpoint_every, "
                                          r"data, device, "):
        build_run({**cfg, "zzz": 1})
    # the parle mapping's unknown keys with the top level's, in one message, before the data
    # is loaded (they came one at a time, the parle ones after the dataset was read)
    with pytest.raises(ConfigError) as e:
        build_run({**cfg, "data": {"name": "no-such-dataset"}, "epoch": 1,
                   "parle": {"replicas": 2, "lrr": 0.1}})
    assert str(e.value).splitlines() == ["2 problems in the config:",
                                         "  epoch: unknown key (did you mean epochs?)",
                                         "  parle.lrr: unknown key (did you mean lr?)"]
    with pytest.raises(ConfigError, match=r"^parle\.lrr: unknown key \(did you mean lr\?\)$"):
        build_run({**cfg, "data": {"name": "no-such-dataset"}, "epochs": 1,
                   "parle": {"replicas": 2, "lrr": 0.1}})


def test_parle_config_passes_rho_max_to_each_replica_s_optimizer():
    """ρ₀ = 4 above rho_max = 0.5 is clipped from the first round, and ρ growing by 2 per
    round (rho_decay = −1) from 0.125 reaches the clip in the third."""
    p = [nn.Parameter(torch.zeros(1))]
    cfg = ParleConfig.from_dict({"rho": 4.0, "rho_decay": 0.0, "rho_max": 0.5})
    assert cfg.optimizer(p, seed=0, batches=1).current_rho() == 0.5
    cfg = ParleConfig.from_dict({"rho": 0.125, "rho_decay": -1.0, "rho_max": 0.5,
                                 "rho_min": None})
    opt = cfg.optimizer(p, seed=0, batches=1)
    got = []
    for k in range(4):
        opt.outer_steps = k
        got.append(opt.current_rho())
    assert got == [0.125, 0.25, 0.5, 0.5]


def test_parle_config_gives_each_field_to_its_own_option_of_the_replica_s_optimizer():
    """The config's names (the thesis' Remark 5.3 loops: ``momentum``/``nesterov`` on y in
    (5.8a), ``outer_momentum``/``outer_nesterov`` on x^a in (5.8c)) land on the optimizer's
    options, each with a value no other field has; "1/2B" (eq. 5.10) is 1/(2B)."""
    cfg = ParleConfig(replicas=4, L=7, lr=0.3, inner_lr=0.05, gamma=50.0, gamma_decay=0.01,
                      gamma_min=2.0, gamma_max=60.0, rho=3.0, rho_min=0.2, rho_max=5.0,
                      alpha=0.6, noise=1e-4, momentum=0.5, nesterov=False,
                      outer_momentum=0.8, outer_nesterov=True, weight_decay=1e-3,
                      normalization="raw", master="lagged")
    g = cfg.optimizer([nn.Parameter(torch.zeros(1))], seed=0, batches=5).param_groups[0]
    want = dict(L=7, lr=0.3, inner_lr=0.05, gamma=50.0, gamma_decay=0.01, gamma_min=2.0,
                gamma_max=60.0, rho=3.0, rho_decay=0.1, rho_min=0.2, rho_max=5.0, alpha=0.6,
                noise=1e-4, inner_momentum=0.5, inner_nesterov=False, momentum=0.8,
                nesterov=True, weight_decay=1e-3, normalization="raw", master="lagged",
                replicas=4)
    assert {k: g[k] for k in want} == want
    # a Nesterov flag with momentum 0 is ignored, on either loop
    g = ParleConfig(momentum=0.0, outer_momentum=0.0).optimizer(
        [nn.Parameter(torch.zeros(1))], seed=0, batches=5).param_groups[0]
    assert not g["nesterov"] and not g["inner_nesterov"]


def test_parle_config_passes_weight_decay_on_to_each_replica_s_optimizer():
    p = [nn.Parameter(torch.zeros(1))]
    assert ParleConfig().optimizer(p, seed=0, batches=1).param_groups[0]["weight_decay_on"] \
        == "inner"
    cfg = ParleConfig.from_dict({"weight_decay": 1e-3, "weight_decay_on": "both"})
    assert cfg.optimizer(p, seed=0, batches=1).param_groups[0]["weight_decay_on"] == "both"
    with pytest.raises(ConfigError, match="weight_decay_on"):
        ParleConfig(weight_decay_on="outer")


def test_parle_config_passes_inner_momentum_buffer_to_each_replica_s_optimizer():
    p = [nn.Parameter(torch.zeros(1))]
    assert ParleConfig().optimizer(p, seed=0, batches=1).param_groups[0][
        "inner_momentum_buffer"] == "reset"
    cfg = ParleConfig.from_dict({"inner_momentum_buffer": "kept"})
    assert cfg.optimizer(p, seed=0, batches=1).param_groups[0]["inner_momentum_buffer"] \
        == "kept"
    with pytest.raises(ConfigError, match="inner_momentum_buffer"):
        ParleConfig(inner_momentum_buffer="never")


def test_a_kept_inner_momentum_resumes_bit_exact(tmp_path):
    """The inner momentum carried across rounds (the authors' parle_mpi.py) is in the
    replicas' checkpoints: a run stopped after 3 rounds and extended to 6 ends where an
    uninterrupted run ends, and elsewhere than the run that resets it."""
    data = toy_data()
    cfg = ParleConfig(replicas=2, L=3, lr=0.05, gamma=0.5, rho=0.5, noise=1e-3, momentum=0.9,
                      nesterov=True, inner_momentum_on="step", inner_momentum_buffer="kept",
                      batch_size=7, seed=4)
    res, ref = stopped_and_extended(cfg, data, tmp_path / "k", stop=3, rounds=6)
    for a, b in zip(params(res.master), params(ref.master)):
        assert torch.equal(a, b)
    reset = train_replicas(dropout_model(), LOSS, data,
                           ParleConfig(**{**cfg.to_dict(), "inner_momentum_buffer": "reset"}),
                           rounds=6)
    assert max((a - b).abs().max() for a, b in zip(params(reset.master),
                                                    params(ref.master))) > 1e-6


def bn_data(n=40, seed=0):
    """``toy_data`` shifted and scaled: batch-norm statistics far from (0, 1)."""
    d = toy_data(n, seed)
    return Dataset(d.x_train * 3 + 5, d.y_train, d.x_test * 3 + 5, d.y_test, meta=d.meta)


def bn_model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(6, 3)).double()


def eval_by_hand(params_, buffers, x, y):
    """The cross-entropy of model ``bn_model`` with ``params_`` and running mean / variance
    ``buffers`` in eval mode (float64)."""
    w1, b1, g, beta, w2, b2 = params_
    mean, var = buffers
    h = (x @ w1.T + b1 - mean) / torch.sqrt(var + 1e-5) * g + beta
    return float(nn.functional.cross_entropy(h.clamp_min(0) @ w2.T + b2, y))


BN_CFG = dict(replicas=2, L=3, lr=0.1, gamma=1.0, rho=0.5, momentum=0.5, batch_size=8, seed=1)


def test_every_evaluation_of_the_master_has_the_mean_of_the_replicas_batch_norm_statistics(
        tmp_path):
    """Round r's evaluation in a run of 3 rounds is that of x̄ of round r with the mean of the
    replicas' running statistics after round r, as read from the checkpoint of a run of r
    rounds (the same iterates); the initial statistics give another loss."""
    data = bn_data()
    cfg = ParleConfig(**BN_CFG)
    ref = train_replicas(bn_model(), LOSS, data, cfg, rounds=3, eval_every=1)
    assert [s for s, _ in ref.history["test_loss"]] == [0, 3, 6, 9]
    for r in (1, 2):
        ck = tmp_path / str(r)
        train_replicas(bn_model(), LOSS, data, cfg, rounds=r, checkpoint_dir=ck)
        head = torch.load(ck / "master.pt", weights_only=True)
        mine = torch.load(ck / "rank0.pt", weights_only=True)
        states = [w["model"] for w in mine["workers"].values()]
        mean = [(states[0][k] + states[1][k]) / 2 for k in ("1.running_mean", "1.running_var")]
        got = dict(ref.history["test_loss"])[r * cfg.L]
        want = eval_by_hand(head["master"], mean, data.x_test, data.y_test)
        assert got == pytest.approx(want, rel=1e-12)
        initial = [torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)]
        assert abs(eval_by_hand(head["master"], initial, data.x_test, data.y_test) - got) > 0.1


def test_recomputed_statistics_are_the_training_set_s_at_the_master_and_leave_training_alone():
    """With ``master_buffers="recompute"`` the master's running statistics are the training
    set's per-feature mean and unbiased variance of its first layer's outputs at x̄ (one
    batch: b ≥ N), its evaluations use them; the replicas' iterates, their losses and the
    global RNG (dropout) are those of the default run."""
    data = bn_data(n=16)
    kw = dict(BN_CFG, batch_size=16)
    torch.manual_seed(9)
    avg = train_replicas(bn_model(dropout=0.3), LOSS, data, ParleConfig(**kw), rounds=3,
                         eval_every=1)
    rng = torch.get_rng_state()
    torch.manual_seed(9)
    rec = train_replicas(bn_model(dropout=0.3), LOSS, data,
                         ParleConfig(**kw, master_buffers="recompute"), rounds=3, eval_every=1)
    assert torch.equal(torch.get_rng_state(), rng)
    for m, mr in zip(rec.replicas, avg.replicas):
        for a, b in zip(m.state_dict().values(), mr.state_dict().values()):
            assert torch.equal(a, b)
    assert rec.history["replica_loss"] == avg.history["replica_loss"]
    p = params(rec.master)
    h = data.x_train @ p[0].T + p[1]
    bn = rec.master[1]
    torch.testing.assert_close(bn.running_mean, h.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn.running_var, h.var(0), rtol=1e-12, atol=1e-12)
    assert rec.final["test_loss"] == pytest.approx(
        eval_by_hand(p, [h.mean(0), h.var(0)], data.x_test, data.y_test), rel=1e-12)
    assert rec.history["test_loss"][1:] != avg.history["test_loss"][1:]
    with pytest.raises(ConfigError, match="master_buffers must be one of average, recompute"):
        ParleConfig(master_buffers="mean")


def test_a_model_without_buffers_communicates_once_a_round_and_evaluates_as_before(
        monkeypatch):
    """No floating buffers: no reduce beyond one per round and the final one, and
    ``recompute`` has nothing to recompute (the same history, bit for bit)."""
    import sgdlab.train.replicas as rep
    calls = [0]
    real = rep._inprocess_reduce

    def counted(*a):
        calls[0] += 1
        return real(*a)

    monkeypatch.setattr(rep, "_inprocess_reduce", counted)
    data = toy_data()
    runs = [train_replicas(toy_model(), LOSS, data, ParleConfig(**BN_CFG, master_buffers=mb),
                           rounds=4, eval_every=1) for mb in ("average", "recompute")]
    assert calls[0] == 2 * (4 + 1)
    assert runs[0].history == runs[1].history


@pytest.mark.parametrize("master_buffers", ["average", "recompute"])
def test_a_batch_norm_run_resumes_bit_exact(tmp_path, master_buffers):
    data = bn_data()
    cfg = ParleConfig(**BN_CFG, master_buffers=master_buffers)
    ref = train_replicas(bn_model(), LOSS, data, cfg, rounds=5, eval_every=1)
    with pytest.raises(_Interrupted):
        train_replicas(bn_model(), dies_in_round(4, cfg), data, cfg, rounds=5, eval_every=1,
                       checkpoint_dir=tmp_path, checkpoint_every=2)
    res = train_replicas(bn_model(), LOSS, data, cfg, rounds=5, eval_every=1,
                         checkpoint_dir=tmp_path, resume=True)
    assert res.history == ref.history
    for a, b in zip(res.master.state_dict().values(), ref.master.state_dict().values()):
        assert torch.equal(a, b)
    # the evaluations' rule is part of the run
    other = "recompute" if master_buffers == "average" else "average"
    with pytest.raises(ConfigError, match="master_buffers"):
        train_replicas(bn_model(), LOSS, data, ParleConfig(**BN_CFG, master_buffers=other),
                       rounds=6, checkpoint_dir=tmp_path, resume=True)


def test_resuming_an_unrecorded_run_records_its_whole_history(tmp_path):
    """Checkpoints of a run trained without a store name no run id nor store: its resume into
    a store records the rounds before the checkpoint too, so the record is the whole run (it
    held only the rounds after it), and a later resume keeps them."""
    from sgdlab.store import RunStore
    from sgdlab.train.checkpoint import load_checkpoint
    data = toy_data()
    cfg = ParleConfig(replicas=2, L=2, lr=0.1, batch_size=16)
    ref = train_replicas(toy_model(), LOSS, data, cfg, rounds=5, eval_every=1)
    ck = tmp_path / "ck"
    train_replicas(toy_model(), LOSS, data, cfg, rounds=2, eval_every=1, checkpoint_dir=ck)
    head = load_checkpoint(ck / "master.pt")
    assert head.get("run_id") is None and head.get("store") is None
    store = RunStore(tmp_path / "runs.sqlite")
    res = train_replicas(toy_model(), LOSS, data, cfg, rounds=3, eval_every=1,
                         checkpoint_dir=ck, resume=True, store=store)
    res = train_replicas(toy_model(), LOSS, data, cfg, rounds=5, eval_every=1,
                         checkpoint_dir=ck, resume=True, store=store)
    assert [r["id"] for r in store.list_runs()] == [res.run_id]
    recorded = store.metrics(res.run_id)
    assert set(recorded) == set(res.history)
    for key, points in res.history.items():     # what results.json holds
        assert recorded[key] == [(s, pytest.approx(v, rel=1e-6)) for s, v in points], key
    # every round, from the first (the record held rounds 3 to 5 alone)
    assert recorded["replica_loss"] == [(s, pytest.approx(v, rel=1e-6))
                                        for s, v in ref.history["replica_loss"]]
    assert [s for s, _ in recorded["replica_loss"]] == [2, 4, 6, 8, 10]


def dense_top_eigenvalue(params_, buffers, x, y):
    """The largest eigenvalue of the dense float64 Hessian of ``eval_by_hand``'s loss in the
    parameters ``params_`` (batch-norm statistics ``buffers`` fixed)."""
    shapes = [p.shape for p in params_]
    flat = torch.cat([p.detach().reshape(-1) for p in params_])

    def loss(v):
        parts, i = [], 0
        for s in shapes:
            n = math.prod(s)
            parts.append(v[i:i + n].reshape(s))
            i += n
        w1, b1, g, beta, w2, b2 = parts
        mean, var = buffers
        h = (x @ w1.T + b1 - mean) / torch.sqrt(var + 1e-5) * g + beta
        return nn.functional.cross_entropy(h.clamp_min(0) @ w2.T + b2, y)

    H = torch.autograd.functional.hessian(loss, flat)
    return float(torch.linalg.eigvalsh((H + H.T) / 2)[-1])


def hessian_every(k):
    from sgdlab.train.instruments import build_instrument
    return build_instrument("hessian", every=k, tol=1e-10, eval_subset=None)


@pytest.mark.parametrize("master_buffers", ["average", "recompute"])
def test_an_instrument_measures_the_master_at_round_ends(tmp_path, master_buffers):
    """``every`` counts rounds: every 2 rounds of 4 measures at rounds 0, 2 and 4 (steps
    0, 2L, 4L). Round 2's value is the top eigenvalue of the dense Hessian at x̄ of round 2
    with the master's batch-norm statistics (the replicas' mean, as the checkpoint of a run
    of 2 rounds holds them, or recomputed at x̄); the last is the final master's. Measuring
    leaves the training alone."""
    data = bn_data(n=16)
    cfg = ParleConfig(**dict(BN_CFG, batch_size=16), master_buffers=master_buffers)
    plain = train_replicas(bn_model(), LOSS, data, cfg, rounds=4)
    res = train_replicas(bn_model(), LOSS, data, cfg, rounds=4, callbacks=[hessian_every(2)])
    assert res.history["replica_loss"] == plain.history["replica_loss"]
    got = dict(res.history["hess/top_1"])
    assert sorted(got) == [0, 6, 12]
    ck = tmp_path / "two"
    train_replicas(bn_model(), LOSS, data, cfg, rounds=2, checkpoint_dir=ck)
    x̄ = torch.load(ck / "master.pt", weights_only=True)["master"]
    if master_buffers == "average":
        states = [w["model"] for w in torch.load(ck / "rank0.pt",
                                                 weights_only=True)["workers"].values()]
        buffers = [(states[0][k] + states[1][k]) / 2 for k in ("1.running_mean",
                                                                "1.running_var")]
    else:      # one batch of the whole training set at x̄
        h = data.x_train @ x̄[0].T + x̄[1]
        buffers = [h.mean(0), h.var(0)]
    want = dense_top_eigenvalue(x̄, buffers, data.x_train, data.y_train)
    assert got[6] == pytest.approx(want, rel=1e-8)
    bn = res.master[1]
    final = dense_top_eigenvalue(params(res.master), [bn.running_mean, bn.running_var],
                                 data.x_train, data.y_train)
    assert got[12] == pytest.approx(final, rel=1e-8)
    x0 = params(bn_model())
    h = data.x_train @ x0[0].T + x0[1]
    initial = ([torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)]
               if master_buffers == "average" else [h.mean(0), h.var(0)])
    assert got[0] == pytest.approx(dense_top_eigenvalue(x0, initial, data.x_train,
                                                        data.y_train), rel=1e-8)


def test_instrument_rows_go_to_the_run_store(tmp_path):
    from sgdlab.store import RunStore
    store = RunStore(tmp_path / "runs.sqlite")
    res = train_replicas(toy_model(), LOSS, toy_data(), ParleConfig(**BN_CFG), rounds=3,
                         callbacks=[hessian_every(3)], store=store)
    rows = store.metrics(res.run_id, "hess/top_1")["hess/top_1"]
    assert [int(s) for s, _ in rows] == [0, 9] == [s for s, _ in res.history["hess/top_1"]]


def test_an_instrument_of_the_training_loop_or_a_failing_one_is_named():
    from sgdlab.errors import UserError
    from sgdlab.train.callbacks import MeasurementCallback, Schedule
    from sgdlab.train.instruments import build_instrument
    data, cfg = toy_data(), ParleConfig(**BN_CFG)
    with pytest.raises(UserError, match=r"callbacks\[0\] \(noise_magnitude\) cannot measure "
                                        "a replica run"):
        train_replicas(toy_model(), LOSS, data, cfg, rounds=2,
                       callbacks=[build_instrument("noise_magnitude", every=1)])

    def broken(ctx):
        if ctx.step:
            raise RuntimeError("broken instrument")
        return {"x": 1.0}

    with pytest.raises(RuntimeError, match="broken instrument"):
        train_replicas(toy_model(), LOSS, data, cfg, rounds=3,
                       callbacks=[MeasurementCallback(broken, Schedule.every(1))])

    def non_finite(ctx):
        if ctx.step:
            raise FloatingPointError("hess: not finite")
        return {"x": 1.0}

    res = train_replicas(toy_model(), LOSS, data, cfg, rounds=3,
                         callbacks=[MeasurementCallback(non_finite, Schedule.every(1))])
    assert res.status == "diverged" and res.rounds == 1
    assert "non-finite values in a measurement of the master after round 1" in res.message


def test_a_step_instrument_built_by_its_class_is_refused_as_one_built_by_name():
    from sgdlab.errors import UserError
    from sgdlab.train.callbacks import Schedule
    from sgdlab.train.instruments.noise import BatchStatisticsCallback, NoiseMagnitudeCallback
    from sgdlab.train.replicas import master_instruments
    data = toy_data()
    for cls in (NoiseMagnitudeCallback, BatchStatisticsCallback):
        with pytest.raises(UserError, match=rf"callbacks\[0\] \({cls.__name__}\) cannot "
                                            "measure a replica run"):
            master_instruments([cls(Schedule.every(1))], toy_model(), data)


def test_replica_processes_given_instruments_on_other_schedules_are_all_refused_at_once():
    """Rank 0 measures and every rank meets it in an all-reduce at its measurement rounds:
    instruments of the same kinds on other schedules (every 2 and every 3 rounds) would have
    the ranks' collectives cross, so every rank refuses them before the first round."""
    from sgdlab.train.replicas import _ReplicaTraining
    data, cfg = toy_data(), ParleConfig(**BN_CFG)

    def start(rank, comm, every, callbacks=None):
        _ReplicaTraining(toy_model(), LOSS, data, cfg, rounds=4, epochs=None, grad_evals=None,
                         mode="distributed", eval_every=None, eval_subset=None, device=None,
                         communicator=comm, checkpoint_dir=None, checkpoint_every=None,
                         resume=False, callbacks=callbacks or [hessian_every(every[rank])])
        return "started"

    assert run_threads(lambda rank, comm: start(rank, comm, [2, 2]), 2) == ["started"] * 2
    # a schedule of one's own (a plain function, whose repr holds its address) is the same
    # schedule on every rank when each process builds it alike
    from sgdlab.train.callbacks import MeasurementCallback

    def own(rank, comm):
        return start(rank, comm, [2, 2], [MeasurementCallback(
            lambda ctx: {"x": 1.0}, lambda s, rank=rank: s % 2 == 0)])
    assert run_threads(own, 2) == ["started"] * 2
    out = run_threads(lambda rank, comm: start(rank, comm, [2, 3]), 2)
    assert all(isinstance(e, ConfigError) for e in out), out
    assert "different instruments" in str(out[0]) and "every 3" in str(out[1])


def test_a_kept_failure_is_told_by_the_next_checkpoint_whose_set_is_not_written(tmp_path):
    """Rank 0's progress fails in round 2, a failure kept for the next collective: that is
    the checkpoint of round 2, whose status all-reduce tells it first, so every rank stops
    there, rank 1 naming it, and no master.pt names round 2 (its rows never reached rank 0's
    record)."""
    from sgdlab.train.communicator import ReplicaFailed
    data, cfg, ckpt = toy_data(), ParleConfig(**BN_CFG), tmp_path / "ckpt"
    mine = OSError("boom: no terminal")

    def progress(r, rounds, loss):
        if r == 2:
            raise mine

    def run(rank, comm):
        return train_replicas(toy_model(), LOSS, data, cfg, rounds=4, mode="distributed",
                              communicator=comm, checkpoint_dir=ckpt, checkpoint_every=2,
                              progress=progress if rank == 0 else None)
    got = run_threads(run, 2)
    assert got[0] is mine, got
    assert type(got[1]) is ReplicaFailed and str(got[1]) == (
        "replica 1/2: rank 0 failed recording round 2 (OSError: boom: no terminal); stopped "
        "with it"), got
    assert not (ckpt / "master.pt").exists()


@pytest.mark.parametrize("checkpoint_every", [None, 1])
def test_a_run_extended_by_a_resume_keeps_its_old_last_round_s_evaluation_and_measurement(
        tmp_path, checkpoint_every):
    """The master of a run's last round is evaluated and measured after its checkpoint set;
    extended by a resume, that round is not redone, so the extension evaluates and measures
    it again: the rows equal an uninterrupted run's, none missing, none twice."""
    from sgdlab.store import RunStore
    store = RunStore(tmp_path / "runs.sqlite")
    cfg = ParleConfig(**BN_CFG)
    kw = dict(callbacks=[hessian_every(1)], eval_every=1)
    whole = train_replicas(toy_model(), LOSS, toy_data(), cfg, rounds=4, **kw)
    ck = tmp_path / "ck"
    train_replicas(toy_model(), LOSS, toy_data(), cfg, rounds=2, store=store, checkpoint_dir=ck,
                   checkpoint_every=checkpoint_every, **kw)
    res = train_replicas(toy_model(), LOSS, toy_data(), cfg, rounds=4, store=store,
                         checkpoint_dir=ck, resume=True, **kw)
    for key in ("hess/top_1", "test_loss"):
        rows = store.metrics(res.run_id, key)[key]
        assert [int(s) for s, _ in rows] == [0, 3, 6, 9, 12], key
        assert [s for s, _ in res.history[key]] == [s for s, _ in whole.history[key]], key
        assert [v for _, v in res.history[key]] == pytest.approx(
            [v for _, v in whole.history[key]], rel=1e-9), key


@pytest.mark.parametrize("rounds_before", [0, 2])
def test_a_run_an_instrument_ends_keeps_the_master_it_measured_and_evaluates_it_once(
        rounds_before):
    """An instrument's non-finite numbers at round r's x̄ end the run there, as train() ends
    with the weights a measurement diverged at: the result's master is that x̄, its metrics
    (evaluated every round) logged once at step r · L, not again for the final master."""
    from sgdlab.train.callbacks import MeasurementCallback, Schedule
    seen = []

    def non_finite(ctx):
        seen.append(params(ctx.model))
        if ctx.step >= rounds_before * BN_CFG["L"]:
            raise FloatingPointError("not finite")
        return {"x": 1.0}

    res = train_replicas(toy_model(), LOSS, toy_data(), ParleConfig(**BN_CFG), rounds=4,
                         eval_every=1, callbacks=[MeasurementCallback(non_finite,
                                                                      Schedule.every(1))])
    assert res.status == "diverged" and res.rounds == rounds_before
    steps = [3 * r for r in range(rounds_before + 1)]
    assert [s for s, _ in res.history["test_loss"]] == steps
    assert all(torch.equal(a, b) for a, b in zip(params(res.master), seen[-1]))


def test_a_rank_whose_replicas_losses_were_finite_says_another_replica_s_was_not():
    """Rank 1's loss turns NaN in round 2: both ranks diverge there (the all-reduced mean is
    NaN), rank 1 naming the non-finite replica loss, rank 0, whose own losses were finite,
    saying that another replica's was not."""
    data, cfg = toy_data(), ParleConfig(**BN_CFG)

    def run(rank, comm):
        calls = []

        def loss_fn(out, y):
            calls.append(torch.is_grad_enabled())      # training's calls, not evaluation's
            bad = rank == 1 and sum(calls) > cfg.L + 1
            return LOSS(out, y) * (math.nan if bad else 1.0)
        res = train_replicas(toy_model(), loss_fn, data, cfg, rounds=3, mode="distributed",
                             communicator=comm)
        return res.status, res.rounds, res.message
    got = run_threads(run, 2)
    assert got == [("diverged", 1, "another replica's loss was non-finite in round 2; "
                    "stopped with the weights of round 1"),
                   ("diverged", 1, "non-finite replica loss (nan) in round 2; stopped with "
                    "the weights of round 1")], got


def test_measurements_take_untimed_probe_blocks():
    """As in train(): a measurement of the master at a round's end takes the ruled probe
    block (``reproducible_blocks``), not one timed on this machine's load; nothing stays on."""
    from sgdlab.operators import HessianOperator
    from sgdlab.operators.blocking import blocks_reproducible
    from sgdlab.train import MeasurementCallback

    data, seen = toy_data(n=16), []

    def sees(ctx):
        op = HessianOperator(ctx.model, LOSS, (data.x_train, data.y_train))
        seen.append((blocks_reproducible(), op.block_tuner("matmat").settled))
        return {}

    train_replicas(toy_model(), LOSS, data, ParleConfig(replicas=2, L=1, batch_size=8),
                   rounds=2, callbacks=[MeasurementCallback(sees, every=1)])
    assert len(seen) == 3 and all(on for on, _ in seen)
    assert all(size is not None for _, size in seen)     # fixed, never timed
    assert not blocks_reproducible()


def test_a_loss_that_does_not_reach_the_parameters_is_named():
    """A replica's backward() on a loss of a forward pass that never calls its layer failed
    with autograd's "element 0 of tensors does not require grad"."""
    from sgdlab.errors import UserError

    cfg = ParleConfig(replicas=2, L=2, lr=0.5, inner_lr=0.2, gamma=1.0, rho=1.0, batch_size=8,
                      seed=0)
    with pytest.raises(UserError, match=r"the loss does not depend on the model's trainable"):
        train_replicas(SkipsItsLayer(4, 3, torch.float64), LOSS, toy_data(), cfg, rounds=1)


@pytest.mark.parametrize("key", ["replicas", "batch_size"])
def test_parle_config_refuses_a_bool_count(key):
    # True was 1 replica, a batch of 1
    with pytest.raises(ConfigError,
                       match=re.escape(f"{key} must be an int >= 1, not a bool (True)")):
        ParleConfig(**{key: True})


@pytest.mark.parametrize("key", ["lr", "L", "alpha"])
def test_parle_config_names_a_bool_number_as_run_configs_do(key):
    # "lr must be a number, got True" read as if True were no number at all
    with pytest.raises(ConfigError, match=re.escape(f"{key} must be a number, not a bool (True)")):
        ParleConfig(**{key: True})
    with pytest.raises(ConfigError, match=re.escape(f"{key} must be a number, got 'x'")):
        ParleConfig(**{key: "x"})


def test_parle_config_takes_numpy_and_torch_ints_as_ints():
    """np.int64 counts and seed (a grid's values) were refused: "replicas must be an int >= 1,
    got np.int64(2)", "L must be a number, got np.int64(3)"."""
    cfg = ParleConfig(replicas=np.int64(2), L=np.int32(3), batch_size=torch.tensor(8),
                      seed=np.uint32(5))
    assert (cfg.replicas, cfg.L, cfg.batch_size, cfg.seed) == (2, 3, 8, 5)
    assert all(type(v) is int for v in (cfg.replicas, cfg.L, cfg.batch_size, cfg.seed))
    assert replica_seeds(cfg.seed, 1) == replica_seeds(5, 1)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "7", True, False])
def test_parle_config_bounds_its_seed_as_a_run_config_s(seed):
    # a bool seed was "seed must be a number, not a bool (True)", without the seed's rule
    with pytest.raises(ConfigError, match=re.escape(
            f"seed must be an int in 0..2**32 - 1 (as a run config's seed), "
            f"{f'not a bool ({seed})' if isinstance(seed, bool) else f'got {seed!r}'}")):
        ParleConfig(seed=seed)


@pytest.mark.parametrize("case", ["class weights", "ignored targets"])
def test_a_loss_an_instrument_s_measurement_refuses_is_refused_before_round_0(tmp_path, case):
    """The alignment instrument sets per-sample gradients against the batch loss: a loss
    that is no plain mean of the samples' (class weights, or targets it ignores in the
    evaluation set) is refused before any round runs and before the run is recorded, not
    at its first measurement (round 2) after the rounds before it."""
    from sgdlab.errors import UserError
    from sgdlab.store import RunStore
    from sgdlab.train.instruments import build_instrument
    data, loss = toy_data(), LOSS
    if case == "class weights":
        loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    else:
        data.y_train[::5] = -100
    store, rounds = RunStore(tmp_path / "runs.sqlite"), []
    with pytest.raises(UserError, match="the alignment instrument sets per-sample gradients"):
        train_replicas(toy_model(), loss, data, ParleConfig(**BN_CFG), rounds=3, store=store,
                       callbacks=[build_instrument("alignment", at=[2], k=1, num_probes=2)],
                       progress=lambda r, n, value: rounds.append(r))
    assert rounds == [] and store.list_runs() == []


def test_more_replicas_than_processes_says_how_to_make_them_equal():
    """torchrun started 2 processes for a config of 3 replicas: the refusal says both ways
    to make them equal (it had said only that they differ)."""
    from types import SimpleNamespace

    from sgdlab.errors import ConfigError

    cfg = ParleConfig(**{**BN_CFG, "replicas": 3})
    with pytest.raises(ConfigError, match=re.escape(
            "config.replicas = 3 but the process group has 2 processes (one replica per "
            "process): launch 3 in all (torchrun's --nproc-per-node times --nnodes), or set the "
            "replicas to 2 "
            "(parle.replicas; python -m sgdlab.train.distributed --replicas 2)")):
        train_replicas(toy_model(), LOSS, toy_data(), cfg, rounds=1, mode="distributed",
                       communicator=SimpleNamespace(rank=0, world_size=2))


def test_a_recomputed_master_normalises_each_batch_of_the_replicas_batch_size_by_its_own():
    """``master_buffers="recompute"`` feeds the training set to the master in batches of the
    replicas' batch size (b = 8 of N = 40: 5 batches), each normalised by its own statistics:
    a second batch-norm layer's running statistics are the mean and unbiased variance of its
    inputs so made, which differ from one batch of all 40 (the first layer's do not)."""
    data = bn_data(n=40)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 5),
                          nn.BatchNorm1d(5), nn.Linear(5, 3)).double()
    res = train_replicas(model, LOSS, data, ParleConfig(**BN_CFG, master_buffers="recompute"),
                         rounds=2)
    w1, b1, g1, beta1, w2, b2 = params(res.master)[:6]

    def second_inputs(batches):
        out = []
        for x in batches:
            h = x @ w1.T + b1
            h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5) * g1 + beta1
            out.append(h.clamp_min(0) @ w2.T + b2)
        return torch.cat(out)

    h2 = second_inputs(data.x_train.split(8))
    bn2 = res.master[4]
    torch.testing.assert_close(bn2.running_mean, h2.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn2.running_var, h2.var(0), rtol=1e-12, atol=1e-12)
    assert (second_inputs([data.x_train]).mean(0) - h2.mean(0)).abs().max() > 1e-3


def test_the_master_loaded_from_a_checkpoint_has_the_mean_of_the_replicas_buffers(tmp_path):
    """:func:`load_master_checkpoint` puts x̄ of master.pt and the mean (not the sum) of the
    replicas' running statistics in the rank files into the model: the run's final master."""
    from sgdlab.train.replicas import load_master_checkpoint
    data = bn_data()
    res = train_replicas(bn_model(), LOSS, data, ParleConfig(**BN_CFG), rounds=2,
                         checkpoint_dir=tmp_path)
    model = bn_model(seed=5)
    head = load_master_checkpoint(tmp_path, model)
    assert head["round"] == 2
    states = [w["model"] for w in torch.load(tmp_path / "rank0.pt",
                                             weights_only=True)["workers"].values()]
    for k in ("1.running_mean", "1.running_var"):
        want = (states[0][k] + states[1][k]) / 2
        torch.testing.assert_close(model.state_dict()[k], want, rtol=1e-15, atol=0)
        assert torch.equal(model.state_dict()[k], res.master.state_dict()[k])
    for p, q in zip(params(model), head["master"]):
        assert torch.equal(p, q)


def test_overlapping_shards_are_windows_of_the_permutation_from_replica_a_s_start():
    """With ``fraction`` replica a's examples are the m = round(f·N) entries of the seeded
    permutation π from position round(a·N/n) on (cyclically): replica 0's window starts at
    π's first entry. N = 10, n = 3, f = 0.5: windows [0, 5), [3, 8), [7, 12) mod 10."""
    from sgdlab.train.replicas import _seed
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(_seed(4, 0, 9)))
    want = [perm[[i % 10 for i in range(s, s + 5)]].sort().values for s in (0, 3, 7)]
    got = replica_shards(10, 3, seed=4, fraction=0.5)
    assert all(torch.equal(a, b) for a, b in zip(got, want)) and len(got) == 3
    # the disjoint shards deal π round-robin from its first entry
    assert torch.equal(replica_shards(10, 3, seed=4)[0], perm[0::3].sort().values)


def test_instruments_see_a_replica_s_batch_cut_to_its_shard():
    """A batch size above a replica's examples (64 > N_a = 24) is its whole shard, as its
    steps take it: the measurements' batch size (``ctx.batch_size``, which noise instruments
    draw their batches with) is 24, not 64."""
    from sgdlab.train import MeasurementCallback
    from sgdlab.train.callbacks import step_batch_size

    sizes = []

    def batch_size(ctx):
        sizes.append(step_batch_size(ctx))
        return {}

    train_replicas(toy_model(), LOSS, toy_data(n=48),
                   ParleConfig(replicas=2, L=1, lr=0.1, batch_size=64, shard=True), rounds=1,
                   callbacks=[MeasurementCallback(batch_size, every=1)])
    assert sizes == [24, 24]
