"""The Jastrzebski et al. (2018) entries at paper scale carry the constants the text states.

Each constant below names the line of ``jastrzebski-2018-lr-batch-ratio.txt`` it comes from;
the first test checks that those lines say so (where the texts are at hand). What the text
leaves open (lengths of training for Figs. 1, 2, 4, 5, Fig. 2's η₀ and large S, which β and
training-set sizes Fig. 5 uses, Fig. 4's different ratio) the entries list as deviations.
"""
from __future__ import annotations

import math

import pytest
import torch.nn as nn

from sgdlab.experiments.spec import load_experiment
from sgdlab.models import build_model

TEXT = "jastrzebski-2018-lr-batch-ratio.txt"

# line -> words of that line which state a constant pinned below
LINES = {
    171: "SGD training of VGG11 on CIFAR10",                                          # Fig. 1
    178: "oscillating between 128 and 640 while using a fixed learning rate of $\\eta = 0.005$",
    # 178 also: "oscillating between 0.001 and 0.005 with a fixed batch size of $S = 128$"
    184: "\\frac{\\eta}{S} = \\frac{0.005}{640}",
    182: "Each experiment was repeated for 5 different random initializations.",     # Fig. 1
    186: "trained with SGD and batch normalization on CIFAR10",                       # Fig. 2
    191: "4 layer ReLU MLP on FashionMNIST",                                          # Fig. 3
    195: "η dropping by a factor of 10 on epochs 60, 100, 140, 180 for ResNet56 and by a "
         "factor of 2 every 25 epochs for VGG11",                                    # footnote 7
    197: "Each experiment was run for 200 epochs",                                    # footnote 8
    199: "with $\\eta \\in [5e - 3, 1e - 1]$ and $S \\in [25, 1000]$",                 # Fig. 3
    204: "(a), (b): Resnet56 with different ratio",                                   # Fig. 4
    210: "VGG-11 models trained on CIFAR10 with the same ratio $\\frac{\\eta=0.1 \\times "
         "\\beta}{S=50 \\times \\beta}$ but different β",                              # Fig. 4c-d
    215: "fixed ratio $\\frac{\\beta \\times (\\eta=0.1)}{\\beta \\times (S=50)}$",      # Fig. 5
    219: "This is done for a smaller training set size in Fig. 5 (a) than in (b).",
    225: "Experiments are repeated 5 times with different random seeds.",            # footnote 10
    229: "we consider SGD with a fixed learning rate",                               # §4
}

# Fig. 1 (lines 178, 184) and Fig. 2 (line 186, footnote 7 on line 195): label ->
# (model, η, S, schedule). Fig. 2's η₀ = 0.01 and S = 200 are not stated (listed); what the
# text fixes is S = 50 for the small batch, η rescaled by S (linear) or √S, and the schedules.
VGG_STEPS = {"name": "step", "every": 25, "gamma": 0.5}
RESNET_STEPS = {"name": "step", "milestones": [60, 100, 140, 180], "gamma": 0.1}
EQUAL_RATIO = {
    "clr": ("vgg-11", 0.001, 128, "triangular"),
    "const-lr0.001-B128": ("vgg-11", 0.001, 128, None),
    "const-lr0.005-B640": ("vgg-11", 0.005, 640, None),
    "small-lr0.01-B50": ("vgg-11", 0.01, 50, VGG_STEPS),
    "linear-lr0.04-B200": ("vgg-11", 0.04, 200, VGG_STEPS),
    "sqrt-lr0.02-B200": ("vgg-11", 0.02, 200, VGG_STEPS),
    "resnet-small-lr0.01-B50": ("resnet-56", 0.01, 50, RESNET_STEPS),
    "resnet-linear-lr0.04-B200": ("resnet-56", 0.04, 200, RESNET_STEPS),
    "resnet-sqrt-lr0.02-B200": ("resnet-56", 0.02, 200, RESNET_STEPS),
}


def _runs(name: str) -> list:
    return load_experiment(name, "paper").expand(data_dir="/d")


