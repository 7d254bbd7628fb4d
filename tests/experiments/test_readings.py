"""Readings: each ambiguity of a paper's text is a named option of its experiment file
(``readings:``), chosen with ``--reading KEY=CHOICE``; the choice's params reach the runs and
their keys, its options and deviations the analysis and the report."""
from __future__ import annotations

import copy
import json

import pytest
import yaml

from sgdlab.cli.main import main as cli
from sgdlab.errors import ConfigError
from sgdlab.experiments.analysis import Analysis, Conclusion
from sgdlab.experiments.procedures import (Procedure, RunOutput, register_analysis,
                                           register_procedure)
from sgdlab.experiments.runner import default_out_dir, run_experiment
from sgdlab.experiments.spec import (SCALES, catalogue_files, key_params, load_experiment,
                                     read_file, resolve)
from sgdlab.report.tables import Table

SEEN: list[dict] = []       # the runs each analysis was given: label and params


pytestmark = pytest.mark.usefixtures("one_thread_runs")


@register_procedure("_test_reading")
class _Product(Procedure):
    """y = x * factor * cfg.m + seed."""
    allowed = {"x", "factor", "cfg"}
    required = {"x"}

    def run(self, run, ctx):
        p = run.params
        return RunOutput(summary={"y": p["x"] * p.get("factor", 1) * p["cfg"]["m"] + run.seed})


@register_analysis("_test_reading")
def _analysis(spec, runs):
    SEEN.clear()
    SEEN.extend({"label": r.label, "params": r.params} for r in runs)
    return Analysis(tables=[Table("ys", ["run", "y"], [[r.label, r.summary["y"]] for r in runs])],
                    conclusions=[Conclusion(f"threshold {spec.options['threshold']}")])


def _raw() -> dict:
    return {
        "name": "t-read", "version": 1, "description": "toy", "procedure": "_test_reading",
        "analysis": "_test_reading", "paper": {"author": "Nobody", "year": 2020, "figure": "1"},
        "base": {"x": 1, "cfg": {"m": 1}},
        "runs": [{"label": "a"}, {"label": "b-one"}, {"label": "b-two", "params": {"x": 3}}],
        "grid": {"x": [1, 2]}, "seeds": [0], "options": {"threshold": 1, "keep": True},
        "scales": {"smoke": {"deviations": ["toy data"]}},
        "readings": {
            "m": {"default": "one", "choices": {
                "one": {"description": "m is one"},
                "two": {"description": "m is two", "params": {"cfg.m": 2}, "labels": ["b-"],
                        "options": {"threshold": 5}, "deviations": ["m read as two"]}}},
            "f": {"default": "plain", "choices": {
                "plain": {"description": "no factor"},
                "double": {"description": "a factor of two", "params": {"factor": 2}}}},
        },
    }


def _keys(spec) -> dict[str, str]:
    return {r.label: r.key for r in spec.expand()}


def test_the_default_reading_keeps_the_run_keys_of_a_file_without_readings():
    plain = _raw()
    del plain["readings"]
    assert _keys(resolve(_raw(), "smoke")) == _keys(resolve(plain, "smoke"))


def test_a_choice_sets_its_params_on_every_run_or_on_the_groups_it_names():
    default = resolve(_raw(), "smoke")
    doubled = resolve(_raw(), "smoke", readings={"f": "double"})
    assert [r.label for r in doubled.expand()] == [r.label for r in default.expand()]
    assert all(r.params["factor"] == 2 for r in doubled.expand())
    assert not set(_keys(doubled).values()) & set(_keys(default).values())
    # labels: [b-] reaches b-one and b-two (any grid value), not a; a's runs keep their keys
    two = {r.label: r for r in resolve(_raw(), "smoke", readings={"m": "two"}).expand()}
    assert {lab: r.params["cfg"]["m"] for lab, r in two.items()} == {
        "a|x=1": 1, "a|x=2": 1, "b-one|x=1": 2, "b-one|x=2": 2, "b-two|x=1": 2, "b-two|x=2": 2}
    assert two["b-two|x=2"].params["x"] == 2       # after the group and grid merge
    changed = {lab for lab, k in _keys(default).items() if two[lab].key != k}
    assert changed == {"b-one|x=1", "b-one|x=2", "b-two|x=1", "b-two|x=2"}


def _with_start_group() -> dict:
    """The toy file with a first stage ``b`` whose ``cfg.items`` list is empty, as Zhu's
    ``gd-start`` has no final measurements: a prefix ``b`` reaches it and ``b-one``."""
    raw = _raw()
    raw["base"]["cfg"]["items"] = [{"kind": "s", "n": 1}]
    raw["runs"].insert(0, {"label": "b", "params": {"cfg": {"items": []}}})
    raw["readings"]["n"] = {"default": "one", "choices": {
        "one": {"description": "n is one"},
        "five": {"description": "n is five", "params": {"cfg.items[kind=s].n": 5},
                 "exact_labels": ["b-one"]}}}
    return raw


