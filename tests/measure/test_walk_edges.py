"""Step interpolation (Xing et al. §3) at its edges, each against numbers worked out by hand:
the K points between the iterates of an integer ``alphas``, batch statistics in
``step_interpolation``, a segment along which the loss is linear, records without an epoch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sgdlab.measure.walk import (StepInterpolation, analyze_segment, segment_losses,
                                 step_interpolation, summarize_epochs)
from sgdlab.operators.params import params_vector
from sgdlab.testing import Quadratic


def _mean_out(out, y):
    return out.mean()


def test_an_integer_alphas_is_k_points_between_the_iterates_and_the_iterates():
    # θ from 1 to −1: α = k/4 (3 points between, as segment_alphas(3)) puts θ at
    # 1, 1/2, 0, −1/2, −1 and L = θ²/2 at 1/2, 1/8, 0, 1/8, 1/2
    data = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    a, b = (torch.tensor([v], dtype=torch.float64) for v in (1.0, -1.0))
    # L(θ) = θ²/2 for every sample (the data only sets the batch size)
    half_square = Quadratic(torch.ones(1, 1, dtype=torch.float64))
    got = segment_losses(half_square, _mean_out, data, a, b, 3)
    assert got.dtype == torch.float64
    assert got.tolist() == [0.5, 0.125, 0.0, 0.125, 0.5]


def test_step_interpolation_evaluates_batch_norm_in_the_mode_it_is_given():
    # z = BN(w x) on x = (1, 3), loss mean z². Batch statistics: mean 2w, biased variance w²,
    # so z = ±w / √(w² + ε) and L = w² / (w² + ε). Running statistics (0, 1): z = w x / √(1 + ε)
    # and L = 5 w² / (1 + ε).
    eps = 1e-5
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1, affine=False)).double()
    x = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    data = (x, torch.zeros(2, dtype=torch.float64))

    def loss_fn(out, y):
        return (out**2).mean()

    a, b = (torch.tensor([v], dtype=torch.float64) for v in (1.0, 2.0))
    w = [1.0, 1.5, 2.0]                                      # α = 0, 1/2, 1
    train = step_interpolation(model, loss_fn, data, a, b, 1, bn_mode="train")
    assert train.losses == pytest.approx([v * v / (v * v + eps) for v in w], rel=1e-12)
    evals = step_interpolation(model, loss_fn, data, a, b, 1)
    assert evals.losses == pytest.approx([5 * v * v / (1 + eps) for v in w], rel=1e-12)


def test_refining_a_linear_segment_keeps_the_lowest_grid_point():
    # three collinear losses: the fitted "parabola" has no vertex; the floor stays at the end
    r = analyze_segment([0.0, 0.5, 1.0], [2.0, 1.0, 0.0], refine=True)
    assert (r.valley_alpha, r.valley_loss) == (1.0, 0.0)
    assert r.height_above_floor == 1.0 and not r.barrier



@pytest.mark.parametrize("vertex", [0.05, 0.95])
def test_refining_a_floor_at_an_iterate_fits_the_three_points_at_that_end(vertex):
    # L(α) = (α − α*)² with α* next to an iterate: the lowest grid point is that iterate, and
    # the parabola through the three end points is L itself, so the floor is α* exactly
    a = [0.0, 0.25, 0.5, 0.75, 1.0]
    r = analyze_segment(a, [(x - vertex) ** 2 for x in a], refine=True)
    assert r.valley_alpha == pytest.approx(vertex, abs=1e-12)
    assert r.valley_loss == pytest.approx(0.0, abs=1e-12)
    assert r.height_above_floor == pytest.approx((vertex ** 2 + (1 - vertex) ** 2) / 2,
                                                 rel=1e-12)

def test_records_without_an_epoch_are_epoch_zero():
    def rec(epoch, height):
        return StepInterpolation([0.0, 1.0], [1.0, 1.0], 1.0, 1.0, 0.0, 1.0, False, 0.0,
                                 height, epoch=epoch)

    rows = summarize_epochs([rec(None, 1.0), rec(1, 2.0), rec(None, 3.0)])
    assert [(s.epoch, s.steps, s.mean_height_above_floor) for s in rows] == [(0, 2, 2.0),
                                                                           (1, 1, 2.0)]


def test_the_barrier_tolerance_is_relative_to_the_higher_end_point():
    # ends 1 and 0.5, a bump of 1.6: 1.6 > 1 + 0.5·|1| is a barrier at rtol = 0.5 (relative to
    # the peak, 1 + 0.5·1.6 = 1.8, it would not be), of height 0.6; 1.4 is not
    r = analyze_segment([0.0, 0.5, 1.0], [1.0, 1.6, 0.5], rtol=0.5)
    assert r.barrier and r.barrier_height == pytest.approx(0.6, rel=1e-15)
    assert not analyze_segment([0.0, 0.5, 1.0], [1.0, 1.4, 0.5], rtol=0.5).barrier


def test_the_barrier_tolerance_scales_with_the_size_of_a_negative_end_loss():
    # a loss below zero (a Gaussian negative log-likelihood): ends −1 and −2, so the tolerance
    # is 1e-4·|−1|; a bump of 5e-5 above −1 is round-off, one of 2e-4 a barrier of that height
    a = [0.0, 0.5, 1.0]
    assert not analyze_segment(a, [-1.0, -1.0 + 5e-5, -2.0]).barrier
    r = analyze_segment(a, [-1.0, -1.0 + 2e-4, -2.0])
    assert r.barrier and r.barrier_height == pytest.approx(2e-4, rel=1e-9)


def test_alphas_that_repeat_a_point_are_refused():
    # the segment's points must be distinct: α = 0.5 twice is no increasing grid
    with pytest.raises(ValueError, match="alphas must increase"):
        analyze_segment([0.0, 0.5, 0.5, 1.0], [1.0, 0.5, 0.5, 1.0])


def test_a_flat_segment_is_no_barrier_even_without_a_tolerance():
    # Xing et al.: a barrier is a point whose loss is *higher* than at both iterates; an
    # interior loss equal to the higher end is not, with rtol = atol = 0 as with the defaults
    r = analyze_segment([0.0, 0.5, 1.0], [1.0, 1.0, 1.0], rtol=0.0)
    assert not r.barrier and r.barrier_height == 0.0
    assert not analyze_segment([0.0, 0.5, 1.0], [0.5, 1.0, 1.0], rtol=0.0).barrier


def test_an_alpha_chunk_below_one_is_refused():
    model = Quadratic(torch.eye(1, dtype=torch.float64))
    data = (torch.zeros(2, 1, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    one = torch.ones(1, dtype=torch.float64)
    with pytest.raises(ValueError, match="alpha_chunk"):
        segment_losses(model, _mean_out, data, one, -one, 3, alpha_chunk=0)


def test_step_interpolation_with_inclusive_spacing_evaluates_k_points_with_the_iterates():
    # 4 points, the iterates among them: α = 0, 1/3, 2/3, 1 puts θ = 1 − 2α at 1, 1/3, −1/3,
    # −1 and L = θ²/2 at 1/2, 1/18, 1/18, 1/2 (the lowest first: α = 1/3)
    data = (torch.zeros(2, 1, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    a, b = (torch.tensor([v], dtype=torch.float64) for v in (1.0, -1.0))
    r = step_interpolation(Quadratic(torch.ones(1, 1, dtype=torch.float64)), _mean_out, data,
                           a, b, 4, spacing="inclusive")
    assert r.alphas == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0], abs=1e-15)
    assert r.losses == pytest.approx([0.5, 1 / 18, 1 / 18, 0.5], rel=1e-12)
    assert r.valley_alpha == pytest.approx(1 / 3, abs=1e-15)
    assert r.height_above_floor == pytest.approx(0.5 - 1 / 18, rel=1e-12)


def test_a_batch_of_one_is_no_problem_where_bn_mode_sets_the_statistics():
    # segment_losses evaluates in bn_mode's statistics, not the model's own train mode: a
    # batch of one sample is measured (the check of batches of one is for measurements that
    # run the model as it is), equal to the loss of the model in eval mode
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(),
                          nn.Linear(4, 2)).double()
    model[1].running_mean.uniform_(-0.5, 0.5)
    x, y = torch.randn(3, 3, dtype=torch.float64), torch.tensor([0, 1, 1])
    data, loss_fn = [(x[:2], y[:2]), (x[2:], y[2:])], nn.CrossEntropyLoss()
    theta = params_vector(model)
    losses = segment_losses(model, loss_fn, data, theta, theta, [0.0])
    assert model.training
    with torch.no_grad():
        model.eval()
        ref = loss_fn(model(x), y)
    assert float(losses[0]) == pytest.approx(float(ref), rel=1e-12)
