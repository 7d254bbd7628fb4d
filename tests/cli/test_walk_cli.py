"""``sgdlab walk`` end to end on a few steps: files written, numbers consistent."""
from __future__ import annotations

import json

import pytest

from sgdlab.cli.main import main
from sgdlab.cli.train import EXIT_DIVERGED


def test_walk_command_writes_plots_tables_and_results(tmp_path, capsys):
    from sgdlab.report.figures.charts import plt

    out = tmp_path / "walk"
    before = set(plt.get_fignums())
    rc = main(["walk", "--steps", "6", "--widths", "16", "--batch-size", "256",
               "--points", "5", "--eval-subset", "300", "--out", str(out)])
    assert rc == 0
    # each figure closed once saved: pyplot would hold them in a notebook or a long process
    assert set(plt.get_fignums()) == before
    for f in ("walk.png", "walk_barriers.csv", "walk_barriers.md", "results.json",
              "interpolation.png", "trajectory.png"):
        assert (out / f).exists(), f
    res = json.loads((out / "results.json").read_text())
    gd, sgd = res["runs"]["GD"], res["runs"]["SGD"]
    assert gd["steps"] == sgd["steps"] == 6 and gd["steps_interpolated"] == 6
    assert gd["steps_epoch1"] == 1 and sgd["steps_epoch1"] == 6  # 1437 / 256 -> 6 per epoch
    assert -1 <= gd["grad_cosine_mean"] <= 1
    # the recorded grid is α = k/10 itself, in float64 (a float32 grid had 0.10000001639)
    assert res["interpolation_gd_to_sgd"]["alphas"] == [k / 10 for k in range(-10, 21)]
    text = capsys.readouterr().out
    assert "barriers in epoch 1" in text
    # GD's table has a row per step (150 by default): where the files are is said after it
    assert text.splitlines()[-1].startswith(f"wrote {out}/walk.png, walk_barriers.md/.csv")
    assert main(["walk", "--steps", "1", "--out", str(out)]) == 2


def test_without_out_the_walk_writes_under_sgdlab_out(tmp_path, capsys, monkeypatch):
    # --out was required, unlike `sgdlab run`'s sgdlab-out/NAME-SCALE
    monkeypatch.chdir(tmp_path)
    assert main(["walk", "--optimizer", "gd", "--steps", "2", "--widths", "4", "--points", "1",
                 "--eval-subset", "50"]) == 0
    assert (tmp_path / "sgdlab-out" / "walk" / "results.json").is_file()
    assert capsys.readouterr().out.splitlines()[-1].startswith("wrote sgdlab-out/walk/walk.png")


