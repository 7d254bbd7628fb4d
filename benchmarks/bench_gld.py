"""Per-step cost of GD + structured noise (Zhu et al.'s GLD), in units of one full-batch gradient.

Setting (Zhu et al. 2019's noisy-label CNN scale): a small CNN (conv 1→8 5x5, max-pool,
conv 8→8 5x5, max-pool, linear → 10; d = 3,106 parameters) on N = 512 synthetic 28x28 images,
float32, CPU, one torch thread. Statistics are refreshed every f = 10 steps, k = 10 eigenpairs,
noise batch size m = 32.

The cost of one GLD step is

    (T_grad + T_noise + T_refresh / f) / T_grad

with T_grad one forward + backward of the mean loss over all N examples (what the training loop
spends per full-batch step), T_noise the draw of ε plus the parameter update (``opt.step()`` on
a step without refresh) and T_refresh one recomputation of the statistics
(:meth:`StructuredNoiseGD.refresh_statistics`: per-sample gradients and Σ, or Lanczos on the
Hessian). Each term is the median over repeats of the calling thread's CPU time.
``gd-isotropic`` (Xing et al.'s control) fixes its variance at initialisation: its one
refresh is printed but not part of the per-step cost.

Figures ``gld_<variant>_cost_in_gradients`` use the default Gram-trick / low-rank sampling;
``gld_<variant>_dense_cost_in_gradients`` the same variant with ``sampling="dense"`` (Σ formed as
d x d, its eigendecomposition / square root and d x d matrix-vector draws) — reported for the
variants whose noise is a function of the per-sample factor (leading, sgd-like), where the Gram
trick is what avoids the d x d work. ``gld_hessian_cost_in_gradients`` estimates the Hessian
(and Tr Σ for σ_H²) on a random ``estimation_size = 128`` subset redrawn at every refresh (a
documented option of the optimizer); ``gld_hessian_fullset_cost_in_gradients`` uses all N.
"""
from __future__ import annotations

import torch
from torch import nn

from _timing import median_timed, one_thread

FIGS = ["gd", "gld_const", "gld_dynamic", "gld_diagonal", "gld_leading", "gld_hessian",
        "gld_sgd_like", "gd_isotropic"]
GOALS = {f"{v}_cost_in_gradients": "report" for v in FIGS}
GOALS.update({
    "gld_leading_cost_in_gradients": "<= 3",
    "gld_hessian_cost_in_gradients": "<= 3",
    "gld_hessian_fullset_cost_in_gradients": "report",
    "gld_leading_dense_cost_in_gradients": "report",
    "gld_sgd_like_dense_cost_in_gradients": "report",
})

N, M, K, F = 512, 32, 10, 10


def _median(fn, repeats: int) -> float:
    """Median CPU seconds; warm-up first (expensive single-shot terms skip it)."""
    return median_timed(fn, repeats, warmup=repeats > 1)[0]


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 5),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 16, 10))
    return model, nn.CrossEntropyLoss(), (x, y)


VARIANTS = {
    "gd": ("gd", {}),
    "gld_const": ("gld-const", dict(sigma=1e-3)),
    "gld_dynamic": ("gld-dynamic", dict(noise_batch_size=M)),
    "gld_diagonal": ("gld-diagonal", dict(noise_batch_size=M)),
    "gld_leading": ("gld-leading", dict(noise_batch_size=M, k=K)),
    "gld_hessian": ("gld-hessian", dict(noise_batch_size=M, k=K, estimation_size=128)),
    "gld_hessian_fullset": ("gld-hessian", dict(noise_batch_size=M, k=K)),
    "gld_sgd_like": ("gld-sgd-like", dict(noise_batch_size=M)),
    "gd_isotropic": ("gd-isotropic", dict(variance_factor=1.0)),
    "gld_leading_dense": ("gld-leading", dict(noise_batch_size=M, k=K, sampling="dense")),
    "gld_sgd_like_dense": ("gld-sgd-like", dict(noise_batch_size=M, sampling="dense")),
}


def run() -> dict[str, float | None]:
    from sgdlab.optim import build_optimizer_for

    with one_thread():
        model, loss_fn, data = _problem()
        x, y = data
        d = sum(p.numel() for p in model.parameters())
        print(f"model: small CNN, d = {d}; data: N = {N} synthetic 28x28, float32, cpu, "
              f"1 thread; refresh every {F} steps, k = {K}, m = {M}")

        def grad():
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()

        t_grad = _median(grad, 7)
        print(f"full-batch gradient: {t_grad * 1e3:.1f} ms (CPU time, median of 7)")
        out: dict[str, float | None] = {}
        for fig, (name, hyper) in VARIANTS.items():
            opt = build_optimizer_for(name, model, loss_fn=loss_fn, data=data, lr=1e-3,
                                      refresh_every=10 ** 9, **hyper)
            dense = hyper.get("sampling") == "dense"
            grad()
            slow = dense or fig == "gld_hessian_fullset"
            t_refresh = _median(opt.refresh_statistics, 1 if slow else 3) \
                if name != "gd" else 0.0
            # the statistics of the timed refresh stay in place; refresh_every = 10**9: no more
            opt._t = 1                                     # not a refresh step
            saved = [p.detach().clone() for p in model.parameters()]
            t_noise = _median(opt.step, 5)                 # draw + update, no refresh
            with torch.no_grad():
                for p, s in zip(model.parameters(), saved):
                    p.copy_(s)
            # gd-isotropic's variance is fixed at initialisation: refreshed once, not every F
            share = 0.0 if opt.noise == "isotropic-init" else 1 / F
            cost = (t_grad + t_noise + t_refresh * share) / t_grad
            when = ("none" if name == "gd" else "once, at initialisation" if share == 0
                    else f"every {F} steps")
            print(f"  {fig}: refresh {t_refresh / t_grad:.2f} grads ({when}), "
                  f"draw+update {t_noise / t_grad:.3f} grads -> {cost:.3f} grads/step")
            out[f"{fig}_cost_in_gradients"] = cost
        return out


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
