"""Entropy-SGD's cost per gradient evaluation and Parle's communication cost.

Model: MLP 256-256-256-10 (ReLU, float32, CPU, 0.13 M parameters), synthetic data
(N = 4,096 Gaussian inputs, 10 classes), batch 128, one torch thread per process.

* ``entropy_sgd_cost_per_gradient_vs_sgd``: CPU time (``time.thread_time``) per gradient
  evaluation of Entropy-SGD (L = 20, Nesterov inner and outer momentum, no thermal noise:
  the thesis' setting, mini-batch noise only) over that of ``torch.optim.SGD`` (Nesterov
  momentum 0.9) driven by the same closure (mini-batch draw, forward, backward). Timed
  regions alternate; median of REPEATS ratios of 200 gradient evaluations each. The same
  ratio with thermal noise on (one Gaussian draw per parameter per inner step) is printed.
* ``parle_comm_fraction_L25_4proc``: 4 gloo processes on localhost (forked), Parle with
  L = 25, on a small CNN (conv 8-16 + linear, 1×16×16 synthetic images, 3.8 k parameters;
  convolutions, like the thesis' networks, do much more compute per weight than an MLP; the
  MLP's numbers are printed as the worst case); per round, a barrier first absorbs the load
  imbalance between processes (reported separately as "wait"), then the timed all-reduce of
  the replica weights. Figure: all-reduce time / total training wall time, median over ranks,
  then median over DIST_REPEATS = 3 runs.
* ``parle_wallclock_distributed_over_inprocess_4rep``: wall time of the same run (4 replicas,
  same rounds) distributed over 4 processes / stepped in turn in one process, excluding
  process start-up. Ideal: 1/4 with 4 free cores; on a machine with fewer cores it cannot go
  below cores/4, so the number printed with it includes the core count. Median over the same
  DIST_REPEATS runs (each: the in-process run, then the 4 processes); skipped if one fails.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import statistics
import time

import torch
from torch import nn

from _timing import one_thread

GOALS = {
    "entropy_sgd_cost_per_gradient_vs_sgd": "<= 1.05",
    "parle_comm_fraction_L25_4proc": "<= 0.05",
    "parle_wallclock_distributed_over_inprocess_4rep":
        "report (below 1 only with >= 4 free cores; ideal 1/4)",
}

N, D, WIDTH, CLASSES, BATCH = 4096, 256, 256, 10, 128
REPEATS, EVALS, L_ESGD = 7, 200, 20
NPROC, L_PARLE, ROUNDS, DIST_REPEATS = 4, 25, 6, 3


def _data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=g)
    W = torch.randn(D, CLASSES, generator=g)
    return X, (X @ W).argmax(1)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
                         nn.Linear(WIDTH, CLASSES))


def _closure(model, X, Y, counter):
    gen = torch.Generator().manual_seed(1)
    lf = nn.CrossEntropyLoss()

    def closure():
        idx = torch.randint(0, N, (BATCH,), generator=gen)
        model.zero_grad(set_to_none=True)
        loss = lf(model(X[idx]), Y[idx])
        loss.backward()
        counter[0] += 1
        return loss
    return closure


def _cost_ratio(noise: float) -> float:
    from sgdlab.optim.entropy_sgd import EntropySGD

    X, Y = _data()
    m_sgd, m_esgd = _model(), _model()
    c_sgd, c_esgd = [0], [0]
    sgd = torch.optim.SGD(m_sgd.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    esgd = EntropySGD(m_esgd.parameters(), lr=1.0, inner_lr=0.01, L=L_ESGD, gamma=0.1,
                      noise=noise, momentum=0.5, nesterov=True, inner_momentum=0.9,
                      inner_nesterov=True, seed=0)
    cl_sgd, cl_esgd = _closure(m_sgd, X, Y, c_sgd), _closure(m_esgd, X, Y, c_esgd)

    def timed(opt, cl, counter) -> float:
        start_n, t0 = counter[0], time.thread_time()
        while counter[0] - start_n < EVALS:
            opt.step(cl)
        return (time.thread_time() - t0) / (counter[0] - start_n)

    timed(sgd, cl_sgd, c_sgd), timed(esgd, cl_esgd, c_esgd)   # warm-up
    ratios, per = [], []
    for _ in range(REPEATS):
        a = timed(sgd, cl_sgd, c_sgd)
        b = timed(esgd, cl_esgd, c_esgd)
        ratios.append(b / a)
        per.append((a, b))
    a, b = statistics.median(p[0] for p in per), statistics.median(p[1] for p in per)
    print(f"  per gradient evaluation (CPU time): SGD {a * 1e3:.3f} ms, Entropy-SGD (L={L_ESGD}, "
          f"thermal noise {noise:g}) {b * 1e3:.3f} ms: ratio {statistics.median(ratios):.3f}")
    return statistics.median(ratios)


def _parle_config():
    from sgdlab.train.replicas import ParleConfig
    return ParleConfig(replicas=NPROC, L=L_PARLE, lr=0.05, gamma=1.0, rho=1.0, momentum=0.9,
                       nesterov=True, batch_size=BATCH, seed=0)


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, CLASSES))


def _dataset(kind: str):
    from sgdlab.data.base import Dataset
    if kind == "mlp":
        X, Y = _data()
    else:
        g = torch.Generator().manual_seed(0)
        X = torch.randn(N // 2, 1, 16, 16, generator=g)
        Y = (X.flatten(1) @ torch.randn(256, CLASSES, generator=g)).argmax(1)
    return Dataset(X, Y, X[:256], Y[:256], {"name": "synthetic", "task": "classification",
                                            "input_shape": tuple(X.shape[1:]),
                                            "num_outputs": CLASSES})


WORKLOADS = {"cnn": _cnn, "mlp": _model}


def _worker(rank: int, port: int, q, kind: str) -> None:
    import torch.distributed as dist

    from sgdlab.train.distributed import TorchDistributedCommunicator
    from sgdlab.train.replicas import train_replicas

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(NPROC))
    try:
        dist.init_process_group("gloo", timeout=__import__("datetime").timedelta(seconds=60))

        class Timed(TorchDistributedCommunicator):
            wait = comm = 0.0

            def reduce_round(self, anchors, losses):
                t0 = time.perf_counter()
                dist.barrier()
                t1 = time.perf_counter()
                out = super().reduce_round(anchors, losses)
                self.wait += t1 - t0
                self.comm += time.perf_counter() - t1
                return out

        comm = Timed()
        res = train_replicas(WORKLOADS[kind](), nn.CrossEntropyLoss(), _dataset(kind),
                             _parle_config(), rounds=ROUNDS, mode="distributed",
                             communicator=comm, eval_subset=256)
        q.put((rank, res.wall_time, comm.comm, comm.wait))
        dist.destroy_process_group()
    except BaseException as e:  # report instead of hanging the parent
        q.put((rank, None, repr(e), None))
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed(kind: str) -> tuple[float | None, float | None]:
    from sgdlab.train.replicas import train_replicas

    torch.set_num_threads(1)
    model = WORKLOADS[kind]()
    n_params = sum(p.numel() for p in model.parameters())
    res = train_replicas(model, nn.CrossEntropyLoss(), _dataset(kind), _parle_config(),
                         rounds=ROUNDS, eval_subset=256)
    inproc = res.wall_time
    print(f"  [{kind}, {n_params} parameters] in-process: {NPROC} replicas, {ROUNDS} rounds of "
          f"L={L_PARLE}: {inproc:.2f} s")
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, q, kind), daemon=True)
             for r in range(NPROC)]
    for p in procs:
        p.start()
    out = []
    try:
        for _ in range(NPROC):
            out.append(q.get(timeout=300))
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    if any(o[1] is None for o in out):
        print(f"  distributed run failed: {[o[2] for o in out if o[1] is None]}")
        return None, None
    walls = [o[1] for o in out]
    fracs = [o[2] / o[1] for o in out]
    waits = [o[3] / o[1] for o in out]
    wall = max(walls)
    print(f"  distributed: {NPROC} gloo processes on {os.cpu_count()} cores: {wall:.2f} s; "
          f"all-reduce fraction per rank {[f'{f:.4f}' for f in fracs]}, barrier wait "
          f"(load imbalance) fraction {[f'{w:.3f}' for w in waits]}")
    return statistics.median(fracs), wall / inproc


def run() -> dict[str, float | None]:
    with one_thread():
        print(f"  model: MLP {D}-{WIDTH}-{WIDTH}-{CLASSES} (ReLU), float32, CPU, batch {BATCH}, "
              f"synthetic N={N}, 1 thread per process")
        ratio = _cost_ratio(0.0)
        _cost_ratio(1e-6)   # printed only: the Gaussian draws of the thermal noise
        runs = [_distributed("cnn") for _ in range(DIST_REPEATS)]
        ok = all(r[0] is not None for r in runs)        # a failed run: no figure
        frac, wall = ((statistics.median(r[i] for r in runs) for i in (0, 1)) if ok
                      else (None, None))
        if ok:
            print(f"  cnn, median of {DIST_REPEATS} runs: all-reduce fraction {frac:.4f}, "
                  f"distributed / in-process wall time {wall:.3f}")
        _distributed("mlp")   # printed only: the worst case (communication ∝ compute / B)
    return {"entropy_sgd_cost_per_gradient_vs_sgd": ratio,
            "parle_comm_fraction_L25_4proc": frac,
            "parle_wallclock_distributed_over_inprocess_4rep": wall}


if __name__ == "__main__":
    import sys

    from run import main

    sys.exit(main(module=__file__))
