"""Errors a user can fix (the CLI prints their message without a traceback), warnings
attributed to the user's own call, and torch's warnings that name nothing a user can act on
kept from them."""
from __future__ import annotations

import errno
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

# seeds run in 0..SEED_LIMIT - 1: numpy's legacy seeding and scikit-learn's random_state take
# 32 bits, and a larger seed failed a run after its config was accepted
SEED_LIMIT = 2**32


def is_seed(value: object) -> bool:
    """Whether ``value`` is a seed: an integer (not a bool) in 0..:data:`SEED_LIMIT` - 1."""
    import numbers

    return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and 0 <= value < SEED_LIMIT)


#: what :func:`is_seed` asks, as the option checks' messages give it
RUN_SEED_RULE = "an int in 0..2**32 - 1, as a run config's seed"


def not_a_seed(name: str, value: object) -> str:
    """The message for a ``name`` (an argument, ``--seed``) that fails :func:`is_seed`."""
    return (f"{name} must be an int in 0..2**32 - 1 (as a run config's seed), "
            f"{refused_value(value)}")


def finite_number(value: object) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    import math

    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def refused_value(value: object) -> str:
    """How a message ends that refuses ``value`` where a number is wanted: ``not a bool
    (True)`` for a bool, which Python takes for the int 1 (the rule it would pass is not
    what refuses it), else ``got <repr>``."""
    import numpy as np

    return (f"not a bool ({bool(value)})" if isinstance(value, (bool, np.bool_))
            else f"got {value!r}")


