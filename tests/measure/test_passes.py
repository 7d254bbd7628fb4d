"""The ``memory_budget`` option as every place that takes one reads it
(:func:`sgdlab.measure.passes.memory_budget_bytes`)."""
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sgdlab.measure.passes import memory_budget_bytes, resolved_budget
from sgdlab.measure.sharpness import expected_sharpness, local_entropy
from sgdlab.measure.walk import segment_losses
from sgdlab.operators.params import params_vector
from sgdlab.testing import TinyAttention, TinyTransformer


@pytest.mark.parametrize("value,expected", [
    (None, None),                       # the device's default
    (1, 1),
    (4096, 4096),
    (np.int64(4096), 4096),
    (2e9, 2_000_000_000),               # YAML reads 2e9 and 1.5e9 as floats
    (1.5e9, 1_500_000_000),
    (np.float64(2e9), 2_000_000_000),
    ("4096", 4096),
    ("2e9", 2_000_000_000),             # a CLI argument, or a YAML string
    ("1.5E9", 1_500_000_000),
    ("512MiB", 512 * 2**20),
    ("2GiB", 2 * 2**30),
    ("1.5GiB", 3 * 2**29),
    ("0.5KiB", 512),
    ("1TiB", 2**40),
    ("100B", 100),
    ("1kB", 1000),
    ("1.1GB", 1_100_000_000),
    ("1.005kB", 1005),                  # exact: 1.005 * 1000 in floats is 1004.9999999999999
    ("2MB", 2_000_000),
    ("3TB", 3 * 10**12),
    (" 1.5 gib ", 3 * 2**29),           # spaces around and between, units in any case
])
def test_memory_budget_bytes_reads_integers_floats_and_sizes(value, expected):
    got = memory_budget_bytes(value)
    assert got == expected and (got is None or type(got) is int)


@pytest.mark.parametrize("value,problem", [
    (0, "must be >= 1"),
    (-1, "must be >= 1"),
    (0.0, "must be >= 1"),
    ("-2GiB", "must be >= 1"),
    ("0MiB", "must be >= 1"),
    (0.5, "not a whole number of bytes"),
    (1.5, "not a whole number of bytes"),
    (2e9 + 0.5, "not a whole number of bytes"),
    ("1.5", "not a whole number of bytes"),
    ("0.3KiB", "not a whole number of bytes"),          # 307.2 bytes
    ("2XB", "unknown unit 'XB'"),
    ("2G", "unknown unit 'G'"),
    ("2 GiBs", "unknown unit 'GiBs'"),
    ("GiB", "not a number of bytes"),
    ("", "not a number of bytes"),
    ("1/2GiB", "not a number of bytes"),
    ("2GiB 3MiB", "not a number of bytes"),
    ("1e1000", "not a number of bytes"),                # no 10**1000 computed to refuse it
    ("inf", "not a number of bytes"),
    (float("inf"), "not finite"),
    (float("nan"), "not finite"),
    (True, "a bool is no size"),
    (False, "a bool is no size"),
    ([1024], "a list is no size"),
    ({"GiB": 1}, "a dict is no size"),
])
def test_memory_budget_bytes_names_the_option_the_value_and_the_problem(value, problem):
    with pytest.raises(ValueError) as e:
        memory_budget_bytes(value, "--memory-budget")
    assert str(e.value).startswith(f"Invalid --memory-budget={value!r} ({problem}; bytes: ")
    assert "512MiB" in str(e.value)                     # the rule says what would do


def test_the_measurements_read_the_budget_as_the_options_do():
    """``resolved_budget``, which every measurement taking ``memory_budget=`` calls, applies
    the same rule (it had its own: an int >= 1)."""
    assert resolved_budget("1MiB", "cpu") == 2**20
    assert resolved_budget(2e9, "cpu") == 2_000_000_000
    assert resolved_budget(None, "cpu") == 2**30
    with pytest.raises(ValueError, match=re.escape("Invalid memory_budget=0 (must be >= 1")):
        resolved_budget(0, torch.device("cpu"))


def test_a_vmapped_call_over_k_points_is_sized_for_k_plus_one_copies():
    # k points under vmap hold about k + 1 copies of one point's activations: 3 points
    # need 4 copies of 4 samples, 16 samples' worth; a budget of 15 fits 2 points (12)
    from torch import nn

    from sgdlab.measure.passes import PassPlan, activation_sizes
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.long)
    per_sample = activation_sizes(model, x)[0]
    for budget, k in ((16 * per_sample, 3), (15 * per_sample, 2)):
        plan = PassPlan(model, budget, 3, vectorized=True, caller="test")
        got_k, chunks = plan.split(x, y)
        assert (got_k, len(chunks)) == (k, 1)


