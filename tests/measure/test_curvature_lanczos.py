"""Lanczos / power iteration / Hessian eigenpairs against dense float64 references."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.measure.curvature import (
    hessian_eigenpairs, hessian_top_eigenvalue, lanczos, lanczos_decomposition, power_iteration,
)
from sgdlab.measure.curvature.lanczos import convergence_warnings_named
from sgdlab.measure.curvature.slq import lanczos_lockstep
from sgdlab.operators import DenseOperator, HessianOperator, LinearOperator
from sgdlab.testing import dense_hessian_reference, tiny_classification, tiny_mlp


def _sym(d, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return (a + a.T) / 2 + shift * torch.eye(d, dtype=torch.float64)


def _with_spectrum(lam, seed=0):
    q, _ = torch.linalg.qr(torch.randn(len(lam), len(lam), dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(seed)))
    return (q * lam) @ q.T


def _near_zero_cluster(d):
    """0, 0, 0, 1e-12, 3e-11, 1e-10 below d − 6 eigenvalues evenly spread over [0.5, 10]."""
    return torch.cat([torch.zeros(3, dtype=torch.float64),
                      torch.tensor([1e-12, 3e-11, 1e-10], dtype=torch.float64),
                      torch.linspace(0.5, 10, d - 6, dtype=torch.float64)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_near_zero_cluster_at_the_smallest_end_is_counted_once_per_eigenvalue(seed):
    """A PSD matrix with three exact zeros and eigenvalues 1e-12, 3e-11, 1e-10 below a bulk
    in [0.5, 10]: over the whole space (num_iter = d, tol = 0) the 8 smallest come out as
    eigvalsh gives them, each cluster member once. Without the full re-orthogonalisation the
    basis loses orthogonality once a cluster value converges: 0.5 came out twice (a ghost)
    and two zeros were missing."""
    d = 40
    lam = _near_zero_cluster(d)
    a = _with_spectrum(lam, seed)
    vals, vecs = lanczos(a, 8, which="smallest", num_iter=d, tol=0,
                         generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(vals, torch.linalg.eigvalsh(a)[:8], rtol=0, atol=1e-13)
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(8, dtype=torch.float64), rtol=0,
                               atol=1e-12)


def _expected(ref, k, which):
    return {"largest": ref.flip(0)[:k], "smallest": ref[:k],
            "both": torch.cat([ref.flip(0)[:k], ref[:k]]),
            "magnitude": ref[torch.argsort(ref.abs(), descending=True)[:k]]}[which]


@pytest.mark.parametrize("which,k", [("largest", 3), ("magnitude", 3), ("both", 3),
                                     ("smallest", 3)])
def test_check_copies_finds_a_repeated_eigenvalue_one_start_vector_misses(which, k):
    """5, 4, 4, 3.9 over a bulk in [-2.9, 2.9] (d = 100; mirrored by -1 for "smallest", at
    both ends for "both"): one start vector's Krylov space holds one direction of the
    eigenspace of 4, so the 3.9 came in its place; the deflated check finds the second 4."""
    top = torch.tensor([5.0, 4.0, 4.0, 3.9], dtype=torch.float64)
    ends = torch.cat([top, -top]) if which == "both" else top
    lam = torch.cat([ends, torch.linspace(-2.9, 2.9, 100 - len(ends), dtype=torch.float64)])
    lam = -lam if which == "smallest" else lam
    a = _with_spectrum(lam)
    expect = _expected(torch.linalg.eigvalsh(a), k, which)
    plain, _ = lanczos(a, k, which=which, generator=torch.Generator().manual_seed(0))
    assert (plain - expect).abs().max() > 0.05
    vals, vecs = lanczos(a, k, which=which, check_copies=True,
                         generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vals, expect, rtol=0, atol=1e-8)
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(len(vals), dtype=torch.float64),
                               rtol=0, atol=1e-10)
    assert (a @ vecs - vecs * vals).norm(dim=0).max() < 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_check_copies_counts_each_member_of_a_near_zero_cluster(seed):
    """The cluster 0, 0, 0, 1e-12, 3e-11, 1e-10 below 34 eigenvalues in [0.5, 10], 8
    smallest at the default tol: two cluster values, then 0.5, 0.79, ... without the check;
    with it the 8 smallest to the tolerance (1e-6 of the spectral radius 10)."""
    d = 40
    lam = _near_zero_cluster(d)
    a = _with_spectrum(lam, seed)
    vals, vecs = lanczos(a, 8, which="smallest", check_copies=True,
                         generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(vals, torch.linalg.eigvalsh(a)[:8], rtol=0, atol=1e-5)
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(8, dtype=torch.float64), rtol=0,
                               atol=1e-10)


@pytest.mark.parametrize("which", ["smallest", "both"])
def test_check_copies_over_the_whole_space_stays_out_of_the_pairs_found(which):
    """tol = 0 runs every step: the main run spans the whole space (d = 40) and finds the
    near-zero cluster exactly; the check's run spans the d − 8 dimensions left and no more
    (72 products). Restarts drawn beyond them took the pairs found, eigenvalue 0 of the
    deflated operator, for cluster members: 0.79 off, the vectors not orthogonal, 560
    products."""
    d, k = 40, (8 if which == "smallest" else 4)
    lam = _near_zero_cluster(d)
    op = DenseOperator(_with_spectrum(lam))
    vals, vecs = lanczos(op, k, which=which, tol=0, check_copies=True,
                         generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vals, _expected(torch.linalg.eigvalsh(op.matrix), k, which),
                               rtol=0, atol=1e-13)
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(len(vals), dtype=torch.float64),
                               rtol=0, atol=1e-12)
    assert op.num_matvecs == d + (d - 8)


@pytest.mark.parametrize("which", ["largest", "smallest", "both", "magnitude"])
@pytest.mark.parametrize("k", [1, 3])
def test_check_copies_leaves_a_distinct_spectrum_as_it_was_for_one_more_run(which, k):
    """Outliers 12, 9, 7.5, 6, 5.5 over a bulk in [-2, 5] (d = 300): the same values as
    without the check, whose run to the extreme of the rest at most about doubles the
    products (15 -> 32 for k = 1, 23 -> 48 for k = 3; exactly twice at the smallest end,
    where both runs stop at num_iter inside the bulk)."""
    lam = torch.cat([torch.tensor([12.0, 9.0, 7.5, 6.0, 5.5], dtype=torch.float64),
                     torch.linspace(-2, 5, 295, dtype=torch.float64)])
    a = _with_spectrum(lam, 3)
    plain_op, checked_op = DenseOperator(a), DenseOperator(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the bulk end converges slowly
        plain, _ = lanczos(plain_op, k, which=which, generator=torch.Generator().manual_seed(0))
        checked, vecs = lanczos(checked_op, k, which=which, check_copies=True,
                                generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(checked, plain, rtol=0, atol=1e-12)
    assert plain_op.num_matvecs < checked_op.num_matvecs <= 2.2 * plain_op.num_matvecs
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(len(checked), dtype=torch.float64),
                               rtol=0, atol=1e-10)


def test_check_copies_must_be_a_bool():
    """The shared ``check_flag``: the refusal reads as the other flags' do, and numpy's bool
    is a flag (refused before)."""
    with pytest.raises(ValueError, match="^check_copies must be True or False, got 'yes'$"):
        lanczos(_sym(10), 1, check_copies="yes")
    a = _sym(10)
    for flag in (False, True):
        gen = [torch.Generator().manual_seed(0) for _ in range(2)]
        torch.testing.assert_close(
            lanczos(a, 2, check_copies=np.bool_(flag), generator=gen[0])[0],
            lanczos(a, 2, check_copies=flag, generator=gen[1])[0], rtol=0, atol=0)


@pytest.mark.parametrize("which", ["largest", "smallest", "both", "magnitude"])
def test_lanczos_matches_eigh(which):
    a = _sym(60, seed=3)
    k = 3
    vals, vecs = lanczos(a, k, which=which, num_iter=60, tol=1e-10,
                         generator=torch.Generator().manual_seed(0))
    expect = _expected(torch.linalg.eigvalsh(a), k, which)
    torch.testing.assert_close(vals, expect, rtol=1e-9, atol=1e-9)
    # eigenvector residuals
    r = a @ vecs - vecs * vals
    assert r.norm(dim=0).max() < 1e-7


def test_lanczos_converges_early_with_tolerance_and_recovers_multiplicity():
    # a spectrum with a repeated top eigenvalue: plain Lanczos finds each distinct value once;
    # the breakdown restart must recover the multiplicity.
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=torch.Generator().manual_seed(1),
                                       dtype=torch.float64))
    lam = torch.tensor([5.0, 5.0, 3.0] + [0.0] * 27, dtype=torch.float64)
    a = q @ torch.diag(lam) @ q.T
    vals, vecs = lanczos(a, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vals, lam[:3], atol=1e-8, rtol=0)
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(3, dtype=torch.float64), atol=1e-8, rtol=0)


def test_lanczos_float32_and_bad_input():
    a = _sym(40, seed=5).float()
    vals, _ = lanczos(a, 2, tol=1e-5, generator=torch.Generator().manual_seed(0))
    assert vals.dtype == torch.float32
    torch.testing.assert_close(vals.double(), torch.linalg.eigvalsh(a.double()).flip(0)[:2],
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="which"):
        lanczos(a, 1, which="top")
    with pytest.raises(ValueError, match="k="):
        lanczos(a, 0)


@pytest.mark.parametrize("tol", ["1e-3", -1e-3, math.nan, math.inf, True, np.bool_(False),
                                 np.int64(-1)])
def test_lanczos_refuses_a_tolerance_that_is_not_a_finite_number_at_least_zero(tol):
    # a string failed at the comparison; NaN never stopped early and inf stopped at once
    a = _sym(8, seed=1)
    with pytest.raises(ValueError, match=r"^Invalid tol=.* \(a finite number >= 0; 0 runs "
                                         r"num_iter steps\)$"):
        lanczos(a, 1, tol=tol)
    # numpy's floats are tolerances
    vals, _ = lanczos(a, 1, tol=np.float32(1e-8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vals[0], torch.linalg.eigvalsh(a)[-1], rtol=0, atol=1e-7)


def test_lanczos_takes_numpy_ints_as_tolerances_as_it_takes_pythons():
    # np.int64(0) was refused while 0 and np.float64(0) were taken
    a = _sym(8, seed=1)
    runs = [lanczos(a, 1, tol=tol, num_iter=5, generator=torch.Generator().manual_seed(0))[0]
            for tol in (0, np.int64(0), np.int32(0))]
    for vals in runs[1:]:
        assert torch.equal(vals, runs[0])


def test_power_iteration_top_eigenvalue():
    a = _sym(20, seed=2, shift=8.0)  # positive shift: largest-magnitude = largest
    lam, v, its = power_iteration(a, num_iter=2000, tol=1e-10,
                                  generator=torch.Generator().manual_seed(0))
    assert abs(lam - float(torch.linalg.eigvalsh(a)[-1])) < 1e-6
    assert its > 1


def test_power_iteration_runs_num_iter_products_and_refuses_none():
    """tol = 0 never stops early: after k products the estimate is the Rayleigh quotient of
    the (k − 1)-th iterate from the generator's Gaussian start; no products is refused."""
    a = torch.diag(torch.tensor([3.0, 1.0, -0.5], dtype=torch.float64))
    v = torch.randn(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = v / v.norm()
    for k in (1, 2, 5):
        lam, _, its = power_iteration(a, num_iter=k, tol=0.0,
                                      generator=torch.Generator().manual_seed(0))
        assert its == k and lam == pytest.approx(float(v @ a @ v), rel=1e-12)
        for _ in range(1 if k == 1 else 3):
            v = a @ v / (a @ v).norm()
    with pytest.raises(ValueError, match="num_iter"):
        power_iteration(a, num_iter=0)
    # Lanczos' rule for its tolerance: NaN ran every product, inf stopped at the second
    for bad in (math.nan, math.inf, -1e-3, True, "0"):
        with pytest.raises(ValueError, match=r"^Invalid tol=.* \(a finite number >= 0; 0 runs "):
            power_iteration(a, num_iter=5, tol=bad)


def test_hessian_eigenpairs_vs_dense_hessian():
    model = tiny_mlp(3, 5, 3)
    data = tiny_classification(16, 3, 3)
    loss_fn = nn.CrossEntropyLoss()
    h = dense_hessian_reference(model, loss_fn, data)
    ref = torch.linalg.eigvalsh(h)
    vals, vecs = hessian_eigenpairs(model, loss_fn, data, k=2, which="both", tol=0,
                                    num_iter=h.shape[0])
    torch.testing.assert_close(vals, torch.cat([ref.flip(0)[:2], ref[:2]]), rtol=1e-8, atol=1e-9)
    top = hessian_top_eigenvalue(model, loss_fn, data, tol=1e-10)
    assert abs(top - float(ref[-1])) < 1e-8
    # the operator itself agrees with the dense Hessian (also streaming over a loader)
    loader = [(data[0][:7], data[1][:7]), (data[0][7:], data[1][7:])]
    torch.testing.assert_close(HessianOperator(model, loss_fn, loader).to_dense(), h)


def test_ritz_change_criterion_stops_earlier_but_is_close():
    # Hessian-like spectrum: a few outliers above a bulk
    q, _ = torch.linalg.qr(torch.randn(200, 200, generator=torch.Generator().manual_seed(7),
                                       dtype=torch.float64))
    lam = torch.cat([torch.tensor([10.0, 6.0], dtype=torch.float64),
                     torch.linspace(-1, 4, 198, dtype=torch.float64)])
    a = q @ torch.diag(lam) @ q.T
    ref = 10.0
    loose, tight = DenseOperator(a), DenseOperator(a)
    v1, _ = lanczos(loose, 1, tol=1e-3, criterion="ritz_change",
                    generator=torch.Generator().manual_seed(0))
    v2, _ = lanczos(tight, 1, tol=1e-3, generator=torch.Generator().manual_seed(0))
    assert loose.num_matvecs <= tight.num_matvecs
    assert abs(float(v1[0]) - ref) <= 1e-2 * abs(ref)
    assert abs(float(v2[0]) - ref) <= 1e-5 * abs(ref)
    with pytest.raises(ValueError, match="criterion"):
        lanczos(a, 1, criterion="energy")


@pytest.mark.parametrize("k", [1, 3])
def test_error_bound_criterion_meets_its_eigenvalue_tolerance_in_fewer_steps(k):
    """min(r, r²/gap) ≤ tol·|θ|: the eigenvalues reach tol with fewer products than the residual
    rule at the same tol (which bounds r itself)."""
    q, _ = torch.linalg.qr(torch.randn(300, 300, generator=torch.Generator().manual_seed(3),
                                       dtype=torch.float64))
    lam = torch.cat([torch.tensor([12.0, 9.0, 7.5], dtype=torch.float64),
                     torch.linspace(-2, 5, 297, dtype=torch.float64)])
    a = q @ torch.diag(lam) @ q.T
    tol = 1e-6
    bound_op, resid_op = DenseOperator(a), DenseOperator(a)
    v1, _ = lanczos(bound_op, k, tol=tol, criterion="error_bound",
                    generator=torch.Generator().manual_seed(0))
    v2, _ = lanczos(resid_op, k, tol=tol, generator=torch.Generator().manual_seed(0))
    assert bound_op.num_matvecs < resid_op.num_matvecs
    assert ((v1 - lam[:k]).abs() <= tol * lam[:k]).all()
    assert ((v2 - lam[:k]).abs() <= tol * lam[:k]).all()


class _Diagonal(LinearOperator):
    """diag(λ) without a dense matrix (large d for the recurrence's rounding behaviour)."""

    def __init__(self, lam: torch.Tensor):
        super().__init__(len(lam), lam.dtype, lam.device)
        self.lam = lam

    def _matvec(self, v):
        return self.lam * v

    def _matmat(self, m):
        return self.lam[:, None] * m


def _exact_moments(lam: torch.Tensor, v: torch.Tensor, powers) -> list[float]:
    w = v.double() ** 2 / (v.double() ** 2).sum()
    return [float((w * lam.double() ** p).sum()) for p in powers]


def test_recurrences_run_through_a_bulk_far_below_the_top_eigenvalue():
    """A Hessian-like spectrum in float32 (d = 250,000): ten outliers 5-50 over a bulk of width
    ~0.01, where the Lanczos β sit ~1e-3 below the top eigenvalue. A breakdown threshold grown
    with √d (10·eps·√d·50 ≈ 0.03) stopped every probe after 13 of 30 steps there. Every step is
    run, and the quadrature reproduces each probe's exact moments vᵀλᵖv / vᵀv."""
    g = torch.Generator().manual_seed(0)
    lam = torch.randn(250_000, generator=g, dtype=torch.float64) * 0.01
    lam[:10] = torch.linspace(5, 50, 10, dtype=torch.float64)
    op = _Diagonal(lam.float())
    starts = torch.randn(250_000, 2, generator=g)
    results = lanczos_lockstep(op, starts, 30)
    single = lanczos_decomposition(op, 30, v0=starts[:, 0], restart_on_breakdown=False,
                                   keep_basis=False)
    assert [len(r.alpha) for r in results] == [30, 30] and len(single.alpha) == 30
    torch.testing.assert_close(single.alpha, results[0].alpha, rtol=1e-5, atol=1e-6)
    for r, v in zip(results, starts.T):
        theta, s = torch.linalg.eigh(r.tridiagonal())
        quad = [float((s[0] ** 2 * theta ** p).sum()) for p in (1, 2, 3)]
        assert quad == pytest.approx(_exact_moments(lam, v, (1, 2, 3)), rel=1e-4)
        assert float(theta[-1]) == pytest.approx(50.0, rel=1e-4)


def test_a_true_breakdown_in_float32_stops_slq_and_restarts_lanczos():
    """Three distinct eigenvalues: the Krylov space is invariant after three steps; SLQ's
    recurrences stop there, Lanczos restarts (a zero β) from a vector orthogonal to the basis."""
    lam = torch.tensor([1.0, 2.0, 3.0]).repeat(5_000)
    op = _Diagonal(lam)
    starts = torch.randn(15_000, 2, generator=torch.Generator().manual_seed(1))
    for r in lanczos_lockstep(op, starts, 10):
        assert len(r.alpha) == 3 and r.residual == 0.0
        torch.testing.assert_close(torch.linalg.eigvalsh(r.tridiagonal()),
                                   torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
                                   rtol=0, atol=1e-5)
    res = lanczos_decomposition(op, 10, v0=starts[:, 0])
    assert len(res.alpha) == 10 and float(res.beta[2]) == 0.0 and (res.beta[:2] > 0.1).all()
    q = res.basis.double()
    torch.testing.assert_close(q @ q.T, torch.eye(10, dtype=torch.float64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("which,k,expect", [("largest", 3, [3, 3, 3]),
                                            ("smallest", 2, [1, 1]),
                                            ("both", 2, [3, 3, 1, 1]),
                                            ("largest", 1, [3])])
def test_repeated_eigenvalues_are_not_passed_over_after_a_restart(dtype, which, k, expect):
    """diag(1, 2, 3) repeated: every Krylov block is invariant after three steps and finds one
    copy of each value. The k-th value must not be an exact smaller one from an earlier block
    (3, 3, 2 before the new block's extreme Ritz value had to converge too)."""
    op = _Diagonal(torch.tensor([1.0, 2.0, 3.0], dtype=dtype).repeat(5_000))
    vals, vecs = lanczos(op, k, which=which, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(vals, torch.tensor(expect, dtype=dtype), rtol=0, atol=1e-5)
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(len(expect), dtype=dtype), rtol=0,
                               atol=1e-5)
    # one block of three products a copy of the wanted extreme value; the last two blocks'
    # ends (1 and 3) do not beat the k-th wanted value, so no restart could change the answer
    # (k = 1: the residual test ends it at the next block's first product)
    assert op.num_matvecs == (4 if k == 1 else 3 * expect.count(expect[0]) + 3)


@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude", "both"])
@pytest.mark.parametrize("k", [1, 3])
def test_a_multiple_of_the_identity_takes_one_product_a_wanted_pair(which, k):
    """On c·I every Krylov block is invariant after one product. Each block's one value is
    every value left, so once the wanted pairs are found no restart can change them: k
    products (2k for "both") and one more, a second random block to agree, where a restart
    after each (no residual to ask) ran all num_iter = 2k + 60 of them."""
    op = _Diagonal(torch.full((50,), 2.5, dtype=torch.float64))
    want = 2 * k if which == "both" else k
    vals, vecs = lanczos(op, k, which=which, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vals, torch.full((want,), 2.5, dtype=torch.float64))
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(want, dtype=torch.float64))
    assert op.num_matvecs == want + 1


@pytest.mark.parametrize("dtype,overlap", [(torch.float32, 1e-6), (torch.float64, 1e-15)])
def test_a_start_nearly_orthogonal_to_the_top_eigenvector_does_not_end_the_search(dtype,
                                                                                 overlap):
    """I + 9uuᵀ with u at ``overlap`` from the seeded random start: the first block breaks
    down after one product (|β| = 9·overlap is below the threshold 100·eps·scale) holding 1
    only. Its ends do not beat 1, yet 10 is left: one near-invariant block must not end the
    search (it returned 1, without a warning). In float32 the threshold (1.2e-5·scale) is
    looser than the residual test at the default tol (1e-6·max|θ|), which would not have
    accepted that block; in float64 it is far tighter, so there the case only checks that
    the second block is drawn."""
    d = 200
    v = torch.randn(d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = v / v.norm()
    g = torch.randn(d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = g - (g @ v) * v
    u = overlap * v + (1 - overlap ** 2) ** 0.5 * g / g.norm()
    a = torch.eye(d, dtype=torch.float64) + 9 * torch.outer(u, u)
    assert float(torch.linalg.eigvalsh(a)[-1]) == pytest.approx(10.0)
    vals, _ = lanczos(a.to(dtype), 1, generator=torch.Generator().manual_seed(0))
    assert float(vals[0]) == pytest.approx(10.0, rel=1e-5)


def test_both_ends_wait_for_the_copies_of_their_own_values():
    """diag(6, 5, 4, 3, 1, 1, 1, 1), which="both", k=3: the first block {1, 3, 4, 5, 6}
    holds the top three; the second, {1}, ends below 4, so the top is complete, but the
    bottom three are 1, 1, 1 and the second block's low end still beats the third (3): a
    third block must find the last copy of 1 and a fourth agree (all eight products)."""
    lam = torch.tensor([6.0, 5.0, 4.0, 3.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    op = _Diagonal(lam)
    vals, _ = lanczos(op, 3, which="both", generator=torch.Generator().manual_seed(0))
    assert vals.tolist() == pytest.approx([6.0, 5.0, 4.0, 1.0, 1.0, 1.0], abs=1e-12)
    assert op.num_matvecs == 8


def test_magnitude_waits_for_a_copy_of_a_negative_end():
    """diag(-3, -3, 1, 2), which="magnitude", k=2: the first block {-3, 1, 2} ends at -3,
    whose magnitude beats the second wanted value (2): the second copy of -3 must be found."""
    op = _Diagonal(torch.tensor([-3.0, -3.0, 1.0, 2.0], dtype=torch.float64))
    vals, _ = lanczos(op, 2, which="magnitude", generator=torch.Generator().manual_seed(0))
    assert vals.tolist() == pytest.approx([-3.0, -3.0], abs=1e-12)


def test_a_chosen_start_s_invariant_block_is_not_taken_for_the_whole_spectrum():
    """From v0 = e_0 on diag(1, 2, 3, 3) the first block is invariant after one product and
    holds 1 only: a chosen start may miss eigenspaces, so its ends say nothing of the rest.
    The random restart that follows finds 3 and, invariant after two products (2, 3), that
    no value left beats it."""
    op = _Diagonal(torch.tensor([1.0, 2.0, 3.0, 3.0], dtype=torch.float64))
    v0 = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    vals, _ = lanczos(op, 1, v0=v0, generator=torch.Generator().manual_seed(0))
    assert vals.tolist() == pytest.approx([3.0], abs=1e-12)
    # and with tol = 0 (every step wanted) nothing ends before num_iter or the whole space
    op = _Diagonal(torch.full((20,), 2.0, dtype=torch.float64))
    lanczos(op, 1, tol=0, num_iter=7, generator=torch.Generator().manual_seed(0))
    assert op.num_matvecs == 7


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_s_eigenvalues_come_from_a_float32_recurrence(dtype):
    """The products stay in the model's precision; the Krylov basis is float32. In bfloat16
    the basis lost orthogonality at once: λ_max 17-72% off the float64 copy's over these four
    seeds, where the dense Hessian of the bfloat16 model is within 0.2% of it."""
    import copy

    from sgdlab.measure import hessian_spectral_density

    model, (x, y) = tiny_mlp(3, 4, 2, seed=0), tiny_classification(6, 3, 2, seed=1)
    loss_fn = nn.CrossEntropyLoss()
    top = float(torch.linalg.eigvalsh(dense_hessian_reference(model, loss_fn, (x, y)))[-1])
    half = copy.deepcopy(model).to(dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*parameters are torch.*float16")
        for seed in range(4):
            lam = hessian_top_eigenvalue(half, loss_fn, (x.to(dtype), y), tol=1e-6,
                                         generator=torch.Generator().manual_seed(seed))
            assert abs(lam - top) < 1e-2 * top, (seed, lam, top)
        density = hessian_spectral_density(half, loss_fn, (x.to(dtype), y), num_probes=1,
                                           num_iter=8, generator=torch.Generator().manual_seed(0))
    assert abs(float(density.nodes.max()) - top) < 1e-2 * top       # SLQ's top Ritz value


def _diag_4_over_bulk() -> torch.Tensor:
    """diag(4, linspace(0, 2, 39)): an outlier above a bulk that reaches down to 0."""
    return torch.cat([torch.tensor([4.0]), torch.linspace(0, 2, 39)]).double()


def _krylov_ritz_errors(lam: torch.Tensor, v0: torch.Tensor, steps: int) -> list[dict]:
    """For j = 1 … steps, the top Ritz pair (θ, y) of diag(λ) on the Krylov space
    K_j(diag(λ), v0), built by plain Gram–Schmidt (twice) in float64 without the Lanczos
    recurrence: its residual ‖A y − θ y‖ relative to the largest |Ritz value| (the
    ``"residual"`` rule) and min(r, r²/gap)/θ (the ``"error_bound"`` rule)."""
    a, q, out = torch.diag(lam), [v0 / v0.norm()], []
    for _ in range(steps):
        basis = torch.stack(q, 1)
        theta, s = torch.linalg.eigh(basis.T @ a @ basis)
        y = basis @ s[:, -1]
        r = float(torch.linalg.vector_norm(a @ y - theta[-1] * y))
        bound = r if len(q) == 1 else min(r, r * r / float(theta[-1] - theta[-2]))
        out.append({"residual": r / float(theta.abs().max()),
                    "error_bound": bound / float(theta[-1])})
        w = a @ q[-1]
        for _ in range(2):
            w = w - basis @ (basis.T @ w)
        q.append(w / w.norm())
    return out


@pytest.mark.parametrize("criterion,steps", [("residual", 7), ("error_bound", 6),
                                              ("residual", 1)])
def test_lanczos_stops_at_the_first_step_that_meets_tol(criterion, steps):
    """diag(4, linspace(0, 2, 39)) from the all-ones vector: the top Ritz pair's error falls
    by a factor ≥ 4 per step, so tol = 1.5 x the error after ``steps`` steps is met first
    after exactly ``steps`` products: one product per step, the check after each step (not
    one late; the first one too, where the Krylov space is as large as the number of pairs
    wanted), and the checked quantity itself (twice it would not be met)."""
    lam = _diag_4_over_bulk()
    v0 = torch.ones(40, dtype=torch.float64)
    errors = [e[criterion] for e in _krylov_ritz_errors(lam, v0, steps)]
    at = errors[-1]
    before = errors[-2] if steps > 1 else 16 * at
    assert before > 4 * at and all(e > before for e in errors[:-2])
    op = DenseOperator(torch.diag(lam))
    vals, _ = lanczos(op, 1, v0=v0, tol=1.5 * at, criterion=criterion)
    assert op.num_matvecs == steps
    assert abs(float(vals[0]) - 4.0) <= before * 4.0


def test_lanczos_step_repeats_gram_schmidt_before_it_calls_a_breakdown():
    """DGKS: a w with a large component in the basis' span (orthogonality lost) is cleaned by
    a second Gram–Schmidt pass and goes on; only a w that the second pass shrinks as much
    again lies in the span (a breakdown). Basis e1, e2; α = wᵀe2 = 0, no β term."""
    from sgdlab.measure.curvature.lanczos import lanczos_step

    basis = torch.eye(3, dtype=torch.float64)[:2]
    w = torch.tensor([0.9, 0.0, 0.1], dtype=torch.float64)
    a, b, scale, breakdown = lanczos_step(w, basis, 0.0, 1.0)
    assert a == 0.0 and not breakdown
    assert b == pytest.approx(0.1, rel=1e-15)
    torch.testing.assert_close(w, torch.tensor([0.0, 0.0, 0.1], dtype=torch.float64))
    w = torch.tensor([0.9, 0.0, 0.0], dtype=torch.float64)
    assert lanczos_step(w, basis, 0.0, 1.0)[3]          # in the span: a breakdown


def test_the_restart_vector_is_orthogonalised_twice():
    """A restart draws a random vector and removes its projection on the invariant block found
    so far. Here the block spans all but one eigenvector u of a 6 x 6 matrix, and the drawn
    vector r has |⟨r̂, u⟩| = 1e-14: one Gram–Schmidt pass leaves rounding-level components in
    the block ~eps/1e-14 of what remains, so the new basis vector is ~1e-2 off orthogonal and
    u's eigenvalue ~1e-4 off; a second pass brings both to rounding level."""
    from sgdlab.measure.curvature._common import random_vector
    from sgdlab.operators import as_operator

    d, seed = 6, 7
    # the restart vector that lanczos will draw from a generator seeded so (float64, size d)
    r = random_vector(as_operator(torch.eye(d, dtype=torch.float64)),
                      torch.Generator().manual_seed(seed))
    r = r / r.norm()
    g = torch.Generator().manual_seed(0)
    p = torch.randn(d, generator=g, dtype=torch.float64)
    p = p - (p @ r) * r
    u = p / p.norm() + 1e-14 * r
    q, _ = torch.linalg.qr(torch.cat([u[:, None], torch.randn(d, d - 1, generator=g,
                                                              dtype=torch.float64)], 1))
    u, rest = q[:, 0], q[:, 1:]
    # u's eigenvalue inside the block's spectrum 1 … 5, so the block's rounding barely moves it
    a = (rest * torch.arange(1.0, d, dtype=torch.float64)) @ rest.T + 3.25 * torch.outer(u, u)
    a = (a + a.T) / 2
    v0 = rest.sum(1)                      # its Krylov space is the invariant block span(rest)
    res = lanczos_decomposition(a, d, v0=v0, generator=torch.Generator().manual_seed(seed))
    assert res.beta[-1] == 0.0 and (res.beta[:-1] > 0.1).all()     # one restart, at the end
    vals, vecs = lanczos(a, d, v0=v0, generator=torch.Generator().manual_seed(seed), tol=1e-12)
    torch.testing.assert_close(vals, torch.linalg.eigvalsh(a).flip(0), rtol=0, atol=1e-13)
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(d, dtype=torch.float64), rtol=0,
                               atol=1e-13)


@pytest.mark.parametrize("criterion", ["residual", "error_bound", "ritz_change"])
def test_every_stopping_rule_is_relative_to_the_spectrum_s_scale(criterion):
    """Each rule compares with ``tol`` a quantity relative to the Ritz values (the docstring's
    ``tol · max|θ|`` / ``tol · |θ|``): c·A from the same start vector is the same Krylov
    space with Ritz values scaled by c, so it stops after the same number of products at any
    scale c (a rule read as absolute stops at once for c = 1e-4 and late for c = 1e4)."""
    lam, v0 = _diag_4_over_bulk(), torch.ones(40, dtype=torch.float64)
    steps = []
    for c in (1e-4, 1.0, 1e4):
        op = DenseOperator(torch.diag(c * lam))
        vals, _ = lanczos(op, 1, v0=v0, tol=1e-6, criterion=criterion)
        assert float(vals[0]) == pytest.approx(4.0 * c, rel=1e-5)
        steps.append(op.num_matvecs)
    assert steps[0] == steps[1] == steps[2] < 40, steps


def test_an_eigenvalue_at_zero_converges_relative_to_the_spectral_radius():
    """The residual rule divides by the spectral radius estimate max|θ|, not by the wanted
    Ritz value: the smallest eigenvalue of diag(4, linspace(0, 2, 39)) is 0, and it must
    converge before the Krylov space fills the whole space (relative to θ ≈ 0 it never
    would)."""
    op = DenseOperator(torch.diag(_diag_4_over_bulk()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # converged: no RuntimeWarning
        vals, _ = lanczos(op, 1, which="smallest", tol=1e-6,
                          v0=torch.ones(40, dtype=torch.float64))
    assert abs(float(vals[0])) < 1e-5
    assert op.num_matvecs < 40


@pytest.mark.parametrize("which,expect", [("largest", [10.0, 9.0]),
                                          ("both", [10.0, 9.0, 1.0, 2.0])])
def test_k_pairs_come_back_from_a_start_vector_close_to_an_eigenvector(which, expect):
    """From v0 ≈ e_10 (1e-6 off) of diag(1 … 10) the first step's Ritz pair already meets
    tol = 1e-3, but one Ritz value is not k pairs: convergence is checked only once the
    Krylov space holds as many vectors as pairs wanted, and all k (2k) come back."""
    a = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    v0 = torch.full((10,), 1e-6, dtype=torch.float64)
    v0[-1] = 1.0
    vals, vecs = lanczos(a, 2, which=which, tol=1e-3, v0=v0)
    assert vals.tolist() == pytest.approx(expect, rel=1e-6)
    assert vecs.shape == (10, len(expect))


def test_one_gram_schmidt_pass_per_step_after_the_three_term_recurrence():
    """The recurrence w − α q_j − β q_{j−1} removes the large components, so one classical
    Gram–Schmidt pass over the basis suffices at a well-conditioned step (the module's
    performance claim: two reads of the basis per step, not four); a recurrence that left
    α q_j or β q_{j−1} in w would give the same basis after a second pass, at twice the
    cost. Counted as ``addmv_`` calls (one per pass) on diag(4, linspace(0, 2, 39))."""
    from torch.overrides import TorchFunctionMode

    class CountPasses(TorchFunctionMode):
        passes = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.Tensor.addmv_:
                CountPasses.passes += 1
            return func(*args, **(kwargs or {}))

    lam = _diag_4_over_bulk()
    with CountPasses():
        res = lanczos_decomposition(torch.diag(lam), 8, v0=torch.ones(40, dtype=torch.float64))
    assert len(res.alpha) == 8 and CountPasses.passes == 8
    # and the recurrence is the right one: T's eigenvalues are the Ritz values of K_8
    basis = res.basis.T
    torch.testing.assert_close(basis.T @ torch.diag(lam) @ basis, res.tridiagonal(),
                               rtol=0, atol=1e-12)


def test_a_multiple_of_the_identity_breaks_down_after_one_step():
    """For A = c·I every start vector is an eigenvector: w − α q is rounding noise ~eps·c, and
    the breakdown threshold is relative to the spectrum's scale, which the diagonal α = c
    sets (β alone is that noise): the decomposition stops after one step (SLQ: one node of
    weight 1)."""
    a = 1000 * torch.eye(10, dtype=torch.float64)
    res = lanczos_decomposition(a, 5, restart_on_breakdown=False,
                                generator=torch.Generator().manual_seed(0))
    assert res.alpha.tolist() == pytest.approx([1000.0], rel=1e-14)
    assert len(res.beta) == 0 and res.residual == 0.0


def test_a_copy_of_the_top_eigenvalue_outside_the_first_block_is_found():
    """diag(1000, 1000, 999, linspace(0, 500, 57)) from v0 = e_0 + e_2: the first Krylov block
    is invariant after two steps ({1000, 999}, exact), the restart explores the rest, where
    the second copy of 1000 hides. The top two are 1000, 1000: the new block's top Ritz value
    must meet the same relative residual (β_m times its last eigenvector component, at the
    spectrum's scale of 1000) before the exact 999 of the first block may count as second.
    With the residual ≤ tol·1000 = 10 and a gap of 500 to the bulk, that Ritz value is within
    r²/gap = 0.2 of 1000."""
    lam = torch.cat([torch.tensor([1000.0, 1000.0, 999.0]),
                     torch.linspace(0, 500, 57)]).double()
    v0 = torch.zeros(60, dtype=torch.float64)
    v0[[0, 2]] = 1.0
    for tol, atol in ((1e-2, 0.2), (1e-6, 1e-6)):
        op = DenseOperator(torch.diag(lam))
        vals, _ = lanczos(op, 2, v0=v0, tol=tol, generator=torch.Generator().manual_seed(0))
        assert vals.tolist() == pytest.approx([1000.0, 1000.0], abs=atol), tol
        assert op.num_matvecs < 60


def test_the_warning_says_when_the_wanted_pair_missed_tol_and_only_then():
    """From the all-ones vector the top Ritz pair of diag(4, linspace(0, 2, 39)) has relative
    residual 4.9e-3 after 5 steps (the float64 Krylov reference above): num_iter=5 with
    tol = 2e-3 (missed by a factor 2.5) warns, tol = 1e-2 (met) does not."""
    lam, v0 = _diag_4_over_bulk(), torch.ones(40, dtype=torch.float64)
    assert _krylov_ritz_errors(lam, v0, 5)[-1]["residual"] == pytest.approx(4.9e-3, rel=0.02)
    with pytest.warns(RuntimeWarning, match=r"not converged after 5 iterations"):
        lanczos(torch.diag(lam), 1, v0=v0, num_iter=5, tol=2e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vals, _ = lanczos(torch.diag(lam), 1, v0=v0, num_iter=5, tol=1e-2)
    assert abs(float(vals[0]) - 4.0) < 4e-3 * 4.0


def test_lanczos_decomposition_takes_numpy_and_torch_counts_and_refuses_bools_and_no_steps():
    # True ran one step, 2.5 two (int() truncated it), and 0 or -1 one
    a = torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64))
    v0 = torch.ones(6, dtype=torch.float64)
    for n in (np.int64(3), torch.tensor(3)):
        assert len(lanczos_decomposition(a, n, v0=v0).alpha) == 3
    for bad in (True, 2.5, "3", 0, -1, np.int64(0)):
        with pytest.raises(ValueError, match=r"num_iter=.* \(an int >= 1"):
            lanczos_decomposition(a, bad, v0=v0)


def _measure_named(times: int) -> list[str]:
    """The warnings shown (their texts) for ``times`` measurements of the top eigenvalue of
    diag(4, linspace(0, 2, 39)) that miss tol (as above), each named by
    :func:`convergence_warnings_named` and followed by a warning of the caller's own, from
    one line, under the filters the caller set."""
    lam, v0 = _diag_4_over_bulk(), torch.ones(40, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as shown:
        for _ in range(times):
            with convergence_warnings_named("hess/top_1", "raise the instrument's num_iter"):
                lanczos(torch.diag(lam), 1, v0=v0, num_iter=5, tol=2e-3)
            warnings.warn("the caller's own", UserWarning)
    return [str(w.message) for w in shown]


def test_named_convergence_warnings_show_once_per_location_and_always_when_asked():
    # leaving the catch_warnings block that caught them cleared every module's record of the
    # warnings shown: each, the caller's own too, came again at every measurement
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        said = _measure_named(3)
    assert len(said) == 2, said
    assert said[0].startswith("hess/top_1: 1 eigenpair(s) not converged after 5 iterations")
    assert said[0].endswith("; raise the instrument's num_iter")
    assert said[1] == "the caller's own"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        said = _measure_named(3)
    assert [s.split(":")[0] for s in said] == ["hess/top_1", "the caller's own"] * 3


def test_a_named_convergence_warning_raises_under_an_error_filter_with_its_name():
    # it raised as lanczos' own "lanczos: ...; raise num_iter", before the block renamed it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match=r"^hess/top_1: 1 eigenpair\(s\) not conv.*"
                                                 r"; raise the instrument's num_iter$"):
            _measure_named(1)
    with warnings.catch_warnings():     # outside a block: lanczos' own words
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match=r"^lanczos: .*; raise num_iter$"):
            lanczos(torch.diag(_diag_4_over_bulk()), 1, v0=torch.ones(40, dtype=torch.float64),
                    num_iter=5, tol=2e-3)
