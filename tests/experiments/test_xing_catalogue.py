"""The Xing et al. (2018) entries at paper scale train what the text states and list what it
leaves open: VGG-11 on CIFAR-10 with batch norm (footnote 5, line 111), batch size 100 and
learning rate 0.1 unless an experiment says otherwise (line 63), 45,000 training images
(Table 1's "whole epoch (450 iterations)" at batch 100, line 85)."""
from __future__ import annotations

import numpy as np
import pytest

from sgdlab.experiments.spec import catalogue_files, load_experiment
from sgdlab.models import build_model
from sgdlab.testing import paper_runs

TEXT = "xing-2018-walk-with-sgd.txt"
XING = sorted(n for n in catalogue_files() if n.startswith("xing-"))


@pytest.fixture(scope="module")
def paper_lines(paper_lines_of) -> list[str]:
    return paper_lines_of(TEXT)


def test_the_lines_cited_below_say_what_they_are_cited_for(paper_lines):
    assert "we track the spectral norm in the train mode of batchnorm" in paper_lines[110]
    assert "a whole epoch (450 iterations)" in paper_lines[84]
    assert "we use a batch size of 100 and a fixed learning rate of 0.1" in paper_lines[62]
    # no line states the inputs' preprocessing; Fig. 8 covers the first 40 epochs, every one
    assert not any("normaliz" in ln.lower() and "input" in ln.lower() for ln in paper_lines)
    assert "first 40 epochs for VGG-11 on CIFAR-10 shown in Figure 8" in paper_lines[100]
    assert "towards the end" in paper_lines[100]
    assert "using batch size 100 and a fixed learning rate of 0.1" in paper_lines[149]
    # GD's gradient (reading gd-gradient): a mean over the whole training set
    assert "(GD- gradient computed using the whole dataset)" in paper_lines[60]
    assert "denotes the expected gradient using all training samples" in paper_lines[143]


@pytest.mark.parametrize("name", XING)
def test_paper_scale_trains_a_batch_normalised_vgg_11_on_45000_cifar_10_images(name):
    spec = load_experiment(name, "paper")
    for r in spec.expand(data_dir="/d"):
        p = r.params
        assert p["dataset"]["name"] == "cifar10" and p["dataset"]["n_train"] == 45000, r.label
        assert p["model"]["name"] == "vgg-11" and p["model"].get("batchnorm", True), r.label
        assert not p["model"].get("classifier_widths"), r.label
        assert not p["optimizer"].get("weight_decay") and not p["optimizer"].get("momentum")
        assert not p["dataset"].get("augment"), r.label
    net = build_model("vgg-11", (3, 32, 32), 10)
    assert sum(t.numel() for t in net.parameters()) == 9_231_114


@pytest.mark.parametrize("name", XING)
def test_paper_scale_lists_the_vgg_11_details_and_the_split_the_text_leaves_open(name):
    devs = load_experiment(name, "paper").deviations
    head = [d for d in devs if d.startswith("VGG-11's head and training details are not stated")]
    assert len(head) == 1, devs
    for part in ("batch norm", "line 111", "Linear(512, 10)", "no dropout", "9,231,114",
                 "no weight decay", "no data augmentation", "default initialisation",
                 "pixels scaled to [0, 1]"):
        assert part in head[0], part
    split = [d for d in devs if d.startswith("45,000 of CIFAR-10's 50,000 training images")]
    assert len(split) == 1 and "450 iterations" in split[0] and "line 85" in split[0], devs


def test_cpu_hessian_norm_lists_the_length_fig_3_leaves_open():
    spec = load_experiment("xing-hessian-norm", "cpu")
    assert {r.params["epochs"] for r in spec.expand(data_dir="/d")} == {100}
    assert any(d.startswith("Fig. 3 does not state the length of training: 100 epochs")
               and "line 101" in d for d in spec.deviations), spec.deviations


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_cosine_grid_compares_every_batch_size_after_the_same_updates_and_says_so(
        scale, paper_lines):
    """Line 126 does not say whether the batch sizes' distances are compared after equal
    updates or equal epochs; footnote 4 (line 109) compares GD with SGD "after the same
    number of updates". Every run of the sweep stops at the same update, and each scale
    names that basis among its deviations."""
    assert "after the same number of updates, GD traverses a smaller" in paper_lines[108]
    assert "smaller distance of parameters from initialization during training" in (
        paper_lines[125])
    spec = load_experiment("xing-cosine-grid", scale)
    runs = spec.expand(data_dir="/d")
    assert len({r.params["max_steps"] for r in runs}) == 1
    for r in runs:     # no run ends its epochs before max_steps
        n = r.params["dataset"]["n_train"] if scale == "paper" else 4000   # mnist_small
        per_epoch = n // r.params["batch_size"]
        assert r.params["epochs"] * per_epoch >= r.params["max_steps"], r.label
    basis = [d for d in spec.deviations if "same number of updates" in d]
    assert len(basis) == 1 and "line 126" in basis[0] and "line 109" in basis[0], basis


