"""docs/GUIDE.md as a user reads it: every Python example runs as written, in GUIDE order, each in
a fresh namespace, in a fresh directory with a fresh run store and one torch thread, and prints
what the comments beside it say; every `sgdlab` command of its bash blocks parses and names a
catalogue entry where it runs one; the options its inline commands show exist; the metric names
it quotes are the ones the instruments and `sgdlab measure` record.

The examples are small by design (the GUIDE promises seconds on a laptop CPU), so they run at
their printed sizes: all of them together take about 30 s on one thread."""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import re
import shlex
from pathlib import Path

import pytest
import torch

from sgdlab.cli.main import build_parser
from sgdlab.experiments.spec import catalogue_files, catalogue_papers
from sgdlab.testing import FENCED_BLOCK, fenced_blocks, markdown_anchors

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "GUIDE.md"


def blocks(lang: str) -> list[str]:
    return [b.code for b in fenced_blocks(GUIDE.read_text(), lang)]


def prose() -> str:
    """The GUIDE without its fenced blocks, line breaks inside inline code joined."""
    return re.sub(r"\s*\n\s*", " ", FENCED_BLOCK.sub("", GUIDE.read_text()))


def _floats(line: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", line)]


# What each example's comments promise, keyed by a line of the example (not its position, so
# that a new example does not shift the checks). Each gets the example's printed lines.
def _musso(out: list[str]) -> None:
    trace = _floats(out[3])
    assert trace[0] == pytest.approx(0.2) and trace[3] == pytest.approx(0.1)   # 2l, l at τ = 3
    assert trace[6] == pytest.approx(0.0, abs=1e-12)                              # 0 at τ = 6
    t60, t30 = _floats(out[4])
    assert t60 == pytest.approx(t30)                                              # Fig. 5's pair
    assert _floats(out[5])[0] == pytest.approx(1e-4)                              # -> 1e-4


def _zhu(out: list[str]) -> None:
    assert out[0].startswith("residual")
    assert any(line.startswith("GD-stable only for eta < 0.00974") for line in out)
    assert sum(line.startswith(("GD ", "GLD ", "SGD ")) for line in out) == 7   # 7 methods


def _chaudhari(out: list[str]) -> None:
    assert [line.split()[0] for line in out[:3]] == ["entropy_sgd", "hj", "heat"]
    argmins = {line.rsplit(" argmin ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in out if " argmin " in line}
    # smoothing picks the wide well at -1.3 over the narrow, deeper one at 1.5
    assert argmins["f"] == pytest.approx(1.5) and argmins["local entropy"] == pytest.approx(-1.3)


def _quadratic(out: list[str]) -> None:
    for line in out:                       # lr S lr/S excess ... theory
        lr, s, ratio, excess, *_, theory = _floats(line)
        assert excess == pytest.approx(theory, rel=0.15)


def _surface(out: list[str]) -> None:
    at_model, lowest = _floats(out[0])
    assert at_model >= lowest and math.isfinite(at_model)
    assert Path("path_plane.png").stat().st_size > 0


def _batch(out: list[str]) -> None:
    tests = [_floats(line)[1] for line in out[:3]]          # b, θ_norm for b = 8, 32, 128
    assert tests[0] > tests[1] > tests[2]                   # shrinks with B
    assert out[3].startswith("B_simple") and _floats(out[3])[0] > 0


def _own_loop(out: list[str]) -> None:
    steps = [int(v) for v in re.findall(r"\((\d+), ", out[0])]
    assert steps == [0, 4, 8]                               # every=4 over 8 steps
    assert out[1].endswith("train mode: True")              # the instruments restore it



def _closure_loop(out: list[str]) -> None:
    assert out[0].endswith("inner steps 50")                # L = 5 closure calls per step


def _own_model(out: list[str]) -> None:
    assert out[0].startswith("finished test_acc")
    (_, lmax), (_, trace) = re.findall(r"\((\d+), ([\d.e-]+)\)", out[1])
    after = _floats(out[2])                                 # λ_max, Tr H, Tr Σ at the end
    assert after[0] == pytest.approx(float(lmax), abs=1e-4)  # the callback's last point
    assert after[2] == pytest.approx(float(trace), abs=1e-4)  # noise on all 200 examples
    assert out[3] == "100 gradient evaluations in 20 steps"  # L = 5 per Entropy-SGD step


def _from_torch(out: list[str]) -> None:
    assert out[0] == "Dataset(unnamed: train (200, 10), test (100, 10), task=classification)"
    assert out[1].startswith("finished test_acc") and _floats(out[1])[0] > 0.8


CHECKS = {
    "lmax = MeasurementCallback(": _own_model,
    'opt = build_optimizer("random-lr-sgd"': _musso,
    "land = TwoBasin()": _zhu,
    "cfg = ParleConfig(": _chaudhari,
    "q = Quadratic(H, num_samples=100)": _quadratic,
    "fig = loss_surface_figure(": _surface,
    "st = batch_statistics(": _batch,
    "ctx = TrainContext(": _own_loop,
    "stream = batches()": _closure_loop,
    "data = Dataset.from_torch(": _from_torch,
}


def _example_id(text: str) -> str:
    return next((m for m in CHECKS if m in text), text.split("\n")[-2][:40])


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_guide_links_resolve():
    """Every relative link of the GUIDE names an existing page, and an anchor of it."""
    links = re.findall(r"\]\(([^)\s]+)\)", prose())
    local = [link for link in links if not link.startswith(("http:", "https:"))]
    assert len(local) >= 5
    for link in local:
        path, _, anchor = link.partition("#")
        page = (GUIDE.parent / path).resolve() if path else GUIDE    # "#anchor": this page
        assert page.exists(), f"GUIDE links to a missing page: {link}"
        if anchor:
            assert anchor in markdown_anchors(page), f"GUIDE links to a missing anchor: {link}"


def test_guide_has_its_examples():
    assert len(blocks("python")) >= 8
    assert all(sum(m in t for t in blocks("python")) == 1 for m in CHECKS), "CHECKS markers"


@pytest.mark.parametrize("index", range(len(blocks("python"))),
                         ids=[_example_id(t) for t in blocks("python")])
def test_guide_python_example_runs(index, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGDLAB_STORE", str(tmp_path / "runs.sqlite"))
    monkeypatch.setenv("SGDLAB_THREADS", "1")
    text = blocks("python")[index]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(text, f"GUIDE.md python block {index + 1}", "exec"), {"__name__": "__main__"})
    lines = out.getvalue().splitlines()
    assert lines, "every example prints its result"
    for marker, check in CHECKS.items():
        if marker in text:
            check(lines)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions
                 if isinstance(a, argparse._SubParsersAction)), {})


def _command_parser(words: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser of `sgdlab WORDS...`: `sgdlab runs compare` is a nested one."""
    parser = build_parser()
    for w in words:
        sub = _subparsers(parser)
        if w not in sub:
            break
        parser = sub[w]
    return parser


def test_guide_bash_commands_parse(tmp_path):
    catalogue = set(catalogue_files())
    lines = [ln for t in blocks("bash") for ln in t.splitlines() if ln.startswith("sgdlab ")]
    assert len(lines) >= 40
    for line in lines:
        argv = [w.replace("~", str(tmp_path)) for w in shlex.split(line, comments=True)[1:]]
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"GUIDE command does not parse: {line}")
        if args.command == "run" and args.paper is not None:
            assert args.paper in [*catalogue_papers(), "all"], line
        elif args.command == "run" and args.config is None:
            assert args.name in catalogue, line
    # the distributed trainer the GUIDE launches with torchrun
    torchrun = [ln for t in blocks("bash") for ln in t.splitlines() if ln.startswith("torchrun")]
    assert torchrun and all("-m sgdlab.train.distributed " in ln for ln in torchrun)
    from sgdlab.train.distributed import main as distributed_main
    assert callable(distributed_main)


def test_guide_inline_commands_use_existing_options():
    spans = re.findall(r"`(sgdlab [^`]+)`", prose())
    assert len(spans) >= 10
    checked = 0
    for span in spans:
        words = span.split()[1:]
        parser = _command_parser(words)
        options = {s for a in parser._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", span):
            assert flag in options, f"`{span}`: {flag} is no option of {parser.prog}"
            checked += 1
        choices = _subparsers(parser)
        if words and choices and words[0] not in ("OUT_DIR", "NAME", "RUN", "CONFIG"):
            assert words[0] in choices or words[0].startswith(("-", "[")), span
    assert checked >= 30


def test_guide_metric_names_are_recorded(tmp_path, monkeypatch, one_thread):
    """The `batch/...` and `step/...` series the GUIDE names, recorded by the instruments on a
    tiny run, and `sgdlab measure --what batch,surface`'s scalars (stored under `measure/`)."""
    from torch import nn

    from sgdlab.cli.main import main
    from sgdlab.data import load_dataset
    from sgdlab.models import build_model
    from sgdlab.store import RunStore
    from sgdlab.train import train
    from sgdlab.train.callbacks import Schedule
    from sgdlab.train.instruments import build_instrument

    torch.set_num_threads(1)
    named = set(re.findall(r"`((?:batch|step|surface)/[a-z_]+)`", prose()))
    assert {"batch/tic_trace", "step/alpha", "surface/origin_loss"} <= named
    torch.manual_seed(0)
    ds = load_dataset("digits", flatten=True, n_train=128, n_test=32)
    model = build_model("mlp", ds.meta["input_shape"], 10, widths=[8])
    every = Schedule.every(2)
    callbacks = [build_instrument("batch_statistics", schedule=every, tic="ggn",
                                  curvature="hessian"),
                 build_instrument("step_length", schedule=every, eval_subset=64)]
    r = train(model, nn.CrossEntropyLoss(), ds, torch.optim.SGD(model.parameters(), lr=0.1),
              epochs=1, batch_size=32, callbacks=callbacks, progress=False)
    recorded = set(r.history)
    assert {n for n in named if not n.startswith("surface/")} <= recorded

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGDLAB_STORE", str(tmp_path / "runs.sqlite"))
    monkeypatch.setenv("SGDLAB_THREADS", "1")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", "digits-mlp", "--set", "train.epochs=1", "--no-progress"]) == 0
        run_id = re.search(r"^run (\S+): finished", out.getvalue(), re.M).group(1)
        assert main(["measure", run_id, "--what", "batch,surface", "--subset", "64",
                     "--batch-size", "16", "--batches", "2", "--steps", "3",
                     "--out", "measured"]) == 0
    stored = set(RunStore().metrics(run_id))
    assert {f"measure/{n}" for n in named if n.startswith(("batch/tic", "surface/"))} <= stored


def test_the_experiment_of_ones_own_plans_as_written(tmp_path, monkeypatch, request):
    """The section's plugin heredoc and `python -c` run as written, and its experiment file,
    with them, plans its six runs on the file's 400 examples with no problem: what its
    `sgdlab run --config` lines run (trained in seconds; the test trains nothing)."""
    import shlex
    import sys

    from sgdlab.experiments.plan import plan_experiment
    from sgdlab.models import MODELS
    from sgdlab.plugins import import_plugins

    text = GUIDE.read_text()
    start = text.index("## An experiment of your own")
    section = text[start:text.index("\n## ", start + 1)]
    setup, commands = [b.code for b in fenced_blocks(section, "bash")]
    (experiment,) = [b.code for b in fenced_blocks(section, "yaml")]
    # the plugin's model and module go with the test (a later test's registry saw them)
    assert "my-mlp" not in MODELS and "my_models" not in sys.modules
    request.addfinalizer(lambda: (MODELS.pop("my-mlp", None), sys.modules.pop("my_models", None)))
    monkeypatch.chdir(tmp_path)
    heredoc = re.search(r"cat > (\S+) <<'EOF'\n(.*?)^EOF\n(.*)", setup, re.S | re.M)
    (tmp_path / heredoc.group(1)).write_text(heredoc.group(2))
    words = shlex.split(heredoc.group(3))
    assert words[:2] == ["python", "-c"]
    exec(compile(words[2], "GUIDE.md python -c", "exec"), {"__name__": "__main__"})
    name = re.match(r"# (\S+\.yaml)\n", experiment).group(1)
    (tmp_path / name).write_text(experiment)
    runs = [shlex.split(ln, comments=True) for ln in commands.splitlines()
            if ln.startswith("sgdlab run ")]
    assert runs and all(w[2:6] == ["--config", name, "--plugin", "./my_models.py"] for w in runs)
    import_plugins(["./my_models.py"])
    plan = plan_experiment(name, store_path=str(tmp_path / "s.sqlite"), out_dir=tmp_path / "o")
    assert plan.problems == []
    assert [p.run.run_name for p in plan.runs] == [
        f"{g}|seed={s}" for g in ("sgd", "entropy-sgd", "random-lr") for s in (0, 1)]
    (need,) = plan.files
    assert need.train_size.n == 400 and need.found


def test_readings_the_docs_name_exist():
    # `--reading KEY=CHOICE` in the docs is a command a reader types: a choice that no entry
    # offers is refused by `sgdlab run`
    import yaml

    offered = set()
    for path in catalogue_files().values():
        for key, reading in (yaml.safe_load(Path(path).read_text()).get("readings") or {}).items():
            offered |= {(key, str(c)) for c in reading["choices"]}
    root = GUIDE.parent.parent
    pattern = r"--reading ([a-z][a-z0-9-]*)=([a-z0-9][\w-]*(?:\.\d+)?)"   # not KEY=CHOICE
    named = [(doc.name, key, choice)
             for doc in (GUIDE, root / "docs" / "FIDELITY.md", root / "README.md")
             for key, choice in re.findall(pattern, doc.read_text())]
    assert len(named) >= 20
    missing = [n for n in named if n[1:] not in offered]
    assert not missing, f"readings no catalogue entry offers: {missing}"
