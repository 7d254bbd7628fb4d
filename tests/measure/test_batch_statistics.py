"""Batch statistics and the Takeuchi information criterion against explicit float64 per-sample
loops, written the way Cockpit's autograd references and the papers write them."""
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.measure import batch_statistics, takeuchi_information
from sgdlab.testing import (dense_hessian_reference, ggn_reference, per_sample_gradients_loop,
                            tiny_classification, tiny_images, tiny_mlp)


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(3 * 3 * 3, 3)).double().eval()


def _cockpit_style(g: torch.Tensor, lr: float, loss: float, eps: float) -> dict[str, float]:
    """The quantities from the per-sample gradient matrix g (B, d), term by term as Cockpit's
    autograd references write them (sums of squared norms and projections, not covariances)."""
    b = g.shape[0]
    grad = g.mean(0)
    gn2 = grad @ grad
    proj = g @ grad
    sq = (g ** 2).sum(1)
    var_pop = (g ** 2).mean(0) - grad ** 2
    var_unb = var_pop * b / (b - 1)
    return {
        "norm_test": math.sqrt((sq.sum() - b * gn2) / (b - 1) / b / gn2),
        "inner_product_test": math.sqrt((1 / (b * (b - 1))) * ((proj ** 2).sum() / gn2 ** 2 - b)),
        "orthogonality_test": math.sqrt((1 / (b * (b - 1)))
                                        * (sq / gn2 - proj ** 2 / gn2 ** 2).sum()),
        "mean_gsnr": float((grad ** 2 / (var_pop + eps)).mean()),
        "eb_criterion": 1 - b * float((grad ** 2 / (var_unb + eps)).mean()),
        "cabs_batch_size": lr * float(sq.sum() - b * gn2) / (b * loss),
    }


@pytest.mark.parametrize("route", ["factored", "vmap"])
@pytest.mark.parametrize("problem", ["mlp", "cnn"])
def test_statistics_equal_explicit_per_sample_formulas(route, problem):
    if problem == "mlp":
        model, loss_fn = tiny_mlp(4, 5, 3), nn.CrossEntropyLoss()
        x, y = tiny_classification(n=10, in_dim=4, classes=3)
    else:
        model, loss_fn = _cnn(), nn.CrossEntropyLoss()
        x, y = tiny_images(n=9, channels=2, size=6)
    g = per_sample_gradients_loop(model, loss_fn, (x, y))
    with torch.no_grad():
        loss = float(loss_fn(model(x), y))
    eps = 1e-5
    st = batch_statistics(model, loss_fn, (x, y), lr=0.3, epsilon=eps, method=route)
    ref = _cockpit_style(g, 0.3, loss, eps)
    for key, val in ref.items():
        assert getattr(st, key) == pytest.approx(val, rel=1e-9, abs=1e-12), key
    # the definitions behind them: S the unbiased sample covariance, McCandlish's estimators
    b, grad = len(g), g.mean(0)
    s = torch.cov(g.T, correction=1)
    assert st.batch_size == b and st.loss == pytest.approx(loss, rel=1e-12)
    assert st.trace_cov == pytest.approx(float(torch.trace(s)), rel=1e-10)
    assert st.grad_sq == pytest.approx(float(grad @ grad), rel=1e-12)
    assert st.inner_product_test == pytest.approx(
        math.sqrt(float(grad @ s @ grad) / (b * float(grad @ grad) ** 2)), rel=1e-9)
    small = float((g ** 2).sum(1).mean())            # |G_small|² at batch size 1
    big = float(grad @ grad)                          # |G_big|² at batch size B
    g2 = (b * big - small) / (b - 1)                  # McCandlish et al. App. A.1
    s_est = (small - big) / (1 - 1 / b)
    assert st.grad_sq_unbiased == pytest.approx(g2, rel=1e-9)
    assert st.noise_scale == pytest.approx(s_est / g2, rel=1e-9)
    assert st.norm_test ** 2 == pytest.approx(st.inner_product_test ** 2
                                              + st.orthogonality_test ** 2, rel=1e-10)
    assert set(st.as_metrics()) >= {"batch/norm_test", "batch/noise_scale", "batch/mean_gsnr"}