def int_at_least(v: object, low: int) -> bool:
    """``v`` is a Python int >= ``low`` (not a bool); give it :func:`plain_int` first, and
    store what that returns, for numpy's and torch's ints to pass."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def plain_int(v: object) -> object:
    """``v`` as a Python int when it is an integer of numpy or torch (``np.int64(256)``, a
    one-element integer tensor: a count or seed computed with them), which the checks' ``int``
    would refuse and ``torch.manual_seed`` fails on; anything else (a bool of any kind, a
    float, a string, None) unchanged, for the checks to judge."""
    import operator

    # a tensor only once torch is loaded: this module is imported before it, by the CLI too
    torch = sys.modules.get("torch")
    if v is None or isinstance(v, int) or (torch is not None and isinstance(v, torch.Tensor)
                                           and v.dtype == torch.bool):
        return v
    try:
        return operator.index(v)
    except TypeError:
        return v


def plain_float(v: object) -> object:
    """``v`` as a Python float when it is a real number of numpy's (``np.float32(0.01)``),
    which the measurements take and the checks' ``float`` would refuse; anything else (a
    Python number, a bool, a string, None) unchanged."""
    import numbers

    if isinstance(v, numbers.Real) and not isinstance(v, (int, float)):
        return float(v)
    return v


def human_size(n: int) -> str:
    """``n`` bytes in decimal units, as the design notes and messages give sizes: ``512 B``,
    ``3.8 KB``, ``37.0 MB``, ``1.1 GB``."""
    if n < 1000:
        return f"{n} B"
    for unit, scale in (("KB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if round(n / scale, 1) < 1000:     # 999,950 B is 1.0 MB, not "1000.0 KB"
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e12:.1f} TB"


class UserError(Exception):
    """Bad input (config, file, option): the message names the problem."""


class ConfigError(UserError, ValueError):
    """An invalid run or experiment config; the message names the offending key."""


def checked_int(name: str, v: object, low: int, what: str = "", *, optional: bool = False,
                error: type[UserError] = UserError) -> int | None:
    """``v`` as a Python int (:func:`plain_int`: numpy's and torch's ints are counts too) when
    it is an int >= ``low`` (not a bool), or None when it is None and ``optional``; else an
    ``error`` "<name> must be an int >= <low><what>, got <v>" (``what`` says more: " (steps)";
    a bool: :func:`refused_value`)."""
    v = plain_int(v)
    if (v is None and optional) or int_at_least(v, low):
        return v
    raise error(f"{name} must be an int >= {low}{what}, {refused_value(v)}")


def checked_int_argument(name: str, v: object, low: int, what: str = "", *,
                         optional: bool = False) -> int | None:
    """:func:`checked_int` for a function's argument, in torch.optim's words: a ValueError
    "Invalid <name>=<v> (an int >= <low><what>)" (``what``: ": the Lanczos steps", ", or
    None"), the form the measurements and instruments share and a run config reads an
    option's key path from."""
    v = plain_int(v)
    if (v is None and optional) or int_at_least(v, low):
        return v
    raise ValueError(f"Invalid {name}={v!r} (an int >= {low}{what})")


def checked_count_argument(name: str, v: object, high: int, bound: str) -> int:
    """``v`` as a Python int (:func:`plain_int`) when it is an int in 1..``high`` (not a bool),
    else a ValueError "Invalid <name>=<v>: need an int 1 <= <name> <= <bound> = <high>": how
    many eigenpairs or directions to find in a problem of ``high`` (``bound`` names it: ``d``,
    ``min(N, d)``)."""
    v = plain_int(v)
    if int_at_least(v, 1) and v <= high:
        return v
    raise ValueError(f"Invalid {name}={v!r}: need an int 1 <= {name} <= {bound} = {high}")


def checked_float(name: str, v: object, low: float | None = 0.0, what: str = "", *,
                  strict: bool = False, optional: bool = False,
                  error: type[UserError] = UserError) -> float | None:
    """``v`` as a Python float (:func:`plain_float`: numpy's numbers too; ints as floats)
    when it is a finite number >= ``low`` (> ``low`` when ``strict``; any finite number when
    ``low`` is None; never a bool, NaN or inf), or None when it is None and ``optional``; else
    an ``error`` "<name> must be a finite number >= <low><what>, got <v>" (``what`` says
    more: " (the noise scale)"; a bool: :func:`refused_value`)."""
    v = plain_float(v)
    if v is None and optional:
        return None
    if finite_number(v) and (low is None or (v > low if strict else v >= low)):
        return float(v)
    bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
    raise error(f"{name} must be a finite number{bound}{what}, {refused_value(v)}")


def checked_float_argument(name: str, v: object, low: float, what: str = "", *,
                           strict: bool = False, optional: bool = False) -> float | None:
    """:func:`checked_float` for a function's argument, in :func:`checked_int_argument`'s
    words: a ValueError "Invalid <name>=<v> (a finite number >= <low><what>)" (> ``low`` when
    ``strict``; ``what``: ", or None")."""
    v = plain_float(v)
    if v is None and optional:
        return None
    if finite_number(v) and (v > low if strict else v >= low):
        return float(v)
    raise ValueError(f"Invalid {name}={v!r} (a finite number {'>' if strict else '>='} "
                     f"{low:g}{what})")


def check_flag(name: str, value: object, what: str = "", *,
               error: type[UserError] = UserError) -> bool:
    """``value`` as a bool if it is one (numpy's too), else an ``error`` "<name> must be True
    or False<what>, got <value>" (``what`` says more: " (True: Σ; False: ...)"): a string
    such as "no" is truthy, and ``replacement="no"`` drew with replacement. The one wording of
    every on/off check, the instruments' options too (a run config reads the key from it)."""
    import numpy as np

    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{name} must be True or False{what}, got {value!r}")
    return bool(value)


def join(path: str, key: str | int) -> str:
    """The key path of ``key`` under ``path``: ``path.key``, ``path[i]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def unknown_key(path: str, key: str, known: Sequence[str],
                nested: dict[str, Sequence[str]] | None = None) -> str:
    """``path.key: unknown key (did you mean x?)`` or listing the valid keys. ``nested``: the
    keys of the sections one level down, by section, where a key given a level too high
    (``--set epochs=5`` for ``train.epochs``) is found."""
    homes = [join(join(path, section), key) for section, keys in (nested or {}).items()
             if key in keys]
    # a key found as it is one level down is that one, not a spelling of a key here
    # (replacement is train.replacement, not experiment)
    close = None if homes else closest_name(key, known)
    hint = (f"did you mean {' or '.join(homes)}?" if homes
            else f"did you mean {close}?" if close is not None
            else f"valid keys: {', '.join(sorted(known))}" if known else "no keys allowed here")
    return f"{join(path, key)}: unknown key ({hint})"


def config_error(errors: list[str]) -> ConfigError:
    if len(errors) == 1:
        return ConfigError(errors[0])
    return ConfigError(f"{len(errors)} problems in the config:\n  " + "\n  ".join(errors))


def unknown_keys(path: str, given: Iterable[str], known: Sequence[str],
                 nested: dict[str, Sequence[str]] | None = None) -> list[str]:
    """The keys of ``given`` not in ``known``, each as :func:`unknown_key` words it."""
    return [unknown_key(path, k, known, nested) for k in given if k not in known]


def check_keys(path: str, given: Iterable[str], known: Sequence[str],
               nested: dict[str, Sequence[str]] | None = None) -> None:
    """Refuse the keys of ``given`` not in ``known`` (:func:`unknown_keys`), all of them in
    one :class:`ConfigError`, as a config's other problems are."""
    found = unknown_keys(path, given, known, nested)
    if found:
        raise config_error(found)


class DataError(UserError, FileNotFoundError):
    """A dataset file is missing or malformed; the message names the file."""


class ResumableError(UserError):
    """A problem outside a run's config and data (a checkpoint it could not write: a full
    disk, a folder it may not write to): once that is fixed, resuming the recorded run, which
    reruns its stored config, continues it. Any other :class:`UserError` that stops a run
    lies in what the stored config names, which a resume would only meet again."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a recorded run; the message names the run and the command
    that continues it. (A KeyboardInterrupt, so code that stops on interrupts still does.)"""


class ReportInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped an experiment's report after its sweep had ended (while its
    workers or Ray were being stopped, or while the report was written): no run was in
    progress, and the same command writes the report without running anything."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _internal(filename: str) -> bool:
    """A frame of sgdlab, torch (``torch.no_grad()`` as a decorator is a frame of its own) or
    contextlib: not where a user called from."""
    torch = sys.modules.get("torch")
    torch_dir = os.path.dirname(torch.__file__) + os.sep if torch is not None else _PACKAGE
    return (filename.startswith((_PACKAGE, torch_dir))
            or os.path.basename(filename) == "contextlib.py")


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the line that called into sgdlab (the first frame
    outside sgdlab, torch and contextlib), however many helpers and decorators lie between:
    a fixed ``stacklevel`` pointed into torch's ``no_grad`` wrapper."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and _internal(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)


