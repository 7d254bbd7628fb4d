"""The small helpers of ``procedures.landscape_runs`` by hand: the grid minima, basins and
curvatures of the PDE-smoothing analysis, the staging of a scoped drift, the first-passage and
success-rate summaries of the escape runs, and the double well's noiseless-flow reading."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from sgdlab.experiments.procedures import landscape_runs as lr
from sgdlab.testing import stored_run

PAPER = {"author": "Chaudhari", "figure": "Fig. 0"}


def test_local_minima_are_strict_away_from_the_ends_lowest_first():
    u = torch.tensor([3.0, 1.0, 2.0, 0.0, 0.0, 5.0, 4.0, 6.0])
    # index 3 and 4 tie (a flat bottom): neither is strict
    assert lr._local_minima(u, 0) == [1, 6]
    assert lr._local_minima(torch.tensor([3.0, 4.0, 1.0, 2.0, 0.0, 5.0]), 1) == [4, 2]
    assert lr._local_minima(u, 2) == []


def test_the_curvature_is_the_second_difference_at_the_nearest_minimum():
    u = torch.tensor([5.0, 1.0, 0.0, 2.0, 9.0, 8.0, 9.5])
    # minima at 2 (u'' = (1 + 2) / 0.25 = 12) and 5 ((9 − 16 + 9.5) / 0.25 = 10)
    assert lr._curvature_at_minimum_near(u, 1, 0.5, 1) == pytest.approx(12.0)
    assert lr._curvature_at_minimum_near(u, 6, 0.5, 1) == pytest.approx(10.0)
    assert math.isnan(lr._curvature_at_minimum_near(torch.arange(5.0), 2, 1.0, 1))


def test_basins_are_cut_at_the_strict_maxima():
    assert lr._basins([0.0, 1.0, 2.0, 1.0, 0.0]) == [(0, 2), (2, 5)]
    assert lr._basins([0.0, 2.0, 1.0, 3.0, 0.0]) == [(0, 1), (1, 3), (3, 5)]
    assert lr._basins([1.0, 0.0, 1.0]) == [(0, 3)]
    assert lr._basin_of([(0, 2), (2, 5)], 2) == (2, 5)


def test_a_flat_topped_maximum_cuts_the_basins_at_its_middle():
    # a plateau of two: shared half and half; of three: its middle goes right, as a strict top
    assert lr._basins([0.0, 1.0, 2.0, 2.0, 1.0, 0.0]) == [(0, 3), (3, 6)]
    assert lr._basins([0.0, 2.0, 2.0, 2.0, 0.0, 1.0, 0.0]) == [(0, 2), (2, 5), (5, 7)]
    # a shelf (rising on both sides) and a plateau at a grid end are no cut
    assert lr._basins([0.0, 1.0, 1.0, 2.0, 0.0]) == [(0, 3), (3, 5)]
    assert lr._basins([1.0, 1.0, 0.0, 1.0, 1.0]) == [(0, 5)]
    # a flat bottom (falling into it, rising out of it) is no cut either
    assert lr._basins([2.0, 1.0, 1.0, 2.0]) == [(0, 4)]


def test_a_scoped_drift_takes_its_stages_in_order_over_equal_times():
    stages = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([5.0, 6.0])]
    drift, times = lr._staged(stages, 3.0)
    assert times == [1.0, 2.0]
    for s, k in ((0.0, 0), (0.99, 0), (1.0, 1), (2.5, 2), (3.0, 2)):
        assert torch.equal(drift(s), stages[k]), s
    frozen = torch.tensor([1.0, 2.0])
    assert lr._staged(frozen, 3.0) == (frozen, None)


def _escape_run(seed, passage, iterations=None, successes=3, repetitions=4):
    params = {"method": "sgd"} if iterations is None else {"method": "sgd",
                                                          "iterations": iterations}
    return stored_run("sgd", seed, params=params,
                      summary={"successes": successes, "repetitions": repetitions},
                      data={"first_passage": passage})


def test_first_passages_count_a_chain_that_never_reached_at_the_run_length():
    assert lr._restricted_mean([3, -1, 5, 0], 10) == pytest.approx((3 + 10 + 5 + 0) / 4)
    assert math.isnan(lr._restricted_mean([], 10))
    runs = [_escape_run(0, [2, -1]), _escape_run(1, [-1, 0], iterations=50)]
    assert lr._passages(runs) == [2.0, 600.0, 50.0, 0.0]          # 600: the default length
    assert lr._passages(runs + [_escape_run(2, None)]) is None


def test_success_rates_pool_the_seeds_counts():
    runs = [_escape_run(0, [], successes=3, repetitions=4),
            _escape_run(1, [], successes=1, repetitions=6)]
    assert lr._pooled_counts(runs) == (4, 10)
    p, (lo, hi), n = lr._rate_estimate((4, 10))
    assert (p, n) == (0.4, 10) and lo < 0.4 < hi
    p, _, n = lr._rate_estimate((0, 0))
    assert math.isnan(p) and n == 0
    assert math.isnan(lr._rate((0, 0))) and lr._rate((1, 4)) == 0.25
    # both rates at one end: "0%" or "100%"; apart, or both inside: none
    assert (lr._boundary(0.0, 0.0), lr._boundary(1.0, 1.0)) == ("0%", "100%")
    assert lr._boundary(0.0, 1.0) is None and lr._boundary(0.5, 0.5) is None


def test_the_noiseless_flow_is_read_as_rest_cycle_or_spiral():
    rest = {"orbit_speed_end": [1e-8, 2e-8], "orbit_radius_half": [1.0, 1.0],
            "orbit_radius_end": [1.0, 1.0]}
    assert lr._orbit_kind(rest, 1e-6, 0.95) == "rest"
    # one start still moving: not at rest; both keep their radius: a cycle
    cycle = {**rest, "orbit_speed_end": [1e-8, 0.5]}
    assert lr._orbit_kind(cycle, 1e-6, 0.95) == "cycle"
    # one of the two radii shrinks by half: a spiral
    assert lr._orbit_kind({**cycle, "orbit_radius_end": [1.0, 0.5]}, 1e-6, 0.95) == "spiral"
    # a radius that has shrunk to the origin is no cycle
    assert lr._orbit_kind({**cycle, "orbit_radius_half": [0.005, 0.005],
                           "orbit_radius_end": [0.005, 0.005]}, 1e-6, 0.95) == "spiral"


def test_the_double_well_entry_states_the_cycle_and_current_rules_its_analysis_applies():
    """Fig. 6.4c's "converges to limit cycles" (line 2989) is read off the noiseless flow with a
    one-sided rule: a radius that grows (an orbit nearing its cycle from inside) counts as a
    cycle, so the entry says "at least 95%", not "within 5%"; and it states the tolerance of
    the angular velocity against λπ^(3/2)/Z (5 standard errors plus 10%)."""
    from sgdlab.experiments.spec import load_experiment

    grown = {"orbit_speed_end": [0.5], "orbit_radius_half": [1.0], "orbit_radius_end": [1.2]}
    assert lr._orbit_kind(grown, 1e-6, 0.95) == "cycle"
    spec = load_experiment("chaudhari-double-well", "cpu")
    text = " ".join(spec.description.split())
    assert spec.options["cycle_ratio"] == 0.95 and "at least 95%" in text
    assert "within 5%" not in text
    assert "within 5 standard errors plus 10%" in text


def test_the_standard_error_of_the_mean_over_seeds():
    def run(seed, w, se):
        return stored_run("g", seed, summary={"angular_velocity": w, "angular_velocity_se": se})
    # sqrt(0.3² + 0.4²) / 2 over the two runs with a velocity; the NaN one is left out
    runs = [run(0, 1.0, 0.3), run(1, 1.2, 0.4), run(2, math.nan, 9.0)]
    assert lr._se_of_mean(runs) == pytest.approx(0.25)
    assert math.isnan(lr._se_of_mean([run(3, math.nan, 1.0)]))


def test_the_escape_runs_summary_and_kept_chains():
    from sgdlab.landscapes.two_basin import two_basin

    logged = []
    ctx = SimpleNamespace(run_id="r", device="cpu", store=SimpleNamespace(
        log_many=lambda rid, rows: logged.extend(rows)))
    params = {"method": "sgd", "iterations": 30, "repetitions": 8, "lr": 0.05,
              "sharpness_every": 10, "sharpness_samples": 4}
    out = lr.EscapeProcedure().run(SimpleNamespace(params=params, seed=0), ctx)
    s, d = out.summary, out.data
    # five chains kept by default, each of the 31 iterates (stride 1 below 200)
    assert len(d["trajectories"]) == 5 and len(d["trajectories"][0]) == 31
    land = two_basin("paper", seed=0)
    assert s["eta_lambda_max"] == pytest.approx(2 * 0.05 / land.gd_stable_lr())
    assert s["final_sharpness"] == d["sharpness"][-1] != d["sharpness"][0]
    # the Monte Carlo s.e. of the final sharpness, beside it (M = 4 draws per chain)
    assert s["final_sharpness_se"] == d["sharpness_stderr"][-1] > 0
    assert len(d["sharpness_stderr"]) == len(d["sharpness"])
    assert [(name, t) for name, t, _ in logged] == [
        ("expected_sharpness", t) for t in d["sharpness_steps"]]
    passage = d["first_passage"]
    assert s["never_reached"] == sum(t < 0 for t in passage) == d["first_passage_censored"]
    assert s["first_passage_mean"] == pytest.approx(
        sum(30 if t < 0 else t for t in passage) / 8)
    assert s["repetitions"] == 8 and 0 <= s["successes"] <= 8
    # the kept chains are thinned to about 200 points only past 400 iterates (stride
    # 251 // 200 = 1): 250 iterations keep all 251
    out = lr.EscapeProcedure().run(SimpleNamespace(params={
        "method": "gd", "iterations": 250, "repetitions": 2, "sharpness_every": 0,
        "trajectories": 2}, seed=0), ctx)
    assert [len(c) for c in out.data["trajectories"]] == [251, 251]


def test_speed_compares_the_slowest_of_the_faster_tier_with_the_fastest_of_the_other():
    ok, _, ev = lr.speed_finding({"x": [1.0, 3.0] * 5, "y": [10.0, 12.0] * 5},
                                 {"z": [30.0, 32.0] * 5, "w": [20.0, 22.0] * 5})
    assert ev["compared"] == {"y": 11.0, "w": 21.0} and ev["gap"] == 10.0 and ok is True
    # an interval whose lower end is exactly 0 does not lie above it: gap 2 = z·√(2/2 + 0)
    ok, _, ev = lr.speed_finding({"x": [0.0, 2.0]}, {"z": [3.0, 3.0]})
    assert ev["interval"] == [0.0, 4.0] and ok is None
    # one whose upper end is exactly 0 lies at or below it: gap −2 = −z·√(2/2 + 0)
    ok, _, ev = lr.speed_finding({"x": [3.0, 5.0]}, {"z": [2.0, 2.0]})
    assert ev["interval"] == [-4.0, 0.0] and ok is False
    # the half-width is z·√(s_a²/n_a + s_b²/n_b) = 2·√(8/2) = 4, not 2·(8/2)
    ok, _, ev = lr.speed_finding({"x": [2.0, 6.0]}, {"z": [8.5, 8.5]})
    assert ev["interval"] == [0.5, 8.5] and ok is True


def test_the_double_well_claims_on_their_default_thresholds():
    def run(lam, tv, w, zeros, seed=0):
        s = {"total_variation": tv, "angular_velocity": w, "angular_velocity_exact": 1.0,
             "angular_velocity_se": 0.01, "drift_zeros": zeros,
             "orbit_speed_end": [0.5], "orbit_radius_half": [1.0], "orbit_radius_end": [1.0],
             "orbit_turns": [3.0]}
        return stored_run(f"λ={lam}", seed, params={"lam": lam}, summary=s,
                          data={"histogram": [[0.25, 0.25], [0.25, 0.25]],
                                "stationary": [[0.25, 0.25], [0.25, 0.25]],
                                "edges1": [-1.0, 0.0, 1.0], "edges2": [-1.0, 0.0, 1.0]})

    def claims(w=1.0, tv=0.01, shift=0.05, off=0.0):
        runs = [run(0.0, tv, 0.0, [[1.0 + off, 0.0], [-1.0 - off, 0.0]]),
                run(0.5, 0.01, 0.5, [[1.0 + shift, 0.0], None]), run(1.5, 0.01, w, [None])]
        an = lr.double_well_analysis(SimpleNamespace(paper=PAPER, options={}), runs)
        return [c.agrees_with_paper for c in an.conclusions]
    # TV of each λ, zeros of λ = 0 at (±1, 0), λ = 0.5's moved, the current, the limit cycle
    assert claims() == [True] * 7
    assert claims(tv=0.06)[0] is False                    # TV below 0.05
    # λ = 0's zeros within 10⁻⁶ of (±1, 0); λ = 0.5's moved by more than 10⁻³
    assert claims(off=5e-7)[3] is True and claims(off=2e-6)[3] is False
    assert claims(shift=2e-3)[4] is True and claims(shift=5e-4)[4] is False
    # |1.12 − 1| against 5·0.01 + 0.1·1 = 0.15 agrees; |1.3 − 1| does not
    assert claims(w=1.12)[5] is True and claims(w=1.3)[5] is False


def test_the_sweep_marks_where_gd_stops_being_stable():
    # η·λ_max = 10 η: GD at the sharp minimum is stable below η = 2/λ_max = 0.2
    runs = [stored_run("sgd", key=f"sgd-{lr}", params={"method": "sgd", "lr": lr},
                       summary={"repetitions": 10, "successes": 5, "reached_rate": 0.5,
                                "eta_lambda_max": 10 * lr}) for lr in (0.1, 0.4)]
    spec = SimpleNamespace(paper=PAPER, options={"faster": ["sgd"], "slower": ["sgd"]})
    (_, fig), = lr.zhu_escape_sweep_analysis(spec, runs).figures
    # the subscript in mathtext (plain text drew "λ_max" with its underscore), the title
    # naming the figure of the paper as the entry's other figures do
    (mark,) = [ln for ln in fig.axes[0].get_lines()
               if ln.get_label() == r"η = 2/$\lambda_{max}$"]
    assert fig.axes[0].get_title().startswith("Zhu et al. Fig. 3(c) over η: escape success")
    assert list(mark.get_xdata()) == pytest.approx([0.2, 0.2])


def test_the_double_well_run_starts_half_its_chains_in_each_well_and_its_tv_by_hand():
    # barely run (0.01 of burn-in and of time): the chains are still by their starts (±1, 0)
    import numpy as np

    from sgdlab.landscapes.double_well import DoubleWell

    params = {"lam": 0.0, "chains": 400, "burn_time": 0.01, "time": 0.01,
              "orbit_starts": [[1.0, 0.0]], "orbit_time": 1.0}
    out = lr.DoubleWellProcedure().run(SimpleNamespace(params=params, seed=0),
                                       SimpleNamespace(device="cpu"))
    h = np.asarray(out.data["histogram"])                   # 44 × 50 bins of 0.1
    e1, e2 = np.asarray(out.data["edges1"]), np.asarray(out.data["edges2"])
    assert h[e1[:-1] < 0].sum() == pytest.approx(0.5) and h[e1[:-1] >= 0].sum() == 0.5
    # the total variation on the coarse grid (bins of 0.4 × 0.6 inside the fine ones):
    # half the L1 distance, the mass outside the grid included
    c1, c2 = np.linspace(-2.2, 2.2, 12), np.linspace(-2.4, 2.4, 9)
    i1 = np.searchsorted(np.round(e1, 6), np.round(c1, 6))
    i2 = np.searchsorted(np.round(e2, 6), np.round(c2, 6))
    coarse = np.add.reduceat(np.add.reduceat(h, i1[:-1], axis=0)[:, i2[0]:i2[-1]],
                             i2[:-1] - i2[0], axis=1)[:len(c1) - 1]
    probs = DoubleWell(0.0).stationary_bin_probabilities(c1, c2)
    tv = 0.5 * (np.abs(coarse - probs).sum() + abs(coarse.sum() - probs.sum()))
    assert out.summary["total_variation"] == pytest.approx(tv, rel=1e-9)


def _spy_double_well_steps(monkeypatch, velocities=None) -> list:
    """Records ("burn" or "time", dt, steps) of the double well's burn-in and timed run as
    they are called; the timed run's per-chain angular velocities become ``velocities`` when
    given."""
    import sgdlab.landscapes.double_well as double_well
    import sgdlab.landscapes.sde as sde

    seen = []
    simulate, winding = sde.simulate, double_well.winding_rate

    def spy_simulate(*a, dt, steps, **kw):
        seen.append(("burn", dt, steps))
        return simulate(*a, dt=dt, steps=steps, **kw)

    def spy_winding(dw, x0, *, dt, steps, **kw):
        seen.append(("time", dt, steps))
        final, w = winding(dw, x0, dt=dt, steps=steps, **kw)
        return final, w if velocities is None else torch.tensor(velocities, dtype=torch.float64)
    monkeypatch.setattr(sde, "simulate", spy_simulate)
    monkeypatch.setattr(double_well, "winding_rate", spy_winding)
    return seen


@pytest.mark.parametrize("lam, dt", [(0.9, 0.01), (1.0, 0.002), (1.5, 0.002)])
def test_the_double_well_steps_at_its_default_dt_and_reads_the_chains_standard_error(
        monkeypatch, lam, dt):
    # dt = 0.01 below λ = 1 and 0.002 from λ = 1 on; the chains'
    # per-chain velocities 1, 2, 3, 4: mean 2.5, standard error s/√n = √(5/3)/2
    seen = _spy_double_well_steps(monkeypatch, velocities=[1.0, 2.0, 3.0, 4.0])
    params = {"lam": lam, "chains": 4, "burn_time": 0.04, "time": 0.02,
              "orbit_starts": [[1.0, 0.0]], "orbit_time": 0.1}
    s = lr.DoubleWellProcedure().run(SimpleNamespace(params=params, seed=0),
                                     SimpleNamespace(device="cpu")).summary
    assert seen == [("burn", dt, round(0.04 / dt)), ("time", dt, round(0.02 / dt))]
    assert s["angular_velocity"] == 2.5
    assert s["angular_velocity_se"] == pytest.approx(math.sqrt(5 / 3) / 2, rel=1e-12)


def test_the_scoped_drift_smooths_each_stage_at_its_middle_time(monkeypatch):
    # 16 stages of the density's time: stage j's u is the smoothing at t(1 − (j + ½)/16),
    # t = 3.2: 3.1, 2.9, …, 0.1 (the first stage sees the most smoothed u)
    from sgdlab.landscapes import pde
    from sgdlab.landscapes.fokker_planck import downhill_drift

    x = torch.linspace(-2, 2, 41, dtype=torch.float64)

    def fn(z):
        return (z ** 2 - 1) ** 2
    times = {"viscous": [], "hopf": []}

    def viscous(f, x, tt, **kw):
        times["viscous"].append(tt)
        return f + tt * x                          # a drift of −(f' + tt): tells stages apart

    def hopf(fn, x, tt, **kw):
        times["hopf"].append(tt)
        return fn(x) - tt * x, None
    monkeypatch.setattr(pde, "viscous_hj", viscous)
    monkeypatch.setattr(pde, "hopf_lax_newton", hopf)
    out = lr._fp_drifts(fn, x, 3.2, 1.0, x, x, fn(x), "scoped")
    want = [3.2 - 0.1 * (2 * j + 1) for j in range(16)]
    assert times["viscous"] == pytest.approx(want, abs=1e-12)
    assert times["hopf"] == pytest.approx(want, abs=1e-12)
    for j in (0, 15):
        assert torch.allclose(out[lr._VISCOUS][j], downhill_drift(fn(x) + want[j] * x, x),
                              rtol=0, atol=1e-12)


def test_a_minimum_exactly_on_the_nearly_optimal_level_counts_and_the_basins_ends():
    # f on x = 0 … 10: min 0 at x = 2, max 10, level 0 + 0.1·10 = 1: the minimum 1 at x = 5
    # lies on it (nearly optimal), the one of 2 at x = 8 above; the strict maxima at x = 4
    # and 6 cut the basins [0, 3], [4, 5], [6, 10]
    x = torch.arange(11, dtype=torch.float64)
    values = torch.tensor([10.0, 4.0, 0.0, 4.0, 9.0, 1.0, 9.0, 2.5, 2.0, 2.5, 10.0],
                          dtype=torch.float64)

    def fn(z):
        return values.clone()
    frozen = {lr._VISCOUS: values, lr._HOPF: values}
    s, _ = lr.fokker_planck_densities({"rho0_mean": 5.0, "rho0_std": 1.0, "horizon": 0.1},
                                      x, fn, 0.5, 1.0, x, x, values, frozen)
    assert s["fp: nearly_optimal_level"] == 1.0
    assert s["fp: nearly_optimal_minima"] == [2.0, 5.0]
    assert s["fp: start_is_nearly_optimal"] == 1.0 and s["fp: start_is_global"] == 0.0
    assert s["fp: global_basin"] == [0.0, 3.0] and s["fp: start_basin"] == [4.0, 5.0]
    # the start minimum is f's lowest point of the start basin (x = 5, f = 1), not its top
    assert (s["fp: start_min"], s["fp: f_start_min"]) == (5.0, 1.0)


def test_an_escape_chain_already_in_the_flat_basin_at_iteration_0_has_reached_it(monkeypatch):
    # a start in the flat basin (``start``) passes at iteration 0: reached, not censored;
    # only −1 is "never", counted at the run length 10 in the mean
    import sgdlab.landscapes.escape as escape

    def fake(land, cfg, methods):
        (m,) = methods
        return SimpleNamespace(sharpness={}, sharpness_stderr={}, sharpness_steps=[],
                               success_rate={m: 2 / 3},
                               reached_rate={m: 2 / 3},
                               first_passage={m: torch.tensor([0, -1, 4])},
                               successes=lambda _m: 2)
    monkeypatch.setattr(escape, "escape_experiment", fake)
    ctx = SimpleNamespace(run_id="r", device="cpu",
                          store=SimpleNamespace(log_many=lambda rid, rows: None))
    params = {"method": "sgd", "iterations": 10, "repetitions": 3, "trajectories": 0}
    out = lr.EscapeProcedure().run(SimpleNamespace(params=params, seed=0), ctx)
    assert out.summary["never_reached"] == out.data["first_passage_censored"] == 1
    assert out.summary["first_passage_mean"] == pytest.approx((0 + 10 + 4) / 3)
    assert "trajectories" not in out.data


def test_passages_all_at_one_iteration_cannot_order_the_methods():
    # every repetition of both compared methods at the same passage (here: all censored at
    # the run length): no spread, an interval of width 0 at gap 0 — untestable, not "does not
    # appear"; distinct passages of zero spread are ordered by their gap alone
    ok, _, ev = lr.speed_finding({"a": [600.0] * 3}, {"b": [600.0] * 3})
    assert ok is None and ev["ordering"] == "is untestable" and ev["interval"] == [0.0, 0.0]
    ok, _, ev = lr.speed_finding({"a": [5.0] * 3}, {"b": [20.0] * 3})
    assert ok is True and ev["interval"] == [15.0, 15.0]
    ok, _, ev = lr.speed_finding({"a": [20.0] * 3}, {"b": [5.0] * 3})
    assert ok is False and ev["ordering"] == "does not appear"


def test_an_ordering_interval_of_width_0_at_gap_0_lies_at_0_not_above_it():
    # at z = 0 the Newcombe interval is the point gap: equal rates 3/10 and 3/10 give [0, 0],
    # which "lies at or below 0" (False), not above it; 4/10 against 3/10 lies above
    ok, gap, ci = lr.ordering_verdict({"a": (3, 10)}, {"b": (3, 10)}, z=0.0)
    assert (ok, gap, ci) == (False, 0.0, (0.0, 0.0))
    ok, gap, ci = lr.ordering_verdict({"a": (4, 10)}, {"b": (3, 10)}, z=0.0)
    assert ok is True and ci[0] == ci[1] == pytest.approx(0.1, abs=1e-15)


def test_the_double_well_at_lambda_0_holds_the_ou_law_of_its_second_coordinate():
    import numpy as np

    # λ = 0: X₂ is the Ornstein–Uhlenbeck dX₂ = −X₂ dt + √2 dB of Example 6.43 (β = 1),
    # independent of X₁; from X₂ = 0, n Euler–Maruyama steps of dt give exactly
    # Var X₂ = 2dt (1 − (1 − dt)²ⁿ) / (1 − (1 − dt)²), 0.871 here (0.435 for a √1 noise)
    dt, n, chains = 0.01, 100, 2000
    params = {"lam": 0.0, "chains": chains, "burn_time": 0.5, "time": 0.5,
              "orbit_starts": [[1.0, 0.0]], "orbit_time": 1.0}
    out = lr.DoubleWellProcedure().run(SimpleNamespace(params=params, seed=0),
                                       SimpleNamespace(device="cpu"))
    var = 2 * dt * (1 - (1 - dt) ** (2 * n)) / (1 - (1 - dt) ** 2)
    h = np.asarray(out.data["histogram"])
    mid = 0.5 * (np.asarray(out.data["edges2"])[:-1] + np.asarray(out.data["edges2"])[1:])
    x2 = h.sum(0)                       # X₂'s bins, over the chains with X₁ inside the grid

    def p(a):                           # P(|X₂| < a) of N(0, var)
        return math.erf(a / math.sqrt(2 * var))
    # by independence, the share of |X₂| < 1 among the histogram's chains is the Gaussian's
    # P(|X₂| < 1) / P(|X₂| < 2.5); its binomial standard error is ≈ 0.01
    share = x2[np.abs(mid) < 1].sum() / x2.sum()
    assert share == pytest.approx(p(1.0) / p(2.5), abs=0.04)


def test_pspin_descends_by_default_as_section_2_4_1_with_n_100_eta_0_1_and_tol_1e_4(monkeypatch):
    # §2.4.1: n = 100 spins, "gradient descent with a fixed step size η = 0.1 and stop when
    # ‖∇H̃‖₂ ≤ 10⁻⁴", from starts uniform on the sphere drawn apart from the couplings
    from sgdlab.landscapes.pspin import PSpinGlass, starts_seed

    class Reached(Exception):
        pass
    seen = {}

    def spy(self, starts, **kw):
        seen.update(kw, n=self.n, starts=starts)
        raise Reached
    monkeypatch.setattr(PSpinGlass, "descend", spy)
    with pytest.raises(Reached):
        lr.PSpinProcedure().run(SimpleNamespace(params={"regime": "trivial", "starts": 3},
                                                seed=5), SimpleNamespace(device="cpu"))
    assert (seen["n"], seen["lr"], seen["tol"]) == (100, 0.1, 1e-4)
    want = PSpinGlass(100, regime="trivial", seed=5).random_starts(
        3, generator=torch.Generator().manual_seed(starts_seed(5)))
    assert torch.equal(seen["starts"], want)


def test_each_stage_of_a_staged_drift_starts_at_its_own_time():
    # 16 stages over τ = 0.7: stage j starts at τ·j/16, though (0.7·3/16)/0.7·16 is 2.999…
    # in floating point (also j = 6, 12): the stage at its start time is j, not j − 1
    stages = [torch.full((2,), float(j)) for j in range(16)]
    drift, times = lr._staged(stages, 0.7)
    assert times == [0.7 * j / 16 for j in range(1, 16)]
    for j in range(1, 16):
        assert float(drift(times[j - 1])[0]) == j, j
    assert float(drift(0.7)[0]) == 15 and float(drift(0.0)[0]) == 0


def test_the_double_well_takes_the_steps_nearest_its_times_over_dt(monkeypatch):
    # 0.3 / 0.1 and 0.7 / 0.1 are 2.9999… and 6.9999… in floating point: 3 and 7 steps (the
    # times asked for), not 2 and 6 (a truncation that cut a step off each stage)
    seen = _spy_double_well_steps(monkeypatch)
    params = {"lam": 0.5, "chains": 2, "dt": 0.1, "burn_time": 0.3, "time": 0.7,
              "orbit_starts": [[1.0, 0.0]], "orbit_time": 0.1}
    lr.DoubleWellProcedure().run(SimpleNamespace(params=params, seed=0),
                                 SimpleNamespace(device="cpu"))
    assert [steps for _, _, steps in seen] == [3, 7]


def test_the_pde_run_reads_c_t_star_t_w_and_the_minima_curvatures_off_f(monkeypatch):
    # f'' of the Fig. 4.1 loss in closed form, on x ∈ [−4, 4]: C = max f'' (Lemma 4.17),
    # t* = 1/max(−f'') (Example 4.15's range t ≤ t*), t_w = t*/2 and the two bounds
    # u_xx ≤ 1/(C⁻¹ + t) at t and at t_w; the densities are left out (stubbed: not read here)
    monkeypatch.setattr(lr, "fokker_planck_densities", lambda *a, **k: ({}, {}))
    z = torch.linspace(-4, 4, 8001, dtype=torch.float64)
    a, b = (z + 1.5) ** 2, (z - 1.5) ** 2
    f_xx = (0.1 - 0.8 * (4 * a - 2) * torch.exp(-a) - (256 * b - 16) * torch.exp(-8 * b)
            - 3.6 * torch.sin(6 * z))
    c, t_star = float(f_xx.max()), 1 / float((-f_xx).max())
    s = lr.PDEProcedure().run(SimpleNamespace(params={"t": 0.5, "points": 121}, seed=0),
                              None).summary
    assert s["C"] == pytest.approx(c, rel=1e-9)
    assert s["t_star"] == pytest.approx(t_star, rel=1e-9)
    assert s["t_w"] == pytest.approx(t_star / 2, rel=1e-9)
    assert s["bound"] == pytest.approx(1 / (1 / c + 0.5), rel=1e-9)
    assert s["bound_w"] == pytest.approx(1 / (1 / c + t_star / 2), rel=1e-9)
    # f's narrow minimum (near +1.5) and wide one (near −1.5), each with the grid's second
    # difference at that very point, (f(x − dx) − 2f(x) + f(x + dx)) / dx², dx = 8/120

    def f(v):
        return (0.05 * v ** 2 - 0.8 * math.exp(-(v + 1.5) ** 2) - math.exp(-8 * (v - 1.5) ** 2)
                + 0.1 * math.sin(6 * v))
    dx = 8 / 120
    for name in ("narrow", "wide"):
        v = s[f"x_{name}"]
        want = (f(v - dx) - 2 * f(v) + f(v + dx)) / dx ** 2
        assert s[f"f_xx_{name}"] == pytest.approx(want, rel=1e-9), name
    assert s["x_wide"] < 0 < s["x_narrow"] and s["f_xx_narrow"] > s["f_xx_wide"]
