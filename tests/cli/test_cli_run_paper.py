"""`sgdlab run --paper PAPER`: every catalogue entry of a paper, planned first, run one after
another, then one summary page of their results."""
from __future__ import annotations

import json

import pytest

import sgdlab.cli.run_paper as run_paper
import sgdlab.experiments.spec as spec
from sgdlab.cli.main import main
from sgdlab.errors import UserError
from sgdlab.experiments.summary import load_results, results_markdown

pytestmark = pytest.mark.usefixtures("one_thread_runs", "close_figures")

# two of zhu's entries whose smoke runs take a second or two each
QUICK = ["zhu-alignment-cubic", "zhu-escape-2d"]


@pytest.fixture
def quick_zhu(monkeypatch):
    """``--paper zhu`` selects only :data:`QUICK`."""
    real = spec.catalogue_entries
    monkeypatch.setattr(spec, "catalogue_entries",
                        lambda paper: QUICK if paper == "zhu" else real(paper))


def where(tmp_path) -> list[str]:
    return ["--store", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out")]


def test_a_paper_selects_its_entries_in_catalogue_order():
    names = spec.list_names()
    assert spec.catalogue_papers() == ["chaudhari", "jastrzebski", "musso", "xing", "zhu"]
    assert spec.catalogue_entries("all") == names
    for paper in spec.catalogue_papers():
        assert spec.catalogue_entries(paper) == [n for n in names if n.startswith(paper + "-")]
    assert sum(len(spec.catalogue_entries(p)) for p in spec.catalogue_papers()) == len(names)


def test_the_paper_runs_in_the_order_sgdlab_list_and_results_md_show():
    # by name: --paper ran chaudhari-entropy-sgd-rnn before chaudhari-entropy-sgd, the files'
    # order, while `sgdlab list` and docs/RESULTS.md show them by name
    import re
    from pathlib import Path

    from sgdlab.cli.list import catalogue

    names = spec.catalogue_entries("all")
    assert names == sorted(names) and [e["name"] for e in catalogue()] == names
    page = (Path(__file__).resolve().parents[2] / "docs" / "RESULTS.md").read_text()
    assert re.findall(r"^\| \[([a-z0-9-]+)\]\(#", page, re.M) == names


@pytest.mark.parametrize("argv, says", [
    (["--paper", "xng"], "unknown paper 'xng' (did you mean xing?); one of: chaudhari, "
                         "jastrzebski, musso, xing, zhu, all"),
    (["xing-walk", "--paper", "xing"], "give --paper xing or xing-walk, not both"),
    (["--paper", "xing", "--config", "x.yaml"], "give --paper xing or --config x.yaml, not both"),
    (["--paper", "xing", "--reading", "max-variance=batch-100"],
     "--reading is refused with --paper: each entry has its own readings"),
    # the example is of the paper's own entries, a reading given without its choice too
    (["--paper", "zhu", "--reading", "max-variance"], "run the entry by name: sgdlab run NAME "
     "--reading KEY=CHOICE (e.g. sgdlab run zhu-alignment-cubic --reading grid=half-open)"),
    (["xing-walk", "--compare", "RESULTS.md"], "--compare compares the summary page of --paper"),
    (["--paper", "xing", "--compare", "no-such.md"], "cannot read no-such.md: "),
])
def test_a_wrong_selection_is_refused(tmp_path, capsys, argv, says):
    assert main(["run", *argv, "--scale", "smoke", *where(tmp_path)]) == 2
    assert says in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_batch_with_an_entry_that_would_fail_runs_nothing(tmp_path, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(run_paper, "run_entry", lambda *a: ran.append(a))
    # at paper scale without --data-dir: the entries that read a dataset
    assert main(["run", "--paper", "zhu", "--scale", "paper", *where(tmp_path)]) == 2
    err = capsys.readouterr().err
    failing = [n for n in spec.catalogue_entries("zhu")
               if f"error: {n} at scale 'paper' reads the paper's dataset: pass --data-dir" in err]
    assert len(failing) == 6 and "zhu-escape-2d" not in failing
    assert "6 of 9 entries would fail (above): nothing was run" in err
    # a plan with a problem (here, one put in its list) refuses the batch as well
    real = run_paper.plan_entry

    def plan_entry(args, name, out):
        plan = real(args, name, out)
        if name == QUICK[1]:
            plan.problems.append("a problem of the plan")
        return plan

    monkeypatch.setattr(run_paper, "plan_entry", plan_entry)
    monkeypatch.setattr(spec, "catalogue_entries", lambda paper: QUICK)
    assert main(["run", "--paper", "zhu", "--scale", "smoke", *where(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"sgdlab: error: {QUICK[1]}: a problem of the plan" in err
    assert "1 of 2 entries would fail" in err
    assert ran == [] and not any(tmp_path.iterdir())


def test_a_ray_batch_is_not_refused_for_data_missing_here(tmp_path, capsys, monkeypatch):
    # its runs read the data on the Ray nodes: missing on this machine, it stops a local
    # batch only
    from types import SimpleNamespace

    import sgdlab.experiments.ray_backend as ray_backend

    ran = []
    monkeypatch.setattr(run_paper, "_run_all", lambda args, names, *a: ran.append(names) or 0)
    # Ray importable, not started in this process
    monkeypatch.setattr(ray_backend, "import_ray",
                        lambda: SimpleNamespace(is_initialized=lambda: False))
    monkeypatch.setattr(spec, "catalogue_entries", lambda paper: ["jastrzebski-ratio-grid"])
    (tmp_path / "data").mkdir()
    argv = ["run", "--paper", "jastrzebski", "--scale", "paper", "--data-dir",
            str(tmp_path / "data"), *where(tmp_path)]
    assert main([*argv, "--backend", "local"]) == 2
    assert "1 of 1 entries would fail" in capsys.readouterr().err and ran == []
    assert main([*argv, "--backend", "ray"]) == 0
    assert ran == [["jastrzebski-ratio-grid"]] and capsys.readouterr().err == ""


def test_a_batch_runs_each_entry_then_writes_the_summary_of_its_own(tmp_path, capsys,
                                                                    quick_zhu):
    out = tmp_path / "out"
    # another experiment's output in the same folder stays out of the page
    (out / "other-cpu").mkdir(parents=True)
    (out / "other-cpu" / "results.json").write_text(json.dumps({"experiment": {}}))
    # an entry of zhu's no longer run, one still run, one of another paper (out of the
    # comparison: the batch does not run it)
    earlier = tmp_path / "earlier.md"
    earlier.write_text("| [zhu-gone](#zhu-gone) | x | y | 1 / 0 / 0 |\n"
                       "| [xing-walk](#xing-walk) | x | y | 0 / 2 / 0 |\n"
                       "| [zhu-escape-2d](#zhu-escape-2d) | x | y | 0 / 1 / 0 |\n"
                       "### zhu-gone\n| finding (computed from the stored runs) | claim tested | "
                       "vs paper |\n|---|---|---|\n| x | c | agrees |\n"
                       "### xing-walk\n| finding (computed from the stored runs) | claim tested "
                       "| vs paper |\n|---|---|---|\n| x | w | **disagrees** |\n"
                       "### zhu-escape-2d\n| finding (computed from the stored runs) | claim "
                       "tested | vs paper |\n|---|---|---|\n| x | c | **disagrees** |\n")
    assert main(["run", "--paper", "zhu", "--scale", "smoke", *where(tmp_path),
                 "--compare", str(earlier)]) == 0
    text = capsys.readouterr().out
    compared = text[text.index(f"summary: {out / 'zhu-smoke.md'}\n"):].splitlines()[1:]
    assert compared[0] == "zhu-escape-2d: 0 / 1 / 0 -> 0 / 0 / 0"
    # the new page's findings (at smoke scale: no verdict), each with its text
    assert compared[1:-4:2] and all(ln.startswith("  (none) -> smoke scale: checks that it "
                                                  "runs, not a verdict: ")
                                    for ln in compared[1:-4:2])
    assert all(ln.startswith("    now: ") for ln in compared[2:-4:2])
    assert compared[-4:] == [
        "  disagrees -> (none): c", f"only in {earlier}: zhu-gone (1 / 0 / 0)",
        f"only in {out / 'zhu-smoke.md'}: zhu-alignment-cubic (0 / 0 / 0)",
        "totals (agree / disagree / inconclusive): 1 / 1 / 0 -> 0 / 0 / 0, 2 -> 2 experiments"]
    assert "[1/2] zhu-alignment-cubic\n" in text and "[2/2] zhu-escape-2d\n" in text
    dirs = [out / f"{n}-smoke" for n in QUICK]
    table = text[text.index("\nentry "):].splitlines()[2:4]
    for n, d, line in zip(QUICK, dirs, table):
        assert line.split() == [n, "done", "0", "/", "0", "/", "0", str(d / "report.html")]
    page = out / "zhu-smoke.md"
    assert f"summary: {page}" in text
    command = (f"sgdlab run --paper zhu --scale smoke --out {out} "
               f"--store {tmp_path / 's.sqlite'}")
    md = page.read_text()
    assert md == results_markdown(load_results(dirs), command=command)
    assert md.startswith(f"Regenerate: `{command}`\n\n2 experiments, 0 findings agree")
    rows = [line for line in md.splitlines() if line.startswith("| [")]
    assert [r.split("]")[0] for r in rows] == [f"| [{n}" for n in QUICK]
    assert "Zhu 2019, Fig. 3(c)" in rows[1] and rows[1].endswith("| 0 / 0 / 0 |")


def test_an_entry_that_fails_does_not_stop_the_next(tmp_path, capsys, monkeypatch, quick_zhu):
    real = run_paper.run_entry

    def run_entry(args, name, out):
        if name == QUICK[0]:
            raise UserError("the data went away\nsecond line")
        res = real(args, name, out)
        # as a sweep with a failed run ends (its report written, without that run)
        res.sweep.failed.append(("gd|seed=0", "a worker died\nits traceback"))
        res.results["incomplete"] = True
        return res

    monkeypatch.setattr(run_paper, "run_entry", run_entry)
    assert main(["run", "--paper", "zhu", "--scale", "smoke", *where(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert f"sgdlab: error: {QUICK[0]}: the data went away" in err
    table = out[out.index("\nentry "):].splitlines()[1:]
    assert table[1].split()[:5] == [QUICK[0], "failed:", "the", "data", "went"]
    assert table[1].split()[-2:] == ["-", "-"] and "second line" not in out
    report = tmp_path / "out" / f"{QUICK[1]}-smoke" / "report.html"
    assert " ".join(table[2].split()) == (f"{QUICK[1]} failed: 1 runs failed (first: "
                                          f"gd|seed=0: a worker died) 0 / 0 / 0 {report}")
    # the page holds the entry that ran
    md = (tmp_path / "out" / "zhu-smoke.md").read_text()
    assert "\n1 experiments, " in md and f"| [{QUICK[1]}]" in md and QUICK[0] not in md

    # a bug is not an entry's failure: it stops the batch with its traceback
    def broken(args, name, out):
        raise ZeroDivisionError

    monkeypatch.setattr(run_paper, "run_entry", broken)
    with pytest.raises(ZeroDivisionError):
        main(["run", "--paper", "zhu", "--scale", "smoke", *where(tmp_path)])


def test_ctrl_c_stops_the_batch_and_says_how_to_continue(tmp_path, capsys, monkeypatch,
                                                         quick_zhu):
    def interrupted(args, name, out):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_paper, "run_entry", interrupted)
    assert main(["run", "--paper", "zhu", "--scale", "smoke", *where(tmp_path)]) == 130
    out, err = capsys.readouterr()
    assert "[2/2]" not in out
    assert (f"the batch was interrupted at {QUICK[0]} (1 of 2)" in err
            and "continue with: sgdlab run --paper zhu --scale smoke" in err)
    assert not (tmp_path / "out" / "zhu-smoke.md").exists()


def test_the_dry_run_plans_every_entry(tmp_path, capsys):
    argv = ["run", "--paper", "musso", "--scale", "smoke", *where(tmp_path), "--dry-run"]
    assert main([*argv, "--json"]) == 0
    plans = json.loads(capsys.readouterr().out)
    assert [p["experiment"] for p in plans] == spec.catalogue_entries("musso")
    assert all(p["ok"] and p["out"] == str(tmp_path / "out" / f"{p['experiment']}-smoke")
               for p in plans)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("dry run: musso-") == 4
    # each entry's departures counted with the command that lists them, not listed
    assert text.count("--scale smoke --dry-run` lists them)") == 4
    assert "smoke, as the entry lists them:" not in text
    runs = sum(len(p["runs"]) for p in plans)
    assert text.rstrip().endswith(f"total: 4 entries, {runs} runs, {runs} to run (0 already "
                                  "stored); 0 entries would fail")
    # an entry that cannot be planned: in the list, not ok, and the exit status 2
    assert main(["run", "--paper", "zhu", "--scale", "paper", *where(tmp_path), "--dry-run",
                 "--json"]) == 2
    plans = json.loads(capsys.readouterr().out)
    assert len(plans) == 9 and sum(not p["ok"] for p in plans) == 6
    assert {p["experiment"]: p["ok"] for p in plans}["zhu-escape-2d"]
    assert not any(tmp_path.iterdir())


def test_a_batch_with_one_entry_failed_exits_1_though_another_is_done(tmp_path, capsys,
                                                                       monkeypatch):
    import argparse
    from types import SimpleNamespace

    import sgdlab.experiments.summary as summary

    def run_entry(args, name, out):
        if name == "a":
            raise UserError("the data went away")
        return SimpleNamespace(ok=True, out_dir=out, report_path=out / "report.html",
                               results={})

    monkeypatch.setattr(run_paper, "run_entry", run_entry)
    monkeypatch.setattr(run_paper, "print_results", lambda res: 0)
    monkeypatch.setattr(run_paper, "verdict_counts", lambda results: (1, 0, 0))
    monkeypatch.setattr(run_paper, "same_command", lambda args: "sgdlab run --paper p")
    monkeypatch.setattr(summary, "write_summary", lambda outs, page, command: page)
    args = argparse.Namespace(paper="p", scale="smoke", compare=None)
    outs = {n: tmp_path / n for n in ("a", "b")}
    assert run_paper._run_all(args, ["a", "b"], outs, tmp_path) == 1
    table = capsys.readouterr().out.split("\nentry ")[1].splitlines()[1:]
    assert [row.split()[:2] for row in table[:2]] == [["a", "failed:"], ["b", "done"]]
