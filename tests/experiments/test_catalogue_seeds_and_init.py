"""What every catalogue entry says about two settings that reports print next to its verdicts:
how many seeds a scale runs, and where the networks' weights start.

Seeds: a scale that runs several seeds (or fewer than its paper states) lists how many, and
whether the paper states a number — with the line that states it, or saying that it states
none. Initialisation: none of the five papers states one, so every paper scale that trains a
network lists the initialisation it uses and says that the paper leaves it open.

The lines cited below are checked against the paper texts where they are at hand
(``$SGDLAB_PAPERS`` or ``../shared/papers`` beside the repository: conftest's
``paper_lines_of``).
"""
from __future__ import annotations

import re

import pytest

from sgdlab.experiments.spec import catalogue_files, load_experiment

FILES = sorted(catalogue_files())

# What each paper states about the number of runs behind a figure, by line of its text.
# Xing et al. state none (they plot single runs).
RUNS_STATED = {
    # Figs. 1-2: one run per protocol; Fig. 3 "a series of training instances" (line 186)
    "musso-2020-random-learning-rate.txt": {
        173: "We first consider an individual training example on MNIST for each protocol"},
    "jastrzebski-2018-lr-batch-ratio.txt": {
        182: "Each experiment was repeated for 5 different random initializations.",  # Fig. 1
        210: "Experiments were repeated several times with different random initializations",
        225: "Experiments are repeated 5 times with different random seeds.",  # Fig. 5
    },
    "chaudhari-2018-thesis-energy-landscape.txt": {
        696: "As Figure 2.3a shows, averaged over 10 runs",  # deep mnistfc, Trivialized-SGD
        711: "Figure 2.3c shows the average validation error over 10 runs.",  # lenet
        719: "as the hyper-parameters over two independent runs",  # All-CNN-BN, Table 2.1
        746: "Eigenspectrum of the Hessian at a local minimum of a CNN on MNIST (two independent "
             "runs)",  # Fig. 3.1, small-LeNet
        1050: "for `mnistfc` and `lenet` respectively over 5 independent runs",  # §3.3.2
        1063: "(A) small-mnistfc (2 runs)",  # Fig. 3.4a
        1065: "(B) char-LSTM (5 runs)",  # Fig. 3.4b
        1069: "of allcnn at a local minimum (4 independent runs)",  # Fig. 3.4c
        1101: "over 4 independent runs",  # §3.3.5, char-LSTM
        2112: "We report the mean and standard deviation of the validation error over 3 runs "
              "for each algorithm with random initialization.",  # Ch. 5, every experiment
    },
    # 100 repetitions of the 2-D escape from one starting point, not data draws (seeds)
    "zhu-2019-anisotropic-noise.txt": {191: "we run all these dynamics for 100 times"},
}

# entry -> its parts: (the models a part trains, or None for every run; the number of runs
# the paper states for it, or None; the line that says so, or None). Entries not named here
# train what their paper states no number of runs for.
SEEDS_STATED: dict[str, tuple[tuple[tuple[str, ...] | None, int | None, int | None], ...]] = {
    "jastrzebski-equal-ratio": ((None, 5, 182), (None, None, None)),  # Fig. 1; Fig. 2: none
    "musso-protocols": ((None, 1, 173), (None, None, None)),    # Fig. 1; Fig. 3: none
    "musso-protocols-model2": ((None, 1, 173), (None, None, None)),    # Fig. 2; Fig. 3: none
    "jastrzebski-interpolation": ((None, None, 210),),  # "several times"
    "jastrzebski-breakdown": ((None, 5, 225),),
    "chaudhari-trivialized": ((None, 10, 696),),
    "chaudhari-trivialized-lenet": ((None, 10, 711),),
    "chaudhari-trivialized-allcnn": ((None, 2, 719),),
    "chaudhari-hessian-spectrum": ((("small-lenet-hessian",), 2, 746),
                                   (("small-mnistfc",), 2, 1063),
                                   (("char-lstm-autograd",), 5, 1065),
                                   (("allcnn",), 4, 1069)),
    "chaudhari-entropy-sgd": ((("mnistfc", "lenet"), 5, 1050), (("allcnn",), None, None)),
    "chaudhari-entropy-sgd-rnn": ((("char-lstm",), 4, 1101), (("ptb-lstm", "lenet"), None, None)),
    "chaudhari-parle": ((None, 3, 2112),),
    "chaudhari-parle-split": ((None, 3, 2112),),
}

