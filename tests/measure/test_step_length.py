"""The normalised step length α against closed forms on quadratics and an explicit weighted
least-squares fit of explicit per-sample losses and slopes."""
import copy
import math
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.measure import step_interpolation
from sgdlab.measure.step_length import normalized_step_length, per_sample_losses_and_slopes
from sgdlab.operators.params import params_vector
from sgdlab.testing import (dense_hessian_reference, per_sample_gradients_loop,
                            tiny_classification, tiny_mlp)


def _regression(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = torch.randn(20, 1, generator=g, dtype=torch.float64)
    return nn.Linear(3, 1).double(), (x, y)


@pytest.mark.parametrize("weights", ["noise", "equal"])
def test_gradient_steps_on_a_quadratic_give_eta_h_minus_one(weights):
    """Least squares is quadratic in θ: the four observations lie on the quadratic along the
    step, so every weighting returns the exact α = −2 t a / b − 1 with a = uᵀHu / 2 and
    b = ∇Lᵀu; along an eigendirection of curvature h a step of size η gives α = ηh − 1."""
    model, data = _regression()
    loss_fn = nn.MSELoss()
    h = dense_hessian_reference(model, loss_fn, data)
    theta0 = params_vector(model).detach()
    grad = per_sample_gradients_loop(model, loss_fn, data).mean(0)
    for eta in (0.05, 0.3, 0.9):
        theta1 = theta0 - eta * grad
        st = normalized_step_length(model, loss_fn, theta0, theta1, data, weights=weights)
        u = (theta1 - theta0) / (theta1 - theta0).norm()
        t, a, b = float((theta1 - theta0).norm()), float(u @ h @ u) / 2, float(grad @ u)
        assert st.alpha == pytest.approx(-2 * t * a / b - 1, rel=1e-9, abs=1e-12)
        assert st.length == pytest.approx(t, rel=1e-12) and not st.concave
    vals, vecs = torch.linalg.eigh(h)
    v = vecs[:, -1]                          # the sharpest direction, curvature h_max
    start = theta0 + 0.0                     # move the start so that ∇L ∥ v: θ* + v
    theta_star = theta0 - torch.linalg.solve(h, grad)
    start = theta_star + v
    for eta in (0.5 / vals[-1], 1 / vals[-1], 2 / vals[-1]):
        end = start - eta * (h @ (start - theta_star))
        st = normalized_step_length(model, loss_fn, start, end, data, weights=weights)
        assert st.alpha == pytest.approx(float(eta * vals[-1]) - 1, abs=1e-9)
    # a step of length s away from θ* starts uphill: the floor lies 1 behind, α = −s − 1 < −1
    for s in (0.25, 2.0):
        st = normalized_step_length(model, loss_fn, start, start + s * v, data, weights=weights)
        assert st.alpha == pytest.approx(-s - 1, abs=1e-9) and st.slopes[0] > 0
    assert params_vector(model).detach().equal(theta0)     # the model is not touched


def test_noise_weights_are_a_weighted_fit_of_per_sample_observations():
    model, loss_fn = tiny_mlp(3, 5, 3), nn.CrossEntropyLoss()
    data = tiny_classification(n=14, in_dim=3, classes=3)
    end_data = tiny_classification(n=9, in_dim=3, classes=3, seed=5)
    theta0 = params_vector(model).detach()
    theta1 = theta0 - 0.8 * per_sample_gradients_loop(model, loss_fn, data).mean(0)
    st = normalized_step_length(model, loss_fn, theta0, theta1, data, data_end=end_data)
    t = float((theta1 - theta0).norm())
    u = (theta1 - theta0) / t
    obs, var = [], []
    for theta, batch in ((theta0, data), (theta1, end_data)):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta, model.parameters())
        g = per_sample_gradients_loop(model, loss_fn, batch)
        ell = torch.stack([loss_fn(model(batch[0][i:i + 1]), batch[1][i:i + 1]).detach()
                           for i in range(len(batch[0]))])
        obs += [float(ell.mean()), float((g @ u).mean())]
        var += [float(ell.var()), float((g @ u).var())]
    f0, s0, f1, s1 = obs
    w = np.diag(1 / np.array([var[0], var[2], var[1], var[3]]))
    phi = np.array([[1, 0, 0], [1, t, t * t], [0, 1, 0], [0, 1, 2 * t]], dtype=float)
    mu = np.linalg.solve(phi.T @ w @ phi, phi.T @ w @ np.array([f0, f1, s0, s1]))
    assert st.losses == pytest.approx((f0, f1), rel=1e-10)
    assert st.slopes == pytest.approx((s0, s1), rel=1e-9)
    expect = -1.0 if mu[2] < 0 else 2 * t / (-mu[1] / mu[2]) - 1
    assert st.alpha == pytest.approx(expect, rel=1e-8)


