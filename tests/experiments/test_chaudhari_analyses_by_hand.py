"""The Chaudhari analyses at the edges of their rules, on stored runs with known answers: a
value on a threshold, the defaults of the options, round-off against a real negative entry."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sgdlab.experiments.procedures import chaudhari
from sgdlab.testing import stored_run as _run

PAPER = {"author": "Chaudhari", "figure": "Fig. 0"}


def _spectrum(options, runs):
    import matplotlib.pyplot as plt

    an = chaudhari.hessian_spectrum(SimpleNamespace(paper=PAPER, options=options), runs)
    plt.close("all")            # its three figures are not read here
    return an


def test_a_fisher_entry_is_negative_beyond_its_own_round_off_not_an_eigensolvers():
    # entries are computed one by one: round-off max|λ|·eps32 = 1.2e-7, not d times that
    # (1.2e-6), so −5e-7 is a negative entry (1 of 10)
    diag = [1.0, -5e-7] + [0.0] * 8
    final = [{"kind": "fisher_diagonal", "reading": "adam-moments"}]
    run = _run("allcnn", params={"final": final}, summary={"fisher_dim": 10},
               data={"fisher_diagonal": diag})
    (row,) = _spectrum({}, [run]).table("hessian_spectrum").rows
    assert row[7] == pytest.approx(0.1)
    # the same values as a Hessian's eigenvalues: round-off of the eigensolver
    hess = _run("net", summary={"hessian_dim": 10}, data={"hessian_eigenvalues": diag})
    (row,) = _spectrum({}, [hess]).table("hessian_spectrum").rows
    assert row[7] == 0.0


@pytest.mark.usefixtures("blank_figures")
def test_the_hessian_claims_on_their_thresholds_and_defaults():
    # 10 eigenvalues: 1e-4 (on the default threshold) counts as near zero, 7 of 10 are;
    # λ_max = 10 = 10·|λ_min| (the default tail ratio, reached); one negative of 10 (the
    # default bound 0.1, reached)
    ev = [10.0, 1e-4, -1.0, 0.5] + [0.0] * 6
    run = _run("net", summary={"hessian_dim": 10}, data={"hessian_eigenvalues": ev})
    near, tails, negative = _spectrum({"near_zero": {"net": [1e-4, 0.75]}}, [run]).conclusions
    assert near.evidence["near_zero_fraction"] == pytest.approx(0.7)
    assert near.agrees_with_paper is True             # 0.7 ≥ 0.75 − 0.1 (the default allowance)
    assert tails.agrees_with_paper is True and negative.agrees_with_paper is True
    assert _spectrum({"near_zero": {"net": [1e-4, 0.85]}}, [run]).conclusions[0] \
        .agrees_with_paper is False                   # 0.7 < 0.75
    # exactly at the thesis' fraction less the allowance (6 of 8 = 1 − 0.25) agrees
    eight = _run("net", data={"hessian_eigenvalues": [1.0, 1e-4, 0.5] + [0.0] * 5})
    near, *_ = _spectrum({"near_zero": {"net": [1e-4, 1.0]}, "allowance": 0.25},
                         [eight]).conclusions
    assert near.evidence["near_zero_fraction"] == 0.75 and near.agrees_with_paper is True
    # two negatives of ten is more than the default share 0.1
    two = _run("net", data={"hessian_eigenvalues": [10.0, -0.5, -0.5] + [0.0] * 7})
    assert _spectrum({}, [two]).conclusions[2].agrees_with_paper is False
    # without near_zero for the group: the threshold 1e-4, no fraction of the thesis' to test
    near, *_ = _spectrum({}, [run]).conclusions
    assert near.evidence["threshold"] == 1e-4 and near.agrees_with_paper is None
    # no negative eigenvalue: the end point is no saddle; an all-positive spectrum has an
    # infinitely longer right tail
    pos = _run("net", summary={"hessian_dim": 3}, data={"hessian_eigenvalues": [1.0, 0.5, 0.2]})
    _, tails, negative = _spectrum({}, [pos]).conclusions
    assert negative.agrees_with_paper is False and tails.agrees_with_paper is True
    assert "right tail inf times" in tails.text
    # a larger λ_min than λ_max / 10 in size: not much longer
    _, tails, _ = _spectrum({}, [_run("net", data={"hessian_eigenvalues": [10.0, -1.01, 0.0]})]
                            ).conclusions
    assert tails.agrees_with_paper is False


def test_the_spectrum_facts_are_the_seeds_means():
    a = _run("net", 0, summary={"hessian_dim": 4}, data={"hessian_eigenvalues": [4.0, -1.0, 0, 0]})
    b = _run("net", 1, summary={"hessian_dim": 4}, data={"hessian_eigenvalues": [2.0, 0, 0, 0]})
    (row,) = _spectrum({}, [a, b]).table("hessian_spectrum").rows
    assert row[3] == pytest.approx(0.625) and row[5:8] == [3.0, -0.5, pytest.approx(0.125)]


def _diffusion_analysis(options, runs):
    import matplotlib.pyplot as plt

    an = chaudhari.diffusion_spectrum(SimpleNamespace(paper=PAPER, options=options), runs)
    plt.close("all")            # its figures are not read here
    return an


def _diffusion(label, fraction, trace=1.0, rank=None, d=10_000):
    return _run(label, summary={"diffusion_rank": fraction * d if rank is None else rank,
                                "diffusion_rank_fraction": fraction, "diffusion_trace": trace,
                                "diffusion_dim": d, "diffusion_samples": 500},
                data={"diffusion_eigenvalues": [1.0, 0.5]})


def test_the_diffusion_analysis_reads_an_unmarked_run_as_the_end_of_training():
    # the default range 0.3%-2%, both ends in; a label without @ is at 100% of training
    for fraction, agrees in ((0.0025, False), (0.003, True), (0.02, True)):
        (rank,) = _diffusion_analysis({}, [_diffusion("net", fraction)]).conclusions
        assert rank.agrees_with_paper is agrees, fraction
        assert rank.claim.startswith("D(x) has a very small rank: between 0.3% and 2%")
    # Tr D / d in the table; an earlier instant's Tr D and rank as multiples of the end's
    an = _diffusion_analysis({}, [_diffusion("net", 0.01, trace=50.0),
                                  _diffusion("net@40", 0.004, trace=20.0)])
    rows = {r[1]: r for r in an.table("diffusion_spectrum").rows}
    assert rows["100%"][7] == pytest.approx(50.0 / 10_000)
    (_, same) = an.conclusions
    assert "40%: Tr D ×0.40, rank ×0.40" in same.text and same.agrees_with_paper is False


def test_a_fisher_group_with_a_seed_that_recorded_nothing_is_read_from_the_others():
    # a diverged seed records no diagonal: the group is still a Fisher group
    final = [{"kind": "fisher_diagonal", "reading": "adam-moments"}]
    kept = _run("allcnn", 1, params={"final": final}, summary={"fisher_dim": 4},
                data={"fisher_diagonal": [1.0, -0.5, 0.0, 0.0]})
    diverged = _run("allcnn", 0, params={"final": final})
    (row,) = _spectrum({}, [diverged, kept]).table("hessian_spectrum").rows
    assert row[0] == "allcnn (Fisher diagonal, adam-moments)" and row[7] == 0.25
    # so is a Hessian group (it failed with a KeyError on the first seed's missing spectrum)
    kept = _run("net", 1, summary={"hessian_dim": 3}, data={"hessian_eigenvalues": [1.0, 0, 0]})
    (row,) = _spectrum({}, [_run("net", 0), kept]).table("hessian_spectrum").rows
    assert row[:2] == ["net", 3]


def test_the_diffusion_claims_compare_the_networks_at_the_end_of_training():
    # at 100% lenet's rank (200) is above fc's (50); at 40% (listed last) it is below
    runs = [_diffusion("lenet@100", 0.02, rank=200), _diffusion("fc@100", 0.005, rank=50),
            _diffusion("lenet@40", 0.002, rank=20), _diffusion("fc@40", 0.005, rank=50)]
    claim = {"greater": ["lenet", "fc"], "metric": "rank", "claim": "lenet's rank is larger"}
    an = _diffusion_analysis({"claims": [claim]}, runs)
    (c,) = [c for c in an.conclusions if c.claim == "lenet's rank is larger"]
    assert c.agrees_with_paper is True


def test_the_fisher_histogram_clips_at_the_smallest_near_zero_threshold_of_its_groups():
    # thresholds 1e-3 (a) and 1e-4 (b): the figure clips at 1e-4, so a's 5e-4 is drawn and
    # a holds 1 of 4 entries within the clip (0), b 3 of 4 (5e-5, 0, 0)
    final = [{"kind": "fisher_diagonal", "reading": "adam-moments"}]
    runs = [_run(g, params={"final": final}, summary={"fisher_dim": 4},
                 data={"fisher_diagonal": diag})
            for g, diag in (("a", [1.0, 5e-4, -2e-3, 0.0]), ("b", [2.0, 5e-5, 0.0, 0.0]))]
    an = chaudhari.hessian_spectrum(SimpleNamespace(
        paper=PAPER, options={"near_zero": {"a": [1e-3, 0.5], "b": [1e-4, 0.5]}}), runs)
    fig = dict(an.figures)["fisher_histogram"]
    neg_ax, pos_ax = fig.axes
    assert pos_ax.get_xlim()[0] == pytest.approx(1e-4)
    a, b = sorted(t.get_text() for t in fig.legends[0].get_texts())
    assert a.startswith("a (") and "(25.0% with |λ| ≤ 0.0001, clipped)" in a
    assert b.startswith("b (") and "(75.0% with |λ| ≤ 0.0001, clipped)" in b


def _measured_diffusion(label: str, grads: list[list[float]]):
    """The ``diffusion_spectrum`` measurement of a model whose per-sample gradients are
    ``grads``: loss_k(w) = w · x_k, so ∇f_k = x_k wherever w is; float64."""
    import torch

    from sgdlab.experiments.procedures.measures import ARRAYS

    x = torch.tensor(grads, dtype=torch.float64)
    model = torch.nn.Linear(x.shape[1], 1, bias=False).double()
    summary, data = ARRAYS["diffusion_spectrum"][0](
        model, lambda out, y: out.squeeze(-1).mean(), (x, torch.zeros(len(x))))
    return _run(label, params={"final": [{"kind": "diffusion_spectrum"}]}, summary=summary,
                data=data)


def test_diffusion_spectrum_statistics_are_eq_6_4_and_footnote_1_by_hand():
    """Eq. (6.4), D = (1/N) Σ_k g_k g_kᵀ − g gᵀ, from per-sample gradients written out; its
    eigenvalues above footnote 1's λ_max · d · eps (float64 here) are the nonzero ones. The
    table's Tr D / d is (6.45)'s (1/d) Σ_{k=1}^d λ, its variance and mean of nonzero λ those of
    the thresholded spectrum. The two means order these networks oppositely: "wide" spreads
    Tr D over two directions, "narrow" a little less over one (reading eigenvalue-mean)."""
    nets = {"wide": [[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.5], [-1.0, -1.0, 0.0, 0.5]],
            "narrow": [[1.2, 0.6, 0.0, 0.0], [-1.2, -0.6, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]}
    expect = {}
    for net, grads in nets.items():
        g = np.array(grads)
        d_mat = g.T @ g / len(g) - np.outer(g.mean(0), g.mean(0))
        lam = np.linalg.eigvalsh(d_mat)
        nonzero = lam[lam > lam.max() * g.shape[1] * np.finfo(np.float64).eps]
        expect[net] = (lam.sum() / g.shape[1], len(nonzero), nonzero.var(), nonzero.mean())
    assert [expect[n][1] for n in nets] == [2, 1]
    assert expect["wide"][0] > expect["narrow"][0] and expect["wide"][3] < expect["narrow"][3]
    claims = [{"greater": ["wide", "narrow"], "metric": m, "claim": m}
              for m in ("mean_eig", "mean_nonzero_eig")]
    an = _diffusion_analysis({"claims": claims},
                             [_measured_diffusion(n, g) for n, g in nets.items()])
    rows = {r[0]: r for r in an.table("diffusion_spectrum").rows}
    for net, (mean_all, rank, var, mean_nonzero) in expect.items():
        assert rows[net][4] == rank
        assert rows[net][7] == pytest.approx(mean_all, rel=1e-12)
        assert rows[net][8] == pytest.approx(mean_nonzero, rel=1e-12)
        assert rows[net][9] == pytest.approx(var, rel=1e-12, abs=1e-15)
    verdicts = {c.claim: c.agrees_with_paper for c in an.conclusions if c.claim in
                ("mean_eig", "mean_nonzero_eig")}
    assert verdicts == {"mean_eig": True, "mean_nonzero_eig": False}


def test_the_mean_of_the_nonzero_eigenvalues_is_the_seeds_mean():
    """Each seed's plotted spectrum has its own mean, as its own spread: the table's "mean of
    nonzero λ" is the mean of the seeds' means (2 and 3), not the pooled mean (13/5) nor the
    first seed's."""
    runs = [_run("net", seed, summary={"diffusion_rank": len(ev), "diffusion_dim": 10,
                                       "diffusion_rank_fraction": len(ev) / 10,
                                       "diffusion_trace": sum(ev)},
                 data={"diffusion_eigenvalues": ev})
            for seed, ev in ((0, [1.0, 3.0]), (1, [1.0, 7.0, 1.0]))]
    (row,) = _diffusion_analysis({}, runs).table("diffusion_spectrum").rows
    assert row[8] == pytest.approx(2.5, rel=1e-15)
    assert row[9] == pytest.approx((1.0 + 8.0) / 2, rel=1e-15)  # the spreads too


