"""The analyses of ``procedures.landscape_runs`` on tiny stored runs whose numbers are worked
out by hand: the z of the escape intervals, which methods and seeds a verdict weighs, and the
thresholds of the PDE-smoothing and Fokker–Planck verdicts."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from sgdlab.experiments.procedures import landscape_runs as lr
from sgdlab.testing import stored_run

PAPER = {"author": "Zhu", "figure": "Fig. 3"}


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson score interval written out: (p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²))
    / (1 + z²/n)."""
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_the_rate_estimate_takes_its_z():
    # 4 of 10 at z = 1: (0.45 ± sqrt(0.0265)) / 1.1 = [0.26110, 0.55708]
    p, (lo, hi), n = lr._rate_estimate((4, 10), z=1.0)
    assert (p, n) == (0.4, 10)
    assert (lo, hi) == pytest.approx((0.261102, 0.557080), abs=1e-6)
    assert (lo, hi) == pytest.approx(_wilson(4, 10, 1.0), rel=1e-12)


def _escape(method: str, seed: int, successes: int, passage: list[int] | None = None, *,
            repetitions: int = 100, **data):
    """An escape run of ``repetitions`` chains at η = 0.1 as the analysis reads it; ``data``
    added to its first passages."""
    summary = {"success_rate": successes / repetitions, "successes": successes,
               "repetitions": repetitions, "reached_rate": 1.0, "final_sharpness": 0.1,
               "never_reached": 0}
    if passage is not None:
        summary["first_passage_mean"] = sum(passage) / len(passage)
        data["first_passage"] = passage
    return stored_run(method, seed, params={"method": method, "lr": 0.1}, summary=summary,
                      data=data)


def test_the_ordering_weighs_the_seed_spread_of_the_slower_methods_too():
    # a: 90 and 90 of 100, b: 10 and 90 — pooled 0.9 vs 0.5, a gap of 0.4 far outside the
    # binomial interval but inside b's seed-to-seed std, sqrt(2·0.4²) = 0.5657
    runs = [_escape("a", 0, 90), _escape("a", 1, 90), _escape("b", 0, 10), _escape("b", 1, 90)]
    spec = SimpleNamespace(paper={**PAPER, "claim": "a escapes more often"},
                           options={"ordering": {"faster": ["a"], "slower": ["b"]}})
    (c,) = lr.zhu_escape_analysis(spec, runs).conclusions
    assert c.evidence["gap"] == pytest.approx(0.4) and c.evidence["interval"][0] > 0
    assert c.evidence["seed_spread"] == pytest.approx(0.4 * math.sqrt(2), rel=1e-12)
    assert c.agrees_with_paper is None and "seed-to-seed spread" in c.text




def test_the_speed_tiers_weigh_the_later_tiers_seed_spread_and_name_each_pairs_claim():
    # a: every chain at 10 in both seeds; b: seed means 12 and 48 (std 18·√2 = 25.46 over
    # seeds). Pooled, b's mean 30 with variance 20·18²/19 over 20 chains: the gap 20 has the
    # interval 20 ± 2·sqrt(341.05/20) = [11.74, 28.26], above 0 but within b's seed spread
    runs = [_escape("a", s, 50, [10] * 10) for s in (0, 1)]
    runs += [_escape("b", 0, 50, [12] * 10), _escape("b", 1, 50, [48] * 10)]
    runs += [_escape("c", s, 50, [500] * 5 + [520] * 5) for s in (0, 1)]
    spec = SimpleNamespace(paper=PAPER, options={"speed": {"tiers": [["a"], ["b"], ["c"]],
                                                           "claims": ["a first", "b next"]}})
    ab, bc = lr.zhu_escape_analysis(spec, runs).conclusions
    half = 2 * math.sqrt(20 * 18 ** 2 / 19 / 20)
    assert ab.evidence["interval"] == pytest.approx([20 - half, 20 + half], rel=1e-12)
    assert ab.evidence["seed_spread"] == pytest.approx(18 * math.sqrt(2), rel=1e-12)
    assert ab.agrees_with_paper is None and "seed-to-seed spread" in ab.text
    assert (ab.claim, bc.claim) == ("a first", "b next")
    assert bc.agrees_with_paper is True


