"""The Zhu et al. (2019) entries encode what the paper says: the statements each judges, the
quotes that carry them (at their lines of the text), and the analyses that judge them, on
hand-made runs."""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sgdlab.errors import ConfigError
from sgdlab.experiments.procedures import StoredRun
from sgdlab.experiments.procedures.common import check_claims
from sgdlab.experiments.spec import catalogue_files, load_experiment, read_file
from sgdlab.testing import paper_runs
from sgdlab.testing import stored_run as run

ROOT = Path(__file__).resolve().parents[2]
TEXT = "zhu-2019-anisotropic-noise.txt"
ZHU = sorted(n for n in catalogue_files() if n.startswith("zhu-"))
SCALES = ("smoke", "cpu", "paper")
CURVATURE_AWARE = ["sgd", "gld-leading", "gld-hessian"]
OTHERS = ["gd", "gld-const", "gld-dynamic", "gld-diagonal"]


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


@pytest.fixture(scope="module")
def paper_lines(paper_lines_of) -> list[str]:
    return paper_lines_of(TEXT)


def _quotes(name: str) -> list[tuple[str, str]]:
    paper = read_file(catalogue_files()[name])["paper"]
    return [(paper["quote"], paper["where"])] + [(q["quote"], q["where"])
                                                 for q in paper.get("quotes", [])]


@pytest.mark.parametrize("name", ZHU)
def test_every_quote_stands_at_the_line_it_names(name, paper_lines):
    for quote, where in _quotes(name):
        m = re.search(r"lines? (\d+)", where)
        assert m, f"{name}: {where!r} names no line"
        assert _norm(quote) in _norm(paper_lines[int(m.group(1)) - 1]), (name, where)


@pytest.mark.parametrize("name", ZHU)
def test_every_quote_is_the_texts_own_up_to_line_breaks(name, paper_lines):
    """Verbatim: the quote's characters are the text's, spaces and line breaks aside (the
    letters-and-digits match above let Suppl. B's "**SGD**" be quoted as "SGD")."""
    def spaced(text: str) -> str:
        return " ".join(text.split())
    text = spaced(" ".join(paper_lines))
    for quote, where in _quotes(name):
        assert spaced(quote) in text, (name, where, spaced(quote)[:80])


def _quoted(name: str, passage: str, line: int) -> bool:
    return any(_norm(passage) in _norm(q) and re.search(rf"\bline {line}\b", w)
               for q, w in _quotes(name))


# --- zhu-escape-2d: Fig. 3(a)-(b), how fast each method reaches the flat basin ---------------
@pytest.mark.parametrize("scale", SCALES)
def test_escape_2d_judges_the_speed_tiers_of_fig3ab(scale):
    speed = load_experiment("zhu-escape-2d", scale).options["speed"]
    # "GLD Hessian ... fastest, while SGD and GLD leading take the second places. Moreover,
    # the other optimizers ... much slower" (line 189)
    assert [sorted(t) for t in speed["tiers"]] == [
        ["gld_hessian"], ["gld_leading", "sgd"],
        ["gd", "gld_const", "gld_diag", "gld_dynamic"]]
    assert float(speed.get("z", 2.0)) == 2.0
    assert len(speed["claims"]) == 2 and all("line 189" in c for c in speed["claims"])
    assert _quoted("zhu-escape-2d", "GLD Hessian as expected converges to the flat minimum "
                   "fastest, while SGD and GLD leading take the second places", 189)


def test_escape_records_each_repetitions_first_passage():
    from sgdlab.landscapes.escape import EscapeConfig, escape_experiment
    from sgdlab.landscapes.two_basin import two_basin

    # the rescaled landscape keeps GD at the sharp minimum: its chains never reach
    for name in ("paper", "rescaled"):
        land = two_basin(name, dtype=torch.float64)
        cfg = EscapeConfig(iterations=25, repetitions=12, sharpness_every=0, seed=3)
        res = escape_experiment(land, cfg, methods=["gd", "gld_const", "sgd"])
        for m, passage in res.first_passage.items():
            inside = land.in_flat_basin(res.trajectory[m]) \
                & torch.isfinite(res.trajectory[m]).all(-1)          # (T+1, R)
            first = [int(col.nonzero()[0]) if col.any() else -1 for col in inside.T]
            assert passage.tolist() == first, (name, m)
            assert res.reached_rate[m] == pytest.approx(float((passage >= 0).double().mean()))
        if name == "rescaled":
            assert (res.first_passage["gd"] == -1).all()


def test_escape_procedure_stores_the_passages_and_their_restricted_mean():
    from sgdlab.experiments.procedures.landscape_runs import EscapeProcedure

    logged = []
    ctx = SimpleNamespace(run_id="r", device="cpu", store=SimpleNamespace(
        log_many=lambda rid, rows: logged.extend(rows)))
    params = {"method": "gd", "landscape": "rescaled", "iterations": 20, "repetitions": 6,
              "sharpness_every": 10, "sharpness_samples": 4, "trajectories": 0}
    out = EscapeProcedure().run(SimpleNamespace(params=params, seed=0), ctx)
    assert out.data["first_passage"] == [-1] * 6
    # a chain that never reached counts at the run length (censored there)
    assert out.summary["first_passage_mean"] == 20 and out.summary["never_reached"] == 6


@pytest.mark.parametrize("landscape", ["paper", {"name": "paper", "data_var": 1e-4},
                                       "authors-code"])
def test_escape_procedure_draws_the_data_shifts_of_its_seed(landscape):
    """The seeds of an escape entry are data draws: the run's seed draws the x_k (it seeded
    only the noise, every seed sharing seed 0's shifts), unless the landscape names one."""
    from sgdlab.experiments.procedures.landscape_runs import EscapeProcedure
    from sgdlab.landscapes.two_basin import two_basin

    ctx = SimpleNamespace(run_id="r", device="cpu",
                          store=SimpleNamespace(log_many=lambda rid, rows: None))
    params = {"method": "gd", "landscape": landscape, "iterations": 2, "repetitions": 2,
              "sharpness_every": 0, "trajectories": 0}
    minima = []
    for seed in (0, 1):
        out = EscapeProcedure().run(SimpleNamespace(params=dict(params), seed=seed), ctx)
        opts = dict(landscape) if isinstance(landscape, dict) else {"name": landscape}
        land = two_basin(opts.pop("name"), seed=seed, **opts)
        assert out.data["landscape"]["sharp_minimum"] == land.sharp_minimum.tolist()
        minima.append(out.data["landscape"]["sharp_minimum"])
    assert minima[0] != minima[1]
    # a seed given with the landscape is kept (one data draw shared by every run)
    fixed = {"name": "paper", "seed": 5}
    out = EscapeProcedure().run(SimpleNamespace(params={**params, "landscape": fixed},
                                                seed=1), ctx)
    assert out.data["landscape"]["sharp_minimum"] == \
        two_basin("paper", seed=5).sharp_minimum.tolist()


def _escape_runs(passages: dict[str, list[list[int]]], iterations: int = 600):
    return [run(m, s, params={"method": m, "lr": 0.1, "iterations": iterations},
                summary={"success_rate": 1.0, "successes": len(ts), "repetitions": len(ts),
                         "reached_rate": 1.0, "final_sharpness": 0.1,
                         "first_passage_mean": sum(iterations if t < 0 else t for t in ts)
                         / len(ts), "never_reached": sum(t < 0 for t in ts)},
                data={"first_passage": ts})
            for m, per_seed in passages.items() for s, ts in enumerate(per_seed)]


def _speed(passages, **speed):
    from sgdlab.experiments.procedures.landscape_runs import zhu_escape_analysis

    spec = SimpleNamespace(paper={"claim": "x", "figure": "Fig. 3"}, options={
        "speed": {"tiers": [["a"], ["b"], ["c"]], "claims": ["a first", "b next"], **speed}})
    return zhu_escape_analysis(spec, _escape_runs(passages))


def test_speed_ordering_by_hand():
    fast, mid, slow = [5, 6, 7, 6] * 10, [20, 22, 24, 22] * 10, [100, 110, 90, 100] * 10
    res = _speed({"a": [fast], "b": [mid], "c": [slow]})
    one, two = res.conclusions
    assert (one.claim, two.claim) == ("a first", "b next")
    assert one.agrees_with_paper is True and two.agrees_with_paper is True
    assert one.evidence["gap"] == pytest.approx(22 - 6)
    # sample variances (ddof 1) 20/39 and 80/39 over 40 repetitions each
    half = 2 * ((20 / 39 + 80 / 39) / 40) ** 0.5
    assert one.evidence["interval"] == pytest.approx([16 - half, 16 + half])
    # b slower than c: the second pair disagrees, the first still agrees
    one, two = _speed({"a": [fast], "b": [slow], "c": [mid]}).conclusions
    assert one.agrees_with_paper is True and two.agrees_with_paper is False
    # chains that never reached count at the run length: b's never-reached chains make it
    # slower than c's, though b's reached ones are quick
    never = [-1] * 30 + [3] * 10
    one, two = _speed({"a": [fast], "b": [never], "c": [mid]}).conclusions
    assert two.evidence["compared"]["b"] == pytest.approx((30 * 600 + 30) / 40)
    assert two.agrees_with_paper is False
    # every repetition of both compared methods at one iteration: untestable, not a verdict
    one, _ = _speed({"a": [[1] * 40], "b": [[1] * 40], "c": [slow]}).conclusions
    assert one.agrees_with_paper is None and "untestable" in one.text
    # the table shows the mean first passage and the chains that never reached
    table = _speed({"a": [fast], "b": [never], "c": [mid]}).table("escape_success")
    rows = {r[0]: dict(zip(table.columns, r)) for r in table.rows}
    assert rows["b"]["mean first passage (iterations)"] == pytest.approx((30 * 600 + 30) / 40)
    assert rows["b"]["never reached"] == 30 and rows["a"]["never reached"] == 0


