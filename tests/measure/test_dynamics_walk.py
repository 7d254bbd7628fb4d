"""Per-step dynamics: cosine, norms, full-gradient norm and Hessian spectral norm against dense
float64 references; the callback's exact resume."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from sgdlab.data.base import Dataset
from sgdlab.measure.dynamics import (
    distance_from_init,
    full_batch_grad_norm,
    gradient_cosine,
    hessian_largest_eigenvalue,
    hessian_spectral_norm,
    parameter_norm,
    update_norm,
)
from sgdlab.operators.params import params_vector, trainable_named_params, unflatten_like
from sgdlab.testing import Quadratic
from sgdlab.train.callbacks import Schedule
from sgdlab.train.instruments.dynamics import DynamicsCallback
from sgdlab.train.loop import train


def test_cosine_and_norms_match_explicit_formulas():
    g = torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64)
    h = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    assert gradient_cosine(g, h) == pytest.approx(0.0)
    assert gradient_cosine(g, -3 * g) == pytest.approx(-1.0)
    assert gradient_cosine(g, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)) == \
        pytest.approx(3 / (3 * math.sqrt(2)))
    assert math.isnan(gradient_cosine(g, torch.zeros(3)))
    with pytest.raises(ValueError, match="different sizes"):
        gradient_cosine(g, h[:2])
    model = nn.Linear(2, 1).double()
    th = params_vector(model)
    assert parameter_norm(model) == pytest.approx(float(th.norm()))
    assert distance_from_init(model, th + 1.0) == pytest.approx(math.sqrt(3))
    assert update_norm(th, th + torch.tensor([3.0, 0.0, 4.0], dtype=torch.float64)) == 5.0
    assert update_norm(th - torch.tensor([0.0, 3.0, 4.0], dtype=torch.float64), model) == 5.0


def test_gradient_cosine_is_computed_in_float64_whatever_the_gradients_dtype():
    # cos ∠((1, 1e-4), (1, 0)) = 1/√(1 + 1e-8) = 1 − 5e-9 (to 4e-17): float32 rounds it to 1
    g = torch.tensor([1.0, 1e-4], dtype=torch.float32)
    exact = 1 / math.sqrt(1 + float(g[1].double()) ** 2)
    assert gradient_cosine(g, torch.tensor([1.0, 0.0])) == pytest.approx(exact, abs=1e-15)
    assert gradient_cosine(g, torch.tensor([1.0, 0.0])) < 1.0


def _bn_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()


def _dense_hessian(model, loss_fn, x, y, bn_train: bool):
    params = {k: v.detach() for k, v in trainable_named_params(model).items()}
    bufs = {k: v.clone() for k, v in model.named_buffers()}
    model.eval()
    if bn_train:
        model[1].train()

    def f(flat):
        return loss_fn(functional_call(model, (unflatten_like(flat, params), bufs), (x,)), y)

    # plain autograd: batch norm in train mode updates the (copied) buffers in place
    return torch.autograd.functional.hessian(f, params_vector(model))


def _measured_and_dense(measure, bn_mode: str):
    """``measure`` (a Hessian extreme) of a batch-norm model in train mode whose running
    statistics are far from the batch's, its buffers and mode checked restored after; with
    the dense Hessian's eigenvalues and the model, loss and data it was taken on."""
    model = _bn_model()
    model.train()
    x = torch.randn(16, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (16,))
    with torch.no_grad():
        model(x * 3 + 1)  # running statistics far from the batch statistics
    loss_fn = nn.CrossEntropyLoss()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    got = measure(model, loss_fn, (x, y), bn_mode=bn_mode, tol=1e-10)
    for k, v in model.state_dict().items():  # buffers restored, flags restored
        torch.testing.assert_close(v, state[k])
    assert model.training
    lam = torch.linalg.eigvalsh(_dense_hessian(model, loss_fn, x, y, bn_mode == "train"))
    model.train()
    return got, lam, (model, loss_fn, (x, y))


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_hessian_spectral_norm_matches_dense(bn_mode):
    got, lam, (model, loss_fn, data) = _measured_and_dense(hessian_spectral_norm, bn_mode)
    assert got == pytest.approx(float(lam.abs().max()), rel=1e-6)
    if bn_mode == "train":  # the two modes are different Hessians (Xing et al.)
        other = hessian_spectral_norm(model, loss_fn, data, bn_mode="eval", tol=1e-10)
        assert abs(other - got) > 1e-3 * got


