"""docs/COMING-FROM.md as a user reads it: each section's sgdlab snippet runs as written (after
the setup block, in a fresh namespace) and gives the exact float64 quantity it names; where the
peer library is installed, its snippet runs on the same model and data and the numbers agree
with sgdlab's as the section's notes say (or differ as they say). Cockpit does not import on
current setuptools: its section's sgdlab side is checked against the formulas alone.

The snippets come from the markdown itself, so the page cannot drift from what is tested."""
from __future__ import annotations

import contextlib
import copy
import io
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sgdlab.testing import (dense_hessian_reference, fenced_blocks, ggn_reference,
                            per_sample_gradients_loop)

# one torch thread while a test runs, restored after it (not left set for the next files)
pytestmark = pytest.mark.usefixtures("one_thread")

DOC = Path(__file__).resolve().parents[1] / "docs" / "COMING-FROM.md"
PEERS = {"PyHessian": "pyhessian", "BackPACK": "backpack", "Cockpit": None,
         "loss-landscapes": "loss_landscapes", "hessian-eigenthings": "hessian_eigenthings",
         "curvlinops": "curvlinops"}


def _sections() -> dict[str, str]:
    parts = re.split(r"^## ", DOC.read_text(), flags=re.M)
    return {p.split("\n", 1)[0].strip(): p for p in parts[1:]} | {"": parts[0]}


def _blocks(section: str) -> dict[str, str]:
    """{"setup" | "sgdlab" | "peer: MODULE": code} of a section, by each block's first line."""
    out = {}
    for code in (b.code for b in fenced_blocks(_sections()[section], "python")):
        key = code.split("\n", 1)[0].lstrip("# ").split(":")[0]
        key = code.split("\n", 1)[0][2:] if key == "peer" else key
        assert key not in out, f"{section}: two {key} blocks"
        out[key] = code
    return out


def _run(code: str, ns: dict) -> dict:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        exec(compile(code, str(DOC), "exec"), ns)
    return ns


def _setup() -> dict:
    return _run(_blocks("")["setup"], {})


def sgdlab_side(section: str) -> dict:
    return _run(_blocks(section)["sgdlab"], _setup())


def peer_side(section: str, ns: dict | None = None) -> dict:
    module = PEERS[section]
    pytest.importorskip(module)
    ns = _setup() if ns is None else ns
    return _run(_blocks(section)[f"peer: {module}"], ns)


def test_every_peer_has_a_section_and_the_docs_link_it():
    sections = _sections()
    for peer, module in PEERS.items():
        assert peer in sections, peer
        blocks = _blocks(peer)
        assert "sgdlab" in blocks, peer
        if module is not None:
            assert f"peer: {module}" in blocks, peer
    root = DOC.parents[1]
    assert "docs/COMING-FROM.md" in (root / "README.md").read_text()
    assert "(COMING-FROM.md)" in (root / "docs" / "GUIDE.md").read_text()


def _free_names(code: str) -> set[str]:
    """Names a snippet reads that neither it nor Python's builtins define."""
    import ast
    import builtins

    tree = ast.parse(code)
    bound, read = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.arg)):
            bound.add(getattr(node, "name", None) or node.arg)
    return read - bound


def test_every_snippet_needs_only_the_setup_block():
    # the page says each snippet runs as written on the setup block's names: a peer block
    # that read a name of the sgdlab block (curvlinops' `v`) failed when copied alone
    setup = _blocks("")["setup"]
    given = set(_run(setup, {})) | _free_names(setup)
    for section in _sections():
        for key, code in _blocks(section).items():
            if key != "setup":
                assert _free_names(code) - given == set(), (section, key)


