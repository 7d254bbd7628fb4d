"""Errors a user can fix: the CLI prints their message without a traceback."""
from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input (config, file, option): the message names the problem."""


class ConfigError(UserError, ValueError):
    """An invalid run or experiment config; the message names the offending key."""


class DataError(UserError, FileNotFoundError):
    """A dataset file is missing or malformed; the message names the file."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a recorded run; the message names the run and the command
    that continues it. (A KeyboardInterrupt, so code that stops on interrupts still does.)"""


def did_you_mean(name: object, choices) -> str:
    """`` (did you mean X?)`` for the closest of ``choices`` to a misspelled ``name``, else
    ``""``: the hint every "unknown ..." message ends with."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


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
