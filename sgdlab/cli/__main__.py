import sys

from .main import entry

sys.exit(entry())
