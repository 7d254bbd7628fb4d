"""The catalogue quotes the papers: every ``paper.quote`` is a passage of the paper's text.

The paper texts are not shipped with sgdlab (they are the authors' prose); the check against
them runs where they are at hand: ``$SGDLAB_PAPERS`` or ``../shared/papers`` beside the
repository. The structural checks run everywhere.
"""
from __future__ import annotations

import json
import re

import pytest

from sgdlab.cli.main import main as cli
from sgdlab.errors import ConfigError
from sgdlab.experiments.spec import catalogue_files, read_file, resolve, validate_raw

FILES = catalogue_files()


def _norm(text: str) -> str:
    """Letters and digits only: PDF-to-text line breaks, hyphenation spaces and LaTeX spacing
    must not decide whether a quote matches."""
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def _quotes(raw: dict) -> list[tuple[str, str]]:
    paper = raw["paper"]
    out = [(paper["quote"], paper["where"])] if "quote" in paper else []
    return out + [(q["quote"], q["where"]) for q in paper.get("quotes", [])]


@pytest.fixture(scope="module")
def paper_texts(papers_folder) -> dict[str, str]:
    d = papers_folder
    if d is None:
        pytest.skip("paper texts not at hand (set SGDLAB_PAPERS to the folder of .txt files)")
    return {p.stem: p.read_text(errors="ignore") for p in sorted(d.glob("*.txt"))}


def _own_paper(raw: dict, texts: dict[str, str]) -> str:
    """The text of the entry's paper: the file named after its first author
    (``xing-2018-walk-with-sgd.txt`` for "Xing, Arpit, ...")."""
    surname = raw["paper"]["author"].split(",")[0].split()[0].lower()
    found = [t for stem, t in texts.items() if stem.startswith(surname + "-")]
    assert len(found) == 1, f"no single paper text for author {surname!r}: {sorted(texts)}"
    return found[0]


def _cited_lines(where: str) -> list[tuple[int, int]]:
    """``line 81`` / ``lines 97-99`` in a location, as (first, last) line numbers."""
    return [(int(a), int(b or a)) for a, b in re.findall(r"lines? (\d+)(?:\s*[-–]\s*(\d+))?",
                                                            where)]


def _misplaced(quote: str, where: str, text: str) -> str | None:
    """What is wrong with ``quote`` as a passage of ``text`` at ``where`` (None: nothing): too
    short to identify a passage, not in the text (letters and digits compared), no line cited,
    or not beginning within 3 lines of a line cited (PDF-to-text wraps)."""
    if len(_norm(quote)) < 30:
        return "quote too short to identify a passage"
    if not where.strip():
        return "quote without a location"
    if _norm(quote) not in _norm(text):
        return f"quote not found in its paper's text: {quote[:80]!r}"
    cited = _cited_lines(where)
    if not cited:
        return f"location {where!r} cites no line of the paper's text"
    lines = text.splitlines()
    near = [_norm(" ".join(lines[max(0, a - 4):b + 3])) for a, b in cited]
    if not any(_norm(quote)[:40] in w for w in near):
        return f"quote not at {where!r}: {quote[:60]!r}"
    return None


@pytest.mark.parametrize("name", list(FILES))
def test_quotes_are_passages_of_the_papers(name, paper_texts):
    """Each quote is a passage of the entry's own paper (not of any of the five), and where
    its location cites a line, the passage starts there (within 3 lines: PDF-to-text wraps)."""
    raw = read_file(FILES[name])
    text = _own_paper(raw, paper_texts)
    for quote, where in _quotes(raw):
        problem = _misplaced(quote, where, text)
        assert problem is None, f"{name}: {problem}"


# a paper of 30 lines whose passage starts at line 15 and is hyphenated across line 16; the
# filler lines share the passage's first letters ("there") but not its first 40
_PASSAGE = ("The results show that Entropy-SGD obtains a compa-\n"
            "rable error of $1.37 \\pm 0.03\\%$ on mnistfc.")
_PAPER = "\n".join([f"Filler {k}: there is more." for k in range(1, 15)] + [_PASSAGE]
                   + [f"Filler {k}: there is more." for k in range(17, 31)])
_QUOTE = "The results show that Entropy-SGD obtains a comparable error of $1.37 \\pm 0.03\\%$"


def test_a_quote_is_found_on_the_lines_its_location_cites_within_three_either_side():
    assert _PAPER.splitlines()[14].startswith("The results")          # line 15, 1-based
    for where in ("line 15", "lines 15-16", "lines 15–16", "line 12", "line 18",
                  "lines 2-12", "§3, line 99 and line 13"):
        assert _misplaced(_QUOTE, where, _PAPER) is None, where
    # a passage 4 lines after the first cited line or the last one, or 4 lines before it
    for where in ("line 11", "line 19", "lines 2-11", "lines 19-25"):
        assert "quote not at" in _misplaced(_QUOTE, where, _PAPER), where


