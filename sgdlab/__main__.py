"""``python -m sgdlab ...``: the ``sgdlab`` command (:mod:`sgdlab.cli.main`)."""
import sys

from .cli.main import entry

sys.exit(entry())
