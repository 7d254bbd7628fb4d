"""Procedures (how one run executes) and analyses (how stored runs become a report).

A **procedure** is a named object with ``validate(params, where)`` (raises ``ConfigError``
naming an unknown or invalid key) and ``run(run, ctx) -> RunOutput``; it calls the public
functions of the rest of sgdlab (training loop, measurements, optimizers, landscapes) and never
re-implements them. An **analysis** is a function ``(spec, runs) -> Analysis`` that only reads
what the runs recorded in the store (summaries, metric series, data artifacts) and returns
tables, figures and conclusions.

Both are looked up by name from experiment files, so configs stay data. An analysis imports
its figure helpers (matplotlib) inside the function that draws: a sweep worker imports the
module of the procedure it runs and never draws, and matplotlib would add about a third of a
second to its start-up.
"""
from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdlab.errors import ConfigError, did_you_mean, refused_value

PROCEDURES: dict[str, "Procedure"] = {}
ANALYSES: dict[str, Callable[..., "Analysis"]] = {}
# analysis -> ``(spec, runs: list[RunSpec]) -> ClaimNames``: what its claims may name
CLAIM_NAMES: dict[str, Callable[..., "ClaimNames"]] = {}
# analysis -> ``{option: rule}`` (:func:`option_problem`): every option it reads
ANALYSIS_OPTIONS: dict[str, dict[str, str]] = {}


@dataclass
class ClaimNames:
    """What the claims of an analysis (``options.claims``) may name, known from the experiment
    before any run trains: ``groups``, the keys of the value table it builds (run groups and
    pseudo-groups), and ``metrics``, the metrics those hold; None where the runs' records
    alone tell (``sgdlab run --dry-run`` then checks nothing of that kind). ``problems``: a
    sentence for each name its other options give that the runs will not have (the η/B
    grid's ``expect``)."""

    groups: list[str] | None = None
    metrics: set[str] | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class RunOutput:
    """What a run returns. ``summary``: JSON scalars (final metrics, measurements);
    ``data``: JSON-serialisable arrays/lists (spectra, histograms, trajectories) written as a
    data artifact; ``status``: finished | diverged."""

    summary: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "finished"
    message: str | None = None


@dataclass
class StoredRun:
    """A finished (or diverged) run as read back from the store."""

    key: str
    run_id: str
    label: str
    seed: int
    params: dict[str, Any]
    status: str
    summary: dict[str, Any]
    metrics: dict[str, list[tuple[int, float]]]
    data: dict[str, Any]
    # the store's word on how the run ended (where a diverged one stopped), "" if none
    message: str = ""

    def series(self, name: str) -> tuple[list[float], list[float]]:
        pts = self.metrics.get(name, [])
        return [float(s) for s, _ in pts], [float(v) for _, v in pts]

    @property
    def group(self) -> str:
        """The run-group label without grid values (``sgd`` for ``sgd|lr=0.1``)."""
        return self.label.split("|")[0]


# what each rule of ``Procedure.numbers`` accepts, as its message says it
_NUMBER_RULES = {"int>0": "a positive integer", "int>=0": "an integer >= 0",
                 "number": "a finite number",
                 "number>0": "a finite number > 0", "number>=0": "a finite number >= 0"}


def number_problem(value: Any, rule: str) -> str | None:
    """What ``value`` should be under ``rule`` (a key of ``_NUMBER_RULES``, with ``|null``
    when None is accepted), or None when it is; a bool is no number."""
    if value is None and rule.endswith("|null"):
        return None
    base = rule.removesuffix("|null")
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (isinstance(value, int) or not base.startswith("int"))
          and not (base.endswith(">0") and value <= 0)
          and not (base.endswith(">=0") and value < 0))
    return None if ok else _NUMBER_RULES[base] + (" or null" if base != rule else "")


# the other rules of an analysis option (:func:`option_problem`), and what each accepts
_KIND_RULES = {"bool": (bool, "true or false"), "str": (str, "a string"),
               "list": (list, "a list"), "dict": (dict, "a mapping")}


