"""The README's Python snippets run as written, in README order, in a fresh directory with a
fresh run store, after the command-line steps the README shows before them."""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import jsonschema
import pytest

from sgdlab.cli.main import main
from sgdlab.config import json_schema, load_config
from sgdlab.store import RunStore
from sgdlab.testing import fenced_blocks, markdown_anchors

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks() -> list[tuple[str, str]]:
    return [(b.lang, b.code) for b in fenced_blocks(README.read_text()) if b.lang]


def cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0, argv
    return out.getvalue()


def test_readme_python_snippets_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGDLAB_STORE", str(tmp_path / "runs.sqlite"))
    monkeypatch.setenv("SGDLAB_THREADS", "1")
    found = blocks()
    # the YAML files the snippets load are the README's own, named on their first line
    for lang, text in found:
        name = re.match(r"# (\S+\.yaml)\n", text)
        if lang == "yaml" and name:
            (tmp_path / name.group(1)).write_text(text)
    schema = jsonschema.Draft202012Validator(json_schema())
    assert list(schema.iter_errors(load_config("my-run.yaml"))) == []

    ran, train_id = [], None
    for i, (lang, text) in enumerate(found):
        if lang == "bash" and "sgdlab train digits-mlp  " in text:
            out = cli("train", "digits-mlp", "--set", "train.epochs=1", "--no-progress")
            train_id = re.search(r"^run (\S+): finished", out, re.M).group(1)
        elif lang == "bash" and "sgdlab run zhu-escape-2d --scale smoke" in text:
            cli("run", "zhu-escape-2d", "--scale", "smoke", "--out", "zhu-escape")
        elif lang == "python":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(text, f"README.md python block {len(ran) + 1}", "exec"),
                     {"__name__": "__main__"})
            ran.append(out.getvalue())
            if "hessian_top_eigenvalue(" in text:  # the README's `sgdlab measure` comes next
                cli("measure", train_id, "--what", "hessian", "--subset", "64",
                    "--probes", "5", "--k", "2", "--out", "measured")
    assert len(ran) == 4, "README python blocks"
    assert ran[0].startswith("finished ")
    assert ran[1].startswith("λ_max")
    store = RunStore()
    experiments = {r["experiment"] for r in store.list_runs(status="finished")}
    assert {None, "zhu-escape-2d"} <= experiments
    # the store snippet found the training run although newer runs have no test accuracy
    assert ran[3].startswith("digits-mlp [(") and ran[3].rstrip().endswith("{}")
    assert "measure/hess/top_1" in store.metrics(train_id)
    # what the README lists in a training run's folder and its results.json is there
    files, results_keys = train_folder_contents()
    folder = tmp_path / train_id
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} <= files
    assert set(results_keys) == set(json.loads((folder / "results.json").read_text()))
    # the keys the README lists for an experiment's results.json are those it holds
    results = json.loads((tmp_path / "zhu-escape" / "results.json").read_text())
    listed = experiment_results_keys()
    assert set(listed) == set(results)
    for key, record in (("conclusions", results["conclusions"][0]),
                        ("tables", results["tables"][0]), ("figures", results["figures"][0]),
                        ("runs", results["runs"][0])):
        assert set(listed[key]) == set(record), key


def test_the_store_snippet_on_a_store_without_a_training_run_says_so(tmp_path, monkeypatch):
    """On an empty store the snippet ended on a bare StopIteration of its ``next(...)``."""
    (snippet,) = [t for lang, t in blocks() if lang == "python" and "RunStore()" in t]
    monkeypatch.setenv("SGDLAB_STORE", str(tmp_path / "runs.sqlite"))
    with pytest.raises(SystemExit, match="no finished training run in .*runs.sqlite: run "
                                         "`sgdlab train` first"):
        exec(compile(snippet, "README.md store block", "exec"), {"__name__": "__main__"})


def train_folder_contents() -> tuple[set[str], list[str]]:
    """The files the README lists in the folder of a `sgdlab train` run, and the keys it lists
    for their `results.json`."""
    text = re.sub(r"\s+", " ", README.read_text())
    listed = re.search(r"Each run gets a folder \(.*?\) with (.*?)\. `results\.json` is strict",
                       text).group(1)
    top = re.sub(r"\([^()]*\)", "", listed)
    results = re.search(r"`results\.json` \((.*?) — ", listed).group(1)
    return set(re.findall(r"`([\w/.]+)`", top)), re.findall(r"`(\w+)`", results)