def test_named_functions_and_instruments_exist():
    """Every `sgdlab.measure` / `sgdlab.operators` name and instrument the page gives exists."""
    import sgdlab.measure
    import sgdlab.operators
    from sgdlab.train.instruments import instrument_params, instruments

    text = DOC.read_text()
    known = set(sgdlab.measure.__all__) | set(sgdlab.operators.__all__)
    rows = [line.split("|")[2] for line in text.splitlines()
            if line.startswith("| ") and line.count("|") >= 3]
    named = {m for row in rows for m in re.findall(r"`([a-z_]+[a-z])\(", row)} - {"eigsh"}
    named |= {m for row in rows for m in re.findall(r"`([A-Z]\w+Operator)\(", row)}
    assert named - known == set(), named - known
    assert {"hessian_eigenpairs", "per_sample_gradients", "loss_surface"} <= named
    used = set(re.findall(r"\{name: (\w+)", text)) | set(re.findall(
        r'build_instrument\("(\w+)"', text)) | set(re.findall(r"\| `(\w+)`(?: with[^→]*)? →",
                                                                text))
    assert {"hessian", "batch_statistics", "step_length", "dynamics"} <= used
    assert used - set(instruments()) == set()
    for name, option in re.findall(r"`(\w+)` with `(\w+)", text):
        if name in instruments():
            assert option in instrument_params(name), (name, option)


# --------------------------------------------------------------------------------------------
# PyHessian

def _dense(ns) -> torch.Tensor:
    """The float64 Hessian by double backward, row by row (not sgdlab.measure's, under test)."""
    return dense_hessian_reference(ns["model"], ns["loss_fn"], (ns["x"], ns["y"]))


def test_pyhessian_sgdlab_side():
    ns = sgdlab_side("PyHessian")
    ev = torch.linalg.eigvalsh(_dense(ns)).double()
    by_magnitude = ev[ev.abs().argsort(descending=True)][:5]
    assert torch.allclose(ns["top5"], by_magnitude, rtol=1e-9, atol=1e-12)
    # the note's values, negative ones among them
    assert ns["top5"].numpy().round(3).tolist() == [0.920, -0.714, -0.646, 0.632, 0.582]
    assert abs(ns["trace"].value - float(ev.sum())) < 5 * ns["trace"].stderr
    nodes = ns["density"].nodes[ns["density"].weights > 1e-10]
    # full-length Lanczos (51 = d steps): the quadrature's nodes are eigenvalues
    assert float(nodes.max()) == pytest.approx(float(ev[-1]), rel=1e-8)
    assert float(nodes.min()) == pytest.approx(float(ev[0]), rel=1e-8)


def test_pyhessian_agrees():
    ns = peer_side("PyHessian", sgdlab_side("PyHessian"))
    # converged (tol=1e-10), every one is low by the same factor: its vectors' norm
    # 1/(1 + 1e-6) squared in vᵀHv (the note), not a round-off, which would vary
    offset = np.asarray(ns["peer_top5"]) / ns["top5"].numpy() - 1
    np.testing.assert_allclose(offset, (1 + 1e-6) ** -2 - 1, rtol=0.02)
    # the same Rademacher probes as its trace drew, through sgdlab's Hessian operator
    from sgdlab.operators import HessianOperator, params_vector

    model = ns["model"]
    op = HessianOperator(model, ns["loss_fn"], (ns["x"], ns["y"]))
    torch.manual_seed(0)
    probes = []
    for _ in ns["peer_vhv"]:
        v = [torch.randint_like(p, high=2) for p in model.parameters()]
        for v_i in v:
            v_i[v_i == 0] = -1
        probes.append(torch.cat([t.reshape(-1) for t in v]))
    probes = torch.stack(probes, 1)
    assert probes.shape[0] == params_vector(model).numel()
    np.testing.assert_allclose(ns["peer_vhv"], op.quadratic_forms(probes).numpy(), rtol=1e-10)
    # its default tolerance: λ_max off by about 1e-3 (1.1e-3 here, the note's "1e-3 or so")
    torch.manual_seed(0)
    default, _ = ns["h"].eigenvalues(top_n=1)
    err = abs(default[0] - float(ns["top5"][0])) / float(ns["top5"][0])
    assert 1e-4 < err < 1e-2
    assert not ns["model"].training


