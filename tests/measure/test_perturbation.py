"""Thesis Figs. 2.3b and 2.4 measurements: min |gradient coordinate| (with and without an added
field) and the alignment |hᵀx|, against the same numbers computed by hand in float64."""
import math

import numpy as np
import pytest
import torch

from sgdlab.measure.perturbation import (min_abs_coordinates, overall_minimum,
                                         perturbation_alignment, zero_fraction)


def _tensors(seed=0, shapes=((3, 4), (4,), (2, 3))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]


def test_min_abs_is_the_per_tensor_minimum_of_the_hand_gradient():
    grads = _tensors()
    grads[1][2] = -1e-9          # the smallest |coordinate|, negative
    got = min_abs_coordinates(grads)
    want = [min(abs(v) for v in g.reshape(-1).tolist()) for g in grads]
    assert got.dtype == torch.float64 and got.tolist() == want
    assert float(got.min()) == 1e-9


def test_min_abs_with_a_field_adds_it_coordinate_by_coordinate_before_the_absolute_value():
    grads = _tensors()
    flat = torch.cat([g.reshape(-1) for g in grads])
    added = -flat.clone()
    added[5] += 0.25            # every coordinate cancels but one: each minimum is 0
    got = min_abs_coordinates(grads, added)
    assert got.tolist() == [0.0, 0.0, 0.0]
    field = _tensors(seed=3, shapes=((22,),))[0]
    got = min_abs_coordinates(grads, 0.5 * field)
    sums = (flat + 0.5 * field).tolist()
    want = [min(abs(v) for v in sums[a:b]) for a, b in ((0, 12), (12, 16), (16, 22))]
    assert got.tolist() == want


def test_nonzero_leaves_out_the_coordinates_where_the_gradient_is_exactly_zero():
    """A dead ReLU unit's weights have ∇f = 0 exactly: counted, they make every minimum 0."""
    grads = _tensors()
    grads[0][1] = 0.0
    grads[0][2, 3] = 0.0
    grads[1].zero_()
    got = min_abs_coordinates(grads)
    assert got.tolist()[:2] == [0.0, 0.0]
    nz = min_abs_coordinates(grads, nonzero=True)
    want0 = min(abs(v) for v in grads[0].reshape(-1).tolist() if v != 0)
    assert nz[0] == want0 and math.isnan(nz[1])
    assert nz[2] == got[2]
    assert overall_minimum(nz) == min(want0, float(got[2]))
    assert math.isnan(overall_minimum(torch.tensor([math.nan])))
    assert zero_fraction(grads) == (4 + 1 + 4) / 22
    # with a field the zero coordinates are still left out: they are the loss gradient's
    field = torch.full((22,), 10.0, dtype=torch.float64)
    nzf = min_abs_coordinates(grads, field, nonzero=True)
    want = min(abs(v + 10.0) for v in grads[0].reshape(-1).tolist() if v != 0)
    assert nzf[0] == want and math.isnan(nzf[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_nonzero_minimum_in_every_float_width_subnormals_signed_zeros_and_nan(dtype):
    """The non-zero minimum is taken on the bit patterns: every float width, the smallest
    subnormal, −0.0 (a zero), a tensor of zeros only (NaN), one NaN or inf (NaN, as the
    minimum over all coordinates gives)."""
    tiny = torch.finfo(dtype).smallest_normal / 4           # a subnormal
    grads = [torch.tensor([0.0, -0.0, -3.0, 2.0, -tiny, 0.5], dtype=dtype),
             torch.tensor([-0.0, 0.0], dtype=dtype),
             torch.tensor([1.5, math.nan, 0.0, 0.25], dtype=dtype),
             torch.tensor([math.inf, 0.0, 0.75], dtype=dtype),
             torch.tensor([-math.inf, 0.0], dtype=dtype)]
    got = min_abs_coordinates(grads, nonzero=True)
    want = min(abs(v) for v in grads[0].tolist() if v != 0)
    assert want > 0 and got[0].item() == want
    assert all(math.isnan(v) for v in got[1:3].tolist())
    assert got[3].item() == 0.75 and math.isnan(got[4].item())
    # the same as a masked minimum on random gradients with exact zeros
    g = torch.Generator().manual_seed(1)
    rand = [torch.randn(s, generator=g).to(dtype) for s in ((40, 7), (13,), (3, 3, 3))]
    for r in rand:
        r[r.abs() < 0.7] = 0
    want = [float(r[r != 0].abs().min()) for r in rand]
    assert min_abs_coordinates(rand, nonzero=True).tolist() == want


def test_min_abs_refuses_a_field_of_the_wrong_size_and_empty_input():
    with pytest.raises(ValueError, match="expected a flat vector of 22 entries"):
        min_abs_coordinates(_tensors(), torch.zeros(21, dtype=torch.float64))
    with pytest.raises(ValueError, match="no gradients"):
        min_abs_coordinates([])
    with pytest.raises(ValueError, match="empty gradient tensor"):
        min_abs_coordinates([torch.zeros(0)])


def test_alignment_is_the_dot_product_by_hand_raw_and_normalised():
    w = _tensors(seed=1)
    h = _tensors(seed=2, shapes=((22,),))[0]
    x = np.concatenate([t.reshape(-1).numpy() for t in w])
    hn = h.numpy()
    dot = abs(float(np.dot(x, hn)))
    assert perturbation_alignment(w, h, normalise=False) == pytest.approx(dot, rel=1e-14)
    cos = dot / (np.linalg.norm(x) * np.linalg.norm(hn))
    assert perturbation_alignment(w, h) == pytest.approx(cos, rel=1e-14)
    # the sign does not matter, the scale of h only the raw value
    assert perturbation_alignment(w, -3 * h) == pytest.approx(cos, rel=1e-14)
    assert perturbation_alignment(w, -3 * h, normalise=False) == pytest.approx(3 * dot,
                                                                               rel=1e-14)
    # weights along h: cosine 1
    assert perturbation_alignment([h.view(2, 11)], h) == pytest.approx(1.0, abs=1e-15)
    assert math.isnan(perturbation_alignment([torch.zeros(22, dtype=torch.float64)], h))
    with pytest.raises(ValueError, match="direction has shape"):
        perturbation_alignment(w, h[:-1])


def test_sums_are_in_float64_whatever_the_gradients_and_weights_dtype():
    # a float32 gradient of 1 plus a float64 field of −1 + 2⁻⁴⁰: in float32 the sum is 0
    g = [torch.ones(1, dtype=torch.float32), torch.full((2,), 3.0, dtype=torch.float32)]
    field = torch.tensor([-1.0 + 2.0 ** -40, 0.0, 0.0], dtype=torch.float64)
    assert min_abs_coordinates(g, field).tolist() == [2.0 ** -40, 3.0]
    # weights (2²⁴, 1) in float32: hᵀx = 2²⁴ + 1 for h = (1, 1), which float32 rounds to 2²⁴
    w = [torch.tensor([2.0 ** 24, 1.0], dtype=torch.float32)]
    h = torch.ones(2, dtype=torch.float64)
    assert perturbation_alignment(w, h, normalise=False) == 2.0 ** 24 + 1


def test_zero_fraction_counts_every_tensor_the_last_included():
    grads = [torch.tensor([0.0, 1.0]), torch.tensor([[2.0, 0.0, 0.0]])]
    assert zero_fraction(grads) == 3 / 5


def test_a_field_of_the_right_size_but_not_flat_is_refused():
    with pytest.raises(ValueError, match=r"shape \(2, 11\): expected a flat vector"):
        min_abs_coordinates(_tensors(), torch.zeros(2, 11, dtype=torch.float64))
