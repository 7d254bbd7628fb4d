"""``sgdlab runs compare`` on the learning rate: the lr of the last step each run took and its
mean over the steps, not the sample logged after the last step, which no step used."""
from __future__ import annotations

from sgdlab.cli.main import main
from sgdlab.store import RunStore

# cosine-cyclic (Musso eq. (20), period 3 epochs, η = 0.1) over 4 epochs of 5 steps: the
# loop logs the lr at step 0 and after each epoch; the sample at step 20 is the next cycle's
CYCLIC = [(0, 0.1), (5, 0.075), (10, 0.025), (15, 0.0), (20, 0.025)]


def _store_runs(store_path, *runs) -> list[str]:
    """Stores each ``(name, [(metric, step, value), ...], status, summary)`` as a run named
    and configured by its name, ended with that status (``None``: left running); their ids."""
    ids = []
    with RunStore(store_path) as store:
        for name, rows, status, summary in runs:
            run_id = store.create_run({"name": name}, name=name, env={})
            store.log_many(run_id, rows)
            if status is not None:
                store.complete_run(run_id, status, summary=summary)
            ids.append(run_id)
    return ids


def _final_row(out: str, metric: str) -> list[str]:
    """The cells of the ``final METRIC`` row of the table ``runs compare`` printed."""
    (row,) = [ln for ln in out.splitlines() if ln.startswith(f"final {metric}")]
    return row.split()[2:]


def test_runs_compare_shows_the_last_step_s_lr_and_the_mean(tmp_path, capsys):
    store_path = tmp_path / "runs.sqlite"
    constant = [(s, 0.05) for s, _ in CYCLIC]
    ids = _store_runs(store_path, *((name, [("lr", s, v) for s, v in lrs], "finished",
                                     {"steps": 20})
                                    for name, lrs in (("cyclic", CYCLIC),
                                                      ("constant", constant))))
    assert main(["runs", "compare", *ids, "--metric", "lr", "--store", str(store_path)]) == 0
    rows = {line.split("  ")[0]: line.split()[-2:]
            for line in capsys.readouterr().out.splitlines()}
    assert rows["last-step lr"] == ["0", "0.05"] and rows["mean lr"] == ["0.05", "0.05"]
    assert "final lr" not in rows


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


def test_runs_compare_plots_the_lr_its_table_reads_of_a_parle_and_a_plain_run(
        tmp_path, capsys, monkeypatch):
    """``--plot`` draws each run's lr as its steps took it, from its record (a Parle run logs
    each round's lr at its end): the curve's last value is the table's last-step lr."""
    import matplotlib.pyplot as plt

    import sgdlab.report.figures.training as training

    store_path = tmp_path / "runs.sqlite"
    with RunStore(store_path) as store:
        plain = store.create_run({"name": "plain"}, name="plain", env={})
        store.log_many(plain, [("lr", s, v) for s, v in CYCLIC])
        store.complete_run(plain, "finished", summary={"steps": 20})
        parle = store.create_run({"name": "parle", "method": "parle"}, name="parle", env={})
        store.log_many(parle, [("lr", 5, 0.1), ("lr", 10, 0.1), ("lr", 15, 0.01)])
        store.complete_run(parle, "finished", summary={"steps": 15})
    figs = []
    draw = training.compare_runs_figure
    monkeypatch.setattr(training, "compare_runs_figure",
                        lambda *a, **k: figs.append(draw(*a, **k)) or figs[-1])
    monkeypatch.setattr(plt, "close", lambda fig=None: None)   # the figure read below
    assert main(["runs", "compare", plain, parle, "--metric", "lr", "--plot",
                 str(tmp_path / "lr.png"), "--store", str(store_path)]) == 0
    rows = {line.split("  ")[0]: line.split()[-2:]
            for line in capsys.readouterr().out.splitlines()}
    assert rows["last-step lr"] == ["0", "0.01"] and rows["mean lr"] == ["0.05", "0.07"]
    lines = {ln.get_label().split()[0]: list(zip(ln.get_xdata(), ln.get_ydata()))
             for ln in figs[0].axes[0].get_lines()}
    assert lines[plain] == [(0, 0.1), (5, 0.075), (10, 0.025), (15, 0.0), (20, 0.0)]
    assert lines[parle] == [(0, 0.1), (5, 0.1), (10, 0.01), (15, 0.01)]
    monkeypatch.undo()
    plt.close(figs[0])