def test_speed_ordering_within_the_seed_spread_is_inconclusive():
    # pooled, a is clearly faster than b; but one seed of a is slower than b's seeds
    a = [[2] * 400, [2] * 400, [10] * 400]        # seed means 2, 2, 10: std 4.6
    b = [[8] * 400, [9] * 400, [7] * 400]         # gap 8 − 4.67 = 3.3
    one, _ = _speed({"a": a, "b": b, "c": [[500] * 400] * 3}).conclusions
    assert one.evidence["interval"][0] > 0
    assert one.agrees_with_paper is None and "seed-to-seed spread" in one.text


def test_speed_ordering_without_recorded_passages_or_with_unknown_methods():
    runs = _escape_runs({"a": [[1]], "b": [[2]], "c": [[3]]})
    for r in runs:
        del r.data["first_passage"]         # runs made before the passages were recorded
    from sgdlab.experiments.procedures.landscape_runs import zhu_escape_analysis

    spec = SimpleNamespace(paper={"claim": "x"}, options={"speed": {"tiers": [["a"], ["b"]]}})
    (c,) = zhu_escape_analysis(spec, runs).conclusions
    assert c.agrees_with_paper is None and "did not record" in c.text
    with pytest.raises(ConfigError, match="'d'"):
        _speed({"a": [[1]], "b": [[2]], "c": [[3]]}, tiers=[["a"], ["d"]])


# --- zhu-noisy-label: the training facts of lines 227 and 236; line 264 -----------------------
def _claims(name, scale="cpu"):
    return load_experiment(name, scale).options["claims"]


@pytest.mark.parametrize("scale", SCALES)
def test_noisy_label_states_the_training_facts_as_claims_of_their_own(scale):
    spec = load_experiment("zhu-noisy-label", scale)
    level, near_zero = spec.options["references"]
    assert spec.options["references"][level] == {"train_acc": 0.999}
    # "near zero" cross-entropy: log 10 / 100, two orders under a uniform guess over 10 classes
    assert spec.options["references"][near_zero] == {"train_loss": 0.023}
    assert "log 10 / 100 = 0.023" in near_zero and "log 10 / 100" in spec.description
    assert abs(0.023 - math.log(10) / 100) < 5e-4
    by_groups = {(tuple(c["above"][0]), tuple(c["above"][1]), c["metric"]): c
                 for c in spec.options["claims"]}
    labels = [r.label for r in spec.expand(data_dir="/d") if r.label != "gd-start"]
    gd_start = by_groups[(("gd-start",), (level,), "train_acc")]
    dynamics = [k for k in by_groups if k[1] == (level,) and k[0] != ("gd-start",)]
    assert len(dynamics) == 1 and sorted(dynamics[0][0]) == sorted(labels)
    assert "line 227" in gd_start["claim"] and "line 236" in by_groups[dynamics[0]]["claim"]
    # the loss halves: the reference above each group, the train loss below it
    loss_start = by_groups[((near_zero,), ("gd-start",), "train_loss")]
    losses = [k for k in by_groups if k[0] == (near_zero,) and k[1] != ("gd-start",)]
    assert len(losses) == 1 and sorted(losses[0][1]) == sorted(labels)
    assert "line 227" in loss_start["claim"] and "line 236" in by_groups[losses[0]]["claim"]
    assert _quoted("zhu-noisy-label", "near zero training loss and 100% training accuracy", 227)
    # the orderings are not made to depend on them
    assert not any(c.get("requires") for c in spec.options["claims"])
    assert (tuple(CURVATURE_AWARE), tuple(OTHERS), "test_acc") in by_groups
    assert _quoted("zhu-noisy-label", "all the optimization dynamics can easily reach 100% "
                   "training accuracy and near zero cross entropy loss", 236)
    assert _quoted("zhu-noisy-label", "GLD Hessian escapes from the sharp minimum slightly "
                   "better than SGD and GLD leading", 264)
    # one seed: no spread to judge "slightly" with, said in the description
    assert len(spec.seeds) == 1 and "slightly better" in spec.description
    assert "not judged" in spec.description


def test_noisy_label_references_by_hand():
    from sgdlab.experiments.procedures.zhu import zhu_noisy_label

    spec = load_experiment("zhu-noisy-label", "cpu")
    accs = {"gd-start": 0.9967, **{g: 1.0 for g in CURVATURE_AWARE + OTHERS}}
    accs["sgd"] = 0.9958

    def judged(accs):
        runs = [run(g, summary={"train_acc": a, "test_acc": 0.7, "expected_sharpness": 0.005})
                for g, a in accs.items()]
        return {c.claim: c.agrees_with_paper
                for c in zhu_noisy_label(spec, runs).conclusions}
    res = judged(accs)
    claims = {c["claim"]: c for c in spec.options["claims"]}
    start = next(k for k, c in claims.items() if c["above"][0] == ["gd-start"])
    every = next(k for k, c in claims.items() if len(c["above"][0]) == 7)
    assert (res[start], res[every]) == (False, False)
    res = judged({g: (1199 / 1200 if g == "gd-start" else 1.0) for g in accs})
    assert (res[start], res[every]) == (True, True)
    bad = SimpleNamespace(paper=spec.paper, options={"references": {"gd": {"train_acc": 1}}})
    with pytest.raises(ConfigError, match="references"):
        zhu_noisy_label(bad, [run("gd", summary={"train_acc": 1.0})])


def test_noisy_label_judges_near_zero_loss_by_hand():
    """Lines 227 and 236's "near zero" loss: each group's final train loss below 0.023."""
    from sgdlab.experiments.procedures.zhu import zhu_noisy_label

    spec = load_experiment("zhu-noisy-label", "cpu")
    claims = {c["claim"]: c for c in spec.options["claims"] if c["metric"] == "train_loss"}
    start = next(k for k, c in claims.items() if c["above"][1] == ["gd-start"])
    every = next(k for k, c in claims.items() if len(c["above"][1]) == 7)

    def judged(losses):
        runs = [run(g, summary={"train_acc": 1.0, "train_loss": loss, "test_acc": 0.7,
                                "expected_sharpness": 0.005}) for g, loss in losses.items()]
        return {c.claim: c for c in zhu_noisy_label(spec, runs).conclusions}

    losses = {"gd-start": 0.022, **{g: 0.001 for g in CURVATURE_AWARE + OTHERS}}
    res = judged(losses)
    assert (res[start].agrees_with_paper, res[every].agrees_with_paper) == (True, True)
    assert "0.022" in res[start].text and "0.023" in res[start].text
    res = judged({**losses, "gd-start": 0.024, "gld-const": 0.03})
    assert (res[start].agrees_with_paper, res[every].agrees_with_paper) == (False, False)
    # a run without a loss decides nothing
    runs = [run(g, summary={"train_acc": 1.0}) for g in losses]
    res = {c.claim: c for c in zhu_noisy_label(spec, runs).conclusions}
    assert res[start].agrees_with_paper is None and res[every].agrees_with_paper is None


# --- zhu-gld-const-tuning: GLD const over Suppl. C's grid of σ (line 437) against SGD ----------
GRID = {f"gld-const-1e-{k}": 10.0 ** -k for k in range(1, 6)}


@pytest.mark.parametrize("scale", SCALES)
def test_gld_const_tuning_runs_noisy_labels_setting_over_suppl_cs_grid(scale):
    """The same GD solution, SGD and GLD const as zhu-noisy-label at each scale, GLD const at
    every σ of {10⁻¹, …, 10⁻⁵} (line 437) in place of the one tuned σ = 10⁻³."""
    def runs(name):
        return {r.label: r for r in load_experiment(name, scale).expand(data_dir="/d")}
    mine, noisy = runs("zhu-gld-const-tuning"), runs("zhu-noisy-label")
    assert set(mine) == {"gd-start", "sgd", *GRID}
    for label in ("gd-start", "sgd"):
        assert mine[label].params == noisy[label].params, label
    for label, sigma in GRID.items():
        const = copy.deepcopy(noisy["gld-const"].params)
        const["optimizer"]["sigma"] = sigma
        assert mine[label].params == const and mine[label].depends == ("gd-start",), label
    assert _quoted("zhu-gld-const-tuning", "We tuned the noise std in range of", 437)
    assert _quoted("zhu-gld-const-tuning", "well tuned isotropic noise cannot beat", 21)


