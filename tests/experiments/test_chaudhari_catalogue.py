"""The thesis' allcnn / CIFAR-10 runs at paper scale carry the settings the thesis states.

§2.4.3.1 (Table 2.1) and §3.3.3 train allcnn with SGD, Nesterov momentum 0.9, learning rate 0.1
divided by 5 every 60 epochs, batch size 128, 200 epochs (lines 717, 1057 of the text); §3.3.3
keeps All-CNN-C's other hyper-parameters, whose ℓ2 regularisation 10⁻³ §2.4.3.1 and §5.5 state
(line 2186). §3.3.3's Entropy-SGD: L = 20, 10 epochs, η′ = 1 divided by 5 every 4 epochs,
η = 0.1, β⁻¹ = 10⁻⁸, γ₀ = 30 scoped by 1.001 per update (line 1075).
"""
from __future__ import annotations

import math
import re
import pytest
import torch

from sgdlab.experiments.spec import load_experiment
from sgdlab.optim.registry import build_optimizer
from sgdlab.testing import paper_runs

SGD_ALLCNN = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}
SGD_SCHEDULE = {"name": "step", "every": 60, "gamma": 0.2}

# entry -> labels of its allcnn / CIFAR-10 runs at paper scale
ALLCNN_RUNS = {
    "chaudhari-trivialized-allcnn": ("sgd", "annealed-noise", "trivialized"),
    "chaudhari-entropy-sgd": ("sgd-allcnn", "entropy-sgd-allcnn"),
    "chaudhari-smoothing": ("sgd-allcnn", "entropy-sgd-allcnn", "hj-allcnn", "heat-allcnn"),
    "chaudhari-sgld": ("sgld-allcnn", "entropy-sgd-allcnn"),
}


@pytest.mark.parametrize("name", sorted(ALLCNN_RUNS))
def test_allcnn_runs_use_the_stated_data_model_batch_and_weight_decay(name):
    runs = paper_runs(name)
    for label in ALLCNN_RUNS[name]:
        p = runs[label]
        assert p["dataset"]["name"] == "cifar10" and p["model"] == {"name": "allcnn"}, label
        assert p["batch_size"] == 128, label
        assert p["optimizer"]["weight_decay"] == 1e-3, label
        # the setting reaches an optimizer that accepts it (the field's p without a model)
        hyper = {k: v for k, v in p["optimizer"].items() if k != "name"}
        if p["optimizer"]["name"] in ("trivialized", "annealed-noise"):
            hyper["p"] = 3
        if p["optimizer"]["name"] == "sgld":         # N from the data the run passes
            hyper["num_data"] = 50_000
        build_optimizer(p["optimizer"]["name"], [torch.nn.Parameter(torch.zeros(3))], **hyper)


@pytest.mark.parametrize("name,label", [("chaudhari-entropy-sgd", "sgd-allcnn"),
                                        ("chaudhari-smoothing", "sgd-allcnn")])
def test_sgd_baseline_on_allcnn_is_the_stated_one(name, label):
    p = paper_runs(name)[label]
    assert p["optimizer"] == SGD_ALLCNN and p["schedule"] == SGD_SCHEDULE
    assert p["epochs"] == (200 if name == "chaudhari-entropy-sgd" else 195)  # Table 4.1: 195


def test_trivialized_allcnn_baseline_is_table_2_1s():
    p = paper_runs("chaudhari-trivialized-allcnn")["sgd"]
    assert p["optimizer"] == SGD_ALLCNN and p["schedule"] == SGD_SCHEDULE
    assert p["epochs"] == 200


def test_entropy_sgd_on_cifar_is_section_3_3_3():
    p = paper_runs("chaudhari-entropy-sgd")["entropy-sgd-allcnn"]
    opt = p["optimizer"]
    assert (opt["name"], opt["L"], opt["lr"], opt["inner_lr"], opt["noise"], opt["gamma"]) == \
        ("entropy_sgd", 20, 1.0, 0.1, 1e-8, 30.0)
    assert opt["gamma_decay"] == pytest.approx(1 - 1 / 1.001, rel=1e-12)
    assert p["schedule"] == {"name": "step", "every": 4, "gamma": 0.2} and p["epochs"] == 10


def test_paper_scale_data_is_preprocessed_as_the_thesis_says():
    """CIFAR-10/100 with global contrast normalisation and ZCA whitening wherever the thesis
    trains on them (§2.4.2, §3.3.3, §5.4.3, §6.3.1; line 690, 1059, 2130, 2914), augmented in
    §5.5 (line 2186); MNIST pixels in [−1, 1] in ch. 2 only (line 690: §5.4.2 does "not
    perform any pre-processing for MNIST", the other chapters say nothing)."""
    from sgdlab.experiments.spec import catalogue_files

    seen = set()
    for name in sorted(n for n in catalogue_files() if n.startswith("chaudhari-")):
        for label, p in paper_runs(name).items():
            d = p.get("dataset") if isinstance(p, dict) else None
            if not d:
                continue
            where = f"{name}:{label}"
            if d["name"] in ("cifar10", "cifar100"):
                assert d.get("normalize") == "gcn-zca", where
                # §5.0.1 states no preprocessing for its copies: the entry takes §5.5's,
                # listed among its deviations
                want = "crop-flip" if name in ("chaudhari-parle-split",
                                               "chaudhari-independent-copies") else None
                assert d.get("augment") == want, where
                seen.add(d["name"])
            else:
                chapter_2 = name.startswith("chaudhari-trivialized")
                assert d.get("normalize") == ("symmetric" if chapter_2 else None), where
                assert "augment" not in d, where
                seen.add("mnist-symmetric" if chapter_2 else d["name"])
    assert {"cifar10", "cifar100", "mnist-symmetric", "mnist"} <= seen
    from sgdlab.experiments.spec import load_experiment

    assert any(d.startswith("the preprocessing is not stated") and "mirror flips" in d
               for d in load_experiment("chaudhari-independent-copies", "paper").deviations)


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_pde_smoothing_is_at_the_thesis_inverse_temperature(scale):
    """§3.1.2 / Definition 3.3 (lines 872-874): "we will set the inverse temperature β⁻¹ = 1";
    β = 5 is a reading of its own."""
    default = load_experiment("chaudhari-pde-smoothing", scale).expand()
    assert [r.params["beta"] for r in default] == [1.0]
    five = load_experiment("chaudhari-pde-smoothing", scale, readings={"beta": "five"})
    assert [r.params["beta"] for r in five.expand()] == [5.0]


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_pde_smoothing_lists_the_time_of_fig_4_1_and_the_gamma_of_fig_3_2_it_chose(scale):
    """Fig. 4.1's caption draws u_viscousHJ(x, T) and u_non-viscousHJ(x, T) with no T (line
    1155), and Fig. 3.2's "large values of γ" (line 880) gives none either: the entry's t,
    which is both, is a choice each scale must list with its value."""
    spec = load_experiment("chaudhari-pde-smoothing", scale)
    [run] = spec.expand()
    t = run.params["t"]
    assert any("time T" in d and f"t = {t:g}" in d and "Fig. 3.2" in d
               for d in spec.deviations), spec.deviations


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_pde_densities_diffuse_as_the_sde_and_see_u_at_t_unless_told(scale):
    """Fig. 4.1's densities: D = β⁻¹/2 of (4.2) and u frozen at u(·, T) by default; the Δρ of
    (4.33) as printed (D = 1) and the scoped u(·, T(1 − s/τ)) are readings of their own."""
    def params(**readings):
        [run] = load_experiment("chaudhari-pde-smoothing", scale, readings=readings).expand()
        return run.params
    assert (params()["fp_diffusion"], params()["u_time"]) == ("sde", "frozen")
    assert params(diffusion="literal")["fp_diffusion"] == "literal"
    assert params(**{"u-time": "scoped"})["u_time"] == "scoped"


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_trajectory_fft_learning_rate_drops_at_the_end_of_the_burn_in(scale):
    """§6.3.3 (line 2958): "We discard the first 10^3 epochs of training ("burnin") [...]. The
    learning rate is fixed to 10^{-3} after this": the one lr drop is where the analysed
    snapshots start, at every scale, and the gradient-norm window starts there too."""
    from sgdlab.experiments.procedures.chaudhari import burnin_end

    spec = load_experiment("chaudhari-trajectory-fft", scale)
    (p,) = [r.params for r in spec.expand(data_dir="/d")]
    (traj,) = [m for m in p["measure"] if m["name"] == "trajectory"]
    (final,) = p["final"]
    assert p["schedule"]["name"] == "step"
    assert p["schedule"]["milestones"] == [final["burnin"] * traj["every_epochs"]]
    assert p["optimizer"]["lr"] * p["schedule"]["gamma"] == pytest.approx(1e-3)
    assert burnin_end(p) == ("epoch", float(p["schedule"]["milestones"][0]))
    assert spec.options["grad_norm_window"] == "after-burnin"
    whole = load_experiment("chaudhari-trajectory-fft", scale,
                            readings={"grad-norm-window": "whole-run"})
    assert whole.options["grad_norm_window"] == "whole-run"
    assert [r.key for r in whole.expand(data_dir="/d")] == [
        r.key for r in spec.expand(data_dir="/d")]


# --- the equivalence margins of §3.3.2 and §4.6 ----------------------------------------------
# The smallest gap the thesis calls a difference on MNIST: HEAT's 0.59% against 0.50% on lenet
# ("with the exception of the heat equation which only reaches 0.59 %", line 1861), 18% of the
# error. A margin as large as that would let HEAT's own result pass as "very similar".
HEAT_GAP = (0.59 - 0.50) / 0.50
# the error each equivalence claim's margin is relative to: the thesis' (Table 3.1, line 1050;
# Table 4.1) at paper scale, the ~3% of lenet on 4,000 images at cpu scale
ERROR = {("chaudhari-smoothing", "paper", "sgd"): 0.0050,
         ("chaudhari-smoothing", "paper", "sgd-mnistfc"): 0.0110,
         ("chaudhari-entropy-sgd", "paper", "adam"): 0.0051,
         ("chaudhari-entropy-sgd", "paper", "adam-mnistfc"): 0.0139,
         ("chaudhari-entropy-sgd", "paper", "sgd-allcnn"): 0.0771,
         ("chaudhari-smoothing", "cpu", "sgd"): 0.03,
         ("chaudhari-entropy-sgd", "cpu", "adam"): 0.03}


@pytest.mark.parametrize("name", ["chaudhari-smoothing", "chaudhari-entropy-sgd"])
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_equivalence_margins_are_below_the_gap_the_thesis_calls_a_difference(name, scale):
    claims = [c for c in load_experiment(name, scale, readings=(
        {"heat-lenet": "comparable"} if name == "chaudhari-smoothing" else None)
        ).options["claims"] if "equivalent" in c]
    assert claims
    for c in claims:
        err = ERROR[(name, scale, c["equivalent"][-1])]
        assert c["margin"] <= HEAT_GAP / 2 * err * 1.001, c       # half the gap, 9% of the error
        assert c["margin"] < HEAT_GAP * err, c
    if scale == "paper":
        lenet = [c["margin"] for c in claims if c["equivalent"][-1] in ("sgd", "adam")]
        assert lenet and all(m < 0.0059 - 0.0050 for m in lenet)   # HEAT's 0.09 points


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_heat_on_lenet_is_worse_by_the_text_and_comparable_by_table_4_1s_caption(scale):
    """Line 1861: HEAT "only reaches 0.59 %" (default, heat-lenet=worse); Table 4.1's caption,
    line 1889: "all algorithms obtain comparable, state-of-the-art validation error"."""
    def heat(readings):
        spec = load_experiment("chaudhari-smoothing", scale, readings=readings)
        return [(k, c.get("margin")) for c in spec.options["claims"] for k in
                ("less", "equivalent") if c.get(k) == ["heat", "sgd"]]

    assert heat(None) == heat({"heat-lenet": "worse"}) == [("less", None)]
    ((kind, margin),) = heat({"heat-lenet": "comparable"})
    assert kind == "equivalent" and margin > 0
    default = load_experiment("chaudhari-smoothing", scale).expand(data_dir="/d")
    other = load_experiment("chaudhari-smoothing", scale, readings={"heat-lenet": "comparable"})
    assert [r.key for r in other.expand(data_dir="/d")] == [r.key for r in default]


def test_hj_on_cifar_is_tested_for_the_lowest_training_loss():
    """§4.6.3 (line 1882): HJ "performs best among the algorithms tested here; it also has the
    lowest training cross-entropy loss of 0.046" — the paper scale tests its training loss
    below each other method's, not only its test error; the runs stay the same."""
    spec = load_experiment("chaudhari-smoothing", "paper")
    lower = [c["less"][1] for c in spec.options["claims"]
             if c.get("metric") == "train_loss" and c.get("less", [None])[0] == "hj-allcnn"]
    assert sorted(lower) == ["entropy-sgd-allcnn", "heat-allcnn", "sgd-allcnn"]
    labels = {r.label for r in spec.expand(data_dir="/d")}
    assert set(lower) <= labels


