"""``sgdlab parle CONFIG``: train n coupled replicas (Parle / Elastic-SGD / Entropy-SGD).

``--mode inprocess`` steps the replicas in turn in this process; ``--mode distributed``
launches one process per replica with torchrun on this machine (gloo on CPU, nccl on GPU),
i.e. ``torchrun --nproc-per-node N -m sgdlab.train.distributed CONFIG``. For several
machines, ``--print-command`` prints that command for you to run on each node with
``--nnodes``/``--node-rank``/``--rdzv-endpoint`` added.

With ``--out DIR`` checkpoints are written to ``DIR/checkpoints`` every ``--checkpoint-every``
rounds (default: the config's ``checkpoint_every``, else 10) and at the end; ``--resume``
continues an interrupted run from them bit for bit (same config and replica count).

The config (YAML or JSON) is described in :func:`sgdlab.train.distributed.build_run`::

    data: {name: mnist1d}
    model: {name: mlp, widths: [128, 128]}
    parle: {replicas: 3, L: 25, lr: 0.1, gamma: 100, rho: 100, batch_size: 128}
    epochs: 5
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from sgdlab.cli._help import plain


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "parle", help="train coupled replicas (Parle, Elastic-SGD, Entropy-SGD)",
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="replica run config (YAML or JSON)")
    p.add_argument("--mode", choices=["inprocess", "distributed"], default="inprocess",
                   help="inprocess: the replicas in turn in this process (default); "
                        "distributed: one process per replica, launched with torchrun")
    p.add_argument("--replicas", type=int, default=None, help="override parle.replicas")
    p.add_argument("--out", default=None, help="directory for master.pt and result.json")
    p.add_argument("--backend", choices=["auto", "gloo", "nccl"], default="auto",
                   help="distributed backend (default: nccl with CUDA, else gloo)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds before a stuck collective fails (distributed)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="rounds between checkpoints in OUT/checkpoints (default: config or 10)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from OUT/checkpoints (same config, "
                        "same number of replicas)")
    p.add_argument("--print-command", action="store_true",
                   help="print the torchrun command instead of running it (distributed)")
    p.set_defaults(func=_run)


def torchrun_command(config: str, replicas: int, *, out: str | None = None,
                     backend: str = "auto", timeout: float = 60.0, resume: bool = False,
                     checkpoint_every: int | None = None) -> list[str]:
    """The torchrun command line that runs ``config`` with one process per replica."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(replicas),
           "-m", "sgdlab.train.distributed", str(config), "--replicas", str(replicas),
           "--backend", backend, "--timeout", f"{timeout:g}"]
    if out:
        cmd += ["--out", str(out)]
    if checkpoint_every is not None:
        cmd += ["--checkpoint-every", str(checkpoint_every)]
    if resume:
        cmd += ["--resume"]
    return cmd


def _run(args) -> int:
    from sgdlab.errors import ConfigError
    from sgdlab.train.distributed import load_config, report, run_from_config

    cfg = load_config(args.config)
    if args.replicas is not None:
        if args.replicas < 1:
            raise ConfigError(f"--replicas must be >= 1, got {args.replicas}")
        cfg.setdefault("parle", {})["replicas"] = args.replicas
    if args.mode == "inprocess":
        res = run_from_config(cfg, mode="inprocess", out=args.out, resume=args.resume,
                              checkpoint_every=args.checkpoint_every)
        print(report(res, out=args.out))
        return 0 if res.status == "finished" else 1
    n = int((cfg.get("parle") or {}).get("replicas", 3))
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out DIR (checkpoints are in DIR/checkpoints)")
    cmd = torchrun_command(args.config, n, out=args.out, backend=args.backend,
                           timeout=args.timeout, resume=args.resume,
                           checkpoint_every=args.checkpoint_every)
    # torchrun prints a banner unless OMP_NUM_THREADS is set; one thread per process is also
    # what makes the distributed iterates bit-identical to the in-process ones
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    if args.print_command:
        print(f"OMP_NUM_THREADS={threads} {shlex.join(cmd)}")
        return 0
    # validate here, where errors print nicely, before starting n processes
    from sgdlab.train.distributed import build_run
    build_run(cfg)
    return subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": threads}).returncode
