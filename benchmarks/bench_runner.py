"""The training loop's overhead over a bare hand-written PyTorch loop.

Both loops train the same MLP (64-128-10, ReLU, float32, CPU, one thread) with SGD + momentum
on the embedded digits data (1,437 training images, batch 32, without replacement, 5 epochs =
225 steps) and evaluate train and test loss/accuracy once before and once after training.
``train()`` runs without store, checkpoints or progress bar; the bare loop has no divergence
check, no loss read-back and no callbacks. Both draw the same batches: after the first
(untimed) round the two models must hold the same parameters, bit for bit. Timed regions
alternate between the two loops and the figure is the ratio of their medians.

Time is the calling thread's CPU time (``time.thread_time``; with one torch thread all the
work, backward included, runs on it): on a shared machine wall time mostly measures the other
tenants. Wall-time medians are printed too.
"""
from __future__ import annotations

import copy
import statistics

import torch
from torch import nn

from _timing import one_thread, relative_difference, timed

GOALS = {"runner_overhead_vs_bare_loop": "<= 1.05"}

EPOCHS, BATCH, REPEATS, WIDTH, LR = 5, 32, 25, 128, 0.05


def _setup():
    from sgdlab.data import load_dataset
    from sgdlab.models import build_model

    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_outputs, widths=[WIDTH])
    return data, model


def _fresh(model0: nn.Module) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = copy.deepcopy(model0)
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


@torch.no_grad()
def _bare_eval(model, loss_fn, x, y):
    model.eval()
    out = model(x)
    res = (loss_fn(out, y).item(), (out.argmax(1) == y).float().mean().item())
    model.train()
    return res


def bare_loop(model, opt, loss_fn, data, seed=0) -> None:
    x, y = data.x_train, data.y_train
    n = len(x)
    g = torch.Generator().manual_seed(seed)
    _bare_eval(model, loss_fn, x, y), _bare_eval(model, loss_fn, data.x_test, data.y_test)
    for _ in range(EPOCHS):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    _bare_eval(model, loss_fn, x, y), _bare_eval(model, loss_fn, data.x_test, data.y_test)


def sgdlab_loop(model, opt, loss_fn, data, seed=0) -> None:
    from sgdlab.train import train
    train(model, loss_fn, data, opt, epochs=EPOCHS, batch_size=BATCH, seed=seed, eval_every=0,
          progress=False)


def run() -> dict[str, float | None]:
    from sgdlab.operators.params import params_vector

    with one_thread():
        data, model0 = _setup()
        loss_fn = nn.CrossEntropyLoss()
        print(f"model mlp 64-{WIDTH}-10 ({sum(p.numel() for p in model0.parameters())} params), "
              f"digits train {tuple(data.x_train.shape)}, batch {BATCH}, {EPOCHS} epochs, "
              f"float32, cpu, threads 1, {REPEATS} alternating repeats, medians")
        cpu = {"bare": [], "sgdlab": []}
        wall = {"bare": [], "sgdlab": []}
        fns = {"bare": bare_loop, "sgdlab": sgdlab_loop}
        final = {}
        for r in range(REPEATS + 1):
            for name in (("bare", "sgdlab") if r % 2 else ("sgdlab", "bare")):
                model, opt = _fresh(model0)
                t, w = timed(lambda: fns[name](model, opt, loss_fn, data))
                if r > 0:  # the first round warms up both
                    cpu[name].append(t)
                    wall[name].append(w)
                else:
                    final[name] = params_vector(model)
            if r == 0:  # the same training: the same batches, steps and final parameters
                relative_difference(final["sgdlab"], final["bare"],
                                    "train()'s final parameters", rtol=0.0)
        med = {k: statistics.median(v) for k, v in cpu.items()}
        medw = {k: statistics.median(v) for k, v in wall.items()}
        print(f"median CPU time: bare {med['bare'] * 1e3:.1f} ms, train() "
              f"{med['sgdlab'] * 1e3:.1f} ms; wall: bare {medw['bare'] * 1e3:.1f} ms, train() "
              f"{medw['sgdlab'] * 1e3:.1f} ms (wall ratio {medw['sgdlab'] / medw['bare']:.3f})")
        return {"runner_overhead_vs_bare_loop": med["sgdlab"] / med["bare"]}


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
