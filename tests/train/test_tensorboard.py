"""TensorBoard event files, read back: live logging from a run and export from the store."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from google.protobuf import json_format
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata

from sgdlab.cli.main import main
from sgdlab.config import build_from_config
from sgdlab.config.run import training_hparams
from sgdlab.config.runner import run_config
from sgdlab.errors import ResumableError, UserError
from sgdlab.store import RunStore
from sgdlab.store.runstore import summary_numbers
from sgdlab.testing import TINY_RUN
from sgdlab.train import train
from sgdlab.train.tensorboard import (LiveRuns, TensorBoardLogger, export_runs, final_metrics,
                                      last_step, logged_times, run_folder, run_hparams,
                                      summary_writer)

TINY = {**TINY_RUN, "name": "tiny tb",
        "train": {"epochs": 2, "batch_size": 5, "progress": False, "threads": 1},
        "measure": [{"name": "dynamics", "every": 2}]}


def _accumulator(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def read_events(folder) -> dict[str, list[tuple[int, float]]]:
    """The folder's scalar series, less the ``final/`` ones of its HParams session."""
    acc = _accumulator(folder)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
            if not tag.startswith("final/")}


def read_hparams(folder) -> tuple[dict, dict[str, float], list[int]] | None:
    """What the HParams dashboard reads of a run folder: the hparams of its session start,
    its ``final/`` metrics and their steps; None without a session. Checks that the folder
    holds one session, ended, and no experiment summary (TensorBoard builds one from all
    the runs' sessions)."""
    acc = _accumulator(folder)
    try:
        content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    except KeyError:    # no summary of the plugin in the folder
        return None
    assert set(content) == {metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}
    start = metadata.parse_session_start_info_plugin_data(
        content[metadata.SESSION_START_INFO_TAG])
    hparams = {k: json_format.MessageToDict(v) for k, v in start.hparams.items()}
    finals = {t: acc.Scalars(t) for t in acc.Tags()["scalars"] if t.startswith("final/")}
    assert all(len(e) == 1 for e in finals.values())
    return (hparams, {t: e[0].value for t, e in finals.items()},
            sorted({e[0].step for e in finals.values()}))


def numbers(summary) -> dict[str, float]:
    return {f"final/{k}": v for k, v in summary_numbers(summary).items()}


def assert_same_series(events, history):
    assert set(events) == set(history)
    for name, points in history.items():
        got = events[name]
        assert [s for s, _ in got] == [s for s, _ in points], name
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6,
                                                    nan_ok=True), name


