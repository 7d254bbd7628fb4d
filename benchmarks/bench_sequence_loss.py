"""Cross-entropy over per-position targets: (N, V, T) logits against (N, T) token indices, as
the recurrent models of ``sgdlab/models/recurrent.py`` give them, computed over the class
dimension 1 (``nn.CrossEntropyLoss()(logits, y)``, the plain form) or on the flattened
(N·T, V) rows (``logits.transpose(1, 2).reshape(-1, V)`` against ``y.reshape(-1)``).

    python benchmarks/run.py --only sequence_loss      # about 10 seconds, one thread

For each shape and two memory layouts of the logits (float32, CPU, one thread; median of 15
rounds that alternate the contenders, calling thread's CPU time; forward + backward of the
loss alone, down to a leaf that requires gradients; the loss and the gradient of each
contender are checked to agree with the plain form's to a relative 1e-5 first), in one process:

- layout ``view``: the logits are the transpose of a contiguous (N, T, V) tensor, as the
  recurrent models return them (``decoder(out).transpose(1, 2)``), so the class dimension is
  the innermost in memory and the flattened rows are a view; layout ``contiguous``: the
  logits are a contiguous (N, V, T) tensor, and flattening them copies;
- ``sequence_loss_<shape>_<layout>_flat_speedup``: the plain form's time over the flattened
  form's;
- ``sequence_loss_<shape>_<layout>_registry_speedup``: the plain form's time over that of
  the loss :func:`sgdlab.losses.build_loss` gives for token data
  (:class:`sgdlab.train.losses.SequenceCrossEntropyLoss`: the flattened form where the class
  dimension is the innermost, the plain one otherwise).

- ``sequence_loss_<model>_step_speedup``: the time of one forward + backward pass of a
  recurrent model and the plain loss (a training step's gradient) over that with the
  registry's loss: what the loss's form is worth to training. ``char_lstm``: the ``char-lstm``
  config's model (1 x 64 units, V = 100, N = 50, T = 50); ``ptb_lstm_small``: ``ptb-lstm``
  with Zaremba et al.'s small options (2 x 200 units, V = 10,000, N = 20, T = 35).

The shapes are those of the ``char-lstm`` config (V about 100 characters, T = 50, batches of
64 and 128) and of the ``ptb-lstm`` small model (V = 10,000 words, T = 35, N = 20). Absolute
times are noise on a shared machine; the ratios, taken in one process, are the figures.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from _timing import alternating_medians, one_thread, relative_difference

RTOL = 1e-5
#: name -> (N, V, T)
SHAPES = {"char_n64": (64, 100, 50), "char_n128": (128, 100, 50), "ptb_small": (20, 10000, 35)}
LAYOUTS = ("view", "contiguous")
GOALS = {}
for _s in SHAPES:
    GOALS[f"sequence_loss_{_s}_view_flat_speedup"] = "report"
    GOALS[f"sequence_loss_{_s}_view_registry_speedup"] = ">= 1.2"
    GOALS[f"sequence_loss_{_s}_contiguous_flat_speedup"] = "report"
    GOALS[f"sequence_loss_{_s}_contiguous_registry_speedup"] = ">= 0.9"
#: name -> (registry model, options, N, V, T)
MODELS = {"char_lstm": ("char-lstm", {"hidden": 64, "layers": 1}, 50, 100, 50),
          "ptb_lstm_small": ("ptb-lstm", "ZAREMBA_SMALL", 20, 10000, 35)}
for _m in MODELS:
    GOALS[f"sequence_loss_{_m}_step_speedup"] = ">= 1"


def _flat(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.transpose(1, 2).reshape(-1, logits.shape[1]), y.reshape(-1))


def measure(name: str, layout: str, repeats: int = 15) -> dict[str, float]:
    from sgdlab.train.losses import SequenceCrossEntropyLoss

    n, v, t = SHAPES[name]
    g = torch.Generator().manual_seed(0)
    leaf = torch.randn(*((n, t, v) if layout == "view" else (n, v, t)), generator=g)
    leaf.requires_grad_()
    y = torch.randint(0, v, (n, t), generator=g)
    forms = {"plain": nn.CrossEntropyLoss(), "flat": _flat,
             "registry": SequenceCrossEntropyLoss()}

    def task(fn):
        def call():
            leaf.grad = None
            loss = fn(leaf.transpose(1, 2) if layout == "view" else leaf, y)
            loss.backward()
            return loss.detach(), leaf.grad
        return call

    tasks = {k: task(fn) for k, fn in forms.items()}
    ref = tasks["plain"]()
    errs = []
    for k in ("flat", "registry"):
        got = tasks[k]()
        errs += [max(relative_difference(a.reshape(1, -1), b.reshape(1, -1), f"{name} {k} {w}",
                                         RTOL) for a, b, w in zip(got, ref, ("loss", "grad")))]
    med = alternating_medians(tasks, repeats)
    print(f"  {name}, {layout} (N = {n}, V = {v}, T = {t}): "
          + ", ".join(f"{k} {1e3 * s:.2f} ms" for k, s in med.items())
          + f" (rel. max differences {', '.join(f'{e:.1e}' for e in errs)})", flush=True)
    return {f"sequence_loss_{name}_{layout}_flat_speedup": med["plain"] / med["flat"],
            f"sequence_loss_{name}_{layout}_registry_speedup": med["plain"] / med["registry"]}


def measure_step(name: str, repeats: int = 15) -> dict[str, float]:
    from sgdlab.models import recurrent     # the package registers the models
    from sgdlab.models.registry import build_model
    from sgdlab.train.losses import SequenceCrossEntropyLoss

    model_name, options, n, v, t = MODELS[name]
    if isinstance(options, str):
        options = getattr(recurrent, options)
    torch.manual_seed(0)
    model = build_model(model_name, (t,), v, **options)
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randint(0, v, (n, t), generator=g) for _ in range(2))
    params = list(model.parameters())

    def task(loss_fn):
        return lambda: torch.autograd.grad(loss_fn(model(x), y), params)

    tasks = {"plain": task(nn.CrossEntropyLoss()), "registry": task(SequenceCrossEntropyLoss())}
    ref, got = tasks["plain"](), tasks["registry"]()
    err = relative_difference(torch.cat([r.reshape(-1) for r in got]),
                              torch.cat([r.reshape(-1) for r in ref]), f"{name} gradient", 1e-4)
    med = alternating_medians(tasks, repeats)
    print(f"  {name} step (N = {n}, V = {v}, T = {t}): "
          + ", ".join(f"{k} {1e3 * s:.1f} ms" for k, s in med.items())
          + f" (rel. max difference of the gradients {err:.1e})", flush=True)
    return {f"sequence_loss_{name}_step_speedup": med["plain"] / med["registry"]}


def run(only: str = "") -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    with one_thread():
        for name in SHAPES:
            for layout in LAYOUTS:
                figures = [f for f in GOALS if f"_{name}_{layout}_" in f]
                if not only or only in "bench_sequence_loss" or any(only in f for f in figures):
                    out.update(measure(name, layout))
        for name in MODELS:
            figure = f"sequence_loss_{name}_step_speedup"
            if not only or only in "bench_sequence_loss" or only in figure:
                out.update(measure_step(name))
    return out


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
