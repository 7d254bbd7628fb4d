"""sgdlab.operators.params: the refusals of measured_params."""
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.errors import UserError
from sgdlab.operators import params as P


def _holding(*tensors) -> nn.Module:
    module = nn.Module()
    for i, t in enumerate(tensors):
        module.register_parameter(f"p{i}", nn.Parameter(t))
    return module


def test_views_of_one_vector_are_refused_only_where_they_share_an_element():
    # every other entry of one vector: address ranges interleave, no element in common
    flat = torch.randn(8, dtype=torch.float64)
    even, odd, pair = flat[0::2], flat[1::2], flat[2:4]
    assert list(P.measured_params(_holding(even, odd))) == ["p0", "p1"]
    # the third overlaps the first at flat[2] and the second at flat[3]: named with the
    # first, whose common element comes first; no one of them is a view of another
    with pytest.raises(UserError, match=r"parameters p0 and p2 share memory \(views with "
                                        r"elements in common"):
        P.measured_params(_holding(even, odd, pair))
    meta = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).to("meta")   # no memory at all
    assert list(P.measured_params(meta)) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_the_element_by_element_overlap_check_runs_once_per_layout(monkeypatch):
    # measured_params runs on every flat vector: parameters whose address ranges interleave
    # (column blocks of one matrix) were compared element by element on every call
    P._first_common_element.cache_clear()
    calls = []
    unit_offsets = P._unit_offsets
    monkeypatch.setattr(P, "_unit_offsets", lambda *a: calls.append(a) or unit_offsets(*a))
    w = torch.randn(6, 5, dtype=torch.float64)
    blocks = _holding(w[:, :2], w[:, 2:])
    for _ in range(3):
        assert list(P.measured_params(blocks)) == ["p0", "p1"]
    assert len(calls) == 2              # one per parameter, on the first call only
    # a real overlap is still refused, on every call
    shared = _holding(w[:, :3], w[:, 2:])
    for _ in range(2):
        with pytest.raises(UserError, match="parameters p0 and p1 share memory"):
            P.measured_params(shared)
    assert len(calls) == 4


def test_parameters_over_one_memory_in_two_storages_are_refused():
    # torch.from_numpy of two views of one array (rows 0-2 and 2-3): two storages, at two
    # addresses, over common memory, which the check looked at storage by storage
    a = np.random.default_rng(0).standard_normal((4, 3))
    both = _holding(torch.from_numpy(a[:3]), torch.from_numpy(a[2:]))
    assert both.p0.untyped_storage().data_ptr() != both.p1.untyped_storage().data_ptr()
    with pytest.raises(UserError, match="parameters p0 and p1 share memory"):
        P.measured_params(both)
    apart = _holding(torch.from_numpy(a[:2]), torch.from_numpy(a[2:]))
    assert list(P.measured_params(apart)) == ["p0", "p1"]


def test_flat_gradients_take_zeros_for_none_and_dense_values_of_a_sparse_gradient():
    """grads_vector in flat-parameter order: a parameter without .grad contributes zeros, a
    sparse gradient (nn.Embedding(sparse=True)) its dense values; frozen ones are left out."""
    torch.manual_seed(0)
    emb = nn.Embedding(5, 2, sparse=True).double()
    lin, unused = nn.Linear(2, 1).double(), nn.Linear(2, 3).double()
    frozen = nn.Linear(1, 1).double().requires_grad_(False)
    model = nn.ModuleDict({"emb": emb, "lin": lin, "unused": unused, "frozen": frozen})
    tokens = torch.tensor([1, 3, 1])
    lin(emb(tokens)).sum().backward()
    assert emb.weight.grad.is_sparse and unused.weight.grad is None
    # by hand: d/dE[t] of Σ_i w·E[tokens_i] + b is w for each occurrence of t
    e_grad = torch.zeros(5, 2, dtype=torch.float64)
    for t in tokens.tolist():
        e_grad[t] += lin.weight.detach()[0]
    want = torch.cat([e_grad.reshape(-1), emb(tokens).detach().sum(0), torch.tensor(
        [3.0], dtype=torch.float64), torch.zeros(2 * 3 + 3, dtype=torch.float64)])
    torch.testing.assert_close(P.grads_vector(model), want, rtol=0, atol=1e-14)
    assert P.num_params(model) == want.numel()