def test_a_speed_pair_whose_later_tier_recorded_no_passages_is_not_judged():
    runs = [_escape("a", 0, 50, [10] * 10), _escape("b", 0, 50)]
    spec = SimpleNamespace(paper=PAPER, options={"speed": {"tiers": [["a"], ["b"]]}})
    (c,) = lr.zhu_escape_analysis(spec, runs).conclusions
    assert c.agrees_with_paper is None and "did not record" in c.text


def test_speed_is_testable_when_only_one_side_has_a_single_passage():
    # a: two chains at 5; b: 20, 22, 20, 22 — mean gap 16, interval 16 ± 2·sqrt(0/2 + (4/3)/4)
    # (b's sample variance 4/3 over its own 4 chains): above 0, an order, not a tie
    ok, text, ev = lr.speed_finding({"a": [5.0] * 2}, {"b": [20.0, 22.0] * 2})
    assert ev["interval"] == pytest.approx([16 - 2 / math.sqrt(3), 16 + 2 / math.sqrt(3)],
                                          rel=1e-12)
    assert ok is True and "untestable" not in text


def test_the_escape_table_pools_the_seeds_with_wilson_intervals_at_z_2():
    from sgdlab.landscapes.escape import wilson_interval

    spec = SimpleNamespace(paper={"figure": "Fig. 3"}, options={})
    runs = [_escape("sgd", 0, 3, [5] * 10, repetitions=10),
            _escape("sgd", 1, 6, [5] * 10, repetitions=10)]
    an = lr.zhu_escape_analysis(spec, runs)
    table = an.table("escape_success")
    # 10 repetitions a run (not the 20 pooled) times 2 seeds
    assert "10 repetitions × 2 seeds pooled" in dict(an.figures)["escape_success"].axes[0] \
        .get_title()
    (row,) = [dict(zip(table.columns, r)) for r in table.rows]
    lo, hi = wilson_interval(9, 20, 2.0)
    assert row["success rate"] == 0.45 and row["runs"] == 20
    assert (row["Wilson low (z = 2)"], row["Wilson high (z = 2)"]) == (lo, hi)
    # shown in %, as the conclusions give a rate (Fig. 3(c)); stored as the fraction
    # (the seeds' 0.3 and 0.6: std 0.3/√2 = 21.2 points; every chain reached the flat basin)
    assert (f"| SGD | 2 | 20 | 45.0% | {100 * lo:.1f}% | {100 * hi:.1f}% | 21.2% | 100.0% |"
            in table.to_markdown())
    assert "PercentFormatter" in type(
        dict(an.figures)["escape_success"].axes[0].yaxis.get_major_formatter()).__name__
    # an ordering with an empty side, a speed ordering of one tier: refused by name
    from sgdlab.errors import ConfigError

    for options, msg in (({"ordering": {"faster": [], "slower": ["sgd"]}},
                          r"options.ordering: needs methods in 'faster' and 'slower'"),
                         ({"speed": {"tiers": [["sgd"]]}},
                          r"options.speed: needs two or more non-empty tiers")):
        with pytest.raises(ConfigError, match=msg):
            lr.zhu_escape_analysis(SimpleNamespace(paper={"figure": "F"}, options=options),
                                   runs)


def test_the_escape_sharpness_axis_is_labelled_as_every_sharpness_axis():
    from sgdlab.report.figures.axes import METRIC_LABELS

    run = _escape("sgd", 0, 5, [5] * 10, repetitions=10, sharpness_steps=[0, 10],
                  sharpness=[0.2, 0.1])
    an = lr.zhu_escape_analysis(SimpleNamespace(paper={"figure": "Fig. 3"}, options={}), [run])
    ax = dict(an.figures)["escape_sharpness"].axes[0]
    # Zhu et al.'s E_ν[L(θ+ν)] − L(θ), the label of the instrument's "sharpness/expected"
    assert ax.get_ylabel() == METRIC_LABELS["sharpness/expected"] \
        == "expected sharpness E[L(θ+ν)] − L(θ)"
    assert "ν ~ N(0, s²I)" in ax.get_title()
    # which paper's figure and panel: Fig. 3(b) is the sharpness over iterations (line 172)
    assert ax.get_title().startswith("Zhu et al. Fig. 3(b): expected sharpness\n")


