"""Working precision (``dtype=``) and measured probe blocks of the curvature estimators."""
import copy

import pytest
import torch
from torch import nn

from sgdlab.measure.curvature import (
    frobenius_norm, hutchinson_trace, lanczos, spectral_density,
)
from sgdlab.operators import GGNOperator, HessianOperator, LinearOperator
from sgdlab.operators.blocking import BlockTuner
from sgdlab.testing import dense_hessian_reference, tiny_classification, tiny_mlp

pytestmark = pytest.mark.usefixtures("one_thread")


def test_float64_recurrence_removes_the_float32_floor():
    g = torch.Generator().manual_seed(0)
    d = 300
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([5.0, 4.9, 4.85]), torch.linspace(-1, 1, d - 3)]).double()
    a32 = (q @ torch.diag(lam) @ q.T).float()
    ref = torch.linalg.eigvalsh(a32.double()).flip(0)[:3]    # eigenvalues of the float32 matrix

    def err(dtype):
        v, vecs = lanczos(a32, 3, tol=1e-10, num_iter=d, dtype=dtype,
                          generator=torch.Generator().manual_seed(1))
        assert v.dtype == (dtype or torch.float32) and vecs.dtype == v.dtype
        return float(((v.double() - ref).abs() / ref.abs()).max())

    assert err(torch.float64) < 2e-8 < err(None)