def test_flat_vectors_split_back_in_order_and_refuse_a_wrong_length():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)).double()
    model[1].weight.requires_grad_(False)           # frozen: no coordinates of its own
    params = P.trainable_named_params(model)
    assert list(params) == ["0.weight", "0.bias", "1.bias"]
    vec = torch.arange(10, dtype=torch.float64)
    parts = P.unflatten_like(vec, params)
    torch.testing.assert_close(parts["0.weight"], vec[:6].reshape(3, 2))
    torch.testing.assert_close(parts["1.bias"], vec[9:])
    P.set_params_vector(model, vec)
    torch.testing.assert_close(P.params_vector(model), vec)
    mixed = {"a": torch.zeros(2, dtype=torch.float32), "b": torch.zeros(3, dtype=torch.float64)}
    parts = P.unflatten_like(torch.arange(5, dtype=torch.float64), mixed)
    assert parts["a"].dtype == torch.float32 and parts["b"].dtype == torch.float64
    for wrong in (vec[:9], torch.arange(11, dtype=torch.float64)):
        with pytest.raises(ValueError, match=f"vector has {wrong.numel()} entries, parameters "
                                             "have 10"):
            P.unflatten_like(wrong, params)


def test_a_functional_call_leaves_a_layer_used_twice_with_its_parameters():
    """torch's functional_call left a module registered under two names holding the call's
    plain tensors; the model's own parameters are put back, and the call used the given ones."""
    lin = nn.Linear(2, 2).double()
    model = nn.Sequential(lin, nn.Tanh(), lin)
    weight, bias = lin.weight, lin.bias
    x = torch.randn(3, 2, dtype=torch.float64)
    w = torch.eye(2, dtype=torch.float64)
    b = torch.zeros(2, dtype=torch.float64)
    out = P.functional_call(model, {"0.weight": w, "0.bias": b}, (x,))
    torch.testing.assert_close(out, torch.tanh(x))       # I · tanh(I x + 0) + 0
    assert lin.weight is weight and lin.bias is bias
    assert isinstance(lin.weight, nn.Parameter)


def test_complex_lazy_and_renormalising_parameters_are_refused_by_name():
    with pytest.raises(UserError, match=r"parameter p1 of shape \(4,\) is torch.complex128"):
        P.measured_params(_holding(torch.zeros(2), torch.zeros(4, dtype=torch.complex128)))
    with pytest.raises(UserError, match="parameter 0.weight is not initialised yet"):
        P.measured_params(nn.Sequential(nn.LazyLinear(2)))
    emb = nn.Sequential(nn.Embedding(5, 2, max_norm=1.0))
    with pytest.raises(UserError, match=r"0 \(Embedding, max_norm=1.0\) renormalises"):
        P.measured_params(emb)
    emb[0].weight.requires_grad_(False)            # frozen: nothing measured moves it
    with pytest.raises(UserError, match="no trainable parameters"):
        P.measured_params(emb)
    assert list(P.measured_params(nn.Sequential(nn.Embedding(5, 2)))) == ["0.weight"]


def test_slices_sharing_only_their_boundary_element_are_refused():
    # the first's last element is the second's first: the address ranges just touch
    flat = torch.randn(8, dtype=torch.float64)
    with pytest.raises(UserError, match="parameters p0 and p1 share memory"):
        P.measured_params(_holding(flat[0:3], flat[2:5]))
    assert list(P.measured_params(_holding(flat[0:3], flat[3:5]))) == ["p0", "p1"]


def test_a_parameter_vector_must_be_flat():
    model = nn.Linear(2, 3).double()
    vec = P.params_vector(model)
    P.check_params_vector(model, vec, "theta", "f(model, theta)")
    for wrong in (vec[None], vec.reshape(3, 3), vec[:-1]):
        shape = re.escape(str(tuple(wrong.shape)))
        with pytest.raises(ValueError, match=rf"theta has shape {shape}; the model has 9 "):
            P.check_params_vector(model, wrong, "theta", "f(model, theta)")
    with pytest.raises(TypeError, match=r"theta must be a flat vector .* the arguments are "
                                        r"f\(model, theta\)"):
        P.check_params_vector(model, vec.tolist(), "theta", "f(model, theta)")


def test_a_loss_cut_off_by_a_reentrant_checkpoint_names_the_checkpoint():
    """A reentrant checkpoint over an input that does not require grad runs its layers under
    no_grad, so the loss reaches no parameter: the refusal names that cause, which a
    "does forward() use its layers?" question alone would hide."""
    import torch.utils.checkpoint

    lin = nn.Linear(3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # PyTorch's own "none of the inputs" warning
        out = torch.utils.checkpoint.checkpoint(lin, torch.randn(4, 3), use_reentrant=True)
    with pytest.raises(UserError, match=r"use_reentrant=False"):
        P.reaching_parameters(out.sum())
    assert P.reaching_parameters(lin(torch.randn(4, 3)).sum()).requires_grad