def test_the_round_off_bar_scales_with_the_largest_eigenvalue_in_size_as_numpys_rank():
    """Footnote 1 of §6.3.2: "thresholded at λ_max × d × machine-precision. This formula is
    widely used, for instance, in numpy" — numpy's ``matrix_rank`` takes the largest singular
    value, max |λ| for a symmetric matrix. With λ_min = −100 the largest in size: the bar is
    100·10·eps32 = 1.19e-4, so −1e-5 is round-off and only −100 is negative (1 of 10)."""
    ev = np.array([1.0, -100.0, -1e-5] + [0.0] * 7)
    eps32 = float(np.finfo(np.float32).eps)
    a = np.diag(ev).astype(np.float32)
    # numpy's default tolerance: S.max() · max(M, N) · eps
    tol = np.linalg.svd(a, compute_uv=False).max() * a.shape[0] * eps32
    assert tol == pytest.approx(100.0 * 10 * eps32, rel=1e-7)
    bar = chaudhari._negative_bar(ev, 1e-4, eigenvalues=True, dtype="float32",
                                  negative="float32-round-off")
    assert bar == pytest.approx(tol, rel=1e-7)
    facts = chaudhari._spectrum_facts(ev, 1e-4)
    assert facts["negative"] == 0.1 and facts["lambda_min"] == -100.0