def test_zero_variance_coordinates_are_left_out_without_epsilon():
    # a ReLU net whose second hidden unit is dead on every sample: its weights' per-sample
    # gradients are all zero, so ḡ_j² / Σ_jj is 0/0 there
    model = tiny_mlp(3, 2, 2, act=nn.ReLU)
    with torch.no_grad():
        model[0].bias[1] = -100.0
    x, y = tiny_classification(n=12, in_dim=3, classes=2)
    loss_fn = nn.CrossEntropyLoss()
    g = per_sample_gradients_loop(model, loss_fn, (x, y))
    var = g.var(0, correction=0)
    live = var > 0
    assert int((~live).sum()) >= 4                 # the dead unit's 3 weights, bias, outputs
    st = batch_statistics(model, loss_fn, (x, y))
    grad = g.mean(0)
    assert st.mean_gsnr == pytest.approx(float((grad[live] ** 2 / var[live]).mean()), rel=1e-9)
    b = len(g)
    assert st.eb_criterion == pytest.approx(
        1 - b * float((grad[live] ** 2 / (var[live] * b / (b - 1))).mean()), rel=1e-9)
    assert math.isnan(st.cabs_batch_size)          # no learning rate given
    with_eps = batch_statistics(model, loss_fn, (x, y), epsilon=1e-3)
    assert with_eps.mean_gsnr == pytest.approx(float((grad ** 2 / (var + 1e-3)).mean()),
                                               rel=1e-9)


def test_a_batch_of_equal_gradients_and_bad_input():
    # the same sample repeated: no noise at all (every test passes with θ = 0)
    model, loss_fn = tiny_mlp(3, 4, 2), nn.CrossEntropyLoss()
    x, y = tiny_classification(n=1, in_dim=3)
    st = batch_statistics(model, loss_fn, (x.repeat(6, 1), y.repeat(6)), method="vmap")
    assert st.norm_test == pytest.approx(0, abs=1e-7)
    assert st.trace_cov == pytest.approx(0, abs=1e-14)
    assert st.noise_scale == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 samples"):
        batch_statistics(model, loss_fn, (x, y))
    with pytest.raises(ValueError, match="epsilon"):
        batch_statistics(model, loss_fn, (x.repeat(2, 1), y.repeat(2)), epsilon=-1)
    with pytest.raises(ValueError, match="lr"):
        batch_statistics(model, loss_fn, (x.repeat(2, 1), y.repeat(2)), lr=0)
    # a non-finite loss with finite gradients (here a constant term) is an error, not a NaN
    # CABS batch size beside finite tests
    def overflowing(out, target):
        return loss_fn(out, target) + torch.tensor(math.inf, dtype=out.dtype)

    with pytest.raises(FloatingPointError, match="loss"):
        batch_statistics(model, overflowing, (x.repeat(2, 1), y.repeat(2)), lr=0.1)


@pytest.mark.parametrize("curvature, reference", [("ggn", ggn_reference),
                                                  ("hessian", dense_hessian_reference)])