@contextmanager
def torch_warning_ignored(message: str, category: type[Warning]) -> Iterator[None]:
    """Within: a warning of ``category`` given from torch's own code whose text the regular
    expression ``message`` matches from its start is not shown; every other warning is as
    before. For torch's warnings from inside a measurement that name nothing its caller can
    act on. Not ``warnings.catch_warnings``: leaving one calls ``warnings._filters_mutated()``,
    which voids every module's record of the warnings shown, so each warning shown once per
    location (sgdlab's, the user's) came again at every measurement of a run
    (docs/design/curvature.md). The filter goes first in ``warnings.filters``, in place, and
    out on exit: a warning it ignores is never recorded, so no record needs voiding."""
    entry = ("ignore", re.compile(message), category, re.compile(r"torch(\.|$)"), 0)
    filters = warnings.filters
    filters.insert(0, entry)
    try:
        yield
    finally:
        with suppress(ValueError):      # gone already: warnings.resetwarnings() within
            filters.remove(entry)


def forward_mode_loaded() -> None:
    """Load torch's forward-mode decompositions, which its first forward-mode pass
    (``torch.func.jvp``, ``jacfwd``, ``hessian``) imports: they are compiled with
    ``torch.jit.script``, whose deprecation warning (18 of them at torch 2.13) is about
    torch's own code. Once loaded, later passes import nothing and warn nothing."""
    if "torch._decomp.decompositions_for_jvp" in sys.modules:
        return
    from torch.autograd import forward_ad

    load = getattr(forward_ad, "_maybe_load_decompositions", None)     # torch's private
    # the 3.14 wording too: "`torch.jit.script` is not supported in Python 3.14+ ..."
    with torch_warning_ignored(r"`torch\.jit\.script` is (deprecated|not supported)",
                               DeprecationWarning):
        if load is not None:
            load()


