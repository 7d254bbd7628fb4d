"""The process-group options ``--backend`` and ``--timeout``, shared by ``sgdlab parle`` and
the torchrun entry point ``python -m sgdlab.train.distributed`` (kept free of torch: the CLI
defines them at start-up)."""
from __future__ import annotations

import argparse

BACKENDS = ("auto", "gloo", "nccl")
DEFAULT_BACKEND = "auto"
DEFAULT_TIMEOUT = 60.0     # seconds before a stuck collective fails


def add_process_group_options(p: argparse.ArgumentParser, timeout_applies: str = "") -> None:
    """``--backend`` and ``--timeout`` on command ``p``; ``timeout_applies``: where the
    timeout is used, said first in its default's brackets (``"distributed"``)."""
    p.add_argument("--backend", choices=list(BACKENDS), default=DEFAULT_BACKEND,
                   help="distributed backend (default: auto, the config's device's: nccl for "
                        "device: cuda, else gloo)")
    where = f"{timeout_applies}; " if timeout_applies else ""
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds before a stuck collective fails ({where}default "
                        f"{DEFAULT_TIMEOUT:g})")