def test_heat_on_cifar_is_tested_against_each_other_method():
    """§4.6.3 (line 1882): the heat equation "has a much higher validation error than others"
    — the paper scale tests HEAT's test accuracy below each of SGD's, Entropy-SGD's and HJ's
    (it was tested against SGD's only); the runs stay the same."""
    spec = load_experiment("chaudhari-smoothing", "paper")
    above = [c["less"][1] for c in spec.options["claims"]
             if c.get("metric") == "test_acc" and c.get("less", [None])[0] == "heat-allcnn"]
    assert sorted(above) == ["entropy-sgd-allcnn", "hj-allcnn", "sgd-allcnn"]


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_hj_drops_its_learning_rate_in_effective_epochs_as_entropy_sgd(scale):
    """"we set η = 0.1 and reduce it by a factor of 5 after every 3 epochs" (line 1815) is
    Entropy-SGD's, whose epoch is L = 20 effective epochs: every 60 effective epochs. HJ (L = 5)
    drops as often in effective epochs by default, every 3 of its own epochs by the reading."""
    def hj_every(readings):
        runs = load_experiment("chaudhari-smoothing", scale, readings=readings).expand(
            data_dir="/d")
        return {r.label: r.params["schedule"]["every"] * r.params["optimizer"]["L"]
                for r in runs if r.label.startswith("hj")}

    es = [r.params for r in load_experiment("chaudhari-smoothing", scale).expand(
        data_dir="/d") if r.label.startswith("entropy-sgd") and "schedule" in r.params]
    hj = hj_every(None)
    assert hj
    if scale == "smoke":            # L = 2 there: the drop is still every 12 HJ epochs
        assert set(hj.values()) == {12 * 2}
    else:
        assert {p["schedule"]["every"] * p["optimizer"]["L"] for p in es} == {60}
        assert set(hj.values()) == {60}
    literal = load_experiment("chaudhari-smoothing", scale,
                              readings={"hj-lr-drops": "hj-epochs"}).expand(data_dir="/d")
    assert {r.params["schedule"]["every"] for r in literal if r.label.startswith("hj")} == {3}


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_heat_variance_reading_halves_the_perturbations_of_every_heat_run(scale):
    """β⁻¹γ of (4.28) by default (10⁻⁴ on MNIST, 3·10⁻⁷ on CIFAR-10); heat-variance=ou-4.27
    gives every HEAT optimizer (4.27)'s stationary γ/(2β) and leaves the other runs alone."""
    def built(readings):
        runs = load_experiment("chaudhari-smoothing", scale, readings=readings).expand(
            data_dir="/d")
        return {r.label: r for r in runs}, {
            r.label: build_optimizer("heat", [torch.nn.Parameter(torch.zeros(2))], seed=0,
                                     **{k: v for k, v in r.params["optimizer"].items()
                                        if k != "name"})
            for r in runs if r.params["optimizer"]["name"] == "heat"}

    (runs, text), (other, ou) = built(None), built({"heat-variance": "ou-4.27"})
    want = {"smoke": {"heat"}, "cpu": {"heat"},
            "paper": {"heat", "heat-mnistfc", "heat-allcnn"}}[scale]
    assert set(text) == set(ou) == want
    for label, opt in text.items():
        gamma = {"heat-allcnn": 3e-7}.get(label, 1e-4)
        assert opt.current_variance() == pytest.approx(gamma, rel=1e-12), label
        assert ou[label].current_variance() == pytest.approx(gamma / 2, rel=1e-12), label
        assert other[label].key != runs[label].key
    assert {k: r.key for k, r in other.items() if k not in want} == {
        k: r.key for k, r in runs.items() if k not in want}


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_heat_variance_literal_perturbs_with_the_gamma_of_entropy_sgd_on_the_same_network(scale):
    """(4.43) read literally, "variance γI" (line 1829): every HEAT run takes the γ of the
    Entropy-SGD run on its network (10⁴ on MNIST, 30 on CIFAR-10) and its scoping, and its
    perturbation variance is that γ; the other runs keep their keys."""
    spec = load_experiment("chaudhari-smoothing", scale)
    runs = {r.label: r for r in spec.expand(data_dir="/d")}
    literal = {r.label: r for r in load_experiment(
        "chaudhari-smoothing", scale, readings={"heat-variance": "literal"}).expand(
        data_dir="/d")}
    heat = {k for k, r in runs.items() if r.params["optimizer"]["name"] == "heat"}
    assert heat == {"smoke": {"heat"}, "cpu": {"heat"},
                    "paper": {"heat", "heat-mnistfc", "heat-allcnn"}}[scale]
    for label in heat:
        es = runs[label.replace("heat", "entropy-sgd")].params["optimizer"]
        mine = literal[label].params["optimizer"]
        assert mine == {**runs[label].params["optimizer"], "gamma": es["gamma"]}, label
        assert mine.get("gamma_decay") == es.get("gamma_decay"), label
        opt = build_optimizer("heat", [torch.nn.Parameter(torch.zeros(2))], seed=0,
                              **{k: v for k, v in mine.items() if k != "name"})
        assert opt.current_variance() == {"heat-allcnn": 30.0}.get(label, 1e4), label
        assert literal[label].key != runs[label].key
    assert {k: r.key for k, r in literal.items() if k not in heat} == {
        k: r.key for k, r in runs.items() if k not in heat}


def test_heat_variance_literal_steps_are_eq_4_43_by_hand_in_float64():
    """Two steps of the cpu scale's HEAT under heat-variance=literal on f = ½|x|², by hand:
    x ← x − (η/L) Σ_i ∇f(x + εⁱ) through Nesterov momentum, εⁱ ~ N(0, γ(t)I) with γ(t) =
    10⁴ (1 − γ₁)^t drawn from a generator seeded as the optimizer's."""
    (run,) = [r for r in load_experiment("chaudhari-smoothing", "cpu", readings={
        "heat-variance": "literal"}).expand(data_dir="/d") if r.label == "heat" and r.seed == 0]
    hyper = {k: v for k, v in run.params["optimizer"].items() if k != "name"}
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    w = torch.nn.Parameter(x0.clone())
    opt = build_optimizer("heat", [w], seed=7, **hyper)

    def closure():
        opt.zero_grad()
        loss = 0.5 * (w ** 2).sum()
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    gen = torch.Generator().manual_seed(7)
    x, buf, mu, lr = x0.clone(), None, hyper["momentum"], hyper["lr"]
    for t in range(2):
        s = math.sqrt(1e4 * (1 - hyper["gamma_decay"]) ** t)
        eps = [s * torch.randn(3, generator=gen, dtype=torch.float64) for _ in range(hyper["L"])]
        g = sum(x + e for e in eps) / hyper["L"]                          # ∇f(x + εⁱ) = x + εⁱ
        buf = g if buf is None else mu * buf + g
        x = x - lr * (g + mu * buf)                                       # Nesterov
    torch.testing.assert_close(w.detach(), x, rtol=0, atol=1e-10)
    assert (x - x0).abs().max() > 1.0           # perturbations of std 100 move x by that much


def _without_noise(params: dict) -> dict:
    return {**params, "optimizer": {k: v for k, v in params["optimizer"].items()
                                    if k != "noise"}}


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_langevin_noise_readings_set_every_entropy_sgd_runs_thermal_noise_and_no_other(scale):
    """§4.6.1.1's β_ex⁻¹ = 10⁻⁸ in (4.40)'s √(η_y β_ex⁻¹) is Algorithm 2's β⁻¹ = 5·10⁻⁹ by
    default; langevin-noise=algorithm-2 takes 10⁻⁸ as Algorithm 2's β⁻¹, and =zero the
    β_ex⁻¹ = 0 of §4.6.1.1 (line 1807) and §4.7 (line 1899). HJ and HEAT have no thermal
    noise; the other runs keep their keys, the Entropy-SGD runs every other parameter."""
    def runs(readings):
        spec = load_experiment("chaudhari-smoothing", scale, readings=readings)
        return {r.label: r for r in spec.expand(data_dir="/d")}

    default = runs(None)
    entropy = {k for k, r in default.items() if r.params["optimizer"]["name"] == "entropy_sgd"}
    assert entropy == {"smoke": {"entropy-sgd"}, "cpu": {"entropy-sgd"},
                       "paper": {"entropy-sgd", "entropy-sgd-mnistfc", "entropy-sgd-allcnn"}
                       }[scale]
    for choice, noise in ((None, 5e-9), ("algorithm-2", 1e-8), ("zero", 0.0)):
        read = default if choice is None else runs({"langevin-noise": choice})
        for label in entropy:
            assert read[label].params["optimizer"]["noise"] == noise, (choice, label)
            if choice is not None:
                assert read[label].key != default[label].key
                assert _without_noise(read[label].params) == _without_noise(
                    default[label].params), (choice, label)
        assert {k: r.key for k, r in read.items() if k not in entropy} == {
            k: r.key for k, r in default.items() if k not in entropy}


def test_section_3_3_2s_mnistfc_has_batch_norm_by_the_code_and_none_by_the_text():
    """"a fully-connected network with two hidden layers of 1024 units each" (line 1050) names
    batch normalisation for lenet only: mnistfc-bn=text drops it; the default keeps the code's."""
    def mnistfc(readings):
        spec = load_experiment("chaudhari-entropy-sgd", "paper", readings=readings)
        return {r.label: r for r in spec.expand(data_dir="/d") if "mnistfc" in r.label}

    code, text = mnistfc(None), mnistfc({"mnistfc-bn": "text"})
    assert sorted(code) == sorted(text) == ["adam-mnistfc", "entropy-sgd-mnistfc"]
    for label in code:
        assert code[label].params["model"].get("batchnorm", True) is True
        assert text[label].params["model"]["batchnorm"] is False
        assert code[label].key != text[label].key
    for scale in ("smoke", "cpu"):          # no mnistfc there: nothing changes
        a = load_experiment("chaudhari-entropy-sgd", scale).expand()
        b = load_experiment("chaudhari-entropy-sgd", scale, readings={"mnistfc-bn": "text"})
        assert [r.key for r in b.expand()] == [r.key for r in a]


def test_every_scale_running_small_fc_names_its_block_mean_inputs():
    """small-fc's "7x7 down-sampled images" are 4x4 block means, not the authors' bilinear
    resize: a departure wherever small-fc or tiny-fc runs on 28x28 images."""
    from sgdlab.experiments.spec import catalogue_files

    for name in sorted(n for n in catalogue_files() if n.startswith("chaudhari-")):
        for scale in ("cpu", "paper"):
            spec = load_experiment(name, scale)
            if any(r.params.get("model", {}).get("name") in ("small-fc", "tiny-fc")
                   for r in spec.expand(data_dir="/d")):
                assert any("bilinear" in d for d in spec.deviations), (name, scale)


@pytest.mark.parametrize("name", ["chaudhari-trivialized", "chaudhari-trivialized-lenet",
                                  "chaudhari-trivialized-allcnn"])
def test_chapter_2_reports_test_errors_and_lists_the_unused_tuning_split(name):
    """§2.4.2 (line 690): 12% of the training data is held out "for hyper-parameter tuning",
    and the runs "report the error rates on the test set". Measuring the test error is the
    thesis' own protocol, not a departure from a validation split; whether the final runs train
    on the 12% is left open, and the paper scale, which trains on all of it, says so."""
    for scale in ("cpu", "paper"):
        devs = load_experiment(name, scale).deviations
        assert not any("instead of a 12% validation split" in d for d in devs), (name, scale)
    devs = load_experiment(name, "paper").deviations
    assert any("12%" in d and "line 690" in d and "train" in d for d in devs), devs


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_parle_is_compared_with_elastic_sgd_on_the_same_subsets(scale):
    """Table 5.2 (lines 2193-2194): Parle 5.89% against Elastic-SGD's 6.51% on 50% subsets,
    6.08% against 6.8% on 25%, whenever both run."""
    spec = load_experiment("chaudhari-parle-split", scale)
    labels = {r.label for r in spec.expand(data_dir="/d")}
    pairs = {tuple(c["greater"]) for c in spec.options["claims"] if "greater" in c}
    for frac in ("50", "25"):
        if f"elastic-sgd-{frac}" in labels:
            assert (f"parle-{frac}", f"elastic-sgd-{frac}") in pairs


@pytest.mark.parametrize("name", ["chaudhari-parle", "chaudhari-parle-split"])
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_elastic_sgd_runs_list_their_unstated_momentum_and_master(name, scale):
    """Ch. 5 gives Elastic-SGD's update (5.4a) with no momentum and its master (5.4b) with an
    unstated η′ (lines 1995-1997); line 2112's Nesterov 0.9 is said of the SGD baseline and
    Remark 5.3's of Parle. The entries run Elastic-SGD with Nesterov 0.9 on its whole step
    (gradient and elastic pull: ``outer_momentum``, the inner loop of L = 1 has none) and the
    master as the replicas' average (η′ = ρ_k/n, §5.3.2's η⁽³⁾): each scale lists both."""
    from sgdlab.train.replicas import ParleConfig

    spec = load_experiment(name, scale)
    elastic = [ParleConfig.from_dict(r.params["parle"]) for r in spec.expand(data_dir="/d")
               if r.label.startswith("elastic-sgd")]
    assert elastic
    for cfg in elastic:
        assert (cfg.L, cfg.momentum, cfg.outer_momentum, cfg.outer_nesterov) == (1, 0.0, 0.9,
                                                                                 True)
    assert any(d.startswith("Elastic-SGD's settings are not stated") and "Nesterov" in d
               and "average" in d for d in spec.deviations), spec.deviations


