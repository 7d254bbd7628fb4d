"""The largest networks whose D(x) top-10 and Hessian top-10 take at most 60 s (absolute budget).

For each architecture, models of growing size (at initialisation, seed 0, float32, CPU, two
torch threads) on N = 2,000 images of ``mnist_small``, cross-entropy:

1. D(x) top-10: ``gradient_covariance(model, loss, data).eigenpairs(10)`` (factored per-sample
   gradients and the N x N Gram matrix, Lanczos on it);
2. Hessian top-10: ``lanczos(HessianOperator(model, loss, data), 10, tol=1e-3, num_iter=80)``
   (at initialisation the top of the spectrum is clustered; the relative residual reached
   within 80 products is printed).

The figure is the largest parameter count whose two steps together took at most 60 s of wall
time (the budget is absolute: on a machine shared with other work, wall time is
inflated; the load average and the CPU time are printed next to it).

- ``largest_model_params_within_60s``: MLP 784-w-w-10 (ReLU), w in 704, 1024, 1408
  (d = 1.06 M, 1.86 M, 3.1 M), stopping at the first miss;
- ``largest_conv_model_params_within_60s``: conv net conv(c, 5x5, stride 2)-conv(2c, 3x3,
  stride 2)-fc(h)-fc10 (ReLU), (c, h) in (16, 640), (32, 640), (32, 1280) (d = 1.01 M,
  2.0 M, 4.0 M); its parameters sit mostly in the first fully-connected layer (printed), as in
  LeNet-style nets. A ResNet-56 or All-CNN reuses each weight at every pixel, so it needs far
  more arithmetic per parameter; the script times one Hessian-vector product of ResNet-56 on
  100 CIFAR-shaped inputs and prints the extrapolated cost of its top-10 on N = 2,000.
- ``largest_model_samples_within_60s``: N (2,000), where at least one of the models above met
  the budget on it (skipped otherwise: no sample count was then handled within 60 s).

Takes minutes: runs only with ``SGDLAB_BENCH_LARGEST=1`` (the figures read ``skipped``
otherwise).
"""
from __future__ import annotations

import os
import re
import time
import warnings

import torch
from torch import nn

GOALS = {
    "largest_model_params_within_60s": ">= 1000000",
    "largest_conv_model_params_within_60s": ">= 1000000",
    "largest_model_samples_within_60s": "report",
}

N = 2000
THREADS = 2
BUDGET_S = 60.0


def _data(n: int = N):
    from sgdlab.data import load_dataset

    d = load_dataset("mnist_small", seed=0)
    return d.x_train[:n].float(), d.y_train[:n]


def _mlp(w: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                         nn.Linear(w, 10))


def _convnet(c: int, h: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, c, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * c * 7 * 7, h), nn.ReLU(), nn.Linear(h, 10))


def _load() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _attempt(model: nn.Module, x, y) -> tuple[float, str]:
    from sgdlab.measure.curvature import lanczos
    from sgdlab.measure.noise import gradient_covariance
    from sgdlab.operators import HessianOperator, num_params

    loss_fn = nn.CrossEntropyLoss()
    d = num_params(model)
    conv = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d)
               for p in m.parameters())
    cpu0, t0 = time.process_time(), time.perf_counter()
    cov = gradient_covariance(model, loss_fn, (x, y))
    top_dx = cov.eigenpairs(10)[0]
    del cov
    t1 = time.perf_counter()
    op = HessianOperator(model, loss_fn, (x, y))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vals, _ = lanczos(op, 10, tol=1e-3, num_iter=80, generator=torch.Generator().manual_seed(0))
    t2, cpu = time.perf_counter(), time.process_time() - cpu0
    found = re.search(r"\((relative [^)]*)\)", str(caught[0].message)) if caught else None
    note = ("converged to tol 1e-3" if not caught
            else found.group(1) if found else str(caught[0].message))
    wall = t2 - t0
    print(f"  d = {d:,} ({conv / d:.1%} in conv layers), N = {len(x)}: D(x) top-10 "
          f"{t1 - t0:.1f} s (λ1 = {float(top_dx[0]):.3g}) + Hessian top-10 {t2 - t1:.1f} s "
          f"({op.num_matvecs} HVPs, {note}; λ1 = {float(vals[0]):.4g}) = {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU on {THREADS} threads (load average {_load()})", flush=True)
    return wall, note


def _largest(name: str, builders, x, y) -> float | None:
    from sgdlab.operators import num_params

    best = None
    for build in builders:
        model = build()
        print(f"  {name}: {model}".replace("\n", " "), flush=True)
        wall, _ = _attempt(model, x, y)
        if wall > BUDGET_S:
            break
        best = float(num_params(model))
    return best


def _resnet_estimate() -> None:
    from sgdlab.models.registry import build_model
    from sgdlab.operators import HessianOperator, num_params

    torch.manual_seed(0)
    model = build_model("resnet-56", (3, 32, 32), 10).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 3, 32, 32, generator=g), torch.randint(0, 10, (100,), generator=g)
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    v = torch.randn(op.shape[0], generator=g)
    op.matvec(v)
    t = time.perf_counter()
    op.matvec(v)
    hvp = time.perf_counter() - t
    print(f"  ResNet-56 (d = {num_params(model):,}, eval mode): one HVP on 100 inputs of 3x32x32 "
          f"{hvp:.1f} s -> on N = {N}: ~{hvp * N / 100:.0f} s per HVP, "
          f"~{hvp * N / 100 * 80 / 60:.0f}"
          f" min for 80 Lanczos products (not attempted)", flush=True)


def run() -> dict[str, float | None]:
    out: dict[str, float | None] = dict.fromkeys(GOALS)
    if os.environ.get("SGDLAB_BENCH_LARGEST", "") in ("", "0"):
        print("  skipped (set SGDLAB_BENCH_LARGEST=1; takes minutes)")
        return out
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        x, y = _data()
        out["largest_model_params_within_60s"] = _largest(
            "MLP", [lambda w=w: _mlp(w) for w in (704, 1024, 1408)], x, y)
        out["largest_conv_model_params_within_60s"] = _largest(
            "conv net", [lambda c=c, h=h: _convnet(c, h) for c, h in ((16, 640), (32, 640),
                                                                      (32, 1280))], x, y)
        # N is the sample count only where some model met the budget on all N samples
        met = any(out[k] is not None for k in ("largest_model_params_within_60s",
                                               "largest_conv_model_params_within_60s"))
        out["largest_model_samples_within_60s"] = float(N) if met else None
        _resnet_estimate()
    finally:
        torch.set_num_threads(threads)
    return out


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
