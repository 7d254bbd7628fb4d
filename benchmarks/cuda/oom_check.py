"""Xing et al.'s step interpolation on a GPU short of memory, for real (run THERE, on a GPU):
with all but 12 GiB of the device taken, a memory budget far above what is left makes
`segment_losses` run out of memory; it must halve its chunks, warn, and give the loss of the
evaluation under its default budget, vmapped and point by point, with batch norm in eval and
train mode, and never drop vmap for a size it chose itself ("vmap failed": cuDNN refuses a
tensor of 2^31 elements or more). Prints one line per case; exits non-zero on a failure.

    python benchmarks/cuda/oom_check.py [N]        (default N = 64,000 images of 3x64x64)
"""
from __future__ import annotations

import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.measure.passes import activation_bytes_per_sample
from sgdlab.measure.walk import segment_losses
from sgdlab.operators import params_vector

LEFT_FREE = 12 * 2**30


def _losses(*args, **kwargs) -> tuple[torch.Tensor, list[str], float]:
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = segment_losses(*args, **kwargs)
    return out, [str(w.message) for w in caught], time.perf_counter() - t0


def main(n: int, device: str) -> int:
    torch.manual_seed(0)
    model = nn.Sequential(
        # wide and cheap: 3 MiB of activations per image for 14 MFLOP
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).to(device).eval()
    x = torch.randn(n, 3, 64, 64, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    a = params_vector(model)
    b = a + 0.05 * torch.randn_like(a)
    per_sample = activation_bytes_per_sample(model, x[:2])
    print(f"{device}: N = {n}, {per_sample / 2**20:.2f} MiB of activations per sample "
          f"(an upper bound), {n * per_sample / 2**30:.1f} GiB for one point over all")
    segment_losses(model, F.cross_entropy, (x[:64], y[:64]), a, b, 10)      # cuDNN's set-up
    failed = 0
    for vectorize in (True, False):       # the whole device: its default budget, no retries
        _, said, took = _losses(model, F.cross_entropy, (x, y), a, b, 10, vectorize=vectorize)
        failed += bool(said)
        print(f"  whole device, {'vmap' if vectorize else 'pointwise'}: {took:.2f} s, "
              f"{'ok' if not said else 'FAILED: ' + said[0][:200]}")
    if device == "cuda":   # the limit itself: above 2^31 elements under vmap (shown, not judged)
        import sgdlab.measure.passes as passes

        limit, passes.VMAP_MAX_ELEMENTS = passes.VMAP_MAX_ELEMENTS, 4 * 2**31
        try:
            said = _losses(model, F.cross_entropy, (x, y), a, b, 10, vectorize=True)[1]
        finally:
            passes.VMAP_MAX_ELEMENTS = limit
        print(f"  without the element cap (up to 2^33): {said[0][:200] if said else 'no warning'}")
    filler = None
    if device == "cuda":      # blocks cached by the passes above would hold a pass's needs
        torch.cuda.empty_cache()
        free = torch.cuda.mem_get_info()[0]
        filler = torch.empty(max(0, free - LEFT_FREE), dtype=torch.uint8, device=device)
        print(f"cuda: {free / 2**30:.1f} GiB free, {LEFT_FREE / 2**30:.0f} GiB left after "
              "the filler")
    for bn_mode in ("eval", "train"):
        for vectorize in (True, False):
            args = (model, F.cross_entropy, (x, y), a, b, 10)
            ref, said, t_ref = _losses(*args, bn_mode=bn_mode, vectorize=vectorize)
            out, said_huge, t_huge = _losses(*args, bn_mode=bn_mode, vectorize=vectorize,
                                             memory_budget=2**50)
            retries = [m for m in said_huge if "out of memory" in m]
            dropped = [m for m in said + said_huge if "vmap failed" in m]
            err = float(((out - ref).abs() / ref.abs()).max())
            ok = err < 1e-5 and not dropped and (device == "cpu" or bool(retries))
            failed += not ok
            print(f"  bn {bn_mode}, {'vmap' if vectorize else 'pointwise'}: "
                  f"{'ok' if ok else 'FAILED'}; max rel diff {err:.1e}; {len(retries)} "
                  f"retries; default budget {t_ref:.1f} s, huge budget {t_huge:.1f} s")
            for msg in dict.fromkeys(retries[:1] + retries[-1:] + dropped):
                print(f"    {msg[:200]}")
            if device == "cuda":
                print(f"    allocated after: {torch.cuda.memory_allocated() / 2**30:.2f} GiB")
    del filler
    return failed


if __name__ == "__main__":
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else (64_000 if dev == "cuda" else 64),
                  dev))
