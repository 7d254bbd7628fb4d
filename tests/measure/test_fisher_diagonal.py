"""The diagonal of the empirical Fisher, E(g²) − (E g)² (Chaudhari's thesis §3.3.1 (iv), Fig.
3.4c), in its two readings, against hand computations in float64."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.measure.fisher import adam_moments_variance, fisher_diagonal


def _regression(n: int = 11):
    """y ≈ w·x + b with the squared error: ℓ_i = (w·x_i + b − y_i)², so g_i = 2 r_i (x_i, 1)."""
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(3, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64))
        model.bias.fill_(0.25)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return model, nn.MSELoss(), x, y


def _hand_gradients(x, y) -> torch.Tensor:
    r = x @ torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64) + 0.25 - y[:, 0]
    return torch.cat([2 * r[:, None] * x, 2 * r[:, None]], dim=1)     # weight, then bias


@pytest.mark.parametrize("chunk_size", [None, 4, 1])
def test_per_sample_reading_is_the_variance_of_the_per_sample_gradients(chunk_size):
    model, loss_fn, x, y = _regression()
    G = _hand_gradients(x, y)                          # (11, 4), by hand
    want = ((G - G.mean(0)) ** 2).mean(0)              # divided by N: E(g²) − (E g)²
    got = fisher_diagonal(model, loss_fn, (x, y), reading="per-sample", chunk_size=chunk_size)
    assert got.dtype == torch.float64 and got.shape == (4,)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(got, (G ** 2).mean(0) - G.mean(0) ** 2, rtol=1e-10, atol=0.0)
    # the same data in batches of unequal sizes pools to the same variance
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    torch.testing.assert_close(fisher_diagonal(model, loss_fn, batches, chunk_size=chunk_size),
                               want, rtol=1e-12, atol=0.0)


def test_per_sample_reading_checks_the_data_once_not_per_chunk(monkeypatch):
    """per_sample_gradients' checks (a probe forward) on the first chunk only; a model it
    refuses is still refused."""
    import sgdlab.operators.per_sample as per_sample
    from sgdlab.errors import UserError

    model, loss_fn, x, y = _regression()
    seen = []
    check = per_sample.check_model_data
    monkeypatch.setattr(per_sample, "check_model_data",
                        lambda *a, **k: seen.append(len(a[2][0])) or check(*a, **k))
    G = _hand_gradients(x, y)
    got = fisher_diagonal(model, loss_fn, [(x[:5], y[:5]), (x[5:], y[5:])], chunk_size=2)
    torch.testing.assert_close(got, ((G - G.mean(0)) ** 2).mean(0), rtol=1e-12, atol=0.0)
    assert seen == [2]            # 6 chunks, one check
    bn = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.Linear(2, 1)).double().train()
    with pytest.raises(UserError, match="eval mode"):
        fisher_diagonal(bn, loss_fn, (x, y), chunk_size=2)


def test_per_sample_reading_of_identical_samples_is_exactly_zero():
    # E(g²) − (E g)² of equal gradients cancels to round-off; the pooled deviations give 0
    model, loss_fn, x, y = _regression()
    x, y = x[:1].repeat(9, 1) * 3.7, y[:1].repeat(9, 1)
    got = fisher_diagonal(model, loss_fn, (x, y), chunk_size=2)
    assert torch.equal(got, torch.zeros(4, dtype=torch.float64))


def _hand_adam(grads: torch.Tensor, b1: float, b2: float, corrected: bool) -> torch.Tensor:
    """m_t = β₁ m + (1 − β₁) g_t, v_t = β₂ v + (1 − β₂) g_t², and v̂ − m̂² (or v − m²)."""
    m = torch.zeros(grads.shape[1], dtype=torch.float64)
    v = torch.zeros_like(m)
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
    t = len(grads)
    if corrected:
        m, v = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return v - m * m


def _gradient_sequence() -> torch.Tensor:
    """60 steps of 4 coordinates: random, then coordinate 0 silent for 50 steps and 5 for 10
    (m̂ remembers ~10 steps, v̂ ~1,000: m̂² ≈ 10.6 > v̂ ≈ 4.3, a negative 'variance')."""
    g = torch.randn(60, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g[:, 0] = 0.0
    g[50:, 0] = 5.0
    return g


@pytest.mark.parametrize("cls,betas", [(torch.optim.Adam, (0.9, 0.999)),
                                       (torch.optim.Adam, (0.8, 0.99)),
                                       (torch.optim.AdamW, (0.9, 0.999))])
@pytest.mark.parametrize("corrected", [True, False])
def test_adam_moments_reading_is_a_hand_run_of_the_adam_recursion(cls, betas, corrected):
    model = nn.Linear(3, 1).double()                    # 3 weights + 1 bias
    opt = cls(model.parameters(), lr=1e-3, betas=betas)
    grads = _gradient_sequence()
    for g in grads:                                     # a known gradient sequence, fed in
        model.weight.grad = g[:3].reshape(1, 3).clone()
        model.bias.grad = g[3:].clone()
        opt.step()
    want = _hand_adam(grads, *betas, corrected)
    got = fisher_diagonal(model, reading="adam-moments", optimizer=opt,
                          bias_correction=corrected)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    if corrected and betas == (0.9, 0.999):
        assert got[0] < -6.0          # the thesis' negative "eigenvalues" of Fig. 3.4c


def test_adam_moments_uncorrected_after_one_step_is_minus_0_009_g_squared():
    model = nn.Linear(2, 1, bias=False).double()
    opt = torch.optim.Adam(model.parameters())
    model.weight.grad = torch.tensor([[2.0, -3.0]], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(adam_moments_variance(model, opt, bias_correction=False),
                               torch.tensor([-0.036, -0.081], dtype=torch.float64))
    # bias-corrected, one step: m̂ = g, v̂ = g², nothing left
    torch.testing.assert_close(adam_moments_variance(model, opt),
                               torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-14)


def test_bias_correction_is_checked_as_every_flag_is():
    """The shared ``check_flag``: numpy's bool is a flag (refused before), and the refusal
    reads as the other flags' do."""
    from sgdlab.errors import UserError

    model, _, _, _ = _regression()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model.weight.grad = torch.ones_like(model.weight)
    model.bias.grad = torch.ones_like(model.bias)
    opt.step()
    for flag in (False, True):
        torch.testing.assert_close(
            adam_moments_variance(model, opt, bias_correction=np.bool_(flag)),
            adam_moments_variance(model, opt, bias_correction=flag), rtol=0, atol=0)
    with pytest.raises(UserError, match="^bias_correction must be True or False, got 'no'$"):
        adam_moments_variance(model, opt, bias_correction="no")