def _plain_sgd(p: dict) -> bool:
    # eq. (1): SGD without momentum or weight decay
    opt = p["optimizer"]
    return opt["name"] == "sgd" and not opt.get("momentum") and not opt.get("weight_decay")


def test_the_lines_cited_state_the_constants(paper_lines_of):
    lines = paper_lines_of(TEXT)
    for number, words in LINES.items():
        assert words in lines[number - 1], number
    assert "oscillating between 0.001 and 0.005 with a fixed batch size of $S = 128$" in \
        lines[177]
    assert "\\frac{\\eta}{S} = \\frac{0.001}{128}" in lines[183]
    assert "a small batch size of 50" in lines[185]
    assert "keeping the ratio η/\\sqrt{S} constant" in lines[185]
    assert "rescaling η by the same amount as S" in lines[185]
    assert "batch-normalized ReLU MLPs on Fashion-MNIST" in lines[192]


def test_equal_ratio_runs_figs_1_and_2_as_stated():
    runs = _runs("jastrzebski-equal-ratio")
    by_label = {r.label: r.params for r in runs}
    assert set(by_label) == set(EQUAL_RATIO) | {"cbs"}
    for label, (model, lr, s, schedule) in EQUAL_RATIO.items():
        p = by_label[label]
        assert (p["dataset"]["name"], p["model"]["name"]) == ("cifar10", model), label
        assert (p["optimizer"]["lr"], p["batch_size"]) == (lr, s), label
        assert _plain_sgd(p), label
        if isinstance(schedule, dict):
            assert p["schedule"] == schedule, label
        else:
            assert (p.get("schedule") or {}).get("name") == schedule, label
    # line 178: the cyclic learning rate between 0.001 and 0.005 at S = 128; the cyclic batch
    # size between 128 and 640 at η = 0.005
    assert by_label["clr"]["schedule"]["max_factor"] * 0.001 == pytest.approx(0.005)
    cbs = by_label["cbs"]
    assert cbs["optimizer"]["lr"] == 0.005 and _plain_sgd(cbs)
    assert (cbs["batch_size"]["kind"], cbs["batch_size"]["low"], cbs["batch_size"]["high"]) == \
        ("cyclic", 128, 640)
    assert (cbs["dataset"]["name"], cbs["model"]["name"]) == ("cifar10", "vgg-11")
    # line 186: linear rescaling keeps η/S, the square-root one η/√S, of the small batch's
    for net in ("", "resnet-"):
        small = by_label[f"{net}small-lr0.01-B50"]
        for kind, keep in (("linear", lambda p: p["optimizer"]["lr"] / p["batch_size"]),
                           ("sqrt", lambda p: p["optimizer"]["lr"] / math.sqrt(p["batch_size"]))):
            big = next(v for k, v in by_label.items() if k.startswith(f"{net}{kind}-"))
            assert big["batch_size"] > small["batch_size"]
            assert keep(big) == pytest.approx(keep(small)), (net, kind)
    # line 186: both networks "trained with SGD and batch normalization"
    for name in {p["model"]["name"] for p in by_label.values()}:
        net = build_model(name, (3, 32, 32), 10)
        assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules()), name
    # footnote 6 (line 182): 5 random initialisations
    assert {r.seed for r in runs} == set(range(5))


def test_ratio_grid_runs_fig_3_as_stated():
    runs = _runs("jastrzebski-ratio-grid")
    assert runs
    for r in runs:
        p = r.params
        # line 193: batch-normalised ReLU MLPs on Fashion-MNIST; caption, line 191: 4 layers
        assert (p["dataset"]["name"], p["model"]["name"]) == ("fashion_mnist", "jastrzebski-mlp")
        assert p["epochs"] == 200, r.label                                  # footnote 8
        assert _plain_sgd(p), r.label
        # line 199: η in [5e-3, 1e-1], S in [25, 1000]
        assert 5e-3 <= p["optimizer"]["lr"] <= 0.1 and 25 <= p["batch_size"] <= 1000, r.label
    model = runs[0].params["model"]
    net = build_model("jastrzebski-mlp", (1, 28, 28), 10,
                      **{k: v for k, v in model.items() if k != "name"})
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 4 and any(isinstance(m, nn.BatchNorm1d) for m in net.modules())
    assert any(isinstance(m, nn.ReLU) for m in net.modules())
    # a grid: every η with every S, and equal ratios recur along it (Fig. 3c's claim)
    grid = {(r.params["optimizer"]["lr"], r.params["batch_size"]) for r in runs}
    lrs, sizes = {g[0] for g in grid}, {g[1] for g in grid}
    assert grid == {(a, b) for a in lrs for b in sizes} and len(lrs) > 1 and len(sizes) > 1
    ratios = [a / b for a, b in grid]
    assert len({round(x, 12) for x in ratios}) < len(ratios)