def test_takeuchi_information_against_dense_matrices(curvature, reference):
    model, loss_fn = tiny_mlp(3, 4, 3), nn.CrossEntropyLoss()
    data = tiny_classification(n=11, in_dim=3, classes=3)
    g = per_sample_gradients_loop(model, loss_fn, data)
    c = g.T @ g / len(g)                                   # uncentred second moment
    h = torch.diagonal(reference(model, loss_fn, data))
    tic = takeuchi_information(model, loss_fn, data, curvature=curvature)
    keep = h > 0
    assert tic.curvature == curvature
    assert tic.diagonal == pytest.approx(float((torch.diagonal(c)[keep] / h[keep]).sum()),
                                         rel=1e-9)
    assert tic.trace == pytest.approx(float(torch.trace(c) / h.sum()), rel=1e-9)
    eps = takeuchi_information(model, loss_fn, data, curvature=curvature, epsilon=0.1)
    assert eps.diagonal == pytest.approx(float((torch.diagonal(c) / (h + 0.1)).sum()), rel=1e-9)
    with pytest.raises(ValueError, match="curvature"):
        takeuchi_information(model, loss_fn, data, curvature="fisher")
    # a covariance already computed serves as Σ; a mini-batch-scaled one would change C
    from sgdlab.measure.noise import gradient_covariance

    cov = gradient_covariance(model, loss_fn, data)
    given = takeuchi_information(model, loss_fn, data, curvature=curvature, covariance=cov)
    # the same numbers up to round-off: the Hessian diagonal's products are blocked by a
    # timed choice, which may differ between the two calls
    assert given.curvature == curvature
    assert (given.diagonal, given.trace) == pytest.approx((tic.diagonal, tic.trace), rel=1e-12)
    with pytest.raises(ValueError, match="scaled"):
        takeuchi_information(model, loss_fn, data, curvature=curvature,
                             covariance=cov.minibatch(4))
    # a dense covariance's factor carries the scale: refused the same
    dense = gradient_covariance(model, loss_fn, data, method="vmap")
    with pytest.raises(ValueError, match="scaled"):
        takeuchi_information(model, loss_fn, data, curvature=curvature,
                             covariance=dense.scaled(2.0))


@pytest.mark.parametrize("curvature, reference", [("hessian", dense_hessian_reference),
                                                  ("ggn", ggn_reference)])
def test_curvature_weighted_noise_scale_against_dense_matrices(curvature, reference):
    model, loss_fn = tiny_mlp(3, 5, 3), nn.CrossEntropyLoss()
    data = tiny_classification(n=12, in_dim=3, classes=3)
    g = per_sample_gradients_loop(model, loss_fn, data)
    h = reference(model, loss_fn, data)
    b, grad = len(g), g.mean(0)
    s = torch.cov(g.T, correction=1)
    trace_hs = float(torch.trace(h @ s))
    ghg = float(grad @ h @ grad) - trace_hs / b
    st = batch_statistics(model, loss_fn, data, curvature=curvature)
    assert st.trace_h_cov == pytest.approx(trace_hs, rel=1e-9)
    assert st.grad_h_grad_unbiased == pytest.approx(ghg, rel=1e-9)
    assert st.noise_scale_curvature == pytest.approx(trace_hs / ghg, rel=1e-9)
    plain = batch_statistics(model, loss_fn, data)
    assert math.isnan(plain.noise_scale_curvature) and plain.norm_test == st.norm_test
    with pytest.raises(ValueError, match="curvature"):
        batch_statistics(model, loss_fn, data, curvature="fisher")


@pytest.mark.parametrize("loss_fn,refused", [
    (nn.CrossEntropyLoss(reduction="sum"), r"reduction='sum'"),
    (nn.CrossEntropyLoss(weight=torch.tensor([0.5, 3.0], dtype=torch.float64)),
     r"weight=\.\.\..*cancel in one sample's loss"),
    (nn.CrossEntropyLoss(ignore_index=1), r"ignore_index=1.*ignored ones"),
    (functools.partial(F.cross_entropy, ignore_index=1),
     r"cross_entropy\(ignore_index=1\).*ignored ones"),
    (functools.partial(F.cross_entropy, reduction="sum"), r"cross_entropy\(reduction='sum'\)"),
    (functools.partial(F.cross_entropy, weight=torch.tensor([0.5, 3.0], dtype=torch.float64)),
     r"cross_entropy\(weight=\.\.\.\).*cancel in one sample's loss"),
], ids=["sum", "class_weights", "ignore_index", "partial_ignore_index", "partial_sum",
        "partial_class_weights"])
