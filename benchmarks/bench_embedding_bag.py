"""First-order measurements of ``nn.EmbeddingBag`` models with torch's fused bag against the
plain-ops bag (``sgdlab.operators.batches.bags_composed``) that every measurement took before
and that only passes differentiated twice and vmapped per-sample gradients now take
(docs/design/curvature.md).

    python benchmarks/run.py --only embedding_bag      # 10-30 s, one thread

A 10,000 x 64 bag and a linear head to 10 classes, float32, CPU, in one process, alternating
the contenders (median of 15, calling thread's CPU time; each pair's results are checked to
agree to a relative 1e-5 first). The old path is the same call within ``bags_composed``:

- ``embedding_bag_gradient_<case>_speedup_vs_composed``: ``full_gradient`` over 256 bags of
  50 tokens, as (256, 50) rows in modes sum, mean and max, and (``runs``) the same tokens as a
  1-d input with offsets, mean and max;
- ``embedding_bag_per_sample_<mode>_composed_speedup_vs_native``: ``per_sample_gradients``
  (vmap) over 64 bags of 50 tokens of a 1,000 x 32 bag, which keeps the composed bag, against
  the same call with torch's: it has no vmap batching rule, and vmap's fallback (one call per
  sample) is the slower.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from _timing import alternating_medians, one_thread, relative_difference

RTOL = 1e-5
GRADIENT_CASES = ("sum", "mean", "max", "mean_runs", "max_runs")
PER_SAMPLE_MODES = ("mean", "max")
GOALS = {f"embedding_bag_gradient_{c}_speedup_vs_composed": ">= 1" for c in GRADIENT_CASES}
GOALS.update({f"embedding_bag_per_sample_{m}_composed_speedup_vs_native": ">= 1"
              for m in PER_SAMPLE_MODES})


class _Bags(nn.Module):
    def __init__(self, mode: str, runs: bool, vocab: int, dim: int):
        super().__init__()
        self.bag, self.head, self.runs = nn.EmbeddingBag(vocab, dim, mode=mode), \
            nn.Linear(dim, 10), runs

    def forward(self, x):
        if self.runs:
            return self.head(self.bag(x.flatten(), torch.arange(0, x.numel(), x.shape[1])))
        return self.head(self.bag(x))


def _problem(mode: str, runs: bool, n: int, vocab: int = 10_000, dim: int = 64):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (n, 50), generator=g)
    return (_Bags(mode, runs, vocab, dim), nn.CrossEntropyLoss(),
            (x, torch.randint(0, 10, (n,), generator=g)))


def _pair(name: str, native, composed, repeats: int) -> float:
    """Median CPU time of ``composed`` over that of ``native``."""
    tasks = {"native": native, "composed": composed}
    out = {k: f() for k, f in tasks.items()}            # warm-up
    err = relative_difference(out["native"], out["composed"], name, RTOL)
    med = alternating_medians(tasks, repeats)
    print(f"  {name}: native {1e3 * med['native']:.1f} ms, composed "
          f"{1e3 * med['composed']:.1f} ms (rel. max difference {err:.1e})", flush=True)
    return med["composed"] / med["native"]


def measure(repeats: int = 15) -> dict[str, float]:
    import sgdlab.operators.per_sample as per_sample_module
    from sgdlab.operators import full_gradient, per_sample_gradients
    from sgdlab.operators.batches import bags_composed

    out = {}
    for case in GRADIENT_CASES:
        model, loss_fn, data = _problem(case.split("_")[0], case.endswith("_runs"), 256)

        def gradient():
            return full_gradient(model, loss_fn, data)

        def composed():                 # the old path: every measurement composed the bags
            with bags_composed(model):
                return gradient()

        out[f"embedding_bag_gradient_{case}_speedup_vs_composed"] = _pair(
            f"gradient {case}", gradient, composed, repeats)

    def per_sample():
        return per_sample_gradients(model, loss_fn, data, method="vmap")

    def native_per_sample():
        per_sample_module.bags_composed = lambda m: contextlib.nullcontext()
        try:
            return per_sample()
        finally:
            per_sample_module.bags_composed = bags_composed

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "There is a performance drop")
        for mode in PER_SAMPLE_MODES:
            model, loss_fn, data = _problem(mode, False, 64, 1000, 32)
            out[f"embedding_bag_per_sample_{mode}_composed_speedup_vs_native"] = 1 / _pair(
                f"per-sample {mode}", native_per_sample, per_sample, repeats)
    return out


def run(only: str = "") -> dict[str, float | None]:
    with one_thread():
        return measure()


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
