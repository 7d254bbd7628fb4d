"""Plugins: the user's own modules, imported by name before a config is read, so that their
``register_model`` / ``register_dataset`` / ``register_optimizer`` / ... calls make their
names available to run configs, ``sgdlab train``, ``measure``, ``resume`` and sweeps.

A plugin is a module name (``mylab.models``, found on ``sys.path``: set ``PYTHONPATH``) or
the path of a ``.py`` file (imported as the module named by its stem). A run config lists
them under ``plugins: [...]``; ``sgdlab train --plugin MODULE`` adds to that list, so the
stored config names them and ``sgdlab measure RUN`` / ``sgdlab resume RUN`` import them
again. ``$SGDLAB_PLUGINS`` (separated by ``os.pathsep``, as ``PYTHONPATH``) is imported by
every command and by the workers of a sweep, which inherit it; it is not recorded.

A recorded plugin file that was moved or renamed since is stood in for by a file that
``--plugin`` or ``$SGDLAB_PLUGINS`` gives (:func:`import_recorded_plugins`), with a note; with
none given, the error names the missing file and asks for ``--plugin NEWPATH``.

Configs stay data: a plugin is imported (its module code runs, as ``import`` does), never
evaluated from the config's text.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from .errors import ConfigError

PLUGINS_ENV = "SGDLAB_PLUGINS"

# the --plugin names of the command running now (:func:`given_plugins`)
_given: list[str] = []


def is_plugin_file(name: str) -> bool:
    """Whether plugin ``name`` is a file path (``*.py`` or with a path separator), not a
    module name."""
    return name.endswith(".py") or "/" in name or os.sep in name


def plugin_key(name: str) -> str:
    """How a config records plugin ``name``: a file's absolute path (the run is rebuilt from
    any folder), a module name as given."""
    return str(Path(name).expanduser().resolve()) if is_plugin_file(name) else name


def recorded_plugins(names: Sequence[str]) -> list[str]:
    """The plugin list as a config records it: each name's :func:`plugin_key`, once, in
    order."""
    return list(dict.fromkeys(plugin_key(n) for n in names))


def env_plugins() -> list[str]:
    """The plugins ``$SGDLAB_PLUGINS`` names, in order."""
    return [p for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p.strip()]


def import_plugin(name: str, *, where: str = "plugin") -> ModuleType:
    """Import plugin ``name`` (a module name or a ``.py`` file); a :class:`ConfigError` that
    names it (under ``where``) when it cannot be found or its import fails."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: must be a module name or a .py file's path, got {name!r}")
    name = name.strip()
    try:
        if is_plugin_file(name):
            return _import_file(Path(name).expanduser())
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise ConfigError(f"{where}: cannot import plugin {name!r}: no module named "
                              f"{e.name!r} (put its folder on PYTHONPATH, or give the path of "
                              "its .py file)") from None
        raise ConfigError(f"{where}: importing plugin {name!r} failed: {type(e).__name__}: "
                          f"{e}{raised_at(e)}") from e
    except ConfigError as e:        # a missing file, or the module's own config error
        raise ConfigError(f"{where}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's module: any error, named as its own
        raise ConfigError(f"{where}: importing plugin {name!r} failed: {type(e).__name__}: "
                          f"{e}{raised_at(e)}") from e


def raised_at(e: BaseException) -> str:
    """`` (FILE, line N)``: the line of the user's code where ``e`` was raised (an import, a
    model of a plugin's built or run: the last frame outside importlib, sgdlab, the standard
    library and installed packages), as a traceback would show it; ``""`` for a SyntaxError,
    whose message has its line, or when none is."""
    import sysconfig
    import traceback

    if isinstance(e, SyntaxError):
        return ""
    installed = tuple(os.path.abspath(p) + os.sep for p in {
        os.path.dirname(__file__), *(sysconfig.get_paths()[k] for k in ("stdlib", "purelib",
                                                                         "platlib"))})
    own = [f for f in traceback.extract_tb(e.__traceback__)
           if not f.filename.startswith("<") and not os.path.abspath(f.filename).startswith(
               installed)]
    return f" ({own[-1].filename}, line {own[-1].lineno})" if own else ""


def _import_file(path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"cannot import plugin {str(path)!r}: no such file")
    name = path.stem
    module = sys.modules.get(name)
    if module is not None:
        if _module_file(module) == path:
            return module       # imported already: its registrations stand
        raise ConfigError(_shadows(path, module.__name__, _module_file(module)))
    if name.isidentifier():
        # an installed module of that name, not imported yet, would be hidden from the whole
        # process (a plugin file json.py, yaml.py, utils.py of a package on sys.path)
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = None
        # (a namespace package, a folder data/ beside the plugin data.py, is nobody's import)
        if found is not None and found.origin is not None:
            origin = Path(found.origin).resolve() if found.has_location else None
            if origin != path:
                raise ConfigError(_shadows(path, name, origin))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import plugin {str(path)!r}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    # under its stem, so pickles of its classes (a sweep's workers) find it by name
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if sys.modules.get(name) is module:
            del sys.modules[name]
        raise
    return module


def _module_file(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def _shadows(path: Path, name: str, other: Path | None) -> str:
    where = f" ({other})" if other else " (built in)"
    return (f"cannot import plugin {str(path)!r}: it is imported as module {name!r}, the name "
            f"of another module{where}; rename the plugin's file")


def import_plugins(names: Sequence[str], *, where: str = "plugins") -> None:
    """:func:`import_plugin` each of ``names`` in order (``where[i]`` names the failing one)."""
    for i, name in enumerate(names):
        import_plugin(name, where=f"{where}[{i}]")


def import_env_plugins() -> None:
    """Import the plugins ``$SGDLAB_PLUGINS`` names: every command, a sweep's workers and the
    replica processes of ``sgdlab parle --mode distributed`` (which inherit it) do."""
    import_plugins(env_plugins(), where=f"${PLUGINS_ENV}")


@contextmanager
def given_plugins(names: Sequence[str]) -> Iterator[None]:
    """Within the block, ``names`` (a command's ``--plugin``) are the plugins given to it,
    beside ``$SGDLAB_PLUGINS``: the files that stand in for a recorded one that is gone."""
    before = _given[:]
    _given[:] = list(names)
    try:
        yield
    finally:
        _given[:] = before


def import_recorded_plugins(names: Sequence[str]) -> list[str]:
    """:func:`import_plugins` the plugins a config records, and return the list to record
    now. A recorded file that is gone (moved or renamed) is replaced by the plugin files
    ``--plugin`` (:func:`given_plugins`) or ``$SGDLAB_PLUGINS`` give, those of its file name
    if any, with a note on stderr; with none given, a :class:`ConfigError` names the file and
    asks for its new path. The stand-in is not checked against the file it replaces (no
    content of a plugin is recorded): the names it registers are what the run needs."""
    given = [k for k in recorded_plugins([*_given, *env_plugins()])
             if is_plugin_file(k) and Path(k).is_file()]
    out: list[str] = []
    for i, name in enumerate(names):
        where = f"plugins[{i}]"
        key = plugin_key(name.strip()) if isinstance(name, str) and name.strip() else None
        if key is None or not is_plugin_file(key) or Path(key).is_file():
            import_plugin(name, where=where)
            out.append(name)
            continue
        stand_ins = [g for g in given if Path(g).name == Path(key).name] or given
        if not stand_ins:
            raise ConfigError(f"{where}: cannot import plugin {key!r}: no such file "
                              "(moved or renamed? give its new path with --plugin NEWPATH)")
        print(f"sgdlab: note: plugin {key} recorded by the run is gone; using "
              f"{', '.join(stand_ins)}", file=sys.stderr, flush=True)
        for stand_in in stand_ins:
            import_plugin(stand_in, where=where)
        out.extend(stand_ins)
    return out


@contextmanager
def exported_plugins(names: Sequence[str]) -> Iterator[None]:
    """Within the block, ``names`` are added to ``$SGDLAB_PLUGINS`` of this process, so the
    processes it starts (a sweep's spawned or Ray workers) import them too; after it, the
    variable is as it was (a caller of ``main(["run", ...])`` keeps its environment)."""
    before = os.environ.get(PLUGINS_ENV)
    current = env_plugins()
    new = [k for k in recorded_plugins(names) if k not in current]
    if new:
        os.environ[PLUGINS_ENV] = os.pathsep.join(current + new)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PLUGINS_ENV, None)
        else:
            os.environ[PLUGINS_ENV] = before


__all__ = ["PLUGINS_ENV", "env_plugins", "exported_plugins", "given_plugins",
           "import_env_plugins", "import_plugin", "import_plugins", "import_recorded_plugins",
           "is_plugin_file", "plugin_key"]