def test_pyhessian_sets_eval_mode_and_stops_early_on_a_negative_trace():
    pytest.importorskip("pyhessian")
    from pyhessian import hessian

    ns = _setup()
    model, data = ns["model"].train(), (ns["x"], ns["y"])

    def negated(out, y):                            # Tr ∇² < 0 where Tr ∇² of the CE > 0
        return -torch.nn.functional.cross_entropy(out, y)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hessian(model, ns["loss_fn"], data=data, cuda=False)
        assert not model.training                   # and left so
        # its graph-carrying .grad stays: the next one on the model adds its gradient to it
        # (here -g + g = 0: a zero Hessian)
        torch.manual_seed(0)
        assert hessian(model, negated, data=data, cuda=False).trace() == [0.0]
        # ... until a method runs: it calls model.zero_grad() (the note)
        model.zero_grad(set_to_none=True)
        hessian(model, ns["loss_fn"], data=data, cuda=False).eigenvalues(maxIter=2)
        assert all(p.grad is None for p in model.parameters())
        h = hessian(model, negated, data=data, cuda=False)
        torch.manual_seed(0)
        vhv = h.trace(maxIter=100, tol=1e-3)
    model.zero_grad(set_to_none=True)
    assert len(vhv) == 2 and np.mean(vhv) < 0
    # density() calls the removed torch.eig: absent, or a stub that raises (torch 2.x)
    with pytest.raises((AttributeError, RuntimeError), match="eig"):
        h.density(iter=5, n_v=1)
    model.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------------------------
# BackPACK

def _explicit_grads(ns) -> torch.Tensor:
    """∇ℓ_i one sample at a time (the float64 reference)."""
    return per_sample_gradients_loop(ns["model"], ns["loss_fn"], (ns["x"], ns["y"]))


def test_backpack_sgdlab_side():
    ns = sgdlab_side("BackPACK")
    g = _explicit_grads(ns)
    assert torch.allclose(ns["grads"], g, rtol=0, atol=1e-14)
    assert torch.allclose(ns["variance"], g.var(0, unbiased=False), atol=1e-14)
    assert torch.allclose(ns["second_moment"], (g ** 2).mean(0), atol=1e-14)
    assert torch.allclose(ns["diag_h"], _dense(ns).diagonal(), atol=1e-13)
    assert torch.allclose(ns["diag_ggn"], _dense_ggn(ns).diagonal(), atol=1e-13)


def test_backpack_agrees():
    ns = peer_side("BackPACK", sgdlab_side("BackPACK"))
    n = len(ns["x"])
    # exactly the samples' gradients once the mean's 1/N is undone (the note's scaling)
    assert torch.allclose(ns["peer_grads"] * n, ns["grads"], rtol=0, atol=1e-14)
    assert torch.allclose(ns["peer_variance"] * n ** 2, ns["variance"], rtol=0, atol=1e-14)
    assert torch.allclose(ns["peer_second_moment"] * n, ns["second_moment"], atol=1e-14)
    assert torch.allclose(ns["peer_diag_ggn"], ns["diag_ggn"], rtol=0, atol=1e-14)
    assert torch.allclose(ns["peer_diag_h"], ns["diag_h"], rtol=0, atol=1e-14)


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_backpack_unknown_modules_and_train_mode_batch_norm_warn():
    pytest.importorskip("backpack")
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad

    from sgdlab.errors import UserError
    from sgdlab.operators import per_sample_gradients

    ns = _setup()
    nn = torch.nn
    loss = extend(nn.CrossEntropyLoss())
    ln = extend(nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3)).double())
    with pytest.warns(UserWarning, match="does not have an extension"), backpack(BatchGrad()):
        loss(ln(ns["x"]), ns["y"]).backward()
    assert not hasattr(ln[1].weight, "grad_batch") and hasattr(ln[2].weight, "grad_batch")
    bn = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)).double().train()
    with pytest.warns(UserWarning, match="may not be meaningful"), backpack(BatchGrad()):
        loss(extend(copy.deepcopy(bn))(ns["x"]), ns["y"]).backward()
    with pytest.raises(UserError, match="BatchNorm1d.*train mode"):
        per_sample_gradients(bn, ns["loss_fn"], (ns["x"], ns["y"]))


# --------------------------------------------------------------------------------------------
# Cockpit (not importable: the sgdlab side against Cockpit's formulas)

