"""``sgdlab runs list|show|export`` on small hand-made stores: which runs a filter selects, and
that the tables and files hold the stored values (``runs compare`` and ``runs delete`` have
their own files)."""
from __future__ import annotations

import csv
import json

from sgdlab.cli.main import main
from sgdlab.store import RunStore


def _store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite")


def test_export_summary_writes_a_run_named_twice_once(tmp_path):
    store = _store(tmp_path)
    a = store.create_run({"lr": 0.1}, name="a", env={}, status="finished")
    b = store.create_run({"lr": 0.2}, name="b", env={}, status="finished")
    store.set_summary(a, {"loss": 0.5})
    store.set_summary(b, {"loss": 0.25})
    out = tmp_path / "s.csv"
    # by its id and by a prefix of it: one run, one row
    assert main(["runs", "export", str(out), "--summary", "--run", a, "--run", a[:-1],
                 "--run", b, "--store", str(store.path)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [(r["run_id"], r["config.lr"], r["loss"]) for r in rows] == [
        (a, "0.1", "0.5"), (b, "0.2", "0.25")]


def test_export_summary_writes_each_final_value_as_stored(tmp_path):
    # the CSV is read back by other tools: every digit of a float, not the table's four
    store = _store(tmp_path)
    rid = store.create_run({"lr": 0.1}, name="a", env={}, status="finished")
    store.set_summary(rid, {"hessian_top": 0.123456789012345, "steps": 7,
                            "escape": float("-inf")})
    out = tmp_path / "s.csv"
    assert main(["runs", "export", str(out), "--summary", "--store", str(store.path)]) == 0
    (row,) = csv.DictReader(open(out))
    assert float(row["hessian_top"]) == 0.123456789012345
    assert (row["steps"], row["escape"], row["config.lr"]) == ("7", "-inf", "0.1")


def test_a_run_s_age_reads_in_seconds_minutes_then_hours():
    import time

    from sgdlab.cli.runs import _ago

    now = time.time()
    assert _ago(now - 30) == "30 s"
    assert _ago(now - 3000) == "50 min"          # 2 min to 2 h: minutes
    assert _ago(now - 3 * 3600) == "3.0 h"
    assert _ago(now + 60) == "0 s"               # a clock ahead of this one: not negative


def test_a_replica_run_s_steps_are_its_rounds_times_l():
    from sgdlab.cli.runs import summary_steps

    assert summary_steps({"steps": 12, "rounds": 3, "grad_evals": 60}) == 12
    # stored before its summary had steps: its inner steps per replica, rounds · L
    assert summary_steps({"rounds": 3, "grad_evals": 60}) == 60
    assert summary_steps({"rounds": 3}) is None and summary_steps({}) is None


def _listed(capsys) -> tuple[list[str], dict[str, list[str]]]:
    """The table `runs list` printed: its header's columns and each run's cells by id, cut at
    the columns' starts in the header (an empty cell stays one)."""
    import re

    head, *lines = capsys.readouterr().out.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", head)]
    rows = {}
    for line in lines:
        if not line or line.startswith("("):
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
        rows[cells[0]] = cells
    return head.split(), rows


def test_runs_list_prints_the_stored_values_and_filters_by_status_and_experiment(
        tmp_path, capsys):
    store = _store(tmp_path)
    done = store.create_run({}, name="done", experiment="e1", env={}, status="finished")
    store.set_summary(done, {"test_acc": 0.912345, "test_loss": 0.3, "steps": 100})
    failed = store.create_run({}, name="failed", experiment="e2", env={}, status="failed")
    store.log_many(failed, [("test_loss", 5, 2.5), ("test_loss", 10, 1.5)])
    # finished without a test_loss in its summary: its last evaluation is no final value
    bare = store.create_run({}, name="bare", experiment="e1", env={}, status="finished")
    store.log_many(bare, [("test_loss", 10, 0.7)])
    base = ["runs", "list", "--store", str(store.path)]
    assert main(base) == 0
    head, rows = _listed(capsys)
    assert head == ["RUN_ID", "NAME", "EXPERIMENT", "STATUS", "STEPS", "TEST_ACC", "TEST_LOSS",
                    "CREATED"]
    assert list(rows) == [done, failed, bare]            # oldest first
    created = {r["id"]: r["created"] for r in store.list_runs()}
    assert rows[done] == [done, "done", "e1", "finished", "100", "0.9123", "0.3",
                          created[done][:19].replace("T", " ")]
    assert rows[failed][3:7] == ["failed", "", "", "1.5 @10"]
    assert rows[bare][3:7] == ["finished", "", "", ""]
    assert main([*base, "--status", "failed"]) == 0
    assert list(_listed(capsys)[1]) == [failed]
    assert main([*base, "--experiment", "e1"]) == 0
    assert list(_listed(capsys)[1]) == [done, bare]


def test_an_experiment_held_but_filtered_out_is_not_said_to_be_mistyped(tmp_path, capsys):
    # "(did you mean xing-walk?)" after --experiment xing-walk: the status left its runs
    # out, not a typo
    store = _store(tmp_path)
    store.create_run({}, name="a", experiment="xing-walk", env={}, status="finished")
    for cmd, then in ((["list"], " in "), (["delete", "--dry-run"], " to delete in "),
                      (["export", str(tmp_path / "e.csv")], " to export in ")):
        code = main(["runs", *cmd, "--experiment", "xing-walk", "--status", "failed", "--store",
                     str(store.path)])
        said = capsys.readouterr()
        assert (said.out + said.err).strip().endswith(
            f"no runs with experiment 'xing-walk' and status 'failed'{then}{store.path}"), cmd
        assert code == (2 if cmd[0] == "export" else 0)
    assert main(["runs", "list", "--experiment", "xing-wlak", "--store", str(store.path)]) == 0
    assert capsys.readouterr().out.endswith(f"{store.path} (did you mean xing-walk?)\n")


def test_an_experiment_filter_naming_runs_of_no_experiment_says_so(tmp_path, capsys):
    # `runs list --experiment digits-mlp` after `sgdlab train digits-mlp` said only that the
    # store held no such runs
    store = _store(tmp_path)
    store.create_run({}, name="digits-mlp", env={}, status="finished")
    store.create_run({}, name="digits-mlp", env={}, status="finished")
    store.create_run({}, name="a", experiment="xing-walk", env={}, status="finished")
    for cmd in (["list"], ["delete", "--dry-run"], ["export", str(tmp_path / "e.csv")]):
        main(["runs", *cmd, "--experiment", "digits-mlp", "--store", str(store.path)])
        said = capsys.readouterr()
        assert (said.out + said.err).strip().endswith(
            f"{store.path} (2 runs are named 'digits-mlp', of no experiment: `sgdlab train` and "
            "the commands other than `sgdlab run` record none; `sgdlab runs list` without "
            "--experiment shows them)"), cmd


def test_a_stopped_run_s_checkpoint_step_is_read_from_its_checkpoint(tmp_path):
    from sgdlab.cli.runs import checkpoint_state, checkpoint_step
    from sgdlab.train.checkpoint import checkpoint_path, save_checkpoint

    # of `sgdlab parle`: master.pt after round 3 of L = 5 inner steps ends at step 3 · 5
    save_checkpoint(tmp_path / "ckpts" / "master.pt", {"round": 3, "parle": {"L": 5}})
    parle = {"config": {}, "artifacts": [{"kind": "checkpoints",
                                          "path": str(tmp_path / "ckpts")}]}
    assert checkpoint_step(parle) == 15 and checkpoint_state(parle, 15) == "ok"
    # of `sgdlab train`: its folder's checkpoints/last.pt, at its loop's step
    train = {"config": {}, "artifacts": [{"kind": "out_dir", "path": str(tmp_path / "run")}]}
    assert checkpoint_step(train) is None and checkpoint_state(train, None) == "none"
    save_checkpoint(checkpoint_path(tmp_path / "run" / "checkpoints"), {"loop": {"step": 14}})
    assert checkpoint_step(train) == 14
    checkpoint_path(tmp_path / "run" / "checkpoints").write_bytes(b"cut")
    assert checkpoint_step(train) is None and checkpoint_state(train, None) == "unreadable"
    # of a sweep, none kept: its sweep reruns it from step 0
    sweep = {"config": {"run_key": "k"}, "experiment": "e", "artifacts": []}
    assert checkpoint_step(sweep, tmp_path / "runs.sqlite") == -1
    assert checkpoint_state(sweep, -1) == "none"


def test_runs_list_of_stopped_sweep_runs_without_checkpoints(tmp_path, capsys):
    store = _store(tmp_path)
    cfg = {"scale": "cpu", "command": "sgdlab run e --scale cpu"}
    ids = []
    for key, status, loss in (("k1", "finished", 0.5), ("k2", "interrupted", 0.75),
                              ("k3", "interrupted", 0.25)):
        rid = store.create_run({**cfg, "run_key": key}, name=key, experiment="e", env={},
                               status="finished")
        store.log_many(rid, [("test_loss", 5, loss)])
        store.set_status(rid, status)
        ids.append(rid)
    assert main(["runs", "list", "--store", str(store.path)]) == 0
    out = capsys.readouterr().out
    head = out.splitlines()[0].split()
    assert head[3] == "SCALE"
    rows = [ln.split() for ln in out.splitlines()[1:4]]
    # no checkpoint: no steps (not "-1 (ckpt)"); its last evaluation, at its step
    assert rows[1][3:] == ["cpu", "interrupted", "0.75", "@5", *rows[1][-2:]]
    assert rows[0][3:5] == ["cpu", "finished"] and "0.5" not in rows[0]
    assert "(VALUE @STEP: the last evaluation of a run that has not finished)" in out
    # one command continues both entries: their sweep reruns them from step 0
    assert out.endswith(f"\n2 run(s) stopped before they ended; continue with:\n"
                        f"  sgdlab run e --scale cpu --store {store.path}  (a sweep reruns "
                        "what the store lacks)\n    (its sweep reruns it from step 0)\n")
    assert main(["runs", "list", "--json", "--store", str(store.path)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["checkpoint_step"], r["checkpoint"]) for r in listed] == [
        (None, None), (None, "none"), (None, "none")]


def _stopped_sweep_runs(store, keys, steps):
    """Stopped runs of sweep entries ``keys`` of experiment e (one command), each entry's
    checkpoint at ``steps[key]`` (none where absent)."""
    from sgdlab.experiments.worker import CHECKPOINT_DIR
    from sgdlab.store.folders import sweep_run_folder
    from sgdlab.train.checkpoint import checkpoint_path, save_checkpoint

    cfg = {"scale": "cpu", "command": "sgdlab run e --scale cpu"}
    ids = [store.create_run({**cfg, "run_key": key}, name=key, experiment="e", env={},
                            status="interrupted") for key in keys]
    for key, step in steps.items():
        save_checkpoint(checkpoint_path(sweep_run_folder(store.path, key) / CHECKPOINT_DIR),
                        {"loop": {"step": step}})
    return ids


def test_one_sweep_command_for_two_stopped_entries_gives_each_entry_s_resume_point(tmp_path,
                                                                                 capsys):
    """The command continues both entries, each from its own point (docs/design/sweeps.md:
    `runs list` gives a stopped sweep run's checkpoint step): k1 from its checkpoint at step
    8, k2 from step 0. The listing gave the first entry's point alone, under the one command,
    as if it were both's."""
    store = _store(tmp_path)
    ids = _stopped_sweep_runs(store, ("k1", "k2"), {"k1": 8})
    assert main(["runs", "list", "--store", str(store.path)]) == 0
    assert capsys.readouterr().out.endswith(
        f"\n2 run(s) stopped before they ended; continue with:\n"
        f"  sgdlab run e --scale cpu --store {store.path}  (a sweep reruns what the store "
        f"lacks)\n    (run {ids[0]}: its sweep resumes it from its last checkpoint, step 8)\n"
        f"    (run {ids[1]}: its sweep reruns it from step 0)\n")


def test_runs_show_prints_each_series_length_and_last_value(tmp_path, capsys):
    store = _store(tmp_path)
    rid = store.create_run({"lr": 0.1}, name="a", env={}, status="finished")
    store.log_many(rid, [("train_loss", 0, 2.0), ("train_loss", 5, 1.0),
                         ("train_loss", 10, 0.125), ("test_acc", 10, 0.875)])
    # stopped as the process recorded it (Ctrl-C): not "recorded as running"
    store.set_status(rid, "interrupted", "KeyboardInterrupt")
    assert main(["runs", "show", rid, "--store", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert "status: interrupted (KeyboardInterrupt)\n" in out
    assert "recorded as running" not in out
    series = {ln.split()[0]: ln.split()[1:] for ln in
              out.split("metrics (points, last step: value):\n")[1].split("config:")[0]
              .splitlines() if ln.startswith("  ")}
    assert series == {"test_acc": ["1", "10:", "0.875"], "train_loss": ["3", "10:", "0.125"]}


def test_resume_of_a_running_sweep_run_names_it_and_says_what_to_do(tmp_path, capsys):
    """A sweep's run still running (its owner, this process, alive) was told it "has no run
    folder recorded (was it started by `sgdlab train`?)": neither that it runs nor what to
    do. It is named as running, with the wait and the sweep's command to continue it."""
    import os
    import socket

    store = _store(tmp_path)
    command = f"sgdlab run e --scale cpu --store {store.path}"
    rid = store.create_run({"run_key": "k1", "scale": "cpu", "command": "sgdlab run e --scale "
                            "cpu"}, name="k1", experiment="e", env={})
    assert store.get_run(rid)["status"] == "running"
    assert main(["resume", rid, "--store", str(store.path)]) == 2
    assert capsys.readouterr().err == (
        f"sgdlab: error: run {rid} of the sweep of e is still running (process {os.getpid()} "
        f"on {socket.gethostname()}): its sweep is training it, so there is nothing to resume; "
        f"wait for it to end (`sgdlab runs show {rid}` shows how far it got), or stop that "
        f"sweep and continue it with: {command}  (a sweep reruns what the store lacks)\n")
    assert store.get_run(rid)["status"] == "running"        # left to its sweep


def test_stopped_sweep_entries_at_one_checkpoint_step_share_one_resume_line(tmp_path, capsys):
    store = _store(tmp_path)
    _stopped_sweep_runs(store, ("k1", "k2"), {"k1": 8, "k2": 8})
    assert main(["runs", "list", "--store", str(store.path)]) == 0
    assert capsys.readouterr().out.endswith(
        f"\n2 run(s) stopped before they ended; continue with:\n"
        f"  sgdlab run e --scale cpu --store {store.path}  (a sweep reruns what the store "
        f"lacks)\n    (its sweep resumes it from its last checkpoint, step 8)\n")


def test_an_entry_stopped_twice_is_listed_by_its_latest_run_beside_another_entry(tmp_path,
                                                                                capsys):
    """k1 stopped twice (its checkpoint at step 8, shared by its runs: the sweep's artifact
    folder of its run key), k2 before its first checkpoint: the sweep continues k1 from step 8
    once, named by its latest run, and k2 from step 0; the three stopped runs are counted."""
    store = _store(tmp_path)
    old, new, other = _stopped_sweep_runs(store, ("k1", "k1", "k2"), {"k1": 8})
    assert main(["runs", "list", "--store", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert out.endswith(
        f"\n3 run(s) stopped before they ended; continue with:\n"
        f"  sgdlab run e --scale cpu --store {store.path}  (a sweep reruns what the store "
        f"lacks)\n    (run {new}: its sweep resumes it from its last checkpoint, step 8)\n"
        f"    (run {other}: its sweep reruns it from step 0)\n")
    assert f"(run {old}:" not in out


def test_resume_of_a_train_run_another_process_runs_is_refused_as_before(tmp_path, capsys,
                                                                         monkeypatch):
    """The sweep's running case has its own message; a running run of ``sgdlab train`` (its
    folder recorded, its owner another live process) still reaches the claim's refusal, and
    neither is touched."""
    import socket
    import subprocess

    from sgdlab.config import validate_config
    from sgdlab.store import runstore
    from sgdlab.testing import TINY_RUN

    owner = subprocess.Popen(["sleep", "30"])
    try:
        monkeypatch.setattr(runstore, "this_process", lambda: {
            "host": socket.gethostname(), "pid": owner.pid,
            "pid_start": runstore._start_token(owner.pid)})
        # no heartbeat thread for the stand-in owner: one would beat its rows for ever, beyond
        # this process' stop_heartbeats (its pid is not this process')
        monkeypatch.setattr(runstore.RunStore, "_keep_alive", lambda self: None)
        store = _store(tmp_path)
        rid = store.create_run(validate_config(TINY_RUN), name="t", env={})
        store.add_artifact(rid, "out_dir", tmp_path / "run")
        sweep = store.create_run({"run_key": "k1", "scale": "cpu", "command": "sgdlab run e"},
                                 name="k1", experiment="e", env={})
        monkeypatch.undo()
        assert main(["resume", rid, "--store", str(store.path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"sgdlab: error: run {rid} is still running (process "
                              f"{owner.pid} on {socket.gethostname()}, heartbeat ")
        assert err.endswith("; stop it first\n")
        assert main(["resume", sweep, "--store", str(store.path)]) == 2
        assert f"run {sweep} of the sweep of e is still running (process {owner.pid} " in (
            capsys.readouterr().err)
        assert {store.get_run(r)["status"] for r in (rid, sweep)} == {"running"}
        assert not (tmp_path / "run").exists()      # its removed folder is not made again
    finally:
        owner.kill()
        owner.wait()


def _reading_runs(store, name: str, readings: dict, labels=None) -> list[str]:
    """Store the smoke runs of catalogue entry ``name`` under ``readings`` (those labelled
    ``labels``; all by default) as `sgdlab run` records them, finished; their ids."""
    from sgdlab.experiments.spec import load_experiment

    return [store.create_run(r.config(), name=r.run_name, experiment=name, env={},
                             status="finished")
            for r in load_experiment(name, "smoke", readings).expand()
            if labels is None or r.label in labels]


def test_runs_list_names_the_readings_whose_sweeps_take_each_run(tmp_path, capsys):
    # two runs named gd|seed=0, one per reading: the READINGS column tells them apart
    store = _store(tmp_path)
    base = ["runs", "list", "--experiment", "zhu-escape-2d", "--store", str(store.path)]
    gd, sgd = _reading_runs(store, "zhu-escape-2d", {}, {"gd", "sgd"})
    assert main(base) == 0
    assert "READINGS" not in _listed(capsys)[0]     # the default readings' alone: as before
    (rescaled,) = _reading_runs(store, "zhu-escape-2d", {"landscape": "rescaled"}, {"gd"})
    assert main(base) == 0
    head, rows = _listed(capsys)
    assert head[3:6] == ["SCALE", "READINGS", "STATUS"]
    assert {rid: cells[1:5] for rid, cells in rows.items()} == {
        gd: ["gd|seed=0", "zhu-escape-2d", "smoke", "default"],
        sgd: ["sgd|seed=0", "zhu-escape-2d", "smoke", "default"],
        rescaled: ["gd|seed=0", "zhu-escape-2d", "smoke", "landscape=rescaled"]}
    assert main([*base, "--json"]) == 0
    assert {r["id"]: r["readings"] for r in json.loads(capsys.readouterr().out)} == {
        gd: ["default"], sgd: ["default"], rescaled: ["landscape=rescaled"]}
    # --reading keeps the runs of that reading's sweep; the others take their defaults
    assert main([*base, "--reading", "landscape=rescaled"]) == 0
    assert list(_listed(capsys)[1]) == [rescaled]
    out = tmp_path / "e.csv"
    assert main(["runs", "export", str(out), "--summary", "--experiment", "zhu-escape-2d",
                 "--reading", "landscape=printed", "--store", str(store.path)]) == 0
    assert [r["run_id"] for r in csv.DictReader(open(out))] == [gd, sgd]
    capsys.readouterr()
    assert main(["runs", "show", rescaled, "--store", str(store.path)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "readings: landscape=rescaled (the sweeps that take this run, at scale smoke)")


def test_runs_list_of_runs_named_alike_names_the_options_that_list_one_scale_or_reading(
        tmp_path, capsys):
    # its runs named gd|seed=0 differ by their scale or reading alone: the footnote names
    # the --scale and --reading (a listed KEY=CHOICE) that tell them apart
    store = _store(tmp_path)
    base = ["runs", "list", "--experiment", "zhu-escape-2d", "--store", str(store.path)]
    _reading_runs(store, "zhu-escape-2d", {}, {"gd", "sgd"})
    assert main(base) == 0
    assert not capsys.readouterr().out.splitlines()[-1].startswith("(")
    _reading_runs(store, "zhu-escape-2d", {"landscape": "rescaled"}, {"gd"})
    assert main(base) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "(runs of one name at several readings: `--reading landscape=rescaled` lists those of "
        "one)")
    store.create_run({**store.list_runs()[0]["config"], "scale": "cpu"}, name="gd|seed=0",
                     experiment="zhu-escape-2d", env={}, status="finished")
    assert main(base) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "(runs of one name at several scales or readings: `--scale smoke` or `--reading "
        "landscape=rescaled` lists those of one)")
    # an option given is not suggested again
    assert main([*base, "--scale", "smoke", "--reading", "landscape=printed"]) == 0
    assert not capsys.readouterr().out.splitlines()[-1].startswith("(")


def test_a_run_every_reading_takes_is_listed_as_of_all(tmp_path, capsys):
    # a run no reading changes is one stored run for each: "all", not every reading's name
    store = _store(tmp_path)
    default = dict(zip(EQUAL_RATIO_LABELS, _reading_runs(store, "jastrzebski-equal-ratio", {})))
    (own,) = _reading_runs(store, "jastrzebski-equal-ratio", {"cbs-shape": "linear"}, {"cbs"})
    assert main(["runs", "list", "--experiment", "jastrzebski-equal-ratio", "--store",
                 str(store.path)]) == 0
    _, rows = _listed(capsys)
    # each reading retrains one run of its own: cbs-shape the cyclic batch size's, clr-steps
    # the cyclic learning rate's; the other five are every reading's
    assert {label: rows[rid][4] for label, rid in default.items()} == {
        "cbs": "default, clr-steps=every-epoch", "clr": "default, cbs-shape=linear",
        **dict.fromkeys(EQUAL_RATIO_LABELS[2:], "all")}
    assert rows[own][4] == "cbs-shape=linear"
    assert main(["runs", "show", default["const-lr0.001-B128"], "--store",
                 str(store.path)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "readings: default, cbs-shape=linear, clr-steps=every-epoch "
        "(the sweeps that take this run, at scale smoke)")


# jastrzebski-equal-ratio's smoke runs, in the order its sweep expands them
EQUAL_RATIO_LABELS = ("cbs", "clr", "const-lr0.001-B128", "const-lr0.005-B640",
                      "small-lr0.01-B50", "linear-lr0.04-B200", "sqrt-lr0.02-B200")


def _planned(out: str) -> dict[str, list[str]]:
    """The cells of each run of the table a `runs delete` plan printed, by run id."""
    lines = out.splitlines()
    rows = [ln.split() for ln in lines[1:] if ln.startswith("  2")]
    return {cells[0]: cells for cells in rows}


def test_runs_delete_by_reading_takes_that_readings_runs_and_names_their_readings(
        tmp_path, capsys):
    # two runs named gd|seed=0, one per reading: --reading deletes one reading's alone
    store = _store(tmp_path)
    base = ["runs", "delete", "--experiment", "zhu-escape-2d", "--store", str(store.path)]
    gd, sgd = _reading_runs(store, "zhu-escape-2d", {}, {"gd", "sgd"})
    (rescaled,) = _reading_runs(store, "zhu-escape-2d", {"landscape": "rescaled"}, {"gd"})
    assert main([*base, "--reading", "landscape=rescaled", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[3:5] == ["READINGS", "STATUS"]
    assert _planned(out) == {rescaled: [rescaled, "gd|seed=0", "zhu-escape-2d",
                                        "landscape=rescaled", "finished", "0", "B"]}
    assert "also of the sweep of another reading" not in out
    # the command that runs it again is that reading's sweep
    assert (f"({rescaled}): `sgdlab run` of its experiment with --reading landscape=rescaled "
            "runs it again") in out
    # the default reading's choice named: its runs, said to be the default's
    assert main([*base, "--reading", "landscape=printed", "--dry-run"]) == 0
    assert {rid: cells[3] for rid, cells in _planned(capsys.readouterr().out).items()} == {
        gd: "default", sgd: "default"}
    assert main([*base, "--reading", "landscape=rescaled", "--yes"]) == 0
    assert [r["id"] for r in store.list_runs()] == [gd, sgd]


def test_runs_delete_by_reading_says_which_runs_other_readings_share(tmp_path, capsys):
    # a run no reading changes is one stored run for each: deleting it takes it from all
    store = _store(tmp_path)
    default = dict(zip(EQUAL_RATIO_LABELS, _reading_runs(store, "jastrzebski-equal-ratio", {})))
    (own,) = _reading_runs(store, "jastrzebski-equal-ratio", {"cbs-shape": "linear"}, {"cbs"})
    assert main(["runs", "delete", "--experiment", "jastrzebski-equal-ratio",
                 "--reading", "cbs-shape=linear", "--dry-run", "--store",
                 str(store.path)]) == 0
    out = capsys.readouterr().out
    shared = [default[label] for label in EQUAL_RATIO_LABELS[1:]]   # all but the default's cbs
    assert {rid: cells[3] for rid, cells in _planned(out).items()} == {
        default["clr"]: "default,", **dict.fromkeys(shared[1:], "all"),
        own: "cbs-shape=linear"}
    assert (f"note: 6 of these runs are also of the sweep of another reading (READINGS), as "
            f"one stored run serves every reading it is alike in: {', '.join(shared)} go from "
            "their sweeps too") in out


def test_runs_show_json_names_the_readings_of_its_text_line(tmp_path, capsys):
    """`runs show --json` carries the readings: line's names, [] for a run key no sweep
    takes ("readings: none"), and no readings for a run that is no sweep run."""
    store = _store(tmp_path)
    (rescaled,) = _reading_runs(store, "zhu-escape-2d", {"landscape": "rescaled"}, {"gd"})
    (gd,) = _reading_runs(store, "zhu-escape-2d", {}, {"gd"})
    edited = store.create_run({**store.get_run(gd)["config"], "run_key": "edited"},
                              name="gd|seed=0", experiment="zhu-escape-2d", env={},
                              status="finished")
    plain = store.create_run({"lr": 0.1}, name="a", env={}, status="finished")

    def shown(rid):
        assert main(["runs", "show", rid, "--store", str(store.path)]) == 0
        text = capsys.readouterr().out.splitlines()[1]
        assert main(["runs", "show", rid, "--store", str(store.path), "--json"]) == 0
        return text, json.loads(capsys.readouterr().out).get("readings", "absent")

    assert shown(rescaled) == (
        "readings: landscape=rescaled (the sweeps that take this run, at scale smoke)",
        ["landscape=rescaled"])
    assert shown(gd)[1] == ["default"]
    text, names = shown(edited)
    assert text.startswith("readings: none (") and names == []
    assert shown(plain)[1] == "absent"


def test_a_reading_filter_is_refused_without_its_entry_or_with_a_choice_it_lacks(
        tmp_path, capsys):
    store = _store(tmp_path)
    _reading_runs(store, "zhu-escape-2d", {}, {"gd"})
    base = ["runs", "list", "--store", str(store.path)]
    assert main([*base, "--reading", "landscape=rescaled"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--reading selects the runs of an experiment's sweep under a reading: give "
        "--experiment NAME with it")
    assert main([*base, "--experiment", "zhu-escape-2d", "--reading", "landscape=rescale"]) == 2
    assert ("reading 'landscape' has no choice 'rescale' (did you mean rescaled?); choices: "
            "printed, rescaled, authors-code (default printed)") in capsys.readouterr().err
    assert main(["runs", "export", str(tmp_path / "e.csv"), *base[2:], "--experiment",
                 "zhu-escape-2d", "--reading", "lands=rescaled"]) == 2
    assert "unknown reading 'lands' (did you mean landscape?); its readings: landscape (" in (
        capsys.readouterr().err)
    assert not (tmp_path / "e.csv").exists()
    # runs delete selects as runs list does: refused alike, nothing deleted
    delete = ["runs", "delete", "--yes", *base[2:]]
    assert main([*delete, "--reading", "landscape=rescaled"]) == 2
    assert capsys.readouterr().err.strip().endswith("give --experiment NAME with it")
    assert main([*delete, "--experiment", "zhu-escape-2d", "--reading", "landscape=x"]) == 2
    assert "reading 'landscape' has no choice 'x'" in capsys.readouterr().err
    assert len(store.list_runs()) == 1
    try:
        main([*base, "--experiment", "zhu-escape-2d", "--reading", "rescaled"])
    except SystemExit as e:
        assert e.code == 2
    assert ("expected KEY=CHOICE (a reading of zhu-escape-2d and one of its choices, e.g. "
            "landscape=rescaled") in capsys.readouterr().err