def test_a_wrong_quote_a_location_without_a_line_and_a_short_quote_each_fail():
    for wrong in (_QUOTE.replace("1.37", "1.39"),           # digits count
                  _QUOTE.replace("error", "errors"), _QUOTE.replace("comparable", "similar"),
                  _QUOTE + " and on lenet"):
        assert "not found in its paper's text" in _misplaced(wrong, "line 15", _PAPER), wrong
    assert "cites no line" in _misplaced(_QUOTE, "§3.3.2, Fig. 3.5", _PAPER)
    assert "without a location" in _misplaced(_QUOTE, "  ", _PAPER)
    assert "too short" in _misplaced("The results show that Entropy", "line 15", _PAPER)


def test_a_quote_is_checked_against_its_own_papers_text_only():
    other = "\n".join(f"Another paper, line {k}." for k in range(1, 31))
    texts = {"xing-2018-walk-with-sgd": other, "zhu-2019-anisotropic-noise": _PAPER,
             "zhuang-2020-other": _PAPER}
    zhu = {"paper": {"author": "Zhu, Zhanxing, Wu, Jingfeng", "quote": _QUOTE,
                     "where": "line 15"}}
    xing = {"paper": {"author": "Xing, Chen, Arpit, Devansh", "quote": _QUOTE,
                      "where": "line 15"}}
    assert _misplaced(_QUOTE, "line 15", _own_paper(zhu, texts)) is None
    # Zhu et al.'s passage quoted by an entry of Xing et al.'s paper: not in that paper
    assert "not found" in _misplaced(_QUOTE, "line 15", _own_paper(xing, texts))
    with pytest.raises(AssertionError, match="no single paper text for author 'zhu'"):
        _own_paper(zhu, {**texts, "zhu-2020-second": other})


def test_every_quote_of_an_entry_is_checked():
    raw = {"paper": {"quote": "first", "where": "line 1",
                     "quotes": [{"quote": "second", "where": "line 2"},
                                {"quote": "third", "where": "lines 3-4"}]}}
    assert _quotes(raw) == [("first", "line 1"), ("second", "line 2"), ("third", "lines 3-4")]
    assert _quotes({"paper": {"quotes": [{"quote": "only", "where": "l. 9"}]}}) == [
        ("only", "l. 9")]
    assert _cited_lines("§2, lines 97-99 and line 81; lines 5 – 6") == [(97, 99), (81, 81),
                                                                        (5, 6)]


def _spaced(text: str) -> str:
    """Runs of white space (line breaks included) as one space."""
    return re.sub(r"\s+", " ", text).strip()


def _readings(text: str) -> list[str]:
    """The paper's text as a quote may copy it: with its line breaks and runs of spaces as one
    space, and also with a word the text hyphenates at a line end ("covari-" / "ance") whole."""
    joined = re.sub(r"(?<=[^\W\d_])-[ \t]*\n\s*(?=[a-z])", "", text)
    return [_spaced(text)] + ([_spaced(joined)] if joined != text else [])


def _verbatim(quote: str, text: str) -> bool:
    """Whether ``quote`` is a passage of ``text`` character for character up to white space,
    its own edits marked in square brackets as scholarly quotes do: an omission "[…]", a word
    changed or added "[is]". The pieces between the brackets are then passages of the text, in
    order, each within 300 characters of the one before. A bracket the paper has itself (a
    citation "[10]") is copied as it stands and matches as part of the passage."""
    quote = _spaced(quote)
    for t in _readings(text):
        if quote in t:
            return True
        pieces = [p.strip() for p in re.split(r"\[[^\]]*\]", quote)]
        pieces = [p for p in pieces if p]
        if "[" not in quote or not pieces:
            continue
        for start in (m.start() for m in re.finditer(re.escape(pieces[0]), t)):
            at, ok = start + len(pieces[0]), True
            for p in pieces[1:]:
                i = t.find(p, at)
                if i < 0 or i - at > 300:
                    ok = False
                    break
                at = i + len(p)
            if ok:
                return True
    return False


def test_the_verbatim_check_allows_white_space_hyphenation_and_marked_edits_only():
    text = ("The  covari-\nance scales, see [10].\nIt is ... standard … here." + " x" * 200
            + " end\nEntropy-\nSGD runs.")
    for ok in ("The covariance scales, see [10].", "The covari- ance scales",
               "scales, see [10]. It is", "It is ... standard", "The […] scales, see",
               "It [was] standard", "[T]he covariance", "covariance […] It is",
               "It is [...] here.", "Entropy- SGD runs."):
        assert _verbatim(ok, text), ok
    # a hyphen before a capital is a compound's ("Entropy-SGD"), not a word broken at the
    # line's end; a piece after an omission must be in the text, not merely near
    for bad in ("the covariance scales", "The covariance scales see", "It is … standard",
                "standard ... here", "It is ... standard … here!", "scoping [is] standard",
                "It is ... here.", "here. […] end", "[…]", "EntropySGD runs.",
                "The covariance […] nowhere in the text", "It is [...] standard here"):
        assert not _verbatim(bad, text), bad


