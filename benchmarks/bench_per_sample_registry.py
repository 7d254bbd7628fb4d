"""Per-sample gradients G (N, d) on the lab's registry models: sgdlab's
``per_sample_gradients`` (the factored engine wherever it applies) against plain
``torch.func`` ``vmap(grad)``.

    python benchmarks/run.py --only per_sample_registry     # about 2 minutes, one thread

For each model, 128 Gaussian inputs of its reference shape, float32, CPU, eval mode, one thread;
the two contenders alternate in one process (median of 5, calling thread's CPU time; the
maximum difference is checked first, to a relative 1e-4). ``per_sample_<model>_speedup_vs_vmap``
= vmap's time over sgdlab's. sgdlab returns the (N, d) matrix, vmap per-parameter tensors.
On conv nets both run the same oneDNN kernels (the per-sample weight gradients as one grouped
convolution), so the figure sits near 1 there; on MLPs the factored rows (outer products
straight into G) lead.
"""
from __future__ import annotations

import torch
from torch import nn

from _registry import registry_problem
from _timing import against_reference, one_thread

MODELS = ("mlp", "jastrzebski-mlp", "lenet", "zhu-lenet", "small-allcnn", "wide-resnet",
          "resnet-20", "musso-model2")
N = 128
GOALS = {f"per_sample_{m}_speedup_vs_vmap": "report" for m in MODELS}


def measure(name: str, repeats: int = 5) -> float:
    from torch.func import functional_call, grad, vmap

    from sgdlab.operators import num_params, per_sample_gradients

    model, x, y = registry_problem(name, N)
    loss_fn = nn.CrossEntropyLoss()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def one(p, xi, yi):
        return loss_fn(functional_call(model, (p, buffers), (xi[None],)), yi[None])

    per_sample = vmap(grad(one), in_dims=(None, 0, 0))
    tasks = {"sgdlab": lambda: per_sample_gradients(model, loss_fn, (x, y)),
             "vmap": lambda: per_sample(params, x, y)}
    ref = torch.cat([t.reshape(N, -1) for t in tasks["vmap"]().values()], 1)
    med = against_reference(tasks, "sgdlab", ref, repeats,
                            f"{name} (N = {N}, d = {num_params(model):,})")
    return med["vmap"] / med["sgdlab"]


def run(only: str = "") -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    with one_thread():
        for name in MODELS:
            key = f"per_sample_{name}_speedup_vs_vmap"
            if not only or only in "bench_per_sample_registry" or only in key:
                out[key] = measure(name)
    return out


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