def test_exact_labels_reach_only_the_groups_so_named():
    raw = _with_start_group()
    default = resolve(raw, "smoke")
    five = resolve(raw, "smoke", readings={"n": "five"})
    n = {r.label: [it["n"] for it in r.params["cfg"]["items"]] for r in five.expand()}
    assert n == {"b|x=1": [], "b|x=2": [], "a|x=1": [1], "a|x=2": [1], "b-one|x=1": [5],
                 "b-one|x=2": [5], "b-two|x=1": [1], "b-two|x=2": [1]}
    changed = {lab for lab, k in _keys(default).items() if _keys(five)[lab] != k}
    assert changed == {"b-one|x=1", "b-one|x=2"}
    # exact and prefix labels together: the groups either names
    raw["readings"]["n"]["choices"]["five"]["labels"] = ["b-t"]
    n = {r.label: [it["n"] for it in r.params["cfg"]["items"]]
         for r in resolve(raw, "smoke", readings={"n": "five"}).expand()}
    assert [lab for lab, v in n.items() if v == [5]] == [
        "b-one|x=1", "b-one|x=2", "b-two|x=1", "b-two|x=2"]
    # a prefix reaches the first stage too, which has no item to set
    raw["readings"]["n"]["choices"]["five"] = {
        "description": "n is five", "params": {"cfg.items[kind=s].n": 5}, "labels": ["b"]}
    with pytest.raises(ConfigError, match="no item of 'items' has kind = s"):
        resolve(raw, "smoke", readings={"n": "five"})


@pytest.mark.parametrize("exact, message", [
    ("b-one", "readings.n.choices.five.exact_labels: expected a list of run group labels"),
    ([""], "readings.n.choices.five.exact_labels: expected a list of run group labels"),
    (["b-on"], "readings.n.choices.five.exact_labels: 'b-on' is no run group's label at any "
               "scale (did you mean b-one?) (b, a, b-one, b-two)"),
])
def test_bad_exact_labels_name_the_path(exact, message):
    raw = _with_start_group()
    raw["readings"]["n"]["choices"]["five"]["exact_labels"] = exact
    with pytest.raises(ConfigError) as e:
        resolve(raw, "smoke", "x.yaml", readings={"n": "five"})
    assert message in str(e.value)
    raw = _with_start_group()
    del raw["readings"]["n"]["choices"]["five"]["params"]
    with pytest.raises(ConfigError, match=r"choices.five.exact_labels: limits 'params', which "
                                          r"the choice lacks"):
        resolve(raw, "smoke", "x.yaml")


def _with_pieces() -> dict:
    """The toy file with a reading whose groups take different params: ``cfg.m`` on ``a``,
    ``factor`` on the ``b-`` groups (Zhu's RMSProp at ``optimizer`` on one group and at
    ``optimizer.first`` on the other)."""
    raw = _raw()
    raw["readings"]["p"] = {"default": "none", "choices": {
        "none": {"description": "as the file has it"},
        "split": {"description": "m on a, a factor on the b groups", "pieces": [
            {"params": {"cfg.m": 3}, "exact_labels": ["a"]},
            {"params": {"factor": 4}, "labels": ["b-"]}]}}}
    return raw


def test_a_choices_pieces_set_each_their_params_on_their_own_groups():
    raw = _with_pieces()
    default = resolve(raw, "smoke")
    split = {r.label: r for r in resolve(raw, "smoke", readings={"p": "split"}).expand()}
    assert {lab: (r.params["cfg"]["m"], r.params.get("factor")) for lab, r in split.items()} == {
        "a|x=1": (3, None), "a|x=2": (3, None), "b-one|x=1": (1, 4), "b-one|x=2": (1, 4),
        "b-two|x=1": (1, 4), "b-two|x=2": (1, 4)}
    assert not set(_keys(default).values()) & {r.key for r in split.values()}
    # the default choice keeps the keys of the file without the reading
    plain = _raw()
    assert _keys(default) == _keys(resolve(plain, "smoke"))
    # pieces apply in order, after the other readings' params: a later piece wins
    raw["readings"]["p"]["choices"]["split"]["pieces"].append(
        {"params": {"factor": 5}, "exact_labels": ["b-two"]})
    split = {r.label: r.params.get("factor")
             for r in resolve(raw, "smoke", readings={"p": "split"}).expand()}
    assert split["b-one|x=1"] == 4 and split["b-two|x=1"] == 5