@pytest.mark.parametrize("name", XING)
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_the_inputs_are_pixels_in_0_1_and_the_unstated_preprocessing_is_listed(name, scale):
    """The text states no preprocessing of the inputs: both scales scale pixels to [0, 1]
    (the loaders' default) and list that choice among their deviations."""
    spec = load_experiment(name, scale)
    for r in spec.expand(data_dir="/d"):
        assert r.params["dataset"].get("normalize", "unit") == "unit", r.label
    assert any("pixels scaled to [0, 1]" in d for d in spec.deviations), spec.deviations


def test_barriers_paper_scale_lists_the_epochs_of_fig_8_it_does_not_interpolate():
    """Line 101's barrier heights are those crossed "towards the end" of Fig. 8's first 40
    epochs, every one of them counted; the paper scale interpolates epochs 1, 10, 25 and 100
    only, so it tests the heights on epochs 1, 10 and 25 and says so."""
    spec = load_experiment("xing-barriers", "paper")
    (measure,) = [m for m in spec.expand(data_dir="/d")[0].params["measure"]
                  if m["name"] == "step_interpolation"]
    assert measure["epochs"] == [1, 10, 25, 100]
    assert spec.options["barrier_epochs"] == [1, 10, 25]
    fig8 = [d for d in spec.deviations if "Fig. 8" in d]
    assert len(fig8) == 1 and "first 40 epochs" in fig8[0] and "line 101" in fig8[0], fig8


# the runs that take full-batch GD steps on a batch-normalised network
FULL_BATCH_BN = [("xing-walk", "paper"), ("xing-isotropic-noise", "paper"),
                 ("xing-stuck-continuation", "paper"), ("xing-stuck-continuation", "cpu")]


@pytest.mark.parametrize("name, scale", FULL_BATCH_BN)
def test_full_batch_gd_on_batch_norm_lists_how_its_gradient_is_taken(name, scale):
    """Full-batch GD on a batch-normalised network is one step over the whole training set,
    batch norm normalising with its statistics; the text does not say how its GD gradient
    was taken (line 150 names batch size 100 for the experiment): the entry says so."""
    spec = load_experiment(name, scale)
    gd = [r for r in spec.expand(data_dir="/d") if r.params["batch_size"] == "full"]
    assert gd and all(r.params["model"].get("batchnorm", r.params["model"]["name"] == "vgg-11")
                      for r in gd)
    found = [d for d in spec.deviations if d.startswith("full-batch GD takes one gradient")]
    assert len(found) == 1 and "line 150" in found[0] and "batch size 100" in found[0], \
        spec.deviations
    assert "gd-gradient=whole-set" in found[0] and "gd-gradient=batches-100" in found[0]


# entry -> its run groups that take full-batch GD steps (those of the reading gd-gradient)
FULL_BATCH_GROUPS = {"xing-walk": {"gd"},
                     "xing-isotropic-noise": {"gd", "gd-iso-0.05", "gd-iso-0.1"},
                     "xing-stuck-continuation": {"gd-iso", "lower-lr", "gd"}}


@pytest.mark.parametrize("name", sorted(FULL_BATCH_GROUPS))
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_gd_gradient_reading_accumulates_every_full_batch_run_over_batches_of_100(name, scale):
    """GD's gradient "computed using the whole dataset" (line 61) in one pass by default, no
    parameter set (the runs keep their keys); batches-100 (line 150's batch size 100) sets
    micro_batch: 100 on every full-batch run and on no other, whose key changes only through
    a dependency (the SGD continuation of a noisy run taken so)."""
    spec = load_experiment(name, scale)
    other = load_experiment(name, scale, readings={"gd-gradient": "batches-100"})
    assert spec.readings["gd-gradient"] == "whole-set"
    runs, chunked = spec.expand(data_dir="/d"), other.expand(data_dir="/d")
    assert [(r.label, r.seed) for r in runs] == [(r.label, r.seed) for r in chunked]
    for r, o in zip(runs, chunked):
        assert "micro_batch" not in r.params, r.label
        full = r.params["batch_size"] == "full"
        assert full == (r.label in FULL_BATCH_GROUPS[name]), r.label
        assert (o.key != r.key) == (full or bool(r.params.get("init_from"))), r.label
        assert o.params.pop("micro_batch", None) == (100 if full else None), r.label
        assert o.params == r.params, r.label
    assert any("batches of 100" in d and "gd-gradient=batches-100" in d
               for d in other.deviations)
    assert not any(d.startswith("full-batch GD's gradient (reading") for d in spec.deviations)


