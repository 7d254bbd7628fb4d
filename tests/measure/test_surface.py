"""Loss lines / planes, filter-normalised directions, trajectory PCA against closed forms."""
import copy
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.measure.interpolation import evaluate, recompute_bn_statistics
from sgdlab.measure.surface import (
    hessian_directions, loss_surface, random_direction, trajectory_pca,
)
from sgdlab.operators.params import params_vector
from sgdlab.store.trajectory import TrajectoryWriter, open_trajectory
from sgdlab.testing import dense_hessian_reference, tiny_classification, tiny_mlp


def _split(vec, model):
    out, i = [], 0
    for p in model.parameters():
        out.append(vec[i:i + p.numel()].reshape(p.shape))
        i += p.numel()
    assert i == len(vec)
    return out


def test_plane_of_least_squares_is_the_closed_form_quadratic():
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.randn(8, 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    d1 = random_direction(model, bias_bn="normalize", generator=g)
    d2 = random_direction(model, normalization="none", bias_bn="normalize", generator=g)
    surf = loss_surface(model, nn.MSELoss(), (x, y), [d1, d2], extent=(-2.0, 1.0), steps=5)
    w, b = model.weight.detach(), model.bias.detach()
    (w1, b1), (w2, b2) = _split(d1, model), _split(d2, model)
    grid = torch.linspace(-2.0, 1.0, 5, dtype=torch.float64)
    assert surf.coords == [grid.tolist(), grid.tolist()]
    for i, a in enumerate(grid):
        for j, c in enumerate(grid):
            pred = x @ (w + a * w1 + c * w2).T + (b + a * b1 + c * b2)
            assert surf.train_loss[i][j] == pytest.approx(float(((pred - y) ** 2).mean()),
                                                          rel=1e-12, abs=1e-14)
    assert surf.direction_norms == pytest.approx([float(d1.norm()), float(d2.norm())])
    assert surf.test_loss == [] and surf.bn_stats == "none"


def test_line_with_test_data_and_accuracy():
    model = tiny_mlp(3, 4, 2)
    train, test = tiny_classification(12, 3, 2, seed=1), tiny_classification(10, 3, 2, seed=2)
    d = random_direction(model, generator=torch.Generator().manual_seed(0))
    before = params_vector(model)
    surf = loss_surface(model, nn.CrossEntropyLoss(), train, [d], extent=0.5, steps=3,
                        test_data=test)
    assert torch.equal(params_vector(model), before)          # the model is not touched
    for k, a in enumerate((-0.5, 0.0, 0.5)):
        m = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(before + a * d, m.parameters())
        for split, data in (("train", train), ("test", test)):
            lo, ac = evaluate(m, nn.CrossEntropyLoss(), data)
            assert getattr(surf, f"{split}_loss")[k] == pytest.approx(lo, rel=1e-12)
            assert getattr(surf, f"{split}_acc")[k] == ac


def test_filter_layer_model_normalisations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(),
                          nn.Linear(12, 4)).double()
    params = [p.detach() for p in model.parameters()]

    def parts(**kw):
        return _split(random_direction(model, generator=torch.Generator().manual_seed(5), **kw),
                      model)

    for d, w in zip(parts(), params):                          # filter, biases/BN left out
        if w.dim() <= 1:
            assert torch.count_nonzero(d) == 0
        else:
            torch.testing.assert_close(d.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1))
            assert not torch.allclose(d, w)
    for d, w in zip(parts(bias_bn="weights"), params):
        if w.dim() <= 1:
            assert torch.equal(d, w)
    for d, w in zip(parts(bias_bn="normalize"), params):       # a 1-dim tensor is one filter
        if w.dim() <= 1:
            torch.testing.assert_close(d.norm(), w.norm())
    for d, w in zip(parts(normalization="layer", bias_bn="normalize"), params):
        torch.testing.assert_close(d.norm(), w.norm())
    dm = random_direction(model, normalization="model", bias_bn="normalize")
    torch.testing.assert_close(dm.norm(), params_vector(model).norm())
    # "none": the raw N(0, I) draws, tensor by tensor in parameter order
    g = torch.Generator().manual_seed(5)
    raw = [torch.randn(w.shape, dtype=w.dtype, generator=g) for w in params]
    for d, r in zip(parts(normalization="none", bias_bn="normalize"), raw):
        assert torch.equal(d, r)
    with pytest.raises(ValueError, match="normalization"):
        random_direction(model, normalization="filters")
    with pytest.raises(ValueError, match="bias_bn"):
        random_direction(model, bias_bn="ignore")