def test_gld_const_tuning_judges_the_best_sigma_against_sgd_by_hand():
    """Claim 1 reads max over the grid (a tie with SGD passes: "cannot beat"); claim 2 reads
    the expected sharpness of the σ with the best test accuracy, whatever the others' is."""
    from sgdlab.experiments.procedures.zhu import zhu_noisy_label

    spec = load_experiment("zhu-gld-const-tuning", "cpu")
    acc = spec.options["claims"][0]["claim"]

    def judged(accs, sharp):
        runs = [run(g, summary={"test_acc": accs[g], "expected_sharpness": sharp[g],
                                "train_acc": 1.0, "train_loss": 0.01}) for g in accs]
        return zhu_noisy_label(spec, runs).conclusions

    accs = {"gd-start": 0.72, "sgd": 0.72, **dict(zip(GRID, [0.3, 0.71, 0.705, 0.7, 0.7]))}
    # σ = 10⁻¹ wrecked the net into a flat region: flatter than SGD, but not the tuned σ
    sharp = {"gd-start": 0.0, "sgd": 0.004, **dict(zip(GRID, [0.001, 0.006, 0.005, 0.005,
                                                              0.005]))}
    c_acc, c_sharp = judged(accs, sharp)
    assert (c_acc.claim, c_acc.agrees_with_paper, c_sharp.agrees_with_paper) == (acc, True, True)
    assert "gld-const-1e-2" in c_sharp.text and c_sharp.evidence["a"] == {"gld-const-best": 0.006}
    accs["gld-const-1e-4"] = 0.72                              # a tie: "cannot beat" holds
    assert judged(accs, sharp)[0].agrees_with_paper is True
    # one test image more than SGD (of 1,000) beats it; the tuned σ is now 10⁻⁴
    accs["gld-const-1e-4"] = 0.721
    beats_sgd = judged(accs, sharp)
    assert [c.agrees_with_paper for c in beats_sgd] == [False, True]
    assert "gld-const-1e-4" in beats_sgd[1].text
    sharp["gld-const-1e-4"] = 0.003
    assert judged(accs, sharp)[1].agrees_with_paper is False


# --- zhu-rmsprop-sgd: SGD against the RMSProp solution it starts from -------------------------
@pytest.mark.parametrize("scale", SCALES)
def test_rmsprop_sgd_compares_with_its_own_state_at_the_switch(scale):
    spec = load_experiment("zhu-rmsprop-sgd", scale)
    runs = {r.label: r.params for r in spec.expand(data_dir="/d")}
    p = runs["rmsprop-then-sgd"]
    switch = p["optimizer"]["switch_step"]
    at = {d["name"]: d for d in spec.options["derived"] if d.get("reduce") == "at_step"}
    assert {d["step"] for d in at.values()} == {switch}
    assert {d["metric"] for d in at.values()} == {"test_acc", "train_acc", "sharpness/expected"}
    # the records the derived values read exist at the switch itself
    every = [m["every"] for m in p["measure"] if m["name"] == "sharpness"]
    assert switch % p["eval_every_steps"] == 0 and every and switch % every[0] == 0
    claims = [c for c in spec.options["claims"] if c.get("metric_b") in at]
    assert sorted(next(k for k in ("greater", "less") if k in c) for c in claims) == \
        ["greater", "less"]
    for c in claims:
        kind = "greater" if "greater" in c else "less"
        assert c[kind] == ["rmsprop-then-sgd", "rmsprop-then-sgd"]
        assert at[c["metric_b"]]["metric"] == ("test_acc" if kind == "greater"
                                               else "sharpness/expected")
    # RMSProp continued stays as a control, said to be beyond the paper
    control = [c for c in spec.options["claims"] if "rmsprop" in c.get("greater", [])
               + c.get("less", [])]
    assert len(control) == 2 and all("control" in c["claim"] for c in control)
    assert _quoted("zhu-rmsprop-sgd", "Then initialized with the RMSProp solution, SGD is run",
                   320)


@pytest.mark.parametrize("scale", SCALES)
def test_rmsprop_form_eq15_runs_eqs_14_15_in_both_groups_and_pytorch_keeps_the_runs(scale):
    """Reading rmsprop-form: ``pytorch`` (default) is the file's torch RMSprop, unchanged;
    ``eq15`` puts rmsprop-eq15 (Suppl. F's η, ρ = α = 0.99, δ = ε = 10⁻⁸) at the base
    optimizer of ``rmsprop`` and at the switch's first of ``rmsprop-then-sgd``, nothing else."""
    from sgdlab.optim import RMSPropEq15, build_optimizer

    def by_label(form=None):
        readings = {"rmsprop-form": form} if form else None
        spec = load_experiment("zhu-rmsprop-sgd", scale, readings=readings)
        return {r.label: r for r in spec.expand("/d")}

    default, pytorch, eq15 = by_label(), by_label("pytorch"), by_label("eq15")
    assert {k: r.key for k, r in pytorch.items()} == {k: r.key for k, r in default.items()}
    assert default["rmsprop"].params["optimizer"]["name"] == "rmsprop"
    hyper = {"lr": 1e-3, "rho": 0.99, "delta": 1e-8}
    assert eq15["rmsprop"].params["optimizer"] == {"name": "rmsprop-eq15", **hyper}
    opt = eq15["rmsprop-then-sgd"].params["optimizer"]
    was = default["rmsprop-then-sgd"].params["optimizer"]
    assert opt == {**was, "first": "rmsprop-eq15", "first_hyper": hyper}
    for label in eq15:      # the rest of each run as the file has it
        mine = {k: v for k, v in eq15[label].params.items() if k != "optimizer"}
        assert mine == {k: v for k, v in default[label].params.items() if k != "optimizer"}
        assert eq15[label].key != default[label].key
    p = torch.zeros(2, requires_grad=True)
    built = build_optimizer(opt["name"], [p], **{k: v for k, v in opt.items() if k != "name"})
    assert isinstance(built.first, RMSPropEq15)


def test_rmsprop_sgd_quotes_first_what_the_text_concludes_not_the_experiments_purpose():
    """Line 320 says why SGD is run ("to check whether SGD can escape"), not what it found; the
    conclusion the claims rest on is line 322's suggestion, the entry's main quote."""
    paper = read_file(catalogue_files()["zhu-rmsprop-sgd"])["paper"]
    assert _norm("Thus, it is suggested that") in _norm(paper["quote"])
    assert _norm("switched to SGD in later iterations") in _norm(paper["quote"])
    assert re.search(r"\bline 322\b", paper["where"])
    assert _quoted("zhu-rmsprop-sgd", "SGD is run to check whether SGD can escape", 320)


def test_rmsprop_sgd_claims_rest_on_line_322_not_on_the_purpose_of_line_320(paper_lines):
    """Both of the paper's claims (better generalisation, flatter minima) are line 322's
    suggestion, "diffuse towards flatter minima for better generalization"; line 320 only says
    why SGD is run, so no claim cites it as its support."""
    assert "flatter minima for better generalization" in paper_lines[321]
    claims = [c for c in _claims("zhu-rmsprop-sgd") if "control" not in c["claim"]]
    assert len(claims) == 2
    for c in claims:
        assert "line 322" in c["claim"] and "line 320" not in c["claim"], c["claim"]
    acc = next(c for c in claims if c["metric"] == "test_acc")
    assert "for better generalization" in acc["claim"]


def test_rmsprop_sgd_claims_by_hand():
    from sgdlab.experiments.procedures.generic import compare_groups

    spec = load_experiment("zhu-rmsprop-sgd", "cpu")

    def series(at_switch, end):
        return [(11500, at_switch + 1), (12000, at_switch), (12500, end + 1), (15000, end)]
    # both fit their training set at the switch and at the end, as the stored cpu-scale runs
    # do: the claims require solutions
    runs = [run("rmsprop", summary={"test_acc": 0.63, "expected_sharpness": 0.0008,
                                    "train_acc": 1.0},
                metrics={"test_acc": series(0.652, 0.633), "train_acc": series(1.0, 1.0),
                         "sharpness/expected": series(0.0021, 0.0008)}),
            run("rmsprop-then-sgd", summary={"test_acc": 0.649, "expected_sharpness": 0.001,
                                             "train_acc": 1.0},
                metrics={"test_acc": series(0.652, 0.649), "train_acc": series(1.0, 1.0),
                         "sharpness/expected": series(0.0021, 0.0011)})]
    res = {c.claim: c for c in compare_groups(spec, runs).conclusions}
    acc = next(c for k, c in res.items() if "higher test accuracy than that" in k)
    sharp = next(c for k, c in res.items() if "flatter minimum than that" in k)
    assert acc.agrees_with_paper is False and "0.652" in acc.text
    assert sharp.agrees_with_paper is True and "0.0021" in sharp.text