@pytest.mark.parametrize("name", ["chaudhari-parle", "chaudhari-parle-split"])
def test_parle_entries_list_the_replicas_shared_start_which_the_thesis_leaves_open(name):
    """Ch. 5 does not say how the replicas are initialised ("Parle creates multiple replicas of
    a deep network along with one master", line 1943): the trainer starts every replica from
    the model's weights (at lr 0 the master stays there; replicas of their own would average
    elsewhere), a choice the paper scale must list."""
    from sgdlab.data.base import Dataset
    from sgdlab.train.replicas import ParleConfig, train_replicas

    devs = load_experiment(name, "paper").deviations
    assert any("initialisation is not stated" in d and "same weights" in d for d in devs), devs
    g = torch.Generator().manual_seed(0)
    X, Xt = torch.randn(16, 4, generator=g), torch.randn(8, 4, generator=g)
    data = Dataset(X, X[:, 0].gt(0).long(), Xt, Xt[:, 0].gt(0).long(),
                   {"name": "toy", "task": "classification", "input_shape": (4,),
                    "num_outputs": 2})
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    start = [p.detach().clone() for p in model.parameters()]
    res = train_replicas(model, torch.nn.CrossEntropyLoss(), data,
                         ParleConfig(replicas=3, L=2, lr=0.0, inner_lr=0.1, batch_size=8),
                         rounds=1)
    # (a mean of three equal float32 tensors may round in the last bit)
    assert all(torch.allclose(a, b.detach(), rtol=0, atol=1e-6)
               for a, b in zip(start, res.master.parameters()))


def test_parle_entry_lists_entropy_sgds_chapter_5_settings_as_parles():
    """§5.2.2 gives Entropy-SGD only its schedule and "we do not add any external noise"
    (line 2027); the entry runs it as Parle's special case n = 1, ρ = ∞ (§5.3.1, line 2085)
    with Parle's L, α and scoping, and lists that."""
    spec = load_experiment("chaudhari-parle", "paper")
    runs = {r.label: r.params["parle"] for r in spec.expand(data_dir="/d")}
    es, parle = runs["entropy-sgd"], runs["parle"]
    assert es["replicas"] == 1 and float(es["rho"]) == math.inf
    assert {k: v for k, v in es.items() if k not in ("replicas", "rho")} == \
        {k: v for k, v in parle.items() if k not in ("replicas", "rho")}
    assert any(d.startswith("Entropy-SGD's settings in Ch. 5 are not stated")
               for d in spec.deviations), spec.deviations


# --- §3.3.1: the training settings taken from the authors' code (explore-hessian) -----------
def test_small_lenet_trains_the_authors_codes_tenth_of_an_epoch():
    """mnistconv.py: batch 32, Adam at 10⁻³, one epoch of ``num_iters = num_batches // 10``
    steps, num_batches = ⌈60,000 / 32⌉."""
    import math

    p = _hessian_runs("paper")["small-lenet-hessian"]
    assert p["optimizer"] == {"name": "adam", "lr": 1e-3} and p["batch_size"] == 32
    assert p["max_steps"] == math.ceil(60000 / 32) // 10 == 187 and p["epochs"] == 1


def test_paper_scale_hessians_average_the_authors_codes_32_batches():
    """Both scripts average the Hessian over ``hessian_num_batches`` = 32 mini-batches of
    their training batch size: 32 x 32 images for small-LeNet, 32 x 128 for smallfc."""
    for label, p in _hessian_runs("paper").items():
        if label in ("char-lstm", "allcnn"):       # all 256 lines; allcnn: a Fisher diagonal
            continue
        (final,) = p["final"]
        assert final["kind"] == "hessian_spectrum" and final["samples"] == 32 * p["batch_size"], \
            label


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_smallfc_lists_the_authors_codes_summed_loss(scale):
    """mnist.py takes its SGD step 0.01 on the loss summed over a batch of 128 (1.28 on the
    mean loss sgdlab trains on): a departure the entry must list, since it keeps 0.01."""
    p = _hessian_runs(scale)["small-mnistfc"]
    assert p["optimizer"]["lr"] == 0.01 and p["batch_size"] == 128
    devs = load_experiment("chaudhari-hessian-spectrum", scale).deviations
    assert any("sum" in d and f"{0.01 * 128:g}" in d for d in devs), devs


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_the_hessian_entry_lists_the_authors_codes_initialisation(scale):
    """mnist.py and mnistconv.py start every weight and bias at ``scale*rs.randn`` with
    scale 0.1, where sgdlab's models take PyTorch's defaults; the end point whose Hessian is
    diagonalised depends on it and the thesis is silent, so the entry lists it."""
    devs = load_experiment("chaudhari-hessian-spectrum", scale).deviations
    assert any("initialisation" in d and "N(0, 0.1²)" in d for d in devs), devs


def test_paper_scale_char_lstm_is_the_thesis_network_trained_as_autograds_example():
    """§3.3.1 (iii): 48 LSTM units, 32,640 parameters, Adam, 256 lines of 32 characters of 96
    symbols; the rest from autograd's examples/lstm.py (full-batch Adam with step size 0.1,
    1,000 iterations, N(0, 0.01²) weights). The Hessian is over all 256 lines, in float64,
    and fully diagonalised; panel (B)'s claim is 95% of |λ| below 10⁻⁵."""
    from sgdlab.experiments.procedures.train import load_data
    from sgdlab.models import build_model

    spec = load_experiment("chaudhari-hessian-spectrum", "paper")
    p = _hessian_runs("paper")["char-lstm"]
    ds = load_data(p)
    assert tuple(ds.x_train.shape) == (256, 31) and ds.num_outputs == 96
    model = build_model(p["model"]["name"], ds.input_shape, ds.num_outputs,
                        **{k: v for k, v in p["model"].items() if k != "name"})
    assert sum(q.numel() for q in model.parameters()) == 32_640
    assert p["optimizer"] == {"name": "adam", "lr": 0.1} and p["batch_size"] == "full"
    assert p["epochs"] == 1000 and p["dtype"] == "float64"
    (final,) = p["final"]
    assert final["kind"] == "hessian_spectrum" and "samples" not in final
    assert final["max_params"] >= 32_640
    assert spec.options["near_zero"]["char-lstm"] == [1e-5, 0.95]
    assert len(spec.seeds) == 5


def test_cpu_scale_char_lstm_lists_its_smaller_network_and_autograds_settings():
    spec = load_experiment("chaudhari-hessian-spectrum", "cpu")
    p = _hessian_runs("cpu")["char-lstm"]
    assert p["model"]["hidden"] < 48 and p["dtype"] == "float64"
    assert "samples" not in p["final"][0]
    assert any("8 LSTM units" in d and "4,240" in d and "32,640" in d
               for d in spec.deviations), spec.deviations
    assert any("examples/lstm.py" in d and "0.1" in d and "1,000" in d
               for d in spec.deviations), spec.deviations


def test_paper_scale_allcnn_is_the_thesis_network_with_adams_fisher_diagonal():
    """§3.3.1 (iv): allcnn (≈ 1.6 million weights, cf. §3.3.3: CIFAR-10 contrast-normalised
    and ZCA-whitened) trained with Adam; the Fisher diagonal from the moments Adam keeps;
    Fig. 3.4c's claim is ≈ 95% of |λ| ≤ 10⁻⁵."""
    spec = load_experiment("chaudhari-hessian-spectrum", "paper")
    p = _hessian_runs("paper")["allcnn"]
    assert p["dataset"]["name"] == "cifar10" and p["dataset"]["normalize"] == "gcn-zca"
    assert p["model"] == {"name": "allcnn"} and p["optimizer"]["name"] == "adam"
    assert p["final"] == [{"kind": "fisher_diagonal", "reading": "adam-moments"}]
    assert spec.options["near_zero"]["allcnn"] == [1e-5, 0.95]
    assert "fisher_histogram" in spec.outputs["figures"]


@pytest.mark.parametrize("choice,final", [
    ("adam-moments", {"kind": "fisher_diagonal", "reading": "adam-moments"}),
    ("adam-moments-uncorrected", {"kind": "fisher_diagonal", "reading": "adam-moments",
                                  "bias_correction": False}),
    ("per-sample", {"kind": "fisher_diagonal", "reading": "per-sample"})])
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_the_fisher_reading_reaches_allcnn_alone(scale, choice, final):
    spec = load_experiment("chaudhari-hessian-spectrum", scale, readings={"fisher": choice})
    runs = {r.label: r.params for r in spec.expand(data_dir="/d")}
    assert runs["allcnn"]["final"] == [final]
    default = _hessian_runs(scale)
    assert {k: v for k, v in runs.items() if k != "allcnn"} == \
        {k: v for k, v in default.items() if k != "allcnn"}


def test_cpu_scale_allcnn_lists_its_narrower_network_and_data():
    from sgdlab.experiments.procedures.train import load_data
    from sgdlab.models import build_model

    spec = load_experiment("chaudhari-hessian-spectrum", "cpu")
    p = _hessian_runs("cpu")["allcnn"]
    ds = load_data(p)
    model = build_model(p["model"]["name"], ds.input_shape, ds.num_outputs,
                        **{k: v for k, v in p["model"].items() if k != "name"})
    d = sum(q.numel() for q in model.parameters())
    assert any(f"{d:,}" in dev and "1,667,166" in dev and "CIFAR-10" in dev
               for dev in spec.deviations), (d, spec.deviations)


def _hessian_runs(scale: str) -> dict[str, dict]:
    spec = load_experiment("chaudhari-hessian-spectrum", scale)
    return {r.label: r.params for r in spec.expand(data_dir="/d")}


# --- Trivialized-SGD: "training loss after the first epoch" ----------------------------------
def _trivialized_run(label: str, loss_steps: list[int]):
    """A stored run of 32 steps per epoch for 4 epochs whose training loss was evaluated at
    ``loss_steps``, the loss at step s being 2 − s/100 (each epoch's value is distinct)."""
    from sgdlab.testing import stored_run

    metrics = {"train_loss": [(s, 2 - s / 100) for s in loss_steps],
               "train_acc": [(s, 0.9) for s in loss_steps],
               "epoch": [(32 * e, float(e)) for e in range(1, 5)]}
    return stored_run(label, status="ok", metrics=metrics,
                      summary={"test_acc": 0.9, "train_loss": 1.0, "train_acc": 0.9})


def test_early_train_loss_is_the_loss_at_the_end_of_the_first_epoch():
    """The table's "training loss after the first epoch" (and chaudhari-trivialized's claim on
    it) is the evaluation at the end of epoch 1; a run evaluated only every 2 epochs has no
    such value (NaN), not its epoch-2 loss under that name."""
    from sgdlab.experiments.procedures.chaudhari import trivialized

    spec = load_experiment("chaudhari-trivialized", "cpu")
    every = _trivialized_run("adam", [0, 32, 64, 96, 128])
    sparse = _trivialized_run("trivialized", [0, 64, 128])
    late = _trivialized_run("trivialized", [0, 40])   # an evaluation inside epoch 2
    trivialized(spec, [every, sparse, late])
    assert every.summary["early_train_loss"] == pytest.approx(2 - 32 / 100)
    for run in (sparse, late):
        assert run.summary["early_train_loss"] != run.summary["early_train_loss"]   # NaN


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("name", ["chaudhari-trivialized", "chaudhari-trivialized-lenet"])
def test_every_run_is_evaluated_at_the_epoch_of_its_early_training_loss(name, scale):
    spec = load_experiment(name, scale)
    assert "early_train_loss" in [row[0] for row in spec.options["table"]]
    early = spec.options["early_epoch"]
    for r in spec.expand(data_dir="/d"):
        every = r.params.get("eval_every", 1)
        assert every >= 1 and early % every == 0 and early <= r.params["epochs"], (r.label, every)


def test_chaudhari_quotes_are_on_the_lines_they_cite(paper_text):
    """Each quote begins on a line its ``where`` cites (a passage may run on across a page
    break into the next few lines)."""
    import re

    from sgdlab.experiments.spec import catalogue_files, read_file

    def norm(t: str) -> str:
        return re.sub(r"[^a-z0-9]+", "", t.lower())

    files = catalogue_files()
    for name in sorted(n for n in files if n.startswith("chaudhari-")):
        paper = read_file(files[name])["paper"]
        quotes = ([(paper["quote"], paper["where"])] if "quote" in paper else []) + [
            (q["quote"], q["where"]) for q in paper.get("quotes", [])]
        for quote, where in quotes:
            m = re.search(r"lines? ([\d ,–-]+)", where)
            assert m, (name, where)
            cited = [int(x) for x in re.findall(r"\d+", m.group(1))]
            q = norm(quote)
            assert any(norm(paper_text[n - 1]).find(q[:40]) >= 0 and q in norm(
                " ".join(paper_text[n - 1:n + 3])) for n in cited), (name, where, quote[:60])