def test_runs_compare_writes_a_row_s_numbers_in_one_precision(tmp_path, capsys):
    store_path = tmp_path / "runs.sqlite"
    ids = _store_runs(store_path, *((name, [("test_loss", 0, 3.0), ("test_loss", 10, loss)],
                                     status, {"steps": 10})
                                    for name, loss, status in (("a", 2.312, "finished"),
                                                               ("b", 2.31, None),
                                                               ("c", 2.3, "finished"))))
    assert main(["runs", "compare", *ids, "--metric", "test_loss", "--store",
                 str(store_path)]) == 0
    # 2.310, not 2.31 beside 2.312: the zero is a digit the row's other numbers have
    assert _final_row(capsys.readouterr().out, "test_loss") == ["2.312", "2.310", "@10",
                                                                "2.300"]


def test_a_row_s_numbers_share_their_significant_digits():
    from sgdlab.cli.runs import _fmt_row

    assert _fmt_row([2.312, 2.31]) == ["2.312", "2.310"]
    assert _fmt_row([0.1, 0.05, 0.0]) == ["0.1", "0.05", "0"]   # no row needs a fourth digit
    assert _fmt_row([2.312, 0.0]) == ["2.312", "0"]           # a zero has no digits to share
    assert _fmt_row([1.5e-5, 2e-5]) == ["1.5e-05", "2.0e-05"]
    assert _fmt_row([float("nan"), None, 3, 2.5, 100.0]) == ["nan", "", "3", "2.50", "100"]


def test_runs_compare_of_one_run_is_refused(tmp_path, capsys):
    store_path = tmp_path / "runs.sqlite"
    with RunStore(store_path) as store:
        run_id = store.create_run({"name": "a"}, name="a", env={}, status="finished")
    assert main(["runs", "compare", run_id, "--store", str(store_path)]) == 2
    assert f"compare needs at least two runs, got one ({run_id})" in capsys.readouterr().err
    # the same run twice, by its id and a prefix: still one
    assert main(["runs", "compare", run_id, run_id[:-1], "--store", str(store_path)]) == 2
    assert (f"compare needs at least two different runs; {run_id}, {run_id[:-1]} all name run "
            f"{run_id}" in capsys.readouterr().err)


def test_runs_compare_takes_a_metric_one_run_recorded(tmp_path, capsys):
    store_path = tmp_path / "runs.sqlite"
    ids = _store_runs(store_path, *((name, [("train_loss", 9, 0.5), *rows], "finished",
                                     {"steps": 9})
                                    for name, rows in (("a", [("grad_norm", 4, 2.5),
                                                              ("grad_norm", 9, 1.25)]),
                                                       ("b", []))))
    assert main(["runs", "compare", *ids, "--metric", "grad_norm", "--store",
                 str(store_path)]) == 0
    # its last value; the other has none
    assert _final_row(capsys.readouterr().out, "grad_norm") == ["1.25", "—"]
    assert main(["runs", "compare", *ids, "--metric", "grad_nrom", "--store",
                 str(store_path)]) == 2
    assert "no run recorded grad_nrom (did you mean grad_norm?)" in capsys.readouterr().err


def test_runs_compare_shows_by_default_what_every_run_recorded(tmp_path, capsys):
    store_path = tmp_path / "runs.sqlite"
    ids = _store_runs(store_path, *((name, [("train_loss", 0, 2.0), ("train_loss", 9, 0.5),
                                            *extra], "finished", {"steps": 9, **summary})
                                    for name, extra, summary in (
                                        ("a", [("test_loss", 9, 0.75)], {"hessian_top": 3.5}),
                                        ("b", [], {}))))
    assert main(["runs", "compare", *ids, "--store", str(store_path)]) == 0
    rows = {ln.split("  ")[0]: ln.split()[2:] for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("final ")}
    # a series or final value one run lacks is left out unless asked for with --metric
    assert rows == {"final train_loss": ["0.5", "0.5"], "final steps": ["9", "9"]}