@pytest.mark.parametrize("scale", SCALES)
def test_rmsprop_sgd_claims_need_solutions_that_fit_at_least_the_clean_examples(scale):
    """Every claim is about "the RMSProp solution" SGD starts from (line 320: "we firstly run
    RMSProp to obtain a solution near the global minima") and the minimum SGD reaches: a net
    below the clean fraction of its noisy training set, at the switch or at the end, in
    either compared group, makes the claim inconclusive; one that fits exactly the clean
    examples decides it. The clean fraction is each scale's own (smoke 80 of 100, cpu and
    paper 1,000 of 1,200)."""
    from sgdlab.experiments.procedures.generic import compare_groups

    spec = load_experiment("zhu-rmsprop-sgd", scale)
    data = spec.base["dataset"]
    n = data.get("n_train") or data["train_size"]
    clean = n - data["label_noise"]
    switch = next(r for r in spec.expand("/d")
                  if r.label == "rmsprop-then-sgd").params["optimizer"]["switch_step"]

    def verdicts(label="rmsprop", at_switch=clean, end=clean):
        def rec(**v):     # a run that fits all its labels unless told otherwise
            acc = {"at_switch": n, "end": n, **v}
            return run(g, summary={"test_acc": 0.6 + 0.1 * (g != "rmsprop"),
                                   "expected_sharpness": 0.002 - 0.001 * (g != "rmsprop"),
                                   "train_acc": acc["end"] / n},
                       metrics={"test_acc": [(switch, 0.5), (switch + 1, 0.6)],
                                "train_acc": [(switch, acc["at_switch"] / n),
                                              (switch + 1, acc["end"] / n)],
                                "sharpness/expected": [(switch, 0.003), (switch + 1, 0.001)]})
        runs = []
        for g in ("rmsprop", "rmsprop-then-sgd"):
            runs.append(rec(at_switch=at_switch, end=end) if g == label else rec())
        return [c.agrees_with_paper for c in compare_groups(spec, runs).conclusions]

    assert verdicts() == [True] * 4                     # exactly the clean examples fitted
    for label in ("rmsprop", "rmsprop-then-sgd"):
        short_at_switch = verdicts(label, at_switch=clean - 1)
        short_at_end = verdicts(label, end=clean - 1)
        if label == "rmsprop":      # its claims are the two against RMSProp continued
            assert short_at_switch == short_at_end == [True, True, None, None]
        else:
            assert short_at_switch == short_at_end == [None] * 4


# --- zhu-alignment-cubic, zhu-noise-vs-gradient: figures of several seeds -------------------
def _aligned(seed: int, cos: float, h: float, s: float, residual: float) -> StoredRun:
    return run("g", seed, summary={"num_params": 10},
               metrics={"align/cos_1": [(10, cos)], "align/hess_norm_eig_1": [(10, h)],
                        "align/sigma_norm_eig_1": [(10, s)], "align/residual": [(10, residual)]})


def test_the_alignment_figure_of_several_seeds_shows_the_tables_means():
    """The end-of-training alignment bars are the table's means over the seeds, and the
    figure says so; the first seed's values alone would disagree with the table beside it."""
    from sgdlab.experiments.procedures.zhu import zhu_alignment

    runs = [_aligned(0, 0.9, 0.8, 0.6, 0.2), _aligned(1, 0.5, 0.4, 0.2, 0.6)]
    res = zhu_alignment(SimpleNamespace(paper={}, options={}), runs)
    fig = dict(res.figures)["alignment_g"]
    (bar,) = fig.axes[0].patches
    assert bar.get_height() == pytest.approx(0.7)
    hess, sigma = (line.get_ydata() for line in fig.axes[1].get_lines())
    assert list(hess) == pytest.approx([0.6]) and list(sigma) == pytest.approx([0.4])
    assert "mean over 2 seeds" in fig.get_suptitle()
    assert "$e(U_k, V_k)$ = 0.4 in [0,\u00a01]" in fig.get_suptitle()


def test_the_noise_magnitude_figure_names_the_seed_it_shows():
    from sgdlab.experiments.procedures.zhu import zhu_noise_magnitude

    pts = {"noise/grad_norm": [(t, 1.0) for t in range(9)],
           "noise/noise_norm": [(t, 2.0) for t in range(9)]}
    spec = load_experiment("zhu-noise-vs-gradient", "cpu")
    (_, one), = zhu_noise_magnitude(spec, [run("r", 0, metrics=pts)]).figures
    (_, two), = zhu_noise_magnitude(spec, [run("r", s, metrics=pts) for s in (0, 1)]).figures
    assert "seed" not in one.axes[0].get_title()
    # whose figure first, then whose run
    assert one.axes[0].get_title().startswith("Zhu 2019, Figs. 2, 11: ")
    assert one.axes[0].get_title().endswith("(r)")
    assert two.axes[0].get_title().replace("\n", " ").endswith("(r, seed 0)")
    # the legend names the quantities as the paper does, not by their series
    assert [t.get_text() for t in one.axes[0].get_legend().get_texts()] == [
        "‖∇L‖ (mean gradient)", "sqrt(η Tr Σ / m) (noise)"]


def test_the_noise_of_batches_of_distinct_samples_is_named_as_such():
    """Runs of the reading noise-sampling=epochs plot sqrt(η Tr Σ (N − m)/(m (N − 1))): the
    figure, its legend and the table name that quantity, not eq. (2)'s sqrt(η Tr Σ/m)."""
    from sgdlab.experiments.procedures.zhu import zhu_noise_magnitude

    pts = {"noise/grad_norm": [(t, 1.0) for t in range(9)],
           "noise/noise_norm": [(t, 2.0) for t in range(9)]}
    spec = load_experiment("zhu-noise-vs-gradient", "cpu", readings={"noise-sampling": "epochs"})
    params = {"measure": [{"name": "noise_magnitude", "replacement": False}]}
    res = zhu_noise_magnitude(spec, [run("r", 0, metrics=pts, params=params)])
    (_, fig), = res.figures
    name = "sqrt(η Tr Σ (N − m)/(m (N − 1)))"
    assert fig.axes[0].get_title().replace("\n", " ") == \
        f"Zhu 2019, Figs. 2, 11: ‖∇L‖ vs {name} (r)"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "‖∇L‖ (mean gradient)", f"{name} (noise)"]
    (table,) = res.tables
    assert table.columns[-1] == f"{name} at end"
    (default,) = zhu_noise_magnitude(spec, [run("r", 0, metrics=pts)]).tables
    assert default.columns[-1] == "sqrt(η Tr Σ/m) at end"


def test_the_escape_trajectories_of_several_seeds_name_the_seed_they_draw():
    """Each seed draws its own data shifts (its own minima): the panel of one method draws
    the chains of one seed, and says which."""
    from sgdlab.experiments.procedures.landscape_runs import zhu_escape_analysis

    runs = _escape_runs({"sgd": [[5, 6], [7, 8]]})
    for r in runs:
        r.data.update({"trajectories": [[[0.0, 0.0], [1.0, 1.0]]],
                       "sharp_minimum": [0.0, 0.0], "flat_minimum": [1.0, 1.0]})
    spec = SimpleNamespace(paper={"claim": "x", "figure": "Fig. 3"}, options={})
    fig = dict(zhu_escape_analysis(spec, runs).figures)["escape_trajectories"]
    assert fig.axes[0].get_title().endswith(", seed 0")
    fig = dict(zhu_escape_analysis(spec, runs[:1]).figures)["escape_trajectories"]
    assert "seed" not in fig.axes[0].get_title()


def test_a_method_has_one_colour_in_the_escape_bars_and_sharpness_curves():
    from matplotlib.colors import to_hex

    from sgdlab.experiments.procedures.landscape_runs import zhu_escape_analysis

    runs = _escape_runs({"gd": [[5, 6]], "sgd": [[7, 8]]})
    for r in runs:
        r.data.update({"sharpness_steps": [0, 10], "sharpness": [1.0, 0.1]})
    spec = SimpleNamespace(paper={"claim": "x", "figure": "Fig. 3"}, options={})
    figs = dict(zhu_escape_analysis(spec, runs).figures)
    bars = [to_hex(p.get_facecolor()) for p in figs["escape_success"].axes[0].patches]
    lines = [to_hex(ln.get_color()) for ln in figs["escape_sharpness"].axes[0].get_lines()]
    assert bars == lines and len(set(bars)) == 2
    assert "2 repetitions × 1 seed pooled" in figs["escape_success"].axes[0].get_title()


# --- zhu-noise-vs-gradient: "overwhelmingly" as a named reading -------------------------------
def test_noise_dominance_readings_by_hand():
    from sgdlab.experiments.procedures.zhu import zhu_noise_magnitude

    # ratio 0.5 over the first third, 3 over the last
    pts = [(t, 1.0) for t in range(9)]
    noise = [(t, 0.5 if t < 3 else 3.0) for t in range(9)]
    runs = [run("r", metrics={"noise/grad_norm": pts, "noise/noise_norm": noise})]
    default = load_experiment("zhu-noise-vs-gradient", "cpu")
    strong = load_experiment("zhu-noise-vs-gradient", "cpu",
                             readings={"dominance": "order-of-magnitude"})
    assert default.options["dominance_ratio"] == 1.0 and strong.options["dominance_ratio"] == 10
    # a reading of the analysis only: the runs are the same
    assert [r.key for r in default.expand()] == [r.key for r in strong.expand()]
    (c,) = zhu_noise_magnitude(default, runs).conclusions
    assert c.agrees_with_paper is True
    (c,) = zhu_noise_magnitude(strong, runs).conclusions
    assert c.agrees_with_paper is False and "at least 10" in c.text
    noise = [(t, 0.5 if t < 3 else 10.0) for t in range(9)]
    (c,) = zhu_noise_magnitude(strong, [run("r", metrics={"noise/grad_norm": pts,
                                                          "noise/noise_norm": noise})]
                               ).conclusions
    assert c.agrees_with_paper is True


