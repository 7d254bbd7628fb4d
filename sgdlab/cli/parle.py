"""``sgdlab parle CONFIG``: train n coupled replicas (Parle / Elastic-SGD / Entropy-SGD).

``--mode inprocess`` steps the replicas in turn in this process; ``--mode distributed``
launches one process per replica with torchrun on this machine (gloo for the config's
``device: cpu``, nccl for ``device: cuda``),
i.e. ``torchrun --nproc-per-node N --standalone -m sgdlab.train.distributed CONFIG`` (its
rendezvous on a free port: runs started at the same time do not collide), run in
``sgdlab.train.launch``, which prints a failure as one line per failed rank (its exit code
or signal, and its error) in place of torchrun's traceback. For several machines,
``--print-command`` prints that command without ``--standalone``, for you to run on each node
with ``--nnodes``/``--node-rank``/``--rdzv-endpoint`` added.

With ``--out DIR`` checkpoints are written to ``DIR/checkpoints`` every ``--checkpoint-every``
rounds (default: the config's ``checkpoint_every``, else 10) and at the end; ``--resume``
continues an interrupted run from them bit for bit (same config and replica count).

The run is recorded in a run store, as ``sgdlab train``'s are: ``--store PATH``, else the
config's ``store``, else ``$SGDLAB_STORE`` or ``./sgdlab-runs/runs.sqlite`` (a ``--resume``
goes on in the store its checkpoints name); in distributed mode rank 0 alone writes to it.
``sgdlab measure DIR`` (or the run's id) measures the final master ``DIR/master.pt`` (of an
interrupted run, the master of its last checkpoint), ``sgdlab train CONFIG --init-from DIR``
starts from it and ``sgdlab runs show DIR`` shows the run.

A new run takes DIR first (``DIR/parle.json``): a second start into it is refused, also while
the first has no checkpoint yet; a run that fails before its first checkpoint frees it again.

``--plugin MODULE`` (a module name or a ``.py`` file; repeatable) imports a module of yours
first, so that the models, datasets and optimizers its ``register_*`` calls name can be used;
it is added to the config's ``plugins: [...]`` (recorded with the run: ``sgdlab measure``
imports it again), and in distributed mode each replica process imports it too; a plugin
file the config lists that has moved since is replaced by the one given, in every process.

The config (YAML or JSON) is described in :func:`sgdlab.train.distributed.build_run`::

    data: {name: mnist_small}
    model: {name: lenet}
    parle: {replicas: 3, lr: 0.1, lr_milestones: [2], batch_size: 128}
    epochs: 75

The ``parle`` mapping is :class:`sgdlab.train.replicas.ParleConfig`, whose defaults are the
thesis' (§5.3.2: L = 25, α = 0.25, γ₀ = 100, ρ₀ = 1 scoped by (1 − 1/(2B)) per round and
clipped at 1 and 0.1, Nesterov momentum 0.9, the "paper" normalisation of the step sizes);
``lr_milestones: [2]`` is "dropped by a factor of 10 [...] after the second epoch" (§5.4.2).
The length is ``rounds``, ``epochs`` (effective epochs per replica) or ``grad_evals``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from sgdlab.cli._help import plain
from sgdlab.distributed_options import (DEFAULT_BACKEND, DEFAULT_TIMEOUT,
                                        add_process_group_options)
from sgdlab.plugins import plugin_key
from sgdlab.cli.train import EXIT_DIVERGED

# those of sgdlab train, and 1 for a run that failed (a traceback, a dead replica process)
EXIT_STATUSES = (f"exit status: 0 the run finished, {EXIT_DIVERGED} it diverged (a non-finite "
                 "replica loss; its report and, with --out, master.pt and results.json are "
                 "written as a finished run's), 1 it failed (a replica process died, a "
                 "collective timed out), 2 bad input (a config, an option), 130 interrupted "
                 "(continue with the command printed)")


def register(subparsers) -> None:
    from sgdlab.cli._plugins import add_plugin_option

    p = subparsers.add_parser(
        "parle", help="train coupled replicas (Parle, Elastic-SGD, Entropy-SGD)",
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.fill(EXIT_STATUSES, 79))   # the raw formatter keeps lines as given
    p.add_argument("config", help="replica run config (YAML or JSON)")
    p.add_argument("--mode", choices=["inprocess", "distributed"], default="inprocess",
                   help="inprocess: the replicas in turn in this process (default); "
                        "distributed: one process per replica, launched with torchrun")
    p.add_argument("--replicas", type=int, default=None, help="override parle.replicas")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a key of the replica config (the value read as YAML), e.g. "
                        "--set epochs=10 --set parle.lr=0.05 (repeatable)")
    p.add_argument("--out", default=None,
                   help="directory for master.pt, results.json and learning_curves.png")
    p.add_argument("--store", metavar="PATH", default=None,
                   help="run store the run is recorded in (default: config's store, "
                        "$SGDLAB_STORE, or ./sgdlab-runs/runs.sqlite)")
    add_process_group_options(p, "distributed")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="rounds between checkpoints in OUT/checkpoints (default: config or 10)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from OUT/checkpoints (same config, "
                        "same number of replicas)")
    p.add_argument("--print-command", action="store_true",
                   help="print the torchrun command instead of running it (distributed)")
    add_plugin_option(p, "; added to the config's plugins, so the stored run names them; "
                         "the replica processes import them too")
    p.set_defaults(func=_run)


def torchrun_command(config: str, replicas: int, *, out: str | None = None,
                     backend: str = DEFAULT_BACKEND, timeout: float = DEFAULT_TIMEOUT,
                     resume: bool = False, checkpoint_every: int | None = None,
                     claimed: bool = False, standalone: bool = False, store: str | None = None,
                     plugins: Sequence[str] = (), overrides: Sequence[str] = (),
                     launcher: str = "torch.distributed.run") -> list[str]:
    """The torchrun command line that runs ``config`` with one process per replica
    (``claimed``: the caller has taken ``out`` for them). ``standalone``: this machine only,
    the rendezvous on a port the system picks free (``--standalone``). Without it torchrun
    takes a fixed port (``$PET_MASTER_PORT``; 29500 by default before torch 2.11, which
    picks a free one for a single node), which a second run on the machine at the same time
    finds in use (EADDRINUSE: that run fails); the nodes of a multi-machine run add their
    own ``--rdzv-endpoint``, which ``--standalone`` would override. ``plugins``: modules
    each replica process imports (``--plugin``), a file's path made absolute (the command
    is run from any folder). ``overrides``: ``--set KEY=VALUE`` for every replica process.
    ``launcher``: the module run with torchrun's arguments (``sgdlab.train.launch``: torchrun
    with a failure summary in place of its traceback)."""
    cmd = [sys.executable, "-m", launcher, "--nproc-per-node", str(replicas)]
    if standalone:
        cmd += ["--standalone"]
    cmd += ["-m", "sgdlab.train.distributed", str(config), "--replicas", str(replicas),
            "--backend", backend, "--timeout", f"{timeout:g}"]
    if out:
        cmd += ["--out", str(out)]
    if store:
        cmd += ["--store", str(store)]
    if checkpoint_every is not None:
        cmd += ["--checkpoint-every", str(checkpoint_every)]
    if resume:
        cmd += ["--resume"]
    if claimed:
        cmd += ["--claimed"]
    for name in plugins:
        cmd += ["--plugin", plugin_key(name)]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def _run(args) -> int:
    from sgdlab.errors import ConfigError
    from sgdlab.train.distributed import (LAUNCHER_ENV, STATUS_ENV, choose_backend, claim_out,
                                          die_with_parent, lock_out, read_config, release_out,
                                          report, round_lines, run_from_config,
                                          run_store_path, timeout_delta)
    from sgdlab.train.replicas import check_checkpoint_dir

    cfg = read_config(args.config, args.overrides, args.plugins)   # (plugins imported by main)
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        # the flag, not the config key it stands for, and before any folder is made
        raise ConfigError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if args.replicas is not None:
        if args.replicas < 1:
            raise ConfigError(f"--replicas must be >= 1, got {args.replicas}")
        cfg.setdefault("parle", {})["replicas"] = args.replicas
    if args.mode == "inprocess":
        # recorded in a run store as sgdlab train's runs are: sgdlab measure, runs show and
        # --init-from find the run there
        cfg["store"] = str(run_store_path(cfg, args.store, args.out, args.resume))
        try:
            res = run_from_config(cfg, mode="inprocess", out=args.out, resume=args.resume,
                                  checkpoint_every=args.checkpoint_every,
                                  progress=round_lines())
        except KeyboardInterrupt as e:   # the command that goes on from its checkpoint
            raise KeyboardInterrupt(f"{str(e) or 'interrupted'}{_continue(args, None)}"
                                    ) from None
        print(report(res, out=args.out, store=cfg["store"]))
        return _exit_status(res.status)
    n = int((cfg.get("parle") or {}).get("replicas", 3))
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out DIR (checkpoints are in DIR/checkpoints)")
    timeout_delta(args.timeout, "--timeout")
    # a backend the config's device contradicts (nccl for CPU tensors): refused here, not by
    # every replica at its first collective
    choose_backend(args.backend, cfg.get("device", "cpu"))
    if args.out and not args.print_command:       # here, before n processes start
        check_checkpoint_dir(Path(args.out) / "checkpoints", args.resume)
        if args.resume:      # a run still trained there refuses it (its rank 0 holds the lock)
            lock = lock_out(args.out)
            if lock is not None:
                os.close(lock)
    options = dict(out=args.out, backend=args.backend, timeout=args.timeout,
                   resume=args.resume, checkpoint_every=args.checkpoint_every,
                   store=args.store, plugins=args.plugins, overrides=args.overrides)
    # torchrun prints a banner unless OMP_NUM_THREADS is set; one thread per process is also
    # what makes the distributed iterates bit-identical to the in-process ones
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    if args.print_command:      # its rank 0 takes OUT when it runs
        cmd = torchrun_command(args.config, n, **options)
        print(f"OMP_NUM_THREADS={threads} {shlex.join(cmd)}")
        return 0
    # validate here, where errors print nicely, before starting n processes
    from sgdlab.store.folders import drop_if_unused, open_new_store
    from sgdlab.train.distributed import build_run
    build_run(cfg)
    if cfg.get("device") == "cuda":
        # one GPU per replica on this machine (local_device): refused here, not by the ranks
        # past them once torchrun has started every one
        from sgdlab.train.distributed import check_replica_gpus, visible_gpus

        count, said = visible_gpus()
        check_replica_gpus(n, "cuda", f"give at most {count} replicas (--replicas) or device: "
                           "cpu (--set device=cpu)", (count, said))
    # the store rank 0 records the run in, opened (or made) here: a path that is no store is
    # refused before any process starts; one made here for a run that then does not start
    # (its folder busy, torchrun failing before rank 0 records it) is removed again, as
    # sgdlab train leaves no empty store
    store = run_store_path(cfg, args.store, args.out, args.resume).resolve()
    opened, made = open_new_store(store)
    opened.close()
    options["store"] = str(store)
    # a new run's folder, taken here: of two starts into it at once one launches processes
    try:
        claim = claim_out(args.out) if args.out and not args.resume else None
    except BaseException:
        drop_if_unused(made)
        raise
    # torchrun run by sgdlab.train.launch: a failed replica's summary, not torchrun's traceback
    cmd = torchrun_command(args.config, n, **options, claimed=claim is not None,
                           standalone=True, launcher="sgdlab.train.launch")
    # an interrupt of this command (Ctrl-C, SIGTERM) stops torchrun and every replica with it
    # (_stop), instead of leaving the replicas training on their own; torchrun in a session of
    # its own, so a terminal's Ctrl-C reaches this process alone (torchrun's own handling
    # prints a traceback per replica)
    code = None
    # rank 0 writes the run's status here at its end: created by it, not here, so that a
    # SIGKILLed launcher (whose replicas die with it) leaves no file behind
    status_file = Path(tempfile.gettempdir()) / f"sgdlab-parle-status-{uuid.uuid4().hex}"
    try:
        # torchrun dies with this process (and its replicas with it, they do the same): a
        # SIGKILLed launcher leaves nothing training, so the same command with --resume goes on
        env = {**os.environ, "OMP_NUM_THREADS": threads, LAUNCHER_ENV: str(os.getpid()),
               STATUS_ENV: str(status_file)}
        proc = subprocess.Popen(cmd, env=env,
                                start_new_session=hasattr(os, "setsid"),
                                preexec_fn=die_with_parent if os.name == "posix" else None)
        try:
            code = proc.wait()
        except KeyboardInterrupt as e:
            _stop(proc)
            raise KeyboardInterrupt(f"{str(e) or 'interrupted'}: the replicas were stopped"
                                    f"{_continue(args, n)}") from None
        status = status_file.read_text() if status_file.exists() else None
    finally:
        status_file.unlink(missing_ok=True)
        if claim is not None and code != 0:   # failed or stopped: free again unless a
            release_out(args.out, claim)      # checkpoint was written
        if code != 0:
            drop_if_unused(made)
    if code != 0:
        # each replica has printed its error, and the launch one line per failed rank (its
        # exit code or signal); one line that says what it means and how the computed
        # rounds are kept
        print(f"sgdlab: error: the distributed run failed (torchrun exit code {code}): a "
              f"replica process died or failed, see the messages above{_continue(args, n)}",
              file=sys.stderr)
        return code
    return _exit_status(status)


def _exit_status(status: str | None) -> int:
    """The exit status of a run that ended with ``status`` (None: torchrun exited 0 and no
    rank 0 wrote a status, taken as finished)."""
    if status in ("finished", None):
        return 0
    return EXIT_DIVERGED if status == "diverged" else 1


def _continue(args, n: int | None) -> str:
    """How to go on after a stopped or failed run (distributed: of ``n`` processes):
    ``--resume`` from its checkpoints when it wrote any, else the same command again."""
    from sgdlab.store.folders import store_option

    if not args.out:
        return ""
    # paths absolute: the command works from any folder (a packaged config stays a name)
    config = os.path.abspath(args.config) if Path(args.config).exists() else args.config
    command = f"sgdlab parle {shlex.quote(config)}"
    if n is not None:
        command += f" --mode distributed --replicas {n}"
    elif args.replicas is not None:
        command += f" --replicas {args.replicas}"
    command += f" --out {shlex.quote(os.path.abspath(args.out))}"
    if args.store:
        command += f" {store_option(args.store)}"
    for name in args.plugins:
        command += f" --plugin {shlex.quote(plugin_key(name))}"
    for item in args.overrides:
        command += f" --set {shlex.quote(item)}"
    # the options the run was started with, so that it goes on as it ran
    for flag, value, default in (("--backend", args.backend, DEFAULT_BACKEND),
                                 ("--timeout", args.timeout, DEFAULT_TIMEOUT),
                                 ("--checkpoint-every", args.checkpoint_every, None)):
        if value != default:
            command += f" {flag} {value:g}" if isinstance(value, float) else f" {flag} {value}"
    from sgdlab.train.distributed import has_checkpoint

    if has_checkpoint(args.out):
        saved = _saved_round(args.out)
        where = "" if saved is None else f"; its last checkpoint is at round {saved}"
        return f"{where}; continue with: {command} --resume"
    return f"; no checkpoint was written yet: start it again with {command}"


def _saved_round(out: str) -> int | None:
    """The round of the run's last checkpoint in ``out`` (where ``--resume`` goes on);
    None where it cannot be read (``--resume`` says why)."""
    from sgdlab.train.checkpoint import load_checkpoint
    from sgdlab.train.distributed import checkpoint_folder
    from sgdlab.train.replicas import MASTER_CHECKPOINT

    try:   # mapped, not read: the weights are not needed
        return int(load_checkpoint(checkpoint_folder(out) / MASTER_CHECKPOINT,
                                   mmap=True)["round"])
    except Exception:  # noqa: BLE001 - said by --resume, not by this hint
        return None


def _stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """Stop torchrun and the replicas it started (each in a session of its own, so no
    process group holds them all): SIGKILL to torchrun (on SIGTERM it prints a traceback of
    its own), SIGTERM to the replicas (they stop at once, without a traceback; checkpoint
    files are written atomically), SIGKILL to those left after ``grace`` seconds (on Linux
    the kernel has already SIGKILLed those past their start with torchrun). Without
    /proc to find the replicas: SIGTERM to torchrun, which passes it on."""
    replicas = _children(proc.pid)
    if replicas is None:
        proc.terminate()
        proc.wait()
        return
    proc.kill()
    proc.wait()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in replicas:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not any(_alive(pid) for pid in replicas):
                return
            time.sleep(0.1)


def _children(pid: int) -> list[int] | None:
    """The processes whose parent is ``pid``, from /proc (None where there is no /proc)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    out = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue                     # gone meanwhile
        if int(fields[1]) == pid:        # after the name: state, ppid, ...
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"                  # a zombie has stopped; its new parent reaps it