def test_cockpit_sgdlab_side():
    ns = sgdlab_side("Cockpit")
    g = _explicit_grads(ns)
    b, mean = len(g), g.mean(0)
    s = torch.cov(g.T)                                          # unbiased S
    stats = ns["stats"]
    assert stats.norm_test == pytest.approx(math.sqrt(float(s.trace()) / (b * mean @ mean)),
                                            rel=1e-10)
    pop = g.var(0, unbiased=False)
    assert stats.mean_gsnr == pytest.approx(float((mean ** 2 / pop).mean()), rel=1e-10)
    with torch.no_grad():
        loss = float(ns["loss_fn"](ns["model"](ns["x"]), ns["y"]))
    assert stats.cabs_batch_size == pytest.approx(0.1 * float(pop.sum()) / loss, rel=1e-10)
    ggn = _dense_ggn(ns).diagonal()
    assert ns["tic"].trace == pytest.approx(float((g ** 2).mean(0).sum() / ggn.sum()), rel=1e-10)
    kept = ggn > 0
    assert ns["tic"].diagonal == pytest.approx(
        float(((g ** 2).mean(0)[kept] / ggn[kept]).sum()), rel=1e-10)
    assert math.isfinite(ns["step"].alpha)
    assert len(ns["callbacks"]) == 3


# --------------------------------------------------------------------------------------------
# loss-landscapes

def _loss_at(ns, theta: torch.Tensor) -> float:
    from sgdlab.operators import set_params_vector

    m = copy.deepcopy(ns["model"])
    set_params_vector(m, theta)
    with torch.no_grad():
        return float(ns["loss_fn"](m(ns["x"]), ns["y"]))


def test_loss_landscapes_sgdlab_side():
    from sgdlab.operators import params_vector

    ns = sgdlab_side("loss-landscapes")
    a, b = params_vector(ns["model"]), params_vector(ns["model_end"])
    for alpha, loss in zip(ns["curve"].alphas, ns["curve"].train_loss):
        assert loss == pytest.approx(_loss_at(ns, torch.lerp(a, b, alpha)), rel=1e-12)
    plane, (d1, d2) = ns["plane"], ns["dirs"]
    c = plane.coords[0]
    assert c[5] == pytest.approx(0, abs=1e-15)
    assert plane.train_loss[5][5] == pytest.approx(_loss_at(ns, a), rel=1e-12)
    assert plane.train_loss[2][9] == pytest.approx(_loss_at(ns, a + c[2] * d1 + c[9] * d2),
                                                   rel=1e-12)
    # filter-normalised, biases zero: each output row of a weight has that row's norm
    w = ns["model"][0].weight
    d1_w = d1[:w.numel()].reshape(w.shape)
    assert torch.allclose(d1_w.norm(dim=1), w.norm(dim=1), rtol=1e-12)
    assert d1[w.numel():w.numel() + 6].abs().max() == 0


def test_loss_landscapes_agrees():
    ns = peer_side("loss-landscapes", sgdlab_side("loss-landscapes"))
    # its α = 1/S, ..., 1: sgdlab's curve without α = 0, exactly
    np.testing.assert_allclose(ns["peer_curve"], ns["curve"].train_loss[1:], rtol=1e-12)
    # its plane, rebuilt: its directions (same draws), its scale and its zig-zag grid
    from loss_landscapes.model_interface.model_parameters import orthogonal_to, rand_u_like
    from loss_landscapes.model_interface.model_wrapper import wrap_model

    from sgdlab.measure import loss_surface
    from sgdlab.operators import params_vector, set_params_vector

    model, steps, distance = ns["model"], 6, 2
    torch.manual_seed(0)
    start = wrap_model(copy.deepcopy(model)).get_module_parameters()
    dirs = [rand_u_like(start)]
    dirs.append(orthogonal_to(dirs[0]))
    theta = params_vector(model)
    flat = []
    for d in dirs:
        d.filter_normalize_(start)
        u = torch.cat([t.reshape(-1) for t in d.parameters])
        flat.append(u * (theta.norm() / distance / steps) / u.norm())
    assert bool((flat[0] > 0).all())                     # uniform [0, 1): all positive
    bias = ns["model"][0].bias.detach()                  # ±|b| entrywise, up to the scale
    for u in flat:
        ratio = u[24:30].abs() / bias.abs()
        assert torch.allclose(ratio, ratio[0].expand(6), rtol=1e-10)
    grid = dict(extent=(-steps / 2, steps / 2 - 1), steps=steps, accuracy=False)
    odd = np.array(loss_surface(model, ns["loss_fn"], (ns["x"], ns["y"]), flat,
                                **grid).train_loss)
    shifted = copy.deepcopy(model)
    set_params_vector(shifted, theta + flat[1])          # one step further along d₂
    even = np.array(loss_surface(shifted, ns["loss_fn"], (ns["x"], ns["y"]), flat,
                                 **grid).train_loss)
    peer = ns["peer_plane"]
    np.testing.assert_allclose(peer[0::2], even[0::2], rtol=1e-12)
    np.testing.assert_allclose(peer[1::2], odd[1::2], rtol=1e-12)
    assert not np.allclose(peer[1::2], even[1::2], rtol=1e-6)    # the rows do differ
    # the span: ±‖θ‖/(2D) along each direction, smaller for a larger distance
    assert float(flat[0].norm()) * steps / 2 == pytest.approx(
        float(theta.norm()) / (2 * distance), rel=1e-12)