NONE_STATED = ("not stated", "does not state", "does not say", "states none", "states no ",
               "says nothing", "single run", "one run")
WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 10: "ten"}


def _says_number(text: str, n: int) -> bool:
    return bool(re.search(rf"\b({n}|{WORDS.get(n, n)})\b", text, re.IGNORECASE))


@pytest.mark.parametrize("text,number,words", [
    (t, n, w) for t, lines in RUNS_STATED.items() for n, w in lines.items()])
def test_the_lines_cited_for_the_papers_runs_say_so(text, number, words, paper_lines_of):
    assert words in paper_lines_of(text)[number - 1]


def test_every_line_an_entry_cites_is_in_its_papers_table():
    papers = {"jastrzebski": "jastrzebski-2018-lr-batch-ratio.txt",
              "musso": "musso-2020-random-learning-rate.txt",
              "chaudhari": "chaudhari-2018-thesis-energy-landscape.txt"}
    for name, parts in SEEDS_STATED.items():
        assert name in FILES, name
        for _, _, line in parts:
            assert line is None or line in RUNS_STATED[papers[name.split("-")[0]]], name


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("name", FILES)
def test_a_scale_says_how_many_seeds_it_runs_and_what_the_paper_states(name, scale):
    spec = load_experiment(name, scale)
    runs = spec.expand(data_dir="/d")
    n = len({r.seed for r in runs})
    models = {(r.params.get("model") or {}).get("name") for r in runs}
    parts = [(stated, line) for which, stated, line in SEEDS_STATED.get(name, ((None,) * 3,))
             if which is None or models & set(which)]
    if n == 1 and all(stated in (None, 1) for stated, _ in parts):
        return

    def says_it(d: str) -> bool:
        if "seeds" not in d or not _says_number(d, n):
            return False
        for stated, line in parts:
            if line is not None and f"line {line}" not in d:
                return False
            if stated is None and not any(w in d for w in NONE_STATED):
                return False
            if stated is not None and not _says_number(d, stated):
                return False
        return True

    assert any(says_it(d) for d in spec.deviations), (n, parts, spec.deviations)


# the initialisation each network of the paper scales starts from, as sgdlab's models draw it
INIT = {"resnet-56": "He et al.'s initialisation",        # sgdlab.models.resnet
        "char-lstm": "char-rnn's uniform(−0.08, 0.08)",     # sgdlab.models.recurrent
        "ptb-lstm": "Zaremba et al.'s uniform(−0.04, 0.04)",
        "char-lstm-autograd": "N(0, 0.01²)",              # autograd's examples/lstm.py
        "musso-vgg16": "torchvision's initialisation"}    # sgdlab.models.musso


@pytest.mark.parametrize("name", FILES)
def test_paper_scale_lists_the_initialisation_the_paper_leaves_open(name):
    spec = load_experiment(name, "paper")
    said = [d for d in spec.deviations
            if "initialisation" in d and any(w in d for w in NONE_STATED)]
    for r in spec.expand(data_dir="/d"):
        model = r.params.get("model") or {}
        if not model.get("name"):
            continue
        if model.get("init", "torch") == "kaiming":
            want = "He et al."
        else:
            want = INIT.get(model["name"], "PyTorch's default")
        assert any(want in d for d in said), (r.label, model["name"], want, spec.deviations)