def test_the_escape_table_gives_the_sharpness_monte_carlo_error_beside_it():
    """sqrt(Σ se²)/n over the seeds' independent draws: 0.003 and 0.004 give 0.0025; a run
    without one (the quadrature) leaves the cell empty."""
    runs = [_escape("sgd", s, 5, [5] * 10, repetitions=10) for s in (0, 1)]
    for r, se in zip(runs, (0.003, 0.004)):
        r.summary["final_sharpness_se"] = se
    quad = _escape("gd", 0, 5, [5] * 10, repetitions=10)
    an = lr.zhu_escape_analysis(SimpleNamespace(paper={"figure": "Fig. 3"}, options={}),
                                runs + [quad])
    (table,) = an.tables
    col = table.columns.index("its Monte Carlo s.e.")
    assert table.columns[col - 1] == "final expected sharpness"
    assert table.rows[0][col] == pytest.approx(0.0025) and table.rows[1][col] is None
    assert "Monte Carlo s.e." in table.caption and "locally concave" in table.caption


def test_each_escape_figure_names_the_panel_of_fig_3_it_draws():
    # the Fig. 3 caption (line 172): (a) the trajectories, (b) the expected sharpness over
    # iterations, (c) the success rate in 600 iterations
    run = _escape("sgd", 0, 5, [5] * 10, repetitions=10, sharpness_steps=[0, 10],
                  sharpness=[0.2, 0.1], trajectories=[[[1.0, 1.0], [-1.0, -1.0]]],
                  sharp_minimum=[1.0, 1.0], flat_minimum=[-1.0, -1.0])
    figs = dict(lr.zhu_escape_analysis(SimpleNamespace(paper={"figure": "Fig. 3"},
                                                       options={}), [run]).figures)
    titles = {name: (fig.get_suptitle() or fig.axes[0].get_title()) for name, fig in figs.items()}
    assert titles["escape_trajectories"].startswith("Zhu et al. Fig. 3(a): escape paths")
    assert titles["escape_sharpness"].startswith("Zhu et al. Fig. 3(b): expected sharpness")
    assert titles["escape_success"].startswith("Zhu et al. Fig. 3(c): escape success")


def _well(lam: float, w: float, zeros: list, exact: float = 1.0):
    s = {"total_variation": 0.01, "angular_velocity": w, "angular_velocity_exact": exact,
         "angular_velocity_se": 0.01, "drift_zeros": zeros, "orbit_speed_end": [0.5],
         "orbit_radius_half": [1.0], "orbit_radius_end": [1.0], "orbit_turns": [3.0]}
    return stored_run(f"λ={lam}", 0, params={"lam": lam}, summary=s,
                      data={"histogram": [[0.25, 0.25], [0.25, 0.25]],
                            "stationary": [[0.25, 0.25], [0.25, 0.25]],
                            "edges1": [-1.0, 0.0, 1.0], "edges2": [-1.0, 0.0, 1.0]})


def test_a_zero_of_the_drift_at_minus_one_is_at_its_distance_from_the_left_well():
    # λ = 0's only zero found at (−1, 0): distance 0 from (±1, 0), not 2 from (1, 0); λ = 0.5's
    # at (−1.002, 0.001): sqrt(0.002² + 0.001²) = 2.24e-3 away, moved
    runs = [_well(0.0, 0.0, [[-1.0, 0.0], None]), _well(0.5, 0.5, [[-1.002, 0.001]]),
            _well(1.5, 1.0, [None])]
    an = lr.double_well_analysis(SimpleNamespace(paper=PAPER, options={}), runs)
    zero, moved = [c for c in an.conclusions if "zeros" in c.claim or "critical" in c.claim]
    assert zero.agrees_with_paper is True and "distance 0 from" in zero.text
    assert moved.agrees_with_paper is True and "0.002 away" in moved.text


