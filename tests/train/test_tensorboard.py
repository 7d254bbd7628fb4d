"""TensorBoard event files, read back: live logging from a run and export from the store."""
from __future__ import annotations

import sys

import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator

from sgdlab.cli.main import main
from sgdlab.config import build_from_config
from sgdlab.config.runner import run_config
from sgdlab.errors import UserError
from sgdlab.store import RunStore
from sgdlab.testing import TINY_RUN
from sgdlab.train import train
from sgdlab.train.tensorboard import TensorBoardLogger, summary_writer

TINY = {**TINY_RUN, "name": "tiny tb",
        "train": {"epochs": 2, "batch_size": 5, "progress": False, "threads": 1},
        "measure": [{"name": "dynamics", "every": 2}]}


def read_events(folder) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


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

    assert main(["runs", "export", "--store", str(store.path),
                 "--tensorboard", str(tmp_path / "export")]) == 0
    exported = tmp_path / "export" / f"tiny_tb-{outcome.run_id}"
    assert_same_series(read_events(exported), stored)
    with pytest.raises(SystemExit):  # neither a file nor --tensorboard
        main(["runs", "export", "--store", str(store.path), "--format", "xml"])
    assert main(["runs", "export", "--store", str(store.path)]) == 2


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


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UserError, match="needs the tensorboard package"):
        summary_writer(tmp_path)


def _tiny_experiment(path) -> None:
    """jastrzebski-ratio-grid at smoke scale, shrunk to 2 runs of a tiny MLP."""
    import yaml

    from sgdlab.experiments.spec import catalogue_files

    raw = yaml.safe_load(catalogue_files()["jastrzebski-ratio-grid"].read_text())
    raw["scales"]["smoke"]["base"].update(
        dataset={"n_train": 128, "n_test": 64}, epochs=2, model={"width": 8, "depth": 1},
        final=[{"kind": "hessian_top", "samples": 64, "tol": 0.01, "num_iter": 10}])
    raw["scales"]["smoke"]["grid"] = {"optimizer.lr": [0.05, 0.2], "batch_size": [32]}
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
    store = RunStore(store_path)
    try:
        runs = store.list_runs()
        assert len(runs) == 2 and len(list(tb.iterdir())) == 2
        for run in runs:
            stored = store.metrics(run["id"])
            assert {"train_loss", "test_acc", "lr"} <= set(stored)
            (folder,) = tb.glob(f"*-{run['id']}")
            assert_same_series(read_events(folder), stored)
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


def test_an_experiment_without_tensorboard_stops_before_anything_is_made(tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    exp, store_path = tmp_path / "grid.yaml", tmp_path / "s.sqlite"
    _tiny_experiment(exp)
    assert main(["run", "--config", str(exp), "--scale", "smoke", "--store", str(store_path),
                 "--out", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "needs the tensorboard package" in capsys.readouterr().err
    assert not store_path.exists() and not (tmp_path / "out").exists()