def test_noise_scale_reading_compares_one_steps_noise_with_its_drift():
    """Fig. 2's sqrt(η Tr Σ/m) against ‖g₀‖ (default) or, eq. (4), (η/√m)‖ε‖ against η‖g₀‖:
    the same records, the ratio over √η."""
    from sgdlab.experiments.procedures.zhu import zhu_noise_magnitude

    # the figure's ratio: 0.5 over the first third, 0.8 over the last (no dominance); at
    # η = 0.04 one step's noise is 1/√0.04 = 5 times that: 2.5 and 4
    grad = [(t, 2.0) for t in range(9)]
    noise = [(t, 1.0 if t < 3 else 1.6) for t in range(9)]
    runs = [run("r", params={"optimizer": {"name": "sgd", "lr": 0.04}},
                metrics={"noise/grad_norm": grad, "noise/noise_norm": noise})]
    figure = load_experiment("zhu-noise-vs-gradient", "cpu")
    step = load_experiment("zhu-noise-vs-gradient", "cpu", readings={"noise-scale": "step"})
    assert [r.key for r in figure.expand()] == [r.key for r in step.expand()]
    (c,) = zhu_noise_magnitude(figure, runs).conclusions
    assert c.agrees_with_paper is False
    assert c.evidence["ratio_last_third"] == pytest.approx(0.8)
    (c,) = zhu_noise_magnitude(step, runs).conclusions
    assert c.agrees_with_paper is True and "drift" in c.text
    assert c.evidence["ratio_first_third"] == pytest.approx(2.5)
    assert c.evidence["ratio_last_third"] == pytest.approx(4.0)
    # without a step size in the run's parameters the step ratio is unknown: inconclusive
    (c,) = zhu_noise_magnitude(step, [run("r", metrics=runs[0].metrics)]).conclusions
    assert c.agrees_with_paper is None


@pytest.mark.parametrize("scale", SCALES)
def test_noise_sampling_reading_measures_the_noise_of_the_epochs_batches(scale):
    """Eq. (2)'s Σ/m (with replacement) by default, the runs and their keys as before; the
    reading ``noise-sampling=epochs`` sets ``replacement: false`` on every run's
    noise_magnitude instrument, so that those runs are new ones."""
    default = load_experiment("zhu-noise-vs-gradient", scale).expand(data_dir="/data")
    epochs = load_experiment("zhu-noise-vs-gradient", scale,
                             readings={"noise-sampling": "epochs"}).expand(data_dir="/data")
    assert all("replacement" not in m for r in default for m in r.params["measure"])
    assert [[m.get("replacement") for m in r.params["measure"]] for r in epochs] == \
        [[False] for _ in epochs]
    assert not {r.key for r in default} & {r.key for r in epochs}


# --- Suppl. A's grid, "sampled equidifferently from ... x in [-1, 1]": a named reading --------
@pytest.mark.parametrize("name,cubic", [("zhu-alignment-cubic", ["mlp-251", "mlp-141", "mlp-103"]),
                                        ("zhu-noise-vs-gradient", ["cubic-sgd"])])
@pytest.mark.parametrize("scale", SCALES)
def test_cubic_grid_is_a_reading_of_the_entries_that_fit_the_cubic(name, cubic, scale):
    from sgdlab.data import load_dataset

    default = load_experiment(name, scale).expand(data_dir="/d")
    half = load_experiment(name, scale, readings={"grid": "half-open"}).expand(data_dir="/d")
    # the default leaves the runs as they were: the loader's closed grid, both end points
    assert all("grid" not in r.params["dataset"] for r in default)
    for a, b in zip(default, half):
        assert a.label == b.label and a.seed == b.seed
        changed = a.label in cubic
        assert (a.key != b.key) == changed, a.label
        if not changed:             # the noisy-label run has no grid
            assert a.params == b.params
            continue
        assert b.params["dataset"] == {**a.params["dataset"], "grid": "half-open"}
        closed, open_ = (load_dataset(**r.params["dataset"]) for r in (a, b))
        assert len(open_.x_train) == len(closed.x_train) == 20
        assert float(closed.x_train.max()) == 1.0
        assert float(open_.x_train.max()) == pytest.approx(0.9)
        assert float(open_.x_train[1] - open_.x_train[0]) == pytest.approx(0.1)


# --- Which Σ §3 compares with H: eq. (3)'s centred Σ or eq. (6)'s E[g gᵀ], a named reading -------
ALIGNMENT_ENTRIES = ["zhu-alignment-cubic", "zhu-projection-residual"]


@pytest.mark.parametrize("name", ALIGNMENT_ENTRIES)
@pytest.mark.parametrize("scale", SCALES)
def test_sigma_form_uncentred_sets_centred_false_on_every_alignment_measurement(name, scale):
    """The default leaves the runs and their keys as they were (eq. (3)'s Σ, no ``centred``
    in the instrument's options); ``sigma-form=uncentred`` sets ``centred: false`` on every
    run's alignment instrument and on nothing else, so that every run is a new one."""
    default = load_experiment(name, scale).expand(data_dir="/d")
    other = load_experiment(name, scale,
                            readings={"sigma-form": "uncentred"}).expand(data_dir="/d")
    assert default and [r.label for r in default] == [r.label for r in other]
    assert all("centred" not in m for r in default for m in r.params["measure"])
    for a, b in zip(default, other):
        want = copy.deepcopy(a.params)
        for m in want["measure"]:
            if m["name"] == "alignment":
                m["centred"] = False
        assert b.params == want, a.label
        assert any(m["name"] == "alignment" for m in a.params["measure"]), a.label
    assert not {r.key for r in default} & {r.key for r in other}


@pytest.mark.parametrize("name", ALIGNMENT_ENTRIES)
def test_sigma_form_uncentred_reports_name_the_matrix_measured_in_their_title(name):
    """Under ``sigma-form=uncentred`` H is compared with E[g gᵀ], as the tables, figures and
    findings say: the report's title says so too (it said "Σ–H alignment", "H and Σ"); the
    default's title names Σ, as before."""
    from sgdlab.report.html import header_html

    def title(readings=None):
        spec = load_experiment(name, "smoke", readings=readings)
        page = header_html({"experiment": spec.describe(), "scale": "smoke"})
        return re.search(r"<p class='sub'>(.*?)</p>", page).group(1)

    default, uncentred = title(), title({"sigma-form": "uncentred"})
    assert "Σ" in default and "E[g gᵀ]" not in default
    assert "Σ" not in uncentred and "E[g gᵀ]" in uncentred
    assert uncentred == default.replace("Σ", "E[g gᵀ]")


# --- zhu-large-network: the sharpness half of "not better than GD" ----------------------------
@pytest.mark.parametrize("scale", SCALES)
def test_large_network_judges_both_halves_of_no_better_than_gd(scale):
    claims = _claims("zhu-large-network", scale)
    noisy = ["gld-const", "gld-diagonal", "gld-dynamic"]
    # test accuracy: GD above them (within 0.5 points); sharpness: them above GD (within 1%)
    acc = [c for c in claims if c["metric"] == "test_acc" and c["above"][0] == ["gd"]]
    sharp = [c for c in claims if c["metric"] == "expected_sharpness"
             and c["above"][1] == ["gd"]]
    assert len(acc) == len(sharp) == 1
    assert sorted(acc[0]["above"][1]) == sorted(sharp[0]["above"][0]) == noisy
    assert acc[0]["margin"] == -0.005 and sharp[0]["rtol"] == 0.01
    assert acc[0]["paired"] is sharp[0]["paired"] is True
    assert _quoted("zhu-large-network", "the optimizers with isotropic and diagonal noise do "
                   "not provide us solutions better than full batch gradient descent", 275)


@pytest.mark.parametrize("scale", SCALES)
def test_large_network_names_the_reading_of_better_as_generalising_better(scale, paper_lines):
    """Line 275's "do not provide us solutions better than full batch gradient descent": read
    with the sentence before it ("more flat and generalizable", the default: both halves), or
    with §2's naming of solutions, "We call those solutions generalizing well good solutions"
    (line 37): test accuracy alone, no sharpness claim on the isotropic and diagonal noises.
    The default keeps the runs (and their keys) of the file without the reading."""
    def halves(readings=None):
        spec = load_experiment("zhu-large-network", scale, readings=readings)
        return spec, sorted(c["metric"] for c in spec.options["claims"]
                            if ["gd"] in c["above"] and c["above"] != [["sgd"], OTHERS])
    default, both = halves()
    general, acc = halves({"no-better": "generalization"})
    assert both == ["expected_sharpness", "test_acc"] and acc == ["test_acc"]
    # SGD's two claims (line 275's first sentence) stay under either reading
    assert sum(c["above"][0] == ["sgd"] or c["above"][1] == ["sgd"]
               for c in general.options["claims"]) == 2
    assert [r.key for r in general.expand(data_dir="/d")] == \
        [r.key for r in default.expand(data_dir="/d")]
    choices = read_file(catalogue_files()["zhu-large-network"])["readings"]["no-better"][
        "choices"]
    for name, c in choices.items():
        for passage, line in re.findall(r"'([^']+)'[^']*?\bline (\d+)\)", c["description"]):
            assert _norm(passage) in _norm(paper_lines[int(line) - 1]), (name, passage, line)
    assert "line 37" in choices["generalization"]["description"]


