"""Musso 2020's effective temperature (19) against the stationary laws it describes, in float64.

A dataset of three one-dimensional examples f_i(x) = ½k(x − c_i)² (Σ c_i = 0, so f = ½kx² plus
a constant) gives closed forms for everything: the per-example gradients k(x − c_i), the
diffusion matrix D̂ of eq. (24) by enumerating every mini-batch, the stationary law of the
continuous system (9)-(10) (a Lyapunov equation) and the stationary second moments of the
discrete rule (1)-(2) (a linear system in E x², E xv, E v², with ⟨α⟩ = ½ and ⟨α²⟩ = ⅓).
"""
import itertools

import numpy as np
import pytest
from scipy.linalg import solve_continuous_lyapunov

from sgdlab.measure.temperature import musso_temperature

K = 1.5                                  # f'' of every example and of f
CENTRES = np.array([-1.0, 0.25, 0.75])   # c_i, mean 0: f's minimum is at x = 0
S2 = K ** 2 * float(np.mean(CENTRES ** 2))   # per-example gradient variance Σ₁ (at any x)


def _d_hat(x: float, c: int) -> float:
    """D̂(x) = 3C Σ(x), Σ the first line of eq. (24) with eq. (5)'s batch means (its printed
    1/𝒩 is a factor C below a mean: docs/FIDELITY.md, Musso, "Eq. (24)'s prefactors"): the
    mean over the mini-batches Γ (here every C-tuple of examples, i.e. sampling with
    replacement) of ∫₀¹ dα [∇f − α ∇f_Γ]², ∇f_Γ = (1/C) Σ_{j∈Γ} ∇f_j (eq. 23); the α
    integral is exact: ∫₀¹ (g − αb)² dα = g² − g b + b²/3."""
    grads = K * (x - CENTRES)
    g = float(grads.mean())
    batches = [float(np.mean(grads[list(b)])) for b in
               itertools.product(range(len(CENTRES)), repeat=c)]
    sigma = float(np.mean([g * g - g * b + b * b / 3 for b in batches]))
    return 3 * c * sigma


def test_d_hat_of_eq_24_is_the_per_example_covariance_plus_c_times_the_mean_gradient_squared():
    """With replacement eq. (24) gives D̂ = Σ₁ + C ∇f ∇fᵀ exactly: Σ₁ at f's minimum, and a
    part growing with C away from it (docs/FIDELITY.md, Musso, "D̂ is an uncentred second
    moment that depends on C")."""
    for c in (1, 2, 3):
        assert _d_hat(0.0, c) == pytest.approx(S2, rel=1e-13)
        x = 0.4
        assert _d_hat(x, c) == pytest.approx(S2 + c * (K * x) ** 2, rel=1e-13)


