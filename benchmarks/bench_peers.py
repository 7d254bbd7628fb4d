"""sgdlab against every curvature / per-sample-gradient library, task by task, at equal accuracy.

Problems (float32, CPU, one torch thread, cross-entropy, models at initialisation, seed 0):

- ``digits_mlp``: MLP 64-32-10 (ReLU) on the 1,437 training images of ``digits``;
- ``large_mlp``: MLP 784-512-512-10 (ReLU, d = 669,706) on 1,024 images of ``mnist_small``;
- ``cnn``: conv8-pool-conv16-pool-fc10 (3x3 convolutions, ReLU, 2x2 max pooling) on 512
  images of ``mnist_small`` (28x28);
- ``cnn_bn``: the same CNN with BatchNorm2d after each convolution, in eval mode (running
  statistics from one pass over the batch in train mode).

Peers (each skipped, and said so, when not installed or when it fails): PyHessian 0.1,
hessian-eigenthings 1.0.0a5, curvlinops-for-pytorch 3.0.1 (+ scipy ``eigsh``), BackPACK 1.7.1,
and plain ``torch.func`` (``vmap(grad)``) for per-sample gradients.

Figures, for each problem P (``<task>_<P>_speedup_vs_best_peer`` = the best peer's time over
sgdlab's, both at the same accuracy; the peer is named in the printed line):

- ``top1_P`` / ``top5_P``: the 1 / 5 largest Hessian eigenvalues with worst relative error
  ≤ 1e-3 against a reference (sgdlab Lanczos, float64 recurrence, residual tol 1e-6: eigenvalue
  errors ~r²/gap < 1e-9). Each library's
  own tolerance knob is tightened along a ladder until the target is met; the first setting
  that meets it is timed (sgdlab: ``lanczos`` tol on its default residual rule, which did
  better on this ladder than ``criterion="error_bound"``: digits top-5 1.98x vs 1.67x, the
  CNNs equal; PyHessian: power iteration tol and maxIter;
  hessian-eigenthings: Lanczos steps, full re-orthogonalisation; curvlinops: scipy ``eigsh``
  tol on ``HessianLinearOperator``).
- ``trace5_P`` / ``trace1_P``: Hutchinson trace (Rademacher) with the number of probes M that
  brings the standard error to 5% / 1% of the trace (M from the variance of vᵀHv measured with
  200 probes); every library runs the same estimator, so equal M is equal accuracy. Runs with
  M above 200 are timed on 200 probes and scaled (printed). The printed ``err`` only guards
  against a broken run: an estimate's distance from the 200-probe pilot's in units of 6 of its
  standard errors (≤ 1 passes; a legend line says so).
- ``slq_P``: spectral density by stochastic Lanczos quadrature, 3 probes x 30 steps in every
  library (same quadrature; curvlinops adds its own spectral-boundary estimate). The printed
  ``err`` guards against a broken run too: a library's largest node (curvlinops: its grid's
  end) off sgdlab's, relative, in units of 15% (≤ 1 passes; a legend line says so).
- ``per_sample_grad_P``: the N per-sample gradients (sgdlab: the (N, d) matrix; peers in their
  native per-parameter form); exact in all libraries (max difference printed).
- ``dx_spectrum_P``: top-5 eigenpairs of the gradient covariance D(x) = Σ (sgdlab:
  ``gradient_covariance(...).eigenpairs(5)``; peers: their per-sample gradients, centred, the
  N x N Gram matrix, the top 5 pairs by the same LAPACK subset solver as sgdlab (scipy ``eigsh``
  for N > 1,000) and the eigenvectors Fᵀu/√λ).
- ``hvp_cost_in_gradients_P``: one Hessian-vector product (sgdlab operator, its per-batch
  preparation cached) over one gradient (forward + backward) of the same loss.

Times are medians of the calling thread's CPU time (``time.thread_time``) over 5 runs (3 when
one run takes over 5 s, 1 over 30 s; 25 under 0.1 s, where the allocator makes single runs
swing); the accuracy calibration run counts as the first, and the further runs go round-robin
over the libraries (load changes on a shared machine hit all of them alike). Where the fastest
library's calibration call is under 33.3 ms (the digits MLP's per-sample gradients: a few ms),
a run is a loop of K calls instead, K = round(50 ms / that call's time) for every library alike,
the calibration runs not counted, and the time per call is the median over runs of the loop's
time / K (printed with K and the number of runs). A peer whose
calibration run takes over 20x sgdlab's time (and 10 s) without meeting the target is stopped
there, its time taken as a lower bound (said in the output). ``SGDLAB_BENCH_REPEATS`` overrides
the 5 (and 5x it the 25). ``python benchmarks/bench_peers.py cnn`` runs one problem's figures,
``--list cnn`` lists them (any other substring selects the figures whose name contains it;
``run.py --only cnn`` also runs the other modules' figures with ``cnn`` in their names). The
run with every problem takes about an hour on one core (the three small problems 32 minutes,
most of it PyHessian's power iteration failing to reach 1e-3 on the CNNs).

``python benchmarks/bench_peers.py --keep-freed-memory ...`` has glibc keep freed memory for every
library alike (steadier figures on machines with costly page faults).
``SGDLAB_BENCH_DEVICE=cuda`` runs every library on the GPU (model, data, probes and
generators there; PyHessian with ``cuda=True``) and times by the wall clock between
``torch.cuda.synchronize`` calls instead of the thread's CPU time, with TF32 convolutions
off (cuDNN's default is on: every library's per-sample gradients were then ~1e-4 apart, at the
"exact" task's tolerance), so that every library computes in float32.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

PROBLEMS = ("digits_mlp", "large_mlp", "cnn", "cnn_bn")
TASKS = ("top1", "top5", "trace5", "trace1", "slq", "per_sample_grad", "dx_spectrum")
GOALS = {f"{t}_{p}_speedup_vs_best_peer": ">= 1.5" for p in PROBLEMS for t in TASKS}
GOALS.update({f"hvp_cost_in_gradients_{p}": "<= 1.5" for p in PROBLEMS})

EIG_TARGET = 1e-3
TRACE_PROBES_MAX = 200
SLQ_PROBES, SLQ_STEPS = 3, 30


# ---------------------------------------------------------------------------------------------
# problems and timing
# ---------------------------------------------------------------------------------------------

def problem(name: str):
    from sgdlab.data import load_dataset

    torch.manual_seed(0)
    if name == "digits_mlp":
        d = load_dataset("digits", seed=0)
        x, y = d.x_train.reshape(len(d.x_train), -1).float(), d.y_train
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        return model, x, y, "MLP 64-32-10 on digits"
    d = load_dataset("mnist_small", seed=0)
    if name == "large_mlp":
        x, y = d.x_train[:1024].reshape(1024, -1).float(), d.y_train[:1024]
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, 10))
        return model, x, y, "MLP 784-512-512-10 on mnist_small"
    x, y = d.x_train[:512].float(), d.y_train[:512]
    bn = name == "cnn_bn"

    def block(ci, co):
        return ([nn.Conv2d(ci, co, 3, padding=1)] + ([nn.BatchNorm2d(co)] if bn else [])
                + [nn.ReLU(), nn.MaxPool2d(2)])

    model = nn.Sequential(*block(1, 8), *block(8, 16), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    if bn:
        with torch.no_grad():
            model.train()(x)
    model.eval()
    return model, x, y, "CNN conv8-pool-conv16-pool-fc10" + (" + BatchNorm2d (eval)" if bn else "")


def _repeats() -> int:
    return int(os.environ.get("SGDLAB_BENCH_REPEATS", "5"))


# ``SGDLAB_BENCH_DEVICE=cuda``: every library's model, data and probes on the GPU, timed by
# the wall clock between synchronisations (the thread's CPU time misses the device's work)
DEVICE = torch.device(os.environ.get("SGDLAB_BENCH_DEVICE", "cpu"))
if DEVICE.type == "cuda":        # float32 for every library (TF32 convolutions: ~1e-4 off)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def _gen(seed: int) -> torch.Generator:
    return torch.Generator(DEVICE).manual_seed(seed)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize(DEVICE)
        return time.perf_counter() - t, out
    t = time.thread_time()
    out = fn()
    return time.thread_time() - t, out


class Peer:
    """One library's way of doing a task: ``run(setting)`` -> value; ``settings`` tried in order
    until ``error(value) <= target``."""

    def __init__(self, name: str, run: Callable[[Any], Any], settings=(None,)):
        self.name, self.run, self.settings = name, run, settings


def _calibrate(peer: Peer, error: Callable[[Any], float], target: float,
               cap: float = float("inf")):
    """(seconds, error, setting, reached) of the first setting meeting ``target``. A run slower
    than ``cap`` that misses the target ends the search: its time is then a lower bound on the
    time to reach it (``reached=False``). None if no setting meets the target."""
    last = None
    for s in peer.settings:
        t, v = _timed(lambda: peer.run(s))
        err = error(v)
        last = (s, err)
        if err <= target:
            return t, err, s, True
        if t > cap:
            print(f"    {peer.name}: {t:.0f} s at {s} (error {err:.1e}) without reaching "
                  f"{target:g}: stopped there (its time is a lower bound)")
            return t, err, s, False
    print(f"    {peer.name}: target {target:g} not met (last setting {last[0]}: "
          f"error {last[1]:.1e})")
    return None


def _runs(first: float) -> int:
    # calls of a few milliseconds swing with the allocator: more runs for a stable median
    return 1 if first > 30 else (3 if first > 5 else (_repeats() if first > 0.1
                                                      else 5 * _repeats()))


SAMPLE_SECONDS = 0.05      # a timed sample this long at least (about), by looping short calls


def _calls_per_sample(first: list[float]) -> int:
    """Calls per timed sample: 1, unless the fastest library's calibration call is under
    2/3 of ``SAMPLE_SECONDS``; then enough calls that a sample takes ~``SAMPLE_SECONDS`` (a
    lone call of a few ms is at the thread clock's and the allocator's noise; measured in
    docs/design/curvature.md, "Per-sample calls of a few milliseconds")."""
    if not first:
        return 1
    return max(1, min(1000, round(SAMPLE_SECONDS / max(min(first), 1e-6))))


def _loop(run: Callable[[Any], Any], setting, calls: int) -> None:
    # each result dropped as the next call starts, as between single timed calls: K results
    # kept at once would have every call fault in fresh memory
    for _ in range(calls):
        run(setting)


def _compare(task: str, ours: Peer, peers: list[Peer], error, target: float) -> float | None:
    """Time every library at the target accuracy; the figure is best peer / ours. Each library's
    setting is calibrated first (peers are given at most 20x sgdlab's time, at least 10 s, per
    calibration run); then the timed runs go round-robin over the libraries, so a change of
    the machine's load affects all of them alike."""
    found = {}
    cap = float("inf")
    for p in [ours] + peers:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = _calibrate(p, error, target, cap)
        except Exception as e:    # a peer that fails is reported, not hidden
            print(f"    {p.name}: failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
            if os.environ.get("SGDLAB_BENCH_DEBUG"):
                traceback.print_exc()
            r = None
        if r is not None:
            found[p.name] = (p, r)
        if p is ours and r is not None:
            cap = max(20 * r[0], 10.0)
    # calls of a few milliseconds: each timed sample is a loop of `calls` calls (the same
    # number for every library), the figure the median of the samples' time per call
    calls = _calls_per_sample([r[0] for _, r in found.values() if r[3]])
    # a single call's calibration run counts as the first sample; a loop's does not
    times = {n: [r[0]] if calls == 1 else [] for n, (_, r) in found.items()}
    while True:
        todo = [n for n, (_, r) in found.items() if r[3] and len(times[n]) < _runs(r[0])]
        if not todo:
            break
        for n in todo:
            p, r = found[n]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                times[n].append(_timed(lambda: _loop(p.run, r[2], calls))[0] / calls)
    rows = {n: (statistics.median(times[n]) if times[n] else r[0],) + r[1:]
            for n, (_, r) in found.items()}
    digits = 2 if calls > 1 else 0
    line = "; ".join(f"{n} {'>= ' if not ok else ''}{t * 1e3:.{digits}f} ms (err {e:.1e}, {s})"
                     for n, (t, e, s, ok) in rows.items())
    if calls > 1:
        # a library's samples: as many as its single call's time gives (_runs)
        counts = {n: len(t) for n, t in times.items() if t}
        samples = (str(next(iter(counts.values()))) if len(set(counts.values())) == 1
                   else ", ".join(f"{n} {c}" for n, c in counts.items()))
        line += (f" [per call: median of {samples} samples of {calls} calls each, every "
                 "library alike]")
    print(f"  {task}: {line}", flush=True)
    if ours.name not in rows:
        print(f"    -> {ours.name} did not reach the target: the figure is skipped", flush=True)
        return None
    others = {n: r for n, r in rows.items() if n != ours.name}
    if not others:
        print("    -> no peer ran or reached the target: the figure is skipped", flush=True)
        return None
    best = min(others, key=lambda n: others[n][0])
    ratio = others[best][0] / rows[ours.name][0]
    bound = "" if others[best][3] else " (a lower bound: that peer did not reach the target)"
    print(f"    -> best peer {best}: {ratio:.2f}x{bound}", flush=True)
    return ratio


# ---------------------------------------------------------------------------------------------
# peers' set-up
# ---------------------------------------------------------------------------------------------

@functools.cache      # a missing library said once, not for every task
def _import(name: str):
    try:
        return __import__(name, fromlist=["_"])
    except Exception as e:
        print(f"    ({name} not available: {type(e).__name__}: {e}; its runs are skipped)")
        return None


@contextlib.contextmanager
def _torch_eig_for_pyhessian():
    """PyHessian 0.1's density() calls ``torch.eig`` (removed from torch): give it the same
    result for its symmetric tridiagonal matrix (eigenvalues as (m, 2) real/imaginary pairs)."""
    old = torch.eig

    def eig(a, eigenvectors=False):
        vals, vecs = torch.linalg.eigh(a)
        return torch.stack([vals, torch.zeros_like(vals)], 1), vecs

    torch.eig = eig
    try:
        yield
    finally:
        torch.eig = old


def _pyhessian(model, loss_fn, x, y):
    mod = _import("pyhessian")
    if mod is None:
        return None

    def build():
        h = mod.hessian(model, loss_fn, data=(x, y), cuda=DEVICE.type == "cuda")
        return h

    return build


def _eigenthings_op(model, loss_fn, x, y):
    het = _import("hessian_eigenthings")
    if het is None:
        return None, None
    return het, (lambda: het.HessianOperator(model, [(x, y)], het.supervised_loss(loss_fn)))


def _curvlinops_op(model, loss_fn, x, y):
    cl = _import("curvlinops")
    if cl is None:
        return None, None
    params = [p for p in model.parameters() if p.requires_grad]
    return cl, (lambda: cl.HessianLinearOperator(model, loss_fn, params, [(x, y)],
                                                 check_deterministic=False))


def _release(model):
    model.zero_grad(set_to_none=True)     # PyHessian leaves graph-carrying .grad behind


# ---------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------

def eig_task(k: int, model, loss_fn, x, y, ref: torch.Tensor) -> float | None:
    from sgdlab.measure.curvature import lanczos
    from sgdlab.operators import HessianOperator

    def error(vals) -> float:
        v = torch.as_tensor(np.asarray(vals, dtype=np.float64)).reshape(-1)
        v = torch.sort(v, descending=True).values[:k]
        if len(v) < k:
            return float("inf")
        return float(((v - ref[:k]).abs() / ref[:k].abs()).max())

    def ours(tol):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vals, _ = lanczos(HessianOperator(model, loss_fn, (x, y)), k, tol=tol,
                              num_iter=400, generator=_gen(1))
        return vals.tolist()

    peers = []
    build = _pyhessian(model, loss_fn, x, y)
    if build is not None:
        def pyh(s):
            tol, iters = s
            torch.manual_seed(1)
            vals, _ = build().eigenvalues(maxIter=iters, tol=tol, top_n=k)
            _release(model)
            return vals
        peers.append(Peer("PyHessian", pyh, [(1e-3, 100), (1e-4, 300), (1e-5, 1000)]))
    het, het_op = _eigenthings_op(model, loss_fn, x, y)
    if het is not None:
        def eigenthings(steps):
            r = het.lanczos(het_op(), k=k, max_iter=steps, which="LA", reorthogonalize=True,
                            seed=1)
            return r.eigenvalues.tolist()
        peers.append(Peer("hessian-eigenthings", eigenthings,
                          [s for s in (10, 20, 30, 45, 60, 90, 130, 200) if s >= 2 * k]))
    cl, cl_op = _curvlinops_op(model, loss_fn, x, y)
    if cl is not None:
        from scipy.sparse.linalg import eigsh

        def curvlinops(tol):
            np.random.seed(1)
            return eigsh(cl_op().to_scipy(), k=k, which="LA", tol=tol,
                         return_eigenvectors=False)
        peers.append(Peer("curvlinops+eigsh", curvlinops, [1e-2, 1e-3, 1e-4, 1e-6, 0]))
    sgd = Peer("sgdlab", ours, [1e-1, 3e-2, 1e-2, 1e-3, 1e-4, 1e-5, 1e-7])
    return _compare(f"top{k} (worst rel. error <= {EIG_TARGET:g})", sgd, peers, error,
                    EIG_TARGET)


def _err_legend(task: str, err: str, accuracy: str) -> None:
    """One line saying what the ``err`` printed beside each library of ``task`` is (``err``)
    and whose the accuracy is (``accuracy``): a check against a broken run, not a miss."""
    print(f"  ({task} err: {err}, <= 1 passes: a check for a broken run, the accuracy being "
          f"that of {accuracy})")


def trace_tasks(model, loss_fn, x, y) -> dict[str, float | None]:
    from sgdlab.measure.curvature import hutchinson_trace
    from sgdlab.operators import HessianOperator

    pilot = hutchinson_trace(HessianOperator(model, loss_fn, (x, y)), 200,
                             generator=_gen(7))
    sd = pilot.stderr * math.sqrt(pilot.num_samples)
    out: dict[str, float | None] = {}
    done: dict[int, float | None] = {}
    for pct in (5, 1):
        m = max(2, math.ceil((sd / (pct / 100 * abs(pilot.value))) ** 2))
        run_m = min(m, TRACE_PROBES_MAX)
        scale = m / run_m
        print(f"  trace to {pct}%: Tr H ≈ {pilot.value:.4g}, sd(vᵀHv) = {sd:.3g} -> M = {m} "
              f"probes" + (f" (timed on {run_m}, scaled x{scale:.1f})" if scale > 1 else ""))
        if pct == 5:        # "err 2.9e-01" next to "5%" read as a miss: what err is, once
            _err_legend("trace", f"|a library's estimate - the {pilot.num_samples}-probe "
                        "pilot's Tr H| in units of 6 standard errors of its probes",
                        "the M probes")

        def ours(_):
            return hutchinson_trace(HessianOperator(model, loss_fn, (x, y)), run_m,
                                    generator=_gen(2)).value

        peers = []
        build = _pyhessian(model, loss_fn, x, y)
        if build is not None:
            def pyh(_):
                torch.manual_seed(2)
                vhv = build().trace(maxIter=run_m, tol=float("-inf"))
                _release(model)
                return float(np.mean(vhv))
            peers.append(Peer("PyHessian", pyh))
        het, het_op = _eigenthings_op(model, loss_fn, x, y)
        if het is not None:
            peers.append(Peer("hessian-eigenthings", lambda _: het.hutchinson(
                het_op(), num_samples=run_m, seed=2).estimate))
        cl, cl_op = _curvlinops_op(model, loss_fn, x, y)
        if cl is not None:
            def curv(_):
                op, total, done = cl_op(), 0.0, 0
                while done < run_m:        # blocks of 16 columns bound its vmapped memory
                    b = min(16, run_m - done)
                    total += float(cl.hutchinson_trace(op, b)) * b
                    done += b
                return total / run_m
            peers.append(Peer("curvlinops", curv))
        # equal estimator and probes count: accuracy is the estimator's; the check only guards
        # against a broken run (an estimate more than 6 standard errors off the pilot)
        tol = 6 * sd / math.sqrt(run_m) + 1e-12

        def error(v) -> float:
            return abs(v - pilot.value) / tol

        # the same factor M / run_m scales every library's time: the ratio is that of run_m
        if run_m in done:
            out[f"trace{pct}"] = done[run_m]
            print(f"  trace{pct}: the same {run_m} probes as above -> the same ratio")
            continue
        done[run_m] = out[f"trace{pct}"] = _compare(f"trace{pct} (M = {m})",
                                                     Peer("sgdlab", ours), peers, error, 1.0)
    return out


def slq_task(model, loss_fn, x, y) -> float | None:
    from sgdlab.measure.curvature import spectral_density
    from sgdlab.operators import HessianOperator

    def ours(_):
        dens = spectral_density(HessianOperator(model, loss_fn, (x, y)), num_probes=SLQ_PROBES,
                                num_iter=SLQ_STEPS, generator=_gen(3))
        return float(dens.nodes.max())

    peers = []
    build = _pyhessian(model, loss_fn, x, y)
    if build is not None:
        def pyh(_):
            torch.manual_seed(3)
            with _torch_eig_for_pyhessian():
                nodes, _w = build().density(iter=SLQ_STEPS, n_v=SLQ_PROBES)
            _release(model)
            return float(np.max(nodes))
        peers.append(Peer("PyHessian", pyh))
    het, het_op = _eigenthings_op(model, loss_fn, x, y)
    if het is not None:
        peers.append(Peer("hessian-eigenthings", lambda _: float(het.spectral_density(
            het_op(), num_runs=SLQ_PROBES, lanczos_steps=SLQ_STEPS, num_grid_points=1000,
            seed=3).raw_eigenvalues.nan_to_num(-1e30).max())))
    cl, cl_op = _curvlinops_op(model, loss_fn, x, y)
    if cl is not None:
        def curv(_):
            np.random.seed(3)
            grid, dens = cl.lanczos_approximate_spectrum(cl_op(), SLQ_STEPS,
                                                         num_repeats=SLQ_PROBES,
                                                         num_points=1000)
            return float(grid.max())
        peers.append(Peer("curvlinops", curv))
    # same quadrature everywhere; the check guards against a broken run: the largest node
    # (or curvlinops' grid end, which adds a 5% margin) within 15% of the top eigenvalue
    ref = [None]

    def error(v) -> float:
        if ref[0] is None:
            ref[0] = v
        return abs(v - ref[0]) / abs(ref[0]) / 0.15

    _err_legend("slq", "|a library's largest node - sgdlab's| / sgdlab's, in units of 15%",
                f"the same {SLQ_PROBES} probes x {SLQ_STEPS} Lanczos steps")
    return _compare(f"slq ({SLQ_PROBES} probes x {SLQ_STEPS} steps)", Peer("sgdlab", ours),
                    peers, error, 1.0)


def _peer_per_sample(model, loss_fn, x, y) -> list[tuple[str, Callable[[], list[torch.Tensor]]]]:
    """Per-sample gradients, per parameter, by each peer (native form)."""
    import copy

    from torch.func import functional_call, grad, vmap

    out = []
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def one(p, xi, yi):
        return loss_fn(functional_call(model, (p, buffers), (xi[None],)), yi[None])

    f = vmap(grad(one), in_dims=(None, 0, 0))
    out.append(("torch.func vmap(grad)", lambda: list(f(params, x, y).values())))
    bp = _import("backpack")
    if bp is not None:
        from backpack.extensions import BatchGrad

        bmodel = bp.extend(copy.deepcopy(model))
        bloss = bp.extend(nn.CrossEntropyLoss())

        def backpack():
            bmodel.zero_grad()
            loss = bloss(bmodel(x), y)
            with bp.backpack(BatchGrad()):
                loss.backward()
            # BatchGrad of a mean loss is g_i / N
            return [p.grad_batch * len(x) for p in bmodel.parameters()]
        out.append(("BackPACK BatchGrad", backpack))
    return out


def per_sample_task(model, loss_fn, x, y) -> float | None:
    from sgdlab.operators import per_sample_gradients

    ref = per_sample_gradients(model, loss_fn, (x, y), method="vmap")
    scale = float(ref.abs().max())

    def err_of(g) -> float:
        flat = g if isinstance(g, torch.Tensor) else torch.cat(
            [t.reshape(len(x), -1) for t in g], 1)
        return float((flat - ref).abs().max()) / scale

    peers = [Peer(n, lambda _, fn=fn: fn()) for n, fn in _peer_per_sample(model, loss_fn, x, y)]
    return _compare("per-sample gradients (exact; rel. max difference)",
                    Peer("sgdlab", lambda _: per_sample_gradients(model, loss_fn, (x, y))),
                    peers, err_of, 1e-4)


def dx_task(model, loss_fn, x, y) -> float | None:
    from sgdlab.measure.noise import gradient_covariance

    k = 5
    ref = gradient_covariance(model, loss_fn, (x, y)).eigenpairs(k)[0]

    def spectrum_from(grads: list[torch.Tensor]):
        g = torch.cat([t.reshape(len(x), -1) for t in grads], 1)
        f = (g - g.mean(0)) / math.sqrt(len(g))
        gram = (f @ f.T).double().cpu()
        if len(gram) <= 1000:            # the Gram trick, with sgdlab's eigensolver (LAPACK
            import scipy.linalg          # evx subset): the figure compares the rest

            w, u = scipy.linalg.eigh(gram.numpy(), subset_by_index=[len(gram) - k,
                                                                    len(gram) - 1],
                                     driver="evx")
            vals, u = torch.from_numpy(w[::-1].copy()), torch.from_numpy(u[:, ::-1].copy())
        else:                            # a few pairs of a large Gram: ARPACK
            from scipy.sparse.linalg import eigsh

            np.random.seed(0)
            vals, u = eigsh(gram.numpy(), k=k, which="LA")
            vals, u = torch.from_numpy(vals).flip(0), torch.from_numpy(u).flip(1)
        vecs = f.T @ u.to(f) / vals.sqrt().to(f)
        return vals, vecs

    def error(out) -> float:
        vals, r = out[0].double().cpu(), ref.double().cpu()
        return float(((vals - r).abs() / r.abs()).max())

    peers = [Peer(n, lambda _, fn=fn: spectrum_from(fn()))
             for n, fn in _peer_per_sample(model, loss_fn, x, y)]
    return _compare(f"D(x) top-{k} eigenpairs (rel. error vs sgdlab float32 <= 1e-3)",
                    Peer("sgdlab", lambda _: gradient_covariance(model, loss_fn, (x, y))
                         .eigenpairs(k)), peers, error, 1e-3)


def hvp_cost(model, loss_fn, x, y) -> float:
    from sgdlab.operators import HessianOperator, num_params

    params = [p for p in model.parameters() if p.requires_grad]
    op = HessianOperator(model, loss_fn, (x, y))
    v = torch.randn(num_params(model), generator=_gen(0), device=DEVICE)
    op.matvec(v)
    grads, hvps = [], []
    for _ in range(max(_repeats(), 7)):        # alternating: load changes hit both alike
        grads.append(_timed(lambda: torch.autograd.grad(loss_fn(model(x), y), params))[0])
        hvps.append(_timed(lambda: op.matvec(v))[0])
    t_grad, t_hvp = statistics.median(grads), statistics.median(hvps)
    print(f"  gradient {t_grad * 1e3:.1f} ms, HVP {t_hvp * 1e3:.1f} ms "
          f"-> {t_hvp / t_grad:.2f} gradients", flush=True)
    return t_hvp / t_grad


# ---------------------------------------------------------------------------------------------

def _reference(model, loss_fn, x, y) -> torch.Tensor:
    from sgdlab.measure.curvature import lanczos
    from sgdlab.operators import HessianOperator

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vals, _ = lanczos(HessianOperator(model, loss_fn, (x, y)), 5, tol=1e-6, num_iter=400,
                          dtype=torch.float64, generator=_gen(0))
    print(f"  reference top-5 (float64 recurrence, tol 1e-6): "
          f"{', '.join(f'{v:.6g}' for v in vals.tolist())} ({time.perf_counter() - t0:.0f} s)")
    return vals.double().cpu()


def figures(only: str = "") -> list[str]:
    """The figures a run with ``only`` measures (and ``--list`` lists): a problem's name selects
    that problem alone (``cnn`` is in ``cnn_bn``'s names too); any other substring the figures
    whose names contain it, or all of them when it is part of the module's name."""
    if only in PROBLEMS:
        return _of_problem(only, GOALS)
    return [f for f in GOALS if not only or only in f or only in "bench_peers"]


def _of_problem(name: str, names) -> list[str]:
    """The figures among ``names`` of problem ``name`` (not those of ``cnn_bn`` for ``cnn``)."""
    return [f for f in names if f.endswith(f"_{name}_speedup_vs_best_peer")
            or f == f"hvp_cost_in_gradients_{name}"]


def run(only: str = "") -> dict[str, float | None]:
    wanted = figures(only)
    out: dict[str, float | None] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in PROBLEMS:
            figs = _of_problem(name, wanted)
            if not figs:
                continue
            model, x, y, desc = problem(name)
            model, x, y = model.to(DEVICE), x.to(DEVICE), y.to(DEVICE)
            loss_fn = nn.CrossEntropyLoss()
            from sgdlab.operators import num_params

            print(f"== {name}: {desc}, d = {num_params(model)}, N = {len(x)}, float32, {DEVICE}, "
                  f"1 thread", flush=True)

            def want(task):
                return f"{task}_{name}_speedup_vs_best_peer" in figs

            if f"hvp_cost_in_gradients_{name}" in figs:
                out[f"hvp_cost_in_gradients_{name}"] = hvp_cost(model, loss_fn, x, y)
            if want("top1") or want("top5"):
                ref = _reference(model, loss_fn, x, y)
                for k in (1, 5):
                    if want(f"top{k}"):
                        out[f"top{k}_{name}_speedup_vs_best_peer"] = eig_task(
                            k, model, loss_fn, x, y, ref)
            if want("trace5") or want("trace1"):
                for key, v in trace_tasks(model, loss_fn, x, y).items():
                    if want(key):
                        out[f"{key}_{name}_speedup_vs_best_peer"] = v
            if want("slq"):
                out[f"slq_{name}_speedup_vs_best_peer"] = slq_task(model, loss_fn, x, y)
            if want("per_sample_grad"):
                out[f"per_sample_grad_{name}_speedup_vs_best_peer"] = per_sample_task(
                    model, loss_fn, x, y)
            if want("dx_spectrum"):
                out[f"dx_spectrum_{name}_speedup_vs_best_peer"] = dx_task(model, loss_fn, x, y)
    finally:
        torch.set_num_threads(threads)
    return out


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
