"""The ``sgdlab`` command. Each module ``sgdlab/cli/<name>.py`` that defines
``register(subparsers)`` adds its subcommand(s); the handler is stored as ``func`` via
``parser.set_defaults(func=...)`` and returns an exit code."""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sqlite3
import sys
import threading


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgdlab",
        description="A lab for the noise of SGD and the geometry of loss landscapes.",
    )
    import sgdlab
    import sgdlab.cli as pkg

    parser.add_argument("--version", action="version", version=f"sgdlab {sgdlab.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if m.name in ("main", "__main__") or m.name.startswith("_"):
            continue
        module = importlib.import_module(f"sgdlab.cli.{m.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from sgdlab.errors import FILE_SYSTEM_ERRNOS, UserError, file_problem

    from sgdlab.store.runstore import opened_stores, store_connections

    opened_before = store_connections()
    previous = _sigterm_as_interrupt()
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"sgdlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # a RunInterrupted names the run and the command that continues it
        print(f"sgdlab: {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `sgdlab list | head`: the reader left; point stdout at devnull so the exit flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        # an output path that cannot be written (a file in the way, no permission, a full
        # or read-only disk): name the path, not a traceback; other OSErrors stay bugs
        if e.errno not in FILE_SYSTEM_ERRNOS or e.filename is None:
            raise
        print(f"sgdlab: error: cannot write {os.fsdecode(e.filename)}: {file_problem(e)}",
              file=sys.stderr)
        return 2
    except sqlite3.OperationalError as e:
        # another process held the store's write lock past its busy timeout (met after the
        # store opened; at the opening, RunStore says so itself)
        from sgdlab.store.runstore import is_locked, locked_message
        if not is_locked(e):
            raise
        where = " or ".join(opened_stores(opened_before)) or "the run store"
        print(f"sgdlab: error: {locked_message(where)}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as e:
        # a damaged page of a run store ("database disk image is malformed"), met by a query
        # after the store opened: name the store, not a traceback; SQLite's other errors
        # (locked, a constraint: subclasses) stay bugs
        if type(e) is not sqlite3.DatabaseError:
            raise
        where = " or ".join(opened_stores(opened_before)) or "the run store"
        print(f"sgdlab: error: {where} is damaged ({e}): the sqlite3 shell's `PRAGMA "
              "integrity_check` says where, its `.recover` copies what can still be read into "
              "a new file", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt():
    """SIGTERM (``kill PID``, a batch system's stop) stops a command like Ctrl-C does: runs
    record ``interrupted`` and say how to continue. Returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt("terminated (SIGTERM)")

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