# the word that begins the rule of an option the analysis cannot do without
REQUIRED = "required "


def option_problem(value: Any, rule: str) -> str | None:
    """What ``value`` should be under ``rule``, or None when it is. A rule is a key of
    ``_NUMBER_RULES`` or ``_KIND_RULES``, ``one of A, B`` (one of those words), ``list of
    RULE`` (a list whose items follow RULE) or ``any`` (an option the analysis checks itself),
    with ``|null`` when None is accepted too; ``required RULE`` is RULE for an option that
    must be given (:func:`analysis_option_problems` says its absence)."""
    rule = rule.removeprefix(REQUIRED)
    if rule == "any" or value is None and rule.endswith("|null"):
        return None
    base = rule.removesuffix("|null")
    null = " or null" if base != rule else ""
    if base.startswith("one of "):
        ok = isinstance(value, str) and value in base[len("one of "):].split(", ")
        return None if ok else base + null
    if base.startswith("list of "):
        item = base[len("list of "):]
        if isinstance(value, list) and all(option_problem(v, item) is None for v in value):
            return None
        # (what None is refused for is what the rule asks of each item)
        return f"a list, each item {option_problem(None, item)}{null}"
    if base in _KIND_RULES:
        kind, said = _KIND_RULES[base]
        # an int is no bool: ``cosine_history: 1`` is refused
        return None if isinstance(value, kind) else said + null
    return number_problem(value, rule)


def analysis_option_problems(name: str, options: dict[str, Any]) -> list[str]:
    """A sentence for each option of ``options`` that analysis ``name`` does not read (with
    the closest name it does), each value against the rule it declared
    (:func:`register_analysis`), each required option missing and each claim of
    ``options.claims`` with a key a claim has not
    (:func:`~sgdlab.experiments.procedures.common.claim_entry_problems`); none for an
    analysis that declared no options."""
    _load_all()
    rules = ANALYSIS_OPTIONS.get(name)
    if rules is None:
        return []
    out = []
    for k, v in options.items():
        if k not in rules:
            out.append(f"options.{k}: analysis {name!r} has no option {k!r}"
                       f"{did_you_mean(k, rules)}; its options: "
                       f"{', '.join(sorted(rules)) or 'none'}")
        elif (problem := option_problem(v, rules[k])) is not None:
            out.append(f"options.{k} must be {problem}, {refused_value(v)}")
        elif k == "claims" and v is not None:
            from sgdlab.experiments.procedures.common import claim_entry_problems

            out += claim_entry_problems(v)
    out += [f"options.{k}: analysis {name!r} needs this option, {option_problem(None, rule)}"
            for k, rule in rules.items()
            if rule.startswith(REQUIRED) and k not in options]
    return out