def test_loss_landscapes_interpolation_moves_the_start_model():
    pytest.importorskip("loss_landscapes")
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    ns = _setup()
    start = copy.deepcopy(ns["model"])
    loss_landscapes.linear_interpolation(start, ns["model_end"],
                                         Loss(ns["loss_fn"], ns["x"], ns["y"]), steps=4)
    for p, q in zip(start.parameters(), ns["model_end"].parameters()):
        assert torch.allclose(p, q, atol=1e-12) and not p.requires_grad
        assert not q.requires_grad                          # the end model's too (the note)


def test_loss_landscapes_random_line_is_one_sided():
    """random_line's S points are the last S of loss_surface's line over (0, ‖θ‖ / (D‖d‖)) in
    S + 1 points (the table's mapping and the Scale note), its direction rebuilt."""
    pytest.importorskip("loss_landscapes")
    import loss_landscapes
    from loss_landscapes.metrics import Loss
    from loss_landscapes.model_interface.model_parameters import rand_u_like
    from loss_landscapes.model_interface.model_wrapper import wrap_model

    from sgdlab.measure import loss_surface
    from sgdlab.operators import params_vector

    ns = _setup()
    model, data, steps, distance = ns["model"], (ns["x"], ns["y"]), 4, 2
    torch.manual_seed(0)
    peer = loss_landscapes.random_line(model, Loss(ns["loss_fn"], *data), distance=distance,
                                       steps=steps, normalization="filter",
                                       deepcopy_model=True)
    torch.manual_seed(0)
    start = wrap_model(copy.deepcopy(model)).get_module_parameters()
    d = rand_u_like(start)
    d.filter_normalize_(start)
    u = torch.cat([t.reshape(-1) for t in d.parameters])
    extent = float(params_vector(model).norm() / (distance * u.norm()))
    line = loss_surface(model, ns["loss_fn"], data, u, extent=(0, extent), steps=steps + 1,
                        accuracy=False)
    np.testing.assert_allclose(peer, line.train_loss[1:], rtol=1e-12)


# --------------------------------------------------------------------------------------------
# hessian-eigenthings

def test_hessian_eigenthings_sgdlab_side():
    ns = sgdlab_side("hessian-eigenthings")
    ev = torch.linalg.eigvalsh(_dense(ns)).flip(0)[:3]
    assert torch.allclose(ns["top3"], ev, rtol=1e-9)
    assert torch.allclose(ns["top3_batches"], ev, rtol=1e-9)     # weighted by batch size


def test_hessian_eigenthings_agrees():
    ns = peer_side("hessian-eigenthings", sgdlab_side("hessian-eigenthings"))
    top3 = ns["top3"].numpy()
    np.testing.assert_allclose(ns["peer_top3"].numpy(), top3, rtol=1e-9)
    # 2k steps: not converged, which its flags say (the note's 0.907 and 0.284); pinned
    # numbers hold: with seed=None its start vector comes from a fresh torch.Generator at
    # torch's default seed, the same draw on every run
    default = ns["peer_default"].eigenvalues.numpy()
    assert not ns["peer_default"].converged.any()
    assert default[0] == pytest.approx(0.907, abs=5e-4)
    assert default[2] == pytest.approx(0.284, abs=5e-4)
    assert top3[2] == pytest.approx(0.582, abs=5e-4)
    # equal weights for a 10 + 6 split: another matrix (the note's 0.951)
    assert float(ns["peer_top3_batches"][0]) == pytest.approx(0.951, abs=5e-4)
    assert float(ns["top3_batches"][0]) == pytest.approx(0.920, abs=5e-4)