@pytest.fixture(scope="module")
def paper_text(paper_lines_of) -> list[str]:
    return paper_lines_of("chaudhari-2018-thesis-energy-landscape.txt")


SPIN_ORDER = {  # entry -> (labels with the field, p by weight layers, p by hidden layers)
    "chaudhari-trivialized": (("trivialized",), 17, 16),
    "chaudhari-trivialized-lenet": (("trivialized",), 4, 3),
    "chaudhari-trivialized-allcnn": (("annealed-noise", "trivialized"), 9, 8),
}
_INPUTS = {"mnist": ((1, 28, 28), 10), "mnist_small": ((1, 28, 28), 10),
           "digits": ((1, 8, 8), 10), "cifar10": ((3, 32, 32), 10)}


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("name", sorted(SPIN_ORDER))
def test_spin_order_reading_counts_the_hidden_layers_of_each_network(name, scale):
    """§2.4.2's p: the weight layers by default ("the number of layers", line 686), one fewer
    under ``spin-order=hidden-layers`` ("the number of hidden layers", line 682)."""
    from sgdlab.models import build_model
    from sgdlab.optim import build_optimizer_for

    labels, p_weight, p_hidden = SPIN_ORDER[name]
    for choice, want in (("weight-layers", p_weight), ("hidden-layers", p_hidden)):
        spec = load_experiment(name, scale, readings={"spin-order": choice})
        runs = {r.label: r.params for r in spec.expand(data_dir="/d")}
        for label in labels:
            p = runs[label]
            shape, classes = _INPUTS[p["dataset"]["name"]]
            model = build_model(**{"input_shape": shape, "num_outputs": classes, **p["model"]})
            hyper = {k: v for k, v in p["optimizer"].items() if k != "name"}
            opt = build_optimizer_for(p["optimizer"]["name"], model, seed=0, **hyper)
            assert opt.p == want, (name, scale, choice, label)


@pytest.mark.parametrize("scale,batches", [("cpu", 32), ("paper", 469)])
def test_elastic_sgds_rho_reaches_its_floor_l_times_sooner_than_parles(scale, batches):
    """(5.10) at L = 1 scopes Elastic-SGD's ρ every step: 0.1 after 2B ln 10 steps, 4.6
    epochs; Parle's (L = 25) after as many rounds, 25 times the gradient evaluations
    (docs/FIDELITY.md, "Elastic-SGD's scoping"). B: mnist_small's 4,000 and MNIST's 60,000
    images in batches of 128."""
    import math

    from sgdlab.train.replicas import ParleConfig

    runs = {r.label: r.params for r in
            load_experiment("chaudhari-parle", scale).expand(data_dir="/d")}
    floors = {}
    for label in ("parle", "elastic-sgd"):
        cfg = ParleConfig.from_dict(runs[label]["parle"])
        opt = cfg.optimizer([torch.nn.Parameter(torch.zeros(1))], seed=0, batches=batches)
        k = 0
        while opt.current_rho() > cfg.rho_min:
            k += 1
            opt.outer_steps = k
        floors[label] = (k, k * cfg.L / batches)       # rounds, effective epochs
    assert floors["parle"][0] == floors["elastic-sgd"][0] == pytest.approx(
        2 * batches * math.log(10), rel=0.01)
    assert floors["elastic-sgd"][1] == pytest.approx(4.6, abs=0.05)
    assert floors["parle"][1] == pytest.approx(25 * floors["elastic-sgd"][1])


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_sgld_entry_runs_entropy_sgd_as_section_3_3_2_and_sgld_under_the_decay(scale):
    """§3.3.6 (line 1124): SGLD under η/(1+t)^b against Entropy-SGD's own lenet runs (those of
    chaudhari-entropy-sgd, §3.3.2); at cpu scale both get the same effective epochs, and
    "much worse" is a gap of 20% of Entropy-SGD's error at every scale."""
    def runs(name, readings=None):
        spec = load_experiment(name, scale, readings=readings)
        return {r.label: {k: v for k, v in r.params.items() if k != "eval_every_steps"}
                for r in spec.expand(data_dir="/d") if r.seed == 0}

    mine, theirs = runs("chaudhari-sgld"), runs("chaudhari-entropy-sgd")
    for label in [k for k in mine if k.startswith("entropy-sgd")]:
        assert mine[label] == theirs[label], label
    for label in [k for k in mine if k.startswith("sgld")]:
        p = mine[label]
        assert p["optimizer"]["name"] == "sgld" and "momentum" not in p["optimizer"], label
        assert p["optimizer"].get("energy", "full-data") == "full-data", label
        assert p["optimizer"]["temperature"] == 1.0, label
        assert p["schedule"]["name"] == "polynomial-decay" and "per" not in p["schedule"]
        assert p["model"].get("dropout", 0.5) == 0.5 or label.endswith("allcnn"), label
    if scale == "cpu":
        l_inner = mine["entropy-sgd"]["optimizer"]["L"]
        assert mine["sgld"]["epochs"] == mine["entropy-sgd"]["epochs"] * l_inner == 20
    if scale == "paper":
        assert (mine["sgld"]["epochs"], mine["sgld-allcnn"]["epochs"]) == (300, 500)
    errors = {"cpu": {"sgld": 0.11}, "paper": {"sgld": 0.005, "sgld-allcnn": 0.078}}
    claims = load_experiment("chaudhari-sgld", scale).options["claims"]
    for c in claims if scale != "smoke" else []:
        assert c["greater"][0].startswith("entropy-sgd") and c["metric"] == "test_acc"
        assert c["margin"] == pytest.approx(0.2 * errors[scale][c["greater"][1]], rel=0.01)
    # the readings change the SGLD runs only, as named
    noise = runs("chaudhari-sgld", {"sgld-noise": "entropy-sgd", "schedule-t": "epochs"})
    for label, p in noise.items():
        if label.startswith("sgld"):
            assert (p["optimizer"]["energy"], p["optimizer"]["temperature"]) == ("mean", 1e-6)
            assert p["schedule"]["per"] == "epoch"
        else:
            assert p == mine[label], label


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("readings", [{}, {"outer-step": "printed"},
                                      {"sgld-dropout": "entropy-sgd"}])
def test_sgld_entrys_entropy_sgd_runs_are_chaudhari_entropy_sgds_runs_in_the_store(scale,
                                                                                  readings):
    """chaudhari-sgld's Entropy-SGD runs train as chaudhari-entropy-sgd's (evaluated as often
    too) and take their keys (``same_as``), so the store runs them once for both entries,
    under a reading both entries have as under one of chaudhari-sgld's alone; its SGLD runs
    keep chaudhari-sgld's own keys."""
    theirs_readings = {k: c for k, c in readings.items() if k != "sgld-dropout"}
    mine = load_experiment("chaudhari-sgld", scale, readings=readings).expand(data_dir="/d")
    theirs = {(r.label, r.seed): r.key for r in load_experiment(
        "chaudhari-entropy-sgd", scale, readings=theirs_readings).expand(data_dir="/d")}
    shared = [r for r in mine if r.label.startswith("entropy-sgd")]
    assert shared and all(r.key == theirs[(r.label, r.seed)] for r in shared)
    assert {r.experiment for r in shared} == {"chaudhari-entropy-sgd"}
    assert {r.experiment for r in mine if r.label.startswith("sgld")} == {"chaudhari-sgld"}


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_sgld_dropout_reading_moves_lenet_sgld_to_entropy_sgds_rate_only(scale):
    """§3.3.6 keeps dropout "consistent with the experiments in Section 3.3" (line 1124),
    where lenet has 0.5 in the baseline and 0.25 under Entropy-SGD (line 1052): by default
    SGLD's lenet keeps 0.5; sgld-dropout=entropy-sgd gives it 0.25 and changes no other run
    (allcnn's 0.5 is both methods', line 1075)."""
    def runs(readings=None):
        spec = load_experiment("chaudhari-sgld", scale, readings=readings)
        return {(r.label, r.seed): r for r in spec.expand(data_dir="/d")}

    default, reduced = runs(), runs({"sgld-dropout": "entropy-sgd"})
    assert default.keys() == reduced.keys()
    for key, run in default.items():
        if key[0] == "sgld":
            assert run.params["model"]["dropout"] == 0.5
            assert reduced[key].params["model"]["dropout"] == 0.25
            assert reduced[key].key != run.key
        else:
            assert reduced[key].key == run.key, key


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_table_5_2s_full_data_row_runs_with_every_replica_on_the_whole_set(scale):
    """Table 5.2's first row (line 2192: Parle 5.18%, Elastic-SGD 5.76%) has every replica on
    the whole dataset; the entry runs it next to the split rows, with the split runs' settings
    otherwise, and tests Parle against Elastic-SGD there."""
    spec = load_experiment("chaudhari-parle-split", scale)
    runs = {r.label: r.params["parle"] for r in spec.expand(data_dir="/d")}
    for full, split in (("parle-full", "parle-50"), ("elastic-sgd-full", "elastic-sgd-50")):
        assert full in runs, sorted(runs)
        assert not runs[full].get("shard", False) and "shard_fraction" not in runs[full]
        assert {k: v for k, v in runs[full].items() if k not in ("shard", "shard_fraction")} == \
            {k: v for k, v in runs[split].items() if k not in ("shard", "shard_fraction")}
    pairs = {tuple(c["greater"]) for c in spec.options["claims"] if "greater" in c}
    assert ("parle-full", "elastic-sgd-full") in pairs


# --- the recurrent networks of §3.3.4-3.3.5 ---------------------------------------------------
RNN = "chaudhari-entropy-sgd-rnn"


def _rnn_runs(scale: str, readings=None) -> dict[str, dict]:
    return {r.label: r.params
            for r in load_experiment(RNN, scale, readings=readings).expand(data_dir="/d")}


def test_rnn_paper_scale_runs_the_stated_settings():
    """§3.3.5 (lines 1099-1101): Adam, 0.002 halved every 5 epochs, 50 epochs, β₁ = 0.9;
    Entropy-Adam L = 5, γ = 100, η′ = 0.01 halved at each epoch, 5 epochs, β₁ = 0.5 (line
    1120). §3.3.4 (lines 1091-1095): SGD without momentum in Zaremba et al.'s pipeline for 55
    epochs; Entropy-SGD L = 5, γ = 10³, η′ = 1 ÷10 at each epoch after the third, η = 1,
    β⁻¹ = 10⁻⁸, momentum 0.5 (line 1118), 5 epochs."""
    p = _rnn_runs("paper")
    adam, eadam = p["adam-char"], p["entropy-adam-char"]
    sgd, esgd = p["sgd-ptb"], p["entropy-sgd-ptb"]
    for q in (adam, eadam):
        assert q["dataset"] == {"name": "text_chars", "data_dir": "/d"}
        assert q["model"] == {"name": "char-lstm"}            # 2 layers of 128, windows of 50
    assert adam["optimizer"] == {"name": "adam", "lr": 0.002, "betas": [0.9, 0.999]}
    assert adam["schedule"] == {"name": "step", "every": 5, "gamma": 0.5}
    assert adam["epochs"] == 50
    o = eadam["optimizer"]
    assert (o["name"], o["lr"], o["L"], o["gamma"], o["betas"][0]) == \
        ("entropy_adam", 0.01, 5, 100.0, 0.5)
    assert o.get("gamma_decay", 0) == 0                          # fixed γ: no scoping
    assert eadam["schedule"] == {"name": "step", "every": 1, "gamma": 0.5}
    assert eadam["epochs"] * o["L"] == 25
    for q in (sgd, esgd):
        assert q["dataset"] == {"name": "ptb", "data_dir": "/d"}
        assert q["model"] == {"name": "ptb-lstm"}             # Zaremba et al.'s large LSTM
        assert q["batch_size"] == 20 and q["clip_grad_norm"] == 10.0
    assert sgd["optimizer"] == {"name": "sgd", "lr": 1.0}        # no momentum
    assert sgd["schedule"] == {"name": "step", "every": 1, "start": 14,
                               "gamma": pytest.approx(1 / 1.15)}
    assert sgd["epochs"] == 55
    o = esgd["optimizer"]
    assert (o["name"], o["lr"], o["L"], o["gamma"], o["inner_lr"], o["noise"]) == \
        ("entropy_sgd", 1.0, 5, 1000.0, 1.0, 1e-8)
    assert o["momentum"] == o["inner_momentum"] == 0.5 and o.get("gamma_decay", 0) == 0
    assert esgd["schedule"] == {"name": "step", "every": 1, "start": 3, "gamma": 0.1}
    assert esgd["epochs"] * o["L"] == 25
    for q in p.values():        # every optimizer accepts its settings
        hyper = {k: v for k, v in q["optimizer"].items() if k != "name"}
        build_optimizer(q["optimizer"]["name"], [torch.nn.Parameter(torch.zeros(3))], **hyper)


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_rnn_budgets_keep_the_thesis_ratio_of_effective_epochs(scale):
    """25 effective epochs against 50 (Adam) and 55 (SGD). At cpu scale the char-LSTM runs the
    first 2/5 of the thesis' runs under their schedules as stated, the PTB-LSTM its runs
    compressed to 2/5 of the epochs with the schedules scaled (the thesis' number of drops)."""
    p, paper = _rnn_runs(scale), _rnn_runs("paper")
    k = 1.0 if scale == "paper" else 2 / 5
    for entropy, base, epochs in (("entropy-adam-char", "adam-char", 50),
                                  ("entropy-sgd-ptb", "sgd-ptb", 55)):
        eff = p[entropy]["epochs"] * p[entropy]["optimizer"]["L"]
        assert p[base]["epochs"] / eff == pytest.approx(epochs / 25), (base, eff)
        assert p[entropy]["epochs"] == pytest.approx(5 * k)
    for label in ("adam-char", "entropy-adam-char"):             # truncated
        assert p[label]["schedule"] == paper[label]["schedule"], label
    for label in ("sgd-ptb", "entropy-sgd-ptb"):                 # compressed
        for key in ("every", "start"):
            assert p[label]["schedule"][key] == pytest.approx(k * paper[label]["schedule"][key])
        assert p[label]["schedule"]["gamma"] == paper[label]["schedule"]["gamma"]


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_rnn_angle_is_measured_with_each_optimizers_own_chain(scale):
    """The angle's local-entropy gradient is the optimizer's: its γ, L, SGLD step and β⁻¹."""
    p = _rnn_runs(scale)
    spacing = set()
    for label in ("entropy-adam-char", "entropy-sgd-lenet"):
        o, (m,) = p[label]["optimizer"], p[label]["measure"]
        assert m["name"] == "entropy_angle"
        assert (m["gamma"], m["steps"], m["beta"]) == (o["gamma"], o["L"], 1 / o["noise"])
        assert m.get("inner_lr", 0.1) == o["inner_lr"]
        spacing.add((m["every"], m.get("start", 0)))
    assert len(spacing) == 1                   # the change per step compares like with like