def test_a_current_turning_the_wrong_way_does_not_circulate_as_the_thesis_says():
    # closed form 0.01 (a small λ), measured −0.02 ± 0.01: |−0.03| < 5·0.01 + 0.1·0.01, but
    # the chains turn clockwise, against the current j
    runs = [_well(0.0, 0.0, [[1.0, 0.0]]), _well(0.01, -0.02, [None], exact=0.01)]
    an = lr.double_well_analysis(SimpleNamespace(paper=PAPER, options={}), runs)
    (c,) = [c for c in an.conclusions if "circulate" in c.claim]
    assert c.agrees_with_paper is False
    runs[1] = _well(0.01, 0.02, [None], exact=0.01)
    an = lr.double_well_analysis(SimpleNamespace(paper=PAPER, options={}), runs)
    (c,) = [c for c in an.conclusions if "circulate" in c.claim]
    assert c.agrees_with_paper is True


def _pde(**over):
    """A stored PDE-smoothing run on the grid x = −4, −3.5, ..., 4 (dx = 0.5) with C = 1, every
    verdict of the analysis met unless ``over`` changes a summary value."""
    import torch

    x = torch.linspace(-4, 4, 17, dtype=torch.float64)
    f = (x - 1.5) ** 2 / 2
    s = {"C": 1.0, "t": 0.5, "t_w": 0.25, "t_star": 0.5, "beta": 1.0, "bound": 0.6,
         "bound_w": 0.8, "argmin_f": 1.5, "min_f": -1.0, "x_narrow": 1.5, "x_wide": -1.5,
         "f_xx_narrow": 4.0, "f_xx_wide": 1.0, "convex_f_lo": 1.0, "convex_f_hi": 2.0,
         "convex_u_lo_w": 0.5, "convex_u_hi_w": 2.5, f"{lr._HEAT}: max u_xx_w": 0.9}
    for k in (lr._VISCOUS, lr._HOPF, lr._HEAT):
        s.update({f"{k}: max u_xx": 0.5, f"{k}: argmin": -1.5, f"{k}: min": -1.0})
    for k in (lr._VISCOUS, lr._HOPF):
        s.update({f"{k}: max u_xx_w": 0.7, f"{k}: argmin_w": 1.5, f"{k}: min_w": -1.0,
                  f"{k}: u_xx narrow_w": 2.0, f"{k}: u_xx wide_w": 0.9})
    s[f"{lr._HEAT}: max u_xx_w"] = 0.9
    s.update(over)
    data = {"x": x, "f": f, **{k: f for k in (lr._VISCOUS, lr._HOPF, lr._HEAT)}}
    run = stored_run("pde", params={"t": 0.5}, summary=s, data=data)
    concl = lr.pde_analysis(SimpleNamespace(paper=PAPER, options={}), [run]).conclusions
    return {c.claim: c.agrees_with_paper for c in concl}


def _verdict(verdicts: dict, words: str) -> bool | None:
    """The verdict of the one claim that starts with ``words``."""
    (v,) = [a for claim, a in verdicts.items() if claim.startswith(words)]
    return v


def test_the_pde_verdicts_on_a_run_that_meets_them_all():
    v = _pde()
    assert len(v) == 7 and all(a is True for a in v.values()), v


_KEEPS = "non-viscous HJ keeps the value and location of the minimum while its region of " \
         "convexity widens"
_WIDE = "for large γ local entropy has its global minimum in the wide valley"
_FASTER = "evolving f by (4.1)"


def test_the_hopf_lax_minimum_may_move_by_one_grid_step_and_its_value_by_c_dx_squared():
    h = lr._HOPF
    assert _verdict(_pde(**{f"{h}: argmin_w": 2.0}), _KEEPS) is True     # dx = 0.5 away
    assert _verdict(_pde(**{f"{h}: argmin_w": 2.25}), _KEEPS) is False
    assert _verdict(_pde(**{f"{h}: min_w": -0.8}), _KEEPS) is True       # 0.2 ≤ C·dx²
    assert _verdict(_pde(**{f"{h}: min_w": -0.7}), _KEEPS) is False      # 0.3 > 0.25


