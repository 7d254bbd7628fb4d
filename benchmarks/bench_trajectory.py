"""Cost of the walk-with-SGD instruments (Xing et al. 2018).

``step_interpolation_cost_vs_10_evals``: one step interpolation at 10 points on the whole
digits training set (1,437 images; :func:`sgdlab.measure.walk.segment_losses` +
:func:`~sgdlab.measure.walk.analyze_segment`, what :class:`StepInterpolationCallback` does per
measured step, θ_{t+1} snapshot included) over 10 plain full-set loss evaluations
(``loss_fn(model(x), y)`` under ``no_grad`` in eval mode): the same number of forward passes,
so the points are ``spacing="inclusive"`` (the two iterates among the 10; the callback's
default, 10 points between the iterates plus the two, evaluates 12). MLP 64-100-100-10,
float32, CPU. Both the default path (on CPU: the parameters written in place, one forward per
point) and the vmap-batched path are timed; the figure is the default path. Both paths' loss
at α = 1 (θ_{t+1}) must equal the plain evaluation's (relative 1e-4) before anything is timed.

``dynamics_callbacks_overhead``: ``train()`` with a :class:`DynamicsCallback` logging the
consecutive-gradient cosine, distance from init, parameter and update norms at *every* step,
over ``train()`` without callbacks: MLP 64-128-10, SGD + momentum, batch 32, 5 epochs
(225 steps), evaluation only at the start and the end. The callback's cost is O(d) per step
(two flat copies, a few reductions, one read-back), so this small step is the worst case; the
same ratio at batch 128 is printed for context. The callback only observes: both runs must
end at the same parameters, bit for bit, before anything is timed.

Timed regions alternate between the two sides; figures are medians of the paired ratios
(robust to the load drifting on a shared machine) of the calling thread's CPU time
(``time.thread_time``; one torch thread, so all the work runs on it: on a shared machine
wall time mostly measures the other tenants).
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from _timing import relative_difference

GOALS = {
    "step_interpolation_cost_vs_10_evals": "<= 1.2",
    "dynamics_callbacks_overhead": "<= 1.3",
}

REPEATS = 21
POINTS = 10


def _timed(fn) -> float:
    t = time.thread_time()
    fn()
    return time.thread_time() - t


def interpolation_tasks(model, loss_fn, x, y, theta_t, points: int = POINTS):
    """(10 plain evaluations, ``interp(vectorize)`` -> one step interpolation at 10 points):
    both sides run ``points`` forward passes over (x, y)."""
    from sgdlab.measure.walk import analyze_segment, segment_alphas, segment_losses
    from sgdlab.operators.params import params_vector

    alphas = segment_alphas(points, spacing="inclusive")   # the iterates among the points

    @torch.no_grad()
    def plain():
        return [float(loss_fn(model(x), y)) for _ in range(points)]

    def interp(vectorize):
        def f():
            losses = segment_losses(model, loss_fn, (x, y), theta_t, params_vector(model),
                                    alphas, vectorize=vectorize)
            analyze_segment(alphas, losses)
            return losses
        return f

    return plain, interp


def step_interpolation_ratio(repeats: int = REPEATS) -> float:
    from sgdlab.data import load_dataset
    from sgdlab.models import build_model
    from sgdlab.operators.params import params_vector

    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_outputs, widths=[100, 100])
    model.eval()
    loss_fn = nn.CrossEntropyLoss()
    x, y = data.x_train, data.y_train
    theta_t = params_vector(model)
    with torch.no_grad():  # θ_{t+1}: a plausible SGD step away
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    plain, interp = interpolation_tasks(model, loss_fn, x, y, theta_t)
    ref = torch.tensor(plain()[-1])                 # warm-up, and the checks: the same loss at
    for vec in (None, True):                        # the segment's end θ_{t+1} as the plain ones
        relative_difference(interp(vec)()[-1], ref, f"interpolation (vectorize={vec}) at α = 1")
    tp, ti, tv = [], [], []
    for _ in range(repeats):
        tp.append(_timed(plain))
        ti.append(_timed(interp(None)))
        tv.append(_timed(interp(True)))
    mp, mi, mv = statistics.median(tp), statistics.median(ti), statistics.median(tv)
    ratio = statistics.median(i / p for i, p in zip(ti, tp))
    print(f"  step interpolation: MLP 64-100-100-10 ({sum(p.numel() for p in model.parameters())}"
          f" params), {len(x)} examples, float32, cpu, {torch.get_num_threads()} thread(s), "
          f"{POINTS} points (iterates included), {repeats} repeats")
    print(f"    10 plain evals {1e3 * mp:.1f} ms; interpolation (default, loop) {1e3 * mi:.1f} ms"
          f"; vmap-batched {1e3 * mv:.1f} ms; median paired ratios: loop {ratio:.3f}x, vmap "
          f"{statistics.median(v / p for v, p in zip(tv, tp)):.3f}x")
    return ratio


def dynamics_overhead_ratio(repeats: int = REPEATS, batch: int = 32) -> float:
    from sgdlab.data import load_dataset
    from sgdlab.models import build_model
    from sgdlab.operators.params import params_vector
    from sgdlab.train.callbacks import Schedule
    from sgdlab.train.instruments.dynamics import DynamicsCallback
    from sgdlab.train.loop import train

    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model0 = build_model("mlp", data.input_shape, data.num_outputs, widths=[128])
    loss_fn = nn.CrossEntropyLoss()

    def run(instrumented: bool):
        def f():
            model = copy.deepcopy(model0)
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            cbs = [DynamicsCallback(Schedule.every(1))] if instrumented else []
            train(model, loss_fn, data, opt, epochs=5, batch_size=batch, callbacks=cbs,
                  eval_every=0, progress=False)
            return model
        return f

    bare, instrumented = run(False)(), run(True)()  # warm-up, and the check: the same training
    relative_difference(params_vector(instrumented), params_vector(bare),
                        "the instrumented run's final parameters", rtol=0.0)
    tb, ti = [], []
    for _ in range(repeats):
        tb.append(_timed(run(False)))
        ti.append(_timed(run(True)))
    mb, mi = statistics.median(tb), statistics.median(ti)
    ratio = statistics.median(i / b for i, b in zip(ti, tb))
    steps = 5 * -(-len(data.x_train) // batch)
    print(f"  dynamics callbacks: MLP 64-128-10, digits 1437 train, batch {batch}, 5 epochs "
          f"({steps} steps), float32, cpu, {torch.get_num_threads()} thread(s), {repeats} repeats")
    print(f"    train() {1e3 * mb:.1f} ms; with DynamicsCallback(every step) {1e3 * mi:.1f} ms "
          f"({1e6 * (mi - mb) / steps:.0f} us per step); median paired ratio {ratio:.3f}x")
    return ratio


def run() -> dict[str, float | None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {"step_interpolation_cost_vs_10_evals": step_interpolation_ratio(),
               "dynamics_callbacks_overhead": dynamics_overhead_ratio()}
        dynamics_overhead_ratio(batch=128)  # context only: the same O(d) cost on a larger step
        return out
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