@pytest.mark.parametrize("choice", ["outer", "inner"])
def test_rnn_momentum_readings_change_entropy_sgds_loops_only(choice):
    base, other = _rnn_runs("paper"), _rnn_runs("paper", {"momentum": choice})
    for label, p in other.items():
        if label != "entropy-sgd-ptb":
            assert p == base[label], label
            continue
        o = p["optimizer"]
        assert (o["momentum"], o["inner_momentum"]) == ((0.5, 0.0) if choice == "outer"
                                                        else (0.0, 0.5))


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_rnn_ptb_step_reading_steps_the_ptb_runs_on_the_window_s_summed_loss(scale):
    """§3.3.4 follows Zaremba et al.'s pipeline (line 1091), whose lr 1 and clip act on the
    loss summed over the window's 35 positions: the PTB runs step on that loss
    (``window-sum``, the default reading), the reading ``per-token`` on the per-token mean,
    with the thesis' numbers unchanged. The char-LSTM's Adam and the lenet runs are the same
    under both (their run keys: their stored runs are kept)."""
    spec, per_token = load_experiment(RNN, scale), load_experiment(
        RNN, scale, readings={"ptb-step": "per-token"})
    by_label = [{r.label: r for r in s.expand(data_dir="/d")} for s in (spec, per_token)]
    for label, r in by_label[0].items():
        other = by_label[1][label]
        if label.endswith("-ptb"):
            assert r.key != other.key, label
            assert r.params.pop("sequence_loss") == "window-sum", label
            assert other.params.pop("sequence_loss") == "mean", label
            assert r.params == other.params, label
        else:
            assert "sequence_loss" not in r.params and r.key == other.key, label


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_rnn_claims_name_our_thresholds(scale):
    spec = load_experiment(RNN, scale)
    claims = {c["metric"]: c for c in spec.options["claims"]}
    assert claims["log_angle_change"]["margin"] == pytest.approx(math.log(2))
    assert spec.options["references"]["|cos| 0.2"] == {"mean_abs_cosine": 0.2}
    assert claims["test_perplexity"]["less"] == ["entropy-sgd-ptb", "sgd-ptb"]
    assert claims["test_loss"]["less"] == ["entropy-adam-char", "adam-char"]
    assert "thresholds are ours" in " ".join(spec.description.split())


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("name", ["chaudhari-entropy-sgd", "chaudhari-smoothing"])
def test_speed_claims_read_curves_evaluated_as_often_in_gradient_evaluations(name, scale):
    """Table 3.1's and 4.1's epochs count effective epochs (line 1054): every run of a network
    is evaluated every so many gradient evaluations (``eval_every_steps`` × L), the same for
    every method, so no method's time to a target error is read at a coarser resolution."""
    runs = load_experiment(name, scale).expand(data_dir="/d")
    cadence: dict[str, set[int]] = {}
    for r in runs:
        net = r.label.rsplit("-", 1)[-1] if r.label.endswith(("mnistfc", "allcnn")) else "lenet"
        cadence.setdefault(net, set()).add(
            r.params["eval_every_steps"] * r.params["optimizer"].get("L", 1))
    assert all(len(v) == 1 for v in cadence.values()), cadence
    assert cadence["lenet"] == ({40} if scale == "cpu" else {500})
    if scale == "paper":
        assert cadence["allcnn"] == {400}


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("name", ["chaudhari-entropy-sgd", "chaudhari-smoothing"])
def test_speed_target_reading_changes_the_claims_not_the_runs(name, scale):
    """Both readings of the epochs in Table 3.1 / 4.1 test the same comparisons on the same
    runs, each on its own derived time (to the baseline's error, to the run's own)."""
    def speed(readings):
        spec = load_experiment(name, scale, readings=readings)
        return [(tuple(c["less"]), c["metric"]) for c in spec.options["claims"]
                if c["metric"].startswith("epochs_to")]

    base, own = speed({"speed-target": "baseline-error"}), speed({"speed-target": "own-error"})
    assert base == speed(None) and base
    assert [p for p, _ in base] == [p for p, _ in own]
    assert {m for _, m in own} == {"epochs_to_own_error"}
    assert not any(m == "epochs_to_own_error" for _, m in base)
    keys = [r.key for r in load_experiment(name, scale).expand(data_dir="/d")]
    other = load_experiment(name, scale, readings={"speed-target": "own-error"})
    assert [r.key for r in other.expand(data_dir="/d")] == keys


def test_the_eigenvalue_mean_reading_changes_remark_6_38s_means_not_the_runs():
    """Remark 6.38's two mean claims (CIFAR above MNIST, CIFAR-100 above CIFAR-10) compare the
    same networks on (6.45)'s Tr D / d by default and on the mean of the plotted nonzero
    eigenvalues under over-nonzero; the other claims and every run key stay the same."""
    name = "chaudhari-diffusion-spectrum"

    def claims(readings):
        return [({k: c[k] for k in ("above", "greater") if k in c}, c["metric"])
                for c in load_experiment(name, "paper", readings=readings).options["claims"]]

    over_d, nonzero = claims({"eigenvalue-mean": "over-d"}), claims({"eigenvalue-mean":
                                                                        "over-nonzero"})
    assert claims(None) == over_d
    assert [p for p, _ in over_d] == [p for p, _ in nonzero]
    changed = [(a, b) for (_, a), (_, b) in zip(over_d, nonzero) if a != b]
    assert changed == [("mean_eig", "mean_nonzero_eig")] * 2
    for scale in ("smoke", "cpu", "paper"):
        keys = [r.key for r in load_experiment(name, scale).expand(data_dir="/d")]
        for choice in ("over-d", "over-nonzero"):
            spec = load_experiment(name, scale, readings={"eigenvalue-mean": choice})
            assert [r.key for r in spec.expand(data_dir="/d")] == keys, (scale, choice)


ENTROPY_ENTRIES = ("chaudhari-entropy-sgd", "chaudhari-entropy-sgd-rnn", "chaudhari-sgld",
                   "chaudhari-smoothing")


@pytest.mark.parametrize("name", ENTROPY_ENTRIES)
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_every_entropy_run_takes_the_printed_outer_step_under_its_reading(name, scale):
    """Algorithm 2's line 6 as printed, x ← x − η′γ⁻¹(x − z) (line 948, again at line 964),
    against §3.2.3's γ-scaled x ← x − η′(x − z), the only one that gives "x ← z" for η′ = 1
    (line 966): every entry running Entropy-SGD or Entropy-Adam names the choice, and its
    ``printed`` reaches each of those runs (at γ = 10³ on PTB the printed step is 1,000 times
    shorter) and no other run."""
    runs = {r.label: r for r in load_experiment(name, scale).expand(data_dir="/d")}
    printed = {r.label: r for r in load_experiment(
        name, scale, readings={"outer-step": "printed"}).expand(data_dir="/d")}
    entropy = [lab for lab, r in runs.items()
               if r.params["optimizer"]["name"] in ("entropy_sgd", "entropy_adam")]
    assert entropy, name
    for label, r in runs.items():
        o = printed[label].params["optimizer"]
        if label in entropy:
            assert r.params["optimizer"].get("normalize", True) is True, label
            assert o["normalize"] is False, label
        elif o["name"] not in ("hj",):
            assert printed[label].key == r.key, label


def test_the_hessian_entrys_negative_fraction_claim_quotes_fig_3_4s_caption():
    """The third claim, a small fraction (≤ 10%) of negative eigenvalues, is Fig. 3.4's "A very
    small fraction of directions have negative curvature" (line 1071), not the saddle of line
    753 alone, which asks for some negative eigenvalues and no bound; the entry quotes it and
    names its thresholds as its own."""
    spec = load_experiment("chaudhari-hessian-spectrum", "cpu")
    quotes = [q["quote"] for q in spec.paper.get("quotes", [])]
    assert any(q.startswith("A very small fraction of directions have negative curvature")
               for q in quotes)
    assert spec.options["negative_fraction_below"] == 0.1
    assert "our thresholds" in " ".join(spec.description.split())


def test_table_3_1s_mnistfc_epochs_beyond_section_3_3_2s_budget_are_named():
    """Table 3.1 gives Entropy-SGD 120 effective epochs on mnistfc (line 1110), more than the
    5 epochs × L = 20 = 100 of §3.3.2 (line 1052) that the paper scale runs: the entry names
    the inconsistency, since no time read inside the budget can be the table's."""
    spec = load_experiment("chaudhari-entropy-sgd", "paper")
    p = paper_runs("chaudhari-entropy-sgd")["entropy-sgd-mnistfc"]
    assert p["epochs"] * p["optimizer"]["L"] == 100 < 120
    devs = " ".join(" ".join(d.split()) for d in spec.deviations)
    assert "120 for Entropy-SGD on mnistfc exceeds the 100 effective epochs" in devs


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_rnn_angle_names_the_rnn_it_leaves_out(scale):
    """Line 1120's "changes much more rapidly for RNNs than for CNNs" covers the PTB-LSTM
    under Entropy-SGD too; the entry measures the char-LSTM's angle only, and says so."""
    spec = load_experiment(RNN, scale)
    measured = {r.label for r in spec.expand(data_dir="/d")
                if any(m["name"] == "entropy_angle" for m in r.params.get("measure", []))}
    assert measured == {"entropy-adam-char", "entropy-sgd-lenet"}
    assert any("speaks of RNNs" in d and "only the char-LSTM's angle is measured" in d
               for d in spec.deviations)


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_sgld_entry_lists_its_last_iterate_and_test_set_at_every_scale(scale):
    """§3.3.6 reports SGLD's validation errors (line 1126) and says nothing of a posterior
    average; every scale tests the last iterate on held-out test images and lists both."""
    devs = [" ".join(d.split()) for d in load_experiment("chaudhari-sgld", scale).deviations]
    assert any("last iterate" in d and "posterior average" in d for d in devs), devs
    assert any("validation error" in d and "test" in d for d in devs), devs


# the optimizers on Entropy-SGD's code path, whose ``weight_decay_on`` says where ℓ2 acts
DECAY_ON = ("entropy_sgd", "entropy_adam", "hj", "parle")


def _decayed(runs) -> set[str]:
    return {r.label for r in runs if r.params.get("optimizer", {}).get("name") in DECAY_ON
            and r.params["optimizer"].get("weight_decay", 0) > 0}