def test_run_logs_every_stored_metric_live_and_export_writes_the_same(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    cfg = {**TINY, "train": {**TINY["train"], "tensorboard": str(tmp_path / "tb")}}
    outcome = run_config(cfg, out_dir=tmp_path / "run", store=store)
    folder = tmp_path / "tb" / f"tiny_tb-{outcome.run_id}"
    assert folder.is_dir()
    stored = store.metrics(outcome.run_id)
    assert {"train_loss", "test_loss", "grad_cosine", "lr"} <= set(stored)
    assert_same_series(read_events(folder), stored)
    # its HParams session: the training settings, the stored summary's numbers at the last step
    run = store.get_run(outcome.run_id)
    hparams, finals, steps = read_hparams(folder)
    assert hparams["optimizer.lr"] == 0.05 and hparams["train.batch_size"] == 5
    assert hparams["model.name"] == "zhu-mlp-1-6-6-6-1" and "name" not in hparams
    assert hparams["train.replacement"] == "false"      # a bool, not the number 0
    # where it ran, wrote and showed progress is no hyper-parameter: every leaf was shown
    assert set(hparams) == set(training_hparams(run["config"]))
    assert not {"train.tensorboard", "train.progress", "train.threads",
                "train.device"} & set(hparams)
    assert {"final/test_loss", "final/train_loss", "final/wall_time"} <= set(finals)
    assert finals == pytest.approx(numbers(run["summary"]), rel=1e-6)
    assert steps == [max(s for points in stored.values() for s, _ in points)]

    assert main(["runs", "export", "--store", str(store.path),
                 "--tensorboard", str(tmp_path / "export")]) == 0
    exported = tmp_path / "export" / f"tiny_tb-{outcome.run_id}"
    assert_same_series(read_events(exported), stored)
    assert read_hparams(exported) == (hparams, finals, steps)
    with pytest.raises(SystemExit):  # neither a file nor --tensorboard
        main(["runs", "export", "--store", str(store.path), "--format", "xml"])
    assert main(["runs", "export", "--store", str(store.path)]) == 2


def test_export_writes_each_ended_runs_hparams_session(tmp_path):
    """From the store: a sweep's run shows its grid point, label and seed, and its summary's
    numbers (tags cleaned as add_scalar cleans them); a run stored before its grid point was
    recorded, its label and seed; a run without a summary, no session."""
    store = RunStore(tmp_path / "s.sqlite")
    sweep = {"experiment": "e", "label": "lr=0.1,widths=[4, 4]", "seed": 1, "run_key": "k1",
             "params": {"optimizer": {"lr": 0.1}, "model": {"widths": [4, 4]}},
             "grid": {"optimizer.lr": 0.1, "model.widths": [4, 4]}}
    older = {k: v for k, v in sweep.items() if k != "grid"} | {"run_key": "k2", "seed": 2}
    summary = {"hessian_top": 3.5, "fp: D": 0.5, "test_acc": float("nan"), "steps": 7,
               "status": "finished", "converged": True}
    ids = []
    for cfg, summ in ((sweep, summary), (older, {"test_loss": 2.0}), (TINY_RUN, None)):
        rid = store.create_run(cfg, name="r")
        store.log_many(rid, [("train_loss", 0, 1.0), ("train_loss", 7, 0.5), ("lr", 3, 0.1)])
        store.complete_run(rid, "finished" if summ else "failed", summary=summ)
        ids.append(rid)
    main(["runs", "export", "--store", str(store.path), "--tensorboard", str(tmp_path / "tb")])
    hparams, finals, steps = read_hparams(tmp_path / "tb" / f"r-{ids[0]}")
    assert hparams == {"optimizer.lr": 0.1, "model.widths": "[4, 4]", "seed": 1,
                       "label": "lr=0.1,widths=[4, 4]"}
    assert finals == pytest.approx({"final/hessian_top": 3.5, "final/fp__D": 0.5,
                                    "final/test_acc": float("nan"), "final/steps": 7},
                                   nan_ok=True)
    assert steps == [7]
    assert read_hparams(tmp_path / "tb" / f"r-{ids[1]}") == (
        {"label": "lr=0.1,widths=[4, 4]", "seed": 2}, {"final/test_loss": 2.0}, [7])
    assert read_hparams(tmp_path / "tb" / f"r-{ids[2]}") is None
    for rid in ids:     # the curves as they were
        assert_same_series(read_events(tmp_path / "tb" / f"r-{rid}"), store.metrics(rid))
    store.close()


def test_resumed_run_rewrites_its_events_without_duplicates(tmp_path):
    torch.set_num_threads(1)
    built = build_from_config(TINY)
    tb = TensorBoardLogger(tmp_path / "tb")
    kw = {**built.train_kwargs, "epochs": 1}
    train(*built[:4], callbacks=[*built.callbacks, tb], checkpoint_dir=tmp_path / "ck", **kw)
    stale = summary_writer(tmp_path / "tb")  # what a killed process wrote after its checkpoint
    stale.add_scalar("train_loss", 123.0, global_step=999)
    stale.close()
    res = train(*built[:4], callbacks=[*built.callbacks, tb], checkpoint_dir=tmp_path / "ck",
                resume=True, **{**kw, "epochs": 2})
    assert res.epochs_completed == 2
    events = read_events(tmp_path / "tb")
    assert_same_series(events, res.history)
    assert 999 not in [s for s, _ in events["train_loss"]]


def test_a_resumed_run_s_events_keep_the_times_its_restored_points_were_logged(tmp_path):
    """A resume rewrote its restored points at the resume's time: TensorBoard's wall axis
    jumped back. They keep the times the store holds for them, the steps after the
    checkpoint the times they are logged."""
    import sqlite3

    torch.set_num_threads(1)
    built = build_from_config(TINY)
    store = RunStore(tmp_path / "s.sqlite")
    tb = TensorBoardLogger(tmp_path / "tb")
    kw = {**built.train_kwargs, "epochs": 1}
    first = train(*built[:4], callbacks=[*built.callbacks, tb], checkpoint_dir=tmp_path / "ck",
                  store=store, **kw)
    with sqlite3.connect(tmp_path / "s.sqlite") as db:    # logged long ago, one apart
        db.execute("UPDATE metrics SET wall = 1000.0 + rowid")
    logged = store.metrics(first.run_id, wall=True)
    res = train(*built[:4], callbacks=[*built.callbacks, tb], checkpoint_dir=tmp_path / "ck",
                store=store, resume=True, **{**kw, "epochs": 2})
    acc = _accumulator(tmp_path / "tb")
    assert_same_series(read_events(tmp_path / "tb"), res.history)
    for name, rows in logged.items():
        events = [(e.step, e.wall_time) for e in acc.Scalars(name)]
        assert events[:len(rows)] == [(s, w) for s, _, w in rows], name
        assert all(w > 1e9 for _, w in events[len(rows):]), name    # now, after the resume
    assert len(acc.Scalars("train_loss")) > len(logged["train_loss"])
    store.close()


def test_a_series_the_store_holds_at_other_steps_keeps_no_stored_times():
    # a run recorded anew at its resume holds none of its restored points: written now
    history = {"a": [(0, 1.0), (2, 0.5)], "b": [(0, 3.0)], "c": [(1, 2.0)]}
    stored = {"a": [(0, 1.0, 10.0), (2, 0.5, 20.0)], "b": [(1, 3.0, 30.0)]}
    assert logged_times(history, stored) == {"a": [(0, 1.0, 10.0), (2, 0.5, 20.0)],
                                             "b": [(0, 3.0)], "c": [(1, 2.0)]}


def test_a_second_run_into_the_same_folder_warns(tmp_path):
    """From Python, two runs logged to one folder read back as one run with every step twice:
    the second says so; a run in a folder of its own (``run=``) does not."""
    torch.set_num_threads(1)
    built = build_from_config({**TINY, "train": {**TINY["train"], "epochs": 1}})
    kw = {**built.train_kwargs, "epochs": 1}
    train(*built[:4], callbacks=[TensorBoardLogger(tmp_path)], **kw)
    with pytest.warns(UserWarning, match=f"{tmp_path} already holds TensorBoard event files"):
        train(*built[:4], callbacks=[TensorBoardLogger(tmp_path)], **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(*built[:4], callbacks=[TensorBoardLogger(tmp_path, run="seed-1")], **kw)


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    # outside the run's config: a run stopped on it is continued by a resume once installed
    with pytest.raises(ResumableError, match="needs the tensorboard package"):
        summary_writer(tmp_path)


def test_a_training_run_without_tensorboard_stops_before_it_is_recorded(tmp_path, monkeypatch):
    # the run was recorded, then failed at its start, told to start a new run with a corrected
    # config, though installing the package and resuming it would do
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    cfg = {**TINY, "train": {**TINY["train"], "tensorboard": str(tmp_path / "tb")}}
    store = tmp_path / "runs.sqlite"
    with pytest.raises(UserError, match="needs the tensorboard package: python -m pip install "
                                        r"tensorboard \(or the sgdlab\[tensorboard\] extra\)$"):
        run_config(cfg, out_dir=tmp_path / "run", store=str(store))
    assert not store.exists() and not (tmp_path / "run").exists()


def _tiny_experiment(path) -> None:
    """jastrzebski-ratio-grid at smoke scale, shrunk to 2 runs of a tiny MLP."""
    import yaml

    from sgdlab.experiments.spec import catalogue_files

    raw = yaml.safe_load(catalogue_files()["jastrzebski-ratio-grid"].read_text())
    raw["scales"]["smoke"]["base"].update(
        dataset={"n_train": 128, "n_test": 64}, epochs=2, model={"width": 8, "depth": 1},
        final=[{"kind": "hessian_top", "samples": 64, "tol": 0.01, "num_iter": 10}])
    raw["scales"]["smoke"]["grid"] = {"optimizer.lr": [0.05, 0.2], "batch_size": [32]}
    # without the Frobenius measurement the analysis must not ask for it (the plan refuses)
    raw["options"]["metrics"].remove("hessian_frobenius")
    del raw["options"]["expect"]["hessian_frobenius"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.parametrize("workers", [1, 2])
def test_an_experiment_writes_every_runs_metrics_live(tmp_path, monkeypatch, workers):
    """`sgdlab run --tensorboard DIR`: each run's folder holds exactly its stored series, the
    rows streamed while it ran (in this process or a worker's) and those sent at its end."""
    monkeypatch.setenv("SGDLAB_THREADS", "1")
    exp, store_path, tb = tmp_path / "grid.yaml", tmp_path / "s.sqlite", tmp_path / "tb"
    _tiny_experiment(exp)
    assert main(["run", "--config", str(exp), "--scale", "smoke", "--store", str(store_path),
                 "--out", str(tmp_path / "out"), "--workers", str(workers),
                 "--tensorboard", str(tb)]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    store = RunStore(store_path)
    try:
        runs = store.list_runs()
        assert len(runs) == 2 and len(list(tb.iterdir())) == 2
        for run in runs:
            stored = store.metrics(run["id"])
            assert {"train_loss", "test_acc", "lr"} <= set(stored)
            (folder,) = tb.glob(f"*-{run['id']}")
            assert_same_series(read_events(folder), stored)
            # the HParams dashboard's row: results.json's grid point, label and seed, and
            # the stored summary as final values
            (point,) = [r for r in results["runs"] if r["run_id"] == run["id"]]
            hparams, finals, _ = read_hparams(folder)
            assert hparams == {**point["grid"], "label": point["label"], "seed": point["seed"]}
            assert set(point["grid"]) == {"optimizer.lr", "batch_size"}
            assert "final/hessian_top" in finals
            assert finals == pytest.approx(numbers(run["summary"]), rel=1e-6)
    finally:
        store.close()
    if workers == 1:    # the sweep again, nothing to run: the stored runs' curves are written
        from sgdlab.experiments.spec import load_experiment
        from sgdlab.experiments.sweep import run_sweep

        said = []
        run_sweep(load_experiment(exp, "smoke").expand(), store_path=str(store_path),
                  progress=said.append, tensorboard=tmp_path / "tb2")
        assert said == [f"all 2 runs already in the store ({store_path}): nothing to run",
                        f"the 2 stored runs' metrics written to TensorBoard in {tmp_path / 'tb2'}"]
        for folder in tb.iterdir():
            assert read_events(tmp_path / "tb2" / folder.name) == read_events(folder)
            assert read_hparams(tmp_path / "tb2" / folder.name) == read_hparams(folder)


def test_an_experiment_without_tensorboard_stops_before_anything_is_made(tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    exp, store_path = tmp_path / "grid.yaml", tmp_path / "s.sqlite"
    _tiny_experiment(exp)
    assert main(["run", "--config", str(exp), "--scale", "smoke", "--store", str(store_path),
                 "--out", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "needs the tensorboard package" in capsys.readouterr().err
    assert not store_path.exists() and not (tmp_path / "out").exists()


def test_run_hparams_folder_and_final_metrics_written_by_hand():
    """The pure helpers, against values written out by hand: a config's leaves by dotted key,
    an empty mapping a leaf ("{}"), bools and lists as sorted JSON, None and ``name`` left
    out; a sweep run's grid point, label and seed; a folder name with the characters a path
    cannot take replaced and its ends trimmed; ``final/`` tags cleaned as add_scalar cleans
    them; the last step of any series."""
    config = {"name": "n", "optimizer": {"name": "sgd", "lr": 0.1, "nesterov": False,
                                         "betas": [0.9, 0.99], "decay": None},
              "model": {"options": {}}, "seed": 3}
    assert run_hparams(config) == {"optimizer.name": "sgd", "optimizer.lr": 0.1,
                                   "optimizer.nesterov": "false",
                                   "optimizer.betas": "[0.9, 0.99]", "model.options": "{}",
                                   "seed": 3}
    assert run_hparams({"run_key": "k", "grid": {"a.b": True}, "label": "L", "seed": None,
                        "name": "x"}) == {"a.b": "true", "label": "L"}
    assert run_folder("root", "id7", " my run/1 ") == run_folder("root", "id7", "my_run_1")
    assert run_folder("root", "id7", "my run/1") == Path("root") / "my_run_1-id7"
    assert run_folder("root", "id7", "///") == run_folder("root", "id7") == Path("root/id7")
    assert final_metrics({"fp: D": 1, "a/b-c.d": 2.5, "status": "finished"}) == {
        "final/fp__D": 1.0, "final/a/b-c.d": 2.5}
    assert last_step({"a": [(0, 1.0), (9, 2.0)], "b": [(4, 1.0)], "c": []}) == 9
    assert last_step({}) == 0


def test_exporting_a_run_again_replaces_its_events(tmp_path):
    """A second export to the same folder (the run continued, or the same command run twice)
    writes each point once: the folder's earlier event files are removed first."""
    store = RunStore(tmp_path / "s.sqlite")
    rid = store.create_run(TINY_RUN, name="r")
    store.log_many(rid, [("train_loss", 0, 1.0), ("train_loss", 3, 0.5)])
    for _ in range(2):
        export_runs(store, tmp_path / "tb")
    assert read_events(tmp_path / "tb" / f"r-{rid}") == {"train_loss": [(0, 1.0), (3, 0.5)]}
    store.close()


def test_an_exported_run_keeps_the_times_its_rows_were_logged(tmp_path):
    """Each point is written at its stored wall time, as a live run's are: TensorBoard's wall
    and relative axes showed every point of an exported run at the moment of the export."""
    store = RunStore(tmp_path / "s.sqlite")
    rid = store.create_run(TINY_RUN, name="r")
    store.log_many(rid, [("train_loss", 0, 1.0, 1000.0), ("train_loss", 3, 0.5, 1060.0),
                         ("hess/top_1", 3, 2.0, 1061.5)])
    store.complete_run(rid, "finished", summary={"test_loss": 0.5})
    export_runs(store, tmp_path / "tb")
    acc = _accumulator(tmp_path / "tb" / f"r-{rid}")
    assert [(e.step, e.wall_time) for e in acc.Scalars("train_loss")] == [(0, 1000.0),
                                                                          (3, 1060.0)]
    assert [e.wall_time for e in acc.Scalars("hess/top_1")] == [1061.5]
    # the final values beside the last row logged
    assert [(e.step, e.wall_time) for e in acc.Scalars("final/test_loss")] == [(3, 1061.5)]
    store.close()


def test_a_live_runs_session_sits_at_its_last_step_whatever_order_rows_came_in(tmp_path):
    """Rows of several series arrive interleaved (a later step of one before an earlier one
    of another): the HParams session's final metrics sit at the run's last step, 9, not at
    the step of the last row written."""
    live = LiveRuns(tmp_path)
    live.write("id1", "r", [("train_loss", 0, 1.0), ("train_loss", 9, 0.5)])
    live.write("id1", "r", [("test_loss", 4, 0.7)])
    live.finish("id1", "r", {"seed": 1}, {"test_loss": 0.7})
    live.close_all()
    hparams, finals, steps = read_hparams(run_folder(tmp_path, "id1", "r"))
    assert (hparams, finals, steps) == ({"seed": 1}, {"final/test_loss": pytest.approx(0.7)},
                                        [9])