def test_a_batch_loss_that_is_not_the_mean_of_the_samples_is_refused(loss_fn, refused):
    """Per-sample gradients are one sample's loss's (a sum is the mean on one sample, class
    weights cancel, an ignored sample has none); the batch's loss, gradient and Hessian are
    the batch loss's. Set against each other they were off: the Takeuchi information of a
    summed loss 1/N of the mean loss's (8.7 against 208.6 on 24 samples of a residual tanh
    network), ‖ḡ‖² with class weights 0.08 against the batch gradient's 0.78."""
    from sgdlab.errors import UserError

    model, data = tiny_mlp(), tiny_classification()
    assert bool((data[1] == 1).any())
    with pytest.raises(UserError, match=r"takeuchi_information .*" + refused):
        takeuchi_information(model, loss_fn, data, curvature="hessian")
    with pytest.raises(UserError, match=r"batch_statistics .*" + refused):
        batch_statistics(model, loss_fn, data, lr=0.1)
    # the same on a mean-reduced loss: measured
    assert math.isfinite(takeuchi_information(model, nn.CrossEntropyLoss(), data).trace)


def test_f_cross_entropy_s_default_ignored_target_is_refused_as_the_module_s():
    """F.cross_entropy ignores targets -100 as nn.CrossEntropyLoss() does, but only the
    module was refused: with one target -100 in 12, batch_statistics' Tr S came out 2.77
    against 2.33 from the samples' own losses (the others' gradients scaled by 12/11)."""
    from sgdlab.errors import UserError

    model, (x, y) = tiny_mlp(), tiny_classification()
    y = y.clone()
    y[3] = -100
    for loss_fn in (nn.CrossEntropyLoss(), F.cross_entropy):
        with pytest.raises(UserError, match=r"ignore_index=-100\).*ignored ones"):
            batch_statistics(model, loss_fn, (x, y))
    y[3] = 0              # no ignored target: measured
    assert math.isfinite(batch_statistics(model, F.cross_entropy, (x, y)).trace_cov)


def test_a_ggn_of_an_output_that_is_no_tensor_names_the_curvature_keyword():
    # logits in a dict: the GGN refusal sent the user to operator='hessian', a keyword
    # neither function takes (theirs is curvature=)
    from sgdlab.errors import UserError
    from sgdlab.testing import DictOutput, dict_logits_loss, tiny_classification

    torch.manual_seed(0)
    model, data = DictOutput().double(), tiny_classification()
    for fn in (lambda **kw: takeuchi_information(model, dict_logits_loss, data, **kw),
               lambda **kw: batch_statistics(model, dict_logits_loss, data, **kw)):
        with pytest.raises(UserError, match=r"needs the model's output as one tensor.*returned "
                                            r"a dict.*curvature='hessian'"):
            fn(curvature="ggn")
        fn(curvature="hessian")


def test_a_zero_mini_batch_gradient_gives_nan_not_zero_or_an_error():
    """A linear model at zero weights fitting zero targets: every per-sample gradient is 0 and
    the loss 0, so each ratio of the module docstring is 0/0: NaN (the class docstring),
    CABS included (η Tr Σ / L with L = 0)."""
    model = nn.Linear(3, 1).double()
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    st = batch_statistics(model, nn.MSELoss(), (x, torch.zeros(6, 1, dtype=torch.float64)),
                          lr=0.1)
    assert st.loss == 0 and st.grad_sq == 0 and st.trace_cov == 0
    for key in ("norm_test", "inner_product_test", "orthogonality_test", "mean_gsnr",
                "eb_criterion", "cabs_batch_size", "noise_scale"):
        assert math.isnan(getattr(st, key)), key


def test_takeuchi_trace_form_adds_epsilon_to_the_trace_of_the_curvature():
    # Cockpit's TICTrace: Tr C / (Tr H + ε) (ε once, not once per coordinate)
    model, loss_fn = tiny_mlp(3, 4, 3), nn.CrossEntropyLoss()
    data = tiny_classification(n=11, in_dim=3, classes=3)
    g = per_sample_gradients_loop(model, loss_fn, data)
    h = torch.diagonal(ggn_reference(model, loss_fn, data))
    tic = takeuchi_information(model, loss_fn, data, curvature="ggn", epsilon=0.1)
    assert tic.trace == pytest.approx(float((g ** 2).sum() / len(g) / (h.sum() + 0.1)),
                                      rel=1e-9)