@pytest.mark.parametrize("name", list(FILES))
def test_quotes_are_their_papers_characters(name, paper_texts):
    """Stricter than letters and digits: each quote is its paper's own characters, punctuation,
    capitals, ellipses and LaTeX included, up to line breaks, runs of spaces and words the text
    hyphenates at a line end; an edit of the quote's own is marked in square brackets
    (docs/design/experiments.md, "Quotes"). A paraphrase or a dropped word fails."""
    raw = read_file(FILES[name])
    text = _own_paper(raw, paper_texts)
    for quote, where in _quotes(raw):
        assert _verbatim(quote, text), f"{name} ({where}): not verbatim: {quote[:80]!r}"


# a quote followed by the line it cites: "...", l. 173 / "..." (line 84) / "..." (Fig. 5 caption,
# line 251) / '...' (lines 87-90)
CITED_QUOTE = re.compile(r'''(?:"([^"]{4,}?)"|(?<!\w)'([^']{4,}?)'(?!\w))[,;]?\s*\(?'''
                         r'(?:[^()"]{0,30}?,\s*)??(?:l\.|ll\.|lines?)\s*(\d+)(?:\s*[-–]\s*(\d+))?')


def _misquoted(text: str, paper: str) -> list[str]:
    """The quotes of ``text`` that cite a line of ``paper`` and are not its characters (by the
    catalogue's convention) or do not begin within 3 lines of the line cited."""
    wrong = []
    for m in CITED_QUOTE.finditer(text):
        quote, first = m.group(1) or m.group(2), int(m.group(3))
        lines = paper.splitlines()[max(0, first - 4):int(m.group(4) or first) + 3]
        head = _norm(next((p for p in re.split(r"\[[^\]]*\]", quote) if _norm(p)), ""))[:40]
        if not _verbatim(quote, paper) or head not in _norm(" ".join(lines)):
            wrong.append(" ".join(quote.split()))
    return wrong


def test_a_quote_that_cites_a_line_is_checked_there():
    paper = "one\ntwo\nThe covariance scales.\n" + "x\n" * 10 + "It is standard.\n"
    text = 'it says "The covariance scales" (line 3) and \'It is\', line 14'
    assert _misquoted(text, paper) == []
    # a range cites its lines through its last: "It is standard" is on line 14
    assert _misquoted('"It is standard" (lines 3-11)', paper) == []
    assert _misquoted('"It is standard" (lines 3-10)', paper) == ["It is standard"]
    assert _misquoted('"It is standard", line 3; "[t]he covariance", l. 9', paper) == [
        "It is standard", "[t]he covariance"]
    assert _misquoted('"the covariance scales" (Fig. 1, line 3)', paper) == [
        "the covariance scales"]


def _strings(o, path=""):
    """(path, text) of every string of an entry but its ``paper.quote`` and
    ``paper.quotes[i].quote`` (checked on their own, without a line cited inside them)."""
    if isinstance(o, dict):
        for k, v in o.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(o, str) and not re.search(r"paper\.quotes?(\[\d+\]\.quote)?$", path):
        yield path, o


def test_every_string_of_an_entry_but_its_paper_quotes_is_searched_for_cited_quotes():
    raw = {"description": "d", "paper": {"claim": "c", "quote": "q", "where": "w",
                                         "quotes": [{"quote": "q0", "where": "w0"}]},
           "options": {"claims": [{"claim": "c0", "n": 3}], "notes": ["n0"]}}
    assert dict(_strings(raw)) == {
        ".description": "d", ".paper.claim": "c", ".paper.where": "w",
        ".paper.quotes[0].where": "w0", ".options.claims[0].claim": "c0",
        ".options.notes[0]": "n0"}


@pytest.mark.parametrize("name", list(FILES))
def test_the_catalogues_other_quotes_that_cite_a_line_are_their_papers_characters(
        name, paper_texts):
    """Descriptions, readings, departures and claims quote their paper too ("'a large
    [‖j(x)‖]' (line 2999)"): where such a quote cites a line, it holds to the convention of
    ``paper.quote`` and begins near that line."""
    raw = read_file(FILES[name])
    paper = _own_paper(raw, paper_texts)
    wrong = [f"{path}: {q}" for path, s in _strings(raw) for q in _misquoted(s, paper)]
    assert not wrong, "\n".join(wrong)


