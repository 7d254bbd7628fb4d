"""The procedure of chaudhari-independent-copies (thesis §5.0.1, Fig. 5.1): copies trained at
their own seeds, and the comparison run's numbers are the measurement functions' on them."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from sgdlab.data import load_dataset
from sgdlab.errors import ConfigError
from sgdlab.experiments.procedures import get_procedure
from sgdlab.measure.permutation import (align_to, average_weights, ensemble_accuracy,
                                        overlap_matrix)
from sgdlab.models import build_model
from sgdlab.store import RunStore
from sgdlab.testing import drawn_inside_width_and_top, run_experiment_config, stored_run
from sgdlab.train.checkpoint import load_checkpoint

MODEL = {"name": "small-mnistfc", "hidden": 6}
DATA = {"name": "mnist_small", "n_train": 64, "n_test": 48}


def _copies_spec(copies: list[int], seeds: list[int]) -> dict:
    labels = [f"copy-{k}" for k in copies]
    return {"name": "t-copies", "version": 1, "description": "copies",
            "procedure": "train_or_compare_copies", "analysis": "chaudhari_copies",
            "paper": {"author": "Chaudhari", "figure": "Fig. 0", "year": 2018},
            "base": {"dataset": DATA, "model": MODEL, "optimizer": {"name": "sgd", "lr": 0.0},
                     "batch_size": 32, "epochs": 1, "save_model": True},
            "runs": [{"label": lab, "params": {"copy": k}} for k, lab in zip(copies, labels)]
            + [{"label": "compare", "depends": labels, "params": {"copies": labels}}],
            "seeds": seeds, "options": {}}


def _run_copies(tmp_path, raw: dict, labels: list[str], model: dict):
    """Runs the spec ``raw`` (every run must finish); its runs by label and the copies
    ``labels``' saved models, rebuilt as ``model``."""
    res = run_experiment_config(raw, tmp_path)
    store = str(tmp_path / "runs.sqlite")
    runs = {r["label"]: r for r in res.results["runs"]}
    assert all(r["status"] == "finished" for r in runs.values())
    ds = load_dataset("mnist_small", n_train=64, n_test=48)
    models = []
    for lab in labels:
        (path,) = RunStore(store).artifacts(runs[lab]["run_id"], "model")
        m = build_model(input_shape=ds.input_shape, num_outputs=ds.num_outputs, **model)
        m.load_state_dict(load_checkpoint(path)["model"])
        models.append(m)
    return runs, ds, models


def test_compare_run_measures_the_copies_it_depends_on(tmp_path):
    labels = ["copy-1", "copy-2", "copy-3"]
    runs, ds, models = _run_copies(tmp_path, _copies_spec([1, 2, 3], [0]), labels, MODEL)
    # lr 0 keeps the initialisations: copy k of seed 0 starts from seed 1000·0 + k
    for k, m in enumerate(models, 1):
        torch.manual_seed(k)
        init = build_model(input_shape=ds.input_shape, num_outputs=ds.num_outputs, **MODEL)
        for p, q in zip(init.parameters(), m.parameters()):
            assert torch.equal(p, q), k
    s = runs["compare"]["summary"]
    test = (ds.x_test, ds.y_test)
    errs = [1 - ensemble_accuracy([m], test) for m in models]
    assert s["individual_err"] == pytest.approx(np.mean(errs), abs=1e-12)
    assert s["ensemble_err"] == pytest.approx(1 - ensemble_accuracy(models, test), abs=1e-12)
    assert s["oneshot_err"] == pytest.approx(
        1 - ensemble_accuracy([average_weights(models)], test), abs=1e-12)
    aligned = [models[0]] + [align_to(models[0], m) for m in models[1:]]
    assert s["aligned_err"] == pytest.approx(
        1 - ensemble_accuracy([average_weights(aligned)], test), abs=1e-12)
    mat = np.array(overlap_matrix(aligned))
    assert s["overlap_aligned"] == pytest.approx(mat[~np.eye(3, dtype=bool)].mean(), abs=1e-9)
    raw = np.array(overlap_matrix(models))
    assert s["overlap_raw"] == pytest.approx(raw[~np.eye(3, dtype=bool)].mean(), abs=1e-9)
    assert s["best_copy_err"] == min(errs) and s["copies"] == 3
    assert s["individual_err_std"] == pytest.approx(np.std(errs, ddof=1), abs=1e-12)
    ind, ens = np.mean(errs), s["ensemble_err"]
    assert s["ensemble_rel_gain"] == pytest.approx((ind - ens) / ind, abs=1e-12)


