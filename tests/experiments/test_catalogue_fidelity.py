"""The catalogue quotes the papers: every ``paper.quote`` is a passage of the paper's text.

The paper texts are not shipped with sgdlab (they are the authors' prose); the check against
them runs where they are at hand: ``$SGDLAB_PAPERS`` or ``../shared/papers`` beside the
repository. The structural checks run everywhere.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from sgdlab.cli.main import main as cli
from sgdlab.errors import ConfigError
from sgdlab.experiments.spec import catalogue_files, read_file, resolve, validate_raw

ROOT = Path(__file__).resolve().parents[2]
FILES = catalogue_files()


def _papers_dir() -> Path | None:
    for p in (os.environ.get("SGDLAB_PAPERS"), ROOT.parent / "shared" / "papers"):
        if p and Path(p).is_dir() and any(Path(p).glob("*.txt")):
            return Path(p)
    return None


def _norm(text: str) -> str:
    """Letters and digits only: PDF-to-text line breaks, hyphenation spaces and LaTeX spacing
    must not decide whether a quote matches."""
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def _quotes(raw: dict) -> list[tuple[str, str]]:
    paper = raw["paper"]
    out = [(paper["quote"], paper["where"])] if "quote" in paper else []
    return out + [(q["quote"], q["where"]) for q in paper.get("quotes", [])]


@pytest.fixture(scope="module")
def paper_texts() -> list[str]:
    d = _papers_dir()
    if d is None:
        pytest.skip("paper texts not at hand (set SGDLAB_PAPERS to the folder of .txt files)")
    return [_norm(p.read_text(errors="ignore")) for p in sorted(d.glob("*.txt"))]


@pytest.mark.parametrize("name", list(FILES))
def test_quotes_are_passages_of_the_papers(name, paper_texts):
    raw = read_file(FILES[name])
    for quote, where in _quotes(raw):
        assert len(_norm(quote)) >= 30, f"{name}: quote too short to identify a passage"
        assert where.strip(), f"{name}: quote without a location"
        assert any(_norm(quote) in t for t in paper_texts), \
            f"{name}: quote not found in the paper texts: {quote[:80]!r}"


def test_quote_and_location_go_together():
    raw = read_file(next(iter(FILES.values())))
    raw["paper"] = {k: v for k, v in raw["paper"].items() if k not in ("quote", "where")}
    raw["paper"]["quote"] = "a passage without a location"
    with pytest.raises(ConfigError, match="'quote' and 'where' go together"):
        validate_raw(raw, "x.yaml")
    raw["paper"]["where"] = "§1"
    raw["paper"]["quotes"] = [{"quote": "another passage"}]
    with pytest.raises(ConfigError, match=r"quotes\[0\]: missing string key 'where'"):
        validate_raw(raw, "x.yaml")


def test_deviations_reach_the_resolved_spec_and_reject_non_text():
    raw = read_file(next(iter(FILES.values())))
    raw.setdefault("scales", {}).setdefault("cpu", {})["deviations"] = ["digits, not MNIST"]
    assert resolve(raw, "cpu", "x.yaml").deviations == ["digits, not MNIST"]
    assert resolve(raw, "cpu", "x.yaml").describe()["deviations"] == ["digits, not MNIST"]
    raw["scales"]["cpu"]["deviations"] = [3]
    with pytest.raises(ConfigError, match="cpu.deviations: expected a list of sentences"):
        validate_raw(raw, "x.yaml")


def test_list_json_carries_quotes_and_deviations(capsys):
    assert cli(["list", "--json"]) == 0
    items = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    for name, path in FILES.items():
        raw = read_file(path)
        item = items[name]
        assert item["paper"]["where"] == raw["paper"].get("where")
        assert item["paper"]["quote"] == (" ".join(raw["paper"]["quote"].split())
                                          if "quote" in raw["paper"] else None)
        for scale, ov in (raw.get("scales") or {}).items():
            if ov and "deviations" in ov:
                assert item["deviations"][scale] == ov["deviations"]


@pytest.mark.parametrize("name", list(FILES))
def test_every_entry_quotes_its_claim_and_lists_its_departures(name):
    raw = read_file(FILES[name])
    paper = raw["paper"]
    for key in ("claim", "quote", "where"):
        assert isinstance(paper.get(key), str) and paper[key].strip(), f"{name}: paper.{key}"
    for scale in ("cpu", "paper"):
        devs = (raw.get("scales") or {}).get(scale, {}).get("deviations")
        assert isinstance(devs, list), f"{name}: scales.{scale}.deviations is not listed"
    # the cpu scale always departs somewhere (data, size or budget): an empty list would hide it
    assert raw["scales"]["cpu"]["deviations"], f"{name}: cpu scale lists no departure"


# training-set sizes of the datasets whose runs cap their length with max_steps
TRAIN_SIZES = {"mnist_small": 4000, "digits": 1437, "cifar10": 50000}


@pytest.mark.parametrize("name", sorted(catalogue_files()))
def test_a_run_capped_by_max_steps_has_epochs_enough_to_reach_it(name):
    # the run ends at the earlier of the two: too few epochs cut it short without a word,
    # and runs compared "for the same number of updates" then are not
    import math

    from sgdlab.experiments.spec import load_experiment

    for scale in ("smoke", "cpu", "paper"):
        for r in load_experiment(name, scale).expand(data_dir="/d"):
            p = r.params
            if "max_steps" not in p or "epochs" not in p or p.get("batch_size") == "full":
                continue
            ds = p.get("dataset") or {}
            n = ds.get("n_train") or TRAIN_SIZES[ds["name"]]
            steps = math.ceil(n / min(int(p["batch_size"]), n)) * p["epochs"]
            assert steps >= p["max_steps"], (
                f"{name} [{scale}] {r.label}: {p['epochs']} epochs of "
                f"{math.ceil(n / p['batch_size'])} steps stop at {steps} < max_steps "
                f"{p['max_steps']}")