# --------------------------------------------------------------------------------------------
# curvlinops

def _dense_ggn(ns) -> torch.Tensor:
    """Jᵀ (∂²L/∂f²) J, the cross-entropy's GGN, from the full Jacobian."""
    return ggn_reference(ns["model"], ns["loss_fn"], (ns["x"], ns["y"]))


def test_curvlinops_sgdlab_side():
    ns = sgdlab_side("curvlinops")
    h, g = _dense(ns), _dense_ggn(ns)
    assert torch.allclose(ns["h_top3"], torch.linalg.eigvalsh(h).flip(0)[:3], rtol=1e-9)
    assert torch.allclose(ns["Hv"], h @ ns["v"], atol=1e-13)
    assert torch.allclose(ns["Gv"], g @ ns["v"], atol=1e-13)
    assert torch.allclose(ns["g_top3"], torch.linalg.eigvalsh(g).flip(0)[:3], rtol=1e-9)


def test_curvlinops_agrees():
    ns = peer_side("curvlinops", sgdlab_side("curvlinops"))
    np.testing.assert_allclose(ns["peer_h_top3"], ns["h_top3"].numpy(), rtol=1e-9)
    np.testing.assert_allclose(ns["peer_g_top3"], ns["g_top3"].numpy(), rtol=1e-9)
    assert torch.allclose(torch.as_tensor(ns["peer_Hv"]).reshape(-1), ns["Hv"], atol=1e-14)
    assert torch.allclose(torch.as_tensor(ns["peer_Gv"]).reshape(-1), ns["Gv"], atol=1e-14)


def test_curvlinops_sum_loss_is_n_times_the_mean_and_sgdlab_refuses_it_in_batches():
    pytest.importorskip("curvlinops")
    from curvlinops import HessianLinearOperator

    from sgdlab.errors import UserError
    from sgdlab.operators import HessianOperator

    ns = _setup()
    model, batches, n = ns["model"], ns["batches"], len(ns["x"])
    summed = torch.nn.CrossEntropyLoss(reduction="sum")
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    peer = HessianLinearOperator(model, summed, list(model.parameters()), batches) @ v
    assert torch.allclose(peer, n * HessianOperator(model, ns["loss_fn"], batches).matvec(v),
                          atol=1e-13)
    one = HessianOperator(model, summed, (ns["x"], ns["y"])).matvec(v)
    assert torch.allclose(peer, one, atol=1e-13)
    with pytest.raises(UserError, match="reduction='sum'"):
        HessianOperator(model, summed, batches).matvec(v)


def test_curvlinops_refuses_active_dropout():
    pytest.importorskip("curvlinops")
    from curvlinops import HessianLinearOperator

    ns = _setup()
    model = torch.nn.Sequential(ns["model"], torch.nn.Dropout(0.5)).train()
    with pytest.raises(RuntimeError, match="deterministic"):
        HessianLinearOperator(model, ns["loss_fn"], list(model.parameters()), ns["batches"])


def test_sgdlab_fixes_one_dropout_draw_and_warns():
    """The curvlinops section's note on sgdlab's side: one fixed draw of the masks per batch,
    said in a warning, so the same v gives the same Hv."""
    from sgdlab.operators import HessianOperator

    ns = _setup()
    model = torch.nn.Sequential(ns["model"], torch.nn.Dropout(0.5)).train()
    with pytest.warns(UserWarning, match="one fixed draw of the dropout masks"):
        H = HessianOperator(model, ns["loss_fn"], ns["batches"])
        v = torch.ones(H.shape[0], dtype=torch.float64)
        assert torch.equal(H.matvec(v), H.matvec(v))