@pytest.mark.parametrize("edit, message", [
    (("pieces", {"params": {"factor": 4}}), "choices.split.pieces: expected a list of"),
    (("pieces", []), "choices.split.pieces: expected a list of"),
    (("params", {"factor": 4}), "choices.split.pieces: a choice with 'pieces' sets its "
                                "params in them, not in its own 'params'"),
    (("pieces", [{"params": {"factor": 4}}]), "choices.split.pieces[0]: names no run groups"),
    (("pieces", [{"labels": ["b-"]}]), "choices.split.pieces[0].labels: limits 'params'"),
    (("pieces", [{"params": {"factor": 4}, "label": ["b-"]}]), "choices.split.pieces[0]"),
    (("pieces", [{"params": {"factor": 4}, "exact_labels": ["b-on"]}]),
     "choices.split.pieces[0].exact_labels: 'b-on' is no run group's label at any scale "
     "(did you mean b-one?)"),
    (("pieces", [{"params": {"x": 2}, "labels": ["b-"]}]),
     "choices.split.pieces[0].params: 'x' is a grid axis"),
])
def test_bad_pieces_name_the_path(edit, message):
    raw = _with_pieces()
    raw["readings"]["p"]["choices"]["split"][edit[0]] = edit[1]
    with pytest.raises(ConfigError) as e:
        resolve(raw, "smoke", "x.yaml", readings={"p": "split"})
    assert message in str(e.value), str(e.value)


def test_a_mapping_naming_another_name_replaces_the_one_there_as_deep_merge_does():
    from sgdlab.experiments.spec import deep_merge, set_dotted

    base = {"optimizer": {"name": "rmsprop", "lr": 1e-3, "alpha": 0.99, "eps": 1e-8}}
    other = {"name": "rmsprop-eq15", "lr": 1e-3, "rho": 0.99}
    params = copy.deepcopy(base)
    set_dotted(params, "optimizer", other)     # torch's alpha and eps are not carried over
    assert params["optimizer"] == other == deep_merge(base, {"optimizer": other})["optimizer"]
    set_dotted(params, "optimizer", {"name": "rmsprop-eq15", "delta": 1e-6})   # same: merges
    assert params["optimizer"] == {**other, "delta": 1e-6}
    set_dotted(params, "optimizer", {"lr": 0.5})                               # no name: merges
    assert params["optimizer"]["lr"] == 0.5 and params["optimizer"]["rho"] == 0.99


def test_a_path_part_list_key_value_reaches_the_matching_list_items():
    from sgdlab.experiments.spec import get_dotted, set_dotted

    base = {"final": [{"kind": "hessian_top", "tol": 1e-3}, {"kind": "loss"},
                      {"kind": "hessian_top", "tol": 1e-2}]}
    params = dict(base)                       # shares the list with base, as a merge does
    set_dotted(params, "final[kind=hessian_top].bn_mode", "train")
    assert [m.get("bn_mode") for m in params["final"]] == ["train", None, "train"]
    assert all("bn_mode" not in m for m in base["final"])       # the base is not touched
    assert get_dotted(params, "final[kind=hessian_top].tol") == 1e-3
    assert get_dotted(params, "final[kind=nothing].tol", "-") == "-"
    with pytest.raises(ConfigError, match=r"no item of 'final' has kind = nothing \(its items: "
                                          r"hessian_top, loss, hessian_top\)"):
        set_dotted(params, "final[kind=nothing].tol", 1)
    with pytest.raises(ConfigError, match="'optimizer' is not a list"):
        set_dotted({"optimizer": {"lr": 1}}, "optimizer[name=sgd].lr", 2)
    # the catalogue's use: Jastrzebski's final Hessian in train mode, both measurements
    spec = load_experiment("jastrzebski-ratio-grid", "smoke",
                           readings={"final-hessian-bn": "train"})
    finals = spec.expand()[0].params["final"]
    assert {m["kind"]: m.get("bn_mode") for m in finals} == {
        "hessian_top": "train", "hessian_frobenius": "train"}
    default = load_experiment("jastrzebski-ratio-grid", "smoke").expand()[0].params["final"]
    assert all("bn_mode" not in m for m in default)


def test_a_choice_joins_its_options_and_deviations_and_every_reading_is_described():
    spec = resolve(_raw(), "smoke", readings={"m": "two"})
    assert spec.options == {"threshold": 5, "keep": True}
    assert spec.deviations == ["toy data", "m read as two"]
    assert spec.readings == {"m": "two", "f": "plain"}
    assert spec.describe()["readings"] == {
        "m": {"choice": "two", "default": "one", "description": "m is two"},
        "f": {"choice": "plain", "default": "plain", "description": "no factor"}}
    default = resolve(_raw(), "smoke")
    assert default.options["threshold"] == 1 and default.deviations == ["toy data"]