def test_fidelity_md_quotes_are_their_papers_characters_on_the_lines_cited(paper_texts):
    """docs/FIDELITY.md's quotes that cite a line of their paper (the paper of the section,
    "## Xing, ...") hold to the catalogue's convention, and begin within 3 lines of the line
    cited."""
    from pathlib import Path

    md = (Path(__file__).resolve().parents[2] / "docs" / "FIDELITY.md").read_text()
    heads = [(m.start(), m.group(1).lower()) for m in re.finditer(r"^## ([A-Za-z]+)", md, re.M)]
    bounds = [a for a, _ in heads] + [len(md)]
    checked, wrong = 0, []
    for (at, author), end in zip(heads, bounds[1:]):
        found = [t for stem, t in paper_texts.items() if stem.startswith(f"{author}-")]
        if len(found) != 1:
            continue
        checked += len(CITED_QUOTE.findall(md[at:end]))
        wrong += _misquoted(md[at:end], found[0])
    assert checked >= 150, checked
    assert not wrong, "\n".join(wrong)


def test_quote_and_location_go_together():
    raw = read_file(next(iter(FILES.values())))
    raw["paper"] = {k: v for k, v in raw["paper"].items() if k not in ("quote", "where")}
    raw["paper"]["quote"] = "a passage without a location"
    with pytest.raises(ConfigError, match="'quote' and 'where' go together"):
        validate_raw(raw, "x.yaml")
    del raw["paper"]["quote"]
    raw["paper"]["where"] = "a location without a passage, line 3"
    with pytest.raises(ConfigError, match="'quote' and 'where' go together"):
        validate_raw(raw, "x.yaml")
    raw["paper"].update(quote="a passage", where="§1")
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


@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_claims_keep_their_texts_whole(name, scale):
    """A comma inside an unquoted string of a YAML flow mapping ends the string and makes a
    key of the rest with no value: "{..., claim: falls (lr 0.1, epoch 1 to 10).}" read as the
    claim "falls (lr 0.1" and a key "epoch 1 to 10)."; such a claim's text reaches the
    reports cut."""
    from sgdlab.experiments.spec import load_experiment

    for c in load_experiment(name, scale).options.get("claims") or []:
        stray = [k for k, v in c.items() if v is None]
        assert not stray, f"{name} ({scale}): claim {c.get('claim')!r} lost {stray}"
        if isinstance(c.get("claim"), str):
            text = c["claim"]
            assert text.count("(") == text.count(")"), f"{name} ({scale}): {text!r}"


# "margin 0.27 points", "equivalence margin 0.27 test-accuracy points", "the 0.5-point margin"
_MARGIN_IN_POINTS = re.compile(r"margin \(?(\d+(?:\.\d+)?) (?:test-accuracy )?points?\b"
                               r"|(\d+(?:\.\d+)?)-point margin")


def _margins_named_in_points(text: str) -> list[float]:
    return [float(a or b) for a, b in _MARGIN_IN_POINTS.findall(text)]


def test_a_margin_in_points_is_read_from_the_text():
    assert _margins_named_in_points("equivalence margin 0.27 test-accuracy points instead of "
                                    "0.045; wider than the 0.5-point margin; (lenet, margin "
                                    "2.2 points, 20%); the margin (0.27 points, below)") == [
        0.27, 0.5, 2.2, 0.27]
    assert _margins_named_in_points("a margin of one percentage point; 0.045 points at") == []


@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_a_margin_the_prose_of_a_scale_names_in_points_is_one_of_its_claims(name, scale):
    """A deviation, claim or metric name of a scale that names an accuracy margin in points
    ("equivalence margin 0.27 test-accuracy points") names the margin of one of that scale's
    claims (0.0027): a margin changed in the config leaves no stale number in the prose."""
    from sgdlab.experiments.spec import load_experiment

    spec = load_experiment(name, scale)
    claims = spec.options.get("claims") or []
    margins = {round(100 * abs(float(c["margin"])), 6) for c in claims
               if isinstance(c.get("margin"), (int, float))}
    texts = list(spec.deviations) + [str(c.get(k, "")) for c in claims
                                     for k in ("claim", "metric_name")]
    for text in texts:
        for points in _margins_named_in_points(text):
            assert round(points, 6) in margins, (
                f"{name} ({scale}) names a margin of {points:g} points, but its claims' "
                f"margins are {sorted(margins)} points: {text[:120]!r}")