def experiment_results_keys() -> dict[str, list[str]]:
    """The README's `results.json` keys of an experiment: each key, with the fields it lists
    for the records of the lists (`tables` (a list of `{name, ...}`), `runs` (`key`, ...))."""
    text = re.sub(r"\s+", " ", README.read_text())
    text = text.split("`results.json` keys: ", 1)[1].split(". `python -m", 1)[0]
    keys, depth, start = {}, 0, 0
    for i, ch in enumerate(text + ","):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            item = text[start:i].strip()
            name = re.match(r"`(\w+)`", item).group(1)
            inner = item[len(name) + 2:]
            fields = re.search(r"\{([^}]*)\}", inner)
            keys[name] = (fields.group(1).replace(" ", "").split(",") if fields
                          else re.findall(r"`(\w+)`", inner.split(";")[0]))
            start = i + 1
    return keys


def test_ci_runs_the_readme_test_command():
    readme_cmd = next(t for lang, t in blocks() if lang == "bash" and "pytest" in t).strip()
    ci = (README.parent / ".ci" / "run").read_text()
    assert readme_cmd in ci.splitlines()
    assert '".[test,tensorboard,ray]"' in readme_cmd


def test_the_tables_measurements_import_from_where_the_column_says():
    # column "measurements (`sgdlab.measure`, instruments)": every name in it is a function or
    # class of sgdlab.measure (or of the landscapes it pairs them with), an instrument, or an
    # instrument's option
    import sgdlab.landscapes
    import sgdlab.landscapes.sde
    import sgdlab.measure
    from sgdlab.train.instruments import instrument_params, instruments

    header, _, *rows = [line for line in README.read_text().splitlines()
                        if line.startswith("|")]
    column = header.split(" | ").index("measurements (`sgdlab.measure`, instruments)")
    options = {p for name in instruments() for p in (instrument_params(name) or {})}
    missing = []
    for row in rows:
        for name in re.findall(r"`([A-Za-z_]\w*)`", row.split(" | ")[column]):
            if not (name in instruments() or name in options
                    or any(hasattr(m, name) for m in (sgdlab.measure, sgdlab.landscapes,
                                                      sgdlab.landscapes.sde))):
                missing.append(name)
    assert missing == []