def test_direction_covers_trainable_parameters_only():
    model = tiny_mlp(3, 4, 2)
    model[0].weight.requires_grad_(False)
    d = random_direction(model)
    assert d.shape == params_vector(model).shape
    with pytest.raises(ValueError, match="shape"):
        loss_surface(model, nn.CrossEntropyLoss(), tiny_classification(6, 3, 2),
                     [torch.zeros(d.numel() + 1, dtype=d.dtype)])


def test_batch_norm_keep_and_recompute():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)).double()
    data = tiny_classification(16, 3, 2)
    model.train()
    model(data[0])                               # running statistics away from their defaults
    model.eval()
    bufs = {n: b.clone() for n, b in model.named_buffers()}
    d = random_direction(model, generator=torch.Generator().manual_seed(0))
    loss_fn = nn.CrossEntropyLoss()
    keep = loss_surface(model, loss_fn, data, [d], extent=1.0, steps=3)
    redo = loss_surface(model, loss_fn, data, [d], extent=1.0, steps=3, bn_stats="recompute")
    assert keep.bn_stats == "keep" and redo.bn_stats == "recompute"
    assert keep.train_loss[1] == pytest.approx(evaluate(model, loss_fn, data)[0], rel=1e-12)
    ref = copy.deepcopy(model)
    recompute_bn_statistics(ref, data)
    assert redo.train_loss[1] == pytest.approx(evaluate(ref, loss_fn, data)[0], rel=1e-12)
    assert redo.train_loss[1] != pytest.approx(keep.train_loss[1], rel=1e-6)
    # bn_data: the statistics come from other samples than the losses
    other = tiny_classification(12, 3, 2, seed=7)
    own = loss_surface(model, loss_fn, data, [d], extent=1.0, steps=3, bn_stats="recompute",
                       bn_data=other)
    ref = copy.deepcopy(model)
    recompute_bn_statistics(ref, other)
    assert own.train_loss[1] == pytest.approx(evaluate(ref, loss_fn, data)[0], rel=1e-12)
    assert own.train_loss[1] != pytest.approx(redo.train_loss[1], rel=1e-6)
    assert all(torch.equal(b, bufs[n]) for n, b in model.named_buffers())


def test_recomputed_statistics_follow_bn_layerwise():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 4),
                          nn.BatchNorm1d(4), nn.Linear(4, 2)).double().eval()
    x, y = tiny_classification(24, 3, 2)
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]
    d = random_direction(model, generator=torch.Generator().manual_seed(0))
    loss_fn = nn.CrossEntropyLoss()
    for layerwise in (True, False):
        s = loss_surface(model, loss_fn, batches, [d], extent=1.0, steps=3, bn_stats="recompute",
                         bn_layerwise=layerwise)
        own, other = copy.deepcopy(model), copy.deepcopy(model)
        recompute_bn_statistics(own, batches, layerwise=layerwise)
        recompute_bn_statistics(other, batches, layerwise=not layerwise)
        assert s.train_loss[1] == pytest.approx(evaluate(own, loss_fn, batches)[0], rel=1e-12)
        assert s.train_loss[1] != pytest.approx(evaluate(other, loss_fn, batches)[0], rel=1e-6)


def test_statistics_recomputed_in_chunks_for_batch_norm_without_parameters():
    """The chunked recomputation of the surface's batch-norm statistics took its device from
    a first parameter: StopIteration for batch norm without affine parameters, which has its
    running statistics all the same."""
    from sgdlab.measure.surface import _recompute_in_chunks

    x, y = tiny_classification(12, 3, 2)
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    model = nn.Sequential(nn.BatchNorm1d(3, affine=False)).double()
    reference = copy.deepcopy(model)
    _recompute_in_chunks(model, batches, True, None)
    recompute_bn_statistics(reference, batches, layerwise=True)
    for name, b in reference.named_buffers():
        torch.testing.assert_close(model.get_buffer(name), b, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(model[0].running_mean, x.mean(0), rtol=1e-12, atol=1e-15)


def test_trajectory_pca_recovers_the_plane_of_a_planar_path():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(10, 2, dtype=torch.float64, generator=g))
    end = torch.randn(10, dtype=torch.float64, generator=g)
    c = torch.tensor([[3.0, 1.0], [2.0, -1.0], [1.5, 0.5], [0.5, 0.2], [0.0, 0.0]],
                     dtype=torch.float64)
    pca = trajectory_pca(end + c @ basis.T, k=2)
    dirs = torch.stack(pca.directions, 1)
    # the directions span the plane: |det| of their coordinates in the basis is 1
    assert abs(float(torch.linalg.det(basis.T @ dirs))) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(pca.coords @ dirs.T, c @ basis.T)
    assert sum(pca.explained) == pytest.approx(1.0, abs=1e-12)
    assert pca.explained[0] >= pca.explained[1]
    from_numpy = trajectory_pca((end + c @ basis.T).numpy(), k=1)   # a trajectory file's rows
    torch.testing.assert_close(abs(from_numpy.directions[0] @ pca.directions[0]),
                               torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="equals the last"):
        trajectory_pca(end.expand(3, 10))