# training-set sizes of the datasets whose runs cap their length with max_steps
TRAIN_SIZES = {"mnist_small": 4000, "digits": 1437, "cifar10": 50000, "mnist": 60000}


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
            b = min(int(p["batch_size"]), n)
            steps = (n // b if p.get("drop_last") else math.ceil(n / b)) * p["epochs"]
            assert steps >= p["max_steps"], (
                f"{name} [{scale}] {r.label}: {p['epochs']} epochs of "
                f"{math.ceil(n / p['batch_size'])} steps stop at {steps} < max_steps "
                f"{p['max_steps']}")


# training-set sizes at paper scale where a run does not set n_train
PAPER_TRAIN_SIZES = {"cifar10": 50000, "fashion_mnist": 60000}


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("name", sorted(n for n in FILES if n.startswith(("xing-",
                                                                           "jastrzebski-"))))
def test_epochs_end_in_full_batches(name, scale):
    # an epoch's last, short batch is another batch size: where the size under test is
    # η/S or the batch size itself, it must be dropped or never arise — for a batch-size
    # schedule, at the size of every epoch, not only at the ends of its cycle
    from sgdlab.experiments.procedures.train import train_examples
    from sgdlab.experiments.spec import load_experiment
    from sgdlab.train.batch_schedules import build_batch_schedule

    for r in load_experiment(name, scale).expand(data_dir="/d"):
        p = r.params
        b, ds = p.get("batch_size"), p.get("dataset") or {}
        if "between" in p or b == "full" or p.get("drop_last"):
            continue
        # an embedded dataset's size follows its test_size too
        n = train_examples(ds) or {**TRAIN_SIZES, **PAPER_TRAIN_SIZES}[ds["name"]]
        sizes = ({b} if isinstance(b, int) else
                 {build_batch_schedule(b)(e) for e in range(p["epochs"])})
        short = sorted(s for s in sizes if s < n and n % s)
        assert not short, (f"{name} [{scale}] {r.label}: {n} images leave a short last "
                           f"batch at batch size {short}")


def test_drop_last_reaches_the_training_loop_and_its_step_count():
    from sgdlab.experiments.procedures import get_procedure

    train = get_procedure("train")
    p = {"dataset": {"name": "cifar10", "n_train": 45000}, "model": {"name": "vgg-11"},
         "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 400, "epochs": 2}
    assert train.planned_steps(p) == 2 * 113
    assert train.planned_steps({**p, "drop_last": True}) == 2 * 112
    with pytest.raises(ConfigError, match="^x: drop_last must be True or False, got 'yes'$"):
        train.validate({**p, "drop_last": "yes"}, "x")


@pytest.mark.parametrize("dataset", [
    {"name": "digits"}, {"name": "digits", "test_size": 300}, {"name": "mnist_small"},
    {"name": "mnist-small", "test_size": 500, "label_noise": 100}])
def test_the_plan_counts_the_steps_of_runs_on_embedded_data(dataset):
    # `sgdlab run NAME --dry-run` said "training steps: not told by the runs' parameters" for
    # nearly every cpu-scale entry: their data (digits, mnist_small) have a known size
    from sgdlab.data import load_dataset
    from sgdlab.experiments.procedures import get_procedure

    opts = {k: v for k, v in dataset.items() if k != "name"}
    n = len(load_dataset(dataset["name"], **opts).x_train)
    p = {"dataset": dataset, "model": {"name": "mlp"}, "optimizer": {"name": "sgd", "lr": 0.1},
         "batch_size": 64, "epochs": 3}
    assert get_procedure("train").planned_steps(p) == 3 * -(-n // 64)
    # classes filters the set: its size is the data's
    assert get_procedure("train").planned_steps(
        {**p, "dataset": {**dataset, "classes": [0, 1]}}) is None


CUBIC_RUN = {"dataset": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
             "optimizer": {"name": "sgd", "lr": 0.01}, "batch_size": 6, "epochs": 2}


def run_summaries(tmp_path, runs: list[dict]) -> dict[str, dict]:
    """Each run's summary, by label, of a one-seed cpu-scale experiment of ``CUBIC_RUN``
    runs with ``runs``' parameters."""
    from sgdlab.testing import run_experiment_config

    raw = {"name": "t-runs", "version": 1, "description": "runs of the train procedure",
           "analysis": "compare_groups", "procedure": "train",
           "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"}, "base": CUBIC_RUN,
           "runs": runs, "seeds": [0],
           "options": {"table": [["train_loss", "final train loss"]]}}
    res = run_experiment_config(raw, tmp_path)
    return {r["label"]: r["summary"] for r in res.results["runs"]}


def test_clip_grad_norm_reaches_the_training_loop(tmp_path):
    from sgdlab.experiments.procedures import get_procedure

    for bad, says in (("yes", "got 'yes'"), (0, "got 0"), (-1.0, "got -1.0"),
                      (float("inf"), "got inf"), (True, "not a bool (True)")):
        with pytest.raises(ConfigError, match=re.escape(
                f"clip_grad_norm must be a finite number > 0 or null, {says}")):
            get_procedure("train").validate({**CUBIC_RUN, "clip_grad_norm": bad}, "x")
    summary = run_summaries(tmp_path, [
        {"label": "plain"}, {"label": "loose", "params": {"clip_grad_norm": 1e9}},
        {"label": "tight", "params": {"clip_grad_norm": 1e-4}}])
    loss = {label: s["train_loss"] for label, s in summary.items()}
    assert loss["loose"] == loss["plain"] != loss["tight"]


def test_sequence_loss_reaches_the_training_loop(tmp_path):
    from sgdlab.errors import UserError
    from sgdlab.experiments.procedures import get_procedure

    for bad in ("sum", None, 35, True):
        with pytest.raises(ConfigError, match="sequence_loss must be one of mean, window-sum"):
            get_procedure("train").validate({**CUBIC_RUN, "sequence_loss": bad}, "x")
    for good in ("mean", "window-sum"):
        get_procedure("train").validate({**CUBIC_RUN, "sequence_loss": good}, "x")
    # the loop refuses it on data without a label per position (cubic's targets are (N, 1))
    with pytest.raises(UserError, match="'window-sum' needs token data"):
        run_summaries(tmp_path, [{"label": "sum", "params": {"sequence_loss": "window-sum"}}])


def test_a_run_with_drop_last_takes_only_full_batches(tmp_path):
    from sgdlab.data.registry import load_dataset

    summary = run_summaries(tmp_path, [{"label": "keep"},
                                       {"label": "drop", "params": {"drop_last": True}}])
    steps = {label: s["steps"] for label, s in summary.items()}
    n = len(load_dataset("cubic").x_train)
    assert n > 6 and n % 6, "the test needs a training set that is no multiple of the batch"
    assert steps == {"keep": 2 * -(-n // 6), "drop": 2 * (n // 6)}


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_equal_ratio_pairs_share_their_ratio_at_every_scale(scale):
    # Fig. 1's pairs and Fig. 2's linear rescaling are claims about runs of equal η/S: a scale
    # whose pair differs in η/S tests another claim under the paper's labels
    import math

    from sgdlab.experiments.spec import load_experiment

    spec = load_experiment("jastrzebski-equal-ratio", scale)
    runs = {r.label: r.params for r in spec.expand(data_dir="/d")}

    def ratios(p):                    # (η/S at the cycle's start, the other end)
        lr, b, s = p["optimizer"]["lr"], p["batch_size"], p.get("schedule") or {}
        if isinstance(b, dict):
            first, other = ((b["high"], b["low"]) if b.get("start") == "high"
                            else (b["low"], b["high"]))
            return lr / first, lr / other
        if s.get("name") == "triangular":
            return lr / b, lr * s["max_factor"] / b
        return lr / b, lr / b

    def ratio_trace(p, epochs):       # η/S at the start of each epoch
        from sgdlab.optim.protocols import lr_trace
        from sgdlab.train.batch_schedules import build_batch_schedule

        lr, b, s = p["optimizer"]["lr"], p["batch_size"], p.get("schedule") or {}
        if isinstance(b, dict):
            return [lr / build_batch_schedule(b)(e) for e in range(epochs)]
        hyper = {k: v for k, v in s.items() if k != "name"}
        return [v / b for v in lr_trace(s.get("name", "constant"), epochs, lr=lr, **hyper)]

    for pair in spec.options["pairs"]:
        a, b = ratios(runs[pair["a"]]), ratios(runs[pair["b"]])
        assert a == pytest.approx(b, rel=1e-12), (scale, pair["name"], a, b)
        # and in between the ends: the same η/S all along the cycle (B rounded to an int)
        epochs = runs[pair["a"]]["epochs"]
        a, b = ratio_trace(runs[pair["a"]], epochs), ratio_trace(runs[pair["b"]], epochs)
        assert a == pytest.approx(b, rel=0.01), (scale, pair["name"], a, b)
    resc = spec.options["rescaling"]
    for r in resc if isinstance(resc, list) else [resc]:       # one per network
        ref, lin, sq = (runs[r[k]] for k in ("reference", "linear", "sqrt"))
        assert ratios(lin) == pytest.approx(ratios(ref), rel=1e-12)
        k = sq["batch_size"] / ref["batch_size"]
        assert sq["optimizer"]["lr"] == pytest.approx(ref["optimizer"]["lr"] * math.sqrt(k))


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_equal_ratio_clr_steps_reading_gives_the_cyclic_pair_one_ratio_at_every_step(scale):
    # the cyclic batch size moves once per epoch; the cyclic learning rate by default at every
    # step, so within an epoch the pair's η/S differ; --reading clr-steps=every-epoch holds
    # the learning rate over each epoch and the pair shares η/S at every step
    from sgdlab.experiments.spec import load_experiment
    from sgdlab.optim.protocols import lr_trace
    from sgdlab.train.batch_schedules import build_batch_schedule
    from sgdlab.train.loop import steps_per_epoch

    n = {"cpu": 3200, "paper": 50000}[scale]

    def worst(readings):
        spec = load_experiment("jastrzebski-equal-ratio", scale, readings=readings)
        runs = {r.label: r.params for r in spec.expand(data_dir="/d")}
        cbs, clr = runs["cbs"], runs["clr"]
        assert cbs["drop_last"]
        sizes = build_batch_schedule(cbs["batch_size"])
        spe = steps_per_epoch(n, clr["batch_size"], clr.get("drop_last", False))
        hyper = {k: v for k, v in clr["schedule"].items() if k != "name"}
        epochs = 2 * hyper["step_size_epochs"]          # one cycle
        rates = lr_trace("triangular", epochs * spe, lr=clr["optimizer"]["lr"],
                         steps_per_epoch=spe, **hyper)
        out = 0.0
        for e in range(epochs):
            target = cbs["optimizer"]["lr"] / sizes(e)   # the cyclic batch size's, all epoch
            out = max(out, max(abs(v / clr["batch_size"] / target - 1)
                               for v in rates[e * spe:(e + 1) * spe]))
        return out
    # up to 1.8x (cpu: 5-epoch half-cycles) and 1.4x (paper: 10) at the first epoch's end
    assert worst(None) > {"cpu": 0.7, "paper": 0.35}[scale]
    assert worst({"clr-steps": "every-epoch"}) < 0.01     # S rounded to an int only


def test_an_epoch_schedule_with_a_batch_size_schedule_of_varying_steps_fails_its_run(tmp_path):
    # cubic has 20 examples: B = 5 then 20 gives 4 then 1 steps per epoch, which an epoch
    # schedule built with the first epoch's 4 steps would miscount from epoch 2 on
    from sgdlab.testing import run_experiment_config

    cyc = {"kind": "cyclic", "low": 5, "high": 20, "period": 2, "shape": "square"}
    raw = {"name": "t-cyc", "version": 1, "description": "epochs of varying length",
           "analysis": "compare_groups", "procedure": "train",
           "paper": {"author": "Nobody", "year": 2020, "figure": "Fig. 0"},
           "base": {"dataset": {"name": "cubic"}, "model": {"name": "zhu-mlp-1-6-6-6-1"},
                    "optimizer": {"name": "sgd", "lr": 0.01}, "batch_size": cyc, "epochs": 4},
           "runs": [{"label": "cos", "params": {"schedule": {"name": "cosine-cyclic",
                                                             "period": 2}}},
                    {"label": "clr", "params": {"schedule": {"name": "triangular",
                                                             "max_factor": 2.0,
                                                             "step_size": 3}}}],
           "seeds": [0], "options": {"table": [["train_loss", "final train loss"]]}}
    res = run_experiment_config(raw, tmp_path)
    failed = {f["run"]: f["message"] for f in res.results["sweep"]["failed"]}
    assert list(failed) == ["cos|seed=0"] and "miscounted" in failed["cos|seed=0"]
    steps = {r["label"]: r["summary"]["steps"] for r in res.results["runs"]}
    assert steps == {"clr": 4 + 1 + 4 + 1}


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_breakdown_sampling_reading_gives_eq_4s_noise_at_every_beta(scale):
    # Fig. 5 holds η/S fixed while S grows towards the training set's size: drawn without
    # replacement (the default), the batch gradient's covariance is (N − S)/(S (N − 1)) C and
    # not eq. (4)'s C/S; the reading sampling=with-replacement keeps C/S at every β with
    # S < N. A batch of the whole set is full-batch GD either way (the loop's convention):
    # the cpu scale's β = 16 on 800 images
    from sgdlab.experiments.spec import load_experiment
    from sgdlab.measure.noise import minibatch_noise_factor

    def noise(readings):              # {(n, S): S · the covariance factor}
        out = {}
        for r in load_experiment("jastrzebski-breakdown", scale, readings).expand(data_dir="/d"):
            p = r.params
            n = p["dataset"].get("n_train") or PAPER_TRAIN_SIZES[p["dataset"]["name"]]
            b = p["batch_size"]
            out[n, b] = 0.0 if b >= n else b * minibatch_noise_factor(
                b, n, replacement=p.get("replacement", False))
        return out

    default, wr = noise(None), noise({"sampling": "with-replacement"})
    gd = {k for k, v in default.items() if k[1] >= k[0]}
    assert gd == ({(800, 800)} if scale == "cpu" else set())
    assert all(v == 1.0 for k, v in wr.items() if k not in gd)
    assert all(default[k] < 1.0 for k in default if k not in gd)


# the entries whose paper scale trains on CIFAR-10: Musso §3.2-3.3 (VGG16), Jastrzebski et al.
# §3 (VGG-11, ResNet-56); and on MNIST with its input handling unstated: Musso §3.1, §3.3
CIFAR10_ENTRIES = ("musso-cifar-regularization", "musso-equal-temperature",
                   "jastrzebski-equal-ratio", "jastrzebski-interpolation",
                   "jastrzebski-breakdown")
MNIST_ENTRIES = ("musso-protocols", "musso-protocols-model2", "musso-equal-temperature")


@pytest.mark.parametrize("name, dataset", [(n, "cifar10") for n in CIFAR10_ENTRIES]
                         + [(n, "mnist") for n in MNIST_ENTRIES])
def test_paper_scale_lists_the_unstated_image_handling(name, dataset):
    # neither paper says whether its images were augmented (nor Musso how MNIST's were
    # scaled), and Jastrzebski et al.'s footnote 5 (line 180) says only "We have adapted the
    # final layers to be compatible with the CIFAR10 dataset": what the paper scale does there
    # is a reading, listed as such
    from sgdlab.experiments.spec import load_experiment

    spec = load_experiment(name, "paper")
    runs = [r.params for r in spec.expand(data_dir="/d")
            if r.params["dataset"]["name"] == dataset]
    assert runs, f"{name}: no {dataset} run at paper scale"
    text = " ".join(spec.deviations)
    if any(not p["dataset"].get("augment") for p in runs):
        assert "no data augmentation" in text, name
    if dataset == "mnist":      # the loader's default scaling, named
        assert all(p["dataset"].get("normalize", "unit") == "unit" for p in runs)
        assert "pixels scaled to [0, 1]" in text, name
    if any(p["model"]["name"] == "vgg-11" for p in runs):
        assert "footnote 5" in text, name


@pytest.mark.parametrize("dataset", [{"name": "digits"}, {"name": "digits", "test_size": 300},
                                     {"name": "mnist_small", "test_size": 1000}])
def test_train_examples_of_an_embedded_set_are_the_loaders_count(dataset):
    # at batch 64 a count one off plans the same steps: the count itself is checked
    from sgdlab.data import load_dataset
    from sgdlab.experiments.procedures.train import train_examples

    opts = {k: v for k, v in dataset.items() if k != "name"}
    assert train_examples(dataset) == len(load_dataset(dataset["name"], **opts).x_train)


@pytest.mark.parametrize("change, message", [
    ({"claim": "  "}, r"x\.yaml\.paper\.claim: expected a non-empty string"),
    ({"quote": " \n"}, r"x\.yaml\.paper\.quote: expected a non-empty string"),
    ({"where": 3}, r"x\.yaml\.paper\.where: expected a non-empty string"),
    ({"quotes": {"quote": "a passage", "where": "line 3"}},
     r"x\.yaml\.paper\.quotes: expected a list of \{quote, where\} mappings"),
    ({"quotes": [{"quote": "a passage", "where": " "}]},
     r"x\.yaml\.paper\.quotes\[0\]: missing string key 'where'"),
    ({"quotes": [{"quote": "", "where": "line 3"}]},
     r"x\.yaml\.paper\.quotes\[0\]: missing string key 'quote'"),
    ({"quotes": [{"quote": "a passage", "where": "line 3", "page": 2}]},
     r"x\.yaml\.paper\.quotes\[0\]\.page: unknown key"),
    ({"quotes": ["a passage, line 3"]}, r"x\.yaml\.paper\.quotes\[0\]: expected a mapping"),
    ({"quotes": [{"quote": "a passage", "where": "line 3"}, {"quote": "another"}]},
     r"x\.yaml\.paper\.quotes\[1\]: missing string key 'where'"),
])
def test_a_blank_or_misshapen_quote_is_refused_by_name(change, message):
    # where the paper texts are not at hand, this is the only check a quote meets: each
    # blank or misshapen part is refused, named where it is
    raw = read_file(next(iter(FILES.values())))
    raw["paper"] = {**raw["paper"], **change}
    with pytest.raises(ConfigError, match=message):
        validate_raw(raw, "x.yaml")


def test_a_scale_listing_no_departures_gets_them_derived_from_the_paper_scales_config():
    """Smoke scale lists no departures, yet shrinks everything: each setting it sets otherwise
    than the paper scale is derived, with both values. Scales that list theirs keep them."""
    raw = read_file(FILES["jastrzebski-ratio-grid"])
    smoke = resolve(raw, "smoke", "x.yaml").describe()
    assert smoke["deviations"] == []
    derived = smoke["derived_deviations"]
    for d in ("epochs 1 (paper: 200)", "dataset.name digits (paper: fashion_mnist)",
              "model.width 16 (paper: 400)", "seeds [0] (paper: [0, 1, 2])",
              "grid.batch_size [128, 512] (paper: [25, 50, 100, 200, 400, 800])"):
        assert d in derived
    # the paper scale reads its data from --data-dir: the data's name says what differs
    assert not any("data_dir" in d for d in derived)
    for scale in ("cpu", "paper"):
        described = resolve(raw, scale, "x.yaml").describe()
        assert described["deviations"] and "derived_deviations" not in described
    # an edited copy whose paper scale does not resolve: nothing derived, no error
    raw["scales"]["paper"]["base"]["epochs"] = "many"
    assert "derived_deviations" not in resolve(raw, "smoke", "x.yaml").describe()
