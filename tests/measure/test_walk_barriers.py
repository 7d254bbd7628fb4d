"""Step interpolation (Xing et al.): valley floor, barriers and heights on losses with known
answers, and the batched-over-α evaluation against a naive loop."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.data.base import Dataset
from sgdlab.measure.walk import (
    StepInterpolation,
    analyze_segment,
    has_valley_floor,
    segment_alphas,
    segment_losses,
    step_interpolation,
    summarize_epochs,
)
from sgdlab.operators.params import params_vector
from sgdlab.testing import naive_segment_losses
from sgdlab.train.callbacks import Schedule
from sgdlab.train.instruments.dynamics import DynamicsCallback
from sgdlab.train.instruments.walk import StepInterpolationCallback
from sgdlab.train.loop import train


class Landscape(nn.Module):
    """A model whose 'output' is an analytic loss of its parameter θ (data ignored)."""

    def __init__(self, fn, theta0):
        super().__init__()
        self.fn = fn
        self.theta = nn.Parameter(torch.as_tensor(theta0, dtype=torch.float64).clone())

    def forward(self, x):
        return self.fn(self.theta).expand(len(x))


def mean_out(out, y):
    return out.mean()


def quad(h):
    return lambda th: 0.5 * th @ (h @ th)


def double_well_1d(th):
    return ((th**2 - 1) ** 2).sum()


def double_well_2d(th):
    return (th[0] ** 2 - 1) ** 2 + 2 * th[1] ** 2


def dummy_data(n=8):
    x = torch.zeros(n, 1, dtype=torch.float64)
    y = torch.zeros(n, 1, dtype=torch.float64)
    return Dataset(x, y, x.clone(), y.clone(), {"name": "dummy", "task": "regression",
                                                "num_outputs": 1})


def test_segment_alphas_paper_and_inclusive_readings():
    # Xing et al.: 10 points between the iterates -> alpha = k/11 with both iterates, 12 in all
    a = segment_alphas(10)
    assert len(a) == 12 and a[0] == 0 and a[-1] == 1
    # float64 α = k/11 itself, not float32's nearest (which is 3e-9 off at k = 1)
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, torch.arange(12, dtype=torch.float64) / 11, rtol=0, atol=1e-15)
    torch.testing.assert_close(segment_alphas(10, spacing="inclusive"),
                               torch.arange(10, dtype=torch.float64) / 9, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="spacing"):
        segment_alphas(10, spacing="both")


@pytest.mark.parametrize("spacing", ["interior", "inclusive"])
def test_segment_alphas_take_a_numpy_count_and_refuse_a_bool_or_float(spacing):
    """np.int64(10) points are 10; True was 1 interior point (2.0 torch's linspace error)."""
    torch.testing.assert_close(segment_alphas(np.int64(10), spacing=spacing),
                               segment_alphas(10, spacing=spacing), rtol=0, atol=0)
    for bad in (True, 2.0):
        with pytest.raises(ValueError, match=re.escape(f"Invalid num_points={bad!r}: an int")):
            segment_alphas(bad, spacing=spacing)


def test_valley_floor_readings_at_the_iterates_and_between():
    # "interior" (the text, line 81): only a lowest point strictly between the iterates is a
    # floor; "segment" (Fig. 1's caption, line 70): every segment has one
    for alpha, inside in ((0.0, False), (1e-9, True), (0.5, True), (1 - 1e-9, True),
                          (1.0, False)):
        assert has_valley_floor(alpha) is inside
        assert has_valley_floor(alpha, "interior") is inside
        assert has_valley_floor(alpha, "segment") is True
    # another reading is refused, not read as "interior"
    with pytest.raises(ValueError, match=r"Invalid valley floor reading 'middle': expected "
                                         r"'interior' or 'segment'"):
        has_valley_floor(0.5, "middle")


def test_gd_bouncing_in_a_1d_valley_closed_form():
    # L = λθ²/2 with lr λ = 11/6: θ_{t+1} = −(5/6) θ_t. The floor sits at α* = 6/11, which the
    # paper's grid (10 points between the iterates, α = k/11) contains, so the grid minimum is
    # exact: L* = 0 and the height above the floor is (L_t + L_{t+1})/2 = λθ_t²(1 + 25/36)/4.
    # Consecutive gradients are antiparallel.
    lam, lr, theta0 = 2.0, 11 / 12, 1.5
    q = 5 / 6
    model = Landscape(quad(torch.tensor([[lam]], dtype=torch.float64)), [theta0])
    walk = StepInterpolationCallback(Schedule.every(1))
    dyn = DynamicsCallback(Schedule.every(1))
    data = dummy_data()
    res = train(model, mean_out, data, torch.optim.SGD(model.parameters(), lr=lr), epochs=6,
                batch_size=len(data.x_train), callbacks=[walk, dyn], progress=False)
    assert res.status == "finished" and len(walk.records) == 6
    for t, r in enumerate(walk.records):
        th = theta0 * (-q) ** t
        assert r.step == t and r.epoch == t + 1 and len(r.losses) == 12
        assert r.loss_start == pytest.approx(lam * th**2 / 2, rel=1e-12)
        assert r.loss_end == pytest.approx(lam * (q * th) ** 2 / 2, rel=1e-12)
        assert r.valley_alpha == pytest.approx(6 / 11, abs=1e-12)
        assert r.valley_loss == pytest.approx(0.0, abs=1e-12)
        assert r.height_above_floor == pytest.approx(lam * th**2 * (1 + q * q) / 4, rel=1e-10)
        assert not r.barrier and r.barrier_height == 0.0
    cos = [v for _, v in res.history["grad_cosine"]]
    assert len(cos) == 5 and all(c == pytest.approx(-1.0, abs=1e-12) for c in cos)
    upd = dict(res.history["update_norm"])
    assert upd[1] == pytest.approx((1 + q) * theta0, rel=1e-12)
    assert dict(res.history["dist_from_init"])[2] == pytest.approx(theta0 * (1 - q * q),
                                                                   rel=1e-12)
    # per-epoch table: one step per GD epoch, no barriers
    assert [s.barriers for s in walk.summary()] == [0] * 6
    assert [v for _, v in res.history["walk_epoch_barriers"]] == [0.0] * 6


def test_table_2_height_from_the_segment_floor_or_the_sampled_points():
    # L = λθ²/2, GD with lr 0.1 and λ = 2: θ_{t+1} = 0.8 θ_t, a plain descent whose lowest
    # evaluated point is θ_{t+1}. From that floor the height is (L_t − L_{t+1})/2; from the
    # lowest of the 10 points between the iterates (α = 10/11, θ = θ_t (1 − 0.2·10/11) =
    # (9/11) θ_t), Xing et al.'s θ_t^min of line 128, it is (L_t + L_{t+1} − 2 L(9θ_t/11))/2.
    lam, lr, theta0 = 2.0, 0.1, 1.5
    heights = {}
    for reading, spacing in (("segment", "interior"), ("sampled", "interior"),
                             ("sampled", "inclusive")):
        model = Landscape(quad(torch.tensor([[lam]], dtype=torch.float64)), [theta0])
        walk = StepInterpolationCallback(Schedule.every(1), spacing=spacing,
                                         height_floor=reading)
        data = dummy_data()
        train(model, mean_out, data, torch.optim.SGD(model.parameters(), lr=lr), epochs=3,
              batch_size=len(data.x_train), callbacks=[walk], progress=False)
        heights[reading, spacing] = [r.height_above_floor for r in walk.records]
        assert all(r.valley_alpha == 1.0 for r in walk.records)     # the floor is unchanged
    for t in range(3):
        th = theta0 * 0.8**t
        big = lam * th**2 / 2
        assert heights["segment", "interior"][t] == pytest.approx(big * (1 - 0.64) / 2, rel=1e-12)
        assert heights["sampled", "interior"][t] == pytest.approx(
            big * (1 + 0.64 - 2 * (9 / 11) ** 2) / 2, rel=1e-12)
        # inclusive spacing: the 10 sampled points include the iterates, so the floor is θ_{t+1}
        assert heights["sampled", "inclusive"][t] == pytest.approx(big * (1 - 0.64) / 2,
                                                                   rel=1e-12)
    # the sampled floor may lie above both iterates: a negative height, kept as measured
    r = analyze_segment([0.0, 0.5, 1.0], [1.0, 1.5, 0.5], height_floor="interior")
    assert r.height_above_floor == pytest.approx(-0.75) and r.valley_alpha == 1.0
    assert analyze_segment([0.0, 0.5, 1.0], [1.0, 1.5, 0.5]).height_above_floor == 0.25
    with pytest.raises(ValueError, match="height_floor"):
        analyze_segment([0.0, 1.0], [1.0, 0.5], height_floor="interior")
    with pytest.raises(ValueError, match="height_floor"):
        StepInterpolationCallback(Schedule.every(1), height_floor="lowest")


def test_gd_in_a_2d_valley_floor_height_and_cosine_to_minus_one():
    # H = diag(λ1, λ2); lr λ1 = 1.99 bounces across the sharp direction while the flat one
    # decays by 0.9 per step, so the gradient cosine tends to −1. Along a segment the loss is
    # quadratic in α: floor α* = −θᵀHd / dᵀHd (clipped to [0, 1]), L* = L(θ + α* d); the parabola
    # refinement through the grid minimum and its neighbours recovers it exactly.
    h = torch.diag(torch.tensor([3.98, 0.2], dtype=torch.float64))
    lr = 0.5
    theta = torch.tensor([0.01, 2.0], dtype=torch.float64)
    model = Landscape(quad(h), theta)
    data = dummy_data()
    walk = StepInterpolationCallback(Schedule.every(1), refine=True)
    dyn = DynamicsCallback(Schedule.every(1))
    res = train(model, mean_out, data, torch.optim.SGD(model.parameters(), lr=lr), epochs=60,
                batch_size=len(data.x_train), callbacks=[walk, dyn], progress=False)
    step = torch.eye(2, dtype=torch.float64) - lr * h
    g_prev = None
    cos_exact = []
    for t, r in enumerate(walk.records):
        nxt = step @ theta
        d = nxt - theta
        a_star = min(1.0, max(0.0, float(-(theta @ h @ d) / (d @ h @ d))))  # on the segment
        pt = theta + a_star * d
        l_star = float(0.5 * pt @ h @ pt)
        assert r.valley_alpha == pytest.approx(a_star, abs=1e-9)
        assert r.valley_loss == pytest.approx(l_star, rel=1e-9, abs=1e-14)
        l0, l1 = float(0.5 * theta @ h @ theta), float(0.5 * nxt @ h @ nxt)
        assert r.height_above_floor == pytest.approx((l0 + l1 - 2 * l_star) / 2, rel=1e-9)
        assert not r.barrier  # a convex loss never has a barrier on a segment
        g = h @ theta
        if g_prev is not None:
            cos_exact.append(float(g_prev @ g / (g_prev.norm() * g.norm())))
        g_prev, theta = g, nxt
    assert 0 < sum(0 < r.valley_alpha < 1 for r in walk.records) < len(walk.records)
    cos = [v for _, v in res.history["grad_cosine"]]
    assert cos == pytest.approx(cos_exact, abs=1e-10)
    assert cos[0] > -0.5 and cos[-1] < -0.99


def test_double_well_1d_barrier_height():
    # L = (θ² − 1)²; θ from −1 to 1.2 crosses the barrier top θ = 0 (L = 1) at α = 1/2.2 = 5/11,
    # on the paper's grid (α = k/11): height = 1 − max(L(−1), L(1.2)) = 1 − 0.44² = 0.8064.
    model = Landscape(double_well_1d, [0.0])
    a, b = torch.tensor([-1.0], dtype=torch.float64), torch.tensor([1.2], dtype=torch.float64)
    r = step_interpolation(model, mean_out, (torch.zeros(3, 1), torch.zeros(3)), a, b)
    assert r.barrier
    assert r.barrier_height == pytest.approx(1 - 0.44**2, rel=1e-12)
    assert r.losses[5] == pytest.approx(1.0, rel=1e-12)
    assert r.valley_alpha == 0.0 and r.valley_loss == 0.0
    assert r.height_above_floor == pytest.approx(0.44**2 / 2, rel=1e-12)
    # staying inside one well: no barrier
    r2 = step_interpolation(model, mean_out, (torch.zeros(3, 1), torch.zeros(3)),
                            torch.tensor([0.8], dtype=torch.float64),
                            torch.tensor([1.3], dtype=torch.float64))
    assert not r2.barrier and r2.barrier_height == 0.0


def test_double_well_2d_trajectory_crossing():
    # L = (x² − 1)² + 2y²; (−1, 0.5) → (1, −0.5) passes the saddle (0, 0) (L = 1) at α = 1/2,
    # the maximum along the path; both ends have L = 0.5, so the barrier height is 0.5.
    model = Landscape(double_well_2d, [0.0, 0.0])
    pts = [torch.tensor(p, dtype=torch.float64) for p in ([-1.0, 0.5], [1.0, -0.5], [1.1, -0.2])]
    data = (torch.zeros(2, 1), torch.zeros(2))
    recs = [step_interpolation(model, mean_out, data, pts[i], pts[i + 1], 11,
                               spacing="inclusive", step=i, epoch=1)
            for i in range(2)]
    assert recs[0].barrier and recs[0].barrier_height == pytest.approx(0.5, rel=1e-12)
    assert not recs[1].barrier
    (row,) = summarize_epochs(recs)
    assert (row.epoch, row.steps, row.barriers) == (1, 2, 1)
    assert row.mean_barrier_height == pytest.approx(0.5)
    assert row.mean_height_above_floor == pytest.approx(
        (recs[0].height_above_floor + recs[1].height_above_floor) / 2)


def test_analyze_segment_tolerance_and_validation():
    a = segment_alphas(3)
    flat = torch.tensor([1.0, 1.0 + 1e-9, 1.0 - 1e-9, 1.0 + 2e-9, 1.0], dtype=torch.float64)
    assert not analyze_segment(a, flat).barrier            # round-off is not a barrier
    assert analyze_segment(a, flat, rtol=0.0).barrier
    assert not analyze_segment(a, flat, rtol=0.0, atol=3e-9).barrier
    # rtol is relative to the larger end loss: a bump of 5e-5 of it is round-off at any scale,
    # one of 2e-4 of it is a barrier at any scale
    for scale in (1e-3, 1.0, 1e3):
        bump = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.9], dtype=torch.float64) * scale
        bump[2] += 5e-5 * scale
        assert not analyze_segment(a, bump).barrier
        bump[2] += 1.5e-4 * scale
        r = analyze_segment(a, bump)
        assert r.barrier and r.barrier_height == pytest.approx(2e-4 * scale)
    assert analyze_segment(a, [1.0, 1.2, 0.5, 0.9, 0.8]).barrier_height == pytest.approx(0.2)
    r = analyze_segment(a, [1.0, 0.5, 0.2, 0.4, 0.8])
    assert (r.valley_alpha, r.valley_loss) == (0.5, 0.2)
    with pytest.raises(ValueError, match="alphas must increase"):
        analyze_segment([0.0, 0.7, 0.5, 1.0], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="matching"):
        analyze_segment(a, [1.0, 2.0])
    with pytest.raises(ValueError, match="num_points"):
        segment_alphas(0)
    with pytest.raises(ValueError, match="num_points"):
        segment_alphas(1, spacing="inclusive")
    epochs = summarize_epochs([StepInterpolation([0, 1], [1, 1], 1, 1, 0, 1, False, 0.0, 0.0,
                                                 epoch=e) for e in (2, 1, 2)])
    assert [(s.epoch, s.steps, s.barriers) for s in epochs] == [(1, 1, 0), (2, 2, 0)]
    assert math.isnan(epochs[0].mean_barrier_height)