def plugin_hint(what: str) -> str:
    """Where an unknown ``what`` (model, dataset) name sends its reader: one of their own is
    registered by a module the command has not imported."""
    return (f"a {what} of your own: import the module that registers it with --plugin "
            "MODULE (a name or a .py file), or $SGDLAB_PLUGINS")


def did_you_mean(name: object, choices) -> str:
    """`` (did you mean X?)`` for the closest of ``choices`` to a misspelled ``name``, else
    ``""``: the hint every "unknown ..." message ends with."""
    close = closest_name(name, choices)
    return f" (did you mean {close}?)" if close is not None else ""


def name_spelling(name: str) -> str:
    """What two spellings of a registered name share: case, surrounding space and ``-`` against
    ``_`` aside (``Entropy-SGD`` and ``entropy_sgd``, ``Xing_Walk`` and ``xing-walk``)."""
    return name.strip().lower().replace("_", "-")


def registered_spelling(name: object, names) -> str | None:
    """The one of ``names`` (a registry's keys, as registered and stored) that ``name`` spells
    (:func:`name_spelling`), or None; the exact name first, so a registry's own spelling is
    never looked further for."""
    if not isinstance(name, str):
        return None
    if name in names:
        return name
    key = name_spelling(name)
    hits = [n for n in names if name_spelling(n) == key]
    return hits[0] if len(hits) == 1 else None


def closest_name(name: object, choices) -> str | None:
    """The one of ``choices`` meant by a misspelled ``name`` (:func:`did_you_mean`), or None."""
    import difflib

    choices = [str(c) for c in choices]
    # a measurement function's name for an instrument's option (hessian_trace's num_probes
    # is the hessian instrument's trace_probes), which spelling alone takes for another
    close = [c for c in _SAME_MEANING.get(str(name), ()) if c in choices][:1]
    # a name cut short (cosin for cosine-cyclic), which spelling alone takes for a name of its
    # length (scoping): the one choice it begins
    begun = [c for c in choices if len(str(name)) >= 3 and c.lower().startswith(
        str(name).lower())]
    if not close and len(begun) == 1:
        close = begun
    close = close or difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    if not close:
        # a class or paper spelling of a registry name (EntropySGD, Entropy-SGD, RandomLRSGD
        # for entropy_sgd, random-lr-sgd): compare without case and separators
        by_key = {_spelling_key(c): c for c in reversed(choices)}
        close = [by_key[k] for k in difflib.get_close_matches(
            _spelling_key(name), list(by_key), n=1, cutoff=0.8)]
    return close[0] if close else None


# {a name: the names of the same thing elsewhere, first choice first}
_SAME_MEANING = {"num_probes": ("trace_probes",), "n_v": ("num_probes", "trace_probes"),
                 "top_k": ("k",), "top_n": ("k",),
                 "gpu": ("cuda",)}     # a device: spelling alone takes it for cpu


def _spelling_key(name: object) -> str:
    """``name`` lower-cased without separators: what EntropySGD and entropy_sgd share."""
    return re.sub(r"[\s_\-.]", "", str(name)).lower()


# keyword arguments of PyHessian (Yao et al. 2020) that are sgdlab's under another name
PYHESSIAN_NAMES = {"n_v": "num_probes", "iter": "num_iter", "maxIter": "num_iter",
                   "top_n": "k"}


