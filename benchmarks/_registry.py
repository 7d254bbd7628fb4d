"""The lab's registry models as benchmark problems (shared by the benchmark modules; run.py puts
benchmarks/ on sys.path while it loads a module)."""
from __future__ import annotations

import torch


def registry_problem(name: str, n: int):
    """(model in eval mode, x, y): registry model ``name`` for 10 classes at seed 0 and ``n``
    Gaussian inputs of its reference shape with random labels. ``resnet-20`` is the CIFAR
    ResNet of depth 20; ``wide-resnet`` is WRN-10-1."""
    import sgdlab.models  # noqa: F401  (registers the models)
    from sgdlab.models.registry import build_model, describe

    torch.manual_seed(0)
    if name == "resnet-20":
        shape, model = (3, 32, 32), build_model("resnet-56", (3, 32, 32), 10, depth=20)
    elif name == "wide-resnet":
        shape = describe(name).reference_input
        model = build_model(name, shape, 10, depth=10, widen=1)
    else:
        shape = describe(name).reference_input
        model = build_model(name, shape, 10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    return model.eval(), x, torch.randint(0, 10, (len(x),), generator=g)
