"""What a Ray sweep run pays to send each checkpoint to the driver.

A Ray task (a local instance, ``ray.init(num_cpus=2)``; one torch thread, float32, CPU)
builds a model, takes one SGD step with momentum (so the optimizer holds a buffer per
parameter, as a training run's does) and writes ``REPEATS`` checkpoints of it with
``save_checkpoint`` (the weights changed between them), each sent through the sweep's own
path: :class:`~sgdlab.experiments.worker.CheckpointShipper` to the backend's ``_Inbox``
actor, the task waiting for it to arrive. The driver then takes them from the actor and
writes each one into a run folder with :func:`~sgdlab.experiments.worker.apply_checkpoint`
(atomically, synced to disk). Figures per checkpoint, medians: its size, the time the task
waits to send it (``ship``: reading the file and putting it to the actor), the driver's time
to take it from the actor (all of them in one call, divided) and to write it; ``save``, the
loop's own write of the checkpoint in the task, for scale. Models: the 784-100-100-10 MLP
(the η/S grid's at cpu scale) and Chaudhari's All-CNN (CIFAR-10, 1.7 M parameters, paper
scale).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

GOALS = {"ray_checkpoint_ship_ms_mlp": "(informative)",
         "ray_checkpoint_ship_ms_allcnn": "(informative)"}
REPEATS = 7
MODELS = {"mlp": ("mlp", (784,), {"widths": [100, 100]}),
          "allcnn": ("allcnn", (3, 32, 32), {})}


def _ship_from_a_task(name: str, inbox) -> dict:
    """In a Ray task: checkpoints of ``name`` sent to ``inbox``; the task's timings."""
    import ray
    import torch

    from sgdlab.experiments.worker import CheckpointShipper
    from sgdlab.models.registry import build_model
    from sgdlab.train.checkpoint import save_checkpoint

    torch.set_num_threads(1)
    model_name, shape, opts = MODELS[name]
    torch.manual_seed(0)
    model = build_model(model_name, shape, 10, **opts)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(8, *shape), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()

    def send(shipped):
        ray.get(inbox.put_checkpoint.remote("bench", shipped))

    save, ship = [], []
    with tempfile.TemporaryDirectory(prefix="sgdlab-bench-ckpt-") as tmp:
        shipper = CheckpointShipper(Path(tmp), send)
        path = Path(tmp) / "checkpoint" / "last.pt"
        for i in range(REPEATS):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1e-3)
            t = time.perf_counter()
            save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                   "loop": {"step": i, "stored_rows": i}})
            save.append(time.perf_counter() - t)
            t = time.perf_counter()
            shipper(path)
            ship.append(time.perf_counter() - t)
        size = path.stat().st_size
    return {"save": save, "ship": ship, "bytes": size,
            "params": sum(p.numel() for p in model.parameters())}


def run() -> dict[str, float | None]:
    try:
        import ray
    except ImportError:
        print("ray is not installed: python -m pip install -c constraints.txt '.[ray]'")
        return dict.fromkeys(GOALS)
    from sgdlab.experiments.ray_backend import _inbox_class
    from sgdlab.experiments.worker import apply_checkpoint

    out: dict[str, float | None] = {}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        inbox = _inbox_class(ray).remote()
        task = ray.remote(_ship_from_a_task)
        for name in MODELS:
            got = ray.get(task.remote(name, inbox))
            t = time.perf_counter()
            items = ray.get(inbox.take.remote())   # all of them: the task has ended
            take = [(time.perf_counter() - t) / len(items)]
            write = []
            with tempfile.TemporaryDirectory(prefix="sgdlab-bench-ckpt-") as tmp:
                for _, _, shipped in items:
                    t = time.perf_counter()
                    apply_checkpoint(tmp, shipped)
                    write.append(time.perf_counter() - t)
            ms = {k: 1e3 * statistics.median(v) for k, v in (
                ("save", got["save"]), ("ship", got["ship"]), ("take", take),
                ("write", write))}
            print(f"{name}: {got['params']:,} parameters, checkpoint {got['bytes']:,} bytes; "
                  f"ms per checkpoint (median of {REPEATS}): save {ms['save']:.1f}, "
                  f"ship {ms['ship']:.1f} (max {1e3 * max(got['ship']):.1f}), driver "
                  f"takes {ms['take']:.1f} and writes {ms['write']:.1f}")
            out[f"ray_checkpoint_ship_ms_{name}"] = ms["ship"]
    finally:
        ray.shutdown()
    return out


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