def test_the_readmes_load_dataset_signature_is_the_functions():
    # it showed seed as positional: load_dataset("digits", 1) is a TypeError
    import inspect

    from sgdlab.data import load_dataset

    shown = re.search(r"`load_dataset\((.*?)\)` returns", README.read_text(), re.S).group(1)
    shown = [p.strip() for p in shown.split(",")]
    params = []
    for p in inspect.signature(load_dataset).parameters.values():
        if p.kind is p.KEYWORD_ONLY and params[-1:] == ["name"]:
            params.append("*")
        params.append(f"**{p.name}" if p.kind is p.VAR_KEYWORD else
                      p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    assert shown == params


def test_the_tables_catalogue_column_lists_every_entry():
    # column "catalogue entries (`sgdlab run NAME`)": every entry of `sgdlab list`, and no other
    from sgdlab.experiments.spec import catalogue_files

    header, _, *rows = [line for line in README.read_text().splitlines()
                        if line.startswith("|")]
    column = header.split(" | ").index("catalogue entries (`sgdlab run NAME`) |")
    shown = {name for row in rows
             for name in re.findall(r"`([a-z0-9-]+)`", row.split(" | ")[column])}
    assert shown == set(catalogue_files())


def test_readme_commands_parse_as_written(tmp_path):
    """Every `sgdlab` command of the README's bash blocks parses with the current options; a
    synopsis (`[--status S]`, `RUN_ID`) uses only options its command has; `sgdlab run`
    names a catalogue entry."""
    import argparse
    import shlex

    from sgdlab.cli.main import build_parser
    from sgdlab.experiments.spec import catalogue_files, catalogue_papers

    def command(words: list[str]) -> argparse.ArgumentParser:
        parser = build_parser()
        for w in words:
            sub = next((a.choices for a in parser._actions
                        if isinstance(a, argparse._SubParsersAction)), {})
            if w not in sub:
                break
            parser = sub[w]
        return parser

    lines = [ln for lang, text in blocks() if lang == "bash"
             for ln in text.replace("\\\n", " ").splitlines() if ln.startswith("sgdlab ")]
    assert len(lines) >= 30
    for line in lines:
        argv = [w.replace("~", str(tmp_path)) for w in shlex.split(line, comments=True)[1:]]
        options = {s for a in command(argv)._actions for s in a.option_strings}
        assert {w for w in re.findall(r"--[a-z][\w-]*", " ".join(argv))} <= options, line
        if "[" in line:
            continue
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:          # --version exits 0 once it has printed
            assert e.code == 0, f"README command does not parse: {line}"
            continue
        if args.command == "run" and args.paper is not None:
            assert args.paper in [*catalogue_papers(), "all"], line
        elif args.command == "run":
            assert args.name in catalogue_files(), line


def test_the_optimizer_paragraph_names_those_built_with_the_model_and_every_registered_one():
    # `annealed-noise` needs the model (its spin-glass order p) as `trivialized` does, but was
    # missing from the names for which the README says to use build_optimizer_for
    from sgdlab.optim.gld import StructuredNoiseGD
    from sgdlab.optim.registry import OPTIMIZERS, needs_model

    text = re.sub(r"\s+", " ", README.read_text())
    with_model = re.search(r"for those that need the model \((.*?)\)\. Registered: (.*?)\. ",
                           text)
    named = set(re.findall(r"`([a-z][\w-]*)`", with_model.group(1)))
    assert "the GLD family" in with_model.group(1)
    assert named == {name for name, cls in OPTIMIZERS.items()
                     if needs_model(cls) and not issubclass(cls, StructuredNoiseGD)}
    assert set(re.findall(r"`([a-z][\w-]*)`", with_model.group(2))) == set(OPTIMIZERS)


def test_the_readmes_count_of_findings_is_results_mds():
    """The README sums up docs/RESULTS.md (findings over entries, agree / disagree /
    inconclusive): the sums are RESULTS.md's overview rows' (they had drifted apart, 78 vs 80
    agreeing findings), and RESULTS.md's own totals line is the same sum."""
    results = (README.parent / "docs" / "RESULTS.md").read_text()
    rows = re.findall(r"^\| \[[a-z0-9-]+\]\(#[a-z0-9-]+\) \|.*\| (\d+) / (\d+) / (\d+) \|$",
                      results, re.M)
    a, d, o = (sum(int(r[i]) for r in rows) for i in range(3))
    assert (f"{len(rows)} experiments, {a} findings agree with the paper's claim, {d} disagree, "
            f"{o} are inconclusive") in results
    said = " ".join(README.read_text().split())
    assert (f"of {a + d + o} findings over {len(rows)} entries, {a} agree, {d} disagree and {o} "
            "are inconclusive") in said


def test_the_plugin_block_runs_as_written(tmp_path, monkeypatch, request):
    """The block that registers a model of one's own trained on `data: {file: data.pt}`,
    a file the README never wrote: it ended on "data file not found". Its heredoc and its
    `python -c` run as written; its `sgdlab train` with one epoch and no instruments."""
    import shlex
    import sys

    from sgdlab.models import MODELS

    (block,) = [t for lang, t in blocks() if lang == "bash" and "--plugin ./my_models.py" in t]
    # the plugin's model and module go with the test (a later test's own my_models.py, or
    # `sgdlab models`, saw them)
    assert "my-linear" not in MODELS and "my_models" not in sys.modules
    request.addfinalizer(lambda: (MODELS.pop("my-linear", None),
                                  sys.modules.pop("my_models", None)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGDLAB_STORE", str(tmp_path / "runs.sqlite"))
    monkeypatch.setenv("SGDLAB_THREADS", "1")
    name = re.match(r"# (\S+\.yaml)\n", next(t for lang, t in blocks() if lang == "yaml"))
    (tmp_path / name.group(1)).write_text(next(t for lang, t in blocks() if lang == "yaml"))
    heredoc = re.search(r"cat > (\S+) <<'EOF'\n(.*?)^EOF\n(.*)", block, re.S | re.M)
    (tmp_path / heredoc.group(1)).write_text(heredoc.group(2))
    words = shlex.split(heredoc.group(3).replace("\\\n", " "))
    assert words[:2] == ["python", "-c"]
    exec(compile(words[2], "README.md python -c", "exec"), {"__name__": "__main__"})
    assert words[3] == "sgdlab"
    cli(*words[4:], "--set", "train.epochs=1", "--set", "measure=[]", "--no-progress")
    (run,) = RunStore().list_runs(status="finished")
    assert run["config"]["model"]["name"] == "my-linear"


def test_the_instruments_paragraph_names_every_registered_instrument():
    # `min_abs_grad` and `field_alignment` were registered but missing from the paragraph
    from sgdlab.train.instruments import instruments

    text = README.read_text()
    start = text.index("Instruments (`measure:`")
    paragraph = text[start:start + re.search(r"They are\s+callbacks", text[start:]).start()]
    # other tests in the same process register private `_test_*` instruments
    packaged = {n for n in instruments() if not n.startswith("_")}
    assert "hessian" in packaged
    assert packaged <= set(re.findall(r"`([a-z_]+)`", paragraph))


def test_the_readmes_relative_links_name_existing_pages_and_anchors():
    # the GUIDE's links are checked in tests/test_guide.py; the README's were not
    text = README.read_text()
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if "://" in link:
            continue
        path, _, anchor = link.partition("#")
        page = README.parent / path
        assert page.exists(), f"README links to a missing page: {link}"
        if anchor:
            assert anchor in markdown_anchors(page), f"README links to a missing anchor: {link}"