def test_trajectory_pca_of_a_path_off_any_plane_against_the_dense_eigenproblem():
    """Six random iterates in R⁵ (rank 5 about the last one): the directions are the top
    eigenvectors of DᵀD (D: the iterates minus the last), ``explained`` their eigenvalues over
    the trace (the whole deviation, not the part in the k directions), ``coords`` D's
    coordinates in them; k above min(T, d) is refused."""
    pts = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    dev = pts - pts[-1]
    lam, vec = torch.linalg.eigh(dev.T @ dev)
    pca = trajectory_pca(pts, k=2)
    for i in range(2):
        assert abs(float(pca.directions[i] @ vec[:, -1 - i])) == pytest.approx(1.0, abs=1e-12)
        assert pca.explained[i] == pytest.approx(float(lam[-1 - i] / lam.sum()), rel=1e-12)
    assert sum(pca.explained) < 0.95
    torch.testing.assert_close(pca.coords, dev @ torch.stack(pca.directions, 1))
    with pytest.raises(ValueError, match="Invalid k=6"):
        trajectory_pca(pts, k=6)
    # True was one direction; 2.5 and "2" failed inside with a TypeError
    for bad in (True, 2.5, "2"):
        with pytest.raises(ValueError, match=re.escape(f"Invalid k={bad!r}: need an int 1 <= k "
                                                       "<= min(T, d) = 5")):
            trajectory_pca(pts, k=bad)
    assert len(trajectory_pca(pts, k=np.int64(2)).directions) == 2