def _bn_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(7, 3)).double()


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_batched_alpha_equals_naive_loop(bn_mode):
    model = _bn_mlp()
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        model(torch.randn(40, 5, dtype=torch.float64) * 2 + 1)
    x = torch.randn(30, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    batches = [(x[:17], y[:17]), (x[17:], y[17:])]
    loss_fn = nn.CrossEntropyLoss()
    a = params_vector(model)
    b = a + 0.3 * torch.randn_like(a)
    alphas = segment_alphas(7)
    buffers_before = {k: v.clone() for k, v in model.state_dict().items()}
    batched = segment_losses(model, loss_fn, batches, a, b, alphas, bn_mode=bn_mode,
                             vectorize=True, alpha_chunk=3)
    looped = segment_losses(model, loss_fn, batches, a, b, alphas, bn_mode=bn_mode,
                            vectorize=False)
    # naive reference: write the point into a copy of the model and evaluate it batch by batch
    naive = naive_segment_losses(model, loss_fn, batches, a, b, alphas, bn_mode)
    torch.testing.assert_close(batched, naive)
    torch.testing.assert_close(looped, batched)
    # the model itself is untouched: parameters, running statistics, train/eval flags
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, buffers_before[k])
    assert model.training and model[3].training
    with pytest.raises(ValueError, match="flat vector"):
        segment_losses(model, loss_fn, batches, a[:-1], b)


@pytest.mark.parametrize("vectorize", [False, True])
def test_train_mode_batch_norm_sees_the_same_batches_at_every_point(vectorize):
    """A zero-length segment has one loss. With batch statistics the loss depends on how the
    samples are batched: a shuffling DataLoader read once per point (the pointwise path, the
    CPU default) gave each point other batches, 0.76-0.81 here, fake barriers included."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(),
                          nn.Linear(4, 2)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (20,))
    loader = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=True)
    theta = params_vector(model)
    losses = segment_losses(model, nn.CrossEntropyLoss(), loader, theta, theta, 3,
                            bn_mode="train", vectorize=vectorize)
    assert torch.all(losses == losses[0])