def test_beyond_the_peak_is_exactly_outside_the_near_zero_band():
    """``beyond-peak``: negative means left of Fig. 3.4's clipped peak |λ| ≤ thr, so an
    eigenvalue is near zero or beyond the peak on one side, never both and never neither:
    with thr = 0.25, −0.25 (on the edge) and −0.2 are in the peak, −0.5 beyond it."""
    ev = np.array([1.0, -0.25, -0.2, -0.5] + [0.0] * 6)
    f = chaudhari._spectrum_facts(ev, 0.25, negative="beyond-peak")
    assert (f["near_zero"], f["negative"]) == (0.8, 0.1)
    assert f["near_zero"] + f["negative"] + np.mean(ev > 0.25) == 1.0


def test_a_zero_diffusion_matrix_at_the_end_is_no_ratio_not_a_crash():
    """D(x) = 0 at 100% of training (every per-sample gradient equal, e.g. all zero in a net
    whose units all died): Tr D = 0 and rank 0, so the 20% and 40% spectra have no multiple
    of the end's. Remark 6.37's "almost indistinguishable" is then not shown (as for a rank
    of 0 alone), and the analysis still reports: it divided by the zero trace."""
    runs = [_diffusion("net", 0.0, trace=0.0, rank=0), _diffusion("net@40", 0.004, trace=2.0)]
    an = _diffusion_analysis({}, runs)
    rank, same = an.conclusions
    assert rank.agrees_with_paper is False              # 0% is below the thesis' 0.3%
    assert same.agrees_with_paper is False and "Tr D ×nan, rank ×nan" in same.text
    rows = {r[1]: r for r in an.table("diffusion_spectrum").rows}
    assert (rows["100%"][6], rows["40%"][6]) == (0.0, 2.0)


