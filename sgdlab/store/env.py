"""What a run ran on: versions, device, threads, git commit, host, seed."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the git checkout holding ``path`` (default: the sgdlab package), with a
    ``+dirty`` suffix when tracked files are modified; None outside a checkout."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=5)
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(seed: int | None = None, device: str | None = None) -> dict[str, Any]:
    """A JSON-able record of the software and hardware a run uses."""
    import numpy
    import torch

    import sgdlab

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    env: dict[str, Any] = {
        "sgdlab": sgdlab.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
        "seed": seed,
        "argv": list(sys.argv),
    }
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        try:
            dev = torch.device(str(device))
        except (RuntimeError, ValueError):
            dev = None
        if dev is not None and dev.type == "cuda":    # a CPU run on a GPU machine used none
            env["gpu"] = torch.cuda.get_device_name(dev)
    return env