def test_runs_compare_marks_the_last_value_of_a_run_not_ended_alone(tmp_path, capsys):
    # a diverged run has ended: its last value is final, as a finished run's
    store_path = tmp_path / "runs.sqlite"
    ids = _store_runs(store_path, *((name, [("train_loss", 0, 2.0), ("train_loss", 7, 0.25)],
                                     status, None)
                                    for name, status in (("done", "finished"),
                                                         ("blown", "diverged"),
                                                         ("cut", "interrupted"))))
    assert main(["runs", "compare", *ids, "--metric", "train_loss", "--store",
                 str(store_path)]) == 0
    out = capsys.readouterr().out
    assert _final_row(out, "train_loss") == ["0.25", "0.25", "0.25", "@7"]
    assert "(VALUE @STEP: the last value of a run that has not finished)" in out


def test_runs_compare_shows_each_split_s_measurements_and_the_hessian_s_trace(tmp_path,
                                                                           capsys):
    # `sgdlab measure --data test` stores measure/test/...: grouped by instrument as the train
    # split's measure/... are, not as one group whose first six names hid the Hessian's; the
    # Hessian's trace and Frobenius norm among its rows (by name, top_4 came before the trace)
    store_path = tmp_path / "runs.sqlite"
    hess = ("bottom_1", "frobenius", "top_1", "top_2", "top_3", "top_4", "trace")
    align = ("cos_1", "cos_2", "cos_3", "cos_4", "residual")
    names = [f"{split}{inst}/{n}" for split in ("measure/", "measure/test/")
             for inst, ns in (("hess", hess), ("align", align)) for n in ns]
    ids = _store_runs(store_path, *((name, [(m, 9, 1.0 + i) for i, m in enumerate(names)],
                                     "finished", {}) for name in ("a", "b")))
    assert main(["runs", "compare", *ids, "--store", str(store_path)]) == 0
    rows = {ln.split()[1]: ln.split()[2:] for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("final ")}
    for split in ("measure/", "measure/test/"):
        assert [m.removeprefix(split) for m in rows if m.startswith(split)
                and (split == "measure/test/" or not m.startswith("measure/test/"))] == [
            "align/cos_1", "align/cos_2", "align/cos_3", "align/residual", "hess/bottom_1",
            "hess/frobenius", "hess/top_1", "hess/top_2", "hess/top_3", "hess/trace"]
    value = {m: 1.0 + i for i, m in enumerate(names)}
    assert rows["measure/hess/trace"] == [f"{value['measure/hess/trace']:g}"] * 2
    assert rows["measure/test/hess/trace"] == [f"{value['measure/test/hess/trace']:g}"] * 2


def test_runs_compare_names_the_groups_its_default_rows_leave_out(tmp_path, capsys):
    """Seven instruments on both splits, 14 groups for 12 panels: both splits of the first
    six show side by side and the command names the two left out and how to reach them (the
    test split's noise and sharpness were cut without a word)."""
    store_path = tmp_path / "runs.sqlite"
    instruments = ("align", "batch", "fisher", "ggn", "hess", "noise", "sharpness")
    names = [f"measure/{split}{i}/trace" for i in instruments for split in ("", "test/")]
    ids = _store_runs(store_path, *((name, [(m, 9, 1.0) for m in names], "finished", {})
                                    for name in ("a", "b")))
    assert main(["runs", "compare", *ids, "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    finals = [ln.split()[1] for ln in out.splitlines() if ln.startswith("final ")]
    assert finals == names[:12]
    assert ("(2 more groups of series every run recorded, left out of the rows and the plot "
            "(at most 12 by default): measure/sharpness, measure/test/sharpness; --metric "
            "names any series, e.g. --metric measure/sharpness/trace)") in out
    assert main(["runs", "compare", *ids, "--metric", "measure/test/sharpness/trace",
                 "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "final measure/test/sharpness/trace" in out and "left out" not in out
