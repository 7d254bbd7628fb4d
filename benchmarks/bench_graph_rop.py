"""The R-op over a traced graph (``sgdlab/operators/graph_rop.py``) against autograd's double
backward, on models of the lab's registry that are not a plain ``nn.Sequential``.

    python benchmarks/run.py --only graph_rop          # about 2 minutes, one thread

For each model (N Gaussian inputs of its reference shape, random labels of 10 classes, N in
``MODELS``), in one process, alternating the contenders (median of 5, calling thread's CPU
time, float32, CPU, eval mode; each pair's results are checked to agree to a relative 1e-3 first):

- ``graph_rop_<model>_hessian_speedup_vs_autograd``: autograd's Hessian-vector product
  (``HessianOperator(..., rop=False)``: double backward through a cached gradient graph) over
  the graph R-op's;
- ``graph_rop_<model>_ggn_speedup_vs_autograd``: the same for Gauss–Newton products (autograd:
  the double-vjp trick through the cached output graph);
- ``graph_rop_<model>_forms_speedup_vs_products``: the graph R-op's product vᵀ(Hv) over one
  Taylor-mode quadratic form vᵀ H v (Hutchinson's sample) over the same graph;
- ``graph_rop_<model>_hessian_cost_in_gradients``: the graph R-op's product in gradients.

An exact Hessian product of a conv net costs about two gradients whichever way it is computed
(five convolution calls per layer against three), so on ResNets the Hessian figure sits near 1;
the R-op gains where autograd's double backward is slow (ReLU and max-pool double backward,
small-channel convolutions), and for GGN products everywhere.
"""
from __future__ import annotations

import torch
from torch import nn

from _registry import registry_problem
from _timing import alternating_medians, one_thread, relative_difference

RTOL = 1e-3    # float32 round-off reaches 1.5e-5 on small-allcnn (1.8e-15 in float64)
MODELS = {"lenet": 256, "zhu-lenet": 256, "small-allcnn": 128, "wide-resnet": 64,
          "resnet-20": 64}
GOALS = {}
for _m in MODELS:
    GOALS[f"graph_rop_{_m}_hessian_speedup_vs_autograd"] = ">= 0.95"
    GOALS[f"graph_rop_{_m}_ggn_speedup_vs_autograd"] = ">= 1.2"
    GOALS[f"graph_rop_{_m}_forms_speedup_vs_products"] = ">= 1"
    GOALS[f"graph_rop_{_m}_hessian_cost_in_gradients"] = "report"


def measure(name: str, repeats: int = 5) -> dict[str, float]:
    from sgdlab.operators import GGNOperator, HessianOperator, num_params
    from sgdlab.operators.graph_rop import GraphHVP

    model, x, y = registry_problem(name, MODELS[name])
    loss_fn = nn.CrossEntropyLoss()
    data = (x, y)
    v = torch.randn(num_params(model), 1, generator=torch.Generator().manual_seed(1))
    graph = HessianOperator(model, loss_fn, data, taylor=False)
    assert isinstance(graph._rop, GraphHVP), name
    forms = HessianOperator(model, loss_fn, data)
    params = list(model.parameters())
    tasks = {
        "gradient": lambda: torch.autograd.grad(loss_fn(model(x), y), params),
        "hessian": lambda: graph.matmat(v),
        "hessian_autograd": lambda op=HessianOperator(model, loss_fn, data, rop=False,
                                                      taylor=False): op.matmat(v),
        "ggn": lambda op=GGNOperator(model, loss_fn, data): op.matmat(v),
        "ggn_autograd": lambda op=GGNOperator(model, loss_fn, data, rop=False): op.matmat(v),
        "forms": lambda: forms.quadratic_forms(v),
    }
    out = {k: fn() for k, fn in tasks.items()}          # warm-up: caches, first-call costs
    # each pair of contenders computes the same thing (float32: agree to round-off)
    errs = [relative_difference(out["hessian"], out["hessian_autograd"], f"{name} Hessian", RTOL),
            relative_difference(out["ggn"], out["ggn_autograd"], f"{name} GGN", RTOL),
            relative_difference(out["forms"], (v * out["hessian"]).sum(0), f"{name} forms",
                                RTOL)]
    med = alternating_medians(tasks, repeats)
    print(f"  {name} (N = {len(x)}, d = {num_params(model):,}): "
          + ", ".join(f"{k} {1e3 * t:.0f} ms" for k, t in med.items())
          + f" (rel. max differences {', '.join(f'{e:.1e}' for e in errs)})", flush=True)
    return {
        f"graph_rop_{name}_hessian_speedup_vs_autograd": med["hessian_autograd"] / med["hessian"],
        f"graph_rop_{name}_ggn_speedup_vs_autograd": med["ggn_autograd"] / med["ggn"],
        f"graph_rop_{name}_forms_speedup_vs_products": med["hessian"] / med["forms"],
        f"graph_rop_{name}_hessian_cost_in_gradients": med["hessian"] / med["gradient"],
    }


def run(only: str = "") -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    with one_thread():
        for name in MODELS:
            figures = [f for f in GOALS if f"_{name}_" in f]
            if not only or only in "bench_graph_rop" or any(only in f for f in figures):
                out.update(measure(name))
    return out


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