@pytest.mark.parametrize("name", ENTROPY_ENTRIES)
def test_entropy_sgd_with_weight_decay_says_where_the_decay_acts(name):
    """The thesis does not say where ℓ2 enters Entropy-SGD: ``weight_decay`` is added to the
    inner loop's gradients only by default, while the authors' PyTorch code (python/optim.py)
    adds it to the outer gradient (x − z) as well, the reading ``weight-decay=both``. A paper
    scale running Entropy-SGD (or HJ) with weight decay (allcnn on CIFAR-10) lists that choice
    and names the reading."""
    spec = load_experiment(name, "paper")
    decayed = _decayed(spec.expand(data_dir="/d"))
    said = [d for d in spec.deviations
            if "inner loop's gradients only" in " ".join(d.split())
            and "outer gradient" in d and "weight-decay=both" in d]
    assert bool(said) == bool(decayed), (decayed, said)


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("name", ENTROPY_ENTRIES)
def test_weight_decay_reading_reaches_every_decayed_entropy_sgd_run_and_no_other(name, scale):
    """``weight-decay=both`` sets ``weight_decay_on: both`` on every run of Entropy-SGD's code
    path that has weight decay, at every scale, and the optimizer it builds takes it; every
    other run keeps its key, and the default ``inner`` keeps every key. An entry with no such
    run at any scale has no such reading."""
    decayed = {s: _decayed(load_experiment(name, s).expand(data_dir="/d"))
               for s in ("smoke", "cpu", "paper")}
    spec = load_experiment(name, scale)
    if "weight-decay" not in spec.readings:
        assert not any(decayed.values()), decayed
        return
    assert any(decayed.values()) and spec.readings["weight-decay"] == "inner"
    default = spec.expand(data_dir="/d")
    inner = load_experiment(name, scale, readings={"weight-decay": "inner"}).expand(data_dir="/d")
    assert [r.key for r in inner] == [r.key for r in default]
    both = load_experiment(name, scale, readings={"weight-decay": "both"}).expand(data_dir="/d")
    assert [r.label for r in both] == [r.label for r in default]
    for a, b in zip(default, both):
        if a.label not in decayed[scale]:
            assert b.key == a.key, a.label
            continue
        assert b.key != a.key
        opt = dict(b.params["optimizer"])
        assert opt.pop("weight_decay_on") == "both"
        assert {**b.params, "optimizer": opt} == a.params
        built = build_optimizer(opt.pop("name"), [torch.nn.Parameter(torch.zeros(2))],
                                weight_decay_on="both", **opt)
        assert built.param_groups[0]["weight_decay_on"] == "both"


# entry -> departures its paper scale lists that hold at the cpu scale as well (the same code
# path or the same unstated setting), by a phrase each scale's sentence contains
SHARED_DEPARTURES = {
    "chaudhari-spin-glass": ("projected on the sphere",),        # §2.4.1's ‖∇H̃‖₂ ≤ 10⁻⁴
    "chaudhari-trivialized": ("batch size 128",),
    "chaudhari-trivialized-allcnn": ("no separate schedule",),   # Table 2.1's resampled noise
    "chaudhari-diffusion-spectrum": ("batch size", "bilinear"),  # §6.3.1 states no batch size
    "chaudhari-trajectory-fft": ("batch size 128", "bilinear"),
    "chaudhari-double-well": ("1.5 is the authors'",),
}


@pytest.mark.parametrize("name", sorted(SHARED_DEPARTURES))
def test_cpu_scale_lists_the_departures_it_shares_with_the_paper_scale(name):
    """A departure of the paper scale that the cpu scale makes too (the spin glass' stopping
    rule on the projected gradient, the resampled-noise control's schedule, an unstated batch
    size) is a cpu-scale departure as well: RESULTS.md prints the cpu scale's list alone."""
    for phrase in SHARED_DEPARTURES[name]:
        for scale in ("paper", "cpu"):
            devs = load_experiment(name, scale).deviations
            assert any(phrase in d for d in devs), (name, scale, phrase)


# entries of chs. 2-5 whose quoted errors are "validation errors" on MNIST or CIFAR-10
VALIDATION_ERROR_ENTRIES = ("chaudhari-trivialized", "chaudhari-trivialized-lenet",
                            "chaudhari-entropy-sgd", "chaudhari-sgld", "chaudhari-smoothing",
                            "chaudhari-independent-copies", "chaudhari-parle",
                            "chaudhari-parle-split")


@pytest.mark.parametrize("name", VALIDATION_ERROR_ENTRIES)
def test_paper_scale_says_the_thesis_validation_error_is_measured_on_the_test_images(name):
    """The thesis reports "validation error" (lines 696, 711, 1075, 1126, 1861, 1917, 2126,
    2196) but names no validation split; the paper scales measure the error on the test images
    and say so."""
    spec = load_experiment(name, "paper")
    quoted = [spec.paper["quote"]] + [q["quote"] for q in spec.paper.get("quotes", [])]
    assert any("validation error" in " ".join(q.split()) for q in quoted), name
    assert any("validation error" in d and "test images" in d
               for d in spec.deviations), spec.deviations


def test_copies_augment_reading_trains_the_copies_without_augmentation_and_nothing_else():
    """§5.0.1 does not say whether the six allcnn copies saw augmented data: §5.5's pipeline
    augments (line 2186, the default), the thesis' other allcnn runs on CIFAR-10 do not (lines
    730, 1059), and the copies' 8.04% error (line 1917) is near those runs' 8.42% and 7.71%."""
    default = {r.key: r for r in load_experiment("chaudhari-independent-copies", "paper")
               .expand(data_dir="/D")}
    plain = load_experiment("chaudhari-independent-copies", "paper",
                            readings={"copies-augment": "none"}).expand(data_dir="/D")
    assert {r.params["dataset"]["augment"] for r in default.values()} == {"crop-flip"}
    assert len(plain) == len(default) == 7
    for r in plain:
        assert r.key not in default and r.params["dataset"]["augment"] is None
        twin = next(d for d in default.values() if (d.label, d.seed) == (r.label, r.seed))
        assert {**r.params, "dataset": {}} == {**twin.params, "dataset": {}}
        assert {k: v for k, v in r.params["dataset"].items() if k != "augment"} == {
            k: v for k, v in twin.params["dataset"].items() if k != "augment"}


def _pspin_run(regime: str, energy: float = -1.0, **summary):
    """A stored p-spin run of ``regime`` whose six starts all converged to one minimum."""
    from sgdlab.testing import stored_run

    return stored_run(regime, params={"regime": regime},
                      summary={"nu": 1.0, "starts": 6, "converged": 6, "energy_min": energy,
                               "energy_spread": 0.0, **summary},
                      data={"embedding": [[0.0, 0.0]], "energies": [energy],
                            "basin_sizes": [6]})


def test_spin_glass_table_sets_the_lowest_energy_beside_fig_2_1s_levels(monkeypatch):
    """Fig. 2.2's caption reads the minima's H/N as non-asymptotic values of Fig. 2.1's: the
    table's note gives Lemma 2.2's −E_0 = −1.657 and −E_∞ = −2√(2/3) for p = 3."""
    from types import SimpleNamespace

    import sgdlab.report.figures.landscapes as figures
    from sgdlab.experiments.procedures.landscape_runs import pspin_analysis

    monkeypatch.setattr(figures, "pspin_figure", lambda *a, **k: None)   # the table is tested
    spec = SimpleNamespace(options={}, paper={})                       # no claims to judge
    runs = [_pspin_run(g, -1.6, distinct_minima=1, cosine_distance=0.0, angular_distance=0.0)
            for g in ("glassy", "critical", "trivial")]
    note, = pspin_analysis(spec, runs).tables[0].notes
    assert "−E_0 = −1.6570" in note and "−E_∞ = −1.6330" in note


def test_spin_glass_cosine_distance_reading_tests_the_mean_angle():
    """§2.4.1's "average cosine distance" (0.02 vs 1.16, line 678): 1 − q by default, whose mean
    over many minima cannot reach 1.16; the angle arccos q under cosine-distance=angle. The
    reading changes the claim, not the runs; the procedure records both, and the analysis
    judges the chosen one (a run stored without the angle leaves its claim inconclusive)."""
    from types import SimpleNamespace

    from sgdlab.experiments.procedures.landscape_runs import PSpinProcedure, pspin_analysis

    default = load_experiment("chaudhari-spin-glass", "cpu")
    angle = load_experiment("chaudhari-spin-glass", "cpu", readings={"cosine-distance": "angle"})
    assert [r.key for r in default.expand()] == [r.key for r in angle.expand()]
    metrics = [[c["metric"] for c in s.options["claims"]] for s in (default, angle)]
    assert metrics == [["distinct_minima", "cosine_distance", "distinct_minima"],
                       ["distinct_minima", "angular_distance", "distinct_minima"]]
    out = PSpinProcedure().run(SimpleNamespace(params={"regime": "trivial", "n": 10,
                                                       "starts": 6, "max_steps": 300,
                                                       "tol": 1e-3}, seed=0),
                               SimpleNamespace(device="cpu"))
    assert 0 <= out.summary["angular_distance"] < 0.05

    # 1 − q of 0.9 (gap 0.9 − 0.0 > 0.5) but angles 0.3 vs 0.1 (gap 0.2): the readings part
    runs = [_pspin_run("glassy", distinct_minima=5, cosine_distance=0.9, angular_distance=0.3),
            _pspin_run("critical", distinct_minima=2, cosine_distance=0.5, angular_distance=0.2),
            _pspin_run("trivial", distinct_minima=1, cosine_distance=0.0, angular_distance=0.1)]
    verdicts = [[c.agrees_with_paper for c in pspin_analysis(s, runs).conclusions]
                for s in (default, angle)]
    assert verdicts == [[True, True, True], [True, False, True]]
    for r in runs:
        del r.summary["angular_distance"]
    assert [c.agrees_with_paper for c in pspin_analysis(angle, runs).conclusions][1] is None


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_fig_2_4s_alignment_trend_is_tested_only_under_its_reading(scale):
    """§2.4.3.2 (line 732) and Fig. 2.4's caption (line 737) say the fixed field is a bias in
    a fixed direction and resampling aligns the weights in uncorrelated ones: the fixed
    field's alignment is the larger. Neither says the alignment grows over training; that
    claim is the reading alignment-trend=grows, not the entry's default."""
    def trends(spec):
        return [c for c in spec.options["claims"]
                if c.get("metric_b") and c["less" if "less" in c else "greater"][0]
                == c["less" if "less" in c else "greater"][1]]

    name = "chaudhari-trivialized-allcnn"
    default = load_experiment(name, scale)
    assert trends(default) == []
    assert [c["metric"] for c in default.options["claims"]].count("alignment_mean") == 1
    for alignment, metric in (("cosine", "alignment_last"), ("raw", "raw_alignment_last")):
        grows = load_experiment(name, scale, readings={"alignment-trend": "grows",
                                                       "alignment": alignment})
        assert [c["metric"] for c in trends(grows)] == [metric]
        assert [r.key for r in grows.expand(data_dir="/d")] == \
            [r.key for r in default.expand(data_dir="/d")]


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("target", ["baseline-error", "own-error"])
def test_lenet_speed_reading_tests_sgd_against_entropy_sgd_or_against_every_method(scale,
                                                                                   target):
    """Table 4.1's caption, "Entropy-SGD is significantly faster at training mnistfc while SGD
    is slightly faster for lenet" (line 1889): faster than Entropy-SGD, the sentence's
    contrast (default), or the fastest of the four, as the lenet row's epochs say (SGD 67,
    HJ 70, HEAT 75, Entropy-SGD 80; reading lenet-speed=fastest). Same runs either way."""
    def lenet_speed(choice):
        spec = load_experiment("chaudhari-smoothing", scale,
                               readings={"speed-target": target, "lenet-speed": choice})
        return {tuple(c["less"]) for c in spec.options["claims"]
                if c["metric"] in ("epochs_to_sgd_error", "epochs_to_own_error")
                and c["less"][0] == "sgd"}

    assert lenet_speed("against-entropy-sgd") == {("sgd", "entropy-sgd")}
    assert lenet_speed("fastest") == {("sgd", "entropy-sgd"), ("sgd", "hj"), ("sgd", "heat")}
    keys = [r.key for r in load_experiment("chaudhari-smoothing", scale).expand(data_dir="/d")]
    other = load_experiment("chaudhari-smoothing", scale, readings={"lenet-speed": "fastest"})
    assert [r.key for r in other.expand(data_dir="/d")] == keys


@pytest.mark.parametrize("name", ["chaudhari-parle", "chaudhari-parle-split"])
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_inner_momentum_reading_reaches_every_run_with_an_inner_loop(name, scale):
    """Remark 5.3 (line 2106): Nesterov momentum on the y updates of (5.8a); on the whole
    drift (Remark 5.3 read literally and the authors' Parle code, default) or on ∇f alone
    (reading inner-momentum=gradient; the authors' Entropy-SGD code), for every run whose
    inner loop has momentum (Parle, Entropy-SGD), and only for those."""
    from sgdlab.train.replicas import ParleConfig

    def configs(**readings):
        spec = load_experiment(name, scale, readings=readings)
        return {r.label: ParleConfig.from_dict(r.params["parle"])
                for r in spec.expand(data_dir="/d")}

    default, literal = configs(), configs(**{"inner-momentum": "whole-step"})
    gradient = configs(**{"inner-momentum": "gradient"})
    assert literal == default
    assert {c.inner_momentum_on for c in gradient.values()} == {"gradient"}
    for label, c in default.items():
        assert c.inner_momentum_on == ("step" if c.momentum > 0 else "gradient")
    assert any(c.inner_momentum_on == "step" for c in default.values())