def test_forward_mode_slopes_equal_per_sample_gradients_and_bad_input():
    model, loss_fn = tiny_mlp(3, 4, 2), nn.CrossEntropyLoss()
    data = tiny_classification(n=7, in_dim=3)
    theta = params_vector(model).detach()
    v = torch.randn(theta.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ell, slope = per_sample_losses_and_slopes(model, loss_fn, theta, v, data)
    torch.testing.assert_close(slope, per_sample_gradients_loop(model, loss_fn, data) @ v)
    with pytest.raises(ValueError, match="length 0"):
        normalized_step_length(model, loss_fn, theta, theta, data)
    with pytest.raises(ValueError, match="weights"):
        normalized_step_length(model, loss_fn, theta, theta + 1, data, weights="cockpit")
    with pytest.raises(FloatingPointError):
        normalized_step_length(model, loss_fn, theta, theta + math.inf, data)



def test_data_given_where_a_parameter_vector_goes_is_named():
    # step_interpolation takes (data, theta_a, theta_b), normalized_step_length
    # (theta_start, theta_end, data): swapped, they failed on "unsupported operand type(s) for
    # -: 'Tensor' and 'tuple'" and "'tuple' object has no attribute 'dim'"
    model, loss_fn = tiny_mlp(3, 4, 2), nn.CrossEntropyLoss()
    data = tiny_classification(n=7, in_dim=3)
    theta = params_vector(model).detach()
    with pytest.raises(TypeError, match=r"theta_start must be a flat vector of the model's 26 "
                                        r".*got tuple; the arguments are \(model, loss_fn, "
                                        r"theta_start, theta_end, data"):
        normalized_step_length(model, loss_fn, data, theta, theta + 1)
    with pytest.raises(TypeError, match=r"theta_a must be .*got tuple; the arguments are "
                                        r"\(model, loss_fn, data, theta_a, theta_b"):
        step_interpolation(model, loss_fn, theta, data)
    with pytest.raises(ValueError, match=r"theta_end has shape \(25,\); the model has 26"):
        normalized_step_length(model, loss_fn, theta, theta[:-1], data)

class _SquareNoForwardMode(torch.autograd.Function):
    """x² with a backward (and a vmap rule) but no forward-mode rule: jvp raises."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _OldStyleSquare(torch.autograd.Function):
    """x² as an autograd.Function of the old style (``forward(ctx, ...)``, no
    ``setup_context``): torch.func.jvp raises a RuntimeError on it, not a
    NotImplementedError."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _Square(nn.Module):
    def __init__(self, function=_SquareNoForwardMode):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function.apply(x)


def test_models_without_forward_mode_fall_back_to_per_sample_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), _Square(), nn.Linear(4, 2)).double()
    model[0].bias.requires_grad_(False)                 # frozen: not a coordinate
    loss_fn = nn.CrossEntropyLoss()
    x, y = tiny_classification(n=7, in_dim=3)
    theta = params_vector(model).detach()
    with pytest.raises(NotImplementedError):            # the route the fallback replaces
        torch.func.jvp(model, (x,), (x,))
    v = torch.randn(theta.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ell, slope = per_sample_losses_and_slopes(model, loss_fn, theta + 0.1, v,
                                              [(x[:3], y[:3]), (x[3:], y[3:])])
    moved = copy.deepcopy(model)
    with torch.no_grad():
        moved[0].weight += 0.1
        moved[2].weight += 0.1
        moved[2].bias += 0.1
    torch.testing.assert_close(slope, per_sample_gradients_loop(moved, loss_fn, (x, y)) @ v,
                               rtol=1e-12, atol=1e-12)
    ref = torch.stack([loss_fn(moved(x[i:i + 1]), y[i:i + 1]) for i in range(7)]).detach()
    torch.testing.assert_close(ell, ref, rtol=1e-12, atol=1e-12)
    assert params_vector(model).equal(theta)            # the model is not touched


def test_an_old_style_autograd_function_falls_back_to_per_sample_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), _Square(_OldStyleSquare), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1])
    loss_fn = nn.CrossEntropyLoss()
    theta = params_vector(model).detach()
    with pytest.raises(RuntimeError, match="setup_context"):     # the route that fails
        torch.func.jvp(lambda t: model(t), (x,), (x,))
    v = torch.linspace(-1.0, 1.0, len(theta), dtype=torch.float64)
    ell, slope = per_sample_losses_and_slopes(model, loss_fn, theta, v, (x, y))
    # by hand: one backward pass per sample, and each sample's cross-entropy
    torch.testing.assert_close(slope, per_sample_gradients_loop(model, loss_fn, (x, y)) @ v,
                               rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        out = model(x)
    want = torch.logsumexp(out, 1) - out[torch.arange(5), y]
    torch.testing.assert_close(ell, want, rtol=1e-12, atol=1e-12)


def test_dropout_in_train_mode_sees_the_same_masks_at_both_ends():
    """Over a step of length t ~ 1e-3 the losses differ by ≈ t (f'(0) + f'(t)) / 2; with new
    dropout masks at the second end they differed by the dropout noise (~0.05), which the fit
    read as the step. The global RNG (the training loop's dropout) is left as it was."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.5),
                          nn.Linear(8, 2)).double().train()
    g = torch.Generator().manual_seed(1)
    data = (torch.randn(16, 3, generator=g, dtype=torch.float64),
            torch.randint(2, (16,), generator=g))
    theta = params_vector(model)
    end = theta + 1e-3 * torch.randn(theta.shape, generator=g, dtype=torch.float64)
    state = torch.get_rng_state()
    st = normalized_step_length(model, nn.CrossEntropyLoss(), theta, end, data,
                                weights="equal")
    assert torch.equal(torch.get_rng_state(), state)
    (f0, f1), (s0, s1) = st.losses, st.slopes
    assert f1 - f0 == pytest.approx(st.length * (s0 + s1) / 2, abs=1e-7)


class Outputs(nn.Module):
    """The logits alone, or in a dict or a tuple beside the inputs (for ``loss_fn`` to pick)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind, self.a, self.head = kind, nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        out = self.head(torch.tanh(self.a(x)))
        return {"logits": out, "x": x} if self.kind == "dict" else \
            (out, x) if self.kind == "tuple" else out


def _segment(cls=None, kind="plain"):
    """10 float64 samples, a plain ``Outputs`` model, a copy of it as ``cls(kind)``, its
    parameters theta and an end point near them."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (10,), generator=g)
    torch.manual_seed(0)
    plain = Outputs("plain").double()
    model = (cls or Outputs)(kind).double()
    model.load_state_dict(plain.state_dict())
    theta = params_vector(plain)
    end = theta + 0.05 * torch.randn(theta.shape, generator=g, dtype=theta.dtype)
    return x, y, plain, model, theta, end


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_outputs_that_loss_fn_unpacks_give_the_step_length_of_the_logits(kind):
    # the per-sample losses indexed the outputs as one tensor: KeyError: None for a dict
    x, y, plain, model, theta, end = _segment(Outputs, kind)
    pick = (lambda o, t: nn.functional.cross_entropy(o["logits"], t)) if kind == "dict" else \
        (lambda o, t: nn.functional.cross_entropy(o[0], t))
    got = normalized_step_length(model, pick, theta, end, (x, y))
    ref = normalized_step_length(plain, nn.CrossEntropyLoss(), theta, end, (x, y))
    assert math.isfinite(ref.alpha)
    assert got.alpha == pytest.approx(ref.alpha, rel=1e-12)
    assert got.losses == pytest.approx(ref.losses, rel=1e-12)
    assert got.slopes == pytest.approx(ref.slopes, rel=1e-12)


class Tagged(Outputs):
    """The logits in a dict beside a number that is no tensor, or a batch-level tensor."""

    def __init__(self, extra: str):
        super().__init__("dict")
        self.extra = extra

    def forward(self, x):
        out = super().forward(x)
        out["extra"] = 3 if self.extra == "number" else out["logits"].square().mean()
        return out


def test_outputs_beside_a_number_give_the_step_length_of_the_logits():
    # vmap sliced every leaf of the outputs: "Got in_dim=0 for an input but the input is of
    # type <class 'int'>"
    x, y, plain, model, theta, end = _segment(Tagged, "number")
    got = normalized_step_length(model, lambda o, t: nn.functional.cross_entropy(
        o["logits"], t), theta, end, (x, y))
    ref = normalized_step_length(plain, nn.CrossEntropyLoss(), theta, end, (x, y))
    assert got.alpha == pytest.approx(ref.alpha, rel=1e-12)
    assert got.slopes == pytest.approx(ref.slopes, rel=1e-12)


def test_an_output_without_the_samples_dimension_is_refused_by_its_shape():
    from sgdlab.errors import UserError

    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,))
    model = Tagged("batch").double()
    theta = params_vector(model)
    with pytest.raises(UserError, match=r"shape \(\) among them, with no dimension of the 10"):
        normalized_step_length(model, lambda o, t: nn.functional.cross_entropy(
            o["logits"], t), theta, theta + 0.01, (x, y))


def test_a_loss_that_is_no_mean_of_the_samples_losses_is_refused():
    # class weights cancel in one sample's loss: f(0) was the unweighted mean (not the loss);
    # a sample whose targets are all ignored has no loss (0/0), which raised a
    # FloatingPointError and a training run with the step_length instrument ended "diverged"
    from sgdlab.errors import UserError

    x, y, model, _, theta, end = _segment()
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0], dtype=torch.float64))
    plain = normalized_step_length(model, nn.CrossEntropyLoss(), theta, end, (x, y))
    with torch.no_grad():
        assert plain.losses[0] != pytest.approx(float(weighted(model(x), y)))
    with pytest.raises(UserError, match=r"normalized_step_length .*weight=.*class weights"):
        normalized_step_length(model, weighted, theta, end, (x, y))
    ignored = y.clone()
    ignored[3] = -100
    with pytest.raises(UserError, match=r"normalized_step_length .*ignore_index=-100"):
        normalized_step_length(model, nn.CrossEntropyLoss(), theta, end, (x, y),
                               data_end=(x, ignored))


class _TanhLine(nn.Module):
    """Per-sample loss (tanh θ − y_n)² under MSELoss (x = 1): not quadratic in θ."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(self.theta) * x


def test_an_observation_without_noise_is_fitted_exactly():
    """y = (1, −1, −1, −1): at θ₀ = 0 every sample's loss is 1 (zero variance: an exact
    observation) while the slopes 2y are not; Cockpit weights an exact observation by a large
    stand-in, so the noise-weighted fit passes through f(0) = 1: it is the fit of the other
    three observations, weighted by their inverse variances, with w₀ = 1 fixed. The step
    θ₁ = −1 has t = 1, u = −1, and d/dθ tanh = 1 − tanh²."""
    y = np.array([1.0, -1.0, -1.0, -1.0])
    data = (torch.ones(4, 1, dtype=torch.float64), torch.tensor(y)[:, None])
    st = normalized_step_length(_TanhLine(), nn.MSELoss(), torch.zeros(1, dtype=torch.float64),
                                -torch.ones(1, dtype=torch.float64), data)
    t, th = 1.0, math.tanh(-1.0)
    s0 = 2 * y                                          # −2(tanh 0 − y)(1 − 0)
    ell1 = (th - y) ** 2
    s1 = -2 * (th - y) * (1 - th * th)
    assert st.losses == pytest.approx((1.0, ell1.mean()), rel=1e-12)
    assert st.slopes == pytest.approx((s0.mean(), s1.mean()), rel=1e-12)
    # rows (w₁, w₂) of f(t) − f(0), f'(0), f'(t) with weights 1/variance (ddof 1)
    rows = np.array([[t, t * t], [1.0, 0.0], [1.0, 2 * t]])
    rhs = np.array([ell1.mean() - 1.0, s0.mean(), s1.mean()])
    w = 1 / np.array([ell1.var(ddof=1), s0.var(ddof=1), s1.var(ddof=1)])
    w1, w2 = np.linalg.solve(rows.T @ (w[:, None] * rows), rows.T @ (w * rhs))
    assert w2 > 0 and st.alpha == pytest.approx(-2 * t * w2 / w1 - 1, rel=1e-8)


@pytest.mark.usefixtures("forward_mode_unloaded")
def test_the_first_forward_mode_pass_passes_on_no_torchscript_deprecation():
    """torch's first forward-mode pass compiles its decompositions with torch.jit.script,
    which warns of its own deprecation: torch's code, nothing the caller can change."""
    model = tiny_mlp()
    x, y = tiny_classification()
    theta = params_vector(model).detach()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        normalized_step_length(model, nn.CrossEntropyLoss(), theta, theta + 0.1, (x, y))
    assert "torch._decomp.decompositions_for_jvp" in sys.modules      # loaded in the call
    assert [str(w.message) for w in caught] == []
