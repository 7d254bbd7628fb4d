"""Landscape.to: every tensor a landscape holds moves (dtype here, the meta device for shapes,
CUDA when present), and chains on another device than the landscape's are named."""
from __future__ import annotations

import copy
import types
from collections import namedtuple

import pytest
import torch
from torch import nn

from sgdlab.errors import UserError
from sgdlab.landscapes import (AnalyticLoss, DoubleWell, EscapeConfig, Landscape, PSpinGlass,
                               Quadratic, TwoBasin, as_problem, escape_experiment)
from sgdlab.landscapes.sde import sgd_chains, sgd_sde, simulate

f64, f32 = torch.float64, torch.float32
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _quadratic() -> Quadratic:
    h = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]], dtype=f64)
    return Quadratic(h, num_samples=12, noise_cov=torch.diag(torch.tensor([1.0, 0.3, 0.1])),
                     minimum=torch.tensor([0.3, -0.2, 0.1]), seed=3)


def _analytic() -> AnalyticLoss:
    # no tensors of its own: the user's fn builds everything from theta
    return AnalyticLoss(lambda t: (t ** 4).sum(-1) / 4 - (t[..., 0] * t[..., 1]), 2)


# One instance of every Landscape subclass in sgdlab: a new subclass must be added here, and
# then the tests below check that .to moves every tensor it holds.
FACTORIES = {
    AnalyticLoss: _analytic,
    TwoBasin: lambda: TwoBasin(num_samples=9, seed=1),
    Quadratic: _quadratic,
    DoubleWell: lambda: DoubleWell(lam=0.7),
    PSpinGlass: lambda: PSpinGlass(5, regime="critical", seed=2),
}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _all_tensors(obj, seen=None):
    """Every tensor reachable from obj through attributes and containers (deeper than
    Landscape._apply's walk, so that a tensor it misses is found)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (type, types.ModuleType, str, bytes, int, float)):
        return
    seen.add(id(obj))
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    if isinstance(obj, types.FunctionType):         # a tensor a closure captured stays put
        for cell in obj.__closure__ or ():
            yield from _all_tensors(cell.cell_contents, seen)
        return
    if isinstance(obj, torch.Tensor):
        yield obj
        return
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _all_tensors(v, seen)
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            yield from _all_tensors(v, seen)
        return
    for v in getattr(obj, "__dict__", {}).values():
        yield from _all_tensors(v, seen)
    for name in getattr(type(obj), "__slots__", ()):
        yield from _all_tensors(getattr(obj, name, None), seen)


def _points(land: Landscape, dtype=f64, device="cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    scale = 2.0 if isinstance(land, PSpinGlass) else 0.7
    return (scale * torch.randn(4, land.dim, generator=gen, dtype=f64)).to(device, dtype)


def test_every_landscape_subclass_has_a_factory():
    ours = {c for c in _subclasses(Landscape) if c.__module__.startswith("sgdlab.")}
    missing = sorted(c.__name__ for c in ours - set(FACTORIES))
    assert not missing, f"add an instance of {missing} to FACTORIES"


@pytest.mark.parametrize("cls", list(FACTORIES), ids=lambda c: c.__name__)
def test_no_landscape_keeps_tensors_on_its_class(cls):
    held = [f"{k.__name__}.{name}" for k in cls.__mro__ for name, v in vars(k).items()
            if isinstance(v, torch.Tensor)]
    assert not held, f"class attributes are not moved by .to: {held}"


@pytest.mark.parametrize("cls", list(FACTORIES), ids=lambda c: c.__name__)
def test_to_float32_moves_every_tensor_in_place(cls):
    land = FACTORIES[cls]()
    before = {id(t): t.dtype for t in _all_tensors(land)}
    assert land.to(dtype=f32) is land                              # in place, as nn.Module
    tensors = list(_all_tensors(land))
    wrong = [tuple(t.shape) for t in tensors if t.is_floating_point() and t.dtype != f32]
    assert not wrong, f"{cls.__name__}: tensors of shapes {wrong} were not moved"
    assert all(t.dtype == before.get(id(t), t.dtype) for t in tensors
               if not t.is_floating_point())                        # integer ones keep theirs
    assert land.dtype == (f32 if tensors else None)


@pytest.mark.parametrize("cls", list(FACTORIES), ids=lambda c: c.__name__)
def test_float32_landscape_matches_float64_to_rounding(cls):
    land64 = FACTORIES[cls]()
    land32 = copy.deepcopy(land64).to(dtype=f32)
    th = _points(land64)
    th32 = th.to(f32)
    pairs = [(land32.loss(th32), land64.loss(th)), (land32.grad(th32), land64.grad(th)),
             (land32.hessian(th32), land64.hessian(th))]
    if land64.num_samples is not None:
        idx = torch.tensor([0, 2, 2, 5])
        pairs += [(land32.per_sample_loss(th32), land64.per_sample_loss(th)),
                  (land32.grad(th32, idx), land64.grad(th, idx)),
                  (land32.gradient_covariance(th32), land64.gradient_covariance(th))]
    for got, want in pairs:
        assert got.dtype == f32
        scale = float(want.abs().max())
        # float32 round-off of O(10) operations on entries of this scale
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("cls", list(FACTORIES), ids=lambda c: c.__name__)
def test_meta_device_moves_every_tensor_and_gives_shapes(cls):
    land = FACTORIES[cls]().to("meta")
    tensors = list(_all_tensors(land))
    assert all(t.device.type == "meta" for t in tensors)
    assert land.device == (torch.device("meta") if tensors else None)
    th = _points(land, device="meta")
    assert land.loss(th).shape == (4,)
    assert land.grad(th).shape == (4, land.dim)
    assert land.hessian(th).shape == (4, land.dim, land.dim)
    if land.num_samples is not None:
        n = land.num_samples
        assert land.per_sample_grad(th).shape == (4, n, land.dim)
        idx = land.sample_batches((4,), 3, generator=torch.Generator().manual_seed(0))
        assert idx.device.type == "meta" and idx.dtype == torch.long
        assert land.grad(th, idx).shape == (4, land.dim)
        assert land.sample_batches((4,), 3, replacement=False).device.type == "meta"


@pytest.mark.parametrize("cls", [c for c in FACTORIES if c not in (AnalyticLoss, DoubleWell)],
                         ids=lambda c: c.__name__)
def test_chains_on_another_device_name_both_devices(cls):
    land = FACTORIES[cls]().to("meta")
    th = _points(land)                                             # on the CPU
    for call in (land.loss, land.grad, land.hessian):
        with pytest.raises(UserError, match=r"theta is on cpu but the landscape is on meta"):
            call(th)


def test_sgd_chains_and_sgd_sde_name_both_devices():
    land = _quadratic().to("meta")
    th = torch.zeros(5, 3, dtype=f64)
    with pytest.raises(UserError, match="theta0 is on cpu but the landscape is on meta"):
        sgd_chains(land, th, lr=0.1, batch_size=2, steps=2)
    with pytest.raises(UserError, match="on cpu but the landscape is on meta"):
        simulate(sgd_sde(land, lr=0.1, batch_size=2), th, dt=0.1, steps=2)
    # on the landscape's device they run (shapes only on meta), CPU generator or none
    th = th.to("meta")
    for gen in (torch.Generator().manual_seed(0), None):
        assert sgd_chains(land, th, lr=0.1, batch_size=2, steps=2, generator=gen,
                          record_every=1).states.shape == (3, 5, 3)
        path = simulate(sgd_sde(land, lr=0.1, batch_size=2), th, dt=0.1, steps=2,
                        generator=gen)
        assert path.final.shape == (5, 3) and path.final.device.type == "meta"


class _Holder(Landscape):
    """Tensors in every place the walk must look: containers, a nested landscape, a module."""

    Pair = namedtuple("Pair", "a b")

    def __init__(self) -> None:
        self.dim = 2
        self.w = torch.ones(2, dtype=f64)
        self.index = torch.arange(3)
        self.mask = torch.tensor([True, False])
        self.items = [torch.zeros(2, dtype=f64), (torch.ones(1, dtype=f64), 3)]
        self.table = {"c": torch.full((2,), 2.0, dtype=f64), "n": "text"}
        self.pair = self.Pair(torch.ones(2, dtype=f64), torch.arange(2))
        self.inner = _quadratic()
        self.module = nn.Linear(2, 1).double()
        self.note = "no tensor here"

    def loss(self, theta, idx=None):
        self._check(theta)
        return (theta * self.w).sum(-1)


def test_to_walks_containers_nested_landscapes_and_modules():
    land = _Holder()
    land.to(dtype=f32)
    floats = [t for t in _all_tensors(land) if t.is_floating_point()]
    assert len(floats) > 8 and all(t.dtype == f32 for t in floats)
    assert land.index.dtype == torch.long and land.mask.dtype == torch.bool
    assert land.pair.b.dtype == torch.long and isinstance(land.pair, _Holder.Pair)
    assert land.items[1][1] == 3 and land.table["n"] == "text"
    land.to("meta")
    assert all(t.device.type == "meta" for t in _all_tensors(land))
    assert land.index.dtype == torch.long


def test_device_follows_a_move_of_tensors_held_only_in_a_nested_landscape_or_module():
    class Wrapper(Landscape):
        def __init__(self, inner) -> None:
            self.dim, self.inner = 3, inner

        def loss(self, theta, idx=None):
            self._check(theta)
            return theta.sum(-1)

    for inner in (_quadratic(), nn.Linear(3, 1).double()):
        land = Wrapper(inner)
        assert land.device == torch.device("cpu")         # read once before the move
        land.to("meta")
        assert land.device.type == "meta"
        land.loss(torch.zeros(2, 3, dtype=f64, device="meta"))


def test_to_refuses_a_non_floating_dtype():
    with pytest.raises(UserError, match="floating"):
        _quadratic().to(dtype=torch.int64)


def test_landscape_model_moves_its_landscape():
    land = _quadratic()
    model, loss_fn, (idx, y) = as_problem(land, torch.zeros(3))
    model.to(dtype=f32)
    assert model.theta.dtype == f32 and land.dtype == f32 and land.H.dtype == f32
    assert float(loss_fn(model(idx), y).detach()) == pytest.approx(float(land.loss(
        torch.zeros(3, dtype=f32))), rel=1e-6)
    model.to("meta")
    assert land.device == torch.device("meta") and model(idx).shape == (12,)
    # a landscape already on a device puts θ and the data there, whatever θ0's device
    model, _, (idx, y) = as_problem(_quadratic().to("meta"), torch.zeros(3))
    assert model.theta.device.type == idx.device.type == y.device.type == "meta"


def test_quadratic_closed_forms_follow_the_dtype():
    land = _quadratic()
    want = land.sgd_stationary_covariance(0.1, 2)
    land.to(dtype=f32)
    got = land.sgd_stationary_covariance(0.1, 2)
    assert got.dtype == f32 and land.sde_stationary_covariance(0.1, 2).dtype == f32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_sgd_chains_on_device_match_cpu_with_a_cpu_generator(device):
    """A CPU generator gives the same batches on every device, so the paths agree to
    round-off (float64 matmuls on the device against the CPU's)."""
    ref = sgd_chains(_quadratic(), torch.zeros(64, 3, dtype=f64), lr=0.1, batch_size=2,
                     steps=50, generator=torch.Generator().manual_seed(5))
    land = _quadratic().to(device)
    got = sgd_chains(land, torch.zeros(64, 3, dtype=f64, device=device), lr=0.1,
                     batch_size=2, steps=50, generator=torch.Generator().manual_seed(5))
    assert got.final.device.type == device
    torch.testing.assert_close(got.final.cpu(), ref.final, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_escape_experiment_on_device_matches_cpu(device):
    """Same seed, same CPU generators: the same draws on every device, hence the same success
    rates (float64 landscape, so no branch decision differs by round-off)."""
    cfg = EscapeConfig(iterations=30, repetitions=40, sharpness_every=10, seed=4)
    ref = escape_experiment(TwoBasin.rescaled(), cfg)
    got = escape_experiment(TwoBasin.rescaled().to(device), cfg)
    assert got.success_rate == ref.success_rate
    for m in ref.final:
        assert got.final[m].device.type == "cpu"
        torch.testing.assert_close(got.final[m], ref.final[m], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got.sharpness[m], ref.sharpness[m], rtol=1e-9, atol=1e-9)


def test_perceptron_instances_move_and_anneal_the_same():
    """±1 arithmetic is exact in either dtype and the draws do not depend on it, so float64
    instances anneal to the float32 ones' replicas; on meta the instances move, all three."""
    from sgdlab.landscapes.perceptron import PerceptronInstances, anneal
    inst = PerceptronInstances.sample(3, 21, 0.6, generator=torch.Generator().manual_seed(0))
    want = anneal(inst, replicas=3, sweeps=20, gamma_max=1.0,
                  generator=torch.Generator().manual_seed(1))
    wide = copy.deepcopy(inst)
    assert wide.to(dtype=f64) is wide and wide.patterns.dtype == wide.labels.dtype == f64
    got = anneal(wide, replicas=3, sweeps=20, gamma_max=1.0,
                 generator=torch.Generator().manual_seed(1))
    assert got.dtype == f64 and torch.equal(got, want.double())
    inst.to("meta")
    assert {t.device.type for t in (inst.teacher, inst.patterns, inst.labels)} == {"meta"}
    with pytest.raises(UserError, match="floating"):
        inst.to(dtype=torch.int8)


@pytest.mark.parametrize("cls", list(FACTORIES), ids=lambda c: c.__name__)
def test_float64_chains_on_a_float32_landscape_are_promoted_or_named(cls):
    """Quadratic and TwoBasin failed in a matmul ("expected m1 and m2 to have the same
    dtype"), and Quadratic.hessian answered in float32; the p-spin glass and the landscapes
    that hold no tensors evaluate such chains in float64."""
    land = FACTORIES[cls]().to(dtype=f32)
    th = _points(land)
    calls = [land.loss, land.grad, land.hessian]
    if land.num_samples is not None:
        calls += [land.per_sample_loss, land.gradient_covariance]
    for call in calls:
        if land.dtype is None or land.evaluates_wider_chains:
            assert call(th).dtype == f64
        else:
            with pytest.raises(UserError, match=r"theta is torch.float64 but the landscape is "
                                                r"torch.float32"):
                call(th)
    land.to(dtype=f64)                           # the memoised dtype follows the move
    assert land.grad(th).dtype == f64