def test_takeuchi_information_takes_an_uncentred_covariance_as_its_c():
    """A covariance built with ``centred=False`` is C itself, (1/N) Σ_n g_n g_nᵀ: its diagonal
    is not Σ's, to which ḡ² is added (float64, against the explicit sum)."""
    from sgdlab.measure.noise import gradient_covariance

    model, loss_fn = tiny_mlp(3, 4, 3).double(), nn.CrossEntropyLoss()
    x, y = tiny_classification(n=11, in_dim=3, classes=3)
    data = (x.double(), y)
    g = per_sample_gradients_loop(model, loss_fn, data).double()
    c = torch.diagonal(g.T @ g / len(g))
    h = torch.diagonal(ggn_reference(model, loss_fn, data))
    uncentred = gradient_covariance(model, loss_fn, data, centred=False)
    tic = takeuchi_information(model, loss_fn, data, covariance=uncentred)
    assert tic.trace == pytest.approx(float(c.sum() / h.sum()), rel=1e-10)
    keep = h > 0
    assert tic.diagonal == pytest.approx(float((c[keep] / h[keep]).sum()), rel=1e-10)


def test_takeuchi_information_refuses_a_covariance_of_other_samples_or_another_model():
    """Σ of 6 of the 11 examples gave C of neither; of another network, a shape error."""
    from sgdlab.measure.noise import gradient_covariance

    model, loss_fn = tiny_mlp(3, 4, 3), nn.CrossEntropyLoss()
    data = tiny_classification(n=11, in_dim=3, classes=3)
    # noise.check_given_covariance, whose every refusal tests/measure/test_noise_covariance.py
    # meets through noise_magnitude
    fewer = gradient_covariance(model, loss_fn, (data[0][:6], data[1][:6]))
    with pytest.raises(ValueError, match=r"^takeuchi_information: covariance is over 6 samples, "
                                         r"data holds 11: it must be Σ of the same examples"):
        takeuchi_information(model, loss_fn, data, covariance=fewer)
    wider = gradient_covariance(tiny_mlp(3, 5, 3), loss_fn, data, centred=False)
    with pytest.raises(ValueError, match=r"^takeuchi_information: covariance is over 38 "
                                         r"parameters, the model has 31"):
        takeuchi_information(model, loss_fn, data, covariance=wider)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.1", True, -1.0])
def test_epsilon_must_be_a_finite_number_at_least_zero(bad):
    """A NaN ε made every ratio NaN, a string failed on the comparison and True was 1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 0, 1])
    loss_fn = nn.CrossEntropyLoss()
    for call in (lambda: batch_statistics(model, loss_fn, (x, y), epsilon=bad),
                 lambda: takeuchi_information(model, loss_fn, (x, y), epsilon=bad)):
        with pytest.raises(ValueError, match=r"Invalid epsilon=.* \(a finite number >= 0\)"):
            call()


@pytest.mark.parametrize("bad", [float("inf"), "0.1", True, 0.0])
def test_lr_must_be_a_finite_number_above_zero_or_none(bad):
    """CABS' step: True was 1 and inf passed as steps, a string failed on the comparison."""
    model = nn.Sequential(nn.Linear(3, 2)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"Invalid lr=.* \(a finite number > 0, or None\)"):
        batch_statistics(model, nn.CrossEntropyLoss(), (x, y), lr=bad)


def test_epsilon_takes_numpy_numbers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 0, 1])
    loss_fn = nn.CrossEntropyLoss()
    plain = batch_statistics(model, loss_fn, (x, y), epsilon=0.5)
    for eps in (np.float32(0.5), np.float64(0.5)):
        assert batch_statistics(model, loss_fn, (x, y), epsilon=eps) == plain


def test_a_round_off_negative_ratio_reads_zero_under_the_root():
    # the orthogonality test's Tr S − ḡᵀSḡ/‖ḡ‖² is 0 for gradients all along ḡ, and round-off
    # can leave it at −1e-18, which reads 0 under the root, not the 1e-9 of √|v|
    from sgdlab.measure.batch_statistics import _root

    assert _root(-1e-18) == 0.0 and _root(0.25) == 0.5
    assert math.isnan(_root(math.nan)) and math.isnan(_root(math.inf))