def test_the_convexity_interval_must_widen_at_both_ends():
    assert _verdict(_pde(convex_u_hi_w=1.9), _KEEPS) is False
    assert _verdict(_pde(convex_u_lo_w=1.1), _KEEPS) is False
    assert _verdict(_pde(convex_u_lo_w=1.0, convex_u_hi_w=2.0), _KEEPS) is True


def test_the_widening_quote_needs_the_narrow_minimum_to_be_the_more_curved_one():
    # the drops 4 − 2 = 2 > 1 − 0.9: met; with f'' 0.5 at the "narrow" minimum (drop
    # 0.5 − (−2) = 2.5 > 0.1 still) it is not the high-curvature one
    v = lr._VISCOUS
    assert _verdict(_pde(), _FASTER) is True
    assert _verdict(_pde(f_xx_narrow=0.5, **{f"{v}: u_xx narrow_w": -2.0}), _FASTER) is False


def test_local_entropys_minimum_must_be_in_the_wide_valley_and_fs_in_the_narrow_one():
    assert _verdict(_pde(), _WIDE) is True
    assert _verdict(_pde(argmin_f=-0.5, **{f"{lr._HOPF}: argmin_w": -0.5}), _WIDE) is False
    assert _verdict(_pde(**{f"{lr._VISCOUS}: argmin": 0.5}), _WIDE) is False


def _density_verdicts(**over) -> dict:
    """The Fig. 4.1 verdicts of :func:`lr._density_conclusions` on a run started at a poor
    minimum (x = 2.8), f's global basin [1, 2]."""
    v, h, g = lr._VISCOUS, lr._HOPF, lr._SGD
    s = {"fp: horizon": 1.0, "fp: start_min": 2.8, "fp: f_start_min": 0.5, "fp: D": 0.5,
         "fp: start_is_global": 0.0, "fp: start_is_nearly_optimal": 0.0, "fp: rho0_mean": 2.8,
         "fp: rho0_std": 0.1, "fp: global_basin": [1.0, 2.0], "t": 0.5, "argmin_f": 1.5,
         "fp: viscous convex": 1.0, f"{v}: argmin": 1.5, "fp: hopf convex": 0.0,
         "fp: nearly_optimal": 0.1, "fp: nearly_optimal_minima": [1.5],
         f"fp: {g}: start basin": 0.6, f"fp: {g}: global basin": 0.2,
         f"fp: {g}: nearly optimal": 0.2, f"fp: {v}: global basin": 0.8,
         f"fp: {h}: global basin": 0.6, f"fp: {h}: nearly optimal": 0.6, **over}
    return {c.claim.split(" (Fig. 4.1")[0]: c.agrees_with_paper
            for c in lr._density_conclusions(s)}


_SGD_STAYS = "the terminal density of SGD remains concentrated in a local minimum"
_CONVEX = "u_viscousHJ(x, T) is convex, with the global minimum close to that of f"


def test_the_density_verdicts_take_more_than_half_the_mass_and_fs_whole_basin():
    assert all(a is True for a in _density_verdicts().values())
    assert _density_verdicts(**{f"fp: {lr._SGD}: start basin": 0.45})[_SGD_STAYS] is False
    assert _density_verdicts(**{f"fp: {lr._SGD}: start basin": 0.5})[_SGD_STAYS] is False
    # u's minimum on either end of f's global basin [1, 2] is in it; past them it is not
    for x, inside in ((1.0, True), (2.0, True), (0.99, False), (2.01, False)):
        assert _density_verdicts(**{f"{lr._VISCOUS}: argmin": x})[_CONVEX] is inside, x