def test_a_choice_with_a_title_gives_the_entry_its_title_under_that_choice():
    """A choice that changes what the title names (the matrix measured) titles the entry,
    and the reports with it; the other choices keep the file's title."""
    raw = _raw()
    raw["title"] = "y against x"
    raw["readings"]["m"]["choices"]["two"]["title"] = "y against 2x"
    assert resolve(raw, "smoke", readings={"m": "two"}).describe()["title"] == "y against 2x"
    assert resolve(raw, "smoke", readings={"f": "double"}).title == "y against x"
    assert resolve(raw, "smoke").title == "y against x"


def test_a_claim_of_a_reading_is_tested_only_under_that_reading():
    """A passage read two ways can make two different claims (a difference, or none): each
    claim names its reading and only the chosen one's reaches the analysis."""
    raw = _raw()
    raw["options"]["claims"] = [
        {"less": ["a", "b"], "metric": "y"},
        {"less": ["a", "b-one"], "metric": "y", "reading": {"m": "one"}},
        {"equivalent": ["a", "b-one"], "metric": "y", "margin": 1, "reading": {"m": "two"}},
        {"greater": ["a", "b-two"], "metric": "y", "reading": {"m": ["one", "two"],
                                                              "f": "double"}}]
    def kinds(readings):
        return [next(k for k in c if k in ("less", "equivalent", "greater"))
                for c in resolve(raw, "smoke", readings=readings).options["claims"]]

    assert [list(c) for c in resolve(raw, "smoke").options["claims"]] == [
        ["less", "metric"], ["less", "metric"]]          # the reading key is not passed on
    assert kinds({"m": "one"}) == ["less", "less"]
    assert kinds({"m": "two"}) == ["less", "equivalent"]
    assert kinds({"m": "two", "f": "double"}) == ["less", "equivalent", "greater"]
    # the runs and their keys do not depend on which claims are tested
    assert _keys(resolve(raw, "smoke", readings={"m": "two"})) == _keys(
        resolve(_raw(), "smoke", readings={"m": "two"}))


def test_a_choice_need_not_name_a_group_at_every_scale():
    raw = _raw()
    raw["scales"]["paper"] = {"runs": [{"label": "a"}, {"label": "c-only"}]}
    raw["readings"]["m"]["choices"]["two"]["labels"] = ["c-"]
    smoke = resolve(raw, "smoke", readings={"m": "two"})
    assert _keys(smoke) == _keys(resolve(raw, "smoke"))        # nothing there to change
    paper = {r.label: r.params for r in resolve(raw, "paper", readings={"m": "two"}).expand()}
    assert paper["c-only|x=1"]["cfg"]["m"] == 2 and paper["a|x=1"]["cfg"]["m"] == 1


def test_the_default_output_folder_names_the_readings_off_their_default():
    assert str(default_out_dir(resolve(_raw(), "cpu"))) == "sgdlab-out/t-read-cpu"
    both = resolve(_raw(), "cpu", readings={"f": "double", "m": "two"})
    assert str(default_out_dir(both)) == "sgdlab-out/t-read-cpu-m=two-f=double"
    assert str(default_out_dir(resolve(_raw(), "cpu", readings={"m": "one"}))) == \
        "sgdlab-out/t-read-cpu"


def _set(path: str, value):
    def mutate(raw):
        *head, last = path.split("/")
        d = raw
        for k in head:
            d = d[k]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
    return mutate


MV = "readings/m"
TWO = "readings/m/choices/two"


