"""``sgdlab temperature``: SGD temperatures of a hyper-parameter setting, and the learning rate
or batch size that keeps one of them when the other changes (:mod:`sgdlab.measure.temperature`).
"""
from __future__ import annotations

import argparse
import math

from sgdlab.errors import UserError

_HELP = {
    "eta_over_b": "η/B (Jastrzebski et al.)",
    "beta_inv": "β⁻¹ = η/(2B) (Chaudhari & Soatto; ×(1−B/N) without replacement)",
    "musso": "T = l/(6C(1−μ)) in units of D (Musso eq. 19; --lr is the maximal l)",
    "musso-mean-lr": "the same T with --lr read as the mean lr, l = 2·lr (Musso §3.1)",
    "thesis": "(η/B)·mean λ(D) (thesis; needs --mean-eig)",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "temperature", help="SGD temperatures; solve for lr or batch size keeping one fixed",
        description="Print the temperatures of SGD at (lr, batch size[, momentum, dataset "
                    "size]) and, with --match-lr / --match-batch-size, the other "
                    "hyper-parameter that keeps a temperature equal.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="temperatures:\n" + "\n".join(f"  {k:13s} {v}" for k, v in _HELP.items())
               + "\n\nexamples:\n  sgdlab temperature --lr 0.1 --batch-size 128 "
                 "--match-lr 512\n  sgdlab temperature --lr 0.1 --batch-size 128 "
                 "--momentum 0.9 --match-batch-size 0.05 --keep musso\n"
                 "  sgdlab temperature --lr 2e-4 --batch-size 60 --match-lr 30 --keep musso"
                 "   # Musso Fig. 5")
    p.add_argument("--lr", type=float, required=True,
                   help="learning rate η; for Musso's random learning rate the maximal l "
                        "(kind musso) or the mean (kind musso-mean-lr)")
    p.add_argument("--batch-size", type=int, required=True, help="batch size B")
    p.add_argument("--momentum", type=float, default=0.0, help="heavy-ball momentum μ (default 0)")
    p.add_argument("--dataset-size", type=int, default=None, metavar="N",
                   help="N: adds β⁻¹ without replacement (factor 1 − B/N); no batch size "
                        "matched or given may exceed it")
    p.add_argument("--mean-eig", type=float, default=None, metavar="M",
                   help="measured mean eigenvalue Tr D / d of the diffusion matrix D = Σ "
                        "(thesis): noise/mean_eig, as `sgdlab measure RUN` prints it")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--match-lr", "--new-batch-size", dest="match_lr", type=int, default=None,
                   metavar="NEW_BATCH_SIZE",
                   help="solve for the learning rate that keeps the temperature at this new "
                        "batch size")
    g.add_argument("--match-batch-size", "--new-lr", dest="match_batch_size", type=float,
                   default=None, metavar="NEW_LR",
                   help="solve for the batch size that keeps the temperature at this new "
                        "learning rate (rounded to an integer; the achieved value is shown)")
    p.add_argument("--keep", choices=list(_HELP), default=None,
                   help="with --match-lr or --match-batch-size: which temperature to keep "
                        "(default: every computable one)")
    p.set_defaults(func=_temperature)


def _temperature(args: argparse.Namespace) -> int:
    import sgdlab.measure.temperature as T

    matching = args.match_lr is not None or args.match_batch_size is not None
    # --keep only steers the solve: refused, not ignored, without one (and before any output)
    if args.keep and not matching:
        raise UserError(f"--keep {args.keep} picks the temperature that --match-lr or "
                        "--match-batch-size keeps: give one of them")
    if args.keep == "thesis" and args.mean_eig is None:
        raise UserError("--keep thesis needs --mean-eig")
    if args.match_lr is not None and args.match_lr < 1:
        raise UserError(f"--match-lr takes the new batch size, >= 1; got {args.match_lr}")
    if args.match_lr is not None and args.dataset_size is not None \
            and args.match_lr > args.dataset_size:
        raise UserError(f"--match-lr {args.match_lr}: a batch size beyond --dataset-size "
                        f"{args.dataset_size}")
    if args.match_batch_size is not None and not 0 < args.match_batch_size < math.inf:
        raise UserError(f"--match-batch-size takes the new learning rate, finite and > 0; got "
                        f"{args.match_batch_size:g}")
    kw = dict(momentum=args.momentum, dataset_size=args.dataset_size,
              mean_eigenvalue=args.mean_eig)
    try:
        temps = T.temperatures(args.lr, args.batch_size, **kw)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(f"lr {args.lr:g}, batch size {args.batch_size}, momentum {args.momentum:g}"
          + (f", dataset size {args.dataset_size}" if args.dataset_size else ""))
    for name, value in temps.items():
        print(f"  {name:30s} {value:.6g}")
    if not matching:
        return 0
    kinds = [args.keep] if args.keep else [k for k in T.KINDS
                                           if k != "thesis" or args.mean_eig is not None]
    for kind in kinds:
        # β⁻¹ with N given is kept without replacement (the factor 1 − B/N matters there)
        kkw = kw if kind == "beta_inv" else {**kw, "dataset_size": None}
        # named as the line above prints the value it keeps: beta_inv's is another one
        shown = ("beta_inv_without_replacement" if kind == "beta_inv" and args.dataset_size
                 else kind)
        target = T.temperature(kind, args.lr, args.batch_size, **kkw)
        try:
            if args.match_lr is not None:
                lr = T.solve_lr(kind, target, args.match_lr, **kkw)
                print(f"keep {shown}: batch size {args.match_lr} -> lr {lr:.6g}")
            else:
                # N bounds every kind's batch size, whether or not its formula has N in it
                b = T.solve_batch_size(kind, target, args.match_batch_size,
                                       **{**kkw, "dataset_size": args.dataset_size})
                bi = T.round_batch_size(b)
                got = T.temperature(kind, args.match_batch_size, bi, **kkw)
                print(f"keep {shown}: lr {args.match_batch_size:g} -> batch size {bi} "
                      f"(exact {b:.4g}; temperature {got:.6g} vs {target:.6g})")
        except ValueError as e:
            if args.keep:
                raise UserError(f"{shown}: {e}") from None
            # the default keeps every temperature that can be kept (--keep's help): one that
            # cannot is said on its line, and the others still answered
            print(f"keep {shown}: none ({e})")
    return 0