def test_sharpness_claims_weigh_the_spread_of_two_seeds():
    # SGD's final sharpness 0.1 and 0.9 over two seeds (std 0.4·√2 = 0.566) against GD's
    # 0.52: 0.02 apart, inside the spread, so a 'less' claim on it is inconclusive
    runs = [stored_run(m, s, params={"method": m, "lr": 0.1},
                       summary={"success_rate": 0.5, "successes": 50, "repetitions": 100,
                                "reached_rate": 0.5, "final_sharpness": v})
            for m, vs in (("sgd", (0.1, 0.9)), ("gd", (0.52, 0.52))) for s, v in enumerate(vs)]
    claims = [{"less": ["sgd", "gd"], "metric": "final_sharpness", "claim": "sharpness"}]
    spec = SimpleNamespace(paper={**PAPER, "claim": "x"}, options={"claims": claims})
    (c,) = [c for c in lr.zhu_escape_analysis(spec, runs).conclusions
            if c.claim == "sharpness"]
    assert c.agrees_with_paper is None and "seed-to-seed spread" in c.text


def _pspin(regime: str, minima: int, converged: int, starts: int = 12):
    return stored_run(regime, params={"regime": regime},
                      summary={"nu": 1.0, "distinct_minima": minima, "starts": starts,
                               "converged": converged, "cosine_distance": 0.1,
                               "angular_distance": 0.1, "energy_min": -1.0,
                               "energy_spread": 0.0},
                      data={"embedding": [[0.0, 0.0]] * minima, "energies": [-1.0] * minima,
                            "basin_sizes": [1] * minima})


def test_the_pspin_claims_read_one_minimum_and_the_number_of_starts():
    # one minimum is "one" (within 0.5); 10 of 12 starts converged is not all of them
    claims = [{"close": ["trivial", "one"], "metric": "distinct_minima", "rtol": 0,
               "atol": 0.5, "claim": "one"},
              {"close": ["trivial", "trivial"], "metric": "converged", "metric_b": "starts",
               "rtol": 0, "atol": 0.5, "claim": "all"}]
    spec = SimpleNamespace(paper=PAPER, options={"claims": claims})
    one, every = lr.pspin_analysis(spec, [_pspin("trivial", 1, 10)]).conclusions
    assert (one.agrees_with_paper, every.agrees_with_paper) == (True, False)
    one, every = lr.pspin_analysis(spec, [_pspin("trivial", 2, 12)]).conclusions
    assert (one.agrees_with_paper, every.agrees_with_paper) == (False, True)


def test_an_escape_run_may_keep_no_trajectories_but_not_fewer():
    from sgdlab.errors import ConfigError

    proc = lr.EscapeProcedure()
    proc.validate({"method": "sgd", "trajectories": 0}, "runs[0]")
    with pytest.raises(ConfigError, match="trajectories must be an int >= 0, got -1"):
        proc.validate({"method": "sgd", "trajectories": -1}, "runs[0]")


def test_the_nearly_optimal_level_is_a_fraction_of_fs_range_above_its_minimum():
    # f on x = 0 … 10 shifted by −5: min −5 at x = 2, max 5, level −5 + 0.1·10 = −4 (not
    # −5 + 0.1·5): the minimum −4 at x = 5 lies on it; the basins [0, 4), [4, 6), [6, 11)
    import torch

    x = torch.arange(11, dtype=torch.float64)
    values = torch.tensor([10.0, 4.0, 0.0, 4.0, 9.0, 1.0, 9.0, 2.5, 2.0, 2.5, 10.0],
                          dtype=torch.float64) - 5

    def fn(z):
        return values.clone()
    frozen = {lr._VISCOUS: values, lr._HOPF: values}
    s, d = lr.fokker_planck_densities({"rho0_mean": 5.0, "rho0_std": 1.0, "horizon": 0.1},
                                      x, fn, 0.5, 1.0, x, x, values, frozen)
    assert s["fp: nearly_optimal_level"] == -4.0
    assert s["fp: nearly_optimal_minima"] == [2.0, 5.0]
    # the mass in a basin is the density summed over its grid points (dx = 1), no more
    rho = d[f"density: {lr._SGD}"]
    assert s[f"fp: {lr._SGD}: start basin"] == pytest.approx(float(rho[4:6].sum()), rel=1e-12)
    assert s[f"fp: {lr._SGD}: global basin"] == pytest.approx(float(rho[0:4].sum()), rel=1e-12)