class Procedure:
    """Base class: ``allowed`` lists the top-level parameter keys; ``required`` those that
    must be present; ``numbers`` the rule (``number_problem``) of each numeric one. Subclasses
    refine ``validate``."""

    name: str = ""
    allowed: set[str] = set()
    required: set[str] = set()
    numbers: dict[str, str] = {}

    def validate(self, params: dict[str, Any], where: str) -> None:
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: run parameters must be a mapping")
        for k in params:
            if k not in self.allowed:
                raise ConfigError(f"{where}: unknown parameter {k!r} for procedure "
                                  f"{self.name!r}{did_you_mean(k, self.allowed)}; allowed: "
                                  f"{', '.join(sorted(self.allowed))}")
        for k in self.required:
            if k not in params:
                raise ConfigError(f"{where}: missing parameter {k!r} for procedure {self.name!r}")
        # checked here, when the sweep is planned: a value of the wrong type would otherwise
        # fail every run with Python's own message, which names no parameter
        for k, rule in self.numbers.items():
            problem = number_problem(params[k], rule) if k in params else None
            if problem:
                raise ConfigError(f"{where}: {k} must be {problem}, {refused_value(params[k])}")

    def validate_seed(self, params: dict[str, Any], seed: int, where: str) -> None:
        """A :class:`ConfigError` (at ``where``, the ``seeds`` key) when a run of ``params``
        cannot run at ``seed``, which the spec has checked is in 0..2**32 - 1; most
        procedures take every such seed."""

    def planned_steps(self, params: dict[str, Any]) -> int | None:
        """The optimizer steps a run of ``params`` will take, when its parameters alone
        tell (``sgdlab run --dry-run``); None when they do not."""
        return None

    def training_settings(self, params: dict[str, Any], seed: int) -> dict[str, Any] | None:
        """What a run of ``params`` and ``seed`` trains, in the words of a run config of
        ``sgdlab train`` (:func:`sgdlab.config.run.training_settings`), recorded with the run
        so that ``sgdlab runs compare`` lines it up with runs of ``sgdlab train``; None for a
        procedure that trains no model as ``sgdlab train`` does."""
        return None

    def resumes_from(self, folder: Path, params: dict[str, Any]) -> bool:
        """Whether ``folder``, the artifact folder an earlier attempt of a run of ``params``
        left, holds a state this procedure continues from itself (the sweep then keeps the
        folder; the training loop's checkpoints the sweep resumes itself)."""
        return False

    def resume_folders(self, folder: Path, params: dict[str, Any]) -> list[Path]:
        """The folders in ``folder`` (a run's artifact folder) that only a resume reads
        (:meth:`resumes_from`): the sweep removes them once the run has finished, as it
        removes the training loop's checkpoint."""
        return []

    def summary_keys(self, params: dict[str, Any]) -> set[str] | None:
        """Every key the summary of a run of ``params`` can hold, when its parameters alone
        tell (a claim naming another metric is refused before training); None when they do
        not."""
        return None

    def run(self, run, ctx) -> RunOutput:  # pragma: no cover - interface
        raise NotImplementedError


def register_procedure(name: str):
    def deco(cls):
        inst = cls() if isinstance(cls, type) else cls
        inst.name = name
        PROCEDURES[name] = inst
        return cls
    return deco


def register_analysis(name: str, *, claim_names: Callable[..., ClaimNames] | None = None,
                      options: dict[str, str] | None = None):
    """``claim_names(spec, runs)``: the :class:`ClaimNames` of the analysis for the runs the
    sweep expands (``RunSpec``); without it nothing a claim names is checked before training.
    ``options``: ``{option: rule}`` (:func:`option_problem`) for every option the analysis
    reads (``required RULE`` for one it cannot do without); given, another option, a value
    against its rule or a required option missing fails the plan before training and the
    report before analysing (:func:`analysis_option_problems`), without it no option is
    checked there."""
    def deco(fn):
        ANALYSES[name] = fn
        if claim_names is not None:
            CLAIM_NAMES[name] = claim_names
        if options is not None:
            ANALYSIS_OPTIONS[name] = dict(options)
        return fn
    return deco


_loaded = False


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import sgdlab.experiments.procedures as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{m.name}")


def get_procedure(name: str) -> Procedure:
    _load_all()
    if name not in PROCEDURES:
        raise ConfigError(f"unknown procedure {name!r}{did_you_mean(name, PROCEDURES)}; "
                          f"known: {', '.join(sorted(PROCEDURES))}")
    return PROCEDURES[name]


def get_analysis(name: str) -> Callable[..., "Analysis"]:
    _load_all()
    if name not in ANALYSES:
        raise ConfigError(f"unknown analysis {name!r}{did_you_mean(name, ANALYSES)}; "
                          f"known: {', '.join(sorted(ANALYSES))}")
    return ANALYSES[name]


def analysis_claim_names(name: str) -> Callable[..., ClaimNames] | None:
    """The ``claim_names`` analysis ``name`` registered (:func:`register_analysis`), or None."""
    _load_all()
    return CLAIM_NAMES.get(name)


from sgdlab.experiments.analysis import Analysis, Conclusion  # noqa: E402  (re-export)

__all__ = ["Analysis", "ClaimNames", "Conclusion", "Procedure", "RunOutput", "StoredRun",
           "analysis_claim_names", "analysis_option_problems", "get_analysis", "get_procedure",
           "register_analysis", "register_procedure"]