def test_hessian_spectral_norm_of_a_negative_dominant_eigenvalue_is_its_magnitude():
    """‖H‖₂ = max |λ|: H = diag(−3, 1, 0.5) has norm 3, though its top eigenvalue is 1."""
    model = Quadratic(torch.diag(torch.tensor([-3.0, 1.0, 0.5], dtype=torch.float64)))
    data = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    got = hessian_spectral_norm(model, lambda out, y: out.mean(), data, tol=1e-12)
    assert got == pytest.approx(3.0, rel=1e-10)


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_hessian_largest_eigenvalue_matches_dense(bn_mode):
    """Fig. 3's other reading, λ_max: the top of the dense Hessian's spectrum in either mode."""
    got, lam, _ = _measured_and_dense(hessian_largest_eigenvalue, bn_mode)
    assert got == pytest.approx(float(lam.max()), rel=1e-6)


def test_hessian_largest_eigenvalue_of_a_negative_dominant_spectrum_is_not_its_norm():
    """H = diag(−3, 1, 0.5): λ_max = 1 where the spectral norm is 3."""
    model = Quadratic(torch.diag(torch.tensor([-3.0, 1.0, 0.5], dtype=torch.float64)))
    data = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    got = hessian_largest_eigenvalue(model, lambda out, y: out.mean(), data, tol=1e-12)
    assert got == pytest.approx(1.0, rel=1e-10)


def test_hessian_largest_eigenvalue_is_lanczos_on_h_not_on_its_magnitude():
    """A dense float64 H (d = 40) whose negative end is 3x the larger in magnitude, with
    fewer Lanczos steps than d (the Krylov space does not fill the space, so the selection
    of the Ritz value decides): λ_max = 2 against the dense eigvalsh, where the spectral norm
    is 6 and the signed largest-magnitude eigenvalue −6."""
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([-6.0], dtype=torch.float64),
                     torch.linspace(-3.0, -0.5, 29, dtype=torch.float64),
                     torch.linspace(0.1, 1.0, 9, dtype=torch.float64),
                     torch.tensor([2.0], dtype=torch.float64)])
    h = (q * lam) @ q.T
    h = (h + h.T) / 2
    model = Quadratic(h)
    data = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    ref = torch.linalg.eigvalsh(h)
    kw = {"tol": 1e-10, "num_iter": 30, "generator": torch.Generator().manual_seed(0)}
    got = hessian_largest_eigenvalue(model, lambda out, y: out.mean(), data, **kw)
    assert got == pytest.approx(float(ref[-1]), rel=1e-9)
    kw["generator"] = torch.Generator().manual_seed(0)
    norm = hessian_spectral_norm(model, lambda out, y: out.mean(), data, **kw)
    assert norm == pytest.approx(float(ref.abs().max()), rel=1e-9) and norm > 2.5 * got


