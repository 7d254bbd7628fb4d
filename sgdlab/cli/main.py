"""The ``sgdlab`` command. Each module ``sgdlab/cli/<name>.py`` that defines
``register(subparsers)`` adds its subcommand(s); the handler is stored as ``func`` via
``parser.set_defaults(func=...)`` and returns an exit code."""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import signal
import sqlite3
import sys
import threading
import warnings

from sgdlab.interrupts import interrupt_word, raise_terminated


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose invalid choice (a misspelt command, ``--scale papr``) also
    names the closest valid one, as sgdlab's own "unknown ..." messages do, and whose missing
    argument is told what to give where its action has a ``missing_hint``. Subcommands'
    parsers are of the class of their parent, so every level has it."""

    def _check_value(self, action, value):
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError:
            from sgdlab.errors import did_you_mean

            # an option's own word for a value that spelling alone takes for another
            # (`--scale gpu` is no misspelt cpu), then an action of a command given as one
            own = getattr(action, "hints", {}).get(value) or _nested_command(action, value)
            hint = f" ({own})" if own else did_you_mean(value, action.choices or ())
            if not hint:
                raise
            choices = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}{hint}; choose "
                                                 f"from {choices}") from None

    def error(self, message):
        # a missing argument's own word on what to give (`sgdlab train`'s CONFIG): argparse
        # names it alone; the message and exit status 2 stay argparse's
        head = "the following arguments are required: "
        if message.startswith(head):
            hints = {argparse._get_action_name(a): getattr(a, "missing_hint", None)
                     for a in self._actions}
            message = head + ", ".join(f"{n} ({hints[n]})" if hints.get(n) else n
                                       for n in message[len(head):].split(", "))
        super().error(message)


def _nested_command(action, value) -> str | None:
    """``did you mean `sgdlab runs compare`?`` for ``sgdlab compare``: a command's action given
    without its command, when one command alone has it."""
    if not isinstance(action, argparse._SubParsersAction):
        return None
    found = [f"{parser.prog} {value}" for parser in action.choices.values()
             for a in parser._actions
             if isinstance(a, argparse._SubParsersAction) and value in a.choices]
    return f"did you mean `{found[0]}`?" if len(found) == 1 else None


# what a newcomer types for a command sgdlab has under another name (a word an action of
# another command also is, such as show, is answered here first)
_COMMAND_HINTS = {
    "help": "`sgdlab --help` lists the commands, `sgdlab COMMAND --help` explains one",
    "version": "`sgdlab --version` prints it",
    "show": "`sgdlab list NAME` shows an experiment, `sgdlab runs show RUN_ID` a run",
    "status": "`sgdlab runs list` shows each run's status",
    "plot": "`sgdlab runs compare RUN RUN --plot FILE.png` plots runs' curves; `sgdlab run "
            "NAME` and `sgdlab report` draw an experiment's figures",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sgdlab",
        description="A lab for the noise of SGD and the geometry of loss landscapes.",
    )
    import sgdlab
    import sgdlab.cli as pkg

    parser.add_argument("--version", action="version", version=f"sgdlab {sgdlab.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.hints = _COMMAND_HINTS

    for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if m.name in ("main", "__main__") or m.name.startswith("_"):
            continue
        module = importlib.import_module(f"sgdlab.cli.{m.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def _command_parser(parser: argparse.ArgumentParser,
                    argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``argv`` names: ``sgdlab runs list``'s for
    ``["runs", "list", ...]``."""
    for word in argv:
        sub = next((a.choices for a in parser._actions
                    if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None:
            break
        if word in sub:
            parser = sub[word]
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, but an unknown argument is reported by the command it was
    given to, with its usage and the closest of its options (argparse's own message shows
    the top-level usage: none of the command's options); then the command's
    ``check_arguments(args)``, if it has one, may refuse them as argparse does (a message,
    exit status 2)."""
    from sgdlab.errors import did_you_mean

    args, unknown = parser.parse_known_args(argv)
    words = sys.argv[1:] if argv is None else argv
    command = _command_parser(parser, words)
    if unknown:
        options = [s for a in command._actions for s in a.option_strings]
        flag = next((w.split("=", 1)[0] for w in unknown if w.startswith("--")), None)
        hint = did_you_mean(flag, options) if flag else _split_pair(words, unknown[0])
        # a command's own hint for this option, or none: (flag, its value, the closest option's)
        own_hint = getattr(command, "unknown_option_hint", None)
        own = own_hint(flag, _value_after(unknown, flag), hint) if own_hint and flag else None
        # a word the command does not take (a second NAME): the command may say what to do
        word_hint = getattr(command, "stray_word_hint", None)
        if not flag and not hint and word_hint:
            own = word_hint(unknown[0])
        hint = f" ({own})" if own else hint
        command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    # an argument checked against the others (--reading's example is of the NAME given with
    # it, before or after it), which an argument's type cannot see
    check = getattr(command, "check_arguments", None)
    problem = check(args) if check else None
    if problem:
        command.error(problem)
    return args


def _value_after(unknown: list[str], flag: str) -> str | None:
    """The value given to the unknown option ``flag``: ``2`` of ``--epochs=2`` or of
    ``--epochs 2``; None when none follows it."""
    for i, w in enumerate(unknown):
        if w.split("=", 1)[0] == flag:
            if "=" in w:
                return w.split("=", 1)[1]
            after = unknown[i + 1] if i + 1 < len(unknown) else None
            return after if after is not None and not after.startswith("--") else None
    return None


def _split_pair(words: list[str], stray: str) -> str:
    """`` (--set takes KEY=VALUE as one word: --set a.b=2)`` when ``stray`` is the value of a
    ``--set a.b 2`` written with a space for its ``=``; else ``""``."""
    for i, w in enumerate(words[:-2]):
        key, value = words[i + 1], words[i + 2]
        if w == "--set" and "=" not in key and value == stray:
            return f" ({w} takes KEY=VALUE as one word: {w} {key}={value})"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from sgdlab.errors import UserError
    from sgdlab.store.runstore import store_connections

    opened_before = store_connections()
    previous = _sigterm_as_interrupt()
    shown_before, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        from sgdlab.cli._plugins import import_command_plugins
        from sgdlab.plugins import given_plugins

        # (given: they stand in for a plugin file a run recorded that is gone)
        with given_plugins(getattr(args, "plugins", None) or []):
            import_command_plugins(args)     # before a config names what they register
            return int(args.func(args) or 0)
    except UserError as e:
        print(f"sgdlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # a RunInterrupted names the run and the command that continues it
        print(f"sgdlab: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `sgdlab list | head`: the reader left; point stdout at devnull so the exit flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (OSError, sqlite3.DatabaseError) as e:
        message = error_message(e, opened_before)
        if message is None:
            raise
        print(f"sgdlab: error: {message}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown_before
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def error_message(e: BaseException, opened_before) -> str | None:
    """What ``sgdlab`` says of an error that stops a command for a reason outside the code (a
    refused input, a path that cannot be written, a locked or damaged store), without a
    traceback; None for a bug. ``opened_before``: the store connections open before the
    command (``store_connections()``), to name the store it opened."""
    from sgdlab.errors import FILE_SYSTEM_ERRNOS, UserError, file_problem
    from sgdlab.store.runstore import is_locked, locked_message, opened_stores

    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, OSError):
        # an output path that cannot be written (a file in the way, no permission, a full
        # or read-only disk): name the path, not a traceback; other OSErrors stay bugs
        if e.filename is None or e.errno not in FILE_SYSTEM_ERRNOS and not (
                getattr(e, "written", False) and e.errno == errno.ENOENT):
            return None
        return f"cannot write {os.fsdecode(e.filename)}: {file_problem(e)}"
    where = " or ".join(opened_stores(opened_before)) or "the run store"
    if isinstance(e, sqlite3.OperationalError):
        # another process held the store's write lock past its busy timeout (met after the
        # store opened; at the opening, RunStore says so itself)
        return locked_message(where) if is_locked(e) else None
    if type(e) is sqlite3.DatabaseError:
        # a damaged page of a run store ("database disk image is malformed"), met by a query
        # after the store opened: name the store, not a traceback; SQLite's other errors
        # (locked, a constraint: subclasses) stay bugs
        return (f"{where} is damaged ({e}): the sqlite3 shell's `PRAGMA integrity_check` "
                "says where, its `.recover` copies what can still be read into a new file")
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as the command's own line: the code location Python prints (a frame of
    runpy or of the ``sgdlab`` script, where a library call would name the user's line)
    means nothing on the command line."""
    print(f"sgdlab: warning: {message}", file=sys.stderr if file is None else file)


def _sigterm_as_interrupt():
    """SIGTERM (``kill PID``, a batch system's stop) stops a command like Ctrl-C does: runs
    record ``interrupted`` and say how to continue. Returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, raise_terminated)


def entry() -> int:
    """The ``sgdlab`` program (its console script and ``python -m sgdlab``): :func:`main` on
    ``sys.argv``, then an exit that a late Ctrl-C or SIGTERM does not break.

    Once the command has ended, the interpreter still runs its exit hooks (torch's, the worker
    pools') and frees its modules (~0.4 s after a torch command): a SIGINT in a hook raised
    KeyboardInterrupt there ("Exception ignored in atexit callback" and a traceback), one
    after them met the default action (killed by SIGINT: exit status -2 to a caller). Now a
    signal after the command does not change its outcome, whose exit status stands: in the
    hooks the first one is said in one line and the hooks finish, a second one exits at once
    (status 130); after the hooks, with only memory left to free, they are ignored."""
    import atexit

    atexit.register(_leave)          # registered first: runs after every other exit hook
    code: int | str | None = None
    try:
        code = main()
        return code
    except SystemExit as e:          # --help, --version, a usage error
        code = e.code
        raise
    finally:
        _LATE["code"] = code
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _late_signal)
            signal.signal(signal.SIGTERM, _late_signal)


_LATE: dict = {"code": None, "signalled": False}


def _late_signal(signum, frame) -> None:
    if _LATE["signalled"]:
        os._exit(130)
    _LATE["signalled"] = True
    code = _LATE["code"]
    what = interrupt_word(signum)
    status = "" if code is None else f" (exit status {code if isinstance(code, int) else 1})"
    # os.write: print() is not safe in a handler that may run inside another print
    os.write(2, f"sgdlab: {what} after the command had ended{status}; finishing its exit "
                "(again to stop at once)\n".encode())


def _leave() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(entry())
