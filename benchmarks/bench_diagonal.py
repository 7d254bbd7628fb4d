"""The exact diagonal of the GGN: sgdlab's ``ggn_diagonal`` (per-sample gradients of the loss
Hessian's square-root columns, squares summed on the factored layers without forming G) against
BackPACK's ``DiagGGNExact`` (the same factors backpropagated through its extended modules).

    python benchmarks/run.py --only bench_diagonal      # a few minutes, one thread

Problems as in ``bench_peers.py`` (digits MLP, the large MLP, the CNN with and without batch
norm in eval mode), float32, CPU, cross-entropy, one thread; the two alternate in one process
(median of 5 of the calling thread's CPU time; the maximum relative difference is checked
first: above 1e-4 nothing is timed and the module fails).
``ggn_diagonal_<problem>_speedup_vs_backpack`` = BackPACK's time over sgdlab's; skipped when
BackPACK is not installed (the ``[bench]`` extra).
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from _timing import against_reference, one_thread
from bench_peers import PROBLEMS, problem

GOALS = {f"ggn_diagonal_{p}_speedup_vs_backpack": "report" for p in PROBLEMS}


def measure(name: str, repeats: int = 5) -> float | None:
    try:
        from backpack import backpack, extend
        from backpack.extensions import DiagGGNExact
    except ImportError:
        print("  BackPACK not installed: skipped")
        return None
    from sgdlab.measure.curvature import ggn_diagonal

    model, x, y, desc = problem(name)
    loss_fn = nn.CrossEntropyLoss()
    bp_model, bp_loss = extend(copy.deepcopy(model)), extend(nn.CrossEntropyLoss())

    def theirs() -> torch.Tensor:
        bp_model.zero_grad()
        with backpack(DiagGGNExact()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)     # its hooks on input-free modules
            bp_loss(bp_model(x), y).backward()
        return torch.cat([p.diag_ggn_exact.reshape(-1) for p in bp_model.parameters()])

    tasks = {"sgdlab": lambda: ggn_diagonal(model, loss_fn, (x, y)), "BackPACK": theirs}
    med = against_reference(tasks, "sgdlab", theirs().double(), repeats,
                            f"{name} ({desc}, N = {len(x)})")
    return med["BackPACK"] / med["sgdlab"]


def run(only: str = "") -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    with one_thread():
        for name in PROBLEMS:
            key = f"ggn_diagonal_{name}_speedup_vs_backpack"
            if not only or only in "bench_diagonal" or only in key:
                out[key] = measure(name)
    return out


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