def test_full_batch_grad_norm_weights_batches_by_size():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    x = torch.randn(11, 3, dtype=torch.float64)
    y = torch.randn(11, 1, dtype=torch.float64)
    loss = nn.MSELoss()(model(x), y)
    g = torch.autograd.grad(loss, list(model.parameters()))
    want = float(torch.cat([t.reshape(-1) for t in g]).norm())
    got = full_batch_grad_norm(model, nn.MSELoss(), [(x[:4], y[:4]), (x[4:], y[4:])])
    assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_full_batch_grad_norm_follows_bn_mode(bn_mode):
    """‖∇L‖ with batch norm on running ("eval") or batch ("train") statistics, dropout off."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Dropout(0.5),
                          nn.Linear(4, 2)).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (10,))
    with torch.no_grad():
        model(x * 3 + 1)  # running statistics far from the batch statistics
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss_fn = nn.CrossEntropyLoss()

    def by_hand(bn_train: bool) -> float:
        model.eval()
        model[1].train(bn_train)
        g = torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()))
        model.load_state_dict(state)  # a train-mode forward moved the running statistics
        model.train()
        return float(torch.cat([t.reshape(-1) for t in g]).norm())

    got = full_batch_grad_norm(model, loss_fn, (x, y), bn_mode=bn_mode)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert model.training and model[1].training and model[3].training
    want, other = by_hand(bn_mode == "train"), by_hand(bn_mode != "train")
    assert got == pytest.approx(want, rel=1e-12)
    assert abs(want - other) > 1e-2 * want  # the modes differ here, so the check can fail


def _digits_like(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return Dataset(x, y, x[:8], y[:8], {"name": "toy", "task": "classification",
                                        "num_outputs": 3})


def _run(tmp_path, *, resume: bool, max_steps=None):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    cb = DynamicsCallback(Schedule.every(2), full_grad_schedule=Schedule.every(6))
    res = train(model, nn.CrossEntropyLoss(), _digits_like(), torch.optim.SGD(
        model.parameters(), lr=0.2, momentum=0.5), epochs=3, batch_size=8, callbacks=[cb],
        checkpoint_dir=tmp_path, max_steps=max_steps, resume=resume, progress=False)
    return res, cb


def test_dynamics_callback_values_and_exact_resume(tmp_path):
    full, _ = _run(tmp_path / "a", resume=False)
    h = full.history
    assert [s for s, _ in h["grad_cosine"]] == list(range(2, 19, 2))
    assert [s for s, _ in h["full_grad_norm"]] == [0, 6, 12, 18]
    assert h["dist_from_init"][0] == (0, 0.0)
    assert all(-1 <= v <= 1 for _, v in h["grad_cosine"])
    # interrupted after 7 steps (the gradient of step 6 is in the checkpoint), resumed
    _run(tmp_path / "b", resume=False, max_steps=7)
    resumed, _ = _run(tmp_path / "b", resume=True)
    for name in ("grad_cosine", "dist_from_init", "update_norm", "param_norm", "full_grad_norm"):
        assert resumed.history[name] == h[name], name  # bit for bit


def test_dynamics_callback_cosine_matches_manual_gradients():
    data = _digits_like()
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    grads = []

    class Grab(DynamicsCallback):
        def on_after_backward(self, ctx):
            grads.append(torch.cat([p.grad.reshape(-1) for p in ctx.model.parameters()]).clone())
            super().on_after_backward(ctx)

    res = train(model, nn.CrossEntropyLoss(), data, torch.optim.SGD(model.parameters(), lr=0.1),
                epochs=1, batch_size=8, callbacks=[Grab()], progress=False)
    want = [gradient_cosine(grads[i], grads[i + 1]) for i in range(len(grads) - 1)]
    assert [v for _, v in res.history["grad_cosine"]] == pytest.approx(want, rel=1e-6)
    assert [s for s, _ in res.history["grad_cosine"]] == list(range(2, 7))


def test_sparse_logging_still_takes_the_cosine_of_consecutive_gradients():
    """Xing et al. §3: cos(g_{t−1}, g_t) := g_{t−1}ᵀg_t / (‖g_{t−1}‖₂ ‖g_t‖₂) of two
    *consecutive* gradients, ‖θ_t − θ_0‖₂, and the step ‖θ_{t+1} − θ_t‖₂, logged every 3 steps
    only. GD on L = ½ θᵀHθ by hand: g_t = H θ_t, θ_{t+1} = (I − ηH) θ_t; the entry logged at
    step s (after s updates) is cos(g_{s−2}, g_{s−1}), not the cosine between the gradients
    of two logged steps (g_{s−4}, g_{s−1})."""
    h = torch.tensor([[2.0, 0.6, 0.0], [0.6, 1.0, 0.2], [0.0, 0.2, 0.3]], dtype=torch.float64)
    theta0 = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    lr = 0.9                                # η λ_max ≈ 2.0: the sharp direction bounces
    model = Quadratic(h, theta0)
    data = Dataset(torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64),
                   torch.zeros(2, 1, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
                   {"name": "toy", "task": "regression", "num_outputs": 1})
    res = train(model, lambda out, y: out.mean(), data, torch.optim.SGD(model.parameters(),
                lr=lr), epochs=12, batch_size=4, callbacks=[DynamicsCallback(Schedule.every(3))],
                progress=False)
    thetas = [theta0]
    for _ in range(12):
        thetas.append(thetas[-1] - lr * h @ thetas[-1])
    g = [h @ t for t in thetas]

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    hist = res.history
    assert [s for s, _ in hist["grad_cosine"]] == [3, 6, 9, 12]
    assert [v for _, v in hist["grad_cosine"]] == pytest.approx(
        [cos(g[s - 2], g[s - 1]) for s in (3, 6, 9, 12)], rel=1e-12, abs=1e-12)
    assert [v for s, v in hist["grad_cosine"] if s > 3] != pytest.approx(  # it can fail
        [cos(g[s - 4], g[s - 1]) for s in (6, 9, 12)], abs=1e-3)
    assert dict(hist["dist_from_init"]) == pytest.approx(
        {s: float((thetas[s] - theta0).norm()) for s in (0, 3, 6, 9, 12)}, rel=1e-12)
    assert dict(hist["update_norm"]) == pytest.approx(
        {s: float((thetas[s] - thetas[s - 1]).norm()) for s in (3, 6, 9, 12)}, rel=1e-12)
    assert dict(hist["param_norm"]) == pytest.approx(
        {s: float(thetas[s].norm()) for s in (0, 3, 6, 9, 12)}, rel=1e-12)


def test_check_hessian_which_names_every_reading_of_hessian_which():
    from sgdlab.measure.dynamics import HESSIAN_WHICH, check_hessian_which

    assert [check_hessian_which(w) for w in HESSIAN_WHICH] == list(HESSIAN_WHICH)
    with pytest.raises(ValueError) as e:
        check_hessian_which({"largest": 1}, "which")
    assert str(e.value) == ("Invalid which={'largest': 1}: expected 'magnitude' or 'largest' "
                            "(Lanczos's which: the Hessian's eigenvalues ranked by |λ| or by "
                            "value)")