def test_runs_name_a_copy_or_the_copies_to_compare():
    proc = get_procedure("train_or_compare_copies")
    base = {"dataset": DATA, "model": MODEL, "optimizer": {"name": "sgd", "lr": 0.1},
            "batch_size": 32, "epochs": 1}
    proc.validate(dict(base, copy=2), "r")
    proc.validate(dict(base, copies=["a", "b"], similarity="inner"), "r")
    with pytest.raises(ConfigError, match="either copy"):
        proc.validate(base, "r")
    with pytest.raises(ConfigError, match="copy must be an integer"):
        proc.validate(dict(base, copy=-1), "r")
    with pytest.raises(ConfigError, match="at least two distinct"):
        proc.validate(dict(base, copies=["a"]), "r")
    with pytest.raises(ConfigError, match="overlap must be one of"):
        proc.validate(dict(base, copies=["a", "b"], overlap="mean"), "r")


def test_a_seed_whose_copies_train_past_32_bits_is_refused_with_the_spec():
    # copy k trains at seed 1000·seed + k: the spec took the seed and every such copy failed
    from sgdlab.experiments.spec import resolve

    resolve(_copies_spec([1, 296], [4_294_966]), "cpu")
    resolve(_copies_spec([1, 295], [4_294_967]), "cpu")
    with pytest.raises(ConfigError, match=r"^t-copies\[cpu\]\.seeds: seed 4294967 trains copy "
                       r"296 at seed 1000·4294967 \+ 296 = 4294967296, outside 0..2\*\*32 - 1; "
                       r"copy 296 takes seeds up to 4294966$"):
        resolve(_copies_spec([1, 296], [4_294_967]), "cpu")


def test_the_comparisons_options_reach_the_measurements(tmp_path):
    """Copies with batch norm trained one epoch (their running statistics moved): a compare
    run with the defaults (cosine matching, overlap of the whole vector, averaged statistics)
    and one with every option changed (inner-product matching, per-layer overlap, statistics
    recomputed on the training set in batches of 16) each equal the measurement functions'
    numbers with those options, and the two differ."""
    from sgdlab.measure.batch_norm import recompute_bn_statistics
    from sgdlab.measure.permutation import averaged_accuracy

    model = {"name": "mnistfc", "width": 8, "dropout": 0.0, "input_dropout": 0.0}
    labels = ["copy-1", "copy-2"]          # two: one pair to align and overlap
    raw = _copies_spec([1, 2], [0])
    raw["base"].update(model=model, optimizer={"name": "sgd", "lr": 0.5}, batch_size=8)
    raw["runs"].append({"label": "options", "depends": labels, "params": {
        "copies": labels, "similarity": "inner", "overlap": "layer-mean",
        "bn_stats": "recompute", "eval_batch_size": 16}})
    runs, ds, models = _run_copies(tmp_path, raw, labels, model)
    models = [m.eval() for m in models]
    test, off = (ds.x_test, ds.y_test), ~np.eye(2, dtype=bool)
    train = [(ds.x_train[i:i + 16], ds.y_train[i:i + 16]) for i in range(0, 64, 16)]

    def expected(similarity, reading, prepare):
        aligned = [models[0]] + [align_to(models[0], m, similarity=similarity)
                                 for m in models[1:]]
        return {"oneshot_err": 1 - averaged_accuracy(models, test, prepare),
                "aligned_err": 1 - averaged_accuracy(aligned, test, prepare),
                "overlap_raw": np.array(overlap_matrix(models, reading=reading))[off].mean(),
                "overlap_aligned": np.array(overlap_matrix(aligned, reading=reading))[off].mean()}

    want = {"compare": expected("cosine", "whole", None),
            "options": expected("inner", "layer-mean",
                                lambda m: recompute_bn_statistics(m, train))}
    for lab, w in want.items():
        s = runs[lab]["summary"]
        for k, v in w.items():
            assert s[k] == pytest.approx(v, abs=1e-9), (lab, k)
    # each option changes what it reaches: the test tells each default from the other value
    a, b = want["compare"], want["options"]
    recomputed = expected("cosine", "whole", lambda m: recompute_bn_statistics(m, train))
    assert recomputed["aligned_err"] != a["aligned_err"]
    assert a["overlap_raw"] != pytest.approx(b["overlap_raw"], abs=1e-6)
    assert expected("inner", "whole", None)["overlap_aligned"] != pytest.approx(
        a["overlap_aligned"], abs=1e-6)


def test_compare_options_are_checked_when_planned():
    proc = get_procedure("train_or_compare_copies")
    base = {"dataset": DATA, "model": MODEL, "optimizer": {"name": "sgd", "lr": 0.1},
            "batch_size": 32, "epochs": 1}
    proc.validate(dict(base, copies=["a", "b"], bn_stats="recompute", eval_batch_size=1), "r")
    for bad, msg in ((dict(copies=["a", "a"]), "at least two distinct run labels, got"),
                     (dict(copies=["a", "b"], bn_stats="x"),
                      "bn_stats must be one of average, recompute, got 'x'"),
                     (dict(copies=["a", "b"], similarity="l2"), "similarity must be one of"),
                     (dict(copies=["a", "b"], eval_batch_size=0),
                      "eval_batch_size must be a positive integer or null, got 0"),
                     (dict(copies=["a", "b"], eval_batch_size=True), re.escape(
                         "eval_batch_size must be a positive integer or null, not a bool "
                         "(True)")),
                     (dict(copy=True), re.escape(
                         "copy must be an integer in [0, 1000), not a bool (True)")),
                     (dict(copy=1000), r"copy must be an integer in \[0, 1000\), got 1000")):
        with pytest.raises(ConfigError, match=msg):
            proc.validate(dict(base, **bad), "r")
    proc.validate(dict(base, copy=0), "r")
    proc.validate(dict(base, copy=999), "r")