def test_readings_refuse_what_they_cannot_read():
    model, loss_fn, x, y = _regression()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    model.weight.grad = torch.ones_like(model.weight)
    model.bias.grad = torch.ones_like(model.bias)
    sgd.step()
    with pytest.raises(ValueError, match=r"Adam keeps.*SGD.*'weight'.*no betas"):
        fisher_diagonal(model, reading="adam-moments", optimizer=sgd)
    rms = torch.optim.RMSprop(model.parameters())
    rms.step()
    with pytest.raises(ValueError, match=r"RMSprop.*no betas"):
        fisher_diagonal(model, reading="adam-moments", optimizer=rms)
    fresh = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match=r"Adam.*'weight'.*lacks exp_avg, exp_avg_sq, step"):
        fisher_diagonal(model, reading="adam-moments", optimizer=fresh)
    other = torch.optim.Adam(nn.Linear(3, 1).parameters())
    with pytest.raises(ValueError, match="does not hold the model's parameter 'weight'"):
        fisher_diagonal(model, reading="adam-moments", optimizer=other)
    with pytest.raises(ValueError, match=r"needs the Adam optimizer"):
        fisher_diagonal(model, loss_fn, (x, y), reading="adam-moments")
    with pytest.raises(ValueError, match="needs loss_fn and data"):
        fisher_diagonal(model, reading="per-sample", optimizer=fresh)
    with pytest.raises(ValueError, match=r"one of per-sample, adam-moments, got 'adam'"):
        fisher_diagonal(model, loss_fn, (x, y), reading="adam")
    with pytest.raises(ValueError, match="bias_correction must be True or False"):
        fisher_diagonal(model, reading="adam-moments", optimizer=fresh, bias_correction="no")
    # per_sample_gradients' words for its chunk_size, which this one is passed on as
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match=re.escape(
                f"Invalid chunk_size={bad!r} (an int >= 1: samples per vmap call, or None")):
            fisher_diagonal(model, loss_fn, (x, y), chunk_size=bad)
    # numpy's ints are counts, as for per_sample_gradients (refused before)
    assert torch.equal(fisher_diagonal(model, loss_fn, (x, y), chunk_size=np.int64(4)),
                       fisher_diagonal(model, loss_fn, (x, y), chunk_size=4))


@pytest.mark.parametrize("chunk_size", [1, 5])
def test_per_sample_reading_of_train_mode_dropout_is_per_sample_gradients_one_draw(chunk_size):
    """Dropout in train mode: the masks per_sample_gradients draws for all samples at once
    (one fixed draw going on from chunk to chunk), not the same masks again for each chunk."""
    from sgdlab.operators import per_sample_gradients

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.Dropout(0.5), nn.Tanh(),
                          nn.Linear(6, 1)).double().train()
    _, loss_fn, x, y = _regression(n=11)
    G = per_sample_gradients(model, loss_fn, (x, y), chunk_size=None, method="vmap")
    got = fisher_diagonal(model, loss_fn, (x, y), chunk_size=chunk_size)
    torch.testing.assert_close(got, ((G - G.mean(0)) ** 2).mean(0), rtol=1e-12, atol=1e-16)


def test_a_state_at_step_zero_is_refused_with_bias_correction_and_read_raw_without():
    """A state with ``step`` 0 (a hand-made or zeroed checkpoint) has no bias correction:
    1 − β₁⁰ = 0 would divide by zero, so it is refused by name; read raw it is v − m²."""
    model = nn.Linear(2, 1, bias=False).double()
    opt = torch.optim.Adam(model.parameters())
    model.weight.grad = torch.tensor([[2.0, -3.0]], dtype=torch.float64)
    opt.step()
    opt.state[model.weight]["step"] = torch.tensor(0.0)
    with pytest.raises(ValueError, match=r"'weight' has taken no Adam step \(step 0\)"):
        adam_moments_variance(model, opt)
    torch.testing.assert_close(adam_moments_variance(model, opt, bias_correction=False),
                               torch.tensor([-0.036, -0.081], dtype=torch.float64))