def test_interpolation_runs_fig_4_as_stated():
    runs = {r.label: r.params for r in _runs("jastrzebski-interpolation")}
    vgg = [p for p in runs.values() if p["model"]["name"] == "vgg-11"]
    resnet = [p for p in runs.values() if p["model"]["name"] == "resnet-56"]
    assert vgg and resnet
    for p in runs.values():
        assert p["dataset"]["name"] == "cifar10" and _plain_sgd(p)
    # line 210: VGG-11 at η = 0.1β, S = 50β for different β, one of them β = 1
    betas = {p["batch_size"] / 50 for p in vgg}
    assert len(betas) > 1 and 1.0 in betas
    assert all(p["optimizer"]["lr"] == pytest.approx(0.1 * p["batch_size"] / 50) for p in vgg)
    # line 204: ResNet-56 with different η/S
    assert len({round(p["optimizer"]["lr"] / p["batch_size"], 12) for p in resnet}) > 1


def test_breakdown_runs_fig_5_as_stated():
    runs = _runs("jastrzebski-breakdown")
    betas = set()
    for r in runs:
        p = r.params
        # line 215: η = 0.1β, S = 50β
        beta = p["batch_size"] / 50
        assert p["optimizer"]["lr"] == pytest.approx(0.1 * beta), r.label
        assert _plain_sgd(p), r.label
        betas.add(beta)
        assert r.label.startswith(f"beta{int(beta)}"), r.label
    assert 1.0 in betas and len(betas) > 2
    # line 219: two training-set sizes, (a) smaller than (b)
    assert len({r.params["dataset"]["n_train"] for r in runs}) == 2
    # footnote 10 (line 225): 5 seeds
    assert {r.seed for r in runs} == set(range(5))


def _cpu_deviations(name: str) -> str:
    return " ".join(load_experiment(name, "cpu").deviations)


def test_cpu_scale_names_a_batch_of_the_whole_training_set():
    """§2.1 draws mini-batches of S < N (line 84); a batch of the whole training set is
    full-batch GD, with no gradient noise at all: a departure the scale must list."""
    for name in ("jastrzebski-ratio-grid", "jastrzebski-equal-ratio",
                 "jastrzebski-interpolation", "jastrzebski-breakdown"):
        runs = load_experiment(name, "cpu").expand(data_dir="/d")
        whole = [r.label for r in runs if isinstance(r.params.get("batch_size"), int)
                 and r.params["batch_size"] >= r.params["dataset"].get("n_train", 4000)]
        if whole:
            assert "full-batch GD" in _cpu_deviations(name), (name, whole)


def test_cpu_scale_states_the_choices_the_text_leaves_open():
    # Fig. 4: which β the equal-ratio pair uses (line 210) and the different ratio (line 204)
    assert "β = 4" in _cpu_deviations("jastrzebski-interpolation")
    assert "four times lower" in _cpu_deviations("jastrzebski-interpolation")
    # Fig. 2: one network for the two of line 186, with footnote 7's VGG-11 schedule
    spec = load_experiment("jastrzebski-equal-ratio", "cpu")
    assert isinstance(spec.options["rescaling"], dict)             # one network
    assert "footnote 7" in _cpu_deviations("jastrzebski-equal-ratio")