def checked_keywords(*forwards_to, advice: dict[str, str] | None = None):
    """Decorator: a keyword argument the function does not take (nor, for its ``**kw``, the
    functions ``forwards_to`` it passes them on to) is a ``TypeError`` naming the function, the
    key, the closest valid key (or PyHessian's name for it, :data:`PYHESSIAN_NAMES`) and every
    valid key, not an internal function's "unexpected keyword argument". ``advice``: a message
    of its own for a key (one the function takes on purpose not). A function with ``**kw``
    shows in ``inspect.signature`` and ``help()`` the keyword-only options of ``forwards_to``
    in its place, with their defaults as those functions have them (never copied); one with
    ``**kw`` and no ``forwards_to`` takes any keyword, so it is returned as it is."""
    import functools
    import inspect

    def keywords(fn, kinds: tuple[str, ...]) -> list[str]:
        params = inspect.signature(fn).parameters.values()
        return [p.name for p in params if p.kind.name in kinds]

    def deco(fn):
        if not forwards_to and keywords(fn, ("VAR_KEYWORD",)):
            return fn       # its **kwargs are its own to take: no list to check them against
        # the forwarded functions' keyword-only options (their positional arguments are the
        # function's to give)
        valid = list(dict.fromkeys(
            keywords(fn, ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY"))
            + [k for f in forwards_to for k in keywords(f, ("KEYWORD_ONLY",))]))
        # a positional-only name passed by keyword: Python's own error names it as such
        accepted = (frozenset(valid) - set(advice or ())) | frozenset(
            keywords(fn, ("POSITIONAL_ONLY",)))

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if kwargs and not accepted.issuperset(kwargs):    # the call without keywords: free
                bad = next(k for k in kwargs if k not in accepted)
                raise TypeError(unexpected_keyword(fn.__name__, bad, valid, advice))
            return fn(*args, **kwargs)

        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        if forwards_to and len(own) < len(sig.parameters):
            names = {p.name for p in own} | set(advice or ())
            passed: dict[str, inspect.Parameter] = {}
            for f in forwards_to:
                for p in inspect.signature(f).parameters.values():
                    if p.kind is p.KEYWORD_ONLY and p.name not in names:
                        passed.setdefault(p.name, p)
            wrapper.__signature__ = sig.replace(parameters=own + list(passed.values()))
        return wrapper
    return deco


def unexpected_keyword(function: str, key: str, valid, advice: dict[str, str] | None = None
                       ) -> str:
    """The message of :func:`checked_keywords`."""
    if advice and key in advice:
        return f"{function}() takes no {key}=: {advice[key]}"
    mapped = PYHESSIAN_NAMES.get(key)
    if advice and mapped in advice:    # top_n= to hessian_top_eigenvalue: k is refused too
        return f"{function}() takes no {key}= (PyHessian's {key} is {mapped}): {advice[mapped]}"
    hint = (f" (PyHessian's {key} is {mapped} here)" if mapped in valid
            else did_you_mean(key, valid))
    return (f"{function}() got an unexpected keyword argument {key!r}{hint}; it takes "
            f"{', '.join(valid)}")


def read_config_text(path: str | Path) -> str:
    """A config file's text (UTF-8), or a :class:`ConfigError` naming the file when it cannot
    be read (a binary file, another encoding, no permission). Here, below every layer, so
    each reader of configs (run, experiment, replica run) says it the same way."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}); a "
                          "config is YAML or TOML text") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config: {e.strerror or e}") from None


def not_a_config_file(path: str | Path, what: str = "config file",
                      suffixes: tuple[str, ...] = (".yaml", ".yml", ".toml", ".json"),
                      also: Iterable[str] = ()) -> str:
    """Why ``path`` (no readable file) is no ``what``, for each reader of configs alike: a
    folder (with the config files in it: a run folder's config.yaml), or no such file, with
    the closest of the config files beside it and of ``also`` (packaged names)."""
    p = Path(path)

    def configs(folder: Path) -> list[str]:
        try:
            return sorted(str(f) if str(folder) != "." else f.name for f in folder.iterdir()
                          if f.name.endswith(suffixes) and f.is_file())
        except OSError:
            return []

    if p.is_dir():
        inside = configs(p)
        held = (f"; the config files in it: {', '.join(inside[:5])}"
                + (" ..." if len(inside) > 5 else "") if inside else "; it holds no config file")
        return f"{str(path)!r} is a folder, not {_a(what)}{held}"
    return f"no {what} {str(path)!r}{did_you_mean(str(path), [*configs(p.parent), *also])}"


def results_holder(out: str | Path) -> tuple[str, str | None] | None:
    """Whose results.json folder ``out`` holds: ``("train", None)`` for a `sgdlab train` run
    (its run.json), ``("experiment", NAME)`` for an experiment's report, ``("other", None)``
    for another readable results.json (a walk's, a landscape's); None when there is none or
    it cannot be read (such a folder is rewritten)."""
    import json

    out = Path(out)
    if (out / "run.json").is_file():
        return "train", None
    try:
        old = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return None
    exp = old.get("experiment") if isinstance(old, dict) else None
    if isinstance(exp, dict) and "scale" in old and isinstance(exp.get("name"), str):
        return "experiment", exp["name"]
    return "other", None


def refuse_results_of_others(out: str | Path, command: str) -> None:
    """A :class:`UserError` when folder ``out`` holds a `sgdlab train` run (its run.json) or
    an experiment's report: the results.json ``command`` writes there would replace theirs."""
    holder = results_holder(out)
    if holder is None or holder[0] == "other":
        return
    held = ("a training run (sgdlab train)" if holder[0] == "train"
            else f"the report of {holder[1]} (sgdlab run)")
    raise UserError(f"--out {out} holds {held}: {command} would overwrite its "
                    "results.json; choose another folder")


def make_output_dir(path: str | Path, what: str = "--out") -> Path:
    """Create the output folder ``path`` (and its parents), or raise a :class:`UserError`
    naming it when that is impossible (a file in the way, no permission, a read-only disk).
    Called before any work starts, so nothing is computed or recorded for a folder its
    results cannot be written to."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what} {path}: cannot create the folder: {file_problem(e)}") from None
    return path


# errors of the file system, not of sgdlab: the CLI names the path instead of a traceback
FILE_SYSTEM_ERRNOS = frozenset({errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES,
                                errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def file_problem(e: OSError) -> str:
    """What a file-system error means, in words: for a file where a folder is needed, which
    file is in the way; else ``e.strerror`` (``Permission denied``, ``No space left on
    device``, ...)."""
    if e.errno in (errno.EEXIST, errno.ENOTDIR) and e.filename is not None:
        path = Path(os.fsdecode(e.filename))
        for p in (path, *path.parents):
            if p.is_file():
                return f"{p} is a file, not a folder"
    return e.strerror or str(e)


# Keys only one kind of config has: a run config (sgdlab train), an experiment (sgdlab run
# --config) and a replica run config (sgdlab parle).
_KIND_KEYS = {"run": ("optimizer", "train", "schedule", "measure"),
              "experiment": ("paper", "scales", "analysis", "runs", "grid"),
              "replica": ("parle",)}
_KIND_COMMANDS = {"run": "sgdlab train FILE", "experiment": "sgdlab run --config FILE",
                  "replica": "sgdlab parle FILE"}


# what each kind of config needs at least, named when a file holds nothing
_KIND_NEEDS = {"run": "data, model and optimizer sections (`sgdlab train digits-mlp "
                      "--print-config` prints a complete one)",
               "experiment": "name, version, description, paper and analysis, and the run "
                             "parameters in base or runs (docs/GUIDE.md, 'An experiment of your "
                             "own'; the catalogue's files, sgdlab/experiments/catalogue/, are "
                             "examples)",
               "replica": "data, model and parle sections and a length (rounds, epochs or "
                          "grad_evals)"}


def check_not_empty(raw: object, kind: str, source: str | Path) -> None:
    """A :class:`ConfigError` when a config file holds nothing (no text, only comments, or
    an empty mapping): one line saying so, instead of each required section reported
    missing as if the file had been read with some settings."""
    if raw is None or raw == {}:
        raise ConfigError(f"{source}: the file is empty (no settings in it); {_a(kind)} "
                          f"config needs {_KIND_NEEDS[kind]}")


def check_config_kind(raw: object, expected: str, source: str | Path | None = None) -> None:
    """A :class:`ConfigError` when ``raw`` (read from file ``source``) has keys only another
    kind of config has (an experiment given to ``sgdlab train``, a run config to ``sgdlab
    parle``, ...): one line naming the command that reads it, instead of every top-level key
    reported unknown."""
    if not isinstance(raw, dict):
        return
    for kind, keys in _KIND_KEYS.items():
        found = [k for k in keys if k in raw]
        if kind != expected and found and not any(k in raw for k in _KIND_KEYS[expected]):
            command = _KIND_COMMANDS[kind].replace("FILE", str(source or "FILE"))
            raise ConfigError(
                f"{source or 'the config'} is {_a(kind)} config, not {_a(expected)} config "
                f"(it has {', '.join(found)}): run it with `{command}`")


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
