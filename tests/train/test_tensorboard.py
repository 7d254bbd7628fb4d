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
from sgdlab.train import train
from sgdlab.train.tensorboard import TensorBoardLogger, summary_writer

TINY = {
    "name": "tiny tb",
    "data": {"name": "cubic", "seed": 0},
    "model": {"name": "zhu-mlp-1-6-6-6-1"},
    "optimizer": {"name": "sgd", "lr": 0.05},
    "train": {"epochs": 2, "batch_size": 5, "progress": False, "threads": 1},
    "measure": [{"name": "dynamics", "every": 2}],
}


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