def test_walk_refuses_an_unknown_dataset_before_it_makes_the_folder(tmp_path, capsys):
    assert main(["walk", "--data", "digitz", "--steps", "2", "--out", str(tmp_path / "w")]) == 2
    assert "did you mean digits?" in capsys.readouterr().err
    assert main(["walk", "--widths", "0", "--steps", "2", "--out", str(tmp_path / "w")]) == 2
    assert "--widths must each be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_walk_tells_a_data_file_where_its_walk_is_measured(tmp_path, capsys):
    # "Unknown dataset 'data.pt'" listed the named datasets and no way for the file
    (tmp_path / "data.pt").write_bytes(b"")
    assert main(["walk", "--data", str(tmp_path / "data.pt"), "--out", str(tmp_path / "w")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "trains its own MLP on a named dataset" in err
    assert "step_interpolation and dynamics instruments" in err and "$SGDLAB_PLUGINS" in err
    assert not (tmp_path / "w").exists()


def test_walk_refuses_token_windows_naming_the_data_it_takes(tmp_path, capsys):
    # a dtype RuntimeError traceback from the MLP's first layer, after the folder was made
    assert main(["walk", "--data", "text_lines", "--steps", "2", "--out",
                 str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sgdlab: error: sgdlab walk trains an MLP on features, but "
                          "text_lines holds torch.int64 token windows shaped (")
    assert err.rstrip().endswith("give a dataset of images or features (digits, mnist_small, "
                                 "mnist1d, ...)")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("flag, value", [("--eval-subset", "0"), ("--threads", "-1"),
                                         ("--threads", "0")])
def test_walk_refuses_a_count_below_one_before_it_makes_the_folder(tmp_path, capsys, flag,
                                                                   value):
    # --eval-subset 0 was a traceback after the folder was made, --threads -1 torch's, and
    # --threads 0 ran on torch's default threads
    assert main(["walk", flag, value, "--steps", "2", "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be >= 1, got {value}" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_walk_refuses_a_seed_a_run_config_refuses_before_it_makes_the_folder(tmp_path, capsys,
                                                                             seed):
    assert main(["walk", "--seed", seed, "--steps", "2", "--out", str(tmp_path / "w")]) == 2
    assert capsys.readouterr().err == (f"sgdlab: error: --seed must be an int in 0..2**32 - 1 "
                                       f"(as a run config's seed), got {seed}\n")
    assert not (tmp_path / "w").exists()


def test_walk_names_a_width_below_one_by_its_option(tmp_path, capsys):
    # the model's message named "option 'widths[1]'", no option of sgdlab walk
    assert main(["walk", "--widths", "16", "0", "--steps", "2", "--out",
                 str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err == "sgdlab: error: --widths must each be >= 1, got 16 0\n"
    assert not (tmp_path / "w").exists()


def test_walk_and_landscape_leave_a_training_runs_folder_alone(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "digits-mlp", "--set", "train.epochs=1", "--no-progress",
                 "--store", str(tmp_path / "s.sqlite"), "--out", str(run)]) == 0
    before = (run / "results.json").read_bytes()
    for argv in (["walk", "--steps", "2"], ["landscape", "pde", "--quick"]):
        assert main([*argv, "--out", str(run)]) == 2
        assert "holds a training run (sgdlab train)" in capsys.readouterr().err
    assert (run / "results.json").read_bytes() == before


def test_a_batch_size_above_the_training_set_is_said_to_be_the_full_set(tmp_path, capsys):
    # digits has 1437 training examples: B=5000 was printed (and recorded) for a full batch
    out = tmp_path / "walk"
    assert main(["walk", "--optimizer", "sgd", "--steps", "2", "--widths", "8",
                 "--batch-size", "5000", "--points", "1", "--eval-subset", "50",
                 "--out", str(out)]) == 0
    (line,) = [s for s in capsys.readouterr().out.splitlines() if s.startswith("SGD: ")]
    assert line.startswith("SGD: 2 steps (B=1437, the full training set; lr=0.5), ")
    sgd = json.loads((out / "results.json").read_text())["runs"]["SGD"]
    assert (sgd["batch_size"], sgd["full_batch"], sgd["steps_per_epoch"]) == (1437, True, 1)


def test_a_walk_that_diverges_says_so_and_writes_its_results(tmp_path, capsys):
    # a diverged run has no final loss nor cosines: the summary line was a TypeError traceback;
    # and it exited 0, where `sgdlab train` exits 3 for a run that diverged
    out = tmp_path / "walk"
    assert main(["walk", "--optimizer", "gd", "--steps", "2", "--widths", "4", "--points", "1",
                 "--eval-subset", "50", "--lr", "1e30", "--out", str(out)]) == EXIT_DIVERGED
    text = capsys.readouterr().out
    assert "grad cosine mean n/a" in text and "last finite train loss" in text
    assert "GD: diverged: non-finite mini-batch loss" in text
    assert json.loads((out / "results.json").read_text())["runs"]["GD"]["status"] == "diverged"


def test_a_walk_whose_run_diverges_exits_as_train_does(tmp_path, capsys, monkeypatch):
    # it exited 0, where `sgdlab train` exits 3 for a diverged run: scripts took it as finished
    import torch

    from sgdlab.data import Dataset

    monkeypatch.setattr("sgdlab.data.load_dataset", lambda name, **kw: Dataset(
        torch.linspace(-1, 1, 16).reshape(8, 2), torch.arange(8) % 2))
    out = tmp_path / "walk"
    assert main(["walk", "--optimizer", "gd", "--steps", "2", "--widths", "2", "--points", "1",
                 "--lr", "1e30", "--out", str(out)]) == EXIT_DIVERGED
    assert "GD: diverged: non-finite mini-batch loss" in capsys.readouterr().out
    # everything is written all the same
    assert json.loads((out / "results.json").read_text())["runs"]["GD"]["status"] == "diverged"
    assert (out / "walk.png").is_file() and (out / "history.json").is_file()


def test_each_run_takes_its_own_lr_and_its_summary_is_that_of_its_recorded_series(tmp_path,
                                                                                 capsys):
    """--lr-gd and --lr-sgd reach GD's and SGD's runs: GD at 1e30 diverges at its first step,
    SGD at 2 finishes, and the walk exits 3 as soon as any of its runs diverged. SGD's
    gradient-cosine mean, median and share below −0.9, its barriers and mean height above
    the valley floor are those of history.json's per-step series, computed by hand (the
    median of its 8 cosines was the upper of the middle two); --points 3 evaluates K + 2 = 5
    points per step."""
    out = tmp_path / "walk"
    assert main(["walk", "--steps", "9", "--widths", "8", "--batch-size", "16", "--points",
                 "3", "--eval-subset", "60", "--lr-gd", "1e30", "--lr-sgd", "2", "--out",
                 str(out)]) == EXIT_DIVERGED
    lines = capsys.readouterr().out.splitlines()
    assert any(s.startswith("GD: 1 step (B=1437, the full training set; lr=1e+30)")
               for s in lines)
    assert any(s.startswith("SGD: 9 steps (B=16, lr=2.0)") for s in lines)
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert (runs["GD"]["lr"], runs["GD"]["status"]) == (1e30, "diverged")
    sgd = runs["SGD"]
    assert (sgd["lr"], sgd["status"]) == (2.0, "finished")
    history = json.loads((out / "history.json").read_text())["SGD"]
    cos = sorted(v for _, v in history["grad_cosine"])
    assert len(cos) == 8      # between the gradients of steps 1..9
    assert sgd["grad_cosine_mean"] == pytest.approx(sum(cos) / len(cos), rel=1e-12)
    assert sgd["grad_cosine_median"] == pytest.approx((cos[3] + cos[4]) / 2, rel=1e-12)
    assert sgd["grad_cosine_frac_below_-0.9"] == sum(c < -0.9 for c in cos) / len(cos)
    barrier = [v for _, v in history["walk_barrier"]]
    height = [v for _, v in history["walk_height"]]
    assert sgd["steps_interpolated"] == len(barrier) == 9
    assert sgd["barriers_total"] == sum(barrier)
    assert sgd["mean_height_above_floor"] == pytest.approx(sum(height) / 9, rel=1e-12)
    assert sorted(k for k in history if k.startswith("walk_loss_k")) == [
        f"walk_loss_k{i:02d}" for i in range(5)]


def test_points_and_seed_reach_the_walk(tmp_path, capsys):
    """--points K: K + 2 losses per step (the iterates and K points between them); --seed S:
    the MLP's initialisation and the evaluation subset are drawn with S (the help's
    "initialisation and sampling seed"), so the first point of step 0 is the loss of the model
    torch.manual_seed(S) builds on the subset of 50 examples drawn with S."""
    import torch
    from torch import nn

    from sgdlab.data import load_dataset
    from sgdlab.models import build_model
    from sgdlab.train.callbacks import train_subset

    out = tmp_path / "walk"
    assert main(["walk", "--optimizer", "gd", "--steps", "2", "--widths", "4", "--points",
                 "2", "--eval-subset", "50", "--seed", "7", "--out", str(out)]) == 0
    capsys.readouterr()
    history = json.loads((out / "history.json").read_text())["GD"]
    assert sorted(k for k in history if k.startswith("walk_loss_k")) == [
        f"walk_loss_k{i:02d}" for i in range(2 + 2)]
    data = load_dataset("digits")
    torch.manual_seed(7)
    model = build_model("mlp", data.input_shape, data.num_outputs, widths=[4])
    x, y = train_subset(data, 50, 7)
    with torch.no_grad():
        loss = float(nn.CrossEntropyLoss()(model(x), y))
    assert history["walk_loss_k00"][0] == [0, pytest.approx(loss, rel=1e-5)]
