"""The ``--plugin MODULE`` option of the commands that read configs and rebuild runs."""
from __future__ import annotations

import argparse


def add_plugin_option(p: argparse.ArgumentParser, recorded: str = "") -> None:
    """``--plugin MODULE`` (repeatable) on command ``p``; ``recorded``: what the help adds on
    where the names are kept."""
    p.add_argument("--plugin", metavar="MODULE", action="append", default=[], dest="plugins",
                   help="import this module (a name on PYTHONPATH, or a .py file) first, so "
                        "its register_model / register_dataset / ... calls name models, data "
                        f"and more (repeatable; also $SGDLAB_PLUGINS){recorded}")


def import_command_plugins(args: argparse.Namespace) -> None:
    """Import ``$SGDLAB_PLUGINS`` and the command's ``--plugin`` modules (``sgdlab run``
    passes its own on to the sweep's workers: :func:`sgdlab.plugins.exported_plugins`)."""
    from sgdlab.plugins import import_env_plugins, import_plugins

    import_env_plugins()
    import_plugins(getattr(args, "plugins", None) or [], where="--plugin")