def test_after_running_out_of_memory_samples_halve_then_points_then_samples():
    from sgdlab.measure.passes import _smaller
    assert _smaller(4, 1001) == (4, 501)        # halved, rounded up, down to 256 samples
    assert _smaller(4, 256) == (2, 256)         # then the points
    assert _smaller(1, 256) == (1, 128)         # then the samples below 256
    assert _smaller(1, 1) is None


def test_chunks_of_a_batch_cover_every_sample_the_last_one_alone_included():
    from torch import nn

    from sgdlab.measure.passes import PassPlan, activation_sizes
    model = nn.Linear(3, 2).double()
    x, y = torch.randn(9, 3, dtype=torch.float64), torch.arange(9)
    plan = PassPlan(model, 4 * activation_sizes(model, x)[0], 1, vectorized=False,
                    caller="test")
    chunks = plan.split(x, y)[1]
    assert [len(c[0]) for c in chunks] == [4, 4, 1]
    assert torch.equal(torch.cat([c[1] for c in chunks]), y)


def test_vmapped_points_with_batch_statistics_in_chunks_normalise_by_the_whole_batch():
    import copy

    from torch import nn

    from sgdlab.measure.passes import activation_sizes
    from sgdlab.measure.sharpness import perturbed_evaluations
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    x, y = torch.randn(12, 3, dtype=torch.float64), torch.arange(12) % 2
    n = sum(p.numel() for p in model.parameters())
    offsets = 0.1 * torch.randn(2, n, dtype=torch.float64)
    budget = 8 * activation_sizes(model, x)[0]          # chunks of the 12 samples
    loss_fn = nn.CrossEntropyLoss()
    got, _ = perturbed_evaluations(model, loss_fn, (x, y), offsets, vectorize=True,
                                   chunk_size=2, memory_budget=budget)
    for off, g in zip(offsets, got.tolist(), strict=True):
        m = copy.deepcopy(model)                        # train mode: the whole batch's stats
        theta = torch.nn.utils.parameters_to_vector(m.parameters())
        torch.nn.utils.vector_to_parameters(theta + off, m.parameters())
        with torch.no_grad():
            assert g == pytest.approx(float(loss_fn(m(x), y)), rel=1e-10)


def test_the_vmap_budget_keeps_every_activation_below_two_to_the_31_elements():
    from sgdlab.measure.passes import vmap_budget
    # one sample's widest activation 2²⁹ elements: at most 3 samples x points per call
    assert vmap_budget(10**15, 100, 2**29) == 3 * 100
    assert vmap_budget(250, 100, 2**29) == 250               # a smaller budget stays
    assert vmap_budget(10**15, 100, 2**32) == 100             # at least one sample


# ---- torch's warnings inside vmapped passes ------------------------------------------------

_DROP = "There is a performance drop because we have not yet implemented the batching rule"


class _Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag, self.head = nn.EmbeddingBag(7, 4), nn.Linear(4, 3)

    def forward(self, ids):
        return self.head(self.bag(ids))


class _Renorm(nn.Module):
    """An op vmap has no batching rule for (``aten::renorm``) in a module of the caller's."""

    def forward(self, h):
        return torch.renorm(h[None], 2, 0, 1.0)[0]


def _vmapped_measurements(model, data):
    theta = params_vector(model)
    loss_fn = nn.CrossEntropyLoss()
    expected_sharpness(model, loss_fn, data, 0.01, 2, generator=torch.Generator().manual_seed(0))
    local_entropy(model, loss_fn, data, 0.01, num_samples=2,
                  generator=torch.Generator().manual_seed(0))
    segment_losses(model, loss_fn, data, theta, theta + 0.01, 1)


@pytest.mark.parametrize("make,train", [
    (TinyAttention, False),     # the fast path's aten::_native_multi_head_attention
    (TinyAttention, True),      # aten::_scaled_dot_product_flash_attention_for_cpu
    (TinyTransformer, False),   # aten::_transformer_encoder_layer_fwd
    (_Bag, False),              # aten::embedding_bag
])
def test_vmap_running_a_fused_torch_module_point_by_point_warns_nothing(make, train):
    """vmap has no batching rule for these kernels and runs them once per point, as the
    points one at a time do: torch's warning of a "performance drop" names nothing the
    caller can act on."""
    torch.manual_seed(0)
    model = make().train(train)
    data = (torch.randint(0, 6, (5, 3)), torch.randint(0, 2, (5,)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _vmapped_measurements(model, data)
    assert [str(w.message) for w in caught if _DROP in str(w.message)] == []


def test_vmap_running_another_op_point_by_point_still_warns_and_the_filter_is_gone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), _Renorm(), nn.Linear(4, 3))
    data = (torch.randn(5, 3), torch.randint(0, 3, (5,)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        _vmapped_measurements(model, data)
        after = list(warnings.filters)
    assert any("aten::renorm" in str(w.message) for w in caught)
    assert after == before