def test_fig_3s_eigenvalue_readings_share_one_name_and_the_which_vocabulary():
    """Xing's "Max eigenvalue (spectral norm)" and Jastrzebski's "largest eigenvalue" are read
    by one reading, ``hessian-eig``, whose choices are the ``which`` values they set (as
    zhu-noisy-label's ``hessian-eigs``): each entry's default is its text's word and leaves
    the measurement as it was; the other choice sets the other ``which``."""
    import inspect

    from sgdlab.train.instruments.dynamics import dynamics_instrument

    # the instrument's own default where the entry leaves the option out
    own = inspect.signature(dynamics_instrument).parameters["hessian_which"].default
    spots = {"xing-hessian-norm": ("magnitude", "largest",
                                   lambda p: [m.get("hessian_which", own) for m in p["measure"]
                                              if m["name"] == "dynamics"]),
             "jastrzebski-ratio-grid": ("largest", "magnitude",
                                        lambda p: [m["which"] for m in p["final"]
                                                   if m["kind"] == "hessian_top"])}
    for name, (default, other, which) in spots.items():
        spec = load_experiment(name, "cpu")
        assert spec.readings["hessian-eig"] == default
        before = spec.expand()
        assert {w for r in before for w in which(r.params)} == {default}, name
        runs = load_experiment(name, "cpu", {"hessian-eig": other}).expand()
        assert {w for r in runs for w in which(r.params)} == {other}, name
        assert not {r.key for r in before} & {r.key for r in runs}


@pytest.mark.parametrize("name", ["jastrzebski-equal-ratio", "jastrzebski-ratio-grid",
                                  "jastrzebski-interpolation", "jastrzebski-breakdown"])
def test_paper_scale_says_the_text_states_no_momentum(name):
    # eq. (1) (line 88) is SGD without momentum and no experiment of §3 states one ("trained
    # with SGD", line 186): the plain SGD the runs take is a reading, listed as such
    spec = load_experiment(name, "paper")
    assert all(_plain_sgd(r.params) for r in spec.expand(data_dir="/d"))
    text = " ".join(spec.deviations)
    assert "no momentum" in text and "eq. (1)" in text, name


@pytest.mark.parametrize("name", ["jastrzebski-ratio-grid", "jastrzebski-interpolation",
                                  "jastrzebski-breakdown"])
def test_paper_scale_says_figs_3_to_5_state_no_schedule(name):
    # footnote 7's schedules (line 195) are those of Fig. 2; Figs. 3-5 state none, and §4
    # speaks of "SGD with a fixed learning rate" (line 229): the constant η the runs take is
    # a reading, listed as such
    spec = load_experiment(name, "paper")
    assert not any(r.params.get("schedule") for r in spec.expand(data_dir="/d"))
    text = " ".join(spec.deviations)
    assert "fixed learning rate" in text and "line 229" in text, name


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_ratio_grid_says_both_curvatures_skip_the_finite_differences(scale):
    # "we computed the largest eigenvalue and we approximated the Frobenius norm of the
    # Hessian [...] using the finite difference method" (line 193) may qualify both: both
    # come from exact Hessian-vector products here, and the scale says so of both
    spec = load_experiment("jastrzebski-ratio-grid", scale)
    (text,) = [d for d in spec.deviations if "finite difference" in d]
    assert "λ_max" in text and "Frobenius" in text and "line 193" in text


def test_footnote_7s_schedules_on_figs_4_and_5_are_a_reading_network_by_network():
    # footnote 7 (line 195) schedules Fig. 2's ResNet-56 and VGG-11; Figs. 4-5 train the
    # same networks and state none: `lr-schedule=footnote-7` gives each network its own
    reading = {"lr-schedule": "footnote-7"}
    runs = load_experiment("jastrzebski-interpolation", "paper", reading).expand(data_dir="/d")
    steps = {"vgg-11": VGG_STEPS, "resnet-56": RESNET_STEPS}
    trained = [r.params for r in runs if "between" not in r.params]
    assert {p["model"]["name"] for p in trained} == set(steps)
    for p in trained:
        assert p["schedule"] == steps[p["model"]["name"]]
    runs = load_experiment("jastrzebski-breakdown", "paper", reading).expand(data_dir="/d")
    assert all(r.params["schedule"] == VGG_STEPS for r in runs)