def test_float64_hutchinson_on_a_float32_model_equals_the_float64_model():
    model = tiny_mlp(3, 6, 3, dtype=torch.float32)
    x, y = tiny_classification(10, 3, 3, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss()
    m64 = copy.deepcopy(model).double()
    ref = hutchinson_trace(HessianOperator(m64, loss_fn, (x.double(), y)), 30,
                           generator=torch.Generator().manual_seed(2))
    for op in (HessianOperator(model, loss_fn, (x, y)),
               HessianOperator(model, loss_fn, [(x[:4], y[:4]), (x[4:], y[4:])])):
        est = hutchinson_trace(op, 30, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(2))
        assert est.value == pytest.approx(ref.value, rel=1e-12)
        assert op.num_matvecs == 0                  # the float64 copy did the products
    f32 = hutchinson_trace(HessianOperator(model, loss_fn, (x, y)), 30,
                           generator=torch.Generator().manual_seed(2))
    assert f32.value == pytest.approx(ref.value, rel=1e-5)
    # the rebuilt operator is the float64 Hessian, the model itself untouched
    op64 = GGNOperator(model, loss_fn, (x, y)).to(torch.float64)
    assert op64.dtype == torch.float64 and next(model.parameters()).dtype == torch.float32
    h = dense_hessian_reference(m64, loss_fn, (x.double(), y))
    torch.testing.assert_close(HessianOperator(model, loss_fn, (x, y)).to(torch.float64)
                               .to_dense(), h)


def test_block_tuner_settles_on_the_cheapest_block_per_column():
    # synthetic costs (seconds per block): blocks of 4 are the cheapest per column
    cost = {1: 1.0, 2: 1.6, 4: 2.0, 8: 6.0, 16: 20.0}
    tuner = BlockTuner(16)
    sizes = []
    for _, b in BlockTuner.blocks(tuner, 0):      # nothing to do: no block
        sizes.append(b)
    assert sizes == []
    total, done = 40, 0
    while done < total:
        b = tuner._next(total - done)
        tuner.record(b, cost.get(b, 100.0))
        sizes.append(b)
        done += b
    assert sizes[:5] == [1, 1, 2, 4, 8] and tuner.settled == 4 and set(sizes[5:]) == {4}
    assert tuner.per_column[4] == 0.5
    # batching never pays: settle on single products after one try of 2
    t1 = BlockTuner(16)
    for b in (1, 1, 2):
        assert t1._next(100) == b
        t1.record(b, float(b))
    assert t1.settled == 1 and t1._next(100) == 1
    assert BlockTuner(16, fixed=3)._next(2) == 2
    with pytest.raises(ValueError, match="block_size"):
        BlockTuner(16, fixed=0)


def test_block_tuner_keeps_the_cheaper_single_product_and_stops_within_its_margin():
    """The first single product may pay one-off set-up: of the two tries of 1, the cheaper
    per column counts. A larger block must be 5% cheaper per column to be tried further."""
    tuner = BlockTuner(16)
    for b, seconds in ((1, 1.0), (1, 5.0)):        # the second, slower, does not replace it
        assert tuner._next(100) == b
        tuner.record(b, seconds)
    assert tuner.per_column[1] == 1.0
    tuner.record(2, 2.4)                            # 1.2 per column: dearer than 1.0
    assert tuner.settled == 1 and tuner._next(100) == 1
    close = BlockTuner(16)
    for b, seconds in ((1, 1.0), (1, 1.0), (2, 1.96)):   # 2% cheaper: not worth trying 4
        close.record(b, seconds)
    assert close.settled == 2 and close._next(100) == 2 and close._next(1) == 1
    cut = BlockTuner(16)            # a block cut short by the columns left is no trial of 4
    for b, seconds in ((1, 1.0), (1, 1.0), (2, 1.0), (3, 0.3)):
        cut.record(b, seconds)
    assert 3 not in cut.per_column and cut.settled is None and cut._next(100) == 4
    odd = BlockTuner(12)                            # a cap off the powers of two is tried too
    sizes = []
    for b in iter(lambda: odd._next(100), None):
        if odd.settled is not None:
            break
        sizes.append(b)
        odd.record(b, 1.0)                          # every block costs the same: larger pays
    assert sizes == [1, 1, 2, 4, 8, 12] and odd.settled == 12


def test_samples_do_not_depend_on_the_blocks():
    """Gaussian probes are drawn one vector at a time, so measured (timing-dependent) blocks
    cannot change an estimate: Frobenius and SLQ give the same numbers for every block."""
    model = tiny_mlp(3, 4, 2)
    data, loss_fn = tiny_classification(9, 3, 2), nn.CrossEntropyLoss()
    h = dense_hessian_reference(model, loss_fn, data)
    fro = [frobenius_norm(HessianOperator(model, loss_fn, data), 12, block_size=b,
                          generator=torch.Generator().manual_seed(4)).value for b in (1, 5, None)]
    fro.append(frobenius_norm(h, 12, block_size=12,
                              generator=torch.Generator().manual_seed(4)).value)
    assert max(fro) - min(fro) < 1e-12 * max(fro)
    dens = [spectral_density(HessianOperator(model, loss_fn, data), num_probes=5, num_iter=6,
                             block_size=b, generator=torch.Generator().manual_seed(1))
            for b in (1, 2, None)]
    for other in dens[1:]:
        torch.testing.assert_close(other.nodes, dens[0].nodes)
        torch.testing.assert_close(other.weights, dens[0].weights)
    op = HessianOperator(model, loss_fn, data)
    hutchinson_trace(op, 40, generator=torch.Generator().manual_seed(0))
    tuner = op.block_tuner("quadratic_forms")
    assert tuner.settled is not None and tuner.per_column      # measured, kept on the operator


class _Unused(LinearOperator):
    """An operator that is only asked for its block sizes (never multiplied), so it can claim a
    CUDA device on a machine without one."""

    tune_blocks = True

    def _probe_bytes(self) -> int:
        return 2**20


def test_block_sizes_follow_the_device(monkeypatch):
    """CPU: 256 MiB of scratch and blocks measured up to 16. CUDA: a quarter of the free
    device memory, the largest block that fits (at most 64) and no measurement (a fixed
    256 MiB held the benchmark CNNs to 1-3 probes per block there, each 6-9x dearer)."""
    cpu = _Unused(10, torch.float32, "cpu")
    assert cpu.memory_budget() == 256 * 2**20 and cpu.probe_block_size() == 16
    assert cpu.block_tuner("quadratic_forms").settled is None           # measured
    # a caller's cap never exceeds what the memory budget allows
    assert cpu.block_tuner("matmat", cap=1000).cap == 16
    assert cpu.block_tuner("matmat", cap=0).cap == 1
    free = {"bytes": 40 * 2**20}
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda device=None: (free["bytes"], 80 * 2**30))
    gpu = _Unused(10, torch.float32, "cuda")
    assert gpu.memory_budget() == 10 * 2**20 and gpu.probe_block_size() == 10
    free["bytes"] = 40 * 2**30
    assert gpu.probe_block_size() == 64
    tuner = gpu.block_tuner("quadratic_forms")
    assert tuner.settled == 64 and [b for _, b in tuner.blocks(150)] == [64, 64, 22]
    gpu.probe_memory_budget = 3 * 2**20                   # an explicit budget wins everywhere
    assert gpu.probe_block_size() == 3 and cpu.probe_block_size() == 16
    gpu.probe_memory_budget = "2MiB"        # written as any memory budget is (int() failed)
    assert gpu.memory_budget() == 2 * 2**20 and gpu.probe_block_size() == 2
    gpu.probe_memory_budget = "2G"
    with pytest.raises(ValueError, match=r"Invalid probe_memory_budget='2G' \(unknown unit"):
        gpu.memory_budget()