def test_relative_tolerance_of_an_above_claim_by_hand():
    claim = {"above": [["a", "b"], ["g"]], "metric": "s", "rtol": 0.01}
    vals = {"g": {"s": 100.0}, "a": {"s": 99.5}, "b": {"s": 101.0}}
    (c,) = check_claims([claim], vals)
    assert c.agrees_with_paper is True and "by more than 1" in c.text
    vals["a"]["s"] = 98.0
    (c,) = check_claims([claim], vals)
    assert c.agrees_with_paper is False
    with pytest.raises(ConfigError, match="rtol"):
        check_claims([{**claim, "rtol": -0.01}], vals)


# --- FIDELITY: the refresh every 10 iterations, scoped to the entries that do it ---------------
def _refresh(name, scale, label):
    p = {r.label: r.params for r in load_experiment(name, scale).expand(data_dir="/d")}[label]
    return p["optimizer"].get("refresh_every", 1)


def test_fidelity_scopes_the_refresh_of_sigma_to_the_entries_that_do_it():
    text = (ROOT / "docs" / "FIDELITY.md").read_text()
    para = next(p for p in text.split("\n- ") if "every iteration at paper scale" in p)
    assert "zhu-noisy-label" in para and "zhu-large-network" in para
    for label in ("gld-dynamic", "gld-diagonal", "gld-leading"):
        assert (_refresh("zhu-noisy-label", "cpu", label),
                _refresh("zhu-noisy-label", "paper", label)) == (10, 1)
    for label in ("gld-dynamic", "gld-diagonal"):
        assert (_refresh("zhu-large-network", "cpu", label),
                _refresh("zhu-large-network", "paper", label)) == (10, 10)


@pytest.mark.parametrize("params,match", [
    ({"lr": "fast"}, "lr must be a number, got 'fast'"),
    ({"lr": True}, r"lr must be a number, not a bool \(True\)"),
    ({"iterations": False}, r"iterations must be an integer, not a bool \(False\)"),
    ({"iterations": 40.5}, "iterations must be an integer"),
    ({"iterations": -40}, "iterations must be an integer >= 1"),
    ({"trajectories": -1}, "trajectories must be an int >= 0"),
])
def test_escape_runs_refuse_a_bad_value_when_planned(params, match):
    """A value of the wrong type or range in an edited experiment file fails the plan (and
    --dry-run), not each of its runs at its start."""
    from sgdlab.experiments.procedures import get_procedure

    with pytest.raises(ConfigError, match=match):
        get_procedure("zhu_escape").validate({"method": "gd", **params}, "run 'gd'")


# --- paper scale: the constants the text states ----------------------------------------------
def test_paper_scale_escape_uses_the_constants_of_fig3_and_suppl_b():
    # Fig. 3 caption (line 172) and Suppl. B (lines 388-398)
    for p in paper_runs("zhu-escape-2d").values():
        assert {k: p[k] for k in ("landscape", "protocol", "lr", "iterations", "repetitions",
                                  "batch_size", "const_sigma", "leading_k", "hessian_scale",
                                  "sharpness_sigma", "sharpness_samples", "start")} == {
            "landscape": "paper", "protocol": "paper", "lr": 0.1, "iterations": 600,
            "repetitions": 100, "batch_size": 1, "const_sigma": 2.0, "leading_k": 2,
            "hessian_scale": 1.0, "sharpness_sigma": 0.1, "sharpness_samples": 100,
            "start": "sharp_center"}


def test_paper_scale_noisy_label_uses_the_constants_of_sec_5_1_and_suppl_c():
    runs = paper_runs("zhu-noisy-label")
    start = runs.pop("gd-start")
    # 1,200 FashionMNIST images, 200 wrongly labelled, the 11,330-parameter LeNet (line 405)
    assert start["dataset"]["name"] == "fashion_mnist"
    assert (start["dataset"]["train_size"], start["dataset"]["label_noise"]) == (1200, 200)
    assert start["model"]["name"] == "zhu-lenet"
    assert (start["optimizer"]["name"], start["batch_size"], start["epochs"]) == \
        ("gd", "full", 3000)                                    # 3000 GD iterations, line 227
    for label, p in runs.items():
        opt = p["optimizer"]
        assert opt["lr"] == 0.07, label                         # line 227, Fig. 5 caption
        assert p["final"] == [{"kind": "expected_sharpness", "sigma": 0.01,
                               "num_samples": 1000}], label     # Suppl. C, line 450
        if label == "sgd":
            assert p["batch_size"] == 20                        # m = 20, line 444
        else:
            assert p["batch_size"] == "full", label
        if label.startswith("gld-") and label != "gld-const":
            assert opt["noise_batch_size"] == 20, label
    assert runs["gld-const"]["optimizer"]["sigma"] == 1e-3      # line 437
    assert runs["gld-leading"]["optimizer"]["k"] == 20          # line 440
    hess = runs["gld-hessian"]["optimizer"]
    assert (hess["k"], hess["refresh_every"]) == (20, 10)       # line 442


# Suppl. A (lines 367-374) and the captions of Figs. 1, 8, 9 (lines 90, 425, 434): model, η, k
SUPPL_A = {"mlp-251": ("zhu-mlp-1-10-10-10-1", 0.05, 4), "mlp-141": ("zhu-mlp-1-10-10-1", 0.05, 3),
           "mlp-103": ("zhu-mlp-1-6-6-6-1", 0.1, 3), "cubic-sgd": ("zhu-mlp-1-10-10-10-1", 0.05,
                                                                  None)}


@pytest.mark.parametrize("name", ["zhu-alignment-cubic", "zhu-noise-vs-gradient"])
def test_paper_scale_cubic_runs_use_the_constants_of_suppl_a(name):
    """20 training and 100 test points of y = (x+0.5)x(x−0.5), ReLU networks trained by SGD
    with m = 5 at Suppl. A's η; the cosines of the first 4 (Fig. 1) or 3 (Figs. 8-9) leading
    eigenvector pairs; Fig. 2's noise sqrt(η Tr Σ/m) with the training batch size m = 5, over
    the whole training set."""
    cubic = {r: p for r, p in paper_runs(name).items() if p["dataset"]["name"] == "cubic"}
    assert cubic and set(cubic) <= set(SUPPL_A)
    for label, p in cubic.items():
        model, lr, k = SUPPL_A[label]
        assert (p["dataset"]["n_train"], p["dataset"]["n_test"]) == (20, 100), label
        assert p["model"] == {"name": model, "activation": "relu"}, label
        assert p["optimizer"] == {"name": "sgd", "lr": lr} and p["batch_size"] == 5, label
        assert p["loss"] == "mse", label                       # "mean squared error", line 35
        (m,) = p["measure"]
        assert m["eval_subset"] is None, label                 # Σ over the N training points
        if k is None:
            assert (m["name"], m["batch_size"]) == ("noise_magnitude", 5), label
        else:
            assert (m["name"], m["k"]) == ("alignment", k), label


@pytest.mark.parametrize("name,label,line", [("zhu-projection-residual", "sgd", 223),
                                               ("zhu-noise-vs-gradient", "noisy-label-sgd", 491)])
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_sgd_of_figs_4_and_11_takes_sec_5_1s_constants_and_lists_them(name, label, line, scale,
                                                                      paper_lines):
    """Fig. 4(b) ("We run SGD", line 223) and Fig. 11 (Suppl. E, line 491: the dataset and model
    only) state no learning rate, batch size or start: the runs take §5.1's η = 0.07 and m = 20
    (Fig. 5 caption, line 251) from a fresh initialisation, and the scale says so."""
    spec = load_experiment(name, scale)
    p = {r.label: r.params for r in spec.expand(data_dir="/d")}[label]
    assert (p["optimizer"], p["batch_size"], p.get("init_from")) == (
        {"name": "sgd", "lr": 0.07}, 20, None)
    assert "\\eta_t = 0.07$, and batch size m = 20" in paper_lines[250]     # line 251
    said = [d for d in spec.deviations if "η = 0.07" in d and "m = 20" in d]
    assert len(said) == 1 and f"line {line}" in said[0] and "line 251" in said[0], said
    assert "fresh initialisation" in said[0]


@pytest.mark.parametrize("name,lines", [("zhu-noisy-label", ("line 230", "line 437")),
                                         ("zhu-large-network", ("line 260", "line 479"))])
def test_cpu_scale_says_gld_consts_sigma_is_the_papers_tuned_value_not_retuned(name, lines):
    """The paper tuned GLD const's σ by grid search for its own network and data (line 230,
    Suppl. C's {10⁻¹, …, 10⁻⁵}, line 437; "has been tuned as optimal", Fig. 6, line 260); the
    cpu scale keeps σ = 10⁻³ on an MLP on MNIST without tuning it again, and says so."""
    spec = load_experiment(name, "cpu")
    sigmas = {r.params["optimizer"]["sigma"] for r in spec.expand(data_dir="/d")
              if r.params["optimizer"]["name"] == "gld-const"}
    assert sigmas == {0.001}
    said = [d for d in spec.deviations if "GLD const's σ = 10⁻³" in d]
    assert len(said) == 1 and "not re-tuned" in said[0], said
    assert all(line in said[0] for line in lines), said