@pytest.mark.parametrize("name", ["chaudhari-parle", "chaudhari-parle-split"])
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_inner_momentum_buffer_reading_reaches_every_run_with_an_inner_loop(name, scale):
    """The text re-initialises y every L steps (line 2067) and says nothing of its momentum:
    zeroed every round (the authors' Entropy-SGD code, default: it adds nothing to the runs'
    params, so their keys stay those of before the reading) or carried across rounds (reading
    inner-momentum-buffer=kept, the authors' parle_mpi.py), for every run whose inner loop has
    momentum, and only those."""
    from sgdlab.train.replicas import ParleConfig

    def runs(**readings):
        return load_experiment(name, scale, readings=readings).expand(data_dir="/d")

    default, kept = runs(), runs(**{"inner-momentum-buffer": "kept"})
    assert [r.key for r in runs(**{"inner-momentum-buffer": "reset"})] == [
        r.key for r in default]
    for r, k in zip(default, kept):
        assert (r.label, r.seed) == (k.label, k.seed)
        assert "inner_momentum_buffer" not in r.params["parle"]
        cfg, other = (ParleConfig.from_dict(x.params["parle"]) for x in (r, k))
        assert cfg.inner_momentum_buffer == "reset"
        assert other.inner_momentum_buffer == ("kept" if cfg.momentum > 0 else "reset")
        assert (k.key == r.key) == (cfg.momentum == 0)
    assert any(k.params["parle"].get("inner_momentum_buffer") == "kept" for k in kept)


@pytest.mark.parametrize("name", ["chaudhari-parle", "chaudhari-parle-split"])
def test_cpu_smallfc_is_named_by_its_parameter_count_and_the_texts_other_width(name):
    """§3.3.1 (line 1033) gives smallfc "50,890 parameters" and "one layer of 32 hidden units",
    which disagree (784-64-10 has 50,890, 784-32-10 25,450): the cpu scale runs the count's
    network, small-mnistfc, and says which of the two it follows."""
    from sgdlab.models import build_model

    spec = load_experiment(name, "cpu")
    [model] = {r.params["model"]["name"] for r in spec.expand()}
    net = build_model(name=model, input_shape=(1, 28, 28), num_outputs=10)
    assert sum(p.numel() for p in net.parameters()) == 50_890
    assert any("smallfc" in d and "50,890" in d and "32 hidden units" in d
               for d in spec.deviations), spec.deviations


@pytest.mark.parametrize("name", ["chaudhari-parle", "chaudhari-parle-split"])
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_master_buffers_reading_reaches_every_run_and_its_default_keeps_the_run_keys(name,
                                                                                     scale):
    """The master's batch-norm statistics at each evaluation (the thesis is silent): the
    replicas' mean by default, which sets no parameter (every run keeps its key), recomputed
    at x̄ (the authors' code) for every run by the reading."""
    from sgdlab.train.replicas import ParleConfig

    default = load_experiment(name, scale).expand(data_dir="/d")
    recompute = load_experiment(name, scale, readings={"master-buffers": "recompute"}
                                ).expand(data_dir="/d")
    assert all("master_buffers" not in r.params["parle"] for r in default)
    assert {ParleConfig.from_dict(r.params["parle"]).master_buffers for r in default} == {
        "average"}
    assert {ParleConfig.from_dict(r.params["parle"]).master_buffers for r in recompute} == {
        "recompute"}
    assert len(default) == len(recompute)
    assert not {r.key for r in default} & {r.key for r in recompute}