@pytest.mark.parametrize("mutate, message", [
    (_set("readings", []), "x.yaml.readings: expected a mapping"),
    (_set("readings/M V", {}), "reading name 'M V' must be"),
    (_set(f"{MV}/colour", 1), "x.yaml.readings.m.colour: unknown key (valid keys: choices, "
                              "default)"),
    (_set(f"{MV}/default", "three"), "x.yaml.readings.m.default: 'three' is not one of its "
                                     "choices (one, two)"),
    # a list or mapping is no choice's name: named as the file's mistake, not a TypeError
    (_set(f"{MV}/default", ["one"]), "x.yaml.readings.m.default: ['one'] is not one of its "
                                     "choices (one, two)"),
    (_set(f"{MV}/choices", {"one": {"description": "d"}}), "readings.m.choices: expected a "
                                                           "mapping of at least two"),
    (_set(f"{MV}/choices/Two!", {"description": "d"}), "choice name 'Two!' must be"),
    (_set(f"{TWO}/parms", {}), "x.yaml.readings.m.choices.two.parms: unknown key (did you "
                               "mean params?)"),
    (_set(f"{TWO}/description", KeyError), "readings.m.choices.two: missing one-line string "
                                           "key 'description'"),
    (_set(f"{TWO}/description", "two\nlines"), "choices.two: missing one-line"),
    (_set(f"{TWO}/params", [1]), "readings.m.choices.two.params: expected a mapping"),
    (_set(f"{TWO}/options", "x"), "readings.m.choices.two.options: expected a mapping"),
    (_set(f"{TWO}/params", {1: 2}), "readings.m.choices.two.params: expected a mapping"),
    (_set(f"{TWO}/deviations", "one"), "choices.two.deviations: expected a list of sentences"),
    (_set(f"{TWO}/labels", "b-"), "choices.two.labels: expected a list of run group labels"),
    (_set(f"{TWO}/params", {}), "choices.two.labels: limits 'params', which the choice lacks"),
    (_set(f"{TWO}/labels", ["c"]), "choices.two.labels: 'c' begins no run group's label at "
                                   "any scale (a, b-one, b-two)"),
    (_set("options/claims", [{"less": ["a", "b"], "metric": "y", "reading": {"mm": "two"}}]),
     "x.yaml.options.claims[0].reading: unknown reading 'mm' (did you mean m?)"),
    (_set("options/claims", [{"less": ["a", "b"], "metric": "y", "reading": {"m": "tw"}}]),
     "x.yaml.options.claims[0].reading: reading 'm' has no choice 'tw' (did you mean two?)"),
    (_set("options/claims", [{"less": ["a", "b"], "metric": "y",
                              "reading": {"m": [["two"]]}}]),
     "x.yaml.options.claims[0].reading: reading 'm' has no choice ['two']"),
    (_set("options/claims", [{"less": ["a", "b"], "metric": "y", "reading": "two"}]),
     "x.yaml.options.claims[0].reading: expected a mapping reading -> choice"),
    (_set(f"{TWO}/params", {"x": 5}), "choices.two.params: 'x' is a grid axis"),
    (_set(f"{TWO}/title", "two\nlines"), "choices.two.title: expected a one-line string"),
    (_set(f"{TWO}/title", 2), "choices.two.title: expected a one-line string, got 2"),
    (lambda raw: (_set(f"{TWO}/title", "m as two")(raw),
                  _set("readings/f/choices/double/title", "with a factor")(raw)),
     "x.yaml.readings: choices of m, f give titles; one reading at most may"),
    (_set(f"{TWO}/params", {"y": 5}), "run 'b-one|x=1': unknown parameter 'y'"),
])
def test_bad_readings_name_the_path(mutate, message):
    raw = _raw()
    mutate(raw)
    with pytest.raises(ConfigError) as e:
        # chosen, so that the choice's params reach the procedure's checks
        resolve(raw, "smoke", "x.yaml", readings={"m": "two"})
    assert message in str(e.value)


def test_choosing_an_unknown_reading_or_choice_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        resolve(_raw(), "smoke", readings={"ff": "double"})
    assert str(e.value) == ("t-read: unknown reading 'ff' (did you mean f?); its readings: "
                            "m (one | two); f (plain | double)")
    with pytest.raises(ConfigError) as e:
        resolve(_raw(), "smoke", readings={"f": "dubble"})
    assert str(e.value) == ("t-read: reading 'f' has no choice 'dubble' (did you mean "
                            "double?); choices: plain, double (default plain)")
    with pytest.raises(ConfigError) as e:     # from Python: a list is no choice's name
        resolve(_raw(), "smoke", readings={"f": ["double"]})
    assert str(e.value) == ("t-read: reading 'f' has no choice ['double'] (did you mean "
                            "double?); choices: plain, double (default plain)")
    plain = _raw()
    del plain["readings"]
    with pytest.raises(ConfigError, match=r"t-read has no readings to choose from \(--reading "
                                          r"f=double\)"):
        resolve(plain, "smoke", readings={"f": "double"})


WITH_READINGS = [n for n, p in catalogue_files().items() if read_file(p).get("readings")]


@pytest.mark.parametrize("name", WITH_READINGS)
def test_each_catalogue_reading_resolves_and_only_its_other_choices_change_the_runs(name):
    path = catalogue_files()[name]
    raw = read_file(path)
    bare = copy.deepcopy(raw)
    del bare["readings"]
    for sec in [bare] + list((bare.get("scales") or {}).values()):   # claims of one reading
        claims = ((sec or {}).get("options") or {}).get("claims")
        if claims:
            sec["options"]["claims"] = [c for c in claims if "reading" not in c]
    default = {s: load_experiment(name, s) for s in SCALES}
    runs = {s: default[s].expand(data_dir="/d") for s in SCALES}
    for scale in SCALES:
        # runs stored before the entry had its readings stay valid
        assert [r.key for r in runs[scale]] == [
            r.key for r in resolve(bare, scale, str(path)).expand(data_dir="/d")]
    for key, r in raw["readings"].items():
        assert not {"params", "pieces"} & set(r["choices"][r["default"]]), (
            f"{name}: {key}'s default sets params")
        for choice in r["choices"]:
            changed = []
            for scale in SCALES:
                # the choice's params pass the procedure's checks at every scale
                spec = load_experiment(name, scale, readings={key: choice})
                mine = spec.expand(data_dir="/d")
                assert [x.label for x in mine] == [x.label for x in runs[scale]]
                # no option a single choice sets is idle: its runs keep the keys they had
                # before the keys left idle options out
                assert all(key_params(x.params) is x.params for x in mine), (name, choice)
                if (any(a.params != b.params for a, b in zip(mine, runs[scale]))
                        or spec.options != default[scale].options):
                    changed.append(scale)
            # a choice that changes nothing at any scale would name a reading it does not run
            assert bool(changed) == (choice != r["default"]), (name, key, choice, changed)