@pytest.mark.parametrize("name", [n for n in ZHU if not n.startswith("zhu-escape")])
def test_paper_scale_lists_the_initialisation_and_input_scaling_the_text_leaves_open(name):
    """Suppls. A, C and D state no initialisation, and Suppls. C and D no input scaling (Suppl.
    A names only TensorFlow 1.5.0, line 376): each network-training entry lists PyTorch's
    default initialisation, and pixels in [0, 1] where it trains on images."""
    spec = load_experiment(name, "paper")
    runs = spec.expand(data_dir="/d")
    assert all("model" in r.params for r in runs), name
    said = [d for d in spec.deviations if "initialisation" in d and "not stated" in d]
    assert len(said) == 1 and "PyTorch's default layer initialisation" in said[0], said
    if any(r.params["dataset"]["name"] in ("fashion_mnist", "cifar10") for r in runs):
        assert "pixels in [0, 1]" in said[0] and "input scaling" in said[0], said
        assert all(r.params["dataset"].get("normalize", "unit") == "unit" for r in runs)
    if any(r.params["dataset"]["name"] == "cubic" for r in runs):
        assert "line 376" in said[0], said


def test_paper_scale_large_network_and_rmsprop_use_the_stated_constants():
    for label, p in paper_runs("zhu-large-network").items():
        assert p["dataset"]["name"] == "cifar10" and p["model"]["name"] == "vgg-11"
        assert p["optimizer"]["lr"] == 0.1, label               # Fig. 6 caption, line 260
        if label == "sgd":
            assert p["batch_size"] == 100                       # Suppl. D, line 479
        if label == "gld-const":
            assert p["optimizer"]["sigma"] == 1e-3              # line 479
    runs = paper_runs("zhu-rmsprop-sgd")                        # Suppl. F, lines 502-503
    assert runs["rmsprop"]["optimizer"] == {"name": "rmsprop", "lr": 1e-3, "alpha": 0.99,
                                            "eps": 1e-8}
    sw = runs["rmsprop-then-sgd"]["optimizer"]
    assert (sw["switch_step"], sw["second"], sw["second_hyper"]["lr"]) == (12000, "sgd", 0.1)
    assert all(p["batch_size"] == 20 for p in runs.values())


NOISY_SET = {"name": "fashion_mnist", "data_dir": "/d", "train_size": 1200, "balanced": False,
             "label_noise": 200}                         # §5.1 line 205, Suppl. C line 405
SUPPL_C_SHARPNESS = {"sigma": 0.01, "num_samples": 1000}   # Suppl. C line 450, Fig. 5(b)


def test_paper_scale_gld_statistics_follow_suppl_c():
    """Suppl. C (lines 436-442): only the Hessian is refreshed every 10 iterations ("Do to the
    limit of computational resources", line 442); GLD dynamic, diagonal and leading draw from
    statistics of the current iterate at every step; GLD leading estimates Σ from mini-batches
    of 20, GLD Hessian takes the top 20 |λ| and §5.1's σ_H² (line 230); Fig. 5(b)'s sharpness
    curve is Suppl. C's estimate (σ = 0.01, M = 1,000)."""
    runs = paper_runs("zhu-noisy-label")
    for label in ("gld-dynamic", "gld-diagonal", "gld-leading"):
        assert runs[label]["optimizer"].get("refresh_every", 1) == 1, label
    assert runs["gld-leading"]["optimizer"]["covariance_estimate"] == "minibatches"
    hess = runs["gld-hessian"]["optimizer"]
    assert (hess["sigma_h2_rule"], hess["hessian_which"]) == ("paper", "magnitude")
    for label, p in runs.items():
        assert p["dataset"] == NOISY_SET and p["model"] == {"name": "zhu-lenet"}, label
        (m,) = p["measure"]
        assert {k: m[k] for k in ("name", "sigma", "num_samples", "eval_subset")} == {
            "name": "sharpness", **SUPPL_C_SHARPNESS, "eval_subset": None}, label


@pytest.mark.parametrize("name,label", [("zhu-projection-residual", "sgd"),
                                        ("zhu-noise-vs-gradient", "noisy-label-sgd"),
                                        ("zhu-rmsprop-sgd", "rmsprop"),
                                        ("zhu-rmsprop-sgd", "rmsprop-then-sgd")])
def test_paper_scale_noisy_label_runs_take_sec_5_1s_data_and_network(name, label):
    """Fig. 4(b), Fig. 11 (Suppl. E, line 491) and Fig. 7 (Suppl. F, line 495) train on §5.1's
    noisy set with its 11,330-parameter CNN; Fig. 4(b) compares k = 20 leading eigenvectors
    (line 223), Fig. 11 the noise of SGD's m = 20, Fig. 7(c) Suppl. C's expected sharpness."""
    p = paper_runs(name)[label]
    assert p["dataset"] == NOISY_SET and p["model"] == {"name": "zhu-lenet"}
    (m,) = p["measure"]
    if name == "zhu-projection-residual":
        assert (m["name"], m["k"], m["eval_subset"]) == ("alignment", 20, None)
    elif name == "zhu-noise-vs-gradient":
        assert (m["name"], m["batch_size"], p["batch_size"]) == ("noise_magnitude", 20, 20)
    else:
        assert (m["name"], m["sigma"], m["num_samples"]) == ("sharpness", 0.01, 1000)
        assert p["final"] == [{"kind": "expected_sharpness", **SUPPL_C_SHARPNESS}]


def test_paper_scale_large_network_is_suppl_ds_vgg11_on_plain_cifar10():
    """Suppl. D (lines 475-485): VGG11 without batch norm (9,750,922 parameters: a 512-512-10
    head), CIFAR-10 without augmentation, expected sharpness at σ = 0.01; SGD's 3,000
    iterations of m = 100 over 50,000 images after the GD stage, as long as the others'."""
    runs = paper_runs("zhu-large-network")
    for label, p in runs.items():
        assert p["model"] == {"name": "vgg-11", "batchnorm": False,
                              "classifier_widths": [512, 512]}, label
        assert p["dataset"] == {"name": "cifar10", "data_dir": "/d"}, label
        assert all(m["sigma"] == 0.01 for m in p["measure"] + p["final"]), label
    assert runs["sgd"]["epochs"] * 50_000 // runs["sgd"]["batch_size"] == runs["gd"]["epochs"]


# --- zhu-large-network: Suppl. D's "M = 1,00" (line 485), read as 1,000 or as 100 -------------
CONTINUATIONS = ["gd", "gld-const", "gld-dynamic", "gld-diagonal", "sgd"]


@pytest.mark.parametrize("scale", SCALES)
def test_sharpness_samples_100_sets_only_the_final_sharpness_of_the_continuations(scale):
    default = load_experiment("zhu-large-network", scale).expand(data_dir="/d")
    hundred = load_experiment("zhu-large-network", scale,
                              readings={"sharpness-samples": "100"}).expand(data_dir="/d")
    assert [r.label for r in hundred] == [r.label for r in default]
    for a, b in zip(default, hundred):
        if a.label == "gd-start":           # measures no final value: its run and key stay
            assert (b.params, b.key) == (a.params, a.key)
            continue
        assert a.label in CONTINUATIONS and b.key != a.key
        assert [m["num_samples"] for m in b.params["final"]] == [100], a.label
        # everything else as in the default reading, the curve over iterations included
        rest = copy.deepcopy(b.params)          # the seeds of a group share one params dict
        rest["final"][0]["num_samples"] = a.params["final"][0]["num_samples"]
        assert rest == a.params, a.label


def test_sharpness_samples_default_keeps_the_stored_runs_keys():
    path = catalogue_files()["zhu-large-network"]
    before = read_file(path)
    del before["readings"]["sharpness-samples"]       # the file as it was without the reading
    from sgdlab.experiments.spec import resolve

    for scale in SCALES:
        old = [r.key for r in resolve(before, scale, str(path)).expand(data_dir="/d")]
        for readings in (None, {"sharpness-samples": "1000"}):
            spec = load_experiment("zhu-large-network", scale, readings=readings)
            assert [r.key for r in spec.expand(data_dir="/d")] == old
    paper = paper_runs("zhu-large-network")
    assert {lab: [m["num_samples"] for m in p["final"]] for lab, p in paper.items()} == {
        "gd-start": [], **{lab: [1000] for lab in CONTINUATIONS}}


def test_sharpness_samples_choices_quote_the_paper_at_their_lines(paper_lines):
    choices = read_file(catalogue_files()["zhu-large-network"])["readings"][
        "sharpness-samples"]["choices"]
    for name, c in choices.items():
        cited = re.findall(r"'([^']+)'[^']*?\bline (\d+)\)", c["description"])
        assert [int(n) for _, n in cited][0] == 485, name           # Suppl. D's "M = 1,00"
        for passage, line in cited:
            assert _norm(passage) in _norm(paper_lines[int(line) - 1]), (name, passage, line)