def test_a_copy_run_trains_without_the_shared_compare_options_and_plans_its_steps():
    # the shared base may hold the compare runs' options: a copy's training drops them
    proc = get_procedure("train_or_compare_copies")
    base = {"dataset": DATA, "model": MODEL, "optimizer": {"name": "sgd", "lr": 0.1},
            "batch_size": 32, "epochs": 3, "similarity": "inner", "eval_batch_size": 8}
    proc.validate(dict(base, copy=1), "r")
    # 64 examples in batches of 32 for 3 epochs; a compare run trains nothing
    assert proc.planned_steps(dict(base, copy=1)) == 6
    assert proc.planned_steps(dict(base, copies=["a", "b"])) is None


def test_the_overlap_figure_is_the_first_seeds_and_labels_its_cells_readably():
    from sgdlab.experiments.procedures.copies import copies_analysis
    from sgdlab.experiments.spec import load_experiment

    spec = load_experiment("chaudhari-independent-copies", "cpu")

    def run(seed, mat):
        summary = {"individual_err": 0.1, "individual_err_std": 0.01, "ensemble_err": 0.09,
                   "oneshot_err": 0.9, "aligned_err": 0.5, "overlap_aligned": 0.4,
                   "overlap_raw": 0.3, "ensemble_rel_gain": 0.1, "copies": 2}
        return stored_run("compare", seed, summary=summary,
                          data={"copy_errors": [0.1, 0.1], "overlap_aligned": mat,
                                "overlap_raw": mat, "labels": ["copy-1", "copy-2"]})

    later = run(5, [[1.0, 0.9], [0.9, 1.0]])
    first = run(2, [[1.0, 0.4], [0.4, 1.0]])
    (fig,) = [f for name, f in copies_analysis(spec, [later, first]).figures
              if name == "overlap"]
    ax = fig.axes[0]
    assert "(seed 2)" in ax.get_title()
    # whose figure, within the figure's width
    assert ax.get_title().startswith("Chaudhari 2018, §5.0.1, Fig. 5.1")
    fig.canvas.draw()
    assert drawn_inside_width_and_top(fig, ax.title)
    cells = {t.get_text(): t.get_color() for t in ax.texts}
    # white on the dark low overlaps, black on the bright high ones
    assert cells == {"1.00": "black", "0.40": "white"}


def test_a_comparison_stored_before_the_best_copy_was_summarised_gets_its_lowest_error():
    from sgdlab.experiments.procedures.copies import copies_analysis
    from sgdlab.experiments.spec import load_experiment

    spec = load_experiment("chaudhari-independent-copies", "cpu")
    summary = {"individual_err": 0.15, "ensemble_err": 0.09, "oneshot_err": 0.9,
               "aligned_err": 0.5, "overlap_aligned": 0.4, "overlap_raw": 0.3,
               "ensemble_rel_gain": 0.4, "copies": 2}
    old = stored_run("compare", 0, summary=summary,
                     data={"copy_errors": [0.2, 0.1], "overlap_aligned": [[1.0, 0.4], [0.4, 1.0]],
                           "overlap_raw": [[1.0, 0.3], [0.3, 1.0]]})
    (table,) = copies_analysis(spec, [old]).tables
    assert old.summary["best_copy_err"] == 0.1
    assert table.rows[0][table.columns.index("best_copy_err")] == 0.1


def test_copy_k_of_seed_s_trains_at_seed_1000s_plus_k(monkeypatch):
    """§5.0.1's copies have their own initialisation and batch order: copy k of run seed s
    trains at 1000·s + k (at seed 0 that is k, which the other tests run), and only the
    copy's own parameters reach training."""
    from sgdlab.experiments.spec import RunSpec

    seen = []
    train = get_procedure("train")
    monkeypatch.setattr(train, "run", lambda run, ctx: seen.append((run.seed, run.params)))
    base = {"dataset": DATA, "model": MODEL, "optimizer": {"name": "sgd", "lr": 0.1},
            "batch_size": 32, "epochs": 1, "similarity": "inner"}
    proc = get_procedure("train_or_compare_copies")
    for seed, k in ((2, 3), (1, 0), (0, 5)):
        proc.run(RunSpec("e", 1, "smoke", "c", dict(base, copy=k), seed,
                         "train_or_compare_copies"), None)
    assert [s for s, _ in seen] == [2003, 1000, 5]
    assert all("copy" not in p and "similarity" not in p for _, p in seen)