def test_readings_that_combine_into_the_runs_of_each_alone_train_nothing_new():
    """``--reading momentum=outer`` leaves the PTB Entropy-SGD runs no inner momentum, on which
    ``--reading inner-momentum=whole-step`` then sets what it carries: the same training,
    which had another run key. Each run of the two together is now a run of one of them
    alone, key for key; its params stay as the readings wrote them."""
    entry = "chaudhari-entropy-sgd-rnn"
    outer, whole = {"momentum": "outer"}, {"inner-momentum": "whole-step"}
    alone = {r.key for rd in (outer, whole)
             for r in load_experiment(entry, "smoke", readings=rd).expand()}
    both = load_experiment(entry, "smoke", readings={**outer, **whole}).expand()
    assert {r.key for r in both} <= alone
    ptb = [r for r in both if r.label == "entropy-sgd-ptb"]
    assert ptb and all(r.params["optimizer"]["inner_momentum_on"] == "step"
                       and r.params["optimizer"]["inner_momentum"] == 0.0 for r in ptb)


def test_zhu_escape_readings_combine_on_the_landscape():
    spec = load_experiment("zhu-escape-2d", "smoke",
                           readings={"landscape": "rescaled", "data-var": "std"})
    assert {json.dumps(r.params["landscape"], sort_keys=True) for r in spec.expand()} == {
        '{"data_var": 0.0001, "name": "rescaled"}'}
    # the authors' code draws its own data: a data variance does not apply to it, and the
    # message says so and names the two readings (it was Python's "unexpected keyword")
    with pytest.raises(ConfigError) as e:
        load_experiment("zhu-escape-2d", "smoke",
                        readings={"landscape": "authors-code", "data-var": "std"})
    assert str(e.value).startswith(
        f"{catalogue_files()['zhu-escape-2d']}: "
        "zhu-escape-2d[smoke] run 'gd': landscape 'authors-code': data_var is an option of "
        "the printed loss (landscapes 'paper' and 'rescaled'); 'authors-code' is the authors' "
        "code's loss at θ = π/4 with its own data")
    assert str(e.value).endswith(
        "readings.data-var.choices.std.params.landscape; with the readings "
        "landscape=authors-code, data-var=std)")