@pytest.mark.parametrize("name", XING)
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_only_batch_normalised_full_batch_gd_needs_that_deviation(name, scale):
    spec = load_experiment(name, scale)
    listed = any(d.startswith("full-batch GD takes one gradient") for d in spec.deviations)
    assert listed == ((name, scale) in FULL_BATCH_BN), (name, scale)


@pytest.mark.parametrize("name", ["xing-walk", "xing-barriers"])
def test_cpu_mlp_of_section_3_lists_the_learning_rate_and_batch_size_it_borrows(name):
    """§3 states batch size 100 and learning rate 0.1 for VGG-11 (line 63), and for the MLP
    on MNIST only in §4 (line 150): the cpu scale's MLP trains with them and says so."""
    spec = load_experiment(name, "cpu")
    for r in spec.expand(data_dir="/d"):
        assert r.params["model"]["name"] == "mlp" and r.params["dataset"]["name"] == "mnist_small"
        if r.params["batch_size"] != "full":
            assert r.params["batch_size"] == 100
    assert 0.1 in {r.params["optimizer"]["lr"] for r in spec.expand(data_dir="/d")}
    found = [d for d in spec.deviations if d.startswith("§3 states no learning rate")]
    assert len(found) == 1 and "line 150" in found[0] and "line 63" in found[0], spec.deviations


# line -> words of that line stating a constant the paper-scale runs below are held to
STATED = {
    61: "we obtain 10 samples uniformly placed between these two parameter points",
    63: "for all experiments with VGG-11 we use a batch size of 100 and a fixed learning rate",
    70: "Training loss for the 1st 40 iterations of training",
    85: "a whole epoch (450 iterations)",
    87: "Epoch 1\tEpoch 10\tEpoch 25\tEpoch 100",
    95: "using a fixed learning rate of 0.1 and batch size 100",
    101: "VGG-11 and Resnet-56 trained on CIFAR-10 (trained for 100 epochs)",
    111: "we track the spectral norm in the train mode of batchnorm",
    121: "LR 0.1\t",
    122: "LR 0.05\t",
    148: "at the initialization with a factor of 0.1 and 0.05",
    150: "using batch size 100 and a fixed learning rate of 0.1",
    262: "we use batch size 100 for all models",
}


def test_the_stated_constants_are_on_the_lines_cited(paper_lines):
    for number, words in STATED.items():
        assert words in paper_lines[number - 1], number


def _measure(p: dict, name: str) -> dict:
    (m,) = [m for m in p.get("measure", []) if m["name"] == name]
    return m


