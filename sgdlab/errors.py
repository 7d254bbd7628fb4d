"""Errors a user can fix: the CLI prints their message without a traceback."""


class UserError(Exception):
    """Bad input (config, file, option): the message names the problem."""


class ConfigError(UserError, ValueError):
    """An invalid run or experiment config; the message names the offending key."""


class DataError(UserError, FileNotFoundError):
    """A dataset file is missing or malformed; the message names the file."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a recorded run; the message names the run and the command
    that continues it. (A KeyboardInterrupt, so code that stops on interrupts still does.)"""