@pytest.mark.parametrize("l, c, mu", [(0.05, 2, 0.0), (0.01, 3, 0.9), (0.2, 1, 0.5)])
def test_eq_19_is_the_temperature_of_the_stationary_law_of_eqs_9_10(l, c, mu):
    """dV = −((1 − μ)/l) V dt − ∇f dt + √(D/(3C)) dW, dX = V dt (eqs. 9-10) on f = ½ xᵀKx with
    the isotropic D of eq. (8): the stationary covariance (Lyapunov equation) is
    Cov X = T K⁻¹, Cov V = T I, i.e. P ∝ exp(−H/T) with H of eq. (14) (eq. 17) and
    T = l D / (6 C (1 − μ)) (eq. 19, with eq. (16)'s sign). A 2-D X with a non-diagonal K."""
    kmat = np.array([[2.0, 0.6], [0.6, 0.5]])
    d = _d_hat(0.0, c)
    n = len(kmat)
    a = np.block([[np.zeros((n, n)), np.eye(n)], [-kmat, -(1 - mu) / l * np.eye(n)]])
    q = np.zeros((2 * n, 2 * n))
    q[n:, n:] = d / (3 * c) * np.eye(n)
    cov = solve_continuous_lyapunov(a, -q)
    t = musso_temperature(l, c, mu, diffusion=d)
    np.testing.assert_allclose(cov[:n, :n], t * np.linalg.inv(kmat), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(cov[n:, n:], t * np.eye(n), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(cov[:n, n:], 0.0, atol=1e-12 * t)
    # eq. (3) read with dt = l gives force ∇f/l and noise D/(3Cl) per unit time instead
    # (docs/FIDELITY.md, "The time scale of eq. (9)"): the weights keep T, the velocity T/l
    a[n:, :n] = -kmat / l
    q[n:, n:] /= l
    cov = solve_continuous_lyapunov(a, -q)
    np.testing.assert_allclose(cov[:n, :n], t * np.linalg.inv(kmat), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(cov[n:, n:], t / l * np.eye(n), rtol=1e-10, atol=1e-15)
    # the "mean-lr" convention reads its lr as ⟨α⟩ l = l/2: the same T
    assert musso_temperature(l / 2, c, mu, diffusion=d, convention="mean-lr") == \
        pytest.approx(t, rel=1e-15)


def _discrete_stationary_x2(l: float, c: int, mu: float, e1: float, e2: float) -> float:
    """E x² in the stationary state of v ← μv − α ∇f_Γ(x), x ← x + l v (eqs. 1-2) on the
    dataset above, α independent of the batch with ⟨α⟩ = e1, ⟨α²⟩ = e2, Γ drawn with
    replacement: ∇f_Γ = kx + ζ, E ζ = 0, E ζ² = Σ₁/C. The moments m = (E x², E xv, E v²)
    follow m ← M m + b; the fixed point solves (I − M) m = b."""
    k, s2 = K, S2 / c
    m = np.array([
        [1 - 2 * l * k * e1 + (l * k) ** 2 * e2, 2 * l * mu * (1 - l * k * e1), (l * mu) ** 2],
        [-k * (e1 - l * k * e2), mu * (1 - l * k * e1) - l * mu * k * e1, l * mu ** 2],
        [k * k * e2, -2 * mu * k * e1, mu ** 2],
    ])
    b = np.array([l * l * e2 * s2, l * e2 * s2, e2 * s2])
    return float(np.linalg.solve(np.eye(3) - m, b)[0])


@pytest.mark.parametrize("c, mu", [(2, 0.0), (3, 0.9)])
def test_the_discrete_rule_sits_at_twice_eq_19s_temperature_and_the_constant_rule_at_three_times(
        c, mu):
    """At small l the weights of the random rule (α ~ U[0, 1]: ⟨α⟩ = ½, ⟨α²⟩ = ⅓, eq. 25) have
    E x² → 2T/k, with T of eq. (19) and D = D̂ at the minimum (eq. 24): ξ of eq. (6) has mean
    ½∇f, which halves the drift that eq. (9) keeps whole; a constant rate (α ≡ 1) gives
    3T/k, its noise ⟨α²⟩ = 1 against eq. (24)'s ⅓; α ~ U[0, 2] (the `mean` reading's random
    rule: ⟨α⟩ = 1, ⟨α²⟩ = 4/3) gives 4T/k, twice eq. (19) at its maximal rate 2l
    (docs/FIDELITY.md, Musso: "ξ does not have zero mean", "No reading keeps l. 142,
    l. 173 and l. 188 together"). Corrections are O(l)."""
    l = 1e-6
    t = musso_temperature(l, c, mu, diffusion=_d_hat(0.0, c))
    random_rule = _discrete_stationary_x2(l, c, mu, 0.5, 1 / 3)
    constant_rule = _discrete_stationary_x2(l, c, mu, 1.0, 1.0)
    assert random_rule / (t / K) == pytest.approx(2.0, rel=1e-4)
    assert constant_rule / (t / K) == pytest.approx(3.0, rel=1e-4)
    mean_rule = _discrete_stationary_x2(l, c, mu, 1.0, 4 / 3)
    assert mean_rule / (t / K) == pytest.approx(4.0, rel=1e-4)
    # the hand-derived moment system against the step's own matrices: z = (x, v)
    ll = 0.05
    x2 = _stationary_x2_of_step(lambda al: np.array([[1 - ll * al * K, ll * mu], [-al * K, mu]]),
                                lambda al: np.array([-ll * al, -al]), c)
    assert x2 == pytest.approx(_discrete_stationary_x2(ll, c, mu, 0.5, 1 / 3), rel=1e-12)


def _stationary_x2_of_step(a, b, c: int) -> float:
    """E x² in the stationary state of z ← A(α) z + b(α) ζ (z = (x, ·), α ~ U[0, 1], ζ of
    variance Σ₁/C): vec Cov z = E[A ⊗ A] vec Cov z + E[b ⊗ b] Σ₁/C, with E over α by
    Gauss-Legendre on [0, 1] (two nodes: exact for A and b of degree 1 in α)."""
    nodes, weights = np.polynomial.legendre.leggauss(2)
    nodes, weights = (nodes + 1) / 2, weights / 2
    a_kron = sum(w * np.kron(*[a(al)] * 2) for al, w in zip(nodes, weights))
    b_kron = sum(w * np.kron(*[b(al)] * 2) for al, w in zip(nodes, weights))
    return float(np.linalg.solve(np.eye(4) - a_kron, b_kron * S2 / c)[0])


def _nesterov_stationary_x2(l: float, c: int, mu: float) -> float:
    """E x² in the stationary state of torch's Nesterov form on the randomly scaled gradient
    (``RandomLRSGD(nesterov=True)``): g = α(kx + ζ), b ← μb + g, x ← x − l(g + μb), α ~ U[0, 1].
    In z = (x, b): z ← A(α) z + B(α) ζ with A = [[1 − lαk(1 + μ), −lμ²], [αk, μ]] and
    B = (−lα(1 + μ), α)."""
    return _stationary_x2_of_step(
        lambda al: np.array([[1 - l * al * K * (1 + mu), -l * mu * mu], [al * K, mu]]),
        lambda al: np.array([-l * al * (1 + mu), al]), c)


@pytest.mark.parametrize("c, mu", [(2, 0.75), (1, 0.5), (3, 0.9)])
def test_torchs_nesterov_form_keeps_eq_19s_temperature_at_small_l(c, mu):
    """Eq. (19) is derived for the heavy-ball rule (1)-(2); the figures train with "Nesterov
    acceleration", which sgdlab runs in torch's form (docs/FIDELITY.md, Musso, "Nesterov").
    At small l its weights sit where the heavy-ball rule's do, E x² → 2T/k with α ~ U[0, 1],
    so a pair at equal T (19) such as Fig. 6 left's (C = 60, μ = 0.75 against C = 30,
    μ = 0.5; here C = 2 and 1) stays at equal E x². The two rules part at O(l)."""
    l = 1e-6
    t = musso_temperature(l, c, mu, diffusion=_d_hat(0.0, c))
    assert _nesterov_stationary_x2(l, c, mu) / (t / K) == pytest.approx(2.0, rel=1e-4)
    if (c, mu) == (2, 0.75):        # Fig. 6 left's pair, at C = 2 and 1
        assert _nesterov_stationary_x2(l, 2, 0.75) == \
            pytest.approx(_nesterov_stationary_x2(l, 1, 0.5), rel=1e-4)
    # at a larger l the forms differ: the comparison has something to find
    ll = 0.05
    ratio = _nesterov_stationary_x2(ll, c, mu) / _discrete_stationary_x2(ll, c, mu, 0.5, 1 / 3)
    assert abs(ratio - 1) > 1e-4
