"""What code below the config layer needs of a run's folder and store in printed commands:
the files ``sgdlab parle --out DIR`` writes in DIR, and ``--store PATH`` for a command the
user is told to run."""
from __future__ import annotations

import os
import shlex

# what `sgdlab parle --out DIR` writes in DIR: its result (with its run id) and the master
REPLICA_RESULT, REPLICA_MASTER = "result.json", "master.pt"


def store_option(store_path: str | os.PathLike) -> str:
    """``--store PATH`` for a printed command, the path absolute and quoted for the shell: the
    command works from any folder, not only from the one a relative ``--store`` was given in."""
    return f"--store {shlex.quote(os.path.abspath(store_path))}"
