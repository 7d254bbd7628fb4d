"""``sgdlab runs compare`` on the learning rate: the lr of the last step each run took and its
mean over the steps, not the sample logged after the last step, which no step used."""
from __future__ import annotations

import pytest

from sgdlab.cli.main import main
from sgdlab.cli.runs import lr_over_steps
from sgdlab.store import RunStore

# cosine-cyclic (Musso eq. (20), period 3 epochs, η = 0.1) over 4 epochs of 5 steps: the
# loop logs the lr at step 0 and after each epoch; the sample at step 20 is the next cycle's
CYCLIC = [(0, 0.1), (5, 0.075), (10, 0.025), (15, 0.0), (20, 0.025)]


def test_lr_over_steps_weighs_each_sample_by_the_steps_it_held():
    assert lr_over_steps(CYCLIC, {"summary": {"steps": 20}}) == pytest.approx((0.0, 0.05))
    # a run still going (no summary): its steps so far, up to its last sample's step
    assert lr_over_steps(CYCLIC[:3], {"summary": None}) == pytest.approx((0.075, 0.0875))
    # uneven epochs (a last, shorter one) and a step count between samples
    pts = [(0, 1.0), (4, 0.5), (6, 0.25)]
    assert lr_over_steps(pts, {"summary": {"steps": 6}}) == pytest.approx((0.5, 5.0 / 6))
    assert lr_over_steps(pts, {"summary": {"steps": 5}}) == pytest.approx((0.5, 4.5 / 5))
    assert lr_over_steps([], {"summary": {"steps": 5}}) is None
    assert lr_over_steps([(0, 1.0)], {"summary": {"steps": 0}}) is None


def test_runs_compare_shows_the_last_step_s_lr_and_the_mean(tmp_path, capsys):
    store_path = tmp_path / "runs.sqlite"
    with RunStore(store_path) as store:
        ids = []
        for name, lrs in (("cyclic", CYCLIC), ("constant", [(s, 0.05) for s, _ in CYCLIC])):
            run_id = store.create_run({"name": name}, name=name, env={})
            store.log_many(run_id, [("lr", s, v) for s, v in lrs])
            store.complete_run(run_id, "finished", summary={"steps": 20})
            ids.append(run_id)
    assert main(["runs", "compare", *ids, "--metric", "lr", "--store", str(store_path)]) == 0
    rows = {line.split("  ")[0]: line.split()[-2:]
            for line in capsys.readouterr().out.splitlines()}
    assert rows["last-step lr"] == ["0", "0.05"] and rows["mean lr"] == ["0.05", "0.05"]
    assert "final lr" not in rows


def test_lr_over_steps_of_a_parle_run_reads_each_round_s_lr_at_its_end():
    # `sgdlab parle` logs round r's lr at its end, step r·L (L = 5 here): the sample at the
    # final step is the lr of the last round taken, and each sample held over the L steps
    # before it (an lr_factor of 0.1 from round 3 on)
    parle = {"config": {"method": "parle"}, "summary": {"steps": 15}}
    pts = [(5, 0.1), (10, 0.1), (15, 0.01)]
    assert lr_over_steps(pts, parle) == pytest.approx((0.01, 0.07))
    # one round: its lr, not nothing
    assert lr_over_steps(pts[:1], {**parle, "summary": {"steps": 5}}) == pytest.approx(
        (0.1, 0.1))
    # still going: up to its last sample's step
    assert lr_over_steps(pts[:2], {**parle, "summary": None}) == pytest.approx((0.1, 0.1))


def test_lr_over_steps_of_a_stopped_run_reads_its_steps_from_its_other_series():
    # interrupted in its third epoch (no summary), at step 13 by its per-step instrument: the
    # sample at step 10 is the lr its last steps took, not one no step used
    stopped = {"summary": None}
    assert lr_over_steps(CYCLIC[:3], stopped, last_step=13) == pytest.approx(
        (0.025, (0.1 * 5 + 0.075 * 5 + 0.025 * 3) / 13))
    # its other series ending at the last sample: as without them
    assert lr_over_steps(CYCLIC[:3], stopped, last_step=10) == pytest.approx((0.075, 0.0875))
    # a finished run's summary steps stand
    assert lr_over_steps(CYCLIC, {"summary": {"steps": 20}}, last_step=20) == pytest.approx(
        (0.0, 0.05))


def test_runs_compare_reads_a_stopped_run_s_steps_from_its_other_series(tmp_path, capsys):
    store_path = tmp_path / "runs.sqlite"
    with RunStore(store_path) as store:
        run_id = store.create_run({"name": "cut"}, name="cut", env={})
        store.log_many(run_id, [("lr", s, v) for s, v in CYCLIC[:3]]
                       + [("grad_norm", s, 1.0) for s in range(1, 14)])
        store.set_status(run_id, "interrupted", "KeyboardInterrupt")
        done = store.create_run({"name": "done"}, name="done", env={})
        store.log_many(done, [("lr", s, v) for s, v in CYCLIC])
        store.complete_run(done, "finished", summary={"steps": 20})
    assert main(["runs", "compare", run_id, done, "--metric", "lr", "--store",
                 str(store_path)]) == 0
    rows = {line.split("  ")[0]: line.split()[-2:]
            for line in capsys.readouterr().out.splitlines()}
    # the interrupted run's last steps, 10 to 13, took the sample at step 10
    assert rows["last-step lr"] == ["0.025", "0"]


def test_runs_compare_writes_a_row_s_numbers_in_one_precision(tmp_path, capsys):
    store_path = tmp_path / "runs.sqlite"
    with RunStore(store_path) as store:
        ids = []
        for name, loss, status in (("a", 2.312, "finished"), ("b", 2.31, "running"),
                                   ("c", 2.3, "finished")):
            run_id = store.create_run({"name": name}, name=name, env={})
            store.log_many(run_id, [("test_loss", 0, 3.0), ("test_loss", 10, loss)])
            if status == "finished":
                store.complete_run(run_id, "finished", summary={"steps": 10})
            ids.append(run_id)
    assert main(["runs", "compare", *ids, "--metric", "test_loss", "--store",
                 str(store_path)]) == 0
    (row,) = [ln for ln in capsys.readouterr().out.splitlines()
              if ln.startswith("final test_loss")]
    # 2.310, not 2.31 beside 2.312: the zero is a digit the row's other numbers have
    assert row.split()[2:] == ["2.312", "2.310", "@10", "2.300"]


def test_a_row_s_numbers_share_their_significant_digits():
    from sgdlab.cli.runs import _fmt_row

    assert _fmt_row([2.312, 2.31]) == ["2.312", "2.310"]
    assert _fmt_row([0.1, 0.05, 0.0]) == ["0.1", "0.05", "0"]   # no row needs a fourth digit
    assert _fmt_row([1.5e-5, 2e-5]) == ["1.5e-05", "2.0e-05"]
    assert _fmt_row([float("nan"), None, 3, 2.5, 100.0]) == ["nan", "", "3", "2.50", "100"]