def test_the_final_expected_sharpness_takes_a_memory_budget(monkeypatch):
    """``{kind: expected_sharpness, memory_budget: B}``: B reaches the measurement in bytes,
    as ``memory_budget_bytes`` reads it (``2e9``, ``"4KiB"``; absent: None, the device's
    default, as before); a value it refuses is refused when the entry is loaded."""
    import sgdlab.measure.sharpness as sharpness
    from sgdlab.experiments.procedures.measures import compute_final, validate_measure

    budgets = []
    real = sharpness.expected_sharpness

    def spy(*args, **kwargs):
        budgets.append(kwargs.get("memory_budget"))
        return real(*args, **kwargs)
    monkeypatch.setattr(sharpness, "expected_sharpness", spy)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    data = (torch.randn(20, 3), torch.randint(0, 2, (20,)))
    for m in ({"kind": "expected_sharpness", "num_samples": 2, "memory_budget": 4096},
              {"kind": "expected_sharpness", "num_samples": 2},
              {"kind": "expected_sharpness", "num_samples": 2, "memory_budget": 2e9},
              {"kind": "expected_sharpness", "num_samples": 2, "memory_budget": "4KiB"}):
        validate_measure(m, "final[0]", final=True)
        summary, _ = compute_final(m, model, torch.nn.CrossEntropyLoss(), data)
        assert "expected_sharpness" in summary
    assert budgets == [4096, None, 2_000_000_000, 4096]
    assert all(type(b) is int for b in budgets[2:])
    for bad in (0, "1XB", 1.5, True):
        with pytest.raises(ConfigError, match=r"final.0.: Invalid memory_budget=.*; bytes: "):
            validate_measure({"kind": "expected_sharpness", "memory_budget": bad}, "final[0]",
                             final=True)


def test_the_code_cites_the_zhu_text_it_was_read_from():
    """docs/FIDELITY.md#zhu: the text read is the arXiv version, "The Regularization Effects of
    Anisotropic Noise in Stochastic Gradient Descent"; the ICML 2019 version has another title
    and content, so the code names it only as "the ICML 2019 version", where it takes something
    from that version (the trace indicator of sgdlab.measure.alignment)."""
    cited = 0
    for path in sorted((ROOT / "sgdlab").rglob("*.py")):
        text = path.read_text()
        if "Zhu" not in text:
            continue
        assert "the anisotropic noise in" not in text.lower(), path
        assert all("ICML 2019 version" in line for line in text.splitlines()
                   if "ICML" in line), path
        cited += "Regularization Effects of Anisotropic Noise" in " ".join(text.split())
    assert cited >= 6


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_projection_residual_compares_the_top_20_eigenspaces(scale):
    """Fig. 4(b): "plot the squared norm of the 'projection residual' [...] when first k=20
    leading eigenvectors are considered" (line 223), and the analysis tests it."""
    spec = load_experiment("zhu-projection-residual", scale)
    runs = spec.expand(data_dir="/d")
    assert runs
    for r in runs:
        (m,) = [m for m in r.params["measure"] if m["name"] == "alignment"]
        assert m["k"] == 20, r.label
    assert "residual" in spec.options["tests"]


def test_projection_residual_states_both_halves_of_line_223_that_it_judges(paper_lines):
    """Line 223: the residual "becomes small and stable in the later stage of optimization";
    the analysis judges both halves (options.tests: residual -> small, stable), so the entry's
    one-sentence claim names both, not the first alone."""
    assert "becomes small and stable in the later stage" in paper_lines[222]
    paper = read_file(catalogue_files()["zhu-projection-residual"])["paper"]
    assert "small and stable in the later stage" in paper["claim"], paper["claim"]
    assert "residual" in load_experiment("zhu-projection-residual", "cpu").options["tests"]


def test_alignment_cubic_says_what_its_absolute_thresholds_mean():
    """Line 113 gives no number for "approaches 1" or "extremely similar": the entry states
    what its thresholds amount to, and the figures it gives are those of its options and of
    the three networks of Suppl. A (lines 372-374: 251, 141 and 103 parameters)."""
    import math

    spec = load_experiment("zhu-alignment-cubic", "cpu")
    o, text = spec.options, " ".join(spec.description.split())
    assert (o["cosine_above"], o["eigenvalue_atol"]) == (0.9, 0.1)
    assert f"within {round(math.degrees(math.acos(o['cosine_above'])))}°" in text
    assert "0.06-0.10" in text and "d = 103-251" in text
    assert (f"{1 / math.sqrt(251):.2f}", f"{1 / math.sqrt(103):.2f}") == ("0.06", "0.10")
    assert "tenth of the range of the normalised eigenvalues" in text


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_alignment_cubic_judges_its_claims_only_near_a_minimum(scale):
    """Line 113's alignment is "near the global minima", §2's L(θ) < ϵ (line 37): the entry
    gates both claims on the final training MSE, ε = 10⁻³ ≈ 1% of the targets' variance."""
    spec = load_experiment("zhu-alignment-cubic", scale)
    assert spec.options["near_minimum_loss_below"] == 1e-3
    assert "near the global minima" in spec.description


def _every_reading(name: str):
    """The default readings and, one at a time, every other choice of each."""
    readings = read_file(catalogue_files()[name]).get("readings") or {}
    yield {}
    for key, r in readings.items():
        for choice in r["choices"]:
            if choice != r["default"]:
                yield {key: choice}


_NETWORK_ENTRIES = [n for n in ZHU if not n.startswith("zhu-escape")]


@pytest.mark.parametrize("name", _NETWORK_ENTRIES)
def test_network_runs_keep_a_constant_rate_without_momentum_or_weight_decay(name):
    """"all learning rates in each experiments are kept constant during optimization" (line
    361); SGD is eq. (1)'s plain step and every dynamics of §4.2 a plain step plus noise, with
    no momentum; Suppl. D's VGG11 has no "weight decay" (line 477), and no other setting names
    one. At every scale and under every reading: no schedule, momentum or weight decay."""
    def optimizers(opt):
        yield opt
        for key in ("first_hyper", "second_hyper"):     # the switch of Fig. 7
            if key in opt:
                yield opt[key]

    for scale in SCALES:
        for readings in _every_reading(name):
            for r in load_experiment(name, scale, readings=readings).expand(data_dir="/d"):
                where = (scale, readings, r.label)
                assert not r.params.get("schedule"), where
                for opt in optimizers(r.params["optimizer"]):
                    assert not opt.get("momentum") and not opt.get("nesterov"), where
                    assert not opt.get("weight_decay"), where


@pytest.mark.parametrize("name", ["zhu-noisy-label", "zhu-gld-const-tuning"])
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_every_continuation_from_the_gd_solution_runs_as_many_iterations(name, scale):
    """Figs. 5 and 6 plot every dynamics over the same iterations from θ*_GD ("starting from
    iteration 3000", lines 251, 260): SGD's epochs of m = 20 over the 1,200 images (§5.1,
    line 205) make as many steps as the full-batch dynamics' epochs of one step each."""
    runs = {r.label: r.params for r in load_experiment(name, scale).expand(data_dir="/d")}
    start = runs.pop("gd-start")
    assert (start["batch_size"], start["epochs"]) == ("full", 3000)     # line 227
    steps = set()
    for label, p in runs.items():
        data = p["dataset"]
        n = data.get("n_train", data.get("train_size"))
        assert n == 1200, label
        per_epoch = 1 if p["batch_size"] == "full" else -(-n // p["batch_size"])
        steps.add(per_epoch * p["epochs"])
    assert len(steps) == 1, steps


def test_the_escape_entry_is_titled_by_the_landscape_it_runs_under_each_reading():
    # under landscape=rescaled the report and `sgdlab run` were titled "the printed 2-D
    # two-basin loss", the loss that reading does not run
    titles = {choice: load_experiment("zhu-escape-2d", "smoke",
                                      readings={"landscape": choice}).title
              for choice in ("printed", "rescaled", "authors-code")}
    assert "of the printed 2-D two-basin loss" in titles["printed"]
    assert "of a rescaled 2-D two-basin loss, not the printed one" in titles["rescaled"]
    assert "loss of the authors' code" in titles["authors-code"]


def test_sharpness_estimate_default_keeps_the_escape_runs_keys():
    """``sharpness-estimate``: the default (Suppl. B's M = 100 draws) leaves every run of
    zhu-escape-2d as it was; ``quadrature`` changes its runs' sharpness_estimator alone."""
    path = catalogue_files()["zhu-escape-2d"]
    before = read_file(path)
    del before["readings"]["sharpness-estimate"]       # the file as it was without the reading
    from sgdlab.experiments.spec import resolve

    for scale in SCALES:
        old = resolve(before, scale, str(path)).expand(data_dir="/d")
        for readings in (None, {"sharpness-estimate": "monte-carlo"}):
            spec = load_experiment("zhu-escape-2d", scale, readings=readings)
            assert [r.key for r in spec.expand(data_dir="/d")] == [r.key for r in old]
        quad = load_experiment("zhu-escape-2d", scale,
                               readings={"sharpness-estimate": "quadrature"}).expand(data_dir="/d")
        for a, b in zip(old, quad):
            rest = {k: v for k, v in b.params.items() if k != "sharpness_estimator"}
            assert b.params["sharpness_estimator"] == "quadrature" and rest == a.params
