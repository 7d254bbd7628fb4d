"""Loss planes: sgdlab's ``loss_surface`` (loss only, ``accuracy=False``) against
loss-landscapes 3.0.6's ``random_plane`` (a filter-normalised plane of the same size, each
library drawing its own; sgdlab's is drawn outside the timed region: 0.2 ms), and a bare loop
of forward passes (the floor: one evaluation of the training loss per point).

    python benchmarks/run.py --only bench_surface      # about a minute, one thread

Problems: the digits MLP 64-64-32-10 on its 1,437 training images, 21 x 21 points; the CNN of
``bench_peers.py`` on 512 MNIST images, 9 x 9 points; float32, CPU, one thread. Medians of 5 of
the calling thread's CPU time, the three alternating in one process, after a check that
sgdlab's loss at the plane's centre is the bare loop's (to a relative 1e-4).
``loss_surface_<problem>_speedup_vs_loss_landscapes`` = loss-landscapes' time over sgdlab's
(skipped without loss-landscapes, the ``[bench]`` extra); ``..._overhead_vs_bare_loop`` =
sgdlab's time over the bare loop's.
"""
from __future__ import annotations

import torch
from torch import nn

from _timing import alternating_medians, one_thread, relative_difference

# both libraries are a loop of forward passes: parity is what there is to reach
GOALS = {f"loss_surface_{p}_{k}": "report" for p in ("digits_mlp", "cnn")
         for k in ("speedup_vs_loss_landscapes", "overhead_vs_bare_loop")}


def _problem(name: str):
    from sgdlab.data import load_dataset

    torch.manual_seed(0)
    if name == "digits_mlp":
        d = load_dataset("digits", flatten=True, seed=0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                              nn.Linear(32, 10))
        return model.eval(), d.x_train, d.y_train, 21
    from bench_peers import problem

    model, x, y, _ = problem("cnn")
    return model.eval(), x, y, 9


def measure(name: str, repeats: int = 5) -> dict[str, float | None]:
    from sgdlab.measure import loss_surface, random_direction

    model, x, y, steps = _problem(name)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    plane = [random_direction(model, generator=g) for _ in range(2)]

    def ours():
        return loss_surface(model, loss_fn, (x, y), plane, steps=steps, accuracy=False)

    @torch.no_grad()
    def bare():
        return [float(loss_fn(model(x), y)) for _ in range(steps * steps)]

    tasks = {"sgdlab": ours}
    try:
        import loss_landscapes
        import loss_landscapes.metrics as metrics

        def theirs():
            return loss_landscapes.random_plane(model, metrics.Loss(loss_fn, x, y), distance=1,
                                                steps=steps, normalization="filter",
                                                deepcopy_model=True)

        tasks["loss-landscapes"] = theirs
    except ImportError:
        print("  loss-landscapes not installed: its figure skipped")
    tasks["bare loop"] = bare
    # the same loss evaluation: sgdlab's grid centre (steps odd: coordinate 0) is θ itself
    mid = steps // 2
    err = relative_difference(torch.tensor(ours().train_loss[mid][mid]), torch.tensor(bare()[0]),
                              f"{name}, sgdlab's loss at the plane's centre")
    med = alternating_medians(tasks, repeats)
    print(f"  {name} ({steps} x {steps} points, N = {len(x)}): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in med.items())
          + f" (centre loss vs the bare loop's: rel. difference {err:.1e})", flush=True)
    peer = med.get("loss-landscapes")
    return {f"loss_surface_{name}_speedup_vs_loss_landscapes":
            None if peer is None else peer / med["sgdlab"],
            f"loss_surface_{name}_overhead_vs_bare_loop": med["sgdlab"] / med["bare loop"]}


def run(only: str = "") -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    with one_thread():
        for name in ("digits_mlp", "cnn"):
            figures = [f for f in GOALS if f.startswith(f"loss_surface_{name}_")]
            if not only or only in "bench_surface" or any(only in f for f in figures):
                out.update(measure(name))
    return out


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
