"""The ``sgdlab`` command. Each module ``sgdlab/cli/<name>.py`` that defines
``register(subparsers)`` adds its subcommand(s); the handler is stored as ``func`` via
``parser.set_defaults(func=...)`` and returns an exit code."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


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
    from sgdlab.errors import UserError

    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"sgdlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `sgdlab list | head`: the reader left; point stdout at devnull so the exit flush is quiet
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