def test_paper_scale_runs_the_constants_the_text_states():
    """Every constant §§3-5 and the appendix state for VGG-11 on CIFAR-10 reaches the
    paper-scale runs (the lines of :data:`STATED`)."""
    # Figs. 1-2: 40 updates of full-batch GD and of SGD (line 70), lr 0.1, batch 100
    # (line 63), each segment at 10 points strictly between the iterates (line 61)
    walk = paper_runs("xing-walk")
    assert walk["gd"]["batch_size"] == "full" and walk["gd"]["epochs"] == 40
    assert walk["sgd"]["batch_size"] == 100 and walk["sgd"]["max_steps"] == 40
    for p in walk.values():
        assert p["optimizer"]["lr"] == 0.1 and not p.get("schedule")
        m = _measure(p, "step_interpolation")
        assert m["num_points"] == 10 and m.get("spacing", "interior") == "interior"
        assert m.get("eval_subset") is None           # the whole training set (line 83)
    # Tables 1-2: epochs 1, 10, 25, 100 of 450 updates (lines 85, 87), 100 epochs (line
    # 101), VGG-11 at learning rates 0.1 and 0.05 (Table 2, lines 121-122), batch 100
    bars = paper_runs("xing-barriers")
    assert {p["optimizer"]["lr"] for p in bars.values()} == {0.1, 0.05}
    for p in bars.values():
        assert p["batch_size"] == 100 and p["epochs"] == 100 and not p.get("schedule")
        m = _measure(p, "step_interpolation")
        assert m["epochs"] == [1, 10, 25, 100] and m["num_points"] == 10
        assert m.get("spacing", "interior") == "interior" and m.get("eval_subset") is None
    # Fig. 3: lr 0.1, batch 100 (line 95); the spectral norm in batch norm's train mode
    # (footnote 5, line 111), each batch of SGD's size normalised by its own statistics
    (hess,) = paper_runs("xing-hessian-norm").values()
    assert (hess["optimizer"]["lr"], hess["batch_size"]) == (0.1, 100)
    m = _measure(hess, "dynamics")
    assert m["hessian_bn_mode"] in ("train", "both") and m["eval_batch_size"] == 100
    # §4: noise factors 0.1 and 0.05 (line 148); lr 0.1 and SGD's batch 100 (line 150)
    iso = paper_runs("xing-isotropic-noise")
    assert sorted(p["optimizer"].get("variance_factor", 0) for p in iso.values()
                  if p["optimizer"]["name"] == "gd-isotropic") == [0.05, 0.1]
    assert all(p["optimizer"]["lr"] == 0.1 for p in iso.values())
    assert iso["sgd"]["batch_size"] == 100 and iso["gd"]["batch_size"] == "full"
    # footnote 6 continues §4's runs: the same lr 0.1 and SGD batch 100
    stuck = paper_runs("xing-stuck-continuation")
    assert stuck["sgd"]["batch_size"] == 100
    assert all(p["optimizer"]["lr"] == 0.1 for p in stuck.values())
    # Fig. 4: the sweeps pass through (0.1, 100) (line 63)
    grid = {(p["optimizer"]["lr"], p["batch_size"])
            for p in paper_runs("xing-cosine-grid").values()}
    assert (0.1, 100) in grid
    # Appendix C: batch size 100 for every schedule (line 262)
    assert {p["batch_size"] for p in paper_runs("xing-schedules").values()} == {100}


def _lr_per_step(p: dict, steps_per_epoch: int) -> list[float]:
    """The learning rate of run params ``p`` at every step of its ``epochs``, from its
    schedule as training builds it."""
    import torch

    from sgdlab.optim.registry import build_schedule

    total = int(p["epochs"]) * steps_per_epoch
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=p["optimizer"]["lr"])
    sched = {k: v for k, v in p["schedule"].items() if k != "name"}
    s = build_schedule(p["schedule"]["name"], opt, steps_per_epoch=steps_per_epoch,
                       total_steps=total, **sched)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    return out


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_the_trapezoid_rises_as_clrs_first_cycle_then_holds_and_anneals(scale):
    """§5 (line 172): "we increase the learning rate as in the first cycle of CLR, then keep
    it flat, then linearly anneal it (we call it the trapezoid schedule)"; CLR repeats its
    cycle ("repeat this process in a cycle")."""
    runs = {r.label: r.params for r in load_experiment("xing-schedules", scale).expand(
        data_dir="/d")}
    spe = 4                       # any fixed number of steps per epoch reads the same shape
    clr, trap = _lr_per_step(runs["clr"], spe), _lr_per_step(runs["trapezoid"], spe)
    assert len(clr) == len(trap)
    peak = max(clr)
    rise = clr.index(peak)        # CLR's first half-cycle: from its base up to its peak
    assert 0 < rise < len(clr) and clr[0] < peak
    assert trap[:rise + 1] == pytest.approx(clr[:rise + 1], rel=1e-12)
    # then flat at that peak, then a linear anneal (equal steps down) to the end
    flat = [i for i in range(rise, len(trap)) if trap[i] == pytest.approx(peak, rel=1e-12)]
    assert flat == list(range(rise, flat[-1] + 1)) and len(flat) > 1
    down = np.diff(trap[flat[-1]:])
    assert len(down) > 0 and np.all(down < 0)
    assert down == pytest.approx(np.full(len(down), down[0]), rel=1e-9)
    # CLR falls back to its base after the peak and reaches the peak again: cycles
    assert min(clr[rise:2 * rise + 1]) == pytest.approx(clr[0], rel=1e-12)
    assert max(clr[2 * rise + 1:]) == pytest.approx(peak, rel=1e-12)
