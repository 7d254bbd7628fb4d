"""Plugins: the user's own modules, imported by name before a config is read, so that their
``register_model`` / ``register_dataset`` / ``register_optimizer`` / ... calls make their
names available to run configs, ``sgdlab train``, ``measure``, ``runs resume`` and sweeps.

A plugin is a module name (``mylab.models``, found on ``sys.path``: set ``PYTHONPATH``) or
the path of a ``.py`` file (imported as the module named by its stem). A run config lists
them under ``plugins: [...]``; ``sgdlab train --plugin MODULE`` adds to that list, so the
stored config names them and ``sgdlab measure RUN`` / ``sgdlab runs resume RUN`` import them
again. ``$SGDLAB_PLUGINS`` (separated by ``os.pathsep``, as ``PYTHONPATH``) is imported by
every command and by the workers of a sweep, which inherit it; it is not recorded.

Configs stay data: a plugin is imported (its module code runs, as ``import`` does), never
evaluated from the config's text.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from .errors import ConfigError

PLUGINS_ENV = "SGDLAB_PLUGINS"


def is_plugin_file(name: str) -> bool:
    """Whether plugin ``name`` is a file path (``*.py`` or with a path separator), not a
    module name."""
    return name.endswith(".py") or "/" in name or os.sep in name


def plugin_key(name: str) -> str:
    """How a config records plugin ``name``: a file's absolute path (the run is rebuilt from
    any folder), a module name as given."""
    return str(Path(name).resolve()) if is_plugin_file(name) else name


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
            return _import_file(Path(name))
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise ConfigError(f"{where}: cannot import plugin {name!r}: no module named "
                              f"{e.name!r} (put its folder on PYTHONPATH, or give the path of "
                              "its .py file)") from None
        raise ConfigError(f"{where}: importing plugin {name!r} failed: {type(e).__name__}: "
                          f"{e}") from e
    except ConfigError as e:        # a missing file, or the module's own config error
        raise ConfigError(f"{where}: {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's module: any error, named as its own
        raise ConfigError(f"{where}: importing plugin {name!r} failed: {type(e).__name__}: "
                          f"{e}") from e


def _import_file(path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"cannot import plugin {str(path)!r}: no such file")
    module = sys.modules.get(path.stem)
    if module is not None and Path(getattr(module, "__file__", "") or "").resolve() == path:
        return module       # imported already: its registrations stand
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import plugin {str(path)!r}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    # under its stem, so pickles of its classes (a sweep's workers) find it by name
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[path.stem]
        raise
    return module


def import_plugins(names: Sequence[str], *, where: str = "plugins") -> None:
    """:func:`import_plugin` each of ``names`` in order (``where[i]`` names the failing one)."""
    for i, name in enumerate(names):
        import_plugin(name, where=f"{where}[{i}]")


def export_plugins(names: Sequence[str]) -> None:
    """Add ``names`` to ``$SGDLAB_PLUGINS`` of this process, so the processes it starts (a
    sweep's spawned or Ray workers) import them too."""
    current = env_plugins()
    new = [plugin_key(n) for n in names if plugin_key(n) not in current]
    if new:
        os.environ[PLUGINS_ENV] = os.pathsep.join(current + new)


__all__ = ["PLUGINS_ENV", "env_plugins", "export_plugins", "import_plugin", "import_plugins",
           "is_plugin_file", "plugin_key"]