def test_trajectory_pca_reads_a_trajectory_file_as_is(tmp_path):
    """The trajectory instrument's rows, `open_trajectory(dir).snapshots`, are a read-only
    memmap: the PCA takes them without torch's warning about non-writable arrays."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(6, 10, dtype=torch.float64, generator=g)
    writer = TrajectoryWriter(tmp_path / "traj", 10, dtype="float64")
    for i, r in enumerate(rows):
        writer.append(r, step=i)
    snapshots = open_trajectory(tmp_path / "traj").snapshots
    assert not snapshots.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pca = trajectory_pca(snapshots, k=2)
    torch.testing.assert_close(pca.coords, trajectory_pca(rows, k=2).coords)


def test_hessian_directions_are_the_top_eigenvectors():
    model = tiny_mlp(3, 4, 2)
    data = tiny_classification(12, 3, 2)
    loss_fn = nn.CrossEntropyLoss()
    dirs = hessian_directions(model, loss_fn, data, 2, tol=1e-10,
                              generator=torch.Generator().manual_seed(0))
    _vals, vecs = torch.linalg.eigh(dense_hessian_reference(model, loss_fn, data))
    for d, ref in zip(dirs, (vecs[:, -1], vecs[:, -2]), strict=True):
        assert float(d.norm()) == pytest.approx(1.0, abs=1e-12)
        assert abs(float(d @ ref)) == pytest.approx(1.0, abs=1e-8)


def test_vmapped_and_in_place_evaluations_agree():
    model = tiny_mlp(3, 4, 2)
    train = tiny_classification(12, 3, 2, seed=1)
    batches = [(train[0][:5], train[1][:5]), (train[0][5:], train[1][5:])]   # two batches
    g = torch.Generator().manual_seed(0)
    plane = [random_direction(model, generator=g) for _ in range(2)]
    loop = loss_surface(model, nn.CrossEntropyLoss(), batches, plane, steps=4)
    vm = loss_surface(model, nn.CrossEntropyLoss(), batches, plane, steps=4, vectorize=True,
                      chunk_size=3)
    for a, b in zip(loop.train_loss, vm.train_loss):
        assert a == pytest.approx(b, rel=1e-12)
    assert loop.train_acc == vm.train_acc
    whole = loss_surface(model, nn.CrossEntropyLoss(), train, plane, steps=4)
    for a, b in zip(loop.train_loss, whole.train_loss):      # batches weighted by size
        assert a == pytest.approx(b, rel=1e-12)
    reg = nn.Linear(3, 1).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    for vectorize in (False, True):
        line = loss_surface(reg, nn.MSELoss(), (x, x[:, :1]), [random_direction(reg)], steps=3,
                            vectorize=vectorize)
        assert all(a != a for a in line.train_acc)               # NaN: regression targets


def test_a_single_direction_tensor_and_the_grid_checks():
    model = tiny_mlp(3, 4, 2)
    data = tiny_classification(8, 3, 2)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    d1, d2 = random_direction(model, generator=g), random_direction(model, generator=g)
    line = loss_surface(model, loss_fn, data, [d1], extent=0.5, steps=3)
    # one flat vector is one direction (not d scalar ones)
    assert loss_surface(model, loss_fn, data, d1, extent=0.5, steps=3) == line
    plane = loss_surface(model, loss_fn, data, [d1, d2], extent=0.5, steps=3)
    for stacked in (torch.stack([d1, d2], 1), torch.stack([d1, d2])):    # (d, 2) or (2, d)
        got = loss_surface(model, loss_fn, data, stacked, extent=0.5, steps=3)
        torch.testing.assert_close(torch.tensor(got.train_loss), torch.tensor(plane.train_loss),
                                   rtol=1e-12, atol=0)
    import numpy as np
    assert loss_surface(model, loss_fn, data, d1, extent=np.float32(0.5), steps=3) == line
    # an infinite extent would make every coordinate, the origin too (0 · inf), NaN
    for extent, steps in ((float("inf"), 3), ((-1.0, float("inf")), 3), ((0.0, 1.0, 2.0), 3),
                          (1.0, 2.5), (0.0, 3), (1.0, 1)):
        with pytest.raises(ValueError, match="finite extent"):
            loss_surface(model, loss_fn, data, d1, extent=extent, steps=steps)
    bad = d2.clone()
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="direction 1 has non-finite entries"):
        loss_surface(model, loss_fn, data, [d1, bad], extent=0.5, steps=3)
    # a plane holds two directions: a third (or none) would be dropped from the grid silently
    for dirs in ([d1, d2, d1], [], torch.stack([d1, d2, d1])):
        with pytest.raises(ValueError, match="need one or two directions, got"):
            loss_surface(model, loss_fn, data, dirs, extent=0.5, steps=3)


def test_loss_only_surface_matches_the_full_one():
    import math

    from sgdlab.measure import loss_surface, random_direction
    from sgdlab.testing import tiny_classification, tiny_mlp

    model, loss_fn = tiny_mlp(3, 4, 2), torch.nn.CrossEntropyLoss()
    data = tiny_classification(n=10, in_dim=3)
    g = torch.Generator().manual_seed(0)
    plane = [random_direction(model, generator=g) for _ in range(2)]
    full = loss_surface(model, loss_fn, data, plane, steps=3)
    lean = loss_surface(model, loss_fn, data, plane, steps=3, accuracy=False)
    assert lean.train_loss == full.train_loss
    assert all(math.isnan(a) for row in lean.train_acc for a in row)
    assert all(0 <= a <= 1 for row in full.train_acc for a in row)


def test_random_direction_draws_from_the_generator_in_the_parameters_dtype_and_device():
    # the draw is the generator's stream, on its device (CPU here), in each parameter's dtype;
    # the direction lives with the parameters ("meta" stands in for an accelerator)
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1)).double()
    d = random_direction(model, normalization="none", bias_bn="normalize",
                         generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    expected = torch.cat([torch.randn(p.shape, dtype=torch.float64, generator=g).reshape(-1)
                          for p in model.parameters()])
    assert d.dtype == torch.float64 and torch.equal(d, expected)
    on_meta = random_direction(model.to("meta"), generator=torch.Generator().manual_seed(3))
    assert on_meta.device.type == "meta" and on_meta.dtype == torch.float64


def test_a_model_output_that_is_no_tensor_has_a_surface_without_accuracy():
    """Logits returned in a dict, a loss that unpacks them: the losses are the model's at
    each point (in place and vmapped), the accuracy NaN as for any output that is not one
    (N, C) tensor (it failed on ``'dict' object has no attribute 'dim'``)."""
    from sgdlab.testing import DictOutput, dict_logits_loss

    torch.manual_seed(0)
    model, (x, y) = DictOutput().double(), tiny_classification()
    d = random_direction(model, generator=torch.Generator().manual_seed(1))
    theta = params_vector(model)
    ref = []
    for c in (-1.0, 0.0, 1.0):
        moved = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(theta + c * d, moved.parameters())
        with torch.no_grad():
            ref.append(float(dict_logits_loss(moved(x), y)))
    for vectorize in (False, True):
        surf = loss_surface(model, dict_logits_loss, (x, y), [d], steps=3, vectorize=vectorize)
        torch.testing.assert_close(torch.tensor(surf.train_loss), torch.tensor(ref))
        assert all(a != a for a in surf.train_acc)
    assert evaluate(model, dict_logits_loss, (x, y))[0] == pytest.approx(ref[1], rel=1e-12)


def test_a_trajectory_pca_prints_its_directions_by_shape_not_entry_by_entry():
    from sgdlab.measure import trajectory_pca

    pca = trajectory_pca(torch.randn(10, 500, generator=torch.Generator().manual_seed(0)))
    text = repr(pca)
    assert "\n" not in text and len(text) < 400, text
    assert text.startswith("TrajectoryPCA(directions=[Tensor(shape=(500,), float32, range [")
    assert "coords=Tensor(shape=(10, 2), float32, range [" in text


def test_grid_coordinates_are_float64_even_where_float32_rounds():
    model = nn.Linear(2, 1).double()
    x, y = torch.ones(3, 2, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64)
    d = torch.ones(3, dtype=torch.float64)
    surf = loss_surface(model, nn.MSELoss(), (x, y), d, extent=0.3, steps=7)
    exact = [-0.3 + 0.1 * k for k in range(7)]               # 0.1 is no float32
    assert surf.coords[0] == pytest.approx(exact, rel=1e-14, abs=1e-15)
    w, b = model.weight.detach(), model.bias.detach()
    for c, loss in zip(exact, surf.train_loss):      # all-ones inputs: pred = Σw + b + 3c
        assert loss == pytest.approx(float(w.sum() + b[0] + 3 * c) ** 2, rel=1e-12)


def _bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 4),
                         nn.BatchNorm1d(4), nn.Linear(4, 2)).double()


def test_a_model_in_train_mode_is_evaluated_in_eval_mode_with_its_running_statistics():
    model = _bn_net()
    data = tiny_classification(10, 3, 2)
    model(data[0])                                   # train mode: running statistics move
    d = random_direction(model, generator=torch.Generator().manual_seed(0))
    surf = loss_surface(model, nn.CrossEntropyLoss(), data, d, extent=1.0, steps=3)
    assert model.training
    assert surf.train_loss[1] == pytest.approx(
        evaluate(model, nn.CrossEntropyLoss(), data)[0], rel=1e-12)


def test_recomputed_statistics_default_to_the_whole_training_set_as_one_batch():
    # default bn_layerwise: the statistics of the whole set as one batch at every layer, and
    # the test split's losses use the training data's statistics (bn_data's default)
    model = _bn_net().eval()
    x, y = tiny_classification(24, 3, 2)
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]
    test = tiny_classification(9, 3, 2, seed=3)
    d = random_direction(model, generator=torch.Generator().manual_seed(0))
    loss_fn = nn.CrossEntropyLoss()
    s = loss_surface(model, loss_fn, batches, d, extent=1.0, steps=3, bn_stats="recompute",
                     test_data=test)
    ref = copy.deepcopy(model)
    recompute_bn_statistics(ref, (x, y))             # one batch: exact at every layer
    assert s.train_loss[1] == pytest.approx(evaluate(ref, loss_fn, batches)[0], rel=1e-10)
    assert s.test_loss[1] == pytest.approx(evaluate(ref, loss_fn, test)[0], rel=1e-10)


def test_steps_and_chunk_size_take_numpy_and_torch_ints_and_refuse_bools():
    # a torch int steps was refused, chunk_size=True (1 point per pass) and 2.5 were taken
    model = nn.Linear(3, 1).double()
    data = (torch.ones(4, 3, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64))
    d = torch.ones(4, dtype=torch.float64)
    for steps, chunk in ((torch.tensor(3), np.int64(2)), (np.int64(3), torch.tensor(2))):
        surf = loss_surface(model, nn.MSELoss(), data, d, steps=steps, chunk_size=chunk)
        assert surf.coords == [[-1.0, 0.0, 1.0]]
    # "(an int >= 1)", as every count of the measurements says it (not "must be an int")
    for kw, match in (({"steps": True}, "steps=True"),
                      ({"chunk_size": True}, r"^Invalid chunk_size=True \(an int >= 1\)$"),
                      ({"chunk_size": 2.5}, r"^Invalid chunk_size=2.5 \(an int >= 1\)$")):
        with pytest.raises(ValueError, match=match):
            loss_surface(model, nn.MSELoss(), data, d, **kw)