def test_the_rank_of_d_in_the_table_is_the_seeds_mean():
    """As every other column ("means over each run's seeds"): seeds of rank 20 and 40 (0.2%
    and 0.4% of d = 10,000) give a rank of 30 and a fraction of 0.3%, inside the thesis'
    0.3% - 2% (line 2920), though the first seed alone is not."""
    runs = [_diffusion("net", 0.002, rank=20), _diffusion("net", 0.004, rank=40)]
    runs[1].seed, runs[1].key = 1, "net-1"
    an = _diffusion_analysis({}, runs)
    (row,) = an.table("diffusion_spectrum").rows
    assert row[4:6] == [30.0, pytest.approx(0.003, rel=1e-12)]
    (rank,) = an.conclusions
    assert rank.agrees_with_paper is True and "rank D = 30" in rank.text


def test_a_burn_in_counted_in_steps_starts_the_gradient_norm_window_there():
    """Remark 6.42: the full gradient "drops only by about a factor of 3" after the burn-in.
    Snapshots every 40 steps with a burn-in of 30 end it at step 1200: the window starts at
    the record at step 1200 itself (0.03, not the burn-in's 1.0) and ends at 0.01."""
    params = {"measure": [{"name": "trajectory", "every_steps": 40, "every_epochs": None}],
              "final": [{"kind": "trajectory_spectrum", "burnin": 30}]}
    start = chaudhari.burnin_end(params)
    assert start == ("step", 1200.0)
    steps = list(range(0, 3001, 100))
    g = [1.0 if s < 1200 else 0.03 * (1 / 3) ** ((s - 1200) / 1800) for s in steps]
    r = _run("tiny-fc", params=params, metrics={"full_grad_norm": list(zip(steps, g))})
    first, last, drop = chaudhari._grad_norm_drop(r, start, 1)
    assert (first, last) == (0.03, pytest.approx(0.01, rel=1e-12))
    assert drop == pytest.approx(3.0, rel=1e-12)
    # two records at each end
    assert chaudhari._grad_norm_drop(r, start, 2)[0] == pytest.approx((g[12] + g[13]) / 2)


def test_the_diffusion_table_takes_the_configured_samples_when_the_run_recorded_none():
    """The N of eq. (6.4)'s average: the measured ``diffusion_samples``, else the
    ``samples`` the run's ``final`` measurement was given (2,000)."""
    r = _diffusion("net", 0.01)
    del r.summary["diffusion_samples"]
    r.params["final"] = [{"kind": "diffusion_spectrum", "samples": 2000}]
    (row,) = _diffusion_analysis({}, [r]).table("diffusion_spectrum").rows
    assert row[3] == 2000
