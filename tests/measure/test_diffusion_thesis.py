"""D(x) in the thesis' own terms (Lemma 6.3, eqs. (6.4)-(6.5)), written out literally on a tiny
float64 problem and compared with :func:`sgdlab.measure.noise.diffusion_matrix` and with the
variance of the mini-batch gradient over every possible mini-batch."""
import math

import pytest
import torch
from torch import nn

from sgdlab.measure.noise import diffusion_matrix, minibatch_noise_factor
from sgdlab.testing import (minibatch_covariance_enumerated, per_sample_gradients_loop,
                            tiny_classification, tiny_mlp)

LOSS = nn.CrossEntropyLoss()


@pytest.fixture(scope="module")
def grads():
    model = tiny_mlp(seed=3)
    data = tiny_classification(n=7, seed=4)
    return model, data, per_sample_gradients_loop(model, LOSS, data)


def _eq_6_4(g: torch.Tensor) -> torch.Tensor:
    """D_w = (1/N) Σ_k g_k g_kᵀ − g gᵀ, as printed."""
    gm = g.mean(0)
    return g.T @ g / len(g) - torch.outer(gm, gm)


def _eq_6_5(g: torch.Tensor, printed: bool) -> torch.Tensor:
    """D_wo = 1/(N−1) Σ_k g_k g_kᵀ − (1 ∓ 1/(N−1)) g gᵀ: ``printed`` takes the thesis' sign."""
    n, gm = len(g), g.mean(0)
    c = (1 - 1 / (n - 1)) if printed else (1 + 1 / (n - 1))
    return g.T @ g / (n - 1) - c * torch.outer(gm, gm)


def test_diffusion_matrix_is_eq_6_4(grads):
    model, data, g = grads
    torch.testing.assert_close(diffusion_matrix(model, LOSS, data).dense(), _eq_6_4(g))


@pytest.mark.parametrize("b", [1, 2, 3])
def test_with_replacement_variance_is_d_w_over_b(grads, b):
    """Lemma 6.3: var(∇f_B) = D_w / b with replacement (the 1/b goes into β⁻¹ = η/(2b))."""
    model, data, g = grads
    exact = minibatch_covariance_enumerated(g, b, replacement=True)
    torch.testing.assert_close(exact, _eq_6_4(g) / b)
    torch.testing.assert_close(diffusion_matrix(model, LOSS, data, b).dense(), exact)


@pytest.mark.parametrize("b", [2, 3, 5])
def test_without_replacement_needs_the_plus_sign_in_eq_6_5(grads, b):
    """var(∇f_B) = (1/b)(1 − b/N) D_wo holds with + 1/(N−1) (the proof's own algebra); the
    printed − 1/(N−1) is off by (2/(N−1)) g gᵀ."""
    model, data, g = grads
    n = len(g)
    exact = minibatch_covariance_enumerated(g, b, replacement=False)
    factor = (1 / b) * (1 - b / n)
    torch.testing.assert_close(exact, factor * _eq_6_5(g, printed=False))
    gap = factor * (_eq_6_5(g, printed=True) - _eq_6_5(g, printed=False))
    gm = g.mean(0)
    torch.testing.assert_close(gap, factor * 2 / (n - 1) * torch.outer(gm, gm))
    assert float(torch.linalg.matrix_norm(gap)) > 1e-6
    torch.testing.assert_close(diffusion_matrix(model, LOSS, data, b, replacement=False).dense(),
                               exact)
    assert math.isclose(minibatch_noise_factor(b, n, replacement=False),
                        factor * n / (n - 1))


def test_sgd_sde_without_replacement_is_eqs_6_5_and_6_7():
    """2β⁻¹D = η/S · (1 − S/N) · N/(N−1) Σ: the SDE's noise covariance over one unit of time
    equals η × the enumerated variance of the mini-batch gradient without replacement."""
    from sgdlab.landscapes.quadratic import Quadratic
    from sgdlab.landscapes.sde import sgd_sde

    q = Quadratic(torch.diag(torch.tensor([1.0, 0.5], dtype=torch.float64)), num_samples=6,
                  seed=2)
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    g = q.per_sample_grad(x)[0]
    for b in (2, 4):
        f = sgd_sde(q, lr=0.1, batch_size=b, replacement=False).factor(x)[0]
        exact = minibatch_covariance_enumerated(g, b, replacement=False)
        torch.testing.assert_close(f @ f.T, 0.1 * exact)


@pytest.mark.parametrize("replacement", [True, False])
def test_a_batch_size_that_is_no_whole_number_is_refused(replacement):
    # int() truncated it: a batch of 2.5 had the noise factor of a batch of 2 (0.5, not 0.4)
    assert minibatch_noise_factor(4.0, 10, replacement=replacement) == \
        minibatch_noise_factor(4, 10, replacement=replacement)
    for b, n in ((2.5, 10), (2, 10.5), ("2", 10)):
        with pytest.raises(ValueError, match=r"Invalid (batch size|number of samples) .* "
                                             r"\(a whole number of samples\)"):
            minibatch_noise_factor(b, n, replacement=replacement)