# the training examples of chaudhari-parle-split's runs at each scale (CIFAR-10's 50,000)
PARLE_SPLIT_TRAIN = {"smoke": 256, "cpu": 4000, "paper": 50000}


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_eval_spacing_reading_evaluates_the_l_1_runs_every_epoch_and_no_parle_run(scale):
    """When §5.5's errors were recorded is not stated: by default (no parameter set, every
    run keeps its key) Parle's master once per Parle epoch, the L = 1 runs every 20 (paper)
    or 25 (cpu) epochs; per-epoch evaluates SGD and Elastic-SGD every epoch of the whole
    set's B = ⌈N/128⌉ mini-batches (the epoch of their lr milestones), Parle's runs as before:
    at cpu and paper scale the two kinds then share their spacing, B rounds."""
    from sgdlab.experiments.procedures.chaudhari import eval_rounds
    from sgdlab.train.replicas import ParleConfig

    spec = load_experiment("chaudhari-parle-split", scale)
    other = load_experiment("chaudhari-parle-split", scale,
                            readings={"eval-spacing": "per-epoch"})
    assert spec.readings["eval-spacing"] == "coarse"
    runs, per_epoch = spec.expand(data_dir="/d"), other.expand(data_dir="/d")
    assert [(r.label, r.seed) for r in runs] == [(r.label, r.seed) for r in per_epoch]
    n = PARLE_SPLIT_TRAIN[scale]
    b = -(-n // 128)
    for r, o in zip(runs, per_epoch):
        assert "eval_every_epochs" not in r.params, r.label
        single = ParleConfig.from_dict(dict(r.params["parle"])).L == 1
        assert single == r.label.startswith(("sgd", "elastic")), r.label
        assert (o.key != r.key) == single, r.label
        if single:
            assert eval_rounds(o.params, n) == b, r.label
            assert o.params == {**r.params, "eval_every": None, "eval_every_epochs": 1}
        else:
            assert o.params == r.params, r.label
            if scale != "smoke":
                assert r.params["eval_every"] == b, r.label
        if single and scale != "smoke":     # every 20 (paper) or 25 (cpu) epochs before
            assert r.params["eval_every"] == {"cpu": 25, "paper": 20}[scale] * b, r.label


@pytest.mark.parametrize("name", ["chaudhari-entropy-sgd", "chaudhari-smoothing",
                                  "chaudhari-sgld"])
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_eval_bn_recompute_evaluates_every_run_with_batch_norm_statistics_at_x(name, scale):
    """Algorithm 2 and §4.6.1 are silent on batch norm; the authors' code recomputes its
    statistics at x before each validation (dry_feed()): eval-bn=recompute sets eval_bn on
    every run, the default leaves the runs and their keys as they were (no eval_bn key)."""
    spec = load_experiment(name, scale)
    other = load_experiment(name, scale, readings={"eval-bn": "recompute"})
    assert spec.readings["eval-bn"] == "running"
    runs, recomputed = spec.expand(data_dir="/d"), other.expand(data_dir="/d")
    assert [r.label for r in runs] == [r.label for r in recomputed]
    for r, o in zip(runs, recomputed):
        assert "eval_bn" not in r.params and o.key != r.key, r.label
        assert o.params.pop("eval_bn") == "recompute" and o.params == r.params, r.label
    assert any("dry_feed" in d for d in other.deviations)
    assert not any("dry_feed" in d for d in spec.deviations)


# each group's threshold and fraction of |λ| near zero, with where the thesis states them:
# §3.3.1 (i) (line 750) and Fig. 3.4's caption (lines 1063-1069)
NEAR_ZERO = {"small-mnistfc": ([1e-2, 0.90], 1063, r"$|\lambda| \leq 10^{-2}$", "90%"),
             "small-lenet-hessian": ([1e-4, 0.94], 750, "10^{-4}", r"$\approx 94\%$"),
             "char-lstm": ([1e-5, 0.95], 1065, "10^{-5}", "95%"),
             "allcnn": ([1e-5, 0.95], 1069, r"$|\lambda| \leq 10^{-5}$", r"$\approx 95\%$")}


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_hessian_spectrum_near_zero_claims_are_the_thesis_numbers(scale):
    assert load_experiment("chaudhari-hessian-spectrum", scale).options["near_zero"] == {
        g: numbers for g, (numbers, *_) in NEAR_ZERO.items()}


def test_the_thesis_states_the_near_zero_numbers_where_the_catalogue_says(paper_text):
    for _, line, threshold, fraction in NEAR_ZERO.values():
        assert threshold in paper_text[line - 1] and fraction in paper_text[line - 1]


def test_the_negative_reading_changes_the_analysis_bar_not_the_runs():
    """Fig. 3.4's "very small fraction of directions have negative curvature" (line 1071) names
    no bar: reading ``negative`` picks the analysis' ``negative_bar`` (float32 round-off by
    default, as docs/RESULTS.md measured), every run key stays the same, and each choice
    quotes the line it reads."""
    from sgdlab.experiments.procedures.chaudhari import NEGATIVE_BARS

    name = "chaudhari-hessian-spectrum"
    table = load_experiment(name, "cpu").raw["readings"]["negative"]
    assert (table["default"], tuple(table["choices"])) == ("float32-round-off", NEGATIVE_BARS)
    for choice, c in table["choices"].items():
        assert "'A very small fraction of directions have negative curvature'" in \
            c["description"] and "line 1071" in c["description"], choice
    for scale in ("smoke", "cpu", "paper"):
        default = load_experiment(name, scale)
        assert "negative_bar" not in default.options
        keys = [r.key for r in default.expand(data_dir="/d")]
        for choice in NEGATIVE_BARS[1:]:
            spec = load_experiment(name, scale, readings={"negative": choice})
            assert spec.options["negative_bar"] == choice
            assert [r.key for r in spec.expand(data_dir="/d")] == keys, (scale, choice)


# --- chapters 2 and 6 at paper scale: the constants the thesis states -------------------------
def test_spin_glass_paper_scale_is_section_2_4_1s():
    """§2.4.1 (lines 648-665): the 3-spin glass with N = 100, h ~ N(0, ν²) with ν = 1/N,
    √3 (1 − 1/N)^½ and 3, gradient descent with η = 0.1 until ‖∇H̃‖ ≤ 10⁻⁴, 20,000 runs."""
    from sgdlab.landscapes.pspin import regime_field

    runs = paper_runs("chaudhari-spin-glass")
    assert sorted(runs) == ["critical", "glassy", "trivial"]
    for p in runs.values():
        assert (p["n"], p["lr"], p["tol"], p["starts"]) == (100, 0.1, 1e-4, 20000)
    fields = {label: regime_field(p["regime"], p["n"]) for label, p in runs.items()}
    assert fields == pytest.approx({"glassy": 1 / 100, "critical": math.sqrt(3 * 0.99),
                                    "trivial": 3.0}, rel=1e-15)


def test_double_well_runs_example_6_43_at_unit_temperature():
    """Example 6.43 (lines 2982-2999): dX = −∇f dt + √2 dB (β = 1), j = λ e^Φ J_ss; Fig. 6.4's
    λ = 0 (j = 0) and 0.5, and 1.5 for 'a large ‖j(x)‖' (a listed choice)."""
    from sgdlab.landscapes.double_well import DoubleWell

    runs = paper_runs("chaudhari-double-well")
    assert sorted(p["lam"] for p in runs.values()) == [0.0, 0.5, 1.5]
    dw = DoubleWell(0.5)        # as the procedure builds it: no β of its own
    x = torch.tensor([0.3, -0.7], dtype=torch.float64)
    phi = (0.3 ** 2 - 1) ** 2 / 4 + 0.7 ** 2 / 2
    j = 0.5 * math.exp(phi) * math.exp(-(0.3 ** 2 + 0.7 ** 2) ** 2 / 4) * torch.tensor(
        [0.7, 0.3], dtype=torch.float64)
    assert dw.beta == 1.0
    assert torch.allclose(dw.rotational_force(x), j, rtol=1e-14, atol=0)
    # the simulated SDE: drift −∇f = −∇Φ + j, noise √2 dB
    sde = dw.sde()
    grad_phi = torch.tensor([0.3 * (0.3 ** 2 - 1), -0.7], dtype=torch.float64)
    assert torch.allclose(sde.drift(x), -grad_phi + j, rtol=1e-14, atol=1e-15)
    assert sde.scalar_noise == pytest.approx(math.sqrt(2), rel=1e-15)


def test_trajectory_fft_paper_scale_is_section_6_3_3s():
    """§6.3.1 (ii) and §6.3.3 (lines 2911, 2914, 2958): tiny-fc (small-fc with 16 hidden units,
    5 classes: the digits 0-4 of MNIST, the authors' code's five) trained with Nesterov
    momentum 0.9 for 10⁵ epochs, a snapshot of every weight after each epoch; the full
    gradient once an epoch."""
    from sgdlab.train.loop import steps_per_epoch

    (p,) = paper_runs("chaudhari-trajectory-fft").values()
    assert p["model"]["name"] == "tiny-fc" and p["dataset"]["name"] == "mnist"
    assert p["dataset"]["classes"] == [0, 1, 2, 3, 4]
    assert (p["optimizer"]["momentum"], p["optimizer"]["nesterov"]) == (0.9, True)
    assert p["epochs"] == 100_000
    (traj,) = [m for m in p["measure"] if m["name"] == "trajectory"]
    assert (traj["every_epochs"], traj["every_steps"], traj["num_coords"]) == (1, None, None)
    (dyn,) = [m for m in p["measure"] if m["name"] == "dynamics"]
    # MNIST's training digits 0-4: 5,923 + 6,742 + 5,958 + 6,131 + 5,842
    assert dyn["full_grad_every"] == steps_per_epoch(30_596, p["batch_size"])


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_trajectory_fft_names_its_five_classes_a_choice_of_the_authors_code(scale):
    """§6.3.1 (ii) (line 2911) gives tiny-fc "5 output classes (30,000 input images)" without
    saying which five; the digits 0-4 are the authors' code's (grad-info loader.halfmnist keeps
    the labels below --nc 5), so each scale that runs them lists them as a departure."""
    spec = load_experiment("chaudhari-trajectory-fft", scale)
    assert all(r.params["dataset"]["classes"] == [0, 1, 2, 3, 4]
               for r in spec.expand(data_dir="/d"))
    assert any("5 output classes" in d and "line 2911" in d and "authors' code" in d
               for d in spec.deviations), spec.deviations


def test_diffusion_spectrum_paper_scale_is_section_6_3_1s():
    """§6.3.1-6.3.2 (lines 2906-2926): small-lenet and small-fc on MNIST, small-allcnn on
    CIFAR-10 and CIFAR-100 (GCN + ZCA, no augmentation), Nesterov momentum 0.9; D(x) of (6.4)
    over the training set at 20%, 40% and 100% of one training."""
    runs = paper_runs("chaudhari-diffusion-spectrum")
    for p in runs.values():
        assert (p["optimizer"]["momentum"], p["optimizer"]["nesterov"]) == (0.9, True)
        assert p["final"] == [{"kind": "diffusion_spectrum"}]     # no `samples`: all of them
        cifar = p["dataset"]["name"].startswith("cifar")
        assert p["dataset"].get("normalize") == ("gcn-zca" if cifar else None)
        assert not p["dataset"].get("augment")
    assert sorted(_instants_of_one_training(runs)) == [
        "small-allcnn-cifar10", "small-allcnn-cifar100", "small-fc", "small-lenet"]


def _instants_of_one_training(runs: dict[str, dict]) -> dict[str, dict[int, dict]]:
    """``{network: {20 | 40 | 100: params}}`` of the diffusion-spectrum runs ``{label: params}``,
    each network's @20 and @40 runs checked to be its @100 run stopped at that share of its
    epochs."""
    nets = {}
    for label, p in runs.items():
        net, pct = label.split("@")
        nets.setdefault(net, {})[int(pct)] = p
    for net, inst in nets.items():
        assert sorted(inst) == [20, 40, 100], net
        end = inst[100]
        for pct, p in inst.items():
            # the same run stopped early: only the epochs differ, in the stated proportion
            assert {k: v for k, v in p.items() if k != "epochs"} == {
                k: v for k, v in end.items() if k != "epochs"}, (net, pct)
            assert p["epochs"] * 100 == pct * end["epochs"], (net, pct)
    return nets


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_trajectory_full_gradient_bn_reading_changes_the_dynamics_instrument_only(scale):
    """Fig. 6.3c's full gradient (line 2969) states no batch-norm mode: eval mode by default,
    the reading `full-grad-bn=train` takes each batch of 128 with its own statistics (the
    authors' code), in runs of their own; the default runs keep their keys."""
    name = "chaudhari-trajectory-fft"
    (default,) = load_experiment(name, scale).expand(data_dir="/d")
    (train_bn,) = load_experiment(name, scale, readings={"full-grad-bn": "train"}).expand(
        data_dir="/d")
    (dyn,) = [m for m in default.params["measure"] if m["name"] == "dynamics"]
    assert "full_grad_bn_mode" not in dyn and "eval_batch_size" not in dyn
    changed = {**dyn, "full_grad_bn_mode": "train", "eval_batch_size": 128}
    assert train_bn.params == {**default.params, "measure": [
        changed if m["name"] == "dynamics" else m for m in default.params["measure"]]}
    assert train_bn.key != default.key


def test_diffusion_spectrum_instants_are_20_40_and_100_percent_of_one_training():
    """Remark 6.37 (line 2926): "the eigenspectra of the diffusion matrix [...] at three
    different instants, 20%, 40% and 100% training completion": at the cpu scale, as at the
    paper's (test_diffusion_spectrum_paper_scale_is_section_6_3_1s), each network's @20 and
    @40 runs are its @100 run stopped at that share of its epochs."""
    runs = load_experiment("chaudhari-diffusion-spectrum", "cpu").expand(data_dir="/d")
    assert _instants_of_one_training({r.label: r.params for r in runs})


# the thesis' wide residual networks and their dropout: §5.4.3 (line 2130) "We use the
# WRN-28-10 network ... We use a dropout of probability 0.3"; §5.4.4 (lines 2161-2165) "We use
# the WRN-16-4 network ... The dropout probability is set to 0.4" (wide-resnet's own default is
# no dropout, so an entry must state it)
WRN_DROPOUT = {(28, 10): 0.3, (16, 4): 0.4}


def _wrn_without_the_thesis_dropout(params) -> list[dict]:
    """The ``wide-resnet`` model sections in a run's ``params`` (at any depth: replica configs
    nest them) that build WRN-28-10 or WRN-16-4 with other than the thesis' dropout."""
    from sgdlab.models.registry import model_key

    if isinstance(params, (list, tuple)):
        return [m for v in params for m in _wrn_without_the_thesis_dropout(v)]
    if not isinstance(params, dict):
        return []
    found = [m for v in params.values() for m in _wrn_without_the_thesis_dropout(v)]
    if isinstance(params.get("name"), str) and model_key(params["name"]) == "wide-resnet":
        shape = (params.get("depth", 16), params.get("widen", 4))     # the builder's defaults
        if shape in WRN_DROPOUT and params.get("dropout", 0.0) != WRN_DROPOUT[shape]:
            found.append(params)
    return found


def test_every_entry_training_the_thesis_wrns_uses_the_thesis_dropout():
    # the entries naming the model are expanded at every scale (none does at present: Table
    # 5.1's WRN rows are not run); the rest are passed over unexpanded, which keeps this fast
    from sgdlab.experiments.spec import SCALES, catalogue_files

    wrong = {}
    for name, path in sorted(catalogue_files().items()):
        if not re.search(r"wide[-_]resnet", path.read_text(), re.IGNORECASE):
            continue
        for scale in SCALES:
            for run in load_experiment(name, scale).expand(data_dir="/d"):
                if bad := _wrn_without_the_thesis_dropout(run.params):
                    wrong[f"{name} {scale} {run.label}"] = bad
    assert not wrong, f"thesis WRNs without §5.4.3's 0.3 / §5.4.4's 0.4 dropout: {wrong}"
    # the check finds such a network, however spelt and nested, and passes the stated ones
    bare = {"name": "Wide_ResNet"}
    assert _wrn_without_the_thesis_dropout({"replica": {"model": bare}}) == [bare]
    assert _wrn_without_the_thesis_dropout(
        [{"name": "wide-resnet", "dropout": 0.4},
         {"name": "wide-resnet", "depth": 28, "widen": 10, "dropout": 0.3},
         {"name": "wide-resnet", "depth": 10, "widen": 1}]) == []


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_trivialized_lenet_block_padding_reading_pads_both_runs_and_the_default_none(scale):
    """§2.4.3's block32 is "a convolutional layer with a 5×5 kernel" (line 702), its padding
    not stated: unpadded by default (the authors' LeNets), padded by 2 under the reading
    block-padding=same, for Adam and Trivialized-SGD alike (they share the network)."""
    from sgdlab.models import build_model

    runs = load_experiment("chaudhari-trivialized-lenet", scale).expand(data_dir="/d")
    assert all("padding" not in r.params["model"] for r in runs)
    same = load_experiment("chaudhari-trivialized-lenet", scale,
                           readings={"block-padding": "same"}).expand(data_dir="/d")
    assert {r.label for r in same} == {"adam", "trivialized"}
    for r in same:
        net = build_model(r.params["model"]["name"], (1, 28, 28), 10,
                          **{k: v for k, v in r.params["model"].items() if k != "name"})
        assert net.features(torch.zeros(1, 1, 28, 28)).shape == (1, 64 * 3 * 3), r.label


def _optimizer_option_set_on_exactly(name, scale, readings, option, takes):
    """The default sets ``option = (key, value)`` in no run's optimizer; ``readings`` sets it
    in the runs whose optimizer ``takes`` (some), and in no other."""
    key, value = option
    default = load_experiment(name, scale).expand(data_dir="/d")
    assert all(key not in r.params.get("optimizer", {}) for r in default)
    runs = load_experiment(name, scale, readings=readings).expand(data_dir="/d")
    chosen = {r.label for r in runs if takes(r.params["optimizer"])}
    assert chosen
    assert {r.label for r in runs if r.params["optimizer"].get(key) == value} == chosen


@pytest.mark.parametrize("name", ["chaudhari-entropy-sgd", "chaudhari-entropy-sgd-rnn",
                                  "chaudhari-sgld"])
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_entropy_sgd_inner_momentum_reading_reaches_every_inner_momentum_run(name, scale):
    """§3.2.2 puts "Nesterov's momentum [...] for outer and inner loops" (line 950) on
    Algorithm 2, whose inner step is dy = ∇f(y) − γ⁻¹(x − y) (line 944): the default
    accelerates ∇f alone (the authors' Entropy-SGD code), inner-momentum=whole-step the whole
    dy, in every Entropy-SGD run with an inner momentum, and in no other run."""
    _optimizer_option_set_on_exactly(
        name, scale, {"inner-momentum": "whole-step"}, ("inner_momentum_on", "step"),
        lambda opt: opt["name"] == "entropy_sgd" and opt.get("inner_momentum", 0) > 0)


@pytest.mark.parametrize("name", ["chaudhari-trivialized", "chaudhari-trivialized-lenet",
                                  "chaudhari-trivialized-allcnn"])
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_field_on_reading_reaches_every_field_run_and_the_default_covers_all(name, scale):
    """Algorithm 1 perturbs the "weights of a deep network w" (line 500): by default every
    trainable parameter, under field-on=weights the weight tensors only, in every run with a
    field (Trivialized-SGD and the resampled control) and no other."""
    _optimizer_option_set_on_exactly(
        name, scale, {"field-on": "weights"}, ("field_on", "weights"),
        lambda opt: opt["name"] in ("trivialized", "annealed-noise"))


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_field_on_weights_takes_fig_2_3b_minima_over_the_weights_in_both_runs(scale):
    """Under field-on=weights the biases get no field: a minimum of |∇f + s_i h| over every
    parameter would be a dead unit's bias's |∇f| = 0. The minima are then taken over the
    weight tensors (min_abs_grad's over: weights) in the Adam run as in the field's, and every
    Fig. 2.3b claim, over all the weights, the non-zero ones or the first layer's, of the
    step gradient and of ∇f, is made as under the default field-on=all."""
    def entry(readings):
        return load_experiment("chaudhari-trivialized", scale, readings=readings)

    def metrics(readings):
        return {c["metric"] for c in entry(readings).options["claims"]
                if c["metric"].startswith("min_grad_")}

    def overs(readings):
        return {(r.label, m.get("over")) for r in entry(readings).expand(data_dir="/d")
                for m in r.params["measure"] if m["name"] == "min_abs_grad"}

    assert overs({}) == {("adam", None), ("trivialized", None)}
    assert overs({"field-on": "weights"}) == {("adam", "weights"), ("trivialized", "weights")}
    for gradient in ("step", "loss"):
        for during, tag in (("per-step", "mean"), ("running", "running")):
            for over, end in (("all-weights", "all"), ("nonzero", "nonzero"),
                              ("first-layer", "first")):
                chosen = {"min-gradient": gradient, "min-during": during, "min-over": over}
                want = {f"min_grad_{gradient}_{tag}_{end}"}
                assert metrics(chosen) == want
                assert metrics({**chosen, "field-on": "weights"}) == want


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_smoothing_inner_momentum_reading_reaches_every_entropy_sgd_and_hj_run(scale):
    """§4.6.1 adds momentum to the inner steps (4.40) as "standard" (line 1831) without saying
    what it carries: by default ∇f alone (the authors' Entropy-SGD code), under
    inner-momentum=whole-step the whole drift ∇f + γ⁻¹(y − x), in every Entropy-SGD and HJ
    run with an inner momentum and in no other (SGD and HEAT have no inner loop); HJ's
    optimizer takes it."""
    _optimizer_option_set_on_exactly(
        "chaudhari-smoothing", scale, {"inner-momentum": "whole-step"},
        ("inner_momentum_on", "step"),
        lambda opt: opt["name"] in ("entropy_sgd", "hj") and opt.get("inner_momentum", 0) > 0)
    runs = load_experiment("chaudhari-smoothing", scale,
                           readings={"inner-momentum": "whole-step"}).expand(data_dir="/d")
    hj = [r.params["optimizer"] for r in runs if r.params["optimizer"]["name"] == "hj"]
    assert hj
    for opt in hj:
        built = build_optimizer("hj", [torch.nn.Parameter(torch.zeros(2))],
                                **{k: v for k, v in opt.items() if k != "name"})
        assert built.param_groups[0]["inner_momentum_on"] == "step"