def _write(tmp_path, raw, name="t.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def test_cli_reading_errors(tmp_path, capsys):
    cfg = _write(tmp_path, _raw())
    with pytest.raises(SystemExit) as e:
        cli(["run", "--config", cfg, "--reading", "double"])
    assert e.value.code == 2
    assert "argument --reading: expected KEY=CHOICE" in capsys.readouterr().err
    store = ["--store", str(tmp_path / "s.sqlite"), "--scale", "smoke"]
    assert cli(["run", "--config", cfg, "--reading", "f=dubble", *store]) == 2
    assert "has no choice 'dubble' (did you mean double?)" in capsys.readouterr().err
    assert cli(["run", "--config", cfg, "--reading", "f=double", "--reading", "f=plain",
                *store]) == 2
    assert "--reading f given twice" in capsys.readouterr().err
    plain = _raw()
    del plain["readings"]
    assert cli(["run", "--config", _write(tmp_path, plain, "p.yaml"), "--reading", "f=double",
                *store]) == 2
    assert "t-read has no readings to choose from" in capsys.readouterr().err
    assert not (tmp_path / "s.sqlite").exists()      # nothing ran


def test_the_continue_command_repeats_the_readings(tmp_path, monkeypatch):
    from sgdlab.cli.main import build_parser
    from sgdlab.cli.run import same_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SGDLAB_STORE", raising=False)
    args = build_parser().parse_args(["run", "t", "--reading", "m=two", "--reading", "f=double"])
    assert same_command(args) == (f"sgdlab run t --scale cpu --store {tmp_path}/sgdlab-runs/"
                                  "runs.sqlite --reading m=two --reading f=double")


def test_each_reading_reports_only_its_own_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = _write(tmp_path, _raw())
    store = str(tmp_path / "s.sqlite")
    run_experiment(cfg, scale="smoke", store_path=store, progress=None)
    assert {s["params"]["cfg"]["m"] for s in SEEN} == {1}
    # m=two into its own default folder: its b- runs are new, a's are the default's
    assert cli(["run", "--config", cfg, "--scale", "smoke", "--store", store,
                "--reading", "m=two"]) == 0
    out = tmp_path / "sgdlab-out" / "t-read-smoke-m=two"
    r = json.loads((out / "results.json").read_text())
    assert (r["sweep"]["executed"], r["sweep"]["skipped"]) == (4, 2)
    assert {s["label"]: s["params"]["cfg"]["m"] for s in SEEN} == {
        "a|x=1": 1, "a|x=2": 1, "b-one|x=1": 2, "b-one|x=2": 2, "b-two|x=1": 2, "b-two|x=2": 2}
    assert r["conclusions"][0]["text"] == "threshold 5"
    assert r["experiment"]["readings"]["m"]["choice"] == "two"
    assert r["experiment"]["deviations"] == ["toy data", "m read as two"]
    html = (out / "report.html").read_text()
    assert "<code>m=two</code> (default: one): m is two" in html
    assert "<code>f=plain</code> (default): no factor" in html
    assert "m read as two" in html
    default = json.loads((tmp_path / "sgdlab-out" / "t-read-smoke" / "results.json").read_text())
    assert default["experiment"]["readings"]["m"]["choice"] == "one"
    # f=double was never run: its report finds none of its runs, not the stored ones of others
    res = run_experiment(cfg, scale="smoke", store_path=store, progress=None,
                         readings={"f": "double"}, out_dir=tmp_path / "d")
    assert res.sweep.executed and {s["params"]["factor"] for s in SEEN} == {2}
    # rebuilding from the folder keeps its readings
    SEEN.clear()
    capsys.readouterr()
    assert cli(["report", str(out)]) == 0
    assert {s["params"]["cfg"]["m"] for s in SEEN if s["label"].startswith("b-")} == {2}
    assert cli(["report", str(out), "--reading", "f=double"]) == 2
    assert "--reading chooses for an experiment name" in capsys.readouterr().err


def test_list_shows_the_readings(capsys):
    assert cli(["list", "--json"]) == 0
    items = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    xing = items["xing-isotropic-noise"]["readings"]["max-variance"]
    assert xing["default"] == "per-example" and set(xing["choices"]) == {"per-example",
                                                                        "batch-100"}
    assert items["xing-schedules"]["readings"] == {}
    assert cli(["list", "xing-isotropic-noise"]) == 0
    out = capsys.readouterr().out
    assert "--reading max-variance=per-example (default): 'maximum gradient variance'" in out
    assert "--reading max-variance=batch-100: " in out


def test_list_is_one_line_per_entry_and_list_name_shows_it_in_full(capsys):
    # `sgdlab list` printed every reading of every entry: 161 lines, the 35 names among them
    # scrolled off the screen; the readings are now under `sgdlab list NAME`
    assert cli(["list"]) == 0
    out = capsys.readouterr().out
    entries = out.split("\n\n")[0].splitlines()
    from sgdlab.experiments.spec import list_names

    assert [ln.split()[0] for ln in entries] == list_names()
    assert "--reading" not in out.split("\n\n")[0]
    line = next(ln for ln in entries if ln.startswith("xing-isotropic-noise "))
    assert line.endswith("[3 readings]")
    assert "`sgdlab list NAME` shows an entry's claim, description, file and readings" in out
    assert cli(["list", "Xing_Isotropic_Noise", "xing-schedules"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("xing-isotropic-noise ")
    assert "--reading max-variance=batch-100: " in out and "claim: " in out
    assert "xing-isotropic-noise.yaml" in out and "xing-schedules " in out
    assert cli(["list", "--json", "xing-schedules"]) == 0
    assert [i["name"] for i in json.loads(capsys.readouterr().out)] == ["xing-schedules"]
    assert cli(["list", "xing-wlak"]) == 2
    assert "unknown experiment 'xing-wlak' (did you mean xing-walk?)" in capsys.readouterr().err


def test_xing_batch_100_reading_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["run", "xing-isotropic-noise", "--scale", "smoke", "--reading",
                "max-variance=batch-100", "--out", str(out),
                "--store", str(tmp_path / "s.sqlite")]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["experiment"]["readings"]["max-variance"]["choice"] == "batch-100"
    from sgdlab.store import RunStore

    store = RunStore(str(tmp_path / "s.sqlite"))
    m = {}
    for row in store.list_runs(experiment="xing-isotropic-noise"):
        cfg = row["config"]
        m[cfg["label"]] = cfg["params"]["optimizer"].get("noise_batch_size")
    assert m == {"gd": None, "gd-iso-0.05": 100, "gd-iso-0.1": 100, "sgd": None}
    assert "max-variance=batch-100</code> (default: per-example)" in (
        out / "report.html").read_text()


@pytest.mark.parametrize("entry, given, meant", [
    ("zhu-noisy-label", "hessian-eig", "hessian-eigs"),
    ("xing-hessian-norm", "hessian-eigs", "hessian-eig"),
    ("jastrzebski-ratio-grid", "hessian-eigs", "hessian-eig")])
def test_the_other_entries_spelling_of_the_hessian_reading_is_answered_with_this_ones(
        entry, given, meant):
    """Zhu's entry names its reading hessian-eigs (the top-k), Xing's and Jastrzebski's
    hessian-eig (the top one); stored runs keep those names, so the other spelling is met
    with the entry's own."""
    with pytest.raises(ConfigError, match=rf"^{entry}: unknown reading '{given}' \(did you "
                                          rf"mean {meant}\?\); its readings: "):
        resolve(read_file(catalogue_files()[entry]), "smoke", readings={given: "largest"})


def test_a_grid_axis_names_its_runs_by_the_last_part_of_its_path():
    """The run labels (and so the run keys) say ``group|x=1,m=2``: each axis by the last part
    of its dotted path, in the grid's order; a group without a label is named by the grid."""
    raw = _raw()
    del raw["readings"]
    raw["grid"] = {"x": [1], "cfg.m": [2, 3]}
    raw["runs"] = [{"label": ""}, {"label": "b"}]
    runs = resolve(raw, "smoke").expand()
    assert [r.label for r in runs] == ["x=1,m=2", "x=1,m=3", "b|x=1,m=2", "b|x=1,m=3"]
    assert [r.params["cfg"]["m"] for r in runs] == [2, 3, 2, 3]
    # results.json's runs[].grid: the values at the grid's dotted paths
    assert [r.grid_point for r in runs[:2]] == [{"x": 1, "cfg.m": 2}, {"x": 1, "cfg.m": 3}]


def test_a_list_selector_compares_the_items_value_as_text():
    """``items[n=1]`` reaches an item whose ``n`` is the number 1 (YAML reads it so): the
    path's value is text, compared with the item's value as text."""
    from sgdlab.experiments.spec import get_dotted, set_dotted

    params = {"items": [{"n": 1, "v": 0}, {"n": 2, "v": 0}]}
    set_dotted(params, "items[n=1].v", 5)
    assert params == {"items": [{"n": 1, "v": 5}, {"n": 2, "v": 0}]}
    assert get_dotted(params, "items[n=2].n") == 2


def test_a_stored_run_is_of_each_reading_whose_sweep_at_its_data_dir_takes_it(tmp_path):
    """A paper-scale run's key holds its --data-dir, which the store keeps only in its
    params: read back from there, each data dir's runs are found under their readings."""
    from sgdlab.experiments.readings import runs_of_readings, runs_readings

    entry, text = "chaudhari-hessian-spectrum", {"smallfc": "text"}
    runs, own = [], set()
    for data_dir in (tmp_path / "a", tmp_path / "b"):
        default = load_experiment(entry, "paper").expand(str(data_dir))
        keys = {r.key for r in default}
        runs += [{"id": f"{r.key}-default", "config": r.config()} for r in default]
        for r in load_experiment(entry, "paper", text).expand(str(data_dir)):
            if r.key not in keys:
                own.add(f"{r.key}-text")
                runs.append({"id": f"{r.key}-text", "config": r.config()})
    shown = runs_readings(entry, runs)
    assert own and all(shown[rid] == ["smallfc=text"] for rid in own)
    shared = {rid for rid, names in shown.items() if "smallfc=text" in names} - own
    assert shared and all(shown[rid][0] == "default" for rid in shared)
    assert {r["id"] for r in runs_of_readings(entry, text, runs)} == own | shared
    # a run of another version of the entry (or an edited copy): of no reading
    other = {**runs[0]["config"], "run_key": "0" * 20}
    assert runs_readings(entry, [{"id": "x", "config": other}]) == {"x": []}


def test_a_reading_name_is_default_one_choice_off_its_default_or_none_for_two():
    from sgdlab.experiments.readings import reading_name

    table = {"a": {"default": "x", "choices": {"x": {}, "y": {}}},
             "b": {"default": "u", "choices": {"u": {}, "v": {}}}}
    assert reading_name(table, {}) == reading_name(table, {"a": "x"}) == "default"
    assert reading_name(table, {"a": "x", "b": "v"}) == "b=v"
    assert reading_name(table, {"a": "y", "b": "v"}) is None
