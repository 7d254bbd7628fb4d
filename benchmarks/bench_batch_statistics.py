"""Batch statistics of one mini-batch (norm, inner-product and orthogonality tests, mean GSNR,
EB criterion, CABS batch size): sgdlab's ``batch_statistics`` (Gram matrix, mean and squared
sums of the factored per-sample gradients) against Cockpit's route (BackPACK's ``BatchGrad``
in the step's backward pass, then the same formulas on the per-parameter (B, ...) gradients)
and against ``torch.func.vmap(grad)`` + the same formulas.

    python benchmarks/run.py --only bench_batch_statistics      # about a minute, one thread

Problems as in ``bench_peers.py`` (digits MLP, the large MLP, the CNN with and without batch
norm in eval mode) on their first B = 128 samples, float32, CPU, cross-entropy, one thread; the
three alternate in one process (median of 5 of the calling thread's CPU time). Every route
includes its forward pass; GSNR and EB use Cockpit's ε = 1e-5 in all three, so the six values
are the same quantities (sgdlab's and BackPACK's checked against vmap's first, to a relative
1e-4; sgdlab's difference printed).
``batch_statistics_<problem>_speedup_vs_backpack`` = the BackPACK route's time over sgdlab's,
``..._vs_vmap`` likewise. Cockpit itself (cockpit-for-pytorch 1.0.2) is not run: it imports
``pkg_resources``, gone from setuptools ≥ 81; its quantities are these formulas on BackPACK's
``BatchGrad``.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from _timing import against_reference, one_thread, relative_difference
from bench_peers import PROBLEMS, problem

BATCH = 128
EPS = 1e-5
GOALS = {f"batch_statistics_{p}_speedup_vs_{peer}": "report"
         for p in PROBLEMS for peer in ("backpack", "vmap")}


def _formulas(grads: list[torch.Tensor], loss: torch.Tensor, lr: float) -> torch.Tensor:
    """The six statistics from per-parameter per-sample gradients (B, ...), as Cockpit writes
    them (sums of squared norms and projections, parameter by parameter)."""
    b = grads[0].shape[0]
    flat = [g.reshape(b, -1) for g in grads]
    mean = [f.mean(0) for f in flat]
    gn2 = sum((m * m).sum() for m in mean)
    sq = sum((f * f).sum(1) for f in flat)                        # ‖g_n‖²
    proj = sum(f @ m for f, m in zip(flat, mean))                 # g_nᵀ ḡ
    var_pop = torch.cat([(f * f).mean(0) - m * m for f, m in zip(flat, mean)])
    mean_sq = torch.cat(mean) ** 2
    norm = ((sq.sum() - b * gn2) / (b - 1) / b / gn2).sqrt()
    inner = ((1 / (b * (b - 1))) * ((proj ** 2).sum() / gn2 ** 2 - b)).sqrt()
    ortho = ((1 / (b * (b - 1))) * (sq / gn2 - proj ** 2 / gn2 ** 2).sum()).sqrt()
    gsnr = (mean_sq / (var_pop + EPS)).mean()
    eb = 1 - b * (mean_sq / (var_pop * b / (b - 1) + EPS)).mean()
    cabs = lr * (sq.sum() - b * gn2) / (b * loss)
    return torch.stack([norm, inner, ortho, gsnr, eb, cabs]).detach().double()


def measure(name: str, repeats: int = 5) -> dict[str, float | None]:
    from sgdlab.measure import batch_statistics

    model, x, y, desc = problem(name)
    x, y = x[:BATCH], y[:BATCH]
    loss_fn, lr = nn.CrossEntropyLoss(), 0.1

    def ours() -> torch.Tensor:
        st = batch_statistics(model, loss_fn, (x, y), lr=lr, epsilon=EPS)
        return torch.tensor([st.norm_test, st.inner_product_test, st.orthogonality_test,
                             st.mean_gsnr, st.eb_criterion, st.cabs_batch_size],
                            dtype=torch.float64)

    params = {k: p.detach() for k, p in model.named_parameters()}

    def vmapped() -> torch.Tensor:
        def one(p, xi, yi):
            out = torch.func.functional_call(model, p, (xi[None],))
            return loss_fn(out, yi[None])

        g = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(params, x, y)
        with torch.no_grad():
            loss = loss_fn(model(x), y)
        return _formulas(list(g.values()), loss, lr)

    tasks = {"sgdlab": ours, "vmap": vmapped}
    try:
        from backpack import backpack, extend
        from backpack.extensions import BatchGrad

        bp_model, bp_loss = extend(copy.deepcopy(model)), extend(nn.CrossEntropyLoss())

        def backpacked() -> torch.Tensor:
            bp_model.zero_grad()
            loss = bp_loss(bp_model(x), y)
            with backpack(BatchGrad()), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                loss.backward()
            # BatchGrad holds ∇ℓ_n / B for the mean loss: Cockpit rescales by B
            return _formulas([BATCH * p.grad_batch for p in bp_model.parameters()], loss, lr)

        tasks["BackPACK"] = backpacked
    except ImportError:
        print("  BackPACK not installed: its route skipped")
    ref = vmapped()
    if "BackPACK" in tasks:      # the peer's route computes the same six values too
        relative_difference(tasks["BackPACK"](), ref, f"{name}, BackPACK")
    med = against_reference(tasks, "sgdlab", ref, repeats, f"{name} ({desc}, B = {len(x)})")
    out: dict[str, float | None] = {
        f"batch_statistics_{name}_speedup_vs_vmap": med["vmap"] / med["sgdlab"]}
    # without BackPACK its figure reads skipped (None), not missing
    out[f"batch_statistics_{name}_speedup_vs_backpack"] = (
        med["BackPACK"] / med["sgdlab"] if "BackPACK" in med else None)
    return out


def run(only: str = "") -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    with one_thread():
        for name in PROBLEMS:
            figures = [f for f in GOALS if f.startswith(f"batch_statistics_{name}_speedup")]
            if not only or only in "bench_batch_statistics" or any(only in f for f in figures):
                out.update(measure(name))
    return out


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
